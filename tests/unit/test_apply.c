/* Unit tests for apply.c: etcd's KV semantics end to end, protobuf in, protobuf out.
 * "(checked)" marks expectations verified against a running etcd 3.4.23 (JSON gateway). */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tmpdir.h"
#include "apply.h"
#include "cairn_err.h"
#include "kv.pb-c.h"
#include "nested_txn.h"
#include "rpc.pb-c.h"

static char g_dir[256];
static cairn_mvcc_t *M;
static uint64_t g_idx;
static cairn_apply_err_t E;
static const cairn_hdr_ctx_t HDR = {.cluster_id = 111, .member_id = 222, .raft_term = 3};

static void setup(void)
{
    cairn_test_mkdtemp(g_dir, sizeof g_dir, "apply");
    int err;
    char eb[256];
    M = cairn_mvcc_open(g_dir, &err, eb, sizeof eb);
    cr_assert_not_null(M, "%s", eb);
    g_idx = 0;
}

static void teardown(void)
{
    cairn_mvcc_destroy(&M);
    cairn_test_rmtree(g_dir);
}

TestSuite(apply, .init = setup, .fini = teardown);

/* ---- request building ---- */

static ProtobufCBinaryData B(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

static const ProtobufCMessageDescriptor *resp_desc(int kind)
{
    switch (kind) {
    case CAIRN_REQ_PUT: return &etcdserverpb__put_response__descriptor;
    case CAIRN_REQ_DELETE_RANGE: return &etcdserverpb__delete_range_response__descriptor;
    case CAIRN_REQ_TXN: return &etcdserverpb__txn_response__descriptor;
    case CAIRN_REQ_COMPACT: return &etcdserverpb__compaction_response__descriptor;
    default: return &etcdserverpb__range_response__descriptor;
    }
}

/* Applies req as the next raft entry; returns the unpacked response, or NULL with E set. */
static void *apply(int kind, const void *req)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(n + 1);
    protobuf_c_message_pack(req, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    int rc = cairn_apply_request(M, ++g_idx, 3, kind, buf, n, &HDR, &resp, &rlen, &E);
    free(buf);
    cr_assert_eq(rc, 0, "apply: %s", cairn_strerror(rc));
    cr_assert_eq(cairn_mvcc_pending_applied_index(M), g_idx, "a request, failed or not, consumes its index");
    if (E.grpc_code) {
        cr_assert_null(resp);
        return NULL;
    }
    cr_assert_not_null(resp);
    void *out = protobuf_c_message_unpack(resp_desc(kind), NULL, rlen, resp);
    free(resp);
    cr_assert_not_null(out);
    return out;
}

static void fr(void *msg)
{
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
}

static void check_hdr(const Etcdserverpb__ResponseHeader *h, int64_t rev)
{
    cr_assert_not_null(h);
    cr_assert_eq(h->cluster_id, 111);
    cr_assert_eq(h->member_id, 222);
    cr_assert_eq(h->raft_term, 3);
    cr_assert_eq(h->revision, rev, "header revision %lld, want %lld", (long long)h->revision, (long long)rev);
}

/* A response inside a txn: etcd fills in only the outermost header, so these carry their
 * revision alone (checked against 3.4.23 over the JSON gateway) */
static void check_nested_hdr(const Etcdserverpb__ResponseHeader *h, int64_t rev)
{
    cr_assert_not_null(h);
    cr_assert_eq(h->cluster_id, 0);
    cr_assert_eq(h->member_id, 0);
    cr_assert_eq(h->raft_term, 0);
    cr_assert_eq(h->revision, rev, "nested header revision %lld, want %lld", (long long)h->revision, (long long)rev);
}

static void expect_err(int code, const char *msg)
{
    cr_assert_eq(E.grpc_code, code, "grpc code %d (%s), want %d", E.grpc_code, E.message, code);
    cr_assert_str_eq(E.message, msg);
}

static int64_t put_full(const char *k, const char *v, int64_t lease)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = B(k);
    r.value = B(v);
    r.lease = lease;
    Etcdserverpb__PutResponse *o = apply(CAIRN_REQ_PUT, &r);
    cr_assert_not_null(o, "put %s: %s", k, E.message);
    int64_t rev = o->header->revision;
    fr(o);
    return rev;
}

static int64_t put(const char *k, const char *v) { return put_full(k, v, 0); }

static void grant(int64_t id)
{
    cr_assert_eq(cairn_mvcc_batch_begin(M), 0);
    cr_assert_eq(cairn_mvcc_lease_grant(M, id, 60), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(M), 0);
}

/* Range through the read path (committed state). */
static Etcdserverpb__RangeResponse *rng(const Etcdserverpb__RangeRequest *r)
{
    size_t n = protobuf_c_message_get_packed_size((const ProtobufCMessage *)r);
    uint8_t *buf = malloc(n + 1);
    protobuf_c_message_pack((const ProtobufCMessage *)r, buf);
    uint8_t *resp = NULL;
    size_t rlen = 0;
    cr_assert_eq(cairn_apply_range(M, buf, n, &HDR, &resp, &rlen, &E), 0);
    free(buf);
    if (E.grpc_code)
        return NULL;
    Etcdserverpb__RangeResponse *o = etcdserverpb__range_response__unpack(NULL, rlen, resp);
    free(resp);
    cr_assert_not_null(o);
    return o;
}

static const char *kv_keys(Mvccpb__KeyValue **kvs, size_t n)
{
    static char out[512];
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(out, ",");
        strncat(out, (const char *)kvs[i]->key.data, kvs[i]->key.len);
    }
    return out;
}

static const char *keys_of(const Etcdserverpb__RangeResponse *o) { return kv_keys(o->kvs, o->n_kvs); }

static Etcdserverpb__RangeResponse *get1(const char *k)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B(k);
    return rng(&r);
}

/* ---- Put ---- */

Test(apply, put_header_and_prev_kv)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = B("foo");
    r.value = B("bar");
    r.prev_kv = 1;
    Etcdserverpb__PutResponse *o = apply(CAIRN_REQ_PUT, &r);
    check_hdr(o->header, 2);   /* fresh store at 1, first write 2 (checked) */
    cr_assert_null(o->prev_kv);
    fr(o);
    r.value = B("baz");
    o = apply(CAIRN_REQ_PUT, &r);
    check_hdr(o->header, 3);
    cr_assert_not_null(o->prev_kv);
    cr_assert_eq(o->prev_kv->mod_revision, 2);
    cr_assert_eq(o->prev_kv->create_revision, 2);
    cr_assert_eq(o->prev_kv->version, 1);
    cr_assert_eq(o->prev_kv->value.len, 3);
    cr_assert(memcmp(o->prev_kv->value.data, "bar", 3) == 0);
    fr(o);
    Etcdserverpb__RangeResponse *g = get1("foo");
    check_hdr(g->header, 3);
    cr_assert_eq(g->n_kvs, 1);
    cr_assert_eq(g->kvs[0]->version, 2);
    cr_assert_eq(g->kvs[0]->create_revision, 2);
    cr_assert_eq(g->kvs[0]->mod_revision, 3);
    cr_assert_eq(g->count, 1);
    fr(g);
}

Test(apply, put_ignore_value_and_lease)
{
    /* on a missing key: InvalidArgument "key not found", index consumed, nothing written */
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = B("k");
    r.ignore_value = 1;
    cr_assert_null(apply(CAIRN_REQ_PUT, &r));
    expect_err(3, "etcdserver: key not found");
    r.ignore_value = 0;
    r.ignore_lease = 1;
    r.value = B("v");
    cr_assert_null(apply(CAIRN_REQ_PUT, &r));
    expect_err(3, "etcdserver: key not found");
    cr_assert_eq(cairn_mvcc_revision(M), 1);

    grant(5);
    put_full("k", "v1", 5);   /* 2 */
    /* ignore_value keeps the value, takes the new lease (0) */
    Etcdserverpb__PutRequest iv = ETCDSERVERPB__PUT_REQUEST__INIT;
    iv.key = B("k");
    iv.ignore_value = 1;
    fr(apply(CAIRN_REQ_PUT, &iv));
    Etcdserverpb__RangeResponse *g = get1("k");
    cr_assert_eq(g->kvs[0]->value.len, 2);
    cr_assert(memcmp(g->kvs[0]->value.data, "v1", 2) == 0);
    cr_assert_eq(g->kvs[0]->lease, 0);
    cr_assert_eq(g->kvs[0]->version, 2);
    fr(g);
    put_full("k", "v2", 5);
    /* ignore_lease keeps the lease, takes the new value */
    Etcdserverpb__PutRequest il = ETCDSERVERPB__PUT_REQUEST__INIT;
    il.key = B("k");
    il.value = B("v3");
    il.ignore_lease = 1;
    fr(apply(CAIRN_REQ_PUT, &il));
    g = get1("k");
    cr_assert_eq(g->kvs[0]->lease, 5);
    cr_assert(memcmp(g->kvs[0]->value.data, "v3", 2) == 0);
    fr(g);
}

Test(apply, put_unknown_lease)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = B("k");
    r.value = B("v");
    r.lease = 77;
    cr_assert_null(apply(CAIRN_REQ_PUT, &r));
    expect_err(5, "etcdserver: requested lease not found");
    /* the lease is checked before ignore_value's key lookup in a plain Put (checked) */
    r.ignore_value = 1;
    r.value = B("");
    cr_assert_null(apply(CAIRN_REQ_PUT, &r));
    expect_err(5, "etcdserver: requested lease not found");
    cr_assert_eq(cairn_mvcc_revision(M), 1);
    grant(77);
    r.ignore_value = 0;
    Etcdserverpb__PutResponse *o = apply(CAIRN_REQ_PUT, &r);
    cr_assert_not_null(o);
    fr(o);
    Etcdserverpb__RangeResponse *g = get1("k");
    cr_assert_eq(g->kvs[0]->lease, 77);
    fr(g);
}

/* ---- DeleteRange ---- */

Test(apply, delete_range_counts_and_prev_kvs)
{
    put("a", "1");   /* 2 */
    put("b", "2");   /* 3 */
    put("c", "3");   /* 4 */
    put("d", "4");   /* 5 */
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key = B("zz");
    Etcdserverpb__DeleteRangeResponse *o = apply(CAIRN_REQ_DELETE_RANGE, &d);
    cr_assert_eq(o->deleted, 0);
    check_hdr(o->header, 5);   /* a no-op delete does not bump the revision */
    fr(o);
    d.key = B("a");
    d.range_end = B("c");
    d.prev_kv = 1;
    o = apply(CAIRN_REQ_DELETE_RANGE, &d);
    cr_assert_eq(o->deleted, 2);
    check_hdr(o->header, 6);
    cr_assert_eq(o->n_prev_kvs, 2);
    cr_assert_str_eq(kv_keys(o->prev_kvs, o->n_prev_kvs), "a,b");
    cr_assert_eq(o->prev_kvs[1]->value.len, 1);
    cr_assert_eq(o->prev_kvs[1]->value.data[0], '2');
    cr_assert_eq(o->prev_kvs[1]->mod_revision, 3);
    fr(o);
    /* without prev_kv: count only */
    Etcdserverpb__DeleteRangeRequest d2 = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d2.key = B("c");
    d2.range_end = B("\0");   /* strlen is 0: set explicitly below */
    d2.range_end.len = 1;
    d2.range_end.data = (uint8_t *)"\0";
    o = apply(CAIRN_REQ_DELETE_RANGE, &d2);
    cr_assert_eq(o->deleted, 2);   /* c, d: range_end "\0" = every key >= c */
    cr_assert_eq(o->n_prev_kvs, 0);
    check_hdr(o->header, 7);
    fr(o);
    cr_assert_eq(cairn_mvcc_revision(M), 7);
}

/* ---- Range ---- */

static ProtobufCBinaryData NUL = {1, (uint8_t *)"\0"};

/* k1 v3 val c, k2 v1 val a, k3 v2 val b, k4 v1 val e, k5 v4 val d; the same version layout
 * as the real-etcd run these expectations were checked against. Revisions: k1 2,3,4; k2 5;
 * k3 6,7; k4 8; k5 9,10,11,12. */
static void range_fixture(void)
{
    const char *seq[][2] = {{"k1", "x"}, {"k1", "x"}, {"k1", "c"}, {"k2", "a"}, {"k3", "x"}, {"k3", "b"},
                            {"k4", "e"}, {"k5", "x"}, {"k5", "x"}, {"k5", "x"}, {"k5", "d"}};
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++)
        put(seq[i][0], seq[i][1]);
    put("other", "z");   /* 13, outside [k, l) */
}

static Etcdserverpb__RangeResponse *rk(int64_t limit, int order, int target)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("k");
    r.range_end = B("l");
    r.limit = limit;
    r.sort_order = order;
    r.sort_target = target;
    return rng(&r);
}

#define ASC ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND
#define DESC ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND
#define NONE ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE
#define T_KEY ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY
#define T_VER ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION
#define T_CREATE ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE
#define T_MOD ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD
#define T_VAL ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE

static void expect_range(Etcdserverpb__RangeResponse *o, const char *keys, int more, int64_t count)
{
    cr_assert_not_null(o, "range failed: %s", E.message);
    cr_assert_str_eq(keys_of(o), keys);
    cr_assert_eq(o->more, more, "more");
    cr_assert_eq(o->count, count, "count %lld", (long long)o->count);
    check_hdr(o->header, cairn_mvcc_revision(M));
    fr(o);
}

Test(apply, range_sort_limit_more_count)
{
    range_fixture();
    /* all (checked) */
    expect_range(rk(0, NONE, T_KEY), "k1,k2,k3,k4,k5", 0, 5);
    expect_range(rk(5, NONE, T_KEY), "k1,k2,k3,k4,k5", 0, 5);
    expect_range(rk(4, NONE, T_KEY), "k1,k2,k3,k4", 1, 5);
    /* order NONE with target VERSION is ASCEND, but over the first limit+1 keys only (checked) */
    expect_range(rk(2, NONE, T_VER), "k2,k3", 1, 5);
    expect_range(rk(2, ASC, T_VER), "k2,k4", 1, 5);
    expect_range(rk(2, DESC, T_VER), "k5,k1", 1, 5);
    /* ties keep key order in both directions (checked for DESC) */
    expect_range(rk(0, DESC, T_VER), "k5,k1,k3,k2,k4", 0, 5);
    expect_range(rk(0, ASC, T_VER), "k2,k4,k3,k1,k5", 0, 5);
    expect_range(rk(0, DESC, T_KEY), "k5,k4,k3,k2,k1", 0, 5);   /* (checked) */
    expect_range(rk(0, ASC, T_KEY), "k1,k2,k3,k4,k5", 0, 5);
    expect_range(rk(3, ASC, T_KEY), "k1,k2,k3", 1, 5);
    expect_range(rk(0, ASC, T_VAL), "k2,k3,k1,k5,k4", 0, 5);
    expect_range(rk(0, NONE, T_VAL), "k2,k3,k1,k5,k4", 0, 5);
    expect_range(rk(0, DESC, T_CREATE), "k5,k4,k3,k2,k1", 0, 5);
    expect_range(rk(0, ASC, T_MOD), "k1,k2,k3,k4,k5", 0, 5);
    expect_range(rk(0, DESC, T_MOD), "k5,k4,k3,k2,k1", 0, 5);
    expect_range(rk(1, DESC, T_MOD), "k5", 1, 5);
}

Test(apply, range_filters_keys_only_count_only)
{
    range_fixture();
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("k");
    r.range_end = B("l");
    /* count ignores the filters; filters are inclusive */
    r.min_mod_revision = 7;
    expect_range(rng(&r), "k3,k4,k5", 0, 5);
    r.max_mod_revision = 8;
    expect_range(rng(&r), "k3,k4", 0, 5);
    r.limit = 1;   /* filters: fetch all, filter, then truncate (checked: more=true) */
    expect_range(rng(&r), "k3", 1, 5);
    r.limit = 0;
    r.min_mod_revision = r.max_mod_revision = 0;
    r.min_create_revision = 5;
    r.max_create_revision = 6;
    expect_range(rng(&r), "k2,k3", 0, 5);
    r.min_create_revision = r.max_create_revision = 0;

    /* count_only: no kvs, count, no more (checked, with a limit) */
    r.count_only = 1;
    r.limit = 2;
    expect_range(rng(&r), "", 0, 5);
    r.count_only = 0;

    /* keys_only: everything but the value (checked) */
    r.keys_only = 1;
    r.limit = 1;
    Etcdserverpb__RangeResponse *o = rng(&r);
    cr_assert_eq(o->n_kvs, 1);
    cr_assert_eq(o->kvs[0]->value.len, 0);
    cr_assert_eq(o->kvs[0]->version, 3);
    cr_assert_eq(o->kvs[0]->mod_revision, 4);
    cr_assert_eq(o->kvs[0]->create_revision, 2);
    cr_assert(o->more);
    fr(o);
    /* keys_only sorted by value: sorted first, value dropped after */
    r.limit = 0;
    r.sort_target = T_VAL;
    r.sort_order = DESC;
    o = rng(&r);
    cr_assert_str_eq(keys_of(o), "k4,k5,k1,k3,k2");
    for (size_t i = 0; i < o->n_kvs; i++)
        cr_assert_eq(o->kvs[i]->value.len, 0);
    fr(o);
}

Test(apply, range_end_forms)
{
    range_fixture();
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("k3");
    expect_range(rng(&r), "k3", 0, 1);   /* no range_end: the key */
    r.range_end = B("k2");
    expect_range(rng(&r), "", 0, 0);     /* range_end < key: empty (checked) */
    r.range_end = B("k3");
    expect_range(rng(&r), "", 0, 0);     /* == key: empty (checked) */
    r.key = B("k4");
    r.range_end = NUL;
    expect_range(rng(&r), "k4,k5,other", 0, 3);   /* "\0": every key >= key (checked) */
    r.key = NUL;
    expect_range(rng(&r), "k1,k2,k3,k4,k5,other", 0, 6);   /* "\0","\0": all */
    r.key = B("nope");
    r.range_end.len = 0;
    expect_range(rng(&r), "", 0, 0);
}

Test(apply, range_revisions)
{
    range_fixture();   /* up to 13 */
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("k");
    r.range_end = B("l");
    r.revision = 7;
    expect_range(rng(&r), "k1,k2,k3", 0, 3);
    r.revision = 4;
    Etcdserverpb__RangeResponse *o = rng(&r);
    cr_assert_str_eq(keys_of(o), "k1");
    cr_assert_eq(o->kvs[0]->version, 3);
    check_hdr(o->header, 13);   /* header: the current revision, not the one read */
    fr(o);
    r.revision = 3;
    r.sort_order = DESC;
    r.sort_target = T_VER;
    o = rng(&r);
    cr_assert_eq(o->kvs[0]->version, 2);
    fr(o);
    r.revision = -5;   /* negative: current, outside a txn */
    expect_range(rng(&r), "k5,k1,k3,k2,k4", 0, 5);
    r.revision = 14;
    cr_assert_null(rng(&r));
    expect_err(11, "etcdserver: mvcc: required revision is a future revision");
}

/* ---- Compact ---- */

static void *compact(int64_t rev)
{
    Etcdserverpb__CompactionRequest c = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    c.revision = rev;
    c.physical = 1;
    return apply(CAIRN_REQ_COMPACT, &c);
}

Test(apply, compact_errors_and_effect)
{
    range_fixture();   /* up to 13 */
    cr_assert_null(compact(14));
    expect_err(11, "etcdserver: mvcc: required revision is a future revision");
    Etcdserverpb__CompactionResponse *o = compact(7);
    cr_assert_not_null(o);
    check_hdr(o->header, 13);
    fr(o);
    cr_assert_null(compact(7));
    expect_err(11, "etcdserver: mvcc: required revision has been compacted");
    cr_assert_null(compact(3));
    expect_err(11, "etcdserver: mvcc: required revision has been compacted");
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("k");
    r.range_end = B("l");
    r.revision = 6;
    cr_assert_null(rng(&r));
    expect_err(11, "etcdserver: mvcc: required revision has been compacted");
    r.revision = 7;   /* == compact revision: fine */
    expect_range(rng(&r), "k1,k2,k3", 0, 3);
    cr_assert_eq(cairn_mvcc_compact_revision(M), 7);
    /* persisted */
    cairn_mvcc_destroy(&M);
    int err;
    M = cairn_mvcc_open(g_dir, &err, NULL, 0);
    cr_assert_not_null(M);
    cr_assert_eq(cairn_mvcc_compact_revision(M), 7);
    r.revision = 6;
    cr_assert_null(rng(&r));
    expect_err(11, "etcdserver: mvcc: required revision has been compacted");
}

Test(apply, compact_zero_on_fresh_store)
{
    /* compact revision starts at -1: compact 0 succeeds once, then ErrCompacted (checked) */
    void *o = compact(0);
    cr_assert_not_null(o);
    fr(o);
    cr_assert_null(compact(0));
    expect_err(11, "etcdserver: mvcc: required revision has been compacted");
    o = compact(1);
    cr_assert_not_null(o);
    fr(o);
}

/* ---- Txn ---- */

static Etcdserverpb__Compare *cmp_new(const char *key, int target, int result)
{
    Etcdserverpb__Compare *c = calloc(1, sizeof *c);
    etcdserverpb__compare__init(c);
    c->key = B(key);
    c->target = target;
    c->result = result;
    return c;
}

static Etcdserverpb__Compare *cmp_int(const char *key, int target, int result, int64_t v)
{
    Etcdserverpb__Compare *c = cmp_new(key, target, result);
    switch (target) {
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
        c->version = v;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        c->create_revision = v;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        c->mod_revision = v;
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
        c->lease = v;
        break;
    }
    return c;
}

static Etcdserverpb__Compare *cmp_val(const char *key, int result, const char *v)
{
    Etcdserverpb__Compare *c = cmp_new(key, ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE, result);
    c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c->value = B(v);
    return c;
}

static Etcdserverpb__RequestOp *op_put(const char *k, const char *v)
{
    Etcdserverpb__RequestOp *o = calloc(1, sizeof *o);
    etcdserverpb__request_op__init(o);
    Etcdserverpb__PutRequest *p = calloc(1, sizeof *p);
    etcdserverpb__put_request__init(p);
    p->key = B(k);
    p->value = B(v);
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    o->request_put = p;
    return o;
}

static Etcdserverpb__RequestOp *op_get(const char *k, const char *end)
{
    Etcdserverpb__RequestOp *o = calloc(1, sizeof *o);
    etcdserverpb__request_op__init(o);
    Etcdserverpb__RangeRequest *r = calloc(1, sizeof *r);
    etcdserverpb__range_request__init(r);
    r->key = B(k);
    if (end)
        r->range_end = B(end);
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    o->request_range = r;
    return o;
}

static Etcdserverpb__RequestOp *op_del(const char *k, const char *end)
{
    Etcdserverpb__RequestOp *o = calloc(1, sizeof *o);
    etcdserverpb__request_op__init(o);
    Etcdserverpb__DeleteRangeRequest *d = calloc(1, sizeof *d);
    etcdserverpb__delete_range_request__init(d);
    d->key = B(k);
    if (end)
        d->range_end = B(end);
    d->prev_kv = 1;
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    o->request_delete_range = d;
    return o;
}

static Etcdserverpb__TxnRequest *txn_new(void)
{
    Etcdserverpb__TxnRequest *t = calloc(1, sizeof *t);
    etcdserverpb__txn_request__init(t);
    t->compare = calloc(16, sizeof *t->compare);
    t->success = calloc(16, sizeof *t->success);
    t->failure = calloc(16, sizeof *t->failure);
    return t;
}

static Etcdserverpb__RequestOp *op_txn(Etcdserverpb__TxnRequest *t)
{
    Etcdserverpb__RequestOp *o = calloc(1, sizeof *o);
    etcdserverpb__request_op__init(o);
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    o->request_txn = t;
    return o;
}

/* Frees a hand-built request tree (calloc'd above; key bytes are literals). */
static void txn_free(Etcdserverpb__TxnRequest *t);
static void op_free(Etcdserverpb__RequestOp *o)
{
    switch (o->request_case) {
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN: txn_free(o->request_txn); break;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT: free(o->request_put); break;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE: free(o->request_range); break;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE: free(o->request_delete_range); break;
    default: break;
    }
    free(o);
}

static void txn_free(Etcdserverpb__TxnRequest *t)
{
    for (size_t i = 0; i < t->n_compare; i++)
        free(t->compare[i]);
    for (size_t i = 0; i < t->n_success; i++)
        op_free(t->success[i]);
    for (size_t i = 0; i < t->n_failure; i++)
        op_free(t->failure[i]);
    free(t->compare);
    free(t->success);
    free(t->failure);
    free(t);
}

#define ADD_CMP(t, c) ((t)->compare[(t)->n_compare++] = (c))
#define ADD_OK(t, o) ((t)->success[(t)->n_success++] = (o))
#define ADD_FAIL(t, o) ((t)->failure[(t)->n_failure++] = (o))

/* Runs a txn with one compare and success=put ok / failure=put fail; returns succeeded. */
static int cond(Etcdserverpb__Compare *c)
{
    Etcdserverpb__TxnRequest *t = txn_new();
    ADD_CMP(t, c);
    Etcdserverpb__TxnResponse *o = apply(CAIRN_REQ_TXN, t);
    cr_assert_not_null(o, "txn: %s", E.message);
    int ok = o->succeeded;
    fr(o);
    txn_free(t);
    return ok;
}

#define VER ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION
#define CRE ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE
#define MOD ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD
#define LEA ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE
#define EQ ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL
#define GT ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER
#define LT ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS
#define NE ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL

Test(apply, txn_compare_targets_and_results)
{
    grant(9);
    put("a", "mid");          /* 2 */
    put_full("a", "mid", 9);  /* 3: version 2, create 2, mod 3, lease 9 */
    cr_assert(cond(cmp_int("a", VER, EQ, 2)));
    cr_assert(!cond(cmp_int("a", VER, EQ, 1)));
    cr_assert(cond(cmp_int("a", VER, GT, 1)));
    cr_assert(!cond(cmp_int("a", VER, GT, 2)));
    cr_assert(cond(cmp_int("a", VER, LT, 3)));
    cr_assert(cond(cmp_int("a", VER, NE, 5)));
    cr_assert(!cond(cmp_int("a", VER, NE, 2)));
    cr_assert(cond(cmp_int("a", CRE, EQ, 2)));
    cr_assert(cond(cmp_int("a", CRE, LT, 3)));
    cr_assert(cond(cmp_int("a", MOD, EQ, 3)));
    cr_assert(cond(cmp_int("a", MOD, GT, 2)));
    cr_assert(cond(cmp_int("a", LEA, EQ, 9)));
    cr_assert(cond(cmp_int("a", LEA, GT, 0)));
    cr_assert(cond(cmp_val("a", EQ, "mid")));
    cr_assert(cond(cmp_val("a", GT, "abc")));
    cr_assert(cond(cmp_val("a", LT, "mie")));
    cr_assert(cond(cmp_val("a", LT, "midd")));   /* a prefix sorts first */
    cr_assert(cond(cmp_val("a", NE, "x")));
    cr_assert(!cond(cmp_val("a", NE, "mid")));
    /* target MOD with a "version" value compares against 0 (checked) */
    cr_assert(cond(cmp_int("a", MOD, GT, 0)));
    Etcdserverpb__Compare *c = cmp_int("a", VER, GT, 1000);
    c->target = MOD;
    cr_assert(cond(c));
    /* the header is the current revision and nothing was written by read-only txns */
    cr_assert_eq(cairn_mvcc_revision(M), 3);
}

Test(apply, txn_missing_key_compares)
{
    /* a missing key is a zero KeyValue; VALUE compares on it are always false (checked) */
    cr_assert(cond(cmp_int("nope", VER, EQ, 0)));
    cr_assert(cond(cmp_int("nope", CRE, EQ, 0)));
    cr_assert(cond(cmp_int("nope", MOD, EQ, 0)));
    cr_assert(cond(cmp_int("nope", LEA, EQ, 0)));
    cr_assert(cond(cmp_int("nope", MOD, LT, 5)));
    cr_assert(!cond(cmp_val("nope", EQ, "")));
    cr_assert(!cond(cmp_val("nope", NE, "x")));
    cr_assert(!cond(cmp_val("nope", LT, "x")));
}

Test(apply, txn_range_compares)
{
    range_fixture();   /* k1..k5 versions 3,1,2,1,4 */
    Etcdserverpb__Compare *c = cmp_int("k", VER, GT, 0);
    c->range_end = B("l");
    cr_assert(cond(c));   /* every key (checked) */
    c = cmp_int("k", VER, GT, 1);
    c->range_end = B("l");
    cr_assert(!cond(c));  /* k2 and k4 fail (checked) */
    c = cmp_int("k3", VER, GT, 1);
    c->range_end = B("k4");
    cr_assert(cond(c));
    c = cmp_int("q", CRE, EQ, 0);
    c->range_end = B("r");
    cr_assert(cond(c));   /* no key in range: a zero KeyValue (checked) */
    c = cmp_val("q", EQ, "");
    c->range_end = B("r");
    cr_assert(!cond(c));
    c = cmp_int("k4", VER, GT, 0);
    c->range_end = NUL;   /* every key >= k4 */
    cr_assert(cond(c));
    c = cmp_val("k", LT, "f");
    c->range_end = B("l");
    cr_assert(cond(c));   /* values a..e */
}

Test(apply, txn_ops_see_earlier_writes_and_share_a_revision)
{
    put("a", "1");   /* 2 */
    Etcdserverpb__TxnRequest *t = txn_new();
    ADD_CMP(t, cmp_int("a", VER, EQ, 1));
    ADD_OK(t, op_get("a", NULL));
    ADD_OK(t, op_del("zz", NULL));   /* no-op delete before any write */
    ADD_OK(t, op_put("b", "2"));
    ADD_OK(t, op_get("a", "c"));     /* sees b */
    ADD_OK(t, op_del("zz", NULL));   /* no-op delete after a write */
    ADD_OK(t, op_put("c", "3"));
    ADD_OK(t, op_del("a", NULL));
    ADD_OK(t, op_get("a", "z"));     /* a gone, b and c there */
    ADD_FAIL(t, op_put("never", "x"));
    Etcdserverpb__TxnResponse *o = apply(CAIRN_REQ_TXN, t);
    cr_assert_not_null(o, "%s", E.message);
    cr_assert(o->succeeded);
    check_hdr(o->header, 3);
    cr_assert_eq(o->n_responses, 8);
    /* per-op header revisions as etcd computes them (checked) */
    Etcdserverpb__RangeResponse *r0 = o->responses[0]->response_range;
    check_nested_hdr(r0->header, 2);
    cr_assert_str_eq(keys_of(r0), "a");
    check_nested_hdr(o->responses[1]->response_delete_range->header, 2);
    check_nested_hdr(o->responses[2]->response_put->header, 3);
    Etcdserverpb__RangeResponse *r3 = o->responses[3]->response_range;
    check_nested_hdr(r3->header, 3);
    cr_assert_str_eq(keys_of(r3), "a,b");
    cr_assert_eq(r3->kvs[1]->mod_revision, 3);
    check_nested_hdr(o->responses[4]->response_delete_range->header, 3);
    cr_assert_eq(o->responses[4]->response_delete_range->deleted, 0);
    Etcdserverpb__DeleteRangeResponse *d6 = o->responses[6]->response_delete_range;
    cr_assert_eq(d6->deleted, 1);
    cr_assert_eq(d6->prev_kvs[0]->mod_revision, 2);
    Etcdserverpb__RangeResponse *r7 = o->responses[7]->response_range;
    cr_assert_str_eq(keys_of(r7), "b,c");
    cr_assert_eq(r7->count, 2);
    fr(o);
    txn_free(t);
    cr_assert_eq(cairn_mvcc_revision(M), 3);   /* one main revision for the whole txn */
    /* put b, put c, delete a: sub revisions 0, 1, 2 of revision 3, seen by history */
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    r.key = B("a");
    r.revision = 2;
    expect_range(rng(&r), "a", 0, 1);
    r.revision = 3;
    expect_range(rng(&r), "", 0, 0);
}

Test(apply, txn_put_then_delete_same_key_from_key_range)
{
    /* put b, then delete [a, "\0") in one txn: etcd accepts it (checked) and the delete's
     * prev_kvs show the b just written, version 2 */
    put("b", "1");   /* 2 */
    Etcdserverpb__TxnRequest *t = txn_new();
    ADD_OK(t, op_put("b", "8"));
    Etcdserverpb__RequestOp *d = op_del("a", NULL);
    d->request_delete_range->range_end = NUL;
    ADD_OK(t, d);
    Etcdserverpb__TxnResponse *o = apply(CAIRN_REQ_TXN, t);
    cr_assert_not_null(o);
    Etcdserverpb__DeleteRangeResponse *dr = o->responses[1]->response_delete_range;
    cr_assert_eq(dr->deleted, 1);
    cr_assert_eq(dr->prev_kvs[0]->version, 2);
    cr_assert_eq(dr->prev_kvs[0]->mod_revision, 3);
    cr_assert_eq(dr->prev_kvs[0]->create_revision, 2);
    check_nested_hdr(dr->header, 3);
    fr(o);
    txn_free(t);
    Etcdserverpb__RangeResponse *g = get1("b");
    cr_assert_eq(g->n_kvs, 0);
    fr(g);
    /* b's history at 3: the tombstone (sub 1) wins over the put (sub 0) */
    put("b", "again");   /* 4: a new generation */
    g = get1("b");
    cr_assert_eq(g->kvs[0]->version, 1);
    cr_assert_eq(g->kvs[0]->create_revision, 4);
    fr(g);
}

Test(apply, txn_nested_headers_and_pre_txn_compares)
{
    put("a", "1");   /* 2 */
    Etcdserverpb__TxnRequest *inner = txn_new();
    /* nested compares see the state BEFORE the outer txn's ops: x does not exist yet
     * although the outer txn puts it first (checked) */
    ADD_CMP(inner, cmp_int("x", VER, EQ, 0));
    ADD_OK(inner, op_put("y", "1"));
    ADD_OK(inner, op_get("x", NULL));   /* ...but its ops see the outer put */
    ADD_FAIL(inner, op_put("z", "1"));
    Etcdserverpb__TxnRequest *inner2 = txn_new();   /* failure branch */
    ADD_CMP(inner2, cmp_val("a", EQ, "nope"));
    ADD_FAIL(inner2, op_get("a", NULL));
    Etcdserverpb__TxnRequest *t = txn_new();
    ADD_OK(t, op_put("x", "1"));
    ADD_OK(t, op_txn(inner));
    ADD_OK(t, op_txn(inner2));
    Etcdserverpb__TxnResponse *o = apply(CAIRN_REQ_TXN, t);
    cr_assert_not_null(o, "%s", E.message);
    check_hdr(o->header, 3);
    cr_assert_eq(o->n_responses, 3);
    Etcdserverpb__TxnResponse *n1 = o->responses[1]->response_txn;
    cr_assert_not_null(n1);
    cr_assert(n1->succeeded);
    check_nested_hdr(n1->header, 0); /* there, and empty, as etcd has it */
    cr_assert_eq(n1->n_responses, 2);
    check_nested_hdr(n1->responses[0]->response_put->header, 3);
    Etcdserverpb__RangeResponse *xr = n1->responses[1]->response_range;
    cr_assert_str_eq(keys_of(xr), "x");
    Etcdserverpb__TxnResponse *n2 = o->responses[2]->response_txn;
    cr_assert(!n2->succeeded);
    check_nested_hdr(n2->header, 0);
    cr_assert_str_eq(keys_of(n2->responses[0]->response_range), "a");
    fr(o);
    txn_free(t);
    Etcdserverpb__RangeResponse *g = get1("y");
    cr_assert_eq(g->n_kvs, 1);
    cr_assert_eq(g->kvs[0]->mod_revision, 3);
    fr(g);
    g = get1("z");
    cr_assert_eq(g->n_kvs, 0);
    fr(g);
}

Test(apply, txn_failures_change_nothing)
{
    put("a", "1");   /* 2 */
    /* unknown lease in a later op: nothing of the txn is applied */
    Etcdserverpb__TxnRequest *t = txn_new();
    ADD_OK(t, op_put("b", "1"));
    Etcdserverpb__RequestOp *p = op_put("c", "1");
    p->request_put->lease = 1234;
    ADD_OK(t, p);
    cr_assert_null(apply(CAIRN_REQ_TXN, t));
    expect_err(5, "etcdserver: requested lease not found");
    txn_free(t);
    /* ignore_value on a missing key: checked before the lease (checked) */
    t = txn_new();
    p = op_put("missing", "");
    p->request_put->ignore_value = 1;
    p->request_put->lease = 1234;
    ADD_OK(t, p);
    cr_assert_null(apply(CAIRN_REQ_TXN, t));
    expect_err(3, "etcdserver: key not found");
    txn_free(t);
    /* only the branch taken is checked */
    t = txn_new();
    ADD_CMP(t, cmp_int("a", VER, EQ, 1));
    p = op_put("c", "1");
    p->request_put->lease = 1234;
    ADD_FAIL(t, p);
    ADD_OK(t, op_put("ok", "1"));
    Etcdserverpb__TxnResponse *o = apply(CAIRN_REQ_TXN, t);
    cr_assert_not_null(o);
    fr(o);
    txn_free(t);
    /* a range at a future / compacted revision inside a txn */
    t = txn_new();
    ADD_OK(t, op_put("b", "1"));
    Etcdserverpb__RequestOp *g = op_get("a", NULL);
    g->request_range->revision = 4;   /* the txn would write 4, but the check is pre-txn */
    ADD_OK(t, g);
    cr_assert_null(apply(CAIRN_REQ_TXN, t));
    expect_err(11, "etcdserver: mvcc: required revision is a future revision");
    g->request_range->revision = -3;   /* below compact revision -1: ErrCompacted (checked) */
    cr_assert_null(apply(CAIRN_REQ_TXN, t));
    expect_err(11, "etcdserver: mvcc: required revision has been compacted");
    txn_free(t);
    cr_assert_eq(cairn_mvcc_revision(M), 3);
    Etcdserverpb__RangeResponse *r = get1("b");
    cr_assert_eq(r->n_kvs, 0);
    fr(r);
}

/* ---- robustness and plumbing ---- */

Test(apply, malformed_protobuf_and_unknown_kind)
{
    const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};   /* length beyond the end */
    uint8_t *resp = (uint8_t *)1;
    size_t rl = 7;
    for (int kind = CAIRN_REQ_PUT; kind <= CAIRN_REQ_RANGE; kind++) {
        cr_assert_eq(cairn_apply_request(M, ++g_idx, 1, kind, junk, sizeof junk, &HDR, &resp, &rl, &E), 0);
        cr_assert_eq(E.grpc_code, 3, "kind %d", kind);
        cr_assert(strstr(E.message, "malformed") != NULL, "%s", E.message);
        cr_assert_null(resp);
        cr_assert_eq(cairn_mvcc_applied_index(M), g_idx);
    }
    cr_assert_eq(cairn_apply_request(M, ++g_idx, 1, 42, junk, sizeof junk, &HDR, &resp, &rl, &E), 0);
    cr_assert_eq(E.grpc_code, 3);
    cr_assert_eq(cairn_apply_range(M, junk, sizeof junk, &HDR, &resp, &rl, &E), 0);
    cr_assert_eq(E.grpc_code, 3);
    /* NULL body with length 0 is an empty (valid) message */
    cr_assert_eq(cairn_apply_request(M, ++g_idx, 1, CAIRN_REQ_TXN, NULL, 0, &HDR, &resp, &rl, &E), 0);
    cr_assert_eq(E.grpc_code, 0);
    free(resp);
    cr_assert_eq(cairn_mvcc_revision(M), 1);
}

/* Issue 7: a txn nested thousands deep crashed protobuf-c's recursive unpack. An entry reaches
 * apply from the log, whoever proposed it, so apply measures the depth on the bytes first: a
 * too-deep txn is an error result (every member the same), not a crash on every replay. */
Test(apply, txn_nested_too_deep_is_an_error_not_a_crash)
{
    /* innermost: TxnRequest{success: [RequestOp{request_put{key "deep", value "v"}}]} */
    static const uint8_t inner[] = {0x12, 0x0b, 0x12, 0x09, 0x0a, 0x04, 'd', 'e', 'e', 'p', 0x12, 0x01, 'v'};
    uint8_t *resp = NULL;
    size_t rl = 0, n;
    /* at the limit: applied, the put at the bottom included */
    uint8_t *b = nested_txn(CAIRN_KVCHECK_MAX_TXN_DEPTH, inner, sizeof inner, 0, &n);
    cr_assert_eq(cairn_apply_request(M, ++g_idx, 1, CAIRN_REQ_TXN, b, n, &HDR, &resp, &rl, &E), 0);
    cr_assert_eq(E.grpc_code, 0, "%s", E.message);
    cr_assert_not_null(resp);
    free(resp);
    free(b);
    cr_assert_eq(cairn_mvcc_revision(M), 2);
    int depths[] = {6000, 100000, CAIRN_KVCHECK_MAX_TXN_DEPTH + 1};
    for (int i = 0; i < 3; i++) {
        b = nested_txn(depths[i], inner, sizeof inner, 0, &n);
        resp = (uint8_t *)1;
        cr_assert_eq(cairn_apply_request(M, ++g_idx, 1, CAIRN_REQ_TXN, b, n, &HDR, &resp, &rl, &E), 0);
        expect_err(3, "etcdserver: txn nested too deeply (more than 128 levels)");
        cr_assert_null(resp);
        cr_assert_eq(cairn_mvcc_applied_index(M), g_idx, "a refused entry consumes its index");
        free(b);
    }
    cr_assert_eq(cairn_mvcc_revision(M), 2, "nothing of the refused txns was applied");
    /* a truncated one is malformed, not unpacked */
    b = nested_txn(6000, inner, sizeof inner, 0, &n);
    cr_assert_eq(cairn_apply_request(M, ++g_idx, 1, CAIRN_REQ_TXN, b, 40, &HDR, &resp, &rl, &E), 0);
    cr_assert_eq(E.grpc_code, 3);
    cr_assert(strstr(E.message, "malformed") != NULL, "%s", E.message);
    free(b);
    /* and the store still works */
    cr_assert_eq(put("after", "1"), 3);
}

Test(apply, noop_and_replayed_index)
{
    cr_assert_eq(cairn_apply_noop(M, 5, 2), 0);
    cr_assert_eq(cairn_mvcc_applied_index(M), 5);
    cr_assert_eq(cairn_mvcc_applied_term(M), 2);
    g_idx = 5;
    put("a", "1");   /* index 6 */
    /* replaying index 6 again does nothing */
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = B("a");
    r.value = B("2");
    uint8_t buf[64];
    size_t n = etcdserverpb__put_request__pack(&r, buf);
    uint8_t *resp = NULL;
    size_t rl = 0;
    cr_assert_eq(cairn_apply_request(M, 6, 3, CAIRN_REQ_PUT, buf, n, &HDR, &resp, &rl, &E), 0);
    cr_assert_null(resp);
    cr_assert_eq(E.grpc_code, 0);
    cr_assert_eq(cairn_mvcc_revision(M), 2);
    cr_assert_eq(cairn_apply_noop(M, 6, 3), 0);
    cr_assert_eq(cairn_mvcc_applied_index(M), 6);
}

Test(apply, batch_is_invisible_to_reads_until_committed)
{
    put("a", "1");   /* 2 */
    cr_assert_eq(cairn_mvcc_batch_begin(M), 0);
    char k[16];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "b%04d", i);
        put(k, "v");
    }
    /* a later entry of the batch sees the earlier ones */
    Etcdserverpb__TxnRequest *t = txn_new();
    ADD_CMP(t, cmp_int("b0999", VER, EQ, 1));
    ADD_OK(t, op_get("b", "c"));
    Etcdserverpb__TxnResponse *o = apply(CAIRN_REQ_TXN, t);
    cr_assert(o->succeeded);
    cr_assert_eq(o->responses[0]->response_range->count, 1000);
    fr(o);
    txn_free(t);
    /* the read path sees the committed state only */
    Etcdserverpb__RangeResponse *g = get1("b0000");
    cr_assert_eq(g->n_kvs, 0);
    check_hdr(g->header, 2);
    fr(g);
    cr_assert_eq(cairn_mvcc_applied_index(M), 1);
    cr_assert_eq(cairn_mvcc_batch_commit(M), 0);
    cr_assert_eq(cairn_mvcc_applied_index(M), g_idx);
    g = get1("b0000");
    cr_assert_eq(g->n_kvs, 1);
    check_hdr(g->header, 1002);
    fr(g);
}
