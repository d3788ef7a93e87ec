/* fileops.c - the POSIX file operations table (see fileops.h). */
#include "fileops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn_err.h"

static int neg_errno(void) { return errno ? -errno : -EIO; }

static int px_open(void *ctx, const char *path, int flags, int mode)
{
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? neg_errno() : fd;
}

static int px_close(void *ctx, int fd)
{
    /* Never retry close on EINTR (Linux releases the fd anyway). */
    return close(fd) < 0 && errno != EINTR ? neg_errno() : 0;
}

static ssize_t px_pread(void *ctx, int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t n;
    do
        n = pread(fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n < 0 ? neg_errno() : n;
}

static ssize_t px_pwrite(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
    ssize_t n;
    do
        n = pwrite(fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n < 0 ? neg_errno() : n;
}

static int px_fdatasync(void *ctx, int fd)
{
    int rc;
    do
        rc = fdatasync(fd);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? neg_errno() : 0;
}

static int px_fsync(void *ctx, int fd)
{
    int rc;
    do
        rc = fsync(fd);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? neg_errno() : 0;
}

static int px_fsync_dir(void *ctx, const char *path)
{
    int fd = px_open(ctx, path, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    int rc = px_fsync(ctx, fd);
    /* Some file systems do not support fsync on a directory; that is not a failure. */
    if (rc == -EINVAL || rc == -ENOTSUP)
        rc = 0;
    px_close(ctx, fd);
    return rc;
}

static int px_ftruncate(void *ctx, int fd, uint64_t len)
{
    int rc;
    do
        rc = ftruncate(fd, (off_t)len);
    while (rc < 0 && errno == EINTR);
    return rc < 0 ? neg_errno() : 0;
}

static int px_fallocate(void *ctx, int fd, uint64_t off, uint64_t len)
{
    int rc;
    do
        rc = fallocate(fd, 0, (off_t)off, (off_t)len);
    while (rc < 0 && errno == EINTR);
    if (rc == 0)
        return 0;
    if (errno != EOPNOTSUPP && errno != ENOSYS)
        return neg_errno();
    /* posix_fallocate returns the error number instead of setting errno. */
    do
        rc = posix_fallocate(fd, (off_t)off, (off_t)len);
    while (rc == EINTR);
    return rc ? -rc : 0;
}

static int px_size(void *ctx, int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return neg_errno();
    *size = (uint64_t)st.st_size;
    return 0;
}

static int px_unlink(void *ctx, const char *path) { return unlink(path) < 0 ? neg_errno() : 0; }
static int px_rename(void *ctx, const char *from, const char *to) { return rename(from, to) < 0 ? neg_errno() : 0; }
static int px_mkdir(void *ctx, const char *path, int mode) { return mkdir(path, (mode_t)mode) < 0 ? neg_errno() : 0; }
static int px_exchange(void *ctx, const char *a, const char *b)
{
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) < 0 ? neg_errno() : 0;
}

static int px_list(void *ctx, const char *dir, cairn_fileops_list_fn fn, void *arg)
{
    DIR *d = opendir(dir);
    if (!d)
        return neg_errno();
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                rc = neg_errno();
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if ((rc = fn(arg, de->d_name)) != 0)
            break;
    }
    closedir(d);
    return rc;
}

static const cairn_fileops_t g_posix = {
    .ctx = NULL,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fdatasync = px_fdatasync,
    .fsync = px_fsync,
    .fsync_dir = px_fsync_dir,
    .ftruncate = px_ftruncate,
    .fallocate = px_fallocate,
    .size = px_size,
    .unlink = px_unlink,
    .rename = px_rename,
    .mkdir = px_mkdir,
    .list = px_list,
    .exchange = px_exchange,
};

static const cairn_fileops_t *g_default = &g_posix;

const cairn_fileops_t *cairn_fileops_posix(void) { return &g_posix; }
const cairn_fileops_t *cairn_fileops_default(void) { return g_default; }
void cairn_fileops_set_default(const cairn_fileops_t *ops) { g_default = ops ? ops : &g_posix; }

ssize_t cairn_fileops_pread_full(const cairn_fileops_t *ops, int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = ops->pread(ops->ctx, fd, (char *)buf + done, len - done, off + done);
        if (n < 0)
            return n;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int cairn_fileops_pwrite_full(const cairn_fileops_t *ops, int fd, const void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = ops->pwrite(ops->ctx, fd, (const char *)buf + done, len - done, off + done);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        done += (size_t)n;
    }
    return 0;
}

int cairn_fileops_err(int e)
{
    switch (e) {
    case -ENOSPC:
    case -EDQUOT:
    case -EFBIG:
        return CAIRN_ENOSPC;
    case -ENOMEM:
        return CAIRN_ENOMEM;
    default:
        return CAIRN_EIO;
    }
}

int cairn_freader_get(cairn_freader_t *r, uint64_t off, size_t n, const uint8_t **out)
{
    if (off >= r->boff && off + n <= r->boff + r->blen) {
        *out = r->buf + (off - r->boff);
        return 0;
    }
    size_t want = n > CAIRN_FREADER_CHUNK ? n : CAIRN_FREADER_CHUNK;
    if (want > r->size - off)
        want = (size_t)(r->size - off);
    if (want > r->cap) {
        free(r->buf);
        r->blen = 0;
        r->cap = 0;
        if (!(r->buf = malloc(want)))
            return CAIRN_ENOMEM;
        r->cap = want;
    }
    ssize_t got = cairn_fileops_pread_full(r->ops, r->fd, r->buf, want, off);
    if (got < 0) {
        r->blen = 0;
        return cairn_fileops_err((int)got);
    }
    r->boff = off;
    r->blen = (size_t)got;
    if ((size_t)got < n)
        return CAIRN_EIO; /* the file shrank under us */
    *out = r->buf;
    return 0;
}

void cairn_freader_free(cairn_freader_t *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = r->blen = 0;
}
