#!/usr/bin/python3
"""watchcheck: checks the etcd v3 Watch guarantees of a server (etcd or Cairn).

Run with Debian's /usr/bin/python3 (needs python3-etcd3 and python3-grpcio).
Writers do Put / Delete / Txn / DeleteRange under a fresh prefix and record the revision
of every acknowledged write; many watchers (shared and own streams, several endpoints,
single key / prefix / range, prev_kv, NOPUT / NODELETE, past start revisions, random
disconnect + resume on another endpoint, progress_notify, progress requests) record every
raw WatchResponse.  Online checks run on each response; at the end one watch from the
first revision of the run over the whole prefix is the reference, and every watcher's
event list must equal the reference filtered by its key, filters and start revision.
See README.md.  Exit status: 0 = no violation, 1 = violations, 2 = usage / setup error.
"""
import argparse, collections, os, queue, random, sys, threading, time

import grpc
from etcd3.etcdrpc import rpc_pb2, kv_pb2, rpc_pb2_grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# ---------------------------------------------------------------------------------------
# The proto shipped with python3-etcd3 0.12 predates etcd 3.4: its WatchRequest has no
# progress_request, WatchCreateRequest no watch_id/fragment, WatchResponse no fragment.
# We describe the 3.4 messages (same field numbers as etcd's rpc.proto) on top of the
# shipped ResponseHeader / mvccpb.Event / WatchCancelRequest and call the same method path.
# ---------------------------------------------------------------------------------------
def _build_watch_messages():
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="cairn_watch34.proto", package="cairnwatch34",
                                             syntax="proto3", dependency=["rpc.proto", "kv.proto"])

    def msg(name, fields, oneof=None):
        m = fdp.message_type.add(name=name)
        if oneof:
            m.oneof_decl.add(name=oneof)
        for (fname, num, typ, label, tname, in_oneof) in fields:
            f = m.field.add(name=fname, number=num, type=typ, label=label)
            if tname:
                f.type_name = tname
            if in_oneof:
                f.oneof_index = 0
        return m

    O, R = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("WatchCreateRequest", [
        ("key", 1, F.TYPE_BYTES, O, None, False), ("range_end", 2, F.TYPE_BYTES, O, None, False),
        ("start_revision", 3, F.TYPE_INT64, O, None, False), ("progress_notify", 4, F.TYPE_BOOL, O, None, False),
        ("filters", 5, F.TYPE_ENUM, R, ".etcdserverpb.WatchCreateRequest.FilterType", False),
        ("prev_kv", 6, F.TYPE_BOOL, O, None, False), ("watch_id", 7, F.TYPE_INT64, O, None, False),
        ("fragment", 8, F.TYPE_BOOL, O, None, False)])
    msg("WatchProgressRequest", [])
    msg("WatchRequest", [
        ("create_request", 1, F.TYPE_MESSAGE, O, ".cairnwatch34.WatchCreateRequest", True),
        ("cancel_request", 2, F.TYPE_MESSAGE, O, ".etcdserverpb.WatchCancelRequest", True),
        ("progress_request", 3, F.TYPE_MESSAGE, O, ".cairnwatch34.WatchProgressRequest", True)],
        oneof="request_union")
    msg("WatchResponse", [
        ("header", 1, F.TYPE_MESSAGE, O, ".etcdserverpb.ResponseHeader", False),
        ("watch_id", 2, F.TYPE_INT64, O, None, False), ("created", 3, F.TYPE_BOOL, O, None, False),
        ("canceled", 4, F.TYPE_BOOL, O, None, False), ("compact_revision", 5, F.TYPE_INT64, O, None, False),
        ("cancel_reason", 6, F.TYPE_STRING, O, None, False), ("fragment", 7, F.TYPE_BOOL, O, None, False),
        ("events", 11, F.TYPE_MESSAGE, R, ".mvccpb.Event", False)])
    pool = descriptor_pool.Default()
    pool.Add(fdp)
    fac = message_factory.MessageFactory(pool)
    get = lambda n: fac.GetPrototype(pool.FindMessageTypeByName("cairnwatch34." + n))
    return get("WatchRequest"), get("WatchCreateRequest"), get("WatchProgressRequest"), get("WatchResponse")


WatchRequest, WatchCreateRequest, WatchProgressRequest, WatchResponse = _build_watch_messages()
WATCH_PATH = "/etcdserverpb.Watch/Watch"
NOPUT, NODELETE = rpc_pb2.WatchCreateRequest.NOPUT, rpc_pb2.WatchCreateRequest.NODELETE
PUT, DELETE = "PUT", "DELETE"
MD = (("hasleader", "true"),)


def prefix_end(p):
    b = bytearray(p)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\x00"
    b[-1] += 1
    return bytes(b)


def open_watch(channel, requests_iter, timeout):
    call = channel.stream_stream(WATCH_PATH, request_serializer=WatchRequest.SerializeToString,
                                 response_deserializer=WatchResponse.FromString)
    return call(requests_iter, timeout=timeout, metadata=MD)


def create_req(key, range_end=b"", start=0, prev_kv=False, filters=(), progress_notify=False):
    return WatchRequest(create_request=WatchCreateRequest(
        key=key, range_end=range_end, start_revision=start, prev_kv=prev_kv,
        filters=list(filters), progress_notify=progress_notify))


def progress_req():
    return WatchRequest(progress_request=WatchProgressRequest())


# ---------------------------------------------------------------------------------------
# Violations
# ---------------------------------------------------------------------------------------
class Violations:
    def __init__(self, detail_limit=8, lenient=()):
        self.counts = collections.Counter()
        self.details = collections.defaultdict(list)
        self.detail_limit = detail_limit
        self.lenient = set(lenient)       # kinds reported as warnings, not failures
        self.lock = threading.Lock()

    def add(self, kind, detail):
        with self.lock:
            self.counts[kind] += 1
            if len(self.details[kind]) < self.detail_limit:
                self.details[kind].append(detail)

    def failing(self):
        return {k: v for k, v in self.counts.items() if k not in self.lenient}

    def report(self, out=sys.stdout):
        if not self.counts:
            print("violations: none", file=out)
            return
        for k in sorted(self.counts):
            tag = " (warning only: --lenient)" if k in self.lenient else ""
            print("violations: %-32s %d%s" % (k, self.counts[k], tag), file=out)
        for k in sorted(self.details):
            for d in self.details[k]:
                print("  [%s] %s" % (k, d), file=out)


# An event as checked: (revision, type, key, value, prev) with prev = prev_kv.value or None.
def ev_tuple(ev):
    prev = ev.prev_kv.value if ev.HasField("prev_kv") else None
    typ = PUT if ev.type == kv_pb2.Event.PUT else DELETE
    return (ev.kv.mod_revision, typ, ev.kv.key, ev.kv.value if typ == PUT else b"", prev)


def fmt_ev(e):
    def s(b):
        return None if b is None else b.decode("utf-8", "replace")
    return "(rev=%d %s %s val=%s prev=%s)" % (e[0], e[1], s(e[2]), s(e[3]), s(e[4]))


def compare_events(expected, got):
    """Compare a watcher's event list with what it should have seen.
    Returns a list of (kind, detail); empty when equal."""
    out = []
    ident = lambda e: (e[0], e[1], e[2])
    # order: non-decreasing revisions
    for i in range(1, len(got)):
        if got[i][0] < got[i - 1][0]:
            out.append(("reorder", "event %s after %s (index %d)" % (fmt_ev(got[i]), fmt_ev(got[i - 1]), i)))
            break
    seen = set()
    for e in got:
        if ident(e) in seen:
            out.append(("duplicate", "event %s delivered twice" % fmt_ev(e)))
            break
        seen.add(ident(e))
    exp_map = {ident(e): e for e in expected}
    got_map = {}
    for e in got:
        got_map.setdefault(ident(e), e)
    missing = [e for e in expected if ident(e) not in got_map]
    if missing:
        out.append(("gap", "%d expected events never delivered, first %s" % (len(missing), fmt_ev(missing[0]))))
    extra = [e for e in got if ident(e) not in exp_map]
    if extra:
        out.append(("extra_event", "%d events not in the reference, first %s" % (len(extra), fmt_ev(extra[0]))))
    for k, e in got_map.items():
        x = exp_map.get(k)
        if x is not None and x != e:
            out.append(("event_mismatch", "got %s expected %s" % (fmt_ev(e), fmt_ev(x))))
            break
    # order of the ops within one revision
    gby, eby = collections.defaultdict(list), collections.defaultdict(list)
    for e in got:
        if ident(e) in exp_map and (e[1], e[2]) not in gby[e[0]]:
            gby[e[0]].append((e[1], e[2]))
    for e in expected:
        if ident(e) in got_map:
            eby[e[0]].append((e[1], e[2]))
    for rev in sorted(gby):
        if gby[rev] != eby[rev]:
            out.append(("intra_revision_order", "rev %d got %s expected %s" % (rev, gby[rev], eby[rev])))
            break
    if not out and expected != got:
        out.append(("event_mismatch", "lists differ (len %d vs expected %d)" % (len(got), len(expected))))
    return out


def check_acks(acks, ref, unknown_writes):
    """acks: rev -> list of (type, key, value) the writer knows; ref: list of event tuples."""
    out = []
    by_rev = collections.defaultdict(list)
    for e in ref:
        by_rev[e[0]].append((e[1], e[2], e[3]))
    for rev in sorted(acks):
        if rev not in by_rev:
            out.append(("ack_missing", "acknowledged write at rev %d %s absent from the watch history" % (rev, acks[rev])))
        elif by_rev[rev] != acks[rev]:
            out.append(("ack_mismatch", "rev %d: watch history %s, writer expected %s" % (rev, by_rev[rev], acks[rev])))
    phantom = [r for r in by_rev if r not in acks]
    if len(phantom) > unknown_writes:
        out.append(("phantom_revision", "%d revisions in history not written by an acknowledged or unknown write "
                    "(unknown writes %d), e.g. rev %d %s" % (len(phantom), unknown_writes, phantom[0], by_rev[phantom[0]])))
    return out


def check_prev_kv(ref):
    """The reference carries prev_kv; starting from an empty prefix each prev_kv is predictable."""
    out, state = [], {}
    for e in ref:
        rev, typ, key, val, prev = e
        want = state.get(key)
        if prev != want:
            out.append(("prev_kv_wrong", "%s: prev_kv value %r, expected %r" % (fmt_ev(e), prev, want)))
        state[key] = val if typ == PUT else None
    return out


# ---------------------------------------------------------------------------------------
# Watchers and streams
# ---------------------------------------------------------------------------------------
class Watcher:
    def __init__(self, wid, kind, key, range_end=b"", start=0, prev_kv=False, filters=(),
                 progress_notify=False, chaos=False, expect_compact=None):
        self.wid, self.kind, self.key, self.range_end = wid, kind, key, range_end
        self.start, self.prev_kv, self.filters = start, prev_kv, tuple(filters)
        self.progress_notify, self.chaos, self.expect_compact = progress_notify, chaos, expect_compact
        self.eff_start = start if start else None   # first revision it must see
        self.events = []
        self.last_rev = 0
        self.created_ever = False
        self.canceled = None                       # (compact_revision, reason) if canceled
        self.segments = 0
        self.progress_seen = 0
        self.new_segment()

    def new_segment(self):
        self.created = False
        self.watch_id = None
        self.last_resp_rev = 0
        self.floor_req = 0      # highest progress-request revision seen while created on this stream
        self.floor_notify = 0   # highest per-watcher progress notification revision
        self.frag = []

    def resume_start(self):
        if self.last_rev:
            return self.last_rev + 1
        return self.eff_start or 0

    def matches(self, e):
        k = e[2]
        if self.range_end:
            if self.range_end == b"\x00":
                if k < self.key:
                    return False
            elif not (self.key <= k < self.range_end):
                return False
        elif k != self.key:
            return False
        if NOPUT in self.filters and e[1] == PUT:
            return False
        if NODELETE in self.filters and e[1] == DELETE:
            return False
        return True

    def expected_from(self, ref, upto):
        if self.eff_start is None:
            return None
        out = []
        for e in ref:
            if e[0] >= self.eff_start and e[0] <= upto and self.matches(e):
                out.append(e if self.prev_kv else e[:4] + (None,))
        return out

    def name(self):
        return "w%d/%s" % (self.wid, self.kind)


class WStream:
    """One gRPC Watch stream carrying one or more watchers; a reader thread checks every response."""
    seq = 0

    def __init__(self, chk, ep, channel=None, timeout=60):
        WStream.seq += 1
        self.sid = WStream.seq
        self.chk, self.ep = chk, ep
        self.q = queue.Queue()
        self.pending = collections.deque()
        self.by_id = {}
        self.watchers = []
        self.max_ev = 0
        self.closed = False
        self.call = None
        if channel is not None:
            self.call = open_watch(channel, self._gen(), timeout)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _gen(self):
        while True:
            r = self.q.get()
            if r is None:
                return
            yield r

    def add(self, w):
        with self.chk.lock:
            w.new_segment()
            w.segments += 1
            w.stream = self
            if self.closed:
                # the stream failed before this watcher joined it (dead endpoint): move on
                self.chk.resub.put((self.ep, [w]))
                return
            self.watchers.append(w)
            self.pending.append(w)
            self.q.put(create_req(w.key, w.range_end, w.resume_start(), w.prev_kv, w.filters, w.progress_notify))

    def request_progress(self):
        if not self.closed:
            self.q.put(progress_req())

    def close(self):
        with self.chk.lock:
            self.closed = True
        self.q.put(None)
        if self.call is not None:
            self.call.cancel()

    def _read(self):
        err = None
        try:
            for resp in self.call:
                with self.chk.lock:
                    if self.closed:
                        return
                    self.handle(resp)
            err = "stream ended by server"
        except grpc.RpcError as e:
            err = "%s %s" % (e.code(), e.details())
        except Exception as e:  # a bug in handle() must not hang the run
            err = "reader exception %r" % (e,)
            self.chk.viol.add("checker_error", err)
        with self.chk.lock:
            if self.closed:
                return
            self.closed = True
        self.q.put(None)
        self.chk.stream_broken(self, err)

    # --- the online checks -----------------------------------------------------------
    def handle(self, resp):
        chk, V = self.chk, self.chk.viol
        chk.stats["responses"] += 1
        R = resp.header.revision
        if resp.created:
            if not self.pending:
                V.add("unexpected_created", "stream %d (%s): created watch_id=%d with no create pending" % (self.sid, self.ep, resp.watch_id))
                return
            w = self.pending.popleft()
            if resp.events:
                V.add("events_in_created", "%s: created response carries %d events" % (w.name(), len(resp.events)))
            if resp.canceled or resp.watch_id == -1:
                w.canceled = (resp.compact_revision, resp.cancel_reason)
                if w.expect_compact is None:
                    V.add("create_failed", "%s: create answered canceled, compact_revision=%d reason=%r" % (w.name(), resp.compact_revision, resp.cancel_reason))
                return
            w.created, w.created_ever, w.watch_id = True, True, resp.watch_id
            if w.eff_start is None:
                w.eff_start = R + 1
            self.by_id[resp.watch_id] = w
            return
        if resp.watch_id == -1:
            chk.stats["progress_request_responses"] += 1
            if resp.events:
                V.add("events_in_progress", "stream %d: watch_id=-1 response with %d events" % (self.sid, len(resp.events)))
            if len(chk.samples["progress_request"]) < 3:
                chk.samples["progress_request"].append("watch_id=-1 header.revision=%d (highest event delivered on the stream %d)" % (R, self.max_ev))
            if R < self.max_ev:
                V.add("progress_behind_event", "stream %d (%s): progress response at rev %d after an event at rev %d" % (self.sid, self.ep, R, self.max_ev))
            for w in self.by_id.values():
                w.floor_req = max(w.floor_req, R)
                w.progress_seen += 1
            return
        w = self.by_id.get(resp.watch_id)
        if w is None:
            pend = [p.name() for p in self.pending]
            V.add("event_before_created", "stream %d (%s): response for watch_id=%d not (or no longer) created; pending=%s events=%d canceled=%s" % (self.sid, self.ep, resp.watch_id, pend, len(resp.events), resp.canceled))
            return
        if resp.canceled:
            del self.by_id[resp.watch_id]
            w.created = False
            w.canceled = (resp.compact_revision, resp.cancel_reason)
            if w.expect_compact is None:
                V.add("unexpected_cancel", "%s: canceled, compact_revision=%d reason=%r" % (w.name(), resp.compact_revision, resp.cancel_reason))
            return
        if resp.fragment:
            w.frag.extend(resp.events)
            return
        evs = list(w.frag) + list(resp.events)
        w.frag = []
        if not evs:
            chk.stats["progress_notifications"] += 1
            if len(chk.samples["progress_notify"]) < 3:
                chk.samples["progress_notify"].append("%s watch_id=%d header.revision=%d events=0 (its last event %d)" % (w.name(), resp.watch_id, R, w.last_rev))
            w.progress_seen += 1
            if R < w.last_rev:
                V.add("progress_behind_event", "%s: progress notification at rev %d after event at rev %d" % (w.name(), R, w.last_rev))
            w.floor_notify = max(w.floor_notify, R)
            return
        chk.stats["event_responses"] += 1
        first = evs[0].kv.mod_revision
        if first == w.last_resp_rev:
            V.add("revision_split", "%s: events of rev %d arrive in more than one response" % (w.name(), first))
        prev = w.last_resp_rev
        for ev in evs:
            t = ev_tuple(ev)
            rev = t[0]
            if rev < prev:
                V.add("reorder_online", "%s: event rev %d after rev %d" % (w.name(), rev, prev))
            prev = rev
            # counted once per progress response and watcher (the floor is then cleared)
            if rev <= w.floor_req:
                V.add("event_after_progress_request", "%s on stream %d (%s): event %s after a progress response at rev %d" % (w.name(), self.sid, self.ep, fmt_ev(t), w.floor_req))
                w.floor_req = 0
            if rev <= w.floor_notify:
                V.add("event_after_progress_notify", "%s: event %s after a progress notification at rev %d" % (w.name(), fmt_ev(t), w.floor_notify))
                w.floor_notify = 0
            if w.eff_start is not None and rev < w.eff_start:
                V.add("event_before_start", "%s: event %s before its start revision %d" % (w.name(), fmt_ev(t), w.eff_start))
            w.events.append(t)
            chk.stats["events_received"] += 1
        w.last_rev = max(w.last_rev, evs[-1].kv.mod_revision)
        w.last_resp_rev = evs[-1].kv.mod_revision
        self.max_ev = max(self.max_ev, w.last_rev)


# ---------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------
class Checker:
    def __init__(self, args):
        self.args = args
        self.eps = args.endpoints.split(",")
        self.lock = threading.RLock()
        self.viol = Violations(args.details, lenient=args.lenient.split(",") if args.lenient else ())
        self.stats = collections.Counter()
        self.samples = collections.defaultdict(list)
        self.channels = {}
        self.stop_writers = threading.Event()
        self.stop_chaos = threading.Event()
        self.acks = {}
        self.unknown = 0
        self.watchers = []
        self.streams = []
        self.resub = queue.Queue()
        self.rnd = random.Random(args.seed)
        self.prefix = (args.prefix or "/watchcheck/%d-%d/" % (int(time.time()), os.getpid())).encode()
        self.keys = [self.prefix + b"k%03d" % i for i in range(args.keys)]
        self.deadline = time.time() + args.seconds + 150

    def chan(self, ep):
        if ep not in self.channels:
            self.channels[ep] = grpc.insecure_channel(ep, options=[("grpc.max_receive_message_length", 64 << 20)])
        return self.channels[ep]

    def kv(self, ep):
        return rpc_pb2_grpc.KVStub(self.chan(ep))

    def unary(self, fn, *a):
        """Try each endpoint in turn (for setup calls)."""
        last = None
        for i in range(len(self.eps) * 3):
            ep = self.eps[i % len(self.eps)]
            try:
                return fn(ep, *a)
            except grpc.RpcError as e:
                last = e
                time.sleep(0.3)
        raise last

    def current_rev(self):
        return self.unary(lambda ep: self.kv(ep).Range(rpc_pb2.RangeRequest(key=self.prefix, range_end=prefix_end(self.prefix), count_only=True), timeout=self.args.call_timeout)).header.revision

    def record_ack(self, rev, evs):
        with self.lock:
            if rev in self.acks:
                self.viol.add("duplicate_ack_revision", "two acknowledged writes at rev %d: %s and %s" % (rev, self.acks[rev], evs))
            self.acks[rev] = evs

    # --- writers -----------------------------------------------------------------------
    def writer(self, tid):
        rnd = random.Random(self.args.seed * 1000 + tid)
        epi = tid % len(self.eps)
        n = 0
        T = self.args.call_timeout
        while not self.stop_writers.is_set() and time.time() < self.deadline:
            with self.lock:
                if self.stats["writes_sent"] >= self.args.max_writes:
                    break
                self.stats["writes_sent"] += 1
            ep = self.eps[epi]
            kv = self.kv(ep)
            n += 1
            op = rnd.random()
            try:
                if op < 0.5:
                    k = rnd.choice(self.keys)
                    v = b"w%d-%d" % (tid, n)
                    r = kv.Put(rpc_pb2.PutRequest(key=k, value=v), timeout=T)
                    self.record_ack(r.header.revision, [(PUT, k, v)])
                    self.stats["put"] += 1
                elif op < 0.65:
                    k = rnd.choice(self.keys)
                    r = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=k, prev_kv=True), timeout=T)
                    if r.deleted:
                        self.record_ack(r.header.revision, [(DELETE, kv_.key, b"") for kv_ in r.prev_kvs])
                    self.stats["delete"] += 1
                elif op < 0.9:
                    ks = rnd.sample(self.keys, rnd.randint(2, 4))
                    ops, plan = [], []
                    for j, k in enumerate(ks):
                        if j == 0 or rnd.random() < 0.6:
                            v = b"t%d-%d-%d" % (tid, n, j)
                            ops.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=v)))
                            plan.append((PUT, k, v))
                        else:
                            ops.append(rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k, prev_kv=True)))
                            plan.append((DELETE, k, None))
                    r = kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=T)
                    evs = []
                    for (typ, k, v), resp in zip(plan, r.responses):
                        if typ == PUT:
                            evs.append((PUT, k, v))
                        else:
                            evs.extend((DELETE, p.key, b"") for p in resp.response_delete_range.prev_kvs)
                    self.record_ack(r.header.revision, evs)
                    self.stats["txn"] += 1
                else:
                    a = rnd.randrange(len(self.keys))
                    b = min(len(self.keys), a + rnd.randint(1, 8))
                    end = self.keys[b] if b < len(self.keys) else prefix_end(self.prefix + b"k")
                    r = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=self.keys[a], range_end=end, prev_kv=True), timeout=T)
                    if r.deleted:
                        self.record_ack(r.header.revision, [(DELETE, p.key, b"") for p in r.prev_kvs])
                    self.stats["delete_range"] += 1
            except grpc.RpcError as e:
                c = e.code()
                if c in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                         grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE):
                    self.stats["write_rejected"] += 1
                    self.viol.add("write_rejected", "%s: %s %s" % (ep, c, e.details()))
                else:
                    with self.lock:
                        self.unknown += 1
                    self.stats["write_unknown"] += 1
                    epi = (epi + 1) % len(self.eps)
                    time.sleep(0.1)
            if self.args.write_delay:
                time.sleep(self.args.write_delay)

    # --- watcher management -------------------------------------------------------------
    def new_stream(self, ep):
        s = WStream(self, ep, self.chan(ep), timeout=max(1, self.deadline - time.time()))
        with self.lock:
            self.streams.append(s)
        return s

    def stream_broken(self, s, err):
        self.stats["stream_breaks"] += 1
        if len(self.viol.details["_stream_breaks"]) < 5:
            self.viol.details["_stream_breaks"].append("stream %d (%s): %s" % (s.sid, s.ep, err))
        with self.lock:
            ws = list(s.watchers)
            s.watchers = []
        ws = [w for w in ws if w.canceled is None]
        if ws:
            self.resub.put((s.ep, ws))

    def guarded(self, fn):
        def run():
            try:
                fn()
            except Exception as e:  # a dead helper thread would silently stall watchers
                import traceback
                self.viol.add("checker_error", "%s: %r %s" % (fn.__name__, e, traceback.format_exc().replace("\n", " | ")))
        return run

    def resubscriber(self):
        """Re-creates the watchers of a broken stream on the next endpoint, from last seen + 1."""
        while time.time() < self.deadline:
            try:
                ep, ws = self.resub.get(timeout=0.2)
            except queue.Empty:
                if self.stop_all:
                    return
                continue
            nxt = self.eps[(self.eps.index(ep) + 1) % len(self.eps)] if ep in self.eps else self.eps[0]
            time.sleep(0.2)
            s = self.new_stream(nxt)
            for w in ws:
                s.add(w)
                self.stats["resumes"] += 1

    def chaos(self):
        """Disconnects the own-stream watchers at random; they resume on another endpoint."""
        rnd = random.Random(self.args.seed + 7)
        while not self.stop_chaos.wait(rnd.uniform(0.2, 1.0)):
            cands = [w for w in self.watchers if w.chaos and w.created]
            if not cands:
                continue
            w = rnd.choice(cands)
            s = w.stream
            with self.lock:
                if s.closed or w not in s.watchers:
                    continue
                s.watchers.remove(w)
            s.close()
            self.stats["chaos_disconnects"] += 1
            ep = self.eps[(self.eps.index(s.ep) + 1) % len(self.eps)]
            self.new_stream(ep).add(w)

    def progress_requester(self):
        rnd = random.Random(self.args.seed + 11)
        while not self.stop_chaos.wait(rnd.uniform(0.05, 0.3)):
            with self.lock:
                ss = [s for s in self.streams if not s.closed]
            if ss:
                rnd.choice(ss).request_progress()
                self.stats["progress_requests_sent"] += 1

    def make_watchers(self, first_rev):
        a, rnd = self.args, self.rnd
        P, PE = self.prefix, prefix_end(self.prefix)
        hot = self.keys[:5]
        kinds = ["prefix", "key", "prefix_prevkv", "prefix_noput", "prefix_nodelete", "range",
                 "prefix_progress", "chaos_prefix", "chaos_key_prevkv", "key_noput_prevkv"]
        ws = []
        for i in range(a.watchers):
            k = kinds[i % len(kinds)]
            if k == "prefix":
                w = Watcher(i, k, P, PE)
            elif k == "key":
                w = Watcher(i, k, rnd.choice(hot))
            elif k == "prefix_prevkv":
                w = Watcher(i, k, P, PE, prev_kv=True)
            elif k == "prefix_noput":
                w = Watcher(i, k, P, PE, filters=[NOPUT])
            elif k == "prefix_nodelete":
                w = Watcher(i, k, P, PE, filters=[NODELETE], prev_kv=True)
            elif k == "range":
                w = Watcher(i, k, self.keys[len(self.keys) // 5], self.keys[len(self.keys) // 2])
            elif k == "prefix_progress":
                w = Watcher(i, k, P, PE, progress_notify=True)
            elif k == "chaos_prefix":
                w = Watcher(i, k, P, PE, chaos=True, start=first_rev)
            elif k == "chaos_key_prevkv":
                w = Watcher(i, k, rnd.choice(hot), prev_kv=True, chaos=True)
            else:
                w = Watcher(i, k, rnd.choice(hot), prev_kv=True, filters=[NOPUT])
            ws.append(w)
        return ws

    def past_watchers(self, first_rev, now_rev, base):
        P, PE = self.prefix, prefix_end(self.prefix)
        out = []
        for j in range(self.args.past_watchers):
            start = self.rnd.randint(first_rev, max(first_rev, now_rev))
            if j % 3 == 0:
                w = Watcher(base + j, "past_prefix_prevkv", P, PE, start=start, prev_kv=True)
            elif j % 3 == 1:
                w = Watcher(base + j, "past_key", self.rnd.choice(self.keys[:5]), start=start)
            else:
                w = Watcher(base + j, "past_prefix_nodelete", P, PE, start=start, filters=[NODELETE])
            out.append(w)
        return out

    def wait_until(self, cond, timeout):
        end = time.time() + timeout
        while time.time() < end:
            with self.lock:
                if cond():
                    return True
            time.sleep(0.05)
        with self.lock:
            return cond()

    # --- the run -----------------------------------------------------------------------
    def run(self):
        a = self.args
        self.stop_all = False
        t0 = time.time()
        try:
            r0 = self.current_rev()
        except grpc.RpcError as e:
            print("watchcheck: cannot reach %s: %s %s" % (a.endpoints, e.code(), e.details()))
            return 2
        first_rev = r0 + 1
        print("watchcheck: endpoints=%s prefix=%s first_rev=%d seconds=%s writers=%d watchers=%d+%d past"
              % (a.endpoints, self.prefix.decode(), first_rev, a.seconds, a.writers, a.watchers, a.past_watchers))
        threading.Thread(target=self.guarded(self.resubscriber), daemon=True).start()
        self.watchers = self.make_watchers(first_rev)
        shared = [self.new_stream(self.eps[i % len(self.eps)]) for i in range(max(1, a.streams))]
        for i, w in enumerate(self.watchers):
            if w.chaos:
                self.new_stream(self.eps[i % len(self.eps)]).add(w)
            else:
                shared[i % len(shared)].add(w)
        if not self.wait_until(lambda: all(w.created_ever or w.canceled for w in self.watchers), 10):
            print("watchcheck: not every watcher was created within 10 s")
        writers = [threading.Thread(target=self.writer, args=(t,), daemon=True) for t in range(a.writers)]
        for t in writers:
            t.start()
        aux = [threading.Thread(target=self.guarded(self.chaos), daemon=True)]
        if a.progress_requests:
            aux.append(threading.Thread(target=self.guarded(self.progress_requester), daemon=True))
        for t in aux:
            t.start()
        time.sleep(a.seconds / 3.0)
        with self.lock:
            now = max(self.acks) if self.acks else first_rev
        past = self.past_watchers(first_rev, now, len(self.watchers))
        for i, w in enumerate(past):
            with self.lock:
                live = [s for s in shared if not s.closed]
            (live[i % len(live)] if live else self.new_stream(self.eps[i % len(self.eps)])).add(w)
        with self.lock:
            self.watchers.extend(past)
        time.sleep(max(0, a.seconds - (time.time() - t0)))
        self.stop_writers.set()
        for t in writers:
            t.join(a.call_timeout + 2)
        self.stop_chaos.set()
        for t in aux:
            t.join(3)
        # sentinel write: its revision closes the run
        sent_key = self.prefix + b"zz-end"
        try:
            r = self.unary(lambda ep: self.kv(ep).Put(rpc_pb2.PutRequest(key=sent_key, value=b"end"), timeout=a.call_timeout))
        except grpc.RpcError as e:
            print("watchcheck: sentinel write failed: %s" % e.details())
            return 2
        S = r.header.revision
        self.record_ack(S, [(PUT, sent_key, b"end")])
        # reference: one watch over the whole prefix from the first revision of the run
        ref_w = Watcher(-1, "reference", self.prefix, prefix_end(self.prefix), start=first_rev, prev_kv=True)
        self.new_stream(self.eps[0]).add(ref_w)
        if not self.wait_until(lambda: ref_w.last_rev >= S, 30):
            self.viol.add("reference_incomplete", "reference watch reached rev %d of %d in 30 s" % (ref_w.last_rev, S))
        ref = [e for e in ref_w.events if e[0] <= S]
        for kind, d in compare_events(sorted(ref, key=lambda e: e[0]), ref) + check_acks(self.acks, ref, self.unknown) + check_prev_kv(ref):
            self.viol.add(kind, "reference: " + d)
        # every watcher must catch up to the sentinel
        exp = {}
        for w in self.watchers:
            exp[w.wid] = w.expected_from(ref, S)

        def caught_up():
            for w in self.watchers:
                e = exp[w.wid]
                if e and w.last_rev < e[-1][0]:
                    return False
            return True
        self.wait_until(caught_up, 20)
        compact_res = self.compact_test(first_rev, S, ref) if not a.no_compact else "skipped"
        self.stop_all = True
        with self.lock:
            ss = list(self.streams)
        for s in ss:
            s.close()
        # offline comparison
        checked = 0
        with self.lock:
            for w in self.watchers:
                e = exp[w.wid]
                if e is None:
                    self.viol.add("never_created", "%s never created (start %d)" % (w.name(), w.start))
                    continue
                got = [x for x in w.events if x[0] <= S]
                checked += len(got)
                st = getattr(w, "stream", None)
                where = "stream %s on %s closed=%s created=%s pending=%s" % (
                    st and st.sid, st and st.ep, st and st.closed, w.created, st is not None and w in st.pending)
                for kind, d in compare_events(e, got):
                    self.viol.add(kind, "%s (key=%r range_end=%r start=%d segments=%d, last rev %d; %s): %s" % (
                        w.name(), w.key, w.range_end, w.eff_start, w.segments, w.last_rev, where, d))
        self.summary(first_rev, S, ref, checked, compact_res, time.time() - t0)
        return 1 if self.viol.failing() else 0

    def compact_test(self, first_rev, S, ref):
        """Compact at C; a watch from C-1 must be created then canceled with compact_revision=C;
        a watch from C must replay exactly the reference from C."""
        a = self.args
        C = first_rev + (S - first_rev) // 2
        if C <= first_rev:
            return "skipped (too few revisions)"
        try:
            self.unary(lambda ep: self.kv(ep).Compact(rpc_pb2.CompactionRequest(revision=C, physical=True), timeout=a.call_timeout))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.OUT_OF_RANGE:
                self.viol.add("compact_failed", "Compact(%d): %s %s" % (C, e.code(), e.details()))
                return "compact failed"
        P, PE = self.prefix, prefix_end(self.prefix)
        res = []
        for i, ep in enumerate(self.eps):
            w_old = Watcher(10000 + i, "compacted_start", P, PE, start=C - 1, expect_compact=C)
            w_ok = Watcher(20000 + i, "at_compact_rev", P, PE, start=C, prev_kv=True)
            s = self.new_stream(ep)
            s.add(w_old)
            s.add(w_ok)
            want = w_ok.expected_from(ref, S)
            self.wait_until(lambda: w_old.canceled is not None and (not want or w_ok.last_rev >= want[-1][0]), 10)
            with self.lock:
                if not w_old.created_ever or w_old.canceled is None:
                    self.viol.add("compacted_watch", "%s: watch from %d (compacted at %d): created=%s canceled=%s" % (ep, C - 1, C, w_old.created_ever, w_old.canceled))
                elif w_old.canceled[0] != C:
                    self.viol.add("compacted_watch", "%s: canceled with compact_revision=%d, expected %d (reason %r)" % (ep, w_old.canceled[0], C, w_old.canceled[1]))
                if w_old.events:
                    self.viol.add("compacted_watch", "%s: compacted watch delivered %d events" % (ep, len(w_old.events)))
                # exact from C+1; what arrives AT C is reported, not judged: etcd 3.4 loses DELETE
                # events at the compact revision (compaction drops tombstones <= C) and has no prev_kv
                # for events at C (C-1 is compacted)
                got = [x for x in w_ok.events if C < x[0] <= S]
                at_c = [x for x in w_ok.events if x[0] == C]
                ref_c = [x for x in want if x[0] == C]
                at_c_note = "at rev %d: reference %s, delivered %s" % (
                    C, [x[1] for x in ref_c], [(x[1], "prev_kv" if x[4] is not None else "no prev_kv") for x in at_c])
                for kind, d in compare_events([x for x in want if x[0] > C], got):
                    self.viol.add(kind, "%s watch from compact rev %d: %s" % (ep, C, d))
                res.append("%s: from %d -> created=%s canceled compact_revision=%s reason=%r; from %d -> %d events (%s)"
                           % (ep, C - 1, w_old.created_ever, w_old.canceled and w_old.canceled[0],
                              w_old.canceled and w_old.canceled[1], C, len(w_ok.events), at_c_note))
        return "compacted at %d; " % C + " | ".join(res)

    def summary(self, first_rev, S, ref, checked, compact_res, elapsed):
        st = self.stats
        print("---- watchcheck summary (%.1f s) ----" % elapsed)
        print("revisions: %d..%d  acknowledged writes with a revision: %d  unknown outcome: %d  rejected: %d"
              % (first_rev, S, len(self.acks), self.unknown, st["write_rejected"]))
        print("writes: put=%d delete=%d txn=%d delete_range=%d" % (st["put"], st["delete"], st["txn"], st["delete_range"]))
        print("reference events: %d in %d revisions" % (len(ref), len(set(e[0] for e in ref))))
        kinds = collections.Counter(w.kind for w in self.watchers)
        print("watchers: %d (%s)" % (len(self.watchers), ", ".join("%s=%d" % kv_ for kv_ in sorted(kinds.items()))))
        print("streams opened: %d  stream breaks: %d  resumes: %d  chaos disconnects: %d"
              % (WStream.seq, st["stream_breaks"], st["resumes"], st["chaos_disconnects"]))
        print("responses: %d  event responses: %d  events checked: %d"
              % (st["responses"], st["event_responses"], checked))
        print("progress: requests sent=%d  watch_id=-1 responses=%d  per-watcher notifications=%d"
              % (st["progress_requests_sent"], st["progress_request_responses"], st["progress_notifications"]))
        for k in ("progress_request", "progress_notify"):
            for d in self.samples[k]:
                print("  sample %s: %s" % (k, d))
        print("compaction test: %s" % compact_res)
        for d in self.viol.details.pop("_stream_breaks", []):
            print("  stream break: %s" % d)
        self.viol.report()


# ---------------------------------------------------------------------------------------
# --self-test: synthetic cases, each must be caught
# ---------------------------------------------------------------------------------------
def self_test():
    fails = 0

    def expect(name, got_kinds, want):
        nonlocal fails
        ok = (want in got_kinds) if want else not got_kinds
        print("self-test %-40s %s (%s)" % (name, "ok" if ok else "NOT CAUGHT", sorted(got_kinds) or "clean"))
        if not ok:
            fails += 1

    E = lambda r, k, v=b"x", t=PUT, p=None: (r, t, k, v if t == PUT else b"", p)
    base = [E(2, b"a", b"1"), E(3, b"b", b"2"), E(4, b"a", t=DELETE), E(5, b"a", b"3"), E(5, b"c", b"4"), E(6, b"b", b"5")]
    kinds = lambda exp, got: set(k for k, _ in compare_events(exp, got))
    expect("identical lists", kinds(base, list(base)), None)
    expect("gap", kinds(base, base[:2] + base[3:]), "gap")
    expect("gap at the end", kinds(base, base[:-1]), "gap")
    expect("duplicate", kinds(base, base[:3] + [base[2]] + base[3:]), "duplicate")
    expect("reorder", kinds(base, [base[0], base[2], base[1]] + base[3:]), "reorder")
    expect("intra-revision order", kinds(base, base[:3] + [base[4], base[3]] + base[5:]), "intra_revision_order")
    expect("extra event", kinds(base, base + [E(7, b"z")]), "extra_event")
    expect("wrong value", kinds(base, base[:1] + [E(3, b"b", b"XX")] + base[2:]), "event_mismatch")
    expect("wrong prev_kv", kinds([E(3, b"b", b"2", p=b"1")], [E(3, b"b", b"2", p=b"0")]), "event_mismatch")
    acks = {2: [(PUT, b"a", b"1")], 3: [(PUT, b"b", b"2")]}
    ak = lambda a, r, u=0: set(k for k, _ in check_acks(a, r, u))
    expect("acks match", ak(acks, base[:2]), None)
    expect("ack missing from history", ak({**acks, 9: [(PUT, b"q", b"1")]}, base[:2]), "ack_missing")
    expect("ack content differs", ak({2: [(PUT, b"a", b"other")]}, base[:1]), "ack_mismatch")
    expect("phantom revision", ak(acks, base[:3]), "phantom_revision")
    expect("phantom covered by unknown write", ak(acks, base[:3], 1), None)
    pk = lambda r: set(k for k, _ in check_prev_kv(r))
    expect("prev_kv consistent", pk([E(2, b"a", b"1"), E(3, b"a", b"2", p=b"1"), E(4, b"a", t=DELETE, p=b"2")]), None)
    expect("prev_kv wrong", pk([E(2, b"a", b"1"), E(3, b"a", b"2", p=b"0")]), "prev_kv_wrong")

    # online checks: feed synthetic WatchResponses into a stream without a connection
    class FakeChk:
        def __init__(self):
            self.lock = threading.RLock()
            self.viol = Violations()
            self.stats = collections.Counter()
            self.samples = collections.defaultdict(list)

    def mk_ev(rev, key, val=b"v", typ=kv_pb2.Event.PUT):
        return kv_pb2.Event(type=typ, kv=kv_pb2.KeyValue(key=key, value=val, mod_revision=rev))

    def resp(rev, wid, events=(), created=False, canceled=False, compact=0):
        return WatchResponse(header=rpc_pb2.ResponseHeader(revision=rev), watch_id=wid, created=created,
                             canceled=canceled, compact_revision=compact, events=list(events))

    def online(responses, expect_compact=None):
        chk = FakeChk()
        s = WStream(chk, "synthetic")
        w = Watcher(0, "synthetic", b"a", b"b", expect_compact=expect_compact)
        s.add(w)
        for r in responses:
            s.handle(r)
        return set(chk.viol.counts)

    ok_seq = [resp(1, 0, created=True), resp(3, 0, [mk_ev(2, b"a1"), mk_ev(3, b"a2")]), resp(3, -1), resp(4, 0, [mk_ev(4, b"a1")]), resp(4, 0)]
    expect("online: clean sequence", online(ok_seq), None)
    expect("online: event before created", online([resp(3, 0, [mk_ev(2, b"a1")]), resp(1, 0, created=True)]), "event_before_created")
    expect("online: revision split over responses", online([resp(1, 0, created=True), resp(3, 0, [mk_ev(3, b"a1")]), resp(3, 0, [mk_ev(3, b"a2")])]), "revision_split")
    expect("online: progress request behind event", online([resp(1, 0, created=True), resp(5, 0, [mk_ev(5, b"a1")]), resp(4, -1)]), "progress_behind_event")
    expect("online: event after progress request", online([resp(1, 0, created=True), resp(5, -1), resp(5, 0, [mk_ev(5, b"a1")])]), "event_after_progress_request")
    expect("online: event after progress notify", online([resp(1, 0, created=True), resp(6, 0), resp(6, 0, [mk_ev(6, b"a1")])]), "event_after_progress_notify")
    expect("online: notify behind event", online([resp(1, 0, created=True), resp(6, 0, [mk_ev(6, b"a1")]), resp(5, 0)]), "progress_behind_event")
    expect("online: unexpected cancel", online([resp(1, 0, created=True), resp(9, 0, canceled=True, compact=7)]), "unexpected_cancel")
    expect("online: create refused", online([resp(1, -1, created=True, canceled=True)]), "create_failed")
    expect("online: expected compaction cancel", online([resp(9, 0, created=True), resp(9, 0, canceled=True, compact=7)], expect_compact=7), None)
    print("self-test: %s" % ("all synthetic violations caught" if fails == 0 else "%d cases NOT caught" % fails))
    return 1 if fails else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", default="127.0.0.1:2379", help="host:port,... (plaintext gRPC)")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--watchers", type=int, default=40, help="watchers created at the start (plus --past-watchers later)")
    ap.add_argument("--past-watchers", type=int, default=9, help="watchers created after a third of the run with a past start_revision")
    ap.add_argument("--streams", type=int, default=6, help="shared watch streams (spread over the endpoints)")
    ap.add_argument("--keys", type=int, default=40)
    ap.add_argument("--prefix", default=None, help="key prefix (default: a fresh /watchcheck/<time>-<pid>/)")
    ap.add_argument("--max-writes", type=int, default=30000, help="bounds memory: writers stop after this many writes")
    ap.add_argument("--write-delay", type=float, default=0.0, help="seconds each writer sleeps between writes")
    ap.add_argument("--call-timeout", type=float, default=5.0)
    ap.add_argument("--no-progress-requests", dest="progress_requests", action="store_false")
    ap.add_argument("--no-compact", action="store_true", help="skip the compaction test (it compacts the whole store)")
    ap.add_argument("--lenient", default="", help="violation kinds to report as warnings only, comma separated")
    ap.add_argument("--details", type=int, default=8, help="violations printed in detail per kind")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--self-test", action="store_true", help="run the synthetic cases only")
    a = ap.parse_args()
    if a.self_test:
        sys.exit(self_test())
    if a.seed is None:
        a.seed = random.randrange(1 << 30)
    print("watchcheck: seed %d" % a.seed)
    chk = Checker(a)
    # a hard stop: never hang on a server that stops answering
    hard = threading.Timer(a.seconds + 170, lambda: (print("watchcheck: hard timeout, giving up"), sys.stdout.flush(), os._exit(3)))
    hard.daemon = True
    hard.start()
    rc = chk.run()
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
