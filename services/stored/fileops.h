/* fileops.h - the file operations table of stored.
 *
 * Every byte stored writes to disk goes through one of these tables (the WAL, snapshot files
 * written, sent and received, their renames, listings and removals), so tests can swap the
 * real POSIX layer for a crash layer that keeps unsynced writes in memory and, on a
 * simulated power loss, drops or garbles them (SQLite's crash test is the model). Outside it:
 * what LevelDB itself writes (mvcc/, behind LevelDB's Env; stored's check and cut of LevelDB's
 * logs before LevelDB opens them, mvcc_ldblog.c, does go through it) and the removal of a
 * whole store directory (cairn_snap_rmtree).
 *
 * Conventions: every function returns 0 (or a non-negative count / fd) on success and a
 * NEGATIVE errno (-ENOSPC, -EIO, ...) on failure - raw errno, not CAIRN_E*, so the caller
 * can tell ENOSPC from EIO; cairn_fileops_err() maps one to a CAIRN_E* code. Offsets and
 * sizes are uint64_t. `ctx` is passed back to every function unchanged.
 */
#ifndef CAIRN_FILEOPS_H
#define CAIRN_FILEOPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Called once per directory entry ("." and ".." excluded); a non-zero return stops the
 * listing and is returned by list(). */
typedef int (*cairn_fileops_list_fn)(void *arg, const char *name);

typedef struct cairn_fileops {
    void *ctx;
    /* flags: O_RDONLY/O_RDWR plus O_CREAT, O_EXCL, O_TRUNC; O_CLOEXEC is added by the
     * POSIX layer. Returns an fd >= 0. */
    int (*open)(void *ctx, const char *path, int flags, int mode);
    int (*close)(void *ctx, int fd);
    /* Like pread(2)/pwrite(2): may transfer less than len; 0 from pread means EOF. */
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t len, uint64_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t len, uint64_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*fsync)(void *ctx, int fd);
    /* Makes the directory's entries (creates, renames, unlinks) durable. */
    int (*fsync_dir)(void *ctx, const char *path);
    int (*ftruncate)(void *ctx, int fd, uint64_t len);
    /* Allocates [off, off+len), extending the file size if needed; new bytes read as zero. */
    int (*fallocate)(void *ctx, int fd, uint64_t off, uint64_t len);
    int (*size)(void *ctx, int fd, uint64_t *size);
    int (*unlink)(void *ctx, const char *path);
    int (*rename)(void *ctx, const char *from, const char *to);
    /* -EEXIST if it already exists. */
    int (*mkdir)(void *ctx, const char *path, int mode);
    int (*list)(void *ctx, const char *dir, cairn_fileops_list_fn fn, void *arg);
    /* Exchanges two paths atomically (renameat2 RENAME_EXCHANGE); may be NULL or answer
     * -ENOSYS/-EINVAL/-ENOTSUP where the filesystem cannot, and the caller renames instead. */
    int (*exchange)(void *ctx, const char *a, const char *b);
} cairn_fileops_t;

/* The real thing: POSIX calls, EINTR retried, fallocate(2) falling back to posix_fallocate. */
const cairn_fileops_t *cairn_fileops_posix(void);

/* The table used when a caller passes NULL: POSIX unless a test installed another one with
 * cairn_fileops_set_default (NULL restores POSIX). Not thread-safe: set it before use. */
const cairn_fileops_t *cairn_fileops_default(void);
void cairn_fileops_set_default(const cairn_fileops_t *ops);

/* Reads up to len bytes, looping over short reads; returns the count read (< len only at
 * end of file) or -errno. */
ssize_t cairn_fileops_pread_full(const cairn_fileops_t *ops, int fd, void *buf, size_t len, uint64_t off);
/* Writes all len bytes, looping over short writes; returns 0 or -errno. */
int cairn_fileops_pwrite_full(const cairn_fileops_t *ops, int fd, const void *buf, size_t len, uint64_t off);

/* Maps a negative errno to CAIRN_ENOSPC (ENOSPC, EDQUOT, EFBIG), CAIRN_ENOMEM or CAIRN_EIO. */
int cairn_fileops_err(int neg_errno);

/* A buffered reader over a file of known size, for the parsers of the WAL and of snapshot
 * files: it reads CAIRN_FREADER_CHUNK at a time and hands out pointers into its buffer. */
#define CAIRN_FREADER_CHUNK ((size_t)1 << 20)
typedef struct {
    const cairn_fileops_t *ops;
    int fd;
    uint64_t size; /* the file's size: the caller sets ops, fd and size, the rest starts zero */
    uint8_t *buf;
    size_t cap;
    uint64_t boff;
    size_t blen;
} cairn_freader_t;

/* Makes [off, off+n) available in *out (valid until the next call). The caller guarantees
 * off + n <= r->size, so no length read from a file can make this allocate more than the file
 * holds. 0, CAIRN_ENOMEM, CAIRN_EIO (also: the file shrank) or a cairn_fileops_err code. */
int cairn_freader_get(cairn_freader_t *r, uint64_t off, size_t n, const uint8_t **out);
void cairn_freader_free(cairn_freader_t *r);

#endif
