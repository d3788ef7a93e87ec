# bench/node_lib.sh - the single-node harness that watch.sh and lease.sh share: the processes
# this run started and their cleanup (only ours, by PID), building cairn_bench and the daemons,
# a temp dir, free ports below the ephemeral range, and one fresh node of a system (etcd, or
# Cairn under `cairnctl run`) with its processes' RSS and CPU ticks.
#
# Source it after bench/lib.sh, with BENCH_NAME (e.g. watch.sh), SYSTEMS, BUILD and ETCD set.
# It defines NODE_PID, BENCH_PID, TMP, BENCH, stop_node, cleanup (the EXIT trap), free_port,
# node_pids, rss_kb, cpu_ticks and start_node (SYS = etcd | cairn; NODE_EXTRA_FLAGS, if set, is
# added to both systems' flags).
BENCH_TAG=${BENCH_NAME%.sh}

# ---- processes we started, and cleanup -------------------------------------------------------
TMP=""
NODE_PID=""   # etcd, or the cairnctl supervisor
BENCH_PID=""

stop_node() {
    local p kids="" i
    [ -n "$NODE_PID" ] || return 0
    alive "$NODE_PID" && kids=$(descendants "$NODE_PID")
    alive "$NODE_PID" && kill -TERM "$NODE_PID" 2>/dev/null
    # cairnctl stops its daemons in turn on SIGTERM (up to 5 s each)
    for ((i = 0; i < 200; i++)); do alive "$NODE_PID" || break; sleep 0.1; done
    alive "$NODE_PID" && kill -KILL "$NODE_PID" 2>/dev/null
    wait "$NODE_PID" 2>/dev/null
    for p in $kids; do ours "$p" && kill -KILL "$p" 2>/dev/null; done
    NODE_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$BENCH_PID" ] && alive "$BENCH_PID" && kill -TERM "$BENCH_PID" 2>/dev/null
    stop_node
    bench_remove_tmp "$rc"
    exit "$rc"
}
trap cleanup EXIT
trap 'say "$BENCH_NAME: interrupted"; exit 130' INT TERM

# ---- build ------------------------------------------------------------------------------------
BENCH=$BUILD/cairn_bench
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    mkdir -p "$BUILD"
    : >"$BUILD/.${BENCH_TAG}-build.log"
    bench_build "$BUILD/.${BENCH_TAG}-build.log" cairn_bench || die "cannot build cairn_bench"
    case " $SYSTEMS " in *" cairn "*)
        bench_build "$BUILD/.${BENCH_TAG}-build.log" cairnctl raftd stored gatewayd ||
            say "$BENCH_NAME: WARNING: building Cairn's daemons failed (see $BUILD/.${BENCH_TAG}-build.log)" ;;
    esac
fi
[ -x "$BENCH" ] || die "$BENCH not found (build it: cmake --build $BUILD --target cairn_bench)"
command -v curl >/dev/null || die "curl not found"

BASE=${BENCH_TMPDIR:-/var/tmp}
TMP=$(mktemp -d "$BASE/cairn-${BENCH_TAG}.XXXXXX") || die "cannot create a temp dir under $BASE"

# ---- ports: below the ephemeral range, not listening ------------------------------------------
EPHEMERAL_LOW=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 12000)) || EPHEMERAL_LOW=32768
free_port() { # sets PORT, never the same twice in a run
    local p tries
    for ((tries = 0; tries < 200; tries++)); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        case " ${TAKEN:-} " in *" $p "*) continue ;; esac
        ss -Htan 2>/dev/null | awk '{print $4}' | grep -qE "[:.]$p\$" && continue
        TAKEN="${TAKEN:-} $p"
        PORT=$p
        return 0
    done
    die "no free port found"
}

# ---- the node ------------------------------------------------------------------------------------
node_pids() { # etcd itself; for Cairn the daemons under cairnctl (not cairnctl)
    [ -n "$NODE_PID" ] && alive "$NODE_PID" || return 0
    if [ "$SYS" = etcd ]; then echo "$NODE_PID"; else descendants "$NODE_PID"; fi
}
rss_kb() { # VmRSS summed over the node's processes
    local p s=0 r
    for p in $(node_pids); do
        r=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
        s=$((s + ${r:-0}))
    done
    echo "$s"
}
cpu_ticks() { # utime+stime summed over the node's processes
    local p s=0 t
    for p in $(node_pids); do
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        s=$((s + ${t:-0}))
    done
    echo "$s"
}

start_node() { # run-dir -> NODE_PID, CPORT; 1 (with WHY) when it does not come up
    local dir=$1 pport i
    free_port; CPORT=$PORT
    free_port; pport=$PORT
    local flags=(--name default --data-dir "$dir/data"
        --listen-client-urls "http://127.0.0.1:$CPORT" --advertise-client-urls "http://127.0.0.1:$CPORT"
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport"
        --initial-cluster "default=http://127.0.0.1:$pport" ${NODE_EXTRA_FLAGS:-})
    if [ "$SYS" = etcd ]; then
        command -v "$ETCD" >/dev/null || { WHY="etcd not found (Debian: apt-get install etcd-server)"; return 1; }
        "$ETCD" "${flags[@]}" >"$dir/node.log" 2>&1 &
    else
        local b
        for b in cairnctl stored raftd gatewayd; do
            [ -x "$BUILD/$b" ] || { WHY="not built: $BUILD/$b missing"; return 1; }
        done
        CAIRN_BIN=$BUILD "$BUILD/cairnctl" run --gateways "${CAIRN_GATEWAYS:-1}" "${flags[@]}" >"$dir/node.log" 2>&1 &
    fi
    NODE_PID=$!
    for ((i = 0; i < 120; i++)); do
        alive "$NODE_PID" || { WHY="exited at start: $(tail -3 "$dir/node.log" | tr '\n' ' ')"; return 1; }
        if curl -s -m 2 "http://127.0.0.1:$CPORT/health" 2>/dev/null | grep -q '"health" *: *"true"'; then
            if "$BENCH" --endpoint "127.0.0.1:$CPORT" --op put --total 20 --timeout 10 --prefix "/${BENCH_TAG}-smoke/" \
                >/dev/null 2>"$dir/smoke.err"; then
                sleep 1 # let the start settle before the first RSS sample
                return 0
            fi
        fi
        sleep 0.25
    done
    WHY="not healthy (or Put over gRPC fails) on 127.0.0.1:$CPORT within 30 s: $(head -c 300 "$dir/smoke.err" 2>/dev/null)"
    return 1
}

