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

void raftd_fail_reads(raftd_t *r, cairn_etcd_err_t why)
{
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
    case CAIRN_IPC_PROPOSE: {
        note_proposer(r, ident, ident_len);
        rc = r->raft ? cairn_raft_propose(r->raft, m.body, m.body_len, NULL) : CAIRN_ENOT_LEADER;
        if (rc) {
            raftd_send_gw_error(r, ident, ident_len, CAIRN_IPC_PROPOSE_FAIL, m.req_id,
                                rc == CAIRN_ENOT_LEADER ? CAIRN_ETCD_NO_LEADER
                                : rc == CAIRN_ESTATE    ? CAIRN_ETCD_TIMEOUT_LEADER_TRANSFER
                                                  : CAIRN_ETCD_NOT_CAPABLE);
        }
        break;
    }
    case CAIRN_IPC_READ_INDEX: {
        read_ctx_t *c = malloc(sizeof *c);
        if (!c || ident_len > sizeof c->ident) {
            free(c);
            break;
        }
        memcpy(c->ident, ident, ident_len);
        c->ident_len = ident_len;
        c->req_id = m.req_id;
        uint64_t ctx = ++r->next_ctx;
        cairn_u64map_put(r->reads, ctx, c);
        if (!r->raft || cairn_raft_read_index(r->raft, ctx) != 0) {
            cairn_u64map_take(r->reads, ctx);
            raftd_send_gw_error(r, ident, ident_len, CAIRN_IPC_READ_INDEX_RESP, m.req_id, CAIRN_ETCD_NO_LEADER);
            free(c);
        }
        break;
    }
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
