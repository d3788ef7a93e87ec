/* svc_lease.c - etcd's Lease service; see gw_internal.h for how a method is declared.
 *
 * Where each answer comes from (DESIGN.md "raftd": the lease table is replicated state in
 * stored, the clock is the leader raftd's):
 *   - LeaseGrant, LeaseRevoke: proposals through the log (stored applies them; a revoke
 *     deletes the lease's keys in one revision). The ID (0: a random positive one) and the TTL
 *     (raised to the minimum, ceil(1.5 x election timeout), as etcd's lessor does) are decided
 *     here, before proposing, so that every member applies the same grant.
 *   - LeaseKeepAlive (a stream): each request is a LEASE_QUERY to raftd, which renews the lease
 *     on the leader (a follower's raftd forwards it); unknown or expired leases answer TTL 0.
 *     When the client half-closes, the stream ends (status 0) after the last answer, as etcd's
 *     (which is how POST /v3/lease/keepalive answers its body's requests and ends).
 *   - LeaseTimeToLive: the time left from the leader's raftd, then the keys (if asked) from the
 *     local stored; an unknown lease answers TTL -1 without error (etcd).
 *   - LeaseLeases: the local stored's table, page by page.
 */
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_kvcheck.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "gw_internal.h"

/* Keepalives one stream may have waiting for raftd: a client that floods is answered in
 * order up to this, and its further requests wait in the HTTP/2 window (it is not read on). */
#define KEEPALIVE_INFLIGHT 1000

static int64_t min_ttl(const cairn_gateway_t *g)
{
    int64_t hb = g->cfg->heartbeat_ms > 0 ? g->cfg->heartbeat_ms : 100;
    int64_t ticks = g->cfg->election_ms / hb;
    int64_t ms = (3 * ticks / 2) * hb;
    return (ms + 999) / 1000;
}

static void do_grant(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    Etcdserverpb__LeaseGrantRequest *r = etcdserverpb__lease_grant_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    /* etcd's quotaLeaseServer: a grant costs leaseOverhead (64) bytes, checked first */
    if (gw_over_quota(g, 64)) {
        etcdserverpb__lease_grant_request__free_unpacked(r, NULL);
        gw_error(g, c->id, CAIRN_ETCD_NO_SPACE);
        return;
    }
    if (r->ttl > CAIRN_LEASE_MAX_TTL) {
        etcdserverpb__lease_grant_request__free_unpacked(r, NULL);
        gw_error(g, c->id, CAIRN_ETCD_LEASE_TTL_TOO_LARGE);
        return;
    }
    Etcdserverpb__LeaseGrantRequest out = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    out.id = r->id;
    while (out.id == 0)
        out.id = (int64_t)(cairn_random_u64() & (uint64_t)INT64_MAX);
    out.ttl = r->ttl < min_ttl(g) ? min_ttl(g) : r->ttl;
    etcdserverpb__lease_grant_request__free_unpacked(r, NULL);
    uint8_t buf[32];
    size_t n = etcdserverpb__lease_grant_request__pack(&out, buf);
    gw_propose(g, c->id, CAIRN_REQ_LEASE_GRANT, buf, n, meta);
}

static void do_revoke(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    Etcdserverpb__LeaseRevokeRequest *r = etcdserverpb__lease_revoke_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    etcdserverpb__lease_revoke_request__free_unpacked(r, NULL);
    gw_propose(g, c->id, CAIRN_REQ_LEASE_REVOKE, msg, len, meta);
}

/* ------------------------------------------------------------------ keepalive stream */

typedef struct {
    size_t inflight;
    int gone;        /* the stream closed: answers still coming are dropped */
    int half_closed; /* the client sent its last request: the stream ends once all are answered */
    int refs;        /* the stream + every pending keepalive */
} ka_stream_t;

/* etcd's leaseKeepAlive returns (status OK) when Recv says the client is done, after
 * answering every request it had read: so here once the last answer went out. */
static void ka_maybe_end(cairn_gateway_t *g, ka_stream_t *s, cairn_call_id_t call)
{
    if (s->half_closed && !s->inflight && !s->gone) {
        s->half_closed = 0; /* once */
        gw_stream_end(g, call, CAIRN_GRPC_OK, NULL);
    }
}

static void ka_release(void *ctx)
{
    ka_stream_t *s = ctx;
    if (--s->refs == 0)
        free(s);
}

static void ka_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    ka_stream_t *s = p->ctx;
    s->inflight--;
    if (s->gone)
        return;
    Etcdserverpb__LeaseKeepAliveResponse r = ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    gw_fill_header(g, &h);
    r.header = &h;
    r.id = m->lease_id;
    r.ttl = m->ttl > 0 ? m->ttl : 0;
    uint8_t buf[128];
    size_t n = etcdserverpb__lease_keep_alive_response__pack(&r, buf);
    gw_stream_send(g, p->call, buf, n);
    ka_maybe_end(g, s, p->call);
}

/* No leader, leader changed...: etcd ends the stream with the error (clients open a new one).
 * An answer that never came (timed out inside the node) is just dropped: the client sends
 * its next keepalive in a third of the TTL anyway. */
static void ka_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    ka_stream_t *s = p->ctx;
    s->inflight--;
    if (s->gone)
        return;
    if (message && strstr(message, "timed out")) {
        ka_maybe_end(g, s, p->call);
        return;
    }
    s->half_closed = 0;
    gw_stream_end(g, p->call, code, message);
}

static const gw_answer_t answer_keepalive = {.ok = ka_ok, .fail = ka_fail, .release = ka_release};

static void do_keepalive(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len,
                         const cairn_h2_meta_t *meta)
{
    ka_stream_t *s = c->state;
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) {
            gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
            return;
        }
        s->refs = 1;
        c->state = s;
        /* no leader: raftd answers each keepalive "no leader" and the stream ends with it */
    }
    Etcdserverpb__LeaseKeepAliveRequest *r = etcdserverpb__lease_keep_alive_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    int64_t id = r->id;
    etcdserverpb__lease_keep_alive_request__free_unpacked(r, NULL);
    if (s->inflight >= KEEPALIVE_INFLIGHT)
        return; /* a flood: the oldest are being answered; this one is dropped like a lost packet */
    gw_pending_t *p = gw_add_pending(g, c->id, &answer_keepalive, -1);
    if (!p)
        return;
    p->ctx = s;
    s->refs++;
    s->inflight++;
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LEASE_QUERY, .req_id = p->req_id, .lease_id = id,
                         .op = CAIRN_LEASE_KEEPALIVE};
    if (gw_send_ipc(g, g->raftd, &m)) {
        s->inflight--;
        gw_drop_pending(g, p->req_id);
    }
}

static void ka_half_close(cairn_gateway_t *g, gw_call_t *c)
{
    ka_stream_t *s = c->state;
    if (!s) { /* no request at all: nothing to answer */
        gw_stream_end(g, c->id, CAIRN_GRPC_OK, NULL);
        return;
    }
    s->half_closed = 1;
    ka_maybe_end(g, s, c->id);
}

static void ka_close(cairn_gateway_t *g, gw_call_t *c)
{
    ka_stream_t *s = c->state;
    if (s) {
        s->gone = 1;
        ka_release(s);
    }
    c->state = NULL;
}

/* ------------------------------------------------------------------ time to live */

typedef struct {
    int64_t id, ttl, granted;
    int keys;
    uint8_t *req; /* the LeaseTimeToLiveRequest, for stored */
    size_t req_len;
    int64_t timeout_ms;
} ttl_ctx_t;

static void ttl_release(void *ctx)
{
    ttl_ctx_t *t = ctx;
    if (t) {
        free(t->req);
        free(t);
    }
}

static void ttl_reply(cairn_gateway_t *g, cairn_call_id_t call, const ttl_ctx_t *t,
                      Etcdserverpb__LeaseTimeToLiveResponse *from_store)
{
    Etcdserverpb__LeaseTimeToLiveResponse r = ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    gw_fill_header(g, &h);
    if (from_store && from_store->header)
        h.revision = from_store->header->revision; /* the store's now, not the last status */
    r.header = &h;
    r.id = t->id;
    r.ttl = t->ttl;
    r.grantedttl = t->ttl < 0 ? 0 : t->granted;
    if (from_store && t->ttl >= 0 && t->keys) {
        r.n_keys = from_store->n_keys;
        r.keys = from_store->keys;
    }
    size_t n = etcdserverpb__lease_time_to_live_response__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    etcdserverpb__lease_time_to_live_response__pack(&r, buf);
    gw_reply(g, call, buf, n);
    free(buf);
}

static void keys_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    Etcdserverpb__LeaseTimeToLiveResponse *s = etcdserverpb__lease_time_to_live_response__unpack(NULL, len, body);
    ttl_reply(g, p->call, p->ctx, s);
    if (s)
        etcdserverpb__lease_time_to_live_response__free_unpacked(s, NULL);
}

static const gw_answer_t answer_keys = {.ok = keys_ok, .release = ttl_release};

static void clock_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    ttl_ctx_t *t = p->ctx;
    t->ttl = m->ttl;
    t->granted = m->granted_ttl;
    /* the keys and the header's revision: the local store's; the context moves to the
     * second request */
    gw_pending_t *q = gw_add_pending(g, p->call, &answer_keys, t->timeout_ms);
    if (!q) {
        gw_error(g, p->call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    q->ctx = t;
    p->ctx = NULL;
    cairn_ipc_msg_t r = {.type = CAIRN_IPC_LEASE_READ, .req_id = q->req_id, .body = t->req, .body_len = t->req_len};
    if (gw_send_ipc(g, g->stored, &r)) {
        gw_drop_pending(g, q->req_id);
        gw_error(g, p->call, CAIRN_ETCD_TOO_MANY_REQUESTS);
    }
}

static const gw_answer_t answer_clock = {.ok = clock_ok, .release = ttl_release};

static void do_ttl(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    Etcdserverpb__LeaseTimeToLiveRequest *r = etcdserverpb__lease_time_to_live_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    ttl_ctx_t *t = calloc(1, sizeof *t);
    if (!t || !(t->req = malloc(len ? len : 1))) {
        free(t);
        etcdserverpb__lease_time_to_live_request__free_unpacked(r, NULL);
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    memcpy(t->req, msg, len);
    t->req_len = len;
    t->id = r->id;
    t->keys = r->keys;
    t->timeout_ms = gw_timeout(meta);
    etcdserverpb__lease_time_to_live_request__free_unpacked(r, NULL);
    gw_pending_t *p = gw_add_pending(g, c->id, &answer_clock, t->timeout_ms);
    if (!p) {
        ttl_release(t);
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    p->ctx = t;
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LEASE_QUERY, .req_id = p->req_id, .lease_id = t->id, .op = CAIRN_LEASE_TTL};
    if (gw_send_ipc(g, g->raftd, &m)) {
        gw_drop_pending(g, p->req_id);
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
    }
}

/* ------------------------------------------------------------------ leases */

typedef struct {
    Etcdserverpb__LeaseStatus *st;
    Etcdserverpb__LeaseStatus **ptrs;
    size_t n, cap;
    int64_t timeout_ms;
} list_ctx_t;

static void list_release(void *ctx)
{
    list_ctx_t *l = ctx;
    if (l) {
        free(l->st);
        free(l->ptrs);
        free(l);
    }
}

static const gw_answer_t answer_list;

static void list_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    list_ctx_t *l = p->ctx;
    size_t add = m->body_len / 16;
    if (l->n + add > l->cap) {
        size_t nc = l->cap ? l->cap : 1024;
        while (nc < l->n + add)
            nc *= 2;
        Etcdserverpb__LeaseStatus *ns = realloc(l->st, nc * sizeof *ns);
        if (!ns) {
            gw_error(g, p->call, CAIRN_ETCD_TOO_MANY_REQUESTS);
            return;
        }
        l->st = ns;
        l->cap = nc;
    }
    for (size_t i = 0; i < add; i++) {
        uint64_t id = 0;
        for (int b = 0; b < 8; b++)
            id = (id << 8) | m->body[i * 16 + (size_t)b];
        etcdserverpb__lease_status__init(&l->st[l->n]);
        l->st[l->n++].id = (int64_t)id;
    }
    if (m->more) { /* the next page, with the context moved to it */
        gw_pending_t *q = gw_add_pending(g, p->call, &answer_list, l->timeout_ms);
        if (!q) {
            gw_error(g, p->call, CAIRN_ETCD_TOO_MANY_REQUESTS);
            return;
        }
        q->ctx = l;
        p->ctx = NULL;
        cairn_ipc_msg_t r = {.type = CAIRN_IPC_LEASE_LIST, .req_id = q->req_id, .lease_id = m->lease_id};
        if (gw_send_ipc(g, g->stored, &r)) {
            gw_drop_pending(g, q->req_id);
            gw_error(g, p->call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        }
        return;
    }
    if (!(l->ptrs = malloc((l->n ? l->n : 1) * sizeof *l->ptrs))) {
        gw_error(g, p->call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    for (size_t i = 0; i < l->n; i++)
        l->ptrs[i] = &l->st[i];
    Etcdserverpb__LeaseLeasesResponse r = ETCDSERVERPB__LEASE_LEASES_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    gw_fill_header(g, &h);
    r.header = &h;
    r.leases = l->ptrs;
    r.n_leases = l->n;
    size_t n = etcdserverpb__lease_leases_response__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        gw_error(g, p->call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    etcdserverpb__lease_leases_response__pack(&r, buf);
    gw_reply(g, p->call, buf, n);
    free(buf);
}

static const gw_answer_t answer_list = {.ok = list_ok, .release = list_release};

static void do_leases(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    list_ctx_t *l = calloc(1, sizeof *l);
    if (!l) {
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    l->timeout_ms = gw_timeout(meta);
    gw_pending_t *p = gw_add_pending(g, c->id, &answer_list, l->timeout_ms);
    if (!p) {
        list_release(l);
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    p->ctx = l;
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LEASE_LIST, .req_id = p->req_id, .lease_id = 0};
    if (gw_send_ipc(g, g->stored, &m)) {
        gw_drop_pending(g, p->req_id);
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
    }
}

/* clang-format off */
static const gw_method_t rows[] = {
    /* path                                     kind       handler       arg perm           json route             half_close close */
    {"/etcdserverpb.Lease/LeaseGrant",          GW_UNARY,  do_grant,     0,  GW_PERM_WRITE, "/v3/lease/grant"},
    {"/etcdserverpb.Lease/LeaseRevoke",         GW_UNARY,  do_revoke,    0,  GW_PERM_WRITE, "/v3/lease/revoke"},
    {"/etcdserverpb.Lease/LeaseKeepAlive",      GW_STREAM, do_keepalive, 0,  GW_PERM_WRITE, "/v3/lease/keepalive", ka_half_close, ka_close, GW_JSON_BIDI},
    {"/etcdserverpb.Lease/LeaseTimeToLive",     GW_UNARY,  do_ttl,       0,  GW_PERM_READ,  "/v3/lease/timetolive"},
    {"/etcdserverpb.Lease/LeaseLeases",         GW_UNARY,  do_leases,    0,  GW_PERM_READ,  "/v3/lease/leases"},
};
/* clang-format on */

const gw_service_t gw_svc_lease = GW_SERVICE("lease", rows);
