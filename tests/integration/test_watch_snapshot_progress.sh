#!/usr/bin/env bash
# A progress request on a member whose store jumps by a snapshot must not claim revisions its
# watchers were not sent (ETCD_API.md: progress "sent only after every event <= that revision
# has been sent on the stream"; Kubernetes relies on it). test_watch_cluster caught the gateway
# answering at the status's revision right after a snapshot install, before the events in
# between were read from history (a progress at 8690, then an event at 8195).
#
# Member m0 is stopped; the others write under a prefix until m0 must come back by a snapshot.
# m0's stored and gatewayd start without its raftd, so the store sits at the old revision R0; a
# watcher from R0+1 is made there and progress requests are sent every 0.2 s. Then m0's raftd
# starts, the member installs the snapshot, and no further write happens: every event above R0
# must arrive, and none after a progress response at or above its revision.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import etcd3, grpc' 2>/dev/null || { echo "needs python3-etcd3 python3-grpcio (deploy/deps.sh)"; exit 1; }

T_EXTRA_FLAGS="--snapshot-count 100 --raft-log-memory-bytes 4096"
t_start_cluster 3
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30 || { t_fail "cluster not healthy"; t_done; exit 1; }; done
P=/snapprog/
for i in 1 2 3; do etcdctl --endpoints="${C_EPS[1]}" put "${P}a$i" "v$i" >/dev/null; done
t_wait_until 10 sh -c "etcdctl --endpoints=${C_EPS[0]} get --consistency=s ${P}a3 | grep -q v3"
R0=$(etcdctl --endpoints="${C_EPS[0]}" get --consistency=s "${P}a3" -w json | $PY -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
t_stop "${C_GWS[0]}" "${C_RAFTDS[0]}" "${C_STOREDS[0]}"

# 400 writes under the prefix (puts, some deletes) and 100 elsewhere, through m1
$PY - "${C_EPS[1]}" "$P" <<'PYEOF'
import sys, etcd3
host, port = sys.argv[1].split(":")
c = etcd3.client(host=host, port=int(port))
p = sys.argv[2]
for i in range(500):
    if i % 5 == 4:
        c.put("/elsewhere/%d" % i, "x")
    elif i % 7 == 6:
        c.delete(p + "k%d" % (i - 1))
    else:
        c.put(p + "k%d" % i, "v%d" % i)
PYEOF
# the prefix's revisions above R0, as the reference
etcdctl --endpoints="${C_EPS[1]}" watch --prefix "$P" --rev $((R0 + 1)) -w json >"$T_TMP/ref.json" 2>/dev/null &
refw=$!; T_PIDS+=("$refw")
sleep 2; kill "$refw" 2>/dev/null || true; wait "$refw" 2>/dev/null || true
$PY -c '
import json, sys
dec, s, i, revs = json.JSONDecoder(), open(sys.argv[1]).read(), 0, []
while True:
    while i < len(s) and s[i].isspace(): i += 1
    if i >= len(s): break
    o, i = dec.raw_decode(s, i)
    revs += [e["kv"]["mod_revision"] for e in o.get("Events") or []]
print("\n".join(str(r) for r in revs))' "$T_TMP/ref.json" >"$T_TMP/expect"
n_expect=$(wc -l <"$T_TMP/expect")
[ "$n_expect" -ge 300 ] && t_ok "reference: $n_expect events above $R0" || t_fail "reference watch gave $n_expect events"

t_restart_proc stored 0; t_restart_proc gatewayd 0
t_wait_until 20 sh -c "etcdctl --endpoints=${C_EPS[0]} --command-timeout=1s get --consistency=s ${P}a3 | grep -q v3" ||
  t_fail "m0's gateway does not serve without raftd"
$PY "$CAIRN_SRC/tests/watch/snapprogress.py" "${C_EPS[0]}" "$P" $((R0 + 1)) 14 "$T_TMP/expect" "$T_TMP/ready" \
  >"$T_TMP/check.out" 2>&1 &
checker=$!; T_PIDS+=("$checker")
t_wait_until 15 test -e "$T_TMP/ready" || t_fail "no progress answer before the snapshot"
sleep 0.5
t_restart_proc raftd 0
rc=0; wait "$checker" || rc=$?
cat "$T_TMP/check.out"
grep -q "snapshot installed" "${C_LOGS[0]}" && t_ok "m0 came back by a snapshot" ||
  t_fail "m0 did not install a snapshot (the test needs one)"
[ "$rc" -eq 0 ] && t_ok "every event above R0 arrived, none after a progress response that covered it" ||
  t_fail "progress or events wrong after the snapshot (exit $rc)"
t_done
