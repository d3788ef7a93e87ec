/* Unit tests for the bbolt writer and reader (shared/cairn_bbolt.c). Offsets below follow the
 * format comment at the top of cairn_bbolt.c: 16-byte page header (id u64, flags u16, count
 * u16, overflow u32), meta at byte 16 of pages 0 and 1 (checksum FNV-1a 64 at meta byte 56),
 * 16-byte leaf elements (flags, pos, ksize, vsize) and branch elements (pos, ksize, pgid).
 *
 * The files the writer makes are also checked by an independent walker written here, that
 * asserts what bbolt's tx.Check and its cursors rely on: every page below the high-water mark
 * belongs to exactly one node, keys ascend inside a node and across it, a branch key is the
 * first key under its child and every leaf of a tree is at the same depth.
 *
 * Damaged-file tests must end with 0 or an error, never a crash, hang or out-of-bounds read
 * (run them under ASan/UBSan); the random ones print their seed (CAIRN_TEST_SEED=n repeats
 * a run). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tmpdir.h"
#include "cairn_bbolt.h"
#include "cairn_err.h"

#define PS CAIRN_BBOLT_PAGE_SIZE

CAIRN_TEST_DIR_FIXTURE("bbolt")

TestSuite(bbolt, .init = mkdir_tmp, .fini = rm_tmp, .timeout = 60);

/* ---- seeded PRNG (splitmix64) --------------------------------------------------------- */

static uint64_t g_rng;

static uint64_t rnd(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t seed_rng(const char *test)
{
    const char *s = getenv("CAIRN_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    g_rng = seed;
    fprintf(stderr, "%s: seed %llu (CAIRN_TEST_SEED=%llu repeats it)\n", test, (unsigned long long)seed,
            (unsigned long long)seed);
    return seed;
}

/* ---- little-endian helpers and bbolt's meta checksum ------------------------------------ */

static uint16_t g16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t g32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t g64(const uint8_t *p) { return (uint64_t)g32(p) | (uint64_t)g32(p + 4) << 32; }
static void p16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void p32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void p64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Recomputes the checksum of the meta on page pg of a file image. */
static void meta_resum(uint8_t *img, unsigned pg)
{
    uint8_t *m = img + (size_t)pg * PS + 16;
    p64(m + 56, fnv1a64(m, 56));
}

/* ---- files ------------------------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void spill(const char *path, const uint8_t *b, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    size_t done = 0;
    while (done < n) {
        ssize_t k = write(fd, b + done, n - done);
        cr_assert_gt(k, 0);
        done += (size_t)k;
    }
    close(fd);
}

/* ---- a model: buckets of pairs ------------------------------------------------------------ */

typedef struct {
    uint8_t *k, *v;
    size_t kn, vn;
} pair_t;

typedef struct {
    uint8_t *name;
    size_t name_len;
    pair_t *p;
    size_t n, cap;
} mbucket_t;

typedef struct {
    mbucket_t *b;
    size_t n, cap;
} model_t;

static mbucket_t *m_bucket(model_t *m, const void *name, size_t len)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->b = realloc(m->b, m->cap * sizeof *m->b);
        cr_assert_not_null(m->b);
    }
    mbucket_t *b = &m->b[m->n++];
    memset(b, 0, sizeof *b);
    b->name = malloc(len);
    memcpy(b->name, name, len);
    b->name_len = len;
    return b;
}

static void m_put(mbucket_t *b, const void *k, size_t kn, const void *v, size_t vn)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 16;
        b->p = realloc(b->p, b->cap * sizeof *b->p);
        cr_assert_not_null(b->p);
    }
    pair_t *p = &b->p[b->n++];
    p->k = malloc(kn ? kn : 1);
    p->v = malloc(vn ? vn : 1);
    cr_assert(p->k && p->v);
    memcpy(p->k, k, kn);
    if (vn)
        memcpy(p->v, v, vn);
    p->kn = kn;
    p->vn = vn;
}

/* A pair whose bytes are a function of (seed, i, len) so they can be checked cheaply. */
static void fill(uint8_t *d, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        d[i] = (uint8_t)x;
    }
}

static void m_free(model_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        for (size_t j = 0; j < m->b[i].n; j++)
            free(m->b[i].p[j].k), free(m->b[i].p[j].v);
        free(m->b[i].p);
        free(m->b[i].name);
    }
    free(m->b);
    memset(m, 0, sizeof *m);
}

/* Writes the model to path; returns the size finish reported. */
static uint64_t m_write(const model_t *m, const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    cairn_bbolt_writer_t *w = cairn_bbolt_writer_new(fd);
    cr_assert_not_null(w);
    for (size_t i = 0; i < m->n; i++) {
        const mbucket_t *b = &m->b[i];
        cr_assert_eq(cairn_bbolt_bucket_begin(w, b->name, b->name_len), 0, "bucket %zu", i);
        for (size_t j = 0; j < b->n; j++)
            cr_assert_eq(cairn_bbolt_put(w, b->p[j].k, b->p[j].kn, b->p[j].v, b->p[j].vn), 0, "bucket %zu pair %zu",
                         i, j);
        cr_assert_eq(cairn_bbolt_bucket_end(w), 0);
    }
    uint64_t bytes = 0;
    cr_assert_eq(cairn_bbolt_writer_finish(w, &bytes), 0);
    cairn_bbolt_writer_destroy(&w);
    cr_assert_null(w);
    cairn_bbolt_writer_destroy(&w); /* idempotent */
    cr_assert_eq(fsync(fd), 0);
    close(fd);
    return bytes;
}

typedef struct {
    const mbucket_t *b;
    const model_t *m;
    size_t i;
    int bad;
} cmp_t;

static int cmp_pair(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    cmp_t *c = arg;
    if (c->i >= c->b->n) {
        cr_log_error("bucket %.*s: extra pair %zu", (int)(c->b->name_len > 40 ? 40 : c->b->name_len),
                     (const char *)c->b->name, c->i);
        c->bad = 1;
        return 1;
    }
    const pair_t *p = &c->b->p[c->i];
    if (kn != p->kn || vn != p->vn || memcmp(k, p->k, kn) != 0 || (vn && memcmp(v, p->v, vn) != 0)) {
        cr_log_error("bucket %.*s pair %zu differs (key %zu/%zu bytes, value %zu/%zu bytes)",
                     (int)(c->b->name_len > 40 ? 40 : c->b->name_len), (const char *)c->b->name, c->i, kn, p->kn, vn,
                     p->vn);
        c->bad = 1;
        return 1;
    }
    c->i++;
    return 0;
}

static int cmp_name(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    cmp_t *c = arg;
    cr_assert_null(v);
    cr_assert_eq(vn, 0);
    if (c->i >= c->m->n || kn != c->m->b[c->i].name_len || memcmp(k, c->m->b[c->i].name, kn) != 0) {
        cr_log_error("bucket name %zu differs", c->i);
        c->bad = 1;
        return 1;
    }
    c->i++;
    return 0;
}

/* Reads path back and compares it with the model, in order. */
static void m_check(const model_t *m, const char *path, uint64_t bytes)
{
    int err = 1;
    char eb[256] = "";
    cairn_bbolt_t *db = cairn_bbolt_open(path, 0, &err, eb, sizeof eb);
    cr_assert_not_null(db, "open: %d %s", err, eb);
    cr_assert_eq(err, 0);
    cr_assert_eq(cairn_bbolt_page_size(db), PS);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq((uint64_t)st.st_size % PS, 0, "file size %lld", (long long)st.st_size);
    cr_assert_eq((uint64_t)st.st_size, cairn_bbolt_size(db));
    cr_assert_eq(bytes, cairn_bbolt_size(db));
    cmp_t c = {.m = m};
    cr_assert_eq(cairn_bbolt_buckets(db, cmp_name, &c), 0, "%s", cairn_bbolt_error(db));
    cr_assert_eq(c.bad, 0);
    cr_assert_eq(c.i, m->n, "%zu buckets read, %zu written", c.i, m->n);
    for (size_t i = 0; i < m->n; i++) {
        cmp_t pc = {.b = &m->b[i], .m = m};
        int rc = cairn_bbolt_foreach(db, m->b[i].name, m->b[i].name_len, cmp_pair, &pc);
        cr_assert_eq(rc, 0, "bucket %zu: %d %s", i, rc, cairn_bbolt_error(db));
        cr_assert_eq(pc.bad, 0);
        cr_assert_eq(pc.i, m->b[i].n, "bucket %zu: %zu pairs read, %zu written", i, pc.i, m->b[i].n);
    }
    cr_assert_eq(cairn_bbolt_foreach(db, "no such bucket", 14, cmp_pair, NULL), CAIRN_ENOTFOUND);
    cr_assert_str_empty(cairn_bbolt_error(db));
    cairn_bbolt_close(&db);
    cr_assert_null(db);
    cairn_bbolt_close(&db); /* idempotent */
}

/* ---- an independent structural check of a written file ----------------------------------- */

typedef struct {
    const uint8_t *img;
    uint64_t hwm;
    uint8_t *owner; /* per page: 0 free, 1 used */
    int leaf_depth;
} chk_t;

static int bcmp_(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : an < bn ? -1 : an > bn ? 1 : 0;
}

static void chk_tree(chk_t *c, uint64_t id, int depth, const uint8_t **first, size_t *first_len, int is_root);

/* The elements of a leaf image (a page or an inline bucket): ascending keys; bucket values
 * (in the root tree) are followed into their trees. */
static void chk_leaf(chk_t *c, const uint8_t *pg, size_t len, int is_root, const uint8_t **first, size_t *first_len)
{
    uint16_t count = g16(pg + 10);
    cr_assert_leq(16 + (size_t)count * 16, len);
    const uint8_t *prev = NULL;
    size_t prev_len = 0;
    size_t data_end = 16 + (size_t)count * 16;
    for (uint16_t i = 0; i < count; i++) {
        const uint8_t *e = pg + 16 + (size_t)i * 16;
        size_t at = 16 + (size_t)i * 16 + g32(e + 4), kn = g32(e + 8), vn = g32(e + 12);
        cr_assert_leq(at + kn + vn, len);
        cr_assert_eq(at, data_end, "keys and values are packed in element order");
        data_end = at + kn + vn;
        cr_assert_eq(g32(e) & 1, is_root ? 1u : 0u);
        if (prev)
            cr_assert_lt(bcmp_(prev, prev_len, pg + at, kn), 0, "keys ascend in a leaf");
        prev = pg + at;
        prev_len = kn;
        if (i == 0 && first)
            *first = pg + at, *first_len = kn;
        if (is_root) {
            const uint8_t *v = pg + at + kn;
            cr_assert_geq(vn, 16);
            uint64_t root = g64(v);
            cr_assert_eq(g64(v + 8), 0, "sequence");
            if (root == 0) {
                cr_assert_eq(vn, 32, "the writer's inline buckets are empty");
                cr_assert_eq(g16(v + 16 + 8), 2);
                cr_assert_eq(g16(v + 16 + 10), 0);
            } else {
                cr_assert_eq(vn, 16);
                int save = c->leaf_depth;
                c->leaf_depth = -1;
                chk_tree(c, root, 0, NULL, NULL, 0);
                c->leaf_depth = save;
            }
        }
    }
}

static void chk_tree(chk_t *c, uint64_t id, int depth, const uint8_t **first, size_t *first_len, int is_root)
{
    cr_assert_lt(depth, 64);
    cr_assert(id >= 3 && id < c->hwm, "page %llu in bounds", (unsigned long long)id);
    const uint8_t *pg = c->img + id * PS;
    cr_assert_eq(g64(pg), id);
    uint64_t span = 1 + g32(pg + 12);
    cr_assert_leq(id + span, c->hwm);
    for (uint64_t i = id; i < id + span; i++) {
        cr_assert_eq(c->owner[i], 0, "page %llu is used twice", (unsigned long long)i);
        c->owner[i] = 1;
    }
    size_t len = span * PS;
    uint16_t flags = g16(pg + 8), count = g16(pg + 10);
    if (!(is_root && depth == 0)) /* only a database without buckets has an empty root leaf */
        cr_assert_gt(count, 0, "no empty node in a tree");
    if (span > 1) /* an overflowing node is one that did not fit a page: bbolt would split it */
        cr_assert(count <= 2, "a node of %u elements overflows", count);
    if (flags == 2) {
        if (c->leaf_depth < 0)
            c->leaf_depth = depth;
        cr_assert_eq(depth, c->leaf_depth, "every leaf at the same depth");
        chk_leaf(c, pg, len, is_root, first, first_len);
        return;
    }
    cr_assert_eq(flags, 1, "page %llu flags %u", (unsigned long long)id, flags);
    cr_assert_leq(16 + (size_t)count * 16, len);
    const uint8_t *prev = NULL;
    size_t prev_len = 0;
    for (uint16_t i = 0; i < count; i++) {
        const uint8_t *e = pg + 16 + (size_t)i * 16;
        size_t at = 16 + (size_t)i * 16 + g32(e), kn = g32(e + 4);
        cr_assert_leq(at + kn, len);
        if (prev)
            cr_assert_lt(bcmp_(prev, prev_len, pg + at, kn), 0, "keys ascend in a branch");
        prev = pg + at;
        prev_len = kn;
        const uint8_t *cf = NULL;
        size_t cfl = 0;
        chk_tree(c, g64(e + 8), depth + 1, &cf, &cfl, is_root);
        cr_assert_not_null(cf);
        cr_assert_eq(bcmp_(cf, cfl, pg + at, kn), 0, "a branch key is its child's first key");
        if (i == 0 && first)
            *first = pg + at, *first_len = kn;
    }
}

/* Returns the depth of the root tree's leaves (0: the root is a leaf). */
static int chk_file(const char *path)
{
    size_t n;
    uint8_t *img = slurp(path, &n);
    cr_assert_eq(n % PS, 0);
    cr_assert_geq(n, 4 * PS);
    for (unsigned p = 0; p < 2; p++) {
        const uint8_t *pg = img + p * PS, *m = pg + 16;
        cr_assert_eq(g64(pg), p);
        cr_assert_eq(g16(pg + 8), 4);
        cr_assert_eq(g32(m), 0xED0CDAEDu);
        cr_assert_eq(g32(m + 4), 2);
        cr_assert_eq(g32(m + 8), PS);
        cr_assert_eq(g64(m + 32), 2, "freelist page");
        cr_assert_eq(g64(m + 40) * PS, n, "high-water mark");
        cr_assert_eq(g64(m + 56), fnv1a64(m, 56));
    }
    cr_assert_eq(g64(img + 16 + 16), g64(img + PS + 16 + 16), "both metas have the same root");
    cr_assert_eq(g64(img + 2 * PS), 2);
    cr_assert_eq(g16(img + 2 * PS + 8), 0x10);
    cr_assert_eq(g16(img + 2 * PS + 10), 0, "empty freelist");
    chk_t c = {.img = img, .hwm = n / PS, .leaf_depth = -1};
    c.owner = calloc(c.hwm, 1);
    c.owner[0] = c.owner[1] = c.owner[2] = 1;
    chk_tree(&c, g64(img + 32), 0, NULL, NULL, 1);
    for (uint64_t i = 0; i < c.hwm; i++)
        cr_assert_eq(c.owner[i], 1, "page %llu is unreachable (bbolt's tx.Check would complain)",
                     (unsigned long long)i);
    int depth = c.leaf_depth;
    free(c.owner);
    free(img);
    return depth;
}

/* ---- round trips -------------------------------------------------------------------------- */

Test(bbolt, round_trip_every_shape)
{
    model_t m = {0};
    char k[64], v[64];
    /* names in bytewise order */
    m_bucket(&m, "a-empty", 7);
    mbucket_t *one = m_bucket(&m, "b-one", 5);
    m_put(one, "only", 4, "pair", 4);
    mbucket_t *big = m_bucket(&m, "c-200k", 6);
    for (int i = 0; i < 200000; i++) {
        int kn = snprintf(k, sizeof k, "key/%08d", i);
        int vn = snprintf(v, sizeof v, "v%d", i * 7);
        m_put(big, k, (size_t)kn, v, i % 97 == 0 ? 0 : (size_t)vn); /* some 0-byte values */
    }
    mbucket_t *ov = m_bucket(&m, "d-overflow", 10);
    static const size_t sizes[] = {0, 1, 4000, 4096, 5 * 1024, 100 * 1024, 2 * 1024 * 1024, 7, 3};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint8_t *b = malloc(sizes[i] + 1);
        fill(b, sizes[i], i + 1);
        int kn = snprintf(k, sizeof k, "v%02zu-%zu", i, sizes[i]);
        m_put(ov, k, (size_t)kn, b, sizes[i]);
        free(b);
    }
    mbucket_t *bk = m_bucket(&m, "e-bigkeys", 9);
    /* keys up to MAX_KEY bytes: 32 KiB keys make leaves and branches of two elements, each
     * overflowing, with a fan-out of 2 at every level */
    size_t kmax = CAIRN_BBOLT_MAX_KEY;
    uint8_t *kb = malloc(kmax);
    for (int i = 0; i < 40; i++) {
        size_t kn = i % 3 == 0 ? kmax : i % 3 == 1 ? kmax - 1 - (size_t)i : 5000 + (size_t)i;
        fill(kb, kn, 1000 + (uint64_t)i);
        kb[0] = (uint8_t)i; /* ascending */
        m_put(bk, kb, kn, kb, i % 2 ? 0 : 100);
    }
    /* a bucket with a 0x00 in its name, a key that is a prefix of the next, binary keys */
    mbucket_t *bin = m_bucket(&m, "f\0bin", 5);
    m_put(bin, "\0", 1, "zero", 4);
    m_put(bin, "\0\0", 2, "zero zero", 9);
    m_put(bin, "a", 1, "", 0);
    m_put(bin, "ab", 2, "x", 1);
    m_put(bin, "\xff", 1, "ff", 2);
    /* a bucket name of the maximum length, after every other */
    memset(kb, 'z', kmax);
    mbucket_t *lb = m_bucket(&m, kb, kmax);
    m_put(lb, "k", 1, "v", 1);
    free(kb);

    uint64_t bytes = m_write(&m, at("db"));
    m_check(&m, at("db"), bytes);
    chk_file(at("db"));
    m_free(&m);
}

Test(bbolt, big_keys_make_a_deep_tree)
{
    /* 64 keys of MAX_KEY bytes: 32 leaves, then 16, 8, 4, 2, 1 branches: 5 branch levels */
    model_t m = {0};
    mbucket_t *b = m_bucket(&m, "key", 3);
    uint8_t *kb = malloc(CAIRN_BBOLT_MAX_KEY);
    for (int i = 0; i < 64; i++) {
        memset(kb, 'k', CAIRN_BBOLT_MAX_KEY);
        kb[0] = (uint8_t)(i + 1);
        m_put(b, kb, CAIRN_BBOLT_MAX_KEY, "v", 1);
    }
    free(kb);
    uint64_t bytes = m_write(&m, at("db"));
    m_check(&m, at("db"), bytes);
    chk_file(at("db"));
    /* the bucket's tree: find its root and measure its depth */
    size_t n;
    uint8_t *img = slurp(at("db"), &n);
    const uint8_t *root = img + g64(img + 32) * PS;
    cr_assert_eq(g16(root + 8), 2);
    const uint8_t *e = root + 16;
    uint64_t broot = g64(root + 16 + g32(e + 4) + g32(e + 8));
    int depth = 0;
    for (const uint8_t *pg = img + broot * PS; g16(pg + 8) == 1; pg = img + g64(pg + 16 + 8) * PS) {
        cr_assert_leq(g16(pg + 10), 2, "fan-out of 2 with keys that fill pages");
        depth++;
    }
    cr_assert_eq(depth, 5, "32 leaves under branches of 2: 5 branch levels, got %d", depth);
    free(img);
    m_free(&m);
}

Test(bbolt, empty_file_and_empty_buckets)
{
    model_t m = {0};
    uint64_t bytes = m_write(&m, at("none"));
    cr_assert_eq(bytes, 4 * PS, "meta, meta, freelist, empty root leaf");
    m_check(&m, at("none"), bytes);
    chk_file(at("none"));
    /* only inline (empty) buckets */
    char name[16];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "bucket%04d", i);
        m_bucket(&m, name, strlen(name));
    }
    bytes = m_write(&m, at("empties"));
    m_check(&m, at("empties"), bytes);
    cr_assert_gt(chk_file(at("empties")), 0, "300 bucket entries make a root tree with a branch");
    m_free(&m);
}

Test(bbolt, many_buckets_with_pairs)
{
    /* many small non-inline buckets: the root tree is several pages, each bucket's tree one */
    model_t m = {0};
    char name[32], k[32];
    seed_rng("many_buckets_with_pairs");
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "bucket/%05d", i);
        mbucket_t *b = m_bucket(&m, name, strlen(name));
        int n = (int)(rnd() % 40);
        for (int j = 0; j < n; j++) {
            snprintf(k, sizeof k, "%06d", j);
            uint8_t v[300];
            size_t vn = rnd() % sizeof v;
            fill(v, vn, rnd());
            m_put(b, k, strlen(k), v, vn);
        }
    }
    uint64_t bytes = m_write(&m, at("db"));
    m_check(&m, at("db"), bytes);
    chk_file(at("db"));
    m_free(&m);
}

/* ---- the writer refuses bad input --------------------------------------------------------- */

Test(bbolt, writer_refuses_bad_input)
{
    int fd = open(at("db"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    cairn_bbolt_writer_t *w = cairn_bbolt_writer_new(fd);
    cr_assert_not_null(w);
    uint8_t *huge = calloc(1, CAIRN_BBOLT_MAX_KEY + 1);

    cr_assert_eq(cairn_bbolt_put(w, "k", 1, "v", 1), CAIRN_EINVAL, "put outside a bucket");
    cr_assert_eq(cairn_bbolt_bucket_end(w), CAIRN_EINVAL, "end outside a bucket");
    cr_assert_eq(cairn_bbolt_bucket_begin(w, "", 0), CAIRN_EINVAL, "empty bucket name");
    cr_assert_eq(cairn_bbolt_bucket_begin(w, huge, CAIRN_BBOLT_MAX_KEY + 1), CAIRN_EINVAL, "bucket name too long");

    cr_assert_eq(cairn_bbolt_bucket_begin(w, "m", 1), 0);
    cr_assert_eq(cairn_bbolt_bucket_begin(w, "n", 1), CAIRN_EINVAL, "bucket inside a bucket");
    cr_assert_eq(cairn_bbolt_writer_finish(w, NULL), CAIRN_EINVAL, "finish inside a bucket");
    cr_assert_eq(cairn_bbolt_put(w, "", 0, "v", 1), CAIRN_EINVAL, "empty key");
    cr_assert_eq(cairn_bbolt_put(w, huge, CAIRN_BBOLT_MAX_KEY + 1, "v", 1), CAIRN_EINVAL, "key too long");
    /* the value is not read: its length alone is refused */
    cr_assert_eq(cairn_bbolt_put(w, "k", 1, "v", (size_t)CAIRN_BBOLT_MAX_VALUE + 1), CAIRN_EINVAL, "value too long");
    cr_assert_eq(cairn_bbolt_put(w, "b", 1, "1", 1), 0);
    cr_assert_eq(cairn_bbolt_put(w, "b", 1, "2", 1), CAIRN_EINVAL, "duplicate key");
    cr_assert_eq(cairn_bbolt_put(w, "a", 1, "3", 1), CAIRN_EINVAL, "key out of order");
    cr_assert_eq(cairn_bbolt_put(w, "ba", 2, "4", 1), 0);
    cr_assert_eq(cairn_bbolt_put(w, "b", 1, "5", 1), CAIRN_EINVAL, "a prefix after the longer key");
    cr_assert_eq(cairn_bbolt_put(w, huge, CAIRN_BBOLT_MAX_KEY, "", 0), CAIRN_EINVAL, "\\0... sorts before \"ba\"");
    cr_assert_eq(cairn_bbolt_put(w, "c", 1, "", 0), 0);
    cr_assert_eq(cairn_bbolt_bucket_end(w), 0);

    cr_assert_eq(cairn_bbolt_bucket_begin(w, "m", 1), CAIRN_EINVAL, "duplicate bucket");
    cr_assert_eq(cairn_bbolt_bucket_begin(w, "l", 1), CAIRN_EINVAL, "bucket out of order");
    cr_assert_eq(cairn_bbolt_bucket_begin(w, "\0", 1), CAIRN_EINVAL, "bucket out of order");
    cr_assert_eq(cairn_bbolt_bucket_begin(w, "ma", 2), 0);
    /* a new bucket's keys start over: "a" is fine again */
    cr_assert_eq(cairn_bbolt_put(w, "a", 1, "x", 1), 0);
    cr_assert_eq(cairn_bbolt_bucket_end(w), 0);
    cr_assert_eq(cairn_bbolt_bucket_end(w), CAIRN_EINVAL, "end twice");
    uint64_t bytes = 0;
    cr_assert_eq(cairn_bbolt_writer_finish(w, &bytes), 0);
    cairn_bbolt_writer_destroy(&w);
    close(fd);
    free(huge);

    /* the refused calls left nothing behind */
    model_t m = {0};
    mbucket_t *b = m_bucket(&m, "m", 1);
    m_put(b, "b", 1, "1", 1);
    m_put(b, "ba", 2, "4", 1);
    m_put(b, "c", 1, "", 0);
    b = m_bucket(&m, "ma", 2);
    m_put(b, "a", 1, "x", 1);
    m_check(&m, at("db"), bytes);
    m_free(&m);
    chk_file(at("db"));
}

/* ---- damaged files ------------------------------------------------------------------------ */

/* A small file with every kind of node: an inline bucket, a bucket of one leaf, one of ten
 * leaves under a branch, one with an overflowing leaf. */
static void small_model(model_t *m)
{
    char k[32];
    uint8_t v[200];
    m_bucket(m, "a", 1);
    mbucket_t *b = m_bucket(m, "b", 1);
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof k, "b%05d", i);
        fill(v, 100, (uint64_t)i);
        m_put(b, k, strlen(k), v, 100);
    }
    b = m_bucket(m, "c", 1);
    uint8_t *big = malloc(10000);
    fill(big, 10000, 77);
    m_put(b, "big", 3, big, 10000);
    m_put(b, "small", 5, "s", 1);
    free(big);
    b = m_bucket(m, "d", 1);
    m_put(b, "x", 1, "1", 1);
    m_put(b, "y", 1, "", 0);
    m_put(b, "z", 1, "3", 1);
}

static uint8_t *small_file(const char *path, size_t *n)
{
    model_t m = {0};
    small_model(&m);
    m_write(&m, path);
    m_free(&m);
    return slurp(path, n);
}

/* Reads everything a reader can reach: 0 or the first error. Never asserts on content. */
typedef struct {
    uint8_t names[16][64];
    size_t lens[16];
    int n;
} names_t;

static int name_fn(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    (void)v, (void)vn;
    names_t *ns = arg;
    if (ns->n < 16) {
        size_t l = kn < 64 ? kn : 64;
        memcpy(ns->names[ns->n], k, l);
        ns->lens[ns->n++] = l;
    }
    return 0;
}

static uint64_t g_sink;

static int touch_fn(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    (void)arg;
    /* read every byte handed out, so ASan sees an out-of-bounds pointer */
    for (size_t i = 0; i < kn; i++)
        g_sink += k[i];
    for (size_t i = 0; i < vn; i++)
        g_sink += v[i];
    return 0;
}

static int read_all(const char *path, uint64_t db_bytes, int *opened)
{
    int err = 0;
    char eb[256] = "";
    cairn_bbolt_t *db = cairn_bbolt_open(path, db_bytes, &err, eb, sizeof eb);
    if (opened)
        *opened = db != NULL;
    if (!db) {
        cr_assert_lt(err, 0, "a failed open gives an error");
        cr_assert_str_not_empty(eb, "a failed open says why");
        return err;
    }
    names_t ns = {0};
    int rc = cairn_bbolt_buckets(db, name_fn, &ns);
    for (int i = 0; rc == 0 && i < ns.n; i++) {
        rc = cairn_bbolt_foreach(db, ns.names[i], ns.lens[i], touch_fn, NULL);
        if (rc == CAIRN_ENOTFOUND) /* a name cut at 64 bytes */
            rc = 0;
    }
    if (rc == CAIRN_ECORRUPT)
        cr_assert_str_not_empty(cairn_bbolt_error(db), "a corrupt page says why");
    cairn_bbolt_close(&db);
    return rc;
}

/* The page ids of the nodes of a written file (by scanning headers, skipping overflow). */
typedef struct {
    uint64_t id[64];
    int n;
} pages_t;

static void find_pages(const uint8_t *img, size_t n, uint16_t flags, pages_t *out)
{
    out->n = 0;
    for (uint64_t i = 3; i < n / PS;) {
        const uint8_t *pg = img + i * PS;
        cr_assert_eq(g64(pg), i);
        if (g16(pg + 8) == flags && out->n < 64)
            out->id[out->n++] = i;
        i += 1 + g32(pg + 12);
    }
}

/* The page of bucket name's tree root (0 for an inline bucket). */
static uint64_t bucket_root(const uint8_t *img, const char *name)
{
    const uint8_t *root = img + g64(img + 32) * PS;
    cr_assert_eq(g16(root + 8), 2, "the small file's root is one leaf");
    for (uint16_t i = 0; i < g16(root + 10); i++) {
        const uint8_t *e = root + 16 + i * 16;
        const uint8_t *k = e + g32(e + 4);
        if (g32(e + 8) == strlen(name) && memcmp(k, name, strlen(name)) == 0)
            return g64(k + g32(e + 8));
    }
    cr_assert_fail("no bucket %s", name);
    return 0;
}

/* The byte offset of bucket name's element in the root leaf. */
static size_t bucket_elem(const uint8_t *img, const char *name)
{
    uint64_t rid = g64(img + 32);
    const uint8_t *root = img + rid * PS;
    for (uint16_t i = 0; i < g16(root + 10); i++) {
        const uint8_t *e = root + 16 + i * 16;
        if (g32(e + 8) == strlen(name) && memcmp(e + g32(e + 4), name, strlen(name)) == 0)
            return (size_t)(e - img);
    }
    cr_assert_fail("no bucket %s", name);
    return 0;
}

/* Writes a modified copy of img and expects reading it to fail with CAIRN_ECORRUPT. */
static void expect_corrupt(const uint8_t *img, size_t n, void (*mod)(uint8_t *img, size_t n), const char *what)
{
    uint8_t *c = malloc(n);
    memcpy(c, img, n);
    mod(c, n);
    spill(at("bad"), c, n);
    free(c);
    int rc = read_all(at("bad"), 0, NULL);
    cr_assert_eq(rc, CAIRN_ECORRUPT, "%s: got %d (%s)", what, rc, cairn_strerror(rc));
}

static void mod_both_sums(uint8_t *img, size_t n)
{
    (void)n;
    img[16 + 56] ^= 1;
    img[PS + 16 + 63] ^= 0x80;
}
static void mod_both_magic(uint8_t *img, size_t n)
{
    (void)n;
    for (unsigned p = 0; p < 2; p++) {
        img[p * PS + 16] ^= 1;
        meta_resum(img, p);
    }
}
static void mod_both_version(uint8_t *img, size_t n)
{
    (void)n;
    for (unsigned p = 0; p < 2; p++) {
        p32(img + p * PS + 16 + 4, 1);
        meta_resum(img, p);
    }
}
static void mod_both_pagesize(uint8_t *img, size_t n)
{
    (void)n;
    for (unsigned p = 0; p < 2; p++) {
        p32(img + p * PS + 16 + 8, 4000);
        meta_resum(img, p);
    }
}
static void mod_both_flags(uint8_t *img, size_t n)
{
    (void)n;
    p16(img + 8, 0x02);
    p16(img + PS + 8, 0x10);
}
static void mod_hwm_past_end(uint8_t *img, size_t n)
{
    for (unsigned p = 0; p < 2; p++) {
        p64(img + p * PS + 16 + 40, n / PS + 1);
        meta_resum(img, p);
    }
}
static void mod_hwm_huge(uint8_t *img, size_t n)
{
    (void)n;
    for (unsigned p = 0; p < 2; p++) {
        p64(img + p * PS + 16 + 40, UINT64_MAX / 2);
        meta_resum(img, p);
    }
}

Test(bbolt, meta_pages_checked)
{
    size_t n;
    uint8_t *img = small_file(at("db"), &n);
    expect_corrupt(img, n, mod_both_sums, "both checksums broken");
    expect_corrupt(img, n, mod_both_magic, "both magics wrong");
    expect_corrupt(img, n, mod_both_version, "both versions wrong");
    expect_corrupt(img, n, mod_both_pagesize, "page size not a power of two");
    expect_corrupt(img, n, mod_both_flags, "meta pages without the meta flag");
    expect_corrupt(img, n, mod_hwm_past_end, "high-water mark past the end");
    expect_corrupt(img, n, mod_hwm_huge, "huge high-water mark");

    /* one broken meta: the other one is used (bbolt's rule), and the data reads fine */
    model_t m = {0};
    small_model(&m);
    for (unsigned p = 0; p < 2; p++) {
        uint8_t *c = malloc(n);
        memcpy(c, img, n);
        c[p * PS + 16 + 20] ^= 0x40; /* in the root field: checksum mismatch */
        spill(at("one"), c, n);
        free(c);
        m_check(&m, at("one"), n);
    }
    m_free(&m);

    /* the valid meta with the higher txid wins: point the newer one at the freelist page */
    for (unsigned p = 0; p < 2; p++) {
        uint8_t *c = malloc(n);
        memcpy(c, img, n);
        p64(c + p * PS + 16 + 48, 10); /* txid */
        p64(c + p * PS + 16 + 16, 2);  /* root = the freelist */
        meta_resum(c, p);
        spill(at("newer"), c, n);
        cr_assert_eq(read_all(at("newer"), 0, NULL), CAIRN_ECORRUPT, "meta %u is newer and is used", p);
        /* the same change with a lower txid than the other meta is ignored */
        p64(c + p * PS + 16 + 48, 0);
        p64(c + (1 - p) * PS + 16 + 48, 5);
        meta_resum(c, 1 - p);
        meta_resum(c, p);
        spill(at("older"), c, n);
        cr_assert_eq(read_all(at("older"), 0, NULL), 0, "meta %u is older and is not used", p);
        free(c);
    }
    free(img);
}

Test(bbolt, truncated_files_refused)
{
    size_t n;
    uint8_t *img = small_file(at("db"), &n);
    cr_assert_gt(n / PS, 8);
    size_t odd[] = {0, 1, 15, 16, 100, 511, 512, 1023, 1024, 1025, PS - 1, PS + 1, PS + 16 + 63, PS + 16 + 64,
                    2 * PS + 17, 3 * PS - 1, n - PS + 1, n - 1};
    size_t nsizes = n / PS + sizeof odd / sizeof *odd;
    for (size_t i = 0; i < nsizes; i++) {
        size_t len = i < n / PS ? i * PS : odd[i - n / PS];
        /* a shorter file, and the whole file with a shorter database length */
        spill(at("cut"), img, len);
        int opened = 1;
        int rc = read_all(at("cut"), 0, &opened);
        cr_assert_eq(opened, 0, "%zu of %zu bytes opened", len, n);
        cr_assert_eq(rc, CAIRN_ECORRUPT, "%zu bytes: %d", len, rc);
        if (len) {
            rc = read_all(at("db"), len, &opened);
            cr_assert_eq(opened, 0, "db_bytes %zu of %zu opened", len, n);
            cr_assert_eq(rc, CAIRN_ECORRUPT);
        }
    }
    /* a database followed by something else (a snapshot's SHA-256): db_bytes says where it
     * ends */
    uint8_t *longer = malloc(n + 32);
    memcpy(longer, img, n);
    memset(longer + n, 0xAB, 32);
    spill(at("sha"), longer, n + 32);
    model_t m = {0};
    small_model(&m);
    int err = 0;
    cairn_bbolt_t *db = cairn_bbolt_open(at("sha"), n, &err, NULL, 0);
    cr_assert_not_null(db);
    cr_assert_eq(cairn_bbolt_size(db), n);
    cairn_bbolt_close(&db);
    m_check(&m, at("db"), n);
    m_free(&m);
    free(longer);
    /* no file */
    err = 0;
    char eb[200] = "";
    cr_assert_null(cairn_bbolt_open(at("missing"), 0, &err, eb, sizeof eb));
    cr_assert_eq(err, CAIRN_ENOTFOUND);
    cr_assert_str_not_empty(eb);
    free(img);
}

static uint8_t *g_img; /* the pristine small file, for the modifiers below */
static size_t g_n;

static void mod_root_past_hwm(uint8_t *img, size_t n)
{
    for (unsigned p = 0; p < 2; p++) {
        p64(img + p * PS + 16 + 16, n / PS);
        meta_resum(img, p);
    }
}
static void mod_root_huge(uint8_t *img, size_t n)
{
    (void)n;
    for (unsigned p = 0; p < 2; p++) {
        p64(img + p * PS + 16 + 16, UINT64_MAX);
        meta_resum(img, p);
    }
}
static void mod_root_meta(uint8_t *img, size_t n)
{
    (void)n;
    for (unsigned p = 0; p < 2; p++) {
        p64(img + p * PS + 16 + 16, 1);
        meta_resum(img, p);
    }
}
static void mod_bucket_root_past_hwm(uint8_t *img, size_t n)
{
    size_t e = bucket_elem(img, "b");
    uint8_t *v = img + e + g32(img + e + 4) + g32(img + e + 8);
    p64(v, n / PS + 1000);
}
static void mod_bucket_root_freelist(uint8_t *img, size_t n)
{
    (void)n;
    size_t e = bucket_elem(img, "d");
    uint8_t *v = img + e + g32(img + e + 4) + g32(img + e + 8);
    p64(v, 2);
}
static void mod_branch_child_past_hwm(uint8_t *img, size_t n)
{
    pages_t br;
    find_pages(img, n, 1, &br);
    cr_assert_eq(br.n, 1);
    uint8_t *pg = img + br.id[0] * PS;
    p64(pg + 16 + 16 * (g16(pg + 10) - 1) + 8, n / PS);
}
static void mod_branch_child_overflows(uint8_t *img, size_t n)
{
    pages_t br;
    find_pages(img, n, 1, &br);
    uint8_t *pg = img + br.id[0] * PS;
    uint64_t child = g64(pg + 16 + 8);
    p32(img + child * PS + 12, (uint32_t)(n / PS - child)); /* one page too many */
}
static void mod_overflow_huge(uint8_t *img, size_t n)
{
    uint64_t r = bucket_root(g_img, "c");
    (void)n;
    p32(img + r * PS + 12, UINT32_MAX);
}
static void mod_page_id_wrong(uint8_t *img, size_t n)
{
    (void)n;
    uint64_t r = bucket_root(g_img, "d");
    p64(img + r * PS, r + 1);
}
static void mod_page_type_freelist(uint8_t *img, size_t n)
{
    (void)n;
    uint64_t r = bucket_root(g_img, "d");
    p16(img + r * PS + 8, 0x10);
}

Test(bbolt, page_ids_out_of_bounds_refused)
{
    g_img = small_file(at("db"), &g_n);
    cr_assert_eq(read_all(at("db"), 0, NULL), 0);
    expect_corrupt(g_img, g_n, mod_root_past_hwm, "root at the high-water mark");
    expect_corrupt(g_img, g_n, mod_root_huge, "root UINT64_MAX");
    expect_corrupt(g_img, g_n, mod_root_meta, "root on a meta page");
    expect_corrupt(g_img, g_n, mod_bucket_root_past_hwm, "bucket root past the high-water mark");
    expect_corrupt(g_img, g_n, mod_bucket_root_freelist, "bucket root on the freelist");
    expect_corrupt(g_img, g_n, mod_branch_child_past_hwm, "branch child past the high-water mark");
    expect_corrupt(g_img, g_n, mod_branch_child_overflows, "overflow past the high-water mark");
    expect_corrupt(g_img, g_n, mod_overflow_huge, "overflow UINT32_MAX");
    expect_corrupt(g_img, g_n, mod_page_id_wrong, "page that is not the page it says");
    expect_corrupt(g_img, g_n, mod_page_type_freelist, "a freelist where a node is expected");
    free(g_img);
}

/* Element-level damage: each modifier changes one field of one element. */
static int g_field, g_which; /* g_field: byte offset in the element; g_which: which node */
static uint32_t g_val;

static uint8_t *node_of(uint8_t *img, int which)
{
    switch (which) {
    case 0: return img + bucket_root(g_img, "d") * PS;  /* a leaf of one page */
    case 1: return img + bucket_root(g_img, "c") * PS;  /* an overflowing leaf */
    case 2: return img + g64(img + 32) * PS;            /* the root leaf (bucket elements) */
    default: {
        pages_t br;
        find_pages(img, g_n, 1, &br);
        return img + br.id[0] * PS; /* a branch */
    }
    }
}

static void mod_elem(uint8_t *img, size_t n)
{
    (void)n;
    uint8_t *pg = node_of(img, g_which);
    uint16_t count = g16(pg + 10);
    p32(pg + 16 + 16 * (size_t)(count - 1) + (size_t)g_field, g_val); /* the last element */
}

static void mod_count(uint8_t *img, size_t n)
{
    (void)n;
    p16(node_of(img, g_which) + 10, (uint16_t)g_val);
}

Test(bbolt, elements_outside_their_node_refused)
{
    g_img = small_file(at("db"), &g_n);
    /* leaves: pos (4), ksize (8), vsize (12) */
    for (g_which = 0; g_which < 3; g_which++) {
        uint8_t *pg = node_of(g_img, g_which);
        uint16_t count = g16(pg + 10);
        size_t len = (size_t)(1 + g32(pg + 12)) * PS;
        size_t epos = 16 + 16 * (size_t)(count - 1);
        const uint8_t *e = pg + epos;
        uint32_t pos = g32(e + 4), kn = g32(e + 8), vn = g32(e + 12);
        struct {
            int field;
            uint32_t val;
            const char *what;
        } cases[] = {
            {4, UINT32_MAX, "pos UINT32_MAX"},
            {4, (uint32_t)(len - epos), "pos at the node's end"},
            {4, (uint32_t)(len - epos - kn - vn + 1), "pos one byte too far"},
            {8, UINT32_MAX, "ksize UINT32_MAX"},
            {8, (uint32_t)(len - epos - pos - vn + 1), "ksize one byte too long"},
            {12, UINT32_MAX, "vsize UINT32_MAX"},
            {12, UINT32_MAX - kn, "vsize wrapping with ksize"},
            {12, (uint32_t)(len - epos - pos - kn + 1), "vsize one byte too long"},
        };
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            g_field = cases[i].field;
            g_val = cases[i].val;
            char what[100];
            snprintf(what, sizeof what, "node %d: %s", g_which, cases[i].what);
            expect_corrupt(g_img, g_n, mod_elem, what);
        }
        /* more elements than the node holds */
        g_val = (uint32_t)((len - 16) / 16 + 1);
        expect_corrupt(g_img, g_n, mod_count, "count past the node");
        g_val = 0xFFFF;
        expect_corrupt(g_img, g_n, mod_count, "count 0xFFFF");
        /* a value flagged as a bucket in a bucket, a plain value in the root */
        g_field = 0;
        g_val = g_which == 2 ? 0 : 1;
        expect_corrupt(g_img, g_n, mod_elem, "bucket flag where it does not belong");
    }
    /* a branch: count too large */
    g_which = 3;
    g_val = 300;
    expect_corrupt(g_img, g_n, mod_count, "branch count past the page");
    free(g_img);
}

static void mod_inline_bucket(uint8_t *img, size_t n)
{
    (void)n;
    size_t e = bucket_elem(img, "a");
    uint8_t *v = img + e + g32(img + e + 4) + g32(img + e + 8);
    cr_assert_eq(g64(v), 0, "bucket a is inline");
    switch (g_field) {
    case 0: p16(v + 16 + 10, (uint16_t)g_val); break;          /* count in a 16-byte page */
    case 1: p16(v + 16 + 8, 0x01); break;                      /* an inline branch */
    case 2: p32(img + e + 12, 16 + (uint32_t)g_val); break;    /* the value shorter */
    }
}

Test(bbolt, inline_bucket_damage_refused)
{
    g_img = small_file(at("db"), &g_n);
    g_field = 0, g_val = 1;
    expect_corrupt(g_img, g_n, mod_inline_bucket, "inline page with an element it has no room for");
    g_field = 1;
    expect_corrupt(g_img, g_n, mod_inline_bucket, "inline branch");
    for (g_val = 0; g_val < 16; g_val += 5) {
        g_field = 2;
        expect_corrupt(g_img, g_n, mod_inline_bucket, "inline value too short for a page header");
    }
    free(g_img);
}

static void mod_branch_self(uint8_t *img, size_t n)
{
    pages_t br;
    find_pages(img, n, 1, &br);
    uint8_t *pg = img + br.id[0] * PS;
    uint16_t count = g16(pg + 10);
    /* g_val elements point back at the branch itself */
    for (uint16_t i = 0; i < count && i < g_val; i++)
        p64(pg + 16 + 16 * i + 8, br.id[0]);
}

static void mod_root_self(uint8_t *img, size_t n)
{
    (void)n;
    /* make the root a branch whose every element is the root itself */
    uint64_t r = g64(img + 32);
    uint8_t *pg = img + r * PS;
    uint16_t count = g16(pg + 10);
    p16(pg + 8, 0x01);
    for (uint16_t i = 0; i < count; i++)
        p64(pg + 16 + 16 * i + 8, r);
}

Test(bbolt, loops_end, .timeout = 30)
{
    g_img = small_file(at("db"), &g_n);
    /* one element back at itself: the depth limit ends the walk */
    g_val = 1;
    expect_corrupt(g_img, g_n, mod_branch_self, "a branch pointing at itself");
    /* every element back at itself: without a bound on the pages visited, a branch of c
     * elements is walked c^depth times */
    g_val = 0xFFFF;
    expect_corrupt(g_img, g_n, mod_branch_self, "a branch whose every child is itself");
    g_val = 2;
    expect_corrupt(g_img, g_n, mod_branch_self, "a branch with two children that are itself");
    expect_corrupt(g_img, g_n, mod_root_self, "a root branch whose children are itself");
    free(g_img);
}

Test(bbolt, random_damage_never_crashes, .timeout = 120)
{
    size_t n;
    uint8_t *img = small_file(at("db"), &n);
    uint64_t seed = seed_rng("random_damage_never_crashes");
    int fd = open(at("db"), O_RDWR);
    cr_assert_geq(fd, 0);
    uint64_t pages = n / PS;
    int results[4] = {0}; /* ok, corrupt, open refused, other error */
    for (int it = 0; it < 3000; it++) {
        uint64_t iter_seed = rnd();
        uint64_t save = g_rng;
        g_rng = iter_seed;
        size_t offs[8];
        int nflip = 1 + (int)(rnd() % 4);
        int meta_mode = rnd() % 8 == 0;
        for (int f = 0; f < nflip; f++) {
            size_t off;
            uint64_t r = rnd() % 10;
            if (r < 4) /* anywhere in the data pages */
                off = 2 * PS + rnd() % (n - 2 * PS);
            else if (r < 9) /* in a page's header or first elements */
                off = (3 + rnd() % (pages - 3)) * PS + rnd() % 96;
            else /* anywhere */
                off = rnd() % n;
            offs[f] = off;
        }
        for (int f = 0; f < nflip; f++) {
            uint8_t b = img[offs[f]] ^ (uint8_t)(1 + rnd() % 255);
            cr_assert_eq(pwrite(fd, &b, 1, (off_t)offs[f]), 1);
        }
        uint8_t meta[2][64];
        if (meta_mode) {
            /* change a field of both metas (root, freelist, pgid, page size) and re-sum, so the
             * reader has to trust them */
            static const int fields[] = {16, 32, 40, 8};
            int fo = fields[rnd() % 4];
            uint64_t v = rnd() % 4 ? rnd() % (pages + 3) : rnd();
            for (unsigned p = 0; p < 2; p++) {
                memcpy(meta[p], img + p * PS + 16, 64);
                if (fo == 8)
                    p32(meta[p] + 8, (uint32_t)(512u << (v % 8)));
                else
                    p64(meta[p] + fo, v);
                p64(meta[p] + 56, fnv1a64(meta[p], 56));
                cr_assert_eq(pwrite(fd, meta[p], 64, (off_t)(p * PS + 16)), 64);
            }
        }
        int opened = 0;
        int rc = read_all(at("db"), 0, &opened);
        results[!opened ? 2 : rc == 0 ? 0 : rc == CAIRN_ECORRUPT ? 1 : 3]++;
        if (opened && rc != 0 && rc != CAIRN_ECORRUPT)
            cr_log_info("seed %llu iteration %d: %d", (unsigned long long)seed, it, rc);
        /* restore */
        for (int f = nflip - 1; f >= 0; f--)
            cr_assert_eq(pwrite(fd, img + offs[f], 1, (off_t)offs[f]), 1);
        if (meta_mode)
            for (unsigned p = 0; p < 2; p++)
                cr_assert_eq(pwrite(fd, img + p * PS + 16, 64, (off_t)(p * PS + 16)), 64);
        g_rng = save;
    }
    close(fd);
    fprintf(stderr, "random damage (seed %llu): %d read, %d corrupt, %d refused at open, %d other\n",
            (unsigned long long)seed, results[0], results[1], results[2], results[3]);
    cr_assert_gt(results[1], 100, "the damage is noticed");
    cr_assert_eq(read_all(at("db"), 0, NULL), 0, "the file is whole again");
    free(img);
}

/* ---- files built by hand, byte by byte ------------------------------------------------------ */

typedef struct {
    uint8_t *img;
    size_t pages;
} hand_t;

static void h_init(hand_t *h, size_t pages)
{
    h->pages = pages;
    h->img = calloc(pages, PS);
    cr_assert_not_null(h->img);
}

/* Meta on page p (0 or 1) with bbolt's fields. */
static void h_meta(hand_t *h, unsigned p, uint64_t root, uint64_t freelist, uint64_t pgid, uint64_t txid)
{
    uint8_t *pg = h->img + (size_t)p * PS, *m = pg + 16;
    p64(pg, p);
    p16(pg + 8, 0x04);
    p32(m, 0xED0CDAEDu);
    p32(m + 4, 2);
    p32(m + 8, PS);
    p64(m + 16, root);
    p64(m + 32, freelist);
    p64(m + 40, pgid);
    p64(m + 48, txid);
    p64(m + 56, fnv1a64(m, 56));
}

typedef struct {
    uint32_t flags;
    const void *k, *v;
    size_t kn, vn;
} hel_t;

/* Lays out a leaf (header id, flags 0x02) at p: elements then keys and values; returns its
 * length. p may be a page or the inside of an inline bucket value (id 0). */
static size_t h_leaf_at(uint8_t *p, uint64_t id, const hel_t *el, size_t n)
{
    p64(p, id);
    p16(p + 8, 0x02);
    p16(p + 10, (uint16_t)n);
    size_t data = 16 + 16 * n;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = p + 16 + 16 * i;
        p32(e, el[i].flags);
        p32(e + 4, (uint32_t)(data - 16 - 16 * i));
        p32(e + 8, (uint32_t)el[i].kn);
        p32(e + 12, (uint32_t)el[i].vn);
        memcpy(p + data, el[i].k, el[i].kn);
        memcpy(p + data + el[i].kn, el[i].v, el[i].vn);
        data += el[i].kn + el[i].vn;
    }
    return data;
}

static void h_branch(hand_t *h, uint64_t id, const char *const *keys, const uint64_t *kids, size_t n)
{
    uint8_t *p = h->img + id * PS;
    p64(p, id);
    p16(p + 8, 0x01);
    p16(p + 10, (uint16_t)n);
    size_t data = 16 + 16 * n;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = p + 16 + 16 * i;
        size_t kn = strlen(keys[i]);
        p32(e, (uint32_t)(data - 16 - 16 * i));
        p32(e + 4, (uint32_t)kn);
        p64(e + 8, kids[i]);
        memcpy(p + data, keys[i], kn);
        data += kn;
    }
}

static void h_bucket_val(uint8_t v[16], uint64_t root)
{
    p64(v, root);
    p64(v + 8, 0);
}

typedef struct {
    char s[8][64];
    int n;
} strs_t;

static int collect_fn(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    strs_t *c = arg;
    cr_assert_lt(c->n, 8);
    snprintf(c->s[c->n++], 64, "%.*s=%.*s", (int)kn, (const char *)k, (int)vn, v ? (const char *)v : "");
    return 0;
}

/* A file laid out as bbolt (and so etcd 3.4) writes one, not as this writer does: inline
 * buckets holding pairs, a freelist that lists pages, an older meta pointing at an older root,
 * pages left free inside the file, txids of a database that lived. */
Test(bbolt, reads_a_file_laid_out_like_etcds)
{
    hand_t h;
    h_init(&h, 8);
    /* page 3: the old root (meta 0, txid 6): one inline bucket "old" */
    uint8_t oldv[16 + 16];
    memset(oldv, 0, sizeof oldv);
    p16(oldv + 16 + 8, 0x02);
    hel_t oldroot[] = {{1, "old", oldv, 3, sizeof oldv}};
    h_leaf_at(h.img + 3 * PS, 3, oldroot, 1);
    /* page 4: the "meta" bucket's leaf */
    hel_t metael[] = {{0, "consistent_index", "\0\0\0\0\0\0\0\x2a", 16, 8}, {0, "term", "\0\0\0\0\0\0\0\x02", 4, 8}};
    h_leaf_at(h.img + 4 * PS, 4, metael, 2);
    /* page 6: the freelist: pages 5 and 7 are free */
    p64(h.img + 6 * PS, 6);
    p16(h.img + 6 * PS + 8, 0x10);
    p16(h.img + 6 * PS + 10, 2);
    p64(h.img + 6 * PS + 16, 5);
    p64(h.img + 6 * PS + 24, 7);
    /* page 5 looks like a stale leaf (it is free: nothing points at it) */
    h_leaf_at(h.img + 5 * PS, 5, metael, 1);
    /* page 2: the new root (meta 1, txid 7): "alarm" inline and empty, "key" inline with two
     * pairs, "meta" a page of its own */
    uint8_t empty[32];
    memset(empty, 0, sizeof empty);
    p16(empty + 16 + 8, 0x02);
    uint8_t keyv[256];
    memset(keyv, 0, sizeof keyv);
    hel_t kel[] = {{0, "k1", "v1", 2, 2}, {0, "k2", "value two", 2, 9}};
    size_t kvlen = 16 + h_leaf_at(keyv + 16, 0, kel, 2);
    uint8_t metav[16];
    h_bucket_val(metav, 4);
    hel_t rootel[] = {{1, "alarm", empty, 5, 32}, {1, "key", keyv, 3, kvlen}, {1, "meta", metav, 4, 16}};
    h_leaf_at(h.img + 2 * PS, 2, rootel, 3);
    h_meta(&h, 0, 3, 6, 8, 6);
    h_meta(&h, 1, 2, 6, 8, 7);
    spill(at("etcd.db"), h.img, 8 * PS);

    int err = 0;
    char eb[200] = "";
    cairn_bbolt_t *db = cairn_bbolt_open(at("etcd.db"), 0, &err, eb, sizeof eb);
    cr_assert_not_null(db, "%s", eb);
    cr_assert_eq(cairn_bbolt_size(db), 8 * PS);
    strs_t c = {0};
    cr_assert_eq(cairn_bbolt_buckets(db, collect_fn, &c), 0, "%s", cairn_bbolt_error(db));
    cr_assert_eq(c.n, 3);
    cr_assert_str_eq(c.s[0], "alarm=");
    cr_assert_str_eq(c.s[1], "key=");
    cr_assert_str_eq(c.s[2], "meta=");
    memset(&c, 0, sizeof c);
    cr_assert_eq(cairn_bbolt_foreach(db, "key", 3, collect_fn, &c), 0, "%s", cairn_bbolt_error(db));
    cr_assert_eq(c.n, 2);
    cr_assert_str_eq(c.s[0], "k1=v1");
    cr_assert_str_eq(c.s[1], "k2=value two");
    memset(&c, 0, sizeof c);
    cr_assert_eq(cairn_bbolt_foreach(db, "alarm", 5, collect_fn, &c), 0);
    cr_assert_eq(c.n, 0);
    cr_assert_eq(cairn_bbolt_foreach(db, "meta", 4, collect_fn, &c), 0);
    cr_assert_eq(c.n, 2);
    cr_assert_eq(memcmp(c.s[1], "term=", 5), 0);
    cr_assert_eq(cairn_bbolt_foreach(db, "old", 3, collect_fn, &c), CAIRN_ENOTFOUND, "meta 0 is older");
    cairn_bbolt_close(&db);

    /* the newer meta damaged: the older one (root page 3, bucket "old") is read */
    h.img[PS + 16 + 30] ^= 1;
    spill(at("etcd.db"), h.img, 8 * PS);
    db = cairn_bbolt_open(at("etcd.db"), 0, &err, eb, sizeof eb);
    cr_assert_not_null(db, "%s", eb);
    memset(&c, 0, sizeof c);
    cr_assert_eq(cairn_bbolt_buckets(db, collect_fn, &c), 0);
    cr_assert_eq(c.n, 1);
    cr_assert_str_eq(c.s[0], "old=");
    cairn_bbolt_close(&db);
    free(h.img);
}

/* A tree without a loop whose pages are shared: branch i has two elements, both pointing at
 * branch i+1. Every path is short, but there are 2^depth of them. */
Test(bbolt, shared_pages_do_not_make_the_walk_exponential, .timeout = 30)
{
    enum { D = 40 };
    hand_t h;
    h_init(&h, 5 + D);
    uint8_t bv[16];
    h_bucket_val(bv, 4);
    hel_t rootel[] = {{1, "k", bv, 1, 16}};
    h_leaf_at(h.img + 3 * PS, 3, rootel, 1);
    p64(h.img + 2 * PS, 2);
    p16(h.img + 2 * PS + 8, 0x10);
    static const char *const keys[] = {"a", "b"};
    for (uint64_t i = 0; i < D; i++) {
        uint64_t kids[2] = {4 + i + 1, 4 + i + 1};
        h_branch(&h, 4 + i, keys, kids, 2);
    }
    hel_t leafel[] = {{0, "a", "1", 1, 1}};
    h_leaf_at(h.img + (4 + D) * PS, 4 + D, leafel, 1);
    h_meta(&h, 0, 3, 2, 5 + D, 0);
    h_meta(&h, 1, 3, 2, 5 + D, 1);
    spill(at("dag.db"), h.img, (5 + D) * PS);
    free(h.img);
    int rc = read_all(at("dag.db"), 0, NULL);
    cr_assert_eq(rc, CAIRN_ECORRUPT, "a page reached twice is damage: %d", rc);
}

/* ---- write errors ------------------------------------------------------------------------- */

/* Writes a bucket of big values into fd: the first error any call returns (0 if none), and
 * checks that the writer then keeps refusing with that error. */
static int write_into(int fd, size_t values, size_t vsize)
{
    cairn_bbolt_writer_t *w = cairn_bbolt_writer_new(fd);
    cr_assert_not_null(w);
    uint8_t *v = calloc(1, vsize);
    char k[32];
    int rc = cairn_bbolt_bucket_begin(w, "key", 3);
    for (size_t i = 0; rc == 0 && i < values; i++) {
        snprintf(k, sizeof k, "%08zu", i);
        rc = cairn_bbolt_put(w, k, strlen(k), v, vsize);
    }
    if (rc == 0)
        rc = cairn_bbolt_bucket_end(w);
    uint64_t bytes = 0;
    if (rc == 0)
        rc = cairn_bbolt_writer_finish(w, &bytes);
    if (rc) {
        /* sticky: everything after the failure returns it */
        cr_assert_eq(cairn_bbolt_put(w, "zzzz", 4, "", 0), rc);
        cr_assert_eq(cairn_bbolt_bucket_end(w), rc);
        cr_assert_eq(cairn_bbolt_bucket_begin(w, "zzzz", 4), rc);
        cr_assert_eq(cairn_bbolt_writer_finish(w, &bytes), rc);
    }
    cairn_bbolt_writer_destroy(&w);
    free(v);
    return rc;
}

Test(bbolt, write_errors_are_returned)
{
    signal(SIGPIPE, SIG_IGN);
    struct {
        size_t values, vsize;
    } shapes[] = {{3, 10}, {40, 100 * 1024}, {2, 3 * 1024 * 1024}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        /* a file opened read-only */
        spill(at("ro"), (const uint8_t *)"", 0);
        int fd = open(at("ro"), O_RDONLY);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write_into(fd, shapes[s].values, shapes[s].vsize), CAIRN_EIO, "shape %zu, read-only fd", s);
        close(fd);
        /* a pipe whose reader is gone (and that cannot be written at an offset anyway) */
        int pp[2];
        cr_assert_eq(pipe(pp), 0);
        close(pp[0]);
        cr_assert_eq(write_into(pp[1], shapes[s].values, shapes[s].vsize), CAIRN_EIO, "shape %zu, pipe", s);
        close(pp[1]);
        /* a full disk */
        fd = open("/dev/full", O_WRONLY);
        if (fd >= 0) {
            cr_assert_eq(write_into(fd, shapes[s].values, shapes[s].vsize), CAIRN_ENOSPC, "shape %zu, /dev/full", s);
            close(fd);
        } else {
            cr_log_warn("no /dev/full: ENOSPC not checked");
        }
        /* a closed descriptor */
        fd = open(at("x"), O_RDWR | O_CREAT | O_TRUNC, 0644);
        close(fd);
        cr_assert_eq(write_into(fd, shapes[s].values, shapes[s].vsize), CAIRN_EIO, "shape %zu, closed fd", s);
    }
}

/* The reader's descriptor is closed by cairn_bbolt_close even when it is 0 (a daemon that
 * closed its stdin gets 0 from open). */
Test(bbolt, reader_closes_descriptor_zero)
{
    model_t m = {0};
    mbucket_t *b = m_bucket(&m, "b", 1);
    m_put(b, "k", 1, "v", 1);
    m_write(&m, at("db"));
    m_free(&m);
    close(0);
    int err = 0;
    cairn_bbolt_t *db = cairn_bbolt_open(at("db"), 0, &err, NULL, 0);
    cr_assert_not_null(db);
    cr_assert_neq(fcntl(0, F_GETFD), -1, "the reader's open got descriptor 0");
    cairn_bbolt_close(&db);
    cr_assert_eq(fcntl(0, F_GETFD), -1, "descriptor 0 leaked by cairn_bbolt_close");
}

/* etcd 3.4 runs bbolt with NoFreelistSync: the metas' freelist is then 0xFFFF...FFFF (no
 * freelist page), and a database made on a machine with larger pages has larger pages. */
Test(bbolt, reads_files_without_a_freelist_and_with_larger_pages)
{
    static const uint32_t sizes[] = {4096, 8192, 16384, 65536};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        uint32_t ps = sizes[s];
        size_t pages = 4;
        uint8_t *img = calloc(pages, ps);
        /* page 2: the root leaf, one inline bucket "key" with one pair; page 3 a stale page */
        uint8_t kv[128];
        memset(kv, 0, sizeof kv);
        hel_t kel[] = {{0, "k", "v", 1, 1}};
        size_t kvlen = 16 + h_leaf_at(kv + 16, 0, kel, 1);
        hel_t rootel[] = {{1, "key", kv, 3, kvlen}};
        h_leaf_at(img + 2 * (size_t)ps, 2, rootel, 1);
        p64(img + 3 * (size_t)ps, 3);
        for (unsigned p = 0; p < 2; p++) {
            uint8_t *pg = img + (size_t)p * ps, *m = pg + 16;
            p64(pg, p);
            p16(pg + 8, 0x04);
            p32(m, 0xED0CDAEDu);
            p32(m + 4, 2);
            p32(m + 8, ps);
            p64(m + 16, 2);
            p64(m + 32, UINT64_MAX); /* pgidNoFreelist */
            p64(m + 40, pages);
            p64(m + 48, 40 + p);
            p64(m + 56, fnv1a64(m, 56));
        }
        spill(at("nofl.db"), img, pages * ps);
        int err = 0;
        char eb[200] = "";
        cairn_bbolt_t *db = cairn_bbolt_open(at("nofl.db"), 0, &err, eb, sizeof eb);
        cr_assert_not_null(db, "page size %u: %s", ps, eb);
        cr_assert_eq(cairn_bbolt_page_size(db), ps);
        cr_assert_eq(cairn_bbolt_size(db), pages * ps);
        strs_t c = {0};
        cr_assert_eq(cairn_bbolt_foreach(db, "key", 3, collect_fn, &c), 0, "%s", cairn_bbolt_error(db));
        cr_assert_eq(c.n, 1);
        cr_assert_str_eq(c.s[0], "k=v");
        cairn_bbolt_close(&db);
        /* the newer meta (page 1) broken: page 0's is used, and it still says where page 1 is */
        img[ps + 16 + 20] ^= 1;
        spill(at("nofl.db"), img, pages * ps);
        cr_assert_eq(read_all(at("nofl.db"), 0, NULL), 0, "page size %u, meta 1 broken", ps);
        /* cut inside the last page */
        spill(at("nofl.db"), img, pages * ps - 1);
        cr_assert_eq(read_all(at("nofl.db"), 0, NULL), CAIRN_ECORRUPT);
        free(img);
    }
}

/* A chain of branches of one child each, deeper than any real tree (a bbolt tree of fan-out
 * >= 2 is at most 64 levels deep): refused by the depth limit, without recursing on. Just
 * under the limit it reads. */
static void chain_file(const char *path, int depth)
{
    hand_t h;
    h_init(&h, (size_t)(5 + depth));
    uint8_t bv[16];
    h_bucket_val(bv, 4);
    hel_t rootel[] = {{1, "k", bv, 1, 16}};
    h_leaf_at(h.img + 3 * PS, 3, rootel, 1);
    p64(h.img + 2 * PS, 2);
    p16(h.img + 2 * PS + 8, 0x10);
    static const char *const keys[] = {"a"};
    for (uint64_t i = 0; i < (uint64_t)depth; i++) {
        uint64_t kid = 4 + i + 1;
        h_branch(&h, 4 + i, keys, &kid, 1);
    }
    hel_t leafel[] = {{0, "a", "1", 1, 1}};
    h_leaf_at(h.img + (4 + depth) * PS, (uint64_t)(4 + depth), leafel, 1);
    h_meta(&h, 0, 3, 2, (uint64_t)(5 + depth), 0);
    h_meta(&h, 1, 3, 2, (uint64_t)(5 + depth), 1);
    spill(path, h.img, (size_t)(5 + depth) * PS);
    free(h.img);
}

Test(bbolt, depth_limit)
{
    chain_file(at("deep.db"), 60);
    strs_t c = {0};
    int err = 0;
    cairn_bbolt_t *db = cairn_bbolt_open(at("deep.db"), 0, &err, NULL, 0);
    cr_assert_not_null(db);
    cr_assert_eq(cairn_bbolt_foreach(db, "k", 1, collect_fn, &c), 0, "%s", cairn_bbolt_error(db));
    cr_assert_eq(c.n, 1);
    cairn_bbolt_close(&db);
    chain_file(at("deeper.db"), 200);
    db = cairn_bbolt_open(at("deeper.db"), 0, &err, NULL, 0);
    cr_assert_not_null(db);
    cr_assert_eq(cairn_bbolt_foreach(db, "k", 1, collect_fn, &c), CAIRN_ECORRUPT);
    cr_assert_not_null(strstr(cairn_bbolt_error(db), "deeper"), "%s", cairn_bbolt_error(db));
    cairn_bbolt_close(&db);
}
