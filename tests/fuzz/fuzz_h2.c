/* fuzz_h2.c - libFuzzer target: gatewayd's client transport (services/gatewayd/h2srv*.c): the
 * HTTP/2 framing through nghttp2's callbacks, gRPC's length-prefixed messages, metadata
 * (grpc-timeout, token, hasleader), and the HTTP/1.1 server sniffed on the same port.
 *
 * The input is the bytes a client sends on one connection. As in tests/unit/test_h2srv.c the
 * server is a real cairn_h2srv on 127.0.0.1 (port 0), here driven from the fuzzer's own thread:
 * one server for the whole run, and for each input a new loopback connection that writes the
 * input, half-closes, and reads whatever comes back, while the loop (poll_fill, zmq_poll,
 * poll_handle, flush) runs until the server has closed the connection. The service behind it
 * answers as gateway.c may: at once (reply, error, Trailers-Only), later from the loop (the
 * IPC round trip), or as a stream (stream_send ... stream_end); which one depends on a hash of
 * the path, so any path the fuzzer invents takes one of them.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zmq.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "h2srv.h"

static cairn_h2srv_t *g_srv;
static int g_port;

/* Calls answered on a later pass of the loop (as the gateway answers after stored/raftd). */
#define MAX_LATER 64
typedef struct {
    cairn_call_id_t id;
    int http1;
    int kind;
} later_t;
static later_t g_later[MAX_LATER];
static int g_n_later;

static unsigned path_hash(const char *p)
{
    unsigned h = 5381;
    for (; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return h;
}

static void later_add(cairn_call_id_t id, int http1, int kind)
{
    if (g_n_later < MAX_LATER)
        g_later[g_n_later++] = (later_t){id, http1, kind};
}

static int is_streaming(void *ud, const char *path)
{
    (void)ud;
    return (path_hash(path) & 7) >= 5;
}

static void on_message(void *ud, cairn_call_id_t call, const char *path, const uint8_t *msg, size_t len,
                       const cairn_h2_meta_t *meta)
{
    (void)ud, (void)meta;
    unsigned h = path_hash(path) & 7;
    switch (h) {
    case 0: case 1:
        cairn_h2srv_reply(g_srv, call, msg, len);
        break;
    case 2:
        cairn_h2srv_error(g_srv, call, 5, "not found: \xc3\xa4%\n");
        break;
    case 3: case 4:
        later_add(call, 0, (int)h);
        break;
    case 5:
        cairn_h2srv_stream_send(g_srv, call, msg, len);
        break;
    case 6:
        cairn_h2srv_stream_send(g_srv, call, msg, len);
        cairn_h2srv_stream_end(g_srv, call, 0, NULL);
        break;
    default:
        later_add(call, 0, 7);
        break;
    }
    (void)cairn_h2srv_stream_queued_bytes(g_srv, call);
    (void)cairn_h2srv_conn_queued_bytes(g_srv, call);
}

static void on_half_close(void *ud, cairn_call_id_t call)
{
    (void)ud;
    cairn_h2srv_stream_end(g_srv, call, 0, NULL);
}

static void on_close(void *ud, cairn_call_id_t call)
{
    (void)ud;
    for (int i = 0; i < g_n_later; i++)
        if (g_later[i].id == call) {
            g_later[i] = g_later[--g_n_later];
            i--;
        }
}

static void on_http1_async(void *ud, cairn_call_id_t req, const char *method, const char *path,
                           const uint8_t *body, size_t body_len, const cairn_h2_meta_t *meta)
{
    (void)ud, (void)method, (void)body, (void)body_len;
    unsigned h = path_hash(path) & 3;
    if (h == 0 && !meta->body_follows) {
        cairn_h2srv_http1_reply(g_srv, req, 200, "application/json", (const uint8_t *)"{}", 2);
        return;
    }
    if (h == 1)
        cairn_h2srv_http1_stream_begin(g_srv, req);
    later_add(req, 1, (int)h);
}

static void on_http1_body(void *ud, cairn_call_id_t req, const uint8_t *data, size_t len, int end)
{
    (void)ud, (void)req, (void)data, (void)len, (void)end;
}

/* Answers the calls left for later: unary ones reply/error, streams send and end, HTTP/1.1
 * ones reply or stream. */
static void answer_later(void)
{
    int n = g_n_later;
    g_n_later = 0;
    for (int i = 0; i < n; i++) {
        cairn_call_id_t id = g_later[i].id;
        if (g_later[i].http1) {
            if (g_later[i].kind == 1) {
                cairn_h2srv_http1_stream_send(g_srv, id, 200, "application/json", (const uint8_t *)"{\"a\":1}\n", 8);
                cairn_h2srv_http1_stream_end(g_srv, id, 200, NULL, NULL, 0);
            } else {
                cairn_h2srv_http1_reply(g_srv, id, 503, NULL, (const uint8_t *)"later", 5);
            }
        } else if (g_later[i].kind == 3) {
            cairn_h2srv_reply(g_srv, id, (const uint8_t *)"\x0a\x01x", 3);
        } else if (g_later[i].kind == 4) {
            cairn_h2srv_error(g_srv, id, 14, "unavailable");
        } else {
            cairn_h2srv_stream_send(g_srv, id, (const uint8_t *)"ev", 2);
            cairn_h2srv_stream_end(g_srv, id, 0, NULL);
        }
    }
}

static void loop_pass(int timeout_ms)
{
    zmq_pollitem_t items[64];
    size_t want = cairn_h2srv_poll_count(g_srv);
    size_t n = cairn_h2srv_poll_fill(g_srv, items, want < 64 ? want : 64);
    zmq_poll(items, (int)n, timeout_ms);
    cairn_h2srv_poll_handle(g_srv, items, n);
    answer_later();
    cairn_h2srv_flush(g_srv);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cairn_log_set_level(CAIRN_LOG_FATAL);
    static const char *const urls[] = {"http://127.0.0.1:0"};
    cairn_h2srv_opts_t o = {.listen_urls = urls, .n_listen = 1, .max_request_bytes = 64 << 10};
    static cairn_h2srv_handlers_t h = {
        .on_message = on_message, .on_half_close = on_half_close, .on_close = on_close,
        .is_streaming = is_streaming, .on_http1_async = on_http1_async, .on_http1_body = on_http1_body};
    int err = 0;
    char eb[256];
    g_srv = cairn_h2srv_new(&o, &h, &err, eb, sizeof eb);
    if (!g_srv) {
        fprintf(stderr, "fuzz_h2: cairn_h2srv_new: %s\n", eb);
        abort();
    }
    g_port = cairn_h2srv_bound_port(g_srv, 0);
    return 0;
}

static void drain_client(int fd, int *eof)
{
    char buf[65536];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0)
            continue;
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            *eof = 1;
        return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (256u << 10))
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        /* the machine, not the server (ephemeral ports, fds): not a finding */
        perror("fuzz_h2: connect");
        close(fd);
        return 0;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    size_t off = 0;
    int eof = 0, passes = 0;
    /* write the input while the server reads it (a large input fills the socket buffers) */
    while (off < size && passes < 2000) {
        ssize_t w = write(fd, data + off, size - off);
        if (w > 0)
            off += (size_t)w;
        else if (errno != EAGAIN && errno != EINTR)
            break;
        loop_pass(0);
        drain_client(fd, &eof);
        passes++;
    }
    shutdown(fd, SHUT_WR);
    /* run the loop until the server closed the connection (it does at the client's EOF once
       its answers are out) */
    for (passes = 0; !eof && passes < 400; passes++) {
        loop_pass(passes < 20 ? 0 : 1);
        drain_client(fd, &eof);
    }
    /* Close with a reset: the exchange is over, and thousands of connections a second
       would otherwise leave as many in TIME_WAIT and run out of ephemeral ports. */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    for (passes = 0; cairn_h2srv_conn_count(g_srv) > 0 && passes < 400; passes++)
        loop_pass(1);
    if (cairn_h2srv_conn_count(g_srv) > 0) {
        fprintf(stderr, "fuzz_h2: the server kept a connection the client closed\n");
        abort();
    }
    g_n_later = 0; /* their connection is gone: on_close was delivered */
    return 0;
}
