#!/usr/bin/env bash
# test_kubernetes_manifests: deploy/kubernetes/*.yaml and deploy/Containerfile, offline (issue 12).
#  1. Every YAML document parses (python3-yaml) and has what its kind requires: apiVersion, kind,
#     metadata.name; selectors (StatefulSet, both Services, the PodDisruptionBudget) that match the
#     pod template's labels; the StatefulSet's serviceName is the headless Service (which publishes
#     not-ready pods), 3 replicas started in parallel; container ports that Services and probes
#     name; volume mounts of declared volumes (the data volume claim and the run dir, in all three
#     containers, at the same paths); the same environment in the three containers; readiness on
#     gatewayd's /health, liveness not on it; anti-affinity across nodes; resources; non-root,
#     read-only root filesystem; every CAIRN_* variable and every --flag a real flag of the
#     daemons (`stored --help`). The Containerfile's base is Debian 12, its USER is the pod's
#     runAsUser, and the package it installs and the image the pods run carry the daemons' version.
#  2. The pods' command lines, run here: each container's command, args and environment taken
#     from the StatefulSet as the kubelet builds them (downward API: POD_NAME -> cairn-<i>, the
#     namespace -> default; $(VAR) expanded), with the cluster's addresses moved to loopback
#     (<pod>.cairn-peer.<ns>.svc:2380/2379 and 0.0.0.0:2380/2379 -> 127.0.0.1 and a port of
#     t_port per pod), the volumes -> temp dirs and /usr/bin -> $CAIRN_BIN: the 9 processes,
#     started together as the kubelet starts them, form a 3-member cluster (etcdctl endpoint
#     health --cluster, member list with the pods' names, put on one pod and get on the others;
#     a pod recreated with the same command lines and volumes rejoins and catches up);
#     the probes answer as the manifest comment says: /health and /version 200 with a leader;
#     with two pods gone, /health fails on the third while /version (liveness) still answers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
python3 -c 'import yaml' 2>/dev/null || { echo "skip: python3-yaml is not installed"; exit 0; }
K8S=$CAIRN_SRC/deploy/kubernetes
N=3
CPS=(); PPS=()
for ((i = 0; i < N; i++)); do CPS[i]=$(t_port); PPS[i]=$(t_port); done
"$CAIRN_BIN/stored" --help >"$T_TMP/help.txt" 2>&1 || true
"$CAIRN_BIN/stored" --version >"$T_TMP/version.txt" 2>&1 || true
grep -q -- '--initial-cluster ' "$T_TMP/help.txt" || t_fail "stored --help lists no flags"

# ---- 1. the manifests, checked; 2. the pods' processes, written out for bash to run ---------------
PYRC=0
python3 - "$K8S" "$CAIRN_SRC/deploy/Containerfile" "$T_TMP" "$CAIRN_BIN" "$T_TMP/help.txt" \
  "${CPS[*]}" "${PPS[*]}" >"$T_TMP/check.out" 2>&1 <<'PY' || PYRC=$?
import glob, os, re, sys, yaml

k8s, containerfile, tmp, cairn_bin, helpfile = sys.argv[1:6]
cports = [int(p) for p in sys.argv[6].split()]
pports = [int(p) for p in sys.argv[7].split()]
NS = "default"

def ok(msg): print("ok - " + msg)
def fail(msg): print("FAIL - " + msg)
def check(cond, msg):
    (ok if cond else fail)(msg)
    return cond
def get(d, path, default=None):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d
def selects(selector, labels):  # a label selector (matchLabels) that matches these labels
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

docs = []
files = sorted(glob.glob(os.path.join(k8s, "*.yaml")) + glob.glob(os.path.join(k8s, "*.yml")))
check(files, "deploy/kubernetes holds YAML files")
for f in files:
    try:
        with open(f) as fh:
            ds = [d for d in yaml.safe_load_all(fh) if d is not None]
        ok("%s parses: %d documents" % (os.path.basename(f), len(ds)))
        docs += ds
    except yaml.YAMLError as e:
        fail("%s does not parse: %s" % (os.path.basename(f), e))
API = {"StatefulSet": "apps/v1", "Service": "v1", "PodDisruptionBudget": "policy/v1", "ConfigMap": "v1"}
for d in docs:
    kind, name = d.get("kind"), get(d, "metadata.name")
    check(isinstance(kind, str) and isinstance(name, str) and name, "%s/%s: kind and metadata.name" % (kind, name))
    check(d.get("apiVersion") == API.get(kind), "%s/%s: apiVersion %s" % (kind, name, d.get("apiVersion")))
by_kind = {}
for d in docs:
    by_kind.setdefault(d.get("kind"), []).append(d)
sts_l, svcs, pdbs = by_kind.get("StatefulSet", []), by_kind.get("Service", []), by_kind.get("PodDisruptionBudget", [])
if not check(len(sts_l) == 1, "one StatefulSet"):
    sys.exit(1)
sts = sts_l[0]
spec, pod = sts["spec"], get(sts, "spec.template.spec", {})
labels = get(sts, "spec.template.metadata.labels", {})
check(selects(get(spec, "selector.matchLabels"), labels), "StatefulSet: selector matches the template's labels")
check(spec.get("replicas") == 3, "StatefulSet: 3 replicas")
check(spec.get("podManagementPolicy") == "Parallel", "StatefulSet: podManagementPolicy Parallel (no pod is ready before a quorum runs)")
headless = [s for s in svcs if get(s, "spec.clusterIP") == "None"]
check(len(headless) == 1 and spec.get("serviceName") == get(headless[0], "metadata.name"),
      "StatefulSet: serviceName %s is the headless Service" % spec.get("serviceName"))
check(headless and get(headless[0], "spec.publishNotReadyAddresses") is True,
      "headless Service publishes not-ready pods (members find each other before a leader exists)")
check(any(get(s, "spec.clusterIP") != "None" for s in svcs), "a client Service")
for s in svcs:
    check(selects(get(s, "spec.selector"), labels), "Service %s: selector matches the pods" % get(s, "metadata.name"))
check(len(pdbs) == 1, "one PodDisruptionBudget")
for p in pdbs:
    check(get(p, "spec.maxUnavailable") == 1, "PodDisruptionBudget: maxUnavailable 1")
    check(selects(get(p, "spec.selector.matchLabels"), labels), "PodDisruptionBudget: selector matches the pods")
check(pod.get("enableServiceLinks") is False, "enableServiceLinks: false (no <SERVICE>_PORT variables)")

containers = {c["name"]: c for c in pod.get("containers", [])}
check(sorted(containers) == ["gatewayd", "raftd", "stored"], "containers stored, raftd, gatewayd")
ports = {}
for c in containers.values():
    for p in c.get("ports", []):
        if check(isinstance(p.get("containerPort"), int), "%s: containerPort %s is a number" % (c["name"], p.get("containerPort"))):
            ports[p.get("name")] = p["containerPort"]
            ports[p["containerPort"]] = p["containerPort"]
check(ports.get("client") == 2379 and ports.get("peer") == 2380, "container ports client 2379, peer 2380")
for s in svcs:
    for p in get(s, "spec.ports", []):
        check(p.get("targetPort", p.get("port")) in ports, "Service %s: targetPort %s is a container port" % (get(s, "metadata.name"), p.get("targetPort")))
vols = {v["name"]: v for v in pod.get("volumes", [])}
claims = {get(v, "metadata.name"): v for v in spec.get("volumeClaimTemplates", [])}
check("data" in claims and get(claims["data"], "spec.resources.requests.storage"), "volumeClaimTemplates: data, with a size")
check(any("emptyDir" in v for v in vols.values()), "an emptyDir volume (the run dir)")
mounts = {}
for c in containers.values():
    for m in c.get("volumeMounts", []):
        check(m["name"] in vols or m["name"] in claims, "%s: mount %s is a declared volume" % (c["name"], m["name"]))
    mounts[c["name"]] = sorted((m["name"], m["mountPath"]) for m in c.get("volumeMounts", []))
check(len({tuple(v) for v in mounts.values()}) == 1 and len(mounts["stored"]) == 2,
      "the three containers mount the same two volumes at the same paths: %s" % mounts.get("stored"))
envs = [c.get("env", []) for c in containers.values()]
check(all(e == envs[0] for e in envs) and envs[0], "the three containers have the same environment (one configuration)")

gw = containers.get("gatewayd", {})
rp, lp = gw.get("readinessProbe", {}), gw.get("livenessProbe", {})
check(get(rp, "httpGet.path") == "/health" and ports.get(get(rp, "httpGet.port")) == 2379, "gatewayd readiness: /health on the client port")
check(get(lp, "httpGet.path") not in (None, "/health") and ports.get(get(lp, "httpGet.port")) == 2379,
      "gatewayd liveness: %s, not /health (which fails without a leader)" % get(lp, "httpGet.path"))
check(lp.get("failureThreshold", 3) * lp.get("periodSeconds", 10) >= 30, "liveness tolerates 30 s of failures")
aa = get(pod, "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution", []) or \
     [t.get("podAffinityTerm", {}) for t in get(pod, "affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution", [])]
check(any(t.get("topologyKey") == "kubernetes.io/hostname" and selects(get(t, "labelSelector.matchLabels"), labels) for t in aa),
      "pod anti-affinity: one member per node")
psc = pod.get("securityContext", {})
check(psc.get("runAsNonRoot") is True and isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, "pods run as a non-root uid")
for c in containers.values():
    sc = c.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False,
          "%s: read-only root filesystem, no privilege escalation" % c["name"])
    check(get(c, "resources.requests.cpu") and get(c, "resources.requests.memory") and get(c, "resources.limits.memory"),
          "%s: cpu/memory requests and a memory limit" % c["name"])
    check(c.get("image"), "%s: an image" % c["name"])

# every setting is a real flag of the daemons
flags = set(re.findall(r"^\s+(--[a-z0-9-]+)", open(helpfile).read(), re.M))
for c in containers.values():
    for e in c.get("env", []):
        if e["name"].startswith("CAIRN_"):
            f = "--" + e["name"][6:].lower().replace("_", "-")
            check(f in flags, "%s: %s is the flag %s" % (c["name"], e["name"], f))
    for a in c.get("args", []) + c.get("command", [])[1:]:
        if a.startswith("--"):
            check(a.split("=")[0] in flags, "%s: %s is a flag of the daemons" % (c["name"], a.split("=")[0]))

cf = open(containerfile).read()
check(re.search(r"^FROM\s+\S*debian:12", cf, re.M), "Containerfile: FROM Debian 12")
m = re.search(r"^USER\s+(\d+)", cf, re.M)
check(m and int(m.group(1)) == psc.get("runAsUser"), "Containerfile: USER %s is the pods' runAsUser" % (m and m.group(1)))
check(re.search(r"apt-get install .*cairn.*\.deb", cf) is not None, "Containerfile installs the cairn package")
# the version the daemons print, in the package the image installs and in the image the pods run
version = re.search(r"\(cairn\) ([0-9.]+)", open(os.path.join(tmp, "version.txt")).read())
version = version.group(1) if version else "?"
m = re.search(r"^ARG CAIRN_DEB=cairn_([0-9.]+)_", cf, re.M)
check(m and m.group(1) == version, "Containerfile installs cairn_%s (the daemons' version)" % version)
for c in containers.values():
    check(str(c.get("image", "")).endswith(":" + version), "%s: image %s is tagged %s" % (c["name"], c.get("image"), version))

# ---- the pods' processes, as the kubelet would start them, moved to loopback
def expand(s, env):  # Kubernetes' $(VAR) expansion; $$ is a literal $
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), s)
name, svc = get(sts, "metadata.name"), spec.get("serviceName")
n = spec.get("replicas", 0)
launch = os.path.join(tmp, "launch")
os.makedirs(launch, exist_ok=True)
for i in range(n):
    podname = "%s-%d" % (name, i)
    rewrites = []
    for j in range(n):
        host = "%s-%d.%s.%s.svc" % (name, j, svc, NS)
        rewrites += [(host + ":2380", "127.0.0.1:%d" % pports[j]), (host + ":2379", "127.0.0.1:%d" % cports[j])]
    rewrites += [("0.0.0.0:2380", "127.0.0.1:%d" % pports[i]), ("0.0.0.0:2379", "127.0.0.1:%d" % cports[i])]
    for c in containers.values():
        for mname, path in mounts[c["name"]]:
            rewrites.append((path, os.path.join(tmp, podname, mname)))
            os.makedirs(os.path.join(tmp, podname, mname), exist_ok=True)
    def local(s):
        for a, b in rewrites:
            s = s.replace(a, b)
        return s
    for cname in ("stored", "raftd", "gatewayd"):
        c = containers[cname]
        env = {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
            else:
                fp = get(e, "valueFrom.fieldRef.fieldPath")
                if fp in ("metadata.name", "metadata.namespace"):
                    env[e["name"]] = podname if fp == "metadata.name" else NS
                else:
                    fail("%s: %s comes from %s, which this test cannot give" % (cname, e["name"], e.get("valueFrom")))
        argv = [expand(a, env) for a in c.get("command", []) + c.get("args", [])]
        if not check(argv and argv[0].startswith("/usr/bin/"), "%s: runs a binary of the package (/usr/bin)" % cname):
            continue
        argv[0] = os.path.join(cairn_bin, os.path.basename(argv[0]))
        env = {k: local(v) for k, v in env.items()}
        argv = [argv[0]] + [local(a) for a in argv[1:]]
        left = [s for s in list(env.values()) + argv if re.search(r"\.svc\b|0\.0\.0\.0|:238[09]\b|\$\(", s)]
        check(not left, "%s %s: every cluster address moved to loopback %s" % (podname, cname, left))
        with open(os.path.join(launch, "%d-%s.env" % (i, cname)), "w") as f:
            f.writelines("%s=%s\n" % kv for kv in sorted(env.items()))
        with open(os.path.join(launch, "%d-%s.argv" % (i, cname)), "w") as f:
            f.writelines(a + "\n" for a in argv)
ok("wrote the command lines of %d pods" % n)
PY
while IFS= read -r line; do
  case $line in
    "ok - "*) t_ok "${line#ok - }" ;;
    "FAIL - "*) t_fail "${line#FAIL - }" ;;
    *) echo "$line" ;;
  esac
done <"$T_TMP/check.out"
[ "$PYRC" -eq 0 ] || t_fail "the manifest check stopped (exit $PYRC)"
[ "$T_FAILS" -eq 0 ] || { t_done; exit 1; }

# ---- 2. the 3 pods' 9 processes, started together ---------------------------------------------
echo "  pod 0 stored: $(tr '\n' ' ' <"$T_TMP/launch/0-stored.env")"
declare -A PODPID # [pod,container] -> PID
start_pod() { # I: the pod's three containers, started together as the kubelet starts them
  local i=$1 c
  for c in stored raftd gatewayd; do
    mapfile -t ENVV <"$T_TMP/launch/$i-$c.env"
    mapfile -t ARGV <"$T_TMP/launch/$i-$c.argv"
    # only the pod's environment (as the kubelet gives it), and the sanitizers' options of a CI build
    t_start_daemon "$T_TMP/pod$i.log" env -i PATH=/usr/bin:/bin ${ASAN_OPTIONS:+"ASAN_OPTIONS=$ASAN_OPTIONS"} \
      ${UBSAN_OPTIONS:+"UBSAN_OPTIONS=$UBSAN_OPTIONS"} "${ENVV[@]}" "${ARGV[@]}"
    PODPID[$i,$c]=$T_LAST_PID
  done
}
stop_pod() { local i=$1 c; for c in gatewayd raftd stored; do t_stop "${PODPID[$i,$c]}"; done; }
for ((i = 0; i < N; i++)); do start_pod "$i"; done
# shellcheck disable=SC2034 # t_wait_healthy prints its tail
C_LOG=$T_TMP/pod0.log
EP0=127.0.0.1:${CPS[0]}
if t_wait_healthy "$EP0" 30; then t_ok "pod 0 is healthy"; else t_fail "pod 0 is not healthy"; fi
HEALTH=$(etcdctl --endpoints="$EP0" --command-timeout=5s endpoint health --cluster 2>&1 || true)
echo "$HEALTH" | sed 's/^/    /'
t_eq "endpoint health --cluster: 3 members, all healthy" 3 "$(grep -c 'is healthy' <<<"$HEALTH")"
MEMBERS=$(etcdctl --endpoints="$EP0" member list 2>&1 || true)
for ((i = 0; i < N; i++)); do
  t_contains "member list: cairn-$i, peer URL from the manifest" "cairn-$i, http://127.0.0.1:${PPS[i]}, http://127.0.0.1:${CPS[i]}" "$MEMBERS"
done
t_eq "put on pod 1" OK "$(etcdctl --endpoints="127.0.0.1:${CPS[1]}" put k8s-test manifest 2>&1)"
for i in 0 2; do
  t_eq "get on pod $i" manifest "$(etcdctl --endpoints="127.0.0.1:${CPS[i]}" get k8s-test --print-value-only 2>&1)"
done
# a pod deleted and recreated (same name, same volumes, same command lines - initial-cluster-state
# still "new"): it finds its data, rejoins, and has what was written while it was away
stop_pod 2
t_eq "put while pod 2 is away" OK "$(etcdctl --endpoints="127.0.0.1:${CPS[1]}" put k8s-away written 2>&1)"
start_pod 2
if t_wait_healthy "127.0.0.1:${CPS[2]}" 30; then t_ok "pod 2 recreated: healthy again"; else t_fail "pod 2 recreated: not healthy"; fi
t_eq "... and has the write it missed" written "$(etcdctl --endpoints="127.0.0.1:${CPS[2]}" get k8s-away --print-value-only 2>&1)"
t_eq "... still 3 members" 3 "$(etcdctl --endpoints="$EP0" member list 2>/dev/null | grep -c started)"
code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$1$2" || true; }
t_eq "readiness probe /health: 200 with a leader" 200 "$(code "$EP0" /health)"
t_eq "liveness probe /version: 200" 200 "$(code "$EP0" /version)"
# two pods gone: pod 0 has no quorum, so no leader; it must turn unready, not be restarted
stop_pod 1; stop_pod 2
health_fails() { [ "$(code "$EP0" /health)" != 200 ]; }
if t_wait_until 20 health_fails; then t_ok "no quorum: readiness /health fails on pod 0"; else t_fail "pod 0 /health still 200 without a quorum"; fi
t_eq "no quorum: liveness /version still 200 (the pod is not restarted)" 200 "$(code "$EP0" /version)"
for c in gatewayd raftd stored; do
  p=${PODPID[0,$c]}
  kill -TERM "$p"; rc=0; wait "$p" || rc=$?
  t_eq "pod 0 $c: SIGTERM stops it with status 0" 0 "$rc"
done
t_done
