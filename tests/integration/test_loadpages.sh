#!/usr/bin/env bash
# raftd's reload from stored is paged and the log in memory is bounded by bytes (issue 7: a
# LOAD_RESP holding the whole log outgrew the 64 MiB IPC frame and the node never came back).
# A node keeps more than one page (4 MiB) of applied entries behind the applied index
# (--snapshot-count 3000, 2 KiB values): kill -9 of raftd, then of the whole node, must
# reload in several pages with every write present; with --raft-log-memory-bytes 1 MiB the
# log held in memory after a restart fits that budget (and one page).
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
C_DATA=$T_TMP/node
EXTRA="--snapshot-count 3000"
start_node() {
  local flags; flags="$(t_node_flags node "$C_DATA" "$CP" "$PP") $EXTRA"
  C_LOG=$T_TMP/node.log
  t_start_daemon "$C_LOG" "$CAIRN_BIN/stored" $flags; C_STORED=$T_LAST_PID
  t_start_daemon "$C_LOG" "$CAIRN_BIN/raftd" $flags; C_RAFTD=$T_LAST_PID
  t_start_daemon "$C_LOG" "$CAIRN_BIN/gatewayd" $flags --gateway-id gw1; C_GW=$T_LAST_PID
  C_EP=127.0.0.1:$CP
}
last_pages() { grep 'msg="raft state loaded"' "$C_LOG" | tail -n 1 | sed -n 's/.*pages=\([0-9]*\).*/\1/p'; }
start_node
t_wait_healthy "$C_EP" 30 || t_fail "node not healthy"
N=4000
"$CAIRN_BIN/cairn_bench" --endpoint "$C_EP" --op put --clients 16 --conns 2 --total $N --sequential \
  --key-space $N --key-size 12 --prefix lp/ --val-size 2048 >"$T_TMP/bench.out" 2>&1 ||
  t_fail "load: $(cat "$T_TMP/bench.out")"
count() { etcdctl --endpoints="$C_EP" get lp/ --prefix --keys-only | grep -c . || true; }
t_eq "all writes present" $N "$(count)"

flags="$(t_node_flags node "$C_DATA" "$CP" "$PP") $EXTRA"
t_kill9 "$C_RAFTD"
t_start_daemon "$C_LOG" "$CAIRN_BIN/raftd" $flags; C_RAFTD=$T_LAST_PID
t_wait_healthy "$C_EP" 30 && t_ok "healthy after kill -9 of raftd" || t_fail "not healthy after kill -9 of raftd"
p=$(last_pages); [ "${p:-0}" -ge 2 ] && t_ok "raftd reloaded in $p pages" || t_fail "raftd reload pages: [$p], want >= 2"
t_eq "all writes present after raftd reload" $N "$(count)"
etcdctl --endpoints="$C_EP" put after-raftd x >/dev/null && t_ok "writes after the reload" || t_fail "write after reload"

t_kill9 "$C_GW" "$C_RAFTD" "$C_STORED"
start_node
t_wait_healthy "$C_EP" 30 && t_ok "healthy after kill -9 of the node" || t_fail "not healthy after kill -9 of the node"
p=$(last_pages); [ "${p:-0}" -ge 2 ] && t_ok "node reloaded in $p pages" || t_fail "node reload pages: [$p], want >= 2"
t_eq "all writes present after the restart" $N "$(count)"

t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
EXTRA="--snapshot-count 3000 --raft-log-memory-bytes 1048576"
start_node
t_wait_healthy "$C_EP" 30 && t_ok "healthy with a 1 MiB log budget" || t_fail "not healthy with a 1 MiB log budget"
mem=$(grep 'msg="wal replayed"' "$C_LOG" | tail -n 1 | sed -n 's/.*memory_bytes=\([0-9]*\).*/\1/p')
[ -n "$mem" ] && [ "$mem" -le 1048576 ] && t_ok "stored holds $mem bytes of log after replay (budget 1 MiB)" ||
  t_fail "stored's log after replay: [$mem] bytes, budget 1048576"
t_eq "one page within the budget" 1 "$(last_pages)"
t_eq "all writes present" $N "$(count)"
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
t_done
