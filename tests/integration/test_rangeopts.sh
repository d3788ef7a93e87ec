#!/usr/bin/env bash
# Range options etcdctl 3.4 cannot send (count_only, min/max mod/create revision filters),
# through the real gateway, with a hand-rolled protobuf client (nghttp + python), compared
# with the same requests against Debian's etcd.
. "$(dirname "$0")/lib.sh"
EP1=$(t_port); EP2=$(t_port); CP=$(t_port); PP=$(t_port)
t_start_etcd e1 "$EP1" "$EP2"
t_start_cairn c1 "$CP" "$PP"
t_wait_healthy "$E_EP"; t_wait_healthy "$C_EP"
for ep in "$E_EP" "$C_EP"; do
  for k in a b c d e; do etcdctl --endpoints="$ep" put "r/$k" "v$k" >/dev/null; done
  etcdctl --endpoints="$ep" put r/b vb2 >/dev/null
  etcdctl --endpoints="$ep" put r/d vd2 >/dev/null
done
PY=$T_TMP/pb.py
cat >"$PY" <<'PYEOF'
import struct, subprocess, sys
def varint(n):
    out = b""
    while True:
        c = n & 0x7f; n >>= 7
        out += bytes([c | (0x80 if n else 0)])
        if not n: return out
def f_bytes(f, b): return varint((f << 3) | 2) + varint(len(b)) + b
def f_int(f, v): return varint(f << 3) + varint(v & 0xffffffffffffffff)
def parse(b):
    i, out = 0, []
    while i < len(b):
        key = 0; s = 0
        while True:
            c = b[i]; i += 1; key |= (c & 0x7f) << s; s += 7
            if c < 0x80: break
        f, wt = key >> 3, key & 7
        if wt == 0:
            v = 0; s = 0
            while True:
                c = b[i]; i += 1; v |= (c & 0x7f) << s; s += 7
                if c < 0x80: break
            out.append((f, v))
        elif wt == 2:
            l = 0; s = 0
            while True:
                c = b[i]; i += 1; l |= (c & 0x7f) << s; s += 7
                if c < 0x80: break
            out.append((f, b[i:i + l])); i += l
        else:
            raise SystemExit("unexpected wire type")
    return out
url, opts = sys.argv[1], sys.argv[2:]
msg = f_bytes(1, b"r/") + f_bytes(2, b"r0")
for o in opts:
    name, val = o.split("=")
    field = {"limit": 3, "count_only": 9, "keys_only": 8, "min_mod": 10, "max_mod": 11, "min_create": 12, "max_create": 13, "sort_order": 5, "sort_target": 6}[name]
    msg += f_int(field, int(val))
import tempfile
body = b"\0" + struct.pack(">I", len(msg)) + msg
with tempfile.NamedTemporaryFile() as tf:
    tf.write(body); tf.flush()
    p = subprocess.run(["nghttp", "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", tf.name, url + "/etcdserverpb.KV/Range"], capture_output=True)
data = p.stdout
if len(data) < 5: print("no body", p.stderr.decode()[:200]); sys.exit(0)
resp = parse(data[5:5 + struct.unpack(">I", data[1:5])[0]])
keys, count, more = [], 0, 0
for f, v in resp:
    if f == 2:
        kv = dict(parse(v)); keys.append("%s@%d" % (kv.get(1, b"").decode(), kv.get(3, 0)))
    elif f == 3: more = v
    elif f == 4: count = v
print("keys=%s count=%d more=%d" % (",".join(keys), count, more))
PYEOF
for opts in "count_only=1" "limit=2" "min_mod=5" "max_mod=4" "min_create=3 max_create=4" "min_mod=6 limit=1" \
            "keys_only=1 sort_order=2 sort_target=3" "count_only=1 min_mod=7" "sort_target=4 sort_order=2 limit=3"; do
  # shellcheck disable=SC2086
  want=$(python3 "$PY" "http://$E_EP" $opts)
  # shellcheck disable=SC2086
  got=$(python3 "$PY" "http://$C_EP" $opts)
  case "$want" in keys=*) ;; *) t_fail "etcd gave no answer to Range $opts: $want" ;; esac
  t_eq "Range $opts (etcd: $want)" "$want" "$got"
done
t_stop "$C_GW" "$C_RAFTD" "$C_STORED"
t_done
