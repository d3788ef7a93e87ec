#!/usr/bin/env bash
# --auto-compaction-mode periodic --auto-compaction-retention 2s: the leader compacts, through
# the log, at the revision of 2 s before, every 2 s once the first 2 s have passed - the same
# run against etcd 3.4 and Cairn, writes going on meanwhile. The compact revision is read with
# HashKV (its compact_revision), on every member of a 3-member Cairn cluster.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
cat >"$T_TMP/crev.py" <<'PYEOF'
import sys, grpc
from etcd3.etcdrpc import rpc_pb2 as pb, rpc_pb2_grpc as pbg
m = pbg.MaintenanceStub(grpc.insecure_channel(sys.argv[1]))
r = m.HashKV(pb.HashKVRequest(revision=0), timeout=5)
print(r.compact_revision)
PYEOF
crev() { $PY "$T_TMP/crev.py" "$1" 2>/dev/null || echo err; }
# write_for SECONDS ENDPOINT: a put every 50 ms
write_for() {
  local end=$(( $(date +%s%N) + $1 * 1000000000 )) i=0
  while [ "$(date +%s%N)" -lt "$end" ]; do
    etcdctl --endpoints="$2" put /ac/k$((i % 20)) "v$i" >/dev/null 2>&1 || true
    i=$((i + 1)); sleep 0.05
  done
}
FLAGS="--auto-compaction-mode periodic --auto-compaction-retention 2s"
EP1=$(t_port); EP2=$(t_port)
t_start_daemon "$T_TMP/etcd.log" etcd $(t_node_flags e1 "$T_TMP/etcd-e1" "$EP1" "$EP2") $FLAGS
E_EP=127.0.0.1:$EP1
T_EXTRA_FLAGS="$FLAGS"
t_start_cluster 3
t_wait_healthy "$E_EP" || t_fail "etcd not healthy"
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30 || t_fail "cairn not healthy"; done

for sys in etcd cairn; do
  ep=$E_EP; [ $sys = cairn ] && ep=${C_EPS[0]}
  before=$(crev "$ep")
  write_for 1 "$ep"
  early=$(crev "$ep")
  write_for 4 "$ep"
  late=$(crev "$ep")
  echo "$sys: compact revision before=$before after 1s=$early after 5s=$late"
  [ "$late" != err ] && [ "$late" -gt 1 ] && t_ok "$sys compacted automatically (compact revision $late)" ||
    t_fail "$sys did not compact (compact revision $late)"
  cur=$(etcdctl --endpoints="$ep" get /ac/k0 -w json | $PY -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
  # about 2 s of history kept: 40 puts at 20/s, give or take one period of 2 s
  kept=$((cur - late))
  [ "$kept" -ge 10 ] && [ "$kept" -le 140 ] && t_ok "$sys keeps about the last 2 s of history ($kept revisions)" ||
    t_fail "$sys keeps $kept revisions"
done
# every Cairn member compacted at the same revision (it went through the log). The members are
# asked back to back from one process, and again when a compaction (every 2 s) fell between
# two answers: differing answers more than a few times in a row is the failure.
cat >"$T_TMP/crev_all.py" <<'PYEOF'
import sys, grpc
from etcd3.etcdrpc import rpc_pb2 as pb, rpc_pb2_grpc as pbg
stubs = [pbg.MaintenanceStub(grpc.insecure_channel(ep)) for ep in sys.argv[1:]]
print(" ".join(str(s.HashKV(pb.HashKVRequest(revision=0), timeout=5).compact_revision) for s in stubs))
PYEOF
sleep 0.5
same=0
for try in 1 2 3 4 5; do
  revs=$($PY "$T_TMP/crev_all.py" "${C_EPS[@]}" 2>/dev/null || echo err)
  echo "compact revisions of the members: $revs"
  if [ "$revs" != err ] && [ "$(tr ' ' '\n' <<<"$revs" | sort -u | wc -l)" = 1 ]; then same=1; break; fi
  sleep 0.3
done
t_eq "every member has the same compact revision" 1 "$same"
t_done
