#!/usr/bin/env bash
# bench/scale.sh — etcd 3.4 and Cairn side by side at scale (issue 7), one run.
#
# For each system in turn (etcd first, then Cairn), with the default flags of each (plus
# SCALE_FLAGS, given to both):
#   1. start BENCH_NODES members (1: one etcd / one `cairnctl run`; 3: a loopback cluster);
#   2. SCALE_WRITES Puts (default 1000000) of 16-byte keys drawn uniformly from a
#      SCALE_KEY_SPACE (1000000) key space, SCALE_VAL_SIZE (256) B values, SCALE_CLIENTS (64)
#      clients over 8 connections, to the leader; values derived from the key and the
#      acknowledged keys recorded (cairn_bench --keyed-values --acked);
#      reports write ops/s, p50/p99, CPU time per write (utime+stime from /proc/PID/stat of
#      every process of every member, before and after the load, divided by the acknowledged
#      writes), RSS per process after the load, data dirs on disk (du);
#   3. 1 member: kill -9 of the member (etcd; cairnctl and its 3 daemons), restart on the same
#      data dir, time to healthy = first successful linearizable read (etcdctl get, no
#      --consistency=s), polled every ~60 ms, bounded by SCALE_HEALTHY_SECS (120); RSS once
#      healthy; every acknowledged key present with its value (cairn_bench --op verify);
#      3 members: kill -9 of a follower (the member after the leader), a background load
#      (SCALE_BG_CLIENTS=16 clients to the leader) started, the follower restarted
#      SCALE_DOWN_SECS (5) later: time to
#      its first linearizable read while the load runs (it has caught up to the commit index
#      of that moment), then the load stopped, a marker put through the leader and the time
#      until the follower serves it from its own state (caught up), its RSS, and the check of
#      every acknowledged key through the follower's endpoint;
#   4. a clean stop (SIGTERM to every member: etcd / cairnctl), restart, time to healthy (a
#      linearizable read on every member);
#   5. stop, and remove the data.
# Then one table, with the ratio cairn/etcd of each figure.
#
# Environment:
#   BUILD=dir              build directory (default <repo>/build-release; configured Release and
#                          built if missing; BENCH_NO_BUILD=1 to use it as it is)
#   BENCH_NODES=1|3        members per system
#   SCALE_WRITES=1000000 SCALE_KEY_SPACE=1000000 SCALE_VAL_SIZE=256 SCALE_CLIENTS=64
#   SCALE_HEALTHY_SECS=120 bound on every wait for health
#   SCALE_FLAGS="..."      extra flags for both systems (etcd names), e.g. "--snapshot-count 2000000"
#   SCALE_SYSTEMS="etcd cairn"  a subset to run one system alone
#   BENCH_TMPDIR=/var/tmp  where the data dirs go (a real disk; ~1-2 GB per system at 1M writes)
#   ETCD=etcd              etcd binary
#   KEEP_LOGS_ON_FAILURE=1 keep the temp dir (logs) when the script fails
# Loopback only. Only processes this script started are signalled (by PID, checked against
# this run's temp dir on the command line), on EXIT too; every wait is bounded.
# Exit status: 0 when both systems loaded with no error, came back healthy after every restart
# and had every acknowledged write; 1 otherwise (the table says which).
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$SRC/build-release}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
NODES=${BENCH_NODES:-1}
WRITES=${SCALE_WRITES:-1000000}
KEY_SPACE=${SCALE_KEY_SPACE:-1000000}
VAL_SIZE=${SCALE_VAL_SIZE:-256}
CLIENTS=${SCALE_CLIENTS:-64}
BG_CLIENTS=${SCALE_BG_CLIENTS:-16}
DOWN_SECS=${SCALE_DOWN_SECS:-5}
HEALTHY_SECS=${SCALE_HEALTHY_SECS:-120}
read -r -a EXTRA_FLAGS <<<"${SCALE_FLAGS:-}"
SYSTEMS=${SCALE_SYSTEMS:-"etcd cairn"}
ETCD=${ETCD:-etcd}
PREFIX=/k/ # 3 bytes + 13 digits = 16-byte keys
export ETCDCTL_API=3

BENCH_NAME=scale.sh
. "$SRC/bench/lib.sh"
case $NODES in 1 | 3) ;; *) die "BENCH_NODES must be 1 or 3" ;; esac

# ---- processes we started, and cleanup -------------------------------------------------------
TMP=""
declare -A TOP  # TOP[sys,i]: the etcd or cairnctl PID of member i

wait_gone() { # seconds pids...: 0 when all are gone in time
    local deadline=$((SECONDS + $1)) p
    shift
    for p in "$@"; do
        while alive "$p"; do ((SECONDS < deadline)) || return 1; sleep 0.05; done
    done
}
member_pids() { # sys i -> the member's processes (etcd; cairnctl and its daemons)
    local p=${TOP[$1,$2]:-}
    alive "$p" || return 0
    echo "$p"
    [ "$1" = cairn ] && descendants "$p"
}
all_pids() { local i; for ((i = 0; i < NODES; i++)); do member_pids "$1" "$i"; done; }

kill9_member() { # sys i: the top process first (cairnctl must not restart its daemons)
    local pids p
    pids=$(member_pids "$1" "$2")
    for p in $pids; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
    # shellcheck disable=SC2086
    wait_gone 30 $pids || say "scale.sh: WARNING: $1 member $2 still has processes after kill -9"
}
stop_member() { # sys i: SIGTERM (cairnctl stops its daemons in order), SIGKILL after 30 s
    local pids p
    pids=$(member_pids "$1" "$2")
    [ -n "$pids" ] || return 0
    ours "${TOP[$1,$2]}" && kill -TERM "${TOP[$1,$2]}" 2>/dev/null
    # shellcheck disable=SC2086
    if ! wait_gone 30 $pids; then
        say "scale.sh: $1 member $2 not stopped after 30 s of SIGTERM; SIGKILL"
        for p in $pids; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
    fi
}
stop_all() { local i; for ((i = 0; i < NODES; i++)); do stop_member "$1" "$i"; done; }

cleanup() {
    local rc=$? s
    trap - EXIT INT TERM
    [ -n "${BGPID:-}" ] && alive "$BGPID" && kill -KILL "$BGPID" 2>/dev/null
    for s in etcd cairn; do stop_all "$s"; done
    bench_remove_tmp "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'say "scale.sh: interrupted"; exit 130' INT TERM

# ---- build ------------------------------------------------------------------------------------
BENCH=$BUILD/cairn_bench
bench_build "$BUILD/.scale-build.log" cairn_bench cairnctl raftd stored gatewayd ||
    die "build failed (see $BUILD/.scale-build.log)"
[ -x "$BENCH" ] || die "$BENCH not found"
command -v "$ETCD" >/dev/null || die "etcd not found (Debian: apt-get install etcd-server)"
command -v etcdctl >/dev/null || die "etcdctl not found (Debian: apt-get install etcd-client)"
command -v python3 >/dev/null || die "python3 not found (parses endpoint status)"
ETCD_VERSION=$("$ETCD" --version 2>/dev/null | awk '/etcd Version/ { print $3 }')
CLK_TCK=$(getconf CLK_TCK)

BASE=${BENCH_TMPDIR:-/var/tmp}
TMP=$(mktemp -d "$BASE/cairn-scale.XXXXXX") || die "cannot create a temp dir under $BASE"
FSTYPE=$(stat -f -c %T "$TMP" 2>/dev/null || echo unknown)
case $FSTYPE in tmpfs | ramfs) say "scale.sh: WARNING: $TMP is on $FSTYPE: not a disk figure" ;; esac

# ---- ports (below the ephemeral range, not in use) ----------------------------------------------
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=32768
TAKEN=" "
free_port() { # sets PORT
    local p tries
    for ((tries = 0; tries < 200; tries++)); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        case $TAKEN in *" $p "*) continue ;; esac
        ss -Htan 2>/dev/null | awk '{print $4}' | grep -qE "[:.]$p\$" && continue
        TAKEN="$TAKEN$p "
        PORT=$p
        return 0
    done
    die "no free port found"
}
declare -A CPORT PPORT
NAMES=()
for ((i = 0; i < NODES; i++)); do
    NAMES[i]=m$i
    for s in etcd cairn; do
        free_port; CPORT[$s,$i]=$PORT
        free_port; PPORT[$s,$i]=$PORT
    done
done
ep() { echo "127.0.0.1:${CPORT[$1,$2]}"; }
member_flags() { # sys i
    local c=${CPORT[$1,$2]} p=${PPORT[$1,$2]} i cl=""
    for ((i = 0; i < NODES; i++)); do cl+="${cl:+,}${NAMES[i]}=http://127.0.0.1:${PPORT[$1,$i]}"; done
    printf '%s\n' --name "${NAMES[$2]}" --data-dir "$TMP/$1/${NAMES[$2]}" \
        --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
        --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
        --initial-cluster "$cl" --initial-cluster-token "scale-$1-$$" "${EXTRA_FLAGS[@]}"
}
start_member() { # sys i
    local -a f
    mapfile -t f < <(member_flags "$1" "$2")
    if [ "$1" = etcd ]; then
        "$ETCD" "${f[@]}" >>"$TMP/$1-${NAMES[$2]}.log" 2>&1 &
    else
        "$BUILD/cairnctl" run "${f[@]}" >>"$TMP/$1-${NAMES[$2]}.log" 2>&1 &
    fi
    TOP[$1,$2]=$!
    disown "$!" # no "Killed" job notice after kill -9; the PID is polled, not waited for
}

now_ns() { date +%s%N; }
secs_since() { awk -v d=$(($(now_ns) - $1)) 'BEGIN { printf "%.1f", d / 1e9 }'; }
lin_read() { # sys i: one linearizable read
    timeout 3 etcdctl --endpoints "$(ep "$1" "$2")" --dial-timeout 1s --command-timeout 1s \
        get /scale-probe >/dev/null 2>&1
}
# wait_read T0 SECS sys i...: until a linearizable read succeeds on every member listed, polled
# every ~60 ms; WAITED = seconds since T0 (ns), or ">SECS"
wait_read() {
    local t0=$1 bound=$2 s=$3 i
    shift 3
    for i in "$@"; do
        until lin_read "$s" "$i"; do
            if (($(now_ns) - t0 >= bound * 1000000000)); then WAITED=">$bound"; return 1; fi
            sleep 0.05
        done
    done
    WAITED=$(secs_since "$t0")
}
leader_of() { # sys -> index of the member that says it is leader (empty if none)
    local i
    for ((i = 0; i < NODES; i++)); do
        etcdctl --endpoints "$(ep "$1" "$i")" --dial-timeout 1s --command-timeout 2s endpoint status -w json 2>/dev/null |
            python3 -c 'import json,sys
try: d = json.load(sys.stdin)[0]["Status"]
except Exception: sys.exit(1)
sys.exit(0 if d["leader"] == d["header"]["member_id"] else 1)' && { echo "$i"; return; }
    done
}
cpu_ticks() { # pids... -> utime+stime summed (fields 14, 15 of /proc/PID/stat)
    local p s=0 t
    for p in "$@"; do
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        s=$((s + ${t:-0}))
    done
    echo "$s"
}
rss_lines() { # sys -> "member comm rss_kb" for every process but cairnctl
    local i p c r
    for ((i = 0; i < NODES; i++)); do
        for p in $(member_pids "$1" "$i"); do
            c=$(ps -o comm= -p "$p" 2>/dev/null) r=$(ps -o rss= -p "$p" 2>/dev/null | tr -d ' ')
            [ -n "$r" ] && [ "$c" != cairnctl ] && echo "${NAMES[i]} $c $r"
        done
    done
}
mib_sum() { awk '{ s += $3 } END { printf "%.0f", s / 1024 }'; }
by_comm() { awk '{ s[$2] += $3; if (!($2 in seen)) { seen[$2] = 1; o[++n] = $2 } }
    END { for (i = 1; i <= n; i++) printf "%s%s=%.0f", (i > 1 ? " " : ""), o[i], s[o[i]] / 1024 }'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }

declare -A R  # R[sys,figure]
FAILED=0
note() { R[$1,notes]="${R[$1,notes]:-}${R[$1,notes]:+; }$2"; FAILED=1; say "  [$1] $2"; }

verify() { # sys i figure-name: every acknowledged key present with its value, through member i
    local out rc
    out=$("$BENCH" --endpoint "$(ep "$1" "$2")" --op verify --key-space "$KEY_SPACE" --key-size 16 \
        --prefix "$PREFIX" --val-size "$VAL_SIZE" --acked "$TMP/acked.$1" --timeout 600 2>&1)
    rc=$?
    say "  [$1] verify ($3): $out"
    R[$1,$3]="$(field missing "$out") missing, $(field wrong "$out") wrong of $(field expected "$out")"
    [ "$rc" = 0 ] || { [ -n "$(field missing "$out")" ] || R[$1,$3]="verify failed (rc=$rc)"; note "$1" "$3: ${R[$1,$3]}"; }
}

run_system() { # sys
    local s=$1 i t0 c0 c1 out rc lines leader f bgout
    say "scale.sh: [$s] starting $NODES member(s)"
    for ((i = 0; i < NODES; i++)); do start_member "$s" "$i"; done
    t0=$(now_ns)
    # shellcheck disable=SC2046
    wait_read "$t0" 60 "$s" $(seq 0 $((NODES - 1))) || { note "$s" "not healthy at the first start"; stop_all "$s"; return; }
    leader=0
    if [ "$NODES" -gt 1 ]; then
        for ((i = 0; i < 50; i++)); do leader=$(leader_of "$s"); [ -n "$leader" ] && break; sleep 0.2; done
        [ -n "$leader" ] || { note "$s" "no leader"; stop_all "$s"; return; }
    fi

    # ---- the load
    say "scale.sh: [$s] $WRITES Puts, $CLIENTS clients, to ${NAMES[leader]}"
    # shellcheck disable=SC2046
    c0=$(cpu_ticks $(all_pids "$s"))
    out=$("$BENCH" --endpoint "$(ep "$s" "$leader")" --op put --clients "$CLIENTS" --conns 8 --total "$WRITES" \
        --key-space "$KEY_SPACE" --key-size 16 --prefix "$PREFIX" --val-size "$VAL_SIZE" --keyed-values \
        --acked "$TMP/acked.$s" --timeout $((WRITES / 500 + 300)) 2>"$TMP/bench.err")
    rc=$?
    # shellcheck disable=SC2046
    c1=$(cpu_ticks $(all_pids "$s"))
    say "  [$s] load: $out $(head -c 300 "$TMP/bench.err")"
    R[$s,ops]=$(field ops_per_sec "$out")
    R[$s,lat]="$(field p50_ms "$out")/$(field p99_ms "$out")"
    R[$s,acked]=$(field acked "$out")
    f=$(field ok "$out")
    [ "${f:-0}" -gt 0 ] && R[$s,cpu]=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$f" 'BEGIN { printf "%.1f", t / hz / n * 1e6 }')
    [ "$rc" = 0 ] || note "$s" "load rc=$rc errors=$(field errors "$out")"
    sleep 1
    lines=$(rss_lines "$s")
    R[$s,rss]=$(mib_sum <<<"$lines")
    R[$s,rss_detail]=$(by_comm <<<"$lines")
    R[$s,disk]=$(du -sm "$TMP/$s" | cut -f1)

    if [ "$NODES" = 1 ]; then
        # ---- kill -9 of the node, restart
        say "scale.sh: [$s] kill -9, restart"
        kill9_member "$s" 0
        t0=$(now_ns)
        start_member "$s" 0
        if wait_read "$t0" "$HEALTHY_SECS" "$s" 0; then
            R[$s,kill9]=$WAITED
            sleep 2
            lines=$(rss_lines "$s")
            R[$s,rss2]=$(mib_sum <<<"$lines")
            R[$s,rss2_detail]=$(by_comm <<<"$lines")
            verify "$s" 0 present
        else
            R[$s,kill9]=$WAITED
            note "$s" "not healthy within $HEALTHY_SECS s of the restart after kill -9"
            say "  [$s] last log lines: $(tail -n 400 "$TMP/$s-${NAMES[0]}.log" | sed 's/^ts=[^ ]* //' | uniq -c | tail -n 5)"
        fi
    else
        # ---- kill -9 of a follower; it comes back while a load continues
        f=$(((leader + 1) % NODES))
        say "scale.sh: [$s] kill -9 of follower ${NAMES[f]}, restart under a load of $BG_CLIENTS clients"
        kill9_member "$s" "$f"
        "$BENCH" --endpoint "$(ep "$s" "$leader")" --op put --clients "$BG_CLIENTS" --conns 4 \
            --duration "$HEALTHY_SECS" --key-space "$KEY_SPACE" --key-size 16 --prefix "$PREFIX" \
            --val-size "$VAL_SIZE" --keyed-values >"$TMP/bg.out" 2>&1 &
        BGPID=$!
        sleep "$DOWN_SECS" # the follower falls behind the load
        t0=$(now_ns)
        start_member "$s" "$f"
        wait_read "$t0" "$HEALTHY_SECS" "$s" "$f"
        R[$s,kill9]=$WAITED
        kill -INT "$BGPID" 2>/dev/null
        wait "$BGPID" 2>/dev/null
        BGPID=""
        bgout=$(head -n 1 "$TMP/bg.out")
        say "  [$s] background load: $bgout"
        R[$s,bg]="$(field ops_per_sec "$bgout") ops/s, $(field errors "$bgout") errors"
        if [ "${R[$s,kill9]:0:1}" = ">" ]; then
            note "$s" "follower not healthy within $HEALTHY_SECS s of its restart"
        else
            # caught up: it serves (serializable) a marker put after the load stopped
            etcdctl --endpoints "$(ep "$s" "$leader")" --command-timeout 10s put /scale-marker "$s-$$" >/dev/null 2>&1
            until [ "$(timeout 3 etcdctl --endpoints "$(ep "$s" "$f")" --command-timeout 2s get --consistency=s \
                --print-value-only /scale-marker 2>/dev/null)" = "$s-$$" ]; do
                if (($(now_ns) - t0 >= HEALTHY_SECS * 1000000000)); then R[$s,caught]=">$HEALTHY_SECS"; break; fi
                sleep 0.1
            done
            [ -n "${R[$s,caught]:-}" ] || R[$s,caught]=$(secs_since "$t0")
            [ "${R[$s,caught]:0:1}" = ">" ] && note "$s" "follower did not catch up within $HEALTHY_SECS s"
            lines=$(rss_lines "$s")
            R[$s,rss2]=$(mib_sum <<<"$(grep "^${NAMES[f]} " <<<"$lines")")
            R[$s,rss2_detail]=$(by_comm <<<"$(grep "^${NAMES[f]} " <<<"$lines")")
            verify "$s" "$f" present
        fi
    fi

    # ---- clean stop, restart
    say "scale.sh: [$s] clean stop, restart"
    t0=$(now_ns)
    stop_all "$s"
    R[$s,stop]=$(secs_since "$t0")
    t0=$(now_ns)
    for ((i = 0; i < NODES; i++)); do start_member "$s" "$i"; done
    # shellcheck disable=SC2046
    wait_read "$t0" "$HEALTHY_SECS" "$s" $(seq 0 $((NODES - 1))) || note "$s" "not healthy within $HEALTHY_SECS s of a clean restart"
    R[$s,clean]=$WAITED
    stop_all "$s"
    if grep -q "exited with" "$TMP/$s-"*.log 2>/dev/null; then
        note "$s" "cairnctl restarted a daemon: $(grep -h "exited with" "$TMP/$s-"*.log | head -2 | tr '\n' ';')"
    fi
    rm -rf "${TMP:?}/$s"
}

START=$SECONDS
for s in $SYSTEMS; do run_system "$s"; done

# ---- report ---------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else printf "-" }'; }
row() { # label etcd cairn [ratio?]
    local r=""
    [ "${4:-1}" = 1 ] && r=$(ratio "$3" "$2")
    printf '%-50s %16s %16s %10s\n' "$1" "${2:--}" "${3:--}" "$r"
}
echo
echo "Cairn vs etcd ${ETCD_VERSION:-?} at scale — $NODES member(s), loopback, fdatasync on, $FSTYPE under $BASE"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, cairn $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$SRC" diff --quiet HEAD -- services shared tools 2>/dev/null || echo '+dirty') (binaries: $BUILD), $WRITES Puts, 16 B keys over $KEY_SPACE, $VAL_SIZE B values, $CLIENTS clients, flags: defaults${SCALE_FLAGS:+ + $SCALE_FLAGS}"
echo
printf '%-50s %16s %16s %10s\n' "" etcd cairn cairn/etcd
row "write ops/s" "${R[etcd,ops]:-}" "${R[cairn,ops]:-}"
row "write p50/p99 ms" "${R[etcd,lat]:-}" "${R[cairn,lat]:-}" 0
row "CPU per write, all processes, us" "${R[etcd,cpu]:-}" "${R[cairn,cpu]:-}"
row "distinct keys acknowledged" "${R[etcd,acked]:-}" "${R[cairn,acked]:-}" 0
row "RSS after the load, MiB" "${R[etcd,rss]:-}" "${R[cairn,rss]:-}"
row "data dirs on disk, MiB" "${R[etcd,disk]:-}" "${R[cairn,disk]:-}"
if [ "$NODES" = 1 ]; then
    row "time to healthy after kill -9, s" "${R[etcd,kill9]:-}" "${R[cairn,kill9]:-}"
    row "RSS 2 s after healthy again, MiB" "${R[etcd,rss2]:-}" "${R[cairn,rss2]:-}"
    echo "acknowledged keys after kill -9 (cairn_bench --op verify):"
    printf '  %-10s %s\n  %-10s %s\n' etcd: "${R[etcd,present]:--}" cairn: "${R[cairn,present]:--}"
else
    row "follower: 1st linearizable read after kill -9, s" "${R[etcd,kill9]:-}" "${R[cairn,kill9]:-}"
    row "follower: serves a new marker (caught up), s" "${R[etcd,caught]:-}" "${R[cairn,caught]:-}"
    row "follower RSS once caught up, MiB" "${R[etcd,rss2]:-}" "${R[cairn,rss2]:-}"
    echo "background load while it came back:"
    printf '  %-10s %s\n  %-10s %s\n' etcd: "${R[etcd,bg]:--}" cairn: "${R[cairn,bg]:--}"
    echo "acknowledged keys on the restarted follower (cairn_bench --op verify):"
    printf '  %-10s %s\n  %-10s %s\n' etcd: "${R[etcd,present]:--}" cairn: "${R[cairn,present]:--}"
fi
row "clean stop (SIGTERM until all exited), s" "${R[etcd,stop]:-}" "${R[cairn,stop]:-}"
row "time to healthy after a clean stop, s" "${R[etcd,clean]:-}" "${R[cairn,clean]:-}"
echo
[ -n "${R[cairn,rss_detail]:-}" ] && echo "cairn RSS by daemon after the load: ${R[cairn,rss_detail]} MiB${R[cairn,rss2_detail]:+; after the restart: ${R[cairn,rss2_detail]} MiB} (cairnctl not counted)"
for s in $SYSTEMS; do [ -n "${R[$s,notes]:-}" ] && echo "$s: ${R[$s,notes]}"; done
echo "run took $((SECONDS - START)) s"
exit "$FAILED"
