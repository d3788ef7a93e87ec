#!/usr/bin/env bash
# Catching up through a snapshot (thesis §5.1), on a real 3-member cluster with a small
# --snapshot-count so the leader compacts its log quickly:
#   1. a follower is killed (kill -9 of all three processes), thousands of writes go on, the
#      leader compacts past it; restarted, it cannot be served from the log, pulls the leader's
#      snapshot in chunks, installs it, then follows the log again; its data equals the leader's;
#   2. a member added after the log was compacted joins through a snapshot too, and is promoted;
#   3. killed again and restarted, each of them comes back from its installed state and from a
#      WAL whose first segments were released.
source "$(dirname "$0")/lib.sh"

# and a small --raft-log-memory-bytes: the leader keeps the log for a member that is down only
# within that budget, so thousands of writes push it past the killed follower
T_EXTRA_FLAGS="--snapshot-count 300 --raft-log-memory-bytes 16384"
# small WAL segments: checkpoints every 300 entries release them, so each restart below also
# starts from a WAL whose first segments are gone
export CAIRN_WAL_SEGMENT_BYTES=65536
t_start_cluster 3 cairn-snap
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30; done
ctl() { local ep=$1; shift; timeout 20 etcdctl --endpoints="$ep" --command-timeout=8s "$@" 2>&1 || true; }
# every key with its mod revision, as one member sees it (serializable: its own state)
dump() { ctl "$1" get "" --prefix --consistency=s -w json |
  python3 -c 'import json,sys;d=json.load(sys.stdin);print(d["header"]["revision"],len(d.get("kvs",[])),sum(kv["mod_revision"] for kv in d.get("kvs",[])))'; }
wait_same() { # EP_A EP_B: until both dump the same (bounded)
  local a="" b=""
  for _ in $(seq 1 150); do
    a=$(dump "$1"); b=$(dump "$2")
    [ -n "$a" ] && [ "$a" = "$b" ] && break
    sleep 0.2
  done
  echo "$a|$b"
}
bench() { "$CAIRN_BIN/cairn_bench" --endpoint "$1" --op put --clients 16 --total "$2" --sequential --key-space "$2" --prefix "$3" --val-size 100 >/dev/null; }

ctl "${C_EPS[0]}" put first 1 >/dev/null
L=$(t_leader_index)
F=$(( (L + 1) % 3 ))
O=$(( (L + 2) % 3 ))
t_kill9 "${C_STOREDS[F]}" "${C_RAFTDS[F]}" "${C_GWS[F]}"
bench "${C_EPS[L]},${C_EPS[O]}" 3000 /snap/a/
t_ok "3000 writes with one follower down"
sleep 3 # the leader stops keeping its log for a member it has not heard from for 2 election timeouts
t_restart_proc stored "$F"; t_restart_proc raftd "$F"; t_restart_proc gatewayd "$F"
r=$(wait_same "${C_EPS[L]}" "${C_EPS[F]}")
t_eq "the restarted follower holds the leader's data" "${r%%|*}" "${r##*|}"
t_contains "it was caught up by a snapshot" 'msg="snapshot installed"' "$(grep -a svc=raftd "${C_LOGS[F]}")"
t_contains "the leader sent it" 'msg="snapshot sent"' "$(cat "${C_LOGS[@]}")"
ctl "${C_EPS[L]}" put after-install yes >/dev/null
got=""
for _ in $(seq 1 50); do got=$(ctl "${C_EPS[F]}" get after-install --consistency=s --print-value-only); [ "$got" = yes ] && break; sleep 0.1; done
t_eq "then it follows the log again" yes "$got"

# --- a member added after compaction joins through a snapshot -----------------------------------
bench "${C_EPS[L]}" 1000 /snap/b/
P3=$(t_port); C3=127.0.0.1:$(t_port)
out=$(ctl "${C_EPS[L]}" member add m3 --learner --peer-urls="http://127.0.0.1:$P3")
cluster=$(sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p' <<<"$out")
t_contains "member add --learner" "m3=http://127.0.0.1:$P3" "$cluster"
C_NAMES[3]=m3; C_EPS[3]=$C3; C_PPORTS[3]=$P3; C_LOGS[3]=$T_TMP/m3.log
C_FLAGS[3]="--name m3 --data-dir $T_TMP/m3 --listen-client-urls http://$C3 --advertise-client-urls http://$C3 --listen-peer-urls http://127.0.0.1:$P3 --initial-advertise-peer-urls http://127.0.0.1:$P3 --initial-cluster $cluster --initial-cluster-state existing --initial-cluster-token cairn-snap $T_EXTRA_FLAGS"
t_restart_proc stored 3; t_restart_proc raftd 3; t_restart_proc gatewayd 3
r=$(wait_same "${C_EPS[L]}" "$C3")
t_eq "the new member holds the leader's data" "${r%%|*}" "${r##*|}"
t_contains "it joined through a snapshot" 'msg="snapshot installed"' "$(grep -a svc=raftd "$T_TMP/m3.log")"
ID3=$(ctl "${C_EPS[L]}" member list | grep "http://127.0.0.1:$P3" | cut -d, -f1)
out=""
for _ in $(seq 1 50); do out=$(ctl "${C_EPS[L]}" member promote "$ID3"); grep -q promoted <<<"$out" && break; sleep 0.2; done
t_contains "and is promoted" "promoted in cluster" "$out"

# --- each comes back from its installed state after a crash (one at a time: 4 voters now) ---------
n=4002 # first, 3000 /snap/a/, after-install, 1000 /snap/b/
for i in 3 "$F"; do
  t_kill9 "${C_STOREDS[i]}" "${C_RAFTDS[i]}" "${C_GWS[i]}"
  bench "${C_EPS[L]},${C_EPS[O]}" 200 "/snap/c$i/"
  n=$((n + 200))
  t_restart_proc stored "$i"; t_restart_proc raftd "$i"; t_restart_proc gatewayd "$i"
  r=$(wait_same "${C_EPS[L]}" "${C_EPS[i]}")
  t_eq "member $i restarted after its install holds the leader's data" "${r%%|*}" "${r##*|}"
done
d=$(dump "${C_EPS[3]}")
t_eq "every write is there" "$n" "$(cut -d' ' -f2 <<<"$d")"
t_contains "WAL segments were released along the way" 'msg="wal segments released"' "$(cat "${C_LOGS[@]}")"
t_done
