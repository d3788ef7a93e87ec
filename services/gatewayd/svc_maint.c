/* svc_maint.c - etcd's Maintenance service; see gw_internal.h.
 *
 * Status is stored's (STATUS: revision, sizes, leader, indexes, then MAINT ALARMS: the alarms
 * this member has applied, which etcd lists in Status's errors); MoveLeader is raftd's (it
 * must reach the leader, which hands leadership over). Alarm is a proposal, every action (GET
 * too, as etcd 3.4's EtcdServer.Alarm): stored applies it to its alarm table and answers.
 * Hash, HashKV and Defragment are stored's (MAINT). Snapshot is declared, not served yet.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_kvcheck.h" /* CAIRN_REQ_ALARM */
#include "gw_internal.h"

/* What STATUS_RESP said, kept while the alarm list is asked for. */
typedef struct {
    uint64_t leader, term, index, applied, db_size, db_size_in_use, learner;
} status_ctx_t;

static void status_release(void *ctx) { free(ctx); }

/* Status's errors (etcd 3.4's maintenanceServer.Status): "etcdserver: no leader" without a
 * leader, then each active alarm as protobuf's text form of the AlarmMember, e.g.
 * "memberID:3319814642761637952 alarm:NOSPACE " (checked against etcd 3.4.23). */
static void status_reply(cairn_gateway_t *g, gw_pending_t *p, const status_ctx_t *st, const uint8_t *alarms,
                         size_t alarms_len)
{
    Etcdserverpb__StatusResponse r = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    gw_fill_header(g, &h);
    r.header = &h;
    r.version = CAIRN_ETCD_VERSION;
    r.dbsize = (int64_t)st->db_size;
    r.dbsizeinuse = (int64_t)st->db_size_in_use;
    r.leader = st->leader;
    r.raftindex = st->index;
    r.raftterm = st->term;
    r.raftappliedindex = st->applied;
    r.islearner = st->learner != 0;
    Etcdserverpb__AlarmResponse *ar = alarms ? etcdserverpb__alarm_response__unpack(NULL, alarms_len, alarms) : NULL;
    size_t na = ar ? ar->n_alarms : 0;
    char **errs = calloc(na + 1, sizeof *errs);
    if (!errs) {
        if (ar)
            etcdserverpb__alarm_response__free_unpacked(ar, NULL);
        gw_fail_etcd(g, p, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    size_t ne = 0;
    if (!st->leader)
        errs[ne++] = (char *)cairn_etcd_err_text(CAIRN_ETCD_NO_LEADER);
    char (*texts)[80] = na ? calloc(na, sizeof *texts) : NULL;
    for (size_t i = 0; texts && i < na; i++) {
        const Etcdserverpb__AlarmMember *a = ar->alarms[i];
        const char *type = a->alarm == ETCDSERVERPB__ALARM_TYPE__NOSPACE   ? "NOSPACE"
                           : a->alarm == ETCDSERVERPB__ALARM_TYPE__CORRUPT ? "CORRUPT"
                                                                           : NULL;
        int n = 0;
        if (a->memberid)
            n += snprintf(texts[i] + n, sizeof texts[i] - (size_t)n, "memberID:%" PRIu64 " ", a->memberid);
        if (type)
            snprintf(texts[i] + n, sizeof texts[i] - (size_t)n, "alarm:%s ", type);
        else if (a->alarm)
            snprintf(texts[i] + n, sizeof texts[i] - (size_t)n, "alarm:%d ", (int)a->alarm);
        errs[ne++] = texts[i];
    }
    r.errors = errs;
    r.n_errors = ne;
    size_t n = etcdserverpb__status_response__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        gw_fail_etcd(g, p, CAIRN_ETCD_TOO_MANY_REQUESTS);
    } else {
        etcdserverpb__status_response__pack(&r, buf);
        gw_reply(g, p->call, buf, n);
    }
    free(buf);
    free(texts);
    free(errs);
    if (ar)
        etcdserverpb__alarm_response__free_unpacked(ar, NULL);
}

static void status_alarms_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len,
                             const cairn_ipc_msg_t *m)
{
    status_reply(g, p, p->ctx, body, len);
}

/* No alarm list (a stored that cannot say): the status without it, as before alarms existed. */
static void status_alarms_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    status_reply(g, p, p->ctx, NULL, 0);
}

static const gw_answer_t answer_status_alarms = {
    .ok = status_alarms_ok, .fail = status_alarms_fail, .release = status_release};

static void status_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    status_ctx_t *st = malloc(sizeof *st);
    if (!st) {
        gw_fail_etcd(g, p, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    *st = (status_ctx_t){m->leader, m->term, m->index, m->applied, m->db_size, m->db_size_in_use, m->learner};
    cairn_ipc_msg_t q = {.type = CAIRN_IPC_MAINT, .op = CAIRN_MAINT_ALARMS};
    gw_pending_t *p2 = gw_ask(g, p->call, &answer_status_alarms, g->stored, &q, NULL, CAIRN_ETCD_NOT_CAPABLE);
    if (!p2) {
        free(st);
        return;
    }
    p2->ctx = st;
}

static const gw_answer_t answer_status = {.ok = status_ok};

static void do_status(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_STATUS};
    gw_ask(g, c->id, &answer_status, g->stored, &m, meta, CAIRN_ETCD_NOT_CAPABLE);
}

/* Alarm: every action goes through the log (etcd 3.4 proposes GET too, so a list is
 * linearizable); stored's answer is the AlarmResponse, header included. */
static void do_alarm(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    Etcdserverpb__AlarmRequest *r = etcdserverpb__alarm_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    etcdserverpb__alarm_request__free_unpacked(r, NULL);
    gw_propose(g, c->id, CAIRN_REQ_ALARM, msg, len, meta);
}

/* Hash, HashKV, Defragment: stored answers with the packed response (header included). */
static void do_maint(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_MAINT, .op = (uint64_t)c->method->arg};
    if (c->method->arg == CAIRN_MAINT_HASHKV) {
        Etcdserverpb__HashKVRequest *r = etcdserverpb__hash_kvrequest__unpack(NULL, len, msg);
        if (!r) {
            gw_bad_request(g, c->id);
            return;
        }
        etcdserverpb__hash_kvrequest__free_unpacked(r, NULL);
        m.body = msg;
        m.body_len = len;
    }
    gw_ask(g, c->id, &gw_answer_body, g->stored, &m, meta, CAIRN_ETCD_NOT_CAPABLE);
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
        gw_reply(g, p->call, buf, n);
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
    {"/etcdserverpb.Maintenance/Alarm",      GW_UNARY,  do_alarm,       0,  GW_PERM_READ,  "/v3/maintenance/alarm"},
    {"/etcdserverpb.Maintenance/Defragment", GW_UNARY,  do_maint,       CAIRN_MAINT_DEFRAG, GW_PERM_ADMIN, "/v3/maintenance/defragment"},
    {"/etcdserverpb.Maintenance/Hash",       GW_UNARY,  do_maint,       CAIRN_MAINT_HASH,   GW_PERM_ADMIN, "/v3/maintenance/hash"},
    /* etcd 3.4's rpc.proto maps HashKV to "/v3/maintenance/hash" as well; not routed twice here */
    {"/etcdserverpb.Maintenance/HashKV",     GW_UNARY,  do_maint,       CAIRN_MAINT_HASHKV, GW_PERM_ADMIN, NULL},
    /* not served yet: a stream, so that clients get UNIMPLEMENTED at once, not at END_STREAM */
    {"/etcdserverpb.Maintenance/Snapshot",   GW_STREAM, NULL,           0,  GW_PERM_ADMIN, "/v3/maintenance/snapshot"},
};
/* clang-format on */

const gw_service_t gw_svc_maint = GW_SERVICE("maintenance", rows);
