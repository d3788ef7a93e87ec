# bench/lib.sh - what compare.sh and scale.sh share: messages, the processes a script started
# (found by PID, and "ours" only while their command line names the run's temp dir), the temp
# dir's removal, and the Release build of what a script needs. Sourced; the caller sets
# BENCH_NAME (for messages), SRC, BUILD and, once it has one, TMP.

say() { printf '%s\n' "$*" >&2; }
die() { say "$BENCH_NAME: $*"; exit 1; }

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

# bench_remove_tmp RC: the temp dir goes, unless the run failed and KEEP_LOGS_ON_FAILURE is set.
bench_remove_tmp() {
    [ -n "${TMP:-}" ] && [ -d "$TMP" ] || return 0
    if [ "$1" -ne 0 ] && [ -n "${KEEP_LOGS_ON_FAILURE:-}" ]; then
        say "$BENCH_NAME: logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
}

# bench_build LOG TARGET...: configures $BUILD (Release) if it has no cache, then builds the
# targets; 1 on a failed build (the log's tail is shown). Nothing with BENCH_NO_BUILD set.
bench_build() {
    local log=$1
    shift
    [ -z "${BENCH_NO_BUILD:-}" ] || return 0
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        say "$BENCH_NAME: configuring $BUILD (Release)"
        cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCAIRN_TESTS=OFF >/dev/null ||
            die "cmake configure failed"
    fi
    cmake --build "$BUILD" --target "$@" -j2 >>"$log" 2>&1 || { tail -20 "$log" >&2; return 1; }
}
