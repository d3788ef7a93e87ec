#!/usr/bin/env bash
# test_snapshot_etcd: snapshots move between Cairn and etcd 3.4 both ways (issue 10).
#  - the same writes on a Cairn node and an etcd give the same store (keys, values, revisions,
#    compaction) and the same HashKV;
#  - `etcdctl snapshot save` from Cairn gives a file `etcdctl snapshot status` accepts (bbolt's
#    own consistency check included) with what `cairnctl snapshot status` prints;
#  - `etcdctl snapshot restore` of it boots a real etcd holding exactly Cairn's store, leases
#    included (migration out of Cairn);
#  - `cairnctl snapshot restore` of etcd's snapshot boots a Cairn holding exactly etcd's store
#    (migration into Cairn); etcd's member/snap/db (no hash) needs --skip-hash-check;
#  - a damaged snapshot is refused by the SHA-256, an existing data dir is refused.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CTL=$CAIRN_BIN/cairnctl

# t_same WHAT A B: like t_eq, but a failure shows a diff of the two (dumps are long)
t_same() {
  if [ "$2" == "$3" ]; then t_ok "$1"; else
    t_fail "$1"
    diff <(printf '%s\n' "$2" | fold -w 200) <(printf '%s\n' "$3" | fold -w 200) | head -20 >&2 || true
  fi
}

CP=$(t_port); PP=$(t_port); t_start_cairn c1 "$CP" "$PP"; CAIRN_EP=$C_EP; C1_PIDS="$C_STORED $C_RAFTD $C_GW"
EP=$(t_port); EPP=$(t_port); t_start_etcd e1 "$EP" "$EPP"; ETCD_EP=$E_EP; E1_PID=$E_PID
t_wait_healthy "$CAIRN_EP"
t_wait_healthy "$ETCD_EP"

BIG=$T_TMP/big.bin
head -c 300000 /dev/urandom | base64 -w0 > "$BIG" # ~400 KB: a value over many bbolt pages

# The same operations on both: they end at the same revisions.
load() {
  local e="etcdctl --endpoints=$1"
  local i
  for i in $(seq 1 120); do $e put "k$i" "v$i" >/dev/null; done
  $e put a 1 >/dev/null; $e put a 2 >/dev/null; $e put pre x >/dev/null; $e put prefix y >/dev/null
  $e del k5 >/dev/null
  $e del k1 --prefix >/dev/null # k1, k10..k19, k100..k119
  # a txn of several puts: several sub-revisions of one revision
  printf 'value("a") = "2"\n\nput t1 one\nput t2 two\ndel k7\n\n\n' | $e txn >/dev/null
  local lid; lid=$($e lease grant 3600 | awk '{print $2}')
  $e put --lease="$lid" leased yes >/dev/null
  $e put --lease="$lid" leased2 also >/dev/null
  $e compact 60 >/dev/null
  $e put big <"$BIG" >/dev/null
  $e put " sp ace" 'q"uote' >/dev/null
  $e put after last >/dev/null
}
load "$CAIRN_EP"
load "$ETCD_EP"

# dump EP [LEASES]: the store as seen at its revision and at older ones, normalised; with
# LEASES=ids the lease IDs are kept (a restore carries them), otherwise only whether a key has one
dump() {
  local ep=$1 keep=${2:-} out=""
  local rev; rev=$(etcdctl --endpoints="$ep" get nothing -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
  out+="revision $rev"$'\n'
  local r
  for r in 0 70 130 $((rev - 2)); do
    out+="at $r: "
    out+=$(etcdctl --endpoints="$ep" get "" --prefix --rev="$r" -w json | python3 -c '
import json, sys, hashlib
keep = sys.argv[1] == "ids"
d = json.load(sys.stdin)
rows = []
for k in d.get("kvs", []):
    l = k.get("lease", 0)
    rows.append((k["key"], hashlib.sha1(k.get("value", "").encode()).hexdigest()[:12], k["create_revision"], k["mod_revision"], k["version"], l if keep else bool(l)))
print(d.get("count", 0), sorted(rows))' "$keep")
    out+=$'\n'
  done
  out+="compacted below: $(etcdctl --endpoints="$ep" get k2 --rev=50 2>&1 | tail -1)"$'\n'
  if [ "$keep" = ids ]; then
    local l
    for l in $(etcdctl --endpoints="$ep" lease list | tail -n +2); do
      # "lease X granted with TTL(3600s), remaining(3598s), attached keys([a b])": all but the clock
      # (the keys in sorted order: etcd lists them from a map)
      out+="$(etcdctl --endpoints="$ep" lease timetolive "$l" --keys | sed 's/remaining([0-9]*s), //' |
        python3 -c 'import re,sys;t=sys.stdin.read().strip();print(re.sub(r"\(\[(.*)\]\)",lambda m:"(["+" ".join(sorted(m.group(1).split()))+"])",t))')"$'\n'
    done
  fi
  printf '%s' "$out"
}

CD=$(dump "$CAIRN_EP"); ED=$(dump "$ETCD_EP")
t_same "the same writes give the same store on Cairn and on etcd" "$ED" "$CD"
# HashKV is etcd's hash of etcd's encoding: the same history hashes the same on both (up to
# the first leased key: lease IDs are random; the restores below compare everything)
hashkv() { etcdctl --endpoints="$1" endpoint hashkv --rev="$2" -w json | python3 -c 'import json,sys;d=json.load(sys.stdin)[0]["HashKV"];print(d["hash"], d["compact_revision"])'; }
for r in 70 122 128; do
  t_eq "HashKV at revision $r: Cairn's equals etcd's" "$(hashkv "$ETCD_EP" "$r")" "$(hashkv "$CAIRN_EP" "$r")"
done

# ---- out of Cairn ------------------------------------------------------------------------
C_SNAP=$T_TMP/cairn.db
if etcdctl --endpoints="$CAIRN_EP" snapshot save "$C_SNAP" >"$T_TMP/save.out" 2>&1; then
  t_ok "etcdctl snapshot save from Cairn"
else
  t_fail "etcdctl snapshot save from Cairn: $(cat "$T_TMP/save.out")"
fi
SZ=$(stat -c %s "$C_SNAP")
t_eq "the snapshot ends with its SHA-256 (size % 512 == 32)" 32 $((SZ % 512))
ES=$(etcdctl snapshot status "$C_SNAP" -w json 2>&1)
CS=$($CTL snapshot status "$C_SNAP" -w json 2>&1)
t_eq "cairnctl snapshot status prints what etcdctl does (Cairn's file)" "$ES" "$CS"
t_contains "etcdctl's status of Cairn's snapshot has the revision" "\"revision\":$(etcdctl --endpoints="$CAIRN_EP" get nothing -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')" "$ES"
t_eq "table output matches too" "$(etcdctl snapshot status "$C_SNAP" -w table 2>&1)" "$($CTL snapshot status "$C_SNAP" -w table 2>&1)"

XP=$(t_port); XPP=$(t_port)
(cd "$T_TMP" && etcdctl snapshot restore "$C_SNAP" --name x1 --data-dir "$T_TMP/etcd-x1" \
  --initial-cluster "x1=http://127.0.0.1:$XPP" --initial-advertise-peer-urls "http://127.0.0.1:$XPP" >"$T_TMP/restore-x.out" 2>&1) ||
  t_fail "etcdctl snapshot restore of Cairn's snapshot: $(tail -3 "$T_TMP/restore-x.out")"
t_start_etcd x1 "$XP" "$XPP"; X_EP=$E_EP
t_wait_healthy "$X_EP" 30
CDI=$(dump "$CAIRN_EP" ids); XDI=$(dump "$X_EP" ids)
t_same "etcd restored from Cairn's snapshot holds Cairn's store, leases included" "$CDI" "$XDI"
t_eq "etcd restored from Cairn's snapshot has Cairn's HashKV" "$(hashkv "$CAIRN_EP" 0)" "$(hashkv "$X_EP" 0)"
etcdctl --endpoints="$X_EP" put written-on-etcd ok >/dev/null && t_ok "the restored etcd takes writes" ||
  t_fail "the restored etcd takes writes"

# ---- into Cairn --------------------------------------------------------------------------
E_SNAP=$T_TMP/etcd.db
etcdctl --endpoints="$ETCD_EP" snapshot save "$E_SNAP" >/dev/null 2>&1 || t_fail "etcdctl snapshot save from etcd"
t_eq "cairnctl snapshot status prints what etcdctl does (etcd's file)" \
  "$(etcdctl snapshot status "$E_SNAP" -w simple 2>&1)" "$($CTL snapshot status "$E_SNAP" 2>&1)"
YP=$(t_port); YPP=$(t_port)
if $CTL snapshot restore "$E_SNAP" --name y1 --data-dir "$T_TMP/y1" --initial-cluster "y1=http://127.0.0.1:$YPP" \
  --initial-advertise-peer-urls "http://127.0.0.1:$YPP" >"$T_TMP/restore-y.out" 2>&1; then
  t_ok "cairnctl snapshot restore of etcd's snapshot"
else
  t_fail "cairnctl snapshot restore of etcd's snapshot: $(cat "$T_TMP/restore-y.out")"
fi
C_DATA=$T_TMP/y1 t_start_cairn y1 "$YP" "$YPP"; Y_EP=$C_EP
t_wait_healthy "$Y_EP" 30
EDI=$(dump "$ETCD_EP" ids); YDI=$(dump "$Y_EP" ids)
t_same "Cairn restored from etcd's snapshot holds etcd's store, leases included" "$EDI" "$YDI"
t_eq "Cairn restored from etcd's snapshot has etcd's HashKV" "$(hashkv "$ETCD_EP" 0)" "$(hashkv "$Y_EP" 0)"
etcdctl --endpoints="$Y_EP" put written-on-cairn ok >/dev/null && t_ok "the restored Cairn takes writes" ||
  t_fail "the restored Cairn takes writes"
t_eq "the restored Cairn's revision moved on from etcd's" \
  "$(($(etcdctl --endpoints="$ETCD_EP" get nothing -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])') + 1))" \
  "$(etcdctl --endpoints="$Y_EP" get nothing -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')"

# ---- refusals ----------------------------------------------------------------------------
BAD=$T_TMP/bad.db
cp "$C_SNAP" "$BAD"
printf 'X' | dd of="$BAD" bs=1 seek=20000 conv=notrunc 2>/dev/null
OUT=$($CTL snapshot restore "$BAD" --data-dir "$T_TMP/bad-restore" 2>&1 || true)
t_contains "a damaged snapshot is refused by its SHA-256" "expected sha256" "$OUT"
[ ! -e "$T_TMP/bad-restore" ] && t_ok "no data dir is left by a refused restore" || t_fail "a refused restore left a data dir"
OUT=$($CTL snapshot restore "$C_SNAP" --data-dir "$T_TMP/y1" 2>&1 || true)
t_contains "an existing data dir is refused" "exists" "$OUT"

# etcd's own backend file has no hash: refused without --skip-hash-check, as etcdctl does
t_stop "$E1_PID"
RAW=$T_TMP/raw.db
cp "$T_TMP/etcd-e1/member/snap/db" "$RAW"
OUT=$($CTL snapshot restore "$RAW" --data-dir "$T_TMP/raw1" 2>&1 || true)
t_contains "a file without a hash needs --skip-hash-check" "snapshot missing hash but --skip-hash-check=false" "$OUT"
ZP=$(t_port); ZPP=$(t_port)
$CTL snapshot restore "$RAW" --skip-hash-check --name z1 --data-dir "$T_TMP/z1" --initial-cluster "z1=http://127.0.0.1:$ZPP" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ZPP" >/dev/null 2>&1 || t_fail "restore of etcd's member/snap/db"
C_DATA=$T_TMP/z1 t_start_cairn z1 "$ZP" "$ZPP"; Z_EP=$C_EP
t_wait_healthy "$Z_EP" 30
t_same "Cairn restored from etcd's member/snap/db holds etcd's store" "$EDI" "$(dump "$Z_EP" ids)"
OUT=$($CTL snapshot status "$T_TMP/c1.log" 2>&1 || true)
t_contains "status of a file that is not a snapshot is an error" "not a bbolt database" "$OUT"

# shellcheck disable=SC2086
t_stop $C1_PIDS
t_done
