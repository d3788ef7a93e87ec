/* stored.h - the stored process's state and the steps its files share (internal; not a library API).
 *
 * stored is one thread (plus the snapshot threads of snapxfer.c) around one stored_t:
 *   main.c      the loop and message dispatch: drain, sync, apply, reads; APPEND, LOAD, COMMIT,
 *               RANGE, STATUS, METRICS
 *   stored.c    the steps the others share: replies, the WAL sync and its ack, applying
 *               committed entries (one LevelDB write per batch), checkpoints, the membership
 *   replay.c    start-up: opening the store and the WAL, replaying it, reconciling the log
 *   snapxfer.c  snapshot transfer (SNAP_REQ/SNAP_CHUNK) and install (SNAP_RECV/SNAP_ACK)
 *   metrics.c   stored's metrics table (etcd's names), answered over IPC
 *   maint.c     MAINT (Hash, HashKV, Defragment, alarm list) and the space quota's NOSPACE alarm
 * Every function here runs on the loop's thread unless its comment says otherwise.
 */
#ifndef CAIRN_STORED_H
#define CAIRN_STORED_H
#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "apply.h"
#include "cairn_config.h"
#include "cairn_etcd_err.h"
#include "cairn_ipc.h"
#include "cairn_member.h"
#include "cairn_metrics.h"
#include "cairn_zmq.h"
#include "events.h"
#include "memlog.h"
#include "mvcc.h"
#include "snapshot.h"
#include "wal.h"

/* A result waiting to be sent to the gateway that proposed the entry. */
typedef struct {
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id;
    int code;
    char message[256];
    uint8_t *body;
    size_t body_len;
} out_t;


#define APPLY_BATCH_MAX 4096 /* entries per LevelDB write */


typedef struct read_s {
    struct read_s *next;
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id, read_index;
    uint8_t *body;
    size_t body_len;
} read_t;


typedef struct {
    cairn_config_t *cfg;
    cairn_wal_t *wal;
    cairn_mvcc_t *mvcc;
    zsock_t *router;
    cairn_zmq_outbox_t *outbox; /* answers to gateways not connected yet (cairn_zmq.h) */
    uint64_t boot_id;
    char origin_prefix[40]; /* "<member id hex>/": results only for our own gateways */
    size_t origin_prefix_len;
    /* raft log in memory: entries [first_index, first_index + n) */
    cairn_memlog_t *log;  /* the raft log's in-memory tail (memlog.h) */
    int replaying;        /* reading the WAL at start: apply as we go, never release segments */
    int fatal;            /* the error that ends this process (0: none; stored_stop_with sets it) */
    uint64_t replayed;    /* entries read from the WAL at start */
    cairn_wal_hardstate_t hs;
    uint64_t persisted; /* last index durable in the WAL */
    uint64_t commit, term, leader;
    uint64_t commit_on_persist; /* raftd: entries up to this commit once durable (single voter) */
    /* raftd */
    uint8_t raftd_ident[256];
    size_t raftd_ident_len;
    uint64_t pending_seq; /* highest APPEND seq written to the WAL buffer but not yet synced */
    int have_pending;
    int wal_failed;
    read_t *reads, **reads_tail;
    uint64_t n_applied_total;
    uint64_t last_checkpoint;
    out_t *outs; /* APPLY_BATCH_MAX results, allocated once: apply runs for every write */
    cairn_snap_out_t *snap_out; /* leader side of snapshot transfer: the file being sent */
    /* a snapshot file being written on its own thread (a big store takes seconds to read; the
     * loop goes on meanwhile), and the SNAP_REQs waiting for it */
    struct {
        int running;
        pthread_t thread;
        atomic_int done;
        int rc;
        uint64_t id;
        char dir[4096], name[64], err[512];
        double seconds; /* how long the thread took (observed by the loop at reap) */
        cairn_mvcc_t *mvcc;
        struct snap_wait_s *waiters;
    } build;
    /* a received snapshot being restored into mvcc.new on its own thread (step c below), and
     * whom to answer when it is in place */
    struct {
        int running;
        pthread_t thread;
        atomic_int done;
        int rc;
        void *s; /* the stored_t, for the thread */
        char file[4096], err[512];
        uint64_t S, T, seq, held;
        uint8_t ident[256];
        size_t ident_len;
    } inst;
    cairn_snap_in_t *snap_in;   /* follower side: the file being received */
    cairn_members_t members; /* the membership as of the applied index (mvcc 'C' records) */
    cairn_metrics_reg_t *metrics; /* metrics.c; the loop's thread only */
    cairn_events_t *events;       /* events.c: what each applied batch changed, for the gateways */
    struct cairn_procmetrics_t *procmetrics; /* metrics.c: process_* (cairn_procmetrics.h) */
    uint8_t *lease_buf;           /* leases.c: grants and revokes of the batch, for raftd */
    size_t lease_n, lease_cap;
    /* maint.c: a Defragment running on its own thread, and whom to answer when it is done */
    struct {
        int running, joinable;
        pthread_t thread;
        atomic_int done;
        int rc;
        double seconds;
        cairn_mvcc_t *mvcc;
        struct maint_wait_s *waiters;
    } defrag;
    struct {
        int64_t next_check, next_propose; /* ms */
    } quota;
    struct stored_snapstream *snapstream; /* snapstream.c: Maintenance/Snapshot files */
    struct hash_job_s *hash_jobs;         /* maint.c: HashKV requests, hashed on threads */
} stored_t;


#define SNAP_OUT_IDLE_MS (5 * 60 * 1000)

/* ---- stored.c ---- */

/* An error stored cannot go on after: kept in s->fatal (the first one), which ends the loop. */
int stored_stop_with(stored_t *s, int rc);
void stored_log_trim(stored_t *s);
void stored_reply(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m);
void stored_reply_result(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, int code,
                         const char *message, const uint8_t *body, size_t body_len);
void stored_reply_error(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, cairn_etcd_err_t e);
cairn_hdr_ctx_t stored_hdr_ctx(stored_t *s);
/* One fdatasync for everything buffered, then APPENDED to raftd; <0 when it fails: the batch is
 * dropped, never acknowledged, and s->wal_failed holds writes until the WAL recovers (main.c, "a
 * full disk") - not fatal, reads go on. */
int stored_sync_wal(stored_t *s);
/* Applies min(commit, persisted); <0 on a storage error: fatal (stored_stop_with) only when
 * the store cannot be trusted any more, otherwise applying stops until the store is reopened
 * (main.c, "a full disk"). */
int stored_apply_committed(stored_t *s);
int stored_load_members(stored_t *s);

/* ---- replay.c ---- */

/* Opens the store and the WAL, replays it and sets the log and indexes up; 0, or -1 with the
 * reason logged. */
int stored_start(stored_t *s);
void stored_log_reset_to_snapshot(stored_t *s, uint64_t S, uint64_t T);

/* ---- snapxfer.c ---- */

int stored_snap_recover(stored_t *s, char *eb, size_t el);
void stored_snap_req(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m);
void stored_snap_recv(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m);
void stored_snap_build_reap(stored_t *s, int block);
void stored_snap_build_wait(stored_t *s);
void stored_snap_install_reap(stored_t *s, int block);

/* ---- metrics.c ---- */

enum {
    STORED_M_WAL_FSYNC,
    STORED_M_BACKEND_COMMIT,
    STORED_M_BACKEND_SNAPSHOT,
    STORED_M_APPLIED,
    STORED_M_SNAP_APPLY,
    STORED_M_DB_SIZE,
    STORED_M_DB_SIZE_DEBUG,
    STORED_M_DB_IN_USE,
    STORED_M_CURRENT_REV,
    STORED_M_COMPACT_REV,
    STORED_M_QUOTA,
    STORED_M_SLOW_APPLY,
    STORED_M_COUNT_
};
double stored_clock_s(void); /* a monotonic clock in seconds, for durations */
int stored_metrics_init(stored_t *s);
/* One observation of histogram id (loop thread only); ignored without a registry. */
void stored_metrics_observe(stored_t *s, int id, double seconds);
void stored_metrics_inc(stored_t *s, int id);
/* Answers METRICS: RESULT {req_id, code 0, body = the exposition text}. */
void stored_metrics_answer(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id);

/* leases.c */
void stored_lease_applied(stored_t *s, int kind, const uint8_t *body, size_t len);
void stored_lease_flush(stored_t *s);
void stored_lease_list(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m);
void stored_lease_read(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m);

/* maint.c */
void stored_maint(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m);
/* Answers the Defragment requests once the compaction is done; block = 1 waits for it (before
 * the store is closed or replaced). */
void stored_defrag_reap(stored_t *s, int block);
/* Whether a thread works for a client (a defragmentation, a HashKV, a Maintenance/Snapshot
 * file): the loop then polls every 10 ms, so its answer does not wait for the idle poll. */
int stored_maint_busy(stored_t *s);

/* ---- snapstream.c: the etcd backend files Maintenance/Snapshot streams ---- */
typedef struct stored_snapstream stored_snapstream_t;
/* MAINT ops SNAPSHOT, SNAPSHOT_READ, SNAPSHOT_CLOSE */
void stored_snapstream_request(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m);
/* Answers for files made, drops files idle too long (block: waits for every thread). */
void stored_snapstream_reap(stored_t *s, int block);
/* Waits for every thread, closes every file (a state change or exit ends the streams). */
void stored_snapstream_destroy(stored_t *s);
/* Whether a snapshot file is being written on a thread. */
int stored_snapstream_busy(stored_t *s);
/* Proposes ACTIVATE NOSPACE for this member when the store passed the quota (rate-limited). */
void stored_quota_check(stored_t *s, int64_t now);
/* A request of stored's own (kind: cairn_req_kind_t) proposed through its raftd, like a
 * gateway's; its result goes to no one. 0 or a CAIRN_E*. */
int stored_propose(stored_t *s, int kind, const uint8_t *body, size_t len);
/* compactor.c: --auto-compaction-mode/--auto-compaction-retention, on the leader's member */
void stored_compactor_tick(stored_t *s, int64_t now);

/* Makes the store report its changes to s->events (after every open of s->mvcc). */
void stored_events_attach(stored_t *s);

#endif
