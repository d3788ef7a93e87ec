/* memlog.h - the part of the raft log stored keeps in memory (DESIGN.md "stored", issue 7).
 *
 * The WAL is the only complete copy of the log. stored keeps in memory the entries not yet
 * applied (apply reads them from here, never from the disk) and a bounded tail of applied
 * ones, which raftd reloads at its start (LOAD, paged) so that members a little behind are
 * served from the log. The log holds entries [first, last] contiguously and starts after
 * (snap_index, snap_term): the point whose term is known, so that raftd can start its log
 * there.
 *
 * Rules (each function says which it applies):
 *   - append at an index <= last overwrites that suffix (Raft §5.3);
 *   - append past last + 1 (a gap: only after a torn WAL tail behind a newer state machine)
 *     restarts the log at the new entry;
 *   - trim drops applied entries from the front, keeping at most keep_entries of them and,
 *     with the unapplied ones, at most max_bytes of entry data; never an unapplied entry;
 *   - reset_to_snapshot is Raft's rule for installing a snapshot (thesis §5.1).
 * Entry data is copied in and owned by the log.
 */
#ifndef CAIRN_MEMLOG_H
#define CAIRN_MEMLOG_H

#include <stddef.h>
#include <stdint.h>

#include "cairn_entry.h"

/* An entry held: the one entry struct (cairn_entry.h), its data owned by the log. */
typedef cairn_entry_t cairn_memlog_entry_t;

typedef struct cairn_memlog cairn_memlog_t;

/* NULL when out of memory. */
cairn_memlog_t *cairn_memlog_new(void);
/* Frees every entry. Idempotent, sets *self_p to NULL. */
void cairn_memlog_destroy(cairn_memlog_t **self_p);

/* Appends a copy of the entry (the overwrite and gap rules above). 0 or CAIRN_ENOMEM (the
 * log is then unchanged, except that an overwritten suffix is gone). */
int cairn_memlog_append(cairn_memlog_t *self, uint64_t index, uint64_t term, uint8_t type, const uint8_t *data,
                        size_t len);
/* Drops the entries >= index. */
void cairn_memlog_truncate_from(cairn_memlog_t *self, uint64_t index);
/* Drops applied entries from the front by the trim rule above; the log then starts after the
 * last one dropped. Drops are amortised: by at least 4096 entries (or every applied one when
 * fewer are held), or down to 3/4 of max_bytes once over it. Returns how many were dropped. */
size_t cairn_memlog_trim(cairn_memlog_t *self, uint64_t applied, uint64_t keep_entries, uint64_t max_bytes);
/* Raft's rule for installing a snapshot at (S, T): the entries after S stay only if the log
 * holds (S, T) (Log Matching), otherwise the whole log goes; the log starts after S. A state
 * machine already past S (applied A, its term AT) moves the start to A: an old entry kept
 * between S and A could be one a later leader replaced. */
void cairn_memlog_reset_to_snapshot(cairn_memlog_t *self, uint64_t S, uint64_t T, uint64_t applied,
                                    uint64_t applied_term);
/* The log now starts after (index, term); entries <= index are dropped. */
void cairn_memlog_start_after(cairn_memlog_t *self, uint64_t index, uint64_t term);

/* The entry at index, or NULL when the log does not hold it. Valid until the log changes. */
const cairn_memlog_entry_t *cairn_memlog_at(const cairn_memlog_t *self, uint64_t index);
/* The i-th entry held (0 = the first), or NULL. The entries held are contiguous in memory:
 * nth(i + k) == nth(i) + k, so a run of them can be handed out as an array. */
const cairn_memlog_entry_t *cairn_memlog_nth(const cairn_memlog_t *self, size_t i);
/* The last index: of the last entry, or the snapshot index when the log is empty. */
uint64_t cairn_memlog_last(const cairn_memlog_t *self);
/* The first index held (snap_index + 1 when the log is contiguous with its start). */
uint64_t cairn_memlog_first(const cairn_memlog_t *self);
size_t cairn_memlog_count(const cairn_memlog_t *self);
uint64_t cairn_memlog_bytes(const cairn_memlog_t *self);
uint64_t cairn_memlog_snap_index(const cairn_memlog_t *self);
uint64_t cairn_memlog_snap_term(const cairn_memlog_t *self);
/* Sets the point the log starts after without dropping anything (its term became known). */
void cairn_memlog_set_snap(cairn_memlog_t *self, uint64_t index, uint64_t term);

#endif
