#!/usr/bin/env bash
# test_snapshot_stream: Maintenance/Snapshot on a store of ~100 MB (issue 10).
#  - a full `etcdctl snapshot save` is whole (its SHA-256 checks out in etcdctl snapshot
#    restore, its status counts every key);
#  - writes and reads go on while snapshots are being made and streamed;
#  - a client that stops reading mid-stream costs the gateway bounded memory (it pulls the next
#    chunk only while the client holds < 8 MiB unread), and the file stored made for it is
#    released once the client is gone;
#  - a snapshot the disk has no room for is refused up front, and writes go on.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CP=$(t_port); PP=$(t_port); t_start_cairn s1 "$CP" "$PP"
t_wait_healthy "$C_EP"
E="etcdctl --endpoints=$C_EP"

VAL=$T_TMP/val.bin
head -c 786432 /dev/urandom | base64 -w0 >"$VAL" # 1 MiB of text
for i in $(seq 1 100); do $E put "big-$i" <"$VAL" >/dev/null; done
for i in $(seq 1 500); do $E put "small-$i" "v$i" >/dev/null; done
t_ok "100 MiB of values written"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds_stream() { ls -l "/proc/$C_STORED/fd" 2>/dev/null | grep -c 'stream-.*deleted' || true; }

# a client that never reads
GW0=$(rss_kb "$C_GW")
/usr/bin/python3 "$CAIRN_SRC/tests/watch/slowreader.py" "$C_EP" x 12 snapshot >"$T_TMP/slow.out" 2>&1 &
SLOW=$!
T_PIDS+=("$SLOW")
made() { grep -q "snapshot for a client made" "$C_LOG"; }
t_wait_until 60 made && t_ok "stored made the stalled client's snapshot" || t_fail "no snapshot made"
sleep 3
GW1=$(rss_kb "$C_GW")
t_eq "stored holds the file while the client is connected" 1 "$(fds_stream)"
GROWTH=$(( (GW1 - GW0) / 1024 ))
[ "$GROWTH" -lt 24 ] && t_ok "a client that stops reading costs the gateway ${GROWTH} MiB (< 24) of a 100 MiB snapshot" ||
  t_fail "the gateway grew by ${GROWTH} MiB for a client that stops reading"

# writes and reads go on meanwhile, and while a full snapshot is made and streamed
T0=$(date +%s%N)
$E put during stall >/dev/null && $E get during >/dev/null
MS=$(( ($(date +%s%N) - T0) / 1000000 ))
[ "$MS" -lt 2000 ] && t_ok "a write and a read during a stalled snapshot took ${MS} ms" || t_fail "write+read took ${MS} ms"
SNAP=$T_TMP/full.db
$E snapshot save "$SNAP" >"$T_TMP/save.out" 2>&1 &
SAVE=$!
WRITES=0
while kill -0 "$SAVE" 2>/dev/null && [ "$WRITES" -lt 200 ]; do
  $E put "during-save-$WRITES" x >/dev/null && WRITES=$((WRITES + 1))
done
wait "$SAVE" && t_ok "etcdctl snapshot save of 100 MiB (${WRITES} writes done meanwhile)" ||
  t_fail "snapshot save: $(tail -3 "$T_TMP/save.out")"
[ "$WRITES" -ge 1 ] && t_ok "writes were served while the snapshot was made" || t_fail "no write during the snapshot"
KEYS=$(etcdctl snapshot status "$SNAP" -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["totalKey"])')
[ "$KEYS" -ge 602 ] && t_ok "the snapshot counts every key ($KEYS pairs)" || t_fail "snapshot has $KEYS pairs"
(cd "$T_TMP" && etcdctl snapshot restore "$SNAP" --data-dir "$T_TMP/check.etcd" >/dev/null 2>&1) &&
  t_ok "etcdctl snapshot restore accepts its SHA-256" || t_fail "etcdctl snapshot restore refused the snapshot"

# the stalled client goes away: its file is released
wait "$SLOW" 2>/dev/null || true
gone() { [ "$(fds_stream)" = 0 ]; }
t_wait_until 10 gone && t_ok "the file is released once the client is gone" || t_fail "stored still holds $(fds_stream) snapshot file(s)"
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"

# a disk without room for the file: the snapshot is refused up front with the sizes, and the
# member's writes go on (filling the disk would have stopped them)
if [ "$(id -u)" = 0 ]; then
  SMALL=$T_TMP/small
  mkdir -p "$SMALL" && mount -t tmpfs -o size=48m tmpfs "$SMALL"
  small_cleanup() {
    local p
    t_signal_ours KILL "${T_PIDS[@]:-}"
    for p in "${T_PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    umount "$SMALL" 2>/dev/null || umount -l "$SMALL" 2>/dev/null || true
    t_cleanup
  }
  trap small_cleanup EXIT
  CP2=$(t_port); PP2=$(t_port)
  CAIRN_WAL_SEGMENT_BYTES=4194304 C_DATA=$SMALL/n2 t_start_cairn n2 "$CP2" "$PP2"
  t_wait_healthy "$C_EP"
  etcdctl --endpoints="$C_EP" put before snap >/dev/null
  OUT=$(etcdctl --endpoints="$C_EP" snapshot save "$T_TMP/small.db" 2>&1 || true)
  t_contains "a snapshot the disk has no room for is refused, saying so" "not enough disk space for a snapshot" "$OUT"
  t_eq "writes go on after the refusal" OK "$(etcdctl --endpoints="$C_EP" put after snap 2>&1)"
  t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
fi
t_done
