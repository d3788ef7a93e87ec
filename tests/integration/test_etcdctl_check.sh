#!/usr/bin/env bash
# etcdctl's own checks pass against Cairn: `check datascale` (10k puts of 1 KiB, memory read
# from /metrics' process_resident_memory_bytes) and `check perf --load=s` (60 s of writes:
# throughput, slowest request, standard deviation).
source "$(dirname "$0")/lib.sh"
t_start_cluster 1
EP=${C_EPS[0]}
t_wait_healthy "$EP" || { t_fail "not healthy"; t_done; exit 1; }
out=$(timeout 120 etcdctl --endpoints="$EP" check datascale --load=s 2>&1 | tr '\r' '\n' | tail -3)
grep -q "^PASS" <<<"$out" && ! grep -q FAIL <<<"$out" && t_ok "etcdctl check datascale: $(grep PASS <<<"$out" | head -1)" ||
  t_fail "etcdctl check datascale: $out"
out=$(timeout 150 etcdctl --endpoints="$EP" check perf --load=s 2>&1 | tr '\r' '\n' | grep -E "PASS|FAIL")
grep -qx "PASS" <<<"$out" && ! grep -q FAIL <<<"$out" && t_ok "etcdctl check perf: $(paste -sd' ' <<<"$out")" ||
  t_fail "etcdctl check perf: $out"
t_done
