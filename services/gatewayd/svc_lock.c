/* svc_lock.c - etcd's v3lock service (/v3lockpb.Lock/{Lock,Unlock}), and the engine it shares
 * with svc_election.c: etcd's clientv3/concurrency recipes (Session, Mutex, Election's
 * Campaign/Proclaim/Resign) run inside the gateway over Cairn's own proposals, linearizable
 * reads and internal watchers, step for step as etcd 3.4.23 runs them server-side
 * (etcdserver/api/v3lock/lock.go and v3election/election.go over clientv3/concurrency).
 *
 * One operation (a gw_cc_t) is a chain of asynchronous steps, each a pending request whose
 * answer starts the next:
 *
 *   session   lease 0: a LeaseGrant of TTL 60 s (a random positive ID) is proposed first
 *             (concurrency.NewSession's default). etcd's servers Orphan() the session at once,
 *             before waiting: the lease is NOT kept alive while a Lock or Campaign waits (seen
 *             on etcd 3.4.23: a waiting Lock's lease counts down from 60), so neither do we.
 *   Lock      key = name "/" lease-in-lowercase-hex (Go's %x: a negative lease is "-" hex).
 *             Txn If CreateRevision(key) == 0 Then Put(key, "", lease), Get(owner)
 *                                            Else Get(key), Get(owner)
 *             where Get(owner) = Range(name "/" prefix, sort by create revision ascending,
 *             limit 1). my_rev = the txn's header revision, or the existing key's create
 *             revision. No owner or the owner's create revision == my_rev: held (the reply's
 *             header is the txn's). Else wait for deletes (below; the header is the last
 *             Range's).
 *   Campaign  key as for Lock; Txn If CreateRevision(key) == 0 Then Put(key, value, lease)
 *             Else Get(key). rev = header revision or the existing create revision; if the
 *             existing value differs, Proclaim first (failing: Resign, answer its error).
 *             Then wait for deletes. The reply's header is the first txn's.
 *   Proclaim  Txn If CreateRevision(key) == rev Then Put(key, value, lease); not succeeded:
 *             "election: not leader".
 *   Resign    Txn If CreateRevision(key) == rev Then Delete(key); always answers the header.
 *   wait      (waitDeletes) a linearizable Range(prefix, sort by create revision descending,
 *             limit 1, max_create_revision = my_rev - 1): nothing: done. Else watch that key
 *             from the Range's header revision until a DELETE event, then Range again.
 *
 * Errors are answered as etcd's gRPC server answers the plain Go errors its embedded client
 * returns: code 2 (Unknown) with the error's text ("etcdserver: requested lease not found",
 * "election: not leader"...). When the call ends early - its deadline (grpc-timeout) passes
 * or the client resets it - while waiting, etcd's context is canceled and the recipe cleans
 * up: a Lock deletes its key (Mutex.Unlock), a Campaign resigns (conditional delete). To see
 * a reset at all, Lock and Campaign are declared GW_STREAM rows (the row's close is called
 * when the stream goes; a unary call would vanish silently) and answer with stream_send +
 * stream_end, which is the same bytes on the wire as a unary reply. A deadline is a timer:
 * a pending request that is never sent, whose fail (the gateway's sweep) fires at the
 * call's deadline and answers 4 "context deadline exceeded" (the client has usually given up
 * by then with its own DeadlineExceeded). A Lock with no deadline waits as long as it takes,
 * costing its gw_cc_t and one internal watcher.
 *
 * Unlock(key) is a DeleteRange(key) answered with its header.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_kvcheck.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "gw_internal.h"
#include "v3election.pb-c.h"
#include "v3lock.pb-c.h"

/* ------------------------------------------------------------------ shared with svc_election.c
 * (declared in gw_internal.h) */

#define SESSION_TTL 60 /* concurrency.defaultSessionTTL */

/* ------------------------------------------------------------------ helpers */

/* etcd's prefix end (clientv3.GetPrefixRangeEnd): the prefix with its last byte below 0xff
 * incremented and what follows dropped; all 0xff (or empty): "\0", every key. out holds n. */
size_t gw_cc_prefix_end(const uint8_t *k, size_t n, uint8_t *out)
{
    memcpy(out, k, n);
    for (size_t i = n; i > 0; i--)
        if (out[i - 1] < 0xff) {
            out[i - 1]++;
            return i;
        }
    out[0] = 0;
    return 1;
}

void gw_cc_error(cairn_gateway_t *g, cairn_call_id_t call, const char *message)
{
    gw_status(g, call, CAIRN_GRPC_UNKNOWN, message);
}

/* A linearizable Range of the first (last) created key under pfx, with create revision <=
 * max_create_rev when > 0: clientv3's Get(pfx, WithFirstCreate()) / (WithLastCreate(),
 * WithMaxCreateRev()). The answer (a RangeResponse) goes to how->ok with p->ctx = ctx; NULL
 * when it could not be queued (how->release may then be called with NULL). */
gw_pending_t *gw_cc_range_top(cairn_gateway_t *g, cairn_call_id_t call, const gw_answer_t *how, void *ctx,
                              const uint8_t *pfx, size_t pfx_len, int last, int64_t max_create_rev,
                              int64_t timeout_ms)
{
    uint8_t *end = malloc(pfx_len ? pfx_len : 1);
    if (!end)
        return NULL;
    Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)pfx;
    rr.key.len = pfx_len;
    rr.range_end.data = end;
    rr.range_end.len = gw_cc_prefix_end(pfx, pfx_len, end);
    rr.limit = 1;
    rr.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
    rr.sort_order = last ? ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND : ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    rr.max_create_revision = max_create_rev > 0 ? max_create_rev : 0;
    gw_pending_t *p = gw_add_pending(g, call, how, timeout_ms);
    size_t n = etcdserverpb__range_request__get_packed_size(&rr);
    if (!p || !(p->body = malloc(n ? n : 1))) {
        free(end);
        if (p)
            gw_drop_pending(g, p->req_id); /* how->release gets NULL */
        return NULL;
    }
    etcdserverpb__range_request__pack(&rr, p->body);
    p->body_len = n;
    free(end);
    p->ctx = ctx;
    gw_queue_read(g, p);
    return p;
}

/* ------------------------------------------------------------------ one operation */

enum { P_GRANT, P_TXN, P_PROCLAIM, P_WAIT };

typedef struct {
    int refs;  /* the operation itself (until it is finished) + each request in flight */
    int done;  /* answered or abandoned: answers still coming are ignored */
    int kind;  /* GW_CC_* */
    int phase; /* P_* */
    int stream; /* a GW_STREAM row: answered with stream_send + stream_end */
    int in_campaign; /* a Proclaim made by Campaign (failing: Resign) */
    cairn_call_id_t call;
    gw_call_t *gcall; /* stream rows: the call whose state points here */
    uint64_t timer_id; /* the deadline timer's pending request, 0: none */
    uint8_t *name, *pfx, *key, *val;
    size_t name_len, pfx_len, key_len, val_len;
    int64_t lease, rev;
    int granted; /* the lease was granted here (Campaign answers it as the leader's) */
    Etcdserverpb__ResponseHeader hdr; /* the header the answer will carry */
    gw_iwatch_t *w;
} gw_cc_t;

/* the state of a stream row whose operation is finished (its further messages are ignored) */
static char cc_finished;

static void cc_unref(gw_cc_t *cc)
{
    if (--cc->refs > 0)
        return;
    free(cc->name);
    free(cc->pfx);
    free(cc->key);
    free(cc->val);
    free(cc);
}

static void cc_release(void *ctx)
{
    if (ctx)
        cc_unref(ctx);
}

static void cc_step_wait(cairn_gateway_t *g, gw_cc_t *cc);
static void cc_proclaim(cairn_gateway_t *g, gw_cc_t *cc);
static void cc_resign(cairn_gateway_t *g, gw_cc_t *cc, int answer);

/* Ends the operation: no more answers, the watcher and the timer go, the operation's own
 * reference is dropped (cc may be freed by the time this returns). */
static void cc_finish(cairn_gateway_t *g, gw_cc_t *cc)
{
    if (cc->done)
        return;
    cc->done = 1;
    gw_iwatch_cancel(g, &cc->w);
    if (cc->timer_id && g->pending)
        gw_drop_pending(g, cc->timer_id); /* its release drops its reference */
    if (cc->gcall) {
        cc->gcall->state = &cc_finished;
        cc->gcall = NULL;
    }
    cc_unref(cc);
}

static void cc_reply(cairn_gateway_t *g, gw_cc_t *cc, const uint8_t *buf, size_t n)
{
    if (cc->stream) {
        gw_stream_send(g, cc->call, buf, n);
        gw_stream_end(g, cc->call, CAIRN_GRPC_OK, NULL);
    } else {
        gw_reply(g, cc->call, buf, n);
    }
    cc_finish(g, cc);
}

static void cc_fail(cairn_gateway_t *g, gw_cc_t *cc, int code, const char *message)
{
    gw_status(g, cc->call, code, message);
    cc_finish(g, cc);
}

/* A request of the operation could not be made (out of memory, IPC send failed). */
static void cc_fail_local(cairn_gateway_t *g, gw_cc_t *cc)
{
    cc_fail(g, cc, cairn_etcd_err_code(CAIRN_ETCD_TOO_MANY_REQUESTS), cairn_etcd_err_text(CAIRN_ETCD_TOO_MANY_REQUESTS));
}

/* Proposes msg (kind) for the operation, answered as how says; 0 or -1 (nothing in flight). */
static int cc_propose(cairn_gateway_t *g, gw_cc_t *cc, const gw_answer_t *how, int kind, const uint8_t *msg, size_t len,
                      cairn_call_id_t call)
{
    gw_pending_t *p = gw_propose_with(g, call, how, kind, msg, len, -1);
    if (!p)
        return -1;
    p->ctx = cc;
    cc->refs++;
    return 0;
}

/* Packs a TxnRequest and proposes it; the keys are checked first as etcd's v3rpc does (an
 * empty key: "etcdserver: key is not provided"), answered as Unknown. */
static int cc_txn(cairn_gateway_t *g, gw_cc_t *cc, const gw_answer_t *how, Etcdserverpb__TxnRequest *t)
{
    const char *why = NULL;
    if (cairn_kvcheck_txn(t, (int)g->cfg->max_txn_ops, &why)) {
        cc_fail(g, cc, CAIRN_GRPC_UNKNOWN, why);
        return -1;
    }
    size_t n = etcdserverpb__txn_request__get_packed_size(t);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        cc_fail_local(g, cc);
        return -1;
    }
    etcdserverpb__txn_request__pack(t, buf);
    int rc = cc_propose(g, cc, how, CAIRN_REQ_TXN, buf, n, cc->call);
    free(buf);
    if (rc) /* gw_propose_with answered the call */
        cc_finish(g, cc);
    return rc;
}

/* Any failure of a step: etcd's handler returns the embedded client's error as it is. */
static void step_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    gw_cc_t *cc = p->ctx;
    if (cc->done)
        return;
    if (cc->phase == P_WAIT && cc->kind == GW_CC_LOCK) {
        /* waitDeletes failed: Mutex.Lock releases its key */
        cc_resign(g, cc, 0);
    } else if (cc->phase == P_PROCLAIM && cc->in_campaign) {
        cc_resign(g, cc, 0); /* Campaign: a failed Proclaim resigns */
    }
    cc_fail(g, cc, CAIRN_GRPC_UNKNOWN, message && *message ? message : "etcdserver: request timed out");
}

static Etcdserverpb__TxnResponse *txn_unpack(cairn_gateway_t *g, gw_cc_t *cc, const uint8_t *body, size_t len)
{
    Etcdserverpb__TxnResponse *r = etcdserverpb__txn_response__unpack(NULL, len, body);
    if (!r)
        cc_fail(g, cc, cairn_etcd_err_code(CAIRN_ETCD_INTERNAL), cairn_etcd_err_text(CAIRN_ETCD_INTERNAL));
    return r;
}

static Etcdserverpb__RangeResponse *resp_range(const Etcdserverpb__TxnResponse *r, size_t i)
{
    if (i >= r->n_responses || r->responses[i]->response_case != ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
        return NULL;
    return r->responses[i]->response_range;
}

static void keep_header(gw_cc_t *cc, const Etcdserverpb__ResponseHeader *h)
{
    if (h)
        cc->hdr = *h;
}

/* ------------------------------------------------------------------ answers */

/* Packs any response message and answers with it (the one place that allocates for it). */
static void cc_reply_msg(cairn_gateway_t *g, gw_cc_t *cc, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        cc_fail_local(g, cc);
        return;
    }
    protobuf_c_message_pack(msg, buf);
    cc_reply(g, cc, buf, n);
    free(buf);
}

static void answer_lock(cairn_gateway_t *g, gw_cc_t *cc)
{
    V3lockpb__LockResponse r = V3LOCKPB__LOCK_RESPONSE__INIT;
    r.header = &cc->hdr;
    r.key.data = cc->key;
    r.key.len = cc->key_len;
    cc_reply_msg(g, cc, &r.base);
}

static void answer_campaign(cairn_gateway_t *g, gw_cc_t *cc)
{
    V3electionpb__CampaignResponse r = V3ELECTIONPB__CAMPAIGN_RESPONSE__INIT;
    V3electionpb__LeaderKey lk = V3ELECTIONPB__LEADER_KEY__INIT;
    r.header = &cc->hdr;
    r.leader = &lk;
    lk.name.data = cc->name;
    lk.name.len = cc->name_len;
    lk.key.data = cc->key;
    lk.key.len = cc->key_len;
    lk.rev = cc->rev;
    lk.lease = cc->lease;
    cc_reply_msg(g, cc, &r.base);
}

/* ProclaimResponse and ResignResponse are both {header = 1}. */
static void answer_header(cairn_gateway_t *g, gw_cc_t *cc)
{
    V3electionpb__ResignResponse r = V3ELECTIONPB__RESIGN_RESPONSE__INIT;
    r.header = &cc->hdr;
    uint8_t buf[128];
    size_t n = v3electionpb__resign_response__pack(&r, buf);
    cc_reply(g, cc, buf, n);
}

static void answer_done(cairn_gateway_t *g, gw_cc_t *cc)
{
    if (cc->kind == GW_CC_LOCK)
        answer_lock(g, cc);
    else
        answer_campaign(g, cc);
}

/* ------------------------------------------------------------------ waiting for deletes */

static void wait_event(cairn_gateway_t *g, void *arg, const Mvccpb__Event *const *ev, size_t n, int64_t rev)
{
    gw_cc_t *cc = arg;
    for (size_t i = 0; i < n; i++)
        if (ev[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE) {
            gw_iwatch_cancel(g, &cc->w);
            cc_step_wait(g, cc);
            return;
        }
}

static void wait_compacted(cairn_gateway_t *g, void *arg, int64_t compact_rev)
{
    gw_cc_t *cc = arg;
    cc->w = NULL; /* the hub dropped it */
    if (cc->kind == GW_CC_LOCK)
        cc_resign(g, cc, 0);
    cc_fail(g, cc, CAIRN_GRPC_UNKNOWN, cairn_etcd_err_text(CAIRN_ETCD_COMPACTED));
}

static void wait_range_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len,
                          const cairn_ipc_msg_t *m)
{
    gw_cc_t *cc = p->ctx;
    if (cc->done)
        return;
    Etcdserverpb__RangeResponse *r = etcdserverpb__range_response__unpack(NULL, len, body);
    if (!r) {
        step_fail(g, p, 0, cairn_etcd_err_text(CAIRN_ETCD_INTERNAL));
        return;
    }
    if (r->n_kvs == 0) { /* every older key is gone: held */
        if (cc->kind == GW_CC_LOCK)
            keep_header(cc, r->header);
        etcdserverpb__range_response__free_unpacked(r, NULL);
        answer_done(g, cc);
        return;
    }
    int64_t from = r->header ? r->header->revision : 0;
    cc->w = gw_iwatch_new(g, r->kvs[0]->key.data, r->kvs[0]->key.len, NULL, 0, from > 0 ? from : 1, wait_event,
                          wait_compacted, cc);
    etcdserverpb__range_response__free_unpacked(r, NULL);
    if (!cc->w)
        step_fail(g, p, 0, cairn_etcd_err_text(CAIRN_ETCD_TOO_MANY_REQUESTS));
}

static const gw_answer_t answer_wait_range = {.ok = wait_range_ok, .fail = step_fail, .release = cc_release};

/* waitDeletes(prefix, rev - 1): one round. */
static void cc_step_wait(cairn_gateway_t *g, gw_cc_t *cc)
{
    cc->phase = P_WAIT;
    gw_pending_t *p = gw_cc_range_top(g, cc->call, &answer_wait_range, cc, cc->pfx, cc->pfx_len, 1, cc->rev - 1, -1);
    if (!p) {
        if (cc->kind == GW_CC_LOCK)
            cc_resign(g, cc, 0);
        cc_fail_local(g, cc);
        return;
    }
    cc->refs++;
}

/* ------------------------------------------------------------------ txns */

/* Mutex.Lock's and Campaign's first txn. */
static void first_txn_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len,
                         const cairn_ipc_msg_t *m)
{
    gw_cc_t *cc = p->ctx;
    if (cc->done)
        return;
    Etcdserverpb__TxnResponse *r = txn_unpack(g, cc, body, len);
    if (!r)
        return;
    keep_header(cc, r->header);
    cc->rev = r->header ? r->header->revision : 0;
    int differs = 0;
    if (!r->succeeded) {
        Etcdserverpb__RangeResponse *mine = resp_range(r, 0);
        if (mine && mine->n_kvs) {
            cc->rev = mine->kvs[0]->create_revision;
            differs = mine->kvs[0]->value.len != cc->val_len ||
                      (cc->val_len && memcmp(mine->kvs[0]->value.data, cc->val, cc->val_len) != 0);
        }
    }
    if (cc->kind == GW_CC_LOCK) {
        Etcdserverpb__RangeResponse *owner = resp_range(r, 1);
        int held = !owner || owner->n_kvs == 0 || owner->kvs[0]->create_revision == cc->rev;
        etcdserverpb__txn_response__free_unpacked(r, NULL);
        if (held)
            answer_lock(g, cc);
        else
            cc_step_wait(g, cc);
        return;
    }
    etcdserverpb__txn_response__free_unpacked(r, NULL);
    if (differs) {
        cc->in_campaign = 1;
        cc_proclaim(g, cc);
    } else {
        cc_step_wait(g, cc);
    }
}

/* The compare every step of the Mutex and the Election guards with: CreateRevision(key) == rev
 * (0: the key does not exist). */
static void create_rev_is(const gw_cc_t *cc, Etcdserverpb__Compare *cmp, int64_t rev)
{
    etcdserverpb__compare__init(cmp);
    cmp->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
    cmp->key.data = cc->key;
    cmp->key.len = cc->key_len;
    cmp->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    cmp->create_revision = rev;
}

static const gw_answer_t answer_first_txn = {.ok = first_txn_ok, .fail = step_fail, .proposal = 1,
                                             .release = cc_release};

static void cc_first_txn(cairn_gateway_t *g, gw_cc_t *cc)
{
    cc->phase = P_TXN;
    Etcdserverpb__Compare cmp;
    create_rev_is(cc, &cmp, 0);
    Etcdserverpb__Compare *cmps[1] = {&cmp};

    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key = cmp.key;
    put.value.data = cc->val;
    put.value.len = cc->val_len;
    put.lease = cc->lease;
    Etcdserverpb__RangeRequest get = ETCDSERVERPB__RANGE_REQUEST__INIT;
    get.key = cmp.key;
    uint8_t *end = malloc(cc->pfx_len);
    if (!end) {
        cc_fail_local(g, cc);
        return;
    }
    Etcdserverpb__RangeRequest owner = ETCDSERVERPB__RANGE_REQUEST__INIT;
    owner.key.data = cc->pfx;
    owner.key.len = cc->pfx_len;
    owner.range_end.data = end;
    owner.range_end.len = gw_cc_prefix_end(cc->pfx, cc->pfx_len, end);
    owner.limit = 1;
    owner.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
    owner.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;

    Etcdserverpb__RequestOp op_put = ETCDSERVERPB__REQUEST_OP__INIT, op_get = ETCDSERVERPB__REQUEST_OP__INIT,
                            op_owner = ETCDSERVERPB__REQUEST_OP__INIT;
    op_put.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op_put.request_put = &put;
    op_get.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op_get.request_range = &get;
    op_owner.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op_owner.request_range = &owner;
    Etcdserverpb__RequestOp *succ[2] = {&op_put, &op_owner}, *fail[2] = {&op_get, &op_owner};

    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.n_compare = 1;
    t.compare = cmps;
    t.success = succ;
    t.failure = fail;
    t.n_success = t.n_failure = cc->kind == GW_CC_LOCK ? 2 : 1; /* Campaign: no owner read */
    cc_txn(g, cc, &answer_first_txn, &t);
    free(end);
}

/* Proclaim's txn answered (Proclaim itself, or Campaign's). */
static void proclaim_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len,
                        const cairn_ipc_msg_t *m)
{
    gw_cc_t *cc = p->ctx;
    if (cc->done)
        return;
    Etcdserverpb__TxnResponse *r = txn_unpack(g, cc, body, len);
    if (!r)
        return;
    int ok = r->succeeded;
    if (!cc->in_campaign)
        keep_header(cc, r->header); /* Campaign answers its first txn's header */
    etcdserverpb__txn_response__free_unpacked(r, NULL);
    if (!ok) {
        if (cc->in_campaign)
            cc_resign(g, cc, 0);
        cc_fail(g, cc, CAIRN_GRPC_UNKNOWN, "election: not leader");
    } else if (cc->in_campaign) {
        cc_step_wait(g, cc);
    } else {
        answer_header(g, cc);
    }
}

static const gw_answer_t answer_proclaim = {.ok = proclaim_ok, .fail = step_fail, .proposal = 1,
                                            .release = cc_release};

static void cc_proclaim(cairn_gateway_t *g, gw_cc_t *cc)
{
    cc->phase = P_PROCLAIM;
    Etcdserverpb__Compare cmp;
    create_rev_is(cc, &cmp, cc->rev);
    Etcdserverpb__Compare *cmps[1] = {&cmp};
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key = cmp.key;
    put.value.data = cc->val;
    put.value.len = cc->val_len;
    put.lease = cc->lease;
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &put;
    Etcdserverpb__RequestOp *succ[1] = {&op};
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.n_compare = 1;
    t.compare = cmps;
    t.n_success = 1;
    t.success = succ;
    cc_txn(g, cc, &answer_proclaim, &t);
}

static void resign_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    gw_cc_t *cc = p->ctx;
    if (cc->done)
        return;
    Etcdserverpb__TxnResponse *r = txn_unpack(g, cc, body, len);
    if (!r)
        return;
    keep_header(cc, r->header);
    etcdserverpb__txn_response__free_unpacked(r, NULL);
    answer_header(g, cc);
}

static const gw_answer_t answer_resign = {.ok = resign_ok, .fail = step_fail, .proposal = 1, .release = cc_release};

/* Cleanups nobody waits for (a Lock's key after a failed wait, a Campaign's resign). */
static void ignore_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
}
static void ignore_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    cairn_warn("lock/election cleanup failed", "err=\"%s\"", message ? message : "");
}
static const gw_answer_t answer_ignore = {.ok = ignore_ok, .fail = ignore_fail, .proposal = 1};

/* Resign (answer 1: the Resign method, answered with its header), or a cleanup: a Lock's
 * Mutex.Unlock (an unconditional delete of the key), a Campaign's Election.Resign (delete if
 * the key's create revision is still rev). A cleanup is proposed on behalf of no call. */
static void cc_resign(cairn_gateway_t *g, gw_cc_t *cc, int answer)
{
    if (!g->srv || !g->raftd || (!answer && !cc->key_len))
        return; /* the gateway is going away, or nothing was ever written */
    Etcdserverpb__Compare cmp;
    create_rev_is(cc, &cmp, cc->rev);
    Etcdserverpb__Compare *cmps[1] = {&cmp};
    Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    del.key = cmp.key;
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op.request_delete_range = &del;
    Etcdserverpb__RequestOp *succ[1] = {&op};
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    t.n_compare = 1;
    t.compare = cmps;
    t.n_success = 1;
    t.success = succ;
    if (answer) {
        cc->phase = P_TXN;
        cc_txn(g, cc, &answer_resign, &t);
        return;
    }
    uint8_t *buf = NULL;
    size_t n;
    int kind;
    if (cc->kind == GW_CC_LOCK) {
        n = etcdserverpb__delete_range_request__get_packed_size(&del);
        kind = CAIRN_REQ_DELETE_RANGE;
        if ((buf = malloc(n ? n : 1)))
            etcdserverpb__delete_range_request__pack(&del, buf);
    } else {
        n = etcdserverpb__txn_request__get_packed_size(&t);
        kind = CAIRN_REQ_TXN;
        if ((buf = malloc(n ? n : 1)))
            etcdserverpb__txn_request__pack(&t, buf);
    }
    if (!buf)
        return;
    /* call 0: no client to answer, whatever happens */
    gw_propose_with(g, 0, &answer_ignore, kind, buf, n, -1);
    free(buf);
}

/* ------------------------------------------------------------------ session */

static void cc_session_ready(cairn_gateway_t *g, gw_cc_t *cc)
{
    if (cc->kind == GW_CC_PROCLAIM) {
        cc_proclaim(g, cc);
        return;
    }
    if (cc->kind == GW_CC_RESIGN) {
        cc_resign(g, cc, 1);
        return;
    }
    /* name "/" %x of the lease (Go prints a negative int64 as "-" and its magnitude) */
    char hex[24];
    uint64_t mag = cc->lease < 0 ? (uint64_t)0 - (uint64_t)cc->lease : (uint64_t)cc->lease;
    int hl = snprintf(hex, sizeof hex, "%s%" PRIx64, cc->lease < 0 ? "-" : "", mag);
    free(cc->key);
    if (!(cc->key = malloc(cc->pfx_len + (size_t)hl))) {
        cc->key_len = 0;
        cc_fail_local(g, cc);
        return;
    }
    memcpy(cc->key, cc->pfx, cc->pfx_len);
    memcpy(cc->key + cc->pfx_len, hex, (size_t)hl);
    cc->key_len = cc->pfx_len + (size_t)hl;
    cc_first_txn(g, cc);
}

static void grant_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    gw_cc_t *cc = p->ctx;
    if (cc->done)
        return;
    Etcdserverpb__LeaseGrantResponse *r = etcdserverpb__lease_grant_response__unpack(NULL, len, body);
    if (!r) {
        cc_fail(g, cc, cairn_etcd_err_code(CAIRN_ETCD_INTERNAL), cairn_etcd_err_text(CAIRN_ETCD_INTERNAL));
        return;
    }
    if (r->error && *r->error) {
        cc_fail(g, cc, CAIRN_GRPC_UNKNOWN, r->error);
        etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
        return;
    }
    cc->lease = r->id;
    cc->granted = 1;
    etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
    cc_session_ready(g, cc);
}

static const gw_answer_t answer_grant = {.ok = grant_ok, .fail = step_fail, .proposal = 1, .release = cc_release};

/* ------------------------------------------------------------------ the deadline */

static void timer_fired(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    gw_cc_t *cc = p->ctx;
    cc->timer_id = 0;
    if (cc->done)
        return;
    /* the context is done: a waiting Lock unlocks, a waiting Campaign resigns */
    if (cc->phase == P_WAIT)
        cc_resign(g, cc, 0);
    cc_fail(g, cc, CAIRN_GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
}

static void timer_release(void *ctx)
{
    gw_cc_t *cc = ctx;
    cc->timer_id = 0;
    cc_unref(cc);
}

static const gw_answer_t answer_timer = {.fail = timer_fired, .release = timer_release};

/* ------------------------------------------------------------------ entry points */

static uint8_t *dup_or_empty(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

void gw_cc_start(cairn_gateway_t *g, gw_call_t *c, int kind, const gw_cc_args_t *a, const cairn_h2_meta_t *meta)
{
    gw_cc_t *cc = calloc(1, sizeof *cc);
    if (!cc || !(cc->name = dup_or_empty(a->name, a->name_len)) || !(cc->pfx = malloc(a->name_len + 1)) ||
        !(cc->val = dup_or_empty(a->value, a->value_len)) ||
        ((kind == GW_CC_PROCLAIM || kind == GW_CC_RESIGN) && !(cc->key = dup_or_empty(a->key, a->key_len)))) {
        if (cc) {
            free(cc->name);
            free(cc->pfx);
            free(cc->val);
            free(cc);
        }
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    cc->refs = 1;
    cc->kind = kind;
    cc->call = c->id;
    cc->stream = c->method->kind == GW_STREAM;
    cc->name_len = a->name_len;
    if (a->name_len) /* a request without a name (refused later, as etcd does) has no bytes */
        memcpy(cc->pfx, a->name, a->name_len);
    cc->pfx[a->name_len] = '/';
    cc->pfx_len = a->name_len + 1;
    cc->val_len = a->value_len;
    if (cc->key)
        cc->key_len = a->key_len;
    cc->lease = a->lease;
    cc->rev = a->rev;
    if (cc->stream) {
        c->state = cc;
        cc->gcall = c;
    }
    int64_t timeout = gw_timeout(meta);
    if (timeout > 0) {
        gw_pending_t *t = gw_add_pending(g, c->id, &answer_timer, timeout);
        if (!t) {
            cc_fail_local(g, cc);
            return;
        }
        t->deadline = cairn_now_ms() + timeout; /* the call's own deadline, not a little before */
        t->ctx = cc;
        cc->refs++;
        cc->timer_id = t->req_id;
    }
    if (cc->lease != 0) {
        cc_session_ready(g, cc);
        return;
    }
    cc->phase = P_GRANT;
    Etcdserverpb__LeaseGrantRequest gr = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    while (gr.id == 0)
        gr.id = (int64_t)(cairn_random_u64() & (uint64_t)INT64_MAX);
    gr.ttl = SESSION_TTL;
    uint8_t buf[32];
    size_t n = etcdserverpb__lease_grant_request__pack(&gr, buf);
    if (cc_propose(g, cc, &answer_grant, CAIRN_REQ_LEASE_GRANT, buf, n, cc->call))
        cc_finish(g, cc);
}

/* A unary method served by a stream row: the client half-closed without a message. */
void gw_cc_half_close(cairn_gateway_t *g, gw_call_t *c)
{
    if (!c->state)
        gw_status(g, c->id, CAIRN_GRPC_INTERNAL,
                  "grpc: client streaming protocol violation: no request message");
}

/* The stream is gone: a client reset it or went away (or it was answered). */
void gw_cc_close(cairn_gateway_t *g, gw_call_t *c)
{
    gw_cc_t *cc = c->state;
    c->state = NULL;
    if (!cc || cc == (void *)&cc_finished)
        return;
    cc->gcall = NULL;
    if (cc->phase == P_WAIT)
        cc_resign(g, cc, 0); /* the context is canceled while waiting: Unlock / Resign */
    cc_finish(g, cc);
}

/* ------------------------------------------------------------------ the Lock service */

static void do_lock(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    if (c->state)
        return; /* a unary method: one request; more are ignored */
    V3lockpb__LockRequest *r = v3lockpb__lock_request__unpack(NULL, len, msg);
    if (!r) {
        c->state = &cc_finished;
        gw_bad_request(g, c->id);
        return;
    }
    gw_cc_args_t a = {.name = r->name.data, .name_len = r->name.len, .lease = r->lease};
    gw_cc_start(g, c, GW_CC_LOCK, &a, meta);
    if (!c->state)
        c->state = &cc_finished;
    v3lockpb__lock_request__free_unpacked(r, NULL);
}

static void unlock_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    Etcdserverpb__DeleteRangeResponse *d = etcdserverpb__delete_range_response__unpack(NULL, len, body);
    if (!d) {
        gw_error(g, p->call, CAIRN_ETCD_INTERNAL);
        return;
    }
    V3lockpb__UnlockResponse r = V3LOCKPB__UNLOCK_RESPONSE__INIT;
    r.header = d->header;
    uint8_t buf[128];
    size_t n = v3lockpb__unlock_response__pack(&r, buf);
    etcdserverpb__delete_range_response__free_unpacked(d, NULL);
    gw_reply(g, p->call, buf, n);
}

static void unary_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    gw_cc_error(g, p->call, message && *message ? message : "etcdserver: request timed out");
}

static const gw_answer_t answer_unlock = {.ok = unlock_ok, .fail = unary_fail, .proposal = 1};

static void do_unlock(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    V3lockpb__UnlockRequest *r = v3lockpb__unlock_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    Etcdserverpb__DeleteRangeRequest del = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    del.key = r->key;
    const char *why = NULL;
    if (cairn_kvcheck_delete_range(&del, &why)) {
        gw_cc_error(g, c->id, why);
        v3lockpb__unlock_request__free_unpacked(r, NULL);
        return;
    }
    size_t n = etcdserverpb__delete_range_request__get_packed_size(&del);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
    } else {
        etcdserverpb__delete_range_request__pack(&del, buf);
        gw_propose_with(g, c->id, &answer_unlock, CAIRN_REQ_DELETE_RANGE, buf, n, gw_timeout(meta));
        free(buf);
    }
    v3lockpb__unlock_request__free_unpacked(r, NULL);
}

/* clang-format off */
static const gw_method_t rows[] = {
    /* path                     kind       handler    arg perm           json route          half_close        close        json */
    /* Lock is unary on the wire; a stream row so that a client's reset reaches gw_cc_close */
    {"/v3lockpb.Lock/Lock",     GW_STREAM, do_lock,   0,  GW_PERM_WRITE, "/v3/lock/lock",    gw_cc_half_close, gw_cc_close, GW_JSON_UNARY},
    {"/v3lockpb.Lock/Unlock",   GW_UNARY,  do_unlock, 0,  GW_PERM_WRITE, "/v3/lock/unlock"},
};
/* clang-format on */

const gw_service_t gw_svc_lock = GW_SERVICE("lock", rows);
