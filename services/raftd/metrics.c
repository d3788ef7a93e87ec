/* metrics.c - raftd's metrics (cairn_metrics.h) and its answer to CAIRN_IPC_METRICS.
 *
 * The rows carry etcd 3.4's names and help texts (etcdserver/metrics.go,
 * rafthttp/metrics.go; checked against a running etcd 3.4.23's /metrics), so that dashboards
 * and alerts written for etcd read raftd's part of a node's /metrics unchanged. Only what raftd
 * really knows is here: stored has the disk and MVCC ones, the gateway the client-facing ones.
 *
 * What each one counts in raftd (where etcd's meaning needs a word):
 *   has_leader, is_leader, is_learner   the core's view when the page is asked for; 0 while
 *                                       the core is being (re)loaded from stored.
 *   proposals_committed_total           a gauge in etcd too: the commit index.
 *   proposals_pending                   entries in this member's log past its commit index
 *                                       (on the leader: proposed, not yet committed).
 *   proposals_failed_total              proposals raftd refused (PROPOSE_FAIL).
 *   read_indexes_failed_total           read-index requests answered with an error.
 *   leader_changes_seen_total           as etcd: each time the known leader becomes a member
 *                                       other than the last one known (none does not count).
 *   heartbeat_send_failures_total       as etcd (its TimeoutDetector): a leader's heartbeat to
 *                                       a member sent more than two heartbeat intervals after
 *                                       the one before, i.e. the loop was late.
 *   learner_promote_successes           promotions committed while this member leads.
 *   server_id{server_id}                1, labelled with this member's ID in hex (%x, as etcd).
 *   peer_sent_bytes_total{To}, peer_received_bytes_total{From}
 *                                       bytes of peer frames handed to / taken from ZeroMQ,
 *                                       per member (ID in hex); frames from members of another
 *                                       cluster or while isolated by the test fault switch are
 *                                       not counted.
 *   peer_sent_failures_total{To}        frames that could not be queued (the peer is not
 *                                       connected, or its queue is full: dropped).
 * Updates are array accesses on this thread's registry; gauges read from the core are set
 * when the page is rendered, so nothing is kept twice.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "cairn_procmetrics.h"
#include "raftd.h"

static const cairn_metric_desc_t raftd_metric_rows[RAFTD_M_COUNT_] = {
    [RAFTD_M_HAS_LEADER] = {"etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.",
                            CAIRN_METRIC_GAUGE},
    [RAFTD_M_IS_LEADER] = {"etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                           CAIRN_METRIC_GAUGE},
    [RAFTD_M_IS_LEARNER] = {"etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.",
                            CAIRN_METRIC_GAUGE},
    [RAFTD_M_SERVER_ID] = {"etcd_server_id",
                           "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                           CAIRN_METRIC_GAUGE, .labels = {"server_id"}, .max_series = 1},
    [RAFTD_M_LEADER_CHANGES] = {"etcd_server_leader_changes_seen_total", "The number of leader changes seen.",
                                CAIRN_METRIC_COUNTER},
    [RAFTD_M_PROPOSALS_COMMITTED] = {"etcd_server_proposals_committed_total",
                                     "The total number of consensus proposals committed.", CAIRN_METRIC_GAUGE},
    [RAFTD_M_PROPOSALS_PENDING] = {"etcd_server_proposals_pending",
                                   "The current number of pending proposals to commit.", CAIRN_METRIC_GAUGE},
    [RAFTD_M_PROPOSALS_FAILED] = {"etcd_server_proposals_failed_total", "The total number of failed proposals seen.",
                                  CAIRN_METRIC_COUNTER},
    [RAFTD_M_READ_INDEXES_FAILED] = {"etcd_server_read_indexes_failed_total",
                                     "The total number of failed read indexes seen.", CAIRN_METRIC_COUNTER},
    [RAFTD_M_HEARTBEAT_FAILURES] = {"etcd_server_heartbeat_send_failures_total",
                                    "The total number of leader heartbeat send failures (likely overloaded from slow "
                                    "disk).",
                                    CAIRN_METRIC_COUNTER},
    [RAFTD_M_LEARNER_PROMOTES] = {"etcd_server_learner_promote_successes",
                                  "The total number of successful learner promotions while this member is leader.",
                                  CAIRN_METRIC_COUNTER},
    [RAFTD_M_PEER_SENT_BYTES] = {"etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.",
                                 CAIRN_METRIC_COUNTER, .labels = {"To"}, .max_series = CAIRN_RAFT_MAX_MEMBERS},
    [RAFTD_M_PEER_RECEIVED_BYTES] = {"etcd_network_peer_received_bytes_total",
                                     "The total number of bytes received from peers.", CAIRN_METRIC_COUNTER,
                                     .labels = {"From"}, .max_series = CAIRN_RAFT_MAX_MEMBERS},
    [RAFTD_M_PEER_SENT_FAILURES] = {"etcd_network_peer_sent_failures_total",
                                    "The total number of send failures from peers.", CAIRN_METRIC_COUNTER,
                                    .labels = {"To"}, .max_series = CAIRN_RAFT_MAX_MEMBERS},
};

int raftd_metrics_init(raftd_t *r)
{
    int rc = 0;
    char err[256] = "";
    r->metrics = cairn_metrics_new(raftd_metric_rows, RAFTD_M_COUNT_, &rc, err, sizeof err);
    r->procmetrics = cairn_procmetrics_new("raftd");
    if (!r->metrics || !r->procmetrics) {
        cairn_error("cannot create the metrics registry", "err=\"%s\" why=\"%s\"", cairn_strerror(rc), err);
        return rc ? rc : CAIRN_ENOMEM;
    }
    char id[24];
    snprintf(id, sizeof id, "%llx", (unsigned long long)cairn_config_member_id(r->cfg));
    const char *v[] = {id};
    cairn_series_set(cairn_metrics_series(r->metrics, RAFTD_M_SERVER_ID, v), 1);
    return 0;
}

/* The series of a per-member metric for peer p, looked up once and kept in p (a peer's series
 * live as long as the registry, so the pointer stays good; raftd_peer_close forgets it). */
cairn_series_t *raftd_metrics_peer(raftd_t *r, peer_t *p, size_t metric)
{
    cairn_series_t **slot = metric == RAFTD_M_PEER_SENT_BYTES       ? &p->m_sent
                            : metric == RAFTD_M_PEER_RECEIVED_BYTES ? &p->m_received
                            : metric == RAFTD_M_PEER_SENT_FAILURES  ? &p->m_sent_failures
                                                                    : NULL;
    if (!slot)
        return NULL;
    if (!*slot) {
        char id[24];
        snprintf(id, sizeof id, "%llx", (unsigned long long)p->id);
        const char *v[] = {id};
        *slot = cairn_metrics_series(r->metrics, metric, v);
    }
    return *slot;
}

/* etcd's TimeoutDetector (etcdserver/raft.go): a leader's heartbeat to a member that leaves
 * more than two heartbeat intervals after the previous one is a "send failure" (the loop, or
 * the disk it waited on, was too slow). The first heartbeat to a member after a leader change
 * starts the count afresh (raftd_metrics_leader_changed). */
void raftd_metrics_heartbeat(raftd_t *r, uint64_t to)
{
    peer_t *p = raftd_find_peer(r, to);
    if (!p)
        return;
    int64_t now = cairn_now_ms();
    if (p->last_heartbeat && now - p->last_heartbeat > 2 * r->cfg->heartbeat_ms) {
        cairn_metrics_inc(r->metrics, RAFTD_M_HEARTBEAT_FAILURES, 1);
        /* etcd's warning, at most once a second: a leader this late is overloaded (often a
         * slow disk) and followers may start elections */
        static int64_t last_warn;
        if (now - last_warn >= 1000) {
            cairn_warn("leader failed to send out heartbeat on time; took too long, leader is overloaded likely "
                       "from slow disk",
                       "to=%016llx heartbeat_interval_ms=%lld expected_ms=%lld exceeded_ms=%lld",
                       (unsigned long long)to, (long long)r->cfg->heartbeat_ms, (long long)(2 * r->cfg->heartbeat_ms),
                       (long long)(now - p->last_heartbeat - 2 * r->cfg->heartbeat_ms));
            last_warn = now;
        }
    }
    p->last_heartbeat = now;
}

void raftd_metrics_leader_changed(raftd_t *r, uint64_t leader)
{
    if (leader)
        cairn_metrics_inc(r->metrics, RAFTD_M_LEADER_CHANGES, 1);
    for (size_t i = 0; i < r->n_peers; i++)
        r->peers[i].last_heartbeat = 0;
}

/* The gauges that are the core's state, read now. */
static void refresh(raftd_t *r)
{
    uint64_t self = cairn_config_member_id(r->cfg);
    const uint64_t *l = NULL;
    size_t nl = r->raft ? cairn_raft_learners(r->raft, &l) : 0;
    cairn_metrics_set(r->metrics, RAFTD_M_HAS_LEADER, r->raft && cairn_raft_leader(r->raft) != CAIRN_RAFT_NONE);
    cairn_metrics_set(r->metrics, RAFTD_M_IS_LEADER, r->raft && cairn_raft_role(r->raft) == CAIRN_RAFT_LEADER);
    cairn_metrics_set(r->metrics, RAFTD_M_IS_LEARNER, id_in(l, nl, self));
    if (!r->raft)
        return; /* loading: the last commit index seen stays */
    uint64_t commit = cairn_raft_commit(r->raft), last = cairn_raft_last_index(r->raft);
    cairn_metrics_set(r->metrics, RAFTD_M_PROPOSALS_COMMITTED, (double)commit);
    cairn_metrics_set(r->metrics, RAFTD_M_PROPOSALS_PENDING, last > commit ? (double)(last - commit) : 0);
}

/* METRICS: RESULT {req_id, 0, body = the text}. The text of a few dozen series is a few KiB;
 * the buffer grows only if a render does not fit, up to a bound (then INTERNAL, never a
 * truncated page). */
void raftd_answer_metrics(raftd_t *r, const uint8_t *ident, size_t ident_len, uint64_t req_id)
{
    refresh(r);
    size_t cap = 16 << 10;
    char *buf = NULL;
    int n = CAIRN_ETOOBIG;
    while (n == CAIRN_ETOOBIG && cap <= (4u << 20)) {
        char *nb = realloc(buf, cap);
        if (!nb)
            break;
        buf = nb;
        n = cairn_metrics_render(r->metrics, buf, cap);
        /* then the process_* families (cairn_procmetrics.h), labelled process="raftd" */
        int pn = n >= 0 && r->procmetrics ? cairn_procmetrics_render(r->procmetrics, buf + n, cap - (size_t)n) : 0;
        n = pn < 0 ? pn : n + pn;
        cap *= 2;
    }
    if (n < 0) {
        cairn_warn("cannot render metrics", "err=\"%s\"", cairn_strerror(n));
        raftd_answer(r, ident, ident_len, req_id, CAIRN_GRPC_INTERNAL, "raftd cannot render its metrics", NULL, 0);
    } else {
        raftd_answer(r, ident, ident_len, req_id, CAIRN_GRPC_OK, NULL, (const uint8_t *)buf, (size_t)n);
    }
    free(buf);
}
