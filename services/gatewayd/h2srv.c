/* h2srv.c - gRPC over HTTP/2 (nghttp2), TLS (OpenSSL) and HTTP/1.1 for gatewayd.
 *
 * WIRE FORMAT (this file owns it)
 * ===============================
 * A gRPC call is one HTTP/2 stream.
 *
 * Request: HEADERS with :method POST, :path /<package.Service>/<Method>, content-type
 * "application/grpc" (optionally "+proto" or ";..."), optional grpc-timeout, metadata
 * (etcd: token, hasleader, client-api-version). Then DATA frames carrying zero or more
 * length-prefixed messages, END_STREAM on the last frame. A message:
 *
 *     offset  size  field
 *     0       1     compressed flag: 0 = identity, 1 = compressed with grpc-encoding
 *     1       4     message length N, unsigned big-endian
 *     5       N     the protobuf-encoded message
 *
 * Messages are not aligned with DATA frames: one frame may hold several messages and one
 * message may span many frames; this file reassembles them. Valid request rules:
 *   - flag 0 only (we advertise no grpc-accept-encoding). Flag 1: grpc-status 12
 *     "grpc: Decompressor is not installed for grpc-encoding "<enc>"". Other values: 13.
 *   - N <= max_request_bytes + 512 KiB (grpc-go's max receive size as etcd sets it), else
 *     grpc-status 8 "grpc: received message larger than max (N vs. MAX)" as soon as the
 *     prefix is seen, without buffering the body.
 *   - a unary call carries exactly one message, dispatched at END_STREAM; a partial
 *     message at END_STREAM is grpc-status 13 "grpc: truncated message"; a second message
 *     is 13 "grpc: client streaming protocol violation".
 *   - streaming calls dispatch each complete message as it arrives.
 *   - a content-type that is not application/grpc*: plain HTTP over HTTP/2, served by the
 *     HTTP handlers like HTTP/1.1 (etcd serves /health etc. over TLS h2 too), unless the
 *     path is gRPC-shaped ("/pkg.Service/Method"): then HTTP 415, a broken gRPC client.
 *
 * grpc-timeout: 1-8 ASCII digits and a unit H M S m u n ("4998230u"); we round up to ms.
 *
 * Response: HEADERS (:status 200, content-type application/grpc), DATA with
 * length-prefixed messages (flag 0), then trailing HEADERS with grpc-status (decimal) and,
 * for errors, grpc-message percent-encoded (bytes outside 0x20..0x7E and '%' as %XX),
 * END_STREAM. An error before any message is "Trailers-Only": a single HEADERS frame
 * holding :status, content-type, grpc-status and grpc-message, with END_STREAM. If the
 * client has not finished sending when we finish, we follow with RST_STREAM(NO_ERROR)
 * as grpc-go does, so it stops uploading.
 *
 * CONNECTION SNIFFING
 * ===================
 * Every connection (after the TLS handshake on https listeners) starts by reading bytes:
 * the 24-byte HTTP/2 client preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" makes it HTTP/2;
 * the first byte that differs from it makes it HTTP/1.1 (request line, headers, body by
 * Content-Length; keep-alive unless "Connection: close" or HTTP/1.0). A connection that
 * decides nothing within 10 s is closed. Malformed HTTP/2 closes only that connection
 * (nghttp2 sends GOAWAY first where it can).
 *
 * STREAMED HTTP ANSWERS (etcd's JSON gateway: watch, lease keepalive, election observe)
 * ======================================================================================
 * An HTTP/1.1 request stays the connection's pending one while its answer streams: the status
 * line and headers (Transfer-Encoding: chunked) go out with the first message, each message is
 * one chunk appended to the connection's output as it comes, and the zero chunk ends it; the
 * next pipelined request is read only then. Its on_close is delivered from conn_pump, never
 * from inside the service's own stream_end (the service may be in the middle of its state).
 * A client that half-closes during a stream is gone (Go's server cancels the request on the
 * EOF it reads in the background); one that stops reading fills our output buffer, which the
 * service sees through http1_queued_bytes (and the connection is not read from meanwhile).
 *
 * FLOW CONTROL AND BACKPRESSURE
 * =============================
 * We advertise a 1 MiB stream window and a 4 MiB connection window (nghttp2 sends the
 * WINDOW_UPDATEs as we consume). Output: frames are pulled from nghttp2_session_mem_send
 * only while the connection's socket buffer (ours) holds less than 1 MiB, and a
 * connection whose output is backed up is not read from; server-stream messages wait in
 * per-stream queues whose size the service can query to decide what to do with a slow
 * client. Input: a stream buffers at most one message (<= max recv + 5 bytes), and a
 * connection at most 64 MiB (or 4 messages) of incomplete requests over all its streams.
 */
#include "h2srv.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/resource.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cairn_err.h"
#include "cairn_etcd_err.h"
#include "cairn_zmq.h"
#include "cairn_log.h"
#include "cairn_url.h"
#include "h2srv_http1.h"
#include "h2srv_tls.h"

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24

#define OUT_HIGH (1u << 20)            /* stop pulling frames / reading above this */
#define READ_CHUNK 65536
#define READ_BUDGET (1u << 20)         /* plain TCP bytes per connection per pass (fairness) */
#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW (4 << 20)
#define DEFAULT_MAX_REQUEST (1572864u) /* etcd's default --max-request-bytes (1.5 MiB) */
#define GRPC_OVERHEAD (512u * 1024)    /* etcd: grpc max recv = max-request-bytes + 512 KiB */
#define SNIFF_TIMEOUT_MS 10000         /* default head/preface/handshake deadline (opts.header_timeout_ms) */
#define ACCEPT_PAUSE_MS 100            /* listeners unpolled this long after running out of fds */
#define DROP_LOG_MS 5000               /* one log line per this interval for refused connections */
#define FD_HEADROOM 64                 /* max_conns -1: RLIMIT_NOFILE minus this (IPC, files, TLS) */
#define CLOSING_TIMEOUT_MS 5000
#define LINGER_TIMEOUT_MS 2000
#define MAX_PATH_LEN 4096
#define MAX_META_LEN 8192
#define ACCEPT_BATCH 64
#define PUMP_ROUNDS 4                  /* <= 4 MiB per connection per flush: fairness */
/* nghttp2 1.52 predates its own limits for these two attacks, so we keep our own:
 * - "rapid reset" (CVE-2023-44487): RST_STREAMs from the client, token bucket per
 *   connection (nghttp2 >= 1.57 uses the same numbers);
 * - CONTINUATION/header floods (CVE-2024-27316 family): header bytes per header block. */
#define RST_BURST 1000
#define RST_RATE_PER_S 33
#define MAX_HEADER_BLOCK (256u * 1024)

enum { CS_HANDSHAKE, CS_SNIFF, CS_H2, CS_H1, CS_LINGER };
enum { RESP_NONE, RESP_OPEN, RESP_DONE };

typedef struct chunk {
    struct chunk *next;
    size_t len, off;
    uint8_t data[];
} chunk_t;

typedef struct conn conn_t;

typedef struct h2stream {
    struct h2stream *prev, *next; /* the connection's open streams */
    conn_t *conn;
    int32_t id;
    char *path, *authority, *token, *authz;
    char encoding[32];
    char method[16];
    int64_t timeout_ms;
    unsigned is_post : 1, is_grpc : 1, has_leader : 1, streaming : 1, announced : 1, failed : 1,
        closed : 1, bad_header : 1, deferred : 1, finishing : 1, plain : 1, remote_closed : 1, http_mode : 1;
    int resp; /* RESP_* */
    int status;
    char *message; /* percent-encoded grpc-message for the trailers, or NULL */
    uint8_t *in;   /* request bytes not yet dispatched */
    size_t in_len, in_cap;
    chunk_t *out_head, *out_tail; /* response bytes not yet handed to nghttp2 */
    size_t out_bytes;
} h2stream_t;

typedef struct {
    uint8_t *p;
    size_t off, len, cap; /* live bytes are p[off..len) */
} buf_t;

struct conn {
    cairn_h2srv_t *srv;
    int fd;
    uint32_t serial;
    int state;
    SSL *ssl;
    unsigned dead : 1, closing : 1, in_dirty : 1, hs_want_write : 1, rd_want_write : 1, wr_want_read : 1,
        ssl_fatal : 1, h1_pending : 1, h1_keep : 1, h1_head : 1, h1_continue_sent : 1, h1_v10 : 1,
        peer_eof : 1, /* HTTP/1.1 client half-closed: answer what it sent, then close */
        h1_is_stream : 1, /* the pending request is answered as a stream (http1_stream_begin) */
        h1_streaming : 1, /* ... whose status line and headers went out (chunks follow) */
        h1_ended : 1,     /* ... which the service ended: on_close comes from the next pump */
        h1_body_chunked : 1, /* the pending request's chunked body is still coming (on_http1_body) */
        metrics_only : 1; /* accepted on a --listen-metrics-urls listener: plain HTTP only */
    int64_t created_ms, closing_ms;
    int64_t h1_head_ms; /* HTTP/1.1: when the request head now partly received began; 0 none */
    int64_t last_rx_ms, ping_sent_ms; /* keepalive: last bytes from the client; our PING in flight */
    size_t idx; /* position in srv->conns */
    conn_t *dirty_next;
    buf_t in;  /* sniffing and HTTP/1.1 input */
    buf_t out; /* bytes for the socket (plaintext; SSL_write encrypts) */
    nghttp2_session *h2;
    h2stream_t *streams;
    size_t req_buffered;
    size_t hdr_bytes;   /* header bytes of the header block being received */
    int64_t rst_tokens; /* RST_STREAM budget, in thousandths */
    int64_t rst_ms;
    uint32_t h1_seq;
    cairn_call_id_t h1_pending_id;
    char cn[128];
};

typedef struct {
    int fd;
    int tls;
    int port;
    int metrics_only; /* --listen-metrics-urls: every request is plain HTTP (no gRPC) */
    /* unix:// and unixs://: the socket file (etcd's: the URL's host:port, relative to the
     * working directory) and the flock'ed "<path>.lock" that says which gateway of the node
     * listens on it; the others have fd -1 and try to take it over once a second. */
    char *upath;
    int lock_fd;
    int backlog;
} listener_t;

struct cairn_h2srv_t {
    cairn_h2srv_handlers_t h;
    size_t max_recv;      /* max gRPC message we accept */
    size_t max_http1_body;
    size_t conn_req_cap;  /* incomplete request bytes per connection */
    uint32_t max_streams;
    int64_t ka_interval_ms, ka_timeout_ms; /* keepalive(): 0 = off */
    SSL_CTX *ssl_ctx;
    listener_t *ls;
    size_t n_ls;
    conn_t **conns; /* live + dead-but-not-reaped */
    size_t n_conns, cap_conns, n_dead;
    conn_t **ht; /* serial -> conn, open addressing, linear probing */
    size_t ht_cap, ht_n;
    uint32_t next_serial;
    uint64_t *pollmap; /* per item of the last poll_fill: LISTENER_BIT|idx or a serial */
    size_t pollmap_n, pollmap_cap;
    conn_t *dirty;
    int in_cb;
    int draining, destroying;
    int64_t last_sweep_ms;
    int reserve_fd;         /* /dev/null, closed to accept-and-drop when out of descriptors */
    int64_t hdr_timeout_ms; /* head / preface / handshake deadline; 0 = none */
    size_t max_conns;       /* 0 = unlimited */
    int64_t accept_paused_until;
    /* connections refused since the last log line: out of fds, over max_conns; other errors */
    uint64_t drop_nofd, drop_limit, drop_err;
    int drop_errno;
    int64_t drop_log_ms;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *h2opt;
    uint8_t rbuf[READ_CHUNK];
};

#define LISTENER_BIT (1ull << 63)


/* ---- gRPC helpers -------------------------------------------------------------------- */

int64_t cairn_grpc_timeout_parse(const char *v)
{
    if (!v)
        return -1;
    size_t n = strlen(v);
    if (n < 2 || n > 9)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    switch (v[n - 1]) {
    case 'H': return x * 3600000;
    case 'M': return x * 60000;
    case 'S': return x * 1000;
    case 'm': return x;
    case 'u': return (x + 999) / 1000;
    case 'n': return (x + 999999) / 1000000;
    default: return -1;
    }
}

size_t cairn_grpc_percent_encode(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (!cap)
        return 0;
    for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            if (o + 1 >= cap)
                break;
            out[o++] = (char)*p;
        } else {
            if (o + 3 >= cap)
                break;
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = 0;
    return o;
}

/* ---- byte buffers -------------------------------------------------------------------- */

static size_t buf_pending(const buf_t *b) { return b->len - b->off; }

static int buf_append(buf_t *b, const void *data, size_t n)
{
    if (!n)
        return 0;
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n > b->cap && b->off) { /* compact before growing */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n)
            nc *= 2;
        uint8_t *np = realloc(b->p, nc);
        if (!np)
            return CAIRN_ENOMEM;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static void buf_consume(buf_t *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) {
        b->off = b->len = 0;
        /* Give back big buffers (a large HTTP/1 response) once drained. */
        if (b->cap > (4u << 20)) {
            free(b->p);
            b->p = NULL;
            b->cap = 0;
        }
    }
}

static void buf_free(buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- serial -> connection hash ------------------------------------------------------- */

static size_t ht_slot(uint32_t serial, size_t cap) { return (size_t)(serial * 2654435761u) & (cap - 1); }

static int ht_grow(cairn_h2srv_t *s)
{
    size_t nc = s->ht_cap ? s->ht_cap * 2 : 256;
    conn_t **nt = calloc(nc, sizeof *nt);
    if (!nt)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < s->ht_cap; i++) {
        conn_t *c = s->ht[i];
        if (!c)
            continue;
        size_t j = ht_slot(c->serial, nc);
        while (nt[j])
            j = (j + 1) & (nc - 1);
        nt[j] = c;
    }
    free(s->ht);
    s->ht = nt;
    s->ht_cap = nc;
    return 0;
}

static conn_t *ht_get(const cairn_h2srv_t *s, uint32_t serial)
{
    if (!s->ht_cap || !serial)
        return NULL;
    for (size_t j = ht_slot(serial, s->ht_cap);; j = (j + 1) & (s->ht_cap - 1)) {
        conn_t *c = s->ht[j];
        if (!c)
            return NULL;
        if (c->serial == serial)
            return c;
    }
}

static int ht_put(cairn_h2srv_t *s, conn_t *c)
{
    if ((s->ht_n + 1) * 2 > s->ht_cap && ht_grow(s) != 0)
        return CAIRN_ENOMEM;
    size_t j = ht_slot(c->serial, s->ht_cap);
    while (s->ht[j])
        j = (j + 1) & (s->ht_cap - 1);
    s->ht[j] = c;
    s->ht_n++;
    return 0;
}

/* Linear-probing delete by backward shift: no tombstones to accumulate. */
static void ht_del(cairn_h2srv_t *s, uint32_t serial)
{
    if (!s->ht_cap)
        return;
    size_t mask = s->ht_cap - 1, j = ht_slot(serial, s->ht_cap);
    while (s->ht[j] && s->ht[j]->serial != serial)
        j = (j + 1) & mask;
    if (!s->ht[j])
        return;
    s->ht[j] = NULL;
    s->ht_n--;
    for (size_t k = (j + 1) & mask; s->ht[k]; k = (k + 1) & mask) {
        size_t home = ht_slot(s->ht[k]->serial, s->ht_cap);
        /* move k to j if home is not cyclically in (j, k] */
        if ((j < k) ? (home <= j || home > k) : (home <= j && home > k)) {
            s->ht[j] = s->ht[k];
            s->ht[k] = NULL;
            j = k;
        }
    }
}

/* ---- connection lifecycle ------------------------------------------------------------ */

static void mark_dirty(conn_t *c)
{
    if (c->in_dirty || c->dead)
        return;
    c->in_dirty = 1;
    c->dirty_next = c->srv->dirty;
    c->srv->dirty = c;
}

static cairn_call_id_t call_id(const conn_t *c, uint32_t low) { return ((uint64_t)c->serial << 32) | low; }

static void stream_free(conn_t *c, h2stream_t *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else if (c->streams == st)
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    c->req_buffered -= st->in_len;
    for (chunk_t *ch = st->out_head, *nx; ch; ch = nx) {
        nx = ch->next;
        free(ch);
    }
    free(st->path);
    free(st->authority);
    free(st->token);
    free(st->authz);
    free(st->message);
    free(st->in);
    free(st);
}

static void notify_close(cairn_h2srv_t *s, cairn_call_id_t id)
{
    if (s->destroying || !s->h.on_close)
        return;
    s->in_cb++;
    s->h.on_close(s->h.ud, id);
    s->in_cb--;
}

/* Drops all protocol state: streams (on_close for the known ones), the HTTP/2 session,
 * the SSL object. The fd stays; the caller closes it or lingers. */
static void conn_release(conn_t *c)
{
    cairn_h2srv_t *s = c->srv;
    if (c->h2) {
        /* nghttp2_session_del does not call on_stream_close: do its work here. */
        while (c->streams) {
            h2stream_t *st = c->streams;
            int known = st->announced && !st->closed;
            st->closed = 1;
            cairn_call_id_t id = call_id(c, (uint32_t)st->id);
            stream_free(c, st);
            if (known)
                notify_close(s, id);
        }
        nghttp2_session_del(c->h2);
        c->h2 = NULL;
    }
    if (c->h1_pending) {
        c->h1_pending = 0;
        notify_close(s, c->h1_pending_id);
    }
    if (c->ssl) {
        if (!c->ssl_fatal && c->state != CS_HANDSHAKE) {
            ERR_clear_error();
            SSL_shutdown(c->ssl); /* best effort close_notify; non-blocking */
        }
        ERR_clear_error();
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    buf_free(&c->in);
}

/* Hard close: the socket is broken, or the peer is gone. */
static void conn_kill(conn_t *c)
{
    if (c->dead)
        return;
    conn_release(c);
    buf_free(&c->out);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->dead = 1;
    c->srv->n_dead++;
    ht_del(c->srv, c->serial);
}

/* Graceful close once our output is written: half-close and read until the peer closes
 * (or LINGER_TIMEOUT_MS), so unread input does not make the kernel reset the connection
 * and destroy the response we just sent. */
static void conn_finish(conn_t *c)
{
    if (c->dead || c->state == CS_LINGER)
        return;
    conn_release(c);
    buf_free(&c->out);
    if (shutdown(c->fd, SHUT_WR) != 0) {
        conn_kill(c);
        return;
    }
    c->state = CS_LINGER;
    c->closing_ms = cairn_now_ms();
}

static conn_t *conn_new(cairn_h2srv_t *s, int fd, int tls)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = s;
    c->fd = fd;
    c->created_ms = c->last_rx_ms = cairn_now_ms();
    do {
        c->serial = s->next_serial++;
    } while (c->serial == 0 || ht_get(s, c->serial));
    if (tls) {
        c->ssl = SSL_new(s->ssl_ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
            ERR_clear_error();
            SSL_free(c->ssl);
            free(c);
            return NULL;
        }
        SSL_set_accept_state(c->ssl);
        c->state = CS_HANDSHAKE;
    } else {
        c->state = CS_SNIFF;
    }
    if (s->n_conns == s->cap_conns) {
        size_t nc = s->cap_conns ? s->cap_conns * 2 : 64;
        conn_t **na = realloc(s->conns, nc * sizeof *na);
        if (!na)
            goto fail;
        s->conns = na;
        s->cap_conns = nc;
    }
    if (ht_put(s, c) != 0)
        goto fail;
    c->idx = s->n_conns;
    s->conns[s->n_conns++] = c;
    return c;
fail:
    SSL_free(c->ssl);
    free(c);
    return NULL;
}

/* Frees dead connections; only called when the dirty list is empty. */
static void reap(cairn_h2srv_t *s)
{
    if (!s->n_dead)
        return;
    for (size_t i = 0; i < s->n_conns;) {
        conn_t *c = s->conns[i];
        if (!c->dead || c->in_dirty) {
            i++;
            continue;
        }
        s->conns[i] = s->conns[--s->n_conns];
        s->conns[i]->idx = i;
        s->n_dead--;
        free(c);
    }
}

/* ---- socket I/O ---------------------------------------------------------------------- */

static int read_paused(const conn_t *c)
{
    if (c->closing || c->peer_eof || c->state == CS_LINGER)
        return c->state != CS_LINGER;
    if (buf_pending(&c->out) >= OUT_HIGH)
        return 1;
    if (c->state == CS_H1 && buf_pending(&c->in) > c->srv->max_http1_body + CAIRN_H1_MAX_HEADER)
        return 1;
    return 0;
}

static void conn_feed(conn_t *c, const uint8_t *data, size_t n);

/* Writes c->out to the socket until it would block. */
static void conn_write(conn_t *c)
{
    while (!c->dead && buf_pending(&c->out)) {
        size_t n = buf_pending(&c->out);
        const uint8_t *p = c->out.p + c->out.off;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
            if (r > 0) {
                c->wr_want_read = 0;
                buf_consume(&c->out, (size_t)r);
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE)
                return;
            if (e == SSL_ERROR_WANT_READ) {
                c->wr_want_read = 1;
                return;
            }
            c->ssl_fatal = 1;
            conn_kill(c);
            return;
        }
        ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
        if (r > 0) {
            buf_consume(&c->out, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_kill(c);
        return;
    }
}

/* The peer sent FIN / close_notify. gRPC clients never half-close, so HTTP/2 (and a
 * connection that sent nothing) just closes; an HTTP/1.1 client may (printf | nc) and
 * still expects the answers to what it sent. */
static void conn_eof(conn_t *c)
{
    /* (a streamed answer whose client half-closes ends then, as Go's server cancels the request
     * of a client that sent EOF: conn_pump) */
    if (c->state == CS_H1 && (c->h1_pending || buf_pending(&c->out) || buf_pending(&c->in))) {
        c->peer_eof = 1;
        mark_dirty(c);
        return;
    }
    conn_kill(c);
}

/* Reads what the socket has (TLS: until WANT_READ, so nothing stays buffered inside SSL
 * while we sleep in poll) and feeds it to the protocol. */
static void conn_read(conn_t *c)
{
    cairn_h2srv_t *s = c->srv;
    size_t budget = READ_BUDGET;
    if (c->state == CS_LINGER) {
        for (int k = 0; k < 16; k++) {
            ssize_t r = recv(c->fd, s->rbuf, sizeof s->rbuf, 0);
            if (r > 0)
                continue;
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return;
            conn_kill(c);
            return;
        }
        return;
    }
    while (!c->dead && c->state != CS_LINGER && !read_paused(c)) {
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, s->rbuf, sizeof s->rbuf);
            if (r > 0) {
                c->rd_want_write = 0;
                conn_feed(c, s->rbuf, (size_t)r);
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                c->rd_want_write = 0;
                return;
            }
            if (e == SSL_ERROR_WANT_WRITE) {
                c->rd_want_write = 1;
                return;
            }
            if (e == SSL_ERROR_ZERO_RETURN) {
                conn_eof(c);
                return;
            }
            c->ssl_fatal = 1;
            conn_kill(c);
            return;
        }
        ssize_t r = recv(c->fd, s->rbuf, sizeof s->rbuf, 0);
        if (r > 0) {
            conn_feed(c, s->rbuf, (size_t)r);
            if ((size_t)r >= budget)
                return; /* poll is level-triggered: the rest comes next pass */
            budget -= (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r == 0)
            conn_eof(c);
        else
            conn_kill(c);
        return;
    }
}

static void conn_handshake(conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->hs_want_write = 0;
        c->state = CS_SNIFF;
        cairn_tls_peer_cn(c->ssl, c->cn, sizeof c->cn);
        if (cairn_log_enabled(CAIRN_LOG_DEBUG)) {
            const unsigned char *alpn = NULL;
            unsigned alen = 0;
            SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
            cairn_debug("tls handshake done", "conn=%u version=%s alpn=%.*s", c->serial, SSL_get_version(c->ssl),
                        (int)alen, alpn ? (const char *)alpn : "");
        }
        conn_read(c); /* application data may already sit in SSL's buffer */
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        c->hs_want_write = 0;
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->hs_want_write = 1;
        return;
    }
    if (cairn_log_enabled(CAIRN_LOG_DEBUG)) {
        char es[200] = "";
        ERR_error_string_n(ERR_peek_last_error(), es, sizeof es);
        cairn_debug("tls handshake failed", "conn=%u err=\"%s\"", c->serial, es);
    }
    ERR_clear_error();
    c->ssl_fatal = 1;
    conn_kill(c);
}

/* ---- HTTP/2 streams: responses --------------------------------------------------------- */

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    (void)user_data;
    h2stream_t *st = source->ptr;
    size_t n = 0;
    while (n < length && st->out_head) {
        chunk_t *ch = st->out_head;
        size_t take = ch->len - ch->off;
        if (take > length - n)
            take = length - n;
        memcpy(buf + n, ch->data + ch->off, take);
        ch->off += take;
        n += take;
        st->out_bytes -= take;
        if (ch->off == ch->len) {
            st->out_head = ch->next;
            if (!st->out_head)
                st->out_tail = NULL;
            free(ch);
        }
    }
    if (st->out_head)
        return (ssize_t)n;
    if (st->finishing) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        st->resp = RESP_DONE;
        if (!st->plain) {
            /* gRPC status goes in trailers, submitted from inside this callback as nghttp2
             * requires; END_STREAM then rides on the trailers HEADERS frame. */
            char sbuf[16];
            snprintf(sbuf, sizeof sbuf, "%d", st->status);
            nghttp2_nv tr[2] = {NV("grpc-status", sbuf), NV("grpc-message", st->message ? st->message : "")};
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(session, stream_id, tr, st->message && st->message[0] ? 2 : 1) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        return (ssize_t)n;
    }
    if (n == 0) {
        st->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int st_queue(h2stream_t *st, const uint8_t *prefix, size_t plen, const uint8_t *msg, size_t len)
{
    if (len > SIZE_MAX - sizeof(chunk_t) - plen)
        return CAIRN_EINVAL;
    chunk_t *ch = malloc(sizeof *ch + plen + len);
    if (!ch)
        return CAIRN_ENOMEM;
    ch->next = NULL;
    ch->off = 0;
    ch->len = plen + len;
    if (plen)
        memcpy(ch->data, prefix, plen);
    if (len)
        memcpy(ch->data + plen, msg, len);
    if (st->out_tail)
        st->out_tail->next = ch;
    else
        st->out_head = ch;
    st->out_tail = ch;
    st->out_bytes += ch->len;
    return 0;
}

/* Submits the response HEADERS with a data provider (response body follows). */
static int st_open(conn_t *c, h2stream_t *st, const char *status, const char *ctype)
{
    nghttp2_nv hdrs[2] = {NV(":status", status), NV("content-type", ctype)};
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = data_read_cb};
    if (nghttp2_submit_response(c->h2, st->id, hdrs, 2, &dp) != 0)
        return CAIRN_ENOMEM;
    st->resp = RESP_OPEN;
    return 0;
}

static void st_resume(conn_t *c, h2stream_t *st)
{
    if (st->deferred) {
        st->deferred = 0;
        nghttp2_session_resume_data(c->h2, st->id);
    }
    mark_dirty(c);
}

static int st_send(conn_t *c, h2stream_t *st, const uint8_t *msg, size_t len)
{
    if (st->resp == RESP_DONE || st->finishing)
        return CAIRN_ESTATE;
    if (len > UINT32_MAX)
        return CAIRN_EINVAL;
    uint8_t pfx[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len};
    int rc = st_queue(st, pfx, 5, msg, len);
    if (rc)
        return rc;
    if (st->resp == RESP_NONE) {
        rc = st_open(c, st, "200", "application/grpc");
        if (rc)
            return rc;
    }
    st_resume(c, st);
    return 0;
}

static int st_finish(conn_t *c, h2stream_t *st, int status, const char *message)
{
    if (st->resp == RESP_DONE || st->finishing)
        return CAIRN_ESTATE;
    if (c->srv->h.on_status) /* the call's outcome, once: grpc_server_handled_total */
        c->srv->h.on_status(c->srv->h.ud, call_id(c, st->id), status);
    char enc[1024] = "";
    if (message)
        cairn_grpc_percent_encode(message, enc, sizeof enc);
    if (st->resp == RESP_NONE) {
        /* Trailers-Only */
        char sbuf[16];
        snprintf(sbuf, sizeof sbuf, "%d", status);
        nghttp2_nv hdrs[4] = {NV(":status", "200"), NV("content-type", "application/grpc"), NV("grpc-status", sbuf),
                              NV("grpc-message", enc)};
        if (nghttp2_submit_response(c->h2, st->id, hdrs, enc[0] ? 4 : 3, NULL) != 0)
            return CAIRN_ENOMEM;
        st->resp = RESP_DONE;
        mark_dirty(c);
        return 0;
    }
    if (enc[0] && !(st->message = strdup(enc)))
        return CAIRN_ENOMEM;
    st->status = status;
    st->finishing = 1;
    st_resume(c, st);
    return 0;
}

/* A non-gRPC HTTP answer on an HTTP/2 stream (415 and friends). */
static void st_http_error(conn_t *c, h2stream_t *st, int code, const char *body)
{
    char sbuf[8];
    snprintf(sbuf, sizeof sbuf, "%d", code);
    st->failed = 1;
    st->announced = 0;
    c->req_buffered -= st->in_len;
    free(st->in);
    st->in = NULL;
    st->in_len = st->in_cap = 0;
    if (st->resp != RESP_NONE || st->finishing) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
        mark_dirty(c);
        return;
    }
    st->plain = 1;
    st->finishing = 1;
    if (st_queue(st, NULL, 0, (const uint8_t *)body, strlen(body)) != 0 ||
        st_open(c, st, sbuf, "text/plain; charset=utf-8") != 0)
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    mark_dirty(c);
}

/* Request-side failure found by the transport: answer with a gRPC status, drop input. */
static void st_fail(conn_t *c, h2stream_t *st, int status, const char *message)
{
    st->failed = 1;
    c->req_buffered -= st->in_len;
    free(st->in);
    st->in = NULL;
    st->in_len = st->in_cap = 0;
    if (st_finish(c, st, status, message) != 0 && st->resp != RESP_DONE && !st->finishing)
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
    mark_dirty(c);
}

/* ---- HTTP/2 streams: requests ---------------------------------------------------------- */

/* Once a call failed, closed or was finished by the service, further request bytes are
 * meaningless: drop them (nghttp2 still credits the flow-control windows). */
static int input_done(const h2stream_t *st)
{
    return st->failed || st->closed || st->finishing || st->resp == RESP_DONE;
}

static void st_http_dispatch(conn_t *c, h2stream_t *st);

static void st_dispatch(conn_t *c, h2stream_t *st, const uint8_t *msg, size_t len)
{
    cairn_h2srv_t *s = c->srv;
    st->announced = 1;
    if (!s->h.on_message)
        return;
    cairn_h2_meta_t meta = {
        .authority = st->authority ? st->authority : "",
        .token = st->token ? st->token : st->authz,
        .has_leader_md = st->has_leader,
        .timeout_ms = st->timeout_ms,
        .client_cn = c->cn[0] ? c->cn : NULL,
        .tls = c->ssl != NULL, .metrics_only = c->metrics_only,
    };
    s->in_cb++;
    s->h.on_message(s->h.ud, call_id(c, (uint32_t)st->id), st->path, msg, len, &meta);
    s->in_cb--;
}

/* Checks the prefix at in[off]; returns the message length, or -1 after failing the call. */
static int64_t check_prefix(conn_t *c, h2stream_t *st, size_t off)
{
    uint8_t flag = st->in[off];
    uint32_t mlen = ((uint32_t)st->in[off + 1] << 24) | ((uint32_t)st->in[off + 2] << 16) |
                    ((uint32_t)st->in[off + 3] << 8) | st->in[off + 4];
    char m[160];
    if (flag == 1) {
        snprintf(m, sizeof m, "grpc: Decompressor is not installed for grpc-encoding \"%s\"", st->encoding);
        st_fail(c, st, CAIRN_GRPC_UNIMPLEMENTED, m);
        return -1;
    }
    if (flag != 0) {
        snprintf(m, sizeof m, "grpc: received unexpected payload format %d", flag);
        st_fail(c, st, CAIRN_GRPC_INTERNAL, m);
        return -1;
    }
    if (mlen > c->srv->max_recv) {
        snprintf(m, sizeof m, "grpc: received message larger than max (%" PRIu32 " vs. %zu)", mlen, c->srv->max_recv);
        st_fail(c, st, CAIRN_GRPC_RESOURCE_EXHAUSTED, m);
        return -1;
    }
    return mlen;
}

/* Walks the complete messages in st->in: streaming calls get each one now; a unary call
 * only gets checked (dispatch happens at END_STREAM). */
static void st_parse(conn_t *c, h2stream_t *st)
{
    size_t off = 0;
    while (!input_done(st) && st->in_len - off >= 5) {
        int64_t mlen = check_prefix(c, st, off);
        if (mlen < 0)
            return;
        if (!st->streaming) {
            if (st->in_len > 5 + (size_t)mlen)
                st_fail(c, st, CAIRN_GRPC_INTERNAL, "grpc: client streaming protocol violation");
            return;
        }
        if (st->in_len - off - 5 < (size_t)mlen)
            break;
        st_dispatch(c, st, st->in + off + 5, (size_t)mlen);
        off += 5 + (size_t)mlen;
    }
    if (input_done(st) && st->in) {
        c->req_buffered -= st->in_len;
        free(st->in);
        st->in = NULL;
        st->in_len = st->in_cap = 0;
    } else if (off && st->in) {
        memmove(st->in, st->in + off, st->in_len - off);
        st->in_len -= off;
        c->req_buffered -= off;
    }
}

static void st_request_end(conn_t *c, h2stream_t *st)
{
    cairn_h2srv_t *s = c->srv;
    st->remote_closed = 1;
    if (input_done(st))
        return;
    if (st->http_mode) {
        st_http_dispatch(c, st);
        return;
    }
    if (!st->streaming) {
        if (st->in_len == 0) {
            st_fail(c, st, CAIRN_GRPC_INTERNAL, "grpc: client streaming protocol violation: no request message");
            return;
        }
        if (st->in_len < 5) {
            st_fail(c, st, CAIRN_GRPC_INTERNAL, "grpc: truncated message");
            return;
        }
        int64_t mlen = check_prefix(c, st, 0);
        if (mlen < 0)
            return;
        if (st->in_len < 5 + (size_t)mlen) {
            st_fail(c, st, CAIRN_GRPC_INTERNAL, "grpc: truncated message");
            return;
        }
        st_dispatch(c, st, st->in + 5, (size_t)mlen);
        if (!st->closed && st->in) { /* the request body is no longer needed */
            c->req_buffered -= st->in_len;
            free(st->in);
            st->in = NULL;
            st->in_len = st->in_cap = 0;
        }
        return;
    }
    if (st->in_len) {
        st_fail(c, st, CAIRN_GRPC_INTERNAL, "grpc: truncated message");
        return;
    }
    st->announced = 1;
    if (s->h.on_half_close) {
        s->in_cb++;
        s->h.on_half_close(s->h.ud, call_id(c, (uint32_t)st->id));
        s->in_cb--;
    }
}

/* "/package.Service/Method": one dot in the first segment, exactly two segments. */
static int grpc_shaped(const char *path)
{
    if (path[0] != '/')
        return 0;
    const char *slash = strchr(path + 1, '/');
    if (!slash || slash == path + 1 || !slash[1] || strchr(slash + 1, '/') || strchr(path, '?'))
        return 0;
    return memchr(path + 1, '.', (size_t)(slash - path - 1)) != NULL;
}

/* Answers an HTTP-over-HTTP/2 request: :status, content-type, body, END_STREAM. */
static int st_http_respond(conn_t *c, h2stream_t *st, int status, const char *ctype, const uint8_t *body, size_t len)
{
    if (st->resp != RESP_NONE || st->finishing)
        return CAIRN_ESTATE;
    char sbuf[8];
    snprintf(sbuf, sizeof sbuf, "%d", status >= 100 && status <= 999 ? status : 500);
    st->plain = 1;
    st->finishing = 1;
    st->announced = 0; /* answered: no on_close for it, as for HTTP/1.1 */
    if ((len && strcmp(st->method, "HEAD") != 0 && st_queue(st, NULL, 0, body, len) != 0) ||
        st_open(c, st, sbuf, ctype ? ctype : "text/plain; charset=utf-8") != 0) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
        mark_dirty(c);
        return CAIRN_ENOMEM;
    }
    mark_dirty(c);
    return 0;
}

static void st_http_dispatch(conn_t *c, h2stream_t *st)
{
    cairn_h2srv_t *s = c->srv;
    const uint8_t *body = st->in ? st->in : (const uint8_t *)"";
    if (s->h.on_http1_async) {
        cairn_h2_meta_t meta = {.authority = st->authority ? st->authority : "",
                                .token = st->authz,
                                .timeout_ms = -1,
                                .client_cn = c->cn[0] ? c->cn : NULL,
                                .tls = c->ssl != NULL, .metrics_only = c->metrics_only};
        st->announced = 1;
        s->in_cb++;
        s->h.on_http1_async(s->h.ud, call_id(c, (uint32_t)st->id), st->method, st->path, body, st->in_len, &meta);
        s->in_cb--;
    } else {
        int status = 404;
        const char *ctype = NULL;
        char *rb = NULL;
        size_t rl = 0;
        s->in_cb++;
        s->h.on_http1(s->h.ud, st->method, st->path, body, st->in_len, &status, &ctype, &rb, &rl);
        s->in_cb--;
        if (!st->closed)
            st_http_respond(c, st, status, ctype, (const uint8_t *)rb, rb ? rl : 0);
        free(rb);
    }
    if (!st->closed && st->in) {
        c->req_buffered -= st->in_len;
        free(st->in);
        st->in = NULL;
        st->in_len = st->in_cap = 0;
    }
}

static void st_headers_done(conn_t *c, h2stream_t *st)
{
    cairn_h2srv_t *s = c->srv;
    if (st->bad_header) {
        st_http_error(c, st, 431, "request header too large\n");
        return;
    }
    if (!st->is_grpc) {
        /* Plain HTTP over HTTP/2 (curl and Go clients negotiate h2 over TLS for /health,
         * /metrics, the JSON gateway): the HTTP handlers serve it, as etcd's do. A gRPC
         * method path with a wrong content-type is a broken gRPC client: 415. */
        if ((s->h.on_http1 || s->h.on_http1_async) && st->path && !grpc_shaped(st->path)) {
            st->http_mode = 1;
            return;
        }
        st_http_error(c, st, 415, "invalid gRPC request content-type\n");
        return;
    }
    if (!st->is_post || !st->path) {
        st_http_error(c, st, 405, "gRPC requires POST\n");
        return;
    }
    if (s->h.is_streaming) {
        s->in_cb++;
        st->streaming = s->h.is_streaming(s->h.ud, st->path) ? 1 : 0;
        s->in_cb--;
    }
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    conn_t *c = user_data;
    c->hdr_bytes = 0;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    h2stream_t *st = calloc(1, sizeof *st);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    st->conn = c;
    st->id = frame->hd.stream_id;
    st->timeout_ms = -1;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    nghttp2_session_set_stream_user_data(session, st->id, st);
    return 0;
}

static char *dup_capped(const uint8_t *v, size_t n, size_t cap, h2stream_t *st)
{
    if (n > cap) {
        st->bad_header = 1;
        return NULL;
    }
    char *p = malloc(n + 1);
    if (!p) {
        st->bad_header = 1;
        return NULL;
    }
    memcpy(p, v, n);
    p[n] = 0;
    return p;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags;
    conn_t *c = user_data;
    c->hdr_bytes += namelen + valuelen + 32;
    if (c->hdr_bytes > MAX_HEADER_BLOCK)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* drop the connection */
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* trailers from a client: nothing in them matters to us */
    h2stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!st)
        return 0;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
    if (IS(":path")) {
        free(st->path);
        st->path = dup_capped(value, valuelen, MAX_PATH_LEN, st);
    } else if (IS(":method")) {
        st->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
        size_t n = valuelen < sizeof st->method - 1 ? valuelen : sizeof st->method - 1;
        memcpy(st->method, value, n);
        st->method[n] = 0;
    } else if (IS(":authority")) {
        free(st->authority);
        st->authority = dup_capped(value, valuelen, MAX_META_LEN, st);
    } else if (IS("content-type")) {
        /* "application/grpc", "application/grpc+proto", "application/grpc;..." */
        st->is_grpc = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                      (valuelen == 16 || value[16] == '+' || value[16] == ';') && !c->metrics_only;
    } else if (IS("grpc-timeout")) {
        char tmp[16];
        if (valuelen < sizeof tmp) {
            memcpy(tmp, value, valuelen);
            tmp[valuelen] = 0;
            st->timeout_ms = cairn_grpc_timeout_parse(tmp); /* malformed: as if absent */
        }
    } else if (IS("token")) {
        free(st->token);
        st->token = dup_capped(value, valuelen, MAX_META_LEN, st);
    } else if (IS("authorization")) {
        free(st->authz);
        st->authz = dup_capped(value, valuelen, MAX_META_LEN, st);
    } else if (IS("hasleader")) {
        st->has_leader = valuelen == 4 && memcmp(value, "true", 4) == 0;
    } else if (IS("grpc-encoding")) {
        size_t n = valuelen < sizeof st->encoding - 1 ? valuelen : sizeof st->encoding - 1;
        for (size_t i = 0; i < n; i++) /* it lands in an error message: keep it printable */
            st->encoding[i] = (value[i] >= 0x20 && value[i] < 0x7f && value[i] != '"') ? (char)value[i] : '?';
        st->encoding[n] = 0;
    }
#undef IS
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    conn_t *c = user_data;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        int64_t now = cairn_now_ms();
        c->rst_tokens += (now - c->rst_ms) * RST_RATE_PER_S;
        if (c->rst_tokens > RST_BURST * 1000)
            c->rst_tokens = RST_BURST * 1000;
        c->rst_ms = now;
        c->rst_tokens -= 1000;
        if (c->rst_tokens < 0) {
            cairn_warn("client resets streams too fast: closing connection", "conn=%u", c->serial);
            nghttp2_session_terminate_session(session, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        return 0;
    }
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        c->ping_sent_ms = 0; /* the client answered our keepalive */
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    h2stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!st || st->closed)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        st_headers_done(c, st);
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->closed)
        st_request_end(c, st);
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data)
{
    (void)flags;
    conn_t *c = user_data;
    h2stream_t *st = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!st || input_done(st) || !len)
        return 0;
    if (st->http_mode && st->in_len + len > c->srv->max_http1_body) {
        st_http_error(c, st, 413, "request body too large\n");
        return 0;
    }
    if (c->req_buffered + len > c->srv->conn_req_cap) {
        if (st->http_mode)
            st_http_error(c, st, 413, "request body too large\n");
        else
            st_fail(c, st, CAIRN_GRPC_RESOURCE_EXHAUSTED, "grpc: too much incomplete request data on this connection");
        return 0;
    }
    if (st->in_len + len > st->in_cap) {
        /* A unary body never needs more than one message (checked in st_parse); reserve
         * exactly that once the prefix is known, instead of doubling past it. */
        size_t need = st->in_len + len, nc = st->in_cap ? st->in_cap : 1024;
        while (nc < need)
            nc *= 2;
        if (!st->http_mode && need >= 5) {
            uint8_t hdr[5];
            for (int i = 0; i < 5; i++)
                hdr[i] = (size_t)i < st->in_len ? st->in[i] : data[i - st->in_len];
            uint32_t mlen = ((uint32_t)hdr[1] << 24) | ((uint32_t)hdr[2] << 16) | ((uint32_t)hdr[3] << 8) | hdr[4];
            if (mlen <= c->srv->max_recv && nc > (size_t)mlen + 5 && need <= (size_t)mlen + 5)
                nc = (size_t)mlen + 5;
        }
        uint8_t *np = realloc(st->in, nc);
        if (!np) {
            st_fail(c, st, CAIRN_GRPC_RESOURCE_EXHAUSTED, "grpc: out of memory");
            return 0;
        }
        st->in = np;
        st->in_cap = nc;
    }
    memcpy(st->in + st->in_len, data, len);
    st->in_len += len;
    c->req_buffered += len;
    if (!st->http_mode)
        st_parse(c, st);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    /* We finished a stream the client is still sending on: tell it to stop (grpc-go does
     * the same), so an oversized or rejected upload does not keep flowing. */
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    (void)error_code;
    conn_t *c = user_data;
    h2stream_t *st = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!st)
        return 0;
    st->closed = 1;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    int known = st->announced;
    stream_free(c, st);
    if (known)
        notify_close(c->srv, call_id(c, (uint32_t)stream_id));
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data)
{
    (void)session;
    conn_t *c = user_data;
    cairn_debug("http2 error", "conn=%u code=%d err=\"%.*s\"", c->serial, lib_error_code, (int)len, msg);
    return 0;
}

static void h2_start(conn_t *c)
{
    cairn_h2srv_t *s = c->srv;
    if (nghttp2_session_server_new2(&c->h2, s->cbs, c, s->h2opt) != 0) {
        c->h2 = NULL;
        conn_kill(c);
        return;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
    };
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0) {
        conn_kill(c);
        return;
    }
    if (s->draining)
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    c->state = CS_H2;
    c->rst_tokens = RST_BURST * 1000;
    c->rst_ms = cairn_now_ms();
    mark_dirty(c);
}

static void h2_feed(conn_t *c, const uint8_t *data, size_t n)
{
    if (c->closing)
        return;
    ssize_t r = nghttp2_session_mem_recv(c->h2, data, n);
    if (r < 0) {
        cairn_debug("http2 connection error", "conn=%u err=\"%s\"", c->serial, nghttp2_strerror((int)r));
        /* Queue a GOAWAY if nghttp2 has not; we close once it is out. */
        nghttp2_session_terminate_session(c->h2, NGHTTP2_PROTOCOL_ERROR);
        c->closing = 1;
        c->closing_ms = cairn_now_ms();
    }
    mark_dirty(c);
}

/* ---- HTTP/1.1 -------------------------------------------------------------------------- */

static h2stream_t *find_call(const cairn_h2srv_t *s, cairn_call_id_t call, conn_t **cp);

static void h1_respond(conn_t *c, int status, const char *ctype, const uint8_t *body, size_t len, int keep, int head)
{
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n", status,
                     cairn_h1_reason(status), ctype ? ctype : "text/plain; charset=utf-8", len,
                     !keep ? "Connection: close\r\n" : (c->h1_v10 ? "Connection: keep-alive\r\n" : ""));
    if (n < 0 || (size_t)n >= sizeof hdr || buf_append(&c->out, hdr, (size_t)n) != 0 ||
        (!head && buf_append(&c->out, body, len) != 0)) {
        conn_kill(c);
        return;
    }
    if (!keep) {
        c->closing = 1;
        c->closing_ms = cairn_now_ms();
    }
    mark_dirty(c);
}

/* The chunks of a chunked request body that are in, to on_http1_body while the request is
 * pending and not ended (after that they are dropped: the connection closes after the answer). */
static void h1_body(conn_t *c)
{
    cairn_h2srv_t *s = c->srv;
    while (!c->dead && c->h1_body_chunked && buf_pending(&c->in)) {
        size_t off, n;
        int last;
        const uint8_t *p = c->in.p + c->in.off;
        long r = cairn_h1_chunk(p, buf_pending(&c->in), s->max_http1_body, &off, &n, &last);
        if (r == 0)
            return;
        if (r < 0) { /* a body we cannot read on: the request cannot go on either */
            cairn_info("malformed chunked request body; closing the connection", "conn=%u", c->serial);
            conn_kill(c);
            return;
        }
        if (last)
            c->h1_body_chunked = 0;
        if (c->h1_pending && !c->h1_ended && s->h.on_http1_body && (n || last)) {
            s->in_cb++;
            s->h.on_http1_body(s->h.ud, c->h1_pending_id, p + off, n, last);
            s->in_cb--;
            if (c->dead)
                return;
        }
        buf_consume(&c->in, (size_t)r);
    }
}

static void h1_process(conn_t *c)
{
    cairn_h2srv_t *s = c->srv;
    cairn_h1_req_t *req = NULL;
    h1_body(c);
    while (!c->dead && !c->closing && !c->h1_pending && !c->h1_body_chunked && buf_pending(&c->in) &&
           buf_pending(&c->out) < OUT_HIGH) {
        if (!req && !(req = malloc(sizeof *req))) {
            conn_kill(c);
            break;
        }
        const uint8_t *p = c->in.p + c->in.off;
        long r = cairn_h1_parse(p, buf_pending(&c->in), s->max_http1_body, req);
        if (r < 0) {
            c->h1_v10 = 0;
            const char *msg = cairn_h1_reason(req->err_status);
            h1_respond(c, req->err_status, NULL, (const uint8_t *)msg, strlen(msg), 0, 0);
            break;
        }
        if (r == 0) {
            /* The head is incomplete: the header timeout runs from its first byte (before
             * it, CS_SNIFF's deadline ran from the accept); a whole head stops it. */
            if (!req->headers_done) {
                if (!c->h1_head_ms)
                    c->h1_head_ms = cairn_now_ms();
            } else {
                c->h1_head_ms = 0;
            }
            if (req->headers_done && req->expect_continue && !c->h1_continue_sent) {
                c->h1_continue_sent = 1;
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                if (buf_append(&c->out, cont, sizeof cont - 1) != 0)
                    conn_kill(c);
                mark_dirty(c);
            }
            break;
        }
        c->h1_continue_sent = 0;
        c->h1_head_ms = 0;
        c->h1_v10 = req->version_minor == 0;
        if (req->chunked && !(s->h.on_http1_body && s->h.on_http1_async)) {
            static const char ni[] = "Not Implemented";
            h1_respond(c, 501, NULL, (const uint8_t *)ni, sizeof ni - 1, 0, 0);
            break;
        }
        c->h1_body_chunked = req->chunked; /* (r is then the headers only) */
        if (req->chunked && req->expect_continue) { /* (curl -T - asks before it sends a chunk) */
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (buf_append(&c->out, cont, sizeof cont - 1) != 0) {
                conn_kill(c);
                break;
            }
            mark_dirty(c);
        }
        int keep = req->keep_alive && !s->draining;
        int head = strcmp(req->method, "HEAD") == 0;
        const uint8_t *body = p + req->header_len;
        if (s->h.on_http1_async) {
            if (++c->h1_seq == 0)
                c->h1_seq = 1;
            c->h1_pending = 1;
            c->h1_keep = keep;
            c->h1_head = head;
            c->h1_pending_id = call_id(c, c->h1_seq);
            cairn_h2_meta_t meta = {.authority = req->host,
                                    .token = req->authorization[0] ? req->authorization : NULL,
                                    .timeout_ms = -1,
                                    .client_cn = c->cn[0] ? c->cn : NULL,
                                    .tls = c->ssl != NULL, .metrics_only = c->metrics_only,
                                    .body_follows = req->chunked};
            s->in_cb++;
            s->h.on_http1_async(s->h.ud, c->h1_pending_id, req->method, req->path, body, req->content_length, &meta);
            s->in_cb--;
        } else if (s->h.on_http1) {
            int status = 404;
            const char *ctype = NULL;
            char *rb = NULL;
            size_t rl = 0;
            s->in_cb++;
            s->h.on_http1(s->h.ud, req->method, req->path, body, req->content_length, &status, &ctype, &rb, &rl);
            s->in_cb--;
            if (status < 100 || status > 999)
                status = 500;
            h1_respond(c, status, ctype, (const uint8_t *)(rb ? rb : ""), rb ? rl : 0, keep, head);
            free(rb);
        } else {
            static const char nf[] = "404 page not found\n";
            h1_respond(c, 404, NULL, (const uint8_t *)nf, sizeof nf - 1, keep, head);
        }
        if (c->dead)
            break;
        buf_consume(&c->in, (size_t)r);
    }
    free(req);
    h1_body(c); /* a chunked request's first chunks, if they came with its headers */
}

int cairn_h2srv_http1_reply(cairn_h2srv_t *self, cairn_call_id_t req, int status, const char *content_type,
                            const uint8_t *body, size_t len)
{
    if (!self)
        return CAIRN_EINVAL;
    conn_t *c = ht_get(self, (uint32_t)(req >> 32));
    if (c && !c->dead && c->state == CS_H2) {
        h2stream_t *st = find_call(self, req, &c);
        if (!st)
            return CAIRN_ECLOSED;
        if (!st->http_mode)
            return CAIRN_ESTATE;
        return st_http_respond(c, st, status, content_type, body, body ? len : 0);
    }
    if (!c || c->dead || c->state != CS_H1 || !c->h1_pending || c->h1_pending_id != req || c->h1_ended)
        return CAIRN_ECLOSED;
    if (c->h1_is_stream)
        return CAIRN_ESTATE; /* a stream is answered with http1_stream_send / _end */
    if (status < 100 || status > 999)
        status = 500;
    c->h1_pending = 0;
    h1_respond(c, status, content_type, body ? body : (const uint8_t *)"", body ? len : 0,
               c->h1_keep && !self->draining && !c->h1_body_chunked, c->h1_head);
    return 0;
}

/* ---- streamed HTTP answers (etcd's JSON gateway streams) ----------------------------- */

/* The HTTP/1.1 request req, pending and not ended; or the HTTP/2 stream of an HTTP request. */
static int http_stream_of(cairn_h2srv_t *self, cairn_call_id_t req, conn_t **cp, h2stream_t **stp)
{
    *stp = NULL;
    if (!self)
        return CAIRN_EINVAL;
    conn_t *c = ht_get(self, (uint32_t)(req >> 32));
    if (c && !c->dead && c->state == CS_H2) {
        h2stream_t *st = find_call(self, req, &c);
        if (!st)
            return CAIRN_ECLOSED;
        if (!st->http_mode)
            return CAIRN_ESTATE;
        if (st->finishing || st->resp == RESP_DONE)
            return CAIRN_ESTATE;
        *cp = c;
        *stp = st;
        return 0;
    }
    if (!c || c->dead || c->state != CS_H1 || !c->h1_pending || c->h1_pending_id != req)
        return CAIRN_ECLOSED;
    if (c->h1_ended)
        return CAIRN_ESTATE;
    *cp = c;
    return 0;
}

int cairn_h2srv_http1_stream_begin(cairn_h2srv_t *self, cairn_call_id_t req)
{
    conn_t *c;
    h2stream_t *st;
    int rc = http_stream_of(self, req, &c, &st);
    if (rc || st)
        return rc; /* HTTP/2: the stream's own reset says when the client is gone */
    c->h1_is_stream = 1;
    if (c->peer_eof)
        mark_dirty(c); /* the client is gone already: conn_pump ends it */
    return 0;
}

/* HTTP/1.1: the status line and headers of a streamed answer. HTTP/1.0 has no chunked
 * encoding: the body is the bytes up to the close. */
static int h1_stream_headers(conn_t *c, int status, const char *ctype)
{
    char hdr[512];
    if (status < 100 || status > 999)
        status = 500;
    int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s\r\n", status,
                     cairn_h1_reason(status), ctype ? ctype : "text/plain; charset=utf-8",
                     c->h1_v10 ? "" : "Transfer-Encoding: chunked\r\n",
                     c->h1_v10 || !c->h1_keep || c->srv->draining ? "Connection: close\r\n" : "");
    /* (a chunked request whose body is still coming when the answer ends: closed then, see
     * http1_stream_end; the headers cannot know yet) */
    if (n < 0 || (size_t)n >= sizeof hdr || buf_append(&c->out, hdr, (size_t)n) != 0)
        return CAIRN_ENOMEM;
    c->h1_streaming = 1;
    return 0;
}

/* Out of memory in the middle of a streamed answer: the answer cannot be completed, so the
 * connection closes once what is queued is written; on_close comes from conn_pump, not from
 * inside the service's call (conn_kill here would call back into it). */
static void h1_stream_broken(conn_t *c)
{
    c->h1_ended = 1;
    c->closing = 1;
    c->closing_ms = cairn_now_ms();
    mark_dirty(c);
}

static int h1_chunk(conn_t *c, const uint8_t *data, size_t len)
{
    if (!len)
        return 0; /* (an empty chunk would be the last one) */
    char sz[32];
    int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
    if (c->h1_v10)
        return buf_append(&c->out, data, len) ? CAIRN_ENOMEM : 0;
    if (buf_append(&c->out, sz, (size_t)n) || buf_append(&c->out, data, len) || buf_append(&c->out, "\r\n", 2))
        return CAIRN_ENOMEM;
    return 0;
}

/* An HTTP answer over an HTTP/2 stream (the JSON gateway over h2): its response headers, once. */
static int st_open_plain(conn_t *c, h2stream_t *st, int status, const char *content_type)
{
    if (st->resp != RESP_NONE)
        return 0;
    char sbuf[8];
    snprintf(sbuf, sizeof sbuf, "%d", status >= 100 && status <= 999 ? status : 500);
    st->plain = 1;
    return st_open(c, st, sbuf, content_type ? content_type : "text/plain; charset=utf-8");
}

int cairn_h2srv_http1_stream_send(cairn_h2srv_t *self, cairn_call_id_t req, int status, const char *content_type,
                                  const uint8_t *data, size_t len)
{
    conn_t *c;
    h2stream_t *st;
    int rc = http_stream_of(self, req, &c, &st);
    if (rc)
        return rc;
    if (st) {
        if ((len && st_queue(st, NULL, 0, data, len) != 0))
            return CAIRN_ENOMEM;
        if (st_open_plain(c, st, status, content_type) != 0)
            return CAIRN_ENOMEM;
        st_resume(c, st);
        return 0;
    }
    c->h1_is_stream = 1;
    if ((!c->h1_streaming && h1_stream_headers(c, status, content_type)) || h1_chunk(c, data, len)) {
        h1_stream_broken(c);
        return CAIRN_ENOMEM;
    }
    mark_dirty(c);
    return 0;
}

int cairn_h2srv_http1_stream_end(cairn_h2srv_t *self, cairn_call_id_t req, int status, const char *content_type,
                                 const uint8_t *data, size_t len)
{
    conn_t *c;
    h2stream_t *st;
    int rc = http_stream_of(self, req, &c, &st);
    if (rc)
        return rc;
    if (st) {
        if (len && st_queue(st, NULL, 0, data, len) != 0)
            return CAIRN_ENOMEM;
        st->finishing = 1; /* announced stays: on_close comes when the stream closes */
        if (st_open_plain(c, st, status, content_type) != 0) {
            nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_INTERNAL_ERROR);
            mark_dirty(c);
            return CAIRN_ENOMEM;
        }
        st_resume(c, st);
        return 0;
    }
    int keep = c->h1_keep && !self->draining && !c->h1_v10 && !c->h1_body_chunked;
    c->h1_is_stream = 1;
    c->h1_ended = 1;
    if (!c->h1_streaming) {
        /* nothing went out yet: a whole answer (c->h1_pending stays until conn_pump's on_close) */
        char hdr[512];
        if (status < 100 || status > 999)
            status = 500;
        keep = c->h1_keep && !self->draining && !c->h1_body_chunked;
        int n = snprintf(hdr, sizeof hdr, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                         status, cairn_h1_reason(status), content_type ? content_type : "text/plain; charset=utf-8",
                         len, !keep ? "Connection: close\r\n" : (c->h1_v10 ? "Connection: keep-alive\r\n" : ""));
        if (n < 0 || (size_t)n >= sizeof hdr || buf_append(&c->out, hdr, (size_t)n) != 0 ||
            (len && buf_append(&c->out, data, len) != 0)) {
            h1_stream_broken(c);
            return CAIRN_ENOMEM;
        }
    } else if (h1_chunk(c, data, len) || (!c->h1_v10 && buf_append(&c->out, "0\r\n\r\n", 5))) {
        h1_stream_broken(c);
        return CAIRN_ENOMEM;
    }
    if (!keep) {
        c->closing = 1;
        c->closing_ms = cairn_now_ms();
    }
    mark_dirty(c);
    return 0;
}

size_t cairn_h2srv_http1_queued_bytes(const cairn_h2srv_t *self, cairn_call_id_t req)
{
    if (!self)
        return 0;
    conn_t *c = ht_get(self, (uint32_t)(req >> 32));
    if (!c || c->dead)
        return 0;
    if (c->state == CS_H2) {
        h2stream_t *st = find_call(self, req, &c);
        return st ? st->out_bytes : 0;
    }
    return c->h1_pending && c->h1_pending_id == req ? buf_pending(&c->out) : 0;
}

/* ---- protocol selection ---------------------------------------------------------------- */

static void conn_feed(conn_t *c, const uint8_t *data, size_t n)
{
    c->last_rx_ms = cairn_now_ms();
    switch (c->state) {
    case CS_H2:
        h2_feed(c, data, n);
        return;
    case CS_H1:
        if (buf_append(&c->in, data, n) != 0) {
            conn_kill(c);
            return;
        }
        h1_process(c);
        return;
    case CS_SNIFF: {
        if (buf_append(&c->in, data, n) != 0) {
            conn_kill(c);
            return;
        }
        size_t have = buf_pending(&c->in);
        size_t cmp = have < H2_PREFACE_LEN ? have : H2_PREFACE_LEN;
        if (memcmp(c->in.p + c->in.off, H2_PREFACE, cmp) != 0) {
            c->state = CS_H1;
            h1_process(c);
            return;
        }
        if (have < H2_PREFACE_LEN)
            return;
        h2_start(c);
        if (c->dead)
            return;
        /* nghttp2 checks the preface itself: hand it everything we held back */
        buf_t held = c->in;
        memset(&c->in, 0, sizeof c->in);
        h2_feed(c, held.p + held.off, buf_pending(&held));
        buf_free(&held);
        return;
    }
    default:
        return;
    }
}

/* ---- listeners ------------------------------------------------------------------------- */

/* A listen URL (cairn_url.h) -> host ("" = every interface), port and whether it is TLS;
 * for unix:// and unixs://, *upath gets the socket file's path (malloc'd), as etcd 3.4 has it:
 * the URL's host:port as written ("unix://localhost:2379" is the file "localhost:2379" in the
 * working directory; a URL with a path is refused by cairn_url_parse, as by etcd). */
static int parse_url(const char *url, int *tls, char *host, size_t hcap, char *port, size_t pcap, char **upath)
{
    cairn_url_t u;
    *upath = NULL;
    if (cairn_url_parse(&u, url, strlen(url), 0, NULL, 0) < 0)
        return -1;
    *tls = cairn_url_is_tls(&u);
    if (u.scheme == CAIRN_URL_UNIX || u.scheme == CAIRN_URL_UNIXS) {
        const char *a = strstr(url, "://") + 3;
        size_t al = strcspn(a, "/?#");
        if (al == 0 || !(*upath = strndup(a, al)))
            return -1;
        return 0;
    }
    int hn = snprintf(host, hcap, "%s", u.host), pn = snprintf(port, pcap, "%d", u.port);
    return hn >= 0 && (size_t)hn < hcap && pn >= 0 && (size_t)pn < pcap ? 0 : -1;
}

/* Takes the unix listener if no other gateway of the node holds it: the lock first, then the
 * socket file (a stale one, left by a gateway that died, is removed, as etcd removes it). A
 * Unix socket has no SO_REUSEPORT to share one path between processes, so one gateway at a
 * time serves it and another takes it over within a second of its exit. 0 taken, 1 held by
 * another, < 0 error. */
static int unix_take(listener_t *l, char *errbuf, size_t errlen)
{
    if (flock(l->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            return 1;
        cairn_errbuf_set(errbuf, errlen, "cannot lock %s.lock: %s", l->upath, strerror(errno));
        return CAIRN_EIO;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, l->upath, strlen(l->upath) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    unlink(l->upath);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, l->backlog) != 0)
        goto fail;
    l->fd = fd;
    return 0;
fail:
    cairn_errbuf_set(errbuf, errlen, "cannot listen on unix socket %s: %s", l->upath, strerror(errno));
    if (fd >= 0)
        close(fd);
    flock(l->lock_fd, LOCK_UN);
    return CAIRN_EIO;
}

static int listener_open_unix(listener_t *l, const char *url, char *errbuf, size_t errlen)
{
    struct sockaddr_un sa;
    if (strlen(l->upath) >= sizeof sa.sun_path - 5) {
        cairn_errbuf_set(errbuf, errlen, "unix socket path of %s is %zu bytes, over the %zu-byte limit", url,
                         strlen(l->upath), sizeof sa.sun_path - 6);
        return CAIRN_ECONFIG;
    }
    char lp[sizeof sa.sun_path + 8];
    snprintf(lp, sizeof lp, "%s.lock", l->upath);
    l->backlog = 4096;
    l->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (l->lock_fd < 0) {
        cairn_errbuf_set(errbuf, errlen, "cannot open %s (the lock of %s): %s", lp, url, strerror(errno));
        return CAIRN_EIO;
    }
    int rc = unix_take(l, errbuf, errlen);
    if (rc < 0)
        return rc;
    l->port = 0;
    if (rc == 0)
        cairn_info("listening for client traffic", "url=%s socket=%s", url, l->upath);
    else
        cairn_info("another gatewayd of the node listens on this unix socket; taking it over if it stops",
                   "url=%s socket=%s", url, l->upath);
    return 0;
}

static int listener_open(cairn_h2srv_t *s, const char *url, int reuseport, listener_t *l, char *errbuf, size_t errlen)
{
    char host[256], port[8];
    if (parse_url(url, &l->tls, host, sizeof host, port, sizeof port, &l->upath) != 0) {
        cairn_errbuf_set(errbuf, errlen,
                         "bad listen URL %s (want http://IP:PORT, https://IP:PORT, unix://NAME or unixs://NAME)", url);
        return CAIRN_ECONFIG;
    }
    if (l->upath)
        return listener_open_unix(l, url, errbuf, errlen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *ai = NULL;
    int gr = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (gr != 0 || !ai) {
        cairn_errbuf_set(errbuf, errlen, "cannot resolve listen address %s: %s", url, gai_strerror(gr));
        return CAIRN_ECONFIG;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        goto syserr;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        goto syserr;
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0)
        goto syserr;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        goto syserr;
    l->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    l->fd = fd;
    freeaddrinfo(ai);
    cairn_info("listening for client traffic", "url=%s port=%d", url, l->port);
    return 0;
syserr:
    cairn_errbuf_set(errbuf, errlen, "cannot listen on %s: %s", url, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return CAIRN_EIO;
}

/* Refused connections are counted and logged at most once per DROP_LOG_MS, so that a flood
 * (or a descriptor shortage) cannot fill the log with a line per connection. */
static void drop_log(cairn_h2srv_t *s, int64_t now, int force)
{
    if (!(s->drop_nofd || s->drop_limit || s->drop_err) || (!force && now - s->drop_log_ms < DROP_LOG_MS))
        return;
    if (s->drop_nofd)
        cairn_warn("out of file descriptors: client connections accepted and closed at once", "count=%" PRIu64
                   " interval_ms=%d conns=%zu", s->drop_nofd, DROP_LOG_MS, s->n_conns - s->n_dead);
    if (s->drop_limit)
        cairn_warn("too many client connections (--max-client-connections): new ones closed at once",
                   "count=%" PRIu64 " interval_ms=%d max=%zu", s->drop_limit, DROP_LOG_MS, s->max_conns);
    if (s->drop_err)
        cairn_warn("accept failed", "count=%" PRIu64 " interval_ms=%d err=\"%s\"", s->drop_err, DROP_LOG_MS,
                   strerror(s->drop_errno));
    s->drop_nofd = s->drop_limit = s->drop_err = 0;
    s->drop_log_ms = now;
}

static void accept_some(cairn_h2srv_t *s, listener_t *l)
{
    for (int k = 0; k < ACCEPT_BATCH && l->fd >= 0; k++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            int64_t now = cairn_now_ms();
            if ((errno == EMFILE || errno == ENFILE) && s->reserve_fd >= 0) {
                /* Out of fds: the pending connections would keep the listener readable and
                 * the loop spinning. Spend the reserve to accept and drop what is queued (the
                 * client sees a close, not a hang), then take the reserve again, so that
                 * the IPC sockets and a TLS or file open still find a descriptor. */
                close(s->reserve_fd);
                s->reserve_fd = -1;
                for (int j = 0; j < ACCEPT_BATCH; j++) {
                    int tmp = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
                    if (tmp < 0)
                        break;
                    close(tmp);
                    s->drop_nofd++;
                }
                s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            } else if (errno == EMFILE || errno == ENFILE) {
                s->drop_nofd++; /* (no reserve: the pause below is all the backoff there is) */
            } else {
                s->drop_err++;
                s->drop_errno = errno;
            }
            /* Back off: listeners are left out of the poll set for a while, so that freed
             * descriptors go to established connections first. */
            s->accept_paused_until = now + ACCEPT_PAUSE_MS;
            drop_log(s, now, 0);
            return;
        }
        if (s->max_conns && s->n_conns - s->n_dead >= s->max_conns) {
            /* Over --max-client-connections: closed before a byte is read (we cannot know yet
             * whether it would speak HTTP/2 or HTTP/1.1, or TLS); the client sees a reset. */
            close(fd);
            s->drop_limit++;
            drop_log(s, cairn_now_ms(), 0);
            continue;
        }
        int one = 1, idle = 15, intvl = 15;
        /* gRPC is many small request/response writes: Nagle would add 40 ms stalls. Keepalive
         * (Go's listener defaults) reaps peers that vanished without a FIN. (Not for unix.) */
        if (!l->upath) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
        }
        conn_t *c = conn_new(s, fd, l->tls);
        if (!c) {
            close(fd);
            continue;
        }
        c->metrics_only = l->metrics_only != 0;
    }
}

/* ---- new / destroy --------------------------------------------------------------------- */

cairn_h2srv_t *cairn_h2srv_new(const cairn_h2srv_opts_t *opts, const cairn_h2srv_handlers_t *h, int *err,
                               char *errbuf, size_t errlen)
{
    int rc = CAIRN_ENOMEM;
    char tmp[256];
    if (!errbuf || !errlen) {
        errbuf = tmp;
        errlen = sizeof tmp;
    }
    errbuf[0] = 0;
    if (!opts || !h || !opts->n_listen || !opts->listen_urls) {
        cairn_errbuf_set(errbuf, errlen, "no listen URLs");
        if (err)
            *err = CAIRN_EINVAL;
        return NULL;
    }
    cairn_h2srv_t *s = calloc(1, sizeof *s);
    if (!s) {
        cairn_errbuf_set(errbuf, errlen, "out of memory");
        goto fail;
    }
    s->h = *h;
    s->reserve_fd = -1;
    size_t mrb = opts->max_request_bytes ? opts->max_request_bytes : DEFAULT_MAX_REQUEST;
    s->max_recv = mrb + GRPC_OVERHEAD;
    if (s->max_recv > UINT32_MAX)
        s->max_recv = UINT32_MAX;
    s->max_http1_body = s->max_recv / 2 * 3; /* JSON gateway: base64 values + JSON */
    s->conn_req_cap = 4 * (s->max_recv + 5);
    if (s->conn_req_cap < (64u << 20))
        s->conn_req_cap = 64u << 20;
    s->max_streams = opts->max_concurrent_streams ? opts->max_concurrent_streams : 1000;
    s->ka_interval_ms = opts->keepalive_interval_ms;
    s->ka_timeout_ms = opts->keepalive_timeout_ms;
    s->next_serial = 1;
    s->hdr_timeout_ms = opts->header_timeout_ms > 0 ? opts->header_timeout_ms
                        : opts->header_timeout_ms == 0 ? SNIFF_TIMEOUT_MS : 0;
    if (opts->max_conns > 0) {
        s->max_conns = (size_t)opts->max_conns;
    } else if (opts->max_conns < 0) {
        /* From the descriptor limit: leave FD_HEADROOM for the IPC sockets (ZeroMQ's own
         * included), listeners, TLS files and the reserve, so that connections, not the
         * node's plumbing, are what runs out. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
            rlim_t n = rl.rlim_cur > 2 * FD_HEADROOM ? rl.rlim_cur - FD_HEADROOM : rl.rlim_cur / 2;
            s->max_conns = n > 1 ? (size_t)n : 1;
        }
    }

    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO))
        signal(SIGPIPE, SIG_IGN);

    int need_tls = 0;
    for (size_t i = 0; i < opts->n_listen + opts->n_metrics; i++)
        if ((i < opts->n_listen ? opts->listen_urls[i] : opts->metrics_urls[i - opts->n_listen]) &&
            cairn_url_text_is_tls(i < opts->n_listen ? opts->listen_urls[i] : opts->metrics_urls[i - opts->n_listen]))
            need_tls = 1;
    if (need_tls) {
        char certp[4200], keyp[4200];
        const char *cert = opts->cert_file, *key = opts->key_file;
        if (!(cert && *cert && key && *key)) {
            if (!opts->auto_tls) {
                cairn_errbuf_set(errbuf, errlen, "https listen URL needs --cert-file and --key-file, or --auto-tls");
                rc = CAIRN_ECONFIG;
                goto fail;
            }
            rc = cairn_tls_auto_cert(opts->auto_tls_dir, certp, sizeof certp, keyp, sizeof keyp, errbuf, errlen);
            if (rc)
                goto fail;
            cert = certp;
            key = keyp;
        }
        s->ssl_ctx = cairn_tls_server_ctx_new(cert, key, opts->trusted_ca_file, opts->client_cert_auth, errbuf, errlen);
        if (!s->ssl_ctx) {
            rc = CAIRN_ETLS;
            goto fail;
        }
    }

    s->ls = calloc(opts->n_listen + opts->n_metrics, sizeof *s->ls);
    if (!s->ls)
        goto fail;
    for (size_t i = 0; i < opts->n_listen + opts->n_metrics; i++) {
        int metrics = i >= opts->n_listen;
        const char *url = metrics ? opts->metrics_urls[i - opts->n_listen] : opts->listen_urls[i];
        if (!url) {
            cairn_errbuf_set(errbuf, errlen, "empty listen URL");
            rc = CAIRN_ECONFIG;
            goto fail;
        }
        s->ls[i].fd = s->ls[i].lock_fd = -1;
        s->n_ls++; /* (counted before it opens: destroy frees what a failed open left) */
        /* etcd 3.4 (embed/etcd.go) says the same for each such URL and serves it without */
        if (!metrics && opts->client_cert_auth && !cairn_url_text_is_tls(url))
            cairn_warn("scheme is HTTP while --client-cert-auth is enabled; ignoring client cert auth for this URL",
                       "client-url=%s", url);
        rc = listener_open(s, url, opts->reuseport, &s->ls[i], errbuf, errlen);
        if (rc)
            goto fail;
        s->ls[i].metrics_only = metrics;
    }

    if (nghttp2_session_callbacks_new(&s->cbs) != 0 || nghttp2_option_new(&s->h2opt) != 0) {
        rc = CAIRN_ENOMEM;
        goto fail;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(s->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(s->cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(s->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(s->cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(s->cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(s->cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(s->cbs, on_error);
    /* Closed streams need not be kept for the priority tree: saves memory per stream. */
    nghttp2_option_set_no_closed_streams(s->h2opt, 1);
    /* grpc-go clients send ":authority: http://127.0.0.1:2379" for URL-shaped endpoints
     * (etcdctl endpoint status --cluster does), which nghttp2's HTTP messaging checks reset as
     * an invalid authority while grpc-go servers (etcd) accept it. We do our own checks
     * (method, :path, content-type, body framing), so turn nghttp2's off. */
    nghttp2_option_set_no_http_messaging(s->h2opt, 1);

    s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s->last_sweep_ms = cairn_now_ms();
    if (err)
        *err = 0;
    return s;
fail:
    if (err)
        *err = rc;
    if (!errbuf[0])
        cairn_errbuf_set(errbuf, errlen, "%s", cairn_strerror(rc));
    cairn_h2srv_destroy(&s);
    return NULL;
}

static void close_listeners(cairn_h2srv_t *s)
{
    for (size_t i = 0; i < s->n_ls; i++) {
        listener_t *l = &s->ls[i];
        /* a unix socket file goes before its lock does: once the lock is free, it is the next
         * gateway's file */
        if (l->fd >= 0 && l->upath)
            unlink(l->upath);
        if (l->fd >= 0) {
            close(l->fd);
            l->fd = -1;
        }
        if (l->lock_fd >= 0) {
            close(l->lock_fd);
            l->lock_fd = -1;
        }
    }
}

void cairn_h2srv_drain(cairn_h2srv_t *self)
{
    if (!self || self->in_cb)
        return;
    self->draining = 1;
    close_listeners(self);
    for (size_t i = 0; i < self->n_conns; i++) {
        conn_t *c = self->conns[i];
        if (c->dead)
            continue;
        if (c->state == CS_H2 && c->h2) {
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            mark_dirty(c);
        } else if (c->state == CS_H1) {
            if (!c->h1_pending && !buf_pending(&c->in)) {
                c->closing = 1;
                c->closing_ms = cairn_now_ms();
                mark_dirty(c);
            }
        } else if (c->state == CS_SNIFF || c->state == CS_HANDSHAKE) {
            conn_kill(c);
        }
    }
    cairn_h2srv_flush(self);
}

void cairn_h2srv_destroy(cairn_h2srv_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_h2srv_t *s = *self_p;
    if (s->in_cb) {
        cairn_error("cairn_h2srv_destroy called from a callback: ignored", "in_cb=%d", s->in_cb);
        return;
    }
    *self_p = NULL;
    s->destroying = 1;
    if (s->cbs && s->n_conns) {
        /* GOAWAY NO_ERROR and a short flush so clients see an orderly shutdown and retry
         * elsewhere instead of treating it as a network failure. */
        cairn_h2srv_drain(s);
        int64_t deadline = cairn_now_ms() + 200;
        for (;;) {
            size_t n = 0;
            struct pollfd pf[256];
            for (size_t i = 0; i < s->n_conns && n < 256; i++) {
                conn_t *c = s->conns[i];
                if (!c->dead && c->state != CS_LINGER && buf_pending(&c->out)) {
                    pf[n].fd = c->fd;
                    pf[n].events = POLLOUT;
                    pf[n].revents = 0;
                    n++;
                }
            }
            int64_t left = deadline - cairn_now_ms();
            if (!n || left <= 0)
                break;
            if (poll(pf, n, (int)left) <= 0)
                break;
            for (size_t i = 0; i < s->n_conns; i++)
                if (!s->conns[i]->dead && buf_pending(&s->conns[i]->out))
                    conn_write(s->conns[i]);
        }
    }
    for (size_t i = 0; i < s->n_conns; i++) {
        conn_t *c = s->conns[i];
        conn_kill(c);
        free(c);
    }
    free(s->conns);
    close_listeners(s);
    for (size_t i = 0; i < s->n_ls; i++)
        free(s->ls[i].upath);
    free(s->ls);
    free(s->ht);
    free(s->pollmap);
    if (s->ssl_ctx)
        SSL_CTX_free(s->ssl_ctx);
    if (s->cbs)
        nghttp2_session_callbacks_del(s->cbs);
    if (s->h2opt)
        nghttp2_option_del(s->h2opt);
    if (s->reserve_fd >= 0)
        close(s->reserve_fd);
    free(s);
}

/* ---- poll integration ------------------------------------------------------------------ */

size_t cairn_h2srv_poll_count(const cairn_h2srv_t *self)
{
    if (!self)
        return 0;
    size_t n = self->n_conns - self->n_dead;
    for (size_t i = 0; i < self->n_ls; i++)
        n += self->ls[i].fd >= 0; /* (counted while paused too: an upper bound is enough) */
    return n;
}

size_t cairn_h2srv_poll_fill(cairn_h2srv_t *self, zmq_pollitem_t *items, size_t cap)
{
    if (!self)
        return 0;
    size_t want = cairn_h2srv_poll_count(self);
    if (want > cap)
        want = cap;
    if (want > self->pollmap_cap) {
        size_t nc = want * 2;
        uint64_t *pm = realloc(self->pollmap, nc * sizeof *pm);
        if (!pm) {
            self->pollmap_n = 0;
            return 0;
        }
        self->pollmap = pm;
        self->pollmap_cap = nc;
    }
    size_t n = 0;
    int paused = self->accept_paused_until && cairn_now_ms() < self->accept_paused_until;
    for (size_t i = 0; i < self->n_ls && n < want; i++) {
        if (self->ls[i].fd < 0 || paused)
            continue;
        items[n] = (zmq_pollitem_t){.socket = NULL, .fd = self->ls[i].fd, .events = ZMQ_POLLIN, .revents = 0};
        self->pollmap[n++] = LISTENER_BIT | i;
    }
    for (size_t i = 0; i < self->n_conns && n < want; i++) {
        conn_t *c = self->conns[i];
        if (c->dead)
            continue;
        short ev = 0;
        if (c->state == CS_HANDSHAKE) {
            ev = ZMQ_POLLIN | (c->hs_want_write ? ZMQ_POLLOUT : 0);
        } else if (c->state == CS_LINGER) {
            ev = ZMQ_POLLIN;
        } else {
            if (!read_paused(c) || c->wr_want_read)
                ev |= ZMQ_POLLIN;
            /* also when nghttp2 holds frames we did not pull (PUMP_ROUNDS): a writable
             * socket wakes us to continue */
            if (buf_pending(&c->out) || c->rd_want_write || (c->h2 && nghttp2_session_want_write(c->h2)))
                ev |= ZMQ_POLLOUT;
        }
        items[n] = (zmq_pollitem_t){.socket = NULL, .fd = c->fd, .events = ev, .revents = 0};
        self->pollmap[n++] = c->serial;
    }
    self->pollmap_n = n;
    return n;
}

void cairn_h2srv_poll_handle(cairn_h2srv_t *self, const zmq_pollitem_t *items, size_t n)
{
    if (!self || self->in_cb)
        return;
    if (n > self->pollmap_n)
        n = self->pollmap_n;
    for (size_t i = 0; i < n; i++) {
        short re = items[i].revents;
        if (!re)
            continue;
        uint64_t m = self->pollmap[i];
        if (m & LISTENER_BIT) {
            size_t li = (size_t)(m & ~LISTENER_BIT);
            if (li < self->n_ls && self->ls[li].fd >= 0 && self->ls[li].fd == items[i].fd)
                accept_some(self, &self->ls[li]);
            continue;
        }
        conn_t *c = ht_get(self, (uint32_t)m);
        if (!c || c->dead || c->fd != items[i].fd)
            continue;
        if (re & ZMQ_POLLERR) {
            /* POLLERR/POLLHUP: the peer is gone; nothing we send can arrive */
            conn_kill(c);
            continue;
        }
        if (c->state == CS_HANDSHAKE) {
            conn_handshake(c);
        } else {
            if ((re & ZMQ_POLLIN) || ((re & ZMQ_POLLOUT) && c->rd_want_write))
                conn_read(c);
            if (!c->dead && ((re & ZMQ_POLLOUT) || ((re & ZMQ_POLLIN) && c->wr_want_read)))
                conn_write(c);
        }
        if (!c->dead)
            mark_dirty(c);
    }
}

/* Moves frames from nghttp2 into our buffer (bounded) and writes them; decides closes. */
static void conn_pump(conn_t *c)
{
    if (c->dead || c->state == CS_HANDSHAKE || c->state == CS_LINGER)
        return;
    if (c->state == CS_H1 && c->h1_pending && c->h1_is_stream && (c->h1_ended || c->peer_eof)) {
        /* a streamed answer is over (the service ended it, or the client half-closed and so
         * is gone as far as a stream is concerned): on_close, here and not inside the
         * service's stream_end; then the next request, or the close */
        if (!c->h1_ended && c->h1_streaming) {
            c->closing = 1; /* the chunked body was cut: the connection cannot be reused */
            c->closing_ms = cairn_now_ms();
        }
        if (c->h1_body_chunked && !c->closing) {
            c->closing = 1; /* the rest of the request's body is not read: no next request */
            c->closing_ms = cairn_now_ms();
        }
        cairn_call_id_t id = c->h1_pending_id;
        c->h1_pending = c->h1_is_stream = c->h1_streaming = c->h1_ended = 0;
        notify_close(c->srv, id);
        if (c->dead)
            return;
    }
    if (c->state == CS_H1 && c->h1_body_chunked && buf_pending(&c->in))
        h1_body(c);
    if (c->state == CS_H1 && !c->h1_pending && buf_pending(&c->in))
        h1_process(c);
    /* Input left inside SSL while we were paused is invisible to poll: read it now. */
    if (!c->dead && c->ssl && !read_paused(c) && SSL_pending(c->ssl) > 0)
        conn_read(c);
    for (int iter = 0; iter < PUMP_ROUNDS && !c->dead; iter++) {
        if (c->h2) {
            while (buf_pending(&c->out) < OUT_HIGH) {
                const uint8_t *data = NULL;
                ssize_t n = nghttp2_session_mem_send(c->h2, &data);
                if (n < 0) {
                    conn_kill(c);
                    return;
                }
                if (n == 0)
                    break;
                if (buf_append(&c->out, data, (size_t)n) != 0) {
                    conn_kill(c);
                    return;
                }
            }
        }
        conn_write(c);
        if (c->dead || buf_pending(&c->out) || !c->h2 || !nghttp2_session_want_write(c->h2))
            break;
    }
    /* Output drained: if reading had paused with bytes left inside SSL, poll will not
     * report them; come back in this same flush to read them. */
    if (!c->dead && c->ssl && !read_paused(c) && SSL_pending(c->ssl) > 0)
        mark_dirty(c);
    if (c->dead || buf_pending(&c->out))
        return;
    if (c->h2) {
        if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
            conn_finish(c);
        else if (c->closing && !nghttp2_session_want_write(c->h2))
            conn_finish(c);
    } else if (c->closing || (c->peer_eof && !c->h1_pending)) {
        conn_finish(c); /* (peer_eof: h1_process above answered every complete request) */
    }
}

/* etcd's --grpc-keepalive-interval / --grpc-keepalive-timeout (grpc-go's server keepalive):
 * a connection the client has sent nothing on for the interval gets a PING; one that does not
 * answer within the timeout is closed. Checked once a second (sweep). */
static void keepalive(cairn_h2srv_t *s, conn_t *c, int64_t now)
{
    if (c->ping_sent_ms) {
        if (s->ka_timeout_ms > 0 && now - c->ping_sent_ms > s->ka_timeout_ms) {
            cairn_info("client did not answer the keepalive ping; closing its connection", "conn=%u", c->serial);
            conn_kill(c);
        }
        return;
    }
    if (s->ka_interval_ms > 0 && now - c->last_rx_ms >= s->ka_interval_ms) {
        if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
            c->ping_sent_ms = now;
            mark_dirty(c);
        }
    }
}

static void sweep(cairn_h2srv_t *s, int64_t now)
{
    drop_log(s, now, 0);
    if (s->reserve_fd < 0) /* (lost when it could not be taken again: retry) */
        s->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (size_t i = 0; i < s->n_ls && !s->draining; i++) {
        listener_t *l = &s->ls[i];
        if (l->upath && l->fd < 0 && l->lock_fd >= 0) {
            char eb[256];
            int rc = unix_take(l, eb, sizeof eb);
            if (rc == 0)
                cairn_info("took over the unix socket from a gatewayd that stopped", "socket=%s", l->upath);
            else if (rc < 0)
                cairn_warn("cannot take over the unix socket", "err=\"%s\"", eb);
        }
    }
    for (size_t i = 0; i < s->n_conns; i++) {
        conn_t *c = s->conns[i];
        if (c->dead)
            continue;
        if ((c->state == CS_HANDSHAKE || c->state == CS_SNIFF) && s->hdr_timeout_ms &&
            now - c->created_ms > s->hdr_timeout_ms)
            conn_kill(c);
        else if (c->state == CS_H1 && c->h1_head_ms && !c->h1_pending && s->hdr_timeout_ms &&
                 now - c->h1_head_ms > s->hdr_timeout_ms)
            conn_kill(c); /* a request head still incomplete: slowloris, or a client gone */
        else if (c->state == CS_LINGER && now - c->closing_ms > LINGER_TIMEOUT_MS)
            conn_kill(c);
        else if (c->closing && now - c->closing_ms > CLOSING_TIMEOUT_MS)
            conn_kill(c);
        else if (c->state == CS_H2 && c->h2 && !c->closing)
            keepalive(s, c, now);
    }
}

void cairn_h2srv_flush(cairn_h2srv_t *self)
{
    if (!self || self->in_cb)
        return;
    while (self->dirty) {
        conn_t *c = self->dirty;
        self->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->in_dirty = 0;
        conn_pump(c);
    }
    int64_t now = cairn_now_ms();
    if (now - self->last_sweep_ms >= 1000) {
        self->last_sweep_ms = now;
        sweep(self, now);
    }
    reap(self);
}

/* ---- replies --------------------------------------------------------------------------- */

static h2stream_t *find_call(const cairn_h2srv_t *s, cairn_call_id_t call, conn_t **cp)
{
    if (!s)
        return NULL;
    conn_t *c = ht_get(s, (uint32_t)(call >> 32));
    uint32_t sid = (uint32_t)call;
    if (!c || c->dead || c->state != CS_H2 || !c->h2 || sid == 0 || sid > INT32_MAX)
        return NULL;
    h2stream_t *st = nghttp2_session_get_stream_user_data(c->h2, (int32_t)sid);
    if (!st || st->closed)
        return NULL;
    *cp = c;
    return st;
}

int cairn_h2srv_reply(cairn_h2srv_t *self, cairn_call_id_t call, const uint8_t *msg, size_t len)
{
    conn_t *c;
    h2stream_t *st = find_call(self, call, &c);
    if (!st)
        return CAIRN_ECLOSED;
    if (st->resp != RESP_NONE || st->finishing)
        return CAIRN_ESTATE;
    int rc = st_send(c, st, msg, len);
    return rc ? rc : st_finish(c, st, CAIRN_GRPC_OK, NULL);
}

int cairn_h2srv_error(cairn_h2srv_t *self, cairn_call_id_t call, int grpc_status, const char *message)
{
    conn_t *c;
    h2stream_t *st = find_call(self, call, &c);
    if (!st)
        return CAIRN_ECLOSED;
    return st_finish(c, st, grpc_status, message);
}

int cairn_h2srv_stream_send(cairn_h2srv_t *self, cairn_call_id_t call, const uint8_t *msg, size_t len)
{
    conn_t *c;
    h2stream_t *st = find_call(self, call, &c);
    if (!st)
        return CAIRN_ECLOSED;
    return st_send(c, st, msg, len);
}

int cairn_h2srv_stream_end(cairn_h2srv_t *self, cairn_call_id_t call, int grpc_status, const char *message)
{
    return cairn_h2srv_error(self, call, grpc_status, message);
}

size_t cairn_h2srv_stream_queued_bytes(const cairn_h2srv_t *self, cairn_call_id_t call)
{
    conn_t *c;
    h2stream_t *st = find_call(self, call, &c);
    return st ? st->out_bytes : 0;
}

size_t cairn_h2srv_conn_queued_bytes(const cairn_h2srv_t *self, cairn_call_id_t call)
{
    if (!self)
        return 0;
    conn_t *c = ht_get(self, (uint32_t)(call >> 32));
    return c && !c->dead ? buf_pending(&c->out) : 0;
}

size_t cairn_h2srv_listener_count(const cairn_h2srv_t *self) { return self ? self->n_ls : 0; }

int cairn_h2srv_bound_port(const cairn_h2srv_t *self, size_t idx)
{
    return self && idx < self->n_ls ? self->ls[idx].port : -1;
}

size_t cairn_h2srv_conn_count(const cairn_h2srv_t *self) { return self ? self->n_conns - self->n_dead : 0; }
