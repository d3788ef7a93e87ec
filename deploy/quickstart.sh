#!/usr/bin/env bash
# Fresh Debian 12 -> a running single-node Cairn on 127.0.0.1:2379 (foreground; Ctrl-C stops it).
# Installs what is missing, builds, and runs `cairnctl run` with a data dir under ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/deps.sh
BUILD=build bash deploy/build.sh
NAME=${CAIRN_NAME:-cairn1}
DATA=${CAIRN_DATA:-$PWD/data/$NAME}
mkdir -p "$DATA"
cat <<MSG
Cairn node "$NAME" starting; data in $DATA.
Point etcdctl at it from another terminal:
    ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 put hello world
    ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 get hello
    ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 endpoint status -w table
    curl http://127.0.0.1:2379/health
MSG
exec ./build/cairnctl run --name "$NAME" --data-dir "$DATA" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "$NAME=http://127.0.0.1:2380" "$@"
