#!/usr/bin/env bash
# Bad input: malformed HTTP/2, garbage gRPC frames, truncated protobuf, an oversized request,
# unknown and malformed IPC messages. Each must get an error, and the node must keep serving.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
t_start_cairn node "$CP" "$PP"
t_wait_healthy "$C_EP" 30
URL=http://127.0.0.1:$CP

grpc_call() { t_grpc_call "$URL" "$@"; }
frame() { python3 -c 'import sys,struct;b=bytes.fromhex(sys.argv[1]);sys.stdout.buffer.write(bytes([int(sys.argv[2])])+struct.pack(">I",len(b) if len(sys.argv)<4 else int(sys.argv[3]))+b)' "$@"; }

# 1. garbage protobuf in a well-formed gRPC frame
frame ffffffffffffffff 0 >"$T_TMP/garbage.bin"
t_contains "garbage protobuf -> INTERNAL unmarshal error" "status=13" "$(grpc_call /etcdserverpb.KV/Put "$T_TMP/garbage.bin")"
# 2. truncated protobuf: field 1 (key) claims 10 bytes, 2 present
frame 0a0a6162 0 >"$T_TMP/trunc.bin"
t_contains "truncated protobuf -> error" "status=13" "$(grpc_call /etcdserverpb.KV/Range "$T_TMP/trunc.bin")"
# 3. gRPC prefix claims more bytes than sent
frame 0a03666f6f 0 100 >"$T_TMP/short.bin"
t_contains "short gRPC message -> INTERNAL" "status=13" "$(grpc_call /etcdserverpb.KV/Range "$T_TMP/short.bin")"
# 4. compressed flag without an encoding
frame 0a03666f6f 1 >"$T_TMP/comp.bin"
t_contains "compressed message -> UNIMPLEMENTED" "status=12" "$(grpc_call /etcdserverpb.KV/Range "$T_TMP/comp.bin")"
# 5. empty key
frame 0a00 0 >"$T_TMP/nokey.bin"
t_eq "empty key -> etcd's text" "status=3 message=etcdserver: key is not provided" "$(grpc_call /etcdserverpb.KV/Put "$T_TMP/nokey.bin")"
# 6. a 2 MiB Put: rejected, not stored
python3 - "$T_TMP/big.bin" <<'PY'
import struct, sys
key = b"big"; val = b"x" * (2 * 1024 * 1024)
def ld(f, b):
    n = len(b); v = b""
    while True:
        c = n & 0x7f; n >>= 7
        v += bytes([c | (0x80 if n else 0)])
        if not n: break
    return bytes([(f << 3) | 2]) + v + b
msg = ld(1, key) + ld(2, val)
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
PY
r=$(grpc_call /etcdserverpb.KV/Put "$T_TMP/big.bin")
t_contains "2 MiB request rejected (RESOURCE_EXHAUSTED)" "status=8" "$r"
# 1.6 MiB: under gRPC's limit, over --max-request-bytes: etcd's own error
python3 - "$T_TMP/mid.bin" <<'PY'
import struct, sys
val = b"y" * (1600 * 1024)
def ld(f, b):
    n = len(b); v = b""
    while True:
        c = n & 0x7f; n >>= 7
        v += bytes([c | (0x80 if n else 0)])
        if not n: break
    return bytes([(f << 3) | 2]) + v + b
msg = ld(1, b"mid") + ld(2, val)
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
PY
t_eq "1.6 MiB request -> request is too large" "status=3 message=etcdserver: request is too large" "$(grpc_call /etcdserverpb.KV/Put "$T_TMP/mid.bin")"
t_eq "oversized values were not stored" "" "$(etcdctl --endpoints="$C_EP" get big mid --print-value-only)"
# 7. unknown method
frame "" 0 >"$T_TMP/empty.bin"
t_contains "unknown method -> UNIMPLEMENTED" "status=12" "$(grpc_call /etcdserverpb.KV/Nope "$T_TMP/empty.bin")"
# 8. malformed HTTP/2: preface then garbage; and random bytes instead of a preface
python3 - "$CP" <<'PY'
import socket, sys, os
port = int(sys.argv[1])
for payload in [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(4096), os.urandom(2048), b"\x16\x03\x01" + os.urandom(600)]:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(payload)
        s.settimeout(5)
        while s.recv(65536):
            pass
    except Exception:
        pass
    s.close()
PY
t_ok "malformed HTTP/2 connections handled"
# 9. unknown and malformed IPC messages to stored and raftd
RUN=$C_DATA/run
/usr/bin/python3 - "$RUN" <<'PY'
import sys, zmq, time
run = sys.argv[1]
ctx = zmq.Context()
for svc in ("stored", "raftd"):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, b"badclient-" + svc.encode())
    s.setsockopt(zmq.LINGER, 0)
    s.connect("ipc://%s/%s.ipc" % (run, svc))
    for frame in [b"\xc1garbage", b"\x92\x01\x7f", b"\x92\x09\x01", b"", b"\x93\x01\x0d\xa1x"]:
        s.send(frame)
    s.send_multipart([b"a", b"b", b"c"])
    replies = 0
    deadline = time.time() + 3
    while time.time() < deadline and replies < 5:
        if s.poll(200):
            s.recv_multipart(); replies += 1
    print(svc, "replies", replies)
    if replies < 4:
        sys.exit("%s answered only %d of the bad frames" % (svc, replies))
    s.close()
PY
[ $? -eq 0 ] && t_ok "bad IPC frames answered with errors"
# 9b. membership changes whose etcd request does not decode, and unknown operations: an error
# answer each, nothing proposed
/usr/bin/python3 - "$RUN" <<'PY'
import sys, zmq, time
run = sys.argv[1]
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect("ipc://%s/raftd.ipc" % run)
ops = [1, 2, 3, 4, 99, 0]
body = b"\xff\xff\xff"
for i, op in enumerate(ops):
    # msgpack [1, MEMBER_CHANGE=20, req_id, op, bin body], by hand (small positive ints)
    s.send(bytes([0x95, 1, 20, 100 + i, op, 0xc4, len(body)]) + body)
codes = {}
deadline = time.time() + 5
while time.time() < deadline and len(codes) < len(ops):
    if s.poll(200):
        m = s.recv()
        # RESULT: [1, 12, req_id, code, message, body]; req_id and code are small positive ints
        if len(m) > 4 and m[0] == 0x96 and m[2] == 12:
            codes[m[3]] = m[4]
print("codes", codes)
if len(codes) != len(ops) or any(c == 0 for c in codes.values()):
    sys.exit("bad member changes not all refused: %r" % codes)
PY
[ $? -eq 0 ] && t_ok "undecodable member changes refused with an error"
t_eq "membership unchanged by them" 1 "$(etcdctl --endpoints="$C_EP" member list | grep -c . || true)"
# 10. still serving, and the processes are the same ones
etcdctl --endpoints="$C_EP" put still alive >/dev/null
t_eq "node still serves after bad input" "alive" "$(etcdctl --endpoints="$C_EP" get still --print-value-only)"
for p in "$C_STORED" "$C_RAFTD" "$C_GW"; do kill -0 "$p" 2>/dev/null && t_ok "pid $p alive" || t_fail "pid $p died"; done
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
t_done
