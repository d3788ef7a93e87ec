/* membership.c - the member list (MEMBERS, etcd's MemberList) and membership changes
 * (MemberAdd/Remove/Update/Promote): checked against etcd's rules and proposed on the leader,
 * one at a time (Raft thesis §4.1), answered when the entry commits; a follower forwards them to
 * the leader over the peer link (PEER_CONF_REQ/RESP) and relays the answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_url.h"
#include "cairn_zmq.h"
#include "raftd.h"
#include "rpc.pb-c.h"

/* The membership as etcd shows it: the core's voters and learners (the last configuration
 * entry of the log, thesis §4.1), sorted by ID as etcd sorts them, with the names and peer URLs
 * the log gave them and the client URLs each member advertises over the peer link. */
typedef struct {
    Etcdserverpb__Member *ms, **mp;
    char **bufs, ***split;
    size_t n;
} mlist_t;

static void mlist_free(mlist_t *l)
{
    for (size_t i = 0; i < l->n && l->bufs && l->split; i++) {
        free(l->bufs[i]);
        free(l->split[i]);
    }
    free(l->ms);
    free(l->mp);
    free(l->bufs);
    free(l->split);
    memset(l, 0, sizeof *l);
}

static int cmp_member(const void *a, const void *b)
{
    const Etcdserverpb__Member *x = *(Etcdserverpb__Member *const *)a, *y = *(Etcdserverpb__Member *const *)b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static char *const no_urls[1];

static int mlist_build(raftd_t *r, mlist_t *l)
{
    memset(l, 0, sizeof *l);
    const uint64_t *v = NULL, *lr = NULL;
    size_t nv = 0, nl = 0;
    if (r->raft) {
        nv = cairn_raft_voters(r->raft, &v);
        nl = cairn_raft_learners(r->raft, &lr);
    }
    size_t n = nv + nl, cap = n ? n : 1;
    l->ms = calloc(cap, sizeof *l->ms);
    l->mp = calloc(cap, sizeof *l->mp);
    l->bufs = calloc(cap, sizeof *l->bufs);
    l->split = calloc(cap, sizeof *l->split);
    if (!l->ms || !l->mp || !l->bufs || !l->split) {
        mlist_free(l);
        return CAIRN_ENOMEM;
    }
    uint64_t self = cairn_config_member_id(r->cfg);
    for (size_t i = 0; i < n; i++) {
        Etcdserverpb__Member *m = &l->ms[i];
        etcdserverpb__member__init(m);
        m->id = i < nv ? v[i] : lr[i - nv];
        m->islearner = i >= nv;
        const cairn_member_t *meta = cairn_members_find(&r->members, m->id);
        m->name = meta && meta->name ? meta->name : (char *)"";
        m->peerurls = meta ? meta->peer_urls : (char **)no_urls;
        m->n_peerurls = meta ? meta->n_peer_urls : 0;
        if (m->id == self) {
            m->name = r->cfg->name;
            m->clienturls = r->cfg->advertise_client_urls.v;
            m->n_clienturls = r->cfg->advertise_client_urls.n;
        } else {
            peer_t *p = raftd_find_peer(r, m->id);
            if (p && p->name && *p->name)
                m->name = p->name; /* a member added at runtime names itself once it runs */
            if (p && p->client_urls && (l->bufs[i] = strdup(p->client_urls))) {
                size_t cnt = 1;
                for (char *c = l->bufs[i]; *c; c++)
                    cnt += *c == ',';
                l->split[i] = calloc(cnt, sizeof(char *));
                size_t k = 0;
                char *save = NULL;
                for (char *tok = strtok_r(l->bufs[i], ",", &save); tok && l->split[i] && k < cnt;
                     tok = strtok_r(NULL, ",", &save))
                    l->split[i][k++] = tok;
                m->clienturls = l->split[i];
                m->n_clienturls = l->split[i] ? k : 0;
            }
        }
        l->mp[i] = m;
    }
    l->n = n;
    qsort(l->mp, n, sizeof *l->mp, cmp_member);
    return 0;
}

void raftd_answer_members(raftd_t *r, const uint8_t *ident, size_t ident_len, uint64_t req_id)
{
    mlist_t l;
    if (mlist_build(r, &l) != 0)
        return;
    Etcdserverpb__MemberListResponse resp = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    resp.members = l.mp;
    resp.n_members = l.n;
    size_t len = etcdserverpb__member_list_response__get_packed_size(&resp);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        etcdserverpb__member_list_response__pack(&resp, buf);
        raftd_answer(r, ident, ident_len, req_id, CAIRN_GRPC_OK, NULL, buf, len);
        free(buf);
    }
    mlist_free(&l);
}

/* ------------------------------------------------------------------ membership changes */

void raftd_conf_answer(raftd_t *r, const conf_origin_t *o, int code, const char *msg, const uint8_t *body,
                       size_t len)
{
    if (o->member) {
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_CONF_RESP, .fwd_id = o->fwd_id, .code = code,
                             .body = body, .body_len = body ? len : 0};
        cairn_ipc_set_message(&m, msg);
        raftd_send_peer_msg(r, o->member, &m);
    } else {
        raftd_answer(r, o->ident, o->ident_len, o->req_id, code, code ? msg : NULL, body, len);
    }
}

static void conf_refuse(raftd_t *r, const conf_origin_t *o, cairn_etcd_err_t e)
{
    raftd_conf_answer(r, o, cairn_etcd_err_code(e), cairn_etcd_err_text(e), NULL, 0);
}

/* etcd checks MemberAdd/MemberUpdate peer URLs with types.NewURLs (cairn_url.h), and the
 * host must be one the other members can dial. 1: a usable peer URL; 0: not a URL etcd would
 * take, or unix:// (raftd's peer transport is TCP); -1: https:// or unixs://, which would need
 * peer TLS (refused as at start: a member added with it could never be started, and would
 * count toward the quorum meanwhile). */
static int valid_peer_url(const char *text)
{
    cairn_url_t u;
    if (cairn_url_text_is_tls(text))
        return -1;
    if (cairn_url_parse(&u, text, strlen(text), CAIRN_URL_NEED_HOST, NULL, 0) < 0)
        return 0;
    return u.scheme == CAIRN_URL_HTTP;
}

/* etcd's "started" members for its strict reconfiguration check (--strict-reconfig-check,
 * on by default): here, members heard from within two election timeouts, and this one. */
int raftd_member_started(raftd_t *r, uint64_t id)
{
    if (id == cairn_config_member_id(r->cfg))
        return 1;
    peer_t *p = raftd_find_peer(r, id);
    return p && !p->stopping && p->last_heard && cairn_now_ms() - p->last_heard < 2 * r->cfg->election_ms;
}

/* etcd's IsReadyToAddVotingMember / IsReadyToRemoveVotingMember: the change must leave a
 * quorum of started voters. */
static int ready_for(raftd_t *r, uint64_t adding, uint64_t removing)
{
    const uint64_t *v;
    size_t nv = cairn_raft_voters(r->raft, &v), nmembers = 0, nstarted = 0;
    for (size_t i = 0; i < nv; i++) {
        if (v[i] == removing)
            continue;
        nmembers++;
        nstarted += raftd_member_started(r, v[i]) != 0;
    }
    if (adding) {
        nmembers++;
        if (nstarted == 1 && nmembers == 2)
            return 1; /* growing a single member */
    }
    return nstarted >= nmembers / 2 + 1;
}

void raftd_conf_begin(raftd_t *r, int op, const uint8_t *body, size_t len, const conf_origin_t *origin)
{
    uint64_t self = cairn_config_member_id(r->cfg);
    if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER) {
        uint64_t leader = r->raft ? cairn_raft_leader(r->raft) : 0;
        if (!leader || leader == self || origin->member) {
            conf_refuse(r, origin, leader ? CAIRN_ETCD_LEADER_CHANGED : CAIRN_ETCD_NO_LEADER);
            return;
        }
        /* the core changes membership on the leader only: forward, and answer when it does */
        conf_origin_t *o = malloc(sizeof *o);
        if (!o) {
            conf_refuse(r, origin, CAIRN_ETCD_TOO_MANY_REQUESTS);
            return;
        }
        *o = *origin;
        o->at = cairn_now_ms();
        uint64_t id = ++r->next_fwd;
        cairn_u64map_put(r->fwd, id, o);
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_CONF_REQ, .fwd_id = id, .op = (uint64_t)op, .body = body,
                             .body_len = len};
        raftd_send_peer_msg(r, leader, &m);
        return;
    }
    if (r->conf.active) {
        conf_refuse(r, origin, CAIRN_ETCD_TIMEOUT_LEADER_FAIL);
        return;
    }
    int code = 0;
    const char *msg = NULL;
    int rop = 0;
    uint64_t id = 0;
    uint8_t *ctx = NULL;
    size_t ctx_len = 0;
    Etcdserverpb__MemberAddRequest *add = NULL;
    Etcdserverpb__MemberRemoveRequest *rm = NULL;
    Etcdserverpb__MemberUpdateRequest *up = NULL;
    Etcdserverpb__MemberPromoteRequest *pr = NULL;
    const uint64_t *ids;
    size_t nv = cairn_raft_voters(r->raft, &ids);
    int is_voter = 0, is_learner = 0, vu;
    switch (op) {
    case CAIRN_MEMBER_ADD:
        if (!(add = etcdserverpb__member_add_request__unpack(NULL, len, body))) {
            msg = cairn_etcd_err(CAIRN_ETCD_BAD_PEER_URLS, &code);
            break;
        }
        for (size_t i = 0; i < add->n_peerurls && !code; i++)
            if ((vu = valid_peer_url(add->peerurls[i])) != 1)
                msg = cairn_etcd_err(vu < 0 ? CAIRN_ETCD_PEER_TLS_REFUSED : CAIRN_ETCD_BAD_PEER_URLS, &code);
        if (code)
            break;
        if (!add->n_peerurls) {
            msg = cairn_etcd_err(CAIRN_ETCD_BAD_PEER_URLS, &code);
            break;
        }
        /* the ID a member computes for itself from --initial-cluster (etcd hashes the time in
         * as well; we do not, so that the new member knows its ID without asking) */
        id = cairn_config_compute_member_id((const char *const *)add->peerurls, add->n_peerurls,
                                            r->cfg->initial_cluster_token, NULL);
        {
            const uint64_t *ls;
            size_t nl = cairn_raft_learners(r->raft, &ls);
            /* The peer URLs first: etcd checks the ID first, but its IDs hash the time in, so
             * for URLs already in use it answers this unless both adds fall in one second;
             * ours are the same for the same URLs every time. Metadata of removed members
             * stays behind: only a current member's URL counts. */
            const cairn_member_t *other = cairn_members_find_url(&r->members, add->peerurls, add->n_peerurls, 0);
            if (other && (id_in(ids, nv, other->id) || id_in(ls, nl, other->id))) {
                msg = cairn_etcd_err(CAIRN_ETCD_PEER_URL_EXISTS, &code);
                break;
            }
            if (id_in(ids, nv, id) || id_in(ls, nl, id)) {
                msg = cairn_etcd_err(CAIRN_ETCD_MEMBER_EXISTS, &code);
                break;
            }
            if (add->islearner && nl >= 1) {
                msg = cairn_etcd_err(CAIRN_ETCD_TOO_MANY_LEARNERS, &code);
                break;
            }
        }
        if (!add->islearner && !ready_for(r, id, 0)) {
            msg = cairn_etcd_err(CAIRN_ETCD_NOT_ENOUGH_STARTED, &code);
            break;
        }
        rop = add->islearner ? CAIRN_RAFT_CONF_ADD_LEARNER : CAIRN_RAFT_CONF_ADD_VOTER;
        if (cairn_member_ctx_encode(r->cluster_id, id, "", add->peerurls, add->n_peerurls, add->islearner, &ctx,
                                    &ctx_len))
            msg = cairn_etcd_err(CAIRN_ETCD_TOO_MANY_REQUESTS, &code);
        break;
    case CAIRN_MEMBER_REMOVE:
    case CAIRN_MEMBER_PROMOTE:
    case CAIRN_MEMBER_UPDATE: {
        if (op == CAIRN_MEMBER_REMOVE && (rm = etcdserverpb__member_remove_request__unpack(NULL, len, body)))
            id = rm->id;
        else if (op == CAIRN_MEMBER_PROMOTE && (pr = etcdserverpb__member_promote_request__unpack(NULL, len, body)))
            id = pr->id;
        else if (op == CAIRN_MEMBER_UPDATE && (up = etcdserverpb__member_update_request__unpack(NULL, len, body)))
            id = up->id;
        const uint64_t *ls;
        size_t nl = cairn_raft_learners(r->raft, &ls);
        is_voter = id_in(ids, nv, id);
        is_learner = id_in(ls, nl, id);
        if (!id || (!is_voter && !is_learner)) {
            msg = cairn_etcd_err(CAIRN_ETCD_MEMBER_NOT_FOUND, &code);
            break;
        }
        if (op == CAIRN_MEMBER_REMOVE) {
            if (is_voter && !ready_for(r, 0, id)) {
                msg = cairn_etcd_err(CAIRN_ETCD_NOT_ENOUGH_STARTED, &code);
                break;
            }
            rop = CAIRN_RAFT_CONF_REMOVE;
        } else if (op == CAIRN_MEMBER_PROMOTE) {
            if (!is_learner) {
                msg = cairn_etcd_err(CAIRN_ETCD_MEMBER_NOT_LEARNER, &code);
                break;
            }
            if (!ready_for(r, id, 0)) {
                msg = cairn_etcd_err(CAIRN_ETCD_NOT_ENOUGH_STARTED, &code);
                break;
            }
            rop = CAIRN_RAFT_CONF_PROMOTE;
        } else {
            for (size_t i = 0; i < up->n_peerurls && !code; i++)
                if ((vu = valid_peer_url(up->peerurls[i])) != 1)
                    msg = cairn_etcd_err(vu < 0 ? CAIRN_ETCD_PEER_TLS_REFUSED : CAIRN_ETCD_BAD_PEER_URLS, &code);
            if (!code && !up->n_peerurls)
                msg = cairn_etcd_err(CAIRN_ETCD_BAD_PEER_URLS, &code);
            if (!code && cairn_members_find_url(&r->members, up->peerurls, up->n_peerurls, id)) {
                const cairn_member_t *other = cairn_members_find_url(&r->members, up->peerurls, up->n_peerurls, id);
                if (id_in(ids, nv, other->id) || id_in(ls, nl, other->id))
                    msg = cairn_etcd_err(CAIRN_ETCD_PEER_URL_EXISTS, &code);
            }
            if (code)
                break;
            const cairn_member_t *cur = cairn_members_find(&r->members, id);
            rop = CAIRN_RAFT_CONF_UPDATE;
            if (cairn_member_ctx_encode(r->cluster_id, id, cur ? cur->name : "", up->peerurls, up->n_peerurls,
                                        is_learner, &ctx, &ctx_len))
                msg = cairn_etcd_err(CAIRN_ETCD_TOO_MANY_REQUESTS, &code);
        }
        break;
    }
    default:
        code = CAIRN_GRPC_UNIMPLEMENTED, msg = "unknown membership operation";
    }
    if (!code && (op == CAIRN_MEMBER_REMOVE ? !rm : op == CAIRN_MEMBER_PROMOTE ? !pr : op == CAIRN_MEMBER_UPDATE ? !up : 0))
        code = CAIRN_GRPC_INTERNAL, msg = "grpc: error unmarshalling request";
    uint64_t index = 0;
    if (!code) {
        int rc = cairn_raft_propose_conf_ctx(r->raft, (cairn_raft_conf_op_t)rop, id, ctx, ctx_len, &index);
        if (rc == CAIRN_EAGAIN)
            msg = cairn_etcd_err(CAIRN_ETCD_LEARNER_NOT_READY, &code);
        else if (rc == CAIRN_ENOT_LEADER)
            msg = cairn_etcd_err(CAIRN_ETCD_LEADER_CHANGED, &code);
        else if (rc == CAIRN_ENOTFOUND)
            msg = cairn_etcd_err(CAIRN_ETCD_MEMBER_NOT_FOUND, &code);
        else if (rc == CAIRN_EEXISTS)
            msg = cairn_etcd_err(CAIRN_ETCD_MEMBER_EXISTS, &code);
        else if (rc == CAIRN_ESTATE)
            msg = cairn_etcd_err(CAIRN_ETCD_TIMEOUT_LEADER_FAIL, &code);
        else if (rc)
            msg = cairn_etcd_err(CAIRN_ETCD_NOT_ENOUGH_STARTED, &code);
    }
    if (code) {
        raftd_conf_answer(r, origin, code, msg, NULL, 0);
    } else {
        cairn_info("membership change proposed", "op=%d member=%016llx index=%llu", rop, (unsigned long long)id,
                   (unsigned long long)index);
        r->conf.active = 1;
        r->conf.index = index;
        r->conf.term = cairn_raft_term(r->raft);
        r->conf.op = op;
        r->conf.node_id = id;
        r->conf.origin = *origin;
        r->conf.deadline = cairn_now_ms() + 10000 + 2 * r->cfg->election_ms;
    }
    free(ctx);
    if (add)
        etcdserverpb__member_add_request__free_unpacked(add, NULL);
    if (rm)
        etcdserverpb__member_remove_request__free_unpacked(rm, NULL);
    if (up)
        etcdserverpb__member_update_request__free_unpacked(up, NULL);
    if (pr)
        etcdserverpb__member_promote_request__free_unpacked(pr, NULL);
}

/* The change in progress is answered once its entry commits (etcd answers when it applies). */
void raftd_conf_poll(raftd_t *r)
{
    if (!r->conf.active)
        return;
    int code = 0;
    const char *msg = NULL;
    /* Committed first: a leader that removed itself steps down the moment the removal commits
     * (thesis §4.2.2), and that is a success. The entry at the index is ours if its term is
     * the term we proposed it in. */
    int committed = r->raft && cairn_raft_commit(r->raft) >= r->conf.index &&
                    cairn_raft_term_at(r->raft, r->conf.index) == r->conf.term;
    if (committed)
        ;
    else if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER || cairn_raft_term(r->raft) != r->conf.term)
        msg = cairn_etcd_err(CAIRN_ETCD_LEADER_CHANGED, &code);
    else if (cairn_now_ms() < r->conf.deadline)
        return;
    else
        msg = cairn_etcd_err(CAIRN_ETCD_TIMEOUT, &code);
    uint8_t *buf = NULL;
    size_t n = 0;
    mlist_t l = {0};
    if (!code && mlist_build(r, &l) == 0) {
        if (r->conf.op == CAIRN_MEMBER_ADD) {
            Etcdserverpb__MemberAddResponse resp = ETCDSERVERPB__MEMBER_ADD_RESPONSE__INIT;
            for (size_t i = 0; i < l.n; i++)
                if (l.mp[i]->id == r->conf.node_id)
                    resp.member = l.mp[i];
            resp.members = l.mp;
            resp.n_members = l.n;
            n = etcdserverpb__member_add_response__get_packed_size(&resp);
            if ((buf = malloc(n ? n : 1)))
                etcdserverpb__member_add_response__pack(&resp, buf);
        } else {
            /* Remove, Update and Promote responses share the shape {header = 1, members = 2} */
            Etcdserverpb__MemberRemoveResponse resp = ETCDSERVERPB__MEMBER_REMOVE_RESPONSE__INIT;
            resp.members = l.mp;
            resp.n_members = l.n;
            n = etcdserverpb__member_remove_response__get_packed_size(&resp);
            if ((buf = malloc(n ? n : 1)))
                etcdserverpb__member_remove_response__pack(&resp, buf);
        }
        if (!buf)
            msg = cairn_etcd_err(CAIRN_ETCD_TOO_MANY_REQUESTS, &code);
    }
    if (!code && !buf)
        msg = cairn_etcd_err(CAIRN_ETCD_TOO_MANY_REQUESTS, &code);
    if (!code && r->conf.op == CAIRN_MEMBER_PROMOTE)
        cairn_metrics_inc(r->metrics, RAFTD_M_LEARNER_PROMOTES, 1);
    cairn_info(code ? "membership change failed" : "membership change committed", "member=%016llx index=%llu",
               (unsigned long long)r->conf.node_id, (unsigned long long)r->conf.index);
    raftd_conf_answer(r, &r->conf.origin, code, msg, buf, n);
    free(buf);
    mlist_free(&l);
    memset(&r->conf, 0, sizeof r->conf);
}

/* Forwarded changes whose answer never came (the leader died): the gateway's deadline has
 * long answered the client; just free them. */
void raftd_sweep_fwd(raftd_t *r, int64_t now)
{
    size_t pos = 0;
    uint64_t key, expired[64];
    size_t n = 0;
    void *val;
    while (n < 64 && cairn_u64map_next(r->fwd, &pos, &key, &val))
        if (now - ((conf_origin_t *)val)->at > 60000)
            expired[n++] = key;
    for (size_t i = 0; i < n; i++)
        free(cairn_u64map_take(r->fwd, expired[i]));
}
