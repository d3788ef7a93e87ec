#!/usr/bin/env bash
# test_backup_pitr: continuous backup and point-in-time restore (issue 12). A 3-member cluster
# takes a write load (puts, big values, deletes, a multi-key delete, txns, keys on leases, a
# lease revoked and one that expires) while `cairnctl backup` runs; one member is killed -9 and
# restarted (the backup's stream breaks), and so is the backup itself. The store is recorded
# at several revisions during the run (`etcdctl get --prefix --rev R -w json`, before any
# compaction). Then `cairnctl restore` at each of them - just after the snapshot, in a later
# segment, the last one, and one picked by --to-time - must give a member that serves exactly
# the recording at its current revision: every key, value, create/mod revision, version and
# lease, header.revision = R, and the leases its keys name. Then: a torn tail of the last
# segment is truncated by the next start, and a compaction that overtakes a stopped backup
# makes it take a fresh snapshot, after which a restore into the hole is refused by name.
# Last, --retain-snapshots: a backup that keeps its two newest snapshots and the segments they
# need still restores, and refuses a revision older than what it kept; while a restore reads the
# directory (READ.lock) its prunes wait, and a restore waits for a prune in progress.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CTL=$CAIRN_BIN/cairnctl
KV="python3 $CAIRN_SRC/tests/backup/kvstate.py"
BK=$T_TMP/backup
BLOG=$T_TMP/backup.log

t_start_cluster 3 pitr
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30; done
EPS=$(IFS=,; echo "${C_EPS[*]}")
# etcdctl, tried again on the errors a busy cluster (sanitizer builds, a member restarting)
# gives now and then; what it did is read back from the cluster, so a write applied twice
# only moves the revisions the test records
ectl() {
  local i out
  for i in 1 2 3 4 5 6; do
    if out=$(etcdctl --endpoints="${ECTL_EPS:-$EPS}" "$@" 2>&1); then
      [ -z "$out" ] || printf '%s\n' "$out"
      return 0
    fi
    case $out in
      *"timed out"* | *"no leader"* | *"leader changed"* | *Unavailable*) sleep 0.5 ;;
      *) break ;;
    esac
  done
  printf '%s\n' "$out" >&2
  return 1
}
E=ectl

cur_rev() { $E get nothing -w json | $KV rev; }
declare -A REC RLEASES
# record: the store at the current revision (-> $R), as a later restore must give it back
# (not run in $(...): the recording must outlive the subshell)
record() {
  local j
  R=$(cur_rev)
  j=$($E get "" --prefix --rev="$R" -w json)
  REC[$R]=$($KV kvs <<<"$j")
  RLEASES[$R]=$($KV leases <<<"$j")
}
start_backup() {
  t_start_daemon "$BLOG" "$CTL" backup --endpoints "$EPS" --dir "$BK" --interval "${INTERVAL:-1h}" --lease-poll 300ms \
    --segment-size 65536
  BK_PID=$T_LAST_PID
}
saved() { $CTL restore --dir "$BK" --list 2>/dev/null | awk -F= '/^last_revision=/ {print $2}'; }
saved_ge() { local s; s=$(saved); [ -n "$s" ] && [ "$s" -ge "$1" ]; }
log_has() { grep -qF -- "$1" "$BLOG"; }
BIG=$(head -c 3000 /dev/zero | tr '\0' x)

# before the backup: keys, one on a lease that lives through the run
L_KEEP=$($E lease grant 600 | awk '{print $2}')
for i in 1 2 3; do $E put "a/pre-$i" "v$i" >/dev/null; done
$E put --lease="$L_KEEP" a/leased-pre held >/dev/null

start_backup
t_wait_until 20 log_has '"backup: watching"' && t_ok "backup started: snapshot, then the watch" ||
  t_fail "backup did not start: $(tail -5 "$BLOG")"
SNAP_REV=$(ls "$BK" | sed -n 's/^snap-\([0-9]*\)\.db$/\1/p' | sort -n | head -1)
t_eq "the first snapshot is at the current revision" "$(cur_rev)" "$SNAP_REV"

# phase 1: right after the snapshot, then enough big values to fill a few 64 KiB segments
$E put a/first one >/dev/null
record; R_FIRST=$R
t_eq "the first write after the snapshot is revision snapshot + 1" "$((SNAP_REV + 1))" "$R_FIRST"
for i in $(seq 0 39); do $E put "a/big-$i" "$i-$BIG" >/dev/null; done
L_TWO=$($E lease grant 600 | awk '{print $2}')
$E put --lease="$L_TWO" b/l1 x >/dev/null
$E put --lease="$L_TWO" b/l2 y >/dev/null
$E del a/big-3 >/dev/null
$E del --prefix a/big-1 >/dev/null # a/big-1 and a/big-10..19: one revision, eleven deletes
etcdctl --endpoints="$EPS" txn >/dev/null <<EOF
mod("a/first") > "0"

put a/first two
del a/big-5
put --lease=$L_TWO b/l3 z


EOF
$E put a/pre-1 v1-again >/dev/null
record; R_SEG=$R

# a member dies under the backup's stream (the backup talks to member 0 first)
t_kill9 "${C_GWS[0]}" "${C_RAFTDS[0]}" "${C_STOREDS[0]}"
ectl12() { ECTL_EPS="${C_EPS[1]},${C_EPS[2]}" ectl "$@"; }
E12=ectl12
for i in $(seq 1 5); do $E12 put "c/down-$i" "$i" >/dev/null; done
t_restart_proc stored 0; t_restart_proc raftd 0; t_restart_proc gatewayd 0
t_wait_healthy "${C_EPS[0]}" 30
for i in $(seq 1 5); do $E put "c/after-$i" "$i" >/dev/null; done

# the time target: a revision, then a quiet moment
$E put a/timed before-the-time >/dev/null
record; R_TIME=$R
sleep 0.4
T_UNIX=$(date +%s.%N)
sleep 0.4
$E put a/timed after-the-time >/dev/null

# the backup dies, writes go on, it comes back
t_wait_until 10 saved_ge "$R_TIME" || t_fail "the backup did not save revision $R_TIME"
t_kill9 "$BK_PID"
L_REVOKED=$($E lease grant 600 | awk '{print $2}')
$E put --lease="$L_REVOKED" d/r1 x >/dev/null
$E put --lease="$L_REVOKED" d/r2 y >/dev/null
start_backup
record; R_MID=$R
$E lease revoke "$L_REVOKED" >/dev/null # its two keys go in one revision
L_SHORT=$($E lease grant 3 | awk '{print $2}')
$E put --lease="$L_SHORT" d/short gone-soon >/dev/null
gone() { [ -z "$($E get d/short --keys-only)" ]; }
t_wait_until 15 gone && t_ok "the short lease expired and took its key" || t_fail "d/short still there"
$E put a/last the-end >/dev/null
record; R_LAST=$R
t_wait_until 15 saved_ge "$R_LAST" && t_ok "the backup saved through revision $R_LAST" ||
  t_fail "the backup saved only through $(saved) (want $R_LAST)"
sleep 1 # a few more lease polls: the short lease's end is recorded
t_stop "$BK_PID"
NCONN=$(grep -c '"backup: connected"' "$BLOG" || true)
[ "$NCONN" -ge 3 ] && t_ok "the backup reconnected after the member died and after its own restart ($NCONN connections)" ||
  t_fail "the backup connected $NCONN times: $(grep -E 'connect|lost|ended' "$BLOG" | tail -5)"

NSEG=$(ls "$BK" | grep -c '^changes-.*\.seg$')
SEG2=$(ls "$BK" | sed -n 's/^changes-\([0-9]*\)\.seg$/\1/p' | sort -n | sed -n 2p)
[ "$NSEG" -ge 2 ] && [ "$R_SEG" -ge "${SEG2:-0}" ] && t_ok "$NSEG segments; revision $R_SEG is in a later one" ||
  t_fail "segments: $NSEG, second starts at ${SEG2:-none}, R_SEG $R_SEG"

# restore_check NAME R [restore flags...]: restore, start a one-member cluster on it, compare
restore_check() {
  local what=$1 r=$2; shift 2
  local name=r$r pp cp dd out
  pp=$(t_port); cp=$(t_port); dd=$T_TMP/restored-$name-$RANDOM
  local cluster="$name=http://127.0.0.1:$pp"
  if ! out=$($CTL restore --dir "$BK" "$@" --name "$name" --data-dir "$dd" --initial-cluster "$cluster" \
    --initial-cluster-token "pitr-$name" --initial-advertise-peer-urls "http://127.0.0.1:$pp" 2>&1); then
    t_fail "$what: restore failed: $out"
    return
  fi
  local flags="--name $name --data-dir $dd --listen-client-urls http://127.0.0.1:$cp --advertise-client-urls http://127.0.0.1:$cp --listen-peer-urls http://127.0.0.1:$pp --initial-advertise-peer-urls http://127.0.0.1:$pp --initial-cluster $cluster --initial-cluster-token pitr-$name"
  local log=$T_TMP/$name.log p1 p2 p3
  # shellcheck disable=SC2086
  t_start_daemon "$log" "$CAIRN_BIN/stored" $flags; p1=$T_LAST_PID
  # shellcheck disable=SC2086
  t_start_daemon "$log" "$CAIRN_BIN/raftd" $flags; p2=$T_LAST_PID
  # shellcheck disable=SC2086
  t_start_daemon "$log" "$CAIRN_BIN/gatewayd" $flags --gateway-id gw1; p3=$T_LAST_PID
  if t_wait_healthy "127.0.0.1:$cp" 30; then
    local j
    j=$(etcdctl --endpoints="127.0.0.1:$cp" get "" --prefix -w json)
    t_eq "$what: header.revision" "$r" "$($KV rev <<<"$j")"
    t_eq "$what: every key, value, revision, version, lease" "${REC[$r]}" "$($KV kvs <<<"$j")"
    local ll l missing=""
    ll=$(etcdctl --endpoints="127.0.0.1:$cp" lease list)
    for l in ${RLEASES[$r]}; do grep -q "^$l\$" <<<"$ll" || missing+=" $l"; done
    t_eq "$what: the leases its keys name exist" "" "$missing"
    local h
    for h in ${HIST_REVS:-}; do # the history below R is there too, as it was
      t_eq "$what: the store at revision $h, read from it" "${REC[$h]}" \
        "$(etcdctl --endpoints="127.0.0.1:$cp" get "" --prefix --rev="$h" -w json | $KV kvs)"
    done
    if [ -n "${WANT_LEASES:-}" ]; then
      t_eq "$what: exactly the leases alive then" "$WANT_LEASES" "$(grep -v '^found' <<<"$ll" | sort | xargs)"
    fi
    t_ok "$what: $(grep -o 'from .*' <<<"$out" | head -1 | sed "s|$BK/||")"
  else
    t_fail "$what: the restored member did not start"
  fi
  t_stop "$p3" "$p2" "$p1"
}

restore_check "just after the snapshot (revision $R_FIRST)" "$R_FIRST" --to-revision "$R_FIRST"
restore_check "in a later segment (revision $R_SEG)" "$R_SEG" --to-revision "$R_SEG"
restore_check "across the backup's restart (revision $R_MID)" "$R_MID" --to-revision "$R_MID"
WANT_LEASES=$(printf '%s\n' "$L_KEEP" "$L_TWO" | sort | xargs) HIST_REVS="$R_FIRST $R_SEG $R_MID" \
  restore_check "the last revision ($R_LAST)" "$R_LAST" --to-revision "$R_LAST"
T_RFC=$(date -u -d "@$T_UNIX" +%Y-%m-%dT%H:%M:%S.%NZ)
restore_check "--to-time $T_RFC (revision $R_TIME)" "$R_TIME" --to-time "$T_RFC"
out=$($CTL restore --dir "$BK" --to-revision "$((R_LAST + 100))" --data-dir "$T_TMP/never" 2>&1 || true)
t_contains "a revision past the end is refused" "is past the end of the backup" "$out"

# a torn tail: the last record cut short is truncated on the next start, and the watch
# fetches that revision again
LASTSEG=$BK/$(ls "$BK" | grep '^changes-.*\.seg$' | sort -t- -k2 -n | tail -1)
truncate -s -5 "$LASTSEG"
t_contains "a torn tail is not corruption for restore" "torn tail" \
  "$($CTL restore --dir "$BK" --list 2>&1)"
INTERVAL=2s start_backup # and a snapshot every 2 s from now on
t_wait_until 20 log_has '"backup: torn tail truncated"' && t_ok "the torn tail was truncated at start" ||
  t_fail "no torn-tail message: $(tail -5 "$BLOG")"
$E put a/after-torn x >/dev/null
record; R_TORN=$R
t_wait_until 15 saved_ge "$R_TORN" && t_ok "the backup resumed after the torn tail (saved $R_TORN)" ||
  t_fail "the backup did not resume after the torn tail: saved $(saved)"
t_wait_until 15 log_has 'reason=interval' && t_wait_until 15 test -e "$BK/snap-$R_TORN.db" &&
  t_ok "a snapshot every --interval" || t_fail "no interval snapshot at $R_TORN: $(ls "$BK")"
t_stop "$BK_PID"
restore_check "from the interval snapshot (revision $R_TORN)" "$R_TORN" --to-revision "$R_TORN"

# corruption in the middle of a segment stops a restore with the file and offset
FIRSTSEG=$BK/$(ls "$BK" | grep '^changes-.*\.seg$' | sort -t- -k2 -n | head -1)
cp "$FIRSTSEG" "$T_TMP/seg.bak"
printf '\xff\xff\xff' | dd of="$FIRSTSEG" bs=1 seek=100 conv=notrunc 2>/dev/null
out=$($CTL restore --dir "$BK" --to-revision "$R_LAST" --data-dir "$T_TMP/never" 2>&1 || true)
t_contains "a corrupt record is named with its file and offset" "$(basename "$FIRSTSEG"): offset" "$out"
cp "$T_TMP/seg.bak" "$FIRSTSEG"

# a missing snapshot is named
mv "$BK/snap-$SNAP_REV.db" "$T_TMP/snap.bak"
out=$($CTL restore --dir "$BK" --to-revision "$R_FIRST" --data-dir "$T_TMP/never" 2>&1 || true)
t_contains "a missing snapshot is named" "snap-$SNAP_REV.db is missing" "$out"
mv "$T_TMP/snap.bak" "$BK/snap-$SNAP_REV.db"

# a compaction overtakes the stopped backup: a fresh snapshot, and a hole a restore refuses
for i in $(seq 1 5); do $E put "e/while-stopped-$i" "$i" >/dev/null; done
R_HOLE=$((R_TORN + 2))
R_COMPACT=$(cur_rev)
$E compact "$R_COMPACT" >/dev/null
start_backup
t_wait_until 20 log_has '"backup: revisions lost to the compaction"' &&
  t_ok "the compaction made the backup take a fresh snapshot" || t_fail "no fresh snapshot: $(tail -5 "$BLOG")"
$E put e/after-compaction x >/dev/null
record; R_AFTER=$R
t_wait_until 15 saved_ge "$R_AFTER" || t_fail "the backup did not go on after the compaction"
t_stop "$BK_PID"
out=$($CTL restore --dir "$BK" --to-revision "$R_HOLE" --data-dir "$T_TMP/never" 2>&1 || true)
t_contains "a revision in the compaction's hole is refused" "revision $R_HOLE is in a hole of the backup" "$out"
echo "# $out"
t_eq "nothing was made for it" "no" "$([ -e "$T_TMP/never" ] && echo yes || echo no)"
out=$($CTL restore --dir "$BK" --list 2>&1)
t_contains "the listing shows the hole" "hole revisions=" "$out"
restore_check "after the compaction's fresh snapshot (revision $R_AFTER)" "$R_AFTER" --to-revision "$R_AFTER"

# --retain-snapshots 2: a snapshot every second while writes fill 4 KiB segments; only the two
# newest snapshots and the segments after the older of them stay, and they still restore
BK=$T_TMP/backup-retain
BLOG=$T_TMP/backup-retain.log
R_PRE=$(cur_rev)
t_start_daemon "$BLOG" "$CTL" backup --endpoints "$EPS" --dir "$BK" --interval 1s --lease-poll 300ms \
  --segment-size 4096 --retain-snapshots 2
BK_PID=$T_LAST_PID
t_wait_until 20 log_has '"backup: watching"' || t_fail "the retaining backup did not start: $(tail -5 "$BLOG")"
for round in $(seq 1 6); do
  for i in 1 2 3; do $E put "r/$round-$i" "$round-$BIG" >/dev/null; done
  sleep 1
done
record; R_RET=$R
t_wait_until 15 saved_ge "$R_RET" || t_fail "the retaining backup did not save $R_RET"
t_wait_until 15 test -e "$BK/snap-$R_RET.db" || t_fail "no snapshot at $R_RET: $(ls "$BK")"
# a restore reading the directory holds READ.lock shared (flock(1) stands in for it here, for
# as long as the test likes): the prunes wait, the snapshots go on; once it is let go, the
# next snapshot's prune removes what it may
nsnaps() { ls "$BK" | grep -c '^snap-.*\.db$'; }
flock -s -o "$BK/READ.lock" sleep 40 & # -o: the lock is flock's own, let go when its sleep ends
FL_PID=$!
T_PIDS+=("$FL_PID")
sleep 0.5
for round in 1 2 3; do
  $E put "r/held-$round" "$round-$BIG" >/dev/null
  R0=$(cur_rev)
  t_wait_until 15 test -e "$BK/snap-$R0.db" || t_fail "no snapshot at $R0 while a restore reads: $(ls "$BK")"
done
t_eq "while a restore reads, nothing is pruned (2 snapshots and 3 more)" 5 "$(nsnaps)"
t_contains "the backup says its prune waits" "pruning waits" "$(grep -F 'pruning waits' "$BLOG" | tail -n 1)"
pkill -P "$FL_PID" sleep 2>/dev/null; wait "$FL_PID" 2>/dev/null || true
$E put "r/after-held" "x-$BIG" >/dev/null
record; R_RET=$R
t_wait_until 15 saved_ge "$R_RET" || t_fail "the retaining backup did not save $R_RET"
t_wait_until 15 eval '[ "$(nsnaps)" = 2 ] && test -e "$BK/snap-$R_RET.db"' ||
  t_fail "the prune did not resume once the restore was done: $(ls "$BK" | tr '\n' ' ')"
t_stop "$BK_PID"
t_eq "two snapshots kept" "2" "$(ls "$BK" | grep -c '^snap-.*\.db$')"
# and a restore takes that lock: while a prune holds it (flock -x here), the restore waits
flock -x -o "$BK/READ.lock" sleep 40 &
FL_PID=$!
T_PIDS+=("$FL_PID")
sleep 0.3
$CTL restore --dir "$BK" --list >"$T_TMP/list-held.out" 2>&1 &
LS_PID=$!
T_PIDS+=("$LS_PID")
sleep 1.5
t_eq "a restore waits while a prune holds the directory" 1 "$(kill -0 "$LS_PID" 2>/dev/null && echo 1 || echo 0)"
pkill -P "$FL_PID" sleep 2>/dev/null; wait "$FL_PID" 2>/dev/null || true
t_wait_until 10 eval '! kill -0 "$LS_PID" 2>/dev/null' || t_fail "the restore did not go on once the prune was done"
wait "$LS_PID" 2>/dev/null || true
t_contains "then it reads the directory" "last_revision=" "$(cat "$T_TMP/list-held.out")"
t_contains "and it said why it waited" "READ.lock is held" "$(cat "$T_TMP/list-held.out")"
t_contains "old snapshots and segments removed, and said so" "segments_removed=" \
  "$(grep -F 'backup: pruned' "$BLOG" | grep -v 'segments_removed=0' | tail -n 1)"
OLDEST=$(ls "$BK" | sed -n 's/^snap-\([0-9]*\)\.db$/\1/p' | sort -n | head -1)
FIRST_SEG=$(ls "$BK" | sed -n 's/^changes-\([0-9]*\)\.seg$/\1/p' | sort -n | head -1)
[ "$FIRST_SEG" -le $((OLDEST + 1)) ] && [ "$FIRST_SEG" -gt $((R_PRE + 1)) ] &&
  t_ok "the segments left start at or before the oldest snapshot kept ($FIRST_SEG <= $OLDEST + 1), the older ones are gone" ||
  t_fail "segments from $FIRST_SEG, oldest snapshot $OLDEST, backup began after $R_PRE: $(ls "$BK" | tr '\n' ' ')"
restore_check "from a pruned backup (revision $R_RET)" "$R_RET" --to-revision "$R_RET"
out=$($CTL restore --dir "$BK" --to-revision "$((OLDEST - 1))" --data-dir "$T_TMP/never" 2>&1 || true)
t_contains "a revision before the oldest snapshot kept is refused" "older than the" "$out"
echo "# $out"
t_done
