"""A client that never reads: raw HTTP/2 over a plain socket, a tiny receive window and a
tiny socket buffer, one Watch stream on a prefix (or, with a 4th argument "snapshot", one
Maintenance/Snapshot stream), then nothing. Usage: slowreader.py HOST:PORT PREFIX SECONDS
[snapshot]. Prints 'created' once the request is out; exits after SECONDS."""
import os, socket, struct, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pbwire import fld, grpc_frame  # noqa: E402

host, port = sys.argv[1].rsplit(":", 1)
prefix = sys.argv[2].encode()
secs = float(sys.argv[3])

def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload

def lit(name, value):  # literal header field without indexing, new name, no Huffman
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name) + s(value)

end = prefix[:-1] + bytes([prefix[-1] + 1])
create = fld(1, 2, fld(1, 2, prefix) + fld(2, 2, end))
snapshot = len(sys.argv) > 4 and sys.argv[4] == "snapshot"
msg = grpc_frame(b"" if snapshot else create)
path = b"/etcdserverpb.Maintenance/Snapshot" if snapshot else b"/etcdserverpb.Watch/Watch"

sk = socket.socket()
sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sk.connect((host, int(port)))
sk.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
# SETTINGS: initial window 65535 (default), nothing else
sk.sendall(frame(4, 0, 0, b""))
hdrs = (lit(b":method", b"POST") + lit(b":scheme", b"http") + lit(b":path", path) +
        lit(b":authority", sys.argv[1].encode()) + lit(b"content-type", b"application/grpc") + lit(b"te", b"trailers"))
sk.sendall(frame(1, 0x4, 1, hdrs))          # HEADERS, END_HEADERS
sk.sendall(frame(0, 1 if snapshot else 0, 1, msg))  # DATA (a server stream: END_STREAM)
print("created", flush=True)
time.sleep(secs)                            # never read
sk.close()
