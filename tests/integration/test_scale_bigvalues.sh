#!/usr/bin/env bash
# Scale with big values (issue 7): values near --max-request-bytes (default 1.5 MiB), a few
# hundred of them, all kept in the log (--snapshot-count above the write count), so the log
# is several times one 64 MiB IPC frame and any single entry is a large part of one.
#
# One node, `cairnctl run`. SCALE_BIG_WRITES (default 200) Puts of 16-byte keys /big/<11
# digits>, each key once, values of SCALE_BIG_VAL_SIZE bytes (default 1468006 = 1.4 MiB)
# derived from the key (cairn_bench --keyed-values), 8 clients: ~280 MiB of log.
#  1. load; kill -9 (supervisor and daemons); restart: a linearizable read within
#     SCALE_HEALTHY_SECS (60; printed); every acknowledged value present and byte-exact
#     (cairn_bench --op verify), and, as an independent check, the length and SHA-256 of
#     three values read with etcdctl equal those of the value computed in Python;
#  2. a second load on /big2/ killed with kill -9 while it is in flight; restart; healthy;
#     both loads' acknowledged values present; writable;
#  3. a clean stop (SIGTERM) and a restart: healthy, everything present.
# Disk: ~2 x the values (WAL + LevelDB), ~0.65 GB at the end at the defaults; printed, and
# removed at the end (lib.sh). At 1a3222b it failed at step 1 (raftd refused the one-message
# LOAD); under ASan/UBSan on 2 cores it takes ~2½ min.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/scale_lib.sh"
N=${SCALE_BIG_WRITES:-200}
VAL=${SCALE_BIG_VAL_SIZE:-1468006}
CLIENTS=${SCALE_BIG_CLIENTS:-8}
BOUND=${SCALE_HEALTHY_SECS:-60}
CP=$(t_port); PP=$(t_port)
S_EP=127.0.0.1:$CP
# shellcheck disable=SC2207
FLAGS=($(t_node_flags big "$T_TMP/data" "$CP" "$PP") --snapshot-count $((10 * N + 10000)))

load() { # PREFIX ACKED-FILE OUT-FILE
  "$S_BENCH" --endpoint "$S_EP" --op put --clients "$CLIENTS" --conns 2 --total "$N" --sequential \
    --key-space "$N" --key-size 16 --prefix "$1" --val-size "$VAL" --keyed-values --acked "$2" \
    --timeout 600 >"$3" 2>"$3.err"
}
verify() { # PREFIX ACKED-FILE NAME
  local out rc
  out=$("$S_BENCH" --endpoint "$S_EP" --op verify --key-space "$N" --key-size 16 --prefix "$1" \
    --val-size "$VAL" --acked "$2" --timeout 300 2>&1) && rc=0 || rc=$?
  echo "  verify $1: $out"
  [ "$rc" = 0 ] && t_ok "$3: every acknowledged value under $1 present, byte for byte" ||
    t_fail "$3: verify $1 (rc=$rc)"
}
spot_check() { # NAME: length and sha256 of three values through etcdctl
  local i key want got len bad=0
  for i in 0 $((N / 2)) $((N - 1)); do
    key=$(printf '/big/%011d' "$i")
    want=$(s_keyed_value "$key" "$VAL" | sha256sum | cut -d' ' -f1)
    # etcdctl prints the value and a newline
    etcdctl --endpoints="$S_EP" --command-timeout=20s get "$key" --print-value-only >"$T_TMP/value" || true
    got=$(head -c "$VAL" "$T_TMP/value" | sha256sum | cut -d' ' -f1)
    len=$(wc -c <"$T_TMP/value")
    [ "$got" = "$want" ] && [ "$len" = $((VAL + 1)) ] || { bad=$((bad + 1)); echo "  $key: length $len sha $got, want $((VAL + 1)) $want" >&2; }
  done
  t_eq "$1: length and sha256 of 3 values read with etcdctl" 0 "$bad"
}

echo "# $N writes of $VAL B, $CLIENTS clients, --snapshot-count $((10 * N + 10000)), bin $CAIRN_BIN"
T_START=$SECONDS
s_start "${FLAGS[@]}"
s_wait_healthy 30 || { t_fail "first start: not healthy"; s_fail_diag "first start"; s_finish; }
s_track

# ---- 1. load, kill -9, restart ---------------------------------------------------------------
load /big/ "$T_TMP/acked.a" "$T_TMP/load.a" && rc=0 || rc=$?
echo "  load /big/: $(cat "$T_TMP/load.a") $(cat "$T_TMP/load.a.err")"
A_SECS=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' "$T_TMP/load.a")
[ "$rc" = 0 ] && t_ok "load of $N Puts of $VAL B with no error" || t_fail "load of $N Puts of $VAL B (rc=$rc)"
echo "  after the load: RSS $(s_rss); WAL $(du -sm "$T_TMP/data/member/wal" 2>/dev/null | cut -f1) MiB, data dir $(du -sm "$T_TMP/data" | cut -f1) MiB"
s_kill9
s_restart_healthy "kill -9 after the load" || s_finish
verify /big/ "$T_TMP/acked.a" "kill -9 after the load"
spot_check "kill -9 after the load"

# ---- 2. kill -9 while writes are in flight ---------------------------------------------------
load /big2/ "$T_TMP/acked.b" "$T_TMP/load.b" &
BPID=$!
sleep "$(awk -v s="${A_SECS:-4}" 'BEGIN { s /= 2; printf "%.1f", s < 1 ? 1 : s }')"
s_kill9
wait "$BPID" && rc=0 || rc=$?
echo "  load /big2/ (killed under it): $(cat "$T_TMP/load.b") $(head -c 300 "$T_TMP/load.b.err")"
[ "$rc" != 0 ] && echo "  (the kill hit writes in flight: cairn_bench rc=$rc)" ||
  echo "  (note: the second load finished before the kill; nothing was in flight)"
s_restart_healthy "kill -9 under load" || s_finish
verify /big/ "$T_TMP/acked.a" "kill -9 under load"
verify /big2/ "$T_TMP/acked.b" "kill -9 under load"
etcdctl --endpoints="$S_EP" --command-timeout=10s put /big-after-kill yes >/dev/null &&
  t_ok "writable after the restart" || t_fail "not writable after the restart"

# ---- 3. clean stop, restart ------------------------------------------------------------------
s_stop
s_restart_healthy "clean stop" || s_finish
verify /big/ "$T_TMP/acked.a" "clean stop"
verify /big2/ "$T_TMP/acked.b" "clean stop"
echo "  data dir at the end: $(du -sm "$T_TMP/data" | cut -f1) MiB"
echo "# test took $((SECONDS - T_START)) s"
s_finish
