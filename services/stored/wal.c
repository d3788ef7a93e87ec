/* wal.c - the write-ahead log of stored (see wal.h for the API).
 *
 * FORMAT
 * ======
 * All integers are little-endian. All offsets are byte offsets from the start of a file.
 *
 * Segments. The WAL is a directory of segment files named
 *
 *     %016llx-%016llx.wal          (sequence, first index), lower-case hex
 *
 * e.g. 0000000000000003-00000000000004d2.wal. Sequence numbers start at 0 and are
 * consecutive; a gap between the oldest and the newest segment present is corruption
 * (release only ever removes the oldest segments). "first index" is the index of the first
 * entry written to the segment (or last index + 1 if it was created without entries); it
 * is informational (for people and tools): replay does not depend on it. A file named
 * *.wal.tmp is a segment whose creation did not finish; open deletes it. Other names are
 * ignored (with a warning).
 *
 * Each segment is preallocated (fallocate, else posix_fallocate) to segment_bytes (default
 * 64 MiB; larger when one batch alone needs more) when it is created, so an fdatasync in
 * steady state does not also have to flush a size change. Unused space reads as zeroes.
 *
 * Segment header, 40 bytes at offset 0:
 *
 *     0   8   magic "CAIRNWAL"
 *     8   4   version, 1
 *     12  4   flags, 0
 *     16  8   sequence (must equal the one in the file name; below 2^63)
 *     24  8   first index (must equal the one in the file name; below 2^63)
 *     32  4   reserved, 0
 *     36  4   CRC32C of bytes 0..35
 *
 * A segment is created as NAME.wal.tmp, preallocated, given its header (and a copy of the
 * current hard state, see below), fsync'd, renamed to NAME.wal, and then the directory is
 * fsync'd. So a file named *.wal always has a durable, valid header: a bad header is
 * corruption, never a torn write.
 *
 * Records follow the header, each starting at an offset that is a multiple of 8:
 *
 *     0   4   len: number of bytes in type + payload (>= 1); a len of 0 ends the records
 *     4   4   crc: CRC32C of the 4 len bytes followed by the len bytes at offset 8
 *     8   1   type
 *     9   .   payload, len - 1 bytes
 *     .   .   zero padding up to the next multiple of 8 (not covered by the CRC)
 *
 * Record types and payloads:
 *
 *     1 BATCH      len 21: u64 offset of this record in the file | u64 body bytes |
 *                  u32 record count
 *     2 ENTRY      len 18 + n: u64 index (1 .. 2^63 - 1) | u64 term | u8 entry type | n bytes of data
 *     3 HARDSTATE  len 25: u64 term | u64 vote | u64 commit
 *     4 SNAPSHOT   len 17: u64 index (below 2^63) | u64 term
 *                  A Raft snapshot (index, term) was installed: the state machine now holds
 *                  every entry up to at least index, and the log before it is gone. Written
 *                  by stored once the new state machine is built and synced, and it is the
 *                  commit point of the install (stored's main.c, "snapshot install"). Replay
 *                  reports it in log order with on_snapshot; what it means for the entries
 *                  replayed before it is the callee's rule (Raft's: keep the entries after
 *                  index only if the log held the entry (index, term)).
 *
 * Batches. Every cairn_wal_sync writes exactly one batch with one pwrite and then one
 * fdatasync: a BATCH record (32 bytes with padding) followed by its body, "body bytes"
 * bytes holding exactly "record count" ENTRY / HARDSTATE / SNAPSHOT records. A batch never
 * spans two segments. A new segment starts, after its header, with a batch holding a
 * SNAPSHOT record that copies the last durable snapshot record (if there is one) followed
 * by a HARDSTATE record that copies the last durable hard state (if there is one), so
 * removing older segments never loses either. Replaying such a copy after the records it
 * copies changes nothing: the log then holds (or starts right after) the snapshot's entry.
 *
 * Valid. A batch at offset p is valid when its BATCH record has len 21, a matching CRC,
 * offset == p, a body that fits in the file and is a multiple of 8, and its body holds
 * exactly "record count" records, each with a matching CRC, a known type, the payload
 * size of that type and an index in range. Replay delivers a batch only once the whole of it has been checked, so
 * a batch is all or nothing.
 *
 * RECOVERY
 * ========
 * Segments are read oldest first. In each, batches are read from offset 40 until a len of
 * 0 (the rest of the segment must then be zeroes) or the end of the file.
 *
 * - A record with a matching CRC that is nevertheless wrong (unknown type, payload of the
 *   wrong size, a BATCH whose offset is not its own, a body that does not match its count,
 *   a non-BATCH record where a batch should start) cannot come from a torn write: it is
 *   corruption (CAIRN_ECORRUPT) wherever it is.
 * - Any other defect (CRC mismatch, length that does not fit, batch past the end of the
 *   file, non-zero bytes after the end of records) in a segment that is not the last one is
 *   corruption: a segment is only followed by another once all its batches were synced.
 * - In the last segment, the defect may be the batch that was being written when the
 *   process or machine died: a single pwrite whose pages may have reached the disk in any
 *   order, some not at all. Only one batch is ever unsynced at a time (the next one is
 *   written after the fdatasync of this one), so: if a valid batch appears at any
 *   8-aligned offset after the damaged one (searched from the end of the damaged batch
 *   when its BATCH record is readable, else from the next 8 bytes), the damaged batch was
 *   synced before that one was written, and it is corruption. Otherwise it is a torn tail:
 *   the file is cut at the start of the damaged batch (ftruncate), re-extended to its
 *   preallocated size with zeroes, fsync'd, and a warning names the file, offset and the
 *   number of non-zero bytes dropped. Records of the torn batch are not replayed.
 *
 *   Corruption is reported as "wal: corrupt record in <file> at offset <n>: <reason>",
 *   where <n> is the offset of the damaged record itself (inside its batch if the batch
 *   header is readable).
 *
 * Assumptions and limits: like SQLite's default (SQLITE_IOCAP_POWERSAFE_OVERWRITE), a
 * torn write is assumed never to damage bytes outside the range written, i.e. durable
 * bytes sharing a sector with the batch being written (batches are not sector-aligned).
 * Damage to the last batch of the log after it was synced looks exactly like a torn write
 * and is truncated (with the warning), as in etcd and SQLite's WAL. When the header of the
 * damaged batch is unreadable, the search for a following batch also looks inside that
 * batch's own data, so entry data that embeds a well-formed batch carrying its own file
 * offset could turn a torn tail into a (false) corruption error - never into data loss.
 * With no_sync several batches can be unsynced at once, so a crash can leave a state that
 * reads as corruption; no_sync is for tests and benchmarks only. There is no lock: one
 * process must own the directory.
 *
 * Lengths read from disk are never trusted for allocation: every length is checked against
 * the bytes actually left in the file (or batch) before anything is read or allocated, so
 * the read buffer never exceeds the largest batch actually present in the file.
 */
#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "cairn_crc32c.h"
#include "cairn_bytes.h"
#include "cairn_err.h"
#include "cairn_log.h"

#define WAL_MAGIC "CAIRNWAL"
#define WAL_VERSION 1u
#define WAL_NUM_LIMIT (1ull << 63)
#define SEG_HDR_SIZE 40u
#define REC_HDR 8u
#define REC_BATCH 1u
#define REC_ENTRY 2u
#define REC_HARDSTATE 3u
#define REC_SNAPSHOT 4u
#define BATCH_LEN 21u   /* type + offset + body + count */
#define BATCH_SIZE 32u  /* ALIGN8(REC_HDR + BATCH_LEN) */
#define ENTRY_FIXED 18u /* type + index + term + entry type */
#define HS_LEN 25u      /* type + term + vote + commit */
#define HS_SIZE 40u     /* ALIGN8(REC_HDR + HS_LEN) */
#define SNAP_LEN 17u    /* type + index + term */
#define SNAP_SIZE 32u   /* ALIGN8(REC_HDR + SNAP_LEN) */
#define MIN_SEGMENT_BYTES 512u
#define ALIGN8(x) (((x) + 7u) & ~(uint64_t)7u)

typedef struct {
    uint64_t seq, first_index;
    uint64_t max_index; /* largest entry index written in it; 0 if none */
} wal_seg_t;

struct cairn_wal {
    char *dir;
    const cairn_fileops_t *ops;
    uint64_t segment_bytes;
    int no_sync;

    wal_seg_t *segs; /* oldest first; the last one is being written */
    size_t nsegs, segcap;
    int fd;       /* last segment */
    uint64_t cap; /* its size */
    uint64_t off; /* where the next batch goes */

    uint64_t last_index; /* durable */
    cairn_wal_hardstate_t hs;
    int have_hs;
    uint64_t snap_index, snap_term; /* last durable SNAPSHOT record */
    int have_snap;

    /* pending batch: buf[0, BATCH_SIZE) is reserved for its BATCH record */
    uint8_t *buf;
    size_t len, bufcap;
    uint32_t count;
    int p_has_entry, p_has_hs, p_has_snap;
    uint64_t p_first, p_last, p_max;
    cairn_wal_hardstate_t p_hs;
    uint64_t p_snap_index, p_snap_term;

    int failed; /* error from a failed sync or append: refuses everything until cairn_wal_recover */
    /* The bytes a failed sync may have written to the current segment (its batch, dropped):
     * they must read as zeroes again before anything else is written after them, or a later
     * batch could make half of a batch that was never acknowledged look durable (and a
     * segment rolled past them would read as corrupt). 0 when nothing reached a file. */
    uint64_t dirty_off, dirty_len;
    char errmsg[512]; /* why the last failure happened: the file, the step, the errno's text */
    void *(*realloc_fn)(void *, size_t); /* the batch buffer's allocator (tests inject failures) */
};

/* ---- little helpers ------------------------------------------------------------------ */

/* CRC of a record at p whose len field is already set. */
static uint32_t rec_crc(const uint8_t *p, uint32_t len)
{
    return cairn_crc32c_extend(cairn_crc32c(p, 4), p + REC_HDR, len);
}


static char *seg_path(const cairn_wal_t *self, uint64_t seq, uint64_t first, int tmp)
{
    size_t n = strlen(self->dir) + 64;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%016llx-%016llx.wal%s", self->dir, (unsigned long long)seq,
                 (unsigned long long)first, tmp ? ".tmp" : "");
    return p;
}

static int sys_err(int neg_errno) { return cairn_fileops_err(neg_errno); }

/* ---- reading ------------------------------------------------------------------------- */


/* First non-zero byte in [from, r->size) (r->size if none) and the end of the last one
 * (from if none). */
static int rd_nonzero(cairn_freader_t *r, uint64_t from, uint64_t *first, uint64_t *last_end)
{
    *first = r->size;
    *last_end = from;
    for (uint64_t o = from; o < r->size;) {
        size_t n = r->size - o < CAIRN_FREADER_CHUNK ? (size_t)(r->size - o) : CAIRN_FREADER_CHUNK;
        const uint8_t *p;
        int rc = cairn_freader_get(r, o, n, &p);
        if (rc)
            return rc;
        for (size_t i = 0; i < n; i++) {
            if (p[i]) {
                if (*first == r->size)
                    *first = o + i;
                *last_end = o + i + 1;
            }
        }
        o += n;
    }
    return 0;
}

enum { B_OK = 0, B_BAD = 1, B_FATAL = 2 };

typedef struct {
    uint64_t end;       /* B_OK: offset after the batch */
    uint64_t bad_off;   /* offset of the damaged record */
    uint64_t resync;    /* where to look for a following valid batch */
    uint32_t count;
    char why[160];
} batch_info_t;

/* Checks the batch at pos. Returns B_OK, B_BAD (damage a torn write can explain), B_FATAL
 * (corruption whatever the position) or a negative CAIRN_E* for an I/O failure. */
static int check_batch(cairn_freader_t *r, uint64_t pos, batch_info_t *bi)
{
    const uint64_t size = r->size;
    bi->bad_off = pos;
    bi->resync = pos + 8;
    if (size - pos < BATCH_SIZE) {
        bi->resync = size;
        snprintf(bi->why, sizeof bi->why, "incomplete batch header at end of file (%llu bytes left)",
                 (unsigned long long)(size - pos));
        return B_BAD;
    }
    const uint8_t *p;
    int rc = cairn_freader_get(r, pos, BATCH_SIZE, &p);
    if (rc)
        return rc;
    uint32_t len = cairn_get_le32(p), crc = cairn_get_le32(p + 4);
    if (len != BATCH_LEN) {
        /* A well-formed record of another kind where a batch should start is corruption. */
        if (len >= 1 && len <= size - pos - REC_HDR) {
            if ((rc = cairn_freader_get(r, pos, REC_HDR + (size_t)len, &p)))
                return rc;
            if (rec_crc(p, len) == crc) {
                snprintf(bi->why, sizeof bi->why, "record of type %u where a batch should start", p[8]);
                return B_FATAL;
            }
        }
        snprintf(bi->why, sizeof bi->why, "bad batch header length %u", len);
        return B_BAD;
    }
    if (rec_crc(p, len) != crc) {
        snprintf(bi->why, sizeof bi->why, "batch header checksum mismatch");
        return B_BAD;
    }
    if (p[8] != REC_BATCH) {
        snprintf(bi->why, sizeof bi->why, "unknown record type %u", p[8]);
        return B_FATAL;
    }
    uint64_t boff = cairn_get_le64(p + 9), body = cairn_get_le64(p + 17);
    uint32_t count = cairn_get_le32(p + 25);
    if (boff != pos) {
        snprintf(bi->why, sizeof bi->why, "batch header says it is at offset %llu", (unsigned long long)boff);
        return B_FATAL;
    }
    if (body % 8 || count == 0 || count > body / 8) {
        snprintf(bi->why, sizeof bi->why, "batch header has body %llu bytes, %u records",
                 (unsigned long long)body, count);
        return B_FATAL;
    }
    if (body > size - pos - BATCH_SIZE) {
        bi->resync = size; /* everything up to the end of the file belongs to this batch */
        snprintf(bi->why, sizeof bi->why, "batch of %llu bytes extends past end of file",
                 (unsigned long long)body);
        return B_BAD;
    }
    bi->resync = pos + BATCH_SIZE + body;
    const uint8_t *b;
    if ((rc = cairn_freader_get(r, pos + BATCH_SIZE, (size_t)body, &b)))
        return rc;
    uint64_t at = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t rem = body - at;
        const uint8_t *q = b + at;
        bi->bad_off = pos + BATCH_SIZE + at;
        if (rem < REC_HDR) {
            snprintf(bi->why, sizeof bi->why, "record %u of %u starts past the end of its batch", i + 1, count);
            return B_FATAL; /* the header's CRC is valid: the count does not match the body */
        }
        uint32_t rlen = cairn_get_le32(q);
        if (rlen == 0 || rlen > rem - REC_HDR) {
            snprintf(bi->why, sizeof bi->why, "record length %u exceeds its batch (%llu bytes left)", rlen,
                     (unsigned long long)(rem - REC_HDR));
            return B_BAD;
        }
        if (rec_crc(q, rlen) != cairn_get_le32(q + 4)) {
            snprintf(bi->why, sizeof bi->why, "record checksum mismatch");
            return B_BAD;
        }
        uint8_t type = q[8];
        if (type == REC_ENTRY) {
            if (rlen < ENTRY_FIXED) {
                snprintf(bi->why, sizeof bi->why, "entry record too short (length %u)", rlen);
                return B_FATAL;
            }
            if (cairn_get_le64(q + 9) == 0 || cairn_get_le64(q + 9) >= WAL_NUM_LIMIT) {
                /* Raft numbers entries from 1 by one; the next segment would be named after
                 * index + 1 (fuzz_wal: an entry at 0x9b...04 made one the next open refused) */
                snprintf(bi->why, sizeof bi->why, "entry index %llu is 0 or 2^63 or more",
                         (unsigned long long)cairn_get_le64(q + 9));
                return B_FATAL;
            }
        } else if (type == REC_HARDSTATE) {
            if (rlen != HS_LEN) {
                snprintf(bi->why, sizeof bi->why, "hard state record has length %u", rlen);
                return B_FATAL;
            }
        } else if (type == REC_SNAPSHOT) {
            if (rlen != SNAP_LEN) {
                snprintf(bi->why, sizeof bi->why, "snapshot record has length %u", rlen);
                return B_FATAL;
            }
            if (cairn_get_le64(q + 9) >= WAL_NUM_LIMIT) {
                snprintf(bi->why, sizeof bi->why, "snapshot index %llu is 2^63 or more",
                         (unsigned long long)cairn_get_le64(q + 9));
                return B_FATAL;
            }
        } else {
            snprintf(bi->why, sizeof bi->why, "unknown record type %u", type);
            return B_FATAL;
        }
        at += ALIGN8(REC_HDR + (uint64_t)rlen);
    }
    if (at != body) {
        bi->bad_off = pos;
        snprintf(bi->why, sizeof bi->why, "batch body is %llu bytes but its %u records take %llu",
                 (unsigned long long)body, count, (unsigned long long)at);
        return B_FATAL;
    }
    bi->end = pos + BATCH_SIZE + body;
    bi->count = count;
    return B_OK;
}

/* Looks for a valid batch at any 8-aligned offset in [from, size). *found = its offset or 0. */
static int find_valid_batch(cairn_freader_t *r, uint64_t from, uint64_t *found)
{
    *found = 0;
    for (uint64_t q = ALIGN8(from); q + BATCH_SIZE <= r->size; q += 8) {
        const uint8_t *p;
        int rc = cairn_freader_get(r, q, BATCH_SIZE, &p);
        if (rc)
            return rc;
        if (cairn_get_le32(p) != BATCH_LEN || p[8] != REC_BATCH || cairn_get_le64(p + 9) != q)
            continue;
        batch_info_t bi;
        rc = check_batch(r, q, &bi);
        if (rc < 0)
            return rc;
        if (rc == B_OK) {
            *found = q;
            return 0;
        }
    }
    return 0;
}

/* ---- open / replay ------------------------------------------------------------------- */

typedef struct {
    cairn_wal_t *self;
    const cairn_wal_replay_t *cb;
    char *errbuf;
    size_t errlen;
} replay_t;

static int deliver(replay_t *rp, cairn_freader_t *r, wal_seg_t *seg, const char *path, uint64_t pos, const batch_info_t *bi)
{
    cairn_wal_t *self = rp->self;
    const uint8_t *b;
    uint64_t body = bi->end - pos - BATCH_SIZE;
    int rc = cairn_freader_get(r, pos + BATCH_SIZE, (size_t)body, &b);
    if (rc)
        return rc;
    uint64_t at = 0;
    for (uint32_t i = 0; i < bi->count; i++) {
        const uint8_t *q = b + at;
        uint32_t rlen = cairn_get_le32(q);
        int crc = 0;
        if (q[8] == REC_ENTRY) {
            cairn_wal_entry_t e = {.index = cairn_get_le64(q + 9), .term = cairn_get_le64(q + 17), .type = q[25],
                                   .data = q + REC_HDR + ENTRY_FIXED, .len = rlen - ENTRY_FIXED};
            self->last_index = e.index;
            if (e.index > seg->max_index)
                seg->max_index = e.index;
            if (rp->cb && rp->cb->on_entry)
                crc = rp->cb->on_entry(rp->cb->ctx, &e);
        } else if (q[8] == REC_SNAPSHOT) {
            uint64_t si = cairn_get_le64(q + 9), st = cairn_get_le64(q + 17);
            self->snap_index = si;
            self->snap_term = st;
            self->have_snap = 1;
            if (si > self->last_index)
                self->last_index = si;
            if (rp->cb && rp->cb->on_snapshot)
                crc = rp->cb->on_snapshot(rp->cb->ctx, si, st);
        } else {
            cairn_wal_hardstate_t hs = {cairn_get_le64(q + 9), cairn_get_le64(q + 17), cairn_get_le64(q + 25)};
            self->hs = hs;
            self->have_hs = 1;
            if (rp->cb && rp->cb->on_hardstate)
                crc = rp->cb->on_hardstate(rp->cb->ctx, &hs);
        }
        if (crc) {
            cairn_errbuf_set(rp->errbuf, rp->errlen, "wal: replay callback failed on the record in %s at offset %llu: %s",
                   path, (unsigned long long)(pos + BATCH_SIZE + at), cairn_strerror(crc));
            return crc;
        }
        at += ALIGN8(REC_HDR + (uint64_t)rlen);
    }
    return 0;
}

/* Cuts the last segment at pos (start of a torn batch) and re-extends it with zeroes. */
static int cut_tail(cairn_wal_t *self, int fd, uint64_t pos, uint64_t size, char *errbuf, size_t errlen,
                    const char *path)
{
    uint64_t want = size > self->segment_bytes ? size : self->segment_bytes;
    int rc = self->ops->ftruncate(self->ops->ctx, fd, pos);
    if (rc == 0)
        rc = self->ops->fallocate(self->ops->ctx, fd, 0, want);
    if (rc == 0 && !self->no_sync)
        rc = self->ops->fsync(self->ops->ctx, fd);
    if (rc) {
        cairn_errbuf_set(errbuf, errlen, "wal: cannot truncate the torn tail of %s at offset %llu: %s", path,
               (unsigned long long)pos, strerror(-rc));
        return sys_err(rc);
    }
    return 0;
}

static int replay_segment(replay_t *rp, size_t idx)
{
    cairn_wal_t *self = rp->self;
    wal_seg_t *seg = &self->segs[idx];
    const int last = idx + 1 == self->nsegs;
    char *errbuf = rp->errbuf;
    size_t errlen = rp->errlen;
    char *path = seg_path(self, seg->seq, seg->first_index, 0);
    if (!path)
        return CAIRN_ENOMEM;
    cairn_freader_t r = {.ops = self->ops, .fd = -1};
    int rc = self->ops->open(self->ops->ctx, path, last ? O_RDWR : O_RDONLY, 0);
    if (rc < 0) {
        cairn_errbuf_set(errbuf, errlen, "wal: cannot open %s: %s", path, strerror(-rc));
        rc = sys_err(rc);
        goto out;
    }
    r.fd = rc;
    if ((rc = self->ops->size(self->ops->ctx, r.fd, &r.size))) {
        cairn_errbuf_set(errbuf, errlen, "wal: cannot stat %s: %s", path, strerror(-rc));
        rc = sys_err(rc);
        goto out;
    }

    /* header */
    const uint8_t *h;
    if (r.size < SEG_HDR_SIZE) {
        cairn_errbuf_set(errbuf, errlen, "wal: corrupt segment header in %s at offset 0: file is only %llu bytes", path,
               (unsigned long long)r.size);
        rc = CAIRN_ECORRUPT;
        goto out;
    }
    if ((rc = cairn_freader_get(&r, 0, SEG_HDR_SIZE, &h))) {
        cairn_errbuf_set(errbuf, errlen, "wal: cannot read %s: %s", path, cairn_strerror(rc));
        goto out;
    }
    const char *bad = NULL;
    if (memcmp(h, WAL_MAGIC, 8) != 0)
        bad = "not a Cairn WAL segment (bad magic)";
    else if (cairn_crc32c(h, 36) != cairn_get_le32(h + 36))
        bad = "header checksum mismatch";
    else if (cairn_get_le32(h + 8) != WAL_VERSION) {
        cairn_errbuf_set(errbuf, errlen, "wal: %s has format version %u, this build reads version %u", path, cairn_get_le32(h + 8),
               WAL_VERSION);
        rc = CAIRN_EVERSION;
        goto out;
    } else if (cairn_get_le64(h + 16) != seg->seq || cairn_get_le64(h + 24) != seg->first_index)
        bad = "header does not match the file name";
    else if (seg->seq >= WAL_NUM_LIMIT || seg->first_index >= WAL_NUM_LIMIT)
        /* a WAL counts both from 0 or 1 by one: no real one gets there, and the next segment
         * or entry number must not wrap (fuzz_wal: a segment numbered 2^64-1 was accepted, the
         * next one was created as 0, and the WAL then refused to open: "jumps from 0") */
        bad = "sequence or first index of 2^63 or more";
    if (bad) {
        cairn_errbuf_set(errbuf, errlen, "wal: corrupt segment header in %s at offset 0: %s", path, bad);
        rc = CAIRN_ECORRUPT;
        goto out;
    }

    uint64_t pos = SEG_HDR_SIZE;
    for (;;) {
        if (pos >= r.size)
            break;
        batch_info_t bi;
        const uint8_t *p;
        int st;
        if (r.size - pos >= 4 && (rc = cairn_freader_get(&r, pos, 4, &p)))
            goto io;
        if (r.size - pos < 4 || cairn_get_le32(p) == 0) {
            /* end of records: the rest must be zeroes */
            uint64_t first, lend;
            if ((rc = rd_nonzero(&r, pos, &first, &lend)))
                goto io;
            if (first == r.size)
                break;
            st = B_BAD;
            bi.bad_off = first;
            bi.resync = pos + 8;
            snprintf(bi.why, sizeof bi.why, "non-zero bytes after the end of records at offset %llu",
                     (unsigned long long)pos);
        } else {
            st = check_batch(&r, pos, &bi);
            if (st < 0) {
                rc = st;
                goto io;
            }
        }
        if (st == B_OK) {
            if ((rc = deliver(rp, &r, seg, path, pos, &bi)))
                goto out;
            pos = bi.end;
            continue;
        }
        uint64_t follow = 0;
        if (st == B_BAD && last && (rc = find_valid_batch(&r, bi.resync, &follow)))
            goto io;
        if (st == B_FATAL || !last || follow) {
            char more[96] = "";
            if (follow)
                snprintf(more, sizeof more, " (a valid batch follows at offset %llu)", (unsigned long long)follow);
            else if (!last)
                snprintf(more, sizeof more, " (not the last segment)");
            cairn_errbuf_set(errbuf, errlen, "wal: corrupt record in %s at offset %llu: %s%s", path,
                   (unsigned long long)bi.bad_off, bi.why, st == B_BAD ? more : "");
            cairn_error("wal corrupt", "file=%s offset=%llu reason=\"%s\"", path, (unsigned long long)bi.bad_off,
                        bi.why);
            rc = CAIRN_ECORRUPT;
            goto out;
        }
        /* torn tail */
        uint64_t first, lend;
        if ((rc = rd_nonzero(&r, pos, &first, &lend)))
            goto io;
        if ((rc = cut_tail(self, r.fd, pos, r.size, errbuf, errlen, path)))
            goto out;
        cairn_warn("wal torn tail truncated", "file=%s offset=%llu bytes=%llu reason=\"%s\"", path,
                   (unsigned long long)pos, (unsigned long long)(lend - pos), bi.why);
        if ((rc = self->ops->size(self->ops->ctx, r.fd, &r.size))) {
            rc = sys_err(rc);
            goto io;
        }
        break;
    }
    if (last) {
        self->fd = r.fd;
        r.fd = -1;
        self->cap = r.size;
        self->off = pos;
    }
    rc = 0;
    goto out;
io:
    cairn_errbuf_set(errbuf, errlen, "wal: cannot read %s: %s", path, cairn_strerror(rc));
out:
    if (r.fd >= 0)
        self->ops->close(self->ops->ctx, r.fd);
    cairn_freader_free(&r);
    free(path);
    return rc;
}

static int push_seg(cairn_wal_t *self, uint64_t seq, uint64_t first)
{
    if (self->nsegs == self->segcap) {
        size_t n = self->segcap ? self->segcap * 2 : 8;
        wal_seg_t *s = realloc(self->segs, n * sizeof *s);
        if (!s)
            return CAIRN_ENOMEM;
        self->segs = s;
        self->segcap = n;
    }
    self->segs[self->nsegs++] = (wal_seg_t){seq, first, 0};
    return 0;
}

typedef struct {
    cairn_wal_t *self;
    int rc;
} list_t;

static int is_hex16(const char *s)
{
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int on_name(void *arg, const char *name)
{
    list_t *l = arg;
    cairn_wal_t *self = l->self;
    size_t n = strlen(name);
    int named = n >= 37 && is_hex16(name) && name[16] == '-' && is_hex16(name + 17) &&
                memcmp(name + 33, ".wal", 4) == 0;
    if (named && n == 37) {
        uint64_t seq = strtoull(name, NULL, 16), first = strtoull(name + 17, NULL, 16);
        if ((l->rc = push_seg(self, seq, first)))
            return 1;
    } else if (named && n == 41 && strcmp(name + 37, ".tmp") == 0) {
        size_t pn = strlen(self->dir) + n + 2;
        char *p = malloc(pn);
        if (!p) {
            l->rc = CAIRN_ENOMEM;
            return 1;
        }
        snprintf(p, pn, "%s/%s", self->dir, name);
        int rc = self->ops->unlink(self->ops->ctx, p);
        cairn_info("wal removed unfinished segment", "file=%s rc=%d", p, rc);
        free(p);
    } else {
        cairn_warn("wal ignoring unknown file", "dir=%s file=%s", self->dir, name);
    }
    return 0;
}

static int cmp_seg(const void *a, const void *b)
{
    const wal_seg_t *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Creates segment seq (named after first) big enough for `need` more bytes after its header
 * and hard state copy, and makes it the current one. */
static int create_segment(cairn_wal_t *self, uint64_t seq, uint64_t first, uint64_t need, char *errbuf,
                          size_t errlen)
{
    const cairn_fileops_t *ops = self->ops;
    uint8_t head[SEG_HDR_SIZE + BATCH_SIZE + SNAP_SIZE + HS_SIZE];
    memset(head, 0, sizeof head);
    memcpy(head, WAL_MAGIC, 8);
    cairn_put_le32(head + 8, WAL_VERSION);
    cairn_put_le64(head + 16, seq);
    cairn_put_le64(head + 24, first);
    cairn_put_le32(head + 36, cairn_crc32c(head, 36));
    size_t hlen = SEG_HDR_SIZE;
    if (self->have_hs || self->have_snap) {
        /* copies of the last snapshot record and hard state: see "Batches" above */
        uint8_t *b = head + SEG_HDR_SIZE, *q = b + BATCH_SIZE;
        uint32_t count = 0;
        if (self->have_snap) {
            cairn_put_le32(q, SNAP_LEN);
            q[8] = REC_SNAPSHOT;
            cairn_put_le64(q + 9, self->snap_index);
            cairn_put_le64(q + 17, self->snap_term);
            cairn_put_le32(q + 4, rec_crc(q, SNAP_LEN));
            q += SNAP_SIZE;
            count++;
        }
        if (self->have_hs) {
            cairn_put_le32(q, HS_LEN);
            q[8] = REC_HARDSTATE;
            cairn_put_le64(q + 9, self->hs.term);
            cairn_put_le64(q + 17, self->hs.vote);
            cairn_put_le64(q + 25, self->hs.commit);
            cairn_put_le32(q + 4, rec_crc(q, HS_LEN));
            q += HS_SIZE;
            count++;
        }
        uint64_t body = (uint64_t)(q - (b + BATCH_SIZE));
        cairn_put_le32(b, BATCH_LEN);
        b[8] = REC_BATCH;
        cairn_put_le64(b + 9, SEG_HDR_SIZE);
        cairn_put_le64(b + 17, body);
        cairn_put_le32(b + 25, count);
        cairn_put_le32(b + 4, rec_crc(b, BATCH_LEN));
        hlen += BATCH_SIZE + body;
    }
    uint64_t cap = self->segment_bytes;
    if (cap < hlen + need)
        cap = ALIGN8(hlen + need);
    char *tmp = seg_path(self, seq, first, 1), *path = seg_path(self, seq, first, 0);
    int fd = -1, rc, renamed = 0;
    const char *what = "create";
    if (!tmp || !path) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = fd = ops->open(ops->ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644)) < 0)
        goto fail;
    what = "preallocate";
    if ((rc = ops->fallocate(ops->ctx, fd, 0, cap)))
        goto fail;
    what = "write";
    if ((rc = cairn_fileops_pwrite_full(ops, fd, head, hlen, 0)))
        goto fail;
    what = "fsync";
    if (!self->no_sync && (rc = ops->fsync(ops->ctx, fd)))
        goto fail;
    what = "rename";
    if ((rc = ops->rename(ops->ctx, tmp, path)))
        goto fail;
    renamed = 1;
    what = "fsync the directory of";
    if (!self->no_sync && (rc = ops->fsync_dir(ops->ctx, self->dir)))
        goto fail;
    if ((rc = push_seg(self, seq, first))) {
        ops->close(ops->ctx, fd);
        free(tmp);
        free(path);
        return rc;
    }
    if (self->fd >= 0)
        ops->close(ops->ctx, self->fd);
    self->fd = fd;
    self->cap = cap;
    self->off = hlen;
    cairn_debug("wal segment created", "file=%s bytes=%llu", path, (unsigned long long)cap);
    free(tmp);
    free(path);
    return 0;
fail:
    if (strcmp(what, "preallocate") == 0)
        cairn_errbuf_set(errbuf, errlen, "wal: cannot preallocate segment %s: %s (a segment needs %llu bytes)",
                         path ? path : "?", strerror(-rc), (unsigned long long)cap);
    else
        cairn_errbuf_set(errbuf, errlen, "wal: cannot %s segment %s: %s", what, path ? path : "?", strerror(-rc));
    cairn_error("wal segment creation failed", "file=%s op=\"%s\" err=\"%s\"", path ? path : "?", what,
                strerror(-rc));
    if (fd >= 0) {
        ops->close(ops->ctx, fd);
        /* A segment whose directory entry may not be durable is not ours yet: remove it, so
         * that a retry (the WAL recovers from a full disk) creating this sequence number
         * under another first index never leaves two files with one sequence. */
        if (renamed && path)
            ops->unlink(ops->ctx, path);
        else if (tmp)
            ops->unlink(ops->ctx, tmp);
    }
    free(tmp);
    free(path);
    return sys_err(rc);
}

cairn_wal_t *cairn_wal_open(const char *dir, const cairn_wal_opts_t *opts, const cairn_wal_replay_t *cb,
                            int *err, char *errbuf, size_t errlen)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = 0;
    if (errbuf && errlen)
        errbuf[0] = 0;
    if (!dir || !*dir) {
        *err = CAIRN_EINVAL;
        cairn_errbuf_set(errbuf, errlen, "wal: no directory given");
        return NULL;
    }
    cairn_wal_t *self = calloc(1, sizeof *self);
    if (!self || !(self->dir = strdup(dir))) {
        free(self);
        *err = CAIRN_ENOMEM;
        return NULL;
    }
    size_t dl = strlen(self->dir);
    while (dl > 1 && self->dir[dl - 1] == '/')
        self->dir[--dl] = 0;
    self->fd = -1;
    self->ops = opts && opts->ops ? opts->ops : cairn_fileops_default();
    self->segment_bytes = opts && opts->segment_bytes ? opts->segment_bytes : CAIRN_WAL_DEFAULT_SEGMENT_BYTES;
    if (self->segment_bytes < MIN_SEGMENT_BYTES)
        self->segment_bytes = MIN_SEGMENT_BYTES;
    self->segment_bytes = ALIGN8(self->segment_bytes);
    self->no_sync = opts ? opts->no_sync : 0;
    self->realloc_fn = opts && opts->realloc_fn ? opts->realloc_fn : realloc;
    const cairn_fileops_t *ops = self->ops;
    int rc;

    rc = ops->mkdir(ops->ctx, self->dir, 0755);
    if (rc == 0 && !self->no_sync) {
        /* make the new directory's own entry durable */
        char *parent = strdup(self->dir);
        char *slash = parent ? strrchr(parent, '/') : NULL;
        if (!parent)
            rc = -ENOMEM;
        else if (!slash)
            rc = ops->fsync_dir(ops->ctx, ".");
        else {
            if (slash == parent)
                slash[1] = 0;
            else
                *slash = 0;
            rc = ops->fsync_dir(ops->ctx, parent);
        }
        free(parent);
    }
    if (rc && rc != -EEXIST) {
        cairn_errbuf_set(errbuf, errlen, "wal: cannot create directory %s: %s", self->dir, strerror(-rc));
        rc = sys_err(rc);
        goto fail;
    }

    list_t l = {self, 0};
    rc = ops->list(ops->ctx, self->dir, on_name, &l);
    if (l.rc) {
        rc = l.rc;
        goto fail;
    }
    if (rc) {
        cairn_errbuf_set(errbuf, errlen, "wal: cannot list %s: %s", self->dir, strerror(-rc));
        rc = sys_err(rc);
        goto fail;
    }
    if (self->nsegs > 1)
        qsort(self->segs, self->nsegs, sizeof *self->segs, cmp_seg);
    for (size_t i = 1; i < self->nsegs; i++) {
        if (self->segs[i].seq != self->segs[i - 1].seq + 1) {
            cairn_errbuf_set(errbuf, errlen, "wal: segment sequence in %s jumps from %llu to %llu: a segment is missing",
                   self->dir, (unsigned long long)self->segs[i - 1].seq, (unsigned long long)self->segs[i].seq);
            rc = CAIRN_ECORRUPT;
            goto fail;
        }
    }

    if (self->nsegs == 0) {
        if ((rc = create_segment(self, 0, 1, 0, errbuf, errlen))) {
            if (rc == CAIRN_ENOSPC) {
                /* A disk too small for even one segment: say exactly what is needed, and how
                 * to need less, rather than only "no space". */
                struct statvfs vf;
                unsigned long long avail = statvfs(self->dir, &vf) == 0 ? (unsigned long long)vf.f_bavail * vf.f_frsize : 0;
                cairn_errbuf_set(errbuf, errlen,
                                 "wal: cannot create the first segment in %s: it needs %llu bytes, the filesystem has "
                                 "%llu free (No space left on device); free space or set CAIRN_WAL_SEGMENT_BYTES "
                                 "smaller",
                                 self->dir, (unsigned long long)self->segment_bytes, avail);
            }
            goto fail;
        }
        cairn_info("wal created", "dir=%s", self->dir);
    } else {
        replay_t rp = {self, cb, errbuf, errlen};
        for (size_t i = 0; i < self->nsegs; i++)
            if ((rc = replay_segment(&rp, i)))
                goto fail;
        cairn_info("wal opened", "dir=%s segments=%zu last_index=%llu", self->dir, self->nsegs,
                   (unsigned long long)self->last_index);
    }
    return self;
fail:
    *err = rc ? rc : CAIRN_EIO;
    if (errbuf && errlen && !errbuf[0])
        cairn_errbuf_set(errbuf, errlen, "wal: cannot open %s: %s", self->dir, cairn_strerror(*err));
    cairn_wal_destroy(&self);
    return NULL;
}

void cairn_wal_destroy(cairn_wal_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_wal_t *self = *self_p;
    if (self->fd >= 0)
        self->ops->close(self->ops->ctx, self->fd);
    free(self->buf);
    free(self->segs);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

/* ---- writing ------------------------------------------------------------------------- */

static void reset_pending(cairn_wal_t *self);

/* An append that fails leaves a hole in the batch (a hard state or entry that the caller
 * believes buffered is not): nothing of the batch may ever be reported durable, so the batch
 * is dropped and the WAL refuses everything from now on, like after a failed sync. */
static int append_failed(cairn_wal_t *self, int rc, const char *what)
{
    self->failed = rc;
    self->dirty_len = 0; /* nothing reached a file */
    snprintf(self->errmsg, sizeof self->errmsg, "wal: cannot buffer a %s record: %s", what, cairn_strerror(rc));
    reset_pending(self);
    cairn_error("wal append failed; the batch is dropped and the WAL refuses further writes", "dir=%s record=%s err=\"%s\"",
                self->dir, what, cairn_strerror(rc));
    return rc;
}

static int reserve(cairn_wal_t *self, size_t more)
{
    if (self->len == 0)
        more += BATCH_SIZE;
    if (self->bufcap - self->len >= more)
        return 0;
    size_t n = self->bufcap ? self->bufcap : 4096;
    while (n - self->len < more) {
        if (n > SIZE_MAX / 2)
            return CAIRN_ENOMEM;
        n *= 2;
    }
    uint8_t *b = self->realloc_fn(self->buf, n);
    if (!b)
        return CAIRN_ENOMEM;
    self->buf = b;
    self->bufcap = n;
    return 0;
}

/* Starts a record of length len at the end of the buffer; returns a pointer to it. */
static uint8_t *begin_record(cairn_wal_t *self, uint32_t len, uint8_t type)
{
    if (self->len == 0)
        self->len = BATCH_SIZE;
    uint8_t *p = self->buf + self->len;
    size_t sz = (size_t)ALIGN8(REC_HDR + (uint64_t)len);
    memset(p + sz - 8, 0, 8); /* padding */
    cairn_put_le32(p, len);
    p[8] = type;
    self->len += sz;
    self->count++;
    return p;
}

int cairn_wal_append_entry(cairn_wal_t *self, const cairn_wal_entry_t *e)
{
    if (!self)
        return CAIRN_EINVAL;
    if (self->failed)
        return CAIRN_ESTATE;
    if (!e || (e->len && !e->data) || e->index == 0 || e->index >= WAL_NUM_LIMIT)
        return append_failed(self, CAIRN_EINVAL, "entry");
    if (e->len > CAIRN_WAL_MAX_ENTRY_BYTES)
        return append_failed(self, CAIRN_ETOOBIG, "entry");
    uint32_t len = ENTRY_FIXED + (uint32_t)e->len;
    int rc = reserve(self, (size_t)ALIGN8(REC_HDR + (uint64_t)len));
    if (rc)
        return append_failed(self, rc, "entry");
    uint8_t *p = begin_record(self, len, REC_ENTRY);
    cairn_put_le64(p + 9, e->index);
    cairn_put_le64(p + 17, e->term);
    p[25] = e->type;
    if (e->len)
        memcpy(p + REC_HDR + ENTRY_FIXED, e->data, e->len);
    cairn_put_le32(p + 4, rec_crc(p, len));
    if (!self->p_has_entry)
        self->p_first = e->index;
    self->p_has_entry = 1;
    self->p_last = e->index;
    if (e->index > self->p_max)
        self->p_max = e->index;
    return 0;
}

int cairn_wal_append_hardstate(cairn_wal_t *self, const cairn_wal_hardstate_t *hs)
{
    if (!self)
        return CAIRN_EINVAL;
    if (self->failed)
        return CAIRN_ESTATE;
    if (!hs)
        return append_failed(self, CAIRN_EINVAL, "hardstate");
    int rc = reserve(self, HS_SIZE);
    if (rc)
        return append_failed(self, rc, "hardstate");
    uint8_t *p = begin_record(self, HS_LEN, REC_HARDSTATE);
    cairn_put_le64(p + 9, hs->term);
    cairn_put_le64(p + 17, hs->vote);
    cairn_put_le64(p + 25, hs->commit);
    cairn_put_le32(p + 4, rec_crc(p, HS_LEN));
    self->p_hs = *hs;
    self->p_has_hs = 1;
    return 0;
}

int cairn_wal_append_snapshot(cairn_wal_t *self, uint64_t index, uint64_t term)
{
    if (!self)
        return CAIRN_EINVAL;
    if (self->failed)
        return CAIRN_ESTATE;
    if (index == 0 || index >= WAL_NUM_LIMIT)
        return append_failed(self, CAIRN_EINVAL, "snapshot");
    int rc = reserve(self, SNAP_SIZE);
    if (rc)
        return append_failed(self, rc, "snapshot");
    uint8_t *p = begin_record(self, SNAP_LEN, REC_SNAPSHOT);
    cairn_put_le64(p + 9, index);
    cairn_put_le64(p + 17, term);
    cairn_put_le32(p + 4, rec_crc(p, SNAP_LEN));
    self->p_snap_index = index;
    self->p_snap_term = term;
    self->p_has_snap = 1;
    return 0;
}

static void reset_pending(cairn_wal_t *self)
{
    self->len = 0;
    self->count = 0;
    self->p_has_entry = self->p_has_hs = self->p_has_snap = 0;
    self->p_first = self->p_last = self->p_max = 0;
}

/* The batch is dropped (nothing of it is ever reported durable) and the WAL refuses
 * everything until cairn_wal_recover. dirty: how many bytes at self->off the failed step may
 * have written (0 when it failed before writing to the current segment). */
static int sync_failed(cairn_wal_t *self, int rc, const char *what, int neg_errno, uint64_t dirty)
{
    self->failed = rc;
    self->dirty_off = self->off;
    self->dirty_len = dirty;
    reset_pending(self);
    if (strcmp(what, "roll") != 0 || !self->errmsg[0]) {
        char *path = self->nsegs ? seg_path(self, self->segs[self->nsegs - 1].seq, self->segs[self->nsegs - 1].first_index, 0)
                                 : NULL;
        snprintf(self->errmsg, sizeof self->errmsg, "wal: %s of %s at offset %llu failed: %s", what,
                 path ? path : self->dir, (unsigned long long)self->off,
                 neg_errno ? strerror(-neg_errno) : cairn_strerror(rc));
        free(path);
    }
    cairn_error("wal sync failed; the batch is dropped and the WAL refuses writes until it recovers", "dir=%s op=%s err=\"%s\"",
                self->dir, what, neg_errno ? strerror(-neg_errno) : cairn_strerror(rc));
    return rc;
}

int cairn_wal_sync(cairn_wal_t *self)
{
    if (!self)
        return CAIRN_EINVAL;
    if (self->failed)
        return CAIRN_ESTATE;
    if (self->len == 0)
        return 0;
    const cairn_fileops_t *ops = self->ops;
    uint64_t total = self->len;
    int rc;
    if (self->off + total > self->cap) {
        uint64_t first = self->p_has_entry ? self->p_first : self->last_index + 1;
        self->errmsg[0] = 0;
        if ((rc = create_segment(self, self->segs[self->nsegs - 1].seq + 1, first, total, self->errmsg,
                                 sizeof self->errmsg)))
            return sync_failed(self, rc, "roll", 0, 0); /* the current segment is untouched */
    }
    uint8_t *b = self->buf;
    cairn_put_le32(b, BATCH_LEN);
    b[8] = REC_BATCH;
    cairn_put_le64(b + 9, self->off);
    cairn_put_le64(b + 17, total - BATCH_SIZE);
    cairn_put_le32(b + 25, self->count);
    memset(b + REC_HDR + BATCH_LEN, 0, BATCH_SIZE - REC_HDR - BATCH_LEN);
    cairn_put_le32(b + 4, rec_crc(b, BATCH_LEN));
    if ((rc = cairn_fileops_pwrite_full(ops, self->fd, b, (size_t)total, self->off)))
        return sync_failed(self, sys_err(rc), "pwrite", rc, total);
    if (!self->no_sync && (rc = ops->fdatasync(ops->ctx, self->fd)))
        return sync_failed(self, sys_err(rc), "fdatasync", rc, total);
    self->off += total;
    wal_seg_t *cur = &self->segs[self->nsegs - 1];
    if (self->p_has_entry) {
        self->last_index = self->p_last;
        if (self->p_max > cur->max_index)
            cur->max_index = self->p_max;
    }
    if (self->p_has_hs) {
        self->hs = self->p_hs;
        self->have_hs = 1;
    }
    if (self->p_has_snap) {
        self->snap_index = self->p_snap_index;
        self->snap_term = self->p_snap_term;
        self->have_snap = 1;
        if (self->snap_index > self->last_index)
            self->last_index = self->snap_index;
    }
    reset_pending(self);
    /* do not keep a huge buffer around after one huge batch */
    if (self->bufcap > ((size_t)8 << 20)) {
        free(self->buf);
        self->buf = NULL;
        self->bufcap = 0;
    }
    return 0;
}

int cairn_wal_release_before(cairn_wal_t *self, uint64_t index)
{
    if (!self)
        return CAIRN_EINVAL;
    const cairn_fileops_t *ops = self->ops;
    size_t n = 0;
    /* only a prefix, never the current segment, never the one that may hold index-1 */
    while (n + 1 < self->nsegs && self->segs[n].max_index + 1 < index)
        n++;
    if (n == 0)
        return 0;
    size_t done = 0;
    int rc = 0;
    for (; done < n; done++) {
        char *path = seg_path(self, self->segs[done].seq, self->segs[done].first_index, 0);
        if (!path) {
            rc = CAIRN_ENOMEM;
            break;
        }
        int u = ops->unlink(ops->ctx, path);
        if (u && u != -ENOENT) {
            cairn_error("wal cannot remove segment", "file=%s err=\"%s\"", path, strerror(-u));
            rc = sys_err(u);
            free(path);
            break;
        }
        free(path);
    }
    if (done) {
        memmove(self->segs, self->segs + done, (self->nsegs - done) * sizeof *self->segs);
        self->nsegs -= done;
        if (!self->no_sync) {
            int s = ops->fsync_dir(ops->ctx, self->dir);
            if (s && !rc)
                rc = sys_err(s);
        }
        cairn_info("wal released segments", "dir=%s removed=%zu before_index=%llu", self->dir, done,
                   (unsigned long long)index);
    }
    return rc ? rc : (int)done;
}

/* The dropped batch may have reached the disk in part or whole (a pwrite that failed half way,
 * an fdatasync that failed after the pages were written). It must never be replayed: its
 * entries were never acknowledged (and may have been answered as refused), and bytes after the
 * last batch of a segment that is not the last one are corruption to replay. The next batch
 * starts at the same offset, but may be shorter, so the whole range is zeroed and synced
 * first. The range was written once already, so zeroing it needs no new space (the segment
 * is preallocated). After a failed fdatasync (fsyncgate) the kernel may have dropped the
 * dirty pages' error: rewriting every byte of the range and syncing again makes its content
 * known, which is why the dropped batch is not simply left for replay to judge. */
int cairn_wal_recover(cairn_wal_t *self)
{
    if (!self)
        return CAIRN_EINVAL;
    if (!self->failed)
        return 0;
    if (self->dirty_len) {
        const cairn_fileops_t *ops = self->ops;
        uint8_t zero[4096] = {0};
        int rc = 0;
        for (uint64_t o = 0; o < self->dirty_len && rc == 0;) {
            size_t n = self->dirty_len - o < sizeof zero ? (size_t)(self->dirty_len - o) : sizeof zero;
            rc = cairn_fileops_pwrite_full(ops, self->fd, zero, n, self->dirty_off + o);
            o += n;
        }
        if (rc == 0 && !self->no_sync)
            rc = ops->fdatasync(ops->ctx, self->fd);
        if (rc) {
            snprintf(self->errmsg, sizeof self->errmsg, "wal: cannot clear the dropped batch at offset %llu of %s: %s",
                     (unsigned long long)self->dirty_off, self->dir, strerror(-rc));
            return sys_err(rc);
        }
        cairn_info("wal cleared a dropped batch", "dir=%s offset=%llu bytes=%llu", self->dir,
                   (unsigned long long)self->dirty_off, (unsigned long long)self->dirty_len);
    }
    self->failed = 0;
    self->dirty_len = 0;
    return 0;
}

int cairn_wal_hardstate(const cairn_wal_t *self, cairn_wal_hardstate_t *hs)
{
    if (!self || !self->have_hs)
        return 0;
    if (hs)
        *hs = self->hs;
    return 1;
}

int cairn_wal_failed(const cairn_wal_t *self) { return self ? self->failed : CAIRN_EINVAL; }
const char *cairn_wal_error(const cairn_wal_t *self) { return self && self->failed ? self->errmsg : ""; }
uint64_t cairn_wal_dirty_bytes(const cairn_wal_t *self) { return self && self->failed ? self->dirty_len : 0; }
size_t cairn_wal_segment_bytes(const cairn_wal_t *self) { return self ? (size_t)self->segment_bytes : 0; }

uint64_t cairn_wal_last_index(const cairn_wal_t *self) { return self ? self->last_index : 0; }

int cairn_wal_last_snapshot(const cairn_wal_t *self, uint64_t *index, uint64_t *term)
{
    if (!self || !self->have_snap)
        return 0;
    if (index)
        *index = self->snap_index;
    if (term)
        *term = self->snap_term;
    return 1;
}
size_t cairn_wal_pending_bytes(const cairn_wal_t *self) { return self ? self->len : 0; }
size_t cairn_wal_segment_count(const cairn_wal_t *self) { return self ? self->nsegs : 0; }
