/* svc_cluster.c - etcd's Cluster service; see gw_internal.h.
 *
 * All of it is raftd's: it knows the members and what they advertise (MemberList), and it
 * checks and proposes configuration changes on the leader (Member{Add,Remove,Update,Promote}).
 * raftd answers with the response body; the header is added here, without a revision
 * (etcd's Cluster answers carry none).
 */
#include <stdlib.h>
#include <string.h>

#include "gw_internal.h"

/* The header gateway and raftd agree on for Cluster answers. */
static void cluster_header(cairn_gateway_t *g, Etcdserverpb__ResponseHeader *h)
{
    gw_fill_header(g, h);
    h->revision = 0;
}

static void reply_or_internal(cairn_gateway_t *g, gw_pending_t *p, uint8_t *buf, size_t n)
{
    if (buf)
        gw_reply(g, p->call, buf, n);
    else
        gw_fail_etcd(g, p, CAIRN_ETCD_INTERNAL);
    free(buf);
}

static void members_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    cluster_header(g, &h);
    uint8_t *buf = NULL;
    size_t n = 0;
    Etcdserverpb__MemberListResponse *r = etcdserverpb__member_list_response__unpack(NULL, len, body);
    if (r) {
        Etcdserverpb__ResponseHeader *old = r->header;
        r->header = &h;
        n = etcdserverpb__member_list_response__get_packed_size(r);
        if ((buf = malloc(n ? n : 1)))
            etcdserverpb__member_list_response__pack(r, buf);
        r->header = old;
        etcdserverpb__member_list_response__free_unpacked(r, NULL);
    }
    reply_or_internal(g, p, buf, n);
}

static const gw_answer_t answer_members = {.ok = members_ok};

static void member_change_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len,
                             const cairn_ipc_msg_t *m)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    cluster_header(g, &h);
    /* Every Member*Response has the header as field 1, and raftd leaves it out: append it
     * (a protobuf field may come in any order; a parser takes it wherever it is). */
    size_t hn = etcdserverpb__response_header__get_packed_size(&h), n = 0;
    uint8_t *buf = malloc(len + hn + 11);
    if (buf) {
        memcpy(buf, body, len);
        n = len;
        buf[n++] = 0x0a; /* field 1, length-delimited */
        for (size_t v = hn;; v >>= 7) {
            buf[n++] = (uint8_t)(v & 0x7f) | (v >= 0x80 ? 0x80 : 0);
            if (v < 0x80)
                break;
        }
        n += etcdserverpb__response_header__pack(&h, buf + n);
    }
    reply_or_internal(g, p, buf, n);
}

static const gw_answer_t answer_member_change = {.ok = member_change_ok};

static void do_member_list(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len,
                           const cairn_h2_meta_t *meta)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_MEMBERS};
    gw_ask(g, c->id, &answer_members, g->raftd, &m, meta, CAIRN_ETCD_NOT_CAPABLE);
}

/* The write methods; the row's arg is the operation (CAIRN_MEMBER_*, cairn_ipc.h). */
static void do_member_change(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len,
                             const cairn_h2_meta_t *meta)
{
    int op = c->method->arg;
    void *r = NULL;
    switch (op) { /* refuse what does not decode here, before it travels to the leader */
    case CAIRN_MEMBER_ADD: r = etcdserverpb__member_add_request__unpack(NULL, len, msg); break;
    case CAIRN_MEMBER_REMOVE: r = etcdserverpb__member_remove_request__unpack(NULL, len, msg); break;
    case CAIRN_MEMBER_UPDATE: r = etcdserverpb__member_update_request__unpack(NULL, len, msg); break;
    case CAIRN_MEMBER_PROMOTE: r = etcdserverpb__member_promote_request__unpack(NULL, len, msg); break;
    }
    if (!r) {
        gw_bad_request(g, c->id);
        return;
    }
    protobuf_c_message_free_unpacked(r, NULL);
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_MEMBER_CHANGE, .op = (uint64_t)op, .body = msg, .body_len = len};
    gw_ask(g, c->id, &answer_member_change, g->raftd, &m, meta, CAIRN_ETCD_NOT_CAPABLE);
}

/* clang-format off */
static const gw_method_t rows[] = {
    /* path                                 kind      handler           arg                   perm           json route */
    {"/etcdserverpb.Cluster/MemberList",    GW_UNARY, do_member_list,   0,                    GW_PERM_READ,  "/v3/cluster/member/list"},
    {"/etcdserverpb.Cluster/MemberAdd",     GW_UNARY, do_member_change, CAIRN_MEMBER_ADD,     GW_PERM_ADMIN, "/v3/cluster/member/add"},
    {"/etcdserverpb.Cluster/MemberRemove",  GW_UNARY, do_member_change, CAIRN_MEMBER_REMOVE,  GW_PERM_ADMIN, "/v3/cluster/member/remove"},
    {"/etcdserverpb.Cluster/MemberUpdate",  GW_UNARY, do_member_change, CAIRN_MEMBER_UPDATE,  GW_PERM_ADMIN, "/v3/cluster/member/update"},
    {"/etcdserverpb.Cluster/MemberPromote", GW_UNARY, do_member_change, CAIRN_MEMBER_PROMOTE, GW_PERM_ADMIN, "/v3/cluster/member/promote"},
};
/* clang-format on */

const gw_service_t gw_svc_cluster = GW_SERVICE("cluster", rows);
