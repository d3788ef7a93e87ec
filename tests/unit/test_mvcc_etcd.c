/* Unit tests for the etcd 3.4 backend layout of the MVCC store (services/stored/mvcc_etcd.c):
 * a store with history, sub revisions, binary keys, leases, alarms, membership and a finished
 * compaction is exported; every bucket of the file is checked against what etcd would hold
 * (the "key" bucket against a model built from the store's own change events, with etcd's
 * compaction rule); the file is imported into a new store that must answer every read as the
 * original does, and exported again to the same bytes. Damaged files must be refused with a
 * message and leave no directory behind. An export taken while another thread writes must be
 * one point in time. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tmpdir.h"
#include "cairn_bbolt.h"
#include "cairn_crc32c.h"
#include "cairn_err.h"
#include "cairn_member.h"
#include "kv.pb-c.h"
#include "mvcc.h"
#include "mvcc_etcd.h"

CAIRN_TEST_DIR_FIXTURE("mvcc_etcd")

TestSuite(mvcc_etcd, .init = mkdir_tmp, .fini = rm_tmp, .timeout = 120);

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static cairn_mvcc_t *open_at(const char *dir)
{
    int err = 0;
    char eb[256] = "";
    cairn_mvcc_t *m = cairn_mvcc_open(dir, &err, eb, sizeof eb);
    cr_assert_not_null(m, "open %s: %d %s", dir, err, eb);
    return m;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static size_t varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    for (; v >= 0x80; v >>= 7)
        p[n++] = (uint8_t)(v | 0x80);
    p[n++] = (uint8_t)v;
    return n;
}

/* ---- the store's changes, as its event observer reports them ---------------------------- */

typedef struct {
    int type; /* 0 put, 1 delete */
    uint8_t *key, *value;
    size_t kn, vn;
    int64_t main, sub, create, version, lease;
} change_t;

static struct {
    change_t *v;
    size_t n, cap;
} g_ch;

static void on_event(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev, int64_t sub)
{
    (void)arg, (void)prev;
    if (g_ch.n == g_ch.cap) {
        g_ch.cap = g_ch.cap ? 2 * g_ch.cap : 256;
        g_ch.v = realloc(g_ch.v, g_ch.cap * sizeof *g_ch.v);
    }
    change_t *c = &g_ch.v[g_ch.n++];
    memset(c, 0, sizeof *c);
    c->type = type;
    c->key = malloc(kv->key_len + 1);
    memcpy(c->key, kv->key, kv->key_len);
    c->kn = kv->key_len;
    c->main = kv->mod_revision;
    c->sub = sub;
    if (type == 0) {
        c->value = malloc(kv->value_len + 1);
        if (kv->value_len)
            memcpy(c->value, kv->value, kv->value_len);
        c->vn = kv->value_len;
        c->create = kv->create_revision;
        c->version = kv->version;
        c->lease = kv->lease;
    }
}

static void changes_free(void)
{
    for (size_t i = 0; i < g_ch.n; i++)
        free(g_ch.v[i].key), free(g_ch.v[i].value);
    free(g_ch.v);
    memset(&g_ch, 0, sizeof g_ch);
}

/* ---- writing a store ---------------------------------------------------------------------- */

static uint64_t g_index;

static void begin(cairn_mvcc_t *m) { cr_assert_eq(cairn_mvcc_batch_begin(m), 0); }
static void commit(cairn_mvcc_t *m)
{
    g_index++;
    cr_assert_eq(cairn_mvcc_set_applied(m, g_index, 3), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
}

/* Inside an open write txn. */
static void tput(cairn_mvcc_t *m, const void *k, size_t kn, const void *v, size_t vn, int64_t lease)
{
    cairn_kv_t prev;
    void *owned = NULL;
    int found = cairn_mvcc_get(m, CAIRN_MVCC_PENDING, k, kn, 0, &prev, &owned);
    cr_assert_geq(found, 0);
    cr_assert_eq(cairn_mvcc_put(m, k, kn, v, vn, lease, found ? &prev : NULL), 0);
    free(owned);
}

static void tdel(cairn_mvcc_t *m, const void *k, size_t kn)
{
    cairn_kv_t prev;
    void *owned = NULL;
    int found = cairn_mvcc_get(m, CAIRN_MVCC_PENDING, k, kn, 0, &prev, &owned);
    cr_assert_eq(found, 1, "delete of a missing key");
    cr_assert_eq(cairn_mvcc_delete(m, &prev), 0);
    free(owned);
}

/* One batch, one txn, one change. */
static void put(cairn_mvcc_t *m, const void *k, size_t kn, const void *v, size_t vn, int64_t lease)
{
    begin(m);
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    tput(m, k, kn, v, vn, lease);
    cairn_mvcc_txn_end(m);
    commit(m);
}
#define PUTS(m, k, v, l) put((m), (k), sizeof(k) - 1, (v), strlen(v), (l))

static void del(cairn_mvcc_t *m, const void *k, size_t kn)
{
    begin(m);
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    tdel(m, k, kn);
    cairn_mvcc_txn_end(m);
    commit(m);
}

static const uint64_t MEMBER_A = 0x1234, MEMBER_B = 0xabcdef0123456789ull;

static void members_blob(uint8_t **blob, size_t *len)
{
    cairn_members_t ms = {0};
    ms.cluster_id = 0x77;
    char *ua[] = {"http://10.0.0.1:2380", "http://a\"b:2380"};
    char *ub[] = {"https://[::1]:2380"};
    cr_assert_eq(cairn_members_put(&ms, MEMBER_B, "<b>", ub, 1, 1), 0);
    cr_assert_eq(cairn_members_put(&ms, MEMBER_A, "m-a", ua, 2, 0), 0);
    cr_assert_eq(cairn_members_encode(&ms, blob, len), 0);
    cairn_members_clear(&ms);
}

/* The fixture: returns the compaction revision. */
static int64_t build_store(cairn_mvcc_t *m)
{
    cairn_mvcc_set_event_fn(m, on_event, NULL);
    uint8_t *blob;
    size_t blen;
    members_blob(&blob, &blen);
    begin(m);
    cr_assert_eq(cairn_mvcc_conf_put(m, 0, "not a members blob", 18), 0);
    cr_assert_eq(cairn_mvcc_lease_grant(m, 100, 30), 0);
    cr_assert_eq(cairn_mvcc_lease_grant(m, 200, 60), 0);
    cr_assert_eq(cairn_mvcc_lease_grant(m, 300, 5), 0);
    cr_assert_eq(cairn_mvcc_lease_grant(m, 0x7fffffffffff0001ll, 1000), 0);
    cr_assert_eq(cairn_mvcc_alarm_set(m, MEMBER_A, 1, 1), 1);
    cr_assert_eq(cairn_mvcc_alarm_set(m, MEMBER_A, 2, 1), 1);
    cr_assert_eq(cairn_mvcc_alarm_set(m, MEMBER_B, 1, 1), 1);
    cr_assert_eq(cairn_mvcc_alarm_set(m, 5, 1, 1), 1);
    commit(m);
    begin(m);
    cr_assert_eq(cairn_mvcc_conf_put(m, g_index + 1, blob, blen), 0); /* the newest 'C' counts */
    cr_assert_eq(cairn_mvcc_alarm_set(m, MEMBER_B, 1, 0), 1);
    commit(m);
    free(blob);

    /* several versions of a key */
    PUTS(m, "a", "a1", 0);
    PUTS(m, "a", "a2", 0);
    PUTS(m, "a", "", 0); /* an empty value */
    PUTS(m, "b", "b1", 0);
    /* keys with 0x00 bytes; keys that are prefixes of others */
    PUTS(m, "k", "k", 0);
    PUTS(m, "k\0", "k0", 0);
    PUTS(m, "k\0\0", "k00", 0);
    PUTS(m, "k\0x", "k0x", 0);
    PUTS(m, "\0", "zero", 0);
    PUTS(m, "foo", "foo", 0);
    PUTS(m, "foo/bar", "foobar", 0);
    PUTS(m, "foo0", "foo0", 0);
    /* keys with leases */
    PUTS(m, "l1", "l1", 100);
    PUTS(m, "l2", "l2", 100);
    PUTS(m, "l3", "l3", 200);
    PUTS(m, "l4", "l4", 200);
    /* a txn: several changes at one main revision (sub revisions 0..4) */
    begin(m);
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    tput(m, "t1", 2, "t1", 2, 0);
    tput(m, "t2", 2, "t2", 2, 100);
    tdel(m, "b", 1);
    tput(m, "a", 1, "a-txn", 5, 0);
    tput(m, "t1", 2, "t1 again", 8, 0); /* the same key twice in one txn */
    cairn_mvcc_txn_end(m);
    commit(m);
    /* a big value (overflow pages in the file) and filler: 20 txns of 50 puts each */
    uint8_t *big = malloc(100 * 1024);
    for (size_t i = 0; i < 100 * 1024; i++)
        big[i] = (uint8_t)(i * 7);
    put(m, "big", 3, big, 100 * 1024, 0);
    free(big);
    char k[32], v[64];
    for (int t = 0; t < 20; t++) {
        begin(m);
        cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
        for (int i = 0; i < 50; i++) {
            snprintf(k, sizeof k, "fill/%04d", (t * 37 + i * 11) % 600);
            snprintf(v, sizeof v, "filler %d.%d", t, i);
            tput(m, k, strlen(k), v, strlen(v), i % 10 == 0 ? 300 : 0);
        }
        cairn_mvcc_txn_end(m);
        commit(m);
    }
    /* deletes, a recreated key, a revoked lease (its keys deleted in one txn) */
    del(m, "k\0", 2);
    PUTS(m, "k\0", "k0 again", 0);
    del(m, "foo", 3);
    begin(m);
    int64_t deleted = 0;
    cr_assert_eq(cairn_mvcc_lease_revoke(m, 200, &deleted), 0);
    cr_assert_eq(deleted, 2);
    commit(m);
    PUTS(m, "a", "a-before-compaction", 0);
    /* compaction: "b", "foo", "l3", "l4" have their tombstones at or below it */
    int64_t crev = cairn_mvcc_revision(m);
    begin(m);
    cr_assert_eq(cairn_mvcc_compact(m, crev), 0);
    commit(m);
    cr_assert_eq(cairn_mvcc_compact_pending(m), 0, "the removal is finished");
    /* after the compaction */
    PUTS(m, "a", "a-after", 0);
    PUTS(m, "foo", "foo reborn", 100);
    del(m, "foo0", 4);
    PUTS(m, "new", "new", 0);
    begin(m);
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    tput(m, "x", 1, "x", 1, 0);
    tdel(m, "k\0x", 3); /* the last change of the store is a delete */
    cairn_mvcc_txn_end(m);
    commit(m);
    cr_assert_eq(cairn_mvcc_compact_revision(m), crev);
    cairn_mvcc_set_event_fn(m, NULL, NULL);
    return crev;
}

/* ---- export --------------------------------------------------------------------------------- */

static uint64_t export_to(cairn_mvcc_t *m, const char *path, cairn_mvcc_point_t *pt)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    uint64_t bytes = 0;
    char eb[256] = "";
    int rc = cairn_mvcc_etcd_export(m, fd, &bytes, pt, eb, sizeof eb);
    cr_assert_eq(rc, 0, "export: %d %s", rc, eb);
    cr_assert_str_empty(eb);
    cr_assert_eq(fsync(fd), 0);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    cr_assert_eq((uint64_t)st.st_size, bytes);
    close(fd);
    return bytes;
}

/* A whole bucket read into memory. */
typedef struct {
    uint8_t *k, *v;
    size_t kn, vn;
} kvp_t;

typedef struct {
    kvp_t *p;
    size_t n, cap;
} pairs_t;

static int pairs_add(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    pairs_t *ps = arg;
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 64;
        ps->p = realloc(ps->p, ps->cap * sizeof *ps->p);
    }
    kvp_t *p = &ps->p[ps->n++];
    p->k = malloc(kn + 1);
    p->v = malloc(vn + 1);
    memcpy(p->k, k, kn);
    if (vn)
        memcpy(p->v, v, vn);
    p->kn = kn;
    p->vn = vn;
    return 0;
}

static void pairs_free(pairs_t *ps)
{
    for (size_t i = 0; i < ps->n; i++)
        free(ps->p[i].k), free(ps->p[i].v);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

static pairs_t read_bucket(const char *path, const char *name)
{
    int err = 0;
    char eb[256] = "";
    cairn_bbolt_t *db = cairn_bbolt_open(path, 0, &err, eb, sizeof eb);
    cr_assert_not_null(db, "%s", eb);
    pairs_t ps = {0};
    int rc = cairn_bbolt_foreach(db, name, strlen(name), pairs_add, &ps);
    cr_assert_eq(rc, 0, "bucket %s: %d %s", name, rc, cairn_bbolt_error(db));
    cairn_bbolt_close(&db);
    return ps;
}

static int has_pair(const pairs_t *ps, const void *k, size_t kn, const void *v, size_t vn)
{
    for (size_t i = 0; i < ps->n; i++)
        if (ps->p[i].kn == kn && memcmp(ps->p[i].k, k, kn) == 0)
            return ps->p[i].vn == vn && (vn == 0 || memcmp(ps->p[i].v, v, vn) == 0);
    return 0;
}

/* Status computed here, independently: every bucket's name, keys and values. */
typedef struct {
    cairn_bbolt_t *db;
    uint32_t hash;
    uint64_t pairs;
    int64_t last_rev;
    int is_key;
    char names[16][32];
    int nnames;
} mystat_t;

static int my_pair(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    mystat_t *s = arg;
    s->hash = cairn_crc32c_extend(s->hash, k, kn);
    s->hash = cairn_crc32c_extend(s->hash, v, vn);
    s->pairs++;
    if (s->is_key)
        s->last_rev = (int64_t)be64(k);
    return 0;
}

static int my_bucket(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    (void)v, (void)vn;
    mystat_t *s = arg;
    cr_assert_lt(s->nnames, 16);
    snprintf(s->names[s->nnames++], 32, "%.*s", (int)kn, (const char *)k);
    s->hash = cairn_crc32c_extend(s->hash, k, kn);
    s->is_key = kn == 3 && memcmp(k, "key", 3) == 0;
    return cairn_bbolt_foreach(s->db, k, kn, my_pair, s);
}

static mystat_t my_status(const char *path)
{
    mystat_t s = {0};
    int err = 0;
    s.db = cairn_bbolt_open(path, 0, &err, NULL, 0);
    cr_assert_not_null(s.db);
    cr_assert_eq(cairn_bbolt_buckets(s.db, my_bucket, &s), 0);
    cairn_bbolt_close(&s.db);
    return s;
}

/* The "key" bucket etcd would hold: every change above the compaction, and for each key the
 * newest change at or below it unless that is a delete. In revision order. */
static void expected_key_bucket(int64_t crev, int *keep)
{
    for (size_t i = 0; i < g_ch.n; i++) {
        const change_t *c = &g_ch.v[i];
        keep[i] = 1;
        if (c->main > crev)
            continue;
        for (size_t j = 0; j < g_ch.n; j++) {
            const change_t *d = &g_ch.v[j];
            if (j != i && d->kn == c->kn && memcmp(d->key, c->key, c->kn) == 0 && d->main <= crev &&
                (d->main > c->main || (d->main == c->main && d->sub > c->sub)))
                keep[i] = 0; /* superseded below the compaction */
        }
        if (c->type == 1)
            keep[i] = 0;
    }
}

static void check_key_bucket(const char *path, int64_t crev)
{
    pairs_t ps = read_bucket(path, "key");
    int *keep = calloc(g_ch.n, sizeof *keep);
    expected_key_bucket(crev, keep);
    size_t j = 0;
    for (size_t i = 0; i < g_ch.n; i++) {
        if (!keep[i])
            continue;
        const change_t *c = &g_ch.v[i];
        cr_assert_lt(j, ps.n, "the key bucket ends at change %zu (rev %lld)", i, (long long)c->main);
        const kvp_t *p = &ps.p[j++];
        uint8_t rk[18];
        be64_put(rk, (uint64_t)c->main);
        rk[8] = '_';
        be64_put(rk + 9, (uint64_t)c->sub);
        rk[17] = 't';
        size_t rkn = c->type == 1 ? 18 : 17;
        cr_assert_eq(p->kn, rkn, "pair %zu: key of %zu bytes for rev %lld/%lld", j - 1, p->kn, (long long)c->main,
                     (long long)c->sub);
        cr_assert_eq(memcmp(p->k, rk, rkn), 0, "pair %zu is rev %lld/%lld", j - 1, (long long)be64(p->k),
                     (long long)be64(p->k + 9));
        Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, p->vn, p->v);
        cr_assert_not_null(kv);
        cr_assert_eq(kv->key.len, c->kn);
        cr_assert_eq(memcmp(kv->key.data, c->key, c->kn), 0);
        if (c->type == 0) {
            cr_assert_eq(kv->create_revision, c->create);
            cr_assert_eq(kv->mod_revision, c->main);
            cr_assert_eq(kv->version, c->version);
            cr_assert_eq(kv->lease, c->lease);
            cr_assert_eq(kv->value.len, c->vn);
            cr_assert(c->vn == 0 || memcmp(kv->value.data, c->value, c->vn) == 0);
        } else { /* etcd's tombstone: the key alone */
            cr_assert_eq(kv->create_revision, 0);
            cr_assert_eq(kv->mod_revision, 0);
            cr_assert_eq(kv->version, 0);
            cr_assert_eq(kv->value.len, 0);
        }
        mvccpb__key_value__free_unpacked(kv, NULL);
    }
    cr_assert_eq(j, ps.n, "%zu pairs expected in the key bucket, %zu there", j, ps.n);
    free(keep);
    pairs_free(&ps);
}

/* ---- comparing two stores ----------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} dump_t;

static int dump_kv(void *arg, const cairn_kv_t *kv)
{
    FILE *f = arg;
    fprintf(f, "[");
    if (kv->key_len)
        fwrite(kv->key, 1, kv->key_len, f);
    fprintf(f, "]=%zu:", kv->value_len);
    if (kv->value_len)
        fwrite(kv->value, 1, kv->value_len, f);
    fprintf(f, " c%lld m%lld v%lld l%lld\n", (long long)kv->create_revision, (long long)kv->mod_revision,
            (long long)kv->version, (long long)kv->lease);
    return 0;
}

/* Every key at rev (0 = current) as text; *rc gets the range's result. */
static char *dump_at(cairn_mvcc_t *m, int64_t rev, int *rc, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    cairn_mvcc_range_t r = {.key = "\0", .key_len = 1, .end = "", .end_len = 0, .rev = rev};
    /* every key >= "\0" misses the empty key only, which etcd does not allow */
    int64_t count = -1;
    *rc = cairn_mvcc_range(m, CAIRN_MVCC_COMMITTED, &r, dump_kv, f, &count);
    fprintf(f, "count %lld\n", (long long)count);
    fclose(f);
    if (len)
        *len = n;
    return buf;
}

static int dump_lease(void *arg, int64_t id, int64_t ttl)
{
    fprintf(arg, "lease %lld ttl %lld\n", (long long)id, (long long)ttl);
    return 0;
}

static int dump_alarm(void *arg, uint64_t member, uint64_t type)
{
    fprintf(arg, "alarm %llx %llu\n", (unsigned long long)member, (unsigned long long)type);
    return 0;
}

static int dump_lkey(void *arg, const uint8_t *k, size_t kn)
{
    fprintf(arg, "  key [");
    fwrite(k, 1, kn, arg);
    fprintf(arg, "]\n");
    return 0;
}

typedef struct {
    int64_t ids[64];
    int n;
} ids_t;

static int collect_lease(void *arg, int64_t id, int64_t ttl)
{
    (void)ttl;
    ids_t *ids = arg;
    cr_assert_lt(ids->n, 64);
    ids->ids[ids->n++] = id;
    return 0;
}

static int dump_change(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev, int64_t sub)
{
    FILE *f = arg;
    fprintf(f, "%s sub %lld ", type ? "DEL" : "PUT", (long long)sub);
    dump_kv(f, kv);
    if (prev) {
        fprintf(f, "  prev ");
        dump_kv(f, prev);
    }
    return 0;
}

static char *dump_rest(cairn_mvcc_t *m, int64_t crev)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    fprintf(f, "revision %lld compact %lld\n", (long long)cairn_mvcc_revision(m),
            (long long)cairn_mvcc_compact_revision(m));
    cr_assert_eq(cairn_mvcc_lease_foreach(m, dump_lease, f), 0);
    ids_t ids = {0};
    cr_assert_eq(cairn_mvcc_lease_foreach(m, collect_lease, &ids), 0);
    for (int i = 0; i < ids.n; i++) {
        fprintf(f, "lease %lld keys:\n", (long long)ids.ids[i]);
        cr_assert_eq(cairn_mvcc_lease_keys(m, CAIRN_MVCC_COMMITTED, ids.ids[i], dump_lkey, f), 0);
    }
    cr_assert_eq(cairn_mvcc_alarm_foreach(m, CAIRN_MVCC_COMMITTED, dump_alarm, f), 0);
    fprintf(f, "alarm bits %x\n", cairn_mvcc_alarms(m, CAIRN_MVCC_COMMITTED));
    cr_assert_eq(cairn_mvcc_changes(m, crev + 1, 0, dump_change, f), 0);
    uint32_t h = 0;
    int64_t hc = 0;
    cr_assert_eq(cairn_mvcc_hash_kv(m, 0, &h, &hc), 0);
    fprintf(f, "hash_kv %08x compact %lld\n", h, (long long)hc);
    fclose(f);
    return buf;
}

static void compare_stores(cairn_mvcc_t *a, cairn_mvcc_t *b, int64_t crev)
{
    cr_assert_eq(cairn_mvcc_revision(a), cairn_mvcc_revision(b));
    cr_assert_eq(cairn_mvcc_compact_revision(a), cairn_mvcc_compact_revision(b));
    for (int64_t rev = 1; rev <= cairn_mvcc_revision(a) + 1; rev++) {
        int ra, rb;
        char *da = dump_at(a, rev, &ra, NULL), *db = dump_at(b, rev, &rb, NULL);
        cr_assert_eq(ra, rb, "range at %lld: %d vs %d", (long long)rev, ra, rb);
        if (rev < crev)
            cr_assert_eq(ra, CAIRN_ECOMPACTED, "rev %lld below the compaction", (long long)rev);
        else if (rev <= cairn_mvcc_revision(a))
            cr_assert_eq(ra, 0, "rev %lld", (long long)rev);
        else
            cr_assert_eq(ra, CAIRN_EFUTURE_REV);
        cr_assert_str_eq(da, db, "range at %lld differs", (long long)rev);
        free(da), free(db);
    }
    int ra, rb;
    char *da = dump_at(a, 0, &ra, NULL), *db = dump_at(b, 0, &rb, NULL);
    cr_assert_eq(ra, 0);
    cr_assert_eq(rb, 0);
    cr_assert_str_eq(da, db);
    free(da), free(db);
    da = dump_rest(a, crev), db = dump_rest(b, crev);
    cr_assert_str_eq(da, db);
    free(da), free(db);
}

/* ---- the round trip ----------------------------------------------------------------------- */

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void check_other_buckets(const char *path, cairn_mvcc_t *m, int64_t crev)
{
    mystat_t s = my_status(path);
    static const char *names[] = {"alarm", "auth", "authRoles", "authUsers", "cluster", "key",
                                  "lease", "members", "members_removed", "meta"};
    cr_assert_eq(s.nnames, 10);
    for (int i = 0; i < 10; i++)
        cr_assert_str_eq(s.names[i], names[i]);

    /* alarm: packed AlarmMember keys, in bytewise order */
    pairs_t ps = read_bucket(path, "alarm");
    cr_assert_eq(ps.n, 3);
    uint8_t k[24];
    size_t n;
    struct {
        uint64_t member, type;
    } want[] = {{MEMBER_A, 1}, {MEMBER_A, 2}, {5, 1}};
    for (int i = 0; i < 3; i++) {
        n = 0;
        k[n++] = 0x08;
        n += varint(k + n, want[i].member);
        k[n++] = 0x10;
        n += varint(k + n, want[i].type);
        cr_assert(has_pair(&ps, k, n, "", 0), "alarm %d", i);
    }
    for (size_t i = 1; i < ps.n; i++)
        cr_assert_lt(memcmp(ps.p[i - 1].k, ps.p[i].k, ps.p[i - 1].kn < ps.p[i].kn ? ps.p[i - 1].kn : ps.p[i].kn), 0);
    pairs_free(&ps);

    /* lease: id (big-endian) -> Lease{ID, TTL} */
    ps = read_bucket(path, "lease");
    cr_assert_eq(ps.n, 3, "leases 100, 300 and the big one (200 was revoked)");
    int64_t ids[] = {100, 300, 0x7fffffffffff0001ll}, ttls[] = {30, 5, 1000};
    for (int i = 0; i < 3; i++) {
        uint8_t idk[8];
        be64_put(idk, (uint64_t)ids[i]);
        n = 0;
        k[n++] = 0x08;
        n += varint(k + n, (uint64_t)ids[i]);
        k[n++] = 0x10;
        n += varint(k + n, (uint64_t)ttls[i]);
        cr_assert(has_pair(&ps, idk, 8, k, n), "lease %lld", (long long)ids[i]);
    }
    pairs_free(&ps);

    /* members: the newest membership record, as etcd's JSON */
    ps = read_bucket(path, "members");
    cr_assert_eq(ps.n, 2);
    const char *ja = "{\"id\":4660,\"peerURLs\":[\"http://10.0.0.1:2380\",\"http://a\\\"b:2380\"],\"name\":\"m-a\"}";
    const char *jb = "{\"id\":12379813738877118345,\"peerURLs\":[\"https://[::1]:2380\"],\"isLearner\":true,"
                     "\"name\":\"\\u003cb\\u003e\"}";
    cr_assert(has_pair(&ps, "1234", 4, ja, strlen(ja)), "member a: %.*s", (int)ps.p[0].vn, (char *)ps.p[0].v);
    cr_assert(has_pair(&ps, "abcdef0123456789", 16, jb, strlen(jb)), "member b: %.*s", (int)ps.p[1].vn,
              (char *)ps.p[1].v);
    pairs_free(&ps);

    /* meta */
    ps = read_bucket(path, "meta");
    uint8_t ci[8], cr[17];
    be64_put(ci, cairn_mvcc_applied_index(m));
    cr_assert(has_pair(&ps, "consistent_index", 16, ci, 8));
    be64_put(cr, (uint64_t)crev);
    cr[8] = '_';
    be64_put(cr + 9, 0);
    cr_assert(has_pair(&ps, "finishedCompactRev", 18, cr, 17));
    cr_assert(has_pair(&ps, "scheduledCompactRev", 19, cr, 17));
    cr_assert_eq(ps.n, 3);
    pairs_free(&ps);

    ps = read_bucket(path, "cluster");
    cr_assert(has_pair(&ps, "clusterVersion", 14, "3.4.0", 5));
    pairs_free(&ps);
    ps = read_bucket(path, "auth");
    cr_assert(has_pair(&ps, "authEnabled", 11, "\0", 1));
    pairs_free(&ps);
    for (int i = 0; i < 3; i++) {
        static const char *empty[] = {"authRoles", "authUsers", "members_removed"};
        ps = read_bucket(path, empty[i]);
        cr_assert_eq(ps.n, 0, "%s", empty[i]);
        pairs_free(&ps);
    }
}

Test(mvcc_etcd, export_status_import_compare_and_export_again)
{
    cairn_mvcc_t *m = open_at(at("src"));
    int64_t crev = build_store(m);
    int64_t rev = cairn_mvcc_revision(m);
    cr_assert_gt(rev, crev + 4);

    cairn_mvcc_point_t pt;
    memset(&pt, 0xAA, sizeof pt);
    uint64_t bytes = export_to(m, at("a.db"), &pt);
    cr_assert_eq(pt.index, cairn_mvcc_applied_index(m));
    cr_assert_eq(pt.term, cairn_mvcc_applied_term(m));
    cr_assert_eq(pt.revision, rev);
    cr_assert_eq(pt.compact_rev, crev);
    cr_assert_eq(bytes % 4096, 0);

    /* the buckets, one by one */
    check_key_bucket(at("a.db"), crev);
    check_other_buckets(at("a.db"), m, crev);

    /* etcdctl snapshot status */
    cairn_etcd_status_t st;
    char eb[256] = "";
    cr_assert_eq(cairn_etcd_db_status(at("a.db"), 0, &st, eb, sizeof eb), 0, "%s", eb);
    mystat_t my = my_status(at("a.db"));
    cr_assert_eq(st.revision, rev, "status revision %lld, store %lld", (long long)st.revision, (long long)rev);
    cr_assert_eq(my.last_rev, rev);
    cr_assert_eq(st.total_keys, my.pairs);
    cr_assert_eq(st.hash, my.hash);
    cr_assert_eq(st.total_size, bytes);
    /* the same with a SHA-256 after the database (a snapshot file) and db_bytes */
    size_t n;
    uint8_t *img = slurp(at("a.db"), &n);
    FILE *f = fopen(at("a.snap"), "wb");
    fwrite(img, 1, n, f);
    fwrite("0123456789abcdef0123456789abcdef", 1, 32, f);
    fclose(f);
    cairn_etcd_status_t st2;
    cr_assert_eq(cairn_etcd_db_status(at("a.snap"), bytes, &st2, eb, sizeof eb), 0, "%s", eb);
    cr_assert_eq(memcmp(&st, &st2, sizeof st), 0);

    /* import into a new store */
    uint8_t *blob;
    size_t blen;
    members_blob(&blob, &blen);
    cairn_mvcc_point_t ipt;
    int rc = cairn_mvcc_etcd_import(at("a.snap"), bytes, at("dst"), pt.index, pt.term, blob, blen, &ipt, eb, sizeof eb);
    cr_assert_eq(rc, 0, "import: %d %s", rc, eb);
    cr_assert_eq(ipt.index, pt.index);
    cr_assert_eq(ipt.term, pt.term);
    cr_assert_eq(ipt.revision, rev);
    cr_assert_eq(ipt.compact_rev, crev);
    cairn_mvcc_t *m2 = open_at(at("dst"));
    cr_assert_eq(cairn_mvcc_applied_index(m2), pt.index);
    cr_assert_eq(cairn_mvcc_applied_term(m2), pt.term);
    uint8_t *got = NULL;
    size_t glen = 0;
    cr_assert_eq(cairn_mvcc_conf_get(m2, UINT64_MAX, &got, &glen, NULL), 1, "the membership given");
    cr_assert_eq(glen, blen);
    cr_assert_eq(memcmp(got, blob, blen), 0);
    free(got);
    free(blob);
    compare_stores(m, m2, crev);

    /* export the imported store: the same file */
    cairn_mvcc_point_t pt2;
    uint64_t bytes2 = export_to(m2, at("b.db"), &pt2);
    cr_assert_eq(memcmp(&pt, &pt2, sizeof pt), 0);
    cairn_etcd_status_t sb;
    cr_assert_eq(cairn_etcd_db_status(at("b.db"), 0, &sb, eb, sizeof eb), 0, "%s", eb);
    cr_assert_eq(sb.hash, st.hash, "status hash %08x vs %08x", sb.hash, st.hash);
    cr_assert_eq(sb.revision, st.revision);
    cr_assert_eq(sb.total_keys, st.total_keys);
    cr_assert_eq(bytes2, bytes);
    size_t n2;
    uint8_t *img2 = slurp(at("b.db"), &n2);
    cr_assert_eq(n2, n);
    cr_assert_eq(memcmp(img, img2, n), 0, "the two exports are the same bytes");
    free(img);
    free(img2);

    /* the imported store keeps working */
    begin(m2);
    cr_assert_eq(cairn_mvcc_txn_begin(m2), 0);
    tput(m2, "after-import", 12, "y", 1, 100);
    cr_assert_eq(cairn_mvcc_txn_end(m2), rev + 1);
    commit(m2);
    cairn_kv_t kv;
    void *owned = NULL;
    cr_assert_eq(cairn_mvcc_get(m2, CAIRN_MVCC_COMMITTED, "foo", 3, 0, &kv, &owned), 1);
    cr_assert_eq(kv.version, 1, "foo was recreated after a delete");
    cr_assert_eq(kv.lease, 100);
    free(owned);
    int64_t deleted = 0;
    begin(m2);
    cr_assert_eq(cairn_mvcc_lease_revoke(m2, 100, &deleted), 0);
    commit(m2);
    cr_assert_eq(deleted, 5, "l1, l2, t2, foo and after-import carried lease 100");

    cairn_mvcc_destroy(&m2);
    cairn_mvcc_destroy(&m);
    changes_free();
}

Test(mvcc_etcd, empty_store)
{
    cairn_mvcc_t *m = open_at(at("src"));
    cairn_mvcc_point_t pt;
    uint64_t bytes = export_to(m, at("e.db"), &pt);
    cr_assert_eq(pt.revision, 1);
    cr_assert_eq(pt.compact_rev, -1);
    cairn_etcd_status_t st;
    char eb[256] = "";
    cr_assert_eq(cairn_etcd_db_status(at("e.db"), 0, &st, eb, sizeof eb), 0, "%s", eb);
    cr_assert_eq(st.revision, 0, "no record in the key bucket");
    cr_assert_eq(st.total_size, bytes);
    pairs_t ps = read_bucket(at("e.db"), "meta");
    cr_assert_eq(ps.n, 1, "consistent_index only: never compacted");
    pairs_free(&ps);
    ps = read_bucket(at("e.db"), "members");
    cr_assert_eq(ps.n, 0);
    pairs_free(&ps);
    cairn_mvcc_point_t ipt;
    cr_assert_eq(cairn_mvcc_etcd_import(at("e.db"), 0, at("dst"), 9, 2, NULL, 0, &ipt, eb, sizeof eb), 0, "%s", eb);
    cr_assert_eq(ipt.revision, 1);
    cr_assert_eq(ipt.compact_rev, -1);
    cairn_mvcc_t *m2 = open_at(at("dst"));
    compare_stores(m, m2, 0);
    cairn_mvcc_destroy(&m2);
    cairn_mvcc_destroy(&m);
}

/* ---- an export while the compaction's removal is not finished ------------------------------ */

Test(mvcc_etcd, export_during_an_unfinished_compaction)
{
    cairn_mvcc_t *m = open_at(at("src"));
    char k[32], v[32];
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 30; i++) {
            snprintf(k, sizeof k, "k%02d", i);
            snprintf(v, sizeof v, "v%d.%d", r, i);
            put(m, k, strlen(k), v, strlen(v), 0);
        }
    del(m, "k00", 3);
    cairn_mvcc_set_compact_async(m, 1);
    int64_t crev = cairn_mvcc_revision(m) - 10;
    begin(m);
    cr_assert_eq(cairn_mvcc_compact(m, crev), 0);
    commit(m);
    cr_assert_eq(cairn_mvcc_compact_pending(m), 1);
    put(m, "k01", 3, "after", 5, 0);
    cairn_mvcc_point_t pt;
    export_to(m, at("u.db"), &pt);
    cr_assert_eq(pt.compact_rev, crev);
    /* the history below the compaction is still in the file, and meta says it is scheduled,
     * not finished (etcd then finishes it when it starts) */
    pairs_t ps = read_bucket(at("u.db"), "key");
    cr_assert_eq(ps.n, (size_t)(cairn_mvcc_revision(m) - 1), "every revision is still there");
    pairs_free(&ps);
    ps = read_bucket(at("u.db"), "meta");
    uint8_t cr[17];
    be64_put(cr, (uint64_t)crev);
    cr[8] = '_';
    be64_put(cr + 9, 0);
    cr_assert(has_pair(&ps, "scheduledCompactRev", 19, cr, 17));
    cr_assert_eq(ps.n, 2, "no finishedCompactRev: the first compaction is not finished");
    pairs_free(&ps);
    char eb[256] = "";
    cairn_mvcc_point_t ipt;
    cr_assert_eq(cairn_mvcc_etcd_import(at("u.db"), 0, at("dst"), pt.index, pt.term, NULL, 0, &ipt, eb, sizeof eb), 0,
                 "%s", eb);
    cr_assert_eq(ipt.compact_rev, crev);
    while (cairn_mvcc_compact_step(m, 7) == 1)
        ;
    cairn_mvcc_t *m2 = open_at(at("dst")); /* finishes the removal */
    compare_stores(m, m2, crev);
    /* both removed the same history: their exports are equal */
    cairn_etcd_status_t sa, sb;
    cairn_mvcc_point_t p1, p2;
    export_to(m, at("a.db"), &p1);
    export_to(m2, at("b.db"), &p2);
    cr_assert_eq(cairn_etcd_db_status(at("a.db"), 0, &sa, eb, sizeof eb), 0);
    cr_assert_eq(cairn_etcd_db_status(at("b.db"), 0, &sb, eb, sizeof eb), 0);
    cr_assert_eq(sa.hash, sb.hash);
    cr_assert_eq(sa.total_keys, sb.total_keys);
    cr_assert_lt(sa.total_keys, 120);
    cairn_mvcc_destroy(&m2);
    cairn_mvcc_destroy(&m);
}

/* ---- import refuses what is not an etcd backend ------------------------------------------- */

typedef struct {
    const char *bucket;
    const void *k, *v;
    size_t kn, vn;
} rec_t;

/* A bbolt file of the given records (sorted by bucket, then key, by the caller). */
static void write_db(const char *path, const rec_t *r, size_t n)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    cairn_bbolt_writer_t *w = cairn_bbolt_writer_new(fd);
    const char *cur = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!cur || strcmp(cur, r[i].bucket) != 0) {
            if (cur)
                cr_assert_eq(cairn_bbolt_bucket_end(w), 0);
            cur = r[i].bucket;
            cr_assert_eq(cairn_bbolt_bucket_begin(w, cur, strlen(cur)), 0);
        }
        if (r[i].k)
            cr_assert_eq(cairn_bbolt_put(w, r[i].k, r[i].kn, r[i].v, r[i].vn), 0, "record %zu", i);
    }
    if (cur)
        cr_assert_eq(cairn_bbolt_bucket_end(w), 0);
    cr_assert_eq(cairn_bbolt_writer_finish(w, NULL), 0);
    cairn_bbolt_writer_destroy(&w);
    close(fd);
}

/* Import of path must fail with want, say why, and leave no directory. */
static void import_fails(const char *path, int want, const char *says)
{
    char eb[256] = "";
    cairn_mvcc_point_t pt;
    char *dst = at("dst");
    int rc = cairn_mvcc_etcd_import(path, 0, dst, 1, 1, NULL, 0, &pt, eb, sizeof eb);
    cr_assert_eq(rc, want, "%s: rc %d (%s), errbuf \"%s\"", says, rc, cairn_strerror(rc), eb);
    cr_assert_str_not_empty(eb, "%s: no message", says);
    cr_assert_not_null(strstr(eb, says), "message \"%s\" does not say \"%s\"", eb, says);
    cr_assert(!exists(dst), "%s: %s left behind", says, dst);
}

/* A packed KeyValue: key, create, mod, version, value. */
static size_t pack_kv(uint8_t *out, const char *key, int64_t create, int64_t mod, int64_t ver, const char *value)
{
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    kv.key.data = (uint8_t *)key;
    kv.key.len = strlen(key);
    kv.create_revision = create;
    kv.mod_revision = mod;
    kv.version = ver;
    kv.value.data = (uint8_t *)value;
    kv.value.len = strlen(value);
    return mvccpb__key_value__pack(&kv, out);
}

static void rev_key(uint8_t out[18], int64_t main, int64_t sub)
{
    be64_put(out, (uint64_t)main);
    out[8] = '_';
    be64_put(out + 9, (uint64_t)sub);
    out[17] = 't';
}

Test(mvcc_etcd, import_refuses_what_is_not_a_backend)
{
    /* no file */
    import_fails(at("missing.db"), CAIRN_ENOTFOUND, "missing.db");
    /* not a bbolt file */
    FILE *f = fopen(at("text.db"), "w");
    for (int i = 0; i < 5000; i++)
        fprintf(f, "this is not a database %d\n", i);
    fclose(f);
    import_fails(at("text.db"), CAIRN_ECORRUPT, "not a bbolt database");
    f = fopen(at("tiny.db"), "w");
    fprintf(f, "x");
    fclose(f);
    import_fails(at("tiny.db"), CAIRN_ECORRUPT, "too small");

    uint8_t good[64], r1[18], r2[18];
    size_t gn = pack_kv(good, "foo", 2, 2, 1, "bar");
    rev_key(r1, 2, 0);
    rev_key(r2, 3, 0);

    /* the "key" bucket with a key that is not a revision */
    rec_t notrev[] = {{"key", r1, good, 17, gn}, {"key", "notarevision", good, 12, gn}};
    write_db(at("notrev.db"), notrev, 2);
    import_fails(at("notrev.db"), CAIRN_ECORRUPT, "not a revision");
    uint8_t nounder[17];
    memcpy(nounder, r1, 17);
    nounder[8] = '-';
    rec_t nu[] = {{"key", nounder, good, 17, gn}};
    write_db(at("nounder.db"), nu, 1);
    import_fails(at("nounder.db"), CAIRN_ECORRUPT, "not a revision");
    uint8_t badtomb[18];
    memcpy(badtomb, r1, 18);
    badtomb[17] = 'x';
    rec_t bt[] = {{"key", badtomb, good, 18, gn}};
    write_db(at("badtomb.db"), bt, 1);
    import_fails(at("badtomb.db"), CAIRN_ECORRUPT, "not a revision");
    uint8_t r0[18];
    rev_key(r0, 0, 0);
    rec_t zero[] = {{"key", r0, good, 17, gn}};
    write_db(at("zero.db"), zero, 1);
    import_fails(at("zero.db"), CAIRN_ECORRUPT, "revision");

    /* values that are not KeyValues */
    rec_t garbage[] = {{"key", r1, good, 17, gn}, {"key", r2, "\xff\xff\xff\xff", 17, 4}};
    write_db(at("garbage.db"), garbage, 2);
    import_fails(at("garbage.db"), CAIRN_ECORRUPT, "not an mvccpb.KeyValue");
    rec_t nokey[] = {{"key", r1, "", 17, 0}};
    write_db(at("nokey.db"), nokey, 1);
    import_fails(at("nokey.db"), CAIRN_ECORRUPT, "not an mvccpb.KeyValue");
    uint8_t cut[64];
    memcpy(cut, good, gn);
    rec_t trunc[] = {{"key", r1, cut, 17, gn - 2}};
    write_db(at("trunc.db"), trunc, 1);
    import_fails(at("trunc.db"), CAIRN_ECORRUPT, "not an mvccpb.KeyValue");

    /* a lease record that is not a Lease, or whose ID is not its key */
    uint8_t lid[8], lv[16];
    be64_put(lid, 5);
    size_t ln = 0;
    lv[ln++] = 0x08;
    ln += varint(lv + ln, 6);
    rec_t lease[] = {{"key", r1, good, 17, gn}, {"lease", lid, lv, 8, ln}};
    write_db(at("lease.db"), lease, 2);
    import_fails(at("lease.db"), CAIRN_ECORRUPT, "leasepb.Lease");
    rec_t lease2[] = {{"lease", lid, "\x08", 8, 1}};
    write_db(at("lease2.db"), lease2, 1);
    import_fails(at("lease2.db"), CAIRN_ECORRUPT, "leasepb.Lease");
    rec_t lease3[] = {{"lease", "short", "\x08\x05", 5, 2}};
    write_db(at("lease3.db"), lease3, 1);
    import_fails(at("lease3.db"), CAIRN_ECORRUPT, "leasepb.Lease");
    /* an alarm key that is not an AlarmMember */
    rec_t alarm[] = {{"alarm", "\x08\xff", "", 2, 0}};
    write_db(at("alarm.db"), alarm, 1);
    import_fails(at("alarm.db"), CAIRN_ECORRUPT, "AlarmMember");

    /* a good file of these records is accepted (so the refusals above are about the record) */
    rec_t ok[] = {{"alarm", "\x08\x05\x10\x01", "", 4, 0}, {"key", r1, good, 17, gn}, {"lease", lid, "\x08\x05\x10\x09", 8, 4}};
    write_db(at("ok.db"), ok, 3);
    char eb[256] = "";
    cairn_mvcc_point_t pt;
    cr_assert_eq(cairn_mvcc_etcd_import(at("ok.db"), 0, at("okdir"), 4, 1, NULL, 0, &pt, eb, sizeof eb), 0, "%s", eb);
    cr_assert_eq(pt.revision, 2);
    cr_assert_eq(pt.compact_rev, -1);
    cairn_mvcc_t *m = open_at(at("okdir"));
    cairn_kv_t kv;
    void *owned = NULL;
    cr_assert_eq(cairn_mvcc_get(m, CAIRN_MVCC_COMMITTED, "foo", 3, 0, &kv, &owned), 1);
    cr_assert_eq(kv.value_len, 3);
    cr_assert_eq(memcmp(kv.value, "bar", 3), 0);
    free(owned);
    int64_t ttl = 0;
    cr_assert_eq(cairn_mvcc_lease_get(m, CAIRN_MVCC_COMMITTED, 5, &ttl), 1);
    cr_assert_eq(ttl, 9);
    cr_assert_eq(cairn_mvcc_alarms(m, CAIRN_MVCC_COMMITTED), 1u << 1);
    cairn_mvcc_destroy(&m);

    /* the target exists: refused, and left as it was */
    cr_assert_eq(mkdir(at("there"), 0755), 0);
    f = fopen(at("there/precious"), "w");
    fclose(f);
    eb[0] = 0;
    cr_assert_eq(cairn_mvcc_etcd_import(at("ok.db"), 0, at("there"), 4, 1, NULL, 0, &pt, eb, sizeof eb),
                 CAIRN_EEXISTS);
    cr_assert_str_not_empty(eb);
    cr_assert(exists(at("there/precious")), "an existing directory is not removed");
}

/* A page of the "key" bucket damaged: the import stops, says where, and removes the store. */
Test(mvcc_etcd, import_of_a_damaged_file_removes_the_store)
{
    cairn_mvcc_t *m = open_at(at("src"));
    char k[32];
    for (int i = 0; i < 400; i++) {
        snprintf(k, sizeof k, "key-%05d", i);
        put(m, k, strlen(k), "some value of a few bytes", 25, 0);
    }
    export_to(m, at("a.db"), NULL);
    cairn_mvcc_destroy(&m);
    size_t n;
    uint8_t *img = slurp(at("a.db"), &n);
    /* the root leaf (meta root at byte 16+16), its "key" element, that bucket's root page: a
     * branch over several leaves; point its last child past the end of the file */
    uint64_t root = 0, broot = 0;
    for (int i = 7; i >= 0; i--)
        root = root << 8 | img[32 + i];
    const uint8_t *rp = img + root * 4096;
    uint16_t count = (uint16_t)(rp[10] | rp[11] << 8);
    for (uint16_t i = 0; i < count; i++) {
        const uint8_t *e = rp + 16 + 16 * i;
        uint32_t pos = (uint32_t)(e[4] | e[5] << 8 | e[6] << 16), ks = (uint32_t)(e[8] | e[9] << 8);
        if (ks == 3 && memcmp(e + pos, "key", 3) == 0)
            for (int b = 7; b >= 0; b--)
                broot = broot << 8 | e[pos + 3 + b];
    }
    cr_assert_gt(broot, 2);
    uint8_t *bp = img + broot * 4096;
    cr_assert_eq(bp[8], 0x01, "the key bucket's root is a branch");
    uint16_t bc = (uint16_t)(bp[10] | bp[11] << 8);
    uint8_t *last = bp + 16 + 16 * (bc - 1) + 8;
    memset(last, 0, 8);
    last[0] = 0xEE;
    last[1] = 0xEE;
    FILE *f = fopen(at("bad.db"), "wb");
    fwrite(img, 1, n, f);
    fclose(f);
    free(img);
    import_fails(at("bad.db"), CAIRN_ECORRUPT, "out of bounds");
    char eb[256] = "";
    cairn_etcd_status_t st;
    cr_assert_eq(cairn_etcd_db_status(at("bad.db"), 0, &st, eb, sizeof eb), CAIRN_ECORRUPT);
    cr_assert_not_null(strstr(eb, "out of bounds"), "%s", eb);
}

/* ---- an export while another thread writes ------------------------------------------------ */

typedef struct {
    cairn_mvcc_t *m;
    atomic_int stop;
    atomic_long writes;
} writer_t;

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    char k[32], v[64];
    for (long i = 0; !atomic_load(&w->stop); i++) {
        snprintf(k, sizeof k, "c/%03ld", (i * 7) % 211);
        snprintf(v, sizeof v, "value %ld", i);
        begin(w->m);
        cr_assert_eq(cairn_mvcc_txn_begin(w->m), 0);
        if (i % 9 == 4) {
            cairn_kv_t prev;
            void *owned = NULL;
            if (cairn_mvcc_get(w->m, CAIRN_MVCC_PENDING, k, strlen(k), 0, &prev, &owned) == 1)
                cr_assert_eq(cairn_mvcc_delete(w->m, &prev), 0);
            free(owned);
        }
        tput(w->m, k, strlen(k), v, strlen(v), 0);
        if (i % 13 == 0) /* a second change at the same revision */
            tput(w->m, "c/txn", 5, v, strlen(v), 0);
        cairn_mvcc_txn_end(w->m);
        commit(w->m);
        atomic_fetch_add(&w->writes, 1);
    }
    return NULL;
}

typedef struct {
    uint8_t key[16];
    size_t kn;
    Mvccpb__KeyValue *kv; /* NULL: deleted */
    int64_t main;
} latest_t;

typedef struct {
    latest_t v[4096];
    int n;
    int64_t max_main, prev_main, limit;
    uint8_t *seen; /* [limit + 1] */
} state_t;

static int state_add(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    state_t *s = arg;
    cr_assert(kn == 17 || kn == 18);
    int64_t main = (int64_t)be64(k);
    cr_assert_geq(main, s->prev_main);
    s->prev_main = main;
    if (main > s->max_main)
        s->max_main = main;
    cr_assert_leq(main, s->limit, "a revision after the point");
    cr_assert_geq(main, 1);
    s->seen[main] = 1;
    Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, vn, v);
    cr_assert_not_null(kv);
    cr_assert_lt(kv->key.len, 16);
    int i;
    for (i = 0; i < s->n; i++)
        if (s->v[i].kn == kv->key.len && memcmp(s->v[i].key, kv->key.data, kv->key.len) == 0)
            break;
    if (i == s->n) {
        cr_assert_lt(s->n, 4096);
        memcpy(s->v[i].key, kv->key.data, kv->key.len);
        s->v[i].kn = kv->key.len;
        s->n++;
    } else if (s->v[i].kv) {
        mvccpb__key_value__free_unpacked(s->v[i].kv, NULL);
    }
    s->v[i].main = main;
    if (kn == 18) {
        mvccpb__key_value__free_unpacked(kv, NULL);
        s->v[i].kv = NULL;
    } else {
        s->v[i].kv = kv;
    }
    return 0;
}

static int latest_cmp(const void *a, const void *b)
{
    const latest_t *x = a, *y = b;
    size_t n = x->kn < y->kn ? x->kn : y->kn;
    int c = memcmp(x->key, y->key, n);
    return c ? c : x->kn < y->kn ? -1 : x->kn > y->kn ? 1 : 0;
}

/* One export checked against the store at its point (after the writer stopped). */
static void check_point(cairn_mvcc_t *m, const char *path, const cairn_mvcc_point_t *pt, uint64_t bytes)
{
    /* status: the revision of the last record is the point's */
    cairn_etcd_status_t st;
    char eb[256] = "";
    cr_assert_eq(cairn_etcd_db_status(path, 0, &st, eb, sizeof eb), 0, "%s", eb);
    cr_assert_eq(st.revision, pt->revision);
    cr_assert_eq(st.total_size, bytes);
    pairs_t meta = read_bucket(path, "meta");
    uint8_t ci[8];
    be64_put(ci, pt->index);
    cr_assert(has_pair(&meta, "consistent_index", 16, ci, 8), "consistent_index is the point's");
    pairs_free(&meta);

    /* every revision up to the point, none after */
    state_t *s = calloc(1, sizeof *s);
    s->limit = pt->revision;
    s->seen = calloc((size_t)pt->revision + 1, 1);
    int err = 0;
    cairn_bbolt_t *db = cairn_bbolt_open(path, 0, &err, NULL, 0);
    cr_assert_not_null(db);
    cr_assert_eq(cairn_bbolt_foreach(db, "key", 3, state_add, s), 0);
    cairn_bbolt_close(&db);
    cr_assert_eq(s->max_main, pt->revision);
    for (int64_t r = 2; r <= pt->revision; r++)
        cr_assert(s->seen[r], "revision %lld missing", (long long)r);

    /* the file's state is the store's at that revision */
    qsort(s->v, (size_t)s->n, sizeof s->v[0], latest_cmp);
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    long count = 0;
    for (int i = 0; i < s->n; i++) {
        Mvccpb__KeyValue *kv = s->v[i].kv;
        if (!kv)
            continue;
        cairn_kv_t c = {kv->key.data, kv->key.len, kv->value.data, kv->value.len, kv->create_revision,
                        kv->mod_revision, kv->version, kv->lease};
        dump_kv(f, &c);
        count++;
    }
    fprintf(f, "count %ld\n", count);
    fclose(f);
    int rc;
    char *want = dump_at(m, pt->revision, &rc, NULL);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(buf, want, "%s at revision %lld", path, (long long)pt->revision);
    cr_assert_gt(count, 2000);
    free(buf);
    free(want);
    for (int i = 0; i < s->n; i++)
        if (s->v[i].kv)
            mvccpb__key_value__free_unpacked(s->v[i].kv, NULL);
    free(s->seen);
    free(s);
}

Test(mvcc_etcd, export_while_another_thread_writes_is_one_point)
{
    writer_t w = {.m = open_at(at("src"))};
    /* some bulk first, so that an export takes long enough for writes to land meanwhile */
    char k[32];
    uint8_t *v = malloc(4096);
    memset(v, 'b', 4096);
    for (int b = 0; b < 20; b++) {
        begin(w.m);
        cr_assert_eq(cairn_mvcc_txn_begin(w.m), 0);
        for (int i = 0; i < 100; i++) {
            snprintf(k, sizeof k, "bulk/%04d", b * 100 + i);
            tput(w.m, k, strlen(k), v, 4096, 0);
        }
        cairn_mvcc_txn_end(w.m);
        commit(w.m);
    }
    free(v);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);
    enum { MAXEX = 12 };
    cairn_mvcc_point_t pts[MAXEX];
    uint64_t bytes[MAXEX];
    int nex = 0, overlapped = 0;
    char name[32];
    while (nex < MAXEX && overlapped < 3) {
        long before = atomic_load(&w.writes);
        while (atomic_load(&w.writes) < before + 20)
            usleep(500);
        before = atomic_load(&w.writes);
        snprintf(name, sizeof name, "c%d.db", nex);
        bytes[nex] = export_to(w.m, at(name), &pts[nex]);
        long after = atomic_load(&w.writes);
        cr_assert_geq(pts[nex].revision, 21 + before, "the export holds every write done before it");
        overlapped += after > before;
        nex++;
    }
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    fprintf(stderr, "%d exports, %d with writes during them; store at %lld\n", nex, overlapped,
            (long long)cairn_mvcc_revision(w.m));
    cr_assert_gt(overlapped, 0, "no write landed during any of %d exports", nex);
    for (int i = 0; i < nex; i++) {
        snprintf(name, sizeof name, "c%d.db", i);
        check_point(w.m, at(name), &pts[i], bytes[i]);
    }
    cairn_mvcc_destroy(&w.m);
}

/* ---- export errors ------------------------------------------------------------------------- */

Test(mvcc_etcd, export_to_a_full_disk_or_a_bad_descriptor)
{
    cairn_mvcc_t *m = open_at(at("src"));
    char k[32];
    uint8_t v[3000];
    memset(v, 'v', sizeof v);
    for (int i = 0; i < 600; i++) { /* about 2 MiB: more than the writer buffers */
        snprintf(k, sizeof k, "key-%05d", i);
        put(m, k, strlen(k), v, sizeof v, 0);
    }
    char eb[256] = "";
    uint64_t bytes = 0;
    int fd = open("/dev/full", O_WRONLY);
    if (fd >= 0) {
        int rc = cairn_mvcc_etcd_export(m, fd, &bytes, NULL, eb, sizeof eb);
        cr_assert_eq(rc, CAIRN_ENOSPC, "%d %s", rc, eb);
        cr_assert_not_null(strstr(eb, "no space"), "%s", eb);
        close(fd);
    }
    fd = open(at("ro.db"), O_RDONLY | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    eb[0] = 0;
    int rc = cairn_mvcc_etcd_export(m, fd, &bytes, NULL, eb, sizeof eb);
    cr_assert_eq(rc, CAIRN_EIO, "%d %s", rc, eb);
    cr_assert_str_not_empty(eb);
    close(fd);
    /* the store is untouched and a good export still works */
    cairn_mvcc_point_t pt;
    export_to(m, at("ok.db"), &pt);
    cr_assert_eq(pt.revision, cairn_mvcc_revision(m));
    cairn_mvcc_destroy(&m);
}

/* ---- import of randomly damaged files -------------------------------------------------------- */

static int count_kv(void *arg, const cairn_kv_t *kv)
{
    (void)kv;
    ++*(long *)arg;
    return 0;
}

/* Bytes flipped in the data pages of a small export: the import either fails (with a message,
 * no directory left) or makes a store that opens and reads. Seeded; the seed is printed. */
Test(mvcc_etcd, import_of_random_damage, .timeout = 240)
{
    cairn_mvcc_t *m = open_at(at("src"));
    char k[32], v[32];
    begin(m);
    cr_assert_eq(cairn_mvcc_lease_grant(m, 42, 10), 0);
    cr_assert_eq(cairn_mvcc_alarm_set(m, 9, 1, 1), 1);
    commit(m);
    for (int i = 0; i < 60; i++) {
        snprintf(k, sizeof k, "k%02d", i % 20);
        snprintf(v, sizeof v, "v%d", i);
        put(m, k, strlen(k), v, strlen(v), i % 3 == 0 ? 42 : 0);
        if (i % 7 == 6)
            del(m, k, strlen(k));
    }
    begin(m);
    cr_assert_eq(cairn_mvcc_compact(m, 30), 0);
    commit(m);
    export_to(m, at("a.db"), NULL);
    cairn_mvcc_destroy(&m);
    size_t n;
    uint8_t *img = slurp(at("a.db"), &n);
    const char *s = getenv("CAIRN_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    fprintf(stderr, "import_of_random_damage: seed %llu (CAIRN_TEST_SEED=%llu repeats it)\n",
            (unsigned long long)seed, (unsigned long long)seed);
    uint64_t x = seed | 1;
    int ok = 0, refused = 0;
    for (int it = 0; it < 150; it++) {
        uint8_t *c = malloc(n);
        memcpy(c, img, n);
        int flips = 1 + (int)(x % 3);
        for (int f = 0; f < flips; f++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t off = 3 * 4096 + (size_t)(x % (n - 3 * 4096));
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            c[off] ^= (uint8_t)(1 + x % 255);
        }
        FILE *f = fopen(at("bad.db"), "wb");
        fwrite(c, 1, n, f);
        fclose(f);
        free(c);
        char eb[256] = "";
        cairn_mvcc_point_t pt;
        int rc = cairn_mvcc_etcd_import(at("bad.db"), 0, at("dst"), 1, 1, NULL, 0, &pt, eb, sizeof eb);
        if (rc) {
            refused++;
            cr_assert_str_not_empty(eb, "seed %llu iteration %d", (unsigned long long)seed, it);
            cr_assert(!exists(at("dst")), "seed %llu iteration %d: directory left", (unsigned long long)seed, it);
            continue;
        }
        ok++;
        int err = 0;
        cairn_mvcc_t *m2 = cairn_mvcc_open(at("dst"), &err, eb, sizeof eb);
        cr_assert_not_null(m2, "seed %llu iteration %d: imported but does not open: %s", (unsigned long long)seed, it,
                           eb);
        long cnt = 0;
        cairn_mvcc_range_t r = {.key = "\0", .key_len = 1, .end = "", .end_len = 0};
        cr_assert_eq(cairn_mvcc_range(m2, CAIRN_MVCC_COMMITTED, &r, count_kv, &cnt, NULL), 0);
        cairn_mvcc_destroy(&m2);
        cairn_test_rmtree(at("dst"));
    }
    fprintf(stderr, "import_of_random_damage (seed %llu): %d imported, %d refused\n", (unsigned long long)seed, ok,
            refused);
    free(img);
}
