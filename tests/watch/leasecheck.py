#!/usr/bin/python3
"""leasecheck: checks the etcd v3 Lease behaviour of a server (etcd or Cairn).

Run with Debian's /usr/bin/python3 (python3-etcd3, python3-grpcio).  Every check prints
"ok" or "MISMATCH: what differed"; exit status 1 if anything differed, 2 if unreachable.
See README.md.
"""
import argparse, os, queue, random, sys, threading, time

import grpc
from etcd3.etcdrpc import rpc_pb2, kv_pb2, rpc_pb2_grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from watchcheck import open_watch, create_req, prefix_end, MD  # noqa: E402


class LeaseCheck:
    def __init__(self, a):
        self.a = a
        self.ch = grpc.insecure_channel(a.endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.ch)
        self.lease = rpc_pb2_grpc.LeaseStub(self.ch)
        self.T = a.call_timeout
        self.fails = 0
        self.notes = []
        self.prefix = ("/leasecheck/%d-%d/" % (int(time.time()), os.getpid())).encode()
        self.granted = []

    def check(self, name, ok, detail=""):
        print("%-58s %s" % (name, "ok" if ok else "MISMATCH: " + detail))
        if not ok:
            self.fails += 1
        return ok

    def expect_error(self, name, fn, code, msg):
        try:
            r = fn()
        except grpc.RpcError as e:
            return self.check(name, e.code() == code and e.details() == msg,
                              "got %s %r, expected %s %r" % (e.code(), e.details(), code, msg))
        return self.check(name, False, "no error (response %s), expected %s %r" % (str(r).replace("\n", " "), code, msg))

    def grant(self, ttl, lid=0):
        r = self.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lid), timeout=self.T)
        self.granted.append(r.ID)
        return r

    def put(self, key, lease=0):
        return self.kv.Put(rpc_pb2.PutRequest(key=key, value=b"v", lease=lease), timeout=self.T)

    def exists(self, key):
        return self.kv.Range(rpc_pb2.RangeRequest(key=key), timeout=self.T).count == 1

    def ttl(self, lid, keys=False):
        return self.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=keys), timeout=self.T)

    def watch(self, key, range_end):
        """A raw watch collecting every WatchResponse (with arrival time) in a list."""
        q, out = queue.Queue(), []

        def gen():
            while True:
                x = q.get()
                if x is None:
                    return
                yield x
        call = open_watch(self.ch, gen(), self.a.ttl_wait + 120)
        q.put(create_req(key, range_end, prev_kv=True))

        def rd():
            try:
                for r in call:
                    out.append((time.time(), r))
            except grpc.RpcError:
                pass
        threading.Thread(target=rd, daemon=True).start()
        t = time.time()
        while not out and time.time() - t < 5:
            time.sleep(0.02)
        return call, q, out

    def keepalive_stream(self, lid, period, stop):
        """Sends KeepAlive for lid every period seconds; returns the list of responses."""
        q, out = queue.Queue(), []

        def gen():
            while True:
                x = q.get()
                if x is None:
                    return
                yield x
        call = self.lease.LeaseKeepAlive(gen(), timeout=self.a.ttl_wait + 120, metadata=MD)

        def rd():
            try:
                for r in call:
                    out.append(r)
            except grpc.RpcError as e:
                out.append(e)

        def wr():
            while not stop.is_set():
                q.put(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
                stop.wait(period)
            q.put(None)
        threading.Thread(target=rd, daemon=True).start()
        threading.Thread(target=wr, daemon=True).start()
        return call, out

    def delete_events(self, out, keys, after_index=0):
        """(revisions, responses, events) of DELETE events of keys seen in the watch output."""
        revs, resps, evs = set(), 0, []
        for _, r in out[after_index:]:
            mine = [e for e in r.events if e.type == kv_pb2.Event.DELETE and e.kv.key in keys]
            if mine:
                resps += 1
                evs.extend(mine)
                revs.update(e.kv.mod_revision for e in mine)
        return revs, resps, evs

    def run(self):
        a = self.a
        try:
            self.kv.Range(rpc_pb2.RangeRequest(key=b"leasecheck"), timeout=self.T)
        except grpc.RpcError as e:
            print("leasecheck: cannot reach %s: %s %s" % (a.endpoint, e.code(), e.details()))
            return 2
        P = self.prefix
        print("leasecheck: endpoint=%s prefix=%s" % (a.endpoint, P.decode()))

        # --- grant ---------------------------------------------------------------------
        lid = random.randrange(1 << 40, 1 << 62)
        r = self.grant(10, lid)
        self.check("grant with chosen ID returns that ID and TTL", r.ID == lid and r.TTL == 10 and not r.error,
                   "ID=%d TTL=%d error=%r (asked ID=%d TTL=10)" % (r.ID, r.TTL, r.error, lid))
        r2 = self.grant(10)
        self.check("grant with ID=0 picks a positive random ID", r2.ID > 0 and r2.ID != lid and r2.TTL == 10,
                   "ID=%d TTL=%d" % (r2.ID, r2.TTL))
        r3 = self.grant(1)
        want = max(1, a.min_ttl)
        self.check("grant TTL=1 is raised to the minimum (%d)" % a.min_ttl, r3.TTL == want, "TTL=%d" % r3.TTL)
        self.notes.append("grant TTL=1 -> TTL=%d (ID %d)" % (r3.TTL, r3.ID))
        self.expect_error("grant an existing ID", lambda: self.grant(10, lid),
                          grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease already exists")
        self.expect_error("grant TTL > 9e9", lambda: self.grant(9000000001),
                          grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")
        rl = self.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=self.T)
        ids = set(x.ID for x in rl.leases)
        self.check("Leases lists the granted leases", {lid, r2.ID, r3.ID} <= ids,
                   "missing %s" % ({lid, r2.ID, r3.ID} - ids))

        # --- unknown leases ------------------------------------------------------------------
        unknown = random.randrange(1 << 40, 1 << 62)
        self.expect_error("put with an unknown lease", lambda: self.put(P + b"x", unknown),
                          grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
        self.expect_error("revoke an unknown lease",
                          lambda: self.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=unknown), timeout=self.T),
                          grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
        t = self.ttl(unknown)
        self.check("TimeToLive of an unknown lease: TTL=-1 grantedTTL=0", t.TTL == -1 and t.grantedTTL == 0,
                   "TTL=%d grantedTTL=%d" % (t.TTL, t.grantedTTL))
        stop = threading.Event()
        call, out = self.keepalive_stream(unknown, 10, stop)
        end = time.time() + 5
        while not out and time.time() < end:
            time.sleep(0.02)
        stop.set()
        ok = out and not isinstance(out[0], Exception) and out[0].ID == unknown and out[0].TTL == 0
        self.check("keepalive of an unknown lease answers TTL 0", bool(ok), "got %r" % (out[:1],))
        call.cancel()

        # --- keys with a lease; watcher on the prefix ---------------------------------------
        wcall, wq, wout = self.watch(P, prefix_end(P))
        self.check("watch on the prefix created", bool(wout) and wout[0][1].created, "no created response")
        ttl = max(a.min_ttl, a.ttl)
        kept = self.grant(ttl)
        expiring = self.grant(ttl)
        revoked = self.grant(ttl * 10)
        kk = [P + b"kept/%d" % i for i in range(3)]
        ek = [P + b"exp/%d" % i for i in range(3)]
        rk = [P + b"rev/%d" % i for i in range(3)]
        for k in kk:
            self.put(k, kept.ID)
        for k in rk:
            self.put(k, revoked.ID)
        for k in ek:
            pr = self.put(k, expiring.ID)
        t_exp_granted = time.time()   # granted just before; last key put now
        rkv = self.kv.Range(rpc_pb2.RangeRequest(key=ek[0]), timeout=self.T)
        self.check("put with lease: the KV carries the lease ID", rkv.kvs and rkv.kvs[0].lease == expiring.ID,
                   "kvs=%s" % (list(rkv.kvs),))
        t = self.ttl(kept.ID, keys=True)
        self.check("TimeToLive with keys lists the attached keys",
                   sorted(t.keys) == sorted(kk) and t.grantedTTL == ttl and 0 < t.TTL <= ttl,
                   "keys=%s grantedTTL=%d TTL=%d" % (list(t.keys), t.grantedTTL, t.TTL))
        t = self.ttl(kept.ID, keys=False)
        self.check("TimeToLive without keys lists none", len(t.keys) == 0, "keys=%s" % list(t.keys))

        # keep 'kept' alive, let 'expiring' expire
        stop = threading.Event()
        kcall, kout = self.keepalive_stream(kept.ID, max(0.5, ttl / 3.0), stop)
        time.sleep(max(0, ttl - 1.0 - (time.time() - t_exp_granted)))
        self.check("keys of a lease still present 1 s before its TTL", all(self.exists(k) for k in ek),
                   "some key of the expiring lease is already gone at TTL-1 s")
        deadline = t_exp_granted + ttl + a.slack
        expired_at = None
        while time.time() < deadline:
            revs, _, _ = self.delete_events(wout, set(ek))
            if revs:
                expired_at = time.time()
                break
            time.sleep(0.05)
        time.sleep(0.5)
        revs, nresp, evs = self.delete_events(wout, set(ek))
        self.check("unrenewed lease expires within TTL+%gs (keys deleted)" % a.slack,
                   expired_at is not None and not any(self.exists(k) for k in ek),
                   "no DELETE events after %.1f s; keys present: %s" % (time.time() - t_exp_granted, [k for k in ek if self.exists(k)]))
        if expired_at:
            self.notes.append("lease TTL %d s expired after %.2f s (DELETE events seen by the watcher)" % (ttl, expired_at - t_exp_granted))
        self.check("expiry: all DELETE events in one revision and one response",
                   len(revs) == 1 and nresp == 1 and sorted(e.kv.key for e in evs) == sorted(ek),
                   "revisions=%s responses=%d keys=%s" % (sorted(revs), nresp, [e.kv.key for e in evs]))
        if evs:
            e = evs[0]
            self.notes.append("expiry DELETE event: kv={key, mod_revision=%d, create_revision=%d, version=%d, value=%r, lease=%d} prev_kv.lease=%d"
                              % (e.kv.mod_revision, e.kv.create_revision, e.kv.version, e.kv.value, e.kv.lease, e.prev_kv.lease))
            self.check("expiry DELETE event kv has only key and mod_revision",
                       e.kv.create_revision == 0 and e.kv.version == 0 and e.kv.value == b"" and e.kv.lease == 0,
                       str(e.kv).replace("\n", " "))
            self.check("expiry DELETE event carries prev_kv with the lease", e.prev_kv.lease == expiring.ID,
                       "prev_kv=%s" % str(e.prev_kv).replace("\n", " "))
        t = self.ttl(expiring.ID)
        self.check("TimeToLive of the expired lease: TTL=-1", t.TTL == -1, "TTL=%d grantedTTL=%d" % (t.TTL, t.grantedTTL))
        ids = set(x.ID for x in self.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=self.T).leases)
        self.check("Leases no longer lists the expired lease", expiring.ID not in ids, "still listed")

        # the kept-alive lease survives well past its TTL
        time.sleep(max(0, ttl + a.slack + 1 - (time.time() - t_exp_granted)))
        self.check("keepalive stream keeps keys past the TTL", all(self.exists(k) for k in kk),
                   "missing %s after %.1f s" % ([k for k in kk if not self.exists(k)], time.time() - t_exp_granted))
        stop.set()
        good = [x for x in kout if not isinstance(x, Exception)]
        self.check("keepalive responses carry the ID and the granted TTL",
                   len(good) >= 2 and all(x.ID == kept.ID and x.TTL == ttl for x in good),
                   "responses=%s" % [(x.ID, x.TTL) if not isinstance(x, Exception) else x for x in kout[:5]])
        kcall.cancel()

        # keepalive of the expired lease
        stop2 = threading.Event()
        c2, o2 = self.keepalive_stream(expiring.ID, 10, stop2)
        end = time.time() + 5
        while not o2 and time.time() < end:
            time.sleep(0.02)
        stop2.set()
        self.check("keepalive of an expired lease answers TTL 0",
                   bool(o2) and not isinstance(o2[0], Exception) and o2[0].TTL == 0, "got %r" % (o2[:1],))
        c2.cancel()

        # --- revoke ------------------------------------------------------------------------
        n0 = len(wout)
        rr = self.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=revoked.ID), timeout=self.T)
        end = time.time() + 5
        while time.time() < end and not self.delete_events(wout, set(rk), n0)[0]:
            time.sleep(0.05)
        time.sleep(0.3)
        revs, nresp, evs = self.delete_events(wout, set(rk), n0)
        self.check("revoke deletes the keys in one revision, one response",
                   len(revs) == 1 and nresp == 1 and sorted(e.kv.key for e in evs) == sorted(rk)
                   and not any(self.exists(k) for k in rk),
                   "revisions=%s responses=%d keys=%s" % (sorted(revs), nresp, [e.kv.key for e in evs]))
        if revs:
            self.notes.append("revoke response header.revision=%d, DELETE events at revision %s, order %s"
                              % (rr.header.revision, sorted(revs), [e.kv.key.decode() for e in evs]))
            self.check("revoke response header.revision is the revision of the DELETE events",
                       rr.header.revision == min(revs), "header %d events %s" % (rr.header.revision, sorted(revs)))
        t = self.ttl(revoked.ID)
        self.check("TimeToLive of a revoked lease: TTL=-1", t.TTL == -1, "TTL=%d" % t.TTL)
        # a revoke of a lease without keys does not create a revision
        empty = self.grant(ttl * 10)
        before = self.kv.Range(rpc_pb2.RangeRequest(key=b"leasecheck"), timeout=self.T).header.revision
        self.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=empty.ID), timeout=self.T)
        after = self.kv.Range(rpc_pb2.RangeRequest(key=b"leasecheck"), timeout=self.T).header.revision
        self.check("revoking a lease without keys does not bump the revision", after == before,
                   "revision %d -> %d" % (before, after))

        # cleanup
        wq.put(None)
        wcall.cancel()
        for l in (lid, r2.ID, r3.ID, kept.ID):
            try:
                self.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=l), timeout=self.T)
            except grpc.RpcError:
                pass
        print("---- notes ----")
        for n in self.notes:
            print("  " + n)
        print("leasecheck: %s" % ("all checks passed" if not self.fails else "%d MISMATCHES" % self.fails))
        return 1 if self.fails else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default="127.0.0.1:2379", help="host:port (plaintext gRPC)")
    ap.add_argument("--ttl", type=int, default=3, help="TTL of the leases that expire / are kept alive")
    ap.add_argument("--min-ttl", type=int, default=2, help="the server's minimum TTL (etcd: ceil(1.5 x election timeout))")
    ap.add_argument("--slack", type=float, default=3.0, help="seconds allowed past the TTL for expiry")
    ap.add_argument("--call-timeout", type=float, default=5.0)
    a = ap.parse_args()
    a.ttl_wait = a.ttl * 3 + a.slack + 10
    hard = threading.Timer(a.ttl_wait + 90, lambda: (print("leasecheck: hard timeout, giving up"), sys.stdout.flush(), os._exit(3)))
    hard.daemon = True
    hard.start()
    try:
        rc = LeaseCheck(a).run()
    except grpc.RpcError as e:
        print("leasecheck: unexpected error %s %s" % (e.code(), e.details()))
        rc = 1
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
