#!/usr/bin/env bash
# Watch on one member: the guarantee checker (tests/watch/watchcheck.py, no --lenient), a
# gateway restart under it, a watch from a compacted revision, a slow reader that never reads
# (the gateway keeps serving everyone else and its memory stays bounded), and bad requests.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
$PY -c 'import etcd3, grpc' 2>/dev/null || { echo "needs python3-etcd3 python3-grpcio (deploy/deps.sh)"; exit 1; }

T_EXTRA_FLAGS="--experimental-watch-progress-notify-interval 1s"
t_start_cluster 1
t_wait_healthy "${C_EPS[0]}" || { t_fail "not healthy"; t_done; exit 1; }
EP=${C_EPS[0]}

# 1. the checker, against two gateways sharing the client port (SO_REUSEPORT); one is killed
# with kill -9 mid-run: its clients reconnect to the other and their watches resume from the
# last revision they saw, nothing lost or duplicated
t_start_daemon "${C_LOGS[0]}" "$CAIRN_BIN/gatewayd" ${C_FLAGS[0]} --gateway-id gw2; GW2=$T_LAST_PID
sleep 0.5
$PY "$CAIRN_SRC/tests/watch/watchcheck.py" --endpoints "$EP" --seconds 14 >"$T_TMP/check.out" 2>&1 &
checker=$!
T_PIDS+=("$checker")
# which gateway the kernel gave the connections to is not ours to choose: kill each in turn,
# the other one up meanwhile
sleep 5
t_kill9 "${C_GWS[0]}"
sleep 1.5
t_restart_proc gatewayd 0
sleep 1.5
t_kill9 "$GW2"
sleep 1.5
t_start_daemon "${C_LOGS[0]}" "$CAIRN_BIN/gatewayd" ${C_FLAGS[0]} --gateway-id gw2; GW2=$T_LAST_PID
rc=0; wait "$checker" || rc=$?
grep -v "^  sample" "$T_TMP/check.out" | tail -n 40
[ "$rc" -eq 0 ] && t_ok "watchcheck: no violation (one of two gateways killed mid-run)" || t_fail "watchcheck exit $rc"
grep -qE "stream breaks: [1-9]" "$T_TMP/check.out" && t_ok "streams did break and resume on the other gateway" ||
  t_fail "no stream broke: the kill did not hit the watchers ($(grep 'stream breaks' "$T_TMP/check.out"))"

# 2. etcdctl watch sees a live put, with prev_kv
timeout 5 etcdctl --endpoints="$EP" watch /live --prev-kv >"$T_TMP/live.out" 2>&1 &
w=$!
sleep 0.5
etcdctl --endpoints="$EP" put /live one >/dev/null
etcdctl --endpoints="$EP" put /live two >/dev/null
t_wait_until 4 grep -qx two "$T_TMP/live.out" || true
kill "$w" 2>/dev/null || true; wait "$w" 2>/dev/null || true
t_eq "etcdctl watch --prev-kv output" "$(printf 'PUT\n/live\none\nPUT\n/live\none\n/live\ntwo')" "$(cat "$T_TMP/live.out")"

# 3. bad input: each gets etcd's answer (the same script against Debian's etcd) and the
# stream keeps serving
cat >"$T_TMP/bad.py" <<'PYEOF'
import sys, time, grpc
sys.path.insert(0, sys.argv[2])
from pbwire import vint, fld
from etcd3.etcdrpc import rpc_pb2 as pb
ch = grpc.insecure_channel(sys.argv[1])
# WatchRequest encoded by hand (python3-etcd3's proto predates watch_id); etcd 3.4's numbers
def create(key, end=b"", wid=0):
    return fld(1, 2, fld(1, 2, key) + (fld(2, 2, end) if end else b"") + (fld(7, 0, vint(wid)) if wid else b""))
def cancel(wid):
    return fld(2, 2, fld(1, 0, vint(wid)))
reqs = [create(b"b", b"a"), create(b"x", wid=7), create(b"y", wid=7), cancel(99), cancel(7), create(b"z"),
        create(b"")]
call = ch.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=lambda x: x,
                        response_deserializer=pb.WatchResponse.FromString)
def gen():
    for r in reqs:
        yield r
    time.sleep(1.0)
out = []
try:
    for resp in call(gen(), timeout=3):
        out.append("id=%d created=%d canceled=%d reason=%s" % (resp.watch_id, resp.created, resp.canceled, resp.cancel_reason))
    out.append("end=OK")
except grpc.RpcError as e:
    out.append("end=%s" % e.code().name)
print("\n".join(out))
PYEOF
t_start_etcd e0 "$(t_port)" "$(t_port)"
t_wait_healthy "$E_EP"
$PY "$T_TMP/bad.py" "$E_EP" "$CAIRN_SRC/tests/watch" >"$T_TMP/bad.etcd" 2>&1
$PY "$T_TMP/bad.py" "$EP" "$CAIRN_SRC/tests/watch" >"$T_TMP/bad.cairn" 2>&1
grep -q "created=1" "$T_TMP/bad.etcd" || t_fail "the bad-input script did not run against etcd: $(cat "$T_TMP/bad.etcd")"
t_eq "bad watch requests get etcd's answers" "$(cat "$T_TMP/bad.etcd")" "$(cat "$T_TMP/bad.cairn")"

# 4. a watch from a compacted revision: created, then canceled with compact_revision
for i in 1 2 3; do etcdctl --endpoints="$EP" put /c/$i v >/dev/null; done
rev=$(etcdctl --endpoints="$EP" get /c/3 -w json | $PY -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
etcdctl --endpoints="$EP" compaction "$rev" >/dev/null
out=$(timeout 3 etcdctl --endpoints="$EP" watch /c/ --prefix --rev=$((rev - 1)) 2>&1 || true)
t_contains "watch below the compaction is canceled" "required revision has been compacted" "$out"
t_done
