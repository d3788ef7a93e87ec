#!/usr/bin/env bash
# etcd 3.4's JSON gateway STREAMS (ETCD_API.md §5; services/gatewayd/gateway.c json_stream_call):
# POST /v3/watch, /v3/lease/keepalive, /v3/election/observe, and the unary-in-etcd Lock and
# Campaign, driven by the same script (jstreams.py, below) against a real etcd 3.4 and a Cairn
# node, started here; every answer is compared: HTTP status, Content-Type, framing (chunked or
# Content-Length), each chunk's JSON, whether each chunk ends with "\n", whether the body ended
# (the last chunk) or stayed open, and whether the connection serves a next request after it.
#
# What legitimately differs is normalised away: header.cluster_id, member_id, raft_term (ids are
# random per cluster, terms depend on elections). Lease IDs are chosen by the script, so keys
# that hold them (lock and election keys) are the same on both.
#
# Then, on Cairn only (etcd's watch server buffers a slow client without a bound, which is not a
# behaviour to compare): a JSON watch client that stops reading costs the gateway bounded memory
# and, once it reads again, gets every event, in order (the watch hub's slow-reader rules); and a
# client that closes mid-stream leaves nothing behind (its watchers are gone: a later Range
# still works and the sanitizer, under deploy/test.sh, reports no leak at exit).
source "$(dirname "$0")/lib.sh"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=1:thread_local_quarantine_size_kb=64"

EP=$(t_port); EPP=$(t_port); CP=$(t_port); CPP=$(t_port)
t_start_etcd s1 "$EP" "$EPP"
t_start_cairn s1 "$CP" "$CPP"
t_wait_healthy "$E_EP" || { t_fail "etcd not healthy"; t_done; exit 1; }
t_wait_healthy "$C_EP" || { t_fail "cairn not healthy"; t_done; exit 1; }

cat >"$T_TMP/jstreams.py" <<'PY'
"""The stream script: one line per answer, "label<TAB>what<TAB>detail". Usage: jstreams.py HOST:PORT"""
import base64, json, socket, sys, time

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
b64 = lambda s: base64.b64encode(s.encode()).decode()


def out(label, what, detail=""):
    print("%s\t%s\t%s" % (label, what, detail), flush=True)


class Conn:
    """A raw HTTP/1.1 connection: the request bytes as given, the answer read as it comes."""

    def __init__(self):
        self.s = socket.create_connection((host, port))
        self.buf = b""
        self.eof = False

    def send(self, path, body, method="POST", extra=""):
        body = body.encode()
        self.s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" %
                        (method, path, len(body), extra)).encode() + body)

    def send_chunked(self, path, parts):
        """The body in chunks, one every 0.2 s, then the last chunk (curl -T - does this)."""
        self.s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % path).encode())
        for p in parts:
            b = p.encode()
            self.s.sendall(b"%x\r\n%s\r\n" % (len(b), b))
            time.sleep(0.2)
        self.s.sendall(b"0\r\n\r\n")

    def fill(self, deadline):
        """More bytes, or False at the deadline / EOF."""
        if self.eof:
            return False
        t = deadline - time.time()
        if t <= 0:
            return False
        self.s.settimeout(t)
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def line(self, deadline):
        while b"\r\n" not in self.buf:
            if not self.fill(deadline):
                return None
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l.decode("latin-1")

    def take(self, n, deadline):
        while len(self.buf) < n:
            if not self.fill(deadline):
                return None
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def head(self, deadline):
        """Status line and headers -> (status, {name: value}) or None."""
        st = self.line(deadline)
        if st is None:
            return None
        hs = {}
        while True:
            l = self.line(deadline)
            if l is None:
                return None
            if l == "":
                return int(st.split()[1]), hs
            k, v = l.split(":", 1)
            hs[k.strip().lower()] = v.strip()

    def chunk(self, deadline):
        """One chunk: bytes, b"" for the last one, None if none came in time."""
        l = self.line(deadline)
        if l is None:
            return None
        n = int(l.split(";")[0], 16)
        if n == 0:
            while self.line(deadline):  # trailers, up to the blank line
                pass
            return b""
        d = self.take(n + 2, deadline)
        return None if d is None else d[:-2]

    def close(self):
        self.s.close()


def norm(v, parent=None):
    if isinstance(v, dict):
        return {k: norm(x, k) for k, x in v.items()
                if not (parent == "header" and k in ("cluster_id", "member_id", "raft_term"))}
    if isinstance(v, list):
        return [norm(x, parent) for x in v]
    return v


def show(b):
    try:
        return json.dumps(norm(json.loads(b)), separators=(",", ":"))
    except ValueError:
        return repr(b)


def stream(label, path, body, n, after=None, wait=3.0, quiet=0.6, c=None, reuse=True, unary_route=False, chunks=None):
    """Sends one request, reads the head and up to n chunks (calling after() once the head came,
    or at once when n == 0), then whatever else comes within `quiet`; reports each. reuse: then
    asks for /version on the same connection if the answer ended. unary_route: a method etcd
    serves as unary (Lock, Campaign): status, type and body only, as test_json_gateway.sh
    compares them (etcd 3.4 sends a unary error chunked with a Grpc-Trailer-Content-Type
    trailer, Cairn with a Content-Length: a difference of every unary route, not of streams)."""
    mine = c is None
    c = c or Conn()
    if chunks is not None:
        # (etcd 3.4 answers a request of a chunked body only once more of the body came; Cairn
        # at once: the answers are compared once the body ended)
        c.send_chunked(path, chunks)
    else:
        c.send(path, body)
    if after and n == 0:
        after()
    h = c.head(time.time() + wait)
    if h is None:
        out(label, "no answer", "eof" if c.eof else "open")
        if after and n:
            after()
        c.close()
        return
    status, hs = h
    framing = "chunked" if hs.get("transfer-encoding") == "chunked" else "length" if "content-length" in hs else "none"
    out(label, "head", "%d %s %s" % (status, hs.get("content-type"), "" if unary_route else framing))
    ended = False
    if unary_route and framing == "chunked":
        body = b""
        while True:
            ch = c.chunk(time.time() + wait)
            if not ch:
                break
            body += ch
        out(label, "body", show(body))
        ended = ch == b""
    elif framing == "length":
        body = c.take(int(hs["content-length"]), time.time() + wait)
        out(label, "body", show(body))
        ended = True
    else:
        if after and n:
            after()
        got = 0
        while True:
            dl = time.time() + (wait if got < n else quiet)
            ch = c.chunk(dl)
            if ch is None:
                out(label, "open" if not c.eof else "eof")
                break
            if ch == b"":
                out(label, "end")
                ended = True
                break
            got += 1
            out(label, "chunk", ("nl " if ch.endswith(b"\n") else "no-nl ") + show(ch.rstrip(b"\n")))
    if ended and reuse:
        c.send("/version", "", method="GET")
        h = c.head(time.time() + wait)
        out(label, "next request on the connection", "answered" if h else "eof" if c.eof else "no answer")
    if mine:
        c.close()


def unary(path, body):
    c = Conn()
    c.send(path, body)
    st, hs = c.head(time.time() + 5)
    b = c.take(int(hs.get("content-length", 0)), time.time() + 5)
    c.close()
    return json.loads(b) if b else None


FOO, A1, A2 = b64("foo"), b64("a/1"), b64("a/2")
put = lambda k, v: unary("/v3/kv/put", json.dumps({"key": k, "value": b64(v)}))

put(FOO, "v0")  # revision 2
put(A1, "x")    # 3
# --- watch
stream("watch-key", "/v3/watch", json.dumps({"create_request": {"key": FOO}}), 3,
       after=lambda: (put(FOO, "v1"), put(FOO, "v2")))
stream("watch-prefix-prev_kv-delete", "/v3/watch",
       json.dumps({"create_request": {"key": b64("a/"), "range_end": b64("a0"), "prev_kv": True}}), 4,
       after=lambda: (put(A1, "y"), put(A2, "z"), unary("/v3/kv/deleterange", json.dumps({"key": A1}))))
stream("watch-from-revision", "/v3/watch", json.dumps({"create_request": {"key": FOO, "start_revision": "2"}}), 4)
stream("watch-filters-camel", "/v3/watch",
       json.dumps({"createRequest": {"key": b64("a/"), "rangeEnd": b64("a0"), "filters": ["NOPUT"]}}), 2,
       after=lambda: (put(A1, "w"), unary("/v3/kv/deleterange", json.dumps({"key": A1}))))
stream("watch-several-requests", "/v3/watch",
       json.dumps({"create_request": {"key": FOO}}) + "\n" +
       json.dumps({"create_request": {"key": A1, "watch_id": 7}}) + " " +
       json.dumps({"progress_request": {}}) + json.dumps({"cancel_request": {"watch_id": 7}}), 4)
stream("watch-cancel-unknown", "/v3/watch",
       json.dumps({"create_request": {"key": FOO}}) + json.dumps({"cancel_request": {"watch_id": "99"}}), 1)
stream("watch-second-request-bad", "/v3/watch", json.dumps({"create_request": {"key": FOO}}) + " {\"x\" 1}", 1)
stream("watch-second-request-bad-type", "/v3/watch",
       json.dumps({"create_request": {"key": FOO}}) + json.dumps({"create_request": {"key": 5}}), 1)
stream("watch-no-key", "/v3/watch", '{"create_request":{}}', 1)
stream("watch-future-revision", "/v3/watch", json.dumps({"create_request": {"key": FOO, "start_revision": 100000}}), 1)
stream("watch-empty-body", "/v3/watch", "", 0, wait=1.0)
stream("watch-empty-object", "/v3/watch", "{}", 0, wait=1.0)
stream("watch-malformed", "/v3/watch", '{"create_request":', 1)
stream("watch-bad-base64", "/v3/watch", '{"create_request":{"key":"!!"}}', 1)
stream("watch-bad-type", "/v3/watch", '{"create_request":{"start_revision":"x"}}', 1)
stream("watch-bad-top", "/v3/watch", '[1]', 1)
# a chunked body (curl -T -: an interactive watch), a request cut across chunks
stream("watch-chunked", "/v3/watch", None, 3, chunks=[json.dumps({"create_request": {"key": FOO}}), '{"create_',
       'request":{"key":"%s","watch_id":3}}\n' % A1, json.dumps({"progress_request": {}}), "xx",
       json.dumps({"progress_request": {}})])
stream("watch-chunked-first-bad", "/v3/watch", None, 1, chunks=['{"create_request":', '{'])
stream("watch-chunked-empty", "/v3/watch", None, 0, chunks=[], wait=1.0)
stream("watch-v3beta", "/v3beta/watch", json.dumps({"create_request": {"key": FOO}}), 1)
unary("/v3/kv/compaction", json.dumps({"revision": 4}))
stream("watch-compacted", "/v3/watch", json.dumps({"create_request": {"key": FOO, "start_revision": 2}}), 2)
# --- lease keepalive
unary("/v3/lease/grant", json.dumps({"TTL": 60, "ID": 4660}))
stream("keepalive", "/v3/lease/keepalive", json.dumps({"ID": 4660}), 1)
stream("keepalive-several", "/v3/lease/keepalive", json.dumps({"ID": "4660"}) + json.dumps({"ID": 5}) + "{}", 3)
stream("keepalive-unknown", "/v3/lease/keepalive", json.dumps({"ID": 77}), 1)
stream("keepalive-empty-body", "/v3/lease/keepalive", "", 0)
stream("keepalive-malformed", "/v3/lease/keepalive", '{"ID":"x"}', 1)
stream("keepalive-chunked", "/v3/lease/keepalive", None, 2, chunks=['{"I', 'D":4660}', ' {"ID":7}'])
stream("keepalive-second-bad", "/v3/lease/keepalive", '{"ID":4660} nope', 1)
c = Conn()  # two streams one after the other on one keep-alive connection
stream("keepalive-conn-1", "/v3/lease/keepalive", json.dumps({"ID": 4660}), 1, c=c, reuse=False)
stream("keepalive-conn-2", "/v3/lease/keepalive", json.dumps({"ID": 4660}), 1, c=c)
c.close()
# --- lock and election: Lock and Campaign are unary in etcd, Observe a server stream
unary("/v3/lease/grant", json.dumps({"TTL": 60, "ID": 9029}))
stream("lock", "/v3/lock/lock", json.dumps({"name": b64("lk"), "lease": 9029}), 1, unary_route=True)
stream("lock-no-name", "/v3/lock/lock", json.dumps({"lease": 9029}), 1, unary_route=True)
stream("lock-malformed", "/v3/lock/lock", '{"name":', 1, unary_route=True)
stream("lock-unknown-lease", "/v3/lock/lock", json.dumps({"name": b64("lk"), "lease": 3}), 1, unary_route=True)
stream("observe-no-leader", "/v3/election/observe", json.dumps({"name": b64("el")}), 0, wait=1.0)
stream("campaign", "/v3/election/campaign", json.dumps({"name": b64("el"), "value": b64("v1"), "lease": 9029}), 1, unary_route=True)
leader = {"name": b64("el"), "key": b64("el/%x" % 9029), "lease": 9029}
stream("observe", "/v3/election/observe", json.dumps({"name": b64("el")}), 2,
       after=lambda: unary("/v3/election/proclaim", json.dumps({"leader": dict(leader, rev=unary(
           "/v3/election/leader", json.dumps({"name": b64("el")}))["kv"]["create_revision"]), "value": b64("v2")})))
# chunked bodies of routes that read one request: read whole, then served
stream("observe-chunked", "/v3/election/observe", None, 1, chunks=['{"na', 'me":"%s"}' % b64("el")])
stream("range-chunked", "/v3/kv/range", None, 1, chunks=['{"key":', '"%s"}' % FOO], unary_route=True)
stream("range-chunked-bad", "/v3/kv/range", None, 1, chunks=['{"key":', '1}'], unary_route=True)
stream("observe-no-name", "/v3/election/observe", "{}", 0, wait=1.0)
stream("observe-malformed", "/v3/election/observe", '{"name":1}', 1)
stream("observe-empty-body", "/v3/election/observe", "", 0, wait=1.0)
stream("observe-two-requests", "/v3/election/observe", json.dumps({"name": b64("el")}) + json.dumps({"name": b64("zz")}), 1)
stream("campaign-bad-lease", "/v3/election/campaign", json.dumps({"name": b64("e2"), "value": b64("v"), "lease": 12}), 1, unary_route=True)
c = Conn()
c.send("/v3/watch", "", method="GET")
h = c.head(time.time() + 2)
out("watch-get", "head", h and h[0])
c.close()
PY

timeout 120 python3 "$T_TMP/jstreams.py" "$E_EP" >"$T_TMP/etcd.out" 2>"$T_TMP/etcd.err" || t_fail "the script failed against etcd: $(tail -3 "$T_TMP/etcd.err")"
timeout 120 python3 "$T_TMP/jstreams.py" "$C_EP" >"$T_TMP/cairn.out" 2>"$T_TMP/cairn.err" || t_fail "the script failed against cairn: $(tail -3 "$T_TMP/cairn.err")"
[ -s "$T_TMP/etcd.out" ] || t_fail "no answers from etcd"
# etcd's own answers vary under load: a clean-clone CI run once saw etcd not send, within the
# script's wait, its answer to watch-chunked's second create (the progress answer after it came). Where
# Cairn's differ, the script runs once more against a fresh etcd, and Cairn is compared with
# that run: a difference that is Cairn's shows in both.
if ! cmp -s "$T_TMP/etcd.out" "$T_TMP/cairn.out"; then
  echo "# Cairn's answers differ from etcd's first run here:" >&2
  diff "$T_TMP/etcd.out" "$T_TMP/cairn.out" | head -8 | sed 's/^/#   /' >&2 || true
  t_stop "$E_PID"
  t_start_etcd s2 "$(t_port)" "$(t_port)"
  t_wait_healthy "$E_EP" || t_fail "the second etcd is not healthy"
  mv "$T_TMP/etcd.out" "$T_TMP/etcd-first.out"
  timeout 120 python3 "$T_TMP/jstreams.py" "$E_EP" >"$T_TMP/etcd.out" 2>"$T_TMP/etcd.err" || t_fail "the script failed against the second etcd: $(tail -3 "$T_TMP/etcd.err")"
fi
while IFS= read -r e && IFS= read -r c <&3; do
  t_eq "$(cut -f1,2 <<<"$e")" "$e" "$c"
done <"$T_TMP/etcd.out" 3<"$T_TMP/cairn.out"
t_eq "same number of answers" "$(wc -l <"$T_TMP/etcd.out")" "$(wc -l <"$T_TMP/cairn.out")"

# ---- Cairn only: a JSON watch client that stops reading, then reads again
cat >"$T_TMP/slowjson.py" <<'PY'
"""A JSON watch (HTTP/1.1) on a prefix whose client does not read for PAUSE seconds (tiny receive
buffer), then reads until it has N events or TIMEOUT; prints the events' mod revisions in order
as "events <count> <in order and without duplicates: yes/no>". Usage: HOST:PORT PREFIX N PAUSE TIMEOUT"""
import base64, json, socket, sys, time
hp, prefix, n, pause, tmo = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
host, port = hp.rsplit(":", 1)
end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
body = json.dumps({"create_request": {"key": base64.b64encode(prefix.encode()).decode(),
                                      "range_end": base64.b64encode(end.encode()).decode()}}).encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect((host, int(port)))
s.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
print("started", flush=True)
time.sleep(pause)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
buf, revs, deadline = b"", [], time.time() + tmo
s.settimeout(1)
while len(revs) < n and time.time() < deadline:
    try:
        d = s.recv(1 << 20)
    except socket.timeout:
        continue
    if not d:
        break
    buf += d
    # the chunk framing is not parsed: each message is one line {"result":...}
    while True:
        i = buf.find(b"{\"result\"")
        j = buf.find(b"}\n", i) if i >= 0 else -1
        if j < 0:
            break
        m = json.loads(buf[i:j + 1])
        buf = buf[j + 2:]
        for ev in m["result"].get("events", []):
            revs.append(int(ev["kv"]["mod_revision"]))
ok = all(b > a for a, b in zip(revs, revs[1:]))
print("events %d %s" % (len(revs), "yes" if ok else "no"), flush=True)
PY
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
python3 "$T_TMP/slowjson.py" "$C_EP" /slow/ 1000 25 60 >"$T_TMP/slow.out" 2>&1 &
SLOW=$!
T_PIDS+=("$SLOW")
t_wait_until 5 grep -q started "$T_TMP/slow.out" || t_fail "slow JSON reader did not start"
sleep 0.5
rss0=$(rss_kb "$C_GW")
# 32 MiB of values (43 MiB of JSON): 1000 Puts of 32 KiB
"$CAIRN_BIN/cairn_bench" --endpoint "$C_EP" --op put --prefix /slow/ --key-space 1000 --total 1000 \
  --val-size 32768 --clients 4 >"$T_TMP/put.out" 2>&1 || t_fail "puts failed: $(cat "$T_TMP/put.out")"
rss1=$(rss_kb "$C_GW")
grow=$(( (rss1 - rss0) / 1024 ))
[ "$grow" -lt 24 ] && t_ok "gatewayd grew ${grow} MiB for 43 MiB of JSON events a client did not read" ||
  t_fail "gatewayd grew ${grow} MiB (rss ${rss0} -> ${rss1} KiB) for a JSON client that does not read"
wait "$SLOW" || true
t_eq "the slow JSON client, reading again, got every event in order" "events 1000 yes" "$(tail -1 "$T_TMP/slow.out")"

# ---- Cairn only: the same streams over HTTP/2 (curl and Go clients speak h2 to a TLS endpoint;
# here h2c with prior knowledge, the same code path): DATA frames instead of chunks
H2=$T_TMP/h2watch.out
timeout 3 curl -s -N --http2-prior-knowledge "http://$C_EP/v3/watch" \
  -d "{\"create_request\":{\"key\":\"$(printf /h2 | base64)\"}}" >"$H2" 2>/dev/null &
sleep 1
curl -s "http://$C_EP/v3/kv/put" -d "{\"key\":\"$(printf /h2 | base64)\",\"value\":\"eA==\"}" >/dev/null
sleep 2.5
t_eq "a JSON watch over HTTP/2: created, then the event" "2 1" \
  "$(wc -l <"$H2") $(grep -c '"events":\[{"kv":{"key":"L2gy"' "$H2")"
out=$(timeout 5 curl -s -N --http2-prior-knowledge "http://$C_EP/v3/lease/keepalive" -d '{"ID":4660}{"ID":1}'; echo "rc=$?")
t_eq "a JSON keepalive over HTTP/2 answers each request and ends" "2 rc=0" \
  "$(grep -c '"result"' <<<"$out") $(tail -1 <<<"$out")"

# ---- Cairn only: clients that go away mid-stream (close, half-close) free their stream
for i in 1 2 3 4 5; do
  timeout 0.5 curl -s -N "http://$C_EP/v3/watch" -d "{\"create_request\":{\"key\":\"$(printf /gone | base64)\"}}" >/dev/null || true
done
python3 - "$C_EP" <<'PY'
import socket, sys, time
h, p = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((h, int(p)))
b = b'{"create_request":{"key":"L2dvbmU="}}'
s.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
time.sleep(0.3)
s.shutdown(socket.SHUT_WR)  # Go's server cancels a request whose client half-closes
s.settimeout(3)
d = b""
try:
    while True:
        x = s.recv(65536)
        if not x:
            break
        d += x
except socket.timeout:
    print("still open after the half-close")
    sys.exit(1)
PY
[ $? -eq 0 ] && t_ok "a half-closed JSON watch is ended and its connection closed" || t_fail "a half-closed JSON watch stayed open"
out=$(curl -s "http://$C_EP/v3/kv/put" -d "{\"key\":\"$(printf /gone | base64)\",\"value\":\"eA==\"}")
t_contains "the gateway serves on after clients left mid-stream" '"revision"' "$out"
kill -0 "$C_GW" && t_ok "gatewayd still running" || t_fail "gatewayd died"
t_stop "$C_GW"
t_done
