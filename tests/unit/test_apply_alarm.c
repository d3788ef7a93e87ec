/* test_apply_alarm.c - the alarm table and etcd 3.4's capped applier (apply.c, mvcc.c 'A'):
 * what a NOSPACE alarm refuses and what it lets through, ACTIVATE/DEACTIVATE/GET answers,
 * durability across reopen, and the Hash/defrag helpers of mvcc. */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tmpdir.h"
#include "apply.h"
#include "cairn_err.h"
#include "rpc.pb-c.h"

static char g_dir[256];
static cairn_mvcc_t *M;
static uint64_t g_idx;
static cairn_apply_err_t E;
static const cairn_hdr_ctx_t HDR = {.cluster_id = 1, .member_id = 2, .raft_term = 3};

static void reopen(void)
{
    cairn_mvcc_destroy(&M);
    int err;
    char eb[256];
    M = cairn_mvcc_open(g_dir, &err, eb, sizeof eb);
    cr_assert_not_null(M, "%s", eb);
}

static void setup(void)
{
    cairn_test_mkdtemp(g_dir, sizeof g_dir, "alarm");
    reopen();
    g_idx = 0;
}

static void teardown(void)
{
    cairn_mvcc_destroy(&M);
    cairn_test_rmtree(g_dir);
}

TestSuite(alarm, .init = setup, .fini = teardown);

/* Applies req (kind) as the next entry: 0 and the packed response in *resp (caller frees), or
 * the grpc code (E.message). */
static int apply(int kind, const void *req, uint8_t **resp, size_t *rlen)
{
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(n + 1);
    protobuf_c_message_pack(req, buf);
    uint8_t *r = NULL;
    size_t rl = 0;
    cr_assert_eq(cairn_apply_request(M, ++g_idx, 3, kind, buf, n, &HDR, &r, &rl, &E), 0);
    free(buf);
    if (resp) {
        *resp = r;
        *rlen = rl;
    } else {
        free(r);
    }
    return E.grpc_code;
}

static ProtobufCBinaryData B(const char *s) { return (ProtobufCBinaryData){strlen(s), (uint8_t *)s}; }

static int put(const char *k)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = B(k);
    r.value = B("v");
    return apply(CAIRN_REQ_PUT, &r, NULL, NULL);
}

/* Alarm request -> "member:type,member:type" of the response (or "ERR <code>") */
static const char *alarm(int action, uint64_t member, int type)
{
    static char out[256];
    Etcdserverpb__AlarmRequest r = ETCDSERVERPB__ALARM_REQUEST__INIT;
    r.action = action;
    r.memberid = member;
    r.alarm = type;
    uint8_t *resp;
    size_t rl;
    int rc = apply(CAIRN_REQ_ALARM, &r, &resp, &rl);
    if (rc) {
        snprintf(out, sizeof out, "ERR %d", rc);
        return out;
    }
    Etcdserverpb__AlarmResponse *o = etcdserverpb__alarm_response__unpack(NULL, rl, resp);
    free(resp);
    cr_assert_not_null(o);
    cr_assert_not_null(o->header);
    cr_assert_eq(o->header->member_id, 2);
    out[0] = 0;
    for (size_t i = 0; i < o->n_alarms; i++)
        snprintf(out + strlen(out), sizeof out - strlen(out), "%s%llu:%d", i ? "," : "",
                 (unsigned long long)o->alarms[i]->memberid, (int)o->alarms[i]->alarm);
    etcdserverpb__alarm_response__free_unpacked(o, NULL);
    return out;
}

enum { GET = 0, ACT = 1, DEACT = 2, NOSPACE = 1, CORRUPT = 2 };

static int txn(int with_put_in_failure, int nested_put)
{
    Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
    p.key = B("t");
    Etcdserverpb__RangeRequest g = ETCDSERVERPB__RANGE_REQUEST__INIT;
    g.key = B("t");
    Etcdserverpb__RequestOp op_put = ETCDSERVERPB__REQUEST_OP__INIT, op_get = ETCDSERVERPB__REQUEST_OP__INIT,
                            op_txn = ETCDSERVERPB__REQUEST_OP__INIT;
    op_put.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op_put.request_put = &p;
    op_get.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op_get.request_range = &g;
    Etcdserverpb__TxnRequest inner = ETCDSERVERPB__TXN_REQUEST__INIT;
    Etcdserverpb__RequestOp *inner_ops[] = {&op_put};
    inner.success = inner_ops;
    inner.n_success = 1;
    op_txn.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    op_txn.request_txn = &inner;
    Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
    Etcdserverpb__RequestOp *succ[] = {nested_put ? &op_txn : &op_get};
    Etcdserverpb__RequestOp *fail[] = {&op_put};
    t.success = succ;
    t.n_success = 1;
    if (with_put_in_failure) {
        t.failure = fail;
        t.n_failure = 1;
    }
    return apply(CAIRN_REQ_TXN, &t, NULL, NULL);
}

Test(alarm, nospace_refuses_what_etcd_refuses)
{
    cr_assert_eq(put("a"), 0);
    cr_assert_str_eq(alarm(GET, 0, 0), "");
    cr_assert_str_eq(alarm(ACT, 7, NOSPACE), "7:1");
    cr_assert_str_eq(alarm(ACT, 7, NOSPACE), "7:1", "activating again answers the alarm (etcd's AlarmStore)");
    cr_assert_eq(put("b"), CAIRN_GRPC_RESOURCE_EXHAUSTED);
    cr_assert_str_eq(E.message, "etcdserver: mvcc: database space exceeded");
    Etcdserverpb__LeaseGrantRequest lg = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    lg.id = 5;
    lg.ttl = 10;
    cr_assert_eq(apply(CAIRN_REQ_LEASE_GRANT, &lg, NULL, NULL), CAIRN_GRPC_RESOURCE_EXHAUSTED);
    cr_assert_eq(txn(1, 0), CAIRN_GRPC_RESOURCE_EXHAUSTED, "a put in the failure branch counts");
    cr_assert_eq(txn(0, 0), 0, "a txn without puts works");
    cr_assert_eq(txn(0, 1), 0, "puts of nested txns are not counted (etcd's costTxn)");
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key = B("a");
    cr_assert_eq(apply(CAIRN_REQ_DELETE_RANGE, &d, NULL, NULL), 0);
    Etcdserverpb__CompactionRequest c = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    c.revision = 2;
    cr_assert_eq(apply(CAIRN_REQ_COMPACT, &c, NULL, NULL), 0);
    cr_assert_eq(cairn_mvcc_alarms(M, CAIRN_MVCC_COMMITTED), 1u << NOSPACE);

    /* durable: the table survives a reopen, and so does the refusal */
    reopen();
    cr_assert_str_eq(alarm(GET, 0, 0), "7:1");
    cr_assert_eq(put("b"), CAIRN_GRPC_RESOURCE_EXHAUSTED);

    cr_assert_str_eq(alarm(ACT, 9, NOSPACE), "9:1");
    cr_assert_str_eq(alarm(GET, 0, NOSPACE), "7:1,9:1");
    cr_assert_str_eq(alarm(DEACT, 7, NOSPACE), "7:1");
    cr_assert_str_eq(alarm(DEACT, 7, NOSPACE), "", "deactivating an inactive alarm answers nothing");
    cr_assert_eq(put("b"), CAIRN_GRPC_RESOURCE_EXHAUSTED, "member 9's alarm still holds");
    cr_assert_str_eq(alarm(DEACT, 9, NOSPACE), "9:1");
    cr_assert_str_eq(alarm(GET, 0, 0), "");
    cr_assert_eq(put("b"), 0);
    cr_assert_eq(cairn_mvcc_alarms(M, CAIRN_MVCC_COMMITTED), 0u);
}

Test(alarm, alarm_inside_one_batch_is_seen_by_the_next_entry)
{
    cr_assert_eq(cairn_mvcc_batch_begin(M), 0);
    cr_assert_str_eq(alarm(ACT, 1, NOSPACE), "1:1");
    cr_assert_eq(put("x"), CAIRN_GRPC_RESOURCE_EXHAUSTED);
    cairn_mvcc_batch_abort(M);
    cr_assert_eq(cairn_mvcc_alarms(M, CAIRN_MVCC_COMMITTED), 0u, "an aborted batch leaves no alarm");
    g_idx = cairn_mvcc_applied_index(M);
    cr_assert_eq(put("x"), 0);
}

Test(alarm, corrupt_refuses_everything_but_alarms)
{
    cr_assert_str_eq(alarm(ACT, 3, CORRUPT), "3:2");
    cr_assert_eq(put("x"), CAIRN_GRPC_DATA_LOSS);
    cr_assert_str_eq(E.message, "etcdserver: corrupt cluster");
    cr_assert_str_eq(alarm(DEACT, 3, CORRUPT), "3:2");
    cr_assert_eq(put("x"), 0);
}

Test(alarm, read_path_lists_committed_alarms)
{
    cr_assert_str_eq(alarm(ACT, 4, NOSPACE), "4:1");
    Etcdserverpb__AlarmRequest q = ETCDSERVERPB__ALARM_REQUEST__INIT;
    uint8_t qb[16];
    size_t qn = etcdserverpb__alarm_request__pack(&q, qb);
    uint8_t *resp = NULL;
    size_t rl = 0;
    cr_assert_eq(cairn_apply_read(M, CAIRN_REQ_ALARM, qb, qn, &HDR, &resp, &rl, &E), 0);
    cr_assert_eq(E.grpc_code, 0);
    Etcdserverpb__AlarmResponse *o = etcdserverpb__alarm_response__unpack(NULL, rl, resp);
    free(resp);
    cr_assert_not_null(o);
    cr_assert_eq(o->n_alarms, 1);
    cr_assert_eq(o->alarms[0]->memberid, 4);
    etcdserverpb__alarm_response__free_unpacked(o, NULL);
    q.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE; /* not a read */
    qn = etcdserverpb__alarm_request__pack(&q, qb);
    cr_assert_eq(cairn_apply_read(M, CAIRN_REQ_ALARM, qb, qn, &HDR, &resp, &rl, &E), 0);
    cr_assert_neq(E.grpc_code, 0);
}

Test(alarm, defrag_hash_and_sizes)
{
    for (int i = 0; i < 200; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%03d", i);
        cr_assert_eq(put(k), 0);
    }
    uint32_t h1, h2;
    int64_t r1, r2;
    cr_assert_eq(cairn_mvcc_hash_all(M, &h1, &r1), 0);
    cr_assert_eq(cairn_mvcc_defrag(M), 0);
    cr_assert_eq(cairn_mvcc_hash_all(M, &h2, &r2), 0);
    cr_assert_eq(h1, h2, "defrag changes no record");
    cr_assert_eq(r1, r2);
    cr_assert_eq(r1, 201);
    cr_assert_gt(cairn_mvcc_db_size_in_use(M), 0, "after the flush the tables hold the records");
    cr_assert_leq(cairn_mvcc_db_size_in_use(M), cairn_mvcc_db_size(M));
    cr_assert_eq(put("more"), 0);
    cr_assert_eq(cairn_mvcc_hash_all(M, &h2, &r2), 0);
    cr_assert_neq(h1, h2);
}
