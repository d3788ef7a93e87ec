/* snapshot.c - snapshot files of stored (see snapshot.h for the API).
 *
 * FORMAT
 * ======
 * One file holds a consistent point-in-time copy of the whole MVCC store: every LevelDB
 * record of every table (M, k, h, r, L, l, C ...; their layout is mvcc.c's), read through
 * one LevelDB snapshot. All integers are little-endian (like the WAL's).
 *
 * Header, 48 bytes at offset 0:
 *
 *     0   8   magic "CAIRNSNP"
 *     8   4   version, 1
 *     12  4   flags, 0
 *     16  8   applied index of the copy (its "Mapplied" record says the same)
 *     24  8   applied term
 *     32  8   revision (i64)
 *     40  8   compact revision (i64; -1 = never compacted)
 *
 * Records follow the header back to back, in LevelDB key order, each:
 *
 *     0   4   key length k (>= 1)
 *     4   k   key
 *     4+k 4   value length v
 *     8+k v   value
 *
 * Trailer, the last 20 bytes of the file:
 *
 *     0   8   magic "CAIRNEND"
 *     8   8   record count
 *     16  4   CRC32C of every byte of the file before this field (header, records, the
 *             trailer's magic and count)
 *
 * Valid. A file is valid when it is at least 68 bytes, the header has the magic and a known
 * version, the trailer has its magic, the records exactly fill the bytes between header and
 * trailer (every length is checked against the bytes left before anything is read or
 * allocated), their number is the trailer's count, and the CRC matches. Anything else is
 * CAIRN_ECORRUPT (another version: CAIRN_EVERSION). A file is only ever used whole: it is
 * written as NAME.tmp, fdatasync'd, renamed and the directory fsync'd, so a NAME without
 * .tmp was complete once; the CRC catches what happened to it since (or in transit: the
 * receiver checks the file it assembled from chunks before installing it).
 *
 * Names in the snap directory (<data-dir>/member/snap):
 *     out-<applied>.snap   made by a leader for sending; removed when replaced or idle
 *     in.tmp               being received from a leader, chunk by chunk
 *     <index>-<term>.snap  received whole and installed (or being installed) at the raft
 *                          snapshot (index, term); the newest one is kept, because a crash
 *                          between the WAL's SNAPSHOT record and the directory swap is
 *                          finished from it at the next start
 */
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn_crc32c.h"
#include "cairn_bytes.h"
#include "cairn_err.h"
#include "cairn_log.h"
#include "fileops.h"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

#define SNAP_MAGIC "CAIRNSNP"
#define SNAP_END "CAIRNEND"
#define SNAP_VERSION 1u
#define HDR_SIZE 48u
#define TRL_SIZE 20u
#define WBUF_SIZE ((size_t)1 << 20)

/* ---- little helpers -------------------------------------------------------------------- */

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct {
    const cairn_fileops_t *ops;
    int fd;
    uint8_t *buf;
    size_t len;
    uint64_t off;   /* file offset of buf[0] */
    uint32_t crc;
    uint64_t records;
    cairn_mvcc_point_t pt;   /* what the header says */
    int err;        /* negative errno of the first failed write */
} wr_t;

static int wr_flush(wr_t *w)
{
    if (w->err)
        return w->err;
    if (w->len) {
        int rc = cairn_fileops_pwrite_full(w->ops, w->fd, w->buf, w->len, w->off);
        if (rc) {
            w->err = rc;
            return rc;
        }
        w->off += w->len;
        w->len = 0;
    }
    return 0;
}

static int wr_add(wr_t *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    w->crc = cairn_crc32c_extend(w->crc, b, n);
    while (n) {
        if (w->len == WBUF_SIZE && wr_flush(w))
            return w->err;
        size_t k = WBUF_SIZE - w->len < n ? WBUF_SIZE - w->len : n;
        memcpy(w->buf + w->len, b, k);
        w->len += k;
        b += k;
        n -= k;
    }
    return 0;
}

static int wr_point(void *arg, const cairn_mvcc_point_t *pt)
{
    wr_t *w = arg;
    w->pt = *pt;
    uint8_t h[HDR_SIZE] = {0};
    memcpy(h, SNAP_MAGIC, 8);
    cairn_put_le32(h + 8, SNAP_VERSION);
    cairn_put_le64(h + 16, pt->index);
    cairn_put_le64(h + 24, pt->term);
    cairn_put_le64(h + 32, (uint64_t)pt->revision);
    cairn_put_le64(h + 40, (uint64_t)pt->compact_rev);
    return wr_add(w, h, sizeof h) ? CAIRN_EIO : 0;
}

static int wr_record(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    wr_t *w = arg;
    if (kn > UINT32_MAX || vn > UINT32_MAX)
        return CAIRN_ETOOBIG;
    uint8_t l[4];
    cairn_put_le32(l, (uint32_t)kn);
    wr_add(w, l, 4);
    wr_add(w, k, kn);
    cairn_put_le32(l, (uint32_t)vn);
    wr_add(w, l, 4);
    wr_add(w, v, vn);
    w->records++;
    return w->err ? CAIRN_EIO : 0;
}

static void read_header(const uint8_t *h, cairn_snap_info_t *info)
{
    info->index = cairn_get_le64(h + 16);
    info->term = cairn_get_le64(h + 24);
    info->revision = (int64_t)cairn_get_le64(h + 32);
    info->compact_rev = (int64_t)cairn_get_le64(h + 40);
}

int cairn_snap_save(cairn_mvcc_t *m, const char *dir, const char *name, cairn_snap_info_t *info, char *errbuf,
                    size_t errlen)
{
    /* No check of m's open batch: only committed records are read, through a LevelDB
     * snapshot, and only m's LevelDB handle is touched, so this may run on another thread
     * while m's owner goes on writing (LevelDB allows that). */
    const cairn_fileops_t *ops = cairn_fileops_default();
    char *path = path_join(dir, name);
    size_t tl = path ? strlen(path) + 5 : 0;
    char *tmp = path ? malloc(tl) : NULL;
    wr_t w = {.ops = ops, .fd = -1, .buf = malloc(WBUF_SIZE)};
    int rc = 0;
    const char *what = "create";
    if (!path || !tmp || !w.buf) {
        rc = CAIRN_ENOMEM;
        cairn_errbuf_set(errbuf, errlen, "snapshot: out of memory");
        goto out;
    }
    snprintf(tmp, tl, "%s.tmp", path);
    if ((w.fd = ops->open(ops->ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644)) < 0) {
        w.err = w.fd;
        goto fail;
    }
    what = "write";
    rc = cairn_mvcc_export(m, wr_point, wr_record, &w);
    if (w.err)
        goto fail;
    if (rc) {
        cairn_errbuf_set(errbuf, errlen, "snapshot: reading the store for %s failed: %s", tmp, cairn_strerror(rc));
        goto out;
    }
    uint8_t t[TRL_SIZE];
    memcpy(t, SNAP_END, 8);
    cairn_put_le64(t + 8, w.records);
    wr_add(&w, t, 16);
    cairn_put_le32(t + 16, w.crc);
    if (wr_add(&w, t + 16, 4) || wr_flush(&w))
        goto fail;
    what = "fdatasync";
    if ((w.err = ops->fdatasync(ops->ctx, w.fd)))
        goto fail;
    ops->close(ops->ctx, w.fd);
    w.fd = -1;
    what = "rename";
    if ((w.err = ops->rename(ops->ctx, tmp, path)))
        goto fail;
    what = "fsync the directory of";
    if ((w.err = ops->fsync_dir(ops->ctx, dir)))
        goto fail;
    if (info)
        *info = (cairn_snap_info_t){.index = w.pt.index, .term = w.pt.term, .revision = w.pt.revision,
                                    .compact_rev = w.pt.compact_rev, .records = w.records, .bytes = w.off};
    cairn_info("snapshot written", "file=%s bytes=%llu records=%llu", path, (unsigned long long)w.off,
               (unsigned long long)w.records);
    goto out;
fail:
    rc = cairn_fileops_err(w.err);
    cairn_errbuf_set(errbuf, errlen, "snapshot: cannot %s %s: %s", what, tmp, strerror(-w.err));
    cairn_error("snapshot write failed", "file=%s op=\"%s\" err=\"%s\"", tmp, what, strerror(-w.err));
out:
    if (w.fd >= 0)
        ops->close(ops->ctx, w.fd);
    if (rc && tmp)
        ops->unlink(ops->ctx, tmp);
    free(w.buf);
    free(tmp);
    free(path);
    return rc;
}

/* ---- reading ---------------------------------------------------------------------------- */


int cairn_snap_read(const char *path, cairn_snap_info_t *info, cairn_mvcc_raw_fn fn, void *arg, char *errbuf,
                    size_t errlen)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    cairn_freader_t r = {.ops = ops, .fd = -1};
    cairn_snap_info_t inf = {0};
    int rc = 0;
    const uint8_t *p;
    if ((r.fd = ops->open(ops->ctx, path, O_RDONLY, 0)) < 0) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %s: cannot open: %s", path, strerror(-r.fd));
        return r.fd == -ENOENT ? CAIRN_ENOTFOUND : cairn_fileops_err(r.fd);
    }
    if ((rc = ops->size(ops->ctx, r.fd, &r.size))) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %s: cannot stat: %s", path, strerror(-rc));
        rc = cairn_fileops_err(rc);
        goto out;
    }
    inf.bytes = r.size;
    if (r.size < HDR_SIZE + TRL_SIZE) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %s is truncated: %llu bytes, a snapshot has at least %u", path,
                         (unsigned long long)r.size, HDR_SIZE + TRL_SIZE);
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    if ((rc = cairn_freader_get(&r, 0, HDR_SIZE, &p)))
        goto io;
    if (memcmp(p, SNAP_MAGIC, 8) != 0) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %s: not a Cairn snapshot (bad magic)", path);
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    if (cairn_get_le32(p + 8) != SNAP_VERSION) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %s has format version %u, this build reads version %u", path,
                         cairn_get_le32(p + 8), SNAP_VERSION);
        rc = CAIRN_EVERSION;
        goto out;
    }
    read_header(p, &inf);
    uint32_t crc = cairn_crc32c(p, HDR_SIZE);
    uint64_t end = r.size - TRL_SIZE; /* where the records must end */
    const uint8_t *t;
    if ((rc = cairn_freader_get(&r, end, TRL_SIZE, &t)))
        goto io;
    uint8_t trl[TRL_SIZE];
    memcpy(trl, t, TRL_SIZE);
    if (memcmp(trl, SNAP_END, 8) != 0) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %s is truncated or damaged: no end marker at offset %llu", path,
                         (unsigned long long)end);
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    uint64_t pos = HDR_SIZE, n = 0;
    while (pos < end) {
        uint64_t left = end - pos;
        if (left < 8) {
            cairn_errbuf_set(errbuf, errlen, "snapshot %s is corrupt: a record at offset %llu is cut short", path,
                             (unsigned long long)pos);
            rc = CAIRN_ECORRUPT;
            goto out;
        }
        if ((rc = cairn_freader_get(&r, pos, 4, &p)))
            goto io;
        uint64_t kn = cairn_get_le32(p);
        if (kn == 0 || kn > left - 8) {
            cairn_errbuf_set(errbuf, errlen, "snapshot %s is corrupt: key length %llu at offset %llu (%llu bytes left)",
                             path, (unsigned long long)kn, (unsigned long long)pos, (unsigned long long)(left - 8));
            rc = CAIRN_ECORRUPT;
            goto out;
        }
        if ((rc = cairn_freader_get(&r, pos + 4 + kn, 4, &p)))
            goto io;
        uint64_t vn = cairn_get_le32(p);
        if (vn > left - 8 - kn) {
            cairn_errbuf_set(errbuf, errlen,
                             "snapshot %s is corrupt: value length %llu at offset %llu (%llu bytes left)", path,
                             (unsigned long long)vn, (unsigned long long)(pos + 4 + kn),
                             (unsigned long long)(left - 8 - kn));
            rc = CAIRN_ECORRUPT;
            goto out;
        }
        uint64_t rl = 8 + kn + vn;
        if ((rc = cairn_freader_get(&r, pos, (size_t)rl, &p)))
            goto io;
        crc = cairn_crc32c_extend(crc, p, (size_t)rl);
        if (fn && (rc = fn(arg, p + 4, (size_t)kn, p + 8 + kn, (size_t)vn)) != 0) {
            cairn_errbuf_set(errbuf, errlen, "snapshot %s: record %llu at offset %llu not taken: %s", path,
                             (unsigned long long)n, (unsigned long long)pos, cairn_strerror(rc));
            goto out;
        }
        pos += rl;
        n++;
    }
    crc = cairn_crc32c_extend(crc, trl, 16);
    if (cairn_get_le64(trl + 8) != n) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %s is corrupt: %llu records, the trailer says %llu", path,
                         (unsigned long long)n, (unsigned long long)cairn_get_le64(trl + 8));
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    if (crc != cairn_get_le32(trl + 16)) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %s is corrupt: checksum mismatch (computed %08x, stored %08x)", path,
                         crc, cairn_get_le32(trl + 16));
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    inf.records = n;
    if (info)
        *info = inf;
    rc = 0;
    goto out;
io:
    cairn_errbuf_set(errbuf, errlen, "snapshot %s: cannot read: %s", path, cairn_strerror(rc));
out:
    ops->close(ops->ctx, r.fd);
    cairn_freader_free(&r);
    return rc;
}

/* ---- restore ---------------------------------------------------------------------------- */

static int restore_put(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    return cairn_mvcc_builder_put(arg, k, kn, v, vn);
}

int cairn_snap_restore(const char *path, const char *mvcc_dir, cairn_snap_info_t *info, char *errbuf,
                       size_t errlen)
{
    int rc = 0;
    struct stat st;
    if (stat(mvcc_dir, &st) == 0) {
        cairn_errbuf_set(errbuf, errlen, "snapshot restore: %s already exists", mvcc_dir);
        return CAIRN_EEXISTS;
    }
    cairn_mvcc_builder_t *b = cairn_mvcc_builder_new(mvcc_dir, &rc, errbuf, errlen);
    if (!b)
        goto fail;
    cairn_snap_info_t inf = {0};
    if ((rc = cairn_snap_read(path, &inf, restore_put, b, errbuf, errlen)))
        goto fail;
    cairn_mvcc_point_t pt;
    if ((rc = cairn_mvcc_builder_finish(b, &pt, errbuf, errlen)))
        goto fail;
    if (pt.index != inf.index || pt.term != inf.term || pt.revision != inf.revision) {
        cairn_errbuf_set(errbuf, errlen,
                         "snapshot %s is corrupt: its header says applied %llu/%llu revision %lld, its data %llu/%llu "
                         "revision %lld",
                         path, (unsigned long long)inf.index, (unsigned long long)inf.term, (long long)inf.revision,
                         (unsigned long long)pt.index, (unsigned long long)pt.term, (long long)pt.revision);
        rc = CAIRN_ECORRUPT;
        goto fail;
    }
    cairn_mvcc_builder_destroy(&b);
    if (info)
        *info = inf;
    cairn_info("snapshot restored", "file=%s dir=%s applied=%llu revision=%lld records=%llu", path, mvcc_dir,
               (unsigned long long)inf.index, (long long)inf.revision, (unsigned long long)inf.records);
    return 0;
fail:
    cairn_mvcc_builder_destroy(&b);
    cairn_snap_rmtree(mvcc_dir);
    return rc ? rc : CAIRN_EIO;
}

/* ---- directories ------------------------------------------------------------------------ */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(p) != 0 && errno != ENOENT)
        return -1;
    return 0;
}

int cairn_snap_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : CAIRN_EIO;
    if (nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        cairn_error("cannot remove directory", "path=%s err=\"%s\"", path, strerror(errno));
        return CAIRN_EIO;
    }
    return 0;
}

int cairn_snap_swap_dirs(const char *parent, const char *a, const char *b, char *errbuf, size_t errlen)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    char *pa = path_join(parent, a), *pb = path_join(parent, b);
    size_t ol = pa ? strlen(pa) + 5 : 0;
    char *old = pa ? malloc(ol) : NULL;
    int rc = 0;
    if (!pa || !pb || !old) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    snprintf(old, ol, "%s.old", pa);
    int e = ops->exchange ? ops->exchange(ops->ctx, pa, pb) : -ENOSYS;
    if (e != 0) {
        if (e != -EINVAL && e != -ENOSYS && e != -ENOTSUP) {
            cairn_errbuf_set(errbuf, errlen, "cannot exchange %s and %s: %s", pa, pb, strerror(-e));
            rc = cairn_fileops_err(e);
            goto out;
        }
        /* No RENAME_EXCHANGE here: two renames. A crash between them leaves no a; the
         * caller's recovery rebuilds it (the WAL's SNAPSHOT record says from what). */
        cairn_warn("filesystem cannot exchange directories; renaming twice", "dir=%s", parent);
        cairn_snap_rmtree(old);
        if ((e = ops->rename(ops->ctx, pa, old)) != 0 || (e = ops->rename(ops->ctx, pb, pa)) != 0 ||
            (e = ops->rename(ops->ctx, old, pb)) != 0) {
            cairn_errbuf_set(errbuf, errlen, "cannot swap %s and %s: %s", pa, pb, strerror(-e));
            rc = cairn_fileops_err(e);
            goto out;
        }
    }
    int s = ops->fsync_dir(ops->ctx, parent);
    if (s) {
        cairn_errbuf_set(errbuf, errlen, "cannot fsync %s: %s", parent, strerror(-s));
        rc = cairn_fileops_err(s);
    }
out:
    free(pa);
    free(pb);
    free(old);
    return rc;
}

/* ---- the sending side ------------------------------------------------------------------- */

typedef struct {
    uint64_t id; /* 0: none */
    int fd;
    uint64_t total, applied;
    int64_t last_used;
} out_file_t;

/* The current file, and the one it replaced while a follower may still be reading it (two
 * followers catching up at once need not share a state: each finishes its own file). */
struct cairn_snap_out_t {
    char *dir;
    out_file_t cur, prev;
};

#define OUT_PREV_IDLE_MS 30000

static void out_path(const cairn_snap_out_t *o, uint64_t id, char *p, size_t n)
{
    snprintf(p, n, "%s/out-%" PRIu64 ".snap", o->dir, id);
}

static int parse_out_name(const char *name, uint64_t *id)
{
    size_t n = strlen(name);
    if (n < 10 || strncmp(name, "out-", 4) != 0 || strcmp(name + n - 5, ".snap") != 0)
        return 0;
    uint64_t v = 0;
    for (size_t i = 4; i < n - 5; i++) {
        if (name[i] < '0' || name[i] > '9' || v > (UINT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *id = v;
    return v != 0;
}

typedef struct {
    cairn_snap_out_t *o;
    uint64_t keep;
} prune_ctx_t;

static int out_prune_one(void *arg, const char *name)
{
    prune_ctx_t *c = arg;
    const cairn_fileops_t *ops = cairn_fileops_default();
    uint64_t id;
    size_t n = strlen(name);
    int tmp = n > 4 && strcmp(name + n - 4, ".tmp") == 0 && strncmp(name, "out-", 4) == 0;
    if (tmp || (parse_out_name(name, &id) && id != c->keep && (id != c->o->prev.id || !c->o->prev.id))) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", c->o->dir, name);
        ops->unlink(ops->ctx, p);
        cairn_debug("old outgoing snapshot removed", "file=%s", p);
    }
    return 0;
}

/* Removes every out-*.snap (and out-*.snap.tmp) but keep's and the previous file's. */
static void out_prune(cairn_snap_out_t *o, uint64_t keep)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    prune_ctx_t c = {o, keep};
    ops->list(ops->ctx, o->dir, out_prune_one, &c);
}

static void out_close(out_file_t *f)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    if (f->id && f->fd >= 0)
        ops->close(ops->ctx, f->fd);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

/* Drops f and its file. */
static void out_remove(cairn_snap_out_t *o, out_file_t *f)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    char p[4096];
    out_path(o, f->id, p, sizeof p);
    ops->unlink(ops->ctx, p);
    out_close(f);
}

/* Makes id the current file if it exists and has a readable header. */
static int out_adopt(cairn_snap_out_t *o, uint64_t id, int64_t now_ms)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    char p[4096];
    out_path(o, id, p, sizeof p);
    int fd = ops->open(ops->ctx, p, O_RDONLY, 0);
    if (fd < 0)
        return CAIRN_ENOTFOUND;
    uint64_t size = 0;
    uint8_t h[HDR_SIZE];
    if (ops->size(ops->ctx, fd, &size) != 0 || size < HDR_SIZE + TRL_SIZE ||
        cairn_fileops_pread_full(ops, fd, h, sizeof h, 0) != (ssize_t)sizeof h || memcmp(h, SNAP_MAGIC, 8) != 0) {
        ops->close(ops->ctx, fd);
        ops->unlink(ops->ctx, p);
        return CAIRN_ECORRUPT;
    }
    if (o->cur.id && o->cur.id != id) {
        /* the current one becomes the previous (a follower may be half way through it) */
        if (o->prev.id)
            out_remove(o, &o->prev);
        o->prev = o->cur;
        o->cur.id = 0;
        o->cur.fd = -1;
    }
    out_close(&o->cur);
    o->cur.fd = fd;
    o->cur.id = id;
    o->cur.total = size;
    o->cur.applied = cairn_get_le64(h + 16);
    o->cur.last_used = now_ms;
    return 0;
}

static int out_newest(void *arg, const char *name)
{
    uint64_t id, *newest = arg;
    if (parse_out_name(name, &id) && id > *newest)
        *newest = id;
    return 0;
}

cairn_snap_out_t *cairn_snap_out_new(const char *dir, int64_t now_ms)
{
    cairn_snap_out_t *o = calloc(1, sizeof *o);
    if (!o || !(o->dir = strdup(dir))) {
        free(o);
        return NULL;
    }
    o->cur.fd = o->prev.fd = -1;
    uint64_t newest = 0;
    const cairn_fileops_t *ops = cairn_fileops_default();
    ops->list(ops->ctx, dir, out_newest, &newest);
    /* a restart in the middle of a transfer: the follower may still ask for this one */
    if (newest && out_adopt(o, newest, now_ms) != 0)
        newest = 0;
    out_prune(o, newest);
    return o;
}

void cairn_snap_out_destroy(cairn_snap_out_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_snap_out_t *o = *self_p;
    out_close(&o->cur);
    out_close(&o->prev);
    free(o->dir);
    free(o);
    *self_p = NULL;
}

int cairn_snap_out_current(const cairn_snap_out_t *o, uint64_t *id, uint64_t *total, uint64_t *applied)
{
    if (!o->cur.id)
        return 0;
    *id = o->cur.id;
    *total = o->cur.total;
    *applied = o->cur.applied;
    return 1;
}

int cairn_snap_out_adopt(cairn_snap_out_t *o, uint64_t id, int64_t now_ms)
{
    int rc = out_adopt(o, id, now_ms);
    if (rc == 0)
        out_prune(o, id);
    return rc;
}

int cairn_snap_out_make(cairn_snap_out_t *o, cairn_mvcc_t *m, int64_t now_ms, uint64_t *id, uint64_t *total,
                        uint64_t *applied, char *errbuf, size_t errlen)
{
    uint64_t a = cairn_mvcc_applied_index(m);
    if (a == 0) {
        cairn_errbuf_set(errbuf, errlen, "nothing applied yet: no snapshot to make");
        return CAIRN_ESTATE;
    }
    if (o->cur.id != a) {
        /* the same applied index is the same state: reuse it, several followers may ask */
        char name[64];
        snprintf(name, sizeof name, "out-%" PRIu64 ".snap", a);
        int rc = cairn_snap_save(m, o->dir, name, NULL, errbuf, errlen);
        if (rc)
            return rc;
        if ((rc = out_adopt(o, a, now_ms))) {
            cairn_errbuf_set(errbuf, errlen, "snapshot %s/%s vanished after it was written", o->dir, name);
            return rc;
        }
        out_prune(o, a);
    }
    o->cur.last_used = now_ms;
    *id = o->cur.id;
    *total = o->cur.total;
    *applied = o->cur.applied;
    return 0;
}

int cairn_snap_out_read(cairn_snap_out_t *o, uint64_t id, uint64_t off, uint8_t *buf, size_t max, int64_t now_ms,
                        size_t *n, uint64_t *total, uint64_t *applied)
{
    *n = 0;
    out_file_t *f = id && id == o->cur.id ? &o->cur : id && id == o->prev.id ? &o->prev : NULL;
    if (!f || f->fd < 0)
        return CAIRN_ENOTFOUND;
    *total = f->total;
    *applied = f->applied;
    if (off > f->total)
        return CAIRN_EINVAL;
    uint64_t left = f->total - off;
    size_t want = left < max ? (size_t)left : max;
    ssize_t got = want ? cairn_fileops_pread_full(cairn_fileops_default(), f->fd, buf, want, off) : 0;
    if (got < 0)
        return cairn_fileops_err((int)got);
    if ((size_t)got != want)
        return CAIRN_EIO;
    *n = (size_t)got;
    f->last_used = now_ms;
    return 0;
}

int cairn_snap_out_expire(cairn_snap_out_t *o, int64_t now_ms, int64_t idle_ms)
{
    int n = 0;
    /* the previous file is kept only while a follower is still reading it */
    out_file_t *fs[2] = {&o->prev, &o->cur};
    int64_t limits[2] = {idle_ms < OUT_PREV_IDLE_MS ? idle_ms : OUT_PREV_IDLE_MS, idle_ms};
    for (int i = 0; i < 2; i++) {
        if (!fs[i]->id || now_ms - fs[i]->last_used < limits[i])
            continue;
        char p[4096];
        out_path(o, fs[i]->id, p, sizeof p);
        cairn_info("outgoing snapshot idle; removed", "file=%s", p);
        out_remove(o, fs[i]);
        n++;
    }
    return n > 0;
}

/* ---- the receiving side ----------------------------------------------------------------- */

struct cairn_snap_in_t {
    char *dir;
    char *tmp;     /* dir/in.tmp */
    int fd;        /* -1: nothing held */
    uint64_t seq, total, held;
};

void cairn_snap_in_reset(cairn_snap_in_t *in)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    if (in->fd >= 0)
        ops->close(ops->ctx, in->fd);
    in->fd = -1;
    in->seq = in->total = in->held = 0;
    ops->unlink(ops->ctx, in->tmp);
}

cairn_snap_in_t *cairn_snap_in_new(const char *dir)
{
    cairn_snap_in_t *in = calloc(1, sizeof *in);
    if (!in || !(in->dir = strdup(dir)) || !(in->tmp = path_join(dir, "in.tmp"))) {
        if (in)
            free(in->dir);
        free(in);
        return NULL;
    }
    in->fd = -1;
    cairn_snap_in_reset(in); /* a transfer cut by a restart starts over */
    return in;
}

void cairn_snap_in_destroy(cairn_snap_in_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_snap_in_t *in = *self_p;
    const cairn_fileops_t *ops = cairn_fileops_default();
    if (in->fd >= 0)
        ops->close(ops->ctx, in->fd);
    free(in->tmp);
    free(in->dir);
    free(in);
    *self_p = NULL;
}

int cairn_snap_in_chunk(cairn_snap_in_t *in, uint64_t seq, uint64_t off, uint64_t total, const uint8_t *body,
                        size_t len, uint64_t *held, char *errbuf, size_t errlen)
{
    uint64_t mine = in->fd >= 0 && in->seq == seq ? in->held : 0;
    *held = mine;
    if (total == 0 || seq == 0) {
        cairn_errbuf_set(errbuf, errlen, "snapshot chunk with %s 0", seq == 0 ? "snapshot id" : "total size");
        return CAIRN_EINVAL;
    }
    if (off != 0) {
        if (in->fd < 0 || in->seq != seq) {
            cairn_errbuf_set(errbuf, errlen,
                             "snapshot %llu: chunk at offset %llu but no bytes of it are held; expected offset 0",
                             (unsigned long long)seq, (unsigned long long)off);
            return CAIRN_EINVAL;
        }
        if (off != in->held) {
            cairn_errbuf_set(errbuf, errlen, "snapshot %llu: chunk at offset %llu, expected offset %llu",
                             (unsigned long long)seq, (unsigned long long)off, (unsigned long long)in->held);
            return CAIRN_EINVAL;
        }
        if (total != in->total) {
            cairn_errbuf_set(errbuf, errlen, "snapshot %llu: total size changed from %llu to %llu; expected offset 0",
                             (unsigned long long)seq, (unsigned long long)in->total, (unsigned long long)total);
            return CAIRN_EINVAL;
        }
    }
    if (off > total || len > total - off) {
        cairn_errbuf_set(errbuf, errlen, "snapshot %llu: chunk of %zu bytes at offset %llu goes past its total %llu",
                         (unsigned long long)seq, len, (unsigned long long)off, (unsigned long long)total);
        return CAIRN_EINVAL;
    }
    const cairn_fileops_t *ops = cairn_fileops_default();
    if (off == 0) {
        if (in->fd >= 0)
            ops->close(ops->ctx, in->fd);
        in->fd = ops->open(ops->ctx, in->tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
        in->seq = in->held = in->total = 0;
        *held = 0;
        if (in->fd < 0) {
            int e = in->fd;
            in->fd = -1;
            cairn_errbuf_set(errbuf, errlen, "cannot create %s: %s", in->tmp, strerror(-e));
            return cairn_fileops_err(e);
        }
        in->seq = seq;
        in->total = total;
    }
    if (len) {
        int rc = cairn_fileops_pwrite_full(ops, in->fd, body, len, in->held);
        if (rc) {
            cairn_errbuf_set(errbuf, errlen, "cannot write %s: %s", in->tmp, strerror(-rc));
            cairn_snap_in_reset(in);
            *held = 0;
            return cairn_fileops_err(rc);
        }
        in->held += len;
    }
    *held = in->held;
    return in->held == in->total ? 1 : 0;
}

void cairn_snap_installed_path(const char *dir, uint64_t index, uint64_t term, char *path, size_t pathlen)
{
    snprintf(path, pathlen, "%s/%" PRIu64 "-%" PRIu64 ".snap", dir, index, term);
}

int cairn_snap_in_finish(cairn_snap_in_t *in, uint64_t index, uint64_t term, cairn_snap_info_t *info, char *path,
                         size_t pathlen, char *errbuf, size_t errlen)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    if (in->fd < 0 || in->held != in->total || in->total == 0) {
        cairn_errbuf_set(errbuf, errlen, "snapshot not complete: %llu of %llu bytes held",
                         (unsigned long long)in->held, (unsigned long long)in->total);
        return CAIRN_ESTATE;
    }
    int rc = cairn_snap_read(in->tmp, info, NULL, NULL, errbuf, errlen);
    if (rc == 0 && (rc = ops->fsync(ops->ctx, in->fd)) != 0) {
        cairn_errbuf_set(errbuf, errlen, "cannot fsync %s: %s", in->tmp, strerror(-rc));
        rc = cairn_fileops_err(rc);
    }
    if (rc) {
        cairn_snap_in_reset(in);
        return rc;
    }
    ops->close(ops->ctx, in->fd);
    in->fd = -1;
    cairn_snap_installed_path(in->dir, index, term, path, pathlen);
    if ((rc = ops->rename(ops->ctx, in->tmp, path)) == 0)
        rc = ops->fsync_dir(ops->ctx, in->dir);
    if (rc) {
        cairn_errbuf_set(errbuf, errlen, "cannot rename %s to %s: %s", in->tmp, path, strerror(-rc));
        cairn_snap_in_reset(in);
        return cairn_fileops_err(rc);
    }
    in->seq = in->total = in->held = 0;
    return 0;
}

typedef struct {
    const char *dir;
    char keep[64];
} prune_installed_t;

static int prune_installed_one(void *arg, const char *n)
{
    prune_installed_t *c = arg;
    const cairn_fileops_t *ops = cairn_fileops_default();
    size_t l = strlen(n);
    if (l < 8 || n[0] < '0' || n[0] > '9' || strcmp(n + l - 5, ".snap") != 0 || !strchr(n, '-') ||
        strcmp(n, c->keep) == 0)
        return 0;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", c->dir, n);
    ops->unlink(ops->ctx, p);
    cairn_debug("old installed snapshot removed", "file=%s", p);
    return 0;
}

void cairn_snap_prune_installed(const char *dir, uint64_t keep_index, uint64_t keep_term)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    prune_installed_t c = {.dir = dir};
    snprintf(c.keep, sizeof c.keep, "%" PRIu64 "-%" PRIu64 ".snap", keep_index, keep_term);
    ops->list(ops->ctx, dir, prune_installed_one, &c);
}
