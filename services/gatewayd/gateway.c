/* gateway.c - the etcd v3 service layer of gatewayd (see gateway.h).
 *
 * A gRPC call becomes one of:
 *   - a proposal (Put, DeleteRange, Txn with writes, Compact): validated here as etcd's v3rpc
 *     layer does, wrapped in a request envelope (cairn_ipc.h) and sent to raftd as PROPOSE;
 *     the answer comes from stored as RESULT once the entry is applied;
 *   - a linearizable read (Range, read-only Txn, /health): queued, and at the end of the loop
 *     pass every queued read shares ONE read-index request to raftd (thesis §6.4 batching);
 *     with the index in hand each read goes to stored as RANGE, which serves it once applied
 *     >= index;
 *   - a serializable read: straight to stored as RANGE with read index 0;
 *   - Status: STATUS to stored; MemberList, MoveLeader, Member{Add,Remove,Update,Promote}: raftd.
 * Every pending request has a deadline (grpc-timeout, else etcd's default) and fails with
 * etcd's "request timed out" text when it passes, so nothing hangs past the deadline.
 */
#include "gateway.h"

#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_etcd_err.h"
#include "cairn_ipc.h"
#include "cairn_kvcheck.h"
#include "cairn_log.h"
#include "cairn_u64map.h"
#include "cairn_zmq.h"
#include "h2srv.h"
#include "rpc.pb-c.h"

#define CAIRN_ETCD_VERSION "3.4.23"
#define CAIRN_ETCD_CLUSTER_VERSION "3.4.0"
/* etcd: ReqTimeout() = 5 s + 2 * election timeout; clients normally send a shorter grpc-timeout. */
#define DEFAULT_TIMEOUT_MS(cfg) (5000 + 2 * (cfg)->election_ms)

#define UNMARSHAL_ERR "grpc: error unmarshalling request: unexpected EOF"

typedef enum {
    W_RANGE = 1,   /* answer: RangeResponse body from stored */
    W_PROPOSAL,    /* answer: the write's response body from stored */
    W_STATUS,      /* answer: STATUS_RESP -> StatusResponse */
    W_HEALTH,      /* HTTP/1.1 /health: linearizable read */
    W_STATUS_POLL, /* internal: refresh the cached status (metrics, member list header) */
    W_MEMBERS,     /* answer: MemberListResponse body from raftd, header filled here */
    W_MEMBER_CHANGE, /* answer: Member{Add,Remove,Update,Promote}Response body from raftd, header added here */
    W_MOVE_LEADER, /* answer: empty MoveLeaderResponse */
} wait_kind_t;

typedef struct {
    uint64_t req_id;
    cairn_call_id_t call;
    wait_kind_t kind;
    int64_t deadline;
    uint8_t *body; /* RangeRequest bytes waiting for a read index */
    size_t body_len;
    /* a large answer arriving in RESULT_PARTs (cairn_ipc.h): the bytes so far, the whole length */
    uint8_t *part;
    size_t part_len, part_total;
    int part_bad; /* a part was missing: the answer cannot be rebuilt */
} pending_t;

typedef struct {
    uint64_t *ids;
    size_t n;
} read_batch_t;

struct cairn_gateway {
    cairn_config_t *cfg;
    cairn_h2srv_t *srv;
    zsock_t *raftd, *stored;
    char origin[96];
    size_t origin_len;
    uint64_t next_id;
    cairn_u64map_t *pending;    /* req_id -> pending_t */
    cairn_u64map_t *batches;    /* read-index request id -> read_batch_t */
    uint64_t *queued_reads;     /* req_ids waiting for the next read-index round */
    size_t n_queued, cap_queued;
    zmq_pollitem_t *items;
    size_t cap_items;
    int64_t next_sweep, next_status_poll;
    /* last status seen from stored */
    cairn_ipc_msg_t st;
    int64_t st_at;
    uint64_t n_requests, n_failed;
};

/* ------------------------------------------------------------------ helpers */

static uint64_t new_id(cairn_gateway_t *g)
{
    if (++g->next_id == 0)
        g->next_id = 1;
    return g->next_id;
}

static pending_t *add_pending(cairn_gateway_t *g, cairn_call_id_t call, wait_kind_t kind, int64_t timeout_ms)
{
    pending_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->req_id = new_id(g);
    p->call = call;
    p->kind = kind;
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

static void free_pending(pending_t *p)
{
    if (!p)
        return;
    free(p->body);
    free(p->part);
    free(p);
}

/* The largest answer rebuilt from parts: a gRPC message's length is 32 bits, and grpc-go (etcd's
 * clients) refuses messages above 2 GiB - 1. */
#define MAX_ANSWER_BYTES ((size_t)INT32_MAX)

/* One RESULT_PART: appended when it follows the bytes held, else the answer is marked lost. */
static void on_result_part(cairn_gateway_t *g, const cairn_ipc_msg_t *m)
{
    pending_t *p = cairn_u64map_get(g->pending, m->req_id);
    if (!p || p->part_bad)
        return;
    if (m->index != p->part_len || m->commit > MAX_ANSWER_BYTES || m->index + m->body_len > m->commit ||
        (p->part && m->commit != p->part_total)) {
        cairn_warn("answer part out of order or missing; the answer is dropped", "req_id=%llu offset=%llu held=%zu",
                   (unsigned long long)m->req_id, (unsigned long long)m->index, p->part_len);
        p->part_bad = 1;
        return;
    }
    if (!p->part) {
        if (!(p->part = malloc(m->commit ? m->commit : 1))) {
            p->part_bad = 1;
            return;
        }
        p->part_total = m->commit;
    }
    memcpy(p->part + p->part_len, m->body, m->body_len);
    p->part_len += m->body_len;
}

static void http1_json(cairn_gateway_t *g, cairn_call_id_t req, int status, const char *json)
{
    cairn_h2srv_http1_reply(g->srv, req, status, "application/json", (const uint8_t *)json, strlen(json));
}

/* Answers a pending request with an error. */
static void fail(cairn_gateway_t *g, pending_t *p, int code, const char *message)
{
    g->n_failed++;
    if (p->kind == W_HEALTH)
        http1_json(g, p->call, 503, "{\"health\":\"false\"}");
    else if (p->kind != W_STATUS_POLL)
        cairn_h2srv_error(g->srv, p->call, code, message);
}

static void fail_etcd(cairn_gateway_t *g, pending_t *p, cairn_etcd_err_t e)
{
    fail(g, p, cairn_etcd_err_code(e), cairn_etcd_err_text(e));
}

/* Answers a call that has no pending request yet with an etcd error. */
static void gw_error(cairn_gateway_t *g, cairn_call_id_t call, cairn_etcd_err_t e)
{
    cairn_h2srv_error(g->srv, call, cairn_etcd_err_code(e), cairn_etcd_err_text(e));
}

static int send_ipc(cairn_gateway_t *g, zsock_t *s, const cairn_ipc_msg_t *m)
{
    int rc = cairn_zmq_send(s, NULL, 0, m);
    if (rc)
        cairn_warn("ipc send failed", "type=%s err=\"%s\"", cairn_ipc_type_name(m->type), cairn_strerror(rc));
    return rc;
}

static void fill_header(cairn_gateway_t *g, Etcdserverpb__ResponseHeader *h)
{
    /* stored knows the cluster ID that was replicated to it (a member that joined a running
     * cluster learns it from the cluster); the configuration's is what a new cluster gets */
    h->cluster_id = g->st.cluster_id ? g->st.cluster_id : cairn_config_cluster_id(g->cfg);
    h->member_id = cairn_config_member_id(g->cfg);
    h->revision = g->st.revision;
    h->raft_term = g->st.term;
}

/* ------------------------------------------------------------------ reads */

static void queue_read(cairn_gateway_t *g, pending_t *p)
{
    if (g->n_queued == g->cap_queued) {
        size_t nc = g->cap_queued ? g->cap_queued * 2 : 256;
        uint64_t *q = realloc(g->queued_reads, nc * sizeof *q);
        if (!q) {
            fail_etcd(g, cairn_u64map_take(g->pending, p->req_id), CAIRN_ETCD_TOO_MANY_REQUESTS);
            free_pending(p);
            return;
        }
        g->queued_reads = q;
        g->cap_queued = nc;
    }
    g->queued_reads[g->n_queued++] = p->req_id;
}

static void send_range(cairn_gateway_t *g, pending_t *p, uint64_t read_index)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RANGE, .req_id = p->req_id, .read_index = read_index, .body = p->body,
                         .body_len = p->body_len};
    if (send_ipc(g, g->stored, &m)) {
        fail_etcd(g, p, CAIRN_ETCD_TOO_MANY_REQUESTS);
        free_pending(cairn_u64map_take(g->pending, p->req_id));
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
    read_batch_t *b = malloc(sizeof *b);
    if (!b)
        return;
    b->ids = g->queued_reads;
    b->n = g->n_queued;
    g->queued_reads = NULL;
    g->n_queued = g->cap_queued = 0;
    uint64_t id = new_id(g);
    cairn_u64map_put(g->batches, id, b);
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_READ_INDEX, .req_id = id};
    if (send_ipc(g, g->raftd, &m)) {
        /* leave them: the deadline sweep answers them */
        cairn_u64map_take(g->batches, id);
        free(b->ids);
        free(b);
    }
}

static void on_read_index(cairn_gateway_t *g, const cairn_ipc_msg_t *m)
{
    read_batch_t *b = cairn_u64map_take(g->batches, m->req_id);
    if (!b)
        return;
    char msg[256];
    snprintf(msg, sizeof msg, "%.*s", (int)m->message_len, m->message ? (const char *)m->message : "");
    for (size_t i = 0; i < b->n; i++) {
        pending_t *p = cairn_u64map_get(g->pending, b->ids[i]);
        if (!p)
            continue; /* timed out meanwhile */
        if (m->code) {
            fail(g, p, (int)m->code, msg);
            free_pending(cairn_u64map_take(g->pending, p->req_id));
        } else
            send_range(g, p, m->index);
    }
    free(b->ids);
    free(b);
}

/* ------------------------------------------------------------------ KV */

static int64_t timeout_of(const cairn_h2_meta_t *meta) { return meta ? meta->timeout_ms : -1; }

static void do_range(cairn_gateway_t *g, cairn_call_id_t call, const uint8_t *msg, size_t len,
                     const cairn_h2_meta_t *meta)
{
    Etcdserverpb__RangeRequest *rr = etcdserverpb__range_request__unpack(NULL, len, msg);
    if (!rr) {
        cairn_h2srv_error(g->srv, call, CAIRN_GRPC_INTERNAL, UNMARSHAL_ERR);
        return;
    }
    const char *why = NULL;
    int code = cairn_kvcheck_range(rr, &why);
    if (code) {
        cairn_h2srv_error(g->srv, call, code, why);
        etcdserverpb__range_request__free_unpacked(rr, NULL);
        return;
    }
    int serializable = rr->serializable;
    etcdserverpb__range_request__free_unpacked(rr, NULL);
    pending_t *p = add_pending(g, call, W_RANGE, timeout_of(meta));
    if (p && serializable) {
        /* straight to the local stored: the request bytes are borrowed, not copied */
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_RANGE, .req_id = p->req_id, .body = msg, .body_len = len};
        if (send_ipc(g, g->stored, &m)) {
            free_pending(cairn_u64map_take(g->pending, p->req_id));
            gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        }
        return;
    }
    /* a linearizable read waits for its read index: keep a copy of the request */
    if (!p || !(p->body = malloc(len ? len : 1))) {
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        if (p)
            free_pending(cairn_u64map_take(g->pending, p->req_id));
        return;
    }
    memcpy(p->body, msg, len);
    p->body_len = len;
    queue_read(g, p);
}

static void propose(cairn_gateway_t *g, cairn_call_id_t call, int kind, const uint8_t *msg, size_t len,
                    const cairn_h2_meta_t *meta)
{
    if (len > g->cfg->max_request_bytes) {
        gw_error(g, call, CAIRN_ETCD_REQUEST_TOO_LARGE);
        return;
    }
    pending_t *p = add_pending(g, call, W_PROPOSAL, timeout_of(meta));
    if (!p) {
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    cairn_ipc_req_t req = {(const uint8_t *)g->origin, g->origin_len, p->req_id, (uint64_t)kind, msg, len};
    uint8_t *data;
    size_t dlen;
    if (cairn_ipc_req_encode(&req, &data, &dlen)) {
        free_pending(cairn_u64map_take(g->pending, p->req_id));
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_PROPOSE, .req_id = p->req_id, .body = data, .body_len = dlen};
    if (send_ipc(g, g->raftd, &m)) {
        free_pending(cairn_u64map_take(g->pending, p->req_id));
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
    }
    free(data);
}

static void do_write(cairn_gateway_t *g, cairn_call_id_t call, int kind, const uint8_t *msg, size_t len,
                     const cairn_h2_meta_t *meta)
{
    const char *why = NULL;
    int code = 0;
    switch (kind) {
    case CAIRN_REQ_PUT: {
        Etcdserverpb__PutRequest *r = etcdserverpb__put_request__unpack(NULL, len, msg);
        if (!r)
            goto bad;
        code = cairn_kvcheck_put(r, &why);
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
            gw_error(g, call, CAIRN_ETCD_TXN_TOO_DEEP);
            return;
        }
        if (depth < 0)
            goto bad;
        Etcdserverpb__TxnRequest *r = etcdserverpb__txn_request__unpack(NULL, len, msg);
        if (!r)
            goto bad;
        code = cairn_kvcheck_txn(r, (int)g->cfg->max_txn_ops, &why);
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
        cairn_h2srv_error(g->srv, call, code, why);
        return;
    }
    /* Read-only txns also go through the log in this version: simple, and linearizable. */
    propose(g, call, kind, msg, len, meta);
    return;
bad:
    /* grpc-go's answer to a body that does not parse as the method's request */
    cairn_h2srv_error(g->srv, call, CAIRN_GRPC_INTERNAL, UNMARSHAL_ERR);
}

/* ------------------------------------------------------------------ Maintenance / Cluster */

static void do_status(cairn_gateway_t *g, cairn_call_id_t call, const cairn_h2_meta_t *meta)
{
    pending_t *p = add_pending(g, call, W_STATUS, timeout_of(meta));
    if (!p) {
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_STATUS, .req_id = p->req_id};
    if (send_ipc(g, g->stored, &m)) {
        free_pending(cairn_u64map_take(g->pending, p->req_id));
        gw_error(g, call, CAIRN_ETCD_NOT_CAPABLE);
    }
}

static void answer_status(cairn_gateway_t *g, pending_t *p, const cairn_ipc_msg_t *m)
{
    Etcdserverpb__StatusResponse r = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    fill_header(g, &h);
    r.header = &h;
    r.version = CAIRN_ETCD_VERSION;
    r.dbsize = (int64_t)m->db_size;
    r.dbsizeinuse = (int64_t)m->db_size_in_use;
    r.leader = m->leader;
    r.raftindex = m->index;
    r.raftterm = m->term;
    r.raftappliedindex = m->applied;
    r.islearner = m->learner != 0;
    char *errs[1];
    if (!m->leader) {
        errs[0] = (char *)cairn_etcd_err_text(CAIRN_ETCD_NO_LEADER);
        r.errors = errs;
        r.n_errors = 1;
    }
    size_t n = etcdserverpb__status_response__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fail_etcd(g, p, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    etcdserverpb__status_response__pack(&r, buf);
    cairn_h2srv_reply(g->srv, p->call, buf, n);
    free(buf);
}

/* MemberList and MoveLeader are raftd's: it knows the members and what they advertise. */
static void ask_raftd(cairn_gateway_t *g, cairn_call_id_t call, wait_kind_t kind, int type, uint64_t arg,
                      const cairn_h2_meta_t *meta)
{
    pending_t *p = add_pending(g, call, kind, timeout_of(meta));
    if (!p) {
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    cairn_ipc_msg_t m = {.type = (uint8_t)type, .req_id = p->req_id, .index = arg};
    if (send_ipc(g, g->raftd, &m)) {
        free_pending(cairn_u64map_take(g->pending, p->req_id));
        gw_error(g, call, CAIRN_ETCD_NOT_CAPABLE);
    }
}

/* The Cluster write methods: raftd checks and proposes the configuration change on the leader. */
static void do_member_change(cairn_gateway_t *g, cairn_call_id_t call, int op, const uint8_t *msg, size_t len,
                             const cairn_h2_meta_t *meta)
{
    void *r = NULL;
    switch (op) { /* refuse what does not decode here, before it travels to the leader */
    case CAIRN_MEMBER_ADD: r = etcdserverpb__member_add_request__unpack(NULL, len, msg); break;
    case CAIRN_MEMBER_REMOVE: r = etcdserverpb__member_remove_request__unpack(NULL, len, msg); break;
    case CAIRN_MEMBER_UPDATE: r = etcdserverpb__member_update_request__unpack(NULL, len, msg); break;
    case CAIRN_MEMBER_PROMOTE: r = etcdserverpb__member_promote_request__unpack(NULL, len, msg); break;
    }
    if (!r) {
        cairn_h2srv_error(g->srv, call, CAIRN_GRPC_INTERNAL, UNMARSHAL_ERR);
        return;
    }
    protobuf_c_message_free_unpacked(r, NULL);
    pending_t *p = add_pending(g, call, W_MEMBER_CHANGE, timeout_of(meta));
    if (!p) {
        gw_error(g, call, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_MEMBER_CHANGE, .req_id = p->req_id, .index = (uint64_t)op, .body = msg,
                         .body_len = len};
    if (send_ipc(g, g->raftd, &m)) {
        free_pending(cairn_u64map_take(g->pending, p->req_id));
        gw_error(g, call, CAIRN_ETCD_NOT_CAPABLE);
    }
}

static void answer_with_header(cairn_gateway_t *g, pending_t *p, const uint8_t *body, size_t len)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    fill_header(g, &h);
    if (p->kind == W_MEMBERS || p->kind == W_MEMBER_CHANGE)
        h.revision = 0; /* etcd's Cluster answers carry no revision */
    uint8_t *buf = NULL;
    size_t n = 0;
    if (p->kind == W_MEMBER_CHANGE) {
        /* Every Member*Response has the header as field 1, and raftd leaves it out: append it
         * (a protobuf field may come in any order; a parser takes it wherever it is). */
        size_t hn = etcdserverpb__response_header__get_packed_size(&h);
        if ((buf = malloc(len + hn + 11))) {
            memcpy(buf, body, len);
            n = len;
            buf[n++] = 0x0a; /* field 1, length-delimited */
            for (size_t v = hn; ; v >>= 7) {
                buf[n++] = (uint8_t)(v & 0x7f) | (v >= 0x80 ? 0x80 : 0);
                if (v < 0x80)
                    break;
            }
            n += etcdserverpb__response_header__pack(&h, buf + n);
        }
    } else if (p->kind == W_MEMBERS) {
        Etcdserverpb__MemberListResponse *r = etcdserverpb__member_list_response__unpack(NULL, len, body);
        if (r) {
            Etcdserverpb__ResponseHeader *old = r->header;
            r->header = &h;
            n = etcdserverpb__member_list_response__get_packed_size(r);
            if ((buf = malloc(n ? n : 1)))
                etcdserverpb__member_list_response__pack(r, buf);
            r->header = old;
            etcdserverpb__member_list_response__free_unpacked(r, NULL);
        }
    } else {
        Etcdserverpb__MoveLeaderResponse r = ETCDSERVERPB__MOVE_LEADER_RESPONSE__INIT;
        r.header = &h;
        n = etcdserverpb__move_leader_response__get_packed_size(&r);
        if ((buf = malloc(n ? n : 1)))
            etcdserverpb__move_leader_response__pack(&r, buf);
    }
    if (buf)
        cairn_h2srv_reply(g->srv, p->call, buf, n);
    else
        fail_etcd(g, p, CAIRN_ETCD_INTERNAL);
    free(buf);
}

/* ------------------------------------------------------------------ h2srv callbacks */

static int is_streaming(void *ud, const char *path)
{
    return strcmp(path, "/etcdserverpb.Watch/Watch") == 0 || strcmp(path, "/etcdserverpb.Lease/LeaseKeepAlive") == 0 ||
           strcmp(path, "/etcdserverpb.Maintenance/Snapshot") == 0 ||
           strcmp(path, "/v3electionpb.Election/Observe") == 0;
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
    cairn_h2srv_error(g->srv, call, CAIRN_GRPC_UNIMPLEMENTED, msg);
}

static void on_message(void *ud, cairn_call_id_t call, const char *path, const uint8_t *msg, size_t len,
                       const cairn_h2_meta_t *meta)
{
    cairn_gateway_t *g = ud;
    g->n_requests++;
    const char *kv = "/etcdserverpb.KV/";
    if (strncmp(path, kv, strlen(kv)) == 0) {
        const char *m = path + strlen(kv);
        if (strcmp(m, "Range") == 0)
            do_range(g, call, msg, len, meta);
        else if (strcmp(m, "Put") == 0)
            do_write(g, call, CAIRN_REQ_PUT, msg, len, meta);
        else if (strcmp(m, "DeleteRange") == 0)
            do_write(g, call, CAIRN_REQ_DELETE_RANGE, msg, len, meta);
        else if (strcmp(m, "Txn") == 0)
            do_write(g, call, CAIRN_REQ_TXN, msg, len, meta);
        else if (strcmp(m, "Compact") == 0)
            do_write(g, call, CAIRN_REQ_COMPACT, msg, len, meta);
        else
            unimplemented(g, call, path);
    } else if (strcmp(path, "/etcdserverpb.Maintenance/Status") == 0)
        do_status(g, call, meta);
    else if (strcmp(path, "/etcdserverpb.Cluster/MemberList") == 0)
        ask_raftd(g, call, W_MEMBERS, CAIRN_IPC_MEMBERS, 0, meta);
    else if (strcmp(path, "/etcdserverpb.Maintenance/MoveLeader") == 0) {
        Etcdserverpb__MoveLeaderRequest *r = etcdserverpb__move_leader_request__unpack(NULL, len, msg);
        if (!r) {
            cairn_h2srv_error(g->srv, call, CAIRN_GRPC_INTERNAL, UNMARSHAL_ERR);
            return;
        }
        uint64_t target = r->targetid;
        etcdserverpb__move_leader_request__free_unpacked(r, NULL);
        ask_raftd(g, call, W_MOVE_LEADER, CAIRN_IPC_TRANSFER, target, meta);
    } else if (strcmp(path, "/etcdserverpb.Cluster/MemberAdd") == 0)
        do_member_change(g, call, CAIRN_MEMBER_ADD, msg, len, meta);
    else if (strcmp(path, "/etcdserverpb.Cluster/MemberRemove") == 0)
        do_member_change(g, call, CAIRN_MEMBER_REMOVE, msg, len, meta);
    else if (strcmp(path, "/etcdserverpb.Cluster/MemberUpdate") == 0)
        do_member_change(g, call, CAIRN_MEMBER_UPDATE, msg, len, meta);
    else if (strcmp(path, "/etcdserverpb.Cluster/MemberPromote") == 0)
        do_member_change(g, call, CAIRN_MEMBER_PROMOTE, msg, len, meta);
    else
        unimplemented(g, call, path);
}

static void on_half_close(void *ud, cairn_call_id_t call) {}
static void on_close(void *ud, cairn_call_id_t call) {}

static void on_http1_async(void *ud, cairn_call_id_t req, const char *method, const char *path, const uint8_t *body,
                           size_t body_len, const cairn_h2_meta_t *meta)
{
    cairn_gateway_t *g = ud;
    char p[256];
    snprintf(p, sizeof p, "%s", path);
    char *q = strchr(p, '?');
    if (q)
        *q = 0;
    if (strcmp(p, "/health") == 0) {
        /* etcd 3.4: healthy when a linearizable read of the store succeeds */
        Etcdserverpb__RangeRequest rr = ETCDSERVERPB__RANGE_REQUEST__INIT;
        rr.key.data = (uint8_t *)"health";
        rr.key.len = 6;
        rr.keys_only = 1;
        rr.limit = 1;
        pending_t *pd = add_pending(g, req, W_HEALTH, 2000);
        size_t n = etcdserverpb__range_request__get_packed_size(&rr);
        if (!pd || !(pd->body = malloc(n ? n : 1))) {
            if (pd)
                free_pending(cairn_u64map_take(g->pending, pd->req_id));
            http1_json(g, req, 503, "{\"health\":\"false\"}");
            return;
        }
        etcdserverpb__range_request__pack(&rr, pd->body);
        pd->body_len = n;
        queue_read(g, pd);
    } else if (strcmp(p, "/version") == 0) {
        http1_json(g, req, 200, "{\"etcdserver\":\"" CAIRN_ETCD_VERSION "\",\"etcdcluster\":\"" CAIRN_ETCD_CLUSTER_VERSION "\"}");
    } else if (strcmp(p, "/metrics") == 0) {
        char buf[4096];
        long rss_pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (f) {
            long size;
            if (fscanf(f, "%ld %ld", &size, &rss_pages) != 2)
                rss_pages = 0;
            fclose(f);
        }
        int n = snprintf(buf, sizeof buf,
                         "# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.\n"
                         "# TYPE etcd_server_has_leader gauge\netcd_server_has_leader %d\n"
                         "# HELP etcd_server_is_leader Whether or not this member is a leader.\n"
                         "# TYPE etcd_server_is_leader gauge\netcd_server_is_leader %d\n"
                         "# HELP etcd_mvcc_db_total_size_in_bytes Total size of the underlying database physically allocated in bytes.\n"
                         "# TYPE etcd_mvcc_db_total_size_in_bytes gauge\netcd_mvcc_db_total_size_in_bytes %llu\n"
                         "# HELP etcd_debugging_mvcc_current_revision The current revision of store.\n"
                         "# TYPE etcd_debugging_mvcc_current_revision gauge\netcd_debugging_mvcc_current_revision %lld\n"
                         "# HELP etcd_debugging_mvcc_compact_revision The revision of the last compaction in store.\n"
                         "# TYPE etcd_debugging_mvcc_compact_revision gauge\netcd_debugging_mvcc_compact_revision %lld\n"
                         "# HELP etcd_server_proposals_committed_total The total number of consensus proposals committed.\n"
                         "# TYPE etcd_server_proposals_committed_total gauge\netcd_server_proposals_committed_total %llu\n"
                         "# HELP etcd_server_proposals_applied_total The total number of consensus proposals applied.\n"
                         "# TYPE etcd_server_proposals_applied_total gauge\netcd_server_proposals_applied_total %llu\n"
                         "# HELP grpc_server_started_total Total number of RPCs started on the server (this gateway).\n"
                         "# TYPE grpc_server_started_total counter\ngrpc_server_started_total %llu\n"
                         "# HELP process_resident_memory_bytes Resident memory size in bytes (this gateway process).\n"
                         "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n",
                         g->st.leader != 0, g->st.leader != 0 && g->st.leader == cairn_config_member_id(g->cfg),
                         (unsigned long long)g->st.db_size, (long long)g->st.revision, (long long)g->st.compact_rev,
                         (unsigned long long)g->st.index, (unsigned long long)g->st.applied,
                         (unsigned long long)g->n_requests, rss_pages * sysconf(_SC_PAGESIZE));
        cairn_h2srv_http1_reply(g->srv, req, 200, "text/plain; version=0.0.4", (const uint8_t *)buf, (size_t)n);
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
    case CAIRN_IPC_PROPOSALS_LOST: { /* raftd rebuilt its state: every write in flight has an unknown outcome */
        char msg[256];
        snprintf(msg, sizeof msg, "%.*s", (int)m.message_len, m.message ? (const char *)m.message : "");
        for (size_t n = 1; n;) { /* collect, then take: taking while iterating may revisit slots */
            size_t pos = 0;
            uint64_t key, ids[256];
            void *val;
            n = 0;
            while (n < 256 && cairn_u64map_next(g->pending, &pos, &key, &val))
                if (((pending_t *)val)->kind == W_PROPOSAL)
                    ids[n++] = key;
            for (size_t i = 0; i < n; i++) {
                pending_t *p = cairn_u64map_take(g->pending, ids[i]);
                fail(g, p, (int)m.code, msg);
                free_pending(p);
            }
        }
        break;
    }
    case CAIRN_IPC_PROPOSE_FAIL:
    case CAIRN_IPC_RESULT:
    case CAIRN_IPC_STATUS_RESP:
    case CAIRN_IPC_ERROR: {
        pending_t *p = cairn_u64map_take(g->pending, m.req_id);
        if (!p)
            break; /* timed out already */
        char msg[512];
        snprintf(msg, sizeof msg, "%.*s", (int)m.message_len, m.message ? (const char *)m.message : "");
        if (m.type == CAIRN_IPC_STATUS_RESP) {
            g->st = m;
            g->st.entries = NULL;
            g->st.priv_ = NULL;
            g->st.message = g->st.body = NULL;
            g->st_at = cairn_now_ms();
            if (p->kind == W_STATUS)
                answer_status(g, p, &m);
        } else if (m.type == CAIRN_IPC_ERROR) {
            fail_etcd(g, p, CAIRN_ETCD_INTERNAL);
        } else if (m.code) {
            fail(g, p, (int)m.code, msg);
        } else if (p->part || p->part_bad) {
            /* the last piece of an answer sent in parts */
            if (p->part_bad || p->part_len + m.body_len != p->part_total) {
                fail_etcd(g, p, CAIRN_ETCD_ANSWER_LOST);
            } else {
                memcpy(p->part + p->part_len, m.body, m.body_len);
                cairn_h2srv_reply(g->srv, p->call, p->part, p->part_total);
            }
        } else if (p->kind == W_HEALTH) {
            http1_json(g, p->call, 200, "{\"health\":\"true\"}");
        } else if (p->kind == W_MEMBERS || p->kind == W_MOVE_LEADER || p->kind == W_MEMBER_CHANGE) {
            answer_with_header(g, p, m.body, m.body_len);
        } else {
            cairn_h2srv_reply(g->srv, p->call, m.body, m.body_len);
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

static void sweep(cairn_gateway_t *g, int64_t now)
{
    size_t pos = 0;
    uint64_t key;
    void *val;
    /* collect first: taking while iterating may revisit moved slots */
    uint64_t expired[256];
    size_t n = 0;
    while (n < 256 && cairn_u64map_next(g->pending, &pos, &key, &val))
        if (((pending_t *)val)->deadline <= now)
            expired[n++] = key;
    for (size_t i = 0; i < n; i++) {
        pending_t *p = cairn_u64map_take(g->pending, expired[i]);
        if (!p)
            continue;
        fail_etcd(g, p, CAIRN_ETCD_TIMEOUT);
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
    g->pending = cairn_u64map_new();
    g->batches = cairn_u64map_new();
    char gwid[64];
    if (cfg->gateway_id && *cfg->gateway_id)
        snprintf(gwid, sizeof gwid, "%s", cfg->gateway_id);
    else
        snprintf(gwid, sizeof gwid, "gw%d", (int)getpid());
    g->origin_len = (size_t)snprintf(g->origin, sizeof g->origin, "%016llx/%s",
                                     (unsigned long long)cairn_config_member_id(cfg), gwid);
    char ep_r[512], ep_s[512];
    int rc;
    if (cairn_config_ipc_endpoint(cfg, "raftd", ep_r, sizeof ep_r) < 0 ||
        cairn_config_ipc_endpoint(cfg, "stored", ep_s, sizeof ep_s) < 0) {
        cairn_error("ipc endpoint path too long", "run_dir=%s", cfg->run_dir);
        goto fail;
    }
    g->raftd = cairn_zmq_dealer_connect(ep_r, g->origin, &rc);
    g->stored = cairn_zmq_dealer_connect(ep_s, g->origin, &rc);
    if (!g->raftd || !g->stored)
        goto fail;
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
    };
    cairn_h2srv_handlers_t h = {.on_message = on_message, .on_half_close = on_half_close, .on_close = on_close,
                                .is_streaming = is_streaming, .on_http1_async = on_http1_async, .ud = g};
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
            free(((read_batch_t *)v)->ids);
            free(v);
        }
        cairn_u64map_destroy(&g->batches);
    }
    free(g->queued_reads);
    free(g->items);
    free(g);
    *self_p = NULL;
}

int cairn_gateway_run(cairn_gateway_t *g, volatile int *stop)
{
    while (!*stop) {
        size_t want = cairn_h2srv_poll_count(g->srv) + 2;
        if (want > g->cap_items) {
            zmq_pollitem_t *ni = realloc(g->items, want * 2 * sizeof *ni);
            if (!ni)
                return CAIRN_ENOMEM;
            g->items = ni;
            g->cap_items = want * 2;
        }
        size_t n = cairn_h2srv_poll_fill(g->srv, g->items, g->cap_items - 2);
        g->items[n] = (zmq_pollitem_t){zsock_resolve(g->raftd), 0, ZMQ_POLLIN, 0};
        g->items[n + 1] = (zmq_pollitem_t){zsock_resolve(g->stored), 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(g->items, (int)(n + 2), 100);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0)
            cairn_h2srv_poll_handle(g->srv, g->items, n);
        if (g->items[n].revents & ZMQ_POLLIN)
            cairn_zmq_drain(g->raftd, 0, 100000, on_ipc_frame, g);
        if (g->items[n + 1].revents & ZMQ_POLLIN)
            cairn_zmq_drain(g->stored, 0, 100000, on_ipc_frame, g);
        flush_reads(g);
        int64_t now = cairn_now_ms();
        if (now >= g->next_sweep) {
            sweep(g, now);
            g->next_sweep = now + 100;
        }
        if (now >= g->next_status_poll) {
            pending_t *p = add_pending(g, 0, W_STATUS_POLL, 2000);
            if (p) {
                cairn_ipc_msg_t m = {.type = CAIRN_IPC_STATUS, .req_id = p->req_id};
                if (send_ipc(g, g->stored, &m))
                    free_pending(cairn_u64map_take(g->pending, p->req_id));
            }
            g->next_status_poll = now + 1000;
        }
        cairn_h2srv_flush(g->srv);
    }
    /* graceful: GOAWAY, let in-flight calls finish for a moment */
    cairn_h2srv_drain(g->srv);
    int64_t until = cairn_now_ms() + 500;
    while (cairn_h2srv_conn_count(g->srv) && cairn_now_ms() < until) {
        size_t n = cairn_h2srv_poll_fill(g->srv, g->items, g->cap_items - 2);
        zmq_poll(g->items, (int)n, 20);
        cairn_h2srv_poll_handle(g->srv, g->items, n);
        cairn_zmq_drain(g->stored, 0, 100000, on_ipc_frame, g);
        cairn_h2srv_flush(g->srv);
    }
    cairn_info("gatewayd stopping", NULL);
    return 0;
}
