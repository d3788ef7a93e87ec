/* cairn_entry.h - one raft log entry, and the configuration-entry format: the durable
 * formats that the raft core, stored (WAL, apply, the in-memory log), raftd and the IPC codec
 * all read. One struct for all of them (cairn_raft_entry_t, cairn_ipc_entry_t and
 * cairn_wal_entry_t are this type), so an entry crosses from the WAL to the IPC to the core
 * without a conversion, and stored needs neither raft.h nor the raft core to apply
 * configuration entries.
 *
 * An entry: index (>= 1), term, type (cairn_entry_type_t), data (len bytes; NULL when 0).
 * Who owns data is the holder's business (the core and stored's memlog copy it in; a decoded
 * IPC message or a WAL replay callback lends it).
 *
 * CONFIGURATION ENTRY (type CAIRN_ENTRY_CONF): the entry's data, byte by byte:
 *
 *   offset  size  field
 *   0       1     op: 1 ADD_VOTER, 2 ADD_LEARNER, 3 PROMOTE, 4 REMOVE, 5 UPDATE (cairn_conf_op_t)
 *   1       8     node id, unsigned, little-endian; never 0
 *   9       n     context: opaque to the raft core (the member record: shared/cairn_member.h);
 *                 0 <= n <= CAIRN_CONF_MAX_CTX
 *
 * It is well formed when len >= 9, op is 1..5, the id is not 0 and n is within bounds; what
 * each op does to a configuration, and why a malformed one is a no-op rather than an error,
 * is the raft core's (top of services/raftd/core/raft.c). Both functions are inline: the
 * raft core uses them and references no code outside itself (test_raftcore_pure).
 *
 * The data of a NORMAL entry proposed by a gateway is a request envelope (cairn_ipc.h, the
 * msgpack codec owns it); EMPTY entries carry nothing.
 */
#ifndef CAIRN_ENTRY_H
#define CAIRN_ENTRY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cairn_err.h"

typedef enum {
    CAIRN_ENTRY_NORMAL = 0, /* a client proposal: a request envelope */
    CAIRN_ENTRY_EMPTY = 1,  /* the no-op a new leader appends (Raft thesis §6.4) */
    CAIRN_ENTRY_CONF = 2,   /* a membership change: the format above */
} cairn_entry_type_t;

typedef struct {
    uint64_t index;
    uint64_t term;
    uint8_t type; /* cairn_entry_type_t */
    const uint8_t *data;
    size_t len;
} cairn_entry_t;

/* Single-server membership changes (Raft thesis §4.1), one per configuration entry. */
typedef enum {
    CAIRN_CONF_ADD_VOTER = 1,   /* a new voter (thesis §4.2.1 prefers ADD_LEARNER, then PROMOTE) */
    CAIRN_CONF_ADD_LEARNER = 2, /* a non-voting member: gets the log, never votes or counts */
    CAIRN_CONF_PROMOTE = 3,     /* learner -> voter, once caught up */
    CAIRN_CONF_REMOVE = 4,      /* a voter or learner leaves */
    CAIRN_CONF_UPDATE = 5,      /* no membership effect: carries new context (etcd MemberUpdate) */
} cairn_conf_op_t;

#define CAIRN_CONF_HDR 9
#define CAIRN_CONF_MAX_CTX 65536

typedef struct {
    uint8_t op; /* cairn_conf_op_t */
    uint64_t node_id;
    const uint8_t *ctx; /* points into the decoded data */
    size_t ctx_len;
} cairn_conf_change_t;

/* Decodes a configuration entry's data: 0, or CAIRN_EINVAL when it is not well formed. */
static inline int cairn_entry_conf_decode(const void *data, size_t len, cairn_conf_change_t *out)
{
    if (!out)
        return CAIRN_EINVAL;
    memset(out, 0, sizeof *out);
    const uint8_t *p = data;
    if (!p || len < CAIRN_CONF_HDR || len - CAIRN_CONF_HDR > CAIRN_CONF_MAX_CTX || p[0] < CAIRN_CONF_ADD_VOTER ||
        p[0] > CAIRN_CONF_UPDATE)
        return CAIRN_EINVAL;
    uint64_t id = 0;
    for (int i = 8; i >= 1; i--)
        id = id << 8 | p[i];
    if (id == 0)
        return CAIRN_EINVAL;
    out->op = p[0];
    out->node_id = id;
    out->ctx = len > CAIRN_CONF_HDR ? p + CAIRN_CONF_HDR : NULL;
    out->ctx_len = len - CAIRN_CONF_HDR;
    return 0;
}

/* Writes a configuration entry's data into buf (CAIRN_CONF_HDR + ctx_len bytes); returns
 * its length. The caller checks op, id and ctx_len (cairn_entry_conf_decode's rules). */
static inline size_t cairn_entry_conf_encode(uint8_t *buf, uint8_t op, uint64_t node_id, const void *ctx,
                                             size_t ctx_len)
{
    buf[0] = op;
    for (int i = 1; i <= 8; i++, node_id >>= 8)
        buf[i] = (uint8_t)node_id;
    if (ctx_len)
        memcpy(buf + CAIRN_CONF_HDR, ctx, ctx_len);
    return CAIRN_CONF_HDR + ctx_len;
}

#endif
