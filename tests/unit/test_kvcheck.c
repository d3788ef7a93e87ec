/* Unit tests for cairn_kvcheck: etcd's gateway checks. "(checked)" marks cases verified
 * against a running etcd 3.4.23. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_kvcheck.h"
#include "nested_txn.h"

static ProtobufCBinaryData B(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

static const char *msg;

#define EXPECT(call, code, text)                                                                \
    do {                                                                                        \
        msg = NULL;                                                                             \
        int rc_ = (call);                                                                       \
        cr_assert_eq(rc_, (code), "%s: got %d (%s)", #call, rc_, msg ? msg : "-");             \
        if (text)                                                                               \
            cr_assert_str_eq(msg, (const char *)(text));                                        \
    } while (0)

#define OK(call) EXPECT(call, 0, NULL)
#define BAD(call, text) EXPECT(call, 3, text)

Test(kvcheck, range_put_delete)
{
    Etcdserverpb__RangeRequest r = ETCDSERVERPB__RANGE_REQUEST__INIT;
    BAD(cairn_kvcheck_range(&r, &msg), "etcdserver: key is not provided");
    r.key = B("a");
    OK(cairn_kvcheck_range(&r, &msg));

    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    BAD(cairn_kvcheck_put(&p, &msg), "etcdserver: key is not provided");
    p.key = B("a");
    OK(cairn_kvcheck_put(&p, &msg));
    p.value = B("v");
    p.ignore_value = 1;
    BAD(cairn_kvcheck_put(&p, &msg), "etcdserver: value is provided");
    p.value = B("");
    OK(cairn_kvcheck_put(&p, &msg));
    p.ignore_lease = 1;
    p.lease = 5;
    BAD(cairn_kvcheck_put(&p, &msg), "etcdserver: lease is provided");
    p.ignore_lease = 0;
    OK(cairn_kvcheck_put(&p, &msg));

    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.range_end = B("z");
    BAD(cairn_kvcheck_delete_range(&d, &msg), "etcdserver: key is not provided");
    d.key = B("a");
    OK(cairn_kvcheck_delete_range(&d, &msg));
}

/* ---- txn building (everything on one arena-ish pool, freed at the end) ---- */

static void *pool[4096];
static int npool;

static void *palloc(size_t n)
{
    cr_assert_lt(npool, 4096);
    return pool[npool++] = calloc(1, n);
}

static void pool_free(void)
{
    while (npool)
        free(pool[--npool]);
}

static Etcdserverpb__TxnRequest *txn(void)
{
    Etcdserverpb__TxnRequest *t = palloc(sizeof *t);
    etcdserverpb__txn_request__init(t);
    t->compare = palloc(300 * sizeof *t->compare);
    t->success = palloc(300 * sizeof *t->success);
    t->failure = palloc(300 * sizeof *t->failure);
    return t;
}

static Etcdserverpb__RequestOp *put(const char *k)
{
    Etcdserverpb__RequestOp *o = palloc(sizeof *o);
    etcdserverpb__request_op__init(o);
    o->request_put = palloc(sizeof *o->request_put);
    etcdserverpb__put_request__init(o->request_put);
    o->request_put->key = B(k);
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    return o;
}

static Etcdserverpb__RequestOp *get(const char *k)
{
    Etcdserverpb__RequestOp *o = palloc(sizeof *o);
    etcdserverpb__request_op__init(o);
    o->request_range = palloc(sizeof *o->request_range);
    etcdserverpb__range_request__init(o->request_range);
    o->request_range->key = B(k);
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    return o;
}

/* end NULL: single key; "\0" written as "" here means range_end = one 0x00 byte */
static Etcdserverpb__RequestOp *del(const char *k, const char *end)
{
    Etcdserverpb__RequestOp *o = palloc(sizeof *o);
    etcdserverpb__request_op__init(o);
    o->request_delete_range = palloc(sizeof *o->request_delete_range);
    etcdserverpb__delete_range_request__init(o->request_delete_range);
    o->request_delete_range->key = B(k);
    if (end && !*end) {
        o->request_delete_range->range_end.len = 1;
        o->request_delete_range->range_end.data = (uint8_t *)"";
    } else if (end) {
        o->request_delete_range->range_end = B(end);
    }
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    return o;
}

static Etcdserverpb__RequestOp *sub(Etcdserverpb__TxnRequest *t)
{
    Etcdserverpb__RequestOp *o = palloc(sizeof *o);
    etcdserverpb__request_op__init(o);
    o->request_txn = t;
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    return o;
}

static Etcdserverpb__Compare *cmp(const char *k)
{
    Etcdserverpb__Compare *c = palloc(sizeof *c);
    etcdserverpb__compare__init(c);
    c->key = B(k);
    return c;
}

#define OKOP(t, o) ((t)->success[(t)->n_success++] = (o))
#define ELSEOP(t, o) ((t)->failure[(t)->n_failure++] = (o))
#define CMP(t, c) ((t)->compare[(t)->n_compare++] = (c))

#define DUPKEY "etcdserver: duplicate key given in txn request"
#define TOOMANY "etcdserver: too many operations in txn request"

TestSuite(kvcheck_txn, .fini = pool_free);

Test(kvcheck_txn, valid_requests_pass)
{
    Etcdserverpb__TxnRequest *t = txn();
    OK(cairn_kvcheck_txn(t, 0, &msg));   /* empty txn */
    CMP(t, cmp("a"));
    OKOP(t, put("a"));
    OKOP(t, put("b"));
    OKOP(t, get("a"));
    OKOP(t, del("c", "d"));
    ELSEOP(t, put("a"));   /* success and failure are never both run */
    ELSEOP(t, del("b", NULL));
    OK(cairn_kvcheck_txn(t, 0, &msg));
}

Test(kvcheck_txn, keys_and_empty_ops)
{
    Etcdserverpb__TxnRequest *t = txn();
    CMP(t, cmp(""));
    BAD(cairn_kvcheck_txn(t, 0, &msg), "etcdserver: key is not provided");
    t = txn();
    OKOP(t, put(""));
    BAD(cairn_kvcheck_txn(t, 0, &msg), "etcdserver: key is not provided");
    t = txn();
    Etcdserverpb__RequestOp *p = put("a");
    p->request_put->ignore_value = 1;
    p->request_put->value = B("x");
    ELSEOP(t, p);
    BAD(cairn_kvcheck_txn(t, 0, &msg), "etcdserver: value is provided");
    /* an op with nothing set: "key not found" (checked) */
    t = txn();
    Etcdserverpb__RequestOp *empty = palloc(sizeof *empty);
    etcdserverpb__request_op__init(empty);
    OKOP(t, put("a"));
    OKOP(t, empty);
    BAD(cairn_kvcheck_txn(t, 0, &msg), "etcdserver: key not found");
    /* in a nested txn too */
    Etcdserverpb__TxnRequest *in = txn();
    OKOP(in, get(""));
    t = txn();
    OKOP(t, sub(in));
    BAD(cairn_kvcheck_txn(t, 0, &msg), "etcdserver: key is not provided");
}

Test(kvcheck_txn, too_many_operations)
{
    static char keys[200][8];
    Etcdserverpb__TxnRequest *t = txn();
    for (int i = 0; i < 128; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        OKOP(t, put(keys[i]));
    }
    OK(cairn_kvcheck_txn(t, 0, &msg));    /* 128 = etcd's default limit */
    OK(cairn_kvcheck_txn(t, 128, &msg));
    snprintf(keys[128], sizeof keys[128], "k128");
    OKOP(t, put(keys[128]));
    BAD(cairn_kvcheck_txn(t, 0, &msg), TOOMANY);
    OK(cairn_kvcheck_txn(t, 129, &msg));  /* configurable */
    /* compares and failure ops count too: the largest of the three */
    t = txn();
    for (int i = 0; i < 4; i++)
        CMP(t, cmp("a"));
    BAD(cairn_kvcheck_txn(t, 3, &msg), TOOMANY);
    t = txn();
    for (int i = 0; i < 3; i++) {
        CMP(t, cmp("a"));
        OKOP(t, get("a"));
        ELSEOP(t, get("a"));
    }
    OK(cairn_kvcheck_txn(t, 3, &msg));
    /* a nested txn gets what its parent leaves: max - the parent's op count */
    Etcdserverpb__TxnRequest *in = txn();
    OKOP(in, get("x"));
    OKOP(in, get("y"));
    t = txn();
    OKOP(t, sub(in));
    OKOP(t, get("z"));
    OK(cairn_kvcheck_txn(t, 4, &msg));    /* parent 2, child 2 <= 4-2 */
    BAD(cairn_kvcheck_txn(t, 3, &msg), TOOMANY);   /* child 2 > 3-2 */
    /* the op count is checked before duplicates */
    t = txn();
    OKOP(t, put("a"));
    OKOP(t, put("a"));
    BAD(cairn_kvcheck_txn(t, 1, &msg), TOOMANY);
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
}

Test(kvcheck_txn, duplicate_keys_one_level)
{
    Etcdserverpb__TxnRequest *t = txn();
    OKOP(t, put("a"));
    OKOP(t, put("a"));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    t = txn();   /* in the failure branch too */
    ELSEOP(t, put("b"));
    ELSEOP(t, put("b"));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    t = txn();   /* put and a delete of the same key, either order (checked: delete then put) */
    OKOP(t, del("y", NULL));
    OKOP(t, put("y"));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    t = txn();
    OKOP(t, put("y"));
    OKOP(t, del("y", NULL));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    t = txn();   /* put inside a deleted range (checked) */
    OKOP(t, put("c"));
    OKOP(t, del("a", "d"));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    t = txn();   /* range end is exclusive */
    OKOP(t, put("d"));
    OKOP(t, del("a", "d"));
    OK(cairn_kvcheck_txn(t, 0, &msg));
    t = txn();   /* a wide range begun before a narrow one still covers what follows it */
    OKOP(t, del("m", "n"));
    OKOP(t, del("a", "z"));
    OKOP(t, del("c", "d"));
    OKOP(t, put("p"));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    t = txn();   /* overlapping deletes are fine (checked) */
    OKOP(t, del("y", NULL));
    OKOP(t, del("y", NULL));
    OKOP(t, del("a", "z"));
    OK(cairn_kvcheck_txn(t, 0, &msg));
    t = txn();   /* range_end "\0" is not "to the end" in etcd's check: accepted (checked) */
    OKOP(t, del("a", ""));
    OKOP(t, put("b"));
    OK(cairn_kvcheck_txn(t, 0, &msg));
    t = txn();   /* reads never conflict */
    OKOP(t, get("a"));
    OKOP(t, put("a"));
    OKOP(t, get("a"));
    OK(cairn_kvcheck_txn(t, 0, &msg));
    t = txn();   /* keys with 0x00 bytes: "a\0" is inside [a, a\0\0) but "a" is not "a\0" */
    Etcdserverpb__RequestOp *p = put("a");
    p->request_put->key.len = 2;   /* "a\0" */
    OKOP(t, p);
    OKOP(t, put("a"));
    OK(cairn_kvcheck_txn(t, 0, &msg));
    Etcdserverpb__RequestOp *d = del("a", NULL);
    d->request_delete_range->key.len = 2;   /* deletes "a\0" */
    OKOP(t, d);
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
}

Test(kvcheck_txn, duplicate_keys_nested)
{
    /* outer put vs nested put */
    Etcdserverpb__TxnRequest *in = txn();
    OKOP(in, put("x"));
    Etcdserverpb__TxnRequest *t = txn();
    OKOP(t, sub(in));
    OKOP(t, put("x"));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);

    /* the same key in both branches of one nested txn: fine (checked) */
    in = txn();
    OKOP(in, put("x"));
    ELSEOP(in, put("x"));
    t = txn();
    OKOP(t, sub(in));
    OK(cairn_kvcheck_txn(t, 0, &msg));
    /* ...but not with an outer put, nor in a sibling nested txn */
    OKOP(t, put("x"));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    t = txn();
    Etcdserverpb__TxnRequest *in2 = txn();
    ELSEOP(in2, put("x"));
    OKOP(t, sub(in));
    OKOP(t, sub(in2));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);

    /* outer delete vs nested put (checked: outer put + nested delete) */
    in = txn();
    OKOP(in, put("k"));
    t = txn();
    OKOP(t, del("a", "z"));
    OKOP(t, sub(in));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    in = txn();
    OKOP(in, del("y", NULL));
    t = txn();
    OKOP(t, put("y"));
    OKOP(t, sub(in));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);

    /* sibling nested txns: child 1 deletes x, child 2 puts x: duplicate; the other way
     * round etcd lets it through (it checks puts against the deletes seen so far) (checked) */
    Etcdserverpb__TxnRequest *dx = txn(), *px = txn();
    OKOP(dx, del("x", NULL));
    OKOP(px, put("x"));
    t = txn();
    OKOP(t, sub(dx));
    OKOP(t, sub(px));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
    t = txn();
    OKOP(t, sub(px));
    OKOP(t, sub(dx));
    OK(cairn_kvcheck_txn(t, 0, &msg));

    /* two levels down */
    Etcdserverpb__TxnRequest *deep = txn(), *mid = txn();
    OKOP(deep, put("deep"));
    OKOP(mid, sub(deep));
    t = txn();
    OKOP(t, sub(mid));
    OK(cairn_kvcheck_txn(t, 0, &msg));
    OKOP(t, del("de", "df"));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);

    /* a duplicate inside a nested txn's failure branch */
    in = txn();
    ELSEOP(in, put("q"));
    ELSEOP(in, del("p", "r"));
    t = txn();
    ELSEOP(t, sub(in));
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
}

Test(kvcheck_txn, many_deletes_and_puts_scale)
{
    /* 100 disjoint range deletes; a nested txn (limit 128 - 101 = 27 ops) puts keys at
     * their exclusive ends, then one at a begin */
    static char k[300][8];
    Etcdserverpb__TxnRequest *t = txn();
    for (int i = 0; i < 100; i++) {
        snprintf(k[2 * i], 8, "d%03d", 2 * i);
        snprintf(k[2 * i + 1], 8, "d%03d", 2 * i + 1);
        OKOP(t, del(k[2 * i], k[2 * i + 1]));   /* [d000, d001) ... */
    }
    Etcdserverpb__TxnRequest *in = txn();
    for (int i = 0; i < 7; i++) {
        snprintf(k[250 + i], 8, "d%03d", 2 * i + 1);   /* exactly at exclusive ends */
        OKOP(in, put(k[250 + i]));
    }
    OKOP(t, sub(in));
    OK(cairn_kvcheck_txn(t, 0, &msg));
    OKOP(in, put("d100"));   /* d100 is a begin */
    BAD(cairn_kvcheck_txn(t, 0, &msg), DUPKEY);
}

Test(kvcheck, packed_requests)
{
    uint8_t buf[256];
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("a");
    p.lease = 3;
    p.ignore_lease = 1;
    size_t n = etcdserverpb__put_request__pack(&p, buf);
    BAD(cairn_kvcheck_request(CAIRN_REQ_PUT, buf, n, 0, &msg), "etcdserver: lease is provided");
    p.ignore_lease = 0;
    n = etcdserverpb__put_request__pack(&p, buf);
    OK(cairn_kvcheck_request(CAIRN_REQ_PUT, buf, n, 0, &msg));
    OK(cairn_kvcheck_request(CAIRN_REQ_COMPACT, NULL, 0, 0, &msg));
    BAD(cairn_kvcheck_request(CAIRN_REQ_RANGE, NULL, 0, 0, &msg), "etcdserver: key is not provided");
    BAD(cairn_kvcheck_request(CAIRN_REQ_DELETE_RANGE, NULL, 0, 0, &msg), "etcdserver: key is not provided");
    OK(cairn_kvcheck_request(CAIRN_REQ_TXN, NULL, 0, 0, &msg));
    const uint8_t junk[] = {0x0a, 0x7f, 0x01};
    for (int kind = CAIRN_REQ_PUT; kind <= CAIRN_REQ_RANGE; kind++) {
        EXPECT(cairn_kvcheck_request(kind, junk, sizeof junk, 0, &msg), 3, NULL);
        cr_assert(strstr(msg, "malformed") != NULL, "%s", msg);
    }
    EXPECT(cairn_kvcheck_request(99, buf, n, 0, &msg), 3, NULL);
}

/* ---- nesting depth (issue 7: a ~42 KB txn nested ~6,000 deep crashed gatewayd inside
 * protobuf-c's recursive unpack, before any check ran) ---- */

#define MAXD CAIRN_KVCHECK_MAX_TXN_DEPTH
#define TOODEEP "etcdserver: txn nested too deeply (more than 128 levels)"

/* The depth of an unpacked request, by recursion (only ever on shallow ones here). */
static int depth_of(const Etcdserverpb__TxnRequest *t)
{
    int d = 0;
    for (int br = 0; br < 2; br++) {
        size_t n = br ? t->n_failure : t->n_success;
        Etcdserverpb__RequestOp **ops = br ? t->failure : t->success;
        for (size_t i = 0; i < n; i++)
            if (ops[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN && ops[i]->request_txn) {
                int c = 1 + depth_of(ops[i]->request_txn);
                d = c > d ? c : d;
            }
    }
    return d;
}

Test(kvcheck_depth, message_names_the_limit)
{
    cr_assert_str_eq(cairn_etcd_err_text(CAIRN_ETCD_TXN_TOO_DEEP), TOODEEP);
    cr_assert_eq(MAXD, 128);
}

Test(kvcheck_depth, at_the_limit_accepted_one_more_refused)
{
    size_t n;
    OK(cairn_kvcheck_txn_depth(NULL, 0));
    for (int d = 1; d <= 3; d++) {
        uint8_t *b = nested_txn(d, NULL, 0, 0, &n);
        cr_assert_eq(cairn_kvcheck_txn_depth(b, n), d);
        free(b);
    }
    uint8_t *b = nested_txn(MAXD, NULL, 0, 0, &n);
    cr_assert_eq(cairn_kvcheck_txn_depth(b, n), MAXD);
    /* one op per level, an empty innermost txn: exactly what etcd's op budget lets through
     * at its default --max-txn-ops, so the depth limit refuses nothing etcd would accept */
    OK(cairn_kvcheck_request(CAIRN_REQ_TXN, b, n, 0, &msg));
    free(b);
    b = nested_txn(MAXD + 1, NULL, 0, 0, &n);
    cr_assert_eq(cairn_kvcheck_txn_depth(b, n), CAIRN_ETOOBIG);
    BAD(cairn_kvcheck_request(CAIRN_REQ_TXN, b, n, 0, &msg), TOODEEP);
    BAD(cairn_kvcheck_request(CAIRN_REQ_TXN, b, n, 100000, &msg), TOODEEP);   /* whatever --max-txn-ops says */
    free(b);
    /* the failure branch nests the same way */
    b = nested_txn(MAXD, NULL, 0, 2, &n);
    cr_assert_eq(cairn_kvcheck_txn_depth(b, n), MAXD);
    free(b);
    b = nested_txn(MAXD + 1, NULL, 0, 1, &n);
    cr_assert_eq(cairn_kvcheck_txn_depth(b, n), CAIRN_ETOOBIG);
    free(b);
}

/* A TxnRequest of ops: success = ld(2, ld(4, child)) for each child, given as bytes. */
static uint8_t *wrap_ops(uint8_t *const *child, const size_t *clen, int nc, size_t *len)
{
    size_t total = 0;
    for (int i = 0; i < nc; i++) {
        size_t op = 1 + nt_varint_len(clen[i]) + clen[i];
        total += 1 + nt_varint_len(op) + op;
    }
    uint8_t *buf = malloc(total + 1), *p = buf;
    for (int i = 0; i < nc; i++) {
        size_t op = 1 + nt_varint_len(clen[i]) + clen[i];
        *p++ = 0x12;
        p = nt_put_varint(p, op);
        *p++ = 0x22;
        p = nt_put_varint(p, clen[i]);
        memcpy(p, child[i], clen[i]);
        p += clen[i];
    }
    *len = total;
    return buf;
}

Test(kvcheck_depth, deepest_of_siblings_and_real_content)
{
    /* siblings: the walk comes back up and goes on; the deepest branch counts */
    int ds[] = {3, MAXD - 1, 7, 0};
    uint8_t *c[4];
    size_t cl[4], n;
    for (int i = 0; i < 4; i++)
        c[i] = nested_txn(ds[i], NULL, 0, 0, &cl[i]);
    uint8_t *b = wrap_ops(c, cl, 4, &n);
    cr_assert_eq(cairn_kvcheck_txn_depth(b, n), MAXD);
    free(b);
    free(c[1]);
    c[1] = nested_txn(MAXD, NULL, 0, 0, &cl[1]);   /* now one level too many, second of four */
    b = wrap_ops(c, cl, 4, &n);
    cr_assert_eq(cairn_kvcheck_txn_depth(b, n), CAIRN_ETOOBIG);
    free(b);
    for (int i = 0; i < 4; i++)
        free(c[i]);

    /* a real request packed by protobuf-c: compares, puts, ranges, deletes at every level
     * are skipped over, and the depth agrees with the unpacked structure */
    Etcdserverpb__TxnRequest *t = txn(), *in = t;
    CMP(t, cmp("c"));
    OKOP(t, put("top"));
    for (int d = 1; d <= 5; d++) {
        Etcdserverpb__TxnRequest *next = txn();
        CMP(next, cmp("x"));
        OKOP(next, get("g"));
        ELSEOP(next, del("a", "b"));
        if (d % 2)
            OKOP(in, sub(next));
        else
            ELSEOP(in, sub(next));
        in = next;
    }
    OKOP(in, put("deep"));
    uint8_t buf[4096];
    n = etcdserverpb__txn_request__pack(t, buf);
    cr_assert_lt(n, sizeof buf);
    cr_assert_eq(cairn_kvcheck_txn_depth(buf, n), 5);
    OK(cairn_kvcheck_request(CAIRN_REQ_TXN, buf, n, 0, &msg));
    /* and in memory: the same line for a request that never was bytes */
    Etcdserverpb__TxnRequest *top = txn();
    in = top;
    for (int d = 1; d <= MAXD; d++) {
        Etcdserverpb__TxnRequest *next = txn();
        OKOP(in, sub(next));
        in = next;
    }
    OK(cairn_kvcheck_txn(top, 100000, &msg));
    Etcdserverpb__TxnRequest *last = txn();
    OKOP(in, sub(last));
    BAD(cairn_kvcheck_txn(top, 100000, &msg), TOODEEP);
}

Test(kvcheck_depth, thousands_of_levels_refused_without_crashing)
{
    /* 6,000 levels is the ~42 KB request that crashed gatewayd; 100,000 levels (~700 KB) is
     * far past any stack. Unpacking either would overflow it: the check must not unpack. */
    int depths[] = {6000, 100000};
    for (int i = 0; i < 2; i++) {
        size_t n;
        uint8_t *b = nested_txn(depths[i], (const uint8_t *)"\x12\x00", 2, 0, &n);
        cr_assert_eq(cairn_kvcheck_txn_depth(b, n), CAIRN_ETOOBIG, "%d levels", depths[i]);
        BAD(cairn_kvcheck_request(CAIRN_REQ_TXN, b, n, 0, &msg), TOODEEP);
        BAD(cairn_kvcheck_request(CAIRN_REQ_TXN, b, n, 1 << 30, &msg), TOODEEP);
        /* and so is every truncation of it: never unpacked, refused cleanly */
        for (size_t cut = n - 1; cut > n - 64; cut--)
            cr_assert(cairn_kvcheck_txn_depth(b, cut) < 0);
        free(b);
    }
}

Test(kvcheck_depth, truncated_and_garbage_bytes_refused)
{
    /* every proper prefix of a valid nested request is malformed: the outer length runs past
     * the end */
    size_t n;
    uint8_t *b = nested_txn(10, (const uint8_t *)"\x12\x05\x12\x03\x0a\x01k", 7, 3, &n);
    cr_assert_eq(cairn_kvcheck_txn_depth(b, n), 10);
    OK(cairn_kvcheck_request(CAIRN_REQ_TXN, b, n, 0, &msg));
    for (size_t cut = 1; cut < n; cut++) {
        cr_assert_eq(cairn_kvcheck_txn_depth(b, cut), CAIRN_EPROTO, "cut at %zu of %zu", cut, n);
        EXPECT(cairn_kvcheck_request(CAIRN_REQ_TXN, b, cut, 0, &msg), 3, NULL);
        cr_assert(strstr(msg, "malformed") != NULL, "%s", msg);
    }
    free(b);

    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        int want;
    } cases[] = {
        {"tag without its length", "\x12", 1, CAIRN_EPROTO},
        {"length past the end", "\x12\x05\x22", 3, CAIRN_EPROTO},
        {"length past the end of the enclosing op", "\x12\x02\x22\x05\x00\x00\x00\x00\x00", 9, CAIRN_EPROTO},
        {"start group", "\x0b", 1, CAIRN_EPROTO},
        {"end group", "\x0c", 1, CAIRN_EPROTO},
        {"wire type 6", "\x0e", 1, CAIRN_EPROTO},
        {"wire type 7 inside an op", "\x12\x01\x27", 3, CAIRN_EPROTO},
        {"field number 0", "\x02\x00", 2, CAIRN_EPROTO},
        {"unterminated varint", "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 11, CAIRN_EPROTO},
        {"varint cut by the end", "\x08\xff", 2, CAIRN_EPROTO},
        {"fixed64 cut", "\x09\x00\x00\x00", 4, CAIRN_EPROTO},
        {"fixed32 cut", "\x0d\x00\x00", 3, CAIRN_EPROTO},
        {"tag of 6 bytes", "\x92\x80\x80\x80\x80\x00\x00", 7, CAIRN_EPROTO},
        {"length of 6 bytes", "\x12\x80\x80\x80\x80\x80\x00", 7, CAIRN_EPROTO},
        {"field number past 2^29-1", "\x80\x80\x80\x80\x10\x00", 6, CAIRN_EPROTO},
        {"10-byte varint is fine", "\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 11, 0},
        {"fixed64, fixed32, unknown fields", "\x09\x01\x02\x03\x04\x05\x06\x07\x08\x0d\x01\x02\x03\x04\x3a\x01x", 17, 0},
        {"field 4 at the top is not a txn", "\x22\x02\x22\x00", 4, 0},
        {"wrong wire type on success", "\x10\x05", 2, 0},
        /* protobuf-c reads a padded tag as the field it encodes: so must the walk */
        {"padded tags still nest", "\x92\x80\x80\x80\x00\x06\xa2\x80\x80\x80\x00\x00", 12, 1},
        /* a txn that a later member of the RequestOp oneof replaces still counts: the walk
         * may measure deeper than what protobuf-c keeps, never shallower */
        {"replaced oneof member counts", "\x12\x06\x22\x02\x12\x00\x12\x00", 8, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = cairn_kvcheck_txn_depth((const uint8_t *)cases[i].bytes, cases[i].len);
        cr_assert_eq(got, cases[i].want, "%s: got %d", cases[i].what, got);
        /* where protobuf-c can tell, it agrees (it takes field numbers up to 2^32-1 as
         * unknown fields; protobuf allows 2^29-1, and so does the walk) */
        Etcdserverpb__TxnRequest *r =
            etcdserverpb__txn_request__unpack(NULL, cases[i].len, (const uint8_t *)cases[i].bytes);
        int big_field = strcmp(cases[i].what, "field number past 2^29-1") == 0;
        if (got == CAIRN_EPROTO && !big_field)
            cr_assert_null(r, "%s: protobuf-c accepts it", cases[i].what);
        if (r && !big_field)
            cr_assert_geq(got, depth_of(r), "%s", cases[i].what);
        if (r)
            etcdserverpb__txn_request__free_unpacked(r, NULL);
    }
    cr_assert_eq(cairn_kvcheck_txn_depth(NULL, 5), CAIRN_EINVAL);
}

/* The walk against protobuf-c on damaged requests: whatever protobuf-c unpacks, the walk
 * measured at least as deep (deeper only where protobuf-c dropped a txn that a later member
 * of the RequestOp oneof replaced); whatever the walk calls malformed, protobuf-c refuses. */
static uint32_t g_seed;

static uint32_t rnd(void)
{
    g_seed = g_seed * 1103515245u + 12345u;
    return (g_seed >> 16) & 0x7fff;
}

Test(kvcheck_depth, agrees_with_protobuf_c_on_damaged_bytes)
{
    g_seed = 12345;
    size_t n;
    uint8_t *base = nested_txn(12, (const uint8_t *)"\x0a\x03\x10\x01\x12\x12\x05\x12\x03\x0a\x01k", 12, 4, &n);
    uint8_t *b = malloc(n);
    int unpacked = 0, refused = 0, same = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(b, base, n);
        int edits = 1 + (int)(rnd() % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = rnd() % n;
            if (rnd() % 4)
                b[at] = (uint8_t)rnd();   /* a random byte */
            else
                b[at] ^= (uint8_t)(1u << (rnd() % 8));   /* a flipped bit */
        }
        size_t len = rnd() % 8 ? n : rnd() % n;
        int got = cairn_kvcheck_txn_depth(b, len);
        cr_assert(got >= 0 || got == CAIRN_EPROTO || got == CAIRN_ETOOBIG, "iteration %d: %d", iter, got);
        Etcdserverpb__TxnRequest *r = etcdserverpb__txn_request__unpack(NULL, len, b);
        if (r) {
            unpacked++;
            cr_assert_geq(got, depth_of(r), "iteration %d: walk %d, protobuf-c %d", iter, got, depth_of(r));
            same += got == depth_of(r);
            etcdserverpb__txn_request__free_unpacked(r, NULL);
        } else if (got == CAIRN_EPROTO)
            refused++;
    }
    cr_assert_gt(unpacked, 100);
    cr_assert_gt(same, unpacked * 9 / 10, "%d of %d", same, unpacked);
    cr_assert_gt(refused, 100);
    free(b);
    free(base);
}
