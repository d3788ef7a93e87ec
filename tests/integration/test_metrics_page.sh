#!/usr/bin/env bash
# /metrics is one page for the whole node (services/gatewayd/gw_metrics.c): the gateway's own
# families, raftd's and stored's (each process answers CAIRN_IPC_METRICS with its own table),
# every family exactly once, in the Prometheus text format. A process that does not answer
# (killed) costs the scrape at most about a second, and its families come from the gateway's
# last status instead: the page never disappears and never repeats a family.
source "$(dirname "$0")/lib.sh"

t_start_cairn m0 "$(t_port)" "$(t_port)"
t_wait_healthy "$C_EP" || { t_fail "node not healthy"; t_done; exit 1; }
for i in $(seq 1 20); do etcdctl --endpoints="$C_EP" put "/m/$i" "v$i" >/dev/null; done

# check_page LABEL PAGE: each family has one HELP and one TYPE line; every sample line belongs
# to the family declared last (name, name_bucket/_sum/_count for histograms); the text ends
# with a newline. Prints problems, exit status 1 when there are any.
cat >"$T_TMP/check_page.py" <<'PY'
import sys, re
label, text = sys.argv[1], sys.stdin.read()
bad = []
if not text.endswith("\n"):
    bad.append("page does not end with a newline")
helps, types, cur = {}, {}, None
for ln in text.splitlines():
    if ln.startswith("# HELP "):
        n = ln.split()[2]
        helps[n] = helps.get(n, 0) + 1
        cur = n
    elif ln.startswith("# TYPE "):
        n = ln.split()[2]
        types[n] = types.get(n, 0) + 1
        if n != cur:
            bad.append("TYPE %s outside its family" % n)
    elif ln:
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", ln).group(0)
        if cur is None or name not in (cur, cur + "_bucket", cur + "_sum", cur + "_count"):
            bad.append("sample %s outside its family (%s)" % (name, cur))
for n, c in helps.items():
    if c != 1:
        bad.append("family %s appears %d times" % (n, c))
    if types.get(n) != 1:
        bad.append("family %s has %s TYPE lines" % (n, types.get(n)))
for b in bad[:10]:
    print("%s: %s" % (label, b))
print("%s: %d families" % (label, len(helps)), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
check_page() { python3 "$T_TMP/check_page.py" "$1"; }

curl -s -m 5 -o "$T_TMP/page" "http://$C_EP/metrics"; page=$(cat "$T_TMP/page")
out=$(check_page "all up" <"$T_TMP/page") && t_ok "/metrics: every family once, well formed" || t_fail "$out"
for name in etcd_server_has_leader etcd_server_is_leader etcd_debugging_mvcc_current_revision \
            etcd_mvcc_db_total_size_in_bytes; do
  grep -qE "^$name -?[0-9]" <<<"$page" && t_ok "/metrics has $name" || t_fail "/metrics lacks $name"
done
rev=$(etcdctl --endpoints="$C_EP" get /m/1 -w json | python3 -c 'import json,sys;print(json.load(sys.stdin)["header"]["revision"])')
t_wait_until 5 bash -c "curl -s http://$C_EP/metrics | grep -qx 'etcd_debugging_mvcc_current_revision $rev'" &&
  t_ok "current revision on the page is the store's ($rev)" ||
  t_fail "current revision: $(curl -s "http://$C_EP/metrics" | grep '^etcd_debugging_mvcc_current_revision') want $rev"
# gRPC calls by method and code (go-grpc-prometheus' names and labels)
grep -qE '^grpc_server_handled_total\{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"\} 20$' <<<"$page" &&
  t_ok "grpc_server_handled_total counts the 20 Puts by method and code" ||
  t_fail "grpc_server_handled_total: $(grep '^grpc_server_handled_total' <<<"$page" | head -5)"
# process_*: the node's figure unlabelled, as etcd has it (etcdctl check datascale parses
# "process_resident_memory_bytes <value>"), and a series per process under cairn_process_*
grep -qE "^process_resident_memory_bytes [1-9][0-9.e+]*$" <<<"$page" && t_ok "process_resident_memory_bytes, unlabelled" ||
  t_fail "process_resident_memory_bytes: $(grep '^process_resident' <<<"$page")"
sum=0
for proc in gatewayd raftd stored; do
  v=$(grep -E "^cairn_process_resident_memory_bytes\{process=\"$proc\"\} " <<<"$page" | awk '{print $2}')
  [ -n "$v" ] && t_ok "cairn_process_resident_memory_bytes for $proc" || t_fail "no cairn_process_resident_memory_bytes for $proc"
  sum=$(python3 -c "print(int($sum + float('${v:-0}')))")
done
node=$(grep -E "^process_resident_memory_bytes " <<<"$page" | awk '{print $2}')
t_eq "the node's figure is the sum of its processes'" "$sum" "$(python3 -c "print(int(float('${node:-0}')))")"
# families only the other processes own (they answer METRICS with their own tables)
for name in ${METRICS_RAFTD_FAMILIES:-} ${METRICS_STORED_FAMILIES:-}; do
  grep -q "^# TYPE $name " <<<"$page" && t_ok "/metrics has $name" || t_fail "/metrics lacks $name"
done

# raftd gone: the page still comes, in about a second, still with every family once
t_kill9 "$C_RAFTD"
t0=$(date +%s%N)
curl -s -m 5 -o "$T_TMP/page" "http://$C_EP/metrics"; page=$(cat "$T_TMP/page")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 3000 ] && t_ok "/metrics without raftd answered in ${ms} ms" || t_fail "/metrics without raftd took ${ms} ms"
out=$(check_page "raftd down" <"$T_TMP/page") && t_ok "/metrics without raftd: every family once" || t_fail "$out"
grep -qE "^etcd_server_has_leader [0-9]" <<<"$page" && t_ok "has_leader still served (the gateway's last status)" ||
  t_fail "has_leader missing when raftd is down"

# --metrics extensive adds grpc_server_handling_seconds (a histogram by method), basic does not
grep -q "^# TYPE grpc_server_handling_seconds " <<<"$page" && t_fail "--metrics basic served the latency histogram" ||
  t_ok "--metrics basic: no grpc_server_handling_seconds"
t_stop "$C_STORED" "$C_GW"
BASE_TMP=$T_TMP; T_TMP=$BASE_TMP/extensive; mkdir -p "$T_TMP" # its own data dirs
T_EXTRA_FLAGS="--metrics extensive"
t_start_cluster 1
t_wait_healthy "${C_EPS[0]}" || t_fail "the extensive node is not healthy"
etcdctl --endpoints="${C_EPS[0]}" put /x y >/dev/null
grep -qE '^grpc_server_handling_seconds_count\{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"\} 1$' \
  <<<"$(curl -s "http://${C_EPS[0]}/metrics")" && t_ok "--metrics extensive: grpc_server_handling_seconds counts the Put" ||
  t_fail "--metrics extensive: $(curl -s "http://${C_EPS[0]}/metrics" | grep handling_seconds_count)"
T_TMP=$BASE_TMP

# --listen-metrics-urls: one more listener serving /metrics and /health only (plain HTTP, as
# etcd's): the JSON API and gRPC are not served there
t_stop "${C_STOREDS[0]}" "${C_RAFTDS[0]}" "${C_GWS[0]}"
MP=$(t_port)
T_TMP=$BASE_TMP/mlisten; mkdir -p "$T_TMP"
T_EXTRA_FLAGS="--listen-metrics-urls http://127.0.0.1:$MP"
t_start_cluster 1
t_wait_healthy "${C_EPS[0]}" || t_fail "the node with a metrics listener is not healthy"
grep -q "^# TYPE etcd_server_has_leader gauge" <<<"$(curl -s "http://127.0.0.1:$MP/metrics")" &&
  t_ok "--listen-metrics-urls serves /metrics" || t_fail "--listen-metrics-urls: no /metrics"
t_eq "--listen-metrics-urls serves /health" '{"health":"true"}' "$(curl -s "http://127.0.0.1:$MP/health")"
t_eq "--listen-metrics-urls does not serve the JSON API" "404" \
  "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"key":"YQ=="}' "http://127.0.0.1:$MP/v3/kv/range")"
etcdctl --endpoints="127.0.0.1:$MP" --command-timeout=2s get a >/dev/null 2>&1 &&
  t_fail "--listen-metrics-urls answered a gRPC call" || t_ok "--listen-metrics-urls does not serve gRPC"
T_TMP=$BASE_TMP
t_done
