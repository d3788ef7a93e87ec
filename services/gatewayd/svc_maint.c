/* svc_maint.c - etcd's Maintenance service; see gw_internal.h.
 *
 * Status is stored's (STATUS: revision, sizes, leader, indexes, then MAINT ALARMS: the alarms
 * this member has applied, which etcd lists in Status's errors); MoveLeader is raftd's (it
 * must reach the leader, which hands leadership over). Alarm is a proposal, every action (GET
 * too, as etcd 3.4's EtcdServer.Alarm): stored applies it to its alarm table and answers.
 * Hash, HashKV and Defragment are stored's (MAINT).
 *
 * Snapshot (a server stream): stored makes an etcd 3.4 backend file of the member's state on a
 * thread of its own (snapstream.c), then the gateway pulls it CAIRN_MAINT_SNAP_CHUNK bytes at
 * a time and sends it as etcd does: messages of at most 32 KiB with remaining_bytes, then one
 * last message whose blob is the SHA-256 of all the bytes (etcdctl snapshot restore checks
 * it). The next chunk is asked for only while the client holds less than SNAP_QUEUE_MARK
 * unread, so a client that stops reading costs one chunk here; while it does not read, the
 * stream waits on a pending request that nobody answers - its deadline is the timer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

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
/* etcd 3.4 answers Alarm without a header (EtcdServer.Alarm returns the applier's response as
 * it is, and nothing fills one in; checked against 3.4.23): the applied response's header is
 * dropped so that the answer is etcd's byte for byte. */
static void alarm_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    (void)m;
    Etcdserverpb__AlarmResponse *r = etcdserverpb__alarm_response__unpack(NULL, len, body ? body : (const uint8_t *)"");
    if (!r) {
        gw_fail_etcd(g, p, CAIRN_ETCD_INTERNAL);
        return;
    }
    Etcdserverpb__ResponseHeader *h = r->header;
    r->header = NULL;
    g->next_status_poll = 0; /* a disarm: the quota check (svc_kv.c) wants the size now */
    size_t n = etcdserverpb__alarm_response__get_packed_size(r);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        etcdserverpb__alarm_response__pack(r, buf);
        gw_reply(g, p->call, buf, n);
        free(buf);
    } else {
        gw_fail_etcd(g, p, CAIRN_ETCD_TOO_MANY_REQUESTS);
    }
    r->header = h;
    etcdserverpb__alarm_response__free_unpacked(r, NULL);
}

static const gw_answer_t answer_alarm = {alarm_ok, NULL, 1, NULL};

static void do_alarm(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    Etcdserverpb__AlarmRequest *r = etcdserverpb__alarm_request__unpack(NULL, len, msg);
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    etcdserverpb__alarm_request__free_unpacked(r, NULL);
    gw_propose_with(g, c->id, &answer_alarm, CAIRN_REQ_ALARM, msg, len, gw_timeout(meta));
}

/* A defragmentation shrank the store: the size the quota check (svc_kv.c) goes by is asked
 * for again at once, not at the next second. */
static void defrag_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    (void)m;
    g->next_status_poll = 0;
    gw_reply(g, p->call, body, len);
}

static const gw_answer_t answer_defrag = {defrag_ok, NULL, 0, NULL};

/* Hash, HashKV, Defragment: stored answers with the packed response. */
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
    gw_ask(g, c->id, c->method->arg == CAIRN_MAINT_DEFRAG ? &answer_defrag : &gw_answer_body, g->stored, &m, meta,
           CAIRN_ETCD_NOT_CAPABLE);
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

/* ------------------------------------------------------------------ Snapshot */

#define SNAP_MSG_BYTES ((size_t)32 << 10)      /* etcd's snapshotSendBufferSize */
/* Unread bytes a client may hold. The gateway learns that a client drained only by looking
 * (the wait timer, at the 100 ms sweep): a mark of 1 MiB held etcdctl to ~30 MB/s, 8 MiB lets
 * it take a 64 MiB snapshot in well under a second, and is what a stalled client costs. */
#define SNAP_QUEUE_MARK ((size_t)8 << 20)
#define SNAP_MAKE_TIMEOUT_MS (60 * 60 * 1000)  /* a very large store takes long to copy */
#define SNAP_READ_TIMEOUT_MS (30 * 1000)
#define SNAP_WAIT_MS 50

typedef struct {
    uint64_t snap_id, total, sent;
    int in_flight; /* a MAINT request or the wait timer is pending */
    int done;
    EVP_MD_CTX *sha;
} snap_stream_t;

static void snap_pump(cairn_gateway_t *g, gw_call_t *c);

static snap_stream_t *snap_of(cairn_gateway_t *g, cairn_call_id_t call, gw_call_t **cp)
{
    gw_call_t *c = cairn_u64map_get(g->calls, call);
    if (cp)
        *cp = c;
    return c ? c->state : NULL;
}

static void snap_end(cairn_gateway_t *g, gw_call_t *c, int code, const char *message)
{
    snap_stream_t *st = c->state;
    st->done = 1;
    st->in_flight = 0;
    gw_stream_end(g, c->id, code, message);
}

/* Sends a MAINT snapshot op to stored; with p (its answer awaited) a send that fails ends the
 * stream. */
static void snap_send_op(cairn_gateway_t *g, gw_pending_t *p, int op, uint64_t id, uint64_t off)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_MAINT, .req_id = p ? p->req_id : 0, .op = (uint64_t)op,
                         .snap_id = id, .offset = off};
    if (gw_send_ipc(g, g->stored, &m) == 0 || !p)
        return;
    cairn_call_id_t call = p->call;
    gw_drop_pending(g, p->req_id);
    gw_call_t *c;
    if (snap_of(g, call, &c))
        snap_end(g, c, cairn_etcd_err_code(CAIRN_ETCD_NOT_CAPABLE), cairn_etcd_err_text(CAIRN_ETCD_NOT_CAPABLE));
}

static void snap_failed(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    gw_call_t *c;
    snap_stream_t *st = snap_of(g, p->call, &c);
    if (!st || st->done)
        return;
    st->in_flight = 0;
    snap_end(g, c, code, message);
}

static void snap_made(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    (void)m;
    uint64_t id = 0, total = 0;
    for (size_t i = 0; len == 24 && i < 8; i++) {
        id = id << 8 | body[i];
        total = total << 8 | body[8 + i];
    }
    gw_call_t *c;
    snap_stream_t *st = snap_of(g, p->call, &c);
    if (!st || st->done) { /* the client went away meanwhile: stored may drop the file */
        if (id)
            snap_send_op(g, NULL, CAIRN_MAINT_SNAPSHOT_CLOSE, id, 0);
        return;
    }
    st->in_flight = 0;
    if (len != 24 || !id) {
        snap_end(g, c, CAIRN_GRPC_INTERNAL, "cairn: malformed snapshot answer from stored");
        return;
    }
    st->snap_id = id;
    st->total = total;
    snap_pump(g, c);
}

static void snap_data(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    (void)m;
    gw_call_t *c;
    snap_stream_t *st = snap_of(g, p->call, &c);
    if (!st || st->done)
        return;
    st->in_flight = 0;
    if (len == 0 || len > st->total - st->sent) {
        snap_end(g, c, CAIRN_GRPC_INTERNAL, "cairn: snapshot chunk does not fit the file");
        return;
    }
    EVP_DigestUpdate(st->sha, body, len);
    for (size_t off = 0; off < len; off += SNAP_MSG_BYTES) {
        size_t n = len - off < SNAP_MSG_BYTES ? len - off : SNAP_MSG_BYTES;
        Etcdserverpb__SnapshotResponse r = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
        st->sent += n;
        r.remaining_bytes = st->total - st->sent;
        r.blob.data = (uint8_t *)body + off;
        r.blob.len = n;
        uint8_t *out = malloc(etcdserverpb__snapshot_response__get_packed_size(&r));
        if (!out) {
            snap_end(g, c, CAIRN_GRPC_RESOURCE_EXHAUSTED, "cairn: out of memory");
            return;
        }
        size_t on = etcdserverpb__snapshot_response__pack(&r, out);
        int rc = gw_stream_send(g, c->id, out, on);
        free(out);
        if (rc) {
            st->done = 1; /* the stream is gone; close follows */
            return;
        }
    }
    snap_pump(g, c);
}

static void snap_waited(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    (void)code, (void)message;
    gw_call_t *c;
    snap_stream_t *st = snap_of(g, p->call, &c);
    if (!st || st->done)
        return;
    st->in_flight = 0;
    snap_pump(g, c);
}

static const gw_answer_t snap_made_how = {snap_made, snap_failed, 0, NULL};
static const gw_answer_t snap_data_how = {snap_data, snap_failed, 0, NULL};
static const gw_answer_t snap_wait_how = {NULL, snap_waited, 0, NULL};

static void snap_pump(cairn_gateway_t *g, gw_call_t *c)
{
    snap_stream_t *st = c->state;
    if (st->in_flight || st->done || !st->snap_id)
        return;
    if (st->sent == st->total) {
        Etcdserverpb__SnapshotResponse r = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
        uint8_t sha[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        EVP_DigestFinal_ex(st->sha, sha, &n);
        r.blob.data = sha;
        r.blob.len = n;
        uint8_t out[128];
        size_t on = etcdserverpb__snapshot_response__pack(&r, out);
        snap_send_op(g, NULL, CAIRN_MAINT_SNAPSHOT_CLOSE, st->snap_id, 0);
        if (gw_stream_send(g, c->id, out, on) == 0)
            snap_end(g, c, 0, NULL);
        st->done = 1;
        return;
    }
    if (gw_stream_queued(g, c->id) > SNAP_QUEUE_MARK) {
        if (gw_add_pending(g, c->id, &snap_wait_how, SNAP_WAIT_MS))
            st->in_flight = 1;
        else
            snap_end(g, c, CAIRN_GRPC_RESOURCE_EXHAUSTED, "cairn: out of memory");
        return;
    }
    gw_pending_t *p = gw_add_pending(g, c->id, &snap_data_how, SNAP_READ_TIMEOUT_MS);
    if (!p) {
        snap_end(g, c, CAIRN_GRPC_RESOURCE_EXHAUSTED, "cairn: out of memory");
        return;
    }
    st->in_flight = 1;
    snap_send_op(g, p, CAIRN_MAINT_SNAPSHOT_READ, st->snap_id, st->sent);
}

static void do_snapshot(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len, const cairn_h2_meta_t *meta)
{
    (void)meta;
    if (c->state)
        return; /* a server stream: one request */
    Etcdserverpb__SnapshotRequest *q = etcdserverpb__snapshot_request__unpack(NULL, len, msg ? msg : (const uint8_t *)"");
    if (!q) {
        gw_stream_end(g, c->id, CAIRN_GRPC_INTERNAL, "grpc: error unmarshalling request: unexpected EOF");
        return;
    }
    etcdserverpb__snapshot_request__free_unpacked(q, NULL);
    snap_stream_t *st = calloc(1, sizeof *st);
    if (!st || !(st->sha = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(st->sha, EVP_sha256(), NULL)) {
        if (st)
            EVP_MD_CTX_free(st->sha);
        free(st);
        gw_stream_end(g, c->id, CAIRN_GRPC_RESOURCE_EXHAUSTED, "cairn: out of memory");
        return;
    }
    c->state = st;
    gw_pending_t *p = gw_add_pending(g, c->id, &snap_made_how, SNAP_MAKE_TIMEOUT_MS);
    if (!p) {
        snap_end(g, c, CAIRN_GRPC_RESOURCE_EXHAUSTED, "cairn: out of memory");
        return;
    }
    st->in_flight = 1;
    snap_send_op(g, p, CAIRN_MAINT_SNAPSHOT, 0, 0);
}

static void snap_close(cairn_gateway_t *g, gw_call_t *c)
{
    snap_stream_t *st = c->state;
    if (!st)
        return;
    if (st->snap_id && !st->done)
        snap_send_op(g, NULL, CAIRN_MAINT_SNAPSHOT_CLOSE, st->snap_id, 0);
    EVP_MD_CTX_free(st->sha);
    free(st);
    c->state = NULL;
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
    {"/etcdserverpb.Maintenance/Snapshot",   GW_STREAM, do_snapshot,    0,  GW_PERM_ADMIN, "/v3/maintenance/snapshot",
     NULL, snap_close, GW_JSON_SERVER_STREAM},
};
/* clang-format on */

const gw_service_t gw_svc_maint = GW_SERVICE("maintenance", rows);
