#!/usr/bin/env bash
# WAL corruption: a flipped byte inside a segment stops the start with a clear message naming
# the file and offset; a truncated last record is dropped (logged) and the node starts.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
C_DATA=$T_TMP/node
t_start_cairn node "$CP" "$PP"
t_wait_healthy "$C_EP" 30
for i in $(seq 1 40); do etcdctl --endpoints="$C_EP" put "key$i" "value-$i-$(printf '%040d' "$i")" >/dev/null; done
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
seg=$(ls "$C_DATA"/member/wal/*.wal | head -n 1)
[ -f "$seg" ] && t_ok "wal segment exists" || t_fail "no wal segment under $C_DATA/member/wal"
cp "$seg" "$T_TMP/seg.orig"
# end of the written records: last non-zero byte (segments are preallocated with zeros)
end=$(python3 -c 'import sys;d=open(sys.argv[1],"rb").read();print(len(d.rstrip(b"\0")))' "$seg")

# 1. flip a byte in the middle of the written part
off=$((end / 3))
python3 -c 'import sys;p,o=sys.argv[1],int(sys.argv[2]);f=open(p,"r+b");f.seek(o);b=f.read(1);f.seek(o);f.write(bytes([b[0]^0x5a]))' "$seg" "$off"
LOG1=$T_TMP/corrupt-start.log
flags=$(t_node_flags node "$C_DATA" "$CP" "$PP")
rc=0
# shellcheck disable=SC2086
timeout 20 "$CAIRN_BIN/stored" $flags >"$LOG1" 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && t_ok "stored refuses to start on a corrupt record (rc=$rc)" || t_fail "stored rc=$rc on corrupt wal"
t_contains "error names the segment file" "$(basename "$seg")" "$(cat "$LOG1")"
t_contains "error names the offset" "offset" "$(cat "$LOG1")"

# 2. restore, then cut the last record in half
cp "$T_TMP/seg.orig" "$seg"
truncate -s $((end - 7)) "$seg"
t_start_cairn node "$CP" "$PP"
t_wait_healthy "$C_EP" 30 && t_ok "node starts after a torn tail" || t_fail "node did not start after torn tail"
t_contains "torn tail logged" "torn tail" "$(cat "$C_LOG")"
v=$(etcdctl --endpoints="$C_EP" get key20 --print-value-only)
t_eq "records before the tail survive" "value-20-$(printf '%040d' 20)" "$v"
etcdctl --endpoints="$C_EP" put after torn >/dev/null && t_ok "writable after torn-tail recovery" || t_fail "not writable"
t_eq "the new write is readable" "torn" "$(etcdctl --endpoints="$C_EP" get after --print-value-only)"
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
t_done
