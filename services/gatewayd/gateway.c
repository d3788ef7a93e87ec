/* gateway.c - gatewayd's loop: client calls in (h2srv), IPC to raftd and stored out, and the
 * requests pending between the two (see gateway.h).
 *
 * The etcd services themselves are in svc_kv.c, svc_watch.c, svc_lease.c, svc_cluster.c,
 * svc_maint.c, svc_lock.c and svc_election.c, each a table of methods (gw_internal.h: how a
 * unary or a streaming method is added - one row in its service's table); /metrics is
 * gw_metrics.c's. This file owns what they share:
 *   - dispatch: every service's rows in one table sorted by path, looked up by binary
 *     search for each call (on_message) and for h2srv's is_streaming; a stream's per-call
 *     state (gw_call_t) lives from its first message to on_close, which calls the row's close;
 *   - pending requests: one per IPC request in flight, keyed by req_id, answered when the
 *     answer comes (on_ipc, through the gw_answer_t the method chose) or failed with etcd's
 *     "request timed out" text when its deadline (grpc-timeout, else etcd's default)
 *     passes, so nothing hangs past the deadline;
 *   - linearizable reads (Range, /health): queued, and at the end of the loop pass every
 *     queued read shares ONE read-index request to raftd (thesis §6.4 batching); with the
 *     index in hand each read goes to stored as RANGE, which serves it once applied >= index;
 *   - HTTP/1.1 (/health, /version, /metrics) and the status stored reports every second;
 *   - etcd's JSON gateway (POST /v3/... and /v3beta/...): the body is converted to the
 *     method's protobuf request (gw_json.h) and handed to the same handler as a gRPC call;
 *     the call id is remembered in json_calls with the method's response descriptor, and
 *     gw_reply / gw_status (every answer goes through them) convert the answer back to JSON.
 *     A stream row (json_stream_call, gw_json_kind_t) becomes a call in g->calls like a gRPC
 *     stream, fed every request of the body, and gw_stream_send / gw_stream_end write its
 *     answers as grpc-gateway 1.x does: a chunked body of {"result":...} lines, an error as
 *     the last {"error":{...}} object; json_streams says which calls are such streams.
 *     A chunked request body (Transfer-Encoding: chunked) is read as it comes by a client
 *     stream (an interactive watch), and whole before the request is served elsewhere
 *     (json_bodies), as Go's server reads any body.
 *   - the loop: client sockets, the IPC sockets and the watch hub's events feed.
 */
#include "gateway.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "gw_internal.h"
#include "gw_json.h"

/* etcd: ReqTimeout() = 5 s + 2 * election timeout; clients normally send a shorter grpc-timeout. */
#define DEFAULT_TIMEOUT_MS(cfg) (5000 + 2 * (cfg)->election_ms)
/* how long a stopping gateway waits for the answers to calls in flight */
#define DRAIN_MAX_MS 3000

/* ------------------------------------------------------------------ the methods */

static const gw_service_t *const gw_services[] = {&gw_svc_kv,    &gw_svc_cluster, &gw_svc_maint, &gw_svc_watch,
                                                  &gw_svc_lease, &gw_svc_lock,    &gw_svc_election};

static int by_path(const void *a, const void *b)
{
    return strcmp((*(const gw_method_t *const *)a)->path, (*(const gw_method_t *const *)b)->path);
}

/* Every service's rows, sorted by path; a path declared twice is refused. */
static int build_methods(cairn_gateway_t *g)
{
    size_t n = 0;
    for (size_t i = 0; i < sizeof gw_services / sizeof gw_services[0]; i++)
        n += gw_services[i]->n;
    if (!(g->methods = calloc(n, sizeof *g->methods)))
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < sizeof gw_services / sizeof gw_services[0]; i++)
        for (size_t j = 0; j < gw_services[i]->n; j++)
            g->methods[g->n_methods++] = &gw_services[i]->methods[j];
    qsort(g->methods, g->n_methods, sizeof *g->methods, by_path);
    for (size_t i = 1; i < g->n_methods; i++)
        if (strcmp(g->methods[i - 1]->path, g->methods[i]->path) == 0) {
            cairn_error("a gRPC method is declared twice", "path=%s", g->methods[i]->path);
            return CAIRN_EEXISTS;
        }
    return 0;
}

static const gw_method_t *find_method(const cairn_gateway_t *g, const char *path)
{
    gw_method_t key = {.path = path};
    const gw_method_t *k = &key;
    const gw_method_t **m = bsearch(&k, g->methods, g->n_methods, sizeof *g->methods, by_path);
    return m ? *m : NULL;
}

/* ------------------------------------------------------------------ pending requests */

const gw_answer_t gw_answer_body = {.ok = NULL, .fail = NULL, .proposal = 0};

static uint64_t new_id(cairn_gateway_t *g)
{
    if (++g->next_id == 0)
        g->next_id = 1;
    return g->next_id;
}

gw_pending_t *gw_add_pending(cairn_gateway_t *g, cairn_call_id_t call, const gw_answer_t *how, int64_t timeout_ms)
{
    gw_pending_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->req_id = new_id(g);
    p->call = call;
    p->how = how;
    /* Answer a little before the client's own deadline (grpc-timeout) so that it gets etcd's
     * "request timed out" text rather than a bare DeadlineExceeded of its own. */
    int64_t t = timeout_ms > 0 ? timeout_ms - (timeout_ms / 10 < 200 ? timeout_ms / 10 : 200)
                               : DEFAULT_TIMEOUT_MS(g->cfg);
    if (t < 1)
        t = 1;
    p->deadline = cairn_now_ms() + t;
    if (cairn_u64map_put(g->pending, p->req_id, p)) {
        free(p);
        return NULL;
    }
    return p;
}

static void free_pending(gw_pending_t *p)
{
    if (!p)
        return;
    if (p->how && p->how->release)
        p->how->release(p->ctx);
    free(p->body);
    free(p->part);
    free(p);
}

void gw_drop_pending(cairn_gateway_t *g, uint64_t req_id) { free_pending(cairn_u64map_take(g->pending, req_id)); }

/* The largest answer rebuilt from parts: a gRPC message's length is 32 bits, and grpc-go (etcd's
 * clients) refuses messages above 2 GiB - 1. */
#define MAX_ANSWER_BYTES ((size_t)INT32_MAX)

/* One RESULT_PART: appended when it follows the bytes held, else the answer is marked lost. */
static void on_result_part(cairn_gateway_t *g, const cairn_ipc_msg_t *m)
{
    gw_pending_t *p = cairn_u64map_get(g->pending, m->req_id);
    if (!p || p->part_bad)
        return;
    if (m->total > MAX_ANSWER_BYTES) {
        p->part_bad = 2; /* refused as too large, not as lost: asking again would not help */
        return;
    }
    if (m->offset != p->part_len || m->offset + m->body_len > m->total || (p->part && m->total != p->part_total)) {
        cairn_warn("answer part out of order or missing; the answer is dropped", "req_id=%llu offset=%llu held=%zu",
                   (unsigned long long)m->req_id, (unsigned long long)m->offset, p->part_len);
        p->part_bad = 1;
        return;
    }
    if (!p->part) {
        if (!(p->part = malloc(m->total ? m->total : 1))) {
            p->part_bad = 1;
            return;
        }
        p->part_total = m->total;
    }
    memcpy(p->part + p->part_len, m->body, m->body_len);
    p->part_len += m->body_len;
}

static void http1_json(cairn_gateway_t *g, cairn_call_id_t req, int status, const char *json)
{
    cairn_h2srv_http1_reply(g->srv, req, status, "application/json", (const uint8_t *)json, strlen(json));
}

typedef struct gw_jbody gw_jbody_t; /* a chunked body read whole (on_http1_body) */
static void jbody_free(gw_jbody_t *b);

/* A JSON-gateway stream (json_stream_call): how its answers go out. */
typedef struct {
    const ProtobufCMessageDescriptor *out, *in_d;
    const gw_method_t *mt;
    gw_json_kind_t kind;
    gw_call_t *call; /* its call, once started (g->calls owns it) */
    int sent;        /* a chunk (and so the HTTP headers) went out */
    int ended;       /* gw_stream_end was called: nothing more goes out */
    int stopped;     /* the sending side closed: the rest of the body is not read */
    int reading;     /* a chunked body is still coming (on_http1_body) */
    uint8_t *held;   /* GW_JSON_UNARY: the answer, sent as the reply at the end */
    size_t held_len;
    uint8_t *in; /* a chunked body's bytes not yet a whole request */
    size_t in_len, in_cap;
    cairn_h2_meta_t meta; /* for the handler of requests that come later, with its strings: */
    char authority[256];
    char *token, *cn;
} gw_jstream_t;

static void jstream_free(gw_jstream_t *js)
{
    if (js) {
        free(js->held);
        free(js->in);
        free(js->token);
        free(js->cn);
        free(js);
    }
}

#define JSON_CT "application/json"

int gw_stream_send(cairn_gateway_t *g, cairn_call_id_t call, const uint8_t *msg, size_t len)
{
    gw_jstream_t *js = cairn_u64map_get(g->json_streams, call);
    if (!js)
        return cairn_h2srv_stream_send(g->srv, call, msg, len);
    if (js->ended)
        return CAIRN_ESTATE;
    if (js->kind == GW_JSON_UNARY) {
        uint8_t *copy = malloc(len ? len : 1);
        if (!copy)
            return gw_stream_end(g, call, CAIRN_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        if (len)
            memcpy(copy, msg, len);
        free(js->held);
        js->held = copy;
        js->held_len = len;
        return 0;
    }
    char *json;
    size_t n;
    int rc = gw_json_from_pb(js->out, msg, len, &json, &n);
    if (rc)
        return gw_stream_end(g, call, CAIRN_GRPC_INTERNAL, "cannot convert the answer to JSON");
    /* grpc-gateway 1.x's ForwardResponseStream: {"result":<message>} and the delimiter "\n",
     * flushed as one chunk */
    static const char pre[] = "{\"result\":";
    char *chunk = malloc(sizeof pre - 1 + n + 2);
    if (!chunk) {
        free(json);
        return gw_stream_end(g, call, CAIRN_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    memcpy(chunk, pre, sizeof pre - 1);
    memcpy(chunk + sizeof pre - 1, json, n);
    memcpy(chunk + sizeof pre - 1 + n, "}\n", 2);
    free(json);
    rc = cairn_h2srv_http1_stream_send(g->srv, call, 200, JSON_CT, (const uint8_t *)chunk, sizeof pre - 1 + n + 2);
    free(chunk);
    if (rc == 0)
        js->sent = 1;
    return rc;
}

int gw_stream_end(cairn_gateway_t *g, cairn_call_id_t call, int code, const char *message)
{
    gw_jstream_t *js = cairn_u64map_get(g->json_streams, call);
    if (!js)
        return cairn_h2srv_stream_end(g->srv, call, code, message);
    if (js->ended)
        return CAIRN_ESTATE;
    js->ended = 1;
    gw_metrics_call_status(g, call, code);
    char *body = NULL;
    size_t n = 0;
    int rc;
    if (js->kind == GW_JSON_UNARY) {
        /* the reply of a unary method, whole: its answer, or {"error",...} as gw_status */
        int status = 200;
        if (code == CAIRN_GRPC_OK && js->held) {
            if (gw_json_from_pb(js->out, js->held, js->held_len, &body, &n)) {
                code = CAIRN_GRPC_INTERNAL;
                message = "cannot convert the answer to JSON";
            }
        } else if (code == CAIRN_GRPC_OK) {
            code = CAIRN_GRPC_INTERNAL; /* (a handler that ends without an answer: a bug) */
            message = "no answer";
        }
        if (code != CAIRN_GRPC_OK) {
            status = gw_json_http_status(code);
            body = gw_json_error(code, message, &n);
        }
        rc = cairn_h2srv_http1_stream_end(g->srv, call, status, JSON_CT, (const uint8_t *)(body ? body : ""),
                                          body ? n : 0);
        free(body);
        return rc;
    }
    /* a stream: its headers go out now if no answer took them (etcd: chunked even when empty;
     * an error before any answer carries its HTTP status), then the error object, unterminated
     * by "\n" (handleForwardResponseStreamError), then the end of the body */
    if (!js->sent) {
        rc = cairn_h2srv_http1_stream_send(g->srv, call, code ? gw_json_http_status(code) : 200, JSON_CT, NULL, 0);
        if (rc)
            return rc;
        js->sent = 1;
    }
    if (code != CAIRN_GRPC_OK)
        body = gw_json_stream_error(code, message, &n);
    rc = cairn_h2srv_http1_stream_end(g->srv, call, 200, JSON_CT, (const uint8_t *)body, body ? n : 0);
    free(body);
    return rc;
}

size_t gw_stream_queued(const cairn_gateway_t *g, cairn_call_id_t call)
{
    if (cairn_u64map_get(g->json_streams, call))
        return cairn_h2srv_http1_queued_bytes(g->srv, call);
    return cairn_h2srv_stream_queued_bytes(g->srv, call);
}

int gw_reply(cairn_gateway_t *g, cairn_call_id_t call, const uint8_t *msg, size_t len)
{
    if (cairn_u64map_get(g->json_streams, call)) {
        int rc = gw_stream_send(g, call, msg, len);
        return rc ? rc : gw_stream_end(g, call, CAIRN_GRPC_OK, NULL);
    }
    const ProtobufCMessageDescriptor *d = cairn_u64map_take(g->json_calls, call);
    if (!d)
        return cairn_h2srv_reply(g->srv, call, msg, len);
    char *json;
    size_t n;
    if (gw_json_from_pb(d, msg, len, &json, &n)) {
        cairn_u64map_put(g->json_calls, call, (void *)d);
        return gw_status(g, call, CAIRN_GRPC_INTERNAL, "cannot convert the answer to JSON");
    }
    int rc = cairn_h2srv_http1_reply(g->srv, call, 200, "application/json", (const uint8_t *)json, n);
    free(json);
    gw_metrics_call_status(g, call, CAIRN_GRPC_OK);
    return rc;
}

int gw_status(cairn_gateway_t *g, cairn_call_id_t call, int code, const char *message)
{
    if (cairn_u64map_get(g->json_streams, call))
        return gw_stream_end(g, call, code, message);
    if (!cairn_u64map_take(g->json_calls, call))
        return cairn_h2srv_error(g->srv, call, code, message);
    size_t n = 0;
    char *json = gw_json_error(code, message, &n);
    int rc = cairn_h2srv_http1_reply(g->srv, call, gw_json_http_status(code), "application/json",
                                     (const uint8_t *)(json ? json : ""), json ? n : 0);
    free(json);
    gw_metrics_call_status(g, call, code);
    return rc;
}

void gw_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    g->n_failed++;
    if (p->how->fail)
        p->how->fail(g, p, code, message);
    else
        gw_status(g, p->call, code, message);
}

void gw_fail_etcd(cairn_gateway_t *g, gw_pending_t *p, cairn_etcd_err_t e)
{
    gw_fail(g, p, cairn_etcd_err_code(e), cairn_etcd_err_text(e));
}

/* A pending request's answer arrived with code 0. */
static void answer(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    if (p->how->ok)
        p->how->ok(g, p, body, len, m);
    else
        gw_reply(g, p->call, body, len);
}

void gw_error(cairn_gateway_t *g, cairn_call_id_t call, cairn_etcd_err_t e)
{
    gw_status(g, call, cairn_etcd_err_code(e), cairn_etcd_err_text(e));
}

void gw_bad_request(cairn_gateway_t *g, cairn_call_id_t call)
{
    gw_status(g, call, CAIRN_GRPC_INTERNAL, "grpc: error unmarshalling request: unexpected EOF");
}

int64_t gw_timeout(const cairn_h2_meta_t *meta) { return meta ? meta->timeout_ms : -1; }

int gw_send_ipc(cairn_gateway_t *g, zsock_t *s, const cairn_ipc_msg_t *m)
{
    int rc = cairn_zmq_send(s, NULL, 0, m);
    if (rc)
        cairn_warn("ipc send failed", "type=%s err=\"%s\"", cairn_ipc_type_name(m->type), cairn_strerror(rc));
    return rc;
}

gw_pending_t *gw_ask(cairn_gateway_t *g, cairn_call_id_t call, const gw_answer_t *how, zsock_t *sock,
                     cairn_ipc_msg_t *m, const cairn_h2_meta_t *meta, cairn_etcd_err_t send_err)
{
    gw_pending_t *p = gw_add_pending(g, call, how, gw_timeout(meta));
    if (!p) {
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return NULL;
    }
    m->req_id = p->req_id;
    if (gw_send_ipc(g, sock, m)) {
        gw_drop_pending(g, p->req_id);
        gw_error(g, call, send_err);
        return NULL;
    }
    return p;
}

void gw_fill_header(cairn_gateway_t *g, Etcdserverpb__ResponseHeader *h)
{
    /* stored knows the cluster ID that was replicated to it (a member that joined a running
     * cluster learns it from the cluster); the configuration's is what a new cluster gets */
    h->cluster_id = g->st.cluster_id ? g->st.cluster_id : cairn_config_cluster_id(g->cfg);
    h->member_id = cairn_config_member_id(g->cfg);
    /* the events feed is fresher than the status stored reports every second */
    int64_t fed = gw_watch_revision(g);
    h->revision = fed > g->st.revision ? fed : g->st.revision;
    h->raft_term = g->st.term;
}

/* ------------------------------------------------------------------ reads */

void gw_queue_read(cairn_gateway_t *g, gw_pending_t *p)
{
    if (g->n_queued == g->cap_queued) {
        size_t nc = g->cap_queued ? g->cap_queued * 2 : 256;
        uint64_t *q = realloc(g->queued_reads, nc * sizeof *q);
        if (!q) {
            gw_fail_etcd(g, cairn_u64map_take(g->pending, p->req_id), CAIRN_ETCD_TOO_MANY_REQUESTS);
            free_pending(p);
            return;
        }
        g->queued_reads = q;
        g->cap_queued = nc;
    }
    g->queued_reads[g->n_queued++] = p->req_id;
}

static void send_range(cairn_gateway_t *g, gw_pending_t *p, uint64_t read_index)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RANGE, .req_id = p->req_id, .read_index = read_index, .body = p->body,
                         .body_len = p->body_len};
    if (gw_send_ipc(g, g->stored, &m)) {
        gw_fail_etcd(g, p, CAIRN_ETCD_TOO_MANY_REQUESTS);
        gw_drop_pending(g, p->req_id);
        return;
    }
    free(p->body);
    p->body = NULL;
    p->body_len = 0;
}

/* One read-index round for every read queued during this loop pass. */
static void flush_reads(cairn_gateway_t *g)
{
    if (!g->n_queued)
        return;
    gw_read_batch_t *b = malloc(sizeof *b);
    if (!b)
        return;
    b->ids = g->queued_reads;
    b->n = g->n_queued;
    g->queued_reads = NULL;
    g->n_queued = g->cap_queued = 0;
    uint64_t id = new_id(g);
    cairn_u64map_put(g->batches, id, b);
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_READ_INDEX, .req_id = id};
    if (gw_send_ipc(g, g->raftd, &m)) {
        /* leave them: the deadline sweep answers them */
        cairn_u64map_take(g->batches, id);
        free(b->ids);
        free(b);
    }
}

static void on_read_index(cairn_gateway_t *g, const cairn_ipc_msg_t *m)
{
    gw_read_batch_t *b = cairn_u64map_take(g->batches, m->req_id);
    if (!b)
        return;
    char msg[256];
    snprintf(msg, sizeof msg, "%.*s", (int)m->message_len, m->message ? (const char *)m->message : "");
    for (size_t i = 0; i < b->n; i++) {
        gw_pending_t *p = cairn_u64map_get(g->pending, b->ids[i]);
        if (!p)
            continue; /* timed out meanwhile */
        if (m->code) {
            gw_fail(g, p, (int)m->code, msg);
            gw_drop_pending(g, p->req_id);
        } else
            send_range(g, p, m->index);
    }
    free(b->ids);
    free(b);
}

/* ------------------------------------------------------------------ h2srv callbacks */

static int is_streaming(void *ud, const char *path)
{
    const gw_method_t *m = find_method(ud, path);
    return m && m->kind == GW_STREAM;
}

static void unimplemented(cairn_gateway_t *g, cairn_call_id_t call, const char *path)
{
    /* grpc-go's texts for a method the server does not register */
    char msg[300];
    const char *slash = strrchr(path, '/');
    if (path[0] == '/' && slash && slash != path)
        snprintf(msg, sizeof msg, "unknown method %s for service %.*s", slash + 1, (int)(slash - path - 1), path + 1);
    else
        snprintf(msg, sizeof msg, "malformed method name: \"%s\"", path);
    gw_status(g, call, CAIRN_GRPC_UNIMPLEMENTED, msg);
}

static void on_message(void *ud, cairn_call_id_t call, const char *path, const uint8_t *msg, size_t len,
                       const cairn_h2_meta_t *meta)
{
    cairn_gateway_t *g = ud;
    const gw_method_t *mt = find_method(g, path);
    if (mt && (mt->kind == GW_UNARY || !cairn_u64map_get(g->calls, call)))
        gw_metrics_call_started(g, call, mt); /* once per call: a stream's first message */
    if (!mt || !mt->handler) {
        unimplemented(g, call, path);
        return;
    }
    if (mt->kind == GW_UNARY) {
        gw_call_t c = {call, mt, NULL};
        mt->handler(g, &c, msg, len, meta);
        return;
    }
    gw_call_t *c = cairn_u64map_get(g->calls, call);
    if (!c) { /* a stream's first message */
        if (!(c = calloc(1, sizeof *c)) || cairn_u64map_put(g->calls, call, c)) {
            free(c);
            gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
            return;
        }
        c->id = call;
        c->method = mt;
    }
    mt->handler(g, c, msg, len, meta);
}

static void on_half_close(void *ud, cairn_call_id_t call)
{
    cairn_gateway_t *g = ud;
    gw_call_t *c = cairn_u64map_get(g->calls, call);
    if (c && c->method->half_close)
        c->method->half_close(g, c);
}

static void close_call(cairn_gateway_t *g, gw_call_t *c)
{
    if (c->method->close)
        c->method->close(g, c);
    free(c);
}

static void on_status(void *ud, cairn_call_id_t call, int grpc_status)
{
    gw_metrics_call_status(ud, call, grpc_status);
}

static void on_close(void *ud, cairn_call_id_t call)
{
    cairn_gateway_t *g = ud;
    gw_metrics_call_closed(g, call);
    cairn_u64map_take(g->json_calls, call); /* a JSON call abandoned before its answer */
    gw_call_t *c = cairn_u64map_take(g->calls, call);
    if (c)
        close_call(g, c);
    jstream_free(cairn_u64map_take(g->json_streams, call)); /* after close: it may still end it */
    jbody_free(cairn_u64map_take(g->json_bodies, call)); /* a client gone before its body ended */
}

static void health_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    http1_json(g, p->call, 503, "{\"health\":\"false\"}");
}

/* The alarms this member applied: any (NOSPACE, CORRUPT) makes it unhealthy, as etcd 3.4's
 * /health says (503, no reason given in 3.4). */
static void health_alarms_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len,
                             const cairn_ipc_msg_t *m)
{
    Etcdserverpb__AlarmResponse *r = etcdserverpb__alarm_response__unpack(NULL, len, body);
    int alarms = r ? (int)r->n_alarms : 0;
    if (r)
        etcdserverpb__alarm_response__free_unpacked(r, NULL);
    http1_json(g, p->call, alarms ? 503 : 200, alarms ? "{\"health\":\"false\"}" : "{\"health\":\"true\"}");
}

/* the alarm check could not be made: the read succeeded, so healthy as far as is known */
static void health_alarms_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    http1_json(g, p->call, 200, "{\"health\":\"true\"}");
}

static const gw_answer_t answer_health_alarms = {.ok = health_alarms_ok, .fail = health_alarms_fail};

static void health_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    gw_pending_t *q = gw_add_pending(g, p->call, &answer_health_alarms, 2000);
    cairn_ipc_msg_t r = {.type = CAIRN_IPC_MAINT, .op = CAIRN_MAINT_ALARMS};
    if (!q) {
        http1_json(g, p->call, 200, "{\"health\":\"true\"}");
        return;
    }
    r.req_id = q->req_id;
    if (gw_send_ipc(g, g->stored, &r)) {
        gw_drop_pending(g, q->req_id);
        http1_json(g, p->call, 200, "{\"health\":\"true\"}");
    }
}

/* /health: etcd 3.4 is healthy when a linearizable read of the store succeeds and no alarm is
 * active */
static const gw_answer_t answer_health = {.ok = health_ok, .fail = health_fail};

/* A JSON answer that is not a stream's (a request refused before any stream began). */
static void json_refuse(cairn_gateway_t *g, cairn_call_id_t req, int code, const char *message)
{
    size_t n = 0;
    char *json = gw_json_error(code, message, &n);
    cairn_h2srv_http1_reply(g->srv, req, gw_json_http_status(code), JSON_CT, (const uint8_t *)(json ? json : ""),
                            json ? n : 0);
    free(json);
    gw_metrics_call_status(g, req, code);
}

/* Starts the call of a JSON stream (its gw_call_t in g->calls, as a gRPC stream's). 0, or an
 * error answered here. */
static int jstream_open_call(cairn_gateway_t *g, cairn_call_id_t req, gw_jstream_t *js)
{
    gw_call_t *c = calloc(1, sizeof *c);
    if (!c || cairn_u64map_put(g->calls, req, c)) {
        free(c);
        gw_stream_end(g, req, cairn_etcd_err_code(CAIRN_ETCD_TOO_MANY_REQUESTS),
                      cairn_etcd_err_text(CAIRN_ETCD_TOO_MANY_REQUESTS));
        return CAIRN_ENOMEM; /* (json_streams' entry goes with on_close) */
    }
    c->id = req;
    c->method = js->mt;
    js->call = c;
    return 0;
}

/* A request that did not convert before any answer went out: the whole answer is the error,
 * as grpc-gateway's HTTPError writes it. */
static void jstream_refuse(cairn_gateway_t *g, cairn_call_id_t req, gw_jstream_t *js, int code, const char *message)
{
    size_t n = 0;
    char *json = gw_json_error(code, message, &n);
    js->ended = 1;
    gw_metrics_call_status(g, req, code);
    cairn_h2srv_http1_stream_end(g->srv, req, gw_json_http_status(code), JSON_CT, (const uint8_t *)(json ? json : ""),
                                 json ? n : 0);
    free(json);
}

/* The sending side is closed (the body ended, or a request in it did not convert): the
 * row's half_close, as grpc-gateway's CloseSend. */
static void jstream_stop(cairn_gateway_t *g, cairn_call_id_t req, gw_jstream_t *js)
{
    js->stopped = 1;
    if (!js->call && !js->ended && jstream_open_call(g, req, js))
        return; /* (an empty body still starts the call: a keepalive then ends at once) */
    if (!js->ended && js->mt->half_close && cairn_u64map_get(g->calls, req) == js->call)
        js->mt->half_close(g, js->call);
}

/* Hands the client stream's requests in [text, text + len) to the handler, one at a time as
 * grpc-gateway's json.Decoder reads them; end: no more body follows. Returns the bytes taken
 * (a request cut at the end of what came so far waits for the rest). */
static size_t jstream_feed(cairn_gateway_t *g, cairn_call_id_t req, gw_jstream_t *js, const char *text, size_t len,
                           int end, const cairn_h2_meta_t *meta)
{
    size_t off = 0;
    while (!js->ended && !js->stopped) {
        uint8_t *pb = NULL;
        size_t pb_len = 0, used = 0;
        char err[512];
        int rc = gw_json_to_pb_next(js->in_d, text + off, len - off, &used, &pb, &pb_len, err, sizeof err);
        if (rc == CAIRN_ENOTFOUND) {
            off = len; /* white space */
            if (end)
                jstream_stop(g, req, js);
            break;
        }
        if (rc == CAIRN_EINVAL && !end && strcmp(err, "unexpected EOF") == 0)
            break; /* the rest of this request is still to come */
        if (rc) {
            /* the first request: the decoder's error is returned as it is, so code 2 (Unknown);
             * a later one only ends the sending */
            if (!js->call)
                jstream_refuse(g, req, js, rc == CAIRN_ENOMEM ? CAIRN_GRPC_RESOURCE_EXHAUSTED : CAIRN_GRPC_UNKNOWN, err);
            else
                jstream_stop(g, req, js);
            break;
        }
        off += used;
        if (!js->call && jstream_open_call(g, req, js)) {
            free(pb);
            break;
        }
        js->mt->handler(g, js->call, pb, pb_len, meta);
        free(pb);
        if (cairn_u64map_get(g->calls, req) != js->call)
            break;
    }
    return off;
}

/* A GW_STREAM row through the JSON gateway, as grpc-gateway 1.x's generated code does it
 * (gw_json_kind_t): the call lives in g->calls like a gRPC stream (its row's close runs from
 * on_close, which h2srv delivers once the streamed answer ended or the client went away), and
 * its answers go out through gw_stream_send / gw_stream_end, which find it in json_streams.
 * A client stream's body may come chunked (curl -T -: an interactive watch); its requests
 * are then handed over as they arrive (on_http1_body). */
static void json_stream_call(cairn_gateway_t *g, cairn_call_id_t req, const gw_method_t *mt,
                             const ProtobufCMessageDescriptor *in, const ProtobufCMessageDescriptor *out,
                             const uint8_t *body, size_t body_len, const cairn_h2_meta_t *meta)
{
    const char *text = (const char *)body;
    int bidi = mt->json_kind == GW_JSON_BIDI;
    uint8_t *pb = NULL;
    size_t pb_len = 0;
    char err[512];
    if (!bidi) {
        int rc = gw_json_to_pb(in, text, body_len, &pb, &pb_len, err, sizeof err);
        if (rc) { /* a single request is refused with InvalidArgument, as unary */
            json_refuse(g, req, rc == CAIRN_ENOMEM ? CAIRN_GRPC_RESOURCE_EXHAUSTED : CAIRN_GRPC_INVALID_ARGUMENT, err);
            return;
        }
    }
    gw_jstream_t *js = calloc(1, sizeof *js);
    if (!js || cairn_u64map_put(g->json_streams, req, js)) {
        free(js);
        free(pb);
        json_refuse(g, req, cairn_etcd_err_code(CAIRN_ETCD_TOO_MANY_REQUESTS),
                    cairn_etcd_err_text(CAIRN_ETCD_TOO_MANY_REQUESTS));
        return;
    }
    js->out = out;
    js->in_d = in;
    js->mt = mt;
    js->kind = mt->json_kind;
    if (js->kind != GW_JSON_UNARY)
        cairn_h2srv_http1_stream_begin(g->srv, req);
    if (bidi) {
        if (meta->body_follows) {
            /* the requests come with the chunks: keep what the handlers may read of meta */
            js->reading = 1;
            js->meta = *meta;
            js->meta.body_follows = 0;
            snprintf(js->authority, sizeof js->authority, "%s", meta->authority ? meta->authority : "");
            js->meta.authority = js->authority;
            js->meta.token = meta->token ? (js->token = strdup(meta->token)) : NULL;
            js->meta.client_cn = meta->client_cn ? (js->cn = strdup(meta->client_cn)) : NULL;
            return;
        }
        jstream_feed(g, req, js, text, body_len, 1, meta);
        return;
    }
    if (jstream_open_call(g, req, js) == 0) {
        gw_call_t *c = js->call;
        mt->handler(g, c, pb, pb_len, meta);
        if (!js->ended && mt->half_close && cairn_u64map_get(g->calls, req) == c)
            mt->half_close(g, c);
    }
    free(pb);
}

/* The method row of a JSON route ("/v3/kv/range", "/v3beta/watch"), or NULL. */
static const gw_method_t *json_route(const cairn_gateway_t *g, const char *path)
{
    char route[256];
    if (strncmp(path, "/v3beta/", 8) == 0)
        snprintf(route, sizeof route, "/v3/%s", path + 8);
    else if (strncmp(path, "/v3/", 4) == 0)
        snprintf(route, sizeof route, "%s", path);
    else
        return NULL;
    for (size_t i = 0; i < g->n_methods; i++)
        if (g->methods[i]->json && strcmp(g->methods[i]->json, route) == 0)
            return g->methods[i];
    return NULL;
}

/* A request whose chunked body is read whole before it is served (every route but a client
 * stream's, which reads its requests as they come), as Go's server reads any body. */
struct gw_jbody {
    char method[16], path[256];
    uint8_t *buf;
    size_t len, cap;
    cairn_h2_meta_t meta;
    char authority[256];
    char *token, *cn;
};

static void jbody_free(gw_jbody_t *b)
{
    if (b) {
        free(b->buf);
        free(b->token);
        free(b->cn);
        free(b);
    }
}

/* The most a chunked body may hold: as h2srv's limit on a body with a Content-Length. */
static size_t body_cap(const cairn_gateway_t *g)
{
    size_t cap = g->cfg->max_request_bytes ? g->cfg->max_request_bytes : 1572864;
    return cap / 2 * 3 + 4096;
}

static void on_http1_async(void *ud, cairn_call_id_t req, const char *method, const char *path, const uint8_t *body,
                           size_t body_len, const cairn_h2_meta_t *meta);

/* A chunk of a chunked body being read whole; at its end the request is served. */
static void jbody_chunk(cairn_gateway_t *g, cairn_call_id_t req, gw_jbody_t *b, const uint8_t *data, size_t len,
                        int end)
{
    if (b->len + len > body_cap(g)) {
        jbody_free(cairn_u64map_take(g->json_bodies, req));
        static const char tl[] = "Payload Too Large";
        cairn_h2srv_http1_reply(g->srv, req, 413, NULL, (const uint8_t *)tl, sizeof tl - 1);
        return;
    }
    if (b->len + len > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + len)
            nc *= 2;
        uint8_t *np = realloc(b->buf, nc);
        if (!np) {
            jbody_free(cairn_u64map_take(g->json_bodies, req));
            static const char oom[] = "out of memory";
            cairn_h2srv_http1_reply(g->srv, req, 503, NULL, (const uint8_t *)oom, sizeof oom - 1);
            return;
        }
        b->buf = np;
        b->cap = nc;
    }
    if (len)
        memcpy(b->buf + b->len, data, len);
    b->len += len;
    if (end) {
        cairn_u64map_take(g->json_bodies, req);
        on_http1_async(g, req, b->method, b->path, b->buf ? b->buf : (const uint8_t *)"", b->len, &b->meta);
        jbody_free(b);
    }
}

/* A chunk of a chunked body (h2srv's on_http1_body): a client stream's, or one read whole. */
static void on_http1_body(void *ud, cairn_call_id_t req, const uint8_t *data, size_t len, int end)
{
    cairn_gateway_t *g = ud;
    gw_jbody_t *b = cairn_u64map_get(g->json_bodies, req);
    if (b) {
        jbody_chunk(g, req, b, data, len, end);
        return;
    }
    gw_jstream_t *js = cairn_u64map_get(g->json_streams, req);
    if (!js || !js->reading)
        return;
    if (end)
        js->reading = 0;
    if (js->ended || js->stopped)
        return; /* the rest is not read */
    if (js->in_len + len > body_cap(g)) {
        /* a request longer than any whole body may be: as a request that does not convert */
        if (!js->call)
            jstream_refuse(g, req, js, CAIRN_GRPC_RESOURCE_EXHAUSTED, "request is too large");
        else
            jstream_stop(g, req, js);
        return;
    }
    if (len) {
        if (js->in_len + len > js->in_cap) {
            size_t nc = js->in_cap ? js->in_cap : 4096;
            while (nc < js->in_len + len)
                nc *= 2;
            uint8_t *np = realloc(js->in, nc);
            if (!np) {
                if (!js->call)
                    jstream_refuse(g, req, js, CAIRN_GRPC_RESOURCE_EXHAUSTED, "out of memory");
                else
                    jstream_stop(g, req, js);
                return;
            }
            js->in = np;
            js->in_cap = nc;
        }
        memcpy(js->in + js->in_len, data, len);
        js->in_len += len;
    }
    size_t used = jstream_feed(g, req, js, (const char *)js->in, js->in_len, end, &js->meta);
    /* (js lives until on_close, which h2srv never delivers from inside this callback); an
     * empty body never allocated js->in, and memmove from NULL is undefined even for 0 bytes */
    if (used) {
        memmove(js->in, js->in + used, js->in_len - used);
        js->in_len -= used;
    }
}

/* The JSON gateway (ETCD_API.md §5): POST <route> with a JSON body, route being a method
 * row's json ("/v3/kv/range"); etcd 3.4 serves /v3beta/ as /v3/ (not /v3alpha/). As grpc-
 * gateway: a path of no row is 404 "Not Found", another HTTP method 405, a body that does not
 * convert 400 with code 3 and Go's text. */
static void json_call(cairn_gateway_t *g, cairn_call_id_t req, const char *method, const char *path,
                      const uint8_t *body, size_t body_len, const cairn_h2_meta_t *meta)
{
    const gw_method_t *mt = json_route(g, path);
    if (!mt) {
        cairn_h2srv_http1_reply(g->srv, req, 404, "text/plain; charset=utf-8", (const uint8_t *)"Not Found\n", 10);
        return;
    }
    if (strcmp(method, "POST") != 0) {
        cairn_h2srv_http1_reply(g->srv, req, 405, "text/plain; charset=utf-8", (const uint8_t *)"Method Not Allowed\n",
                                19);
        return;
    }
    if (meta->body_follows && !(mt->kind == GW_STREAM && mt->handler && mt->json_kind == GW_JSON_BIDI)) {
        /* a chunked body is read as it comes by a client stream only (an interactive watch);
         * elsewhere it is refused as before h2srv read such bodies */
        cairn_h2srv_http1_reply(g->srv, req, 501, NULL, (const uint8_t *)"Not Implemented", 15);
        return;
    }
    gw_metrics_call_started(g, req, mt); /* etcd's gateway is a gRPC client of its own server */
    const ProtobufCMessageDescriptor *in = NULL, *out = NULL;
    if (mt->handler && mt->kind == GW_STREAM && mt->json_kind != GW_JSON_NONE && !gw_json_method(mt->path, &in, &out)) {
        json_stream_call(g, req, mt, in, out, body, body_len, meta);
        return;
    }
    if (!mt->handler || mt->kind != GW_UNARY || gw_json_method(mt->path, &in, &out) ||
        cairn_u64map_put(g->json_calls, req, (void *)out)) {
        char *json = gw_json_error(CAIRN_GRPC_UNIMPLEMENTED, "not served by this JSON gateway yet", NULL);
        http1_json(g, req, gw_json_http_status(CAIRN_GRPC_UNIMPLEMENTED), json ? json : "");
        free(json);
        gw_metrics_call_status(g, req, CAIRN_GRPC_UNIMPLEMENTED);
        return;
    }
    uint8_t *pb = NULL;
    size_t pb_len = 0;
    char err[512];
    int rc = gw_json_to_pb(in, (const char *)body, body_len, &pb, &pb_len, err, sizeof err);
    if (rc) {
        gw_status(g, req, rc == CAIRN_ENOMEM ? CAIRN_GRPC_RESOURCE_EXHAUSTED : CAIRN_GRPC_INVALID_ARGUMENT, err);
        return;
    }
    gw_call_t c = {req, mt, NULL};
    mt->handler(g, &c, pb, pb_len, meta);
    free(pb);
}

static void on_http1_async(void *ud, cairn_call_id_t req, const char *method, const char *path, const uint8_t *body,
                           size_t body_len, const cairn_h2_meta_t *meta)
{
    cairn_gateway_t *g = ud;
    char p[256];
    snprintf(p, sizeof p, "%s", path);
    char *q = strchr(p, '?');
    if (q)
        *q = 0;
    if (meta && meta->body_follows) {
        const gw_method_t *mt = strcmp(method, "POST") == 0 ? json_route(g, p) : NULL;
        if (!(mt && mt->kind == GW_STREAM && mt->handler && mt->json_kind == GW_JSON_BIDI)) {
            /* read the body whole first, then serve the request as if it had a Content-Length */
            gw_jbody_t *b = calloc(1, sizeof *b);
            if (!b || cairn_u64map_put(g->json_bodies, req, b)) {
                free(b);
                static const char oom[] = "out of memory";
                cairn_h2srv_http1_reply(g->srv, req, 503, NULL, (const uint8_t *)oom, sizeof oom - 1);
                return;
            }
            snprintf(b->method, sizeof b->method, "%s", method);
            snprintf(b->path, sizeof b->path, "%s", path);
            b->meta = *meta;
            b->meta.body_follows = 0;
            snprintf(b->authority, sizeof b->authority, "%s", meta->authority ? meta->authority : "");
            b->meta.authority = b->authority;
            b->meta.token = meta->token ? (b->token = strdup(meta->token)) : NULL;
            b->meta.client_cn = meta->client_cn ? (b->cn = strdup(meta->client_cn)) : NULL;
            if (body_len)
                jbody_chunk(g, req, b, body, body_len, 0);
            return;
        }
    }
    if (meta && meta->metrics_only && strcmp(p, "/metrics") != 0 && strcmp(p, "/health") != 0) {
        /* a --listen-metrics-urls listener serves the metrics and health endpoints only */
        cairn_h2srv_http1_reply(g->srv, req, 404, NULL, (const uint8_t *)"404 page not found\n", 19);
        return;
    }
    if (strcmp(p, "/health") == 0) {
        Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
        rr.key.data = (uint8_t *)"health";
        rr.key.len = 6;
        rr.keys_only = 1;
        rr.limit = 1;
        gw_pending_t *pd = gw_add_pending(g, req, &answer_health, 2000);
        size_t n = etcdserverpb__range_request__get_packed_size(&rr);
        if (!pd || !(pd->body = malloc(n ? n : 1))) {
            if (pd)
                gw_drop_pending(g, pd->req_id);
            http1_json(g, req, 503, "{\"health\":\"false\"}");
            return;
        }
        etcdserverpb__range_request__pack(&rr, pd->body);
        pd->body_len = n;
        gw_queue_read(g, pd);
    } else if (strcmp(p, "/version") == 0) {
        http1_json(g, req, 200, "{\"etcdserver\":\"" CAIRN_ETCD_VERSION "\",\"etcdcluster\":\"" CAIRN_ETCD_CLUSTER_VERSION "\"}");
    } else if (strcmp(p, "/metrics") == 0) {
        gw_serve_metrics(g, req);
    } else if (strncmp(p, "/v3/", 4) == 0 || strncmp(p, "/v3beta/", 8) == 0) {
        json_call(g, req, method, p, body, body_len, meta);
    } else {
        cairn_h2srv_http1_reply(g->srv, req, 404, NULL, (const uint8_t *)"404 page not found\n", 19);
    }
}

/* ------------------------------------------------------------------ IPC answers */

static void on_ipc(cairn_gateway_t *g, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected ipc message", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        return;
    }
    switch (m.type) {
    case CAIRN_IPC_READ_INDEX_RESP:
        on_read_index(g, &m);
        break;
    case CAIRN_IPC_RESULT_PART:
        on_result_part(g, &m);
        break;
    case CAIRN_IPC_HISTORY_RESP:
        gw_watch_on_history(g, &m);
        break;
    case CAIRN_IPC_PROPOSALS_LOST: { /* raftd rebuilt its state: every write in flight has an unknown outcome */
        char msg[256];
        snprintf(msg, sizeof msg, "%.*s", (int)m.message_len, m.message ? (const char *)m.message : "");
        for (size_t n = 1; n;) { /* collect, then take: taking while iterating may revisit slots */
            size_t pos = 0;
            uint64_t key, ids[256];
            void *val;
            n = 0;
            while (n < 256 && cairn_u64map_next(g->pending, &pos, &key, &val))
                if (((gw_pending_t *)val)->how->proposal)
                    ids[n++] = key;
            for (size_t i = 0; i < n; i++) {
                gw_pending_t *p = cairn_u64map_take(g->pending, ids[i]);
                gw_fail(g, p, (int)m.code, msg);
                free_pending(p);
            }
        }
        break;
    }
    case CAIRN_IPC_PROPOSE_FAIL:
    case CAIRN_IPC_LEASE_RESP:
    case CAIRN_IPC_LEASE_LIST_RESP:
    case CAIRN_IPC_RESULT:
    case CAIRN_IPC_STATUS_RESP:
    case CAIRN_IPC_ERROR: {
        gw_pending_t *p = cairn_u64map_take(g->pending, m.req_id);
        if (!p)
            break; /* timed out already */
        char msg[512];
        snprintf(msg, sizeof msg, "%.*s", (int)m.message_len, m.message ? (const char *)m.message : "");
        if (m.type == CAIRN_IPC_STATUS_RESP) {
            g->st = m;
            /* keep the numbers only: what the decoder owns goes with m */
            g->st.entries = NULL;
            memset(g->st.priv_, 0, sizeof g->st.priv_);
            g->st.message = g->st.body = g->st.urls = g->st.name = g->st.key = g->st.range_end = NULL;
            g->st.voters = g->st.learners = NULL;
            g->st_at = cairn_now_ms();
            answer(g, p, m.body, m.body_len, &m);
        } else if (m.type == CAIRN_IPC_ERROR) {
            gw_fail_etcd(g, p, CAIRN_ETCD_INTERNAL);
        } else if (m.code) {
            gw_fail(g, p, (int)m.code, msg);
        } else if (p->part || p->part_bad) {
            /* the last piece of an answer sent in parts */
            if (p->part_bad == 2) {
                gw_fail_etcd(g, p, CAIRN_ETCD_ANSWER_TOO_LARGE);
            } else if (p->part_bad || p->part_len + m.body_len != p->part_total) {
                gw_fail_etcd(g, p, CAIRN_ETCD_ANSWER_LOST);
            } else {
                memcpy(p->part + p->part_len, m.body, m.body_len);
                answer(g, p, p->part, p->part_total, &m);
            }
        } else {
            answer(g, p, m.body, m.body_len, &m);
        }
        free_pending(p);
        break;
    }
    default:
        cairn_warn("unexpected ipc message", "type=%s", cairn_ipc_type_name(m.type));
    }
    cairn_ipc_msg_release(&m);
}

static int on_ipc_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    on_ipc(ctx, frame, len);
    return 0;
}

/* The status stored reports every second (metrics, the header of Cluster answers): on_ipc
 * keeps it in g->st; nobody waits for it. */
static void status_poll_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len,
                           const cairn_ipc_msg_t *m)
{
}
static void status_poll_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message) {}
static const gw_answer_t answer_status_poll = {.ok = status_poll_ok, .fail = status_poll_fail};

/* Whether a client call still waits for an answer (the gateway's own status polls do not count). */
static int calls_in_flight(cairn_gateway_t *g)
{
    size_t pos = 0;
    uint64_t key;
    void *val;
    while (cairn_u64map_next(g->pending, &pos, &key, &val))
        if (((gw_pending_t *)val)->call)
            return 1;
    return 0;
}

static void sweep(cairn_gateway_t *g, int64_t now)
{
    size_t pos = 0;
    uint64_t key;
    void *val;
    /* collect first: taking while iterating may revisit moved slots */
    uint64_t expired[256];
    size_t n = 0;
    while (n < 256 && cairn_u64map_next(g->pending, &pos, &key, &val))
        if (((gw_pending_t *)val)->deadline <= now)
            expired[n++] = key;
    for (size_t i = 0; i < n; i++) {
        gw_pending_t *p = cairn_u64map_take(g->pending, expired[i]);
        if (!p)
            continue;
        gw_fail_etcd(g, p, CAIRN_ETCD_TIMEOUT);
        free_pending(p);
    }
}

/* ------------------------------------------------------------------ lifecycle */

cairn_gateway_t *cairn_gateway_new(cairn_config_t *cfg)
{
    cairn_gateway_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->cfg = cfg;
    /* request ids start at a random point: an answer stored kept for this gateway's previous
     * run (cairn_zmq_outbox) must not meet a new request that happens to carry its id */
    g->next_id = cairn_random_u64() >> 1;
    g->pending = cairn_u64map_new();
    g->batches = cairn_u64map_new();
    g->calls = cairn_u64map_new();
    g->json_calls = cairn_u64map_new();
    g->json_streams = cairn_u64map_new();
    g->json_bodies = cairn_u64map_new();
    int rc;
    char merr[256];
    if (!(g->metrics = gw_metrics_new(cfg->metrics == CAIRN_METRICS_EXTENSIVE, &rc, merr, sizeof merr))) {
        cairn_error("cannot set up metrics", "err=\"%s\"", merr);
        goto fail;
    }
    if (!g->pending || !g->batches || !g->calls || !g->json_calls || !g->json_streams || !g->json_bodies ||
        build_methods(g))
        goto fail;
    char gwid[64];
    if (cfg->gateway_id && *cfg->gateway_id)
        snprintf(gwid, sizeof gwid, "%s", cfg->gateway_id);
    else
        snprintf(gwid, sizeof gwid, "gw%d", (int)getpid());
    g->origin_len = (size_t)snprintf(g->origin, sizeof g->origin, "%016llx/%s",
                                     (unsigned long long)cairn_config_member_id(cfg), gwid);
    char ep_r[512], ep_s[512];
    if (cairn_config_ipc_endpoint(cfg, "raftd", ep_r, sizeof ep_r) < 0 ||
        cairn_config_ipc_endpoint(cfg, "stored", ep_s, sizeof ep_s) < 0) {
        cairn_error("ipc endpoint path too long", "run_dir=%s", cfg->run_dir);
        goto fail;
    }
    g->raftd = cairn_zmq_dealer_connect(ep_r, g->origin, &rc);
    g->stored = cairn_zmq_dealer_connect(ep_s, g->origin, &rc);
    if (!g->raftd || !g->stored)
        goto fail;
    if ((rc = gw_watch_new(g)) != 0) {
        cairn_error("cannot subscribe to the events feed", "err=\"%s\"", cairn_strerror(rc));
        goto fail;
    }
    char tlsdir[4096];
    snprintf(tlsdir, sizeof tlsdir, "%s/fixtures/client", cfg->data_dir);
    cairn_h2srv_opts_t o = {
        .listen_urls = (const char *const *)cfg->listen_client_urls.v,
        .n_listen = cfg->listen_client_urls.n,
        .cert_file = cfg->cert_file && *cfg->cert_file ? cfg->cert_file : NULL,
        .key_file = cfg->key_file && *cfg->key_file ? cfg->key_file : NULL,
        .auto_tls = cfg->auto_tls,
        .auto_tls_dir = tlsdir,
        .trusted_ca_file = cfg->trusted_ca_file && *cfg->trusted_ca_file ? cfg->trusted_ca_file : NULL,
        .client_cert_auth = cfg->client_cert_auth,
        .max_request_bytes = cfg->max_request_bytes,
        .reuseport = 1,
        .metrics_urls = (const char *const *)cfg->listen_metrics_urls.v,
        .n_metrics = cfg->listen_metrics_urls.n,
        .keepalive_interval_ms = cfg->grpc_keepalive_interval_ms,
        .keepalive_timeout_ms = cfg->grpc_keepalive_timeout_ms,
        .header_timeout_ms = cfg->client_header_timeout_ms > 0 ? cfg->client_header_timeout_ms : -1,
        .max_conns = cfg->max_client_connections,
    };
    cairn_h2srv_handlers_t h = {.on_message = on_message, .on_half_close = on_half_close, .on_close = on_close,
                                .on_status = on_status, .is_streaming = is_streaming,
                                .on_http1_async = on_http1_async, .on_http1_body = on_http1_body, .ud = g};
    char err[512];
    g->srv = cairn_h2srv_new(&o, &h, &rc, err, sizeof err);
    if (!g->srv) {
        cairn_error("cannot listen for clients", "err=\"%s\"", err);
        goto fail;
    }
    cairn_info("gatewayd ready", "origin=%s urls=%zu", g->origin, cfg->listen_client_urls.n);
    return g;
fail:
    cairn_gateway_destroy(&g);
    return NULL;
}

void cairn_gateway_destroy(cairn_gateway_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_gateway_t *g = *self_p;
    cairn_h2srv_destroy(&g->srv);
    zsock_destroy(&g->raftd);
    zsock_destroy(&g->stored);
    if (g->pending) {
        size_t pos = 0;
        uint64_t k;
        void *v;
        while (cairn_u64map_next(g->pending, &pos, &k, &v))
            free_pending(v);
        cairn_u64map_destroy(&g->pending);
    }
    if (g->batches) {
        size_t pos = 0;
        uint64_t k;
        void *v;
        while (cairn_u64map_next(g->batches, &pos, &k, &v)) {
            free(((gw_read_batch_t *)v)->ids);
            free(v);
        }
        cairn_u64map_destroy(&g->batches);
    }
    if (g->calls) {
        size_t pos = 0;
        uint64_t k;
        void *v;
        while (cairn_u64map_next(g->calls, &pos, &k, &v))
            close_call(g, v);
        cairn_u64map_destroy(&g->calls);
    }
    cairn_u64map_destroy(&g->json_calls);
    if (g->json_streams) {
        size_t pos = 0;
        uint64_t k;
        void *v;
        while (cairn_u64map_next(g->json_streams, &pos, &k, &v))
            jstream_free(v);
        cairn_u64map_destroy(&g->json_streams);
    }
    if (g->json_bodies) {
        size_t pos = 0;
        uint64_t k;
        void *v;
        while (cairn_u64map_next(g->json_bodies, &pos, &k, &v))
            jbody_free(v);
        cairn_u64map_destroy(&g->json_bodies);
    }
    gw_watch_destroy(g); /* after the calls: closing a watch stream frees its watchers in the hub */
    gw_metrics_destroy(g);
    free(g->methods);
    free(g->queued_reads);
    free(g->items);
    free(g);
    *self_p = NULL;
}

int cairn_gateway_run(cairn_gateway_t *g, volatile int *stop)
{
    while (!*stop) {
        size_t want = cairn_h2srv_poll_count(g->srv) + 3;
        if (want > g->cap_items) {
            zmq_pollitem_t *ni = realloc(g->items, want * 2 * sizeof *ni);
            if (!ni)
                return CAIRN_ENOMEM;
            g->items = ni;
            g->cap_items = want * 2;
        }
        size_t n = cairn_h2srv_poll_fill(g->srv, g->items, g->cap_items - 3);
        g->items[n] = (zmq_pollitem_t){zsock_resolve(g->raftd), 0, ZMQ_POLLIN, 0};
        g->items[n + 1] = (zmq_pollitem_t){zsock_resolve(g->stored), 0, ZMQ_POLLIN, 0};
        g->items[n + 2] = (zmq_pollitem_t){gw_watch_socket(g), 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(g->items, (int)(n + 3), 100);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0)
            cairn_h2srv_poll_handle(g->srv, g->items, n);
        if (g->items[n].revents & ZMQ_POLLIN)
            cairn_zmq_drain(g->raftd, 0, 100000, on_ipc_frame, g);
        if (g->items[n + 1].revents & ZMQ_POLLIN)
            cairn_zmq_drain(g->stored, 0, 100000, on_ipc_frame, g);
        if (g->items[n + 2].revents & ZMQ_POLLIN)
            gw_watch_drain(g);
        flush_reads(g);
        int64_t now = cairn_now_ms();
        gw_watch_tick(g, now);
        if (now >= g->next_sweep) {
            sweep(g, now);
            g->next_sweep = now + 100;
        }
        if (now >= g->next_status_poll) {
            gw_pending_t *p = gw_add_pending(g, 0, &answer_status_poll, 2000);
            if (p) {
                cairn_ipc_msg_t m = {.type = CAIRN_IPC_STATUS, .req_id = p->req_id};
                if (gw_send_ipc(g, g->stored, &m))
                    gw_drop_pending(g, p->req_id);
            }
            g->next_status_poll = now + 1000;
        }
        cairn_h2srv_flush(g->srv);
    }
    /* Graceful: GOAWAY (no new calls), then the calls in flight get their answers - a write
     * already proposed is answered with its outcome rather than cut off, which a client could
     * only report as an error of unknown outcome. Answers come from stored (results) and from
     * raftd (read indexes, refusals), so both are read. Connections that stay open with
     * nothing in flight (watch streams, idle clients) get 500 ms; calls in flight get up to
     * DRAIN_MAX_MS, past which they end with the connection. */
    cairn_h2srv_drain(g->srv);
    int64_t start = cairn_now_ms(), now = start;
    while (cairn_h2srv_conn_count(g->srv) && now < start + DRAIN_MAX_MS) {
        if (now >= start + 500 && !calls_in_flight(g))
            break;
        size_t n = cairn_h2srv_poll_fill(g->srv, g->items, g->cap_items - 2);
        g->items[n] = (zmq_pollitem_t){zsock_resolve(g->raftd), 0, ZMQ_POLLIN, 0};
        g->items[n + 1] = (zmq_pollitem_t){zsock_resolve(g->stored), 0, ZMQ_POLLIN, 0};
        zmq_poll(g->items, (int)(n + 2), 20);
        cairn_h2srv_poll_handle(g->srv, g->items, n);
        cairn_zmq_drain(g->raftd, 0, 100000, on_ipc_frame, g);
        cairn_zmq_drain(g->stored, 0, 100000, on_ipc_frame, g);
        flush_reads(g);
        now = cairn_now_ms();
        if (now >= g->next_sweep) {
            sweep(g, now);
            g->next_sweep = now + 100;
        }
        cairn_h2srv_flush(g->srv);
    }
    cairn_info("gatewayd stopping", "drain_ms=%lld", (long long)(cairn_now_ms() - start));
    return 0;
}
