#!/usr/bin/env bash
# Scaling a node's gateways while clients use it (issue 12): `cairnctl run` starts one node with
# one gateway; kill -USR1 adds gateways (they share the client port through SO_REUSEPORT), kill
# -USR2 removes the newest. Under a write load (etcdctl, a new connection per put, so the kernel
# spreads them over the gateways), with long-lived watch connections open:
#   - every added gateway takes connections of its own (seen with ss: established connections on
#     the client port owned by its PID);
#   - removing gateways loses no write and shows the client no error (the removed gateway
#     answers its calls in flight before it closes; a put that failed with Unavailable is tried
#     once more and counted apart, as a client library would);
#   - the last gateway is never removed; stored and raftd are never restarted.
source "$(dirname "$0")/lib.sh"
command -v ss >/dev/null || { echo "skip: needs ss (iproute2)"; exit 0; }
CP=$(t_port); PP=$(t_port)
EP=127.0.0.1:$CP
LOG=$T_TMP/node.log
# shellcheck disable=SC2046
CAIRN_BIN=$CAIRN_BIN t_start_daemon "$LOG" "$CAIRN_BIN/cairnctl" run --gateways 1 $(t_node_flags m0 "$T_TMP/m0" "$CP" "$PP")
SUP=$T_LAST_PID
t_wait_healthy "$EP" 30 || { t_fail "node not healthy"; t_done; exit 1; }
gw_pids() { pgrep -P "$SUP" -x gatewayd | sort; }
core_pids() { { pgrep -P "$SUP" -x stored; pgrep -P "$SUP" -x raftd; } | sort | tr '\n' ' '; }
CORE=$(core_pids)
t_eq "one gateway at start" 1 "$(gw_pids | wc -l)"

W=$T_TMP/writer; mkdir -p "$W"
ACKED=$W/acked ERRORS=$W/errors RETRIED=$W/retried STOP=$W/stop
t_put_writer "$EP" sg- "$W" &
WRITER=$!; T_PIDS+=("$WRITER")

# one signal at a time: standard signals do not queue, two sent before the first is handled
# arrive as one (CI saw exactly that)
has2() { [ "$(gw_pids | wc -l)" -eq 2 ]; }
has3() { [ "$(gw_pids | wc -l)" -eq 3 ]; }
kill -USR1 "$SUP"
t_wait_until 10 has2 || t_fail "gateways after one USR1: $(gw_pids | tr '\n' ' ')"
kill -USR1 "$SUP"
t_wait_until 10 has3 && t_ok "two gateways added (3 running)" || t_fail "gateways after two USR1: $(gw_pids | tr '\n' ' ')"
sleep 1
# 24 long-lived connections (watches): the kernel spreads them over the three listeners
for k in $(seq 1 24); do
  etcdctl --endpoints="$EP" watch "sg-watch-$k" >/dev/null 2>&1 &
  T_PIDS+=("$!")
done
sleep 2
conns_of() { ss -tnpH state established "( sport = :$CP )" 2>/dev/null | grep -c "pid=$1,"; }
for p in $(gw_pids); do
  c=$(conns_of "$p")
  [ "$c" -ge 1 ] && t_ok "gateway pid $p serves connections of its own ($c)" || t_fail "gateway pid $p has no connection"
done

sleep 1
kill -USR2 "$SUP"
t_wait_until 15 has2 && t_ok "the newest gateway removed under load" || t_fail "gateways after USR2: $(gw_pids | tr '\n' ' ')"
sleep 1
kill -USR2 "$SUP"
has1() { [ "$(gw_pids | wc -l)" -eq 1 ]; }
t_wait_until 15 has1 && t_ok "another removed: one left" || t_fail "gateways after 2nd USR2: $(gw_pids | tr '\n' ' ')"
kill -USR2 "$SUP"
sleep 1
t_eq "the last gateway is never removed" 1 "$(gw_pids | wc -l)"
grep -q "one gateway left; not removed" "$LOG" && t_ok "cairnctl says why it kept the last" || t_fail "no refusal logged"
sleep 2
touch "$STOP"; wait "$WRITER" || true

N=$(wc -l <"$ACKED"); NE=$(wc -l <"$ERRORS"); NR=$(wc -l <"$RETRIED")
echo "# writes acknowledged: $N, errors: $NE, retried after Unavailable: $NR"
cat "$ERRORS" "$RETRIED" | head -3 | sed 's/^/#   /'
[ "$N" -ge 20 ] && t_ok "$N writes acknowledged while gateways came and went" || t_fail "only $N writes"
t_eq "no client-visible error" 0 "$NE"
got=$(etcdctl --endpoints="$EP" get sg- --prefix -w json | /usr/bin/python3 -c '
import json, sys, base64
d = json.load(sys.stdin)
print("\n".join(sorted("%s %s" % (base64.b64decode(k["key"]).decode(), base64.b64decode(k["value"]).decode()) for k in d.get("kvs", []))))')
missing=$(comm -23 <(sort "$ACKED") <(echo "$got"))
[ -z "$missing" ] && t_ok "every acknowledged write is in the store" || t_fail "lost: $(head -3 <<<"$missing")"
t_eq "stored and raftd untouched" "$CORE" "$(core_pids)"
grep -q "gatewayd stopping" "$LOG" && t_ok "removed gateways stopped gracefully" || t_fail "no graceful stop logged"
t_stop "$SUP"
t_done
