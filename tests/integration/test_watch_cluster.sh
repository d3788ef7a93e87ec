#!/usr/bin/env bash
# Watch guarantees on a 3-member cluster while each kind of process is killed (issue 9):
# tests/watch/watchcheck.py writes under a prefix and holds ~50 watchers over every member
# (prefix, key, range, prev_kv, filters, past start revisions, streams cut and resumed on
# another member, progress requests), then checks each watcher's events against one reference
# watch: ordered, no duplicate, no gap, whole revisions, created first, progress never ahead of
# what was sent, every acknowledged write present. Meanwhile gatewayd, stored and the leader's
# raftd are each killed with kill -9 and restarted, and a whole member is down long enough to
# come back by a snapshot. Zero violations, no --lenient.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import etcd3, grpc' 2>/dev/null || { echo "needs python3-etcd3 python3-grpcio (deploy/deps.sh)"; exit 1; }

# a small log budget: the member that is down for a few seconds comes back by a snapshot, so
# its gateway sees the store jump and must fill the difference from history
T_EXTRA_FLAGS="--snapshot-count 100 --raft-log-memory-bytes 4096"
t_start_cluster 3
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30 || { t_fail "cluster not healthy"; t_done; exit 1; }; done
eps=$(IFS=,; echo "${C_EPS[*]}")

$PY "$CAIRN_SRC/tests/watch/watchcheck.py" --endpoints "$eps" --seconds 36 --write-delay 0.005 ${WATCHCHECK_SEED:+--seed "$WATCHCHECK_SEED"} \
  >"$T_TMP/check.out" 2>&1 &
checker=$!
T_PIDS+=("$checker")

sleep 6
t_kill9 "${C_GWS[1]}"; sleep 1; t_restart_proc gatewayd 1
sleep 5
t_kill9 "${C_STOREDS[2]}"; sleep 1; t_restart_proc stored 2
sleep 5
lead=$(t_leader_index)
if [ "$lead" -ge 0 ]; then
  t_kill9 "${C_RAFTDS[lead]}"; sleep 1; t_restart_proc raftd "$lead"
else
  t_fail "no leader found to kill"
fi
sleep 4
t_kill9 "${C_GWS[0]}" "${C_STOREDS[0]}" "${C_RAFTDS[0]}"; sleep 4
t_restart_proc stored 0; t_restart_proc raftd 0; t_restart_proc gatewayd 0

rc=0
wait "$checker" || rc=$?
tail -n 40 "$T_TMP/check.out"
if [ "$rc" -eq 0 ]; then
  t_ok "watch guarantees held through kill -9 of gatewayd, stored, raftd and a whole member"
else
  t_fail "watchcheck found violations or could not run (exit $rc)"
fi
# whether the member down longest comes back by a snapshot depends on how far the others wrote
# meanwhile (usually it does): reported, not required - the guarantees above are what must hold
if grep -q "snapshot installed" "${C_LOGS[0]}"; then t_ok "the member down longest came back by a snapshot"
else echo "note: m0 caught up from the leader's log this time, not by a snapshot"; fi
grep -qE "events checked[^0-9]*[1-9]" "$T_TMP/check.out" && t_ok "events were checked" ||
  t_fail "no events checked: $(grep -i events "$T_TMP/check.out" | head -3)"
t_done
