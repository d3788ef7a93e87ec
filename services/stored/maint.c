/* maint.c - stored's part of etcd's Maintenance service and of the space quota (stored.h).
 *
 *   MAINT (gw -> stored): Hash, HashKV, Defragment and the alarm list this member has
 *   applied (for Status's errors and /health), each answered with RESULT whose body is the
 *   packed etcd response. The Snapshot ops go to snapstream.c.
 *
 *   Quota (etcd 3.4's quotaAlarmer, etcdserver/api/v3rpc/quota.go): when the store's files
 *   pass --quota-backend-bytes, stored proposes ACTIVATE NOSPACE for this member through the
 *   log (PROPOSE to its raftd, which proposes it like a gateway's; the envelope's origin
 *   "stored:<id>" matches no gateway, so no RESULT goes anywhere). Once applied, every
 *   member's apply refuses Put, Txn with puts and LeaseGrant (apply.c) until an operator
 *   disarms it. Why stored and not the gateway: stored is the one that sees the size, at
 *   every apply, whether or not a gateway polls it; it needs only one new case in raftd.
 *
 *   Defragment runs leveldb_compact_range on a helper thread (LevelDB's own background thread
 *   does the work; reads and writes on the loop go on), the loop answers every waiting
 *   request once it is done.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "rpc.pb-c.h"
#include "stored.h"

typedef struct maint_wait_s {
    struct maint_wait_s *next;
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id;
} maint_wait_t;

static void hash_reap(stored_t *s, int block); /* HashKV jobs, below */

static void hdr_fill(stored_t *s, Etcdserverpb__ResponseHeader *h, int64_t rev)
{
    cairn_hdr_ctx_t c = stored_hdr_ctx(s);
    h->cluster_id = c.cluster_id;
    h->member_id = c.member_id;
    h->raft_term = c.raft_term;
    h->revision = rev;
}

static void reply_msg(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        stored_reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    protobuf_c_message_pack(msg, buf);
    stored_reply_result(s, ident, ident_len, req_id, 0, NULL, buf, n);
    free(buf);
}

static void *defrag_main(void *arg)
{
    stored_t *s = arg;
    double t0 = stored_clock_s();
    s->defrag.rc = cairn_mvcc_defrag(s->defrag.mvcc);
    s->defrag.seconds = stored_clock_s() - t0;
    atomic_store(&s->defrag.done, 1);
    return NULL;
}

int stored_maint_busy(stored_t *s)
{
    return s->defrag.running || s->hash_jobs || stored_snapstream_busy(s);
}

void stored_defrag_reap(stored_t *s, int block)
{
    /* The threads that read the store for a client's snapshot go with the defragmentation's:
     * everything that waits for this one (an installed snapshot replacing the store, exit)
     * must wait for them too - and then ends their streams. */
    if (block)
        stored_snapstream_destroy(s);
    else
        stored_snapstream_reap(s, 0);
    hash_reap(s, block);
    if (!s->defrag.running || (!block && !atomic_load(&s->defrag.done)))
        return;
    if (s->defrag.joinable)
        pthread_join(s->defrag.thread, NULL);
    s->defrag.running = 0;
    cairn_info("defragmented", "seconds=%.3f db_size=%lld", s->defrag.seconds,
               (long long)(s->mvcc ? cairn_mvcc_db_size(s->mvcc) : 0));
    while (s->defrag.waiters) {
        maint_wait_t *w = s->defrag.waiters;
        s->defrag.waiters = w->next;
        /* no header: etcd 3.4's Defragment returns an empty DefragmentResponse */
        Etcdserverpb__DefragmentResponse r = ETCDSERVERPB__DEFRAGMENT_RESPONSE__INIT;
        if (s->defrag.rc)
            stored_reply_result(s, w->ident, w->ident_len, w->req_id, CAIRN_GRPC_INTERNAL, cairn_strerror(s->defrag.rc),
                                NULL, 0);
        else
            reply_msg(s, w->ident, w->ident_len, w->req_id, &r.base);
        free(w);
    }
}

static void defrag_start(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id)
{
    maint_wait_t *w = calloc(1, sizeof *w);
    if (!w || ident_len > sizeof w->ident) {
        free(w);
        stored_reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    memcpy(w->ident, ident, ident_len);
    w->ident_len = ident_len;
    w->req_id = req_id;
    /* one compaction at a time; a request arriving meanwhile is answered with it (it covers
     * whatever was deleted before the request: compact_range flushes the memtable first, and
     * a second request right after finds little to do anyway) */
    w->next = s->defrag.waiters;
    s->defrag.waiters = w;
    if (s->defrag.running)
        return;
    s->defrag.mvcc = s->mvcc;
    s->defrag.rc = 0;
    atomic_store(&s->defrag.done, 0);
    s->defrag.joinable = pthread_create(&s->defrag.thread, NULL, defrag_main, s) == 0;
    if (!s->defrag.joinable)
        defrag_main(s); /* no thread: do it here (reads and writes wait meanwhile) */
    s->defrag.running = 1;
    cairn_info("defragmenting", "db_size=%lld", (long long)cairn_mvcc_db_size(s->mvcc));
}

/* ---- HashKV on threads ---------------------------------------------------------------------
 * A HashKV walks the whole history (seconds on a big store); the corruption checks ask for one
 * every period on every member. Maintenance/Hash (every record) runs the same way. The walk runs on a thread of its own through a LevelDB snapshot
 * pinned on the loop (cairn_mvcc_hashkv_begin), so applies and reads go on; the loop answers when
 * it is done (stored_defrag_reap). At most HASH_THREADS at once; more wait in the same order. */
#define HASH_THREADS 2

typedef struct hash_job_s {
    struct hash_job_s *next;
    int running;
    pthread_t thread;
    atomic_int done;
    cairn_mvcc_hashkv_t *job;
    uint32_t hash;
    int rc;
    int64_t want, crev;
    int all; /* Maintenance/Hash (every record) rather than HashKV */
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id;
} hash_job_t;

static void *hash_main(void *arg)
{
    hash_job_t *h = arg;
    h->rc = cairn_mvcc_hashkv_run(h->job, &h->hash);
    atomic_store(&h->done, 1);
    return NULL;
}

static void hash_answer(stored_t *s, hash_job_t *h)
{
    if (h->rc) {
        stored_reply_result(s, h->ident, h->ident_len, h->req_id, CAIRN_GRPC_INTERNAL, cairn_strerror(h->rc), NULL, 0);
        return;
    }
    Etcdserverpb__ResponseHeader hd = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    hdr_fill(s, &hd, cairn_mvcc_hashkv_current_revision(h->job));
    if (h->all) {
        Etcdserverpb__HashResponse hr = ETCDSERVERPB__HASH_RESPONSE__INIT;
        hr.header = &hd;
        hr.hash = h->hash;
        reply_msg(s, h->ident, h->ident_len, h->req_id, &hr.base);
        return;
    }
    Etcdserverpb__HashKVResponse r = ETCDSERVERPB__HASH_KVRESPONSE__INIT;
    r.header = &hd;
    r.hash = h->hash;
    r.compact_revision = h->crev;
    reply_msg(s, h->ident, h->ident_len, h->req_id, &r.base);
}

static int job_begin(stored_t *s, hash_job_t *h)
{
    return h->all ? cairn_mvcc_hash_all_begin(s->mvcc, &h->job)
                  : cairn_mvcc_hashkv_begin(s->mvcc, h->want, &h->crev, &h->job);
}

/* Starts the waiting jobs while fewer than HASH_THREADS run; a job whose snapshot cannot be
 * taken is answered with the error. */
static void hash_launch(stored_t *s)
{
    int running = 0;
    for (hash_job_t *h = s->hash_jobs; h; h = h->next)
        running += h->running;
    for (hash_job_t *h = s->hash_jobs; h && running < HASH_THREADS; h = h->next) {
        if (h->running || atomic_load(&h->done))
            continue;
        int rc = job_begin(s, h);
        if (rc == 0 && pthread_create(&h->thread, NULL, hash_main, h) == 0) {
            h->running = 1;
            running++;
            continue;
        }
        if (rc == 0) /* no thread: hash here */
            hash_main(h);
        else {
            h->rc = rc;
            atomic_store(&h->done, 1);
        }
    }
}

static void hashkv_start(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, int64_t want,
                         int all)
{
    /* a revision that cannot be hashed is answered at once, before any thread */
    int64_t crev = cairn_mvcc_compact_revision(s->mvcc);
    if (!all && ((want > 0 && want <= crev) || want > cairn_mvcc_revision(s->mvcc))) {
        stored_reply_error(s, ident, ident_len, req_id,
                           want > 0 && want <= crev ? CAIRN_ETCD_COMPACTED : CAIRN_ETCD_FUTURE_REV);
        return;
    }
    hash_job_t *h = calloc(1, sizeof *h);
    if (!h || ident_len > sizeof h->ident) {
        free(h);
        stored_reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    memcpy(h->ident, ident, ident_len);
    h->ident_len = ident_len;
    h->req_id = req_id;
    h->want = want;
    h->all = all;
    hash_job_t **tail = &s->hash_jobs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = h;
    hash_launch(s);
}

/* Answers the finished jobs (block: waits for every one, starting the waiting ones here). */
static void hash_reap(stored_t *s, int block)
{
    for (hash_job_t **pp = &s->hash_jobs; *pp;) {
        hash_job_t *h = *pp;
        if (block && !h->running && !atomic_load(&h->done)) {
            /* waiting for a thread: hash here, the store is about to change or close */
            h->rc = job_begin(s, h);
            if (h->rc == 0)
                h->rc = cairn_mvcc_hashkv_run(h->job, &h->hash);
            atomic_store(&h->done, 1);
        }
        if (!atomic_load(&h->done) && !block) {
            pp = &h->next;
            continue;
        }
        if (h->running)
            pthread_join(h->thread, NULL);
        if (h->rc == CAIRN_ECOMPACTED || h->rc == CAIRN_EFUTURE_REV)
            stored_reply_error(s, h->ident, h->ident_len, h->req_id,
                               h->rc == CAIRN_ECOMPACTED ? CAIRN_ETCD_COMPACTED : CAIRN_ETCD_FUTURE_REV);
        else
            hash_answer(s, h);
        cairn_mvcc_hashkv_end(&h->job);
        *pp = h->next;
        free(h);
    }
    if (!block)
        hash_launch(s);
}

void stored_maint(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    switch (m->op) {
    case CAIRN_MAINT_HASH: /* a whole-store walk too: on a hash thread, like HashKV */
        hashkv_start(s, ident, ident_len, m->req_id, 0, 1);
        return;
    case CAIRN_MAINT_HASHKV: {
        Etcdserverpb__HashKVRequest *q =
            etcdserverpb__hash_kvrequest__unpack(NULL, m->body_len, m->body ? m->body : (const uint8_t *)"");
        if (!q) {
            stored_reply_result(s, ident, ident_len, m->req_id, CAIRN_GRPC_INVALID_ARGUMENT,
                                "cairn: malformed HashKVRequest", NULL, 0);
            return;
        }
        int64_t want = q->revision;
        etcdserverpb__hash_kvrequest__free_unpacked(q, NULL);
        hashkv_start(s, ident, ident_len, m->req_id, want, 0);
        return;
    }
    case CAIRN_MAINT_DEFRAG:
        defrag_start(s, ident, ident_len, m->req_id);
        return;
    case CAIRN_MAINT_SNAPSHOT:
    case CAIRN_MAINT_SNAPSHOT_READ:
    case CAIRN_MAINT_SNAPSHOT_CLOSE:
        stored_snapstream_request(s, ident, ident_len, m);
        return;
    case CAIRN_MAINT_ALARMS: {
        Etcdserverpb__AlarmRequest q = ETCDSERVERPB__ALARM_REQUEST__INIT; /* GET, NONE: all */
        uint8_t qb[16];
        size_t qn = etcdserverpb__alarm_request__pack(&q, qb);
        cairn_apply_err_t err;
        uint8_t *resp = NULL;
        size_t resp_len = 0;
        cairn_hdr_ctx_t hc = stored_hdr_ctx(s);
        int rc = cairn_apply_read(s->mvcc, CAIRN_REQ_ALARM, qb, qn, &hc, &resp, &resp_len, &err);
        if (rc < 0)
            stored_reply_result(s, ident, ident_len, m->req_id, CAIRN_GRPC_INTERNAL, cairn_strerror(rc), NULL, 0);
        else
            stored_reply_result(s, ident, ident_len, m->req_id, err.grpc_code, err.message, resp, resp_len);
        free(resp);
        return;
    }
    default:
        stored_reply_result(s, ident, ident_len, m->req_id, CAIRN_GRPC_UNIMPLEMENTED, "cairn: unknown maintenance op",
                            NULL, 0);
    }
}

/* ---- quota ---------------------------------------------------------------------------- */

typedef struct {
    uint64_t self;
    int found;
} self_alarm_t;

static int find_self_nospace(void *arg, uint64_t member, uint64_t type)
{
    self_alarm_t *a = arg;
    if (member == a->self && type == ETCDSERVERPB__ALARM_TYPE__NOSPACE) {
        a->found = 1;
        return 1;
    }
    return 0;
}

int stored_propose(stored_t *s, int kind, const uint8_t *body, size_t len)
{
    /* the origin names no gateway: the result goes to no one */
    char origin[48];
    int on = snprintf(origin, sizeof origin, "stored:%016llx", (unsigned long long)cairn_config_member_id(s->cfg));
    cairn_ipc_req_t req = {.origin = (const uint8_t *)origin, .origin_len = (size_t)on, .req_id = 0,
                           .kind = (uint64_t)kind, .body = body, .body_len = len};
    uint8_t *env = NULL;
    size_t env_len = 0;
    int rc = cairn_ipc_req_encode(&req, &env, &env_len);
    if (rc)
        return rc;
    cairn_ipc_msg_t p = {.type = CAIRN_IPC_PROPOSE, .req_id = 0, .body = env, .body_len = env_len};
    stored_reply(s, (const uint8_t *)"raftd", 5, &p);
    free(env);
    return 0;
}

#define QUOTA_CHECK_MS 250
#define QUOTA_REPROPOSE_MS 2000

void stored_quota_check(stored_t *s, int64_t now)
{
    int64_t quota = s->cfg->quota_bytes;
    if (quota <= 0 || quota == INT64_MAX || s->replaying || now < s->quota.next_check)
        return;
    s->quota.next_check = now + QUOTA_CHECK_MS;
    if (!s->leader || now < s->quota.next_propose)
        return;
    int64_t size = cairn_mvcc_db_size(s->mvcc);
    if (size <= quota)
        return;
    uint64_t self = cairn_config_member_id(s->cfg);
    const cairn_member_t *me = cairn_members_find(&s->members, self);
    if (me && me->learner)
        return;
    if (cairn_mvcc_alarms(s->mvcc, CAIRN_MVCC_COMMITTED) & (1u << ETCDSERVERPB__ALARM_TYPE__NOSPACE)) {
        self_alarm_t a = {self, 0};
        cairn_mvcc_alarm_foreach(s->mvcc, CAIRN_MVCC_COMMITTED, find_self_nospace, &a);
        if (a.found)
            return;
    }
    Etcdserverpb__AlarmRequest q = ETCDSERVERPB__ALARM_REQUEST__INIT;
    q.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    q.memberid = self;
    q.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
    uint8_t qb[32];
    size_t qn = etcdserverpb__alarm_request__pack(&q, qb);
    if (stored_propose(s, CAIRN_REQ_ALARM, qb, qn) != 0)
        return;
    s->quota.next_propose = now + QUOTA_REPROPOSE_MS;
    cairn_warn("database space exceeded; raising the NOSPACE alarm", "db_size=%lld quota=%lld", (long long)size,
               (long long)quota);
}
