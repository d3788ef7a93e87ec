#!/usr/bin/env bash
# bench/maint.sh — the operator's maintenance work on a big store, etcd 3.4 and Cairn side by
# side, one fresh single node per system:
#
#   1. populate: MAINT_GIB GiB of values (MAINT_VAL-byte values under sequential keys, written by
#      cairn_bench --op put --sequential), then the same keys written once more and compacted at
#      the last revision, so the first round is garbage that Defragment can reclaim;
#   2. snapshot: `etcdctl snapshot save` of the whole store, timed, with the node's CPU time
#      (all its processes) and the snapshot's size;
#   3. put load without maintenance: cairn_bench --op put (256-byte values, MAINT_CLIENTS
#      clients) for MAINT_SECONDS: the baseline ops/s, p50, p99, max;
#   4. put load with a Defragment: the same load, `etcdctl defrag` started 2 s in; ops/s,
#      p50/p99/max of the Puts and the defrag's own duration; the db size before and after.
#
# etcd's defrag rewrites its bbolt file holding the write lock (writes wait for it); Cairn's
# compacts LevelDB on a thread while writes go on - the p99 columns show the difference.
# Then the Cairn/etcd ratios: snapshot seconds, CPU per snapshot, Put p99 during defrag.
#
# Environment:
#   BUILD=dir                 build directory (default <repo>/build-release)
#   MAINT_SYSTEMS="etcd cairn" MAINT_GIB=1 MAINT_VAL=65536 MAINT_CLIENTS=8 MAINT_SECONDS=15
#   MAINT_SNAPSHOT_COUNT=N    --snapshot-count for both (default: each system's own)
#   BENCH_TMPDIR=dir          where the data dirs go (default /var/tmp; needs ~4 x MAINT_GIB free)
#   BENCH_NO_BUILD=1          use what is in $BUILD;  ETCD=etcd: the etcd binary
# Only processes this script started are stopped (by PID, also on failure or Ctrl-C).
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$SRC/build-release}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
SYSTEMS=${MAINT_SYSTEMS:-"etcd cairn"}
GIB=${MAINT_GIB:-1}
VAL=${MAINT_VAL:-65536}
CLIENTS=${MAINT_CLIENTS:-8}
SECS=${MAINT_SECONDS:-15}
ETCD=${ETCD:-etcd}
CLK_TCK=$(getconf CLK_TCK)
export ETCDCTL_API=3

# the store is written twice over: past etcd's default 2 GiB quota at 1 GiB (both systems get it)
NODE_EXTRA_FLAGS="--quota-backend-bytes=$(awk -v g="$GIB" 'BEGIN { printf "%.0f", (g * 4 + 1) * 1073741824 }')"
# both systems take --snapshot-count; a small one (MAINT_SNAPSHOT_COUNT=1000) puts Cairn's
# checkpoint inside the defrag for sure (bench/README: the checkpoint that waited for it)
[ -n "${MAINT_SNAPSHOT_COUNT:-}" ] && NODE_EXTRA_FLAGS+=" --snapshot-count=$MAINT_SNAPSHOT_COUNT"
BENCH_NAME=maint.sh
. "$SRC/bench/lib.sh"
. "$SRC/bench/node_lib.sh"
command -v etcdctl >/dev/null || die "etcdctl not found (Debian: apt-get install etcd-client)"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
now_s() { date +%s.%N; }
declare -A R
FAILED=0
KEYS=$(awk -v g="$GIB" -v v="$VAL" 'BEGIN { printf "%d", g * 1073741824 / v }')

db_size() { etcdctl --endpoints="127.0.0.1:$CPORT" endpoint status -w json 2>/dev/null |
    python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["Status"]["dbSize"])' 2>/dev/null || echo 0; }
rev() { etcdctl --endpoints="127.0.0.1:$CPORT" get nothing -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])'; }

run_system() {
    local dir=$TMP/$SYS out
    mkdir -p "$dir"
    start_node "$dir" || { R[$SYS,err]=$WHY; return 1; }
    local ep=127.0.0.1:$CPORT
    say "$SYS: writing $KEYS values of $VAL bytes, twice"
    out=$("$BENCH" --endpoint "$ep" --op put --sequential --total "$KEYS" --key-space "$KEYS" --val-size "$VAL" \
        --clients 8 --conns 2 --prefix /maint/ --timeout 3600 2>&1) || { R[$SYS,err]="populate: $out"; return 1; }
    out=$("$BENCH" --endpoint "$ep" --op put --sequential --total "$KEYS" --key-space "$KEYS" --val-size "$VAL" \
        --clients 8 --conns 2 --prefix /maint/ --timeout 3600 2>&1) || { R[$SYS,err]="populate: $out"; return 1; }
    etcdctl --endpoints="$ep" compact "$(rev)" --physical >/dev/null 2>&1 || { R[$SYS,err]="compact failed"; return 1; }
    sleep 2
    R[$SYS,db0]=$(db_size)

    say "$SYS: snapshot save"
    local c0 t0 t1 c1
    c0=$(cpu_ticks); t0=$(now_s)
    if ! etcdctl --endpoints="$ep" --command-timeout=1h snapshot save "$dir/snap.db" >"$dir/snap.out" 2>&1; then
        R[$SYS,err]="snapshot save: $(tail -1 "$dir/snap.out")"; return 1
    fi
    t1=$(now_s); c1=$(cpu_ticks)
    R[$SYS,snap_s]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    R[$SYS,snap_cpu]=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
    R[$SYS,snap_mb]=$(awk -v s="$(stat -c %s "$dir/snap.db")" 'BEGIN { printf "%.0f", s / 1048576 }')
    rm -f "$dir/snap.db"

    say "$SYS: put load, then put load with a defrag"
    R[$SYS,base]=$("$BENCH" --endpoint "$ep" --op put --val-size 256 --clients "$CLIENTS" --conns 2 \
        --duration "$SECS" --prefix /load/ 2>&1 | grep '^op=' | tail -1)
    "$BENCH" --endpoint "$ep" --op put --val-size 256 --clients "$CLIENTS" --conns 2 --duration "$SECS" \
        --prefix /load/ >"$dir/defrag-load.out" 2>&1 &
    BENCH_PID=$!
    sleep 2
    t0=$(now_s)
    etcdctl --endpoints="$ep" --command-timeout=1h defrag >"$dir/defrag.out" 2>&1 || R[$SYS,defrag_err]=1
    t1=$(now_s)
    wait "$BENCH_PID"; BENCH_PID=""
    R[$SYS,defrag]=$(grep '^op=' "$dir/defrag-load.out" | tail -1)
    [ -n "${R[$SYS,defrag]}" ] || say "$SYS: the load during the defrag printed no result: $(tail -2 "$dir/defrag-load.out")"
    R[$SYS,defrag_s]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    R[$SYS,db1]=$(db_size)
    stop_node
    rm -rf "$dir/data"
    return 0
}

for SYS in $SYSTEMS; do
    run_system || { FAILED=1; say "$SYS: ${R[$SYS,err]:-failed}"; stop_node; }
done

mb() { awk -v b="${1:-0}" 'BEGIN { printf "%.0f", b / 1048576 }'; }
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), cairn $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?'); ${GIB} GiB of ${VAL}-byte values written twice and compacted; Put load: 256 B values, $CLIENTS clients, ${SECS} s"
printf '%-6s %8s %9s %9s | %9s %8s %8s | %9s %6s %8s %8s %8s %8s %12s\n' system "snap s" "snap CPU" "snap MiB" \
    "base op/s" "p50 ms" "p99 ms" "dfrg op/s" errors "p50 ms" "p99 ms" "max ms" "defrag s" "db MiB b>a"
for SYS in $SYSTEMS; do
    if [ -n "${R[$SYS,err]:-}" ]; then printf '%-6s error: %s\n' "$SYS" "${R[$SYS,err]}"; continue; fi
    b=${R[$SYS,base]} d=${R[$SYS,defrag]}
    printf '%-6s %8s %9s %9s | %9.0f %8s %8s | %9.0f %6s %8s %8s %8s %8s %12s\n' "$SYS" "${R[$SYS,snap_s]}" \
        "${R[$SYS,snap_cpu]}" "${R[$SYS,snap_mb]}" "$(field ops_per_sec "$b")" "$(field p50_ms "$b")" \
        "$(field p99_ms "$b")" "$(field ops_per_sec "$d")" "$(field errors "$d")" "$(field p50_ms "$d")" "$(field p99_ms "$d")" \
        "$(field max_ms "$d")" "${R[$SYS,defrag_s]}${R[$SYS,defrag_err]:+ (failed)}" \
        "$(mb "${R[$SYS,db0]}")>$(mb "${R[$SYS,db1]}")"
done
if [ -n "${R[cairn,snap_s]:-}" ] && [ -n "${R[etcd,snap_s]:-}" ]; then
    ratio() { awk -v c="$1" -v e="$2" 'BEGIN { if (e > 0) printf "%.2fx", c / e; else print "-" }'; }
    echo "Cairn/etcd: snapshot time $(ratio "${R[cairn,snap_s]}" "${R[etcd,snap_s]}"), snapshot CPU" \
        "$(ratio "${R[cairn,snap_cpu]}" "${R[etcd,snap_cpu]}"), Put p99 during defrag" \
        "$(ratio "$(field p99_ms "${R[cairn,defrag]}")" "$(field p99_ms "${R[etcd,defrag]}")"), Put ops/s during defrag" \
        "$(ratio "$(field ops_per_sec "${R[cairn,defrag]}")" "$(field ops_per_sec "${R[etcd,defrag]}")")"
fi
exit "$FAILED"
