/* cairn_ipc.c - the msgpack codec for every IPC message (format: see cairn_ipc.h).
 *
 * Every message type is described once, as a row of the schema table below: the list of
 * its fields, each a kind and the offset of the struct member that holds it. Encoder and
 * decoder both walk the table, so a type cannot be encoded one way and decoded another, and
 * services never hand-roll msgpack. The decoder is a small bounded reader over the frame
 * (no msgpack object tree is built): bin fields point straight into the frame.
 */
#include "cairn_ipc.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"

typedef enum { K_END = 0, K_U64, K_I64, K_BIN, K_ENTS, K_IDS } kind_t;

typedef struct {
    kind_t kind;
    size_t off;     /* value (u64/i64) or pointer (bin/ents) */
    size_t len_off; /* length member for bin/ents */
} field_t;

#define F_U(m) {K_U64, offsetof(cairn_ipc_msg_t, m), 0}
#define F_I(m) {K_I64, offsetof(cairn_ipc_msg_t, m), 0}
#define F_B(m) {K_BIN, offsetof(cairn_ipc_msg_t, m), offsetof(cairn_ipc_msg_t, m##_len)}
#define F_E {K_ENTS, offsetof(cairn_ipc_msg_t, entries), offsetof(cairn_ipc_msg_t, n_entries)}
#define F_IDS(m) {K_IDS, offsetof(cairn_ipc_msg_t, m), offsetof(cairn_ipc_msg_t, n_##m)}
#define F_PEER F_U(cluster_id), F_U(from), F_U(to) /* what every raftd <-> raftd message begins with */
#define F_END {K_END, 0, 0}
#define MAX_FIELDS 16

typedef struct {
    const char *name;
    field_t f[MAX_FIELDS + 1];
} schema_t;

static const schema_t g_schema[CAIRN_IPC_TYPE_MAX_] = {
    [CAIRN_IPC_PROPOSE] = {"propose", {F_U(req_id), F_B(body), F_END}},
    [CAIRN_IPC_PROPOSE_FAIL] = {"propose_fail", {F_U(req_id), F_I(code), F_B(message), F_END}},
    [CAIRN_IPC_READ_INDEX] = {"read_index", {F_U(req_id), F_END}},
    [CAIRN_IPC_READ_INDEX_RESP] = {"read_index_resp", {F_U(req_id), F_U(index), F_I(code), F_B(message), F_END}},
    [CAIRN_IPC_LOAD] = {"load", {F_U(first), F_U(seq), F_END}},
    [CAIRN_IPC_LOAD_RESP] = {"load_resp",
                             {F_U(boot_id), F_U(term), F_U(vote), F_U(commit), F_U(snap_index), F_U(snap_term),
                              F_U(cluster_id), F_B(body), F_E, F_U(last), F_U(seq), F_END}},
    [CAIRN_IPC_APPEND] = {"append",
                          {F_U(boot_id), F_U(seq), F_U(has_hs), F_U(term), F_U(vote), F_U(commit), F_U(commit_durable), F_E,
                           F_END}},
    [CAIRN_IPC_APPENDED] = {"appended", {F_U(boot_id), F_U(seq), F_U(index), F_U(term), F_I(code), F_B(message), F_END}},
    [CAIRN_IPC_COMMIT] = {"commit", {F_U(boot_id), F_U(commit), F_U(term), F_U(leader), F_END}},
    [CAIRN_IPC_HELLO] = {"hello", {F_U(boot_id), F_END}},
    [CAIRN_IPC_RANGE] = {"range", {F_U(req_id), F_U(read_index), F_B(body), F_END}},
    [CAIRN_IPC_RESULT] = {"result", {F_U(req_id), F_I(code), F_B(message), F_B(body), F_END}},
    [CAIRN_IPC_STATUS] = {"status", {F_U(req_id), F_END}},
    [CAIRN_IPC_STATUS_RESP] = {"status_resp",
                               {F_U(req_id), F_U(leader), F_U(term), F_U(index), F_U(applied), F_U(db_size),
                                F_U(db_size_in_use), F_I(revision), F_I(compact_rev), F_U(cluster_id), F_U(learner),
                                F_END}},
    [CAIRN_IPC_ERROR] = {"error", {F_U(req_id), F_I(code), F_B(message), F_END}},
    [CAIRN_IPC_MEMBERS] = {"members", {F_U(req_id), F_END}},
    [CAIRN_IPC_TRANSFER] = {"transfer", {F_U(req_id), F_U(target), F_END}},
    [CAIRN_IPC_PROPOSALS_LOST] = {"proposals_lost", {F_I(code), F_B(message), F_END}},
    [CAIRN_IPC_MEMBER_CHANGE] = {"member_change", {F_U(req_id), F_U(op), F_B(body), F_END}},
    [CAIRN_IPC_SNAP_REQ] = {"snap_req", {F_U(req_id), F_U(snap_id), F_U(offset), F_U(snap_index), F_END}},
    [CAIRN_IPC_SNAP_CHUNK] = {"snap_chunk",
                              {F_U(req_id), F_U(snap_id), F_U(offset), F_U(total), F_U(applied), F_I(code), F_B(message),
                               F_B(body), F_END}},
    [CAIRN_IPC_SNAP_RECV] = {"snap_recv",
                             {F_U(snap_id), F_U(offset), F_U(total), F_U(snap_index), F_U(snap_term), F_B(body), F_END}},
    [CAIRN_IPC_SNAP_ACK] = {"snap_ack",
                            {F_U(snap_id), F_U(offset), F_U(installed), F_U(snap_index), F_U(snap_term), F_I(code),
                             F_B(message), F_END}},
    [CAIRN_IPC_RESULT_PART] = {"result_part", {F_U(req_id), F_U(offset), F_U(total), F_B(body), F_END}},
    [CAIRN_IPC_RAFT] = {"raft",
                        {F_U(cluster_id), F_U(raft_type), F_U(from), F_U(to), F_U(term), F_U(log_term), F_U(index),
                         F_U(commit), F_U(reject), F_U(reject_hint), F_U(context), F_U(snap_index), F_U(snap_term), F_E,
                         F_IDS(voters), F_IDS(learners), F_END}},
    [CAIRN_IPC_PEER_ATTRS] = {"peer_attrs", {F_PEER, F_U(want_reply), F_B(urls), F_B(name), F_END}},
    [CAIRN_IPC_PEER_CONF_REQ] = {"peer_conf_req", {F_PEER, F_U(fwd_id), F_U(op), F_B(body), F_END}},
    [CAIRN_IPC_PEER_CONF_RESP] = {"peer_conf_resp", {F_PEER, F_U(fwd_id), F_I(code), F_B(message), F_B(body), F_END}},
    [CAIRN_IPC_PEER_SNAP_PULL] = {"peer_snap_pull", {F_PEER, F_U(snap_id), F_U(offset), F_U(snap_index), F_END}},
    [CAIRN_IPC_PEER_SNAP_DATA] = {"peer_snap_data",
                                  {F_PEER, F_U(snap_id), F_U(offset), F_U(total), F_I(code), F_B(message), F_B(body),
                                   F_END}},
    [CAIRN_IPC_PEER_REMOVED] = {"peer_removed", {F_PEER, F_END}},
    [CAIRN_IPC_PEER_STOPPING] = {"peer_stopping", {F_PEER, F_END}},
    [CAIRN_IPC_METRICS] = {"metrics", {F_U(req_id), F_END}},
    [CAIRN_IPC_EVENTS] = {"events", {F_I(start_rev), F_I(revision), F_U(more), F_B(body), F_END}},
    [CAIRN_IPC_HISTORY] = {"history",
                           {F_U(req_id), F_I(start_rev), F_I(end_rev), F_B(key), F_B(range_end), F_U(max_bytes), F_END}},
    [CAIRN_IPC_LEASE_QUERY] = {"lease_query", {F_U(req_id), F_I(lease_id), F_U(op), F_END}},
    [CAIRN_IPC_LEASE_RESP] = {"lease_resp",
                              {F_U(req_id), F_I(lease_id), F_I(ttl), F_I(granted_ttl), F_I(code), F_B(message), F_END}},
    [CAIRN_IPC_LEASE_APPLIED] = {"lease_applied", {F_B(body), F_END}},
    [CAIRN_IPC_LEASE_LIST] = {"lease_list", {F_U(req_id), F_I(lease_id), F_END}},
    [CAIRN_IPC_LEASE_LIST_RESP] = {"lease_list_resp", {F_U(req_id), F_I(lease_id), F_U(more), F_B(body), F_END}},
    [CAIRN_IPC_PEER_LEASE_QUERY] = {"peer_lease_query", {F_PEER, F_U(fwd_id), F_I(lease_id), F_U(op), F_END}},
    [CAIRN_IPC_PEER_LEASE_RESP] = {"peer_lease_resp",
                                   {F_PEER, F_U(fwd_id), F_I(lease_id), F_I(ttl), F_I(granted_ttl), F_I(code), F_END}},
    [CAIRN_IPC_LEASE_READ] = {"lease_read", {F_U(req_id), F_B(body), F_END}},
    [CAIRN_IPC_MAINT] = {"maint", {F_U(req_id), F_U(op), F_U(snap_id), F_U(offset), F_B(body), F_END}},
    [CAIRN_IPC_PEER_HASH_REQ] = {"peer_hash_req", {F_PEER, F_U(fwd_id), F_I(revision), F_END}},
    [CAIRN_IPC_PEER_HASH_RESP] = {"peer_hash_resp", {F_PEER, F_U(fwd_id), F_I(code), F_B(message), F_B(body), F_END}},
    [CAIRN_IPC_HISTORY_RESP] = {"history_resp",
                                {F_U(req_id), F_I(code), F_B(message), F_I(revision), F_I(compact_rev), F_B(body),
                                 F_END}},
};

const char *cairn_ipc_type_name(int type)
{
    if (type <= 0 || type >= CAIRN_IPC_TYPE_MAX_ || !g_schema[type].name)
        return "unknown";
    return g_schema[type].name;
}

void cairn_ipc_set_message(cairn_ipc_msg_t *msg, const char *s)
{
    msg->message = (const uint8_t *)s;
    msg->message_len = s ? strlen(s) : 0;
}

/* ------------------------------------------------------------------ encoder */

static int sbuf_write(void *data, const char *buf, size_t len)
{
    return msgpack_sbuffer_write((msgpack_sbuffer *)data, buf, len);
}

static void pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    if (n)
        msgpack_pack_bin_body(pk, p, n);
}

int cairn_ipc_encode(const cairn_ipc_msg_t *msg, uint8_t **out, size_t *out_len)
{
    if (!msg || msg->type == 0 || msg->type >= CAIRN_IPC_TYPE_MAX_)
        return CAIRN_EINVAL;
    const schema_t *s = &g_schema[msg->type];
    size_t nf = 0, est = 16;
    while (s->f[nf].kind != K_END) {
        const field_t *f = &s->f[nf];
        if (f->kind == K_BIN)
            est += *(const size_t *)((const char *)msg + f->len_off) + 5;
        else if (f->kind == K_ENTS)
            for (size_t i = 0; i < msg->n_entries; i++)
                est += msg->entries[i].len + 32;
        else if (f->kind == K_IDS)
            est += 5 + 9 * *(const size_t *)((const char *)msg + f->len_off);
        else
            est += 9;
        nf++;
    }
    msgpack_sbuffer sb;
    sb.size = 0;
    sb.alloc = est;
    sb.data = malloc(est);
    if (!sb.data)
        return CAIRN_ENOMEM;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, sbuf_write);
    msgpack_pack_array(&pk, 2 + nf);
    msgpack_pack_uint32(&pk, CAIRN_IPC_VERSION);
    msgpack_pack_uint32(&pk, msg->type);
    for (size_t i = 0; i < nf; i++) {
        const field_t *f = &s->f[i];
        const char *base = (const char *)msg + f->off;
        switch (f->kind) {
        case K_U64:
            msgpack_pack_uint64(&pk, *(const uint64_t *)base);
            break;
        case K_I64:
            msgpack_pack_int64(&pk, *(const int64_t *)base);
            break;
        case K_BIN:
            pack_bin(&pk, *(const uint8_t *const *)base, *(const size_t *)((const char *)msg + f->len_off));
            break;
        case K_ENTS:
            msgpack_pack_array(&pk, msg->n_entries);
            for (size_t e = 0; e < msg->n_entries; e++) {
                const cairn_ipc_entry_t *en = &msg->entries[e];
                msgpack_pack_array(&pk, 4);
                msgpack_pack_uint64(&pk, en->index);
                msgpack_pack_uint64(&pk, en->term);
                msgpack_pack_uint8(&pk, en->type);
                pack_bin(&pk, en->data, en->len);
            }
            break;
        case K_IDS: {
            const uint64_t *ids = *(const uint64_t *const *)base;
            size_t n = *(const size_t *)((const char *)msg + f->len_off);
            msgpack_pack_array(&pk, n);
            for (size_t e = 0; e < n; e++)
                msgpack_pack_uint64(&pk, ids[e]);
            break;
        }
        default:
            break;
        }
    }
    if (!sb.data) /* msgpack_sbuffer_write failed to grow */
        return CAIRN_ENOMEM;
    *out = (uint8_t *)sb.data;
    *out_len = sb.size;
    return 0;
}

/* ------------------------------------------------------------------ decoder */

/* A bounded reader of the msgpack subset we emit. Any byte it does not expect is an error:
 * the frame came from another process and may be anything. */
typedef struct {
    const uint8_t *p, *end;
} rd_t;

static int rd_be(rd_t *r, size_t n, uint64_t *v)
{
    if ((size_t)(r->end - r->p) < n)
        return CAIRN_EPROTO;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = (x << 8) | r->p[i];
    r->p += n;
    *v = x;
    return 0;
}

static int rd_array(rd_t *r, uint64_t *n)
{
    if (r->p >= r->end)
        return CAIRN_EPROTO;
    uint8_t b = *r->p++;
    if ((b & 0xf0) == 0x90) {
        *n = b & 0x0f;
        return 0;
    }
    if (b == 0xdc)
        return rd_be(r, 2, n);
    if (b == 0xdd)
        return rd_be(r, 4, n);
    return CAIRN_EPROTO;
}

/* Reads an integer; *neg set when it is a negative msgpack int. */
static int rd_int(rd_t *r, uint64_t *v, int *neg)
{
    if (r->p >= r->end)
        return CAIRN_EPROTO;
    uint8_t b = *r->p++;
    *neg = 0;
    if (b <= 0x7f) {
        *v = b;
        return 0;
    }
    if (b >= 0xe0) {
        *v = (uint64_t)(int64_t)(int8_t)b;
        *neg = 1;
        return 0;
    }
    uint64_t x = 0;
    int rc;
    switch (b) {
    case 0xcc: return rd_be(r, 1, v);
    case 0xcd: return rd_be(r, 2, v);
    case 0xce: return rd_be(r, 4, v);
    case 0xcf: return rd_be(r, 8, v);
    case 0xd0: rc = rd_be(r, 1, &x); *v = (uint64_t)(int64_t)(int8_t)x; break;
    case 0xd1: rc = rd_be(r, 2, &x); *v = (uint64_t)(int64_t)(int16_t)x; break;
    case 0xd2: rc = rd_be(r, 4, &x); *v = (uint64_t)(int64_t)(int32_t)x; break;
    case 0xd3: rc = rd_be(r, 8, &x); *v = x; break;
    default: return CAIRN_EPROTO;
    }
    if (rc == 0)
        *neg = (int64_t)*v < 0;
    return rc;
}

static int rd_u64(rd_t *r, uint64_t *v)
{
    int neg, rc = rd_int(r, v, &neg);
    if (rc == 0 && neg)
        return CAIRN_EPROTO;
    return rc;
}

static int rd_i64(rd_t *r, int64_t *v)
{
    uint64_t u;
    int neg, rc = rd_int(r, &u, &neg);
    if (rc)
        return rc;
    if (!neg && u > (uint64_t)INT64_MAX)
        return CAIRN_EPROTO;
    *v = (int64_t)u;
    return 0;
}

static int rd_bin(rd_t *r, const uint8_t **p, size_t *n)
{
    if (r->p >= r->end)
        return CAIRN_EPROTO;
    uint8_t b = *r->p++;
    uint64_t len;
    int rc = 0;
    if ((b & 0xe0) == 0xa0)
        len = b & 0x1f;
    else if (b == 0xc4 || b == 0xd9)
        rc = rd_be(r, 1, &len);
    else if (b == 0xc5 || b == 0xda)
        rc = rd_be(r, 2, &len);
    else if (b == 0xc6 || b == 0xdb)
        rc = rd_be(r, 4, &len);
    else if (b == 0xc0) { /* nil = empty */
        *p = NULL;
        *n = 0;
        return 0;
    } else
        return CAIRN_EPROTO;
    if (rc)
        return rc;
    if ((uint64_t)(r->end - r->p) < len)
        return CAIRN_EPROTO;
    *p = len ? r->p : NULL;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

static int rd_entries(rd_t *r, cairn_ipc_msg_t *msg)
{
    uint64_t n;
    int rc = rd_array(r, &n);
    if (rc)
        return rc;
    /* each entry takes at least 5 bytes: a count can't exceed what the frame could hold */
    if (n > (uint64_t)(r->end - r->p) / 5)
        return CAIRN_EPROTO;
    cairn_ipc_entry_t *ents = NULL;
    if (n) {
        ents = calloc(n, sizeof *ents);
        if (!ents)
            return CAIRN_ENOMEM;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t fields, type;
        if ((rc = rd_array(r, &fields)) || fields != 4 || (rc = rd_u64(r, &ents[i].index)) ||
            (rc = rd_u64(r, &ents[i].term)) || (rc = rd_u64(r, &type)) ||
            (rc = rd_bin(r, &ents[i].data, &ents[i].len)) || type > 255) {
            free(ents);
            return rc ? rc : CAIRN_EPROTO;
        }
        ents[i].type = (uint8_t)type;
    }
    msg->entries = ents;
    msg->n_entries = (size_t)n;
    msg->priv_[0] = ents;
    return 0;
}

/* An array of u64 into a malloc'd array kept in priv_[slot] (released with the message). */
static int rd_ids(rd_t *r, const uint64_t **out, size_t *n_out, void **slot)
{
    uint64_t n;
    int rc = rd_array(r, &n);
    if (rc)
        return rc;
    if (n > (uint64_t)(r->end - r->p)) /* each takes at least one byte */
        return CAIRN_EPROTO;
    uint64_t *ids = NULL;
    if (n && !(ids = malloc(n * sizeof *ids)))
        return CAIRN_ENOMEM;
    for (uint64_t i = 0; i < n; i++)
        if ((rc = rd_u64(r, &ids[i]))) {
            free(ids);
            return rc;
        }
    *out = ids;
    *n_out = (size_t)n;
    *slot = ids;
    return 0;
}

int cairn_ipc_decode(const uint8_t *frame, size_t len, cairn_ipc_msg_t *msg)
{
    memset(msg, 0, sizeof *msg);
    if (!frame || len == 0)
        return CAIRN_EPROTO;
    if (len > CAIRN_IPC_MAX_FRAME)
        return CAIRN_ETOOBIG;
    rd_t r = {frame, frame + len};
    uint64_t n, ver, type;
    int rc;
    if ((rc = rd_array(&r, &n)) || n < 2 || (rc = rd_u64(&r, &ver)) || (rc = rd_u64(&r, &type)))
        return rc ? rc : CAIRN_EPROTO;
    if (ver != CAIRN_IPC_VERSION)
        return CAIRN_EVERSION;
    if (type == 0 || type >= CAIRN_IPC_TYPE_MAX_ || !g_schema[type].name)
        return CAIRN_EUNKNOWN_MSG;
    const schema_t *s = &g_schema[type];
    size_t nf = 0;
    while (s->f[nf].kind != K_END)
        nf++;
    if (n != 2 + nf)
        return CAIRN_EPROTO;
    msg->type = (uint8_t)type;
    for (size_t i = 0; i < nf; i++) {
        const field_t *f = &s->f[i];
        char *base = (char *)msg + f->off;
        switch (f->kind) {
        case K_U64: rc = rd_u64(&r, (uint64_t *)base); break;
        case K_I64: rc = rd_i64(&r, (int64_t *)base); break;
        case K_BIN: rc = rd_bin(&r, (const uint8_t **)base, (size_t *)((char *)msg + f->len_off)); break;
        case K_ENTS: rc = rd_entries(&r, msg); break;
        case K_IDS:
            rc = rd_ids(&r, (const uint64_t **)base, (size_t *)((char *)msg + f->len_off),
                        &msg->priv_[f->off == offsetof(cairn_ipc_msg_t, voters) ? 1 : 2]);
            break;
        default: rc = CAIRN_EPROTO;
        }
        if (rc) {
            cairn_ipc_msg_release(msg);
            return rc;
        }
    }
    if (r.p != r.end) { /* trailing bytes: not a frame we wrote */
        cairn_ipc_msg_release(msg);
        return CAIRN_EPROTO;
    }
    return 0;
}

void cairn_ipc_msg_release(cairn_ipc_msg_t *msg)
{
    if (!msg)
        return;
    for (size_t i = 0; i < sizeof msg->priv_ / sizeof msg->priv_[0]; i++)
        free(msg->priv_[i]);
    memset(msg, 0, sizeof *msg);
}

/* ------------------------------------------------------------------ request envelope */

int cairn_ipc_req_encode(const cairn_ipc_req_t *req, uint8_t **out, size_t *out_len)
{
    msgpack_sbuffer sb;
    sb.size = 0;
    sb.alloc = req->origin_len + req->body_len + 40;
    sb.data = malloc(sb.alloc);
    if (!sb.data)
        return CAIRN_ENOMEM;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, sbuf_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint32(&pk, CAIRN_IPC_VERSION);
    pack_bin(&pk, req->origin, req->origin_len);
    msgpack_pack_uint64(&pk, req->req_id);
    msgpack_pack_uint64(&pk, req->kind);
    pack_bin(&pk, req->body, req->body_len);
    if (!sb.data)
        return CAIRN_ENOMEM;
    *out = (uint8_t *)sb.data;
    *out_len = sb.size;
    return 0;
}

int cairn_ipc_req_decode(const uint8_t *data, size_t len, cairn_ipc_req_t *req)
{
    memset(req, 0, sizeof *req);
    if (!data || len == 0)
        return CAIRN_EPROTO;
    rd_t r = {data, data + len};
    uint64_t n, ver;
    int rc;
    if ((rc = rd_array(&r, &n)) || n != 5 || (rc = rd_u64(&r, &ver)))
        return rc ? rc : CAIRN_EPROTO;
    if (ver != CAIRN_IPC_VERSION)
        return CAIRN_EVERSION;
    if ((rc = rd_bin(&r, &req->origin, &req->origin_len)) || (rc = rd_u64(&r, &req->req_id)) ||
        (rc = rd_u64(&r, &req->kind)) || (rc = rd_bin(&r, &req->body, &req->body_len)))
        return rc;
    if (r.p != r.end)
        return CAIRN_EPROTO;
    return 0;
}
