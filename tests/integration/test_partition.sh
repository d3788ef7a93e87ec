#!/usr/bin/env bash
# Partitions (through raftd's test-only fault switch, CAIRN_TEST_FAULTS=1):
#  1. a follower cut off for several election timeouts cannot elect itself, and when it
#     returns it does not disturb the leader (PreVote: same leader, same term) and catches up;
#  2. a leader cut off from both followers steps down (CheckQuorum), the majority elects a
#     new leader, and writes to the cut-off member fail with etcd's errors within the
#     request deadline instead of hanging.
. "$(dirname "$0")/lib.sh"
export CAIRN_TEST_FAULTS=1
t_start_cluster 3
for i in 0 1 2; do t_wait_healthy "${C_EPS[i]}" 30; done
status() { etcdctl --endpoints="${C_EPS[$1]}" --command-timeout=2s endpoint status -w json 2>/dev/null |
  python3 -c 'import json,sys;d=json.load(sys.stdin)[0]["Status"];print("%x %d" % (d["leader"], d["raftTerm"]))'; }
isolate() { touch "$T_TMP/m$1/run/fault-isolate"; sleep 0.3; } # raftd looks every 50 ms
heal() { rm -f "$T_TMP/m$1/run/fault-isolate"; }

L=$(t_leader_index); F=$(( (L + 1) % 3 ))
before=$(status "$L")
isolate "$F"
sleep 4 # four election timeouts
etcdctl --endpoints="${C_EPS[L]}" put during partition >/dev/null && t_ok "majority still writes while a follower is cut off" || t_fail "majority write failed"
iso_view=$(etcdctl --endpoints="${C_EPS[F]}" --command-timeout=2s put x y 2>&1 || true)
t_contains "the cut-off follower cannot commit a write" "etcdserver:" "$iso_view"
heal "$F"
sleep 2
t_eq "leader and term unchanged after the follower returns (PreVote)" "$before" "$(status "$L")"
t_eq "the returned follower follows the same leader" "$(status "$L" | cut -d' ' -f1)" "$(status "$F" | cut -d' ' -f1)"
t_eq "the returned follower caught up" "partition" "$(etcdctl --endpoints="${C_EPS[F]}" get during --consistency=s --print-value-only)"

# leader cut off from everyone
L=$(t_leader_index)
isolate "$L"
t0=$(date +%s)
out=$(etcdctl --endpoints="${C_EPS[L]}" --command-timeout=4s put lost write 2>&1 || true)
dt=$(( $(date +%s) - t0 ))
[ "$dt" -le 6 ] && t_ok "write to a cut-off leader answered within its deadline (${dt}s)" || t_fail "write to a cut-off leader took ${dt}s"
t_contains "with an etcd error" "etcdserver:" "$out"
sleep 2
newl=-1
for i in 0 1 2; do [ "$i" = "$L" ] && continue; s=$(status "$i"); [ -n "$s" ] && [ "${s%% *}" != 0 ] && newl=$i; done
[ "$newl" != -1 ] && t_ok "the majority elected a new leader" || t_fail "no leader among the majority"
n=$(( (L + 1) % 3 ))
etcdctl --endpoints="${C_EPS[n]}" put after newleader >/dev/null && t_ok "majority writes after the leader was cut off" || t_fail "majority cannot write"
old_view=$(etcdctl --endpoints="${C_EPS[L]}" --command-timeout=2s get after 2>&1 || true)
t_contains "the old leader refuses linearizable reads (no stale answer)" "etcdserver:" "$old_view"
heal "$L"
sleep 3
t_eq "old leader rejoined and caught up" "newleader" "$(etcdctl --endpoints="${C_EPS[L]}" get after --print-value-only)"
t_eq "the write made to the cut-off leader was never applied" "" "$(etcdctl --endpoints="${C_EPS[n]}" get lost --print-value-only)"
for i in 0 1 2; do t_stop "${C_GWS[i]}" "${C_RAFTDS[i]}" "${C_STOREDS[i]}"; done
t_done
