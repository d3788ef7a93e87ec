#!/usr/bin/env bash
# bench/compare.sh — etcd 3.4 and Cairn side by side, same loads, one run.
#
# BENCH_NODES=1 (default): a single-node etcd and a single-node Cairn (cairnctl run) on
# loopback. BENCH_NODES=3: a 3-member etcd cluster and a 3-member Cairn cluster (each Cairn
# member is one `cairnctl run`: stored + raftd + gatewayd). Both systems run with fdatasync on
# and their data dirs on the same disk; the script waits until every member is healthy and a
# leader exists, then drives both with the same loads, one after the other (etcd first, then
# Cairn, load by load):
#   put-1         Put, 1 client            (latency)                 [default with 1 node]
#   put-16/64/256 Put, 16/64/256 clients   (throughput), to the leader with 3 nodes
#   put-f-16/...  Put, same, sent to a follower (which forwards)      [default with 3 nodes]
#   range-64      linearizable Range, 64 clients, on a populated key space (all members)
#   range-s-64    serializable Range, 64 clients, same key space (all members)
# and prints a table (ops/s of each, ratio cairn/etcd, p50/p99 of each) and the resident memory
# of all etcd processes against the sum of all of Cairn's daemons.
# BENCH_MEMORY=1 (default with 3 nodes): before the loads, on the fresh clusters, loads
# BENCH_MEM_KEYS keys (100000 by default) of BENCH_VAL_SIZE bytes, waits until every member
# has applied them, and reports the RSS of each cluster (per member and per Cairn daemon).
# See bench/README.md.
#
# Environment:
#   BUILD=dir            build directory (default <repo>/build-release; configured and built if missing)
#   BENCH_NODES=1|3      members per system
#   BENCH_SECONDS=10     seconds per load and server
#   BENCH_KEYS=10000     key space (populated before the range loads; puts draw from it too)
#   BENCH_KEY_SIZE=32 BENCH_VAL_SIZE=256
#   BENCH_CONNS=n        TCP connections per load (default: 1, 4, 8, 16 for 1, 16, 64, 256 clients;
#                        rounded up to a multiple of the member count for loads spread over members)
#   BENCH_LOADS="..."    subset of: put-1 put-16 put-64 put-256 put-f-N range-64 range-s-64
#   BENCH_MEMORY=0|1     the "cluster holding BENCH_MEM_KEYS keys" memory figure
#   BENCH_MEM_KEYS=100000
#   BENCH_TMPDIR=dir     where the data dirs go (default /var/tmp; must not be tmpfs)
#   BENCH_NO_BUILD=1     do not (re)build, use what is in $BUILD
#   BENCH_SKIP_CAIRN=1   etcd alone
#   CAIRN_GATEWAYS=1     gatewayd processes per Cairn member
#   ETCD=etcd            etcd binary
# Only processes this script started are stopped (by PID, on EXIT, also after a failure), and its
# temp dir is removed.
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$SRC/build-release}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
NODES=${BENCH_NODES:-1}
SECS=${BENCH_SECONDS:-10}
KEYS=${BENCH_KEYS:-10000}
KEY_SIZE=${BENCH_KEY_SIZE:-32}
VAL_SIZE=${BENCH_VAL_SIZE:-256}
if [ "$NODES" = 1 ]; then
    LOADS=${BENCH_LOADS:-"put-1 put-16 put-64 put-256 range-64 range-s-64"}
    MEMORY=${BENCH_MEMORY:-0}
else
    LOADS=${BENCH_LOADS:-"put-16 put-64 put-256 put-f-16 put-f-64 put-f-256 range-64 range-s-64"}
    MEMORY=${BENCH_MEMORY:-1}
fi
MEM_KEYS=${BENCH_MEM_KEYS:-100000}
ETCD=${ETCD:-etcd}
GATEWAYS=${CAIRN_GATEWAYS:-1}
PREFIX=/bench/
MEM_PREFIX=/mem/
export ETCDCTL_API=3

BENCH_NAME=compare.sh
. "$SRC/bench/lib.sh"

case $NODES in 1 | 3 | 5) ;; *) die "BENCH_NODES must be 1, 3 or 5" ;; esac

# ---- processes we started, and cleanup -------------------------------------------------------
TMP=""
ETCD_PIDS=()    # one etcd per member
CAIRN_SUPS=()   # one `cairnctl run` per member
CAIRN_PIDS=""   # cairnctl's descendants, refreshed while they run (a daemon may be restarted)

wait_gone() { # pid seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do alive "$1" || return 0; sleep 0.1; done
    return 1
}

all_alive() { # pids... -> every one alive (and at least one given)
    local p
    [ $# -gt 0 ] || return 1
    for p in "$@"; do alive "$p" || return 1; done
}

stop_etcd() {
    local p
    [ ${#ETCD_PIDS[@]} -gt 0 ] || return 0
    for p in "${ETCD_PIDS[@]}"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
    for p in "${ETCD_PIDS[@]}"; do
        wait_gone "$p" 10 || kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    ETCD_PIDS=()
}

refresh_cairn_pids() {
    local s
    for s in "${CAIRN_SUPS[@]}"; do
        alive "$s" && CAIRN_PIDS="$CAIRN_PIDS $(descendants "$s" | tr '\n' ' ')"
    done
}

stop_cairn() {
    local p
    [ ${#CAIRN_SUPS[@]} -gt 0 ] || return 0
    refresh_cairn_pids
    # cairnctl stops its daemons in order on SIGTERM (up to 5 s each)
    for p in "${CAIRN_SUPS[@]}"; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
    for p in "${CAIRN_SUPS[@]}"; do
        wait_gone "$p" 20 || kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for p in $CAIRN_PIDS; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
    CAIRN_SUPS=()
    CAIRN_PIDS=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_cairn
    stop_etcd
    bench_remove_tmp "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'say "compare.sh: interrupted"; exit 130' INT TERM

# ---- build ------------------------------------------------------------------------------------
BENCH=$BUILD/cairn_bench
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    : >"$BUILD/.compare-build.log" 2>/dev/null || true
    bench_build "$BUILD/.compare-build.log" cairn_bench || die "cannot build cairn_bench"
    if [ -z "${BENCH_SKIP_CAIRN:-}" ] && ! bench_build "$BUILD/.compare-build.log" cairnctl raftd stored gatewayd; then
        say "compare.sh: WARNING: building Cairn's daemons failed (see $BUILD/.compare-build.log);"
        say "            using whatever binaries $BUILD already has"
    fi
fi
[ -x "$BENCH" ] || die "$BENCH not found (build it: cmake --build $BUILD --target cairn_bench)"
command -v "$ETCD" >/dev/null || die "etcd not found (Debian: apt-get install etcd-server)"
command -v curl >/dev/null || die "curl not found"
if [ "$NODES" -gt 1 ] || [ "$MEMORY" = 1 ]; then
    command -v etcdctl >/dev/null || die "etcdctl not found (Debian: apt-get install etcd-client)"
fi
[ "$NODES" -gt 1 ] && { command -v python3 >/dev/null || die "python3 not found (parses endpoint status)"; }

# ---- temp dir on a real disk ----------------------------------------------------------------------
BASE=${BENCH_TMPDIR:-/var/tmp}
TMP=$(mktemp -d "$BASE/cairn-bench.XXXXXX") || die "cannot create a temp dir under $BASE"
FSTYPE=$(stat -f -c %T "$TMP" 2>/dev/null || echo unknown)
case $FSTYPE in tmpfs | ramfs) say "compare.sh: WARNING: $TMP is on $FSTYPE: fdatasync is free there, figures are not disk figures" ;; esac

# ---- free ports -------------------------------------------------------------------------------------
port_busy() {
    if command -v ss >/dev/null; then
        ss -Htan 2>/dev/null | awk '{print $4}' | grep -qE "[:.]$1\$"
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
# Ports are drawn below the kernel's ephemeral range, so no outgoing connection can hold one.
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=32768
TAKEN=" "
free_port() { # sets PORT (not called in a subshell, so TAKEN accumulates)
    local p tries
    for ((tries = 0; tries < 200; tries++)); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        case $TAKEN in *" $p "*) continue ;; esac
        port_busy "$p" && continue
        TAKEN="$TAKEN$p "
        PORT=$p
        return 0
    done
    die "no free port found"
}

# Per system and member: client port, peer port, name; the cluster string.
declare -A CPORT PPORT
NAMES=()
for ((i = 0; i < NODES; i++)); do
    if [ "$NODES" = 1 ]; then NAMES[i]=default; else NAMES[i]=m$i; fi
    for t in etcd cairn; do
        free_port; CPORT[$t,$i]=$PORT
        free_port; PPORT[$t,$i]=$PORT
    done
done
initial_cluster() { # target
    local i s=""
    for ((i = 0; i < NODES; i++)); do s+="${s:+,}${NAMES[i]}=http://127.0.0.1:${PPORT[$1,$i]}"; done
    echo "$s"
}
endpoints() { # target -> host:port,host:port,...
    local i s=""
    for ((i = 0; i < NODES; i++)); do s+="${s:+,}127.0.0.1:${CPORT[$1,$i]}"; done
    echo "$s"
}
member_flags() { # target i -> the etcd-style flags of member i
    local c=${CPORT[$1,$2]} p=${PPORT[$1,$2]}
    printf '%s\n' --name "${NAMES[$2]}" --data-dir "$TMP/$1/${NAMES[$2]}" \
        --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
        --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
        --initial-cluster "$(initial_cluster "$1")"
    [ "$NODES" = 1 ] || printf '%s\n' --initial-cluster-token "bench-$1-$$"
}

# ---- start and wait --------------------------------------------------------------------------------
healthy() { # port
    curl -s -m 2 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"health" *: *"true"' && return 0
    etcdctl --endpoints "127.0.0.1:$1" --dial-timeout 1s --command-timeout 2s \
        endpoint health >/dev/null 2>&1
}

# endpoint status of every member, one line each: "index leader-flag raft-applied-index"
# (leader-flag 1 when that member says it is the leader). Members that do not answer are absent.
member_status() { # target
    etcdctl --endpoints "$(endpoints "$1")" --dial-timeout 1s --command-timeout 2s \
        endpoint status -w json 2>/dev/null |
        python3 -c '
import json, sys
eps = sys.argv[1].split(",")
try:
    rows = json.load(sys.stdin)
except Exception:
    sys.exit(0)
for r in rows:
    ep = r.get("Endpoint", "").replace("http://", "")
    s = r.get("Status") or {}
    h = s.get("header") or {}
    if ep not in eps:
        continue
    lead = 1 if s.get("leader") and s.get("leader") == h.get("member_id") else 0
    print(eps.index(ep), lead, s.get("raftAppliedIndex", s.get("raftIndex", 0)))
' "$(endpoints "$1")"
}

# index of the member that says it is the leader (empty if none/several)
leader_of() { # target
    [ "$NODES" = 1 ] && { echo 0; return; }
    member_status "$1" | awk '$2 == 1 { n++; l = $1 } END { if (n == 1) print l }'
}

# Every member alive and healthy (a linearizable read succeeds on each), one leader.
wait_cluster() { # target seconds pids...
    local t=$1 deadline=$((SECONDS + $2)) i ok
    shift 2
    while ((SECONDS < deadline)); do
        all_alive "$@" || return 1
        ok=1
        for ((i = 0; i < NODES; i++)); do healthy "${CPORT[$t,$i]}" || { ok=""; break; }; done
        if [ -n "$ok" ] && [ -n "$(leader_of "$t")" ]; then sleep 0.3; all_alive "$@"; return; fi
        sleep 0.25
    done
    return 1
}

# A handful of puts through our own client on every member: the gRPC path works, grpc-status 0.
smoke() { # target
    local out i
    for ((i = 0; i < NODES; i++)); do
        out=$("$BENCH" --endpoint "127.0.0.1:${CPORT[$1,$i]}" --op put --total 20 --clients 2 \
            --timeout 10 --prefix /bench-smoke/ 2>&1) || { say "  member ${NAMES[i]}: $out"; return 1; }
    done
}

if [ "$NODES" = 1 ]; then SHAPE="single node each"; else SHAPE="$NODES-member clusters"; fi
say "compare.sh: data in $TMP ($FSTYPE); $SHAPE; etcd on $(endpoints etcd), Cairn on $(endpoints cairn); ${SECS}s per load"
mkdir -p "$TMP/etcd" "$TMP/cairn"
for ((i = 0; i < NODES; i++)); do
    mapfile -t flags < <(member_flags etcd "$i")
    "$ETCD" "${flags[@]}" >"$TMP/etcd-${NAMES[i]}.log" 2>&1 &
    ETCD_PIDS[i]=$!
done
if ! wait_cluster etcd 30 "${ETCD_PIDS[@]}" || ! smoke etcd; then
    for ((i = 0; i < NODES; i++)); do say "--- etcd ${NAMES[i]}"; tail -8 "$TMP/etcd-${NAMES[i]}.log" >&2; done
    die "etcd did not become healthy on $(endpoints etcd)"
fi
ETCD_VERSION=$("$ETCD" --version 2>/dev/null | awk '/etcd Version/ {print $3}')

CAIRN_UP=""
CAIRN_WHY=""
if [ -n "${BENCH_SKIP_CAIRN:-}" ]; then
    CAIRN_WHY="skipped (BENCH_SKIP_CAIRN)"
else
    missing=""
    for b in cairnctl stored raftd gatewayd; do [ -x "$BUILD/$b" ] || missing="$missing $b"; done
    if [ -n "$missing" ]; then
        CAIRN_WHY="not built: missing$missing in $BUILD"
    else
        for ((i = 0; i < NODES; i++)); do
            mapfile -t flags < <(member_flags cairn "$i")
            CAIRN_BIN=$BUILD "$BUILD/cairnctl" run --gateways "$GATEWAYS" "${flags[@]}" \
                >"$TMP/cairn-${NAMES[i]}.log" 2>&1 &
            CAIRN_SUPS[i]=$!
        done
        if ! wait_cluster cairn 30 "${CAIRN_SUPS[@]}"; then
            CAIRN_WHY="did not become healthy (every member, one leader) on $(endpoints cairn) within 30 s"
        elif ! smoke cairn; then
            CAIRN_WHY="healthy, but Put over gRPC fails"
        else
            CAIRN_UP=1
            refresh_cairn_pids
        fi
        if [ -z "$CAIRN_UP" ]; then
            say "compare.sh: Cairn $CAIRN_WHY; last lines of its logs:"
            for ((i = 0; i < NODES; i++)); do
                say "--- cairn ${NAMES[i]}"
                tail -10 "$TMP/cairn-${NAMES[i]}.log" | sed 's/^/    /' >&2
            done
            stop_cairn
        fi
    fi
fi
[ -n "$CAIRN_UP" ] || say "compare.sh: Cairn $CAIRN_WHY — measuring etcd alone"

# ---- helpers for the loads -------------------------------------------------------------------------
declare -A R   # R[target,load,field]
TARGETS="etcd"
[ -n "$CAIRN_UP" ] && TARGETS="etcd cairn"

target_alive() { # target
    if [ "$1" = etcd ]; then all_alive "${ETCD_PIDS[@]}"; else all_alive "${CAIRN_SUPS[@]}"; fi
}

conns_for() {
    if [ -n "${BENCH_CONNS:-}" ]; then echo "$BENCH_CONNS"; return; fi
    local c=$(($1 / 8))            # 1 -> 1, 16 -> 4, 64 -> 8, 256 -> 16
    ((c < 1)) && c=1
    ((c > 16)) && c=16
    (($1 >= 16 && c < 4)) && c=4
    echo "$c"
}

# run target load endpoints op clients [extra args...]; fills R[target,load,*]
run() {
    local t=$1 load=$2 eps=$3 op=$4 clients=$5
    shift 5
    local out err rc kv
    if ! target_alive "$t"; then
        R[$t,$load,status]="down"
        say "  [$t] $load: a member is no longer running"
        return
    fi
    out=$("$BENCH" --endpoint "$eps" --op "$op" --clients "$clients" \
        --conns "$(conns_for "$clients")" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" \
        --key-space "$KEYS" --prefix "$PREFIX" "$@" 2>"$TMP/bench.err")
    rc=$?
    err=$(cat "$TMP/bench.err")
    say "  [$t] $load: ${out:-no result}${err:+ ($err)}"
    R[$t,$load,status]=ok
    [ "$rc" -eq 0 ] || R[$t,$load,status]="rc=$rc"
    [ -n "$err" ] && R[$t,$load,first_error]=$err
    for kv in $out; do R[$t,$load,${kv%%=*}]=${kv#*=}; done
}

load_args() { # load -> "op clients where"   (where: leader | follower | all)
    case $1 in
        put-f-*) echo "put ${1#put-f-} follower" ;;
        put-*) echo "put ${1#put-} leader" ;;
        range-s-*) echo "range-serializable ${1#range-s-} all" ;;
        range-*) echo "range ${1#range-} all" ;;
        *) die "unknown load $1 (BENCH_LOADS)" ;;
    esac
}
for l in $LOADS; do
    load_args "$l" >/dev/null
    case $l in put-f-*) [ "$NODES" -gt 1 ] || die "$l needs BENCH_NODES > 1" ;; esac
done

declare -A LEADER  # LEADER[target] = index of the leader when first seen
LEADER_MOVES=""
# endpoints for a load: "leader" (the current leader's), "follower" (the member after it), "all".
# Sets EPS (empty when there is no leader); not called in a subshell: it tracks leader changes.
eps_for() { # target where
    local t=$1 where=$2 l
    EPS=""
    [ "$where" = all ] && { EPS=$(endpoints "$t"); return; }
    l=$(leader_of "$t")
    [ -n "$l" ] || return 0
    if [ -n "${LEADER[$t]:-}" ] && [ "${LEADER[$t]}" != "$l" ]; then
        LEADER_MOVES="$LEADER_MOVES $t:${NAMES[${LEADER[$t]}]}->${NAMES[l]}"
        say "  [$t] leader moved from ${NAMES[${LEADER[$t]}]} to ${NAMES[l]}"
    fi
    LEADER[$t]=$l
    [ "$where" = follower ] && l=$(((l + 1) % NODES))
    EPS="127.0.0.1:${CPORT[$t,$l]}"
}

# Per-process resident memory of a target, one line each: "member comm rss_kb"
rss_kb() { ps -o rss= -p "$1" 2>/dev/null | tr -d ' '; }
rss_lines() { # target
    local i p r
    for ((i = 0; i < NODES; i++)); do
        if [ "$1" = etcd ]; then
            r=$(rss_kb "${ETCD_PIDS[i]}")
            [ -n "$r" ] && echo "${NAMES[i]} etcd $r"
        else
            alive "${CAIRN_SUPS[i]}" || continue
            for p in $(descendants "${CAIRN_SUPS[i]}"); do
                r=$(rss_kb "$p")
                [ -n "$r" ] && echo "${NAMES[i]} $(ps -o comm= -p "$p") $r"
            done
        fi
    done
}
rss_total() { awk '{ s += $3 } END { print s + 0 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

# ---- memory: a cluster holding MEM_KEYS keys ------------------------------------------------------
declare -A MEM   # MEM[target,total|detail|load|applied|disk]
# The marker is put after every key was acknowledged; once a member serves it from its own
# state (serializable read), it has applied everything before it.
wait_applied() { # target marker-value seconds -> 0 when every member serves the marker
    local t=$1 v=$2 deadline=$((SECONDS + $3)) i got
    while ((SECONDS < deadline)); do
        got=0
        for ((i = 0; i < NODES; i++)); do
            [ "$(etcdctl --endpoints "127.0.0.1:${CPORT[$t,$i]}" --dial-timeout 1s --command-timeout 2s \
                get --consistency=s --print-value-only /mem-marker 2>/dev/null)" = "$v" ] && got=$((got + 1))
        done
        ((got == NODES)) && return 0
        sleep 0.25
    done
    return 1
}

memory_phase() { # target
    local t=$1 ep out err rc t0 lines
    eps_for "$t" leader
    ep=$EPS
    [ -n "$ep" ] || { MEM[$t,load]="no leader"; return; }
    say "compare.sh: [$t] loading $MEM_KEYS keys of $VAL_SIZE B through the leader for the memory figure"
    t0=$SECONDS
    out=$("$BENCH" --endpoint "$ep" --op put --clients 256 --conns 16 --sequential --total "$MEM_KEYS" \
        --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --key-space "$MEM_KEYS" --prefix "$MEM_PREFIX" \
        --timeout 240 2>"$TMP/bench.err")
    rc=$?
    err=$(cat "$TMP/bench.err")
    say "  [$t] mem-load: ${out:-no result}${err:+ ($err)}"
    MEM[$t,load]="${out:-no result}"
    [ "$rc" -eq 0 ] || { MEM[$t,load]="rc=$rc ${out:-} $err"; }
    etcdctl --endpoints "$ep" --command-timeout 10s put /mem-marker "$t-$$" >/dev/null 2>&1 ||
        say "  [$t] WARNING: the marker put failed"
    if ! wait_applied "$t" "$t-$$" 60; then
        MEM[$t,applied]="NOT every member applied the keys within 60 s"
        say "  [$t] WARNING: ${MEM[$t,applied]}"
    else
        MEM[$t,applied]="all members applied them $((SECONDS - t0)) s after the load started"
    fi
    [ "$NODES" -gt 1 ] && MEM[$t,index]=$(member_status "$t" | sort -n | awk '{ printf "%s%s", sep, $3; sep = "/" }')
    sleep 2
    lines=$(rss_lines "$t")
    MEM[$t,total]=$(rss_total <<<"$lines")
    MEM[$t,lines]=$lines
    MEM[$t,disk]=$(du -sk "$TMP/$t" 2>/dev/null | awk '{ print $1 }')
}

START=$(date +%s)
if [ "$MEMORY" = 1 ]; then
    for t in $TARGETS; do memory_phase "$t"; done
fi

# ---- loads ----------------------------------------------------------------------------------------
say "compare.sh: populating $KEYS keys of ${VAL_SIZE} B on each server"
for t in $TARGETS; do
    eps_for "$t" leader
    run "$t" populate "$EPS" put 64 --sequential --total "$KEYS" --timeout 120
    [ "${R[$t,populate,status]}" = ok ] || say "compare.sh: WARNING: populating $t failed; range figures will be off"
done

for l in $LOADS; do
    read -r op clients where <<<"$(load_args "$l")"
    for t in $TARGETS; do
        eps_for "$t" "$where"
        eps=$EPS
        if [ -z "$eps" ]; then
            R[$t,$l,status]="noleader"
            say "  [$t] $l: no leader"
            continue
        fi
        extra=()
        # spread loads: as many connections on every member
        [ "$where" = all ] && [ "$NODES" -gt 1 ] && [ -z "${BENCH_CONNS:-}" ] &&
            extra=(--conns $((($(conns_for "$clients") + NODES - 1) / NODES * NODES)))
        run "$t" "$l" "$eps" "$op" "$clients" --duration "$SECS" --timeout $((SECS + 30)) "${extra[@]}"
        if [ "$op" != put ] && [ -n "${R[$t,$l,found]:-}" ] && [ "${R[$t,$l,found]}" != "${R[$t,$l,ok]}" ]; then
            say "  [$t] $l: WARNING: only ${R[$t,$l,found]} of ${R[$t,$l,ok]} reads found their key"
        fi
        sleep 1
    done
done
ELAPSED=$(($(date +%s) - START))

# ---- memory after the loads, while both still run -----------------------------------------------
declare -A AFTER
for t in $TARGETS; do
    target_alive "$t" || continue
    AFTER[$t,lines]=$(rss_lines "$t")
    AFTER[$t,total]=$(rss_total <<<"${AFTER[$t,lines]}")
done
SUP_RSS=0
if [ -n "$CAIRN_UP" ]; then
    for s in "${CAIRN_SUPS[@]}"; do r=$(rss_kb "$s"); SUP_RSS=$((SUP_RSS + ${r:-0})); done
fi
# cairnctl logs "<daemon> (pid N) exited with C; restarting": a daemon died during the run
RESTARTS=""
if [ -n "$CAIRN_UP" ]; then
    for ((i = 0; i < NODES; i++)); do
        n=$(grep -c "exited with" "$TMP/cairn-${NAMES[i]}.log" 2>/dev/null)
        [ "${n:-0}" -gt 0 ] && RESTARTS="$RESTARTS ${NAMES[i]}: $(grep "exited with" "$TMP/cairn-${NAMES[i]}.log" | head -3 | tr '\n' ';')"
    done
fi

# ---- report ----------------------------------------------------------------------------------------
fmt_ops() { [ -n "${1:-}" ] && printf '%.0f' "$1" || printf -- '-'; }
cell() { # target load -> "ops" "p50/p99" "status"
    local t=$1 l=$2
    local st=${R[$t,$l,status]:-}
    if [ -z "$st" ]; then printf -- '-\t-\t'; return; fi
    printf '%s\t%s/%s\t' "$(fmt_ops "${R[$t,$l,ops_per_sec]:-}")" "${R[$t,$l,p50_ms]:--}" "${R[$t,$l,p99_ms]:--}"
}
describe() {
    local to=""
    [ "$NODES" -gt 1 ] && to=" > leader"
    case $1 in
        put-1) echo "Put, 1 client$to" ;;
        put-f-*) echo "Put, ${1#put-f-} clients > follower" ;;
        put-*) echo "Put, ${1#put-} clients$to" ;;
        range-s-*) echo "Range serializable, ${1#range-s-} cl" ;;
        range-*) echo "Range linearizable, ${1#range-} cl" ;;
    esac
}
by_comm() { # rss lines -> "stored=X raftd=Y gatewayd=Z" (MiB, summed over members)
    awk '{ s[$2] += $3; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
         END { for (i = 1; i <= n; i++) printf "%s%s=%.0f", (i > 1 ? " " : ""), order[i], s[order[i]] / 1024 }'
}
by_member() { # rss lines -> "m0 X, m1 Y, ..." (MiB)
    awk '{ s[$1] += $3; if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } }
         END { for (i = 1; i <= n; i++) printf "%s%s %.0f", (i > 1 ? ", " : ""), order[i], s[order[i]] / 1024 }'
}
per_process() { # rss lines -> "m0: stored=X raftd=Y gatewayd=Z; m1: ..."
    awk '{ if ($1 != cur) { printf "%s%s:", (cur == "" ? "" : "; "), $1; cur = $1 } printf " %s=%.0f", $2, $3 / 1024 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'; }

echo
echo "Cairn vs etcd ${ETCD_VERSION:-?} — $SHAPE, loopback, fdatasync on, $FSTYPE under $BASE"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, cairn $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$SRC" diff --quiet HEAD 2>/dev/null || echo '+dirty'), ${SECS}s per load, keys ${KEY_SIZE} B, values ${VAL_SIZE} B, key space $KEYS"
[ "$NODES" -gt 1 ] && echo "Put loads go to the leader's endpoint or to a follower's (> follower); Range loads are spread over all $NODES members"
[ -n "$CAIRN_UP" ] || echo "Cairn: $CAIRN_WHY"
echo
printf '%-40s %11s %11s %10s %17s %17s  %s\n' load "etcd ops/s" "cairn ops/s" cairn/etcd "etcd p50/p99 ms" "cairn p50/p99 ms" notes
for l in $LOADS; do
    IFS=$'\t' read -r eo el _ <<<"$(cell etcd "$l")"
    IFS=$'\t' read -r co cl _ <<<"$(cell cairn "$l")"
    r=-
    [ "$eo" != - ] && [ "$co" != - ] && r=$(ratio "$co" "$eo")
    notes=""
    for t in $TARGETS; do
        st=${R[$t,$l,status]:-}
        e=${R[$t,$l,errors]:-0}
        [ "$st" = ok ] && [ "$e" = 0 ] && continue
        [ "$e" = 0 ] && e=""
        notes="$notes $t:${st}${e:+,errors=$e}"
    done
    printf '%-40s %11s %11s %10s %17s %17s  %s\n' "$(describe "$l") [$l]" "$eo" "$co" "$r" "$el" "$cl" "$notes"
done
echo
if [ "$MEMORY" = 1 ]; then
    echo "memory, $NODES member(s) holding $MEM_KEYS keys of $VAL_SIZE B (fresh clusters, before the loads; RSS once every member applied them):"
    for t in $TARGETS; do
        [ -n "${MEM[$t,total]:-}" ] || { echo "  $t: ${MEM[$t,load]:-not measured}"; continue; }
        printf '  %-5s %4s MiB total  (per member: %s MiB)' "$t" "$(mib "${MEM[$t,total]}")" "$(by_member <<<"${MEM[$t,lines]}")"
        [ "$t" = cairn ] && printf '  cairn/etcd %s' "$(ratio "${MEM[cairn,total]}" "${MEM[etcd,total]:-0}")"
        echo
        [ "$t" = cairn ] && printf '        by daemon, all members: %s MiB\n        per process: %s MiB\n' \
            "$(by_comm <<<"${MEM[$t,lines]}")" "$(per_process <<<"${MEM[$t,lines]}")"
        printf '        data dirs %s MiB on disk; %s%s\n' "$(mib "${MEM[$t,disk]:-0}")" "${MEM[$t,applied]:-}" \
            "${MEM[$t,index]:+ (applied index per member ${MEM[$t,index]})}"
        case ${MEM[$t,load]} in op=*errors=0*) ;; *) echo "        load: ${MEM[$t,load]}" ;; esac
    done
    echo
fi
if [ -n "${AFTER[etcd,total]:-}" ]; then
    printf 'memory (RSS after the loads): etcd %s MiB' "$(mib "${AFTER[etcd,total]}")"
    [ "$NODES" -gt 1 ] && printf ' (%s)' "$(by_member <<<"${AFTER[etcd,lines]}")"
    if [ -n "${AFTER[cairn,total]:-}" ] && [ "${AFTER[cairn,total]}" -gt 0 ]; then
        printf ', cairn %s MiB (%s; cairnctl supervisor%s %s MiB not counted), cairn/etcd %s' \
            "$(mib "${AFTER[cairn,total]}")" "$(by_comm <<<"${AFTER[cairn,lines]}")" \
            "$([ "$NODES" -gt 1 ] && echo s)" "$(mib "$SUP_RSS")" "$(ratio "${AFTER[cairn,total]}" "${AFTER[etcd,total]}")"
    fi
    echo
fi
[ -n "$LEADER_MOVES" ] && echo "leader changes during the run:$LEADER_MOVES"
[ -n "$RESTARTS" ] && echo "Cairn daemons that died and were restarted by cairnctl:$RESTARTS"
for l in populate $LOADS; do
    for t in $TARGETS; do
        [ -n "${R[$t,$l,first_error]:-}" ] && echo "$t $l: ${R[$t,$l,first_error]}"
    done
done
echo "loads took ${ELAPSED}s"

FAILED=0
for l in $LOADS; do
    for t in $TARGETS; do
        [ "${R[$t,$l,status]:-}" = ok ] || FAILED=1
    done
done
[ -n "$RESTARTS" ] && FAILED=1
exit "$FAILED"
