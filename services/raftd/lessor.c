/* lessor.c - the leases' clock (DESIGN.md "raftd": the durable lease table is replicated state
 * in stored; when a lease expires is decided here, on the leader, and nowhere else).
 *
 * On the leader: a table of every lease (id -> granted TTL, deadline) and a min-heap of
 * deadlines, so 100k leases cost O(log n) per keepalive and nothing per tick but looking at
 * the top. The table is filled when this member becomes leader, by reading stored's lease
 * table page by page (LEASE_LIST), with every deadline set to now + TTL: etcd 3.4's rule, so
 * that no lease expires because of a failover. From then on stored tells us each grant and
 * revoke it applies (LEASE_APPLIED). A lease past its deadline is revoked by a proposal of
 * our own (a LeaseRevokeRequest in the log, like a client's), at most REVOKE_PER_SEC a second
 * (etcd's leaseRevokeRate), proposed again if it is still there after REVOKE_RETRY_MS.
 *
 * A follower keeps no table: keepalives and TTL queries from its gateways go to the leader
 * (PEER_LEASE_QUERY) and the answer comes back (PEER_LEASE_RESP).
 *
 * The heap is lazy: a keepalive pushes a new (deadline, id, gen) and the old one is skipped
 * when it surfaces (its gen is stale). When stale entries outnumber live ones the heap is
 * rebuilt from the table, so it never holds more than about twice the leases.
 */
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_ipc.h"
#include "cairn_kvcheck.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "raftd.h"
#include "rpc.pb-c.h"

#define REVOKE_PER_SEC 1000
#define REVOKE_RETRY_MS 3000
#define FWD_TIMEOUT_MS 10000
#define MAX_WAITING 10000 /* queries held while the new leader reads the table */

typedef struct {
    int64_t ttl;      /* granted, seconds */
    int64_t deadline; /* ms, monotonic */
    uint32_t gen;
    int64_t revoking_at; /* when a revoke was proposed (0: none) */
} lease_t;

typedef struct {
    int64_t deadline;
    int64_t id;
    uint32_t gen;
} hent_t;

/* A query from one of our gateways waiting for an answer: the leader reading its table, or
 * a forward to the leader. */
typedef struct query_s {
    struct query_s *next;
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id, member, fwd_id; /* member != 0: a peer's forward */
    int64_t lease_id;
    int op;
    int64_t at;
} query_t;

struct raftd_lessor {
    int active;       /* this member leads and the table is (being) filled */
    int loaded;       /* the whole table was read */
    uint64_t term;    /* the term it leads in */
    uint64_t list_req;
    int64_t list_sent_at;
    cairn_u64map_t *leases; /* (uint64)id -> lease_t; id 0 is never a lease */
    hent_t *heap;
    size_t n_heap, cap_heap;
    query_t *waiting, **waiting_tail; /* held while loading */
    size_t n_waiting;
    cairn_u64map_t *fwd; /* fwd id -> query_t (a follower's forwards) */
    uint64_t next_fwd;
    double tokens; /* revocations allowed now */
    int64_t tokens_at;
    uint64_t expired, revoked_proposed;
};

/* ------------------------------------------------------------------ heap */

static void heap_swap(hent_t *a, hent_t *b)
{
    hent_t t = *a;
    *a = *b;
    *b = t;
}

static int heap_push(raftd_lessor_t *l, int64_t deadline, int64_t id, uint32_t gen)
{
    if (l->n_heap == l->cap_heap) {
        size_t nc = l->cap_heap ? l->cap_heap * 2 : 1024;
        hent_t *nh = realloc(l->heap, nc * sizeof *nh);
        if (!nh)
            return CAIRN_ENOMEM;
        l->heap = nh;
        l->cap_heap = nc;
    }
    size_t i = l->n_heap++;
    l->heap[i] = (hent_t){deadline, id, gen};
    while (i && l->heap[(i - 1) / 2].deadline > l->heap[i].deadline) {
        heap_swap(&l->heap[(i - 1) / 2], &l->heap[i]);
        i = (i - 1) / 2;
    }
    return 0;
}

static void heap_pop(raftd_lessor_t *l)
{
    l->heap[0] = l->heap[--l->n_heap];
    size_t i = 0;
    for (;;) {
        size_t a = 2 * i + 1, b = a + 1, m = i;
        if (a < l->n_heap && l->heap[a].deadline < l->heap[m].deadline)
            m = a;
        if (b < l->n_heap && l->heap[b].deadline < l->heap[m].deadline)
            m = b;
        if (m == i)
            break;
        heap_swap(&l->heap[i], &l->heap[m]);
        i = m;
    }
}

/* Rebuilt from the table once stale entries dominate. */
static void heap_rebuild(raftd_lessor_t *l)
{
    l->n_heap = 0;
    size_t pos = 0;
    uint64_t k;
    void *v;
    while (cairn_u64map_next(l->leases, &pos, &k, &v)) {
        lease_t *e = v;
        heap_push(l, e->deadline, (int64_t)k, e->gen);
    }
}

/* ------------------------------------------------------------------ table */

static void table_clear(raftd_lessor_t *l)
{
    size_t pos = 0;
    uint64_t k;
    void *v;
    while (cairn_u64map_next(l->leases, &pos, &k, &v))
        free(v);
    cairn_u64map_destroy(&l->leases);
    l->leases = cairn_u64map_new();
    l->n_heap = 0;
}

static void table_put(raftd_lessor_t *l, int64_t id, int64_t ttl, int64_t now)
{
    if (id == 0 || !l->leases)
        return;
    lease_t *e = cairn_u64map_get(l->leases, (uint64_t)id);
    if (!e) {
        if (!(e = calloc(1, sizeof *e)) || cairn_u64map_put(l->leases, (uint64_t)id, e) != 0) {
            free(e);
            return;
        }
    }
    e->ttl = ttl;
    e->deadline = now + ttl * 1000;
    e->gen++;
    e->revoking_at = 0;
    heap_push(l, e->deadline, id, e->gen);
}

static void table_del(raftd_lessor_t *l, int64_t id) { free(cairn_u64map_take(l->leases, (uint64_t)id)); }

static int64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return (int64_t)v;
}

/* ------------------------------------------------------------------ answers */

static void answer_gw(raftd_t *r, const uint8_t *ident, size_t ident_len, uint64_t req_id, int64_t id, int64_t ttl,
                      int64_t granted, cairn_etcd_err_t e)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LEASE_RESP, .req_id = req_id, .lease_id = id, .ttl = ttl,
                         .granted_ttl = granted};
    if (e) {
        m.code = cairn_etcd_err_code(e);
        cairn_ipc_set_message(&m, cairn_etcd_err_text(e));
    }
    raftd_send_gw(r, ident, ident_len, &m);
}

static void answer_query(raftd_t *r, const query_t *q, int64_t ttl, int64_t granted, cairn_etcd_err_t e)
{
    if (q->member) {
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_LEASE_RESP, .fwd_id = q->fwd_id, .lease_id = q->lease_id,
                             .ttl = ttl, .granted_ttl = granted, .code = e ? (int64_t)e : 0};
        raftd_send_peer_msg(r, q->member, &m);
    } else {
        answer_gw(r, q->ident, q->ident_len, q->req_id, q->lease_id, ttl, granted, e);
    }
}

/* The leader's answer from its table. KEEPALIVE renews: the TTL it has again, 0 when the lease
 * is unknown or already expired (etcd answers TTL 0, not an error). TTL: seconds left (-1:
 * unknown), and the granted TTL. */
static void serve(raftd_t *r, const query_t *q, int64_t now)
{
    raftd_lessor_t *l = r->lessor;
    lease_t *e = cairn_u64map_get(l->leases, (uint64_t)q->lease_id);
    if (q->op == CAIRN_LEASE_KEEPALIVE) {
        if (!e || e->deadline <= now) {
            answer_query(r, q, 0, 0, 0);
            return;
        }
        e->deadline = now + e->ttl * 1000;
        e->gen++;
        heap_push(l, e->deadline, q->lease_id, e->gen);
        answer_query(r, q, e->ttl, e->ttl, 0);
        return;
    }
    if (!e) {
        answer_query(r, q, -1, 0, 0);
        return;
    }
    int64_t left = e->deadline > now ? (e->deadline - now) / 1000 : 0;
    answer_query(r, q, left, e->ttl, 0);
}

static void flush_waiting(raftd_t *r, cairn_etcd_err_t e)
{
    raftd_lessor_t *l = r->lessor;
    int64_t now = cairn_now_ms();
    while (l->waiting) {
        query_t *q = l->waiting;
        l->waiting = q->next;
        if (e)
            answer_query(r, q, 0, 0, e);
        else
            serve(r, q, now);
        free(q);
    }
    l->waiting_tail = &l->waiting;
    l->n_waiting = 0;
}

/* ------------------------------------------------------------------ leadership */

static void list_request(raftd_t *r, int64_t after)
{
    raftd_lessor_t *l = r->lessor;
    l->list_req = cairn_random_u64();
    l->list_sent_at = cairn_now_ms();
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LEASE_LIST, .req_id = l->list_req, .lease_id = after};
    raftd_send_stored(r, &m);
}

/* Follows the core's role: becoming leader starts reading the table; losing it drops it. */
static void follow_role(raftd_t *r)
{
    raftd_lessor_t *l = r->lessor;
    int leads = r->raft && cairn_raft_role(r->raft) == CAIRN_RAFT_LEADER;
    uint64_t term = r->raft ? cairn_raft_term(r->raft) : 0;
    if (leads && (!l->active || l->term != term)) {
        table_clear(l);
        l->active = 1;
        l->loaded = 0;
        l->term = term;
        list_request(r, 0);
    } else if (!leads && l->active) {
        table_clear(l);
        l->active = 0;
        l->loaded = 0;
        flush_waiting(r, CAIRN_ETCD_LEADER_CHANGED);
    }
}

void raftd_lessor_on_list(raftd_t *r, const cairn_ipc_msg_t *m)
{
    raftd_lessor_t *l = r->lessor;
    if (!l || !l->active || l->loaded || m->req_id != l->list_req)
        return; /* an answer to an earlier leadership's request */
    int64_t now = cairn_now_ms();
    for (size_t off = 0; off + 16 <= m->body_len; off += 16)
        table_put(l, be64(m->body + off), be64(m->body + off + 8), now);
    if (m->more) {
        list_request(r, m->lease_id);
        return;
    }
    l->loaded = 1;
    cairn_info("leases loaded; their TTLs start now", "leases=%zu term=%llu", cairn_u64map_size(l->leases),
               (unsigned long long)l->term);
    flush_waiting(r, 0);
}

void raftd_lessor_on_applied(raftd_t *r, const cairn_ipc_msg_t *m)
{
    raftd_lessor_t *l = r->lessor;
    if (!l || !l->active)
        return;
    int64_t now = cairn_now_ms();
    for (size_t off = 0; off + 16 <= m->body_len; off += 16) {
        int64_t id = be64(m->body + off), ttl = be64(m->body + off + 8);
        if (ttl > 0)
            table_put(l, id, ttl, now);
        else
            table_del(l, id);
    }
}

/* ------------------------------------------------------------------ queries */

static void hold(raftd_t *r, query_t *q)
{
    raftd_lessor_t *l = r->lessor;
    if (l->n_waiting >= MAX_WAITING) {
        answer_query(r, q, 0, 0, CAIRN_ETCD_TOO_MANY_REQUESTS);
        free(q);
        return;
    }
    q->next = NULL;
    *l->waiting_tail = q;
    l->waiting_tail = &q->next;
    l->n_waiting++;
}

/* A query (ours or a peer's) on the member it reached. */
static void dispatch(raftd_t *r, query_t *q)
{
    raftd_lessor_t *l = r->lessor;
    follow_role(r);
    if (l->active) {
        if (l->loaded) {
            serve(r, q, cairn_now_ms());
            free(q);
        } else {
            hold(r, q);
        }
        return;
    }
    uint64_t leader = r->raft ? cairn_raft_leader(r->raft) : 0;
    if (!leader || q->member) { /* no leader, or a forward that reached a non-leader */
        answer_query(r, q, 0, 0, leader ? CAIRN_ETCD_NOT_LEADER : CAIRN_ETCD_NO_LEADER);
        free(q);
        return;
    }
    uint64_t id = ++l->next_fwd ? l->next_fwd : ++l->next_fwd;
    q->fwd_id = id;
    q->at = cairn_now_ms();
    if (cairn_u64map_put(l->fwd, id, q) != 0) {
        answer_query(r, q, 0, 0, CAIRN_ETCD_TOO_MANY_REQUESTS);
        free(q);
        return;
    }
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_LEASE_QUERY, .fwd_id = id, .lease_id = q->lease_id,
                         .op = (uint64_t)q->op};
    raftd_send_peer_msg(r, leader, &m);
}

void raftd_lessor_query(raftd_t *r, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    query_t *q = calloc(1, sizeof *q);
    if (!q || ident_len > sizeof q->ident) {
        free(q);
        answer_gw(r, ident, ident_len, m->req_id, m->lease_id, 0, 0, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    memcpy(q->ident, ident, ident_len);
    q->ident_len = ident_len;
    q->req_id = m->req_id;
    q->lease_id = m->lease_id;
    q->op = m->op == CAIRN_LEASE_KEEPALIVE ? CAIRN_LEASE_KEEPALIVE : CAIRN_LEASE_TTL;
    dispatch(r, q);
}

void raftd_lessor_peer_query(raftd_t *r, const cairn_ipc_msg_t *m)
{
    query_t *q = calloc(1, sizeof *q);
    if (!q)
        return;
    q->member = m->from;
    q->fwd_id = m->fwd_id;
    q->lease_id = m->lease_id;
    q->op = m->op == CAIRN_LEASE_KEEPALIVE ? CAIRN_LEASE_KEEPALIVE : CAIRN_LEASE_TTL;
    dispatch(r, q);
}

void raftd_lessor_peer_resp(raftd_t *r, const cairn_ipc_msg_t *m)
{
    raftd_lessor_t *l = r->lessor;
    query_t *q = l ? cairn_u64map_take(l->fwd, m->fwd_id) : NULL;
    if (!q)
        return; /* answered already (timed out) */
    cairn_etcd_err_t e = m->code > 0 && m->code < CAIRN_ETCD_ERR_END_ ? (cairn_etcd_err_t)m->code : 0;
    answer_gw(r, q->ident, q->ident_len, q->req_id, q->lease_id, m->ttl, m->granted_ttl, e);
    free(q);
}

/* ------------------------------------------------------------------ expiry */

static void propose_revoke(raftd_t *r, int64_t id)
{
    Etcdserverpb__LeaseRevokeRequest rq = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    rq.id = id;
    uint8_t body[16];
    size_t n = etcdserverpb__lease_revoke_request__pack(&rq, body);
    /* no origin: stored sends the result to no one */
    cairn_ipc_req_t req = {NULL, 0, 0, CAIRN_REQ_LEASE_REVOKE, body, n};
    uint8_t *data;
    size_t len;
    if (cairn_ipc_req_encode(&req, &data, &len) != 0)
        return;
    if (cairn_raft_propose(r->raft, data, len, NULL) == 0)
        r->lessor->revoked_proposed++;
    free(data);
}

void raftd_lessor_tick(raftd_t *r, int64_t now)
{
    raftd_lessor_t *l = r->lessor;
    if (!l)
        return;
    follow_role(r);
    /* forwards the leader never answered */
    if (cairn_u64map_size(l->fwd)) {
        size_t pos = 0;
        uint64_t k, stale[64];
        void *v;
        size_t ns = 0;
        while (ns < 64 && cairn_u64map_next(l->fwd, &pos, &k, &v))
            if (now - ((query_t *)v)->at > FWD_TIMEOUT_MS)
                stale[ns++] = k;
        for (size_t i = 0; i < ns; i++)
            free(cairn_u64map_take(l->fwd, stale[i]));
    }
    if (!l->active)
        return;
    if (!l->loaded) {
        if (now - l->list_sent_at > 2000)
            list_request(r, 0); /* stored did not answer (restarting): start over */
        return;
    }
    l->tokens += (double)(now - l->tokens_at) * REVOKE_PER_SEC / 1000.0;
    if (l->tokens > REVOKE_PER_SEC)
        l->tokens = REVOKE_PER_SEC;
    l->tokens_at = now;
    while (l->n_heap && l->heap[0].deadline <= now && l->tokens >= 1) {
        hent_t h = l->heap[0];
        heap_pop(l);
        lease_t *e = cairn_u64map_get(l->leases, (uint64_t)h.id);
        if (!e || e->gen != h.gen)
            continue; /* renewed or gone since */
        if (e->revoking_at && now - e->revoking_at < REVOKE_RETRY_MS) {
            heap_push(l, e->revoking_at + REVOKE_RETRY_MS, h.id, e->gen);
            continue;
        }
        e->revoking_at = now;
        heap_push(l, now + REVOKE_RETRY_MS, h.id, e->gen); /* again if still here then */
        l->tokens -= 1;
        l->expired++;
        propose_revoke(r, h.id);
    }
    if (l->n_heap > 2 * cairn_u64map_size(l->leases) + 1024)
        heap_rebuild(l);
}

int raftd_lessor_new(raftd_t *r)
{
    raftd_lessor_t *l = calloc(1, sizeof *l);
    if (!l || !(l->leases = cairn_u64map_new()) || !(l->fwd = cairn_u64map_new())) {
        if (l) {
            cairn_u64map_destroy(&l->leases);
            free(l);
        }
        return CAIRN_ENOMEM;
    }
    l->waiting_tail = &l->waiting;
    l->tokens_at = cairn_now_ms();
    r->lessor = l;
    return 0;
}

void raftd_lessor_destroy(raftd_t *r)
{
    raftd_lessor_t *l = r->lessor;
    if (!l)
        return;
    flush_waiting(r, CAIRN_ETCD_STOPPED);
    table_clear(l);
    cairn_u64map_destroy(&l->leases);
    size_t pos = 0;
    uint64_t k;
    void *v;
    while (cairn_u64map_next(l->fwd, &pos, &k, &v))
        free(v);
    cairn_u64map_destroy(&l->fwd);
    free(l->heap);
    free(l);
    r->lessor = NULL;
}

size_t raftd_lessor_count(const raftd_t *r) { return r->lessor && r->lessor->leases ? cairn_u64map_size(r->lessor->leases) : 0; }
