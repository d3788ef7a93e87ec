/* node.c - the core's life in raftd: its state loaded from stored page by page (LOAD), the
 * core started from it, rebuilt when stored restarts (a new boot id: to the core, a crash of this
 * member), each ready carried out (APPEND and COMMIT to stored, messages to peers, read states to
 * the gateways), the in-memory log compacted, and a stopping leader's handoff. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "raftd.h"

void raftd_send_stored(raftd_t *r, const cairn_ipc_msg_t *m)
{
    int rc = cairn_zmq_send(r->stored, NULL, 0, m);
    if (rc)
        cairn_warn("send to stored failed", "type=%s err=\"%s\"", cairn_ipc_type_name(m->type), cairn_strerror(rc));
}

/* ------------------------------------------------------------------ ready processing */

/* A cluster of one voter: it commits on its own disk, and need not wait out an election. */
static int single_voter(raftd_t *r)
{
    const uint64_t *v;
    return r->raft && cairn_raft_voters(r->raft, &v) == 1 && v[0] == cairn_config_member_id(r->cfg);
}

/* Names and peer URLs travel in the configuration entries (cairn_member.h): learn them as the
 * entries reach this member's log, so that a new member can be connected at once (the core
 * applies a change when it appends it, thesis §4.1, not when it commits). */
static void learn_members(raftd_t *r, const cairn_raft_entry_t *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cairn_raft_conf_change_t cc;
        if (ents[i].type != CAIRN_RAFT_ENTRY_CONF || cairn_raft_conf_decode(ents[i].data, ents[i].len, &cc) != 0)
            continue;
        if (cc.op == CAIRN_RAFT_CONF_REMOVE || cc.op == CAIRN_RAFT_CONF_PROMOTE)
            continue; /* the core's sets say who is in; keep the metadata for a truncated entry */
        if (cairn_members_apply(&r->members, cc.op, cc.node_id, cc.ctx, cc.ctx_len) != 0)
            cairn_warn("configuration entry with a bad context", "index=%llu", (unsigned long long)ents[i].index);
    }
}

void raftd_process_ready(raftd_t *r)
{
    while (r->raft && cairn_raft_has_ready(r->raft)) {
        cairn_raft_ready_t rd;
        cairn_raft_ready(r->raft, &rd);
        if (rd.hs_changed || rd.n_entries) {
            /* the core's entries go to stored as they are (one entry type: cairn_entry.h) */
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_APPEND, .boot_id = r->stored_boot, .seq = ++r->seq,
                                 .has_hs = rd.hs_changed,
                                 .term = rd.hs.term, .vote = rd.hs.vote, .commit = rd.hs.commit, .entries = rd.entries,
                                 .n_entries = rd.n_entries};
            /* A single voter that leads commits an entry the moment its own disk has it (its
             * quorum is itself), so stored may apply right after its fdatasync instead of
             * waiting for APPENDED -> persisted -> COMMIT: two IPC hops off every write. */
            if (rd.n_entries && rd.role == CAIRN_RAFT_LEADER && single_voter(r) &&
                rd.entries[rd.n_entries - 1].term == rd.term)
                m.commit_durable = rd.entries[rd.n_entries - 1].index;
            cairn_entry_t *faulty = NULL;
            uint8_t *faulty_data = NULL;
            if (r->faults_enabled && rd.n_entries &&
                raftd_corrupt_fault(r, rd.entries, rd.n_entries, &faulty, &faulty_data) == 1)
                m.entries = faulty; /* test only: this member's store gets another value */
            raftd_send_stored(r, &m);
            free(faulty);
            free(faulty_data);
        }
        /* The leader's appends and heartbeats go out at once, in parallel with its own disk
         * write (thesis §10.2.1); promises wait for the APPEND just sent to be durable. */
        for (size_t i = 0; i < rd.n_msgs; i++)
            raftd_send_peer(r, &rd.msgs[i]);
        for (size_t i = 0; i < rd.n_msgs_after_persist; i++) {
            if (r->acked_seq >= r->seq && !r->held)
                raftd_send_peer(r, &rd.msgs_after_persist[i]);
            else
                raftd_hold_peer(r, &rd.msgs_after_persist[i], r->seq);
        }
        if (rd.commit != r->sent_commit || rd.term != r->sent_term || rd.leader != r->sent_leader) {
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_COMMIT, .boot_id = r->stored_boot, .commit = rd.commit,
                                 .term = rd.term, .leader = rd.leader};
            raftd_send_stored(r, &m);
            if (rd.leader != r->sent_leader) {
                raftd_metrics_leader_changed(r, rd.leader);
                cairn_info("leader changed", "leader=%016llx term=%llu", (unsigned long long)rd.leader,
                           (unsigned long long)rd.term);
                if (r->transfer.req_id && rd.leader == r->transfer.target)
                    raftd_finish_transfer(r, CAIRN_ETCD_NONE);
            }
            r->sent_commit = rd.commit;
            r->sent_term = rd.term;
            r->sent_leader = rd.leader;
        }
        for (size_t i = 0; i < rd.n_read_states; i++) {
            read_ctx_t *rc = cairn_u64map_take(r->reads, rd.read_states[i].context);
            if (!rc)
                continue;
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_READ_INDEX_RESP, .req_id = rc->req_id, .index = rd.read_states[i].index};
            raftd_send_gw(r, rc->ident, rc->ident_len, &m);
            free(rc);
        }
        for (size_t i = 0; i < rd.n_read_failures; i++) {
            read_ctx_t *rc = cairn_u64map_take(r->reads, rd.read_failures[i]);
            if (!rc)
                continue;
            raftd_send_gw_error(r, rc->ident, rc->ident_len, CAIRN_IPC_READ_INDEX_RESP, rc->req_id, CAIRN_ETCD_NO_LEADER);
            free(rc);
        }
        learn_members(r, rd.entries, rd.n_entries);
        int snap = rd.has_snapshot, conf_changed = rd.conf_changed;
        uint64_t snap_index = rd.snapshot_index, snap_term = rd.snapshot_term, snap_from = rd.snapshot_from;
        cairn_raft_advance(r->raft, &rd);
        if (conf_changed)
            raftd_reconcile_peers(r);
        if (snap) {
            /* The leader's log no longer reaches back to ours: pull its state machine. Its
             * stored snapshots its current state (at or past snap_index); ours swaps it in
             * atomically after the APPENDs already sent (same socket, in order). */
            cairn_info("installing a snapshot from the leader", "index=%llu term=%llu from=%016llx",
                       (unsigned long long)snap_index, (unsigned long long)snap_term, (unsigned long long)snap_from);
            memset(&r->snap, 0, sizeof r->snap);
            r->snap.active = 1;
            r->snap.index = snap_index;
            r->snap.term = snap_term;
            r->snap.from = snap_from;
            raftd_snap_pull(r);
        }
    }
    raftd_held_tick(r, cairn_now_ms()); /* a leader known now: the requests that waited go */
}

/* ------------------------------------------------------------------ compaction */

/* Bounds raftd's in-memory log, in entries and in bytes. Every member keeps
 * cairn_config_log_keep_entries() entries behind its durable commit point (etcd's
 * SnapshotCatchUpEntries), so that a member a little behind is served from the log; a leader
 * also keeps what any member has not acknowledged yet (one that is down too: a restart of a
 * member should not cost a snapshot of the whole store), but never more than
 * --raft-log-memory-bytes of entry data: a member further behind is sent a snapshot. Only committed and durable entries go (stored holds them in the WAL and
 * the state machine). Entries not yet committed stay whatever their size; flow control
 * (max_inflight, max_msg_bytes) bounds them. */
void raftd_maybe_compact(raftd_t *r)
{
    if (!r->raft)
        return;
    uint64_t commit = cairn_raft_commit(r->raft);
    uint64_t durable = commit < r->persisted_index ? commit : r->persisted_index;
    uint64_t keep = cairn_config_log_keep_entries(r->cfg);
    uint64_t step = keep / 2 < COMPACT_MIN_STEP ? (keep / 2 ? keep / 2 : 1) : COMPACT_MIN_STEP;
    uint64_t needed = durable; /* the lowest index a running member still needs */
    if (cairn_raft_role(r->raft) == CAIRN_RAFT_LEADER) {
        const uint64_t *ids;
        size_t n = cairn_raft_voters(r->raft, &ids);
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < n; i++) {
                cairn_raft_progress_t pr;
                if (ids[i] == cairn_config_member_id(r->cfg) || cairn_raft_progress(r->raft, ids[i], &pr) != 0)
                    continue;
                if (pr.match < needed)
                    needed = pr.match;
            }
            n = cairn_raft_learners(r->raft, &ids);
        }
    }
    uint64_t snap = cairn_raft_snapshot_index(r->raft);
    uint64_t target = needed > keep ? needed - keep : 0;
    if (target < snap + step)
        target = 0; /* amortise: compaction moves memory */
    uint64_t max_bytes = r->cfg->raft_log_memory_bytes;
    if (cairn_raft_log_bytes(r->raft) > max_bytes) {
        /* over the byte budget: down to 3/4 of it, whatever members need */
        uint64_t fit = cairn_raft_index_to_fit(r->raft, max_bytes / 4 * 3);
        if (fit > target)
            target = fit;
    }
    if (target > durable)
        target = durable;
    if (target <= snap)
        return;
    uint64_t term = cairn_raft_term_at(r->raft, target);
    int rc = term ? cairn_raft_compact(r->raft, target, term) : CAIRN_EINVAL;
    if (rc)
        cairn_debug("compaction refused", "index=%llu err=\"%s\"", (unsigned long long)target, cairn_strerror(rc));
}

/* ------------------------------------------------------------------ state load */

static void start_core(raftd_t *r, const cairn_ipc_msg_t *m)
{
    cairn_raft_destroy(&r->raft);
    raftd_fail_reads(r, CAIRN_ETCD_LEADER_CHANGED);
    memset(&r->snap, 0, sizeof r->snap);
    /* The membership where the log starts (replicated: stored's 'C' records), else the one a
     * member starts with; the configuration entries of the log are re-applied by the core. */
    cairn_members_t ms = {0};
    if (!m->body_len || cairn_members_decode(&ms, m->body, m->body_len) != 0 || ms.n == 0) {
        cairn_members_clear(&ms);
        if (cairn_members_initial(&ms, r->cfg) != 0) {
            r->fatal = CAIRN_ENOMEM;
            return;
        }
    }
    if (m->cluster_id)
        r->cluster_id = m->cluster_id;
    else if (!r->cluster_id && r->cfg->initial_cluster_state != CAIRN_CLUSTER_EXISTING)
        r->cluster_id = cairn_config_cluster_id(r->cfg);
    uint64_t *voters = calloc(ms.n + 1, sizeof *voters), *learners = calloc(ms.n + 1, sizeof *learners);
    size_t nv = 0, nl = 0;
    const cairn_raft_entry_t *ents = m->entries; /* the same type: no copy */
    if (!voters || !learners) {
        free(voters);
        free(learners);
        cairn_members_clear(&ms);
        r->fatal = CAIRN_ENOMEM;
        return;
    }
    for (size_t i = 0; i < ms.n; i++) {
        if (ms.v[i].learner)
            learners[nl++] = ms.v[i].id;
        else
            voters[nv++] = ms.v[i].id;
    }
    /* metadata: what we knew (names learned earlier stay), the snapshot's, then the log's */
    for (size_t i = 0; i < ms.n; i++)
        cairn_members_put(&r->members, ms.v[i].id, ms.v[i].name, ms.v[i].peer_urls, ms.v[i].n_peer_urls,
                          ms.v[i].learner);
    learn_members(r, ents, m->n_entries);
    cairn_members_clear(&ms);
    int64_t ticks_per_election = r->cfg->election_ms / r->cfg->heartbeat_ms;
    cairn_raft_config_t rc = {
        .id = cairn_config_member_id(r->cfg),
        .voters = voters,
        .n_voters = nv,
        .learners = learners,
        .n_learners = nl,
        .election_tick = ticks_per_election > 1 ? (int)ticks_per_election : 10,
        .heartbeat_tick = 1,
        .seed = cairn_random_u64(),
        .pre_vote = 1,
        .check_quorum = 1,
        .max_msg_bytes = 1u << 20,
        .max_inflight = 256,
        .hs = {m->term, m->vote, m->commit},
        .snap_index = m->snap_index,
        .snap_term = m->snap_term,
        .entries = ents,
        .n_entries = m->n_entries,
    };
    int err = 0;
    r->raft = nv ? cairn_raft_new(&rc, &err) : NULL;
    if (!nv)
        err = CAIRN_EINVAL;
    free(voters);
    free(learners);
    if (!r->raft) {
        cairn_error("cannot start raft core", "err=\"%s\"", cairn_strerror(err));
        r->fatal = err ? err : CAIRN_EINVAL;
        return;
    }
    r->stored_boot = m->boot_id;
    r->sent_commit = r->sent_term = r->sent_leader = 0;
    r->acked_seq = r->seq;
    r->persisted_index = m->n_entries ? m->entries[m->n_entries - 1].index : m->snap_index;
    cairn_info("raft state loaded", "term=%llu vote=%016llx commit=%llu entries=%zu first=%llu pages=%zu",
               (unsigned long long)m->term, (unsigned long long)m->vote, (unsigned long long)m->commit,
               m->n_entries, (unsigned long long)(m->snap_index + 1), r->load.pages);
    /* Everything stored handed us is durable. */
    if (m->n_entries)
        cairn_raft_persisted(r->raft, m->entries[m->n_entries - 1].index, m->entries[m->n_entries - 1].term);
    if (single_voter(r))
        cairn_raft_campaign(r->raft); /* a single voter need not wait out an election timeout */
    raftd_reconcile_peers(r);
    raftd_process_ready(r);
}

/* ------------------------------------------------------------------ messages */

/* stored restarted and lost what it had not synced: to the core that is a crash of this
 * member, so the core is rebuilt from what stored really holds (LOAD). */
static void reload_from_stored(raftd_t *r, const char *why)
{
    cairn_warn(why, NULL);
    cairn_raft_destroy(&r->raft);
    raftd_load_clear(r);
    raftd_notify_reload(r);
    r->last_load_sent = 0; /* ask for the new state now, not at the next retry tick */
    raftd_release_held(r, 1);    /* what they promised may be lost */
    raftd_fail_reads(r, CAIRN_ETCD_LEADER_CHANGED);
}

void raftd_load_clear(raftd_t *r)
{
    for (size_t i = 0; i < r->load.n; i++)
        free((void *)r->load.ents[i].data);
    free(r->load.ents);
    free(r->load.members);
    uint64_t seq = r->load.seq;
    memset(&r->load, 0, sizeof r->load);
    r->load.seq = seq; /* answers to requests sent before stay stale */
}

/* Every request gets a new seq and only the answer to the latest one is taken: a retried
 * request (stored was slow) would otherwise get two answers, and the second one, no longer
 * continuing the load, would restart it, again and again. */
void raftd_load_request(raftd_t *r, uint64_t from)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LOAD, .first = from, .seq = ++r->load.seq};
    raftd_send_stored(r, &m);
    r->last_load_sent = cairn_now_ms();
}

/* Before the core runs (the initial corruption check holds the loaded state): the membership
 * and the cluster ID the loaded state gives, and connections to the other members, set up as
 * start_core would, so that the peers can be asked and can answer. */
static void hold_prepare(raftd_t *r)
{
    cairn_members_t ms = {0};
    if (r->load.members_len && cairn_members_decode(&ms, r->load.members, r->load.members_len) == 0)
        for (size_t i = 0; i < ms.n; i++)
            cairn_members_put(&r->members, ms.v[i].id, ms.v[i].name, ms.v[i].peer_urls, ms.v[i].n_peer_urls,
                              ms.v[i].learner);
    cairn_members_clear(&ms);
    learn_members(r, r->load.ents, r->load.n);
    if (r->load.cluster_id)
        r->cluster_id = r->load.cluster_id;
    else if (!r->cluster_id && r->cfg->initial_cluster_state != CAIRN_CLUSTER_EXISTING)
        r->cluster_id = cairn_config_cluster_id(r->cfg);
    raftd_reconcile_peers(r);
}

/* One page of a LOAD: the first one (it starts right after its snapshot point) begins a load,
 * the next ones must continue it exactly (same stored instance, same starting point, the next
 * index); anything else starts over. When the pages reach the last index, the core starts. */
static void load_page(raftd_t *r, const cairn_ipc_msg_t *m)
{
    if (r->raft || m->seq != r->load.seq)
        return; /* an answer to an earlier LOAD (retried, or from before a restart of the load) */
    int first = m->n_entries == 0 || m->entries[0].index == m->snap_index + 1;
    if (first) {
        raftd_load_clear(r);
        r->load.active = 1;
        r->load.boot_id = m->boot_id;
        r->load.term = m->term;
        r->load.vote = m->vote;
        r->load.commit = m->commit;
        r->load.snap_index = m->snap_index;
        r->load.snap_term = m->snap_term;
        r->load.cluster_id = m->cluster_id;
        r->load.last = m->last;
        r->load.next = m->snap_index + 1;
        if (m->body_len) {
            if (!(r->load.members = malloc(m->body_len)))
                goto restart;
            memcpy(r->load.members, m->body, m->body_len);
            r->load.members_len = m->body_len;
        }
    } else if (!r->load.active || m->boot_id != r->load.boot_id || m->snap_index != r->load.snap_index ||
               m->entries[0].index != r->load.next) {
        goto restart;
    }
    if (r->load.n + m->n_entries > r->load.cap) {
        size_t nc = r->load.cap ? r->load.cap : 1024;
        while (nc < r->load.n + m->n_entries)
            nc *= 2;
        cairn_ipc_entry_t *ne = realloc(r->load.ents, nc * sizeof *ne);
        if (!ne)
            goto restart;
        r->load.ents = ne;
        r->load.cap = nc;
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        cairn_ipc_entry_t e = m->entries[i];
        if (e.len) {
            uint8_t *d = malloc(e.len);
            if (!d)
                goto restart;
            memcpy(d, e.data, e.len);
            e.data = d;
        } else {
            e.data = NULL;
        }
        r->load.ents[r->load.n++] = e;
    }
    r->load.next += m->n_entries;
    r->load.pages++;
    if (m->n_entries && r->load.next - 1 < r->load.last) {
        raftd_load_request(r, r->load.next);
        return;
    }
    if (r->cfg->initial_corrupt_check && !r->initial_checked) {
        /* etcd's CheckInitialHashKV runs before the member takes part in raft: the state stays
         * held here until corrupt.c has compared the hashes (raftd_start_loaded) */
        r->initial_checked = 1;
        r->load.held = 1;
        hold_prepare(r);
        if (raftd_corrupt_initial_begin(r))
            return;
        r->load.held = 0;
    }
    raftd_start_loaded(r);
    return;
restart:
    cairn_warn("raft state load restarts", "page_first=%llu expected=%llu",
               (unsigned long long)(m->n_entries ? m->entries[0].index : 0), (unsigned long long)r->load.next);
    raftd_load_clear(r);
    raftd_load_request(r, 0);
}

/* The complete load (r->load) becomes the core's state. */
void raftd_start_loaded(raftd_t *r)
{
    if (r->raft || !r->load.active)
        return;
    cairn_ipc_msg_t whole = {.type = CAIRN_IPC_LOAD_RESP, .boot_id = r->load.boot_id, .term = r->load.term,
                             .vote = r->load.vote, .commit = r->load.commit, .snap_index = r->load.snap_index,
                             .snap_term = r->load.snap_term, .cluster_id = r->load.cluster_id,
                             .body = r->load.members, .body_len = r->load.members_len, .entries = r->load.ents,
                             .n_entries = r->load.n};
    start_core(r, &whole);
    raftd_load_clear(r);
}

void raftd_handle_stored(raftd_t *r, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected message from stored", "err=\"%s\"", cairn_strerror(rc));
        return;
    }
    switch (m.type) {
    case CAIRN_IPC_LEASE_APPLIED:
        raftd_lessor_on_applied(r, &m);
        break;
    case CAIRN_IPC_LEASE_LIST_RESP:
        raftd_lessor_on_list(r, &m);
        break;
    case CAIRN_IPC_LOAD_RESP:
        load_page(r, &m);
        break;
    case CAIRN_IPC_HELLO:
        if (r->raft && m.boot_id != r->stored_boot)
            reload_from_stored(r, "stored restarted; reloading raft state");
        break;
    case CAIRN_IPC_APPENDED:
        if (r->raft && m.boot_id != r->stored_boot) {
            /* another stored instance: it cannot vouch for what we sent the old one */
            reload_from_stored(r, "ack from a restarted stored; reloading raft state");
            break;
        }
        if (r->raft && m.code == 0) {
            r->acked_seq = m.seq;
            r->persisted_index = m.index;
            cairn_raft_persisted(r->raft, m.index, m.term);
            raftd_release_held(r, 0);
        }
        break;
    case CAIRN_IPC_SNAP_CHUNK:
        raftd_snap_on_chunk(r, &m);
        break;
    case CAIRN_IPC_SNAP_ACK:
        raftd_snap_on_ack(r, &m);
        break;
    case CAIRN_IPC_PROPOSE:
        /* stored's own proposal (its NOSPACE alarm: services/stored/maint.c); no answer is
         * expected: stored proposes again while the alarm is not applied */
        if (r->raft && !r->removed_logged)
            (void)cairn_raft_propose(r->raft, m.body, m.body_len, NULL);
        break;
    case CAIRN_IPC_RESULT:
        /* the answer to a MAINT HASHKV (corrupt.c), the only request raftd sends with a RESULT */
        raftd_corrupt_on_result(r, &m);
        break;
    case CAIRN_IPC_STATUS_RESP: /* corrupt.c: has our stored applied the commit index yet */
        raftd_corrupt_on_status(r, &m);
        break;
    case CAIRN_IPC_ERROR:
        cairn_warn("stored reported an error", "code=%lld msg=\"%.*s\"", (long long)m.code, (int)m.message_len,
                   (const char *)m.message);
        break;
    default:
        cairn_warn("unexpected message from stored", "type=%s", cairn_ipc_type_name(m.type));
    }
    cairn_ipc_msg_release(&m);
}

/* Starts a leadership transfer (thesis §3.10) to the voter with the longest log among those
 * that are running; 1 when one started. */
int raftd_begin_handoff(raftd_t *r)
{
    if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER)
        return 0;
    const uint64_t *v;
    size_t nv = cairn_raft_voters(r->raft, &v);
    uint64_t best = 0, best_match = 0;
    for (size_t i = 0; i < nv; i++) {
        cairn_raft_progress_t pr;
        if (v[i] == cairn_config_member_id(r->cfg) || !raftd_member_started(r, v[i]) ||
            cairn_raft_progress(r->raft, v[i], &pr) != 0)
            continue;
        if (!best || pr.match > best_match) {
            best = v[i];
            best_match = pr.match;
        }
    }
    if (!best || cairn_raft_transfer_leader(r->raft, best) != 0)
        return 0;
    r->handoff_to = best;
    cairn_info("stopping: handing leadership over first", "to=%016llx", (unsigned long long)best);
    raftd_process_ready(r);
    return 1;
}
