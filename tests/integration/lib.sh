# tests/integration/lib.sh - helpers for integration tests that start real processes.
# Every process a test starts is recorded by PID and killed on EXIT (also on failure);
# ports come from t_port, which never hands one port to two tests running at once.
set -euo pipefail
: "${CAIRN_BIN:?CAIRN_BIN must point at the build directory}"
: "${CAIRN_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CAIRN_SRC
export ETCDCTL_API=3
T_PIDS=()
T_TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/cairn-it.XXXXXX")
T_FAILS=0
T_PASSES=0

# Every process a test starts carries this in its environment. The cleanup signals a recorded
# PID only while it is still this test's (its child, or a process carrying the marker): pid_max
# is 32768 here and the suite starts tens of thousands of processes (an etcdctl per request),
# so the PID of a process a test stopped early is soon given to another, and a cleanup that
# killed every recorded PID could kill a process of the test running beside it (ctest -j2;
# a clean-clone CI run lost a restarted member's gateway that way, most likely).
export CAIRN_TEST_OWNER="$$.${EPOCHREALTIME:-$RANDOM}"
# t_ours PID: true while PID is a process this test started
t_ours() {
  local st rest
  [ -n "$1" ] && read -r st 2>/dev/null <"/proc/$1/stat" || return 1
  rest=${st##*) } # after "(comm) ": state ppid ...
  rest=${rest#* }
  [ "${rest%% *}" = "$$" ] && return 0
  grep -qzxF "CAIRN_TEST_OWNER=$CAIRN_TEST_OWNER" "/proc/$1/environ" 2>/dev/null
}
# t_signal_ours SIGNAL PID...: signals those of PID... that are still this test's
t_signal_ours() {
  local sig=$1 p; shift
  for p in "$@"; do t_ours "$p" && kill "-$sig" "$p" 2>/dev/null; done
  return 0
}

t_cleanup() {
  t_signal_ours TERM "${T_PIDS[@]:-}"
  sleep 0.3
  t_signal_ours KILL "${T_PIDS[@]:-}"
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $T_TMP"; else rm -rf "$T_TMP"; fi
}
trap t_cleanup EXIT

# t_port: a free TCP port on 127.0.0.1 that no other test running now can be given.
# Asking the kernel for an ephemeral port and closing it raced between parallel tests (ctest -j):
# two tests could be handed the same port, or the kernel could reuse it as the local port of an
# outgoing connection before the daemon bound it. Instead, ports come from below the kernel's
# ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), starting at a base derived from the
# test's name, and every port handed out is recorded, under flock, in a registry in /tmp
# (CAIRN_PORT_REGISTRY) with the PID (and start time) of the test that holds it: a port held by a
# live test, or that cannot be bound now, is skipped; entries of finished tests are dropped.
T_PORT_REG=${CAIRN_PORT_REGISTRY:-/tmp/cairn-test-ports}
t_port() {
  python3 - "$T_PORT_REG" "$$" "$(basename "$0")" <<'PY'
import fcntl, os, socket, sys, zlib
reg, owner, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def starttime(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None

def bindable(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()

def kernel_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

try:
    eph = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    eph = 32768
lo, hi = 10000, min(eph, 32768)
if hi - lo < 2000:
    lo, hi = 40000, 60000  # odd ephemeral range: at least keep the registry's guarantee
block = 100
nblocks = (hi - lo) // block
base = lo + (zlib.crc32(name.encode()) % nblocks) * block
me = (owner, starttime(owner))
try:
    lk = open(reg + ".lock", "a+")
    fcntl.flock(lk, fcntl.LOCK_EX)
except OSError:
    print(kernel_port())  # no shared registry here (permissions): the old way
    sys.exit(0)
held, alive = set(), {}
lines = []
try:
    for line in open(reg):
        f = line.split()
        if len(f) != 3:
            continue
        port, pid, st = int(f[0]), int(f[1]), f[2]
        if pid not in alive:
            alive[pid] = starttime(pid)
        if alive[pid] == st:  # the test that holds it is still running
            held.add(port)
            lines.append(line)
except OSError:
    pass
port = None
for k in range(nblocks * block):
    p = lo + (base - lo + k) % (nblocks * block)
    if p not in held and bindable(p):
        port = p
        break
if port is None:
    port = kernel_port()
lines.append("%d %d %s\n" % (port, me[0], me[1]))
tmp = "%s.%d" % (reg, os.getpid())
with open(tmp, "w") as f:
    f.writelines(lines)
os.replace(tmp, reg)
print(port)
PY
}

# t_wait_until SECONDS CMD [ARGS...]: runs CMD every 0.1 s until it succeeds (returns 0) or
# SECONDS (may be fractional) have passed since the call (returns 1). Use it instead of a fixed
# sleep that guesses how long an internal timer takes.
t_wait_until() {
  local secs=$1; shift
  local end
  end=$(( $(date +%s%N) / 1000000 + $(awk -v s="$secs" 'BEGIN { printf "%d", s * 1000 }') ))
  while :; do
    if "$@"; then return 0; fi
    [ "$(( $(date +%s%N) / 1000000 ))" -lt "$end" ] || return 1
    sleep 0.1
  done
}

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

# t_grpc_call URL PATH BODYFILE -> "status=<grpc-status> message=<grpc-message>": one gRPC call
# over h2c with nghttp (BODYFILE holds the framed message), for tests that send bytes etcdctl
# would never send.
t_grpc_call() {
  nghttp -v -H 'content-type: application/grpc' -H 'te: trailers' -d "$3" "$1$2" 2>&1 |
    python3 -c '
import sys, re, urllib.parse
t = sys.stdin.read()
st = re.findall(r"grpc-status: (\d+)", t)
msg = re.findall(r"grpc-message: (.*)", t)
print("status=%s message=%s" % (st[-1] if st else "none", urllib.parse.unquote(msg[-1].strip()) if msg else ""))' || true
}

# t_put_writer ENDPOINTS PREFIX DIR: one etcdctl put at a time (PREFIX<i> = v<i>, at most 5000)
# until DIR/stop exists; acknowledged "key value" lines go to DIR/acked, failures to DIR/errors.
# A put that failed with Unavailable (the connection went away under it) is tried once more and
# counted in DIR/retried, as a client library would. Run it in the background; the rolling
# restart and gateway scaling tests require DIR/errors to stay empty.
t_put_writer() {
  local eps=$1 prefix=$2 dir=$3 i=0 out
  : >"$dir/acked"; : >"$dir/errors"; : >"$dir/retried"
  while [ ! -e "$dir/stop" ] && [ "$i" -lt 5000 ]; do
    out=$(etcdctl --endpoints="$eps" --command-timeout=5s put "$prefix$i" "v$i" 2>&1) || true
    if [ "$out" != OK ] && grep -q 'code = Unavailable' <<<"$out"; then
      echo "$prefix$i: $(tail -1 <<<"$out")" >>"$dir/retried"
      out=$(etcdctl --endpoints="$eps" --command-timeout=5s put "$prefix$i" "v$i" 2>&1) || true
    fi
    if [ "$out" = OK ]; then echo "$prefix$i v$i" >>"$dir/acked"; else echo "$prefix$i: $(tail -1 <<<"$out")" >>"$dir/errors"; fi
    i=$((i + 1))
  done
}
