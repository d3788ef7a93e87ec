#!/usr/bin/env bash
# etcd 3.4's JSON gateway (ETCD_API.md §5; services/gatewayd/gw_json.c): the same curl script
# against a real etcd 3.4 and a Cairn node, started here, and the answers compared one by one
# (HTTP status, content type, body).
#
# What legitimately differs is normalised away before the comparison:
#   - header.cluster_id, header.member_id, header.raft_term (ids are random per cluster; terms
#     depend on the election history) - removed wherever a header appears. This also hides
#     one real difference: etcd 3.4 fills only "revision" in the headers of a Txn's
#     responses[], Cairn fills the whole header there (same on gRPC);
#   - member IDs (members[].ID, Status.leader) -> "<member>", the ports of peer and client URLs;
#   - Status: dbSize, raftIndex, raftAppliedIndex, raftTerm (each store's own) -> "<n>";
#     dbSizeInUse is dropped: Cairn does not report it (a gap of Maintenance/Status, not of
#     the gateway);
#   - a lease's remaining TTL from LeaseTimeToLive ("TTL" next to "grantedTTL") -> "<ttl>".
source "$(dirname "$0")/lib.sh"

EP=$(t_port); EPP=$(t_port); CP=$(t_port); CPP=$(t_port)
t_start_etcd j1 "$EP" "$EPP"
t_start_cairn j1 "$CP" "$CPP"
t_wait_healthy "$E_EP" || { t_fail "etcd not healthy"; t_done; exit 1; }
t_wait_healthy "$C_EP" || { t_fail "cairn not healthy"; t_done; exit 1; }

b64() { printf %s "$1" | base64 -w0; }
K_FOO=$(b64 foo); V_BAR=$(b64 bar); K_A=$(b64 a); K_B=$(b64 b); K_C=$(b64 c); K_Z=$(b64 z)
K_L=$(b64 leased); V_1=$(b64 1); V_2=$(b64 2)

# script OUT BASE: every request of the comparison, one answer per line in OUT as
# "label<TAB>status<TAB>content type<TAB>body"
script() {
  local out=$1 base=$2 n=0
  : >"$out"
  req() { # req LABEL METHOD PATH [BODY]
    local label=$1 method=$2 path=$3 f=$T_TMP/body.$n
    n=$((n + 1))
    local meta
    if [ $# -ge 4 ]; then
      meta=$(curl -s -o "$f" -w '%{http_code}\t%{content_type}' -X "$method" "$base$path" --data-binary "$4")
    else
      meta=$(curl -s -o "$f" -w '%{http_code}\t%{content_type}' -X "$method" "$base$path")
    fi
    printf '%s\t%s\t%s\n' "$label" "$meta" "$(tr -d '\n' <"$f")" >>"$out"
  }
  req put POST /v3/kv/put "{\"key\":\"$K_FOO\",\"value\":\"$V_BAR\"}"
  req put-prev_kv POST /v3/kv/put "{\"key\":\"$K_FOO\",\"value\":\"$V_BAR\",\"prev_kv\":true}"
  req put-a POST /v3/kv/put "{\"key\":\"$K_A\",\"value\":\"$V_1\"}"
  req put-b POST /v3/kv/put "{\"key\":\"$K_B\",\"value\":\"$V_2\"}"
  req put-c-camel POST /v3/kv/put "{\"key\":\"$K_C\",\"value\":\"$V_2\",\"prevKv\":true,\"ignoreLease\":false}"
  req range POST /v3/kv/range "{\"key\":\"$K_FOO\"}"
  req range-none POST /v3/kv/range "{\"key\":\"$K_Z\"}"
  req range-end-limit POST /v3/kv/range "{\"key\":\"$K_A\",\"range_end\":\"$K_Z\",\"limit\":2}"
  req range-keys_only-sort POST /v3/kv/range "{\"key\":\"$K_A\",\"range_end\":\"$K_Z\",\"keys_only\":true,\"sort_order\":\"DESCEND\",\"sort_target\":\"KEY\"}"
  req range-sort-number POST /v3/kv/range "{\"key\":\"$K_A\",\"rangeEnd\":\"$K_Z\",\"sort_order\":2,\"sort_target\":\"MOD\"}"
  req range-count_only POST /v3/kv/range "{\"key\":\"$K_A\",\"range_end\":\"$K_Z\",\"count_only\":true}"
  req range-revision-string POST /v3/kv/range "{\"key\":\"$K_FOO\",\"revision\":\"2\"}"
  req range-revision-number POST /v3/kv/range "{\"key\":\"$K_FOO\",\"revision\":3}"
  req range-future POST /v3/kv/range "{\"key\":\"$K_FOO\",\"revision\":100}"
  req range-all POST /v3/kv/range "{\"key\":\"AA==\",\"range_end\":\"AA==\",\"serializable\":true}"
  req deleterange-prev_kv POST /v3/kv/deleterange "{\"key\":\"$K_B\",\"prev_kv\":true}"
  req deleterange-none POST /v3/kv/deleterange "{\"key\":\"$K_B\"}"
  req txn-success POST /v3/kv/txn "{\"compare\":[{\"key\":\"$K_A\",\"result\":\"EQUAL\",\"target\":\"VALUE\",\"value\":\"$V_1\"}],\"success\":[{\"request_put\":{\"key\":\"$K_C\",\"value\":\"$V_1\"}},{\"request_range\":{\"key\":\"$K_A\"}}],\"failure\":[{\"request_delete_range\":{\"key\":\"$K_A\"}}]}"
  req txn-failure POST /v3/kv/txn "{\"compare\":[{\"key\":\"$K_A\",\"result\":\"NOT_EQUAL\",\"target\":\"VERSION\",\"version\":\"1\"}],\"success\":[{\"request_put\":{\"key\":\"$K_C\",\"value\":\"$V_1\"}}],\"failure\":[{\"request_delete_range\":{\"key\":\"$K_C\",\"prev_kv\":true}},{\"request_range\":{\"key\":\"$K_A\",\"count_only\":true}}]}"
  req txn-mod-zero POST /v3/kv/txn "{\"compare\":[{\"key\":\"$K_Z\",\"target\":\"MOD\",\"mod_revision\":0}],\"success\":[{\"request_put\":{\"key\":\"$K_Z\",\"value\":\"$V_1\"}}]}"
  req txn-empty POST /v3/kv/txn "{}"
  req compaction POST /v3/kv/compaction '{"revision":"4"}'
  req range-compacted POST /v3/kv/range "{\"key\":\"$K_FOO\",\"revision\":2}"
  req compaction-again POST /v3/kv/compaction '{"revision":3,"physical":true}'
  req lease-grant POST /v3/lease/grant '{"TTL":60,"ID":1234}'
  req lease-grant-exists POST /v3/lease/grant '{"TTL":"60","ID":"1234"}'
  req put-leased POST /v3/kv/put "{\"key\":\"$K_L\",\"value\":\"$V_1\",\"lease\":\"1234\"}"
  req put-lease-unknown POST /v3/kv/put "{\"key\":\"$K_L\",\"value\":\"$V_1\",\"lease\":5}"
  req lease-timetolive POST /v3/lease/timetolive '{"ID":1234,"keys":true}'
  req lease-timetolive-unknown POST /v3/lease/timetolive '{"ID":99}'
  req lease-leases POST /v3/lease/leases '{}'
  req lease-revoke POST /v3/lease/revoke '{"ID":1234}'
  req lease-revoke-again POST /v3/lease/revoke '{"ID":1234}'
  req lease-leases-none POST /v3/lease/leases ''
  req range-leased-gone POST /v3/kv/range "{\"key\":\"$K_L\"}"
  req member-list POST /v3/cluster/member/list '{}'
  req status POST /v3/maintenance/status '{}'
  req unlock POST /v3/lock/unlock "{\"key\":\"$K_A\"}"
  req unlock-no-key POST /v3/lock/unlock '{}'
  req election-leader-none POST /v3/election/leader '{"name":"ZWw="}'
  req election-proclaim-not-leader POST /v3/election/proclaim '{"leader":{"name":"ZWw=","key":"ZWwvMQ==","rev":5,"lease":1},"value":"dg=="}'
  req election-resign-not-held POST /v3/election/resign '{"leader":{"name":"ZWw=","key":"ZWwvMQ==","rev":5,"lease":1}}'
  req v3beta-range POST /v3beta/kv/range "{\"key\":\"$K_FOO\"}"
  req v3beta-put POST /v3beta/kv/put "{\"key\":\"$K_FOO\",\"value\":\"$V_1\"}"
  req v3alpha POST /v3alpha/kv/range "{\"key\":\"$K_FOO\"}"
  req unknown-route POST /v3/kv/nope '{}'
  req get-method GET /v3/kv/range
  # what the gateway does with bodies that are not a well-formed request
  req no-body POST /v3/kv/range
  req empty-body POST /v3/kv/range ''
  req blank-body POST /v3/kv/put ' '
  req unknown-fields POST /v3/kv/range "{\"key\":\"$K_FOO\",\"bogus\":1,\"Key\":[1,{\"x\":null}]}"
  req null-field POST /v3/kv/range '{"key":null}'
  req duplicate-key POST /v3/kv/range "{\"key\":\"$K_Z\",\"key\":\"$K_FOO\"}"
  req trailing-bytes POST /v3/kv/range "{\"key\":\"$K_FOO\"} trailing"
  req bad-json-truncated POST /v3/kv/range "{\"key\":\"$K_FOO\""
  req bad-json-char POST /v3/kv/range 'x'
  req bad-json-comma POST /v3/kv/range "{\"key\":\"$K_FOO\",}"
  req bad-json-colon POST /v3/kv/range "{\"key\" \"$K_FOO\"}"
  req bad-json-pair POST /v3/kv/range "{\"key\":\"$K_FOO\" \"limit\":1}"
  req bad-json-leading-zero POST /v3/kv/range "{\"key\":\"$K_FOO\",\"limit\":01}"
  req bad-json-array POST /v3/kv/range '[]'
  req bad-json-string-top POST /v3/kv/range '"x"'
  req bad-literal POST /v3/kv/range "{\"key\":\"$K_FOO\",\"keys_only\":tru}"
  req bad-type-bytes POST /v3/kv/range '{"key":12}'
  req bad-type-int-frac POST /v3/kv/range "{\"key\":\"$K_FOO\",\"limit\":1.5}"
  req bad-type-int-exp POST /v3/kv/range "{\"key\":\"$K_FOO\",\"limit\":\"1e2\"}"
  req bad-type-int-string POST /v3/kv/range "{\"key\":\"$K_FOO\",\"limit\":\"x\"}"
  req bad-type-int-overflow POST /v3/kv/range "{\"key\":\"$K_FOO\",\"limit\":\"9223372036854775808\"}"
  req bad-type-int-empty POST /v3/kv/range "{\"key\":\"$K_FOO\",\"limit\":\"\"}"
  req int-string-spaces POST /v3/kv/range "{\"key\":\"$K_FOO\",\"limit\":\" 1 \"}"
  req bad-type-bool-string POST /v3/kv/range "{\"key\":\"$K_FOO\",\"keys_only\":\"true\"}"
  req bad-type-bool-number POST /v3/kv/range "{\"key\":\"$K_FOO\",\"keys_only\":1}"
  req bad-type-repeated POST /v3/kv/txn '{"success":{}}'
  req bad-type-message POST /v3/kv/txn '{"success":[{"request_put":[]}]}'
  req bad-base64-short POST /v3/kv/range '{"key":"Y"}'
  req bad-base64-nopad POST /v3/kv/range '{"key":"YQ"}'
  req bad-base64-char POST /v3/kv/range '{"key":"Y Q=="}'
  req bad-base64-trailing POST /v3/kv/range '{"key":"YQ==YQ=="}'
  req bad-enum POST /v3/kv/range "{\"key\":\"$K_FOO\",\"sort_order\":\"descend\"}"
  req bad-string-control POST /v3/kv/range "{\"key\":\"a$(printf '\t')b\"}"
  req bad-escape POST /v3/kv/range '{"key":"\q"}'
  req escaped-key-name POST /v3/kv/range "{\"k\\u0065y\":\"$K_FOO\"}"
}

script "$T_TMP/etcd.out" "http://$E_EP"
script "$T_TMP/cairn.out" "http://$C_EP"

cat >"$T_TMP/norm.py" <<'PY'
import json, re, sys
def norm(v, parent=None):
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if parent == "header" and k in ("cluster_id", "member_id", "raft_term"):
                continue
            if k == "dbSizeInUse":
                continue
            if parent == "members" and k == "ID" or k == "leader":
                x = "<member>"
            elif k in ("dbSize", "raftIndex", "raftAppliedIndex", "raftTerm"):
                x = "<n>"
            elif k == "TTL" and "grantedTTL" in v:
                x = "<ttl>"
            elif k in ("peerURLs", "clientURLs"):
                x = [re.sub(r":\d+$", ":<port>", u) for u in x]
            else:
                x = norm(x, k)
            out[k] = x
        return out
    if isinstance(v, list):
        return [norm(x, parent) for x in v]
    return v
for line in open(sys.argv[1]):
    label, status, ctype, body = line.rstrip("\n").split("\t", 3)
    if ctype.startswith("application/json"):
        try:
            body = json.dumps(norm(json.loads(body)), separators=(",", ":"))  # keeps key order
        except ValueError:
            pass
    print("\t".join((label, status, ctype, body)))
PY
python3 "$T_TMP/norm.py" "$T_TMP/etcd.out" >"$T_TMP/etcd.norm"
python3 "$T_TMP/norm.py" "$T_TMP/cairn.out" >"$T_TMP/cairn.norm"

while IFS= read -r e && IFS= read -r c <&3; do
  t_eq "${e%%$'\t'*}" "$e" "$c"
done <"$T_TMP/etcd.norm" 3<"$T_TMP/cairn.norm"
t_eq "same number of answers" "$(wc -l <"$T_TMP/etcd.norm")" "$(wc -l <"$T_TMP/cairn.norm")"
t_done
