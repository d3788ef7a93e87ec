#!/usr/bin/env bash
# A watcher whose client never reads (tests/watch/slowreader.py: raw HTTP/2, no WINDOW_UPDATE,
# a tiny socket buffer) must not make the gateway hold events without bound nor slow down
# anyone else: past 8 MiB queued on its stream it stops taking live events (it would read
# them from history once its client read again). Meanwhile a normal watcher on the same
# prefix gets every event, and the gateway's memory stays bounded.
source "$(dirname "$0")/lib.sh"
# Under AddressSanitizer (deploy/test.sh) freed memory sits in a 256 MiB quarantine and RSS
# says nothing about what the gateway holds: keep the quarantine small for this test's daemons.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1:thread_local_quarantine_size_kb=64"
t_start_cluster 1
EP=${C_EPS[0]}
t_wait_healthy "$EP" || { t_fail "not healthy"; t_done; exit 1; }
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

python3 "$CAIRN_SRC/tests/watch/slowreader.py" "$EP" /slow/ 60 >"$T_TMP/slow.out" 2>&1 &
T_PIDS+=("$!")
t_wait_until 5 grep -q created "$T_TMP/slow.out" || t_fail "slow reader did not start"
timeout 120 etcdctl --endpoints="$EP" watch /slow/ --prefix >"$T_TMP/normal.out" 2>&1 &
T_PIDS+=("$!")
sleep 0.5
rss0=$(rss_kb "${C_GWS[0]}")
# 64 MiB of events: 2000 Puts of 32 KiB (a gateway that queued them all would grow by more)
"$CAIRN_BIN/cairn_bench" --endpoint "$EP" --op put --prefix /slow/ --key-space 2000 --total 2000 \
  --val-size 32768 --clients 8 >"$T_TMP/put.out" 2>&1 || t_fail "puts failed: $(cat "$T_TMP/put.out")"
# every event reached the normal watcher (each event prints 3 lines: PUT, key, value)
if t_wait_until 30 bash -c "[ \$(grep -c '^PUT\$' $T_TMP/normal.out) -ge 2000 ]"; then
  t_ok "the normal watcher got all 2000 events while a slow one sat on the same prefix"
else
  t_fail "normal watcher got $(grep -c '^PUT$' "$T_TMP/normal.out") of 2000 events"
fi
rss1=$(rss_kb "${C_GWS[0]}")
grow=$(( (rss1 - rss0) / 1024 ))
[ "$grow" -lt 32 ] && t_ok "gatewayd grew ${grow} MiB for 64 MiB of events the slow client never read" ||
  t_fail "gatewayd grew ${grow} MiB (rss ${rss0} -> ${rss1} KiB)"
kill -0 "${C_GWS[0]}" && t_ok "gatewayd still running" || t_fail "gatewayd died"
t_done
