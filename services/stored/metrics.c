/* metrics.c - stored's metrics table (cairn_metrics.h), answered over IPC (stored.h).
 *
 * The disk and MVCC metrics of a node, with etcd 3.4's names, help texts, kinds and buckets
 * (etcd's wal/metrics.go, mvcc/backend/metrics.go, mvcc/metrics.go, etcdserver/metrics.go,
 * checked against a running etcd 3.4.23's /metrics). gatewayd asks with METRICS {req_id} on
 * stored's ROUTER socket and serves the text on its /metrics page; stored answers RESULT
 * {req_id, code 0, body = the text}.
 *
 * The registry is updated only on the loop's thread (cairn_metrics.h: no locks): durations
 * measured on a snapshot thread are handed to the loop with the thread's result and observed
 * there. Gauges that mirror the store's state (revisions, sizes, applied index) are set when
 * the text is rendered, so they are read, never tracked.
 *
 * Not here yet (no true value to give): etcd_mvcc_put/delete/range/txn_total count etcd's
 * per-operation store calls (a DeleteRange is one delete however many keys it removes), which
 * only apply.c sees.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_metrics.h"
#include "cairn_procmetrics.h"
#include "stored.h"

/* prometheus.ExponentialBuckets(0.001, 2, 14): etcd's WAL fsync and backend commit */
static const double disk_buckets[] = {0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
                                      0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192};
/* prometheus.ExponentialBuckets(0.01, 2, 17): etcd's backend snapshot */
static const double snapshot_buckets[] = {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56,
                                          5.12, 10.24, 20.48, 40.96, 81.92, 163.84, 327.68, 655.36};

static const cairn_metric_desc_t stored_metric_rows[STORED_M_COUNT_] = {
    [STORED_M_WAL_FSYNC] = {"etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.",
                            CAIRN_METRIC_HISTOGRAM, disk_buckets, sizeof disk_buckets / sizeof disk_buckets[0]},
    [STORED_M_BACKEND_COMMIT] = {"etcd_disk_backend_commit_duration_seconds",
                                 "The latency distributions of commit called by backend.", CAIRN_METRIC_HISTOGRAM,
                                 disk_buckets, sizeof disk_buckets / sizeof disk_buckets[0]},
    [STORED_M_BACKEND_SNAPSHOT] = {"etcd_disk_backend_snapshot_duration_seconds",
                                   "The latency distribution of backend snapshots.", CAIRN_METRIC_HISTOGRAM,
                                   snapshot_buckets, sizeof snapshot_buckets / sizeof snapshot_buckets[0]},
    /* a gauge in etcd despite the _total: set from the applied index, not counted */
    [STORED_M_APPLIED] = {"etcd_server_proposals_applied_total", "The total number of consensus proposals applied.",
                          CAIRN_METRIC_GAUGE},
    [STORED_M_SNAP_APPLY] = {"etcd_server_snapshot_apply_in_progress_total",
                             "1 if the server is applying the incoming snapshot. 0 if none.", CAIRN_METRIC_GAUGE},
    [STORED_M_DB_SIZE] = {"etcd_mvcc_db_total_size_in_bytes",
                          "Total size of the underlying database physically allocated in bytes.", CAIRN_METRIC_GAUGE},
    [STORED_M_DB_SIZE_DEBUG] = {"etcd_debugging_mvcc_db_total_size_in_bytes",
                                "Total size of the underlying database physically allocated in bytes.",
                                CAIRN_METRIC_GAUGE},
    [STORED_M_DB_IN_USE] = {"etcd_mvcc_db_total_size_in_use_in_bytes",
                            "Total size of the underlying database logically in use in bytes.", CAIRN_METRIC_GAUGE},
    [STORED_M_CURRENT_REV] = {"etcd_debugging_mvcc_current_revision", "The current revision of store.",
                              CAIRN_METRIC_GAUGE},
    [STORED_M_COMPACT_REV] = {"etcd_debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
                              CAIRN_METRIC_GAUGE},
    [STORED_M_QUOTA] = {"etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.",
                        CAIRN_METRIC_GAUGE},
    [STORED_M_SLOW_APPLY] = {"etcd_server_slow_apply_total", "The total number of slow apply requests (likely overloaded from slow disk).",
                             CAIRN_METRIC_COUNTER},
};

/* The text of every row is a few KiB; this bounds it (cairn_metrics_render never grows). */
#define STORED_METRICS_BUF (64 * 1024)

double stored_clock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int stored_metrics_init(stored_t *s)
{
    char err[256];
    int rc = 0;
    s->metrics = cairn_metrics_new(stored_metric_rows, STORED_M_COUNT_, &rc, err, sizeof err);
    s->procmetrics = cairn_procmetrics_new("stored");
    if (!s->metrics)
        cairn_error("cannot create the metrics registry", "err=\"%s\"", err);
    return s->metrics ? 0 : rc;
}

void stored_metrics_inc(stored_t *s, int id)
{
    if (s->metrics)
        cairn_metrics_inc(s->metrics, (size_t)id, 1);
}

void stored_metrics_observe(stored_t *s, int id, double seconds)
{
    if (s->metrics)
        cairn_metrics_observe(s->metrics, (size_t)id, seconds);
}

void stored_metrics_answer(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id)
{
    char *buf = s->metrics ? malloc(STORED_METRICS_BUF) : NULL;
    if (!buf) {
        stored_reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    cairn_metrics_reg_t *m = s->metrics;
    int64_t size = cairn_mvcc_db_size(s->mvcc);
    /* the same size STATUS reports for both (LevelDB's files: what it holds is in use) */
    cairn_metrics_set(m, STORED_M_DB_SIZE, size > 0 ? (double)size : 0);
    cairn_metrics_set(m, STORED_M_DB_SIZE_DEBUG, size > 0 ? (double)size : 0);
    int64_t in_use = cairn_mvcc_db_size_in_use(s->mvcc); /* what STATUS reports as dbSizeInUse */
    cairn_metrics_set(m, STORED_M_DB_IN_USE, in_use > 0 ? (double)(in_use < size ? in_use : size) : 0);
    cairn_metrics_set(m, STORED_M_QUOTA, s->cfg->quota_bytes > 0 && s->cfg->quota_bytes < INT64_MAX
                                             ? (double)s->cfg->quota_bytes : 0);
    cairn_metrics_set(m, STORED_M_APPLIED, (double)cairn_mvcc_applied_index(s->mvcc));
    cairn_metrics_set(m, STORED_M_CURRENT_REV, (double)cairn_mvcc_revision(s->mvcc));
    /* never compacted: -1 in the store, the gauge's initial 0 in etcd */
    int64_t crev = cairn_mvcc_compact_revision(s->mvcc);
    cairn_metrics_set(m, STORED_M_COMPACT_REV, crev > 0 ? (double)crev : 0);
    cairn_metrics_set(m, STORED_M_SNAP_APPLY, s->inst.running ? 1 : 0);
    int n = cairn_metrics_render(m, buf, STORED_METRICS_BUF);
    /* then the process_* families (cairn_procmetrics.h), labelled process="stored" */
    int pn = n >= 0 && s->procmetrics ? cairn_procmetrics_render(s->procmetrics, buf + n, STORED_METRICS_BUF - (size_t)n)
                                      : 0;
    n = pn < 0 ? pn : n + pn;
    if (n < 0) {
        cairn_warn("metrics text does not fit", "err=\"%s\"", cairn_strerror(n));
        stored_reply_result(s, ident, ident_len, req_id, 13, cairn_strerror(n), NULL, 0);
    } else {
        stored_reply_result(s, ident, ident_len, req_id, 0, NULL, (const uint8_t *)buf, (size_t)n);
    }
    free(buf);
}
