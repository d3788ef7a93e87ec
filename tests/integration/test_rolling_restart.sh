#!/usr/bin/env bash
# test_rolling_restart: every process of every member of a 3-member cluster restarted one
# member at a time while a client writes (issue 12), in the order README's operator section gives:
# followers first, the leader last after handing leadership over (move-leader); per member the
# gateway is stopped first (SIGTERM: it sends GOAWAY and finishes what it started, so clients
# move to another member's gateway), then raftd and stored are restarted, then the gateway is
# started again and the member must be healthy before the next one.
# Passes with no lost write (every acknowledged put is read back, with its value, from every
# member) and no client-visible error: the writer (etcdctl given all three endpoints, as a
# client is) retries a put once only when it failed with Unavailable (the connection went away
# under it - a client library retries those), and any other failure fails the test. What made
# errors before: a member that restarted answered 'etcdserver: no leader' until it heard from
# the leader (raftd now holds such requests until a leader is known), a gateway stopping cut
# off calls in flight (it now waits for their answers), and stored dropped the answer to a
# gateway that had not connected to it yet (it now keeps it until the gateway does).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

t_start_cluster 3
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30; done
ALL=$(IFS=,; echo "${C_EPS[*]}")

# the writer: one put at a time through all endpoints (lib.sh t_put_writer)
W=$T_TMP/writer; mkdir -p "$W"
ACKED=$W/acked ERRORS=$W/errors RETRIED=$W/retried STOP=$W/stop
t_put_writer "$ALL" roll- "$W" &
WRITER=$!
T_PIDS+=("$WRITER")
sleep 2

member_id() { etcdctl --endpoints="${C_EPS[$1]}" endpoint status -w json | python3 -c 'import json,sys;print("%x" % json.load(sys.stdin)[0]["Status"]["header"]["member_id"])'; }
healthy() { etcdctl --endpoints="${C_EPS[$1]}" --command-timeout=2s endpoint health >/dev/null 2>&1; }

LEADER=$(t_leader_index)
[ "$LEADER" -ge 0 ] || t_fail "no leader"
ORDER=()
for i in 0 1 2; do [ "$i" != "$LEADER" ] && ORDER+=("$i"); done
ORDER+=("$LEADER")
for i in "${ORDER[@]}"; do
  if [ "$(t_leader_index)" = "$i" ]; then
    to=$(( (i + 1) % 3 ))
    etcdctl --endpoints="${C_EPS[$i]}" move-leader "$(member_id "$to")" >/dev/null 2>&1 ||
      t_fail "move-leader from m$i"
    moved() { [ "$(t_leader_index)" != "$1" ] && [ "$(t_leader_index)" -ge 0 ]; }
    t_wait_until 10 moved "$i" && t_ok "leadership moved off m$i" || t_fail "leadership did not move off m$i"
  fi
  t_stop "${C_GWS[i]}"
  t_stop "${C_RAFTDS[i]}"
  t_stop "${C_STOREDS[i]}"
  t_restart_proc stored "$i"
  t_restart_proc raftd "$i"
  t_restart_proc gatewayd "$i"
  t_wait_until 30 healthy "$i" && t_ok "m$i restarted and healthy" || t_fail "m$i not healthy after its restart"
  sleep 1
done
sleep 2
touch "$STOP"
wait "$WRITER" || true

N=$(wc -l <"$ACKED")
[ "$N" -ge 50 ] && t_ok "$N writes acknowledged during the rolling restart" || t_fail "only $N writes acknowledged"
NE=$(wc -l <"$ERRORS")
NR=$(wc -l <"$RETRIED")
echo "# client-visible errors: $NE (of $((N + NE)) writes); retried after Unavailable: $NR"
cat "$ERRORS" "$RETRIED" | head -3 | sed 's/^/#   /'
[ "$NE" -eq 0 ] && t_ok "no client-visible error (beyond $NR retried Unavailable)" ||
  t_fail "client-visible errors: $NE of $((N + NE)) writes"
# no lost write: every acknowledged key, on every member (serializable: that member's own store)
for i in 0 1 2; do
  got=$(etcdctl --endpoints="${C_EPS[i]}" get roll- --prefix -w json --consistency=s | python3 -c '
import base64, json, sys
d = json.load(sys.stdin)
for kv in d.get("kvs", []):
    print(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")).decode())' | sort)
  missing=$(sort "$ACKED" | comm -23 - <(echo "$got"))
  t_eq "m$i holds every acknowledged write" "" "$(head -3 <<<"$missing")"
done
t_done
