/* cairn_bbolt.c - bbolt database files: a streaming writer and a checked reader (see
 * cairn_bbolt.h for the API).
 *
 * FORMAT (bbolt 1.3, the version etcd 3.4 links; all integers little-endian)
 * ==========================================================================
 *
 * The file is an array of pages of page_size bytes (4096 here; a reader takes it from the
 * meta). Page n starts at byte n * page_size. Every page starts with a 16-byte header:
 *
 *     0   8   id        the page's own number (bbolt checks it)
 *     8   2   flags     0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist
 *     10  2   count     number of elements
 *     12  4   overflow  number of pages that follow this one and belong to it (a node larger
 *                       than a page occupies 1 + overflow consecutive pages; only the first
 *                       has a header)
 *
 * Meta page (pages 0 and 1; bbolt writes the next meta at page txid % 2, and a reader takes
 * the valid one with the higher txid), at byte 16 of the page:
 *
 *     0   4   magic     0xED0CDAED
 *     4   4   version   2
 *     8   4   page_size
 *     12  4   flags     0
 *     16  8   root      page of the root bucket (the tree of top-level bucket names)
 *     24  8   sequence  of the root bucket, 0
 *     32  8   freelist  page of the freelist
 *     40  8   pgid      high-water mark: pages 0..pgid-1 make the file
 *     48  8   txid
 *     56  8   checksum  FNV-1a 64 of bytes 0..55 of the meta
 *
 * Freelist page: count = number of free page ids, followed by them as u64 (count 0xFFFF means
 * the first u64 holds the real count). The writer frees nothing: its count is 0.
 *
 * Leaf page (flags 0x02): count elements of 16 bytes right after the header, then the keys
 * and values:
 *
 *     0   4   flags     0x01 = the value is a bucket (see below); 0 = a plain value
 *     4   4   pos       offset of the key FROM THE START OF THIS ELEMENT
 *     8   4   ksize
 *     12  4   vsize     the value follows the key directly
 *
 * Branch page (flags 0x01): count elements of 16 bytes, then the keys:
 *
 *     0   4   pos       offset of the key from the start of this element
 *     4   4   ksize
 *     8   8   pgid      the child page; key = the first key under that child
 *
 * Keys in a page are in ascending bytewise order; every leaf is at the same depth.
 *
 * A bucket value (leaf element with flag 0x01) is 16 bytes: root page u64, sequence u64. A
 * root of 0 means an inline bucket: the value goes on with a page header and the leaf
 * elements of the bucket's only page (no page of its own). The writer makes empty buckets
 * inline (that is what bbolt writes for a new bucket) and every other bucket a tree of pages.
 *
 * Page use by this writer: 0 and 1 meta, 2 freelist (empty), data pages from 3 on in the order
 * they are written (each leaf as it fills, each branch when its children are done), the root
 * bucket's tree last. Every page below the high-water mark is reachable from a root, so
 * bbolt's tx.Check (which `etcdctl snapshot status` runs) finds no unreachable unfreed page.
 */
#include "cairn_bbolt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn_bytes.h"
#include "cairn_err.h"

#define PS CAIRN_BBOLT_PAGE_SIZE
#define HDR 16u
#define ELEM 16u
#define F_BRANCH 0x01
#define F_LEAF 0x02
#define F_META 0x04
#define F_FREELIST 0x10
#define BUCKET_LEAF 0x01
#define MAGIC 0xED0CDAEDu
#define VERSION 2u
#define MAX_LEVELS 64
#define MAX_DEPTH 64
#define WBUF ((size_t)1 << 20)
#define FIRST_DATA_PAGE 3u

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ==== writing ============================================================================ */

/* One tree level being filled: the elements of the page not written yet, each staged as
 * flags u32 | ksize u32 | vsize-or-pgid u64 | key | value. */
typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint32_t count;
    size_t page_bytes; /* HDR + count * ELEM + keys and values */
    uint64_t pages;    /* pages this level wrote for the current tree */
} level_t;

typedef struct {
    uint8_t *name;
    size_t name_len;
    uint8_t value[32]; /* bucket header (+ empty inline page) */
    size_t value_len;
} bucket_ent_t;

struct cairn_bbolt_writer {
    int fd;
    int err;
    uint8_t *wbuf; /* data pages not written yet; they are consecutive from wbuf_pgid */
    size_t wlen;
    uint64_t wbuf_pgid;
    uint64_t next_pgid;
    uint8_t *page; /* one node being laid out */
    size_t page_cap;
    level_t lv[MAX_LEVELS];
    int in_bucket;
    uint8_t *last_key; /* the previous key of the open bucket (order check) */
    size_t last_len, last_cap;
    int have_last;
    bucket_ent_t *buckets;
    size_t nbuckets, bcap;
};

cairn_bbolt_writer_t *cairn_bbolt_writer_new(int fd)
{
    cairn_bbolt_writer_t *w = calloc(1, sizeof *w);
    if (!w || !(w->wbuf = malloc(WBUF))) {
        free(w);
        return NULL;
    }
    w->fd = fd;
    w->next_pgid = w->wbuf_pgid = FIRST_DATA_PAGE;
    return w;
}

void cairn_bbolt_writer_destroy(cairn_bbolt_writer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_bbolt_writer_t *w = *self_p;
    for (int i = 0; i < MAX_LEVELS; i++)
        free(w->lv[i].buf);
    for (size_t i = 0; i < w->nbuckets; i++)
        free(w->buckets[i].name);
    free(w->buckets);
    free(w->wbuf);
    free(w->page);
    free(w->last_key);
    free(w);
    *self_p = NULL;
}

static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno == ENOSPC || errno == EDQUOT ? CAIRN_ENOSPC : CAIRN_EIO;
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int wflush(cairn_bbolt_writer_t *w)
{
    if (w->err)
        return w->err;
    if (w->wlen) {
        int rc = pwrite_all(w->fd, w->wbuf, w->wlen, w->wbuf_pgid * PS);
        if (rc)
            return w->err = rc;
        w->wbuf_pgid += w->wlen / PS;
        w->wlen = 0;
    }
    return 0;
}

/* Appends npages laid out in w->page as the next pages of the file. */
static int emit_pages(cairn_bbolt_writer_t *w, size_t npages)
{
    size_t n = npages * PS;
    if (w->wlen + n > WBUF) {
        int rc = wflush(w);
        if (rc)
            return rc;
    }
    if (n > WBUF) { /* a node bigger than the buffer goes straight to the file */
        int rc = pwrite_all(w->fd, w->page, n, w->wbuf_pgid * PS);
        if (rc)
            return w->err = rc;
        w->wbuf_pgid += npages;
    } else {
        memcpy(w->wbuf + w->wlen, w->page, n);
        w->wlen += n;
    }
    w->next_pgid += npages;
    return 0;
}

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 4096;
    while (nc < need)
        nc *= 2;
    uint8_t *p = realloc(*buf, nc);
    if (!p)
        return CAIRN_ENOMEM;
    *buf = p;
    *cap = nc;
    return 0;
}

static int level_add(cairn_bbolt_writer_t *w, int li, uint32_t flags, const uint8_t *k, size_t kn, const uint8_t *v,
                     size_t vn, uint64_t pgid);

/* Writes level li's staged elements as one node (leaf for level 0, branch above) and hands
 * its first key and page to the level above. */
static int level_flush(cairn_bbolt_writer_t *w, int li)
{
    level_t *l = &w->lv[li];
    if (l->count == 0)
        return 0;
    size_t npages = (l->page_bytes + PS - 1) / PS;
    int rc = grow(&w->page, &w->page_cap, npages * PS);
    if (rc)
        return rc;
    uint8_t *pg = w->page;
    memset(pg, 0, npages * PS);
    uint64_t id = w->next_pgid;
    cairn_put_le64(pg, id);
    cairn_put_le16(pg + 8, li == 0 ? F_LEAF : F_BRANCH);
    cairn_put_le16(pg + 10, (uint16_t)l->count);
    cairn_put_le32(pg + 12, (uint32_t)(npages - 1));
    size_t data = HDR + (size_t)l->count * ELEM;
    const uint8_t *s = l->buf;
    const uint8_t *first_key = NULL;
    size_t first_len = 0;
    for (uint32_t i = 0; i < l->count; i++) {
        uint32_t fl = cairn_get_le32(s), kn = cairn_get_le32(s + 4);
        uint64_t vx = cairn_get_le64(s + 8);
        const uint8_t *k = s + 16;
        uint8_t *e = pg + HDR + (size_t)i * ELEM;
        size_t pos = data - (HDR + (size_t)i * ELEM);
        if (li == 0) {
            cairn_put_le32(e, fl);
            cairn_put_le32(e + 4, (uint32_t)pos);
            cairn_put_le32(e + 8, kn);
            cairn_put_le32(e + 12, (uint32_t)vx);
            memcpy(pg + data, k, kn);
            memcpy(pg + data + kn, k + kn, (size_t)vx);
            data += kn + (size_t)vx;
            s += 16 + kn + (size_t)vx;
        } else {
            cairn_put_le32(e, (uint32_t)pos);
            cairn_put_le32(e + 4, kn);
            cairn_put_le64(e + 8, vx);
            memcpy(pg + data, k, kn);
            data += kn;
            s += 16 + kn;
        }
        if (i == 0) {
            first_key = pg + HDR + (size_t)l->count * ELEM;
            first_len = kn;
        }
    }
    if ((rc = emit_pages(w, npages)) != 0)
        return rc;
    l->count = 0;
    l->len = 0;
    l->page_bytes = HDR;
    l->pages++;
    if (li + 1 >= MAX_LEVELS)
        return CAIRN_EINVAL; /* cannot happen with a fan-out of at least 2 */
    /* first_key points into w->page, which level_add of the level above may reuse only after
     * it copied the key into its own staging buffer */
    return level_add(w, li + 1, 0, first_key, first_len, NULL, 0, id);
}

static int level_add(cairn_bbolt_writer_t *w, int li, uint32_t flags, const uint8_t *k, size_t kn, const uint8_t *v,
                     size_t vn, uint64_t pgid)
{
    level_t *l = &w->lv[li];
    if (l->page_bytes == 0)
        l->page_bytes = HDR;
    size_t item = ELEM + kn + (li == 0 ? vn : 0);
    /* at least two elements per node, as bbolt keeps them (a branch of one child would not
     * make the tree any narrower) */
    if (l->count >= 2 && l->page_bytes + item > PS) {
        /* the key may live in w->page (a first key handed up): stage a copy first */
        uint8_t small[256];
        uint8_t *kc = NULL;
        const uint8_t *kp = k;
        if (k && k >= w->page && k < w->page + w->page_cap) {
            kc = kn <= sizeof small ? small : malloc(kn);
            if (!kc)
                return CAIRN_ENOMEM;
            memcpy(kc, k, kn);
            kp = kc;
        }
        int rc = level_flush(w, li);
        if (rc == 0)
            rc = level_add(w, li, flags, kp, kn, v, vn, pgid);
        if (kc && kc != small)
            free(kc);
        return rc;
    }
    size_t add = 16 + kn + (li == 0 ? vn : 0);
    int rc = grow(&l->buf, &l->cap, l->len + add);
    if (rc)
        return rc;
    uint8_t *s = l->buf + l->len;
    cairn_put_le32(s, flags);
    cairn_put_le32(s + 4, (uint32_t)kn);
    cairn_put_le64(s + 8, li == 0 ? (uint64_t)vn : pgid);
    memcpy(s + 16, k, kn);
    if (li == 0 && vn)
        memcpy(s + 16 + kn, v, vn);
    l->len += add;
    l->count++;
    l->page_bytes += item;
    return 0;
}

/* Closes the tree being built: *root gets its root page, 0 when it holds nothing. */
static int tree_finish(cairn_bbolt_writer_t *w, uint64_t *root)
{
    *root = 0;
    int rc = 0;
    if (w->lv[0].count == 0 && w->lv[0].pages == 0)
        goto reset;
    for (int li = 0; li < MAX_LEVELS - 1; li++) {
        if ((rc = level_flush(w, li)) != 0)
            return rc;
        level_t *up = &w->lv[li + 1];
        if (w->lv[li].pages == 1 && up->count == 1 && up->pages == 0) {
            *root = cairn_get_le64(up->buf + 8);
            break;
        }
    }
reset:
    for (int li = 0; li < MAX_LEVELS; li++) {
        w->lv[li].count = 0;
        w->lv[li].len = 0;
        w->lv[li].page_bytes = HDR;
        w->lv[li].pages = 0;
    }
    return rc;
}

static int order_check(cairn_bbolt_writer_t *w, const void *k, size_t kn)
{
    if (kn == 0 || kn > CAIRN_BBOLT_MAX_KEY)
        return CAIRN_EINVAL;
    if (w->have_last && cairn_bytes_cmp(w->last_key, w->last_len, k, kn) >= 0)
        return CAIRN_EINVAL;
    if (grow(&w->last_key, &w->last_cap, kn))
        return CAIRN_ENOMEM;
    memcpy(w->last_key, k, kn);
    w->last_len = kn;
    w->have_last = 1;
    return 0;
}

int cairn_bbolt_bucket_begin(cairn_bbolt_writer_t *w, const void *name, size_t name_len)
{
    if (w->err)
        return w->err;
    if (w->in_bucket || name_len == 0 || name_len > CAIRN_BBOLT_MAX_KEY)
        return CAIRN_EINVAL;
    if (w->nbuckets) {
        bucket_ent_t *b = &w->buckets[w->nbuckets - 1];
        if (cairn_bytes_cmp(b->name, b->name_len, name, name_len) >= 0)
            return CAIRN_EINVAL;
    }
    if (w->nbuckets == w->bcap) {
        size_t nc = w->bcap ? w->bcap * 2 : 16;
        bucket_ent_t *nb = realloc(w->buckets, nc * sizeof *nb);
        if (!nb)
            return CAIRN_ENOMEM;
        w->buckets = nb;
        w->bcap = nc;
    }
    bucket_ent_t *b = &w->buckets[w->nbuckets];
    memset(b, 0, sizeof *b);
    if (!(b->name = malloc(name_len)))
        return CAIRN_ENOMEM;
    memcpy(b->name, name, name_len);
    b->name_len = name_len;
    w->nbuckets++;
    w->in_bucket = 1;
    w->have_last = 0;
    return 0;
}

int cairn_bbolt_put(cairn_bbolt_writer_t *w, const void *key, size_t key_len, const void *value, size_t value_len)
{
    if (w->err)
        return w->err;
    if (!w->in_bucket || value_len > CAIRN_BBOLT_MAX_VALUE)
        return CAIRN_EINVAL;
    int rc = order_check(w, key, key_len);
    if (rc)
        return rc;
    rc = level_add(w, 0, 0, key, key_len, value, value_len, 0);
    return rc ? rc : w->err;
}

int cairn_bbolt_bucket_end(cairn_bbolt_writer_t *w)
{
    if (w->err)
        return w->err;
    if (!w->in_bucket)
        return CAIRN_EINVAL;
    uint64_t root;
    int rc = tree_finish(w, &root);
    if (rc)
        return rc;
    bucket_ent_t *b = &w->buckets[w->nbuckets - 1];
    memset(b->value, 0, sizeof b->value);
    cairn_put_le64(b->value, root);
    if (root) {
        b->value_len = 16;
    } else { /* empty: inline, a leaf page header with no elements */
        cairn_put_le16(b->value + 16 + 8, F_LEAF);
        b->value_len = 32;
    }
    w->in_bucket = 0;
    return 0;
}

int cairn_bbolt_writer_finish(cairn_bbolt_writer_t *w, uint64_t *bytes)
{
    if (w->err)
        return w->err;
    if (w->in_bucket)
        return CAIRN_EINVAL;
    int rc = 0;
    for (size_t i = 0; i < w->nbuckets && rc == 0; i++) {
        bucket_ent_t *b = &w->buckets[i];
        rc = level_add(w, 0, BUCKET_LEAF, b->name, b->name_len, b->value, b->value_len, 0);
    }
    uint64_t root = 0;
    if (rc || (rc = tree_finish(w, &root)) != 0)
        return rc;
    if (root == 0) { /* no bucket at all: the root is one empty leaf page */
        if ((rc = grow(&w->page, &w->page_cap, PS)) != 0)
            return rc;
        memset(w->page, 0, PS);
        root = w->next_pgid;
        cairn_put_le64(w->page, root);
        cairn_put_le16(w->page + 8, F_LEAF);
        if ((rc = emit_pages(w, 1)) != 0)
            return rc;
    }
    if ((rc = wflush(w)) != 0)
        return rc;
    /* pages 0, 1 (meta) and 2 (freelist) */
    uint8_t *hd = calloc(3, PS);
    if (!hd)
        return CAIRN_ENOMEM;
    for (unsigned p = 0; p < 2; p++) {
        uint8_t *pg = hd + p * PS;
        cairn_put_le64(pg, p);
        cairn_put_le16(pg + 8, F_META);
        uint8_t *m = pg + HDR;
        cairn_put_le32(m, MAGIC);
        cairn_put_le32(m + 4, VERSION);
        cairn_put_le32(m + 8, PS);
        cairn_put_le64(m + 16, root);
        cairn_put_le64(m + 32, 2);
        cairn_put_le64(m + 40, w->next_pgid);
        cairn_put_le64(m + 48, p); /* txid = page, as bbolt's init writes them */
        cairn_put_le64(m + 56, fnv1a64(m, 56));
    }
    cairn_put_le64(hd + 2 * PS, 2);
    cairn_put_le16(hd + 2 * PS + 8, F_FREELIST);
    rc = pwrite_all(w->fd, hd, 3 * PS, 0);
    free(hd);
    if (rc)
        return w->err = rc;
    if (bytes)
        *bytes = w->next_pgid * PS;
    return 0;
}

/* ==== reading ============================================================================ */

struct cairn_bbolt {
    int fd;
    const uint8_t *map;
    size_t map_len;
    uint32_t ps;
    uint64_t hwm; /* pages */
    uint64_t root;
    char why[256];
};

static int bad(cairn_bbolt_t *db, const char *fmt, unsigned long long a, unsigned long long b)
{
    snprintf(db->why, sizeof db->why, fmt, a, b);
    return CAIRN_ECORRUPT;
}

const char *cairn_bbolt_error(const cairn_bbolt_t *db) { return db->why; }
uint32_t cairn_bbolt_page_size(const cairn_bbolt_t *db) { return db->ps; }
uint64_t cairn_bbolt_size(const cairn_bbolt_t *db) { return db->hwm * db->ps; }

/* A meta at byte off, valid: 1 and its fields; 0 otherwise. */
static int meta_ok(const uint8_t *map, size_t len, size_t off, uint32_t *ps, uint64_t *root, uint64_t *hwm,
                   uint64_t *txid)
{
    if (off + HDR + 64 > len)
        return 0;
    const uint8_t *m = map + off + HDR;
    if (!(cairn_get_le16(map + off + 8) & F_META) || cairn_get_le32(m) != MAGIC || cairn_get_le32(m + 4) != VERSION ||
        cairn_get_le64(m + 56) != fnv1a64(m, 56))
        return 0;
    uint32_t p = cairn_get_le32(m + 8);
    if (p < 512 || p > 65536 || (p & (p - 1)))
        return 0;
    *ps = p;
    *root = cairn_get_le64(m + 16);
    *hwm = cairn_get_le64(m + 40);
    *txid = cairn_get_le64(m + 48);
    return 1;
}

cairn_bbolt_t *cairn_bbolt_open(const char *path, uint64_t db_bytes, int *err, char *errbuf, size_t errlen)
{
    int e = 0;
    cairn_bbolt_t *db = calloc(1, sizeof *db);
    if (!db) {
        e = CAIRN_ENOMEM;
        goto fail;
    }
    db->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (db->fd < 0 || fstat(db->fd, &st) != 0) {
        e = errno == ENOENT ? CAIRN_ENOTFOUND : CAIRN_EIO;
        cairn_errbuf_set(errbuf, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    db->map_len = (size_t)st.st_size;
    if (db_bytes && db_bytes < db->map_len)
        db->map_len = (size_t)db_bytes;
    if (db->map_len < 2 * 512) {
        e = CAIRN_ECORRUPT;
        cairn_errbuf_set(errbuf, errlen, "%s: %zu bytes is too small to be a bbolt database", path, db->map_len);
        goto fail;
    }
    void *mp = mmap(NULL, db->map_len, PROT_READ, MAP_SHARED, db->fd, 0);
    if (mp == MAP_FAILED) {
        e = CAIRN_EIO;
        cairn_errbuf_set(errbuf, errlen, "%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    db->map = mp;
    uint32_t ps0 = 0, ps1 = 0;
    uint64_t r0 = 0, r1 = 0, h0 = 0, h1 = 0, t0 = 0, t1 = 0;
    int ok0 = meta_ok(db->map, db->map_len, 0, &ps0, &r0, &h0, &t0);
    /* the second meta is one page further: the first meta's page size, or bbolt's default */
    int ok1 = meta_ok(db->map, db->map_len, ok0 ? ps0 : PS, &ps1, &r1, &h1, &t1);
    if (!ok0 && !ok1) {
        e = CAIRN_ECORRUPT;
        cairn_errbuf_set(errbuf, errlen, "%s: not a bbolt database (no valid meta page: magic, version or checksum)",
                         path);
        goto fail;
    }
    int use1 = ok1 && (!ok0 || t1 > t0);
    db->ps = use1 ? ps1 : ps0;
    db->root = use1 ? r1 : r0;
    db->hwm = use1 ? h1 : h0;
    if (db->hwm < 3 || db->hwm > db->map_len / db->ps) {
        e = CAIRN_ECORRUPT;
        cairn_errbuf_set(errbuf, errlen, "%s: the meta says %llu pages of %u bytes but the file has %zu bytes", path,
                         (unsigned long long)db->hwm, db->ps, db->map_len);
        goto fail;
    }
    if (err)
        *err = 0;
    return db;
fail:
    if (err)
        *err = e ? e : CAIRN_EIO;
    cairn_bbolt_close(&db);
    return NULL;
}

void cairn_bbolt_close(cairn_bbolt_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_bbolt_t *db = *self_p;
    if (db->map)
        munmap((void *)db->map, db->map_len);
    if (db->fd >= 0)
        close(db->fd);
    free(db);
    *self_p = NULL;
}

/* A node: its bytes (the page or an inline bucket's value) and their extent. */
typedef struct {
    const uint8_t *p;
    size_t len;
} node_t;

/* *left: the pages a walk may still visit. In a valid file every page belongs to one node at
 * most, so a walk from a root visits fewer than hwm pages; more means pages shared by several
 * branches (a loop or a DAG), whose walk could take 2^depth steps. */
static int page_node(cairn_bbolt_t *db, uint64_t id, node_t *n, uint64_t *left)
{
    if (id < 2 || id >= db->hwm)
        return bad(db, "page %llu is out of bounds (high-water mark %llu)", (unsigned long long)id,
                   (unsigned long long)db->hwm);
    const uint8_t *p = db->map + id * db->ps;
    if (cairn_get_le64(p) != id)
        return bad(db, "page %llu says it is page %llu", (unsigned long long)id, (unsigned long long)cairn_get_le64(p));
    uint64_t span = 1 + (uint64_t)cairn_get_le32(p + 12);
    if (span > db->hwm - id)
        return bad(db, "page %llu overflows past the end (%llu pages)", (unsigned long long)id,
                   (unsigned long long)span);
    if (span > *left)
        return bad(db, "page %llu is reached more than once (a walk past all %llu pages of the file)",
                   (unsigned long long)id, (unsigned long long)db->hwm);
    *left -= span;
    n->p = p;
    n->len = (size_t)(span * db->ps);
    return 0;
}

static int walk_leaf(cairn_bbolt_t *db, node_t n, cairn_bbolt_fn fn, void *arg, uint32_t want_flags)
{
    uint16_t count = cairn_get_le16(n.p + 10);
    if (HDR + (size_t)count * ELEM > n.len)
        return bad(db, "leaf with %llu elements does not fit its %llu bytes", count, (unsigned long long)n.len);
    for (uint16_t i = 0; i < count; i++) {
        const uint8_t *e = n.p + HDR + (size_t)i * ELEM;
        uint32_t fl = cairn_get_le32(e);
        size_t at = HDR + (size_t)i * ELEM + cairn_get_le32(e + 4);
        size_t kn = cairn_get_le32(e + 8), vn = cairn_get_le32(e + 12);
        if (at > n.len || kn > n.len - at || vn > n.len - at - kn)
            return bad(db, "leaf element %llu points outside its node (%llu bytes)", i, (unsigned long long)n.len);
        if ((fl & BUCKET_LEAF) != want_flags)
            return bad(db, "leaf element %llu has flags %llu where a bucket/value was expected", i, fl);
        int rc = fn(arg, n.p + at, kn, n.p + at + kn, vn);
        if (rc)
            return rc;
    }
    return 0;
}

static int walk_any(cairn_bbolt_t *db, node_t n, int depth, cairn_bbolt_fn fn, void *arg, uint32_t want,
                    uint64_t *left)
{
    if (depth > MAX_DEPTH)
        return bad(db, "tree deeper than %llu levels (a loop?) at depth %llu", MAX_DEPTH, (unsigned long long)depth);
    if (n.len < HDR)
        return bad(db, "node of %llu bytes is shorter than a page header", (unsigned long long)n.len, 0);
    uint16_t flags = cairn_get_le16(n.p + 8);
    if (flags == F_LEAF)
        return walk_leaf(db, n, fn, arg, want);
    if (flags != F_BRANCH)
        return bad(db, "page %llu has type %llu where a branch or leaf was expected", cairn_get_le64(n.p), flags);
    uint16_t count = cairn_get_le16(n.p + 10);
    if (HDR + (size_t)count * ELEM > n.len)
        return bad(db, "branch with %llu elements does not fit its %llu bytes", count, (unsigned long long)n.len);
    for (uint16_t i = 0; i < count; i++) {
        const uint8_t *e = n.p + HDR + (size_t)i * ELEM;
        node_t c;
        int rc = page_node(db, cairn_get_le64(e + 8), &c, left);
        if (rc == 0)
            rc = walk_any(db, c, depth + 1, fn, arg, want, left);
        if (rc)
            return rc;
    }
    return 0;
}

typedef struct {
    cairn_bbolt_t *db;
    const uint8_t *name;
    size_t name_len;
    cairn_bbolt_fn fn;
    void *arg;
    int found;
    uint64_t left; /* pages the walk may still visit (page_node) */
} find_t;

static int bucket_tree(cairn_bbolt_t *db, const uint8_t *v, size_t vn, node_t *n, uint64_t *left)
{
    if (vn < 16)
        return bad(db, "bucket value of %llu bytes is shorter than a bucket header", (unsigned long long)vn, 0);
    uint64_t root = cairn_get_le64(v);
    if (root == 0) { /* inline: the page follows the header inside the value */
        n->p = v + 16;
        n->len = vn - 16;
        if (n->len < HDR || cairn_get_le16(n->p + 8) != F_LEAF)
            return bad(db, "inline bucket is not a leaf (%llu bytes)", (unsigned long long)n->len, 0);
        return 0;
    }
    return page_node(db, root, n, left);
}

static int on_bucket(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    find_t *f = arg;
    if (f->name && cairn_bytes_cmp(k, kn, f->name, f->name_len) != 0)
        return 0;
    if (!f->name)
        return f->fn(f->arg, k, kn, NULL, 0);
    node_t n;
    int rc = bucket_tree(f->db, v, vn, &n, &f->left);
    if (rc)
        return rc;
    f->found = 1;
    return walk_any(f->db, n, 0, f->fn, f->arg, 0, &f->left);
}

static int root_walk(cairn_bbolt_t *db, find_t *f)
{
    node_t r;
    f->left = db->hwm;
    int rc = page_node(db, db->root, &r, &f->left);
    if (rc)
        return rc;
    return walk_any(db, r, 0, on_bucket, f, BUCKET_LEAF, &f->left);
}

int cairn_bbolt_buckets(cairn_bbolt_t *db, cairn_bbolt_fn fn, void *arg)
{
    find_t f = {db, NULL, 0, fn, arg, 0, 0};
    return root_walk(db, &f);
}

int cairn_bbolt_foreach(cairn_bbolt_t *db, const void *name, size_t name_len, cairn_bbolt_fn fn, void *arg)
{
    find_t f = {db, name, name_len, fn, arg, 0, 0};
    int rc = root_walk(db, &f);
    if (rc == 0 && !f.found)
        return CAIRN_ENOTFOUND;
    return rc;
}
