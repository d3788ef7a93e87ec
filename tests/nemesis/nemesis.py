#!/usr/bin/python3
"""nemesis.py - one seeded fault run against a real Cairn cluster (see tests/nemesis/README).

Starts an N-member cluster (stored + raftd + gatewayd per member, CAIRN_TEST_FAULTS=1) under
--dir, runs the linearizability workload (tests/linearizability/client.py) and, with --watch, a
watch-guarantee checker (tests/watch/watchcheck.py) against it, and meanwhile injects faults
chosen by a PRNG seeded with --seed:
  kill     kill -9 of stored, raftd or gatewayd of any member, restarted after 0.1-1.0 s
  pause    SIGSTOP of any process (half the time the leader's raftd) for 0.5-5 s, then SIGCONT
  isolate  <run-dir>/fault-isolate on a member (half the time the leader) for 1-6 s
  asym     <run-dir>/fault-drop-to on a member naming 1..N-1 peers: what it sends to them is
           dropped, what they send arrives (asymmetric partition), for 1-6 s
  clock    <run-dir>/fault-clock-offset-ms raised by 0.2-5 s on a member: its raftd's clock jumps
           forward (all of raftd's timers: ticks, leases, deadlines)
  crash    (only with --crashfs) a power loss of a member's disk: kill -9 of its stored, then
           `crash` (every unsynced write undone) or `tear` (a seeded subset of the unsynced pages
           undone), by a seeded choice among --crashfs-modes, written to the control file of the
           lazyfs (tests/crashfs/lazyfs.c) its data dir is on; stored restarted after 0.1-1.0 s.
           The caller mounts the file systems: member i's data dir is <dir>/fs<i>/m<i> on a lazyfs
           mounted at <dir>/fs<i>, its run dir <dir>/m<i>-run (ipc sockets never on FUSE);
           tests/nemesis/run.sh --crashfs does it.
The first faults are one of each kind (in a seeded order), so even a short run has them all.
At most --max-concurrent faults are under way at once (each on a different process/member).
When the load ends, every fault is healed, every member must be healthy again, and:
  - the history (plus a final read of each key) must be linearizable (checker.py);
  - every acknowledged write / successful CAS must be in the store's revision history (a watch
    from revision 1 over the workload's prefix), no value may appear there that no write issued
    or that a failed CAS carried, and no value may be applied twice (ackcheck.py);
  - watchcheck.py must report no violation (with --watch).
The seed is printed first; the last line is a JSON summary (ops, faults by kind, violations).
Exit status: 0 pass, 1 violation, 2 setup failure / undecided (cluster did not start, checker
out of budget). The daemons it started are killed (by PID) on every exit path; their PIDs are
also listed in <dir>/pids for a caller's trap.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
LIN = os.path.join(SRC, "tests", "linearizability")
WATCH = os.path.join(SRC, "tests", "watch")
PY = "/usr/bin/python3"
KINDS = ["kill", "pause", "isolate", "asym", "clock"]
CRASH_MODES = ["crash", "tear"]
PROCS = ["stored", "raftd", "gatewayd"]


def log(msg):
    sys.stdout.write("# %7.2f %s\n" % (time.monotonic() - T0, msg))
    sys.stdout.flush()


T0 = time.monotonic()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def etcdctl(eps, args, timeout=2.0, stdin=None):
    cmd = ["etcdctl", "--endpoints=" + eps, "--dial-timeout=1s", "--command-timeout=%gs" % timeout] + args
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout + 5,
                           env=dict(os.environ, ETCDCTL_API="3"))
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", "timeout"


class Cluster:
    def __init__(self, n, bindir, d, ports, token, crashfs=False):
        self.n, self.bin, self.dir = n, bindir, d
        self.crashfs = crashfs
        self.lock = threading.RLock()
        self.procs = {}  # (i, kind) -> Popen
        self.all_pids = []
        self.names = ["m%d" % i for i in range(n)]
        pp = ports[:n]
        cp = ports[n:2 * n]
        self.eps = ["127.0.0.1:%d" % p for p in cp]
        cluster = ",".join("m%d=http://127.0.0.1:%d" % (i, pp[i]) for i in range(n))
        self.flags = []
        self.logs = []
        for i in range(n):
            # with --crashfs the data dir is on member i's lazyfs, the run dir (sockets) outside it
            data = os.path.join(d, "fs%d" % i, "m%d" % i) if crashfs else os.path.join(d, "m%d" % i)
            extra = ["--run-dir", self.run_dir(i)] if crashfs else []
            self.flags.append(["--name", "m%d" % i, "--data-dir", data] + extra + [
                               "--listen-client-urls", "http://" + self.eps[i],
                               "--advertise-client-urls", "http://" + self.eps[i],
                               "--listen-peer-urls", "http://127.0.0.1:%d" % pp[i],
                               "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % pp[i],
                               "--initial-cluster", cluster, "--initial-cluster-token", token])
            self.logs.append(os.path.join(d, "m%d.log" % i))
        self.ids = {}  # member index -> hex id

    def run_dir(self, i):
        if self.crashfs:
            return os.path.join(self.dir, "m%d-run" % i)
        return os.path.join(self.dir, "m%d" % i, "run")

    def ctl(self, i):
        """member i's lazyfs control file (--crashfs)"""
        return os.path.join(self.dir, "fs%d" % i, ".lazyfs-ctl")

    def lazyfs(self, i, cmd=None):
        """sends cmd (crash, tear) to member i's lazyfs (the write returns once it is done);
        returns its status line"""
        if cmd:
            with open(self.ctl(i), "w") as f:
                f.write(cmd + "\n")
        with open(self.ctl(i)) as f:
            return f.read().strip()

    def start(self, i, kind):
        with self.lock:
            args = [os.path.join(self.bin, kind)] + self.flags[i]
            if kind == "gatewayd":
                args += ["--gateway-id", "gw1"]
            lf = open(self.logs[i], "a")
            p = subprocess.Popen(args, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(os.environ, CAIRN_TEST_FAULTS="1"))
            lf.close()
            self.procs[(i, kind)] = p
            self.all_pids.append(p.pid)
            with open(os.path.join(self.dir, "pids"), "a") as f:
                f.write("%d\n" % p.pid)
            return p

    def start_all(self):
        for i in range(self.n):
            os.makedirs(self.run_dir(i), exist_ok=True)
            for k in PROCS:
                self.start(i, k)

    def kill9(self, i, kind):
        with self.lock:
            p = self.procs.get((i, kind))
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()

    def signal(self, i, kind, sig):
        with self.lock:
            p = self.procs.get((i, kind))
        if p and p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass

    def stop_all(self):
        with self.lock:
            ps = list(self.procs.values())
        for p in ps:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 5
        for p in ps:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in ps:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()

    def healthy(self, i, secs):
        end = time.monotonic() + secs
        while time.monotonic() < end:
            rc, _, _ = etcdctl(self.eps[i], ["endpoint", "health"], 1.0)
            if rc == 0:
                return True
            time.sleep(0.2)
        return False

    def leader(self):
        """index of the member that says it leads, or None"""
        rc, out, _ = etcdctl(",".join(self.eps), ["endpoint", "status", "-w", "json"], 1.0)
        try:
            st = json.loads(out)
        except ValueError:
            return None
        for s in st:
            d = s.get("Status", {})
            if d.get("leader") and d.get("leader") == d.get("header", {}).get("member_id"):
                ep = s.get("Endpoint", "")
                if ep in self.eps:
                    return self.eps.index(ep)
        return None

    def learn_ids(self):
        rc, out, _ = etcdctl(",".join(self.eps), ["member", "list", "-w", "json"], 3.0)
        try:
            for m in json.loads(out).get("members", []):
                if m.get("name") in self.names:
                    self.ids[self.names.index(m["name"])] = "%016x" % m["ID"]
        except (ValueError, AttributeError):
            pass


class Nemesis:
    def __init__(self, c, rng, kinds, max_conc, stop_at, crash_modes=None):
        self.c, self.rng, self.kinds = c, rng, kinds
        self.crash_modes = crash_modes or CRASH_MODES
        self.mode_counts = {m: 0 for m in self.crash_modes}
        self.max_conc = max_conc
        self.stop_at = stop_at
        self.busy = set()
        self.lock = threading.Lock()
        self.counts = {k: 0 for k in kinds}
        self.threads = []
        self.clock_total = [0] * c.n
        self.active = 0
        self.cover = list(kinds)
        rng.shuffle(self.cover)

    def _claim(self, res):
        with self.lock:
            if res in self.busy or self.active >= self.max_conc:
                return False
            self.busy.add(res)
            self.active += 1
            return True

    def _release(self, res):
        with self.lock:
            self.busy.discard(res)
            self.active -= 1

    def _sleep(self, s):
        # a fault never outlives the fault window by more than its own length
        time.sleep(s)

    def plan(self):
        """draws the next fault from the PRNG (all draws happen here, in order, so the schedule
        of a seed is the same from run to run)"""
        r = self.rng
        kind = r.choice(self.kinds)
        if self.cover:  # the first faults: each kind once, in a seeded order
            kind = self.cover.pop(0)
        i = r.randrange(self.c.n)
        f = {"kind": kind, "member": i, "leader_bias": r.random() < 0.5}
        if kind == "kill":
            f["proc"] = r.choice(PROCS)
            f["down"] = round(r.uniform(0.1, 1.0), 2)
        elif kind == "pause":
            f["proc"] = r.choice(PROCS)
            f["secs"] = round(r.uniform(0.5, 5.0), 2)
        elif kind == "isolate":
            f["secs"] = round(r.uniform(1.0, 6.0), 2)
        elif kind == "asym":
            others = [j for j in range(self.c.n) if j != i]
            f["to"] = sorted(r.sample(others, r.randint(1, len(others))))
            f["secs"] = round(r.uniform(1.0, 6.0), 2)
        elif kind == "clock":
            f["jump_ms"] = r.randint(200, 5000)
        elif kind == "crash":
            f["proc"] = "stored"  # claims the same resource as a kill of this member's stored
            f["mode"] = r.choice(self.crash_modes)
            f["down"] = round(r.uniform(0.1, 1.0), 2)
        f["gap"] = round(r.uniform(0.3, 2.5), 2)
        return f

    def run_one(self, f):
        c = self.c
        kind, i = f["kind"], f["member"]
        if f["leader_bias"] and kind in ("pause", "isolate", "asym", "clock"):
            l = c.leader()
            if l is not None:
                i = l
                if kind == "pause":
                    f["proc"] = "raftd"
                if kind == "asym":
                    f["to"] = [j for j in f["to"] if j != i] or [(i + 1) % c.n]
        res = (i, f.get("proc")) if kind in ("kill", "pause", "crash") else (i, "net" if kind in ("isolate", "asym") else kind)
        if not self._claim(res):
            return False
        t = threading.Thread(target=self._do, args=(f, i, res), daemon=True)
        t.start()
        self.threads.append(t)
        return True

    def _do(self, f, i, res):
        c = self.c
        kind = f["kind"]
        try:
            if kind == "kill":
                log("fault kill -9 %s of m%d, down %.2fs" % (f["proc"], i, f["down"]))
                c.kill9(i, f["proc"])
                self._sleep(f["down"])
                c.start(i, f["proc"])
            elif kind == "pause":
                log("fault SIGSTOP %s of m%d for %.2fs" % (f["proc"], i, f["secs"]))
                c.signal(i, f["proc"], signal.SIGSTOP)
                self._sleep(f["secs"])
                c.signal(i, f["proc"], signal.SIGCONT)
            elif kind == "isolate":
                log("fault isolate m%d for %.2fs" % (i, f["secs"]))
                path = os.path.join(c.run_dir(i), "fault-isolate")
                open(path, "w").close()
                self._sleep(f["secs"])
                os.unlink(path)
            elif kind == "asym":
                to = f["to"]
                log("fault m%d drops what it sends to %s for %.2fs" % (i, ",".join("m%d" % j for j in to), f["secs"]))
                path = os.path.join(c.run_dir(i), "fault-drop-to")
                words = []
                for j in to:
                    words.append("m%d" % j)
                    if j in c.ids:
                        words.append(c.ids[j])
                tmp = path + ".tmp"
                with open(tmp, "w") as fh:
                    fh.write(" ".join(words) + "\n")
                os.replace(tmp, path)
                self._sleep(f["secs"])
                os.unlink(path)
            elif kind == "crash":
                c.kill9(i, "stored")
                before = c.lazyfs(i)
                after = c.lazyfs(i, f["mode"])
                log("fault power loss of m%d's disk: kill -9 stored, lazyfs %s (before: %s), down %.2fs" % (
                    i, f["mode"], before, f["down"]))
                log("  m%d's lazyfs after: %s" % (i, after))
                with self.lock:
                    self.mode_counts[f["mode"]] += 1
                self._sleep(f["down"])
                c.start(i, "stored")
            elif kind == "clock":
                self.clock_total[i] += f["jump_ms"]
                log("fault clock of m%d's raftd jumps %d ms forward (total %d)" % (i, f["jump_ms"], self.clock_total[i]))
                path = os.path.join(c.run_dir(i), "fault-clock-offset-ms")
                tmp = path + ".tmp"
                with open(tmp, "w") as fh:
                    fh.write("%d\n" % self.clock_total[i])
                os.replace(tmp, path)
                self._sleep(0.3)
            with self.lock:
                self.counts[kind] += 1
        finally:
            self._release(res)

    def loop(self, start_after):
        time.sleep(start_after)
        while time.monotonic() < self.stop_at:
            f = self.plan()
            time.sleep(f["gap"])
            if time.monotonic() >= self.stop_at:
                break
            # waits (up to 5 s) while its target is busy or too many faults are under way
            end = time.monotonic() + 5
            while not self.run_one(dict(f)) and time.monotonic() < min(end, self.stop_at):
                time.sleep(0.2)

    def heal(self):
        for t in self.threads:
            t.join(10)
        c = self.c
        for i in range(c.n):
            for k in PROCS:
                c.signal(i, k, signal.SIGCONT)
                with c.lock:
                    p = c.procs.get((i, k))
                if p is None or p.poll() is not None:
                    log("heal: m%d's %s was not running (rc=%s): restarting" % (i, k, p and p.returncode))
                    c.start(i, k)
            for fn in ("fault-isolate", "fault-drop-to"):
                try:
                    os.unlink(os.path.join(c.run_dir(i), fn))
                except FileNotFoundError:
                    pass


def final_reads(c, keys, hist):
    """a linearizable read of every key after the run, appended to the history"""
    extra = []
    for k in keys:
        for attempt in range(20):
            ep = c.eps[attempt % c.n]
            t0 = time.monotonic()
            rc, out, err = etcdctl(ep, ["get", k, "-w", "json"], 3.0)
            t1 = time.monotonic()
            if rc == 0:
                import base64
                d = json.loads(out)
                v = None
                for kv in d.get("kvs") or []:
                    if base64.b64decode(kv["key"]).decode() == k:
                        v = base64.b64decode(kv.get("value", "")).decode()
                extra.append({"client": 9999, "key": k, "endpoint": ep, "f": "read", "invoke": t0,
                              "complete": t1, "type": "ok", "value": v, "final": True})
                break
            time.sleep(0.3)
        else:
            return None
    with open(hist, "a") as fh:
        for d in extra:
            fh.write(json.dumps(d) + "\n")
    return extra


def dump_events(c, prefix, out):
    """every event of the prefix from revision 1 (a watch, ended once it reaches the current
    revision), written as JSON lines {rev, type, key, value}"""
    import etcd3
    for attempt in range(10):
        ep = c.eps[attempt % c.n]
        host, port = ep.split(":")
        try:
            cl = etcd3.client(host=host, port=int(port), timeout=10)
            resp = cl.put(prefix + "~end", "end")
            end_rev = resp.header.revision
            evs = []
            it, cancel = cl.watch_prefix(prefix, start_revision=1)
            deadline = time.monotonic() + 30
            done = False
            for ev in it:
                k = ev.key.decode()
                if k == prefix + "~end":
                    done = True
                    cancel()
                    break
                evs.append({"rev": ev.mod_revision, "type": type(ev).__name__, "key": k,
                            "value": ev.value.decode() if ev.value else None})
                if time.monotonic() > deadline:
                    cancel()
                    break
            if done:
                with open(out, "w") as fh:
                    for e in evs:
                        fh.write(json.dumps(e) + "\n")
                return len(evs)
        except Exception as e:  # noqa: BLE001 - a member may still be recovering: try the next
            log("event dump via %s failed: %s" % (ep, str(e)[:120]))
            time.sleep(1)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--bin", default=os.environ.get("CAIRN_BIN", os.path.join(SRC, "build")))
    ap.add_argument("--dir", required=True, help="work directory (data dirs, logs, history)")
    ap.add_argument("--ports", default="", help="2N free ports (peer ports then client ports)")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--keys", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--watch", action="store_true", help="also run watchcheck.py under the faults")
    ap.add_argument("--crashfs", action="store_true",
                    help="data dirs on lazyfs mounts <dir>/fs<i> (made by the caller, e.g. run.sh --crashfs); "
                         "adds the fault kind crash")
    ap.add_argument("--crashfs-modes", default=",".join(CRASH_MODES),
                    help="what a crash fault sends to lazyfs, drawn at random: crash, tear or both")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    kinds = [k for k in a.kinds.split(",") if k]
    if a.crashfs and "crash" not in kinds:
        kinds.append("crash")
    modes = [m for m in a.crashfs_modes.split(",") if m]
    print("nemesis seed=%d nodes=%d seconds=%g kinds=%s watch=%d crashfs=%s dir=%s" % (
        seed, a.nodes, a.seconds, ",".join(kinds), a.watch, ",".join(modes) if a.crashfs else "no", a.dir), flush=True)
    for k in kinds:
        if k not in KINDS + (["crash"] if a.crashfs else []):
            sys.exit("unknown fault kind " + k + ("" if a.crashfs else " (crash needs --crashfs)"))
    for m in modes:
        if m not in CRASH_MODES:
            sys.exit("unknown --crashfs-modes mode " + m)
    os.makedirs(a.dir, exist_ok=True)
    ports = [int(p) for p in a.ports.split(",") if p] or [free_port() for _ in range(2 * a.nodes)]
    c = Cluster(a.nodes, a.bin, a.dir, ports, "nemesis-%d" % seed, a.crashfs)
    rng = random.Random(seed)
    summary = {"seed": seed, "nodes": a.nodes, "seconds": a.seconds, "result": "FAIL",
               "violations": {}}
    watch_p = client_p = None

    def on_term(sig, frm):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    try:
        if a.crashfs:
            for i in range(a.nodes):
                if not os.path.exists(c.ctl(i)):
                    log("--crashfs: no lazyfs mounted at %s (tests/nemesis/run.sh --crashfs mounts them)" % os.path.dirname(c.ctl(i)))
                    summary["result"] = "SETUP"
                    return 2
        c.start_all()
        for i in range(a.nodes):
            if not c.healthy(i, 40):
                log("member m%d did not become healthy" % i)
                summary["result"] = "SETUP"
                return 2
        c.learn_ids()
        hist = os.path.join(a.dir, "history.jsonl")
        prefix = "nem-%d/" % seed
        keys = ["%sk%d" % (prefix, k) for k in range(a.keys)]
        eps = ",".join(c.eps)
        client_p = subprocess.Popen(
            [PY, os.path.join(LIN, "client.py"), "--endpoints", eps, "--out", hist,
             "--clients", str(a.clients), "--duration", str(a.seconds), "--seed", str(seed),
             "--keys", str(a.keys), "--prefix", prefix, "--command-timeout", "2"],
            stdout=open(os.path.join(a.dir, "client.out"), "w"),
            stderr=open(os.path.join(a.dir, "client.err"), "w"))
        if a.watch:
            watch_p = subprocess.Popen(
                [PY, os.path.join(WATCH, "watchcheck.py"), "--endpoints", eps, "--seconds", str(a.seconds),
                 "--writers", "2", "--watchers", "10", "--past-watchers", "3", "--streams", "3",
                 "--keys", "20", "--write-delay", "0.02", "--no-compact", "--seed", str(seed),
                 "--prefix", "/nemwatch/%d/" % seed],
                stdout=open(os.path.join(a.dir, "watch.out"), "w"), stderr=subprocess.STDOUT)
        nem = Nemesis(c, rng, kinds, a.max_concurrent, time.monotonic() + a.seconds - 2, modes)
        nem.loop(1.5)
        nem.heal()
        summary["faults"] = dict(nem.counts)
        log("faults: " + json.dumps(nem.counts))
        if a.crashfs:
            summary["crash_modes"] = dict(nem.mode_counts)
            for i in range(a.nodes):
                log("m%d's lazyfs: %s" % (i, c.lazyfs(i)))
        client_p.wait()
        with open(os.path.join(a.dir, "client.out")) as fh:
            lines = fh.read().strip().splitlines()
        cs = json.loads(lines[-1]) if lines else {}
        summary["ops"] = cs.get("ops", 0)
        summary["completed"] = cs.get("completed", 0)
        summary["by_outcome"] = cs.get("by_outcome", {})
        log("client: " + json.dumps(cs))
        viol = summary["violations"]
        for i in range(a.nodes):
            if not c.healthy(i, 60):
                viol["unhealthy_after_heal"] = viol.get("unhealthy_after_heal", 0) + 1
                log("member m%d not healthy 60 s after the faults were healed" % i)
        if summary["completed"] < 20:
            viol["too_few_ops"] = 1
        fr = final_reads(c, keys, hist)
        if fr is None:
            viol["final_read_failed"] = 1
        else:
            log("final values: " + ", ".join("%s=%s" % (d["key"], d["value"]) for d in fr))
        evf = os.path.join(a.dir, "events.jsonl")
        nev = dump_events(c, prefix, evf)
        if nev is None:
            viol["event_dump_failed"] = 1
        else:
            p = subprocess.run([PY, os.path.join(HERE, "ackcheck.py"), hist, evf], capture_output=True, text=True)
            for line in p.stdout.strip().splitlines():
                log("ackcheck: " + line)
            if p.returncode != 0:
                viol["lost_or_phantom_write"] = 1
        p = subprocess.run([PY, os.path.join(LIN, "checker.py"), "--budget", "2000000", "--time-limit", "120", hist],
                           capture_output=True, text=True)
        for line in p.stdout.strip().splitlines()[-15:]:
            log("checker: " + line)
        if p.returncode == 1:
            viol["linearizability"] = 1
        elif p.returncode != 0:
            viol["checker_undecided"] = 1
        if watch_p:
            try:
                wrc = watch_p.wait(240)
            except subprocess.TimeoutExpired:
                watch_p.kill()
                wrc = watch_p.wait()
            with open(os.path.join(a.dir, "watch.out")) as fh:
                wout = fh.read()
            for line in wout.strip().splitlines()[-12:]:
                log("watchcheck: " + line)
            summary["watch_rc"] = wrc
            if wrc != 0:
                viol["watch"] = wrc
        summary["result"] = "PASS" if not viol else "FAIL"
        return 0 if not viol else (2 if set(viol) == {"checker_undecided"} else 1)
    except KeyboardInterrupt:
        summary["result"] = "INTERRUPTED"
        return 2
    finally:
        for p in (client_p, watch_p):
            if p and p.poll() is None:
                p.kill()
                p.wait()
        c.stop_all()
        if summary["result"] != "PASS":
            summary["replay"] = "tests/nemesis/run.sh --seed %d --nodes %d --seconds %g%s%s" % (
                seed, a.nodes, a.seconds, " --watch" if a.watch else "",
                " --crashfs --crashfs-modes " + ",".join(modes) if a.crashfs else "")
        print("NEMESIS " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    sys.exit(main())
