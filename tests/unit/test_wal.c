/* Unit tests for the WAL (services/stored/wal.c) and its file layer.
 *
 * Byte offsets used below follow the format comment at the top of wal.c: a 40-byte segment
 * header, then batches; a batch is a 32-byte BATCH record and its records, each record
 * 8 bytes of len+crc, then type+payload, padded to a multiple of 8. An ENTRY record with
 * n bytes of data takes ALIGN8(8 + 18 + n) bytes; a HARDSTATE record 40.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tmpdir.h"
#include "cairn_bytes.h"
#include "cairn_crc32c.h"
#include "cairn_err.h"
#include "crashfs.h"
#include "fileops.h"
#include "wal.h"

#define ALIGN8(x) (((x) + 7u) & ~(size_t)7u)
#define HDR 40u
#define BATCH 32u
#define ENTRY_SIZE(n) ALIGN8(8u + 18u + (n))
#define SEG0 "0000000000000000-0000000000000001.wal"

/* ---- a model of what replay must produce ---------------------------------------------- */

typedef struct {
    uint64_t index, term;
    uint8_t type;
    uint8_t *data;
    size_t len;
} ment_t;

typedef struct {
    ment_t *e;
    size_t n, cap;
    cairn_wal_hardstate_t hs;
    int have_hs;
    size_t raw_entries; /* on_entry calls */
    uint64_t first_seen;
} model_t;

static void model_free(model_t *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->e[i].data);
    free(m->e);
    memset(m, 0, sizeof *m);
}

static void model_entry(model_t *m, const cairn_wal_entry_t *e)
{
    while (m->n && m->e[m->n - 1].index >= e->index) { /* Raft truncation */
        free(m->e[m->n - 1].data);
        m->n--;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->e = realloc(m->e, m->cap * sizeof *m->e);
    }
    ment_t *x = &m->e[m->n++];
    x->index = e->index;
    x->term = e->term;
    x->type = e->type;
    x->len = e->len;
    x->data = malloc(e->len ? e->len : 1);
    if (e->len)
        memcpy(x->data, e->data, e->len);
}

static void model_copy(model_t *dst, const model_t *src)
{
    model_free(dst);
    for (size_t i = 0; i < src->n; i++) {
        cairn_wal_entry_t e = {src->e[i].index, src->e[i].term, src->e[i].type, src->e[i].data, src->e[i].len};
        model_entry(dst, &e);
    }
    dst->hs = src->hs;
    dst->have_hs = src->have_hs;
}

static int cb_entry(void *ctx, const cairn_wal_entry_t *e)
{
    model_t *m = ctx;
    if (!m->raw_entries)
        m->first_seen = e->index;
    m->raw_entries++;
    model_entry(m, e);
    return 0;
}

static int cb_hs(void *ctx, const cairn_wal_hardstate_t *hs)
{
    model_t *m = ctx;
    m->hs = *hs;
    m->have_hs = 1;
    return 0;
}

static cairn_wal_replay_t replay_into(model_t *m) { return (cairn_wal_replay_t){cb_entry, cb_hs, m}; }

/* Is got == want restricted to indexes >= got's first (what survives a release)? Returns
 * NULL or a description of the first difference. */
static const char *model_diff(const model_t *got, const model_t *want, char *why, size_t n)
{
    if (got->have_hs != want->have_hs || (want->have_hs && memcmp(&got->hs, &want->hs, sizeof got->hs))) {
        snprintf(why, n, "hard state differs: got %d/%llu/%llu/%llu want %d/%llu/%llu/%llu", got->have_hs,
                 (unsigned long long)got->hs.term, (unsigned long long)got->hs.vote,
                 (unsigned long long)got->hs.commit, want->have_hs, (unsigned long long)want->hs.term,
                 (unsigned long long)want->hs.vote, (unsigned long long)want->hs.commit);
        return why;
    }
    if (got->n == 0) {
        if (want->n == 0)
            return NULL;
        snprintf(why, n, "got no entries, want %zu", want->n);
        return why;
    }
    size_t j = 0;
    while (j < want->n && want->e[j].index != got->e[0].index)
        j++;
    if (want->n - j != got->n) {
        snprintf(why, n, "got %zu entries from index %llu, want %zu", got->n, (unsigned long long)got->e[0].index,
                 want->n - j);
        return why;
    }
    for (size_t i = 0; i < got->n; i++) {
        const ment_t *a = &got->e[i], *b = &want->e[j + i];
        if (a->index != b->index || a->term != b->term || a->type != b->type || a->len != b->len ||
            memcmp(a->data, b->data, a->len)) {
            snprintf(why, n, "entry %zu differs (index %llu vs %llu)", i, (unsigned long long)a->index,
                     (unsigned long long)b->index);
            return why;
        }
    }
    return NULL;
}

/* ---- helpers ------------------------------------------------------------------------- */

static char g_dir[256];

static void mk_tmpdir(void) { cairn_test_mkdtemp(g_dir, sizeof g_dir, "wal"); }

static void rm_tmpdir(void) { cr_assert_eq(cairn_test_rmtree(g_dir), 0); }

static char *wal_dir(void)
{
    static char d[300];
    snprintf(d, sizeof d, "%s/wal", g_dir);
    return d;
}

static char *seg_file(const char *name)
{
    static char p[400];
    snprintf(p, sizeof p, "%s/wal/%s", g_dir, name);
    return p;
}

static cairn_wal_t *open_ok(const char *dir, const cairn_wal_opts_t *o, model_t *m)
{
    cairn_wal_replay_t cb = replay_into(m);
    int err = 1;
    char eb[512] = "";
    cairn_wal_t *w = cairn_wal_open(dir, o, &cb, &err, eb, sizeof eb);
    cr_assert_not_null(w, "open failed: %d %s", err, eb);
    cr_assert_eq(err, 0);
    return w;
}

static int open_fail(const char *dir, const cairn_wal_opts_t *o, char *eb, size_t ebn)
{
    model_t m = {0};
    cairn_wal_replay_t cb = replay_into(&m);
    int err = 0;
    cairn_wal_t *w = cairn_wal_open(dir, o, &cb, &err, eb, ebn);
    cr_assert_null(w, "open should have failed");
    model_free(&m);
    return err;
}

static void fill(uint8_t *b, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(cfs_rand(&seed) | 1); /* never zero, so torn data is never all zero */
}

/* Appends entries [from, to] with `len` bytes of data each, to the WAL and the model. */
static void put_entries(cairn_wal_t *w, model_t *m, uint64_t from, uint64_t to, uint64_t term, size_t len)
{
    uint8_t buf[8192];
    cr_assert(len <= sizeof buf);
    for (uint64_t i = from; i <= to; i++) {
        fill(buf, len, i * 7919 + term);
        cairn_wal_entry_t e = {i, term, (uint8_t)(i % 3), buf, len};
        cr_assert_eq(cairn_wal_append_entry(w, &e), 0);
        if (m)
            model_entry(m, &e);
    }
}

static void put_hs(cairn_wal_t *w, model_t *m, uint64_t term, uint64_t vote, uint64_t commit)
{
    cairn_wal_hardstate_t hs = {term, vote, commit};
    cr_assert_eq(cairn_wal_append_hardstate(w, &hs), 0);
    if (m) {
        m->hs = hs;
        m->have_hs = 1;
    }
}

static void assert_same(const model_t *got, const model_t *want)
{
    char why[256];
    const char *d = model_diff(got, want, why, sizeof why);
    cr_assert_null(d, "%s", d);
    cr_assert_eq(got->n, want->n, "got %zu entries, want %zu", got->n, want->n);
}

static uint64_t file_size(const char *p)
{
    struct stat st;
    cr_assert_eq(stat(p, &st), 0, "stat %s", p);
    return (uint64_t)st.st_size;
}

static void patch(const char *p, uint64_t off, const void *b, size_t n)
{
    int fd = open(p, O_RDWR);
    cr_assert(fd >= 0);
    cr_assert_eq(pwrite(fd, b, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void peek(const char *p, uint64_t off, void *b, size_t n)
{
    int fd = open(p, O_RDONLY);
    cr_assert(fd >= 0);
    cr_assert_eq(pread(fd, b, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void flip(const char *p, uint64_t off)
{
    uint8_t b;
    peek(p, off, &b, 1);
    b ^= 0x40;
    patch(p, off, &b, 1);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* stderr capture, to check log lines */
static int g_saved_err = -1;
static char g_cap_path[300];
static void capture_begin(void)
{
    snprintf(g_cap_path, sizeof g_cap_path, "%s/stderr.txt", g_dir);
    fflush(stderr);
    g_saved_err = dup(2);
    int fd = open(g_cap_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0);
    dup2(fd, 2);
    close(fd);
}
static char *capture_end(void)
{
    fflush(stderr);
    dup2(g_saved_err, 2);
    close(g_saved_err);
    static char buf[8192];
    FILE *f = fopen(g_cap_path, "r");
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        if (l > s && strcmp(de->d_name + l - s, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

TestSuite(wal, .init = mk_tmpdir, .fini = rm_tmpdir, .timeout = 120);

/* ---- behaviour ----------------------------------------------------------------------- */

Test(wal, round_trip)
{
    cairn_wal_opts_t o = {.segment_bytes = 1 << 20};
    model_t m0 = {0}, want = {0};
    cairn_wal_t *w = open_ok(wal_dir(), &o, &m0);
    cr_assert_eq(m0.n, 0);
    cr_assert_eq(m0.have_hs, 0);
    cr_assert_eq(cairn_wal_last_index(w), 0);
    cr_assert_eq(file_size(seg_file(SEG0)), 1 << 20, "segment is preallocated");

    size_t lens[] = {0, 1, 7, 8, 9, 100, 4000};
    uint8_t buf[4000];
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        fill(buf, lens[i], i);
        cairn_wal_entry_t e = {i + 1, 1 + i / 3, (uint8_t)(200 + i), buf, lens[i]};
        cr_assert_eq(cairn_wal_append_entry(w, &e), 0);
        model_entry(&want, &e);
    }
    put_hs(w, &want, 3, 2, 5);
    cr_assert_gt(cairn_wal_pending_bytes(w), 4000);
    cr_assert_eq(cairn_wal_last_index(w), 0, "nothing durable before sync");
    cr_assert_eq(cairn_wal_sync(w), 0);
    cr_assert_eq(cairn_wal_pending_bytes(w), 0);
    cr_assert_eq(cairn_wal_last_index(w), 7);
    put_entries(w, &want, 8, 20, 3, 33);
    put_hs(w, &want, 3, 2, 18);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cr_assert_eq(cairn_wal_sync(w), 0, "empty sync is a no-op");
    /* appended but never synced: must not come back */
    put_entries(w, NULL, 21, 25, 3, 10);
    cairn_wal_destroy(&w);
    cr_assert_null(w);
    cairn_wal_destroy(&w); /* idempotent */

    for (int round = 0; round < 2; round++) {
        model_t got = {0};
        w = open_ok(wal_dir(), &o, &got);
        assert_same(&got, &want);
        cr_assert_eq(got.raw_entries, 20);
        cr_assert_eq(cairn_wal_last_index(w), 20);
        cr_assert_eq(got.e[0].type, 200);
        cr_assert_eq(got.e[6].len, 4000);
        cairn_wal_destroy(&w);
        model_free(&got);
    }
    model_free(&m0);
    model_free(&want);
}

Test(wal, raft_truncation_replay)
{
    model_t m = {0}, want = {0};
    cairn_wal_t *w = open_ok(wal_dir(), NULL, &m);
    put_entries(w, &want, 1, 10, 1, 16);
    cr_assert_eq(cairn_wal_sync(w), 0);
    put_entries(w, &want, 6, 8, 2, 16); /* a new leader overwrote 6.. */
    put_hs(w, &want, 2, 1, 5);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cr_assert_eq(cairn_wal_last_index(w), 8);
    cairn_wal_destroy(&w);

    model_t got = {0};
    w = open_ok(wal_dir(), NULL, &got);
    cr_assert_eq(got.raw_entries, 13, "every record is replayed, in log order");
    assert_same(&got, &want);
    cr_assert_eq(got.n, 8);
    cr_assert_eq(got.e[5].index, 6);
    cr_assert_eq(got.e[5].term, 2);
    cr_assert_eq(got.e[4].term, 1);
    cr_assert_eq(cairn_wal_last_index(w), 8);
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
}

Test(wal, segment_rollover)
{
    cairn_wal_opts_t o = {.segment_bytes = 512};
    model_t m = {0}, want = {0};
    cairn_wal_t *w = open_ok(wal_dir(), &o, &m);
    uint64_t idx = 1;
    for (int b = 0; b < 40; b++) {
        put_entries(w, &want, idx, idx + 2, 1 + b / 10, 50);
        idx += 3;
        if (b % 7 == 0)
            put_hs(w, &want, 1 + b / 10, 1, idx - 3);
        cr_assert_eq(cairn_wal_sync(w), 0);
    }
    /* one batch bigger than a whole segment */
    put_entries(w, &want, idx, idx, 9, 5000);
    cr_assert_eq(cairn_wal_sync(w), 0);
    size_t segs = cairn_wal_segment_count(w);
    cr_assert_gt(segs, 10);
    cairn_wal_destroy(&w);
    cr_assert_eq(count_files(wal_dir(), ".wal"), (int)segs);
    cr_assert_eq(count_files(wal_dir(), ".tmp"), 0);
    cr_assert_eq(file_size(seg_file("0000000000000001-0000000000000004.wal")), 512,
                 "segment 1 starts at index 4 (one 3-entry batch per 512 bytes) and is preallocated");

    model_t got = {0};
    w = open_ok(wal_dir(), &o, &got);
    assert_same(&got, &want);
    cr_assert_eq(got.n, 121);
    cr_assert_eq(got.e[120].len, 5000);
    cr_assert_eq(cairn_wal_segment_count(w), segs);
    /* it keeps appending in the right place after reopen */
    put_entries(w, &want, 122, 130, 9, 50);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cairn_wal_destroy(&w);
    model_free(&got);
    w = open_ok(wal_dir(), &o, &got);
    assert_same(&got, &want);
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
}

Test(wal, release_before_removes_only_the_right_segments)
{
    /* 5 entries of 50 bytes = a 432-byte batch: exactly one batch per 512-byte segment, so
     * segment i holds entries 5i+1 .. 5i+5 (segments after the first are sized 544 to hold
     * the hard state copy as well). */
    cairn_wal_opts_t o = {.segment_bytes = 512};
    model_t m = {0}, want = {0};
    cairn_wal_t *w = open_ok(wal_dir(), &o, &m);
    for (uint64_t b = 0; b < 20; b++) {
        put_entries(w, &want, 5 * b + 1, 5 * b + 5, 1, 50);
        if (b == 0)
            put_hs(w, &want, 1, 7, 3);
        cr_assert_eq(cairn_wal_sync(w), 0);
    }
    cr_assert_eq(cairn_wal_segment_count(w), 20);
    cr_assert_eq(cairn_wal_release_before(w, 0), 0);
    cr_assert_eq(cairn_wal_release_before(w, 6), 0, "segment 0 (1..5) holds index-1 = 5");
    cr_assert_eq(cairn_wal_release_before(w, 7), 1, "6 = index-1 lives in segment 1; segment 0 goes");
    cr_assert_eq(cairn_wal_release_before(w, 50), 8, "segments 1..8 (6..45) go, 9 (46..50) holds 49");
    cr_assert_eq(cairn_wal_segment_count(w), 11);
    cr_assert_eq(cairn_wal_release_before(w, 1000), 10, "never the current segment");
    cr_assert_eq(cairn_wal_segment_count(w), 1);
    cairn_wal_destroy(&w);
    cr_assert_eq(count_files(wal_dir(), ".wal"), 1);

    model_t got = {0};
    w = open_ok(wal_dir(), &o, &got);
    cr_assert_eq(got.e[0].index, 96);
    cr_assert_eq(got.n, 5);
    char why[256];
    const char *d = model_diff(&got, &want, why, sizeof why); /* also: the hard state of segment 0 */
    cr_assert_null(d, "%s", d);
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
}

Test(wal, release_before_only_removes_a_prefix)
{
    /* segment 0: entries 1..20 in one big batch; then Raft truncates back to 3 and the log
     * continues in small segments. Segment 0 must stay (it holds live entries 1, 2), and so
     * must everything after it, although their entries are all < 15. */
    cairn_wal_opts_t o = {.segment_bytes = 4096};
    model_t m = {0}, want = {0};
    cairn_wal_t *w = open_ok(wal_dir(), &o, &m);
    put_entries(w, &want, 1, 20, 1, 80);
    cr_assert_eq(cairn_wal_sync(w), 0);
    for (uint64_t i = 3; i <= 12; i += 2) {
        put_entries(w, &want, i, i + 1, 2, 700);
        cr_assert_eq(cairn_wal_sync(w), 0);
    }
    /* segment 0: 1..20, 3..4 (max 20); segment 1: 5..8 (max 8); segment 2: 9..12 */
    cr_assert_eq(cairn_wal_segment_count(w), 3);
    cr_assert_eq(cairn_wal_release_before(w, 12), 0);
    cairn_wal_destroy(&w);
    model_t got = {0};
    w = open_ok(wal_dir(), &o, &got);
    assert_same(&got, &want);
    cr_assert_eq(got.e[0].index, 1);
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
}

/* Writes three batches of 5 entries (10 bytes of data: 40-byte records, 232-byte batches)
 * at offsets 40, 272 and 504 of segment 0; returns the model of the first two. */
static void three_batches(model_t *first_two)
{
    model_t m = {0};
    cairn_wal_opts_t o = {.segment_bytes = 4096};
    cairn_wal_t *w = open_ok(wal_dir(), &o, &m);
    put_entries(w, first_two, 1, 5, 1, 10);
    cr_assert_eq(cairn_wal_sync(w), 0);
    put_entries(w, first_two, 6, 10, 1, 10);
    cr_assert_eq(cairn_wal_sync(w), 0);
    put_entries(w, NULL, 11, 15, 1, 10);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cairn_wal_destroy(&w);
    model_free(&m);
    cr_assert_eq(BATCH + 5 * ENTRY_SIZE(10), 232);
}

Test(wal, torn_tail_truncated_file)
{
    model_t want = {0}, got = {0};
    three_batches(&want);
    cr_assert_eq(truncate(seg_file(SEG0), 504 + 100), 0); /* mid-record of the third batch */
    cairn_wal_opts_t o = {.segment_bytes = 4096};
    capture_begin();
    cairn_wal_t *w = open_ok(wal_dir(), &o, &got);
    char *log = capture_end();
    cr_assert(strstr(log, "wal torn tail truncated"), "log: %s", log);
    cr_assert(strstr(log, "offset=504 bytes=100"), "log: %s", log);
    cr_assert(strstr(log, SEG0), "log: %s", log);
    assert_same(&got, &want);
    cr_assert_eq(cairn_wal_last_index(w), 10);
    cr_assert_eq(file_size(seg_file(SEG0)), 4096, "re-extended to its preallocated size");
    uint8_t z[200], zero[200] = {0};
    peek(seg_file(SEG0), 504, z, sizeof z);
    cr_assert_eq(memcmp(z, zero, sizeof z), 0);
    put_entries(w, &want, 11, 12, 2, 10);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cairn_wal_destroy(&w);
    model_free(&got);
    capture_begin();
    w = open_ok(wal_dir(), &o, &got);
    log = capture_end();
    cr_assert_null(strstr(log, "torn"), "clean the second time: %s", log);
    assert_same(&got, &want);
    cairn_wal_destroy(&w);
    model_free(&got);
    model_free(&want);
}

Test(wal, torn_tail_with_a_bad_record_inside_the_last_batch)
{
    /* the last batch's later records reached the disk, an earlier page of it did not */
    model_t want = {0}, got = {0};
    three_batches(&want);
    uint8_t zero[40] = {0};
    patch(seg_file(SEG0), 504 + BATCH + 40, zero, sizeof zero); /* 2nd record of batch 3 */
    cairn_wal_t *w = open_ok(wal_dir(), NULL, &got);
    assert_same(&got, &want);
    cairn_wal_destroy(&w);
    model_free(&got);
    model_free(&want);
}

Test(wal, garbage_after_zeroes_is_a_torn_tail)
{
    model_t want = {0}, got = {0};
    three_batches(&want);
    uint8_t zero[232] = {0}, junk[100];
    patch(seg_file(SEG0), 504, zero, sizeof zero); /* batch 3 never landed ... */
    fill(junk, sizeof junk, 42);
    patch(seg_file(SEG0), 900, junk, sizeof junk); /* ... but some garbage did, further on */
    capture_begin();
    cairn_wal_t *w = open_ok(wal_dir(), NULL, &got);
    char *log = capture_end();
    cr_assert(strstr(log, "wal torn tail truncated"), "log: %s", log);
    cr_assert(strstr(log, "offset=504 bytes=496"), "log: %s", log);
    assert_same(&got, &want);
    uint8_t b[100];
    peek(seg_file(SEG0), 900, b, sizeof b);
    cr_assert_eq(memcmp(b, zero, sizeof b), 0, "garbage was zeroed");
    cairn_wal_destroy(&w);
    model_free(&got);
    model_free(&want);
}

Test(wal, zeroed_batch_followed_by_valid_batch_is_corrupt)
{
    model_t want = {0};
    three_batches(&want);
    uint8_t zero[BATCH] = {0};
    patch(seg_file(SEG0), 272, zero, sizeof zero); /* batch 2's header */
    char eb[512];
    cr_assert_eq(open_fail(wal_dir(), NULL, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, SEG0), "%s", eb);
    cr_assert(strstr(eb, "follows at offset 504"), "%s", eb);
    model_free(&want);
}

Test(wal, flipped_byte_in_early_record_is_corrupt)
{
    model_t want = {0};
    three_batches(&want);
    uint64_t rec2 = HDR + BATCH + ENTRY_SIZE(10); /* 2nd entry of batch 1 */
    flip(seg_file(SEG0), rec2 + 30);
    char eb[512];
    cr_assert_eq(open_fail(wal_dir(), NULL, eb, sizeof eb), CAIRN_ECORRUPT);
    char want_msg[600];
    snprintf(want_msg, sizeof want_msg, "wal: corrupt record in %s at offset %llu: record checksum mismatch",
             seg_file(SEG0), (unsigned long long)rec2);
    cr_assert(strstr(eb, want_msg), "got: %s\nwant: %s", eb, want_msg);
    /* the file was not touched */
    char eb2[512];
    cr_assert_eq(open_fail(wal_dir(), NULL, eb2, sizeof eb2), CAIRN_ECORRUPT);
    cr_assert_str_eq(eb, eb2);
    model_free(&want);
}

Test(wal, flipped_byte_in_non_last_segment_is_corrupt)
{
    cairn_wal_opts_t o = {.segment_bytes = 512};
    model_t m = {0};
    cairn_wal_t *w = open_ok(wal_dir(), &o, &m);
    for (uint64_t b = 0; b < 6; b++) {
        put_entries(w, NULL, 5 * b + 1, 5 * b + 5, 1, 50);
        cr_assert_eq(cairn_wal_sync(w), 0);
    }
    cr_assert_eq(cairn_wal_segment_count(w), 6);
    cairn_wal_destroy(&w);
    /* the only (so the last) batch of segment 2, entries 11..15 */
    const char *seg2 = "0000000000000002-000000000000000b.wal";
    flip(seg_file(seg2), HDR + BATCH + 4 * ENTRY_SIZE(50) + 20);
    char eb[512];
    cr_assert_eq(open_fail(wal_dir(), &o, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, seg2), "%s", eb);
    cr_assert(strstr(eb, "at offset 392"), "%s", eb);
    cr_assert(strstr(eb, "not the last segment"), "%s", eb);
    model_free(&m);
}

static void limit_memory(void)
{
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit rl = {(rlim_t)1 << 30, (rlim_t)1 << 30}; /* 1 GiB of address space */
    cr_assert_eq(setrlimit(RLIMIT_AS, &rl), 0);
#endif
}

Test(wal, huge_length_in_last_batch_is_torn_without_allocation)
{
    model_t want = {0}, got = {0};
    three_batches(&want);
    uint8_t l[4];
    put_le32(l, 0xFFFFFFF0u);
    patch(seg_file(SEG0), 504 + BATCH, l, 4); /* 1st record of batch 3 */
    limit_memory();
    cairn_wal_t *w = open_ok(wal_dir(), NULL, &got);
    assert_same(&got, &want);
    cairn_wal_destroy(&w);
    model_free(&got);
    model_free(&want);
}

Test(wal, huge_length_in_early_batch_is_corrupt_without_allocation)
{
    model_t want = {0};
    three_batches(&want);
    uint8_t l[4];
    put_le32(l, 0xFFFFFFF0u);
    patch(seg_file(SEG0), 272, l, 4); /* batch 2's header length */
    put_le32(l, 0xFFFFFFF0u);
    limit_memory();
    char eb[512];
    cr_assert_eq(open_fail(wal_dir(), NULL, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "at offset 272: bad batch header length 4294967280"), "%s", eb);
    model_free(&want);
    rm_tmpdir();
    mk_tmpdir();
    three_batches(&want);
    patch(seg_file(SEG0), HDR + BATCH + ENTRY_SIZE(10), l, 4); /* record 2 of batch 1 */
    cr_assert_eq(open_fail(wal_dir(), NULL, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "at offset 112: record length 4294967280 exceeds its batch"), "%s", eb);
    model_free(&want);
}

Test(wal, unknown_record_type_is_corrupt_even_in_the_last_batch)
{
    model_t want = {0};
    three_batches(&want);
    uint64_t rec = 504 + BATCH + ENTRY_SIZE(10); /* record 2 of the LAST batch */
    uint8_t r[8 + 28];
    peek(seg_file(SEG0), rec, r, sizeof r);
    r[8] = 9; /* unknown type, with a valid checksum */
    uint32_t len = (uint32_t)r[0] | (uint32_t)r[1] << 8;
    cr_assert_eq(len, 28);
    put_le32(r + 4, cairn_crc32c_extend(cairn_crc32c(r, 4), r + 8, len));
    patch(seg_file(SEG0), rec, r, sizeof r);
    char eb[512];
    cr_assert_eq(open_fail(wal_dir(), NULL, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "at offset 576: unknown record type 9"), "%s", eb);
    model_free(&want);
}

Test(wal, bad_segment_files)
{
    model_t want = {0}, got = {0};
    cairn_wal_opts_t o = {.segment_bytes = 512};
    cairn_wal_t *w = open_ok(wal_dir(), &o, &got);
    for (uint64_t b = 0; b < 4; b++) {
        put_entries(w, &want, 5 * b + 1, 5 * b + 5, 1, 50);
        cr_assert_eq(cairn_wal_sync(w), 0);
    }
    cairn_wal_destroy(&w);
    /* unrelated files are ignored, unfinished segments removed */
    FILE *f = fopen(seg_file("README"), "w");
    fputs("hello", f);
    fclose(f);
    f = fopen(seg_file("0000000000000004-0000000000000015.wal.tmp"), "w");
    fputs("half", f);
    fclose(f);
    model_free(&got);
    w = open_ok(wal_dir(), &o, &got);
    assert_same(&got, &want);
    cairn_wal_destroy(&w);
    cr_assert_eq(count_files(wal_dir(), ".tmp"), 0);
    /* a file named like a segment but without the header */
    f = fopen(seg_file("0000000000000004-0000000000000015.wal"), "w");
    fputs("CAIRNWAX not really a segment, but long enough", f);
    fclose(f);
    char eb[512];
    cr_assert_eq(open_fail(wal_dir(), &o, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "0000000000000004-0000000000000015.wal at offset 0: not a Cairn WAL segment"), "%s", eb);
    unlink(seg_file("0000000000000004-0000000000000015.wal"));
    /* a missing segment in the middle */
    unlink(seg_file("0000000000000001-0000000000000006.wal"));
    cr_assert_eq(open_fail(wal_dir(), &o, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "jumps from 0 to 2"), "%s", eb);
    model_free(&got);
    model_free(&want);
}

/* fuzz_wal found it: a lone segment numbered 2^64-1 (header checksum right) was accepted; the
 * next segment was created as number 0 (it wrapped) and the WAL then refused to open ("jumps
 * from 0 to 18446744073709551615"). Numbers of 2^63 and more are refused as corruption. */
Test(wal, segment_numbers_that_would_wrap_are_corrupt)
{
    uint8_t h[40] = "CAIRNWAL";
    cairn_put_le32(h + 8, 1);
    cairn_put_le64(h + 16, UINT64_MAX);
    cairn_put_le64(h + 24, 5);
    cairn_put_le32(h + 36, cairn_crc32c(h, 36));
    mkdir(wal_dir(), 0755);
    FILE *f = fopen(seg_file("ffffffffffffffff-0000000000000005.wal"), "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(h, 1, sizeof h, f), sizeof h);
    cr_assert_eq(fwrite("\0\0\0\0\0\0\0\0", 1, 8, f), 8);
    fclose(f);
    char eb[512];
    cairn_wal_opts_t o = {.segment_bytes = 512};
    cr_assert_eq(open_fail(wal_dir(), &o, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "ffffffffffffffff-0000000000000005.wal at offset 0: sequence or first index of 2^63 or more"),
              "%s", eb);
}

static int fail_entry(void *ctx, const cairn_wal_entry_t *e) { return e->index == 7 ? CAIRN_ENOSPC : 0; }

Test(wal, callback_error_stops_open)
{
    model_t want = {0};
    three_batches(&want);
    cairn_wal_replay_t cb = {.on_entry = NULL, .on_hardstate = NULL};
    int err;
    cairn_wal_t *w = cairn_wal_open(wal_dir(), NULL, &cb, &err, NULL, 0);
    cr_assert_not_null(w, "NULL callbacks are fine");
    cairn_wal_destroy(&w);
    cb.on_entry = fail_entry;
    char eb[256];
    w = cairn_wal_open(wal_dir(), NULL, &cb, &err, eb, sizeof eb);
    cr_assert_null(w);
    cr_assert_eq(err, CAIRN_ENOSPC);
    cr_assert(strstr(eb, "callback"), "%s", eb);
    model_free(&want);
}

/* Each bad append is refused, and it poisons the WAL: the batch buffered before it is dropped
 * and nothing is reported durable any more (a caller that ignored the error must not get an
 * ack for a batch with a record missing). */
Test(wal, append_rejects_bad_input)
{
    static const char *why[] = {"index 0",         "data NULL with len",     "too big", "hard state NULL",
                                "snapshot index 0", "index 2^63 (it would wrap)", "snapshot index 2^63"};
    for (int k = 0; k < 7; k++) {
        model_t m = {0};
        char dir[512];
        snprintf(dir, sizeof dir, "%s-%d", wal_dir(), k);
        cairn_wal_t *w = open_ok(dir, NULL, &m);
        cairn_wal_entry_t good = {1, 1, 0, (const uint8_t *)"x", 1};
        cr_assert_eq(cairn_wal_append_entry(w, &good), 0);
        cairn_wal_entry_t e = {0, 1, 0, NULL, 0};
        int rc;
        switch (k) {
        case 0: rc = cairn_wal_append_entry(w, &e); break;
        case 1: e.index = 2; e.len = 3; rc = cairn_wal_append_entry(w, &e); break;
        case 2:
            e.index = 2;
            e.data = (const uint8_t *)"abc";
            e.len = CAIRN_WAL_MAX_ENTRY_BYTES + 1;
            rc = cairn_wal_append_entry(w, &e);
            break;
        case 3: rc = cairn_wal_append_hardstate(w, NULL); break;
        case 4: rc = cairn_wal_append_snapshot(w, 0, 1); break;
        case 5: e.index = 1ull << 63; rc = cairn_wal_append_entry(w, &e); break;
        default: rc = cairn_wal_append_snapshot(w, 1ull << 63, 1); break;
        }
        cr_assert_eq(rc, k == 2 ? CAIRN_ETOOBIG : CAIRN_EINVAL, "%s", why[k]);
        cr_assert_eq(cairn_wal_pending_bytes(w), 0, "%s: the batch is dropped", why[k]);
        cr_assert_eq(cairn_wal_append_entry(w, &good), CAIRN_ESTATE, "%s: the WAL refuses appends", why[k]);
        cr_assert_eq(cairn_wal_sync(w), CAIRN_ESTATE, "%s: and syncs", why[k]);
        cr_assert_eq(cairn_wal_last_index(w), 0, "%s: nothing durable", why[k]);
        cairn_wal_destroy(&w);
        model_free(&m);
    }
    cairn_wal_entry_t e = {1, 1, 0, NULL, 0};
    cr_assert_eq(cairn_wal_append_entry(NULL, &e), CAIRN_EINVAL);
    cr_assert_eq(cairn_wal_sync(NULL), CAIRN_EINVAL);
}

/* A fault-injecting allocator for the batch buffer: fails every call once armed. */
static int g_fail_alloc;
static void *failing_realloc(void *p, size_t n) { return g_fail_alloc ? NULL : realloc(p, n); }

/* issue 7: stored ignored a failed hard state append; the sync that followed wrote the
 * entries without the new term/vote and stored acknowledged the vote. Now the failed append
 * poisons the batch: the sync fails, nothing of it is durable or replayed. */
Test(wal, failed_hardstate_append_is_never_synced)
{
    for (int what = 0; what < 3; what++) {
        model_t m = {0}, got = {0};
        char dir[512];
        snprintf(dir, sizeof dir, "%s-%d", wal_dir(), what);
        cairn_wal_opts_t o = {.realloc_fn = failing_realloc};
        g_fail_alloc = 0;
        cairn_wal_t *w = open_ok(dir, &o, &m);
        put_hs(w, NULL, 1, 0, 0);
        cr_assert_eq(cairn_wal_sync(w), 0);
        /* a batch big enough that the next record needs the buffer to grow */
        uint8_t big[3000] = {0};
        for (uint64_t i = 1; i <= 3; i++) {
            cairn_wal_entry_t e = {i, 1, 0, big, sizeof big};
            cr_assert_eq(cairn_wal_append_entry(w, &e), 0);
        }
        g_fail_alloc = 1;
        /* append until a record needs the buffer to grow: that allocation fails */
        int rc = 0;
        for (int k = 0; k < 100000 && rc == 0; k++) {
            if (what == 0) {
                cairn_wal_hardstate_t hs = {2, 7, 0};
                rc = cairn_wal_append_hardstate(w, &hs);
            } else if (what == 1) {
                cairn_wal_entry_t e = {4 + (uint64_t)k, 1, 0, big, 100};
                rc = cairn_wal_append_entry(w, &e);
            } else {
                rc = cairn_wal_append_snapshot(w, 9, 1);
            }
        }
        g_fail_alloc = 0;
        cr_assert_eq(rc, CAIRN_ENOMEM, "case %d: the allocation failure is reported", what);
        cr_assert_eq(cairn_wal_sync(w), CAIRN_ESTATE, "case %d: a batch with a hole is never synced", what);
        cr_assert_eq(cairn_wal_last_index(w), 0, "case %d: nothing of it is durable", what);
        cairn_wal_destroy(&w);
        /* reopen: only the first, synced hard state is there */
        w = open_ok(dir, NULL, &got);
        cr_assert_eq(got.n, 0, "case %d: no entry of the failed batch was written", what);
        cr_assert_eq(got.hs.term, 1, "case %d: the term of the failed batch is not on disk", what);
        cairn_wal_destroy(&w);
        model_free(&m);
        model_free(&got);
    }
}

/* ---- failures injected through the file layer ---------------------------------------- */

static const char *CDIR = "/data/wal";

static cairn_wal_t *cfs_open_ok(crashfs_t *fs, size_t seg, model_t *m)
{
    cairn_wal_opts_t o = {.segment_bytes = seg, .ops = &fs->ops};
    return open_ok(CDIR, &o, m);
}

Test(wal, enospc_on_pwrite_keeps_synced_data)
{
    crashfs_t *fs = crashfs_new();
    model_t m = {0}, want = {0}, got = {0};
    cairn_wal_t *w = cfs_open_ok(fs, 1 << 16, &m);
    put_entries(w, &want, 1, 10, 1, 100);
    put_hs(w, &want, 1, 1, 10);
    cr_assert_eq(cairn_wal_sync(w), 0);
    fs->pwrite_quota = 300; /* the next batch gets half written, then ENOSPC */
    put_entries(w, NULL, 11, 20, 1, 100);
    cr_assert_eq(cairn_wal_sync(w), CAIRN_ENOSPC);
    cr_assert_eq(cairn_wal_last_index(w), 10, "nothing of the failed batch is reported durable");
    cairn_wal_entry_t e = {21, 1, 0, NULL, 0};
    cr_assert_eq(cairn_wal_append_entry(w, &e), CAIRN_ESTATE, "refuses appends after a failed sync");
    cr_assert_eq(cairn_wal_sync(w), CAIRN_ESTATE);
    cairn_wal_destroy(&w);
    fs->pwrite_quota = -1;
    w = cfs_open_ok(fs, 1 << 16, &got); /* the partial batch is a torn tail */
    assert_same(&got, &want);
    put_entries(w, &want, 11, 12, 2, 100);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cairn_wal_destroy(&w);
    model_free(&got);
    w = cfs_open_ok(fs, 1 << 16, &got);
    assert_same(&got, &want);
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
    crashfs_destroy(&fs);
}

Test(wal, enospc_on_segment_preallocation)
{
    crashfs_t *fs = crashfs_new();
    model_t m = {0}, want = {0}, got = {0};
    cairn_wal_t *w = cfs_open_ok(fs, 1024, &m);
    put_entries(w, &want, 1, 5, 1, 100);
    cr_assert_eq(cairn_wal_sync(w), 0);
    fs->fallocate_errno = ENOSPC;
    put_entries(w, NULL, 6, 20, 1, 100); /* does not fit: needs a new segment */
    cr_assert_eq(cairn_wal_sync(w), CAIRN_ENOSPC);
    cr_assert_eq(cairn_wal_append_hardstate(w, &(cairn_wal_hardstate_t){1, 1, 1}), CAIRN_ESTATE);
    cairn_wal_destroy(&w);
    fs->fallocate_errno = 0;
    w = cfs_open_ok(fs, 1024, &got);
    assert_same(&got, &want);
    cr_assert_eq(cairn_wal_segment_count(w), 1, "the half-made segment was removed");
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
    crashfs_destroy(&fs);
}

Test(wal, fdatasync_failure_is_sticky)
{
    crashfs_t *fs = crashfs_new();
    model_t m = {0}, want = {0}, got = {0};
    cairn_wal_t *w = cfs_open_ok(fs, 1 << 16, &m);
    put_entries(w, &want, 1, 3, 1, 10);
    cr_assert_eq(cairn_wal_sync(w), 0);
    fs->fdatasync_fail_at = fs->n_fdatasync + 1;
    put_entries(w, NULL, 4, 6, 1, 10);
    cr_assert_eq(cairn_wal_sync(w), CAIRN_EIO);
    cairn_wal_entry_t e = {7, 1, 0, NULL, 0};
    cr_assert_eq(cairn_wal_append_entry(w, &e), CAIRN_ESTATE);
    cr_assert_eq(cairn_wal_sync(w), CAIRN_ESTATE, "no retry of a failed fsync");
    cairn_wal_destroy(&w);
    crashfs_crash(fs, 1); /* the unsynced batch may or may not survive; 1..3 must */
    w = cfs_open_ok(fs, 1 << 16, &got);
    cr_assert_geq(got.n, 3);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(got.e[i].index, want.e[i].index);
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
    crashfs_destroy(&fs);
}

/* ---- recovery in place after a failed sync (a full disk that gets space again) -------- */

/* A batch that failed half way is dropped, recover zeroes what it wrote, and the WAL goes on:
 * a shorter batch takes its place and the segment then rolls over. Without the zeroing the
 * dropped batch's tail would sit after the last batch of a segment that is no longer the
 * last one - corruption at the next open. */
Test(wal, enospc_on_pwrite_recovers_in_place)
{
    crashfs_t *fs = crashfs_new();
    model_t m = {0}, want = {0}, got = {0};
    cairn_wal_t *w = cfs_open_ok(fs, 4096, &m);
    put_entries(w, &want, 1, 5, 1, 100);
    cr_assert_eq(cairn_wal_sync(w), 0);
    fs->pwrite_quota = 1000; /* the next batch gets 1000 bytes written, then ENOSPC */
    put_entries(w, NULL, 6, 20, 1, 100);
    cr_assert_eq(cairn_wal_sync(w), CAIRN_ENOSPC);
    cr_assert_eq(cairn_wal_failed(w), CAIRN_ENOSPC);
    cr_assert_gt(cairn_wal_dirty_bytes(w), 0, "the failed pwrite may have written");
    cr_assert(strstr(cairn_wal_error(w), "No space left on device"), "%s", cairn_wal_error(w));
    cr_assert(strstr(cairn_wal_error(w), "/data/wal/"), "names the file: %s", cairn_wal_error(w));
    cr_assert_eq(cairn_wal_recover(w), CAIRN_ENOSPC, "still full: the zeroing fails too");
    cr_assert_eq(cairn_wal_append_entry(w, &(cairn_wal_entry_t){6, 1, 0, NULL, 0}), CAIRN_ESTATE);
    fs->pwrite_quota = -1;
    cr_assert_eq(cairn_wal_recover(w), 0);
    cr_assert_eq(cairn_wal_failed(w), 0);
    cr_assert_eq(cairn_wal_dirty_bytes(w), 0);
    cr_assert_eq(cairn_wal_last_index(w), 5, "nothing of the dropped batch is durable");
    put_entries(w, &want, 6, 6, 2, 10); /* shorter than the dropped batch */
    cr_assert_eq(cairn_wal_sync(w), 0);
    put_entries(w, &want, 7, 40, 2, 100); /* does not fit: a new segment */
    cr_assert_eq(cairn_wal_sync(w), 0);
    cr_assert_eq(cairn_wal_segment_count(w), 2);
    cairn_wal_destroy(&w);
    w = cfs_open_ok(fs, 4096, &got);
    cr_assert_not_null(w, "the first segment, no longer the last, is not corrupt");
    assert_same(&got, &want);
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
    crashfs_destroy(&fs);
}

/* After a failed fdatasync the dropped batch may be in the page cache or on disk, whole. Once
 * recover succeeded it is gone for good: whatever a power loss keeps, it is never replayed. */
Test(wal, fdatasync_failure_recovered_batch_never_replayed)
{
    for (uint64_t seed = 1; seed <= 16; seed++) {
        crashfs_t *fs = crashfs_new();
        model_t m = {0}, want = {0}, got = {0};
        cairn_wal_t *w = cfs_open_ok(fs, 1 << 16, &m);
        put_entries(w, &want, 1, 3, 1, 50);
        put_hs(w, &want, 1, 7, 3);
        cr_assert_eq(cairn_wal_sync(w), 0);
        fs->fdatasync_fail_at = fs->n_fdatasync + 1;
        put_entries(w, NULL, 4, 9, 1, 50);
        put_hs(w, NULL, 2, 8, 9); /* a term and vote that never became durable */
        cr_assert_eq(cairn_wal_sync(w), CAIRN_EIO);
        cairn_wal_hardstate_t hs;
        cr_assert_eq(cairn_wal_hardstate(w, &hs), 1);
        cr_assert(hs.term == 1 && hs.vote == 7, "the durable hard state, not the failed one");
        cr_assert_eq(cairn_wal_recover(w), 0);
        cairn_wal_destroy(&w);
        crashfs_crash(fs, seed);
        w = cfs_open_ok(fs, 1 << 16, &got);
        assert_same(&got, &want);
        cairn_wal_destroy(&w);
        model_free(&m);
        model_free(&got);
        model_free(&want);
        crashfs_destroy(&fs);
    }
}

/* The next segment cannot be preallocated: nothing reached a file, recover needs no I/O, and
 * the rollover succeeds once the space is back. */
Test(wal, enospc_on_preallocation_recovers_in_place)
{
    crashfs_t *fs = crashfs_new();
    model_t m = {0}, want = {0}, got = {0};
    cairn_wal_t *w = cfs_open_ok(fs, 1024, &m);
    put_entries(w, &want, 1, 5, 1, 100);
    cr_assert_eq(cairn_wal_sync(w), 0);
    fs->fallocate_errno = ENOSPC;
    put_entries(w, NULL, 6, 20, 1, 100);
    cr_assert_eq(cairn_wal_sync(w), CAIRN_ENOSPC);
    cr_assert_eq(cairn_wal_dirty_bytes(w), 0, "nothing of the batch reached a file");
    cr_assert(strstr(cairn_wal_error(w), "preallocate"), "%s", cairn_wal_error(w));
    long pw = fs->n_pwrite;
    cr_assert_eq(cairn_wal_recover(w), 0);
    cr_assert_eq(fs->n_pwrite, pw, "no I/O to recover");
    cr_assert_eq(cairn_wal_sync(w), 0, "nothing buffered: the dropped batch is not retried");
    cr_assert_eq(cairn_wal_last_index(w), 5);
    put_entries(w, NULL, 6, 20, 1, 100); /* still full */
    cr_assert_eq(cairn_wal_sync(w), CAIRN_ENOSPC);
    cr_assert_eq(cairn_wal_recover(w), 0);
    fs->fallocate_errno = 0;
    put_entries(w, &want, 6, 20, 1, 100);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cr_assert_eq(cairn_wal_segment_count(w), 2);
    cairn_wal_destroy(&w);
    w = cfs_open_ok(fs, 1024, &got);
    assert_same(&got, &want);
    cr_assert_eq(cairn_wal_segment_count(w), 2, "one segment per sequence number");
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    model_free(&want);
    crashfs_destroy(&fs);
}

/* A directory too small for the first segment: the message says how much is needed. */
Test(wal, first_segment_enospc_says_how_much_is_needed)
{
    crashfs_t *fs = crashfs_new();
    fs->fallocate_errno = ENOSPC;
    cairn_wal_opts_t o = {.segment_bytes = 1 << 20, .ops = &fs->ops};
    int err = 0;
    char eb[512];
    cairn_wal_t *w = cairn_wal_open(CDIR, &o, NULL, &err, eb, sizeof eb);
    cr_assert_null(w);
    cr_assert_eq(err, CAIRN_ENOSPC);
    cr_assert(strstr(eb, "1048576 bytes"), "%s", eb);
    cr_assert(strstr(eb, "CAIRN_WAL_SEGMENT_BYTES"), "%s", eb);
    crashfs_destroy(&fs);
}

/* ---- the crash test ------------------------------------------------------------------ */

typedef struct {
    model_t acked;    /* state after the last successful sync */
    model_t inflight; /* acked + the batch being synced */
    uint64_t release_floor;
    int crashed_in_open;
} crash_run_t;

/* Runs workload `wseed` against fs until it finishes or an operation fails. */
static void run_workload(crashfs_t *fs, uint64_t wseed, crash_run_t *cr)
{
    uint64_t rs = wseed;
    cairn_wal_opts_t o = {.segment_bytes = 1024 + 512 * (wseed % 3), .ops = &fs->ops};
    model_t scratch = {0};
    cairn_wal_replay_t cb = replay_into(&scratch);
    int err;
    cairn_wal_t *w = cairn_wal_open(CDIR, &o, &cb, &err, NULL, 0);
    model_free(&scratch);
    if (!w) {
        cr->crashed_in_open = 1;
        return;
    }
    uint64_t next = 1, term = 1, commit = 0;
    uint8_t data[3000];
    for (int b = 0; b < 40; b++) {
        model_copy(&cr->inflight, &cr->acked);
        if (next > 3 && cfs_rand(&rs) % 6 == 0) { /* a new leader truncates */
            next -= 1 + cfs_rand(&rs) % 3;
            term++;
        }
        int k = 1 + (int)(cfs_rand(&rs) % 5);
        for (int i = 0; i < k; i++) {
            size_t len = cfs_rand(&rs) % 7 == 0 ? 600 + cfs_rand(&rs) % 2000 : cfs_rand(&rs) % 120;
            fill(data, len, rs + (uint64_t)i);
            cairn_wal_entry_t e = {next++, term, (uint8_t)(cfs_rand(&rs) % 4), data, len};
            cr_assert_eq(cairn_wal_append_entry(w, &e), 0);
            model_entry(&cr->inflight, &e);
        }
        if (cfs_rand(&rs) % 3 == 0) {
            commit = next - 1 - cfs_rand(&rs) % 2;
            cairn_wal_hardstate_t hs = {term, 1 + term % 3, commit};
            cr_assert_eq(cairn_wal_append_hardstate(w, &hs), 0);
            cr->inflight.hs = hs;
            cr->inflight.have_hs = 1;
        }
        if (cairn_wal_sync(w) != 0)
            goto out;
        model_copy(&cr->acked, &cr->inflight);
        uint64_t back = cfs_rand(&rs) % 8;
        if (cfs_rand(&rs) % 8 == 0 && next - 1 > back) {
            uint64_t idx = next - 1 - back;
            if (idx > cr->release_floor)
                cr->release_floor = idx;
            if (cairn_wal_release_before(w, idx) < 0)
                goto out;
        }
    }
    model_copy(&cr->inflight, &cr->acked);
out:
    cairn_wal_destroy(&w);
}

static void crash_check(uint64_t wseed, long point, uint64_t cseed, int garble, long *points_out)
{
    crashfs_t *fs = crashfs_new();
    fs->garble = garble;
    crash_run_t cr = {0};
    crashfs_arm(fs, point);
    run_workload(fs, wseed, &cr);
    if (points_out)
        *points_out = fs->points;
    int crashed = fs->crashed;
    crashfs_crash(fs, cseed);

    cairn_wal_opts_t o = {.segment_bytes = 1024, .ops = &fs->ops};
    model_t got = {0};
    cairn_wal_replay_t cb = replay_into(&got);
    int err = 0;
    char eb[512] = "";
    cairn_wal_t *w;
    if (cseed % 4 == 3) {
        /* crash again, during recovery (while the torn tail is being cut, if there is one) */
        crashfs_arm(fs, 1 + (long)(cseed / 4 % 4));
        w = cairn_wal_open(CDIR, &o, &cb, &err, eb, sizeof eb);
        cairn_wal_destroy(&w);
        crashfs_crash(fs, cseed + 17);
        model_free(&got);
    }
    w = cairn_wal_open(CDIR, &o, &cb, &err, eb, sizeof eb);
    cr_assert_not_null(w, "workload %llu crash point %ld seed %llu: reopen failed: %s", (unsigned long long)wseed,
                       point, (unsigned long long)cseed, eb);
    char why1[256], why2[256];
    const char *d1 = model_diff(&got, &cr.acked, why1, sizeof why1);
    const char *d2 = d1 ? model_diff(&got, &cr.inflight, why2, sizeof why2) : NULL;
    cr_assert(!d1 || !d2, "workload %llu crash point %ld seed %llu (crashed %d): %s / %s",
              (unsigned long long)wseed, point, (unsigned long long)cseed, crashed, d1, d2);
    /* release never drops the segment holding index-1 */
    if (got.n)
        cr_assert_leq(got.e[0].index, cr.release_floor > 1 ? cr.release_floor - 1 : 1,
                      "workload %llu crash point %ld seed %llu: log starts at %llu, released before %llu",
                      (unsigned long long)wseed, point, (unsigned long long)cseed,
                      (unsigned long long)got.e[0].index, (unsigned long long)cr.release_floor);
    cr_assert_eq(cairn_wal_last_index(w), got.n ? got.e[got.n - 1].index : 0);

    /* the recovered WAL takes new writes, and they replay after what was recovered */
    model_t want = {0};
    model_copy(&want, &got);
    uint64_t next = got.n ? got.e[got.n - 1].index + 1 : 1;
    put_entries(w, &want, next, next + 2, 99, 40);
    put_hs(w, &want, 99, 2, next);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cairn_wal_destroy(&w);
    model_t again = {0};
    cb = replay_into(&again);
    w = cairn_wal_open(CDIR, &o, &cb, &err, eb, sizeof eb);
    cr_assert_not_null(w, "workload %llu crash point %ld seed %llu: second reopen failed: %s",
                       (unsigned long long)wseed, point, (unsigned long long)cseed, eb);
    const char *d3 = model_diff(&again, &want, why1, sizeof why1);
    cr_assert_null(d3, "workload %llu crash point %ld seed %llu: after recovery: %s", (unsigned long long)wseed,
                   point, (unsigned long long)cseed, d3);
    cairn_wal_destroy(&w);
    model_free(&again);
    model_free(&want);
    model_free(&got);
    model_free(&cr.acked);
    model_free(&cr.inflight);
    crashfs_destroy(&fs);
}

Test(wal, crash_at_every_point_keeps_every_synced_record, .timeout = 300)
{
    /* For each workload: crash at every crash point (every write, sync, create, rename,
     * unlink, ...), with several seeds for which unsynced sectors survive or get garbled,
     * then check that what replays is exactly the state after the last acknowledged sync,
     * or after the sync in flight - never less, never a mix. */
    int runs = 0;
    for (uint64_t wseed = 1; wseed <= 4; wseed++) {
        long total = 0;
        crash_check(wseed, 0, 0, 0, &total); /* no crash: count the crash points */
        cr_assert_gt(total, 100);
        for (long point = 1; point <= total; point++)
            for (uint64_t cseed = 0; cseed < 4; cseed++, runs++)
                crash_check(wseed, point, wseed * 1000003 + (uint64_t)point * 31 + cseed, (int)(cseed & 1), NULL);
    }
    cr_log_info("crash test: %d crash runs", runs);
}

Test(wal, crashfs_really_loses_unsynced_writes)
{
    /* guards the crash test against a crash layer that keeps everything */
    crashfs_t *fs = crashfs_new();
    model_t m = {0}, got = {0};
    cairn_wal_opts_t o = {.segment_bytes = 4096, .ops = &fs->ops, .no_sync = 1};
    cairn_wal_t *w = open_ok(CDIR, &o, &m);
    put_entries(w, NULL, 1, 5, 1, 10);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cairn_wal_destroy(&w);
    crashfs_crash(fs, 3);
    cairn_wal_replay_t cb = replay_into(&got);
    int err;
    w = cairn_wal_open(CDIR, &o, &cb, &err, NULL, 0);
    if (w)
        cr_assert_eq(got.n, 0, "no_sync: a crash must be able to lose the batch");
    cairn_wal_destroy(&w);
    model_free(&m);
    model_free(&got);
    crashfs_destroy(&fs);
}

/* ---- performance --------------------------------------------------------------------- */

typedef struct {
    cairn_fileops_t ops;
    const cairn_fileops_t *in;
    long pwrite, fdatasync, other;
} counting_t;

#define IN ((counting_t *)ctx)->in
static ssize_t cnt_pwrite(void *ctx, int fd, const void *b, size_t n, uint64_t off)
{
    ((counting_t *)ctx)->pwrite++;
    return IN->pwrite(IN->ctx, fd, b, n, off);
}
static int cnt_fdatasync(void *ctx, int fd)
{
    ((counting_t *)ctx)->fdatasync++;
    return IN->fdatasync(IN->ctx, fd);
}
#undef IN

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double bench(int no_sync, counting_t *c, int *segs)
{
    *c = (counting_t){.ops = *cairn_fileops_posix(), .in = cairn_fileops_posix()};
    c->ops.ctx = c;
    c->ops.pwrite = cnt_pwrite;
    c->ops.fdatasync = cnt_fdatasync;
    cairn_wal_opts_t o = {.segment_bytes = 4 << 20, .ops = &c->ops, .no_sync = no_sync};
    model_t m = {0};
    cairn_wal_t *w = open_ok(wal_dir(), &o, &m);
    uint8_t data[32];
    memset(data, 'x', sizeof data);
    double t0 = now();
    for (uint64_t i = 1; i <= 100000; i++) {
        cairn_wal_entry_t e = {i, 1, 0, data, sizeof data};
        cr_assert_eq(cairn_wal_append_entry(w, &e), 0);
        if (i % 100 == 0)
            cr_assert_eq(cairn_wal_sync(w), 0);
    }
    double t = now() - t0;
    *segs = (int)cairn_wal_segment_count(w);
    cairn_wal_destroy(&w);
    return t;
}

Test(wal, append_100k_entries_in_batches_of_100, .timeout = 300)
{
    counting_t c;
    int segs;
    double t = bench(1, &c, &segs);
    /* one pwrite per batch, plus the header of each segment */
    cr_assert_eq(c.pwrite, 1000 + segs, "pwrites: %ld, segments %d", c.pwrite, segs);
    cr_assert_eq(c.fdatasync, 0);
    cr_assert_lt(t, 2.0, "100k appends without fsync took %.3f s", t);
    model_t got = {0};
    cairn_wal_t *w = open_ok(wal_dir(), NULL, &got);
    cr_assert_eq(got.n, 100000);
    cairn_wal_destroy(&w);
    model_free(&got);
    rm_tmpdir();
    mk_tmpdir();
    double ts = bench(0, &c, &segs);
    cr_assert_eq(c.fdatasync, 1000, "one fdatasync per batch");
    cr_assert_eq(c.pwrite, 1000 + segs);
    fprintf(stderr, "wal bench: 100k x 32-byte entries, 1000 batches: %.1f ms without fsync, %.1f ms with\n",
            t * 1e3, ts * 1e3);
}

/* ---- SNAPSHOT records ------------------------------------------------------------------ */

/* Every replay callback in order, and the log Raft's rule makes of them: a SNAPSHOT (S, T)
 * keeps the entries after S only if the log held (S, T) (or starts right after it), else
 * drops them all. */
typedef struct {
    char kind[256];        /* 'e' entry, 'h' hard state, 's' snapshot */
    uint64_t idx[256], term[256];
    size_t n;
    model_t log;
    uint64_t snap_index, snap_term;
} sev_t;

static int sev_entry(void *ctx, const cairn_wal_entry_t *e)
{
    sev_t *v = ctx;
    if (v->n < 256) {
        v->kind[v->n] = 'e';
        v->idx[v->n] = e->index;
        v->term[v->n++] = e->term;
    }
    model_entry(&v->log, e);
    return 0;
}

static int sev_hs(void *ctx, const cairn_wal_hardstate_t *hs)
{
    sev_t *v = ctx;
    if (v->n < 256) {
        v->kind[v->n] = 'h';
        v->idx[v->n] = hs->commit;
        v->term[v->n++] = hs->term;
    }
    return 0;
}

static int sev_snap(void *ctx, uint64_t index, uint64_t term)
{
    sev_t *v = ctx;
    if (v->n < 256) {
        v->kind[v->n] = 's';
        v->idx[v->n] = index;
        v->term[v->n++] = term;
    }
    int held = v->snap_index == index && v->snap_term == term;
    for (size_t i = 0; i < v->log.n; i++)
        if (v->log.e[i].index == index && v->log.e[i].term == term)
            held = 1;
    size_t keep = 0;
    if (held) {
        size_t k = 0;
        while (k < v->log.n && v->log.e[k].index <= index)
            free(v->log.e[k++].data);
        memmove(v->log.e, v->log.e + k, (v->log.n - k) * sizeof *v->log.e);
        keep = v->log.n - k;
    } else {
        for (size_t i = 0; i < v->log.n; i++)
            free(v->log.e[i].data);
    }
    v->log.n = keep;
    v->snap_index = index;
    v->snap_term = term;
    return 0;
}

static cairn_wal_t *sev_open(const cairn_wal_opts_t *o, sev_t *v)
{
    memset(v, 0, sizeof *v);
    cairn_wal_replay_t cb = {sev_entry, sev_hs, v, sev_snap};
    int err = 1;
    char eb[512] = "";
    cairn_wal_t *w = cairn_wal_open(wal_dir(), o, &cb, &err, eb, sizeof eb);
    cr_assert_not_null(w, "open failed: %d %s", err, eb);
    return w;
}

static void sev_check_log(const sev_t *v, uint64_t first, uint64_t last)
{
    cr_assert_eq(v->log.n, last >= first ? last - first + 1 : 0, "log has %zu entries, want %llu..%llu", v->log.n,
                 (unsigned long long)first, (unsigned long long)last);
    for (size_t i = 0; i < v->log.n; i++)
        cr_assert_eq(v->log.e[i].index, first + i);
}

Test(wal, snapshot_record_replayed_in_log_order)
{
    sev_t v;
    cairn_wal_t *w = sev_open(NULL, &v);
    cr_assert_eq(cairn_wal_last_snapshot(w, NULL, NULL), 0);
    put_entries(w, NULL, 1, 10, 1, 16);
    cr_assert_eq(cairn_wal_sync(w), 0);
    /* the install: snapshot at 20 (the log never held it), hard state, then the log goes on */
    cr_assert_eq(cairn_wal_append_snapshot(w, 20, 3), 0);
    put_hs(w, NULL, 3, 2, 20);
    cr_assert_eq(cairn_wal_last_snapshot(w, NULL, NULL), 0, "not durable before sync");
    cr_assert_eq(cairn_wal_sync(w), 0);
    uint64_t si = 0, st = 0;
    cr_assert_eq(cairn_wal_last_snapshot(w, &si, &st), 1);
    cr_assert_eq(si, 20);
    cr_assert_eq(st, 3);
    cr_assert_eq(cairn_wal_last_index(w), 20, "a snapshot above the last entry raises it");
    put_entries(w, NULL, 21, 25, 3, 16);
    cr_assert_eq(cairn_wal_sync(w), 0);
    /* a second snapshot the log did hold: entries after it survive */
    cr_assert_eq(cairn_wal_append_snapshot(w, 23, 3), 0);
    cr_assert_eq(cairn_wal_sync(w), 0);
    /* appended, never synced: must not be replayed */
    cr_assert_eq(cairn_wal_append_snapshot(w, 99, 9), 0);
    cairn_wal_destroy(&w);

    w = sev_open(NULL, &v);
    const char *want_kinds = "eeeeeeeeeesheeeees";
    cr_assert_eq(v.n, strlen(want_kinds));
    for (size_t i = 0; i < v.n; i++)
        cr_assert_eq(v.kind[i], want_kinds[i], "callback %zu is '%c', want '%c'", i, v.kind[i], want_kinds[i]);
    cr_assert_eq(v.idx[10], 20);
    cr_assert_eq(v.term[10], 3);
    cr_assert_eq(v.idx[17], 23);
    sev_check_log(&v, 24, 25);
    cr_assert(cairn_wal_last_snapshot(w, &si, &st) == 1 && si == 23 && st == 3);
    cr_assert_eq(cairn_wal_last_index(w), 25);
    cairn_wal_destroy(&w);
    model_free(&v.log);

    /* a NULL on_snapshot is allowed: the record is skipped by the caller, still tracked */
    model_t m = {0};
    w = open_ok(wal_dir(), NULL, &m);
    cr_assert_eq(m.raw_entries, 15);
    cr_assert(cairn_wal_last_snapshot(w, &si, &st) == 1 && si == 23);
    cairn_wal_destroy(&w);
    model_free(&m);
}

Test(wal, snapshot_record_survives_segment_release)
{
    /* small segments: the snapshot record's own segment is released, its meaning is not */
    cairn_wal_opts_t o = {.segment_bytes = 512};
    sev_t v;
    cairn_wal_t *w = sev_open(&o, &v);
    put_entries(w, NULL, 1, 5, 1, 50);
    put_hs(w, NULL, 1, 1, 5);
    cr_assert_eq(cairn_wal_sync(w), 0);
    cr_assert_eq(cairn_wal_append_snapshot(w, 100, 2), 0);
    put_hs(w, NULL, 2, 1, 100);
    cr_assert_eq(cairn_wal_sync(w), 0);
    for (uint64_t b = 0; b < 12; b++) {
        put_entries(w, NULL, 101 + 5 * b, 105 + 5 * b, 2, 50);
        cr_assert_eq(cairn_wal_sync(w), 0);
    }
    cr_assert_gt(cairn_wal_segment_count(w), 6);
    cairn_wal_destroy(&w);

    /* every segment after the install starts with copies: replaying them changes nothing */
    w = sev_open(&o, &v);
    sev_check_log(&v, 101, 160);
    cr_assert_eq(v.snap_index, 100);
    size_t snaps = 0;
    for (size_t i = 0; i < v.n; i++)
        snaps += v.kind[i] == 's';
    cr_assert_gt(snaps, 3, "segment copies are replayed too (%zu)", snaps);
    cr_assert_gt(cairn_wal_release_before(w, 150), 3);
    cairn_wal_destroy(&w);
    model_free(&v.log);

    w = sev_open(&o, &v);
    cr_assert_eq(v.kind[0], 's', "the oldest remaining segment starts with the snapshot copy");
    cr_assert_eq(v.idx[0], 100);
    cr_assert_eq(v.term[0], 2);
    cr_assert_eq(v.kind[1], 'h', "then the hard state copy");
    cr_assert_eq(v.idx[1], 100);
    uint64_t si = 0, st = 0;
    cr_assert(cairn_wal_last_snapshot(w, &si, &st) == 1 && si == 100 && st == 2);
    cr_assert_eq(v.log.e[v.log.n - 1].index, 160);
    cairn_wal_destroy(&w);
    model_free(&v.log);
}

Test(wal, torn_snapshot_batch_is_not_replayed)
{
    sev_t v;
    cairn_wal_opts_t o = {.segment_bytes = 4096};
    cairn_wal_t *w = sev_open(&o, &v);
    put_entries(w, NULL, 1, 5, 1, 10); /* batch at 40, 232 bytes */
    cr_assert_eq(cairn_wal_sync(w), 0);
    cr_assert_eq(cairn_wal_append_snapshot(w, 50, 4), 0); /* batch at 272: 32 + 32 */
    cr_assert_eq(cairn_wal_sync(w), 0);
    cairn_wal_destroy(&w);
    flip(seg_file(SEG0), 272 + BATCH + 12); /* inside the SNAPSHOT record of the last batch */
    capture_begin();
    w = sev_open(&o, &v);
    char *log = capture_end();
    cr_assert(strstr(log, "wal torn tail truncated"), "log: %s", log);
    cr_assert_eq(cairn_wal_last_snapshot(w, NULL, NULL), 0);
    for (size_t i = 0; i < v.n; i++)
        cr_assert_neq(v.kind[i], 's', "a torn snapshot record must not be replayed");
    sev_check_log(&v, 1, 5);
    cairn_wal_destroy(&w);
    model_free(&v.log);
}

Test(wal, damaged_snapshot_record_before_valid_data_is_corrupt)
{
    sev_t v;
    cairn_wal_opts_t o = {.segment_bytes = 4096};
    cairn_wal_t *w = sev_open(&o, &v);
    cr_assert_eq(cairn_wal_append_snapshot(w, 50, 4), 0); /* batch at 40: 32 + 32 */
    cr_assert_eq(cairn_wal_sync(w), 0);
    put_entries(w, NULL, 51, 55, 4, 10); /* batch at 104 */
    cr_assert_eq(cairn_wal_sync(w), 0);
    cairn_wal_destroy(&w);
    model_free(&v.log);
    char eb[512];
    flip(seg_file(SEG0), 40 + BATCH + 12);
    cr_assert_eq(open_fail(wal_dir(), &o, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "offset 72: record checksum mismatch"), "%s", eb);
    flip(seg_file(SEG0), 40 + BATCH + 12); /* repair */
    /* a snapshot record of the wrong length with a valid checksum: corruption, never torn */
    uint8_t rec[32];
    peek(seg_file(SEG0), 40 + BATCH, rec, sizeof rec);
    put_le32(rec, 16);
    put_le32(rec + 4, cairn_crc32c_extend(cairn_crc32c(rec, 4), rec + 8, 16));
    patch(seg_file(SEG0), 40 + BATCH, rec, sizeof rec);
    cr_assert_eq(open_fail(wal_dir(), &o, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "snapshot record has length 16"), "%s", eb);
}
