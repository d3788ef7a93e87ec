#!/usr/bin/env bash
# deploy/rolling-restart.sh against a 3-member cluster whose members are run by `cairnctl run`
# (2 gateways each), under a write load (issue 12): the script restarts the followers first and
# the leader last after moving leadership, each member's processes restarted in order by
# cairnctl's SIGHUP, and waits for each to be healthy. Checks: the order, every member's stored
# really restarted, no acknowledged write lost on any member, no client-visible error (a put that
# failed with Unavailable is retried once and counted). Then the refusals: --dry-run restarts
# nothing, and a member that does not come back stops the procedure before the next one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SCRIPT=$CAIRN_SRC/deploy/rolling-restart.sh
N=3; EPS=(); PPORTS=(); cluster=""
for ((i = 0; i < N; i++)); do EPS[i]=127.0.0.1:$(t_port); PPORTS[i]=$(t_port); cluster+="${cluster:+,}m$i=http://127.0.0.1:${PPORTS[i]}"; done
PIDFILE=$T_TMP/supervisors; : >"$PIDFILE"
SUP=()
for ((i = 0; i < N; i++)); do
  # shellcheck disable=SC2046
  CAIRN_BIN=$CAIRN_BIN t_start_daemon "$T_TMP/m$i.log" "$CAIRN_BIN/cairnctl" run --gateways 2 --name "m$i" \
    --data-dir "$T_TMP/m$i" --listen-client-urls "http://${EPS[i]}" --advertise-client-urls "http://${EPS[i]}" \
    --listen-peer-urls "http://127.0.0.1:${PPORTS[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${PPORTS[i]}" \
    --initial-cluster "$cluster" --initial-cluster-token rr-script
  SUP[i]=$T_LAST_PID; echo "$T_LAST_PID" >>"$PIDFILE"
done
for ep in "${EPS[@]}"; do t_wait_healthy "$ep" 30; done
ALL=$(IFS=,; echo "${EPS[*]}")
stored_of() { pgrep -P "${SUP[$1]}" -x stored || true; }
BEFORE=(); for i in 0 1 2; do BEFORE[i]=$(stored_of "$i"); done

out=$("$SCRIPT" --endpoints "$ALL" --restart-cmd 'echo would restart {name}' --dry-run 2>&1)
t_contains "--dry-run prints the plan" "restarting" "$out"
t_eq "--dry-run restarts nothing" "${BEFORE[*]}" "$(for i in 0 1 2; do stored_of "$i"; done | tr '\n' ' ' | sed 's/ $//')"

W=$T_TMP/writer; mkdir -p "$W"
ACKED=$W/acked ERRORS=$W/errors RETRIED=$W/retried STOP=$W/stop
t_put_writer "$ALL" rrs- "$W" &
WRITER=$!; T_PIDS+=("$WRITER")
sleep 2
rc=0
"$SCRIPT" --endpoints "$ALL" --timeout 60 --restart-cmd "kill -HUP \$(sed -n '{index}p' $PIDFILE)" \
  >"$T_TMP/script.out" 2>&1 || rc=$?
sed 's/^/# /' "$T_TMP/script.out"
t_eq "the script restarted every member" 0 "$rc"
last=$(grep -o 'restarting [0-9.:]*' "$T_TMP/script.out" | tail -1 | cut -d' ' -f2)
grep -q "leads: handing leadership" "$T_TMP/script.out" && t_ok "leadership handed over before the leader's restart" ||
  t_fail "no leadership transfer"
grep -q "(the leader, $last, last)" "$T_TMP/script.out" && t_ok "the leader was restarted last ($last)" || t_fail "order: the last was $last"
for i in 0 1 2; do
  now=$(stored_of "$i")
  [ -n "$now" ] && [ "$now" != "${BEFORE[i]}" ] && t_ok "m$i's stored restarted (${BEFORE[i]} -> $now)" ||
    t_fail "m$i's stored not restarted (${BEFORE[i]} -> $now)"
done
sleep 2
touch "$STOP"; wait "$WRITER" || true
NA=$(wc -l <"$ACKED"); NE=$(wc -l <"$ERRORS"); NR=$(wc -l <"$RETRIED")
echo "# writes acknowledged: $NA, errors: $NE, retried after Unavailable: $NR"; cat "$ERRORS" "$RETRIED" | head -3 | sed 's/^/#   /'
[ "$NA" -ge 30 ] && t_ok "$NA writes acknowledged during the rolling restart" || t_fail "only $NA writes"
t_eq "no client-visible error" 0 "$NE"
for i in 0 1 2; do
  got=$(etcdctl --endpoints="${EPS[i]}" get rrs- --prefix -w json --consistency=s | /usr/bin/python3 -c '
import json, sys, base64
print("\n".join(sorted("%s %s" % (base64.b64decode(k["key"]).decode(), base64.b64decode(k["value"]).decode()) for k in json.load(sys.stdin).get("kvs", []))))')
  missing=$(comm -23 <(sort "$ACKED") <(echo "$got"))
  [ -z "$missing" ] && t_ok "m$i holds every acknowledged write" || t_fail "m$i lacks: $(head -3 <<<"$missing")"
done

# a member that does not come back: the procedure stops there
rc=0
"$SCRIPT" --endpoints "$ALL" --timeout 5 --restart-cmd 'kill -STOP $(sed -n "{index}p" '"$PIDFILE"') $(pgrep -P $(sed -n "{index}p" '"$PIDFILE"'))' \
  >"$T_TMP/script2.out" 2>&1 || rc=$?
t_eq "a member that does not come back fails the script" 1 "$rc"
t_eq "and nothing after it is restarted" 1 "$(grep -c '^rolling-restart: restarting' "$T_TMP/script2.out")"
t_contains "with the reason" "not healthy 5s after its restart; stopping here" "$(cat "$T_TMP/script2.out")"
for i in 0 1 2; do
  pids="${SUP[i]} $(pgrep -P "${SUP[i]}" | tr '\n' ' ')"
  # shellcheck disable=SC2086
  kill -CONT $pids 2>/dev/null || true
done
for i in 0 1 2; do t_stop "${SUP[i]}"; done
t_done
