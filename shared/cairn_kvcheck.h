/* cairn_kvcheck.h - the checks gatewayd makes on KV requests BEFORE proposing them.
 *
 * These are etcd v3.4's v3rpc checks (etcdserver/api/v3rpc/key.go: checkRangeRequest,
 * checkPutRequest, checkDeleteRequest, checkTxnRequest, checkIntervals), with etcd's exact
 * grpc codes and messages. What depends on the stored state (key not found for ignore_*,
 * unknown lease, compacted or future revision) is checked at apply time (apply.c) instead.
 *
 * The request kinds live here, in the shared library, so that gatewayd (which proposes)
 * and stored (which applies) use the same ones; the messages are in cairn_etcd_err.h.
 */
#ifndef CAIRN_KVCHECK_H
#define CAIRN_KVCHECK_H
#include <stddef.h>
#include <stdint.h>

#include "cairn_etcd_err.h" /* the codes and messages: CAIRN_GRPC_*, CAIRN_ETCD_* */
#include "rpc.pb-c.h"

/* What a proposal (or a read) carries: the protobuf of the matching etcd request. */
typedef enum {
    CAIRN_REQ_PUT = 1,       /* etcdserverpb.PutRequest */
    CAIRN_REQ_DELETE_RANGE,  /* etcdserverpb.DeleteRangeRequest */
    CAIRN_REQ_TXN,           /* etcdserverpb.TxnRequest */
    CAIRN_REQ_COMPACT,       /* etcdserverpb.CompactionRequest */
    CAIRN_REQ_RANGE,         /* etcdserverpb.RangeRequest */
    CAIRN_REQ_LEASE_GRANT,   /* etcdserverpb.LeaseGrantRequest, ID and TTL final (chosen, raised) */
    CAIRN_REQ_LEASE_REVOKE,  /* etcdserverpb.LeaseRevokeRequest (a client's, or the leader's on expiry) */
    CAIRN_REQ_LEASE_TTL,     /* etcdserverpb.LeaseTimeToLiveRequest (a read: granted TTL and keys) */
    CAIRN_REQ_ALARM          /* etcdserverpb.AlarmRequest: GET, ACTIVATE, DEACTIVATE, all through the log as
                                in etcd 3.4 (EtcdServer.Alarm is a raft request); the table is the MVCC
                                store's 'A' records. stored proposes ACTIVATE NOSPACE itself when its db
                                passes --quota-backend-bytes. */
} cairn_req_kind_t;

/* etcd's lease bounds: TTLs above this are refused ("too large lease TTL"); below the minimum
 * (ceil(1.5 x election timeout)) they are raised to it. */
#define CAIRN_LEASE_MAX_TTL 9000000000LL

/* etcd's --max-txn-ops default. */
#define CAIRN_KVCHECK_DEFAULT_MAX_TXN_OPS 128

/* How deep txns may nest: a TxnRequest whose RequestOps hold txns holding txns ... more than
 * this many levels below the outermost one is refused, whatever --max-txn-ops says. Why a
 * limit at all and why this one: see cairn_kvcheck.c ("nesting depth"). etcd has no such
 * check (its op budget stops nesting at --max-txn-ops levels instead), so the message is
 * ours (CAIRN_ETCD_TXN_TOO_DEEP); grpc code 3 like etcd's other txn errors. */
#define CAIRN_KVCHECK_MAX_TXN_DEPTH 128

/* Each returns 0 when the request may be proposed, else the gRPC code, with *msg (if not
 * NULL) set to etcd's message (a static string). */
int cairn_kvcheck_range(const Etcdserverpb__RangeRequest *r, const char **msg);
int cairn_kvcheck_put(const Etcdserverpb__PutRequest *r, const char **msg);
int cairn_kvcheck_delete_range(const Etcdserverpb__DeleteRangeRequest *r, const char **msg);
/* Op counts (max_txn_ops <= 0: the default), keys, nested txns, then duplicate keys: a key
 * put twice, or put and covered by a delete, anywhere in the txn (nested txns included; a
 * key put in both the success and the failure branch of one nested txn is fine). Same order
 * of checks as etcd, so the same request gets the same error. A txn nested more than
 * CAIRN_KVCHECK_MAX_TXN_DEPTH levels is CAIRN_ETCD_TXN_TOO_DEEP (our check, not etcd's). */
int cairn_kvcheck_txn(const Etcdserverpb__TxnRequest *r, int max_txn_ops, const char **msg);
/* The nesting depth of the txns in a serialized TxnRequest, measured on the wire bytes
 * without unpacking them and without recursion: 0 when no RequestOp in it holds a txn, 1
 * when some do but none of those holds one, and so on. Returns the depth when it is at most
 * CAIRN_KVCHECK_MAX_TXN_DEPTH, CAIRN_ETOOBIG as soon as the walk finds a txn nested deeper,
 * CAIRN_EPROTO when the bytes it walks are not protobuf (truncated, a bad varint, a length
 * past the end of its message, a group or unknown wire type, field number 0), CAIRN_EINVAL
 * for body NULL with len > 0. Every TxnRequest that comes from outside the process (a
 * client, the log) must pass this BEFORE etcdserverpb__txn_request__unpack: protobuf-c's
 * unpack recurses once per level, and a 42 KB request nests deep enough to overflow the
 * stack. The payloads it does not descend into are left for protobuf-c to check. */
int cairn_kvcheck_txn_depth(const uint8_t *body, size_t len);
/* Unpacks body (a request of kind) and runs the matching check; a body that does not parse
 * is InvalidArgument. A TxnRequest has its depth checked (cairn_kvcheck_txn_depth) before
 * it is unpacked. Compaction requests have no checks. */
int cairn_kvcheck_request(int kind, const uint8_t *body, size_t len, int max_txn_ops, const char **msg);

#endif
