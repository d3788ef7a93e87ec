/* crashfs.h - an in-memory cairn_fileops_t that simulates power loss (test only).
 *
 * Modelled on SQLite's crash test (test6.c): every file has a durable image and a current
 * image. pwrite/ftruncate/fallocate change only the current image and mark the bytes
 * they changed as dirty; fdatasync/fsync copy current to durable. Directory
 * operations (create, rename, unlink) are logged and become durable on fsync_dir.
 *
 * Like SQLite's default (SQLITE_IOCAP_POWERSAFE_OVERWRITE), a torn write never damages bytes
 * outside the range that was written: garbage only ever replaces bytes written since the
 * last sync, never durable bytes that happen to share a sector with them.
 *
 * A crash is armed with crashfs_arm(fs, k): the k-th "crash point" (any operation that
 * changes state or syncs) still runs, but returns -EIO, and so does every operation after
 * it - the power is off. crashfs_crash(fs, seed) then computes the state after reboot:
 *   - a random prefix of the unsynced directory operations survives (journaled fs order);
 *   - each file's size is either its durable or its current size;
 *   - each sector written since the last sync independently keeps its old content, takes
 *     the new one, or (if garbling is on) has the bytes written to it replaced by random
 *     bytes.
 * Also injects ENOSPC (a pwrite byte quota, a failing fallocate) and EIO on fdatasync.
 */
#ifndef CAIRN_TEST_CRASHFS_H
#define CAIRN_TEST_CRASHFS_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fileops.h"

#define CFS_SECTOR 512u
#define CFS_MAXFD 64

typedef struct cfs_inode {
    uint8_t *cur, *dur;
    size_t cur_len, cur_cap, dur_len;
    uint8_t *dirty; /* one flag per byte of cur: written since the last sync */
    size_t dirty_cap;
    struct cfs_inode *next;
} cfs_inode_t;

typedef struct {
    char *name;
    cfs_inode_t *ino;
} cfs_dent_t;

typedef struct {
    cfs_dent_t *v;
    size_t n, cap;
} cfs_ns_t;

enum { CFS_LINK, CFS_UNLINK, CFS_RENAME };
typedef struct {
    int op;
    char *a, *b;
    cfs_inode_t *ino;
} cfs_dirop_t;

typedef struct {
    cairn_fileops_t ops;
    cfs_inode_t *inodes;
    cfs_ns_t cur, dur;
    cfs_dirop_t *log;
    size_t nlog, logcap;
    char *dirs[16];
    int ndirs;
    cfs_inode_t *fds[CFS_MAXFD];
    /* crash */
    long countdown; /* >0: crash at that crash point; 0: disarmed */
    int crashed;
    long points;    /* crash points seen so far */
    int garble;
    /* injection */
    long long pwrite_quota;   /* -1: unlimited; else bytes pwrite may still write */
    int fallocate_errno;      /* non-zero: fallocate fails with it */
    long fdatasync_fail_at;   /* >0: the n-th fdatasync fails with EIO */
    long n_fdatasync, n_pwrite, n_fsync;
} crashfs_t;

static uint64_t cfs_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void cfs_ns_set(cfs_ns_t *ns, const char *name, cfs_inode_t *ino)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i].name, name) == 0) {
            ns->v[i].ino = ino;
            return;
        }
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? ns->cap * 2 : 16;
        ns->v = realloc(ns->v, ns->cap * sizeof *ns->v);
    }
    ns->v[ns->n].name = strdup(name);
    ns->v[ns->n++].ino = ino;
}

static cfs_inode_t *cfs_ns_get(cfs_ns_t *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i].name, name) == 0)
            return ns->v[i].ino;
    return NULL;
}

static int cfs_ns_del(cfs_ns_t *ns, const char *name)
{
    for (size_t i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i].name, name) == 0) {
            free(ns->v[i].name);
            ns->v[i] = ns->v[--ns->n];
            return 1;
        }
    return 0;
}

static void cfs_ns_clear(cfs_ns_t *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i].name);
    ns->n = 0;
}

static void cfs_ns_apply(cfs_ns_t *ns, const cfs_dirop_t *op)
{
    if (op->op == CFS_LINK)
        cfs_ns_set(ns, op->a, op->ino);
    else if (op->op == CFS_UNLINK)
        cfs_ns_del(ns, op->a);
    else {
        cfs_inode_t *ino = cfs_ns_get(ns, op->a);
        if (ino) {
            cfs_ns_del(ns, op->a);
            cfs_ns_set(ns, op->b, ino);
        }
    }
}

static void cfs_log(crashfs_t *fs, int op, const char *a, const char *b, cfs_inode_t *ino)
{
    if (fs->nlog == fs->logcap) {
        fs->logcap = fs->logcap ? fs->logcap * 2 : 16;
        fs->log = realloc(fs->log, fs->logcap * sizeof *fs->log);
    }
    fs->log[fs->nlog++] = (cfs_dirop_t){op, strdup(a), b ? strdup(b) : NULL, ino};
}

static void cfs_log_clear(crashfs_t *fs)
{
    for (size_t i = 0; i < fs->nlog; i++) {
        free(fs->log[i].a);
        free(fs->log[i].b);
    }
    fs->nlog = 0;
}

static void cfs_resize(cfs_inode_t *f, size_t len)
{
    if (len > f->cur_cap) {
        size_t c = f->cur_cap ? f->cur_cap : 1024;
        while (c < len)
            c *= 2;
        f->cur = realloc(f->cur, c);
        f->cur_cap = c;
    }
    if (len > f->cur_len)
        memset(f->cur + f->cur_len, 0, len - f->cur_len);
    if (len > f->dirty_cap) {
        f->dirty = realloc(f->dirty, f->cur_cap);
        memset(f->dirty + f->dirty_cap, 0, f->cur_cap - f->dirty_cap);
        f->dirty_cap = f->cur_cap;
    }
    f->cur_len = len;
}

static void cfs_mark(cfs_inode_t *f, size_t off, size_t len)
{
    for (size_t i = off; i < off + len && i < f->dirty_cap; i++)
        f->dirty[i] = 1;
}

static int cfs_sector_dirty(const cfs_inode_t *f, size_t o, size_t n)
{
    for (size_t i = o; i < o + n && i < f->dirty_cap; i++)
        if (f->dirty[i])
            return 1;
    return 0;
}

static void cfs_sync_inode(cfs_inode_t *f)
{
    f->dur = realloc(f->dur, f->cur_len ? f->cur_len : 1);
    memcpy(f->dur, f->cur, f->cur_len);
    f->dur_len = f->cur_len;
    if (f->dirty_cap)
        memset(f->dirty, 0, f->dirty_cap);
}

/* Counts a crash point; returns non-zero if the operation must report -EIO (it still runs
 * when this is the crash point itself). */
static int cfs_point(crashfs_t *fs, int *run)
{
    *run = 1;
    if (fs->crashed) {
        *run = 0;
        return 1;
    }
    fs->points++;
    if (fs->countdown > 0 && --fs->countdown == 0) {
        fs->crashed = 1;
        return 1;
    }
    return 0;
}

#define CFS ((crashfs_t *)ctx)

static int cfs_open(void *ctx, const char *path, int flags, int mode)
{
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    cfs_inode_t *f = cfs_ns_get(&CFS->cur, path);
    if (f && (flags & O_CREAT) && (flags & O_EXCL))
        return -EEXIST;
    if (!f) {
        if (!(flags & O_CREAT))
            return dead ? -EIO : -ENOENT;
        f = calloc(1, sizeof *f);
        f->next = CFS->inodes;
        CFS->inodes = f;
        cfs_ns_set(&CFS->cur, path, f);
        cfs_log(CFS, CFS_LINK, path, NULL, f);
    }
    if (flags & O_TRUNC) {
        cfs_mark(f, 0, f->cur_len);
        cfs_resize(f, 0);
    }
    for (int i = 3; i < CFS_MAXFD; i++)
        if (!CFS->fds[i]) {
            CFS->fds[i] = f;
            return dead ? -EIO : i;
        }
    return -EMFILE;
}

static cfs_inode_t *cfs_fd(void *ctx, int fd) { return fd >= 0 && fd < CFS_MAXFD ? CFS->fds[fd] : NULL; }

static int cfs_close(void *ctx, int fd)
{
    if (!cfs_fd(ctx, fd))
        return -EBADF;
    CFS->fds[fd] = NULL;
    return 0;
}

static ssize_t cfs_pread(void *ctx, int fd, void *buf, size_t len, uint64_t off)
{
    cfs_inode_t *f = cfs_fd(ctx, fd);
    if (!f)
        return -EBADF;
    if (CFS->crashed)
        return -EIO;
    if (off >= f->cur_len)
        return 0;
    if (len > f->cur_len - off)
        len = f->cur_len - off;
    memcpy(buf, f->cur + off, len);
    return (ssize_t)len;
}

static ssize_t cfs_pwrite(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
    cfs_inode_t *f = cfs_fd(ctx, fd);
    if (!f)
        return -EBADF;
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    CFS->n_pwrite++;
    if (CFS->pwrite_quota >= 0) {
        if (CFS->pwrite_quota == 0)
            return -ENOSPC;
        if ((long long)len > CFS->pwrite_quota)
            len = (size_t)CFS->pwrite_quota;
        CFS->pwrite_quota -= (long long)len;
    }
    if (off + len > f->cur_len)
        cfs_resize(f, off + len);
    memcpy(f->cur + off, buf, len);
    cfs_mark(f, off, len);
    return dead ? -EIO : (ssize_t)len;
}

static int cfs_fdatasync(void *ctx, int fd)
{
    cfs_inode_t *f = cfs_fd(ctx, fd);
    if (!f)
        return -EBADF;
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    CFS->n_fdatasync++;
    if (CFS->fdatasync_fail_at > 0 && CFS->n_fdatasync == CFS->fdatasync_fail_at)
        return -EIO; /* like Linux: the dirty pages may or may not be on disk */
    cfs_sync_inode(f);
    return dead ? -EIO : 0;
}

static int cfs_fsync(void *ctx, int fd)
{
    cfs_inode_t *f = cfs_fd(ctx, fd);
    if (!f)
        return -EBADF;
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    CFS->n_fsync++;
    cfs_sync_inode(f);
    return dead ? -EIO : 0;
}

static int cfs_fsync_dir(void *ctx, const char *path)
{
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    for (size_t i = 0; i < CFS->nlog; i++)
        cfs_ns_apply(&CFS->dur, &CFS->log[i]);
    cfs_log_clear(CFS);
    return dead ? -EIO : 0;
}

static int cfs_ftruncate(void *ctx, int fd, uint64_t len)
{
    cfs_inode_t *f = cfs_fd(ctx, fd);
    if (!f)
        return -EBADF;
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    if (len < f->cur_len)
        cfs_mark(f, len, f->cur_len - len);
    cfs_resize(f, len);
    return dead ? -EIO : 0;
}

static int cfs_fallocate(void *ctx, int fd, uint64_t off, uint64_t len)
{
    cfs_inode_t *f = cfs_fd(ctx, fd);
    if (!f)
        return -EBADF;
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    if (CFS->fallocate_errno)
        return -CFS->fallocate_errno;
    if (off + len > f->cur_len)
        cfs_resize(f, off + len);
    return dead ? -EIO : 0;
}

static int cfs_size(void *ctx, int fd, uint64_t *size)
{
    cfs_inode_t *f = cfs_fd(ctx, fd);
    if (!f)
        return -EBADF;
    if (CFS->crashed)
        return -EIO;
    *size = f->cur_len;
    return 0;
}

static int cfs_unlink(void *ctx, const char *path)
{
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    if (!cfs_ns_del(&CFS->cur, path))
        return -ENOENT;
    cfs_log(CFS, CFS_UNLINK, path, NULL, NULL);
    return dead ? -EIO : 0;
}

static int cfs_rename(void *ctx, const char *from, const char *to)
{
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    cfs_inode_t *f = cfs_ns_get(&CFS->cur, from);
    if (!f)
        return -ENOENT;
    cfs_ns_del(&CFS->cur, from);
    cfs_ns_set(&CFS->cur, to, f);
    cfs_log(CFS, CFS_RENAME, from, to, NULL);
    return dead ? -EIO : 0;
}

static int cfs_mkdir(void *ctx, const char *path, int mode)
{
    int run, dead = cfs_point(CFS, &run);
    if (!run)
        return -EIO;
    for (int i = 0; i < CFS->ndirs; i++)
        if (strcmp(CFS->dirs[i], path) == 0)
            return -EEXIST;
    if (CFS->ndirs == 16)
        return -ENOSPC;
    CFS->dirs[CFS->ndirs++] = strdup(path); /* directories are durable at once */
    return dead ? -EIO : 0;
}

static int cfs_list(void *ctx, const char *dir, cairn_fileops_list_fn fn, void *arg)
{
    if (CFS->crashed)
        return -EIO;
    size_t dl = strlen(dir);
    /* copy the names first: fn may unlink */
    size_t n = CFS->cur.n;
    char **names = calloc(n + 1, sizeof *names);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *nm = CFS->cur.v[i].name;
        if (strncmp(nm, dir, dl) == 0 && nm[dl] == '/' && !strchr(nm + dl + 1, '/'))
            names[k++] = strdup(nm + dl + 1);
    }
    int rc = 0;
    for (size_t i = 0; i < k; i++) {
        if (!rc)
            rc = fn(arg, names[i]);
        free(names[i]);
    }
    free(names);
    return rc;
}

#undef CFS

static crashfs_t *crashfs_new(void)
{
    crashfs_t *fs = calloc(1, sizeof *fs);
    fs->pwrite_quota = -1;
    fs->ops = (cairn_fileops_t){
        .ctx = fs,
        .open = cfs_open,
        .close = cfs_close,
        .pread = cfs_pread,
        .pwrite = cfs_pwrite,
        .fdatasync = cfs_fdatasync,
        .fsync = cfs_fsync,
        .fsync_dir = cfs_fsync_dir,
        .ftruncate = cfs_ftruncate,
        .fallocate = cfs_fallocate,
        .size = cfs_size,
        .unlink = cfs_unlink,
        .rename = cfs_rename,
        .mkdir = cfs_mkdir,
        .list = cfs_list,
    };
    return fs;
}

static void crashfs_destroy(crashfs_t **fsp)
{
    crashfs_t *fs = *fsp;
    if (!fs)
        return;
    for (cfs_inode_t *f = fs->inodes, *nx; f; f = nx) {
        nx = f->next;
        free(f->cur);
        free(f->dur);
        free(f->dirty);
        free(f);
    }
    cfs_ns_clear(&fs->cur);
    cfs_ns_clear(&fs->dur);
    free(fs->cur.v);
    free(fs->dur.v);
    cfs_log_clear(fs);
    free(fs->log);
    for (int i = 0; i < fs->ndirs; i++)
        free(fs->dirs[i]);
    free(fs);
    *fsp = NULL;
}

static void crashfs_arm(crashfs_t *fs, long k) { fs->countdown = k; }

/* Power loss and reboot: see the top of this file. Closes every fd. */
static void crashfs_crash(crashfs_t *fs, uint64_t seed)
{
    uint64_t s = seed * 0x100000001B3ull + 1;
    size_t keep = fs->nlog ? (size_t)(cfs_rand(&s) % (fs->nlog + 1)) : 0;
    for (size_t i = 0; i < keep; i++)
        cfs_ns_apply(&fs->dur, &fs->log[i]);
    cfs_log_clear(fs);
    cfs_ns_clear(&fs->cur);
    for (size_t i = 0; i < fs->dur.n; i++)
        cfs_ns_set(&fs->cur, fs->dur.v[i].name, fs->dur.v[i].ino);
    for (cfs_inode_t *f = fs->inodes; f; f = f->next) {
        size_t len = f->cur_len == f->dur_len || (cfs_rand(&s) & 1) ? f->cur_len : f->dur_len;
        uint8_t *img = calloc(1, len ? len : 1);
        if (f->dur_len)
            memcpy(img, f->dur, len < f->dur_len ? len : f->dur_len);
        for (size_t sec = 0; sec * CFS_SECTOR < len; sec++) {
            size_t o = sec * CFS_SECTOR, n = len - o < CFS_SECTOR ? len - o : CFS_SECTOR;
            if (!cfs_sector_dirty(f, o, n)) {
                if (o + n > f->dur_len) /* grown since the last sync without being written */
                    for (size_t i = o; i < o + n; i++)
                        img[i] = i < f->dur_len ? f->dur[i] : (i < f->cur_len ? f->cur[i] : 0);
                continue;
            }
            unsigned r = (unsigned)(cfs_rand(&s) % 10);
            if (r < 4) /* old content: already in img (zeroes beyond the durable size) */
                continue;
            int garbage = r >= 8 && fs->garble;
            for (size_t i = o; i < o + n; i++) {
                uint8_t v = i < f->cur_len ? f->cur[i] : 0;
                img[i] = garbage && i < f->dirty_cap && f->dirty[i] ? (uint8_t)cfs_rand(&s) : v;
            }
        }
        free(f->cur);
        f->cur = img;
        f->cur_len = f->cur_cap = len ? len : 1;
        f->cur_len = len;
        if (f->dirty_cap)
            memset(f->dirty, 0, f->dirty_cap);
        cfs_sync_inode(f);
    }
    memset(fs->fds, 0, sizeof fs->fds);
    fs->crashed = 0;
    fs->countdown = 0;
}


#endif
