/* Unit tests for the IPC codec (shared/cairn_ipc.c): every field of every type round-trips and
 * sits where cairn_ipc.h says on the wire, and every kind of malformed frame is rejected with an
 * error instead of being misread. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_ipc.h"

static void roundtrip(const cairn_ipc_msg_t *in, cairn_ipc_msg_t *out, uint8_t **buf)
{
    size_t len;
    cr_assert_eq(cairn_ipc_encode(in, buf, &len), 0);
    cr_assert_eq(cairn_ipc_decode(*buf, len, out), 0);
    cr_assert_eq(out->type, in->type);
}

Test(ipc, append_roundtrip_with_entries)
{
    cairn_ipc_entry_t ents[3] = {{5, 2, 0, (const uint8_t *)"abc", 3}, {6, 2, 1, NULL, 0},
                                 {7, 3, 0, (const uint8_t *)"\x00\xff", 2}};
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_APPEND, .seq = 99, .has_hs = 1, .term = 3, .vote = 1,
                         .commit = 4, .entries = ents, .n_entries = 3};
    cairn_ipc_msg_t d;
    uint8_t *buf;
    roundtrip(&m, &d, &buf);
    cr_assert_eq(d.seq, 99);
    cr_assert_eq(d.term, 3);
    cr_assert_eq(d.commit, 4);
    cr_assert_eq(d.n_entries, 3);
    cr_assert_eq(d.entries[0].index, 5);
    cr_assert_eq(d.entries[0].len, 3);
    cr_assert(memcmp(d.entries[0].data, "abc", 3) == 0);
    cr_assert_eq(d.entries[1].type, 1);
    cr_assert_eq(d.entries[1].len, 0);
    cr_assert_eq(d.entries[2].term, 3);
    cr_assert(memcmp(d.entries[2].data, "\x00\xff", 2) == 0);
    cairn_ipc_msg_release(&d);
    free(buf);
}

/* ---- every field of every type ---------------------------------------------------------
 * The fields each type carries, in wire order, written out here independently of the schema
 * table in cairn_ipc.c (they follow the comments in cairn_ipc.h). every_field_of_every_type
 * sets EVERY member of the message struct to a distinct value, encodes, and then checks
 *   - the frame is [version, type, one element per listed field, in this order, each holding
 *     the value that was set];
 *   - the decoded message equals the original on every listed field;
 *   - every member NOT listed decodes as zero (the codec carries nothing it should not).
 * So a field dropped from, added to, or moved in the schema, or a type added without a row
 * here, fails the test. */
typedef enum {
    X_END = 0, X_REQ_ID, X_SEQ, X_INDEX, X_TERM, X_VOTE, X_COMMIT, X_LEADER, X_BOOT_ID, X_SNAP_INDEX,
    X_SNAP_TERM, X_READ_INDEX, X_HAS_HS, X_APPLIED, X_DB_SIZE, X_DB_SIZE_IN_USE, X_REVISION,
    X_COMPACT_REV, X_CODE, X_MESSAGE, X_BODY, X_ENTRIES, X_CLUSTER_ID, X_RAFT_TYPE, X_FROM, X_TO,
    X_LOG_TERM, X_REJECT, X_REJECT_HINT, X_CONTEXT, X_LEARNER, X_FIRST, X_LAST, X_COMMIT_DURABLE, X_TARGET,
    X_OP, X_SNAP_ID, X_OFFSET, X_TOTAL, X_INSTALLED, X_FWD_ID, X_WANT_REPLY, X_URLS, X_NAME, X_VOTERS,
    X_LEARNERS, X_START_REV, X_END_REV, X_MORE, X_MAX_BYTES, X_KEY, X_RANGE_END, X_LEASE_ID, X_TTL, X_GRANTED_TTL, X_COUNT_
} fid_t;

typedef enum { XK_U64, XK_I64, XK_BIN, XK_ENTS, XK_IDS } xkind_t;

typedef struct {
    const char *name;
    xkind_t kind;
    size_t off, len_off;
} fdesc_t;

#define XU(id, m) [id] = {#m, XK_U64, offsetof(cairn_ipc_msg_t, m), 0}
#define XI(id, m) [id] = {#m, XK_I64, offsetof(cairn_ipc_msg_t, m), 0}
#define XB(id, m) [id] = {#m, XK_BIN, offsetof(cairn_ipc_msg_t, m), offsetof(cairn_ipc_msg_t, m##_len)}
static const fdesc_t g_fd[X_COUNT_] = {
    XU(X_REQ_ID, req_id), XU(X_SEQ, seq), XU(X_INDEX, index), XU(X_TERM, term), XU(X_VOTE, vote),
    XU(X_COMMIT, commit), XU(X_LEADER, leader), XU(X_BOOT_ID, boot_id), XU(X_SNAP_INDEX, snap_index),
    XU(X_SNAP_TERM, snap_term), XU(X_READ_INDEX, read_index), XU(X_HAS_HS, has_hs), XU(X_APPLIED, applied),
    XU(X_DB_SIZE, db_size), XU(X_DB_SIZE_IN_USE, db_size_in_use), XI(X_REVISION, revision),
    XI(X_COMPACT_REV, compact_rev), XI(X_CODE, code), XB(X_MESSAGE, message), XB(X_BODY, body),
    [X_ENTRIES] = {"entries", XK_ENTS, offsetof(cairn_ipc_msg_t, entries), offsetof(cairn_ipc_msg_t, n_entries)},
    XU(X_CLUSTER_ID, cluster_id), XU(X_RAFT_TYPE, raft_type), XU(X_FROM, from), XU(X_TO, to),
    XU(X_LOG_TERM, log_term), XU(X_REJECT, reject), XU(X_REJECT_HINT, reject_hint), XU(X_CONTEXT, context),
    XU(X_LEARNER, learner), XU(X_FIRST, first), XU(X_LAST, last), XU(X_COMMIT_DURABLE, commit_durable),
    XU(X_TARGET, target), XU(X_OP, op), XU(X_SNAP_ID, snap_id), XU(X_OFFSET, offset), XU(X_TOTAL, total),
    XU(X_INSTALLED, installed), XU(X_FWD_ID, fwd_id), XU(X_WANT_REPLY, want_reply), XB(X_URLS, urls),
    XB(X_NAME, name), XI(X_START_REV, start_rev), XI(X_END_REV, end_rev), XU(X_MORE, more),
    XU(X_MAX_BYTES, max_bytes), XB(X_KEY, key), XB(X_RANGE_END, range_end), XI(X_LEASE_ID, lease_id), XI(X_TTL, ttl),
    XI(X_GRANTED_TTL, granted_ttl),
    [X_VOTERS] = {"voters", XK_IDS, offsetof(cairn_ipc_msg_t, voters), offsetof(cairn_ipc_msg_t, n_voters)},
    [X_LEARNERS] = {"learners", XK_IDS, offsetof(cairn_ipc_msg_t, learners), offsetof(cairn_ipc_msg_t, n_learners)},
};

#define MAXF 16
static const fid_t g_expect[CAIRN_IPC_TYPE_MAX_][MAXF + 1] = {
    [CAIRN_IPC_PROPOSE] = {X_REQ_ID, X_BODY},
    [CAIRN_IPC_PROPOSE_FAIL] = {X_REQ_ID, X_CODE, X_MESSAGE},
    [CAIRN_IPC_READ_INDEX] = {X_REQ_ID},
    [CAIRN_IPC_READ_INDEX_RESP] = {X_REQ_ID, X_INDEX, X_CODE, X_MESSAGE},
    [CAIRN_IPC_LOAD] = {X_FIRST, X_SEQ},
    [CAIRN_IPC_LOAD_RESP] = {X_BOOT_ID, X_TERM, X_VOTE, X_COMMIT, X_SNAP_INDEX, X_SNAP_TERM, X_CLUSTER_ID, X_BODY,
                             X_ENTRIES, X_LAST, X_SEQ},
    [CAIRN_IPC_APPEND] = {X_BOOT_ID, X_SEQ, X_HAS_HS, X_TERM, X_VOTE, X_COMMIT, X_COMMIT_DURABLE, X_ENTRIES},
    [CAIRN_IPC_APPENDED] = {X_BOOT_ID, X_SEQ, X_INDEX, X_TERM, X_CODE, X_MESSAGE},
    [CAIRN_IPC_COMMIT] = {X_BOOT_ID, X_COMMIT, X_TERM, X_LEADER},
    [CAIRN_IPC_HELLO] = {X_BOOT_ID},
    [CAIRN_IPC_RANGE] = {X_REQ_ID, X_READ_INDEX, X_BODY},
    [CAIRN_IPC_RESULT] = {X_REQ_ID, X_CODE, X_MESSAGE, X_BODY},
    [CAIRN_IPC_STATUS] = {X_REQ_ID},
    [CAIRN_IPC_STATUS_RESP] = {X_REQ_ID, X_LEADER, X_TERM, X_INDEX, X_APPLIED, X_DB_SIZE, X_DB_SIZE_IN_USE,
                               X_REVISION, X_COMPACT_REV, X_CLUSTER_ID, X_LEARNER},
    [CAIRN_IPC_ERROR] = {X_REQ_ID, X_CODE, X_MESSAGE},
    [CAIRN_IPC_RAFT] = {X_CLUSTER_ID, X_RAFT_TYPE, X_FROM, X_TO, X_TERM, X_LOG_TERM, X_INDEX, X_COMMIT, X_REJECT,
                        X_REJECT_HINT, X_CONTEXT, X_SNAP_INDEX, X_SNAP_TERM, X_ENTRIES, X_VOTERS, X_LEARNERS},
    [CAIRN_IPC_MEMBERS] = {X_REQ_ID},
    [CAIRN_IPC_TRANSFER] = {X_REQ_ID, X_TARGET},
    [CAIRN_IPC_PROPOSALS_LOST] = {X_CODE, X_MESSAGE},
    [CAIRN_IPC_MEMBER_CHANGE] = {X_REQ_ID, X_OP, X_BODY},
    [CAIRN_IPC_SNAP_REQ] = {X_REQ_ID, X_SNAP_ID, X_OFFSET, X_SNAP_INDEX},
    [CAIRN_IPC_SNAP_CHUNK] = {X_REQ_ID, X_SNAP_ID, X_OFFSET, X_TOTAL, X_APPLIED, X_CODE, X_MESSAGE, X_BODY},
    [CAIRN_IPC_SNAP_RECV] = {X_SNAP_ID, X_OFFSET, X_TOTAL, X_SNAP_INDEX, X_SNAP_TERM, X_BODY},
    [CAIRN_IPC_SNAP_ACK] = {X_SNAP_ID, X_OFFSET, X_INSTALLED, X_SNAP_INDEX, X_SNAP_TERM, X_CODE, X_MESSAGE},
    [CAIRN_IPC_RESULT_PART] = {X_REQ_ID, X_OFFSET, X_TOTAL, X_BODY},
    [CAIRN_IPC_PEER_ATTRS] = {X_CLUSTER_ID, X_FROM, X_TO, X_WANT_REPLY, X_URLS, X_NAME},
    [CAIRN_IPC_PEER_CONF_REQ] = {X_CLUSTER_ID, X_FROM, X_TO, X_FWD_ID, X_OP, X_BODY},
    [CAIRN_IPC_PEER_CONF_RESP] = {X_CLUSTER_ID, X_FROM, X_TO, X_FWD_ID, X_CODE, X_MESSAGE, X_BODY},
    [CAIRN_IPC_PEER_SNAP_PULL] = {X_CLUSTER_ID, X_FROM, X_TO, X_SNAP_ID, X_OFFSET, X_SNAP_INDEX},
    [CAIRN_IPC_PEER_SNAP_DATA] = {X_CLUSTER_ID, X_FROM, X_TO, X_SNAP_ID, X_OFFSET, X_TOTAL, X_CODE, X_MESSAGE,
                                  X_BODY},
    [CAIRN_IPC_PEER_REMOVED] = {X_CLUSTER_ID, X_FROM, X_TO},
    [CAIRN_IPC_PEER_STOPPING] = {X_CLUSTER_ID, X_FROM, X_TO},
    [CAIRN_IPC_METRICS] = {X_REQ_ID},
    [CAIRN_IPC_EVENTS] = {X_START_REV, X_REVISION, X_MORE, X_BODY},
    [CAIRN_IPC_HISTORY] = {X_REQ_ID, X_START_REV, X_END_REV, X_KEY, X_RANGE_END, X_MAX_BYTES},
    [CAIRN_IPC_HISTORY_RESP] = {X_REQ_ID, X_CODE, X_MESSAGE, X_REVISION, X_COMPACT_REV, X_BODY},
    [CAIRN_IPC_LEASE_QUERY] = {X_REQ_ID, X_LEASE_ID, X_OP},
    [CAIRN_IPC_LEASE_READ] = {X_REQ_ID, X_BODY},
    [CAIRN_IPC_MAINT] = {X_REQ_ID, X_OP, X_SNAP_ID, X_OFFSET, X_BODY},
    [CAIRN_IPC_LEASE_RESP] = {X_REQ_ID, X_LEASE_ID, X_TTL, X_GRANTED_TTL, X_CODE, X_MESSAGE},
    [CAIRN_IPC_LEASE_APPLIED] = {X_BODY},
    [CAIRN_IPC_LEASE_LIST] = {X_REQ_ID, X_LEASE_ID},
    [CAIRN_IPC_LEASE_LIST_RESP] = {X_REQ_ID, X_LEASE_ID, X_MORE, X_BODY},
    [CAIRN_IPC_PEER_LEASE_QUERY] = {X_CLUSTER_ID, X_FROM, X_TO, X_FWD_ID, X_LEASE_ID, X_OP},
    [CAIRN_IPC_PEER_LEASE_RESP] = {X_CLUSTER_ID, X_FROM, X_TO, X_FWD_ID, X_LEASE_ID, X_TTL, X_GRANTED_TTL, X_CODE},
    [CAIRN_IPC_PEER_HASH_REQ] = {X_CLUSTER_ID, X_FROM, X_TO, X_FWD_ID, X_REVISION},
    [CAIRN_IPC_PEER_HASH_RESP] = {X_CLUSTER_ID, X_FROM, X_TO, X_FWD_ID, X_CODE, X_MESSAGE, X_BODY},
};

static const uint64_t g_voters[3] = {0x1111000000000001ull, 0x2222000000000002ull, 7};
static const uint64_t g_learners[2] = {0x3333000000000003ull, 0};
static const cairn_ipc_entry_t g_ents[3] = {{0x100000005ull, 0x200000002ull, 0, (const uint8_t *)"abc", 3},
                                            {0x100000006ull, 0x200000002ull, 1, NULL, 0},
                                            {0x100000007ull, 0x200000003ull, 2, (const uint8_t *)"\x00\xff\x7f", 3}};

/* Distinct, large values (above 2^32, so a field narrowed on the wire shows): */
static uint64_t uval(int id) { return 0x0100000000000000ull * (uint64_t)id + 0x10001ull * (uint64_t)id + 3; }
static int64_t ival(int id) { return -(int64_t)(0x10000000000ll * id + id); }
static char g_bins[X_COUNT_][24];

static void fill_all(cairn_ipc_msg_t *m, int type)
{
    memset(m, 0, sizeof *m);
    m->type = (uint8_t)type;
    for (int id = 1; id < X_COUNT_; id++) {
        const fdesc_t *d = &g_fd[id];
        char *p = (char *)m + d->off;
        switch (d->kind) {
        case XK_U64: *(uint64_t *)p = uval(id); break;
        case XK_I64: *(int64_t *)p = ival(id); break;
        case XK_BIN:
            snprintf(g_bins[id], sizeof g_bins[id], "%s-of-type-%d", d->name, type);
            *(const uint8_t **)p = (const uint8_t *)g_bins[id];
            *(size_t *)((char *)m + d->len_off) = strlen(g_bins[id]);
            break;
        case XK_ENTS:
            m->entries = g_ents;
            m->n_entries = 3;
            break;
        case XK_IDS: /* voters get 3, learners 2: a swap of the two shows */
            *(const uint64_t **)p = id == X_VOTERS ? g_voters : g_learners;
            *(size_t *)((char *)m + d->len_off) = id == X_VOTERS ? 3 : 2;
            break;
        }
    }
}

static int carried(int type, int id)
{
    for (int k = 0; k < MAXF && g_expect[type][k] != X_END; k++)
        if ((int)g_expect[type][k] == id)
            return 1;
    return 0;
}

/* the wire element for field id of the original message in */
static void check_wire_elem(const msgpack_object *o, const cairn_ipc_msg_t *in, int id, const char *tn)
{
    const fdesc_t *d = &g_fd[id];
    const char *p = (const char *)in + d->off;
    switch (d->kind) {
    case XK_U64:
        cr_assert_eq(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER, "%s.%s: not a uint on the wire", tn, d->name);
        cr_assert_eq(o->via.u64, *(const uint64_t *)p, "%s.%s: wrong value on the wire", tn, d->name);
        break;
    case XK_I64:
        cr_assert_eq(o->type, MSGPACK_OBJECT_NEGATIVE_INTEGER, "%s.%s: not an int on the wire", tn, d->name);
        cr_assert_eq(o->via.i64, *(const int64_t *)p, "%s.%s: wrong value on the wire", tn, d->name);
        break;
    case XK_BIN: {
        size_t n = *(const size_t *)((const char *)in + d->len_off);
        cr_assert(o->type == MSGPACK_OBJECT_BIN || o->type == MSGPACK_OBJECT_STR, "%s.%s: not bytes", tn, d->name);
        cr_assert_eq(o->via.bin.size, n, "%s.%s: wrong length on the wire", tn, d->name);
        cr_assert(memcmp(o->via.bin.ptr, *(const uint8_t *const *)p, n) == 0, "%s.%s: wrong bytes", tn, d->name);
        break;
    }
    case XK_ENTS:
        cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY, "%s.entries: not an array", tn);
        cr_assert_eq(o->via.array.size, in->n_entries, "%s.entries: wrong count", tn);
        for (size_t e = 0; e < in->n_entries; e++) {
            const msgpack_object *eo = &o->via.array.ptr[e];
            cr_assert(eo->type == MSGPACK_OBJECT_ARRAY && eo->via.array.size == 4, "%s.entries[%zu]", tn, e);
            cr_assert_eq(eo->via.array.ptr[0].via.u64, in->entries[e].index, "%s.entries[%zu].index", tn, e);
            cr_assert_eq(eo->via.array.ptr[1].via.u64, in->entries[e].term, "%s.entries[%zu].term", tn, e);
            cr_assert_eq(eo->via.array.ptr[2].via.u64, in->entries[e].type, "%s.entries[%zu].type", tn, e);
            cr_assert_eq(eo->via.array.ptr[3].via.bin.size, in->entries[e].len, "%s.entries[%zu].len", tn, e);
        }
        break;
    case XK_IDS: {
        const uint64_t *ids = *(const uint64_t *const *)p;
        size_t n = *(const size_t *)((const char *)in + d->len_off);
        cr_assert_eq(o->type, MSGPACK_OBJECT_ARRAY, "%s.%s: not an array", tn, d->name);
        cr_assert_eq(o->via.array.size, n, "%s.%s: wrong count", tn, d->name);
        for (size_t e = 0; e < n; e++)
            cr_assert_eq(o->via.array.ptr[e].via.u64, ids[e], "%s.%s[%zu]", tn, d->name, e);
        break;
    }
    }
}

/* decoded field id equals the original (carried) or is zero (not carried) */
static void check_decoded(const cairn_ipc_msg_t *in, const cairn_ipc_msg_t *out, int id, int carry, const char *tn)
{
    const fdesc_t *d = &g_fd[id];
    const char *pi = (const char *)in + d->off, *po = (const char *)out + d->off;
    const char *what = carry ? "lost or changed in the round trip" : "decoded although the type does not carry it";
    switch (d->kind) {
    case XK_U64:
        cr_assert_eq(*(const uint64_t *)po, carry ? *(const uint64_t *)pi : 0, "%s.%s %s", tn, d->name, what);
        break;
    case XK_I64:
        cr_assert_eq(*(const int64_t *)po, carry ? *(const int64_t *)pi : 0, "%s.%s %s", tn, d->name, what);
        break;
    case XK_BIN: {
        size_t ni = *(const size_t *)((const char *)in + d->len_off);
        size_t no = *(const size_t *)((const char *)out + d->len_off);
        const uint8_t *bo = *(const uint8_t *const *)po;
        if (!carry) {
            cr_assert(no == 0 && bo == NULL, "%s.%s %s", tn, d->name, what);
            break;
        }
        cr_assert_eq(no, ni, "%s.%s %s", tn, d->name, what);
        cr_assert(ni == 0 || memcmp(bo, *(const uint8_t *const *)pi, ni) == 0, "%s.%s %s", tn, d->name, what);
        break;
    }
    case XK_ENTS:
        if (!carry) {
            cr_assert(out->n_entries == 0 && out->entries == NULL, "%s.entries %s", tn, what);
            break;
        }
        cr_assert_eq(out->n_entries, in->n_entries, "%s.entries %s", tn, what);
        for (size_t e = 0; e < in->n_entries; e++) {
            const cairn_ipc_entry_t *a = &in->entries[e], *b = &out->entries[e];
            cr_assert(a->index == b->index && a->term == b->term && a->type == b->type && a->len == b->len &&
                          (a->len == 0 || memcmp(a->data, b->data, a->len) == 0),
                      "%s.entries[%zu] %s", tn, e, what);
        }
        break;
    case XK_IDS: {
        size_t ni = *(const size_t *)((const char *)in + d->len_off);
        size_t no = *(const size_t *)((const char *)out + d->len_off);
        const uint64_t *io = *(const uint64_t *const *)po, *ii = *(const uint64_t *const *)pi;
        if (!carry) {
            cr_assert(no == 0 && io == NULL, "%s.%s %s", tn, d->name, what);
            break;
        }
        cr_assert_eq(no, ni, "%s.%s %s", tn, d->name, what);
        for (size_t e = 0; e < ni; e++)
            cr_assert_eq(io[e], ii[e], "%s.%s[%zu] %s", tn, d->name, e, what);
        break;
    }
    }
}

Test(ipc, every_field_of_every_type)
{
    for (int t = 1; t < CAIRN_IPC_TYPE_MAX_; t++) {
        const char *tn = cairn_ipc_type_name(t);
        cr_assert_str_neq(tn, "unknown", "type %d has no name", t);
        cr_assert_neq(g_expect[t][0], X_END, "type %d (%s) has no row in this test's field table", t, tn);
        size_t nf = 0;
        while (nf < MAXF && g_expect[t][nf] != X_END)
            nf++;

        cairn_ipc_msg_t m;
        fill_all(&m, t);
        uint8_t *buf;
        size_t len;
        cr_assert_eq(cairn_ipc_encode(&m, &buf, &len), 0, "%s: encode", tn);

        /* the frame, element by element */
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        cr_assert_eq(msgpack_unpack_next(&up, (const char *)buf, len, &off), MSGPACK_UNPACK_SUCCESS, "%s", tn);
        cr_assert_eq(off, len, "%s: bytes after the frame", tn);
        const msgpack_object *a = &up.data;
        cr_assert_eq(a->type, MSGPACK_OBJECT_ARRAY, "%s", tn);
        cr_assert_eq(a->via.array.size, 2 + nf, "%s: %u elements on the wire, expected 2 + %zu fields", tn,
                     a->via.array.size, nf);
        cr_assert_eq(a->via.array.ptr[0].via.u64, CAIRN_IPC_VERSION, "%s: version", tn);
        cr_assert_eq(a->via.array.ptr[1].via.u64, (uint64_t)t, "%s: type", tn);
        for (size_t k = 0; k < nf; k++)
            check_wire_elem(&a->via.array.ptr[2 + k], &m, g_expect[t][k], tn);
        msgpack_unpacked_destroy(&up);

        /* the decoded message */
        cairn_ipc_msg_t d;
        cr_assert_eq(cairn_ipc_decode(buf, len, &d), 0, "%s: decode", tn);
        cr_assert_eq(d.type, t);
        for (int id = 1; id < X_COUNT_; id++)
            check_decoded(&m, &d, id, carried(t, id), tn);
        cairn_ipc_msg_release(&d);
        free(buf);
    }
}

/* The same with every value at the edge of its range (0, UINT64_MAX, INT64_MIN/MAX, empty bins
 * and no entries): nothing is lost to a narrower encoding or to nil. */
Test(ipc, every_type_roundtrips_extreme_values)
{
    for (int t = 1; t < CAIRN_IPC_TYPE_MAX_; t++) {
        for (int variant = 0; variant < 3; variant++) {
            cairn_ipc_msg_t m;
            memset(&m, 0, sizeof m);
            m.type = (uint8_t)t;
            for (int id = 1; id < X_COUNT_; id++) {
                const fdesc_t *fd = &g_fd[id];
                char *p = (char *)&m + fd->off;
                if (fd->kind == XK_U64)
                    *(uint64_t *)p = variant == 0 ? 0 : variant == 1 ? UINT64_MAX : 0x7f;
                else if (fd->kind == XK_I64)
                    *(int64_t *)p = variant == 0 ? INT64_MIN : variant == 1 ? INT64_MAX : -32;
            }
            uint8_t *buf;
            size_t len;
            cr_assert_eq(cairn_ipc_encode(&m, &buf, &len), 0);
            cairn_ipc_msg_t d;
            cr_assert_eq(cairn_ipc_decode(buf, len, &d), 0, "%s variant %d", cairn_ipc_type_name(t), variant);
            for (int id = 1; id < X_COUNT_; id++)
                check_decoded(&m, &d, id, carried(t, id), cairn_ipc_type_name(t));
            cairn_ipc_msg_release(&d);
            free(buf);
        }
    }
}

Test(ipc, result_fields_survive)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RESULT, .req_id = 42, .code = 11};
    cairn_ipc_set_message(&m, "etcdserver: mvcc: required revision has been compacted");
    m.body = (const uint8_t *)"\x0a\x00";
    m.body_len = 2;
    cairn_ipc_msg_t d;
    uint8_t *buf;
    roundtrip(&m, &d, &buf);
    cr_assert_eq(d.req_id, 42);
    cr_assert_eq(d.code, 11);
    cr_assert_eq(d.message_len, strlen("etcdserver: mvcc: required revision has been compacted"));
    cr_assert(memcmp(d.body, "\x0a\x00", 2) == 0);
    cairn_ipc_msg_release(&d);
    free(buf);
}

Test(ipc, rejects_malformed)
{
    cairn_ipc_msg_t d;
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"", 0, &d), CAIRN_EPROTO);
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\xc1", 1, &d), CAIRN_EPROTO); /* never-used byte */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x92\x02\x01", 3, &d), CAIRN_EVERSION);
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x92\x01\x7f", 3, &d), CAIRN_EUNKNOWN_MSG);
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x92\x01\x00", 3, &d), CAIRN_EUNKNOWN_MSG);
    /* STATUS with a missing field */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x92\x01\x0d", 3, &d), CAIRN_EPROTO);
    /* STATUS whose req_id is a string */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x93\x01\x0d\xa1x", 5, &d), CAIRN_EPROTO);
    /* STATUS with trailing garbage */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x93\x01\x0d\x05\x00", 5, &d), CAIRN_EPROTO);
    /* negative where unsigned expected */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x93\x01\x0d\xff", 4, &d), CAIRN_EPROTO);
    /* APPEND claiming 2^32-1 entries in a tiny frame: no huge allocation, just an error */
    const uint8_t huge[] = {0x98, 1, 7, 1, 0, 1, 1, 1, 0xdd, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(cairn_ipc_decode(huge, sizeof huge, &d), CAIRN_EPROTO);
    /* bin whose length runs past the end */
    const uint8_t bin[] = {0x94, 1, 1, 5, 0xc6, 0, 0, 1, 0, 'x'};
    cr_assert_eq(cairn_ipc_decode(bin, sizeof bin, &d), CAIRN_EPROTO);
}

Test(ipc, every_truncation_of_a_valid_frame_is_rejected)
{
    cairn_ipc_entry_t ents[2] = {{5, 2, 0, (const uint8_t *)"abcdef", 6}, {6, 2, 1, (const uint8_t *)"z", 1}};
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LOAD_RESP, .boot_id = 77, .term = 300, .entries = ents, .n_entries = 2};
    uint8_t *buf;
    size_t len;
    cr_assert_eq(cairn_ipc_encode(&m, &buf, &len), 0);
    for (size_t cut = 0; cut < len; cut++) {
        cairn_ipc_msg_t d;
        int rc = cairn_ipc_decode(buf, cut, &d);
        cr_assert_lt(rc, 0, "prefix of %zu bytes accepted", cut);
    }
    /* random byte flips never crash (ASan would catch a bad read) */
    srand(7);
    for (int i = 0; i < 2000; i++) {
        uint8_t *c = malloc(len);
        memcpy(c, buf, len);
        c[rand() % len] ^= (uint8_t)(1 + rand() % 255);
        cairn_ipc_msg_t d;
        if (cairn_ipc_decode(c, len, &d) == 0)
            cairn_ipc_msg_release(&d);
        free(c);
    }
    free(buf);
}

Test(ipc, raft_message_roundtrip)
{
    cairn_ipc_entry_t ents[2] = {{11, 4, 0, (const uint8_t *)"put", 3}, {12, 4, 2, (const uint8_t *)"\x01", 1}};
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RAFT, .cluster_id = 0xdeadbeefcafef00dull, .raft_type = 1, .from = 7,
                         .to = 9, .term = 4, .log_term = 3, .index = 10, .commit = 9, .reject = 1, .reject_hint = 5,
                         .context = 77, .snap_index = 2, .snap_term = 1, .entries = ents, .n_entries = 2};
    cairn_ipc_msg_t d;
    uint8_t *buf;
    roundtrip(&m, &d, &buf);
    cr_assert_eq(d.cluster_id, 0xdeadbeefcafef00dull);
    cr_assert_eq(d.from, 7);
    cr_assert_eq(d.to, 9);
    cr_assert_eq(d.log_term, 3);
    cr_assert_eq(d.reject_hint, 5);
    cr_assert_eq(d.context, 77);
    cr_assert_eq(d.snap_term, 1);
    cr_assert_eq(d.n_entries, 2);
    cr_assert_eq(d.entries[1].type, 2);
    cairn_ipc_msg_release(&d);
    free(buf);
}

Test(ipc, request_envelope)
{
    cairn_ipc_req_t r = {(const uint8_t *)"gw-1", 4, 12345, 3, (const uint8_t *)"\x0a\x01k", 3};
    uint8_t *buf;
    size_t len;
    cr_assert_eq(cairn_ipc_req_encode(&r, &buf, &len), 0);
    cairn_ipc_req_t d;
    cr_assert_eq(cairn_ipc_req_decode(buf, len, &d), 0);
    cr_assert_eq(d.origin_len, 4);
    cr_assert(memcmp(d.origin, "gw-1", 4) == 0);
    cr_assert_eq(d.req_id, 12345);
    cr_assert_eq(d.kind, 3);
    cr_assert_eq(d.body_len, 3);
    cr_assert_eq(cairn_ipc_req_decode(buf, len - 1, &d), CAIRN_EPROTO);
    free(buf);
}
