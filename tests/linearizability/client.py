#!/usr/bin/env python3
"""Linearizability workload: concurrent clients doing get / put / compare-and-swap on a few keys
through `etcdctl` (API v3), recording a history for checker.py.

Usage:
  client.py --endpoints H:P[,H:P...] --out HISTORY.jsonl [--clients 6] [--duration 20]
            [--max-ops N] [--keys 3] [--prefix lin-<random>/] [--command-timeout 2]

Client i talks only to endpoint i mod len(endpoints) (followers included). Each op:
  read  (50%)  etcdctl get KEY -w json            -> value, or null when the key is absent
  write (25%)  etcdctl put KEY VALUE              -> ok
  cas   (25%)  etcdctl txn: value("KEY") = "E" (or version("KEY") = "0" for "absent")
               then put KEY NEW                   -> ok (SUCCESS) / fail (FAILURE)
With --serializable-reads, gets use --consistency=s (served locally, may be stale): a negative
control against a real cluster, not part of the test.
Every written value is unique (client id, sequence number). The expected value of a CAS is the
value this client last saw for the key (often stale under contention: CAS fails are expected).

Outcomes: a command that exits 0 with a parsable answer is "ok"/"fail" with its result. Anything
else (non-zero exit, timeout, unparsable output) is "unknown" for a write or CAS: the request may
have been applied even though the client saw an error -- clientv3 retries some failures
internally, and a timeout can come after the proposal was committed -- so the checker lets it
take effect at any time after its invocation, or never. A failed read has no effect and is
recorded as "unknown" only for the statistics (the checker drops it).

invoke/complete are time.monotonic() taken just before the etcdctl process is started and just
after it exits, so the real operation lies inside [invoke, complete].
"""
import argparse
import base64
import json
import os
import random
import subprocess
import sys
import threading
import time


def etcdctl(ep, args, timeout_s, stdin=None):
    cmd = ["etcdctl", "--endpoints=" + ep, "--dial-timeout=%gs" % timeout_s,
           "--command-timeout=%gs" % timeout_s] + args
    env = dict(os.environ, ETCDCTL_API="3")
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env,
                           timeout=2 * timeout_s + 3)
    except subprocess.TimeoutExpired:
        return None, "", "etcdctl killed after %gs" % (2 * timeout_s + 3)
    return p.returncode, p.stdout, p.stderr


def do_read(ep, key, to, serializable=False):
    args = ["get", key, "-w", "json"] + (["--consistency=s"] if serializable else [])
    rc, out, err = etcdctl(ep, args, to)
    if rc != 0:
        return "unknown", None, err.strip()[-200:]
    try:
        d = json.loads(out)
    except ValueError:
        return "unknown", None, "unparsable: " + out[:200]
    kvs = d.get("kvs") or []
    for kv in kvs:
        if base64.b64decode(kv["key"]).decode() == key:
            return "ok", base64.b64decode(kv.get("value", "")).decode(), None
    if kvs:
        return "unknown", None, "get returned other keys: %r" % kvs
    return "ok", None, None


def do_write(ep, key, value, to):
    rc, out, err = etcdctl(ep, ["put", key, value], to)
    if rc == 0 and out.strip() == "OK":
        return "ok", None
    return "unknown", (err or out).strip()[-200:]


def do_cas(ep, key, expected, new, to):
    if expected is None:
        cmp = 'version("%s") = "0"' % key
    else:
        cmp = 'value("%s") = "%s"' % (key, expected)
    script = "%s\n\nput %s %s\n\n\n" % (cmp, key, new)
    rc, out, err = etcdctl(ep, ["txn"], to, stdin=script)
    first = out.strip().split("\n", 1)[0].strip() if out.strip() else ""
    if rc == 0 and first == "SUCCESS":
        return "ok", None
    if rc == 0 and first == "FAILURE":
        return "fail", None
    return "unknown", (err or out).strip()[-200:]


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = []
        self.errors = []

    def add(self, rec, err=None):
        with self.lock:
            self.ops.append(rec)
            if err is not None and len(self.errors) < 50:
                self.errors.append("%s %s %s: %s" % (rec["client"], rec["f"], rec["key"], err))


def worker(cid, ep, keys, deadline, max_ops, counter, rec, to, seed, serializable):
    rng = random.Random(seed)
    seq = 0
    last = {}  # key -> last value this client saw (None = absent)
    while time.monotonic() < deadline:
        with counter["lock"]:
            if counter["n"] >= max_ops:
                return
            counter["n"] += 1
        key = rng.choice(keys)
        r = rng.random()
        base = {"client": cid, "key": key, "endpoint": ep}
        if r < 0.5:
            t0 = time.monotonic()
            typ, val, err = do_read(ep, key, to, serializable)
            t1 = time.monotonic()
            d = dict(base, f="read", invoke=t0, complete=t1, type=typ)
            if typ == "ok":
                d["value"] = val
                last[key] = val
            rec.add(d, err)
        elif r < 0.75:
            seq += 1
            val = "c%d-%d" % (cid, seq)
            t0 = time.monotonic()
            typ, err = do_write(ep, key, val, to)
            t1 = time.monotonic()
            rec.add(dict(base, f="write", invoke=t0, complete=t1 if typ != "unknown" else None,
                         type=typ, value=val), err)
            if typ == "ok":
                last[key] = val
        else:
            seq += 1
            new = "c%d-%d" % (cid, seq)
            exp = last.get(key)
            t0 = time.monotonic()
            typ, err = do_cas(ep, key, exp, new, to)
            t1 = time.monotonic()
            rec.add(dict(base, f="cas", invoke=t0, complete=t1 if typ != "unknown" else None,
                         type=typ, expected=exp, new=new), err)
            if typ == "ok":
                last[key] = new
        if typ == "unknown":
            time.sleep(0.1 + 0.2 * rng.random())  # the endpoint is in trouble: do not spin


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoints", required=True, help="comma-separated host:port list")
    ap.add_argument("--out", required=True)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-ops", type=int, default=100000)
    ap.add_argument("--keys", type=int, default=3)
    ap.add_argument("--prefix", default=None, help="key prefix (default: lin-<random>/)")
    ap.add_argument("--command-timeout", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--serializable-reads", action="store_true",
                    help="read with --consistency=s (local, possibly stale: NOT linearizable; a "
                         "way to see the checker catch real stale reads from followers)")
    a = ap.parse_args()
    eps = [e for e in a.endpoints.split(",") if e]
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    prefix = a.prefix if a.prefix is not None else "lin-%08x/" % random.Random(seed).randrange(1 << 32)
    keys = ["%sk%d" % (prefix, i) for i in range(a.keys)]
    rec = Recorder()
    counter = {"lock": threading.Lock(), "n": 0}
    deadline = time.monotonic() + a.duration
    threads = [threading.Thread(target=worker, daemon=True,
                                args=(i, eps[i % len(eps)], keys, deadline, a.max_ops, counter, rec,
                                      a.command_timeout, seed * 1000 + i, a.serializable_reads))
               for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = sorted(rec.ops, key=lambda d: d["invoke"])
    with open(a.out, "w") as fh:
        for d in ops:
            fh.write(json.dumps(d) + "\n")
    stats = {}
    for d in ops:
        k = "%s_%s" % (d["f"], d["type"])
        stats[k] = stats.get(k, 0) + 1
    completed = sum(1 for d in ops if d["type"] != "unknown")
    summary = {"seed": seed, "keys": keys, "endpoints": eps, "ops": len(ops),
               "completed": completed, "by_outcome": dict(sorted(stats.items()))}
    print(json.dumps(summary))
    for e in rec.errors[:10]:
        print("  error: " + e, file=sys.stderr)


if __name__ == "__main__":
    main()
