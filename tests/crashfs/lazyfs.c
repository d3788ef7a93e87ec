/* lazyfs.c - a FUSE file system for tests that can lose what was not synced, as a power loss
 * would (issue 11, "Nemesis"). Test only: never mount a real data directory on it.
 *
 *     lazyfs BACKING_DIR MOUNTPOINT [--seed N] [--max-undo-mb M] [-d] [-o FUSE_OPTION]...
 *
 * MOUNTPOINT becomes a passthrough of BACKING_DIR. lazyfs stays in the foreground (the caller
 * backgrounds it and keeps its PID); SIGTERM/SIGINT unmount it, and so does `fusermount3 -u`.
 * It is mounted with auto_unmount, so a lazyfs that is killed -9 does not leave a dead mount.
 *
 * Why: a kill -9 of a process loses only what the process held; the kernel keeps its page
 * cache, so unsynced writes survive. lazyfs keeps, per file, what was written since that file's
 * last fsync/fdatasync, and can undo it on command: the files then look as after a power loss.
 *
 * MODEL
 * =====
 * Writes go through to the backing file at once (reads see them, as they would see the page
 * cache). Before a change, lazyfs saves what it overwrites: an undo log per file, keyed by the
 * backing inode (st_dev, st_ino), so a rename keeps it. A file's state holds
 *   - the synced size: the file's size when its state was created, i.e. at its first change
 *     since its last sync (a file without state has nothing unsynced, so its size then is
 *     durable). A file created and never synced has synced size 0;
 *   - the undo entries, in the order of the changes: offset + the bytes the change replaced,
 *     only for the part below the synced size (bytes at or past it vanish anyway when the file
 *     is cut back to the synced size, so keeping them would cost memory for nothing);
 *   - an O_RDWR descriptor of the backing inode, reopened through /proc/self/fd: undo goes
 *     through it, whatever the file is called by then (renamed, or unlinked while open), and
 *     the inode cannot be freed and its number reused while lazyfs holds it.
 * A change is: write; truncate/ftruncate/O_TRUNC (a size change is metadata, durable only at the
 * next fsync: shrinking saves the bytes cut off below the synced size; growing saves nothing,
 * the final cut undoes it); fallocate (mode 0 and KEEP_SIZE change no byte, only maybe the
 * size; PUNCH_HOLE and ZERO_RANGE save the range; other modes are refused with EOPNOTSUPP).
 * fsync and fdatasync of a file drop its state: everything written so far is durable (lazyfs
 * does not fsync the backing file: the power loss emulated is lazyfs's own, and not flushing
 * keeps the tests fast). fsync of a directory is a no-op.
 *
 * Not modelled: directory entries. create, unlink, rename, mkdir, rmdir, link, symlink are
 * durable at once, whether or not the directory is fsync'd (a crash never brings back an
 * unlinked file or undoes a rename). An unlink or rename that removes the last name of a file
 * forgets its undo state (the file is gone). A crash leaves a file that was created and never
 * synced in place, with size 0.
 *
 * Commands: the control file MOUNTPOINT/.lazyfs-ctl (not listed by readdir). Write one command
 * a write (a trailing newline is ignored); the write returns once it is done, with EINVAL for
 * an unknown command:
 *   crash   every unsynced change of every file is undone: pre-images restored newest first,
 *           then the file cut (or zero-extended) to its synced size. All state is dropped.
 *   tear    a torn power loss: each unsynced 4 KiB page (a page touched by an undo entry, or
 *           a page past the synced size) independently keeps its new bytes or gets its old
 *           ones back (bytes past the synced size: zeroes), and a file whose size changed
 *           ends at either its synced or its current size. Only bytes written since the last
 *           sync ever change (SQLite's POWERSAFE_OVERWRITE: durable bytes that share a page
 *           with them keep their value). Every choice is a hash of (--seed, the number of
 *           tears so far, the order in which the file got its state since the last crash, the
 *           page), so the same writes with the same seed tear the same way. All state dropped.
 *   sync    everything unsynced becomes durable (state dropped; nothing undone).
 * Reading the control file returns one line:
 *   lazyfs files=F unsynced_bytes=B undo_bytes=U forced_synced_bytes=X crashes=C tears=T seed=S
 * F: files with unsynced changes; B: bytes written (or cut, or allocated) to them since their
 * last sync; U: memory held by their undo logs; X: bytes treated as synced because of the
 * undo cap (below); C, T: commands done.
 *
 * Bounded memory: the undo logs together hold at most --max-undo-mb (512) MiB. Past that the
 * oldest entries (over all files) are forgotten, i.e. those writes are treated as synced (a
 * real kernel may write back any dirty page early, so this is still a state a power loss can
 * leave), and counted in forced_synced_bytes.
 *
 * Kernel caches: attributes and entries are not cached (timeouts 0) and a file's pages are
 * dropped at each open (no keep_cache), so a process that opens a file after a crash sees the
 * undone bytes and size. Do a crash while nothing has the files open (kill the writer first):
 * a descriptor still open may keep reading pages the kernel cached before it.
 * Locks (fcntl and flock) are not implemented here, so the kernel keeps them locally, which is
 * what LevelDB's LOCK file needs. Multithreaded; one mutex guards all undo state, and every
 * write, truncate and fallocate runs under it, so a command never sees half of one.
 */
#define FUSE_USE_VERSION 31
#include <fuse.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#define CTL_NAME "/.lazyfs-ctl"
#define CTL_FH UINT64_MAX
#define PAGE 4096
#define NBUCKET 256

typedef struct {
    off_t off;
    size_t len;
    uint64_t seq; /* global order of entries, for the cap */
    unsigned char data[];
} undo_t;

typedef struct fstate {
    dev_t dev;
    ino_t ino;
    int fd;
    off_t synced_size;
    undo_t **v;
    size_t head, n, cap; /* live entries are v[head..n) (entries before head were forgotten) */
    uint64_t order;      /* when it got its state, since the last crash/tear (for tear's hash) */
    uint64_t changed;    /* bytes changed since the last sync (status) */
    struct fstate *next;
} fstate_t;

static struct {
    int backing;        /* O_PATH|O_DIRECTORY descriptor of BACKING_DIR */
    uint64_t seed;
    uint64_t cap_bytes;
    pthread_mutex_t mu; /* everything below */
    fstate_t *buckets[NBUCKET];
    uint64_t undo_bytes, forced, crashes, tears, order, seq;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---- paths: FUSE gives "/a/b"; everything is opened relative to the backing directory ------ */
static const char *rel(const char *path)
{
    if (!path || !path[0] || (path[0] == '/' && !path[1]))
        return ".";
    return path[0] == '/' ? path + 1 : path;
}

static int is_ctl(const char *path) { return path && strcmp(path, CTL_NAME) == 0; }
/* the control file, by path or (nullpath_ok: the path may be NULL) by handle */
static int is_ctl_op(const char *path, const struct fuse_file_info *fi)
{
    return is_ctl(path) || (fi && fi->fh == CTL_FH);
}

/* ---- undo state (callers hold g.mu) ---------------------------------------------------------- */
static fstate_t **slot_of(dev_t dev, ino_t ino)
{
    uint64_t h = ((uint64_t)ino * 0x9E3779B97F4A7C15ull) ^ (uint64_t)dev;
    fstate_t **pp = &g.buckets[(h >> 32) % NBUCKET];
    while (*pp && !((*pp)->dev == dev && (*pp)->ino == ino))
        pp = &(*pp)->next;
    return pp;
}

static void state_free(fstate_t *s)
{
    for (size_t i = s->head; i < s->n; i++) {
        g.undo_bytes -= sizeof(undo_t) + s->v[i]->len;
        free(s->v[i]);
    }
    free(s->v);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

/* The state of the inode behind fd, created (synced size = its size now) when missing. NULL
 * with errno set when it cannot be made (then the change is refused: a change lazyfs could
 * not undo would make a crash lie). */
static fstate_t *state_get(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return NULL;
    fstate_t **pp = slot_of(st.st_dev, st.st_ino);
    if (*pp)
        return *pp;
    fstate_t *s = calloc(1, sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    s->fd = open(p, O_RDWR | O_CLOEXEC);
    if (s->fd < 0) {
        int e = errno;
        free(s);
        errno = e;
        return NULL;
    }
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->synced_size = st.st_size;
    s->order = g.order++;
    *pp = s;
    return s;
}

static void state_drop_ino(dev_t dev, ino_t ino)
{
    fstate_t **pp = slot_of(dev, ino);
    fstate_t *s = *pp;
    if (s) {
        *pp = s->next;
        state_free(s);
    }
}

/* Past the cap: forget the oldest entries over all files (those writes count as synced). */
static void enforce_cap(void)
{
    while (g.undo_bytes > g.cap_bytes) {
        fstate_t *best = NULL;
        for (int b = 0; b < NBUCKET; b++)
            for (fstate_t *s = g.buckets[b]; s; s = s->next)
                if (s->head < s->n && (!best || s->v[s->head]->seq < best->v[best->head]->seq))
                    best = s;
        if (!best)
            return;
        undo_t *u = best->v[best->head++];
        g.undo_bytes -= sizeof(undo_t) + u->len;
        g.forced += u->len;
        free(u);
    }
}

/* Saves the bytes now in [off, off+len) below the synced size, before a change overwrites them.
 * Bytes that are not there (past the current end of a file cut by an earlier change) are not
 * saved: that earlier change's entry restores them. 0, or -errno. */
static int save(fstate_t *s, off_t off, off_t len)
{
    if (len <= 0 || off >= s->synced_size)
        return 0;
    if (off + len > s->synced_size)
        len = s->synced_size - off;
    undo_t *u = malloc(sizeof *u + (size_t)len);
    if (!u)
        return -ENOMEM;
    ssize_t got = 0;
    while (got < len) {
        ssize_t r = pread(s->fd, u->data + got, (size_t)(len - got), off + got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(u);
            return -e;
        }
        if (r == 0)
            break;
        got += r;
    }
    if (got == 0) {
        free(u);
        return 0;
    }
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        undo_t **nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) {
            free(u);
            return -ENOMEM;
        }
        s->v = nv;
        s->cap = nc;
    }
    u->off = off;
    u->len = (size_t)got;
    u->seq = g.seq++;
    s->v[s->n++] = u;
    g.undo_bytes += sizeof(undo_t) + u->len;
    enforce_cap();
    return 0;
}

static void pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fprintf(stderr, "lazyfs: undo write failed at %lld: %s\n", (long long)off, strerror(errno));
            return;
        }
        p += w;
        len -= (size_t)w;
        off += w;
    }
}

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* tear's choice for one page of one file (1: the page gets its old bytes back) */
static int tear_reverts(const fstate_t *s, uint64_t page)
{
    return (int)(mix(mix(mix(mix(g.seed) ^ g.tears) ^ s->order) ^ page) >> 17) & 1;
}

/* Undoes a file's unsynced changes: all of them (torn = 0) or those of the pages tear picks. */
static void undo_file(fstate_t *s, int torn)
{
    for (size_t i = s->n; i-- > s->head;) {
        undo_t *u = s->v[i];
        if (!torn) {
            pwrite_all(s->fd, u->data, u->len, u->off);
            continue;
        }
        off_t end = u->off + (off_t)u->len;
        for (off_t p = u->off; p < end;) {
            off_t pe = (p / PAGE + 1) * PAGE;
            if (pe > end)
                pe = end;
            if (tear_reverts(s, (uint64_t)(p / PAGE)))
                pwrite_all(s->fd, u->data + (p - u->off), (size_t)(pe - p), p);
            p = pe;
        }
    }
    struct stat st;
    off_t cur = fstat(s->fd, &st) == 0 ? st.st_size : s->synced_size;
    off_t final = s->synced_size;
    if (torn && cur != s->synced_size && (mix(mix(mix(g.seed ^ 0x5157) ^ g.tears) ^ s->order) >> 17 & 1))
        final = cur; /* the size reached the disk */
    if (ftruncate(s->fd, final) < 0)
        fprintf(stderr, "lazyfs: undo truncate failed: %s\n", strerror(errno));
    if (torn && final > s->synced_size) {
        /* pages past the synced size that were not written back read as zeroes */
        static const unsigned char zero[PAGE];
        for (off_t p = s->synced_size; p < final;) {
            off_t pe = (p / PAGE + 1) * PAGE;
            if (pe > final)
                pe = final;
            if (tear_reverts(s, (uint64_t)(p / PAGE)))
                pwrite_all(s->fd, zero, (size_t)(pe - p), p);
            p = pe;
        }
    }
}

/* crash (torn = 0), tear (1) or sync (-1) of every file; the state is dropped */
static void power_loss(int torn)
{
    for (int b = 0; b < NBUCKET; b++) {
        fstate_t *s = g.buckets[b];
        g.buckets[b] = NULL;
        while (s) {
            fstate_t *nx = s->next;
            if (torn >= 0)
                undo_file(s, torn);
            state_free(s);
            s = nx;
        }
    }
    g.order = 0;
    if (torn == 0)
        g.crashes++;
    else if (torn == 1)
        g.tears++;
}

/* ---- file system operations ------------------------------------------------------------------ */
static void *lz_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->use_ino = 1;
    cfg->nullpath_ok = 1;
    cfg->hard_remove = 1; /* no .fuse_hidden files in the data directories */
    cfg->attr_timeout = 0;
    cfg->entry_timeout = 0;
    cfg->negative_timeout = 0;
    cfg->kernel_cache = 0;
    cfg->auto_cache = 0;
    return NULL;
}

/* unmounted: the undo state is dropped (nothing undone), so a sanitizer build reports no leak */
static void lz_destroy(void *data)
{
    (void)data;
    pthread_mutex_lock(&g.mu);
    power_loss(-1);
    pthread_mutex_unlock(&g.mu);
}

static int lz_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    if (is_ctl_op(path, fi)) {
        memset(st, 0, sizeof *st);
        st->st_mode = S_IFREG | 0666;
        st->st_nlink = 1;
        st->st_ino = 1;
        return 0;
    }
    int rc = fi && fi->fh != CTL_FH ? fstat((int)fi->fh, st) : fstatat(g.backing, rel(path), st, AT_SYMLINK_NOFOLLOW);
    return rc < 0 ? -errno : 0;
}

static int lz_readlink(const char *path, char *buf, size_t size)
{
    if (size == 0)
        return -EINVAL;
    ssize_t n = readlinkat(g.backing, rel(path), buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = 0;
    return 0;
}

/* A directory is opened once (opendir) and read through its descriptor: with nullpath_ok the
 * kernel may give readdir no path. */
static int lz_opendir(const char *path, struct fuse_file_info *fi)
{
    int fd = openat(g.backing, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    fi->fh = (uint64_t)fd;
    return 0;
}

static int lz_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
    (void)path;
    (void)off;
    (void)flags;
    /* the whole directory at once (offsets 0 to fill): a fresh stream over a dup, from the start */
    int fd = fcntl((int)fi->fh, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return -e;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        memset(&st, 0, sizeof st);
        st.st_ino = de->d_ino;
        st.st_mode = (mode_t)(de->d_type << 12);
        if (fill(buf, de->d_name, &st, 0, 0))
            break;
    }
    closedir(d);
    return 0;
}

static int lz_releasedir(const char *path, struct fuse_file_info *fi)
{
    close((int)fi->fh);
    return 0;
}

static int lz_mkdir(const char *path, mode_t mode) { return mkdirat(g.backing, rel(path), mode) < 0 ? -errno : 0; }
static int lz_rmdir(const char *path) { return unlinkat(g.backing, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0; }
static int lz_symlink(const char *to, const char *path) { return symlinkat(to, g.backing, rel(path)) < 0 ? -errno : 0; }
static int lz_link(const char *from, const char *to)
{
    return linkat(g.backing, rel(from), g.backing, rel(to), 0) < 0 ? -errno : 0;
}

/* the last name of a file is going away: forget its undo state (the file is gone) */
static void forget_if_last(const char *path)
{
    struct stat st;
    if (fstatat(g.backing, rel(path), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1)
        state_drop_ino(st.st_dev, st.st_ino);
}

static int lz_unlink(const char *path)
{
    if (is_ctl(path))
        return -EPERM;
    pthread_mutex_lock(&g.mu);
    forget_if_last(path);
    int rc = unlinkat(g.backing, rel(path), 0) < 0 ? -errno : 0;
    pthread_mutex_unlock(&g.mu);
    return rc;
}

static int lz_rename(const char *from, const char *to, unsigned int flags)
{
    if (is_ctl(from) || is_ctl(to))
        return -EPERM;
    pthread_mutex_lock(&g.mu);
    struct stat st;
    int replaced = !(flags & RENAME_EXCHANGE) &&
                   fstatat(g.backing, rel(to), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
                   st.st_nlink == 1;
    int rc = renameat2(g.backing, rel(from), g.backing, rel(to), flags) < 0 ? -errno : 0;
    if (rc == 0 && replaced) {
        struct stat now; /* the replaced file is gone unless from and to were one file */
        if (fstatat(g.backing, rel(to), &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != st.st_ino ||
            now.st_dev != st.st_dev)
            state_drop_ino(st.st_dev, st.st_ino);
    }
    pthread_mutex_unlock(&g.mu);
    return rc;
}

static int lz_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    if (is_ctl_op(path, fi))
        return 0;
    int rc = fi ? fchmod((int)fi->fh, mode) : fchmodat(g.backing, rel(path), mode, 0);
    return rc < 0 ? -errno : 0;
}

static int lz_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    if (is_ctl_op(path, fi))
        return 0;
    int rc = fi ? fchown((int)fi->fh, uid, gid) : fchownat(g.backing, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW);
    return rc < 0 ? -errno : 0;
}

static int lz_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    if (is_ctl_op(path, fi))
        return 0;
    int rc = fi ? futimens((int)fi->fh, tv) : utimensat(g.backing, rel(path), tv, AT_SYMLINK_NOFOLLOW);
    return rc < 0 ? -errno : 0;
}

/* a size change of fd (saved first); callers hold g.mu */
static int truncate_locked(int fd, off_t size)
{
    fstate_t *s = state_get(fd);
    if (!s)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (size < st.st_size) {
        int rc = save(s, size, st.st_size - size);
        if (rc)
            return rc;
        s->changed += (uint64_t)(st.st_size - size);
    } else {
        s->changed += (uint64_t)(size - st.st_size);
    }
    return ftruncate(fd, size) < 0 ? -errno : 0;
}

static int lz_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    if (is_ctl_op(path, fi))
        return 0;
    int fd = fi ? (int)fi->fh : openat(g.backing, rel(path), O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    pthread_mutex_lock(&g.mu);
    int rc = truncate_locked(fd, size);
    pthread_mutex_unlock(&g.mu);
    if (!fi)
        close(fd);
    return rc;
}

/* O_APPEND is dropped: the kernel passes the offset of an appending write, and pwrite on an
 * O_APPEND descriptor would ignore it. O_TRUNC is done here, as a change that can be undone.
 * O_DIRECT is dropped (the kernel's buffers are not aligned for it). */
static int open_flags(int flags) { return (flags & ~(O_APPEND | O_TRUNC | O_DIRECT | O_CREAT | O_EXCL)) | O_CLOEXEC; }

static int after_open(int fd, int flags, struct fuse_file_info *fi)
{
    if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY) {
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_size > 0) {
            pthread_mutex_lock(&g.mu);
            int rc = truncate_locked(fd, 0);
            pthread_mutex_unlock(&g.mu);
            if (rc) {
                close(fd);
                return rc;
            }
        }
    }
    fi->fh = (uint64_t)fd;
    fi->keep_cache = 0;
    return 0;
}

static int lz_open(const char *path, struct fuse_file_info *fi)
{
    if (is_ctl(path)) {
        fi->fh = CTL_FH;
        fi->direct_io = 1;
        return 0;
    }
    int fd = openat(g.backing, rel(path), open_flags(fi->flags));
    if (fd < 0)
        return -errno;
    return after_open(fd, fi->flags, fi);
}

static int lz_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    if (is_ctl(path)) {
        fi->fh = CTL_FH;
        fi->direct_io = 1;
        return 0;
    }
    int fd = openat(g.backing, rel(path), open_flags(fi->flags) | O_CREAT | (fi->flags & O_EXCL), mode);
    if (fd < 0)
        return -errno;
    return after_open(fd, fi->flags, fi);
}

static int status_line(char *buf, size_t cap)
{
    uint64_t files = 0, changed = 0;
    for (int b = 0; b < NBUCKET; b++)
        for (fstate_t *s = g.buckets[b]; s; s = s->next) {
            files++;
            changed += s->changed;
        }
    return snprintf(buf, cap,
                    "lazyfs files=%" PRIu64 " unsynced_bytes=%" PRIu64 " undo_bytes=%" PRIu64
                    " forced_synced_bytes=%" PRIu64 " crashes=%" PRIu64 " tears=%" PRIu64 " seed=%" PRIu64 "\n",
                    files, changed, g.undo_bytes, g.forced, g.crashes, g.tears, g.seed);
}

static int lz_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    if (fi->fh == CTL_FH) {
        char line[512];
        pthread_mutex_lock(&g.mu);
        int n = status_line(line, sizeof line);
        pthread_mutex_unlock(&g.mu);
        if (n < 0 || off >= n)
            return 0;
        size_t k = (size_t)(n - off) < size ? (size_t)(n - off) : size;
        memcpy(buf, line + off, k);
        return (int)k;
    }
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int control(const char *buf, size_t size)
{
    char cmd[16];
    while (size > 0 && (buf[size - 1] == '\n' || buf[size - 1] == '\r' || buf[size - 1] == ' '))
        size--;
    if (size == 0 || size >= sizeof cmd)
        return -EINVAL;
    memcpy(cmd, buf, size);
    cmd[size] = 0;
    int torn;
    if (strcmp(cmd, "crash") == 0)
        torn = 0;
    else if (strcmp(cmd, "tear") == 0)
        torn = 1;
    else if (strcmp(cmd, "sync") == 0)
        torn = -1;
    else
        return -EINVAL;
    pthread_mutex_lock(&g.mu);
    power_loss(torn);
    pthread_mutex_unlock(&g.mu);
    return 0;
}

static int lz_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    if (fi->fh == CTL_FH) {
        int rc = control(buf, size);
        return rc ? rc : (int)size;
    }
    int fd = (int)fi->fh;
    pthread_mutex_lock(&g.mu);
    int rc = 0;
    fstate_t *s = state_get(fd);
    if (!s)
        rc = -errno;
    else
        rc = save(s, off, (off_t)size);
    ssize_t n = rc ? rc : pwrite(fd, buf, size, off);
    if (n < 0 && !rc)
        rc = -errno;
    if (!rc)
        s->changed += (uint64_t)n;
    pthread_mutex_unlock(&g.mu);
    return rc ? rc : (int)n;
}

static int lz_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    return fstatvfs(g.backing, st) < 0 ? -errno : 0;
}

static int lz_release(const char *path, struct fuse_file_info *fi)
{
    if (fi->fh != CTL_FH)
        close((int)fi->fh);
    return 0;
}

/* fsync and fdatasync alike: the file's writes so far are durable (its state is dropped) */
static int lz_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    if (!fi || fi->fh == CTL_FH)
        return 0;
    struct stat st;
    if (fstat((int)fi->fh, &st) < 0)
        return -errno;
    pthread_mutex_lock(&g.mu);
    state_drop_ino(st.st_dev, st.st_ino);
    pthread_mutex_unlock(&g.mu);
    return 0;
}

static int lz_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) { return 0; }

static int lz_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
    if (!fi || fi->fh == CTL_FH)
        return -EOPNOTSUPP;
    int fd = (int)fi->fh;
    int saves = 0;
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
        return -EOPNOTSUPP; /* collapse/insert range move bytes: not modelled */
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
        saves = 1;
    pthread_mutex_lock(&g.mu);
    int rc = 0;
    fstate_t *s = state_get(fd);
    if (!s)
        rc = -errno;
    else if (saves)
        rc = save(s, off, len);
    if (!rc && fallocate(fd, mode, off, len) < 0)
        rc = -errno;
    if (!rc && saves)
        s->changed += (uint64_t)len;
    pthread_mutex_unlock(&g.mu);
    return rc;
}

static const struct fuse_operations lz_ops = {
    .init = lz_init,
    .destroy = lz_destroy,
    .getattr = lz_getattr,
    .readlink = lz_readlink,
    .opendir = lz_opendir,
    .readdir = lz_readdir,
    .releasedir = lz_releasedir,
    .mkdir = lz_mkdir,
    .rmdir = lz_rmdir,
    .symlink = lz_symlink,
    .link = lz_link,
    .unlink = lz_unlink,
    .rename = lz_rename,
    .chmod = lz_chmod,
    .chown = lz_chown,
    .utimens = lz_utimens,
    .truncate = lz_truncate,
    .open = lz_open,
    .create = lz_create,
    .read = lz_read,
    .write = lz_write,
    .statfs = lz_statfs,
    .release = lz_release,
    .fsync = lz_fsync,
    .fsyncdir = lz_fsyncdir,
    .fallocate = lz_fallocate,
};

static void usage(void)
{
    fprintf(stderr, "usage: lazyfs BACKING_DIR MOUNTPOINT [--seed N] [--max-undo-mb M] [-d] [-o FUSE_OPTION]...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    char *fargv[64];
    int fargc = 0;
    const char *backing = NULL, *mnt = NULL;
    uint64_t cap_mb = 512;
    fargv[fargc++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--seed") == 0 && i + 1 < argc)
            g.seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "--max-undo-mb") == 0 && i + 1 < argc)
            cap_mb = strtoull(argv[++i], NULL, 10);
        else if (strcmp(a, "-d") == 0 && fargc < 50)
            fargv[fargc++] = "-d";
        else if (strcmp(a, "-o") == 0 && i + 1 < argc && fargc < 50) {
            fargv[fargc++] = "-o";
            fargv[fargc++] = argv[++i];
        } else if (a[0] == '-')
            usage();
        else if (!backing)
            backing = a;
        else if (!mnt)
            mnt = a;
        else
            usage();
    }
    if (!backing || !mnt)
        usage();
    g.cap_bytes = cap_mb << 20;
    g.backing = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g.backing < 0) {
        fprintf(stderr, "lazyfs: %s: %s\n", backing, strerror(errno));
        return 1;
    }
    static char fsname[128];
    /* max_threads: libfuse 3.14's fuse_main otherwise warns about an unset (-1) value */
    snprintf(fsname, sizeof fsname, "fsname=lazyfs,subtype=lazyfs,auto_unmount,max_threads=16");
    fargv[fargc++] = "-f";
    fargv[fargc++] = "-o";
    fargv[fargc++] = fsname;
    fargv[fargc++] = (char *)mnt;
    fargv[fargc] = NULL;
    return fuse_main(fargc, fargv, &lz_ops, NULL);
}
