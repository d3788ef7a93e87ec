/* svc_election.c - etcd's v3election service (/v3electionpb.Election/...), as etcd 3.4.23
 * serves it (etcdserver/api/v3election/election.go over clientv3/concurrency/election.go).
 *
 *   Campaign  the engine in svc_lock.c (gw_cc_start, GW_CC_CAMPAIGN): session, the
 *             CreateRevision == 0 txn, a Proclaim when an existing key holds another value,
 *             wait until every older candidate is gone. A stream row, so that a client's reset
 *             resigns the candidate as etcd's canceled context does.
 *   Proclaim  "leader" missing: Unknown `"leader" field must be provided`. Else a session on
 *   Resign    leader.lease (0: a new 60 s lease, as etcd's NewSession grants one) and the
 *             CreateRevision == leader.rev txn (svc_lock.c). Proclaim not succeeded: "election:
 *             not leader"; Resign answers its header either way.
 *   Leader    a linearizable Range of the first-created key under name "/": {header, kv}, or
 *             Unknown "election: no leader".
 *   Observe   (a server stream) Election.observe's loop: Range(first created); a leader:
 *             send {header, kv}, then watch its key from header.revision + 1, sending every
 *             PUT (header revision: the watch response's) until its DELETE, then Range again.
 *             No leader: watch the prefix from the Range's header revision for the first PUT,
 *             send it (header revision = that key's mod revision) and watch its key from there.
 *             A failed Range or a watch canceled by compaction ends the stream with status OK
 *             (etcd's observe closes its channel and Observe returns nil).
 */
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "gw_internal.h"
#include "v3election.pb-c.h"

#define NO_LEADER_KEY "\"leader\" field must be provided"

/* the state of a stream row whose request was handled (further messages are ignored) */
static char seen;

static uint8_t *name_prefix(const ProtobufCBinaryData *name, size_t *len)
{
    uint8_t *p = malloc(name->len + 1);
    if (p) {
        if (name->len)
            memcpy(p, name->data, name->len);
        p[name->len] = '/';
        *len = name->len + 1;
    }
    return p;
}

/* ------------------------------------------------------------------ Campaign, Proclaim, Resign */

static void do_campaign(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    if (c->state)
        return; /* a unary method: one request; more are ignored */
    V3electionpb__CampaignRequest *r = v3electionpb__campaign_request__unpack(NULL, len, msg);
    if (!r) {
        c->state = &seen;
        gw_bad_request(g, c->id);
        return;
    }
    gw_cc_args_t a = {.name = r->name.data, .name_len = r->name.len, .value = r->value.data,
                      .value_len = r->value.len, .lease = r->lease};
    gw_cc_start(g, c, GW_CC_CAMPAIGN, &a, meta);
    if (!c->state)
        c->state = &seen;
    v3electionpb__campaign_request__free_unpacked(r, NULL);
}

static void campaign_close(cairn_gateway_t *g, gw_call_t *c)
{
    if (c->state == &seen)
        c->state = NULL;
    gw_cc_close(g, c);
}

static void do_proclaim(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    V3electionpb__ProclaimRequest *r = v3electionpb__proclaim_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    if (!r->leader) {
        gw_cc_error(g, c->id, NO_LEADER_KEY);
    } else {
        /* ResumeElection: the key and revision are the caller's word */
        gw_cc_args_t a = {.name = r->leader->name.data, .name_len = r->leader->name.len, .key = r->leader->key.data,
                          .key_len = r->leader->key.len, .value = r->value.data, .value_len = r->value.len,
                          .lease = r->leader->lease, .rev = r->leader->rev};
        gw_cc_start(g, c, GW_CC_PROCLAIM, &a, meta);
    }
    v3electionpb__proclaim_request__free_unpacked(r, NULL);
}

static void do_resign(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    V3electionpb__ResignRequest *r = v3electionpb__resign_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    if (!r->leader) {
        gw_cc_error(g, c->id, NO_LEADER_KEY);
    } else {
        gw_cc_args_t a = {.name = r->leader->name.data, .name_len = r->leader->name.len, .key = r->leader->key.data,
                          .key_len = r->leader->key.len, .lease = r->leader->lease, .rev = r->leader->rev};
        gw_cc_start(g, c, GW_CC_RESIGN, &a, meta);
    }
    v3electionpb__resign_request__free_unpacked(r, NULL);
}

/* ------------------------------------------------------------------ Leader */

static size_t pack_leader(const Etcdserverpb__ResponseHeader *h, const Mvccpb__KeyValue *kv, uint8_t **out)
{
    V3electionpb__LeaderResponse r = V3ELECTIONPB__LEADER_RESPONSE__INIT;
    r.header = (Etcdserverpb__ResponseHeader *)h;
    r.kv = (Mvccpb__KeyValue *)kv;
    size_t n = v3electionpb__leader_response__get_packed_size(&r);
    if ((*out = malloc(n ? n : 1)))
        v3electionpb__leader_response__pack(&r, *out);
    return n;
}

static void leader_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    Etcdserverpb__RangeResponse *r = etcdserverpb__range_response__unpack(NULL, len, body);
    if (!r) {
        gw_error(g, p->call, CAIRN_ETCD_INTERNAL);
        return;
    }
    if (r->n_kvs == 0) {
        gw_cc_error(g, p->call, "election: no leader");
    } else {
        uint8_t *buf;
        size_t n = pack_leader(r->header, r->kvs[0], &buf);
        if (buf)
            gw_reply(g, p->call, buf, n);
        else
            gw_error(g, p->call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        free(buf);
    }
    etcdserverpb__range_response__free_unpacked(r, NULL);
}

static void leader_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    gw_cc_error(g, p->call, message && *message ? message : "etcdserver: request timed out");
}

static const gw_answer_t answer_leader = {.ok = leader_ok, .fail = leader_fail};

static void do_leader(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    V3electionpb__LeaderRequest *r = v3electionpb__leader_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    size_t pl = 0;
    uint8_t *pfx = name_prefix(&r->name, &pl);
    v3electionpb__leader_request__free_unpacked(r, NULL);
    if (!pfx || !gw_cc_range_top(g, c->id, &answer_leader, NULL, pfx, pl, 0, 0, gw_timeout(meta)))
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
    free(pfx);
}

/* ------------------------------------------------------------------ Observe */

typedef struct {
    int refs; /* the stream + a Range in flight */
    int done;
    cairn_call_id_t call;
    uint8_t *pfx;
    size_t pfx_len;
    gw_iwatch_t *w;
} observe_t;

static void ob_unref(observe_t *o)
{
    if (--o->refs > 0)
        return;
    free(o->pfx);
    free(o);
}

static void ob_release(void *ctx)
{
    if (ctx)
        ob_unref(ctx);
}

/* The observe loop ended by itself: etcd's Observe returns nil, status OK. The state stays
 * with the call until the stream is gone. */
static void ob_end(cairn_gateway_t *g, observe_t *o)
{
    if (o->done)
        return;
    o->done = 1;
    gw_iwatch_cancel(g, &o->w);
    gw_stream_end(g, o->call, CAIRN_GRPC_OK, NULL);
}

static void ob_send(cairn_gateway_t *g, observe_t *o, const Etcdserverpb__ResponseHeader *h, const Mvccpb__KeyValue *kv)
{
    uint8_t *buf;
    size_t n = pack_leader(h, kv, &buf);
    if (!buf) {
        ob_end(g, o);
        return;
    }
    gw_stream_send(g, o->call, buf, n);
    free(buf);
}

static void ob_get(cairn_gateway_t *g, observe_t *o);

/* Watching the leader's key: its PUTs are new values, its DELETE a new election. */
static void ob_key_event(cairn_gateway_t *g, void *arg, const Mvccpb__Event *const *ev, size_t n, int64_t rev)
{
    observe_t *o = arg;
    for (size_t i = 0; i < n && !o->done; i++) {
        if (ev[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE) {
            gw_iwatch_cancel(g, &o->w);
            ob_get(g, o);
            return;
        }
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        gw_fill_header(g, &h);
        h.revision = rev;
        ob_send(g, o, &h, ev[i]->kv);
    }
}

static void ob_compacted(cairn_gateway_t *g, void *arg, int64_t compact_rev)
{
    observe_t *o = arg;
    o->w = NULL;
    ob_end(g, o);
}

static void ob_watch_key(cairn_gateway_t *g, observe_t *o, const Mvccpb__KeyValue *kv, int64_t from)
{
    o->w = gw_iwatch_new(g, kv->key.data, kv->key.len, NULL, 0, from, ob_key_event, ob_compacted, o);
    if (!o->w)
        ob_end(g, o);
}

/* No leader yet: the first PUT under the prefix is one. */
static void ob_prefix_event(cairn_gateway_t *g, void *arg, const Mvccpb__Event *const *ev, size_t n, int64_t rev)
{
    observe_t *o = arg;
    for (size_t i = 0; i < n; i++) {
        if (ev[i]->type != MVCCPB__EVENT__EVENT_TYPE__PUT)
            continue;
        gw_iwatch_cancel(g, &o->w);
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        gw_fill_header(g, &h);
        h.revision = ev[i]->kv->mod_revision;
        ob_send(g, o, &h, ev[i]->kv);
        if (!o->done)
            ob_watch_key(g, o, ev[i]->kv, h.revision + 1);
        return;
    }
}

static void ob_get_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    observe_t *o = p->ctx;
    if (o->done)
        return;
    Etcdserverpb__RangeResponse *r = etcdserverpb__range_response__unpack(NULL, len, body);
    if (!r || !r->header) {
        if (r)
            etcdserverpb__range_response__free_unpacked(r, NULL);
        ob_end(g, o);
        return;
    }
    if (r->n_kvs) {
        ob_send(g, o, r->header, r->kvs[0]);
        if (!o->done)
            ob_watch_key(g, o, r->kvs[0], r->header->revision + 1);
    } else {
        uint8_t *end = malloc(o->pfx_len);
        if (end)
            o->w = gw_iwatch_new(g, o->pfx, o->pfx_len, end, gw_cc_prefix_end(o->pfx, o->pfx_len, end),
                                 r->header->revision, ob_prefix_event, ob_compacted, o);
        free(end);
        if (!o->w)
            ob_end(g, o);
    }
    etcdserverpb__range_response__free_unpacked(r, NULL);
}

static void ob_get_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    observe_t *o = p->ctx;
    ob_end(g, o);
}

static const gw_answer_t answer_ob_get = {.ok = ob_get_ok, .fail = ob_get_fail, .release = ob_release};

static void ob_get(cairn_gateway_t *g, observe_t *o)
{
    if (!gw_cc_range_top(g, o->call, &answer_ob_get, o, o->pfx, o->pfx_len, 0, 0, -1)) {
        ob_end(g, o);
        return;
    }
    o->refs++;
}

static void do_observe(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    if (c->state)
        return; /* a server stream takes one request */
    V3electionpb__LeaderRequest *r = v3electionpb__leader_request__unpack(NULL, len, msg);
    if (!r) {
        c->state = &seen;
        gw_bad_request(g, c->id);
        return;
    }
    observe_t *o = calloc(1, sizeof *o);
    if (!o || !(o->pfx = name_prefix(&r->name, &o->pfx_len))) {
        free(o);
        v3electionpb__leader_request__free_unpacked(r, NULL);
        c->state = &seen;
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    v3electionpb__leader_request__free_unpacked(r, NULL);
    o->refs = 1;
    o->call = c->id;
    c->state = o;
    ob_get(g, o);
}

static void observe_half_close(cairn_gateway_t *g, gw_call_t *c)
{
    if (!c->state) {
        c->state = &seen;
        gw_status(g, c->id, CAIRN_GRPC_INTERNAL,
                  "grpc: client streaming protocol violation: no request message");
    }
}

static void observe_close(cairn_gateway_t *g, gw_call_t *c)
{
    observe_t *o = c->state;
    c->state = NULL;
    if (!o || o == (void *)&seen)
        return;
    o->done = 1;
    gw_iwatch_cancel(g, &o->w);
    ob_unref(o);
}

/* clang-format off */
static const gw_method_t rows[] = {
    /* path                                kind       handler      arg perm           json route               half_close          close           json */
    /* Campaign is unary on the wire; a stream row so that a client's reset reaches gw_cc_close */
    {"/v3electionpb.Election/Campaign",    GW_STREAM, do_campaign, 0,  GW_PERM_WRITE, "/v3/election/campaign", gw_cc_half_close,   campaign_close, GW_JSON_UNARY},
    {"/v3electionpb.Election/Proclaim",    GW_UNARY,  do_proclaim, 0,  GW_PERM_WRITE, "/v3/election/proclaim"},
    {"/v3electionpb.Election/Leader",      GW_UNARY,  do_leader,   0,  GW_PERM_READ,  "/v3/election/leader"},
    {"/v3electionpb.Election/Observe",     GW_STREAM, do_observe,  0,  GW_PERM_READ,  "/v3/election/observe",  observe_half_close, observe_close,  GW_JSON_SERVER_STREAM},
    {"/v3electionpb.Election/Resign",      GW_UNARY,  do_resign,   0,  GW_PERM_WRITE, "/v3/election/resign"},
};
/* clang-format on */

const gw_service_t gw_svc_election = GW_SERVICE("election", rows);
