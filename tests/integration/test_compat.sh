#!/usr/bin/env bash
# Compatibility: runs one etcdctl script (compat_script.sh) against Debian's etcd 3.4 and
# against Cairn, and diffs the outputs, normalising only what legitimately differs: member
# and cluster ids, raft terms and the server's version line.
. "$(dirname "$0")/lib.sh"

run_script() { # ENDPOINT OUT
  local ep=$1 out=$2 line
  : >"$out"
  while IFS= read -r line; do
    [ -z "$line" ] && continue
    [[ "$line" == \#* ]] && continue
    echo "### $line" >>"$out"
    local rc=0
    case "$line" in
      txn-i\ *)
        local which=${line#txn-i }
        local input
        case "$which" in
          compare-mod-ok) input=$'mod("k1") > "0"\n\nput k1 txn1\nput k3 v3\n\nput k2 never\n' ;;
          compare-value-fail) input=$'value("k1") = "nope"\n\nput k1 never\n\nget k1\nput k2 fromfail\n' ;;
          compare-version) input=$'version("k1") = "2"\nversion("missing") = "0"\n\nget k1 --print-value-only\n\n\n' ;;
          compare-create) input=$'create("k2") < "1000"\n\ndel k3 --prev-kv\n\n\n' ;;
        esac
        etcdctl --endpoints="$ep" txn -i <<<"$input" >>"$out" 2>&1 || rc=$?
        ;;
      watch-hist\ *)
        # a watch from the past prints the history and waits for more: stop it after 2 s
        eval "timeout 2 etcdctl --endpoints=\"$ep\" watch ${line#watch-hist }" >>"$out" 2>&1 || rc=$?
        ;;
      member-list-count)
        etcdctl --endpoints="$ep" member list | wc -l >>"$out" 2>&1 || rc=$?
        ;;
      endpoint-health)
        etcdctl --endpoints="$ep" endpoint health 2>&1 | sed -E 's/took = [^ ]+/took = T/; s/[0-9.]+:[0-9]+/EP/' >>"$out" || rc=$?
        ;;
      *)
        eval "etcdctl --endpoints=\"$ep\" $line" >>"$out" 2>&1 || rc=$?
        ;;
    esac
    echo "rc=$rc" >>"$out"
  done <"$(dirname "$0")/compat_script.sh"
  # normalise ids, terms and endpoints
  sed -E -i 's/"cluster_id":[0-9]+/"cluster_id":ID/g; s/"member_id":[0-9]+/"member_id":ID/g;
             s/"raft_term":[0-9]+/"raft_term":T/g; s/^"ClusterID" : [0-9]+/"ClusterID" : ID/;
             s/^"MemberID" : [0-9]+/"MemberID" : ID/; s/^"RaftTerm" : [0-9]+/"RaftTerm" : T/;
             s/127\.0\.0\.1:[0-9]+/EP/g; s/"ts":"[^"]*"/"ts":TS/g; s/client-[0-9a-f-]+/client-UUID/g;
             s/lease [0-9a-f]{1,16} granted/lease ID granted/; s/"ID":[0-9]+,"TTL":100/"ID":ID,"TTL":100/;
             s/^[0-9a-f]{1,16}$/LEASEID/' "$out"
}

EP1=$(t_port); EP2=$(t_port); CP=$(t_port); PP=$(t_port)
t_start_etcd e1 "$EP1" "$EP2"
t_start_cairn c1 "$CP" "$PP"
t_wait_healthy "$E_EP"
t_wait_healthy "$C_EP"
run_script "$E_EP" "$T_TMP/etcd.out"
run_script "$C_EP" "$T_TMP/cairn.out"
if diff -u "$T_TMP/etcd.out" "$T_TMP/cairn.out" >"$T_TMP/diff.txt"; then
  t_ok "etcdctl script output identical on etcd and Cairn ($(grep -c '^###' "$T_TMP/etcd.out") commands)"
else
  cat "$T_TMP/diff.txt" >&2
  t_fail "etcdctl outputs differ (see diff above)"
fi
t_done
