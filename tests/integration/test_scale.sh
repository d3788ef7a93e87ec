#!/usr/bin/env bash
# Scale (issue 7): a node whose whole Raft log is in the WAL — --snapshot-count above every
# write of the test, the worst moment, just before a checkpoint — must come back after
# kill -9 of its three daemons, with every acknowledged write.
#
# One node, `cairnctl run` as a user starts it. SCALE_WRITES (default 300000) Puts of 16-byte
# keys /s/a/<11 digits> (each key once) with 256-byte values derived from the key
# (cairn_bench --keyed-values), SCALE_CLIENTS (64) clients; cairn_bench records which were
# acknowledged. 300000 entries of this size are ~100 MiB of log, more than one 64 MiB IPC
# frame: at 1a3222b stored answered raftd's LOAD with all of it in one message, raftd refused
# it, and the node never served again (this test failed there: no read within 60 s; 200000
# entries still fit). Under ASan/UBSan on 2 cores it takes ~2½ min.
#  1. load; kill -9 (supervisor and daemons); restart: a linearizable read must succeed
#     within SCALE_HEALTHY_SECS (60; the time is printed, never asserted tighter), and every
#     acknowledged key must hold its value (cairn_bench --op verify: paged linearizable
#     Ranges, no etcdctl per key);
#  2. the same load again on /s/b/, kill -9 WHILE it is in flight (half-way, by the time the
#     first load took); restart; healthy; every acknowledged write of both loads present;
#     writable;
#  3. a clean stop (SIGTERM to cairnctl) and a restart: healthy, everything present.
# stored's "wal replayed ..." line, the time to healthy and the daemons' RSS are printed at
# each restart.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/scale_lib.sh"
N=${SCALE_WRITES:-300000}
CLIENTS=${SCALE_CLIENTS:-64}
VAL=${SCALE_VAL_SIZE:-256}
BOUND=${SCALE_HEALTHY_SECS:-60}
CP=$(t_port); PP=$(t_port)
S_EP=127.0.0.1:$CP
# shellcheck disable=SC2207
FLAGS=($(t_node_flags scale "$T_TMP/data" "$CP" "$PP") --snapshot-count $((2 * N + 100000)))
LOAD_TIMEOUT=$((N / 200 + 120))

load() { # PREFIX ACKED-FILE OUT-FILE: N sequential keyed Puts, each key once
  "$S_BENCH" --endpoint "$S_EP" --op put --clients "$CLIENTS" --conns 8 --total "$N" --sequential \
    --key-space "$N" --key-size 16 --prefix "$1" --val-size "$VAL" --keyed-values --acked "$2" \
    --timeout "$LOAD_TIMEOUT" >"$3" 2>"$3.err"
}
verify() { # PREFIX ACKED-FILE NAME
  local out rc
  out=$("$S_BENCH" --endpoint "$S_EP" --op verify --key-space "$N" --key-size 16 --prefix "$1" \
    --val-size "$VAL" --acked "$2" --timeout 300 2>&1) && rc=0 || rc=$?
  echo "  verify $1: $out"
  [ "$rc" = 0 ] && t_ok "$3: every acknowledged write of $1 present with its value" ||
    t_fail "$3: verify $1 (rc=$rc)"
}

echo "# $N writes of $VAL B, $CLIENTS clients, --snapshot-count $((2 * N + 100000)), bin $CAIRN_BIN"
T_START=$SECONDS
s_start "${FLAGS[@]}"
s_wait_healthy 30 || { t_fail "first start: not healthy"; s_fail_diag "first start"; s_finish; }
s_track

# ---- 1. load, kill -9, restart ---------------------------------------------------------------
load /s/a/ "$T_TMP/acked.a" "$T_TMP/load.a" && rc=0 || rc=$?
echo "  load /s/a/: $(cat "$T_TMP/load.a") $(cat "$T_TMP/load.a.err")"
A_SECS=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' "$T_TMP/load.a")
[ "$rc" = 0 ] && t_ok "load of $N Puts with no error" || t_fail "load of $N Puts (rc=$rc)"
echo "  after the load: RSS $(s_rss); WAL $(du -sm "$T_TMP/data/member/wal" 2>/dev/null | cut -f1) MiB, data dir $(du -sm "$T_TMP/data" | cut -f1) MiB"
s_kill9
s_restart_healthy "kill -9 after the load" || s_finish
verify /s/a/ "$T_TMP/acked.a" "kill -9 after the load"

# ---- 2. kill -9 while writes are in flight ---------------------------------------------------
load /s/b/ "$T_TMP/acked.b" "$T_TMP/load.b" &
BPID=$!
sleep "$(awk -v s="${A_SECS:-10}" 'BEGIN { s /= 2; printf "%.1f", s < 2 ? 2 : s }')"
s_kill9
wait "$BPID" && rc=0 || rc=$?
echo "  load /s/b/ (killed under it): $(cat "$T_TMP/load.b") $(head -c 300 "$T_TMP/load.b.err")"
acked_b=$(cat "$T_TMP/acked.b" 2>/dev/null | wc -l)
[ "$acked_b" -gt 0 ] && t_ok "writes acknowledged before the kill under load ($acked_b)" ||
  t_fail "no write acknowledged before the kill under load"
[ "$rc" != 0 ] && echo "  (the kill hit writes in flight: cairn_bench rc=$rc)" ||
  echo "  (note: the second load finished before the kill; nothing was in flight)"
s_restart_healthy "kill -9 under load" || s_finish
verify /s/a/ "$T_TMP/acked.a" "kill -9 under load"
verify /s/b/ "$T_TMP/acked.b" "kill -9 under load"
etcdctl --endpoints="$S_EP" --command-timeout=10s put /s/after-kill yes >/dev/null &&
  t_ok "writable after the restart" || t_fail "not writable after the restart"

# ---- 3. clean stop, restart ------------------------------------------------------------------
s_stop
s_restart_healthy "clean stop" || s_finish
verify /s/a/ "$T_TMP/acked.a" "clean stop"
verify /s/b/ "$T_TMP/acked.b" "clean stop"
echo "# test took $((SECONDS - T_START)) s"
s_finish
