/* Unit tests for gatewayd's h2srv transport: a real server on 127.0.0.1 (port 0) running
 * its zmq_poll loop in a thread, and small clients in the test thread: an nghttp2 client
 * (h2c or TLS with ALPN via OpenSSL) and raw sockets for HTTP/1.1 and hostile bytes. The
 * handlers implement a toy service:
 *   /test.Echo/Unary   replies with the request bytes
 *   /test.Echo/Fail    error 5 with a message that needs percent-encoding
 *   /test.Echo/Later   answered from the loop on a later pass (asynchronous reply)
 *   /test.Echo/Stream  streaming: echoes each message, ends OK at half-close
 *   /test.Echo/Big     streaming: answers its first message with 32 MiB of messages
 *   anything else      12 UNIMPLEMENTED (as the service layer will)
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "h2srv.h"
#include "h2srv_http1.h"

/* ---- server fixture ------------------------------------------------------------------ */

typedef struct {
    cairn_h2srv_t *srv;
    pthread_t th;
    atomic_int stop;
    atomic_int conns;     /* conn_count snapshot from the loop */
    atomic_int n_message, n_half_close, n_close, n_stream_msgs;
    atomic_long big_queued;
    atomic_int bad; /* failed checks inside handlers (server thread: no cr_assert there) */
    int port, tls_port;
    char dir[64];
    pthread_mutex_t mu;
    /* recorded from the last on_message */
    char last_path[256];
    char last_token[64];
    char last_authority[128];
    int last_has_leader;
    int64_t last_timeout;
    int last_tls;
    size_t last_len;
    cairn_call_id_t later[64];
    int n_later;
    cairn_call_id_t h1_later[16];
    int n_h1_later;
    /* streamed HTTP answers (http1_stream_*): requests to /stream-<mode> */
    cairn_call_id_t h1_stream[16];
    char h1_stream_mode[16][16];
    int n_h1_stream;
    atomic_int stream_end_rc; /* what the last stream_end returned */
    char body_got[256]; /* a chunked body's bytes as on_http1_body gave them */
    size_t body_got_len;
    atomic_int body_ends;
    cairn_call_id_t big_call;
    int reply_after_close_rc; /* what a reply to a closed call returned */
    int test_reply_after_close;
} fixture_t;

static fixture_t *g_fx;

#define CHECK(fx, cond)                                                           \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "%s:%d: handler check failed: %s\n", __FILE__, __LINE__, #cond); \
            atomic_fetch_add(&(fx)->bad, 1);                                      \
        }                                                                         \
    } while (0)

static int is_streaming(void *ud, const char *path)
{
    (void)ud;
    return strcmp(path, "/test.Echo/Stream") == 0 || strcmp(path, "/test.Echo/Big") == 0;
}

static void on_message(void *ud, cairn_call_id_t call, const char *path, const uint8_t *msg, size_t len,
                       const cairn_h2_meta_t *meta)
{
    fixture_t *fx = ud;
    atomic_fetch_add(&fx->n_message, 1);
    pthread_mutex_lock(&fx->mu);
    snprintf(fx->last_path, sizeof fx->last_path, "%s", path);
    snprintf(fx->last_token, sizeof fx->last_token, "%s", meta->token ? meta->token : "(null)");
    snprintf(fx->last_authority, sizeof fx->last_authority, "%s", meta->authority);
    fx->last_has_leader = meta->has_leader_md;
    fx->last_timeout = meta->timeout_ms;
    fx->last_tls = meta->tls;
    fx->last_len = len;
    pthread_mutex_unlock(&fx->mu);
    cairn_h2srv_t *s = fx->srv;
    if (strcmp(path, "/test.Echo/Unary") == 0) {
        CHECK(fx, cairn_h2srv_reply(s, call, msg, len) == 0);
        /* a second answer is refused, not a crash */
        CHECK(fx, cairn_h2srv_reply(s, call, msg, len) == CAIRN_ESTATE);
    } else if (strcmp(path, "/test.Echo/Fail") == 0) {
        CHECK(fx, cairn_h2srv_error(s, call, 5, "not found: \xc3\xa4%\n") == 0);
    } else if (strcmp(path, "/test.Echo/Later") == 0) {
        pthread_mutex_lock(&fx->mu);
        if (fx->n_later < 64)
            fx->later[fx->n_later++] = call;
        pthread_mutex_unlock(&fx->mu);
    } else if (strcmp(path, "/test.Echo/Stream") == 0) {
        atomic_fetch_add(&fx->n_stream_msgs, 1);
        CHECK(fx, cairn_h2srv_stream_send(s, call, msg, len) == 0);
    } else if (strcmp(path, "/test.Echo/Big") == 0) {
        if (!fx->big_call) {
            fx->big_call = call;
            uint8_t *blob = calloc(1, 1 << 20);
            for (int i = 0; i < 32; i++) {
                blob[0] = (uint8_t)i;
                CHECK(fx, cairn_h2srv_stream_send(s, call, blob, 1 << 20) == 0);
            }
            free(blob);
            CHECK(fx, cairn_h2srv_stream_end(s, call, 0, NULL) == 0);
        }
    } else {
        char m[300];
        snprintf(m, sizeof m, "unknown method %s", path);
        cairn_h2srv_error(s, call, 12, m);
    }
}

static void on_half_close(void *ud, cairn_call_id_t call)
{
    fixture_t *fx = ud;
    atomic_fetch_add(&fx->n_half_close, 1);
    cairn_h2srv_stream_end(fx->srv, call, 0, NULL);
}

static void on_close(void *ud, cairn_call_id_t call)
{
    fixture_t *fx = ud;
    atomic_fetch_add(&fx->n_close, 1);
    if (call == fx->big_call)
        fx->big_call = 0;
}

static void on_http1(void *ud, const char *method, const char *path, const uint8_t *body, size_t body_len,
                     int *status, const char **ctype, char **resp, size_t *resp_len)
{
    (void)ud;
    if (strcmp(path, "/health") == 0 && (!strcmp(method, "GET") || !strcmp(method, "HEAD"))) {
        *status = 200;
        *ctype = "application/json";
        *resp = strdup("{\"health\":\"true\"}");
        *resp_len = strlen(*resp);
    } else if (strcmp(path, "/echo") == 0 && !strcmp(method, "POST")) {
        *status = 200;
        *resp = malloc(body_len + 1);
        memcpy(*resp, body, body_len);
        *resp_len = body_len;
    } else {
        *status = 404;
        *resp = strdup("404 page not found\n");
        *resp_len = strlen(*resp);
    }
}

static void on_http1_async(void *ud, cairn_call_id_t req, const char *method, const char *path, const uint8_t *body,
                           size_t body_len, const cairn_h2_meta_t *meta)
{
    fixture_t *fx = ud;
    (void)method, (void)body, (void)body_len;
    pthread_mutex_lock(&fx->mu);
    snprintf(fx->last_path, sizeof fx->last_path, "%s", path);
    snprintf(fx->last_token, sizeof fx->last_token, "%s", meta->token ? meta->token : "(null)");
    if (strncmp(path, "/stream-", 8) == 0 && fx->n_h1_stream < 16) {
        /* answered from the loop, as the gateway answers a JSON watch when events come */
        snprintf(fx->h1_stream_mode[fx->n_h1_stream], sizeof fx->h1_stream_mode[0], "%s", path + 8);
        fx->h1_stream[fx->n_h1_stream++] = req;
        CHECK(fx, cairn_h2srv_http1_stream_begin(fx->srv, req) == 0);
    } else if (strcmp(path, "/body") == 0) {
        CHECK(fx, meta->body_follows == 1 && body_len == 0); /* answered once the body ended */
    } else if (fx->n_h1_later < 16)
        fx->h1_later[fx->n_h1_later++] = req;
    pthread_mutex_unlock(&fx->mu);
}

static void on_http1_body(void *ud, cairn_call_id_t req, const uint8_t *data, size_t len, int end)
{
    fixture_t *fx = ud;
    pthread_mutex_lock(&fx->mu);
    if (fx->body_got_len + len < sizeof fx->body_got) {
        memcpy(fx->body_got + fx->body_got_len, data, len);
        fx->body_got_len += len;
    }
    if (end) {
        atomic_fetch_add(&fx->body_ends, 1);
        if (strcmp(fx->last_path, "/body") == 0 && fx->n_h1_later < 16)
            fx->h1_later[fx->n_h1_later++] = req;
    }
    pthread_mutex_unlock(&fx->mu);
}

static void *server_loop(void *arg)
{
    fixture_t *fx = arg;
    size_t cap = 0;
    zmq_pollitem_t *items = NULL;
    while (!atomic_load(&fx->stop)) {
        size_t want = cairn_h2srv_poll_count(fx->srv);
        if (want > cap) {
            cap = want * 2;
            items = realloc(items, cap * sizeof *items);
        }
        size_t n = cairn_h2srv_poll_fill(fx->srv, items, cap);
        zmq_poll(items, (int)n, 10);
        cairn_h2srv_poll_handle(fx->srv, items, n);
        /* asynchronous answers, as the service layer gives them after an IPC round trip */
        pthread_mutex_lock(&fx->mu);
        for (int i = 0; i < fx->n_later; i++) {
            static const uint8_t later[] = "later";
            int rc = cairn_h2srv_reply(fx->srv, fx->later[i], later, 5);
            if (fx->test_reply_after_close)
                fx->reply_after_close_rc = rc;
        }
        fx->n_later = 0;
        for (int i = 0; i < fx->n_h1_later; i++)
            cairn_h2srv_http1_reply(fx->srv, fx->h1_later[i], 200, "text/plain", (const uint8_t *)"async ok", 8);
        fx->n_h1_later = 0;
        for (int i = 0; i < fx->n_h1_stream; i++) {
            /* "end": two chunks then the end; "open": two chunks, left open; "empty": ended
             * with nothing sent (a whole answer); "error": headers with a status, one chunk, end */
            cairn_call_id_t r = fx->h1_stream[i];
            const char *m = fx->h1_stream_mode[i];
            if (strcmp(m, "empty") == 0) {
                atomic_store(&fx->stream_end_rc, cairn_h2srv_http1_stream_end(fx->srv, r, 404, "application/json",
                                                                               (const uint8_t *)"{}", 2));
                continue;
            }
            if (strcmp(m, "error") == 0) {
                CHECK(fx, cairn_h2srv_http1_stream_send(fx->srv, r, 503, "application/json", NULL, 0) == 0);
                atomic_store(&fx->stream_end_rc, cairn_h2srv_http1_stream_end(fx->srv, r, 200, NULL,
                                                                               (const uint8_t *)"{\"e\":1}", 7));
                continue;
            }
            CHECK(fx, cairn_h2srv_http1_stream_send(fx->srv, r, 200, "application/json", (const uint8_t *)"a\n", 2) == 0);
            CHECK(fx, cairn_h2srv_http1_stream_send(fx->srv, r, 500, "x", (const uint8_t *)"bb\n", 3) == 0);
            CHECK(fx, cairn_h2srv_http1_queued_bytes(fx->srv, r) > 0);
            CHECK(fx, cairn_h2srv_http1_reply(fx->srv, r, 200, NULL, NULL, 0) == CAIRN_ESTATE);
            if (strcmp(m, "end") == 0) {
                atomic_store(&fx->stream_end_rc, cairn_h2srv_http1_stream_end(fx->srv, r, 200, NULL, NULL, 0));
                CHECK(fx, cairn_h2srv_http1_stream_send(fx->srv, r, 200, NULL, (const uint8_t *)"c", 1) == CAIRN_ESTATE);
            }
        }
        fx->n_h1_stream = 0;
        pthread_mutex_unlock(&fx->mu);
        if (fx->big_call)
            atomic_store(&fx->big_queued, (long)cairn_h2srv_stream_queued_bytes(fx->srv, fx->big_call));
        cairn_h2srv_flush(fx->srv);
        atomic_store(&fx->conns, (int)cairn_h2srv_conn_count(fx->srv));
    }
    cairn_h2srv_destroy(&fx->srv);
    free(items);
    return NULL;
}

enum { FX_TLS = 1, FX_ASYNC_H1 = 2, FX_SMALL_MAX = 4, FX_KEEPALIVE = 8, FX_LIMITS = 16 };

static fixture_t *fx_start(int flags)
{
    cairn_log_init("test", CAIRN_LOG_WARN);
    fixture_t *fx = calloc(1, sizeof *fx);
    pthread_mutex_init(&fx->mu, NULL);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/h2srv_test_XXXXXX");
    cr_assert_not_null(mkdtemp(fx->dir));
    const char *urls[2] = {"http://127.0.0.1:0", "https://127.0.0.1:0"};
    char tlsdir[128];
    snprintf(tlsdir, sizeof tlsdir, "%s/fixtures/client", fx->dir);
    cairn_h2srv_opts_t o = {.listen_urls = urls,
                            .n_listen = (flags & FX_TLS) ? 2 : 1,
                            .auto_tls = 1,
                            .auto_tls_dir = tlsdir,
                            .max_request_bytes = (flags & FX_SMALL_MAX) ? 1024 : 0,
                            .keepalive_interval_ms = (flags & FX_KEEPALIVE) ? 1000 : 0,
                            .keepalive_timeout_ms = (flags & FX_KEEPALIVE) ? 1000 : 0,
                            .header_timeout_ms = (flags & FX_LIMITS) ? 1000 : 0,
                            .max_conns = (flags & FX_LIMITS) ? 3 : 0};
    cairn_h2srv_handlers_t h = {.on_message = on_message,
                                .on_half_close = on_half_close,
                                .on_close = on_close,
                                .on_http1 = on_http1,
                                .is_streaming = is_streaming,
                                .ud = fx,
                                .on_http1_async = (flags & FX_ASYNC_H1) ? on_http1_async : NULL,
                                .on_http1_body = on_http1_body};
    int err = 0;
    char eb[256] = "";
    fx->srv = cairn_h2srv_new(&o, &h, &err, eb, sizeof eb);
    cr_assert_not_null(fx->srv, "new failed: %d %s", err, eb);
    fx->port = cairn_h2srv_bound_port(fx->srv, 0);
    fx->tls_port = (flags & FX_TLS) ? cairn_h2srv_bound_port(fx->srv, 1) : -1;
    cr_assert_gt(fx->port, 0);
    pthread_create(&fx->th, NULL, server_loop, fx);
    g_fx = fx;
    return fx;
}

static void fx_stop(fixture_t *fx)
{
    atomic_store(&fx->stop, 1);
    pthread_join(fx->th, NULL);
    cr_assert_eq(atomic_load(&fx->bad), 0, "checks failed inside handlers");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    cr_assert_eq(system(cmd), 0);
    pthread_mutex_destroy(&fx->mu);
    free(fx);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- raw sockets ----------------------------------------------------------------------- */

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t r = send(fd, b, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return; /* the server may close on us: that is what some tests expect */
        b += r;
        n -= (size_t)r;
    }
}

/* Reads until the peer closes (returns 1) or timeout (0); collects up to cap bytes. */
static int read_until_close(int fd, char *out, size_t cap, size_t *got, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    size_t n = 0;
    for (;;) {
        int left = (int)(end - mono_ms());
        if (left <= 0)
            break;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, left) <= 0)
            continue;
        char tmp[4096];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r <= 0) {
            if (got)
                *got = n;
            if (out && cap)
                out[n < cap ? n : cap - 1] = 0;
            return 1;
        }
        if (out && n + (size_t)r < cap) {
            memcpy(out + n, tmp, (size_t)r);
        }
        n += (size_t)r;
    }
    if (got)
        *got = n;
    if (out && cap)
        out[n < cap ? n : cap - 1] = 0;
    return 0;
}

/* Reads one HTTP/1.1 response (headers + Content-Length body). buf keeps *have bytes
 * across calls (pipelined responses arrive together); returns the first response's length
 * (NUL-terminated in place: callers look at it, then h1_consume it). */
static int read_http1_response(int fd, char *buf, size_t cap, size_t *have, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    for (;;) {
        size_t n = *have;
        buf[n] = 0;
        char *hend = strstr(buf, "\r\n\r\n");
        if (hend) {
            char save = hend[2];
            hend[2] = 0;
            char *cl = strcasestr(buf, "content-length:");
            int head_only = strstr(buf, " 100 Continue") != NULL;
            hend[2] = save;
            size_t want = (size_t)(hend + 4 - buf) + (cl && !head_only ? strtoul(cl + 15, NULL, 10) : 0);
            if (n >= want)
                return (int)want;
        }
        int left = (int)(end - mono_ms());
        if (left <= 0 || n + 1 >= cap)
            return -1;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, left) <= 0)
            continue;
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0)
            return -1;
        *have += (size_t)r;
    }
}

static void h1_consume(char *buf, size_t *have, int n)
{
    memmove(buf, buf + n, *have - (size_t)n);
    *have -= (size_t)n;
    buf[*have] = 0;
}

/* ---- nghttp2 test client --------------------------------------------------------------- */

typedef struct {
    int32_t id;
    int http_status;
    int grpc_status; /* -1: none yet */
    char grpc_message[512];
    char ctype[128];
    int headers_frames, data_frames;
    int closed;
    uint32_t close_code;
    uint8_t *body;
    size_t body_len, body_cap;
    const uint8_t *req;
    size_t req_len, req_off;
    int req_end;
} call_t;

typedef struct {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    nghttp2_session *s;
    int goaway;
    uint32_t goaway_code;
    int ping_acks;
    int eof;
    call_t *calls[64];
    int ncalls;
    char alpn[32];
} cli_t;

static call_t *cli_find(cli_t *c, int32_t id)
{
    for (int i = 0; i < c->ncalls; i++)
        if (c->calls[i]->id == id)
            return c->calls[i];
    return NULL;
}

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                       const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)s, (void)flags;
    call_t *call = cli_find(ud, f->hd.stream_id);
    if (!call)
        return 0;
    if (nl == 7 && !memcmp(name, ":status", 7))
        call->http_status = atoi((const char *)value);
    else if (nl == 11 && !memcmp(name, "grpc-status", 11))
        call->grpc_status = atoi((const char *)value);
    else if (nl == 12 && !memcmp(name, "grpc-message", 12))
        snprintf(call->grpc_message, sizeof call->grpc_message, "%.*s", (int)vl, value);
    else if (nl == 12 && !memcmp(name, "content-type", 12))
        snprintf(call->ctype, sizeof call->ctype, "%.*s", (int)vl, value);
    return 0;
}

static int c_on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    cli_t *c = ud;
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK))
        c->ping_acks++;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = 1;
        c->goaway_code = f->goaway.error_code;
    }
    call_t *call = cli_find(c, f->hd.stream_id);
    if (!call)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS)
        call->headers_frames++;
    if (f->hd.type == NGHTTP2_DATA)
        call->data_frames++;
    return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
    (void)s, (void)flags;
    call_t *call = cli_find(ud, id);
    if (!call)
        return 0;
    if (call->body_len + len + 1 > call->body_cap) {
        call->body_cap = (call->body_len + len + 1) * 2;
        call->body = realloc(call->body, call->body_cap);
    }
    memcpy(call->body + call->body_len, data, len);
    call->body_len += len;
    return 0;
}

static int c_on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    (void)s;
    call_t *call = cli_find(ud, id);
    if (call) {
        call->closed = 1;
        call->close_code = code;
    }
    return 0;
}

static ssize_t c_read_req(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                          nghttp2_data_source *src, void *ud)
{
    (void)s, (void)id, (void)ud;
    call_t *call = src->ptr;
    size_t n = call->req_len - call->req_off;
    if (n > length)
        n = length;
    if (n)
        memcpy(buf, call->req + call->req_off, n);
    call->req_off += n;
    if (call->req_off == call->req_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!call->req_end)
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

static void cli_io_write(cli_t *c, const uint8_t *p, size_t n)
{
    if (c->ssl) {
        while (n) {
            int r = SSL_write(c->ssl, p, (int)n);
            if (r <= 0) {
                c->eof = 1;
                return;
            }
            p += r;
            n -= (size_t)r;
        }
        return;
    }
    send_all(c->fd, p, n);
}

/* one pump: send everything nghttp2 has, then wait up to timeout_ms for input */
static void cli_pump(cli_t *c, int timeout_ms)
{
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(c->s, &d);
        if (n <= 0)
            break;
        cli_io_write(c, d, (size_t)n);
    }
    if (c->eof)
        return;
    uint8_t buf[65536];
    ssize_t r;
    if (!(c->ssl && SSL_pending(c->ssl))) {
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        if (poll(&pf, 1, timeout_ms) <= 0)
            return;
    }
    if (c->ssl) {
        r = SSL_read(c->ssl, buf, sizeof buf);
    } else {
        r = recv(c->fd, buf, sizeof buf, 0);
    }
    if (r <= 0) {
        c->eof = 1;
        return;
    }
    if (nghttp2_session_mem_recv(c->s, buf, (size_t)r) < 0)
        c->eof = 1;
}

static cli_t *cli_new_fd(int fd, SSL_CTX *ctx, SSL *ssl)
{
    cli_t *c = calloc(1, sizeof *c);
    c->fd = fd;
    c->ctx = ctx;
    c->ssl = ssl;
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
    nghttp2_session_client_new(&c->s, cb, c);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, NULL, 0);
    return c;
}

static cli_t *cli_connect(int port) { return cli_new_fd(tcp_connect(port), NULL, NULL); }

static SSL_CTX *tls_client_ctx(const char *cafile, const char *alpn_wire, size_t alpn_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    cr_assert_not_null(ctx);
    if (alpn_wire)
        SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)alpn_wire, (unsigned)alpn_len);
    cr_assert_eq(SSL_CTX_load_verify_locations(ctx, cafile, NULL), 1, "cannot load %s", cafile);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

/* TLS connect verifying the server certificate for IP 127.0.0.1 (needs the IP SAN). */
static SSL *tls_connect(SSL_CTX *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
    int r = SSL_connect(ssl);
    char es[256] = "";
    ERR_error_string_n(ERR_peek_last_error(), es, sizeof es);
    cr_assert_eq(r, 1, "TLS handshake failed: %s verify=%ld", es, SSL_get_verify_result(ssl));
    return ssl;
}

static cli_t *cli_connect_tls(int port, const char *cafile)
{
    SSL_CTX *ctx = tls_client_ctx(cafile, "\x02h2", 3);
    int fd = tcp_connect(port);
    SSL *ssl = tls_connect(ctx, fd);
    cli_t *c = cli_new_fd(fd, ctx, ssl);
    const unsigned char *a;
    unsigned al;
    SSL_get0_alpn_selected(ssl, &a, &al);
    snprintf(c->alpn, sizeof c->alpn, "%.*s", (int)al, a ? (const char *)a : "");
    return c;
}

static void cli_free(cli_t *c)
{
    for (int i = 0; i < c->ncalls; i++) {
        free(c->calls[i]->body);
        free(c->calls[i]);
    }
    nghttp2_session_del(c->s);
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->ctx)
        SSL_CTX_free(c->ctx);
    close(c->fd);
    free(c);
}

static call_t *cli_start_ex(cli_t *c, const char *method, const char *path, const char *ctype,
                            const nghttp2_nv *extra, size_t nextra, const uint8_t *body, size_t len, int end);

/* Starts a call; body is sent as given (already framed) in DATA frames. */
static call_t *cli_start(cli_t *c, const char *path, const char *ctype, const nghttp2_nv *extra, size_t nextra,
                         const uint8_t *body, size_t len, int end)
{
    return cli_start_ex(c, "POST", path, ctype, extra, nextra, body, len, end);
}

static call_t *cli_start_ex(cli_t *c, const char *method, const char *path, const char *ctype,
                            const nghttp2_nv *extra, size_t nextra, const uint8_t *body, size_t len, int end)
{
    call_t *call = calloc(1, sizeof *call);
    call->grpc_status = -1;
    call->req = body;
    call->req_len = len;
    call->req_end = end;
    nghttp2_nv nva[16] = {
        {(uint8_t *)":method", (uint8_t *)method, 7, strlen(method), 0},
        {(uint8_t *)":scheme", (uint8_t *)(c->ssl ? "https" : "http"), 7, c->ssl ? 5 : 4, 0},
        {(uint8_t *)":authority", (uint8_t *)"127.0.0.1", 10, 9, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0},
        {(uint8_t *)"content-type", (uint8_t *)(ctype ? ctype : ""), 12, ctype ? strlen(ctype) : 0, 0},
    };
    size_t n = ctype ? 6 : 5;
    for (size_t i = 0; i < nextra && n < 16; i++)
        nva[n++] = extra[i];
    nghttp2_data_provider dp = {.source.ptr = call, .read_callback = c_read_req};
    call->id = nghttp2_submit_request(c->s, NULL, nva, n, (len || end) ? &dp : NULL, NULL);
    cr_assert_gt(call->id, 0);
    cr_assert_lt(c->ncalls, 64, "test client: too many calls on one connection");
    c->calls[c->ncalls++] = call;
    return call;
}

static int cli_wait_closed(cli_t *c, call_t *call, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    while (!call->closed && !c->eof && mono_ms() < end)
        cli_pump(c, 20);
    return call->closed;
}

static uint8_t *frame_msg(const void *msg, size_t len, uint8_t flag, size_t *out_len)
{
    uint8_t *b = malloc(len + 5);
    b[0] = flag;
    b[1] = (uint8_t)(len >> 24);
    b[2] = (uint8_t)(len >> 16);
    b[3] = (uint8_t)(len >> 8);
    b[4] = (uint8_t)len;
    memcpy(b + 5, msg, len);
    *out_len = len + 5;
    return b;
}

/* Splits a gRPC response body into messages; returns the count, fills msgs/lens (<= max). */
static int split_msgs(const uint8_t *b, size_t n, const uint8_t **msgs, size_t *lens, int max)
{
    int k = 0;
    size_t off = 0;
    while (off + 5 <= n) {
        size_t l = ((size_t)b[off + 1] << 24) | ((size_t)b[off + 2] << 16) | ((size_t)b[off + 3] << 8) | b[off + 4];
        cr_assert_eq(b[off], 0, "compressed flag in response");
        cr_assert_leq(off + 5 + l, n, "response message truncated");
        if (k < max) {
            msgs[k] = b + off + 5;
            lens[k] = l;
        }
        k++;
        off += 5 + l;
    }
    cr_assert_eq(off, n, "trailing bytes in response body");
    return k;
}

static call_t *unary(cli_t *c, const char *path, const void *msg, size_t len)
{
    size_t bl;
    uint8_t *b = frame_msg(msg, len, 0, &bl);
    call_t *call = cli_start(c, path, "application/grpc", NULL, 0, b, bl, 1);
    cr_assert(cli_wait_closed(c, call, 5000), "call %s did not finish", path);
    free(b);
    call->req = NULL;
    return call;
}

static void assert_echo(call_t *call, const char *want)
{
    cr_assert_eq(call->http_status, 200);
    cr_assert_str_eq(call->ctype, "application/grpc");
    cr_assert_eq(call->grpc_status, 0, "grpc-status %d msg %s", call->grpc_status, call->grpc_message);
    const uint8_t *m[4];
    size_t l[4];
    cr_assert_eq(split_msgs(call->body, call->body_len, m, l, 4), 1);
    cr_assert_eq(l[0], strlen(want));
    cr_assert(memcmp(m[0], want, l[0]) == 0);
    cr_assert_eq(call->headers_frames, 2, "HEADERS + trailers");
}

/* ---- tests ----------------------------------------------------------------------------- */

Test(grpc_helpers, timeout_parse)
{
    cr_assert_eq(cairn_grpc_timeout_parse("4998230u"), 4999);
    cr_assert_eq(cairn_grpc_timeout_parse("5S"), 5000);
    cr_assert_eq(cairn_grpc_timeout_parse("1H"), 3600000);
    cr_assert_eq(cairn_grpc_timeout_parse("2M"), 120000);
    cr_assert_eq(cairn_grpc_timeout_parse("250m"), 250);
    cr_assert_eq(cairn_grpc_timeout_parse("1n"), 1);
    cr_assert_eq(cairn_grpc_timeout_parse("0n"), 0);
    cr_assert_eq(cairn_grpc_timeout_parse("99999999S"), 99999999000LL);
    cr_assert_eq(cairn_grpc_timeout_parse("123456789S"), -1); /* > 8 digits */
    cr_assert_eq(cairn_grpc_timeout_parse("S"), -1);
    cr_assert_eq(cairn_grpc_timeout_parse("12x"), -1);
    cr_assert_eq(cairn_grpc_timeout_parse("-1S"), -1);
    cr_assert_eq(cairn_grpc_timeout_parse(""), -1);
}

Test(grpc_helpers, percent_encode)
{
    char out[64];
    cairn_grpc_percent_encode("etcdserver: key not found", out, sizeof out);
    cr_assert_str_eq(out, "etcdserver: key not found");
    cairn_grpc_percent_encode("a%b\n\xc3\xa4~\x7f", out, sizeof out);
    cr_assert_str_eq(out, "a%25b%0A%C3%A4~%7F");
    /* never splits an escape when truncating */
    cairn_grpc_percent_encode("ab%", out, 5);
    cr_assert_str_eq(out, "ab");
    cairn_grpc_percent_encode(NULL, out, sizeof out);
    cr_assert_str_eq(out, "");
}

Test(h2srv, bad_config_is_an_error_not_a_crash)
{
    const char *urls[] = {"ftp://127.0.0.1:1"};
    cairn_h2srv_opts_t o = {.listen_urls = urls, .n_listen = 1};
    cairn_h2srv_handlers_t h = {0};
    int err = 0;
    char eb[256];
    cr_assert_null(cairn_h2srv_new(&o, &h, &err, eb, sizeof eb));
    cr_assert_eq(err, CAIRN_ECONFIG);
    urls[0] = "https://127.0.0.1:0"; /* TLS without cert or auto-tls */
    cr_assert_null(cairn_h2srv_new(&o, &h, &err, eb, sizeof eb));
    cr_assert_eq(err, CAIRN_ECONFIG);
    cr_assert(strstr(eb, "auto-tls") != NULL, "%s", eb);
    cairn_h2srv_t *nul = NULL;
    cairn_h2srv_destroy(&nul);
    cairn_h2srv_destroy(NULL);
}

Test(h2srv, unary_echo_h2c, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    cli_t *c = cli_connect(fx->port);
    nghttp2_nv md[] = {
        {(uint8_t *)"grpc-timeout", (uint8_t *)"4998230u", 12, 8, 0},
        {(uint8_t *)"token", (uint8_t *)"tok123", 5, 6, 0},
        {(uint8_t *)"hasleader", (uint8_t *)"true", 9, 4, 0},
        {(uint8_t *)"client-api-version", (uint8_t *)"3.4", 18, 3, 0},
    };
    size_t bl;
    uint8_t *b = frame_msg("hello", 5, 0, &bl);
    call_t *call = cli_start(c, "/test.Echo/Unary", "application/grpc", md, 4, b, bl, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    assert_echo(call, "hello");
    cr_assert_eq(call->close_code, 0);
    pthread_mutex_lock(&fx->mu);
    cr_assert_str_eq(fx->last_path, "/test.Echo/Unary");
    cr_assert_str_eq(fx->last_token, "tok123");
    cr_assert_str_eq(fx->last_authority, "127.0.0.1");
    cr_assert_eq(fx->last_has_leader, 1);
    cr_assert_eq(fx->last_timeout, 4999);
    cr_assert_eq(fx->last_tls, 0);
    pthread_mutex_unlock(&fx->mu);
    /* what the server advertised: 1 MiB stream window, >= 4 MiB connection window,
     * 1000 concurrent streams */
    cr_assert_eq(nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE), 1u << 20);
    cr_assert_eq(nghttp2_session_get_remote_settings(c->s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 1000u);
    cr_assert_geq(nghttp2_session_get_remote_window_size(c->s), (4 << 20) - 64);
    /* keepalive PINGs (etcdctl sends one every 10 s) are answered, many times over */
    for (int i = 0; i < 50; i++)
        nghttp2_submit_ping(c->s, NGHTTP2_FLAG_NONE, NULL);
    int64_t pend = mono_ms() + 3000;
    while (c->ping_acks < 50 && !c->eof && mono_ms() < pend)
        cli_pump(c, 10);
    cr_assert_eq(c->ping_acks, 50);
    cr_assert(!c->goaway, "no GOAWAY too_many_pings");

    /* several calls multiplexed on the connection, one answered asynchronously; an
     * empty message and a 1 MiB one (spans many DATA frames and window updates) */
    call_t *later = unary(c, "/test.Echo/Later", "x", 1);
    assert_echo(later, "later");
    call_t *empty = unary(c, "/test.Echo/Unary", "", 0);
    assert_echo(empty, "");
    size_t big = 1 << 20;
    char *blob = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        blob[i] = (char)('a' + i % 26);
    blob[big] = 0;
    call_t *bc = unary(c, "/test.Echo/Unary", blob, big);
    assert_echo(bc, blob);
    free(blob);
    free(b);
    /* grpc+proto content type is gRPC too; metadata absent -> defaults */
    b = frame_msg("p", 1, 0, &bl);
    call = cli_start(c, "/test.Echo/Unary", "application/grpc+proto", NULL, 0, b, bl, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    assert_echo(call, "p");
    pthread_mutex_lock(&fx->mu);
    cr_assert_eq(fx->last_timeout, -1);
    cr_assert_str_eq(fx->last_token, "(null)");
    cr_assert_eq(fx->last_has_leader, 0);
    pthread_mutex_unlock(&fx->mu);
    free(b);
    /* every known call got exactly one on_close */
    int64_t end = mono_ms() + 2000;
    while (atomic_load(&fx->n_close) < 5 && mono_ms() < end)
        usleep(1000);
    cr_assert_eq(atomic_load(&fx->n_close), 5);
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, error_is_trailers_only_and_percent_encoded, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    cli_t *c = cli_connect(fx->port);
    call_t *call = unary(c, "/test.Echo/Fail", "q", 1);
    cr_assert_eq(call->http_status, 200);
    cr_assert_eq(call->headers_frames, 1, "Trailers-Only is one HEADERS frame");
    cr_assert_eq(call->data_frames, 0);
    cr_assert_eq(call->body_len, 0);
    cr_assert_str_eq(call->ctype, "application/grpc");
    cr_assert_eq(call->grpc_status, 5);
    cr_assert_str_eq(call->grpc_message, "not found: %C3%A4%25%0A");

    /* unknown paths reach the handler, which answers UNIMPLEMENTED */
    call = unary(c, "/no.Such/Method", "", 0);
    cr_assert_eq(call->grpc_status, 12);
    cr_assert_str_eq(call->grpc_message, "unknown method /no.Such/Method");
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, compressed_flag_is_unimplemented, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    cli_t *c = cli_connect(fx->port);
    size_t bl;
    uint8_t *b = frame_msg("zzzz", 4, 1, &bl);
    nghttp2_nv enc[] = {{(uint8_t *)"grpc-encoding", (uint8_t *)"gzip", 13, 4, 0}};
    call_t *call = cli_start(c, "/test.Echo/Unary", "application/grpc", enc, 1, b, bl, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->grpc_status, 12);
    cr_assert_str_eq(call->grpc_message, "grpc: Decompressor is not installed for grpc-encoding \"gzip\"");
    cr_assert_eq(atomic_load(&fx->n_message), 0, "the service never sees it");
    free(b);
    /* flag 2 is not a thing */
    b = frame_msg("zzzz", 4, 2, &bl);
    call = cli_start(c, "/test.Echo/Unary", "application/grpc", NULL, 0, b, bl, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->grpc_status, 13);
    free(b);
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, oversized_message_is_resource_exhausted, .timeout = 30)
{
    fixture_t *fx = fx_start(FX_SMALL_MAX); /* max_request_bytes 1024: grpc max 525312 */
    cli_t *c = cli_connect(fx->port);
    /* prefix announces 600000 bytes; we send only 64 KiB and never END_STREAM: the server
     * must answer from the prefix alone and reset the upload */
    size_t bl = 5 + 65536;
    uint8_t *b = calloc(1, bl);
    b[1] = 0x00, b[2] = 0x09, b[3] = 0x27, b[4] = 0xC0; /* 600000 */
    call_t *call = cli_start(c, "/test.Echo/Unary", "application/grpc", NULL, 0, b, bl, 0);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->grpc_status, 8);
    cr_assert_str_eq(call->grpc_message, "grpc: received message larger than max (600000 vs. 525312)");
    cr_assert_eq(call->headers_frames, 1);
    free(b);
    /* over max_request_bytes but under the gRPC limit: passed through (etcd answers
     * "request is too large" in the service layer) */
    char *mid = calloc(1, 4001);
    memset(mid, 'm', 4000);
    call = unary(c, "/test.Echo/Unary", mid, 4000);
    assert_echo(call, mid);
    free(mid);
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, truncated_message_is_internal, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    cli_t *c = cli_connect(fx->port);
    uint8_t b[25] = {0, 0, 0, 0, 100};
    memset(b + 5, 'x', 20);
    call_t *call = cli_start(c, "/test.Echo/Unary", "application/grpc", NULL, 0, b, sizeof b, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->grpc_status, 13);
    cr_assert_str_eq(call->grpc_message, "grpc: truncated message");
    /* half a prefix */
    call = cli_start(c, "/test.Echo/Unary", "application/grpc", NULL, 0, b, 3, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->grpc_status, 13);
    /* two messages on a unary call */
    uint8_t two[12] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
    call = cli_start(c, "/test.Echo/Unary", "application/grpc", NULL, 0, two, sizeof two, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->grpc_status, 13);
    /* no message at all */
    call = cli_start(c, "/test.Echo/Unary", "application/grpc", NULL, 0, NULL, 0, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->grpc_status, 13);
    cr_assert_eq(atomic_load(&fx->n_message), 0);
    /* and the connection is still fine */
    assert_echo(unary(c, "/test.Echo/Unary", "ok", 2), "ok");
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, non_grpc_content_type_is_415, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    cli_t *c = cli_connect(fx->port);
    const char *js = "{}";
    call_t *call = cli_start(c, "/test.Echo/Unary", "application/json", NULL, 0, (const uint8_t *)js, 2, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->http_status, 415);
    cr_assert_eq(call->grpc_status, -1);
    call = cli_start(c, "/test.Echo/Unary", "application/grpcx", NULL, 0, (const uint8_t *)js, 2, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->http_status, 415);
    cr_assert_eq(atomic_load(&fx->n_message), 0);

    /* plain HTTP over h2 (curl -k https://.../health negotiates h2): the HTTP handler */
    call = cli_start_ex(c, "GET", "/health", NULL, NULL, 0, NULL, 0, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->http_status, 200);
    cr_assert_str_eq(call->ctype, "application/json");
    cr_assert_eq(call->body_len, 17);
    cr_assert(!memcmp(call->body, "{\"health\":\"true\"}", 17));
    cr_assert_eq(call->grpc_status, -1);
    call = cli_start_ex(c, "POST", "/echo", "application/json", NULL, 0, (const uint8_t *)"{\"k\":1}", 7, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->http_status, 200);
    cr_assert(call->body_len == 7 && !memcmp(call->body, "{\"k\":1}", 7));
    call = cli_start_ex(c, "GET", "/nope", NULL, NULL, 0, NULL, 0, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->http_status, 404);
    /* GET on a gRPC method path is still not gRPC */
    call = cli_start_ex(c, "GET", "/test.Echo/Unary", "application/grpc", NULL, 0, NULL, 0, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->http_status, 405);
    cr_assert_eq(atomic_load(&fx->n_message), 0);
    /* and gRPC still works on the connection */
    assert_echo(unary(c, "/test.Echo/Unary", "still", 5), "still");
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, http_over_h2_async, .timeout = 30)
{
    fixture_t *fx = fx_start(FX_ASYNC_H1);
    cli_t *c = cli_connect(fx->port);
    nghttp2_nv auth[] = {{(uint8_t *)"authorization", (uint8_t *)"tkn2", 13, 4, 0}};
    call_t *a = cli_start_ex(c, "GET", "/version", NULL, auth, 1, NULL, 0, 1);
    call_t *b = cli_start_ex(c, "GET", "/health", NULL, NULL, 0, NULL, 0, 1);
    cr_assert(cli_wait_closed(c, a, 5000));
    cr_assert(cli_wait_closed(c, b, 5000));
    cr_assert_eq(a->http_status, 200);
    cr_assert(a->body_len == 8 && !memcmp(a->body, "async ok", 8));
    cr_assert_eq(b->http_status, 200);
    cr_assert_eq(atomic_load(&fx->n_close), 0, "answered requests get no on_close");
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, http1_on_the_same_port, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    int fd = tcp_connect(fx->port);
    char buf[8192];
    size_t have = 0;
    const char *req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    send_all(fd, req, strlen(req));
    int n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0);
    cr_assert(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", buf);
    cr_assert(strstr(buf, "Content-Type: application/json\r\n"));
    cr_assert(strstr(buf, "\r\n\r\n{\"health\":\"true\"}"));
    h1_consume(buf, &have, n);
    /* keep-alive: two pipelined requests in one write, the second with a body and
     * Connection: close */
    const char *two = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde";
    send_all(fd, two, strlen(two));
    n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0);
    cr_assert(strncmp(buf, "HTTP/1.1 404 Not Found\r\n", 24) == 0, "%s", buf);
    h1_consume(buf, &have, n);
    n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0);
    cr_assert(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", buf);
    cr_assert(strstr(buf, "Connection: close\r\n"));
    cr_assert(strstr(buf, "\r\n\r\nabcde"));
    cr_assert(read_until_close(fd, NULL, 0, NULL, 3000), "server closes after Connection: close");
    close(fd);

    /* HTTP/1.0: closes by default; HEAD has no body; garbage is a 400 and a close */
    fd = tcp_connect(fx->port);
    send_all(fd, "HEAD /health HTTP/1.0\r\n\r\n", 25);
    size_t got;
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000));
    cr_assert(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", buf);
    cr_assert(strstr(buf, "Content-Length: 17\r\n"));
    cr_assert(strstr(buf, "\r\n\r\n") + 4 == buf + got, "HEAD response has no body");
    close(fd);
    fd = tcp_connect(fx->port);
    send_all(fd, "\x01\x02garbage\r\n\r\n", 13);
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000));
    cr_assert(strncmp(buf, "HTTP/1.1 400", 12) == 0, "%s", buf);
    close(fd);
    /* Expect: 100-continue gets the interim response before the body is sent */
    fd = tcp_connect(fx->port);
    const char *ex = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
    send_all(fd, ex, strlen(ex));
    have = 0;
    n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert(strncmp(buf, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0, "%s", buf);
    h1_consume(buf, &have, n);
    send_all(fd, "xyz", 3);
    n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", buf);
    cr_assert(strstr(buf, "\r\n\r\nxyz"));
    close(fd);
    /* a client that half-closes after its requests (printf | nc) still gets the answers */
    fd = tcp_connect(fx->port);
    const char *hc = "GET /health HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
    send_all(fd, hc, strlen(hc));
    shutdown(fd, SHUT_WR);
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000));
    cr_assert(strstr(buf, "{\"health\":\"true\"}"), "%s", buf);
    cr_assert(strstr(buf, "\r\n\r\nhi"), "%s", buf);
    close(fd);
    /* chunked uploads are refused clearly */
    fd = tcp_connect(fx->port);
    const char *ch = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    send_all(fd, ch, strlen(ch));
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000));
    cr_assert(strncmp(buf, "HTTP/1.1 501", 12) == 0, "%s", buf);
    close(fd);
    fx_stop(fx);
}

/* Issue 11 defect 3: a half-sent HTTP/1.1 request head is closed after the header timeout
 * (it used to hold its descriptor forever), while a keep-alive connection idle between whole
 * requests stays; a connection past max_conns is closed at once. */
Test(h2srv, http1_header_timeout_and_connection_limit, .timeout = 30)
{
    fixture_t *fx = fx_start(FX_LIMITS);
    char buf[8192];
    size_t have = 0;
    const char *req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    int keep = tcp_connect(fx->port);
    send_all(keep, req, strlen(req));
    int n = read_http1_response(keep, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0);
    h1_consume(buf, &have, n);

    int half = tcp_connect(fx->port);
    const char *part = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    send_all(half, part, strlen(part));
    int64_t t0 = mono_ms();
    cr_assert(read_until_close(half, NULL, 0, NULL, 4000), "a half-sent head is closed");
    int64_t took = mono_ms() - t0;
    cr_assert(took >= 900 && took <= 3500, "closed after %" PRId64 " ms (timeout 1000, swept each second)", took);
    close(half);

    /* the idle keep-alive connection was not reaped with it */
    send_all(keep, req, strlen(req));
    n = read_http1_response(keep, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0);
    cr_assert(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", buf);
    h1_consume(buf, &have, n);

    /* max_conns 3: keep + two more are held, the fourth is closed before it sends a byte */
    int a = tcp_connect(fx->port), b = tcp_connect(fx->port);
    for (int64_t end = mono_ms() + 2000; atomic_load(&fx->conns) < 3 && mono_ms() < end;)
        usleep(5000);
    int over = tcp_connect(fx->port);
    size_t got = 1;
    t0 = mono_ms();
    cr_assert(read_until_close(over, NULL, 0, &got, 800), "the connection past the limit is closed");
    cr_assert_eq(got, 0);
    cr_assert_lt(mono_ms() - t0, 800);
    close(over);
    close(a);
    close(b);
    close(keep);
    fx_stop(fx);
}

Test(h2srv, http1_async_reply, .timeout = 30)
{
    fixture_t *fx = fx_start(FX_ASYNC_H1);
    int fd = tcp_connect(fx->port);
    const char *req = "GET /health HTTP/1.1\r\nHost: h\r\n\r\n"
                      "GET /version HTTP/1.1\r\nHost: h\r\nAuthorization: tkn\r\n\r\n";
    send_all(fd, req, strlen(req));
    char buf[4096];
    size_t have = 0;
    int n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0);
    cr_assert(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", buf);
    cr_assert(strstr(buf, "\r\n\r\nasync ok"));
    h1_consume(buf, &have, n);
    n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0, "pipelined request answered after the first");
    pthread_mutex_lock(&fx->mu);
    cr_assert_str_eq(fx->last_path, "/version");
    cr_assert_str_eq(fx->last_token, "tkn");
    pthread_mutex_unlock(&fx->mu);
    close(fd);
    /* half-close right after two requests: both asynchronous answers still arrive */
    fd = tcp_connect(fx->port);
    send_all(fd, req, strlen(req));
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000));
    char *first = strstr(buf, "async ok");
    cr_assert(first && strstr(first + 8, "async ok"), "%s", buf);
    close(fd);
    fx_stop(fx);
}

/* Streamed HTTP answers (the JSON gateway's watch, keepalive, observe): chunked as written,
 * ended with the zero chunk and the connection kept for the next request; on_close exactly
 * once per stream, whether the service ended it or the client left (close or half-close). */
Test(h2srv, http1_stream, .timeout = 30)
{
    fixture_t *fx = fx_start(FX_ASYNC_H1);
    int fd = tcp_connect(fx->port);
    const char *req = "POST /stream-end HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
                      "GET /after HTTP/1.1\r\nHost: h\r\n\r\n";
    send_all(fd, req, strlen(req));
    static const char want[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "2\r\na\n\r\n3\r\nbb\n\r\n0\r\n\r\n";
    char buf[8192];
    size_t have = 0;
    int64_t end = mono_ms() + 3000;
    while (mono_ms() < end && (have < sizeof want - 1 || !strstr(buf, "async ok"))) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = 0;
    }
    cr_assert(have >= sizeof want - 1 && memcmp(buf, want, sizeof want - 1) == 0, "got: %s", buf);
    cr_assert(strstr(buf + sizeof want - 1, "HTTP/1.1 200 OK") && strstr(buf, "async ok"),
              "the next request is served on the same connection: %s", buf);
    cr_assert_eq(atomic_load(&fx->stream_end_rc), 0);
    int64_t until = mono_ms() + 2000;
    while (atomic_load(&fx->n_close) < 1 && mono_ms() < until)
        usleep(10000);
    cr_assert_eq(atomic_load(&fx->n_close), 1, "on_close once for the ended stream, none for the reply");

    /* nothing sent before the end: a whole answer with Content-Length */
    const char *req2 = "POST /stream-empty HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
    send_all(fd, req2, strlen(req2));
    have = 0;
    int n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0);
    cr_assert(strncmp(buf, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                      (size_t)n) == 0, "%s", buf);
    /* an error before any message: its status on the headers, then a chunk and the end */
    const char *req3 = "POST /stream-error HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    send_all(fd, req3, strlen(req3));
    size_t got = 0;
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000), "Connection: close is honoured after a stream");
    cr_assert_str_eq(buf, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                          "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n7\r\n{\"e\":1}\r\n0\r\n\r\n");
    close(fd);
    until = mono_ms() + 2000;
    while (atomic_load(&fx->n_close) < 3 && mono_ms() < until)
        usleep(10000);
    cr_assert_eq(atomic_load(&fx->n_close), 3);

    /* a stream left open: the client closing is its end */
    fd = tcp_connect(fx->port);
    const char *req4 = "POST /stream-open HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
    send_all(fd, req4, strlen(req4));
    have = 0;
    end = mono_ms() + 3000;
    while (mono_ms() < end && !strstr(buf, "bb\n")) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = 0;
    }
    cr_assert(strstr(buf, "3\r\nbb\n\r\n") && !strstr(buf, "0\r\n\r\n"), "open stream: %s", buf);
    close(fd);
    until = mono_ms() + 2000;
    while (atomic_load(&fx->n_close) < 4 && mono_ms() < until)
        usleep(10000);
    cr_assert_eq(atomic_load(&fx->n_close), 4, "on_close when the client closes an open stream");

    /* ... or half-closing: Go's server cancels such a request; the connection is closed */
    fd = tcp_connect(fx->port);
    send_all(fd, req4, strlen(req4));
    usleep(100000);
    shutdown(fd, SHUT_WR);
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000), "a half-closed stream's connection closes");
    cr_assert(strstr(buf, "bb\n"), "%s", buf);
    close(fd);
    until = mono_ms() + 2000;
    while (atomic_load(&fx->n_close) < 5 && mono_ms() < until)
        usleep(10000);
    cr_assert_eq(atomic_load(&fx->n_close), 5);
    fx_stop(fx);
}

/* The chunk reader: sizes in hex with extensions, bare LF, the last chunk's trailers, and
 * what it refuses. */
Test(h2srv, http1_chunk_reader)
{
    size_t off, n;
    int last;
    const char *a = "1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\nrest";
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)a, strlen(a), 1024, &off, &n, &last), (long)strlen(a) - 4);
    cr_assert(n == 26 && memcmp(a + off, "abcdefghijklmnopqrstuvwxyz", 26) == 0 && !last);
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"3\nabc\n", strlen("3\nabc\n"), 1024, &off, &n, &last), 6);
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"3\r\nab", strlen("3\r\nab"), 1024, &off, &n, &last), 0, "needs more");
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"3\r\nabc", strlen("3\r\nabc"), 1024, &off, &n, &last), 0, "needs its CRLF");
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"0\r\nX-T: 1\r\n\r\nnext", strlen("0\r\nX-T: 1\r\n\r\nnext"), 1024, &off, &n, &last), 13);
    cr_assert(last && n == 0);
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"0\r\n", strlen("0\r\n"), 1024, &off, &n, &last), 0, "the blank line");
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"x\r\n", strlen("x\r\n"), 1024, &off, &n, &last), -1);
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"3\r\nabcX", strlen("3\r\nabcX"), 1024, &off, &n, &last), -1, "no CRLF after the data");
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"401\r\n", strlen("401\r\n"), 1024, &off, &n, &last), -1, "over the limit");
    cr_assert_eq(cairn_h1_chunk((const uint8_t *)"fffffffffffffffffff\r\n", strlen("fffffffffffffffffff\r\n"), 1024, &off, &n, &last), -1);
    cairn_h1_req_t *req = malloc(sizeof *req);
    const char *both = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
    cr_assert_eq(cairn_h1_parse((const uint8_t *)both, strlen(both), 1 << 20, req), -1);
    cr_assert_eq(req->err_status, 400, "both framings: ambiguous");
    const char *gz = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
    cr_assert_eq(cairn_h1_parse((const uint8_t *)gz, strlen(gz), 1 << 20, req), -1);
    cr_assert_eq(req->err_status, 501);
    const char *ok = "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\n";
    cr_assert_eq(cairn_h1_parse((const uint8_t *)ok, strlen(ok), 1 << 20, req), (long)strlen(ok) - 3);
    cr_assert(req->chunked && req->content_length == 0);
    free(req);
}

/* A chunked request body reaches on_http1_body chunk by chunk; answered after its end, the
 * connection serves the next request; answered before, it is closed after the answer. */
Test(h2srv, http1_chunked_body, .timeout = 30)
{
    fixture_t *fx = fx_start(FX_ASYNC_H1);
    int fd = tcp_connect(fx->port);
    const char *req = "POST /body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "3\r\nabc\r\n";
    send_all(fd, req, strlen(req));
    usleep(100000);
    const char *rest = "2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n";
    send_all(fd, rest, strlen(rest));
    char buf[4096];
    size_t have = 0;
    int n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0);
    cr_assert(strstr(buf, "async ok"), "%s", buf);
    h1_consume(buf, &have, n);
    n = read_http1_response(fd, buf, sizeof buf, &have, 3000);
    cr_assert_gt(n, 0, "the request after the chunked body is served");
    pthread_mutex_lock(&fx->mu);
    cr_assert_eq(fx->body_got_len, 5);
    cr_assert(memcmp(fx->body_got, "abcde", 5) == 0);
    pthread_mutex_unlock(&fx->mu);
    cr_assert_eq(atomic_load(&fx->body_ends), 1);
    close(fd);
    /* answered at once (any other path), its body still coming: closed after the answer */
    fd = tcp_connect(fx->port);
    const char *early = "POST /other HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    send_all(fd, early, strlen(early));
    size_t got = 0;
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000), "closed: the rest of the body is not read");
    cr_assert(strstr(buf, "async ok") && strstr(buf, "Connection: close"), "%s", buf);
    close(fd);
    /* a malformed chunk closes the connection */
    fd = tcp_connect(fx->port);
    const char *bad = "POST /body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    send_all(fd, bad, strlen(bad));
    cr_assert(read_until_close(fd, buf, sizeof buf, &got, 3000));
    close(fd);
    fx_stop(fx);
}

static void check_sans(const char *certfile)
{
    FILE *f = fopen(certfile, "r");
    cr_assert_not_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(x);
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    cr_assert_not_null(gens, "certificate has no SAN extension");
    int ip4 = 0, ip6 = 0, localhost = 0, host = 0;
    char hn[256] = "";
    gethostname(hn, sizeof hn - 1);
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_IPADD) {
            const unsigned char *d = ASN1_STRING_get0_data(g->d.iPAddress);
            int l = ASN1_STRING_length(g->d.iPAddress);
            static const unsigned char lo4[4] = {127, 0, 0, 1};
            static const unsigned char lo6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
            ip4 |= l == 4 && !memcmp(d, lo4, 4);
            ip6 |= l == 16 && !memcmp(d, lo6, 16);
        } else if (g->type == GEN_DNS) {
            const char *d = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
            localhost |= !strcmp(d, "localhost");
            host |= hn[0] && !strcmp(d, hn);
        }
    }
    GENERAL_NAMES_free(gens);
    cr_assert(ip4 && ip6 && localhost, "SANs: ip4=%d ip6=%d localhost=%d", ip4, ip6, localhost);
    if (hn[0] && strcmp(hn, "localhost") != 0)
        cr_assert(host, "SAN for hostname %s", hn);
    cr_assert_eq(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    X509_free(x);
}

Test(h2srv, tls_auto_cert_alpn_h2, .timeout = 30)
{
    fixture_t *fx = fx_start(FX_TLS);
    char certfile[160], keyfile[160];
    snprintf(certfile, sizeof certfile, "%s/fixtures/client/cert.pem", fx->dir);
    snprintf(keyfile, sizeof keyfile, "%s/fixtures/client/key.pem", fx->dir);
    check_sans(certfile);
    struct stat st;
    cr_assert_eq(stat(keyfile, &st), 0);
    cr_assert_eq(st.st_mode & 077, 0, "key.pem must not be readable by others");

    cli_t *c = cli_connect_tls(fx->tls_port, certfile);
    cr_assert_str_eq(c->alpn, "h2");
    call_t *call = unary(c, "/test.Echo/Unary", "secure", 6);
    assert_echo(call, "secure");
    pthread_mutex_lock(&fx->mu);
    cr_assert_eq(fx->last_tls, 1);
    pthread_mutex_unlock(&fx->mu);
    /* a 1 MiB message through TLS (many records, partial writes) */
    size_t big = 1 << 20;
    char *blob = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        blob[i] = (char)('A' + i % 26);
    blob[big] = 0;
    assert_echo(unary(c, "/test.Echo/Unary", blob, big), blob);
    free(blob);
    cli_free(c);

    /* ALPN http/1.1 only -> HTTP/1.1 over TLS */
    SSL_CTX *ctx = tls_client_ctx(certfile, "\x08http/1.1", 9);
    int fd = tcp_connect(fx->tls_port);
    SSL *ssl = tls_connect(ctx, fd);
    const char *req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    SSL_write(ssl, req, (int)strlen(req));
    char buf[4096];
    size_t n = 0;
    int r;
    while ((r = SSL_read(ssl, buf + n, (int)(sizeof buf - 1 - n))) > 0)
        n += (size_t)r;
    buf[n] = 0;
    cr_assert(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", buf);
    cr_assert(strstr(buf, "{\"health\":\"true\"}"));
    SSL_free(ssl);
    close(fd);
    /* no ALPN at all, speaking h2 anyway: sniffed as HTTP/2 */
    SSL_CTX_free(ctx);
    ctx = tls_client_ctx(certfile, NULL, 0);
    fd = tcp_connect(fx->tls_port);
    ssl = tls_connect(ctx, fd);
    c = cli_new_fd(fd, ctx, ssl);
    assert_echo(unary(c, "/test.Echo/Unary", "noalpn", 6), "noalpn");
    cli_free(c);

    /* plaintext to the TLS port: the handshake fails, the server goes on */
    fd = tcp_connect(fx->tls_port);
    send_all(fd, "GET / HTTP/1.1\r\n\r\n", 18);
    cr_assert(read_until_close(fd, NULL, 0, NULL, 3000));
    close(fd);
    c = cli_connect(fx->port);
    assert_echo(unary(c, "/test.Echo/Unary", "plain", 5), "plain");
    cli_free(c);

    /* a restart reuses the certificate */
    FILE *f = fopen(certfile, "r");
    char before[4096] = "";
    cr_assert_gt(fread(before, 1, sizeof before - 1, f), 0);
    fclose(f);
    atomic_store(&fx->stop, 1);
    pthread_join(fx->th, NULL);
    const char *urls[] = {"https://127.0.0.1:0"};
    char tlsdir[128];
    snprintf(tlsdir, sizeof tlsdir, "%s/fixtures/client", fx->dir);
    cairn_h2srv_opts_t o = {.listen_urls = urls, .n_listen = 1, .auto_tls = 1, .auto_tls_dir = tlsdir};
    cairn_h2srv_handlers_t h = {.ud = fx};
    int err;
    char eb[256];
    cairn_h2srv_t *s2 = cairn_h2srv_new(&o, &h, &err, eb, sizeof eb);
    cr_assert_not_null(s2, "%s", eb);
    cairn_h2srv_destroy(&s2);
    cr_assert_null(s2);
    f = fopen(certfile, "r");
    char after[4096] = "";
    cr_assert_gt(fread(after, 1, sizeof after - 1, f), 0);
    fclose(f);
    cr_assert_str_eq(before, after, "certificate regenerated instead of reused");
    fx->stop = 1;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    cr_assert_eq(system(cmd), 0);
    free(fx);
}

/* --grpc-keepalive-interval/-timeout: a client that never answers the server's PING is cut
 * off; one whose HTTP/2 stack answers it (nghttp2 acks PINGs) keeps its connection. */
Test(h2srv, keepalive_ping_closes_a_silent_client, .timeout = 30)
{
    fixture_t *fx = fx_start(FX_KEEPALIVE);
    cli_t *good = cli_connect(fx->port);
    assert_echo(unary(good, "/test.Echo/Unary", "before", 6), "before");

    int fd = tcp_connect(fx->port);
    send_all(fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    static const uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0}; /* an empty SETTINGS frame */
    send_all(fd, settings, sizeof settings);
    int64_t t0 = mono_ms();
    /* it reads nothing, so it never acks: pinged after ~1 s of silence, closed ~1 s later;
     * meanwhile the good client's stack answers its own pings (pumped, never starved) */
    int closed = 0;
    while (!closed && mono_ms() - t0 < 8000) {
        cli_pump(good, 50);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 50) > 0) {
            char tmp[4096];
            closed = recv(fd, tmp, sizeof tmp, 0) <= 0; /* the server's PING arrives first: read on */
        }
    }
    int64_t took = mono_ms() - t0;
    cr_assert(closed, "a client that never answers the keepalive must be closed");
    cr_assert(took >= 1000, "closed after %lld ms: before any keepalive was due", (long long)took);
    close(fd);

    for (int i = 0; i < 30; i++) /* 3 more seconds of a live client answering pings */
        cli_pump(good, 100);
    cr_assert(!good->eof, "the client that answers pings must keep its connection");
    assert_echo(unary(good, "/test.Echo/Unary", "after", 5), "after");
    cli_free(good);
    fx_stop(fx);
}

Test(h2srv, garbage_after_preface_closes_only_that_connection, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    cli_t *good = cli_connect(fx->port);
    assert_echo(unary(good, "/test.Echo/Unary", "before", 6), "before");

    int fd = tcp_connect(fx->port);
    const char *pre = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    send_all(fd, pre, 24);
    char junk[200];
    for (int i = 0; i < 200; i++)
        junk[i] = (char)(i * 37 + 11);
    send_all(fd, junk, sizeof junk);
    cr_assert(read_until_close(fd, NULL, 0, NULL, 5000), "bad connection must be closed");
    close(fd);

    /* an old connection and a new one both still work */
    assert_echo(unary(good, "/test.Echo/Unary", "after", 5), "after");
    cli_t *c2 = cli_connect(fx->port);
    assert_echo(unary(c2, "/test.Echo/Unary", "second", 6), "second");
    cli_free(c2);
    cli_free(good);
    fx_stop(fx);
}

Test(h2srv, streaming_messages_both_ways, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    cli_t *c = cli_connect(fx->port);
    /* two messages in one DATA frame, then END_STREAM */
    size_t l1, l2;
    uint8_t *m1 = frame_msg("first", 5, 0, &l1), *m2 = frame_msg("second!", 7, 0, &l2);
    uint8_t both[64];
    memcpy(both, m1, l1);
    memcpy(both + l1, m2, l2);
    call_t *call = cli_start(c, "/test.Echo/Stream", "application/grpc", NULL, 0, both, l1 + l2, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(atomic_load(&fx->n_stream_msgs), 2, "two on_message callbacks");
    cr_assert_eq(atomic_load(&fx->n_half_close), 1);
    cr_assert_eq(call->grpc_status, 0);
    const uint8_t *m[4];
    size_t l[4];
    cr_assert_eq(split_msgs(call->body, call->body_len, m, l, 4), 2);
    cr_assert(l[0] == 5 && !memcmp(m[0], "first", 5));
    cr_assert(l[1] == 7 && !memcmp(m[1], "second!", 7));
    free(m1);
    free(m2);

    /* a message split across DATA frames, stream left open, then the client resets it:
     * the service hears on_close */
    int closes = atomic_load(&fx->n_close);
    uint8_t part[] = {0, 0, 0, 0, 6, 's', 'p'};
    call = cli_start(c, "/test.Echo/Stream", "application/grpc", NULL, 0, part, sizeof part, 0);
    for (int i = 0; i < 10; i++)
        cli_pump(c, 10);
    cr_assert_eq(atomic_load(&fx->n_stream_msgs), 2, "partial message not dispatched");
    nghttp2_data_provider dp = {.source.ptr = call, .read_callback = c_read_req};
    call->req = (const uint8_t *)"lit!";
    call->req_len = 4;
    call->req_off = 0;
    nghttp2_submit_data(c->s, NGHTTP2_FLAG_NONE, call->id, &dp);
    int64_t end = mono_ms() + 3000;
    while (atomic_load(&fx->n_stream_msgs) < 3 && mono_ms() < end)
        cli_pump(c, 10);
    cr_assert_eq(atomic_load(&fx->n_stream_msgs), 3);
    while (call->body_len < 11 && mono_ms() < end)
        cli_pump(c, 10);
    cr_assert_eq(call->body_len, 11);
    cr_assert(!memcmp(call->body + 5, "split!", 6));
    nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
    end = mono_ms() + 3000;
    while (atomic_load(&fx->n_close) < closes + 1 && mono_ms() < end)
        cli_pump(c, 10);
    cr_assert_eq(atomic_load(&fx->n_close), closes + 1);

    /* the connection drops with a call open: on_close for it too */
    closes = atomic_load(&fx->n_close);
    cli_t *c2 = cli_connect(fx->port);
    size_t ml;
    uint8_t *om = frame_msg("open", 4, 0, &ml);
    call_t *open_call = cli_start(c2, "/test.Echo/Stream", "application/grpc", NULL, 0, om, ml, 0);
    end = mono_ms() + 3000;
    while (open_call->body_len < 9 && mono_ms() < end)
        cli_pump(c2, 10);
    cr_assert_eq(open_call->body_len, 9);
    cli_free(c2);
    free(om);
    end = mono_ms() + 3000;
    while (atomic_load(&fx->n_close) < closes + 1 && mono_ms() < end)
        usleep(1000);
    cr_assert_eq(atomic_load(&fx->n_close), closes + 1);

    /* half-close with no message at all */
    call = cli_start(c, "/test.Echo/Stream", "application/grpc", NULL, 0, NULL, 0, 1);
    cr_assert(cli_wait_closed(c, call, 5000));
    cr_assert_eq(call->grpc_status, 0);
    cr_assert_eq(call->headers_frames, 1);
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, slow_reader_backpressure, .timeout = 60)
{
    fixture_t *fx = fx_start(0);
    cli_t *slow = cli_connect(fx->port);
    size_t bl;
    uint8_t *b = frame_msg("go", 2, 0, &bl);
    call_t *call = cli_start(slow, "/test.Echo/Big", "application/grpc", NULL, 0, b, bl, 0);
    for (int i = 0; i < 5; i++)
        cli_pump(slow, 10); /* send the request, then stop reading */
    int64_t end = mono_ms() + 3000;
    while (atomic_load(&fx->big_queued) == 0 && mono_ms() < end)
        usleep(1000);
    long q = atomic_load(&fx->big_queued);
    cr_assert_gt(q, 16 << 20, "most of the 32 MiB waits in the stream queue (%ld)", q);
    /* others are served meanwhile */
    cli_t *other = cli_connect(fx->port);
    assert_echo(unary(other, "/test.Echo/Unary", "meanwhile", 9), "meanwhile");
    cli_free(other);
    /* the slow reader eventually gets everything */
    end = mono_ms() + 30000;
    while (!call->closed && !slow->eof && mono_ms() < end)
        cli_pump(slow, 20);
    cr_assert(call->closed);
    cr_assert_eq(call->grpc_status, 0);
    cr_assert_eq(call->body_len, 32 * ((1 << 20) + 5));
    for (int i = 0; i < 32; i++)
        cr_assert_eq(call->body[(size_t)i * ((1 << 20) + 5) + 5], i);
    free(b);
    cli_free(slow);
    fx_stop(fx);
}

Test(h2srv, hostile_input_never_crashes, .timeout = 60)
{
    fixture_t *fx = fx_start(FX_TLS);
    unsigned seed = (unsigned)time(NULL);
    cr_log_info("seed %u", seed);
    srand(seed);
    const char *pre = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for (int round = 0; round < 60; round++) {
        int tls = round % 5 == 4;
        int fd = tcp_connect(tls ? fx->tls_port : fx->port);
        size_t n = (size_t)(rand() % 3000);
        uint8_t *junk = malloc(n + 64);
        for (size_t i = 0; i < n; i++)
            junk[i] = (uint8_t)rand();
        switch (round % 5) {
        case 0: /* preface + random bytes */
            send_all(fd, pre, 24);
            break;
        case 1: { /* preface + SETTINGS + random frames with plausible headers */
            send_all(fd, pre, 24);
            uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
            send_all(fd, settings, 9);
            for (size_t i = 0; i + 9 < n; i += 9 + (junk[i] & 31)) {
                junk[i] = 0;
                junk[i + 1] = 0;
                junk[i + 2] = junk[i + 2] & 31;
                junk[i + 3] = junk[i + 3] % 10;
            }
            break;
        }
        case 2: /* something HTTP/1-ish */
            send_all(fd, "POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n", 48);
            break;
        default:
            break;
        }
        send_all(fd, junk, n);
        free(junk);
        if (round % 2)
            read_until_close(fd, NULL, 0, NULL, 200);
        close(fd);
    }
    /* a valid gRPC HEADERS followed by garbage DATA on a real client session */
    cli_t *c = cli_connect(fx->port);
    for (int i = 0; i < 20; i++) {
        uint8_t junk[300];
        for (size_t k = 0; k < sizeof junk; k++)
            junk[k] = (uint8_t)rand();
        junk[0] = (uint8_t)(rand() % 3);
        call_t *call = cli_start(c, i % 2 ? "/test.Echo/Stream" : "/test.Echo/Unary", "application/grpc", NULL, 0,
                                 junk, (size_t)(rand() % 300), 1);
        cr_assert(cli_wait_closed(c, call, 5000));
        call->req = NULL;
    }
    cli_free(c);
    c = cli_connect(fx->port);
    assert_echo(unary(c, "/test.Echo/Unary", "alive", 5), "alive");
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, rapid_reset_and_header_flood_close_the_connection, .timeout = 60)
{
    fixture_t *fx = fx_start(0);
    /* CVE-2023-44487: open streams and reset them as fast as possible */
    cli_t *c = cli_connect(fx->port);
    assert_echo(unary(c, "/test.Echo/Unary", "pre", 3), "pre"); /* settings exchanged */
    for (int batch = 0; batch < 4 && !c->goaway && !c->eof; batch++) {
        int32_t ids[400];
        nghttp2_nv nva[] = {
            {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
            {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
            {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
            {(uint8_t *)":path", (uint8_t *)"/test.Echo/Stream", 5, 17, 0},
            {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
        };
        for (int i = 0; i < 400; i++) {
            /* HEADERS without END_STREAM: an empty data provider that never ends */
            static call_t dummy = {.req_end = 0};
            nghttp2_data_provider dp = {.source.ptr = &dummy, .read_callback = c_read_req};
            ids[i] = nghttp2_submit_request(c->s, NULL, nva, 5, &dp, NULL);
        }
        cli_pump(c, 0); /* HEADERS must be on the wire, or nghttp2 just cancels them */
        for (int i = 0; i < 400; i++)
            nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, ids[i], NGHTTP2_CANCEL);
        cli_pump(c, 10);
    }
    int64_t end = mono_ms() + 5000;
    while (!c->goaway && !c->eof && mono_ms() < end)
        cli_pump(c, 20);
    cr_assert(c->goaway, "expected GOAWAY");
    cr_assert_eq(c->goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
    cli_free(c);

    /* a header block far beyond any real one (40 x 8 KiB) */
    c = cli_connect(fx->port);
    static char big[8192];
    memset(big, 'h', sizeof big);
    nghttp2_nv many[40];
    char names[40][24];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "x-pad-%d", i);
        many[i] = (nghttp2_nv){(uint8_t *)names[i], (uint8_t *)big, strlen(names[i]), sizeof big, 0};
    }
    size_t bl;
    uint8_t *b = frame_msg("x", 1, 0, &bl);
    call_t *call = cli_start(c, "/test.Echo/Unary", "application/grpc", many, 10, b, bl, 1);
    (void)call;
    /* cli_start takes at most 10 extra headers: add the rest via a second request */
    cli_start(c, "/test.Echo/Unary", "application/grpc", many + 10, 10, b, bl, 1);
    end = mono_ms() + 5000;
    while (!c->eof && !c->goaway && mono_ms() < end)
        cli_pump(c, 20);
    /* 80 KiB blocks are fine (under 256 KiB); the server still works */
    cr_assert(!c->goaway || c->goaway_code == NGHTTP2_NO_ERROR);
    free(b);
    cli_free(c);

    /* raw: one HEADERS + CONTINUATION frames that never end, 1 MiB of them */
    int fd = tcp_connect(fx->port);
    send_all(fd, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
    uint8_t settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
    send_all(fd, settings, 9);
    /* literal header without indexing, new name: 0x00, name len, name, value len (7-bit
     * prefix, so <= 126 here), value */
    uint8_t field[3 + 6 + 120];
    field[0] = 0x00;
    field[1] = 6;
    memcpy(field + 2, "x-junk", 6);
    field[8] = 120;
    memset(field + 9, 'v', 120);
    uint8_t frame[9 + sizeof field * 100];
    for (int k = 0; k < 100; k++)
        memcpy(frame + 9 + k * sizeof field, field, sizeof field);
    size_t plen = sizeof field * 100;
    for (int f = 0; f < 90; f++) {
        frame[0] = (uint8_t)(plen >> 16), frame[1] = (uint8_t)(plen >> 8), frame[2] = (uint8_t)plen;
        frame[3] = f == 0 ? 0x1 : 0x9; /* HEADERS, then CONTINUATION */
        frame[4] = 0;                  /* no END_HEADERS, ever */
        frame[5] = 0, frame[6] = 0, frame[7] = 0, frame[8] = 1;
        send_all(fd, frame, sizeof frame);
    }
    cr_assert(read_until_close(fd, NULL, 0, NULL, 5000), "header flood must close the connection");
    close(fd);
    c = cli_connect(fx->port);
    assert_echo(unary(c, "/test.Echo/Unary", "alive", 5), "alive");
    cli_free(c);
    fx_stop(fx);
}

Test(h2srv, many_connections, .timeout = 60)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2600 && rl.rlim_max >= 2600) {
        rl.rlim_cur = 2600;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2600)
        cr_skip_test("RLIMIT_NOFILE too low (%lu)", (unsigned long)rl.rlim_cur);
    fixture_t *fx = fx_start(0);
    enum { N = 1100 };
    static int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = tcp_connect(fx->port);
    int64_t end = mono_ms() + 10000;
    while (atomic_load(&fx->conns) < N && mono_ms() < end)
        usleep(2000);
    cr_assert_geq(atomic_load(&fx->conns), N, "conns %d", atomic_load(&fx->conns));
    /* the last ones are fully usable */
    const char *req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    char buf[1024];
    size_t have = 0;
    send_all(fds[N - 1], req, strlen(req));
    cr_assert_gt(read_http1_response(fds[N - 1], buf, sizeof buf, &have, 3000), 0);
    cli_t *c = cli_connect(fx->port);
    assert_echo(unary(c, "/test.Echo/Unary", "many", 4), "many");
    cli_free(c);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    end = mono_ms() + 10000;
    while (atomic_load(&fx->conns) > 0 && mono_ms() < end)
        usleep(2000);
    cr_assert_eq(atomic_load(&fx->conns), 0);
    fx_stop(fx);
}

Test(h2srv, reply_to_gone_call_is_dropped_and_shutdown_sends_goaway, .timeout = 30)
{
    fixture_t *fx = fx_start(0);
    cli_t *c = cli_connect(fx->port);
    /* the client gives up on a call before the (asynchronous) answer comes */
    size_t bl;
    uint8_t *b = frame_msg("x", 1, 0, &bl);
    pthread_mutex_lock(&fx->mu);
    fx->test_reply_after_close = 1;
    fx->reply_after_close_rc = 1;
    pthread_mutex_unlock(&fx->mu);
    /* hold the loop's asynchronous answers until the client has reset the call */
    pthread_mutex_lock(&fx->mu);
    call_t *call = cli_start(c, "/test.Echo/Later", "application/grpc", NULL, 0, b, bl, 1);
    for (int i = 0; i < 3; i++)
        cli_pump(c, 5);
    nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_CANCEL);
    cli_pump(c, 5);
    int64_t end = mono_ms() + 3000;
    /* wait for the server to see the message and then the reset (n_close) */
    while (atomic_load(&fx->n_close) < 1 && mono_ms() < end) {
        pthread_mutex_unlock(&fx->mu);
        usleep(2000);
        pthread_mutex_lock(&fx->mu);
    }
    pthread_mutex_unlock(&fx->mu);
    end = mono_ms() + 3000;
    while (mono_ms() < end) {
        pthread_mutex_lock(&fx->mu);
        int rc = fx->reply_after_close_rc;
        pthread_mutex_unlock(&fx->mu);
        if (rc != 1)
            break;
        usleep(1000);
    }
    cr_assert_eq(fx->reply_after_close_rc, CAIRN_ECLOSED);
    free(b);
    /* shutdown: the open connection gets GOAWAY NO_ERROR */
    assert_echo(unary(c, "/test.Echo/Unary", "bye", 3), "bye");
    atomic_store(&fx->stop, 1);
    end = mono_ms() + 3000;
    while (!c->goaway && !c->eof && mono_ms() < end)
        cli_pump(c, 20);
    cr_assert(c->goaway, "GOAWAY expected");
    cr_assert_eq(c->goaway_code, NGHTTP2_NO_ERROR);
    cli_free(c);
    fx_stop(fx);
}
