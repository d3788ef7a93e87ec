/* apply.c - etcd v3.4's KV semantics (applierV3backend, etcdserver/apply.go) on cairn_mvcc.
 *
 * Requests are unpacked into, and responses built in, the store's request arena, so a
 * request costs no malloc per key; only the packed response is malloc'd (the caller owns it).
 *
 * Internal convention: functions return 0 on success, 1 when they set a gRPC error in
 * x->err (the request fails, no data changed), or a negative CAIRN_E* on storage failure.
 *
 * Where a behaviour was checked against a running etcd 3.4.23 (through its JSON gateway),
 * the comment says "(checked)".
 */
#include "apply.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "kv.pb-c.h"
#include "rpc.pb-c.h"

typedef Etcdserverpb__RangeRequest RangeReq;
typedef Etcdserverpb__RangeResponse RangeResp;
typedef Etcdserverpb__PutRequest PutReq;
typedef Etcdserverpb__PutResponse PutResp;
typedef Etcdserverpb__DeleteRangeRequest DelReq;
typedef Etcdserverpb__DeleteRangeResponse DelResp;
typedef Etcdserverpb__TxnRequest TxnReq;
typedef Etcdserverpb__TxnResponse TxnResp;
typedef Etcdserverpb__RequestOp ReqOp;
typedef Etcdserverpb__ResponseOp RespOp;
typedef Etcdserverpb__Compare Cmp;
typedef Mvccpb__KeyValue KV;

typedef struct {
    cairn_mvcc_t *m;
    int view;
    cairn_arena_t *a;
    const cairn_hdr_ctx_t *hdr;
    cairn_apply_err_t *err;
    ProtobufCAllocator pa;
} actx_t;

static void *pb_alloc(void *data, size_t n) { return cairn_arena_alloc(data, n); }
static void pb_free(void *data, void *p)
{
    (void)data;
    (void)p;   /* the arena is freed as a whole */
}

static int grpc_err(actx_t *x, int code, const char *msg)
{
    x->err->grpc_code = code;
    snprintf(x->err->message, sizeof x->err->message, "%s", msg);
    return 1;
}

static int etcd_err(actx_t *x, cairn_etcd_err_t e) { return grpc_err(x, cairn_etcd_err_code(e), cairn_etcd_err_text(e)); }

/* CAIRN_ECOMPACTED / CAIRN_EFUTURE_REV are client errors; the rest is storage trouble. */
static int mvcc_err(actx_t *x, int rc)
{
    if (rc == CAIRN_ECOMPACTED)
        return etcd_err(x, CAIRN_ETCD_COMPACTED);
    if (rc == CAIRN_EFUTURE_REV)
        return etcd_err(x, CAIRN_ETCD_FUTURE_REV);
    return rc < 0 ? rc : CAIRN_EIO;
}

static void *aalloc(actx_t *x, size_t n)
{
    return cairn_arena_alloc(x->a, n);
}

static Etcdserverpb__ResponseHeader *mk_hdr(actx_t *x, int64_t rev)
{
    Etcdserverpb__ResponseHeader *h = aalloc(x, sizeof *h);
    if (!h)
        return NULL;
    etcdserverpb__response_header__init(h);
    if (x->hdr) {
        h->cluster_id = x->hdr->cluster_id;
        h->member_id = x->hdr->member_id;
        h->raft_term = x->hdr->raft_term;
    }
    h->revision = rev;
    return h;
}

static int64_t cur_rev(actx_t *x)
{
    return cairn_mvcc_view_revision(x->m, x->view);
}

/* etcd's mkGteRange: range_end "\0" means "every key >= key" (end non-NULL, length 0); no
 * range_end means the single key (end NULL). */
static void mk_range(const ProtobufCBinaryData *range_end, const void **end, size_t *end_len)
{
    static const uint8_t gte = 0;
    if (range_end->len == 0) {
        *end = NULL;
        *end_len = 0;
    } else if (range_end->len == 1 && range_end->data[0] == 0) {
        *end = &gte;
        *end_len = 0;
    } else {
        *end = range_end->data;
        *end_len = range_end->len;
    }
}

/* ---- collecting KeyValues into the arena ---------------------------------------------- */

typedef struct {
    actx_t *x;
    KV **kvs;
    size_t n, cap;
    int with_values;
} kvvec_t;

static KV *kv_copy(actx_t *x, const cairn_kv_t *kv, int with_value)
{
    size_t vlen = with_value ? kv->value_len : 0;
    KV *o = aalloc(x, sizeof *o + kv->key_len + vlen);
    if (!o)
        return NULL;
    mvccpb__key_value__init(o);
    uint8_t *p = (uint8_t *)(o + 1);
    if (kv->key_len)
        memcpy(p, kv->key, kv->key_len);
    o->key.data = p;
    o->key.len = kv->key_len;
    if (vlen) {
        memcpy(p + kv->key_len, kv->value, vlen);
        o->value.data = p + kv->key_len;
        o->value.len = vlen;
    }
    o->create_revision = kv->create_revision;
    o->mod_revision = kv->mod_revision;
    o->version = kv->version;
    o->lease = kv->lease;
    return o;
}

static int kvvec_add(void *arg, const cairn_kv_t *kv)
{
    kvvec_t *v = arg;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        KV **nk = aalloc(v->x, cap * sizeof *nk);
        if (!nk)
            return CAIRN_ENOMEM;
        if (v->n)
            memcpy(nk, v->kvs, v->n * sizeof *nk);
        v->kvs = nk;
        v->cap = cap;
    }
    KV *o = kv_copy(v->x, kv, v->with_values);
    if (!o)
        return CAIRN_ENOMEM;
    v->kvs[v->n++] = o;
    return 0;
}

static cairn_kv_t kv_view(const KV *o)
{
    cairn_kv_t kv = {.key = o->key.data, .key_len = o->key.len, .value = o->value.data,
                     .value_len = o->value.len, .create_revision = o->create_revision,
                     .mod_revision = o->mod_revision, .version = o->version, .lease = o->lease};
    return kv;
}

/* ---- Range ---------------------------------------------------------------------------- */

static int bcmp_bytes(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->data, b->data, n) : 0;
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

static int i64cmp(int64_t a, int64_t b) { return a < b ? -1 : a > b; }

static int cmp_target(int target, const KV *a, const KV *b)
{
    switch (target) {
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION: return i64cmp(a->version, b->version);
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE: return i64cmp(a->create_revision, b->create_revision);
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD: return i64cmp(a->mod_revision, b->mod_revision);
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE: return bcmp_bytes(&a->value, &b->value);
    default: return bcmp_bytes(&a->key, &b->key);
    }
}

/* Stable bottom-up merge sort: equal elements keep their key order, in both directions
 * (etcd's Go sort gives that for small results; for ties it promises nothing). */
static int sort_kvs(actx_t *x, KV **a, size_t n, int target, int desc)
{
    if (n < 2)
        return 0;
    KV **tmp = aalloc(x, n * sizeof *tmp);
    if (!tmp)
        return CAIRN_ENOMEM;
    KV **src = a, **dst = tmp;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int c = cmp_target(target, src[j], src[i]);
                if (desc ? c > 0 : c < 0)
                    dst[k++] = src[j++];
                else
                    dst[k++] = src[i++];
            }
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        KV **t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof *a);
    return 0;
}

/* Keeps the kvs for which drop() is false, in order. */
static void prune(kvvec_t *v, int (*drop)(const KV *, int64_t), int64_t bound)
{
    size_t k = 0;
    for (size_t i = 0; i < v->n; i++)
        if (!drop(v->kvs[i], bound))
            v->kvs[k++] = v->kvs[i];
    v->n = k;
}
static int drop_mod_gt(const KV *kv, int64_t b) { return kv->mod_revision > b; }
static int drop_mod_lt(const KV *kv, int64_t b) { return kv->mod_revision < b; }
static int drop_create_gt(const KV *kv, int64_t b) { return kv->create_revision > b; }
static int drop_create_lt(const KV *kv, int64_t b) { return kv->create_revision < b; }

/* etcd's applierV3backend.Range, step by step. */
static int do_range(actx_t *x, const RangeReq *r, RangeResp **out)
{
    int filtered = r->min_mod_revision != 0 || r->max_mod_revision != 0 || r->min_create_revision != 0 ||
                   r->max_create_revision != 0;
    int64_t limit = r->limit;
    if (r->sort_order != ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE || filtered)
        limit = 0;   /* fetch everything; sort, filter and truncate afterwards */
    if (limit > 0 && limit < INT64_MAX)
        limit++;     /* one more, to know whether there is "more" */
    /* Sort order NONE with a target other than KEY means ASCEND - applied AFTER fetching
     * limit+1 keys in key order, so such a limited range sorts only the first limit+1 keys
     * (checked: limit 2, target VERSION, order NONE). */
    int order = r->sort_order;
    if (r->sort_target != ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY &&
        order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE)
        order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    int sorting = order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND ||
                  order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;

    cairn_mvcc_range_t q = {.key = r->key.data, .key_len = r->key.len, .rev = r->revision, .limit = limit,
                            .count_only = r->count_only};
    mk_range(&r->range_end, &q.end, &q.end_len);
    /* keys_only drops values only after sorting, which may be by value. */
    kvvec_t v = {.x = x,
                 .with_values = !r->keys_only ||
                                (sorting && r->sort_target == ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE)};
    int64_t count = 0;
    int rc = cairn_mvcc_range(x->m, x->view, &q, kvvec_add, &v, &count);
    if (rc)
        return mvcc_err(x, rc);

    if (r->max_mod_revision != 0)
        prune(&v, drop_mod_gt, r->max_mod_revision);
    if (r->min_mod_revision != 0)
        prune(&v, drop_mod_lt, r->min_mod_revision);
    if (r->max_create_revision != 0)
        prune(&v, drop_create_gt, r->max_create_revision);
    if (r->min_create_revision != 0)
        prune(&v, drop_create_lt, r->min_create_revision);
    if (sorting &&
        !(r->sort_target == ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY &&
          order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND)) {   /* already in key order */
        rc = sort_kvs(x, v.kvs, v.n, r->sort_target,
                      order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND);
        if (rc)
            return rc;
    }

    RangeResp *resp = aalloc(x, sizeof *resp);
    if (!resp)
        return CAIRN_ENOMEM;
    etcdserverpb__range_response__init(resp);
    if (r->limit > 0 && v.n > (uint64_t)r->limit) {
        v.n = (size_t)r->limit;
        resp->more = 1;
    }
    if (r->keys_only)
        for (size_t i = 0; i < v.n; i++) {
            v.kvs[i]->value.data = NULL;
            v.kvs[i]->value.len = 0;
        }
    resp->header = mk_hdr(x, cur_rev(x));
    if (!resp->header)
        return CAIRN_ENOMEM;
    resp->count = count;   /* every key in the range: limit and filters don't change it */
    resp->n_kvs = v.n;
    resp->kvs = v.kvs;
    *out = resp;
    return 0;
}

/* ---- Put ------------------------------------------------------------------------------ */

static int lease_check(actx_t *x, int64_t lease)
{
    if (lease == 0)
        return 0;
    int rc = cairn_mvcc_lease_exists(x->m, CAIRN_MVCC_PENDING, lease);
    if (rc < 0)
        return rc;
    return rc ? 0 : etcd_err(x, CAIRN_ETCD_LEASE_NOT_FOUND);
}

/* standalone: a Put request of its own (its own write txn, and etcd checks the lease here;
 * inside a Txn the checks ran before any op). */
static int do_put(actx_t *x, const PutReq *p, int standalone, PutResp **out)
{
    int rc;
    if (standalone && (rc = lease_check(x, p->lease)) != 0)
        return rc;
    cairn_kv_t prev;
    void *owned = NULL;
    int found = cairn_mvcc_get(x->m, CAIRN_MVCC_PENDING, p->key.data, p->key.len, 0, &prev, &owned);
    if (found < 0)
        return mvcc_err(x, found);
    if ((p->ignore_value || p->ignore_lease) && !found) {
        /* ignore_{value,lease} need a previous value to keep */
        free(owned);
        return etcd_err(x, CAIRN_ETCD_KEY_NOT_FOUND);
    }
    const void *val = p->ignore_value ? prev.value : p->value.data;
    size_t vlen = p->ignore_value ? prev.value_len : p->value.len;
    int64_t lease = p->ignore_lease ? prev.lease : p->lease;

    PutResp *resp = aalloc(x, sizeof *resp);
    rc = resp ? 0 : CAIRN_ENOMEM;
    if (rc == 0) {
        etcdserverpb__put_response__init(resp);
        if (p->prev_kv && found && !(resp->prev_kv = kv_copy(x, &prev, 1)))
            rc = CAIRN_ENOMEM;
    }
    if (rc == 0 && standalone)
        rc = cairn_mvcc_txn_begin(x->m);
    if (rc == 0)
        rc = cairn_mvcc_put(x->m, p->key.data, p->key.len, val, vlen, lease, found ? &prev : NULL);
    int64_t rev = cur_rev(x);   /* the put's main revision */
    if (standalone)
        cairn_mvcc_txn_end(x->m);
    free(owned);
    if (rc)
        return rc;
    if (!(resp->header = mk_hdr(x, rev)))
        return CAIRN_ENOMEM;
    *out = resp;
    return 0;
}

/* ---- DeleteRange ---------------------------------------------------------------------- */

static int do_delete(actx_t *x, const DelReq *d, int standalone, DelResp **out)
{
    cairn_mvcc_range_t q = {.key = d->key.data, .key_len = d->key.len};
    mk_range(&d->range_end, &q.end, &q.end_len);
    /* Values are needed for prev_kvs, and for the event observer's prev_kv. */
    kvvec_t v = {.x = x, .with_values = d->prev_kv || cairn_mvcc_has_event_fn(x->m)};
    int rc = cairn_mvcc_range(x->m, CAIRN_MVCC_PENDING, &q, kvvec_add, &v, NULL);
    if (rc)
        return mvcc_err(x, rc);
    if (standalone && v.n > 0 && (rc = cairn_mvcc_txn_begin(x->m)) != 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < v.n; i++) {
        cairn_kv_t kv = kv_view(v.kvs[i]);
        rc = cairn_mvcc_delete(x->m, &kv);
    }
    /* etcd: the txn's next revision if it changed anything so far, else the current one. */
    int64_t rev = cur_rev(x);
    if (standalone && v.n > 0)
        cairn_mvcc_txn_end(x->m);
    if (rc)
        return rc;
    DelResp *resp = aalloc(x, sizeof *resp);
    if (!resp || !(resp->header = (etcdserverpb__delete_range_response__init(resp), mk_hdr(x, rev))))
        return CAIRN_ENOMEM;
    resp->deleted = (int64_t)v.n;
    if (d->prev_kv) {
        resp->n_prev_kvs = v.n;
        resp->prev_kvs = v.kvs;
    }
    *out = resp;
    return 0;
}

/* ---- Txn ------------------------------------------------------------------------------ */

/* compareKV in etcd: the compared value is taken from the target_union only when its case
 * matches the target (a mismatch compares against 0 / empty); unknown results are true. */
static int compare_kv(const Cmp *c, const cairn_kv_t *kv)
{
    int result = 0;
    switch (c->target) {
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE: {
        ProtobufCBinaryData want = {0, NULL};
        if (c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE)
            want = c->value;
        ProtobufCBinaryData have = {kv->value_len, (uint8_t *)kv->value};
        result = bcmp_bytes(&have, &want);
        break;
    }
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE:
        result = i64cmp(kv->create_revision,
                        c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION ? c->create_revision
                                                                                                   : 0);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD:
        result = i64cmp(kv->mod_revision,
                        c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION ? c->mod_revision : 0);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION:
        result = i64cmp(kv->version, c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION ? c->version : 0);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE:
        result = i64cmp(kv->lease, c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE ? c->lease : 0);
        break;
    default:
        break;
    }
    switch (c->result) {
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL: return result == 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL: return result != 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER: return result > 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS: return result < 0;
    default: return 1;
    }
}

typedef struct {
    const Cmp *c;
    int64_t seen;
} cmpscan_t;

static int cmp_each(void *arg, const cairn_kv_t *kv)
{
    cmpscan_t *s = arg;
    s->seen++;
    return compare_kv(s->c, kv) ? 0 : 2;   /* 2: stop, a key failed */
}

/* etcd's applyCompare: 1 true, 0 false, <0 storage error. Missing key(s): a zero KeyValue,
 * except that a VALUE compare is then always false. */
static int apply_compare(actx_t *x, const Cmp *c)
{
    cmpscan_t s = {.c = c};
    cairn_mvcc_range_t q = {.key = c->key.data, .key_len = c->key.len};
    mk_range(&c->range_end, &q.end, &q.end_len);
    int rc = cairn_mvcc_range(x->m, CAIRN_MVCC_PENDING, &q, cmp_each, &s, NULL);
    if (rc == 2)
        return 0;
    if (rc)
        return rc < 0 ? rc : CAIRN_EIO;
    if (s.seen == 0) {
        if (c->target == ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE)
            return 0;
        cairn_kv_t zero = {0};
        return compare_kv(c, &zero);
    }
    return 1;
}

/* The branch taken by a txn and by every nested txn on that branch, in pre-order (etcd's
 * compareToPath). All compares, nested ones too, see the state before the txn's first op. */
typedef struct {
    uint8_t *v;
    size_t n, cap;
} path_t;

static int compare_path(actx_t *x, const TxnReq *t, path_t *path)
{
    int ok = 1;
    for (size_t i = 0; i < t->n_compare && ok; i++) {
        ok = apply_compare(x, t->compare[i]);
        if (ok < 0)
            return ok;
    }
    if (path->n == path->cap) {
        size_t cap = path->cap ? path->cap * 2 : 8;
        uint8_t *nv = aalloc(x, cap);
        if (!nv)
            return CAIRN_ENOMEM;
        if (path->n)
            memcpy(nv, path->v, path->n);
        path->v = nv;
        path->cap = cap;
    }
    path->v[path->n++] = (uint8_t)ok;
    size_t nops = ok ? t->n_success : t->n_failure;
    ReqOp **ops = ok ? t->success : t->failure;
    for (size_t i = 0; i < nops; i++) {
        if (ops[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN && ops[i]->request_txn) {
            int rc = compare_path(x, ops[i]->request_txn, path);
            if (rc)
                return rc;
        }
    }
    return 0;
}

enum { CHECK_PUT, CHECK_RANGE };

/* etcd's checkRequests with checkRequestPut / checkRequestRange, on the pre-txn state. */
static int check_reqs(actx_t *x, const TxnReq *t, const path_t *path, size_t *pos, int which)
{
    int ok = path->v[(*pos)++];
    size_t nops = ok ? t->n_success : t->n_failure;
    ReqOp **ops = ok ? t->success : t->failure;
    for (size_t i = 0; i < nops; i++) {
        const ReqOp *op = ops[i];
        int rc = 0;
        if (op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN && op->request_txn) {
            rc = check_reqs(x, op->request_txn, path, pos, which);
        } else if (which == CHECK_PUT && op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT &&
                   op->request_put) {
            const PutReq *p = op->request_put;
            if (p->ignore_value || p->ignore_lease) {
                cairn_kv_t kv;
                void *owned = NULL;
                rc = cairn_mvcc_get(x->m, CAIRN_MVCC_PENDING, p->key.data, p->key.len, 0, &kv, &owned);
                free(owned);
                if (rc < 0)
                    return mvcc_err(x, rc);
                rc = rc ? 0 : etcd_err(x, CAIRN_ETCD_KEY_NOT_FOUND);
            }
            if (rc == 0)
                rc = lease_check(x, p->lease);
        } else if (which == CHECK_RANGE && op->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE &&
                   op->request_range) {
            int64_t rev = op->request_range->revision;
            /* Note: against the compact revision as is (-1 before any compaction), so a
             * negative revision in a txn is ErrCompacted, as in etcd; outside a txn it means
             * "current". */
            if (rev == 0)
                rc = 0;
            else if (rev > cur_rev(x))
                rc = etcd_err(x, CAIRN_ETCD_FUTURE_REV);
            else if (rev < cairn_mvcc_view_compact_revision(x->m, x->view))
                rc = etcd_err(x, CAIRN_ETCD_COMPACTED);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int apply_txn(actx_t *x, const TxnReq *t, const path_t *path, size_t *pos, TxnResp **out)
{
    int ok = path->v[(*pos)++];
    size_t nops = ok ? t->n_success : t->n_failure;
    ReqOp **ops = ok ? t->success : t->failure;
    TxnResp *resp = aalloc(x, sizeof *resp);
    RespOp **ros = aalloc(x, (nops ? nops : 1) * sizeof *ros);
    if (!resp || !ros)
        return CAIRN_ENOMEM;
    etcdserverpb__txn_response__init(resp);
    resp->succeeded = ok;
    resp->n_responses = nops;
    resp->responses = ros;
    for (size_t i = 0; i < nops; i++) {
        const ReqOp *op = ops[i];
        RespOp *ro = aalloc(x, sizeof *ro);
        if (!ro)
            return CAIRN_ENOMEM;
        etcdserverpb__response_op__init(ro);
        ros[i] = ro;
        int rc = 0;
        switch (op->request_case) {
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
            if (op->request_range) {
                ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
                rc = do_range(x, op->request_range, &ro->response_range);
            }
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
            if (op->request_put) {
                ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
                rc = do_put(x, op->request_put, 0, &ro->response_put);
            }
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
            if (op->request_delete_range) {
                ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
                rc = do_delete(x, op->request_delete_range, 0, &ro->response_delete_range);
            }
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
            if (op->request_txn) {
                ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
                rc = apply_txn(x, op->request_txn, path, pos, &ro->response_txn);
            }
            break;
        default:
            break;   /* an empty op gets an empty response (the gateway rejects those anyway) */
        }
        /* etcd fills in only the outermost header (its gRPC layer does that); the applier's
         * responses inside a txn carry their revision alone (checked against 3.4.23) */
        if (rc == 0) {
            Etcdserverpb__ResponseHeader *h = ro->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE
                                                  ? (ro->response_range ? ro->response_range->header : NULL)
                                              : ro->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT
                                                  ? (ro->response_put ? ro->response_put->header : NULL)
                                              : ro->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE
                                                  ? (ro->response_delete_range ? ro->response_delete_range->header : NULL)
                                              : ro->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN
                                                  ? (ro->response_txn ? ro->response_txn->header : NULL)
                                                  : NULL;
            if (h)
                h->cluster_id = h->member_id = h->raft_term = 0;
            /* a nested txn's header is there but empty in etcd (the applier never sets it) */
            if (h && ro->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN)
                h->revision = 0;
        }
        if (rc > 0) {
            /* The checks before the first op make this impossible (etcd panics here); some
             * ops may have written already, so the batch cannot be trusted. */
            cairn_error("txn op failed after its checks passed", "msg=\"%s\"", x->err->message);
            return CAIRN_ESTATE;
        }
        if (rc)
            return rc;
    }
    /* A header for every TxnResponse, as etcd has (clients dereference it): the outermost one
     * is completed by the caller, a nested one is emptied by its parent's loop above. */
    if (!(resp->header = mk_hdr(x, cur_rev(x))))
        return CAIRN_ENOMEM;
    *out = resp;
    return 0;
}

static int do_txn(actx_t *x, const TxnReq *t, TxnResp **out)
{
    path_t path = {0};
    int rc = compare_path(x, t, &path);
    size_t pos = 0;
    if (rc == 0)
        rc = check_reqs(x, t, &path, &pos, CHECK_PUT);
    pos = 0;
    if (rc == 0)
        rc = check_reqs(x, t, &path, &pos, CHECK_RANGE);
    if (rc)
        return rc;
    if ((rc = cairn_mvcc_txn_begin(x->m)) != 0)
        return rc;
    pos = 0;
    rc = apply_txn(x, t, &path, &pos, out);
    /* All writes of the txn share one main revision; the header has the revision after it
     * (unchanged for a read-only txn). */
    int64_t rev = cairn_mvcc_txn_end(x->m);
    if (rc == 0)
        (*out)->header->revision = rev;
    return rc;
}

/* ---- Compact -------------------------------------------------------------------------- */

static int do_compact(actx_t *x, const Etcdserverpb__CompactionRequest *c,
                      Etcdserverpb__CompactionResponse **out)
{
    /* etcd: rev <= compacted -> ErrCompacted (also for a repeated "compact 0" on a fresh
     * store, which succeeds the first time: compact revision starts at -1), then rev >
     * current -> ErrFutureRev (checked). physical or not, we answer after the removal:
     * batch_commit does it before the response goes out. */
    int rc = cairn_mvcc_compact(x->m, c->revision);
    if (rc)
        return mvcc_err(x, rc);
    Etcdserverpb__CompactionResponse *resp = aalloc(x, sizeof *resp);
    if (!resp)
        return CAIRN_ENOMEM;
    etcdserverpb__compaction_response__init(resp);
    if (!(resp->header = mk_hdr(x, cur_rev(x))))
        return CAIRN_ENOMEM;
    *out = resp;
    return 0;
}

/* ---- leases ---------------------------------------------------------------------------- */

/* The gateway chose the ID (ID 0 becomes a random one) and raised the TTL to the minimum
 * before proposing, so every member applies the same grant. */
static int do_lease_grant(actx_t *x, const Etcdserverpb__LeaseGrantRequest *r,
                          Etcdserverpb__LeaseGrantResponse **out)
{
    if (r->id == 0)
        return etcd_err(x, CAIRN_ETCD_LEASE_NOT_FOUND);
    if (r->ttl > CAIRN_LEASE_MAX_TTL)
        return etcd_err(x, CAIRN_ETCD_LEASE_TTL_TOO_LARGE);
    int rc = cairn_mvcc_lease_grant(x->m, r->id, r->ttl);
    if (rc == CAIRN_EEXISTS)
        return etcd_err(x, CAIRN_ETCD_LEASE_EXISTS);
    if (rc)
        return mvcc_err(x, rc);
    Etcdserverpb__LeaseGrantResponse *resp = aalloc(x, sizeof *resp);
    if (!resp)
        return CAIRN_ENOMEM;
    etcdserverpb__lease_grant_response__init(resp);
    if (!(resp->header = mk_hdr(x, cur_rev(x))))
        return CAIRN_ENOMEM;
    resp->id = r->id;
    resp->ttl = r->ttl;
    *out = resp;
    return 0;
}

/* Deletes the lease's keys in one revision (DELETE events) and the lease. */
static int do_lease_revoke(actx_t *x, const Etcdserverpb__LeaseRevokeRequest *r,
                           Etcdserverpb__LeaseRevokeResponse **out)
{
    int rc = cairn_mvcc_lease_revoke(x->m, r->id, NULL);
    if (rc == CAIRN_ENOTFOUND)
        return etcd_err(x, CAIRN_ETCD_LEASE_NOT_FOUND);
    if (rc)
        return mvcc_err(x, rc);
    Etcdserverpb__LeaseRevokeResponse *resp = aalloc(x, sizeof *resp);
    if (!resp)
        return CAIRN_ENOMEM;
    etcdserverpb__lease_revoke_response__init(resp);
    if (!(resp->header = mk_hdr(x, cur_rev(x))))
        return CAIRN_ENOMEM;
    *out = resp;
    return 0;
}

typedef struct {
    actx_t *x;
    ProtobufCBinaryData *keys;
    size_t n, cap;
    int oom;
} lkeys_t;

static int lease_key_fn(void *arg, const uint8_t *key, size_t key_len)
{
    lkeys_t *k = arg;
    if (k->n == k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 16;
        ProtobufCBinaryData *nk = aalloc(k->x, nc * sizeof *nk);
        if (!nk) {
            k->oom = 1;
            return 1;
        }
        if (k->n)
            memcpy(nk, k->keys, k->n * sizeof *nk);
        k->keys = nk;
        k->cap = nc;
    }
    uint8_t *d = key_len ? cairn_arena_dup(k->x->a, key, key_len) : NULL;
    if (key_len && !d) {
        k->oom = 1;
        return 1;
    }
    k->keys[k->n].data = d;
    k->keys[k->n].len = key_len;
    k->n++;
    return 0;
}

/* The durable half of TimeToLive: the granted TTL and the keys (the time left is the
 * leader raftd's; the gateway fills TTL). An unknown lease answers TTL -1, no error (etcd). */
static int do_lease_ttl(actx_t *x, const Etcdserverpb__LeaseTimeToLiveRequest *r,
                        Etcdserverpb__LeaseTimeToLiveResponse **out)
{
    Etcdserverpb__LeaseTimeToLiveResponse *resp = aalloc(x, sizeof *resp);
    if (!resp)
        return CAIRN_ENOMEM;
    etcdserverpb__lease_time_to_live_response__init(resp);
    if (!(resp->header = mk_hdr(x, cur_rev(x))))
        return CAIRN_ENOMEM;
    resp->id = r->id;
    int64_t granted = 0;
    int rc = cairn_mvcc_lease_get(x->m, x->view, r->id, &granted);
    if (rc < 0)
        return mvcc_err(x, rc);
    if (rc == 0) {
        resp->ttl = -1;
        *out = resp;
        return 0;
    }
    resp->grantedttl = granted;
    resp->ttl = granted;
    if (r->keys) {
        lkeys_t k = {.x = x};
        rc = cairn_mvcc_lease_keys(x->m, x->view, r->id, lease_key_fn, &k);
        if (k.oom)
            return CAIRN_ENOMEM;
        if (rc < 0)
            return mvcc_err(x, rc);
        resp->keys = k.keys;
        resp->n_keys = k.n;
    }
    *out = resp;
    return 0;
}

/* ---- alarms (etcd 3.4's applierV3backend.Alarm and its AlarmStore) ------------------- */

typedef struct {
    actx_t *x;
    uint64_t type; /* 0 (NONE): every type */
    Etcdserverpb__AlarmMember **v;
    size_t n, cap;
} alist_t;

static int alist_push(alist_t *l, uint64_t member, uint64_t type)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        Etcdserverpb__AlarmMember **nv = aalloc(l->x, cap * sizeof *nv);
        if (!nv)
            return CAIRN_ENOMEM;
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    Etcdserverpb__AlarmMember *am = aalloc(l->x, sizeof *am);
    if (!am)
        return CAIRN_ENOMEM;
    etcdserverpb__alarm_member__init(am);
    am->memberid = member;
    am->alarm = (Etcdserverpb__AlarmType)type;
    l->v[l->n++] = am;
    return 0;
}

static int alist_add(void *arg, uint64_t member, uint64_t type)
{
    alist_t *l = arg;
    if (l->type != ETCDSERVERPB__ALARM_TYPE__NONE && type != l->type)
        return 0;
    return alist_push(l, member, type);
}

/* etcd logs an alarm by its AlarmType name (alarm=CORRUPT from=<member>) */
static const char *alarm_name(Etcdserverpb__AlarmType a)
{
    switch (a) {
    case ETCDSERVERPB__ALARM_TYPE__NONE: return "NONE";
    case ETCDSERVERPB__ALARM_TYPE__NOSPACE: return "NOSPACE";
    case ETCDSERVERPB__ALARM_TYPE__CORRUPT: return "CORRUPT";
    default: return "UNKNOWN";
    }
}

/* GET lists the alarms of a type (NONE: all); ACTIVATE answers the alarm (also when it was
 * active already); DEACTIVATE answers it only if it was active. No revision is consumed. */
static int do_alarm(actx_t *x, const Etcdserverpb__AlarmRequest *r, Etcdserverpb__AlarmResponse **out)
{
    alist_t l = {.x = x, .type = (uint64_t)r->alarm};
    int rc = 0;
    switch (r->action) {
    case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET:
        rc = cairn_mvcc_alarm_foreach(x->m, x->view, alist_add, &l);
        break;
    case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE:
        rc = cairn_mvcc_alarm_set(x->m, r->memberid, (uint64_t)r->alarm, 1);
        if (rc >= 0) {
            if (rc == 1)
                cairn_warn("alarm raised", "alarm=%s from=%016llx", alarm_name(r->alarm), (unsigned long long)r->memberid);
            rc = alist_push(&l, r->memberid, (uint64_t)r->alarm);
        }
        break;
    case ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE:
        rc = cairn_mvcc_alarm_set(x->m, r->memberid, (uint64_t)r->alarm, 0);
        if (rc == 1) {
            cairn_info("alarm disarmed", "alarm=%s from=%016llx", alarm_name(r->alarm), (unsigned long long)r->memberid);
            rc = alist_push(&l, r->memberid, (uint64_t)r->alarm);
        }
        break;
    default:
        break; /* etcd answers an unknown action with no alarms */
    }
    if (rc < 0)
        return rc;
    Etcdserverpb__AlarmResponse *o = aalloc(x, sizeof *o);
    if (!o)
        return CAIRN_ENOMEM;
    etcdserverpb__alarm_response__init(o);
    if (!(o->header = mk_hdr(x, cur_rev(x))))
        return CAIRN_ENOMEM;
    o->alarms = l.v;
    o->n_alarms = l.n;
    *out = o;
    return 0;
}

/* etcd 3.4's applierV3Capped (NOSPACE active) and applierV3Corrupt (CORRUPT active): which
 * applied requests they refuse before running them. A Txn is refused under NOSPACE when a
 * put is among the ops of its success or failure branch (etcd's costTxn counts these, not
 * those of nested txns); that check is in the TXN case of run(), on the unpacked request. */
static int alarm_refuses(actx_t *x, int kind, int *nospace)
{
    *nospace = 0;
    if (x->view != CAIRN_MVCC_PENDING)
        return 0; /* reads outside the log (serializable and read-index Ranges) are not applied */
    unsigned a = cairn_mvcc_alarms(x->m, CAIRN_MVCC_PENDING);
    if (a & (1u << ETCDSERVERPB__ALARM_TYPE__CORRUPT)) {
        if (kind != CAIRN_REQ_ALARM && kind != CAIRN_REQ_LEASE_TTL)
            return etcd_err(x, CAIRN_ETCD_CORRUPT);
    }
    if (a & (1u << ETCDSERVERPB__ALARM_TYPE__NOSPACE)) {
        *nospace = 1;
        if (kind == CAIRN_REQ_PUT || kind == CAIRN_REQ_LEASE_GRANT)
            return etcd_err(x, CAIRN_ETCD_NO_SPACE);
    }
    return 0;
}

static int txn_has_put(const TxnReq *t)
{
    for (size_t i = 0; i < t->n_success; i++)
        if (t->success[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            return 1;
    for (size_t i = 0; i < t->n_failure; i++)
        if (t->failure[i]->request_case == ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            return 1;
    return 0;
}

/* ---- entry points --------------------------------------------------------------------- */

static int pack(const ProtobufCMessage *msg, uint8_t **resp, size_t *resp_len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return CAIRN_ENOMEM;
    *resp_len = protobuf_c_message_pack(msg, buf);
    *resp = buf;
    return 0;
}

static int malformed(actx_t *x, const char *type)
{
    char msg[128];
    snprintf(msg, sizeof msg, "cairn: malformed %s in request (protobuf does not parse)", type);
    return grpc_err(x, CAIRN_GRPC_INVALID_ARGUMENT, msg);
}

/* Unpacks and runs one request; on success packs the response. */
static int run(actx_t *x, int kind, const uint8_t *body, size_t len, uint8_t **resp, size_t *resp_len)
{
    ProtobufCMessage *out = NULL;
    int nospace = 0;
    int rc = alarm_refuses(x, kind, &nospace);
    if (rc)
        return rc;
    switch (kind) {
    case CAIRN_REQ_RANGE: {
        RangeReq *r = etcdserverpb__range_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "RangeRequest");
        RangeResp *o = NULL;
        rc = do_range(x, r, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    case CAIRN_REQ_PUT: {
        PutReq *r = etcdserverpb__put_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "PutRequest");
        PutResp *o = NULL;
        rc = do_put(x, r, 1, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    case CAIRN_REQ_DELETE_RANGE: {
        DelReq *r = etcdserverpb__delete_range_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "DeleteRangeRequest");
        DelResp *o = NULL;
        rc = do_delete(x, r, 1, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    case CAIRN_REQ_TXN: {
        /* The gateway refuses a too-deep txn, but an entry may come from elsewhere (an older
         * gateway, a hand-made proposal): measured on the bytes before protobuf-c's recursive
         * unpack sees them, or one entry would crash stored on every replay of the log. The
         * answer depends on the bytes alone, so every member fails it the same way. */
        int depth = cairn_kvcheck_txn_depth(body, len);
        if (depth == CAIRN_ETOOBIG)
            return etcd_err(x, CAIRN_ETCD_TXN_TOO_DEEP);
        if (depth < 0)
            return malformed(x, "TxnRequest");
        TxnReq *r = etcdserverpb__txn_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "TxnRequest");
        if (nospace && txn_has_put(r))
            return etcd_err(x, CAIRN_ETCD_NO_SPACE);
        TxnResp *o = NULL;
        rc = do_txn(x, r, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    case CAIRN_REQ_COMPACT: {
        Etcdserverpb__CompactionRequest *r = etcdserverpb__compaction_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "CompactionRequest");
        Etcdserverpb__CompactionResponse *o = NULL;
        rc = do_compact(x, r, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    case CAIRN_REQ_LEASE_GRANT: {
        Etcdserverpb__LeaseGrantRequest *r = etcdserverpb__lease_grant_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "LeaseGrantRequest");
        Etcdserverpb__LeaseGrantResponse *o = NULL;
        rc = do_lease_grant(x, r, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    case CAIRN_REQ_LEASE_REVOKE: {
        Etcdserverpb__LeaseRevokeRequest *r = etcdserverpb__lease_revoke_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "LeaseRevokeRequest");
        Etcdserverpb__LeaseRevokeResponse *o = NULL;
        rc = do_lease_revoke(x, r, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    case CAIRN_REQ_LEASE_TTL: {
        Etcdserverpb__LeaseTimeToLiveRequest *r = etcdserverpb__lease_time_to_live_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "LeaseTimeToLiveRequest");
        Etcdserverpb__LeaseTimeToLiveResponse *o = NULL;
        rc = do_lease_ttl(x, r, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    case CAIRN_REQ_ALARM: {
        Etcdserverpb__AlarmRequest *r = etcdserverpb__alarm_request__unpack(&x->pa, len, body);
        if (!r)
            return malformed(x, "AlarmRequest");
        Etcdserverpb__AlarmResponse *o = NULL;
        rc = do_alarm(x, r, &o);
        out = (ProtobufCMessage *)o;
        break;
    }
    default: {
        char msg[64];
        snprintf(msg, sizeof msg, "cairn: unknown request kind %d", kind);
        return grpc_err(x, CAIRN_GRPC_INVALID_ARGUMENT, msg);
    }
    }
    if (rc)
        return rc;
    return pack(out, resp, resp_len);
}

static void actx_init(actx_t *x, cairn_mvcc_t *m, int view, const cairn_hdr_ctx_t *hdr, cairn_apply_err_t *err)
{
    x->m = m;
    x->view = view;
    x->a = cairn_mvcc_arena(m);
    x->hdr = hdr;
    x->err = err;
    x->pa.alloc = pb_alloc;
    x->pa.free = pb_free;
    x->pa.allocator_data = x->a;
    err->grpc_code = 0;
    err->message[0] = 0;
}

int cairn_apply_request(cairn_mvcc_t *m, uint64_t index, uint64_t term, int kind, const uint8_t *body, size_t len,
                        const cairn_hdr_ctx_t *hdr, uint8_t **resp, size_t *resp_len, cairn_apply_err_t *err)
{
    *resp = NULL;
    *resp_len = 0;
    actx_t x;
    actx_init(&x, m, CAIRN_MVCC_PENDING, hdr, err);
    if (index <= cairn_mvcc_pending_applied_index(m))
        return 0;   /* applied already: a WAL replay that overlaps the store */
    int own = !cairn_mvcc_in_batch(m);
    int rc = own ? cairn_mvcc_batch_begin(m) : 0;
    if (rc)
        return rc;
    rc = run(&x, kind, body ? body : (const uint8_t *)"", len, resp, resp_len);
    cairn_arena_reset(x.a);
    if (rc < 0) {
        free(*resp);
        *resp = NULL;
        *resp_len = 0;
        if (own)
            cairn_mvcc_batch_abort(m);
        return rc;
    }
    /* A failed request consumes its index too: every member fails it the same way. */
    rc = cairn_mvcc_set_applied(m, index, term);
    if (rc == 0 && own)
        rc = cairn_mvcc_batch_commit(m);
    if (rc && own && cairn_mvcc_in_batch(m))
        cairn_mvcc_batch_abort(m);
    return rc;
}

int cairn_apply_noop(cairn_mvcc_t *m, uint64_t index, uint64_t term)
{
    if (index <= cairn_mvcc_pending_applied_index(m))
        return 0;
    if (cairn_mvcc_in_batch(m))
        return cairn_mvcc_set_applied(m, index, term);
    int rc = cairn_mvcc_batch_begin(m);
    if (rc == 0)
        rc = cairn_mvcc_set_applied(m, index, term);
    if (rc == 0)
        rc = cairn_mvcc_batch_commit(m);
    else
        cairn_mvcc_batch_abort(m);
    return rc;
}

int cairn_apply_read(cairn_mvcc_t *m, int kind, const uint8_t *body, size_t len, const cairn_hdr_ctx_t *hdr,
                     uint8_t **resp, size_t *resp_len, cairn_apply_err_t *err)
{
    *resp = NULL;
    *resp_len = 0;
    actx_t x;
    actx_init(&x, m, CAIRN_MVCC_COMMITTED, hdr, err);
    if (kind == CAIRN_REQ_ALARM) { /* only GET: the committed table */
        Etcdserverpb__AlarmRequest *r = etcdserverpb__alarm_request__unpack(&x.pa, len, body ? body : (const uint8_t *)"");
        if (!r || r->action != ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET) {
            cairn_arena_reset(x.a);
            return grpc_err(&x, CAIRN_GRPC_INVALID_ARGUMENT, "cairn: not a read") > 0 ? 0 : 0;
        }
        cairn_arena_reset(x.a);
    }
    if (kind != CAIRN_REQ_RANGE && kind != CAIRN_REQ_LEASE_TTL && kind != CAIRN_REQ_ALARM)
        return grpc_err(&x, CAIRN_GRPC_INVALID_ARGUMENT, "cairn: not a read") > 0 ? 0 : 0;
    int rc = run(&x, kind, body ? body : (const uint8_t *)"", len, resp, resp_len);
    cairn_arena_reset(x.a);
    return rc < 0 ? rc : 0;
}

int cairn_apply_range(cairn_mvcc_t *m, const uint8_t *body, size_t len, const cairn_hdr_ctx_t *hdr,
                      uint8_t **resp, size_t *resp_len, cairn_apply_err_t *err)
{
    *resp = NULL;
    *resp_len = 0;
    actx_t x;
    actx_init(&x, m, CAIRN_MVCC_COMMITTED, hdr, err);
    int rc = run(&x, CAIRN_REQ_RANGE, body ? body : (const uint8_t *)"", len, resp, resp_len);
    cairn_arena_reset(x.a);
    return rc < 0 ? rc : 0;
}
