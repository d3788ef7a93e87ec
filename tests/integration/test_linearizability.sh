#!/usr/bin/env bash
# Linearizability under faults: concurrent clients do get / put / compare-and-swap on a few keys
# through etcdctl (tests/linearizability/client.py) while processes are killed with SIGKILL and
# restarted, or paused with SIGSTOP (see lin_fault); the recorded history is checked with a WGL linearizability checker
# (tests/linearizability/checker.py; a register model with CAS per key, timed-out writes may or
# may not have happened). Passes only with zero violations, enough completed operations, some
# successful CAS, the checker rejecting a copy of the same history with one read made stale, and
# at least one fault of each kind the scenario claims (kill -9, SIGSTOP, and the optional kinds
# below when enabled): the first faults are forced to be of the kinds not yet seen.
#
# Target: a 3-member Cairn cluster when lib.sh has t_start_cluster (faults: any process of any
# member; pauses hit the leader's raftd), else one Cairn node (its stored, raftd or gatewayd).
# Environment: LIN_TARGET=cairn|etcd (etcd: Debian's etcd, one member, faults on etcd itself),
# LIN_NODES=1 forces a single Cairn node, LIN_DURATION (s, 20), LIN_CLIENTS (6), LIN_FAULTS (6),
# LIN_SEED (fault schedule and workload seed), LIN_HISTORY=FILE keeps a copy of the history,
# LIN_SERIALIZABLE=1 reads with --consistency=s (stale reads allowed: expect violations; a
# demonstration that the checker sees them, not a mode the test passes in).
# LIN_LONG_FAULTS=1 adds a third kind of fault in a cluster: a whole member killed for 3-4 s,
# long enough for the leader to compact past it with a small --snapshot-count (T_EXTRA_FLAGS),
# so it comes back through a snapshot; LIN_EXPECT_SNAPSHOT=1 then requires that one happened
# (test_linearizability_snap.sh). LIN_MEMBERSHIP=1 adds another: a follower is removed with
# `etcdctl member remove`, its data wiped, added back with `member add` and restarted with
# --initial-cluster-state existing, so it rejoins empty and catches up under load.
. "$(dirname "$0")/lib.sh"
LIN=$CAIRN_SRC/tests/linearizability
TARGET=${LIN_TARGET:-cairn}
DURATION=${LIN_DURATION:-20}
CLIENTS=${LIN_CLIENTS:-6}
FAULTS=${LIN_FAULTS:-6}
SEED=${LIN_SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
echo "# target=$TARGET seed=$SEED duration=${DURATION}s clients=$CLIENTS faults<=$FAULTS"

out=$(python3 "$LIN/checker.py" --selftest 2>&1) && t_ok "checker self-test" ||
  { tail -n 40 <<<"$out" >&2; t_fail "checker self-test"; }

# lin_wait_healthy EP SECONDS: a linearizable read succeeds within a deadline (lib.sh's
# t_wait_healthy counts attempts, and an attempt against a member that accepts connections but
# never answers costs seconds, which would let a stuck member hold the test for minutes).
lin_wait_healthy() {
  local ep=$1 end=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$end" ]; do
    etcdctl --endpoints="$ep" --dial-timeout=1s --command-timeout=1s endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# --- start the target -------------------------------------------------------------------------
EPS=()
if [ "$TARGET" = etcd ]; then
  CP=$(t_port); PP=$(t_port)
  t_start_etcd e "$CP" "$PP"
  lin_wait_healthy "$E_EP" 30 || { t_fail "etcd did not start"; t_done; exit 1; }
  EPS=("$E_EP")
  MODE=etcd
elif [ "${LIN_NODES:-3}" != 1 ] && declare -F t_start_cluster >/dev/null; then
  t_start_cluster 3
  for ep in "${C_EPS[@]}"; do lin_wait_healthy "$ep" 30 || { t_fail "cluster member $ep did not start"; t_done; exit 1; }; done
  EPS=("${C_EPS[@]}")
  MODE=cluster
else
  CP=$(t_port); PP=$(t_port)
  C_DATA=$T_TMP/node
  t_start_cairn node "$CP" "$PP"
  lin_wait_healthy "$C_EP" 30 || { tail -n 30 "$C_LOG" >&2; t_fail "node did not start"; t_done; exit 1; }
  NODE_FLAGS=$(t_node_flags node "$C_DATA" "$CP" "$PP")
  EPS=("$C_EP")
  MODE=node
fi
echo "# mode=$MODE endpoints=${EPS[*]}"

# lin_pid KIND I: PID of process KIND (stored|raftd|gatewayd|etcd) of member I
lin_pid() {
  case $MODE:$1 in
    etcd:*) echo "$E_PID" ;;
    node:stored) echo "$C_STORED" ;; node:raftd) echo "$C_RAFTD" ;; node:gatewayd) echo "$C_GW" ;;
    cluster:stored) echo "${C_STOREDS[$2]}" ;; cluster:raftd) echo "${C_RAFTDS[$2]}" ;;
    cluster:gatewayd) echo "${C_GWS[$2]}" ;;
  esac
}

# lin_restart KIND I: start process KIND of member I again with the flags it had
lin_restart() {
  # shellcheck disable=SC2086
  case $MODE:$1 in
    etcd:*) t_start_daemon "$E_LOG" etcd $(t_node_flags e "$T_TMP/etcd-e" "$CP" "$PP"); E_PID=$T_LAST_PID ;;
    node:stored) t_start_daemon "$C_LOG" "$CAIRN_BIN/stored" $NODE_FLAGS; C_STORED=$T_LAST_PID ;;
    node:raftd) t_start_daemon "$C_LOG" "$CAIRN_BIN/raftd" $NODE_FLAGS; C_RAFTD=$T_LAST_PID ;;
    node:gatewayd) t_start_daemon "$C_LOG" "$CAIRN_BIN/gatewayd" $NODE_FLAGS --gateway-id gw1; C_GW=$T_LAST_PID ;;
    cluster:*) t_restart_proc "$1" "$2" ;;
  esac
}

# lin_fault: one fault at random, then recovery. Sets FAULT_DESC.
#  2/3: kill -9 of stored, raftd or gatewayd of a random member, down 0.1-0.8 s, restarted
#       with the same flags;
#  1/3: pause (SIGSTOP) for 1.2-2.4 s, then SIGCONT: in a cluster, the leader's raftd (longer than
#       an election timeout: a new leader is elected while the old one, with its gateway still
#       taking requests, believes it leads -- the classic way to serve a stale read); on a
#       single node, any of the three.
# (with LIN_LONG_FAULTS / LIN_MEMBERSHIP, a share of the faults is of those kinds instead.)
# LIN_FORCE=kill|pause|long|member picks the kind instead of chance: the loop below forces each
# kind the scenario claims until it has happened once, and the verdict requires that each did.
N_KILL=0 N_PAUSE=0 N_LONG=0 N_MEMBER=0
lin_fault() {
  local kinds=(stored raftd gatewayd) kind i=0 ms pid l="" choice=${LIN_FORCE:-}
  kind=${kinds[RANDOM % 3]}
  [ "$MODE" = etcd ] && kind=etcd
  [ "$MODE" = cluster ] && i=$((RANDOM % ${#C_EPS[@]}))
  if [ -z "$choice" ]; then
    if [ "$MODE" = cluster ] && [ "${LIN_MEMBERSHIP:-0}" = 1 ] && [ $((RANDOM % 3)) = 0 ]; then choice=member
    elif [ "$MODE" = cluster ] && [ "${LIN_LONG_FAULTS:-0}" = 1 ] && [ $((RANDOM % 2)) = 0 ]; then choice=long
    elif [ $((RANDOM % 3)) = 0 ]; then choice=pause
    else choice=kill
    fi
  fi
  if [ "$choice" = member ]; then
    l=$(t_leader_index)
    [ "$l" = "$i" ] && i=$(( (i + 1) % ${#C_EPS[@]} ))
    local others=() j id out
    for j in "${!C_EPS[@]}"; do [ "$j" = "$i" ] || others+=("${C_EPS[j]}"); done
    local oeps; oeps=$(IFS=,; echo "${others[*]}")
    id=$(etcdctl --endpoints="$oeps" --command-timeout=3s member list 2>/dev/null | grep ", m$i, " | cut -d, -f1)
    out=$(etcdctl --endpoints="$oeps" --command-timeout=5s member remove "$id" 2>&1 || true)
    t_kill9 "${C_STOREDS[i]}" "${C_RAFTDS[i]}" "${C_GWS[i]}"
    if ! grep -q "removed from cluster" <<<"$out"; then
      # not removed (e.g. refused while a member was down): wiping a voter would be losing its
      # disk, which Raft does not survive; restart it as it was instead
      t_restart_proc stored "$i"; t_restart_proc raftd "$i"; t_restart_proc gatewayd "$i"
      FAULT_DESC="member $i: remove refused ($(tail -n 1 <<<"$out" | head -c 80)); killed and restarted"
      return
    fi
    rm -rf "$T_TMP/m$i"
    local added=""
    for _ in $(seq 1 20); do
      added=$(etcdctl --endpoints="$oeps" --command-timeout=5s member add "m$i" --peer-urls="http://127.0.0.1:${C_PPORTS[i]}" 2>&1 || true)
      grep -q "added to cluster" <<<"$added" && break
      sleep 0.5
    done
    C_FLAGS[i]="${C_FLAGS[i]/ --initial-cluster-state existing/} --initial-cluster-state existing"
    t_restart_proc stored "$i"; t_restart_proc raftd "$i"; t_restart_proc gatewayd "$i"
    FAULT_DESC="member $i removed ($(head -c 60 <<<"$out")), wiped, added back ($(head -n 1 <<<"$added" | head -c 60)), restarted empty"
    grep -q "added to cluster" <<<"$added" && N_MEMBER=$((N_MEMBER + 1))
  elif [ "$choice" = long ]; then
    l=$(t_leader_index)
    [ "$l" = "$i" ] && i=$(( (i + 1) % ${#C_EPS[@]} )) # a follower: the cluster keeps going
    t_kill9 "${C_STOREDS[i]}" "${C_RAFTDS[i]}" "${C_GWS[i]}"
    ms=$((3000 + (RANDOM % 11) * 100))
    sleep "$((ms / 1000)).$((ms % 1000 / 100))"
    t_restart_proc stored "$i"; t_restart_proc raftd "$i"; t_restart_proc gatewayd "$i"
    FAULT_DESC="kill -9 of the whole member $i (a follower), down ${ms}ms"
    N_LONG=$((N_LONG + 1))
  elif [ "$choice" = pause ]; then
    ms=$((1200 + (RANDOM % 13) * 100))
    if [ "$MODE" = cluster ]; then
      kind=raftd
      l=$(t_leader_index)
      [ "$l" -ge 0 ] && i=$l
    fi
    pid=$(lin_pid "$kind" "$i")
    kill -STOP "$pid" 2>/dev/null || true
    sleep "$((ms / 1000)).$((ms % 1000 / 100))"
    kill -CONT "$pid" 2>/dev/null || true
    FAULT_DESC="SIGSTOP $kind of member $i${l:+ (leader: $l)} for ${ms}ms"
    N_PAUSE=$((N_PAUSE + 1))
  else
    ms=$(((RANDOM % 8 + 1) * 100))
    t_kill9 "$(lin_pid "$kind" "$i")"
    sleep "0.$((ms / 100))"
    lin_restart "$kind" "$i"
    FAULT_DESC="kill -9 $kind of member $i, down ${ms}ms"
    N_KILL=$((N_KILL + 1))
  fi
}

# lin_pending: the first kind of fault this scenario claims that has not happened yet (empty
# when each has). The slow kinds come first, while there is time left; a membership change after
# a whole-member outage, so that the leader has likely compacted its log by then and the member
# that rejoins empty needs a snapshot (LIN_EXPECT_SNAPSHOT).
lin_long_on() { [ "$MODE" = cluster ] && [ "${LIN_LONG_FAULTS:-0}" = 1 ]; }
lin_member_on() { [ "$MODE" = cluster ] && [ "${LIN_MEMBERSHIP:-0}" = 1 ]; }
lin_pending() {
  if lin_long_on && [ "$N_LONG" = 0 ]; then echo long
  elif lin_member_on && [ "$N_MEMBER" = 0 ]; then echo member
  elif [ "$N_PAUSE" = 0 ]; then echo pause
  elif [ "$N_KILL" = 0 ]; then echo kill
  fi
}

# --- workload + faults ------------------------------------------------------------------------
H=$T_TMP/history.jsonl
eps_csv=$(IFS=,; echo "${EPS[*]}")
python3 "$LIN/client.py" --endpoints "$eps_csv" --out "$H" --clients "$CLIENTS" \
  --duration "$DURATION" --seed "$SEED" --command-timeout 2 ${LIN_SERIALIZABLE:+--serializable-reads} >"$T_TMP/client.out" 2>"$T_TMP/client.err" &
CLIENT_PID=$!
T_PIDS+=("$CLIENT_PID")
start=$SECONDS
nf=0
sleep 2
# (past DURATION - 4 only while a claimed kind of fault is still owed and the clients still run)
while [ "$nf" -lt "$FAULTS" ] && kill -0 "$CLIENT_PID" 2>/dev/null &&
  { [ $((SECONDS - start)) -lt $((DURATION - 4)) ] || [ -n "$(lin_pending)" ]; }; do
  sleep "$((RANDOM % 2 + 1)).$((RANDOM % 10))"
  now=$(python3 -c 'import time;print("%.3f"%time.monotonic())')
  LIN_FORCE=$(lin_pending)
  lin_fault
  nf=$((nf + 1))
  echo "# fault $nf at monotonic $now: $FAULT_DESC"
done
wait "$CLIENT_PID" || t_fail "client exited with an error: $(tail -n 5 "$T_TMP/client.err")"
summary=$(tail -n 1 "$T_TMP/client.out")
echo "# client: $summary"
sed -n '1,5p' "$T_TMP/client.err" | sed 's/^/# /'
[ -n "${LIN_HISTORY:-}" ] && cp "$H" "$LIN_HISTORY"

# The target must be serving again after the last fault.
for i in "${!EPS[@]}"; do
  if lin_wait_healthy "${EPS[i]}" 15; then t_ok "member $i (${EPS[i]}) healthy after $nf faults"; else
    t_fail "member $i (${EPS[i]}) not healthy after the faults"
    [ "$MODE" = cluster ] && tail -n 20 "${C_LOGS[i]}" | sed 's/^/#   /' >&2
  fi
done

# The faults the scenario claims must have happened: a run in which they did not proves nothing.
[ "$nf" -gt 0 ] && t_ok "$nf faults (kill -9: $N_KILL, SIGSTOP: $N_PAUSE, member down for seconds: $N_LONG, membership changes: $N_MEMBER)" ||
  t_fail "no fault was injected"
[ "$N_KILL" -gt 0 ] && t_ok "$N_KILL kill -9 faults" || t_fail "no kill -9 fault happened"
[ "$N_PAUSE" -gt 0 ] && t_ok "$N_PAUSE SIGSTOP pauses" || t_fail "no SIGSTOP pause happened"
if lin_long_on; then
  [ "$N_LONG" -gt 0 ] && t_ok "$N_LONG whole-member outages of seconds" || t_fail "no whole member was kept down (LIN_LONG_FAULTS)"
fi
if lin_member_on; then
  [ "$N_MEMBER" -gt 0 ] && t_ok "$N_MEMBER membership changes (remove, wipe, add back)" ||
    t_fail "no membership change happened (LIN_MEMBERSHIP)"
fi

if [ "${LIN_EXPECT_SNAPSHOT:-0}" = 1 ] && [ "$MODE" = cluster ]; then
  t_contains "a member came back through a snapshot" 'msg="snapshot installed"' "$(cat "${C_LOGS[@]}")"
fi

# --- verdict ----------------------------------------------------------------------------------
cstat() { python3 -c 'import json,sys;d=json.loads(sys.argv[1]);print(eval(sys.argv[2]))' "$summary" "$1" 2>/dev/null || echo 0; }
completed=$(cstat 'd["completed"]')
cas_ok=$(cstat 'd["by_outcome"].get("cas_ok",0)')
unknown=$(cstat 'sum(v for k,v in d["by_outcome"].items() if k.endswith("_unknown"))')
[ "$completed" -ge 100 ] && t_ok "$completed operations completed ($unknown with unknown outcome)" ||
  t_fail "only $completed operations completed (want >= 100)"
[ "$cas_ok" -ge 3 ] && t_ok "$cas_ok successful compare-and-swaps" || t_fail "only $cas_ok successful CAS (want >= 3)"

rc=0
verdict=$(timeout 60 python3 "$LIN/checker.py" --budget 1000000 --time-limit 30 "$H" 2>&1) || rc=$?
sed 's/^/# /' <<<"$verdict" | tail -n 60
if [ "$rc" -eq 0 ]; then t_ok "history is linearizable"
else
  keep=${TMPDIR:-/var/tmp}/cairn-lin-$SEED-$$.jsonl
  cp "$H" "$keep"
  if [ "$rc" -eq 1 ]; then t_fail "linearizability VIOLATION (seed $SEED; history kept in $keep)"
  else t_fail "checker could not decide (rc=$rc: search budget or time exceeded; history kept in $keep)"; fi
fi

# Negative control: the same history with one read made stale must be rejected.
if inj=$(python3 "$LIN/checker.py" "$H" --inject-stale-read "$T_TMP/stale.jsonl"); then
  crc=0; timeout 30 python3 "$LIN/checker.py" --budget 1000000 --time-limit 15 -q "$T_TMP/stale.jsonl" >"$T_TMP/stale.out" 2>&1 || crc=$?
  [ "$crc" -eq 1 ] && t_ok "checker rejects the history with one injected stale read (${inj#injected: })" ||
    t_fail "checker did not reject an injected stale read (rc=$crc): $(tail -n 3 "$T_TMP/stale.out")"
else
  t_fail "no place to inject a stale read: $inj"
fi

# A clean stop (so LeakSanitizer runs), bounded: a daemon that ignores SIGTERM for 10 s is a
# failure and gets SIGKILL, rather than hanging the test.
lin_stop() {
  local p i
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 100; i++)); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do
    if kill -0 "$p" 2>/dev/null; then
      t_fail "pid $p ($(tr '\0' ' ' </proc/"$p"/cmdline 2>/dev/null | cut -c1-60)) still running 10 s after SIGTERM"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
}
case $MODE in
  etcd) lin_stop "$E_PID" ;;
  node) lin_stop "$C_GW" "$C_RAFTD" "$C_STORED" ;;
  cluster) lin_stop "${C_GWS[@]}" "${C_RAFTDS[@]}" "${C_STOREDS[@]}" ;;
esac
t_done
