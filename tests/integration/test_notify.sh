#!/usr/bin/env bash
# Readiness notification (systemd Type=notify, the sd_notify protocol): with NOTIFY_SOCKET
# set, each daemon of a node sends READY=1 once it serves and STOPPING=1 when SIGTERM stops
# it, as datagrams on that socket; the node it started is healthy, and /metrics serves the
# metrics gatewayd has always served. Without NOTIFY_SOCKET every other test runs (harmless).
. "$(dirname "$0")/lib.sh"
SOCK=$T_TMP/notify.sock
GOT=$T_TMP/notify.got
# the receiver: one line per datagram, its newlines shown as |
python3 - "$SOCK" "$GOT" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as f:
    while True:
        f.write(s.recv(4096).decode(errors="replace").replace("\n", "|") + "\n")
PY
T_PIDS+=("$!")
t_wait_until 5 test -S "$SOCK" || t_fail "receiver did not bind $SOCK"
got() { grep -qxF -- "$1" "$GOT" 2>/dev/null; }

CP=$(t_port); PP=$(t_port)
export NOTIFY_SOCKET=$SOCK
t_start_cairn node "$CP" "$PP"
unset NOTIFY_SOCKET
t_wait_healthy "$C_EP" 30
# which daemons announce READY: gatewayd and raftd do; stored once its main calls the helper
ready=(gatewayd raftd)
grep -q cairn_daemon_notify_ready "$CAIRN_SRC/services/stored/main.c" && ready+=(stored)
for d in "${ready[@]}"; do
  t_wait_until 10 got "READY=1|STATUS=$d ready" && t_ok "$d sent READY=1" || t_fail "$d sent no READY=1: $(cat "$GOT")"
done

# /metrics: the same names as before the registry, each with its TYPE line (grpc_* and
# process_* now carry labels: by method, by process)
m=$(curl -s "http://$C_EP/metrics")
for name in etcd_server_has_leader etcd_server_is_leader etcd_mvcc_db_total_size_in_bytes \
  etcd_debugging_mvcc_current_revision etcd_debugging_mvcc_compact_revision \
  etcd_server_proposals_committed_total etcd_server_proposals_applied_total grpc_server_started_total \
  process_resident_memory_bytes; do
  grep -q "^# TYPE $name " <<<"$m" && grep -qE "^$name(\{[^}]*\})? -?[0-9]" <<<"$m" && t_ok "/metrics has $name" ||
    t_fail "/metrics lacks $name"
done
# the status stored reports once a second reaches the gateway
t_wait_until 5 bash -c "curl -s http://$C_EP/metrics | grep -qx 'etcd_server_has_leader 1'" &&
  t_ok "/metrics: etcd_server_has_leader 1" || t_fail "/metrics: no leader: $(curl -s "http://$C_EP/metrics" | grep has_leader)"

# SIGTERM: every daemon says STOPPING=1 (stored and raftd through the exit hook)
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
for d in gatewayd raftd stored; do
  t_wait_until 5 got "STOPPING=1|STATUS=$d stopping" && t_ok "$d sent STOPPING=1" || t_fail "$d sent no STOPPING=1: $(cat "$GOT")"
done
n=$(grep -c "^STOPPING=1" "$GOT")
t_eq "one STOPPING=1 per daemon" 3 "$n"
t_done
