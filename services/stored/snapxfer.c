/* snapxfer.c - snapshot transfer and install in stored (stored.h).
 *
 * The leader side makes a snapshot file on a thread and serves it in chunks (SNAP_REQ ->
 * SNAP_CHUNK); the follower side receives chunks (SNAP_RECV -> SNAP_ACK), restores the file
 * into a new store on a thread and swaps it in with the WAL's SNAPSHOT record as the commit
 * point. The IPC contract and the crash-safe install steps are described below; the file
 * format is snapshot.c's.
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
 *   f. the in-memory log is reset by Raft's rule (stored_log_reset_to_snapshot).
 * A crash before d leaves the old state (leftover mvcc.new / in.tmp are removed at start);
 * after d, start-up (stored_snap_recover) sees a SNAPSHOT record above the store's applied index and
 * redoes c and e from snap/<S>-<T>.snap.
 *
 * The state installed may be past S (the leader snapshots its current state, at or past its
 * compaction point): entries S+1..applied then arrive in APPENDs and are kept in memory only
 * (see the APPEND case). */


#define SNAP_CHUNK_BYTES ((size_t)1 << 20)


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

/* e: member/mvcc.new (complete, synced) becomes member/mvcc. */
static void snap_swap_in(stored_t *s)
{
    char member[4096], path[4096], newp[4096], err[512] = "";
    member_path(s, "", member, sizeof member);
    member_path(s, "mvcc", path, sizeof path);
    member_path(s, "mvcc.new", newp, sizeof newp);
    stored_snap_build_wait(s); /* a snapshot being written reads the store we are about to close */
    stored_defrag_reap(s, 1);  /* so does a defragmentation */
    int64_t old_rev = cairn_mvcc_revision(s->mvcc);
    cairn_mvcc_destroy(&s->mvcc);
    if (cairn_snap_swap_dirs(member, "mvcc", "mvcc.new", err, sizeof err))
        snap_fatal("swap", err);
    int rc;
    s->mvcc = cairn_mvcc_open(path, &rc, err, sizeof err);
    if (!s->mvcc)
        snap_fatal("open the new store", err);
    /* the gateways learn of the revision jump from the announcement below and read the
     * difference from history, or cancel their watchers with compact_revision (svc_watch.c) */
    stored_events_attach(s);
    cairn_events_announce(s->events, old_rev + 1, cairn_mvcc_revision(s->mvcc));
    cairn_snap_rmtree(newp);
    /* the membership now is the snapshot's */
    cairn_members_clear(&s->members);
    if ((rc = stored_load_members(s)) != 0)
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
    if (stored_sync_wal(s) < 0 || s->wal_failed) {
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
        stored_stop_with(s, rc);
        cairn_errbuf_set(eb, el, "writing the snapshot record to the WAL failed: %s", cairn_strerror(rc));
        cairn_error("wal sync failed during snapshot install; stopping", "err=\"%s\"", cairn_strerror(rc));
        return rc;
    }
    /* e */
    if (!keep_ours)
        snap_swap_in(s);
    /* f */
    stored_log_reset_to_snapshot(s, S, T);
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
int stored_snap_recover(stored_t *s, char *eb, size_t el)
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
    stored_reply(s, ident, ident_len, &a);
}

void stored_snap_recv(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
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
        /* c on a thread; stored_snap_install_reap does the rest and answers */
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
void stored_snap_install_reap(stored_t *s, int block)
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
    stored_reply(s, ident, ident_len, &r);
    free(buf);
}

static void *snap_build_main(void *arg)
{
    stored_t *s = arg;
    double t0 = stored_clock_s();
    s->build.rc = cairn_snap_save(s->build.mvcc, s->build.dir, s->build.name, NULL, s->build.err, sizeof s->build.err);
    s->build.seconds = stored_clock_s() - t0; /* read by the loop after the join */
    atomic_store(&s->build.done, 1);
    return NULL;
}

/* The loop's side of a finished build: adopt the file, answer everyone who waited. */
void stored_snap_build_reap(stored_t *s, int block)
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
        stored_metrics_observe(s, STORED_M_BACKEND_SNAPSHOT, s->build.seconds);
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

void stored_snap_build_wait(stored_t *s) { stored_snap_build_reap(s, 1); }


/* Leader side. SNAP_REQ snap_id 0: the current file when it holds the state at or past the raft
 * snapshot index asked for (several followers share one), else a new one written on a thread;
 * snap_id != 0: the bytes of that file at the offset (one pread). */
void stored_snap_req(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
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
        stored_snap_build_reap(s, 1);
        return;
    }
    s->build.running = 1;
}
