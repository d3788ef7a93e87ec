/* mvcc_ldblog.h - checks LevelDB's write-ahead logs before the store opens them, and cuts a
 * damaged one at its last whole record (the format and the reasons: mvcc_ldblog.c). */
#ifndef CAIRN_MVCC_LDBLOG_H
#define CAIRN_MVCC_LDBLOG_H
#include <stddef.h>
#include <stdint.h>

#define CAIRN_LDBLOG_BLOCK 32768

/* A streaming scan of one log: fed one block at a time (32768 bytes; the last may be
 * shorter), it finds the longest prefix of whole, well-formed, checksummed logical records
 * whose WriteBatch sequence numbers follow one another. Memory: this struct, whatever the
 * log's size. */
typedef struct {
    uint64_t good;     /* the prefix: bytes up to the end of the last whole record */
    uint64_t records;  /* whole logical records in it */
    uint64_t first_seq; /* the sequence of the first whole record (when records > 0) */
    uint64_t next_seq; /* the sequence the next batch must carry (0: none seen yet) */
    int damaged;       /* 1 once something other than a clean end was found */
    int eof_in_record; /* the input ended inside a record (a writer that died mid-record) */
    char why[96];      /* what ended the prefix, when damaged */
    /* private */
    uint64_t off;      /* bytes fed so far */
    int in_record;
    uint64_t rec_start; /* where the record being read began */
    uint8_t hdr[12];   /* the WriteBatch header (sequence, count) of the record being read */
    size_t hdr_have;
} cairn_ldblog_scan_t;

void cairn_ldblog_scan_init(cairn_ldblog_scan_t *s);
/* Feeds the next block (n <= CAIRN_LDBLOG_BLOCK; n < CAIRN_LDBLOG_BLOCK only for the last).
 * Returns 1 once the scan is over (damage found: s->good is final), else 0. */
int cairn_ldblog_scan_block(cairn_ldblog_scan_t *s, const uint8_t *blk, size_t n);
/* Ends the scan (after the last block); sets eof_in_record. */
void cairn_ldblog_scan_end(cairn_ldblog_scan_t *s);

/* Scans every LevelDB log (NNNNNN.log) of dir, oldest first. The first damaged one (or one
 * cut short or empty while newer ones follow, or a log whose first batch does not follow the
 * older log's last) is cut at the end of its last whole record and every newer log is moved
 * aside (their batches come after the damage); they and a copy of the cut log as it was go to
 * <dir>.torn-<time>-XXXXXX/. The logs are
 * checked under LevelDB's LOCK (held by no one else; a held lock skips the check, the open
 * will then fail on it). Returns how many logs were cut or moved (0: all whole), or a
 * negative error code with errbuf set. */
int cairn_ldblog_repair(const char *dir, char *errbuf, size_t errlen);
/* Moves every LevelDB log of dir into a new <dir>.torn-<time>-XXXXXX/ (the fallback when
 * LevelDB still finds its logs corrupt): how many were moved, or -1. */
int cairn_ldblog_move_aside(const char *dir);

#endif
