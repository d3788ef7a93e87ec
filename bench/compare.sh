#!/usr/bin/env bash
# bench/compare.sh — etcd 3.4 and Cairn side by side, single node each, same loads, one run.
#
# Starts a single-node etcd and a single-node Cairn (cairnctl run) on loopback, both with
# fdatasync on and their data dirs on the same disk, waits until each is healthy, then drives
# both with the same loads, one after the other (etcd first, then Cairn, load by load):
#   put-1         Put, 1 client            (latency)
#   put-16/64/256 Put, 16/64/256 clients   (throughput)
#   range-64      linearizable Range, 64 clients, on a populated key space
#   range-s-64    serializable Range, 64 clients, same key space
# and prints a table (ops/s of each, ratio cairn/etcd, p50/p99 of each) and the resident memory
# of etcd against the sum of Cairn's processes. See bench/README.md.
#
# Environment:
#   BUILD=dir            build directory (default <repo>/build-release; configured and built if missing)
#   BENCH_SECONDS=10     seconds per load and server
#   BENCH_KEYS=10000     key space (populated before the range loads; puts draw from it too)
#   BENCH_KEY_SIZE=32 BENCH_VAL_SIZE=256
#   BENCH_CONNS=n        TCP connections per load (default: 1, 4, 8, 16 for 1, 16, 64, 256 clients)
#   BENCH_LOADS="..."    subset of: put-1 put-16 put-64 put-256 range-64 range-s-64
#   BENCH_TMPDIR=dir     where the data dirs go (default /var/tmp; must not be tmpfs)
#   BENCH_NO_BUILD=1     do not (re)build, use what is in $BUILD
#   BENCH_SKIP_CAIRN=1   etcd alone
#   CAIRN_GATEWAYS=1     gatewayd processes for Cairn
#   ETCD=etcd            etcd binary
# Only processes this script started are stopped (by PID, on EXIT, also after a failure), and its
# temp dir is removed.
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$SRC/build-release}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
SECS=${BENCH_SECONDS:-10}
KEYS=${BENCH_KEYS:-10000}
KEY_SIZE=${BENCH_KEY_SIZE:-32}
VAL_SIZE=${BENCH_VAL_SIZE:-256}
LOADS=${BENCH_LOADS:-"put-1 put-16 put-64 put-256 range-64 range-s-64"}
ETCD=${ETCD:-etcd}
GATEWAYS=${CAIRN_GATEWAYS:-1}
PREFIX=/bench/

say() { printf '%s\n' "$*" >&2; }
die() { say "compare.sh: $*"; exit 1; }

# ---- processes we started, and cleanup -------------------------------------------------------
TMP=""
ETCD_PID=""
CAIRN_PID=""
CAIRN_PIDS=""   # cairnctl's descendants, refreshed while it runs (it may restart a daemon)

descendants() { # pid -> all descendant pids
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END { n = split(kids[root], q, " "); i = 1
              while (i <= n) { p = q[i++]; print p; m = split(kids[p], more, " ")
                               for (j = 1; j <= m; j++) q[++n] = more[j] } }'
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# A PID is ours only while its command line still mentions our temp dir (guards against reuse).
ours() { alive "$1" && ps -o args= -p "$1" 2>/dev/null | grep -qF -- "$TMP"; }

wait_gone() { # pid seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do alive "$1" || return 0; sleep 0.1; done
    return 1
}

stop_etcd() {
    [ -n "$ETCD_PID" ] || return 0
    if alive "$ETCD_PID"; then
        kill -TERM "$ETCD_PID" 2>/dev/null
        wait_gone "$ETCD_PID" 10 || kill -KILL "$ETCD_PID" 2>/dev/null
    fi
    wait "$ETCD_PID" 2>/dev/null
    ETCD_PID=""
}

stop_cairn() {
    [ -n "$CAIRN_PID" ] || return 0
    local p
    if alive "$CAIRN_PID"; then
        CAIRN_PIDS="$CAIRN_PIDS $(descendants "$CAIRN_PID")"
        # cairnctl stops its daemons in order on SIGTERM (up to 5 s each)
        kill -TERM "$CAIRN_PID" 2>/dev/null
        wait_gone "$CAIRN_PID" 20 || kill -KILL "$CAIRN_PID" 2>/dev/null
    fi
    wait "$CAIRN_PID" 2>/dev/null
    for p in $CAIRN_PIDS; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
    CAIRN_PID=""
    CAIRN_PIDS=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_cairn
    stop_etcd
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$rc" -ne 0 ] && [ -n "${KEEP_LOGS_ON_FAILURE:-}" ]; then
            say "compare.sh: logs kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "compare.sh: interrupted"; exit 130' INT TERM

# ---- build ------------------------------------------------------------------------------------
BENCH=$BUILD/cairn_bench
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        say "compare.sh: configuring $BUILD (Release)"
        cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCAIRN_TESTS=OFF >/dev/null ||
            die "cmake configure failed"
    fi
    cmake --build "$BUILD" --target cairn_bench -j2 >"$BUILD/.compare-build.log" 2>&1 ||
        { tail -20 "$BUILD/.compare-build.log" >&2; die "cannot build cairn_bench"; }
    if [ -z "${BENCH_SKIP_CAIRN:-}" ] &&
        ! cmake --build "$BUILD" --target cairnctl raftd stored gatewayd -j2 >>"$BUILD/.compare-build.log" 2>&1; then
        say "compare.sh: WARNING: building Cairn's daemons failed (see $BUILD/.compare-build.log);"
        say "            using whatever binaries $BUILD already has"
    fi
fi
[ -x "$BENCH" ] || die "$BENCH not found (build it: cmake --build $BUILD --target cairn_bench)"
command -v "$ETCD" >/dev/null || die "etcd not found (Debian: apt-get install etcd-server)"
command -v curl >/dev/null || die "curl not found"

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
free_port() {
    local p tries
    for ((tries = 0; tries < 200; tries++)); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        case $TAKEN in *" $p "*) continue ;; esac
        port_busy "$p" && continue
        TAKEN="$TAKEN$p "
        echo "$p"
        return 0
    done
    die "no free port found"
}
EC=$(free_port) && TAKEN="$TAKEN$EC " && EP=$(free_port) && TAKEN="$TAKEN$EP " &&
    CC=$(free_port) && TAKEN="$TAKEN$CC " && CP=$(free_port) || die "no free ports"

# ---- start and wait --------------------------------------------------------------------------------
healthy() { # port
    curl -s -m 2 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"health" *: *"true"' && return 0
    ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$1" --dial-timeout 1s --command-timeout 2s \
        endpoint health >/dev/null 2>&1
}

wait_healthy() { # pid port seconds
    local deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        alive "$1" || return 1
        healthy "$2" && { sleep 0.3; alive "$1"; return; }
        sleep 0.25
    done
    return 1
}

# A handful of puts through our own client: the gRPC path works and grpc-status is 0.
smoke() { # port
    local out
    out=$("$BENCH" --endpoint "127.0.0.1:$1" --op put --total 20 --clients 2 --timeout 10 \
        --prefix /bench-smoke/ 2>&1) && return 0
    say "$out"
    return 1
}

say "compare.sh: data in $TMP ($FSTYPE); etcd on :$EC, Cairn on :$CC; ${SECS}s per load"
mkdir -p "$TMP/etcd" "$TMP/cairn"
"$ETCD" --name default --data-dir "$TMP/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$EC" --advertise-client-urls "http://127.0.0.1:$EC" \
    --listen-peer-urls "http://127.0.0.1:$EP" --initial-advertise-peer-urls "http://127.0.0.1:$EP" \
    --initial-cluster "default=http://127.0.0.1:$EP" >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
if ! wait_healthy "$ETCD_PID" "$EC" 30 || ! smoke "$EC"; then
    tail -15 "$TMP/etcd.log" >&2
    die "etcd did not become healthy on :$EC"
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
        CAIRN_BIN=$BUILD "$BUILD/cairnctl" run --gateways "$GATEWAYS" --name default \
            --data-dir "$TMP/cairn/data" \
            --listen-client-urls "http://127.0.0.1:$CC" --advertise-client-urls "http://127.0.0.1:$CC" \
            --listen-peer-urls "http://127.0.0.1:$CP" --initial-advertise-peer-urls "http://127.0.0.1:$CP" \
            --initial-cluster "default=http://127.0.0.1:$CP" >"$TMP/cairn.log" 2>&1 &
        CAIRN_PID=$!
        if ! wait_healthy "$CAIRN_PID" "$CC" 30; then
            CAIRN_WHY="did not become healthy on :$CC within 30 s"
        elif ! smoke "$CC"; then
            CAIRN_WHY="healthy, but Put over gRPC fails"
        else
            CAIRN_UP=1
            CAIRN_PIDS=$(descendants "$CAIRN_PID")
        fi
        if [ -z "$CAIRN_UP" ]; then
            say "compare.sh: Cairn $CAIRN_WHY; last lines of its log:"
            tail -15 "$TMP/cairn.log" | sed 's/^/    /' >&2
            stop_cairn
        fi
    fi
fi
[ -n "$CAIRN_UP" ] || say "compare.sh: Cairn $CAIRN_WHY — measuring etcd alone"

# ---- loads ----------------------------------------------------------------------------------------
declare -A R   # R[target,load,field]
TARGETS="etcd"
[ -n "$CAIRN_UP" ] && TARGETS="etcd cairn"
port_of() { [ "$1" = etcd ] && echo "$EC" || echo "$CC"; }

conns_for() {
    if [ -n "${BENCH_CONNS:-}" ]; then echo "$BENCH_CONNS"; return; fi
    local c=$(($1 / 8))            # 1 -> 1, 16 -> 4, 64 -> 8, 256 -> 16
    ((c < 1)) && c=1
    ((c > 16)) && c=16
    (($1 >= 16 && c < 4)) && c=4
    echo "$c"
}

# run target load op clients [extra args...]; fills R[target,load,*]
run() {
    local t=$1 load=$2 op=$3 clients=$4
    shift 4
    local port out err rc kv
    port=$(port_of "$t")
    if [ "$t" = cairn ] && ! alive "$CAIRN_PID"; then
        R[$t,$load,status]="down"
        say "  [$t] $load: Cairn is no longer running"
        return
    fi
    out=$("$BENCH" --endpoint "127.0.0.1:$port" --op "$op" --clients "$clients" \
        --conns "$(conns_for "$clients")" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" \
        --key-space "$KEYS" --prefix "$PREFIX" "$@" 2>"$TMP/bench.err")
    rc=$?
    err=$(cat "$TMP/bench.err")
    say "  [$t] $load: ${out:-no result}${err:+ ($err)}"
    R[$t,$load,status]=ok
    [ "$rc" -eq 0 ] || R[$t,$load,status]="rc=$rc"
    for kv in $out; do R[$t,$load,${kv%%=*}]=${kv#*=}; done
}

load_args() { # load -> "op clients"
    case $1 in
        put-*) echo "put ${1#put-}" ;;
        range-s-*) echo "range-serializable ${1#range-s-}" ;;
        range-*) echo "range ${1#range-}" ;;
        *) die "unknown load $1 (BENCH_LOADS)" ;;
    esac
}
for l in $LOADS; do load_args "$l" >/dev/null; done

START=$(date +%s)
say "compare.sh: populating $KEYS keys of ${VAL_SIZE} B on each server"
for t in $TARGETS; do
    run "$t" populate put 64 --sequential --total "$KEYS" --timeout 120
    [ "${R[$t,populate,status]}" = ok ] || say "compare.sh: WARNING: populating $t failed; range figures will be off"
done

for l in $LOADS; do
    read -r op clients <<<"$(load_args "$l")"
    for t in $TARGETS; do
        run "$t" "$l" "$op" "$clients" --duration "$SECS" --timeout $((SECS + 30))
        if [ "$op" != put ] && [ -n "${R[$t,$l,found]:-}" ] && [ "${R[$t,$l,found]}" != "${R[$t,$l,ok]}" ]; then
            say "  [$t] $l: WARNING: only ${R[$t,$l,found]} of ${R[$t,$l,ok]} reads found their key"
        fi
        sleep 1
    done
done
ELAPSED=$(($(date +%s) - START))

# ---- memory, while both still run -----------------------------------------------------------------
rss_kb() { ps -o rss= -p "$1" 2>/dev/null | tr -d ' '; }
ETCD_RSS=$(rss_kb "$ETCD_PID")
CAIRN_RSS=0
CAIRN_MEM_DETAIL=""
SUP_RSS=""
if [ -n "$CAIRN_UP" ] && alive "$CAIRN_PID"; then
    SUP_RSS=$(rss_kb "$CAIRN_PID")
    for p in $(descendants "$CAIRN_PID"); do
        r=$(rss_kb "$p")
        [ -n "$r" ] || continue
        CAIRN_RSS=$((CAIRN_RSS + r))
        CAIRN_MEM_DETAIL="$CAIRN_MEM_DETAIL $(ps -o comm= -p "$p")=$((r / 1024))MiB"
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
    case $1 in
        put-1) echo "Put, 1 client" ;;
        put-*) echo "Put, ${1#put-} clients" ;;
        range-s-*) echo "Range serializable, ${1#range-s-} cl" ;;
        range-*) echo "Range linearizable, ${1#range-} cl" ;;
    esac
}

echo
echo "Cairn vs etcd ${ETCD_VERSION:-?} — single node each, loopback, fdatasync on, $FSTYPE under $BASE"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, cairn $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$SRC" diff --quiet HEAD 2>/dev/null || echo '+dirty'), ${SECS}s per load, keys ${KEY_SIZE} B, values ${VAL_SIZE} B, key space $KEYS"
[ -n "$CAIRN_UP" ] || echo "Cairn: $CAIRN_WHY"
echo
printf '%-40s %11s %11s %10s %17s %17s  %s\n' load "etcd ops/s" "cairn ops/s" cairn/etcd "etcd p50/p99 ms" "cairn p50/p99 ms" notes
for l in $LOADS; do
    IFS=$'\t' read -r eo el _ <<<"$(cell etcd "$l")"
    IFS=$'\t' read -r co cl _ <<<"$(cell cairn "$l")"
    ratio=-
    if [ "$eo" != - ] && [ "$co" != - ] && [ "$eo" != 0 ]; then
        ratio=$(awk -v a="$co" -v b="$eo" 'BEGIN { printf "%.2fx", a / b }')
    fi
    notes=""
    for t in $TARGETS; do
        st=${R[$t,$l,status]:-}
        e=${R[$t,$l,errors]:-0}
        [ "$st" = ok ] && [ "$e" = 0 ] && continue
        [ "$e" = 0 ] && e=""
        notes="$notes $t:${st}${e:+,errors=$e}"
    done
    printf '%-40s %11s %11s %10s %17s %17s  %s\n' "$(describe "$l") [$l]" "$eo" "$co" "$ratio" "$el" "$cl" "$notes"
done
echo
if [ -n "$ETCD_RSS" ]; then
    printf 'memory (RSS after the loads): etcd %d MiB' $((ETCD_RSS / 1024))
    if [ -n "$CAIRN_UP" ] && [ "$CAIRN_RSS" -gt 0 ]; then
        printf ', cairn %d MiB (%s; cairnctl supervisor %s MiB not counted), cairn/etcd %s' \
            $((CAIRN_RSS / 1024)) "${CAIRN_MEM_DETAIL# }" $((${SUP_RSS:-0} / 1024)) \
            "$(awk -v a="$CAIRN_RSS" -v b="$ETCD_RSS" 'BEGIN { printf "%.2fx", a / b }')"
    fi
    echo
fi
echo "loads took ${ELAPSED}s"

FAILED=0
for l in $LOADS; do
    for t in $TARGETS; do
        [ "${R[$t,$l,status]:-}" = ok ] || FAILED=1
    done
done
exit "$FAILED"
