#!/usr/bin/env bash
# Runs every fuzz target of a CAIRN_FUZZ build for a bounded time on its seed corpus, one after
# the other (each is one process: two cores shared with the rest of CI). Registered as the ctest
# test test_fuzz of that build; deploy/test.sh runs it. Fails on the first target that crashes,
# leaks, times out or runs out of memory, and prints how to reproduce the input.
#
#   tests/fuzz/run_fuzz.sh <build dir> [target ...]
#   CAIRN_FUZZ_SECONDS  seconds per target (default 15: the 8 targets take about 2 minutes)
#
# The seed corpora are only read: what a run finds new goes to a temporary directory (so CI
# never writes into the source tree), and a crashing input to $CAIRN_FUZZ_ARTIFACTS (default
# <build dir>/fuzz-artifacts/<target>/).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run_fuzz.sh <build dir> [target ...]}" && pwd)
shift
secs=${CAIRN_FUZZ_SECONDS:-15}
arts=${CAIRN_FUZZ_ARTIFACTS:-$build/fuzz-artifacts}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$here"/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# a tmpfs when there is one: fuzz_wal, fuzz_snap and fuzz_ldblog write and fsync files for every
# input, and on a disk the syncs, not the code under test, set the pace (fuzz_ldblog: about
# 200 inputs a second on this machine's disk)
work=$(mktemp -d "${CAIRN_FUZZ_TMP:-/dev/shm}/cairn-fuzz-run-XXXXXX" 2>/dev/null) ||
  work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-fuzz-run-XXXXXX")
export TMPDIR=$work # the targets' own temp dirs (fuzz_wal, fuzz_snap, fuzz_config) go here too
trap 'rm -rf "$work"' EXIT
fail=0
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  bin=$build/$t
  seeds=$here/corpus/$name
  if [ ! -x "$bin" ]; then echo "run_fuzz: $bin missing (build with -DCAIRN_FUZZ=ON)"; fail=1; continue; fi
  mkdir -p "$work/$name" "$arts/$name"
  start=$(date +%s)
  "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -artifact_prefix="$arts/$name/" -print_final_stats=1 \
    "$work/$name" "$seeds" >"$work/$name.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$')
  echo "run_fuzz: $t: rc=$rc, ${execs:-?} inputs in $(( $(date +%s) - start )) s, $(ls "$seeds" | wc -l) seeds"
  if [ $rc -ne 0 ]; then
    fail=1
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written|abort' "$work/$name.log" | head -20
    tail -n 40 "$work/$name.log"
    echo "run_fuzz: $t FAILED; reproduce with: $bin <the input named above>  (tests/fuzz/README)"
  fi
done
exit $fail
