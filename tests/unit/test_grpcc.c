/* Unit tests for shared/cairn_grpcc (the gRPC client of cairnctl backup), against gatewayd's
 * own transport (h2srv) on 127.0.0.1 (port 0) in a thread, with a toy service:
 *   /test.Echo/Unary   replies with the request bytes
 *   /test.Echo/Fail    error 5 with a message that needs percent-encoding
 *   /test.Echo/Never   never answered (deadlines)
 *   /test.Echo/Stream  bidi: echoes each message, ends OK at half-close
 *   /test.Echo/Big     server stream: 32 messages of 1 MiB, then OK
 *   anything else      12 UNIMPLEMENTED
 * The same client against a real gatewayd (Watch, Snapshot, Lease calls) is covered by
 * tests/integration/test_backup_pitr.sh.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_grpcc.h"
#include "cairn_log.h"
#include "h2srv.h"

typedef struct {
    cairn_h2srv_t *srv;
    pthread_t th;
    atomic_int stop;
    int port, tls_port;
    char dir[64];
    pthread_mutex_t mu;
    char last_token[64];
    int last_has_leader;
    int64_t last_timeout;
} fixture_t;

static int is_streaming(void *ud, const char *path)
{
    (void)ud;
    return strcmp(path, "/test.Echo/Stream") == 0 || strcmp(path, "/test.Echo/Big") == 0;
}

static void on_message(void *ud, cairn_call_id_t call, const char *path, const uint8_t *msg, size_t len,
                       const cairn_h2_meta_t *meta)
{
    fixture_t *fx = ud;
    pthread_mutex_lock(&fx->mu);
    snprintf(fx->last_token, sizeof fx->last_token, "%s", meta->token ? meta->token : "(null)");
    fx->last_has_leader = meta->has_leader_md;
    fx->last_timeout = meta->timeout_ms;
    pthread_mutex_unlock(&fx->mu);
    cairn_h2srv_t *s = fx->srv;
    if (strcmp(path, "/test.Echo/Unary") == 0) {
        cairn_h2srv_reply(s, call, msg, len);
    } else if (strcmp(path, "/test.Echo/Fail") == 0) {
        cairn_h2srv_error(s, call, 5, "not found: \xc3\xa4%\n");
    } else if (strcmp(path, "/test.Echo/Never") == 0) {
        /* no answer */
    } else if (strcmp(path, "/test.Echo/Stream") == 0) {
        cairn_h2srv_stream_send(s, call, msg, len);
    } else if (strcmp(path, "/test.Echo/Big") == 0) {
        uint8_t *blob = calloc(1, 1 << 20);
        for (int i = 0; i < 32; i++) {
            blob[0] = (uint8_t)i;
            cairn_h2srv_stream_send(s, call, blob, 1 << 20);
        }
        free(blob);
        cairn_h2srv_stream_end(s, call, 0, NULL);
    } else {
        char m[300];
        snprintf(m, sizeof m, "unknown method %s", path);
        cairn_h2srv_error(s, call, 12, m);
    }
}

static void on_half_close(void *ud, cairn_call_id_t call)
{
    fixture_t *fx = ud;
    cairn_h2srv_stream_end(fx->srv, call, 0, NULL);
}

static void on_close(void *ud, cairn_call_id_t call) { (void)ud, (void)call; }

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
        cairn_h2srv_flush(fx->srv);
    }
    cairn_h2srv_destroy(&fx->srv);
    free(items);
    return NULL;
}

static fixture_t *fx_start(void)
{
    cairn_log_init("test", CAIRN_LOG_WARN);
    fixture_t *fx = calloc(1, sizeof *fx);
    pthread_mutex_init(&fx->mu, NULL);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/grpcc_test_XXXXXX");
    cr_assert_not_null(mkdtemp(fx->dir));
    const char *urls[2] = {"http://127.0.0.1:0", "https://127.0.0.1:0"};
    char tlsdir[128];
    snprintf(tlsdir, sizeof tlsdir, "%s/tls", fx->dir);
    cairn_h2srv_opts_t o = {.listen_urls = urls, .n_listen = 2, .auto_tls = 1, .auto_tls_dir = tlsdir};
    cairn_h2srv_handlers_t h = {.on_message = on_message,
                                .on_half_close = on_half_close,
                                .on_close = on_close,
                                .is_streaming = is_streaming,
                                .ud = fx};
    int err = 0;
    char eb[256] = "";
    fx->srv = cairn_h2srv_new(&o, &h, &err, eb, sizeof eb);
    cr_assert_not_null(fx->srv, "new failed: %d %s", err, eb);
    fx->port = cairn_h2srv_bound_port(fx->srv, 0);
    fx->tls_port = cairn_h2srv_bound_port(fx->srv, 1);
    pthread_create(&fx->th, NULL, server_loop, fx);
    return fx;
}

static void fx_stop(fixture_t *fx)
{
    atomic_store(&fx->stop, 1);
    pthread_join(fx->th, NULL);
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

static cairn_grpcc_t *dial(int port, const cairn_grpcc_opts_t *o)
{
    char ep[64], eb[256] = "";
    snprintf(ep, sizeof ep, "%s127.0.0.1:%d", o && o->tls ? "https://" : "", port);
    int err = 0;
    cairn_grpcc_t *c = cairn_grpcc_new(ep, o, &err, eb, sizeof eb);
    cr_assert_not_null(c, "connect %s: %d %s", ep, err, eb);
    return c;
}

Test(grpcc, unary_echo_and_metadata)
{
    fixture_t *fx = fx_start();
    cairn_grpcc_t *c = dial(fx->port, NULL);
    cr_assert_eq(cairn_grpcc_set_metadata(c, "token", "tok-1"), 0);
    uint8_t *resp = NULL;
    size_t rl = 0;
    char eb[256] = "";
    int st = cairn_grpcc_unary(c, "/test.Echo/Unary", "hello", 5, &resp, &rl, 3000, eb, sizeof eb);
    cr_assert_eq(st, 0, "status %d %s", st, eb);
    cr_assert_eq(rl, 5);
    cr_assert_eq(memcmp(resp, "hello", 5), 0);
    free(resp);
    cr_assert_str_eq(fx->last_token, "tok-1");
    cr_assert(fx->last_timeout > 2000 && fx->last_timeout <= 3000, "grpc-timeout %lld", (long long)fx->last_timeout);
    /* an empty message is a message too */
    st = cairn_grpcc_unary(c, "/test.Echo/Unary", NULL, 0, &resp, &rl, 0, eb, sizeof eb);
    cr_assert_eq(st, 0, "%s", eb);
    cr_assert_eq(rl, 0);
    free(resp);
    cairn_grpcc_destroy(&c);
    cairn_grpcc_destroy(&c); /* idempotent */
    fx_stop(fx);
}

Test(grpcc, errors_carry_status_and_decoded_message)
{
    fixture_t *fx = fx_start();
    cairn_grpcc_t *c = dial(fx->port, NULL);
    uint8_t *resp = NULL;
    size_t rl = 0;
    char eb[256] = "";
    int st = cairn_grpcc_unary(c, "/test.Echo/Fail", "x", 1, &resp, &rl, 3000, eb, sizeof eb);
    cr_assert_eq(st, 5);
    cr_assert_str_eq(eb, "not found: \xc3\xa4%\n");
    cr_assert_null(resp);
    st = cairn_grpcc_unary(c, "/test.Nope/Nope", "x", 1, &resp, &rl, 3000, eb, sizeof eb);
    cr_assert_eq(st, 12);
    cr_assert_str_eq(eb, "unknown method /test.Nope/Nope");
    /* the connection is still good after failed calls */
    st = cairn_grpcc_unary(c, "/test.Echo/Unary", "ok", 2, &resp, &rl, 3000, eb, sizeof eb);
    cr_assert_eq(st, 0);
    free(resp);
    cairn_grpcc_destroy(&c);
    fx_stop(fx);
}

Test(grpcc, deadline_exceeded)
{
    fixture_t *fx = fx_start();
    cairn_grpcc_t *c = dial(fx->port, NULL);
    uint8_t *resp = NULL;
    size_t rl = 0;
    char eb[256] = "";
    int64_t t0 = mono_ms();
    int st = cairn_grpcc_unary(c, "/test.Echo/Never", "x", 1, &resp, &rl, 300, eb, sizeof eb);
    int64_t took = mono_ms() - t0;
    cr_assert_eq(st, CAIRN_GRPC_DEADLINE_EXCEEDED, "status %d %s", st, eb);
    cr_assert(took >= 290 && took < 2000, "took %lld ms", (long long)took);
    cr_assert_str_eq(eb, "context deadline exceeded");
    cairn_grpcc_destroy(&c);
    fx_stop(fx);
}

typedef struct {
    int msgs, done, status;
    size_t bytes;
    uint8_t first_bytes[64];
    char message[256];
} rx_t;

static int rx_msg(void *arg, cairn_grpcc_call_t *call, const uint8_t *msg, size_t len)
{
    (void)call;
    rx_t *r = arg;
    if (r->msgs < 64)
        r->first_bytes[r->msgs] = len ? msg[0] : 0xff;
    r->msgs++;
    r->bytes += len;
    return 0;
}

static void rx_done(void *arg, cairn_grpcc_call_t *call, int status, const char *message)
{
    (void)call;
    rx_t *r = arg;
    r->done++;
    r->status = status;
    snprintf(r->message, sizeof r->message, "%s", message);
}

static void run_until(cairn_grpcc_t *c, const int *flag, int ms)
{
    int64_t end = mono_ms() + ms;
    while (!*flag && mono_ms() < end)
        cairn_grpcc_run(c, 50);
}

Test(grpcc, bidi_stream_with_messages_larger_than_a_frame)
{
    fixture_t *fx = fx_start();
    cairn_grpcc_t *c = dial(fx->port, NULL);
    rx_t r = {0};
    int err = 0;
    cairn_grpcc_call_t *call =
        cairn_grpcc_start(c, "/test.Echo/Stream", NULL, 0, CAIRN_GRPCC_HASLEADER, 0, rx_msg, rx_done, &r, &err);
    cr_assert_not_null(call, "%d", err);
    uint8_t *big = malloc(100000);
    memset(big, 7, 100000);
    cr_assert_eq(cairn_grpcc_send(call, "a", 1, 0), 0);
    cr_assert_eq(cairn_grpcc_send(call, big, 100000, 0), 0);
    cr_assert_eq(cairn_grpcc_send(call, "c", 1, 0), 0);
    int64_t end = mono_ms() + 5000;
    while (r.msgs < 3 && mono_ms() < end)
        cairn_grpcc_run(c, 50);
    cr_assert_eq(r.msgs, 3);
    cr_assert_eq(r.bytes, 100002);
    cr_assert_eq(r.first_bytes[1], 7);
    cr_assert(fx->last_has_leader);
    cr_assert_eq(r.done, 0, "the stream stays open until we half-close");
    cr_assert_eq(cairn_grpcc_send(call, NULL, 0, 1), 0); /* half-close: the server ends OK */
    run_until(c, &r.done, 5000);
    cr_assert_eq(r.done, 1);
    cr_assert_eq(r.status, 0, "%s", r.message);
    free(big);
    cairn_grpcc_destroy(&c);
    fx_stop(fx);
}

Test(grpcc, server_stream_and_message_limit)
{
    fixture_t *fx = fx_start();
    cairn_grpcc_t *c = dial(fx->port, NULL);
    rx_t r = {0};
    int err = 0;
    cr_assert_not_null(
        cairn_grpcc_start(c, "/test.Echo/Big", "go", 2, CAIRN_GRPCC_HALF_CLOSE, 0, rx_msg, rx_done, &r, &err));
    run_until(c, &r.done, 20000);
    cr_assert_eq(r.done, 1);
    cr_assert_eq(r.status, 0, "%s", r.message);
    cr_assert_eq(r.msgs, 32);
    cr_assert_eq(r.bytes, (size_t)32 << 20);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(r.first_bytes[i], i, "message %d out of order", i);
    cairn_grpcc_destroy(&c);
    /* a message over max_msg fails the call, not the process */
    cairn_grpcc_opts_t o = {.max_msg = 512 << 10};
    c = dial(fx->port, &o);
    rx_t r2 = {0};
    cr_assert_not_null(
        cairn_grpcc_start(c, "/test.Echo/Big", "go", 2, CAIRN_GRPCC_HALF_CLOSE, 0, rx_msg, rx_done, &r2, &err));
    run_until(c, &r2.done, 20000);
    cr_assert_eq(r2.status, CAIRN_GRPC_RESOURCE_EXHAUSTED, "%d %s", r2.status, r2.message);
    cr_assert_eq(r2.msgs, 0);
    cairn_grpcc_destroy(&c);
    fx_stop(fx);
}

Test(grpcc, cancel_and_destroy_end_open_calls)
{
    fixture_t *fx = fx_start();
    cairn_grpcc_t *c = dial(fx->port, NULL);
    rx_t a = {0}, b = {0};
    int err = 0;
    cairn_grpcc_call_t *ca = cairn_grpcc_start(c, "/test.Echo/Stream", NULL, 0, 0, 0, rx_msg, rx_done, &a, &err);
    cr_assert_not_null(
        cairn_grpcc_start(c, "/test.Echo/Never", "x", 1, CAIRN_GRPCC_HALF_CLOSE, 0, rx_msg, rx_done, &b, &err));
    cairn_grpcc_run(c, 50);
    cairn_grpcc_cancel(ca);
    cr_assert_eq(a.done, 1);
    cr_assert_eq(a.status, CAIRN_GRPC_CANCELLED);
    cairn_grpcc_destroy(&c);
    cr_assert_eq(b.done, 1);
    cr_assert_eq(b.status, CAIRN_GRPC_UNAVAILABLE);
    fx_stop(fx);
}

Test(grpcc, server_gone_fails_the_connection)
{
    fixture_t *fx = fx_start();
    cairn_grpcc_t *c = dial(fx->port, NULL);
    rx_t r = {0};
    int err = 0;
    cr_assert_not_null(
        cairn_grpcc_start(c, "/test.Echo/Never", "x", 1, CAIRN_GRPCC_HALF_CLOSE, 0, rx_msg, rx_done, &r, &err));
    cairn_grpcc_run(c, 50);
    fx_stop(fx); /* GOAWAY and close */
    run_until(c, &r.done, 5000);
    cr_assert_eq(r.done, 1);
    cr_assert_eq(r.status, CAIRN_GRPC_UNAVAILABLE, "%d %s", r.status, r.message);
    cr_assert_neq(cairn_grpcc_failed(c), 0);
    cr_assert_null(cairn_grpcc_start(c, "/test.Echo/Unary", "x", 1, CAIRN_GRPCC_HALF_CLOSE, 0, NULL, NULL, NULL, &err));
    cr_assert_eq(err, CAIRN_ECLOSED);
    cairn_grpcc_destroy(&c);
}

Test(grpcc, tls)
{
    fixture_t *fx = fx_start();
    /* the server's certificate is self-signed: unverified it works ... */
    cairn_grpcc_opts_t o = {.tls = 1, .insecure_skip_verify = 1};
    cairn_grpcc_t *c = dial(fx->tls_port, &o);
    uint8_t *resp = NULL;
    size_t rl = 0;
    char eb[256] = "";
    int st = cairn_grpcc_unary(c, "/test.Echo/Unary", "secret", 6, &resp, &rl, 3000, eb, sizeof eb);
    cr_assert_eq(st, 0, "%s", eb);
    cr_assert_eq(rl, 6);
    free(resp);
    cairn_grpcc_destroy(&c);
    /* ... and verified against the system's CAs it is refused, saying why */
    cairn_grpcc_opts_t v = {.tls = 1};
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", fx->tls_port);
    int err = 0;
    c = cairn_grpcc_new(ep, &v, &err, eb, sizeof eb);
    cr_assert_null(c);
    cr_assert_eq(err, CAIRN_ETLS);
    cr_assert(strstr(eb, "certificate verify failed"), "%s", eb);
    fx_stop(fx);
}

Test(grpcc, bad_endpoints)
{
    char eb[256] = "";
    int err = 0;
    cr_assert_null(cairn_grpcc_new("nonsense", NULL, &err, eb, sizeof eb));
    cr_assert_eq(err, CAIRN_EINVAL);
    cr_assert(strstr(eb, "not host:port"), "%s", eb);
    /* a port nobody listens on (bound, never listened) */
    cr_assert_null(cairn_grpcc_new("127.0.0.1:1", NULL, &err, eb, sizeof eb));
    cr_assert_eq(err, CAIRN_EIO);
    cr_assert(strstr(eb, "connect 127.0.0.1:1"), "%s", eb);
}
