#!/usr/bin/env bash
# Starts an N-member Cairn cluster on loopback (distinct ports and data dirs), prints the
# endpoints, and stops it cleanly on Ctrl-C (or SIGTERM). Each member runs under its own
# `cairnctl run` supervisor.
#   deploy/local-cluster.sh [N=3] [BASE_PORT=23790]
# Member i listens for clients on BASE_PORT+10*i and for peers on BASE_PORT+10*i+1; data
# lives in ${CAIRN_CLUSTER_DIR:-./data/cluster}/m<i>.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
BASE=${2:-23790}
BIN=${CAIRN_BIN:-$PWD/build}
DIR=${CAIRN_CLUSTER_DIR:-$PWD/data/cluster}
[ -x "$BIN/cairnctl" ] || { echo "local-cluster: $BIN/cairnctl not built (run deploy/build.sh or set CAIRN_BIN)" >&2; exit 1; }
case $N in 1|3|5|7) ;; *) echo "local-cluster: N should be odd (1, 3, 5, 7)" >&2; exit 2 ;; esac
cluster=""
for ((i = 0; i < N; i++)); do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((BASE + 10 * i + 1))"; done
PIDS=()
stop() {
  trap - INT TERM EXIT
  echo "local-cluster: stopping ${#PIDS[@]} members"
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "local-cluster: stopped"
}
trap stop INT TERM EXIT
EPS=()
for ((i = 0; i < N; i++)); do
  c=$((BASE + 10 * i)); p=$((c + 1))
  mkdir -p "$DIR/m$i"
  "$BIN/cairnctl" run --name "m$i" --data-dir "$DIR/m$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$cluster" --initial-cluster-token "cairn-local-$N" >"$DIR/m$i.log" 2>&1 &
  PIDS+=($!)
  EPS+=("127.0.0.1:$c")
done
ENDPOINTS=$(IFS=,; echo "${EPS[*]}")
echo "local-cluster: $N members running; logs in $DIR/m*.log"
echo "  export ETCDCTL_API=3 ENDPOINTS=$ENDPOINTS"
echo "  etcdctl --endpoints=\$ENDPOINTS endpoint status -w table"
echo "  etcdctl --endpoints=\$ENDPOINTS member list -w table"
echo "Ctrl-C stops the cluster."
wait
