#!/usr/bin/env bash
# Installs exactly what Cairn needs to build, test and be compared against etcd, on Debian 12.
# Idempotent: packages already present are not touched, and apt-get update runs only when
# something is missing.
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      libzmq3-dev libczmq-dev libmsgpack-dev libleveldb-dev libsnappy-dev libcriterion-dev
      libnghttp2-dev libssl-dev libprotobuf-c-dev protobuf-c-compiler
      etcd-server etcd-client nghttp2-client curl python3 python3-zmq python3-etcd3 python3-grpcio
      clang libclang-rt-14-dev python3-yaml lintian libfuse3-dev fuse3)
# clang and its runtime libraries (libFuzzer, the sanitizers' runtimes: a Recommends of clang
# that --no-install-recommends leaves out) build only the fuzz targets (tests/fuzz/); no library
# of the build comes from them. python3-yaml parses deploy/kubernetes in
# test_kubernetes_manifests; lintian checks the Debian package in test_package (dpkg-dev, for
# dpkg-shlibdeps, comes with build-essential).
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
