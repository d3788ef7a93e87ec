/* gateway.c - the gateways' requests to raftd on its ROUTER <run>/raftd.ipc (PROPOSE,
 * READ_INDEX, MEMBERS, MEMBER_CHANGE, TRANSFER, METRICS) and the answers to them; the gateways that
 * proposed are remembered so that a reload can tell them their writes in flight are lost. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "raftd.h"

void raftd_send_gw(raftd_t *r, const uint8_t *ident, size_t len, const cairn_ipc_msg_t *m)
{
    if (cairn_zmq_send(r->router, ident, len, m))
        cairn_debug("reply to gateway dropped", "type=%s", cairn_ipc_type_name(m->type));
}

/* A refusal with etcd error e, to a gateway: a message of type (a PROPOSE_FAIL, a
 * READ_INDEX_RESP, ...) answering req_id. */
void raftd_send_gw_error(raftd_t *r, const uint8_t *ident, size_t len, int type, uint64_t req_id, cairn_etcd_err_t e)
{
    cairn_ipc_msg_t m = {.type = (uint8_t)type, .req_id = req_id, .code = cairn_etcd_err_code(e)};
    cairn_ipc_set_message(&m, cairn_etcd_err_text(e));
    if (type == CAIRN_IPC_PROPOSE_FAIL)
        cairn_metrics_inc(r->metrics, RAFTD_M_PROPOSALS_FAILED, 1);
    else if (type == CAIRN_IPC_READ_INDEX_RESP)
        cairn_metrics_inc(r->metrics, RAFTD_M_READ_INDEXES_FAILED, 1);
    raftd_send_gw(r, ident, len, &m);
}

static void held_fail(raftd_t *r, cairn_etcd_err_t why);

void raftd_fail_reads(raftd_t *r, cairn_etcd_err_t why)
{
    /* Requests waiting for a leader (below) were never given to a core: when the core is
     * rebuilt (a reload, the first load) they keep waiting for the new one; only a stop ends
     * them. */
    if (why == CAIRN_ETCD_STOPPED)
        held_fail(r, why);
    size_t pos = 0;
    uint64_t key;
    void *val;
    while (cairn_u64map_next(r->reads, &pos, &key, &val)) {
        read_ctx_t *rc = val;
        raftd_send_gw_error(r, rc->ident, rc->ident_len, CAIRN_IPC_READ_INDEX_RESP, rc->req_id, why);
        free(rc);
    }
    cairn_u64map_destroy(&r->reads);
    r->reads = cairn_u64map_new();
}

void raftd_answer(raftd_t *r, const uint8_t *ident, size_t len, uint64_t req_id, int code, const char *msg,
                  const uint8_t *body, size_t body_len)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RESULT, .req_id = req_id, .code = code, .body = body, .body_len = body_len};
    cairn_ipc_set_message(&m, msg);
    raftd_send_gw(r, ident, len, &m);
}

static void answer_error(raftd_t *r, const uint8_t *ident, size_t len, uint64_t req_id, cairn_etcd_err_t e)
{
    raftd_answer(r, ident, len, req_id, cairn_etcd_err_code(e), cairn_etcd_err_text(e), NULL, 0);
}

/* Answers the MoveLeader in progress: done (CAIRN_ETCD_NONE) or failed with e. */
void raftd_finish_transfer(raftd_t *r, cairn_etcd_err_t e)
{
    if (!r->transfer.req_id)
        return;
    raftd_answer(r, r->transfer.ident, r->transfer.ident_len, r->transfer.req_id, cairn_etcd_err_code(e),
                 e ? cairn_etcd_err_text(e) : NULL, NULL, 0);
    memset(&r->transfer, 0, sizeof r->transfer);
}

static void note_proposer(raftd_t *r, const uint8_t *ident, size_t len)
{
    for (size_t i = 0; i < r->n_proposers; i++)
        if (r->proposers[i].len == len && memcmp(r->proposers[i].ident, ident, len) == 0)
            return;
    if (r->n_proposers < 32 && len <= sizeof r->proposers[0].ident) {
        memcpy(r->proposers[r->n_proposers].ident, ident, len);
        r->proposers[r->n_proposers++].len = len;
    }
}

/* The core is being rebuilt (stored restarted): proposals it held that stored had not made
 * durable are gone, and those it had may still commit. Tell every gateway that proposed:
 * each fails its in-flight writes with etcd's "outcome unknown" timeout text at once,
 * instead of letting clients wait out their deadlines. */
void raftd_notify_reload(raftd_t *r)
{
    for (size_t i = 0; i < r->n_proposers; i++) {
        raftd_send_gw_error(r, r->proposers[i].ident, r->proposers[i].len, CAIRN_IPC_PROPOSALS_LOST, 0,
                            CAIRN_ETCD_TIMEOUT_LEADER_FAIL);
    }
    r->n_proposers = 0;
}

/* etcd 3.4 serves only Status and serializable Range on a learner (isRPCSupportedForLearner):
 * both go straight to stored; whatever reaches raftd is refused. */
static int self_is_learner(raftd_t *r)
{
    const uint64_t *l;
    size_t nl = r->raft ? cairn_raft_learners(r->raft, &l) : 0;
    return id_in(l, nl, cairn_config_member_id(r->cfg));
}

/* ---- requests that wait for a leader --------------------------------------------------------
 * A member that just started (or restarted one of its processes), or whose cluster is electing,
 * knows no leader for a moment - a heartbeat or an election. A write or a linearizable read that
 * arrives then waits for one, up to HOLD_MS, instead of failing at once with "etcdserver: no
 * leader": etcd's own raft keeps such a proposal until the election ends, and a client in a
 * rolling restart should not see that moment. So does a write that reaches a leader while it
 * hands leadership over (MoveLeader, or its stop): the new leader takes it. Bounded: at most
 * HOLD_MAX requests and HOLD_MAX_BYTES of bodies wait; more are refused at once, as before. */
#define HOLD_MAX 10000
#define HOLD_MAX_BYTES ((size_t)64 << 20)

typedef struct raftd_held {
    struct raftd_held *next;
    int type; /* CAIRN_IPC_PROPOSE or CAIRN_IPC_READ_INDEX */
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id;
    int64_t deadline;
    cairn_etcd_err_t why; /* what it waits for (the answer if the wait ends without it) */
    size_t len;
    uint8_t body[]; /* a proposal's body */
} raftd_held_t;

static int64_t hold_ms(const raftd_t *r) { return 2 * (int64_t)r->cfg->election_ms + 1000; }

static int no_leader(const raftd_t *r) { return !r->raft || cairn_raft_leader(r->raft) == 0; }

/* Keeps the request for later: 1, or 0 when it cannot wait (bounds, memory). */
static int hold(raftd_t *r, int type, const uint8_t *ident, size_t ident_len, uint64_t req_id, const uint8_t *body,
                size_t len, cairn_etcd_err_t why)
{
    if (r->n_waiting >= HOLD_MAX || r->waiting_bytes + len > HOLD_MAX_BYTES || ident_len > sizeof r->waiting->ident)
        return 0;
    raftd_held_t *h = malloc(sizeof *h + len);
    if (!h)
        return 0;
    h->next = NULL;
    h->type = type;
    memcpy(h->ident, ident, ident_len);
    h->ident_len = ident_len;
    h->req_id = req_id;
    h->why = why;
    h->deadline = cairn_now_ms() + hold_ms(r);
    h->len = len;
    if (len)
        memcpy(h->body, body, len);
    if (!r->waiting_tail)
        r->waiting_tail = &r->waiting;
    *r->waiting_tail = h;
    r->waiting_tail = &h->next;
    r->n_waiting++;
    r->waiting_bytes += len;
    if (r->n_waiting == 1)
        cairn_debug("requests wait for a leader", "why=\"%s\" hold_ms=%lld", cairn_etcd_err_text(why),
                    (long long)hold_ms(r));
    return 1;
}

/* Tries a request: 0 when it went to the core or was answered, else the reason it must wait -
 * CAIRN_ETCD_NO_LEADER (none known) or CAIRN_ETCD_TIMEOUT_LEADER_TRANSFER (this leader is
 * handing over: thesis §3.10, no new entries meanwhile; the new leader takes them). */
static cairn_etcd_err_t try_request(raftd_t *r, int type, const uint8_t *ident, size_t ident_len, uint64_t req_id,
                                    const uint8_t *body, size_t len)
{
    if (type == CAIRN_IPC_PROPOSE) {
        int rc = r->raft ? cairn_raft_propose(r->raft, body, len, NULL) : CAIRN_ENOT_LEADER;
        if (rc == 0)
            return CAIRN_ETCD_NONE;
        if (rc == CAIRN_ENOT_LEADER && no_leader(r))
            return CAIRN_ETCD_NO_LEADER;
        if (rc == CAIRN_ESTATE)
            return CAIRN_ETCD_TIMEOUT_LEADER_TRANSFER;
        raftd_send_gw_error(r, ident, ident_len, CAIRN_IPC_PROPOSE_FAIL, req_id,
                            rc == CAIRN_ENOT_LEADER ? CAIRN_ETCD_NO_LEADER : CAIRN_ETCD_NOT_CAPABLE);
        return CAIRN_ETCD_NONE;
    }
    read_ctx_t *c = malloc(sizeof *c);
    if (!c || ident_len > sizeof c->ident) {
        free(c);
        return CAIRN_ETCD_NONE;
    }
    memcpy(c->ident, ident, ident_len);
    c->ident_len = ident_len;
    c->req_id = req_id;
    uint64_t ctx = ++r->next_ctx;
    cairn_u64map_put(r->reads, ctx, c);
    if (r->raft && cairn_raft_read_index(r->raft, ctx) == 0)
        return CAIRN_ETCD_NONE;
    cairn_u64map_take(r->reads, ctx);
    free(c);
    return CAIRN_ETCD_NO_LEADER;
}

static void fail_request(raftd_t *r, int type, const uint8_t *ident, size_t ident_len, uint64_t req_id,
                         cairn_etcd_err_t why)
{
    raftd_send_gw_error(r, ident, ident_len, type == CAIRN_IPC_PROPOSE ? CAIRN_IPC_PROPOSE_FAIL : CAIRN_IPC_READ_INDEX_RESP,
                        req_id, why);
}

/* A request from a gateway: to the core now, or held until a leader can take it. */
static void request_or_hold(raftd_t *r, int type, const uint8_t *ident, size_t ident_len, uint64_t req_id,
                            const uint8_t *body, size_t len)
{
    cairn_etcd_err_t why = try_request(r, type, ident, ident_len, req_id, body, len);
    if (why != CAIRN_ETCD_NONE && !hold(r, type, ident, ident_len, req_id, body, len, why))
        fail_request(r, type, ident, ident_len, req_id, why);
}

void raftd_held_tick(raftd_t *r, int64_t now)
{
    if (!r->waiting)
        return;
    int leader = !no_leader(r);
    raftd_held_t *list = r->waiting;
    r->waiting = NULL;
    r->waiting_tail = &r->waiting;
    r->n_waiting = 0;
    r->waiting_bytes = 0;
    while (list) {
        raftd_held_t *h = list;
        list = h->next;
        h->next = NULL;
        /* in arrival order; tried again whenever a leader is known (a transfer may still be
         * on: then it keeps waiting) */
        cairn_etcd_err_t why = leader ? try_request(r, h->type, h->ident, h->ident_len, h->req_id, h->body, h->len)
                                      : h->why;
        if (why == CAIRN_ETCD_NONE) {
            free(h);
            continue;
        }
        if (now >= h->deadline) {
            fail_request(r, h->type, h->ident, h->ident_len, h->req_id, why);
            free(h);
            continue;
        }
        h->why = why;
        *r->waiting_tail = h;
        r->waiting_tail = &h->next;
        r->n_waiting++;
        r->waiting_bytes += h->len;
    }
}

/* Answers every waiting request with why and forgets it (the core is rebuilt, or raftd stops). */
static void held_fail(raftd_t *r, cairn_etcd_err_t why)
{
    while (r->waiting) {
        raftd_held_t *h = r->waiting;
        r->waiting = h->next;
        raftd_send_gw_error(r, h->ident, h->ident_len,
                            h->type == CAIRN_IPC_PROPOSE ? CAIRN_IPC_PROPOSE_FAIL : CAIRN_IPC_READ_INDEX_RESP,
                            h->req_id, why);
        free(h);
    }
    r->waiting_tail = &r->waiting;
    r->n_waiting = r->waiting_bytes = 0;
}

void raftd_handle_gw(raftd_t *r, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected message from gateway", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .code = rc};
        cairn_ipc_set_message(&e, cairn_strerror(rc));
        raftd_send_gw(r, ident, ident_len, &e);
        return;
    }
    int removed = r->removed_logged; /* removed from the cluster: etcd stops such a member */
    if ((removed || self_is_learner(r)) &&
        (m.type == CAIRN_IPC_PROPOSE || m.type == CAIRN_IPC_READ_INDEX || m.type == CAIRN_IPC_MEMBERS ||
         m.type == CAIRN_IPC_MEMBER_CHANGE || m.type == CAIRN_IPC_TRANSFER)) {
        int type = m.type == CAIRN_IPC_PROPOSE      ? CAIRN_IPC_PROPOSE_FAIL
                   : m.type == CAIRN_IPC_READ_INDEX ? CAIRN_IPC_READ_INDEX_RESP
                                                    : CAIRN_IPC_RESULT;
        raftd_send_gw_error(r, ident, ident_len, type, m.req_id, removed ? CAIRN_ETCD_STOPPED : CAIRN_ETCD_LEARNER_NOT_SUPPORTED);
        cairn_ipc_msg_release(&m);
        return;
    }
    switch (m.type) {
    case CAIRN_IPC_PROPOSE:
        note_proposer(r, ident, ident_len);
        request_or_hold(r, CAIRN_IPC_PROPOSE, ident, ident_len, m.req_id, m.body, m.body_len);
        break;
    case CAIRN_IPC_READ_INDEX:
        request_or_hold(r, CAIRN_IPC_READ_INDEX, ident, ident_len, m.req_id, NULL, 0);
        break;
    case CAIRN_IPC_MEMBERS:
        raftd_answer_members(r, ident, ident_len, m.req_id);
        break;
    case CAIRN_IPC_LEASE_QUERY:
        raftd_lessor_query(r, ident, ident_len, &m);
        break;
    case CAIRN_IPC_METRICS: /* answered whatever this member's state: a removed one has metrics too */
        raftd_answer_metrics(r, ident, ident_len, m.req_id);
        break;
    case CAIRN_IPC_MEMBER_CHANGE: {
        conf_origin_t o = {.req_id = m.req_id, .at = cairn_now_ms()};
        if (ident_len > sizeof o.ident)
            break;
        memcpy(o.ident, ident, ident_len);
        o.ident_len = ident_len;
        raftd_conf_begin(r, (int)m.op, m.body, m.body_len, &o);
        break;
    }
    case CAIRN_IPC_TRANSFER: {
        /* etcd: MoveLeader must reach the leader; the target must be a voting member */
        const uint64_t *vs = NULL;
        size_t nvs = r->raft ? cairn_raft_voters(r->raft, &vs) : 0;
        int is_member = id_in(vs, nvs, m.target);
        if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER) {
            answer_error(r, ident, ident_len, m.req_id, CAIRN_ETCD_NOT_LEADER);
        } else if (!is_member) {
            answer_error(r, ident, ident_len, m.req_id, CAIRN_ETCD_BAD_LEADER_TRANSFEREE);
        } else if (m.target == cairn_config_member_id(r->cfg)) {
            raftd_answer(r, ident, ident_len, m.req_id, CAIRN_GRPC_OK, NULL, NULL, 0); /* already leads */
        } else if (r->transfer.req_id || ident_len > sizeof r->transfer.ident) {
            answer_error(r, ident, ident_len, m.req_id, CAIRN_ETCD_LEADER_CHANGED);
        } else if (cairn_raft_transfer_leader(r->raft, m.target) != 0) {
            answer_error(r, ident, ident_len, m.req_id, CAIRN_ETCD_BAD_LEADER_TRANSFEREE);
        } else {
            memcpy(r->transfer.ident, ident, ident_len);
            r->transfer.ident_len = ident_len;
            r->transfer.req_id = m.req_id;
            r->transfer.target = m.target;
            /* etcd waits up to its request timeout for the transferee to take over */
            r->transfer.deadline = cairn_now_ms() + 5000 + 2 * r->cfg->election_ms;
        }
        break;
    }
    default: {
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .req_id = m.req_id, .code = CAIRN_EUNKNOWN_MSG};
        cairn_ipc_set_message(&e, "raftd does not handle this message type");
        raftd_send_gw(r, ident, ident_len, &e);
    }
    }
    cairn_ipc_msg_release(&m);
}
