/* mvcc_compact.c - compaction and HashKV of the MVCC store (mvcc_internal.h).
 *
 * Compaction at C: the logical step (compact_rev in "Mcompact") rides in the open batch; the
 * physical step walks the 'r' revision index from the "Mcompact" cursor up to C, deleting
 * superseded 'h'/'r' pairs and tombstones in chunks, each chunk's write moving the cursor so a
 * crash resumes (the rule and the record layouts are in mvcc.c's format comment). HashKV is
 * etcd 3.4's hash of etcd's encoding of the history (below), after any pending removal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_crc32c.h"
#include "cairn_err.h"
#include "cairn_log.h"
#include "mvcc_internal.h"

/* ---- compaction ----------------------------------------------------------------------- */

int cairn_mvcc_compact(cairn_mvcc_t *m, int64_t rev)
{
    if (!m->in_batch || m->in_txn)
        return CAIRN_ESTATE;
    /* etcd's store.updateCompactRev: already compacted first, then future. */
    if (rev <= m->p.compact_rev)
        return CAIRN_ECOMPACTED;
    if (rev > m->p.rev)
        return CAIRN_EFUTURE_REV;
    m->p.compact_rev = rev;
    m->compact_dirty = 1;
    return 0;
}

int cairn_mvcc_compact_step(cairn_mvcc_t *m, int max_deletes)
{
    if (m->in_batch)
        return CAIRN_ESTATE;
    if (!cairn_mvcc_compact_pending(m))
        return 0;
    if (max_deletes < 4)
        max_deletes = 4;   /* one record can cost 4 deletions: it must always fit */
    const int64_t C = m->c.compact_rev;
    meta_t nm = m->c;
    uint8_t rk[17];
    rk[0] = T_REV;
    be64_put(rk + 1, m->c.cur_main);
    be64_put(rk + 9, m->c.cur_sub);
    leveldb_iterator_t *ir = leveldb_create_iterator(m->db, m->ro_scan);
    leveldb_iterator_t *ih = leveldb_create_iterator(m->db, m->ro_scan);
    leveldb_writebatch_clear(m->wb);
    kbuf_t kb;
    kb_init(&kb);
    int ndel = 0, done = 0, rc = 0;
    for (leveldb_iter_seek(ir, (const char *)rk, sizeof rk);; leveldb_iter_next(ir)) {
        size_t kn, vn;
        if (!leveldb_iter_valid(ir)) {
            done = 1;
            break;
        }
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(ir, &kn);
        if (kn < 1 || k[0] != T_REV) {
            done = 1;
            break;
        }
        if (kn != 17) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        uint64_t main = be64_get(k + 1), sub = be64_get(k + 9);
        if ((int64_t)main > C) {
            done = 1;
            break;
        }
        if (ndel + 4 > max_deletes) {
            nm.cur_main = main;
            nm.cur_sub = sub;
            break;
        }
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(ir, &vn);
        if (vn < 1) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        kb.n = 0;
        kb_hist_key(&kb, v + 1, vn - 1, (int64_t)main, (int64_t)sub);
        if (kb.oom) {
            rc = CAIRN_ENOMEM;
            break;
        }
        size_t glen = kb.n - 16;
        /* This record supersedes the key's previous one, the next record in 'h' order. */
        leveldb_iter_seek(ih, (const char *)kb.p, kb.n);
        if (leveldb_iter_valid(ih)) {
            size_t hn;
            const uint8_t *hk = (const uint8_t *)leveldb_iter_key(ih, &hn);
            if (hn == kb.n && memcmp(hk, kb.p, hn) == 0)
                leveldb_iter_next(ih);
            if (leveldb_iter_valid(ih)) {
                hk = (const uint8_t *)leveldb_iter_key(ih, &hn);
                if (hn == glen + 16 && memcmp(hk, kb.p, glen) == 0) {
                    uint8_t prk[17];
                    prk[0] = T_REV;
                    be64_put(prk + 1, ~be64_get(hk + glen));
                    be64_put(prk + 9, ~be64_get(hk + glen + 8));
                    leveldb_writebatch_delete(m->wb, (const char *)hk, hn);
                    leveldb_writebatch_delete(m->wb, (const char *)prk, sizeof prk);
                    ndel += 2;
                }
            }
        }
        /* A tombstone at <= C is never needed: the key did not exist at C. */
        if (v[0] & HFLAG_TOMB) {
            leveldb_writebatch_delete(m->wb, (const char *)kb.p, kb.n);
            leveldb_writebatch_delete(m->wb, (const char *)k, kn);
            ndel += 2;
        }
    }
    char *err = NULL;
    leveldb_iter_get_error(ir, &err);
    if (!err)
        leveldb_iter_get_error(ih, &err);
    leveldb_iter_destroy(ir);
    leveldb_iter_destroy(ih);
    kb_free(&kb);
    if (err) {
        mvcc_ldb_err("compact scan", err);
        rc = CAIRN_EIO;
    }
    if (rc) {
        leveldb_writebatch_clear(m->wb);
        return rc;
    }
    if (done) {
        nm.finished_rev = C;
        nm.cur_main = (uint64_t)(C + 1);
        nm.cur_sub = 0;
    }
    uint8_t cp[32];
    mvcc_enc_compact(cp, &nm);
    leveldb_writebatch_put(m->wb, "Mcompact", 8, (const char *)cp, sizeof cp);
    leveldb_write(m->db, m->wo, m->wb, &err);
    leveldb_writebatch_clear(m->wb);
    if (err) {
        mvcc_ldb_err("compact write", err);
        return CAIRN_EIO;
    }
    m->c = nm;
    if (done)
        cairn_debug("compaction finished", "rev=%lld", (long long)C);
    return done ? 0 : 1;
}

struct cairn_mvcc_hashkv {
    cairn_mvcc_t *m;
    const leveldb_snapshot_t *snap;
    leveldb_readoptions_t *ro;
    int64_t rev, crev, cur_rev;
    int all; /* Maintenance/Hash: every record, not etcd's HashKV walk */
};

int cairn_mvcc_hashkv_begin(cairn_mvcc_t *m, int64_t rev, int64_t *compact_rev, cairn_mvcc_hashkv_t **job)
{
    *job = NULL;
    int64_t crev = m->c.compact_rev;
    if (compact_rev)
        *compact_rev = crev;
    if (rev > 0 && rev <= crev)
        return CAIRN_ECOMPACTED;
    if (rev > m->c.rev)
        return CAIRN_EFUTURE_REV;
    if (rev <= 0)
        rev = m->c.rev;
    /* Finish any pending removal first, so every member hashes the same records for the
     * same (rev, compact_rev), however far its removal had got. */
    while (!m->in_batch && cairn_mvcc_compact_pending(m)) {
        int rc = cairn_mvcc_compact_step(m, m->compact_chunk);
        if (rc < 0)
            return rc;
    }
    cairn_mvcc_hashkv_t *j = calloc(1, sizeof *j);
    if (!j)
        return CAIRN_ENOMEM;
    j->m = m;
    j->rev = rev;
    j->crev = crev;
    j->cur_rev = m->c.rev;
    /* the hash reads through this snapshot: what the loop writes meanwhile is not seen */
    j->snap = leveldb_create_snapshot(m->db);
    j->ro = leveldb_readoptions_create();
    if (!j->snap || !j->ro) {
        cairn_mvcc_hashkv_end(&j);
        return CAIRN_ENOMEM;
    }
    leveldb_readoptions_set_snapshot(j->ro, j->snap);
    leveldb_readoptions_set_fill_cache(j->ro, 0); /* a whole-history walk must not evict the hot set */
    *job = j;
    return 0;
}

int64_t cairn_mvcc_hashkv_current_revision(const cairn_mvcc_hashkv_t *job) { return job->cur_rev; }

void cairn_mvcc_hashkv_end(cairn_mvcc_hashkv_t **job)
{
    if (!job || !*job)
        return;
    cairn_mvcc_hashkv_t *j = *job;
    if (j->ro)
        leveldb_readoptions_destroy(j->ro);
    if (j->snap)
        leveldb_release_snapshot(j->m->db, j->snap);
    free(j);
    *job = NULL;
}

int cairn_mvcc_hash_kv(cairn_mvcc_t *m, int64_t rev, uint32_t *hash, int64_t *compact_rev)
{
    cairn_mvcc_hashkv_t *j;
    int rc = cairn_mvcc_hashkv_begin(m, rev, compact_rev, &j);
    if (rc == 0)
        rc = cairn_mvcc_hashkv_run(j, hash);
    cairn_mvcc_hashkv_end(&j);
    return rc;
}

static int hash_records(cairn_mvcc_t *m, leveldb_readoptions_t *ro, uint32_t *hash);

int cairn_mvcc_hashkv_run(cairn_mvcc_hashkv_t *j, uint32_t *hash)
{
    cairn_mvcc_t *m = j->m;
    if (j->all)
        return hash_records(m, j->ro, hash);
    int64_t rev = j->rev, crev = j->crev;
    /* etcd 3.4.23's hash (mvcc/kvstore.go HashByRev), so that `etcdctl endpoint hashkv` gives
     * the same number for the same history on etcd and on Cairn: CRC-32C of the bucket name
     * "key", then of each revision's key and value in etcd's encoding (mvcc_etcd_rev), in
     * revision order, up to rev - except that a revision at or below the compaction counts only
     * if it is still its key's value at rev (etcd filters them by kvindex.Keep(rev), not
     * Keep(compact_rev): a key written or deleted since the compaction drops its kept revision
     * from the hash), and that this filter applies only when some key is alive at rev (Keep
     * returned anything). Both sums are kept until that is known. */
    uint32_t h_keep = cairn_crc32c_extend(0, "key", 3), h_all = h_keep;
    int any_alive = 0;
    leveldb_iterator_t *it = leveldb_create_iterator(m->db, j->ro);
    leveldb_iterator_t *cur = leveldb_create_iterator(m->db, j->ro);
    mvcc_etcd_rev_t er = {.hit = leveldb_create_iterator(m->db, j->ro)};
    int rc = it && cur && er.hit ? 0 : CAIRN_ENOMEM;
    uint8_t start = T_REV;
    for (leveldb_iter_seek(it, (const char *)&start, 1); rc == 0 && leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kn, vn;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kn);
        if (kn < 1 || k[0] != T_REV)
            break;
        int64_t main = kn == 17 ? (int64_t)be64_get(k + 1) : 0;
        if (main > rev)
            break; /* the index is in revision order */
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vn);
        if ((rc = mvcc_etcd_rev(&er, k, kn, v, vn)) != 0)
            break;
        int below = main <= crev;
        int alive = 0;
        if (below || !any_alive) {
            /* is this revision its key's value at rev? the newest 'h' record at <= rev */
            kbuf_t hk;
            kb_init(&hk);
            kb_hist_key(&hk, v + 1, vn - 1, rev, -1);
            if (hk.oom) {
                rc = CAIRN_ENOMEM;
                break;
            }
            leveldb_iter_seek(cur, (const char *)hk.p, hk.n);
            size_t fk = 0, fv = 0;
            const uint8_t *f = leveldb_iter_valid(cur) ? (const uint8_t *)leveldb_iter_key(cur, &fk) : NULL;
            const uint8_t *fval = f ? (const uint8_t *)leveldb_iter_value(cur, &fv) : NULL;
            /* same group (key) and same (main, sub) as this index record, and a put */
            alive = f && fk == hk.n && memcmp(f, hk.p, hk.n - 16) == 0 && ~be64_get(f + fk - 16) == (uint64_t)main &&
                    ~be64_get(f + fk - 8) == be64_get(k + 9) && fv >= 1 && !(fval[0] & HFLAG_TOMB);
            kb_free(&hk);
        }
        if (alive)
            any_alive = 1;
        h_all = cairn_crc32c_extend(h_all, er.rk, er.rkn);
        h_all = cairn_crc32c_extend(h_all, er.val, er.vlen);
        if (!below || alive) {
            h_keep = cairn_crc32c_extend(h_keep, er.rk, er.rkn);
            h_keep = cairn_crc32c_extend(h_keep, er.val, er.vlen);
        }
    }
    char *err = NULL;
    if (it)
        leveldb_iter_get_error(it, &err);
    if (it)
        leveldb_iter_destroy(it);
    if (cur)
        leveldb_iter_destroy(cur);
    if (er.hit)
        leveldb_iter_destroy(er.hit);
    free(er.val);
    if (err) {
        mvcc_ldb_err("hash", err);
        return CAIRN_EIO;
    }
    if (rc)
        return rc;
    *hash = any_alive ? h_keep : h_all;
    return 0;
}

/* ---- space and whole-store hash (Maintenance/Defragment, Status, Hash) ------------------- */

int64_t cairn_mvcc_db_size_in_use(cairn_mvcc_t *m)
{
    /* every table's first byte is below 0xFF ('A'..'r'), so ["", "\xff") is the keyspace */
    const char *start = "";
    size_t start_len = 0;
    const char *limit = "\xff";
    size_t limit_len = 1;
    uint64_t size = 0;
    leveldb_approximate_sizes(m->db, 1, &start, &start_len, &limit, &limit_len, &size);
    return (int64_t)size;
}

int cairn_mvcc_defrag(cairn_mvcc_t *m)
{
    /* NULL, NULL: the whole keyspace; the memtable is flushed first */
    leveldb_compact_range(m->db, NULL, 0, NULL, 0);
    return 0;
}

int cairn_mvcc_hash_all_begin(cairn_mvcc_t *m, cairn_mvcc_hashkv_t **job)
{
    int rc = cairn_mvcc_hashkv_begin(m, 0, NULL, job); /* finishes a pending removal, pins */
    if (rc == 0)
        (*job)->all = 1;
    return rc;
}

int cairn_mvcc_hash_all(cairn_mvcc_t *m, uint32_t *hash, int64_t *rev)
{
    cairn_mvcc_hashkv_t *j;
    int rc = cairn_mvcc_hash_all_begin(m, &j);
    if (rc == 0)
        rc = cairn_mvcc_hashkv_run(j, hash);
    if (rc == 0 && rev)
        *rev = j->cur_rev;
    cairn_mvcc_hashkv_end(&j);
    return rc;
}

/* CRC32C of every record but "Mcompact", through ro. */
static int hash_records(cairn_mvcc_t *m, leveldb_readoptions_t *ro, uint32_t *hash)
{
    uint32_t h = 0;
    leveldb_iterator_t *it = leveldb_create_iterator(m->db, ro);
    for (leveldb_iter_seek_to_first(it); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kn, vn;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kn);
        if (kn == 8 && memcmp(k, "Mcompact", 8) == 0)
            continue;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vn);
        h = cairn_crc32c_extend(h, k, kn);
        h = cairn_crc32c_extend(h, v, vn);
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    leveldb_iter_destroy(it);
    if (err) {
        mvcc_ldb_err("hash", err);
        return CAIRN_EIO;
    }
    *hash = h;
    return 0;
}
