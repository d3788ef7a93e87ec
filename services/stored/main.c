/* stored - durability and state for one Cairn node (DESIGN.md "stored").
 *
 * One thread, one ROUTER socket (<run>/stored.ipc) that raftd and every gatewayd connect to.
 * Each pass of the loop:
 *   1. drains every message waiting (so many APPENDs share one fdatasync: group commit);
 *   2. writes the buffered WAL records and fdatasyncs ONCE, then acks raftd with APPENDED
 *      (raftd counts this node toward a quorum only after that ack);
 *   3. applies committed entries (min(commit, persisted)) to the MVCC store in one LevelDB
 *      write per pass, the applied index riding in the same write, and sends each result to
 *      the gateway that proposed it;
 *   4. serves the reads whose read index is now applied.
 * The raft log since the last snapshot is kept in memory as well as in the WAL, so that
 * raftd can reload it at start (LOAD) and apply never re-reads the disk.
 *
 * This file is the loop and the message dispatch; stored.h lists the files that hold the rest
 * (apply and replies, start-up and WAL replay, snapshot transfer and install, metrics).
 */
#include <czmq.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_config.h"
#include "cairn_daemon.h"
#include "cairn_err.h"
#include "cairn_ipc.h"
#include "cairn_log.h"
#include "cairn_member.h"
#include "cairn_zmq.h"
#include "memlog.h"
#include "mvcc.h"
#include "snapshot.h"
#include "cairn_procmetrics.h"
#include "stored.h"
#include "wal.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = 1; }


/* After an answer this large (a Range over much of the store), the memory it took goes back
 * to the system: glibc keeps freed heap chunks, so one big read would otherwise stay in RSS. */
#define BIG_ANSWER_BYTES ((size_t)16 << 20)


static void serve_read(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, const uint8_t *body,
                       size_t len)
{
    cairn_hdr_ctx_t h = stored_hdr_ctx(s);
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    cairn_apply_err_t err = {0};
    int rc = cairn_apply_range(s->mvcc, body, len, &h, &resp, &resp_len, &err);
    if (rc < 0)
        stored_reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_STORAGE);
    else if (err.grpc_code)
        stored_reply_result(s, ident, ident_len, req_id, err.grpc_code, err.message, NULL, 0);
    else
        stored_reply_result(s, ident, ident_len, req_id, CAIRN_GRPC_OK, NULL, resp, resp_len);
    free(resp);
    if (resp_len > BIG_ANSWER_BYTES)
        malloc_trim(0);
}

static void serve_ready_reads(stored_t *s)
{
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    read_t **pp = &s->reads;
    while (*pp) {
        read_t *r = *pp;
        if (r->read_index <= applied) {
            serve_read(s, r->ident, r->ident_len, r->req_id, r->body, r->body_len);
            *pp = r->next;
            free(r->body);
            free(r);
        } else
            pp = &r->next;
    }
    s->reads_tail = pp;
}

/* LOAD is paged (no message grows with the log): LOAD {index = from} answers the header
 * (hard state, the point the log starts after, the membership there) with the durable entries
 * from `from` (0 or out of range: from the first) up to LOAD_PAGE_BYTES of entry data, at
 * least one entry, and index = the last durable index, where raftd's load ends. raftd asks for
 * the next page from the index after the page's last entry; a page that does not continue
 * where it asked (the log moved meanwhile) makes it start over. */
#define LOAD_PAGE_BYTES ((size_t)4 << 20)
#define LOAD_PAGE_ENTRIES 65536


static void send_load_resp(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t from, uint64_t seq)
{
    /* Only what is durable: raftd must never believe in an entry a crash could erase. */
    const cairn_memlog_t *l = s->log;
    size_t n = cairn_memlog_count(l);
    while (n && cairn_memlog_nth(l, n - 1)->index > s->persisted)
        n--;
    uint64_t first = cairn_memlog_first(l), snap_index = cairn_memlog_snap_index(l);
    size_t start = 0;
    if (from >= first && from < first + n)
        start = (size_t)(from - first);
    size_t end = start, bytes = 0;
    while (end < n && end - start < LOAD_PAGE_ENTRIES &&
           (end == start || bytes + cairn_memlog_nth(l, end)->len <= LOAD_PAGE_BYTES))
        bytes += cairn_memlog_nth(l, end++)->len;
    /* the log holds its entries in one array of the IPC's own entry type: the page is sent
     * from it as it is */
    const cairn_ipc_entry_t *ents = end > start ? cairn_memlog_nth(l, start) : NULL;
    uint64_t last = n ? cairn_memlog_nth(l, n - 1)->index : snap_index;
    if (!n && !snap_index)
        last = cairn_mvcc_applied_index(s->mvcc);
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LOAD_RESP, .boot_id = s->boot_id, .term = s->hs.term, .vote = s->hs.vote,
                         .commit = s->hs.commit < last ? s->hs.commit : last, .snap_index = snap_index,
                         .snap_term = cairn_memlog_snap_term(l),
                         .entries = ents, .n_entries = end - start, .last = n ? last : 0, .seq = seq};
    if (n == 0 && snap_index == 0) {
        /* nothing in the log: everything up to the applied index was compacted away */
        m.snap_index = cairn_mvcc_applied_index(s->mvcc);
        m.snap_term = cairn_mvcc_applied_term(s->mvcc);
    }
    /* the membership where raftd's log starts; the configuration entries after it are in ents */
    uint8_t *blob = NULL;
    size_t blen = 0;
    if (cairn_mvcc_conf_get(s->mvcc, m.snap_index, &blob, &blen, NULL) == 1) {
        m.body = blob;
        m.body_len = blen;
    }
    m.cluster_id = s->members.cluster_id;
    stored_reply(s, ident, ident_len, &m);
    free(blob);
}

/* A record raftd sent could not be buffered for the WAL: the WAL drops the batch and refuses
 * everything from now on (wal.h), nothing more is acknowledged, and stored exits so that its
 * supervisor restarts it; the restart replays what is durable and raftd reloads from it. */
static int persist_failed(stored_t *s, const char *what, int rc)
{
    cairn_error("cannot persist raft state; stopping without acknowledging it", "step=\"%s\" err=\"%s\"", what,
                cairn_strerror(rc));
    s->wal_failed = 1;
    s->have_pending = 0;
    return stored_stop_with(s, rc);
}

static void handle(stored_t *s, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected ipc message", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .code = rc};
        cairn_ipc_set_message(&e, cairn_strerror(rc));
        stored_reply(s, ident, ident_len, &e);
        return;
    }
    switch (m.type) {
    case CAIRN_IPC_LOAD:
        if (ident_len <= sizeof s->raftd_ident) {
            memcpy(s->raftd_ident, ident, ident_len);
            s->raftd_ident_len = ident_len;
        }
        send_load_resp(s, ident, ident_len, m.first, m.seq);
        break;
    case CAIRN_IPC_APPEND:
        if (s->wal_failed)
            break;
        if (m.boot_id != s->boot_id) {
            /* From a raftd that loaded from an earlier instance of us: what it believes we
             * hold may be lost. Ignore it and tell it at once to reload. */
            cairn_ipc_msg_t h = {.type = CAIRN_IPC_HELLO, .boot_id = s->boot_id};
            stored_reply(s, ident, ident_len, &h);
            break;
        }
        if (ident_len <= sizeof s->raftd_ident) {
            memcpy(s->raftd_ident, ident, ident_len);
            s->raftd_ident_len = ident_len;
        }
        if (m.n_entries && m.entries[0].index > cairn_memlog_last(s->log) + 1) {
            /* A raftd that has not yet noticed our restart sends past our log: ignore it; our
             * HELLO makes it reload (LOAD) and resend from what we really hold. */
            cairn_warn("append leaves a gap; ignored until raftd reloads", "first=%llu last=%llu",
                       (unsigned long long)m.entries[0].index, (unsigned long long)cairn_memlog_last(s->log));
            break;
        }
        for (size_t i = 0; i < m.n_entries; i++) {
            const cairn_ipc_entry_t *e = &m.entries[i];
            if (e->index <= cairn_mvcc_applied_index(s->mvcc)) {
                /* Committed and already in the state machine: after a snapshot install whose
                 * state is past the raft snapshot point, raftd replicates S+1..applied again.
                 * Keep them in the in-memory log (raftd reloads it, lagging members are served
                 * from it) but not in the WAL: the state machine holds them durably, and Raft
                 * never rewrites a committed entry. The persisted index moves past them with
                 * the next sync. */
                const cairn_memlog_entry_t *have = cairn_memlog_at(s->log, e->index);
                uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
                if (have && have->term != e->term) {
                    cairn_error("append conflicts with an applied entry; ignored", "index=%llu term=%llu held_term=%llu applied=%llu",
                                (unsigned long long)e->index, (unsigned long long)e->term,
                                (unsigned long long)have->term, (unsigned long long)applied);
                } else if (!have && e->index == cairn_memlog_last(s->log) + 1) {
                    if ((rc = cairn_memlog_append(s->log, e->index, e->term, e->type, e->data, e->len))) {
                        persist_failed(s, "in-memory log append", rc);
                        break;
                    }
                    cairn_debug("applied entry kept in memory only", "index=%llu applied=%llu",
                                (unsigned long long)e->index, (unsigned long long)applied);
                }
                continue;
            }
            cairn_wal_entry_t we = {e->index, e->term, e->type, e->data, e->len};
            if ((rc = cairn_wal_append_entry(s->wal, &we)) || (rc = cairn_memlog_append(s->log, e->index, e->term, e->type, e->data, e->len))) {
                persist_failed(s, "wal entry append", rc);
                break;
            }
            if (e->index <= s->persisted)
                s->persisted = e->index - 1; /* the overwritten suffix is no longer durable */
        }
        int must_sync = m.n_entries > 0;
        if (m.has_hs) {
            /* Raft needs term and vote durable before answering (§5.1, §5.2); the commit index
             * can always be learned again, so a change of commit alone rides along with the
             * next sync instead of costing an fdatasync of its own (etcd's MustSync rule). */
            if (m.term != s->hs.term || m.vote != s->hs.vote)
                must_sync = 1;
            s->hs = (cairn_wal_hardstate_t){m.term, m.vote, m.commit};
            if ((rc = cairn_wal_append_hardstate(s->wal, &s->hs)) != 0)
                persist_failed(s, "wal hard state append", rc);
        }
        if (s->wal_failed)
            break; /* never acknowledged: raftd must not promise what may not be on disk */
        if (!must_sync && !s->have_pending) {
            /* nothing this APPEND carries needs the disk: acknowledge it at once */
            const cairn_memlog_entry_t *le = cairn_memlog_at(s->log, s->persisted);
            cairn_ipc_msg_t a = {.type = CAIRN_IPC_APPENDED, .boot_id = s->boot_id, .seq = m.seq, .index = s->persisted,
                                 .term = le ? le->term : cairn_memlog_snap_term(s->log)};
            stored_reply(s, ident, ident_len, &a);
            break;
        }
        s->pending_seq = m.seq;
        s->have_pending = 1;
        if (m.commit_durable > s->commit_on_persist)
            s->commit_on_persist = m.commit_durable;
        break;
    case CAIRN_IPC_SNAP_REQ:
        stored_snap_req(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_SNAP_RECV:
        stored_snap_recv(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_COMMIT:
        if (m.boot_id != s->boot_id)
            break; /* computed against another instance's log: see cairn_ipc.h "Epochs" */
        if (m.commit > s->commit)
            s->commit = m.commit;
        s->term = m.term;
        s->leader = m.leader;
        break;
    case CAIRN_IPC_RANGE:
        if (m.read_index <= cairn_mvcc_applied_index(s->mvcc)) {
            serve_read(s, ident, ident_len, m.req_id, m.body, m.body_len);
        } else {
            read_t *r = calloc(1, sizeof *r);
            if (!r || ident_len > sizeof r->ident || (m.body_len && !(r->body = malloc(m.body_len)))) {
                free(r);
                stored_reply_error(s, ident, ident_len, m.req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
                break;
            }
            memcpy(r->ident, ident, ident_len);
            r->ident_len = ident_len;
            r->req_id = m.req_id;
            r->read_index = m.read_index;
            if (m.body_len)
                memcpy(r->body, m.body, m.body_len);
            r->body_len = m.body_len;
            *s->reads_tail = r;
            s->reads_tail = &r->next;
        }
        break;
    case CAIRN_IPC_METRICS:
        stored_metrics_answer(s, ident, ident_len, m.req_id);
        break;
    case CAIRN_IPC_LEASE_LIST:
        stored_lease_list(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_LEASE_READ:
        stored_lease_read(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_HISTORY: {
        cairn_ipc_msg_t r;
        uint8_t *owned;
        cairn_events_history(s->mvcc, &m, &r, &owned);
        stored_reply(s, ident, ident_len, &r);
        free(owned);
        break;
    }
    case CAIRN_IPC_MAINT:
        stored_maint(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_STATUS: {
        int64_t size = cairn_mvcc_db_size(s->mvcc);
        cairn_ipc_msg_t r = {.type = CAIRN_IPC_STATUS_RESP, .req_id = m.req_id, .leader = s->leader, .term = s->term,
                             .index = s->persisted, .applied = cairn_mvcc_applied_index(s->mvcc),
                             .db_size = size > 0 ? (uint64_t)size : 0,
                             .revision = cairn_mvcc_revision(s->mvcc),
                             .compact_rev = cairn_mvcc_compact_revision(s->mvcc),
                             .cluster_id = stored_hdr_ctx(s).cluster_id};
        const cairn_member_t *self = cairn_members_find(&s->members, cairn_config_member_id(s->cfg));
        r.learner = self && self->learner;
        int64_t in_use = cairn_mvcc_db_size_in_use(s->mvcc);
        r.db_size_in_use = in_use > 0 ? (uint64_t)(in_use < size ? in_use : size) : 0;
        stored_reply(s, ident, ident_len, &r);
        break;
    }
    default: {
        cairn_warn("unexpected ipc message", "type=%s", cairn_ipc_type_name(m.type));
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .req_id = m.req_id, .code = CAIRN_EUNKNOWN_MSG};
        cairn_ipc_set_message(&e, "stored does not handle this message type");
        stored_reply(s, ident, ident_len, &e);
    }
    }
    cairn_ipc_msg_release(&m);
}

static int on_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    stored_t *s = ctx;
    handle(s, ident, ident_len, frame, len);
    /* stop draining on a fatal error (nothing more is acknowledged); bound the group-commit batch */
    return s->fatal || (s->have_pending && cairn_wal_pending_bytes(s->wal) > (8u << 20));
}

int main(int argc, char **argv)
{
    stored_t S = {0}, *s = &S;
    int exit_code = 1;
    int rc;
    s->cfg = cairn_daemon_init("stored", argc, argv, on_signal, &exit_code);
    if (!s->cfg)
        return exit_code;
    exit_code = 1;
    s->boot_id = cairn_random_u64();
    s->reads_tail = &s->reads;
    if (stored_metrics_init(s) != 0)
        goto out;
    if (!(s->log = cairn_memlog_new())) {
        cairn_error("out of memory", NULL);
        goto out;
    }
    s->origin_prefix_len = (size_t)snprintf(s->origin_prefix, sizeof s->origin_prefix, "%016llx/",
                                            (unsigned long long)cairn_config_member_id(s->cfg));

    if (stored_start(s) != 0)
        goto out;
    if (stored_apply_committed(s) < 0)
        goto out;

    char ep[512];
    if (cairn_config_ipc_endpoint(s->cfg, "stored", ep, sizeof ep) < 0) {
        cairn_error("ipc endpoint path too long", "run_dir=%s", s->cfg->run_dir);
        goto out;
    }
    s->router = cairn_zmq_router_bind(ep, &rc);
    if (!s->router) {
        cairn_error("cannot bind", "endpoint=%s err=\"%s\"", ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    /* After the replay: what it applied was published by no one, and a gateway that watched
     * through our restart sees the revisions jump and reads them from history. */
    char ev_ep[512];
    if (cairn_config_ipc_endpoint(s->cfg, "events", ev_ep, sizeof ev_ep) < 0 ||
        !(s->events = cairn_events_new(ev_ep, &rc))) {
        cairn_error("cannot publish events", "endpoint=%s", ev_ep);
        goto out;
    }
    stored_events_attach(s);
    cairn_info("stored ready", "endpoint=%s events=%s member_id=%016llx", ep, ev_ep,
               (unsigned long long)cairn_config_member_id(s->cfg));
    cairn_daemon_notify_ready("stored ready");

    /* raftd learns our boot id from HELLO (sent every second, and dropped while raftd is not
     * connected): a raftd that sees a new boot id knows we restarted and reloads its state. */
    int64_t next_hello = 0, started_at = cairn_now_ms();
    while (!g_stop && !s->fatal) {
        int64_t now = cairn_now_ms();
        if (now >= next_hello) {
            cairn_ipc_msg_t h = {.type = CAIRN_IPC_HELLO, .boot_id = s->boot_id};
            cairn_zmq_send(s->router, "raftd", 5, &h);
            /* every 100 ms while young: raftd's socket reconnects within that and must learn
             * of the restart before it proposes into a log we no longer hold */
            next_hello = now + (now - started_at < 3000 ? 100 : 1000);
            cairn_snap_out_expire(s->snap_out, now, SNAP_OUT_IDLE_MS);
        }
        zmq_pollitem_t item = {zsock_resolve(s->router), 0, ZMQ_POLLIN, 0};
        stored_snap_build_reap(s, 0);
        stored_snap_install_reap(s, 0);
        stored_defrag_reap(s, 0);
        stored_quota_check(s, now);
        stored_compactor_tick(s, now);
        int timeout = s->reads || s->build.running || s->inst.running || s->defrag.running ? 10 : 500;
        if (zmq_poll(&item, 1, timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /* 1. drain */
        if (item.revents & ZMQ_POLLIN)
            cairn_zmq_drain(s->router, 1, 100000, on_frame, s);
        if (s->fatal)
            break;
        /* 2. one fdatasync for everything drained */
        if (stored_sync_wal(s) < 0)
            break;
        /* 3. apply */
        if (stored_apply_committed(s) < 0)
            break;
        /* 4. reads */
        if (s->reads)
            serve_ready_reads(s);
    }
    cairn_info("stored stopping", "applied=%llu", (unsigned long long)cairn_mvcc_applied_index(s->mvcc));
    cairn_daemon_notify_stopping();
    exit_code = s->fatal ? 1 : 0;
out:
    zsock_destroy(&s->router);
    cairn_events_destroy(&s->events);
    free(s->lease_buf);
    stored_snap_install_reap(s, 1);
    stored_snap_build_wait(s); /* before the store it reads is closed */
    stored_defrag_reap(s, 1);  /* the same */
    cairn_wal_destroy(&s->wal);
    cairn_mvcc_destroy(&s->mvcc);
    cairn_snap_in_destroy(&s->snap_in);
    cairn_snap_out_destroy(&s->snap_out);
    cairn_memlog_destroy(&s->log);
    while (s->reads) {
        read_t *r = s->reads;
        s->reads = r->next;
        free(r->body);
        free(r);
    }
    free(s->outs);
    cairn_members_clear(&s->members);
    cairn_metrics_destroy(&s->metrics);
    cairn_procmetrics_destroy(&s->procmetrics);
    cairn_config_destroy(&s->cfg);
    return exit_code;
}
