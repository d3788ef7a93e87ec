#!/usr/bin/env bash
# Peer TLS is not supported yet (raft traffic between members is plaintext ZeroMQ), so a node
# asked for it must refuse to start rather than run in plaintext while the operator believes
# it runs mutual TLS (issue 7). Each launcher - stored, raftd, gatewayd and `cairnctl run` -
# is started with a peer TLS setting given as a flag, as a CAIRN_* variable and in the YAML
# config file, and with https:// peer URLs; each must exit 2 at once, before creating its
# data dir, with the shared config's message on stderr. A control run with http:// peer URLs
# and the etcd-sample form of the settings (empty/false) must start.
. "$(dirname "$0")/lib.sh"
CP=$(t_port); PP=$(t_port)
MSG="peer TLS is not supported yet; raft traffic between members is plaintext. Use http:// peer URLs on a trusted network"

# refused NAME WANT ENV... -- ARGS...: runs every launcher with ARGS (and the environment
# assignments before --) and checks exit code 2, WANT on stderr, and no data dir.
refused() {
  local name=$1 want=$2; shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local l run rc err data
  for l in stored raftd gatewayd cairnctl; do
    run=("$CAIRN_BIN/$l"); [ "$l" = cairnctl ] && run=("$CAIRN_BIN/cairnctl" run)
    data=$T_TMP/d-$l-${name// /_}
    err=$T_TMP/${l}-${name// /_}.log
    rc=0
    env "${envs[@]}" timeout -k 5 15 "${run[@]}" --name n1 --data-dir "$data" \
      --listen-client-urls "http://127.0.0.1:$CP" --advertise-client-urls "http://127.0.0.1:$CP" \
      "$@" >"$T_TMP/$l.out" 2>"$err" || rc=$?
    t_eq "$l $name: exits 2 at once" 2 "$rc"
    t_contains "$l $name: says so on stderr" "$l: $want" "$(cat "$err")"
    [ ! -e "$data" ] && t_ok "$l $name: nothing created" || t_fail "$l $name: $data was created"
  done
}

HTTP_PEER=(--listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP"
  --initial-cluster "n1=http://127.0.0.1:$PP")

refused "flag" "--peer-cert-file: $MSG" -- \
  "${HTTP_PEER[@]}" --peer-cert-file /etc/cairn/peer.crt --peer-key-file /etc/cairn/peer.key \
  --peer-client-cert-auth --peer-trusted-ca-file /etc/cairn/ca.crt

refused "https url" "--listen-peer-urls https://127.0.0.1:$PP: $MSG" -- \
  --listen-peer-urls "https://127.0.0.1:$PP" --initial-advertise-peer-urls "https://127.0.0.1:$PP" \
  --initial-cluster "n1=https://127.0.0.1:$PP"

refused "env" "--peer-auto-tls (set by environment variable CAIRN_PEER_AUTO_TLS): $MSG" \
  CAIRN_PEER_AUTO_TLS=true -- "${HTTP_PEER[@]}"

refused "etcd-only flag" "--peer-crl-file: $MSG" -- "${HTTP_PEER[@]}" --peer-crl-file /etc/cairn/crl.pem

CF=$T_TMP/peer-tls.yml
printf 'name: n1\npeer-transport-security:\n  client-cert-auth: true\n' >"$CF"
refused "config file" "--peer-client-cert-auth (set by config file $CF line 3): $MSG" -- \
  "${HTTP_PEER[@]}" --config-file "$CF"

# Control: http:// peer URLs and etcd's sample form of the peer block (empty, false) start a
# node that serves, so the refusals above are about peer TLS and nothing else.
printf 'peer-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n  trusted-ca-file:\n  auto-tls: false\n' >"$T_TMP/sample.yml"
D=$T_TMP/ok
t_start_daemon "$T_TMP/ok.log" "$CAIRN_BIN/cairnctl" run --name n1 --data-dir "$D" \
  --listen-client-urls "http://127.0.0.1:$CP" --advertise-client-urls "http://127.0.0.1:$CP" \
  "${HTTP_PEER[@]}" --config-file "$T_TMP/sample.yml" --peer-auto-tls=false
SUP=$T_LAST_PID
t_wait_healthy "127.0.0.1:$CP" 30 && t_ok "http:// peer URLs with empty/false peer TLS settings start" ||
  { t_fail "control node not healthy"; tail -n 20 "$T_TMP/ok.log" >&2; }
t_stop "$SUP"
t_done
