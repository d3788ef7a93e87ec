#!/usr/bin/env bash
# bench/lease.sh — lease keepalive throughput, server CPU per keepalive and server memory per
# lease, etcd 3.4 and Cairn, one fresh single node per run.
#
# For each system of LEASE_SYSTEMS and each lease count of LEASE_COUNTS, the script starts a
# fresh node the way watch.sh does (etcd; Cairn by `cairnctl run`, i.e. stored + raftd +
# gatewayd), waits for /health and 20 Puts through cairn_bench, then runs
#   cairn_bench --op keepalive --leases L --ttl T --clients S --conns C --duration D --ready-file F
# (see the header of bench/cairn_bench.c): it grants the L leases (unary LeaseGrant, S at a
# time), creates F and waits; the script samples the node's processes, removes F, and the
# keepalive load runs: S LeaseKeepAlive streams over C connections, each a closed loop of one
# keepalive at a time over the leases round robin, for D seconds. Samples:
#   0. before the grants (the node idle after the smoke test),
#   1. once every lease is granted (1 s after F appears),
#   2. after the last keepalive.
# RSS is VmRSS from /proc/PID/status summed over the node's processes (etcd; Cairn's daemons,
# not the cairnctl supervisor); CPU is utime+stime (/proc/PID/stat fields 14, 15) of the same.
# Reported per run: grants/s of the setup, keepalives/s, latency p50/p99 (request framed ->
# response read), CPU per keepalive (sample 2 - sample 1, over the keepalives answered), the
# node's RSS after the grants (sample 1) and its growth per lease ((1 - 0) / L). Then, per
# lease count, the Cairn/etcd ratio of keepalives/s and of CPU per keepalive. A system that
# fails (cannot start, a grant fails, a keepalive is answered with another ID or TTL 0, a
# stream closes) gets its error line in the table and the script goes on.
#
# The TTL defaults to 300 s, not cairn_bench's 60: with 100000 leases the grants alone can
# take tens of seconds, and a lease that expires before the load reaches it would be revoked
# by the server during the measurement (its CPU counted as keepalive cost) and answered TTL 0.
#
# Environment:
#   BUILD=dir                  build directory (default <repo>/build-release; configured and built if missing)
#   LEASE_SYSTEMS="etcd cairn" systems, in order
#   LEASE_COUNTS="1000 100000" leases granted, one run (and one fresh node) each
#   LEASE_SECONDS=10           seconds of keepalives per run
#   LEASE_STREAMS=64 LEASE_CONNS=4   keepalive streams in total, over that many connections
#   LEASE_TTL=300              TTL of the granted leases, seconds
#   LEASE_TIMEOUT=600          hard timeout per cairn_bench run (grants included), seconds
#   BENCH_TMPDIR=dir           where the data dirs go (default /var/tmp; must not be tmpfs)
#   BENCH_NO_BUILD=1           do not (re)build, use what is in $BUILD
#   ETCD=etcd                  etcd binary
#   KEEP_LOGS_ON_FAILURE=1     keep the temp dir (node logs) when a run failed
# Exit status: 0 when every run of every system passed (no error), 1 otherwise. Only processes
# this script started are stopped (by PID, also on failure or Ctrl-C), and its temp dir is
# removed.
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$SRC/build-release}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
SYSTEMS=${LEASE_SYSTEMS:-"etcd cairn"}
COUNTS=${LEASE_COUNTS:-"1000 100000"}
SECS=${LEASE_SECONDS:-10}
STREAMS=${LEASE_STREAMS:-64}
CONNS=${LEASE_CONNS:-4}
TTL=${LEASE_TTL:-300}
TIMEOUT=${LEASE_TIMEOUT:-600}
ETCD=${ETCD:-etcd}
CLK_TCK=$(getconf CLK_TCK)

BENCH_NAME=lease.sh
. "$SRC/bench/lib.sh"

for s in $SYSTEMS; do case $s in etcd | cairn) ;; *) die "unknown system $s (LEASE_SYSTEMS: etcd cairn)" ;; esac; done
for n in $COUNTS; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "LEASE_COUNTS: not a lease count: $n"; done
[[ $STREAMS =~ ^[1-9][0-9]*$ && $CONNS =~ ^[1-9][0-9]*$ ]] || die "LEASE_STREAMS, LEASE_CONNS: positive integers"

. "$SRC/bench/node_lib.sh"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

declare -A R # R[sys,n,figure]
FAILED=0

run_one() { # n (the system is $SYS)
    local n=$1 dir="$TMP/$SYS-$1" out rc err r0 r1="" c1="" c2 ready ok
    mkdir -p "$dir"
    say "lease.sh: [$SYS] $n leases (TTL $TTL s), $STREAMS keepalive streams over $CONNS conns for $SECS s"
    if ! start_node "$dir"; then
        R[$SYS,$n,error]="node: $WHY"
        say "  [$SYS] $WHY"
        FAILED=1
        stop_node
        return
    fi
    r0=$(rss_kb)
    ready="$dir/ready"
    "$BENCH" --endpoint "127.0.0.1:$CPORT" --op keepalive --leases "$n" --ttl "$TTL" --clients "$STREAMS" \
        --conns "$CONNS" --duration "$SECS" --ready-file "$ready" --timeout "$TIMEOUT" \
        >"$dir/bench.out" 2>"$dir/bench.err" &
    BENCH_PID=$!
    # every lease granted: sample, then let the keepalives go
    while alive "$BENCH_PID" && [ ! -e "$ready" ]; do sleep 0.05; done
    if [ -e "$ready" ]; then
        sleep 1 # what the server allocates while answering the last grants
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
    if [ -n "$r1" ]; then
        R[$SYS,$n,rss_lease]=$(awk -v a="$r0" -v b="$r1" -v n="$n" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
        R[$SYS,$n,rss]=$(awk -v b="$r1" 'BEGIN { printf "%.1f", b / 1024 }')
        ok=$(field ok "$out")
        [ "${ok:-0}" -gt 0 ] &&
            R[$SYS,$n,cpu]=$(awk -v t=$((c2 - c1)) -v hz="$CLK_TCK" -v k="$ok" 'BEGIN { printf "%.2f", t / hz / k * 1e6 }')
    fi
    if [ "$rc" != 0 ]; then
        R[$SYS,$n,error]="rc=$rc: $(grep -m1 'first error\|timeout\|connect' "$dir/bench.err" | sed 's/^cairn_bench: //')"
        FAILED=1
    fi
    stop_node
}

LOAD_BEFORE=$(uptime | sed 's/.*load average: *//')
say "lease.sh: systems: $SYSTEMS; leases: $COUNTS; data in $TMP; load average $LOAD_BEFORE"
for SYS in $SYSTEMS; do
    for n in $COUNTS; do run_one "$n"; done
done
LOAD_AFTER=$(uptime | sed 's/.*load average: *//')

# ---- report ------------------------------------------------------------------------------------------
ETCD_VERSION=$("$ETCD" --version 2>/dev/null | awk '/etcd Version/ {print $3}')
echo
echo "Lease keepalive: etcd ${ETCD_VERSION:-?} and Cairn, one fresh single node per row, loopback, $(nproc) CPUs (client on the same machine)"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), cairn $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?'); $STREAMS keepalive streams over $CONNS conns, closed loop, ${SECS} s; TTL $TTL s"
echo "load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER"
echo
printf '%-6s %7s %9s %9s %8s %8s %12s %8s %11s %s\n' system leases grants/s ka/s p50_ms p99_ms "CPU us/ka" "RSS MiB" "RSS B/lease" check
dash() { [ -n "$1" ] && printf '%s' "$1" || printf -- '-'; }
ok_run() { [ -n "${R[$1,$2,out]:-}" ] && [ -z "${R[$1,$2,error]:-}" ]; }
for SYS in $SYSTEMS; do
    for n in $COUNTS; do
        out=${R[$SYS,$n,out]:-}
        ok_run "$SYS" "$n" || out="" # a failed run's figures mean nothing
        chk=ok
        [ -n "${R[$SYS,$n,error]:-}" ] && chk="FAILED"
        printf '%-6s %7s %9s %9s %8s %8s %12s %8s %11s %s\n' "$SYS" "$n" \
            "$(dash "$(field grants_per_sec "$out" | awk '{ if ($1 != "") printf "%.0f", $1 }')")" \
            "$(dash "$(field ops_per_sec "$out" | awk '{ if ($1 != "") printf "%.0f", $1 }')")" \
            "$(dash "$(field p50_ms "$out")")" "$(dash "$(field p99_ms "$out")")" \
            "$(dash "$([ -n "$out" ] && echo "${R[$SYS,$n,cpu]:-}")")" \
            "$(dash "$([ -n "$out" ] && echo "${R[$SYS,$n,rss]:-}")")" \
            "$(dash "$([ -n "$out" ] && echo "${R[$SYS,$n,rss_lease]:-}")")" "$chk"
    done
done
case " $SYSTEMS " in *" etcd "*" cairn "* | *" cairn "*" etcd "*)
    for n in $COUNTS; do
        ratio_ops=- ratio_cpu=-
        if ok_run etcd "$n" && ok_run cairn "$n"; then
            ratio_ops=$(awk -v c="$(field ops_per_sec "${R[cairn,$n,out]}")" -v e="$(field ops_per_sec "${R[etcd,$n,out]}")" \
                'BEGIN { if (e > 0) printf "%.2fx", c / e; else print "-" }')
            ratio_cpu=$(awk -v c="${R[cairn,$n,cpu]:-0}" -v e="${R[etcd,$n,cpu]:-0}" \
                'BEGIN { if (e > 0 && c > 0) printf "%.2fx", c / e; else print "-" }')
        fi
        printf '%-6s %7s %9s %9s %8s %8s %12s %8s %11s %s\n' "c/e" "$n" - "$ratio_ops" - - "$ratio_cpu" - - "Cairn/etcd"
    done ;;
esac
for SYS in $SYSTEMS; do
    for n in $COUNTS; do
        [ -n "${R[$SYS,$n,error]:-}" ] && echo "$SYS $n leases: ${R[$SYS,$n,error]}"
    done
done
exit "$FAILED"
