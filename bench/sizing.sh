#!/usr/bin/env bash
# bench/sizing.sh - which of a node's processes a load costs, to size them (README "Sizing").
#
# For etcd and for Cairn with 1 and with 2 gateways (CAIRN_GATEWAYS of `cairnctl run`), one
# fresh single node each, the same loads through cairn_bench on loopback:
#   put        64 clients over 8 connections, 256-byte values
#   range      linearizable Range of one key, 64 clients over 8 connections
#   range-s    serializable Range of one key (no raftd round), 64 clients over 8 connections
#   watch      SIZING_WATCHERS watchers of one prefix over 8 connections x 4 streams, Puts at
#              SIZING_WATCH_EVENTS events/s offered (Puts/s = that / watchers)
# and reports ops/s, p50/p99, and the CPU time per operation of the node - for Cairn also split
# by process (stored, raftd, all gateways together) - from /proc/<pid>/stat before and after
# each load (utime+stime; the client's own CPU is not counted). Puts count as operations for
# put, Ranges for range, delivered events for watch.
#
# Knobs: BUILD (default <repo>/build-release, built if missing), SIZING_SECONDS (8),
# SIZING_WATCHERS (2000), SIZING_WATCH_EVENTS (20000), SIZING_SYSTEMS ("etcd cairn1 cairn2"),
# BENCH_NO_BUILD=1, ETCD (etcd binary). On a 2-CPU machine the client shares the CPUs: read the
# CPU columns first, ops/s second. Only processes this script started are stopped, by PID.
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$SRC/build-release}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
SECS=${SIZING_SECONDS:-8}
WATCHERS=${SIZING_WATCHERS:-2000}
WATCH_EVENTS=${SIZING_WATCH_EVENTS:-20000}
RUNS=${SIZING_SYSTEMS:-"etcd cairn1 cairn2"}
ETCD=${ETCD:-etcd}
CLK_TCK=$(getconf CLK_TCK)
SYSTEMS="etcd cairn"

BENCH_NAME=sizing.sh
. "$SRC/bench/lib.sh"
for r in $RUNS; do case $r in etcd | cairn[1-9]) ;; *) die "unknown run $r (SIZING_SYSTEMS: etcd cairn1 cairn2 ...)" ;; esac; done
. "$SRC/bench/node_lib.sh"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

# ticks of the node's processes by role: "etcd N" or "stored N", "raftd N", "gatewayd N" (summed)
ticks_by_role() {
    local p comm t
    for p in $(node_pids); do
        comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        echo "$comm ${t:-0}"
    done | awk '{ s[$1] += $2 } END { for (k in s) print k, s[k] }'
}
role_ticks() { awk -v r="$1" '$1 == r { print $2 }' <<<"$2"; }

declare -A R # R[run,load,figure]
LOADS="put range range-s watch"
FAILED=0

us_per_op() { # ticks ops
    awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { if (n > 0) printf "%.1f", t / hz / n * 1e6; else printf "-" }'
}

measure() { # run load out-file -> runs the load, fills R
    local run=$1 load=$2 out=$3 before after ops rc
    before=$(ticks_by_role)
    case $load in
        put) "$BENCH" --endpoint "127.0.0.1:$CPORT" --op put --clients 64 --conns 8 --duration "$SECS" \
                --key-space 10000 --prefix /sz/ >"$out" 2>"$out.err" ;;
        range) "$BENCH" --endpoint "127.0.0.1:$CPORT" --op range --clients 64 --conns 8 --duration "$SECS" \
                --key-space 1 --prefix /sz/ >"$out" 2>"$out.err" ;;
        range-s) "$BENCH" --endpoint "127.0.0.1:$CPORT" --op range-serializable --clients 64 --conns 8 \
                --duration "$SECS" --key-space 1 --prefix /sz/ >"$out" 2>"$out.err" ;;
        watch)
            local rate=$((WATCH_EVENTS / WATCHERS)) total ready="$out.ready"
            ((rate < 1)) && rate=1
            total=$((rate * SECS))
            ((total < 10)) && total=10
            "$BENCH" --endpoint "127.0.0.1:$CPORT" --op watch --watchers "$WATCHERS" --conns 8 --watch-streams 4 \
                --total "$total" --rate "$rate" --val-size 64 --prefix /szw/ --ready-file "$ready" \
                --timeout 120 >"$out" 2>"$out.err" &
            BENCH_PID=$!
            while alive "$BENCH_PID" && [ ! -e "$ready" ]; do sleep 0.05; done
            sleep 1
            before=$(ticks_by_role)
            rm -f "$ready"
            wait "$BENCH_PID"
            BENCH_PID="" ;;
    esac
    rc=$?
    after=$(ticks_by_role)
    local o; o=$(cat "$out")
    say "  [$run] $load: ${o:-no result} $(head -c 200 "$out.err")"
    [ "$rc" = 0 ] || { R[$run,$load,error]="rc=$rc"; FAILED=1; }
    if [ "$load" = watch ]; then ops=$(field events "$o"); else ops=$(field ok "$o"); fi
    R[$run,$load,ops_s]=$(field ops_per_sec "$o")
    [ "$load" = watch ] && R[$run,$load,ops_s]=$(awk -v e="${ops:-0}" -v s="$(field seconds "$o")" 'BEGIN { if (s > 0) printf "%.0f", e / s }')
    R[$run,$load,p50]=$(field p50_ms "$o")
    R[$run,$load,p99]=$(field p99_ms "$o")
    local role total=0 b a
    for role in etcd stored raftd gatewayd; do
        b=$(role_ticks "$role" "$before"); a=$(role_ticks "$role" "$after")
        [ -n "$a" ] || continue
        R[$run,$load,$role]=$(us_per_op $((a - ${b:-0})) "${ops:-0}")
        total=$((total + a - ${b:-0}))
    done
    R[$run,$load,cpu]=$(us_per_op "$total" "${ops:-0}")
}

say "sizing.sh: runs: $RUNS; ${SECS}s per load; data in $TMP"
for run in $RUNS; do
    if [ "$run" = etcd ]; then SYS=etcd; else SYS=cairn; export CAIRN_GATEWAYS=${run#cairn}; fi
    dir="$TMP/$run"; mkdir -p "$dir"
    if ! start_node "$dir"; then
        say "  [$run] $WHY"; FAILED=1; stop_node; continue
    fi
    "$BENCH" --endpoint "127.0.0.1:$CPORT" --op put --total 10000 --clients 64 --conns 8 --sequential \
        --key-space 10000 --prefix /sz/ >/dev/null 2>&1 || say "  [$run] populating failed"
    for load in $LOADS; do measure "$run" "$load" "$dir/$load.out"; done
    stop_node
done
unset CAIRN_GATEWAYS

ETCD_VERSION=$("$ETCD" --version 2>/dev/null | awk '/etcd Version/ {print $3}')
echo
echo "Sizing: etcd ${ETCD_VERSION:-?} and Cairn (cairnN = N gateways), one fresh single node each, loopback, $(nproc) CPUs (client on the same machine)"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), cairn $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?'); ${SECS}s per load; watch: $WATCHERS watchers, $WATCH_EVENTS events/s offered"
echo "CPU: microseconds of CPU per operation (per delivered event for watch), all processes of the node and by process"
echo
printf '%-7s %-8s %9s %8s %8s %9s %8s %8s %9s\n' run load ops/s p50_ms p99_ms "CPU us" stored raftd gateways
d() { [ -n "${1:-}" ] && printf '%s' "$1" || printf -- '-'; }
for run in $RUNS; do
    for load in $LOADS; do
        printf '%-7s %-8s %9s %8s %8s %9s %8s %8s %9s%s\n' "$run" "$load" "$(d "${R[$run,$load,ops_s]:-}")" \
            "$(d "${R[$run,$load,p50]:-}")" "$(d "${R[$run,$load,p99]:-}")" "$(d "${R[$run,$load,cpu]:-}")" \
            "$(d "${R[$run,$load,stored]:-}")" "$(d "${R[$run,$load,raftd]:-}")" "$(d "${R[$run,$load,gatewayd]:-}")" \
            "${R[$run,$load,error]:+  ERROR ${R[$run,$load,error]}}"
    done
done
exit "$FAILED"
