#!/usr/bin/env bash
# An answer larger than an IPC frame (64 MiB) comes back whole (issue 7: "no message grows with
# the data"): stored sends it to the gateway in RESULT_PARTs. Before, the gateway refused the
# frame ("message too large") and the client waited out its deadline.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
t_start_cairn node "$CP" "$PP"
t_wait_healthy "$C_EP" 30 || t_fail "node not healthy"
N=300
"$CAIRN_BIN/cairn_bench" --endpoint "$C_EP" --op put --clients 8 --total $N --sequential --key-space $N \
  --key-size 10 --prefix br/ --val-size 262144 --keyed-values >"$T_TMP/bench.out" 2>&1 ||
  t_fail "load: $(cat "$T_TMP/bench.out")"
bytes=$(timeout 60 etcdctl --endpoints="$C_EP" --command-timeout=50s get br/ --prefix -w protobuf | wc -c)
[ "$bytes" -gt $((64 << 20)) ] && t_ok "a $bytes-byte Range answer (more than 64 MiB) arrives" ||
  t_fail "Range answer of $bytes bytes, want > 64 MiB"
t_eq "every key in it" $N "$(timeout 60 etcdctl --endpoints="$C_EP" --command-timeout=50s get br/ --prefix --keys-only | grep -c .)"
"$CAIRN_BIN/cairn_bench" --endpoint "$C_EP" --op verify --total $N --sequential --key-space $N --key-size 10 \
  --prefix br/ --val-size 262144 --keyed-values >"$T_TMP/verify.out" 2>&1 && t_ok "values intact" ||
  t_fail "verify: $(cat "$T_TMP/verify.out")"
t_eq "serializable too" $N "$(timeout 60 etcdctl --endpoints="$C_EP" --command-timeout=50s get br/ --prefix --keys-only --consistency=s | grep -c .)"
etcdctl --endpoints="$C_EP" put after x >/dev/null && t_ok "the node serves on" || t_fail "put after the big read"
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
t_done
