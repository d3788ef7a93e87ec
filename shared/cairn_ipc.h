/* cairn_ipc.h - every message exchanged between the processes of one Cairn node.
 *
 * Wire format (msgpack): each ZeroMQ message frame holding a Cairn message is ONE msgpack
 * array:
 *     [ version:uint (=CAIRN_IPC_VERSION), type:uint, field1, field2, ... ]
 * The fields of each type, in order, are listed in the schema table in cairn_ipc.c (and in
 * the comments of cairn_ipc_type_t below). Field kinds:
 *     u64   msgpack positive integer (any width)
 *     i64   msgpack integer (signed)
 *     bin   msgpack bin or str (bytes; not NUL-terminated)
 *     ents  msgpack array of entries, each entry an array [index:u64, term:u64, type:u64, data:bin]
 *     ids   msgpack array of u64 (member IDs)
 * A decoder accepts exactly the listed number of fields; a frame that is not a msgpack array,
 * has another version, an unknown type, a field of the wrong kind or a wrong field count is
 * rejected with CAIRN_EPROTO / CAIRN_EVERSION / CAIRN_EUNKNOWN_MSG and never read further.
 * The processes of a node are built and upgraded together, so a type's fields may change
 * without a new version (LOAD_RESP, STATUS_RESP and SNAP_REQ gained fields this way): a process
 * from another build sees a wrong field count and refuses the frame with CAIRN_EPROTO, never
 * misreads it. CAIRN_IPC_VERSION changes when a message may be read differently; it is also the
 * version of the request envelope below, which lives in the WAL.
 *
 * Who sends what:
 *   gatewayd -> raftd   PROPOSE, READ_INDEX
 *   gatewayd -> raftd   MEMBERS, TRANSFER, MEMBER_CHANGE
 *   raftd -> gatewayd   PROPOSE_FAIL, READ_INDEX_RESP, RESULT (for MEMBERS, TRANSFER, MEMBER_CHANGE),
 *                       PROPOSALS_LOST
 *   raftd -> stored     LOAD, APPEND, COMMIT, SNAP_REQ, SNAP_RECV
 *   stored -> raftd     HELLO, LOAD_RESP, APPENDED, SNAP_CHUNK, SNAP_ACK
 *   gatewayd -> stored  RANGE, STATUS, MAINT
 *   stored -> raftd     PROPOSE (stored's own proposals: a NOSPACE alarm when its db passes the
 *                       quota; the envelope's origin "stored:<member id hex>" gets no RESULT)
 *   stored -> gatewayd  RESULT (applied proposals and ranges; a large body is preceded by
 *                       RESULT_PARTs), STATUS_RESP
 *   gatewayd -> raftd, stored   METRICS (answered with RESULT: /metrics shows every process)
 *   stored -> gatewayd  EVENTS (PUB/SUB on <run>/events.ipc)
 *   gatewayd -> stored  HISTORY, answered with HISTORY_RESP
 *   gatewayd -> raftd   LEASE_QUERY, answered with LEASE_RESP (raftd <-> raftd: PEER_LEASE_*)
 *   stored -> raftd     LEASE_APPLIED; raftd -> stored LEASE_LIST, answered with LEASE_LIST_RESP
 *   anyone -> sender    ERROR (the answer to a frame that could not be decoded)
 *   raftd <-> raftd     RAFT (a Raft message between members, over ZeroMQ TCP; cluster_id lets
 *                       a member drop messages from another cluster, --initial-cluster-token)
 *                       and PEER_* (the shell's own messages: attributes, forwarded membership
 *                       changes, snapshot transfer, removed, stopping, corruption checks)
 *   raftd -> stored     MAINT (op HASHKV) and STATUS, for a corruption check (services/raftd/corrupt.c),
 *                       answered with RESULT and STATUS_RESP
 *
 * Epochs: stored draws a new boot_id at every start. raftd tags APPEND and COMMIT with the
 * boot_id of the stored it loaded its state from, and stored tags APPENDED with its own.
 * Either side ignores a message of another epoch: a restarted stored lost whatever it had
 * not synced, so an ack from it must not vouch for the old instance's writes, and a commit
 * index computed against the old instance's log must not drive the new one's apply.
 *
 * The payload of a raft entry proposed by a gateway is a REQUEST ENVELOPE, also msgpack:
 *     [ version:uint, origin:bin (gateway identity), req_id:u64, kind:u64, body:bin ]
 * where kind is a cairn_req_kind_t and body the protobuf bytes of the etcd request. It is
 * stored in the WAL, so its layout is a durable format: change it only with a new version.
 */
#ifndef CAIRN_IPC_H
#define CAIRN_IPC_H

#include <stddef.h>
#include <stdint.h>

#include "cairn_entry.h"

#define CAIRN_IPC_VERSION 1
#define CAIRN_IPC_MAX_FRAME (64u << 20) /* no frame above this is decoded */

typedef enum {
    CAIRN_IPC_PROPOSE = 1,        /* req_id, body(entry data = request envelope) */
    CAIRN_IPC_PROPOSE_FAIL,       /* req_id, code, message */
    CAIRN_IPC_READ_INDEX,         /* req_id(context) */
    CAIRN_IPC_READ_INDEX_RESP,    /* req_id(context), index, code, message */
    CAIRN_IPC_LOAD,               /* first (the first log index wanted; 0 = from the start), seq (echoed
                                     in the answer: a late answer to an earlier request is told
                                     apart and ignored): one page */
    CAIRN_IPC_LOAD_RESP,          /* boot_id, term, vote, commit, snap_index, snap_term, cluster_id (0 =
                                     not known yet: a member joining a running cluster), body (the
                                     membership blob at snap_index, mvcc.c 'C'; empty = none), entries
                                     (one page: at most 4 MiB of entry data, at least one entry),
                                     last (the last durable index: the load is complete when a page
                                     ends there; 0 = the log holds no entries), seq (the LOAD's).
                                     Paged so that no message grows with the log. */
    CAIRN_IPC_APPEND,             /* boot_id, seq, has_hs, term, vote, commit, commit_durable, entries;
                                     commit_durable != 0: entries up to it are committed as soon as
                                     they are durable (a single-voter leader: its own disk is the
                                     quorum) */
    CAIRN_IPC_APPENDED,           /* boot_id, seq, index (last durable), term, code, message */
    CAIRN_IPC_COMMIT,             /* boot_id, commit, term, leader */
    CAIRN_IPC_HELLO,              /* boot_id */
    CAIRN_IPC_RANGE,              /* req_id, read_index, body(RangeRequest) */
    CAIRN_IPC_RESULT,             /* req_id, code, message, body(response protobuf) */
    CAIRN_IPC_STATUS,             /* req_id */
    CAIRN_IPC_STATUS_RESP,        /* req_id, leader, term, index, applied, db_size, db_size_in_use,
                                     revision, compact_rev, cluster_id, learner */
    CAIRN_IPC_ERROR,              /* req_id, code, message */
    CAIRN_IPC_RAFT,               /* raftd <-> raftd over TCP: cluster_id, raft_type, from, to, term,
                                     log_term, index, commit, reject, reject_hint, context,
                                     snap_index, snap_term, entries, voters, learners (the membership
                                     at snap_index; MSG_SNAP only, else empty) */
    CAIRN_IPC_MEMBERS,            /* gw -> raftd: req_id; answered with RESULT whose body is a packed
                                     MemberListResponse (header left for the gateway to fill) */
    CAIRN_IPC_TRANSFER,           /* gw -> raftd: req_id, target (member id); answered with RESULT once
                                     the target leads, or an error */
    CAIRN_IPC_PROPOSALS_LOST,     /* raftd -> gw: code, message. raftd rebuilt its state (stored
                                     restarted): every write this gateway has in flight has an
                                     unknown outcome and is to be answered with message now */
    CAIRN_IPC_MEMBER_CHANGE,      /* gw -> raftd: req_id, op (a cairn_member_op_t), body (the etcd
                                     Member{Add,Remove,Update,Promote}Request); answered with RESULT
                                     whose body is the packed etcd response, header left for the
                                     gateway to fill */
    /* Snapshot transfer (a member behind the leader's log, thesis §5.1): the follower's raftd
     * pulls the leader's snapshot chunk by chunk over the peer link (PEER_SNAP_PULL/DATA); each
     * side's raftd relays to its own stored. */
    CAIRN_IPC_SNAP_REQ,           /* raftd -> stored (leader's node): req_id (the member asking), snap_id
                                     (0 = a snapshot of the state at or past snap_index: the current
                                     file if it is, else a new one), offset, snap_index */
    CAIRN_IPC_SNAP_CHUNK,         /* stored -> raftd: req_id, snap_id, offset, total (bytes of the
                                     snapshot), applied (the state machine index it holds), code,
                                     message, body (the bytes at offset, <= 1 MiB) */
    CAIRN_IPC_SNAP_RECV,          /* raftd -> stored (follower): snap_id, offset, total, snap_index,
                                     snap_term (the raft snapshot being installed), body (the bytes at
                                     offset) */
    CAIRN_IPC_SNAP_ACK,           /* stored -> raftd: snap_id, offset (bytes held so far), installed (1
                                     once the snapshot is installed), snap_index, snap_term, code,
                                     message */
    CAIRN_IPC_RESULT_PART,        /* stored -> gatewayd: req_id, offset (of this part in the whole
                                     body), total (the whole body's length), body (CAIRN_IPC_
                                     RESULT_CHUNK bytes). A body larger than one chunk (a Range over a
                                     large store) goes as RESULT_PARTs, in order, and a final RESULT
                                     with the rest: the receiver concatenates them, and refuses the
                                     answer when a part is missing (an offset that does not follow,
                                     or a total that does not add up: a full queue drops frames).
                                     No frame grows with the answer. */
    /* raftd <-> raftd messages of the shell, not the Raft core; each begins with cluster_id, from,
     * to like RAFT, and rides the same peer link. */
    CAIRN_IPC_PEER_ATTRS,         /* cluster_id, from, to, want_reply (it has not got ours: answer at
                                     once), urls (advertised client URLs, comma-separated), name. Sent
                                     every couple of seconds so MemberList on any member shows every
                                     member's name and client URLs (soft state, relearned in seconds) */
    CAIRN_IPC_PEER_CONF_REQ,      /* follower -> leader: cluster_id, from, to, fwd_id, op, body (the etcd
                                     Member*Request): the core changes membership on the leader only */
    CAIRN_IPC_PEER_CONF_RESP,     /* leader -> follower: cluster_id, from, to, fwd_id, code, message,
                                     body (the etcd response without its header) */
    CAIRN_IPC_PEER_SNAP_PULL,     /* follower -> leader: cluster_id, from, to, snap_id (0 = a new one),
                                     offset, snap_index (the state must be at or past it) */
    CAIRN_IPC_PEER_SNAP_DATA,     /* leader -> follower: cluster_id, from, to, snap_id, offset, total,
                                     code, message, body (the bytes at offset). One chunk in flight per
                                     transfer: the follower pulls the next once its stored wrote this */
    CAIRN_IPC_PEER_REMOVED,       /* cluster_id, from, to: to a removed member that still speaks (it
                                     never got the entry that removed it); it stops serving clients,
                                     as etcd's does when its peers answer 410 Gone */
    CAIRN_IPC_PEER_STOPPING,      /* cluster_id, from, to: the sender is stopping; a leader stopping at
                                     the same time neither hands leadership to it nor waits for it */
    CAIRN_IPC_METRICS,            /* gw -> raftd, gw -> stored: req_id; answered with RESULT whose body
                                     is the process's metrics in the Prometheus text format */
    /* Watch (DESIGN.md "gatewayd"): stored publishes what every applied revision changed on its
     * PUB socket <run>/events.ipc; a gateway that missed some (a full queue drops frames, a
     * gateway starts late, a snapshot replaced the store) reads them back with HISTORY. */
    CAIRN_IPC_EVENTS,             /* stored -> every gatewayd (PUB): start_rev, revision, more, body.
                                     body: a packed etcdserverpb.WatchResponse holding only events,
                                     each with kv and prev_kv (when the key existed before), of the
                                     revisions start_rev..revision in order. Revisions are dense
                                     (each has at least one event), so a frame whose start_rev is
                                     not the last revision seen + 1 reveals a gap. more = 1: the
                                     events of revision continue in the next frame (one revision
                                     larger than a frame: a DeleteRange of many keys); that frame
                                     has start_rev = revision too. */
    CAIRN_IPC_HISTORY,            /* gw -> stored: req_id, start_rev, end_rev (<= 0: up to the current
                                     revision), key, range_end (etcd's range rules; empty key: every
                                     key), max_bytes (of event data in the answer: the reader's
                                     budget). Answered with HISTORY_RESP. */
    CAIRN_IPC_HISTORY_RESP,       /* stored -> gw: req_id, code, message, revision (every event of the
                                     range up to and including it is in body: continue from
                                     revision + 1), compact_rev, body (a packed WatchResponse holding
                                     only events, in revision order). code 11 (OutOfRange): start_rev
                                     is below compact_rev. An answer stops at a revision boundary once
                                     max_bytes or a scan budget is reached, so none grows with the
                                     history. */
    /* Leases (DESIGN.md "raftd": the durable table is stored's, the clock is the leader's raftd) */
    CAIRN_IPC_LEASE_QUERY,        /* gw -> raftd: req_id, lease_id, op (CAIRN_LEASE_KEEPALIVE: renew it;
                                     CAIRN_LEASE_TTL: only tell). A follower's raftd forwards it to
                                     the leader (PEER_LEASE_QUERY). Answered with LEASE_RESP. */
    CAIRN_IPC_LEASE_RESP,         /* raftd -> gw: req_id, lease_id, ttl (seconds left; keepalive: the
                                     granted TTL it now has again; -1: no such lease), granted_ttl,
                                     code, message (code != 0: e.g. no leader) */
    CAIRN_IPC_LEASE_APPLIED,      /* stored -> raftd: body = records of 16 bytes, id i64 BE | ttl i64
                                     BE, one per lease granted (ttl > 0) or revoked (ttl 0) by the
                                     batch just applied, so the leader's clock follows the table */
    CAIRN_IPC_LEASE_LIST,         /* raftd -> stored: req_id, lease_id (list leases after this id, as
                                     unsigned order; 0: from the start). A new leader reads the whole
                                     table this way, page by page. Answered with LEASE_LIST_RESP. */
    CAIRN_IPC_LEASE_LIST_RESP,    /* stored -> raftd: req_id, lease_id (the last id in body; continue
                                     after it), more (1: more pages follow), body (16-byte records as
                                     in LEASE_APPLIED, at most CAIRN_IPC_LEASE_PAGE of them) */
    CAIRN_IPC_PEER_LEASE_QUERY,   /* follower -> leader: cluster_id, from, to, fwd_id, lease_id, op */
    CAIRN_IPC_PEER_LEASE_RESP,    /* leader -> follower: cluster_id, from, to, fwd_id, lease_id, ttl,
                                     granted_ttl, code (a cairn_etcd_err_t; 0 ok) */
    CAIRN_IPC_LEASE_READ,         /* gw -> stored: req_id, body (a LeaseTimeToLiveRequest); answered
                                     with RESULT: a packed LeaseTimeToLiveResponse with the granted
                                     TTL and, if asked, the keys (TTL -1: no such lease) */
    CAIRN_IPC_MAINT,              /* gw -> stored: req_id, op (a cairn_maint_op_t), body (the etcd request
                                     when the op has one: HashKVRequest). Answered with RESULT whose
                                     body is the packed etcd response, header filled by stored
                                     (Hash, HashKV, Defragment, and the alarm list this member has
                                     applied, as an AlarmResponse, for Status and /health).
                                     Snapshot ops also carry snap_id and offset (see below) */
    /* Corruption checks (etcd 3.4's --experimental-corrupt-check-time and
     * --experimental-initial-corrupt-check; services/raftd/corrupt.c): the member checking asks
     * every other member's raftd for its HashKV; that raftd asks its own stored (MAINT op
     * HASHKV, answered with RESULT) and relays the answer. */
    CAIRN_IPC_PEER_HASH_REQ,      /* cluster_id, from, to, fwd_id (the asker's id for the request), revision
                                     (the HashKV revision wanted; 0: the current one) */
    CAIRN_IPC_PEER_HASH_RESP,     /* cluster_id, from, to, fwd_id, code (a grpc code, 0 ok: 11 OutOfRange
                                     with etcd's message for a compacted or future revision), message,
                                     body (the packed HashKVResponse from the member's stored: header
                                     with its member id and current revision, hash, compact_revision) */
    CAIRN_IPC_TYPE_MAX_
} cairn_ipc_type_t;

#define CAIRN_IPC_LEASE_PAGE 65536

/* CAIRN_IPC_MAINT operations */
typedef enum {
    CAIRN_MAINT_HASH = 1,   /* HashResponse: CRC32C over every record of the store */
    CAIRN_MAINT_HASHKV = 2, /* body HashKVRequest -> HashKVResponse */
    CAIRN_MAINT_DEFRAG = 3, /* DefragmentResponse, once LevelDB compacted the whole keyspace */
    CAIRN_MAINT_ALARMS = 4, /* AlarmResponse: every alarm active in this member's applied state */
    /* Maintenance/Snapshot: an etcd backend file (mvcc_etcd.c) of the member's committed state
     * (services/stored/snapstream.c). SNAPSHOT makes one on a thread and is answered with RESULT
     * whose body is snap_id u64 | total u64 | revision i64 (big-endian); SNAPSHOT_READ (snap_id,
     * offset) is answered with RESULT whose body is the file's next bytes (<=
     * CAIRN_MAINT_SNAP_CHUNK); SNAPSHOT_CLOSE (snap_id, no answer) drops the file. A file not read
     * for a while is dropped by stored: a gateway that died leaves nothing. */
    CAIRN_MAINT_SNAPSHOT = 5,
    CAIRN_MAINT_SNAPSHOT_READ = 6,
    CAIRN_MAINT_SNAPSHOT_CLOSE = 7,
} cairn_maint_op_t;

#define CAIRN_MAINT_SNAP_CHUNK ((size_t)256 << 10)

/* CAIRN_IPC_LEASE_QUERY operations */
typedef enum { CAIRN_LEASE_KEEPALIVE = 1, CAIRN_LEASE_TTL = 2 } cairn_lease_op_t;

#define CAIRN_IPC_RESULT_CHUNK ((size_t)4 << 20)

/* CAIRN_IPC_MEMBER_CHANGE operations */
typedef enum {
    CAIRN_MEMBER_ADD = 1,
    CAIRN_MEMBER_REMOVE = 2,
    CAIRN_MEMBER_UPDATE = 3,
    CAIRN_MEMBER_PROMOTE = 4,
} cairn_member_op_t;

/* An entry in APPEND, LOAD_RESP and RAFT messages: the one entry struct (cairn_entry.h). */
typedef cairn_entry_t cairn_ipc_entry_t;

/* A decoded (or to-be-encoded) message. Only the fields of its type are meaningful.
 * After cairn_ipc_decode, bin fields and entries point into memory owned by the message;
 * release it with cairn_ipc_msg_release(). */
typedef struct {
    uint8_t type;
    uint64_t req_id;
    uint64_t seq;
    uint64_t index;
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
    uint64_t leader;
    uint64_t boot_id;
    uint64_t snap_index;
    uint64_t snap_term;
    uint64_t read_index;
    uint64_t has_hs;
    uint64_t applied;
    uint64_t db_size;
    uint64_t db_size_in_use;
    int64_t revision;
    int64_t compact_rev;
    int64_t code; /* grpc status code (0 ok) or a CAIRN_E* code for ERROR */
    const uint8_t *message;
    size_t message_len;
    const uint8_t *body;
    size_t body_len;
    const cairn_ipc_entry_t *entries;
    size_t n_entries;
    uint64_t first;          /* LOAD: the first log index wanted */
    uint64_t last;           /* LOAD_RESP: the last durable index */
    uint64_t commit_durable; /* APPEND */
    uint64_t target;         /* TRANSFER: the member to lead */
    uint64_t op;             /* MEMBER_CHANGE, PEER_CONF_REQ: a cairn_member_op_t */
    uint64_t snap_id;        /* SNAP_*, PEER_SNAP_*: which snapshot file */
    uint64_t offset, total;  /* SNAP_*, PEER_SNAP_*, RESULT_PART: a chunk's place in the whole */
    uint64_t installed;      /* SNAP_ACK */
    uint64_t fwd_id;         /* PEER_CONF_*: the follower's id for a forwarded change */
    uint64_t want_reply;     /* PEER_ATTRS */
    const uint8_t *urls;     /* PEER_ATTRS */
    size_t urls_len;
    const uint8_t *name;     /* PEER_ATTRS */
    size_t name_len;
    int64_t start_rev, end_rev; /* EVENTS, HISTORY */
    uint64_t more;              /* EVENTS */
    uint64_t max_bytes;         /* HISTORY */
    const uint8_t *key;         /* HISTORY */
    size_t key_len;
    const uint8_t *range_end;   /* HISTORY */
    size_t range_end_len;
    int64_t lease_id, ttl, granted_ttl; /* LEASE_* */
    /* RAFT (cluster_id, from, to: PEER_* too) */
    uint64_t cluster_id;
    uint64_t raft_type;
    uint64_t from, to;
    uint64_t log_term;
    uint64_t reject, reject_hint;
    uint64_t context;
    const uint64_t *voters, *learners;
    size_t n_voters, n_learners;
    uint64_t learner; /* STATUS_RESP: this member is a learner */
    void *priv_[3]; /* decoder's storage */
} cairn_ipc_msg_t;

/* Encodes msg into a malloc'd buffer (*out, *out_len). Returns 0 or CAIRN_EINVAL/CAIRN_ENOMEM. */
int cairn_ipc_encode(const cairn_ipc_msg_t *msg, uint8_t **out, size_t *out_len);
/* Decodes one frame. On success returns 0 and msg must be released; on failure msg holds
 * nothing to release. The frame must outlive msg (bin fields may point into it). */
int cairn_ipc_decode(const uint8_t *frame, size_t len, cairn_ipc_msg_t *msg);
void cairn_ipc_msg_release(cairn_ipc_msg_t *msg);
const char *cairn_ipc_type_name(int type);

/* Sets message/message_len from a C string (borrowed). */
void cairn_ipc_set_message(cairn_ipc_msg_t *msg, const char *s);

/* ---- request envelope (the data of a proposed raft entry) ---- */
typedef struct {
    const uint8_t *origin;
    size_t origin_len;
    uint64_t req_id;
    uint64_t kind;
    const uint8_t *body;
    size_t body_len;
} cairn_ipc_req_t;

int cairn_ipc_req_encode(const cairn_ipc_req_t *req, uint8_t **out, size_t *out_len);
/* Zero-copy: origin/body point into data. */
int cairn_ipc_req_decode(const uint8_t *data, size_t len, cairn_ipc_req_t *req);

#endif
