#!/usr/bin/env bash
# Each process restarts on its own: kill -9 one of stored, raftd, gatewayd while the others
# run; once it is back, the node serves again with every acknowledged write (raftd reloads
# its state from stored; stored replays its WAL; gatewayd reconnects).
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
C_DATA=$T_TMP/node
t_start_cairn node "$CP" "$PP"
t_wait_healthy "$C_EP" 30
flags=$(t_node_flags node "$C_DATA" "$CP" "$PP")
n=0
unknown=0
for victim in stored raftd gatewayd stored; do
  for k in 1 2 3 4 5; do n=$((n + 1)); etcdctl --endpoints="$C_EP" put "k$n" "v$n" >/dev/null || t_fail "put k$n before killing $victim"; done
  case $victim in
    stored) t_kill9 "$C_STORED"; t_start_daemon "$C_LOG" "$CAIRN_BIN/stored" $flags; C_STORED=$T_LAST_PID ;;
    raftd) t_kill9 "$C_RAFTD"; t_start_daemon "$C_LOG" "$CAIRN_BIN/raftd" $flags; C_RAFTD=$T_LAST_PID ;;
    gatewayd) t_kill9 "$C_GW"; t_start_daemon "$C_LOG" "$CAIRN_BIN/gatewayd" $flags --gateway-id gw1; C_GW=$T_LAST_PID ;;
  esac
  t_wait_healthy "$C_EP" 30 && t_ok "healthy again after kill -9 of $victim" || t_fail "not healthy after $victim restart"
  n=$((n + 1))
  # A write racing the restart may come back "outcome unknown" (etcd's "request timed out,
  # possibly due to previous leader failure"); a client retries an idempotent put.
  ok=0
  for attempt in 1 2 3; do
    out=$(etcdctl --endpoints="$C_EP" --command-timeout=10s put "k$n" "v$n" 2>&1) && { ok=1; break; }
    case "$out" in *"possibly due to previous leader failure"*) unknown=$((unknown + 1)) ;; *) echo "$out" >&2; break ;; esac
  done
  [ "$ok" = 1 ] && t_ok "write after $victim restart" || t_fail "write after $victim restart: $out"
done
got=$(etcdctl --endpoints="$C_EP" get k --prefix --keys-only | grep -c .)
t_eq "every acknowledged write present" "$n" "$got"
rev=$(etcdctl --endpoints="$C_EP" get k1 -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
# one revision per applied write: n acknowledged, plus at most one per unknown-outcome attempt
[ "$rev" -ge $((n + 1)) ] && [ "$rev" -le $((n + 1 + unknown)) ] && t_ok "revisions: $rev for $n writes (+$unknown unknown outcomes)" ||
  t_fail "revision $rev for $n acknowledged writes and $unknown unknown outcomes"
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
t_done
