"""Protocol Buffers wire encoding by hand, for tests that send messages the generated stubs
they have cannot express (python3-etcd3's protos predate etcd 3.4's Watch fields; v3lock and
v3election have no stubs at all). Only what those tests need: varints and fields."""


def vint(n):
    """A base-128 varint (n >= 0)."""
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
