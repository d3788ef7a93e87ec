#!/usr/bin/env bash
# bench/watch.sh — watch delivery latency, server memory per watcher and server CPU per event,
# etcd 3.4 and Cairn, one fresh single node per run.
#
# For each system of WATCH_SYSTEMS and each watcher count of WATCH_SCALE, the script starts a
# fresh node (etcd; Cairn the way compare.sh does: `cairnctl run`, i.e. stored + raftd +
# gatewayd), waits for /health and 20 Puts through cairn_bench, then runs
#   cairn_bench --op watch --watchers N --conns C --watch-streams S --total P --rate R --ready-file F
# (see the header of bench/cairn_bench.c) and samples the node's processes three times:
#   0. before the watchers are created (the node idle after the smoke test),
#   1. once every watcher is created (cairn_bench creates F, waits; we sample, then remove F),
#   2. after the last event.
# RSS is VmRSS from /proc/PID/status summed over the node's processes (etcd; Cairn's daemons,
# not the cairnctl supervisor); CPU is utime+stime (/proc/PID/stat fields 14, 15) of the same.
# Reported per run: Puts/s, events/s delivered, watch latency p50/p99/max (Put sent -> event
# read, every watcher), RSS growth per watcher (sample 1 - sample 0, over N) and CPU per
# delivered event (sample 2 - sample 1, over the events). A system that fails (cannot start,
# or the watch run fails — Cairn answers Watch with UNIMPLEMENTED until it has one) gets its
# error line in the table and the script goes on.
#
# The load is a fixed offered rate of events, so 100 and 10000 watchers are compared at the
# same work per second: R = WATCH_EVENTS_PER_SEC / N Puts/s (at least 1), P = R x WATCH_SECONDS
# Puts (at least 10). WATCH_RATE fixes R instead (0: closed loop, one Put outstanding).
#
# Environment:
#   BUILD=dir                  build directory (default <repo>/build-release; configured and built if missing)
#   WATCH_SYSTEMS="etcd cairn" systems, in order
#   WATCH_SCALE="100 10000"    watcher counts, one run (and one fresh node) each
#   WATCH_EVENTS_PER_SEC=20000 offered events per second (Puts/s x watchers)
#   WATCH_SECONDS=10           seconds of Puts per run
#   WATCH_RATE=R               Puts per second regardless of the watcher count (overrides the above)
#   WATCH_CONNS=4 WATCH_STREAMS=4   connections, and Watch streams per connection (clamped to N)
#   WATCH_VAL_SIZE=64          value bytes per Put
#   WATCH_TIMEOUT=120          hard timeout per cairn_bench run, seconds
#   BENCH_TMPDIR=dir           where the data dirs go (default /var/tmp; must not be tmpfs)
#   BENCH_NO_BUILD=1           do not (re)build, use what is in $BUILD
#   ETCD=etcd                  etcd binary
#   KEEP_LOGS_ON_FAILURE=1     keep the temp dir (node logs) when a run failed
# Exit status: 0 when every run of every system passed (no error, nothing missing or out of
# order), 1 otherwise. Only processes this script started are stopped (by PID, also on failure
# or Ctrl-C), and its temp dir is removed.
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$SRC/build-release}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
SYSTEMS=${WATCH_SYSTEMS:-"etcd cairn"}
SCALE=${WATCH_SCALE:-"100 10000"}
EPS_OFFERED=${WATCH_EVENTS_PER_SEC:-20000}
SECS=${WATCH_SECONDS:-10}
CONNS=${WATCH_CONNS:-4}
STREAMS=${WATCH_STREAMS:-4}
VAL_SIZE=${WATCH_VAL_SIZE:-64}
TIMEOUT=${WATCH_TIMEOUT:-120}
ETCD=${ETCD:-etcd}
CLK_TCK=$(getconf CLK_TCK)

BENCH_NAME=watch.sh
. "$SRC/bench/lib.sh"

for s in $SYSTEMS; do case $s in etcd | cairn) ;; *) die "unknown system $s (WATCH_SYSTEMS: etcd cairn)" ;; esac; done
for n in $SCALE; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "WATCH_SCALE: not a watcher count: $n"; done

. "$SRC/bench/node_lib.sh"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

declare -A R # R[sys,n,figure]
FAILED=0

run_one() { # n (the system is $SYS)
    local n=$1 dir="$TMP/$SYS-$1" rate total out rc err r0 r1 c1 c2 i ready
    mkdir -p "$dir"
    if [ -n "${WATCH_RATE:-}" ]; then
        rate=$WATCH_RATE
    else
        rate=$((EPS_OFFERED / n))
        ((rate < 1)) && rate=1
    fi
    total=$(awk -v r="$rate" -v s="$SECS" 'BEGIN { t = int(r * s); if (t < 10) t = 10; print t }')
    R[$SYS,$n,rate]=$rate
    say "watch.sh: [$SYS] $n watchers, $total Puts at ${rate}/s"
    if ! start_node "$dir"; then
        R[$SYS,$n,error]="node: $WHY"
        say "  [$SYS] $WHY"
        FAILED=1
        stop_node
        return
    fi
    r0=$(rss_kb)
    ready="$dir/ready"
    "$BENCH" --endpoint "127.0.0.1:$CPORT" --op watch --watchers "$n" --conns "$CONNS" \
        --watch-streams "$STREAMS" --total "$total" --rate "$rate" --val-size "$VAL_SIZE" \
        --prefix "/watch-$n/" --ready-file "$ready" --timeout "$TIMEOUT" >"$dir/bench.out" 2>"$dir/bench.err" &
    BENCH_PID=$!
    # every watcher created: sample, then let the Puts go
    while alive "$BENCH_PID" && [ ! -e "$ready" ]; do sleep 0.05; done
    if [ -e "$ready" ]; then
        sleep 1 # what the server allocates while answering the last creates
        r1=$(rss_kb)
        c1=$(cpu_ticks)
        rm -f "$ready"
    fi
    wait "$BENCH_PID"
    rc=$?
    BENCH_PID=""
    c2=$(cpu_ticks)
    out=$(cat "$dir/bench.out")
    err=$(head -c 400 "$dir/bench.err")
    say "  [$SYS] ${out:-no result}${err:+ ($err)}"
    R[$SYS,$n,out]=$out
    if [ -n "${r1:-}" ]; then
        R[$SYS,$n,rss]=$(awk -v a="$r0" -v b="$r1" -v n="$n" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
        R[$SYS,$n,rss_total]=$(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.1f->%.1f", a / 1024, b / 1024 }')
        local ev
        ev=$(field events "$out")
        [ "${ev:-0}" -gt 0 ] &&
            R[$SYS,$n,cpu]=$(awk -v t=$((c2 - c1)) -v hz="$CLK_TCK" -v e="$ev" 'BEGIN { printf "%.2f", t / hz / e * 1e6 }')
    fi
    if [ "$rc" != 0 ]; then
        R[$SYS,$n,error]="rc=$rc: $(grep -m1 'first error\|timeout\|connect' "$dir/bench.err" | sed 's/^cairn_bench: //')"
        FAILED=1
    fi
    stop_node
}

say "watch.sh: systems: $SYSTEMS; watchers: $SCALE; data in $TMP"
for SYS in $SYSTEMS; do
    for n in $SCALE; do run_one "$n"; done
done

# ---- report ------------------------------------------------------------------------------------------
ETCD_VERSION=$("$ETCD" --version 2>/dev/null | awk '/etcd Version/ {print $3}')
echo
echo "Watch: etcd ${ETCD_VERSION:-?} and Cairn, one fresh single node per row, loopback, $(nproc) CPUs (client on the same machine)"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), cairn $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?'); watchers on the prefix over $CONNS conns x $STREAMS streams (fewer when N is smaller); values $VAL_SIZE B"
if [ -n "${WATCH_RATE:-}" ]; then echo "Puts at $WATCH_RATE/s for ${SECS} s"; else echo "offered load $EPS_OFFERED events/s (Puts/s = that / watchers) for ${SECS} s"; fi
echo
printf '%-6s %8s %7s %10s %9s %9s %9s %12s %10s %-14s %s\n' system watchers puts/s events/s p50_ms p99_ms max_ms "RSS B/watch" "CPU us/ev" "RSS MiB" check
dash() { [ -n "$1" ] && printf '%s' "$1" || printf -- '-'; }
for SYS in $SYSTEMS; do
    for n in $SCALE; do
        out=${R[$SYS,$n,out]:-}
        [ -n "${R[$SYS,$n,error]:-}" ] && out="" # a failed run's figures mean nothing
        chk=ok
        [ -n "$out" ] && chk="missing=$(field missing "$out") dup_or_reorder=$(field dup_or_reorder "$out")"
        [ "$chk" = "missing=0 dup_or_reorder=0" ] && chk=ok
        [ -n "${R[$SYS,$n,error]:-}" ] && chk="FAILED"
        printf '%-6s %8s %7s %10s %9s %9s %9s %12s %10s %-14s %s\n' "$SYS" "$n" "${R[$SYS,$n,rate]:--}" \
            "$(dash "$(field events_per_sec "$out" | awk '{ if ($1 != "") printf "%.0f", $1 }')")" \
            "$(dash "$(field p50_ms "$out")")" "$(dash "$(field p99_ms "$out")")" "$(dash "$(field max_ms "$out")")" \
            "${R[$SYS,$n,rss]:--}" "${R[$SYS,$n,cpu]:--}" "${R[$SYS,$n,rss_total]:--}" "$chk"
    done
done
for SYS in $SYSTEMS; do
    for n in $SCALE; do
        [ -n "${R[$SYS,$n,error]:-}" ] && echo "$SYS $n watchers: ${R[$SYS,$n,error]}"
    done
done
exit "$FAILED"
