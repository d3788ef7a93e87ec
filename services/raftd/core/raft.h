/* raft.h - the pure, deterministic Raft core (etcd-io/raft's RawNode/Ready contract).
 *
 * No sockets, no files, no clock, no random source of its own: the shell feeds events in
 * (tick, step(message), propose, read_index, persisted) and takes updates out (ready).
 * All randomness (election timeout jitter) comes from a PRNG seeded by cfg.seed, so a
 * simulation with the same seed and the same events replays bit for bit.
 *
 * The contract with the shell (Raft thesis §10.2.1):
 *   1. while (cairn_raft_has_ready(r)) { cairn_raft_ready(r, &rd); ... ; cairn_raft_advance(r, &rd); }
 *   2. rd.hs (if rd.hs_changed) and rd.entries must be made durable. rd.msgs may be sent at once
 *      (the leader replicates in parallel with its own disk write). rd.msgs_after_persist must be
 *      sent only after the hard state and entries of the same ready are durable (votes, append
 *      acks: a node must never promise what it could forget in a crash).
 *   3. When entries up to (index, term) are durable, the shell calls cairn_raft_persisted(); only
 *      then does the leader count itself toward a quorum for them.
 *   4. rd.commit is the commit index; entries up to min(commit, persisted) may be applied.
 *   5. rd.read_states answer cairn_raft_read_index() requests: the read for ctx may be served
 *      once the state machine has applied rd.read_states[i].index.
 *   6. Log compaction (thesis ch. 5): once the state machine has a durable snapshot covering
 *      index (<= applied), the shell calls cairn_raft_compact(index, term); the snapshot's
 *      metadata must record cairn_raft_conf_at(index), the membership at that point.
 *   7. rd.has_snapshot (follower): the leader's snapshot (rd.snapshot_index/term, its membership,
 *      fetched from rd.snapshot_from's stored) must replace the state machine. The shell starts
 *      installing only once the writes of this ready and of every earlier one are durable, and
 *      drops the entries <= snapshot_index of writes queued after it. Installing keeps the durable
 *      log after snapshot_index only if the log holds (snapshot_index, snapshot_term); otherwise
 *      the whole log goes (the core applies the same rule to its own log). Then the shell calls
 *      cairn_raft_snapshot_installed(), or cairn_raft_snapshot_failed() (the old state stays).
 *      A state machine that has meanwhile applied snapshot_index itself keeps its state (and
 *      may snapshot it there) and still calls cairn_raft_snapshot_installed().
 *   8. rd.conf_changed: the membership changed (a configuration entry was appended, truncated,
 *      or came with a snapshot; thesis §4.1 applies it on append, not on commit).
 * Pointers inside a ready stay valid until cairn_raft_advance().
 */
#ifndef CAIRN_RAFT_H
#define CAIRN_RAFT_H

#include <stddef.h>
#include <stdint.h>

#include "cairn_entry.h"

#define CAIRN_RAFT_NONE 0 /* no node / no leader */
/* MSG_VOTE context of a campaign started by MSG_TIMEOUT_NOW (thesis §3.10): voters grant it
 * even while they follow a live leader (the leader lease of thesis §4.2.3 does not apply). */
#define CAIRN_RAFT_CTX_TRANSFER 1

typedef enum { CAIRN_RAFT_FOLLOWER = 0, CAIRN_RAFT_PRECANDIDATE, CAIRN_RAFT_CANDIDATE, CAIRN_RAFT_LEADER } cairn_raft_role_t;

/* Entries, their types and the configuration-entry format are shared/cairn_entry.h's (one
 * owner for a durable format); the core's names for them: */
typedef cairn_entry_type_t cairn_raft_entry_type_t;
#define CAIRN_RAFT_ENTRY_NORMAL CAIRN_ENTRY_NORMAL /* a client proposal; data is opaque to the core */
#define CAIRN_RAFT_ENTRY_EMPTY CAIRN_ENTRY_EMPTY   /* the no-op a new leader appends (Raft thesis §6.4) */
#define CAIRN_RAFT_ENTRY_CONF CAIRN_ENTRY_CONF     /* a membership change */

/* Single-server membership changes (thesis §4.1), one per configuration entry. */
typedef cairn_conf_op_t cairn_raft_conf_op_t;
#define CAIRN_RAFT_CONF_ADD_VOTER CAIRN_CONF_ADD_VOTER
#define CAIRN_RAFT_CONF_ADD_LEARNER CAIRN_CONF_ADD_LEARNER
#define CAIRN_RAFT_CONF_PROMOTE CAIRN_CONF_PROMOTE
#define CAIRN_RAFT_CONF_REMOVE CAIRN_CONF_REMOVE
#define CAIRN_RAFT_CONF_UPDATE CAIRN_CONF_UPDATE

/* A learner may be promoted when the leader knows it holds everything but at most this many
 * entries of the leader's log (an absolute lag, not a percentage: 10% of a long log is a lot). */
#define CAIRN_RAFT_PROMOTE_MAX_LAG 1000
/* Bound on the opaque context of a configuration entry, and on the size of a membership. */
#define CAIRN_RAFT_CONF_MAX_CTX CAIRN_CONF_MAX_CTX
#define CAIRN_RAFT_MAX_MEMBERS 1024

typedef cairn_conf_change_t cairn_raft_conf_change_t;
typedef cairn_entry_t cairn_raft_entry_t;

typedef struct {
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
} cairn_raft_hardstate_t;

typedef enum {
    CAIRN_RAFT_MSG_APP = 1,        /* AppendEntries (Raft §5.3) */
    CAIRN_RAFT_MSG_APP_RESP,
    CAIRN_RAFT_MSG_VOTE,           /* RequestVote (§5.2) */
    CAIRN_RAFT_MSG_VOTE_RESP,
    CAIRN_RAFT_MSG_PREVOTE,        /* thesis §9.6 */
    CAIRN_RAFT_MSG_PREVOTE_RESP,
    CAIRN_RAFT_MSG_HEARTBEAT,
    CAIRN_RAFT_MSG_HEARTBEAT_RESP,
    CAIRN_RAFT_MSG_TIMEOUT_NOW,    /* leadership transfer, thesis §3.10 */
    CAIRN_RAFT_MSG_SNAP,           /* InstallSnapshot (thesis §5.1), metadata only */
    CAIRN_RAFT_MSG_PROP,           /* a follower forwarding proposals to the leader */
    CAIRN_RAFT_MSG_READINDEX,      /* a follower forwarding a read-index request */
    CAIRN_RAFT_MSG_READINDEX_RESP,
    CAIRN_RAFT_MSG_TYPE_MAX_
} cairn_raft_msg_type_t;

typedef struct {
    uint8_t type;      /* cairn_raft_msg_type_t */
    uint64_t from, to;
    uint64_t term;
    uint64_t log_term; /* APP: term of the entry at index; VOTE: term of the last entry */
    uint64_t index;    /* APP: index preceding entries; VOTE: last index; APP_RESP: last matched */
    uint64_t commit;
    uint8_t reject;
    uint64_t reject_hint; /* APP_RESP rejected: the follower's hint for fast backtracking */
    uint64_t context;     /* READINDEX/HEARTBEAT: the read request's context; VOTE: CAIRN_RAFT_CTX_TRANSFER */
    const cairn_raft_entry_t *entries;
    size_t n_entries;
    /* SNAP: the snapshot's metadata (index also in .index, term in .log_term); the data travels
     * outside the core: the receiver's shell fetches it from the sender's stored. */
    uint64_t snap_index, snap_term;
    /* SNAP: the membership at snap_index (every other type: none) */
    const uint64_t *voters;
    size_t n_voters;
    const uint64_t *learners;
    size_t n_learners;
} cairn_raft_msg_t;

typedef struct {
    uint64_t index; /* serve the read once applied >= index */
    uint64_t context;
} cairn_raft_read_state_t;

typedef struct {
    uint64_t id;               /* this node, != 0 */
    /* The membership at snap_index (the snapshot's metadata), or the initial cluster when there
     * is no snapshot; the core re-applies the configuration entries of the restored log on top.
     * This node may be a voter, a learner, or neither (joining: it learns its membership from
     * the leader's log or snapshot; or removed): a node that is not a voter never campaigns. */
    const uint64_t *voters;    /* at least one */
    size_t n_voters;
    int election_tick;         /* ticks without a leader before campaigning (e.g. 10) */
    int heartbeat_tick;        /* ticks between heartbeats (e.g. 1) */
    uint64_t seed;             /* PRNG seed for randomized election timeouts */
    int pre_vote;              /* thesis §9.6 */
    int check_quorum;          /* leader steps down without a quorum in an election timeout */
    size_t max_msg_bytes;      /* flow control: entry bytes per APP message (>= one entry) */
    size_t max_inflight;       /* flow control: APP messages in flight per follower */
    /* restored state (from stored) */
    cairn_raft_hardstate_t hs;
    uint64_t snap_index, snap_term;      /* log starts after this point */
    const cairn_raft_entry_t *entries;   /* entries snap_index+1 .. ; copied by the core */
    size_t n_entries;
    /* non-voting members at snap_index (see voters) */
    const uint64_t *learners;
    size_t n_learners;
} cairn_raft_config_t;

typedef struct {
    /* soft state */
    uint64_t leader;
    cairn_raft_role_t role;
    uint64_t term;
    /* hard state to persist */
    int hs_changed;
    cairn_raft_hardstate_t hs;
    /* entries to persist (an entry at an index already persisted replaces it and every later one) */
    const cairn_raft_entry_t *entries;
    size_t n_entries;
    /* messages */
    const cairn_raft_msg_t *msgs;
    size_t n_msgs;
    const cairn_raft_msg_t *msgs_after_persist;
    size_t n_msgs_after_persist;
    /* commit index (may be applied up to min(commit, persisted)) */
    uint64_t commit;
    /* answers to read_index requests */
    const cairn_raft_read_state_t *read_states;
    size_t n_read_states;
    /* read_index contexts that cannot be served (no leader / not leader and not forwarded) */
    const uint64_t *read_failures;
    size_t n_read_failures;
    /* a snapshot to install (contract step 7); handed out once */
    int has_snapshot;
    uint64_t snapshot_index, snapshot_term;
    const uint64_t *snapshot_voters;   /* the membership at snapshot_index */
    size_t n_snapshot_voters;
    const uint64_t *snapshot_learners;
    size_t n_snapshot_learners;
    uint64_t snapshot_from;            /* the leader that sent it: fetch the data from its stored */
    /* the current membership, when it changed since the last ready (contract step 8) */
    int conf_changed;
    const uint64_t *voters;
    size_t n_voters;
    const uint64_t *learners;
    size_t n_learners;
} cairn_raft_ready_t;

typedef enum { CAIRN_RAFT_PR_PROBE = 0, CAIRN_RAFT_PR_REPLICATE, CAIRN_RAFT_PR_SNAPSHOT } cairn_raft_pr_state_t;

/* A leader's view of one member's replication (etcd's tracker.Progress). */
typedef struct {
    uint64_t match, next;
    int state;                 /* cairn_raft_pr_state_t */
    int voter;                 /* 0: learner (or this leader, once it removed itself) */
    uint64_t pending_snapshot; /* SNAPSHOT: the index of the snapshot sent */
    int recent_active;
} cairn_raft_progress_t;

typedef struct cairn_raft cairn_raft_t;

/* Returns NULL and sets *err (CAIRN_EINVAL, CAIRN_ENOMEM) on failure. */
cairn_raft_t *cairn_raft_new(const cairn_raft_config_t *cfg, int *err);
void cairn_raft_destroy(cairn_raft_t **self_p);

void cairn_raft_tick(cairn_raft_t *self);
/* Feeds a message from a peer. Messages of unknown type or for another node: CAIRN_EINVAL.
 * The sender need not be in this node's configuration (thesis §4.1: a lagging member must
 * accept a leader, and grant a vote, that its log does not know yet); answers from
 * non-members are ignored. */
int cairn_raft_step(cairn_raft_t *self, const cairn_raft_msg_t *m);
/* Appends a proposal to the leader's log (a follower forwards it to the leader as MSG_PROP).
 * Returns CAIRN_ENOT_LEADER when there is no known leader, CAIRN_ESTATE on a leader that is
 * handing over leadership (thesis §3.10). *index_out (may be NULL) gets the index the entry
 * was given when this node is leader, 0 when forwarded. A forwarded proposal can be lost with
 * its message: the shell's request deadline covers it. */
int cairn_raft_propose(cairn_raft_t *self, const void *data, size_t len, uint64_t *index_out);
/* Asks for a linearizable read point; answered through ready.read_states (or read_failures).
 * Many requests between two readies share one heartbeat round (thesis §6.4). Returns 0: a
 * read that cannot be served (no leader, leadership lost, leader changed while forwarded)
 * comes back in ready.read_failures. A forwarded read whose answer is lost stays pending until
 * the leader changes; the shell's request deadline covers it. */
int cairn_raft_read_index(cairn_raft_t *self, uint64_t context);
/* Entries up to (index, term) are durable on this node. */
void cairn_raft_persisted(cairn_raft_t *self, uint64_t index, uint64_t term);
/* Starts a leadership transfer to `to` (thesis §3.10): CAIRN_ENOT_LEADER on a non-leader,
 * CAIRN_EINVAL when `to` is not a voter. Abandoned after an election timeout. */
int cairn_raft_transfer_leader(cairn_raft_t *self, uint64_t to);
/* Makes a single-voter cluster campaign at once instead of waiting out the timeout.
 * CAIRN_ESTATE on a node that is not a voter (learners and non-members never campaign). */
int cairn_raft_campaign(cairn_raft_t *self);

/* ---- log compaction and snapshots (thesis ch. 5) ---- */

/* The state machine has a durable snapshot covering entries up to (index, term): the core
 * drops them and remembers (index, term) and the membership there. index must be <= the
 * commit index and durable; index <= the current snapshot index is a no-op. CAIRN_EINVAL
 * when index is not committed and durable or term is not its term. */
int cairn_raft_compact(cairn_raft_t *self, uint64_t index, uint64_t term);
/* The shell installed the snapshot of rd.has_snapshot (contract step 7): index and term must be
 * that snapshot's. The log restarts after it (keeping the entries after index only when the log
 * held (index, term)), the commit index becomes at least index, the membership becomes the
 * snapshot's, and the leader is told (APP_RESP index = index). CAIRN_ESTATE when no snapshot is
 * pending, CAIRN_EINVAL when (index, term) is not the pending one, CAIRN_ENOMEM (nothing
 * changed: call again). */
int cairn_raft_snapshot_installed(cairn_raft_t *self, uint64_t index, uint64_t term);
/* Installing the pending snapshot failed (the old state stays): the leader is told, and sends
 * its snapshot again. CAIRN_ESTATE when none is pending. */
int cairn_raft_snapshot_failed(cairn_raft_t *self);
/* Leader: the shell knows how sending a snapshot to `to` ended (e.g. its stored served the data,
 * or could not). A member waiting for a snapshot gets appends again once it acknowledges one;
 * this only speeds that up (ok) or retries sooner (!ok). Without either, the leader retries
 * after a few election timeouts. */
void cairn_raft_report_snapshot(cairn_raft_t *self, uint64_t to, int ok);

/* ---- membership (single-server changes, thesis §4.1-§4.3) ---- */

/* Leader only: appends a configuration entry; the new membership takes effect at once on every
 * member that appends it (thesis §4.1). Returns CAIRN_ENOT_LEADER on a non-leader; CAIRN_ESTATE
 * while another change is uncommitted, before the leader has committed an entry of its term, or
 * while it hands over leadership; CAIRN_EEXISTS when adding a member; CAIRN_ENOTFOUND when
 * promoting/removing/updating a non-member; CAIRN_EINVAL for a bad op or id 0, for promoting a
 * node that is not a learner, or for removing the last voter; CAIRN_EAGAIN when promoting a
 * learner that is not caught up (it has not acknowledged an entry within
 * CAIRN_RAFT_PROMOTE_MAX_LAG of the leader's last index). */
int cairn_raft_propose_conf(cairn_raft_t *self, cairn_raft_conf_op_t op, uint64_t node_id);
/* The same with an opaque context stored in the entry (e.g. the member's name and peer URLs,
 * at most CAIRN_RAFT_CONF_MAX_CTX bytes) and the index the entry was given. */
int cairn_raft_propose_conf_ctx(cairn_raft_t *self, cairn_raft_conf_op_t op, uint64_t node_id, const void *ctx,
                                size_t ctx_len, uint64_t *index_out);
/* Decodes a CAIRN_RAFT_ENTRY_CONF entry's data (shared/cairn_entry.h): 0 or CAIRN_EINVAL. */
static inline int cairn_raft_conf_decode(const void *data, size_t len, cairn_raft_conf_change_t *out)
{
    return cairn_entry_conf_decode(data, len, out);
}

/* Between ready() and advance() the shell may keep stepping the core; what the ready holds
 * stays valid. A second ready() without advance() returns everything not yet advanced (the
 * first one's pointers are then invalid). */
int cairn_raft_has_ready(const cairn_raft_t *self);
void cairn_raft_ready(cairn_raft_t *self, cairn_raft_ready_t *rd);
void cairn_raft_advance(cairn_raft_t *self, const cairn_raft_ready_t *rd);

/* Introspection, for the shell's Status answers and for tests. */
cairn_raft_role_t cairn_raft_role(const cairn_raft_t *self);
uint64_t cairn_raft_leader(const cairn_raft_t *self);
uint64_t cairn_raft_term(const cairn_raft_t *self);
uint64_t cairn_raft_commit(const cairn_raft_t *self);
uint64_t cairn_raft_last_index(const cairn_raft_t *self);
/* Term of the entry at index (0 if unknown/compacted; the snapshot index has its term). */
uint64_t cairn_raft_term_at(const cairn_raft_t *self, uint64_t index);
/* The index and term the log starts after (the last compaction or installed snapshot). */
uint64_t cairn_raft_snapshot_index(const cairn_raft_t *self);
uint64_t cairn_raft_snapshot_term(const cairn_raft_t *self);
/* Bytes of entry data the in-memory log holds after the snapshot point (payloads only: the
 * shell bounds the log's memory by bytes, not only by entries). */
uint64_t cairn_raft_log_bytes(const cairn_raft_t *self);
/* The lowest index such that compacting through it leaves at most max_bytes of entry data
 * (the snapshot index when the log already fits). Whether that index may be compacted
 * (committed, durable) is cairn_raft_compact's to say. */
uint64_t cairn_raft_index_to_fit(const cairn_raft_t *self, uint64_t max_bytes);
/* The current membership (the last configuration entry of the log, committed or not). The
 * arrays stay valid until the next call that changes the core. Return the counts. */
size_t cairn_raft_voters(const cairn_raft_t *self, const uint64_t **ids);
size_t cairn_raft_learners(const cairn_raft_t *self, const uint64_t **ids);
/* The membership in effect at index (snapshot index <= index <= last index), as above.
 * 0 or CAIRN_EINVAL. */
int cairn_raft_conf_at(const cairn_raft_t *self, uint64_t index, const uint64_t **voters, size_t *n_voters,
                       const uint64_t **learners, size_t *n_learners);
/* The index of the last configuration entry when it is not committed yet, else 0. */
uint64_t cairn_raft_pending_conf_index(const cairn_raft_t *self);
/* Configuration entries that could not be applied (malformed, or an impossible change such as
 * promoting or removing a non-member, or removing the last voter): each was applied as a no-op. */
uint64_t cairn_raft_conf_errors(const cairn_raft_t *self);
/* Leader only: member id's replication progress. CAIRN_ENOT_LEADER, CAIRN_ENOTFOUND or 0. */
int cairn_raft_progress(const cairn_raft_t *self, uint64_t id, cairn_raft_progress_t *out);

#endif
