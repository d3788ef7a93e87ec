#!/usr/bin/env bash
# Snapshot transfer between two real stored processes, with a script playing both raftds byte by
# byte (cairn_ipc.h): stored A makes a snapshot and serves it in chunks (SNAP_REQ/SNAP_CHUNK),
# stored B receives and installs it (SNAP_RECV/SNAP_ACK). Checked: bad chunks and a garbage
# file are refused with the old state intact; a clean install gives B exactly A's applied index
# and revision, takes the entries between the raft snapshot point and A's applied index in
# memory only, and survives a restart; and kill -9 of B at random points during the install
# leaves, after a restart, either B's old state or the new one - never a mix.
. "$(dirname "$0")/lib.sh"
cat >"$T_TMP/snapstore.py" <<'PY'
import os, random, socket, struct, subprocess, sys, time, zmq
BIN, TMP = sys.argv[1], sys.argv[2]
ROUNDS = int(os.environ.get("SNAPSTORE_ROUNDS", "8"))
sys.path.insert(0, os.environ["CAIRN_SRC"] + "/tests/integration")
from ipcpack import pk, up
(LOAD, LOAD_RESP, APPEND, APPENDED, COMMIT, HELLO, STATUS, STATUS_RESP,
 SNAP_REQ, SNAP_CHUNK, SNAP_RECV, SNAP_ACK) = 5, 6, 7, 8, 9, 10, 13, 14, 21, 22, 23, 24
def fail(msg):
    print("FAIL", msg); sys.exit(1)
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def put_entry(index, term, key, value):
    body = b"\x0a" + varint(len(key)) + key + b"\x12" + varint(len(value)) + value
    env = pk([1, b"ffffffffffffffff/test", index, 1, body])   # CAIRN_REQ_PUT
    return [index, term, 0, env]

class Stored:
    def __init__(self, name, d):
        self.name, self.d, self.p, self.sock = name, d, None, None
        cp, pp = port(), port()
        self.flags = ["--name", name, "--data-dir", d,
                      "--listen-client-urls", "http://127.0.0.1:%d" % cp, "--advertise-client-urls", "http://127.0.0.1:%d" % cp,
                      "--listen-peer-urls", "http://127.0.0.1:%d" % pp, "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % pp,
                      "--initial-cluster", "%s=http://127.0.0.1:%d" % (name, pp)]
    def start(self):
        self.log = open(os.path.join(TMP, self.name + ".log"), "ab")
        self.p = subprocess.Popen([BIN] + self.flags, stdout=self.log, stderr=self.log)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, b"raftd"); self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect("ipc://%s/run/stored.ipc" % self.d)
        end = time.time() + 20
        while time.time() < end:
            self.send(LOAD, 0, 1)  # from the start (index 0), request seq 1 (one page: these logs are small)
            m = self.recv({LOAD_RESP}, 0.5)
            if m:
                self.boot, self.load = m[2], m
                return m
            if self.p.poll() is not None: fail("%s exited with %s" % (self.name, self.p.returncode))
        fail("%s: no LOAD_RESP" % self.name)
    def kill9(self):
        self.p.kill(); self.p.wait(); self.sock.close(); self.log.close()
    def stop(self):
        self.p.terminate(); self.p.wait(); self.sock.close(); self.log.close()
    def send(self, *f): self.sock.send(pk([1] + list(f)))
    def recv(self, types, secs):
        end = time.time() + secs
        while time.time() < end:
            if self.sock.poll(20):
                m, _ = up(self.sock.recv())
                if m[1] in types: return m
        return None
    def status(self):
        self.send(STATUS, 7)
        st = self.recv({STATUS_RESP}, 10) or fail("%s: no STATUS_RESP" % self.name)
        return st[6], st[9]   # applied, revision
    def write(self, first, n, term, keyfmt, vsize, batch=50):
        i = first
        while i < first + n:
            k = min(batch, first + n - i)
            ents = [put_entry(j, term, (keyfmt % j).encode(), bytes([65 + j % 26]) * vsize) for j in range(i, i + k)]
            self.send(APPEND, self.boot, i, 1, term, 0, i + k - 1, 0, ents)
            a = self.recv({APPENDED}, 10) or fail("%s: APPEND %d not acknowledged" % (self.name, i))
            a[4] == i + k - 1 or fail("%s: APPENDED %r" % (self.name, a[:7]))
            i += k
        self.send(COMMIT, self.boot, first + n - 1, term, 1)
        self.wait_applied(first + n - 1)
    def wait_applied(self, want):
        end = time.time() + 30
        while time.time() < end:
            a, r = self.status()
            if a >= want: return a, r
            time.sleep(0.05)
        fail("%s: applied never reached %d" % (self.name, want))
    def recv_chunks(self, seq, data, S, T, chunk=256 << 10, wait_ack=True):
        off, last = 0, None
        while off < len(data):
            body = data[off:off + chunk]
            self.send(SNAP_RECV, seq, off, len(data), S, T, body)
            off += len(body)
            if off < len(data) or wait_ack:
                last = self.recv({SNAP_ACK}, 60) or fail("%s: no SNAP_ACK at %d" % (self.name, off))
                if last[7] != 0: return last
        return last

# ---- A: the leader's stored, with a state worth sending -------------------------------------
A = Stored("a", os.path.join(TMP, "a")); A.start()
A_APPLIED = 1200
A.write(1, A_APPLIED, 2, "key/%05d", 3000)
a_applied, a_rev = A.status()
a_applied == A_APPLIED or fail("A applied %d" % a_applied)
A.send(SNAP_REQ, 1, 0, 0, 0)
c = A.recv({SNAP_CHUNK}, 60) or fail("no SNAP_CHUNK")
c[7] == 0 or fail("SNAP_REQ seq 0 failed: %r" % c[7:9])
sid, total, applied = c[3], c[5], c[6]
(sid == A_APPLIED and applied == A_APPLIED and c[4] == 0) or fail("bad first chunk %r" % c[2:8])
snap = bytes(c[9])
while len(snap) < total:
    A.send(SNAP_REQ, 2, sid, len(snap), 0)
    c = A.recv({SNAP_CHUNK}, 10) or fail("no SNAP_CHUNK at %d" % len(snap))
    (c[7] == 0 and c[4] == len(snap) and len(c[9]) > 0) or fail("bad chunk %r" % c[2:9])
    snap += bytes(c[9])
len(snap) == total or fail("got %d of %d bytes" % (len(snap), total))
snap[:8] == b"CAIRNSNP" or fail("not a snapshot file")
A.send(SNAP_REQ, 3, sid + 1, 0, 0)
c = A.recv({SNAP_CHUNK}, 10)
(c and c[7] == 9 and b"no longer available" in c[8]) or fail("unknown snapshot id not refused: %r" % (c and c[7:9]))
A.send(SNAP_REQ, 4, sid, total + 1, 0)
c = A.recv({SNAP_CHUNK}, 10)
(c and c[7] == 9) or fail("offset past the end not refused")
print("A: snapshot %d of %d bytes, applied %d revision %d" % (sid, total, a_applied, a_rev))
S, T = A_APPLIED - 5, 2          # the raft snapshot point: below the state it comes with

# ---- B round 0: bad input, then a clean install -----------------------------------------------
def fresh_b(r):
    B = Stored("b%d" % r, os.path.join(TMP, "b%d" % r)); B.start()
    B.write(1, 30, 1, "old/%03d", 100)
    return B
B = fresh_b(0)
old = B.status()
B.stop()
mv = os.path.join(B.d, "member", "mvcc"); saved = os.path.join(TMP, "b0-old-mvcc")
subprocess.check_call(["cp", "-a", mv, saved])
B.start()
B.send(SNAP_RECV, 5, 0, total, S, T, snap[:1000])   # a first chunk, then a gap
a = B.recv({SNAP_ACK}, 5); (a and a[7] == 0 and a[3] == 1000 and a[4] == 0) or fail("first chunk: %r" % a)
B.send(SNAP_RECV, 5, 5000, total, S, T, b"x" * 10)
a = B.recv({SNAP_ACK}, 5) or fail("no ack for a gap")
(a[7] == 9 and a[3] == 1000 and b"expected offset 1000" in a[8]) or fail("gap not refused right: %r" % a)
B.send(SNAP_RECV, 5, 0, 0, S, T, b"")
a = B.recv({SNAP_ACK}, 5); (a and a[7] == 9) or fail("total 0 not refused: %r" % a)
B.send(SNAP_RECV, 5, 0, 10, S, T, b"y" * 20)
a = B.recv({SNAP_ACK}, 5); (a and a[7] == 9 and b"past its total" in a[8]) or fail("chunk past total not refused: %r" % a)
junk = bytes(random.getrandbits(8) for _ in range(5000))
a = B.recv_chunks(6, junk, S, T)
(a[7] == 13 and a[4] == 0) or fail("garbage file not refused: %r" % a)
bad = bytearray(snap); bad[len(bad) // 2] ^= 1
a = B.recv_chunks(7, bytes(bad), S, T)
(a[7] == 13 and b"checksum" in a[8]) or fail("damaged file not refused: %r" % a)
B.status() == old or fail("refused snapshots changed B: %r -> %r" % (old, B.status()))
a = B.recv_chunks(8, snap, S, T)
(a[7] == 0 and a[4] == 1 and a[5] == S and a[6] == T and a[3] == total) or fail("install failed: %r" % a)
B.status() == (a_applied, a_rev) or fail("after install B has %r, A %r" % (B.status(), (a_applied, a_rev)))
# the entries S+1..A_APPLIED arrive again (in memory only) and one new one goes to the WAL
ents = [put_entry(j, 2, (b"key/%05d" % j), bytes([65 + j % 26]) * 3000) for j in range(S + 1, A_APPLIED + 1)]
ents.append(put_entry(A_APPLIED + 1, 2, b"new", b"after the snapshot"))
B.send(APPEND, B.boot, 99, 1, 2, 0, A_APPLIED + 1, 0, ents)
ack = B.recv({APPENDED}, 10) or fail("APPEND after install not acknowledged")
ack[4] == A_APPLIED + 1 or fail("persisted index after install: %r" % ack[:7])
B.send(COMMIT, B.boot, A_APPLIED + 1, 2, 1)
B.wait_applied(A_APPLIED + 1) == (A_APPLIED + 1, a_rev + 1) or fail("apply after install: %r" % (B.status(),))
# raftd's view of the log now starts after the state machine's applied index, not at S: old
# entries between S and it (only S is known to match the leader) are never loaded again
B.send(LOAD, 0, 2)
m = B.recv({LOAD_RESP}, 5) or fail("no LOAD_RESP after install")
(m[6] == A_APPLIED and m[7] == 2 and [e[0] for e in m[10]] == [A_APPLIED + 1]) or \
    fail("log after install: snap (%r, %r) entries %r" % (m[6], m[7], [e[0] for e in m[10]]))
B.kill9(); m = B.start()
B.status() == (A_APPLIED + 1, a_rev + 1) or fail("after restart: %r" % (B.status(),))
ents = m[10]
last = ents[-1][0] if ents else m[6]
(last == A_APPLIED + 1 and m[6] >= S) or fail("LOAD_RESP after install: snap %r entries %r" % (m[6], [e[0] for e in ents]))
os.path.exists(os.path.join(B.d, "member", "mvcc.new")) and fail("mvcc.new left behind")
B.stop()
print("B0: clean install ok")
# the crash between the WAL's SNAPSHOT record (the commit point) and the directory swap: the
# old store is back in place; the start finishes the install from snap/<S>-<T>.snap
def old_store_back():
    subprocess.check_call(["rm", "-rf", mv]); subprocess.check_call(["cp", "-a", saved, mv])
old_store_back()
B.start()
B.wait_applied(A_APPLIED + 1) == (A_APPLIED + 1, a_rev + 1) or fail("recovery after the commit point: %r" % (B.status(),))
B.stop()
# the same with no store at all (the two-rename fallback cut in the middle)
subprocess.check_call(["rm", "-rf", mv])
B.start()
B.wait_applied(A_APPLIED + 1) == (A_APPLIED + 1, a_rev + 1) or fail("recovery with no store: %r" % (B.status(),))
B.stop()
# and with the snapshot file gone: refuse to start, naming the file
old_store_back()
sf = os.path.join(B.d, "member", "snap", "%d-%d.snap" % (S, T))
os.path.exists(sf) or fail("installed snapshot file %s not kept" % sf)
os.unlink(sf)
lg = open(os.path.join(TMP, "bx.log"), "wb")
rc = subprocess.call([BIN] + B.flags, stdout=lg, stderr=lg, timeout=30); lg.close()
txt = open(os.path.join(TMP, "bx.log"), "rb").read()
(rc != 0 and sf.encode() in txt and b"refusing to start" in txt) or fail("missing snapshot file: rc %d log %r" % (rc, txt[-600:]))
print("B0: recovery after the commit point ok")

# ---- a snapshot that is not ahead of the state machine ----------------------------------------
# (B applied one more entry since its install): B keeps its state, takes S as the log's start
# and reports the install done (raft.h contract, step 7); it restarts from that state
B = fresh_b(50)
a = B.recv_chunks(9, snap, S, T)
(a[7] == 0 and a[4] == 1) or fail("install on bk: %r" % a)
B.send(APPEND, B.boot, 99, 1, 2, 0, A_APPLIED + 1, 0, [put_entry(A_APPLIED + 1, 2, b"new", b"after")])
B.recv({APPENDED}, 10) or fail("bk: APPEND not acknowledged")
B.send(COMMIT, B.boot, A_APPLIED + 1, 2, 1)
B.wait_applied(A_APPLIED + 1) == (A_APPLIED + 1, a_rev + 1) or fail("bk apply: %r" % (B.status(),))
a = B.recv_chunks(20, snap, A_APPLIED - 2, T)
(a[7] == 0 and a[4] == 1) or fail("snapshot behind the state machine not taken as installed: %r" % a)
B.status() == (A_APPLIED + 1, a_rev + 1) or fail("keeping our state changed it: %r" % (B.status(),))
B.kill9(); m = B.start()
B.status() == (A_APPLIED + 1, a_rev + 1) or fail("bk after restart: %r" % (B.status(),))
B.stop()
print("bk: a snapshot behind the state machine keeps it ok")

# ---- kill -9 during the install ---------------------------------------------------------------
random.seed(int(os.environ.get("SNAPSTORE_SEED", str(int(time.time())))))
seen = {"old": 0, "new": 0}
for r in range(1, ROUNDS + 1):
    B = fresh_b(r)
    old = B.status()
    B.recv_chunks(10 + r, snap, S, T, wait_ack=False)
    time.sleep(random.choice([0, 0.001, 0.003]) + random.random() * 0.05 * (r % 4))
    B.kill9()
    B.start()
    st = B.status()
    if st == old: seen["old"] += 1
    elif st == (a_applied, a_rev): seen["new"] += 1
    else: fail("round %d: B has applied/revision %r: neither old %r nor new %r" % (r, st, old, (a_applied, a_rev)))
    os.path.exists(os.path.join(B.d, "member", "mvcc.new")) and fail("round %d: mvcc.new left behind" % r)
    # and it goes on from there
    nxt = st[0] + 1
    B.send(APPEND, B.boot, 1, 1, 2, 0, nxt, 0, [put_entry(nxt, 2, b"go-on", b"v")])
    (B.recv({APPENDED}, 10) or fail("round %d: no APPENDED" % r))[4] == nxt or fail("round %d: bad APPENDED" % r)
    B.send(COMMIT, B.boot, nxt, 2, 1)
    B.wait_applied(nxt)
    B.stop()
print("kill rounds: %r" % seen)
A.stop()
print("ok")
PY
out=$(/usr/bin/python3 "$T_TMP/snapstore.py" "$CAIRN_BIN/stored" "$T_TMP" 2>&1 || true)
echo "$out"
t_eq "snapshot transfer, refusals, install and kill -9 during install" ok "${out##*$'\n'}"
t_done
