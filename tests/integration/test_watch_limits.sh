#!/usr/bin/env bash
# --max-watchers: a gateway holds at most that many watchers over all its streams; a create
# past it is refused (created + canceled, watch_id -1, a reason that names the flag) and the
# stream goes on serving the watchers it has; a cancel frees a place.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import etcd3, grpc' 2>/dev/null || { echo "needs python3-etcd3 python3-grpcio (deploy/deps.sh)"; exit 1; }
T_EXTRA_FLAGS="--max-watchers 3"
t_start_cluster 1
EP=${C_EPS[0]}
t_wait_healthy "$EP" || { t_fail "not healthy"; t_done; exit 1; }
cat >"$T_TMP/lim.py" <<'PYEOF'
import sys, time, threading, grpc
sys.path.insert(0, sys.argv[2])
from pbwire import fld, msg
from etcd3.etcdrpc import rpc_pb2 as pb, rpc_pb2_grpc as pbg
ch = grpc.insecure_channel(sys.argv[1])
kv = pbg.KVStub(ch)
def create(key):
    return fld(1, 2, msg((1, key)))
def cancel(wid):
    return fld(2, 2, msg((1, wid)))
reqs = [create(b"/l/a"), create(b"/l/b"), create(b"/l/c"), create(b"/l/d"), "put", cancel(1), create(b"/l/e"), "put"]
out = []
def gen():
    for r in reqs:
        if r == "put":
            time.sleep(0.3)
            kv.Put(pb.PutRequest(key=b"/l/a", value=b"x"))
            kv.Put(pb.PutRequest(key=b"/l/e", value=b"y"))
            time.sleep(0.3)
        else:
            yield r
    time.sleep(0.5)
call = ch.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=lambda x: x,
                        response_deserializer=pb.WatchResponse.FromString)
try:
    for r in call(gen(), timeout=4):
        ev = ",".join("%s=%s" % (e.kv.key.decode(), e.kv.value.decode()) for e in r.events)
        out.append("id=%d created=%d canceled=%d reason=%s events=%s" % (r.watch_id, r.created, r.canceled, r.cancel_reason, ev))
except grpc.RpcError as e:
    out.append("end=%s" % e.code().name)
print("\n".join(out))
PYEOF
got=$($PY "$T_TMP/lim.py" "$EP" "$CAIRN_SRC/tests/watch" 2>&1)
want='id=0 created=1 canceled=0 reason= events=
id=1 created=1 canceled=0 reason= events=
id=2 created=1 canceled=0 reason= events=
id=-1 created=1 canceled=1 reason=cairn: too many watchers on this gateway (--max-watchers) events=
id=0 created=0 canceled=0 reason= events=/l/a=x
id=1 created=0 canceled=1 reason= events=
id=3 created=1 canceled=0 reason= events=
id=0 created=0 canceled=0 reason= events=/l/a=x
id=3 created=0 canceled=0 reason= events=/l/e=y
end=DEADLINE_EXCEEDED'
t_eq "--max-watchers 3: the 4th is refused, a cancel frees a place" "$want" "$got"
t_done
