/* raftd - consensus and time for one Cairn node (DESIGN.md "raftd").
 *
 * A thin shell around the pure raft core (core/raft.h): it turns socket messages and the
 * clock into core events and carries each ready out:
 *   - hard state + entries  -> stored as APPEND (tagged with a sequence number);
 *   - ready.msgs            -> peers at once (the leader writes in parallel, thesis §10.2.1);
 *   - ready.msgs_after_persist -> held until stored acks that APPEND's sequence;
 *   - stored's APPENDED      -> cairn_raft_persisted();
 *   - a new commit index     -> stored as COMMIT (stored applies min(commit, persisted));
 *   - read states            -> the asking gateway as READ_INDEX_RESP;
 *   - a membership change    -> peer connections opened, moved or closed (reconcile_peers);
 *   - a snapshot to install  -> pulled from the leader chunk by chunk into our stored.
 * The membership is replicated state (shared/cairn_member.h): the core's voters/learners plus
 * each member's name and peer URLs from the configuration entries; at start it comes from
 * stored (the membership where the log starts), not from --initial-cluster. Cluster writes
 * (MemberAdd/Remove/Update/Promote) are checked and proposed on the leader and answered when
 * their entry commits; a follower forwards them over the peer link.
 * Sockets: ROUTER <run>/raftd.ipc for the gateways; DEALER "raftd" to <run>/stored.ipc;
 * ROUTER on each --listen-peer-urls (tcp) for the other members' raftds, and one DEALER per
 * other member connected to its peer URL. Peer sends never block (a full queue
 * drops the message: Raft tolerates loss, and a blocked consensus loop would be worse);
 * ZeroMQ reconnects by itself. Every peer message carries the cluster ID, so members of two
 * clusters (different --initial-cluster-token) never mix.
 * At start, and whenever stored reports a new boot id (it restarted and lost what it had not
 * synced), raftd reloads hard state and log from stored (LOAD) and rebuilds the core: to the
 * core that is exactly a crash and restart of this member.
 */
#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_config.h"
#include "cairn_daemon.h"
#include "cairn_err.h"
#include "cairn_etcd_err.h"
#include "cairn_ipc.h"
#include "cairn_log.h"
#include "cairn_member.h"
#include "cairn_u64map.h"
#include "cairn_url.h"
#include "cairn_zmq.h"
#include "raft.h"
#include "rpc.pb-c.h"

/* The shell's own peer messages (CAIRN_IPC_PEER_*, cairn_ipc.h) carry what the core does not:
 * attributes, forwarded membership changes, snapshot bytes (thesis §5.1: the core only sends the
 * metadata; the follower pulls chunks, one in flight per transfer), removed, stopping. */
#define SNAP_STALL_MS 10000
#define SNAP_RESTORE_MS (30 * 60 * 1000)
/* A removed member that still speaks is told so (PEER_REMOVED); the connection to it is kept
 * REMOVED_GRACE_MS for this. */
#define REMOVED_GRACE_MS 60000
/* Log compaction (thesis ch. 5, maybe_compact): runs when it can drop at least this many
 * entries (it moves memory), or when the log is over its byte budget. */
#define COMPACT_MIN_STEP 4096
#define ATTRS_EVERY_MS 2000

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = 1; }

typedef struct {
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id; /* the gateway's own id for the read */
} read_ctx_t;

typedef struct {
    uint64_t id;
    zsock_t *dealer;
    char endpoint[300];
    char *client_urls; /* learned from the peer's ATTRS, comma-separated */
    char *name;        /* learned from the peer's ATTRS */
    int64_t last_heard; /* when a message from it last arrived: "started" for reconfiguration checks */
    int64_t removed_at; /* left the membership: the connection stays a few seconds for last answers */
    int stopping;       /* said it is stopping (PEER_STOPPING); any other message clears it */
} peer_t;

/* Who asked for a membership change: a gateway of this node, or a member that forwarded it. */
typedef struct {
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id;
    uint64_t member, fwd_id; /* member != 0: answer that member's forward fwd_id */
    int64_t at;
} conf_origin_t;

typedef struct {
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id, target;
    int64_t deadline;
} transfer_t;

/* A message for a peer that must wait until stored has made the ready it came from durable
 * (votes, append acks: Raft §5.1/§5.2 promises must survive a crash). */
typedef struct held_s {
    struct held_s *next;
    uint64_t seq, to;
    uint8_t *frame;
    size_t len;
} held_t;

typedef struct {
    cairn_config_t *cfg;
    zsock_t *router, *stored;
    zsock_t **peer_routers;
    size_t n_peer_routers;
    peer_t *peers;
    size_t n_peers;
    held_t *held, **held_tail;
    uint64_t n_dropped_peer;
    int64_t next_attrs;
    /* Test-only fault switch (CAIRN_TEST_FAULTS=1): while <run-dir>/fault-isolate exists this
     * member neither sends nor receives peer messages, as if its network were cut. */
    int faults_enabled, isolated;
    int64_t next_fault_check;
    char fault_path[4096];
    transfer_t transfer; /* one MoveLeader at a time (req_id 0 = none) */
    /* gateways that proposed since the last (re)load: told when in-flight proposals may be lost */
    struct {
        uint8_t ident[128];
        size_t len;
    } proposers[32];
    size_t n_proposers;
    cairn_raft_t *raft;
    cairn_members_t members; /* every member's metadata (name, peer URLs) as the log says */
    uint64_t cluster_id;     /* 0: joining a running cluster, learned from its first message */
    int removed_logged, was_member;
    /* the one membership change in progress on this leader (Raft thesis §4.1: one at a time) */
    struct {
        int active;
        uint64_t index, term, node_id;
        int op;
        conf_origin_t origin;
        int64_t deadline;
    } conf;
    cairn_u64map_t *fwd; /* forward id -> conf_origin_t: changes forwarded to the leader */
    uint64_t next_fwd;
    /* a snapshot being pulled from the leader (follower side) */
    struct {
        int active;
        int restoring; /* every byte handed to stored: it is building the new store */
        uint64_t index, term, from, id, offset;
        int64_t last_progress;
    } snap;
    uint64_t stored_boot;
    uint64_t seq, acked_seq;
    uint64_t persisted_index; /* last index stored has made durable (this epoch) */
    uint64_t sent_commit, sent_term, sent_leader;
    uint64_t next_ctx;
    cairn_u64map_t *reads; /* ctx -> read_ctx_t */
    int64_t next_tick;
    int64_t last_load_sent;
    uint64_t handoff_to; /* stopping leader: the member it hands leadership to */
    int fatal;           /* the error that ends this process (0: none); g_stop is the signals' */
    /* a paged LOAD under way (cairn_ipc.h LOAD_RESP): the first page's header and the entries
     * gathered so far (copies: a page's frame is freed once handled) */
    struct {
        int active;
        uint64_t boot_id, term, vote, commit, snap_index, snap_term, cluster_id, last, next;
        uint64_t seq; /* of the last LOAD sent: only its answer is taken */
        uint8_t *members;
        size_t members_len;
        cairn_ipc_entry_t *ents;
        size_t n, cap, pages;
    } load;
} raftd_t;

static void send_stored(raftd_t *r, const cairn_ipc_msg_t *m)
{
    int rc = cairn_zmq_send(r->stored, NULL, 0, m);
    if (rc)
        cairn_warn("send to stored failed", "type=%s err=\"%s\"", cairn_ipc_type_name(m->type), cairn_strerror(rc));
}

static void send_gw(raftd_t *r, const uint8_t *ident, size_t len, const cairn_ipc_msg_t *m)
{
    if (cairn_zmq_send(r->router, ident, len, m))
        cairn_debug("reply to gateway dropped", "type=%s", cairn_ipc_type_name(m->type));
}

/* A refusal with etcd error e, to a gateway: a message of type (a PROPOSE_FAIL, a
 * READ_INDEX_RESP, ...) answering req_id. */
static void send_gw_error(raftd_t *r, const uint8_t *ident, size_t len, int type, uint64_t req_id, cairn_etcd_err_t e)
{
    cairn_ipc_msg_t m = {.type = (uint8_t)type, .req_id = req_id, .code = cairn_etcd_err_code(e)};
    cairn_ipc_set_message(&m, cairn_etcd_err_text(e));
    send_gw(r, ident, len, &m);
}

static void fail_reads(raftd_t *r, cairn_etcd_err_t why)
{
    size_t pos = 0;
    uint64_t key;
    void *val;
    while (cairn_u64map_next(r->reads, &pos, &key, &val)) {
        read_ctx_t *rc = val;
        send_gw_error(r, rc->ident, rc->ident_len, CAIRN_IPC_READ_INDEX_RESP, rc->req_id, why);
        free(rc);
    }
    cairn_u64map_destroy(&r->reads);
    r->reads = cairn_u64map_new();
}

/* ------------------------------------------------------------------ peers */

/* A peer URL -> its ZeroMQ endpoint (cairn_url_zmq_endpoint). Paths are tolerated: the URLs
 * come from the configuration and from the log, where an older raftd may have let one in. */
static int peer_endpoint(const char *url, char *out, size_t len)
{
    cairn_url_t u;
    int rc = cairn_url_parse(&u, url, strlen(url), CAIRN_URL_IGNORE_PATH, NULL, 0);
    return rc < 0 ? rc : cairn_url_zmq_endpoint(&u, out, len);
}

static int id_in(const uint64_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static peer_t *find_peer(raftd_t *r, uint64_t id)
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

/* Takes ownership of frame. */
static void send_peer_frame(raftd_t *r, uint64_t to, uint8_t *frame, size_t len)
{
    peer_t *p = find_peer(r, to);
    if (!p || !p->dealer || r->isolated || !r->cluster_id) {
        free(frame);
        return;
    }
    zmq_msg_t zm;
    zmq_msg_init_data(&zm, frame, len, free_frame, NULL);
    if (zmq_msg_send(&zm, zsock_resolve(p->dealer), ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&zm);
        if (r->n_dropped_peer++ % 1000 == 0)
            cairn_debug("peer queue full; message dropped", "to=%016llx", (unsigned long long)to);
    }
}

static void send_peer(raftd_t *r, const cairn_raft_msg_t *m)
{
    uint8_t *frame;
    size_t len;
    if (encode_raft(r, m, &frame, &len) == 0)
        send_peer_frame(r, m->to, frame, len);
}

static void hold_peer(raftd_t *r, const cairn_raft_msg_t *m, uint64_t seq)
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

static void release_held(raftd_t *r, int drop)
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

static void conf_begin(raftd_t *r, int op, const uint8_t *body, size_t len, const conf_origin_t *origin);
static void conf_answer(raftd_t *r, const conf_origin_t *o, int code, const char *msg, const uint8_t *body,
                        size_t len);
static void snap_on_data(raftd_t *r, const cairn_ipc_msg_t *m);

/* Sends one of the shell's peer messages (CAIRN_IPC_PEER_*): m's type and its own fields are
 * the caller's; the peer header (cluster, from, to) is filled here. */
static void send_peer_msg(raftd_t *r, uint64_t to, cairn_ipc_msg_t *m)
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
    send_peer_msg(r, to, &m);
}

static void handle_shell_msg(raftd_t *r, const cairn_ipc_msg_t *m)
{
    peer_t *p = find_peer(r, m->from);
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
        conf_begin(r, (int)m->op, m->body, m->body_len, &o);
        break;
    }
    case CAIRN_IPC_PEER_CONF_RESP: {
        conf_origin_t *o = cairn_u64map_take(r->fwd, m->fwd_id);
        if (!o)
            break; /* answered already (timed out) */
        char msg[256];
        snprintf(msg, sizeof msg, "%.*s", (int)m->message_len, m->message ? (const char *)m->message : "");
        conf_answer(r, o, (int)m->code, msg, m->body, m->body_len);
        free(o);
        break;
    }
    case CAIRN_IPC_PEER_SNAP_PULL: {
        /* the leader's stored serves the bytes; req_id routes its answer back to the member */
        cairn_ipc_msg_t q = {.type = CAIRN_IPC_SNAP_REQ, .req_id = m->from, .snap_id = m->snap_id,
                             .offset = m->offset, .snap_index = m->snap_index};
        send_stored(r, &q);
        break;
    }
    case CAIRN_IPC_PEER_SNAP_DATA:
        snap_on_data(r, m);
        break;
    case CAIRN_IPC_PEER_STOPPING: /* handle_peer marked it; nothing more to do */
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

static void handle_peer(raftd_t *r, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected peer message", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        return;
    }
    if (m.type != CAIRN_IPC_RAFT && (m.type < CAIRN_IPC_PEER_ATTRS || m.type > CAIRN_IPC_PEER_STOPPING)) {
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
    peer_t *p = find_peer(r, m.from);
    if (p) {
        if (!p->last_heard || cairn_now_ms() - p->last_heard > 2 * r->cfg->election_ms)
            r->next_attrs = 0; /* it (re)appeared: tell it who we are now, not in 2 s */
        p->last_heard = cairn_now_ms();
        p->stopping = m.type == CAIRN_IPC_PEER_STOPPING;
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

static void send_attrs(raftd_t *r)
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
        send_peer_msg(r, r->peers[i].id, &m);
    }
}

static void answer(raftd_t *r, const uint8_t *ident, size_t len, uint64_t req_id, int code, const char *msg,
                   const uint8_t *body, size_t body_len)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RESULT, .req_id = req_id, .code = code, .body = body, .body_len = body_len};
    cairn_ipc_set_message(&m, msg);
    send_gw(r, ident, len, &m);
}

static void answer_error(raftd_t *r, const uint8_t *ident, size_t len, uint64_t req_id, cairn_etcd_err_t e)
{
    answer(r, ident, len, req_id, cairn_etcd_err_code(e), cairn_etcd_err_text(e), NULL, 0);
}

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
            peer_t *p = find_peer(r, m->id);
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

static void answer_members(raftd_t *r, const uint8_t *ident, size_t ident_len, uint64_t req_id)
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
        answer(r, ident, ident_len, req_id, CAIRN_GRPC_OK, NULL, buf, len);
        free(buf);
    }
    mlist_free(&l);
}

/* ------------------------------------------------------------------ membership changes */

static void conf_answer(raftd_t *r, const conf_origin_t *o, int code, const char *msg, const uint8_t *body,
                        size_t len)
{
    if (o->member) {
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_CONF_RESP, .fwd_id = o->fwd_id, .code = code,
                             .body = body, .body_len = body ? len : 0};
        cairn_ipc_set_message(&m, msg);
        send_peer_msg(r, o->member, &m);
    } else {
        answer(r, o->ident, o->ident_len, o->req_id, code, code ? msg : NULL, body, len);
    }
}

static void conf_refuse(raftd_t *r, const conf_origin_t *o, cairn_etcd_err_t e)
{
    conf_answer(r, o, cairn_etcd_err_code(e), cairn_etcd_err_text(e), NULL, 0);
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
static int member_started(raftd_t *r, uint64_t id)
{
    if (id == cairn_config_member_id(r->cfg))
        return 1;
    peer_t *p = find_peer(r, id);
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
        nstarted += member_started(r, v[i]) != 0;
    }
    if (adding) {
        nmembers++;
        if (nstarted == 1 && nmembers == 2)
            return 1; /* growing a single member */
    }
    return nstarted >= nmembers / 2 + 1;
}

static void conf_begin(raftd_t *r, int op, const uint8_t *body, size_t len, const conf_origin_t *origin)
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
        send_peer_msg(r, leader, &m);
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
        conf_answer(r, origin, code, msg, NULL, 0);
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
static void conf_poll(raftd_t *r)
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
    cairn_info(code ? "membership change failed" : "membership change committed", "member=%016llx index=%llu",
               (unsigned long long)r->conf.node_id, (unsigned long long)r->conf.index);
    conf_answer(r, &r->conf.origin, code, msg, buf, n);
    free(buf);
    mlist_free(&l);
    memset(&r->conf, 0, sizeof r->conf);
}

/* Forwarded changes whose answer never came (the leader died): the gateway's deadline has
 * long answered the client; just free them. */
static void sweep_fwd(raftd_t *r, int64_t now)
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

/* ------------------------------------------------------------------ snapshot transfer */

static void snap_fail(raftd_t *r, const char *why)
{
    if (!r->snap.active)
        return;
    cairn_warn("snapshot install failed; the leader will send it again", "index=%llu err=\"%s\"",
               (unsigned long long)r->snap.index, why);
    memset(&r->snap, 0, sizeof r->snap);
    if (r->raft)
        cairn_raft_snapshot_failed(r->raft);
}

static void snap_pull(raftd_t *r)
{
    r->snap.last_progress = cairn_now_ms();
    /* snap_index: the leader's stored may serve any state at or past it */
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_SNAP_PULL, .snap_id = r->snap.id, .offset = r->snap.offset,
                         .snap_index = r->snap.index};
    send_peer_msg(r, r->snap.from, &m);
}

static void snap_on_data(raftd_t *r, const cairn_ipc_msg_t *m)
{
    if (!r->snap.active || m->from != r->snap.from || m->offset != r->snap.offset ||
        (r->snap.id && m->snap_id != r->snap.id))
        return; /* stale: an earlier pull's answer */
    if (m->code) {
        char why[256];
        snprintf(why, sizeof why, "%.*s", (int)m->message_len, m->message ? (const char *)m->message : "");
        snap_fail(r, why);
        return;
    }
    if (m->total == 0 || m->offset + m->body_len > m->total) {
        snap_fail(r, "malformed snapshot chunk");
        return;
    }
    r->snap.id = m->snap_id;
    r->snap.last_progress = cairn_now_ms();
    r->snap.restoring = m->offset + m->body_len >= m->total;
    cairn_ipc_msg_t q = {.type = CAIRN_IPC_SNAP_RECV, .snap_id = m->snap_id, .offset = m->offset,
                         .total = m->total, .snap_index = r->snap.index, .snap_term = r->snap.term,
                         .body = m->body, .body_len = m->body_len};
    send_stored(r, &q);
}

static void snap_on_ack(raftd_t *r, const cairn_ipc_msg_t *m)
{
    if (!r->snap.active || m->snap_id != r->snap.id)
        return;
    if (m->code) {
        char why[256];
        snprintf(why, sizeof why, "%.*s", (int)m->message_len, m->message ? (const char *)m->message : "");
        snap_fail(r, why);
        return;
    }
    if (m->installed) {
        uint64_t index = r->snap.index, term = r->snap.term;
        memset(&r->snap, 0, sizeof r->snap);
        int rc = r->raft ? cairn_raft_snapshot_installed(r->raft, index, term) : CAIRN_ESTATE;
        cairn_info("snapshot installed", "index=%llu term=%llu err=\"%s\"", (unsigned long long)index,
                   (unsigned long long)term, rc ? cairn_strerror(rc) : "");
        if (index > r->persisted_index)
            r->persisted_index = index;
        return;
    }
    r->snap.offset = m->offset;
    snap_pull(r);
}

/* Leader side: stored read a chunk for a member; pass it on. */
static void snap_on_chunk(raftd_t *r, const cairn_ipc_msg_t *m)
{
    cairn_ipc_msg_t d = {.type = CAIRN_IPC_PEER_SNAP_DATA, .snap_id = m->snap_id, .offset = m->offset,
                         .total = m->total, .code = m->code, .message = m->message, .message_len = m->message_len,
                         .body = m->code ? NULL : m->body, .body_len = m->code ? 0 : m->body_len};
    if (m->code && !m->message_len)
        cairn_ipc_set_message(&d, "snapshot unavailable");
    send_peer_msg(r, m->req_id, &d);
    if (!m->code && m->offset + m->body_len >= m->total)
        cairn_info("snapshot sent", "to=%016llx bytes=%llu applied=%llu", (unsigned long long)m->req_id,
                   (unsigned long long)m->total, (unsigned long long)m->applied);
}

/* Answers the MoveLeader in progress: done (CAIRN_ETCD_NONE) or failed with e. */
static void finish_transfer(raftd_t *r, cairn_etcd_err_t e)
{
    if (!r->transfer.req_id)
        return;
    answer(r, r->transfer.ident, r->transfer.ident_len, r->transfer.req_id, cairn_etcd_err_code(e),
           e ? cairn_etcd_err_text(e) : NULL, NULL, 0);
    memset(&r->transfer, 0, sizeof r->transfer);
}

/* Binds --listen-peer-urls: at start when there are other members, or once the first one is
 * added to a cluster that started alone. */
static int listen_peers(raftd_t *r)
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

static void peer_close(peer_t *p)
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
static void reconcile_peers(raftd_t *r)
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
            peer_close(p);
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
        peer_t *p = find_peer(r, id);
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
    free(tmp);
    if (r->n_peers && !r->n_peer_routers) {
        int rc = listen_peers(r);
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
}

/* ------------------------------------------------------------------ ready processing */

/* A cluster of one voter: it commits on its own disk, and need not wait out an election. */
static int single_voter(raftd_t *r)
{
    const uint64_t *v;
    return r->raft && cairn_raft_voters(r->raft, &v) == 1 && v[0] == cairn_config_member_id(r->cfg);
}

/* Names and peer URLs travel in the configuration entries (cairn_member.h): learn them as the
 * entries reach this member's log, so that a new member can be connected at once (the core
 * applies a change when it appends it, thesis §4.1, not when it commits). */
static void learn_members(raftd_t *r, const cairn_raft_entry_t *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cairn_raft_conf_change_t cc;
        if (ents[i].type != CAIRN_RAFT_ENTRY_CONF || cairn_raft_conf_decode(ents[i].data, ents[i].len, &cc) != 0)
            continue;
        if (cc.op == CAIRN_RAFT_CONF_REMOVE || cc.op == CAIRN_RAFT_CONF_PROMOTE)
            continue; /* the core's sets say who is in; keep the metadata for a truncated entry */
        if (cairn_members_apply(&r->members, cc.op, cc.node_id, cc.ctx, cc.ctx_len) != 0)
            cairn_warn("configuration entry with a bad context", "index=%llu", (unsigned long long)ents[i].index);
    }
}

static void process_ready(raftd_t *r)
{
    while (r->raft && cairn_raft_has_ready(r->raft)) {
        cairn_raft_ready_t rd;
        cairn_raft_ready(r->raft, &rd);
        if (rd.hs_changed || rd.n_entries) {
            /* the core's entries go to stored as they are (one entry type: cairn_entry.h) */
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_APPEND, .boot_id = r->stored_boot, .seq = ++r->seq,
                                 .has_hs = rd.hs_changed,
                                 .term = rd.hs.term, .vote = rd.hs.vote, .commit = rd.hs.commit, .entries = rd.entries,
                                 .n_entries = rd.n_entries};
            /* A single voter that leads commits an entry the moment its own disk has it (its
             * quorum is itself), so stored may apply right after its fdatasync instead of
             * waiting for APPENDED -> persisted -> COMMIT: two IPC hops off every write. */
            if (rd.n_entries && rd.role == CAIRN_RAFT_LEADER && single_voter(r) &&
                rd.entries[rd.n_entries - 1].term == rd.term)
                m.commit_durable = rd.entries[rd.n_entries - 1].index;
            send_stored(r, &m);
        }
        /* The leader's appends and heartbeats go out at once, in parallel with its own disk
         * write (thesis §10.2.1); promises wait for the APPEND just sent to be durable. */
        for (size_t i = 0; i < rd.n_msgs; i++)
            send_peer(r, &rd.msgs[i]);
        for (size_t i = 0; i < rd.n_msgs_after_persist; i++) {
            if (r->acked_seq >= r->seq && !r->held)
                send_peer(r, &rd.msgs_after_persist[i]);
            else
                hold_peer(r, &rd.msgs_after_persist[i], r->seq);
        }
        if (rd.commit != r->sent_commit || rd.term != r->sent_term || rd.leader != r->sent_leader) {
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_COMMIT, .boot_id = r->stored_boot, .commit = rd.commit,
                                 .term = rd.term, .leader = rd.leader};
            send_stored(r, &m);
            if (rd.leader != r->sent_leader) {
                cairn_info("leader changed", "leader=%016llx term=%llu", (unsigned long long)rd.leader,
                           (unsigned long long)rd.term);
                if (r->transfer.req_id && rd.leader == r->transfer.target)
                    finish_transfer(r, CAIRN_ETCD_NONE);
            }
            r->sent_commit = rd.commit;
            r->sent_term = rd.term;
            r->sent_leader = rd.leader;
        }
        for (size_t i = 0; i < rd.n_read_states; i++) {
            read_ctx_t *rc = cairn_u64map_take(r->reads, rd.read_states[i].context);
            if (!rc)
                continue;
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_READ_INDEX_RESP, .req_id = rc->req_id, .index = rd.read_states[i].index};
            send_gw(r, rc->ident, rc->ident_len, &m);
            free(rc);
        }
        for (size_t i = 0; i < rd.n_read_failures; i++) {
            read_ctx_t *rc = cairn_u64map_take(r->reads, rd.read_failures[i]);
            if (!rc)
                continue;
            send_gw_error(r, rc->ident, rc->ident_len, CAIRN_IPC_READ_INDEX_RESP, rc->req_id, CAIRN_ETCD_NO_LEADER);
            free(rc);
        }
        learn_members(r, rd.entries, rd.n_entries);
        int snap = rd.has_snapshot, conf_changed = rd.conf_changed;
        uint64_t snap_index = rd.snapshot_index, snap_term = rd.snapshot_term, snap_from = rd.snapshot_from;
        cairn_raft_advance(r->raft, &rd);
        if (conf_changed)
            reconcile_peers(r);
        if (snap) {
            /* The leader's log no longer reaches back to ours: pull its state machine. Its
             * stored snapshots its current state (at or past snap_index); ours swaps it in
             * atomically after the APPENDs already sent (same socket, in order). */
            cairn_info("installing a snapshot from the leader", "index=%llu term=%llu from=%016llx",
                       (unsigned long long)snap_index, (unsigned long long)snap_term, (unsigned long long)snap_from);
            memset(&r->snap, 0, sizeof r->snap);
            r->snap.active = 1;
            r->snap.index = snap_index;
            r->snap.term = snap_term;
            r->snap.from = snap_from;
            snap_pull(r);
        }
    }
}

/* ------------------------------------------------------------------ compaction */

/* Bounds raftd's in-memory log, in entries and in bytes. Every member keeps
 * cairn_config_log_keep_entries() entries behind its durable commit point (etcd's
 * SnapshotCatchUpEntries), so that a member a little behind is served from the log; a leader
 * also keeps what any member has not acknowledged yet (one that is down too: a restart of a
 * member should not cost a snapshot of the whole store), but never more than
 * --raft-log-memory-bytes of entry data: a member further behind is sent a snapshot. Only committed and durable entries go (stored holds them in the WAL and
 * the state machine). Entries not yet committed stay whatever their size; flow control
 * (max_inflight, max_msg_bytes) bounds them. */
static void maybe_compact(raftd_t *r)
{
    if (!r->raft)
        return;
    uint64_t commit = cairn_raft_commit(r->raft);
    uint64_t durable = commit < r->persisted_index ? commit : r->persisted_index;
    uint64_t keep = cairn_config_log_keep_entries(r->cfg);
    uint64_t step = keep / 2 < COMPACT_MIN_STEP ? (keep / 2 ? keep / 2 : 1) : COMPACT_MIN_STEP;
    uint64_t needed = durable; /* the lowest index a running member still needs */
    if (cairn_raft_role(r->raft) == CAIRN_RAFT_LEADER) {
        const uint64_t *ids;
        size_t n = cairn_raft_voters(r->raft, &ids);
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < n; i++) {
                cairn_raft_progress_t pr;
                if (ids[i] == cairn_config_member_id(r->cfg) || cairn_raft_progress(r->raft, ids[i], &pr) != 0)
                    continue;
                if (pr.match < needed)
                    needed = pr.match;
            }
            n = cairn_raft_learners(r->raft, &ids);
        }
    }
    uint64_t snap = cairn_raft_snapshot_index(r->raft);
    uint64_t target = needed > keep ? needed - keep : 0;
    if (target < snap + step)
        target = 0; /* amortise: compaction moves memory */
    uint64_t max_bytes = r->cfg->raft_log_memory_bytes;
    if (cairn_raft_log_bytes(r->raft) > max_bytes) {
        /* over the byte budget: down to 3/4 of it, whatever members need */
        uint64_t fit = cairn_raft_index_to_fit(r->raft, max_bytes / 4 * 3);
        if (fit > target)
            target = fit;
    }
    if (target > durable)
        target = durable;
    if (target <= snap)
        return;
    uint64_t term = cairn_raft_term_at(r->raft, target);
    int rc = term ? cairn_raft_compact(r->raft, target, term) : CAIRN_EINVAL;
    if (rc)
        cairn_debug("compaction refused", "index=%llu err=\"%s\"", (unsigned long long)target, cairn_strerror(rc));
}

/* ------------------------------------------------------------------ state load */

static void note_proposer(raftd_t *r, const uint8_t *ident, size_t len)
{
    for (size_t i = 0; i < r->n_proposers; i++)
        if (r->proposers[i].len == len && memcmp(r->proposers[i].ident, ident, len) == 0)
            return;
    if (r->n_proposers < 32 && len <= sizeof r->proposers[0].ident) {
        memcpy(r->proposers[r->n_proposers].ident, ident, len);
        r->proposers[r->n_proposers++].len = len;
    }
}

/* The core is being rebuilt (stored restarted): proposals it held that stored had not made
 * durable are gone, and those it had may still commit. Tell every gateway that proposed:
 * each fails its in-flight writes with etcd's "outcome unknown" timeout text at once,
 * instead of letting clients wait out their deadlines. */
static void notify_reload(raftd_t *r)
{
    for (size_t i = 0; i < r->n_proposers; i++) {
        send_gw_error(r, r->proposers[i].ident, r->proposers[i].len, CAIRN_IPC_PROPOSALS_LOST, 0,
                      CAIRN_ETCD_TIMEOUT_LEADER_FAIL);
    }
    r->n_proposers = 0;
}

static void start_core(raftd_t *r, const cairn_ipc_msg_t *m)
{
    cairn_raft_destroy(&r->raft);
    fail_reads(r, CAIRN_ETCD_LEADER_CHANGED);
    memset(&r->snap, 0, sizeof r->snap);
    /* The membership where the log starts (replicated: stored's 'C' records), else the one a
     * member starts with; the configuration entries of the log are re-applied by the core. */
    cairn_members_t ms = {0};
    if (!m->body_len || cairn_members_decode(&ms, m->body, m->body_len) != 0 || ms.n == 0) {
        cairn_members_clear(&ms);
        if (cairn_members_initial(&ms, r->cfg) != 0) {
            r->fatal = CAIRN_ENOMEM;
            return;
        }
    }
    if (m->cluster_id)
        r->cluster_id = m->cluster_id;
    else if (!r->cluster_id && r->cfg->initial_cluster_state != CAIRN_CLUSTER_EXISTING)
        r->cluster_id = cairn_config_cluster_id(r->cfg);
    uint64_t *voters = calloc(ms.n + 1, sizeof *voters), *learners = calloc(ms.n + 1, sizeof *learners);
    size_t nv = 0, nl = 0;
    const cairn_raft_entry_t *ents = m->entries; /* the same type: no copy */
    if (!voters || !learners) {
        free(voters);
        free(learners);
        cairn_members_clear(&ms);
        r->fatal = CAIRN_ENOMEM;
        return;
    }
    for (size_t i = 0; i < ms.n; i++) {
        if (ms.v[i].learner)
            learners[nl++] = ms.v[i].id;
        else
            voters[nv++] = ms.v[i].id;
    }
    /* metadata: what we knew (names learned earlier stay), the snapshot's, then the log's */
    for (size_t i = 0; i < ms.n; i++)
        cairn_members_put(&r->members, ms.v[i].id, ms.v[i].name, ms.v[i].peer_urls, ms.v[i].n_peer_urls,
                          ms.v[i].learner);
    learn_members(r, ents, m->n_entries);
    cairn_members_clear(&ms);
    int64_t ticks_per_election = r->cfg->election_ms / r->cfg->heartbeat_ms;
    cairn_raft_config_t rc = {
        .id = cairn_config_member_id(r->cfg),
        .voters = voters,
        .n_voters = nv,
        .learners = learners,
        .n_learners = nl,
        .election_tick = ticks_per_election > 1 ? (int)ticks_per_election : 10,
        .heartbeat_tick = 1,
        .seed = cairn_random_u64(),
        .pre_vote = 1,
        .check_quorum = 1,
        .max_msg_bytes = 1u << 20,
        .max_inflight = 256,
        .hs = {m->term, m->vote, m->commit},
        .snap_index = m->snap_index,
        .snap_term = m->snap_term,
        .entries = ents,
        .n_entries = m->n_entries,
    };
    int err = 0;
    r->raft = nv ? cairn_raft_new(&rc, &err) : NULL;
    if (!nv)
        err = CAIRN_EINVAL;
    free(voters);
    free(learners);
    if (!r->raft) {
        cairn_error("cannot start raft core", "err=\"%s\"", cairn_strerror(err));
        r->fatal = err ? err : CAIRN_EINVAL;
        return;
    }
    r->stored_boot = m->boot_id;
    r->sent_commit = r->sent_term = r->sent_leader = 0;
    r->acked_seq = r->seq;
    r->persisted_index = m->n_entries ? m->entries[m->n_entries - 1].index : m->snap_index;
    cairn_info("raft state loaded", "term=%llu vote=%016llx commit=%llu entries=%zu first=%llu pages=%zu",
               (unsigned long long)m->term, (unsigned long long)m->vote, (unsigned long long)m->commit,
               m->n_entries, (unsigned long long)(m->snap_index + 1), r->load.pages);
    /* Everything stored handed us is durable. */
    if (m->n_entries)
        cairn_raft_persisted(r->raft, m->entries[m->n_entries - 1].index, m->entries[m->n_entries - 1].term);
    if (single_voter(r))
        cairn_raft_campaign(r->raft); /* a single voter need not wait out an election timeout */
    reconcile_peers(r);
    process_ready(r);
}

/* ------------------------------------------------------------------ messages */

/* stored restarted and lost what it had not synced: to the core that is a crash of this
 * member, so the core is rebuilt from what stored really holds (LOAD). */
static void load_clear(raftd_t *r);

static void reload_from_stored(raftd_t *r, const char *why)
{
    cairn_warn(why, NULL);
    cairn_raft_destroy(&r->raft);
    load_clear(r);
    notify_reload(r);
    r->last_load_sent = 0; /* ask for the new state now, not at the next retry tick */
    release_held(r, 1);    /* what they promised may be lost */
    fail_reads(r, CAIRN_ETCD_LEADER_CHANGED);
}

static void load_clear(raftd_t *r)
{
    for (size_t i = 0; i < r->load.n; i++)
        free((void *)r->load.ents[i].data);
    free(r->load.ents);
    free(r->load.members);
    uint64_t seq = r->load.seq;
    memset(&r->load, 0, sizeof r->load);
    r->load.seq = seq; /* answers to requests sent before stay stale */
}

/* Every request gets a new seq and only the answer to the latest one is taken: a retried
 * request (stored was slow) would otherwise get two answers, and the second one, no longer
 * continuing the load, would restart it, again and again. */
static void load_request(raftd_t *r, uint64_t from)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LOAD, .first = from, .seq = ++r->load.seq};
    send_stored(r, &m);
    r->last_load_sent = cairn_now_ms();
}

/* One page of a LOAD: the first one (it starts right after its snapshot point) begins a load,
 * the next ones must continue it exactly (same stored instance, same starting point, the next
 * index); anything else starts over. When the pages reach the last index, the core starts. */
static void load_page(raftd_t *r, const cairn_ipc_msg_t *m)
{
    if (r->raft || m->seq != r->load.seq)
        return; /* an answer to an earlier LOAD (retried, or from before a restart of the load) */
    int first = m->n_entries == 0 || m->entries[0].index == m->snap_index + 1;
    if (first) {
        load_clear(r);
        r->load.active = 1;
        r->load.boot_id = m->boot_id;
        r->load.term = m->term;
        r->load.vote = m->vote;
        r->load.commit = m->commit;
        r->load.snap_index = m->snap_index;
        r->load.snap_term = m->snap_term;
        r->load.cluster_id = m->cluster_id;
        r->load.last = m->last;
        r->load.next = m->snap_index + 1;
        if (m->body_len) {
            if (!(r->load.members = malloc(m->body_len)))
                goto restart;
            memcpy(r->load.members, m->body, m->body_len);
            r->load.members_len = m->body_len;
        }
    } else if (!r->load.active || m->boot_id != r->load.boot_id || m->snap_index != r->load.snap_index ||
               m->entries[0].index != r->load.next) {
        goto restart;
    }
    if (r->load.n + m->n_entries > r->load.cap) {
        size_t nc = r->load.cap ? r->load.cap : 1024;
        while (nc < r->load.n + m->n_entries)
            nc *= 2;
        cairn_ipc_entry_t *ne = realloc(r->load.ents, nc * sizeof *ne);
        if (!ne)
            goto restart;
        r->load.ents = ne;
        r->load.cap = nc;
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        cairn_ipc_entry_t e = m->entries[i];
        if (e.len) {
            uint8_t *d = malloc(e.len);
            if (!d)
                goto restart;
            memcpy(d, e.data, e.len);
            e.data = d;
        } else {
            e.data = NULL;
        }
        r->load.ents[r->load.n++] = e;
    }
    r->load.next += m->n_entries;
    r->load.pages++;
    if (m->n_entries && r->load.next - 1 < r->load.last) {
        load_request(r, r->load.next);
        return;
    }
    cairn_ipc_msg_t whole = {.type = CAIRN_IPC_LOAD_RESP, .boot_id = r->load.boot_id, .term = r->load.term,
                             .vote = r->load.vote, .commit = r->load.commit, .snap_index = r->load.snap_index,
                             .snap_term = r->load.snap_term, .cluster_id = r->load.cluster_id,
                             .body = r->load.members, .body_len = r->load.members_len, .entries = r->load.ents,
                             .n_entries = r->load.n};
    start_core(r, &whole);
    load_clear(r);
    return;
restart:
    cairn_warn("raft state load restarts", "page_first=%llu expected=%llu",
               (unsigned long long)(m->n_entries ? m->entries[0].index : 0), (unsigned long long)r->load.next);
    load_clear(r);
    load_request(r, 0);
}

static void handle_stored(raftd_t *r, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected message from stored", "err=\"%s\"", cairn_strerror(rc));
        return;
    }
    switch (m.type) {
    case CAIRN_IPC_LOAD_RESP:
        load_page(r, &m);
        break;
    case CAIRN_IPC_HELLO:
        if (r->raft && m.boot_id != r->stored_boot)
            reload_from_stored(r, "stored restarted; reloading raft state");
        break;
    case CAIRN_IPC_APPENDED:
        if (r->raft && m.boot_id != r->stored_boot) {
            /* another stored instance: it cannot vouch for what we sent the old one */
            reload_from_stored(r, "ack from a restarted stored; reloading raft state");
            break;
        }
        if (r->raft && m.code == 0) {
            r->acked_seq = m.seq;
            r->persisted_index = m.index;
            cairn_raft_persisted(r->raft, m.index, m.term);
            release_held(r, 0);
        }
        break;
    case CAIRN_IPC_SNAP_CHUNK:
        snap_on_chunk(r, &m);
        break;
    case CAIRN_IPC_SNAP_ACK:
        snap_on_ack(r, &m);
        break;
    case CAIRN_IPC_ERROR:
        cairn_warn("stored reported an error", "code=%lld msg=\"%.*s\"", (long long)m.code, (int)m.message_len,
                   (const char *)m.message);
        break;
    default:
        cairn_warn("unexpected message from stored", "type=%s", cairn_ipc_type_name(m.type));
    }
    cairn_ipc_msg_release(&m);
}

/* etcd 3.4 serves only Status and serializable Range on a learner (isRPCSupportedForLearner):
 * both go straight to stored; whatever reaches raftd is refused. */
static int self_is_learner(raftd_t *r)
{
    const uint64_t *l;
    size_t nl = r->raft ? cairn_raft_learners(r->raft, &l) : 0;
    return id_in(l, nl, cairn_config_member_id(r->cfg));
}

static void handle_gw(raftd_t *r, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected message from gateway", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .code = rc};
        cairn_ipc_set_message(&e, cairn_strerror(rc));
        send_gw(r, ident, ident_len, &e);
        return;
    }
    int removed = r->removed_logged; /* removed from the cluster: etcd stops such a member */
    if ((removed || self_is_learner(r)) &&
        (m.type == CAIRN_IPC_PROPOSE || m.type == CAIRN_IPC_READ_INDEX || m.type == CAIRN_IPC_MEMBERS ||
         m.type == CAIRN_IPC_MEMBER_CHANGE || m.type == CAIRN_IPC_TRANSFER)) {
        int type = m.type == CAIRN_IPC_PROPOSE      ? CAIRN_IPC_PROPOSE_FAIL
                   : m.type == CAIRN_IPC_READ_INDEX ? CAIRN_IPC_READ_INDEX_RESP
                                                    : CAIRN_IPC_RESULT;
        send_gw_error(r, ident, ident_len, type, m.req_id, removed ? CAIRN_ETCD_STOPPED : CAIRN_ETCD_LEARNER_NOT_SUPPORTED);
        cairn_ipc_msg_release(&m);
        return;
    }
    switch (m.type) {
    case CAIRN_IPC_PROPOSE: {
        note_proposer(r, ident, ident_len);
        rc = r->raft ? cairn_raft_propose(r->raft, m.body, m.body_len, NULL) : CAIRN_ENOT_LEADER;
        if (rc) {
            send_gw_error(r, ident, ident_len, CAIRN_IPC_PROPOSE_FAIL, m.req_id,
                          rc == CAIRN_ENOT_LEADER ? CAIRN_ETCD_NO_LEADER
                          : rc == CAIRN_ESTATE    ? CAIRN_ETCD_TIMEOUT_LEADER_TRANSFER
                                                  : CAIRN_ETCD_NOT_CAPABLE);
        }
        break;
    }
    case CAIRN_IPC_READ_INDEX: {
        read_ctx_t *c = malloc(sizeof *c);
        if (!c || ident_len > sizeof c->ident) {
            free(c);
            break;
        }
        memcpy(c->ident, ident, ident_len);
        c->ident_len = ident_len;
        c->req_id = m.req_id;
        uint64_t ctx = ++r->next_ctx;
        cairn_u64map_put(r->reads, ctx, c);
        if (!r->raft || cairn_raft_read_index(r->raft, ctx) != 0) {
            cairn_u64map_take(r->reads, ctx);
            send_gw_error(r, ident, ident_len, CAIRN_IPC_READ_INDEX_RESP, m.req_id, CAIRN_ETCD_NO_LEADER);
            free(c);
        }
        break;
    }
    case CAIRN_IPC_MEMBERS:
        answer_members(r, ident, ident_len, m.req_id);
        break;
    case CAIRN_IPC_MEMBER_CHANGE: {
        conf_origin_t o = {.req_id = m.req_id, .at = cairn_now_ms()};
        if (ident_len > sizeof o.ident)
            break;
        memcpy(o.ident, ident, ident_len);
        o.ident_len = ident_len;
        conf_begin(r, (int)m.op, m.body, m.body_len, &o);
        break;
    }
    case CAIRN_IPC_TRANSFER: {
        /* etcd: MoveLeader must reach the leader; the target must be a voting member */
        const uint64_t *vs = NULL;
        size_t nvs = r->raft ? cairn_raft_voters(r->raft, &vs) : 0;
        int is_member = id_in(vs, nvs, m.target);
        if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER) {
            answer_error(r, ident, ident_len, m.req_id, CAIRN_ETCD_NOT_LEADER);
        } else if (!is_member) {
            answer_error(r, ident, ident_len, m.req_id, CAIRN_ETCD_BAD_LEADER_TRANSFEREE);
        } else if (m.target == cairn_config_member_id(r->cfg)) {
            answer(r, ident, ident_len, m.req_id, CAIRN_GRPC_OK, NULL, NULL, 0); /* already leads */
        } else if (r->transfer.req_id || ident_len > sizeof r->transfer.ident) {
            answer_error(r, ident, ident_len, m.req_id, CAIRN_ETCD_LEADER_CHANGED);
        } else if (cairn_raft_transfer_leader(r->raft, m.target) != 0) {
            answer_error(r, ident, ident_len, m.req_id, CAIRN_ETCD_BAD_LEADER_TRANSFEREE);
        } else {
            memcpy(r->transfer.ident, ident, ident_len);
            r->transfer.ident_len = ident_len;
            r->transfer.req_id = m.req_id;
            r->transfer.target = m.target;
            /* etcd waits up to its request timeout for the transferee to take over */
            r->transfer.deadline = cairn_now_ms() + 5000 + 2 * r->cfg->election_ms;
        }
        break;
    }
    default: {
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .req_id = m.req_id, .code = CAIRN_EUNKNOWN_MSG};
        cairn_ipc_set_message(&e, "raftd does not handle this message type");
        send_gw(r, ident, ident_len, &e);
    }
    }
    cairn_ipc_msg_release(&m);
}

/* cairn_zmq_drain handlers */
static int on_stored_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    handle_stored(ctx, frame, len);
    return 0;
}

static int on_peer_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    raftd_t *r = ctx;
    if (!r->isolated)
        handle_peer(r, frame, len);
    return 0;
}

static int on_gw_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    handle_gw(ctx, ident, ident_len, frame, len);
    return 0;
}

/* Starts a leadership transfer (thesis §3.10) to the voter with the longest log among those
 * that are running; 1 when one started. */
/* Tells every peer that this member is stopping (PEER_STOPPING), once. The peer sockets
 * linger a little so the notice leaves before they close. */
static void tell_peers_stopping(raftd_t *r)
{
    for (size_t i = 0; i < r->n_peers; i++) {
        send_peer_signal(r, r->peers[i].id, CAIRN_IPC_PEER_STOPPING);
        if (r->peers[i].dealer)
            zsock_set_linger(r->peers[i].dealer, 200);
    }
}

static int begin_handoff(raftd_t *r)
{
    if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER)
        return 0;
    const uint64_t *v;
    size_t nv = cairn_raft_voters(r->raft, &v);
    uint64_t best = 0, best_match = 0;
    for (size_t i = 0; i < nv; i++) {
        cairn_raft_progress_t pr;
        if (v[i] == cairn_config_member_id(r->cfg) || !member_started(r, v[i]) ||
            cairn_raft_progress(r->raft, v[i], &pr) != 0)
            continue;
        if (!best || pr.match > best_match) {
            best = v[i];
            best_match = pr.match;
        }
    }
    if (!best || cairn_raft_transfer_leader(r->raft, best) != 0)
        return 0;
    r->handoff_to = best;
    cairn_info("stopping: handing leadership over first", "to=%016llx", (unsigned long long)best);
    process_ready(r);
    return 1;
}

int main(int argc, char **argv)
{
    raftd_t R = {0}, *r = &R;
    int exit_code = 1;
    int rc;
    r->cfg = cairn_daemon_init("raftd", argc, argv, on_signal, &exit_code);
    if (!r->cfg)
        return exit_code;
    exit_code = 1;
    r->reads = cairn_u64map_new();
    char ep[512], sep[512];
    if (cairn_config_ipc_endpoint(r->cfg, "raftd", ep, sizeof ep) < 0 ||
        cairn_config_ipc_endpoint(r->cfg, "stored", sep, sizeof sep) < 0) {
        cairn_error("ipc endpoint path too long", "run_dir=%s", r->cfg->run_dir);
        goto out;
    }
    r->router = cairn_zmq_router_bind(ep, &rc);
    if (!r->router) {
        cairn_error("cannot bind", "endpoint=%s err=\"%s\"", ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    r->stored = cairn_zmq_dealer_connect(sep, "raftd", &rc);
    if (!r->stored) {
        cairn_error("cannot connect to stored", "endpoint=%s", sep);
        goto out;
    }
    const char *tf = getenv("CAIRN_TEST_FAULTS");
    r->faults_enabled = tf && strcmp(tf, "1") == 0;
    snprintf(r->fault_path, sizeof r->fault_path, "%s/fault-isolate", r->cfg->run_dir);
    if (r->faults_enabled)
        cairn_warn("test fault switch enabled", "file=%s", r->fault_path);
    r->held_tail = &r->held;
    r->fwd = cairn_u64map_new();
    if (cairn_members_initial(&r->members, r->cfg) != 0 || !r->fwd)
        goto out;
    /* a member that starts with peers listens at once; one that starts alone, once one is added */
    if (r->cfg->n_members > 1 && (rc = listen_peers(r)) != 0) {
        cairn_error("cannot set up the peer transport", "err=\"%s\"", cairn_strerror(rc));
        goto out;
    }
    cairn_info("raftd ready", "endpoint=%s member_id=%016llx members=%zu", ep,
               (unsigned long long)cairn_config_member_id(r->cfg), r->cfg->n_members);
    cairn_daemon_notify_ready("raftd ready");
    r->next_tick = cairn_now_ms() + r->cfg->heartbeat_ms;
    int64_t next_sweep = 0, handoff_until = 0;
    int handoff = 0, told_stopping = 0;
    for (;;) {
        if (g_stop || r->fatal) {
            if (!told_stopping) {
                tell_peers_stopping(r);
                told_stopping = 1;
            }
            /* A leader asked to stop hands leadership over first (etcd does the same), so the
             * cluster does not wait out an election timeout without a leader. */
            if (!r->fatal && !handoff && begin_handoff(r)) {
                handoff = 1;
                handoff_until = cairn_now_ms() + 2 * r->cfg->election_ms;
            }
            /* done once another member leads (the TimeoutNow went out and it won), or when the
             * member it hands over to says it is stopping too (the whole cluster is) */
            peer_t *to = handoff ? find_peer(r, r->handoff_to) : NULL;
            if (to && to->stopping)
                cairn_info("the member leadership was handed to is stopping too; not waiting for it",
                           "to=%016llx", (unsigned long long)to->id);
            if (!handoff || !r->raft || cairn_now_ms() >= handoff_until || (to && to->stopping) ||
                (cairn_raft_leader(r->raft) && cairn_raft_leader(r->raft) != cairn_config_member_id(r->cfg)))
                break;
        }
        int64_t now = cairn_now_ms();
        if (!r->raft && now - r->last_load_sent >= 500)
            load_request(r, r->load.active ? r->load.next : 0); /* no answer yet: ask again */
        int timeout = (int)(r->next_tick - now);
        if (timeout < 0)
            timeout = 0;
        if (!r->raft && timeout > 100)
            timeout = 100;
        zmq_pollitem_t items[2 + 8];
        int nitems = 2;
        items[0] = (zmq_pollitem_t){zsock_resolve(r->router), 0, ZMQ_POLLIN, 0};
        items[1] = (zmq_pollitem_t){zsock_resolve(r->stored), 0, ZMQ_POLLIN, 0};
        for (size_t i = 0; i < r->n_peer_routers && nitems < 10; i++)
            items[nitems++] = (zmq_pollitem_t){zsock_resolve(r->peer_routers[i]), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, nitems, timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /* stored first: acks free up commits that the proposals below then ride along with */
        if (items[1].revents & ZMQ_POLLIN)
            cairn_zmq_drain(r->stored, 0, 100000, on_stored_frame, r);
        for (int i = 2; i < nitems; i++)
            if (items[i].revents & ZMQ_POLLIN)
                cairn_zmq_drain(r->peer_routers[i - 2], 1, 100000, on_peer_frame, r);
        if (items[0].revents & ZMQ_POLLIN)
            cairn_zmq_drain(r->router, 1, 100000, on_gw_frame, r);
        now = cairn_now_ms();
        while (r->raft && now >= r->next_tick) {
            cairn_raft_tick(r->raft);
            r->next_tick += r->cfg->heartbeat_ms;
            if (now - r->next_tick > 10 * r->cfg->heartbeat_ms)
                r->next_tick = now + r->cfg->heartbeat_ms; /* after a stall, don't burst ticks */
        }
        if (!r->raft)
            r->next_tick = now + r->cfg->heartbeat_ms;
        process_ready(r);
        conf_poll(r);
        maybe_compact(r);
        /* stored answers a restore however long it takes (or restarts, which resets this) */
        if (r->snap.active && now - r->snap.last_progress > (r->snap.restoring ? SNAP_RESTORE_MS : SNAP_STALL_MS))
            snap_fail(r, r->snap.restoring ? "restoring the snapshot took too long" : "no progress from the leader");
        if (r->n_peers && now >= r->next_attrs) {
            send_attrs(r);
            r->next_attrs = now + ATTRS_EVERY_MS;
        }
        if (r->faults_enabled && now >= r->next_fault_check) {
            int iso = access(r->fault_path, F_OK) == 0;
            if (iso != r->isolated)
                cairn_warn(iso ? "test fault: isolated from peers" : "test fault: peers reachable again", NULL);
            r->isolated = iso;
            r->next_fault_check = now + 50;
        }
        if (now >= next_sweep) {
            sweep_fwd(r, now);
            if (r->raft)
                reconcile_peers(r); /* closes connections to members removed a while ago */
            next_sweep = now + 5000;
        }
        if (r->transfer.req_id && now >= r->transfer.deadline)
            finish_transfer(r, CAIRN_ETCD_TIMEOUT_LEADER_TRANSFER);
    }
    cairn_info("raftd stopping", NULL);
    finish_transfer(r, CAIRN_ETCD_STOPPED);
    exit_code = r->fatal ? 1 : 0;
    fail_reads(r, CAIRN_ETCD_STOPPED);
out:
    cairn_raft_destroy(&r->raft);
    load_clear(r);
    cairn_u64map_destroy(&r->reads);
    zsock_destroy(&r->router);
    zsock_destroy(&r->stored);
    if (r->held_tail)
        release_held(r, 1);
    for (size_t i = 0; i < r->n_peer_routers; i++)
        zsock_destroy(&r->peer_routers[i]);
    free(r->peer_routers);
    for (size_t i = 0; i < r->n_peers; i++)
        peer_close(&r->peers[i]);
    free(r->peers);
    cairn_members_clear(&r->members);
    if (r->fwd) {
        size_t pos = 0;
        uint64_t key;
        void *val;
        while (cairn_u64map_next(r->fwd, &pos, &key, &val))
            free(val);
        cairn_u64map_destroy(&r->fwd);
    }
    cairn_config_destroy(&r->cfg);
    return exit_code;
}
