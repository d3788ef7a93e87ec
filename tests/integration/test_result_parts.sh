#!/usr/bin/env bash
# An answer in parts (cairn_ipc.h RESULT_PART), seen from a real gatewayd: a script plays stored
# (bound on <run>/stored.ipc) and answers serializable Ranges. The parts of a good answer are
# put back together; an answer with a part missing is refused with "retry" (a full queue drops
# frames), never passed on corrupt; an answer above gRPC's 2 GiB is refused as too large.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
D=$T_TMP/node
flags=$(t_node_flags node "$D" "$CP" "$PP")
mkdir -p "$D/run"
cat >"$T_TMP/fake_stored.py" <<'PY'
import os, sys, time, zmq
sys.path.insert(0, os.environ["CAIRN_SRC"] + "/tests/integration")
from ipcpack import pk, up
RANGE, RESULT, STATUS, STATUS_RESP, RESULT_PART = 11, 12, 13, 14, 25
s = zmq.Context().socket(zmq.ROUTER)
s.setsockopt(zmq.LINGER, 0)
s.bind("ipc://%s/stored.ipc" % sys.argv[1])
open(sys.argv[2], "w").close()  # bound
kv = b"\x0a\x05hello\x2a\x05world"            # KeyValue{key: "hello", value: "world"}
good = b"\x12" + bytes([len(kv)]) + kv + b"\x20\x01"  # RangeResponse{kvs: [kv], count: 1}
end = time.time() + 90
while time.time() < end:
    if not s.poll(100):
        continue
    ident, frame = s.recv_multipart()
    m, _ = up(frame)
    if m[1] == STATUS:
        s.send_multipart([ident, pk([1, STATUS_RESP, m[2], 0, 1, 1, 1, 0, 0, 1, 0, 1, 0])])
        continue
    if m[1] != RANGE:
        continue
    req, body = m[2], m[4]
    if b"lost" in body:    # the middle part lost (every time: the client retries Unavailable)
        s.send_multipart([ident, pk([1, RESULT_PART, req, 0, len(good), good[:4]])])
        s.send_multipart([ident, pk([1, RESULT, req, 0, b"", good[9:]])])
    elif b"huge" in body:  # announced as 3 GiB
        s.send_multipart([ident, pk([1, RESULT_PART, req, 0, 3 << 30, b"x" * 16])])
        s.send_multipart([ident, pk([1, RESULT, req, 0, b"", b"y"])])
    else:                  # good: three parts
        s.send_multipart([ident, pk([1, RESULT_PART, req, 0, len(good), good[:4]])])
        s.send_multipart([ident, pk([1, RESULT_PART, req, 4, len(good), good[4:9]])])
        s.send_multipart([ident, pk([1, RESULT, req, 0, b"", good[9:]])])
PY
/usr/bin/python3 "$T_TMP/fake_stored.py" "$D/run" "$T_TMP/bound" >"$T_TMP/fake.log" 2>&1 & T_PIDS+=($!)
for _ in $(seq 1 50); do [ -f "$T_TMP/bound" ] && break; sleep 0.1; done
t_start_daemon "$T_TMP/gw.log" "$CAIRN_BIN/gatewayd" $flags --gateway-id gw1; GW=$T_LAST_PID
get() { timeout 20 etcdctl --endpoints="127.0.0.1:$CP" --command-timeout=3s get "$1" --consistency=s 2>&1 || true; }
for _ in $(seq 1 50); do out=$(get hello); [ -n "$out" ] && break; sleep 0.2; done
t_eq "an answer in three parts is put back together" "$(printf 'hello\nworld')" "$out"
t_contains "an answer with a part missing is refused with retry (Unavailable)" "code = Unavailable desc = etcdserver: the answer was lost inside the node" "$(get lost)"
t_contains "an answer above 2 GiB is refused as too large" "larger than gRPC's 2 GiB" "$(get huge)"
kill -0 "$GW" 2>/dev/null && t_ok "gatewayd still runs" || t_fail "gatewayd died"
t_stop "$GW"
t_done
