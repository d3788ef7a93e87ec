/* nested_txn.h - serialized TxnRequests nested n levels deep, written straight as protobuf
 * bytes (test only): test_kvcheck.c and test_apply.c feed them to code that must refuse
 * them before protobuf-c's recursive unpack sees them (issue 7: a ~42 KB txn nested ~6,000
 * deep crashed gatewayd). Building them through protobuf-c would recurse just the same, so
 * the bytes are laid out by hand, outside in, in one pass:
 *
 *   level n: TxnRequest{ success (field 2, tag 0x12) or failure (field 3, tag 0x1a):
 *              RequestOp{ request_txn (field 4, tag 0x22): level n-1 } }
 *   level 0: inner (the bytes of the innermost TxnRequest; may be empty)
 *
 * The result is level n: the outermost TxnRequest, holding n txns one inside the other, so
 * cairn_kvcheck_txn_depth of it is n. Each level takes 4 to 8 bytes.
 */
#ifndef CAIRN_TEST_NESTED_TXN_H
#define CAIRN_TEST_NESTED_TXN_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t nt_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *nt_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* A TxnRequest holding n nested txns around inner[0..inner_len). failure_every: when k > 0,
 * every k-th level puts its op in failure instead of success. Returns malloc'd bytes. */
static uint8_t *nested_txn(int n, const uint8_t *inner, size_t inner_len, int failure_every, size_t *len)
{
    /* tx[i]: size of the TxnRequest at level i; op[i]: size of the RequestOp around level i-1 */
    size_t *tx = malloc((size_t)(n + 1) * sizeof *tx), *op = malloc((size_t)(n + 1) * sizeof *op);
    if (!tx || !op)
        abort();
    tx[0] = inner_len;
    for (int i = 1; i <= n; i++) {
        op[i] = 1 + nt_varint_len(tx[i - 1]) + tx[i - 1];
        tx[i] = 1 + nt_varint_len(op[i]) + op[i];
    }
    uint8_t *buf = malloc(tx[n] ? tx[n] : 1), *p = buf;
    if (!buf)
        abort();
    for (int i = n; i >= 1; i--) {
        *p++ = failure_every > 0 && i % failure_every == 0 ? 0x1a : 0x12;
        p = nt_put_varint(p, op[i]);
        *p++ = 0x22;
        p = nt_put_varint(p, tx[i - 1]);
    }
    if (inner_len)
        memcpy(p, inner, inner_len);
    *len = tx[n];
    free(tx);
    free(op);
    return buf;
}

#endif
