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
# Fuzz step (tests/fuzz/README): the libFuzzer targets need clang, so they have their own build
# (CAIRN_FUZZ: every library instrumented for the fuzzer, with ASan+UBSan), whose only test,
# test_fuzz, runs each target for CAIRN_FUZZ_SECONDS (15) on its seed corpus and fails on a
# crash. CAIRN_FUZZ=0 skips it.
if [ "${CAIRN_FUZZ:-1}" != 0 ]; then
  cd "$OLDPWD" # the checkout (the last cd was into $BUILD from there)
  FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
  cmake -S . -B "$FUZZ_BUILD" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_FUZZ=ON \
    -DCAIRN_TESTS=OFF -DCAIRN_BENCH=OFF >/dev/null
  cmake --build "$FUZZ_BUILD" -j"$(nproc)" --target cairn_fuzzers
  (cd "$FUZZ_BUILD" && ctest --output-on-failure -R '^test_fuzz$')
fi
