/* cairn_metrics.h - counters, gauges and histograms, rendered in the Prometheus text
 * exposition format 0.0.4 (what etcd's /metrics serves; DESIGN.md "gatewayd").
 *
 * Each process declares its metrics ONCE, in a static table of cairn_metric_desc_t, with
 * etcd's name and help text where etcd has the metric (so dashboards and alerts written for
 * etcd work unchanged), and creates one registry from it at start:
 *
 *     enum { M_HAS_LEADER, M_WAL_FSYNC };
 *     static const double fsync_buckets[] = {0.001, 0.002, ...};
 *     static const cairn_metric_desc_t table[] = {
 *         [M_HAS_LEADER] = {"etcd_server_has_leader", "Whether or not ...", CAIRN_METRIC_GAUGE},
 *         [M_WAL_FSYNC] = {"etcd_disk_wal_fsync_duration_seconds", "The latency ...",
 *                          CAIRN_METRIC_HISTOGRAM, fsync_buckets, 14},
 *     };
 *     cairn_metrics_reg_t *m = cairn_metrics_new(table, 2, &rc, err, sizeof err);
 *     cairn_metrics_set(m, M_HAS_LEADER, 1);
 *
 * A metric is named by its index in the table, so an update is an array access: no name
 * lookup, no lock, no allocation (labelled series excepted, see below). A registry belongs
 * to the thread that runs the process's loop (every Cairn daemon has one); updating it from
 * another thread is a data race. That is the price of not locking on every update.
 *
 * Labels: a row may name up to CAIRN_METRICS_MAX_LABELS label names; each distinct tuple of
 * values is one series, created on first use by cairn_metrics_series and kept for the life
 * of the registry (counters must not vanish). Their number is capped per metric (the row's
 * max_series, default CAIRN_METRICS_DEFAULT_SERIES): past the cap cairn_metrics_series
 * returns NULL and every cairn_series_* call ignores a NULL series, so a client that sends
 * a million method names costs a bounded amount of memory, never a crash.
 *
 * Output, per metric in table order (a labelled metric with no series yet is left out, as
 * client_golang does):
 *     # HELP <name> <help, with \ and newline escaped>
 *     # TYPE <name> counter|gauge|histogram
 *     <name>{<labels>} <value>                        counter, gauge
 *     <name>_bucket{<labels>,le="<bound>"} <n>        histogram: n = observations <= bound
 *     <name>_bucket{<labels>,le="+Inf"} <count>         (cumulative), then +Inf = count
 *     <name>_sum{<labels>} <sum>
 *     <name>_count{<labels>} <count>
 * Label values escape \ " and newline. Counters are unsigned 64-bit integers and printed as
 * such; gauges, sums and bounds are doubles, printed as integers when they are integral
 * (below 2^53), else with the fewest digits that read back to the same double.
 */
#ifndef CAIRN_METRICS_H
#define CAIRN_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define CAIRN_METRICS_MAX_LABELS 4
#define CAIRN_METRICS_DEFAULT_SERIES 64

typedef enum { CAIRN_METRIC_COUNTER = 1, CAIRN_METRIC_GAUGE, CAIRN_METRIC_HISTOGRAM } cairn_metric_kind_t;

typedef struct {
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]*, unique in the table */
    const char *help;
    cairn_metric_kind_t kind;
    const double *buckets; /* histograms: upper bounds, finite, strictly increasing; +Inf is implied */
    size_t n_buckets;
    const char *labels[CAIRN_METRICS_MAX_LABELS]; /* label names, unused slots NULL; none: one series */
    size_t max_series; /* labelled metrics: cap on distinct label tuples; 0: the default */
} cairn_metric_desc_t;

typedef struct cairn_metrics_reg_t cairn_metrics_reg_t;
typedef struct cairn_series_t cairn_series_t;

/* A registry holding the n metrics of table, which must outlive it (it is meant to be a static
 * const table). NULL on failure with *rc set (CAIRN_EINVAL for a bad row: bad or duplicate
 * name, bad label name, buckets not increasing; CAIRN_ENOMEM) and the reason in errbuf. */
cairn_metrics_reg_t *cairn_metrics_new(const cairn_metric_desc_t *table, size_t n, int *rc, char *errbuf, size_t errlen);
/* Frees the registry and every series; *self_p becomes NULL; idempotent. */
void cairn_metrics_destroy(cairn_metrics_reg_t **self_p);

/* The series of metric id with these label values (as many as the row has label names, in
 * its order; NULL for a metric without labels), created on first use. NULL when id is out of
 * range, a value is NULL, the metric's series cap is reached, or memory ran out. */
cairn_series_t *cairn_metrics_series(cairn_metrics_reg_t *self, size_t id, const char *const *values);

/* Updates. A NULL series, or a call that does not fit the metric's kind (set on a counter,
 * observe on a gauge...), is ignored: metrics never take a daemon down. */
void cairn_series_inc(cairn_series_t *s, uint64_t n);   /* counter: += n */
void cairn_series_set(cairn_series_t *s, double v);     /* gauge: = v */
void cairn_series_add(cairn_series_t *s, double v);     /* gauge: += v (v may be negative) */
void cairn_series_observe(cairn_series_t *s, double v); /* histogram: one observation */

/* The same on a metric without labels. */
void cairn_metrics_inc(cairn_metrics_reg_t *self, size_t id, uint64_t n);
void cairn_metrics_set(cairn_metrics_reg_t *self, size_t id, double v);
void cairn_metrics_add(cairn_metrics_reg_t *self, size_t id, double v);
void cairn_metrics_observe(cairn_metrics_reg_t *self, size_t id, double v);

/* Writes the exposition text of every metric into buf (NUL-terminated when cap > 0) and
 * returns its length; CAIRN_ETOOBIG when it does not fit in cap bytes (buf then holds a
 * truncated prefix that must not be served). The caller owns the buffer, so rendering
 * never allocates and the text can never grow without bound. */
int cairn_metrics_render(const cairn_metrics_reg_t *self, char *buf, size_t cap);

#endif
