/* raft.c - the pure, deterministic Raft core (see raft.h for the contract with the shell).
 *
 * References: "In Search of an Understandable Consensus Algorithm" (Ongaro & Ousterhout,
 * the paper, cited as "Raft §x") and "Consensus: Bridging Theory and Practice" (Ongaro's
 * thesis, cited as "thesis §x"). The structure follows etcd-io/raft, whose behaviour is the
 * reference for the corner cases the papers leave open (flow control, fast backtracking).
 *
 * Map of this file
 *   - small vectors, the outbox and the graveyard (deferred frees, see "Memory" below)
 *   - the log: an array of entries offset by snap_index, so that compaction only has to move
 *     snap_index and shift the array
 *   - membership: configurations, the history of configuration entries in the log, and the
 *     progress set rebuilt from the current configuration
 *   - progress: per-member replication state (probe / replicate / snapshot, inflight ring)
 *   - roles: become_follower / precandidate / candidate / leader
 *   - replication, commit, read index, leadership transfer, snapshots
 *   - step: the one entry point for peer messages
 *   - ready / advance
 *
 * Configuration entries (type CAIRN_RAFT_ENTRY_CONF): their data's format is shared/cairn_entry.h's
 * (op, node id, the shell's opaque context).
 * The entry is well formed when len >= 9, op is 1..5, the id is not 0 and n is within bounds.
 * It applies to the configuration the log produced before it (the snapshot's, then every earlier
 * configuration entry in log order):
 *   ADD_VOTER    absent -> voter      learner -> voter    voter -> unchanged
 *   ADD_LEARNER  absent -> learner    learner -> unchanged voter -> ERROR (no demotion)
 *   PROMOTE      learner -> voter     voter -> unchanged   absent -> ERROR
 *   REMOVE       member -> absent     the last voter -> ERROR      absent -> ERROR
 *   UPDATE       unchanged (carries a new context, etcd's MemberUpdate)
 * and an add beyond CAIRN_RAFT_MAX_MEMBERS is an ERROR. A malformed entry or an ERROR is
 * applied as a no-op and counted (cairn_raft_conf_errors()); no input aborts. A leader's own
 * checks (cairn_raft_propose_conf) never produce an ERROR: the rules exist so that every member
 * gives the same meaning to whatever a log holds. Every member applies the same entries in the
 * same order from the same starting configuration, so they agree on the configuration at every
 * index. Voters keep the order in which they were added (learners too; a promoted learner joins
 * the end of the voters). Recovery: the configuration at any index is recomputed from the
 * snapshot's configuration and the configuration entries after it (cairn_raft_new).
 *
 * Membership changes (thesis ch. 4). SINGLE-SERVER changes (thesis §4.1): each entry adds or
 * removes at most one voter. Why not joint consensus (thesis §4.3): when two configurations
 * differ by one voter, every majority of the one overlaps every majority of the other, so no
 * intermediate joint configuration is needed to keep two leaders out of one term; the code is
 * much simpler; and it matches etcd's default of one change per ConfChange. The argument holds
 * only for one change at a time, so the leader refuses a change while the previous one is
 * uncommitted, and - the fix Ongaro posted to raft-dev in 2015 for the single-server bug -
 * until it has committed an entry of its own term (otherwise leaders of consecutive terms can
 * each append a different change and commit conflicting entries). A configuration takes effect
 * on a member as soon as its entry is APPENDED to the member's log, committed or not (thesis
 * §4.1), so truncating the entry reverts to the configuration before it. Learners (non-voting
 * members, thesis §4.2.1) receive the log and snapshots but never vote in an election, never
 * count for commit, reads or CheckQuorum, and never campaign; one is promoted only once it has
 * caught up (CAIRN_RAFT_PROMOTE_MAX_LAG). A leader that removes itself keeps leading without
 * counting itself until the removal commits, then steps down (thesis §4.2.2), handing over with
 * TimeoutNow (§3.10) to a voter that has its whole log. A node outside its own configuration
 * (removed, or joining and not yet told) never campaigns. A removed server that never learned
 * of its removal does campaign; the leader lease of §4.2.3 (a member that heard from a leader
 * within an election timeout ignores vote requests) holds it off - for candidates outside the
 * configuration always, for all candidates with CheckQuorum - so that it cannot depose leaders
 * with ever higher terms. Messages from nodes outside the
 * configuration are processed (thesis §4.1: a lagging member must accept a leader, and grant a
 * vote to a candidate, that its log does not know yet); their answers to a leader are ignored.
 *
 * Snapshots (thesis ch. 5). The state machine (stored) snapshots itself; cairn_raft_compact()
 * then drops the log up to the snapshot's index and keeps (snap_index, snap_term) and the
 * configuration there (thesis §5.1, Figure 5.1). A leader that would need a compacted entry to
 * bring a member up to date sends MSG_SNAP with the metadata only (index, term, configuration):
 * the data travels outside the core (the member's shell streams it from the leader's stored in
 * chunks), so a transfer never blocks heartbeats or other members. The member's progress goes to
 * SNAPSHOT: no appends until it acknowledges with APP_RESP, the shell reports the transfer
 * (cairn_raft_report_snapshot), or SNAP_TIMEOUT election timeouts pass and it goes back to
 * probing, which sends the snapshot again if still needed. The receiver (thesis Figure 5.3): a
 * snapshot at or below its commit index is answered at once; one whose last entry the log holds
 * only moves the commit index (Log Matching gives it the whole prefix); otherwise the ready
 * hands it to the shell (one install at a time) and, once installed, the log restarts after it
 * (the entries after it stay if the log held its last entry: Figure 5.3 step 6), the commit
 * index moves up to it, the configuration becomes the snapshot's, and the leader gets an
 * APP_RESP for its index. A crash during an install leaves the old state: the core learns of an
 * install only when it is complete.
 *
 * Memory. Everything a ready hands out is owned by the core and stays valid until advance():
 *   - ready.entries is a shallow copy (into rd_ents) of the log's unstable tail; the entry
 *     data stays in the log.
 *   - an APP message carries its own malloc'd array of entry structs whose data pointers point
 *     into the log, so a leader does not copy payloads once per follower.
 * Entry data disappears from the log by truncation (a follower overwriting a conflicting
 * suffix, Raft §5.3), by compaction, or by installing a snapshot. Such data is not freed at
 * once: it goes to the graveyard tagged with the number of the next ready. Every pointer to it
 * was created before, so it sits either in the outstanding ready or in the outbox that the next
 * ready hands out; advancing that next ready frees it. Configurations a ready hands out are
 * copies owned by the ready's buffers.
 *
 * Robustness. cairn_raft_step() validates every field it uses: a message for another node,
 * from node 0 or itself, of unknown type, with absurd indices, non-contiguous entries or a
 * malformed configuration is refused with a negative code and changes nothing. Allocation
 * failures leave the state as it was (a configuration change allocates everything it needs
 * before it touches anything). No assert() on peer input anywhere.
 */
#include "raft.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"

#define DEFAULT_ELECTION_TICK 10
#define DEFAULT_HEARTBEAT_TICK 1
#define DEFAULT_MAX_MSG_BYTES ((size_t)1 << 20)
#define DEFAULT_MAX_INFLIGHT 256
/* Bounds the entry array of one APP even when entries are empty (len 0 counts 0 bytes). */
#define MAX_ENTRIES_PER_MSG 8192
/* Reads waiting on a leader or on a forwarded answer; beyond this the oldest fail, so a
 * partitioned node cannot grow without bound while the shell's clients time out anyway. */
#define MAX_PENDING_READS 65536
#define MAX_FWD_READS 4096
/* Election timeouts a member may stay in SNAPSHOT without acknowledging before the leader goes
 * back to probing (and resends the snapshot's metadata if it is still needed). */
#define SNAP_TIMEOUT 3

enum { PR_PROBE = CAIRN_RAFT_PR_PROBE, PR_REPLICATE = CAIRN_RAFT_PR_REPLICATE, PR_SNAPSHOT = CAIRN_RAFT_PR_SNAPSHOT };
enum { VOTE_PENDING = 0, VOTE_WON = 1, VOTE_LOST = 2 };

/* ---- small growable vectors ---------------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 8;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / sz)
            return CAIRN_ENOMEM;
        nc *= 2;
    }
    void *np = realloc(*p, nc * sz);
    if (!np)
        return CAIRN_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

typedef struct {
    void *v;
    size_t n, cap;
} vec_t;

#define VEC(a, T) ((T *)(a).v)

static int vec_push(vec_t *a, const void *e, size_t sz)
{
    if (grow(&a->v, &a->cap, a->n + 1, sz))
        return CAIRN_ENOMEM;
    memcpy((char *)a->v + a->n * sz, e, sz);
    a->n++;
    return 0;
}

static void vec_free(vec_t *a)
{
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

/* Moves the content of src behind dst's (a swap when dst is empty, the common case). */
static void vec_hand(vec_t *dst, vec_t *src, size_t sz)
{
    if (src->n == 0)
        return;
    if (dst->n == 0) {
        vec_t t = *dst;
        *dst = *src;
        *src = t;
        return;
    }
    if (grow(&dst->v, &dst->cap, dst->n + src->n, sz))
        return; /* stays in src for the next ready */
    memcpy((char *)dst->v + dst->n * sz, src->v, src->n * sz);
    dst->n += src->n;
    src->n = 0;
}

/* The outbox: messages plus, per message, the block it owns (entry arrays, copied data). */
typedef struct {
    cairn_raft_msg_t *m;
    void **own;
    size_t n, cap, own_cap;
} msgq_t;

static void msgq_clear(msgq_t *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->own[i]);
    q->n = 0;
}

static void msgq_free(msgq_t *q)
{
    msgq_clear(q);
    free(q->m);
    free(q->own);
    memset(q, 0, sizeof *q);
}

static void msgq_hand(msgq_t *dst, msgq_t *src)
{
    if (src->n == 0)
        return;
    if (dst->n == 0) {
        msgq_t t = *dst;
        *dst = *src;
        *src = t;
        return;
    }
    if (grow((void **)&dst->m, &dst->cap, dst->n + src->n, sizeof *dst->m) ||
        grow((void **)&dst->own, &dst->own_cap, dst->n + src->n, sizeof *dst->own))
        return;
    memcpy(dst->m + dst->n, src->m, src->n * sizeof *src->m);
    memcpy(dst->own + dst->n, src->own, src->n * sizeof *src->own);
    dst->n += src->n;
    src->n = 0;
}

/* ---- state ----------------------------------------------------------------------------- */

typedef struct {
    uint64_t id;
    uint64_t match, next; /* Raft Fig. 2 matchIndex / nextIndex */
    int state;            /* PR_PROBE, PR_REPLICATE or PR_SNAPSHOT */
    int probe_sent;       /* PROBE: one APP is out, wait for its answer or a heartbeat reply */
    int recent_active;    /* heard from it since the last CheckQuorum round (thesis §6.2) */
    int vote;             /* this election: -1 no answer, 0 rejected, 1 granted */
    uint8_t voter;        /* counts in quorums; learners do not (thesis §4.2.1) */
    uint8_t member;       /* 0 only for this node, when it is outside the configuration */
    uint64_t read_ack;    /* highest read round it has acknowledged in this term */
    uint64_t pending_snap; /* SNAPSHOT: the index of the snapshot sent (thesis §5.1) */
    int snap_elapsed;      /* SNAPSHOT: ticks since it was sent */
    uint64_t *infl;       /* REPLICATE: ring of the last index carried by each APP in flight */
    size_t infl_head, infl_n;
} progress_t;

/* A configuration: ids[0, nv) are the voters, ids[nv, nv + nl) the learners. */
typedef struct {
    uint64_t *ids;
    size_t nv, nl;
} mship_t;

/* A configuration entry of the log and the configuration it produced. */
typedef struct {
    uint64_t index;
    mship_t m;
} conf_rec_t;

/* A progress set built for a configuration before it replaces the current one. */
typedef struct {
    progress_t *prs;
    uint64_t *scratch;
    size_t n, self, n_voters;
} prset_t;

typedef struct {
    uint64_t ctx, from;
} read_req_t;

typedef struct {
    uint64_t id, index;
    vec_t reqs; /* read_req_t */
} read_round_t;

typedef struct {
    void *p;
    uint64_t gen;
} grave_t;

struct cairn_raft {
    /* configuration */
    uint64_t id;
    progress_t *prs;      /* every member, plus this node when it is not one */
    size_t n_prs, self, quorum, n_voters;
    int self_voter;
    uint64_t *scratch;
    int election_tick, heartbeat_tick, pre_vote, check_quorum;
    size_t max_msg_bytes, max_inflight;
    uint64_t rng;

    /* hard state (Raft Fig. 2 "persistent state on all servers") */
    uint64_t term, vote, commit;

    /* soft state */
    cairn_raft_role_t role;
    uint64_t leader;
    int election_elapsed, heartbeat_elapsed, randomized_timeout;
    uint64_t transferee;
    int transfer_elapsed;
    int need_bcast, need_bcast_commit; /* leader: replicate at the next ready (batching) */

    /* log: log[k] has index snap_index + 1 + k */
    uint64_t snap_index, snap_term;
    mship_t snap_mem; /* the configuration at snap_index */
    vec_t hist;       /* conf_rec_t: the configuration entries after snap_index, in log order */
    uint64_t conf_ver, prev_conf_ver, handed_conf_ver; /* bumped when the configuration changes */
    uint64_t conf_errors;
    /* follower: a snapshot to install (state 1: for the next ready, 2: the shell has it) */
    struct {
        int state;
        uint64_t index, term, from, seq;
        mship_t m;
    } psnap;
    uint64_t handed_snap_seq;
    int handed_snap;
    cairn_raft_entry_t *log;
    size_t log_n, log_cap;
    uint64_t log_bytes;     /* entry data the log holds (the shell bounds its memory by bytes) */
    uint64_t stable;        /* reported durable by cairn_raft_persisted() */
    uint64_t unstable_from; /* first index not yet handed out in ready.entries */
    uint64_t handed_last;   /* last index handed out in the outstanding ready */
    int handed_entries;

    /* read index (thesis §6.4) */
    vec_t pend_reads; /* read_req_t: leader has not committed in its term yet */
    vec_t open_reads; /* read_req_t: waiting for the heartbeat round of the next ready */
    vec_t rounds;     /* read_round_t: heartbeat rounds waiting for a quorum */
    uint64_t read_seq;
    vec_t fwd_reads; /* uint64_t: follower: contexts forwarded to the leader */

    /* outputs: accumulating (out, ...) and handed out in the outstanding ready (h_...) */
    msgq_t out, after, h_out, h_after;
    vec_t rs, h_rs; /* cairn_raft_read_state_t */
    vec_t rf, h_rf; /* uint64_t */
    vec_t h_conf, h_snapconf; /* uint64_t: configurations handed out in the outstanding ready */
    grave_t *grave;
    size_t grave_n, grave_cap;

    /* ready bookkeeping */
    cairn_raft_hardstate_t prev_hs, handed_hs;
    uint64_t prev_leader, handed_leader;
    cairn_raft_role_t prev_role, handed_role;
    int outstanding;
    uint64_t gen; /* number of readies handed out */
    cairn_raft_entry_t *rd_ents;
    size_t rd_ents_cap;
};

/* ---- PRNG: splitmix64, the only source of randomness (election jitter, Raft §5.2) ------ */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Raft §5.2: a timeout drawn from [election_tick, 2*election_tick) so that split votes are
 * rare and resolve quickly. */
static void randomize_timeout(cairn_raft_t *r)
{
    r->randomized_timeout = r->election_tick + (int)(rng_next(&r->rng) % (uint64_t)r->election_tick);
}

/* ---- the log ----------------------------------------------------------------------------- */

static inline uint64_t last_index(const cairn_raft_t *r) { return r->snap_index + r->log_n; }

static inline uint64_t last_term(const cairn_raft_t *r)
{
    return r->log_n ? r->log[r->log_n - 1].term : r->snap_term;
}

static inline cairn_raft_entry_t *ent(const cairn_raft_t *r, uint64_t i) { return &r->log[i - r->snap_index - 1]; }

/* The term of the entry at i, if the log knows it (snap_index..last_index). */
static int term_of(const cairn_raft_t *r, uint64_t i, uint64_t *t)
{
    if (i == r->snap_index) {
        *t = r->snap_term;
        return 1;
    }
    if (i < r->snap_index || i > last_index(r))
        return 0;
    *t = ent(r, i)->term;
    return 1;
}

/* Appends n entries at last_index()+1.. copying their data. term != 0 overrides the source
 * term (a leader stamping proposals); the source index is ignored. All or nothing. */
static int log_append(cairn_raft_t *r, const cairn_raft_entry_t *src, size_t n, uint64_t term)
{
    if (n == 0)
        return 0;
    if (grow((void **)&r->log, &r->log_cap, r->log_n + n, sizeof *r->log))
        return CAIRN_ENOMEM;
    uint64_t base = last_index(r);
    for (size_t k = 0; k < n; k++) {
        cairn_raft_entry_t *d = &r->log[r->log_n + k];
        d->index = base + 1 + k;
        d->term = term ? term : src[k].term;
        d->type = src[k].type;
        d->len = src[k].len;
        d->data = NULL;
        if (d->len) {
            uint8_t *p = malloc(d->len);
            if (!p) {
                for (size_t j = 0; j < k; j++)
                    free((void *)r->log[r->log_n + j].data);
                return CAIRN_ENOMEM;
            }
            memcpy(p, src[k].data, d->len);
            d->data = p;
        }
    }
    for (size_t k = 0; k < n; k++)
        r->log_bytes += r->log[r->log_n + k].len;
    r->log_n += n;
    return 0;
}

/* ---- membership (thesis ch. 4; entry layout and rules at the top of this file) ----------- */

static progress_t *pr_of(cairn_raft_t *r, uint64_t id);
static void become_follower(cairn_raft_t *r, uint64_t term, uint64_t lead);

static void mship_free(mship_t *m)
{
    free(m->ids);
    m->ids = NULL;
    m->nv = m->nl = 0;
}

/* -1 absent, 0 learner, 1 voter */
static int mship_role(const mship_t *m, uint64_t id)
{
    for (size_t i = 0; i < m->nv + m->nl; i++)
        if (m->ids[i] == id)
            return i < m->nv;
    return -1;
}

static int mship_eq(const mship_t *a, const mship_t *b)
{
    return a->nv == b->nv && a->nl == b->nl &&
           (a->nv + a->nl == 0 || memcmp(a->ids, b->ids, (a->nv + a->nl) * sizeof *a->ids) == 0);
}

/* Builds dst from arrays (copied). */
static int mship_set(mship_t *dst, const uint64_t *v, size_t nv, const uint64_t *l, size_t nl)
{
    uint64_t *ids = malloc((nv + nl ? nv + nl : 1) * sizeof *ids);
    if (!ids)
        return CAIRN_ENOMEM;
    if (nv)
        memcpy(ids, v, nv * sizeof *ids);
    if (nl)
        memcpy(ids + nv, l, nl * sizeof *ids);
    *dst = (mship_t){ids, nv, nl};
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A configuration from outside (the shell's, or a snapshot message's): at least one voter,
 * bounded, no id 0, no id twice. */
static int mship_arrays_valid(const uint64_t *v, size_t nv, const uint64_t *l, size_t nl)
{
    if (nv == 0 || !v || (nl && !l) || nv > CAIRN_RAFT_MAX_MEMBERS || nl > CAIRN_RAFT_MAX_MEMBERS - nv)
        return CAIRN_EINVAL;
    size_t n = nv + nl;
    uint64_t small[64], *all = n <= 64 ? small : malloc(n * sizeof *all);
    if (!all)
        return CAIRN_ENOMEM;
    memcpy(all, v, nv * sizeof *all);
    if (nl)
        memcpy(all + nv, l, nl * sizeof *all);
    qsort(all, n, sizeof *all, cmp_u64);
    int rc = all[0] == CAIRN_RAFT_NONE ? CAIRN_EINVAL : 0;
    for (size_t i = 1; i < n && !rc; i++)
        if (all[i] == all[i - 1])
            rc = CAIRN_EINVAL;
    if (all != small)
        free(all);
    return rc;
}

/* out = cur without `drop`, plus `add_voter` at the end of the voters and `add_learner` at the
 * end of the learners (0: none). */
static int mship_edit(const mship_t *cur, uint64_t drop, uint64_t add_voter, uint64_t add_learner, mship_t *out)
{
    size_t cap = cur->nv + cur->nl + 1;
    uint64_t *ids = malloc(cap * sizeof *ids);
    if (!ids)
        return CAIRN_ENOMEM;
    size_t nv = 0, nl = 0;
    for (size_t i = 0; i < cur->nv; i++)
        if (cur->ids[i] != drop)
            ids[nv++] = cur->ids[i];
    if (add_voter)
        ids[nv++] = add_voter;
    for (size_t i = cur->nv; i < cur->nv + cur->nl; i++)
        if (cur->ids[i] != drop)
            ids[nv + nl++] = cur->ids[i];
    if (add_learner)
        ids[nv + nl++] = add_learner;
    *out = (mship_t){ids, nv, nl};
    return 0;
}

/* Applies one configuration entry to cur (the rules at the top of this file). *bad is set for a
 * malformed entry or an impossible change, which leave the configuration as it was. */
static int mship_apply(const mship_t *cur, const cairn_raft_entry_t *e, mship_t *out, int *bad)
{
    cairn_raft_conf_change_t cc;
    *bad = 0;
    if (cairn_raft_conf_decode(e->data, e->len, &cc)) {
        *bad = 1;
        return mship_edit(cur, 0, 0, 0, out);
    }
    uint64_t id = cc.node_id;
    int role = mship_role(cur, id), full = cur->nv + cur->nl >= CAIRN_RAFT_MAX_MEMBERS;
    switch (cc.op) {
    case CAIRN_RAFT_CONF_ADD_VOTER:
        if (role == 0)
            return mship_edit(cur, id, id, 0, out);
        if (role < 0 && !full)
            return mship_edit(cur, 0, id, 0, out);
        *bad = role < 0;
        break;
    case CAIRN_RAFT_CONF_ADD_LEARNER:
        if (role < 0 && !full)
            return mship_edit(cur, 0, 0, id, out);
        *bad = role != 0;
        break;
    case CAIRN_RAFT_CONF_PROMOTE:
        if (role == 0)
            return mship_edit(cur, id, id, 0, out);
        *bad = role < 0;
        break;
    case CAIRN_RAFT_CONF_REMOVE:
        if (role == 0 || (role == 1 && cur->nv > 1))
            return mship_edit(cur, id, 0, 0, out);
        *bad = 1;
        break;
    default: /* UPDATE */
        break;
    }
    return mship_edit(cur, 0, 0, 0, out);
}

static const mship_t *cur_mship(const cairn_raft_t *r)
{
    return r->hist.n ? &VEC(r->hist, conf_rec_t)[r->hist.n - 1].m : &r->snap_mem;
}

/* The configuration in effect once the log up to index is appended. */
static const mship_t *mship_at(const cairn_raft_t *r, uint64_t index)
{
    const mship_t *m = &r->snap_mem;
    for (size_t i = 0; i < r->hist.n && VEC(r->hist, conf_rec_t)[i].index <= index; i++)
        m = &VEC(r->hist, conf_rec_t)[i].m;
    return m;
}

/* The index of the last configuration entry in the log (0: the snapshot's, committed). */
static uint64_t last_conf_index(const cairn_raft_t *r)
{
    return r->hist.n ? VEC(r->hist, conf_rec_t)[r->hist.n - 1].index : 0;
}

static void pr_fresh(cairn_raft_t *r, progress_t *p, uint64_t id)
{
    memset(p, 0, sizeof *p);
    p->id = id;
    p->vote = -1;
    p->recent_active = 1; /* a new member gets a full CheckQuorum round of grace */
    /* A leader probes a new member at its last entry (the configuration entry, usually); the
     * member's answer moves it back to where its log ends (Raft §5.3). */
    uint64_t last = r->snap_index + r->log_n;
    p->next = last > r->snap_index ? last : last + 1;
}

/* Builds the progress set of configuration m, carrying over what the current set knows about
 * the members that stay. Allocates everything; changes nothing in r. */
static int prset_prepare(cairn_raft_t *r, const mship_t *m, prset_t *ps)
{
    int self_in = mship_role(m, r->id) >= 0;
    size_t n = m->nv + m->nl + !self_in;
    memset(ps, 0, sizeof *ps);
    ps->prs = calloc(n, sizeof *ps->prs);
    ps->scratch = calloc(n, sizeof *ps->scratch);
    if (!ps->prs || !ps->scratch)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = i < m->nv + m->nl ? m->ids[i] : r->id;
        progress_t *p = &ps->prs[i], *old = pr_of(r, id);
        if (old) {
            *p = *old;
        } else {
            pr_fresh(r, p, id);
            p->infl = malloc(r->max_inflight * sizeof(uint64_t));
            if (!p->infl) {
                ps->n = i;
                goto fail;
            }
        }
        p->voter = i < m->nv;
        p->member = i < m->nv + m->nl;
        if (!p->voter)
            p->vote = -1;
        if (id == r->id)
            ps->self = i;
    }
    ps->n = n;
    ps->n_voters = m->nv;
    return 0;
fail:
    for (size_t i = 0; ps->prs && i < ps->n; i++)
        if (!pr_of(r, ps->prs[i].id))
            free(ps->prs[i].infl);
    free(ps->prs);
    free(ps->scratch);
    memset(ps, 0, sizeof *ps);
    return CAIRN_ENOMEM;
}

static void prset_abort(cairn_raft_t *r, prset_t *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        if (!pr_of(r, ps->prs[i].id))
            free(ps->prs[i].infl);
    free(ps->prs);
    free(ps->scratch);
    memset(ps, 0, sizeof *ps);
}

/* Replaces the progress set; what a new configuration means for the roles follows. */
static void prset_commit(cairn_raft_t *r, prset_t *ps)
{
    for (size_t i = 0; i < r->n_prs; i++) {
        int kept = 0;
        for (size_t j = 0; j < ps->n && !kept; j++)
            kept = ps->prs[j].id == r->prs[i].id;
        if (!kept)
            free(r->prs[i].infl);
    }
    free(r->prs);
    free(r->scratch);
    r->prs = ps->prs;
    r->scratch = ps->scratch;
    r->n_prs = ps->n;
    r->self = ps->self;
    r->n_voters = ps->n_voters;
    r->quorum = r->n_voters / 2 + 1;
    r->self_voter = r->prs[r->self].voter;
    memset(ps, 0, sizeof *ps);
    if (r->transferee) {
        progress_t *t = pr_of(r, r->transferee);
        if (!t || !t->voter)
            r->transferee = CAIRN_RAFT_NONE; /* thesis §3.10: the target left the voters */
    }
    if ((r->role == CAIRN_RAFT_CANDIDATE || r->role == CAIRN_RAFT_PRECANDIDATE) && !r->self_voter)
        become_follower(r, r->term, CAIRN_RAFT_NONE);
    if (r->role == CAIRN_RAFT_LEADER)
        r->need_bcast = 1; /* new members hear from the leader with the next ready */
}

/* Appends entries (log_append) and applies the configuration entries among them at once
 * (thesis §4.1: a configuration is used as soon as it is in the log). All or nothing. The
 * common case - no configuration entry - costs one type test per entry. */
static int append_entries(cairn_raft_t *r, const cairn_raft_entry_t *src, size_t n, uint64_t term)
{
    size_t nconf = 0;
    for (size_t k = 0; k < n; k++)
        nconf += src[k].type == CAIRN_RAFT_ENTRY_CONF;
    if (nconf == 0)
        return log_append(r, src, n, term);
    if (grow(&r->hist.v, &r->hist.cap, r->hist.n + nconf, sizeof(conf_rec_t)))
        return CAIRN_ENOMEM;
    conf_rec_t *recs = VEC(r->hist, conf_rec_t) + r->hist.n; /* staged behind the live ones */
    const mship_t *before = cur_mship(r), *cur = before;
    uint64_t base = last_index(r), errs = 0;
    size_t j = 0;
    prset_t ps;
    for (size_t k = 0; k < n; k++) {
        if (src[k].type != CAIRN_RAFT_ENTRY_CONF)
            continue;
        int bad;
        if (mship_apply(cur, &src[k], &recs[j].m, &bad))
            goto fail;
        recs[j].index = base + 1 + k;
        errs += (uint64_t)bad;
        cur = &recs[j++].m;
    }
    if (prset_prepare(r, cur, &ps))
        goto fail;
    if (log_append(r, src, n, term)) {
        prset_abort(r, &ps);
        goto fail;
    }
    int changed = !mship_eq(before, cur);
    r->hist.n += nconf;
    r->conf_errors += errs;
    prset_commit(r, &ps);
    if (changed)
        r->conf_ver++;
    return 0;
fail:
    while (j)
        mship_free(&recs[--j].m);
    return CAIRN_ENOMEM;
}

/* Moves freed entry data to the graveyard (see "Memory"); the caller reserved room. */
static void grave_put(cairn_raft_t *r, const void *p)
{
    if (p)
        r->grave[r->grave_n++] = (grave_t){(void *)p, r->gen + 1};
}

/* Removes the entries from index `from` on (Raft §5.3: a conflicting suffix is deleted).
 * Their data goes to the graveyard: messages and the outstanding ready may point at it. A
 * configuration entry among them is undone: the configuration reverts to the one before it
 * (thesis §4.1). All or nothing. */
static int log_truncate(cairn_raft_t *r, uint64_t from)
{
    if (from <= r->snap_index || from > last_index(r))
        return from > last_index(r) ? 0 : CAIRN_EINVAL;
    size_t k = (size_t)(from - r->snap_index - 1), keep = r->hist.n;
    while (keep && VEC(r->hist, conf_rec_t)[keep - 1].index >= from)
        keep--;
    const mship_t *target = keep ? &VEC(r->hist, conf_rec_t)[keep - 1].m : &r->snap_mem;
    prset_t ps;
    if (keep < r->hist.n && prset_prepare(r, target, &ps))
        return CAIRN_ENOMEM;
    if (grow((void **)&r->grave, &r->grave_cap, r->grave_n + (r->log_n - k), sizeof *r->grave)) {
        if (keep < r->hist.n)
            prset_abort(r, &ps);
        return CAIRN_ENOMEM;
    }
    for (size_t i = k; i < r->log_n; i++) {
        r->log_bytes -= r->log[i].len;
        grave_put(r, r->log[i].data);
    }
    r->log_n = k;
    if (r->unstable_from > from)
        r->unstable_from = from;
    if (r->handed_last >= from)
        r->handed_last = from - 1;
    if (r->stable >= from)
        r->stable = from - 1;
    if (keep < r->hist.n) {
        int changed = !mship_eq(cur_mship(r), target);
        while (r->hist.n > keep)
            mship_free(&VEC(r->hist, conf_rec_t)[--r->hist.n].m);
        prset_commit(r, &ps);
        if (changed)
            r->conf_ver++;
    }
    return 0;
}

/* Drops the log up to index (snap_index < index <= last_index) behind a snapshot there
 * (thesis §5.1); the configuration at index becomes the snapshot's. */
static int log_compact(cairn_raft_t *r, uint64_t index, uint64_t term)
{
    size_t k = (size_t)(index - r->snap_index);
    if (grow((void **)&r->grave, &r->grave_cap, r->grave_n + k, sizeof *r->grave))
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < k; i++) {
        r->log_bytes -= r->log[i].len;
        grave_put(r, r->log[i].data);
    }
    memmove(r->log, r->log + k, (r->log_n - k) * sizeof *r->log);
    r->log_n -= k;
    r->snap_index = index;
    r->snap_term = term;
    size_t h = 0;
    conf_rec_t *hv = VEC(r->hist, conf_rec_t);
    while (h < r->hist.n && hv[h].index <= index)
        h++;
    if (h) {
        mship_free(&r->snap_mem);
        r->snap_mem = hv[h - 1].m;
        for (size_t i = 0; i + 1 < h; i++)
            mship_free(&hv[i].m);
        memmove(hv, hv + h, (r->hist.n - h) * sizeof *hv);
        r->hist.n -= h;
    }
    if (r->stable < index)
        r->stable = index;
    if (r->unstable_from <= index)
        r->unstable_from = index + 1;
    return 0;
}

/* Drops the whole log: it restarts after a snapshot at (index, term) whose last entry it did
 * not hold (thesis Figure 5.3 step 7). */
static int log_reset(cairn_raft_t *r, uint64_t index, uint64_t term)
{
    if (grow((void **)&r->grave, &r->grave_cap, r->grave_n + r->log_n, sizeof *r->grave))
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < r->log_n; i++)
        grave_put(r, r->log[i].data);
    r->log_n = 0;
    r->log_bytes = 0;
    r->snap_index = index;
    r->snap_term = term;
    while (r->hist.n)
        mship_free(&VEC(r->hist, conf_rec_t)[--r->hist.n].m);
    r->stable = index;
    r->unstable_from = index + 1;
    if (r->handed_last > index)
        r->handed_last = index;
    return 0;
}

/* The largest index <= index whose term is <= term (etcd's findConflictByTerm): every entry
 * above it has a term the other side cannot match, so a probe can skip them all. */
static uint64_t find_conflict_by_term(const cairn_raft_t *r, uint64_t index, uint64_t term)
{
    if (index > last_index(r))
        index = last_index(r);
    while (index > r->snap_index && ent(r, index)->term > term)
        index--;
    return index;
}

/* Raft §5.4.1: a candidate's log is at least as up to date as ours. */
static int log_up_to_date(const cairn_raft_t *r, uint64_t lterm, uint64_t lindex)
{
    uint64_t t = last_term(r);
    return lterm > t || (lterm == t && lindex >= last_index(r));
}

static int committed_in_term(const cairn_raft_t *r)
{
    uint64_t t;
    return term_of(r, r->commit, &t) && t == r->term;
}

/* ---- progress (etcd's tracker.Progress) -------------------------------------------------- */

static progress_t *pr_of(cairn_raft_t *r, uint64_t id)
{
    for (size_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id)
            return &r->prs[i];
    return NULL;
}

static int infl_full(const cairn_raft_t *r, const progress_t *pr) { return pr->infl_n >= r->max_inflight; }

static void infl_add(cairn_raft_t *r, progress_t *pr, uint64_t last)
{
    if (infl_full(r, pr))
        return;
    pr->infl[(pr->infl_head + pr->infl_n) % r->max_inflight] = last;
    pr->infl_n++;
}

static void infl_free_le(cairn_raft_t *r, progress_t *pr, uint64_t index)
{
    while (pr->infl_n && pr->infl[pr->infl_head] <= index) {
        pr->infl_head = (pr->infl_head + 1) % r->max_inflight;
        pr->infl_n--;
    }
}

static void infl_free_first(cairn_raft_t *r, progress_t *pr)
{
    if (pr->infl_n) {
        pr->infl_head = (pr->infl_head + 1) % r->max_inflight;
        pr->infl_n--;
    }
}

static int pr_paused(const cairn_raft_t *r, const progress_t *pr)
{
    switch (pr->state) {
    case PR_PROBE:
        return pr->probe_sent;
    case PR_REPLICATE:
        return infl_full(r, pr);
    default:
        return 1; /* SNAPSHOT: nothing until the member has it (thesis §5.1) */
    }
}

static void pr_set_state(progress_t *pr, int state)
{
    pr->state = state;
    pr->next = pr->match + 1;
    pr->probe_sent = 0;
    pr->infl_head = pr->infl_n = 0;
    pr->pending_snap = 0;
    pr->snap_elapsed = 0;
}

static void become_probe(progress_t *pr) { pr_set_state(pr, PR_PROBE); }
static void become_replicate(progress_t *pr) { pr_set_state(pr, PR_REPLICATE); }

static int pr_maybe_update(progress_t *pr, uint64_t n)
{
    int updated = 0;
    if (pr->match < n) {
        pr->match = n;
        pr->probe_sent = 0;
        updated = 1;
    }
    if (pr->next < n + 1)
        pr->next = n + 1;
    return updated;
}

/* A rejection of the APP whose preceding index was `rejected`; `hint` is where the follower's
 * log may match. Returns 0 for stale rejections (reordered or duplicated). */
static int pr_maybe_decr_to(progress_t *pr, uint64_t rejected, uint64_t hint)
{
    if (pr->state == PR_REPLICATE) {
        if (rejected <= pr->match)
            return 0;
        pr->next = pr->match + 1;
        return 1;
    }
    if (pr->next - 1 != rejected)
        return 0;
    uint64_t n = rejected < hint + 1 ? rejected : hint + 1;
    if (n < pr->match + 1)
        n = pr->match + 1;
    pr->next = n;
    pr->probe_sent = 0;
    return 1;
}

/* ---- sending ----------------------------------------------------------------------------- */

/* Queues a message. On allocation failure the message is dropped: Raft tolerates lost
 * messages (Raft §5.3 retries), so running out of memory here is not fatal. */
static void send_q(msgq_t *q, const cairn_raft_msg_t *m, void *own)
{
    if (grow((void **)&q->m, &q->cap, q->n + 1, sizeof *q->m) ||
        grow((void **)&q->own, &q->own_cap, q->n + 1, sizeof *q->own)) {
        free(own);
        return;
    }
    q->m[q->n] = *m;
    q->own[q->n] = own;
    q->n++;
}

static void send_now(cairn_raft_t *r, cairn_raft_msg_t m, void *own)
{
    m.from = r->id;
    send_q(&r->out, &m, own);
}

/* Messages that promise something about our durable state (votes, append acks) leave only
 * after the ready that carries that state is durable (thesis §10.2.1). */
static void send_after(cairn_raft_t *r, cairn_raft_msg_t m)
{
    m.from = r->id;
    send_q(&r->after, &m, NULL);
}

/* ---- reads (thesis §6.4) ----------------------------------------------------------------- */

static void push_read_state(cairn_raft_t *r, uint64_t index, uint64_t ctx)
{
    cairn_raft_read_state_t s = {index, ctx};
    vec_push(&r->rs, &s, sizeof s);
}

static void push_read_failure(cairn_raft_t *r, uint64_t ctx) { vec_push(&r->rf, &ctx, sizeof ctx); }

static void serve_read(cairn_raft_t *r, const read_req_t *q, uint64_t index)
{
    if (q->from == r->id)
        push_read_state(r, index, q->ctx);
    else
        send_now(r, (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_READINDEX_RESP, .to = q->from, .term = r->term,
                                       .index = index, .context = q->ctx},
                 NULL);
}

static size_t leader_reads_pending(const cairn_raft_t *r)
{
    size_t n = r->pend_reads.n + r->open_reads.n;
    for (size_t i = 0; i < r->rounds.n; i++)
        n += VEC(r->rounds, read_round_t)[i].reqs.n;
    return n;
}

static void fail_reqs(cairn_raft_t *r, vec_t *v)
{
    for (size_t i = 0; i < v->n; i++)
        if (VEC(*v, read_req_t)[i].from == r->id)
            push_read_failure(r, VEC(*v, read_req_t)[i].ctx);
    v->n = 0;
}

/* Leadership lost: our own reads fail; a follower's reads fail on its side when it sees the
 * leader change (fail_fwd_reads). */
static void fail_leader_reads(cairn_raft_t *r)
{
    fail_reqs(r, &r->pend_reads);
    fail_reqs(r, &r->open_reads);
    for (size_t i = 0; i < r->rounds.n; i++) {
        read_round_t *rr = &VEC(r->rounds, read_round_t)[i];
        fail_reqs(r, &rr->reqs);
        vec_free(&rr->reqs);
    }
    r->rounds.n = 0;
}

static void fail_fwd_reads(cairn_raft_t *r)
{
    for (size_t i = 0; i < r->fwd_reads.n; i++)
        push_read_failure(r, VEC(r->fwd_reads, uint64_t)[i]);
    r->fwd_reads.n = 0;
}

/* A leader takes a read request (its own or a follower's). */
static void leader_read(cairn_raft_t *r, uint64_t ctx, uint64_t from)
{
    read_req_t q = {ctx, from};
    if (leader_reads_pending(r) >= MAX_PENDING_READS) {
        if (from == r->id)
            push_read_failure(r, ctx);
        return;
    }
    /* thesis §6.4 step 1: until the leader has committed an entry of its own term it does not
     * know the commit index of its predecessors; reads wait for its no-op to commit. */
    if (!committed_in_term(r)) {
        vec_push(&r->pend_reads, &q, sizeof q);
        return;
    }
    /* A single voter is its own quorum: its commit index is the read index at once. */
    if (r->n_voters == 1 && r->self_voter) {
        serve_read(r, &q, r->commit);
        return;
    }
    /* Batched into the heartbeat round the next ready sends (thesis §6.4 "batching"). */
    vec_push(&r->open_reads, &q, sizeof q);
}

/* Serves every round a quorum has acknowledged. An ack for round k confirms every earlier
 * round too: the heartbeat carrying k was sent after all of their requests arrived. */
static void advance_reads(cairn_raft_t *r)
{
    size_t done = 0;
    while (done < r->rounds.n) {
        read_round_t *rr = &VEC(r->rounds, read_round_t)[done];
        size_t acks = 0; /* voters only: learners do not confirm leadership (thesis §4.2.1) */
        for (size_t i = 0; i < r->n_prs; i++)
            if (r->prs[i].voter && (i == r->self || r->prs[i].read_ack >= rr->id))
                acks++;
        if (acks < r->quorum)
            break;
        for (size_t i = 0; i < rr->reqs.n; i++)
            serve_read(r, &VEC(rr->reqs, read_req_t)[i], rr->index);
        vec_free(&rr->reqs);
        done++;
    }
    if (done) {
        memmove(r->rounds.v, VEC(r->rounds, read_round_t) + done, (r->rounds.n - done) * sizeof(read_round_t));
        r->rounds.n -= done;
    }
}

/* ---- replication (Raft §5.3) ------------------------------------------------------------- */

/* thesis §5.1 InstallSnapshot: the member needs entries this leader compacted. Only the
 * metadata goes through the core (the data is streamed by the shells); the member is paused
 * in SNAPSHOT until it acknowledges, the shell reports, or SNAP_TIMEOUT passes. */
static int send_snap(cairn_raft_t *r, progress_t *pr)
{
    const mship_t *m = &r->snap_mem;
    size_t n = m->nv + m->nl;
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
        return 0;
    memcpy(ids, m->ids, n * sizeof *ids);
    send_now(r,
             (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_SNAP, .to = pr->id, .term = r->term, .index = r->snap_index,
                                .log_term = r->snap_term, .commit = r->commit, .snap_index = r->snap_index,
                                .snap_term = r->snap_term, .voters = ids, .n_voters = m->nv,
                                .learners = m->nl ? ids + m->nv : NULL, .n_learners = m->nl},
             ids);
    pr_set_state(pr, PR_SNAPSHOT);
    pr->pending_snap = r->snap_index;
    return 1;
}

/* Sends the next APP to pr if its flow control allows. With send_if_empty an APP without
 * entries goes out too (to carry the commit index, or to probe after a heartbeat reply).
 * Returns 1 if a message was sent. */
static int send_append(cairn_raft_t *r, progress_t *pr, int send_if_empty)
{
    if (pr_paused(r, pr))
        return 0;
    uint64_t prev = pr->next - 1, prev_term;
    if (!term_of(r, prev, &prev_term))
        return prev < r->snap_index ? send_snap(r, pr) : 0;
    uint64_t last = last_index(r);
    size_t n = 0, bytes = 0;
    /* Batching: as many entries as fit in max_msg_bytes, but always at least one. */
    for (uint64_t i = pr->next; i <= last && n < MAX_ENTRIES_PER_MSG; i++) {
        size_t len = ent(r, i)->len;
        if (n > 0 && bytes + len > r->max_msg_bytes)
            break;
        bytes += len;
        n++;
    }
    if (n == 0 && !send_if_empty)
        return 0;
    cairn_raft_entry_t *ents = NULL;
    if (n) {
        ents = malloc(n * sizeof *ents);
        if (!ents)
            return 0;
        memcpy(ents, ent(r, pr->next), n * sizeof *ents);
    }
    send_now(r,
             (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP, .to = pr->id, .term = r->term, .log_term = prev_term,
                                .index = prev, .commit = r->commit, .entries = ents, .n_entries = n},
             ents);
    if (pr->state == PR_REPLICATE) {
        /* Pipelining: assume success and move on; a rejection drops back to probing. */
        if (n) {
            pr->next = prev + n + 1;
            infl_add(r, pr, prev + n);
        }
    } else {
        pr->probe_sent = 1;
    }
    return 1;
}

static void bcast_append(cairn_raft_t *r, int send_if_empty)
{
    for (size_t i = 0; i < r->n_prs; i++) {
        if (i == r->self)
            continue;
        progress_t *pr = &r->prs[i];
        if (send_append(r, pr, send_if_empty))
            while (send_append(r, pr, 0)) {
            }
    }
}

/* Heartbeats (Raft §5.2) carry min(match, commit): a follower must not learn a commit index
 * beyond the prefix it is known to share with the leader. ctx tags a read round. */
static void bcast_heartbeat(cairn_raft_t *r, uint64_t ctx)
{
    for (size_t i = 0; i < r->n_prs; i++) {
        if (i == r->self)
            continue;
        progress_t *pr = &r->prs[i];
        send_now(r,
                 (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_HEARTBEAT, .to = pr->id, .term = r->term,
                                    .commit = pr->match < r->commit ? pr->match : r->commit, .context = ctx},
                 NULL);
    }
}

static void send_timeout_now(cairn_raft_t *r, uint64_t to)
{
    send_now(r, (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_TIMEOUT_NOW, .to = to, .term = r->term}, NULL);
}

/* Reads that waited for the leader's first commit in its term can now go. */
static void leader_committed(cairn_raft_t *r)
{
    if (r->role != CAIRN_RAFT_LEADER)
        return;
    r->need_bcast_commit = 1;
    if (r->pend_reads.n && committed_in_term(r)) {
        vec_t p = r->pend_reads;
        r->pend_reads = (vec_t){0};
        for (size_t i = 0; i < p.n; i++)
            leader_read(r, VEC(p, read_req_t)[i].ctx, VEC(p, read_req_t)[i].from);
        vec_free(&p);
    }
}

/* Raft §5.3/§5.4.2: the commit index is the highest index stored on a quorum, and only an
 * entry of the current term is committed by counting replicas (older ones follow it). The
 * leader's own match is what cairn_raft_persisted() reported, never its in-memory log. */
static int maybe_commit(cairn_raft_t *r)
{
    size_t n = 0; /* voters only (thesis §4.2.1); a leader that removed itself is not one */
    for (size_t i = 0; i < r->n_prs; i++) {
        if (!r->prs[i].voter)
            continue;
        uint64_t v = r->prs[i].match;
        size_t j = n++;
        while (j > 0 && r->scratch[j - 1] < v) {
            r->scratch[j] = r->scratch[j - 1];
            j--;
        }
        r->scratch[j] = v;
    }
    if (n < r->quorum)
        return 0;
    uint64_t qi = r->scratch[r->quorum - 1], t;
    if (qi > r->commit && term_of(r, qi, &t) && t == r->term) {
        r->commit = qi;
        leader_committed(r);
        return 1;
    }
    return 0;
}

static void commit_to(cairn_raft_t *r, uint64_t c)
{
    if (c > r->commit && c <= last_index(r))
        r->commit = c;
}

/* thesis §4.2.2: a leader that removed itself from the voters leads, without counting itself,
 * until the removal commits, then steps down. It first tells everyone the commit index and
 * hands over to a voter holding its whole log (TimeoutNow, §3.10), so the cluster does not
 * wait out an election timeout. */
static void leader_maybe_leave(cairn_raft_t *r)
{
    if (r->role != CAIRN_RAFT_LEADER || r->self_voter || last_conf_index(r) > r->commit)
        return;
    bcast_append(r, 1);
    for (size_t i = 0; i < r->n_prs; i++)
        if (i != r->self && r->prs[i].voter && r->prs[i].match == last_index(r)) {
            send_timeout_now(r, r->prs[i].id);
            break;
        }
    become_follower(r, r->term, CAIRN_RAFT_NONE);
}

/* ---- roles (Raft §5.2, thesis §9.6) ------------------------------------------------------ */

static void reset_votes(cairn_raft_t *r)
{
    for (size_t i = 0; i < r->n_prs; i++)
        r->prs[i].vote = -1;
}

static void reset(cairn_raft_t *r, uint64_t term)
{
    if (term != r->term) {
        r->term = term;
        r->vote = CAIRN_RAFT_NONE;
    }
    r->leader = CAIRN_RAFT_NONE;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    randomize_timeout(r);
    r->transferee = CAIRN_RAFT_NONE;
    r->transfer_elapsed = 0;
    r->need_bcast = r->need_bcast_commit = 0;
    reset_votes(r);
    fail_leader_reads(r);
}

static void become_follower(cairn_raft_t *r, uint64_t term, uint64_t lead)
{
    uint64_t old_term = r->term, old_lead = r->leader;
    reset(r, term);
    r->role = CAIRN_RAFT_FOLLOWER;
    r->leader = lead;
    if (term != old_term || lead != old_lead)
        fail_fwd_reads(r);
}

static int poll(cairn_raft_t *r, uint64_t id, int granted)
{
    progress_t *pr = pr_of(r, id);
    if (pr && pr->voter && pr->vote < 0) /* a learner's answer does not count */
        pr->vote = granted ? 1 : 0;
    size_t yes = 0, no = 0;
    for (size_t i = 0; i < r->n_prs; i++) {
        if (!r->prs[i].voter)
            continue;
        if (r->prs[i].vote == 1)
            yes++;
        else if (r->prs[i].vote == 0)
            no++;
    }
    if (yes >= r->quorum)
        return VOTE_WON;
    if (no > r->n_voters - r->quorum)
        return VOTE_LOST;
    return VOTE_PENDING;
}

/* Raft §5.2 / thesis §3.4: a new leader starts every follower in probe state at its own
 * last index, and appends an empty entry of its term (thesis §6.4) so that it commits
 * something of its own term promptly, which commits its predecessors' entries and unblocks
 * reads. */
static void become_leader(cairn_raft_t *r)
{
    reset(r, r->term);
    r->role = CAIRN_RAFT_LEADER;
    r->leader = r->id;
    uint64_t last = last_index(r);
    for (size_t i = 0; i < r->n_prs; i++) {
        progress_t *pr = &r->prs[i];
        pr->match = 0;
        pr_set_state(pr, PR_PROBE);
        pr->next = last + 1;
        pr->recent_active = 1; /* CheckQuorum starts with a full election timeout of grace */
        pr->read_ack = 0;
    }
    r->prs[r->self].match = r->stable;
    cairn_raft_entry_t empty = {.type = CAIRN_RAFT_ENTRY_EMPTY};
    /* On allocation failure we lead without the no-op; the next proposal plays its role. */
    (void)log_append(r, &empty, 1, r->term);
    r->prs[r->self].next = last_index(r) + 1;
    r->need_bcast = 1;
    maybe_commit(r); /* nothing new is durable yet, but a restarted single voter may be */
}

/* thesis §9.6 PreVote: ask whether we could win before disturbing anyone with a new term. */
static void send_vote_requests(cairn_raft_t *r, int pre, int transfer)
{
    for (size_t i = 0; i < r->n_prs; i++) {
        if (i == r->self || !r->prs[i].voter)
            continue;
        cairn_raft_msg_t m = {.type = pre ? CAIRN_RAFT_MSG_PREVOTE : CAIRN_RAFT_MSG_VOTE,
                              .to = r->prs[i].id,
                              .term = pre ? r->term + 1 : r->term,
                              .log_term = last_term(r),
                              .index = last_index(r),
                              .context = transfer ? CAIRN_RAFT_CTX_TRANSFER : 0};
        if (pre)
            send_now(r, m, NULL); /* promises nothing: our hard state did not change */
        else
            send_after(r, m); /* our new term and self-vote must be durable first */
    }
}

static void start_election(cairn_raft_t *r, int transfer)
{
    reset(r, r->term + 1);
    r->vote = r->id;
    r->role = CAIRN_RAFT_CANDIDATE;
    fail_fwd_reads(r);
    if (poll(r, r->id, 1) == VOTE_WON) {
        become_leader(r);
        return;
    }
    send_vote_requests(r, 0, transfer);
}

/* Starts an election: PreVote first when configured, unless this is a leadership transfer
 * (thesis §3.10: the target must not wait, and it knows the leader consents). */
static void hup(cairn_raft_t *r, int transfer)
{
    /* Learners and nodes outside their own configuration never campaign (thesis §4.2.1,
     * §4.2.2). */
    if (r->role == CAIRN_RAFT_LEADER || !r->self_voter)
        return;
    if (r->pre_vote && !transfer) {
        reset(r, r->term);
        r->role = CAIRN_RAFT_PRECANDIDATE;
        fail_fwd_reads(r);
        if (poll(r, r->id, 1) == VOTE_WON) {
            start_election(r, 0);
            return;
        }
        send_vote_requests(r, 1, 0);
        return;
    }
    start_election(r, transfer);
}

/* ---- configuration ----------------------------------------------------------------------- */

static int entries_valid(const cairn_raft_entry_t *e, size_t n, uint64_t first_index, uint64_t min_term,
                         uint64_t max_term)
{
    uint64_t t = min_term;
    for (size_t k = 0; k < n; k++) {
        if (e[k].index != first_index + k || e[k].term < t || e[k].term > max_term ||
            e[k].type > CAIRN_RAFT_ENTRY_CONF || (e[k].len && !e[k].data))
            return 0;
        t = e[k].term;
    }
    return 1;
}

cairn_raft_t *cairn_raft_new(const cairn_raft_config_t *cfg, int *err)
{
    int e = CAIRN_EINVAL;
    cairn_raft_t *r = NULL;
    if (!cfg || cfg->id == CAIRN_RAFT_NONE)
        goto fail;
    /* At least one voter, no id 0 or twice; this node may be outside the configuration
     * (joining, or removed): it then never campaigns. */
    if ((e = mship_arrays_valid(cfg->voters, cfg->n_voters, cfg->learners, cfg->n_learners)) != 0)
        goto fail;
    e = CAIRN_EINVAL;
    int et = cfg->election_tick ? cfg->election_tick : DEFAULT_ELECTION_TICK;
    int ht = cfg->heartbeat_tick ? cfg->heartbeat_tick : DEFAULT_HEARTBEAT_TICK;
    if (et < 0 || ht < 0 || et <= ht)
        goto fail;
    if ((cfg->n_entries && !cfg->entries) || (cfg->snap_index == 0 && cfg->snap_term != 0) ||
        cfg->hs.term < cfg->snap_term)
        goto fail;
    /* A log restored from disk must be one Raft could have produced. */
    if (!entries_valid(cfg->entries, cfg->n_entries, cfg->snap_index + 1, cfg->snap_term, cfg->hs.term))
        goto fail;
    uint64_t last = cfg->snap_index + cfg->n_entries;
    if (cfg->hs.commit > last)
        goto fail; /* committed entries were lost: refuse rather than forget a promise */

    e = CAIRN_ENOMEM;
    r = calloc(1, sizeof *r);
    if (!r)
        goto fail;
    r->id = cfg->id;
    r->election_tick = et;
    r->heartbeat_tick = ht;
    r->pre_vote = cfg->pre_vote != 0;
    r->check_quorum = cfg->check_quorum != 0;
    r->max_msg_bytes = cfg->max_msg_bytes ? cfg->max_msg_bytes : DEFAULT_MAX_MSG_BYTES;
    r->max_inflight = cfg->max_inflight ? cfg->max_inflight : DEFAULT_MAX_INFLIGHT;
    r->rng = cfg->seed ^ (cfg->id * 0xd6e8feb86659fd93ULL);
    r->snap_index = cfg->snap_index;
    r->snap_term = cfg->snap_term;
    if (mship_set(&r->snap_mem, cfg->voters, cfg->n_voters, cfg->learners, cfg->n_learners))
        goto fail;
    prset_t ps;
    if (prset_prepare(r, &r->snap_mem, &ps))
        goto fail;
    prset_commit(r, &ps);
    /* The configuration entries of the restored log apply on top of the snapshot's (thesis
     * §4.1): the membership is recomputed, never trusted from elsewhere. */
    if (append_entries(r, cfg->entries, cfg->n_entries, 0))
        goto fail;
    /* What we were given was read from disk: it is durable and needs no ready. */
    r->stable = last_index(r);
    r->unstable_from = last_index(r) + 1;
    r->handed_last = last_index(r);
    r->term = cfg->hs.term;
    r->vote = cfg->hs.vote;
    r->commit = cfg->hs.commit > cfg->snap_index ? cfg->hs.commit : cfg->snap_index;
    r->prev_hs = cfg->hs;
    r->role = r->prev_role = CAIRN_RAFT_FOLLOWER;
    r->leader = r->prev_leader = CAIRN_RAFT_NONE;
    randomize_timeout(r);
    if (err)
        *err = 0;
    return r;
fail:
    cairn_raft_destroy(&r);
    if (err)
        *err = e;
    return NULL;
}

void cairn_raft_destroy(cairn_raft_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_raft_t *r = *self_p;
    for (size_t i = 0; i < r->log_n; i++)
        free((void *)r->log[i].data);
    free(r->log);
    for (size_t i = 0; i < r->grave_n; i++)
        free(r->grave[i].p);
    free(r->grave);
    if (r->prs)
        for (size_t i = 0; i < r->n_prs; i++)
            free(r->prs[i].infl);
    free(r->prs);
    free(r->scratch);
    mship_free(&r->snap_mem);
    for (size_t i = 0; i < r->hist.n; i++)
        mship_free(&VEC(r->hist, conf_rec_t)[i].m);
    vec_free(&r->hist);
    mship_free(&r->psnap.m);
    vec_free(&r->h_conf);
    vec_free(&r->h_snapconf);
    vec_free(&r->pend_reads);
    vec_free(&r->open_reads);
    for (size_t i = 0; i < r->rounds.n; i++)
        vec_free(&VEC(r->rounds, read_round_t)[i].reqs);
    vec_free(&r->rounds);
    vec_free(&r->fwd_reads);
    msgq_free(&r->out);
    msgq_free(&r->after);
    msgq_free(&r->h_out);
    msgq_free(&r->h_after);
    vec_free(&r->rs);
    vec_free(&r->h_rs);
    vec_free(&r->rf);
    vec_free(&r->h_rf);
    free(r->rd_ents);
    free(r);
    *self_p = NULL;
}

/* ---- ticks --------------------------------------------------------------------------------- */

static int quorum_active(cairn_raft_t *r)
{
    size_t n = 0; /* voters only */
    for (size_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].voter && (i == r->self || r->prs[i].recent_active))
            n++;
    return n >= r->quorum;
}

void cairn_raft_tick(cairn_raft_t *r)
{
    if (!r)
        return;
    if (r->role != CAIRN_RAFT_LEADER) {
        r->election_elapsed++;
        if (r->election_elapsed >= r->randomized_timeout) {
            r->election_elapsed = 0;
            if (r->self_voter)
                hup(r, 0);
            else if (r->leader != CAIRN_RAFT_NONE)
                become_follower(r, r->term, CAIRN_RAFT_NONE); /* a learner forgets a silent leader */
        }
        return;
    }
    /* A member that has not acknowledged its snapshot for a while goes back to probing, which
     * sends the snapshot again if it still needs one (thesis §5.1; the shell may have lost it). */
    for (size_t i = 0; i < r->n_prs; i++) {
        progress_t *pr = &r->prs[i];
        if (pr->state == PR_SNAPSHOT && ++pr->snap_elapsed >= SNAP_TIMEOUT * r->election_tick)
            become_probe(pr);
    }
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    /* thesis §3.10: a transfer that has not completed within an election timeout is
     * abandoned, and the leader takes proposals again. */
    if (r->transferee && ++r->transfer_elapsed >= r->election_tick) {
        r->transferee = CAIRN_RAFT_NONE;
        r->transfer_elapsed = 0;
    }
    if (r->election_elapsed >= r->election_tick) {
        r->election_elapsed = 0;
        if (r->check_quorum) {
            /* thesis §6.2: a leader that has not heard from a quorum within an election
             * timeout steps down, so that a partitioned leader stops serving. */
            if (!quorum_active(r)) {
                become_follower(r, r->term, CAIRN_RAFT_NONE);
                return;
            }
            for (size_t i = 0; i < r->n_prs; i++)
                if (i != r->self)
                    r->prs[i].recent_active = 0;
        }
    }
    if (r->heartbeat_elapsed >= r->heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        /* Carrying the newest pending read round re-asks for acks lost on the way. */
        uint64_t ctx = r->rounds.n ? VEC(r->rounds, read_round_t)[r->rounds.n - 1].id : 0;
        bcast_heartbeat(r, ctx);
    }
}

/* ---- step ---------------------------------------------------------------------------------- */

/* Raft §5.2/§5.4.1 RequestVote and thesis §9.6 PreVote, answered by any role. */
static int handle_vote_req(cairn_raft_t *r, const cairn_raft_msg_t *m)
{
    int pre = m->type == CAIRN_RAFT_MSG_PREVOTE;
    uint8_t rtype = pre ? CAIRN_RAFT_MSG_PREVOTE_RESP : CAIRN_RAFT_MSG_VOTE_RESP;
    /* One vote per term (Raft §5.2); a prevote for a future term promises nothing. */
    int can_vote = r->vote == m->from || (r->vote == CAIRN_RAFT_NONE && r->leader == CAIRN_RAFT_NONE) ||
                   (pre && m->term > r->term);
    if (can_vote && log_up_to_date(r, m->log_term, m->index)) {
        if (!pre) {
            r->election_elapsed = 0;
            r->vote = m->from;
        }
        /* The grant carries the request's term so the (pre)candidate counts it. */
        send_after(r, (cairn_raft_msg_t){.type = rtype, .to = m->from, .term = m->term});
    } else {
        send_after(r, (cairn_raft_msg_t){.type = rtype, .to = m->from, .term = r->term, .reject = 1});
    }
    return 0;
}

/* Raft §5.3 AppendEntries receiver. */
static int handle_append(cairn_raft_t *r, const cairn_raft_msg_t *m)
{
    cairn_raft_msg_t resp = {.type = CAIRN_RAFT_MSG_APP_RESP, .to = m->from, .term = r->term};
    if (m->index < r->commit) {
        /* Everything up to our commit index is the leader's too (Leader Completeness). */
        resp.index = r->commit;
        send_after(r, resp);
        return 0;
    }
    uint64_t t, last = last_index(r);
    if (!term_of(r, m->index, &t) || t != m->log_term) {
        /* Consistency check failed. Fast backtracking: hint the largest index whose term is
         * <= the leader's term at m->index, with its term, so the leader can skip a whole
         * term's worth of entries per round trip (Raft §5.3, last paragraphs). */
        uint64_t hint = find_conflict_by_term(r, m->index < last ? m->index : last, m->log_term), ht = 0;
        (void)term_of(r, hint, &ht);
        resp.reject = 1;
        resp.index = m->index;
        resp.reject_hint = hint;
        resp.log_term = ht;
        send_after(r, resp);
        return 0;
    }
    /* The leader's entries must continue m->index contiguously, with terms that never go
     * down and never exceed the leader's term. */
    if (!entries_valid(m->entries, m->n_entries, m->index + 1, m->log_term, m->term))
        return CAIRN_EINVAL;
    size_t k = 0;
    for (; k < m->n_entries; k++) {
        uint64_t idx = m->index + 1 + k;
        if (idx > last || ent(r, idx)->term != m->entries[k].term)
            break;
    }
    if (k < m->n_entries) {
        uint64_t idx = m->index + 1 + k;
        if (idx <= last) {
            if (idx <= r->commit)
                return CAIRN_ESTATE; /* would overwrite a committed entry: not from a true leader */
            int rc = log_truncate(r, idx);
            if (rc)
                return rc;
        }
        int rc = append_entries(r, m->entries + k, m->n_entries - k, 0);
        if (rc)
            return rc; /* no answer: the leader will retry */
    }
    uint64_t lastnew = m->index + m->n_entries;
    commit_to(r, m->commit < lastnew ? m->commit : lastnew);
    resp.index = lastnew;
    send_after(r, resp);
    return 0;
}

/* thesis Figure 5.3, InstallSnapshot receiver (the data arrives outside the core). */
static int handle_snap(cairn_raft_t *r, const cairn_raft_msg_t *m)
{
    cairn_raft_msg_t resp = {.type = CAIRN_RAFT_MSG_APP_RESP, .to = m->from, .term = r->term};
    uint64_t t;
    if (m->snap_index <= r->commit) {
        resp.index = r->commit; /* we have it all already */
        send_after(r, resp);
        return 0;
    }
    if (term_of(r, m->snap_index, &t) && t == m->snap_term) {
        /* Figure 5.3 step 6: we hold its last entry, so the whole prefix (Log Matching), which is
         * committed: only the commit index moves. */
        commit_to(r, m->snap_index);
        resp.index = m->snap_index;
        send_after(r, resp);
        return 0;
    }
    /* One install at a time: the shell works on the one it was handed (the leader resends after
     * SNAP_TIMEOUT if that fails); one not handed out yet gives way to a newer one. */
    if (r->psnap.state == 2 || (r->psnap.state == 1 && m->snap_index <= r->psnap.index))
        return 0;
    mship_t ms;
    if (mship_set(&ms, m->voters, m->n_voters, m->learners, m->n_learners))
        return CAIRN_ENOMEM;
    mship_free(&r->psnap.m);
    r->psnap.state = 1;
    r->psnap.index = m->snap_index;
    r->psnap.term = m->snap_term;
    r->psnap.from = m->from;
    r->psnap.seq++;
    r->psnap.m = ms;
    return 0;
}

static int handle_heartbeat(cairn_raft_t *r, const cairn_raft_msg_t *m)
{
    uint64_t last = last_index(r);
    commit_to(r, m->commit < last ? m->commit : last);
    send_now(r, (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_HEARTBEAT_RESP, .to = m->from, .term = r->term,
                                   .context = m->context},
             NULL);
    return 0;
}

static int leader_app_resp(cairn_raft_t *r, progress_t *pr, const cairn_raft_msg_t *m)
{
    uint64_t last = last_index(r);
    if (m->index > last)
        return CAIRN_EINVAL;
    pr->recent_active = 1;
    if (m->reject && pr->state == PR_SNAPSHOT) {
        /* The member could not install it (cairn_raft_snapshot_failed), or this answers an APP
         * from before: probe again after its next heartbeat answer, which resends the snapshot
         * if it is still needed. */
        become_probe(pr);
        pr->probe_sent = 1;
        return 0;
    }
    if (m->reject) {
        uint64_t hint = m->reject_hint < last ? m->reject_hint : last;
        if (m->log_term > 0)
            hint = find_conflict_by_term(r, hint, m->log_term);
        if (pr_maybe_decr_to(pr, m->index, hint)) {
            if (pr->state == PR_REPLICATE)
                become_probe(pr);
            send_append(r, pr, 1);
        }
        return 0;
    }
    int was_paused = pr_paused(r, pr);
    int updated = pr_maybe_update(pr, m->index);
    if (pr->state == PR_SNAPSHOT) {
        if (pr->match < pr->pending_snap)
            return 0; /* an answer to an APP from before the snapshot: keep waiting */
        /* It installed the snapshot (thesis §5.1): replicate from there. */
        updated = 1;
        was_paused = 1;
        pr->state = PR_PROBE;
    }
    if (updated || (pr->match == m->index && pr->state == PR_PROBE)) {
        if (pr->state == PR_PROBE)
            become_replicate(pr);
        else
            infl_free_le(r, pr, m->index);
        /* A new commit index reaches everyone with the next ready; otherwise a follower that
         * was paused (probing) may have missed the current one: tell it now. */
        if (!maybe_commit(r) && was_paused)
            send_append(r, pr, 1);
        while (send_append(r, pr, 0)) {
        }
        /* thesis §3.10: once the target has everything, tell it to start an election. */
        if (pr->id == r->transferee && pr->match == last)
            send_timeout_now(r, pr->id);
    }
    return 0;
}

static int leader_heartbeat_resp(cairn_raft_t *r, progress_t *pr, const cairn_raft_msg_t *m)
{
    pr->recent_active = 1;
    pr->probe_sent = 0;
    /* A full window may mean lost APPs; free a slot so the next one can probe. */
    if (pr->state == PR_REPLICATE && infl_full(r, pr))
        infl_free_first(r, pr);
    if (pr->match < last_index(r))
        send_append(r, pr, 1);
    if (m->context && m->context <= r->read_seq && m->context > pr->read_ack) {
        pr->read_ack = m->context;
        advance_reads(r);
    }
    return 0;
}

static int step_leader(cairn_raft_t *r, const cairn_raft_msg_t *m)
{
    progress_t *pr = pr_of(r, m->from);
    switch (m->type) {
    case CAIRN_RAFT_MSG_PROP:
        if (r->transferee)
            return CAIRN_ESTATE; /* thesis §3.10: no new entries while handing over */
        if (m->n_entries == 0)
            return CAIRN_EINVAL;
        for (size_t i = 0; i < m->n_entries; i++)
            if (m->entries[i].type != CAIRN_RAFT_ENTRY_NORMAL)
                return CAIRN_EINVAL; /* membership changes go through cairn_raft_propose_conf */
        if (log_append(r, m->entries, m->n_entries, r->term))
            return CAIRN_ENOMEM;
        r->need_bcast = 1;
        return 0;
    case CAIRN_RAFT_MSG_APP_RESP:
        return pr && pr->member ? leader_app_resp(r, pr, m) : 0; /* a non-member's answer: ignored */
    case CAIRN_RAFT_MSG_HEARTBEAT_RESP:
        return pr && pr->member ? leader_heartbeat_resp(r, pr, m) : 0;
    case CAIRN_RAFT_MSG_READINDEX:
        leader_read(r, m->context, m->from);
        return 0;
    case CAIRN_RAFT_MSG_APP:
    case CAIRN_RAFT_MSG_HEARTBEAT:
    case CAIRN_RAFT_MSG_SNAP:
        return CAIRN_ESTATE; /* a second leader in our term: impossible from a correct peer */
    default:
        return 0; /* late vote answers and the like */
    }
}

static int step_candidate(cairn_raft_t *r, const cairn_raft_msg_t *m)
{
    switch (m->type) {
    case CAIRN_RAFT_MSG_PROP:
    case CAIRN_RAFT_MSG_READINDEX:
        return CAIRN_ENOT_LEADER;
    case CAIRN_RAFT_MSG_APP:
        /* Raft §5.2: a leader of our term exists; it won. */
        become_follower(r, m->term, m->from);
        return handle_append(r, m);
    case CAIRN_RAFT_MSG_HEARTBEAT:
        become_follower(r, m->term, m->from);
        return handle_heartbeat(r, m);
    case CAIRN_RAFT_MSG_SNAP:
        become_follower(r, m->term, m->from);
        return handle_snap(r, m);
    case CAIRN_RAFT_MSG_VOTE_RESP:
    case CAIRN_RAFT_MSG_PREVOTE_RESP: {
        int pre = r->role == CAIRN_RAFT_PRECANDIDATE;
        if ((m->type == CAIRN_RAFT_MSG_PREVOTE_RESP) != pre)
            return 0;
        if (pre && !m->reject && m->term != r->term + 1)
            return 0; /* a grant for some other round */
        switch (poll(r, m->from, !m->reject)) {
        case VOTE_WON:
            if (pre)
                start_election(r, 0);
            else
                become_leader(r);
            break;
        case VOTE_LOST:
            become_follower(r, r->term, CAIRN_RAFT_NONE);
            break;
        }
        return 0;
    }
    default:
        return 0;
    }
}

static int step_follower(cairn_raft_t *r, const cairn_raft_msg_t *m)
{
    switch (m->type) {
    case CAIRN_RAFT_MSG_PROP:
    case CAIRN_RAFT_MSG_READINDEX:
        /* Not re-forwarded: two nodes with stale views must not bounce it between them. */
        return CAIRN_ENOT_LEADER;
    case CAIRN_RAFT_MSG_APP:
        r->election_elapsed = 0;
        r->leader = m->from;
        return handle_append(r, m);
    case CAIRN_RAFT_MSG_HEARTBEAT:
        r->election_elapsed = 0;
        r->leader = m->from;
        return handle_heartbeat(r, m);
    case CAIRN_RAFT_MSG_SNAP:
        r->election_elapsed = 0;
        r->leader = m->from;
        return handle_snap(r, m);
    case CAIRN_RAFT_MSG_TIMEOUT_NOW:
        /* thesis §3.10: the leader asks us to take over; no PreVote, and followers grant
         * despite their leader lease because the request is flagged as a transfer. */
        hup(r, 1);
        return 0;
    case CAIRN_RAFT_MSG_READINDEX_RESP:
        for (size_t i = 0; i < r->fwd_reads.n; i++) {
            uint64_t *v = VEC(r->fwd_reads, uint64_t);
            if (v[i] == m->context) {
                v[i] = v[--r->fwd_reads.n];
                push_read_state(r, m->index, m->context);
                break;
            }
        }
        return 0;
    default:
        return 0;
    }
}

int cairn_raft_step(cairn_raft_t *r, const cairn_raft_msg_t *m)
{
    if (!r || !m)
        return CAIRN_EINVAL;
    /* The sender may be outside our configuration (thesis §4.1), but never node 0 or us. */
    if (m->type == 0 || m->type >= CAIRN_RAFT_MSG_TYPE_MAX_ || m->to != r->id || m->from == r->id ||
        m->from == CAIRN_RAFT_NONE)
        return CAIRN_EINVAL;
    if (m->n_entries && (!m->entries || (m->type != CAIRN_RAFT_MSG_APP && m->type != CAIRN_RAFT_MSG_PROP)))
        return CAIRN_EINVAL;
    for (size_t i = 0; i < m->n_entries; i++)
        if ((m->entries[i].len && !m->entries[i].data) || m->entries[i].type > CAIRN_RAFT_ENTRY_CONF)
            return CAIRN_EINVAL;
    if (m->type == CAIRN_RAFT_MSG_SNAP) {
        int rc;
        if (m->snap_index == 0 || m->snap_term == 0 || m->snap_term > m->term)
            return CAIRN_EINVAL;
        if ((rc = mship_arrays_valid(m->voters, m->n_voters, m->learners, m->n_learners)) != 0)
            return rc;
    }

    /* Proposals and read requests are forwarded requests, not Raft RPCs: they carry no term. */
    if (m->type != CAIRN_RAFT_MSG_PROP && m->type != CAIRN_RAFT_MSG_READINDEX) {
        if (m->term == 0)
            return CAIRN_EINVAL;
        if (m->term > r->term) {
            if (m->type == CAIRN_RAFT_MSG_VOTE || m->type == CAIRN_RAFT_MSG_PREVOTE) {
                /* Leader lease (thesis §4.2.3, §9.6): a node that heard from a leader within
                 * the minimum election timeout ignores vote requests, so a partitioned node
                 * rejoining with a high term cannot depose a healthy leader. A transfer
                 * campaign is exempt: the leader itself asked for it. */
                int force = m->context == CAIRN_RAFT_CTX_TRANSFER;
                /* thesis §4.2.3 disruptive servers: a candidate outside our voters - typically
                 * a removed server that never learned of its removal, since the leader stopped
                 * replicating to it - is held off by the lease even without CheckQuorum, or its
                 * ever higher terms depose every leader before the removal can commit. */
                const progress_t *cp = pr_of(r, m->from);
                int outsider = !cp || !cp->voter;
                int in_lease = (r->check_quorum || outsider) && r->leader != CAIRN_RAFT_NONE &&
                               r->election_elapsed < r->election_tick;
                if (!force && in_lease)
                    return 0;
            }
            if (m->type == CAIRN_RAFT_MSG_PREVOTE) {
                /* thesis §9.6: a prevote does not change our term. */
            } else if (m->type == CAIRN_RAFT_MSG_PREVOTE_RESP && !m->reject) {
                /* A grant carries the term we asked for; we move there when we campaign. */
            } else if (m->type == CAIRN_RAFT_MSG_APP || m->type == CAIRN_RAFT_MSG_HEARTBEAT ||
                       m->type == CAIRN_RAFT_MSG_SNAP) {
                become_follower(r, m->term, m->from); /* Raft §5.1 */
            } else {
                /* Raft §5.2 (Fig. 2): only AppendEntries from the current leader or granting a
                 * vote restarts the election timer. A candidate that cannot win (stale log)
                 * must not keep resetting the timers of the members that could. */
                int elapsed = r->election_elapsed, timeout = r->randomized_timeout;
                become_follower(r, m->term, CAIRN_RAFT_NONE);
                r->election_elapsed = elapsed;
                r->randomized_timeout = timeout;
            }
        } else if (m->term < r->term) {
            if (m->type == CAIRN_RAFT_MSG_APP || m->type == CAIRN_RAFT_MSG_HEARTBEAT ||
                m->type == CAIRN_RAFT_MSG_SNAP) {
                /* Raft Fig. 2: refuse with our term, and the stale leader (e.g. back from a
                 * partition) steps down. etcd answers only with PreVote/CheckQuorum, counting
                 * otherwise on our vote requests to reach it; with membership changes they may
                 * not: a learner never campaigns, and a member whose log is behind may not know
                 * that leader is a voter. */
                send_after(r, (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP_RESP, .to = m->from, .term = r->term});
            } else if (m->type == CAIRN_RAFT_MSG_PREVOTE || m->type == CAIRN_RAFT_MSG_VOTE) {
                /* Raft Fig. 2: a stale RequestVote is refused with our term, which the
                 * candidate adopts. With membership changes it may be the only way it learns
                 * the term: a member whose log is behind may not know the candidate is a voter,
                 * so its own campaigns (without PreVote, each at a new term) never reach it. */
                send_after(r, (cairn_raft_msg_t){.type = m->type == CAIRN_RAFT_MSG_VOTE ? CAIRN_RAFT_MSG_VOTE_RESP
                                                                                          : CAIRN_RAFT_MSG_PREVOTE_RESP,
                                                 .to = m->from, .term = r->term, .reject = 1});
            }
            return 0; /* Raft §5.1: stale terms are otherwise ignored */
        }
    }

    if (m->type == CAIRN_RAFT_MSG_VOTE || m->type == CAIRN_RAFT_MSG_PREVOTE)
        return handle_vote_req(r, m);
    switch (r->role) {
    case CAIRN_RAFT_LEADER: {
        int rc = step_leader(r, m);
        leader_maybe_leave(r); /* an acknowledgement may have committed our own removal */
        return rc;
    }
    case CAIRN_RAFT_CANDIDATE:
    case CAIRN_RAFT_PRECANDIDATE:
        return step_candidate(r, m);
    default:
        return step_follower(r, m);
    }
}

/* ---- local requests ------------------------------------------------------------------------ */

int cairn_raft_propose(cairn_raft_t *r, const void *data, size_t len, uint64_t *index_out)
{
    if (index_out)
        *index_out = 0;
    if (!r || (len && !data))
        return CAIRN_EINVAL;
    if (r->role == CAIRN_RAFT_LEADER) {
        if (r->transferee)
            return CAIRN_ESTATE; /* thesis §3.10 */
        cairn_raft_entry_t e = {.type = CAIRN_RAFT_ENTRY_NORMAL, .data = data, .len = len};
        int rc = log_append(r, &e, 1, r->term);
        if (rc)
            return rc;
        /* Replication waits for the next ready, so that every proposal made between two
         * readies travels in one APP per follower. */
        r->need_bcast = 1;
        if (index_out)
            *index_out = last_index(r);
        return 0;
    }
    if (r->role != CAIRN_RAFT_FOLLOWER || r->leader == CAIRN_RAFT_NONE)
        return CAIRN_ENOT_LEADER;
    /* Forward to the leader: the message owns one block holding the entry and its data. */
    cairn_raft_entry_t *e = malloc(sizeof *e + len);
    if (!e)
        return CAIRN_ENOMEM;
    *e = (cairn_raft_entry_t){.type = CAIRN_RAFT_ENTRY_NORMAL, .len = len};
    if (len) {
        memcpy(e + 1, data, len);
        e->data = (const uint8_t *)(e + 1);
    }
    send_now(r, (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_PROP, .to = r->leader, .entries = e, .n_entries = 1}, e);
    return 0;
}

int cairn_raft_read_index(cairn_raft_t *r, uint64_t context)
{
    if (!r)
        return CAIRN_EINVAL;
    if (r->role == CAIRN_RAFT_LEADER) {
        leader_read(r, context, r->id);
    } else if (r->role == CAIRN_RAFT_FOLLOWER && r->leader != CAIRN_RAFT_NONE) {
        if (r->fwd_reads.n >= MAX_FWD_READS) {
            uint64_t *v = VEC(r->fwd_reads, uint64_t);
            push_read_failure(r, v[0]);
            memmove(v, v + 1, (r->fwd_reads.n - 1) * sizeof *v);
            r->fwd_reads.n--;
        }
        if (vec_push(&r->fwd_reads, &context, sizeof context)) {
            push_read_failure(r, context);
            return 0;
        }
        send_now(r, (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_READINDEX, .to = r->leader, .context = context},
                 NULL);
    } else {
        push_read_failure(r, context);
    }
    return 0;
}

void cairn_raft_persisted(cairn_raft_t *r, uint64_t index, uint64_t term)
{
    uint64_t t;
    if (!r || index <= r->stable || !term_of(r, index, &t) || t != term)
        return; /* stale: that entry was replaced since (term mismatch) or already counted */
    r->stable = index;
    if (r->role == CAIRN_RAFT_LEADER) {
        progress_t *me = &r->prs[r->self];
        if (me->match < index)
            me->match = index;
        maybe_commit(r);
        leader_maybe_leave(r);
    }
}

int cairn_raft_transfer_leader(cairn_raft_t *r, uint64_t to)
{
    if (!r)
        return CAIRN_EINVAL;
    if (r->role != CAIRN_RAFT_LEADER)
        return CAIRN_ENOT_LEADER;
    progress_t *pr = pr_of(r, to);
    if (!pr || !pr->voter)
        return CAIRN_EINVAL;
    if (to == r->id || to == r->transferee)
        return 0;
    r->transferee = to;
    r->transfer_elapsed = 0;
    /* thesis §3.10: bring the target up to date first, then TimeoutNow. */
    if (pr->match == last_index(r))
        send_timeout_now(r, to);
    else
        send_append(r, pr, 1);
    return 0;
}

int cairn_raft_campaign(cairn_raft_t *r)
{
    if (!r)
        return CAIRN_EINVAL;
    if (!r->self_voter)
        return CAIRN_ESTATE;
    hup(r, 0);
    return 0;
}

/* ---- membership changes (thesis §4.1) ------------------------------------------------------ */

int cairn_raft_propose_conf_ctx(cairn_raft_t *r, cairn_raft_conf_op_t op, uint64_t id, const void *ctx,
                                size_t ctx_len, uint64_t *index_out)
{
    if (index_out)
        *index_out = 0;
    if (!r || (ctx_len && !ctx) || ctx_len > CAIRN_RAFT_CONF_MAX_CTX || id == CAIRN_RAFT_NONE ||
        op < CAIRN_RAFT_CONF_ADD_VOTER || op > CAIRN_RAFT_CONF_UPDATE)
        return CAIRN_EINVAL;
    if (r->role != CAIRN_RAFT_LEADER)
        return CAIRN_ENOT_LEADER;
    /* thesis §3.10 no new entries while handing over; §4.1 one change at a time: the previous
     * one must be committed; raft-dev 2015: the leader must have committed an entry of its own
     * term, or a change appended by a previous leader may still be replaced. */
    if (r->transferee || last_conf_index(r) > r->commit || !committed_in_term(r))
        return CAIRN_ESTATE;
    const mship_t *cur = cur_mship(r);
    int role = mship_role(cur, id);
    switch (op) {
    case CAIRN_RAFT_CONF_ADD_VOTER:
    case CAIRN_RAFT_CONF_ADD_LEARNER:
        if (role >= 0)
            return CAIRN_EEXISTS;
        if (cur->nv + cur->nl >= CAIRN_RAFT_MAX_MEMBERS)
            return CAIRN_EINVAL;
        break;
    case CAIRN_RAFT_CONF_PROMOTE: {
        if (role < 0)
            return CAIRN_ENOTFOUND;
        if (role == 1)
            return CAIRN_EINVAL; /* not a learner */
        /* thesis §4.2.1: a new voter that is far behind would stall commits while it catches
         * up. Caught up: it acknowledged an entry within CAIRN_RAFT_PROMOTE_MAX_LAG of our last
         * (match == 0: it has not answered this leader yet). */
        progress_t *pr = pr_of(r, id);
        if (!pr || pr->match == 0 || pr->match + CAIRN_RAFT_PROMOTE_MAX_LAG < last_index(r))
            return CAIRN_EAGAIN;
        break;
    }
    case CAIRN_RAFT_CONF_REMOVE:
        if (role < 0)
            return CAIRN_ENOTFOUND;
        if (role == 1 && cur->nv == 1)
            return CAIRN_EINVAL; /* the last voter */
        break;
    default: /* UPDATE */
        if (role < 0)
            return CAIRN_ENOTFOUND;
        break;
    }
    uint8_t small[9 + 64], *buf = ctx_len <= 64 ? small : malloc(9 + ctx_len);
    if (!buf)
        return CAIRN_ENOMEM;
    cairn_raft_entry_t e = {.type = CAIRN_RAFT_ENTRY_CONF, .data = buf,
                            .len = cairn_entry_conf_encode(buf, (uint8_t)op, id, ctx, ctx_len)};
    int rc = append_entries(r, &e, 1, r->term);
    if (buf != small)
        free(buf);
    if (rc)
        return rc;
    r->need_bcast = 1;
    if (index_out)
        *index_out = last_index(r);
    return 0;
}

int cairn_raft_propose_conf(cairn_raft_t *r, cairn_raft_conf_op_t op, uint64_t node_id)
{
    return cairn_raft_propose_conf_ctx(r, op, node_id, NULL, 0, NULL);
}

/* ---- compaction and snapshots (thesis ch. 5) ----------------------------------------------- */

int cairn_raft_compact(cairn_raft_t *r, uint64_t index, uint64_t term)
{
    uint64_t t;
    if (!r)
        return CAIRN_EINVAL;
    if (index <= r->snap_index)
        return index == r->snap_index && term != r->snap_term ? CAIRN_EINVAL : 0;
    /* Only what the state machine can have applied: committed and durable here. */
    if (index > r->commit || index > r->stable || !term_of(r, index, &t) || t != term)
        return CAIRN_EINVAL;
    return log_compact(r, index, term);
}

/* Sends the answer of an install to the leader (or whoever sent the snapshot). */
static void snap_answer(cairn_raft_t *r, cairn_raft_msg_t m)
{
    m.type = CAIRN_RAFT_MSG_APP_RESP;
    m.to = r->leader != CAIRN_RAFT_NONE && r->leader != r->id ? r->leader : r->psnap.from;
    m.term = r->term;
    if (m.to != r->id)
        send_after(r, m);
}

static void psnap_clear(cairn_raft_t *r)
{
    mship_free(&r->psnap.m);
    r->psnap.state = 0;
}

int cairn_raft_snapshot_installed(cairn_raft_t *r, uint64_t index, uint64_t term)
{
    if (!r)
        return CAIRN_EINVAL;
    if (!r->psnap.state)
        return CAIRN_ESTATE;
    if (index != r->psnap.index || term != r->psnap.term)
        return CAIRN_EINVAL;
    if (index <= r->snap_index) {
        /* The log moved past it meanwhile (it was committed and compacted here). */
        snap_answer(r, (cairn_raft_msg_t){.index = r->commit});
        psnap_clear(r);
        return 0;
    }
    uint64_t t;
    int keep = term_of(r, index, &t) && t == term; /* Figure 5.3 step 6 */
    /* The configuration after the install: the snapshot's, then the configuration entries the
     * kept suffix holds. */
    const mship_t *target = &r->psnap.m;
    if (keep && r->hist.n && VEC(r->hist, conf_rec_t)[r->hist.n - 1].index > index)
        target = &VEC(r->hist, conf_rec_t)[r->hist.n - 1].m;
    prset_t ps;
    if (prset_prepare(r, target, &ps))
        return CAIRN_ENOMEM;
    int changed = !mship_eq(cur_mship(r), target);
    if (keep ? log_compact(r, index, term) : log_reset(r, index, term)) {
        prset_abort(r, &ps);
        return CAIRN_ENOMEM;
    }
    /* The snapshot's configuration is the leader's, the authority at that index. */
    mship_free(&r->snap_mem);
    r->snap_mem = r->psnap.m;
    r->psnap.m = (mship_t){0};
    if (r->commit < index)
        r->commit = index;
    prset_commit(r, &ps);
    if (changed)
        r->conf_ver++;
    snap_answer(r, (cairn_raft_msg_t){.index = index});
    psnap_clear(r);
    return 0;
}

int cairn_raft_snapshot_failed(cairn_raft_t *r)
{
    if (!r)
        return CAIRN_EINVAL;
    if (!r->psnap.state)
        return CAIRN_ESTATE;
    snap_answer(r, (cairn_raft_msg_t){.reject = 1, .index = r->psnap.index, .reject_hint = last_index(r),
                                      .log_term = last_term(r)});
    psnap_clear(r);
    return 0;
}

void cairn_raft_report_snapshot(cairn_raft_t *r, uint64_t to, int ok)
{
    progress_t *pr = r && r->role == CAIRN_RAFT_LEADER ? pr_of(r, to) : NULL;
    if (!pr || pr->state != PR_SNAPSHOT)
        return;
    uint64_t pending = pr->pending_snap;
    become_probe(pr);
    if (ok && pr->next < pending + 1)
        pr->next = pending + 1; /* etcd: probe right after the snapshot */
    pr->probe_sent = 1;         /* wait for the member's ack or its next heartbeat answer */
}

/* ---- ready / advance ----------------------------------------------------------------------- */

static cairn_raft_hardstate_t cur_hs(const cairn_raft_t *r)
{
    return (cairn_raft_hardstate_t){r->term, r->vote, r->commit};
}

static int hs_eq(cairn_raft_hardstate_t a, cairn_raft_hardstate_t b)
{
    return a.term == b.term && a.vote == b.vote && a.commit == b.commit;
}

int cairn_raft_has_ready(const cairn_raft_t *r)
{
    if (!r)
        return 0;
    return !hs_eq(cur_hs(r), r->prev_hs) || r->unstable_from <= last_index(r) || r->out.n || r->after.n ||
           r->rs.n || r->rf.n || r->leader != r->prev_leader || r->role != r->prev_role ||
           r->psnap.state == 1 || r->conf_ver != r->prev_conf_ver ||
           (r->role == CAIRN_RAFT_LEADER && (r->need_bcast || r->need_bcast_commit || r->open_reads.n));
}

/* Work deferred to the ready so that it is batched: one APP per follower for all the
 * proposals since the last ready, one heartbeat round for all the reads. */
static void flush(cairn_raft_t *r)
{
    if (r->role != CAIRN_RAFT_LEADER)
        return;
    if (r->need_bcast || r->need_bcast_commit) {
        bcast_append(r, r->need_bcast_commit);
        r->need_bcast = r->need_bcast_commit = 0;
    }
    if (r->open_reads.n) {
        /* thesis §6.4 steps 1-3: record the commit index, then confirm leadership with a
         * heartbeat round sent after every request of the batch arrived. */
        read_round_t rr = {++r->read_seq, r->commit, r->open_reads};
        r->open_reads = (vec_t){0};
        if (vec_push(&r->rounds, &rr, sizeof rr)) {
            fail_reqs(r, &rr.reqs);
            vec_free(&rr.reqs);
            return;
        }
        bcast_heartbeat(r, rr.id);
    }
}

void cairn_raft_ready(cairn_raft_t *r, cairn_raft_ready_t *rd)
{
    if (!rd)
        return;
    memset(rd, 0, sizeof *rd);
    if (!r)
        return;
    flush(r);
    rd->leader = r->leader;
    rd->role = r->role;
    rd->term = r->term;
    rd->hs = cur_hs(r);
    rd->hs_changed = !hs_eq(rd->hs, r->prev_hs);
    uint64_t last = last_index(r);
    if (r->unstable_from <= last) {
        size_t n = (size_t)(last - r->unstable_from + 1);
        if (grow((void **)&r->rd_ents, &r->rd_ents_cap, n, sizeof *r->rd_ents) == 0) {
            memcpy(r->rd_ents, ent(r, r->unstable_from), n * sizeof *r->rd_ents);
            rd->entries = r->rd_ents;
            rd->n_entries = n;
            r->handed_last = last;
            r->handed_entries = 1;
        }
    }
    msgq_hand(&r->h_out, &r->out);
    msgq_hand(&r->h_after, &r->after);
    vec_hand(&r->h_rs, &r->rs, sizeof(cairn_raft_read_state_t));
    vec_hand(&r->h_rf, &r->rf, sizeof(uint64_t));
    rd->msgs = r->h_out.m;
    rd->n_msgs = r->h_out.n;
    rd->msgs_after_persist = r->h_after.m;
    rd->n_msgs_after_persist = r->h_after.n;
    rd->commit = r->commit;
    rd->read_states = r->h_rs.v;
    rd->n_read_states = r->h_rs.n;
    rd->read_failures = r->h_rf.v;
    rd->n_read_failures = r->h_rf.n;
    r->handed_snap = 0;
    if (r->psnap.state == 1) {
        const mship_t *m = &r->psnap.m;
        r->h_snapconf.n = 0;
        if (grow(&r->h_snapconf.v, &r->h_snapconf.cap, m->nv + m->nl, sizeof(uint64_t)) == 0) {
            memcpy(r->h_snapconf.v, m->ids, (m->nv + m->nl) * sizeof(uint64_t));
            rd->has_snapshot = 1;
            rd->snapshot_index = r->psnap.index;
            rd->snapshot_term = r->psnap.term;
            rd->snapshot_voters = r->h_snapconf.v;
            rd->n_snapshot_voters = m->nv;
            rd->snapshot_learners = m->nl ? VEC(r->h_snapconf, uint64_t) + m->nv : NULL;
            rd->n_snapshot_learners = m->nl;
            rd->snapshot_from = r->psnap.from;
            r->handed_snap = 1;
            r->handed_snap_seq = r->psnap.seq;
        }
    }
    r->handed_conf_ver = r->prev_conf_ver;
    if (r->conf_ver != r->prev_conf_ver) {
        const mship_t *m = cur_mship(r);
        if (grow(&r->h_conf.v, &r->h_conf.cap, m->nv + m->nl, sizeof(uint64_t)) == 0) {
            memcpy(r->h_conf.v, m->ids, (m->nv + m->nl) * sizeof(uint64_t));
            rd->conf_changed = 1;
            rd->voters = r->h_conf.v;
            rd->n_voters = m->nv;
            rd->learners = m->nl ? VEC(r->h_conf, uint64_t) + m->nv : NULL;
            rd->n_learners = m->nl;
            r->handed_conf_ver = r->conf_ver;
        }
    }
    r->handed_hs = rd->hs;
    r->handed_leader = rd->leader;
    r->handed_role = rd->role;
    r->outstanding = 1;
    r->gen++;
}

void cairn_raft_advance(cairn_raft_t *r, const cairn_raft_ready_t *rd)
{
    (void)rd;
    if (!r || !r->outstanding)
        return;
    if (r->handed_entries && r->unstable_from < r->handed_last + 1)
        r->unstable_from = r->handed_last + 1;
    r->handed_entries = 0;
    r->prev_hs = r->handed_hs;
    r->prev_leader = r->handed_leader;
    r->prev_role = r->handed_role;
    r->prev_conf_ver = r->handed_conf_ver;
    if (r->handed_snap && r->psnap.state == 1 && r->psnap.seq == r->handed_snap_seq)
        r->psnap.state = 2; /* the shell has it */
    r->handed_snap = 0;
    msgq_clear(&r->h_out);
    msgq_clear(&r->h_after);
    r->h_rs.n = 0;
    r->h_rf.n = 0;
    size_t keep = 0;
    for (size_t i = 0; i < r->grave_n; i++) {
        if (r->grave[i].gen <= r->gen)
            free(r->grave[i].p);
        else
            r->grave[keep++] = r->grave[i];
    }
    r->grave_n = keep;
    r->outstanding = 0;
}

/* ---- introspection ------------------------------------------------------------------------- */

cairn_raft_role_t cairn_raft_role(const cairn_raft_t *r) { return r ? r->role : CAIRN_RAFT_FOLLOWER; }
uint64_t cairn_raft_leader(const cairn_raft_t *r) { return r ? r->leader : CAIRN_RAFT_NONE; }
uint64_t cairn_raft_term(const cairn_raft_t *r) { return r ? r->term : 0; }
uint64_t cairn_raft_commit(const cairn_raft_t *r) { return r ? r->commit : 0; }
uint64_t cairn_raft_last_index(const cairn_raft_t *r) { return r ? last_index(r) : 0; }

uint64_t cairn_raft_term_at(const cairn_raft_t *r, uint64_t index)
{
    uint64_t t;
    return r && term_of(r, index, &t) ? t : 0;
}

uint64_t cairn_raft_snapshot_index(const cairn_raft_t *r) { return r ? r->snap_index : 0; }
uint64_t cairn_raft_snapshot_term(const cairn_raft_t *r) { return r ? r->snap_term : 0; }

uint64_t cairn_raft_log_bytes(const cairn_raft_t *r) { return r ? r->log_bytes : 0; }

uint64_t cairn_raft_index_to_fit(const cairn_raft_t *r, uint64_t max_bytes)
{
    if (!r)
        return 0;
    /* walks only the entries that would go: O(dropped), not O(log) */
    uint64_t bytes = r->log_bytes, i = r->snap_index;
    size_t k = 0;
    while (bytes > max_bytes && k < r->log_n) {
        bytes -= r->log[k++].len;
        i++;
    }
    return i;
}

size_t cairn_raft_voters(const cairn_raft_t *r, const uint64_t **ids)
{
    const mship_t *m = r ? cur_mship(r) : NULL;
    if (ids)
        *ids = m ? m->ids : NULL;
    return m ? m->nv : 0;
}

size_t cairn_raft_learners(const cairn_raft_t *r, const uint64_t **ids)
{
    const mship_t *m = r ? cur_mship(r) : NULL;
    if (ids)
        *ids = m && m->nl ? m->ids + m->nv : NULL;
    return m ? m->nl : 0;
}

int cairn_raft_conf_at(const cairn_raft_t *r, uint64_t index, const uint64_t **voters, size_t *n_voters,
                       const uint64_t **learners, size_t *n_learners)
{
    if (!r || index < r->snap_index || index > last_index(r))
        return CAIRN_EINVAL;
    const mship_t *m = mship_at(r, index);
    if (voters)
        *voters = m->ids;
    if (n_voters)
        *n_voters = m->nv;
    if (learners)
        *learners = m->nl ? m->ids + m->nv : NULL;
    if (n_learners)
        *n_learners = m->nl;
    return 0;
}

uint64_t cairn_raft_pending_conf_index(const cairn_raft_t *r)
{
    if (!r)
        return 0;
    uint64_t ci = last_conf_index(r);
    return ci > r->commit ? ci : 0;
}

uint64_t cairn_raft_conf_errors(const cairn_raft_t *r) { return r ? r->conf_errors : 0; }

int cairn_raft_progress(const cairn_raft_t *r, uint64_t id, cairn_raft_progress_t *out)
{
    if (!r || !out)
        return CAIRN_EINVAL;
    if (r->role != CAIRN_RAFT_LEADER)
        return CAIRN_ENOT_LEADER;
    for (size_t i = 0; i < r->n_prs; i++) {
        const progress_t *pr = &r->prs[i];
        if (pr->id != id || !pr->member)
            continue;
        *out = (cairn_raft_progress_t){.match = pr->match, .next = pr->next, .state = pr->state, .voter = pr->voter,
                                       .pending_snapshot = pr->pending_snap, .recent_active = pr->recent_active};
        return 0;
    }
    return CAIRN_ENOTFOUND;
}
