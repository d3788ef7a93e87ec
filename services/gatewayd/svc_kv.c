/* svc_kv.c - etcd's KV service; see gw_internal.h.
 *
 *   - Put, DeleteRange, Txn, Compact: checked here as etcd's v3rpc layer checks them
 *     (cairn_kvcheck.h), wrapped in a request envelope (cairn_ipc.h) and sent to raftd as
 *     PROPOSE; the answer comes from stored as RESULT once the entry is applied. Read-only
 *     txns also go through the log: simple, and linearizable.
 *   - Range: serializable straight to stored (RANGE with read index 0); linearizable queued
 *     for the loop's next read-index round (gw_queue_read, thesis §6.4 batching).
 */
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_kvcheck.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "gw_internal.h"

static void do_range(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    Etcdserverpb__RangeRequest *rr = etcdserverpb__range_request__unpack(NULL, len, msg);
    if (!rr) {
        gw_bad_request(g, c->id);
        return;
    }
    const char *why = NULL;
    int code = cairn_kvcheck_range(rr, &why);
    if (code) {
        gw_status(g, c->id, code, why);
        etcdserverpb__range_request__free_unpacked(rr, NULL);
        return;
    }
    int serializable = rr->serializable;
    etcdserverpb__range_request__free_unpacked(rr, NULL);
    if (serializable) {
        /* straight to the local stored: the request bytes are borrowed, not copied */
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_RANGE, .body = msg, .body_len = len};
        gw_ask(g, c->id, &gw_answer_body, g->stored, &m, meta, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    /* a linearizable read waits for its read index: keep a copy of the request */
    gw_pending_t *p = gw_add_pending(g, c->id, &gw_answer_body, gw_timeout(meta));
    if (!p || !(p->body = malloc(len ? len : 1))) {
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        if (p)
            gw_drop_pending(g, p->req_id);
        return;
    }
    memcpy(p->body, msg, len);
    p->body_len = len;
    gw_queue_read(g, p);
}

/* Writes: their answer is the response body stored sends once the entry is applied. */
static const gw_answer_t answer_write = {.ok = NULL, .fail = NULL, .proposal = 1};

void gw_propose(cairn_gateway_t *g, cairn_call_id_t call, int kind, const uint8_t *msg, size_t len,
                const cairn_h2_meta_t *meta)
{
    gw_propose_with(g, call, &answer_write, kind, msg, len, gw_timeout(meta));
}

gw_pending_t *gw_propose_with(cairn_gateway_t *g, cairn_call_id_t call, const gw_answer_t *how, int kind,
                              const uint8_t *msg, size_t len, int64_t timeout_ms)
{
    if (len > g->cfg->max_request_bytes) {
        gw_error(g, call, CAIRN_ETCD_REQUEST_TOO_LARGE);
        return NULL;
    }
    gw_pending_t *p = gw_add_pending(g, call, how, timeout_ms);
    if (!p) {
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return NULL;
    }
    cairn_ipc_req_t req = {(const uint8_t *)g->origin, g->origin_len, p->req_id, (uint64_t)kind, msg, len};
    uint8_t *data;
    size_t dlen;
    if (cairn_ipc_req_encode(&req, &data, &dlen)) {
        gw_drop_pending(g, p->req_id);
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return NULL;
    }
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_PROPOSE, .req_id = p->req_id, .body = data, .body_len = dlen};
    int rc = gw_send_ipc(g, g->raftd, &m);
    free(data);
    if (rc) {
        gw_drop_pending(g, p->req_id);
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return NULL;
    }
    return p;
}

/* ---- the space quota at the member a write comes to (etcd 3.4's quotaAlarmer,
 * etcdserver/api/v3rpc/quota.go and etcdserver/quota.go): a Put, or a Txn whose puts would
 * take the store to --quota-backend-bytes, is refused at once with NOSPACE, and this member's
 * NOSPACE alarm is proposed through the log - each member raises its own. The cost is etcd's
 * estimate (key + value + 256 per put; a txn's costlier branch; a request without puts costs
 * nothing and always passes; LeaseGrant 64, svc_lease.c); the size is what stored last reported
 * (every second). stored also raises the alarm when its files pass the quota on their own
 * (maint.c). */
#define KV_OVERHEAD 256
#define NOSPACE_REPROPOSE_MS 1000

static int64_t put_cost(const Etcdserverpb__PutRequest *r)
{
    return r ? KV_OVERHEAD + (int64_t)r->key.len + (int64_t)r->value.len : 0;
}

static int64_t txn_cost(const Etcdserverpb__TxnRequest *r)
{
    int64_t cs = 0, cf = 0;
    for (size_t i = 0; i < r->n_success; i++)
        if (r->success[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            cs += put_cost(r->success[i]->request_put);
    for (size_t i = 0; i < r->n_failure; i++)
        if (r->failure[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            cf += put_cost(r->failure[i]->request_put);
    return cf > cs ? cf : cs;
}

int gw_over_quota(cairn_gateway_t *g, int64_t cost)
{
    static int64_t next_propose; /* one gateway per process, one loop thread */
    int64_t quota = g->cfg->quota_bytes;
    if (cost == 0 || quota <= 0 || quota == INT64_MAX || (int64_t)g->st.db_size + cost < quota)
        return 0;
    int64_t now = cairn_now_ms();
    /* the size may be up to a second old: look again now, so that a store that shrank
     * (compaction, defragmentation) is seen by the next request */
    if (now - g->st_at > 100)
        g->next_status_poll = 0;
    if (now >= next_propose) {
        next_propose = now + NOSPACE_REPROPOSE_MS;
        Etcdserverpb__AlarmRequest q = ETCDSERVERPB__ALARM_REQUEST__INIT;
        q.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
        q.memberid = cairn_config_member_id(g->cfg);
        q.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
        uint8_t qb[32];
        size_t qn = etcdserverpb__alarm_request__pack(&q, qb);
        /* req_id 0: no pending request waits for it, its result is dropped */
        cairn_ipc_req_t req = {(const uint8_t *)g->origin, g->origin_len, 0, CAIRN_REQ_ALARM, qb, qn};
        uint8_t *data;
        size_t dlen;
        if (cairn_ipc_req_encode(&req, &data, &dlen) == 0) {
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_PROPOSE, .req_id = 0, .body = data, .body_len = dlen};
            gw_send_ipc(g, g->raftd, &m);
            free(data);
            cairn_warn("database space exceeded; raising the NOSPACE alarm", "db_size=%llu cost=%lld quota=%lld",
                       (unsigned long long)g->st.db_size, (long long)cost, (long long)quota);
        }
    }
    return 1;
}

/* Put, DeleteRange, Txn, Compact: the row's arg is the request kind (cairn_req_kind_t). */
static void do_write(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    int kind = c->method->arg;
    const char *why = NULL;
    int code = 0;
    int64_t cost = 0;
    switch (kind) {
    case CAIRN_REQ_PUT: {
        Etcdserverpb__PutRequest *r = etcdserverpb__put_request__unpack(NULL, len, msg);
        if (!r)
            goto bad;
        code = cairn_kvcheck_put(r, &why);
        cost = put_cost(r);
        etcdserverpb__put_request__free_unpacked(r, NULL);
        break;
    }
    case CAIRN_REQ_DELETE_RANGE: {
        Etcdserverpb__DeleteRangeRequest *r = etcdserverpb__delete_range_request__unpack(NULL, len, msg);
        if (!r)
            goto bad;
        code = cairn_kvcheck_delete_range(r, &why);
        etcdserverpb__delete_range_request__free_unpacked(r, NULL);
        break;
    }
    case CAIRN_REQ_TXN: {
        /* Depth first, on the bytes: protobuf-c's unpack recurses per nested txn, and a
         * ~42 KB request nested ~6,000 deep overflowed our stack inside it (issue 7). */
        int depth = cairn_kvcheck_txn_depth(msg, len);
        if (depth == CAIRN_ETOOBIG) {
            gw_error(g, c->id, CAIRN_ETCD_TXN_TOO_DEEP);
            return;
        }
        if (depth < 0)
            goto bad;
        Etcdserverpb__TxnRequest *r = etcdserverpb__txn_request__unpack(NULL, len, msg);
        if (!r)
            goto bad;
        code = cairn_kvcheck_txn(r, (int)g->cfg->max_txn_ops, &why);
        cost = txn_cost(r);
        etcdserverpb__txn_request__free_unpacked(r, NULL);
        break;
    }
    case CAIRN_REQ_COMPACT: {
        Etcdserverpb__CompactionRequest *r = etcdserverpb__compaction_request__unpack(NULL, len, msg);
        if (!r)
            goto bad;
        etcdserverpb__compaction_request__free_unpacked(r, NULL);
        break;
    }
    }
    if (code) {
        gw_status(g, c->id, code, why);
        return;
    }
    if (gw_over_quota(g, cost)) {
        gw_error(g, c->id, CAIRN_ETCD_NO_SPACE);
        return;
    }
    gw_propose(g, c->id, kind, msg, len, meta);
    return;
bad:
    gw_bad_request(g, c->id);
}

/* clang-format off */
static const gw_method_t rows[] = {
    /* path                              kind       handler   arg                     perm           json route */
    {"/etcdserverpb.KV/Range",           GW_UNARY,  do_range, 0,                      GW_PERM_READ,  "/v3/kv/range"},
    {"/etcdserverpb.KV/Put",             GW_UNARY,  do_write, CAIRN_REQ_PUT,          GW_PERM_WRITE, "/v3/kv/put"},
    {"/etcdserverpb.KV/DeleteRange",     GW_UNARY,  do_write, CAIRN_REQ_DELETE_RANGE, GW_PERM_WRITE, "/v3/kv/deleterange"},
    {"/etcdserverpb.KV/Txn",             GW_UNARY,  do_write, CAIRN_REQ_TXN,          GW_PERM_WRITE, "/v3/kv/txn"},
    {"/etcdserverpb.KV/Compact",         GW_UNARY,  do_write, CAIRN_REQ_COMPACT,      GW_PERM_WRITE, "/v3/kv/compaction"},
};
/* clang-format on */

const gw_service_t gw_svc_kv = GW_SERVICE("kv", rows);
