#!/usr/bin/env bash
# tests/nemesis/run.sh [nemesis.py options...] - one nemesis run (tests/nemesis/README) on ports
# from lib.sh's registry, in a fresh directory; every daemon started is killed by PID on exit
# (nemesis.py's own cleanup, and lib.sh's trap over the PIDs it listed). KEEP_TMP=1 keeps the
# directory (history, events, logs). Replays a failure: run.sh --seed N --nodes N --seconds S.
# --crashfs (passed on to nemesis.py, which then adds the fault kind crash): one lazyfs
# ($CAIRN_BIN/lazyfs, tests/crashfs/lazyfs.c) per member is mounted at <dir>/fs<i> over
# <dir>/fs<i>.back, with --seed <seed>+i; the member's data dir goes on it, its run dir (ipc
# sockets) outside. The mounts are unmounted on every exit, after the daemons are killed.
# Needs root and /dev/fuse.
CAIRN_BIN=${CAIRN_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build}
export CAIRN_BIN
. "$(dirname "$0")/../integration/lib.sh"
MOUNTS=()
nem_cleanup() {
  local p m
  if [ -f "$T_TMP/run/pids" ]; then
    while read -r p; do t_signal_ours KILL "$p"; done <"$T_TMP/run/pids"
  fi
  # the daemons are gone (they held files on the mounts): unmount, lazily if still busy
  for m in "${MOUNTS[@]:-}"; do
    [ -n "$m" ] || continue
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true
  done
  t_cleanup # also kills the lazyfs processes (started with t_start_daemon)
}
trap nem_cleanup EXIT
nodes=3 crashfs=0 seed="" args=("$@")
for ((k = 0; k < ${#args[@]}; k++)); do
  case ${args[k]} in
    --nodes) nodes=${args[k+1]} ;;
    --seed) seed=${args[k+1]} ;;
    --crashfs) crashfs=1 ;;
  esac
done
if [ "$crashfs" = 1 ]; then
  [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] || { echo "run.sh --crashfs needs root and /dev/fuse" >&2; exit 2; }
  [ -x "$CAIRN_BIN/lazyfs" ] || { echo "run.sh --crashfs: no $CAIRN_BIN/lazyfs (libfuse3-dev missing at build time?)" >&2; exit 2; }
  # the seed is fixed here so that each lazyfs's tears replay with the run
  if [ -z "$seed" ]; then seed=$((RANDOM * 32768 + RANDOM)); args+=(--seed "$seed"); fi
  mkdir -p "$T_TMP/run"
  for ((i = 0; i < nodes; i++)); do
    mkdir -p "$T_TMP/run/fs$i.back" "$T_TMP/run/fs$i"
    t_start_daemon "$T_TMP/run/lazyfs$i.log" "$CAIRN_BIN/lazyfs" "$T_TMP/run/fs$i.back" "$T_TMP/run/fs$i" --seed $((seed + i))
    MOUNTS+=("$T_TMP/run/fs$i")
  done
  for ((i = 0; i < nodes; i++)); do
    t_wait_until 10 test -e "$T_TMP/run/fs$i/.lazyfs-ctl" || { echo "lazyfs did not mount $T_TMP/run/fs$i" >&2; cat "$T_TMP/run/lazyfs$i.log" >&2; exit 2; }
  done
fi
ports=""
for ((k = 0; k < 2 * nodes; k++)); do ports+="${ports:+,}$(t_port)"; done
rc=0
/usr/bin/python3 "$CAIRN_SRC/tests/nemesis/nemesis.py" --bin "$CAIRN_BIN" --dir "$T_TMP/run" --ports "$ports" "${args[@]}" || rc=$?
[ "$rc" -eq 0 ] || KEEP_TMP=1 # a failure keeps its directory (logs, history, events)
exit $rc
