#!/usr/bin/env bash
# test_backup_drill: the operator's disaster drill (issue 10). Write to a 3-member cluster,
# take a snapshot with the unmodified etcdctl, write more, lose every member (kill -9, data
# dirs gone), restore a NEW 3-member cluster from the snapshot with cairnctl snapshot restore
# (etcdctl's flags), and check it holds exactly what the snapshot held: every key, value,
# create/mod revision and version, the history above the compaction, the revision itself,
# the leases - and nothing written after the snapshot. Then it must work as a cluster: one
# leader, writes replicated to all three, equal HashKV everywhere.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CTL=$CAIRN_BIN/cairnctl

t_start_cluster 3 drill-old
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30; done
EPS=$(IFS=,; echo "${C_EPS[*]}")
E="etcdctl --endpoints=$EPS"

for i in $(seq 0 299); do $E put "key-$i" "value-$i" >/dev/null; done
for i in $(seq 0 49); do $E put "key-$i" "second-$i" >/dev/null; done
for i in $(seq 250 269); do $E del "key-$i" >/dev/null; done
LID=$($E lease grant 3600 | awk '{print $2}')
$E put --lease="$LID" leased-key held >/dev/null
$E compact 100 >/dev/null

# state: the store at the current revision and at one above the compaction, normalised
state() {
  local ep=$1 rev=$2
  etcdctl --endpoints="$ep" get "" --prefix --rev="$rev" -w json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d.get("count", 0), sorted((k["key"], k.get("value", ""), k["create_revision"], k["mod_revision"], k["version"], k.get("lease", 0)) for k in d.get("kvs", [])))'
}
rev_of() { etcdctl --endpoints="$1" get nothing -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])'; }

SNAP=$T_TMP/drill.db
etcdctl --endpoints="${C_EPS[1]}" snapshot save "$SNAP" >/dev/null 2>&1 || t_fail "etcdctl snapshot save"
# the snapshot holds this member's applied state; read what it holds from the same member
SREV=$(etcdctl snapshot status "$SNAP" -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["revision"])')
AT_SNAP=$(state "${C_EPS[1]}" "$SREV")
AT_150=$(state "${C_EPS[1]}" 150)
[ "$SREV" -ge 322 ] && t_ok "snapshot taken at revision $SREV" || t_fail "snapshot revision $SREV"

# written after the snapshot: must not come back
for i in $(seq 300 349); do $E put "late-$i" x >/dev/null; done
$E put key-0 overwritten-late >/dev/null

# lose every member
for i in 0 1 2; do t_kill9 "${C_GWS[i]}" "${C_RAFTDS[i]}" "${C_STOREDS[i]}"; done
rm -rf "$T_TMP"/m0 "$T_TMP"/m1 "$T_TMP"/m2
t_ok "every member lost"

# a new cluster from the snapshot: new names, ports, token
cluster=""
for i in 0 1 2; do
  C_NAMES[i]=n$i; C_PPORTS[i]=$(t_port); C_EPS[i]=127.0.0.1:$(t_port)
  cluster+="${cluster:+,}n$i=http://127.0.0.1:${C_PPORTS[i]}"
done
for i in 0 1 2; do
  if $CTL snapshot restore "$SNAP" --name "n$i" --data-dir "$T_TMP/n$i" --initial-cluster "$cluster" \
    --initial-cluster-token drill-new --initial-advertise-peer-urls "http://127.0.0.1:${C_PPORTS[i]}" \
    >"$T_TMP/restore-$i.out" 2>&1; then
    t_ok "member n$i restored"
  else
    t_fail "member n$i restore: $(cat "$T_TMP/restore-$i.out")"
  fi
  C_FLAGS[i]="--name n$i --data-dir $T_TMP/n$i --listen-client-urls http://${C_EPS[i]} --advertise-client-urls http://${C_EPS[i]} --listen-peer-urls http://127.0.0.1:${C_PPORTS[i]} --initial-advertise-peer-urls http://127.0.0.1:${C_PPORTS[i]} --initial-cluster $cluster --initial-cluster-token drill-new"
  C_LOGS[i]=$T_TMP/n$i.log
done
for i in 0 1 2; do t_restart_proc stored "$i"; t_restart_proc raftd "$i"; t_restart_proc gatewayd "$i"; done
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30; done

for i in 0 1 2; do
  t_eq "n$i holds the revision of the snapshot" "$SREV" "$(rev_of "${C_EPS[i]}")"
  t_eq "n$i holds every key at the snapshot's revision" "$AT_SNAP" "$(state "${C_EPS[i]}" 0)"
  t_eq "n$i holds the history above the compaction" "$AT_150" "$(state "${C_EPS[i]}" 150)"
  t_contains "n$i refuses reads below the compaction" "required revision has been compacted" \
    "$(etcdctl --endpoints="${C_EPS[i]}" get key-1 --rev=50 2>&1 || true)"
done
NE="etcdctl --endpoints=$(IFS=,; echo "${C_EPS[*]}")"
t_eq "nothing written after the snapshot came back" "" "$($NE get late- --prefix --keys-only)"
t_eq "key-0 has its value at the snapshot" "second-0" "$($NE get key-0 --print-value-only)"
t_contains "the lease came back with its key" "attached keys([leased-key])" "$($NE lease timetolive "$LID" --keys)"
t_eq "the new cluster has the three new members" "3" "$($NE member list | grep -c ', started, n[012], ')"

# a working cluster: one leader, writes reach every member, equal hashes
has_leader() { [ "$(t_leader_index)" -ge 0 ]; }
t_wait_until 10 has_leader && t_ok "a leader" || t_fail "no leader"
for i in $(seq 1 30); do $NE put "new-$i" "v$i" >/dev/null; done
R=$(rev_of "${C_EPS[0]}")
reached() { [ "$(etcdctl --endpoints="${C_EPS[2]}" get new-30 --print-value-only --consistency=s)" = v30 ]; }
t_wait_until 10 reached &&
  t_ok "writes after the restore reach every member" || t_fail "writes after the restore reach every member"
H=$($NE endpoint hashkv --cluster --rev="$R" 2>/dev/null | awk '{print $2}' | sort -u | wc -l)
t_eq "every member has the same HashKV at revision $R" 1 "$H"
t_done
