/* mvcc_ldblog.c - checks LevelDB's write-ahead logs before the store opens them.
 *
 * Why: stored writes LevelDB unsynced (the WAL is the durable copy) and needs what LevelDB
 * recovers after a crash to be a PREFIX of what it wrote (mvcc.c's format comment). After a
 * power loss the unsynced pages of LevelDB's log reach the disk in any order, and pages that
 * did not read back as zeroes. LevelDB's paranoid_checks catch most of the damage (a checksum
 * that fails, a fragment out of order) but not all: its reader takes a record header of
 * zeroes for padding a preallocating writer left ("Skip zero length record without reporting
 * any drops", log_reader.cc), drops the rest of that 32 KiB block without a word, and goes on
 * with the next block. A lost page that begins at a record boundary, followed by a block that
 * begins with a new record, so hides a hole: the batches after it are recovered, the ones in
 * it are not, and their "Mapplied" says the WAL need not replay them (the edge
 * tests/crashfs could reach; test_mvcc_ldblog.c builds it). This file finds the longest clean
 * prefix of the logs itself, before LevelDB reads them, and cuts there.
 *
 * LevelDB's log format (leveldb doc/log_format.md; db/log_writer.cc), byte by byte:
 *   the file is a sequence of 32768-byte blocks (the last one may be short). A block holds
 *   physical records; when fewer than 7 bytes are left in a block, the writer fills them with
 *   zeroes (the trailer) and goes on at the next block. A physical record:
 *     0  u32 LE  checksum: masked CRC-32C of the type byte and the data;
 *                mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8
 *     4  u16 LE  length of the data (it never crosses the block's end)
 *     6  u8      type: 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST (0 is reserved: never written by
 *                the writer LevelDB 1.23 has)
 *     7  data
 *   A logical record is one FULL, or FIRST MIDDLE* LAST. Each logical record is one
 *   WriteBatch: 0 u64 LE sequence of its first op, 8 u32 LE count of ops, then the ops. The
 *   batches of one log follow one another: each one's sequence is the previous one's plus its
 *   count.
 *
 * The prefix ends at the first of: a header of zeroes or an unknown type in a block with 7
 * or more bytes left, a length past the block's end, a checksum that fails, a fragment out of
 * order, a batch shorter than its 12-byte header, a sequence that does not follow. The input
 * ending inside a record (a writer that died mid-record) ends it too, but is no damage:
 * LevelDB drops such a tail itself, and this file leaves the newest log's tail alone.
 *
 * The logs of one store are checked oldest first (by number); the first damaged one is cut
 * at its prefix, and every newer one is moved aside - a newer log only holds batches written
 * after the damaged stretch. Across logs, a log cut short or with no whole record while newer
 * ones follow, or a newer log whose first batch does not follow the older one's last, is a
 * lost stretch too (an older log whose size went back to its last sync is caught by the
 * sequence check, an empty one by the second rule). Not seen: an older log whose directory
 * entry was lost whole while a newer one survived, with no log before it - only LevelDB's
 * MANIFEST could show that hole. A leftover log LevelDB had already flushed can only cost a
 * needless cut and WAL replay, never data. What this drops is never lost: a log only holds writes since
 * LevelDB's last memtable flush, which stored's checkpoint forces before it releases WAL
 * segments (cairn_mvcc_sync), so the WAL replay from the store's "Mapplied" brings them back.
 * A log older than LevelDB's current one that lingers after a crash (its memtable already
 * flushed) can only cost replay, never data.
 */
#include "mvcc_ldblog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn_bytes.h"
#include "cairn_crc32c.h"
#include "cairn_err.h"
#include "cairn_log.h"
#include "fileops.h"

#define HDR 7
enum { T_ZERO = 0, T_FULL = 1, T_FIRST = 2, T_MIDDLE = 3, T_LAST = 4 };

static uint32_t unmask(uint32_t m)
{
    uint32_t r = m - 0xa282ead8u;
    return (r >> 17) | (r << 15);
}

void cairn_ldblog_scan_init(cairn_ldblog_scan_t *s)
{
    memset(s, 0, sizeof *s);
}

static int damage(cairn_ldblog_scan_t *s, uint64_t at, const char *why)
{
    s->damaged = 1;
    snprintf(s->why, sizeof s->why, "%s at offset %llu", why, (unsigned long long)at);
    s->in_record = 0;
    return 1;
}

/* The record just completed: its WriteBatch header must be whole, its sequence follow. */
static int record_done(cairn_ldblog_scan_t *s, uint64_t end, uint64_t start)
{
    if (s->hdr_have < 12)
        return damage(s, start, "a batch shorter than its header");
    uint64_t seq = cairn_get_le64(s->hdr);
    uint32_t count = cairn_get_le32(s->hdr + 8);
    if (s->next_seq != 0 && seq != s->next_seq)
        return damage(s, start, "a batch whose sequence does not follow the one before");
    if (s->records == 0)
        s->first_seq = seq;
    s->next_seq = seq + count;
    s->records++;
    s->good = end;
    s->in_record = 0;
    return 0;
}

int cairn_ldblog_scan_block(cairn_ldblog_scan_t *s, const uint8_t *blk, size_t n)
{
    if (s->damaged)
        return 1;
    uint64_t base = s->off;
    s->off += n;
    size_t p = 0;
    while (n - p >= HDR) {
        const uint8_t *h = blk + p;
        uint32_t crc = cairn_get_le32(h);
        size_t len = (size_t)h[4] | (size_t)h[5] << 8;
        uint8_t type = h[6];
        uint64_t at = base + p;
        if (type == T_ZERO || type > T_LAST)
            return damage(s, at, type == T_ZERO && len == 0 && crc == 0 ? "a record header of zeroes"
                                                                      : "a record of unknown type");
        if (len > n - p - HDR) {
            if (n < CAIRN_LDBLOG_BLOCK) { /* the input ends inside this record */
                s->eof_in_record = 1;
                s->in_record = 0;
                return 1;
            }
            return damage(s, at, "a record longer than its block");
        }
        if (cairn_crc32c_extend(cairn_crc32c(&type, 1), h + HDR, len) != unmask(crc))
            return damage(s, at, "a record whose checksum fails");
        if ((type == T_FULL || type == T_FIRST) && s->in_record)
            return damage(s, at, "a record that starts inside another");
        if ((type == T_MIDDLE || type == T_LAST) && !s->in_record)
            return damage(s, at, "a record's continuation without its start");
        if (type == T_FULL || type == T_FIRST) {
            s->in_record = 1;
            s->hdr_have = 0;
            s->rec_start = at;
        }
        size_t take = len < 12 - s->hdr_have ? len : 12 - s->hdr_have;
        memcpy(s->hdr + s->hdr_have, h + HDR, take);
        s->hdr_have += take;
        p += HDR + len;
        if ((type == T_FULL || type == T_LAST) && record_done(s, base + p, s->rec_start))
            return 1;
    }
    /* Fewer than 7 bytes left: in a full block, the trailer (zeroes, skipped as LevelDB
     * does); in the short last block, the start of a header the writer did not finish. */
    if (n < CAIRN_LDBLOG_BLOCK && p < n) {
        s->eof_in_record = 1;
        s->in_record = 0;
        return 1;
    }
    return 0;
}

void cairn_ldblog_scan_end(cairn_ldblog_scan_t *s)
{
    if (!s->damaged && s->in_record)
        s->eof_in_record = 1;
    s->in_record = 0;
}

/* ---- the logs of a store ------------------------------------------------------------- */

typedef struct {
    unsigned long long num;
    char name[40];
} logname_t;

static int cmp_log(const void *a, const void *b)
{
    unsigned long long x = ((const logname_t *)a)->num, y = ((const logname_t *)b)->num;
    return x < y ? -1 : x > y;
}

typedef struct {
    logname_t *v;
    size_t n, cap;
} loglist_t;

static int on_log_name(void *arg, const char *n)
{
    loglist_t *l = arg;
    size_t len = strlen(n), digits = strspn(n, "0123456789");
    if (digits == 0 || digits > 20 || len != digits + 4 || strcmp(n + digits, ".log") != 0)
        return 0; /* not a log ("LOG" is LevelDB's info log) */
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 8;
        logname_t *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv)
            return -ENOMEM;
        l->v = nv, l->cap = nc;
    }
    l->v[l->n].num = strtoull(n, NULL, 10);
    snprintf(l->v[l->n].name, sizeof l->v[l->n].name, "%s", n);
    l->n++;
    return 0;
}

/* LevelDB's logs of dir ("NNNNNN.log"), oldest first. 0 or -errno. */
static int list_logs(const cairn_fileops_t *ops, const char *dir, logname_t **out, size_t *count)
{
    loglist_t l = {0};
    int rc = ops->list(ops->ctx, dir, on_log_name, &l);
    if (rc == -ENOENT)
        rc = 0;
    if (rc) {
        free(l.v);
        l.v = NULL, l.n = 0;
    } else if (l.n > 1) {
        qsort(l.v, l.n, sizeof *l.v, cmp_log);
    }
    *out = l.v;
    *count = l.n;
    return rc;
}

/* Scans one log; *zero_tail: every byte from the prefix's end to the end of the file is 0. */
static int scan_file(const cairn_fileops_t *ops, const char *path, cairn_ldblog_scan_t *s, uint64_t *size,
                     int *zero_tail)
{
    cairn_ldblog_scan_init(s);
    *size = 0;
    *zero_tail = 0;
    int fd = ops->open(ops->ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    uint8_t *buf = malloc(CAIRN_LDBLOG_BLOCK);
    int rc = buf ? ops->size(ops->ctx, fd, size) : -ENOMEM;
    for (uint64_t off = 0; rc == 0;) {
        ssize_t r = cairn_fileops_pread_full(ops, fd, buf, CAIRN_LDBLOG_BLOCK, off);
        if (r < 0) {
            rc = (int)r;
            break;
        }
        off += (uint64_t)r;
        if (r == 0 || cairn_ldblog_scan_block(s, buf, (size_t)r) || r < CAIRN_LDBLOG_BLOCK)
            break;
    }
    if (rc == 0) {
        cairn_ldblog_scan_end(s);
        int zeros = 1; /* is what follows the prefix all zeroes? */
        for (uint64_t o = s->good; zeros && o < *size;) {
            ssize_t r = cairn_fileops_pread_full(ops, fd, buf, CAIRN_LDBLOG_BLOCK, o);
            if (r <= 0) {
                rc = r < 0 ? (int)r : 0;
                break;
            }
            for (ssize_t i = 0; i < r && zeros; i++)
                zeros = buf[i] == 0;
            o += (uint64_t)r;
        }
        *zero_tail = zeros;
    }
    free(buf);
    ops->close(ops->ctx, fd);
    return rc;
}

/* A durable copy of from at to (to must not exist). 0 or -errno. */
static int copy_file(const cairn_fileops_t *ops, const char *from, const char *to)
{
    int in = ops->open(ops->ctx, from, O_RDONLY, 0);
    if (in < 0)
        return in;
    int out = ops->open(ops->ctx, to, O_RDWR | O_CREAT | O_EXCL, 0600), rc = 0;
    uint8_t *buf = malloc(CAIRN_LDBLOG_BLOCK);
    if (out < 0 || !buf)
        rc = out < 0 ? out : -ENOMEM;
    for (uint64_t off = 0; rc == 0;) {
        ssize_t r = cairn_fileops_pread_full(ops, in, buf, CAIRN_LDBLOG_BLOCK, off);
        if (r <= 0) {
            rc = (int)r;
            break;
        }
        rc = cairn_fileops_pwrite_full(ops, out, buf, (size_t)r, off);
        off += (uint64_t)r;
    }
    if (rc == 0)
        rc = ops->fsync(ops->ctx, out);
    free(buf);
    if (out >= 0)
        ops->close(ops->ctx, out);
    ops->close(ops->ctx, in);
    return rc;
}

/* Cuts path at len, durably. 0 or -errno. */
static int cut_file(const cairn_fileops_t *ops, const char *path, uint64_t len)
{
    int fd = ops->open(ops->ctx, path, O_RDWR, 0);
    if (fd < 0)
        return fd;
    int rc = ops->ftruncate(ops->ctx, fd, len);
    if (rc == 0)
        rc = ops->fsync(ops->ctx, fd);
    ops->close(ops->ctx, fd);
    return rc;
}

/* The directory that receives what a repair moves or copies: <dir>.torn-<time>-XXXXXX (unique:
 * two repairs in one second, or this one and mvcc.c's fallback, never share one), made
 * durable in its parent before anything goes into it. */
static int aside_dir(const char *dir, char *aside, size_t cap)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    snprintf(aside, cap, "%s.torn-%lld-XXXXXX", dir, (long long)time(NULL));
    if (!mkdtemp(aside)) /* the one call the table has no twin of: a unique name */
        return -errno;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", aside);
    char *slash = strrchr(parent, '/');
    if (slash == parent)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        snprintf(parent, sizeof parent, ".");
    return ops->fsync_dir(ops->ctx, parent);
}

int cairn_ldblog_repair(const char *dir, char *errbuf, size_t errlen)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    char path[PATH_MAX], aside[PATH_MAX], to[PATH_MAX + 64];
    if (errbuf && errlen)
        errbuf[0] = 0;
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int lfd = open(path, O_RDWR | O_CLOEXEC);
    if (lfd < 0) /* no LOCK: a store LevelDB never opened, so no log either */
        return 0;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(lfd, F_SETLK, &fl) != 0) { /* another process has the store open */
        close(lfd);
        return 0;
    }
    logname_t *logs = NULL;
    size_t n = 0;
    int rc = list_logs(ops, dir, &logs, &n), changed = 0;
    if (rc)
        cairn_errbuf_set(errbuf, errlen, "listing %s: %s", dir, strerror(-rc));
    size_t cut_at = n; /* index of the log where the prefix ends */
    uint64_t good = 0, size = 0, prev_next = 0;
    const char *why = NULL;
    cairn_ldblog_scan_t s;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int zero_tail;
        snprintf(path, sizeof path, "%s/%s", dir, logs[i].name);
        rc = scan_file(ops, path, &s, &size, &zero_tail);
        if (rc) {
            cairn_errbuf_set(errbuf, errlen, "reading %s: %s", path, strerror(-rc));
            break;
        }
        int newest = i + 1 == n;
        /* across logs: the first batch of a log follows the last batch of the one before */
        if (s.records && prev_next && s.first_seq != prev_next) {
            cut_at = i, good = 0, why = "its first batch does not follow the older log's last (a lost stretch)";
            break;
        }
        if (!s.damaged && !s.eof_in_record && (s.records || newest)) {
            prev_next = s.records ? s.next_seq : prev_next;
            continue; /* whole */
        }
        if (!s.damaged && newest)
            break; /* the newest log's unfinished last record: LevelDB drops it itself */
        if (s.damaged && zero_tail && newest) {
            /* zeroes to the end of the newest log: pages a power loss left unwritten, with
             * nothing after them; LevelDB reads them as padding and recovers the prefix */
            cairn_info("the store's newest log ends in zeroes (unsynced pages lost); its whole records are kept",
                       "file=%s records=%llu kept_bytes=%llu file_bytes=%llu", path, (unsigned long long)s.records,
                       (unsigned long long)s.good, (unsigned long long)size);
            break;
        }
        /* damaged, cut short or empty while newer logs follow: what comes after is not a prefix */
        cut_at = i, good = s.good;
        why = s.damaged ? s.why : s.records ? "a record cut short, with newer logs after it"
                                            : "no whole record, with newer logs after it";
        break;
    }
    if (rc == 0 && cut_at < n) {
        /* Order matters for a crash in the middle: the newer logs go first (durably), then the
         * damaged one is cut. A repair cut short is then found again at the next start; the
         * other order could leave a clean-looking cut log in front of intact newer ones. */
        if ((rc = aside_dir(dir, aside, sizeof aside)) != 0)
            cairn_errbuf_set(errbuf, errlen, "creating %s: %s", aside, strerror(-rc));
        for (size_t i = cut_at + 1; rc == 0 && i < n; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, logs[i].name);
            snprintf(to, sizeof to, "%s/%s", aside, logs[i].name);
            if ((rc = ops->rename(ops->ctx, path, to)) != 0) {
                cairn_errbuf_set(errbuf, errlen, "moving %s aside: %s", path, strerror(-rc));
                break;
            }
            changed++;
            cairn_warn("a newer log of the store moved aside: its batches follow the damaged stretch",
                       "file=%s moved_to=%s", path, to);
        }
        if (rc == 0 && ((rc = ops->fsync_dir(ops->ctx, dir)) != 0 || (rc = ops->fsync_dir(ops->ctx, aside)) != 0))
            cairn_errbuf_set(errbuf, errlen, "syncing %s: %s", dir, strerror(-rc));
        /* the damaged log: a copy aside, then cut at its prefix */
        snprintf(path, sizeof path, "%s/%s", dir, logs[cut_at].name);
        snprintf(to, sizeof to, "%s/%s", aside, logs[cut_at].name);
        if (rc == 0 && good < size) {
            if ((rc = copy_file(ops, path, to)) != 0)
                cairn_errbuf_set(errbuf, errlen, "copying %s to %s: %s", path, to, strerror(-rc));
            else if ((rc = ops->fsync_dir(ops->ctx, aside)) != 0)
                cairn_errbuf_set(errbuf, errlen, "syncing %s: %s", aside, strerror(-rc));
            else if ((rc = cut_file(ops, path, good)) != 0)
                cairn_errbuf_set(errbuf, errlen, "cutting %s at %llu: %s", path, (unsigned long long)good,
                                 strerror(-rc));
            if (rc == 0)
                changed++;
        }
        if (rc == 0)
            cairn_warn("the store's unsynced log is damaged (a power loss?): cut at its last whole record; the "
                       "WAL replay brings the rest back",
                       "file=%s damage=\"%s\" records_kept=%llu bytes_kept=%llu bytes_dropped=%llu newer_logs_moved=%zu "
                       "aside=%s", path, why, (unsigned long long)(good ? s.records : 0), (unsigned long long)good,
                       (unsigned long long)(size - good), n - cut_at - 1, aside);
    }
    free(logs);
    close(lfd); /* releases the lock; LevelDB takes its own */
    return rc ? CAIRN_EIO : changed;
}

int cairn_ldblog_move_aside(const char *dir)
{
    const cairn_fileops_t *ops = cairn_fileops_default();
    logname_t *logs = NULL;
    size_t n = 0;
    char aside[PATH_MAX], from[PATH_MAX], to[PATH_MAX + 64];
    if (list_logs(ops, dir, &logs, &n) != 0 || n == 0 || aside_dir(dir, aside, sizeof aside) != 0) {
        free(logs);
        return n == 0 ? 0 : -1;
    }
    int moved = 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(from, sizeof from, "%s/%s", dir, logs[i].name);
        snprintf(to, sizeof to, "%s/%s", aside, logs[i].name);
        if (ops->rename(ops->ctx, from, to) == 0)
            moved++;
    }
    free(logs);
    ops->fsync_dir(ops->ctx, dir);
    ops->fsync_dir(ops->ctx, aside);
    return moved;
}
