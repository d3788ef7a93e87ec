#!/usr/bin/env bash
# A watch created "from now" right after a put was acknowledged starts after that put, as
# etcd's: its created response's header.revision is at least the put's revision, and the put's
# own event is never sent to it. stored used to answer a write before publishing its events, so
# a gateway could take the watch create before the frame of the client's own write: the created
# header came one revision behind etcd's (test_json_streams, about one run in three) and the
# watcher was then sent the write it was created after. 300 put/watch pairs on one member, then
# 300 through another member's gateway.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import etcd3, grpc' 2>/dev/null || { echo "needs python3-etcd3 python3-grpcio (deploy/deps.sh)"; exit 1; }
t_start_cluster 3
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30 || { t_fail "cluster not healthy"; t_done; exit 1; }; done
for i in 0 1; do
  out=$($PY - "${C_EPS[i]}" <<'PYEOF'
import sys, queue, threading
import grpc
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc
ch = grpc.insecure_channel(sys.argv[1])
kv = rpc_pb2_grpc.KVStub(ch)
watch = rpc_pb2_grpc.WatchStub(ch)
bad = []
for n in range(300):
    key = b"/wap/k%d" % n
    r = kv.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=10)
    put_rev = r.header.revision
    q = queue.Queue()
    q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key)))
    def gen():
        while True:
            x = q.get()
            if x is None:
                return
            yield x
    it = watch.Watch(gen(), timeout=10)
    created = next(it)
    if created.header.revision < put_rev:
        bad.append("pair %d: put at %d, watch created at %d" % (n, put_rev, created.header.revision))
    # a second write to the key: the first event the watcher gets must be it, not the first put
    r2 = kv.Put(rpc_pb2.PutRequest(key=key, value=b"w"), timeout=10)
    ev = next(it)
    if not ev.events or ev.events[0].kv.mod_revision != r2.header.revision:
        bad.append("pair %d: first event at %s, expected the second put at %d (first put %d)" % (
            n, [e.kv.mod_revision for e in ev.events], r2.header.revision, put_rev))
    q.put(None)
    it.cancel()
print("bad=%d" % len(bad))
for b in bad[:5]:
    print(b)
PYEOF
)
  echo "$out" | sed 's/^/# /'
  t_contains "m$i: every watch created after a put starts after it" "bad=0" "$out"
done
t_done
