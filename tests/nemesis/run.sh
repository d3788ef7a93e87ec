#!/usr/bin/env bash
# tests/nemesis/run.sh [nemesis.py options...] - one nemesis run (tests/nemesis/README) on ports
# from lib.sh's registry, in a fresh directory; every daemon started is killed by PID on exit
# (nemesis.py's own cleanup, and lib.sh's trap over the PIDs it listed). KEEP_TMP=1 keeps the
# directory (history, events, logs). Replays a failure: run.sh --seed N --nodes N --seconds S.
CAIRN_BIN=${CAIRN_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build}
export CAIRN_BIN
. "$(dirname "$0")/../integration/lib.sh"
nem_cleanup() {
  local p
  if [ -f "$T_TMP/run/pids" ]; then
    while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$T_TMP/run/pids"
  fi
  t_cleanup
}
trap nem_cleanup EXIT
nodes=3 args=("$@")
for ((k = 0; k < ${#args[@]}; k++)); do [ "${args[k]}" = --nodes ] && nodes=${args[k+1]}; done
ports=""
for ((k = 0; k < 2 * nodes; k++)); do ports+="${ports:+,}$(t_port)"; done
rc=0
/usr/bin/python3 "$CAIRN_SRC/tests/nemesis/nemesis.py" --bin "$CAIRN_BIN" --dir "$T_TMP/run" --ports "$ports" "$@" || rc=$?
[ "$rc" -eq 0 ] || KEEP_TMP=1 # a failure keeps its directory (logs, history, events)
exit $rc
