#!/usr/bin/env bash
# Fresh Debian 12 -> the whole test suite: installs what is missing, builds with
# AddressSanitizer + UndefinedBehaviorSanitizer, runs every unit, simulation and integration
# test (integration tests start the real daemons and Debian's etcd on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/deps.sh
export BUILD=${BUILD:-build-test}
CAIRN_SANITIZE=${CAIRN_SANITIZE-address,undefined} BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} bash deploy/build.sh
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD"
ctest --output-on-failure --timeout 900 -j"${CTEST_JOBS:-2}"
