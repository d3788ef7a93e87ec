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
 * Sockets: ROUTER <run>/raftd.ipc for the gateways; DEALER "raftd" to <run>/stored.ipc.
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

#include "cairn_config.h"
#include "cairn_err.h"
#include "cairn_ipc.h"
#include "cairn_log.h"
#include "cairn_u64map.h"
#include "cairn_zmq.h"
#include "raft.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = 1; }

typedef struct {
    uint8_t ident[256];
    size_t ident_len;
    uint64_t req_id; /* the gateway's own id for the read */
} read_ctx_t;

typedef struct {
    cairn_config_t *cfg;
    zsock_t *router, *stored;
    cairn_raft_t *raft;
    uint64_t stored_boot;
    uint64_t seq, acked_seq;
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
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_APPEND, .seq = ++r->seq, .has_hs = rd.hs_changed,
                                 .term = rd.hs.term, .vote = rd.hs.vote, .commit = rd.hs.commit, .entries = ents,
                                 .n_entries = rd.n_entries};
            send_stored(r, &m);
            if (ents != stackbuf)
                free(ents);
        }
        /* Peer messages: the transport between nodes arrives with multi-node clusters; a
         * single-voter core produces none. */
        if (rd.n_msgs || rd.n_msgs_after_persist)
            cairn_debug("peer messages dropped: no peer transport", "n=%zu", rd.n_msgs + rd.n_msgs_after_persist);
        if (rd.commit != r->sent_commit || rd.term != r->sent_term || rd.leader != r->sent_leader) {
            cairn_ipc_msg_t m = {.type = CAIRN_IPC_COMMIT, .commit = rd.commit, .term = rd.term, .leader = rd.leader};
            send_stored(r, &m);
            if (rd.leader != r->sent_leader)
                cairn_info("leader changed", "leader=%016llx term=%llu", (unsigned long long)rd.leader,
                           (unsigned long long)rd.term);
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
        cairn_raft_advance(r->raft, &rd);
    }
}

/* ------------------------------------------------------------------ state load */

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
            fail_reads(r, "etcdserver: leader changed");
        }
        break;
    case CAIRN_IPC_APPENDED:
        if (r->raft && m.code == 0) {
            r->acked_seq = m.seq;
            cairn_raft_persisted(r->raft, m.index, m.term);
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
        rc = r->raft ? cairn_raft_propose(r->raft, m.body, m.body_len, NULL) : CAIRN_ENOT_LEADER;
        if (rc) {
            cairn_ipc_msg_t f = {.type = CAIRN_IPC_PROPOSE_FAIL, .req_id = m.req_id, .code = 14};
            cairn_ipc_set_message(&f, rc == CAIRN_ENOT_LEADER ? "etcdserver: no leader" : "etcdserver: not capable");
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
    default: {
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .req_id = m.req_id, .code = CAIRN_EUNKNOWN_MSG};
        cairn_ipc_set_message(&e, "raftd does not handle this message type");
        send_gw(r, ident, ident_len, &e);
    }
    }
    cairn_ipc_msg_release(&m);
}

int main(int argc, char **argv)
{
    raftd_t R = {0}, *r = &R;
    char err[512];
    int exit_code = 1;
    r->cfg = cairn_config_new();
    int rc = cairn_config_load(r->cfg, argc, argv, err, sizeof err);
    if (rc == CAIRN_CONFIG_HELP) {
        cairn_config_usage(stdout);
        cairn_config_destroy(&r->cfg);
        return 0;
    }
    if (rc == CAIRN_CONFIG_VERSION) {
        printf("raftd (cairn) 0.1.0, etcd API 3.4\n");
        cairn_config_destroy(&r->cfg);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "raftd: %s\n", err);
        cairn_config_destroy(&r->cfg);
        return 2;
    }
    cairn_log_init("raftd", r->cfg->log_level);
    if (r->cfg->n_members != 1) {
        cairn_error("multi-member clusters need the peer transport, which this build does not have yet",
                    "members=%zu", r->cfg->n_members);
        exit_code = 2;
        goto out;
    }
    if (cairn_config_ensure_dirs(r->cfg, err, sizeof err) < 0) {
        cairn_error("cannot create directories", "err=\"%s\"", err);
        goto out;
    }
    zsys_init();
    zsys_handler_set(NULL);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
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
    cairn_info("raftd ready", "endpoint=%s member_id=%016llx", ep, (unsigned long long)cairn_config_member_id(r->cfg));
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
        zmq_pollitem_t items[2] = {{zsock_resolve(r->router), 0, ZMQ_POLLIN, 0},
                                   {zsock_resolve(r->stored), 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /* stored first: acks free up commits that the proposals below then ride along with */
        for (int k = 0; k < 100000; k++) {
            cairn_zmq_in_t in;
            rc = cairn_zmq_recv(r->stored, 0, &in);
            if (rc == CAIRN_EAGAIN)
                break;
            if (rc)
                continue;
            handle_stored(r, zmq_msg_data(&in.frame), zmq_msg_size(&in.frame));
            cairn_zmq_in_close(&in);
        }
        for (int k = 0; k < 100000; k++) {
            cairn_zmq_in_t in;
            rc = cairn_zmq_recv(r->router, 1, &in);
            if (rc == CAIRN_EAGAIN)
                break;
            if (rc)
                continue;
            handle_gw(r, zmq_msg_data(&in.ident), zmq_msg_size(&in.ident), zmq_msg_data(&in.frame),
                      zmq_msg_size(&in.frame));
            cairn_zmq_in_close(&in);
        }
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
    }
    cairn_info("raftd stopping", NULL);
    exit_code = g_stop == 2 ? 1 : 0;
    fail_reads(r, "etcdserver: server stopped");
out:
    cairn_raft_destroy(&r->raft);
    cairn_u64map_destroy(&r->reads);
    zsock_destroy(&r->router);
    zsock_destroy(&r->stored);
    cairn_config_destroy(&r->cfg);
    return exit_code;
}
