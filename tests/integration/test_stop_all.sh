#!/usr/bin/env bash
# A whole cluster stopped at once (every member gets SIGTERM together, as systemd or an
# operator's script does): each raftd tells its peers it is stopping (PEER_STOPPING), so
# the leader, which hands leadership over before it exits, sees that the member it chose is
# going too and exits at once instead of waiting two election timeouts for a new leader that
# cannot come. A leader stopped alone still hands over (test_membership.sh).
. "$(dirname "$0")/lib.sh"
t_start_cluster 3 cairn-stopall
for ep in "${C_EPS[@]}"; do t_wait_healthy "$ep" 30; done
etcdctl --endpoints="${C_EPS[0]}" put k v >/dev/null && t_ok "cluster serves" || t_fail "put"
L=$(t_leader_index)
[ "$L" -ge 0 ] && t_ok "member $L leads" || t_fail "no leader"
# every raftd at once
kill -TERM "${C_RAFTDS[@]}" 2>/dev/null || true
for p in "${C_RAFTDS[@]}"; do wait "$p" 2>/dev/null || true; done
llog=$(grep -a 'svc=raftd' "${C_LOGS[L]}" | sed -n '/handing leadership over first/,$p')
if [ -z "$llog" ]; then
  # the leader may have seen every peer stopping before it chose one: then it has nobody to
  # hand over to and stops at once, which is just as right
  t_contains "the leader stopped" 'msg="raftd stopping"' "$(grep -a 'svc=raftd' "${C_LOGS[L]}")"
else
  t_contains "the leader knew its hand-over target was stopping too" "is stopping too; not waiting for it" "$llog"
fi
t_stop "${C_GWS[@]}" "${C_STOREDS[@]}"
t_done
