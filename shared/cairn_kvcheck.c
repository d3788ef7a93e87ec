/* cairn_kvcheck.c - etcd v3.4's gateway-side KV request checks (v3rpc/key.go).
 *
 * Behaviours verified against a running etcd 3.4.23 (JSON gateway, /v3/kv/txn):
 *  - an empty RequestOp in a txn is "etcdserver: key not found" (InvalidArgument);
 *  - put c + delete [a, d) in one txn: duplicate key; put b + delete [a, "\0") ("from key"):
 *    accepted, because etcd's interval check compares range_end "\0" as a plain string
 *    (it is not "infinity" there), so [a, "\0") covers nothing;
 *  - a key put in both branches of one nested txn: accepted;
 *  - nested txn 1 deletes x, nested txn 2 puts x: duplicate; nested txn 1 puts x, nested
 *    txn 2 deletes x: accepted (etcd checks each child's puts against the deletes seen so
 *    far, and this order matters);
 *  - an outer put and a nested delete of the same key, or delete then put at one level:
 *    duplicate; two overlapping deletes: accepted.
 */
#include "cairn_kvcheck.h"

#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"

/* Refuses with etcd error e: its text in *msg, its code returned. */
static int fail(const char **msg, cairn_etcd_err_t e)
{
    int code;
    const char *m = cairn_etcd_err(e, &code);
    if (msg)
        *msg = m;
    return code;
}

int cairn_kvcheck_range(const Etcdserverpb__RangeRequest *r, const char **msg)
{
    if (!r || r->key.len == 0)
        return fail(msg, CAIRN_ETCD_EMPTY_KEY);
    return 0;
}

int cairn_kvcheck_put(const Etcdserverpb__PutRequest *r, const char **msg)
{
    if (!r || r->key.len == 0)
        return fail(msg, CAIRN_ETCD_EMPTY_KEY);
    if (r->ignore_value && r->value.len != 0)
        return fail(msg, CAIRN_ETCD_VALUE_PROVIDED);
    if (r->ignore_lease && r->lease != 0)
        return fail(msg, CAIRN_ETCD_LEASE_PROVIDED);
    return 0;
}

int cairn_kvcheck_delete_range(const Etcdserverpb__DeleteRangeRequest *r, const char **msg)
{
    if (!r || r->key.len == 0)
        return fail(msg, CAIRN_ETCD_EMPTY_KEY);
    return 0;
}

static int check_txn_ops(const Etcdserverpb__TxnRequest *r, int max_ops, int depth, const char **msg);

/* etcd's checkRequestOp: an op with nothing set is "key not found" (checked). depth: how
 * deep the txn holding u is nested (0: the outermost). */
static int check_op(const Etcdserverpb__RequestOp *u, int max_ops, int depth, const char **msg)
{
    switch (u ? u->request_case : ETCDSERVERPB__REQUEST_OP__REQUEST__NOT_SET) {
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE: return cairn_kvcheck_range(u->request_range, msg);
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT: return cairn_kvcheck_put(u->request_put, msg);
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
        return cairn_kvcheck_delete_range(u->request_delete_range, msg);
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
        if (!u->request_txn)
            return fail(msg, CAIRN_ETCD_KEY_NOT_FOUND);
        /* bytes from outside were measured before unpacking (cairn_kvcheck_txn_depth); this
         * holds the same line for a request built in memory, and bounds our recursion */
        if (depth >= CAIRN_KVCHECK_MAX_TXN_DEPTH)
            return fail(msg, CAIRN_ETCD_TXN_TOO_DEEP);
        return check_txn_ops(u->request_txn, max_ops, depth + 1, msg);
    default: return fail(msg, CAIRN_ETCD_KEY_NOT_FOUND);
    }
}

/* etcd's checkTxnRequest: the op count is the largest of compares / success / failure; a
 * nested txn may use what its parent left (max_ops - the parent's count). */
static int check_txn_ops(const Etcdserverpb__TxnRequest *r, int max_ops, int depth, const char **msg)
{
    size_t opc = r->n_compare;
    if (opc < r->n_success)
        opc = r->n_success;
    if (opc < r->n_failure)
        opc = r->n_failure;
    if (max_ops < 0 || opc > (size_t)max_ops)
        return fail(msg, CAIRN_ETCD_TOO_MANY_OPS);
    for (size_t i = 0; i < r->n_compare; i++)
        if (!r->compare[i] || r->compare[i]->key.len == 0)
            return fail(msg, CAIRN_ETCD_EMPTY_KEY);
    int rest = max_ops - (int)opc;
    for (size_t i = 0; i < r->n_success; i++) {
        int rc = check_op(r->success[i], rest, depth, msg);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < r->n_failure; i++) {
        int rc = check_op(r->failure[i], rest, depth, msg);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- duplicate keys: etcd's checkIntervals --------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n;
} bstr_t;

/* Bytewise comparison of two strings, each optionally followed by one extra 0x00 byte (a
 * point interval [k, k"\0") ends at k"\0"). */
static int vcmp(const uint8_t *a, size_t an, int az, const uint8_t *b, size_t bn, int bz)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    if (c)
        return c;
    size_t la = an + (size_t)az, lb = bn + (size_t)bz;
    for (size_t i = m; i < la && i < lb; i++) {
        int ca = i < an ? a[i] : 0, cb = i < bn ? b[i] : 0;
        if (ca != cb)
            return ca - cb;
    }
    return la < lb ? -1 : la > lb ? 1 : 0;
}

/* A set of put keys (open addressing). */
typedef struct {
    bstr_t *slot;
    size_t n, cap;
    int oom;
} kset_t;

static uint64_t hash_key(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int kset_has(const kset_t *s, const uint8_t *p, size_t n)
{
    if (!s->cap)
        return 0;
    for (size_t i = hash_key(p, n) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->slot[i].p)
            return 0;
        if (s->slot[i].n == n && (n == 0 || memcmp(s->slot[i].p, p, n) == 0))
            return 1;
    }
}

static void kset_add(kset_t *s, const uint8_t *p, size_t n)
{
    if (s->oom || kset_has(s, p, n))
        return;
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        bstr_t *ns = calloc(cap, sizeof *ns);
        if (!ns) {
            s->oom = 1;
            return;
        }
        for (size_t j = 0; j < s->cap; j++) {
            if (!s->slot[j].p)
                continue;
            size_t i = hash_key(s->slot[j].p, s->slot[j].n) & (cap - 1);
            while (ns[i].p)
                i = (i + 1) & (cap - 1);
            ns[i] = s->slot[j];
        }
        free(s->slot);
        s->slot = ns;
        s->cap = cap;
    }
    size_t i = hash_key(p, n) & (s->cap - 1);
    while (s->slot[i].p)
        i = (i + 1) & (s->cap - 1);
    /* An empty key never gets here (checked before), but keep p non-NULL as the marker. */
    s->slot[i].p = p ? p : (const uint8_t *)"";
    s->slot[i].n = n;
    s->n++;
}

/* Deleted intervals [b, e). point: a single-key delete, e = b"\0". A non-point interval with
 * an empty end would be unbounded (etcd's affine "infinity"); range_end "\0" is NOT that:
 * it is the string "\0", so [k, "\0") covers no key. */
typedef struct {
    const uint8_t *b, *e;
    size_t bn, en;
    int point;
} ivl_t;

typedef struct {
    ivl_t *v;
    size_t n, cap;
    size_t *pmax;   /* pmax[i]: index of the largest end among v[0..i] (after sorting by begin) */
    int dirty, oom;
} dels_t;

static void dels_add(dels_t *d, ivl_t iv)
{
    if (d->oom)
        return;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        ivl_t *nv = realloc(d->v, cap * sizeof *nv);
        if (!nv) {
            d->oom = 1;
            return;
        }
        d->v = nv;
        d->cap = cap;
    }
    d->v[d->n++] = iv;
    d->dirty = 1;
}

static int end_cmp(const ivl_t *x, const ivl_t *y)
{
    int xinf = !x->point && x->en == 0, yinf = !y->point && y->en == 0;
    if (xinf || yinf)
        return xinf - yinf;
    const uint8_t *xe = x->point ? x->b : x->e, *ye = y->point ? y->b : y->e;
    size_t xn = x->point ? x->bn : x->en, yn = y->point ? y->bn : y->en;
    return vcmp(xe, xn, x->point, ye, yn, y->point);
}

static int begin_cmp(const void *a, const void *b)
{
    const ivl_t *x = a, *y = b;
    return vcmp(x->b, x->bn, 0, y->b, y->bn, 0);
}

/* Does key k fall in any deleted interval (b <= k < e)? Sorted by begin with prefix maxima
 * of the ends, rebuilt only after inserts: one binary search per query. */
static int dels_hits(dels_t *d, const uint8_t *k, size_t kn)
{
    if (!d->n || d->oom)
        return 0;
    if (d->dirty) {
        qsort(d->v, d->n, sizeof *d->v, begin_cmp);
        size_t *pm = realloc(d->pmax, d->n * sizeof *pm);
        if (!pm) {
            d->oom = 1;
            return 0;
        }
        d->pmax = pm;
        for (size_t i = 0; i < d->n; i++)
            pm[i] = i == 0 || end_cmp(&d->v[i], &d->v[pm[i - 1]]) > 0 ? i : pm[i - 1];
        d->dirty = 0;
    }
    size_t lo = 0, hi = d->n;   /* first index with b > k */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vcmp(d->v[mid].b, d->v[mid].bn, 0, k, kn, 0) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return 0;
    const ivl_t *best = &d->v[d->pmax[lo - 1]];
    if (!best->point && best->en == 0)
        return 1;
    if (best->point)
        return vcmp(k, kn, 0, best->b, best->bn, 1) < 0;
    return vcmp(k, kn, 0, best->e, best->en, 0) < 0;
}

static void dels_union(dels_t *d, const dels_t *o)
{
    for (size_t i = 0; i < o->n; i++)
        dels_add(d, o->v[i]);
}

static void sets_free(kset_t *s, dels_t *d)
{
    free(s->slot);
    free(d->v);
    free(d->pmax);
    memset(s, 0, sizeof *s);
    memset(d, 0, sizeof *d);
}

#define DUP 1
#define OOM 2

/* etcd's checkIntervals over one list of ops: fills puts/dels with what the list (and its
 * nested txns) writes; DUP when two of them touch the same key. */
static int check_intervals(Etcdserverpb__RequestOp *const *reqs, size_t n, kset_t *puts, dels_t *dels)
{
    /* this level's deletes first, to check lower-level puts against them */
    for (size_t i = 0; i < n; i++) {
        const Etcdserverpb__RequestOp *r = reqs[i];
        if (!r || r->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE ||
            !r->request_delete_range)
            continue;
        const Etcdserverpb__DeleteRangeRequest *d = r->request_delete_range;
        ivl_t iv = {.b = d->key.data, .bn = d->key.len, .e = d->range_end.data, .en = d->range_end.len,
                    .point = d->range_end.len == 0};
        dels_add(dels, iv);
    }
    /* then the nested txns' puts and deletes */
    for (size_t i = 0; i < n; i++) {
        const Etcdserverpb__RequestOp *r = reqs[i];
        if (!r || r->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN || !r->request_txn)
            continue;
        const Etcdserverpb__TxnRequest *t = r->request_txn;
        kset_t pt = {0}, pe = {0};
        dels_t dt = {0}, de = {0};
        int rc = check_intervals(t->success, t->n_success, &pt, &dt);
        if (rc == 0)
            rc = check_intervals(t->failure, t->n_failure, &pe, &de);
        for (size_t j = 0; rc == 0 && j < pt.cap; j++) {
            const bstr_t *k = &pt.slot[j];
            if (!k->p)
                continue;
            if (kset_has(puts, k->p, k->n) || dels_hits(dels, k->p, k->n))
                rc = DUP;
            kset_add(puts, k->p, k->n);
        }
        for (size_t j = 0; rc == 0 && j < pe.cap; j++) {
            const bstr_t *k = &pe.slot[j];
            if (!k->p)
                continue;
            /* in both branches of the child: fine, only one branch runs */
            if ((kset_has(puts, k->p, k->n) && !kset_has(&pt, k->p, k->n)) || dels_hits(dels, k->p, k->n))
                rc = DUP;
            kset_add(puts, k->p, k->n);
        }
        if (rc == 0) {
            dels_union(dels, &dt);
            dels_union(dels, &de);
        }
        if (rc == 0 && (pt.oom || pe.oom || dt.oom || de.oom))
            rc = OOM;
        sets_free(&pt, &dt);
        sets_free(&pe, &de);
        if (rc)
            return rc;
    }
    /* and this level's puts */
    for (size_t i = 0; i < n; i++) {
        const Etcdserverpb__RequestOp *r = reqs[i];
        if (!r || r->request_case != ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT || !r->request_put)
            continue;
        const ProtobufCBinaryData *k = &r->request_put->key;
        if (kset_has(puts, k->data, k->len) || dels_hits(dels, k->data, k->len))
            return DUP;
        kset_add(puts, k->data, k->len);
    }
    return puts->oom || dels->oom ? OOM : 0;
}

static int intervals(Etcdserverpb__RequestOp *const *reqs, size_t n, const char **msg)
{
    kset_t p = {0};
    dels_t d = {0};
    int rc = check_intervals(reqs, n, &p, &d);
    sets_free(&p, &d);
    if (rc == DUP)
        return fail(msg, CAIRN_ETCD_DUPLICATE_KEY);
    if (rc == OOM)
        return fail(msg, CAIRN_ETCD_TOO_MANY_REQUESTS);   /* out of memory: refuse, don't crash */
    return 0;
}

int cairn_kvcheck_txn(const Etcdserverpb__TxnRequest *r, int max_txn_ops, const char **msg)
{
    if (!r)
        return fail(msg, CAIRN_ETCD_KEY_NOT_FOUND);
    if (max_txn_ops <= 0)
        max_txn_ops = CAIRN_KVCHECK_DEFAULT_MAX_TXN_OPS;
    int rc = check_txn_ops(r, max_txn_ops, 0, msg);
    /* the overlap check runs after the others, as in etcd (it is the expensive one) */
    if (rc == 0)
        rc = intervals(r->success, r->n_success, msg);
    if (rc == 0)
        rc = intervals(r->failure, r->n_failure, msg);
    return rc;
}

/* ---- nesting depth, from the wire bytes ------------------------------------------------ *
 *
 * Why: protobuf-c's unpack calls itself for every embedded message, and a nested txn is two
 * of them (RequestOp, then TxnRequest): ~1.9 KB of stack per txn level (measured: protobuf-c
 * 1.4.1, x86-64). At 4 to 8 bytes a level, a 42 KB request nests ~6,000 deep and overflows
 * an 8 MiB stack inside the unpack, before anything could look at the unpacked request; our
 * own walks (check_op, check_intervals, apply.c's compare_path/check_reqs/apply_txn, the
 * response's pack) recurse per level too. So depth is measured on the bytes, with a loop and
 * a fixed array, and a too-deep request is never unpacked.
 *
 * Why 128 (CAIRN_KVCHECK_MAX_TXN_DEPTH): it refuses nothing etcd accepts at its default
 * --max-txn-ops (128): every level of nesting spends at least one op of its parent's budget
 * (a nested txn gets max - its parent's op count), so in etcd a txn nested 129 deep already
 * fails with "too many operations in txn request", and so do 6,000 levels; 128 levels with
 * an empty innermost txn, or 127 with one op at the bottom, pass (checked). Such a request
 * gets our message here instead of etcd's: the text differs, the code (3) does not; etcd's
 * exact answer would need the unpacked request (an earlier op's empty key comes first).
 * And 128 levels cost ~250 KB of stack in protobuf-c, ~3% of the 8 MiB main-thread stack
 * gatewayd and stored unpack on, which leaves room for our own walks and for sanitizer
 * builds' larger frames. A deployment that raises --max-txn-ops still gets at most 128
 * levels (a deliberate difference from etcd, which unpacks any depth that fits in a
 * request: Go's stacks grow).
 *
 * The wire format, as far as the walk reads it (protobuf encoding): a message is a sequence
 * of fields, each a tag varint (field number << 3 | wire type) then the payload:
 *   wire type 0: a varint, 1 to 10 bytes, bit 7 set on every byte but the last;
 *   wire type 1: 8 bytes;  wire type 5: 4 bytes;
 *   wire type 2: a length varint, then that many bytes;
 *   wire types 3, 4 (groups), 6, 7: refused, as protobuf-c refuses them.
 * A varint is little-endian base 128. Also refused, as protobuf-c refuses them: a tag or a
 * length varint longer than 5 bytes, field number 0 written in one byte; and, as protobuf
 * requires (protobuf-c takes these as unknown fields), field number 0 written longer and
 * field numbers above 2^29 - 1; and a payload that runs past the end of the message holding
 * it, or a varint cut off by that end. Tags are read as protobuf-c reads them, padded ones
 * (0x92 0x80 0x00 is field 2) included, so that a field protobuf-c descends into is never
 * skipped here. The walk descends into TxnRequest fields 2 (success) and 3 (failure), which
 * are RequestOps, and RequestOp field 4 (request_txn), a TxnRequest, when their wire type is
 * 2; everything else is skipped unread: no other message inside a TxnRequest nests (Compare,
 * RangeRequest, PutRequest and DeleteRangeRequest hold only scalars and bytes), and
 * protobuf-c checks those payloads when it unpacks them. A wrong wire type on fields 2, 3 or
 * 4 is skipped too (it holds no message; protobuf-c refuses it). A request_txn that a later
 * member of its RequestOp's oneof replaces still counts, though protobuf-c drops it: the
 * walk may measure deeper than what gets unpacked, never shallower. Cost: one pass over the
 * bytes, no malloc. */

#define WIRE_VARINT 0
#define WIRE_64BIT 1
#define WIRE_LEN 2
#define WIRE_32BIT 5
#define FIELD_MAX ((1u << 29) - 1)
#define TXN_SUCCESS 2   /* TxnRequest.success: repeated RequestOp */
#define TXN_FAILURE 3   /* TxnRequest.failure: repeated RequestOp */
#define OP_TXN 4        /* RequestOp.request_txn: TxnRequest */

/* Reads a varint of at most max bytes that must end before end. */
static int wire_varint(const uint8_t **p, const uint8_t *end, size_t max, uint64_t *v)
{
    size_t avail = (size_t)(end - *p);
    uint64_t x = 0;
    for (size_t i = 0; i < max && i < avail; i++) {
        uint8_t b = (*p)[i];
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *p += i + 1;
            *v = x;
            return 0;
        }
    }
    return CAIRN_EPROTO;
}

int cairn_kvcheck_txn_depth(const uint8_t *body, size_t len)
{
    /* end[i]: where the message open at level i ends. Even levels are TxnRequests, odd levels
     * RequestOps, so a txn nested d deep is level 2d; the array bounds the walk: a txn one
     * deeper than the limit is refused before it would be opened. */
    const uint8_t *end[2 * CAIRN_KVCHECK_MAX_TXN_DEPTH + 2];
    static const uint8_t empty = 0;
    if (!body) {
        if (len)
            return CAIRN_EINVAL;
        body = &empty;
    }
    const uint8_t *p = body;
    int top = 0, depth = 0;
    end[0] = body + len;
    while (top >= 0) {
        if (p == end[top]) {   /* this message is done: back to its parent */
            top--;
            continue;
        }
        uint64_t tag, n;
        if (wire_varint(&p, end[top], 5, &tag) || (tag >> 3) == 0 || (tag >> 3) > FIELD_MAX)
            return CAIRN_EPROTO;
        uint64_t field = tag >> 3;
        switch (tag & 7) {
        case WIRE_VARINT:
            if (wire_varint(&p, end[top], 10, &n))
                return CAIRN_EPROTO;
            break;
        case WIRE_64BIT:
        case WIRE_32BIT:
            n = (tag & 7) == WIRE_64BIT ? 8 : 4;
            if (n > (size_t)(end[top] - p))
                return CAIRN_EPROTO;
            p += n;
            break;
        case WIRE_LEN: {
            if (wire_varint(&p, end[top], 5, &n) || n > (size_t)(end[top] - p))
                return CAIRN_EPROTO;
            int in_txn = top % 2 == 0;
            if ((in_txn && (field == TXN_SUCCESS || field == TXN_FAILURE)) || (!in_txn && field == OP_TXN)) {
                if (!in_txn && (top + 1) / 2 > CAIRN_KVCHECK_MAX_TXN_DEPTH)
                    return CAIRN_ETOOBIG;
                top++;
                end[top] = p + n;
                if (top % 2 == 0 && top / 2 > depth)
                    depth = top / 2;
            } else
                p += n;
            break;
        }
        default: return CAIRN_EPROTO;
        }
    }
    return depth;
}

int cairn_kvcheck_request(int kind, const uint8_t *body, size_t len, int max_txn_ops, const char **msg)
{
    static const uint8_t empty = 0;
    if (!body)
        body = &empty;
    int rc = 0;
    switch (kind) {
    case CAIRN_REQ_RANGE: {
        Etcdserverpb__RangeRequest *r = etcdserverpb__range_request__unpack(NULL, len, body);
        if (!r)
            break;
        rc = cairn_kvcheck_range(r, msg);
        etcdserverpb__range_request__free_unpacked(r, NULL);
        return rc;
    }
    case CAIRN_REQ_PUT: {
        Etcdserverpb__PutRequest *r = etcdserverpb__put_request__unpack(NULL, len, body);
        if (!r)
            break;
        rc = cairn_kvcheck_put(r, msg);
        etcdserverpb__put_request__free_unpacked(r, NULL);
        return rc;
    }
    case CAIRN_REQ_DELETE_RANGE: {
        Etcdserverpb__DeleteRangeRequest *r = etcdserverpb__delete_range_request__unpack(NULL, len, body);
        if (!r)
            break;
        rc = cairn_kvcheck_delete_range(r, msg);
        etcdserverpb__delete_range_request__free_unpacked(r, NULL);
        return rc;
    }
    case CAIRN_REQ_TXN: {
        int depth = cairn_kvcheck_txn_depth(body, len);   /* before unpacking: see there */
        if (depth == CAIRN_ETOOBIG)
            return fail(msg, CAIRN_ETCD_TXN_TOO_DEEP);
        if (depth < 0)
            break;
        Etcdserverpb__TxnRequest *r = etcdserverpb__txn_request__unpack(NULL, len, body);
        if (!r)
            break;
        rc = cairn_kvcheck_txn(r, max_txn_ops, msg);
        etcdserverpb__txn_request__free_unpacked(r, NULL);
        return rc;
    }
    case CAIRN_REQ_COMPACT: {
        Etcdserverpb__CompactionRequest *r = etcdserverpb__compaction_request__unpack(NULL, len, body);
        if (!r)
            break;
        etcdserverpb__compaction_request__free_unpacked(r, NULL);
        return 0;
    }
    case CAIRN_REQ_ALARM: { /* etcd checks nothing: any action and type are proposed */
        Etcdserverpb__AlarmRequest *r = etcdserverpb__alarm_request__unpack(NULL, len, body);
        if (!r)
            break;
        etcdserverpb__alarm_request__free_unpacked(r, NULL);
        return 0;
    }
    default:
        if (msg)
            *msg = "cairn: unknown request kind";
        return CAIRN_GRPC_INVALID_ARGUMENT;
    }
    if (msg)
        *msg = "cairn: malformed request (protobuf does not parse)";
    return CAIRN_GRPC_INVALID_ARGUMENT;
}
