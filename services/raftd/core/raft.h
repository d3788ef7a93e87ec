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
 * Pointers inside a ready stay valid until cairn_raft_advance().
 */
#ifndef CAIRN_RAFT_H
#define CAIRN_RAFT_H

#include <stddef.h>
#include <stdint.h>

#define CAIRN_RAFT_NONE 0 /* no node / no leader */
/* MSG_VOTE context of a campaign started by MSG_TIMEOUT_NOW (thesis §3.10): voters grant it
 * even while they follow a live leader (the leader lease of thesis §4.2.3 does not apply). */
#define CAIRN_RAFT_CTX_TRANSFER 1

typedef enum { CAIRN_RAFT_FOLLOWER = 0, CAIRN_RAFT_PRECANDIDATE, CAIRN_RAFT_CANDIDATE, CAIRN_RAFT_LEADER } cairn_raft_role_t;

typedef enum {
    CAIRN_RAFT_ENTRY_NORMAL = 0, /* a client proposal; data is opaque to the core */
    CAIRN_RAFT_ENTRY_EMPTY = 1,  /* the no-op a new leader appends (Raft thesis §6.4) */
    CAIRN_RAFT_ENTRY_CONF = 2,   /* a membership change (issue 3) */
} cairn_raft_entry_type_t;

typedef struct {
    uint64_t index;
    uint64_t term;
    uint8_t type; /* cairn_raft_entry_type_t */
    const uint8_t *data;
    size_t len;
} cairn_raft_entry_t;

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
    CAIRN_RAFT_MSG_SNAP,           /* InstallSnapshot (issue 3) */
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
    /* SNAP: the snapshot's metadata; the data travels outside the core (issue 3) */
    uint64_t snap_index, snap_term;
} cairn_raft_msg_t;

typedef struct {
    uint64_t index; /* serve the read once applied >= index */
    uint64_t context;
} cairn_raft_read_state_t;

typedef struct {
    uint64_t id;               /* this node, != 0 */
    const uint64_t *voters;    /* every voting member including this one */
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
} cairn_raft_ready_t;

typedef struct cairn_raft cairn_raft_t;

/* Returns NULL and sets *err (CAIRN_EINVAL, CAIRN_ENOMEM) on failure. */
cairn_raft_t *cairn_raft_new(const cairn_raft_config_t *cfg, int *err);
void cairn_raft_destroy(cairn_raft_t **self_p);

void cairn_raft_tick(cairn_raft_t *self);
/* Feeds a message from a peer. Messages of unknown type or for another node: CAIRN_EINVAL. */
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
/* Makes a single-voter cluster campaign at once instead of waiting out the timeout. */
int cairn_raft_campaign(cairn_raft_t *self);

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
/* Term of the entry at index (0 if unknown/compacted). */
uint64_t cairn_raft_term_at(const cairn_raft_t *self, uint64_t index);

#endif
