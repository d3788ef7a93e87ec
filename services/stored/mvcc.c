/* mvcc.c - etcd's revisioned key-value store on LevelDB.
 *
 * This file owns the store's format (below), open/close, batches, reads and writes at
 * revisions, watch catch-up, leases and the membership history. The arena and the batch
 * overlay are in mvcc_overlay.c, compaction and HashKV in mvcc_compact.c, whole-store copies
 * in mvcc_export.c; mvcc_internal.h is what they share.
 *
 * ==== ON-DISK FORMAT ======================================================================
 *
 * One LevelDB database (bytewise comparator) in the mvcc directory. Every integer is
 * big-endian, so LevelDB's byte order is numeric order; revisions, versions, leases and TTLs
 * are int64 values stored as their 8 two's-complement bytes. The first byte of a LevelDB key
 * names its table.
 *
 * 'M' meta records
 *   "Mformat"  -> "cairn-mvcc/1" (12 bytes). Written when the store is created. Open refuses
 *                 a database that lacks it but is not empty, or that has another value.
 *   "Mapplied" -> applied_index u64 | applied_term u64 | revision i64               (24 bytes)
 *                 revision = the store's current main revision (1 on a fresh store).
 *   "Mcompact" -> compact_rev i64 | finished_rev i64 | cursor_main u64 | cursor_sub u64 (32)
 *                 compact_rev: reads below it fail (ErrCompacted); -1 = never compacted.
 *                 finished_rev: the history removal for compactions up to here is complete.
 *                 cursor: the revision-index entry where an unfinished removal continues.
 *
 * 'k' current state: one record per LIVE key, so reads at the current revision never touch
 *     the history (a point read is one Get)
 *   'k' key    -> create_rev i64 | mod_rev i64 | version i64 | lease i64 | value      (32 + n)
 *
 * 'h' history: one record per change (put or delete) of every key, until compaction
 *   'h' esc(key) 0x00 0x01 | ~main u64 | ~sub u64  ->  flags u8 [| create_rev i64 | version
 *                                                       i64 | lease i64 | value]
 *     esc() writes byte 0x00 as 0x00 0xFF and every other byte as itself; 0x00 0x01 ends the
 *     key. So the encoded keys sort exactly like (key, then revision): a key that is a prefix
 *     of another ends with 0x00 0x01, below both 0x00 0xFF and any byte >= 0x01 that the
 *     longer key continues with. "esc(key) 0x00 0x02" is above every record of key and below
 *     the next key: seeking there skips a key's whole history.
 *     ~x is UINT64_MAX - x: a key's NEWEST record comes first, so "key at revision R" is one
 *     Seek to (key, ~R, ~UINT64_MAX): the first record there, if it is this key's, is the
 *     latest at <= R. mod_revision is the record's main revision.
 *     flags bit 0 = tombstone (a delete); a tombstone's value is the flags byte alone.
 *
 * 'r' revision index: which key each revision changed (compaction and watch catch-up,
 *     cairn_mvcc_changes, walk it in revision order)
 *   'r' main u64 | sub u64 -> flags u8 | key        (flags as in 'h')
 *
 * 'L' lease table (durable; deadlines are raftd's business)
 *   'L' id u64 -> granted_ttl i64 | remaining_ttl i64 (16; remaining 0 = not checkpointed)
 * 'l' lease attachments: which keys carry a lease (revoke deletes them)
 *   'l' id u64 | key -> (empty)
 *
 * 'C' cluster membership history (DESIGN.md "raftd": membership is replicated state)
 *   'C' index u64 -> a membership blob: a packed etcdserverpb.MemberListResponse whose
 *                    header.cluster_id is the cluster ID and whose members carry ID, name,
 *                    peerURLs and isLearner. It is the membership in effect after the
 *                    configuration entry at index ('C' 0: the initial membership). Records are
 *                    never removed (they are small and few): the membership at any log index,
 *                    e.g. where raftd's log starts after a restart, is the last record <= it.
 *
 * ==== THE RULE THAT KEEPS IT CONSISTENT ===================================================
 *
 * All changes of a batch of raft entries - data of every table, and "Mapplied" with the
 * index of the last entry of the batch - go to LevelDB in ONE WriteBatch. LevelDB applies a
 * WriteBatch atomically, also across a crash (its log record is checksummed as a whole), so
 * the database always holds exactly the effects of entries 1..applied_index: never half a
 * batch, never data without its index or an index without its data (etcd #13766 was an index
 * persisted apart from the data). Writes use sync=0: the WAL is the durable copy, and on
 * restart stored replays the WAL from applied_index + 1.
 *
 * That needs what LevelDB recovers after a crash to be a PREFIX of what was written. After a
 * process crash it is (the kernel keeps the page cache). After a power loss it need not be:
 * the unsynced pages of LevelDB's log reach the disk in any order, and LevelDB, left to
 * itself, skips a damaged stretch of its log ("dropping N bytes; checksum mismatch") and
 * recovers the batches after it - a later "Mapplied" without the batches before it, which
 * the WAL replay would then never restore (tests/crashfs found exactly that: 79 of 126
 * acknowledged puts gone, silently). So:
 *   - before LevelDB reads its logs, mvcc_ldblog.c checks them itself and cuts the first
 *     damaged one at its last whole record (moving newer ones aside): that also finds what
 *     LevelDB's reader skips without a word (a lost page read as zeroes at a record
 *     boundary, which hid a hole);
 *   - the store opens with paranoid_checks: a damaged log fails the open instead;
 *   - such a failure moves LevelDB's logs (NNNNNN.log: only the writes since its last
 *     memtable flush, never synced by us) aside into <dir>.torn-<time>/ and opens again: the
 *     store is then exactly what its synced table files hold, a prefix, and the WAL replay
 *     brings it forward;
 *   - cairn_mvcc_sync (stored's checkpoint, before it releases WAL segments) flushes the
 *     memtable into synced table files, so that prefix is never older than the last
 *     checkpoint, and the WAL always reaches back to it;
 *   - a new store flushes its format record at once.
 *
 * Before the write, the batch lives in an in-memory sorted overlay (a skip list over the
 * same LevelDB keys); reads of the pending view merge it over LevelDB, so entries inside a
 * batch and ops inside a Txn see earlier writes.
 *
 * Compaction at C is a logical step plus a physical one. The logical step (compact_rev = C in
 * "Mcompact") rides in the batch like any change: from then on reads below C fail. The
 * physical step runs after the batch is written, in chunks of at most compact_chunk
 * deletions per LevelDB write, walking the revision index from the cursor up to C: each
 * record deletes its key's previous record (now superseded), and a tombstone deletes itself.
 * What remains at <= C is, for each key, its latest record at <= C unless that is a
 * tombstone - etcd's rule. Each chunk's write also moves the cursor, so a crash mid-way
 * resumes (deleting twice is harmless); open() finishes it.
 *
 * 'A' alarms (etcd's "alarm" bucket; replicated state: ACTIVATE/DEACTIVATE are log entries)
 *   'A' member_id u64 | alarm_type u64 -> (empty)
 *     alarm_type is etcdserverpb.AlarmType (1 NOSPACE, 2 CORRUPT). A record exists while the
 *     member's alarm is active. While any NOSPACE record exists, apply refuses Put, Txn with a
 *     put and LeaseGrant (etcd's applierV3Capped); snapshots carry the table like any other.
 *
 * Invariants: 'k' key exists iff the key's newest 'h' record is not a tombstone, and then
 * they hold the same create/mod/version/lease/value. 'h' and 'r' records come in pairs.
 * 'l' id key exists iff 'k' key exists with lease id.
 */
#include "mvcc.h"
#include "mvcc_ldblog.h"

#include <dirent.h>
#include <errno.h>
#include <leveldb/c.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "mvcc_internal.h"

/* Parses the group of a history key: *glen = length of 'h' esc(key) 0x00 0x01, and unescapes
 * the user key into *out (grown as needed). Returns 0 or CAIRN_ECORRUPT/CAIRN_ENOMEM. */
static int hist_parse(const uint8_t *k, size_t n, size_t *glen, uint8_t **out, size_t *outcap, size_t *ulen)
{
    if (n < 3 || k[0] != T_HIST)
        return CAIRN_ECORRUPT;
    if (*outcap < n) {
        uint8_t *np = realloc(*out, n);
        if (!np)
            return CAIRN_ENOMEM;
        *out = np;
        *outcap = n;
    }
    size_t u = 0;
    for (size_t i = 1; i + 1 < n; i++) {
        if (k[i] != 0) {
            (*out)[u++] = k[i];
        } else if (k[i + 1] == 0xFF) {
            (*out)[u++] = 0;
            i++;
        } else if (k[i + 1] == 0x01) {
            *glen = i + 2;
            *ulen = u;
            return 0;
        } else {
            return CAIRN_ECORRUPT;
        }
    }
    return CAIRN_ECORRUPT;
}


cairn_arena_t *cairn_mvcc_arena(cairn_mvcc_t *m) { return &m->req_arena; }

/* The text of the last LevelDB error (it names the file and the errno's text, e.g. "IO error:
 * <dir>/000012.log: No space left on device"), for stored's one log line about a full disk.
 * A mutex: the defragment and snapshot threads read through LevelDB too. */
static pthread_mutex_t g_last_err_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_last_err[512];

void mvcc_ldb_err(const char *what, char *err)
{
    cairn_error("leveldb error", "op=%s err=\"%s\"", what, err ? err : "?");
    pthread_mutex_lock(&g_last_err_mu);
    snprintf(g_last_err, sizeof g_last_err, "leveldb %s: %s", what, err ? err : "?");
    pthread_mutex_unlock(&g_last_err_mu);
    leveldb_free(err);
}

void cairn_mvcc_last_error(char *buf, size_t len)
{
    if (!buf || !len)
        return;
    pthread_mutex_lock(&g_last_err_mu);
    snprintf(buf, len, "%s", g_last_err);
    pthread_mutex_unlock(&g_last_err_mu);
}

static int use_ov(const cairn_mvcc_t *m, int view)
{
    return view == CAIRN_MVCC_PENDING && m->in_batch && m->ov.count > 0;
}

int64_t cairn_mvcc_view_revision(const cairn_mvcc_t *m, int view)
{
    if (view == CAIRN_MVCC_PENDING && m->in_batch)
        return m->in_txn && m->txn_sub > 0 ? m->txn_main : m->p.rev;
    return m->c.rev;
}

int64_t cairn_mvcc_view_compact_revision(const cairn_mvcc_t *m, int view)
{
    return view == CAIRN_MVCC_PENDING && m->in_batch ? m->p.compact_rev : m->c.compact_rev;
}

uint64_t cairn_mvcc_applied_index(const cairn_mvcc_t *m) { return m->c.index; }
uint64_t cairn_mvcc_applied_term(const cairn_mvcc_t *m) { return m->c.term; }
int64_t cairn_mvcc_revision(const cairn_mvcc_t *m) { return m->c.rev; }
int64_t cairn_mvcc_compact_revision(const cairn_mvcc_t *m) { return m->c.compact_rev; }
int cairn_mvcc_in_batch(const cairn_mvcc_t *m) { return m->in_batch; }
int cairn_mvcc_txn_changes(const cairn_mvcc_t *m) { return m->in_txn ? (int)m->txn_sub : 0; }
int cairn_mvcc_compact_pending(const cairn_mvcc_t *m) { return m->c.finished_rev < m->c.compact_rev; }
int cairn_mvcc_has_event_fn(const cairn_mvcc_t *m) { return m->ev_fn != NULL; }

uint64_t cairn_mvcc_pending_applied_index(const cairn_mvcc_t *m)
{
    return m->in_batch ? m->p.index : m->c.index;
}

void cairn_mvcc_set_event_fn(cairn_mvcc_t *m, cairn_mvcc_event_fn fn, void *arg)
{
    m->ev_fn = fn;
    m->ev_arg = arg;
}

void cairn_mvcc_set_compact_async(cairn_mvcc_t *m, int on)
{
    m->compact_async = on;
}

void cairn_mvcc_set_compact_chunk(cairn_mvcc_t *m, int max_deletes)
{
    m->compact_chunk = max_deletes > 0 ? max_deletes : 10000;
}

/* ---- merged iterator: LevelDB (committed) with the overlay on top ---------------------- */

typedef struct {
    leveldb_iterator_t *it;
    const overlay_t *ov;          /* NULL: LevelDB only */
    const ov_node_t *on;          /* overlay cursor */
    const uint8_t *k, *v;
    size_t kn, vn;
    int valid;
    int src;                      /* 1 LevelDB, 2 overlay, 3 both (overlay wins) */
} miter_t;

static void mi_settle(miter_t *mi)
{
    for (;;) {
        int lv = leveldb_iter_valid(mi->it);
        const ov_node_t *on = mi->on;
        size_t lkn = 0;
        const uint8_t *lk = lv ? (const uint8_t *)leveldb_iter_key(mi->it, &lkn) : NULL;
        if (!lv && !on) {
            mi->valid = 0;
            return;
        }
        int c = !on ? -1 : !lv ? 1 : keycmp(lk, lkn, on->key, on->klen);
        if (c < 0) {
            size_t vn;
            mi->k = lk;
            mi->kn = lkn;
            mi->v = (const uint8_t *)leveldb_iter_value(mi->it, &vn);
            mi->vn = vn;
            mi->src = 1;
            mi->valid = 1;
            return;
        }
        if (on->del) {   /* the batch deleted this key: hide it */
            mi->on = on->next[0];
            if (c == 0)
                leveldb_iter_next(mi->it);
            continue;
        }
        mi->k = on->key;
        mi->kn = on->klen;
        mi->v = on->val;
        mi->vn = on->vlen;
        mi->src = c == 0 ? 3 : 2;
        mi->valid = 1;
        return;
    }
}

static void mi_open(miter_t *mi, cairn_mvcc_t *m, int view, const leveldb_readoptions_t *ro)
{
    memset(mi, 0, sizeof *mi);
    mi->it = leveldb_create_iterator(m->db, ro);
    mi->ov = use_ov(m, view) ? &m->ov : NULL;
}

static void mi_seek(miter_t *mi, const uint8_t *k, size_t kn)
{
    leveldb_iter_seek(mi->it, (const char *)k, kn);
    mi->on = mi->ov ? ov_find_ge(mi->ov, k, kn, NULL) : NULL;
    mi_settle(mi);
}

static void mi_next(miter_t *mi)
{
    if (mi->src & 1)
        leveldb_iter_next(mi->it);
    if (mi->src & 2)
        mi->on = mi->on->next[0];
    mi_settle(mi);
}

/* Closes the iterator; returns CAIRN_EIO if LevelDB reported an error while iterating. */
static int mi_close(miter_t *mi)
{
    char *err = NULL;
    leveldb_iter_get_error(mi->it, &err);
    leveldb_iter_destroy(mi->it);
    mi->it = NULL;
    if (err) {
        mvcc_ldb_err("iterate", err);
        return CAIRN_EIO;
    }
    return 0;
}

/* ---- point reads ---------------------------------------------------------------------- */

/* Value of a LevelDB key in a view: 1 found (*v, *vn; *owned to free), 0 absent, <0 error. */
static int raw_get(cairn_mvcc_t *m, int view, const uint8_t *k, size_t kn, const uint8_t **v, size_t *vn,
                   void **owned)
{
    *owned = NULL;
    if (use_ov(m, view)) {
        const ov_node_t *n = ov_get(&m->ov, k, kn);
        if (n) {
            if (n->del)
                return 0;
            *v = n->val;
            *vn = n->vlen;
            return 1;
        }
    }
    char *err = NULL;
    size_t len = 0;
    char *val = leveldb_get(m->db, m->ro, (const char *)k, kn, &len, &err);
    if (err) {
        mvcc_ldb_err("get", err);
        return CAIRN_EIO;
    }
    if (!val)
        return 0;
    *owned = val;
    *v = (const uint8_t *)val;
    *vn = len;
    return 1;
}

static int dec_cur(const uint8_t *v, size_t vn, const void *key, size_t klen, cairn_kv_t *kv)
{
    if (vn < CUR_HDR)
        return CAIRN_ECORRUPT;
    kv->key = key;
    kv->key_len = klen;
    kv->create_revision = (int64_t)be64_get(v);
    kv->mod_revision = (int64_t)be64_get(v + 8);
    kv->version = (int64_t)be64_get(v + 16);
    kv->lease = (int64_t)be64_get(v + 24);
    kv->value = v + CUR_HDR;
    kv->value_len = vn - CUR_HDR;
    return 0;
}

/* A history record's value into kv (not for tombstones). */
static int dec_hist(const uint8_t *v, size_t vn, int64_t main, cairn_kv_t *kv)
{
    if (vn < HIST_HDR)
        return CAIRN_ECORRUPT;
    kv->create_revision = (int64_t)be64_get(v + 1);
    kv->version = (int64_t)be64_get(v + 9);
    kv->lease = (int64_t)be64_get(v + 17);
    kv->mod_revision = main;
    kv->value = v + HIST_HDR;
    kv->value_len = vn - HIST_HDR;
    return 0;
}

static int get_current(cairn_mvcc_t *m, int view, const void *key, size_t klen, cairn_kv_t *kv, void **owned)
{
    kbuf_t kb;
    kb_init(&kb);
    kb_u8(&kb, T_CUR);
    kb_add(&kb, key, klen);
    if (kb.oom)
        return CAIRN_ENOMEM;
    const uint8_t *v;
    size_t vn;
    int rc = raw_get(m, view, kb.p, kb.n, &v, &vn, owned);
    kb_free(&kb);
    if (rc == 1 && dec_cur(v, vn, key, klen, kv) != 0) {
        free(*owned);
        *owned = NULL;
        return CAIRN_ECORRUPT;
    }
    return rc;
}

static int get_history(cairn_mvcc_t *m, int view, const void *key, size_t klen, int64_t rev, cairn_kv_t *kv,
                       void **owned)
{
    kbuf_t kb;
    kb_init(&kb);
    kb_hist_group(&kb, key, klen);
    size_t glen = kb.n;
    kb_be64(&kb, ~(uint64_t)rev);
    kb_be64(&kb, 0);   /* ~UINT64_MAX: the first record of main revision rev */
    if (kb.oom)
        return CAIRN_ENOMEM;
    miter_t mi;
    mi_open(&mi, m, view, m->ro);
    mi_seek(&mi, kb.p, kb.n);
    int rc = 0;
    if (mi.valid && mi.kn == glen + 16 && memcmp(mi.k, kb.p, glen) == 0) {
        if (mi.vn < 1) {
            rc = CAIRN_ECORRUPT;
        } else if (!(mi.v[0] & HFLAG_TOMB)) {
            int64_t main = (int64_t)~be64_get(mi.k + glen);
            uint8_t *copy = malloc(mi.vn ? mi.vn : 1);
            if (!copy) {
                rc = CAIRN_ENOMEM;
            } else {
                memcpy(copy, mi.v, mi.vn);
                rc = dec_hist(copy, mi.vn, main, kv);
                if (rc == 0) {
                    kv->key = key;
                    kv->key_len = klen;
                    *owned = copy;
                    rc = 1;
                } else {
                    free(copy);
                }
            }
        }
    }
    int rc2 = mi_close(&mi);
    kb_free(&kb);
    if (rc2 && rc >= 0) {
        if (rc == 1) {
            free(*owned);
            *owned = NULL;
        }
        rc = rc2;
    }
    return rc;
}

/* Resolves rev against the view: CAIRN_EFUTURE_REV / CAIRN_ECOMPACTED (etcd's rangeKeys:
 * future first; rev <= 0 means current; rev == compact revision is fine). */
static int resolve_rev(const cairn_mvcc_t *m, int view, int64_t *rev, int64_t *cur)
{
    *cur = cairn_mvcc_view_revision(m, view);
    if (*rev > *cur)
        return CAIRN_EFUTURE_REV;
    if (*rev <= 0)
        *rev = *cur;
    if (*rev < cairn_mvcc_view_compact_revision(m, view))
        return CAIRN_ECOMPACTED;
    return 0;
}

int cairn_mvcc_get(cairn_mvcc_t *m, int view, const void *key, size_t key_len, int64_t rev, cairn_kv_t *kv,
                   void **owned)
{
    *owned = NULL;
    int64_t cur;
    int rc = resolve_rev(m, view, &rev, &cur);
    if (rc)
        return rc;
    if (rev == cur)
        return get_current(m, view, key, key_len, kv, owned);
    return get_history(m, view, key, key_len, rev, kv, owned);
}

/* ---- range reads ---------------------------------------------------------------------- */

typedef struct {
    int64_t n;
    int64_t limit;
    int count_only;
    int want_count;
    cairn_mvcc_kv_fn fn;
    void *arg;
} deliv_t;

/* Counts kv and hands it on while under the limit. Returns fn's stop value, or DELIVER_DONE
 * when the caller needs nothing more (limit reached and no count wanted). */
#define DELIVER_DONE INT_MIN
static int deliver(deliv_t *d, const cairn_kv_t *kv)
{
    d->n++;
    if (d->count_only)
        return 0;
    if (d->limit > 0 && d->n > d->limit)
        return d->want_count ? 0 : DELIVER_DONE;
    int rc = d->fn ? d->fn(d->arg, kv) : 0;
    if (rc)
        return rc;
    if (!d->want_count && d->limit > 0 && d->n >= d->limit)
        return DELIVER_DONE;
    return 0;
}

static int range_current(cairn_mvcc_t *m, int view, const cairn_mvcc_range_t *r, deliv_t *d)
{
    kbuf_t kb;
    kb_init(&kb);
    kb_u8(&kb, T_CUR);
    kb_add(&kb, r->key, r->key_len);
    if (kb.oom)
        return CAIRN_ENOMEM;
    miter_t mi;
    mi_open(&mi, m, view, m->ro);
    int rc = 0;
    for (mi_seek(&mi, kb.p, kb.n); mi.valid; mi_next(&mi)) {
        if (mi.kn < 1 || mi.k[0] != T_CUR)
            break;
        const uint8_t *uk = mi.k + 1;
        size_t un = mi.kn - 1;
        if (r->end_len > 0 && keycmp(uk, un, r->end, r->end_len) >= 0)
            break;
        cairn_kv_t kv;
        if ((rc = dec_cur(mi.v, mi.vn, uk, un, &kv)) != 0)
            break;
        if ((rc = deliver(d, &kv)) != 0)
            break;
    }
    int rc2 = mi_close(&mi);
    kb_free(&kb);
    if (rc == DELIVER_DONE)
        rc = 0;
    return rc2 && rc >= 0 ? rc2 : rc;
}

static int range_history(cairn_mvcc_t *m, int view, const cairn_mvcc_range_t *r, int64_t rev, deliv_t *d)
{
    kbuf_t kb;   /* the current group, then seek targets built on it */
    kb_init(&kb);
    kb_hist_group(&kb, r->key, r->key_len);
    if (kb.oom)
        return CAIRN_ENOMEM;
    miter_t mi;
    mi_open(&mi, m, view, m->ro);
    mi_seek(&mi, kb.p, kb.n);
    int rc = 0;
    while (mi.valid) {
        if (mi.k[0] != T_HIST)
            break;
        size_t glen, ulen;
        if ((rc = hist_parse(mi.k, mi.kn, &glen, &m->scratch, &m->scratch_cap, &ulen)) != 0)
            break;
        if (r->end_len > 0 && keycmp(m->scratch, ulen, r->end, r->end_len) >= 0)
            break;
        if (mi.kn != glen + 16) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        kb.n = 0;
        kb_add(&kb, mi.k, glen);
        if (kb.oom) {
            rc = CAIRN_ENOMEM;
            break;
        }
        int64_t main = (int64_t)~be64_get(mi.k + glen);
        if (main > rev) {
            /* Newer than asked: jump to this key's latest record at <= rev. */
            kb_be64(&kb, ~(uint64_t)rev);
            kb_be64(&kb, 0);
            mi_seek(&mi, kb.p, kb.n);
            kb.n = glen;
            if (!mi.valid || mi.kn != glen + 16 || memcmp(mi.k, kb.p, glen) != 0)
                continue;   /* nothing at <= rev: we are on the next key already */
            main = (int64_t)~be64_get(mi.k + glen);
        }
        if (mi.vn < 1) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        if (!(mi.v[0] & HFLAG_TOMB)) {
            cairn_kv_t kv;
            if ((rc = dec_hist(mi.v, mi.vn, main, &kv)) != 0)
                break;
            kv.key = m->scratch;
            kv.key_len = ulen;
            if ((rc = deliver(d, &kv)) != 0)
                break;
        }
        /* On to the next key: a couple of steps usually do; else seek past this key. */
        int same = 1;
        for (int i = 0; i < 3 && same; i++) {
            mi_next(&mi);
            same = mi.valid && mi.kn > glen && memcmp(mi.k, kb.p, glen) == 0;
        }
        if (same) {
            kb.p[glen - 1] = 0x02;   /* esc(key) 0x00 0x02: just above this key's records */
            mi_seek(&mi, kb.p, glen);
        }
    }
    int rc2 = mi_close(&mi);
    kb_free(&kb);
    if (rc == DELIVER_DONE)
        rc = 0;
    return rc2 && rc >= 0 ? rc2 : rc;
}

int cairn_mvcc_range(cairn_mvcc_t *m, int view, const cairn_mvcc_range_t *r, cairn_mvcc_kv_fn fn, void *arg,
                     int64_t *count)
{
    int64_t rev = r->rev, cur;
    int rc = resolve_rev(m, view, &rev, &cur);
    if (rc)
        return rc;
    deliv_t d = {.limit = r->limit, .count_only = r->count_only, .want_count = count != NULL, .fn = fn,
                 .arg = arg};
    if (!r->end) {
        /* A single key: one point read. */
        cairn_kv_t kv;
        void *owned = NULL;
        rc = cairn_mvcc_get(m, view, r->key, r->key_len, rev, &kv, &owned);
        if (rc == 1) {
            rc = deliver(&d, &kv);
            if (rc == DELIVER_DONE)
                rc = 0;
        }
        free(owned);
    } else if (rev == cur) {
        rc = range_current(m, view, r, &d);
    } else {
        rc = range_history(m, view, r, rev, &d);
    }
    if (count)
        *count = d.n;
    return rc;
}

/* ---- alarms ('A') ---------------------------------------------------------------------- */

int cairn_mvcc_alarm_foreach(cairn_mvcc_t *m, int view, int (*fn)(void *arg, uint64_t member, uint64_t type),
                             void *arg)
{
    uint8_t pre = T_ALARM;
    miter_t mi;
    mi_open(&mi, m, view, m->ro);
    int rc = 0;
    for (mi_seek(&mi, &pre, 1); mi.valid; mi_next(&mi)) {
        if (mi.kn < 1 || mi.k[0] != T_ALARM)
            break;
        if (mi.kn != 17) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        if ((rc = fn(arg, be64_get(mi.k + 1), be64_get(mi.k + 9))) != 0)
            break;
    }
    int rc2 = mi_close(&mi);
    return rc2 ? rc2 : rc;
}

static int alarm_bit(void *arg, uint64_t member, uint64_t type)
{
    (void)member;
    if (type < 32)
        *(unsigned *)arg |= 1u << type;
    return 0;
}

static int alarm_mask(cairn_mvcc_t *m, int view, unsigned *mask)
{
    *mask = 0;
    return cairn_mvcc_alarm_foreach(m, view, alarm_bit, mask);
}

unsigned cairn_mvcc_alarms(cairn_mvcc_t *m, int view)
{
    if (view == CAIRN_MVCC_PENDING && m->in_batch && m->alarm_dirty) {
        unsigned mask = 0;
        if (alarm_mask(m, view, &mask) == 0)
            return mask;
    }
    return m->alarm_c;
}

int cairn_mvcc_alarm_set(cairn_mvcc_t *m, uint64_t member, uint64_t type, int on)
{
    if (!m->in_batch || m->in_txn)
        return CAIRN_ESTATE;
    uint8_t k[17];
    k[0] = T_ALARM;
    be64_put(k + 1, member);
    be64_put(k + 9, type);
    const uint8_t *v;
    size_t vn;
    void *owned = NULL;
    int rc = raw_get(m, CAIRN_MVCC_PENDING, k, sizeof k, &v, &vn, &owned);
    free(owned);
    if (rc < 0)
        return rc;
    if (rc == (on != 0))
        return 0; /* already so */
    rc = ov_set(&m->ov, k, sizeof k, "", 0, NULL, 0, !on);
    if (rc)
        return rc;
    m->alarm_dirty = 1;
    return 1;
}

/* ---- writes --------------------------------------------------------------------------- */

int cairn_mvcc_batch_begin(cairn_mvcc_t *m)
{
    if (m->in_batch)
        return CAIRN_ESTATE;
    m->p = m->c;
    m->in_batch = 1;
    m->compact_dirty = 0;
    m->alarm_dirty = 0;
    m->in_txn = 0;
    return 0;
}

void cairn_mvcc_batch_abort(cairn_mvcc_t *m)
{
    if (!m->in_batch)
        return;
    ov_clear(&m->ov);
    m->in_batch = 0;
    m->in_txn = 0;
    m->compact_dirty = 0;
    m->alarm_dirty = 0;
    m->p = m->c;
}

int cairn_mvcc_set_applied(cairn_mvcc_t *m, uint64_t index, uint64_t term)
{
    if (!m->in_batch)
        return CAIRN_ESTATE;
    m->p.index = index;
    m->p.term = term;
    return 0;
}

void mvcc_enc_applied(uint8_t out[24], const meta_t *mt)
{
    be64_put(out, mt->index);
    be64_put(out + 8, mt->term);
    be64_put(out + 16, (uint64_t)mt->rev);
}

void mvcc_enc_compact(uint8_t out[32], const meta_t *mt)
{
    be64_put(out, (uint64_t)mt->compact_rev);
    be64_put(out + 8, (uint64_t)mt->finished_rev);
    be64_put(out + 16, mt->cur_main);
    be64_put(out + 24, mt->cur_sub);
}

int cairn_mvcc_sync(cairn_mvcc_t *m)
{
    if (m->in_batch)
        return CAIRN_ESTATE;
    /* LevelDB's log is written in order, so one synced write makes every earlier write
     * durable too: rewrite the committed applied record with sync on. */
    uint8_t ap[24];
    mvcc_enc_applied(ap, &m->c);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    if (!wo)
        return CAIRN_ENOMEM;
    leveldb_writeoptions_set_sync(wo, 1);
    char *err = NULL;
    leveldb_put(m->db, wo, "Mapplied", 8, (const char *)ap, sizeof ap, &err);
    leveldb_writeoptions_destroy(wo);
    if (err) {
        mvcc_ldb_err("sync", err);
        return CAIRN_EIO;
    }
    /* ... and the memtable into synced table files (LevelDB's CompactRange flushes it first;
     * the range itself holds no key - every key starts with a table letter - so nothing else
     * is compacted): a log damaged by a power loss can then be dropped whole without going
     * back behind this point (format comment). */
    static const char lo[] = "\xff\xff\xff\xff\xff\xff\xff\xfe", hi[] = "\xff\xff\xff\xff\xff\xff\xff\xff";
    leveldb_compact_range(m->db, lo, sizeof lo - 1, hi, sizeof hi - 1);
    return 0;
}

int cairn_mvcc_batch_commit(cairn_mvcc_t *m)
{
    if (!m->in_batch)
        return CAIRN_ESTATE;
    if (m->in_txn)
        cairn_mvcc_txn_end(m);
    leveldb_writebatch_clear(m->wb);
    for (const ov_node_t *n = m->ov.head->next[0]; n; n = n->next[0]) {
        if (n->del)
            leveldb_writebatch_delete(m->wb, (const char *)n->key, n->klen);
        else
            leveldb_writebatch_put(m->wb, (const char *)n->key, n->klen, (const char *)n->val, n->vlen);
    }
    /* The applied index rides in the same write as the data it covers. */
    uint8_t ap[24], cp[32];
    mvcc_enc_applied(ap, &m->p);
    leveldb_writebatch_put(m->wb, "Mapplied", 8, (const char *)ap, sizeof ap);
    if (m->compact_dirty) {
        mvcc_enc_compact(cp, &m->p);
        leveldb_writebatch_put(m->wb, "Mcompact", 8, (const char *)cp, sizeof cp);
    }
    char *err = NULL;
    leveldb_write(m->db, m->wo, m->wb, &err);
    leveldb_writebatch_clear(m->wb);
    if (err) {
        mvcc_ldb_err("write batch", err);
        cairn_mvcc_batch_abort(m);
        return CAIRN_EIO;
    }
    m->c = m->p;
    ov_clear(&m->ov);
    m->in_batch = 0;
    m->compact_dirty = 0;
    int rc = 0;
    if (m->alarm_dirty) {
        m->alarm_dirty = 0;
        rc = alarm_mask(m, CAIRN_MVCC_COMMITTED, &m->alarm_c);
    }
    while (rc == 0 && !m->compact_async && cairn_mvcc_compact_pending(m)) {
        rc = cairn_mvcc_compact_step(m, m->compact_chunk);
        if (rc > 0)
            rc = 0;
    }
    return rc;
}

int cairn_mvcc_txn_begin(cairn_mvcc_t *m)
{
    if (!m->in_batch || m->in_txn)
        return CAIRN_ESTATE;
    m->in_txn = 1;
    m->txn_main = m->p.rev + 1;
    m->txn_sub = 0;
    return 0;
}

int64_t cairn_mvcc_txn_end(cairn_mvcc_t *m)
{
    if (m->in_txn && m->txn_sub > 0)
        m->p.rev = m->txn_main;
    m->in_txn = 0;
    return m->p.rev;
}

static int lease_att_set(cairn_mvcc_t *m, int64_t lease, const void *key, size_t klen, int del)
{
    kbuf_t kb;
    kb_init(&kb);
    kb_u8(&kb, T_LATT);
    kb_be64(&kb, (uint64_t)lease);
    kb_add(&kb, key, klen);
    int rc = kb.oom ? CAIRN_ENOMEM : ov_set(&m->ov, kb.p, kb.n, NULL, 0, NULL, 0, del);
    kb_free(&kb);
    return rc;
}

/* The history and revision-index records of one change. hdr/hdrlen: the history value's
 * header (flags first), value: the rest. */
static int write_change(cairn_mvcc_t *m, const void *key, size_t klen, const uint8_t *hdr, size_t hdrlen,
                        const void *value, size_t vlen)
{
    kbuf_t kb;
    kb_init(&kb);
    kb_hist_key(&kb, key, klen, m->txn_main, m->txn_sub);
    int rc = kb.oom ? CAIRN_ENOMEM : ov_set(&m->ov, kb.p, kb.n, hdr, hdrlen, value, vlen, 0);
    if (rc == 0) {
        uint8_t rk[17];
        rk[0] = T_REV;
        be64_put(rk + 1, (uint64_t)m->txn_main);
        be64_put(rk + 9, (uint64_t)m->txn_sub);
        rc = ov_set(&m->ov, rk, sizeof rk, hdr, 1, key, klen, 0);
    }
    kb_free(&kb);
    return rc;
}

int cairn_mvcc_put(cairn_mvcc_t *m, const void *key, size_t key_len, const void *value, size_t value_len,
                   int64_t lease, const cairn_kv_t *prev)
{
    if (!m->in_txn)
        return CAIRN_ESTATE;
    int64_t main = m->txn_main;
    cairn_kv_t kv = {.key = key, .key_len = key_len, .value = value, .value_len = value_len,
                     .create_revision = prev ? prev->create_revision : main, .mod_revision = main,
                     .version = prev ? prev->version + 1 : 1, .lease = lease};
    uint8_t cur[CUR_HDR], hh[HIST_HDR];
    be64_put(cur, (uint64_t)kv.create_revision);
    be64_put(cur + 8, (uint64_t)main);
    be64_put(cur + 16, (uint64_t)kv.version);
    be64_put(cur + 24, (uint64_t)lease);
    hh[0] = 0;
    be64_put(hh + 1, (uint64_t)kv.create_revision);
    be64_put(hh + 9, (uint64_t)kv.version);
    be64_put(hh + 17, (uint64_t)lease);

    kbuf_t kb;
    kb_init(&kb);
    kb_u8(&kb, T_CUR);
    kb_add(&kb, key, key_len);
    int rc = kb.oom ? CAIRN_ENOMEM : ov_set(&m->ov, kb.p, kb.n, cur, sizeof cur, value, value_len, 0);
    kb_free(&kb);
    if (rc == 0)
        rc = write_change(m, key, key_len, hh, sizeof hh, value, value_len);
    if (rc == 0 && prev && prev->lease != 0 && prev->lease != lease)
        rc = lease_att_set(m, prev->lease, key, key_len, 1);
    if (rc == 0 && lease != 0 && (!prev || prev->lease != lease))
        rc = lease_att_set(m, lease, key, key_len, 0);
    if (rc)
        return rc;
    if (m->ev_fn)
        m->ev_fn(m->ev_arg, 0, &kv, prev, m->txn_sub);
    m->txn_sub++;
    return 0;
}

int cairn_mvcc_delete(cairn_mvcc_t *m, const cairn_kv_t *prev)
{
    if (!m->in_txn || !prev)
        return CAIRN_ESTATE;
    kbuf_t kb;
    kb_init(&kb);
    kb_u8(&kb, T_CUR);
    kb_add(&kb, prev->key, prev->key_len);
    int rc = kb.oom ? CAIRN_ENOMEM : ov_set(&m->ov, kb.p, kb.n, NULL, 0, NULL, 0, 1);
    kb_free(&kb);
    uint8_t flags = HFLAG_TOMB;
    if (rc == 0)
        rc = write_change(m, prev->key, prev->key_len, &flags, 1, NULL, 0);
    if (rc == 0 && prev->lease != 0)
        rc = lease_att_set(m, prev->lease, prev->key, prev->key_len, 1);
    if (rc)
        return rc;
    if (m->ev_fn) {
        cairn_kv_t kv = {.key = prev->key, .key_len = prev->key_len, .mod_revision = m->txn_main};
        m->ev_fn(m->ev_arg, 1, &kv, prev, m->txn_sub);
    }
    m->txn_sub++;
    return 0;
}

/* ---- changes by revision (watch catch-up) ---------------------------------------------- */

int cairn_mvcc_changes(cairn_mvcc_t *m, int64_t start_rev, int64_t end_rev, cairn_mvcc_event_fn_rc fn, void *arg)
{
    if (start_rev < m->c.compact_rev)
        return CAIRN_ECOMPACTED;
    if (end_rev <= 0 || end_rev > m->c.rev)
        end_rev = m->c.rev;
    if (start_rev < 1)
        start_rev = 1;
    uint8_t rk[17];
    rk[0] = T_REV;
    be64_put(rk + 1, (uint64_t)start_rev);
    be64_put(rk + 9, 0);
    /* One snapshot for both iterators, so a change and its previous version agree. */
    const leveldb_snapshot_t *snap = leveldb_create_snapshot(m->db);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_readoptions_set_snapshot(ro, snap);
    leveldb_readoptions_set_fill_cache(ro, 0);
    leveldb_iterator_t *ir = leveldb_create_iterator(m->db, ro);
    leveldb_iterator_t *ih = leveldb_create_iterator(m->db, ro);
    kbuf_t kb;
    kb_init(&kb);
    int rc = 0;
    for (leveldb_iter_seek(ir, (const char *)rk, sizeof rk); rc == 0 && leveldb_iter_valid(ir);
         leveldb_iter_next(ir)) {
        size_t kn, vn, hn;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(ir, &kn);
        if (kn < 1 || k[0] != T_REV)
            break;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(ir, &vn);
        if (kn != 17 || vn < 1) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        int64_t main = (int64_t)be64_get(k + 1), sub = (int64_t)be64_get(k + 9);
        if (main > end_rev)
            break;
        const uint8_t *ukey = v + 1;
        size_t ulen = vn - 1;
        kb.n = 0;
        kb_hist_key(&kb, ukey, ulen, main, sub);
        if (kb.oom) {
            rc = CAIRN_ENOMEM;
            break;
        }
        size_t glen = kb.n - 16;
        leveldb_iter_seek(ih, (const char *)kb.p, kb.n);
        const uint8_t *hk = leveldb_iter_valid(ih) ? (const uint8_t *)leveldb_iter_key(ih, &hn) : NULL;
        if (!hk || hn != kb.n || memcmp(hk, kb.p, hn) != 0) {
            rc = CAIRN_ECORRUPT;   /* every revision-index record has its history record */
            break;
        }
        size_t hvn;
        const uint8_t *hv = (const uint8_t *)leveldb_iter_value(ih, &hvn);
        if (hvn < 1) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        int type = (hv[0] & HFLAG_TOMB) ? 1 : 0;
        cairn_kv_t kv = {.key = ukey, .key_len = ulen, .mod_revision = main};
        /* hv is only valid until ih moves on to the previous version: copy it */
        uint8_t *cur_copy = NULL;
        if (type == 0) {
            cur_copy = malloc(hvn);
            if (!cur_copy) {
                rc = CAIRN_ENOMEM;
                break;
            }
            memcpy(cur_copy, hv, hvn);
            if ((rc = dec_hist(cur_copy, hvn, main, &kv)) != 0) {
                free(cur_copy);
                break;
            }
            kv.key = ukey;
            kv.key_len = ulen;
        }
        cairn_kv_t prev, *pp = NULL;
        leveldb_iter_next(ih);
        if (leveldb_iter_valid(ih)) {
            hk = (const uint8_t *)leveldb_iter_key(ih, &hn);
            if (hn == glen + 16 && memcmp(hk, kb.p, glen) == 0) {
                const uint8_t *pv = (const uint8_t *)leveldb_iter_value(ih, &hvn);
                if (hvn >= 1 && !(pv[0] & HFLAG_TOMB) &&
                    dec_hist(pv, hvn, (int64_t)~be64_get(hk + glen), &prev) == 0) {
                    prev.key = ukey;
                    prev.key_len = ulen;
                    pp = &prev;
                }
            }
        }
        rc = fn(arg, type, &kv, pp, sub);
        free(cur_copy);
    }
    char *err = NULL;
    leveldb_iter_get_error(ir, &err);
    if (!err)
        leveldb_iter_get_error(ih, &err);
    leveldb_iter_destroy(ir);
    leveldb_iter_destroy(ih);
    leveldb_readoptions_destroy(ro);
    leveldb_release_snapshot(m->db, snap);
    kb_free(&kb);
    if (err) {
        mvcc_ldb_err("changes scan", err);
        return CAIRN_EIO;
    }
    return rc;
}

/* ---- leases --------------------------------------------------------------------------- */

int cairn_mvcc_lease_get(cairn_mvcc_t *m, int view, int64_t id, int64_t *ttl)
{
    uint8_t k[9];
    k[0] = T_LEASE;
    be64_put(k + 1, (uint64_t)id);
    const uint8_t *v;
    size_t vn;
    void *owned;
    int rc = raw_get(m, view, k, sizeof k, &v, &vn, &owned);
    if (rc == 1) {
        if (vn < 16)
            rc = CAIRN_ECORRUPT;
        else if (ttl)
            *ttl = (int64_t)be64_get(v);
    }
    free(owned);
    return rc;
}

int cairn_mvcc_lease_grant(cairn_mvcc_t *m, int64_t id, int64_t ttl)
{
    if (!m->in_batch || m->in_txn)
        return CAIRN_ESTATE;
    int rc = cairn_mvcc_lease_get(m, CAIRN_MVCC_PENDING, id, NULL);
    if (rc < 0)
        return rc;
    if (rc == 1)
        return CAIRN_EEXISTS;
    uint8_t k[9], v[16];
    k[0] = T_LEASE;
    be64_put(k + 1, (uint64_t)id);
    be64_put(v, (uint64_t)ttl);
    be64_put(v + 8, 0);
    return ov_set(&m->ov, k, sizeof k, v, sizeof v, NULL, 0, 0);
}

int cairn_mvcc_lease_keys(cairn_mvcc_t *m, int view, int64_t id,
                          int (*fn)(void *arg, const uint8_t *key, size_t key_len), void *arg)
{
    uint8_t pre[9];
    pre[0] = T_LATT;
    be64_put(pre + 1, (uint64_t)id);
    miter_t mi;
    mi_open(&mi, m, view, m->ro);
    int rc = 0;
    for (mi_seek(&mi, pre, sizeof pre); mi.valid; mi_next(&mi)) {
        if (mi.kn < sizeof pre || memcmp(mi.k, pre, sizeof pre) != 0)
            break;
        if ((rc = fn(arg, mi.k + sizeof pre, mi.kn - sizeof pre)) != 0)
            break;
    }
    int rc2 = mi_close(&mi);
    return rc2 ? rc2 : rc;
}

typedef struct keylist {
    struct keylist *next;
    size_t n;
    uint8_t k[];
} keylist_t;

typedef struct {
    cairn_arena_t *a;
    keylist_t *head, **tail;
} keycollect_t;

static int collect_key(void *arg, const uint8_t *key, size_t klen)
{
    keycollect_t *kc = arg;
    keylist_t *e = cairn_arena_alloc(kc->a, sizeof *e + klen);
    if (!e)
        return CAIRN_ENOMEM;
    e->next = NULL;
    e->n = klen;
    memcpy(e->k, key, klen);
    *kc->tail = e;
    kc->tail = &e->next;
    return 0;
}

int cairn_mvcc_lease_revoke(cairn_mvcc_t *m, int64_t id, int64_t *deleted)
{
    if (deleted)
        *deleted = 0;
    if (!m->in_batch || m->in_txn)
        return CAIRN_ESTATE;
    int rc = cairn_mvcc_lease_get(m, CAIRN_MVCC_PENDING, id, NULL);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return CAIRN_ENOTFOUND;
    cairn_arena_t a = {0};
    keycollect_t kc = {.a = &a, .head = NULL};
    kc.tail = &kc.head;
    rc = cairn_mvcc_lease_keys(m, CAIRN_MVCC_PENDING, id, collect_key, &kc);
    if (rc == 0)
        rc = cairn_mvcc_txn_begin(m);
    /* Like etcd's lessor: every attached key deleted in one write txn, in key order. */
    for (keylist_t *e = kc.head; rc == 0 && e; e = e->next) {
        cairn_kv_t prev;
        void *owned = NULL;
        rc = get_current(m, CAIRN_MVCC_PENDING, e->k, e->n, &prev, &owned);
        if (rc == 1 && prev.lease == id) {
            rc = cairn_mvcc_delete(m, &prev);
            if (rc == 0 && deleted)
                (*deleted)++;
        } else if (rc >= 0) {
            rc = lease_att_set(m, id, e->k, e->n, 1);   /* stale attachment */
        }
        free(owned);
    }
    if (m->in_txn)
        cairn_mvcc_txn_end(m);
    cairn_arena_free(&a);
    if (rc)
        return rc;
    uint8_t k[9];
    k[0] = T_LEASE;
    be64_put(k + 1, (uint64_t)id);
    return ov_set(&m->ov, k, sizeof k, NULL, 0, NULL, 0, 1);
}

int cairn_mvcc_lease_foreach(cairn_mvcc_t *m, int (*fn)(void *arg, int64_t id, int64_t ttl), void *arg)
{
    return cairn_mvcc_lease_scan(m, 0, fn, arg);
}

int cairn_mvcc_lease_scan(cairn_mvcc_t *m, uint64_t from, int (*fn)(void *arg, int64_t id, int64_t ttl), void *arg)
{
    leveldb_iterator_t *it = leveldb_create_iterator(m->db, m->ro);
    int rc = 0;
    uint8_t start[9];
    start[0] = T_LEASE;
    be64_put(start + 1, from);
    for (leveldb_iter_seek(it, (const char *)start, sizeof start); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kn, vn;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kn);
        if (kn < 1 || k[0] != T_LEASE)
            break;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vn);
        if (kn != 9 || vn < 16) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        if ((rc = fn(arg, (int64_t)be64_get(k + 1), (int64_t)be64_get(v))) != 0)
            break;
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    leveldb_iter_destroy(it);
    if (err) {
        mvcc_ldb_err("lease scan", err);
        return CAIRN_EIO;
    }
    return rc;
}

/* ---- open / close --------------------------------------------------------------------- */

int64_t cairn_mvcc_db_size(cairn_mvcc_t *m)
{
    DIR *d = opendir(m->dir);
    if (!d)
        return 0;
    int64_t total = 0;
    struct dirent *e;
    size_t dl = strlen(m->dir);
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        char *path = malloc(dl + nl + 2);
        if (!path)
            break;
        memcpy(path, m->dir, dl);
        path[dl] = '/';
        memcpy(path + dl + 1, e->d_name, nl + 1);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            total += (int64_t)st.st_size;
        free(path);
    }
    closedir(d);
    return total;
}

void mvcc_set_err(int *err, char *errbuf, size_t errlen, int code, const char *fmt, const char *a,
                    const char *b)
{
    if (err)
        *err = code;
    if (errbuf && errlen)
        snprintf(errbuf, errlen, fmt, a, b ? b : "");
}

/* Reads the meta records into m->c; creates them on an empty database. */
static int load_meta(cairn_mvcc_t *m, char *errbuf, size_t errlen)
{
    char *err = NULL;
    size_t n = 0;
    char *fmt = leveldb_get(m->db, m->ro, "Mformat", 7, &n, &err);
    if (err) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "reading %s: %s", "Mformat", err);
        leveldb_free(err);
        return CAIRN_EIO;
    }
    if (!fmt) {
        leveldb_iterator_t *it = leveldb_create_iterator(m->db, m->ro);
        leveldb_iter_seek_to_first(it);
        int empty = !leveldb_iter_valid(it);
        leveldb_iter_destroy(it);
        if (!empty) {
            mvcc_set_err(NULL, errbuf, errlen, 0, "%s: not a cairn mvcc store (no format record)%s", m->dir, NULL);
            return CAIRN_ECORRUPT;
        }
        m->c = (meta_t){.index = 0, .term = 0, .rev = 1, .compact_rev = -1, .finished_rev = -1};
        uint8_t ap[24], cp[32];
        mvcc_enc_applied(ap, &m->c);
        mvcc_enc_compact(cp, &m->c);
        leveldb_writebatch_clear(m->wb);
        leveldb_writebatch_put(m->wb, "Mformat", 7, MVCC_FORMAT, strlen(MVCC_FORMAT));
        leveldb_writebatch_put(m->wb, "Mapplied", 8, (const char *)ap, sizeof ap);
        leveldb_writebatch_put(m->wb, "Mcompact", 8, (const char *)cp, sizeof cp);
        leveldb_write(m->db, m->wo, m->wb, &err);
        leveldb_writebatch_clear(m->wb);
        if (err) {
            mvcc_set_err(NULL, errbuf, errlen, 0, "initialising %s: %s", m->dir, err);
            leveldb_free(err);
            return CAIRN_EIO;
        }
        return cairn_mvcc_sync(m); /* the format record must survive a power loss */
    }
    int ok = n == strlen(MVCC_FORMAT) && memcmp(fmt, MVCC_FORMAT, n) == 0;
    leveldb_free(fmt);
    if (!ok) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "%s: unsupported mvcc format (want %s)", m->dir, MVCC_FORMAT);
        return CAIRN_EVERSION;
    }
    char *ap = leveldb_get(m->db, m->ro, "Mapplied", 8, &n, &err);
    if (err || !ap || n != 24) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "%s: bad Mapplied record %s", m->dir, err);
        leveldb_free(err);
        leveldb_free(ap);
        return CAIRN_ECORRUPT;
    }
    m->c.index = be64_get((uint8_t *)ap);
    m->c.term = be64_get((uint8_t *)ap + 8);
    m->c.rev = (int64_t)be64_get((uint8_t *)ap + 16);
    leveldb_free(ap);
    char *cp = leveldb_get(m->db, m->ro, "Mcompact", 8, &n, &err);
    if (err || !cp || n != 32) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "%s: bad Mcompact record %s", m->dir, err);
        leveldb_free(err);
        leveldb_free(cp);
        return CAIRN_ECORRUPT;
    }
    m->c.compact_rev = (int64_t)be64_get((uint8_t *)cp);
    m->c.finished_rev = (int64_t)be64_get((uint8_t *)cp + 8);
    m->c.cur_main = be64_get((uint8_t *)cp + 16);
    m->c.cur_sub = be64_get((uint8_t *)cp + 24);
    leveldb_free(cp);
    if (m->c.rev < 1) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "%s: bad revision in Mapplied%s", m->dir, NULL);
        return CAIRN_ECORRUPT;
    }
    return 0;
}

/* ---- membership history ('C') ---------------------------------------------------------- */

int cairn_mvcc_conf_put(cairn_mvcc_t *m, uint64_t index, const void *blob, size_t len)
{
    if (!m->in_batch)
        return CAIRN_ESTATE;
    uint8_t k[9];
    k[0] = T_CONF;
    be64_put(k + 1, index);
    return ov_set(&m->ov, k, sizeof k, blob, len, NULL, 0, 0);
}

int cairn_mvcc_conf_get(cairn_mvcc_t *m, uint64_t upto, uint8_t **blob, size_t *len, uint64_t *at)
{
    uint8_t k[9];
    k[0] = T_CONF;
    be64_put(k + 1, upto);
    leveldb_iterator_t *it = leveldb_create_iterator(m->db, m->ro);
    if (!it)
        return CAIRN_ENOMEM;
    /* the last record <= upto: seek to the first > upto, step back */
    uint8_t next[9];
    memcpy(next, k, sizeof next);
    int rc = 0;
    if (upto == UINT64_MAX) {
        next[0] = T_CONF + 1;
        leveldb_iter_seek(it, (const char *)next, 1);
    } else {
        be64_put(next + 1, upto + 1);
        leveldb_iter_seek(it, (const char *)next, sizeof next);
    }
    if (leveldb_iter_valid(it))
        leveldb_iter_prev(it);
    else
        leveldb_iter_seek_to_last(it);
    if (leveldb_iter_valid(it)) {
        size_t kn = 0, vn = 0;
        const char *kk = leveldb_iter_key(it, &kn);
        const char *vv = leveldb_iter_value(it, &vn);
        if (kn == 9 && kk[0] == T_CONF) {
            *blob = malloc(vn ? vn : 1);
            if (!*blob) {
                rc = CAIRN_ENOMEM;
            } else {
                memcpy(*blob, vv, vn);
                *len = vn;
                if (at)
                    *at = be64_get((const uint8_t *)kk + 1);
                rc = 1;
            }
        }
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (err) {
        mvcc_ldb_err("conf get", err);
        if (rc == 1)
            free(*blob);
        rc = CAIRN_EIO;
    }
    leveldb_iter_destroy(it);
    return rc;
}

/* The stores this process has open, by real path. LevelDB refuses a second open of one in the
 * same process anyway, but only after cairn_ldblog_repair has taken and released the POSIX
 * lock on its LOCK file - and closing any descriptor of a file drops every POSIX lock this
 * process holds on it, LevelDB's included. So a second open is refused here, first. */
static pthread_mutex_t g_open_mu = PTHREAD_MUTEX_INITIALIZER;
static char **g_open;
static size_t g_open_n, g_open_cap;

/* 0 and *key set (free it with open_unregister), CAIRN_ESTATE if open already, or an error */
static int open_register(const char *dir, char **key)
{
    /* LevelDB would create the directory (not its parents); made here so it has a real path */
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return errno == ENOENT ? CAIRN_ENOTFOUND : CAIRN_EIO;
    *key = realpath(dir, NULL);
    if (!*key)
        return CAIRN_EIO;
    int rc = 0;
    pthread_mutex_lock(&g_open_mu);
    for (size_t i = 0; i < g_open_n; i++)
        if (strcmp(g_open[i], *key) == 0)
            rc = CAIRN_ESTATE;
    if (rc == 0 && g_open_n == g_open_cap) {
        size_t nc = g_open_cap ? g_open_cap * 2 : 8;
        char **nv = realloc(g_open, nc * sizeof *nv);
        if (nv)
            g_open = nv, g_open_cap = nc;
        else
            rc = CAIRN_ENOMEM;
    }
    if (rc == 0)
        g_open[g_open_n++] = *key;
    pthread_mutex_unlock(&g_open_mu);
    if (rc) {
        free(*key);
        *key = NULL;
    }
    return rc;
}

static void open_unregister(char **key)
{
    if (!*key)
        return;
    pthread_mutex_lock(&g_open_mu);
    for (size_t i = 0; i < g_open_n; i++)
        if (g_open[i] == *key) {
            g_open[i] = g_open[--g_open_n];
            break;
        }
    pthread_mutex_unlock(&g_open_mu);
    free(*key);
    *key = NULL;
}

cairn_mvcc_t *cairn_mvcc_open(const char *dir, int *err, char *errbuf, size_t errlen)
{
    if (err)
        *err = 0;
    if (errbuf && errlen)
        errbuf[0] = 0;
    cairn_mvcc_t *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir)) || ov_init(&m->ov) != 0) {
        mvcc_set_err(err, errbuf, errlen, CAIRN_ENOMEM, "out of memory%s%s", "", NULL);
        if (m) {
            free(m->dir);
            free(m);
        }
        return NULL;
    }
    m->compact_chunk = 10000;
    m->opts = leveldb_options_create();
    leveldb_options_set_create_if_missing(m->opts, 1);
    m->cache = leveldb_cache_create_lru(64u << 20);
    leveldb_options_set_cache(m->opts, m->cache);
    m->filter = leveldb_filterpolicy_create_bloom(10);
    leveldb_options_set_filter_policy(m->opts, m->filter);
    /* LevelDB stores blocks uncompressed when it was built without snappy. */
    leveldb_options_set_compression(m->opts, leveldb_snappy_compression);
    leveldb_options_set_write_buffer_size(m->opts, 32u << 20);
    leveldb_options_set_max_file_size(m->opts, 8u << 20);
    leveldb_options_set_paranoid_checks(m->opts, 1); /* a damaged log fails the open (above) */
    m->ro = leveldb_readoptions_create();
    m->ro_scan = leveldb_readoptions_create();
    leveldb_readoptions_set_fill_cache(m->ro_scan, 0);
    m->wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(m->wo, 0);   /* the WAL is the durable copy */
    m->wb = leveldb_writebatch_create();

    /* Our own check of LevelDB's logs first: it also finds the damage LevelDB's reader
     * skips without a word (mvcc_ldblog.c). */
    char lberr[512];
    int orc = open_register(dir, &m->open_key);
    if (orc) {
        mvcc_set_err(err, errbuf, errlen, orc, "opening %s: %s", dir,
                     orc == CAIRN_ESTATE ? "this process has it open already" : cairn_strerror(orc));
        cairn_mvcc_destroy(&m);
        return NULL;
    }
    if (cairn_ldblog_repair(dir, lberr, sizeof lberr) < 0) {
        mvcc_set_err(err, errbuf, errlen, CAIRN_EIO, "opening %s: %s", dir, lberr);
        cairn_mvcc_destroy(&m);
        return NULL;
    }
    char *lerr = NULL;
    m->db = leveldb_open(m->opts, dir, &lerr);
    if (lerr && strstr(lerr, "Corruption")) {
        int moved = cairn_ldblog_move_aside(dir);
        if (moved > 0) {
            cairn_warn("the store's unsynced log is damaged (a power loss?); it was moved aside and the store "
                       "reopened at its last flushed state - the WAL replay brings it forward",
                       "dir=%s logs_moved=%d leveldb=\"%s\"", dir, moved, lerr);
            leveldb_free(lerr);
            lerr = NULL;
            m->db = leveldb_open(m->opts, dir, &lerr);
        }
    }
    int rc = 0;
    if (lerr) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "opening %s: %s", dir, lerr);
        leveldb_free(lerr);
        rc = CAIRN_EIO;
    }
    if (rc == 0)
        rc = load_meta(m, errbuf, errlen);
    if (rc == 0)
        rc = alarm_mask(m, CAIRN_MVCC_COMMITTED, &m->alarm_c);
    while (rc == 0 && cairn_mvcc_compact_pending(m)) {
        cairn_info("resuming compaction", "rev=%lld", (long long)m->c.compact_rev);
        rc = cairn_mvcc_compact_step(m, m->compact_chunk);
        if (rc > 0)
            rc = 0;
        if (rc && errbuf && errlen)
            snprintf(errbuf, errlen, "%s: resuming compaction: %s", dir, cairn_strerror(rc));
    }
    if (rc) {
        if (err)
            *err = rc;
        cairn_mvcc_destroy(&m);
        return NULL;
    }
    m->p = m->c;
    return m;
}

void cairn_mvcc_destroy(cairn_mvcc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_mvcc_t *m = *self_p;
    /* An open batch is simply dropped: it never reached LevelDB. */
    if (m->db)
        leveldb_close(m->db);
    if (m->wb)
        leveldb_writebatch_destroy(m->wb);
    if (m->wo)
        leveldb_writeoptions_destroy(m->wo);
    if (m->ro)
        leveldb_readoptions_destroy(m->ro);
    if (m->ro_scan)
        leveldb_readoptions_destroy(m->ro_scan);
    if (m->opts)
        leveldb_options_destroy(m->opts);
    if (m->cache)
        leveldb_cache_destroy(m->cache);
    if (m->filter)
        leveldb_filterpolicy_destroy(m->filter);
    ov_fini(&m->ov);
    cairn_arena_free(&m->req_arena);
    free(m->scratch);
    open_unregister(&m->open_key); /* after leveldb_close: the lock is released by then */
    free(m->dir);
    free(m);
    *self_p = NULL;
}
