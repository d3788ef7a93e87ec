#!/usr/bin/env bash
# Builds Cairn into $BUILD (default ./build): Release unless CAIRN_SANITIZE/BUILD_TYPE say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
TYPE=${BUILD_TYPE:-RelWithDebInfo}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE="$TYPE" -DCAIRN_SANITIZE="${CAIRN_SANITIZE:-}" >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
