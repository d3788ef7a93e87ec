/* stored - durability and state for one Cairn node (DESIGN.md "stored").
 *
 * One thread, one ROUTER socket (<run>/stored.ipc) that raftd and every gatewayd connect to.
 * Each pass of the loop:
 *   1. drains every message waiting (so many APPENDs share one fdatasync: group commit);
 *   2. writes the buffered WAL records and fdatasyncs ONCE, then acks raftd with APPENDED
 *      (raftd counts this node toward a quorum only after that ack);
 *   3. applies committed entries (min(commit, persisted)) to the MVCC store in one LevelDB
 *      write per pass, the applied index riding in the same write, and sends each result to
 *      the gateway that proposed it;
 *   4. serves the reads whose read index is now applied.
 * The raft log since the last snapshot is kept in memory as well as in the WAL, so that
 * raftd can reload it at start (LOAD) and apply never re-reads the disk.
 */
#include <czmq.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apply.h"
#include "cairn_config.h"
#include "cairn_daemon.h"
#include "cairn_entry.h"
#include "cairn_err.h"
#include "cairn_ipc.h"
#include "cairn_log.h"
#include "cairn_member.h"
#include "cairn_zmq.h"
#include "memlog.h"
#include "mvcc.h"
#include "snapshot.h"
#include "wal.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = 1; }

/* Test-only fault switch (CAIRN_TEST_FAULTS=1): while <run-dir>/fault-wal-alloc exists, the
 * WAL's batch buffer cannot grow (an allocation failure on the persistence path). */
static char g_fault_alloc_path[4096];
static void *fault_realloc(void *p, size_t n)
{
    if (g_fault_alloc_path[0] && access(g_fault_alloc_path, F_OK) == 0)
        return NULL;
    return realloc(p, n);
}


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
    uint64_t boot_id;
    char origin_prefix[40]; /* "<member id hex>/": results only for our own gateways */
    size_t origin_prefix_len;
    /* raft log in memory: entries [first_index, first_index + n) */
    cairn_memlog_t *log;  /* the raft log's in-memory tail (memlog.h) */
    int replaying;        /* reading the WAL at start: apply as we go, never release segments */
    int fatal;            /* the error that ends this process (0: none; stop_with sets it) */
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
} stored_t;

/* ------------------------------------------------------------------ in-memory log */

/* Applied entries beyond what members that lag may need go (memlog.h has the rule). */
static void log_trim(stored_t *s)
{
    cairn_memlog_trim(s->log, cairn_mvcc_applied_index(s->mvcc), cairn_config_log_keep_entries(s->cfg),
                      s->cfg->raft_log_memory_bytes);
}

/* ------------------------------------------------------------------ WAL replay */

static int apply_committed(stored_t *s);

/* An error stored cannot go on after (storage, the WAL): it is returned up to the loop, which
 * ends, and the supervisor restarts us; the restart replays the WAL from what is durable. The
 * first one is kept. g_stop is the signal handler's alone. */
static int stop_with(stored_t *s, int rc)
{
    if (!s->fatal)
        s->fatal = rc < 0 ? rc : CAIRN_EIO;
    return s->fatal;
}

/* Replay streams: the WAL since the last checkpoint can hold far more than memory should
 * (100,000 entries of 1 MiB), so once the log outgrows its bounds, the entries the replayed
 * hard state already commits are applied on the spot and log_trim drops what it may. Only
 * committed entries are applied (Raft never rewrites them, so a later record cannot undo
 * them), and only when the log reaches back to the state machine (otherwise the start fails
 * with a clear error once the replay ends, see main). */
static int on_replay_entry(void *ctx, const cairn_wal_entry_t *e)
{
    stored_t *s = ctx;
    s->replayed++;
    int rc = cairn_memlog_append(s->log, e->index, e->term, e->type, e->data, e->len);
    if (rc)
        return rc;
    if (cairn_memlog_bytes(s->log) <= s->cfg->raft_log_memory_bytes &&
        cairn_memlog_count(s->log) <= cairn_config_log_keep_entries(s->cfg) + APPLY_BATCH_MAX)
        return 0;
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    if (cairn_memlog_first(s->log) > applied + 1 || s->hs.commit <= applied) {
        log_trim(s); /* entries the state machine already holds (the common case after a crash) */
        return 0;
    }
    s->commit = s->hs.commit;
    s->persisted = cairn_memlog_last(s->log);
    return apply_committed(s);
}

static int on_replay_hs(void *ctx, const cairn_wal_hardstate_t *hs)
{
    ((stored_t *)ctx)->hs = *hs;
    return 0;
}

/* Raft's rule for installing a snapshot at (S, T) (memlog.h): used by the install and by WAL
 * replay of a SNAPSHOT record, so that a restart rebuilds exactly the log the install left. */
static void log_reset_to_snapshot(stored_t *s, uint64_t S, uint64_t T)
{
    uint64_t A = s->mvcc ? cairn_mvcc_applied_index(s->mvcc) : 0;
    cairn_memlog_reset_to_snapshot(s->log, S, T, A, A ? cairn_mvcc_applied_term(s->mvcc) : 0);
}

static int on_replay_snapshot(void *ctx, uint64_t index, uint64_t term)
{
    log_reset_to_snapshot(ctx, index, term);
    return 0;
}

/* ------------------------------------------------------------------ replies */

static void reply(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    /* Entries replayed at start are applied before the socket exists: whoever proposed
     * them gave up with the crash, so there is no one to answer. */
    if (!s->router)
        return;
    int rc = cairn_zmq_send(s->router, ident, ident_len, m);
    if (rc)
        cairn_debug("reply dropped", "type=%s err=\"%s\"", cairn_ipc_type_name(m->type), cairn_strerror(rc));
}

/* A body above one chunk (a Range over a large store) goes as RESULT_PARTs and a final RESULT
 * (cairn_ipc.h): no frame grows with the answer. */
static void reply_result(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, int code,
                         const char *message, const uint8_t *body, size_t body_len)
{
    size_t total = body_len, off = 0;
    while (body_len > CAIRN_IPC_RESULT_CHUNK) {
        cairn_ipc_msg_t part = {.type = CAIRN_IPC_RESULT_PART, .req_id = req_id, .offset = off, .total = total,
                                .body = body, .body_len = CAIRN_IPC_RESULT_CHUNK};
        reply(s, ident, ident_len, &part);
        body += CAIRN_IPC_RESULT_CHUNK;
        body_len -= CAIRN_IPC_RESULT_CHUNK;
        off += CAIRN_IPC_RESULT_CHUNK;
    }
    cairn_ipc_msg_t r = {.type = CAIRN_IPC_RESULT, .req_id = req_id, .code = code, .body = body, .body_len = body_len};
    cairn_ipc_set_message(&r, message);
    reply(s, ident, ident_len, &r);
}

static cairn_hdr_ctx_t hdr_ctx(stored_t *s)
{
    cairn_hdr_ctx_t h = {s->members.cluster_id ? s->members.cluster_id : cairn_config_cluster_id(s->cfg),
                         cairn_config_member_id(s->cfg), s->term};
    return h;
}

static void reply_error(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, cairn_etcd_err_t e)
{
    reply_result(s, ident, ident_len, req_id, cairn_etcd_err_code(e), cairn_etcd_err_text(e), NULL, 0);
}

/* ------------------------------------------------------------------ reads */

/* After an answer this large (a Range over much of the store), the memory it took goes back
 * to the system: glibc keeps freed heap chunks, so one big read would otherwise stay in RSS. */
#define BIG_ANSWER_BYTES ((size_t)16 << 20)

static void serve_read(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, const uint8_t *body,
                       size_t len)
{
    cairn_hdr_ctx_t h = hdr_ctx(s);
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    cairn_apply_err_t err = {0};
    int rc = cairn_apply_range(s->mvcc, body, len, &h, &resp, &resp_len, &err);
    if (rc < 0)
        reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_STORAGE);
    else if (err.grpc_code)
        reply_result(s, ident, ident_len, req_id, err.grpc_code, err.message, NULL, 0);
    else
        reply_result(s, ident, ident_len, req_id, CAIRN_GRPC_OK, NULL, resp, resp_len);
    free(resp);
    if (resp_len > BIG_ANSWER_BYTES)
        malloc_trim(0);
}

static void serve_ready_reads(stored_t *s)
{
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    read_t **pp = &s->reads;
    while (*pp) {
        read_t *r = *pp;
        if (r->read_index <= applied) {
            serve_read(s, r->ident, r->ident_len, r->req_id, r->body, r->body_len);
            *pp = r->next;
            free(r->body);
            free(r);
        } else
            pp = &r->next;
    }
    s->reads_tail = pp;
}

/* ------------------------------------------------------------------ checkpoints */

/* Every --snapshot-count applied entries: make the state machine durable (one synced
 * LevelDB write) and release the WAL segments it covers, keeping snapshot-count entries
 * behind the applied index for members that lag (and for raftd's reload). This bounds the
 * WAL on disk the way etcd's snapshot + WAL purge does. */
static void checkpoint(stored_t *s)
{
    if (s->replaying)
        return; /* segments are being read; the first checkpoint after the start catches up */
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    uint64_t every = s->cfg->snapshot_count ? s->cfg->snapshot_count : 100000;
    if (applied < s->last_checkpoint + every)
        return;
    int rc = cairn_mvcc_sync(s->mvcc);
    if (rc) {
        cairn_error("state machine sync failed; WAL kept", "err=\"%s\"", cairn_strerror(rc));
        return;
    }
    s->last_checkpoint = applied;
    if (applied > every) {
        int n = cairn_wal_release_before(s->wal, applied - every);
        if (n > 0)
            cairn_info("wal segments released", "count=%d below_index=%llu applied=%llu", n,
                       (unsigned long long)(applied - every), (unsigned long long)applied);
    }
}

/* ------------------------------------------------------------------ apply */

/* A configuration entry: the membership after it is recorded in the same LevelDB write as the
 * applied index (mvcc 'C'), so the membership at any applied point survives a crash. An entry
 * the raft core would refuse (malformed) changes nothing here either. */
static int apply_conf(stored_t *s, const cairn_memlog_entry_t *e)
{
    cairn_conf_change_t cc;
    if (cairn_entry_conf_decode(e->data, e->len, &cc) == 0) {
        cairn_members_t next;
        int rc = cairn_members_copy(&next, &s->members);
        if (rc == 0 && (rc = cairn_members_apply(&next, cc.op, cc.node_id, cc.ctx, cc.ctx_len)) == 0) {
            uint8_t *blob;
            size_t len;
            if ((rc = cairn_members_encode(&next, &blob, &len)) == 0) {
                if (!cairn_mvcc_in_batch(s->mvcc))
                    rc = CAIRN_ESTATE;
                else
                    rc = cairn_mvcc_conf_put(s->mvcc, e->index, blob, len);
                free(blob);
            }
            if (rc == 0) {
                cairn_members_clear(&s->members);
                s->members = next;
                cairn_info("membership changed", "index=%llu op=%u member=%016llx members=%zu",
                           (unsigned long long)e->index, (unsigned)cc.op, (unsigned long long)cc.node_id,
                           s->members.n);
            } else {
                cairn_members_clear(&next);
            }
        }
        if (rc == CAIRN_EPROTO)
            cairn_warn("configuration entry with a bad context applied as no-op", "index=%llu",
                       (unsigned long long)e->index);
        else if (rc)
            return rc;
    } else {
        cairn_warn("malformed configuration entry applied as no-op", "index=%llu", (unsigned long long)e->index);
    }
    return cairn_apply_noop(s->mvcc, e->index, e->term);
}

/* The membership when nothing was applied yet ('C' 0), or the newest one recorded. */
static int load_members(stored_t *s)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    int rc = cairn_mvcc_conf_get(s->mvcc, UINT64_MAX, &blob, &len, NULL);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        rc = cairn_members_decode(&s->members, blob, len);
        free(blob);
        return rc;
    }
    if ((rc = cairn_members_initial(&s->members, s->cfg)) || (rc = cairn_members_encode(&s->members, &blob, &len)))
        return rc;
    if ((rc = cairn_mvcc_batch_begin(s->mvcc)) == 0) {
        if ((rc = cairn_mvcc_conf_put(s->mvcc, 0, blob, len)) == 0)
            rc = cairn_mvcc_batch_commit(s->mvcc);
        else
            cairn_mvcc_batch_abort(s->mvcc);
    }
    free(blob);
    return rc;
}

static int apply_committed(stored_t *s)
{
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    uint64_t upto = s->commit < s->persisted ? s->commit : s->persisted;
    if (applied >= upto)
        return 0;
    /* Results go out as soon as they are computed, before the batch reaches LevelDB: the
     * entries are committed and durable in the WAL, so a crash before the LevelDB write only
     * means the WAL replays them (the applied index is written atomically with the data), and
     * the result is deterministic. Linearizable reads still wait for the applied index, which
     * moves only when the batch is written, so no read can miss an answered write. This takes
     * LevelDB's own log write off every write's latency. */
    size_t max_batch = APPLY_BATCH_MAX;
    if (!s->outs && !(s->outs = calloc(APPLY_BATCH_MAX, sizeof *s->outs)))
        return 0; /* tried again at the next pass */
    out_t *outs = s->outs;
    while (applied < upto) {
        size_t nout = 0;
        if (cairn_mvcc_batch_begin(s->mvcc) < 0)
            break;
        int failed = 0;
        for (uint64_t i = applied + 1; i <= upto && nout < max_batch; i++) {
            const cairn_memlog_entry_t *e = cairn_memlog_at(s->log, i);
            if (!e) {
                cairn_error("committed entry missing from log", "index=%llu", (unsigned long long)i);
                failed = 1;
                break;
            }
            if (e->type == CAIRN_ENTRY_CONF) {
                if (apply_conf(s, e) < 0) {
                    failed = 1;
                    break;
                }
                continue;
            }
            cairn_ipc_req_t req;
            if (e->type != 0 || e->len == 0 || cairn_ipc_req_decode(e->data, e->len, &req) != 0) {
                if (e->type == 0 && e->len)
                    cairn_warn("undecodable entry applied as no-op", "index=%llu", (unsigned long long)i);
                if (cairn_apply_noop(s->mvcc, e->index, e->term) < 0) {
                    failed = 1;
                    break;
                }
                continue;
            }
            cairn_hdr_ctx_t h = hdr_ctx(s);
            h.raft_term = e->term;
            uint8_t *resp = NULL;
            size_t resp_len = 0;
            cairn_apply_err_t err = {0};
            int rc = cairn_apply_request(s->mvcc, e->index, e->term, (int)req.kind, req.body, req.body_len, &h, &resp,
                                         &resp_len, &err);
            if (rc < 0) {
                free(resp);
                failed = 1;
                break;
            }
            if (req.origin_len > s->origin_prefix_len && req.origin_len < sizeof outs[0].ident &&
                memcmp(req.origin, s->origin_prefix, s->origin_prefix_len) == 0) {
                out_t *o = &outs[nout++];
                memcpy(o->ident, req.origin, req.origin_len);
                o->ident_len = req.origin_len;
                o->req_id = req.req_id;
                o->code = err.grpc_code;
                snprintf(o->message, sizeof o->message, "%s", err.message);
                o->body = resp;
                o->body_len = resp_len;
            } else
                free(resp);
        }
        if (failed) {
            /* A storage failure mid-batch: nothing of the batch reached LevelDB; stop so the
             * supervisor restarts us and the WAL replays from the durable applied index. */
            cairn_error("apply failed; exiting so the WAL is replayed", NULL);
            for (size_t k = 0; k < nout; k++)
                free(outs[k].body);
            return stop_with(s, CAIRN_EIO);
        }
        for (size_t k = 0; k < nout; k++) {
            out_t *o = &outs[k];
            reply_result(s, o->ident, o->ident_len, o->req_id, o->code, o->code ? o->message : NULL, o->body,
                         o->body_len);
            free(o->body);
        }
        if (cairn_mvcc_batch_commit(s->mvcc) < 0) {
            cairn_error("mvcc batch commit failed; exiting so the WAL is replayed", NULL);
            return stop_with(s, CAIRN_EIO);
        }
        applied = cairn_mvcc_applied_index(s->mvcc);
    }
    log_trim(s);
    checkpoint(s);
    return 0;
}

/* ------------------------------------------------------------------ messages */

/* LOAD is paged (no message grows with the log): LOAD {index = from} answers the header
 * (hard state, the point the log starts after, the membership there) with the durable entries
 * from `from` (0 or out of range: from the first) up to LOAD_PAGE_BYTES of entry data, at
 * least one entry, and index = the last durable index, where raftd's load ends. raftd asks for
 * the next page from the index after the page's last entry; a page that does not continue
 * where it asked (the log moved meanwhile) makes it start over. */
#define LOAD_PAGE_BYTES ((size_t)4 << 20)
#define LOAD_PAGE_ENTRIES 65536

static void send_load_resp(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t from, uint64_t seq)
{
    /* Only what is durable: raftd must never believe in an entry a crash could erase. */
    const cairn_memlog_t *l = s->log;
    size_t n = cairn_memlog_count(l);
    while (n && cairn_memlog_nth(l, n - 1)->index > s->persisted)
        n--;
    uint64_t first = cairn_memlog_first(l), snap_index = cairn_memlog_snap_index(l);
    size_t start = 0;
    if (from >= first && from < first + n)
        start = (size_t)(from - first);
    size_t end = start, bytes = 0;
    while (end < n && end - start < LOAD_PAGE_ENTRIES &&
           (end == start || bytes + cairn_memlog_nth(l, end)->len <= LOAD_PAGE_BYTES))
        bytes += cairn_memlog_nth(l, end++)->len;
    /* the log holds its entries in one array of the IPC's own entry type: the page is sent
     * from it as it is */
    const cairn_ipc_entry_t *ents = end > start ? cairn_memlog_nth(l, start) : NULL;
    uint64_t last = n ? cairn_memlog_nth(l, n - 1)->index : snap_index;
    if (!n && !snap_index)
        last = cairn_mvcc_applied_index(s->mvcc);
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LOAD_RESP, .boot_id = s->boot_id, .term = s->hs.term, .vote = s->hs.vote,
                         .commit = s->hs.commit < last ? s->hs.commit : last, .snap_index = snap_index,
                         .snap_term = cairn_memlog_snap_term(l),
                         .entries = ents, .n_entries = end - start, .last = n ? last : 0, .seq = seq};
    if (n == 0 && snap_index == 0) {
        /* nothing in the log: everything up to the applied index was compacted away */
        m.snap_index = cairn_mvcc_applied_index(s->mvcc);
        m.snap_term = cairn_mvcc_applied_term(s->mvcc);
    }
    /* the membership where raftd's log starts; the configuration entries after it are in ents */
    uint8_t *blob = NULL;
    size_t blen = 0;
    if (cairn_mvcc_conf_get(s->mvcc, m.snap_index, &blob, &blen, NULL) == 1) {
        m.body = blob;
        m.body_len = blen;
    }
    m.cluster_id = s->members.cluster_id;
    reply(s, ident, ident_len, &m);
    free(blob);
}

/* ------------------------------------------------------------------ snapshot transfer and install
 *
 * IPC contract (cairn_ipc.h has the field lists):
 *
 * Leader side. SNAP_REQ {req_id, snap_id, offset}: snap_id 0 makes a snapshot of the current
 * committed state (or reuses the current one if the applied index did not move) and answers
 * SNAP_CHUNK {req_id, snap_id (its applied index), offset 0, total bytes, applied = the applied
 * index it holds, code 0, body = the first <= 1 MiB}. snap_id != 0 answers the bytes at offset
 * of that snapshot (an empty body at offset == total). Errors: code 9 with "snapshot no longer
 * available" (replaced by a newer one, or idle 5 minutes: start again with snap_id 0), code 9
 * for an offset past the end or nothing applied yet, code 13 for a storage error.
 *
 * Follower side. SNAP_RECV {snap_id, offset, total, snap_index S, snap_term T, body}: offset 0
 * starts over; otherwise offset must be the bytes held. Answer SNAP_ACK {snap_id, offset =
 * bytes held, installed 0}. A chunk that does not fit answers code 9, a message saying what was
 * expected, and offset = the bytes held (resume there). When the last byte arrives the file is
 * checked and installed, then SNAP_ACK {snap_id, offset = total, installed 1, S, T}; an install
 * that fails answers code 13 + message with the old state intact (the bytes are dropped: start
 * again at offset 0).
 *
 * Install (crash-safe at every step; the WAL's SNAPSHOT record is the commit point):
 *   a. pending WAL writes are synced (earlier appends must be durable, as always);
 *   b. in.tmp is checked (CRC), fsync'd and renamed to snap/<S>-<T>.snap (dir fsync'd);
 *   c. member/mvcc.new is built from it, synced;
 *   d. SNAPSHOT(S, T) and the hard state (commit >= S) are appended and synced: COMMIT;
 *   e. mvcc.new and mvcc are exchanged (renameat2 RENAME_EXCHANGE), member/ fsync'd, the
 *      old store closed (before: LevelDB must never write into a directory being renamed),
 *      the new one opened, mvcc.new (now the old data) removed;
 *   f. the in-memory log is reset by Raft's rule (log_reset_to_snapshot).
 * A crash before d leaves the old state (leftover mvcc.new / in.tmp are removed at start);
 * after d, start-up (snap_recover) sees a SNAPSHOT record above the store's applied index and
 * redoes c and e from snap/<S>-<T>.snap.
 *
 * The state installed may be past S (the leader snapshots its current state, at or past its
 * compaction point): entries S+1..applied then arrive in APPENDs and are kept in memory only
 * (see the APPEND case). */

#define SNAP_CHUNK_BYTES ((size_t)1 << 20)
#define SNAP_OUT_IDLE_MS (5 * 60 * 1000)

static int sync_wal(stored_t *s);

static void member_path(const stored_t *s, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/member/%s", s->cfg->data_dir, name);
}

/* Unrecoverable mid-install (the commit point is passed but the store cannot be swapped in
 * or opened): stop at once; the next start finishes the install from the WAL record. */
static void snap_fatal(const char *what, const char *err)
{
    cairn_error("snapshot install cannot continue; exiting so that the restart finishes it", "step=\"%s\" err=\"%s\"",
                what, err);
    fflush(NULL);
    _exit(1);
}

static void snap_build_wait(stored_t *s);

/* e: member/mvcc.new (complete, synced) becomes member/mvcc. */
static void snap_swap_in(stored_t *s)
{
    char member[4096], path[4096], newp[4096], err[512] = "";
    member_path(s, "", member, sizeof member);
    member_path(s, "mvcc", path, sizeof path);
    member_path(s, "mvcc.new", newp, sizeof newp);
    snap_build_wait(s); /* a snapshot being written reads the store we are about to close */
    cairn_mvcc_destroy(&s->mvcc);
    if (cairn_snap_swap_dirs(member, "mvcc", "mvcc.new", err, sizeof err))
        snap_fatal("swap", err);
    int rc;
    s->mvcc = cairn_mvcc_open(path, &rc, err, sizeof err);
    if (!s->mvcc)
        snap_fatal("open the new store", err);
    cairn_snap_rmtree(newp);
    /* the membership now is the snapshot's */
    cairn_members_clear(&s->members);
    if ((rc = load_members(s)) != 0)
        snap_fatal("read the membership of the new store", cairn_strerror(rc));
    s->last_checkpoint = cairn_mvcc_applied_index(s->mvcc);
}

/* c: builds member/mvcc.new from file, checks that it covers the raft snapshot S. */
static int snap_build(stored_t *s, const char *file, uint64_t S, char *eb, size_t el)
{
    char newp[4096];
    member_path(s, "mvcc.new", newp, sizeof newp);
    cairn_snap_rmtree(newp);
    cairn_snap_info_t info;
    int rc = cairn_snap_restore(file, newp, &info, eb, el);
    if (rc == 0 && info.index < S) {
        /* it would leave committed entries info.index+1..S nowhere */
        cairn_errbuf_set(eb, el, "snapshot %s holds applied index %llu, below the raft snapshot index %llu", file,
                         (unsigned long long)info.index, (unsigned long long)S);
        cairn_snap_rmtree(newp);
        rc = CAIRN_EINVAL;
    }
    return rc;
}

/* a, b and the choice: 1 when our own state machine is kept (nothing to build), 0 when file
 * (the received snapshot, now snap/<S>-<T>.snap) is to be restored, <0 on error. */
static int snap_install_begin(stored_t *s, uint64_t S, uint64_t T, char *file, size_t flen, char *eb, size_t el)
{
    /* a */
    if (sync_wal(s) < 0 || s->wal_failed) {
        cairn_errbuf_set(eb, el, "the WAL has failed; restart stored");
        return CAIRN_ESTATE;
    }
    /* b */
    cairn_snap_info_t info;
    int rc = cairn_snap_in_finish(s->snap_in, S, T, &info, file, flen, eb, el);
    if (rc)
        return rc;
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    /* Our state machine already at or past the file's (and so past S): installing would move
     * it backwards. Raft's contract: keep our state, still take S as the log's start (the
     * SNAPSHOT record and the log rule below), and report the install done. */
    if (info.index <= applied && applied >= S) {
        cairn_info("snapshot is not ahead of this state machine; keeping ours", "file_applied=%llu applied=%llu index=%llu",
                   (unsigned long long)info.index, (unsigned long long)applied, (unsigned long long)S);
        unlink(file);
        return 1;
    }
    return 0;
}

/* d, e, f once mvcc.new is built (keep_ours: no new store). */
static int snap_install_commit(stored_t *s, uint64_t S, uint64_t T, int keep_ours, char *eb, size_t el)
{
    char snapdir[4096];
    member_path(s, "snap", snapdir, sizeof snapdir);
    int rc;
    if (!keep_ours && cairn_mvcc_applied_index(s->mvcc) >= S) {
        /* the old log got us there while the new store was built: keep what we have */
        char newp[4096];
        member_path(s, "mvcc.new", newp, sizeof newp);
        cairn_snap_rmtree(newp);
        keep_ours = 1;
    }
    if (keep_ours && (rc = cairn_mvcc_sync(s->mvcc))) {
        /* the SNAPSHOT record below lets the WAL drop entries <= S, so the state machine must
         * hold them durably first (its writes are not synced: the WAL is the durable copy) */
        cairn_errbuf_set(eb, el, "making the state machine durable failed: %s", cairn_strerror(rc));
        return rc;
    }
    /* d: the commit point */
    if (s->hs.commit < S)
        s->hs.commit = S; /* S is committed: the leader only snapshots applied state */
    if ((rc = cairn_wal_append_snapshot(s->wal, S, T)) || (rc = cairn_wal_append_hardstate(s->wal, &s->hs)) ||
        (rc = cairn_wal_sync(s->wal))) {
        /* unknown whether the record reached the disk: stop; the restart knows (and
         * finishes the install from the file, which is therefore kept) */
        s->wal_failed = 1;
        stop_with(s, rc);
        cairn_errbuf_set(eb, el, "writing the snapshot record to the WAL failed: %s", cairn_strerror(rc));
        cairn_error("wal sync failed during snapshot install; stopping", "err=\"%s\"", cairn_strerror(rc));
        return rc;
    }
    /* e */
    if (!keep_ours)
        snap_swap_in(s);
    /* f */
    log_reset_to_snapshot(s, S, T);
    s->persisted = cairn_memlog_last(s->log);
    if (s->commit < S)
        s->commit = S;
    cairn_snap_prune_installed(snapdir, S, T);
    cairn_info("snapshot installed", "index=%llu term=%llu applied=%llu revision=%lld log_entries=%zu",
               (unsigned long long)S, (unsigned long long)T, (unsigned long long)cairn_mvcc_applied_index(s->mvcc),
               (long long)cairn_mvcc_revision(s->mvcc), cairn_memlog_count(s->log));
    return 0;
}

/* c, on its own thread: reading a big snapshot into a new store takes a while, and the loop
 * keeps serving meanwhile (only files are touched here, nothing the loop uses). */
static void *snap_restore_main(void *arg)
{
    stored_t *s = arg;
    s->inst.rc = snap_build(s, s->inst.file, s->inst.S, s->inst.err, sizeof s->inst.err);
    atomic_store(&s->inst.done, 1);
    return NULL;
}

/* At start, right after the WAL replay: clears what an interrupted transfer or install left
 * and finishes an install whose SNAPSHOT record is durable but whose store swap is not. */
static int snap_recover(stored_t *s, char *eb, size_t el)
{
    char snapdir[4096], p[4096];
    member_path(s, "snap", snapdir, sizeof snapdir);
    if (mkdir(snapdir, 0700) != 0 && errno != EEXIST) {
        cairn_errbuf_set(eb, el, "cannot create %s: %s", snapdir, strerror(errno));
        return CAIRN_EIO;
    }
    member_path(s, "mvcc.new", p, sizeof p);
    cairn_snap_rmtree(p);
    member_path(s, "mvcc.old", p, sizeof p); /* cairn_snap_swap_dirs' fallback */
    cairn_snap_rmtree(p);
    if (!(s->snap_in = cairn_snap_in_new(snapdir)) || !(s->snap_out = cairn_snap_out_new(snapdir, cairn_now_ms()))) {
        cairn_errbuf_set(eb, el, "out of memory");
        return CAIRN_ENOMEM;
    }
    uint64_t S = 0, T = 0;
    if (cairn_wal_last_snapshot(s->wal, &S, &T) && S > cairn_mvcc_applied_index(s->mvcc)) {
        char file[4096], why[512] = "";
        cairn_snap_installed_path(snapdir, S, T, file, sizeof file);
        cairn_warn("finishing an interrupted snapshot install", "index=%llu term=%llu applied=%llu file=%s",
                   (unsigned long long)S, (unsigned long long)T,
                   (unsigned long long)cairn_mvcc_applied_index(s->mvcc), file);
        int rc = snap_build(s, file, S, why, sizeof why);
        if (rc) {
            cairn_errbuf_set(eb, el,
                             "the WAL records a snapshot install at index %llu term %llu that the state machine "
                             "(applied %llu) lacks, and its file %s cannot be used: %s",
                             (unsigned long long)S, (unsigned long long)T,
                             (unsigned long long)cairn_mvcc_applied_index(s->mvcc), file, why);
            return rc;
        }
        snap_swap_in(s);
    }
    cairn_snap_prune_installed(snapdir, S, T);
    return 0;
}

static void snap_ack(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t snap_id, uint64_t held,
                     uint64_t installed, uint64_t S, uint64_t T, int code, const char *msg)
{
    cairn_ipc_msg_t a = {.type = CAIRN_IPC_SNAP_ACK, .snap_id = snap_id, .offset = held, .installed = installed,
                         .snap_index = S, .snap_term = T, .code = code};
    if (code)
        cairn_ipc_set_message(&a, msg);
    reply(s, ident, ident_len, &a);
}

static void handle_snap_recv(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    char eb[512] = "";
    uint64_t held = 0;
    if (m->snap_index == 0) {
        snap_ack(s, ident, ident_len, m->snap_id, 0, 0, 0, 0, 9, "snapshot chunk without a raft snapshot index");
        return;
    }
    if (s->wal_failed) {
        snap_ack(s, ident, ident_len, m->snap_id, 0, 0, 0, 0, 13, "the WAL has failed; restart stored");
        return;
    }
    if (s->inst.running) {
        snap_ack(s, ident, ident_len, m->snap_id, 0, 0, 0, 0, 9, "a snapshot install is in progress");
        return;
    }
    int rc = cairn_snap_in_chunk(s->snap_in, m->snap_id, m->offset, m->total, m->body, m->body_len, &held, eb, sizeof eb);
    if (rc < 0) {
        cairn_warn("snapshot chunk refused", "seq=%llu offset=%llu err=\"%s\"", (unsigned long long)m->snap_id,
                   (unsigned long long)m->offset, eb);
        snap_ack(s, ident, ident_len, m->snap_id, held, 0, 0, 0, rc == CAIRN_EINVAL ? 9 : 13, eb);
        return;
    }
    if (rc == 0) {
        snap_ack(s, ident, ident_len, m->snap_id, held, 0, 0, 0, 0, NULL);
        return;
    }
    cairn_info("snapshot received; installing", "seq=%llu bytes=%llu index=%llu term=%llu",
               (unsigned long long)m->snap_id, (unsigned long long)held, (unsigned long long)m->snap_index,
               (unsigned long long)m->snap_term);
    char file[4096];
    rc = snap_install_begin(s, m->snap_index, m->snap_term, file, sizeof file, eb, sizeof eb);
    if (rc == 0 && ident_len <= sizeof s->inst.ident) {
        /* c on a thread; snap_install_reap does the rest and answers */
        snprintf(s->inst.file, sizeof s->inst.file, "%s", file);
        s->inst.S = m->snap_index;
        s->inst.T = m->snap_term;
        s->inst.seq = m->snap_id;
        s->inst.held = held;
        memcpy(s->inst.ident, ident, ident_len);
        s->inst.ident_len = ident_len;
        s->inst.err[0] = 0;
        atomic_store(&s->inst.done, 0);
        if (pthread_create(&s->inst.thread, NULL, snap_restore_main, s) == 0) {
            s->inst.running = 1;
            return;
        }
        rc = snap_build(s, file, m->snap_index, eb, sizeof eb); /* no thread: here, then */
    }
    if (rc >= 0)
        rc = snap_install_commit(s, m->snap_index, m->snap_term, rc == 1, eb, sizeof eb);
    if (rc != 0) {
        cairn_error("snapshot install failed; the old state is kept", "index=%llu err=\"%s\"",
                    (unsigned long long)m->snap_index, eb);
        cairn_snap_in_reset(s->snap_in);
        snap_ack(s, ident, ident_len, m->snap_id, 0, 0, 0, 0, 13, eb);
        return;
    }
    snap_ack(s, ident, ident_len, m->snap_id, held, 1, m->snap_index, m->snap_term, 0, NULL);
}

/* The loop's side of a finished restore (block: wait for it, at shutdown). */
static void snap_install_reap(stored_t *s, int block)
{
    if (!s->inst.running || (!block && !atomic_load(&s->inst.done)))
        return;
    pthread_join(s->inst.thread, NULL);
    s->inst.running = 0;
    char eb[512];
    snprintf(eb, sizeof eb, "%s", s->inst.err);
    int rc = s->inst.rc;
    if (rc)
        unlink(s->inst.file);
    else if (!s->router)
        return; /* stopping: the WAL has no SNAPSHOT record yet, mvcc.new goes at the next start */
    else
        rc = snap_install_commit(s, s->inst.S, s->inst.T, 0, eb, sizeof eb);
    if (rc) {
        cairn_error("snapshot install failed; the old state is kept", "index=%llu err=\"%s\"",
                    (unsigned long long)s->inst.S, eb);
        cairn_snap_in_reset(s->snap_in);
        snap_ack(s, s->inst.ident, s->inst.ident_len, s->inst.seq, 0, 0, 0, 0, 13, eb);
        return;
    }
    snap_ack(s, s->inst.ident, s->inst.ident_len, s->inst.seq, s->inst.held, 1, s->inst.S, s->inst.T, 0, NULL);
}

typedef struct snap_wait_s {
    struct snap_wait_s *next;
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id;
} snap_wait_t;

/* Answers a SNAP_REQ with the chunk of snapshot id at off (or the error rc/eb). */
static void snap_chunk_reply(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, uint64_t id,
                             uint64_t off, int rc, const char *eb)
{
    cairn_ipc_msg_t r = {.type = CAIRN_IPC_SNAP_CHUNK, .req_id = req_id, .snap_id = id, .offset = off};
    char msg[512];
    snprintf(msg, sizeof msg, "%s", eb ? eb : "");
    uint64_t total = 0, applied = 0;
    uint8_t *buf = NULL;
    size_t n = 0;
    if (rc == 0 && !(buf = malloc(SNAP_CHUNK_BYTES)))
        rc = CAIRN_ENOMEM;
    if (rc == 0) {
        rc = cairn_snap_out_read(s->snap_out, id, off, buf, SNAP_CHUNK_BYTES, cairn_now_ms(), &n, &total, &applied);
        if (rc == CAIRN_ENOTFOUND)
            snprintf(msg, sizeof msg, "snapshot no longer available");
        else if (rc == CAIRN_EINVAL)
            snprintf(msg, sizeof msg, "offset %llu is past the end of snapshot %llu (%llu bytes)",
                     (unsigned long long)off, (unsigned long long)id, (unsigned long long)total);
        else if (rc)
            snprintf(msg, sizeof msg, "reading snapshot %llu: %s", (unsigned long long)id, cairn_strerror(rc));
    }
    if (rc) {
        r.code = rc == CAIRN_ENOTFOUND || rc == CAIRN_EINVAL || rc == CAIRN_ESTATE ? 9 : 13;
        cairn_ipc_set_message(&r, msg[0] ? msg : cairn_strerror(rc));
    } else {
        r.total = total;
        r.applied = applied;
        r.body = buf;
        r.body_len = n;
    }
    reply(s, ident, ident_len, &r);
    free(buf);
}

static void *snap_build_main(void *arg)
{
    stored_t *s = arg;
    s->build.rc = cairn_snap_save(s->build.mvcc, s->build.dir, s->build.name, NULL, s->build.err, sizeof s->build.err);
    atomic_store(&s->build.done, 1);
    return NULL;
}

/* The loop's side of a finished build: adopt the file, answer everyone who waited. */
static void snap_build_reap(stored_t *s, int block)
{
    if (!s->build.running || (!block && !atomic_load(&s->build.done)))
        return;
    pthread_join(s->build.thread, NULL);
    s->build.running = 0;
    int rc = s->build.rc;
    if (rc == 0 && (rc = cairn_snap_out_adopt(s->snap_out, s->build.id, cairn_now_ms())) != 0)
        snprintf(s->build.err, sizeof s->build.err, "snapshot %s vanished after it was written", s->build.name);
    uint64_t id = 0, total = 0, applied = 0;
    if (rc == 0) {
        cairn_snap_out_current(s->snap_out, &id, &total, &applied);
        cairn_info("snapshot made for sending", "id=%llu bytes=%llu applied=%llu", (unsigned long long)id,
                   (unsigned long long)total, (unsigned long long)applied);
    } else {
        cairn_error("cannot make a snapshot to send", "err=\"%s\"", s->build.err);
    }
    while (s->build.waiters) {
        snap_wait_t *w = s->build.waiters;
        s->build.waiters = w->next;
        snap_chunk_reply(s, w->ident, w->ident_len, w->req_id, id, 0, rc, rc ? s->build.err : NULL);
        free(w);
    }
}

static void snap_build_wait(stored_t *s) { snap_build_reap(s, 1); }

/* Leader side. SNAP_REQ snap_id 0: the current file when it holds the state at or past the raft
 * snapshot index asked for (several followers share one), else a new one written on a thread;
 * snap_id != 0: the bytes of that file at the offset (one pread). */
static void handle_snap_req(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    if (m->snap_id != 0) {
        snap_chunk_reply(s, ident, ident_len, m->req_id, m->snap_id, m->offset, 0, NULL);
        return;
    }
    uint64_t id = 0, total = 0, applied = 0;
    if (!s->build.running && cairn_snap_out_current(s->snap_out, &id, &total, &applied) &&
        (applied >= m->snap_index && (m->snap_index || applied == cairn_mvcc_applied_index(s->mvcc)))) {
        snap_chunk_reply(s, ident, ident_len, m->req_id, id, 0, 0, NULL);
        return;
    }
    uint64_t a = cairn_mvcc_applied_index(s->mvcc);
    if (!s->build.running && a == 0) {
        snap_chunk_reply(s, ident, ident_len, m->req_id, 0, 0, CAIRN_ESTATE, "nothing applied yet: no snapshot to make");
        return;
    }
    snap_wait_t *w = calloc(1, sizeof *w);
    if (!w || ident_len > sizeof w->ident) {
        free(w);
        snap_chunk_reply(s, ident, ident_len, m->req_id, 0, 0, CAIRN_ENOMEM, "out of memory");
        return;
    }
    memcpy(w->ident, ident, ident_len);
    w->ident_len = ident_len;
    w->req_id = m->req_id;
    w->next = s->build.waiters;
    s->build.waiters = w;
    if (s->build.running)
        return; /* the build under way is at or past every index this member has compacted to */
    member_path(s, "snap", s->build.dir, sizeof s->build.dir);
    snprintf(s->build.name, sizeof s->build.name, "out-%llu.snap", (unsigned long long)a);
    s->build.id = a;
    s->build.mvcc = s->mvcc;
    s->build.err[0] = 0;
    atomic_store(&s->build.done, 0);
    if (pthread_create(&s->build.thread, NULL, snap_build_main, s) != 0) {
        s->build.rc = CAIRN_ENOMEM;
        snprintf(s->build.err, sizeof s->build.err, "cannot start a thread to write the snapshot");
        atomic_store(&s->build.done, 1);
        s->build.running = 1;
        snap_build_reap(s, 1);
        return;
    }
    s->build.running = 1;
}

/* A record raftd sent could not be buffered for the WAL: the WAL drops the batch and refuses
 * everything from now on (wal.h), nothing more is acknowledged, and stored exits so that its
 * supervisor restarts it; the restart replays what is durable and raftd reloads from it. */
static int persist_failed(stored_t *s, const char *what, int rc)
{
    cairn_error("cannot persist raft state; stopping without acknowledging it", "step=\"%s\" err=\"%s\"", what,
                cairn_strerror(rc));
    s->wal_failed = 1;
    s->have_pending = 0;
    return stop_with(s, rc);
}

static void handle(stored_t *s, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected ipc message", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .code = rc};
        cairn_ipc_set_message(&e, cairn_strerror(rc));
        reply(s, ident, ident_len, &e);
        return;
    }
    switch (m.type) {
    case CAIRN_IPC_LOAD:
        if (ident_len <= sizeof s->raftd_ident) {
            memcpy(s->raftd_ident, ident, ident_len);
            s->raftd_ident_len = ident_len;
        }
        send_load_resp(s, ident, ident_len, m.first, m.seq);
        break;
    case CAIRN_IPC_APPEND:
        if (s->wal_failed)
            break;
        if (m.boot_id != s->boot_id) {
            /* From a raftd that loaded from an earlier instance of us: what it believes we
             * hold may be lost. Ignore it and tell it at once to reload. */
            cairn_ipc_msg_t h = {.type = CAIRN_IPC_HELLO, .boot_id = s->boot_id};
            reply(s, ident, ident_len, &h);
            break;
        }
        if (ident_len <= sizeof s->raftd_ident) {
            memcpy(s->raftd_ident, ident, ident_len);
            s->raftd_ident_len = ident_len;
        }
        if (m.n_entries && m.entries[0].index > cairn_memlog_last(s->log) + 1) {
            /* A raftd that has not yet noticed our restart sends past our log: ignore it; our
             * HELLO makes it reload (LOAD) and resend from what we really hold. */
            cairn_warn("append leaves a gap; ignored until raftd reloads", "first=%llu last=%llu",
                       (unsigned long long)m.entries[0].index, (unsigned long long)cairn_memlog_last(s->log));
            break;
        }
        for (size_t i = 0; i < m.n_entries; i++) {
            const cairn_ipc_entry_t *e = &m.entries[i];
            if (e->index <= cairn_mvcc_applied_index(s->mvcc)) {
                /* Committed and already in the state machine: after a snapshot install whose
                 * state is past the raft snapshot point, raftd replicates S+1..applied again.
                 * Keep them in the in-memory log (raftd reloads it, lagging members are served
                 * from it) but not in the WAL: the state machine holds them durably, and Raft
                 * never rewrites a committed entry. The persisted index moves past them with
                 * the next sync. */
                const cairn_memlog_entry_t *have = cairn_memlog_at(s->log, e->index);
                uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
                if (have && have->term != e->term) {
                    cairn_error("append conflicts with an applied entry; ignored", "index=%llu term=%llu held_term=%llu applied=%llu",
                                (unsigned long long)e->index, (unsigned long long)e->term,
                                (unsigned long long)have->term, (unsigned long long)applied);
                } else if (!have && e->index == cairn_memlog_last(s->log) + 1) {
                    if ((rc = cairn_memlog_append(s->log, e->index, e->term, e->type, e->data, e->len))) {
                        persist_failed(s, "in-memory log append", rc);
                        break;
                    }
                    cairn_debug("applied entry kept in memory only", "index=%llu applied=%llu",
                                (unsigned long long)e->index, (unsigned long long)applied);
                }
                continue;
            }
            cairn_wal_entry_t we = {e->index, e->term, e->type, e->data, e->len};
            if ((rc = cairn_wal_append_entry(s->wal, &we)) || (rc = cairn_memlog_append(s->log, e->index, e->term, e->type, e->data, e->len))) {
                persist_failed(s, "wal entry append", rc);
                break;
            }
            if (e->index <= s->persisted)
                s->persisted = e->index - 1; /* the overwritten suffix is no longer durable */
        }
        int must_sync = m.n_entries > 0;
        if (m.has_hs) {
            /* Raft needs term and vote durable before answering (§5.1, §5.2); the commit index
             * can always be learned again, so a change of commit alone rides along with the
             * next sync instead of costing an fdatasync of its own (etcd's MustSync rule). */
            if (m.term != s->hs.term || m.vote != s->hs.vote)
                must_sync = 1;
            s->hs = (cairn_wal_hardstate_t){m.term, m.vote, m.commit};
            if ((rc = cairn_wal_append_hardstate(s->wal, &s->hs)) != 0)
                persist_failed(s, "wal hard state append", rc);
        }
        if (s->wal_failed)
            break; /* never acknowledged: raftd must not promise what may not be on disk */
        if (!must_sync && !s->have_pending) {
            /* nothing this APPEND carries needs the disk: acknowledge it at once */
            const cairn_memlog_entry_t *le = cairn_memlog_at(s->log, s->persisted);
            cairn_ipc_msg_t a = {.type = CAIRN_IPC_APPENDED, .boot_id = s->boot_id, .seq = m.seq, .index = s->persisted,
                                 .term = le ? le->term : cairn_memlog_snap_term(s->log)};
            reply(s, ident, ident_len, &a);
            break;
        }
        s->pending_seq = m.seq;
        s->have_pending = 1;
        if (m.commit_durable > s->commit_on_persist)
            s->commit_on_persist = m.commit_durable;
        break;
    case CAIRN_IPC_SNAP_REQ:
        handle_snap_req(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_SNAP_RECV:
        handle_snap_recv(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_COMMIT:
        if (m.boot_id != s->boot_id)
            break; /* computed against another instance's log: see cairn_ipc.h "Epochs" */
        if (m.commit > s->commit)
            s->commit = m.commit;
        s->term = m.term;
        s->leader = m.leader;
        break;
    case CAIRN_IPC_RANGE:
        if (m.read_index <= cairn_mvcc_applied_index(s->mvcc)) {
            serve_read(s, ident, ident_len, m.req_id, m.body, m.body_len);
        } else {
            read_t *r = calloc(1, sizeof *r);
            if (!r || ident_len > sizeof r->ident || (m.body_len && !(r->body = malloc(m.body_len)))) {
                free(r);
                reply_error(s, ident, ident_len, m.req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
                break;
            }
            memcpy(r->ident, ident, ident_len);
            r->ident_len = ident_len;
            r->req_id = m.req_id;
            r->read_index = m.read_index;
            if (m.body_len)
                memcpy(r->body, m.body, m.body_len);
            r->body_len = m.body_len;
            *s->reads_tail = r;
            s->reads_tail = &r->next;
        }
        break;
    case CAIRN_IPC_STATUS: {
        int64_t size = cairn_mvcc_db_size(s->mvcc);
        cairn_ipc_msg_t r = {.type = CAIRN_IPC_STATUS_RESP, .req_id = m.req_id, .leader = s->leader, .term = s->term,
                             .index = s->persisted, .applied = cairn_mvcc_applied_index(s->mvcc),
                             .db_size = size > 0 ? (uint64_t)size : 0, .db_size_in_use = size > 0 ? (uint64_t)size : 0,
                             .revision = cairn_mvcc_revision(s->mvcc),
                             .compact_rev = cairn_mvcc_compact_revision(s->mvcc),
                             .cluster_id = hdr_ctx(s).cluster_id};
        const cairn_member_t *self = cairn_members_find(&s->members, cairn_config_member_id(s->cfg));
        r.learner = self && self->learner;
        reply(s, ident, ident_len, &r);
        break;
    }
    default: {
        cairn_warn("unexpected ipc message", "type=%s", cairn_ipc_type_name(m.type));
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .req_id = m.req_id, .code = CAIRN_EUNKNOWN_MSG};
        cairn_ipc_set_message(&e, "stored does not handle this message type");
        reply(s, ident, ident_len, &e);
    }
    }
    cairn_ipc_msg_release(&m);
}

static int sync_wal(stored_t *s)
{
    if (!s->have_pending || s->wal_failed)
        return 0;
    int rc = cairn_wal_sync(s->wal);
    if (rc) {
        /* After a failed fsync the page cache state is unknown (fsyncgate): refuse to go on
         * rather than acknowledge anything; the supervisor restarts us and the WAL replays. */
        cairn_error("wal sync failed; stopping", "err=\"%s\"", cairn_strerror(rc));
        s->wal_failed = 1;
        return stop_with(s, rc);
    }
    s->have_pending = 0;
    s->persisted = cairn_memlog_last(s->log);
    if (s->commit_on_persist) {
        uint64_t c = s->commit_on_persist < s->persisted ? s->commit_on_persist : s->persisted;
        if (c > s->commit)
            s->commit = c;
    }
    const cairn_memlog_entry_t *last = cairn_memlog_at(s->log, s->persisted);
    cairn_ipc_msg_t a = {.type = CAIRN_IPC_APPENDED, .boot_id = s->boot_id, .seq = s->pending_seq,
                         .index = s->persisted,
                         .term = last ? last->term : cairn_memlog_snap_term(s->log)};
    if (s->raftd_ident_len)
        reply(s, s->raftd_ident, s->raftd_ident_len, &a);
    return 0;
}

static int on_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    stored_t *s = ctx;
    handle(s, ident, ident_len, frame, len);
    /* stop draining on a fatal error (nothing more is acknowledged); bound the group-commit batch */
    return s->fatal || (s->have_pending && cairn_wal_pending_bytes(s->wal) > (8u << 20));
}

int main(int argc, char **argv)
{
    stored_t S = {0}, *s = &S;
    char err[512];
    int exit_code = 1;
    int rc;
    s->cfg = cairn_daemon_init("stored", argc, argv, on_signal, &exit_code);
    if (!s->cfg)
        return exit_code;
    exit_code = 1;
    s->boot_id = cairn_random_u64();
    s->reads_tail = &s->reads;
    if (!(s->log = cairn_memlog_new())) {
        cairn_error("out of memory", NULL);
        goto out;
    }
    s->origin_prefix_len = (size_t)snprintf(s->origin_prefix, sizeof s->origin_prefix, "%016llx/",
                                            (unsigned long long)cairn_config_member_id(s->cfg));

    char path[4096];
    snprintf(path, sizeof path, "%s/member/mvcc", s->cfg->data_dir);
    char member_dir[4096];
    snprintf(member_dir, sizeof member_dir, "%s/member", s->cfg->data_dir);
    mkdir(member_dir, 0700);
    s->mvcc = cairn_mvcc_open(path, &rc, err, sizeof err);
    if (!s->mvcc) {
        cairn_error("cannot open mvcc store", "path=%s err=\"%s\"", path, err);
        goto out;
    }
    if ((rc = load_members(s)) != 0) {
        cairn_error("cannot read the cluster membership", "path=%s err=\"%s\"", path, cairn_strerror(rc));
        goto out;
    }
    char waldir[4096];
    if (s->cfg->wal_dir && *s->cfg->wal_dir)
        snprintf(waldir, sizeof waldir, "%s", s->cfg->wal_dir);
    else
        snprintf(waldir, sizeof waldir, "%s/member/wal", s->cfg->data_dir);
    cairn_wal_opts_t wopts = {0};
    /* Tests make segments small to exercise rollover and release; 64 MiB otherwise. */
    const char *segenv = getenv("CAIRN_WAL_SEGMENT_BYTES");
    if (segenv && atoll(segenv) >= 4096)
        wopts.segment_bytes = (size_t)atoll(segenv);
    const char *tf = getenv("CAIRN_TEST_FAULTS");
    if (tf && strcmp(tf, "1") == 0) {
        snprintf(g_fault_alloc_path, sizeof g_fault_alloc_path, "%s/fault-wal-alloc", s->cfg->run_dir);
        wopts.realloc_fn = fault_realloc;
        cairn_warn("test fault switch enabled", "file=%s", g_fault_alloc_path);
    }
    cairn_wal_replay_t cb = {on_replay_entry, on_replay_hs, s, on_replay_snapshot};
    int64_t replay_t0 = cairn_now_ms();
    s->replaying = 1;
    s->wal = cairn_wal_open(waldir, &wopts, &cb, &rc, err, sizeof err);
    s->replaying = 0;
    int64_t replay_ms = cairn_now_ms() - replay_t0;
    if (!s->wal) {
        cairn_error("cannot open wal; refusing to start", "dir=%s err=\"%s\"", waldir, err);
        goto out;
    }
    if (snap_recover(s, err, sizeof err) != 0) {
        cairn_error("cannot recover the snapshot state; refusing to start", "err=\"%s\"", err);
        goto out;
    }
    /* Everything replayed from the WAL is durable; the commit index we know durably is the
     * one in the last hard state. Apply up to it now so reads after a restart see every
     * write acknowledged before it (the rest is applied when raftd reports commit). */
    s->commit = s->hs.commit;
    s->term = s->hs.term;
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc), applied_term = cairn_mvcc_applied_term(s->mvcc);
    cairn_memlog_t *l = s->log;
    if (cairn_memlog_count(l) && cairn_memlog_first(l) > applied + 1) {
        cairn_error("wal does not reach back to the applied index", "first=%llu applied=%llu",
                    (unsigned long long)cairn_memlog_first(l), (unsigned long long)applied);
        goto out;
    }
    if (cairn_memlog_last(l) < applied && cairn_memlog_count(l)) {
        /* The WAL lost a tail the state machine already holds (a torn tail cut by hand or by
         * a disk that lied): the log now starts after the applied index. */
        cairn_warn("wal ends before the applied index; continuing from the state machine", "last=%llu applied=%llu",
                   (unsigned long long)cairn_memlog_last(l), (unsigned long long)applied);
        cairn_memlog_truncate_from(l, 0);
    }
    if (cairn_memlog_count(l) == 0) {
        cairn_memlog_set_snap(l, applied, applied_term);
    } else if (cairn_memlog_first(l) > 1 &&
               !(cairn_memlog_snap_term(l) && cairn_memlog_first(l) == cairn_memlog_snap_index(l) + 1)) {
        /* Released segments: the log's predecessor is not in the WAL (no SNAPSHOT record
         * names it), so its term is unknown; the first entry we do hold becomes the starting
         * point instead (it is applied: segments are released only below the durable
         * applied index). */
        if (cairn_memlog_first(l) == applied + 1) {
            /* ... unless the state machine ends right before it (entries kept in memory only
             * after a snapshot install, see the APPEND case): its term is the applied term */
            cairn_memlog_set_snap(l, applied, applied_term);
        } else {
            const cairn_memlog_entry_t *e0 = cairn_memlog_nth(l, 0);
            cairn_memlog_start_after(l, e0->index, e0->term);
        }
    }
    s->persisted = cairn_memlog_last(s->log);
    cairn_info("wal replayed",
               "entries=%llu ms=%lld entries_per_sec=%.0f in_memory=%zu memory_bytes=%llu last_index=%llu "
               "applied=%llu commit=%llu revision=%lld",
               (unsigned long long)s->replayed, (long long)replay_ms,
               replay_ms > 0 ? (double)s->replayed * 1000.0 / (double)replay_ms : (double)s->replayed,
               cairn_memlog_count(s->log), (unsigned long long)cairn_memlog_bytes(s->log),
               (unsigned long long)cairn_memlog_last(s->log),
               (unsigned long long)cairn_mvcc_applied_index(s->mvcc), (unsigned long long)s->commit,
               (long long)cairn_mvcc_revision(s->mvcc));
    if (apply_committed(s) < 0)
        goto out;

    char ep[512];
    if (cairn_config_ipc_endpoint(s->cfg, "stored", ep, sizeof ep) < 0) {
        cairn_error("ipc endpoint path too long", "run_dir=%s", s->cfg->run_dir);
        goto out;
    }
    s->router = cairn_zmq_router_bind(ep, &rc);
    if (!s->router) {
        cairn_error("cannot bind", "endpoint=%s err=\"%s\"", ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    cairn_info("stored ready", "endpoint=%s member_id=%016llx", ep, (unsigned long long)cairn_config_member_id(s->cfg));
    cairn_daemon_notify_ready("stored ready");

    /* raftd learns our boot id from HELLO (sent every second, and dropped while raftd is not
     * connected): a raftd that sees a new boot id knows we restarted and reloads its state. */
    int64_t next_hello = 0, started_at = cairn_now_ms();
    while (!g_stop && !s->fatal) {
        int64_t now = cairn_now_ms();
        if (now >= next_hello) {
            cairn_ipc_msg_t h = {.type = CAIRN_IPC_HELLO, .boot_id = s->boot_id};
            cairn_zmq_send(s->router, "raftd", 5, &h);
            /* every 100 ms while young: raftd's socket reconnects within that and must learn
             * of the restart before it proposes into a log we no longer hold */
            next_hello = now + (now - started_at < 3000 ? 100 : 1000);
            cairn_snap_out_expire(s->snap_out, now, SNAP_OUT_IDLE_MS);
        }
        zmq_pollitem_t item = {zsock_resolve(s->router), 0, ZMQ_POLLIN, 0};
        snap_build_reap(s, 0);
        snap_install_reap(s, 0);
        int timeout = s->reads || s->build.running || s->inst.running ? 10 : 500;
        if (zmq_poll(&item, 1, timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /* 1. drain */
        if (item.revents & ZMQ_POLLIN)
            cairn_zmq_drain(s->router, 1, 100000, on_frame, s);
        if (s->fatal)
            break;
        /* 2. one fdatasync for everything drained */
        if (sync_wal(s) < 0)
            break;
        /* 3. apply */
        if (apply_committed(s) < 0)
            break;
        /* 4. reads */
        if (s->reads)
            serve_ready_reads(s);
    }
    cairn_info("stored stopping", "applied=%llu", (unsigned long long)cairn_mvcc_applied_index(s->mvcc));
    cairn_daemon_notify_stopping();
    exit_code = s->fatal ? 1 : 0;
out:
    zsock_destroy(&s->router);
    snap_install_reap(s, 1);
    snap_build_wait(s); /* before the store it reads is closed */
    cairn_wal_destroy(&s->wal);
    cairn_mvcc_destroy(&s->mvcc);
    cairn_snap_in_destroy(&s->snap_in);
    cairn_snap_out_destroy(&s->snap_out);
    cairn_memlog_destroy(&s->log);
    while (s->reads) {
        read_t *r = s->reads;
        s->reads = r->next;
        free(r->body);
        free(r);
    }
    free(s->outs);
    cairn_members_clear(&s->members);
    cairn_config_destroy(&s->cfg);
    return exit_code;
}
