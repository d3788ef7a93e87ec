/* snapstream.c - the files behind Maintenance/Snapshot (CAIRN_MAINT_SNAPSHOT*, cairn_ipc.h).
 *
 * A gateway asks for a snapshot; stored writes the member's committed state as an etcd 3.4
 * backend file (mvcc_etcd.c) on a thread of its own, through one LevelDB snapshot, so writes
 * and reads go on meanwhile; the gateway then pulls it in CAIRN_MAINT_SNAP_CHUNK pieces, one
 * at a time, as fast as its client takes them - a client that stops reading costs a file on
 * disk, not memory anywhere.
 *
 * A snapshot the disk has no room for is refused up front (RESOURCE_EXHAUSTED, saying how much is
 * needed): filling the disk would stop the member's writes.
 *
 * The file is unlinked as soon as it is created (<data-dir>/member/snap/stream-<id>.db): it
 * lives only as the open descriptor, so a crash or a restart never leaves one behind, and its
 * space returns when the descriptor is closed. It is closed when the gateway says it is done
 * (SNAPSHOT_CLOSE), when it was not read for STREAM_IDLE_MS (a gateway that died or a
 * client that stalled), or at exit.
 *
 * Answers are RESULT messages: SNAPSHOT's body is snap_id u64 | total u64 | revision i64
 * (big-endian, 24 bytes), SNAPSHOT_READ's body is the file's bytes at the offset asked.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cairn_log.h"
#include "cairn_zmq.h"
#include "mvcc_etcd.h"
#include "stored.h"

#define STREAM_SLOTS 4
#define STREAM_IDLE_MS (2 * 60 * 1000)

typedef struct {
    int used; /* 1 building, 2 ready */
    uint64_t id;
    int fd;
    pthread_t thread;
    atomic_int done;
    int rc;
    char err[512];
    uint64_t total;
    cairn_mvcc_point_t pt;
    cairn_mvcc_t *mvcc;
    double started;
    int64_t last_ms;
    uint8_t ident[256]; /* who asked: answered when the file is made */
    size_t ident_len;
    uint64_t req_id;
} slot_t;

struct stored_snapstream {
    slot_t slot[STREAM_SLOTS];
    uint64_t next_id;
};

static void *export_main(void *arg)
{
    slot_t *sl = arg;
    sl->rc = cairn_mvcc_etcd_export(sl->mvcc, sl->fd, &sl->total, &sl->pt, sl->err, sizeof sl->err);
    atomic_store(&sl->done, 1);
    return NULL;
}

static void slot_free(slot_t *sl)
{
    if (sl->fd >= 0)
        close(sl->fd);
    sl->fd = -1;
    sl->used = 0;
}

static slot_t *find(stored_snapstream_t *ss, uint64_t id)
{
    for (int i = 0; ss && i < STREAM_SLOTS; i++)
        if (ss->slot[i].used && ss->slot[i].id == id)
            return &ss->slot[i];
    return NULL;
}

static void be64w(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void start(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id)
{
    if (!s->snapstream) {
        s->snapstream = calloc(1, sizeof *s->snapstream);
        if (!s->snapstream) {
            stored_reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
            return;
        }
        for (int i = 0; i < STREAM_SLOTS; i++)
            s->snapstream->slot[i].fd = -1;
    }
    stored_snapstream_t *ss = s->snapstream;
    slot_t *sl = NULL;
    for (int i = 0; i < STREAM_SLOTS && !sl; i++)
        if (!ss->slot[i].used)
            sl = &ss->slot[i];
    if (!sl || ident_len > sizeof sl->ident) {
        stored_reply_result(s, ident, ident_len, req_id, CAIRN_GRPC_RESOURCE_EXHAUSTED,
                            "cairn: too many snapshots being streamed from this member at once", NULL, 0);
        return;
    }
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/member/snap", s->cfg->data_dir);
    mkdir(dir, 0700);
    /* The file is about the size of the store's live data (compressed in LevelDB, not in the
     * file: up to the store's size and then some). Refused up front when the disk cannot take
     * it: filling the disk would stop the member's writes (main.c, "a full disk") for the
     * sake of a backup. */
    struct statvfs vfs;
    int64_t need = cairn_mvcc_db_size_in_use(s->mvcc) * 2 + ((int64_t)64 << 20);
    if (statvfs(dir, &vfs) == 0 && (int64_t)(vfs.f_bavail * vfs.f_frsize) < need) {
        char msg[512];
        snprintf(msg, sizeof msg,
                 "cairn: not enough disk space for a snapshot in %.200s: about %lld MiB needed, %lld MiB free", dir,
                 (long long)(need >> 20), (long long)((int64_t)(vfs.f_bavail * vfs.f_frsize) >> 20));
        cairn_warn("snapshot for a client refused", "err=\"%s\"", msg);
        stored_reply_result(s, ident, ident_len, req_id, CAIRN_GRPC_RESOURCE_EXHAUSTED, msg, NULL, 0);
        return;
    }
    uint64_t id = ++ss->next_id;
    snprintf(path, sizeof path, "%s/stream-%" PRIu64 ".db", dir, id);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        char msg[4400];
        snprintf(msg, sizeof msg, "cairn: cannot create the snapshot file %s: %s", path, strerror(errno));
        cairn_error("snapshot for a client failed", "path=%s err=\"%s\"", path, strerror(errno));
        stored_reply_result(s, ident, ident_len, req_id, CAIRN_GRPC_INTERNAL, msg, NULL, 0);
        return;
    }
    unlink(path); /* lives as the descriptor only */
    memset(sl, 0, sizeof *sl);
    sl->used = 1;
    sl->id = id;
    sl->fd = fd;
    sl->mvcc = s->mvcc;
    sl->started = stored_clock_s();
    sl->last_ms = cairn_now_ms();
    memcpy(sl->ident, ident, ident_len);
    sl->ident_len = ident_len;
    sl->req_id = req_id;
    atomic_store(&sl->done, 0);
    if (pthread_create(&sl->thread, NULL, export_main, sl) != 0) {
        stored_reply_result(s, ident, ident_len, req_id, CAIRN_GRPC_RESOURCE_EXHAUSTED,
                            "cairn: cannot start a thread for the snapshot", NULL, 0);
        slot_free(sl);
        return;
    }
    cairn_info("making a snapshot for a client", "id=%" PRIu64 " revision=%lld db_size=%lld", id,
               (long long)cairn_mvcc_revision(s->mvcc), (long long)cairn_mvcc_db_size(s->mvcc));
}

int stored_snapstream_busy(stored_t *s)
{
    if (!s->snapstream)
        return 0;
    for (int i = 0; i < STREAM_SLOTS; i++)
        if (s->snapstream->slot[i].used == 1)
            return 1;
    return 0;
}

void stored_snapstream_reap(stored_t *s, int block)
{
    stored_snapstream_t *ss = s->snapstream;
    if (!ss)
        return;
    int64_t now = cairn_now_ms();
    for (int i = 0; i < STREAM_SLOTS; i++) {
        slot_t *sl = &ss->slot[i];
        if (sl->used == 1 && (block || atomic_load(&sl->done))) {
            pthread_join(sl->thread, NULL);
            sl->used = 2;
            sl->last_ms = now;
            if (sl->rc) {
                cairn_error("snapshot for a client failed", "id=%" PRIu64 " err=\"%s\"", sl->id, sl->err);
                char msg[600];
                snprintf(msg, sizeof msg, "cairn: making the snapshot failed: %s", sl->err);
                stored_reply_result(s, sl->ident, sl->ident_len, sl->req_id,
                                    sl->rc == CAIRN_ENOSPC ? CAIRN_GRPC_RESOURCE_EXHAUSTED : CAIRN_GRPC_INTERNAL, msg,
                                    NULL, 0);
                slot_free(sl);
                continue;
            }
            cairn_info("snapshot for a client made", "id=%" PRIu64 " bytes=%" PRIu64 " revision=%lld seconds=%.3f",
                       sl->id, sl->total, (long long)sl->pt.revision, stored_clock_s() - sl->started);
            uint8_t b[24];
            be64w(b, sl->id);
            be64w(b + 8, sl->total);
            be64w(b + 16, (uint64_t)sl->pt.revision);
            stored_reply_result(s, sl->ident, sl->ident_len, sl->req_id, 0, NULL, b, sizeof b);
        } else if (sl->used == 2 && (block || now - sl->last_ms > STREAM_IDLE_MS)) {
            if (!block)
                cairn_warn("snapshot for a client not read for a while; dropped", "id=%" PRIu64 " idle_ms=%lld",
                           sl->id, (long long)(now - sl->last_ms));
            slot_free(sl);
        }
    }
}

void stored_snapstream_destroy(stored_t *s)
{
    if (!s->snapstream)
        return;
    stored_snapstream_reap(s, 1); /* joins every thread, then closes every file */
    stored_snapstream_reap(s, 1);
    free(s->snapstream);
    s->snapstream = NULL;
}

void stored_snapstream_request(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    if (m->op == CAIRN_MAINT_SNAPSHOT) {
        start(s, ident, ident_len, m->req_id);
        return;
    }
    slot_t *sl = find(s->snapstream, m->snap_id);
    if (m->op == CAIRN_MAINT_SNAPSHOT_CLOSE) {
        if (sl && sl->used == 2)
            slot_free(sl);
        /* one still being made is dropped when it is done and then not read */
        return;
    }
    if (!sl || sl->used != 2) {
        stored_reply_result(s, ident, ident_len, m->req_id, CAIRN_GRPC_NOT_FOUND,
                            "cairn: the snapshot is gone (not read for too long); ask for a new one", NULL, 0);
        return;
    }
    if (m->offset > sl->total) {
        stored_reply_result(s, ident, ident_len, m->req_id, CAIRN_GRPC_INVALID_ARGUMENT,
                            "cairn: snapshot offset past its end", NULL, 0);
        return;
    }
    size_t want = sl->total - m->offset < CAIRN_MAINT_SNAP_CHUNK ? (size_t)(sl->total - m->offset)
                                                                 : CAIRN_MAINT_SNAP_CHUNK;
    uint8_t *buf = want ? malloc(want) : NULL;
    size_t got = 0;
    while (got < want && buf) {
        ssize_t n = pread(sl->fd, buf + got, want - got, (off_t)(m->offset + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (want && (!buf || got != want)) {
        free(buf);
        stored_reply_result(s, ident, ident_len, m->req_id, CAIRN_GRPC_INTERNAL, "cairn: reading the snapshot failed",
                            NULL, 0);
        return;
    }
    sl->last_ms = cairn_now_ms();
    stored_reply_result(s, ident, ident_len, m->req_id, 0, NULL, buf, got);
    free(buf);
}
