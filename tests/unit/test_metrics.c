/* Unit tests for cairn_metrics: the exposition text byte for byte (Prometheus text format
 * 0.0.4, what etcd's /metrics serves), the table checks, the series cap, truncation. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_metrics.h"

static char out[8192];

static cairn_metrics_reg_t *make(const cairn_metric_desc_t *t, size_t n)
{
    int rc = 1;
    char err[256] = "";
    cairn_metrics_reg_t *m = cairn_metrics_new(t, n, &rc, err, sizeof err);
    cr_assert_not_null(m, "cairn_metrics_new: %s", err);
    cr_assert_eq(rc, 0);
    return m;
}

static const char *render(cairn_metrics_reg_t *m)
{
    int n = cairn_metrics_render(m, out, sizeof out);
    cr_assert_geq(n, 0, "render: %s", cairn_strerror(n));
    cr_assert_eq((size_t)n, strlen(out));
    return out;
}

Test(metrics, counter_text_exact)
{
    static const cairn_metric_desc_t t[] = {
        {"grpc_server_started_total", "Total number of RPCs started on the server.", CAIRN_METRIC_COUNTER},
    };
    cairn_metrics_reg_t *m = make(t, 1);
    /* an unlabelled metric shows its 0 before the first update, as client_golang's do */
    cr_assert_str_eq(render(m), "# HELP grpc_server_started_total Total number of RPCs started on the server.\n"
                                "# TYPE grpc_server_started_total counter\n"
                                "grpc_server_started_total 0\n");
    cairn_metrics_inc(m, 0, 1);
    cairn_metrics_inc(m, 0, 41);
    cairn_metrics_set(m, 0, 7); /* not a gauge: ignored */
    cairn_metrics_inc(m, 0, 18446744073709551615ull - 42); /* integers stay exact */
    cr_assert_str_eq(render(m), "# HELP grpc_server_started_total Total number of RPCs started on the server.\n"
                                "# TYPE grpc_server_started_total counter\n"
                                "grpc_server_started_total 18446744073709551615\n");
    cairn_metrics_destroy(&m);
    cr_assert_null(m);
    cairn_metrics_destroy(&m); /* idempotent */
}

Test(metrics, gauge_text_exact)
{
    static const cairn_metric_desc_t t[] = {
        {"etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.", CAIRN_METRIC_GAUGE},
        {"etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.",
         CAIRN_METRIC_GAUGE},
        {"g_frac", "fractions", CAIRN_METRIC_GAUGE},
        {"g_neg", "negative", CAIRN_METRIC_GAUGE},
        {"g_inf", "infinite", CAIRN_METRIC_GAUGE},
        {"g_nan", "not a number", CAIRN_METRIC_GAUGE},
        {"g_tenth", "not exact in binary", CAIRN_METRIC_GAUGE},
    };
    cairn_metrics_reg_t *m = make(t, 7);
    cairn_metrics_set(m, 6, 0.1); /* the fewest digits that read back: 0.1, not 0.10000000000000001 */
    cairn_metrics_set(m, 0, 1);
    cairn_metrics_set(m, 1, 1048576); /* an integer, not 1.048576e+06 */
    cairn_metrics_set(m, 2, 0.25);
    cairn_metrics_add(m, 2, 0.5);
    cairn_metrics_set(m, 3, 5);
    cairn_metrics_add(m, 3, -7.5);
    cairn_metrics_set(m, 4, INFINITY);
    cairn_metrics_set(m, 5, NAN);
    cairn_metrics_inc(m, 0, 3);     /* not a counter: ignored */
    cairn_metrics_observe(m, 0, 3); /* not a histogram: ignored */
    cr_assert_str_eq(render(m),
                     "# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.\n"
                     "# TYPE etcd_server_has_leader gauge\n"
                     "etcd_server_has_leader 1\n"
                     "# HELP etcd_mvcc_db_total_size_in_bytes Total size of the underlying database physically "
                     "allocated in bytes.\n"
                     "# TYPE etcd_mvcc_db_total_size_in_bytes gauge\n"
                     "etcd_mvcc_db_total_size_in_bytes 1048576\n"
                     "# HELP g_frac fractions\n"
                     "# TYPE g_frac gauge\n"
                     "g_frac 0.75\n"
                     "# HELP g_neg negative\n"
                     "# TYPE g_neg gauge\n"
                     "g_neg -2.5\n"
                     "# HELP g_inf infinite\n"
                     "# TYPE g_inf gauge\n"
                     "g_inf +Inf\n"
                     "# HELP g_nan not a number\n"
                     "# TYPE g_nan gauge\n"
                     "g_nan NaN\n"
                     "# HELP g_tenth not exact in binary\n"
                     "# TYPE g_tenth gauge\n"
                     "g_tenth 0.1\n");
    cairn_metrics_destroy(&m);
}

Test(metrics, histogram_buckets_cumulative)
{
    static const double b[] = {0.001, 0.002, 0.004};
    static const cairn_metric_desc_t t[] = {
        {"etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.",
         CAIRN_METRIC_HISTOGRAM, b, 3},
    };
    cairn_metrics_reg_t *m = make(t, 1);
    cr_assert_str_eq(render(m), "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.\n"
                                "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
                                "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 0\n"
                                "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 0\n"
                                "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 0\n"
                                "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 0\n"
                                "etcd_disk_wal_fsync_duration_seconds_sum 0\n"
                                "etcd_disk_wal_fsync_duration_seconds_count 0\n");
    /* powers of two, so that the sum is exact */
    cairn_metrics_observe(m, 0, 0.0009765625); /* first bucket */
    cairn_metrics_observe(m, 0, 0.001953125);  /* second */
    cairn_metrics_observe(m, 0, 0.00390625);   /* third */
    cairn_metrics_observe(m, 0, 4);            /* above every bound: +Inf only */
    cairn_metrics_observe(m, 0, NAN);    /* ignored */
    cr_assert_str_eq(render(m), "# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.\n"
                                "# TYPE etcd_disk_wal_fsync_duration_seconds histogram\n"
                                "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.001\"} 1\n"
                                "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 2\n"
                                "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.004\"} 3\n"
                                "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 4\n"
                                "etcd_disk_wal_fsync_duration_seconds_sum 4.0068359375\n"
                                "etcd_disk_wal_fsync_duration_seconds_count 4\n");
    cairn_metrics_destroy(&m);
}

Test(metrics, labels_escaped_and_histogram_labels)
{
    static const double b[] = {1, 10};
    static const cairn_metric_desc_t t[] = {
        {"grpc_server_handled_total", "Total number of RPCs completed on the server, regardless of success or failure.",
         CAIRN_METRIC_COUNTER, .labels = {"grpc_method", "grpc_code"}},
        {"h", "help with \\ and a\nnewline", CAIRN_METRIC_HISTOGRAM, b, 2, .labels = {"op"}},
        {"unused", "a labelled metric with no series is left out", CAIRN_METRIC_GAUGE, .labels = {"x"}},
    };
    cairn_metrics_reg_t *m = make(t, 3);
    const char *v1[] = {"Range", "OK"};
    const char *v2[] = {"we\"ird\\na\nme", "Unavailable"};
    cairn_series_t *s1 = cairn_metrics_series(m, 0, v1);
    cr_assert_not_null(s1);
    cr_assert_eq(cairn_metrics_series(m, 0, v1), s1, "the same values find the same series");
    cairn_series_inc(s1, 2);
    cairn_series_inc(cairn_metrics_series(m, 0, v2), 1);
    cr_assert_null(cairn_metrics_series(m, 0, NULL), "a labelled metric needs values");
    const char *vh[] = {"put"};
    cairn_series_observe(cairn_metrics_series(m, 1, vh), 3);
    cairn_series_observe(cairn_metrics_series(m, 1, vh), 10); /* on a bound: le is inclusive */
    cr_assert_str_eq(render(m),
                     "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of "
                     "success or failure.\n"
                     "# TYPE grpc_server_handled_total counter\n"
                     "grpc_server_handled_total{grpc_method=\"Range\",grpc_code=\"OK\"} 2\n"
                     "grpc_server_handled_total{grpc_method=\"we\\\"ird\\\\na\\nme\",grpc_code=\"Unavailable\"} 1\n"
                     "# HELP h help with \\\\ and a\\nnewline\n"
                     "# TYPE h histogram\n"
                     "h_bucket{op=\"put\",le=\"1\"} 0\n"
                     "h_bucket{op=\"put\",le=\"10\"} 2\n"
                     "h_bucket{op=\"put\",le=\"+Inf\"} 2\n"
                     "h_sum{op=\"put\"} 13\n"
                     "h_count{op=\"put\"} 2\n");
    cairn_metrics_destroy(&m);
}

Test(metrics, series_capped)
{
    static const cairn_metric_desc_t t[] = {
        {"c", "capped", CAIRN_METRIC_COUNTER, .labels = {"k"}, .max_series = 3},
    };
    cairn_metrics_reg_t *m = make(t, 1);
    char name[16];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "v%d", i);
        const char *v[] = {name};
        cr_assert_not_null(cairn_metrics_series(m, 0, v));
    }
    const char *v[] = {"one too many"};
    cairn_series_t *s = cairn_metrics_series(m, 0, v);
    cr_assert_null(s);
    cairn_series_inc(s, 1); /* NULL is ignored, never a crash */
    const char *old[] = {"v1"};
    cr_assert_not_null(cairn_metrics_series(m, 0, old), "existing series are still found");
    cr_assert_null(cairn_metrics_series(m, 1, NULL), "an id past the table");
    cairn_metrics_destroy(&m);
}

Test(metrics, truncation_reported)
{
    static const cairn_metric_desc_t t[] = {
        {"etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.", CAIRN_METRIC_GAUGE},
    };
    cairn_metrics_reg_t *m = make(t, 1);
    int full = cairn_metrics_render(m, out, sizeof out);
    cr_assert_gt(full, 0);
    /* every size short of the text plus its NUL is refused, and the buffer stays a C string */
    for (size_t cap = 1; cap <= (size_t)full; cap++) {
        char small[256];
        memset(small, 'x', sizeof small);
        cr_assert_eq(cairn_metrics_render(m, small, cap), CAIRN_ETOOBIG, "cap %zu", cap);
        cr_assert(memchr(small, 0, cap) != NULL, "cap %zu: not terminated", cap);
        cr_assert_eq(small[cap], 'x', "cap %zu: wrote past the buffer", cap);
    }
    char exact[256];
    cr_assert_eq(cairn_metrics_render(m, exact, (size_t)full + 1), full);
    cr_assert_str_eq(exact, out);
    cr_assert_eq(cairn_metrics_render(m, NULL, 0), CAIRN_ETOOBIG);
    cairn_metrics_destroy(&m);
}

Test(metrics, bad_tables_refused)
{
    static const double down[] = {2, 1};
    static const double inf[] = {1, INFINITY};
    static const cairn_metric_desc_t bad[][2] = {
        {{"dup", "a", CAIRN_METRIC_GAUGE}, {"dup", "b", CAIRN_METRIC_COUNTER}},
        {{"9starts_with_digit", "a", CAIRN_METRIC_GAUGE}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"has-dash", "a", CAIRN_METRIC_GAUGE}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"h", "a", CAIRN_METRIC_HISTOGRAM, down, 2}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"h", "a", CAIRN_METRIC_HISTOGRAM, inf, 2}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"h", "a", CAIRN_METRIC_HISTOGRAM, .labels = {"le"}}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"g", "a", CAIRN_METRIC_GAUGE, .labels = {"__reserved"}}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"g", "a", CAIRN_METRIC_GAUGE, .labels = {"a", "a"}}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"g", "a", CAIRN_METRIC_GAUGE, .labels = {"a", NULL, "b"}}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"g", "a", CAIRN_METRIC_GAUGE, down, 2}, {"ok", "b", CAIRN_METRIC_GAUGE}},
        {{"g", "a", 0}, {"ok", "b", CAIRN_METRIC_GAUGE}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = 0;
        char err[256] = "";
        cairn_metrics_reg_t *m = cairn_metrics_new(bad[i], 2, &rc, err, sizeof err);
        cr_assert_null(m, "table %zu accepted", i);
        cr_assert_eq(rc, CAIRN_EINVAL, "table %zu", i);
        cr_assert_neq(err[0], 0, "table %zu: no reason given", i);
    }
}
