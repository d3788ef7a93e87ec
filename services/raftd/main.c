/* raftd - consensus and time for one Cairn node (DESIGN.md "raftd"; raftd.h describes the
 * shell and its parts). This file is the process: configuration, sockets, the poll loop with its
 * timers (ticks, attributes, sweeps, the test fault switch), signals and an orderly stop. */
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
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "cairn_procmetrics.h"
#include "raftd.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = 1; }

/* cairn_zmq_drain handlers */
static int on_stored_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    raftd_handle_stored(ctx, frame, len);
    return 0;
}

static int on_peer_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    raftd_t *r = ctx;
    if (!r->isolated)
        raftd_handle_peer(r, frame, len);
    return 0;
}

static int on_gw_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    raftd_handle_gw(ctx, ident, ident_len, frame, len);
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
    if (raftd_metrics_init(r) != 0)
        goto out;
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
    if (cairn_members_initial(&r->members, r->cfg) != 0 || !r->fwd || raftd_lessor_new(r) != 0 ||
        raftd_corrupt_new(r) != 0)
        goto out;
    /* a member that starts with peers listens at once; one that starts alone, once one is added */
    if (r->cfg->n_members > 1 && (rc = raftd_listen_peers(r)) != 0) {
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
                raftd_tell_peers_stopping(r);
                told_stopping = 1;
            }
            /* A leader asked to stop hands leadership over first (etcd does the same), so the
             * cluster does not wait out an election timeout without a leader. */
            if (!r->fatal && !handoff && raftd_begin_handoff(r)) {
                handoff = 1;
                handoff_until = cairn_now_ms() + 2 * r->cfg->election_ms;
            }
            /* done once another member leads (the TimeoutNow went out and it won), or when the
             * member it hands over to says it is stopping too (the whole cluster is) */
            peer_t *to = handoff ? raftd_find_peer(r, r->handoff_to) : NULL;
            if (to && to->stopping)
                cairn_info("the member leadership was handed to is stopping too; not waiting for it",
                           "to=%016llx", (unsigned long long)to->id);
            if (!handoff || !r->raft || cairn_now_ms() >= handoff_until || (to && to->stopping) ||
                (cairn_raft_leader(r->raft) && cairn_raft_leader(r->raft) != cairn_config_member_id(r->cfg)))
                break;
        }
        int64_t now = cairn_now_ms();
        if (!r->raft && !r->load.held && now - r->last_load_sent >= 500)
            raftd_load_request(r, r->load.active ? r->load.next : 0); /* no answer yet: ask again */
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
        raftd_process_ready(r);
        raftd_lessor_tick(r, now);
        raftd_corrupt_tick(r, now);
        raftd_process_ready(r); /* the revocations and alarms they proposed */
        raftd_conf_poll(r);
        raftd_maybe_compact(r);
        /* stored answers a restore however long it takes (or restarts, which resets this) */
        if (r->snap.active && now - r->snap.last_progress > (r->snap.restoring ? SNAP_RESTORE_MS : SNAP_STALL_MS))
            raftd_snap_fail(r, r->snap.restoring ? "restoring the snapshot took too long" : "no progress from the leader");
        if (r->n_peers && now >= r->next_attrs) {
            raftd_send_attrs(r);
            r->next_attrs = now + ATTRS_EVERY_MS;
        }
        if (r->faults_enabled && now >= r->next_fault_check) {
            int iso = access(r->fault_path, F_OK) == 0;
            if (iso != r->isolated)
                cairn_warn(iso ? "test fault: isolated from peers" : "test fault: peers reachable again", NULL);
            r->isolated = iso;
            /* Test only (CAIRN_TEST_FAULTS=1, tests/nemesis): <run-dir>/fault-clock-offset-ms holds
             * a number of ms added to this raftd's clock (cairn_now_ms, which every timer of raftd
             * reads): a forward clock jump. Only increases are taken (the monotonic clock never
             * goes back); the file may be rewritten with a larger total for another jump. */
            char cpath[4200];
            snprintf(cpath, sizeof cpath, "%s/fault-clock-offset-ms", r->cfg->run_dir);
            FILE *cf = fopen(cpath, "r");
            long long off = 0;
            if (cf) {
                if (fscanf(cf, "%lld", &off) == 1 && off > cairn_test_clock_offset_ms) {
                    cairn_warn("test fault: clock jumps forward", "by_ms=%lld total_ms=%lld",
                               off - (long long)cairn_test_clock_offset_ms, off);
                    cairn_test_clock_offset_ms = off;
                    now = cairn_now_ms();
                }
                fclose(cf);
            }
            r->next_fault_check = now + 50;
        }
        if (now >= next_sweep) {
            raftd_sweep_fwd(r, now);
            if (r->raft)
                raftd_reconcile_peers(r); /* closes connections to members removed a while ago */
            next_sweep = now + 5000;
        }
        if (r->transfer.req_id && now >= r->transfer.deadline)
            raftd_finish_transfer(r, CAIRN_ETCD_TIMEOUT_LEADER_TRANSFER);
    }
    cairn_info("raftd stopping", NULL);
    raftd_finish_transfer(r, CAIRN_ETCD_STOPPED);
    exit_code = r->fatal ? 1 : 0;
    raftd_fail_reads(r, CAIRN_ETCD_STOPPED);
out:
    raftd_lessor_destroy(r);
    raftd_corrupt_destroy(r);
    cairn_raft_destroy(&r->raft);
    raftd_load_clear(r);
    cairn_u64map_destroy(&r->reads);
    zsock_destroy(&r->router);
    zsock_destroy(&r->stored);
    if (r->held_tail)
        raftd_release_held(r, 1);
    for (size_t i = 0; i < r->n_peer_routers; i++)
        zsock_destroy(&r->peer_routers[i]);
    free(r->peer_routers);
    for (size_t i = 0; i < r->n_peers; i++)
        raftd_peer_close(&r->peers[i]);
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
    cairn_metrics_destroy(&r->metrics);
    cairn_procmetrics_destroy(&r->procmetrics);
    cairn_config_destroy(&r->cfg);
    return exit_code;
}
