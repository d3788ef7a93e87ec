/* peer.c - raftd's peer transport (DESIGN.md "raftd"): one DEALER per other member, a ROUTER
 * on each --listen-peer-urls, the RAFT messages the core sends and the shell's own PEER_*
 * messages (cairn_ipc.h). A message that promises something (a vote, an append ack) is held
 * until stored has made the ready it came from durable (Raft §5.1/§5.2). Peer sends never
 * block: a full queue drops the message, which Raft tolerates. The connections follow the
 * membership (raftd_reconcile_peers). */
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_url.h"
#include "cairn_zmq.h"
#include "raftd.h"

/* ------------------------------------------------------------------ peers */

/* A peer URL -> its ZeroMQ endpoint (cairn_url_zmq_endpoint). Paths are tolerated: the URLs
 * come from the configuration and from the log, where an older raftd may have let one in. */
static int peer_endpoint(const char *url, char *out, size_t len)
{
    cairn_url_t u;
    int rc = cairn_url_parse(&u, url, strlen(url), CAIRN_URL_IGNORE_PATH, NULL, 0);
    return rc < 0 ? rc : cairn_url_zmq_endpoint(&u, out, len);
}

peer_t *raftd_find_peer(raftd_t *r, uint64_t id)
{
    for (size_t i = 0; i < r->n_peers; i++)
        if (r->peers[i].id == id)
            return &r->peers[i];
    return NULL;
}

static int encode_raft(raftd_t *r, const cairn_raft_msg_t *m, uint8_t **frame, size_t *len)
{
    /* entries go as they are (one entry type: cairn_entry.h); MSG_SNAP carries the membership */
    int snap = m->type == CAIRN_RAFT_MSG_SNAP;
    cairn_ipc_msg_t im = {.type = CAIRN_IPC_RAFT, .cluster_id = r->cluster_id,
                          .raft_type = m->type, .from = m->from, .to = m->to, .term = m->term,
                          .log_term = m->log_term, .index = m->index, .commit = m->commit, .reject = m->reject,
                          .reject_hint = m->reject_hint, .context = m->context, .snap_index = m->snap_index,
                          .snap_term = m->snap_term, .entries = snap ? NULL : m->entries,
                          .n_entries = snap ? 0 : m->n_entries, .voters = snap ? m->voters : NULL,
                          .n_voters = snap ? m->n_voters : 0, .learners = snap ? m->learners : NULL,
                          .n_learners = snap ? m->n_learners : 0};
    return cairn_ipc_encode(&im, frame, len);
}

static void free_frame(void *data, void *hint) { free(data); }

/* Test only (CAIRN_TEST_FAULTS=1, tests/nemesis): while <run-dir>/fault-drop-to exists, the
 * members it names (names or hex member ids, separated by spaces, commas or newlines) get no peer
 * message from this member; what they send here still arrives: an asymmetric partition. The file
 * is read at most every 50 ms. */
static int fault_drop_to(raftd_t *r, const peer_t *p)
{
    static char list[1024];
    static int64_t next_read;
    if (!r->faults_enabled)
        return 0;
    int64_t now = cairn_now_ms();
    if (now >= next_read || now < next_read - 1000) {
        char path[4200], buf[sizeof list] = "";
        snprintf(path, sizeof path, "%s/fault-drop-to", r->cfg->run_dir);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = 0;
            fclose(f);
        }
        if (strcmp(buf, list) != 0)
            cairn_warn(*buf ? "test fault: dropping what this member sends to" : "test fault: no longer dropping what this member sends",
                       "members=\"%.200s\"", buf);
        memcpy(list, buf, sizeof list);
        next_read = now + 50;
    }
    char tmp[sizeof list], *save = NULL, idhex[17];
    memcpy(tmp, list, sizeof tmp);
    snprintf(idhex, sizeof idhex, "%016llx", (unsigned long long)p->id);
    for (char *t = strtok_r(tmp, " ,\t\r\n", &save); t; t = strtok_r(NULL, " ,\t\r\n", &save))
        if (strcmp(t, idhex) == 0 || (p->name && strcmp(t, p->name) == 0))
            return 1;
    return 0;
}

/* Takes ownership of frame. */
static void send_peer_frame(raftd_t *r, uint64_t to, uint8_t *frame, size_t len)
{
    peer_t *p = raftd_find_peer(r, to);
    if (!p || !p->dealer || r->isolated || !r->cluster_id || fault_drop_to(r, p)) {
        free(frame);
        return;
    }
    zmq_msg_t zm;
    zmq_msg_init_data(&zm, frame, len, free_frame, NULL);
    if (zmq_msg_send(&zm, zsock_resolve(p->dealer), ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&zm);
        cairn_series_inc(raftd_metrics_peer(r, p, RAFTD_M_PEER_SENT_FAILURES), 1);
        if (r->n_dropped_peer++ % 1000 == 0)
            cairn_debug("peer queue full; message dropped", "to=%016llx", (unsigned long long)to);
    } else {
        cairn_series_inc(raftd_metrics_peer(r, p, RAFTD_M_PEER_SENT_BYTES), len);
    }
}

void raftd_send_peer(raftd_t *r, const cairn_raft_msg_t *m)
{
    uint8_t *frame;
    size_t len;
    if (m->type == CAIRN_RAFT_MSG_HEARTBEAT)
        raftd_metrics_heartbeat(r, m->to);
    if (encode_raft(r, m, &frame, &len) == 0)
        send_peer_frame(r, m->to, frame, len);
}

void raftd_hold_peer(raftd_t *r, const cairn_raft_msg_t *m, uint64_t seq)
{
    held_t *h = calloc(1, sizeof *h);
    if (!h || encode_raft(r, m, &h->frame, &h->len) != 0) {
        free(h);
        return;
    }
    h->seq = seq;
    h->to = m->to;
    *r->held_tail = h;
    r->held_tail = &h->next;
}

void raftd_release_held(raftd_t *r, int drop)
{
    while (r->held && (drop || r->held->seq <= r->acked_seq)) {
        held_t *h = r->held;
        r->held = h->next;
        if (drop)
            free(h->frame);
        else
            send_peer_frame(r, h->to, h->frame, h->len);
        free(h);
    }
    if (!r->held)
        r->held_tail = &r->held;
}


/* Sends one of the shell's peer messages (CAIRN_IPC_PEER_*): m's type and its own fields are
 * the caller's; the peer header (cluster, from, to) is filled here. */
void raftd_send_peer_msg(raftd_t *r, uint64_t to, cairn_ipc_msg_t *m)
{
    m->cluster_id = r->cluster_id;
    m->from = cairn_config_member_id(r->cfg);
    m->to = to;
    uint8_t *frame;
    size_t len;
    if (cairn_ipc_encode(m, &frame, &len) == 0)
        send_peer_frame(r, to, frame, len);
}

static void send_peer_signal(raftd_t *r, uint64_t to, int type)
{
    cairn_ipc_msg_t m = {.type = (uint8_t)type};
    raftd_send_peer_msg(r, to, &m);
}

static void handle_shell_msg(raftd_t *r, const cairn_ipc_msg_t *m)
{
    peer_t *p = raftd_find_peer(r, m->from);
    switch (m->type) {
    case CAIRN_IPC_PEER_ATTRS:
        if (p && m->want_reply)
            r->next_attrs = 0;
        if (p && m->urls_len < 4096) {
            char *u = strndup(m->urls ? (const char *)m->urls : "", m->urls_len);
            if (u) {
                free(p->client_urls);
                p->client_urls = u;
            }
            if (m->name_len && m->name_len < 256 && (u = strndup((const char *)m->name, m->name_len))) {
                free(p->name);
                p->name = u;
            }
        }
        break;
    case CAIRN_IPC_PEER_CONF_REQ: {
        conf_origin_t o = {.member = m->from, .fwd_id = m->fwd_id, .at = cairn_now_ms()};
        raftd_conf_begin(r, (int)m->op, m->body, m->body_len, &o);
        break;
    }
    case CAIRN_IPC_PEER_CONF_RESP: {
        conf_origin_t *o = cairn_u64map_take(r->fwd, m->fwd_id);
        if (!o)
            break; /* answered already (timed out) */
        char msg[256];
        snprintf(msg, sizeof msg, "%.*s", (int)m->message_len, m->message ? (const char *)m->message : "");
        raftd_conf_answer(r, o, (int)m->code, msg, m->body, m->body_len);
        free(o);
        break;
    }
    case CAIRN_IPC_PEER_SNAP_PULL: {
        /* the leader's stored serves the bytes; req_id routes its answer back to the member */
        cairn_ipc_msg_t q = {.type = CAIRN_IPC_SNAP_REQ, .req_id = m->from, .snap_id = m->snap_id,
                             .offset = m->offset, .snap_index = m->snap_index};
        raftd_send_stored(r, &q);
        break;
    }
    case CAIRN_IPC_PEER_SNAP_DATA:
        raftd_snap_on_data(r, m);
        break;
    case CAIRN_IPC_PEER_LEASE_QUERY:
        raftd_lessor_peer_query(r, m);
        break;
    case CAIRN_IPC_PEER_LEASE_RESP:
        raftd_lessor_peer_resp(r, m);
        break;
    case CAIRN_IPC_PEER_HASH_REQ:
        raftd_corrupt_peer_req(r, m);
        break;
    case CAIRN_IPC_PEER_HASH_RESP:
        raftd_corrupt_peer_resp(r, m);
        break;
    case CAIRN_IPC_PEER_STOPPING: /* raftd_handle_peer marked it; nothing more to do */
        break;
    case CAIRN_IPC_PEER_REMOVED:
        if (!r->removed_logged && p) {
            cairn_warn("a member says this member was removed from the cluster; it answers clients 'server "
                       "stopped' from now on (wipe its data dir before it rejoins)", "told_by=%016llx",
                       (unsigned long long)m->from);
            r->removed_logged = 1;
        }
        break;
    }
}

void raftd_handle_peer(raftd_t *r, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected peer message", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        return;
    }
    if (m.type != CAIRN_IPC_RAFT && (m.type < CAIRN_IPC_PEER_ATTRS || m.type > CAIRN_IPC_PEER_STOPPING) &&
        m.type != CAIRN_IPC_PEER_LEASE_QUERY && m.type != CAIRN_IPC_PEER_LEASE_RESP &&
        m.type != CAIRN_IPC_PEER_HASH_REQ && m.type != CAIRN_IPC_PEER_HASH_RESP) {
        cairn_warn("unexpected peer message", "type=%s", cairn_ipc_type_name(m.type));
        cairn_ipc_msg_release(&m);
        return;
    }
    if (!r->cluster_id && m.cluster_id && m.to == cairn_config_member_id(r->cfg) &&
        cairn_members_find(&r->members, m.from)) {
        /* joining a running cluster (--initial-cluster-state existing): a member we were told
         * about speaks to us; its cluster is ours. stored learns the same ID durably from the
         * log entry that added us. */
        r->cluster_id = m.cluster_id;
        cairn_info("joined the cluster", "cluster_id=%016llx via=%016llx", (unsigned long long)m.cluster_id,
                   (unsigned long long)m.from);
    }
    if (m.cluster_id != r->cluster_id) {
        static int64_t last_warn;
        if (cairn_now_ms() - last_warn > 5000) {
            cairn_warn("message from another cluster dropped (check --initial-cluster-token)",
                       "their_cluster=%016llx ours=%016llx from=%016llx", (unsigned long long)m.cluster_id,
                       (unsigned long long)r->cluster_id, (unsigned long long)m.from);
            last_warn = cairn_now_ms();
        }
        cairn_ipc_msg_release(&m);
        return;
    }
    peer_t *p = raftd_find_peer(r, m.from);
    if (p) {
        if (!p->last_heard || cairn_now_ms() - p->last_heard > 2 * r->cfg->election_ms)
            r->next_attrs = 0; /* it (re)appeared: tell it who we are now, not in 2 s */
        p->last_heard = cairn_now_ms();
        p->stopping = m.type == CAIRN_IPC_PEER_STOPPING;
        cairn_series_inc(raftd_metrics_peer(r, p, RAFTD_M_PEER_RECEIVED_BYTES), len);
    }
    if (p && p->removed_at && r->raft && m.type == CAIRN_IPC_RAFT && cairn_now_ms() - p->removed_at > 1000) {
        static int64_t last_told;
        if (cairn_now_ms() - last_told > 1000) {
            send_peer_signal(r, p->id, CAIRN_IPC_PEER_REMOVED);
            last_told = cairn_now_ms();
        }
    }
    if (m.type != CAIRN_IPC_RAFT) {
        handle_shell_msg(r, &m);
    } else if (r->raft && m.raft_type < 256) {
        cairn_raft_msg_t rm = {.type = (uint8_t)m.raft_type, .from = m.from, .to = m.to, .term = m.term,
                               .log_term = m.log_term, .index = m.index, .commit = m.commit,
                               .reject = (uint8_t)(m.reject != 0), .reject_hint = m.reject_hint,
                               .context = m.context, .entries = m.entries, .n_entries = m.n_entries,
                               .snap_index = m.snap_index, .snap_term = m.snap_term, .voters = m.voters,
                               .n_voters = m.n_voters, .learners = m.learners, .n_learners = m.n_learners};
        rc = cairn_raft_step(r->raft, &rm);
        if (rc)
            cairn_debug("peer message refused by the core", "type=%u err=\"%s\"", (unsigned)rm.type,
                        cairn_strerror(rc));
    }
    cairn_ipc_msg_release(&m);
}

void raftd_send_attrs(raftd_t *r)
{
    char urls[4096];
    size_t n = 0;
    urls[0] = 0;
    for (size_t i = 0; i < r->cfg->advertise_client_urls.n; i++)
        n += (size_t)snprintf(urls + n, n < sizeof urls ? sizeof urls - n : 0, "%s%s", i ? "," : "",
                              r->cfg->advertise_client_urls.v[i]);
    if (n >= sizeof urls)
        return;
    /* want_reply = "I have not got yours yet": the peer answers with its own at once, so a
     * member that restarted knows the others' names and client URLs within a heartbeat, not 2 s */
    for (size_t i = 0; i < r->n_peers; i++) {
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_ATTRS, .want_reply = r->peers[i].name == NULL,
                             .urls = (const uint8_t *)urls, .urls_len = n, .name = (const uint8_t *)r->cfg->name,
                             .name_len = strlen(r->cfg->name)};
        raftd_send_peer_msg(r, r->peers[i].id, &m);
    }
}

/* Binds --listen-peer-urls: at start when there are other members, or once the first one is
 * added to a cluster that started alone. */
int raftd_listen_peers(raftd_t *r)
{
    cairn_config_t *cfg = r->cfg;
    if (r->peer_routers)
        return 0;
    r->peer_routers = calloc(cfg->listen_peer_urls.n ? cfg->listen_peer_urls.n : 1, sizeof *r->peer_routers);
    if (!r->peer_routers)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < cfg->listen_peer_urls.n && r->n_peer_routers < 8; i++) {
        char ep[300];
        if (peer_endpoint(cfg->listen_peer_urls.v[i], ep, sizeof ep))
            return CAIRN_ECONFIG;
        zsock_t *s = zsock_new(ZMQ_ROUTER);
        if (!s)
            return CAIRN_ENOMEM;
        zsock_set_ipv6(s, 1);
        zsock_set_rcvhwm(s, CAIRN_ZMQ_HWM);
        zsock_set_linger(s, 0);
        /* A peer's DEALER always has the same identity (its member id). When its raftd restarts,
         * the new connection must take that identity over: without handover ZeroMQ keeps the old
         * connection's (not yet reaped when this raftd was paused, e.g. SIGSTOP or a long stall,
         * while the peer died and came back) and never reads the new one - the peer stayed
         * unheard for good (nemesis seed 1002; tests/integration/test_nemesis.sh). */
        zsock_set_router_handover(s, 1);
        /* The network can send anything: ZeroMQ drops a connection whose message would exceed
         * what the decoder accepts anyway, before allocating it. */
        zsock_set_maxmsgsize(s, (int)CAIRN_IPC_MAX_FRAME);
        if (zsock_bind(s, "%s", ep) < 0) {
            cairn_error("cannot listen for peers", "endpoint=%s err=\"%s\"", ep, zmq_strerror(zmq_errno()));
            zsock_destroy(&s);
            return CAIRN_EIO;
        }
        r->peer_routers[r->n_peer_routers++] = s;
        cairn_info("listening for peers", "endpoint=%s", ep);
    }
    return 0;
}

void raftd_peer_close(peer_t *p)
{
    zsock_destroy(&p->dealer);
    free(p->client_urls);
    free(p->name);
    memset(p, 0, sizeof *p);
}

static int peer_connect(raftd_t *r, peer_t *p, const char *endpoint)
{
    char ident[32];
    snprintf(ident, sizeof ident, "%016llx", (unsigned long long)cairn_config_member_id(r->cfg));
    snprintf(p->endpoint, sizeof p->endpoint, "%s", endpoint);
    p->dealer = zsock_new(ZMQ_DEALER);
    if (!p->dealer)
        return CAIRN_ENOMEM;
    zsock_set_ipv6(p->dealer, 1);
    zsock_set_identity(p->dealer, ident);
    /* A few seconds of messages at most: older ones are stale by the time they arrive. */
    zsock_set_sndhwm(p->dealer, 10000);
    zsock_set_linger(p->dealer, 0);
    zsock_set_reconnect_ivl(p->dealer, 100);
    zsock_set_reconnect_ivl_max(p->dealer, 1000);
    /* Queue only for connected peers: messages for a dead peer are dropped, not piled up. */
    zsock_set_immediate(p->dealer, 1);
    if (zsock_connect(p->dealer, "%s", p->endpoint) < 0) {
        zsock_destroy(&p->dealer);
        return CAIRN_EIO;
    }
    return 0;
}

/* One connection per other member of the core's current membership (voters and learners), to
 * the first peer URL the log gives it: members added, removed or moved (MemberUpdate) are
 * connected, dropped or reconnected here. Before the core runs, the starting membership. */
void raftd_reconcile_peers(raftd_t *r)
{
    uint64_t self = cairn_config_member_id(r->cfg);
    const uint64_t *v = NULL, *l = NULL;
    size_t nv = 0, nl = 0;
    uint64_t *tmp = NULL;
    if (r->raft) {
        nv = cairn_raft_voters(r->raft, &v);
        nl = cairn_raft_learners(r->raft, &l);
    } else {
        if (!(tmp = calloc(r->members.n ? r->members.n : 1, sizeof *tmp)))
            return;
        for (size_t i = 0; i < r->members.n; i++)
            tmp[nv++] = r->members.v[i].id;
        v = tmp;
    }
    int64_t now = cairn_now_ms();
    for (size_t i = 0; i < r->n_peers;) {
        peer_t *p = &r->peers[i];
        if (id_in(v, nv, p->id) || id_in(l, nl, p->id)) {
            p->removed_at = 0;
            i++;
        } else if (!p->removed_at) {
            /* The change that removed it may have come through it (its forwarded request is
             * still to be answered), and it must be told it was removed when it speaks up
             * (PEER_REMOVED). Close later (the periodic sweep calls us). */
            p->removed_at = now;
            i++;
        } else if (now - p->removed_at >= REMOVED_GRACE_MS) {
            cairn_info("peer connection closed (no longer a member)", "member=%016llx", (unsigned long long)p->id);
            raftd_peer_close(p);
            r->peers[i] = r->peers[--r->n_peers];
        } else {
            i++;
        }
    }
    for (size_t k = 0; k < nv + nl; k++) {
        uint64_t id = k < nv ? v[k] : l[k - nv];
        if (id == self)
            continue;
        cairn_member_t *m = cairn_members_find(&r->members, id);
        char ep[300];
        if (!m || !m->n_peer_urls || peer_endpoint(m->peer_urls[0], ep, sizeof ep) != 0) {
            cairn_warn("no peer URL known for a member", "member=%016llx", (unsigned long long)id);
            continue;
        }
        peer_t *p = raftd_find_peer(r, id);
        if (p && strcmp(p->endpoint, ep) == 0)
            continue;
        if (p) {
            cairn_info("peer moved; reconnecting", "member=%016llx endpoint=%s", (unsigned long long)id, ep);
            zsock_destroy(&p->dealer);
        } else {
            peer_t *np = realloc(r->peers, (r->n_peers + 1) * sizeof *np);
            if (!np)
                break;
            r->peers = np;
            p = &r->peers[r->n_peers++];
            memset(p, 0, sizeof *p);
            p->id = id;
            cairn_info("peer connection opened", "member=%016llx endpoint=%s", (unsigned long long)id, ep);
        }
        if (peer_connect(r, p, ep) != 0)
            cairn_warn("cannot connect to peer", "member=%016llx endpoint=%s", (unsigned long long)id, ep);
    }
    if (r->n_peers && !r->n_peer_routers) {
        int rc = raftd_listen_peers(r);
        if (rc)
            cairn_error("cannot set up the peer transport", "err=\"%s\"", cairn_strerror(rc));
    }
    int member = id_in(v, nv, self) || id_in(l, nl, self);
    if (r->raft && member)
        r->removed_logged = 0;
    else if (r->raft && !r->removed_logged && r->was_member) {
        cairn_warn("this member was removed from the cluster; it answers clients 'server stopped' from now on "
                   "(wipe its data dir before it rejoins)", NULL);
        r->removed_logged = 1;
    }
    if (r->raft)
        r->was_member = member;
    free(tmp); /* v points into it until here */
}

/* Tells every peer that this member is stopping (PEER_STOPPING), once. The peer sockets
 * linger a little so the notice leaves before they close. */
void raftd_tell_peers_stopping(raftd_t *r)
{
    for (size_t i = 0; i < r->n_peers; i++) {
        send_peer_signal(r, r->peers[i].id, CAIRN_IPC_PEER_STOPPING);
        if (r->peers[i].dealer)
            zsock_set_linger(r->peers[i].dealer, 200);
    }
}
