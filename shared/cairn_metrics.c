/* cairn_metrics.c - see cairn_metrics.h. */
#include "cairn_metrics.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"

struct cairn_series_t {
    const cairn_metric_desc_t *desc;
    char *labels; /* rendered and escaped: a="x",b="y"; "" for none */
    uint64_t count; /* counter value; histogram observation count */
    double value;   /* gauge value; histogram sum */
    uint64_t bucket[]; /* histogram: observations that fell in each bucket (not cumulative) */
};

typedef struct {
    const cairn_metric_desc_t *desc;
    size_t n_labels, max_series;
    cairn_series_t **series;
    size_t n_series, cap_series;
} family_t;

struct cairn_metrics_reg_t {
    family_t *fam;
    size_t n;
};

/* ------------------------------------------------------------------ validation */

static int name_ok(const char *s, int colon)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
        if (!alpha && !(p != s && c >= '0' && c <= '9'))
            return 0;
    }
    return 1;
}

static int check_row(const cairn_metric_desc_t *d, size_t *n_labels, char *errbuf, size_t errlen)
{
    if (!name_ok(d->name, 1)) {
        cairn_errbuf_set(errbuf, errlen, "bad metric name \"%s\"", d->name ? d->name : "(null)");
        return CAIRN_EINVAL;
    }
    if (d->kind != CAIRN_METRIC_COUNTER && d->kind != CAIRN_METRIC_GAUGE && d->kind != CAIRN_METRIC_HISTOGRAM) {
        cairn_errbuf_set(errbuf, errlen, "metric %s: unknown kind %d", d->name, (int)d->kind);
        return CAIRN_EINVAL;
    }
    size_t nl = 0;
    while (nl < CAIRN_METRICS_MAX_LABELS && d->labels[nl])
        nl++;
    for (size_t i = 0; i < CAIRN_METRICS_MAX_LABELS; i++) {
        const char *l = d->labels[i];
        /* "__" is reserved to Prometheus; "le" is the histogram's own label */
        if (i >= nl ? l != NULL
                    : !name_ok(l, 0) || strncmp(l, "__", 2) == 0 ||
                          (d->kind == CAIRN_METRIC_HISTOGRAM && strcmp(l, "le") == 0)) {
            cairn_errbuf_set(errbuf, errlen, "metric %s: bad label name \"%s\"", d->name, l ? l : "(null)");
            return CAIRN_EINVAL;
        }
        for (size_t j = 0; j < i && i < nl; j++)
            if (strcmp(d->labels[j], l) == 0) {
                cairn_errbuf_set(errbuf, errlen, "metric %s: label %s named twice", d->name, l);
                return CAIRN_EINVAL;
            }
    }
    if (d->kind == CAIRN_METRIC_HISTOGRAM) {
        if (d->n_buckets && !d->buckets) {
            cairn_errbuf_set(errbuf, errlen, "metric %s: no bucket bounds", d->name);
            return CAIRN_EINVAL;
        }
        for (size_t i = 0; i < d->n_buckets; i++)
            if (!isfinite(d->buckets[i]) || (i && !(d->buckets[i] > d->buckets[i - 1]))) {
                cairn_errbuf_set(errbuf, errlen, "metric %s: bucket bounds must be finite and increasing", d->name);
                return CAIRN_EINVAL;
            }
    } else if (d->n_buckets) {
        cairn_errbuf_set(errbuf, errlen, "metric %s: buckets on a metric that is not a histogram", d->name);
        return CAIRN_EINVAL;
    }
    *n_labels = nl;
    return 0;
}

/* ------------------------------------------------------------------ series */

static void escape_into(char *out, size_t *len, const char *s, int quote)
{
    for (; *s; s++) {
        const char *e = NULL;
        if (*s == '\\')
            e = "\\\\";
        else if (*s == '\n')
            e = "\\n";
        else if (quote && *s == '"')
            e = "\\\"";
        if (e) {
            if (out)
                memcpy(out + *len, e, 2);
            *len += 2;
        } else {
            if (out)
                out[*len] = *s;
            *len += 1;
        }
    }
}

/* a="x",b="y" for these values (first pass: out NULL, measures) */
static size_t labels_text(const family_t *f, const char *const *values, char *out)
{
    size_t len = 0;
    for (size_t i = 0; i < f->n_labels; i++) {
        const char *k = f->desc->labels[i];
        size_t kl = strlen(k);
        if (i) {
            if (out)
                out[len] = ',';
            len++;
        }
        if (out) {
            memcpy(out + len, k, kl);
            memcpy(out + len + kl, "=\"", 2);
        }
        len += kl + 2;
        escape_into(out, &len, values[i], 1);
        if (out)
            out[len] = '"';
        len++;
    }
    if (out)
        out[len] = 0;
    return len;
}

static cairn_series_t *series_new(const family_t *f, char *labels)
{
    size_t nb = f->desc->kind == CAIRN_METRIC_HISTOGRAM ? f->desc->n_buckets : 0;
    cairn_series_t *s = calloc(1, sizeof *s + nb * sizeof s->bucket[0]);
    if (!s)
        return NULL;
    s->desc = f->desc;
    s->labels = labels;
    return s;
}

static int family_push(family_t *f, cairn_series_t *s)
{
    if (f->n_series == f->cap_series) {
        size_t nc = f->cap_series ? f->cap_series * 2 : 4;
        if (nc > f->max_series)
            nc = f->max_series;
        cairn_series_t **ns = realloc(f->series, nc * sizeof *ns);
        if (!ns)
            return CAIRN_ENOMEM;
        f->series = ns;
        f->cap_series = nc;
    }
    f->series[f->n_series++] = s;
    return 0;
}

cairn_series_t *cairn_metrics_series(cairn_metrics_reg_t *self, size_t id, const char *const *values)
{
    if (!self || id >= self->n)
        return NULL;
    family_t *f = &self->fam[id];
    if (!f->n_labels)
        return f->series[0];
    if (!values)
        return NULL;
    for (size_t i = 0; i < f->n_labels; i++)
        if (!values[i])
            return NULL;
    size_t len = labels_text(f, values, NULL);
    char stackbuf[256];
    char *text = len < sizeof stackbuf ? stackbuf : malloc(len + 1);
    if (!text)
        return NULL;
    labels_text(f, values, text);
    cairn_series_t *found = NULL;
    for (size_t i = 0; i < f->n_series && !found; i++)
        if (strcmp(f->series[i]->labels, text) == 0)
            found = f->series[i];
    if (found || f->n_series >= f->max_series) {
        if (text != stackbuf)
            free(text);
        return found;
    }
    char *keep = text != stackbuf ? text : strdup(text);
    cairn_series_t *s = keep ? series_new(f, keep) : NULL;
    if (!s || family_push(f, s)) {
        free(keep);
        free(s);
        return NULL;
    }
    return s;
}

void cairn_series_inc(cairn_series_t *s, uint64_t n)
{
    if (s && s->desc->kind == CAIRN_METRIC_COUNTER)
        s->count += n;
}

void cairn_series_set(cairn_series_t *s, double v)
{
    if (s && s->desc->kind == CAIRN_METRIC_GAUGE)
        s->value = v;
}

void cairn_series_add(cairn_series_t *s, double v)
{
    if (s && s->desc->kind == CAIRN_METRIC_GAUGE)
        s->value += v;
}

void cairn_series_observe(cairn_series_t *s, double v)
{
    if (!s || s->desc->kind != CAIRN_METRIC_HISTOGRAM || isnan(v))
        return;
    /* le is inclusive: v lands in the first bucket whose bound is >= v; above every bound it
     * is counted only by count (the +Inf bucket) */
    const double *b = s->desc->buckets;
    size_t lo = 0, hi = s->desc->n_buckets;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b[mid] >= v)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo < s->desc->n_buckets)
        s->bucket[lo]++;
    s->count++;
    s->value += v;
}

void cairn_metrics_inc(cairn_metrics_reg_t *self, size_t id, uint64_t n) { cairn_series_inc(cairn_metrics_series(self, id, NULL), n); }
void cairn_metrics_set(cairn_metrics_reg_t *self, size_t id, double v) { cairn_series_set(cairn_metrics_series(self, id, NULL), v); }
void cairn_metrics_add(cairn_metrics_reg_t *self, size_t id, double v) { cairn_series_add(cairn_metrics_series(self, id, NULL), v); }
void cairn_metrics_observe(cairn_metrics_reg_t *self, size_t id, double v)
{
    cairn_series_observe(cairn_metrics_series(self, id, NULL), v);
}

/* ------------------------------------------------------------------ lifecycle */

cairn_metrics_reg_t *cairn_metrics_new(const cairn_metric_desc_t *table, size_t n, int *rc, char *errbuf, size_t errlen)
{
    int dummy;
    if (!rc)
        rc = &dummy;
    if (!table && n) {
        cairn_errbuf_set(errbuf, errlen, "no metric table");
        *rc = CAIRN_EINVAL;
        return NULL;
    }
    size_t *nl = calloc(n ? n : 1, sizeof *nl);
    if (!nl) {
        *rc = CAIRN_ENOMEM;
        return NULL;
    }
    /* every row checked before anything is allocated for it; quadratic duplicate check: the
     * table has tens of rows and this runs once per process */
    for (size_t i = 0; i < n; i++) {
        if ((*rc = check_row(&table[i], &nl[i], errbuf, errlen)) != 0) {
            free(nl);
            return NULL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(table[i].name, table[j].name) == 0) {
                cairn_errbuf_set(errbuf, errlen, "metric %s registered twice", table[i].name);
                free(nl);
                *rc = CAIRN_EINVAL;
                return NULL;
            }
    }
    cairn_metrics_reg_t *self = calloc(1, sizeof *self);
    if (!self || !(self->fam = calloc(n ? n : 1, sizeof *self->fam))) {
        free(self);
        free(nl);
        *rc = CAIRN_ENOMEM;
        return NULL;
    }
    self->n = n;
    for (size_t i = 0; i < n; i++) {
        family_t *f = &self->fam[i];
        f->desc = &table[i];
        f->n_labels = nl[i];
        f->max_series = !nl[i] ? 1 : table[i].max_series ? table[i].max_series : CAIRN_METRICS_DEFAULT_SERIES;
        if (!nl[i]) { /* the one series exists from the start: a 0 is a value worth showing */
            char *none = strdup("");
            cairn_series_t *s = none ? series_new(f, none) : NULL;
            if (!s || family_push(f, s)) {
                free(none);
                free(s);
                free(nl);
                cairn_metrics_destroy(&self);
                *rc = CAIRN_ENOMEM;
                return NULL;
            }
        }
    }
    free(nl);
    *rc = 0;
    return self;
}

void cairn_metrics_destroy(cairn_metrics_reg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_metrics_reg_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++) {
        family_t *f = &self->fam[i];
        for (size_t j = 0; j < f->n_series; j++) {
            free(f->series[j]->labels);
            free(f->series[j]);
        }
        free(f->series);
    }
    free(self->fam);
    free(self);
    *self_p = NULL;
}

/* ------------------------------------------------------------------ rendering */

typedef struct {
    char *buf;
    size_t cap, len;
    int over;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...)
{
    if (o->over)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len) {
        o->over = 1;
        return;
    }
    o->len += (size_t)n;
}

/* Prometheus' spellings of the special values; integral values as integers (what this
 * gateway printed before the registry, and exact); anything else with the fewest digits
 * that read back to the same double, as Go's strconv does. */
static void fmt_double(char *s, size_t n, double v)
{
    if (isnan(v))
        snprintf(s, n, "NaN");
    else if (isinf(v))
        snprintf(s, n, v > 0 ? "+Inf" : "-Inf");
    else if (v == 0)
        snprintf(s, n, "0");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        snprintf(s, n, "%.0f", v);
    else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(s, n, "%.*g", prec, v);
            if (strtod(s, NULL) == v)
                break;
        }
    }
}

static void render_series(out_t *o, const family_t *f, const cairn_series_t *s)
{
    const char *name = f->desc->name;
    const char *l = s->labels;
    const char *lo = *l ? "{" : "", *lc = *l ? "}" : "";
    char num[40];
    switch (f->desc->kind) {
    case CAIRN_METRIC_COUNTER:
        put(o, "%s%s%s%s %llu\n", name, lo, l, lc, (unsigned long long)s->count);
        break;
    case CAIRN_METRIC_GAUGE:
        fmt_double(num, sizeof num, s->value);
        put(o, "%s%s%s%s %s\n", name, lo, l, lc, num);
        break;
    case CAIRN_METRIC_HISTOGRAM: {
        const char *sep = *l ? "," : "";
        uint64_t cum = 0;
        for (size_t i = 0; i < f->desc->n_buckets; i++) {
            cum += s->bucket[i];
            fmt_double(num, sizeof num, f->desc->buckets[i]);
            put(o, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, l, sep, num, (unsigned long long)cum);
        }
        put(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, l, sep, (unsigned long long)s->count);
        fmt_double(num, sizeof num, s->value);
        put(o, "%s_sum%s%s%s %s\n", name, lo, l, lc, num);
        put(o, "%s_count%s%s%s %llu\n", name, lo, l, lc, (unsigned long long)s->count);
        break;
    }
    }
}

int cairn_metrics_render(const cairn_metrics_reg_t *self, char *buf, size_t cap)
{
    if (!buf || !cap)
        return CAIRN_ETOOBIG;
    if (cap > (size_t)INT_MAX + 1)
        cap = (size_t)INT_MAX + 1; /* the length is returned as an int */
    out_t o = {buf, cap, 0, 0};
    buf[0] = 0;
    for (size_t i = 0; self && i < self->n && !o.over; i++) {
        const family_t *f = &self->fam[i];
        if (!f->n_series)
            continue;
        static const char *const kinds[] = {"", "counter", "gauge", "histogram"};
        /* help text escaped like a label value, less the quote */
        const char *help = f->desc->help ? f->desc->help : "";
        size_t hl = 0;
        escape_into(NULL, &hl, help, 0);
        put(&o, "# HELP %s ", f->desc->name);
        if (!o.over && o.cap - o.len > hl) {
            escape_into(o.buf, &o.len, help, 0);
            o.buf[o.len] = 0;
        } else {
            o.over = 1;
        }
        put(&o, "\n# TYPE %s %s\n", f->desc->name, kinds[f->desc->kind]);
        for (size_t j = 0; j < f->n_series; j++)
            render_series(&o, f, f->series[j]);
    }
    if (o.over) {
        buf[cap - 1] = 0;
        return CAIRN_ETOOBIG;
    }
    return (int)o.len;
}
