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

# ---- --cert-file/--key-file: a server certificate issued by a CA made here
K=$T_TMP/pki; mkdir -p "$K"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$K/ca.key" -out "$K/ca.pem" -days 2 -subj "/CN=cairn-test-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>"$K/openssl.log"
openssl req "${ec[@]}" -keyout "$K/server.key" -out "$K/server.csr" -subj "/CN=cairn-test-server" 2>>"$K/openssl.log"
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' >"$K/ext"
openssl x509 -req -in "$K/server.csr" -CA "$K/ca.pem" -CAkey "$K/ca.key" -CAcreateserial -days 2 \
  -extfile "$K/ext" -out "$K/server.pem" 2>>"$K/openssl.log"
CP2=$(t_port); PP2=$(t_port)
flags2="--name tls2 --data-dir $T_TMP/tls2 --listen-client-urls https://127.0.0.1:$CP2 --advertise-client-urls https://127.0.0.1:$CP2 --listen-peer-urls http://127.0.0.1:$PP2 --initial-advertise-peer-urls http://127.0.0.1:$PP2 --initial-cluster tls2=http://127.0.0.1:$PP2 --cert-file $K/server.pem --key-file $K/server.key"
C_LOG=$T_TMP/tls2.log
t_start_daemon "$C_LOG" "$CAIRN_BIN/stored" $flags2; S=$T_LAST_PID
t_start_daemon "$C_LOG" "$CAIRN_BIN/raftd" $flags2; R=$T_LAST_PID
t_start_daemon "$C_LOG" "$CAIRN_BIN/gatewayd" $flags2; G=$T_LAST_PID
E2="etcdctl --endpoints=https://127.0.0.1:$CP2 --cacert=$K/ca.pem"
t_wait_healthy "https://127.0.0.1:$CP2" 30 --cacert="$K/ca.pem" && t_ok "--cert-file: healthy over TLS, verified against the CA" ||
  t_fail "--cert-file: not healthy over TLS"
t_eq "--cert-file: put over TLS" "OK" "$($E2 put ck cv 2>&1)"
t_eq "--cert-file: get over TLS" "cv" "$($E2 get ck --print-value-only 2>&1)"
served=$(echo | openssl s_client -connect "127.0.0.1:$CP2" -alpn h2 -CAfile "$K/ca.pem" 2>/dev/null)
t_contains "--cert-file: the certificate served is the one given" "cairn-test-server" \
  "$(openssl x509 -noout -subject <<<"$served" 2>&1)"
t_contains "--cert-file: it verifies against the CA made here" "Verify return code: 0 (ok)" "$served"
t_contains "--cert-file: ALPN selects h2" "ALPN protocol: h2" "$served"
t_eq "--cert-file: a client that does not trust the CA is refused" "refused" \
  "$(etcdctl --endpoints="https://127.0.0.1:$CP2" --dial-timeout=2s --command-timeout=3s get ck >/dev/null 2>&1 && echo accepted || echo refused)"
t_stop "$G" "$R" "$S"
t_done
