#!/usr/bin/env bash
# etcd 3.4's corruption checks (services/raftd/corrupt.c):
#   1. --experimental-corrupt-check-time: while every member holds the same data, passes run
#      and raise no alarm;
#   2. one follower's store is made to differ (raftd's test fault: <run-dir>/fault-corrupt-put
#      holding a key makes the next Put of that key reach this member's stored with "-corrupt"
#      appended to the value, on this member only); the leader's pass raises the CORRUPT alarm
#      (memberID 0, as etcd 3.4.23: a mismatch does not say which side is wrong; the leader's
#      log names the member), `etcdctl alarm list` shows it, and writes fail with "etcdserver:
#      corrupt cluster" while reads still work, as in etcd 3.4;
#   3. --experimental-initial-corrupt-check: the corrupted member's raftd refuses to start with
#      "found data inconsistency with peers" and a non-zero exit; a healthy member starts (with
#      the corrupted member down: an unreachable peer is skipped with a warning).
. "$(dirname "$0")/lib.sh"
export CAIRN_TEST_FAULTS=1
T_EXTRA_FLAGS="--experimental-corrupt-check-time=2s"
t_start_cluster 3
for i in 0 1 2; do t_wait_healthy "${C_EPS[i]}" 30 || t_fail "member $i not healthy"; done
ALL=$(IFS=,; echo "${C_EPS[*]}")
ctl() { timeout 10 etcdctl --endpoints="$1" --command-timeout=5s "${@:2}"; }
member_id_dec() { # member id (decimal, as etcdctl prints it) of member $1
  ctl "${C_EPS[$1]}" endpoint status -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["Status"]["header"]["member_id"])'
}
# a write that may meet an election (a member restarting): retried on every endpoint for a while
put_retry() { t_wait_until 20 bash -c "timeout 5 etcdctl --endpoints=${PUT_EPS:-$ALL} --command-timeout=4s put '$1' '$2' >/dev/null 2>&1"; }
checks_done() { grep -c "finished peer corruption check" "${C_LOGS[$1]}" || true; }

L=-1
for _ in $(seq 1 100); do L=$(t_leader_index); [ "$L" -ge 0 ] && break; sleep 0.2; done
[ "$L" -ge 0 ] && t_ok "a leader (member $L)" || t_fail "no leader"

for i in $(seq 1 30); do ctl "${C_EPS[L]}" put "key$i" "value-$i" >/dev/null || t_fail "put key$i"; done
ctl "${C_EPS[L]}" del key7 >/dev/null

# ---- 0. Maintenance/Hash (every record, on a hash thread): the same on every member --------
mhash() { /usr/bin/python3 -c '
import sys, grpc
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
r = rpc_pb2_grpc.MaintenanceStub(grpc.insecure_channel(sys.argv[1])).Hash(rpc_pb2.HashRequest(), timeout=10)
print(r.header.revision, r.hash)' "$1" 2>&1; }
same_hash() { [ "$(mhash "${C_EPS[0]}")" = "$(mhash "${C_EPS[1]}")" ] && [ "$(mhash "${C_EPS[1]}")" = "$(mhash "${C_EPS[2]}")" ]; }
if t_wait_until 15 same_hash; then
  t_ok "Maintenance/Hash equal on every member ($(mhash "${C_EPS[0]}"))"
else
  t_fail "Maintenance/Hash differs: $(for i in 0 1 2; do mhash "${C_EPS[i]}"; done | tr '\n' ' ')"
fi
h_rev=$(mhash "${C_EPS[L]}" | cut -d' ' -f1)
cur_rev=$(ctl "${C_EPS[L]}" get key1 -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
t_eq "Maintenance/Hash's header revision is the store's" "$cur_rev" "$h_rev"

# ---- 1. all members agree: passes run, no alarm --------------------------------------------
before=$(checks_done "$L")
if t_wait_until 20 bash -c "[ \$(grep -c 'finished peer corruption check' '${C_LOGS[L]}') -ge $((before + 3)) ]"; then
  t_ok "the leader ran 3 more corruption check passes"
else
  t_fail "the leader ran no corruption check passes ($(checks_done "$L") in the log)"
fi
# passes while writes go on (followers a little behind answer 'future revision' and are
# skipped; none may be taken for a corrupt one)
( end=$(( $(date +%s) + 8 )); i=0
  while [ "$(date +%s)" -lt "$end" ]; do
    i=$((i + 1)); timeout 5 etcdctl --endpoints="${C_EPS[L]}" put "load$((i % 20))" "v$i" >/dev/null 2>&1 || true
  done ) &
LOADP=$!; T_PIDS+=("$LOADP")
before=$(checks_done "$L")
t_wait_until 30 bash -c "[ \$(grep -c 'finished peer corruption check' '${C_LOGS[L]}') -ge $((before + 3)) ]" &&
  t_ok "passes run under writes" || t_fail "no passes under writes"
wait "$LOADP" 2>/dev/null || true
t_eq "no alarm from passes under writes" "" "$(ctl "$ALL" alarm list)"
t_contains "a pass checked both followers" "number-of-peers-checked=2" "$(grep 'finished peer corruption check' "${C_LOGS[L]}" | tail -n 1)"
t_contains "the checks are announced at start, as etcd does" "enabled corruption checking" "$(cat "${C_LOGS[L]}")"
t_eq "no alarm while the members agree" "" "$(ctl "$ALL" alarm list)"
t_eq "no hash mismatch reported while the members agree" "0" "$(cat "${C_LOGS[@]}" | grep -c 'hashes must match' || true)"

# a follower that does not answer (its peer links cut: raftd's fault-isolate) is skipped with a
# warning, and the pass goes on with the other one
I=$(( (L + 2) % 3 ))
touch "$T_TMP/m$I/run/fault-isolate"
if t_wait_until 30 grep -q "failed hash kv request.*no answer in time" "${C_LOGS[L]}"; then
  t_ok "a member that does not answer is skipped with a warning"
else
  t_fail "no warning for the member that does not answer"
fi
t_wait_until 10 bash -c "grep 'finished peer corruption check' '${C_LOGS[L]}' | tail -n 1 | grep -q 'number-of-peers-checked=1'" &&
  t_ok "the pass checked the member that answered" || t_fail "no pass with one peer checked"
t_eq "no alarm for a member that does not answer" "" "$(ctl "${C_EPS[L]}" alarm list)"
rm -f "$T_TMP/m$I/run/fault-isolate"
for _ in $(seq 1 100); do L=$(t_leader_index); [ "$L" -ge 0 ] && break; sleep 0.2; done
t_wait_healthy "${C_EPS[I]}" 30 || t_fail "member $I not back after isolation"

# ---- 2. one follower's store differs: the CORRUPT alarm ---------------------------------
F=$(( (L + 1) % 3 )); H=$(( (L + 2) % 3 ))
F_ID=$(member_id_dec "$F")
echo "victim" >"$T_TMP/m$F/run/fault-corrupt-put"
ctl "${C_EPS[L]}" put victim good-value >/dev/null || t_fail "put victim"
t_wait_until 10 test ! -e "$T_TMP/m$F/run/fault-corrupt-put" && t_ok "the fault was applied on member $F" ||
  t_fail "the fault file is still there"
sleep 0.5
t_eq "the corrupted member holds another value" "good-value-corrupt" \
  "$(ctl "${C_EPS[F]}" get victim --consistency=s --print-value-only)"
t_eq "the others hold the right one" "good-value" "$(ctl "${C_EPS[H]}" get victim --consistency=s --print-value-only)"

has_alarm() { ctl "${C_EPS[L]}" alarm list 2>/dev/null | grep -q "alarm:CORRUPT"; }
if t_wait_until 20 has_alarm; then t_ok "CORRUPT alarm raised"; else t_fail "no CORRUPT alarm after 20s"; fi
alarms=$(ctl "${C_EPS[L]}" alarm list)
t_eq "the alarm is etcd 3.4.23's (memberID 0, which etcdctl leaves out), and only it" "alarm:CORRUPT " "$alarms"
F_HEX=$(printf %016x "$F_ID")
t_contains "the leader's log names the corrupted member" "mismatched-member=$F_HEX" "$(grep 'proposed the CORRUPT alarm' "${C_LOGS[L]}")"
t_eq "every member lists it" "$alarms" "$(ctl "${C_EPS[H]}" alarm list)"
t_contains "endpoint status lists it among the errors" "alarm:CORRUPT" "$(ctl "${C_EPS[H]}" endpoint status -w json)"
t_contains "/health says unhealthy, as etcd 3.4's" '"health":"false"' "$(curl -s --max-time 5 "http://${C_EPS[H]}/health" || true)"
t_contains "the leader logs etcd's warning" "same compact revision then hashes must match" "$(cat "${C_LOGS[L]}")"
t_contains "every member applied it" "alarm raised" "$(cat "${C_LOGS[H]}")"
out=$(ctl "${C_EPS[H]}" put after-alarm x 2>&1) && t_fail "put succeeded under CORRUPT: $out" ||
  t_contains "writes fail with etcd's error" "etcdserver: corrupt cluster" "$out"
out=$(ctl "${C_EPS[L]}" txn <<<$'\nput t1 x\n\n' 2>&1) || true
t_contains "txns fail too" "etcdserver: corrupt cluster" "$out"
t_eq "reads still work (etcd 3.4 serves Range outside the corrupt applier)" "value-3" \
  "$(ctl "${C_EPS[H]}" get key3 --print-value-only)"

# disarmed, writes work again, and the next passes raise it again: the member still differs.
# A pass (every 2 s) may raise it again between the disarm and the check that follows it, so
# each check disarms and looks again, for a while.
raised=$(grep -c "proposed the CORRUPT alarm" "${C_LOGS[L]}" || true)
disarm() { timeout 10 etcdctl --endpoints="${C_EPS[L]}" --command-timeout=5s alarm disarm >/dev/null 2>&1; }
alarm_gone() { disarm && [ -z "$(timeout 10 etcdctl --endpoints="${C_EPS[L]}" --command-timeout=5s alarm list 2>/dev/null)" ]; }
disarm_put() { disarm && timeout 5 etcdctl --endpoints="${C_EPS[L]}" put after-disarm x >/dev/null 2>&1; }
t_wait_until 20 alarm_gone && t_ok "the disarmed alarm is gone" || t_fail "the alarm is still listed after disarm"
if t_wait_until 20 disarm_put; then
  t_ok "writes work once disarmed"
else
  t_fail "writes still refused after disarm"
fi
if t_wait_until 20 has_alarm; then t_ok "the next pass raises it again"; else t_fail "not raised again after disarm"; fi
t_eq "again" "alarm:CORRUPT " "$(ctl "${C_EPS[L]}" alarm list)"
[ "$(grep -c "proposed the CORRUPT alarm" "${C_LOGS[L]}")" -gt "$raised" ] && t_ok "by a new proposal" ||
  t_fail "no new proposal"

# ---- 3. the check at start -----------------------------------------------------------------
t_stop "${C_RAFTDS[F]}"
LOGF=$T_TMP/m$F-initial.log
rc=0
# shellcheck disable=SC2086
timeout 60 "$CAIRN_BIN/raftd" ${C_FLAGS[F]} --experimental-initial-corrupt-check >"$LOGF" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && t_ok "the corrupted member's raftd refuses to start (rc=$rc)" ||
  t_fail "the corrupted member's raftd rc=$rc (0: started, 124: hung)"
t_contains "with etcd's message" "found data inconsistency with peers" "$(cat "$LOGF")"
t_contains "naming the peer that differs" "found different hash values from remote peer" "$(cat "$LOGF")"
if grep -q "raft state loaded" "$LOGF"; then t_fail "the raft core started before the check"; else t_ok "the raft core never started"; fi

# a healthy member starts; the corrupted member (raftd down) does not answer and is skipped
t_stop "${C_RAFTDS[H]}"
LOGH=$T_TMP/m$H-initial.log
# shellcheck disable=SC2086
t_start_daemon "$LOGH" "$CAIRN_BIN/raftd" ${C_FLAGS[H]} --experimental-initial-corrupt-check; C_RAFTDS[H]=$T_LAST_PID
if t_wait_until 40 grep -q "initial corruption checking passed; no corruption" "$LOGH"; then
  t_ok "a healthy member passes the check"
else
  t_fail "no pass in the healthy member's log: $(tail -n 5 "$LOGH")"
fi
t_contains "the member that did not answer is skipped with a warning" "failed hash kv request" "$(cat "$LOGH")"
t_wait_until 10 grep -q "raft state loaded" "$LOGH" && t_ok "and then starts its raft core" || t_fail "core not started"
kill -0 "${C_RAFTDS[H]}" 2>/dev/null && t_ok "its raftd runs" || t_fail "its raftd exited"
t_wait_until 20 bash -c "timeout 5 etcdctl --endpoints=${C_EPS[H]} --command-timeout=3s get key3 --print-value-only 2>/dev/null | grep -qx value-3" &&
  t_ok "and serves linearizable reads" || t_fail "the healthy member does not serve"

# ---- 4. a member whose revision the others compacted away is skipped, as in etcd -----------
# The corrupted member (raftd still down) is behind: the others write and compact past its
# revision, so at start it cannot compare (the peers answer 'compacted') and starts with a
# warning; the leader's next passes, at the leader's revision, find it again.
LH=${C_EPS[L]},${C_EPS[H]} # the two members whose raftd runs
PUT_EPS=$LH
ctl "$LH" alarm disarm >/dev/null || t_fail "alarm disarm (2)"
for i in 1 2 3; do put_retry "late$i" "x$i" || t_fail "put late$i"; done
rev=$(ctl "$LH" get late3 -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
ctl "$LH" compact "$rev" >/dev/null && t_ok "compacted at $rev" || t_fail "compact"
LOGF2=$T_TMP/m$F-initial2.log
# shellcheck disable=SC2086
t_start_daemon "$LOGF2" "$CAIRN_BIN/raftd" ${C_FLAGS[F]} --experimental-initial-corrupt-check; C_RAFTDS[F]=$T_LAST_PID
if t_wait_until 40 grep -q "initial corruption checking passed" "$LOGF2"; then
  t_ok "a member behind the peers' compaction cannot be compared at start, and starts"
else
  t_fail "the member behind did not pass: $(grep -v 'level=debug' "$LOGF2" | tail -n 5)"
fi
t_contains "with etcd's warning" "cannot fetch hash from remote peer; local member is behind" "$(cat "$LOGF2")"
# A pass that began while F's raftd was down waited for it and may take F's answer at that
# pass's older revision (so raise the alarm again, rightly: F still differs there). Let the
# leader finish two passes that began after F came back, then disarm: from then on every pass
# is at or above the compaction.
LNOW=$(t_leader_index); [ "$LNOW" -ge 0 ] || LNOW=$L
RLOG=${C_LOGS[LNOW]} # the leader's raftd log: H's raftd was restarted into its own
[ "$LNOW" = "$H" ] && RLOG=$LOGH
[ "$LNOW" = "$F" ] && RLOG=$LOGF2
before=$(grep -c 'finished peer corruption check' "$RLOG" || true)
t_wait_until 40 bash -c "[ \$(grep -c 'finished peer corruption check' '$RLOG') -ge $((before + 2)) ]" ||
  t_fail "no passes after the member came back"
ctl "$LH" alarm disarm >/dev/null || t_fail "alarm disarm (3)"
# a revision above the compaction to compare at: at the compact revision itself every member
# answers 'compacted' (etcd's HashByRev does the same)
put_retry late4 x4 || t_fail "put late4: $(ctl "$LH" alarm list)"
if t_wait_until 30 has_alarm; then t_ok "once it caught up, the leader's passes find it again"; else t_fail "not found again"; fi
t_eq "the alarm" "alarm:CORRUPT " "$(ctl "$LH" alarm list)"
t_contains "and the log names the member" "mismatched-member=$F_HEX" "$(grep 'proposed the CORRUPT alarm' "$RLOG" | tail -n 1)"

t_done
