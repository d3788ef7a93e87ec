/* corrupt.c - etcd 3.4's corruption checks (etcdserver/corrupt.go) in raftd.
 *
 * Two checks compare the members' HashKV (a hash of the MVCC history up to a revision,
 * services/stored/mvcc_compact.c). Members that applied the same log hold the same history,
 * so two hashes taken at the same revision with the same compact revision must be equal; when
 * they differ, one member's store no longer holds what the log says (a disk, a bug, an edit
 * behind the store's back).
 *
 *   --experimental-corrupt-check-time T (etcd's monitorKVHash/checkHashKV): every T the
 *   leader hashes its store at its current revision R (h, crev), asks every other member for
 *   its hash at R, waits until its own stored has applied the commit index it has then (etcd's
 *   linearizableReadNotify: no follower can have applied past it, so a follower's revision
 *   above the leader's really is wrong), then hashes its own store again (h2, rev2, crev2). A
 *   member whose answer has the same compact revision and another hash, or a revision or
 *   compact revision above the leader's, raises an AlarmRequest ACTIVATE CORRUPT proposed
 *   through the log (one per pass, as etcd); so does h2 != h at the same revision (the leader
 *   itself). The alarm carries memberID 0, as etcd 3.4.23 does (etcd-io/etcd#14828: a pair of
 *   hashes that differ does not say which side is wrong, so `alarm list` shows
 *   "alarm:CORRUPT"); the log names the member whose answer differed. Once
 *   applied, every member refuses writes with "etcdserver: corrupt cluster" (stored's apply.c,
 *   applierV3Corrupt). A member that is behind (future revision) or compacted past R answers
 *   so and is skipped; one that does not answer in time is skipped with a warning. A pass
 *   waits for a member that is down until its deadline, so one that comes back within it
 *   answers at the pass's R: an alarm can then follow an operator's disarm by a few seconds,
 *   as in etcd, where checkHashKV also blocks on its peers.
 *
 *   --experimental-initial-corrupt-check (etcd's CheckInitialHashKV): at start, once raftd has
 *   loaded its state from stored and before the raft core runs (so before this member takes
 *   part in any write), it hashes its own store at its revision and asks the peers for theirs;
 *   a hash that differs at the same compact revision ends raftd with etcd's "found data
 *   inconsistency with peers" and exit status 1. Peers that do not answer in time are skipped
 *   with a warning, as etcd does. A member with no data yet (an empty log) is not checked,
 *   like etcd's newly started member.
 *
 * Cairn's shape: raftd owns the peer links, stored owns the store. The checking raftd asks its
 * own stored (MAINT op HASHKV, answered with RESULT), and sends PEER_HASH_REQ to every other
 * member's raftd, which asks its own stored the same way and relays the answer (PEER_HASH_RESP,
 * carrying the packed HashKVResponse: member id and current revision in its header). Nothing
 * here waits: each step is a message sent and a state kept, advanced when the answer arrives or
 * by raftd_corrupt_tick when a deadline passes (etcd's request timeout: 5 s + 2 x election
 * timeout). A request to a peer is sent again every CC_RESEND_MS until it answers (a peer
 * connection just opened drops what was queued before it was up; an answer to a request sent
 * twice is taken once).
 *
 * Test-only fault switch (CAIRN_TEST_FAULTS=1, like raftd's fault-isolate): while the file
 * <run-dir>/fault-corrupt-put exists and holds a key, the next Put of that key that this
 * member's raftd hands to its own stored (APPEND) carries the value with "-corrupt" appended,
 * and the file is removed. Only this member's store (and WAL) gets the other value: the other
 * members and this member's raft log keep the right one, which is exactly a store that no
 * longer matches the log. tests/integration/test_corrupt_check.sh uses it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_kvcheck.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "raftd.h"
#include "rpc.pb-c.h"

#define CC_RESEND_MS 500
#define CC_RELAY_TTL_MS 30000 /* a peer's request is forgotten (answered or not) after this */
#define CC_RELAY_MAX 1024     /* at most this many peers' requests in flight to our stored */
#define CC_PEERS_MAX 64

enum { PS_WAIT = 0, PS_OK, PS_ERR };
enum { PH_IDLE = 0, PH_SELF, PH_PEERS, PH_APPLY, PH_SELF2 };

typedef struct {
    uint64_t id;
    int state;
    uint32_t hash;
    int64_t rev, crev;
    int64_t code;
    char err[160];
} peer_hash_t;

/* a peer's request that our stored is answering, or answered: kept a while with the answer, so
 * that the same request sent again (the answer was lost, or crossed it) is answered from here,
 * not with another hash of the whole store */
typedef struct {
    uint64_t from, fwd_id;
    int64_t at;
    int done;
    int64_t code;
    size_t msg_len, body_len;
    uint8_t msg[128], body[96]; /* a HashKVResponse is a few dozen bytes */
} relay_t;

static void relay_answer(raftd_t *r, const relay_t *rl)
{
    cairn_ipc_msg_t a = {.type = CAIRN_IPC_PEER_HASH_RESP, .fwd_id = rl->fwd_id, .code = rl->code,
                         .message = rl->msg, .message_len = rl->msg_len, .body = rl->body,
                         .body_len = rl->body_len};
    raftd_send_peer_msg(r, rl->from, &a);
}

struct raftd_corrupt {
    cairn_u64map_t *relay; /* our stored's req_id -> relay_t */
    uint64_t next_req;     /* req_ids of the MAINTs raftd sends its stored */
    uint64_t next_round;
    int64_t next_check;    /* the next periodic pass (leader only) */
    int64_t next_sweep;
    /* the pass under way (periodic or the start check) */
    struct {
        int phase, initial;
        uint64_t round;    /* fwd_id of this pass's peer requests */
        uint64_t self_req; /* the MAINT (or STATUS) to our stored awaiting its answer */
        uint64_t commit;   /* PH_APPLY: our stored must have applied this before the second hash */
        int64_t deadline, next_send;
        uint32_t h;
        int64_t rev, crev;
        peer_hash_t peers[CC_PEERS_MAX];
        size_t n;
    } c;
    char fault_path[4200];
};

static int64_t req_timeout_ms(const raftd_t *r)
{
    /* etcd's Cfg.ReqTimeout(): 5 s plus twice the election timeout */
    return 5000 + 2 * r->cfg->election_ms;
}

int raftd_corrupt_new(raftd_t *r)
{
    raftd_corrupt_t *cc = calloc(1, sizeof *cc);
    if (!cc || !(cc->relay = cairn_u64map_new())) {
        free(cc);
        return CAIRN_ENOMEM;
    }
    snprintf(cc->fault_path, sizeof cc->fault_path, "%s/fault-corrupt-put", r->cfg->run_dir);
    /* pass ids differ from those of an earlier instance of this raftd: a peer remembers the
     * requests it answered a while (relay_t) and would take a new pass's for a repeat */
    cc->next_round = cairn_random_u64() >> 2;
    r->corrupt = cc;
    if (r->cfg->corrupt_check_ms > 0) {
        cairn_info("enabled corruption checking", "local-member-id=%016llx interval=%lldms",
                   (unsigned long long)cairn_config_member_id(r->cfg), (long long)r->cfg->corrupt_check_ms);
        cc->next_check = cairn_now_ms() + r->cfg->corrupt_check_ms;
    }
    return 0;
}

void raftd_corrupt_destroy(raftd_t *r)
{
    raftd_corrupt_t *cc = r->corrupt;
    if (!cc)
        return;
    size_t pos = 0;
    uint64_t key;
    void *val;
    while (cairn_u64map_next(cc->relay, &pos, &key, &val))
        free(val);
    cairn_u64map_destroy(&cc->relay);
    free(cc);
    r->corrupt = NULL;
}

/* ------------------------------------------------------------------ asking stored */

static uint64_t ask_stored(raftd_t *r, int64_t rev)
{
    raftd_corrupt_t *cc = r->corrupt;
    Etcdserverpb__HashKVRequest q = ETCDSERVERPB__HASH_KVREQUEST__INIT;
    q.revision = rev;
    uint8_t buf[16];
    size_t n = etcdserverpb__hash_kvrequest__pack(&q, buf);
    uint64_t id = ++cc->next_req;
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_MAINT, .req_id = id, .op = CAIRN_MAINT_HASHKV, .body = buf, .body_len = n};
    raftd_send_stored(r, &m);
    return id;
}

/* A HashKV answer (RESULT from stored, or the body of a PEER_HASH_RESP): 0 and the values, or
 * a negative code with why in err. */
static int parse_answer(int64_t code, const uint8_t *msg, size_t msg_len, const uint8_t *body, size_t body_len,
                        uint32_t *hash, int64_t *rev, int64_t *crev, char *err, size_t errlen)
{
    if (code != 0) {
        snprintf(err, errlen, "%.*s", (int)(msg_len < 120 ? msg_len : 120), msg ? (const char *)msg : "");
        return CAIRN_EIO;
    }
    Etcdserverpb__HashKVResponse *a =
        etcdserverpb__hash_kvresponse__unpack(NULL, body_len, body ? body : (const uint8_t *)"");
    if (!a) {
        snprintf(err, errlen, "malformed HashKVResponse");
        return CAIRN_EPROTO;
    }
    *hash = a->hash;
    *crev = a->compact_revision;
    *rev = a->header ? a->header->revision : 0;
    etcdserverpb__hash_kvresponse__free_unpacked(a, NULL);
    return 0;
}

/* ------------------------------------------------------------------ the checking member */

static void send_requests(raftd_t *r, int64_t now)
{
    raftd_corrupt_t *cc = r->corrupt;
    for (size_t i = 0; i < cc->c.n; i++) {
        if (cc->c.peers[i].state != PS_WAIT)
            continue;
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_HASH_REQ, .fwd_id = cc->c.round, .revision = cc->c.rev};
        raftd_send_peer_msg(r, cc->c.peers[i].id, &m);
    }
    cc->c.next_send = now + CC_RESEND_MS;
}

static void end_pass(raftd_t *r)
{
    raftd_corrupt_t *cc = r->corrupt;
    cc->c.phase = PH_IDLE;
    cc->c.n = 0;
    if (r->cfg->corrupt_check_ms > 0)
        cc->next_check = cairn_now_ms() + r->cfg->corrupt_check_ms; /* etcd waits T after a pass */
}

static void begin_pass(raftd_t *r, int initial, int64_t now)
{
    raftd_corrupt_t *cc = r->corrupt;
    memset(&cc->c, 0, sizeof cc->c);
    cc->c.initial = initial;
    cc->c.phase = PH_SELF;
    cc->c.deadline = now + req_timeout_ms(r);
    cc->c.self_req = ask_stored(r, 0);
}

/* The start check is over and found nothing wrong (or could not compare): the core starts. */
static void initial_passed(raftd_t *r)
{
    end_pass(r);
    raftd_start_loaded(r);
}

static void initial_fail(raftd_t *r, const char *what)
{
    uint64_t self = cairn_config_member_id(r->cfg);
    /* etcd: "<id> found data inconsistency with peers" (or "failed to fetch hash"), and the
     * member does not start */
    cairn_error("initial corruption check failed; not starting", "local-member-id=%016llx error=\"%016llx %s\"",
                (unsigned long long)self, (unsigned long long)self, what);
    end_pass(r);
    r->fatal = CAIRN_ECORRUPT;
}

static void log_peer_failure(raftd_t *r, const peer_hash_t *p)
{
    raftd_corrupt_t *cc = r->corrupt;
    uint64_t self = cairn_config_member_id(r->cfg);
    const char *future = cairn_etcd_err_text(CAIRN_ETCD_FUTURE_REV), *compacted = cairn_etcd_err_text(CAIRN_ETCD_COMPACTED);
    const char *err = p->state == PS_WAIT ? "no answer in time (the member is down or slow)" : p->err;
    if (cc->c.initial && p->state == PS_ERR && strcmp(p->err, future) == 0)
        cairn_warn("cannot fetch hash from slow remote peer",
                   "local-member-id=%016llx local-member-revision=%lld local-member-compact-revision=%lld "
                   "local-member-hash=%u remote-peer-id=%016llx error=\"%s\"",
                   (unsigned long long)self, (long long)cc->c.rev, (long long)cc->c.crev, cc->c.h,
                   (unsigned long long)p->id, err);
    else if (cc->c.initial && p->state == PS_ERR && strcmp(p->err, compacted) == 0)
        cairn_warn("cannot fetch hash from remote peer; local member is behind",
                   "local-member-id=%016llx local-member-revision=%lld local-member-compact-revision=%lld "
                   "local-member-hash=%u remote-peer-id=%016llx error=\"%s\"",
                   (unsigned long long)self, (long long)cc->c.rev, (long long)cc->c.crev, cc->c.h,
                   (unsigned long long)p->id, err);
    else
        cairn_warn("failed hash kv request", "local-member-id=%016llx requested-revision=%lld remote-peer-id=%016llx "
                   "error=\"%s\"", (unsigned long long)self, (long long)cc->c.rev, (unsigned long long)p->id, err);
}

/* etcd's CheckInitialHashKV: only a different hash at the same compact revision counts. */
static void evaluate_initial(raftd_t *r)
{
    raftd_corrupt_t *cc = r->corrupt;
    uint64_t self = cairn_config_member_id(r->cfg);
    int mismatch = 0;
    for (size_t i = 0; i < cc->c.n; i++) {
        const peer_hash_t *p = &cc->c.peers[i];
        if (p->state != PS_OK) {
            log_peer_failure(r, p);
            continue;
        }
        if (p->hash == cc->c.h)
            continue;
        int same_crev = p->crev == cc->c.crev;
        cairn_warn(same_crev ? "found different hash values from remote peer"
                             : "found different compact revision values from remote peer",
                   "local-member-id=%016llx local-member-revision=%lld local-member-compact-revision=%lld "
                   "local-member-hash=%u remote-peer-id=%016llx remote-peer-revision=%lld "
                   "remote-peer-compact-revision=%lld remote-peer-hash=%u",
                   (unsigned long long)self, (long long)cc->c.rev, (long long)cc->c.crev, cc->c.h,
                   (unsigned long long)p->id, (long long)p->rev, (long long)p->crev, p->hash);
        mismatch += same_crev;
    }
    if (mismatch) {
        initial_fail(r, "found data inconsistency with peers");
        return;
    }
    cairn_info("initial corruption checking passed; no corruption", "local-member-id=%016llx",
               (unsigned long long)self);
    initial_passed(r);
}

/* member: the member whose answer differed (for the log); the alarm itself names member 0 */
static void propose_corrupt(raftd_t *r, uint64_t member)
{
    if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER) {
        cairn_warn("not the leader any more; the CORRUPT alarm is left to the next leader's check", "member=%016llx",
                   (unsigned long long)member);
        return;
    }
    Etcdserverpb__AlarmRequest q = ETCDSERVERPB__ALARM_REQUEST__INIT;
    q.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    q.memberid = 0; /* as etcd 3.4.23's mismatch(): see the comment atop */
    q.alarm = ETCDSERVERPB__ALARM_TYPE__CORRUPT;
    uint8_t body[32];
    size_t n = etcdserverpb__alarm_request__pack(&q, body);
    /* no origin: stored sends the result to no one (as lessor.c's revocations) */
    cairn_ipc_req_t req = {NULL, 0, 0, CAIRN_REQ_ALARM, body, n};
    uint8_t *data;
    size_t len;
    if (cairn_ipc_req_encode(&req, &data, &len) != 0)
        return;
    int rc = cairn_raft_propose(r->raft, data, len, NULL);
    free(data);
    if (rc)
        cairn_warn("cannot propose the CORRUPT alarm", "member=%016llx err=\"%s\"", (unsigned long long)member,
                   cairn_strerror(rc));
    else
        cairn_warn("proposed the CORRUPT alarm", "memberID=0 mismatched-member=%016llx", (unsigned long long)member);
}

/* etcd's checkHashKV, once the leader has (h, rev, crev), the peers' answers and (h2, rev2, crev2). */
static void evaluate_periodic(raftd_t *r, uint32_t h2, int64_t rev2, int64_t crev2)
{
    raftd_corrupt_t *cc = r->corrupt;
    uint64_t alarmed = 0;
    int any = 0;
    if (h2 != cc->c.h && rev2 == cc->c.rev && crev2 == cc->c.crev) {
        cairn_warn("found hash mismatch", "revision-1=%lld compact-revision-1=%lld hash-1=%u revision-2=%lld "
                   "compact-revision-2=%lld hash-2=%u", (long long)cc->c.rev, (long long)cc->c.crev, cc->c.h,
                   (long long)rev2, (long long)crev2, h2);
        alarmed = cairn_config_member_id(r->cfg);
        any = 1;
    }
    int checked = 0;
    for (size_t i = 0; i < cc->c.n; i++) {
        const peer_hash_t *p = &cc->c.peers[i];
        if (p->state != PS_OK) {
            log_peer_failure(r, p);
            continue;
        }
        checked++;
        int bad = 0;
        if (p->rev > rev2) {
            cairn_warn("revision from follower must be less than or equal to leader's",
                       "leader-revision=%lld follower-revision=%lld follower-peer-id=%016llx", (long long)rev2,
                       (long long)p->rev, (unsigned long long)p->id);
            bad = 1;
        }
        if (p->crev > crev2) {
            cairn_warn("compact revision from follower must be less than or equal to leader's",
                       "leader-compact-revision=%lld follower-compact-revision=%lld follower-peer-id=%016llx",
                       (long long)crev2, (long long)p->crev, (unsigned long long)p->id);
            bad = 1;
        }
        if (p->crev == cc->c.crev && p->hash != cc->c.h) {
            cairn_warn("same compact revision then hashes must match",
                       "leader-compact-revision=%lld leader-hash=%u follower-compact-revision=%lld follower-hash=%u "
                       "follower-peer-id=%016llx", (long long)crev2, cc->c.h, (long long)p->crev, p->hash,
                       (unsigned long long)p->id);
            bad = 1;
        }
        if (bad && !any) { /* etcd raises one alarm per pass: the first mismatch found */
            alarmed = p->id;
            any = 1;
        }
    }
    cairn_info("finished peer corruption check", "number-of-peers-checked=%d", checked);
    if (any)
        propose_corrupt(r, alarmed);
}

static void ask_status(raftd_t *r)
{
    raftd_corrupt_t *cc = r->corrupt;
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_STATUS, .req_id = ++cc->next_req};
    cc->c.self_req = m.req_id;
    cc->c.next_send = cairn_now_ms() + CC_RESEND_MS;
    raftd_send_stored(r, &m);
}

static void peers_done(raftd_t *r)
{
    raftd_corrupt_t *cc = r->corrupt;
    if (cc->c.initial) {
        evaluate_initial(r);
        return;
    }
    if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER) {
        cairn_warn("failed to check hash KV", "error=\"not the leader any more\"");
        end_pass(r);
        return;
    }
    /* etcd's linearizableReadNotify before the second hash: every member's applied index is at
     * most the commit index the leader has now, so once our stored has applied it, a follower
     * that answered with a higher revision than ours is wrong, not just ahead of us */
    cc->c.phase = PH_APPLY;
    cc->c.commit = cairn_raft_commit(r->raft);
    cc->c.deadline = cairn_now_ms() + req_timeout_ms(r);
    ask_status(r);
}

void raftd_corrupt_on_status(raftd_t *r, const cairn_ipc_msg_t *m)
{
    raftd_corrupt_t *cc = r->corrupt;
    if (!cc || cc->c.phase != PH_APPLY || m->req_id != cc->c.self_req)
        return;
    if (m->applied < cc->c.commit) {
        cc->c.self_req = 0; /* asked again by the tick, in a moment */
        cc->c.next_send = cairn_now_ms() + 20;
        return;
    }
    /* etcd hashes again after the peers answered: a leader whose own hash changed at the same
     * revision is itself corrupt */
    cc->c.phase = PH_SELF2;
    cc->c.self_req = ask_stored(r, 0);
}

static void maybe_peers_done(raftd_t *r)
{
    raftd_corrupt_t *cc = r->corrupt;
    for (size_t i = 0; i < cc->c.n; i++)
        if (cc->c.peers[i].state == PS_WAIT)
            return;
    peers_done(r);
}

static void on_self(raftd_t *r, const cairn_ipc_msg_t *m)
{
    raftd_corrupt_t *cc = r->corrupt;
    uint32_t h = 0;
    int64_t rev = 0, crev = 0;
    char err[160];
    int rc = parse_answer(m->code, m->message, m->message_len, m->body, m->body_len, &h, &rev, &crev, err, sizeof err);
    if (rc) {
        if (cc->c.initial) {
            char what[220];
            snprintf(what, sizeof what, "failed to fetch hash (%s)", err);
            initial_fail(r, what);
        } else {
            cairn_warn("failed to check hash KV", "error=\"%s\"", err);
            end_pass(r);
        }
        return;
    }
    if (cc->c.phase == PH_SELF2) {
        evaluate_periodic(r, h, rev, crev);
        end_pass(r);
        return;
    }
    cc->c.h = h;
    cc->c.rev = rev;
    cc->c.crev = crev;
    cc->c.phase = PH_PEERS;
    cc->c.round = ++cc->next_round;
    cc->c.deadline = cairn_now_ms() + req_timeout_ms(r);
    cc->c.n = 0;
    for (size_t i = 0; i < r->n_peers && cc->c.n < CC_PEERS_MAX; i++)
        if (!r->peers[i].removed_at)
            cc->c.peers[cc->c.n++] = (peer_hash_t){.id = r->peers[i].id};
    if (!cc->c.n) {
        peers_done(r);
        return;
    }
    send_requests(r, cairn_now_ms());
}

void raftd_corrupt_peer_resp(raftd_t *r, const cairn_ipc_msg_t *m)
{
    raftd_corrupt_t *cc = r->corrupt;
    if (!cc || cc->c.phase != PH_PEERS || m->fwd_id != cc->c.round)
        return; /* an answer to an earlier pass, or a second answer */
    for (size_t i = 0; i < cc->c.n; i++) {
        peer_hash_t *p = &cc->c.peers[i];
        if (p->id != m->from || p->state != PS_WAIT)
            continue;
        int rc = parse_answer(m->code, m->message, m->message_len, m->body, m->body_len, &p->hash, &p->rev, &p->crev,
                              p->err, sizeof p->err);
        p->code = m->code;
        p->state = rc ? PS_ERR : PS_OK;
        maybe_peers_done(r);
        return;
    }
}

int raftd_corrupt_initial_begin(raftd_t *r)
{
    raftd_corrupt_t *cc = r->corrupt;
    if (!cc || !r->cfg->initial_corrupt_check)
        return 0;
    uint64_t self = cairn_config_member_id(r->cfg);
    if (!r->load.last && !r->load.snap_index) {
        cairn_info("skipping initial corruption check: this member has no data yet", "local-member-id=%016llx",
                   (unsigned long long)self);
        return 0;
    }
    if (!r->cluster_id) {
        cairn_warn("skipping initial corruption check: the cluster ID is not known yet", "local-member-id=%016llx",
                   (unsigned long long)self);
        return 0;
    }
    cairn_info("starting initial corruption check", "local-member-id=%016llx timeout=%lldms",
               (unsigned long long)self, (long long)req_timeout_ms(r));
    begin_pass(r, 1, cairn_now_ms());
    return 1;
}

/* ------------------------------------------------------------------ answering a peer */

void raftd_corrupt_peer_req(raftd_t *r, const cairn_ipc_msg_t *m)
{
    raftd_corrupt_t *cc = r->corrupt;
    if (!cc || !raftd_find_peer(r, m->from))
        return;
    /* the asker sends again until it has an answer: one hash per request, not per copy (a
     * large store takes a while to hash, longer than the asker waits to send again) */
    size_t pos = 0;
    uint64_t key;
    void *val;
    while (cairn_u64map_next(cc->relay, &pos, &key, &val)) {
        const relay_t *o = val;
        if (o->from == m->from && o->fwd_id == m->fwd_id) {
            if (o->done)
                relay_answer(r, o);
            return; /* else the answer comes when our stored gives it */
        }
    }
    if (cairn_u64map_size(cc->relay) >= CC_RELAY_MAX) {
        cairn_ipc_msg_t a = {.type = CAIRN_IPC_PEER_HASH_RESP, .fwd_id = m->fwd_id,
                             .code = cairn_etcd_err_code(CAIRN_ETCD_TOO_MANY_REQUESTS)};
        cairn_ipc_set_message(&a, cairn_etcd_err_text(CAIRN_ETCD_TOO_MANY_REQUESTS));
        raftd_send_peer_msg(r, m->from, &a);
        return;
    }
    relay_t *rl = calloc(1, sizeof *rl);
    if (!rl)
        return;
    rl->from = m->from;
    rl->fwd_id = m->fwd_id;
    rl->at = cairn_now_ms();
    uint64_t id = ask_stored(r, m->revision);
    if (cairn_u64map_put(cc->relay, id, rl) != 0)
        free(rl);
}

void raftd_corrupt_on_result(raftd_t *r, const cairn_ipc_msg_t *m)
{
    raftd_corrupt_t *cc = r->corrupt;
    if (!cc)
        return;
    relay_t *rl = cairn_u64map_get(cc->relay, m->req_id);
    if (rl && !rl->done) {
        /* stored's answer as it is: code, message and the packed HashKVResponse */
        rl->code = m->code;
        rl->msg_len = m->message_len < sizeof rl->msg ? m->message_len : sizeof rl->msg;
        if (rl->msg_len)
            memcpy(rl->msg, m->message, rl->msg_len);
        if (m->body_len <= sizeof rl->body) {
            rl->body_len = m->body_len;
            if (m->body_len)
                memcpy(rl->body, m->body, m->body_len);
        } else {
            rl->code = CAIRN_GRPC_INTERNAL; /* cannot happen: HashKVResponse is small */
            rl->msg_len = (size_t)snprintf((char *)rl->msg, sizeof rl->msg, "cairn: HashKVResponse too large");
        }
        rl->done = 1; /* forgotten by the sweep */
        relay_answer(r, rl);
        return;
    }
    if ((cc->c.phase == PH_SELF || cc->c.phase == PH_SELF2) && m->req_id == cc->c.self_req)
        on_self(r, m);
}

/* ------------------------------------------------------------------ the clock */

void raftd_corrupt_tick(raftd_t *r, int64_t now)
{
    raftd_corrupt_t *cc = r->corrupt;
    if (!cc)
        return;
    if (now >= cc->next_sweep) {
        cc->next_sweep = now + 1000;
        size_t pos = 0;
        uint64_t key;
        void *val;
        uint64_t stale[64];
        size_t ns = 0;
        while (ns < 64 && cairn_u64map_next(cc->relay, &pos, &key, &val))
            if (now - ((relay_t *)val)->at > CC_RELAY_TTL_MS)
                stale[ns++] = key;
        for (size_t i = 0; i < ns; i++)
            free(cairn_u64map_take(cc->relay, stale[i]));
    }
    switch (cc->c.phase) {
    case PH_SELF:
    case PH_SELF2:
        if (now >= cc->c.deadline) {
            if (cc->c.initial) {
                initial_fail(r, "failed to fetch hash (stored did not answer)");
            } else {
                cairn_warn("failed to check hash KV", "error=\"stored did not answer in time\"");
                end_pass(r);
            }
        }
        return;
    case PH_APPLY:
        if (now >= cc->c.deadline) {
            cairn_warn("failed to check hash KV", "error=\"the leader's store did not apply its commit index in time\"");
            end_pass(r);
        } else if (now >= cc->c.next_send) {
            ask_status(r); /* not applied yet, or the answer was lost */
        }
        return;
    case PH_PEERS:
        if (now >= cc->c.deadline)
            peers_done(r); /* the ones still waiting are logged and skipped */
        else if (now >= cc->c.next_send)
            send_requests(r, now);
        return;
    default:
        break;
    }
    if (r->cfg->corrupt_check_ms <= 0 || now < cc->next_check)
        return;
    cc->next_check = now + r->cfg->corrupt_check_ms;
    /* etcd: every T, on the leader only */
    if (r->raft && cairn_raft_role(r->raft) == CAIRN_RAFT_LEADER && !r->removed_logged)
        begin_pass(r, 0, now);
}

/* ------------------------------------------------------------------ test fault switch */

int raftd_corrupt_fault(raftd_t *r, const cairn_entry_t *ents, size_t n, cairn_entry_t **out, uint8_t **owned)
{
    raftd_corrupt_t *cc = r->corrupt;
    *out = NULL;
    *owned = NULL;
    if (!cc || !r->faults_enabled || access(cc->fault_path, F_OK) != 0)
        return 0;
    char key[256];
    FILE *f = fopen(cc->fault_path, "r");
    if (!f)
        return 0;
    size_t kl = fread(key, 1, sizeof key - 1, f);
    fclose(f);
    while (kl && (key[kl - 1] == '\n' || key[kl - 1] == '\r' || key[kl - 1] == ' '))
        kl--;
    if (!kl)
        return 0;
    for (size_t i = 0; i < n; i++) {
        cairn_ipc_req_t req;
        if (ents[i].type != CAIRN_ENTRY_NORMAL || !ents[i].len ||
            cairn_ipc_req_decode(ents[i].data, ents[i].len, &req) != 0 || req.kind != CAIRN_REQ_PUT)
            continue;
        Etcdserverpb__PutRequest *p = etcdserverpb__put_request__unpack(NULL, req.body_len, req.body);
        if (!p)
            continue;
        if (p->key.len != kl || memcmp(p->key.data, key, kl) != 0) {
            etcdserverpb__put_request__free_unpacked(p, NULL);
            continue;
        }
        /* the value with "-corrupt" appended, in a copy of the envelope */
        size_t vl = p->value.len + 8;
        uint8_t *v = malloc(vl);
        uint8_t *body = NULL, *data = NULL;
        size_t data_len = 0;
        cairn_entry_t *copy = malloc(n * sizeof *copy);
        int ok = 0;
        if (v && copy) {
            if (p->value.len)
                memcpy(v, p->value.data, p->value.len);
            memcpy(v + p->value.len, "-corrupt", 8);
            uint8_t *old = p->value.data;
            size_t old_len = p->value.len;
            p->value.data = v;
            p->value.len = vl;
            size_t bl = etcdserverpb__put_request__get_packed_size(p);
            if ((body = malloc(bl ? bl : 1))) {
                etcdserverpb__put_request__pack(p, body);
                cairn_ipc_req_t nr = req;
                nr.body = body;
                nr.body_len = bl;
                ok = cairn_ipc_req_encode(&nr, &data, &data_len) == 0;
            }
            p->value.data = old;
            p->value.len = old_len;
        }
        etcdserverpb__put_request__free_unpacked(p, NULL);
        free(v);
        free(body);
        if (!ok) {
            free(copy);
            free(data);
            return 0;
        }
        memcpy(copy, ents, n * sizeof *copy);
        copy[i].data = data;
        copy[i].len = data_len;
        *out = copy;
        *owned = data;
        unlink(cc->fault_path);
        cairn_warn("test fault: this member's stored gets another value for a put",
                   "key=%.*s index=%llu", (int)kl, key, (unsigned long long)ents[i].index);
        return 1;
    }
    return 0;
}
