#!/usr/bin/env bash
# Leases (issue 9): tests/watch/leasecheck.py on one member and on a follower of a 3-member
# cluster (grant, revoke, keepalive, TimeToLive, Leases, expiry with DELETE events in one
# revision, etcd's texts), then a leader killed with kill -9 under two leases: the keys of the
# lease kept alive (through another member) are never deleted; the keys of the lease nobody
# keeps alive are deleted once, within TTL + election timeout (+ slack) of the new leader's
# election - etcd 3.4 restarts every TTL on a leader change.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import etcd3, grpc' 2>/dev/null || { echo "needs python3-etcd3 python3-grpcio (deploy/deps.sh)"; exit 1; }

t_start_cluster 3
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30 || { t_fail "cluster not healthy"; t_done; exit 1; }; done
lead=$(t_leader_index)
fol=$(( (lead + 1) % 3 )); other=$(( (lead + 2) % 3 ))
$PY "$CAIRN_SRC/tests/watch/leasecheck.py" --endpoint "${C_EPS[fol]}" >"$T_TMP/lc.out" 2>&1 &&
  t_ok "leasecheck on a follower: all checks passed" || { cat "$T_TMP/lc.out"; t_fail "leasecheck on a follower"; }

ep=${C_EPS[fol]}
kept=$(etcdctl --endpoints="$ep" lease grant 4 | awk '{print $2}')
lost=$(etcdctl --endpoints="$ep" lease grant 4 | awk '{print $2}')
etcdctl --endpoints="$ep" put /fo/kept v --lease="$kept" >/dev/null
etcdctl --endpoints="$ep" put /fo/lost v --lease="$lost" >/dev/null
rev=$(etcdctl --endpoints="$ep" get /fo/kept -w json | $PY -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
# the keepalive goes through a follower's gateway (forwarded to whoever leads)
etcdctl --endpoints="${C_EPS[other]}" lease keep-alive "$kept" >"$T_TMP/ka.out" 2>&1 &
ka=$!; T_PIDS+=("$ka")
timeout 30 etcdctl --endpoints="$ep" watch /fo/ --prefix --rev="$rev" >"$T_TMP/watch.out" 2>&1 &
w=$!; T_PIDS+=("$w")
sleep 1
killed_at=$(date +%s%N)
t_kill9 "${C_GWS[lead]}" "${C_STOREDS[lead]}" "${C_RAFTDS[lead]}"
# the lost lease: gone within TTL (4 s) + election (1 s) + 3 s slack of the kill
if t_wait_until 8 bash -c "[ -z \"\$(etcdctl --endpoints=$ep get /fo/lost --print-value-only 2>/dev/null)\" ]"; then
  t_ok "a lease nobody keeps alive expired after the leader died ($(( ($(date +%s%N) - killed_at) / 1000000 )) ms)"
else
  t_fail "/fo/lost still there 8 s after the leader was killed"
fi
sleep 6 # well past the kept lease's TTL
t_eq "a kept-alive lease's key survives the failover" "v" "$(etcdctl --endpoints="$ep" get /fo/kept --print-value-only)"
t_restart_proc stored "$lead"; t_restart_proc raftd "$lead"; t_restart_proc gatewayd "$lead"
t_wait_healthy "${C_EPS[lead]}" 30 || t_fail "old leader did not come back"
sleep 2
t_eq "the kept key is there on the restarted member too" "v" \
  "$(etcdctl --endpoints="${C_EPS[lead]}" get /fo/kept --print-value-only --consistency=s)"
kill "$w" "$ka" 2>/dev/null || true; wait "$w" "$ka" 2>/dev/null || true
t_eq "exactly one DELETE event, for the lost lease's key" "DELETE /fo/lost" \
  "$(grep -A1 '^DELETE' "$T_TMP/watch.out" | grep -v '^--' | paste -sd' ')"
grep -q "keepalived with TTL(4)" "$T_TMP/ka.out" && t_ok "keepalives answered through the failover" ||
  t_fail "keepalive output: $(tail -3 "$T_TMP/ka.out")"

# Txn compares on LEASE answer as etcd's (equal, not equal, a key without a lease, a missing key)
cat >"$T_TMP/txl.py" <<'PYEOF'
import sys, grpc
from etcd3.etcdrpc import rpc_pb2 as pb, rpc_pb2_grpc as pbg
ch = grpc.insecure_channel(sys.argv[1]); kv = pbg.KVStub(ch); ls = pbg.LeaseStub(ch)
lid = ls.LeaseGrant(pb.LeaseGrantRequest(TTL=100)).ID
kv.Put(pb.PutRequest(key=b"/txl/l", value=b"v", lease=lid)); kv.Put(pb.PutRequest(key=b"/txl/0", value=b"v"))
def t(key, res, val):
    return kv.Txn(pb.TxnRequest(compare=[pb.Compare(result=res, target=pb.Compare.LEASE, key=key, lease=val)])).succeeded
print(t(b"/txl/l", pb.Compare.EQUAL, lid), t(b"/txl/l", pb.Compare.EQUAL, lid + 1), t(b"/txl/0", pb.Compare.EQUAL, 0),
      t(b"/txl/l", pb.Compare.GREATER, 0), t(b"/txl/missing", pb.Compare.EQUAL, 0), t(b"/txl/0", pb.Compare.LESS, 1),
      t(b"/txl/l", pb.Compare.NOT_EQUAL, lid))
PYEOF
t_start_etcd e0 "$(t_port)" "$(t_port)"
t_wait_healthy "$E_EP" || t_fail "etcd did not start"
want="True False True True True True False" # what etcd 3.4.23 answers (checked just below)
t_eq "Txn compare on LEASE: etcd" "$want" "$($PY "$T_TMP/txl.py" "$E_EP" 2>&1)"
t_eq "Txn compare on LEASE: Cairn as etcd" "$want" "$($PY "$T_TMP/txl.py" "${C_EPS[lead]}" 2>&1)"
t_done
