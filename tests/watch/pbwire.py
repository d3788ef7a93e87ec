"""Protocol Buffers wire encoding by hand, for tests that send messages the generated stubs
they have cannot express (python3-etcd3's protos predate etcd 3.4's Watch fields; v3lock and
v3election have no stubs at all). Only what those tests need: varints and fields."""


def vint(n):
    """A base-128 varint; a negative n as its 64-bit two's complement (protobuf's int64)."""
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7f
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def fld(no, wt, payload):
    """Field number no of wire type wt: 0 (payload = an already encoded varint) or 2 (bytes)."""
    return vint(no << 3 | wt) + (vint(len(payload)) + payload if wt == 2 else payload)


def grpc_frame(msg):
    """A gRPC message: the compressed flag 0, the big-endian length, the bytes."""
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def msg(*pairs):
    """A message from (field number, value) pairs: ints as varints (0 left out, as proto3 does),
    bytes and str as length-delimited fields; None is left out."""
    out = b""
    for no, v in pairs:
        if v is None:
            continue
        if isinstance(v, int):
            if v:
                out += vint(no << 3) + vint(v)
        else:
            v = v.encode() if isinstance(v, str) else v
            out += vint(no << 3 | 2) + vint(len(v)) + v
    return out


def parse(b, names, sub=None):
    """Decodes message b into a dict: field number k is names[k-1]; varints as signed 64-bit,
    length-delimited fields as bytes, or decoded by sub[name] when given."""
    sub = sub or {}
    out, i = {}, 0

    def rv():
        nonlocal i
        s = r = 0
        while True:
            c = b[i]
            i += 1
            r |= (c & 0x7f) << s
            s += 7
            if c < 0x80:
                return r

    while i < len(b):
        t = rv()
        no, wt = t >> 3, t & 7
        if wt == 0:
            v = rv()
            v = v - (1 << 64) if v >= 1 << 63 else v
        elif wt == 2:
            n = rv()
            v = b[i:i + n]
            i += n
        else:
            raise ValueError("wire type %d" % wt)
        nm = names[no - 1]
        out[nm] = sub[nm](v) if nm in sub else v
    return out
