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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_procmetrics.h"
#include "gw_internal.h"

/* etcd v3.4 etcdserver/metrics.go, mvcc/metrics.go; go-grpc-prometheus. The first seven rows
 * are set from what stored reported last (g->st): the fallback for a process that did not
 * answer. */
enum {
    GW_M_HAS_LEADER,
    GW_M_IS_LEADER,
    GW_M_DB_SIZE,
    GW_M_CURRENT_REV,
    GW_M_COMPACT_REV,
    GW_M_COMMITTED,
    GW_M_APPLIED,
    GW_M_FALLBACK_END_, /* rows before this are fallbacks */
    GW_M_GRPC_STARTED = GW_M_FALLBACK_END_,
    GW_M_GRPC_HANDLED,
    GW_M_GRPC_HANDLING, /* --metrics extensive only, as etcd */
    GW_M_COUNT_
};
/* go-grpc-prometheus' default buckets (prometheus.DefBuckets) */
static const double handling_buckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
/* go-grpc-prometheus' label values: ~25 methods x 17 codes at most */
#define GW_GRPC_SERIES 1024
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
                           CAIRN_METRIC_COUNTER, NULL, 0, {"grpc_method", "grpc_service", "grpc_type"},
                           GW_GRPC_SERIES},
    [GW_M_GRPC_HANDLED] = {"grpc_server_handled_total",
                           "Total number of RPCs completed on the server, regardless of success or failure.",
                           CAIRN_METRIC_COUNTER, NULL, 0, {"grpc_code", "grpc_method", "grpc_service", "grpc_type"},
                           GW_GRPC_SERIES},
    [GW_M_GRPC_HANDLING] = {"grpc_server_handling_seconds",
                            "Histogram of response latency (seconds) of gRPC that had been application-level handled "
                            "by the server.",
                            CAIRN_METRIC_HISTOGRAM, handling_buckets, sizeof handling_buckets / sizeof handling_buckets[0],
                            {"grpc_method", "grpc_service", "grpc_type"}, GW_GRPC_SERIES},
};

/* Room for the gateway's own text. */
#define GW_METRICS_BUF (256 * 1024)
/* How long a scrape waits for raftd and stored (Prometheus' default scrape timeout is 10 s). */
#define METRICS_WAIT_MS 1000
/* A process's answer larger than this is not taken (it would be a bug in that process). */
#define METRICS_MAX_PART (4u << 20)

/* The per-method series, looked up once (a call costs an array access, not a label lookup):
 * one gateway per process, so this state is the process's. */
#define N_CODES 17
static struct {
    const cairn_gateway_t *g;
    cairn_series_t **started;         /* [method index] */
    cairn_series_t **handling;        /* [method index], --metrics extensive */
    cairn_series_t *(*handled)[N_CODES]; /* [method index][grpc code] */
    cairn_u64map_t *calls;            /* call -> CALL_PACK(method index, start), start to status */
    cairn_procmetrics_t *proc;
} gm;

static const char *const grpc_code_names[N_CODES] = {
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
    "Internal", "Unavailable", "DataLoss", "Unauthenticated"};

cairn_metrics_reg_t *gw_metrics_new(int extensive, int *rc, char *err, size_t errlen)
{
    gm.proc = cairn_procmetrics_new("gatewayd");
    gm.calls = cairn_u64map_new();
    /* --metrics basic leaves the latency histogram out, as etcd's does */
    return cairn_metrics_new(gw_metric_rows, extensive ? GW_M_COUNT_ : GW_M_GRPC_HANDLING, rc, err, errlen);
}

/* A call in flight is one map value, no allocation: the start time in microseconds (48 bits,
 * ~8.9 years of uptime before it wraps, and a wrap only skews one latency sample) above the
 * method index + 1 (16 bits: never 0, so a value is never the map's empty value). */
#define CALL_PACK(index, t0) ((void *)(uintptr_t)((((uint64_t)(t0) & 0xffffffffffffull) << 16) | ((index) + 1)))
#define CALL_INDEX(v) ((size_t)(((uintptr_t)(v) & 0xffff) - 1))
#define CALL_T0(v) ((int64_t)((uint64_t)(uintptr_t)(v) >> 16))

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void gw_metrics_destroy(cairn_gateway_t *g)
{
    cairn_procmetrics_destroy(&gm.proc);
    cairn_u64map_destroy(&gm.calls); /* packed values: nothing to free */
    free(gm.started);
    free(gm.handling);
    free(gm.handled);
    memset(&gm, 0, sizeof gm);
    cairn_metrics_destroy(&g->metrics);
}

/* "/etcdserverpb.KV/Range" -> service "etcdserverpb.KV", method "Range" */
static void split_path(const char *path, char *svc, size_t sl, char *meth, size_t ml)
{
    const char *slash = strrchr(path, '/');
    snprintf(svc, sl, "%.*s", slash && slash > path ? (int)(slash - path - 1) : 0, path + 1);
    snprintf(meth, ml, "%s", slash ? slash + 1 : path);
}

static size_t method_index(const cairn_gateway_t *g, const gw_method_t *mt)
{
    for (size_t i = 0; i < g->n_methods; i++) /* sorted by path: a binary search would do; ~25 rows */
        if (g->methods[i] == mt)
            return i;
    return SIZE_MAX;
}

static int series_ready(cairn_gateway_t *g)
{
    if (gm.g == g && gm.started)
        return 1;
    free(gm.started);
    free(gm.handling);
    free(gm.handled);
    gm.started = calloc(g->n_methods ? g->n_methods : 1, sizeof *gm.started);
    gm.handling = calloc(g->n_methods ? g->n_methods : 1, sizeof *gm.handling);
    gm.handled = calloc(g->n_methods ? g->n_methods : 1, sizeof *gm.handled);
    gm.g = g;
    return gm.started && gm.handled && gm.handling;
}

void gw_metrics_call_started(cairn_gateway_t *g, cairn_call_id_t call, const gw_method_t *mt)
{
    size_t i = mt ? method_index(g, mt) : SIZE_MAX;
    if (i == SIZE_MAX || !series_ready(g))
        return; /* an unknown method: go-grpc-prometheus counts only registered ones */
    if (!gm.started[i]) {
        char svc[128], meth[64];
        split_path(mt->path, svc, sizeof svc, meth, sizeof meth);
        const char *v[3] = {meth, svc, mt->kind == GW_STREAM ? "bidi_stream" : "unary"};
        gm.started[i] = cairn_metrics_series(g->metrics, GW_M_GRPC_STARTED, v);
    }
    cairn_series_inc(gm.started[i], 1);
    if (gm.calls && i < 0xffff)
        cairn_u64map_put(gm.calls, call, CALL_PACK(i, now_us())); /* replaces a stale entry of a reused id */
}

void gw_metrics_call_status(cairn_gateway_t *g, cairn_call_id_t call, int code)
{
    void *v = gm.calls ? cairn_u64map_take(gm.calls, call) : NULL;
    if (!v)
        return;
    size_t i = CALL_INDEX(v);
    int64_t t0 = CALL_T0(v);
    if (!series_ready(g) || code < 0 || code >= N_CODES || i >= g->n_methods)
        return;
    if (g->cfg->metrics == CAIRN_METRICS_EXTENSIVE) {
        if (!gm.handling[i]) {
            const gw_method_t *mt = g->methods[i];
            char svc[128], meth[64];
            split_path(mt->path, svc, sizeof svc, meth, sizeof meth);
            const char *hv[3] = {meth, svc, mt->kind == GW_STREAM ? "bidi_stream" : "unary"};
            gm.handling[i] = cairn_metrics_series(g->metrics, GW_M_GRPC_HANDLING, hv);
        }
        cairn_series_observe(gm.handling[i], (double)(now_us() - t0) / 1e6);
    }
    if (!gm.handled[i][code]) {
        const gw_method_t *mt = g->methods[i];
        char svc[128], meth[64];
        split_path(mt->path, svc, sizeof svc, meth, sizeof meth);
        const char *lv[4] = {grpc_code_names[code], meth, svc, mt->kind == GW_STREAM ? "bidi_stream" : "unary"};
        gm.handled[i][code] = cairn_metrics_series(g->metrics, GW_M_GRPC_HANDLED, lv);
    }
    cairn_series_inc(gm.handled[i][code], 1);
}

/* A call gone without a status (reset by the client): forget it. */
void gw_metrics_call_closed(cairn_gateway_t *g, cairn_call_id_t call)
{
    if (gm.calls)
        cairn_u64map_take(gm.calls, call);
}

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

static void render_own(cairn_gateway_t *g)
{
    cairn_metrics_reg_t *m = g->metrics;
    cairn_metrics_set(m, GW_M_HAS_LEADER, g->st.leader != 0);
    cairn_metrics_set(m, GW_M_IS_LEADER, g->st.leader != 0 && g->st.leader == cairn_config_member_id(g->cfg));
    cairn_metrics_set(m, GW_M_DB_SIZE, (double)g->st.db_size);
    cairn_metrics_set(m, GW_M_CURRENT_REV, (double)g->st.revision);
    cairn_metrics_set(m, GW_M_COMPACT_REV, (double)g->st.compact_rev);
    cairn_metrics_set(m, GW_M_COMMITTED, (double)g->st.index);
    cairn_metrics_set(m, GW_M_APPLIED, (double)g->st.applied);
}

/* One family of a text: the bytes from its "# HELP" line to the next family's, its name, and
 * where its samples start (after the "# TYPE" line). */
typedef struct {
    const char *p;
    size_t len, samples;
    const char *name;
    size_t nlen;
    int part; /* -1: the gateway's own */
    int used;
} fam_t;

static size_t split_families(const char *t, size_t n, int part, fam_t *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < cap;) {
        size_t end = i + 1;
        while (end < n && !(t[end - 1] == '\n' && memcmp(t + end, "# HELP ", 7) == 0))
            end++;
        if (end - i > 7 && memcmp(t + i, "# HELP ", 7) == 0) {
            fam_t *f = &out[k++];
            f->p = t + i;
            f->len = end - i;
            f->name = t + i + 7;
            f->nlen = strcspn(f->name, " \n");
            f->part = part;
            f->used = 0;
            /* samples start after the HELP and TYPE lines */
            const char *nl = memchr(f->p, '\n', f->len);
            const char *nl2 = nl ? memchr(nl + 1, '\n', f->len - (size_t)(nl + 1 - f->p)) : NULL;
            f->samples = nl2 ? (size_t)(nl2 + 1 - f->p) : f->len;
        }
        i = end;
    }
    return k;
}

#define MAX_FAMILIES 1024

/* A process_* family, rendered by each process with a label process="...": etcd has one
 * process and tools read these unlabelled (etcdctl check datascale parses
 * "process_resident_memory_bytes <value>"), so the page serves the node's figure unlabelled -
 * the sum over the processes, or for the start time and the fd limit the smallest - and the
 * per-process series under the same name prefixed cairn_. Returns the bytes written at out
 * (the family's text, at most twice what the processes rendered). */
static size_t emit_process_family(fam_t *fams, size_t nf, size_t first, char *out)
{
    fam_t *f = &fams[first];
    int take_min = (f->nlen == 26 && memcmp(f->name, "process_start_time_seconds", 26) == 0) ||
                   (f->nlen == 15 && memcmp(f->name, "process_max_fds", 15) == 0);
    double agg = 0;
    int have = 0;
    size_t o = 0;
    /* HELP and TYPE lines of the node's figure, then the value */
    memcpy(out, f->p, f->samples);
    o += f->samples;
    size_t mark = o;
    for (size_t j = first; j < nf; j++) {
        fam_t *q = &fams[j];
        if (q->nlen != f->nlen || memcmp(q->name, f->name, f->nlen) != 0)
            continue;
        q->used = 1;
        const char *p = q->p + q->samples, *end = q->p + q->len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl)
                nl = end;
            const char *sp = p;
            for (const char *t = p; t < nl; t++)
                if (*t == ' ')
                    sp = t;
            if (sp > p) {
                char num[48];
                size_t nn = (size_t)(nl - sp - 1) < sizeof num - 1 ? (size_t)(nl - sp - 1) : sizeof num - 1;
                memcpy(num, sp + 1, nn);
                num[nn] = 0;
                double v = strtod(num, NULL);
                agg = !have ? v : take_min ? (v < agg ? v : agg) : agg + v;
                have = 1;
            }
            p = nl + 1;
        }
    }
    if (!have)
        return 0; /* no samples: leave the family out */
    o += (size_t)sprintf(out + o, "%.*s %.17g\n", (int)f->nlen, f->name, agg);
    (void)mark;
    /* the breakdown: "# HELP cairn_<name> <help> (one series per process of the node)" */
    const char *help = f->p + 7 + f->nlen + 1;
    const char *help_end = memchr(help, '\n', f->len);
    o += (size_t)sprintf(out + o, "# HELP cairn_%.*s %.*s Per process of the node.\n# TYPE cairn_%.*s gauge\n",
                         (int)f->nlen, f->name, help_end ? (int)(help_end - help) : 0, help, (int)f->nlen, f->name);
    for (size_t j = first; j < nf; j++) {
        fam_t *q = &fams[j];
        if (q->nlen != f->nlen || memcmp(q->name, f->name, f->nlen) != 0)
            continue;
        const char *p = q->p + q->samples, *end = q->p + q->len;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl)
                nl = end;
            o += (size_t)sprintf(out + o, "cairn_%.*s\n", (int)(nl - p), p);
            p = nl + 1;
        }
    }
    return o;
}

/* The page: every family once. A family several processes render (process_*) gets one HELP
 * and TYPE and every process's samples; a fallback family of the gateway's (the status rows)
 * is left out when a process rendered it. */
static void gather_reply(cairn_gateway_t *g, gather_t *x)
{
    render_own(g);
    size_t cap = 2 * (size_t)GW_METRICS_BUF;
    for (int k = 0; k < N_PARTS; k++)
        cap += 2 * x->len[k]; /* process_* samples are written twice (the node's and cairn_process_*) */
    char *own = malloc(2 * (size_t)GW_METRICS_BUF), *page = malloc(cap);
    fam_t *fams = malloc(MAX_FAMILIES * sizeof *fams);
    int n = own && page && fams ? cairn_metrics_render(g->metrics, own, GW_METRICS_BUF) : CAIRN_ENOMEM;
    int pn = n >= 0 && gm.proc ? cairn_procmetrics_render(gm.proc, own + n, GW_METRICS_BUF) : 0;
    if (n < 0 || pn < 0) {
        cairn_warn("cannot render /metrics", "err=\"%s\"", cairn_strerror(n < 0 ? n : pn));
        cairn_h2srv_http1_reply(g->srv, x->req, 500, NULL, (const uint8_t *)"metrics unavailable\n", 20);
        free(own);
        free(page);
        free(fams);
        return;
    }
    size_t nf = split_families(own, (size_t)n + (size_t)pn, -1, fams, MAX_FAMILIES);
    for (int k = 0; k < N_PARTS; k++)
        if (x->text[k])
            nf += split_families(x->text[k], x->len[k], k, fams + nf, MAX_FAMILIES - nf);
    size_t out = 0;
    for (size_t i = 0; i < nf; i++) {
        fam_t *f = &fams[i];
        if (f->used)
            continue;
        int is_fallback = 0;
        if (f->part < 0)
            for (int r = 0; r < GW_M_FALLBACK_END_; r++)
                if (strlen(gw_metric_rows[r].name) == f->nlen && memcmp(gw_metric_rows[r].name, f->name, f->nlen) == 0)
                    is_fallback = 1;
        int elsewhere = 0;
        for (size_t j = i + 1; j < nf; j++)
            if (fams[j].nlen == f->nlen && memcmp(fams[j].name, f->name, f->nlen) == 0 && fams[j].part >= 0)
                elsewhere = 1;
        if (is_fallback && elsewhere) {
            f->used = 1;
            continue; /* the process that owns it answered */
        }
        if (f->nlen > 8 && memcmp(f->name, "process_", 8) == 0) {
            out += emit_process_family(fams, nf, i, page + out);
            continue;
        }
        memcpy(page + out, f->p, f->len);
        out += f->len;
        f->used = 1;
        for (size_t j = i + 1; j < nf; j++) { /* the same family from other processes: samples only */
            fam_t *o = &fams[j];
            if (o->used || o->nlen != f->nlen || memcmp(o->name, f->name, f->nlen) != 0)
                continue;
            memcpy(page + out, o->p + o->samples, o->len - o->samples);
            out += o->len - o->samples;
            o->used = 1;
        }
    }
    cairn_h2srv_http1_reply(g->srv, x->req, 200, "text/plain; version=0.0.4", (const uint8_t *)page, out);
    free(own);
    free(page);
    free(fams);
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
