#!/usr/bin/env bash
# Builds the Debian package: a Release build in $BUILD (default ./build-release) configured for
# /usr with Debian's hardening flags (dpkg-buildflags), then CPack's DEB generator ->
# $BUILD/cairn_<version>_<arch>.deb, whose path is the last line printed. Extra arguments go to
# cmake's configure step (tests/integration/test_package.sh: -DCAIRN_TESTS=OFF -DCAIRN_BENCH=OFF).
# JOBS: parallel build jobs (default nproc). Needs dpkg-dev: dpkg-shlibdeps computes Depends.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-release}
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
# The flags go in as cache values, not as CFLAGS/LDFLAGS in the environment, which CMake reads
# only when it creates a build dir: an existing one (build-release is also bench/'s) gets them
# too, so the binaries the benchmarks measure are the ones the package ships.
# CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: cpack packages what the build step below built, without a
# second build of its own (which would pick up sources edited in between).
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DCAIRN_SANITIZE= \
  -DCMAKE_C_FLAGS="$CFLAGS" -DCMAKE_EXE_LINKER_FLAGS="$LDFLAGS" \
  -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON "$@" >/dev/null
cmake --build "$BUILD" -j"${JOBS:-$(nproc)}" >/dev/null
rm -f "$BUILD"/cairn_*.deb
(cd "$BUILD" && cpack -G DEB >/dev/null)
ls "$BUILD"/cairn_*.deb
