#!/usr/bin/env bash
# raftd answers CAIRN_IPC_METRICS on its gateway socket (<run>/raftd.ipc) with RESULT {req_id,
# code 0, body = its metrics in the Prometheus text format} (services/raftd/metrics.c), under
# etcd 3.4's names and help texts. A script plays the gateway: a single member says it leads,
# proposals_committed_total follows the puts made through etcdctl; in a three-member cluster
# exactly one member leads, every member knows a leader and counts bytes to and from each peer
# under its ID in hex (To=/From= labels, as etcd).
. "$(dirname "$0")/lib.sh"

cat >"$T_TMP/ask.py" <<'PY'
import os, re, sys, zmq
sys.path.insert(0, os.environ["CAIRN_SRC"] + "/tests/integration")
from ipcpack import pk, up
# message type numbers from the schema header, so the test follows the enum
hdr = open(os.environ["CAIRN_SRC"] + "/shared/cairn_ipc.h").read()
body = hdr[hdr.index("typedef enum {"):hdr.index("CAIRN_IPC_TYPE_MAX_")]
names = re.findall(r"^\s*(CAIRN_IPC_\w+)", body, re.M)
num = {n: i + 1 for i, n in enumerate(names)}  # PROPOSE = 1, then in order
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect("ipc://%s/raftd.ipc" % sys.argv[1])
req = 4242
s.send(pk([1, num["CAIRN_IPC_METRICS"], req]))
if not s.poll(5000):
    sys.exit("no answer from raftd within 5 s")
m, _ = up(s.recv())
if m[1] != num["CAIRN_IPC_RESULT"] or m[2] != req or m[3] != 0:
    sys.exit("unexpected answer: %r" % (m[:5],))
sys.stdout.write(m[5].decode())
PY
ask() { timeout 10 /usr/bin/python3 "$T_TMP/ask.py" "$1" 2>&1 || true; }
# value NAME[{labels}] PAGE -> the sample's value, or "none"
value() { awk -v n="$1" '$1 == n { print $2; f = 1 } END { if (!f) print "none" }' <<<"$2"; }

# ---- one member
t_start_cairn solo "$(t_port)" "$(t_port)"
t_wait_healthy "$C_EP" || { t_fail "node not healthy"; t_done; exit 1; }
RUN=$C_DATA/run
page=$(ask "$RUN")
t_eq "single member: etcd_server_is_leader" 1 "$(value etcd_server_is_leader "$page")"
t_eq "single member: etcd_server_has_leader" 1 "$(value etcd_server_has_leader "$page")"
t_eq "single member: etcd_server_is_learner" 0 "$(value etcd_server_is_learner "$page")"
# etcd's names and help texts (etcd 3.4.23's /metrics)
for help in \
  "etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not." \
  "etcd_server_is_leader Whether or not this member is a leader. 1 if is, 0 otherwise." \
  "etcd_server_leader_changes_seen_total The number of leader changes seen." \
  "etcd_server_proposals_committed_total The total number of consensus proposals committed." \
  "etcd_server_proposals_pending The current number of pending proposals to commit." \
  "etcd_server_proposals_failed_total The total number of failed proposals seen." \
  "etcd_server_heartbeat_send_failures_total The total number of leader heartbeat send failures (likely overloaded from slow disk)." \
  "etcd_server_id Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."; do
  grep -qxF "# HELP $help" <<<"$page" && t_ok "help text of ${help%% *}" || t_fail "no '# HELP $help'"
done
grep -qx '# TYPE etcd_server_proposals_committed_total gauge' <<<"$page" &&
  t_ok "proposals_committed_total is a gauge, as in etcd" || t_fail "proposals_committed_total's TYPE"
t_eq "a single member saw one leader change" 1 "$(value etcd_server_leader_changes_seen_total "$page")"
id=$(etcdctl --endpoints="$C_EP" endpoint status -w json |
  python3 -c 'import json,sys;print("%x" % json.load(sys.stdin)[0]["Status"]["header"]["member_id"])')
t_eq "etcd_server_id carries the member ID in hex" 1 "$(value "etcd_server_id{server_id=\"$id\"}" "$page")"
c1=$(value etcd_server_proposals_committed_total "$page")
for i in 1 2 3 4 5; do etcdctl --endpoints="$C_EP" put "/rm/$i" "v$i" >/dev/null; done
# a single voter's stored applies (and the client hears) as soon as its disk has the entry;
# raftd's core learns the commit a moment later
committed_after() {
  page=$(ask "$RUN"); c2=$(value etcd_server_proposals_committed_total "$page")
  [[ "$c1" =~ ^[0-9]+$ && "$c2" =~ ^[0-9]+$ ]] && [ "$c2" -ge $((c1 + 5)) ] &&
    [ "$(value etcd_server_proposals_pending "$page")" = 0 ]
}
if t_wait_until 5 committed_after; then
  t_ok "proposals_committed_total grew with five puts ($c1 -> $c2), nothing pending"
else
  t_fail "after five puts: proposals_committed_total $c1 -> $c2, pending $(value etcd_server_proposals_pending "$page")"
fi
t_eq "no failed proposals" 0 "$(value etcd_server_proposals_failed_total "$page")"
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"

# ---- three members
t_start_cluster 3 raftd-metrics
t_wait_healthy "${C_EPS[0]}" || { t_fail "cluster not healthy"; t_done; exit 1; }
etcdctl --endpoints="${C_EPS[0]}" put /rm/x y >/dev/null
declare -A IDS
for i in 0 1 2; do
  IDS[$i]=$(etcdctl --endpoints="${C_EPS[i]}" endpoint status -w json |
    python3 -c 'import json,sys;print("%x" % json.load(sys.stdin)[0]["Status"]["header"]["member_id"])')
done
leaders=0
for i in 0 1 2; do
  page=$(ask "$T_TMP/m$i/run")
  leaders=$((leaders + $(value etcd_server_is_leader "$page" | tr -c -d 0-9)))
  t_eq "m$i knows a leader" 1 "$(value etcd_server_has_leader "$page")"
  for j in 0 1 2; do
    [ "$i" = "$j" ] && continue
    for fam in "etcd_network_peer_sent_bytes_total{To" "etcd_network_peer_received_bytes_total{From"; do
      v=$(value "$fam=\"${IDS[$j]}\"}" "$page")
      [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -gt 0 ] && t_ok "m$i: $fam=m$j} > 0" || t_fail "m$i: $fam=\"${IDS[$j]}\"} is $v"
    done
  done
  grep -q "{To=\"${IDS[$i]}\"}\|{From=\"${IDS[$i]}\"}" <<<"$page" && t_fail "m$i counts traffic with itself" ||
    t_ok "m$i has no series for itself"
done
t_eq "exactly one member says it leads" 1 "$leaders"
t_done
