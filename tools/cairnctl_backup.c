/* cairnctl_backup.c - continuous backup and point-in-time restore (issue 12).
 *
 *   cairnctl backup --endpoints HOST:PORT[,...] --dir D [--interval 1h] [--lease-poll 2s]
 *                   [--retain-snapshots N] [--cacert F --cert F --key F | --insecure-skip-tls-verify]
 *                   [--user U:P]
 *       Takes a snapshot (Maintenance/Snapshot, what `etcdctl snapshot save` reads), then
 *       watches every key from the snapshot's revision + 1 and appends each revision's
 *       events to segment files, forever: a new snapshot every --interval, the lease table
 *       polled every --lease-poll. Survives its own restarts (resumes after the last complete
 *       record, truncating a torn tail) and the members' (reconnects to any endpoint and
 *       resumes from the last saved revision + 1, with back-off). A compaction that overtakes
 *       it (the watch is cancelled with compact_revision) makes it take a fresh snapshot and
 *       start a new segment after it: the revisions in between are lost, and said so.
 *       --retain-snapshots N keeps the N newest snapshots and the segments they need (the
 *       default, 0, keeps everything): backup_prune.
 *   cairnctl restore --dir D (--to-revision R | --to-time T) --name N --data-dir DD
 *                    [--initial-cluster C --initial-cluster-token T --initial-advertise-peer-urls U]
 *       Builds a member data dir holding the store exactly as it was at revision R (or at the
 *       last revision received at or before time T: RFC 3339 or unix seconds): the newest
 *       snapshot at or below R, plus the recorded revisions up to R, written as one etcd
 *       backend file, which `cairnctl snapshot restore` (cairnctl_snapshot.c) then turns into
 *       the member. The member starts with the same flags, as after a snapshot restore.
 *
 * ON-DISK FORMAT of the backup directory D (all integers little-endian)
 * =====================================================================
 *
 *   LOCK                  flock()ed by the running backup: two backups never share D.
 *   READ.lock             empty. flock()ed shared by a restore (and --list) while it reads D,
 *                         exclusively by a backup while it prunes (--retain-snapshots): a prune
 *                         never removes a file a restore listed and has yet to read; it waits
 *                         for the next snapshot instead. Made by a backup with
 *                         --retain-snapshots when it starts; a restore never creates it.
 *   snap-<rev>.db         the bytes of one Maintenance/Snapshot stream, unchanged: an etcd 3.4
 *                         backend (bbolt) file, then the SHA-256 of it (32 bytes). <rev> (decimal)
 *                         is the store revision it holds: the highest main revision of its "key"
 *                         bucket, or its compaction revision if that is higher (etcd's own rule,
 *                         mvcc_etcd.c). Written as snap.partial, checked (SHA-256), fsync'd,
 *                         renamed, directory fsync'd: a snap-*.db is always complete.
 *   changes-<first>.seg   a segment: the changes from revision <first> (decimal) on.
 *
 * Segment: a 32-byte header, then records.
 *
 *     0   8   magic      "CAIRNBK1"
 *     8   8   first_rev  the revision of the first REV record (= the name's <first>)
 *     16  8   created    unix time, nanoseconds
 *     24  4   reserved   0
 *     28  4   crc        CRC-32C of bytes 0..27
 *
 * Record:
 *
 *     0   4   len        bytes of payload, 1 .. 1 GiB
 *     4   4   crc        CRC-32C of the payload
 *     8   len payload:   0 1 type, then by type:
 *
 *   1 REV - every event of one revision, in the order of their sub-revisions:
 *     1 8 rev   9 8 time (unix ns, when the backup received it)   17 4 n events, then n x
 *       0 1 type (0 PUT, 1 DELETE)  1 4 key_len  5 4 value_len  9 8 create_revision
 *       17 8 mod_revision (= rev)   25 8 version  33 8 lease  41 key  value
 *     (a DELETE has create_revision, version, lease 0 and no value, as etcd's tombstone)
 *   2 LEASES - what a poll of the lease table (LeaseLeases + LeaseTimeToLive) found changed:
 *     1 8 as_of (the poll's header.revision)  9 8 time  17 4 n_granted, then n x (8 ID, 8 granted
 *     TTL in seconds; 0 = unknown: it was gone before its TTL could be read)  4 n_gone, n x 8 ID
 *   3 SNAPSHOT - snap-<rev>.db was saved:
 *     1 8 rev  9 8 time  17 8 compact_rev  25 8 lost_from: for a snapshot forced by a compaction,
 *     the compaction revision and the first revision the backup never saw (0 0 otherwise)
 *
 * Validity: a record is valid when its length is in range, its CRC matches, its payload parses
 * to exactly len bytes, every event's mod_revision is the record's rev, and its rev is the
 * previous REV record's + 1 (the first one's is first_rev): revisions are dense in etcd, so
 * any other number is a lost or repeated revision. A segment's first_rev is the previous
 * segment's last revision + 1, except after a compaction overtook the backup: then the new
 * segment starts at a fresh snapshot's revision + 1 and begins with that SNAPSHOT record.
 *
 * Durability and recovery: records are appended with write() and fdatasync'd in groups
 * (every 100 ms or 1 MiB, and before a segment is closed); a new segment every 64 MiB, its
 * header fsync'd with the directory before the first record. A crash loses at most the
 * unsynced group. On start the last segment is read to its end; a record that runs past the
 * end of the file, or a bad one followed only by zero bytes or nothing, is a torn tail: it is
 * truncated (and logged), and the watch resumes after the last good record. A bad record with
 * good-looking data after it, or any bad record in an earlier segment, is corruption: backup
 * and restore stop and name the file and offset.
 *
 * Leases: a lease grant makes no revision, so the watch cannot see it. The poll records the
 * leases that appeared (with their granted TTL) and disappeared; a lease named by a watched
 * key but not known yet is asked for at once. A restore at R recreates the leases of the
 * snapshot and of the polls up to R (as_of <= R) that were not seen gone by then, plus every
 * lease a key alive at R is attached to (with its TTL from whichever record knows it): a key's
 * lease must exist. Their clocks restart at the restore, with the granted TTL, as after
 * etcd's own snapshot restore. (Which leases without keys existed between two polls is not
 * knowable from outside; a lease granted and revoked between polls, without keys, is missed;
 * a lease a key names that no poll saw alive is restored with a TTL of 3600 s, and said so.)
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn_bbolt.h"
#include "cairn_bytes.h"
#include "cairn_crc32c.h"
#include "cairn_err.h"
#include "cairn_grpcc.h"
#include "cairn_log.h"
#include "cairn_u64map.h"
#include "kv.pb-c.h"
#include "rpc.pb-c.h"

int cairnctl_backup(int argc, char **argv);
int cairnctl_restore(int argc, char **argv);
int cairnctl_snapshot(int argc, char **argv); /* cairnctl_snapshot.c */

#define SEG_MAGIC "CAIRNBK1"
#define SEG_HDR 32
#define REC_HDR 8
#define REC_MAX (1u << 30)
#define SEG_ROTATE ((uint64_t)64 << 20)
#define SYNC_BYTES ((uint64_t)1 << 20)
#define SYNC_MS 100
#define EV_FIXED 41
#define SHA_LEN 32

enum { R_REV = 1, R_LEASES = 2, R_SNAPSHOT = 3 };

static void be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fmt_time(uint64_t ns, char *out, size_t len)
{
    time_t s = (time_t)(ns / 1000000000u);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03uZ", (unsigned)(ns / 1000000u % 1000u));
}

/* ---- growable byte buffer ----------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} buf_t;

static void b_need(buf_t *b, size_t more)
{
    if (b->oom || b->n + more <= b->cap)
        return;
    size_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc < b->n + more)
        nc *= 2;
    uint8_t *np = realloc(b->p, nc);
    if (!np) {
        b->oom = 1;
        return;
    }
    b->p = np;
    b->cap = nc;
}
static void b_add(buf_t *b, const void *d, size_t n)
{
    b_need(b, n);
    if (!b->oom && n) {
        memcpy(b->p + b->n, d, n);
        b->n += n;
    }
}
static void b_u8(buf_t *b, uint8_t v) { b_add(b, &v, 1); }
static void b_u32(buf_t *b, uint32_t v)
{
    uint8_t t[4];
    cairn_put_le32(t, v);
    b_add(b, t, 4);
}
static void b_u64(buf_t *b, uint64_t v)
{
    uint8_t t[8];
    cairn_put_le64(t, v);
    b_add(b, t, 8);
}

/* ---- records ---------------------------------------------------------------------------- */

typedef struct {
    uint8_t type;
    const uint8_t *key, *value;
    uint32_t klen, vlen;
    int64_t create, mod, version, lease;
} ev_t;

typedef struct {
    uint8_t type;
    int64_t rev; /* REV: rev; LEASES: as_of; SNAPSHOT: rev */
    uint64_t time_ns;
    uint32_t n; /* REV: events; LEASES: granted */
    const uint8_t *body;
    uint32_t n_gone;
    const uint8_t *gone;
    int64_t compact, lost_from;
} rec_t;

/* Parses one payload; NULL when valid, else why not. */
static const char *rec_parse(const uint8_t *p, size_t len, rec_t *r)
{
    memset(r, 0, sizeof *r);
    if (len < 17)
        return "record too short";
    r->type = p[0];
    r->rev = (int64_t)cairn_get_le64(p + 1);
    r->time_ns = cairn_get_le64(p + 9);
    if (r->type == R_REV) {
        if (len < 21)
            return "record too short";
        r->n = cairn_get_le32(p + 17);
        r->body = p + 21;
        size_t off = 21;
        for (uint32_t i = 0; i < r->n; i++) {
            if (len - off < EV_FIXED)
                return "event runs past the record";
            const uint8_t *e = p + off;
            uint64_t kl = cairn_get_le32(e + 1), vl = cairn_get_le32(e + 5);
            if (e[0] > 1 || kl == 0)
                return "bad event type or empty key";
            if ((int64_t)cairn_get_le64(e + 17) != r->rev)
                return "an event's mod_revision is not the record's revision";
            if (len - off - EV_FIXED < kl + vl)
                return "event runs past the record";
            off += EV_FIXED + kl + vl;
        }
        if (off != len)
            return "bytes after the last event";
        if (r->n == 0)
            return "a revision without events";
        if (r->rev < 1)
            return "bad revision";
        return NULL;
    }
    if (r->type == R_LEASES) {
        if (len < 21)
            return "record too short";
        r->n = cairn_get_le32(p + 17);
        if ((len - 21) / 16 < r->n || len - 21 - (size_t)r->n * 16 < 4)
            return "lease list runs past the record";
        r->body = p + 21;
        size_t off = 21 + (size_t)r->n * 16;
        r->n_gone = cairn_get_le32(p + off);
        off += 4;
        if ((len - off) / 8 != r->n_gone || (len - off) % 8)
            return "lease list does not fill the record";
        r->gone = p + off;
        return NULL;
    }
    if (r->type == R_SNAPSHOT) {
        if (len != 33)
            return "snapshot record of the wrong size";
        r->compact = (int64_t)cairn_get_le64(p + 17);
        r->lost_from = (int64_t)cairn_get_le64(p + 25);
        return NULL;
    }
    return "unknown record type";
}

static void ev_get(const uint8_t **pp, ev_t *e)
{
    const uint8_t *p = *pp;
    e->type = p[0];
    e->klen = cairn_get_le32(p + 1);
    e->vlen = cairn_get_le32(p + 5);
    e->create = (int64_t)cairn_get_le64(p + 9);
    e->mod = (int64_t)cairn_get_le64(p + 17);
    e->version = (int64_t)cairn_get_le64(p + 25);
    e->lease = (int64_t)cairn_get_le64(p + 33);
    e->key = p + EV_FIXED;
    e->value = e->key + e->klen;
    *pp = e->value + e->vlen;
}

/* ---- the directory ------------------------------------------------------------------------ */

typedef struct {
    int64_t rev;
    char name[64];
} dent_t;

static int cmp_dent(const void *a, const void *b)
{
    int64_t x = ((const dent_t *)a)->rev, y = ((const dent_t *)b)->rev;
    return x < y ? -1 : x > y;
}

/* The snap-<rev>.db (kind 's') or changes-<rev>.seg (kind 'c') files of dir, by revision. */
static int list_dir(const char *dir, char kind, dent_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    size_t cap = 0;
    struct dirent *de;
    const char *pre = kind == 's' ? "snap-" : "changes-", *suf = kind == 's' ? ".db" : ".seg";
    size_t pl = strlen(pre), sl = strlen(suf);
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l <= pl + sl || l >= 64 || strncmp(de->d_name, pre, pl) != 0 || strcmp(de->d_name + l - sl, suf) != 0)
            continue;
        char num[64];
        snprintf(num, sizeof num, "%.*s", (int)(l - pl - sl), de->d_name + pl);
        if (strspn(num, "0123456789") != strlen(num) || strlen(num) > 18)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            dent_t *nv = realloc(*out, cap * sizeof *nv);
            if (!nv) {
                closedir(d);
                return -1;
            }
            *out = nv;
        }
        (*out)[*n].rev = strtoll(num, NULL, 10);
        snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%s", de->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(*out, *n, sizeof **out, cmp_dent);
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- reading a segment ---------------------------------------------------------------------- */

typedef int (*rec_fn)(void *arg, const char *path, uint64_t off, const rec_t *r);

typedef struct {
    uint64_t valid_end; /* offset after the last good record */
    int torn;           /* a torn tail starts at valid_end */
    int64_t first_rev;
    int64_t last_rev; /* last REV record's revision, first_rev - 1 if none */
    uint64_t size;
} seg_info_t;

/* Reads the segment at path, calling fn for every valid record. A bad record is a torn tail
 * only when tail_ok (the last segment) and nothing but zeros or nothing follows its start
 * beyond it; otherwise CAIRN_ECORRUPT with "path: offset N: why" in err. */
static int seg_read(const char *path, int64_t want_first, int tail_ok, rec_fn fn, void *arg, seg_info_t *si,
                    char *err, size_t errlen)
{
    memset(si, 0, sizeof *si);
    FILE *f = fopen(path, "rb");
    if (!f) {
        cairn_errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
        return CAIRN_EIO;
    }
    struct stat st;
    fstat(fileno(f), &st);
    si->size = (uint64_t)st.st_size;
    uint8_t h[SEG_HDR];
    int rc = 0;
    if (fread(h, 1, SEG_HDR, f) != SEG_HDR || memcmp(h, SEG_MAGIC, 8) != 0 ||
        cairn_crc32c(h, 28) != cairn_get_le32(h + 28)) {
        /* a header cut short by a crash while the segment was being made is a torn tail too */
        int zero = 1;
        rewind(f);
        int ch;
        while ((ch = fgetc(f)) != EOF)
            if (ch != 0 && si->size >= SEG_HDR)
                zero = 0;
        if (tail_ok && (si->size < SEG_HDR || zero)) {
            si->torn = 1;
            si->first_rev = want_first;
            si->last_rev = want_first - 1;
            fclose(f);
            return 0;
        }
        cairn_errbuf_set(err, errlen, "%s: offset 0: not a backup segment (bad magic or header checksum)", path);
        fclose(f);
        return CAIRN_ECORRUPT;
    }
    si->first_rev = (int64_t)cairn_get_le64(h + 8);
    if (want_first > 0 && si->first_rev != want_first) {
        cairn_errbuf_set(err, errlen, "%s: offset 8: the header says first revision %" PRId64 ", the name %" PRId64,
                         path, si->first_rev, want_first);
        fclose(f);
        return CAIRN_ECORRUPT;
    }
    si->last_rev = si->first_rev - 1;
    uint64_t off = SEG_HDR;
    buf_t b = {0};
    for (;;) {
        si->valid_end = off;
        uint8_t rh[REC_HDR];
        size_t got = fread(rh, 1, REC_HDR, f);
        if (got == 0)
            break;
        const char *why = NULL;
        uint32_t len = got == REC_HDR ? cairn_get_le32(rh) : 0;
        uint64_t end = off + REC_HDR + len;
        rec_t r;
        if (got < REC_HDR) {
            why = "record header cut short";
        } else if (len == 0 || len > REC_MAX) {
            why = "bad record length";
        } else if (end > si->size) {
            why = "record runs past the end of the file";
        } else {
            b.n = 0;
            b_need(&b, len);
            if (b.oom) {
                rc = CAIRN_ENOMEM;
                break;
            }
            if (fread(b.p, 1, len, f) != len)
                why = "short read";
            else if (cairn_crc32c(b.p, len) != cairn_get_le32(rh + 4))
                why = "checksum mismatch";
            else if ((why = rec_parse(b.p, len, &r)) == NULL && r.type == R_REV && r.rev != si->last_rev + 1) {
                static char msg[128];
                snprintf(msg, sizeof msg, "revision %" PRId64 " where %" PRId64 " was due", r.rev, si->last_rev + 1);
                why = msg;
            }
        }
        if (why) {
            /* torn: the bad record reaches the end of the file, or only zeros follow it (a
             * crash can leave the file longer than what reached the disk, the rest zeros) */
            int torn = end >= si->size || got < REC_HDR;
            if (!torn) {
                torn = 1;
                if (fseeko(f, (off_t)end, SEEK_SET) == 0) {
                    int ch;
                    while ((ch = fgetc(f)) != EOF)
                        if (ch) {
                            torn = 0;
                            break;
                        }
                }
            }
            if (tail_ok && torn) {
                si->torn = 1;
                break;
            }
            cairn_errbuf_set(err, errlen, "%s: offset %" PRIu64 ": %s%s", path, off, why,
                             tail_ok ? "" : " (not the last segment: not a torn tail)");
            rc = CAIRN_ECORRUPT;
            break;
        }
        if (r.type == R_REV)
            si->last_rev = r.rev;
        if (fn && (rc = fn(arg, path, off, &r)) != 0)
            break;
        off = end;
    }
    free(b.p);
    fclose(f);
    return rc;
}

/* The revision a snapshot file holds (see the format above) and whether its SHA-256 checks. */
static int snap_revision(const char *path, int64_t *rev, char *err, size_t errlen);

typedef struct {
    int64_t max_main, compact;
} snaprev_t;

static int sr_key(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    (void)v, (void)vn;
    snaprev_t *s = arg;
    if (kn >= 8 && (int64_t)be64_get(k) > s->max_main)
        s->max_main = (int64_t)be64_get(k);
    return 0;
}

static int sr_meta(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    snaprev_t *s = arg;
    if (vn >= 8 && ((kn == 18 && memcmp(k, "finishedCompactRev", 18) == 0) ||
                    (kn == 19 && memcmp(k, "scheduledCompactRev", 19) == 0))) {
        if ((int64_t)be64_get(v) > s->compact)
            s->compact = (int64_t)be64_get(v);
    }
    return 0;
}

static uint64_t db_bytes_of(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    return (uint64_t)st.st_size % 512 == SHA_LEN ? (uint64_t)st.st_size - SHA_LEN : 0;
}

static int snap_revision(const char *path, int64_t *rev, char *err, size_t errlen)
{
    int rc = 0;
    cairn_bbolt_t *db = cairn_bbolt_open(path, db_bytes_of(path), &rc, err, errlen);
    if (!db)
        return rc ? rc : CAIRN_ECORRUPT;
    snaprev_t s = {0, 0};
    rc = cairn_bbolt_foreach(db, "key", 3, sr_key, &s);
    if (rc == 0 || rc == CAIRN_ENOTFOUND)
        rc = cairn_bbolt_foreach(db, "meta", 4, sr_meta, &s);
    if (rc == CAIRN_ENOTFOUND)
        rc = 0;
    if (rc)
        cairn_errbuf_set(err, errlen, "%s: %s", path, cairn_bbolt_error(db));
    cairn_bbolt_close(&db);
    *rev = s.max_main > s.compact ? s.max_main : s.compact;
    if (*rev < 1)
        *rev = 1;
    return rc;
}

static int sha_ok(const char *path, char *err, size_t errlen)
{
    uint64_t n = db_bytes_of(path);
    if (!n) {
        cairn_errbuf_set(err, errlen, "%s: no SHA-256 after the database (size %% 512 != 32)", path);
        return CAIRN_ECORRUPT;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        cairn_errbuf_set(err, errlen, "%s: %s", path, strerror(errno));
        return CAIRN_EIO;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    uint8_t *buf = malloc(1 << 20);
    int rc = buf ? 0 : CAIRN_ENOMEM;
    while (rc == 0 && n) {
        size_t k = fread(buf, 1, n < (1u << 20) ? (size_t)n : (1u << 20), f);
        if (k == 0)
            rc = CAIRN_EIO;
        EVP_DigestUpdate(ctx, buf, k);
        n -= k;
    }
    uint8_t got[SHA_LEN], want[SHA_LEN];
    unsigned gl = 0;
    EVP_DigestFinal_ex(ctx, got, &gl);
    EVP_MD_CTX_free(ctx);
    if (rc == 0 && fread(want, 1, SHA_LEN, f) != SHA_LEN)
        rc = CAIRN_EIO;
    fclose(f);
    free(buf);
    if (rc) {
        cairn_errbuf_set(err, errlen, "%s: read error", path);
        return rc;
    }
    if (memcmp(got, want, SHA_LEN) != 0) {
        cairn_errbuf_set(err, errlen, "%s: SHA-256 mismatch: the snapshot is damaged", path);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

/* ---- flags -------------------------------------------------------------------------------- */

/* Go-style durations: "1h", "30m", "1m30s", "500ms", "10s". -1 if not one. */
static int64_t parse_dur_ms(const char *s)
{
    int64_t total = 0;
    if (!*s)
        return -1;
    while (*s) {
        char *end;
        double v = strtod(s, &end);
        if (end == s)
            return -1;
        s = end;
        double mul;
        if (strncmp(s, "ms", 2) == 0) {
            mul = 1;
            s += 2;
        } else if (*s == 'h') {
            mul = 3600000;
            s++;
        } else if (*s == 'm') {
            mul = 60000;
            s++;
        } else if (*s == 's') {
            mul = 1000;
            s++;
        } else {
            return -1;
        }
        total += (int64_t)(v * mul);
    }
    return total;
}

/* --name=value or --name value; *i advances past what it took. NULL if argv[*i] is not --name. */
static const char *flag_val(int argc, char **argv, int *i, const char *name, int *missing)
{
    const char *a = argv[*i];
    if (a[0] != '-')
        return NULL;
    a += a[1] == '-' ? 2 : 1;
    size_t nl = strlen(name);
    if (strncmp(a, name, nl) != 0)
        return NULL;
    if (a[nl] == '=')
        return a + nl + 1;
    if (a[nl] != 0)
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* ==== backup ================================================================================ */

typedef struct backup backup_t;

typedef struct {
    backup_t *bk;
    cairn_grpcc_call_t *call;
    int fd;
    uint64_t bytes;
    uint8_t tail[SHA_LEN]; /* the last 32 bytes seen: the SHA-256 once the stream ends */
    size_t tail_n;
    EVP_MD_CTX *sha;
    int64_t remaining;
    int forced; /* the watch cannot go on without it */
    int failed;
} snapjob_t;

struct backup {
    char dir[4096];
    char **eps;
    int n_eps, ep_i;
    cairn_grpcc_opts_t opts;
    const char *user;
    int64_t interval_ms, lease_poll_ms;
    uint64_t seg_rotate; /* a new segment once one is this large */
    cairn_grpcc_t *conn;
    int64_t backoff_ms, next_connect;
    /* the segment being appended */
    int seg_fd;
    char seg_path[4200];
    uint64_t seg_size;
    int64_t last_rev; /* last revision saved: the watch resumes at last_rev + 1 */
    uint64_t unsynced;
    int64_t unsynced_since;
    /* watch */
    cairn_grpcc_call_t *watch;
    int watch_ok;
    int watch_err; /* the watch is ended for a reason that wants another member */
    int reconnect;
    int64_t watch_next_progress;
    int64_t compacted_at; /* a compaction cancelled the watch: a fresh snapshot is due */
    /* snapshots */
    snapjob_t *snap;
    int need_snapshot; /* 1: nothing to resume from; 2: a compaction overtook the backup */
    int64_t next_snapshot;
    int64_t lost_from, lost_compact;
    int64_t last_snap_rev; /* the newest snapshot's revision */
    int retain;            /* --retain-snapshots: keep this many newest (0: all) */
    /* leases: ID -> granted TTL (as ttl * 2 + 1: never NULL) */
    cairn_u64map_t *leases;
    cairn_u64map_t *lease_wanted; /* seen on a key, not known yet */
    int64_t next_lease_poll;
    cairn_grpcc_call_t *lease_call;
    int ttl_pending;
    int64_t lease_as_of;
    buf_t lease_granted, lease_gone;
    int lease_n_granted;
    cairn_u64map_t *lease_seen; /* this poll's list */
    int fatal;
    buf_t rec;
};

static volatile sig_atomic_t g_stop;
static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void *ttl_ptr(int64_t ttl) { return (void *)(uintptr_t)((uint64_t)ttl * 2 + 1); }
static int64_t ptr_ttl(void *p) { return (int64_t)(((uintptr_t)p - 1) / 2); }

static int seg_sync(backup_t *bk)
{
    if (bk->seg_fd < 0 || !bk->unsynced)
        return 0;
    if (fdatasync(bk->seg_fd) != 0) {
        cairn_error("backup: fdatasync failed", "file=%s err=\"%s\"", bk->seg_path, strerror(errno));
        bk->fatal = 1;
        return -1;
    }
    bk->unsynced = 0;
    return 0;
}

static int seg_open_new(backup_t *bk, int64_t first)
{
    seg_sync(bk);
    if (bk->seg_fd >= 0)
        close(bk->seg_fd);
    bk->seg_fd = -1;
    snprintf(bk->seg_path, sizeof bk->seg_path, "%s/changes-%" PRId64 ".seg", bk->dir, first);
    int fd = open(bk->seg_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    uint8_t h[SEG_HDR] = {0};
    memcpy(h, SEG_MAGIC, 8);
    cairn_put_le64(h + 8, (uint64_t)first);
    cairn_put_le64(h + 16, wall_ns());
    cairn_put_le32(h + 28, cairn_crc32c(h, 28));
    if (fd < 0 || write_all(fd, h, SEG_HDR) != 0 || fdatasync(fd) != 0 || fsync_dir(bk->dir) != 0) {
        cairn_error("backup: cannot create a segment", "file=%s err=\"%s\"", bk->seg_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        bk->fatal = 1;
        return -1;
    }
    bk->seg_fd = fd;
    bk->seg_size = SEG_HDR;
    cairn_info("backup: new segment", "file=%s first_revision=%" PRId64, bk->seg_path, first);
    return 0;
}

/* Appends the record in bk->rec (payload) to the segment; rotates first when it is full. */
static int rec_append(backup_t *bk)
{
    if (bk->rec.oom) {
        cairn_error("backup: out of memory", NULL);
        bk->fatal = 1;
        return -1;
    }
    if (bk->seg_fd < 0 || (bk->seg_size >= bk->seg_rotate && bk->rec.p[0] == R_REV)) {
        if (seg_open_new(bk, bk->last_rev + 1) != 0)
            return -1;
    }
    uint8_t h[REC_HDR];
    cairn_put_le32(h, (uint32_t)bk->rec.n);
    cairn_put_le32(h + 4, cairn_crc32c(bk->rec.p, bk->rec.n));
    if (write_all(bk->seg_fd, h, REC_HDR) != 0 || write_all(bk->seg_fd, bk->rec.p, bk->rec.n) != 0) {
        cairn_error("backup: write failed", "file=%s err=\"%s\"", bk->seg_path, strerror(errno));
        bk->fatal = 1;
        return -1;
    }
    if (!bk->unsynced)
        bk->unsynced_since = mono_ms();
    bk->unsynced += REC_HDR + bk->rec.n;
    bk->seg_size += REC_HDR + bk->rec.n;
    if (bk->unsynced >= SYNC_BYTES)
        return seg_sync(bk);
    return 0;
}

static void snapshot_record(backup_t *bk, int64_t rev, int64_t compact, int64_t lost_from)
{
    bk->rec.n = 0;
    b_u8(&bk->rec, R_SNAPSHOT);
    b_u64(&bk->rec, (uint64_t)rev);
    b_u64(&bk->rec, wall_ns());
    b_u64(&bk->rec, (uint64_t)compact);
    b_u64(&bk->rec, (uint64_t)lost_from);
    rec_append(bk);
}

/* ---- backup: connection ------------------------------------------------------------------ */

static void drop_conn(backup_t *bk, const char *why)
{
    if (!bk->conn)
        return;
    seg_sync(bk); /* what came before is durable before a connect that may take seconds */
    cairn_warn("backup: connection lost", "endpoint=%s reason=\"%s\"", cairn_grpcc_endpoint(bk->conn), why);
    cairn_grpcc_destroy(&bk->conn); /* every call's on_done runs here */
    bk->next_connect = mono_ms() + bk->backoff_ms;
    bk->backoff_ms = bk->backoff_ms ? (bk->backoff_ms * 2 > 5000 ? 5000 : bk->backoff_ms * 2) : 100;
    bk->ep_i = (bk->ep_i + 1) % bk->n_eps;
}

static int authenticate(backup_t *bk)
{
    if (!bk->user)
        return 0;
    const char *colon = strchr(bk->user, ':');
    char name[256];
    snprintf(name, sizeof name, "%.*s", colon ? (int)(colon - bk->user) : (int)strlen(bk->user), bk->user);
    Etcdserverpb__AuthenticateRequest req = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
    req.name = name;
    req.password = colon ? (char *)colon + 1 : "";
    uint8_t buf[1024], *resp = NULL;
    size_t n = etcdserverpb__authenticate_request__get_packed_size(&req), rl = 0;
    if (n > sizeof buf)
        return -1;
    etcdserverpb__authenticate_request__pack(&req, buf);
    char err[512];
    int st = cairn_grpcc_unary(bk->conn, "/etcdserverpb.Auth/Authenticate", buf, n, &resp, &rl, 5000, err, sizeof err);
    if (st != 0) {
        cairn_error("backup: authentication failed", "user=%s err=\"%s\"", name, err);
        return -1;
    }
    Etcdserverpb__AuthenticateResponse *ar = etcdserverpb__authenticate_response__unpack(NULL, rl, resp);
    free(resp);
    if (!ar || !ar->token)
        return -1;
    cairn_grpcc_set_metadata(bk->conn, "token", ar->token);
    etcdserverpb__authenticate_response__free_unpacked(ar, NULL);
    return 0;
}

static int ensure_conn(backup_t *bk)
{
    if (bk->conn)
        return 0;
    if (mono_ms() < bk->next_connect)
        return -1;
    char err[512];
    int rc;
    const char *ep = bk->eps[bk->ep_i];
    bk->conn = cairn_grpcc_new(ep, &bk->opts, &rc, err, sizeof err);
    if (!bk->conn) {
        cairn_warn("backup: cannot connect", "endpoint=%s err=\"%s\"", ep, err);
        bk->next_connect = mono_ms() + (bk->backoff_ms ? bk->backoff_ms : 100);
        bk->backoff_ms = bk->backoff_ms ? (bk->backoff_ms * 2 > 5000 ? 5000 : bk->backoff_ms * 2) : 100;
        bk->ep_i = (bk->ep_i + 1) % bk->n_eps;
        return -1;
    }
    if (authenticate(bk) != 0) {
        drop_conn(bk, "authentication failed");
        return -1;
    }
    cairn_info("backup: connected", "endpoint=%s", ep);
    return 0;
}

/* ---- backup: snapshots --------------------------------------------------------------------- */

static void snap_bytes(snapjob_t *j, const uint8_t *p, size_t n)
{
    /* everything but the last 32 bytes of the stream goes into the hash */
    if (j->tail_n + n > SHA_LEN) {
        size_t out = j->tail_n + n - SHA_LEN;
        size_t from_tail = out < j->tail_n ? out : j->tail_n;
        EVP_DigestUpdate(j->sha, j->tail, from_tail);
        memmove(j->tail, j->tail + from_tail, j->tail_n - from_tail);
        j->tail_n -= from_tail;
        size_t from_p = out - from_tail;
        EVP_DigestUpdate(j->sha, p, from_p);
        p += from_p;
        n -= from_p;
    }
    memcpy(j->tail + j->tail_n, p, n);
    j->tail_n += n;
}

static int snap_msg(void *arg, cairn_grpcc_call_t *call, const uint8_t *msg, size_t len)
{
    (void)call;
    snapjob_t *j = arg;
    Etcdserverpb__SnapshotResponse *r = etcdserverpb__snapshot_response__unpack(NULL, len, msg);
    if (!r) {
        j->failed = 1;
        return 1;
    }
    int rc = 0;
    if (r->blob.len) {
        if (write_all(j->fd, r->blob.data, r->blob.len) != 0) {
            cairn_error("backup: writing the snapshot failed", "err=\"%s\"", strerror(errno));
            j->failed = 1;
            rc = 1;
        } else {
            snap_bytes(j, r->blob.data, r->blob.len);
            j->bytes += r->blob.len;
        }
    }
    j->remaining = (int64_t)r->remaining_bytes;
    etcdserverpb__snapshot_response__free_unpacked(r, NULL);
    return rc;
}

static void start_watch(backup_t *bk);
static void backup_prune(backup_t *bk);

/* leasepb.Lease{ID = 1, TTL = 2, RemainingTTL = 3}: the varint fields, others skipped. */
static int lease_pb(const uint8_t *p, size_t n, int64_t *id, int64_t *ttl)
{
    uint64_t f[3];
    if (cairn_pb_varint_fields(p, n, f, 3))
        return -1;
    *id = (int64_t)f[1];
    *ttl = (int64_t)f[2];
    return 0;
}

typedef int (*lease_fn)(void *arg, int64_t id, int64_t ttl);
typedef struct {
    lease_fn fn;
    void *arg;
} snapl_t;

static int snapl_pair(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    (void)k, (void)kn;
    snapl_t *s = arg;
    int64_t id, ttl;
    if (lease_pb(v, vn, &id, &ttl) != 0 || id == 0)
        return CAIRN_ECORRUPT;
    return s->fn(s->arg, id, ttl);
}

/* Every lease of the snapshot file at path. */
static int snap_leases(const char *path, lease_fn fn, void *arg, char *err, size_t errlen)
{
    int rc = 0;
    cairn_bbolt_t *db = cairn_bbolt_open(path, db_bytes_of(path), &rc, err, errlen);
    if (!db)
        return rc ? rc : CAIRN_ECORRUPT;
    snapl_t s = {fn, arg};
    rc = cairn_bbolt_foreach(db, "lease", 5, snapl_pair, &s);
    if (rc == CAIRN_ENOTFOUND)
        rc = 0;
    if (rc)
        cairn_errbuf_set(err, errlen, "%s: the \"lease\" bucket: %s", path,
                         rc == CAIRN_ECORRUPT ? "not leasepb.Lease records" : cairn_strerror(rc));
    cairn_bbolt_close(&db);
    return rc;
}

static int known_lease(void *arg, int64_t id, int64_t ttl)
{
    return cairn_u64map_put(arg, (uint64_t)id, ttl_ptr(ttl));
}

/* The backup's lease table becomes the snapshot's. */
static void load_snap_leases(backup_t *bk, const char *path)
{
    char err[512];
    cairn_u64map_destroy(&bk->leases);
    bk->leases = cairn_u64map_new();
    if (snap_leases(path, known_lease, bk->leases, err, sizeof err) != 0)
        cairn_warn("backup: cannot read the snapshot's leases", "err=\"%s\"", err);
}

static void snap_done(void *arg, cairn_grpcc_call_t *call, int status, const char *message)
{
    (void)call;
    snapjob_t *j = arg;
    backup_t *bk = j->bk;
    bk->snap = NULL;
    char partial[4200], final[4200], err[512];
    snprintf(partial, sizeof partial, "%s/snap.partial", bk->dir);
    uint8_t got[SHA_LEN];
    unsigned gl = 0;
    EVP_DigestFinal_ex(j->sha, got, &gl);
    EVP_MD_CTX_free(j->sha);
    int ok = status == 0 && !j->failed;
    if (status != 0)
        cairn_warn("backup: snapshot failed", "status=%d err=\"%s\"", status, message);
    else if (ok && (j->tail_n != SHA_LEN || memcmp(got, j->tail, SHA_LEN) != 0 || j->bytes % 512 != SHA_LEN)) {
        cairn_warn("backup: snapshot failed", "err=\"the stream's SHA-256 does not match its bytes\" bytes=%" PRIu64,
                   j->bytes);
        ok = 0;
    }
    if (ok && fsync(j->fd) != 0) {
        cairn_error("backup: fsync of the snapshot failed", "err=\"%s\"", strerror(errno));
        ok = 0;
    }
    close(j->fd);
    int64_t rev = 0;
    if (ok && snap_revision(partial, &rev, err, sizeof err) != 0) {
        cairn_warn("backup: the snapshot is not an etcd backend file", "err=\"%s\"", err);
        ok = 0;
    }
    if (ok) {
        snprintf(final, sizeof final, "%s/snap-%" PRId64 ".db", bk->dir, rev);
        if (rename(partial, final) != 0 || fsync_dir(bk->dir) != 0) {
            cairn_error("backup: cannot rename the snapshot", "file=%s err=\"%s\"", final, strerror(errno));
            ok = 0;
        }
    }
    if (!ok) {
        unlink(partial);
        bk->next_snapshot = mono_ms() + 2000; /* try again soon */
        free(j);
        return;
    }
    cairn_info("backup: snapshot saved", "file=%s revision=%" PRId64 " bytes=%" PRIu64, final, rev, j->bytes);
    if (rev > bk->last_snap_rev)
        bk->last_snap_rev = rev;
    bk->next_snapshot = mono_ms() + bk->interval_ms;
    if (j->forced && bk->need_snapshot == 1 && bk->seg_fd >= 0) {
        /* segments without a snapshot under them: this one is a base for what comes next */
        bk->need_snapshot = 0;
        snapshot_record(bk, rev, 0, 0);
    } else if (j->forced) {
        if (bk->need_snapshot == 2 && rev <= bk->last_rev) {
            /* a member behind the compaction's: another try, maybe from another member */
            cairn_warn("backup: the fresh snapshot is not past the saved revisions; retrying",
                       "revision=%" PRId64 " saved=%" PRId64, rev, bk->last_rev);
            bk->next_snapshot = mono_ms() + 1000;
        } else {
            if (bk->need_snapshot == 2)
                cairn_warn("backup: revisions lost to the compaction", "first=%" PRId64 " last=%" PRId64
                           " compact_revision=%" PRId64 " snapshot=%" PRId64,
                           bk->last_rev + 1, rev - 1, bk->lost_compact, rev);
            int64_t lost_from = bk->need_snapshot == 2 ? bk->last_rev + 1 : 0;
            bk->last_rev = rev;
            if (seg_open_new(bk, rev + 1) == 0)
                snapshot_record(bk, rev, bk->need_snapshot == 2 ? bk->lost_compact : 0, lost_from);
            seg_sync(bk);
            bk->need_snapshot = 0;
            /* the leases as the snapshot has them are what a restore from it starts with */
            load_snap_leases(bk, final);
            bk->next_lease_poll = 0;
        }
    } else if (bk->seg_fd >= 0) {
        snapshot_record(bk, rev, 0, 0);
    }
    free(j);
    backup_prune(bk);
}

/* --retain-snapshots N: once a snapshot is saved, the snapshots older than the N newest are
 * removed, and with them every segment that only holds revisions below the oldest one kept
 * (segment i, when segment i+1 starts at or below that snapshot's revision: the snapshot's
 * own revision and its SNAPSHOT record are then in later segments), and only when none of its
 * records (REV, LEASES as_of, SNAPSHOT) names a revision at or above that one. The segment
 * being written is never removed. What is left restores every revision from the oldest snapshot
 * kept on. */
static int max_rec_rev(void *arg, const char *path, uint64_t off, const rec_t *r)
{
    (void)path, (void)off;
    int64_t *max = arg;
    if (r->rev > *max)
        *max = r->rev;
    return 0;
}

/* D/READ.lock, opened (created when create: the backup's side; a restore never writes to D)
 * and flock()ed with how (LOCK_SH, LOCK_EX | LOCK_NB...); the fd, or -1 with errno
 * (EWOULDBLOCK: held the other way). */
static int read_lock(const char *dir, int create, int how)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/READ.lock", dir);
    int fd = open(p, O_RDONLY | O_CLOEXEC | (create ? O_CREAT : 0), 0600); /* flock needs no write */
    if (fd < 0)
        return -1;
    if (flock(fd, how) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void backup_prune(backup_t *bk)
{
    if (bk->retain <= 0)
        return;
    int lk = read_lock(bk->dir, 1, LOCK_EX | LOCK_NB);
    if (lk < 0) {
        if (errno == EWOULDBLOCK)
            cairn_info("backup: a restore is reading the directory; pruning waits for the next snapshot", "dir=%s",
                       bk->dir);
        else
            cairn_warn("backup: cannot lock the directory to prune it", "dir=%s err=\"%s\"", bk->dir, strerror(errno));
        return;
    }
    dent_t *snaps = NULL, *segs = NULL;
    size_t ns = 0, ng = 0;
    if (list_dir(bk->dir, 's', &snaps, &ns) != 0 || list_dir(bk->dir, 'c', &segs, &ng) != 0) {
        cairn_warn("backup: cannot list the directory to prune it", "dir=%s err=\"%s\"", bk->dir, strerror(errno));
        free(snaps);
        free(segs);
        close(lk);
        return;
    }
    if (ns > (size_t)bk->retain) {
        int64_t oldest = snaps[ns - (size_t)bk->retain].rev;
        char path[4200];
        int removed_snaps = 0, removed_segs = 0;
        for (size_t i = 0; i + (size_t)bk->retain < ns; i++) {
            snprintf(path, sizeof path, "%s/%s", bk->dir, snaps[i].name);
            if (unlink(path) == 0)
                removed_snaps++;
            else
                cairn_warn("backup: cannot remove an old snapshot", "file=%s err=\"%s\"", path, strerror(errno));
        }
        for (size_t i = 0; i + 1 < ng && segs[i + 1].rev <= oldest; i++) {
            snprintf(path, sizeof path, "%s/%s", bk->dir, segs[i].name);
            if (strcmp(path, bk->seg_path) == 0)
                break;
            /* Its REV records are all below the next segment's first, but a LEASES poll or a
             * SNAPSHOT record goes into whatever segment is open, whatever revision it names
             * (a watch that lags behind the server's revision): removed only when every
             * record names a revision below the oldest snapshot kept. */
            int64_t max_rev = 0;
            seg_info_t si;
            char err[512];
            if (seg_read(path, segs[i].rev, 0, max_rec_rev, &max_rev, &si, err, sizeof err) != 0 || max_rev >= oldest)
                break;
            if (unlink(path) == 0)
                removed_segs++;
            else
                cairn_warn("backup: cannot remove an old segment", "file=%s err=\"%s\"", path, strerror(errno));
        }
        fsync_dir(bk->dir);
        cairn_info("backup: pruned (--retain-snapshots)", "kept=%d oldest_kept_revision=%" PRId64
                   " snapshots_removed=%d segments_removed=%d", bk->retain, oldest, removed_snaps, removed_segs);
    }
    free(snaps);
    free(segs);
    close(lk);
}

static void start_snapshot(backup_t *bk, int forced)
{
    char partial[4200];
    snprintf(partial, sizeof partial, "%s/snap.partial", bk->dir);
    snapjob_t *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->bk = bk;
    j->forced = forced;
    j->fd = open(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    j->sha = EVP_MD_CTX_new();
    if (j->fd < 0 || !j->sha) {
        cairn_error("backup: cannot create the snapshot file", "file=%s err=\"%s\"", partial, strerror(errno));
        bk->fatal = 1;
        if (j->fd >= 0)
            close(j->fd);
        EVP_MD_CTX_free(j->sha);
        free(j);
        return;
    }
    EVP_DigestInit_ex(j->sha, EVP_sha256(), NULL);
    int err;
    /* no deadline: a large store streams for as long as it takes; keepalive catches a dead peer */
    j->call = cairn_grpcc_start(bk->conn, "/etcdserverpb.Maintenance/Snapshot", "", 0, CAIRN_GRPCC_HALF_CLOSE, 0,
                                snap_msg, snap_done, j, &err);
    if (!j->call) {
        bk->reconnect = 1;
        close(j->fd);
        EVP_MD_CTX_free(j->sha);
        free(j);
        return;
    }
    bk->snap = j;
    cairn_info("backup: taking a snapshot", "endpoint=%s reason=%s", cairn_grpcc_endpoint(bk->conn),
               forced == 0 ? "interval" : bk->need_snapshot == 2 ? "compaction" : "start");
}

/* ---- backup: the watch --------------------------------------------------------------------- */

static void want_lease(backup_t *bk, int64_t id)
{
    if (id && !cairn_u64map_get(bk->leases, (uint64_t)id))
        cairn_u64map_put(bk->lease_wanted, (uint64_t)id, ttl_ptr(0));
}

/* One revision's events -> one REV record. */
static int write_rev(backup_t *bk, Mvccpb__Event **ev, size_t n, int64_t rev, uint64_t now)
{
    bk->rec.n = 0;
    b_u8(&bk->rec, R_REV);
    b_u64(&bk->rec, (uint64_t)rev);
    b_u64(&bk->rec, now);
    b_u32(&bk->rec, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        Mvccpb__KeyValue *kv = ev[i]->kv;
        int del = ev[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE;
        b_u8(&bk->rec, del ? 1 : 0);
        b_u32(&bk->rec, (uint32_t)kv->key.len);
        b_u32(&bk->rec, del ? 0 : (uint32_t)kv->value.len);
        b_u64(&bk->rec, del ? 0 : (uint64_t)kv->create_revision);
        b_u64(&bk->rec, (uint64_t)rev);
        b_u64(&bk->rec, del ? 0 : (uint64_t)kv->version);
        b_u64(&bk->rec, del ? 0 : (uint64_t)kv->lease);
        b_add(&bk->rec, kv->key.data, kv->key.len);
        if (!del)
            b_add(&bk->rec, kv->value.data, kv->value.len);
        if (!del)
            want_lease(bk, kv->lease);
    }
    if (rec_append(bk) != 0)
        return -1;
    bk->last_rev = rev;
    return 0;
}

static int watch_msg(void *arg, cairn_grpcc_call_t *call, const uint8_t *msg, size_t len)
{
    (void)call;
    backup_t *bk = arg;
    Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, msg);
    if (!r) {
        cairn_warn("backup: undecodable watch response", "bytes=%zu", len);
        bk->watch_err = 1;
        return 1;
    }
    int rc = 0;
    uint64_t now = wall_ns();
    if (r->created && !r->canceled) {
        bk->watch_ok = 1;
        bk->backoff_ms = 0;
        cairn_info("backup: watching", "from_revision=%" PRId64 " endpoint=%s", bk->last_rev + 1,
                   cairn_grpcc_endpoint(bk->conn));
    }
    if (r->canceled) {
        if (r->compact_revision > 0) {
            cairn_warn("backup: a compaction overtook the backup", "compact_revision=%" PRId64 " saved=%" PRId64,
                       r->compact_revision, bk->last_rev);
            bk->compacted_at = r->compact_revision;
        } else {
            cairn_warn("backup: the watch was cancelled", "reason=\"%s\"", r->cancel_reason ? r->cancel_reason : "");
            bk->watch_err = 1;
        }
        rc = 1;
    }
    for (size_t i = 0; i < r->n_events && rc == 0;) {
        if (!r->events[i]->kv) {
            cairn_error("backup: a watch event without its key-value", NULL);
            bk->watch_err = 1;
            rc = 1;
            break;
        }
        int64_t rev = r->events[i]->kv->mod_revision;
        size_t j = i;
        while (j < r->n_events && r->events[j]->kv && r->events[j]->kv->mod_revision == rev)
            j++;
        if (rev <= bk->last_rev) {
            /* the revision the last record holds: a server that split it over responses */
            cairn_error("backup: the server sent events of an already saved revision (a revision split over "
                        "watch responses?)", "revision=%" PRId64 " saved=%" PRId64 " file=%s", rev, bk->last_rev,
                        bk->seg_path);
            bk->fatal = 1;
            rc = 1;
            break;
        }
        if (rev != bk->last_rev + 1) {
            cairn_error("backup: a gap in the watch stream; reconnecting", "revision=%" PRId64 " due=%" PRId64, rev,
                        bk->last_rev + 1);
            bk->watch_err = 1;
            rc = 1;
            break;
        }
        if (write_rev(bk, r->events + i, j - i, rev, now) != 0) {
            rc = 1;
            break;
        }
        i = j;
    }
    etcdserverpb__watch_response__free_unpacked(r, NULL);
    return rc;
}

static void watch_done(void *arg, cairn_grpcc_call_t *call, int status, const char *message)
{
    (void)call;
    backup_t *bk = arg;
    bk->watch = NULL;
    bk->watch_ok = 0;
    if (bk->compacted_at) {
        bk->lost_compact = bk->compacted_at;
        bk->compacted_at = 0;
        bk->need_snapshot = 2;
        bk->next_snapshot = 0; /* now, not at the next --interval */
        return;
    }
    if (status == CAIRN_GRPC_CANCELLED && !bk->watch_err)
        return; /* we cancelled it (a snapshot must come first) */
    bk->watch_err = 0;
    if (!g_stop)
        cairn_warn("backup: the watch ended", "status=%d err=\"%s\"", status, message);
    /* a member that lost its leader, or a server error: try another one after a pause (not
     * from here: the connection is still running this callback) */
    bk->reconnect = 1;
}

static void start_watch(backup_t *bk)
{
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    uint8_t zero = 0;
    cr.key.data = &zero;
    cr.key.len = 1;
    cr.range_end.data = &zero;
    cr.range_end.len = 1;
    cr.start_revision = bk->last_rev + 1;
    cr.prev_kv = 1;
    cr.progress_notify = 1;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    wr.create_request = &cr;
    uint8_t buf[128];
    size_t n = etcdserverpb__watch_request__pack(&wr, buf);
    int err;
    bk->watch = cairn_grpcc_start(bk->conn, "/etcdserverpb.Watch/Watch", buf, n, CAIRN_GRPCC_HASLEADER, 0, watch_msg,
                                  watch_done, bk, &err);
    if (!bk->watch) /* the server is going away (GOAWAY): another connection */
        bk->reconnect = 1;
    bk->watch_next_progress = mono_ms() + 5000;
}

static void watch_progress(backup_t *bk)
{
    if (!bk->watch || mono_ms() < bk->watch_next_progress)
        return;
    Etcdserverpb__WatchProgressRequest pr = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
    Etcdserverpb__WatchRequest wr = ETCDSERVERPB__WATCH_REQUEST__INIT;
    wr.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
    wr.progress_request = &pr;
    uint8_t buf[16];
    size_t n = etcdserverpb__watch_request__pack(&wr, buf);
    cairn_grpcc_send(bk->watch, buf, n, 0);
    bk->watch_next_progress = mono_ms() + 5000;
}

/* ---- backup: leases ------------------------------------------------------------------------- */

static void lease_record(backup_t *bk)
{
    int n_gone = (int)(bk->lease_gone.n / 8);
    if (bk->lease_n_granted || n_gone) {
        bk->rec.n = 0;
        b_u8(&bk->rec, R_LEASES);
        b_u64(&bk->rec, (uint64_t)bk->lease_as_of);
        b_u64(&bk->rec, wall_ns());
        b_u32(&bk->rec, (uint32_t)bk->lease_n_granted);
        b_add(&bk->rec, bk->lease_granted.p, bk->lease_granted.n);
        b_u32(&bk->rec, (uint32_t)n_gone);
        b_add(&bk->rec, bk->lease_gone.p, bk->lease_gone.n);
        if (rec_append(bk) == 0)
            cairn_debug("backup: leases recorded", "as_of=%" PRId64 " granted=%d gone=%d", bk->lease_as_of,
                        bk->lease_n_granted, n_gone);
    }
    bk->lease_granted.n = bk->lease_gone.n = 0;
    bk->lease_n_granted = 0;
    bk->next_lease_poll = mono_ms() + bk->lease_poll_ms;
}

static void ttl_done(void *arg, cairn_grpcc_call_t *call, int status, const char *message);

static int ttl_msg(void *arg, cairn_grpcc_call_t *call, const uint8_t *msg, size_t len)
{
    (void)call;
    backup_t *bk = arg;
    Etcdserverpb__LeaseTimeToLiveResponse *r = etcdserverpb__lease_time_to_live_response__unpack(NULL, len, msg);
    if (!r)
        return 1;
    /* TTL -1: gone already; its granted TTL is then unknown (0) */
    int64_t granted = r->ttl >= 0 ? r->grantedttl : 0;
    b_u64(&bk->lease_granted, (uint64_t)r->id);
    b_u64(&bk->lease_granted, (uint64_t)granted);
    bk->lease_n_granted++;
    if (r->ttl < 0) {
        b_u64(&bk->lease_gone, (uint64_t)r->id);
    } else {
        cairn_u64map_put(bk->leases, (uint64_t)r->id, ttl_ptr(granted));
    }
    cairn_u64map_take(bk->lease_wanted, (uint64_t)r->id);
    etcdserverpb__lease_time_to_live_response__free_unpacked(r, NULL);
    return 0;
}

static void ttl_done(void *arg, cairn_grpcc_call_t *call, int status, const char *message)
{
    (void)call;
    backup_t *bk = arg;
    if (status != 0)
        cairn_debug("backup: LeaseTimeToLive failed", "status=%d err=\"%s\"", status, message);
    if (--bk->ttl_pending == 0)
        lease_record(bk);
}

static void ask_ttl(backup_t *bk, int64_t id)
{
    Etcdserverpb__LeaseTimeToLiveRequest q = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    q.id = id;
    uint8_t buf[32];
    size_t n = etcdserverpb__lease_time_to_live_request__pack(&q, buf);
    int err;
    if (cairn_grpcc_start(bk->conn, "/etcdserverpb.Lease/LeaseTimeToLive", buf, n, CAIRN_GRPCC_HALF_CLOSE, 5000,
                          ttl_msg, ttl_done, bk, &err))
        bk->ttl_pending++;
}

static int leases_msg(void *arg, cairn_grpcc_call_t *call, const uint8_t *msg, size_t len)
{
    (void)call;
    backup_t *bk = arg;
    Etcdserverpb__LeaseLeasesResponse *r = etcdserverpb__lease_leases_response__unpack(NULL, len, msg);
    if (!r)
        return 1;
    bk->lease_as_of = r->header ? r->header->revision : bk->last_rev;
    cairn_u64map_t *seen = cairn_u64map_new();
    bk->ttl_pending = 1; /* held until every question is asked */
    for (size_t i = 0; i < r->n_leases && seen; i++) {
        int64_t id = r->leases[i]->id;
        cairn_u64map_put(seen, (uint64_t)id, ttl_ptr(0));
        if (!cairn_u64map_get(bk->leases, (uint64_t)id))
            ask_ttl(bk, id);
    }
    /* leases a key named that the list did not show (gone, or granted since) */
    size_t pos = 0;
    uint64_t k;
    void *v;
    while (seen && cairn_u64map_next(bk->lease_wanted, &pos, &k, &v))
        if (!cairn_u64map_get(seen, k) && !cairn_u64map_get(bk->leases, k))
            ask_ttl(bk, (int64_t)k);
    /* known leases that are gone */
    pos = 0;
    while (seen && cairn_u64map_next(bk->leases, &pos, &k, &v)) {
        if (!cairn_u64map_get(seen, k)) {
            b_u64(&bk->lease_gone, k);
            cairn_u64map_take(bk->leases, k);
        }
    }
    cairn_u64map_destroy(&seen);
    etcdserverpb__lease_leases_response__free_unpacked(r, NULL);
    return 0;
}

static void leases_done(void *arg, cairn_grpcc_call_t *call, int status, const char *message)
{
    (void)call;
    backup_t *bk = arg;
    bk->lease_call = NULL;
    if (status != 0)
        cairn_debug("backup: LeaseLeases failed", "status=%d err=\"%s\"", status, message);
    if (status == 16) /* the auth token expired: a new connection authenticates again */
        bk->reconnect = 1;
    if (bk->ttl_pending == 0) { /* no answer at all: another poll soon */
        bk->next_lease_poll = mono_ms() + 1000;
        return;
    }
    if (--bk->ttl_pending == 0)
        lease_record(bk);
}

static void poll_leases(backup_t *bk)
{
    if (bk->lease_call || bk->ttl_pending || !bk->watch_ok)
        return;
    /* a lease seen on a key is asked for at once, but not more than ten times a second */
    int64_t now = mono_ms();
    int now_due = now >= bk->next_lease_poll ||
                  (cairn_u64map_size(bk->lease_wanted) > 0 && now >= bk->next_lease_poll - bk->lease_poll_ms + 100);
    if (!now_due)
        return;
    int err;
    bk->lease_call = cairn_grpcc_start(bk->conn, "/etcdserverpb.Lease/LeaseLeases", "", 0, CAIRN_GRPCC_HALF_CLOSE,
                                       5000, leases_msg, leases_done, bk, &err);
    bk->next_lease_poll = mono_ms() + bk->lease_poll_ms;
}

/* ---- backup: start-up state ---------------------------------------------------------------- */

typedef struct {
    backup_t *bk;
    int64_t snap_rev;
} resume_t;

static int resume_rec(void *arg, const char *path, uint64_t off, const rec_t *r)
{
    (void)path, (void)off;
    resume_t *rs = arg;
    backup_t *bk = rs->bk;
    if (r->type == R_LEASES) {
        const uint8_t *p = r->body;
        for (uint32_t i = 0; i < r->n; i++, p += 16)
            if (cairn_get_le64(p + 8))
                cairn_u64map_put(bk->leases, cairn_get_le64(p), ttl_ptr((int64_t)cairn_get_le64(p + 8)));
        for (uint32_t i = 0; i < r->n_gone; i++)
            cairn_u64map_take(bk->leases, cairn_get_le64(r->gone + 8 * i));
    }
    return 0;
}

/* Finds where to resume in bk->dir: truncates a torn tail, opens the last segment for append. */
static int backup_resume(backup_t *bk)
{
    char err[1024];
    char partial[4200];
    snprintf(partial, sizeof partial, "%s/snap.partial", bk->dir);
    if (unlink(partial) == 0)
        cairn_info("backup: removed an unfinished snapshot", "file=%s", partial);
    dent_t *snaps = NULL, *segs = NULL;
    size_t ns = 0, ng = 0;
    if (list_dir(bk->dir, 's', &snaps, &ns) != 0 || list_dir(bk->dir, 'c', &segs, &ng) != 0) {
        cairn_error("backup: cannot read the backup directory", "dir=%s err=\"%s\"", bk->dir, strerror(errno));
        free(snaps);
        return -1;
    }
    int rc = 0;
    if (ns == 0) {
        bk->need_snapshot = 1;
        if (ng)
            cairn_warn("backup: segments without a snapshot: taking one", "dir=%s", bk->dir);
    }
    if (ng) {
        /* the segments since the one holding the newest snapshot's revision + 1: their lease
         * records rebuild the lease table the backup knew */
        size_t from = 0;
        for (size_t i = 0; i < ng; i++)
            if (ns && segs[i].rev <= snaps[ns - 1].rev + 1)
                from = i;
        resume_t rs = {bk, ns ? snaps[ns - 1].rev : 0};
        if (ns) {
            char sp[4200];
            snprintf(sp, sizeof sp, "%s/%s", bk->dir, snaps[ns - 1].name);
            load_snap_leases(bk, sp);
        }
        seg_info_t si = {0};
        for (size_t i = from; i < ng && rc == 0; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", bk->dir, segs[i].name);
            int last = i == ng - 1;
            rc = seg_read(path, segs[i].rev, last, resume_rec, &rs, &si, err, sizeof err);
            if (rc) {
                cairn_error("backup: the backup directory is damaged", "err=\"%s\"", err);
                break;
            }
            if (last) {
                snprintf(bk->seg_path, sizeof bk->seg_path, "%s", path);
                if (si.torn) {
                    cairn_warn("backup: torn tail truncated", "file=%s offset=%" PRIu64 " bytes=%" PRIu64, path,
                               si.valid_end, si.size - si.valid_end);
                    if (si.valid_end < SEG_HDR) {
                        /* the header itself never made it: the segment is made again */
                        unlink(path);
                        fsync_dir(bk->dir);
                        bk->last_rev = segs[i].rev - 1;
                        break;
                    }
                    if (truncate(path, (off_t)si.valid_end) != 0) {
                        cairn_error("backup: cannot truncate", "file=%s err=\"%s\"", path, strerror(errno));
                        rc = -1;
                        break;
                    }
                }
                bk->last_rev = si.last_rev;
                bk->seg_fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
                if (bk->seg_fd < 0 || fdatasync(bk->seg_fd) != 0) {
                    cairn_error("backup: cannot open the segment", "file=%s err=\"%s\"", path, strerror(errno));
                    rc = -1;
                    break;
                }
                bk->seg_size = si.valid_end;
            }
        }
    } else if (ns) {
        bk->last_rev = snaps[ns - 1].rev;
        if (seg_open_new(bk, bk->last_rev + 1) != 0)
            rc = -1;
    }
    if (rc == 0 && !bk->need_snapshot)
        cairn_info("backup: resuming", "dir=%s saved_through=%" PRId64 " snapshots=%zu segments=%zu known_leases=%zu",
                   bk->dir, bk->last_rev, ns, ng, cairn_u64map_size(bk->leases));
    if (rc == 0 && ns) {
        bk->next_snapshot = mono_ms() + bk->interval_ms;
        bk->last_snap_rev = snaps[ns - 1].rev;
    }
    free(snaps);
    free(segs);
    return rc;
}

static void backup_usage(FILE *f)
{
    fprintf(f, "usage: cairnctl backup --endpoints HOST:PORT[,...] --dir DIR [--interval 1h] [--lease-poll 2s]\n"
               "                [--retain-snapshots N (0: all)] [--segment-size 67108864]\n"
               "                [--cacert FILE] [--cert FILE] [--key FILE] [--insecure-skip-tls-verify]\n"
               "                [--user NAME:PASSWORD] [--log-level info]\n");
}

int cairnctl_backup(int argc, char **argv)
{
    backup_t *bk = calloc(1, sizeof *bk);
    if (!bk)
        return 1;
    bk->seg_fd = -1;
    bk->interval_ms = 3600 * 1000;
    bk->lease_poll_ms = 2000;
    bk->seg_rotate = SEG_ROTATE;
    const char *eps = NULL, *dir = NULL, *level = "info";
    int rc = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        int miss = 0;
        const char *v;
        if ((v = flag_val(argc, argv, &i, "endpoints", &miss)))
            eps = v;
        else if ((v = flag_val(argc, argv, &i, "dir", &miss)))
            dir = v;
        else if ((v = flag_val(argc, argv, &i, "interval", &miss))) {
            if ((bk->interval_ms = parse_dur_ms(v)) < 1000) {
                fprintf(stderr, "Error: --interval %s: want a duration of at least 1s (e.g. 1h, 30m)\n", v);
                rc = 2;
            }
        } else if ((v = flag_val(argc, argv, &i, "lease-poll", &miss))) {
            if ((bk->lease_poll_ms = parse_dur_ms(v)) < 100) {
                fprintf(stderr, "Error: --lease-poll %s: want a duration of at least 100ms\n", v);
                rc = 2;
            }
        } else if ((v = flag_val(argc, argv, &i, "retain-snapshots", &miss))) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < 0 || n > 1000000) {
                fprintf(stderr, "Error: --retain-snapshots %s: want a count (0: keep every snapshot)\n", v);
                rc = 2;
            }
            bk->retain = (int)n;
        } else if ((v = flag_val(argc, argv, &i, "segment-size", &miss))) {
            /* for tests: 64 MiB makes few segments */
            char *end;
            unsigned long long sz = strtoull(v, &end, 10);
            if (*end || sz < 4096) {
                fprintf(stderr, "Error: --segment-size %s: want a byte count of at least 4096\n", v);
                rc = 2;
            }
            bk->seg_rotate = sz;
        } else if ((v = flag_val(argc, argv, &i, "cacert", &miss)))
            bk->opts.cacert = v;
        else if ((v = flag_val(argc, argv, &i, "cert", &miss)))
            bk->opts.cert = v;
        else if ((v = flag_val(argc, argv, &i, "key", &miss)))
            bk->opts.key = v;
        else if ((v = flag_val(argc, argv, &i, "user", &miss)))
            bk->user = v;
        else if ((v = flag_val(argc, argv, &i, "log-level", &miss)))
            level = v;
        else if (strcmp(argv[i], "--insecure-skip-tls-verify") == 0)
            bk->opts.insecure_skip_verify = bk->opts.tls = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            backup_usage(stdout);
            free(bk);
            return 0;
        } else {
            fprintf(stderr, "Error: %s: %s\n", miss ? "flag needs an argument" : "unknown flag", argv[i]);
            rc = 2;
        }
    }
    if (rc == 0 && (!eps || !*eps || !dir || !*dir)) {
        fprintf(stderr, "Error: backup needs --endpoints and --dir\n");
        rc = 2;
    }
    int lv = cairn_log_level_parse(level);
    if (rc == 0 && lv < 0) {
        fprintf(stderr, "Error: --log-level %s: unknown level\n", level);
        rc = 2;
    }
    if (rc) {
        backup_usage(stderr);
        free(bk);
        return rc;
    }
    cairn_log_init("cairnctl-backup", (cairn_log_level_t)lv);
    snprintf(bk->dir, sizeof bk->dir, "%s", dir);
    char *epcopy = strdup(eps);
    for (char *save = NULL, *t = strtok_r(epcopy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char **ne = realloc(bk->eps, (size_t)(bk->n_eps + 1) * sizeof *ne);
        if (!ne)
            break;
        bk->eps = ne;
        bk->eps[bk->n_eps++] = t;
    }
    bk->leases = cairn_u64map_new();
    bk->lease_wanted = cairn_u64map_new();
    char lockp[4200];
    snprintf(lockp, sizeof lockp, "%s/LOCK", bk->dir);
    int lockfd = -1;
    if (mkdir(bk->dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "Error: mkdir %s: %s\n", bk->dir, strerror(errno));
        rc = 1;
    } else if ((lockfd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 || flock(lockfd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "Error: %s: %s\n", lockp,
                errno == EWOULDBLOCK ? "another cairnctl backup is using this directory" : strerror(errno));
        rc = 1;
    } else if (backup_resume(bk) != 0) {
        rc = 1;
    } else if (bk->retain > 0) {
        /* made before the first prune: a restore that starts earlier finds it and holds it */
        int lk = read_lock(bk->dir, 1, LOCK_SH | LOCK_NB);
        if (lk >= 0)
            close(lk);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    while (rc == 0 && !g_stop && !bk->fatal) {
        if (ensure_conn(bk) != 0) {
            struct timespec ts = {0, 50 * 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (bk->need_snapshot && !bk->snap && mono_ms() >= bk->next_snapshot) {
            if (bk->watch) {
                cairn_grpcc_cancel(bk->watch);
                bk->watch = NULL;
            }
            start_snapshot(bk, 1);
        }
        if (!bk->need_snapshot && !bk->watch && bk->conn)
            start_watch(bk);
        if (!bk->need_snapshot && !bk->snap && bk->watch_ok && mono_ms() >= bk->next_snapshot) {
            if (bk->last_rev == bk->last_snap_rev) /* nothing written since the last one */
                bk->next_snapshot = mono_ms() + bk->interval_ms;
            else
                start_snapshot(bk, 0);
        }
        if (bk->conn)
            poll_leases(bk);
        watch_progress(bk);
        int wait = SYNC_MS;
        if (bk->unsynced) {
            int64_t left = bk->unsynced_since + SYNC_MS - mono_ms();
            wait = left < 0 ? 0 : (int)left;
        }
        if (bk->conn && cairn_grpcc_run(bk->conn, wait) != 0)
            drop_conn(bk, cairn_grpcc_error(bk->conn));
        if (bk->reconnect) {
            bk->reconnect = 0;
            drop_conn(bk, "the watch ended");
        }
        if (bk->unsynced && mono_ms() - bk->unsynced_since >= SYNC_MS)
            seg_sync(bk);
    }
    if (bk->conn)
        cairn_grpcc_destroy(&bk->conn);
    seg_sync(bk);
    if (bk->seg_fd >= 0)
        close(bk->seg_fd);
    if (bk->fatal)
        rc = 1;
    if (lockfd >= 0)
        close(lockfd);
    if (rc == 0)
        cairn_info("backup: stopped", "saved_through=%" PRId64, bk->last_rev);
    cairn_u64map_destroy(&bk->leases);
    cairn_u64map_destroy(&bk->lease_wanted);
    free(bk->lease_granted.p);
    free(bk->lease_gone.p);
    free(bk->rec.p);
    free(bk->eps);
    free(epcopy);
    free(bk);
    return rc;
}

/* ==== restore ================================================================================ */

/* A key -> lease table of the keys alive with a lease (the leases a restore must recreate). */
typedef struct lkey {
    struct lkey *next;
    int64_t lease;
    size_t klen;
    uint8_t key[];
} lkey_t;

typedef struct {
    lkey_t **v;
    size_t cap, n;
} ltab_t;

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int ltab_set(ltab_t *t, const uint8_t *k, size_t kn, int64_t lease)
{
    if (!t->cap) {
        t->cap = 1024;
        t->v = calloc(t->cap, sizeof *t->v);
        if (!t->v)
            return CAIRN_ENOMEM;
    }
    size_t b = fnv(k, kn) & (t->cap - 1);
    for (lkey_t **pp = &t->v[b]; *pp; pp = &(*pp)->next) {
        lkey_t *e = *pp;
        if (e->klen == kn && memcmp(e->key, k, kn) == 0) {
            if (lease) {
                e->lease = lease;
            } else {
                *pp = e->next;
                free(e);
                t->n--;
            }
            return 0;
        }
    }
    if (!lease)
        return 0;
    lkey_t *e = malloc(sizeof *e + kn);
    if (!e)
        return CAIRN_ENOMEM;
    e->lease = lease;
    e->klen = kn;
    memcpy(e->key, k, kn);
    e->next = t->v[b];
    t->v[b] = e;
    if (++t->n > t->cap) { /* grow: rehash into twice the buckets */
        size_t nc = t->cap * 2;
        lkey_t **nv = calloc(nc, sizeof *nv);
        if (nv) {
            for (size_t i = 0; i < t->cap; i++)
                for (lkey_t *x = t->v[i], *nx; x; x = nx) {
                    nx = x->next;
                    size_t nb = fnv(x->key, x->klen) & (nc - 1);
                    x->next = nv[nb];
                    nv[nb] = x;
                }
            free(t->v);
            t->v = nv;
            t->cap = nc;
        }
    }
    return 0;
}

static void ltab_free(ltab_t *t)
{
    for (size_t i = 0; i < t->cap; i++)
        for (lkey_t *x = t->v[i], *nx; x; x = nx) {
            nx = x->next;
            free(x);
        }
    free(t->v);
}

typedef struct {
    int64_t as_of, id, ttl;
    int gone;
} lev_t;

typedef struct {
    int64_t first, last; /* revisions held (last = first - 1: none) */
    char path[4200];
} segr_t;

typedef struct {
    /* pass 1 */
    int64_t to_rev;
    uint64_t to_time;
    int by_time;
    int64_t best;       /* by time: the newest revision received at or before to_time */
    uint64_t best_time;
    int64_t oldest_rev; /* by time: the oldest one, for the message */
    uint64_t oldest_time;
    lev_t *lev;
    size_t n_lev, cap_lev;
    cairn_u64map_t *ttl_any; /* every granted TTL a record knows */
    dent_t *snaps;
    size_t n_snaps;
    struct {
        int64_t lost_from, snap, compact;
    } holes[64]; /* what the SNAPSHOT records after holes say, for the message */
    size_t n_holes;
    /* pass 2 */
    int64_t base, target;
    cairn_bbolt_writer_t *w;
    ltab_t live;
    uint64_t applied;
    buf_t val;
    char err[1024];
} rs_t;

static int have_snap(rs_t *rs, int64_t rev)
{
    for (size_t i = 0; i < rs->n_snaps; i++)
        if (rs->snaps[i].rev == rev)
            return 1;
    return 0;
}

static int scan_rec(void *arg, const char *path, uint64_t off, const rec_t *r)
{
    (void)path, (void)off;
    rs_t *rs = arg;
    if (r->type == R_REV || (r->type == R_SNAPSHOT && have_snap(rs, r->rev))) {
        if (rs->by_time && r->time_ns <= rs->to_time && r->rev > rs->best) {
            rs->best = r->rev;
            rs->best_time = r->time_ns;
        }
        if (!rs->oldest_time || r->time_ns < rs->oldest_time) {
            rs->oldest_time = r->time_ns;
            rs->oldest_rev = r->rev;
        }
    }
    if (r->type == R_SNAPSHOT && r->lost_from > 0 && rs->n_holes < 64) {
        rs->holes[rs->n_holes].lost_from = r->lost_from;
        rs->holes[rs->n_holes].snap = r->rev;
        rs->holes[rs->n_holes].compact = r->compact;
        rs->n_holes++;
    }
    if (r->type == R_LEASES) {
        size_t need = rs->n_lev + r->n + r->n_gone;
        if (need > rs->cap_lev) {
            size_t nc = need * 2;
            lev_t *nv = realloc(rs->lev, nc * sizeof *nv);
            if (!nv)
                return CAIRN_ENOMEM;
            rs->lev = nv;
            rs->cap_lev = nc;
        }
        for (uint32_t i = 0; i < r->n; i++) {
            lev_t *e = &rs->lev[rs->n_lev++];
            e->as_of = r->rev;
            e->id = (int64_t)cairn_get_le64(r->body + 16 * i);
            e->ttl = (int64_t)cairn_get_le64(r->body + 16 * i + 8);
            e->gone = 0;
            if (e->ttl > 0)
                cairn_u64map_put(rs->ttl_any, (uint64_t)e->id, ttl_ptr(e->ttl));
        }
        for (uint32_t i = 0; i < r->n_gone; i++) {
            lev_t *e = &rs->lev[rs->n_lev++];
            e->as_of = r->rev;
            e->id = (int64_t)cairn_get_le64(r->gone + 8 * i);
            e->ttl = 0;
            e->gone = 1;
        }
    }
    return 0;
}

static uint8_t *rev_key(uint8_t out[18], int64_t main, int64_t sub)
{
    be64_put(out, (uint64_t)main);
    out[8] = '_';
    be64_put(out + 9, (uint64_t)sub);
    return out;
}

/* pass 2: the recorded revisions base+1 .. target into the "key" bucket */
static int apply_rec(void *arg, const char *path, uint64_t off, const rec_t *r)
{
    rs_t *rs = arg;
    if (r->type != R_REV || r->rev <= rs->base)
        return 0;
    if (r->rev > rs->target)
        return 1; /* done */
    const uint8_t *p = r->body;
    for (uint32_t i = 0; i < r->n; i++) {
        ev_t e;
        ev_get(&p, &e);
        uint8_t k[18];
        rev_key(k, r->rev, i);
        k[17] = 't'; /* used only by a delete's 18-byte key */
        Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
        kv.key.data = (uint8_t *)e.key;
        kv.key.len = e.klen;
        if (e.type == 0) {
            kv.create_revision = e.create;
            kv.mod_revision = e.mod;
            kv.version = e.version;
            kv.value.data = (uint8_t *)e.value;
            kv.value.len = e.vlen;
            kv.lease = e.lease;
        }
        size_t n = mvccpb__key_value__get_packed_size(&kv);
        rs->val.n = 0;
        b_need(&rs->val, n);
        if (rs->val.oom)
            return CAIRN_ENOMEM;
        mvccpb__key_value__pack(&kv, rs->val.p);
        int rc = cairn_bbolt_put(rs->w, k, e.type ? 18 : 17, rs->val.p, n);
        if (rc == 0)
            rc = ltab_set(&rs->live, e.key, e.klen, e.type ? 0 : e.lease);
        if (rc) {
            cairn_errbuf_set(rs->err, sizeof rs->err, "%s: offset %" PRIu64 ": writing revision %" PRId64 ": %s", path,
                             off, r->rev, cairn_strerror(rc));
            return rc;
        }
    }
    rs->applied++;
    return 0;
}

typedef struct {
    rs_t *rs;
    cairn_bbolt_t *db;
    segr_t *segs;
    size_t n_segs;
    int key_done, lease_done;
    const char *snap_path;
} copy_t;

static int copy_pair(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    copy_t *c = arg;
    return cairn_bbolt_put(c->rs->w, k, kn, v, vn);
}

static int copy_key_pair(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    copy_t *c = arg;
    int rc = cairn_bbolt_put(c->rs->w, k, kn, v, vn);
    if (rc)
        return rc;
    Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, vn, v);
    if (!kv)
        return CAIRN_ECORRUPT;
    rc = ltab_set(&c->rs->live, kv->key.data, kv->key.len, kn == 18 ? 0 : kv->lease);
    mvccpb__key_value__free_unpacked(kv, NULL);
    return rc;
}

static int write_key_bucket(copy_t *c, int from_snapshot)
{
    rs_t *rs = c->rs;
    int rc = cairn_bbolt_bucket_begin(rs->w, "key", 3);
    if (rc == 0 && from_snapshot)
        rc = cairn_bbolt_foreach(c->db, "key", 3, copy_key_pair, c);
    for (size_t i = 0; i < c->n_segs && rc == 0; i++) {
        if (c->segs[i].last <= rs->base || c->segs[i].first > rs->target)
            continue;
        seg_info_t si;
        rc = seg_read(c->segs[i].path, c->segs[i].first, i == c->n_segs - 1, apply_rec, rs, &si, rs->err,
                      sizeof rs->err);
        if (rc == 1)
            rc = 0;
    }
    if (rc == 0)
        rc = cairn_bbolt_bucket_end(rs->w);
    c->key_done = 1;
    return rc;
}

typedef struct {
    int64_t id, ttl;
} lease_t;

static int cmp_lease(const void *a, const void *b)
{
    uint64_t x = (uint64_t)((const lease_t *)a)->id, y = (uint64_t)((const lease_t *)b)->id;
    return x < y ? -1 : x > y;
}

static int write_lease_bucket(copy_t *c)
{
    rs_t *rs = c->rs;
    cairn_u64map_t *set = cairn_u64map_new();
    char err[512];
    int rc = set ? snap_leases(c->snap_path, known_lease, set, err, sizeof err) : CAIRN_ENOMEM;
    if (rc) {
        cairn_errbuf_set(rs->err, sizeof rs->err, "%s", err);
        cairn_u64map_destroy(&set);
        return rc;
    }
    /* what the polls saw from the snapshot's revision up to the target (a grant makes no
     * revision: one after the snapshot, before the next write, is seen at the snapshot's) */
    for (size_t i = 0; i < rs->n_lev; i++) {
        lev_t *e = &rs->lev[i];
        if (e->as_of < rs->base || e->as_of > rs->target)
            continue;
        if (e->gone)
            cairn_u64map_take(set, (uint64_t)e->id);
        else
            cairn_u64map_put(set, (uint64_t)e->id, ttl_ptr(e->ttl));
    }
    /* every lease a key alive at the target is attached to */
    for (size_t b = 0; b < rs->live.cap; b++)
        for (lkey_t *x = rs->live.v[b]; x; x = x->next) {
            void *have = cairn_u64map_get(set, (uint64_t)x->lease);
            if (have && ptr_ttl(have) > 0)
                continue;
            void *t = cairn_u64map_get(rs->ttl_any, (uint64_t)x->lease);
            cairn_u64map_put(set, (uint64_t)x->lease, t ? t : ttl_ptr(0));
        }
    size_t n = cairn_u64map_size(set), k = 0, pos = 0;
    lease_t *v = calloc(n ? n : 1, sizeof *v);
    uint64_t id;
    void *val;
    while (v && cairn_u64map_next(set, &pos, &id, &val) && k < n) {
        v[k].id = (int64_t)id;
        v[k].ttl = ptr_ttl(val);
        if (v[k].ttl <= 0) {
            fprintf(stderr, "warning: lease %016" PRIx64 " (held by keys at revision %" PRId64 ") was never seen "
                            "alive by the backup's lease poll; restored with a TTL of 3600 s\n",
                    id, rs->target);
            v[k].ttl = 3600;
        }
        k++;
    }
    cairn_u64map_destroy(&set);
    if (!v)
        return CAIRN_ENOMEM;
    qsort(v, k, sizeof *v, cmp_lease);
    rc = cairn_bbolt_bucket_begin(rs->w, "lease", 5);
    for (size_t i = 0; i < k && rc == 0; i++) {
        uint8_t key[8], pb[24];
        size_t pn = 0;
        be64_put(key, (uint64_t)v[i].id);
        pb[pn++] = 0x08;
        pn += cairn_put_varint(pb + pn, (uint64_t)v[i].id);
        pb[pn++] = 0x10;
        pn += cairn_put_varint(pb + pn, (uint64_t)v[i].ttl);
        rc = cairn_bbolt_put(rs->w, key, 8, pb, pn);
    }
    if (rc == 0)
        rc = cairn_bbolt_bucket_end(rs->w);
    free(v);
    c->lease_done = 1;
    return rc;
}

/* Each bucket of the snapshot, in order; "key" and "lease" rebuilt for the target. */
static int copy_bucket(void *arg, const uint8_t *name, size_t n, const uint8_t *v, size_t vn)
{
    (void)v, (void)vn;
    copy_t *c = arg;
    int rc = 0;
    /* a bucket the snapshot lacks goes where its name sorts */
    if (!c->key_done && cairn_bytes_cmp(name, n, "key", 3) > 0 && (rc = write_key_bucket(c, 0)) != 0)
        return rc;
    if (!c->lease_done && cairn_bytes_cmp(name, n, "lease", 5) > 0 && (rc = write_lease_bucket(c)) != 0)
        return rc;
    if (n == 3 && memcmp(name, "key", 3) == 0)
        return write_key_bucket(c, 1);
    if (n == 5 && memcmp(name, "lease", 5) == 0)
        return write_lease_bucket(c);
    if ((rc = cairn_bbolt_bucket_begin(c->rs->w, name, n)) != 0)
        return rc;
    if ((rc = cairn_bbolt_foreach(c->db, name, n, copy_pair, c)) != 0)
        return rc;
    return cairn_bbolt_bucket_end(c->rs->w);
}

/* "2026-12-05T03:04:05Z", "...05.123+01:00" or unix seconds "1764903845[.5]" -> ns */
static int parse_time(const char *s, uint64_t *ns)
{
    char *end;
    if (strspn(s, "0123456789.") == strlen(s)) {
        double v = strtod(s, &end);
        if (*end || v < 0)
            return -1;
        *ns = (uint64_t)(v * 1e9);
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -1;
    uint64_t frac = 0;
    if (*p == '.') {
        p++;
        uint64_t scale = 100000000;
        while (isdigit((unsigned char)*p)) {
            frac += (uint64_t)(*p - '0') * scale;
            scale /= 10;
            p++;
        }
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2)
            return -1;
        off = (int64_t)(hh * 3600 + mm * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    int64_t secs = (int64_t)timegm(&tm) - off;
    if (secs < 0)
        return -1;
    *ns = (uint64_t)secs * 1000000000u + frac;
    return 0;
}

static void restore_usage(FILE *f)
{
    fprintf(f, "usage: cairnctl restore --dir DIR (--to-revision R | --to-time RFC3339|UNIX_SECONDS)\n"
               "                 --data-dir DD [--name N --initial-cluster C --initial-cluster-token T\n"
               "                 --initial-advertise-peer-urls U]   (cairnctl snapshot restore's flags)\n"
               "       cairnctl restore --dir DIR --list   (the snapshots, segments and revisions held)\n");
}

int cairnctl_restore(int argc, char **argv)
{
    const char *dir = NULL, *to_rev = NULL, *to_time = NULL, *data_dir = NULL;
    int list = 0;
    char **pass = calloc((size_t)argc + 8, sizeof *pass);
    int np = 0, rc = 0;
    if (!pass)
        return 1;
    pass[np++] = "restore";
    pass[np++] = NULL; /* the file, filled in below */
    static const char *const flags[] = {"name", "data-dir", "initial-cluster", "initial-cluster-token",
                                        "initial-advertise-peer-urls"};
    for (int i = 0; i < argc && rc == 0; i++) {
        int miss = 0, known = 0;
        const char *v;
        if ((v = flag_val(argc, argv, &i, "dir", &miss)))
            dir = v;
        else if ((v = flag_val(argc, argv, &i, "to-revision", &miss)))
            to_rev = v;
        else if ((v = flag_val(argc, argv, &i, "to-time", &miss)))
            to_time = v;
        else if (strcmp(argv[i], "--list") == 0)
            list = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            restore_usage(stdout);
            free(pass);
            return 0;
        } else {
            for (size_t f = 0; f < sizeof flags / sizeof *flags && !known && !miss; f++) {
                int at = i;
                if ((v = flag_val(argc, argv, &i, flags[f], &miss))) {
                    known = 1;
                    if (strcmp(flags[f], "data-dir") == 0)
                        data_dir = v;
                    char *fl = malloc(strlen(flags[f]) + strlen(v) + 4);
                    if (!fl) {
                        rc = 1;
                        break;
                    }
                    sprintf(fl, "--%s=%s", flags[f], v);
                    pass[np++] = fl;
                    (void)at;
                }
            }
            if (!known) {
                fprintf(stderr, "Error: %s: %s\n", miss ? "flag needs an argument" : "unknown flag", argv[i]);
                rc = 2;
            }
        }
    }
    rs_t rs = {.to_rev = -1};
    if (rc == 0 && list && dir) {
        /* what the directory can restore to */
    } else if (rc == 0 && (!dir || !data_dir || (!to_rev == !to_time))) {
        fprintf(stderr, "Error: restore needs --dir, --data-dir and one of --to-revision / --to-time\n");
        rc = 2;
    }
    if (rc == 0 && to_rev) {
        char *end;
        rs.to_rev = strtoll(to_rev, &end, 10);
        if (*end || rs.to_rev < 1) {
            fprintf(stderr, "Error: --to-revision %s: want a revision (a positive integer)\n", to_rev);
            rc = 2;
        }
    }
    if (rc == 0 && to_time) {
        rs.by_time = 1;
        if (parse_time(to_time, &rs.to_time) != 0) {
            fprintf(stderr, "Error: --to-time %s: want RFC 3339 (2026-12-05T03:04:05Z) or unix seconds\n", to_time);
            rc = 2;
        }
    }
    if (rc) {
        restore_usage(stderr);
        for (int i = 2; i < np; i++)
            free(pass[i]);
        free(pass);
        return rc;
    }
    dent_t *segd = NULL;
    size_t ng = 0;
    segr_t *segs = NULL;
    int rlock = -1;
    rs.ttl_any = cairn_u64map_new();
    char tmp[4200] = "", snap_path[4200] = "";
    struct stat dsb;
    if (!list && stat(data_dir, &dsb) == 0) {
        fprintf(stderr, "Error: data-dir %s exists\n", data_dir);
        rc = 1;
        goto out;
    }
    /* a running backup's prune waits until we are done (READ.lock); a directory without the
     * file (no backup with --retain-snapshots has run there) has no pruner to wait for */
    if ((rlock = read_lock(dir, 0, LOCK_SH | LOCK_NB)) < 0 && errno == EWOULDBLOCK) {
        /* a prune holds it for a moment; anything longer is someone's lock, and said so */
        fprintf(stderr, "note: %s/READ.lock is held (a backup pruning the directory); waiting for it\n", dir);
        rlock = read_lock(dir, 0, LOCK_SH);
    }
    /* pass 1: every segment checked; runs of revisions, lease records, the time target */
    if (list_dir(dir, 's', &rs.snaps, &rs.n_snaps) != 0 || list_dir(dir, 'c', &segd, &ng) != 0) {
        fprintf(stderr, "Error: cannot read the backup directory %s: %s\n", dir, strerror(errno));
        rc = 1;
        goto out;
    }
    if (rs.n_snaps == 0 && ng == 0) {
        fprintf(stderr, "Error: %s holds no backup (no snap-<revision>.db, no changes-<revision>.seg)\n", dir);
        rc = 1;
        goto out;
    }
    segs = calloc(ng ? ng : 1, sizeof *segs);
    for (size_t i = 0; i < ng && rc == 0; i++) {
        seg_info_t si;
        snprintf(segs[i].path, sizeof segs[i].path, "%s/%s", dir, segd[i].name);
        if (seg_read(segs[i].path, segd[i].rev, i == ng - 1, scan_rec, &rs, &si, rs.err, sizeof rs.err) != 0) {
            fprintf(stderr, "Error: %s\n", rs.err);
            rc = 1;
            break;
        }
        if (si.torn)
            fprintf(stderr, "note: %s ends in a torn tail at offset %" PRIu64 " (the backup stopped while writing); "
                            "what comes before it is used\n", segs[i].path, si.valid_end);
        segs[i].first = si.first_rev;
        segs[i].last = si.last_rev;
        if (i > 0 && segs[i].first <= segs[i - 1].last) {
            fprintf(stderr, "Error: %s starts at revision %" PRId64 " but %s already holds up to %" PRId64 "\n",
                    segs[i].path, segs[i].first, segs[i - 1].path, segs[i - 1].last);
            rc = 1;
        }
    }
    if (rc)
        goto out;
    int64_t last_saved = 0;
    for (size_t i = 0; i < ng; i++)
        if (segs[i].last > last_saved)
            last_saved = segs[i].last;
    if (rs.n_snaps && rs.snaps[rs.n_snaps - 1].rev > last_saved)
        last_saved = rs.snaps[rs.n_snaps - 1].rev;
    if (list) {
        for (size_t i = 0; i < rs.n_snaps; i++)
            printf("snapshot %s/%s revision=%" PRId64 "\n", dir, rs.snaps[i].name, rs.snaps[i].rev);
        for (size_t i = 0; i < ng; i++) {
            if (i > 0 && segs[i].first != segs[i - 1].last + 1)
                printf("hole revisions=%" PRId64 "..%" PRId64 " (never seen: a compaction overtook the backup)\n",
                       segs[i - 1].last + 1, segs[i].first - 2);
            printf("segment %s revisions=%" PRId64 "..%" PRId64 "\n", segs[i].path, segs[i].first, segs[i].last);
        }
        printf("last_revision=%" PRId64 "\n", last_saved);
        goto out;
    }
    if (rs.by_time) {
        char tb[64], ob[64];
        if (!rs.best) {
            fmt_time(rs.oldest_time, ob, sizeof ob);
            if (rs.oldest_time)
                fprintf(stderr, "Error: nothing in %s was received at or before %s (the oldest is revision %" PRId64
                                " at %s)\n", dir, to_time, rs.oldest_rev, ob);
            else
                fprintf(stderr, "Error: %s holds no revision\n", dir);
            rc = 1;
            goto out;
        }
        rs.to_rev = rs.best;
        fmt_time(rs.best_time, tb, sizeof tb);
        printf("--to-time %s: revision %" PRId64 " (received at %s)\n", to_time, rs.to_rev, tb);
    }
    int64_t R = rs.to_rev;
    /* the base: the newest snapshot S <= R from which S+1..R is recorded without a break */
    int64_t base = -1;
    for (size_t k = rs.n_snaps; k-- > 0 && base < 0;) {
        int64_t S = rs.snaps[k].rev;
        if (S > R)
            continue;
        if (S == R) {
            base = S;
            break;
        }
        /* the segments from the one holding S+1 must hold every revision to R */
        int64_t next = S + 1;
        for (size_t i = 0; i < ng; i++) {
            if (segs[i].last < next)
                continue;
            if (segs[i].first > next)
                break;
            next = segs[i].last + 1;
            if (next > R)
                break;
        }
        if (next > R)
            base = S;
    }
    if (base < 0) {
        if (R > last_saved) {
            fprintf(stderr, "Error: revision %" PRId64 " is past the end of the backup in %s (the last revision saved is "
                            "%" PRId64 ")\n", R, dir, last_saved);
        } else if (rs.n_snaps == 0) {
            fprintf(stderr, "Error: %s holds no snapshot (snap-<revision>.db): nothing to restore revision %" PRId64
                            " from\n", dir, R);
        } else {
            /* where is R? inside a segment run whose base snapshot is missing, or in a hole */
            size_t run_i = ng;
            for (size_t i = 0; i < ng; i++)
                if (segs[i].first <= R && R <= segs[i].last)
                    run_i = i;
            if (run_i < ng) {
                size_t a = run_i;
                while (a > 0 && segs[a - 1].last + 1 == segs[a].first)
                    a--;
                fprintf(stderr, "Error: snapshot %s/snap-%" PRId64 ".db is missing: revisions %" PRId64 "..%" PRId64
                                " (from %s on) need it, or an older snapshot with the revisions before them",
                        dir, segs[a].first - 1, segs[a].first, R, segs[a].path);
                if (R < rs.snaps[0].rev) /* pruned (--retain-snapshots) or removed by hand */
                    fprintf(stderr, "; revision %" PRId64 " is older than the oldest snapshot kept, %s (revision %" PRId64
                                    "): a snapshot --retain-snapshots removed is gone for good", R, rs.snaps[0].name,
                            rs.snaps[0].rev);
                fputc('\n', stderr);
            } else if (R < rs.snaps[0].rev) {
                fprintf(stderr, "Error: revision %" PRId64 " is older than the backup: its oldest snapshot is %s/%s "
                                "(revision %" PRId64 ")\n", R, dir, rs.snaps[0].name, rs.snaps[0].rev);
            } else {
                int64_t lo = 0, hi = 0;
                const char *after = NULL;
                for (size_t i = 0; i < ng; i++) {
                    if (segs[i].last >= segs[i].first && segs[i].last < R)
                        lo = segs[i].last;
                    if (segs[i].first > R && !after) {
                        hi = segs[i].first - 1;
                        after = segs[i].path;
                    }
                }
                char why[128] = "a compaction overtook it";
                for (size_t h = 0; h < rs.n_holes; h++)
                    if (rs.holes[h].snap == hi && rs.holes[h].compact > 0)
                        snprintf(why, sizeof why, "a compaction at revision %" PRId64 " overtook it",
                                 rs.holes[h].compact);
                fprintf(stderr, "Error: revision %" PRId64 " is in a hole of the backup in %s: it saved revisions "
                                "through %" PRId64 ", then %s, and it went on from snapshot snap-%" PRId64 ".db (%s); "
                                "revisions %" PRId64 "..%" PRId64 " were never seen. Restore revision %" PRId64
                                " or older, or %" PRId64 " or newer\n",
                        R, dir, lo, why, hi, after ? after : "", lo + 1, hi - 1, lo, hi);
            }
        }
        rc = 1;
        goto out;
    }
    rs.base = base;
    rs.target = R;
    snprintf(snap_path, sizeof snap_path, "%s/snap-%" PRId64 ".db", dir, base);
    if (sha_ok(snap_path, rs.err, sizeof rs.err) != 0) {
        fprintf(stderr, "Error: %s\n", rs.err);
        rc = 1;
        goto out;
    }
    /* pass 2: the backend file at R, beside the data dir it becomes */
    snprintf(tmp, sizeof tmp, "%s.pitr-%d.db", data_dir, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int brc = 0;
    cairn_bbolt_t *db = cairn_bbolt_open(snap_path, db_bytes_of(snap_path), &brc, rs.err, sizeof rs.err);
    rs.w = fd >= 0 ? cairn_bbolt_writer_new(fd) : NULL;
    if (fd < 0 || !db || !rs.w) {
        fprintf(stderr, "Error: %s\n", fd < 0 ? strerror(errno) : rs.err[0] ? rs.err : "out of memory");
        rc = 1;
    } else {
        copy_t c = {.rs = &rs, .db = db, .segs = segs, .n_segs = ng, .snap_path = snap_path};
        brc = cairn_bbolt_buckets(db, copy_bucket, &c);
        if (brc == 0 && !c.key_done)
            brc = write_key_bucket(&c, 0);
        if (brc == 0 && !c.lease_done)
            brc = write_lease_bucket(&c);
        if (brc == 0)
            brc = cairn_bbolt_writer_finish(rs.w, NULL);
        if (brc == 0 && fsync(fd) != 0)
            brc = CAIRN_EIO;
        if (brc) {
            if (!rs.err[0] && brc == CAIRN_ECORRUPT)
                snprintf(rs.err, sizeof rs.err, "%s: %s", snap_path, cairn_bbolt_error(db));
            fprintf(stderr, "Error: building the store at revision %" PRId64 ": %s\n", R,
                    rs.err[0] ? rs.err : cairn_strerror(brc));
            rc = 1;
        } else if (rs.applied != (uint64_t)(R - base)) {
            fprintf(stderr, "Error: %" PRIu64 " of the %" PRId64 " revisions after snap-%" PRId64 ".db were found\n",
                    rs.applied, R - base, base);
            rc = 1;
        }
    }
    cairn_bbolt_writer_destroy(&rs.w);
    cairn_bbolt_close(&db);
    if (fd >= 0)
        close(fd);
    if (rc == 0) {
        printf("restoring revision %" PRId64 " from %s and %" PRIu64 " recorded revisions\n", R, snap_path,
               rs.applied);
        fflush(stdout);
        pass[1] = tmp;
        pass[np++] = "--skip-hash-check";
        rc = cairnctl_snapshot(np, pass);
    }
out:
    if (rlock >= 0)
        close(rlock);
    if (tmp[0])
        unlink(tmp);
    for (int i = 2; i < np; i++)
        if (pass[i] && strncmp(pass[i], "--", 2) == 0 && strcmp(pass[i], "--skip-hash-check") != 0)
            free(pass[i]);
    free(pass);
    free(segs);
    free(segd);
    free(rs.snaps);
    free(rs.lev);
    free(rs.val.p);
    ltab_free(&rs.live);
    cairn_u64map_destroy(&rs.ttl_any);
    return rc;
}
