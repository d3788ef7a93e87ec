#!/usr/bin/env bash
# Space quota and alarms, etcd 3.4's way, run as one script against etcd 3.4 (one member) and a
# 3-member Cairn cluster, both with a small --quota-backend-bytes: fill the store until a put
# is refused with "etcdserver: mvcc: database space exceeded"; then `alarm list` shows NOSPACE,
# Put / Txn with a put / LeaseGrant are refused on every member with that exact error while
# Range, DeleteRange, Compact and a Txn without puts work; Status lists the alarm in its
# errors; delete + compact + defrag shrink the db (Status's dbSize), `alarm disarm` prints the
# disarmed alarms as etcd does and writes work again; `endpoint hashkv --cluster` is equal on
# every member. As in etcd, a write refused at a member raises that member's own alarm.
. "$(dirname "$0")/lib.sh"
QUOTA=200000
V=$(head -c 20000 /dev/zero | tr '\0' x)
NOSPACE="etcdserver: mvcc: database space exceeded"

# health_of EP -> "<http code> <body>" of GET /health
health_of() {
  local code; code=$(curl -s -o "$T_TMP/health.body" -w '%{http_code}' "http://$1/health")
  echo "$code $(tr -d '\n' <"$T_TMP/health.body")"
}
# run_script NAME EP...: the script against the endpoints (the first gets the writes)
run_script() {
  local name=$1; shift
  local eps=("$@") ep0=$1 all; all=$(IFS=,; echo "$*")
  local E="etcdctl --endpoints=$ep0" i out refused=0
  for i in $(seq 1 40); do
    out=$($E put "k$i" "$V" 2>&1 || true)
    if [ "$out" != OK ]; then refused=$i; break; fi
    sleep 0.05
  done
  t_contains "$name: a put past the quota is refused with etcd's error" "Error: $NOSPACE" "$out"
  [ "$refused" -gt 3 ] && t_ok "$name: puts below the quota worked ($((refused - 1)))" || t_fail "$name: refused already at put $refused"
  # our alarm is proposed when stored sees its files pass the quota: wait until it is applied
  t_wait_until 10 eval "etcdctl --endpoints=$ep0 alarm list 2>/dev/null | grep -q 'alarm:NOSPACE'" || true
  t_contains "$name: alarm list shows NOSPACE" "alarm:NOSPACE" "$($E alarm list 2>&1)"
  for ep in "${eps[@]}"; do
    t_contains "$name: put on $ep refused" "Error: $NOSPACE" "$(etcdctl --endpoints="$ep" put a b 2>&1 || true)"
    t_contains "$name: Status errors on $ep list the alarm" "alarm:NOSPACE " \
      "$(etcdctl --endpoints="$ep" endpoint status -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["Status"].get("errors"))')"
  done
  # etcd's quotaAlarmer: the member a refused write came to raises its own NOSPACE alarm
  nospace_members() { etcdctl --endpoints="$ep0" alarm list 2>/dev/null | grep -c 'alarm:NOSPACE' || true; }
  each_raised() { [ "$(nospace_members)" -ge "${#eps[@]}" ]; }
  t_wait_until 5 each_raised || true
  t_eq "$name: every member a write was refused at raised its own alarm" "${#eps[@]}" "$(nospace_members)"
  # /health is unhealthy while an alarm is active: 503 {"health":"false"} (etcd 3.4 gives no reason)
  t_eq "$name: /health while the alarm is active" "503 {\"health\":\"false\"}" \
    "$(health_of "$ep0")"
  t_contains "$name: txn with a put refused" "Error: $NOSPACE" "$($E txn <<<$'\nput a b\n\n' 2>&1 || true)"
  t_eq "$name: txn without puts works" "SUCCESS" "$($E txn <<<$'\nget k1 --keys-only\n\n' 2>&1 | head -1)"
  t_contains "$name: lease grant refused" "$NOSPACE" "$($E lease grant 100 2>&1 || true)"
  t_eq "$name: range works" "k1" "$($E get k1 --keys-only | head -1)"
  t_eq "$name: delete works" "1" "$($E del k1)"
  for i in $(seq 2 40); do $E del "k$i" >/dev/null; done
  local rev; rev=$($E get a -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
  t_eq "$name: compact works" "compacted revision $rev" "$($E compact "$rev")"
  local before after
  before=$($E endpoint status -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
  out=$(etcdctl --endpoints="$all" defrag 2>&1)
  t_eq "$name: defrag answers as etcd's" "$(for ep in "${eps[@]}"; do echo "Finished defragmenting etcd member[$ep]"; done)" "$(sed 's#http://##' <<<"$out")"
  after=$($E endpoint status -w json | python3 -c 'import json,sys;s=json.load(sys.stdin)[0]["Status"];print(s["dbSize"], s["dbSizeInUse"])')
  [ "${after% *}" -lt "$QUOTA" ] && [ "${after% *}" -lt "$before" ] && [ "${after#* }" -le "${after% *}" ] &&
    t_ok "$name: defrag shrank the db ($before -> ${after% *}, in use ${after#* })" || t_fail "$name: db $before -> $after"
  local listed; listed=$($E alarm list)
  t_eq "$name: alarm disarm prints the disarmed alarms" "$listed" "$($E alarm disarm)"
  t_eq "$name: alarm list empty after disarm" "" "$($E alarm list)"
  t_eq "$name: /health after disarm" "200 {\"health\":\"true\"}" \
    "$(health_of "$ep0")"
  for ep in "${eps[@]}"; do
    t_eq "$name: put on $ep works again" "OK" "$(etcdctl --endpoints="$ep" put a b 2>&1)"
    t_eq "$name: Status errors on $ep empty" "None" \
      "$(etcdctl --endpoints="$ep" endpoint status -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["Status"].get("errors"))')"
  done
  t_eq "$name: alarm disarm with no alarm prints nothing" "" "$($E alarm disarm)"
  out=$(etcdctl --endpoints="$all" endpoint hashkv -w json | python3 -c 'import json,sys;d=json.load(sys.stdin);print(len({x["HashKV"]["hash"] for x in d}), len(d))')
  t_eq "$name: hashkv equal on every member" "1 ${#eps[@]}" "$out"
}

EP=$(t_port); PP=$(t_port)
t_start_daemon "$T_TMP/etcd.log" etcd $(t_node_flags etcd "$T_TMP/etcd" "$EP" "$PP") --quota-backend-bytes $QUOTA
E_PID=$T_LAST_PID
t_wait_healthy "127.0.0.1:$EP" 30
run_script etcd "127.0.0.1:$EP"
t_stop "$E_PID"

T_EXTRA_FLAGS="--quota-backend-bytes $QUOTA" t_start_cluster 3
for i in 0 1 2; do t_wait_healthy "${C_EPS[i]}" 30; done
run_script cairn "${C_EPS[@]}"
out=$(etcdctl --endpoints="${C_EPS[1]}" endpoint hashkv --cluster -w json | python3 -c 'import json,sys;d=json.load(sys.stdin);print(len({x["HashKV"]["hash"] for x in d}), len(d))')
t_eq "cairn: endpoint hashkv --cluster equal on 3 members" "1 3" "$out"
t_done
