/* gw_metrics.c - the /metrics page of a node: the gateway's own metrics, raftd's and stored's.
 *
 * Each process owns a table of its metrics (cairn_metrics.h) with etcd's names and help texts
 * where etcd has the metric: raftd the consensus ones (leader, proposals, peer traffic), stored
 * the disk and MVCC ones (WAL fsync, backend commit, revisions, db size), the gateway the
 * client-facing ones. A scrape of /metrics asks raftd and stored for theirs (CAIRN_IPC_METRICS,
 * answered with a RESULT whose body is the text) and serves the three as one page, so that
 * dashboards written for etcd's single process work unchanged.
 *
 * The gateway also keeps rows for what stored reports in its status every second (leader,
 * revision, db size...). They are the fallback for a process that does not answer within
 * METRICS_WAIT_MS (stopped, or restarting): a metric family that raftd or stored rendered is
 * served from them, and the gateway's row of the same name is left out, so that no family
 * appears twice on the page (Prometheus refuses a page where one does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "gw_internal.h"

/* etcd v3.4 etcdserver/metrics.go, mvcc/metrics.go; go-grpc-prometheus; client_golang's
 * process collector. grpc_server_started_total counts every call this gateway started; etcd
 * labels it by method, this one total does not yet. */
enum {
    GW_M_HAS_LEADER,
    GW_M_IS_LEADER,
    GW_M_DB_SIZE,
    GW_M_CURRENT_REV,
    GW_M_COMPACT_REV,
    GW_M_COMMITTED,
    GW_M_APPLIED,
    GW_M_GRPC_STARTED,
    GW_M_RSS,
    GW_M_COUNT_
};
static const cairn_metric_desc_t gw_metric_rows[GW_M_COUNT_] = {
    [GW_M_HAS_LEADER] = {"etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.",
                         CAIRN_METRIC_GAUGE},
    [GW_M_IS_LEADER] = {"etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                        CAIRN_METRIC_GAUGE},
    [GW_M_DB_SIZE] = {"etcd_mvcc_db_total_size_in_bytes",
                      "Total size of the underlying database physically allocated in bytes.", CAIRN_METRIC_GAUGE},
    [GW_M_CURRENT_REV] = {"etcd_debugging_mvcc_current_revision", "The current revision of store.",
                          CAIRN_METRIC_GAUGE},
    [GW_M_COMPACT_REV] = {"etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
                          CAIRN_METRIC_GAUGE},
    /* gauges in etcd despite the _total: they are set from raft's indexes, not counted */
    [GW_M_COMMITTED] = {"etcd_server_proposals_committed_total", "The total number of consensus proposals committed.",
                        CAIRN_METRIC_GAUGE},
    [GW_M_APPLIED] = {"etcd_server_proposals_applied_total", "The total number of consensus proposals applied.",
                      CAIRN_METRIC_GAUGE},
    [GW_M_GRPC_STARTED] = {"grpc_server_started_total", "Total number of RPCs started on the server.",
                           CAIRN_METRIC_COUNTER},
    [GW_M_RSS] = {"process_resident_memory_bytes", "Resident memory size in bytes.", CAIRN_METRIC_GAUGE},
};

/* Room for the gateway's own text: today's rows need under 2 KiB. */
#define GW_METRICS_BUF (64 * 1024)
/* How long a scrape waits for raftd and stored (Prometheus' default scrape timeout is 10 s). */
#define METRICS_WAIT_MS 1000
/* A process's answer larger than this is not taken (it would be a bug in that process). */
#define METRICS_MAX_PART (4u << 20)

cairn_metrics_reg_t *gw_metrics_new(int *rc, char *err, size_t errlen)
{
    return cairn_metrics_new(gw_metric_rows, GW_M_COUNT_, rc, err, errlen);
}

void gw_metrics_call_started(cairn_gateway_t *g) { cairn_metrics_inc(g->metrics, GW_M_GRPC_STARTED, 1); }

enum { PART_RAFTD, PART_STORED, N_PARTS };

/* One scrape in progress: the HTTP request, what each process answered, how many answers are
 * still awaited, and how many pending requests still point at it (it is freed with the last). */
typedef struct {
    cairn_call_id_t req;
    uint64_t req_ids[N_PARTS];
    char *text[N_PARTS];
    size_t len[N_PARTS];
    int awaited, refs;
} gather_t;

/* Whether the page text already has the family name ("# HELP <name> " at a line start). */
static int has_family(const char *text, size_t len, const char *name, size_t nlen)
{
    for (size_t i = 0; i + 7 + nlen < len; i++) {
        if ((i == 0 || text[i - 1] == '\n') && memcmp(text + i, "# HELP ", 7) == 0 &&
            memcmp(text + i + 7, name, nlen) == 0 && text[i + 7 + nlen] == ' ')
            return 1;
    }
    return 0;
}

static void render_own(cairn_gateway_t *g)
{
    long rss_pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        long size;
        if (fscanf(f, "%ld %ld", &size, &rss_pages) != 2)
            rss_pages = 0;
        fclose(f);
    }
    cairn_metrics_reg_t *m = g->metrics;
    cairn_metrics_set(m, GW_M_HAS_LEADER, g->st.leader != 0);
    cairn_metrics_set(m, GW_M_IS_LEADER, g->st.leader != 0 && g->st.leader == cairn_config_member_id(g->cfg));
    cairn_metrics_set(m, GW_M_DB_SIZE, (double)g->st.db_size);
    cairn_metrics_set(m, GW_M_CURRENT_REV, (double)g->st.revision);
    cairn_metrics_set(m, GW_M_COMPACT_REV, (double)g->st.compact_rev);
    cairn_metrics_set(m, GW_M_COMMITTED, (double)g->st.index);
    cairn_metrics_set(m, GW_M_APPLIED, (double)g->st.applied);
    cairn_metrics_set(m, GW_M_RSS, (double)rss_pages * (double)sysconf(_SC_PAGESIZE));
}

/* The page: the gateway's families that no process rendered, then raftd's, then stored's. */
static void gather_reply(cairn_gateway_t *g, gather_t *x)
{
    render_own(g);
    size_t cap = GW_METRICS_BUF;
    for (int k = 0; k < N_PARTS; k++)
        cap += x->len[k];
    char *own = malloc(GW_METRICS_BUF), *page = malloc(cap);
    int n = own && page ? cairn_metrics_render(g->metrics, own, GW_METRICS_BUF) : CAIRN_ENOMEM;
    if (n < 0) {
        cairn_warn("cannot render /metrics", "err=\"%s\"", cairn_strerror(n));
        cairn_h2srv_http1_reply(g->srv, x->req, 500, NULL, (const uint8_t *)"metrics unavailable\n", 20);
        free(own);
        free(page);
        return;
    }
    size_t out = 0;
    for (size_t i = 0; i < (size_t)n;) { /* one family: from its "# HELP" to the next */
        size_t end = i + 1;
        while (end < (size_t)n && !(own[end - 1] == '\n' && memcmp(own + end, "# HELP ", 7) == 0))
            end++;
        const char *name = own + i + 7;
        size_t nlen = strcspn(name, " \n");
        int dup = 0;
        for (int k = 0; k < N_PARTS && !dup; k++)
            dup = x->text[k] && has_family(x->text[k], x->len[k], name, nlen);
        if (!dup) {
            memcpy(page + out, own + i, end - i);
            out += end - i;
        }
        i = end;
    }
    for (int k = 0; k < N_PARTS; k++)
        if (x->text[k]) {
            memcpy(page + out, x->text[k], x->len[k]);
            out += x->len[k];
        }
    cairn_h2srv_http1_reply(g->srv, x->req, 200, "text/plain; version=0.0.4", (const uint8_t *)page, out);
    free(own);
    free(page);
}

static int part_of(const gather_t *x, uint64_t req_id)
{
    for (int k = 0; k < N_PARTS; k++)
        if (x->req_ids[k] == req_id)
            return k;
    return -1;
}

static void gather_done(cairn_gateway_t *g, gather_t *x)
{
    if (--x->awaited == 0)
        gather_reply(g, x);
}

static void part_ok(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m)
{
    gather_t *x = p->ctx;
    int k = part_of(x, p->req_id);
    /* a text page that ends its last line; anything else is left out, not served broken */
    if (k >= 0 && len && len <= METRICS_MAX_PART && body[len - 1] == '\n' && !memchr(body, 0, len) &&
        (x->text[k] = malloc(len))) {
        memcpy(x->text[k], body, len);
        x->len[k] = len;
    }
    gather_done(g, x);
}

static void part_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message)
{
    gather_t *x = p->ctx;
    cairn_debug("a process did not answer for /metrics; its families come from the last status",
                "part=%d err=\"%s\"", part_of(x, p->req_id), message ? message : "");
    gather_done(g, x);
}

static void gather_release(void *ctx)
{
    gather_t *x = ctx;
    if (--x->refs > 0)
        return;
    for (int k = 0; k < N_PARTS; k++)
        free(x->text[k]);
    free(x);
}

static const gw_answer_t answer_metrics_part = {.ok = part_ok, .fail = part_fail, .release = gather_release};

void gw_serve_metrics(cairn_gateway_t *g, cairn_call_id_t req)
{
    gather_t *x = calloc(1, sizeof *x);
    if (!x) {
        cairn_h2srv_http1_reply(g->srv, req, 500, NULL, (const uint8_t *)"metrics unavailable\n", 20);
        return;
    }
    x->req = req;
    x->awaited = 1; /* held by this function until every request is out */
    zsock_t *to[N_PARTS] = {[PART_RAFTD] = g->raftd, [PART_STORED] = g->stored};
    for (int k = 0; k < N_PARTS; k++) {
        gw_pending_t *p = gw_add_pending(g, req, &answer_metrics_part, METRICS_WAIT_MS);
        if (!p)
            continue;
        p->ctx = x;
        x->refs++;
        x->req_ids[k] = p->req_id;
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_METRICS, .req_id = p->req_id};
        if (gw_send_ipc(g, to[k], &m)) {
            gw_drop_pending(g, p->req_id); /* releases its ref */
            continue;
        }
        x->awaited++;
    }
    x->refs++;
    gather_done(g, x); /* answers now if nothing could be asked */
    gather_release(x);
}
