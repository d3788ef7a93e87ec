#!/usr/bin/env bash
# The launchers the README gives users:
#  - `cairnctl run --gateways 2`: starts stored, raftd and two gatewayds sharing the client
#    port, restarts a daemon that dies, and stops every child on SIGTERM;
#  - `deploy/local-cluster.sh 5`: a 5-member loopback cluster with one leader, stopped cleanly.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
flags=$(t_node_flags one "$T_TMP/one" "$CP" "$PP")
t_start_daemon "$T_TMP/cairnctl.log" "$CAIRN_BIN/cairnctl" run --gateways 2 $flags
SUP=$T_LAST_PID
t_wait_healthy "127.0.0.1:$CP" 30
children() { pgrep -P "$SUP" | sort; }
t_eq "cairnctl runs stored, raftd and 2 gateways" 4 "$(children | wc -l)"
for i in $(seq 1 10); do etcdctl --endpoints="127.0.0.1:$CP" put "k$i" "v$i" >/dev/null; done
t_eq "writes through the shared client port" 10 "$(etcdctl --endpoints="127.0.0.1:$CP" get k --prefix --keys-only | grep -c .)"
victim=$(pgrep -P "$SUP" -x raftd)
kill -KILL "$victim"
for i in $(seq 1 50); do n=$(pgrep -P "$SUP" -x raftd || true); [ -n "$n" ] && [ "$n" != "$victim" ] && break; sleep 0.1; done
[ -n "$n" ] && [ "$n" != "$victim" ] && t_ok "a killed raftd is restarted by the supervisor" || t_fail "raftd not restarted"
t_wait_healthy "127.0.0.1:$CP" 30 && t_ok "healthy after the restart" || t_fail "not healthy after the restart"
kids=$(children)
kill -TERM "$SUP"; wait "$SUP" 2>/dev/null || true
left=0; for k in $kids; do kill -0 "$k" 2>/dev/null && left=$((left + 1)); done
t_eq "SIGTERM to cairnctl stops every child" 0 "$left"

# five members through the local-cluster launcher (it uses cairnctl run per member)
BASE=$(python3 -c 'import socket,random
for _ in range(200):
    b = random.randrange(20000, 30000, 10); ok = True
    for port in [b + 10 * i + j for i in range(5) for j in range(2)]:
        s = socket.socket()
        try: s.bind(("127.0.0.1", port))
        except OSError: ok = False
        s.close()
    if ok: print(b); break')
CAIRN_CLUSTER_DIR=$T_TMP/lc t_start_daemon "$T_TMP/lc.log" bash "$CAIRN_SRC/deploy/local-cluster.sh" 5 "$BASE"
LC=$T_LAST_PID
EPS=$(for i in 0 1 2 3 4; do printf '127.0.0.1:%d,' $((BASE + 10 * i)); done | sed 's/,$//')
for i in 0 1 2 3 4; do t_wait_healthy "127.0.0.1:$((BASE + 10 * i))" 30 || t_fail "member $i not healthy"; done
st=$(etcdctl --endpoints="$EPS" endpoint status -w json | python3 -c 'import json,sys;d=json.load(sys.stdin);print(len(d), len({s["Status"]["leader"] for s in d}), sum(s["Status"]["leader"]==s["Status"]["header"]["member_id"] for s in d))')
t_eq "5 members, one leader seen by all" "5 1 1" "$st"
etcdctl --endpoints="127.0.0.1:$((BASE + 40))" put five members >/dev/null
t_eq "a write through m4 is read through m0" "members" "$(etcdctl --endpoints="127.0.0.1:$BASE" get five --print-value-only)"
kill -TERM "$LC"; wait "$LC" 2>/dev/null || true
sleep 1
t_eq "local-cluster.sh stops all 5 members" "" "$(pgrep -f "cairn-local-5" | head -1 || true)"
t_done
