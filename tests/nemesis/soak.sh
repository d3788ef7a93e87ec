#!/usr/bin/env bash
# tests/nemesis/soak.sh [--minutes 60] [--run-seconds 120] [--nodes 3,5] [--seed S] [--no-watch]
#                       [--crashfs] (each run on lazyfs mounts, with power losses: run.sh --crashfs)
# Back-to-back nemesis runs (tests/nemesis/run.sh) until --minutes have passed: run k has seed
# S+k (S random unless given) and the k-th cluster size of --nodes (cycled). Each run's NEMESIS
# summary line goes to <out>/runs.jsonl (out: $NEM_OUT or /var/tmp/cairn-nemesis-soak.<time>);
# a failed run keeps its directory (path in its log, <out>/run-<seed>.log). Prints a line per run
# and, at the end, the totals: runs, operations, faults of each kind, violations (with the seeds
# and replay commands). Exit status 0 when no run found a violation.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
minutes=60 run_secs=120 nodes_list=3,5 seed=$((RANDOM * 32768 + RANDOM)) watch=--watch crashfs=""
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --run-seconds) run_secs=$2; shift 2 ;;
    --nodes) nodes_list=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --no-watch) watch=""; shift ;;
    --crashfs) crashfs=--crashfs; shift ;;
    *) echo "usage: $0 [--minutes M] [--run-seconds S] [--nodes 3,5] [--seed S] [--no-watch] [--crashfs]" >&2; exit 2 ;;
  esac
done
out=${NEM_OUT:-/var/tmp/cairn-nemesis-soak.$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
IFS=, read -r -a sizes <<<"$nodes_list"
echo "soak: seeds from $seed, sizes ${sizes[*]}, ${run_secs}s runs for ${minutes} min; results in $out"
end=$((SECONDS + minutes * 60))
k=0
# a run takes its load time plus ~30-60 s (start, heal, checks, watchcheck's end): leave room
while [ $((end - SECONDS)) -ge 60 ]; do
  s=$((seed + k)); n=${sizes[k % ${#sizes[@]}]}
  secs=$run_secs
  [ $((end - SECONDS - 50)) -lt "$secs" ] && secs=$((end - SECONDS - 50))
  [ "$secs" -ge 20 ] || break
  # shellcheck disable=SC2086
  timeout -s TERM $((secs + 400)) "$here/run.sh" --seed "$s" --nodes "$n" --seconds "$secs" $watch $crashfs \
    >"$out/run-$s.log" 2>&1
  rc=$?
  line=$(grep '^NEMESIS ' "$out/run-$s.log" | tail -n 1 | cut -c9-)
  [ -n "$line" ] || line="{\"seed\": $s, \"nodes\": $n, \"result\": \"NO-SUMMARY\", \"rc\": $rc}"
  echo "$line" >>"$out/runs.jsonl"
  /usr/bin/python3 -c 'import json,sys;d=json.loads(sys.argv[1]);print("run %s: seed=%s nodes=%s %s ops=%s faults=%s violations=%s" % (sys.argv[2], d["seed"], d["nodes"], d["result"], d.get("ops"), d.get("faults"), d.get("violations")))' "$line" "$k"
  grep -E '^kept ' "$out/run-$s.log" || true
  k=$((k + 1))
done
/usr/bin/python3 - "$out/runs.jsonl" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
faults, viol, bad = {}, {}, []
for r in runs:
    for k, v in (r.get("faults") or {}).items():
        faults[k] = faults.get(k, 0) + v
    for k, v in (r.get("violations") or {}).items():
        viol[k] = viol.get(k, 0) + 1
    if r.get("result") != "PASS":
        bad.append(r)
print("SOAK runs=%d (3 members: %d, 5 members: %d) ops=%d completed=%d faults=%s total_faults=%d violations=%s failed_runs=%d" % (
    len(runs), sum(r.get("nodes") == 3 for r in runs), sum(r.get("nodes") == 5 for r in runs),
    sum(r.get("ops", 0) for r in runs), sum(r.get("completed", 0) for r in runs),
    json.dumps(faults), sum(faults.values()), json.dumps(viol), len(bad)))
for r in bad:
    print("  FAILED seed=%s nodes=%s result=%s violations=%s replay: %s" % (
        r.get("seed"), r.get("nodes"), r.get("result"), r.get("violations"), r.get("replay", "")))
sys.exit(1 if bad else 0)
PY
