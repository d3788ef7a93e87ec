/* mvcc.h - etcd's revisioned key-value store (MVCC) on LevelDB.
 *
 * The state machine of stored. Every change is a revision: a write transaction gets one
 * main revision and each change inside it a sub revision 0, 1, 2...; history is kept until
 * compaction; deletes are tombstones. The LevelDB layout is described byte by byte at the top
 * of mvcc.c.
 *
 * Consistency rule: the applied raft index is written in the SAME LevelDB write as the data
 * it covers (one write per batch), so after a crash the store is exactly "every entry up to
 * applied index" and stored replays the WAL from there (etcd bug #13766 is the lesson).
 *
 * Views. Inside a batch, reads can see either the committed state (what the last
 * batch_commit wrote: that is what clients reading outside the apply loop must see) or the
 * pending state (committed + every change made in the open batch, so entries of one batch
 * see each other's writes and ops inside a Txn see earlier ops).
 *
 * Not thread-safe: one thread owns a cairn_mvcc_t.
 */
#ifndef CAIRN_MVCC_H
#define CAIRN_MVCC_H
#include <stddef.h>
#include <stdint.h>

typedef struct cairn_mvcc_t cairn_mvcc_t;

/* ---- lifecycle ---------------------------------------------------------------------- */

/* Opens (creating if missing) the store in directory dir. On failure returns NULL, *err is a
 * CAIRN_E* code and errbuf (if given) a readable reason. A compaction interrupted by a crash
 * is finished before this returns. */
cairn_mvcc_t *cairn_mvcc_open(const char *dir, int *err, char *errbuf, size_t errlen);
/* Closes the store; an open batch is discarded (nothing of it reaches disk). Idempotent;
 * sets *self_p to NULL. */
void cairn_mvcc_destroy(cairn_mvcc_t **self_p);

/* Committed state (what is on disk after the last batch_commit). */
uint64_t cairn_mvcc_applied_index(const cairn_mvcc_t *m);
uint64_t cairn_mvcc_applied_term(const cairn_mvcc_t *m);
int64_t cairn_mvcc_revision(const cairn_mvcc_t *m);          /* 1 on a fresh store */
/* The compact revision: reads below it fail with ErrCompacted. -1 if never compacted
 * (etcd reports -1 too, e.g. in HashKV's compact_revision). */
int64_t cairn_mvcc_compact_revision(const cairn_mvcc_t *m);
int64_t cairn_mvcc_db_size(cairn_mvcc_t *m);                  /* approximate bytes on disk */

/* ---- batches ------------------------------------------------------------------------ */

/* A batch groups several committed raft entries into ONE LevelDB write, which also carries
 * the applied index/term and the revision. Returns CAIRN_ESTATE if a batch is already open. */
int cairn_mvcc_batch_begin(cairn_mvcc_t *m);
/* Writes the batch (one leveldb_write, sync=0: the WAL is the durable copy). If the batch
 * scheduled a compaction, the history is then removed in chunks before this returns. */
int cairn_mvcc_batch_commit(cairn_mvcc_t *m);
/* Makes every committed batch durable (one synced LevelDB write). Outside a batch only.
 * stored calls it before releasing WAL segments whose entries the state machine covers. */
int cairn_mvcc_sync(cairn_mvcc_t *m);
/* Discards the open batch (after a storage error the batch must be abandoned). */
void cairn_mvcc_batch_abort(cairn_mvcc_t *m);
int cairn_mvcc_in_batch(const cairn_mvcc_t *m);
/* Records (index, term) as applied, inside the open batch. */
int cairn_mvcc_set_applied(cairn_mvcc_t *m, uint64_t index, uint64_t term);
/* The applied index including the open batch. */
uint64_t cairn_mvcc_pending_applied_index(const cairn_mvcc_t *m);

/* ---- membership history (format: 'C' records at the top of mvcc.c) ------------------ */

/* Records the membership blob in effect after the configuration entry at index, inside the
 * open batch (so it is atomic with the applied index). CAIRN_ESTATE outside a batch. */
int cairn_mvcc_conf_put(cairn_mvcc_t *m, uint64_t index, const void *blob, size_t len);
/* The last committed membership record at an index <= upto: 1 and a malloc'd copy in *blob,
 * *len (and its index in *at, may be NULL); 0 when there is none; <0 on error. */
int cairn_mvcc_conf_get(cairn_mvcc_t *m, uint64_t upto, uint8_t **blob, size_t *len, uint64_t *at);

/* ---- reads -------------------------------------------------------------------------- */

typedef enum { CAIRN_MVCC_COMMITTED = 0, CAIRN_MVCC_PENDING = 1 } cairn_mvcc_view_t;

typedef struct {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    int64_t create_revision, mod_revision, version, lease;
} cairn_kv_t;

/* Current revision / compact revision of a view (PENDING includes the open write txn:
 * once it has a change, its main revision). */
int64_t cairn_mvcc_view_revision(const cairn_mvcc_t *m, int view);
int64_t cairn_mvcc_view_compact_revision(const cairn_mvcc_t *m, int view);

/* Point read of key at revision rev (0 = current of the view). Returns 1 and fills *kv if the
 * key exists there, 0 if not, or a CAIRN_E* (CAIRN_EFUTURE_REV, CAIRN_ECOMPACTED, storage).
 * kv's pointers stay valid until free(*owned) (set to NULL when nothing needs freeing) and,
 * for data of the open batch, until the batch ends. At the current revision this is one
 * LevelDB Get. */
int cairn_mvcc_get(cairn_mvcc_t *m, int view, const void *key, size_t key_len, int64_t rev, cairn_kv_t *kv,
                   void **owned);

/* Called for each key of a range, in ascending key order. kv is valid only during the call.
 * Return 0 to go on, anything else to stop (cairn_mvcc_range then returns that value). */
typedef int (*cairn_mvcc_kv_fn)(void *arg, const cairn_kv_t *kv);

typedef struct {
    const void *key;
    size_t key_len;
    /* end == NULL: only key. end != NULL and end_len == 0: every key >= key (etcd's
     * mkGteRange turns range_end "\0" into this). Otherwise [key, end). */
    const void *end;
    size_t end_len;
    int64_t rev;        /* 0 = current of the view */
    int64_t limit;      /* hand at most this many keys to fn; <= 0: all */
    int count_only;     /* hand none, only count */
} cairn_mvcc_range_t;

/* Reads a range at a revision; *count (if not NULL) gets the number of keys in the range at
 * that revision (all of them, whatever the limit). Returns 0, fn's non-zero stop value, or a
 * CAIRN_E*. */
int cairn_mvcc_range(cairn_mvcc_t *m, int view, const cairn_mvcc_range_t *r, cairn_mvcc_kv_fn fn, void *arg,
                     int64_t *count);

/* ---- writes (inside a batch) -------------------------------------------------------- */

/* A write transaction: every change made between txn_begin and txn_end shares main revision
 * view_revision(PENDING)+1, with sub revisions 0,1,2...; txn_end returns the store revision
 * after the txn (unchanged if the txn changed nothing: no-op deletes and read-only txns do
 * not bump it). */
int cairn_mvcc_txn_begin(cairn_mvcc_t *m);
int64_t cairn_mvcc_txn_end(cairn_mvcc_t *m);
int cairn_mvcc_txn_changes(const cairn_mvcc_t *m);
/* Puts key=value with lease (0: none). prev is the key's current KeyValue in the PENDING view
 * (NULL if absent): callers read it anyway (prev_kv, ignore_*), so the put costs no second
 * lookup. The lease's existence is the caller's check. */
int cairn_mvcc_put(cairn_mvcc_t *m, const void *key, size_t key_len, const void *value, size_t value_len,
                   int64_t lease, const cairn_kv_t *prev);
/* Deletes a live key; prev is its current KeyValue (must not be NULL). Writes a tombstone. */
int cairn_mvcc_delete(cairn_mvcc_t *m, const cairn_kv_t *prev);

/* Optional observer of every change, called inside cairn_mvcc_put/delete (i.e. before the
 * batch is committed: buffer and publish after commit). type 0 = PUT, 1 = DELETE. For a
 * DELETE, kv has only key and mod_revision (like etcd's DELETE event). prev_kv is NULL when
 * the key did not exist. sub is the sub revision. Pointers valid only during the call. */
typedef void (*cairn_mvcc_event_fn)(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev_kv,
                                    int64_t sub);
void cairn_mvcc_set_event_fn(cairn_mvcc_t *m, cairn_mvcc_event_fn fn, void *arg);
/* The same, returning non-zero to stop an iteration. */
typedef int (*cairn_mvcc_event_fn_rc)(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev_kv,
                                      int64_t sub);
int cairn_mvcc_has_event_fn(const cairn_mvcc_t *m);

/* Every change with start_rev <= main revision <= end_rev (end_rev <= 0: up to current), in
 * revision order, on the committed state - watch catch-up. fn gets the event as the
 * observer above does (a DELETE's kv is {key, mod_revision}); prev_kv is the key's previous
 * version (NULL if it did not exist before). fn returns non-zero to stop. CAIRN_ECOMPACTED if
 * start_rev < the compact revision (etcd's watch rule). */
int cairn_mvcc_changes(cairn_mvcc_t *m, int64_t start_rev, int64_t end_rev, cairn_mvcc_event_fn_rc fn, void *arg);

/* ---- compaction --------------------------------------------------------------------- */

/* Schedules compaction at rev inside the open batch: CAIRN_ECOMPACTED if rev <= the compact
 * revision, CAIRN_EFUTURE_REV if rev > the current revision. Once the batch is committed,
 * reads below rev fail and the history below rev is removed (batch_commit does it). For
 * every key, the latest version at <= rev is kept unless it is a tombstone. */
int cairn_mvcc_compact(cairn_mvcc_t *m, int64_t rev);
/* Does at most max_deletes deletions of a scheduled compaction, in one LevelDB write.
 * Returns 1 if more remains, 0 when done, or a CAIRN_E*. Outside batches only. */
int cairn_mvcc_compact_step(cairn_mvcc_t *m, int max_deletes);
int cairn_mvcc_compact_pending(const cairn_mvcc_t *m);
/* Deletions per LevelDB write while compacting (default 10000). */
void cairn_mvcc_set_compact_chunk(cairn_mvcc_t *m, int max_deletes);
/* on = 1: batch_commit leaves the removal to the caller, who runs compact_step between other
 * work (reads at >= the compact revision are right either way). Default 0: batch_commit
 * finishes it before returning. */
void cairn_mvcc_set_compact_async(cairn_mvcc_t *m, int on);

/* CRC32C over the history (every (key, revision, value) record) up to rev (0 = current),
 * committed state; for Maintenance/HashKV. CAIRN_ECOMPACTED if 0 < rev <= compact revision,
 * CAIRN_EFUTURE_REV if rev > current (etcd's HashByRev rules). */
int cairn_mvcc_hash_kv(cairn_mvcc_t *m, int64_t rev, uint32_t *hash, int64_t *compact_rev);
/* The same in two steps, so that the walk runs on another thread while the store goes on:
 * begin (on the store's thread) checks rev as above (*compact_rev set either way), finishes a
 * pending removal and pins a LevelDB snapshot; run (any thread, once) hashes through it; end
 * releases it (before the store is closed). current_revision: the store's revision at begin. */
typedef struct cairn_mvcc_hashkv cairn_mvcc_hashkv_t;
int cairn_mvcc_hashkv_begin(cairn_mvcc_t *m, int64_t rev, int64_t *compact_rev, cairn_mvcc_hashkv_t **job);
int cairn_mvcc_hashkv_run(cairn_mvcc_hashkv_t *job, uint32_t *hash);
int64_t cairn_mvcc_hashkv_current_revision(const cairn_mvcc_hashkv_t *job);
void cairn_mvcc_hashkv_end(cairn_mvcc_hashkv_t **job);

/* ---- leases (the durable lease table; liveness is raftd's) --------------------------- */

/* Inside a batch. CAIRN_EEXISTS if the lease exists. */
int cairn_mvcc_lease_grant(cairn_mvcc_t *m, int64_t id, int64_t ttl);
/* Inside a batch: deletes every key attached to the lease in ONE write txn (one revision if
 * any key was deleted) and the lease. CAIRN_ENOTFOUND if there is no such lease. *deleted
 * (if not NULL) gets the number of keys deleted. */
int cairn_mvcc_lease_revoke(cairn_mvcc_t *m, int64_t id, int64_t *deleted);
/* 1 if the lease exists in the view, 0 if not, or a CAIRN_E*. *ttl (if not NULL) gets its
 * granted TTL. */
int cairn_mvcc_lease_get(cairn_mvcc_t *m, int view, int64_t id, int64_t *ttl);
#define cairn_mvcc_lease_exists(m, view, id) cairn_mvcc_lease_get((m), (view), (id), NULL)
/* Every lease (id, granted ttl), ascending by id as unsigned; committed state. fn returns
 * non-zero to stop. */
int cairn_mvcc_lease_foreach(cairn_mvcc_t *m, int (*fn)(void *arg, int64_t id, int64_t ttl), void *arg);
/* The same from id `from` (as unsigned) on: a page of a long table without reading it all. */
int cairn_mvcc_lease_scan(cairn_mvcc_t *m, uint64_t from, int (*fn)(void *arg, int64_t id, int64_t ttl), void *arg);
/* The keys attached to a lease (view), in key order. */
int cairn_mvcc_lease_keys(cairn_mvcc_t *m, int view, int64_t id,
                          int (*fn)(void *arg, const uint8_t *key, size_t key_len), void *arg);

/* ---- alarms (etcd's alarm table; format: 'A' records at the top of mvcc.c) ------------ */

/* Inside a batch (not inside a write txn): activates (on = 1) or deactivates (on = 0) alarm
 * type (etcdserverpb.AlarmType) of member. Returns 1 if the table changed, 0 if it already was
 * so, or a CAIRN_E*. */
int cairn_mvcc_alarm_set(cairn_mvcc_t *m, uint64_t member, uint64_t type, int on);
/* Every active alarm of the view, ascending by (member, type). fn returns non-zero to stop. */
int cairn_mvcc_alarm_foreach(cairn_mvcc_t *m, int view, int (*fn)(void *arg, uint64_t member, uint64_t type),
                             void *arg);
/* The alarm types active in the view for any member: bit t set = type t (1 << 1: NOSPACE).
 * Costs no read unless the open batch changed the table. */
unsigned cairn_mvcc_alarms(cairn_mvcc_t *m, int view);

/* ---- space (Maintenance/Defragment, Status) ------------------------------------------ */

/* LevelDB's bytes for the whole keyspace (leveldb_approximate_sizes): the tables that hold
 * records, without logs and files LevelDB no longer needs - Status's dbSizeInUse. */
int64_t cairn_mvcc_db_size_in_use(cairn_mvcc_t *m);
/* Compacts the whole keyspace (leveldb_compact_range): rewrites every table without the
 * records that deletes and compactions superseded, so the files shrink. Blocks the caller
 * until done (seconds on a large store), but reads and writes of other threads go on
 * meanwhile (LevelDB is thread-safe; the work runs on its background thread). The one
 * function of this file that may run on another thread than the store's owner; the store
 * must not be closed until it returns. */
int cairn_mvcc_defrag(cairn_mvcc_t *m);
/* CRC32C over every record of the committed state but "Mcompact" (its cursor is one member's
 * progress), and the revision it covers: Maintenance/Hash (etcd hashes its whole backend). */
int cairn_mvcc_hash_all(cairn_mvcc_t *m, uint32_t *hash, int64_t *rev);
/* The same in the steps of cairn_mvcc_hashkv_begin/run/end (a job whose run hashes every
 * record through the pinned snapshot; current_revision is the revision it covers). */
int cairn_mvcc_hash_all_begin(cairn_mvcc_t *m, cairn_mvcc_hashkv_t **job);

/* ---- arena (shared with apply.c) ---------------------------------------------------- */

/* A bump allocator: many small allocations, freed all at once. Requests and batches use one
 * so that no key costs a malloc of its own. */
typedef struct cairn_arena_chunk cairn_arena_chunk_t;
typedef struct {
    cairn_arena_chunk_t *head;
    size_t bytes;   /* handed out since the last reset */
} cairn_arena_t;
void *cairn_arena_alloc(cairn_arena_t *a, size_t n);   /* 16-byte aligned; NULL when out of memory */
void *cairn_arena_dup(cairn_arena_t *a, const void *p, size_t n);
void cairn_arena_reset(cairn_arena_t *a);               /* frees all but one chunk for reuse */
void cairn_arena_free(cairn_arena_t *a);
/* A per-store arena for request processing (apply.c uses it for unpacked requests and
 * responses being built, and resets it after each request). */
cairn_arena_t *cairn_mvcc_arena(cairn_mvcc_t *m);

/* ---- whole-store copies (snapshots; the file format is snapshot.c's) ------------------- */

/* The point in time a copy holds: its "Mapplied" and "Mcompact" records. */
typedef struct {
    uint64_t index, term;
    int64_t revision, compact_rev;
} cairn_mvcc_point_t;

/* A raw LevelDB record (every table: M, k, h, r, L, l, C ...). Return 0 to go on. */
typedef int (*cairn_mvcc_raw_fn)(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value,
                                 size_t value_len);

/* Hands out a consistent point-in-time copy of the committed state: one LevelDB snapshot is
 * taken, on_point gets its applied index/term/revision, then fn gets every record in key
 * order, all read through that snapshot (so writes made meanwhile are not in it). Returns 0,
 * a non-zero return of a callback, or a CAIRN_E*. */
int cairn_mvcc_export(cairn_mvcc_t *m, int (*on_point)(void *arg, const cairn_mvcc_point_t *pt), cairn_mvcc_raw_fn fn,
                      void *arg);

/* Builds a NEW store directory from raw records (what cairn_mvcc_export handed out, in any
 * order). The directory must not hold a database yet. Records go to LevelDB in write batches
 * of a few MiB; finish writes the last one with sync on (so every earlier one is durable
 * too: LevelDB's log is written in order), then checks that the result is a cairn mvcc store
 * (format and applied records) and reports its point. A directory whose build did not
 * finish must be removed by the caller: it is never a valid store to open. */
typedef struct cairn_mvcc_builder_t cairn_mvcc_builder_t;
cairn_mvcc_builder_t *cairn_mvcc_builder_new(const char *dir, int *err, char *errbuf, size_t errlen);
int cairn_mvcc_builder_put(cairn_mvcc_builder_t *b, const void *key, size_t key_len, const void *value,
                           size_t value_len);
/* Makes the current-state records ('k', 'l') from the history records ('h') put so far: for
 * a builder fed history only (an etcd backend file, mvcc_etcd.c). Call once, before finish. */
int cairn_mvcc_builder_derive_current(cairn_mvcc_builder_t *b);
int cairn_mvcc_builder_finish(cairn_mvcc_builder_t *b, cairn_mvcc_point_t *pt, char *errbuf, size_t errlen);
void cairn_mvcc_builder_destroy(cairn_mvcc_builder_t **self_p);

/* The last LevelDB error of any store in this process ("" if none), e.g. "leveldb write batch:
 * IO error: <dir>/000012.log: No space left on device": which file and why, for a log line. */
void cairn_mvcc_last_error(char *buf, size_t len);

#endif
