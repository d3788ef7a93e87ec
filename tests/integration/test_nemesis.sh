#!/usr/bin/env bash
# Nemesis (tests/nemesis/README): short seeded fault runs on a 3-member cluster under the
# linearizability workload and a watch checker, faults combined at random: kill -9 and SIGSTOP of
# any process, isolation, asymmetric partitions (raftd's fault-drop-to) and forward clock jumps
# (raftd's fault-clock-offset-ms). First the two new raftd switches are shown to act (a leader
# that drops what it sends to both followers is replaced; a leader whose clock jumps past a
# lease's TTL revokes it), then NEM_RUNS (2) runs of NEM_SECONDS (60) each must report no
# violation, every fault kind must have happened, and the checkers must reject doctored copies
# of a run's history (a stale read; an acknowledged write missing from the store's events; a
# failed CAS's value appearing in them). A failing run prints its seed and replay command
# (tests/nemesis/run.sh --seed N ...); NEM_SEED fixes the first run's seed.
# Also a regression found by the nemesis: a member paused while a peer's raftd restarts hears it again.
# The last run (when root, /dev/fuse and $CAIRN_BIN/lazyfs are there) has every member's data dir
# on a lazyfs (tests/crashfs/lazyfs.c) and adds the fault kind crash: kill -9 of stored and a power
# loss of its disk, every unsynced write undone (crash) or a seeded part of them (tear), drawn
# from NEM_CRASHFS_MODES (crash,tear).
. "$(dirname "$0")/lib.sh"
NEM=$CAIRN_SRC/tests/nemesis
RUNS=${NEM_RUNS:-2}
SECS=${NEM_SECONDS:-60}
export CAIRN_TEST_FAULTS=1

# --- the switches themselves, on a quiet cluster ---------------------------------------------
t_start_cluster 3
for i in 0 1 2; do t_wait_healthy "${C_EPS[i]}" 30; done
nlog() { grep -c -- "$2" "${C_LOGS[$1]}" || true; }
L=$(t_leader_index)
if [ "$L" -lt 0 ]; then t_fail "no leader"; else
  echo "m$(( (L + 1) % 3 )) m$(( (L + 2) % 3 ))" >"$T_TMP/m$L/run/fault-drop-to"
  other_leader() { local l; l=$(t_leader_index); [ "$l" -ge 0 ] && [ "$l" != "$L" ]; }
  t_wait_until 20 other_leader && t_ok "a leader dropping what it sends to both followers is replaced (asymmetric: it still hears them)" ||
    t_fail "leader m$L kept leading while dropping everything it sent"
  t_eq "raftd logged the drop switch" 1 "$(nlog "$L" 'test fault: dropping what this member sends to' | awk '{print ($1 > 0)}')"
  rm -f "$T_TMP/m$L/run/fault-drop-to"
  for i in 0 1 2; do t_wait_healthy "${C_EPS[i]}" 30; done
  L=$(t_leader_index)
  lease=$(etcdctl --endpoints="${C_EPS[L]}" lease grant 60 | awk '{print $2}')
  etcdctl --endpoints="${C_EPS[L]}" put --lease="$lease" leased v >/dev/null
  echo 70000 >"$T_TMP/m$L/run/fault-clock-offset-ms"
  gone() { [ -z "$(etcdctl --endpoints="${C_EPS[0]},${C_EPS[1]},${C_EPS[2]}" --command-timeout=2s get leased --print-value-only 2>/dev/null)" ]; }
  t_wait_until 15 gone && t_ok "a 60 s lease expires at once when the leader's raftd clock jumps 70 s forward" ||
    t_fail "the leader's clock jump did not reach its lessor (key still there)"
  t_eq "raftd logged the clock jump" 1 "$(nlog "$L" 'test fault: clock jumps forward' | awk '{print ($1 > 0)}')"
fi
# Found by the nemesis (seed 1002): a member whose raftd is paused while a peer's raftd is killed
# and restarted must hear that peer again. The peer's new connection has the same ZeroMQ identity
# (its member id) as the dead one, which the paused member has not reaped yet; without
# ZMQ_ROUTER_HANDOVER on the peer ROUTER the new connection was never read: the peer stayed
# unheard for good (a leader restarted that way could never reach that member again).
P=0 Q=1
qid=$(etcdctl --endpoints="${C_EPS[Q]}" member list -w json | python3 -c 'import json,sys;print("%x" % [m["ID"] for m in json.load(sys.stdin)["members"] if m["name"]==sys.argv[1]][0])' "m$Q")
rx_from_q() { curl -s "http://${C_EPS[P]}/metrics" | awk -v id="$qid" 'index($1, "etcd_network_peer_received_bytes_total{From=\"" id "\"}") == 1 {print $2}'; }
kill -STOP "${C_RAFTDS[P]}"
t_kill9 "${C_RAFTDS[Q]}"; t_restart_proc raftd "$Q"
sleep 2
kill -CONT "${C_RAFTDS[P]}"
sleep 0.5; rx0=$(rx_from_q)
rx_grew() { local v; v=$(rx_from_q); [ -n "$v" ] && [ -n "$rx0" ] && awk -v a="$v" -v b="$rx0" 'BEGIN { exit !(a > b) }'; }
t_wait_until 10 rx_grew && t_ok "m$P, paused while m$Q's raftd restarted, hears m$Q again (received bytes $rx0 -> $(rx_from_q))" ||
  t_fail "m$P received nothing more from m$Q in 10 s after m$Q's raftd restarted while m$P was paused (bytes: $rx0 -> $(rx_from_q))"
for i in 0 1 2; do t_stop "${C_GWS[i]}" "${C_RAFTDS[i]}" "${C_STOREDS[i]}"; done

# --- nemesis runs ------------------------------------------------------------------------------
MOUNTS=()
nem_cleanup() {
  local p f m
  for f in "$T_TMP"/nem*/pids; do
    [ -f "$f" ] || continue
    while read -r p; do t_signal_ours KILL "$p"; done <"$f"
  done
  for m in "${MOUNTS[@]:-}"; do
    [ -n "$m" ] || continue
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true
  done
  t_cleanup
}
trap nem_cleanup EXIT
seed0=${NEM_SEED:-$((RANDOM * 32768 + RANDOM))}
CRASHFS_RUN=-1
if [ "$(id -u)" -eq 0 ] && [ -c /dev/fuse ] && [ -x "$CAIRN_BIN/lazyfs" ] && command -v fusermount3 >/dev/null; then
  CRASHFS_RUN=$((RUNS - 1))
else
  echo "# no run with --crashfs (needs root, /dev/fuse, fusermount3 and $CAIRN_BIN/lazyfs)"
fi
declare -A KIND=()
for ((r = 0; r < RUNS; r++)); do
  s=$((seed0 + r)) d=$T_TMP/nem$r
  ports=""; for k in 1 2 3 4 5 6; do ports+="${ports:+,}$(t_port)"; done
  cf=()
  if [ "$r" = "$CRASHFS_RUN" ]; then
    # as tests/nemesis/run.sh --crashfs: member i's data dir on a lazyfs at $d/fs<i>
    for i in 0 1 2; do
      mkdir -p "$d/fs$i.back" "$d/fs$i"
      t_start_daemon "$T_TMP/lazyfs$r-$i.log" "$CAIRN_BIN/lazyfs" "$d/fs$i.back" "$d/fs$i" --seed $((s + i))
      MOUNTS+=("$d/fs$i")
    done
    for i in 0 1 2; do t_wait_until 10 test -e "$d/fs$i/.lazyfs-ctl" || t_fail "lazyfs did not mount $d/fs$i"; done
    cf=(--crashfs --crashfs-modes "${NEM_CRASHFS_MODES:-crash,tear}")
  fi
  rc=0
  timeout -s TERM $((SECS + 300)) /usr/bin/python3 "$NEM/nemesis.py" --bin "$CAIRN_BIN" --dir "$d" --ports "$ports" \
    --seed "$s" --nodes 3 --seconds "$SECS" --watch "${cf[@]}" >"$d.out" 2>&1 || rc=$?
  grep -E '^nemesis |faults:|client:|ackcheck: acked|LINEARIZABLE|violations:' "$d.out" | sed 's/^/# /'
  sum=$(grep '^NEMESIS ' "$d.out" | tail -n 1 | cut -c9-)
  if [ "$rc" -eq 0 ] && [ -n "$sum" ]; then t_ok "nemesis run $r (seed $s): no violation: $sum"
  else
    KEEP_TMP=1
    tail -n 40 "$d.out" >&2
    t_fail "nemesis run $r (seed $s) rc=$rc: $sum -- replay: tests/nemesis/run.sh --seed $s --nodes 3 --seconds $SECS --watch ${cf[*]} (logs kept in $d)"
  fi
  if [ "$r" = "$CRASHFS_RUN" ]; then
    n=$(/usr/bin/python3 -c 'import json,sys;print(json.loads(sys.argv[1] or "{}").get("faults",{}).get("crash",0))' "$sum" 2>/dev/null || echo 0)
    [ "$n" -gt 0 ] && t_ok "run $r (--crashfs): $n power losses of a member's disk" || t_fail "run $r (--crashfs): no crash fault happened"
    for i in 0 1 2; do fusermount3 -u "$d/fs$i" 2>/dev/null || fusermount3 -uz "$d/fs$i" 2>/dev/null || true; done
  fi
  for k in kill pause isolate asym clock; do
    n=$(/usr/bin/python3 -c 'import json,sys;print(json.loads(sys.argv[1] or "{}").get("faults",{}).get(sys.argv[2],0))' "$sum" "$k" 2>/dev/null || echo 0)
    KIND[$k]=$(( ${KIND[$k]:-0} + n ))
  done
done
for k in kill pause isolate asym clock; do
  [ "${KIND[$k]}" -gt 0 ] && t_ok "${KIND[$k]} faults of kind $k" || t_fail "no fault of kind $k in $RUNS runs"
done
for k in "test fault: isolated from peers" "test fault: dropping what this member sends to" "test fault: clock jumps forward"; do
  t_eq "raftd logged \"$k\" during the runs" 1 "$(cat "$T_TMP"/nem*/m*.log | grep -c -- "$k" | awk '{print ($1 > 0)}')"
done

# --- the checks must be able to fail: doctored copies of run 0's history -------------------------
H=$T_TMP/nem0/history.jsonl E=$T_TMP/nem0/events.jsonl
if [ -s "$H" ] && [ -s "$E" ]; then
  crc=0; python3 "$CAIRN_SRC/tests/linearizability/checker.py" "$H" --inject-stale-read "$T_TMP/stale.jsonl" >/dev/null &&
    { timeout 120 python3 "$CAIRN_SRC/tests/linearizability/checker.py" --budget 2000000 --time-limit 60 -q "$T_TMP/stale.jsonl" >/dev/null 2>&1 || crc=$?; }
  t_eq "checker rejects the run's history with one read made stale (exit 1)" 1 "$crc"
  # drop the PUT event of one acknowledged write
  python3 - "$H" "$E" "$T_TMP/lost.jsonl" "$T_TMP/phantom.jsonl" <<'PY'
import json, sys
hist = [json.loads(l) for l in open(sys.argv[1])]
evs = [json.loads(l) for l in open(sys.argv[2])]
acked = {d["value"] for d in hist if d["f"] == "write" and d["type"] == "ok"}
victim = next(e for e in evs if e["value"] in acked)
with open(sys.argv[3], "w") as f:
    for e in evs:
        if e is not victim:
            f.write(json.dumps(e) + "\n")
failed = next(d for d in hist if d["f"] == "cas" and d["type"] == "fail")
with open(sys.argv[4], "w") as f:
    for e in evs:
        f.write(json.dumps(e) + "\n")
    f.write(json.dumps({"rev": evs[-1]["rev"] + 1, "type": "PutEvent", "key": failed["key"], "value": failed["new"]}) + "\n")
PY
  crc=0; /usr/bin/python3 "$NEM/ackcheck.py" "$H" "$E" >/dev/null || crc=$?
  t_eq "ackcheck passes the run's real events" 0 "$crc"
  crc=0; out=$(/usr/bin/python3 "$NEM/ackcheck.py" "$H" "$T_TMP/lost.jsonl") || crc=$?
  t_eq "ackcheck rejects the events with one acknowledged write removed (exit 1)" 1 "$crc"; t_contains "it names a lost write" "lost=1" "$out"
  crc=0; out=$(/usr/bin/python3 "$NEM/ackcheck.py" "$H" "$T_TMP/phantom.jsonl") || crc=$?
  t_eq "ackcheck rejects the events with a failed CAS's value applied (exit 1)" 1 "$crc"; t_contains "it names a phantom write" "phantom=1" "$out"
else
  t_fail "run 0 left no history/events to doctor"
fi
t_done
