/*
 * cairn_bench — a gRPC load generator for the etcd v3 KV API (etcd or Cairn).
 *
 * One thread, one poll() loop, C TCP connections speaking HTTP/2 with prior knowledge
 * (h2c) through nghttp2's client session; request bodies are protobuf-c messages.
 * --clients N requests are kept outstanding in total, spread over the connections as
 * concurrent HTTP/2 streams: connection i holds N/C streams (the first N%C one more).
 * When a stream completes its slot immediately starts the next request (closed loop).
 *
 * Wire shape of one request (see shared/ETCD_API.md §7):
 *   HEADERS  :method POST  :scheme http  :path /etcdserverpb.KV/<Put|Range>
 *            :authority <endpoint>  content-type application/grpc  te trailers
 *   DATA     byte 0: compressed flag (0); bytes 1..4: big-endian message length;
 *            then the PutRequest / RangeRequest protobuf; END_STREAM.
 * A request succeeds when the response carries grpc-status 0 (in the trailers, or in a
 * Trailers-Only HEADERS frame). Anything else is an error: another grpc-status, an HTTP
 * status other than 200, a missing grpc-status, RST_STREAM, or a lost connection.
 *
 * --endpoint may list several servers (a,b,c): connection i goes to endpoint i mod E, and
 * --conns is rounded up to a multiple of E (clients permitting) so each endpoint gets the
 * same number of connections (for reads spread over the members of a cluster).
 *
 * Latency is measured per request from submission to the stream's close (the trailer
 * carries END_STREAM) with CLOCK_MONOTONIC, kept as microseconds and sorted at the end.
 *
 * Checking what was acknowledged (used by the scale tests, tests/integration/test_scale*.sh):
 *   --keyed-values  the value of key number i is derived from the key itself: the key's
 *                   bytes, ':', then a 64-byte block of letters drawn from a hash (FNV-1a)
 *                   of the key, repeated; all cut to --val-size. Every Put of a key carries
 *                   the same value, so a reader can tell a right value from a wrong one.
 *   --acked FILE    (put) when the run ends, writes the numbers of the keys that had at
 *                   least one acknowledged Put (grpc-status 0), one decimal per line,
 *                   ascending; a Put whose outcome is unknown (error, lost connection) is
 *                   not listed. The output line gains " acked=A" (distinct keys).
 *   --op verify     reads every key under --prefix back with linearizable Range requests,
 *                   one page at a time: page j is the window [key(j*P), key((j+1)*P)) of
 *                   P = --page key numbers (default ~4 MiB of values), the first window
 *                   from the prefix itself, the last to the prefix's end, so every key under
 *                   the prefix is read, and a page costs the server O(P) even where a Range
 *                   counts the whole rest of its range (etcd 3.4 does). A window holding more
 *                   than P keys continues from its last key + "\0" (limit P). A failed page
 *                   is tried again 200 ms later, up to 3 times. It checks that each key is
 *                   prefix + a number < --key-space in make_key()'s form and holds its keyed
 *                   value, and, with --acked FILE (read), that every number listed is
 *                   present. Implies --keyed-values, --clients 1, --conns 1.
 *
 * Output: exactly one line on stdout,
 *   op=put ok=N errors=E seconds=S ops_per_sec=X p50_ms=A p90_ms=B p99_ms=C max_ms=D
 * followed, for range ops only, by " found=F" (replies that returned at least one kv);
 * for put with --acked by " acked=A"; for verify (ok counts the pages read) by
 *   " keys=K expected=X missing=M wrong=W unexpected=U retried=R"
 * (K keys read, X numbers listed in --acked, M of them absent, W keys with a wrong value
 * or a key that make_key() would not produce, U keys present but not listed: Puts whose
 * outcome was unknown to the writer and that did land; R failed page reads tried again).
 * The first error (and a timeout, if any) is described on stderr; for verify, also the
 * first missing number and the first wrong key.
 * Exit status: 0 all ok; 1 some requests failed (verify: or M > 0 or W > 0 or a page
 * failed); 2 hard timeout; 3 could not connect / usage / cannot read or write FILE.
 *
 * Bounded: requests stop being issued after --total or --duration (verify: after the last
 * page, or the first failed one); a hard timeout (--timeout, default duration + 30 s, or
 * 300 s with --total or verify) ends the run regardless.
 *
 * --op watch: watch delivery latency and correctness (bench/watch.sh drives it).
 *   --watchers N watchers over --conns C connections, each connection holding --watch-streams S
 *   Watch streams (stream g of the C*S gets N/(C*S) watchers, the first N%(C*S) one more).
 *   A Watch stream is one long-lived bidi gRPC call:
 *     HEADERS  :path /etcdserverpb.Watch/Watch, the headers above plus hasleader: true
 *              (what clientv3 sends on watch streams)
 *     DATA     one gRPC message per watcher of the stream, back to back: byte 0 = 0, bytes
 *              1..4 = big-endian length, then WatchRequest{create_request{key=--prefix,
 *              range_end=prefix end, watch_id=0}}; never END_STREAM: once the creates are
 *              sent the data source answers NGHTTP2_ERR_DEFERRED, so the stream stays open
 *              until the connection is closed at the end.
 *   The server answers each create in order (ETCD_API.md §2 Watch), so the k-th created
 *   response of a stream belongs to its k-th watcher; the watch_id it carries maps later
 *   responses to watchers. A create answered canceled, a later cancel, or a stream that
 *   closes (e.g. grpc-status 12 UNIMPLEMENTED) kills its watchers and is an error.
 *   Once every watcher is created (or dead, if some live), one more connection (the writer,
 *   to endpoint C mod E) Puts keys 0..--total-1 (make_key() form, --val-size values) at
 *   --rate R Puts/s (at most 1024 outstanding), or closed loop, 1 outstanding, when R is 0.
 *   With --ready-file FILE the writer first creates FILE and waits until someone removes it
 *   (a script samples the server's memory between the two).
 *   The send time of Put k is kept by k (one slot per Put); an event for key k received on a
 *   read() at time t is a latency sample t - send(k). Samples number total x watchers, so
 *   they go into a histogram (64 log-spaced buckets per power of two from 1 us, capped at
 *   60 s: ~1.6 % resolution) rather than an array; max is exact.
 *   Check, per watcher: the mod_revision of each PUT event is above the previous one
 *   (a duplicate or a step back counts in dup_or_reorder and is not accepted), and at the
 *   end it has accepted one event per acknowledged Put (short: missing). Any other event
 *   (DELETE, a key not of our form, an unknown watch_id) is an error.
 *   The run ends when the Puts are done and every live watcher holds an event for each
 *   acknowledged Put, when every watcher is dead, or at --timeout (default 300 s).
 *   WatchResponses are decoded by a small wire walker (pb_field) instead of protobuf-c's
 *   unpack: there are total x watchers of them and the client shares the machine with the
 *   server, so six mallocs per event would be measured as server latency.
 *   Output:
 *     op=watch watchers=N events=E seconds=S events_per_sec=X p50_ms=A p90_ms=B p99_ms=C
 *     max_ms=D missing=M dup_or_reorder=R puts=P errors=F put_p50_ms=G put_p99_ms=H
 *     create_seconds=T event_msgs=K
 *   E events accepted over all watchers, S from the first Put to the last event, P Puts
 *   acknowledged, F errors (failed Puts, dead watchers, unexpected events), T from the first
 *   create sent to the last created response, K WatchResponses that carried events (E/K > 1:
 *   the server batched several revisions into one response). Exit status 1 when M, R or F
 *   is not 0.
 *
 * --op keepalive: lease keepalive throughput (bench/lease.sh drives it).
 *   Setup, before the clock starts: --leases L unary LeaseGrant calls
 *   (/etcdserverpb.Lease/LeaseGrant, LeaseGrantRequest{TTL=--ttl, ID=0: the server picks}),
 *   --clients at a time over the connections' slots, closed loop as for put; each reply must
 *   carry an ID > 0, a TTL > 0 and no error, and its ID is kept. A failed grant stops the run
 *   before any keepalive (errors > 0, ok=0). With --ready-file FILE, once every lease is
 *   granted it creates FILE and waits until someone removes it (a script samples the
 *   server's memory, and its CPU time, between the two).
 *   Load: each connection opens as many LeaseKeepAlive streams as it had slots (--clients N
 *   in total over --conns C), each one long-lived bidi gRPC call:
 *     HEADERS  :path /etcdserverpb.Lease/LeaseKeepAlive, the headers above plus hasleader: true
 *              (what etcdctl / clientv3 send)
 *     DATA     one gRPC message per keepalive, LeaseKeepAliveRequest{ID}; never END_STREAM:
 *              between keepalives the data source answers NGHTTP2_ERR_DEFERRED and the
 *              response resumes it (nghttp2_session_resume_data).
 *   Every stream is a closed loop: one keepalive in flight; its response (read by the wire
 *   walker, pb_field) must carry the same ID (else mismatched) and a TTL > 0 (else zero_ttl:
 *   the lease is unknown or expired); both count as errors. Then it sends the next, for the
 *   next lease of a round robin shared by all streams over the granted leases. Latency per
 *   keepalive: from the moment nghttp2 frames the request (just before the write()) to the
 *   read() that brought the response, into the watch op's histogram (bounded; ~1.6 %
 *   resolution, max exact). Sending stops at --duration (default 10 s) from the clock's start
 *   or after --total keepalives; the run ends when the last ones are answered. A stream the
 *   server closes or resets is an error and stops its loop. --timeout (default duration +
 *   300 s) covers the grants too.
 *   Output:
 *     op=keepalive ok=N errors=E seconds=S ops_per_sec=X p50_ms=A p90_ms=B p99_ms=C max_ms=D
 *     leases=L granted=G grant_seconds=T grants_per_sec=Y streams=N mismatched=M zero_ttl=Z
 *   N keepalives answered with the right ID and a TTL > 0, S from the clock's start to the
 *   last response, T the setup's grants (to the last grant reply). Exit status 1 when E > 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "rpc.pb-c.h"

enum op { OP_PUT, OP_RANGE, OP_RANGE_SERIALIZABLE, OP_VERIFY, OP_WATCH, OP_KEEPALIVE };
static const char *const op_names[] = {"put", "range", "range-serializable", "verify", "watch", "keepalive"};

typedef struct conn conn_t;

/* watch: one watcher, i.e. one WatchCreateRequest */
enum { W_PENDING, W_CREATED, W_DEAD };
typedef struct watcher {
    int64_t last_rev; /* mod_revision of the last accepted event */
    uint64_t events;  /* PUT events accepted (in order, no duplicate) */
    uint8_t state;
} watcher_t;

/* watch: one Watch bidi stream and the watchers it carries */
typedef struct wstream {
    conn_t *conn;
    int32_t stream_id;
    bool open;
    int http_status, grpc_status;
    char *grpc_message;
    uint32_t first, n; /* watchers first .. first+n-1 */
    uint32_t ncreated; /* created responses seen: the next one belongs to watcher first+ncreated */
    /* watch_id -> watcher (index + 1; 0 = empty slot), open addressing, hcap a power of two */
    int64_t *hid;
    uint32_t *hw;
    uint32_t hcap;
    uint8_t *body; /* the creates, sent once */
    size_t body_len, body_off;
    uint8_t *rx; /* received bytes not yet a whole gRPC message */
    size_t rx_len, rx_cap;
} wstream_t;

/* keepalive: one LeaseKeepAlive bidi stream, one keepalive in flight at a time */
typedef struct kstream {
    conn_t *conn;
    int32_t stream_id;
    bool open;
    bool waiting;   /* a keepalive sent (or queued), its response not yet read */
    int http_status, grpc_status;
    char *grpc_message;
    int64_t lease;  /* the ID of the keepalive in flight */
    uint64_t t0_ns; /* when its bytes went to nghttp2's frame (then straight to write()) */
    uint8_t msg[32]; /* the LeaseKeepAliveRequest, gRPC-prefixed, until nghttp2 takes it */
    size_t msg_len, msg_off;
    uint8_t *rx; /* received bytes not yet a whole gRPC message */
    size_t rx_len, rx_cap;
} kstream_t;

/* One concurrent client: a stream slot on a connection, reused request after request. */
typedef struct slot {
    conn_t *conn;
    struct slot *next_free;
    uint64_t t0_ns;
    uint64_t key_no;  /* number of the key the request in flight is about */
    int32_t stream_id;
    bool busy;        /* a request is in flight in this slot */
    int http_status;  /* :status, 0 until seen */
    int grpc_status;  /* -1 until seen */
    char *grpc_message; /* only kept while no error has been recorded yet */
    /* request body: 5-byte gRPC prefix + protobuf */
    uint8_t *body;
    size_t body_len, body_off;
    /* response body (range only): gRPC frames as received */
    uint8_t *resp;
    size_t resp_len, resp_cap;
} slot_t;

struct conn {
    int fd;
    int idx;
    int ep; /* index into opt.eps */
    bool dead;
    nghttp2_session *h2;
    slot_t *slots;
    int nslots;
    slot_t *free_slots;
    int inflight;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    /* watch: a connection of Watch streams (none on the writer's) */
    bool watch;
    wstream_t *ws;
    int nws;
    /* keepalive: its LeaseKeepAlive streams (its slots serve the LeaseGrants before) */
    kstream_t *ks;
    int nks;
};

/* ---- options and global state ---------------------------------------------------------- */
#define MAX_ENDPOINTS 16
typedef struct endpoint {
    char host[256];
    char port[16];
    char authority[300];
} endpoint_t;

static struct {
    endpoint_t eps[MAX_ENDPOINTS];
    int neps;
    enum op op;
    int conns, clients;
    uint64_t total;  /* 0: by duration */
    double duration; /* seconds; 0: by total */
    double timeout;  /* hard timeout, seconds */
    int key_size, val_size;
    uint64_t key_space;
    const char *prefix;
    bool sequential;
    uint64_t seed;
    bool keyed_values;
    const char *acked_path; /* put: written at the end; verify: read at the start */
    int64_t page;           /* verify: Range limit */
    int watchers, watch_streams; /* watch */
    double rate;                 /* watch: Puts per second, 0 closed loop */
    const char *ready_file;      /* watch, keepalive */
    int leases;                  /* keepalive: leases granted before the clock starts */
    int64_t ttl;                 /* keepalive: their TTL, seconds */
} opt = {
    .op = OP_PUT, .conns = 1, .clients = 1,
    .key_size = 32, .val_size = 256, .key_space = 10000, .prefix = "/bench/",
    .watchers = 100, .watch_streams = 1, .leases = 1000, .ttl = 60,
};

static struct {
    uint64_t issued, ok, errors, found, outstanding;
    uint32_t *lat_us;
    size_t lat_len, lat_cap;
    char first_error[512];
    uint64_t start_ns, last_done_ns;
    uint64_t rng;
    uint8_t *value;
    volatile sig_atomic_t interrupted;
    /* --acked: one byte per key number (1 acknowledged / listed); verify: 2 once seen */
    uint8_t *acked;
    /* verify: where the next page starts, and what was found */
    uint8_t *vkey;
    size_t vkey_len;
    uint8_t *vend; /* end of the current window */
    size_t vend_len;
    uint8_t *pend; /* end of the prefix range */
    size_t pend_len;
    uint64_t vnext; /* key number the current window ends at */
    bool vfinal;    /* the current window ends at pend */
    bool vdone;
    int vfail_streak;    /* failed attempts at the current page */
    uint64_t vretry_ns;  /* not before: the next attempt at a failed page */
    uint64_t vretried, vkeys, vexpected, vmissing, vwrong, vunexpected;
    char vfirst_wrong[320];
} st;

/* watch: state of the run (see the header comment) */
enum { WP_CREATING, WP_HOLD, WP_WRITING, WP_DONE };
#define HIST_SUB 64 /* buckets per power of two */
#define HIST_MAX_US 60000000ull
static struct {
    int phase;
    watcher_t *w;
    uint32_t created, dead;
    uint64_t *sent_ns;   /* send time of Put k, 0 until sent */
    uint64_t rx_ns;      /* time of the read() whose bytes are being parsed */
    uint64_t create_start_ns, created_ns, write_start_ns, last_event_ns;
    uint64_t events, dup_or_reorder, missing, unexpected;
    uint64_t event_msgs; /* WatchResponses carrying events: events / event_msgs shows batching */
    uint64_t hist[HIST_SUB * 24];
    uint64_t nsamples, max_us;
    conn_t *writer;
} wst;

/* keepalive: state of the run (see the header comment) */
enum { KP_GRANT, KP_HOLD, KP_RUN, KP_DONE };
static struct {
    int phase;
    int64_t *ids;          /* the granted leases */
    uint32_t granted;
    uint64_t next;         /* round robin over ids */
    uint64_t grant_start_ns, granted_ns, issue_end_ns;
    uint64_t mismatched, zero_ttl;
    int open_streams;
} kst;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(void) { /* xorshift64* */
    st.rng ^= st.rng >> 12;
    st.rng ^= st.rng << 25;
    st.rng ^= st.rng >> 27;
    return st.rng * 0x2545F4914F6CDD1DULL;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "cairn_bench: out of memory\n");
        exit(3);
    }
    return q;
}

static void record_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void record_error(const char *fmt, ...) {
    st.errors++;
    if (st.first_error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st.first_error, sizeof st.first_error, fmt, ap);
    va_end(ap);
}

/* grpc-message is percent-encoded (gRPC spec); decode in place. */
static void pct_decode(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '%' && r[1] && r[2]) {
            char hex[3] = {r[1], r[2], 0};
            char *end;
            long v = strtol(hex, &end, 16);
            if (*end == 0) {
                *w++ = (char)v;
                r += 2;
                continue;
            }
        }
        *w++ = *r;
    }
    *w = 0;
}

/* ---- request building -------------------------------------------------------------------- */
/* Key i: prefix followed by i in decimal, zero-padded so the key is key_size bytes long
 * (longer if prefix + digits do not fit). key_size 0 gives an empty key (an error path test). */
static size_t make_key(char *buf, size_t cap, uint64_t i) {
    if (opt.key_size == 0) return 0;
    size_t plen = strlen(opt.prefix);
    int width = opt.key_size - (int)plen;
    if (width < 1) width = 1;
    int n = snprintf(buf, cap, "%s%0*" PRIu64, opt.prefix, width, i);
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

/* verify: the current window ends at key number end_no, or at the prefix's end from the
 * last key number on. */
static void verify_window(uint64_t end_no) {
    char key[1024];
    st.vnext = end_no;
    st.vfinal = end_no >= opt.key_space;
    const uint8_t *e = st.pend;
    size_t el = st.pend_len;
    if (!st.vfinal) {
        el = make_key(key, sizeof key, end_no);
        e = (const uint8_t *)key;
    }
    st.vend = xrealloc(st.vend, el);
    memcpy(st.vend, e, el);
    st.vend_len = el;
}

static size_t body_capacity(void) {
    return 5 + 64 + 2 * (strlen(opt.prefix) + (size_t)opt.key_size + 24) + (size_t)opt.val_size;
}

/* --keyed-values: key bytes, ':', then a 64-byte block of letters from an FNV-1a hash of the
 * key, repeated; cut to len. Deterministic: a reader recomputes it from the key alone. */
static void keyed_value(uint8_t *out, size_t len, const uint8_t *key, size_t klen) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < klen; i++) h = (h ^ key[i]) * 0x100000001b3ULL;
    if (!h) h = 1;
    uint8_t block[64];
    for (size_t i = 0; i < sizeof block; i++) { /* xorshift64 */
        h ^= h >> 12;
        h ^= h << 25;
        h ^= h >> 27;
        block[i] = (uint8_t)('a' + (h * 0x2545F4914F6CDD1DULL >> 33) % 26);
    }
    size_t off = 0;
    for (size_t i = 0; i < klen && off < len; i++) out[off++] = key[i];
    if (off < len) out[off++] = ':';
    for (size_t b = 0; off < len; b = (b + 1) % sizeof block) out[off++] = block[b];
}

static void build_request(slot_t *s) {
    char key[1024];
    size_t len;
    if (opt.op == OP_VERIFY) {
        Etcdserverpb__RangeRequest m = ETCDSERVERPB__RANGE_REQUEST__INIT;
        m.key.data = st.vkey;
        m.key.len = st.vkey_len;
        m.range_end.data = st.vend;
        m.range_end.len = st.vend_len;
        m.limit = opt.page;
        m.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
        m.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY;
        len = etcdserverpb__range_request__pack(&m, s->body + 5);
        goto prefix;
    }
    if (opt.op == OP_KEEPALIVE) { /* the setup's grants */
        Etcdserverpb__LeaseGrantRequest m = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
        m.ttl = opt.ttl;
        len = etcdserverpb__lease_grant_request__pack(&m, s->body + 5);
        goto prefix;
    }
    uint64_t i = opt.sequential ? st.issued % opt.key_space : rnd() % opt.key_space;
    s->key_no = i;
    size_t klen = make_key(key, sizeof key, i);
    if (opt.op == OP_PUT || opt.op == OP_WATCH) {
        if (opt.keyed_values) keyed_value(st.value, (size_t)opt.val_size, (const uint8_t *)key, klen);
        Etcdserverpb__PutRequest m = ETCDSERVERPB__PUT_REQUEST__INIT;
        m.key.data = (uint8_t *)key;
        m.key.len = klen;
        m.value.data = st.value;
        m.value.len = (size_t)opt.val_size;
        len = etcdserverpb__put_request__pack(&m, s->body + 5);
    } else {
        Etcdserverpb__RangeRequest m = ETCDSERVERPB__RANGE_REQUEST__INIT;
        m.key.data = (uint8_t *)key;
        m.key.len = klen;
        m.serializable = opt.op == OP_RANGE_SERIALIZABLE;
        len = etcdserverpb__range_request__pack(&m, s->body + 5);
    }
prefix:
    s->body[0] = 0;
    s->body[1] = (uint8_t)(len >> 24);
    s->body[2] = (uint8_t)(len >> 16);
    s->body[3] = (uint8_t)(len >> 8);
    s->body[4] = (uint8_t)len;
    s->body_len = 5 + len;
    s->body_off = 0;
}

static ssize_t body_read_cb(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    slot_t *s = source->ptr;
    size_t n = s->body_len - s->body_off;
    if (n > length) n = length;
    memcpy(buf, s->body + s->body_off, n);
    s->body_off += n;
    if (s->body_off == s->body_len) *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, \
                  NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}

static int submit_one(conn_t *c) {
    slot_t *s = c->free_slots;
    c->free_slots = s->next_free;
    build_request(s);
    s->http_status = 0;
    s->grpc_status = -1;
    s->resp_len = 0;
    free(s->grpc_message);
    s->grpc_message = NULL;

    nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", "/etcdserverpb.KV/Put"),
        NV(":authority", ""),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "cairn_bench"),
    };
    if (opt.op == OP_KEEPALIVE) {
        hdrs[2].value = (uint8_t *)"/etcdserverpb.Lease/LeaseGrant";
        hdrs[2].valuelen = strlen("/etcdserverpb.Lease/LeaseGrant");
    } else if (opt.op != OP_PUT && opt.op != OP_WATCH) {
        hdrs[2].value = (uint8_t *)"/etcdserverpb.KV/Range";
        hdrs[2].valuelen = strlen("/etcdserverpb.KV/Range");
    }
    hdrs[3].value = (uint8_t *)opt.eps[c->ep].authority;
    hdrs[3].valuelen = strlen(opt.eps[c->ep].authority);
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = body_read_cb};
    s->t0_ns = now_ns();
    int32_t id = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], &prd, s);
    if (id < 0) {
        s->next_free = c->free_slots;
        c->free_slots = s;
        record_error("nghttp2_submit_request: %s", nghttp2_strerror(id));
        c->dead = true;
        return -1;
    }
    s->stream_id = id;
    s->busy = true;
    if (opt.op == OP_WATCH) wst.sent_ns[s->key_no] = s->t0_ns;
    c->inflight++;
    st.issued++;
    st.outstanding++;
    return 0;
}

/* ---- watch streams ------------------------------------------------------------------------- */
/* A minimal protobuf wire walker: enough to read a WatchResponse without allocating. */
static bool pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t r = 0;
    for (int sh = 0; sh < 64 && *p < end; sh += 7) {
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << sh;
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* The next field at *p: 1 with its number and either its varint value (*v) or its bytes
 * (*b, *blen, length-delimited); fixed32/64 fields are skipped over (value 0). 0 at the end,
 * -1 when malformed. */
static int pb_field(const uint8_t **p, const uint8_t *end, uint32_t *fno, uint64_t *v,
                    const uint8_t **b, size_t *blen) {
    if (*p >= end) return 0;
    uint64_t tag;
    if (!pb_varint(p, end, &tag)) return -1;
    *fno = (uint32_t)(tag >> 3);
    *v = 0;
    *b = NULL;
    *blen = 0;
    switch (tag & 7) {
    case 0: return pb_varint(p, end, v) ? 1 : -1;
    case 1: if (end - *p < 8) return -1; *p += 8; return 1;
    case 5: if (end - *p < 4) return -1; *p += 4; return 1;
    case 2: {
        uint64_t l;
        if (!pb_varint(p, end, &l) || l > (uint64_t)(end - *p)) return -1;
        *b = *p;
        *blen = (size_t)l;
        *p += l;
        return 1;
    }
    default: return -1;
    }
}

/* Bucket i < 128 holds i us; above, 64 buckets per power of two (a value keeps its top 7
 * bits). Values above HIST_MAX_US land in the top bucket. */
static void hist_add(uint64_t us) {
    if (us > wst.max_us) wst.max_us = us;
    if (us > HIST_MAX_US) us = HIST_MAX_US;
    size_t i = (size_t)us;
    if (us >= HIST_SUB) {
        int shift = 63 - __builtin_clzll(us) - 6; /* us >> shift is in [64, 128) */
        i = HIST_SUB + (size_t)shift * HIST_SUB + (size_t)((us >> shift) - HIST_SUB);
    }
    wst.hist[i]++;
    wst.nsamples++;
}

/* The p-th percentile (nearest rank), as the middle of its bucket, in ms. */
static double hist_pct_ms(double p) {
    if (!wst.nsamples) return 0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)wst.nsamples + 0.999999), seen = 0;
    if (rank < 1) rank = 1;
    for (size_t i = 0; i < sizeof wst.hist / sizeof wst.hist[0]; i++) {
        seen += wst.hist[i];
        if (seen < rank) continue;
        if (i < 2 * HIST_SUB) return (double)i / 1000.0;
        unsigned shift = (unsigned)((i - HIST_SUB) / HIST_SUB);
        uint64_t lo = (uint64_t)(HIST_SUB + (i - HIST_SUB) % HIST_SUB) << shift;
        double mid = (double)lo + (double)((1ull << shift) - 1) / 2.0;
        if (mid > (double)wst.max_us) mid = (double)wst.max_us;
        return mid / 1000.0;
    }
    return (double)wst.max_us / 1000.0;
}

static void watcher_kill(uint32_t wi) {
    if (wst.w[wi].state == W_DEAD) return;
    if (wst.w[wi].state == W_CREATED) wst.created--;
    wst.w[wi].state = W_DEAD;
    wst.dead++;
}

/* The stream is gone (closed, reset, connection lost): its watchers with it. */
static void wstream_fail(wstream_t *ws, const char *why) {
    if (!ws->open) return;
    ws->open = false;
    if (wst.phase != WP_DONE) record_error("watch stream %d on connection %d (%s): %s", ws->stream_id,
                                           ws->conn->idx, opt.eps[ws->conn->ep].authority, why);
    for (uint32_t k = 0; k < ws->n; k++) watcher_kill(ws->first + k);
}

static uint32_t *whash_slot(wstream_t *ws, int64_t id) {
    uint32_t h = (uint32_t)(((uint64_t)id * 0x9E3779B97F4A7C15ULL) >> 32) & (ws->hcap - 1);
    while (ws->hw[h] && ws->hid[h] != id) h = (h + 1) & (ws->hcap - 1);
    return &ws->hw[h];
}

static int64_t whash_lookup(wstream_t *ws, int64_t id) { /* watcher index, or -1 */
    uint32_t *slot = whash_slot(ws, id);
    return *slot ? (int64_t)*slot - 1 : -1;
}

static void whash_put(wstream_t *ws, int64_t id, uint32_t wi) {
    uint32_t *slot = whash_slot(ws, id);
    ws->hid[slot - ws->hw] = id;
    *slot = wi + 1;
}

/* One PUT event for watcher wi (a serialized Event in ev). */
static void watch_event(wstream_t *ws, uint32_t wi, const uint8_t *ev, size_t evlen) {
    const uint8_t *p = ev, *end = ev + evlen, *b, *kv = NULL, *key = NULL;
    size_t bl, kvlen = 0, keylen = 0;
    uint32_t f;
    uint64_t v, type = 0, modrev = 0;
    int r;
    while ((r = pb_field(&p, end, &f, &v, &b, &bl)) > 0) {
        if (f == 1) type = v;
        else if (f == 2 && b) { kv = b; kvlen = bl; }
    }
    if (r == 0 && kv) {
        p = kv;
        end = kv + kvlen;
        while ((r = pb_field(&p, end, &f, &v, &b, &bl)) > 0) {
            if (f == 1 && b) { key = b; keylen = bl; }
            else if (f == 3) modrev = v;
        }
    }
    /* the key number: prefix, then decimal digits, as make_key() writes them */
    size_t plen = strlen(opt.prefix);
    uint64_t no = 0;
    bool ours = r == 0 && type == 0 && key && keylen > plen && memcmp(key, opt.prefix, plen) == 0;
    for (size_t i = plen; ours && i < keylen; i++) { /* no < total <= 2^30: cannot overflow */
        if (key[i] < '0' || key[i] > '9') ours = false;
        else no = no * 10 + (uint64_t)(key[i] - '0');
        if (no >= opt.total) ours = false;
    }
    if (!ours) {
        wst.unexpected++;
        record_error("watcher %u got an unexpected event (type %" PRIu64 ", key \"%.*s\")", wi, type,
                     key ? (int)(keylen < 100 ? keylen : 100) : 0, key ? (const char *)key : "");
        return;
    }
    watcher_t *w = &wst.w[wi];
    if ((int64_t)modrev <= w->last_rev) {
        wst.dup_or_reorder++;
        return;
    }
    w->last_rev = (int64_t)modrev;
    w->events++;
    wst.events++;
    wst.last_event_ns = wst.rx_ns;
    if (wst.sent_ns[no]) hist_add(wst.rx_ns > wst.sent_ns[no] ? (wst.rx_ns - wst.sent_ns[no]) / 1000 : 0);
}

/* One WatchResponse. */
static void watch_response(wstream_t *ws, const uint8_t *msg, size_t len) {
    const uint8_t *p = msg, *end = msg + len, *b, *reason = NULL;
    size_t bl, reason_len = 0;
    uint32_t f;
    uint64_t v, watch_id = 0;
    bool created = false, canceled = false, has_events = false;
    int r;
    while ((r = pb_field(&p, end, &f, &v, &b, &bl)) > 0) {
        switch (f) {
        case 2: watch_id = v; break;
        case 3: created = v != 0; break;
        case 4: canceled = v != 0; break;
        case 6: reason = b; reason_len = bl; break;
        case 11: has_events = true; break;
        }
    }
    if (r < 0) {
        record_error("watch stream %d: a WatchResponse that does not parse (%zu bytes)", ws->stream_id, len);
        return;
    }
    int64_t id = (int64_t)watch_id;
    if (created) {
        if (ws->ncreated == ws->n) {
            record_error("watch stream %d: more created responses than creates", ws->stream_id);
            return;
        }
        uint32_t wi = ws->first + ws->ncreated++;
        if (wst.w[wi].state != W_PENDING) return;
        if (canceled || whash_lookup(ws, id) >= 0) {
            record_error("watch create refused (watch_id %" PRId64 "%s%.*s)", id,
                         reason_len ? ", " : "", (int)(reason_len < 200 ? reason_len : 200),
                         reason ? (const char *)reason : "");
            watcher_kill(wi);
            return;
        }
        whash_put(ws, id, wi);
        wst.w[wi].state = W_CREATED;
        wst.created++;
        if (wst.created + wst.dead == (uint32_t)opt.watchers) wst.created_ns = wst.rx_ns;
        if (!has_events) return;
    }
    int64_t wi = whash_lookup(ws, id);
    if (wi < 0) {
        if (id == -1 && !has_events && !canceled) return; /* a progress notification */
        wst.unexpected++;
        record_error("watch stream %d: a response for unknown watch_id %" PRId64, ws->stream_id, id);
        return;
    }
    if (wst.w[wi].state == W_DEAD) return;
    if (has_events) wst.event_msgs++;
    p = msg;
    while (has_events && pb_field(&p, end, &f, &v, &b, &bl) > 0)
        if (f == 11 && b) watch_event(ws, (uint32_t)wi, b, bl);
    if (canceled) {
        record_error("watcher %" PRId64 " canceled by the server (watch_id %" PRId64 "%s%.*s)", wi, id,
                     reason_len ? ", " : "", (int)(reason_len < 200 ? reason_len : 200),
                     reason ? (const char *)reason : "");
        watcher_kill((uint32_t)wi);
    }
}

/* DATA of a Watch stream: gRPC messages, possibly split across chunks. */
static void watch_data(wstream_t *ws, const uint8_t *data, size_t len) {
    if (ws->rx_len + len > ws->rx_cap) {
        ws->rx_cap = (ws->rx_len + len) * 2;
        ws->rx = xrealloc(ws->rx, ws->rx_cap);
    }
    memcpy(ws->rx + ws->rx_len, data, len);
    ws->rx_len += len;
    size_t off = 0;
    while (ws->rx_len - off >= 5) {
        const uint8_t *m = ws->rx + off;
        uint32_t mlen = (uint32_t)m[1] << 24 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 8 | m[4];
        if (ws->rx_len - off - 5 < mlen) break;
        if (m[0] != 0) record_error("watch stream %d: a compressed message", ws->stream_id);
        else watch_response(ws, m + 5, mlen);
        off += 5 + (size_t)mlen;
    }
    memmove(ws->rx, ws->rx + off, ws->rx_len - off);
    ws->rx_len -= off;
}

/* The creates, then NGHTTP2_ERR_DEFERRED for ever: the request side stays open. */
static ssize_t watch_body_cb(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
                             uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    wstream_t *ws = source->ptr;
    size_t n = ws->body_len - ws->body_off;
    if (n == 0) return NGHTTP2_ERR_DEFERRED;
    if (n > length) n = length;
    memcpy(buf, ws->body + ws->body_off, n);
    ws->body_off += n;
    return (ssize_t)n;
}

/* Opens Watch stream ws with its creates: WatchRequest{create_request{key=prefix,
 * range_end=the prefix's end}} per watcher, each a length-prefixed gRPC message. */
static int watch_submit(conn_t *c, wstream_t *ws, const uint8_t *pend, size_t pend_len) {
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key.data = (uint8_t *)opt.prefix;
    cr.key.len = strlen(opt.prefix);
    cr.range_end.data = (uint8_t *)pend;
    cr.range_end.len = pend_len;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    size_t one = etcdserverpb__watch_request__get_packed_size(&wr);
    ws->body = xrealloc(NULL, (5 + one) * ws->n);
    for (uint32_t k = 0; k < ws->n; k++) {
        uint8_t *m = ws->body + ws->body_len;
        m[0] = 0;
        m[1] = (uint8_t)(one >> 24);
        m[2] = (uint8_t)(one >> 16);
        m[3] = (uint8_t)(one >> 8);
        m[4] = (uint8_t)one;
        etcdserverpb__watch_request__pack(&wr, m + 5);
        ws->body_len += 5 + one;
    }
    ws->hcap = 16;
    while (ws->hcap < 2 * ws->n) ws->hcap *= 2;
    ws->hid = xrealloc(NULL, ws->hcap * sizeof *ws->hid);
    ws->hw = calloc(ws->hcap, sizeof *ws->hw);
    if (!ws->hw) return -1;
    ws->conn = c;
    ws->grpc_status = -1;
    nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", "/etcdserverpb.Watch/Watch"),
        NV(":authority", ""),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "cairn_bench"),
        NV("hasleader", "true"),
    };
    hdrs[3].value = (uint8_t *)opt.eps[c->ep].authority;
    hdrs[3].valuelen = strlen(opt.eps[c->ep].authority);
    nghttp2_data_provider prd = {.source.ptr = ws, .read_callback = watch_body_cb};
    int32_t id = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], &prd, ws);
    if (id < 0) {
        fprintf(stderr, "cairn_bench: nghttp2_submit_request (watch): %s\n", nghttp2_strerror(id));
        return -1;
    }
    ws->stream_id = id;
    ws->open = true;
    return 0;
}

static void watch_header(wstream_t *ws, const uint8_t *name, size_t namelen, const uint8_t *value,
                         size_t valuelen) {
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        ws->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        ws->grpc_status = atoi((const char *)value);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0 && !ws->grpc_message) {
        ws->grpc_message = strndup((const char *)value, valuelen);
    }
}

/* A Watch stream ends only on failure (we never half-close it). */
static void watch_close(wstream_t *ws, uint32_t error_code) {
    char why[400];
    if (error_code != NGHTTP2_NO_ERROR) {
        snprintf(why, sizeof why, "reset: %s (HTTP/2 error %u)", nghttp2_http2_strerror(error_code), error_code);
    } else if (ws->grpc_status >= 0) {
        if (ws->grpc_message) pct_decode(ws->grpc_message);
        snprintf(why, sizeof why, "closed with grpc-status=%d grpc-message=\"%s\"", ws->grpc_status,
                 ws->grpc_message ? ws->grpc_message : "");
    } else {
        snprintf(why, sizeof why, "closed (HTTP status %d, no grpc-status)", ws->http_status);
    }
    wstream_fail(ws, why);
}

/* ---- keepalive streams --------------------------------------------------------------------- */
/* The keepalive stream p points to, if it is one of connection c's (else a grant's slot). */
static kstream_t *ka_of(conn_t *c, void *p) {
    kstream_t *ks = p;
    return c->nks && ks >= c->ks && ks < c->ks + c->nks ? ks : NULL;
}

static bool ka_may_send(uint64_t now) {
    return kst.phase == KP_RUN && !st.interrupted && now < kst.issue_end_ns &&
           (opt.total == 0 || st.issued < opt.total);
}

/* Queues the stream's next keepalive: the next lease, round robin over the granted ones. */
static void ka_next(kstream_t *ks) {
    Etcdserverpb__LeaseKeepAliveRequest m = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    m.id = kst.ids[kst.next++ % kst.granted];
    size_t len = etcdserverpb__lease_keep_alive_request__pack(&m, ks->msg + 5);
    ks->msg[0] = 0;
    ks->msg[1] = (uint8_t)(len >> 24);
    ks->msg[2] = (uint8_t)(len >> 16);
    ks->msg[3] = (uint8_t)(len >> 8);
    ks->msg[4] = (uint8_t)len;
    ks->msg_len = 5 + len;
    ks->msg_off = 0;
    ks->lease = m.id;
    ks->waiting = true;
    st.issued++;
    st.outstanding++;
}

/* The queued keepalive (its send time taken as nghttp2 frames it, just before the write()),
 * then NGHTTP2_ERR_DEFERRED until the response resumes the stream: never END_STREAM. */
static ssize_t ka_body_cb(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
    kstream_t *ks = source->ptr;
    size_t n = ks->msg_len - ks->msg_off;
    if (n == 0) return NGHTTP2_ERR_DEFERRED;
    if (n > length) n = length;
    if (ks->msg_off == 0) ks->t0_ns = now_ns();
    memcpy(buf, ks->msg + ks->msg_off, n);
    ks->msg_off += n;
    if (ks->msg_off == ks->msg_len) ks->msg_off = ks->msg_len = 0;
    return (ssize_t)n;
}

static int ka_submit(conn_t *c, kstream_t *ks) {
    ks->conn = c;
    ks->grpc_status = -1;
    nghttp2_nv hdrs[] = {
        NV(":method", "POST"),
        NV(":scheme", "http"),
        NV(":path", "/etcdserverpb.Lease/LeaseKeepAlive"),
        NV(":authority", ""),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
        NV("user-agent", "cairn_bench"),
        NV("hasleader", "true"),
    };
    hdrs[3].value = (uint8_t *)opt.eps[c->ep].authority;
    hdrs[3].valuelen = strlen(opt.eps[c->ep].authority);
    nghttp2_data_provider prd = {.source.ptr = ks, .read_callback = ka_body_cb};
    int32_t id = nghttp2_submit_request(c->h2, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], &prd, ks);
    if (id < 0) {
        record_error("nghttp2_submit_request (keepalive): %s", nghttp2_strerror(id));
        return -1;
    }
    ks->stream_id = id;
    ks->open = true;
    kst.open_streams++;
    return 0;
}

/* The stream is gone (closed, reset, connection lost): its keepalive in flight with it. */
static void ka_fail(kstream_t *ks, const char *why) {
    if (!ks->open) return;
    ks->open = false;
    kst.open_streams--;
    if (ks->waiting) {
        ks->waiting = false;
        st.outstanding--;
    }
    if (kst.phase != KP_DONE)
        record_error("keepalive stream %d on connection %d (%s): %s", ks->stream_id, ks->conn->idx,
                     opt.eps[ks->conn->ep].authority, why);
}

static void ka_close(kstream_t *ks, uint32_t error_code) {
    char why[400];
    if (error_code != NGHTTP2_NO_ERROR) {
        snprintf(why, sizeof why, "reset: %s (HTTP/2 error %u)", nghttp2_http2_strerror(error_code), error_code);
    } else if (ks->grpc_status >= 0) {
        if (ks->grpc_message) pct_decode(ks->grpc_message);
        snprintf(why, sizeof why, "closed with grpc-status=%d grpc-message=\"%s\"", ks->grpc_status,
                 ks->grpc_message ? ks->grpc_message : "");
    } else {
        snprintf(why, sizeof why, "closed (HTTP status %d, no grpc-status)", ks->http_status);
    }
    ka_fail(ks, why);
}

static void ka_header(kstream_t *ks, const uint8_t *name, size_t namelen, const uint8_t *value,
                      size_t valuelen) {
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        ks->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        ks->grpc_status = atoi((const char *)value);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0 && !ks->grpc_message) {
        ks->grpc_message = strndup((const char *)value, valuelen);
    }
}

/* One LeaseKeepAliveResponse{header=1, ID=2, TTL=3}: check it, time it, send the next. */
static void ka_response(kstream_t *ks, const uint8_t *msg, size_t len) {
    const uint8_t *p = msg, *end = msg + len, *b;
    size_t bl;
    uint32_t f;
    uint64_t v, id = 0, ttl = 0;
    int r;
    while ((r = pb_field(&p, end, &f, &v, &b, &bl)) > 0) {
        if (f == 2) id = v;
        else if (f == 3) ttl = v;
    }
    if (!ks->waiting) {
        record_error("keepalive stream %d: a response with no keepalive in flight", ks->stream_id);
        return;
    }
    ks->waiting = false;
    st.outstanding--;
    st.last_done_ns = wst.rx_ns;
    if (r < 0) {
        record_error("keepalive stream %d: a LeaseKeepAliveResponse that does not parse (%zu bytes)",
                     ks->stream_id, len);
    } else if ((int64_t)id != ks->lease) {
        kst.mismatched++;
        record_error("keepalive for lease %" PRId64 " answered for lease %" PRId64, ks->lease, (int64_t)id);
    } else if ((int64_t)ttl <= 0) {
        kst.zero_ttl++;
        record_error("keepalive for lease %" PRId64 " answered TTL %" PRId64 " (lease unknown or expired)",
                     ks->lease, (int64_t)ttl);
    } else {
        st.ok++;
        hist_add(wst.rx_ns > ks->t0_ns ? (wst.rx_ns - ks->t0_ns) / 1000 : 0);
    }
    if (ka_may_send(wst.rx_ns)) {
        ka_next(ks);
        int rc = nghttp2_session_resume_data(ks->conn->h2, ks->stream_id);
        if (rc != 0) ka_fail(ks, nghttp2_strerror(rc));
    }
}

/* DATA of a keepalive stream: gRPC messages, possibly split across chunks. */
static void ka_data(kstream_t *ks, const uint8_t *data, size_t len) {
    if (ks->rx_len + len > ks->rx_cap) {
        ks->rx_cap = (ks->rx_len + len) * 2;
        ks->rx = xrealloc(ks->rx, ks->rx_cap);
    }
    memcpy(ks->rx + ks->rx_len, data, len);
    ks->rx_len += len;
    size_t off = 0;
    while (ks->open && ks->rx_len - off >= 5) {
        const uint8_t *m = ks->rx + off;
        uint32_t mlen = (uint32_t)m[1] << 24 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 8 | m[4];
        if (ks->rx_len - off - 5 < mlen) break;
        if (m[0] != 0) record_error("keepalive stream %d: a compressed message", ks->stream_id);
        else ka_response(ks, m + 5, mlen);
        off += 5 + (size_t)mlen;
    }
    if (!ks->open) off = ks->rx_len;
    memmove(ks->rx, ks->rx + off, ks->rx_len - off);
    ks->rx_len -= off;
}

/* A setup grant answered with grpc-status 0: keep its ID. */
static void grant_done(slot_t *s) {
    Etcdserverpb__LeaseGrantResponse *r = NULL;
    if (s->resp_len >= 5) {
        uint32_t mlen = (uint32_t)s->resp[1] << 24 | (uint32_t)s->resp[2] << 16 |
                        (uint32_t)s->resp[3] << 8 | s->resp[4];
        if (s->resp[0] == 0 && (size_t)mlen + 5 <= s->resp_len)
            r = etcdserverpb__lease_grant_response__unpack(NULL, mlen, s->resp + 5);
    }
    if (!r) {
        record_error("LeaseGrant: a reply that does not parse (%zu bytes)", s->resp_len);
        return;
    }
    if ((r->error && r->error[0]) || r->id <= 0 || r->ttl <= 0)
        record_error("LeaseGrant: ID %" PRId64 " TTL %" PRId64 " error \"%s\"", r->id, r->ttl,
                     r->error ? r->error : "");
    else if (kst.granted < (uint32_t)opt.leases)
        kst.ids[kst.granted++] = r->id;
    etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
}

/* ---- response handling ------------------------------------------------------------------- */
static int on_header_cb(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user_data) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    kstream_t *ks = ka_of(user_data, nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
    if (ks) {
        ka_header(ks, name, namelen, value, valuelen);
        return 0;
    }
    if (((conn_t *)user_data)->watch) {
        wstream_t *ws = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
        if (ws) watch_header(ws, name, namelen, value, valuelen);
        return 0;
    }
    slot_t *s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!s) return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        s->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        s->grpc_status = atoi((const char *)value);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0 && !st.first_error[0]) {
        free(s->grpc_message);
        s->grpc_message = strndup((const char *)value, valuelen);
    }
    return 0;
}

static int on_data_cb(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
                      size_t len, void *user_data) {
    kstream_t *ks = ka_of(user_data, nghttp2_session_get_stream_user_data(h2, stream_id));
    if (ks) {
        if (ks->open) ka_data(ks, data, len);
        return 0;
    }
    if (((conn_t *)user_data)->watch) {
        wstream_t *ws = nghttp2_session_get_stream_user_data(h2, stream_id);
        if (ws && ws->open) watch_data(ws, data, len);
        return 0;
    }
    /* a PutResponse carries only the header: not inspected */
    if (opt.op == OP_PUT || opt.op == OP_WATCH) return 0;
    slot_t *s = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!s) return 0;
    if (s->resp_len + len > s->resp_cap) {
        s->resp_cap = (s->resp_len + len) * 2;
        s->resp = xrealloc(s->resp, s->resp_cap);
    }
    memcpy(s->resp + s->resp_len, data, len);
    s->resp_len += len;
    return 0;
}

static void range_check(slot_t *s) {
    if (s->resp_len < 5) return;
    uint32_t mlen = (uint32_t)s->resp[1] << 24 | (uint32_t)s->resp[2] << 16 |
                    (uint32_t)s->resp[3] << 8 | s->resp[4];
    if (s->resp[0] != 0 || (size_t)mlen + 5 > s->resp_len) return;
    Etcdserverpb__RangeResponse *r = etcdserverpb__range_response__unpack(NULL, mlen, s->resp + 5);
    if (!r) return;
    if (r->n_kvs > 0) st.found++;
    etcdserverpb__range_response__free_unpacked(r, NULL);
}

/* verify: one page of keys under the prefix, in ascending order. Sets where the next page
 * starts, or vdone when this was the last one. A page that cannot be parsed is an error. */
static void verify_page(slot_t *s) {
    Etcdserverpb__RangeResponse *r = NULL;
    if (s->resp_len >= 5) {
        uint32_t mlen = (uint32_t)s->resp[1] << 24 | (uint32_t)s->resp[2] << 16 |
                        (uint32_t)s->resp[3] << 8 | s->resp[4];
        if (s->resp[0] == 0 && (size_t)mlen + 5 <= s->resp_len)
            r = etcdserverpb__range_response__unpack(NULL, mlen, s->resp + 5);
    }
    if (!r) {
        record_error("verify: a Range reply that does not parse (%zu bytes)", s->resp_len);
        st.vdone = true;
        return;
    }
    size_t plen = strlen(opt.prefix);
    static uint8_t *expect;
    static size_t expect_cap;
    char want[1024];
    for (size_t k = 0; k < r->n_kvs; k++) {
        const Mvccpb__KeyValue *kv = r->kvs[k];
        st.vkeys++;
        bool good = false;
        uint64_t no = 0;
        if (kv->key.len > plen && kv->key.len < sizeof want && memcmp(kv->key.data, opt.prefix, plen) == 0) {
            char num[32];
            size_t nl = kv->key.len - plen;
            if (nl < sizeof num) {
                memcpy(num, kv->key.data + plen, nl);
                num[nl] = 0;
                char *end;
                no = strtoull(num, &end, 10);
                good = *end == 0 && no < opt.key_space &&
                       make_key(want, sizeof want, no) == kv->key.len &&
                       memcmp(want, kv->key.data, kv->key.len) == 0;
            }
        }
        if (good && kv->value.len == (size_t)opt.val_size) {
            if (expect_cap < kv->value.len) {
                expect_cap = kv->value.len;
                expect = xrealloc(expect, expect_cap);
            }
            keyed_value(expect, kv->value.len, kv->key.data, kv->key.len);
            good = kv->value.len == 0 || memcmp(expect, kv->value.data, kv->value.len) == 0;
        } else {
            good = false;
        }
        if (!good) {
            if (!st.vwrong)
                snprintf(st.vfirst_wrong, sizeof st.vfirst_wrong, "%.*s (value %zu bytes)",
                         (int)(kv->key.len < 200 ? kv->key.len : 200), (const char *)kv->key.data,
                         kv->value.len);
            st.vwrong++;
            continue;
        }
        if (st.acked && st.acked[no] == 1) st.acked[no] = 2;
        else if (st.acked && st.acked[no] == 0) st.vunexpected++;
    }
    if (r->n_kvs > 0 && r->more) { /* more in this window: on from the last key */
        const Mvccpb__KeyValue *last = r->kvs[r->n_kvs - 1];
        st.vkey = xrealloc(st.vkey, last->key.len + 1);
        memcpy(st.vkey, last->key.data, last->key.len);
        st.vkey[last->key.len] = 0; /* the smallest key after the last one */
        st.vkey_len = last->key.len + 1;
    } else if (st.vfinal) {
        st.vdone = true;
    } else { /* the next window starts where this one ended */
        st.vkey = xrealloc(st.vkey, st.vend_len);
        memcpy(st.vkey, st.vend, st.vend_len);
        st.vkey_len = st.vend_len;
        verify_window(st.vnext + (uint64_t)opt.page);
    }
    etcdserverpb__range_response__free_unpacked(r, NULL);
}

static int on_stream_close_cb(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                              void *user_data) {
    conn_t *c = user_data;
    kstream_t *ks = ka_of(c, nghttp2_session_get_stream_user_data(h2, stream_id));
    if (ks) {
        ka_close(ks, error_code);
        return 0;
    }
    if (c->watch) {
        wstream_t *ws = nghttp2_session_get_stream_user_data(h2, stream_id);
        if (ws) watch_close(ws, error_code);
        return 0;
    }
    slot_t *s = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!s || !s->busy) return 0;
    s->busy = false;
    uint64_t t1 = now_ns();
    uint64_t errors_before = st.errors;
    if (error_code != NGHTTP2_NO_ERROR) {
        record_error("stream reset: %s (HTTP/2 error %u)", nghttp2_http2_strerror(error_code),
                     error_code);
    } else if (s->grpc_status == 0 && (s->http_status == 200 || s->http_status == 0) &&
               opt.op == OP_KEEPALIVE) {
        grant_done(s);
    } else if (s->grpc_status == 0 && (s->http_status == 200 || s->http_status == 0)) {
        st.ok++;
        if (st.lat_len == st.lat_cap) { /* watch: Put latencies, bounded by --total */
            st.lat_cap = st.lat_cap ? st.lat_cap * 2 : 1 << 16;
            st.lat_us = xrealloc(st.lat_us, st.lat_cap * sizeof *st.lat_us);
        }
        uint64_t us = (t1 - s->t0_ns) / 1000;
        st.lat_us[st.lat_len++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        if (opt.op == OP_VERIFY) verify_page(s);
        else if (opt.op != OP_PUT) range_check(s);
        else if (st.acked) st.acked[s->key_no] = 1;
    } else if (s->grpc_status > 0) {
        if (s->grpc_message) pct_decode(s->grpc_message);
        record_error("grpc-status=%d grpc-message=\"%s\"", s->grpc_status,
                     s->grpc_message ? s->grpc_message : "");
    } else if (s->http_status != 200) {
        record_error("HTTP status %d (no grpc-status)", s->http_status);
    } else {
        record_error("response without grpc-status");
    }
    if (opt.op == OP_VERIFY && st.errors > errors_before) {
        /* a failed page is tried again 200 ms later, up to 3 times; then the check ends */
        if (st.vfail_streak < 3 && !c->dead) {
            st.vfail_streak++;
            st.vretried++;
            st.errors--;
            st.vretry_ns = t1 + 200000000u;
        } else {
            st.vdone = true;
        }
    } else if (opt.op == OP_VERIFY) {
        st.vfail_streak = 0;
    }
    st.last_done_ns = t1;
    st.outstanding--;
    c->inflight--;
    free(s->grpc_message);
    s->grpc_message = NULL;
    s->next_free = c->free_slots;
    c->free_slots = s;
    return 0;
}

/* ---- connections ------------------------------------------------------------------------ */
static int connect_to(const char *host, const char *port, int timeout_ms) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "cairn_bench: %s:%s: %s\n", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) { err = errno; continue; }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        if (errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            if (poll(&p, 1, timeout_ms) == 1) {
                socklen_t sl = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl);
                if (err == 0) break;
            } else {
                err = ETIMEDOUT;
            }
        } else {
            err = errno;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "cairn_bench: connect %s:%s: %s\n", host, port, strerror(err));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void conn_kill(conn_t *c, const char *why) {
    if (c->dead && c->fd < 0) return;
    c->dead = true;
    /* every stream still open on it is a failed request */
    for (int i = 0; i < c->nslots; i++) {
        slot_t *s = &c->slots[i];
        if (s->busy) {
            s->busy = false;
            nghttp2_session_set_stream_user_data(c->h2, s->stream_id, NULL);
            record_error("connection %d (%s) lost: %s", c->idx, opt.eps[c->ep].authority, why);
            st.outstanding--;
            c->inflight--;
        }
    }
    for (int i = 0; i < c->nws; i++) wstream_fail(&c->ws[i], why);
    for (int i = 0; i < c->nks; i++) ka_fail(&c->ks[i], why);
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

/* Write what is buffered, then pull frames from nghttp2 in batches of up to ~256 KiB. */
static void conn_flush(conn_t *c) {
    for (;;) {
        if (c->out_off < c->out_len) {
            ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) return;
                conn_kill(c, strerror(errno));
                return;
            }
            c->out_off += (size_t)n;
            if (c->out_off < c->out_len) return;
        }
        c->out_off = c->out_len = 0;
        while (c->out_len < (256u << 10)) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->h2, &data);
            if (n < 0) {
                conn_kill(c, nghttp2_strerror((int)n));
                return;
            }
            if (n == 0) break;
            if (c->out_len + (size_t)n > c->out_cap) {
                c->out_cap = (c->out_len + (size_t)n) * 2;
                c->out = xrealloc(c->out, c->out_cap);
            }
            memcpy(c->out + c->out_len, data, (size_t)n);
            c->out_len += (size_t)n;
        }
        if (c->out_len == 0) return;
    }
}

static void conn_read(conn_t *c) {
    static uint8_t buf[256 << 10];
    for (int rounds = 0; rounds < 8 && !c->dead; rounds++) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        wst.rx_ns = now_ns(); /* watch: the receive time of every event in these bytes */
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            conn_kill(c, strerror(errno));
            return;
        }
        if (n == 0) {
            conn_kill(c, "closed by server");
            return;
        }
        ssize_t r = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
        if (r < 0) {
            conn_kill(c, nghttp2_strerror((int)r));
            return;
        }
        if ((size_t)n < sizeof buf) return;
    }
}

static int on_frame_recv_cb(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data) {
    conn_t *c = user_data;
    /* the server ended a keepalive stream (trailers) while our side is still open */
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        kstream_t *ks = ka_of(c, nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id));
        if (ks) ka_close(ks, NGHTTP2_NO_ERROR);
    }
    if (frame->hd.type == NGHTTP2_GOAWAY && !st.first_error[0] && frame->goaway.error_code)
        snprintf(st.first_error, sizeof st.first_error, "connection %d (%s): GOAWAY %s", c->idx,
                 opt.eps[c->ep].authority, nghttp2_http2_strerror(frame->goaway.error_code));
    /* watch: streams beyond the server's limit would wait in nghttp2's queue for ever */
    static bool warned;
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
        (c->watch || c->nks) && !warned) {
        uint32_t max = nghttp2_session_get_remote_settings(h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        if (max < (uint32_t)(c->watch ? c->nws : c->nks)) {
            warned = true;
            fprintf(stderr, "cairn_bench: %s allows %u concurrent streams per connection, %s is %d: "
                    "the rest will never open\n", opt.eps[c->ep].authority, max,
                    c->watch ? "--watch-streams" : "--clients / --conns", c->watch ? c->nws : c->nks);
        }
    }
    return 0;
}

static int conn_init(conn_t *c, int idx, int nslots, nghttp2_session_callbacks *cbs) {
    memset(c, 0, sizeof *c);
    c->idx = idx;
    c->ep = idx % opt.neps;
    c->fd = connect_to(opt.eps[c->ep].host, opt.eps[c->ep].port, 5000);
    if (c->fd < 0) return -1;
    if (nghttp2_session_client_new(&c->h2, cbs, c) != 0) return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    c->nslots = nslots;
    c->slots = calloc((size_t)nslots, sizeof *c->slots);
    size_t cap = body_capacity();
    for (int i = 0; i < nslots; i++) {
        slot_t *s = &c->slots[i];
        s->conn = c;
        s->body = xrealloc(NULL, cap);
        s->next_free = c->free_slots;
        c->free_slots = s;
    }
    return 0;
}

/* ---- statistics and report ---------------------------------------------------------------- */
static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(double p) {
    if (st.lat_len == 0) return 0;
    size_t rank = (size_t)(p / 100.0 * (double)st.lat_len + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > st.lat_len) rank = st.lat_len;
    return st.lat_us[rank - 1] / 1000.0;
}

static void report(uint64_t end_ns) {
    if (st.lat_len) qsort(st.lat_us, st.lat_len, sizeof *st.lat_us, cmp_u32);
    double secs = (double)(end_ns - st.start_ns) / 1e9;
    if (secs <= 0) secs = 1e-9;
    printf("op=%s ok=%" PRIu64 " errors=%" PRIu64 " seconds=%.3f ops_per_sec=%.1f p50_ms=%.3f "
           "p90_ms=%.3f p99_ms=%.3f max_ms=%.3f",
           op_names[opt.op], st.ok, st.errors, secs, (double)st.ok / secs, pct_ms(50), pct_ms(90),
           pct_ms(99), st.lat_len ? st.lat_us[st.lat_len - 1] / 1000.0 : 0.0);
    if (opt.op == OP_RANGE || opt.op == OP_RANGE_SERIALIZABLE) printf(" found=%" PRIu64, st.found);
    if (opt.op == OP_PUT && st.acked) {
        uint64_t a = 0;
        for (uint64_t i = 0; i < opt.key_space; i++) a += st.acked[i] != 0;
        printf(" acked=%" PRIu64, a);
    }
    if (opt.op == OP_VERIFY)
        printf(" keys=%" PRIu64 " expected=%" PRIu64 " missing=%" PRIu64 " wrong=%" PRIu64
               " unexpected=%" PRIu64 " retried=%" PRIu64, st.vkeys, st.vexpected, st.vmissing,
               st.vwrong, st.vunexpected, st.vretried);
    printf("\n");
    fflush(stdout);
    if (st.first_error[0]) fprintf(stderr, "cairn_bench: first error: %s\n", st.first_error);
    if (st.vwrong) fprintf(stderr, "cairn_bench: first wrong key: %s\n", st.vfirst_wrong);
}

/* put --acked: the numbers of the acknowledged keys, ascending, one per line. */
static int write_acked(void) {
    FILE *f = fopen(opt.acked_path, "w");
    if (!f) {
        fprintf(stderr, "cairn_bench: %s: %s\n", opt.acked_path, strerror(errno));
        return -1;
    }
    for (uint64_t i = 0; i < opt.key_space; i++)
        if (st.acked[i]) fprintf(f, "%" PRIu64 "\n", i);
    if (fclose(f) != 0) {
        fprintf(stderr, "cairn_bench: %s: %s\n", opt.acked_path, strerror(errno));
        return -1;
    }
    return 0;
}

/* verify --acked: the numbers to expect. A number not below --key-space is a usage error. */
static int read_acked(void) {
    FILE *f = fopen(opt.acked_path, "r");
    if (!f) {
        fprintf(stderr, "cairn_bench: %s: %s\n", opt.acked_path, strerror(errno));
        return -1;
    }
    char line[64];
    while (fgets(line, sizeof line, f)) {
        char *end;
        if (line[0] == '\n') continue;
        uint64_t no = strtoull(line, &end, 10);
        if (end == line || (*end != '\n' && *end != 0) || no >= opt.key_space) {
            fprintf(stderr, "cairn_bench: %s: not a key number below --key-space: %s", opt.acked_path, line);
            fclose(f);
            return -1;
        }
        if (!st.acked[no]) st.vexpected++;
        st.acked[no] = 1;
    }
    fclose(f);
    return 0;
}

/* verify: the first missing number (stderr) and how many are missing. */
static void count_missing(void) {
    if (!st.acked) return;
    for (uint64_t i = 0; i < opt.key_space; i++) {
        if (st.acked[i] != 1) continue;
        if (!st.vmissing) {
            char key[1024];
            size_t kl = make_key(key, sizeof key, i);
            fprintf(stderr, "cairn_bench: first missing key: %.*s\n", (int)kl, key);
        }
        st.vmissing++;
    }
}

/* [prefix, prefix's successor) into st.pend: etcd's prefix range end (drop trailing 0xff
 * bytes, then the last byte + 1; "\0", every key, when nothing is left). */
static void prefix_end(void) {
    size_t plen = strlen(opt.prefix);
    st.pend = xrealloc(NULL, plen + 1);
    memcpy(st.pend, opt.prefix, plen);
    st.pend_len = plen;
    while (st.pend_len > 0 && st.pend[st.pend_len - 1] == 0xff) st.pend_len--;
    if (st.pend_len == 0) {
        st.pend[0] = 0;
        st.pend_len = 1;
    } else {
        st.pend[st.pend_len - 1]++;
    }
}

/* ---- watch: phases and the report ---------------------------------------------------------- */
/* Every watcher answered: write (after the --ready-file handshake), or stop if none lives. */
static void watch_tick(uint64_t now) {
    if (wst.phase == WP_CREATING && wst.created + wst.dead == (uint32_t)opt.watchers) {
        if (wst.created == 0) {
            wst.phase = WP_DONE;
            return;
        }
        if (!wst.created_ns) wst.created_ns = now;
        if (opt.ready_file) {
            int fd = open(opt.ready_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0 || write(fd, "created\n", 8) != 8) {
                record_error("--ready-file %s: %s", opt.ready_file, strerror(errno));
                wst.phase = WP_DONE;
            } else {
                wst.phase = WP_HOLD;
            }
            if (fd >= 0) close(fd);
            return;
        }
        wst.phase = WP_WRITING;
        wst.write_start_ns = now;
    }
    if (wst.phase == WP_HOLD && access(opt.ready_file, F_OK) != 0) {
        wst.phase = WP_WRITING;
        wst.write_start_ns = now;
    }
}

/* When the next Put is due (--rate), or 0 when it may go now (closed loop: when a slot is free). */
static uint64_t watch_next_put_ns(void) {
    if (opt.rate <= 0) return 0;
    return wst.write_start_ns + (uint64_t)((double)st.issued * 1e9 / opt.rate);
}

static bool watch_may_put(uint64_t now) {
    return wst.phase == WP_WRITING && st.issued < opt.total && now >= watch_next_put_ns();
}

/* Done: every watcher dead, the writer's connection lost, or the Puts done and every live
 * watcher holding an event for each acknowledged one. */
static bool watch_finished(void) {
    if (wst.phase == WP_DONE || wst.dead == (uint32_t)opt.watchers) return true;
    if (wst.phase != WP_WRITING) return false;
    if (wst.writer->dead) return true;
    if (st.issued < opt.total || st.outstanding) return false;
    for (int i = 0; i < opt.watchers; i++)
        if (wst.w[i].state == W_CREATED && wst.w[i].events < st.ok) return false;
    wst.phase = WP_DONE;
    return true;
}

static void watch_report(uint64_t end_ns) {
    for (int i = 0; i < opt.watchers; i++)
        if (wst.w[i].events < st.ok) wst.missing += st.ok - wst.w[i].events;
    if (st.lat_len) qsort(st.lat_us, st.lat_len, sizeof *st.lat_us, cmp_u32);
    uint64_t t0 = wst.write_start_ns ? wst.write_start_ns : end_ns;
    uint64_t t1 = wst.last_event_ns > st.last_done_ns ? wst.last_event_ns : st.last_done_ns;
    if (t1 < t0) t1 = end_ns;
    double secs = (double)(t1 - t0) / 1e9;
    if (secs <= 0) secs = 1e-9;
    uint64_t created_end = wst.created_ns ? wst.created_ns : end_ns;
    printf("op=watch watchers=%d events=%" PRIu64 " seconds=%.3f events_per_sec=%.1f p50_ms=%.3f "
           "p90_ms=%.3f p99_ms=%.3f max_ms=%.3f missing=%" PRIu64 " dup_or_reorder=%" PRIu64
           " puts=%" PRIu64 " errors=%" PRIu64 " put_p50_ms=%.3f put_p99_ms=%.3f create_seconds=%.3f"
           " event_msgs=%" PRIu64 "\n",
           opt.watchers, wst.events, secs, (double)wst.events / secs, hist_pct_ms(50), hist_pct_ms(90),
           hist_pct_ms(99), (double)wst.max_us / 1000.0, wst.missing, wst.dup_or_reorder, st.ok,
           st.errors, pct_ms(50), pct_ms(99), (double)(created_end - wst.create_start_ns) / 1e9,
           wst.event_msgs);
    fflush(stdout);
    if (st.first_error[0]) fprintf(stderr, "cairn_bench: first error: %s\n", st.first_error);
}

/* ---- keepalive: phases and the report ------------------------------------------------------ */
/* The clock starts: every connection opens its keepalive streams, each with its first one. */
static void ka_start(uint64_t now, conn_t *conns, int nconns) {
    kst.phase = KP_RUN;
    st.start_ns = st.last_done_ns = now;
    st.issued = 0;
    kst.issue_end_ns = opt.duration > 0 ? now + (uint64_t)(opt.duration * 1e9) : UINT64_MAX;
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        for (int k = 0; k < c->nks && !c->dead; k++) {
            kstream_t *ks = &c->ks[k];
            if (ka_may_send(now)) ka_next(ks);
            if (ka_submit(c, ks) != 0 && ks->waiting) {
                ks->waiting = false;
                st.outstanding--;
            }
        }
    }
}

/* Grants done: hold for --ready-file, then start; stop when a grant failed. */
static void ka_tick(uint64_t now, conn_t *conns, int nconns) {
    if (kst.phase == KP_GRANT && st.outstanding == 0 &&
        (st.issued >= (uint64_t)opt.leases || st.errors || st.interrupted)) {
        kst.granted_ns = now;
        if (st.errors || st.interrupted || kst.granted == 0) {
            kst.phase = KP_DONE;
            return;
        }
        if (opt.ready_file) {
            int fd = open(opt.ready_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (fd < 0 || write(fd, "granted\n", 8) != 8) {
                record_error("--ready-file %s: %s", opt.ready_file, strerror(errno));
                kst.phase = KP_DONE;
            } else {
                kst.phase = KP_HOLD;
            }
            if (fd >= 0) close(fd);
            return;
        }
        ka_start(now, conns, nconns);
        return;
    }
    if (kst.phase == KP_HOLD && st.interrupted) kst.phase = KP_DONE;
    if (kst.phase == KP_HOLD && access(opt.ready_file, F_OK) != 0) ka_start(now, conns, nconns);
}

/* Done: nothing in flight once sending stopped (or every stream gone). */
static bool ka_finished(void) {
    if (kst.phase == KP_DONE) return true;
    if (kst.phase != KP_RUN) return false;
    if (st.outstanding == 0 || kst.open_streams == 0) {
        kst.phase = KP_DONE;
        return true;
    }
    return false;
}

static void ka_report(void) {
    bool ran = kst.issue_end_ns != 0;
    double secs = ran ? (double)(st.last_done_ns - st.start_ns) / 1e9 : 0;
    uint64_t gend = kst.granted_ns ? kst.granted_ns : now_ns();
    double gsecs = (double)(gend - kst.grant_start_ns) / 1e9;
    printf("op=keepalive ok=%" PRIu64 " errors=%" PRIu64 " seconds=%.3f ops_per_sec=%.1f p50_ms=%.3f "
           "p90_ms=%.3f p99_ms=%.3f max_ms=%.3f leases=%d granted=%u grant_seconds=%.3f "
           "grants_per_sec=%.1f streams=%d mismatched=%" PRIu64 " zero_ttl=%" PRIu64 "\n",
           st.ok, st.errors, secs, secs > 0 ? (double)st.ok / secs : 0.0, hist_pct_ms(50),
           hist_pct_ms(90), hist_pct_ms(99), (double)wst.max_us / 1000.0, opt.leases, kst.granted,
           gsecs, gsecs > 0 ? kst.granted / gsecs : 0.0, opt.clients, kst.mismatched, kst.zero_ttl);
    fflush(stdout);
    if (st.first_error[0]) fprintf(stderr, "cairn_bench: first error: %s\n", st.first_error);
}

/* ---- main ---------------------------------------------------------------------------------- */
static void on_signal(int sig) { st.interrupted = 1; }

/* Appends one HOST:PORT (http:// prefix and trailing / accepted) to opt.eps. */
static int parse_endpoint(const char *e) {
    if (opt.neps == MAX_ENDPOINTS) {
        fprintf(stderr, "cairn_bench: at most %d endpoints\n", MAX_ENDPOINTS);
        return -1;
    }
    endpoint_t *ep = &opt.eps[opt.neps];
    if (strncmp(e, "http://", 7) == 0) e += 7;
    const char *colon = strrchr(e, ':');
    size_t hl = colon ? (size_t)(colon - e) : strlen(e);
    if (hl == 0 || hl >= sizeof ep->host) return -1;
    memcpy(ep->host, e, hl);
    ep->host[hl] = 0;
    snprintf(ep->port, sizeof ep->port, "%s", colon ? colon + 1 : "2379");
    size_t pl = strlen(ep->port);
    if (pl && ep->port[pl - 1] == '/') ep->port[pl - 1] = 0;
    if (!ep->port[0]) return -1;
    snprintf(ep->authority, sizeof ep->authority, strchr(ep->host, ':') ? "[%s]:%s" : "%s:%s",
             ep->host, ep->port);
    opt.neps++;
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
        "usage: cairn_bench [options]\n"
        "  --endpoint HOST:PORT   server (default 127.0.0.1:2379; http:// prefix accepted);\n"
        "                         a,b,c: several, connections assigned round-robin\n"
        "  --op OP                put | range | range-serializable | verify | watch | keepalive\n"
        "                         (default put)\n"
        "  --conns C              TCP connections (default 1)\n"
        "  --clients N            concurrent outstanding requests in total (default 1)\n"
        "  --total N              stop after N requests\n"
        "  --duration S           stop issuing after S seconds (default 10 if no --total)\n"
        "  --timeout S            hard timeout (default duration + 30, or 300 with --total;\n"
        "                         keepalive: duration + 300, the grants included)\n"
        "  --key-size B           key length in bytes (default 32; 0 = empty key)\n"
        "  --val-size B           value length for put (default 256)\n"
        "  --key-space K          keys drawn uniformly from K keys (default 10000)\n"
        "  --prefix P             key prefix (default /bench/)\n"
        "  --sequential           keys 0,1,2,... in order instead of random (to populate)\n"
        "  --seed S               random seed (default: time)\n"
        "  --keyed-values         the value of each key is derived from the key (checkable)\n"
        "  --acked FILE           put: write the numbers of the acknowledged keys to FILE;\n"
        "                         verify: every number in FILE must be present\n"
        "  --page N               verify: keys per Range page (default ~4 MiB of values)\n"
        "  --op watch             watch delivery latency: --watchers N watch --prefix over\n"
        "                         --conns C connections x --watch-streams S streams; once all are\n"
        "                         created, one more connection Puts --total keys (default 1000)\n"
        "                         under the prefix; every watcher must see each, in order\n"
        "  --watchers N           watch: watchers in total (default 100)\n"
        "  --watch-streams S      watch: Watch streams per connection (default 1)\n"
        "  --rate R               watch: Puts per second (default 0: closed loop, 1 outstanding)\n"
        "  --ready-file FILE      watch: once all watchers are created, create FILE and wait\n"
        "                         until it is removed before the first Put; keepalive: the\n"
        "                         same once the leases are granted, before the clock starts\n"
        "  --op keepalive         lease keepalive throughput: grant --leases leases (unary\n"
        "                         LeaseGrant, --clients at a time), then --clients LeaseKeepAlive\n"
        "                         streams over --conns connections, each a closed loop of one\n"
        "                         keepalive at a time, leases taken round robin, for --duration\n"
        "                         or --total keepalives; each response must carry the ID sent\n"
        "                         and a TTL > 0\n"
        "  --leases L             keepalive: leases to grant (default 1000)\n"
        "  --ttl T                keepalive: their TTL in seconds (default 60)\n");
}

int main(int argc, char **argv) {
    static const struct option lopts[] = {
        {"endpoint", required_argument, 0, 'e'}, {"op", required_argument, 0, 'o'},
        {"conns", required_argument, 0, 'c'},    {"clients", required_argument, 0, 'n'},
        {"total", required_argument, 0, 't'},    {"duration", required_argument, 0, 'd'},
        {"timeout", required_argument, 0, 'T'},  {"key-size", required_argument, 0, 'k'},
        {"val-size", required_argument, 0, 'v'}, {"key-space", required_argument, 0, 'K'},
        {"prefix", required_argument, 0, 'p'},   {"sequential", no_argument, 0, 'S'},
        {"seed", required_argument, 0, 's'},     {"help", no_argument, 0, 'h'},
        {"keyed-values", no_argument, 0, 'V'},   {"acked", required_argument, 0, 'A'},
        {"page", required_argument, 0, 'P'},
        {"watchers", required_argument, 0, 'W'}, {"watch-streams", required_argument, 0, 'X'},
        {"rate", required_argument, 0, 'R'},     {"ready-file", required_argument, 0, 'F'},
        {"leases", required_argument, 0, 'L'},   {"ttl", required_argument, 0, 'Y'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        switch (ch) {
        case 'e':
            opt.neps = 0;
            for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ",")) {
                if (parse_endpoint(tok) != 0) { usage(stderr); return 3; }
            }
            if (opt.neps == 0) { usage(stderr); return 3; }
            break;
        case 'o':
            if (strcmp(optarg, "put") == 0) opt.op = OP_PUT;
            else if (strcmp(optarg, "range") == 0) opt.op = OP_RANGE;
            else if (strcmp(optarg, "range-serializable") == 0) opt.op = OP_RANGE_SERIALIZABLE;
            else if (strcmp(optarg, "verify") == 0) opt.op = OP_VERIFY;
            else if (strcmp(optarg, "watch") == 0) opt.op = OP_WATCH;
            else if (strcmp(optarg, "keepalive") == 0) opt.op = OP_KEEPALIVE;
            else { fprintf(stderr, "cairn_bench: unknown --op %s\n", optarg); return 3; }
            break;
        case 'c': opt.conns = atoi(optarg); break;
        case 'n': opt.clients = atoi(optarg); break;
        case 't': opt.total = strtoull(optarg, NULL, 10); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'T': opt.timeout = atof(optarg); break;
        case 'k': opt.key_size = atoi(optarg); break;
        case 'v': opt.val_size = atoi(optarg); break;
        case 'K': opt.key_space = strtoull(optarg, NULL, 10); break;
        case 'p': opt.prefix = optarg; break;
        case 'S': opt.sequential = true; break;
        case 's': opt.seed = strtoull(optarg, NULL, 10); break;
        case 'V': opt.keyed_values = true; break;
        case 'A': opt.acked_path = optarg; break;
        case 'P': opt.page = strtoll(optarg, NULL, 10); break;
        case 'W': opt.watchers = atoi(optarg); break;
        case 'X': opt.watch_streams = atoi(optarg); break;
        case 'R': opt.rate = atof(optarg); break;
        case 'F': opt.ready_file = optarg; break;
        case 'L': opt.leases = atoi(optarg); break;
        case 'Y': opt.ttl = strtoll(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 3;
        }
    }
    if (optind < argc || opt.conns < 1 || opt.clients < 1 || opt.key_size < 0 ||
        opt.key_size > 512 || opt.val_size < 0 || opt.key_space < 1 || opt.duration < 0 ||
        strlen(opt.prefix) > 256 || opt.page < 0 ||
        (opt.acked_path && (opt.op == OP_RANGE || opt.op == OP_RANGE_SERIALIZABLE)) ||
        ((opt.acked_path || opt.op == OP_VERIFY) && opt.key_space > (1u << 30)) ||
        (opt.op == OP_VERIFY && (size_t)opt.key_size <= strlen(opt.prefix)) ||
        (opt.op == OP_WATCH && (opt.watchers < 1 || opt.watch_streams < 1 || opt.rate < 0 ||
                                opt.key_size == 0 || opt.acked_path || opt.total > (1u << 30))) ||
        (opt.op == OP_KEEPALIVE && (opt.leases < 1 || opt.ttl < 1 || opt.acked_path))) {
        usage(stderr);
        return 3;
    }
    if (opt.op == OP_WATCH) {
        /* the writer Puts keys 0..total-1 once each; its slots bound the Puts in flight */
        if (opt.total == 0) opt.total = 1000;
        opt.duration = 0;
        opt.sequential = true;
        opt.key_space = opt.total;
        opt.clients = opt.rate > 0 ? 1024 : 1;
        if (opt.conns > opt.watchers) opt.conns = opt.watchers;
        if (opt.conns * opt.watch_streams > opt.watchers) opt.watch_streams = opt.watchers / opt.conns;
        prefix_end();
        wst.w = calloc((size_t)opt.watchers, sizeof *wst.w);
        wst.sent_ns = calloc(opt.total, sizeof *wst.sent_ns);
        if (!wst.w || !wst.sent_ns) {
            fprintf(stderr, "cairn_bench: out of memory\n");
            return 3;
        }
        if (opt.timeout <= 0) opt.timeout = 300;
    }
    if (opt.op == OP_VERIFY) {
        size_t plen = strlen(opt.prefix);
        opt.keyed_values = true;
        opt.clients = opt.conns = 1;
        opt.total = 0;
        opt.duration = 0;
        if (opt.page == 0) {
            opt.page = (4 << 20) / (opt.val_size + opt.key_size + 64);
            if (opt.page < 1) opt.page = 1;
            if (opt.page > 50000) opt.page = 50000;
        }
        st.vkey = xrealloc(NULL, plen + 1);
        memcpy(st.vkey, opt.prefix, plen);
        st.vkey_len = plen;
        prefix_end();
        verify_window((uint64_t)opt.page);
        if (opt.timeout <= 0) opt.timeout = 300;
    } else if (opt.total == 0 && opt.duration == 0) {
        opt.duration = 10;
    }
    if (opt.op == OP_KEEPALIVE) {
        /* the grants come first, so the hard timeout covers them too */
        if (opt.timeout <= 0) opt.timeout = (opt.duration > 0 ? opt.duration : 0) + 300;
        kst.ids = calloc((size_t)opt.leases, sizeof *kst.ids);
        if (!kst.ids) {
            fprintf(stderr, "cairn_bench: out of memory\n");
            return 3;
        }
    }
    if (opt.timeout <= 0) opt.timeout = opt.duration > 0 ? opt.duration + 30 : 300;
    if (opt.acked_path || opt.op == OP_VERIFY) st.acked = calloc(opt.key_space, 1);
    if ((opt.acked_path || opt.op == OP_VERIFY) && !st.acked) {
        fprintf(stderr, "cairn_bench: out of memory\n");
        return 3;
    }
    if (opt.op == OP_VERIFY && opt.acked_path && read_acked() != 0) return 3;
    if (opt.op == OP_VERIFY && !opt.acked_path) { /* nothing expected: values checked only */
        free(st.acked);
        st.acked = NULL;
    }
    if (opt.neps == 0 && parse_endpoint("127.0.0.1:2379") != 0) return 3;
    /* every endpoint gets the same number of connections, clients permitting */
    if (opt.conns % opt.neps) opt.conns += opt.neps - opt.conns % opt.neps;
    if (opt.conns > opt.clients && opt.op != OP_WATCH) opt.conns = opt.clients;

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    st.rng = opt.seed ? opt.seed : (now_ns() ^ (uint64_t)getpid() << 32);
    if (!st.rng) st.rng = 88172645463325252ULL;
    st.value = xrealloc(NULL, (size_t)opt.val_size);
    for (int i = 0; i < opt.val_size; i++) st.value[i] = (uint8_t)('a' + rnd() % 26);

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv_cb);

    /* watch: the C watch connections, then the writer's */
    int nconns = opt.conns + (opt.op == OP_WATCH);
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    struct pollfd *pfds = calloc((size_t)nconns, sizeof *pfds);
    if (opt.op == OP_WATCH) {
        int nstreams = opt.conns * opt.watch_streams, g = 0;
        uint32_t first = 0;
        wst.create_start_ns = now_ns();
        for (int i = 0; i < opt.conns; i++) {
            conn_t *c = &conns[i];
            if (conn_init(c, i, 0, cbs) != 0) return 3;
            c->watch = true;
            c->nws = opt.watch_streams;
            c->ws = calloc((size_t)c->nws, sizeof *c->ws);
            for (int k = 0; k < c->nws; k++, g++) {
                wstream_t *ws = &c->ws[k];
                ws->first = first;
                ws->n = (uint32_t)(opt.watchers / nstreams + (g < opt.watchers % nstreams ? 1 : 0));
                first += ws->n;
                if (watch_submit(c, ws, st.pend, st.pend_len) != 0) return 3;
            }
        }
        if (conn_init(&conns[opt.conns], opt.conns, opt.clients, cbs) != 0) return 3;
        wst.writer = &conns[opt.conns];
    } else {
        for (int i = 0; i < opt.conns; i++) {
            int share = opt.clients / opt.conns + (i < opt.clients % opt.conns ? 1 : 0);
            if (conn_init(&conns[i], i, share, cbs) != 0) return 3;
            if (opt.op == OP_KEEPALIVE) { /* the slots grant; then as many keepalive streams */
                conns[i].nks = share;
                conns[i].ks = calloc((size_t)share, sizeof *conns[i].ks);
                if (!conns[i].ks) return 3;
            }
        }
    }

    st.start_ns = now_ns();
    st.last_done_ns = st.start_ns;
    uint64_t issue_end = opt.duration > 0 ? st.start_ns + (uint64_t)(opt.duration * 1e9) : UINT64_MAX;
    if (opt.op == OP_KEEPALIVE) { /* the clock starts after the grants (ka_start) */
        issue_end = UINT64_MAX;
        kst.grant_start_ns = st.start_ns;
    }
    uint64_t hard_end = st.start_ns + (uint64_t)(opt.timeout * 1e9);
    bool timed_out = false;

    for (;;) {
        uint64_t now = now_ns();
        if (opt.op == OP_WATCH) watch_tick(now);
        if (opt.op == OP_KEEPALIVE) ka_tick(now, conns, nconns);
        bool issuing = !st.interrupted && now < issue_end && (opt.total == 0 || st.issued < opt.total) &&
                       !(opt.op == OP_VERIFY && (st.vdone || now < st.vretry_ns)) &&
                       !(opt.op == OP_WATCH && !watch_may_put(now));
        if (opt.op == OP_KEEPALIVE) /* the slots only grant; keepalives go on their streams */
            issuing = !st.interrupted && kst.phase == KP_GRANT && st.issued < (uint64_t)opt.leases && !st.errors;
        /* verify: a failed page waiting for its next attempt */
        bool waiting = opt.op == OP_VERIFY && !st.interrupted && !st.vdone && now < st.vretry_ns;
        /* top up every live connection, then flush */
        int live = 0;
        for (int i = 0; i < nconns; i++) {
            conn_t *c = &conns[i];
            if (c->dead) continue;
            while (issuing && c->free_slots && !c->dead) {
                if (submit_one(c) != 0) break;
                if (opt.total && st.issued >= opt.total) issuing = false;
                if (opt.op == OP_KEEPALIVE) issuing = st.issued < (uint64_t)opt.leases && !st.errors;
                if (opt.op == OP_VERIFY) issuing = false; /* one page at a time */
                if (opt.op == OP_WATCH) issuing = watch_may_put(now_ns());
            }
            conn_flush(c);
            if (!c->dead) live++;
        }
        if (opt.op == OP_WATCH) {
            if (st.interrupted || watch_finished()) break;
        } else if (opt.op == OP_KEEPALIVE) {
            if (ka_finished()) break;
        } else if (st.outstanding == 0 && ((!issuing && !waiting) || live == 0)) {
            break;
        }
        if (live == 0) break;
        if (now >= hard_end) {
            timed_out = true;
            break;
        }
        int nfds = 0;
        for (int i = 0; i < nconns; i++) {
            conn_t *c = &conns[i];
            if (c->dead) continue;
            pfds[nfds].fd = c->fd;
            pfds[nfds].events = POLLIN | (c->out_off < c->out_len ? POLLOUT : 0);
            pfds[nfds].revents = 0;
            nfds++;
        }
        uint64_t wake = hard_end < issue_end ? hard_end : issue_end;
        if (opt.op == OP_WATCH && wst.phase == WP_WRITING && st.issued < opt.total && watch_next_put_ns() < wake)
            wake = watch_next_put_ns(); /* the next Put at --rate */
        if (opt.op == OP_WATCH && wst.phase == WP_HOLD && now + 10000000u < wake)
            wake = now + 10000000u; /* look for the removed --ready-file every 10 ms */
        if (opt.op == OP_KEEPALIVE && kst.phase == KP_HOLD && now + 10000000u < wake)
            wake = now + 10000000u;
        int tmo = 100;
        if (wake > now && (wake - now) / 1000000 < 100) tmo = (int)((wake - now) / 1000000) + 1;
        int pr = poll(pfds, (nfds_t)nfds, tmo);
        if (pr < 0 && errno != EINTR) {
            perror("poll");
            break;
        }
        if (pr <= 0) continue;
        int j = 0;
        for (int i = 0; i < nconns; i++) {
            conn_t *c = &conns[i];
            if (c->dead) continue;
            short re = pfds[j++].revents;
            if (re & (POLLIN | POLLHUP | POLLERR)) conn_read(c);
        }
    }

    uint64_t end = st.outstanding == 0 ? st.last_done_ns : now_ns();
    if (end < st.start_ns) end = now_ns();
    if (timed_out) {
        fprintf(stderr, "cairn_bench: hard timeout after %.0f s with %" PRIu64
                " requests outstanding (counted as errors)\n", opt.timeout, st.outstanding);
        st.errors += st.outstanding;
        if (opt.op == OP_WATCH)
            fprintf(stderr, "cairn_bench: watch: %u of %d watchers created, %u dead, %s\n", wst.created,
                    opt.watchers, wst.dead, wst.phase == WP_CREATING ? "still creating"
                    : wst.phase == WP_HOLD ? "waiting for --ready-file to go" : "Puts or events outstanding");
    }
    if (opt.op == OP_VERIFY) {
        if (!st.vdone && !st.errors) record_error("verify: stopped before the last page");
        count_missing();
    }
    if (opt.op == OP_WATCH) watch_report(end);
    else if (opt.op == OP_KEEPALIVE) ka_report();
    else report(end);
    int file_rc = 0;
    if (opt.op == OP_PUT && st.acked) file_rc = write_acked();
    wst.phase = WP_DONE; /* streams closed from here on are not errors */
    kst.phase = KP_DONE;
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        if (c->fd >= 0) close(c->fd);
        if (c->h2) nghttp2_session_del(c->h2);
        for (int k = 0; k < c->nws; k++) {
            wstream_t *ws = &c->ws[k];
            free(ws->grpc_message);
            free(ws->hid);
            free(ws->hw);
            free(ws->body);
            free(ws->rx);
        }
        free(c->ws);
        for (int k = 0; k < c->nks; k++) {
            free(c->ks[k].grpc_message);
            free(c->ks[k].rx);
        }
        free(c->ks);
        for (int k = 0; k < c->nslots; k++) {
            free(c->slots[k].body);
            free(c->slots[k].resp);
            free(c->slots[k].grpc_message);
        }
        free(c->slots);
        free(c->out);
    }
    free(conns);
    free(pfds);
    free(st.lat_us);
    free(st.value);
    free(st.acked);
    free(st.vkey);
    free(st.vend);
    free(st.pend);
    free(wst.w);
    free(wst.sent_ns);
    free(kst.ids);
    nghttp2_session_callbacks_del(cbs);
    if (file_rc != 0) return 3;
    if (timed_out) return 2;
    if (st.errors || st.vmissing || st.vwrong || wst.missing || wst.dup_or_reorder) return 1;
    return 0;
}
