/* raftd.h - the raftd shell's own header: the state every part of the shell shares (raftd_t)
 * and the functions one part calls in another. Internal to services/raftd; nothing outside
 * the process includes it.
 *
 * raftd - consensus and time for one Cairn node (DESIGN.md "raftd").
 *
 * A thin shell around the pure raft core (core/raft.h): it turns socket messages and the
 * clock into core events and carries each ready out:
 *   - hard state + entries  -> stored as APPEND (tagged with a sequence number);
 *   - ready.msgs            -> peers at once (the leader writes in parallel, thesis §10.2.1);
 *   - ready.msgs_after_persist -> held until stored acks that APPEND's sequence;
 *   - stored's APPENDED      -> cairn_raft_persisted();
 *   - a new commit index     -> stored as COMMIT (stored applies min(commit, persisted));
 *   - read states            -> the asking gateway as READ_INDEX_RESP;
 *   - a membership change    -> peer connections opened, moved or closed (raftd_reconcile_peers);
 *   - a snapshot to install  -> pulled from the leader chunk by chunk into our stored.
 * The membership is replicated state (shared/cairn_member.h): the core's voters/learners plus
 * each member's name and peer URLs from the configuration entries; at start it comes from
 * stored (the membership where the log starts), not from --initial-cluster. Cluster writes
 * (MemberAdd/Remove/Update/Promote) are checked and proposed on the leader and answered when
 * their entry commits; a follower forwards them over the peer link.
 * Sockets: ROUTER <run>/raftd.ipc for the gateways; DEALER "raftd" to <run>/stored.ipc;
 * ROUTER on each --listen-peer-urls (tcp) for the other members' raftds, and one DEALER per
 * other member connected to its peer URL. Peer sends never block (a full queue
 * drops the message: Raft tolerates loss, and a blocked consensus loop would be worse);
 * ZeroMQ reconnects by itself. Every peer message carries the cluster ID, so members of two
 * clusters (different --initial-cluster-token) never mix.
 * At start, and whenever stored reports a new boot id (it restarted and lost what it had not
 * synced), raftd reloads hard state and log from stored (LOAD) and rebuilds the core: to the
 * core that is exactly a crash and restart of this member.
 *
 * The shell's parts, one file each:
 *   main.c        the loop: sockets, poll, signals, timers, start and stop
 *   node.c        the core's life: LOAD paging from stored, start_core, reload when stored
 *                 restarts, ready processing (APPEND/COMMIT/peer sends), compaction, the
 *                 leadership handoff of a stopping leader, stored's messages
 *   peer.c        the peer transport: peer sockets, sending (held messages wait for
 *                 durability), receiving (RAFT and the shell's PEER_* messages), attributes,
 *                 connections following the membership
 *   membership.c  the member list answer (MEMBERS) and membership changes: checked and
 *                 proposed on the leader, forwarded from a follower, answered when committed
 *   snapxfer.c    snapshot transfer: the follower's pull, chunk by chunk, and the leader's relay
 *   gateway.c     the gateways' requests (PROPOSE, READ_INDEX, MEMBERS, MEMBER_CHANGE, TRANSFER,
 *                 METRICS) and the answers to them
 *   metrics.c     raftd's metrics table (etcd's names and help texts) and the METRICS answer
 *   lessor.c      the leases' clock: the leader's table of deadlines, expiry (a revoke
 *                 proposal), keepalives and TTL queries (a follower forwards them)
 *   corrupt.c     etcd's corruption checks: the leader's periodic HashKV comparison (a CORRUPT
 *                 alarm proposed on a mismatch), the check at start, the answers to peers'
 *                 HashKV requests, and a test-only fault that makes one member's store differ
 */
#ifndef CAIRN_RAFTD_H
#define CAIRN_RAFTD_H

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn_config.h"
#include "cairn_etcd_err.h"
#include "cairn_ipc.h"
#include "cairn_member.h"
#include "cairn_metrics.h"
#include "cairn_u64map.h"
#include "raft.h"

/* The shell's own peer messages (CAIRN_IPC_PEER_*, cairn_ipc.h) carry what the core does not:
 * attributes, forwarded membership changes, snapshot bytes (thesis §5.1: the core only sends the
 * metadata; the follower pulls chunks, one in flight per transfer), removed, stopping. */
#define SNAP_STALL_MS 10000
#define SNAP_RESTORE_MS (30 * 60 * 1000)
/* A removed member that still speaks is told so (PEER_REMOVED); the connection to it is kept
 * REMOVED_GRACE_MS for this. */
#define REMOVED_GRACE_MS 60000
/* Log compaction (thesis ch. 5, raftd_maybe_compact): runs when it can drop at least this many
 * entries (it moves memory), or when the log is over its byte budget. */
#define COMPACT_MIN_STEP 4096
#define ATTRS_EVERY_MS 2000

typedef struct {
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id; /* the gateway's own id for the read */
} read_ctx_t;

typedef struct {
    uint64_t id;
    zsock_t *dealer;
    char endpoint[300];
    char *client_urls; /* learned from the peer's ATTRS, comma-separated */
    char *name;        /* learned from the peer's ATTRS */
    int64_t last_heard; /* when a message from it last arrived: "started" for reconfiguration checks */
    int64_t removed_at; /* left the membership: the connection stays a few seconds for last answers */
    int stopping;       /* said it is stopping (PEER_STOPPING); any other message clears it */
    int64_t last_heartbeat; /* when this leader last sent it a heartbeat (metrics.c) */
    cairn_series_t *m_sent, *m_received, *m_sent_failures; /* its metric series, once looked up */
} peer_t;

/* Who asked for a membership change: a gateway of this node, or a member that forwarded it. */
typedef struct {
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id;
    uint64_t member, fwd_id; /* member != 0: answer that member's forward fwd_id */
    int64_t at;
} conf_origin_t;

typedef struct {
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id, target;
    int64_t deadline;
} transfer_t;

/* A message for a peer that must wait until stored has made the ready it came from durable
 * (votes, append acks: Raft §5.1/§5.2 promises must survive a crash). */
typedef struct held_s {
    struct held_s *next;
    uint64_t seq, to;
    uint8_t *frame;
    size_t len;
} held_t;

typedef struct raftd_lessor raftd_lessor_t;
typedef struct raftd_corrupt raftd_corrupt_t;

typedef struct {
    cairn_config_t *cfg;
    zsock_t *router, *stored;
    zsock_t **peer_routers;
    size_t n_peer_routers;
    peer_t *peers;
    size_t n_peers;
    held_t *held, **held_tail;
    uint64_t n_dropped_peer;
    int64_t next_attrs;
    /* Test-only fault switch (CAIRN_TEST_FAULTS=1): while <run-dir>/fault-isolate exists this
     * member neither sends nor receives peer messages, as if its network were cut. */
    int faults_enabled, isolated;
    int64_t next_fault_check;
    char fault_path[4096];
    transfer_t transfer; /* one MoveLeader at a time (req_id 0 = none) */
    /* gateways that proposed since the last (re)load: told when in-flight proposals may be lost */
    struct {
        uint8_t ident[128];
        size_t len;
    } proposers[32];
    size_t n_proposers;
    cairn_raft_t *raft;
    cairn_metrics_reg_t *metrics; /* metrics.c */
    struct cairn_procmetrics_t *procmetrics; /* metrics.c: process_* (cairn_procmetrics.h) */
    raftd_lessor_t *lessor;       /* lessor.c: the leases' clock */
    raftd_corrupt_t *corrupt;     /* corrupt.c: the corruption checks */
    cairn_members_t members; /* every member's metadata (name, peer URLs) as the log says */
    uint64_t cluster_id;     /* 0: joining a running cluster, learned from its first message */
    int removed_logged, was_member;
    int initial_checked; /* --experimental-initial-corrupt-check ran (once per process) */
    /* the one membership change in progress on this leader (Raft thesis §4.1: one at a time) */
    struct {
        int active;
        uint64_t index, term, node_id;
        int op;
        conf_origin_t origin;
        int64_t deadline;
    } conf;
    cairn_u64map_t *fwd; /* forward id -> conf_origin_t: changes forwarded to the leader */
    uint64_t next_fwd;
    /* a snapshot being pulled from the leader (follower side) */
    struct {
        int active;
        int restoring; /* every byte handed to stored: it is building the new store */
        uint64_t index, term, from, id, offset;
        int64_t last_progress;
    } snap;
    uint64_t stored_boot;
    uint64_t seq, acked_seq;
    uint64_t persisted_index; /* last index stored has made durable (this epoch) */
    uint64_t sent_commit, sent_term, sent_leader;
    uint64_t next_ctx;
    cairn_u64map_t *reads; /* ctx -> read_ctx_t */
    struct raftd_held *waiting, **waiting_tail; /* gateway.c: requests waiting for a leader */
    size_t n_waiting, waiting_bytes;
    int64_t next_tick;
    int64_t last_load_sent;
    uint64_t handoff_to; /* stopping leader: the member it hands leadership to */
    int fatal;           /* the error that ends this process (0: none); g_stop is the signals' */
    /* a paged LOAD under way (cairn_ipc.h LOAD_RESP): the first page's header and the entries
     * gathered so far (copies: a page's frame is freed once handled) */
    struct {
        int active;
        int held; /* complete, and held until the initial corruption check passes (corrupt.c) */
        uint64_t boot_id, term, vote, commit, snap_index, snap_term, cluster_id, last, next;
        uint64_t seq; /* of the last LOAD sent: only its answer is taken */
        uint8_t *members;
        size_t members_len;
        cairn_ipc_entry_t *ents;
        size_t n, cap, pages;
    } load;
} raftd_t;

static inline int id_in(const uint64_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

/* metrics.c: raftd's rows, named by their index (an update is an array access) */
enum {
    RAFTD_M_HAS_LEADER,
    RAFTD_M_IS_LEADER,
    RAFTD_M_IS_LEARNER,
    RAFTD_M_SERVER_ID,
    RAFTD_M_LEADER_CHANGES,
    RAFTD_M_PROPOSALS_COMMITTED,
    RAFTD_M_PROPOSALS_PENDING,
    RAFTD_M_PROPOSALS_FAILED,
    RAFTD_M_READ_INDEXES_FAILED,
    RAFTD_M_HEARTBEAT_FAILURES,
    RAFTD_M_LEARNER_PROMOTES,
    RAFTD_M_PEER_SENT_BYTES,
    RAFTD_M_PEER_RECEIVED_BYTES,
    RAFTD_M_PEER_SENT_FAILURES,
    RAFTD_M_COUNT_
};
int raftd_metrics_init(raftd_t *r);
cairn_series_t *raftd_metrics_peer(raftd_t *r, peer_t *p, size_t metric);
void raftd_metrics_heartbeat(raftd_t *r, uint64_t to);
void raftd_metrics_leader_changed(raftd_t *r, uint64_t leader);
void raftd_answer_metrics(raftd_t *r, const uint8_t *ident, size_t ident_len, uint64_t req_id);

/* peer.c */
peer_t *raftd_find_peer(raftd_t *r, uint64_t id);
void raftd_send_peer(raftd_t *r, const cairn_raft_msg_t *m);
void raftd_hold_peer(raftd_t *r, const cairn_raft_msg_t *m, uint64_t seq);
void raftd_release_held(raftd_t *r, int drop);
void raftd_send_peer_msg(raftd_t *r, uint64_t to, cairn_ipc_msg_t *m);
void raftd_handle_peer(raftd_t *r, const uint8_t *frame, size_t len);
void raftd_send_attrs(raftd_t *r);
int raftd_listen_peers(raftd_t *r);
void raftd_peer_close(peer_t *p);
void raftd_reconcile_peers(raftd_t *r);
void raftd_tell_peers_stopping(raftd_t *r);

/* membership.c */
void raftd_answer_members(raftd_t *r, const uint8_t *ident, size_t ident_len, uint64_t req_id);
void raftd_conf_answer(raftd_t *r, const conf_origin_t *o, int code, const char *msg, const uint8_t *body,
                       size_t len);
int raftd_member_started(raftd_t *r, uint64_t id);
void raftd_conf_begin(raftd_t *r, int op, const uint8_t *body, size_t len, const conf_origin_t *origin);
void raftd_conf_poll(raftd_t *r);
void raftd_sweep_fwd(raftd_t *r, int64_t now);

/* snapxfer.c */
void raftd_snap_fail(raftd_t *r, const char *why);
void raftd_snap_pull(raftd_t *r);
void raftd_snap_on_data(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_snap_on_ack(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_snap_on_chunk(raftd_t *r, const cairn_ipc_msg_t *m);

/* node.c */
void raftd_send_stored(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_process_ready(raftd_t *r);
void raftd_maybe_compact(raftd_t *r);
void raftd_load_clear(raftd_t *r);
void raftd_load_request(raftd_t *r, uint64_t from);
void raftd_handle_stored(raftd_t *r, const uint8_t *frame, size_t len);
int raftd_begin_handoff(raftd_t *r);
void raftd_start_loaded(raftd_t *r);

/* corrupt.c: etcd 3.4's corruption checks (--experimental-corrupt-check-time,
 * --experimental-initial-corrupt-check) */
int raftd_corrupt_new(raftd_t *r);
void raftd_corrupt_destroy(raftd_t *r);
void raftd_corrupt_tick(raftd_t *r, int64_t now);
/* 1: the start check began and the loaded state waits for it (raftd_start_loaded when it passes;
 * r->fatal when it fails); 0: nothing to check, start now */
int raftd_corrupt_initial_begin(raftd_t *r);
void raftd_corrupt_on_result(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_corrupt_on_status(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_corrupt_peer_req(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_corrupt_peer_resp(raftd_t *r, const cairn_ipc_msg_t *m);
/* Test fault (CAIRN_TEST_FAULTS=1, <run-dir>/fault-corrupt-put): 1 when *out is a copy of ents
 * with one Put's value changed (free *out and *owned after use); 0: send ents as they are. */
int raftd_corrupt_fault(raftd_t *r, const cairn_entry_t *ents, size_t n, cairn_entry_t **out, uint8_t **owned);

/* lessor.c: leases' liveness on the leader; follows the core's role by itself */
int raftd_lessor_new(raftd_t *r);
void raftd_lessor_destroy(raftd_t *r);
void raftd_lessor_tick(raftd_t *r, int64_t now);
void raftd_lessor_query(raftd_t *r, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m);
void raftd_lessor_peer_query(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_lessor_peer_resp(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_lessor_on_applied(raftd_t *r, const cairn_ipc_msg_t *m);
void raftd_lessor_on_list(raftd_t *r, const cairn_ipc_msg_t *m);
size_t raftd_lessor_count(const raftd_t *r);
/* gateway.c */
void raftd_send_gw(raftd_t *r, const uint8_t *ident, size_t len, const cairn_ipc_msg_t *m);
void raftd_send_gw_error(raftd_t *r, const uint8_t *ident, size_t len, int type, uint64_t req_id, cairn_etcd_err_t e);
void raftd_fail_reads(raftd_t *r, cairn_etcd_err_t why);
void raftd_answer(raftd_t *r, const uint8_t *ident, size_t len, uint64_t req_id, int code, const char *msg,
                  const uint8_t *body, size_t body_len);
void raftd_finish_transfer(raftd_t *r, cairn_etcd_err_t e);
void raftd_notify_reload(raftd_t *r);
/* gateway.c: the requests held while no leader is known are replayed once one is, or refused
 * with "no leader" when they waited too long (called from raftd_process_ready);
 * raftd_fail_reads answers them too */
void raftd_held_tick(raftd_t *r, int64_t now);
void raftd_handle_gw(raftd_t *r, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len);

#endif
