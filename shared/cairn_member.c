/* cairn_member.c - membership table, blob and configuration-entry context (formats in
 * cairn_member.h). */
#include "cairn_member.h"

#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "rpc.pb-c.h"

/* The operations of cairn_raft_conf_op_t (services/raftd/core/raft.h); shared/ does not
 * depend on the raft core, so the values are repeated here and checked in the unit test. */
enum { OP_ADD_VOTER = 1, OP_ADD_LEARNER = 2, OP_PROMOTE = 3, OP_REMOVE = 4, OP_UPDATE = 5 };

static void member_free(cairn_member_t *m)
{
    free(m->name);
    for (size_t i = 0; i < m->n_peer_urls; i++)
        free(m->peer_urls[i]);
    free(m->peer_urls);
    memset(m, 0, sizeof *m);
}

void cairn_members_clear(cairn_members_t *ms)
{
    if (!ms)
        return;
    for (size_t i = 0; i < ms->n; i++)
        member_free(&ms->v[i]);
    free(ms->v);
    memset(ms, 0, sizeof *ms);
}

static int set_urls(cairn_member_t *m, char *const *urls, size_t n)
{
    char **u = calloc(n ? n : 1, sizeof *u);
    if (!u)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!(u[i] = strdup(urls[i]))) {
            while (i--)
                free(u[i]);
            free(u);
            return CAIRN_ENOMEM;
        }
    for (size_t i = 0; i < m->n_peer_urls; i++)
        free(m->peer_urls[i]);
    free(m->peer_urls);
    m->peer_urls = u;
    m->n_peer_urls = n;
    return 0;
}

int cairn_members_put(cairn_members_t *ms, uint64_t id, const char *name, char *const *urls, size_t n, int learner)
{
    cairn_member_t *m = cairn_members_find(ms, id);
    if (!m) {
        cairn_member_t *nv = realloc(ms->v, (ms->n + 1) * sizeof *nv);
        if (!nv)
            return CAIRN_ENOMEM;
        ms->v = nv;
        m = &ms->v[ms->n];
        memset(m, 0, sizeof *m);
        m->id = id;
        if (!(m->name = strdup(""))) /* a name "" keeps the member "unstarted" until it speaks */
            return CAIRN_ENOMEM;
        ms->n++;
    }
    if (name && *name) {
        char *nn = strdup(name);
        if (!nn)
            return CAIRN_ENOMEM;
        free(m->name);
        m->name = nn;
    }
    m->learner = learner;
    return set_urls(m, urls, n);
}

int cairn_members_initial(cairn_members_t *ms, const cairn_config_t *cfg)
{
    memset(ms, 0, sizeof *ms);
    int existing = cfg->initial_cluster_state == CAIRN_CLUSTER_EXISTING;
    ms->cluster_id = existing ? 0 : cairn_config_cluster_id(cfg);
    for (size_t i = 0; i < cfg->n_members; i++) {
        if (existing && i == cfg->self)
            continue;
        const cairn_config_member_t *c = &cfg->members[i];
        int rc = cairn_members_put(ms, c->id, c->name, c->peer_urls.v, c->peer_urls.n, 0);
        if (rc) {
            cairn_members_clear(ms);
            return rc;
        }
    }
    return 0;
}

cairn_member_t *cairn_members_find(const cairn_members_t *ms, uint64_t id)
{
    for (size_t i = 0; i < ms->n; i++)
        if (ms->v[i].id == id)
            return &ms->v[i];
    return NULL;
}

cairn_member_t *cairn_members_find_url(const cairn_members_t *ms, char *const *urls, size_t n, uint64_t except_id)
{
    for (size_t i = 0; i < ms->n; i++) {
        if (ms->v[i].id == except_id)
            continue;
        for (size_t j = 0; j < ms->v[i].n_peer_urls; j++)
            for (size_t k = 0; k < n; k++)
                if (strcmp(ms->v[i].peer_urls[j], urls[k]) == 0)
                    return &ms->v[i];
    }
    return NULL;
}

int cairn_members_encode(const cairn_members_t *ms, uint8_t **blob, size_t *len)
{
    Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__MemberListResponse r = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    Etcdserverpb__Member *mv = calloc(ms->n ? ms->n : 1, sizeof *mv);
    Etcdserverpb__Member **mp = calloc(ms->n ? ms->n : 1, sizeof *mp);
    int rc = CAIRN_ENOMEM;
    if (!mv || !mp)
        goto out;
    hdr.cluster_id = ms->cluster_id;
    r.header = &hdr;
    for (size_t i = 0; i < ms->n; i++) {
        etcdserverpb__member__init(&mv[i]);
        mv[i].id = ms->v[i].id;
        mv[i].name = ms->v[i].name ? ms->v[i].name : (char *)"";
        mv[i].peerurls = ms->v[i].peer_urls;
        mv[i].n_peerurls = ms->v[i].n_peer_urls;
        mv[i].islearner = ms->v[i].learner != 0;
        mp[i] = &mv[i];
    }
    r.members = mp;
    r.n_members = ms->n;
    *len = etcdserverpb__member_list_response__get_packed_size(&r);
    if (!(*blob = malloc(*len ? *len : 1)))
        goto out;
    etcdserverpb__member_list_response__pack(&r, *blob);
    rc = 0;
out:
    free(mv);
    free(mp);
    return rc;
}

int cairn_members_decode(cairn_members_t *ms, const uint8_t *blob, size_t len)
{
    memset(ms, 0, sizeof *ms);
    Etcdserverpb__MemberListResponse *r = etcdserverpb__member_list_response__unpack(NULL, len, blob);
    if (!r)
        return CAIRN_EPROTO;
    int rc = 0;
    ms->cluster_id = r->header ? r->header->cluster_id : 0;
    for (size_t i = 0; i < r->n_members && rc == 0; i++) {
        const Etcdserverpb__Member *m = r->members[i];
        if (m->id == 0)
            rc = CAIRN_EPROTO;
        else
            rc = cairn_members_put(ms, m->id, m->name, m->peerurls, m->n_peerurls, m->islearner);
    }
    etcdserverpb__member_list_response__free_unpacked(r, NULL);
    if (rc)
        cairn_members_clear(ms);
    return rc;
}

int cairn_members_copy(cairn_members_t *dst, const cairn_members_t *src)
{
    memset(dst, 0, sizeof *dst);
    dst->cluster_id = src->cluster_id;
    for (size_t i = 0; i < src->n; i++) {
        const cairn_member_t *m = &src->v[i];
        int rc = cairn_members_put(dst, m->id, m->name, m->peer_urls, m->n_peer_urls, m->learner);
        if (rc) {
            cairn_members_clear(dst);
            return rc;
        }
    }
    return 0;
}

int cairn_members_apply(cairn_members_t *ms, int op, uint64_t node_id, const uint8_t *ctx, size_t ctx_len)
{
    cairn_members_t c = {0};
    const cairn_member_t *m = NULL;
    if (op == OP_ADD_VOTER || op == OP_ADD_LEARNER || op == OP_UPDATE) {
        int rc = cairn_members_decode(&c, ctx, ctx_len);
        if (rc)
            return rc;
        if (c.n != 1) {
            cairn_members_clear(&c);
            return CAIRN_EPROTO;
        }
        m = &c.v[0];
        /* a member that joined a running cluster learns the cluster ID here */
        if (!ms->cluster_id)
            ms->cluster_id = c.cluster_id;
    }
    int rc = 0;
    cairn_member_t *cur = cairn_members_find(ms, node_id);
    switch (op) {
    case OP_ADD_VOTER:
    case OP_ADD_LEARNER:
        rc = cairn_members_put(ms, node_id, m->name, m->peer_urls, m->n_peer_urls, op == OP_ADD_LEARNER);
        break;
    case OP_UPDATE:
        if (cur)
            rc = set_urls(cur, m->peer_urls, m->n_peer_urls);
        break;
    case OP_PROMOTE:
        if (cur)
            cur->learner = 0;
        break;
    case OP_REMOVE:
        if (cur) {
            member_free(cur);
            size_t k = (size_t)(cur - ms->v);
            memmove(&ms->v[k], &ms->v[k + 1], (ms->n - k - 1) * sizeof *ms->v);
            ms->n--;
        }
        break;
    default:
        rc = CAIRN_EPROTO;
    }
    cairn_members_clear(&c);
    return rc;
}

int cairn_member_ctx_encode(uint64_t cluster_id, uint64_t id, const char *name, char *const *peer_urls, size_t n,
                            int learner, uint8_t **ctx, size_t *len)
{
    cairn_member_t m = {.id = id, .name = (char *)(name ? name : ""), .peer_urls = (char **)peer_urls,
                        .n_peer_urls = n, .learner = learner};
    cairn_members_t one = {.cluster_id = cluster_id, .v = &m, .n = 1};
    return cairn_members_encode(&one, ctx, len);
}
