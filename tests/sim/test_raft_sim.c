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
 *     the durable hard state and log, exactly as raftd does from stored.
 * Random proposals and ReadIndex requests run throughout; leadership transfers too.
 *
 * After every event (a tick, a delivery, a persist, a crash, a request) the simulation checks:
 *   Election Safety      at most one leader per term, over the whole run (Raft §5.2);
 *   Log Matching         same index and term => same entry and same prefix, on durable logs
 *                        (each durable entry carries a hash of its prefix; a table maps
 *                        (index, term) to the first prefix hash seen) (Raft §5.3);
 *   Leader Completeness  a new leader's log holds every entry known committed, and so does
 *                        every leader of a later term when an entry becomes known committed
 *                        (Raft §5.4);
 *   State Machine Safety no two members apply different entries at one index (Raft §5.4.3);
 *   committed entries are never overwritten, durable votes are never changed within a term;
 *   ReadIndex            a read state's index is >= the highest commit index any member had
 *                        reported when the read was asked (thesis §6.4), and is itself
 *                        committed.
 * Then the network heals, every member restarts, and a leader must emerge and a proposal must
 * commit on every member within a bounded simulated time (liveness).
 *
 * Every failure prints its seed and event number. Environment:
 *   CAIRN_SIM_SEEDS=<n>   number of seeds per test (defaults: 10000 for 3/5 members, 2000 for
 *                         one member; about 12 s in a release build, under a minute with ASan)
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

#define MAXN 5
#define UNITS_PER_TICK 10
#define ELECTION_TICK 10
/* Liveness bound after healing, in units: restarts, elections with split votes, catching up
 * a lagging member entry by entry with small max_msg_bytes. */
#define LIVE_BOUND 6000
/* After healing, a leader every member follows must appear within this many units. */
#define LEADER_BOUND 1500

/* ---- records ------------------------------------------------------------------------------- */

/* One log entry as the simulation sees it: the payload is identified by its pid. */
typedef struct {
    uint64_t term, pid, h; /* h: hash of the prefix ending here (durable logs only) */
    uint32_t len;
    uint8_t type;
} sent_t;

typedef struct {
    sent_t *v; /* index i at v[i-1] */
    size_t n, cap;
} slog_t;

typedef struct {
    cairn_raft_msg_t m;
    void *blk; /* owns m.entries and their data */
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
    int up;
    uint64_t boot;
    cairn_raft_hardstate_t dhs; /* durable */
    slog_t dlog;                /* durable */
    slog_t mlog;                /* mirror of the core's in-memory log */
    batch_t *wq;
    size_t wq_n, wq_cap;
    uint64_t stable;  /* what we reported through cairn_raft_persisted() */
    uint64_t commit;  /* last ready's commit index */
    uint64_t applied; /* state machine (volatile) */
    uint64_t term_seen, led_term;
    int phase;
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
    uint64_t seed, rng, ev, now;
    int trace;
    int n;
    node_t nodes[MAXN + 1];
    uint64_t ids[MAXN];
    /* scenario */
    int pre_vote, check_quorum, hb;
    size_t max_inflight, max_msg_bytes;
    double p_drop, p_dup, p_long, p_prop, p_read, p_part, p_heal, p_crash, p_restart, p_transfer, p_persist,
        p_skip;
    int dmax;
    uint64_t chaos_units;
    int chaos;
    int grp[MAXN + 1];
    /* network: a binary min-heap on (at, key); the random key reorders same-time arrivals */
    flight_t *heap;
    size_t hn, hcap;
    uint64_t nkeys;
    /* global records */
    uint64_t *leader_of_term;
    size_t lot_cap;
    slog_t committed;  /* every entry any member reported committed */
    slog_t applied_at; /* the entry first applied at each index */
    lm_slot_t *lm;     /* (index, term) -> prefix hash */
    size_t lm_n, lm_cap;
    readreq_t *reads;
    size_t reads_n, reads_cap;
    uint64_t next_pid;
    uint64_t live_first_pid, live_index, last_live_prop, leader_units;
    /* stats */
    uint64_t n_commits, n_reads_ok, n_reads_fail, n_leaders, n_crashes, n_msgs, live_units;
    jmp_buf jb;
    char err[1024];
} sim_t;

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
    longjmp(s->jb, 1);
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

static void slog_free(slog_t *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int same_entry(const sent_t *a, const sent_t *b)
{
    return a->term == b->term && a->pid == b->pid && a->type == b->type && a->len == b->len;
}

/* ---- payloads: 8-byte pid + a pattern derived from it, so corruption is detectable -------- */

static void fill_payload(uint8_t *p, uint64_t pid, size_t len)
{
    for (size_t i = 0; i < 8 && i < len; i++)
        p[i] = (uint8_t)(pid >> (8 * i));
    for (size_t i = 8; i < len; i++)
        p[i] = (uint8_t)(pid * 131 + i);
}

static sent_t parse_entry(sim_t *s, uint64_t node, const cairn_raft_entry_t *e)
{
    sent_t x = {.term = e->term, .type = e->type, .len = (uint32_t)e->len};
    if (e->type == CAIRN_RAFT_ENTRY_EMPTY) {
        CHECK(s, e->len == 0, "node %llu: empty entry %llu with %zu bytes", (unsigned long long)node,
              (unsigned long long)e->index, e->len);
        return x;
    }
    CHECK(s, e->type == CAIRN_RAFT_ENTRY_NORMAL && e->len >= 8 && e->data, "node %llu: bad entry %llu",
          (unsigned long long)node, (unsigned long long)e->index);
    for (size_t i = 0; i < 8; i++)
        x.pid |= (uint64_t)e->data[i] << (8 * i);
    for (size_t i = 8; i < e->len; i++)
        CHECK(s, e->data[i] == (uint8_t)(x.pid * 131 + i), "node %llu: entry %llu data corrupt",
              (unsigned long long)node, (unsigned long long)e->index);
    return x;
}

/* ---- messages ------------------------------------------------------------------------------- */

static cmsg_t msg_copy(const cairn_raft_msg_t *m)
{
    cmsg_t c = {.m = *m};
    if (m->n_entries) {
        size_t bytes = m->n_entries * sizeof(cairn_raft_entry_t);
        for (size_t i = 0; i < m->n_entries; i++)
            bytes += m->entries[i].len;
        uint8_t *blk = xrealloc(NULL, bytes);
        cairn_raft_entry_t *e = (cairn_raft_entry_t *)blk;
        uint8_t *d = blk + m->n_entries * sizeof *e;
        for (size_t i = 0; i < m->n_entries; i++) {
            e[i] = m->entries[i];
            if (e[i].len) {
                memcpy(d, m->entries[i].data, e[i].len);
                e[i].data = d;
                d += e[i].len;
            }
        }
        c.blk = blk;
        c.m.entries = e;
    } else {
        c.m.entries = NULL;
    }
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
            CHECK(s, s->lm[j].h == e->h, "Log Matching: node %llu durable entry (%llu, term %llu) has a different "
                  "prefix than another log's", (unsigned long long)node, (unsigned long long)idx,
                  (unsigned long long)e->term);
            return;
        }
        j = (j + 1) & (s->lm_cap - 1);
    }
    s->lm[j] = (lm_slot_t){idx, e->term, e->h};
    s->lm_n++;
}

static void check_leader_complete(sim_t *s, node_t *nd, uint64_t from, uint64_t to)
{
    for (uint64_t i = from; i <= to; i++) {
        CHECK(s, i <= nd->mlog.n && same_entry(&nd->mlog.v[i - 1], &s->committed.v[i - 1]),
              "Leader Completeness: leader %llu (term %llu) lacks committed entry %llu", (unsigned long long)nd->id,
              (unsigned long long)cairn_raft_term(nd->r), (unsigned long long)i);
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
              (unsigned long long)s->leader_of_term[t], (unsigned long long)nd->id, (unsigned long long)t);
    }
}

/* ---- the shell: ready handling ---------------------------------------------------------------- */

static void apply_entries(sim_t *s, node_t *nd)
{
    uint64_t upto = nd->commit < nd->stable ? nd->commit : nd->stable;
    while (nd->applied < upto) {
        uint64_t i = ++nd->applied;
        CHECK(s, i <= nd->mlog.n && i <= nd->dlog.n, "node %llu applies %llu beyond its log", (unsigned long long)nd->id,
              (unsigned long long)i);
        const sent_t *e = &nd->mlog.v[i - 1];
        CHECK(s, same_entry(e, &nd->dlog.v[i - 1]), "node %llu applies entry %llu that differs from its durable copy",
              (unsigned long long)nd->id, (unsigned long long)i);
        if (i > s->applied_at.n) {
            slog_push(&s->applied_at, *e);
        } else {
            CHECK(s, same_entry(e, &s->applied_at.v[i - 1]),
                  "State Machine Safety: node %llu applies (term %llu pid %llu) at %llu, another applied (term %llu "
                  "pid %llu)",
                  (unsigned long long)nd->id, (unsigned long long)e->term, (unsigned long long)e->pid,
                  (unsigned long long)i, (unsigned long long)s->applied_at.v[i - 1].term,
                  (unsigned long long)s->applied_at.v[i - 1].pid);
        }
        if (e->pid >= s->live_first_pid && s->live_first_pid && !s->live_index)
            s->live_index = i;
    }
}

static void record_commit(sim_t *s, node_t *nd, uint64_t commit, uint64_t term)
{
    CHECK(s, commit >= nd->commit, "node %llu commit went back from %llu to %llu", (unsigned long long)nd->id,
          (unsigned long long)nd->commit, (unsigned long long)commit);
    CHECK(s, commit <= nd->mlog.n, "node %llu commit %llu beyond its log %zu", (unsigned long long)nd->id,
          (unsigned long long)commit, nd->mlog.n);
    for (uint64_t i = nd->commit + 1; i <= commit; i++) {
        const sent_t *e = &nd->mlog.v[i - 1];
        if (i <= s->committed.n) {
            CHECK(s, same_entry(e, &s->committed.v[i - 1]),
                  "node %llu commits (term %llu pid %llu) at %llu but (term %llu pid %llu) was committed there",
                  (unsigned long long)nd->id, (unsigned long long)e->term, (unsigned long long)e->pid,
                  (unsigned long long)i, (unsigned long long)s->committed.v[i - 1].term,
                  (unsigned long long)s->committed.v[i - 1].pid);
            continue;
        }
        slog_push(&s->committed, *e);
        s->n_commits++;
        /* Leader Completeness for leaders that already exist: any leader of a later term. */
        for (int k = 1; k <= s->n; k++) {
            node_t *o = &s->nodes[k];
            if (o->up && cairn_raft_role(o->r) == CAIRN_RAFT_LEADER && cairn_raft_term(o->r) > term)
                check_leader_complete(s, o, i, i);
        }
    }
    nd->commit = commit;
}

static void drain(sim_t *s, node_t *nd)
{
    while (nd->up && cairn_raft_has_ready(nd->r)) {
        cairn_raft_ready_t rd;
        cairn_raft_ready(nd->r, &rd);
        trace(s, "ready %llu: role %d term %llu vote %llu lead %llu commit %llu entries %llu..+%zu (t%llu) msgs %zu+%zu",
              (unsigned long long)nd->id, rd.role, (unsigned long long)rd.term, (unsigned long long)rd.hs.vote,
              (unsigned long long)rd.leader, (unsigned long long)rd.commit,
              (unsigned long long)(rd.n_entries ? rd.entries[0].index : 0), rd.n_entries,
              (unsigned long long)(rd.n_entries ? rd.entries[rd.n_entries - 1].term : 0), rd.n_msgs,
              rd.n_msgs_after_persist);
        CHECK(s, rd.term >= nd->term_seen, "node %llu term went back", (unsigned long long)nd->id);
        nd->term_seen = rd.term;
        CHECK(s, rd.hs.term == rd.term && rd.hs.commit == rd.commit, "node %llu ready hs/soft state disagree",
              (unsigned long long)nd->id);

        /* Entries: mirror the core's log, and queue them for the disk. */
        batch_t b = {.has_hs = rd.hs_changed, .hs = rd.hs};
        if (rd.n_entries) {
            uint64_t first = rd.entries[0].index;
            CHECK(s, first >= 1 && first <= nd->mlog.n + 1, "node %llu: ready entries start at %llu, log ends at %zu",
                  (unsigned long long)nd->id, (unsigned long long)first, nd->mlog.n);
            CHECK(s, first > nd->commit, "node %llu: ready overwrites committed index %llu (commit %llu)",
                  (unsigned long long)nd->id, (unsigned long long)first, (unsigned long long)nd->commit);
            nd->mlog.n = first - 1;
            if (nd->stable >= first)
                nd->stable = first - 1;
            b.first = first;
            b.n = rd.n_entries;
            b.ents = xrealloc(NULL, rd.n_entries * sizeof *b.ents);
            for (size_t i = 0; i < rd.n_entries; i++) {
                CHECK(s, rd.entries[i].index == first + i, "node %llu: ready entries not contiguous",
                      (unsigned long long)nd->id);
                CHECK(s, rd.entries[i].term <= rd.term, "node %llu: entry term above its term", (unsigned long long)nd->id);
                sent_t e = parse_entry(s, nd->id, &rd.entries[i]);
                b.ents[i] = e;
                slog_push(&nd->mlog, e);
            }
        }
        CHECK(s, nd->mlog.n == cairn_raft_last_index(nd->r), "node %llu: mirror %zu != core last %llu",
              (unsigned long long)nd->id, nd->mlog.n, (unsigned long long)cairn_raft_last_index(nd->r));
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
            CHECK(s, ctx >= 1 && ctx <= s->reads_n, "node %llu: read state for unknown context %llu",
                  (unsigned long long)nd->id, (unsigned long long)ctx);
            readreq_t *q = &s->reads[ctx - 1];
            CHECK(s, q->node == nd->id && q->state == 0, "node %llu: read %llu answered twice or by the wrong node",
                  (unsigned long long)nd->id, (unsigned long long)ctx);
            CHECK(s, idx >= q->required,
                  "ReadIndex: read %llu got index %llu but %llu was committed before it was asked",
                  (unsigned long long)ctx, (unsigned long long)idx, (unsigned long long)q->required);
            CHECK(s, idx <= s->committed.n, "ReadIndex: read %llu index %llu is not committed (%zu)",
                  (unsigned long long)ctx, (unsigned long long)idx, s->committed.n);
            q->state = 1;
            s->n_reads_ok++;
        }
        for (size_t i = 0; i < rd.n_read_failures; i++) {
            uint64_t ctx = rd.read_failures[i];
            CHECK(s, ctx >= 1 && ctx <= s->reads_n && s->reads[ctx - 1].node == nd->id && s->reads[ctx - 1].state == 0,
                  "node %llu: bogus read failure %llu", (unsigned long long)nd->id, (unsigned long long)ctx);
            s->reads[ctx - 1].state = 2;
            s->n_reads_fail++;
        }
        cairn_raft_advance(nd->r, &rd);
        apply_entries(s, nd);
    }
}

/* The disk: makes the first nb queued writes durable, in order. */
static void persist(sim_t *s, node_t *nd, size_t nb)
{
    int any_entries = 0;
    for (size_t k = 0; k < nb; k++) {
        batch_t *b = &nd->wq[k];
        if (b->has_hs) {
            CHECK(s, b->hs.term >= nd->dhs.term, "node %llu durable term goes back", (unsigned long long)nd->id);
            CHECK(s, !(b->hs.term == nd->dhs.term && nd->dhs.vote && b->hs.vote != nd->dhs.vote),
                  "node %llu changes its durable vote in term %llu from %llu to %llu", (unsigned long long)nd->id,
                  (unsigned long long)b->hs.term, (unsigned long long)nd->dhs.vote, (unsigned long long)b->hs.vote);
            CHECK(s, b->hs.commit >= nd->dhs.commit, "node %llu durable commit goes back", (unsigned long long)nd->id);
            nd->dhs = b->hs;
        }
        if (b->n) {
            any_entries = 1;
            CHECK(s, b->first <= nd->dlog.n + 1, "node %llu: write leaves a hole in the durable log",
                  (unsigned long long)nd->id);
            /* A committed entry this member holds must never leave its disk. (A stale leader
             * may still write entries of its own where others committed something else.) */
            for (uint64_t idx = b->first; idx <= nd->dlog.n && idx <= s->committed.n; idx++) {
                const sent_t *old = &nd->dlog.v[idx - 1];
                if (same_entry(old, &s->committed.v[idx - 1]))
                    CHECK(s, idx < b->first + b->n && same_entry(&b->ents[idx - b->first], old),
                          "node %llu removes committed entry %llu from its disk", (unsigned long long)nd->id,
                          (unsigned long long)idx);
            }
            nd->dlog.n = b->first - 1;
            for (size_t i = 0; i < b->n; i++) {
                sent_t e = b->ents[i];
                uint64_t idx = b->first + i;
                e.h = prefix_hash(idx > 1 ? nd->dlog.v[idx - 2].h : 0, &e);
                lm_check(s, nd->id, idx, &e);
                slog_push(&nd->dlog, e);
            }
        }
        CHECK(s, nd->dhs.commit <= nd->dlog.n, "node %llu durable commit %llu beyond durable log %zu",
              (unsigned long long)nd->id, (unsigned long long)nd->dhs.commit, nd->dlog.n);
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
    if (any_entries && nd->dlog.n) {
        uint64_t li = nd->dlog.n, lt = nd->dlog.v[li - 1].term;
        cairn_raft_persisted(nd->r, li, lt);
        /* Mirror the core's rule: a report for a replaced entry is stale. */
        if (li > nd->stable && li <= nd->mlog.n && nd->mlog.v[li - 1].term == lt)
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
        ents[i] = (cairn_raft_entry_t){.index = i + 1, .term = e->term, .type = e->type, .len = e->len};
        if (e->len) {
            fill_payload(d, e->pid, e->len);
            ents[i].data = d;
            d += e->len;
        }
    }
    cairn_raft_config_t c = {.id = nd->id,
                             .voters = s->ids,
                             .n_voters = (size_t)s->n,
                             .election_tick = ELECTION_TICK,
                             .heartbeat_tick = s->hb,
                             .seed = s->seed * 1000003 + nd->id * 101 + nd->boot,
                             .pre_vote = s->pre_vote,
                             .check_quorum = s->check_quorum,
                             .max_msg_bytes = s->max_msg_bytes,
                             .max_inflight = s->max_inflight,
                             .hs = nd->dhs,
                             .entries = ents,
                             .n_entries = n};
    int err = 0;
    nd->r = cairn_raft_new(&c, &err);
    free(ents);
    free(data); /* the core copied what it needs */
    CHECK(s, nd->r, "node %llu failed to restart from its durable state: %s", (unsigned long long)nd->id,
          cairn_strerror(err));
    nd->up = 1;
    nd->boot++;
    nd->mlog.n = 0;
    slog_reserve(&nd->mlog, n);
    if (n)
        memcpy(nd->mlog.v, nd->dlog.v, n * sizeof *nd->dlog.v);
    nd->mlog.n = n;
    nd->stable = n;
    nd->commit = nd->dhs.commit;
    nd->applied = 0;
    nd->term_seen = nd->dhs.term;
    nd->led_term = 0;
}

static void node_crash(sim_t *s, node_t *nd)
{
    trace(s, "crash %llu (loses %zu queued writes)", (unsigned long long)nd->id, nd->wq_n);
    cairn_raft_destroy(&nd->r);
    wq_clear(nd);
    nd->up = 0;
    s->n_crashes++;
    for (size_t i = 0; i < s->reads_n; i++)
        if (s->reads[i].node == nd->id && s->reads[i].state == 0)
            s->reads[i].state = 2;
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
    trace(s, "propose pid %llu at %llu: %d idx %llu", (unsigned long long)pid, (unsigned long long)nd->id, rc,
          (unsigned long long)idx);
    CHECK(s, rc == 0 || rc == CAIRN_ENOT_LEADER || rc == CAIRN_ESTATE, "propose at %llu: %s",
          (unsigned long long)nd->id, cairn_strerror(rc));
    drain(s, nd);
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
    trace(s, "read %llu at %llu (required %zu): %d", (unsigned long long)ctx, (unsigned long long)nd->id,
          s->committed.n, rc);
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
              m->type, (unsigned long long)m->from, (unsigned long long)m->to, (unsigned long long)m->term,
              (unsigned long long)m->index, (unsigned long long)m->log_term, m->n_entries,
              (unsigned long long)m->commit, m->reject, (unsigned long long)m->reject_hint,
              (unsigned long long)m->context, rc);
        /* Messages from correct cores are never malformed. */
        CHECK(s, rc == 0 || rc == CAIRN_ENOT_LEADER || rc == CAIRN_ESTATE, "node %llu refused a message of type %d: %s",
              (unsigned long long)m->to, m->type, cairn_strerror(rc));
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
    s->n = n;
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
    for (int i = 1; i <= n; i++) {
        s->ids[i - 1] = (uint64_t)i;
        s->nodes[i].id = (uint64_t)i;
        s->nodes[i].phase = (int)below(s, UNITS_PER_TICK);
    }
    for (int i = 1; i <= n; i++)
        node_start(s, &s->nodes[i]);
}

static void sim_free(sim_t *s)
{
    for (int i = 1; i <= s->n; i++) {
        node_t *nd = &s->nodes[i];
        cairn_raft_destroy(&nd->r);
        wq_clear(nd);
        free(nd->wq);
        slog_free(&nd->dlog);
        slog_free(&nd->mlog);
    }
    while (s->hn) {
        flight_t f = heap_pop(s);
        free(f.c.blk);
    }
    free(s->heap);
    free(s->leader_of_term);
    slog_free(&s->committed);
    slog_free(&s->applied_at);
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
            if (!nd->up) {
                s->ev++;
                trace(s, "restart %llu", (unsigned long long)nd->id);
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
            uint64_t to = 1 + below(s, (uint64_t)s->n);
            int rc = cairn_raft_transfer_leader(l->r, to);
            trace(s, "transfer %llu -> %llu: %d", (unsigned long long)l->id, (unsigned long long)to, rc);
            CHECK(s, rc == 0, "transfer_leader: %s", cairn_strerror(rc));
            drain(s, l);
            check_all(s);
        }
    }
}

/* Liveness, after healing: a leader everyone follows, then a proposal applied everywhere. */
static int live_done(sim_t *s)
{
    if (!s->live_index)
        return 0;
    for (int i = 1; i <= s->n; i++)
        if (s->nodes[i].applied < s->live_index)
            return 0;
    return 1;
}

static void live_step(sim_t *s)
{
    node_t *l = current_leader(s);
    if (!l || s->live_index)
        return;
    for (int i = 1; i <= s->n; i++)
        if (cairn_raft_leader(s->nodes[i].r) != l->id)
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
            s->p_drop = s->p_dup = s->p_long = 0;
            s->dmax = s->dmax < 10 ? s->dmax : 10;
            s->p_persist = 0.5;
            s->p_skip = 0;
            for (int i = 1; i <= s->n; i++)
                if (!s->nodes[i].up) {
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
            if (!nd->up || !nd->wq_n || !chance(s, s->p_persist))
                continue;
            s->ev++;
            size_t nb = chance(s, 0.5) ? nd->wq_n : 1 + (size_t)below(s, nd->wq_n);
            trace(s, "persist %llu: %zu of %zu writes", (unsigned long long)nd->id, nb, nd->wq_n);
            persist(s, nd, nb);
            check_all(s);
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
        CHECK(s, s->leader_units || s->now < s->chaos_units + LEADER_BOUND,
              "liveness: no leader followed by every member within %d units of healing", LEADER_BOUND);
        CHECK(s, s->now < s->chaos_units + LIVE_BOUND,
              "liveness: no proposal committed on every member within %d units of healing (leader %llu, live index "
              "%llu)",
              LIVE_BOUND, (unsigned long long)(current_leader(s) ? current_leader(s)->id : 0),
              (unsigned long long)s->live_index);
    }
}

/* ---- drivers ---------------------------------------------------------------------------------- */

typedef struct {
    uint64_t seeds, commits, reads_ok, reads_fail, leaders, crashes, msgs, live_max, leader_max;
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

static void install_crash_report(void)
{
    static int done;
    if (done)
        return;
    done = 1;
    int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], on_crash);
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(report_crash);
}

/* Runs one seed; returns 0 or fills msg. */
static int sim_one(uint64_t seed, int n, totals_t *tot, char *msg, size_t msglen)
{
    static sim_t s; /* large; static keeps it off the stack (tests run one at a time) */
    volatile int failed = 0;
    install_crash_report();
    g_sim = &s;
    if (setjmp(s.jb) == 0) {
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
    if (s.leader_units > tot->leader_max)
        tot->leader_max = s.leader_units;
    if (s.live_units > tot->live_max)
        tot->live_max = s.live_units;
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
            cr_assert_fail("%s", msg);
        fprintf(stderr, "raft sim: seed %llu ok: %llu commits, %llu reads, %llu leaders, %llu crashes\n",
                (unsigned long long)seed, (unsigned long long)tot.commits, (unsigned long long)tot.reads_ok,
                (unsigned long long)tot.leaders, (unsigned long long)tot.crashes);
        return;
    }
    uint64_t nseeds = env_u64("CAIRN_SIM_SEEDS", def_seeds);
    for (uint64_t i = 0; i < nseeds; i++) {
        uint64_t seed = first_seed + i;
        if (sim_one(seed, size_of_seed(seed, base), &tot, msg, sizeof msg))
            cr_assert_fail("%s", msg);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double sec = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    fprintf(stderr,
            "raft sim (%s): %llu seeds in %.2fs (%.0f seeds/s): %llu commits, %llu reads served, %llu failed, "
            "%llu leaders, %llu crashes, %llu messages; after healing: leader within %llu ticks, commit everywhere "
            "within %llu ticks\n",
            base == 1 ? "1 member" : "3/5 members", (unsigned long long)tot.seeds, sec, (double)tot.seeds / sec,
            (unsigned long long)tot.commits, (unsigned long long)tot.reads_ok, (unsigned long long)tot.reads_fail,
            (unsigned long long)tot.leaders, (unsigned long long)tot.crashes, (unsigned long long)tot.msgs,
            (unsigned long long)(tot.leader_max / UNITS_PER_TICK), (unsigned long long)(tot.live_max / UNITS_PER_TICK));
    cr_assert_gt(tot.commits, tot.seeds, "the scenarios commit entries");
    cr_assert_gt(tot.reads_ok, 0, "the scenarios serve reads");
}

/* Seeds 1.. : 3- and 5-member clusters. */
Test(raft_sim, clusters_of_3_and_5, .timeout = 600) { run_many(3, 1, 10000); }

/* Seeds 1000000000.. : one member with crashes, the path the single-node product takes. */
Test(raft_sim, single_member, .timeout = 600) { run_many(1, SINGLE_FIRST_SEED, 2000); }
