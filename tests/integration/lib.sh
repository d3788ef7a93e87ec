# tests/integration/lib.sh - helpers for integration tests that start real processes.
# Every process a test starts is recorded by PID and killed on EXIT (also on failure);
# ports come from a per-test base so tests can run in parallel.
set -euo pipefail
: "${CAIRN_BIN:?CAIRN_BIN must point at the build directory}"
: "${CAIRN_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CAIRN_SRC
export ETCDCTL_API=3
T_PIDS=()
T_TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/cairn-it.XXXXXX")
T_FAILS=0
T_PASSES=0

t_cleanup() {
  local p
  for p in "${T_PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true
  done
  sleep 0.3
  for p in "${T_PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    kill -KILL "$p" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $T_TMP"; else rm -rf "$T_TMP"; fi
}
trap t_cleanup EXIT

# A free TCP port on 127.0.0.1 (asks the kernel).
t_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }

t_ok()   { T_PASSES=$((T_PASSES+1)); echo "ok - $*"; }
t_fail() { T_FAILS=$((T_FAILS+1)); echo "FAIL - $*" >&2; }
# t_eq NAME EXPECTED ACTUAL
t_eq() { if [ "$2" == "$3" ]; then t_ok "$1"; else t_fail "$1: expected [$2] got [$3]"; fi; }
t_contains() { if grep -qF -- "$2" <<<"$3"; then t_ok "$1"; else t_fail "$1: [$2] not in [$3]"; fi; }
t_done() {
  # Daemons run under AddressSanitizer in CI: any report in any log is a failure.
  local f
  for f in "$T_TMP"/*.log; do
    [ -f "$f" ] || continue
    if grep -q "Sanitizer" "$f"; then
      grep -A 30 "Sanitizer" "$f" | head -60 >&2
      t_fail "sanitizer report in $(basename "$f")"
    fi
  done
  echo "$T_PASSES passed, $T_FAILS failed"
  [ "$T_FAILS" -eq 0 ]
}

# t_node_flags NAME DATA CPORT PPORT -> etcd-style flags for a one-member cluster
t_node_flags() {
  echo --name "$1" --data-dir "$2" \
    --listen-client-urls "http://127.0.0.1:$3" --advertise-client-urls "http://127.0.0.1:$3" \
    --listen-peer-urls "http://127.0.0.1:$4" --initial-advertise-peer-urls "http://127.0.0.1:$4" \
    --initial-cluster "$1=http://127.0.0.1:$4"
}

# t_start_daemon LOG BIN ARGS... -> starts one daemon in the background, records its PID in T_LAST_PID
t_start_daemon() {
  local log=$1; shift
  "$@" >>"$log" 2>&1 &
  T_LAST_PID=$!
  T_PIDS+=("$T_LAST_PID")
}

# t_start_cairn NAME CPORT PPORT -> starts stored, raftd, gatewayd; sets C_STORED C_RAFTD C_GW and C_LOG
t_start_cairn() {
  local name=$1 cport=$2 pport=$3
  C_DATA=${C_DATA:-$T_TMP/$name}
  C_LOG=$T_TMP/$name.log
  local flags; flags=$(t_node_flags "$name" "$C_DATA" "$cport" "$pport")
  # shellcheck disable=SC2086
  t_start_daemon "$C_LOG" "$CAIRN_BIN/stored" $flags; C_STORED=$T_LAST_PID
  # shellcheck disable=SC2086
  t_start_daemon "$C_LOG" "$CAIRN_BIN/raftd" $flags; C_RAFTD=$T_LAST_PID
  # shellcheck disable=SC2086
  t_start_daemon "$C_LOG" "$CAIRN_BIN/gatewayd" $flags --gateway-id gw1; C_GW=$T_LAST_PID
  C_EP=127.0.0.1:$cport
}

t_start_etcd() {
  local name=$1 cport=$2 pport=$3
  E_LOG=$T_TMP/etcd-$name.log
  t_start_daemon "$E_LOG" etcd $(t_node_flags "$name" "$T_TMP/etcd-$name" "$cport" "$pport")
  E_PID=$T_LAST_PID
  E_EP=127.0.0.1:$cport
}

# t_wait_healthy ENDPOINT [SECONDS]: a successful linearizable read (etcdctl endpoint health)
# (extra etcdctl flags, e.g. --cacert=..., may follow)
t_wait_healthy() {
  local ep=$1 secs=${2:-20}
  shift; shift || true
  local deadline=$(( $(date +%s) + secs ))
  # bounded by the clock, not by attempts: an attempt against a member that accepts
  # connections but never answers takes its whole command timeout
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if timeout 3 etcdctl --endpoints="$ep" --command-timeout=1s "$@" endpoint health >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "endpoint $ep not healthy after ${secs}s" >&2
  [ -n "${C_LOG:-}" ] && tail -n 30 "$C_LOG" >&2
  return 1
}

# t_stop PID...: SIGTERM and wait (a clean stop, so LeakSanitizer gets to run)
t_stop() { local p; for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done; for p in "$@"; do wait "$p" 2>/dev/null || true; done; }

t_kill9() { local p; for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }

# t_start_cluster N [TOKEN]: an N-member cluster on loopback, each member's three daemons
# started directly (T_EXTRA_FLAGS, if set, is added to every member's flags). Sets arrays (index 0..N-1): C_EPS (client host:port), C_NAMES, C_FLAGS,
# C_STOREDS, C_RAFTDS, C_GWS, C_LOGS. t_restart_proc KIND I restarts one process of member I.
t_start_cluster() {
  local n=$1 token=${2:-cairn-test} i cluster=""
  C_EPS=(); C_NAMES=(); C_FLAGS=(); C_STOREDS=(); C_RAFTDS=(); C_GWS=(); C_LOGS=(); C_PPORTS=()
  for ((i = 0; i < n; i++)); do
    C_NAMES[i]=m$i; C_PPORTS[i]=$(t_port); C_EPS[i]=127.0.0.1:$(t_port)
    cluster+="${cluster:+,}m$i=http://127.0.0.1:${C_PPORTS[i]}"
  done
  for ((i = 0; i < n; i++)); do
    C_FLAGS[i]="--name m$i --data-dir $T_TMP/m$i --listen-client-urls http://${C_EPS[i]} --advertise-client-urls http://${C_EPS[i]} --listen-peer-urls http://127.0.0.1:${C_PPORTS[i]} --initial-advertise-peer-urls http://127.0.0.1:${C_PPORTS[i]} --initial-cluster $cluster --initial-cluster-token $token ${T_EXTRA_FLAGS:-}"
    C_LOGS[i]=$T_TMP/m$i.log
    t_restart_proc stored "$i"; t_restart_proc raftd "$i"; t_restart_proc gatewayd "$i"
  done
}

t_restart_proc() {
  local kind=$1 i=$2
  case $kind in
    stored) t_start_daemon "${C_LOGS[i]}" "$CAIRN_BIN/stored" ${C_FLAGS[i]}; C_STOREDS[i]=$T_LAST_PID ;;
    raftd) t_start_daemon "${C_LOGS[i]}" "$CAIRN_BIN/raftd" ${C_FLAGS[i]}; C_RAFTDS[i]=$T_LAST_PID ;;
    gatewayd) t_start_daemon "${C_LOGS[i]}" "$CAIRN_BIN/gatewayd" ${C_FLAGS[i]} --gateway-id gw1; C_GWS[i]=$T_LAST_PID ;;
  esac
}

# t_leader_index: index (0..N-1) of the member that reports itself leader, or -1
t_leader_index() {
  local i
  for i in "${!C_EPS[@]}"; do
    if etcdctl --endpoints="${C_EPS[i]}" --command-timeout=1s endpoint status -w json 2>/dev/null |
      python3 -c 'import json,sys;d=json.load(sys.stdin)[0]["Status"];sys.exit(0 if d["leader"]==d["header"]["member_id"] else 1)' 2>/dev/null; then
      echo "$i"; return 0
    fi
  done
  echo -1
}
