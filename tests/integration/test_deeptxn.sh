#!/usr/bin/env bash
# Issue 7, item 1: a Txn nested thousands of levels deep (RequestOp{request_txn{...}} repeated,
# ~42 KB for 6,000 levels) used to kill gatewayd with a stack overflow inside protobuf-c's
# recursive unpack, before any check ran: a remote, unauthenticated crash. Now the depth is
# measured on the bytes first (cairn_kvcheck_txn_depth) and the client gets InvalidArgument.
# The same request proposed straight to raftd (as an older gateway could) must not crash
# stored when it is applied either: it fails as an error result.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
t_start_cairn node "$CP" "$PP"
t_wait_healthy "$C_EP" 30
URL=http://127.0.0.1:$CP
TOODEEP="etcdserver: txn nested too deeply (more than 128 levels)"

# nested LEVELS OUT [INNER_HEX] [CUT]: a gRPC-framed TxnRequest holding LEVELS txns one inside
# the other (the innermost is INNER_HEX, empty by default), protobuf written by hand; CUT
# truncates the protobuf to that many bytes. The raw protobuf also goes to OUT.pb.
nested() {
  python3 - "$@" <<'PY'
import struct, sys
def varint(n):
    out = b""
    while True:
        c, n = n & 0x7f, n >> 7
        out += bytes([c | (0x80 if n else 0)])
        if not n:
            return out
levels, out = int(sys.argv[1]), sys.argv[2]
inner = bytes.fromhex(sys.argv[3]) if len(sys.argv) > 3 else b""
# each level is TxnRequest{success: [RequestOp{request_txn: <level below>}]}; the sizes go
# from the inside out, then the headers are written outside in (re-wrapping the bytes at
# every level would copy them 100,000 times)
heads, size = [], len(inner)
for _ in range(levels):
    op = varint(4 << 3 | 2) + varint(size)
    txn = varint(2 << 3 | 2) + varint(len(op) + size)
    heads.append(txn + op)
    size += len(op) + len(txn)
b = b"".join(reversed(heads)) + inner
assert len(b) == size
if len(sys.argv) > 4:
    b = b[:int(sys.argv[4])]
open(out + ".pb", "wb").write(b)
open(out, "wb").write(b"\0" + struct.pack(">I", len(b)) + b)
PY
}

grpc_call() { t_grpc_call "$URL" "$@"; }

# innermost txn for the accepted case: success: [RequestOp{request_put{key "deep", value "v"}}]
PUT_DEEP=120b12090a0464656570120176
nested 6000 "$T_TMP/d6000.bin"
nested 100000 "$T_TMP/d100k.bin"
nested 128 "$T_TMP/d128.bin"
nested 127 "$T_TMP/d127put.bin" "$PUT_DEEP"
nested 128 "$T_TMP/d128put.bin" "$PUT_DEEP"
nested 129 "$T_TMP/d129.bin"
nested 6000 "$T_TMP/cut.bin" "" 30000
t_eq "a 6,000-level txn is ~42 KB" 1 "$(python3 -c 'import os,sys;n=os.path.getsize(sys.argv[1]);print(int(40000<n<45000))' "$T_TMP/d6000.bin")"

# 1. the crashing request, several times: an error status each time, and the gateway lives
for i in 1 2 3 4 5; do
  t_eq "6,000-level txn #$i -> InvalidArgument" "status=3 message=$TOODEEP" \
    "$(grpc_call /etcdserverpb.KV/Txn "$T_TMP/d6000.bin")"
done
kill -0 "$C_GW" 2>/dev/null && t_ok "gatewayd alive after the deep txns" || t_fail "gatewayd died (pid $C_GW)"
t_eq "100,000-level txn -> InvalidArgument" "status=3 message=$TOODEEP" \
  "$(grpc_call /etcdserverpb.KV/Txn "$T_TMP/d100k.bin")"
t_contains "truncated deep txn -> unmarshal error" "status=13" "$(grpc_call /etcdserverpb.KV/Txn "$T_TMP/cut.bin")"
# 2. at the limit: served; one level more: refused. With etcd's default --max-txn-ops (128)
# every level spends one op of its parent's budget, so the deepest txn etcd itself accepts is
# 128 levels with an empty innermost txn, or 127 levels with one op at the bottom: both are
# served here, and 128 levels plus an op get etcd's own answer, not the depth error.
t_eq "128-level txn is served" "status=0 message=" "$(grpc_call /etcdserverpb.KV/Txn "$T_TMP/d128.bin")"
t_eq "127-level txn with a put is served" "status=0 message=" "$(grpc_call /etcdserverpb.KV/Txn "$T_TMP/d127put.bin")"
t_eq "the put 127 levels down was applied" "v" "$(etcdctl --endpoints="$C_EP" get deep --print-value-only)"
etcdctl --endpoints="$C_EP" del deep >/dev/null || t_fail "del deep"
t_eq "128 levels and a put -> etcd's op budget answer" \
  "status=3 message=etcdserver: too many operations in txn request" "$(grpc_call /etcdserverpb.KV/Txn "$T_TMP/d128put.bin")"
t_eq "129-level txn -> InvalidArgument" "status=3 message=$TOODEEP" "$(grpc_call /etcdserverpb.KV/Txn "$T_TMP/d129.bin")"
t_eq "nothing of the refused txns was applied" "" "$(etcdctl --endpoints="$C_EP" get deep --print-value-only)"
# 3. the node still serves, through etcdctl
etcdctl --endpoints="$C_EP" put after-deep ok >/dev/null || t_fail "put after the deep txns"
t_eq "put/get after the deep txns" "ok" "$(etcdctl --endpoints="$C_EP" get after-deep --print-value-only)"

# 4. the apply path: a fake gateway proposes the 6,000-level txn straight to raftd, bypassing
# gatewayd's check; stored applies it as an error result (and tells the fake gateway so)
MEMBER=$(etcdctl --endpoints="$C_EP" endpoint status -w json |
  python3 -c 'import json,sys;print("%016x" % json.load(sys.stdin)[0]["Status"]["header"]["member_id"])') || true
if /usr/bin/python3 - "$C_DATA/run" "$MEMBER" "$T_TMP/d6000.bin.pb" "$TOODEEP" <<'PY'
import os, sys, time, zmq
run, member, body, want = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read(), sys.argv[4]
sys.path.insert(0, os.environ["CAIRN_SRC"] + "/tests/integration")
from ipcpack import pk, up
PROPOSE, PROPOSE_FAIL, RESULT, TXN = 1, 2, 12, 3
origin = ("%s/deeptxn-test" % member).encode()   # stored answers only its own member's gateways
ctx = zmq.Context()
socks = {}
for svc in ("stored", "raftd"):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, origin)
    s.setsockopt(zmq.LINGER, 0)
    s.connect("ipc://%s/%s.ipc" % (run, svc))
    socks[svc] = s
time.sleep(0.3)   # let the connections (and our identity) reach both ROUTERs
envelope = pk([1, origin, 4242, TXN, body])
socks["raftd"].send(pk([1, PROPOSE, 4242, envelope]))
deadline = time.time() + 10
while time.time() < deadline:
    for svc, s in socks.items():
        if s.poll(100):
            m, _ = up(s.recv())
            if m[1] == PROPOSE_FAIL:
                sys.exit("proposal refused by raftd: %r" % (m,))
            if m[1] == RESULT and m[2] == 4242:
                code, msg = m[3], m[4].decode()
                print("result", code, msg)
                sys.exit(0 if code == 3 and msg == want else "unexpected result %d %r" % (code, msg))
sys.exit("no RESULT for the deep proposal (stored crashed?)")
PY
then t_ok "deep txn proposed past the gateway: stored answers InvalidArgument"
else t_fail "deep txn proposed past the gateway"; fi
etcdctl --endpoints="$C_EP" put after-apply ok >/dev/null || t_fail "put after the deep entry"
t_eq "put/get after the deep entry was applied" "ok" "$(etcdctl --endpoints="$C_EP" get after-apply --print-value-only)"
for p in "$C_STORED" "$C_RAFTD" "$C_GW"; do kill -0 "$p" 2>/dev/null && t_ok "pid $p alive" || t_fail "pid $p died"; done
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
t_done
