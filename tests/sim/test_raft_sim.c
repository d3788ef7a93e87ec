/* Seeded, deterministic simulation of whole Raft clusters (DESIGN.md "Style").
 *
 * Each seed builds a cluster (3 or 5 members, derived from the seed) of real cores
 * (services/raftd/core) around a simulated shell:
 *   - a simulated clock: time advances in units, each member ticks every 10 units at its own
 *     phase, sometimes skipping a tick (clock drift);
 *   - a simulated network: every message is deep-copied and delivered after a random delay
 *     (so messages reorder), dropped or duplicated at random, and cut by partitions that come
 *     and go;
 *   - a simulated disk per member: a ready's hard state and entries join a write queue and
 *     become durable only when the simulation decides to persist (a prefix of) that queue; only
 *     then are the ready's msgs_after_persist sent and cairn_raft_persisted() called. A crash
 *     loses the queue, the in-memory log and the state machine; a restart rebuilds the core from
 *     the durable snapshot, hard state and log, exactly as raftd does from stored;
 *   - a simulated stored: the state machine is the list of the ids of the applied entries;
 *     from time to time a member snapshots it at its applied index (durably, with the
 *     membership there) and compacts its core (thesis ch. 5). A follower handed a snapshot in a
 *     ready installs the leader's durable snapshot after a transfer delay, once its earlier
 *     writes are durable; the transfer fails if the leader is down, partitioned away or has
 *     moved to a newer snapshot, and a crash during the transfer leaves the old state;
 *   - membership changes in a share of the seeds (thesis ch. 4): the leader adds learners and
 *     voters (new members start with an empty disk and the initial configuration), promotes
 *     learners, removes voters and learners, 3 -> 5 -> 3 style; a member whose removal is
 *     committed is shut down a little later, as etcd does.
 * Random proposals and ReadIndex requests run throughout; leadership transfers too.
 *
 * After every event (a tick, a delivery, a persist, a crash, a request, a compaction, an
 * install, a membership change) the simulation checks:
 *   Election Safety      at most one leader per term, over the whole run (Raft §5.2);
 *   Log Matching         same index and term => same entry and same prefix, on durable logs
 *                        (each durable entry carries a hash of its prefix; a table maps
 *                        (index, term) to the first prefix hash seen) (Raft §5.3);
 *   Leader Completeness  a new leader's log holds every entry known committed, and so does
 *                        every leader of a later term when an entry becomes known committed
 *                        (Raft §5.4); entries it compacted are covered by its snapshot point;
 *   State Machine Safety no two members apply different entries at one index, and an installed
 *                        snapshot's state is exactly the applied prefix (Raft §5.4.3);
 *   committed entries are never overwritten, durable votes are never changed within a term;
 *   ReadIndex            a read state's index is >= the highest commit index any member had
 *                        reported when the read was asked (thesis §6.4), and is itself
 *                        committed;
 *   Membership           every member's membership at its commit index is the one a model
 *                        computes from the committed configuration entries (the committed
 *                        membership is the same everywhere), and its current membership is the
 *                        model applied to its own log (applied on append, reverted on
 *                        truncation, thesis §4.1); no log holds more than one uncommitted
 *                        configuration entry; only voters campaign; a leader outside its voters
 *                        has its removal still uncommitted (thesis §4.2.2).
 * Then the network heals, every member restarts, and a leader must emerge and a proposal must
 * commit on every member of the current configuration within a bounded simulated time
 * (liveness).
 *
 * Every failure prints its seed and event number. Environment:
 *   CAIRN_SIM_SEEDS=<n>   number of seeds per test (defaults: 10000 for 3/5 members, 2000 for
 *                         one member; about 12 s in a release build, about 40 s with ASan)
 *   CAIRN_SIM_FIRST_SEED=<k>  start k seeds further (to search other ranges)
 *   CAIRN_SIM_SEED=<n>    replay one seed only
 *   CAIRN_SIM_TRACE=1     print every event (use with CAIRN_SIM_SEED)
 */
#include <criterion/criterion.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cairn_err.h"
#include "raft.h"

/* Node ids 1..MAXN: up to 5 initial members, and spare ids that membership changes add. */
#define MAXN 7
#define UNITS_PER_TICK 10
#define ELECTION_TICK 10
/* Liveness bound after healing, in units: restarts, elections with split votes, catching up
 * a lagging member entry by entry with small max_msg_bytes, or by a snapshot. */
#define LIVE_BOUND 6000
/* After healing, a leader every member follows must appear within this many units. */
#define LEADER_BOUND 1500

/* ---- records ------------------------------------------------------------------------------- */

/* One log entry as the simulation sees it: the payload is identified by its pid (for a
 * configuration entry, the id carried in its context). */
typedef struct {
    uint64_t term, pid, h; /* h: hash of the prefix ending here (durable logs only) */
    uint64_t cnode;        /* CONF: the node */
    uint32_t len;
    uint8_t type;
    uint8_t cop; /* CONF: the op */
} sent_t;

/* A log: index i at v[i - base - 1]; entries up to base are compacted. */
typedef struct {
    sent_t *v;
    size_t n, cap;
    uint64_t base;
} slog_t;

/* A membership, in the core's order: ids[0, nv) voters, ids[nv, nv + nl) learners. */
typedef struct {
    uint64_t ids[MAXN];
    size_t nv, nl;
} smem_t;

/* A durable snapshot of the state machine (stored's snap/). */
typedef struct {
    uint64_t index, term, h; /* h: the prefix hash at index */
    smem_t mem;
    uint64_t *sm; /* the state: ids of the entries applied at 1..index */
    size_t sm_cap;
} ssnap_t;

typedef struct {
    cairn_raft_msg_t m;
    void *blk; /* owns m.entries, their data, and m.voters/m.learners */
} cmsg_t;

typedef struct {
    int has_hs;
    cairn_raft_hardstate_t hs;
    uint64_t first;
    sent_t *ents;
    size_t n;
    cmsg_t *msgs;
    size_t nm;
} batch_t;

typedef struct {
    uint64_t id;
    cairn_raft_t *r;
    int exists;  /* started at least once */
    int retired; /* removed from the cluster and shut down for good */
    int up;
    uint64_t boot, retire_at;
    cairn_raft_hardstate_t dhs; /* durable */
    ssnap_t dsnap;              /* durable */
    slog_t dlog;                /* durable, after dsnap.index */
    slog_t mlog;                /* mirror of the core's in-memory log */
    uint64_t *confs;            /* indexes of the configuration entries in mlog */
    size_t nconfs, confs_cap;
    batch_t *wq;
    size_t wq_n, wq_cap;
    uint64_t wq_done; /* writes made durable since boot */
    uint64_t stable;  /* what we reported through cairn_raft_persisted() */
    uint64_t commit;  /* last ready's commit index */
    uint64_t applied; /* state machine (volatile) */
    uint64_t *sm;     /* its content: ids of the applied entries */
    size_t sm_cap;
    uint64_t term_seen, led_term;
    int phase;
    /* a snapshot being installed: wait for the writes before it (need), then the transfer */
    struct {
        int active;
        uint64_t index, term, from, need, ready_at;
        smem_t mem;
    } inst;
} node_t;

typedef struct {
    uint64_t at, key;
    cmsg_t c;
} flight_t;

typedef struct {
    uint64_t node, required;
    int state; /* 0 pending, 1 served, 2 failed */
} readreq_t;

typedef struct {
    uint64_t idx, term, h;
} lm_slot_t;

typedef struct {
    uint64_t index;
    smem_t m;
} cmrec_t;

typedef struct {
    uint64_t seed, rng, ev, now;
    int trace;
    int n;      /* node slots 1..n in use */
    int n_init; /* the initial voters are 1..n_init */
    node_t nodes[MAXN + 1];
    smem_t init_mem;
    /* scenario */
    int pre_vote, check_quorum, hb, membership;
    size_t max_inflight, max_msg_bytes;
    double p_drop, p_dup, p_long, p_prop, p_read, p_part, p_heal, p_crash, p_restart, p_transfer, p_persist,
        p_skip, p_compact, p_conf, p_inst_fail;
    int dmax, inst_dmax;
    uint64_t compact_gap;
    uint64_t chaos_units;
    int grp[MAXN + 1];
    /* network: a binary min-heap on (at, key); the random key reorders same-time arrivals */
    flight_t *heap;
    size_t hn, hcap;
    /* global records */
    uint64_t *leader_of_term;
    size_t lot_cap;
    slog_t committed;  /* every entry any member reported committed (h: its prefix hash) */
    slog_t applied_at; /* the entry first applied at each index */
    cmrec_t *cm;       /* the model: the membership after each committed configuration entry */
    size_t cm_n, cm_cap;
    lm_slot_t *lm; /* (index, term) -> prefix hash */
    size_t lm_n, lm_cap;
    readreq_t *reads;
    size_t reads_n, reads_cap;
    uint64_t next_pid;
    uint64_t live_first_pid, live_index, last_live_prop, leader_units;
    /* stats */
    uint64_t n_commits, n_reads_ok, n_reads_fail, n_leaders, n_crashes, n_msgs, live_units, n_compactions,
        n_installs, n_inst_failed, n_inst_crashed, n_confs, n_retired;
    char err[1024];
} sim_t;

/* Where a failed check lands (outside sim_t: sim_setup() clears the whole struct after
 * sim_one() has set the jump point). */
static jmp_buf sim_jb;

static void sim_fail(sim_t *s, const char *fmt, ...)
{
    int k = snprintf(s->err, sizeof s->err, "seed=%llu event=%llu t=%llu: ", (unsigned long long)s->seed,
                     (unsigned long long)s->ev, (unsigned long long)s->now);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err + k, sizeof s->err - (size_t)k, fmt, ap);
    va_end(ap);
    fprintf(stderr, "raft sim FAILED: %s\n  replay: CAIRN_SIM_SEED=%llu CAIRN_SIM_TRACE=1\n", s->err,
            (unsigned long long)s->seed);
    longjmp(sim_jb, 1);
}

#define CHECK(s, cond, ...)                                                                                   \
    do {                                                                                                      \
        if (!(cond))                                                                                          \
            sim_fail((s), __VA_ARGS__);                                                                       \
    } while (0)

static void trace(sim_t *s, const char *fmt, ...)
{
    if (!s->trace)
        return;
    fprintf(stderr, "[ev %llu t %llu] ", (unsigned long long)s->ev, (unsigned long long)s->now);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#define ULL(x) ((unsigned long long)(x))

/* ---- PRNG ----------------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rnd(sim_t *s) { return mix64(s->rng += 0x9e3779b97f4a7c15ULL); }
static double rndf(sim_t *s) { return (double)(rnd(s) >> 11) / 9007199254740992.0; }
static int chance(sim_t *s, double p) { return p > 0 && rndf(s) < p; }
static uint64_t below(sim_t *s, uint64_t n) { return n ? rnd(s) % n : 0; }

/* ---- small containers ------------------------------------------------------------------------- */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "raft sim: out of memory\n");
        abort();
    }
    return q;
}

static void u64_reserve(uint64_t **v, size_t *cap, size_t n)
{
    if (n > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < n)
            c *= 2;
        *v = xrealloc(*v, c * sizeof **v);
        *cap = c;
    }
}

static inline uint64_t slast(const slog_t *l) { return l->base + l->n; }
static inline sent_t *sat(const slog_t *l, uint64_t i) { return &l->v[i - l->base - 1]; }

static void slog_reserve(slog_t *l, size_t n)
{
    if (n > l->cap) {
        size_t c = l->cap ? l->cap : 64;
        while (c < n)
            c *= 2;
        l->v = xrealloc(l->v, c * sizeof *l->v);
        l->cap = c;
    }
}

static void slog_push(slog_t *l, sent_t e)
{
    slog_reserve(l, l->n + 1);
    l->v[l->n++] = e;
}

/* Drops the entries up to base (all of them when base is beyond the log). */
static void slog_rebase(slog_t *l, uint64_t base)
{
    if (base <= l->base)
        return;
    if (base >= slast(l)) {
        l->n = 0;
    } else {
        size_t k = (size_t)(base - l->base);
        memmove(l->v, l->v + k, (l->n - k) * sizeof *l->v);
        l->n -= k;
    }
    l->base = base;
}

static void slog_free(slog_t *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int same_entry(const sent_t *a, const sent_t *b)
{
    return a->term == b->term && a->pid == b->pid && a->type == b->type && a->len == b->len;
}

/* ---- memberships: the model of the rules at the top of raft.c, written independently ------- */

static int smem_role(const smem_t *m, uint64_t id)
{
    for (size_t i = 0; i < m->nv + m->nl; i++)
        if (m->ids[i] == id)
            return i < m->nv;
    return -1;
}

static void smem_drop(smem_t *m, uint64_t id)
{
    size_t k = 0, nv = 0;
    for (size_t i = 0; i < m->nv + m->nl; i++) {
        if (m->ids[i] == id)
            continue;
        nv += i < m->nv;
        m->ids[k++] = m->ids[i];
    }
    m->nv = nv;
    m->nl = k - nv;
}

static void smem_add(smem_t *m, uint64_t id, int voter)
{
    if (m->nv + m->nl >= MAXN)
        return;
    if (voter) {
        memmove(m->ids + m->nv + 1, m->ids + m->nv, m->nl * sizeof *m->ids);
        m->ids[m->nv++] = id;
    } else {
        m->ids[m->nv + m->nl++] = id;
    }
}

static void smem_apply(smem_t *m, uint8_t op, uint64_t id)
{
    int role = smem_role(m, id);
    switch (op) {
    case CAIRN_RAFT_CONF_ADD_VOTER:
    case CAIRN_RAFT_CONF_PROMOTE:
        if (role == 0) {
            smem_drop(m, id);
            smem_add(m, id, 1);
        } else if (role < 0 && op == CAIRN_RAFT_CONF_ADD_VOTER) {
            smem_add(m, id, 1);
        }
        break;
    case CAIRN_RAFT_CONF_ADD_LEARNER:
        if (role < 0)
            smem_add(m, id, 0);
        break;
    case CAIRN_RAFT_CONF_REMOVE:
        if (role == 0 || (role == 1 && m->nv > 1))
            smem_drop(m, id);
        break;
    default:
        break;
    }
}

static int smem_eq_arrays(const smem_t *m, const uint64_t *v, size_t nv, const uint64_t *l, size_t nl)
{
    if (m->nv != nv || m->nl != nl)
        return 0;
    for (size_t i = 0; i < nv; i++)
        if (m->ids[i] != v[i])
            return 0;
    for (size_t i = 0; i < nl; i++)
        if (m->ids[nv + i] != l[i])
            return 0;
    return 1;
}

static void smem_str(const smem_t *m, char *buf, size_t len)
{
    size_t k = 0;
    k += (size_t)snprintf(buf + k, len - k, "v{");
    for (size_t i = 0; i < m->nv && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%llu", i ? "," : "", ULL(m->ids[i]));
    if (k < len)
        k += (size_t)snprintf(buf + k, len - k, "} l{");
    for (size_t i = 0; i < m->nl && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%llu", i ? "," : "", ULL(m->ids[m->nv + i]));
    if (k < len)
        snprintf(buf + k, len - k, "}");
}

static void arrays_str(const uint64_t *v, size_t nv, const uint64_t *l, size_t nl, char *buf, size_t len)
{
    smem_t m = {.nv = nv < MAXN ? nv : MAXN};
    m.nl = nl < MAXN - m.nv ? nl : MAXN - m.nv;
    memcpy(m.ids, v, m.nv * sizeof *v);
    if (m.nl)
        memcpy(m.ids + m.nv, l, m.nl * sizeof *l);
    smem_str(&m, buf, len);
}

/* The committed membership at index: the model after the last committed configuration entry
 * at or below it. */
static const smem_t *model_at(const sim_t *s, uint64_t index)
{
    const smem_t *m = &s->init_mem;
    size_t lo = 0, hi = s->cm_n;
    while (lo < hi) { /* the first record above index */
        size_t mid = (lo + hi) / 2;
        if (s->cm[mid].index <= index)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo)
        m = &s->cm[lo - 1].m;
    return m;
}

/* ---- payloads: 8-byte pid + a pattern derived from it, so corruption is detectable -------- */

static void fill_payload(uint8_t *p, uint64_t pid, size_t len)
{
    for (size_t i = 0; i < 8 && i < len; i++)
        p[i] = (uint8_t)(pid >> (8 * i));
    for (size_t i = 8; i < len; i++)
        p[i] = (uint8_t)(pid * 131 + i);
}

/* A configuration entry: the layout of raft.c, its context the 8-byte pid + pattern. */
static size_t fill_conf(uint8_t *p, uint8_t op, uint64_t node, uint64_t pid, size_t ctx_len)
{
    p[0] = op;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t)(node >> (8 * i));
    fill_payload(p + 9, pid, ctx_len);
    return 9 + ctx_len;
}

static uint64_t parse_pid(sim_t *s, uint64_t node, uint64_t index, const uint8_t *d, size_t len)
{
    uint64_t pid = 0;
    CHECK(s, len >= 8 && d, "node %llu: bad entry %llu", ULL(node), ULL(index));
    for (size_t i = 0; i < 8; i++)
        pid |= (uint64_t)d[i] << (8 * i);
    for (size_t i = 8; i < len; i++)
        CHECK(s, d[i] == (uint8_t)(pid * 131 + i), "node %llu: entry %llu data corrupt", ULL(node), ULL(index));
    return pid;
}

static sent_t parse_entry(sim_t *s, uint64_t node, const cairn_raft_entry_t *e)
{
    sent_t x = {.term = e->term, .type = e->type, .len = (uint32_t)e->len};
    if (e->type == CAIRN_RAFT_ENTRY_EMPTY) {
        CHECK(s, e->len == 0, "node %llu: empty entry %llu with %zu bytes", ULL(node), ULL(e->index), e->len);
        return x;
    }
    if (e->type == CAIRN_RAFT_ENTRY_CONF) {
        cairn_raft_conf_change_t cc;
        CHECK(s, cairn_raft_conf_decode(e->data, e->len, &cc) == 0, "node %llu: configuration entry %llu malformed",
              ULL(node), ULL(e->index));
        x.cop = cc.op;
        x.cnode = cc.node_id;
        x.pid = parse_pid(s, node, e->index, cc.ctx, cc.ctx_len);
        return x;
    }
    CHECK(s, e->type == CAIRN_RAFT_ENTRY_NORMAL, "node %llu: bad entry type %d at %llu", ULL(node), e->type,
          ULL(e->index));
    x.pid = parse_pid(s, node, e->index, e->data, e->len);
    return x;
}

/* Rebuilds the raw entry (for a restart) into d, which has room for len bytes. */
static void build_entry(const sent_t *e, uint8_t *d)
{
    if (e->type == CAIRN_RAFT_ENTRY_CONF)
        fill_conf(d, e->cop, e->cnode, e->pid, e->len - 9);
    else
        fill_payload(d, e->pid, e->len);
}

/* ---- messages ------------------------------------------------------------------------------- */

static cmsg_t msg_copy(const cairn_raft_msg_t *m)
{
    cmsg_t c = {.m = *m};
    size_t nids = m->type == CAIRN_RAFT_MSG_SNAP ? m->n_voters + m->n_learners : 0;
    size_t bytes = m->n_entries * sizeof(cairn_raft_entry_t) + nids * sizeof(uint64_t);
    for (size_t i = 0; i < m->n_entries; i++)
        bytes += m->entries[i].len;
    c.m.entries = NULL;
    c.m.voters = c.m.learners = NULL;
    if (!bytes)
        return c;
    uint8_t *blk = xrealloc(NULL, bytes);
    uint64_t *ids = (uint64_t *)blk;
    if (nids) {
        memcpy(ids, m->voters, m->n_voters * sizeof *ids);
        if (m->n_learners)
            memcpy(ids + m->n_voters, m->learners, m->n_learners * sizeof *ids);
        c.m.voters = ids;
        c.m.learners = ids + m->n_voters;
    }
    cairn_raft_entry_t *e = (cairn_raft_entry_t *)(ids + nids);
    uint8_t *d = (uint8_t *)(e + m->n_entries);
    for (size_t i = 0; i < m->n_entries; i++) {
        e[i] = m->entries[i];
        if (e[i].len) {
            memcpy(d, m->entries[i].data, e[i].len);
            e[i].data = d;
            d += e[i].len;
        }
    }
    if (m->n_entries)
        c.m.entries = e;
    c.blk = blk;
    return c;
}

static void heap_push(sim_t *s, flight_t f)
{
    if (s->hn == s->hcap) {
        s->hcap = s->hcap ? s->hcap * 2 : 256;
        s->heap = xrealloc(s->heap, s->hcap * sizeof *s->heap);
    }
    size_t i = s->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p].at < f.at || (s->heap[p].at == f.at && s->heap[p].key <= f.key))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = f;
}

static flight_t heap_pop(sim_t *s)
{
    flight_t top = s->heap[0], last = s->heap[--s->hn];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->hn)
            break;
        if (c + 1 < s->hn &&
            (s->heap[c + 1].at < s->heap[c].at || (s->heap[c + 1].at == s->heap[c].at && s->heap[c + 1].key < s->heap[c].key)))
            c++;
        if (last.at < s->heap[c].at || (last.at == s->heap[c].at && last.key <= s->heap[c].key))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->hn)
        s->heap[i] = last;
    return top;
}

/* Puts a message on the wire: maybe dropped, maybe duplicated, always delayed. */
static void net_send(sim_t *s, const cmsg_t *c)
{
    s->n_msgs++;
    int copies = chance(s, s->p_drop) ? 0 : 1 + chance(s, s->p_dup);
    for (int k = 0; k < copies; k++) {
        uint64_t delay = 1 + below(s, (uint64_t)s->dmax);
        if (chance(s, s->p_long))
            delay += below(s, 30 * UNITS_PER_TICK);
        flight_t f = {.at = s->now + delay, .key = rnd(s)};
        f.c = k == 0 ? *c : msg_copy(&c->m);
        heap_push(s, f);
    }
    if (copies == 0)
        free(c->blk);
}

/* ---- global checks ------------------------------------------------------------------------ */

static uint64_t prefix_hash(uint64_t prev, const sent_t *e)
{
    return mix64(prev ^ mix64(e->term * 0x100000001b3ULL ^ e->pid * 0x9e3779b97f4a7c15ULL ^ e->type ^
                              ((uint64_t)e->len << 56)));
}

/* Log Matching: the first prefix hash seen for (index, term) must be the only one. */
static void lm_check(sim_t *s, uint64_t node, uint64_t idx, const sent_t *e)
{
    if (s->lm_n * 2 >= s->lm_cap) {
        size_t oc = s->lm_cap, nc = oc ? oc * 2 : 1024;
        lm_slot_t *old = s->lm, *nw = calloc(nc, sizeof *nw);
        for (size_t i = 0; i < oc; i++) {
            if (!old[i].idx)
                continue;
            size_t j = mix64(old[i].idx * 31 + old[i].term) & (nc - 1);
            while (nw[j].idx)
                j = (j + 1) & (nc - 1);
            nw[j] = old[i];
        }
        free(old);
        s->lm = nw;
        s->lm_cap = nc;
    }
    size_t j = mix64(idx * 31 + e->term) & (s->lm_cap - 1);
    while (s->lm[j].idx) {
        if (s->lm[j].idx == idx && s->lm[j].term == e->term) {
            CHECK(s, s->lm[j].h == e->h,
                  "Log Matching: node %llu durable entry (%llu, term %llu) has a different prefix than another log's",
                  ULL(node), ULL(idx), ULL(e->term));
            return;
        }
        j = (j + 1) & (s->lm_cap - 1);
    }
    s->lm[j] = (lm_slot_t){idx, e->term, e->h};
    s->lm_n++;
}

static void check_leader_complete(sim_t *s, node_t *nd, uint64_t from, uint64_t to)
{
    uint64_t base = nd->mlog.base;
    if (from <= base && base && base <= s->committed.n) {
        /* Compacted: its snapshot point must be the committed entry there. */
        CHECK(s, cairn_raft_snapshot_term(nd->r) == sat(&s->committed, base)->term,
              "Leader Completeness: leader %llu's snapshot (%llu, term %llu) is not the committed entry", ULL(nd->id),
              ULL(base), ULL(cairn_raft_snapshot_term(nd->r)));
        from = base + 1;
    }
    for (uint64_t i = from; i <= to; i++) {
        CHECK(s, i <= slast(&nd->mlog) && same_entry(sat(&nd->mlog, i), sat(&s->committed, i)),
              "Leader Completeness: leader %llu (term %llu) lacks committed entry %llu", ULL(nd->id),
              ULL(cairn_raft_term(nd->r)), ULL(i));
    }
}

/* Election Safety, after every event: one leader per term over the whole run. */
static void check_all(sim_t *s)
{
    for (int i = 1; i <= s->n; i++) {
        node_t *nd = &s->nodes[i];
        if (!nd->up || cairn_raft_role(nd->r) != CAIRN_RAFT_LEADER)
            continue;
        uint64_t t = cairn_raft_term(nd->r);
        if (t >= s->lot_cap) {
            size_t nc = s->lot_cap ? s->lot_cap : 64;
            while (nc <= t)
                nc *= 2;
            s->leader_of_term = xrealloc(s->leader_of_term, nc * sizeof(uint64_t));
            memset(s->leader_of_term + s->lot_cap, 0, (nc - s->lot_cap) * sizeof(uint64_t));
            s->lot_cap = nc;
        }
        if (!s->leader_of_term[t]) {
            s->leader_of_term[t] = nd->id;
            s->n_leaders++;
        }
        CHECK(s, s->leader_of_term[t] == nd->id, "Election Safety: nodes %llu and %llu both leaders of term %llu",
              ULL(s->leader_of_term[t]), ULL(nd->id), ULL(t));
    }
}

/* The membership checks (thesis ch. 4), after every ready of a member. */
static void check_membership(sim_t *s, node_t *nd)
{
    char a[128], b[128];
    const uint64_t *v, *l;
    size_t nv, nl;
    /* Committed: the same everywhere, the model's. */
    CHECK(s, cairn_raft_conf_at(nd->r, nd->commit, &v, &nv, &l, &nl) == 0, "node %llu: no membership at commit %llu",
          ULL(nd->id), ULL(nd->commit));
    const smem_t *want = model_at(s, nd->commit);
    if (!smem_eq_arrays(want, v, nv, l, nl)) {
        smem_str(want, a, sizeof a);
        arrays_str(v, nv, l, nl, b, sizeof b);
        sim_fail(s, "node %llu: membership at its commit index %llu is %s, the committed one is %s", ULL(nd->id),
                 ULL(nd->commit), b, a);
    }
    /* Current: the committed membership at its snapshot point plus its own log's configuration
     * entries, committed or not (applied on append, reverted on truncation: thesis §4.1). */
    smem_t cur = *model_at(s, nd->mlog.base);
    size_t uncommitted = 0;
    for (size_t k = 0; k < nd->nconfs; k++) {
        const sent_t *e = sat(&nd->mlog, nd->confs[k]);
        smem_apply(&cur, e->cop, e->cnode);
        uncommitted += nd->confs[k] > s->committed.n;
    }
    nv = cairn_raft_voters(nd->r, &v);
    nl = cairn_raft_learners(nd->r, &l);
    if (!smem_eq_arrays(&cur, v, nv, l, nl)) {
        smem_str(&cur, a, sizeof a);
        arrays_str(v, nv, l, nl, b, sizeof b);
        sim_fail(s, "node %llu: current membership %s, its log says %s", ULL(nd->id), b, a);
    }
    CHECK(s, uncommitted <= 1, "node %llu: %zu uncommitted configuration entries in its log", ULL(nd->id), uncommitted);
    cairn_raft_role_t role = cairn_raft_role(nd->r);
    int voter = smem_role(&cur, nd->id) == 1;
    CHECK(s, voter || (role != CAIRN_RAFT_CANDIDATE && role != CAIRN_RAFT_PRECANDIDATE),
          "node %llu campaigns but is not a voter", ULL(nd->id));
    CHECK(s, voter || role != CAIRN_RAFT_LEADER || cairn_raft_pending_conf_index(nd->r),
          "node %llu leads after its removal committed (thesis §4.2.2)", ULL(nd->id));
    CHECK(s, cairn_raft_snapshot_index(nd->r) == nd->mlog.base && nd->dsnap.index <= nd->mlog.base,
          "node %llu: core snapshot %llu, mirror base %llu, durable snapshot %llu", ULL(nd->id),
          ULL(cairn_raft_snapshot_index(nd->r)), ULL(nd->mlog.base), ULL(nd->dsnap.index));
}

/* ---- the shell: ready handling ---------------------------------------------------------------- */

static void sm_push(node_t *nd, uint64_t pid)
{
    u64_reserve(&nd->sm, &nd->sm_cap, nd->applied);
    nd->sm[nd->applied - 1] = pid;
}

static void apply_entries(sim_t *s, node_t *nd)
{
    uint64_t upto = nd->commit < nd->stable ? nd->commit : nd->stable;
    while (nd->applied < upto) {
        uint64_t i = ++nd->applied;
        CHECK(s, i > nd->mlog.base && i <= slast(&nd->mlog) && i > nd->dlog.base && i <= slast(&nd->dlog),
              "node %llu applies %llu beyond its log", ULL(nd->id), ULL(i));
        const sent_t *e = sat(&nd->mlog, i);
        CHECK(s, same_entry(e, sat(&nd->dlog, i)), "node %llu applies entry %llu that differs from its durable copy",
              ULL(nd->id), ULL(i));
        if (i > s->applied_at.n) {
            slog_push(&s->applied_at, *e);
        } else {
            const sent_t *o = sat(&s->applied_at, i);
            CHECK(s, same_entry(e, o),
                  "State Machine Safety: node %llu applies (term %llu pid %llu) at %llu, another applied (term %llu "
                  "pid %llu)",
                  ULL(nd->id), ULL(e->term), ULL(e->pid), ULL(i), ULL(o->term), ULL(o->pid));
        }
        sm_push(nd, e->pid);
        if (e->pid >= s->live_first_pid && s->live_first_pid && e->type == CAIRN_RAFT_ENTRY_NORMAL && !s->live_index)
            s->live_index = i;
    }
}

static void retire_later(sim_t *s, uint64_t id)
{
    node_t *nd = id >= 1 && id <= (uint64_t)s->n ? &s->nodes[id] : NULL;
    if (nd && nd->exists && !nd->retired && !nd->retire_at)
        nd->retire_at = s->now + 1 + below(s, 300);
}

static void record_commit(sim_t *s, node_t *nd, uint64_t commit, uint64_t term)
{
    CHECK(s, commit >= nd->commit, "node %llu commit went back from %llu to %llu", ULL(nd->id), ULL(nd->commit),
          ULL(commit));
    CHECK(s, commit <= slast(&nd->mlog), "node %llu commit %llu beyond its log %llu", ULL(nd->id), ULL(commit),
          ULL(slast(&nd->mlog)));
    for (uint64_t i = nd->commit + 1; i <= commit; i++) {
        CHECK(s, i > nd->mlog.base, "node %llu commits compacted index %llu", ULL(nd->id), ULL(i));
        const sent_t *e = sat(&nd->mlog, i);
        if (i <= s->committed.n) {
            const sent_t *o = sat(&s->committed, i);
            CHECK(s, same_entry(e, o),
                  "node %llu commits (term %llu pid %llu) at %llu but (term %llu pid %llu) was committed there",
                  ULL(nd->id), ULL(e->term), ULL(e->pid), ULL(i), ULL(o->term), ULL(o->pid));
            continue;
        }
        sent_t c = *e;
        c.h = prefix_hash(i > 1 ? sat(&s->committed, i - 1)->h : 0, &c);
        slog_push(&s->committed, c);
        s->n_commits++;
        if (c.type == CAIRN_RAFT_ENTRY_CONF) {
            /* The model: the membership after every committed configuration entry. */
            if (s->cm_n == s->cm_cap) {
                s->cm_cap = s->cm_cap ? s->cm_cap * 2 : 16;
                s->cm = xrealloc(s->cm, s->cm_cap * sizeof *s->cm);
            }
            smem_t m = s->cm_n ? s->cm[s->cm_n - 1].m : s->init_mem;
            int was = smem_role(&m, c.cnode) >= 0;
            smem_apply(&m, c.cop, c.cnode);
            s->cm[s->cm_n++] = (cmrec_t){i, m};
            trace(s, "committed configuration entry %llu: op %d node %llu", ULL(i), c.cop, ULL(c.cnode));
            if (was && smem_role(&m, c.cnode) < 0)
                retire_later(s, c.cnode); /* etcd: a removed member shuts itself down */
        }
        /* Leader Completeness for leaders that already exist: any leader of a later term. */
        for (int k = 1; k <= s->n; k++) {
            node_t *o = &s->nodes[k];
            if (o->up && cairn_raft_role(o->r) == CAIRN_RAFT_LEADER && cairn_raft_term(o->r) > term)
                check_leader_complete(s, o, i, i);
        }
    }
    nd->commit = commit;
}

/* The mirror of the core's log follows the ready's entries (truncating first). */
static void mirror_truncate(node_t *nd, uint64_t last)
{
    nd->mlog.n = (size_t)(last - nd->mlog.base);
    while (nd->nconfs && nd->confs[nd->nconfs - 1] > last)
        nd->nconfs--;
}

static void mirror_rebase(node_t *nd, uint64_t base)
{
    slog_rebase(&nd->mlog, base);
    size_t k = 0;
    while (k < nd->nconfs && nd->confs[k] <= base)
        k++;
    if (k) {
        memmove(nd->confs, nd->confs + k, (nd->nconfs - k) * sizeof *nd->confs);
        nd->nconfs -= k;
    }
}

static void mirror_push(node_t *nd, sent_t e)
{
    slog_push(&nd->mlog, e);
    if (e.type == CAIRN_RAFT_ENTRY_CONF) {
        u64_reserve(&nd->confs, &nd->confs_cap, nd->nconfs + 1);
        nd->confs[nd->nconfs++] = slast(&nd->mlog);
    }
}

static void drain(sim_t *s, node_t *nd)
{
    while (nd->up && cairn_raft_has_ready(nd->r)) {
        cairn_raft_ready_t rd;
        cairn_raft_ready(nd->r, &rd);
        trace(s, "ready %llu: role %d term %llu vote %llu lead %llu commit %llu entries %llu..+%zu (t%llu) msgs %zu+%zu%s%s",
              ULL(nd->id), rd.role, ULL(rd.term), ULL(rd.hs.vote), ULL(rd.leader), ULL(rd.commit),
              ULL(rd.n_entries ? rd.entries[0].index : 0), rd.n_entries,
              ULL(rd.n_entries ? rd.entries[rd.n_entries - 1].term : 0), rd.n_msgs, rd.n_msgs_after_persist,
              rd.has_snapshot ? " SNAPSHOT" : "", rd.conf_changed ? " CONF" : "");
        CHECK(s, rd.term >= nd->term_seen, "node %llu term went back", ULL(nd->id));
        nd->term_seen = rd.term;
        CHECK(s, rd.hs.term == rd.term && rd.hs.commit == rd.commit, "node %llu ready hs/soft state disagree",
              ULL(nd->id));

        /* Entries: mirror the core's log, and queue them for the disk. */
        batch_t b = {.has_hs = rd.hs_changed, .hs = rd.hs};
        if (rd.n_entries) {
            uint64_t first = rd.entries[0].index;
            CHECK(s, first > nd->mlog.base && first <= slast(&nd->mlog) + 1,
                  "node %llu: ready entries start at %llu, log is %llu..%llu", ULL(nd->id), ULL(first),
                  ULL(nd->mlog.base), ULL(slast(&nd->mlog)));
            CHECK(s, first > nd->commit, "node %llu: ready overwrites committed index %llu (commit %llu)", ULL(nd->id),
                  ULL(first), ULL(nd->commit));
            mirror_truncate(nd, first - 1);
            if (nd->stable >= first)
                nd->stable = first - 1;
            b.first = first;
            b.n = rd.n_entries;
            b.ents = xrealloc(NULL, rd.n_entries * sizeof *b.ents);
            for (size_t i = 0; i < rd.n_entries; i++) {
                CHECK(s, rd.entries[i].index == first + i, "node %llu: ready entries not contiguous", ULL(nd->id));
                CHECK(s, rd.entries[i].term <= rd.term, "node %llu: entry term above its term", ULL(nd->id));
                sent_t e = parse_entry(s, nd->id, &rd.entries[i]);
                b.ents[i] = e;
                mirror_push(nd, e);
            }
        }
        CHECK(s, slast(&nd->mlog) == cairn_raft_last_index(nd->r), "node %llu: mirror %llu != core last %llu",
              ULL(nd->id), ULL(slast(&nd->mlog)), ULL(cairn_raft_last_index(nd->r)));
        if (rd.n_msgs_after_persist) {
            b.msgs = xrealloc(NULL, rd.n_msgs_after_persist * sizeof *b.msgs);
            b.nm = rd.n_msgs_after_persist;
            for (size_t i = 0; i < b.nm; i++)
                b.msgs[i] = msg_copy(&rd.msgs_after_persist[i]);
        }
        if (b.has_hs || b.n || b.nm) {
            if (nd->wq_n == nd->wq_cap) {
                nd->wq_cap = nd->wq_cap ? nd->wq_cap * 2 : 16;
                nd->wq = xrealloc(nd->wq, nd->wq_cap * sizeof *nd->wq);
            }
            nd->wq[nd->wq_n++] = b;
        }
        for (size_t i = 0; i < rd.n_msgs; i++) {
            cmsg_t c = msg_copy(&rd.msgs[i]);
            net_send(s, &c);
        }

        /* A new leader must hold every committed entry (Raft §5.4.1). */
        if (rd.role == CAIRN_RAFT_LEADER && nd->led_term != rd.term) {
            nd->led_term = rd.term;
            check_leader_complete(s, nd, 1, s->committed.n);
        }
        record_commit(s, nd, rd.commit, rd.term);

        for (size_t i = 0; i < rd.n_read_states; i++) {
            uint64_t ctx = rd.read_states[i].context, idx = rd.read_states[i].index;
            CHECK(s, ctx >= 1 && ctx <= s->reads_n, "node %llu: read state for unknown context %llu", ULL(nd->id),
                  ULL(ctx));
            readreq_t *q = &s->reads[ctx - 1];
            CHECK(s, q->node == nd->id && q->state == 0, "node %llu: read %llu answered twice or by the wrong node",
                  ULL(nd->id), ULL(ctx));
            CHECK(s, idx >= q->required, "ReadIndex: read %llu got index %llu but %llu was committed before it was asked",
                  ULL(ctx), ULL(idx), ULL(q->required));
            CHECK(s, idx <= s->committed.n, "ReadIndex: read %llu index %llu is not committed (%llu)", ULL(ctx),
                  ULL(idx), ULL(s->committed.n));
            q->state = 1;
            s->n_reads_ok++;
        }
        for (size_t i = 0; i < rd.n_read_failures; i++) {
            uint64_t ctx = rd.read_failures[i];
            CHECK(s, ctx >= 1 && ctx <= s->reads_n && s->reads[ctx - 1].node == nd->id && s->reads[ctx - 1].state == 0,
                  "node %llu: bogus read failure %llu", ULL(nd->id), ULL(ctx));
            s->reads[ctx - 1].state = 2;
            s->n_reads_fail++;
        }
        if (rd.conf_changed) {
            const uint64_t *v, *l;
            size_t nv = cairn_raft_voters(nd->r, &v), nl = cairn_raft_learners(nd->r, &l);
            CHECK(s, rd.n_voters == nv && rd.n_learners == nl &&
                         !memcmp(rd.voters, v, nv * sizeof *v) && (!nl || !memcmp(rd.learners, l, nl * sizeof *l)),
                  "node %llu: the ready's membership is not the core's", ULL(nd->id));
        }
        if (rd.has_snapshot) {
            /* The shell installs it once every write so far is durable (raft.h step 7). */
            CHECK(s, !nd->inst.active, "node %llu: a second snapshot while one is installing", ULL(nd->id));
            CHECK(s, rd.snapshot_index <= s->committed.n && rd.snapshot_index > nd->commit &&
                         rd.snapshot_term == sat(&s->committed, rd.snapshot_index)->term,
                  "node %llu: snapshot (%llu, term %llu) is not a committed entry beyond its commit %llu", ULL(nd->id),
                  ULL(rd.snapshot_index), ULL(rd.snapshot_term), ULL(nd->commit));
            const smem_t *want = model_at(s, rd.snapshot_index);
            CHECK(s, smem_eq_arrays(want, rd.snapshot_voters, rd.n_snapshot_voters, rd.snapshot_learners,
                                    rd.n_snapshot_learners),
                  "node %llu: snapshot %llu carries a membership that is not the committed one", ULL(nd->id),
                  ULL(rd.snapshot_index));
            nd->inst.active = 1;
            nd->inst.index = rd.snapshot_index;
            nd->inst.term = rd.snapshot_term;
            nd->inst.from = rd.snapshot_from;
            nd->inst.mem = *want;
            nd->inst.need = nd->wq_done + nd->wq_n;
            nd->inst.ready_at = 0;
            trace(s, "node %llu: install snapshot (%llu, %llu) from %llu", ULL(nd->id), ULL(rd.snapshot_index),
                  ULL(rd.snapshot_term), ULL(rd.snapshot_from));
        }
        cairn_raft_advance(nd->r, &rd);
        apply_entries(s, nd);
        check_membership(s, nd);
    }
}

/* The disk: makes the first nb queued writes durable, in order. Entries at or below the
 * durable snapshot are covered by it and dropped (raft.h step 7). */
static void persist(sim_t *s, node_t *nd, size_t nb)
{
    int any_entries = 0;
    for (size_t k = 0; k < nb; k++) {
        batch_t *b = &nd->wq[k];
        if (b->has_hs) {
            CHECK(s, b->hs.term >= nd->dhs.term, "node %llu durable term goes back", ULL(nd->id));
            CHECK(s, !(b->hs.term == nd->dhs.term && nd->dhs.vote && b->hs.vote != nd->dhs.vote),
                  "node %llu changes its durable vote in term %llu from %llu to %llu", ULL(nd->id), ULL(b->hs.term),
                  ULL(nd->dhs.vote), ULL(b->hs.vote));
            CHECK(s, b->hs.commit >= nd->dhs.commit, "node %llu durable commit goes back", ULL(nd->id));
            nd->dhs = b->hs;
        }
        size_t skip = 0;
        if (b->n && b->first <= nd->dlog.base)
            skip = (size_t)(nd->dlog.base - b->first + 1) < b->n ? (size_t)(nd->dlog.base - b->first + 1) : b->n;
        if (b->n > skip) {
            uint64_t first = b->first + skip;
            any_entries = 1;
            CHECK(s, first <= slast(&nd->dlog) + 1, "node %llu: write leaves a hole in the durable log", ULL(nd->id));
            /* A committed entry this member holds must never leave its disk. (A stale leader
             * may still write entries of its own where others committed something else.) */
            for (uint64_t idx = first; idx <= slast(&nd->dlog) && idx <= s->committed.n; idx++) {
                const sent_t *old = sat(&nd->dlog, idx);
                if (same_entry(old, sat(&s->committed, idx)))
                    CHECK(s, idx < b->first + b->n && same_entry(&b->ents[idx - b->first], old),
                          "node %llu removes committed entry %llu from its disk", ULL(nd->id), ULL(idx));
            }
            nd->dlog.n = (size_t)(first - 1 - nd->dlog.base);
            for (size_t i = skip; i < b->n; i++) {
                sent_t e = b->ents[i];
                uint64_t idx = b->first + i;
                e.h = prefix_hash(idx - 1 > nd->dlog.base ? sat(&nd->dlog, idx - 1)->h : nd->dsnap.h, &e);
                lm_check(s, nd->id, idx, &e);
                slog_push(&nd->dlog, e);
            }
        }
        CHECK(s, nd->dhs.commit <= slast(&nd->dlog), "node %llu durable commit %llu beyond durable log %llu",
              ULL(nd->id), ULL(nd->dhs.commit), ULL(slast(&nd->dlog)));
        for (size_t i = 0; i < b->nm; i++)
            net_send(s, &b->msgs[i]);
        free(b->ents);
        free(b->msgs);
        b->ents = NULL;
        b->msgs = NULL;
        b->n = b->nm = 0;
    }
    memmove(nd->wq, nd->wq + nb, (nd->wq_n - nb) * sizeof *nd->wq);
    nd->wq_n -= nb;
    nd->wq_done += nb;
    if (any_entries && nd->dlog.n) {
        uint64_t li = slast(&nd->dlog), lt = sat(&nd->dlog, li)->term;
        cairn_raft_persisted(nd->r, li, lt);
        /* Mirror the core's rule: a report for a replaced entry is stale. */
        if (li > nd->stable && li <= slast(&nd->mlog) && li > nd->mlog.base && sat(&nd->mlog, li)->term == lt)
            nd->stable = li;
    }
    drain(s, nd);
}

static void wq_clear(node_t *nd)
{
    for (size_t k = 0; k < nd->wq_n; k++) {
        free(nd->wq[k].ents);
        for (size_t i = 0; i < nd->wq[k].nm; i++)
            free(nd->wq[k].msgs[i].blk);
        free(nd->wq[k].msgs);
    }
    nd->wq_n = 0;
}

/* ---- members ------------------------------------------------------------------------------- */

static void node_start(sim_t *s, node_t *nd)
{
    size_t n = nd->dlog.n, bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += nd->dlog.v[i].len;
    cairn_raft_entry_t *ents = xrealloc(NULL, (n + 1) * sizeof *ents);
    uint8_t *data = xrealloc(NULL, bytes + 1), *d = data;
    for (size_t i = 0; i < n; i++) {
        const sent_t *e = &nd->dlog.v[i];
        ents[i] = (cairn_raft_entry_t){.index = nd->dlog.base + i + 1, .term = e->term, .type = e->type, .len = e->len};
        if (e->len) {
            build_entry(e, d);
            ents[i].data = d;
            d += e->len;
        }
    }
    /* The membership at the snapshot point, or the initial cluster; a new member starts with
     * the initial cluster too (it is not in it: it learns its membership from the log). */
    const smem_t *m = nd->dsnap.index ? &nd->dsnap.mem : &s->init_mem;
    cairn_raft_config_t c = {.id = nd->id,
                             .voters = m->ids,
                             .n_voters = m->nv,
                             .learners = m->nl ? m->ids + m->nv : NULL,
                             .n_learners = m->nl,
                             .election_tick = ELECTION_TICK,
                             .heartbeat_tick = s->hb,
                             .seed = s->seed * 1000003 + nd->id * 101 + nd->boot,
                             .pre_vote = s->pre_vote,
                             .check_quorum = s->check_quorum,
                             .max_msg_bytes = s->max_msg_bytes,
                             .max_inflight = s->max_inflight,
                             .hs = nd->dhs,
                             .snap_index = nd->dsnap.index,
                             .snap_term = nd->dsnap.term,
                             .entries = ents,
                             .n_entries = n};
    int err = 0;
    nd->r = cairn_raft_new(&c, &err);
    free(ents);
    free(data); /* the core copied what it needs */
    CHECK(s, nd->r, "node %llu failed to restart from its durable state: %s", ULL(nd->id), cairn_strerror(err));
    nd->up = 1;
    nd->exists = 1;
    nd->boot++;
    nd->mlog.n = 0;
    nd->mlog.base = nd->dlog.base;
    nd->nconfs = 0;
    slog_reserve(&nd->mlog, n);
    for (size_t i = 0; i < n; i++)
        mirror_push(nd, nd->dlog.v[i]);
    nd->stable = slast(&nd->dlog);
    nd->commit = nd->dhs.commit > nd->dsnap.index ? nd->dhs.commit : nd->dsnap.index;
    /* The state machine restarts from the snapshot; the log replays the rest. */
    nd->applied = nd->dsnap.index;
    u64_reserve(&nd->sm, &nd->sm_cap, nd->applied);
    if (nd->applied)
        memcpy(nd->sm, nd->dsnap.sm, nd->applied * sizeof *nd->sm);
    nd->term_seen = nd->dhs.term;
    nd->led_term = 0;
    nd->wq_done = 0;
    nd->inst.active = 0;
}

static void node_crash(sim_t *s, node_t *nd)
{
    trace(s, "crash %llu (loses %zu queued writes%s)", ULL(nd->id), nd->wq_n,
          nd->inst.active ? " and a snapshot install" : "");
    cairn_raft_destroy(&nd->r);
    wq_clear(nd);
    nd->up = 0;
    s->n_inst_crashed += (uint64_t)nd->inst.active;
    nd->inst.active = 0; /* an install in progress leaves the old state */
    s->n_crashes++;
    for (size_t i = 0; i < s->reads_n; i++)
        if (s->reads[i].node == nd->id && s->reads[i].state == 0)
            s->reads[i].state = 2;
}

/* Writes a durable snapshot of this member's own state at index (<= applied) and drops the
 * durable log up to it (stored's snapshot + WAL compaction). */
static void snapshot_own(sim_t *s, node_t *nd, uint64_t index, const smem_t *mem)
{
    CHECK(s, index <= nd->applied && index > nd->dlog.base && index <= slast(&nd->dlog),
          "node %llu: snapshot at %llu outside its durable log", ULL(nd->id), ULL(index));
    const sent_t *e = sat(&nd->dlog, index);
    nd->dsnap.index = index;
    nd->dsnap.term = e->term;
    nd->dsnap.h = e->h;
    nd->dsnap.mem = *mem;
    u64_reserve(&nd->dsnap.sm, &nd->dsnap.sm_cap, index);
    memcpy(nd->dsnap.sm, nd->sm, index * sizeof *nd->sm);
    slog_rebase(&nd->dlog, index);
}

/* Log compaction (thesis ch. 5): snapshot the state machine at the applied index, then let
 * the core drop its log up to there. */
static void compact(sim_t *s, node_t *nd)
{
    uint64_t index = nd->applied;
    if (index <= nd->mlog.base || index - nd->mlog.base < s->compact_gap)
        return;
    s->ev++;
    const uint64_t *v, *l;
    size_t nv, nl;
    CHECK(s, cairn_raft_conf_at(nd->r, index, &v, &nv, &l, &nl) == 0, "node %llu: no membership at %llu",
          ULL(nd->id), ULL(index));
    const smem_t *want = model_at(s, index);
    CHECK(s, smem_eq_arrays(want, v, nv, l, nl), "node %llu: membership at its applied index %llu is not the committed one",
          ULL(nd->id), ULL(index));
    uint64_t term = sat(&nd->mlog, index)->term;
    snapshot_own(s, nd, index, want);
    int rc = cairn_raft_compact(nd->r, index, term);
    trace(s, "compact %llu at (%llu, %llu): %d", ULL(nd->id), ULL(index), ULL(term), rc);
    CHECK(s, rc == 0, "node %llu: compact(%llu, %llu): %s", ULL(nd->id), ULL(index), ULL(term), cairn_strerror(rc));
    mirror_rebase(nd, index);
    s->n_compactions++;
    drain(s, nd);
    check_all(s);
}

/* The leader's shell, which served (or failed to serve) the data from its stored, may tell its
 * core how the transfer ended. */
static void report_to_source(sim_t *s, node_t *src, uint64_t to, int ok)
{
    if (src && src->up && chance(s, 0.5)) {
        cairn_raft_report_snapshot(src->r, to, ok);
        trace(s, "report snapshot to %llu at %llu: %d", ULL(to), ULL(src->id), ok);
        drain(s, src);
    }
}

/* The install of a snapshot handed out in a ready: the transfer starts once the writes queued
 * before it are durable and takes a while; then the leader's durable snapshot replaces the
 * state machine, or the transfer fails. */
static void install_step(sim_t *s, node_t *nd)
{
    if (!nd->inst.active || nd->wq_done < nd->inst.need)
        return;
    if (!nd->inst.ready_at) {
        nd->inst.ready_at = s->now + 1 + below(s, (uint64_t)s->inst_dmax);
        return;
    }
    if (s->now < nd->inst.ready_at)
        return;
    s->ev++;
    uint64_t index = nd->inst.index, term = nd->inst.term;
    node_t *src = nd->inst.from >= 1 && nd->inst.from <= (uint64_t)s->n ? &s->nodes[nd->inst.from] : NULL;
    nd->inst.active = 0;
    int rc;
    if (nd->applied >= index) {
        /* The state machine already has it (the log got there meanwhile): a snapshot of our own
         * at that point stands for it. */
        if (index > nd->dlog.base)
            snapshot_own(s, nd, index, &nd->inst.mem);
        trace(s, "install %llu (%llu, %llu): already applied", ULL(nd->id), ULL(index), ULL(term));
    } else if (!src || !src->up || s->grp[src->id] != s->grp[nd->id] || src->dsnap.index != index ||
               chance(s, s->p_inst_fail)) {
        rc = cairn_raft_snapshot_failed(nd->r);
        trace(s, "install %llu (%llu, %llu) from %llu failed: %d", ULL(nd->id), ULL(index), ULL(term),
              ULL(nd->inst.from), rc);
        CHECK(s, rc == 0, "node %llu: snapshot_failed: %s", ULL(nd->id), cairn_strerror(rc));
        s->n_inst_failed++;
        drain(s, nd);
        report_to_source(s, src, nd->id, 0);
        check_all(s);
        return;
    } else {
        const ssnap_t *ss = &src->dsnap;
        CHECK(s, ss->term == term, "node %llu: leader %llu's snapshot %llu has term %llu, not %llu", ULL(nd->id),
              ULL(src->id), ULL(index), ULL(ss->term), ULL(term));
        CHECK(s, ss->h == sat(&s->committed, index)->h, "snapshot %llu of node %llu is not the committed prefix",
              ULL(index), ULL(src->id));
        /* State Machine Safety: the snapshot's state is exactly the applied prefix. */
        for (uint64_t i = 1; i <= index; i++)
            CHECK(s, ss->sm[i - 1] == sat(&s->applied_at, i)->pid,
                  "State Machine Safety: snapshot %llu of node %llu holds id %llu at %llu, %llu was applied there",
                  ULL(index), ULL(src->id), ULL(ss->sm[i - 1]), ULL(i), ULL(sat(&s->applied_at, i)->pid));
        /* Durable at once (a rename): the snapshot, then the durable log after it only if it held
         * (index, term) - the rule the core applies to its own log. */
        int keep = index > nd->dlog.base && index <= slast(&nd->dlog) && sat(&nd->dlog, index)->term == term;
        nd->dsnap.index = index;
        nd->dsnap.term = term;
        nd->dsnap.h = ss->h;
        nd->dsnap.mem = ss->mem;
        u64_reserve(&nd->dsnap.sm, &nd->dsnap.sm_cap, index);
        memcpy(nd->dsnap.sm, ss->sm, index * sizeof *ss->sm);
        if (keep)
            slog_rebase(&nd->dlog, index);
        else
            nd->dlog = (slog_t){.v = nd->dlog.v, .cap = nd->dlog.cap, .base = index};
        nd->applied = index;
        u64_reserve(&nd->sm, &nd->sm_cap, index);
        memcpy(nd->sm, ss->sm, index * sizeof *ss->sm);
        s->n_installs++;
        trace(s, "install %llu (%llu, %llu) from %llu (durable log %s)", ULL(nd->id), ULL(index), ULL(term),
              ULL(src->id), keep ? "kept" : "dropped");
    }
    /* The core's log: the same rule. */
    int mkeep = index > nd->mlog.base && index <= slast(&nd->mlog) && sat(&nd->mlog, index)->term == term;
    rc = cairn_raft_snapshot_installed(nd->r, index, term);
    CHECK(s, rc == 0, "node %llu: snapshot_installed(%llu, %llu): %s", ULL(nd->id), ULL(index), ULL(term),
          cairn_strerror(rc));
    if (index > nd->mlog.base) {
        if (mkeep) {
            mirror_rebase(nd, index);
            if (nd->stable < index)
                nd->stable = index;
        } else {
            mirror_truncate(nd, nd->mlog.base);
            nd->mlog.base = index;
            nd->stable = index;
        }
    }
    if (nd->commit < index)
        nd->commit = index;
    drain(s, nd);
    report_to_source(s, src, nd->id, 1);
    check_all(s);
}

static void retire(sim_t *s, node_t *nd)
{
    s->ev++;
    trace(s, "retire %llu (removed from the cluster)", ULL(nd->id));
    if (nd->up)
        node_crash(s, nd);
    nd->retired = 1;
    nd->retire_at = 0;
    s->n_retired++;
    check_all(s);
}

static node_t *random_up(sim_t *s)
{
    int k = 1 + (int)below(s, (uint64_t)s->n);
    for (int i = 0; i < s->n; i++) {
        node_t *nd = &s->nodes[1 + (k - 1 + i) % s->n];
        if (nd->up)
            return nd;
    }
    return NULL;
}

static node_t *current_leader(sim_t *s)
{
    node_t *best = NULL;
    for (int i = 1; i <= s->n; i++) {
        node_t *nd = &s->nodes[i];
        if (nd->up && cairn_raft_role(nd->r) == CAIRN_RAFT_LEADER &&
            (!best || cairn_raft_term(nd->r) > cairn_raft_term(best->r)))
            best = nd;
    }
    return best;
}

static void propose(sim_t *s, node_t *nd)
{
    uint64_t pid = ++s->next_pid;
    size_t len = 8 + (size_t)below(s, 40);
    uint8_t buf[64];
    fill_payload(buf, pid, len);
    uint64_t idx = 0;
    int rc = cairn_raft_propose(nd->r, buf, len, &idx);
    trace(s, "propose pid %llu at %llu: %d idx %llu", ULL(pid), ULL(nd->id), rc, ULL(idx));
    CHECK(s, rc == 0 || rc == CAIRN_ENOT_LEADER || rc == CAIRN_ESTATE, "propose at %llu: %s", ULL(nd->id),
          cairn_strerror(rc));
    drain(s, nd);
}

/* A membership change on the leader (thesis ch. 4): the cluster grows from its initial size
 * towards 5 voters with learners on the way, and shrinks back, one change at a time. */
static void propose_conf(sim_t *s, node_t *l)
{
    const uint64_t *v, *lr;
    size_t nv = cairn_raft_voters(l->r, &v), nl = cairn_raft_learners(l->r, &lr);
    uint64_t fresh = 0;
    for (int i = s->n_init + 1; i <= s->n && !fresh; i++) {
        node_t *nd = &s->nodes[i];
        int member = 0;
        for (size_t k = 0; k < nv; k++)
            member |= v[k] == nd->id;
        for (size_t k = 0; k < nl; k++)
            member |= lr[k] == nd->id;
        if (!nd->retired && !nd->retire_at && !member)
            fresh = nd->id;
    }
    uint8_t op;
    uint64_t id;
    uint64_t pick = below(s, 100);
    if (nl && pick < 45) {
        op = pick < 35 ? CAIRN_RAFT_CONF_PROMOTE : CAIRN_RAFT_CONF_REMOVE;
        id = lr[below(s, nl)];
    } else if (fresh && nv + nl < 6 && (nv < 5 || pick < 60) && pick < 80) {
        op = pick < 70 ? CAIRN_RAFT_CONF_ADD_LEARNER : CAIRN_RAFT_CONF_ADD_VOTER;
        id = fresh;
    } else if (nv >= 4 || (nv == 3 && pick >= 95)) {
        op = CAIRN_RAFT_CONF_REMOVE;
        id = v[below(s, nv)]; /* sometimes the leader itself (thesis §4.2.2) */
    } else {
        op = CAIRN_RAFT_CONF_UPDATE;
        id = v[below(s, nv)];
    }
    uint64_t pid = ++s->next_pid, idx = 0;
    uint8_t buf[9 + 32];
    size_t len = fill_conf(buf, op, id, pid, 8 + (size_t)below(s, 24));
    s->ev++;
    int rc = cairn_raft_propose_conf_ctx(l->r, op, id, buf + 9, len - 9, &idx);
    trace(s, "conf change at %llu: op %d node %llu: %d idx %llu", ULL(l->id), op, ULL(id), rc, ULL(idx));
    CHECK(s, rc == 0 || rc == CAIRN_ESTATE || (rc == CAIRN_EAGAIN && op == CAIRN_RAFT_CONF_PROMOTE),
          "propose_conf(op %d, node %llu) at %llu: %s", op, ULL(id), ULL(l->id), cairn_strerror(rc));
    if (rc == 0) {
        s->n_confs++;
        CHECK(s, cairn_raft_pending_conf_index(l->r) == idx, "node %llu: the change at %llu is not pending",
              ULL(l->id), ULL(idx));
        CHECK(s, cairn_raft_propose_conf(l->r, CAIRN_RAFT_CONF_UPDATE, l->id) == CAIRN_ESTATE ||
                     cairn_raft_role(l->r) != CAIRN_RAFT_LEADER,
              "node %llu: a second change while one is uncommitted", ULL(l->id));
        node_t *nd = &s->nodes[id];
        if (!nd->exists) {
            /* The new member starts with an empty disk (etcd: member add, then start it). */
            trace(s, "start new member %llu", ULL(id));
            node_start(s, nd);
            drain(s, nd);
        }
    }
    drain(s, l);
    check_all(s);
}

static void read_index(sim_t *s, node_t *nd)
{
    if (s->reads_n == s->reads_cap) {
        s->reads_cap = s->reads_cap ? s->reads_cap * 2 : 256;
        s->reads = xrealloc(s->reads, s->reads_cap * sizeof *s->reads);
    }
    /* Everything any member has reported committed so far must be visible to this read. */
    s->reads[s->reads_n++] = (readreq_t){.node = nd->id, .required = s->committed.n};
    uint64_t ctx = s->reads_n;
    int rc = cairn_raft_read_index(nd->r, ctx);
    trace(s, "read %llu at %llu (required %llu): %d", ULL(ctx), ULL(nd->id), ULL(s->committed.n), rc);
    CHECK(s, rc == 0, "read_index: %s", cairn_strerror(rc));
    drain(s, nd);
}

static void deliver(sim_t *s, flight_t *f)
{
    cairn_raft_msg_t *m = &f->c.m;
    node_t *to = m->to >= 1 && m->to <= (uint64_t)s->n ? &s->nodes[m->to] : NULL;
    if (to && to->up && s->grp[m->from] == s->grp[m->to]) {
        int rc = cairn_raft_step(to->r, m);
        trace(s, "deliver type %d %llu->%llu term %llu idx %llu lt %llu n %zu commit %llu rej %d hint %llu ctx %llu: %d",
              m->type, ULL(m->from), ULL(m->to), ULL(m->term), ULL(m->index), ULL(m->log_term), m->n_entries,
              ULL(m->commit), m->reject, ULL(m->reject_hint), ULL(m->context), rc);
        /* Messages from correct cores are never malformed. */
        CHECK(s, rc == 0 || rc == CAIRN_ENOT_LEADER || rc == CAIRN_ESTATE, "node %llu refused a message of type %d: %s",
              ULL(m->to), m->type, cairn_strerror(rc));
        drain(s, to);
    }
    free(f->c.blk);
}

/* ---- one scenario ----------------------------------------------------------------------------- */

static void sim_setup(sim_t *s, uint64_t seed, int n)
{
    memset(s, 0, sizeof *s);
    s->seed = seed;
    s->rng = mix64(seed ^ 0x5eed5eed5eedULL);
    s->n = s->n_init = n;
    const char *tr = getenv("CAIRN_SIM_TRACE");
    s->trace = tr && *tr && *tr != '0';
    s->pre_vote = (int)below(s, 2);
    s->check_quorum = (int)below(s, 2);
    s->hb = chance(s, 0.2) ? 2 : 1;
    s->max_inflight = 1 + (size_t)below(s, 8);
    s->max_msg_bytes = chance(s, 0.3) ? 1 : 16 + (size_t)below(s, 400);
    s->p_drop = chance(s, 0.2) ? 0 : rndf(s) * 0.2;
    s->p_dup = rndf(s) * 0.1;
    s->p_long = rndf(s) * 0.03;
    s->dmax = 2 + (int)below(s, 30);
    s->p_prop = 0.01 + rndf(s) * 0.1;
    s->p_read = 0.005 + rndf(s) * 0.04;
    s->p_part = rndf(s) * 0.003;
    s->p_heal = 0.002 + rndf(s) * 0.01;
    s->p_crash = rndf(s) * 0.002;
    s->p_restart = 0.003 + rndf(s) * 0.02;
    s->p_transfer = rndf(s) * 0.002;
    s->p_persist = 0.05 + rndf(s) * 0.5;
    s->p_skip = rndf(s) * 0.05;
    s->chaos_units = 1500 + below(s, 2500);
    /* Compaction in most seeds, from "after every entry" to rarely; snapshot transfers that
     * take from a moment to many heartbeats, and sometimes fail. */
    s->p_compact = chance(s, 0.25) ? 0 : 0.001 + rndf(s) * 0.02;
    s->compact_gap = 1 + below(s, 20);
    s->inst_dmax = 1 + (int)below(s, 400);
    s->p_inst_fail = rndf(s) * 0.3;
    /* Membership changes in a share of the seeds (one member never changes: its own test). */
    s->membership = n > 1 && chance(s, 0.35);
    s->p_conf = s->membership ? 0.002 + rndf(s) * 0.01 : 0;
    /* Profiles that push harder on one kind of fault. */
    switch (below(s, 4)) {
    case 1: /* crash storm on a slow disk: loses unpersisted state often */
        s->p_crash = 0.003 + rndf(s) * 0.02;
        s->p_restart = 0.02 + rndf(s) * 0.1;
        s->p_persist = 0.02 + rndf(s) * 0.15;
        break;
    case 2: /* partitions come and go quickly */
        s->p_part = 0.005 + rndf(s) * 0.02;
        s->p_heal = 0.005 + rndf(s) * 0.02;
        break;
    case 3: /* a bad network */
        s->p_drop = 0.1 + rndf(s) * 0.3;
        s->p_dup = rndf(s) * 0.3;
        s->p_long = rndf(s) * 0.1;
        break;
    default:
        break;
    }
    if (s->membership)
        s->n = MAXN; /* spare ids for the members to add */
    s->init_mem.nv = (size_t)n;
    for (int i = 1; i <= n; i++)
        s->init_mem.ids[i - 1] = (uint64_t)i;
    for (int i = 1; i <= s->n; i++) {
        s->nodes[i].id = (uint64_t)i;
        s->nodes[i].phase = (int)below(s, UNITS_PER_TICK);
    }
    for (int i = 1; i <= n; i++)
        node_start(s, &s->nodes[i]);
}

static void sim_free(sim_t *s)
{
    for (int i = 1; i <= MAXN; i++) {
        node_t *nd = &s->nodes[i];
        cairn_raft_destroy(&nd->r);
        wq_clear(nd);
        free(nd->wq);
        slog_free(&nd->dlog);
        slog_free(&nd->mlog);
        free(nd->confs);
        free(nd->sm);
        free(nd->dsnap.sm);
    }
    while (s->hn) {
        flight_t f = heap_pop(s);
        free(f.c.blk);
    }
    free(s->heap);
    free(s->leader_of_term);
    slog_free(&s->committed);
    slog_free(&s->applied_at);
    free(s->cm);
    free(s->lm);
    free(s->reads);
}

static void heal(sim_t *s)
{
    for (int i = 0; i <= MAXN; i++)
        s->grp[i] = 0;
}

static void chaos_events(sim_t *s)
{
    if (chance(s, s->p_part)) {
        s->ev++;
        if (chance(s, 0.5)) {
            int k = 1 + (int)below(s, (uint64_t)s->n);
            heal(s);
            s->grp[k] = 1;
            trace(s, "isolate %d", k);
        } else {
            for (int i = 1; i <= s->n; i++)
                s->grp[i] = (int)below(s, 2);
            trace(s, "partition");
        }
        check_all(s);
    }
    if (chance(s, s->p_heal)) {
        s->ev++;
        trace(s, "heal");
        heal(s);
    }
    if (chance(s, s->p_crash)) {
        node_t *nd = random_up(s);
        if (nd) {
            s->ev++;
            node_crash(s, nd);
            check_all(s);
        }
    }
    if (chance(s, s->p_restart)) {
        for (int i = 1; i <= s->n; i++) {
            node_t *nd = &s->nodes[i];
            if (!nd->up && nd->exists && !nd->retired) {
                s->ev++;
                trace(s, "restart %llu", ULL(nd->id));
                node_start(s, nd);
                drain(s, nd);
                check_all(s);
                break;
            }
        }
    }
    if (chance(s, s->p_transfer)) {
        node_t *l = current_leader(s);
        if (l) {
            s->ev++;
            const uint64_t *v;
            size_t nv = cairn_raft_voters(l->r, &v);
            uint64_t to = v[below(s, nv)];
            int rc = cairn_raft_transfer_leader(l->r, to);
            trace(s, "transfer %llu -> %llu: %d", ULL(l->id), ULL(to), rc);
            CHECK(s, rc == 0, "transfer_leader: %s", cairn_strerror(rc));
            drain(s, l);
            check_all(s);
        }
    }
    if (chance(s, s->p_conf)) {
        node_t *l = current_leader(s);
        if (l)
            propose_conf(s, l);
    }
}

/* What every member looks like, for a liveness failure's report. */
static void dump_nodes(sim_t *s)
{
    for (int i = 1; i <= s->n; i++) {
        node_t *nd = &s->nodes[i];
        if (!nd->exists) {
            fprintf(stderr, "  node %d: never started\n", i);
            continue;
        }
        if (!nd->up) {
            fprintf(stderr, "  node %d: down%s\n", i, nd->retired ? " (retired)" : "");
            continue;
        }
        const uint64_t *v, *l;
        size_t nv = cairn_raft_voters(nd->r, &v), nl = cairn_raft_learners(nd->r, &l);
        char m[128];
        arrays_str(v, nv, l, nl, m, sizeof m);
        fprintf(stderr,
                "  node %d: role %d term %llu leader %llu commit %llu last %llu snap %llu applied %llu pending conf "
                "%llu membership %s%s\n",
                i, cairn_raft_role(nd->r), ULL(cairn_raft_term(nd->r)), ULL(cairn_raft_leader(nd->r)),
                ULL(cairn_raft_commit(nd->r)), ULL(cairn_raft_last_index(nd->r)),
                ULL(cairn_raft_snapshot_index(nd->r)), ULL(nd->applied), ULL(cairn_raft_pending_conf_index(nd->r)), m,
                nd->inst.active ? " installing" : "");
    }
    char m[128];
    smem_str(model_at(s, s->committed.n), m, sizeof m);
    fprintf(stderr, "  committed: %llu, membership %s; pre_vote %d check_quorum %d\n", ULL(s->committed.n), m,
            s->pre_vote, s->check_quorum);
}

/* Liveness, after healing: a leader every member of its configuration follows, then a proposal
 * applied by every member. */
static int members_ok(sim_t *s, node_t *l, int applied)
{
    const uint64_t *v, *lr;
    size_t nv = cairn_raft_voters(l->r, &v), nl = cairn_raft_learners(l->r, &lr);
    for (size_t k = 0; k < nv + nl; k++) {
        uint64_t id = k < nv ? v[k] : lr[k - nv];
        node_t *nd = id >= 1 && id <= (uint64_t)s->n ? &s->nodes[id] : NULL;
        /* (a stale leader's configuration may still name a member that has left) */
        if (!nd || !nd->up || (applied ? nd->applied < s->live_index : cairn_raft_leader(nd->r) != l->id))
            return 0;
    }
    return 1;
}

static int live_done(sim_t *s)
{
    node_t *l = current_leader(s);
    return s->live_index && l && members_ok(s, l, 1);
}

static void live_step(sim_t *s)
{
    node_t *l = current_leader(s);
    if (!l || s->live_index || !members_ok(s, l, 0))
        return;
    if (!s->leader_units)
        s->leader_units = s->now - s->chaos_units + 1;
    /* Propose (again, if a leader change lost the previous one) every few ticks. */
    if (s->last_live_prop && s->now - s->last_live_prop < 20 * UNITS_PER_TICK)
        return;
    s->last_live_prop = s->now;
    if (!s->live_first_pid)
        s->live_first_pid = s->next_pid + 1;
    s->ev++;
    propose(s, l);
    check_all(s);
}

static void run_seed(sim_t *s)
{
    for (s->now = 0;; s->now++) {
        if (s->now == s->chaos_units) {
            /* Heal: no more faults, every member back, a quick disk. */
            s->ev++;
            trace(s, "heal all, restart all");
            heal(s);
            s->p_drop = s->p_dup = s->p_long = s->p_inst_fail = 0;
            s->dmax = s->dmax < 10 ? s->dmax : 10;
            s->inst_dmax = s->inst_dmax < 100 ? s->inst_dmax : 100;
            s->p_persist = 0.5;
            s->p_skip = 0;
            for (int i = 1; i <= s->n; i++)
                if (!s->nodes[i].up && s->nodes[i].exists && !s->nodes[i].retired) {
                    node_start(s, &s->nodes[i]);
                    drain(s, &s->nodes[i]);
                }
            check_all(s);
        }
        int chaos = s->now < s->chaos_units;
        for (int i = 1; i <= s->n; i++) {
            node_t *nd = &s->nodes[i];
            if (!nd->up || (s->now % UNITS_PER_TICK) != (uint64_t)nd->phase || chance(s, s->p_skip))
                continue;
            s->ev++;
            cairn_raft_tick(nd->r);
            drain(s, nd);
            check_all(s);
        }
        while (s->hn && s->heap[0].at <= s->now) {
            flight_t f = heap_pop(s);
            s->ev++;
            deliver(s, &f);
            check_all(s);
        }
        for (int i = 1; i <= s->n; i++) {
            node_t *nd = &s->nodes[i];
            if (nd->retire_at && s->now >= nd->retire_at)
                retire(s, nd);
            if (!nd->up)
                continue;
            if (nd->wq_n && chance(s, s->p_persist)) {
                s->ev++;
                size_t nb = chance(s, 0.5) ? nd->wq_n : 1 + (size_t)below(s, nd->wq_n);
                trace(s, "persist %llu: %zu of %zu writes", ULL(nd->id), nb, nd->wq_n);
                persist(s, nd, nb);
                check_all(s);
            }
            install_step(s, nd);
            if (chance(s, s->p_compact))
                compact(s, nd);
        }
        if (chance(s, s->p_prop)) {
            node_t *nd = random_up(s);
            if (nd) {
                s->ev++;
                propose(s, nd);
                check_all(s);
            }
        }
        if (chance(s, s->p_read)) {
            node_t *nd = random_up(s);
            if (nd) {
                s->ev++;
                read_index(s, nd);
                check_all(s);
            }
        }
        if (chaos) {
            chaos_events(s);
            continue;
        }
        live_step(s);
        if (live_done(s)) {
            s->live_units = s->now - s->chaos_units;
            return;
        }
        if (!(s->leader_units || s->now < s->chaos_units + LEADER_BOUND) || s->now >= s->chaos_units + LIVE_BOUND)
            dump_nodes(s);
        CHECK(s, s->leader_units || s->now < s->chaos_units + LEADER_BOUND,
              "liveness: no leader followed by every member within %d units of healing", LEADER_BOUND);
        CHECK(s, s->now < s->chaos_units + LIVE_BOUND,
              "liveness: no proposal committed on every member within %d units of healing (leader %llu, live index "
              "%llu)",
              LIVE_BOUND, ULL(current_leader(s) ? current_leader(s)->id : 0), ULL(s->live_index));
    }
}

/* ---- drivers ---------------------------------------------------------------------------------- */

typedef struct {
    uint64_t seeds, commits, reads_ok, reads_fail, leaders, crashes, msgs, live_max, leader_max, compactions,
        installs, inst_failed, inst_crashed, confs, retired, membership_seeds, leader_max_seed, live_max_seed;
} totals_t;

/* A crash (segfault, abort, sanitizer report) must still name its seed. */
static sim_t *volatile g_sim;

static void put_u64(char *buf, size_t *k, uint64_t v)
{
    char t[24];
    int n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        buf[(*k)++] = t[--n];
}

static void report_crash(void)
{
    sim_t *s = g_sim;
    if (!s)
        return;
    char buf[160];
    size_t k = 0;
    const char *a = "\nraft sim CRASHED: seed=", *b = " event=", *c = "\n  replay: CAIRN_SIM_SEED=";
    for (const char *p = a; *p; p++)
        buf[k++] = *p;
    put_u64(buf, &k, s->seed);
    for (const char *p = b; *p; p++)
        buf[k++] = *p;
    put_u64(buf, &k, s->ev);
    for (const char *p = c; *p; p++)
        buf[k++] = *p;
    put_u64(buf, &k, s->seed);
    buf[k++] = '\n';
    (void)!write(2, buf, k);
}

static void on_crash(int sig)
{
    report_crash();
    signal(sig, SIG_DFL);
    raise(sig);
}

extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static const int crash_sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
static void (*prev_handlers[sizeof crash_sigs / sizeof crash_sigs[0]])(int);

static void install_crash_report(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    for (size_t i = 0; i < sizeof crash_sigs / sizeof crash_sigs[0]; i++)
        prev_handlers[i] = signal(crash_sigs[i], on_crash);
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(report_crash);
}

/* A failed seed is an assertion, not a crash: give Criterion its own handlers back first. */
static void fail_seed(const char *msg)
{
    for (size_t i = 0; i < sizeof crash_sigs / sizeof crash_sigs[0]; i++)
        signal(crash_sigs[i], prev_handlers[i] == SIG_ERR ? SIG_DFL : prev_handlers[i]);
    cr_assert_fail("%s", msg);
}

/* Runs one seed; returns 0 or fills msg. */
static int sim_one(uint64_t seed, int n, totals_t *tot, char *msg, size_t msglen)
{
    static sim_t s; /* large; static keeps it off the stack (tests run one at a time) */
    volatile int failed = 0;
    install_crash_report();
    g_sim = &s;
    if (setjmp(sim_jb) == 0) {
        sim_setup(&s, seed, n);
        run_seed(&s);
    } else {
        failed = 1;
        snprintf(msg, msglen, "%s", s.err);
    }
    g_sim = NULL;
    tot->seeds++;
    tot->commits += s.n_commits;
    tot->reads_ok += s.n_reads_ok;
    tot->reads_fail += s.n_reads_fail;
    tot->leaders += s.n_leaders;
    tot->crashes += s.n_crashes;
    tot->msgs += s.n_msgs;
    tot->compactions += s.n_compactions;
    tot->installs += s.n_installs;
    tot->inst_failed += s.n_inst_failed;
    tot->inst_crashed += s.n_inst_crashed;
    tot->confs += s.n_confs;
    tot->retired += s.n_retired;
    tot->membership_seeds += (uint64_t)s.membership;
    if (s.leader_units > tot->leader_max) {
        tot->leader_max = s.leader_units;
        tot->leader_max_seed = seed;
    }
    if (s.live_units > tot->live_max) {
        tot->live_max = s.live_units;
        tot->live_max_seed = seed;
    }
    sim_free(&s);
    return failed;
}

static uint64_t env_u64(const char *name, uint64_t def)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : def;
}

#define SINGLE_FIRST_SEED 1000000000ULL

/* Seeds pick their cluster size: odd seeds run 5 members, even seeds 3 (single-voter
 * clusters have their own test), so CAIRN_SIM_SEED=<n> replays exactly. */
static int size_of_seed(uint64_t seed, int base) { return base == 1 ? 1 : (seed & 1) ? 5 : 3; }

static void run_many(int base, uint64_t first_seed, uint64_t def_seeds)
{
    totals_t tot = {0};
    char msg[1024];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    const char *one = getenv("CAIRN_SIM_SEED");
    if (one && *one) {
        uint64_t seed = strtoull(one, NULL, 10);
        if ((base == 1) != (seed >= SINGLE_FIRST_SEED))
            return; /* the seed belongs to the other test */
        if (sim_one(seed, size_of_seed(seed, base), &tot, msg, sizeof msg))
            fail_seed(msg);
        fprintf(stderr,
                "raft sim: seed %llu ok: %llu commits, %llu reads, %llu leaders, %llu crashes, %llu compactions, "
                "%llu snapshots installed (%llu failed), %llu membership changes, %llu members removed\n",
                ULL(seed), ULL(tot.commits), ULL(tot.reads_ok), ULL(tot.leaders), ULL(tot.crashes),
                ULL(tot.compactions), ULL(tot.installs), ULL(tot.inst_failed), ULL(tot.confs), ULL(tot.retired));
        return;
    }
    uint64_t nseeds = env_u64("CAIRN_SIM_SEEDS", def_seeds);
    first_seed += env_u64("CAIRN_SIM_FIRST_SEED", 0); /* an offset: hunt in other seed ranges */
    for (uint64_t i = 0; i < nseeds; i++) {
        uint64_t seed = first_seed + i;
        if (sim_one(seed, size_of_seed(seed, base), &tot, msg, sizeof msg))
            fail_seed(msg);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double sec = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    fprintf(stderr,
            "raft sim (%s): %llu seeds in %.2fs (%.0f seeds/s): %llu commits, %llu reads served, %llu failed, "
            "%llu leaders, %llu crashes, %llu messages, %llu compactions, %llu snapshots installed (%llu failed, "
            "%llu cut by a crash), %llu membership changes in %llu seeds, %llu members removed; after healing: "
            "leader within %llu ticks (seed %llu), commit everywhere within %llu ticks (seed %llu)\n",
            base == 1 ? "1 member" : "3/5 members", ULL(tot.seeds), sec, (double)tot.seeds / sec, ULL(tot.commits),
            ULL(tot.reads_ok), ULL(tot.reads_fail), ULL(tot.leaders), ULL(tot.crashes), ULL(tot.msgs),
            ULL(tot.compactions), ULL(tot.installs), ULL(tot.inst_failed), ULL(tot.inst_crashed), ULL(tot.confs),
            ULL(tot.membership_seeds),
            ULL(tot.retired), ULL(tot.leader_max / UNITS_PER_TICK), ULL(tot.leader_max_seed),
            ULL(tot.live_max / UNITS_PER_TICK), ULL(tot.live_max_seed));
    cr_assert_gt(tot.commits, tot.seeds, "the scenarios commit entries");
    cr_assert_gt(tot.reads_ok, 0, "the scenarios serve reads");
    cr_assert_gt(tot.compactions, 0, "the scenarios compact");
    if (base != 1 && tot.seeds >= 200) {
        cr_assert_gt(tot.installs, 0, "the scenarios install snapshots");
        cr_assert_gt(tot.confs, 0, "the scenarios change membership");
        cr_assert_gt(tot.retired, 0, "the scenarios remove members");
    }
}

/* Seeds 1.. : 3- and 5-member clusters. */
Test(raft_sim, clusters_of_3_and_5, .timeout = 600) { run_many(3, 1, 10000); }

/* Seeds 1000000000.. : one member with crashes, the path the single-node product takes. */
Test(raft_sim, single_member, .timeout = 600) { run_many(1, SINGLE_FIRST_SEED, 2000); }
