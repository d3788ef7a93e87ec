/* svc_maint.c - etcd's Maintenance service; see gw_internal.h.
 *
 * Status is stored's (STATUS: revision, sizes, leader, indexes); MoveLeader is raftd's (it
 * must reach the leader, which hands leadership over). Snapshot is declared, not served yet.
 */
#include <stdlib.h>

#include "gw_internal.h"

static void status_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    Etcdserverpb__StatusResponse r = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    gw_fill_header(g, &h);
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
        gw_fail_etcd(g, p, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    etcdserverpb__status_response__pack(&r, buf);
    cairn_h2srv_reply(g->srv, p->call, buf, n);
    free(buf);
}

static const gw_answer_t answer_status = {.ok = status_ok};

static void do_status(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_STATUS};
    gw_ask(g, c->id, &answer_status, g->stored, &m, meta, CAIRN_ETCD_NOT_CAPABLE);
}

static void move_leader_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len,
                           const cairn_ipc_msg_t *m)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    gw_fill_header(g, &h);
    Etcdserverpb__MoveLeaderResponse r = ETCDSERVERPB__MOVE_LEADER_RESPONSE__INIT;
    r.header = &h;
    size_t n = etcdserverpb__move_leader_response__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        etcdserverpb__move_leader_response__pack(&r, buf);
        cairn_h2srv_reply(g->srv, p->call, buf, n);
    } else
        gw_fail_etcd(g, p, CAIRN_ETCD_INTERNAL);
    free(buf);
}

static const gw_answer_t answer_move_leader = {.ok = move_leader_ok};

static void do_move_leader(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len,
                           const cairn_h2_meta_t *meta)
{
    Etcdserverpb__MoveLeaderRequest *r = etcdserverpb__move_leader_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_TRANSFER, .target = r->targetid};
    etcdserverpb__move_leader_request__free_unpacked(r, NULL);
    gw_ask(g, c->id, &answer_move_leader, g->raftd, &m, meta, CAIRN_ETCD_NOT_CAPABLE);
}

/* clang-format off */
static const gw_method_t rows[] = {
    /* path                                  kind       handler         arg perm           json route */
    {"/etcdserverpb.Maintenance/Status",     GW_UNARY,  do_status,      0,  GW_PERM_READ,  "/v3/maintenance/status"},
    {"/etcdserverpb.Maintenance/MoveLeader", GW_UNARY,  do_move_leader, 0,  GW_PERM_ADMIN, "/v3/maintenance/transfer-leadership"},
    /* not served yet: a stream, so that clients get UNIMPLEMENTED at once, not at END_STREAM */
    {"/etcdserverpb.Maintenance/Snapshot",   GW_STREAM, NULL,           0,  GW_PERM_ADMIN, "/v3/maintenance/snapshot"},
};
/* clang-format on */

const gw_service_t gw_svc_maint = GW_SERVICE("maintenance", rows);
