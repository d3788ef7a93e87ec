/* snapshot.h - snapshot files of stored: a consistent point-in-time copy of the whole MVCC
 * store (every LevelDB record of every table), used to catch up a follower that is behind
 * the leader's compacted log (Raft thesis §5.1, "InstallSnapshot"). The file format and the
 * rule that makes a file valid are described byte by byte at the top of snapshot.c.
 *
 * Three parts:
 *   - files: cairn_snap_save writes one from a live store, cairn_snap_read checks one (and
 *     hands out its records), cairn_snap_restore builds a fresh store directory from one;
 *   - the sending side (cairn_snap_out_t): the leader's current snapshot file, read in chunks;
 *   - the receiving side (cairn_snap_in_t): a follower's file being assembled from chunks.
 * The install itself (WAL commit point, directory swap, log reset) is stored's main.c.
 *
 * Errors are CAIRN_E* codes; functions that take errbuf fill it with a sentence naming the
 * file. None of these is thread-safe.
 */
#ifndef CAIRN_SNAPSHOT_H
#define CAIRN_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "mvcc.h"

/* What a snapshot file holds (its header, and what reading it found). */
typedef struct {
    uint64_t index, term;    /* the state machine's applied index/term in the copy */
    int64_t revision;        /* its MVCC revision */
    int64_t compact_rev;     /* its compact revision (-1: never compacted) */
    uint64_t records;        /* number of key/value records */
    uint64_t bytes;          /* file size */
} cairn_snap_info_t;

/* Writes a snapshot of m's committed state to dir/name: first to dir/name.tmp, fdatasync,
 * rename, fsync of dir. It reads through one LevelDB snapshot and touches nothing else of m,
 * so it may run on another thread while m's owner keeps writing (stored does that: a big store
 * takes seconds). *info (may be NULL) gets what the file holds. On failure the .tmp is removed. */
int cairn_snap_save(cairn_mvcc_t *m, const char *dir, const char *name, cairn_snap_info_t *info, char *errbuf,
                    size_t errlen);

/* Reads and checks the file at path: magic, version, every record's lengths against the file
 * size, record count and CRC. fn (may be NULL: verify only) gets every record in file order;
 * it sees them BEFORE the checksum at the end is checked, so a caller that keeps them must
 * discard them when this returns an error. CAIRN_ECORRUPT for a bad or truncated file,
 * CAIRN_EVERSION for another version, CAIRN_EIO/CAIRN_ENOTFOUND for a file that cannot be
 * read, or fn's non-zero return. */
int cairn_snap_read(const char *path, cairn_snap_info_t *info, cairn_mvcc_raw_fn fn, void *arg, char *errbuf,
                    size_t errlen);

/* Builds a new store in mvcc_dir (which must not exist: remove a leftover first) from the
 * snapshot file at path, synced, and checks that its applied point is the header's. On any
 * failure mvcc_dir is removed again. */
int cairn_snap_restore(const char *path, const char *mvcc_dir, cairn_snap_info_t *info, char *errbuf,
                       size_t errlen);

/* rm -rf path (no error if it does not exist). 0 or CAIRN_EIO. */
int cairn_snap_rmtree(const char *path);

/* Swaps two directories of parent atomically (renameat2 RENAME_EXCHANGE), then fsyncs
 * parent. Where the filesystem cannot exchange, falls back to a -> a.old, b -> a (a crash
 * in between leaves no a: callers must be able to rebuild it, see main.c's recovery).
 * Afterwards b holds what a held. */
int cairn_snap_swap_dirs(const char *parent, const char *a, const char *b, char *errbuf, size_t errlen);

/* ---- the sending side (the leader's stored) ------------------------------------------- */

/* Snapshot files to send are named out-<applied index>.snap in dir; the applied index is the
 * snapshot's id (the same index is the same state on every member, so a file found after a
 * restart can still be served). There is one current file; making a new one keeps the one it
 * replaces readable while it is being read (two followers catching up at once), and removes
 * every other. */
typedef struct cairn_snap_out_t cairn_snap_out_t;

/* Takes the newest out-*.snap in dir as the current file (its idle clock starts at now_ms),
 * removes the older ones. NULL only when out of memory. */
cairn_snap_out_t *cairn_snap_out_new(const char *dir, int64_t now_ms);
void cairn_snap_out_destroy(cairn_snap_out_t **self_p);

/* Makes the current file from m's committed state, or reuses the current one when it holds
 * the same applied index. *id (= applied index), *total (bytes), *applied. CAIRN_ESTATE when
 * m has applied nothing yet (there is nothing to send). This reads the whole store: it
 * takes as long as that takes. */
int cairn_snap_out_make(cairn_snap_out_t *o, cairn_mvcc_t *m, int64_t now_ms, uint64_t *id, uint64_t *total,
                        uint64_t *applied, char *errbuf, size_t errlen);

/* The current file, if any: 1 and its id, size and applied index; 0 when there is none. */
int cairn_snap_out_current(const cairn_snap_out_t *o, uint64_t *id, uint64_t *total, uint64_t *applied);
/* Takes dir/out-<id>.snap (written by cairn_snap_save, e.g. on another thread) as the current
 * file and removes the others. 0, CAIRN_ENOTFOUND or CAIRN_ECORRUPT (the file is removed). */
int cairn_snap_out_adopt(cairn_snap_out_t *o, uint64_t id, int64_t now_ms);

/* Reads up to max bytes at offset off of snapshot id into buf (one pread). *n gets the count
 * (0 at the end), *total and *applied describe the file. CAIRN_ENOTFOUND when id is not the
 * current file (it was replaced or expired), CAIRN_EINVAL when off > total. */
int cairn_snap_out_read(cairn_snap_out_t *o, uint64_t id, uint64_t off, uint8_t *buf, size_t max, int64_t now_ms,
                        size_t *n, uint64_t *total, uint64_t *applied);

/* Removes the current file when it was not made or read for idle_ms, the replaced one after
 * min(idle_ms, 30 s) unread. Returns 1 if it removed one. */
int cairn_snap_out_expire(cairn_snap_out_t *o, int64_t now_ms, int64_t idle_ms);

/* ---- the receiving side (a follower's stored) ----------------------------------------- */

/* Assembles dir/in.tmp from chunks. A leftover in.tmp (from before a restart) is removed:
 * the sender starts again from offset 0. */
typedef struct cairn_snap_in_t cairn_snap_in_t;
cairn_snap_in_t *cairn_snap_in_new(const char *dir);
void cairn_snap_in_destroy(cairn_snap_in_t **self_p);

/* Takes the chunk at offset off of snapshot seq (total bytes in all). off 0 starts the file
 * over; any other off must equal the bytes held for that same seq and total. *held always
 * gets the bytes held for seq afterwards (0 if another snapshot's bytes are held), so the
 * sender can resume there. Returns 1 when the file is complete (held == total), 0 when more
 * is to come, CAIRN_EINVAL for a chunk that does not fit (wrong offset, total 0, a chunk
 * past total; errbuf says what was expected; nothing is written), CAIRN_EIO/CAIRN_ENOSPC
 * when writing failed (the file is dropped). */
int cairn_snap_in_chunk(cairn_snap_in_t *in, uint64_t seq, uint64_t off, uint64_t total, const uint8_t *body,
                        size_t len, uint64_t *held, char *errbuf, size_t errlen);

/* Once complete: checks the file (cairn_snap_read), fsyncs it, renames it to
 * dir/<index>-<term>.snap and fsyncs dir; path gets the new name. On failure the received
 * bytes are dropped (the sender must start over). */
int cairn_snap_in_finish(cairn_snap_in_t *in, uint64_t index, uint64_t term, cairn_snap_info_t *info, char *path,
                         size_t pathlen, char *errbuf, size_t errlen);

/* Drops whatever was received. */
void cairn_snap_in_reset(cairn_snap_in_t *in);

/* The name of an installed snapshot file: dir/<index>-<term>.snap (decimal). */
void cairn_snap_installed_path(const char *dir, uint64_t index, uint64_t term, char *path, size_t pathlen);

/* Removes every installed <i>-<t>.snap in dir except keep_index-keep_term's. */
void cairn_snap_prune_installed(const char *dir, uint64_t keep_index, uint64_t keep_term);

#endif
