/* replay.c - stored's start-up (stored.h): the store, the WAL replay, the log's starting point.
 *
 * The WAL since the last checkpoint is read back into the in-memory log (applying committed
 * entries on the way when the log outgrows its bounds), an interrupted snapshot install is
 * finished (snapxfer.c), and the log is reconciled with the state machine's applied index.
 * The WAL's records are wal.c's format.
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

/* Test-only fault switch (CAIRN_TEST_FAULTS=1): while <run-dir>/fault-wal-alloc exists, the
 * WAL's batch buffer cannot grow (an allocation failure on the persistence path). */
static char g_fault_alloc_path[4096];
static void *fault_realloc(void *p, size_t n)
{
    if (g_fault_alloc_path[0] && access(g_fault_alloc_path, F_OK) == 0)
        return NULL;
    return realloc(p, n);
}

/* Test-only fault switch (CAIRN_TEST_FAULTS=1): while <run-dir>/fault-wal-enospc exists, the
 * WAL's writes (pwrite, fallocate, fdatasync) fail with ENOSPC: a full disk met by the WAL
 * first, which a real filesystem only gives by chance (LevelDB usually meets it first). */
static char g_fault_enospc_path[4096];
static const cairn_fileops_t *g_fault_base;
static int fault_full(void) { return g_fault_enospc_path[0] && access(g_fault_enospc_path, F_OK) == 0; }
static int ff_open(void *c, const char *p, int f, int m) { return g_fault_base->open(g_fault_base->ctx, p, f, m); }
static int ff_close(void *c, int fd) { return g_fault_base->close(g_fault_base->ctx, fd); }
static ssize_t ff_pread(void *c, int fd, void *b, size_t n, uint64_t o)
{
    return g_fault_base->pread(g_fault_base->ctx, fd, b, n, o);
}
static ssize_t ff_pwrite(void *c, int fd, const void *b, size_t n, uint64_t o)
{
    return fault_full() ? -ENOSPC : g_fault_base->pwrite(g_fault_base->ctx, fd, b, n, o);
}
static int ff_fdatasync(void *c, int fd) { return fault_full() ? -ENOSPC : g_fault_base->fdatasync(g_fault_base->ctx, fd); }
static int ff_fsync(void *c, int fd) { return g_fault_base->fsync(g_fault_base->ctx, fd); }
static int ff_fsync_dir(void *c, const char *p) { return g_fault_base->fsync_dir(g_fault_base->ctx, p); }
static int ff_ftruncate(void *c, int fd, uint64_t l) { return g_fault_base->ftruncate(g_fault_base->ctx, fd, l); }
static int ff_fallocate(void *c, int fd, uint64_t o, uint64_t l)
{
    return fault_full() ? -ENOSPC : g_fault_base->fallocate(g_fault_base->ctx, fd, o, l);
}
static int ff_size(void *c, int fd, uint64_t *sz) { return g_fault_base->size(g_fault_base->ctx, fd, sz); }
static int ff_unlink(void *c, const char *p) { return g_fault_base->unlink(g_fault_base->ctx, p); }
static int ff_rename(void *c, const char *a, const char *b) { return g_fault_base->rename(g_fault_base->ctx, a, b); }
static int ff_mkdir(void *c, const char *p, int m) { return g_fault_base->mkdir(g_fault_base->ctx, p, m); }
static int ff_list(void *c, const char *d, cairn_fileops_list_fn fn, void *a)
{
    return g_fault_base->list(g_fault_base->ctx, d, fn, a);
}
static int ff_exchange(void *c, const char *a, const char *b)
{
    return g_fault_base->exchange ? g_fault_base->exchange(g_fault_base->ctx, a, b) : -ENOSYS;
}
static const cairn_fileops_t g_fault_ops = {NULL,        ff_open,      ff_close, ff_pread, ff_pwrite,
                                            ff_fdatasync, ff_fsync,    ff_fsync_dir, ff_ftruncate, ff_fallocate,
                                            ff_size,     ff_unlink,    ff_rename, ff_mkdir, ff_list,
                                            ff_exchange};

/* Replay streams: the WAL since the last checkpoint can hold far more than memory should
 * (100,000 entries of 1 MiB), so once the log outgrows its bounds, the entries the replayed
 * hard state already commits are applied on the spot and stored_log_trim drops what it may. Only
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
        stored_log_trim(s); /* entries the state machine already holds (the common case after a crash) */
        return 0;
    }
    s->commit = s->hs.commit;
    s->persisted = cairn_memlog_last(s->log);
    return stored_apply_committed(s);
}

static int on_replay_hs(void *ctx, const cairn_wal_hardstate_t *hs)
{
    ((stored_t *)ctx)->hs = *hs;
    return 0;
}

/* Raft's rule for installing a snapshot at (S, T) (memlog.h): used by the install and by WAL
 * replay of a SNAPSHOT record, so that a restart rebuilds exactly the log the install left. */
void stored_log_reset_to_snapshot(stored_t *s, uint64_t S, uint64_t T)
{
    uint64_t A = s->mvcc ? cairn_mvcc_applied_index(s->mvcc) : 0;
    cairn_memlog_reset_to_snapshot(s->log, S, T, A, A ? cairn_mvcc_applied_term(s->mvcc) : 0);
}

static int on_replay_snapshot(void *ctx, uint64_t index, uint64_t term)
{
    stored_log_reset_to_snapshot(ctx, index, term);
    return 0;
}

/* Opens the store (and the membership it records), opens the WAL replaying it into the
 * in-memory log, finishes an interrupted snapshot install, and sets the log's starting point
 * and the indexes. 0, or -1 with the reason logged. */
int stored_start(stored_t *s)
{
    char err[512];
    int rc;
    char path[4096];
    snprintf(path, sizeof path, "%s/member/mvcc", s->cfg->data_dir);
    char member_dir[4096];
    snprintf(member_dir, sizeof member_dir, "%s/member", s->cfg->data_dir);
    mkdir(member_dir, 0700);
    s->mvcc = cairn_mvcc_open(path, &rc, err, sizeof err);
    if (!s->mvcc) {
        cairn_error("cannot open mvcc store", "path=%s err=\"%s\"", path, err);
        return -1;
    }
    if ((rc = stored_load_members(s)) != 0) {
        cairn_error("cannot read the cluster membership", "path=%s err=\"%s\"", path, cairn_strerror(rc));
        return -1;
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
        snprintf(g_fault_enospc_path, sizeof g_fault_enospc_path, "%s/fault-wal-enospc", s->cfg->run_dir);
        g_fault_base = cairn_fileops_default();
        wopts.ops = &g_fault_ops;
        cairn_warn("test fault switch enabled", "file=%s file=%s", g_fault_alloc_path, g_fault_enospc_path);
    }
    cairn_wal_replay_t cb = {on_replay_entry, on_replay_hs, s, on_replay_snapshot};
    int64_t replay_t0 = cairn_now_ms();
    s->replaying = 1;
    s->wal = cairn_wal_open(waldir, &wopts, &cb, &rc, err, sizeof err);
    s->replaying = 0;
    int64_t replay_ms = cairn_now_ms() - replay_t0;
    if (!s->wal) {
        cairn_error("cannot open wal; refusing to start", "dir=%s err=\"%s\"", waldir, err);
        return -1;
    }
    if (stored_snap_recover(s, err, sizeof err) != 0) {
        cairn_error("cannot recover the snapshot state; refusing to start", "err=\"%s\"", err);
        return -1;
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
        return -1;
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
    return 0;
}
