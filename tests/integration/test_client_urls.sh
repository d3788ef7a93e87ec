#!/usr/bin/env bash
# Issue 11, defect 2: honest client URLs.
# - unix:// and unixs:// in --listen-client-urls (or --listen-metrics-urls) used to pass
#   validation, after which every gatewayd failed at its start (a restart loop under systemd or
#   cairnctl run) while stored and raftd ran on. etcd 3.4 serves them (unix://localhost:2379 is a
#   socket file named "localhost:2379" in its working directory); Cairn does not, and now refuses
#   them at start, with the same message, in stored, raftd, gatewayd and cairnctl run, from a flag
#   or from the environment, before anything is written.
# - --client-cert-auth with only http:// client listeners was ignored without a word. etcd 3.4
#   warns, once per such URL, "scheme is HTTP while --client-cert-auth is enabled; ignoring
#   client cert auth for this URL", and serves it without client certificates: Cairn's gatewayd
#   now does exactly that (checked against /usr/bin/etcd here too).
source "$(dirname "$0")/lib.sh"

MSG="unix:// and unixs:// client URLs are not supported (gatewayd listens on TCP only); use http:// or https://"
for bin in stored raftd gatewayd "cairnctl run"; do
  d=$T_TMP/unix-$RANDOM
  # shellcheck disable=SC2086
  out=$(cd "$T_TMP" && timeout 10 $CAIRN_BIN/$bin --name n1 --data-dir "$d" \
        --listen-client-urls "http://127.0.0.1:1,unix://localhost:2379" 2>&1) && rc=0 || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && t_ok "$bin refuses a unix:// client URL (rc=$rc)" \
    || t_fail "$bin: rc=$rc with a unix:// client URL"
  t_contains "$bin says why" "--listen-client-urls unix://localhost:2379: $MSG" "$out"
  [ ! -e "$d" ] && t_ok "$bin wrote nothing" || t_fail "$bin created $d"
done
out=$(cd "$T_TMP" && CAIRN_LISTEN_CLIENT_URLS=unixs://localhost:2379 timeout 10 "$CAIRN_BIN/gatewayd" \
      --data-dir "$T_TMP/unixs" 2>&1) && rc=0 || rc=$?
t_contains "unixs:// from the environment is refused, naming the variable" \
  "--listen-client-urls unixs://localhost:2379 (set by environment variable CAIRN_LISTEN_CLIENT_URLS): $MSG" "$out"
out=$(cd "$T_TMP" && timeout 10 "$CAIRN_BIN/raftd" --data-dir "$T_TMP/unixm" \
      --listen-metrics-urls unix://localhost:2381 2>&1) && rc=0 || rc=$?
t_contains "a unix:// metrics URL is refused too" "--listen-metrics-urls unix://localhost:2381: $MSG" "$out"
HELP=$("$CAIRN_BIN/gatewayd" --help 2>&1 || true)
t_contains "--help says so" "unix:// and unixs:// are refused" "$HELP"
t_contains "--help lists --max-client-connections" "--max-client-connections" "$HELP"
t_contains "--help lists --client-header-timeout" "--client-header-timeout" "$HELP"

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
