/* stored.c - the steps of stored's loop that its other files share (stored.h).
 *
 * Replies to raftd and the gateways, the WAL's group-commit sync and its APPENDED ack, and
 * apply: committed entries go to the MVCC store in one LevelDB write per batch with the
 * applied index in the same write, results go back to the gateway that proposed each entry,
 * and every --snapshot-count entries a checkpoint releases WAL segments. No format of its
 * own: the records are wal.c's and mvcc.c's.
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
#include "stored.h"
#include "wal.h"

/* Applied entries beyond what members that lag may need go (memlog.h has the rule). */
void stored_log_trim(stored_t *s)
{
    cairn_memlog_trim(s->log, cairn_mvcc_applied_index(s->mvcc), cairn_config_log_keep_entries(s->cfg),
                      s->cfg->raft_log_memory_bytes);
}

/* An error stored cannot go on after: it is returned up to the loop, which ends, and the
 * supervisor restarts us; the restart replays the WAL from what is durable. The first one is
 * kept. g_stop is the signal handler's alone. A failing disk (WAL sync, LevelDB write) is not
 * one of these: main.c refuses writes and recovers in place. */
int stored_stop_with(stored_t *s, int rc)
{
    if (!s->fatal)
        s->fatal = rc < 0 ? rc : CAIRN_EIO;
    return s->fatal;
}

void stored_reply(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    /* Entries replayed at start are applied before the socket exists: whoever proposed
     * them gave up with the crash, so there is no one to answer. */
    if (!s->router)
        return;
    /* An answer to a gateway that has not connected yet (it started while we did) is kept
     * until it does; raftd's messages are not (a raftd that reconnects is a new one, which
     * resynchronises from scratch and must not see its predecessor's acks). */
    int to_raftd = ident_len == s->raftd_ident_len && memcmp(ident, s->raftd_ident, ident_len) == 0;
    int rc = to_raftd ? cairn_zmq_send(s->router, ident, ident_len, m)
                      : cairn_zmq_send_or_keep(s->outbox, s->router, ident, ident_len, m);
    if (rc)
        cairn_debug("reply dropped", "type=%s err=\"%s\"", cairn_ipc_type_name(m->type), cairn_strerror(rc));
}

/* A body above one chunk (a Range over a large store) goes as RESULT_PARTs and a final RESULT
 * (cairn_ipc.h): no frame grows with the answer. */
void stored_reply_result(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, int code,
                         const char *message, const uint8_t *body, size_t body_len)
{
    size_t total = body_len, off = 0;
    while (body_len > CAIRN_IPC_RESULT_CHUNK) {
        cairn_ipc_msg_t part = {.type = CAIRN_IPC_RESULT_PART, .req_id = req_id, .offset = off, .total = total,
                                .body = body, .body_len = CAIRN_IPC_RESULT_CHUNK};
        stored_reply(s, ident, ident_len, &part);
        body += CAIRN_IPC_RESULT_CHUNK;
        body_len -= CAIRN_IPC_RESULT_CHUNK;
        off += CAIRN_IPC_RESULT_CHUNK;
    }
    cairn_ipc_msg_t r = {.type = CAIRN_IPC_RESULT, .req_id = req_id, .code = code, .body = body, .body_len = body_len};
    cairn_ipc_set_message(&r, message);
    stored_reply(s, ident, ident_len, &r);
}

cairn_hdr_ctx_t stored_hdr_ctx(stored_t *s)
{
    cairn_hdr_ctx_t h = {s->members.cluster_id ? s->members.cluster_id : cairn_config_cluster_id(s->cfg),
                         cairn_config_member_id(s->cfg), s->term};
    return h;
}

void stored_reply_error(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, cairn_etcd_err_t e)
{
    stored_reply_result(s, ident, ident_len, req_id, cairn_etcd_err_code(e), cairn_etcd_err_text(e), NULL, 0);
}

/* Every --snapshot-count applied entries: make the state machine durable (one synced
 * LevelDB write) and release the WAL segments it covers, keeping snapshot-count entries
 * behind the applied index for members that lag (and for raftd's reload). This bounds the
 * WAL on disk the way etcd's snapshot + WAL purge does. */
static void checkpoint(stored_t *s)
{
    if (s->replaying)
        return; /* segments are being read; the first checkpoint after the start catches up */
    /* Not while a Defragment runs: cairn_mvcc_sync's memtable flush is a LevelDB CompactRange,
     * which queues behind the defrag's manual compaction of a whole level - this loop (every
     * write's apply) would stop for seconds. The next apply after the defrag checkpoints; the
     * WAL keeps its segments meanwhile. */
    if (s->defrag.running)
        return;
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
int stored_load_members(stored_t *s)
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

/* The batch being applied did not reach LevelDB (or LevelDB failed right after it): nothing of
 * it may show. Its results may have gone out already; that is right, they are committed and
 * durable in the WAL, and the same results are computed again when the entries are applied
 * after the store is reopened (a gateway drops an answer it no longer waits for). What the
 * batch buffered for others (events, lease changes for raftd) is dropped: it is produced
 * again then. Returns CAIRN_EIO; fatal only when the disk is not the cause. */
static int apply_failed(stored_t *s, const char *what, int fatal)
{
    cairn_mvcc_batch_abort(s->mvcc);
    cairn_events_discard(s->events);
    s->lease_n = 0;
    if (fatal) {
        cairn_error("apply failed; exiting so the WAL is replayed", "step=\"%s\"", what);
        return stored_stop_with(s, CAIRN_EIO);
    }
    cairn_error("apply failed; writes stop until the store is reopened", "step=\"%s\"", what);
    return CAIRN_EIO;
}

int stored_apply_committed(stored_t *s)
{
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    uint64_t upto = s->commit < s->persisted ? s->commit : s->persisted;
    if (applied >= upto)
        return 0;
    /* Results are computed per entry and sent once the batch is written to LevelDB, its events
     * published and raftd told of its leases (below): a client that acts on an answer - a watch
     * "from now", a keepalive of the lease it was just granted - then finds the gateway and
     * raftd already past it. The batch's LevelDB write (unsynced: the WAL is the durable copy)
     * is on each write's latency for that. Linearizable reads wait for the applied index, which
     * moves only when the batch is written, so no read can miss an answered write. */
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
                failed = 2;
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
            cairn_hdr_ctx_t h = stored_hdr_ctx(s);
            h.raft_term = e->term;
            uint8_t *resp = NULL;
            size_t resp_len = 0;
            cairn_apply_err_t err = {0};
            double ta = stored_clock_s();
            int rc = cairn_apply_request(s->mvcc, e->index, e->term, (int)req.kind, req.body, req.body_len, &h, &resp,
                                         &resp_len, &err);
            ta = stored_clock_s() - ta;
            if (ta > 0.1) { /* etcd's warnApplyDuration: 100 ms */
                stored_metrics_inc(s, STORED_M_SLOW_APPLY);
                cairn_warn("apply request took too long", "took_ms=%.1f expected_duration_ms=100 index=%llu kind=%d",
                           ta * 1000, (unsigned long long)e->index, (int)req.kind);
            }
            if (rc < 0) {
                free(resp);
                failed = 1;
                break;
            }
            if (err.grpc_code == 0 && (req.kind == CAIRN_REQ_LEASE_GRANT || req.kind == CAIRN_REQ_LEASE_REVOKE))
                stored_lease_applied(s, (int)req.kind, req.body, req.body_len);
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
            /* A storage failure mid-batch: nothing of the batch reached LevelDB. Not fatal: the
             * loop stops applying, serves reads from the committed state, and reopens the store
             * once the disk can take writes (main.c, "a full disk"); the entries are still in
             * the log (durable in the WAL) and are applied then. A missing entry (failed == 2)
             * is no disk's fault: stop, and let the restart replay the WAL. */
            for (size_t k = 0; k < nout; k++)
                free(outs[k].body);
            return apply_failed(s, failed == 2 ? "committed entry missing from the log" : "apply", failed == 2);
        }
        double t0 = stored_clock_s();
        int commit_rc = cairn_mvcc_batch_commit(s->mvcc);
        if (commit_rc >= 0) {
            stored_metrics_observe(s, STORED_M_BACKEND_COMMIT, stored_clock_s() - t0);
            /* only now, with the batch written: a watcher never sees a change that could be lost */
            cairn_events_publish(s->events);
            /* raftd's lessor learns of granted and revoked leases before any client does: a
             * client's first keepalive follows the LeaseGrant answer at once, and reaching raftd
             * before LEASE_APPLIED it was answered TTL 0 - "session expired" for etcdctl elect
             * (test_lock_election, now and then under the sanitizer build) */
            stored_lease_flush(s);
        }
        /* The answers after the events: a gateway then has the frame of a write's revision
         * before (or with) the write's answer, so a watch its client creates "from now" right
         * after the answer starts after that revision, as etcd's does (test_json_streams saw
         * the created header one revision behind etcd's, and such a watcher would have been sent
         * the client's own write). Answered even when the batch could not be written: the
         * entries are committed and durable in the WAL, and are applied again on recovery. */
        for (size_t k = 0; k < nout; k++) {
            out_t *o = &outs[k];
            stored_reply_result(s, o->ident, o->ident_len, o->req_id, o->code, o->code ? o->message : NULL, o->body,
                         o->body_len);
            free(o->body);
        }
        if (commit_rc < 0)
            return apply_failed(s, "mvcc batch commit", 0);
        applied = cairn_mvcc_applied_index(s->mvcc);
    }
    stored_log_trim(s);
    checkpoint(s);
    return 0;
}

int stored_sync_wal(stored_t *s)
{
    if (!s->have_pending || s->wal_failed)
        return 0;
    /* timed around the whole group-commit sync (the buffered records' write and their one
     * fdatasync, wal.c does both): the fdatasync is what costs */
    double t0 = stored_clock_s();
    int rc = cairn_wal_sync(s->wal);
    if (rc == 0) {
        double took = stored_clock_s() - t0;
        stored_metrics_observe(s, STORED_M_WAL_FSYNC, took);
        if (took > 1.0) /* etcd's warnSyncDuration */
            cairn_warn("slow fdatasync", "took_ms=%.0f expected_duration_ms=1000", took * 1000);
    }
    if (rc) {
        /* Nothing of the batch is acknowledged, ever: the WAL dropped it (wal.h), and the loop
         * forgets its entries and refuses writes until the WAL recovers (main.c, "a full
         * disk"). Not fatal: a full disk must not take the reads down with it. */
        s->wal_failed = 1;
        s->have_pending = 0;
        return rc;
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
        stored_reply(s, s->raftd_ident, s->raftd_ident_len, &a);
    return 0;
}

void stored_events_attach(stored_t *s)
{
    if (s->events && s->mvcc)
        cairn_mvcc_set_event_fn(s->mvcc, cairn_events_observe, s->events);
    cairn_events_discard(s->events); /* nothing buffered belongs to this store */
}
