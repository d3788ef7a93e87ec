/* Unit tests of the pure Raft core (services/raftd/core/raft.c).
 *
 * Single nodes are driven by hand; small clusters go through a tiny lossless harness
 * (pump()) that persists every ready at once and delivers every message, with an optional
 * filter to cut links. The seeded, lossy, crashing simulation is tests/sim/test_raft_sim.c.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cairn_err.h"
#include "raft.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static cairn_raft_config_t cfg_of(uint64_t id, const uint64_t *voters, size_t n)
{
    return (cairn_raft_config_t){.id = id,
                                 .voters = voters,
                                 .n_voters = n,
                                 .election_tick = 10,
                                 .heartbeat_tick = 1,
                                 .seed = 42 + id,
                                 .max_msg_bytes = 1 << 20,
                                 .max_inflight = 64};
}

static cairn_raft_t *mk(const cairn_raft_config_t *c)
{
    int err = 1;
    cairn_raft_t *r = cairn_raft_new(c, &err);
    cr_assert_not_null(r, "cairn_raft_new: %d", err);
    cr_assert_eq(err, 0);
    return r;
}

static const uint64_t ONE[] = {1};
static const uint64_t THREE[] = {1, 2, 3};

/* Takes one ready, persists nothing, returns it (caller advances). */
static void rdy(cairn_raft_t *r, cairn_raft_ready_t *rd)
{
    cr_assert(cairn_raft_has_ready(r));
    cairn_raft_ready(r, rd);
}

/* Runs ready/advance until quiet, reporting every ready's entries as persisted. */
static void settle(cairn_raft_t *r)
{
    while (cairn_raft_has_ready(r)) {
        cairn_raft_ready_t rd;
        cairn_raft_ready(r, &rd);
        uint64_t li = rd.n_entries ? rd.entries[rd.n_entries - 1].index : 0;
        uint64_t lt = rd.n_entries ? rd.entries[rd.n_entries - 1].term : 0;
        cairn_raft_advance(r, &rd);
        if (li)
            cairn_raft_persisted(r, li, lt);
    }
}

static size_t count_type(const cairn_raft_msg_t *m, size_t n, int type)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += m[i].type == type;
    return c;
}

static const cairn_raft_msg_t *find_type(const cairn_raft_msg_t *m, size_t n, int type)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].type == type)
            return &m[i];
    return NULL;
}

/* ---- a lossless in-memory cluster ------------------------------------------------------- */

typedef struct {
    cairn_raft_msg_t m;
    cairn_raft_entry_t *ents;
    uint64_t *ids; /* SNAP: the membership */
} tmsg_t;

#define MAXN 5
typedef struct {
    cairn_raft_t *n[MAXN + 1];
    size_t count;
    tmsg_t *q;
    size_t qn, qcap;
    int cut[MAXN + 1][MAXN + 1]; /* cut[a][b]: messages a->b are dropped */
    /* observations */
    size_t app_rejects[MAXN + 1];
    size_t apps[MAXN + 1][MAXN + 1];
    cairn_raft_read_state_t rs[MAXN + 1][64];
    size_t n_rs[MAXN + 1];
    uint64_t rf[MAXN + 1][64];
    size_t n_rf[MAXN + 1];
    size_t snaps_sent[MAXN + 1];   /* MSG_SNAP delivered to each node */
    size_t installs[MAXN + 1];     /* snapshots installed by each node's "shell" */
    int hold_snapshots;            /* the shell does not install: tests drive it */
    int conf_changes[MAXN + 1];    /* readies with conf_changed */
    uint64_t snap_index[MAXN + 1], snap_term[MAXN + 1], snap_from[MAXN + 1]; /* last has_snapshot */
    size_t snap_nv[MAXN + 1], snap_nl[MAXN + 1];
} net_t;

static void q_push(net_t *t, const cairn_raft_msg_t *m)
{
    if (t->qn == t->qcap) {
        t->qcap = t->qcap ? t->qcap * 2 : 64;
        t->q = realloc(t->q, t->qcap * sizeof *t->q);
    }
    tmsg_t *d = &t->q[t->qn++];
    d->m = *m;
    d->ents = NULL;
    if (m->n_entries) {
        d->ents = calloc(m->n_entries, sizeof *d->ents);
        for (size_t i = 0; i < m->n_entries; i++) {
            d->ents[i] = m->entries[i];
            if (m->entries[i].len) {
                uint8_t *p = malloc(m->entries[i].len);
                memcpy(p, m->entries[i].data, m->entries[i].len);
                d->ents[i].data = p;
            }
        }
    }
    d->m.entries = d->ents;
    d->ids = NULL;
    if (m->n_voters + m->n_learners) {
        d->ids = malloc((m->n_voters + m->n_learners) * sizeof *d->ids);
        if (m->n_voters)
            memcpy(d->ids, m->voters, m->n_voters * sizeof *d->ids);
        if (m->n_learners)
            memcpy(d->ids + m->n_voters, m->learners, m->n_learners * sizeof *d->ids);
        d->m.voters = d->ids;
        d->m.learners = d->ids + m->n_voters;
    }
}

static void tmsg_free(tmsg_t *x)
{
    for (size_t i = 0; x->ents && i < x->m.n_entries; i++)
        free((void *)x->ents[i].data);
    free(x->ents);
    free(x->ids);
}

static void net_init(net_t *t, size_t n, int pre_vote, int check_quorum)
{
    memset(t, 0, sizeof *t);
    t->count = n;
    static uint64_t ids[MAXN] = {1, 2, 3, 4, 5};
    for (size_t i = 1; i <= n; i++) {
        cairn_raft_config_t c = cfg_of(i, ids, n);
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        t->n[i] = mk(&c);
    }
}

static void net_free(net_t *t)
{
    for (size_t i = 1; i <= t->count; i++)
        cairn_raft_destroy(&t->n[i]);
    for (size_t i = 0; i < t->qn; i++)
        tmsg_free(&t->q[i]);
    free(t->q);
}

/* Drains every node's readies (persisting at once) and delivers messages until quiet. */
static void pump(net_t *t)
{
    for (int rounds = 0; rounds < 10000; rounds++) {
        for (size_t i = 1; i <= t->count; i++) {
            cairn_raft_t *r = t->n[i];
            while (r && cairn_raft_has_ready(r)) {
                cairn_raft_ready_t rd;
                cairn_raft_ready(r, &rd);
                for (size_t k = 0; k < rd.n_msgs; k++)
                    q_push(t, &rd.msgs[k]);
                for (size_t k = 0; k < rd.n_msgs_after_persist; k++)
                    q_push(t, &rd.msgs_after_persist[k]);
                for (size_t k = 0; k < rd.n_read_states && t->n_rs[i] < 64; k++)
                    t->rs[i][t->n_rs[i]++] = rd.read_states[k];
                for (size_t k = 0; k < rd.n_read_failures && t->n_rf[i] < 64; k++)
                    t->rf[i][t->n_rf[i]++] = rd.read_failures[k];
                uint64_t li = rd.n_entries ? rd.entries[rd.n_entries - 1].index : 0;
                uint64_t lt = rd.n_entries ? rd.entries[rd.n_entries - 1].term : 0;
                int snap = rd.has_snapshot;
                uint64_t si = rd.snapshot_index, st = rd.snapshot_term;
                if (snap) {
                    t->snap_index[i] = si;
                    t->snap_term[i] = st;
                    t->snap_from[i] = rd.snapshot_from;
                    t->snap_nv[i] = rd.n_snapshot_voters;
                    t->snap_nl[i] = rd.n_snapshot_learners;
                }
                t->conf_changes[i] += rd.conf_changed;
                cairn_raft_advance(r, &rd);
                if (li)
                    cairn_raft_persisted(r, li, lt);
                /* The shell: everything of this ready is durable; install the snapshot. */
                if (snap && !t->hold_snapshots) {
                    cr_assert_eq(cairn_raft_snapshot_installed(r, si, st), 0);
                    t->installs[i]++;
                }
            }
        }
        if (t->qn == 0)
            return;
        tmsg_t *q = t->q;
        size_t qn = t->qn;
        t->q = NULL;
        t->qn = t->qcap = 0;
        for (size_t k = 0; k < qn; k++) {
            cairn_raft_msg_t *m = &q[k].m;
            if (m->to >= 1 && m->to <= t->count && !t->cut[m->from][m->to] && t->n[m->to]) {
                if (m->type == CAIRN_RAFT_MSG_APP_RESP && m->reject)
                    t->app_rejects[m->from]++;
                if (m->type == CAIRN_RAFT_MSG_APP)
                    t->apps[m->from][m->to]++;
                if (m->type == CAIRN_RAFT_MSG_SNAP)
                    t->snaps_sent[m->to]++;
                (void)cairn_raft_step(t->n[m->to], m);
            }
            tmsg_free(&q[k]);
        }
        free(q);
    }
    cr_assert_fail("pump did not settle");
}

static void isolate(net_t *t, size_t id, int on)
{
    for (size_t j = 1; j <= t->count; j++) {
        t->cut[id][j] = on;
        t->cut[j][id] = on;
    }
}

static uint64_t leader_of(net_t *t)
{
    for (size_t i = 1; i <= t->count; i++)
        if (t->n[i] && cairn_raft_role(t->n[i]) == CAIRN_RAFT_LEADER)
            return i;
    return 0;
}

/* ---- single voter ------------------------------------------------------------------------ */

Test(raft_single, campaign_makes_leader_with_empty_entry)
{
    cairn_raft_config_t c = cfg_of(1, ONE, 1);
    cairn_raft_t *r = mk(&c);
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_FOLLOWER);
    cr_assert_eq(cairn_raft_campaign(r), 0);
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_LEADER);
    cr_assert_eq(cairn_raft_term(r), 1);
    cr_assert_eq(cairn_raft_leader(r), 1);

    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert(rd.hs_changed);
    cr_assert_eq(rd.hs.term, 1);
    cr_assert_eq(rd.hs.vote, 1);
    cr_assert_eq(rd.role, CAIRN_RAFT_LEADER);
    cr_assert_eq(rd.n_entries, 1);
    cr_assert_eq(rd.entries[0].index, 1);
    cr_assert_eq(rd.entries[0].term, 1);
    cr_assert_eq(rd.entries[0].type, CAIRN_RAFT_ENTRY_EMPTY);
    cr_assert_eq(rd.commit, 0, "nothing is committed before it is durable");
    cr_assert_eq(rd.n_msgs + rd.n_msgs_after_persist, 0);
    cairn_raft_advance(r, &rd);
    cr_assert_not(cairn_raft_has_ready(r));

    cairn_raft_persisted(r, 1, 1);
    rdy(r, &rd);
    cr_assert_eq(rd.commit, 1);
    cr_assert(rd.hs_changed);
    cr_assert_eq(rd.hs.commit, 1);
    cr_assert_eq(rd.n_entries, 0);
    cairn_raft_advance(r, &rd);
    cr_assert_not(cairn_raft_has_ready(r));
    cairn_raft_destroy(&r);
    cr_assert_null(r);
    cairn_raft_destroy(&r); /* idempotent */
}

Test(raft_single, election_timeout_makes_leader)
{
    cairn_raft_config_t c = cfg_of(1, ONE, 1);
    c.pre_vote = 1;
    cairn_raft_t *r = mk(&c);
    int ticks = 0;
    while (cairn_raft_role(r) != CAIRN_RAFT_LEADER && ticks < 100) {
        cairn_raft_tick(r);
        ticks++;
    }
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_LEADER);
    cr_assert(ticks >= 10 && ticks < 20, "randomized timeout in [10,20): %d", ticks);
    cr_assert_eq(cairn_raft_term(r), 1, "prevote does not spend a term");
    cairn_raft_destroy(&r);
}

Test(raft_single, propose_commits_only_after_persisted)
{
    cairn_raft_config_t c = cfg_of(1, ONE, 1);
    cairn_raft_t *r = mk(&c);
    cairn_raft_campaign(r);
    settle(r);
    cr_assert_eq(cairn_raft_commit(r), 1);

    uint64_t i1 = 0, i2 = 0;
    cr_assert_eq(cairn_raft_propose(r, "a", 1, &i1), 0);
    cr_assert_eq(cairn_raft_propose(r, "bc", 2, &i2), 0);
    cr_assert_eq(i1, 2);
    cr_assert_eq(i2, 3);

    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert_eq(rd.n_entries, 2);
    cr_assert_eq(rd.entries[0].index, 2);
    cr_assert_eq(rd.entries[0].type, CAIRN_RAFT_ENTRY_NORMAL);
    cr_assert_eq(rd.entries[0].len, 1);
    cr_assert_eq(memcmp(rd.entries[0].data, "a", 1), 0);
    cr_assert_eq(rd.entries[1].len, 2);
    cr_assert_eq(memcmp(rd.entries[1].data, "bc", 2), 0);
    cr_assert_eq(rd.commit, 1);
    cairn_raft_advance(r, &rd);
    cr_assert_not(cairn_raft_has_ready(r));
    cr_assert_eq(cairn_raft_commit(r), 1, "not durable yet");

    cairn_raft_persisted(r, 2, 1);
    cr_assert_eq(cairn_raft_commit(r), 2);
    cairn_raft_persisted(r, 3, 7); /* wrong term: a stale report, ignored */
    cr_assert_eq(cairn_raft_commit(r), 2);
    cairn_raft_persisted(r, 3, 1);
    cr_assert_eq(cairn_raft_commit(r), 3);
    rdy(r, &rd);
    cr_assert_eq(rd.commit, 3);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);
}

Test(raft_single, hundred_thousand_proposals_are_cheap)
{
    cairn_raft_config_t c = cfg_of(1, ONE, 1);
    cairn_raft_t *r = mk(&c);
    cairn_raft_campaign(r);
    settle(r);
    char buf[100];
    memset(buf, 'x', sizeof buf);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 100000; i++) {
        uint64_t idx;
        cr_assert_eq(cairn_raft_propose(r, buf, sizeof buf, &idx), 0);
        if (idx != (uint64_t)i + 2)
            cr_assert_fail("index %llu at %d", (unsigned long long)idx, i);
    }
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert_eq(rd.n_entries, 100000, "all proposals in one ready");
    uint64_t li = rd.entries[rd.n_entries - 1].index, lt = rd.entries[rd.n_entries - 1].term;
    cairn_raft_advance(r, &rd);
    cairn_raft_persisted(r, li, lt);
    clock_gettime(CLOCK_MONOTONIC, &b);
    cr_assert_eq(cairn_raft_commit(r), 100001);
    double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    /* ~10 ms in a release build; quadratic behaviour would take minutes. Generous for ASan. */
    cr_assert(ms < 2000, "100k proposals took %.1f ms", ms);
    cairn_raft_destroy(&r);
}

Test(raft_single, read_index_waits_for_commit_in_term)
{
    cairn_raft_config_t c = cfg_of(1, ONE, 1);
    cairn_raft_t *r = mk(&c);
    cairn_raft_campaign(r);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cairn_raft_advance(r, &rd);
    /* The no-op is not durable: the leader does not know its commit index yet (thesis §6.4). */
    cr_assert_eq(cairn_raft_read_index(r, 77), 0);
    cr_assert_not(cairn_raft_has_ready(r));
    cairn_raft_persisted(r, 1, 1);
    rdy(r, &rd);
    cr_assert_eq(rd.n_read_states, 1);
    cr_assert_eq(rd.read_states[0].context, 77);
    cr_assert_eq(rd.read_states[0].index, 1);
    cairn_raft_advance(r, &rd);

    /* Once committed in its term a single voter answers at once. */
    uint64_t idx;
    cairn_raft_propose(r, "k", 1, &idx);
    settle(r);
    cr_assert_eq(cairn_raft_read_index(r, 78), 0);
    rdy(r, &rd);
    cr_assert_eq(rd.n_read_states, 1);
    cr_assert_eq(rd.read_states[0].context, 78);
    cr_assert_eq(rd.read_states[0].index, 2);
    cr_assert_eq(rd.n_msgs, 0);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);
}

Test(raft_single, restart_keeps_term_vote_and_log)
{
    uint8_t d1[3] = {1, 2, 3}, d2[2] = {9, 9};
    cairn_raft_entry_t ents[3] = {
        {.index = 1, .term = 1, .type = CAIRN_RAFT_ENTRY_EMPTY},
        {.index = 2, .term = 1, .type = CAIRN_RAFT_ENTRY_NORMAL, .data = d1, .len = 3},
        {.index = 3, .term = 4, .type = CAIRN_RAFT_ENTRY_NORMAL, .data = d2, .len = 2},
    };
    static const uint64_t two[] = {1, 2};
    cairn_raft_config_t c = cfg_of(1, two, 2);
    c.hs = (cairn_raft_hardstate_t){.term = 5, .vote = 2, .commit = 2};
    c.entries = ents;
    c.n_entries = 3;
    cairn_raft_t *r = mk(&c);
    memset(d1, 0, sizeof d1); /* the core copied the data */
    memset(d2, 0, sizeof d2);
    cr_assert_eq(cairn_raft_term(r), 5);
    cr_assert_eq(cairn_raft_commit(r), 2);
    cr_assert_eq(cairn_raft_last_index(r), 3);
    cr_assert_eq(cairn_raft_term_at(r, 2), 1);
    cr_assert_eq(cairn_raft_term_at(r, 3), 4);
    cr_assert_eq(cairn_raft_term_at(r, 4), 0);
    cr_assert_not(cairn_raft_has_ready(r), "restored state is already durable");

    /* The restored vote holds: node 1 voted for 2 in term 5, so it refuses 3... and since
     * only 1 and 2 are members, check it refuses nobody else but grants 2 again. */
    cairn_raft_msg_t v = {.type = CAIRN_RAFT_MSG_VOTE, .from = 2, .to = 1, .term = 5, .log_term = 4, .index = 3};
    cr_assert_eq(cairn_raft_step(r, &v), 0);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    const cairn_raft_msg_t *vr = find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_VOTE_RESP);
    cr_assert_not_null(vr);
    cr_assert_eq(vr->reject, 0, "the same candidate may ask again");
    cairn_raft_advance(r, &rd);

    /* Become leader in term 6 and check the replicated copy of the restored data. */
    cairn_raft_campaign(r);
    cr_assert_eq(cairn_raft_term(r), 6);
    settle(r);
    cairn_raft_msg_t g = {.type = CAIRN_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 6};
    cr_assert_eq(cairn_raft_step(r, &g), 0);
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_LEADER);
    rdy(r, &rd);
    const cairn_raft_msg_t *app = find_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_APP);
    cr_assert_not_null(app);
    cr_assert_eq(app->index, 3, "probe starts after our last index");
    cr_assert_eq(app->log_term, 4);
    cairn_raft_advance(r, &rd);
    /* Follower rejects, hinting index 1; the leader resends from 2 with the copied data. */
    cairn_raft_msg_t rej = {.type = CAIRN_RAFT_MSG_APP_RESP, .from = 2, .to = 1, .term = 6, .reject = 1,
                            .index = 3, .reject_hint = 1, .log_term = 1};
    cr_assert_eq(cairn_raft_step(r, &rej), 0);
    rdy(r, &rd);
    app = find_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_APP);
    cr_assert_not_null(app);
    cr_assert_eq(app->index, 1);
    cr_assert_eq(app->n_entries, 3);
    cr_assert_eq(app->entries[0].len, 3);
    cr_assert_eq(memcmp(app->entries[0].data, (uint8_t[]){1, 2, 3}, 3), 0);
    cr_assert_eq(memcmp(app->entries[1].data, (uint8_t[]){9, 9}, 2), 0);
    cr_assert_eq(app->entries[2].type, CAIRN_RAFT_ENTRY_EMPTY);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);
}

Test(raft_single, restore_rejects_impossible_state)
{
    cairn_raft_entry_t ents[2] = {{.index = 1, .term = 2}, {.index = 3, .term = 2}};
    cairn_raft_config_t c = cfg_of(1, ONE, 1);
    c.hs.term = 2;
    c.entries = ents;
    c.n_entries = 2;
    int err = 0;
    cr_assert_null(cairn_raft_new(&c, &err), "non-contiguous log");
    cr_assert_eq(err, CAIRN_EINVAL);
    ents[1].index = 2;
    c.hs.commit = 3;
    cr_assert_null(cairn_raft_new(&c, &err), "commit beyond the log");
    c.hs.commit = 2;
    c.hs.term = 1;
    cr_assert_null(cairn_raft_new(&c, &err), "entry term beyond the hard state term");
    c.hs.term = 2;
    cairn_raft_t *r = cairn_raft_new(&c, &err);
    cr_assert_not_null(r);
    cairn_raft_destroy(&r);
    static const uint64_t dup[] = {1, 1};
    c = cfg_of(1, dup, 2);
    cr_assert_null(cairn_raft_new(&c, &err), "duplicate voter");
    static const uint64_t zero[] = {1, 0};
    c = cfg_of(1, zero, 2);
    cr_assert_null(cairn_raft_new(&c, &err), "voter id 0");
    static const uint64_t lrn[] = {2};
    c = cfg_of(1, THREE, 3);
    c.learners = lrn;
    c.n_learners = 1;
    cr_assert_null(cairn_raft_new(&c, &err), "a voter that is also a learner");
    c = cfg_of(1, THREE, 0);
    cr_assert_null(cairn_raft_new(&c, &err), "no voter");
    c = cfg_of(1, ONE, 1);
    c.election_tick = 1;
    c.heartbeat_tick = 1;
    cr_assert_null(cairn_raft_new(&c, &err), "election tick must exceed heartbeat tick");
    cr_assert_null(cairn_raft_new(NULL, &err));
}

/* ---- followers ---------------------------------------------------------------------------- */

Test(raft_follower, rejects_stale_term)
{
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    c.hs.term = 5;
    c.pre_vote = 1;
    cairn_raft_t *r = mk(&c);
    cairn_raft_entry_t e = {.index = 1, .term = 3, .data = (const uint8_t *)"x", .len = 1};
    cairn_raft_msg_t app = {.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 3, .entries = &e, .n_entries = 1,
                            .commit = 1};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cr_assert_eq(cairn_raft_last_index(r), 0, "stale leader's entries are not taken");
    cr_assert_eq(cairn_raft_term(r), 5);
    cr_assert_eq(cairn_raft_leader(r), 0);
    cr_assert_eq(cairn_raft_commit(r), 0);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    /* With PreVote the stale leader is told our term, so that it steps down. */
    const cairn_raft_msg_t *resp = find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP);
    cr_assert_not_null(resp);
    cr_assert_eq(resp->term, 5);
    cr_assert_eq(resp->to, 1);
    cairn_raft_advance(r, &rd);

    /* A stale vote request is refused with our term (Raft Fig. 2), nothing else changes. */
    cairn_raft_msg_t v = {.type = CAIRN_RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 4, .log_term = 9, .index = 9};
    cr_assert_eq(cairn_raft_step(r, &v), 0);
    rdy(r, &rd);
    cr_assert_not(rd.hs_changed);
    resp = find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_VOTE_RESP);
    cr_assert_not_null(resp);
    cr_assert(resp->reject);
    cr_assert_eq(resp->term, 5);
    cairn_raft_advance(r, &rd);
    cr_assert_eq(cairn_raft_term(r), 5);
    cairn_raft_destroy(&r);
}

Test(raft_follower, vote_restriction_and_one_vote_per_term)
{
    cairn_raft_entry_t ents[2] = {{.index = 1, .term = 1}, {.index = 2, .term = 2}};
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    c.hs.term = 2;
    c.entries = ents;
    c.n_entries = 2;
    cairn_raft_t *r = mk(&c);
    cairn_raft_ready_t rd;

    /* Raft §5.4.1: a longer log with an older last term is less up to date. */
    cairn_raft_msg_t v = {.type = CAIRN_RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 3, .log_term = 1, .index = 50};
    cr_assert_eq(cairn_raft_step(r, &v), 0);
    cr_assert_eq(cairn_raft_term(r), 3, "a higher term is adopted even when the vote is refused");
    rdy(r, &rd);
    cr_assert_eq(rd.n_msgs, 0);
    cr_assert_eq(rd.n_msgs_after_persist, 1, "vote answers wait for the hard state to be durable");
    cr_assert_eq(rd.msgs_after_persist[0].type, CAIRN_RAFT_MSG_VOTE_RESP);
    cr_assert_eq(rd.msgs_after_persist[0].reject, 1);
    cr_assert_eq(rd.hs.vote, 0);
    cairn_raft_advance(r, &rd);

    /* Same last term, shorter log: refused. */
    v = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 3, .log_term = 2, .index = 1};
    cairn_raft_step(r, &v);
    rdy(r, &rd);
    cr_assert_eq(rd.msgs_after_persist[0].reject, 1);
    cairn_raft_advance(r, &rd);

    /* Equal log: granted, and the vote is hard state. */
    v.index = 2;
    cairn_raft_step(r, &v);
    rdy(r, &rd);
    cr_assert_eq(rd.msgs_after_persist[0].reject, 0);
    cr_assert_eq(rd.msgs_after_persist[0].term, 3);
    cr_assert(rd.hs_changed);
    cr_assert_eq(rd.hs.vote, 3);
    cairn_raft_advance(r, &rd);

    /* Another candidate in the same term, even with a better log: refused (Raft §5.2). */
    v = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_VOTE, .from = 1, .to = 2, .term = 3, .log_term = 9, .index = 9};
    cairn_raft_step(r, &v);
    rdy(r, &rd);
    cr_assert_eq(rd.msgs_after_persist[0].reject, 1);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);
}

Test(raft_follower, propose_without_leader_fails_and_with_leader_forwards)
{
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    cairn_raft_t *r = mk(&c);
    uint64_t idx = 99;
    cr_assert_eq(cairn_raft_propose(r, "p", 1, &idx), CAIRN_ENOT_LEADER);
    cr_assert_eq(idx, 0);
    /* Reads with no leader fail through the ready. */
    cr_assert_eq(cairn_raft_read_index(r, 5), 0);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert_eq(rd.n_read_failures, 1);
    cr_assert_eq(rd.read_failures[0], 5);
    cairn_raft_advance(r, &rd);

    cairn_raft_msg_t hb = {.type = CAIRN_RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 1};
    cr_assert_eq(cairn_raft_step(r, &hb), 0);
    cr_assert_eq(cairn_raft_leader(r), 1);
    settle(r);
    char payload[5] = "hello";
    cr_assert_eq(cairn_raft_propose(r, payload, 5, &idx), 0);
    memset(payload, 0, sizeof payload);
    cr_assert_eq(idx, 0, "forwarded: no index yet");
    cr_assert_eq(cairn_raft_read_index(r, 6), 0);
    rdy(r, &rd);
    const cairn_raft_msg_t *p = find_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_PROP);
    cr_assert_not_null(p);
    cr_assert_eq(p->to, 1);
    cr_assert_eq(p->n_entries, 1);
    cr_assert_eq(p->entries[0].len, 5);
    cr_assert_eq(memcmp(p->entries[0].data, "hello", 5), 0, "the message owns a copy");
    const cairn_raft_msg_t *ri = find_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_READINDEX);
    cr_assert_not_null(ri);
    cr_assert_eq(ri->context, 6);
    cairn_raft_advance(r, &rd);

    /* The answer becomes a read state; a leader change fails what is still outstanding. */
    cairn_raft_msg_t ans = {.type = CAIRN_RAFT_MSG_READINDEX_RESP, .from = 1, .to = 2, .term = 1, .index = 4, .context = 6};
    cr_assert_eq(cairn_raft_step(r, &ans), 0);
    cairn_raft_read_index(r, 7);
    cairn_raft_msg_t hb2 = {.type = CAIRN_RAFT_MSG_HEARTBEAT, .from = 3, .to = 2, .term = 2};
    cairn_raft_step(r, &hb2);
    rdy(r, &rd);
    cr_assert_eq(rd.n_read_states, 1);
    cr_assert_eq(rd.read_states[0].index, 4);
    cr_assert_eq(rd.read_states[0].context, 6);
    cr_assert_eq(rd.n_read_failures, 1);
    cr_assert_eq(rd.read_failures[0], 7);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);
}

Test(raft_follower, append_answered_only_after_persist)
{
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    cairn_raft_t *r = mk(&c);
    cairn_raft_entry_t e[2] = {{.index = 1, .term = 1, .type = CAIRN_RAFT_ENTRY_EMPTY},
                               {.index = 2, .term = 1, .data = (const uint8_t *)"ab", .len = 2}};
    cairn_raft_msg_t app = {.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .index = 0, .log_term = 0,
                            .commit = 2, .entries = e, .n_entries = 2};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert_eq(rd.n_entries, 2);
    cr_assert_eq(rd.commit, 2);
    cr_assert_null(find_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_APP_RESP));
    const cairn_raft_msg_t *ack = find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP);
    cr_assert_not_null(ack);
    cr_assert_eq(ack->index, 2);
    cr_assert_eq(ack->reject, 0);
    cairn_raft_advance(r, &rd);

    /* A conflicting suffix above the commit index is replaced (Raft §5.3). */
    cairn_raft_entry_t e3[2] = {{.index = 3, .term = 1, .data = (const uint8_t *)"c", .len = 1},
                                {.index = 4, .term = 1, .data = (const uint8_t *)"d", .len = 1}};
    app = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .index = 2, .log_term = 1,
                             .commit = 2, .entries = e3, .n_entries = 2};
    cairn_raft_step(r, &app);
    settle(r);
    cairn_raft_entry_t n3 = {.index = 3, .term = 2, .data = (const uint8_t *)"N", .len = 1};
    app = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP, .from = 3, .to = 2, .term = 2, .index = 2, .log_term = 1,
                             .commit = 2, .entries = &n3, .n_entries = 1};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cr_assert_eq(cairn_raft_last_index(r), 3);
    cr_assert_eq(cairn_raft_term_at(r, 3), 2);
    rdy(r, &rd);
    cr_assert_eq(rd.n_entries, 1);
    cr_assert_eq(rd.entries[0].index, 3);
    cr_assert_eq(rd.entries[0].term, 2);
    cairn_raft_advance(r, &rd);

    /* An APP below the commit index never touches committed entries: it is answered with
     * the commit index instead. */
    cairn_raft_entry_t bad = {.index = 2, .term = 3};
    app = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 3, .index = 1, .log_term = 1,
                             .entries = &bad, .n_entries = 1};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cr_assert_eq(cairn_raft_term_at(r, 2), 1);
    cr_assert_eq(cairn_raft_last_index(r), 3);
    rdy(r, &rd);
    ack = find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP);
    cr_assert_not_null(ack);
    cr_assert_eq(ack->reject, 0);
    cr_assert_eq(ack->index, 2);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);
}

/* ---- robustness ----------------------------------------------------------------------------- */

Test(raft_robust, garbage_messages_are_refused)
{
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    cairn_raft_t *r = mk(&c);
    cairn_raft_msg_t m = {.type = CAIRN_RAFT_MSG_HEARTBEAT, .from = 1, .to = 9, .term = 1};
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "wrong to");
    m.to = 2;
    m.from = 0;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "from node 0");
    m.from = 2;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "from self");
    m.from = 1;
    m.type = 0;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "type 0");
    m.type = 200;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "unknown type");
    m.type = CAIRN_RAFT_MSG_SNAP;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "snapshot at index 0, no membership");
    m.snap_index = 5;
    m.snap_term = 1;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "snapshot without voters");
    static const uint64_t sv[] = {1, 1};
    m.voters = sv;
    m.n_voters = 2;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "snapshot with a duplicate voter");
    m.n_voters = 1;
    m.snap_term = 2;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "snapshot term above the message's");
    m = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 1};
    m.type = CAIRN_RAFT_MSG_HEARTBEAT;
    m.term = 0;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "term 0");
    m.term = 1;
    m.n_entries = 3;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL, "entries without an array");
    cr_assert_eq(cairn_raft_step(r, NULL), CAIRN_EINVAL);
    cr_assert_eq(cairn_raft_step(NULL, &m), CAIRN_EINVAL);
    cr_assert_eq(cairn_raft_term(r), 0, "nothing above changed the state");

    /* An APP far beyond our log: rejected with a hint at our last index. */
    cairn_raft_entry_t e = {.index = (1ULL << 60) + 1, .term = 1};
    m = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .index = 1ULL << 60,
                           .log_term = 1, .entries = &e, .n_entries = 1, .commit = UINT64_MAX};
    cr_assert_eq(cairn_raft_step(r, &m), 0);
    cr_assert_eq(cairn_raft_last_index(r), 0);
    cr_assert_eq(cairn_raft_commit(r), 0);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    const cairn_raft_msg_t *rej = find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP);
    cr_assert_not_null(rej);
    cr_assert(rej->reject);
    cr_assert_eq(rej->reject_hint, 0);
    cairn_raft_advance(r, &rd);

    /* Non-contiguous indices, a term above the leader's, decreasing terms, bad type. */
    cairn_raft_entry_t bad[2] = {{.index = 1, .term = 1}, {.index = 3, .term = 1}};
    m = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .index = 0, .entries = bad,
                           .n_entries = 2};
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL);
    bad[1] = (cairn_raft_entry_t){.index = 2, .term = 5};
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL);
    m.term = 5;
    bad[0].term = 4;
    bad[1].term = 3;
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL);
    bad[1] = (cairn_raft_entry_t){.index = 2, .term = 4, .type = 99};
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL);
    bad[1] = (cairn_raft_entry_t){.index = 2, .term = 4, .len = 10, .data = NULL};
    cr_assert_eq(cairn_raft_step(r, &m), CAIRN_EINVAL);
    cr_assert_eq(cairn_raft_last_index(r), 0);

    /* A leader refuses an ack for an index it never had. */
    cairn_raft_destroy(&r);
    c = cfg_of(1, THREE, 3);
    r = mk(&c);
    cairn_raft_campaign(r);
    settle(r);
    cairn_raft_msg_t g = {.type = CAIRN_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 1};
    cairn_raft_step(r, &g);
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_LEADER);
    settle(r);
    cairn_raft_msg_t ack = {.type = CAIRN_RAFT_MSG_APP_RESP, .from = 2, .to = 1, .term = 1, .index = 1000};
    cr_assert_eq(cairn_raft_step(r, &ack), CAIRN_EINVAL);
    ack.from = 3;
    cr_assert_eq(cairn_raft_step(r, &ack), CAIRN_EINVAL);
    cr_assert_eq(cairn_raft_commit(r), 0);
    cairn_raft_destroy(&r);
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* Thousands of random messages into nodes in every role: no crash, no leak (ASan), and the
 * basic invariants hold. */
Test(raft_robust, random_messages_never_crash)
{
    uint64_t s = 12345;
#define RND() lcg(&s)
    for (int round = 0; round < 40; round++) {
        cairn_raft_config_t c = cfg_of(1 + round % 3, THREE, 3);
        c.pre_vote = round & 1;
        c.check_quorum = (round >> 1) & 1;
        c.max_inflight = 1 + round % 4;
        c.max_msg_bytes = 16;
        cairn_raft_t *r = mk(&c);
        uint64_t self = c.id;
        if (round % 4 == 0)
            cairn_raft_campaign(r);
        for (int i = 0; i < 3000; i++) {
            cairn_raft_entry_t ents[4];
            uint8_t data[4][8];
            cairn_raft_msg_t m = {.type = (uint8_t)(RND() % (CAIRN_RAFT_MSG_TYPE_MAX_ + 1)),
                                  .from = RND() % 5,
                                  .to = RND() % 8 ? self : RND() % 5,
                                  .term = RND() % 6,
                                  .log_term = RND() % 6,
                                  .index = RND() % 4 ? RND() % 12 : RND(),
                                  .commit = RND() % 4 ? RND() % 12 : RND(),
                                  .reject = RND() % 2,
                                  .reject_hint = RND() % 12,
                                  .context = RND() % 4};
            size_t n = RND() % 5;
            if (n && n <= 4) {
                for (size_t k = 0; k < n; k++) {
                    ents[k] = (cairn_raft_entry_t){.index = m.index + 1 + k - (RND() % 8 == 0),
                                                   .term = m.log_term + RND() % 2,
                                                   .type = RND() % 3,
                                                   .data = data[k],
                                                   .len = RND() % 9};
                    memset(data[k], (int)k, sizeof data[k]);
                }
                m.entries = ents;
                m.n_entries = n;
            }
            (void)cairn_raft_step(r, &m);
            switch (RND() % 8) {
            case 0:
                cairn_raft_tick(r);
                break;
            case 1:
                cairn_raft_propose(r, "zz", 2, NULL);
                break;
            case 2:
                cairn_raft_read_index(r, RND());
                break;
            case 3:
                cairn_raft_persisted(r, RND() % 12, RND() % 6);
                break;
            case 4:
                cairn_raft_transfer_leader(r, RND() % 4);
                break;
            default:
                break;
            }
            if (RND() % 3 == 0) {
                cairn_raft_ready_t rd;
                if (cairn_raft_has_ready(r)) {
                    cairn_raft_ready(r, &rd);
                    for (size_t k = 0; k < rd.n_entries; k++)
                        cr_assert(rd.entries[k].len == 0 || rd.entries[k].data);
                    for (size_t k = 0; k < rd.n_msgs; k++)
                        for (size_t j = 0; j < rd.msgs[k].n_entries; j++)
                            if (rd.msgs[k].entries[j].len)
                                (void)*(volatile const uint8_t *)rd.msgs[k].entries[j].data;
                    cairn_raft_advance(r, &rd);
                }
            }
            if (cairn_raft_commit(r) > cairn_raft_last_index(r))
                cr_assert_fail("commit %llu beyond last %llu", (unsigned long long)cairn_raft_commit(r),
                               (unsigned long long)cairn_raft_last_index(r));
        }
        cairn_raft_destroy(&r);
    }
#undef RND
}

/* ---- clusters --------------------------------------------------------------------------- */

Test(raft_cluster, elect_replicate_commit)
{
    net_t t;
    net_init(&t, 3, 1, 1);
    cairn_raft_campaign(t.n[1]);
    cairn_raft_ready_t rd;
    /* PreVote first: no term spent until a quorum says we could win. */
    rdy(t.n[1], &rd);
    cr_assert_eq(rd.role, CAIRN_RAFT_PRECANDIDATE);
    cr_assert_eq(rd.term, 0);
    cr_assert_eq(count_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_PREVOTE), 2);
    for (size_t i = 0; i < rd.n_msgs; i++)
        q_push(&t, &rd.msgs[i]);
    cairn_raft_advance(t.n[1], &rd);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    cr_assert_eq(cairn_raft_term(t.n[1]), 1);
    for (int i = 1; i <= 3; i++) {
        cr_assert_eq(cairn_raft_commit(t.n[i]), 1, "node %d commit", i);
        cr_assert_eq(cairn_raft_leader(t.n[i]), 1);
    }
    uint64_t idx;
    cr_assert_eq(cairn_raft_propose(t.n[1], "v1", 2, &idx), 0);
    cr_assert_eq(idx, 2);
    cr_assert_eq(cairn_raft_propose(t.n[2], "v2", 2, &idx), 0, "followers forward");
    pump(&t);
    for (int i = 1; i <= 3; i++) {
        cr_assert_eq(cairn_raft_last_index(t.n[i]), 3);
        cr_assert_eq(cairn_raft_commit(t.n[i]), 3);
    }
    net_free(&t);
}

Test(raft_cluster, candidate_votes_wait_for_persistence)
{
    net_t t;
    net_init(&t, 3, 0, 0);
    cairn_raft_campaign(t.n[1]);
    cairn_raft_ready_t rd;
    rdy(t.n[1], &rd);
    cr_assert_eq(rd.role, CAIRN_RAFT_CANDIDATE);
    cr_assert_eq(rd.hs.term, 1);
    cr_assert_eq(rd.hs.vote, 1);
    cr_assert_eq(count_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_VOTE), 0);
    cr_assert_eq(count_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_VOTE), 2);
    cairn_raft_advance(t.n[1], &rd);
    net_free(&t);
}

Test(raft_cluster, leader_counts_itself_only_when_persisted)
{
    net_t t;
    net_init(&t, 3, 0, 0);
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    isolate(&t, 2, 1);
    isolate(&t, 3, 1);
    uint64_t idx;
    cairn_raft_propose(t.n[1], "x", 1, &idx);
    cairn_raft_ready_t rd;
    rdy(t.n[1], &rd);
    cr_assert_eq(count_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_APP), 2, "sent in parallel with the disk write");
    cairn_raft_advance(t.n[1], &rd);
    /* Follower 2 acks, but the leader's own copy is not durable: no quorum yet. */
    cairn_raft_msg_t ack = {.type = CAIRN_RAFT_MSG_APP_RESP, .from = 2, .to = 1, .term = 1, .index = idx};
    cr_assert_eq(cairn_raft_step(t.n[1], &ack), 0);
    cr_assert_eq(cairn_raft_commit(t.n[1]), 1);
    cairn_raft_persisted(t.n[1], idx, 1);
    cr_assert_eq(cairn_raft_commit(t.n[1]), idx);
    /* The heartbeat to node 3 (never acked anything) must not carry the commit index. */
    settle(t.n[1]);
    cairn_raft_tick(t.n[1]);
    rdy(t.n[1], &rd);
    for (size_t i = 0; i < rd.n_msgs; i++)
        if (rd.msgs[i].type == CAIRN_RAFT_MSG_HEARTBEAT)
            cr_assert_eq(rd.msgs[i].commit, rd.msgs[i].to == 3 ? 1 : idx, "hb to %llu",
                         (unsigned long long)rd.msgs[i].to);
    cairn_raft_advance(t.n[1], &rd);
    net_free(&t);
}

Test(raft_cluster, batching_and_inflight_limit)
{
    net_t t;
    memset(&t, 0, sizeof t);
    t.count = 3;
    for (uint64_t i = 1; i <= 3; i++) {
        cairn_raft_config_t c = cfg_of(i, THREE, 3);
        c.max_msg_bytes = 100;
        c.max_inflight = 2;
        t.n[i] = mk(&c);
    }
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    char buf[250];
    memset(buf, 'b', sizeof buf);
    for (int i = 0; i < 10; i++)
        cairn_raft_propose(t.n[1], buf, 30, NULL);
    cairn_raft_propose(t.n[1], buf, 250, NULL); /* larger than max_msg_bytes: travels alone */
    cairn_raft_ready_t rd;
    rdy(t.n[1], &rd);
    size_t to2 = 0;
    for (size_t i = 0; i < rd.n_msgs; i++) {
        if (rd.msgs[i].type != CAIRN_RAFT_MSG_APP || rd.msgs[i].to != 2)
            continue;
        to2++;
        cr_assert_eq(rd.msgs[i].n_entries, 3, "100 bytes hold three 30-byte entries");
    }
    cr_assert_eq(to2, 2, "only max_inflight APPs are outstanding");
    for (size_t i = 0; i < rd.n_msgs; i++)
        q_push(&t, &rd.msgs[i]);
    cairn_raft_advance(t.n[1], &rd);
    cairn_raft_persisted(t.n[1], 12, 1);
    pump(&t);
    for (int i = 1; i <= 3; i++)
        cr_assert_eq(cairn_raft_commit(t.n[i]), 12);
    cr_assert_geq(t.apps[1][2], 5);
    net_free(&t);
}

Test(raft_cluster, fast_backtracking_skips_a_term_per_round_trip)
{
    /* Node 1: 1..3 term 1, 4..10 term 3. Node 2: 1..3 term 1, 4..50 term 2 (a deposed
     * leader's uncommitted tail). Node 3: like node 1. */
    static cairn_raft_entry_t l1[10], l2[50];
    for (int i = 0; i < 10; i++)
        l1[i] = (cairn_raft_entry_t){.index = i + 1, .term = i < 3 ? 1 : 3};
    for (int i = 0; i < 50; i++)
        l2[i] = (cairn_raft_entry_t){.index = i + 1, .term = i < 3 ? 1 : 2};
    net_t t;
    memset(&t, 0, sizeof t);
    t.count = 3;
    for (uint64_t i = 1; i <= 3; i++) {
        cairn_raft_config_t c = cfg_of(i, THREE, 3);
        c.entries = i == 2 ? l2 : l1;
        c.n_entries = i == 2 ? 50 : 10;
        c.hs.term = i == 2 ? 2 : 3;
        c.hs.commit = 3;
        t.n[i] = mk(&c);
    }
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    cr_assert_leq(t.app_rejects[2], 1, "one rejection finds the divergence point: %zu", t.app_rejects[2]);
    cr_assert_eq(cairn_raft_last_index(t.n[2]), 11);
    for (uint64_t i = 1; i <= 11; i++)
        cr_assert_eq(cairn_raft_term_at(t.n[2], i), cairn_raft_term_at(t.n[1], i), "index %llu",
                     (unsigned long long)i);
    cr_assert_eq(cairn_raft_commit(t.n[2]), 11);
    net_free(&t);
}

Test(raft_cluster, read_index_on_leader_and_follower)
{
    net_t t;
    cairn_raft_ready_t rd;
    net_init(&t, 3, 0, 1);
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    cairn_raft_propose(t.n[1], "w", 1, NULL);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[1]), 2);

    /* Two reads between readies share one heartbeat round. */
    cairn_raft_read_index(t.n[1], 100);
    cairn_raft_read_index(t.n[1], 101);
    rdy(t.n[1], &rd);
    cr_assert_eq(rd.n_read_states, 0, "not before a quorum confirms leadership");
    cr_assert_eq(count_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_HEARTBEAT), 2);
    uint64_t ctx = find_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_HEARTBEAT)->context;
    cr_assert_neq(ctx, 0);
    for (size_t i = 0; i < rd.n_msgs; i++)
        q_push(&t, &rd.msgs[i]);
    cairn_raft_advance(t.n[1], &rd);
    pump(&t);
    cr_assert_eq(t.n_rs[1], 2);
    cr_assert_eq(t.rs[1][0].index, 2);
    cr_assert_eq(t.rs[1][0].context, 100);
    cr_assert_eq(t.rs[1][1].context, 101);

    /* A follower forwards and gets the leader's commit index back. */
    cairn_raft_read_index(t.n[3], 300);
    pump(&t);
    cr_assert_eq(t.n_rs[3], 1);
    cr_assert_eq(t.rs[3][0].context, 300);
    cr_assert_eq(t.rs[3][0].index, 2);

    /* A leader cut off from everyone cannot confirm; the read fails when CheckQuorum
     * deposes it (thesis §6.2). */
    isolate(&t, 1, 1);
    cairn_raft_read_index(t.n[1], 400);
    pump(&t);
    cr_assert_eq(t.n_rs[1], 2);
    for (int i = 0; i < 25 && cairn_raft_role(t.n[1]) == CAIRN_RAFT_LEADER; i++) {
        cairn_raft_tick(t.n[1]);
        pump(&t);
    }
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_FOLLOWER, "check quorum steps down");
    cr_assert_eq(t.n_rf[1], 1);
    cr_assert_eq(t.rf[1][0], 400);
    net_free(&t);
}

Test(raft_cluster, reads_wait_for_commit_in_term)
{
    net_t t;
    cairn_raft_ready_t rd;
    net_init(&t, 3, 0, 0);
    cairn_raft_campaign(t.n[1]);
    rdy(t.n[1], &rd);
    cairn_raft_msg_t g = {.type = CAIRN_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 1};
    cairn_raft_advance(t.n[1], &rd);
    cairn_raft_step(t.n[1], &g);
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_LEADER);
    cairn_raft_read_index(t.n[1], 9);
    rdy(t.n[1], &rd);
    cr_assert_eq(count_type(rd.msgs, rd.n_msgs, CAIRN_RAFT_MSG_HEARTBEAT), 0, "no round before commit in term");
    for (size_t i = 0; i < rd.n_msgs; i++)
        q_push(&t, &rd.msgs[i]);
    cairn_raft_advance(t.n[1], &rd);
    cairn_raft_persisted(t.n[1], 1, 1);
    pump(&t);
    cr_assert_eq(t.n_rs[1], 1);
    cr_assert_eq(t.rs[1][0].context, 9);
    cr_assert_eq(t.rs[1][0].index, 1);
    net_free(&t);
}

Test(raft_cluster, leadership_transfer)
{
    net_t t;
    net_init(&t, 3, 1, 1);
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    /* Node 3 lags; the transfer brings it up to date first. */
    isolate(&t, 3, 1);
    cairn_raft_propose(t.n[1], "a", 1, NULL);
    pump(&t);
    isolate(&t, 3, 0);
    cr_assert_eq(cairn_raft_transfer_leader(t.n[1], 3), 0);
    cr_assert_eq(cairn_raft_propose(t.n[1], "b", 1, NULL), CAIRN_ESTATE, "no proposals while transferring");
    cr_assert_eq(cairn_raft_transfer_leader(t.n[2], 3), CAIRN_ENOT_LEADER);
    cr_assert_eq(cairn_raft_transfer_leader(t.n[1], 9), CAIRN_EINVAL);
    pump(&t);
    cr_assert_eq(leader_of(&t), 3, "the target won despite the others' leader lease");
    cr_assert_eq(cairn_raft_term(t.n[3]), 2);
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_FOLLOWER);
    cr_assert_eq(cairn_raft_commit(t.n[3]), 3);

    /* A transfer to an unreachable node is abandoned after an election timeout. */
    isolate(&t, 2, 1);
    cr_assert_eq(cairn_raft_transfer_leader(t.n[3], 2), 0);
    cr_assert_eq(cairn_raft_propose(t.n[3], "c", 1, NULL), CAIRN_ESTATE);
    for (int i = 0; i < 10; i++) {
        cairn_raft_tick(t.n[3]);
        pump(&t);
    }
    cr_assert_eq(cairn_raft_role(t.n[3]), CAIRN_RAFT_LEADER);
    cr_assert_eq(cairn_raft_propose(t.n[3], "c", 1, NULL), 0, "transfer aborted");
    net_free(&t);
}

Test(raft_cluster, prevote_keeps_partitioned_node_term)
{
    for (int pv = 0; pv <= 1; pv++) {
        net_t t;
        net_init(&t, 3, pv, 0);
        cairn_raft_campaign(t.n[1]);
        pump(&t);
        uint64_t term = cairn_raft_term(t.n[1]);
        isolate(&t, 3, 1);
        for (int i = 0; i < 100; i++) {
            cairn_raft_tick(t.n[3]);
            pump(&t);
        }
        if (pv)
            cr_assert_eq(cairn_raft_term(t.n[3]), term, "PreVote: no term inflation");
        else
            cr_assert_gt(cairn_raft_term(t.n[3]), term + 2);
        net_free(&t);
    }
}

Test(raft_cluster, leader_lease_ignores_disruptive_votes)
{
    net_t t;
    net_init(&t, 3, 0, 1);
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    /* Node 2 just heard from the leader: a vote request for a higher term is ignored. */
    cairn_raft_msg_t v = {.type = CAIRN_RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 9, .log_term = 9, .index = 9};
    cr_assert_eq(cairn_raft_step(t.n[2], &v), 0);
    cr_assert_eq(cairn_raft_term(t.n[2]), 1);
    cr_assert_eq(cairn_raft_leader(t.n[2]), 1);
    cr_assert_not(cairn_raft_has_ready(t.n[2]));
    /* After an election timeout of silence it listens again. */
    for (int i = 0; i < 10; i++)
        cairn_raft_tick(t.n[2]);
    cr_assert_eq(cairn_raft_step(t.n[2], &v), 0);
    cr_assert_eq(cairn_raft_term(t.n[2]), 9);
    net_free(&t);
}

Test(raft_cluster, stale_leader_steps_down_on_higher_term)
{
    net_t t;
    net_init(&t, 3, 1, 1);
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    isolate(&t, 1, 1);
    for (int i = 0; i < 60 && leader_of(&t) <= 1; i++) {
        for (int k = 2; k <= 3; k++)
            cairn_raft_tick(t.n[k]);
        pump(&t);
    }
    uint64_t nl = 0;
    for (int k = 2; k <= 3; k++)
        if (cairn_raft_role(t.n[k]) == CAIRN_RAFT_LEADER)
            nl = k;
    cr_assert_neq(nl, 0, "the majority elects a new leader");
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_LEADER, "old leader has not noticed yet");
    isolate(&t, 1, 0);
    cairn_raft_tick(t.n[1]); /* its heartbeat meets a higher term */
    pump(&t);
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_FOLLOWER);
    cr_assert_eq(cairn_raft_term(t.n[1]), cairn_raft_term(t.n[nl]));
    cairn_raft_tick(t.n[nl]);
    pump(&t);
    cr_assert_eq(cairn_raft_leader(t.n[1]), nl);
    net_free(&t);
}

/* Raft §5.4.2 / Figure 8: a leader must not commit an entry of an older term by counting
 * replicas, even when a quorum stores it; only the replication of an entry of its own term
 * commits it (and everything before). One entry per APP exposes the intermediate state. */
Test(raft_cluster, no_commit_by_counting_old_term_replicas)
{
    static const uint8_t pay[10] = "oldtermxyz";
    cairn_raft_entry_t l1[2] = {{.index = 1, .term = 1, .type = CAIRN_RAFT_ENTRY_EMPTY},
                                {.index = 2, .term = 2, .data = pay, .len = sizeof pay}};
    cairn_raft_config_t c1 = cfg_of(1, THREE, 3), c2 = cfg_of(2, THREE, 3);
    c1.max_msg_bytes = c2.max_msg_bytes = 1;
    c1.hs = (cairn_raft_hardstate_t){.term = 2, .vote = 1, .commit = 1};
    c1.entries = l1;
    c1.n_entries = 2;
    c2.hs = (cairn_raft_hardstate_t){.term = 2, .commit = 1};
    c2.entries = l1;
    c2.n_entries = 1;
    cairn_raft_t *n1 = mk(&c1), *n2 = mk(&c2);
    cairn_raft_ready_t rd;

    cairn_raft_campaign(n1);
    settle(n1);
    cairn_raft_msg_t g = {.type = CAIRN_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 3};
    cr_assert_eq(cairn_raft_step(n1, &g), 0);
    cr_assert_eq(cairn_raft_role(n1), CAIRN_RAFT_LEADER);

    /* Ping-pong between the leader and node 2, one message at a time; the leader's own
     * entries are durable at once. */
    int saw_old_quorum = 0;
    for (int round = 0; round < 20 && cairn_raft_commit(n1) < 3; round++) {
        rdy(n1, &rd);
        const cairn_raft_msg_t *app = NULL;
        for (size_t i = 0; i < rd.n_msgs; i++)
            if (rd.msgs[i].type == CAIRN_RAFT_MSG_APP && rd.msgs[i].to == 2)
                app = &rd.msgs[i];
        uint64_t li = cairn_raft_last_index(n1);
        cairn_raft_msg_t fwd = app ? *app : (cairn_raft_msg_t){0};
        if (app)
            cr_assert_leq(app->n_entries, 1, "max_msg_bytes=1 sends one entry per APP");
        if (app)
            cr_assert_eq(cairn_raft_step(n2, &fwd), 0);
        cairn_raft_advance(n1, &rd);
        cairn_raft_persisted(n1, li, cairn_raft_term_at(n1, li));
        if (!app)
            continue;
        rdy(n2, &rd);
        for (size_t i = 0; i < rd.n_msgs_after_persist; i++) {
            cairn_raft_msg_t resp = rd.msgs_after_persist[i];
            cr_assert_eq(cairn_raft_step(n1, &resp), 0);
            if (!resp.reject && resp.index == 2) {
                /* Leader (3 durable) and node 2 both store (2, term 2): a quorum of 3. */
                saw_old_quorum = 1;
                cr_assert_eq(cairn_raft_commit(n1), 1, "an old-term entry is not committed by counting");
            }
        }
        cairn_raft_advance(n2, &rd);
    }
    cr_assert(saw_old_quorum);
    cr_assert_eq(cairn_raft_commit(n1), 3, "committing the no-op of term 3 commits index 2 too");
    cairn_raft_destroy(&n1);
    cairn_raft_destroy(&n2);
}

/* A shell may step messages while it still holds a ready (e.g. persisting on another
 * thread). Entries the ready hands out must stay readable until advance() even when a new
 * leader truncates them meanwhile (run under ASan to make this test bite). */
Test(raft_follower, ready_stays_valid_across_truncation_before_advance)
{
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    cairn_raft_t *r = mk(&c);
    uint8_t a[32], b[32];
    memset(a, 'a', sizeof a);
    memset(b, 'b', sizeof b);
    cairn_raft_entry_t e1[2] = {{.index = 1, .term = 1, .data = a, .len = sizeof a},
                                {.index = 2, .term = 1, .data = a, .len = sizeof a}};
    cairn_raft_msg_t app = {.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .entries = e1, .n_entries = 2};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cairn_raft_ready_t rd1;
    rdy(r, &rd1);
    cr_assert_eq(rd1.n_entries, 2);

    /* Leader of term 2 replaces index 2 while rd1 is still held. */
    cairn_raft_entry_t e2 = {.index = 2, .term = 2, .data = b, .len = sizeof b};
    cairn_raft_msg_t app2 = {.type = CAIRN_RAFT_MSG_APP, .from = 3, .to = 2, .term = 2, .index = 1, .log_term = 1,
                             .entries = &e2, .n_entries = 1};
    cr_assert_eq(cairn_raft_step(r, &app2), 0);
    cr_assert_eq(cairn_raft_term_at(r, 2), 2);
    for (size_t i = 0; i < rd1.n_entries; i++)
        for (size_t k = 0; k < rd1.entries[i].len; k++)
            cr_assert_eq(rd1.entries[i].data[k], 'a', "entry %zu byte %zu", i, k);
    cairn_raft_advance(r, &rd1);

    /* The next ready carries the replacement, and the data of the old entry 2 is freed
     * only once that ready is advanced too (ASan would flag a leak or a double free). */
    cairn_raft_ready_t rd2;
    rdy(r, &rd2);
    cr_assert_eq(rd2.n_entries, 1);
    cr_assert_eq(rd2.entries[0].index, 2);
    cr_assert_eq(rd2.entries[0].term, 2);
    cr_assert_eq(rd2.entries[0].data[0], 'b');
    cr_assert_eq(count_type(rd2.msgs_after_persist, rd2.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP), 1);
    cairn_raft_advance(r, &rd2);
    cr_assert_not(cairn_raft_has_ready(r));

    /* Two readies without an advance: the second carries everything not yet advanced. */
    cairn_raft_msg_t hb = {.type = CAIRN_RAFT_MSG_HEARTBEAT, .from = 3, .to = 2, .term = 2, .commit = 2};
    cairn_raft_step(r, &hb);
    rdy(r, &rd1);
    cr_assert_eq(rd1.n_msgs, 1);
    hb.context = 5;
    cairn_raft_step(r, &hb);
    cairn_raft_ready(r, &rd2);
    cr_assert_eq(rd2.n_msgs, 2);
    cr_assert_eq(rd2.msgs[1].context, 5);
    cairn_raft_advance(r, &rd2);
    cr_assert_not(cairn_raft_has_ready(r));
    cairn_raft_destroy(&r);
}

/* ---- log compaction and snapshots (thesis ch. 5) ------------------------------------------ */

/* The shell bounds the log's memory by bytes (issue 7): the core counts the entry data it
 * holds through appends, compaction, truncation and restarts, and says where to compact to
 * fit a budget. */
Test(raft_snapshot, log_bytes_are_counted_and_index_to_fit_bounds_them)
{
    cairn_raft_config_t c = cfg_of(1, ONE, 1);
    cairn_raft_t *r = mk(&c);
    cairn_raft_campaign(r);
    settle(r);
    cr_assert_eq(cairn_raft_log_bytes(r), 0, "the leader's empty entry has no data");
    char buf[1000] = {0};
    for (int i = 1; i <= 10; i++)
        cr_assert_eq(cairn_raft_propose(r, buf, (size_t)i * 100, NULL), 0); /* indexes 2..11 */
    cr_assert_eq(cairn_raft_log_bytes(r), 5500);
    cr_assert_eq(cairn_raft_index_to_fit(r, 5500), 0, "fits: the snapshot index (0)");
    cr_assert_eq(cairn_raft_index_to_fit(r, 5499), 2, "drops index 1 (0 bytes) and index 2 (100)");
    cr_assert_eq(cairn_raft_index_to_fit(r, 1000), 10, "index 11 alone holds 1000 bytes");
    cr_assert_eq(cairn_raft_index_to_fit(r, 999), 11, "nothing fits: the whole log");
    cr_assert_eq(cairn_raft_index_to_fit(r, 0), 11);
    cairn_raft_persisted(r, 11, 1);
    settle(r);
    cr_assert_eq(cairn_raft_compact(r, cairn_raft_index_to_fit(r, 3000), 1), 0);
    cr_assert_leq(cairn_raft_log_bytes(r), 3000);
    cr_assert_eq(cairn_raft_log_bytes(r), 800 + 900 + 1000, "entries 9..11 stay");
    cr_assert_eq(cairn_raft_snapshot_index(r), 8);
    uint64_t tail_bytes = cairn_raft_log_bytes(r);
    cairn_raft_destroy(&r);
    /* a restart counts what it is given */
    cairn_raft_entry_t tail[2] = {{.index = 9, .term = 1, .data = (const uint8_t *)buf, .len = 700},
                                  {.index = 10, .term = 1, .data = (const uint8_t *)buf, .len = 800}};
    c.snap_index = 8;
    c.snap_term = 1;
    c.entries = tail;
    c.n_entries = 2;
    c.hs = (cairn_raft_hardstate_t){.term = 1, .vote = 1, .commit = 10};
    r = mk(&c);
    cr_assert_eq(cairn_raft_log_bytes(r), 1500);
    cr_assert_lt(cairn_raft_log_bytes(r), tail_bytes);
    cairn_raft_destroy(&r);
}

/* A follower's conflicting suffix (Raft §5.3) leaves the count with the log. */
Test(raft_snapshot, log_bytes_follow_truncation)
{
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    char buf[100] = {0};
    cairn_raft_entry_t ents[3] = {{.index = 1, .term = 1, .data = (const uint8_t *)buf, .len = 10},
                                  {.index = 2, .term = 1, .data = (const uint8_t *)buf, .len = 20},
                                  {.index = 3, .term = 1, .data = (const uint8_t *)buf, .len = 30}};
    c.entries = ents;
    c.n_entries = 3;
    c.hs = (cairn_raft_hardstate_t){.term = 1, .vote = 0, .commit = 1};
    cairn_raft_t *r = mk(&c);
    cr_assert_eq(cairn_raft_log_bytes(r), 60);
    /* a leader of term 2 overwrites index 2.. with one entry of 50 bytes */
    cairn_raft_entry_t nw = {.index = 2, .term = 2, .data = (const uint8_t *)buf, .len = 50};
    cairn_raft_msg_t app = {.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 2, .log_term = 1, .index = 1,
                            .commit = 1, .entries = &nw, .n_entries = 1};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cr_assert_eq(cairn_raft_last_index(r), 2);
    cr_assert_eq(cairn_raft_term_at(r, 2), 2);
    cr_assert_eq(cairn_raft_log_bytes(r), 60, "10 + 50: the truncated 20 + 30 are gone");
    cairn_raft_destroy(&r);
}

Test(raft_snapshot, compaction_drops_entries_and_restart_from_snapshot)
{
    cairn_raft_config_t c = cfg_of(1, ONE, 1);
    cairn_raft_t *r = mk(&c);
    cairn_raft_campaign(r);
    settle(r);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(cairn_raft_propose(r, "abc", 3, NULL), 0);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cairn_raft_advance(r, &rd);
    cr_assert_eq(cairn_raft_compact(r, 5, 1), CAIRN_EINVAL, "not committed nor durable yet");
    cairn_raft_persisted(r, 11, 1);
    settle(r);
    cr_assert_eq(cairn_raft_commit(r), 11);
    cr_assert_eq(cairn_raft_compact(r, 5, 2), CAIRN_EINVAL, "wrong term");
    cr_assert_eq(cairn_raft_compact(r, 12, 1), CAIRN_EINVAL, "beyond the log");
    cr_assert_eq(cairn_raft_compact(r, 5, 1), 0);
    cr_assert_eq(cairn_raft_snapshot_index(r), 5);
    cr_assert_eq(cairn_raft_snapshot_term(r), 1);
    cr_assert_eq(cairn_raft_term_at(r, 4), 0, "compacted");
    cr_assert_eq(cairn_raft_term_at(r, 5), 1, "the snapshot point keeps its term");
    cr_assert_eq(cairn_raft_term_at(r, 6), 1);
    cr_assert_eq(cairn_raft_last_index(r), 11);
    cr_assert_eq(cairn_raft_compact(r, 3, 1), 0, "below the snapshot: nothing to do");
    cr_assert_eq(cairn_raft_compact(r, 5, 9), CAIRN_EINVAL);
    cr_assert_eq(cairn_raft_compact(r, 11, 1), 0, "the whole log");
    cr_assert_eq(cairn_raft_last_index(r), 11);
    cr_assert_eq(cairn_raft_term_at(r, 11), 1);
    uint64_t idx;
    cr_assert_eq(cairn_raft_propose(r, "z", 1, &idx), 0);
    cr_assert_eq(idx, 12);
    settle(r);
    cr_assert_eq(cairn_raft_commit(r), 12);
    const uint64_t *v;
    size_t nv, nl;
    cr_assert_eq(cairn_raft_conf_at(r, 11, &v, &nv, NULL, &nl), 0);
    cr_assert_eq(nv, 1);
    cr_assert_eq(v[0], 1);
    cr_assert_eq(nl, 0);
    cr_assert_eq(cairn_raft_conf_at(r, 10, &v, &nv, NULL, &nl), CAIRN_EINVAL, "compacted");
    cairn_raft_destroy(&r);

    /* Restart from the snapshot and the log after it. */
    cairn_raft_entry_t tail[2] = {{.index = 12, .term = 1, .data = (const uint8_t *)"z", .len = 1},
                                  {.index = 13, .term = 3, .type = CAIRN_RAFT_ENTRY_EMPTY}};
    c.snap_index = 11;
    c.snap_term = 1;
    c.entries = tail;
    c.n_entries = 2;
    c.hs = (cairn_raft_hardstate_t){.term = 3, .vote = 1, .commit = 5};
    r = mk(&c);
    cr_assert_eq(cairn_raft_commit(r), 11, "the snapshot is committed");
    cr_assert_eq(cairn_raft_last_index(r), 13);
    cr_assert_eq(cairn_raft_term_at(r, 11), 1);
    cr_assert_eq(cairn_raft_term_at(r, 10), 0);
    cairn_raft_campaign(r);
    settle(r);
    cr_assert_eq(cairn_raft_commit(r), 14);
    cairn_raft_destroy(&r);
}

Test(raft_snapshot, lagging_follower_gets_snapshot_then_appends)
{
    net_t t;
    net_init(&t, 3, 1, 1);
    t.hold_snapshots = 1;
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    isolate(&t, 3, 1);
    for (int i = 0; i < 20; i++)
        cairn_raft_propose(t.n[1], "data", 4, NULL);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[1]), 21);
    cr_assert_eq(cairn_raft_compact(t.n[1], 15, 1), 0);
    cr_assert_eq(cairn_raft_compact(t.n[2], 10, 1), 0, "members compact on their own");
    isolate(&t, 3, 0);
    cairn_raft_tick(t.n[1]); /* a heartbeat: node 3 answers, the leader probes it, it rejects */
    pump(&t);
    cr_assert_eq(t.snaps_sent[3], 1);
    cr_assert_eq(t.snap_index[3], 15);
    cr_assert_eq(t.snap_term[3], 1);
    cr_assert_eq(t.snap_from[3], 1);
    cr_assert_eq(t.snap_nv[3], 3);
    cr_assert_eq(t.snap_nl[3], 0);
    cairn_raft_progress_t p;
    cr_assert_eq(cairn_raft_progress(t.n[1], 3, &p), 0);
    cr_assert_eq(p.state, CAIRN_RAFT_PR_SNAPSHOT);
    cr_assert_eq(p.pending_snapshot, 15);
    cr_assert_eq(cairn_raft_progress(t.n[2], 3, &p), CAIRN_ENOT_LEADER);
    cr_assert_eq(cairn_raft_progress(t.n[1], 9, &p), CAIRN_ENOTFOUND);

    /* While it installs: no appends to it, heartbeats go on, the others are not held up. */
    size_t apps = t.apps[1][3];
    cairn_raft_propose(t.n[1], "more", 4, NULL);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cr_assert_eq(t.apps[1][3], apps, "paused while in snapshot");
    cr_assert_eq(cairn_raft_commit(t.n[2]), 22);
    cr_assert_eq(cairn_raft_last_index(t.n[3]), 1, "nothing until installed");

    /* The shell installed it: the log restarts after 15, and the leader resumes at 16. */
    cr_assert_eq(cairn_raft_snapshot_installed(t.n[3], 15, 1), 0);
    cr_assert_eq(cairn_raft_snapshot_index(t.n[3]), 15);
    cr_assert_eq(cairn_raft_commit(t.n[3]), 15);
    pump(&t);
    cr_assert_eq(cairn_raft_last_index(t.n[3]), 22);
    cr_assert_eq(cairn_raft_commit(t.n[3]), 22);
    cr_assert_eq(cairn_raft_term_at(t.n[3], 14), 0);
    cr_assert_eq(cairn_raft_term_at(t.n[3], 16), 1);
    cr_assert_eq(cairn_raft_progress(t.n[1], 3, &p), 0);
    cr_assert_eq(p.state, CAIRN_RAFT_PR_REPLICATE);
    cr_assert_eq(p.match, 22);
    cr_assert_eq(t.snaps_sent[3], 1);
    net_free(&t);
}

Test(raft_snapshot, failed_install_timeout_and_report)
{
    net_t t;
    net_init(&t, 3, 1, 1);
    t.hold_snapshots = 1;
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    isolate(&t, 3, 1);
    for (int i = 0; i < 5; i++)
        cairn_raft_propose(t.n[1], "d", 1, NULL);
    pump(&t);
    cr_assert_eq(cairn_raft_compact(t.n[1], 6, 1), 0);
    isolate(&t, 3, 0);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cr_assert_eq(t.snaps_sent[3], 1);
    cairn_raft_progress_t p;

    /* The follower could not fetch the data: the leader probes again at its next heartbeat
     * answer, which sends the snapshot again. */
    cr_assert_eq(cairn_raft_snapshot_failed(t.n[3]), 0);
    cr_assert_eq(cairn_raft_snapshot_failed(t.n[3]), CAIRN_ESTATE, "nothing pending any more");
    cr_assert_eq(cairn_raft_snapshot_installed(t.n[3], 6, 1), CAIRN_ESTATE);
    pump(&t);
    cr_assert_eq(cairn_raft_progress(t.n[1], 3, &p), 0);
    cr_assert_eq(p.state, CAIRN_RAFT_PR_PROBE);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cr_assert_eq(t.snaps_sent[3], 2);
    cr_assert_eq(cairn_raft_progress(t.n[1], 3, &p), 0);
    cr_assert_eq(p.state, CAIRN_RAFT_PR_SNAPSHOT);

    /* No answer at all (the follower's shell lost it): back to probing after SNAP_TIMEOUT
     * election timeouts; meanwhile duplicates of the snapshot are ignored by the follower. */
    isolate(&t, 3, 1);
    int ticks = 0;
    while (ticks < 100 && cairn_raft_progress(t.n[1], 3, &p) == 0 && p.state == CAIRN_RAFT_PR_SNAPSHOT) {
        cairn_raft_tick(t.n[1]);
        pump(&t);
        ticks++;
    }
    cr_assert_eq(p.state, CAIRN_RAFT_PR_PROBE);
    cr_assert_eq(ticks, 30, "3 election timeouts: %d", ticks);
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_LEADER);
    isolate(&t, 3, 0);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cr_assert_eq(t.snaps_sent[3], 3);
    cr_assert_eq(t.installs[3], 0);

    /* The leader's shell reports the transfer done: probe right after the snapshot. */
    cairn_raft_report_snapshot(t.n[1], 3, 1);
    cr_assert_eq(cairn_raft_progress(t.n[1], 3, &p), 0);
    cr_assert_eq(p.state, CAIRN_RAFT_PR_PROBE);
    cr_assert_eq(p.next, 7);
    /* The follower finishes the install it still holds (the second one: the third was a
     * duplicate of a pending install, ignored) and everything converges. */
    cr_assert_eq(cairn_raft_snapshot_installed(t.n[3], 6, 1), 0);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[3]), 6);
    cr_assert_eq(cairn_raft_last_index(t.n[3]), 6);
    cr_assert_eq(cairn_raft_progress(t.n[1], 3, &p), 0);
    cr_assert_eq(p.state, CAIRN_RAFT_PR_REPLICATE);
    cairn_raft_report_snapshot(t.n[1], 3, 0); /* not in SNAPSHOT: ignored */
    cr_assert_eq(cairn_raft_progress(t.n[1], 3, &p), 0);
    cr_assert_eq(p.state, CAIRN_RAFT_PR_REPLICATE);
    net_free(&t);
}

static const uint64_t V123[] = {1, 2, 3}, L4[] = {4};

Test(raft_snapshot, installed_snapshot_resets_the_log)
{
    /* Node 2 holds a deposed leader's tail: 1..3 term 1 (committed), 4..8 term 2. */
    cairn_raft_entry_t l[8];
    for (int i = 0; i < 8; i++)
        l[i] = (cairn_raft_entry_t){.index = i + 1, .term = i < 3 ? 1 : 2, .type = CAIRN_RAFT_ENTRY_EMPTY};
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    c.hs = (cairn_raft_hardstate_t){.term = 2, .commit = 3};
    c.entries = l;
    c.n_entries = 8;
    cairn_raft_t *r = mk(&c);
    /* Leader 1 of term 3 compacted through (10, 3); its membership has learner 4. */
    cairn_raft_msg_t sm = {.type = CAIRN_RAFT_MSG_SNAP, .from = 1, .to = 2, .term = 3, .index = 10, .log_term = 3,
                           .snap_index = 10, .snap_term = 3, .voters = V123, .n_voters = 3, .learners = L4,
                           .n_learners = 1};
    cr_assert_eq(cairn_raft_step(r, &sm), 0);
    cr_assert_eq(cairn_raft_last_index(r), 8, "nothing changes before the install");
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert(rd.has_snapshot);
    cr_assert_eq(rd.snapshot_index, 10);
    cr_assert_eq(rd.snapshot_term, 3);
    cr_assert_eq(rd.snapshot_from, 1);
    cr_assert_eq(rd.n_snapshot_voters, 3);
    cr_assert_eq(rd.n_snapshot_learners, 1);
    cr_assert_eq(rd.snapshot_learners[0], 4);
    cr_assert_null(find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP),
                   "no answer before the install");
    cairn_raft_advance(r, &rd);
    cr_assert_eq(cairn_raft_step(r, &sm), 0, "a duplicate while installing");
    cr_assert_not(cairn_raft_has_ready(r), "is ignored");

    cr_assert_eq(cairn_raft_snapshot_installed(r, 11, 3), CAIRN_EINVAL, "not the pending one");
    cr_assert_eq(cairn_raft_snapshot_installed(r, 10, 3), 0);
    cr_assert_eq(cairn_raft_snapshot_installed(r, 10, 3), CAIRN_ESTATE);
    cr_assert_eq(cairn_raft_last_index(r), 10);
    cr_assert_eq(cairn_raft_snapshot_index(r), 10);
    cr_assert_eq(cairn_raft_term_at(r, 8), 0, "the divergent tail is gone");
    cr_assert_eq(cairn_raft_term_at(r, 10), 3);
    cr_assert_eq(cairn_raft_commit(r), 10);
    const uint64_t *ids;
    cr_assert_eq(cairn_raft_voters(r, &ids), 3);
    cr_assert_eq(cairn_raft_learners(r, &ids), 1);
    cr_assert_eq(ids[0], 4);
    rdy(r, &rd);
    cr_assert_eq(rd.n_entries, 0);
    cr_assert_eq(rd.hs.commit, 10);
    cr_assert(rd.conf_changed);
    cr_assert_eq(rd.n_learners, 1);
    cr_assert_eq(rd.learners[0], 4);
    const cairn_raft_msg_t *ack = find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP);
    cr_assert_not_null(ack);
    cr_assert_eq(ack->to, 1);
    cr_assert_eq(ack->index, 10);
    cr_assert_eq(ack->reject, 0);
    cairn_raft_advance(r, &rd);

    /* The leader goes on from 11. */
    cairn_raft_entry_t e11 = {.index = 11, .term = 3, .data = (const uint8_t *)"x", .len = 1};
    cairn_raft_msg_t app = {.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 3, .index = 10, .log_term = 3,
                            .commit = 11, .entries = &e11, .n_entries = 1};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cr_assert_eq(cairn_raft_last_index(r), 11);
    cr_assert_eq(cairn_raft_commit(r), 11);
    settle(r);
    /* A snapshot we already cover is answered with our commit index at once. */
    sm.snap_index = sm.index = 5;
    cr_assert_eq(cairn_raft_step(r, &sm), 0);
    rdy(r, &rd);
    cr_assert_not(rd.has_snapshot);
    ack = find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP);
    cr_assert_not_null(ack);
    cr_assert_eq(ack->index, 11);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);
}

Test(raft_snapshot, snapshot_the_log_holds_only_commits_and_install_keeps_a_matching_tail)
{
    cairn_raft_entry_t l[8];
    for (int i = 0; i < 8; i++)
        l[i] = (cairn_raft_entry_t){.index = i + 1, .term = 1, .type = CAIRN_RAFT_ENTRY_EMPTY};
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    c.hs = (cairn_raft_hardstate_t){.term = 1, .commit = 3};
    c.entries = l;
    c.n_entries = 8;
    cairn_raft_t *r = mk(&c);
    cairn_raft_msg_t sm = {.type = CAIRN_RAFT_MSG_SNAP, .from = 1, .to = 2, .term = 2, .index = 6, .log_term = 1,
                           .snap_index = 6, .snap_term = 1, .voters = V123, .n_voters = 3};
    cr_assert_eq(cairn_raft_step(r, &sm), 0);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert_not(rd.has_snapshot, "Figure 5.3 step 6: we hold (6, 1)");
    cr_assert_eq(rd.commit, 6);
    cr_assert_eq(find_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_APP_RESP)->index, 6);
    cairn_raft_advance(r, &rd);
    cr_assert_eq(cairn_raft_last_index(r), 8);

    /* A snapshot beyond our log is pending; meanwhile the leader's appends reach past it. */
    sm = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_SNAP, .from = 1, .to = 2, .term = 2, .index = 10, .log_term = 2,
                            .snap_index = 10, .snap_term = 2, .voters = V123, .n_voters = 3};
    cr_assert_eq(cairn_raft_step(r, &sm), 0);
    settle(r);
    cairn_raft_entry_t e[3] = {{.index = 9, .term = 1}, {.index = 10, .term = 2}, {.index = 11, .term = 2}};
    cairn_raft_msg_t app = {.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 2, .index = 8, .log_term = 1,
                            .commit = 6, .entries = e, .n_entries = 3};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    settle(r);
    cr_assert_eq(cairn_raft_snapshot_installed(r, 10, 2), 0);
    cr_assert_eq(cairn_raft_snapshot_index(r), 10);
    cr_assert_eq(cairn_raft_last_index(r), 11, "the tail after a matching snapshot point stays");
    cr_assert_eq(cairn_raft_term_at(r, 11), 2);
    cr_assert_eq(cairn_raft_commit(r), 10);
    cairn_raft_destroy(&r);
}

/* ---- membership (thesis ch. 4) ------------------------------------------------------------ */

/* Voters {1,2,3} and learner 4. */
static void net_init_learner(net_t *t, int pre_vote, int check_quorum)
{
    memset(t, 0, sizeof *t);
    t->count = 4;
    for (uint64_t i = 1; i <= 4; i++) {
        cairn_raft_config_t c = cfg_of(i, V123, 3);
        c.learners = L4;
        c.n_learners = 1;
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        t->n[i] = mk(&c);
    }
}

static size_t voters_of(cairn_raft_t *r, uint64_t *out)
{
    const uint64_t *ids;
    size_t n = cairn_raft_voters(r, &ids);
    memcpy(out, ids, n * sizeof *ids);
    return n;
}

static int has_id(const uint64_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static size_t conf_data(uint8_t *buf, uint8_t op, uint64_t id)
{
    buf[0] = op;
    for (int i = 0; i < 8; i++)
        buf[1 + i] = (uint8_t)(id >> (8 * i));
    return 9;
}

Test(raft_membership, learner_replicates_but_never_votes_counts_or_campaigns)
{
    net_t t;
    net_init_learner(&t, 1, 1);
    cr_assert_eq(cairn_raft_campaign(t.n[4]), CAIRN_ESTATE, "a learner never campaigns");
    cr_assert_eq(cairn_raft_campaign(t.n[1]), 0);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    cr_assert_eq(cairn_raft_commit(t.n[4]), 1, "the learner gets the log");
    cr_assert_eq(cairn_raft_leader(t.n[4]), 1);
    cr_assert_eq(cairn_raft_transfer_leader(t.n[1], 4), CAIRN_EINVAL, "a learner cannot lead");

    /* Only voters count: with 2 and 3 cut off, the learner's ack commits nothing. */
    isolate(&t, 2, 1);
    isolate(&t, 3, 1);
    cairn_raft_propose(t.n[1], "x", 1, NULL);
    pump(&t);
    cr_assert_eq(cairn_raft_last_index(t.n[4]), 2);
    cr_assert_eq(cairn_raft_commit(t.n[1]), 1, "a learner does not count for commit");
    /* ... nor for reads, nor for CheckQuorum. */
    cairn_raft_read_index(t.n[1], 55);
    pump(&t);
    cr_assert_eq(t.n_rs[1], 0);
    for (int i = 0; i < 25 && cairn_raft_role(t.n[1]) == CAIRN_RAFT_LEADER; i++) {
        cairn_raft_tick(t.n[1]);
        pump(&t);
    }
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_FOLLOWER, "check quorum ignores the learner");

    /* The learner never campaigns, however long nobody leads. */
    uint64_t term = cairn_raft_term(t.n[4]);
    for (int i = 0; i < 200; i++) {
        cairn_raft_tick(t.n[4]);
        pump(&t);
    }
    cr_assert_eq(cairn_raft_role(t.n[4]), CAIRN_RAFT_FOLLOWER);
    cr_assert_eq(cairn_raft_term(t.n[4]), term);
    cr_assert_eq(cairn_raft_leader(t.n[4]), 0, "it forgot the silent leader");
    net_free(&t);

    /* A learner's granted vote does not count toward a candidate's quorum. */
    cairn_raft_config_t c = cfg_of(1, V123, 3);
    c.learners = L4;
    c.n_learners = 1;
    cairn_raft_t *r = mk(&c);
    cairn_raft_campaign(r);
    settle(r);
    cairn_raft_msg_t g = {.type = CAIRN_RAFT_MSG_VOTE_RESP, .from = 4, .to = 1, .term = 1};
    cr_assert_eq(cairn_raft_step(r, &g), 0);
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_CANDIDATE);
    cairn_raft_ready_t rd;
    cairn_raft_campaign(r);
    rdy(r, &rd);
    cr_assert_eq(count_type(rd.msgs_after_persist, rd.n_msgs_after_persist, CAIRN_RAFT_MSG_VOTE), 2,
                 "vote requests go to the voters only");
    cairn_raft_advance(r, &rd);
    g.term = 2;
    g.from = 4;
    cairn_raft_step(r, &g);
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_CANDIDATE);
    g.from = 3;
    cairn_raft_step(r, &g);
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_LEADER);
    cairn_raft_destroy(&r);
}

Test(raft_membership, promote_only_a_caught_up_learner)
{
    net_t t;
    net_init_learner(&t, 1, 1);
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_PROMOTE, 2), CAIRN_EINVAL, "not a learner");
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_PROMOTE, 9), CAIRN_ENOTFOUND);
    cr_assert_eq(cairn_raft_propose_conf(t.n[2], CAIRN_RAFT_CONF_PROMOTE, 4), CAIRN_ENOT_LEADER);
    isolate(&t, 4, 1);
    for (int i = 0; i < CAIRN_RAFT_PROMOTE_MAX_LAG + 100; i++)
        cairn_raft_propose(t.n[1], "p", 1, NULL);
    pump(&t);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_PROMOTE, 4), CAIRN_EAGAIN, "1100 entries behind");
    isolate(&t, 4, 0);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cairn_raft_progress_t p;
    cr_assert_eq(cairn_raft_progress(t.n[1], 4, &p), 0);
    cr_assert_eq(p.voter, 0);
    cr_assert_eq(p.match, cairn_raft_last_index(t.n[1]));
    uint64_t idx;
    cr_assert_eq(cairn_raft_propose_conf_ctx(t.n[1], CAIRN_RAFT_CONF_PROMOTE, 4, NULL, 0, &idx), 0);
    cr_assert_eq(idx, cairn_raft_last_index(t.n[1]));
    uint64_t v[8];
    cr_assert_eq(voters_of(t.n[1], v), 4, "applied on append, before it commits");
    cr_assert_eq(cairn_raft_learners(t.n[1], NULL), 0);
    pump(&t);
    for (int i = 1; i <= 4; i++) {
        cr_assert_eq(voters_of(t.n[i], v), 4, "node %d", i);
        cr_assert_eq(v[3], 4);
        cr_assert_eq(cairn_raft_commit(t.n[i]), idx);
        cr_assert_geq(t.conf_changes[i], 1);
    }
    /* Now 3 of 4 are a quorum: with 4 and 3 cut off, nothing commits. */
    isolate(&t, 3, 1);
    isolate(&t, 4, 1);
    cairn_raft_propose(t.n[1], "q", 1, NULL);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[1]), idx);
    isolate(&t, 4, 0);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[1]), idx + 1);
    net_free(&t);
}

Test(raft_membership, one_change_at_a_time)
{
    net_t t;
    cairn_raft_ready_t rd;
    net_init(&t, 3, 0, 0);
    cairn_raft_campaign(t.n[1]);
    rdy(t.n[1], &rd);
    cairn_raft_advance(t.n[1], &rd);
    cairn_raft_msg_t g = {.type = CAIRN_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 1};
    cairn_raft_step(t.n[1], &g);
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_LEADER);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_ADD_LEARNER, 4), CAIRN_ESTATE,
                 "not before the leader committed an entry of its term");
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cairn_raft_persisted(t.n[1], 1, 1);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[1]), 1);

    cr_assert_eq(cairn_raft_propose_conf(t.n[1], 0, 4), CAIRN_EINVAL, "bad op");
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], 9, 4), CAIRN_EINVAL, "bad op");
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_ADD_VOTER, 0), CAIRN_EINVAL, "id 0");
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_ADD_VOTER, 2), CAIRN_EEXISTS);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_REMOVE, 9), CAIRN_ENOTFOUND);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_UPDATE, 9), CAIRN_ENOTFOUND);
    cr_assert_eq(cairn_raft_propose_conf_ctx(t.n[1], CAIRN_RAFT_CONF_UPDATE, 2, NULL, 5, NULL), CAIRN_EINVAL);

    isolate(&t, 2, 1);
    isolate(&t, 3, 1);
    uint64_t idx;
    cr_assert_eq(cairn_raft_propose_conf_ctx(t.n[1], CAIRN_RAFT_CONF_ADD_LEARNER, 4, "node-4", 6, &idx), 0);
    cr_assert_eq(idx, 2);
    cr_assert_eq(cairn_raft_pending_conf_index(t.n[1]), 2);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_ADD_LEARNER, 5), CAIRN_ESTATE, "one in flight");
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_ADD_LEARNER, 4), CAIRN_ESTATE);
    cr_assert_eq(cairn_raft_propose(t.n[1], "ok", 2, NULL), 0, "ordinary proposals are not held up");
    pump(&t);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_ADD_LEARNER, 5), CAIRN_ESTATE, "still uncommitted");
    isolate(&t, 2, 0);
    isolate(&t, 3, 0);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[1]), 3);
    cr_assert_eq(cairn_raft_pending_conf_index(t.n[1]), 0);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_ADD_LEARNER, 4), CAIRN_EEXISTS);
    cr_assert_eq(cairn_raft_propose_conf(t.n[1], CAIRN_RAFT_CONF_ADD_LEARNER, 5), 0);

    /* The entry the followers got carries the layout of the top of raft.c. */
    cairn_raft_conf_change_t cc;
    cr_assert_eq(cairn_raft_conf_decode(NULL, 0, &cc), CAIRN_EINVAL);
    uint8_t raw[16] = {CAIRN_RAFT_CONF_ADD_LEARNER, 4, 0, 0, 0, 0, 0, 0, 0, 'n', 'o', 'd', 'e'};
    cr_assert_eq(cairn_raft_conf_decode(raw, 13, &cc), 0);
    cr_assert_eq(cc.op, CAIRN_RAFT_CONF_ADD_LEARNER);
    cr_assert_eq(cc.node_id, 4);
    cr_assert_eq(cc.ctx_len, 4);
    cr_assert_eq(memcmp(cc.ctx, "node", 4), 0);
    cr_assert_eq(cairn_raft_conf_decode(raw, 8, &cc), CAIRN_EINVAL, "short");
    raw[0] = 6;
    cr_assert_eq(cairn_raft_conf_decode(raw, 9, &cc), CAIRN_EINVAL, "op");
    raw[0] = 1;
    raw[1] = 0;
    cr_assert_eq(cairn_raft_conf_decode(raw, 9, &cc), CAIRN_EINVAL, "id 0");
    net_free(&t);
}

Test(raft_membership, conf_applies_on_append_and_reverts_on_truncation)
{
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    cairn_raft_t *r = mk(&c);
    uint8_t add4[9];
    conf_data(add4, CAIRN_RAFT_CONF_ADD_LEARNER, 4);
    cairn_raft_entry_t e[2] = {{.index = 1, .term = 1, .type = CAIRN_RAFT_ENTRY_EMPTY},
                               {.index = 2, .term = 1, .type = CAIRN_RAFT_ENTRY_CONF, .data = add4, .len = 9}};
    cairn_raft_msg_t app = {.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .commit = 1, .entries = e,
                            .n_entries = 2};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    const uint64_t *ids;
    cr_assert_eq(cairn_raft_learners(r, &ids), 1, "in effect as soon as appended (thesis §4.1)");
    cr_assert_eq(ids[0], 4);
    cr_assert_eq(cairn_raft_commit(r), 1);
    cr_assert_eq(cairn_raft_pending_conf_index(r), 2);
    size_t nv, nl;
    cr_assert_eq(cairn_raft_conf_at(r, 1, &ids, &nv, NULL, &nl), 0);
    cr_assert_eq(nl, 0);
    cr_assert_eq(cairn_raft_conf_at(r, 2, &ids, &nv, NULL, &nl), 0);
    cr_assert_eq(nl, 1);
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert(rd.conf_changed);
    cr_assert_eq(rd.n_voters, 3);
    cr_assert_eq(rd.n_learners, 1);
    cr_assert_eq(rd.learners[0], 4);
    cairn_raft_advance(r, &rd);
    settle(r);

    /* Leader 3 of term 2 never had it: its entry 2 replaces ours, and so does its membership. */
    cairn_raft_entry_t n2 = {.index = 2, .term = 2, .data = (const uint8_t *)"v", .len = 1};
    app = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP, .from = 3, .to = 2, .term = 2, .index = 1, .log_term = 1,
                             .commit = 1, .entries = &n2, .n_entries = 1};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cr_assert_eq(cairn_raft_learners(r, NULL), 0, "reverted on truncation");
    cr_assert_eq(cairn_raft_pending_conf_index(r), 0);
    rdy(r, &rd);
    cr_assert(rd.conf_changed);
    cr_assert_eq(rd.n_voters, 3);
    cr_assert_eq(rd.n_learners, 0);
    cairn_raft_advance(r, &rd);
    cr_assert_not(cairn_raft_has_ready(r));

    /* A removal of this very node, appended: it is no voter any more, so it never campaigns. */
    uint8_t rm2[9];
    conf_data(rm2, CAIRN_RAFT_CONF_REMOVE, 2);
    cairn_raft_entry_t e3 = {.index = 3, .term = 2, .type = CAIRN_RAFT_ENTRY_CONF, .data = rm2, .len = 9};
    app = (cairn_raft_msg_t){.type = CAIRN_RAFT_MSG_APP, .from = 3, .to = 2, .term = 2, .index = 2, .log_term = 2,
                             .commit = 3, .entries = &e3, .n_entries = 1};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    settle(r);
    cr_assert_eq(cairn_raft_voters(r, &ids), 2);
    cr_assert_eq(cairn_raft_campaign(r), CAIRN_ESTATE);
    for (int i = 0; i < 100; i++)
        cairn_raft_tick(r);
    settle(r);
    cr_assert_eq(cairn_raft_role(r), CAIRN_RAFT_FOLLOWER);
    cr_assert_eq(cairn_raft_term(r), 2);
    /* It still accepts a leader it is not in the configuration of (it could be re-added). */
    cairn_raft_msg_t hb = {.type = CAIRN_RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 3};
    cr_assert_eq(cairn_raft_step(r, &hb), 0);
    cr_assert_eq(cairn_raft_leader(r), 1);
    cairn_raft_destroy(&r);
}

Test(raft_membership, malformed_conf_entries_are_counted_noops)
{
    static const uint64_t just2[] = {2};
    cairn_raft_config_t c = cfg_of(2, just2, 1);
    cairn_raft_t *r = mk(&c);
    uint8_t junk[3] = {1, 2, 3}, op9[9], id0[9], rm7[9], lrn2[9], rm2[9], add5[9], prom2[9];
    conf_data(op9, 9, 5);
    conf_data(id0, CAIRN_RAFT_CONF_ADD_VOTER, 0);
    conf_data(rm7, CAIRN_RAFT_CONF_REMOVE, 7);
    conf_data(lrn2, CAIRN_RAFT_CONF_ADD_LEARNER, 2); /* a voter cannot be demoted */
    conf_data(rm2, CAIRN_RAFT_CONF_REMOVE, 2);       /* the last voter */
    conf_data(prom2, CAIRN_RAFT_CONF_PROMOTE, 2);    /* already a voter: no change, no error */
    conf_data(add5, CAIRN_RAFT_CONF_ADD_VOTER, 5);   /* a valid one after all that */
    const uint8_t *d[] = {junk, op9, id0, rm7, lrn2, rm2, prom2, add5};
    size_t lens[] = {3, 9, 9, 9, 9, 9, 9, 9};
    cairn_raft_entry_t e[9] = {{.index = 1, .term = 1, .type = CAIRN_RAFT_ENTRY_CONF}}; /* len 0 */
    for (int i = 0; i < 8; i++)
        e[i + 1] = (cairn_raft_entry_t){.index = i + 2, .term = 1, .type = CAIRN_RAFT_ENTRY_CONF, .data = d[i],
                                        .len = lens[i]};
    cairn_raft_msg_t app = {.type = CAIRN_RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .commit = 9, .entries = e,
                            .n_entries = 9};
    cr_assert_eq(cairn_raft_step(r, &app), 0);
    cr_assert_eq(cairn_raft_conf_errors(r), 7);
    const uint64_t *ids;
    cr_assert_eq(cairn_raft_voters(r, &ids), 2);
    cr_assert_eq(ids[0], 2);
    cr_assert_eq(ids[1], 5);
    cr_assert_eq(cairn_raft_commit(r), 9);
    settle(r);
    cairn_raft_destroy(&r);
}

Test(raft_membership, removed_leader_steps_down_after_the_removal_commits)
{
    net_t t;
    net_init(&t, 3, 1, 1);
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    cr_assert_eq(leader_of(&t), 1);
    isolate(&t, 3, 1);
    uint64_t idx;
    cr_assert_eq(cairn_raft_propose_conf_ctx(t.n[1], CAIRN_RAFT_CONF_REMOVE, 1, "bye", 3, &idx), 0);
    uint64_t v[8];
    cr_assert_eq(voters_of(t.n[1], v), 2);
    cr_assert_not(has_id(v, 2, 1));
    pump(&t);
    /* New voters {2,3}: the leader does not count itself, and 3 is cut off. */
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_LEADER, "leads until the removal commits");
    cr_assert_lt(cairn_raft_commit(t.n[1]), idx);
    cr_assert_eq(cairn_raft_propose(t.n[1], "w", 1, NULL), 0, "and still takes proposals");
    isolate(&t, 3, 0);
    cairn_raft_tick(t.n[1]);
    pump(&t);
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_FOLLOWER, "thesis §4.2.2");
    uint64_t nl = leader_of(&t);
    cr_assert(nl == 2 || nl == 3, "handed over at once (TimeoutNow), got %llu", (unsigned long long)nl);
    for (int i = 2; i <= 3; i++) {
        cr_assert_geq(cairn_raft_commit(t.n[i]), idx + 1);
        cr_assert_eq(voters_of(t.n[i], v), 2);
    }
    cr_assert_eq(cairn_raft_campaign(t.n[1]), CAIRN_ESTATE);
    isolate(&t, 1, 1);
    uint64_t term = cairn_raft_term(t.n[1]);
    for (int i = 0; i < 100; i++) {
        cairn_raft_tick(t.n[1]);
        pump(&t);
    }
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_FOLLOWER, "a removed node never campaigns");
    cr_assert_eq(cairn_raft_term(t.n[1]), term);
    /* The two left commit on their own. */
    uint64_t before = cairn_raft_commit(t.n[nl]);
    cairn_raft_propose(t.n[nl], "after", 5, NULL);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[nl]), before + 1);
    cr_assert_eq(cairn_raft_propose_conf(t.n[nl], CAIRN_RAFT_CONF_REMOVE, nl == 2 ? 3 : 2), 0);
    pump(&t);
    cr_assert_eq(cairn_raft_propose_conf(t.n[nl], CAIRN_RAFT_CONF_REMOVE, nl), CAIRN_EINVAL, "the last voter");
    net_free(&t);
}

Test(raft_membership, restart_recomputes_membership_from_the_log)
{
    uint8_t a[9], p[9], rm[9];
    conf_data(a, CAIRN_RAFT_CONF_ADD_LEARNER, 4);
    conf_data(p, CAIRN_RAFT_CONF_PROMOTE, 4);
    conf_data(rm, CAIRN_RAFT_CONF_REMOVE, 1);
    cairn_raft_entry_t l[4] = {{.index = 1, .term = 1, .type = CAIRN_RAFT_ENTRY_EMPTY},
                               {.index = 2, .term = 1, .type = CAIRN_RAFT_ENTRY_CONF, .data = a, .len = 9},
                               {.index = 3, .term = 1, .type = CAIRN_RAFT_ENTRY_CONF, .data = p, .len = 9},
                               {.index = 4, .term = 1, .type = CAIRN_RAFT_ENTRY_CONF, .data = rm, .len = 9}};
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    c.hs = (cairn_raft_hardstate_t){.term = 1, .commit = 3};
    c.entries = l;
    c.n_entries = 4;
    cairn_raft_t *r = mk(&c);
    uint64_t v[8];
    cr_assert_eq(voters_of(r, v), 3);
    cr_assert_eq(v[0], 2);
    cr_assert_eq(v[1], 3);
    cr_assert_eq(v[2], 4);
    cr_assert_eq(cairn_raft_pending_conf_index(r), 4);
    const uint64_t *ids;
    size_t nv, nl;
    cr_assert_eq(cairn_raft_conf_at(r, 2, &ids, &nv, NULL, &nl), 0);
    cr_assert_eq(nv, 3);
    cr_assert_eq(nl, 1);
    cr_assert_eq(cairn_raft_conf_at(r, 0, &ids, &nv, NULL, &nl), 0);
    cr_assert_eq(nv, 3);
    cr_assert_eq(ids[0], 1);
    cr_assert(cairn_raft_has_ready(r), "the recomputed membership is reported");
    cairn_raft_ready_t rd;
    cairn_raft_ready(r, &rd);
    cr_assert(rd.conf_changed);
    cr_assert_eq(rd.n_voters, 3);
    cr_assert_eq(rd.n_entries, 0);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);

    /* The removed node restarts outside its configuration: passive. */
    c.id = 1;
    r = mk(&c);
    cr_assert_eq(cairn_raft_campaign(r), CAIRN_ESTATE);
    cairn_raft_destroy(&r);

    /* A snapshot's membership with a learner, and a joining node outside it. */
    c = cfg_of(5, V123, 3);
    c.learners = L4;
    c.n_learners = 1;
    c.snap_index = 10;
    c.snap_term = 2;
    c.hs = (cairn_raft_hardstate_t){.term = 2, .commit = 10};
    r = mk(&c);
    cr_assert_eq(cairn_raft_learners(r, &ids), 1);
    cr_assert_eq(ids[0], 4);
    cr_assert_eq(cairn_raft_campaign(r), CAIRN_ESTATE, "not a member yet");
    cr_assert_not(cairn_raft_has_ready(r));
    cairn_raft_destroy(&r);
}

/* Random snapshot, membership and compaction calls mixed with random messages: never a
 * crash or a leak (ASan), and the commit index stays within the log. */
Test(raft_robust, random_snapshot_and_membership_calls_never_crash)
{
    uint64_t s = 777;
#define RND() lcg(&s)
    for (int round = 0; round < 30; round++) {
        cairn_raft_config_t c = cfg_of(1 + round % 4, V123, 3);
        c.learners = L4;
        c.n_learners = 1;
        c.pre_vote = round & 1;
        c.check_quorum = (round >> 1) & 1;
        c.max_inflight = 1 + round % 4;
        c.max_msg_bytes = 16;
        cairn_raft_t *r = mk(&c);
        uint64_t self = c.id;
        for (int i = 0; i < 2000; i++) {
            cairn_raft_entry_t ents[4];
            uint8_t data[4][12];
            uint64_t mem[6] = {RND() % 6, RND() % 6, RND() % 6, RND() % 6, RND() % 6, RND() % 6};
            cairn_raft_msg_t m = {.type = (uint8_t)(RND() % 3 ? CAIRN_RAFT_MSG_SNAP : RND() % CAIRN_RAFT_MSG_TYPE_MAX_),
                                  .from = 1 + RND() % 5,
                                  .to = self,
                                  .term = RND() % 6,
                                  .log_term = RND() % 6,
                                  .index = RND() % 12,
                                  .commit = RND() % 12,
                                  .reject = RND() % 2,
                                  .reject_hint = RND() % 12,
                                  .snap_index = RND() % 14,
                                  .snap_term = RND() % 6,
                                  .voters = mem,
                                  .n_voters = RND() % 4,
                                  .learners = mem + 3,
                                  .n_learners = RND() % 3};
            size_t n = m.type == CAIRN_RAFT_MSG_APP ? RND() % 5 : 0;
            for (size_t k = 0; k < n; k++) {
                for (size_t b = 0; b < sizeof data[k]; b++)
                    data[k][b] = (uint8_t)(b == 0 ? 1 + RND() % 5 : b < 9 ? (b == 1 ? RND() % 6 : 0) : RND());
                ents[k] = (cairn_raft_entry_t){.index = m.index + 1 + k,
                                               .term = m.log_term + RND() % 2,
                                               .type = RND() % 3,
                                               .data = data[k],
                                               .len = RND() % 13};
            }
            m.entries = n ? ents : NULL;
            m.n_entries = n;
            (void)cairn_raft_step(r, &m);
            switch (RND() % 10) {
            case 0:
                cairn_raft_tick(r);
                break;
            case 1:
                cairn_raft_propose(r, "zz", 2, NULL);
                break;
            case 2:
                cairn_raft_compact(r, RND() % 14, RND() % 6);
                break;
            case 3:
                cairn_raft_snapshot_installed(r, RND() % 14, RND() % 6);
                break;
            case 4:
                cairn_raft_snapshot_failed(r);
                break;
            case 5:
                cairn_raft_report_snapshot(r, RND() % 6, RND() % 2);
                break;
            case 6:
                cairn_raft_propose_conf_ctx(r, RND() % 7, RND() % 7, "c", RND() % 2, NULL);
                break;
            case 7:
                cairn_raft_persisted(r, RND() % 14, RND() % 6);
                break;
            default:
                cairn_raft_campaign(r);
                break;
            }
            if (RND() % 3 == 0 && cairn_raft_has_ready(r)) {
                cairn_raft_ready_t rd;
                cairn_raft_ready(r, &rd);
                if (rd.has_snapshot && RND() % 2)
                    cairn_raft_snapshot_installed(r, rd.snapshot_index, rd.snapshot_term);
                for (size_t k = 0; k < rd.n_voters; k++)
                    (void)*(volatile const uint64_t *)&rd.voters[k];
                for (size_t k = 0; k < rd.n_snapshot_voters; k++)
                    (void)*(volatile const uint64_t *)&rd.snapshot_voters[k];
                for (size_t k = 0; k < rd.n_msgs; k++) {
                    for (size_t j = 0; j < rd.msgs[k].n_entries; j++)
                        if (rd.msgs[k].entries[j].len)
                            (void)*(volatile const uint8_t *)rd.msgs[k].entries[j].data;
                    for (size_t j = 0; j < rd.msgs[k].n_voters; j++)
                        (void)*(volatile const uint64_t *)&rd.msgs[k].voters[j];
                }
                cairn_raft_advance(r, &rd);
                uint64_t li = cairn_raft_last_index(r);
                cairn_raft_persisted(r, li, cairn_raft_term_at(r, li));
            }
            if (cairn_raft_commit(r) > cairn_raft_last_index(r) ||
                cairn_raft_snapshot_index(r) > cairn_raft_commit(r))
                cr_assert_fail("commit %llu snap %llu last %llu", (unsigned long long)cairn_raft_commit(r),
                               (unsigned long long)cairn_raft_snapshot_index(r),
                               (unsigned long long)cairn_raft_last_index(r));
        }
        cairn_raft_destroy(&r);
    }
#undef RND
}

/* thesis §4.2.3: a removed server that never learned of its removal campaigns with ever higher
 * terms; members that hear from a leader ignore it even without CheckQuorum and PreVote. */
Test(raft_membership, removed_server_cannot_disrupt)
{
    net_t t;
    net_init(&t, 3, 0, 0);
    cairn_raft_campaign(t.n[1]);
    pump(&t);
    isolate(&t, 3, 1);
    uint64_t idx;
    cr_assert_eq(cairn_raft_propose_conf_ctx(t.n[1], CAIRN_RAFT_CONF_REMOVE, 3, NULL, 0, &idx), 0);
    pump(&t);
    cr_assert_geq(cairn_raft_commit(t.n[2]), idx);
    uint64_t term = cairn_raft_term(t.n[1]);
    /* Node 3 still believes it is a voter; it campaigns, and its requests get through. */
    for (int i = 0; i < 25; i++) {
        cairn_raft_tick(t.n[3]);
        pump(&t);
    }
    cr_assert_gt(cairn_raft_term(t.n[3]), term);
    isolate(&t, 3, 0);
    for (int i = 0; i < 60; i++) {
        cairn_raft_tick(t.n[1]);
        if (i % 3 == 0)
            cairn_raft_tick(t.n[2]);
        cairn_raft_tick(t.n[3]);
        pump(&t);
    }
    cr_assert_eq(cairn_raft_role(t.n[1]), CAIRN_RAFT_LEADER, "not deposed");
    cr_assert_eq(cairn_raft_term(t.n[1]), term);
    cr_assert_eq(cairn_raft_term(t.n[2]), term);
    cr_assert_eq(cairn_raft_propose(t.n[1], "still", 5, &idx), 0);
    pump(&t);
    cr_assert_eq(cairn_raft_commit(t.n[2]), idx);
    net_free(&t);
}

Test(raft_snapshot, a_newer_snapshot_replaces_one_not_handed_out)
{
    cairn_raft_config_t c = cfg_of(2, THREE, 3);
    cairn_raft_t *r = mk(&c);
    cairn_raft_msg_t sm = {.type = CAIRN_RAFT_MSG_SNAP, .from = 1, .to = 2, .term = 2, .index = 10, .log_term = 2,
                           .snap_index = 10, .snap_term = 2, .voters = V123, .n_voters = 3};
    cr_assert_eq(cairn_raft_step(r, &sm), 0);
    sm.snap_index = sm.index = 12;
    cr_assert_eq(cairn_raft_step(r, &sm), 0);
    sm.snap_index = sm.index = 11;
    cr_assert_eq(cairn_raft_step(r, &sm), 0, "an older one does not replace it");
    cairn_raft_ready_t rd;
    rdy(r, &rd);
    cr_assert(rd.has_snapshot);
    cr_assert_eq(rd.snapshot_index, 12);
    cairn_raft_advance(r, &rd);
    sm.snap_index = sm.index = 14;
    cr_assert_eq(cairn_raft_step(r, &sm), 0);
    cr_assert_not(cairn_raft_has_ready(r), "the shell is installing 12: 14 waits for the leader's retry");
    cr_assert_eq(cairn_raft_snapshot_installed(r, 14, 2), CAIRN_EINVAL);
    cr_assert_eq(cairn_raft_snapshot_installed(r, 12, 2), 0);
    cr_assert_eq(cairn_raft_last_index(r), 12);
    cr_assert_eq(cairn_raft_step(r, &sm), 0);
    rdy(r, &rd);
    cr_assert(rd.has_snapshot);
    cr_assert_eq(rd.snapshot_index, 14);
    cairn_raft_advance(r, &rd);
    cairn_raft_destroy(&r);
}
