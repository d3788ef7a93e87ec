#!/usr/bin/env bash
# stored's metrics over IPC (services/stored/metrics.c): a script asks stored directly with
# METRICS {req_id} on <run>/stored.ipc, as gatewayd does for /metrics, and checks that the
# answer is RESULT {req_id, code 0, text} with etcd's names, that the WAL fsync and backend
# commit histograms count the writes made with etcdctl, and that the revision gauge is the
# store's revision.
. "$(dirname "$0")/lib.sh"
t_start_cluster 1
t_wait_healthy "${C_EPS[0]}" 30 || { t_fail "node did not start"; t_done; exit 1; }
RUN=$T_TMP/m0/run
[ -S "$RUN/stored.ipc" ] || RUN=$(dirname "$(find "$T_TMP/m0" -name stored.ipc | head -1)")
cat >"$T_TMP/metrics.py" <<'PY'
import os, re, sys
sys.path.insert(0, os.environ["CAIRN_SRC"] + "/tests/integration")
import zmq
from ipcpack import pk, up
# the message numbers, from the one module that defines them (shared/cairn_ipc.h)
src = open(os.environ["CAIRN_SRC"] + "/shared/cairn_ipc.h").read()
enum = src[src.index("typedef enum {", src.index("CAIRN_IPC_PROPOSE") - 400):]
n, num = 0, {}
for name, val in re.findall(r"^\s+CAIRN_IPC_([A-Z_]+)(?:\s*=\s*(\d+))?\s*,", enum, re.M):
    n = int(val) if val else n + 1
    num.setdefault(name, n)
s = zmq.Context.instance().socket(zmq.DEALER)
s.setsockopt(zmq.IDENTITY, b"metrics-test"); s.setsockopt(zmq.LINGER, 0)
s.connect("ipc://%s/stored.ipc" % sys.argv[1])
s.send(pk([1, num["METRICS"], 4242]))
while s.poll(5000):
    m, _ = up(s.recv())
    if m[1] == num["RESULT"] and m[2] == 4242:
        if m[3] != 0:
            print("code", m[3]); sys.exit(1)
        sys.stdout.write(m[5].decode()); sys.exit(0)
print("no RESULT"); sys.exit(1)
PY
scrape() { /usr/bin/python3 "$T_TMP/metrics.py" "$RUN"; }
val() { awk -v k="$1" '$1 == k { print $2 }' <<<"$2"; }
before=$(scrape) || { t_fail "METRICS not answered: $before"; t_done; exit 1; }
t_contains "help text is etcd's" "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL." "$before"
t_contains "histogram buckets are etcd's" 'etcd_disk_backend_commit_duration_seconds_bucket{le="8.192"}' "$before"
f0=$(val etcd_disk_wal_fsync_duration_seconds_count "$before")
c0=$(val etcd_disk_backend_commit_duration_seconds_count "$before")
for i in 1 2 3 4 5; do etcdctl --endpoints="${C_EPS[0]}" put "k$i" "v$i" >/dev/null || t_fail "put k$i"; done
rev=$(etcdctl --endpoints="${C_EPS[0]}" get k1 -w json | sed -n 's/.*"revision":\([0-9]*\).*/\1/p')
after=$(scrape) || t_fail "second METRICS not answered"
f1=$(val etcd_disk_wal_fsync_duration_seconds_count "$after")
c1=$(val etcd_disk_backend_commit_duration_seconds_count "$after")
if [ -n "$f0" ] && [ -n "$f1" ] && [ "$f1" -ge $((f0 + 5)) ]; then t_ok "wal fsync count grew by >= 5 ($f0 -> $f1)"; else t_fail "wal fsync count did not grow by 5: [$f0] -> [$f1]"; fi
if [ -n "$c0" ] && [ -n "$c1" ] && [ "$c1" -ge $((c0 + 5)) ]; then t_ok "backend commit count grew by >= 5 ($c0 -> $c1)"; else t_fail "backend commit count did not grow by 5: [$c0] -> [$c1]"; fi
t_eq "current revision is the store's" "$rev" "$(val etcd_debugging_mvcc_current_revision "$after")"
applied=$(val etcd_server_proposals_applied_total "$after")
if [ -n "$applied" ] && [ "$applied" -ge 5 ]; then t_ok "applied index reported ($applied)"; else t_fail "applied index [$applied]"; fi
t_eq "no snapshot being applied" 0 "$(val etcd_server_snapshot_apply_in_progress_total "$after")"
size=$(val etcd_mvcc_db_total_size_in_bytes "$after")
if [ -n "$size" ] && [ "$size" -gt 0 ]; then t_ok "db size reported ($size)"; else t_fail "db size [$size]"; fi
t_stop "${C_GWS[0]}" "${C_RAFTDS[0]}" "${C_STOREDS[0]}"
t_done
