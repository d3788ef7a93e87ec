#!/usr/bin/env bash
# Compatibility of the Cluster service: the same etcdctl member commands against Debian's
# etcd 3.4 and against Cairn (one member each, same name), outputs diffed after normalising
# member/cluster IDs and ports. Covers member add --learner, the refusals (second learner,
# peer URL in use, promoting a learner that is not in sync, promoting a voter, unknown IDs),
# member update and member remove.
. "$(dirname "$0")/lib.sh"

run_script() { # ENDPOINT OUT
  local ep=$1 out=$2 line learner self
  : >"$out"
  # member IDs differ between the two (etcd hashes the time in), and lists are sorted by ID:
  # compare lists sorted by name
  c() {
    echo "### $*" >>"$out"; local rc=0 o
    o=$(etcdctl --endpoints="$ep" --command-timeout=5s "$@" 2>&1) || rc=$?
    case "$*" in
      "member list -w json") python3 -c 'import json,sys;d=json.load(sys.stdin);d["members"].sort(key=lambda m:m.get("name",""));print(json.dumps(d,sort_keys=True))' <<<"$o" >>"$out" ;;
      "member list") sort -t, -k3 <<<"$o" >>"$out" ;;
      "member add"*) # the new member's cluster lists members in ID order: sort it
        python3 -c 'import re,sys
for l in sys.stdin.read().splitlines():
    m=re.match(r"ETCD_INITIAL_CLUSTER=\"(.*)\"$",l)
    print("ETCD_INITIAL_CLUSTER=\"%s\"" % ",".join(sorted(m.group(1).split(","))) if m else l)' <<<"$o" >>"$out" ;;
      *) echo "$o" >>"$out" ;;
    esac
    echo "rc=$rc" >>"$out"
  }
  c member add l1 --learner --peer-urls=http://127.0.0.1:1
  c member list
  learner=$(etcdctl --endpoints="$ep" member list | grep unstarted | cut -d, -f1)
  self=$(etcdctl --endpoints="$ep" member list | grep ', started, ' | cut -d, -f1)
  c member add l2 --learner --peer-urls=http://127.0.0.1:2
  c member add dup --peer-urls=http://127.0.0.1:1,http://127.0.0.1:9
  c member promote "$learner"
  c member promote "$self"
  c member remove 1234
  c member update 1234 --peer-urls=http://127.0.0.1:3
  c member update "$self" --peer-urls="$(etcdctl --endpoints="$ep" member list | grep ', started, ' | cut -d, -f4 | tr -d ' ')"
  c member list -w json
  c member remove "$learner"
  c member list
  # normalise ids (hex in text, decimal in json), terms and endpoints
  sed -E -i 's/\b[0-9a-f]{16}\b/ID/g; s/\b[0-9a-f]{15}\b/ID/g; s/"(cluster_id|member_id|ID)":[0-9]+/"\1":ID/g;
             s/"raft_term": ?[0-9]+/"raft_term":T/g; s/ +ID/ ID/g; s/"(cluster_id|member_id|ID)": [0-9]+/"\1": ID/g; s/127\.0\.0\.1:[0-9]{4,5}/EP/g;
             s/"ts":"[^"]*"/"ts":TS/g; s/client-[0-9a-f-]+/client-UUID/g' "$out"
}

EP1=$(t_port); EP2=$(t_port); CP=$(t_port); PP=$(t_port)
t_start_etcd n1 "$EP1" "$EP2"
C_DATA=$T_TMP/cairn-n1 t_start_cairn n1 "$CP" "$PP"
t_wait_healthy "$E_EP"
t_wait_healthy "$C_EP"
run_script "$E_EP" "$T_TMP/etcd.out"
run_script "$C_EP" "$T_TMP/cairn.out"
if diff -u "$T_TMP/etcd.out" "$T_TMP/cairn.out" >"$T_TMP/diff.txt"; then
  t_ok "member commands: output identical on etcd and Cairn ($(grep -c '^###' "$T_TMP/etcd.out") commands)"
else
  cat "$T_TMP/diff.txt" >&2
  t_fail "member command outputs differ (see diff above)"
fi
t_eq "the refusals were exercised" 6 "$(grep -c 'rc=1' "$T_TMP/cairn.out" || true)"
t_done
