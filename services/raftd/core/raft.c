/* raft.c - the pure, deterministic Raft core (see raft.h for the contract with the shell).
 *
 * References: "In Search of an Understandable Consensus Algorithm" (Ongaro & Ousterhout,
 * the paper, cited as "Raft §x") and "Consensus: Bridging Theory and Practice" (Ongaro's
 * thesis, cited as "thesis §x"). The structure follows etcd-io/raft, whose behaviour is the
 * reference for the corner cases the papers leave open (flow control, fast backtracking).
 *
 * Map of this file
 *   - small vectors, the outbox and the graveyard (deferred frees, see "Memory" below)
 *   - the log: an array of entries offset by snap_index, so that compaction (issue 3) only
 *     has to move snap_index and shift the array
 *   - progress: per-follower replication state (probe / replicate, inflight ring)
 *   - roles: become_follower / precandidate / candidate / leader
 *   - replication, commit, read index, leadership transfer
 *   - step: the one entry point for peer messages
 *   - ready / advance
 *
 * Memory. Everything a ready hands out is owned by the core and stays valid until advance():
 *   - ready.entries is a shallow copy (into rd_ents) of the log's unstable tail; the entry
 *     data stays in the log.
 *   - an APP message carries its own malloc'd array of entry structs whose data pointers point
 *     into the log, so a leader does not copy payloads once per follower.
 * Entry data can only disappear from the log by truncation (a follower overwriting a
 * conflicting suffix, Raft §5.3). Truncated data is not freed at once: it goes to the
 * graveyard tagged with the number of the next ready. Every pointer to it was created before
 * the truncation, so it sits either in the outstanding ready or in the outbox that the next
 * ready hands out; advancing that next ready frees it.
 *
 * Robustness. cairn_raft_step() validates every field it uses: a message for another node,
 * from a non-member, of unknown type, with absurd indices or non-contiguous entries is
 * refused with a negative code and changes nothing. No assert() on peer input anywhere.
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

enum { PR_PROBE = 0, PR_REPLICATE = 1 };
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
    int state;            /* PR_PROBE or PR_REPLICATE */
    int probe_sent;       /* PROBE: one APP is out, wait for its answer or a heartbeat reply */
    int recent_active;    /* heard from it since the last CheckQuorum round (thesis §6.2) */
    int vote;             /* this election: -1 no answer, 0 rejected, 1 granted */
    uint64_t read_ack;    /* highest read round it has acknowledged in this term */
    uint64_t *infl;       /* REPLICATE: ring of the last index carried by each APP in flight */
    size_t infl_head, infl_n;
} progress_t;

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
    progress_t *prs;
    size_t n_prs, self, quorum;
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
    cairn_raft_entry_t *log;
    size_t log_n, log_cap;
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
    r->log_n += n;
    return 0;
}

/* Removes the entries from index `from` on (Raft §5.3: a conflicting suffix is deleted).
 * Their data goes to the graveyard: messages and the outstanding ready may point at it. */
static int log_truncate(cairn_raft_t *r, uint64_t from)
{
    if (from <= r->snap_index || from > last_index(r))
        return from > last_index(r) ? 0 : CAIRN_EINVAL;
    size_t k = (size_t)(from - r->snap_index - 1);
    if (grow((void **)&r->grave, &r->grave_cap, r->grave_n + (r->log_n - k), sizeof *r->grave))
        return CAIRN_ENOMEM;
    for (size_t i = k; i < r->log_n; i++)
        if (r->log[i].data)
            r->grave[r->grave_n++] = (grave_t){(void *)r->log[i].data, r->gen + 1};
    r->log_n = k;
    if (r->unstable_from > from)
        r->unstable_from = from;
    if (r->handed_last >= from)
        r->handed_last = from - 1;
    if (r->stable >= from)
        r->stable = from - 1;
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
    return pr->state == PR_PROBE ? pr->probe_sent : infl_full(r, pr);
}

static void become_probe(progress_t *pr)
{
    pr->state = PR_PROBE;
    pr->next = pr->match + 1;
    pr->probe_sent = 0;
    pr->infl_head = pr->infl_n = 0;
}

static void become_replicate(progress_t *pr)
{
    pr->state = PR_REPLICATE;
    pr->next = pr->match + 1;
    pr->probe_sent = 0;
    pr->infl_head = pr->infl_n = 0;
}

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
    if (r->n_prs == 1) {
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
        size_t acks = 0;
        for (size_t i = 0; i < r->n_prs; i++)
            if (i == r->self || r->prs[i].read_ack >= rr->id)
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

/* Sends the next APP to pr if its flow control allows. With send_if_empty an APP without
 * entries goes out too (to carry the commit index, or to probe after a heartbeat reply).
 * Returns 1 if a message was sent. */
static int send_append(cairn_raft_t *r, progress_t *pr, int send_if_empty)
{
    if (pr_paused(r, pr))
        return 0;
    uint64_t prev = pr->next - 1, prev_term;
    if (!term_of(r, prev, &prev_term))
        return 0; /* the follower needs entries we compacted: InstallSnapshot, issue 3 */
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
    size_t n = r->n_prs;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = r->prs[i].match;
        size_t j = i;
        while (j > 0 && r->scratch[j - 1] < v) {
            r->scratch[j] = r->scratch[j - 1];
            j--;
        }
        r->scratch[j] = v;
    }
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
    if (pr && pr->vote < 0)
        pr->vote = granted ? 1 : 0;
    size_t yes = 0, no = 0;
    for (size_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].vote == 1)
            yes++;
        else if (r->prs[i].vote == 0)
            no++;
    }
    if (yes >= r->quorum)
        return VOTE_WON;
    if (no > r->n_prs - r->quorum)
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
        pr->next = last + 1;
        pr->state = PR_PROBE;
        pr->probe_sent = 0;
        pr->infl_head = pr->infl_n = 0;
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
        if (i == r->self)
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
    if (r->role == CAIRN_RAFT_LEADER)
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
    if (!cfg || cfg->id == CAIRN_RAFT_NONE || !cfg->voters || cfg->n_voters == 0)
        goto fail;
    int self_found = 0;
    for (size_t i = 0; i < cfg->n_voters; i++) {
        if (cfg->voters[i] == CAIRN_RAFT_NONE)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (cfg->voters[j] == cfg->voters[i])
                goto fail;
        if (cfg->voters[i] == cfg->id)
            self_found = 1;
    }
    if (!self_found)
        goto fail;
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
    r->n_prs = cfg->n_voters;
    r->quorum = cfg->n_voters / 2 + 1;
    r->prs = calloc(r->n_prs, sizeof *r->prs);
    r->scratch = calloc(r->n_prs, sizeof *r->scratch);
    if (!r->prs || !r->scratch)
        goto fail;
    for (size_t i = 0; i < r->n_prs; i++) {
        r->prs[i].id = cfg->voters[i];
        r->prs[i].vote = -1;
        r->prs[i].infl = malloc(r->max_inflight * sizeof(uint64_t));
        if (!r->prs[i].infl)
            goto fail;
        if (cfg->voters[i] == cfg->id)
            r->self = i;
    }
    r->snap_index = cfg->snap_index;
    r->snap_term = cfg->snap_term;
    if (log_append(r, cfg->entries, cfg->n_entries, 0))
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
    size_t n = 0;
    for (size_t i = 0; i < r->n_prs; i++)
        if (i == r->self || r->prs[i].recent_active)
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
            hup(r, 0);
        }
        return;
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
        int rc = log_append(r, m->entries + k, m->n_entries - k, 0);
        if (rc)
            return rc; /* no answer: the leader will retry */
    }
    uint64_t lastnew = m->index + m->n_entries;
    commit_to(r, m->commit < lastnew ? m->commit : lastnew);
    resp.index = lastnew;
    send_after(r, resp);
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
    if (pr_maybe_update(pr, m->index) || (pr->match == m->index && pr->state == PR_PROBE)) {
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
            if (m->entries[i].type == CAIRN_RAFT_ENTRY_CONF)
                return CAIRN_EINVAL; /* membership changes: issue 3 */
        if (log_append(r, m->entries, m->n_entries, r->term))
            return CAIRN_ENOMEM;
        r->need_bcast = 1;
        return 0;
    case CAIRN_RAFT_MSG_APP_RESP:
        return leader_app_resp(r, pr, m);
    case CAIRN_RAFT_MSG_HEARTBEAT_RESP:
        return leader_heartbeat_resp(r, pr, m);
    case CAIRN_RAFT_MSG_READINDEX:
        leader_read(r, m->context, m->from);
        return 0;
    case CAIRN_RAFT_MSG_APP:
    case CAIRN_RAFT_MSG_HEARTBEAT:
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
    if (m->type == 0 || m->type >= CAIRN_RAFT_MSG_TYPE_MAX_ || m->to != r->id || m->from == r->id ||
        !pr_of(r, m->from))
        return CAIRN_EINVAL;
    if (m->n_entries && (!m->entries || (m->type != CAIRN_RAFT_MSG_APP && m->type != CAIRN_RAFT_MSG_PROP)))
        return CAIRN_EINVAL;
    for (size_t i = 0; i < m->n_entries; i++)
        if ((m->entries[i].len && !m->entries[i].data) || m->entries[i].type > CAIRN_RAFT_ENTRY_CONF)
            return CAIRN_EINVAL;
    if (m->type == CAIRN_RAFT_MSG_SNAP)
        return CAIRN_EINVAL; /* InstallSnapshot: issue 3 */

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
                int in_lease = r->check_quorum && r->leader != CAIRN_RAFT_NONE &&
                               r->election_elapsed < r->election_tick;
                if (!force && in_lease)
                    return 0;
            }
            if (m->type == CAIRN_RAFT_MSG_PREVOTE) {
                /* thesis §9.6: a prevote does not change our term. */
            } else if (m->type == CAIRN_RAFT_MSG_PREVOTE_RESP && !m->reject) {
                /* A grant carries the term we asked for; we move there when we campaign. */
            } else if (m->type == CAIRN_RAFT_MSG_APP || m->type == CAIRN_RAFT_MSG_HEARTBEAT) {
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
            if ((r->check_quorum || r->pre_vote) &&
                (m->type == CAIRN_RAFT_MSG_APP || m->type == CAIRN_RAFT_MSG_HEARTBEAT)) {
                /* A stale leader (e.g. back from a partition) would otherwise never learn
                 * our term: with PreVote/CheckQuorum we never bump its term by a vote
                 * request, so tell it directly, and it steps down. */
                send_after(r, (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP_RESP, .to = m->from, .term = r->term});
            } else if (m->type == CAIRN_RAFT_MSG_PREVOTE) {
                send_after(r, (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_PREVOTE_RESP, .to = m->from,
                                                 .term = r->term, .reject = 1});
            }
            return 0; /* Raft §5.1: stale terms are ignored */
        }
    }

    if (m->type == CAIRN_RAFT_MSG_VOTE || m->type == CAIRN_RAFT_MSG_PREVOTE)
        return handle_vote_req(r, m);
    switch (r->role) {
    case CAIRN_RAFT_LEADER:
        return step_leader(r, m);
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
    }
}

int cairn_raft_transfer_leader(cairn_raft_t *r, uint64_t to)
{
    if (!r)
        return CAIRN_EINVAL;
    if (r->role != CAIRN_RAFT_LEADER)
        return CAIRN_ENOT_LEADER;
    progress_t *pr = pr_of(r, to);
    if (!pr)
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
    hup(r, 0);
    return 0;
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
