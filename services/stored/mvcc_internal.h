/* mvcc_internal.h - what the files of the MVCC store share (not a public API: mvcc.h is).
 *
 * The store is split by concern, one file each:
 *   mvcc.c          the store: the LevelDB layout (its byte-by-byte format comment is there),
 *                   open/close, batches, reads and writes at revisions, watch catch-up,
 *                   leases and the membership history
 *   mvcc_overlay.c  the arena and the skip-list overlay that holds an open batch
 *   mvcc_compact.c  compaction (logical and physical) and HashKV
 *   mvcc_export.c   whole-store copies: export through one LevelDB snapshot, and the builder
 *                   that makes a new store from exported records
 * Table tags, key encodings and the record sizes below are defined by mvcc.c's format
 * comment; this header only gives them names.
 */
#ifndef CAIRN_MVCC_INTERNAL_H
#define CAIRN_MVCC_INTERNAL_H
#include <leveldb/c.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_bytes.h"
#include "mvcc.h"

#define MVCC_FORMAT "cairn-mvcc/1"
#define T_META 'M'
#define T_CUR 'k'
#define T_HIST 'h'
#define T_REV 'r'
#define T_LEASE 'L'
#define T_LATT 'l'
#define T_CONF 'C'
#define T_ALARM 'A'
#define HFLAG_TOMB 0x01
#define CUR_HDR 32    /* create, mod, version, lease */
#define HIST_HDR 25   /* flags, create, version, lease */

/* ---- byte helpers --------------------------------------------------------------------- */

static inline void be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* LevelDB's bytewise order, which is also Go's bytes.Compare. */
static inline int keycmp(const void *a, size_t an, const void *b, size_t bn) { return cairn_bytes_cmp(a, an, b, bn); }

/* A key being built: small ones on the stack, large ones on the heap. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
    uint8_t inl[192];
} kbuf_t;

static inline void kb_init(kbuf_t *b)
{
    b->p = b->inl;
    b->n = 0;
    b->cap = sizeof b->inl;
    b->oom = 0;
}

static inline void kb_free(kbuf_t *b)
{
    if (b->p != b->inl)
        free(b->p);
    kb_init(b);
}

static inline int kb_reserve(kbuf_t *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->n + extra <= b->cap)
        return 0;
    size_t cap = b->cap * 2;
    while (cap < b->n + extra)
        cap *= 2;
    uint8_t *np = b->p == b->inl ? malloc(cap) : realloc(b->p, cap);
    if (!np) {
        b->oom = 1;
        return -1;
    }
    if (b->p == b->inl)
        memcpy(np, b->inl, b->n);
    b->p = np;
    b->cap = cap;
    return 0;
}

static inline void kb_add(kbuf_t *b, const void *d, size_t n)
{
    if (n && kb_reserve(b, n) == 0) {
        memcpy(b->p + b->n, d, n);
        b->n += n;
    }
}

static inline void kb_u8(kbuf_t *b, uint8_t c)
{
    if (kb_reserve(b, 1) == 0)
        b->p[b->n++] = c;
}

static inline void kb_be64(kbuf_t *b, uint64_t v)
{
    if (kb_reserve(b, 8) == 0) {
        be64_put(b->p + b->n, v);
        b->n += 8;
    }
}

/* 'h' esc(key) 0x00 0x01: the prefix shared by every history record of key. */
static inline void kb_hist_group(kbuf_t *b, const uint8_t *key, size_t klen)
{
    kb_u8(b, T_HIST);
    if (kb_reserve(b, 2 * klen + 2) != 0)
        return;
    uint8_t *o = b->p + b->n;
    for (size_t i = 0; i < klen; i++) {
        *o++ = key[i];
        if (key[i] == 0)
            *o++ = 0xFF;
    }
    *o++ = 0x00;
    *o++ = 0x01;
    b->n = (size_t)(o - b->p);
}

static inline void kb_hist_key(kbuf_t *b, const uint8_t *key, size_t klen, int64_t main, int64_t sub)
{
    kb_hist_group(b, key, klen);
    kb_be64(b, ~(uint64_t)main);
    kb_be64(b, ~(uint64_t)sub);
}

/* ---- overlay: the open batch as a sorted map of LevelDB keys --------------------------- */

#define OV_MAXH 12

typedef struct ov_node {
    const uint8_t *key, *val;
    uint32_t klen, vlen;
    uint8_t del;   /* the batch deletes this key */
    struct ov_node *next[];
} ov_node_t;

typedef struct {
    cairn_arena_t arena;
    ov_node_t *head;
    int height;
    uint64_t rnd;
    size_t count;
} overlay_t;

/* ---- the store ------------------------------------------------------------------------ */

typedef struct {
    uint64_t index, term;
    int64_t rev;
    int64_t compact_rev, finished_rev;
    uint64_t cur_main, cur_sub;
} meta_t;

struct cairn_mvcc_t {
    leveldb_t *db;
    leveldb_options_t *opts;
    leveldb_cache_t *cache;
    leveldb_filterpolicy_t *filter;
    leveldb_readoptions_t *ro;       /* point reads */
    leveldb_readoptions_t *ro_scan;  /* long scans (compaction, hash): keep them out of the cache */
    leveldb_writeoptions_t *wo;
    leveldb_writebatch_t *wb;
    char *dir;
    char *open_key; /* this store in the process's list of open stores (mvcc.c) */

    meta_t c;   /* committed: what LevelDB holds */
    meta_t p;   /* pending: c plus the open batch */
    int in_batch;
    int compact_dirty;
    unsigned alarm_c; /* committed: bit t set = some member has an alarm of type t active ('A') */
    int alarm_dirty;  /* the open batch changed the 'A' table */
    overlay_t ov;

    int in_txn;
    int64_t txn_main, txn_sub;

    cairn_mvcc_event_fn ev_fn;
    void *ev_arg;
    int compact_chunk;
    int compact_async;

    uint8_t *scratch;   /* an unescaped history key */
    size_t scratch_cap;
    cairn_arena_t req_arena;
};

/* ---- shared helpers ------------------------------------------------------------------- */

/* mvcc_overlay.c: the skip list of an open batch (keys and values copied into its arena). */
int ov_init(overlay_t *o);
void ov_clear(overlay_t *o);
void ov_fini(overlay_t *o);
/* First node >= key; fills prev[] (may be NULL) with the last node < key on each level. */
ov_node_t *ov_find_ge(const overlay_t *o, const uint8_t *key, size_t klen, ov_node_t **prev);
const ov_node_t *ov_get(const overlay_t *o, const uint8_t *key, size_t klen);
/* Sets key to v1||v2 (or deletes it when del), copying everything into the arena. */
int ov_set(overlay_t *o, const uint8_t *key, size_t klen, const void *v1, size_t n1, const void *v2, size_t n2,
           int del);

/* mvcc.c */
void mvcc_ldb_err(const char *what, char *err); /* logs a LevelDB error and frees it */

/* mvcc_etcd.c: one revision-index ('r') record as etcd's "key" bucket has it - rk the revision
 * key (main | '_' | sub, 't' appended for a delete), val the packed mvccpb.KeyValue - its 'h'
 * record found through hit (an iterator over the same view, kept between calls). The export
 * writes these pairs, HashKV hashes them (so both are etcd's bytes). 0, CAIRN_ECORRUPT (no such
 * history record), CAIRN_EIO, CAIRN_ENOMEM. */
typedef struct {
    leveldb_iterator_t *hit;
    uint8_t rk[18];
    size_t rkn;
    uint8_t *val;
    size_t vlen, vcap;
} mvcc_etcd_rev_t;
int mvcc_etcd_rev(mvcc_etcd_rev_t *r, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn);
void mvcc_set_err(int *err, char *errbuf, size_t errlen, int code, const char *fmt, const char *a, const char *b);
void mvcc_enc_applied(uint8_t out[24], const meta_t *mt); /* the "Mapplied" value */
void mvcc_enc_compact(uint8_t out[32], const meta_t *mt); /* the "Mcompact" value */

#endif
