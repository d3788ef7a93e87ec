/* cairn_grpcc.c - a small gRPC client over nghttp2 (API and error model: cairn_grpcc.h).
 *
 * WIRE FORMAT (gRPC over HTTP/2, https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md)
 * ============================================================================================
 *
 * A call is one HTTP/2 stream. The client sends HEADERS
 *
 *     :method POST   :scheme http|https   :path /<package>.<Service>/<Method>
 *     :authority host:port   content-type application/grpc   te trailers
 *     grpc-timeout <n>m      (only with a deadline: milliseconds left, at most 8 digits)
 *     hasleader true         (CAIRN_GRPCC_HASLEADER)  and the connection's metadata (token ...)
 *
 * then DATA frames holding length-prefixed messages, and END_STREAM on its last DATA frame
 * (at once for unary and server-streaming calls). Each message is
 *
 *     0   1   compressed flag   0 (we advertise no grpc-accept-encoding; 1 is refused: INTERNAL)
 *     1   4   length            big-endian, bytes of the protobuf that follow
 *     5   n   the protobuf
 *
 * and a message may be cut anywhere by DATA frame boundaries: the receiver reassembles it
 * (bounded by max_msg). The server answers HEADERS (:status 200, content-type application/grpc),
 * DATA with messages in the same framing, and trailing HEADERS with END_STREAM carrying
 * grpc-status (decimal) and grpc-message (percent-encoded UTF-8). An error before any data may
 * come as one HEADERS frame with both (Trailers-Only). A stream that ends without grpc-status,
 * a :status other than 200, or a RST_STREAM is a failed call (grpc-go's mapping, roughly:
 * INTERNAL / UNKNOWN / UNAVAILABLE with the reason in the message).
 *
 * The connection: TCP (TCP_NODELAY), then TLS 1.2+ with ALPN "h2" when asked, then the HTTP/2
 * client preface and SETTINGS (push off, 1 MiB initial stream window, 16 MiB connection
 * window: a snapshot stream is limited by the disk, not by window updates). nghttp2 sends
 * WINDOW_UPDATEs as we consume data, so a caller slow in on_msg slows the server down
 * (flow control is the memory bound), and answers the server's PINGs.
 */
#include "cairn_grpcc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cairn_err.h"

#define MAX_META 8
#define OUT_BATCH (256u << 10) /* bytes pulled from nghttp2 before writing them */

struct cairn_grpcc_call {
    cairn_grpcc_t *c;
    cairn_grpcc_call_t *next, *prev;
    int32_t stream_id;
    int flags;
    cairn_grpcc_msg_fn on_msg;
    cairn_grpcc_done_fn on_done;
    void *arg;
    int64_t deadline; /* monotonic ms, 0 = none */
    /* request bytes not yet taken by nghttp2 */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    int half_close; /* END_STREAM once out drains */
    /* response: a partly received message */
    uint8_t *in;
    size_t in_len, in_cap;
    int http_status;
    int grpc_status; /* -1 until the trailers say */
    char *grpc_message;
    /* the end */
    int finished;     /* status decided; on_done pending or delivered */
    int delivered;    /* on_done ran */
    int stream_open;  /* nghttp2 still knows the stream: the struct must outlive it */
    int status;
    char message[512];
};

struct cairn_grpcc {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    int ssl_want_write;
    nghttp2_session *h2;
    char endpoint[300];
    char authority[300];
    int tls;
    int keepalive_ms;
    size_t max_msg;
    int err; /* CAIRN_E* once failed */
    char errmsg[512];
    int goaway;
    uint8_t *obuf; /* frames from nghttp2 not written yet */
    size_t olen, ooff, ocap;
    int64_t last_recv, ping_sent;
    int in_h2;      /* inside nghttp2_session_mem_recv/mem_send: on_done is deferred */
    int delivering; /* inside deliver(): no recursion */
    cairn_grpcc_call_t *calls;
    char *meta_name[MAX_META], *meta_value[MAX_META];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_err(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *errbuf, size_t errlen, const char *fmt, ...)
{
    if (!errbuf || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
}

/* OpenSSL's queued errors as one sentence (and the queue emptied). */
static void ssl_errstr(char *out, size_t len)
{
    unsigned long e;
    size_t n = 0;
    out[0] = 0;
    while ((e = ERR_get_error()) != 0) {
        if (n + 4 < len) {
            if (n)
                n += (size_t)snprintf(out + n, len - n, "; ");
            ERR_error_string_n(e, out + n, len - n);
            n = strlen(out);
        }
    }
    if (!out[0])
        snprintf(out, len, "%s", errno ? strerror(errno) : "unknown TLS error");
}

/* ---- calls ending ----------------------------------------------------------------------- */

static void call_free(cairn_grpcc_call_t *call)
{
    cairn_grpcc_t *c = call->c;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    free(call->out);
    free(call->in);
    free(call->grpc_message);
    free(call);
}

/* Runs the on_done of every finished call not yet told, unless we are inside nghttp2 (its
 * callbacks may still hold the call) or already doing so. */
static void deliver(cairn_grpcc_t *c)
{
    if (c->in_h2 || c->delivering)
        return;
    c->delivering = 1;
    for (int again = 1; again;) {
        again = 0;
        for (cairn_grpcc_call_t *call = c->calls, *next; call; call = next) {
            next = call->next;
            if (call->finished && !call->delivered) {
                call->delivered = 1;
                if (call->on_done)
                    call->on_done(call->arg, call, call->status, call->message);
                again = 1; /* on_done may have started or ended other calls */
                break;
            }
        }
    }
    for (cairn_grpcc_call_t *call = c->calls, *next; call; call = next) {
        next = call->next;
        if (call->delivered && !call->stream_open)
            call_free(call);
    }
    c->delivering = 0;
}

/* Decides a call's status (first decision wins). A stream still open is reset: the server
 * stops sending what nobody will read. */
static void call_finish(cairn_grpcc_call_t *call, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void call_finish(cairn_grpcc_call_t *call, int status, const char *fmt, ...)
{
    if (call->finished)
        return;
    call->finished = 1;
    call->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->message, sizeof call->message, fmt, ap);
    va_end(ap);
    cairn_grpcc_t *c = call->c;
    if (call->stream_open && c->h2 && !c->err)
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
}

static void conn_fail(cairn_grpcc_t *c, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_fail(cairn_grpcc_t *c, int err, const char *fmt, ...)
{
    if (c->err)
        return;
    c->err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    for (cairn_grpcc_call_t *call = c->calls; call; call = call->next)
        call_finish(call, CAIRN_GRPC_UNAVAILABLE, "%s: %s", c->endpoint, c->errmsg);
}

/* ---- transport: plain socket or TLS, non-blocking ----------------------------------------- */

/* > 0 bytes read, 0 nothing now, < 0 failed (the connection is marked) */
static ssize_t tr_read(cairn_grpcc_t *c, uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r = read(c->fd, buf, n);
        if (r > 0)
            return r;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        if (r == 0)
            conn_fail(c, CAIRN_ECLOSED, "connection closed by the server");
        else
            conn_fail(c, CAIRN_EIO, "read: %s", strerror(errno));
        return -1;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        c->ssl_want_write = 1;
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && r == 0)) {
        conn_fail(c, CAIRN_ECLOSED, "connection closed by the server");
        return -1;
    }
    char why[256];
    ssl_errstr(why, sizeof why);
    conn_fail(c, CAIRN_ETLS, "TLS read: %s", why);
    return -1;
}

static ssize_t tr_write(cairn_grpcc_t *c, const uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        conn_fail(c, CAIRN_EIO, "write: %s", strerror(errno));
        return -1;
    }
    ERR_clear_error();
    c->ssl_want_write = 0;
    int r = SSL_write(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE) {
        c->ssl_want_write = 1;
        return 0;
    }
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    char why[256];
    ssl_errstr(why, sizeof why);
    conn_fail(c, CAIRN_ETLS, "TLS write: %s", why);
    return -1;
}

/* Writes what is pending, pulling more frames from nghttp2 while the socket takes them. */
static void flush_out(cairn_grpcc_t *c)
{
    while (!c->err) {
        if (c->ooff < c->olen) {
            ssize_t n = tr_write(c, c->obuf + c->ooff, c->olen - c->ooff);
            if (n <= 0)
                return;
            c->ooff += (size_t)n;
            if (c->ooff < c->olen)
                return;
        }
        c->ooff = c->olen = 0;
        c->in_h2++;
        while (c->olen < OUT_BATCH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->h2, &data);
            if (n < 0) {
                conn_fail(c, CAIRN_EPROTO, "HTTP/2: %s", nghttp2_strerror((int)n));
                break;
            }
            if (n == 0)
                break;
            if (c->olen + (size_t)n > c->ocap) {
                size_t nc = (c->olen + (size_t)n) * 2;
                uint8_t *nb = realloc(c->obuf, nc);
                if (!nb) {
                    conn_fail(c, CAIRN_ENOMEM, "out of memory");
                    break;
                }
                c->obuf = nb;
                c->ocap = nc;
            }
            memcpy(c->obuf + c->olen, data, (size_t)n);
            c->olen += (size_t)n;
        }
        c->in_h2--;
        if (c->olen == 0)
            return;
    }
}

static void read_in(cairn_grpcc_t *c)
{
    uint8_t buf[64 << 10];
    for (int rounds = 0; rounds < 64 && !c->err; rounds++) {
        ssize_t n = tr_read(c, buf, sizeof buf);
        if (n <= 0)
            return;
        c->last_recv = now_ms();
        c->ping_sent = 0;
        c->in_h2++;
        ssize_t r = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
        c->in_h2--;
        if (r < 0) {
            conn_fail(c, CAIRN_EPROTO, "HTTP/2: %s", nghttp2_strerror((int)r));
            return;
        }
        if (!c->ssl && (size_t)n < sizeof buf)
            return;
        if (c->ssl && (size_t)n < sizeof buf && SSL_pending(c->ssl) == 0)
            return;
    }
}

/* ---- nghttp2 callbacks -------------------------------------------------------------------- */

static cairn_grpcc_call_t *call_of(nghttp2_session *h2, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h2, id);
}

static int pct_val(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
{
    (void)flags, (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    cairn_grpcc_call_t *call = call_of(h2, frame->hd.stream_id);
    if (!call)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        call->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        char v[16];
        snprintf(v, sizeof v, "%.*s", (int)(valuelen < 15 ? valuelen : 15), (const char *)value);
        call->grpc_status = atoi(v);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        free(call->grpc_message);
        call->grpc_message = malloc(valuelen + 1);
        if (!call->grpc_message)
            return 0;
        size_t o = 0;
        for (size_t i = 0; i < valuelen; i++) {
            int h, l;
            if (value[i] == '%' && i + 2 < valuelen && (h = pct_val(value[i + 1])) >= 0 &&
                (l = pct_val(value[i + 2])) >= 0) {
                call->grpc_message[o++] = (char)(h << 4 | l);
                i += 2;
            } else {
                call->grpc_message[o++] = (char)value[i];
            }
        }
        call->grpc_message[o] = 0;
    }
    return 0;
}

/* Checks a message's 5-byte prefix; its length, or -1 when the call was failed. */
static int64_t msg_prefix(cairn_grpcc_call_t *call, const uint8_t *p)
{
    uint32_t mlen = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    if (p[0] != 0) {
        call_finish(call, CAIRN_GRPC_INTERNAL, "compressed message from the server (none was offered)");
        return -1;
    }
    if (mlen > call->c->max_msg) {
        call_finish(call, CAIRN_GRPC_RESOURCE_EXHAUSTED, "received message larger than max (%u vs. %zu)", mlen,
                    call->c->max_msg);
        return -1;
    }
    return mlen;
}

static int buf_append(cairn_grpcc_call_t *call, const uint8_t *data, size_t n, size_t want)
{
    if (call->in_len + n > call->in_cap) {
        size_t nc = want > call->in_cap * 2 ? want : call->in_cap * 2;
        if (nc < 64)
            nc = 64;
        uint8_t *nb = realloc(call->in, nc);
        if (!nb) {
            call_finish(call, CAIRN_GRPC_RESOURCE_EXHAUSTED, "out of memory for a message");
            return -1;
        }
        call->in = nb;
        call->in_cap = nc;
    }
    memcpy(call->in + call->in_len, data, n);
    call->in_len += n;
    return 0;
}

static void hand_over(cairn_grpcc_call_t *call, const uint8_t *msg, size_t len)
{
    if (call->on_msg && call->on_msg(call->arg, call, msg, len) != 0)
        call_finish(call, CAIRN_GRPC_CANCELLED, "cancelled by the client");
}

/* Hands every complete message in the received bytes to on_msg; buffers a partial one (only
 * that: a message wholly inside data goes out without a copy). */
static void take_messages(cairn_grpcc_call_t *call, const uint8_t *data, size_t len)
{
    while (len > 0 && !call->finished) {
        if (call->in_len == 0 && len >= 5) {
            int64_t mlen = msg_prefix(call, data);
            if (mlen < 0)
                return;
            if (len >= 5 + (size_t)mlen) {
                hand_over(call, data + 5, (size_t)mlen);
                data += 5 + mlen;
                len -= 5 + (size_t)mlen;
                continue;
            }
        }
        if (call->in_len < 5) {
            size_t take = 5 - call->in_len < len ? 5 - call->in_len : len;
            if (buf_append(call, data, take, 5) != 0)
                return;
            data += take;
            len -= take;
            if (call->in_len < 5)
                return;
        }
        int64_t mlen = msg_prefix(call, call->in);
        if (mlen < 0)
            return;
        size_t want = 5 + (size_t)mlen, take = want - call->in_len < len ? want - call->in_len : len;
        if (buf_append(call, data, take, want) != 0)
            return;
        data += take;
        len -= take;
        if (call->in_len == want) {
            call->in_len = 0;
            hand_over(call, call->in + 5, (size_t)mlen);
            if (call->in_cap > (1u << 20)) { /* not kept for the rest of a long stream */
                free(call->in);
                call->in = NULL;
                call->in_cap = 0;
            }
        }
    }
}

static int on_data(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len,
                   void *user_data)
{
    (void)flags, (void)user_data;
    cairn_grpcc_call_t *call = call_of(h2, stream_id);
    if (call && !call->finished)
        take_messages(call, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *user_data)
{
    (void)user_data;
    cairn_grpcc_call_t *call = call_of(h2, stream_id);
    if (!call)
        return 0;
    call->stream_open = 0;
    nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
    if (call->finished)
        return 0;
    if (call->grpc_status >= 0) {
        if (call->grpc_status == 0 && call->in_len > 0)
            call_finish(call, CAIRN_GRPC_INTERNAL, "the stream ended inside a message");
        else
            call_finish(call, call->grpc_status, "%s", call->grpc_message ? call->grpc_message : "");
    } else if (error_code != NGHTTP2_NO_ERROR) {
        call_finish(call, error_code == NGHTTP2_REFUSED_STREAM ? CAIRN_GRPC_UNAVAILABLE : CAIRN_GRPC_INTERNAL,
                    "stream reset by the server: %s", nghttp2_http2_strerror(error_code));
    } else if (call->http_status && call->http_status != 200) {
        call_finish(call, call->http_status >= 502 && call->http_status <= 504 ? CAIRN_GRPC_UNAVAILABLE
                                                                              : CAIRN_GRPC_UNKNOWN,
                    "unexpected HTTP status %d", call->http_status);
    } else {
        call_finish(call, CAIRN_GRPC_INTERNAL, "the server ended the stream without grpc-status");
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
    (void)h2;
    cairn_grpcc_t *c = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        c->goaway = 1;
    return 0;
}

static ssize_t body_read(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                         nghttp2_data_source *source, void *user_data)
{
    (void)h2, (void)stream_id, (void)user_data;
    cairn_grpcc_call_t *call = source->ptr;
    size_t left = call->out_len - call->out_off;
    size_t n = left < length ? left : length;
    if (n)
        memcpy(buf, call->out + call->out_off, n);
    call->out_off += n;
    if (call->out_off == call->out_len) {
        call->out_off = call->out_len = 0;
        if (call->half_close || call->finished)
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0)
            return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* ---- connecting ------------------------------------------------------------------------- */

static int parse_endpoint(const char *ep, char *host, size_t hlen, char *port, size_t plen, int *tls)
{
    const char *p = ep;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strncmp(p, "https://", 8) == 0) {
        p += 8;
        *tls = 1;
    }
    const char *colon;
    if (*p == '[') {
        const char *rb = strchr(p, ']');
        if (!rb || rb[1] != ':')
            return -1;
        snprintf(host, hlen, "%.*s", (int)(rb - p - 1), p + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(p, ':');
        if (!colon || colon == p)
            return -1;
        snprintf(host, hlen, "%.*s", (int)(colon - p), p);
    }
    snprintf(port, plen, "%s", colon + 1);
    size_t pl = strlen(port);
    while (pl && port[pl - 1] == '/')
        port[--pl] = 0;
    if (!pl || strspn(port, "0123456789") != pl)
        return -1;
    return 0;
}

static int tcp_connect(const char *host, const char *port, int64_t deadline, char *errbuf, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        set_err(errbuf, errlen, "%s:%s: %s", host, port, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int64_t left = deadline - now_ms();
            if (left > 0 && poll(&p, 1, (int)left) == 1) {
                socklen_t sl = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl);
                if (err == 0)
                    break;
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
        set_err(errbuf, errlen, "connect %s:%s: %s", host, port, strerror(err));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int tls_setup(cairn_grpcc_t *c, const char *host, const cairn_grpcc_opts_t *o, int64_t deadline,
                     char *errbuf, size_t errlen)
{
    char why[512];
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx) {
        ssl_errstr(why, sizeof why);
        set_err(errbuf, errlen, "TLS: %s", why);
        return CAIRN_ETLS;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (o && o->cacert && *o->cacert) {
        if (SSL_CTX_load_verify_locations(c->ctx, o->cacert, NULL) != 1) {
            ssl_errstr(why, sizeof why);
            set_err(errbuf, errlen, "loading the CA file %s: %s", o->cacert, why);
            return CAIRN_ETLS;
        }
    } else {
        SSL_CTX_set_default_verify_paths(c->ctx);
    }
    SSL_CTX_set_verify(c->ctx, o && o->insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    if (o && o->cert && *o->cert) {
        if (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(c->ctx, o->key && *o->key ? o->key : o->cert, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(c->ctx) != 1) {
            ssl_errstr(why, sizeof why);
            set_err(errbuf, errlen, "loading the client certificate %s / key %s: %s", o->cert,
                    o->key ? o->key : o->cert, why);
            return CAIRN_ETLS;
        }
    }
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_CTX_set_alpn_protos(c->ctx, alpn, sizeof alpn);
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        ssl_errstr(why, sizeof why);
        set_err(errbuf, errlen, "TLS: %s", why);
        return CAIRN_ETLS;
    }
    unsigned char ipbuf[16];
    int is_ip = inet_pton(AF_INET, host, ipbuf) == 1 || inet_pton(AF_INET6, host, ipbuf) == 1;
    if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, host);
        SSL_set1_host(c->ssl, host);
    }
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(c->ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(c->ssl, r);
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (!ev) {
            long vr = SSL_get_verify_result(c->ssl);
            if (vr != X509_V_OK)
                snprintf(why, sizeof why, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
            else
                ssl_errstr(why, sizeof why);
            set_err(errbuf, errlen, "TLS handshake with %s: %s", c->endpoint, why);
            return CAIRN_ETLS;
        }
        struct pollfd p = {.fd = c->fd, .events = ev};
        int64_t left = deadline - now_ms();
        if (left <= 0 || poll(&p, 1, (int)left) == 0) {
            set_err(errbuf, errlen, "TLS handshake with %s: timed out", c->endpoint);
            return CAIRN_ETIMEOUT;
        }
    }
    const unsigned char *sel = NULL;
    unsigned sel_len = 0;
    SSL_get0_alpn_selected(c->ssl, &sel, &sel_len);
    if (sel_len && !(sel_len == 2 && memcmp(sel, "h2", 2) == 0)) {
        set_err(errbuf, errlen, "TLS with %s: the server chose ALPN \"%.*s\", not h2", c->endpoint, (int)sel_len,
                (const char *)sel);
        return CAIRN_ETLS;
    }
    return 0;
}

cairn_grpcc_t *cairn_grpcc_new(const char *endpoint, const cairn_grpcc_opts_t *o, int *err, char *errbuf,
                               size_t errlen)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = 0;
    char host[256], port[32];
    int tls = o && (o->tls || (o->cacert && *o->cacert) || (o->cert && *o->cert));
    if (!endpoint || parse_endpoint(endpoint, host, sizeof host, port, sizeof port, &tls) != 0) {
        set_err(errbuf, errlen, "endpoint \"%s\" is not host:port", endpoint ? endpoint : "");
        *err = CAIRN_EINVAL;
        return NULL;
    }
    cairn_grpcc_t *c = calloc(1, sizeof *c);
    if (!c) {
        *err = CAIRN_ENOMEM;
        set_err(errbuf, errlen, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->tls = tls;
    c->keepalive_ms = o && o->keepalive_ms > 0 ? o->keepalive_ms : 10000;
    c->max_msg = o && o->max_msg ? o->max_msg : (size_t)64 << 20;
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    if (strchr(host, ':'))
        snprintf(c->authority, sizeof c->authority, "[%s]:%s", host, port);
    else
        snprintf(c->authority, sizeof c->authority, "%s:%s", host, port);
    int64_t deadline = now_ms() + (o && o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000);
    c->fd = tcp_connect(host, port, deadline, errbuf, errlen);
    if (c->fd < 0) {
        *err = CAIRN_EIO;
        goto fail;
    }
    if (tls && (*err = tls_setup(c, host, o, deadline, errbuf, errlen)) != 0)
        goto fail;
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        *err = CAIRN_ENOMEM;
        goto fail;
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    int rc = nghttp2_session_client_new(&c->h2, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0) {
        *err = CAIRN_ENOMEM;
        goto fail;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
    c->last_recv = now_ms();
    flush_out(c);
    if (c->err) {
        set_err(errbuf, errlen, "%s: %s", endpoint, c->errmsg);
        *err = c->err;
        goto fail;
    }
    return c;
fail:
    if (!*err)
        *err = CAIRN_ENOMEM;
    if (errbuf && errlen && !errbuf[0])
        set_err(errbuf, errlen, "%s: %s", endpoint, cairn_strerror(*err));
    cairn_grpcc_destroy(&c);
    return NULL;
}

void cairn_grpcc_destroy(cairn_grpcc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_grpcc_t *c = *self_p;
    *self_p = NULL;
    if (!c->err && c->h2) {
        /* a polite end: GOAWAY, flushed if the socket takes it now */
        nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
        flush_out(c);
    }
    conn_fail(c, CAIRN_ECLOSED, "connection closed");
    c->in_h2 = 0;
    for (cairn_grpcc_call_t *call = c->calls; call; call = call->next)
        call->stream_open = 0; /* nghttp2_session_del does not call on_stream_close */
    deliver(c);
    while (c->calls)
        call_free(c->calls);
    if (c->h2)
        nghttp2_session_del(c->h2);
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    for (int i = 0; i < MAX_META; i++) {
        free(c->meta_name[i]);
        free(c->meta_value[i]);
    }
    free(c->obuf);
    free(c);
}

int cairn_grpcc_set_metadata(cairn_grpcc_t *c, const char *name, const char *value)
{
    int slot = -1;
    for (int i = 0; i < MAX_META; i++)
        if (c->meta_name[i] && strcmp(c->meta_name[i], name) == 0)
            slot = i;
    if (slot >= 0 && !value) {
        free(c->meta_name[slot]);
        free(c->meta_value[slot]);
        c->meta_name[slot] = c->meta_value[slot] = NULL;
        return 0;
    }
    if (!value)
        return 0;
    if (slot < 0)
        for (int i = 0; i < MAX_META && slot < 0; i++)
            if (!c->meta_name[i])
                slot = i;
    if (slot < 0)
        return CAIRN_ENOMEM;
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return CAIRN_ENOMEM;
    }
    free(c->meta_name[slot]);
    free(c->meta_value[slot]);
    c->meta_name[slot] = n;
    c->meta_value[slot] = v;
    return 0;
}

int cairn_grpcc_failed(const cairn_grpcc_t *c) { return c->err; }
const char *cairn_grpcc_error(const cairn_grpcc_t *c) { return c->errmsg; }
const char *cairn_grpcc_endpoint(const cairn_grpcc_t *c) { return c->endpoint; }

/* ---- calls -------------------------------------------------------------------------------- */

static int queue_msg(cairn_grpcc_call_t *call, const void *msg, size_t len)
{
    if (len > UINT32_MAX)
        return CAIRN_ETOOBIG;
    size_t need = call->out_len + 5 + len;
    if (need > call->out_cap) {
        size_t nc = need > call->out_cap * 2 ? need : call->out_cap * 2;
        uint8_t *nb = realloc(call->out, nc);
        if (!nb)
            return CAIRN_ENOMEM;
        call->out = nb;
        call->out_cap = nc;
    }
    uint8_t *p = call->out + call->out_len;
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    if (len)
        memcpy(p + 5, msg, len);
    call->out_len = need;
    return 0;
}

#define NV(n, v)                                                                                                 \
    {                                                                                                            \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME                     \
    }

cairn_grpcc_call_t *cairn_grpcc_start(cairn_grpcc_t *c, const char *path, const void *msg, size_t len, int flags,
                                      int timeout_ms, cairn_grpcc_msg_fn on_msg, cairn_grpcc_done_fn on_done,
                                      void *arg, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    if (c->err || c->goaway) {
        *err = CAIRN_ECLOSED;
        return NULL;
    }
    cairn_grpcc_call_t *call = calloc(1, sizeof *call);
    if (!call) {
        *err = CAIRN_ENOMEM;
        return NULL;
    }
    call->c = c;
    call->flags = flags;
    call->on_msg = on_msg;
    call->on_done = on_done;
    call->arg = arg;
    call->grpc_status = -1;
    call->half_close = (flags & CAIRN_GRPCC_HALF_CLOSE) != 0;
    if ((msg || call->half_close) && (*err = queue_msg(call, msg, len)) != 0) {
        free(call->out);
        free(call);
        return NULL;
    }
    char tmo[16];
    nghttp2_nv nv[8 + MAX_META];
    size_t n = 0;
    nv[n++] = (nghttp2_nv)NV(":method", "POST");
    nv[n++] = (nghttp2_nv)NV(":scheme", c->tls ? "https" : "http");
    nv[n++] = (nghttp2_nv)NV(":path", path);
    nv[n++] = (nghttp2_nv)NV(":authority", c->authority);
    nv[n++] = (nghttp2_nv)NV("content-type", "application/grpc");
    nv[n++] = (nghttp2_nv)NV("te", "trailers");
    if (timeout_ms > 0) {
        call->deadline = now_ms() + timeout_ms;
        snprintf(tmo, sizeof tmo, "%dm", timeout_ms > 99999999 ? 99999999 : timeout_ms);
        nv[n++] = (nghttp2_nv)NV("grpc-timeout", tmo);
    }
    if (flags & CAIRN_GRPCC_HASLEADER)
        nv[n++] = (nghttp2_nv)NV("hasleader", "true");
    for (int i = 0; i < MAX_META; i++)
        if (c->meta_name[i])
            nv[n++] = (nghttp2_nv)NV(c->meta_name[i], c->meta_value[i]);
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = body_read};
    int32_t id = nghttp2_submit_request(c->h2, NULL, nv, n, &prd, call);
    if (id < 0) {
        *err = id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? CAIRN_ECLOSED : CAIRN_EPROTO;
        free(call->out);
        free(call);
        return NULL;
    }
    call->stream_id = id;
    call->stream_open = 1;
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    *err = 0;
    return call;
}

int cairn_grpcc_send(cairn_grpcc_call_t *call, const void *msg, size_t len, int half_close)
{
    cairn_grpcc_t *c = call->c;
    if (call->finished || c->err)
        return CAIRN_ECLOSED;
    if (call->half_close)
        return CAIRN_ESTATE;
    int rc = msg || len ? queue_msg(call, msg, len) : 0;
    if (rc)
        return rc;
    if (half_close)
        call->half_close = 1;
    nghttp2_session_resume_data(c->h2, call->stream_id);
    return 0;
}

void cairn_grpcc_cancel(cairn_grpcc_call_t *call)
{
    call_finish(call, CAIRN_GRPC_CANCELLED, "cancelled by the client");
    deliver(call->c);
}

int cairn_grpcc_run(cairn_grpcc_t *c, int timeout_ms)
{
    if (!c->err) {
        flush_out(c);
        int64_t now = now_ms();
        int64_t wake = now + (timeout_ms > 0 ? timeout_ms : 0);
        for (cairn_grpcc_call_t *call = c->calls; call; call = call->next)
            if (!call->finished && call->deadline && call->deadline < wake)
                wake = call->deadline;
        int64_t ka = c->ping_sent ? c->ping_sent + c->keepalive_ms : c->last_recv + c->keepalive_ms;
        if (ka < wake)
            wake = ka;
        int wait = wake > now ? (int)(wake - now) : 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (c->ooff < c->olen || c->ssl_want_write)
            p.events |= POLLOUT;
        int pending = c->ssl && SSL_pending(c->ssl) > 0;
        int r = poll(&p, 1, pending ? 0 : wait);
        if (r < 0 && errno != EINTR)
            conn_fail(c, CAIRN_EIO, "poll: %s", strerror(errno));
        if (!c->err && (pending || (r > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)))))
            read_in(c);
        if (!c->err && r > 0 && (p.revents & POLLOUT))
            flush_out(c);
        now = now_ms();
        for (cairn_grpcc_call_t *call = c->calls; call && !c->err; call = call->next)
            if (!call->finished && call->deadline && now >= call->deadline)
                call_finish(call, CAIRN_GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
        if (!c->err) {
            if (c->ping_sent && now - c->ping_sent >= c->keepalive_ms) {
                conn_fail(c, CAIRN_ETIMEOUT, "no answer to a keepalive ping in %d ms", c->keepalive_ms);
            } else if (!c->ping_sent && now - c->last_recv >= c->keepalive_ms) {
                nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL);
                c->ping_sent = now;
            }
        }
        if (!c->err)
            flush_out(c);
        if (!c->err && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
            conn_fail(c, CAIRN_ECLOSED, "the server ended the connection (GOAWAY)");
    }
    deliver(c);
    return c->err;
}

/* ---- unary ------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *resp;
    size_t len;
    int got, done, status;
    char msg[512];
} unary_t;

static int unary_msg(void *arg, cairn_grpcc_call_t *call, const uint8_t *msg, size_t len)
{
    (void)call;
    unary_t *u = arg;
    if (u->got++)
        return 1; /* a unary call answers once */
    u->resp = malloc(len ? len : 1);
    if (!u->resp)
        return 1;
    if (len)
        memcpy(u->resp, msg, len);
    u->len = len;
    return 0;
}

static void unary_done(void *arg, cairn_grpcc_call_t *call, int status, const char *message)
{
    (void)call;
    unary_t *u = arg;
    u->done = 1;
    u->status = status;
    snprintf(u->msg, sizeof u->msg, "%s", message);
}

int cairn_grpcc_unary(cairn_grpcc_t *c, const char *path, const void *req, size_t len, uint8_t **resp,
                      size_t *resp_len, int timeout_ms, char *errbuf, size_t errlen)
{
    *resp = NULL;
    *resp_len = 0;
    unary_t u = {0};
    int err = 0;
    cairn_grpcc_call_t *call = cairn_grpcc_start(c, path, req ? req : "", len, CAIRN_GRPCC_HALF_CLOSE, timeout_ms,
                                                 unary_msg, unary_done, &u, &err);
    if (!call) {
        set_err(errbuf, errlen, "%s %s: %s", c->endpoint, path, c->err ? c->errmsg : cairn_strerror(err));
        return err;
    }
    while (!u.done)
        cairn_grpcc_run(c, 1000);
    if (u.status == 0 && u.got != 1) {
        u.status = CAIRN_GRPC_INTERNAL;
        snprintf(u.msg, sizeof u.msg, u.got ? "more than one response to a unary call" : "no response message");
    }
    if (u.status != 0) {
        set_err(errbuf, errlen, "%s", u.msg);
        free(u.resp);
        return u.status;
    }
    *resp = u.resp;
    *resp_len = u.len;
    return 0;
}
