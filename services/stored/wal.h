/* wal.h - the write-ahead log of stored: raft entries, hard state and snapshot marks, segmented,
 * CRC32C-checked, one fdatasync per batch (group commit). The on-disk format and the
 * recovery rules are described byte by byte at the top of wal.c.
 *
 * A cairn_wal_t has one owner; it is not thread-safe.
 */
#ifndef CAIRN_WAL_H
#define CAIRN_WAL_H

#include "cairn_entry.h"
#include <stddef.h>
#include <stdint.h>

#include "fileops.h"

typedef struct cairn_wal cairn_wal_t;

/* A log entry (the one entry struct, cairn_entry.h); during replay its data is valid only for
 * the duration of the callback. */
typedef cairn_entry_t cairn_wal_entry_t;

typedef struct {
    uint64_t term, vote, commit;
} cairn_wal_hardstate_t;

typedef struct {
    size_t segment_bytes;       /* preallocated size of each segment; default 64 MiB */
    const cairn_fileops_t *ops; /* NULL = cairn_fileops_default() (real POSIX) */
    int no_sync;                /* tests/bench only: skip fdatasync (no durability, see wal.c) */
    void *(*realloc_fn)(void *, size_t); /* NULL = realloc: the batch buffer's allocator (tests
                                            inject allocation failures through it) */
} cairn_wal_opts_t;

typedef struct {
    /* called in log order during open; an entry whose index <= the previous entry's index
       means the log was truncated there by Raft (a new leader overwrote it): the callee must
       drop its entries >= that index before taking this one */
    int (*on_entry)(void *ctx, const cairn_wal_entry_t *e);
    /* called for every hard state record in log order; the last call is the current one
       (a segment starts with a copy of the hard state current when it was created, so the
       same value may be reported more than once) */
    int (*on_hardstate)(void *ctx, const cairn_wal_hardstate_t *hs);
    void *ctx;
    /* called for every SNAPSHOT record in log order (NULL: ignored). A Raft snapshot at
       (index, term) was installed there: entries replayed before it that the snapshot
       supersedes must be dropped by the callee (Raft's rule: keep the entries after index
       only if the log held (index, term)). Like the hard state, a segment starts with a copy
       of the last snapshot record, so the same value may be reported more than once; a
       copy changes nothing under that rule. Last in the struct so that positional
       initialisers written before it existed stay valid. */
    int (*on_snapshot)(void *ctx, uint64_t index, uint64_t term);
} cairn_wal_replay_t;

/* Largest entry payload cairn_wal_append_entry accepts (CAIRN_ETOOBIG beyond). */
#define CAIRN_WAL_MAX_ENTRY_BYTES ((size_t)64 << 20)
#define CAIRN_WAL_DEFAULT_SEGMENT_BYTES ((size_t)64 << 20)

/* Opens (creating if absent) the WAL in dir, replays every record through cb (may be NULL).
   Records are replayed a whole batch (one cairn_wal_sync) at a time: a batch that did not
   fully reach the disk is never partly replayed. On a torn tail in the LAST segment it
   truncates (zeroes) the tail and logs how many bytes were dropped. On a bad record followed
   by valid data, or a bad record in a non-last segment, it returns CAIRN_ECORRUPT and fills
   errbuf with a message naming the file and byte offset. A non-zero return of a callback
   stops the open and is returned in *err. err, errbuf may be NULL. */
cairn_wal_t *cairn_wal_open(const char *dir, const cairn_wal_opts_t *opts, const cairn_wal_replay_t *cb,
                            int *err, char *errbuf, size_t errlen);
/* Closes the WAL; records appended since the last cairn_wal_sync are dropped. Idempotent,
   sets *self_p to NULL. */
void cairn_wal_destroy(cairn_wal_t **self_p);

/* Buffer records in memory (no I/O). 0, CAIRN_EINVAL, CAIRN_ETOOBIG, CAIRN_ENOMEM, or
   CAIRN_ESTATE once a sync or an append has failed. A failed append drops the whole batch
   buffered since the last sync and makes the WAL refuse everything (CAIRN_ESTATE) until
   cairn_wal_recover: a batch with a record missing must never be reported durable. */
int cairn_wal_append_entry(cairn_wal_t *self, const cairn_wal_entry_t *e);
int cairn_wal_append_hardstate(cairn_wal_t *self, const cairn_wal_hardstate_t *hs);
/* A SNAPSHOT record: a Raft snapshot at (index, term) is installed (index >= 1). Durable
   after the next cairn_wal_sync like any record; the record stays meaningful across segment
   release (every new segment starts with a copy of the last one). */
int cairn_wal_append_snapshot(cairn_wal_t *self, uint64_t index, uint64_t term);

/* Write every buffered record and make it durable with ONE fdatasync (group commit); rolls to
   a new preallocated segment when the current one is full (fsync the directory after creating
   it). Returns 0, or CAIRN_EIO/CAIRN_ENOSPC: on failure the batch is DROPPED (nothing of it
   is ever reported durable, and the caller must forget it: re-append what it still wants)
   and the WAL refuses further appends and syncs with CAIRN_ESTATE until cairn_wal_recover
   succeeds. cairn_wal_error says why. A sync with nothing buffered does no I/O and returns 0. */
int cairn_wal_sync(cairn_wal_t *self);

/* After a failed sync or append: makes the WAL writable again. Whatever the failed sync may
   have written is overwritten with zeroes and fdatasync'd first (after a failed fdatasync
   the page cache state is unknown; rewriting every byte makes it known), so the dropped
   batch can never be replayed. 0 (also when nothing failed), or the CAIRN_E* of the step that
   failed again (the WAL stays refusing; try later, e.g. once the disk has space). */
int cairn_wal_recover(cairn_wal_t *self);
/* The last durable hard state: 1 and *hs, or 0 (and *hs untouched) if the WAL has none. */
int cairn_wal_hardstate(const cairn_wal_t *self, cairn_wal_hardstate_t *hs);
/* The error the WAL refuses with (0: none). */
int cairn_wal_failed(const cairn_wal_t *self);
/* Why it refuses, for people: the file, the step and the errno's text ("" when it does not). */
const char *cairn_wal_error(const cairn_wal_t *self);
/* Bytes the failed sync may have written (0: none reached a file, e.g. the next segment could
   not be preallocated): while this is not 0, the dropped batch may still be on disk. */
uint64_t cairn_wal_dirty_bytes(const cairn_wal_t *self);
/* The preallocated size of a segment (what a rollover needs free on the disk). */
size_t cairn_wal_segment_bytes(const cairn_wal_t *self);

/* Remove whole segments whose entries are all < index - 1 (after a snapshot at index - 1 or
   later): the segment holding index-1 and the current segment are always kept, and only
   the oldest segments are removed (never one in the middle). Every segment starts with a
   copy of the hard state, so the last hard state is never lost. Returns the number of
   segments removed, or CAIRN_EIO. */
int cairn_wal_release_before(cairn_wal_t *self, uint64_t index);

/* Index of the last entry made durable (by cairn_wal_sync, or found at open); 0 if none. After
   a Raft truncation this is the index of the overwriting entry, not the old maximum. A
   durable SNAPSHOT record above it raises it to the snapshot's index. */
uint64_t cairn_wal_last_index(const cairn_wal_t *self);
/* The last durable SNAPSHOT record: 1 and its (index, term), or 0 if the WAL has none. */
int cairn_wal_last_snapshot(const cairn_wal_t *self, uint64_t *index, uint64_t *term);
/* Bytes buffered by append and not yet synced (0 when nothing is pending). */
size_t cairn_wal_pending_bytes(const cairn_wal_t *self);
/* Number of segment files the WAL currently has. */
size_t cairn_wal_segment_count(const cairn_wal_t *self);

#endif
