/* apply.h - etcd's KV request semantics (Range/Put/DeleteRange/Txn/Compact) on cairn_mvcc.
 *
 * This is etcd v3.4's applierV3backend (etcdserver/apply.go) over our MVCC store: requests
 * arrive as the protobuf bytes that were proposed, responses leave as packed protobuf, with
 * etcd's errors (grpc code + exact message). What etcd's gateway checks before proposing is
 * in shared/cairn_kvcheck.h, not here.
 */
#ifndef CAIRN_APPLY_H
#define CAIRN_APPLY_H
#include <stddef.h>
#include <stdint.h>

#include "cairn_kvcheck.h"   /* cairn_req_kind_t, etcd's messages */
#include "mvcc.h"

/* What every response header carries besides the revision. */
typedef struct {
    uint64_t cluster_id, member_id, raft_term;
} cairn_hdr_ctx_t;

typedef struct {
    int grpc_code;      /* 0 = ok */
    char message[256];
} cairn_apply_err_t;

/* Applies one committed request (kind: cairn_req_kind_t; body: the protobuf of
 * PutRequest / DeleteRangeRequest / TxnRequest / CompactionRequest, or RangeRequest for a
 * read serialised through the log) at raft (index, term), inside the current batch (if no
 * batch is open, the call makes one of its own), and records index/term as applied.
 *
 * On success *resp is a malloc'd packed response (caller frees) whose header is
 * {cluster_id, member_id, revision, raft_term}, also inside nested Txn responses; per-op
 * responses inside a Txn carry etcd's per-op revision. Otherwise err->grpc_code != 0 with
 * etcd's exact message (e.g. 5 "etcdserver: requested lease not found", 11 "etcdserver:
 * mvcc: required revision has been compacted") and *resp is NULL. A request that fails still
 * consumes its index but changes no data. A malformed protobuf is grpc 3, never a crash;
 * so is a TxnRequest nested deeper than CAIRN_KVCHECK_MAX_TXN_DEPTH (CAIRN_ETCD_TXN_TOO_DEEP),
 * measured before it is unpacked.
 *
 * An index <= the applied index was applied already (a WAL replay overlapping the store):
 * nothing happens, *resp is NULL and err->grpc_code 0.
 *
 * Returns 0, or a negative CAIRN_E* only for storage failures (the batch must then be
 * abandoned with cairn_mvcc_batch_abort). */
int cairn_apply_request(cairn_mvcc_t *m, uint64_t index, uint64_t term, int kind, const uint8_t *body, size_t len,
                        const cairn_hdr_ctx_t *hdr, uint8_t **resp, size_t *resp_len, cairn_apply_err_t *err);

/* An entry with no request (raft no-op, conf change): only advances the applied index. */
int cairn_apply_noop(cairn_mvcc_t *m, uint64_t index, uint64_t term);

/* Read path: RangeRequest bytes -> packed RangeResponse, on the COMMITTED state (a batch
 * being applied is invisible until committed). Same contract as cairn_apply_request. */
int cairn_apply_range(cairn_mvcc_t *m, const uint8_t *body, size_t len, const cairn_hdr_ctx_t *hdr,
                      uint8_t **resp, size_t *resp_len, cairn_apply_err_t *err);
/* The same for any read kind: CAIRN_REQ_RANGE or CAIRN_REQ_LEASE_TTL (LeaseTimeToLiveRequest ->
 * a LeaseTimeToLiveResponse with the granted TTL as TTL and the keys if asked; TTL -1 when
 * the lease does not exist), or CAIRN_REQ_ALARM with action GET (the alarms this member has
 * applied: Status's errors and /health; a client's Alarm GET goes through the log instead).
 *
 * Alarms (etcd 3.4's appliers): cairn_apply_request refuses, while a NOSPACE alarm is active,
 * Put, a Txn with a put among its (outermost) success or failure ops, and LeaseGrant with
 * ResourceExhausted "etcdserver: mvcc: database space exceeded"; while a CORRUPT alarm is
 * active, every request but Alarm with DataLoss "etcdserver: corrupt cluster". */
int cairn_apply_read(cairn_mvcc_t *m, int kind, const uint8_t *body, size_t len, const cairn_hdr_ctx_t *hdr,
                     uint8_t **resp, size_t *resp_len, cairn_apply_err_t *err);

#endif
