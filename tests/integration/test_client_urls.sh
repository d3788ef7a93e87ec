#!/usr/bin/env bash
# Issue 11, defect 2: honest client URLs.
# - unix:// and unixs:// in --listen-client-urls used to pass validation, after which every
#   gatewayd failed at its start (a restart loop under systemd or cairnctl run). etcd 3.4 serves
#   them: unix://localhost:2379 is a socket file named "localhost:2379" in its working directory
#   (a URL with a path is refused). Cairn now does the same: one gatewayd of the node listens on
#   the file at a time (a Unix socket has no SO_REUSEPORT; "<name>.lock" says which), another
#   takes it over within a second of its exit, and etcdctl --endpoints unix://... works; unixs://
#   is TLS over it. A name too long for a unix socket is refused at start by every daemon.
# - --client-cert-auth with only http:// client listeners was ignored without a word. etcd 3.4
#   warns, once per such URL, "scheme is HTTP while --client-cert-auth is enabled; ignoring
#   client cert auth for this URL", and serves it without client certificates: Cairn's gatewayd
#   now does exactly that (checked against /usr/bin/etcd here too).
source "$(dirname "$0")/lib.sh"

LONG=unix://$(printf 'a%.0s' $(seq 1 110)):1
for bin in stored raftd gatewayd "cairnctl run"; do
  d=$T_TMP/unix-$RANDOM
  # shellcheck disable=SC2086
  out=$(cd "$T_TMP" && timeout 10 $CAIRN_BIN/$bin --name n1 --data-dir "$d" \
        --listen-client-urls "http://127.0.0.1:1,$LONG" 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && t_ok "$bin refuses a unix socket name too long (rc=$rc)" \
    || t_fail "$bin: rc=$rc with a unix:// name of 112 bytes"
  t_contains "$bin says why" "the unix socket name is 112 bytes, over the limit of 102" "$out"
  [ ! -e "$d" ] && t_ok "$bin wrote nothing" || t_fail "$bin created $d"
done
HELP=$("$CAIRN_BIN/gatewayd" --help 2>&1 || true)
t_contains "--help says how unix:// is served" "unix://NAME: a socket file NAME" "$HELP"
t_contains "--help lists --max-client-connections" "--max-client-connections" "$HELP"
t_contains "--help lists --client-header-timeout" "--client-header-timeout" "$HELP"

# a node with an http:// and a unix:// client URL, two gateways, started in its own directory
UPORT=$(t_port); UPPORT=$(t_port)
UDIR=$T_TMP/cwd; mkdir -p "$UDIR"
SOCK=localhost:$UPORT
UFLAGS="$(t_node_flags u1 "$T_TMP/u1" "$UPORT" "$UPPORT") --listen-client-urls http://127.0.0.1:$UPORT,unix://$SOCK"
ULOG=$T_TMP/u1.log
cd "$UDIR"
# shellcheck disable=SC2086
t_start_daemon "$ULOG" "$CAIRN_BIN/stored" $UFLAGS
# shellcheck disable=SC2086
t_start_daemon "$ULOG" "$CAIRN_BIN/raftd" $UFLAGS
# shellcheck disable=SC2086
t_start_daemon "$T_TMP/ugw1.log" "$CAIRN_BIN/gatewayd" $UFLAGS --gateway-id gw1; UGW1=$T_LAST_PID
t_wait_until 10 test -S "$UDIR/$SOCK" || true
# shellcheck disable=SC2086
t_start_daemon "$T_TMP/ugw2.log" "$CAIRN_BIN/gatewayd" $UFLAGS --gateway-id gw2; UGW2=$T_LAST_PID
C_LOG=$ULOG t_wait_healthy "unix://$SOCK" 30 || true
[ -S "$UDIR/$SOCK" ] && t_ok "unix://$SOCK is a socket file $SOCK in the working directory (as etcd's)" \
  || t_fail "no socket file $UDIR/$SOCK"
t_eq "etcdctl put over unix://" "OK" "$(timeout 10 etcdctl --endpoints="unix://$SOCK" put uk uv 2>&1)"
t_eq "etcdctl get over unix://" "uv" "$(timeout 10 etcdctl --endpoints="unix://$SOCK" get uk --print-value-only 2>&1)"
t_contains "/health over the unix socket" '{"health":"true"}' "$(timeout 5 curl -s --unix-socket "$SOCK" http://x/health || true)"
t_contains "the second gateway waits for the socket" "another gatewayd of the node listens on this unix socket" \
  "$(cat "$T_TMP/ugw2.log")"
t_kill9 "$UGW1"
t_wait_until 5 timeout 3 etcdctl --endpoints="unix://$SOCK" --command-timeout=1s get uk >/dev/null 2>&1 || true
t_eq "after kill -9 of its gateway, the other one serves the unix socket" "uv" \
  "$(timeout 10 etcdctl --endpoints="unix://$SOCK" get uk --print-value-only 2>&1)"
t_contains "it says it took over" "took over the unix socket" "$(cat "$T_TMP/ugw2.log")"
t_stop "$UGW2"
[ ! -e "$UDIR/$SOCK" ] && t_ok "a clean stop removes the socket file" || t_fail "$UDIR/$SOCK left behind"
cd "$T_TMP"

# --client-cert-auth on http://: etcd's warning, and the listener serves without client certs
WARN="scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL"
CPORT=$(t_port); PPORT=$(t_port)
DATA=$T_TMP/n1; LOG=$T_TMP/n1.log
FLAGS="$(t_node_flags n1 "$DATA" "$CPORT" "$PPORT") --client-cert-auth"
# shellcheck disable=SC2086
t_start_daemon "$LOG" "$CAIRN_BIN/stored" $FLAGS
# shellcheck disable=SC2086
t_start_daemon "$LOG" "$CAIRN_BIN/raftd" $FLAGS
# shellcheck disable=SC2086
t_start_daemon "$LOG" "$CAIRN_BIN/gatewayd" $FLAGS --gateway-id gw1
C_LOG=$LOG t_wait_healthy "127.0.0.1:$CPORT" 30 || true
t_contains "gatewayd warns as etcd does" "msg=\"$WARN\" client-url=http://127.0.0.1:$CPORT" "$(grep -F "$WARN" "$LOG" || true)"
t_eq "the http:// listener serves without a client certificate (as etcd's)" "OK" \
  "$(timeout 10 etcdctl --endpoints="127.0.0.1:$CPORT" put k v 2>&1)"

if command -v etcd >/dev/null; then
  ECPORT=$(t_port); EPPORT=$(t_port)
  # shellcheck disable=SC2046
  t_start_daemon "$T_TMP/etcd.log" etcd --logger zap $(t_node_flags e1 "$T_TMP/etcd-e1" "$ECPORT" "$EPPORT") --client-cert-auth
  EPID=$T_LAST_PID
  t_wait_healthy "127.0.0.1:$ECPORT" 30 || true
  t_contains "etcd 3.4 warns the same" "\"msg\":\"$WARN\",\"client-url\":\"http://127.0.0.1:$ECPORT\"" \
    "$(grep -F "$WARN" "$T_TMP/etcd.log" || true)"
  t_eq "etcd serves it without a client certificate too" "OK" \
    "$(timeout 10 etcdctl --endpoints="127.0.0.1:$ECPORT" put k v 2>&1)"
  t_stop "$EPID"
fi
t_done
