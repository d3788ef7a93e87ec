# tests/integration/scale_lib.sh - helpers shared by test_scale.sh and test_scale_bigvalues.sh
# (sourced after lib.sh; not a test itself: the ctest glob takes test_*.sh only).
#
# One node run the way a user runs it, `cairnctl run <etcd flags>` (the supervisor starts
# stored, raftd and gatewayd), killed the way issue 7 killed it: kill -9 of the supervisor
# and of its three daemons, by the PIDs this test started (the supervisor's children, read
# with pgrep -P before the kill), then started again on the same data dir.
#
# s_start FLAGS...      starts `cairnctl run FLAGS` logging to $S_LOG; sets S_SUP, S_T0_NS
# s_children            the supervisor's children (PIDs), one per line
# s_track               adds the current children to T_PIDS (lib.sh kills them on EXIT)
# s_kill9               kill -9 of the supervisor, then of its children; waits until gone
# s_stop                SIGTERM to the supervisor (it stops its daemons in order); waits
# s_wait_healthy SECS   polls a linearizable read (etcdctl get, no --consistency=s) every
#                       ~100 ms until one succeeds; S_HEALTHY_S = seconds since S_T0_NS
#                       (the start), printed with one decimal; rc 1 after SECS
# s_rss                 "stored=X raftd=Y gatewayd=Z MiB" of the current daemons
# s_replayed            stored's last "wal replayed ..." log line
# s_keyed_value KEY LEN  cairn_bench's --keyed-values value of KEY (an independent copy of
#                       its rule, in Python), on stdout
S_LOG=${S_LOG:-$T_TMP/node.log}
S_BENCH=${CAIRN_BENCH:-$CAIRN_BIN/cairn_bench}

s_start() {
  S_T0_NS=$(date +%s%N)
  t_start_daemon "$S_LOG" "$CAIRN_BIN/cairnctl" run "$@"
  S_SUP=$T_LAST_PID
}

s_children() { pgrep -P "$S_SUP" 2>/dev/null || true; }

s_track() { local k; for k in $(s_children); do T_PIDS+=("$k"); done; }

s_wait_gone() { # PIDS...: up to 30 s for each to disappear (they are not this shell's children)
  local p i
  for p in "$@"; do
    for ((i = 0; i < 300; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
}

s_kill9() {
  local kids; kids=$(s_children)
  kill -KILL "$S_SUP" 2>/dev/null || true
  wait "$S_SUP" 2>/dev/null || true
  # shellcheck disable=SC2086
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  # shellcheck disable=SC2086
  s_wait_gone $kids
}

s_stop() {
  local kids; kids=$(s_children)
  kill -TERM "$S_SUP" 2>/dev/null || true
  wait "$S_SUP" 2>/dev/null || true
  # shellcheck disable=SC2086
  s_wait_gone $kids
}

s_wait_healthy() {
  local bound_ms=$(($1 * 1000)) now
  while :; do
    if timeout 3 etcdctl --endpoints="$S_EP" --dial-timeout=1s --command-timeout=1s get /scale-probe >/dev/null 2>&1; then
      now=$(date +%s%N)
      S_HEALTHY_S=$(awk -v d=$((now - S_T0_NS)) 'BEGIN { printf "%.1f", d / 1e9 }')
      return 0
    fi
    now=$(date +%s%N)
    if (((now - S_T0_NS) / 1000000 >= bound_ms)); then
      S_HEALTHY_S=">$1"
      return 1
    fi
    sleep 0.1
  done
}

s_rss() {
  local k out=""
  for k in $(s_children); do
    out+="$(ps -o comm= -p "$k" 2>/dev/null)=$(( $(ps -o rss= -p "$k" 2>/dev/null || echo 0) / 1024 )) "
  done
  echo "${out}MiB"
}

s_replayed() { grep "wal replayed" "$S_LOG" | tail -n 1 || true; }

# s_fail_diag WHAT: the end of the node's log, for a failed start
s_fail_diag() {
  echo "--- $1: last lines of the node's log (timestamps cut, repeats counted)" >&2
  tail -n 400 "$S_LOG" | sed 's/^ts=[^ ]* //' | uniq -c | tail -n 15 >&2
}

s_keyed_value() {
  python3 - "$1" "$2" <<'PY'
import sys
M = (1 << 64) - 1
key, n = sys.argv[1].encode(), int(sys.argv[2])
h = 0xcbf29ce484222325
for b in key:
    h = ((h ^ b) * 0x100000001b3) & M
h = h or 1
block = bytearray()
for _ in range(64):
    h ^= h >> 12; h ^= (h << 25) & M; h ^= h >> 27
    block.append(ord('a') + (((h * 0x2545F4914F6CDD1D) & M) >> 33) % 26)
v = (key + b':')[:n]
v += bytes(block) * ((n - len(v)) // 64 + 1)
sys.stdout.buffer.write(v[:n])
PY
}

# s_restart_healthy NAME: starts the node again with the caller's FLAGS array and waits up to
# BOUND seconds for a linearizable read; prints the replay line, the time and the RSS.
s_restart_healthy() {
  s_start "${FLAGS[@]}"
  if s_wait_healthy "$BOUND"; then
    s_track
    t_ok "$1: a linearizable read succeeds after the restart (${S_HEALTHY_S} s)"
    echo "  $1: healthy after ${S_HEALTHY_S} s; $(s_replayed); RSS $(s_rss)"
    return 0
  fi
  t_fail "$1: no linearizable read within $BOUND s of the restart"
  s_fail_diag "$1"
  return 1
}
s_finish() { s_stop; t_done; exit $?; }
