"""msgpack as Cairn's IPC uses it (shared/cairn_ipc.h), for tests that play a daemon's peer
byte by byte: the tests run Debian's /usr/bin/python3 with python3-zmq and nothing else, so
the few msgpack shapes needed are written out here (ints, bytes, arrays)."""
import struct


def pk(o):
    """Packs an int, bytes or list (ints as 64-bit, bytes as bin32, lists as array32)."""
    if isinstance(o, bool):
        o = int(o)
    if isinstance(o, int):
        return b"\xcf" + struct.pack(">Q", o) if o >= 0 else b"\xd3" + struct.pack(">q", o)
    if isinstance(o, bytes):
        return b"\xc6" + struct.pack(">I", len(o)) + o
    if isinstance(o, list):
        return b"\xdd" + struct.pack(">I", len(o)) + b"".join(pk(x) for x in o)
    raise TypeError(o)


def up(b, i=0):
    """Unpacks one value at b[i:]; returns (value, next index)."""
    t = b[i]
    if t <= 0x7f:
        return t, i + 1
    if t >= 0xe0:
        return t - 256, i + 1
    if 0x90 <= t <= 0x9f:
        n, i = t & 15, i + 1
    elif t == 0xdc:
        n, i = struct.unpack(">H", b[i + 1:i + 3])[0], i + 3
    elif t == 0xdd:
        n, i = struct.unpack(">I", b[i + 1:i + 5])[0], i + 5
    else:
        if 0xa0 <= t <= 0xbf:
            n = t & 31
            return b[i + 1:i + 1 + n], i + 1 + n
        if t in (0xc4, 0xd9):
            n = b[i + 1]
            return b[i + 2:i + 2 + n], i + 2 + n
        if t in (0xc5, 0xda):
            n = struct.unpack(">H", b[i + 1:i + 3])[0]
            return b[i + 3:i + 3 + n], i + 3 + n
        if t in (0xc6, 0xdb):
            n = struct.unpack(">I", b[i + 1:i + 5])[0]
            return b[i + 5:i + 5 + n], i + 5 + n
        w = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}[t]
        sz = struct.calcsize(w)
        return struct.unpack(w, b[i + 1:i + 1 + sz])[0], i + 1 + sz
    out = []
    for _ in range(n):
        v, i = up(b, i)
        out.append(v)
    return out, i


class FakeRaftd:
    """A DEALER with raftd's identity on <run>/stored.ipc: a script playing raftd against a real
    stored. send(TYPE, field, ...) adds the IPC version; recv_until(types, secs) returns the first
    message of one of those types (as a list: [version, type, fields...]) or None."""

    def __init__(self, run):
        import zmq
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, b"raftd")
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect("ipc://%s/stored.ipc" % run)

    def send(self, *fields):
        self.sock.send(pk([1] + list(fields)))

    def recv_until(self, types, secs):
        import time
        end = time.time() + secs
        while time.time() < end:
            if self.sock.poll(50):
                m, _ = up(self.sock.recv())
                if m[1] in types:
                    return m
        return None
