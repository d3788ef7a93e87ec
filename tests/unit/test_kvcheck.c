/* Unit tests for cairn_kvcheck: etcd's gateway checks. "(checked)" marks cases verified
 * against a running etcd 3.4.23. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_kvcheck.h"

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
