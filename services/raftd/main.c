/* raftd - consensus and time for one Cairn node (DESIGN.md "raftd").
 *
 * A thin shell around the pure raft core (core/raft.h): it turns socket messages and the
 * clock into core events and carries each ready out:
 *   - hard state + entries  -> stored as APPEND (tagged with a sequence number);
 *   - ready.msgs            -> peers at once (the leader writes in parallel, thesis §10.2.1);
 *   - ready.msgs_after_persist -> held until stored acks that APPEND's sequence;
 *   - stored's APPENDED      -> cairn_raft_persisted();
 *   - a new commit index     -> stored as COMMIT (stored applies min(commit, persisted));
 *   - read states            -> the asking gateway as READ_INDEX_RESP.
 * Sockets: ROUTER <run>/raftd.ipc for the gateways; DEALER "raftd" to <run>/stored.ipc;
 * ROUTER on each --listen-peer-urls (tcp) for the other members' raftds, and one DEALER per
 * other member connected to its advertised peer URL. Peer sends never block (a full queue
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
#include "cairn_ipc.h"
#include "cairn_log.h"
#include "cairn_u64map.h"
#include "cairn_zmq.h"
#include "raft.h"
#include "rpc.pb-c.h"

/* A peer message handled by the shell, not the core: the sender's advertised client URLs
 * (comma-separated, in entries[0].data), sent every couple of seconds so that MemberList on
 * any member shows every member's client URLs (etcd publishes them through the log; here
 * they are soft state, relearned within seconds after a restart). */
#define SHELL_MSG_ATTRS 200
/* Log compaction (thesis ch. 5): entries kept behind the durable commit point on a leader
 * (etcd's SnapshotCatchUpEntries), so that a follower a little behind is served from the
 * log; compaction runs when it can drop at least COMPACT_MIN_STEP entries. */
#define LEADER_KEEP_ENTRIES 5000
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
} peer_t;

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
    uint64_t stored_boot;
    uint64_t seq, acked_seq;
    uint64_t persisted_index; /* last index stored has made durable (this epoch) */
    uint64_t sent_commit, sent_term, sent_leader;
    uint64_t next_ctx;
    cairn_u64map_t *reads; /* ctx -> read_ctx_t */
    int64_t next_tick;
    int64_t last_load_sent;
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

static void fail_reads(raftd_t *r, const char *why)
{
    size_t pos = 0;
    uint64_t key;
    void *val;
    while (cairn_u64map_next(r->reads, &pos, &key, &val)) {
        read_ctx_t *rc = val;
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_READ_INDEX_RESP, .req_id = rc->req_id, .code = 14};
        cairn_ipc_set_message(&m, why);
        send_gw(r, rc->ident, rc->ident_len, &m);
        free(rc);
    }
    cairn_u64map_destroy(&r->reads);
    r->reads = cairn_u64map_new();
}

/* ------------------------------------------------------------------ peers */

/* "http://host:port" -> "tcp://host:port" (localhost -> 127.0.0.1: ZeroMQ binds addresses). */
static int peer_endpoint(const char *url, char *out, size_t len)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    char hostport[256];
    if (hl >= sizeof hostport)
        return CAIRN_EINVAL;
    memcpy(hostport, p, hl);
    hostport[hl] = 0;
    if (strncmp(hostport, "localhost:", 10) == 0)
        return snprintf(out, len, "tcp://127.0.0.1:%s", hostport + 10) < (int)len ? 0 : CAIRN_EINVAL;
    return snprintf(out, len, "tcp://%s", hostport) < (int)len ? 0 : CAIRN_EINVAL;
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
    cairn_ipc_entry_t stackbuf[64], *ents = stackbuf;
    if (m->n_entries > 64 && !(ents = malloc(m->n_entries * sizeof *ents)))
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < m->n_entries; i++)
        ents[i] = (cairn_ipc_entry_t){m->entries[i].index, m->entries[i].term, m->entries[i].type,
                                      m->entries[i].data, m->entries[i].len};
    cairn_ipc_msg_t im = {.type = CAIRN_IPC_RAFT, .cluster_id = cairn_config_cluster_id(r->cfg),
                          .raft_type = m->type, .from = m->from, .to = m->to, .term = m->term,
                          .log_term = m->log_term, .index = m->index, .commit = m->commit, .reject = m->reject,
                          .reject_hint = m->reject_hint, .context = m->context, .snap_index = m->snap_index,
                          .snap_term = m->snap_term, .entries = ents, .n_entries = m->n_entries};
    int rc = cairn_ipc_encode(&im, frame, len);
    if (ents != stackbuf)
        free(ents);
    return rc;
}

static void free_frame(void *data, void *hint) { free(data); }

/* Takes ownership of frame. */
static void send_peer_frame(raftd_t *r, uint64_t to, uint8_t *frame, size_t len)
{
    peer_t *p = find_peer(r, to);
    if (!p || r->isolated) {
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

static void handle_peer(raftd_t *r, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected peer message", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        return;
    }
    if (m.type != CAIRN_IPC_RAFT) {
        cairn_warn("unexpected peer message", "type=%s", cairn_ipc_type_name(m.type));
    } else if (m.cluster_id == cairn_config_cluster_id(r->cfg) && m.raft_type == SHELL_MSG_ATTRS) {
        peer_t *p = find_peer(r, m.from);
        if (p && m.n_entries == 1 && m.entries[0].len < 4096) {
            char *u = malloc(m.entries[0].len + 1);
            if (u) {
                memcpy(u, m.entries[0].data, m.entries[0].len);
                u[m.entries[0].len] = 0;
                free(p->client_urls);
                p->client_urls = u;
            }
        }
    } else if (m.cluster_id != cairn_config_cluster_id(r->cfg)) {
        static int64_t last_warn;
        if (cairn_now_ms() - last_warn > 5000) {
            cairn_warn("message from another cluster dropped (check --initial-cluster-token)",
                       "their_cluster=%016llx ours=%016llx from=%016llx", (unsigned long long)m.cluster_id,
                       (unsigned long long)cairn_config_cluster_id(r->cfg), (unsigned long long)m.from);
            last_warn = cairn_now_ms();
        }
    } else if (r->raft && m.raft_type < 256) {
        cairn_raft_entry_t stackbuf[64], *ents = stackbuf;
        if (m.n_entries > 64 && !(ents = malloc(m.n_entries * sizeof *ents))) {
            cairn_ipc_msg_release(&m);
            return;
        }
        for (size_t i = 0; i < m.n_entries; i++)
            ents[i] = (cairn_raft_entry_t){m.entries[i].index, m.entries[i].term, m.entries[i].type,
                                           m.entries[i].data, m.entries[i].len};
        cairn_raft_msg_t rm = {.type = (uint8_t)m.raft_type, .from = m.from, .to = m.to, .term = m.term,
                               .log_term = m.log_term, .index = m.index, .commit = m.commit,
                               .reject = (uint8_t)(m.reject != 0), .reject_hint = m.reject_hint,
                               .context = m.context, .entries = ents, .n_entries = m.n_entries,
                               .snap_index = m.snap_index, .snap_term = m.snap_term};
        rc = cairn_raft_step(r->raft, &rm);
        if (rc)
            cairn_debug("peer message refused by the core", "type=%u err=\"%s\"", (unsigned)rm.type,
                        cairn_strerror(rc));
        if (ents != stackbuf)
            free(ents);
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
    cairn_raft_entry_t e = {0, 0, 0, (const uint8_t *)urls, n};
    for (size_t i = 0; i < r->n_peers; i++) {
        cairn_raft_msg_t m = {.type = SHELL_MSG_ATTRS, .from = cairn_config_member_id(r->cfg), .to = r->peers[i].id,
                              .entries = &e, .n_entries = 1};
        send_peer(r, &m);
    }
}

static void answer(raftd_t *r, const uint8_t *ident, size_t len, uint64_t req_id, int code, const char *msg,
                   const uint8_t *body, size_t body_len)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RESULT, .req_id = req_id, .code = code, .body = body, .body_len = body_len};
    cairn_ipc_set_message(&m, msg);
    send_gw(r, ident, len, &m);
}

/* MemberList from the configuration, with the client URLs each member advertises. */
static void answer_members(raftd_t *r, const uint8_t *ident, size_t ident_len, uint64_t req_id)
{
    cairn_config_t *cfg = r->cfg;
    size_t n = cfg->n_members;
    Etcdserverpb__Member *ms = calloc(n ? n : 1, sizeof *ms);
    Etcdserverpb__Member **mp = calloc(n ? n : 1, sizeof *mp);
    char ***split = calloc(n ? n : 1, sizeof *split);
    char **bufs = calloc(n ? n : 1, sizeof *bufs);
    if (!ms || !mp || !split || !bufs)
        goto out;
    for (size_t i = 0; i < n; i++) {
        etcdserverpb__member__init(&ms[i]);
        ms[i].id = cfg->members[i].id;
        ms[i].name = cfg->members[i].name;
        ms[i].peerurls = cfg->members[i].peer_urls.v;
        ms[i].n_peerurls = cfg->members[i].peer_urls.n;
        if (i == cfg->self) {
            ms[i].clienturls = cfg->advertise_client_urls.v;
            ms[i].n_clienturls = cfg->advertise_client_urls.n;
        } else {
            peer_t *p = find_peer(r, cfg->members[i].id);
            if (p && p->client_urls && (bufs[i] = strdup(p->client_urls))) {
                size_t cnt = 1;
                for (char *c = bufs[i]; *c; c++)
                    cnt += *c == ',';
                split[i] = calloc(cnt, sizeof(char *));
                size_t k = 0;
                for (char *tok = strtok(bufs[i], ","); tok && split[i] && k < cnt; tok = strtok(NULL, ","))
                    split[i][k++] = tok;
                ms[i].clienturls = split[i];
                ms[i].n_clienturls = split[i] ? k : 0;
            }
        }
        mp[i] = &ms[i];
    }
    Etcdserverpb__MemberListResponse resp = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    resp.members = mp;
    resp.n_members = n;
    size_t len = etcdserverpb__member_list_response__get_packed_size(&resp);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        etcdserverpb__member_list_response__pack(&resp, buf);
        answer(r, ident, ident_len, req_id, 0, NULL, buf, len);
        free(buf);
    }
out:
    for (size_t i = 0; i < n && split && bufs; i++) {
        free(split[i]);
        free(bufs[i]);
    }
    free(split);
    free(bufs);
    free(ms);
    free(mp);
}

static void finish_transfer(raftd_t *r, int code, const char *msg)
{
    if (!r->transfer.req_id)
        return;
    answer(r, r->transfer.ident, r->transfer.ident_len, r->transfer.req_id, code, msg, NULL, 0);
    memset(&r->transfer, 0, sizeof r->transfer);
}

static int open_peers(raftd_t *r)
{
    int rc;
    cairn_config_t *cfg = r->cfg;
    r->held_tail = &r->held;
    if (cfg->n_members > 1) {
        r->peer_routers = calloc(cfg->listen_peer_urls.n, sizeof *r->peer_routers);
        for (size_t i = 0; r->peer_routers && i < cfg->listen_peer_urls.n; i++) {
            char ep[300];
            if (peer_endpoint(cfg->listen_peer_urls.v[i], ep, sizeof ep))
                return CAIRN_ECONFIG;
            zsock_t *s = zsock_new(ZMQ_ROUTER);
            if (!s)
                return CAIRN_ENOMEM;
            zsock_set_ipv6(s, 1);
            zsock_set_rcvhwm(s, CAIRN_ZMQ_HWM);
            zsock_set_linger(s, 0);
            if (zsock_bind(s, "%s", ep) < 0) {
                cairn_error("cannot listen for peers", "endpoint=%s err=\"%s\"", ep, zmq_strerror(zmq_errno()));
                zsock_destroy(&s);
                return CAIRN_EIO;
            }
            r->peer_routers[r->n_peer_routers++] = s;
            cairn_info("listening for peers", "endpoint=%s", ep);
        }
    }
    r->peers = calloc(cfg->n_members ? cfg->n_members : 1, sizeof *r->peers);
    if (!r->peers)
        return CAIRN_ENOMEM;
    char ident[32];
    snprintf(ident, sizeof ident, "%016llx", (unsigned long long)cairn_config_member_id(cfg));
    for (size_t i = 0; i < cfg->n_members; i++) {
        if (i == cfg->self || cfg->members[i].peer_urls.n == 0)
            continue;
        peer_t *p = &r->peers[r->n_peers];
        p->id = cfg->members[i].id;
        if (peer_endpoint(cfg->members[i].peer_urls.v[0], p->endpoint, sizeof p->endpoint))
            return CAIRN_ECONFIG;
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
        if ((rc = zsock_connect(p->dealer, "%s", p->endpoint)) < 0)
            return CAIRN_EIO;
        r->n_peers++;
    }
    return 0;
}

/* ------------------------------------------------------------------ ready processing */

static void process_ready(raftd_t *r)
{
    while (r->raft && cairn_raft_has_ready(r->raft)) {
        cairn_raft_ready_t rd;
        cairn_raft_ready(r->raft, &rd);
        if (rd.hs_changed || rd.n_entries) {
            cairn_ipc_entry_t stackbuf[64], *ents = stackbuf;
            if (rd.n_entries > 64) {
                ents = malloc(rd.n_entries * sizeof *ents);
                if (!ents) {
                    cairn_error("out of memory", NULL);
                    g_stop = 2;
                    return;
                }
            }
            for (size_t i = 0; i < rd.n_entries; i++)
                ents[i] = (cairn_ipc_entry_t){rd.entries[i].index, rd.entries[i].term, rd.entries[i].type,
                                              rd.entries[i].data, rd.entries[i].len};
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_APPEND, .boot_id = r->stored_boot, .seq = ++r->seq,
                                 .has_hs = rd.hs_changed,
                                 .term = rd.hs.term, .vote = rd.hs.vote, .commit = rd.hs.commit, .entries = ents,
                                 .n_entries = rd.n_entries};
            /* A single voter that leads commits an entry the moment its own disk has it (its
             * quorum is itself), so stored may apply right after its fdatasync instead of
             * waiting for APPENDED -> persisted -> COMMIT: two IPC hops off every write. */
            if (rd.n_entries && rd.role == CAIRN_RAFT_LEADER && r->cfg->n_members == 1 &&
                rd.entries[rd.n_entries - 1].term == rd.term)
                m.index = rd.entries[rd.n_entries - 1].index;
            send_stored(r, &m);
            if (ents != stackbuf)
                free(ents);
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
                    finish_transfer(r, 0, NULL);
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
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_READ_INDEX_RESP, .req_id = rc->req_id, .code = 14};
            cairn_ipc_set_message(&m, "etcdserver: no leader");
            send_gw(r, rc->ident, rc->ident_len, &m);
            free(rc);
        }
        int snap = rd.has_snapshot;
        uint64_t snap_index = rd.snapshot_index, snap_term = rd.snapshot_term;
        cairn_raft_advance(r->raft, &rd);
        if (snap) {
            /* Installing a leader's snapshot (a member behind the leader's log) is not built
             * yet; the leader never compacts past a member's progress, so this is a member
             * that fell more than --snapshot-count entries behind a newly elected leader. */
            static int64_t last_log; /* the leader retries about once per heartbeat */
            if (cairn_now_ms() - last_log > 10000) {
                cairn_error("snapshot install requested but not supported; this member must be re-added",
                            "index=%llu term=%llu", (unsigned long long)snap_index, (unsigned long long)snap_term);
                last_log = cairn_now_ms();
            }
            cairn_raft_snapshot_failed(r->raft);
        }
    }
}

/* ------------------------------------------------------------------ compaction */

/* Bounds raftd's in-memory log. Installing a snapshot on a member that fell behind the log
 * is not built yet, so the leader never compacts past what any member has acknowledged
 * (a member that is down holds compaction back until it returns), and a follower keeps
 * --snapshot-count entries of margin in case it leads later. stored keeps its own copy of
 * the log and the WAL, bounded the same way. */
static void maybe_compact(raftd_t *r)
{
    if (!r->raft)
        return;
    uint64_t commit = cairn_raft_commit(r->raft);
    uint64_t durable = commit < r->persisted_index ? commit : r->persisted_index;
    uint64_t keep = LEADER_KEEP_ENTRIES;
    if (cairn_raft_role(r->raft) == CAIRN_RAFT_LEADER) {
        const uint64_t *ids;
        size_t n = cairn_raft_voters(r->raft, &ids);
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < n; i++) {
                cairn_raft_progress_t pr;
                if (ids[i] == cairn_config_member_id(r->cfg) || cairn_raft_progress(r->raft, ids[i], &pr) != 0)
                    continue;
                if (pr.match < durable)
                    durable = pr.match;
            }
            n = cairn_raft_learners(r->raft, &ids);
        }
    } else {
        keep = r->cfg->snapshot_count ? r->cfg->snapshot_count : 100000;
    }
    if (durable <= keep)
        return;
    uint64_t target = durable - keep;
    if (target < cairn_raft_snapshot_index(r->raft) + COMPACT_MIN_STEP)
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
        cairn_ipc_msg_t f = {.type = CAIRN_IPC_PROPOSALS_LOST, .code = 14};
        cairn_ipc_set_message(&f, "etcdserver: request timed out, possibly due to previous leader failure");
        send_gw(r, r->proposers[i].ident, r->proposers[i].len, &f);
    }
    r->n_proposers = 0;
}

static void start_core(raftd_t *r, const cairn_ipc_msg_t *m)
{
    cairn_raft_destroy(&r->raft);
    fail_reads(r, "etcdserver: leader changed");
    uint64_t *voters = calloc(r->cfg->n_members, sizeof *voters);
    cairn_raft_entry_t *ents = m->n_entries ? calloc(m->n_entries, sizeof *ents) : NULL;
    if (!voters || (m->n_entries && !ents)) {
        free(voters);
        free(ents);
        g_stop = 2;
        return;
    }
    for (size_t i = 0; i < r->cfg->n_members; i++)
        voters[i] = r->cfg->members[i].id;
    for (size_t i = 0; i < m->n_entries; i++)
        ents[i] = (cairn_raft_entry_t){m->entries[i].index, m->entries[i].term, m->entries[i].type,
                                       m->entries[i].data, m->entries[i].len};
    int64_t ticks_per_election = r->cfg->election_ms / r->cfg->heartbeat_ms;
    cairn_raft_config_t rc = {
        .id = cairn_config_member_id(r->cfg),
        .voters = voters,
        .n_voters = r->cfg->n_members,
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
    r->raft = cairn_raft_new(&rc, &err);
    free(voters);
    free(ents);
    if (!r->raft) {
        cairn_error("cannot start raft core", "err=\"%s\"", cairn_strerror(err));
        g_stop = 2;
        return;
    }
    r->stored_boot = m->boot_id;
    r->sent_commit = r->sent_term = r->sent_leader = 0;
    r->acked_seq = r->seq;
    r->persisted_index = m->n_entries ? m->entries[m->n_entries - 1].index : m->snap_index;
    cairn_info("raft state loaded", "term=%llu vote=%016llx commit=%llu entries=%zu first=%llu",
               (unsigned long long)m->term, (unsigned long long)m->vote, (unsigned long long)m->commit,
               m->n_entries, (unsigned long long)(m->snap_index + 1));
    /* Everything stored handed us is durable. */
    if (m->n_entries)
        cairn_raft_persisted(r->raft, m->entries[m->n_entries - 1].index, m->entries[m->n_entries - 1].term);
    if (r->cfg->n_members == 1)
        cairn_raft_campaign(r->raft); /* a single voter need not wait out an election timeout */
    process_ready(r);
}

/* ------------------------------------------------------------------ messages */

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
        start_core(r, &m);
        break;
    case CAIRN_IPC_HELLO:
        if (r->raft && m.boot_id != r->stored_boot) {
            cairn_warn("stored restarted; reloading raft state", NULL);
            cairn_raft_destroy(&r->raft);
            notify_reload(r);
            r->last_load_sent = 0; /* ask for the new state now, not at the next retry tick */
            release_held(r, 1); /* what they promised may be lost: a crash, to the core */
            fail_reads(r, "etcdserver: leader changed");
        }
        break;
    case CAIRN_IPC_APPENDED:
        if (r->raft && m.boot_id != r->stored_boot) {
            /* another stored instance: it cannot vouch for what we sent the old one */
            cairn_warn("ack from a restarted stored; reloading raft state", NULL);
            cairn_raft_destroy(&r->raft);
            notify_reload(r);
            r->last_load_sent = 0; /* ask for the new state now, not at the next retry tick */
            release_held(r, 1);
            fail_reads(r, "etcdserver: leader changed");
            break;
        }
        if (r->raft && m.code == 0) {
            r->acked_seq = m.seq;
            r->persisted_index = m.index;
            cairn_raft_persisted(r->raft, m.index, m.term);
            release_held(r, 0);
        }
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
    switch (m.type) {
    case CAIRN_IPC_PROPOSE: {
        note_proposer(r, ident, ident_len);
        rc = r->raft ? cairn_raft_propose(r->raft, m.body, m.body_len, NULL) : CAIRN_ENOT_LEADER;
        if (rc) {
            cairn_ipc_msg_t f = {.type = CAIRN_IPC_PROPOSE_FAIL, .req_id = m.req_id, .code = 14};
            cairn_ipc_set_message(&f, rc == CAIRN_ENOT_LEADER ? "etcdserver: no leader"
                                      : rc == CAIRN_ESTATE ? "etcdserver: request timed out, leader transfer took too long"
                                                           : "etcdserver: not capable");
            send_gw(r, ident, ident_len, &f);
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
            cairn_ipc_msg_t f = {.type = CAIRN_IPC_READ_INDEX_RESP, .req_id = m.req_id, .code = 14};
            cairn_ipc_set_message(&f, "etcdserver: no leader");
            send_gw(r, ident, ident_len, &f);
            free(c);
        }
        break;
    }
    case CAIRN_IPC_MEMBERS:
        answer_members(r, ident, ident_len, m.req_id);
        break;
    case CAIRN_IPC_TRANSFER: {
        /* etcd: MoveLeader must reach the leader; the target must be a voting member */
        int is_member = 0;
        for (size_t i = 0; i < r->cfg->n_members; i++)
            is_member |= r->cfg->members[i].id == m.index;
        if (!r->raft || cairn_raft_role(r->raft) != CAIRN_RAFT_LEADER) {
            answer(r, ident, ident_len, m.req_id, 9, "etcdserver: not leader", NULL, 0);
        } else if (!is_member) {
            answer(r, ident, ident_len, m.req_id, 9, "etcdserver: bad leader transferee", NULL, 0);
        } else if (m.index == cairn_config_member_id(r->cfg)) {
            answer(r, ident, ident_len, m.req_id, 0, NULL, NULL, 0); /* already leads */
        } else if (r->transfer.req_id || ident_len > sizeof r->transfer.ident) {
            answer(r, ident, ident_len, m.req_id, 14, "etcdserver: leader changed", NULL, 0);
        } else if (cairn_raft_transfer_leader(r->raft, m.index) != 0) {
            answer(r, ident, ident_len, m.req_id, 9, "etcdserver: bad leader transferee", NULL, 0);
        } else {
            memcpy(r->transfer.ident, ident, ident_len);
            r->transfer.ident_len = ident_len;
            r->transfer.req_id = m.req_id;
            r->transfer.target = m.index;
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
    if ((rc = open_peers(r)) != 0) {
        cairn_error("cannot set up the peer transport", "err=\"%s\"", cairn_strerror(rc));
        goto out;
    }
    cairn_info("raftd ready", "endpoint=%s member_id=%016llx members=%zu", ep,
               (unsigned long long)cairn_config_member_id(r->cfg), r->cfg->n_members);
    r->next_tick = cairn_now_ms() + r->cfg->heartbeat_ms;
    while (!g_stop) {
        int64_t now = cairn_now_ms();
        if (!r->raft && now - r->last_load_sent >= 500) {
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_LOAD};
            send_stored(r, &m);
            r->last_load_sent = now;
        }
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
        maybe_compact(r);
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
        if (r->transfer.req_id && now >= r->transfer.deadline)
            finish_transfer(r, 14, "etcdserver: request timed out, leader transfer took too long");
    }
    cairn_info("raftd stopping", NULL);
    finish_transfer(r, 14, "etcdserver: server stopped");
    exit_code = g_stop == 2 ? 1 : 0;
    fail_reads(r, "etcdserver: server stopped");
out:
    cairn_raft_destroy(&r->raft);
    cairn_u64map_destroy(&r->reads);
    zsock_destroy(&r->router);
    zsock_destroy(&r->stored);
    if (r->held_tail)
        release_held(r, 1);
    for (size_t i = 0; i < r->n_peer_routers; i++)
        zsock_destroy(&r->peer_routers[i]);
    free(r->peer_routers);
    for (size_t i = 0; i < r->n_peers; i++) {
        zsock_destroy(&r->peers[i].dealer);
        free(r->peers[i].client_urls);
    }
    free(r->peers);
    cairn_config_destroy(&r->cfg);
    return exit_code;
}
