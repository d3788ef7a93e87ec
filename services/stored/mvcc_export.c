/* mvcc_export.c - whole-store copies of the MVCC store (mvcc.h "whole-store copies").
 *
 * Export hands out every raw LevelDB record of the committed state through one LevelDB
 * snapshot, with the point (applied index/term, revision, compact revision) read through the
 * same snapshot. The builder makes a new store directory from such records and checks the
 * result is a store of mvcc.c's format. The records are mvcc.c's (its format comment); the
 * snapshot file that carries them is snapshot.c's.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "mvcc_internal.h"

/* ---- whole-store copies ------------------------------------------------------------------ */

static void dec_point(const uint8_t *ap, size_t an, const uint8_t *cp, size_t cn, cairn_mvcc_point_t *pt)
{
    *pt = (cairn_mvcc_point_t){.compact_rev = -1};
    if (an == 24) {
        pt->index = be64_get(ap);
        pt->term = be64_get(ap + 8);
        pt->revision = (int64_t)be64_get(ap + 16);
    }
    if (cn == 32)
        pt->compact_rev = (int64_t)be64_get(cp);
}

int cairn_mvcc_export(cairn_mvcc_t *m, int (*on_point)(void *arg, const cairn_mvcc_point_t *pt), cairn_mvcc_raw_fn fn,
                      void *arg)
{
    /* Everything through one LevelDB snapshot: the records and the applied index they are
     * described by come from the same instant, whatever is written meanwhile. */
    const leveldb_snapshot_t *snap = leveldb_create_snapshot(m->db);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    if (!snap || !ro) {
        if (snap)
            leveldb_release_snapshot(m->db, snap);
        if (ro)
            leveldb_readoptions_destroy(ro);
        return CAIRN_ENOMEM;
    }
    leveldb_readoptions_set_snapshot(ro, snap);
    leveldb_readoptions_set_fill_cache(ro, 0); /* a full scan must not evict the hot set */
    leveldb_readoptions_set_verify_checksums(ro, 1);
    int rc = 0;
    char *err = NULL;
    size_t an = 0, cn = 0;
    char *ap = leveldb_get(m->db, ro, "Mapplied", 8, &an, &err);
    char *cp = err ? NULL : leveldb_get(m->db, ro, "Mcompact", 8, &cn, &err);
    if (err) {
        mvcc_ldb_err("export meta", err);
        rc = CAIRN_EIO;
    } else if (!ap || an != 24) {
        rc = CAIRN_ECORRUPT;
    } else {
        cairn_mvcc_point_t pt;
        dec_point((const uint8_t *)ap, an, (const uint8_t *)cp, cn, &pt);
        if (on_point)
            rc = on_point(arg, &pt);
    }
    leveldb_free(ap);
    leveldb_free(cp);
    leveldb_iterator_t *it = rc ? NULL : leveldb_create_iterator(m->db, ro);
    if (it) {
        for (leveldb_iter_seek_to_first(it); rc == 0 && leveldb_iter_valid(it); leveldb_iter_next(it)) {
            size_t kn = 0, vn = 0;
            const char *k = leveldb_iter_key(it, &kn);
            const char *v = leveldb_iter_value(it, &vn);
            rc = fn(arg, (const uint8_t *)k, kn, (const uint8_t *)v, vn);
        }
        leveldb_iter_get_error(it, &err);
        if (err) {
            mvcc_ldb_err("export", err);
            if (rc == 0)
                rc = CAIRN_EIO;
        }
        leveldb_iter_destroy(it);
    } else if (rc == 0) {
        rc = CAIRN_ENOMEM;
    }
    leveldb_readoptions_destroy(ro);
    leveldb_release_snapshot(m->db, snap);
    return rc;
}

#define BUILD_BATCH_BYTES ((size_t)4 << 20)

struct cairn_mvcc_builder_t {
    leveldb_t *db;
    leveldb_options_t *opts;
    leveldb_filterpolicy_t *filter;
    leveldb_writeoptions_t *wo;
    leveldb_writebatch_t *wb;
    size_t batch_bytes;
    char *dir;
    int failed;
};

cairn_mvcc_builder_t *cairn_mvcc_builder_new(const char *dir, int *err, char *errbuf, size_t errlen)
{
    if (err)
        *err = 0;
    cairn_mvcc_builder_t *b = calloc(1, sizeof *b);
    if (!b || !(b->dir = strdup(dir))) {
        free(b);
        mvcc_set_err(err, errbuf, errlen, CAIRN_ENOMEM, "out of memory%s%s", "", NULL);
        return NULL;
    }
    /* The options of cairn_mvcc_open, so the tables are written as the store will read them
     * (bloom filters included); error_if_exists: a build never writes into a store. */
    b->opts = leveldb_options_create();
    leveldb_options_set_create_if_missing(b->opts, 1);
    leveldb_options_set_error_if_exists(b->opts, 1);
    b->filter = leveldb_filterpolicy_create_bloom(10);
    leveldb_options_set_filter_policy(b->opts, b->filter);
    leveldb_options_set_compression(b->opts, leveldb_snappy_compression);
    leveldb_options_set_write_buffer_size(b->opts, 32u << 20);
    leveldb_options_set_max_file_size(b->opts, 8u << 20);
    b->wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(b->wo, 0);
    b->wb = leveldb_writebatch_create();
    char *lerr = NULL;
    b->db = leveldb_open(b->opts, dir, &lerr);
    if (lerr) {
        mvcc_set_err(err, errbuf, errlen, CAIRN_EIO, "creating %s: %s", dir, lerr);
        leveldb_free(lerr);
        cairn_mvcc_builder_destroy(&b);
        return NULL;
    }
    return b;
}

static int builder_flush(cairn_mvcc_builder_t *b, int sync)
{
    char *err = NULL;
    leveldb_writeoptions_set_sync(b->wo, (unsigned char)sync);
    leveldb_write(b->db, b->wo, b->wb, &err);
    leveldb_writebatch_clear(b->wb);
    b->batch_bytes = 0;
    if (err) {
        mvcc_ldb_err("build write", err);
        b->failed = 1;
        return CAIRN_EIO;
    }
    return 0;
}

int cairn_mvcc_builder_put(cairn_mvcc_builder_t *b, const void *key, size_t key_len, const void *value,
                           size_t value_len)
{
    if (!b || b->failed)
        return CAIRN_ESTATE;
    if (key_len == 0)
        return CAIRN_EINVAL;
    leveldb_writebatch_put(b->wb, key, key_len, value, value_len);
    b->batch_bytes += key_len + value_len + 16;
    /* a few MiB per write: large enough to be cheap, small enough not to hold the whole
     * store in memory */
    if (b->batch_bytes >= BUILD_BATCH_BYTES)
        return builder_flush(b, 0);
    return 0;
}

/* The 'k' record of every key alive at the end of the history, and its 'l' record when it
 * carries a lease: the newest 'h' record of each key decides (its group's first record, as
 * ~main sorts newest first), unless it is a tombstone. */
int cairn_mvcc_builder_derive_current(cairn_mvcc_builder_t *b)
{
    if (!b || b->failed)
        return CAIRN_ESTATE;
    int rc = builder_flush(b, 0);
    if (rc)
        return rc;
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_readoptions_set_fill_cache(ro, 0);
    leveldb_iterator_t *it = leveldb_create_iterator(b->db, ro);
    uint8_t *grp = NULL, *ukey = NULL;
    size_t glen = 0, gcap = 0, ucap = 0;
    char t = T_HIST;
    for (leveldb_iter_seek(it, &t, 1); rc == 0 && leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kn = 0, vn = 0;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kn);
        if (kn == 0 || k[0] != T_HIST)
            break;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vn);
        /* the group: 'h' esc(key) 0x00 0x01; the same group as the previous record = an
         * older revision of the same key */
        size_t g = 0, u = 0;
        if (kn + 1 > ucap) {
            uint8_t *nu = realloc(ukey, kn + 1);
            if (!nu) {
                rc = CAIRN_ENOMEM;
                break;
            }
            ukey = nu;
            ucap = kn + 1;
        }
        for (size_t i = 1; i + 1 < kn; i++) {
            if (k[i] != 0) {
                ukey[u++] = k[i];
            } else if (k[i + 1] == 0xFF) {
                ukey[u++] = 0;
                i++;
            } else if (k[i + 1] == 0x01) {
                g = i + 2;
                break;
            } else {
                break;
            }
        }
        if (g == 0 || kn != g + 16 || vn < 1) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        if (glen == g && memcmp(grp, k, g) == 0)
            continue;
        if (g > gcap) {
            uint8_t *ng = realloc(grp, g);
            if (!ng) {
                rc = CAIRN_ENOMEM;
                break;
            }
            grp = ng;
            gcap = g;
        }
        memcpy(grp, k, g);
        glen = g;
        if (v[0] & HFLAG_TOMB)
            continue;
        if (vn < HIST_HDR) {
            rc = CAIRN_ECORRUPT;
            break;
        }
        uint64_t main = ~be64_get(k + g);
        kbuf_t ck, cv;
        kb_init(&ck), kb_init(&cv);
        kb_u8(&ck, T_CUR);
        kb_add(&ck, ukey, u);
        kb_add(&cv, v + 1, 8);  /* create */
        kb_be64(&cv, main);     /* mod */
        kb_add(&cv, v + 9, 16); /* version, lease */
        kb_add(&cv, v + HIST_HDR, vn - HIST_HDR);
        rc = ck.oom || cv.oom ? CAIRN_ENOMEM : cairn_mvcc_builder_put(b, ck.p, ck.n, cv.p, cv.n);
        uint64_t lease = be64_get(v + 17);
        if (rc == 0 && lease) {
            kbuf_t lk;
            kb_init(&lk);
            kb_u8(&lk, T_LATT);
            kb_be64(&lk, lease);
            kb_add(&lk, ukey, u);
            rc = lk.oom ? CAIRN_ENOMEM : cairn_mvcc_builder_put(b, lk.p, lk.n, "", 0);
            kb_free(&lk);
        }
        kb_free(&ck), kb_free(&cv);
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (err) {
        mvcc_ldb_err("build derive", err);
        if (rc == 0)
            rc = CAIRN_EIO;
    }
    leveldb_iter_destroy(it);
    leveldb_readoptions_destroy(ro);
    free(grp);
    free(ukey);
    if (rc)
        b->failed = 1;
    return rc;
}

int cairn_mvcc_builder_finish(cairn_mvcc_builder_t *b, cairn_mvcc_point_t *pt, char *errbuf, size_t errlen)
{
    if (!b || b->failed)
        return CAIRN_ESTATE;
    int rc = builder_flush(b, 1);
    if (rc) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "%s: writing the last batch failed%s", b->dir, NULL);
        return rc;
    }
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    char *err = NULL;
    size_t fn = 0, an = 0, cn = 0;
    char *fmt = leveldb_get(b->db, ro, "Mformat", 7, &fn, &err);
    char *ap = err ? NULL : leveldb_get(b->db, ro, "Mapplied", 8, &an, &err);
    char *cp = err ? NULL : leveldb_get(b->db, ro, "Mcompact", 8, &cn, &err);
    leveldb_readoptions_destroy(ro);
    if (err) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "%s: reading back: %s", b->dir, err);
        leveldb_free(err);
        rc = CAIRN_EIO;
    } else if (!fmt || fn != strlen(MVCC_FORMAT) || memcmp(fmt, MVCC_FORMAT, fn) != 0) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "%s: the records are not a %s store (format record missing or wrong)",
                b->dir, MVCC_FORMAT);
        rc = CAIRN_ECORRUPT;
    } else if (!ap || an != 24 || !cp || cn != 32) {
        mvcc_set_err(NULL, errbuf, errlen, 0, "%s: the records lack a valid Mapplied/Mcompact record%s", b->dir, NULL);
        rc = CAIRN_ECORRUPT;
    } else if (pt) {
        dec_point((const uint8_t *)ap, an, (const uint8_t *)cp, cn, pt);
    }
    leveldb_free(fmt);
    leveldb_free(ap);
    leveldb_free(cp);
    if (rc)
        b->failed = 1;
    return rc;
}

void cairn_mvcc_builder_destroy(cairn_mvcc_builder_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_mvcc_builder_t *b = *self_p;
    if (b->db)
        leveldb_close(b->db);
    if (b->wb)
        leveldb_writebatch_destroy(b->wb);
    if (b->wo)
        leveldb_writeoptions_destroy(b->wo);
    if (b->opts)
        leveldb_options_destroy(b->opts);
    if (b->filter)
        leveldb_filterpolicy_destroy(b->filter);
    free(b->dir);
    free(b);
    *self_p = NULL;
}
