/* cairn_procmetrics.c - process_* metrics from /proc/self (see cairn_procmetrics.h).
 *
 * Sources, as client_golang's process collector reads them:
 *   /proc/self/stat     field 14 utime, 15 stime (clock ticks), 22 starttime (ticks after
 *                       boot), 23 vsize (bytes), 24 rss (pages)
 *   /proc/stat          "btime" (boot time, seconds since the epoch) for the start time
 *   /proc/self/fd       entries = open file descriptors
 *   getrlimit(NOFILE)   the soft limit = max file descriptors
 */
#include "cairn_procmetrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_metrics.h"

enum { P_CPU, P_RSS, P_VMEM, P_FDS, P_MAXFDS, P_START, P_COUNT_ };

static const cairn_metric_desc_t rows[P_COUNT_] = {
    [P_CPU] = {"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", CAIRN_METRIC_GAUGE,
               NULL, 0, {"process"}},
    [P_RSS] = {"process_resident_memory_bytes", "Resident memory size in bytes.", CAIRN_METRIC_GAUGE, NULL, 0,
               {"process"}},
    [P_VMEM] = {"process_virtual_memory_bytes", "Virtual memory size in bytes.", CAIRN_METRIC_GAUGE, NULL, 0,
                {"process"}},
    [P_FDS] = {"process_open_fds", "Number of open file descriptors.", CAIRN_METRIC_GAUGE, NULL, 0, {"process"}},
    [P_MAXFDS] = {"process_max_fds", "Maximum number of open file descriptors.", CAIRN_METRIC_GAUGE, NULL, 0,
                  {"process"}},
    [P_START] = {"process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
                 CAIRN_METRIC_GAUGE, NULL, 0, {"process"}},
};

struct cairn_procmetrics_t {
    cairn_metrics_reg_t *reg;
    cairn_series_t *s[P_COUNT_];
};

cairn_procmetrics_t *cairn_procmetrics_new(const char *name)
{
    cairn_procmetrics_t *p = calloc(1, sizeof *p);
    int rc;
    char err[128];
    if (!p || !(p->reg = cairn_metrics_new(rows, P_COUNT_, &rc, err, sizeof err))) {
        free(p);
        return NULL;
    }
    const char *v[1] = {name};
    for (int i = 0; i < P_COUNT_; i++)
        p->s[i] = cairn_metrics_series(p->reg, (size_t)i, v);
    return p;
}

void cairn_procmetrics_destroy(cairn_procmetrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_metrics_destroy(&(*self_p)->reg);
    free(*self_p);
    *self_p = NULL;
}

static long long boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    char line[256];
    long long bt = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "btime %lld", &bt) == 1)
            break;
    if (f)
        fclose(f);
    return bt;
}

int cairn_procmetrics_render(cairn_procmetrics_t *self, char *buf, size_t cap)
{
    char st[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(st, 1, sizeof st - 1, f) : 0;
    if (f)
        fclose(f);
    st[n] = 0;
    /* the fields after the command name, which may hold spaces and parentheses: start after
     * the last ')' */
    char *p = strrchr(st, ')');
    unsigned long long utime, stime, starttime, vsize;
    long long rss;
    double tck = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                    &utime, &stime, &starttime, &vsize, &rss) == 5) {
        cairn_series_set(self->s[P_CPU], (double)(utime + stime) / tck);
        cairn_series_set(self->s[P_RSS], (double)rss * page);
        cairn_series_set(self->s[P_VMEM], (double)vsize);
        long long bt = boot_time();
        if (bt > 0)
            cairn_series_set(self->s[P_START], (double)bt + (double)starttime / tck);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long fds = -1; /* the directory's own descriptor is one of them */
        while (readdir(d))
            fds++;
        closedir(d);
        cairn_series_set(self->s[P_FDS], (double)(fds - 2 > 0 ? fds - 2 : 0)); /* . and .. */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        cairn_series_set(self->s[P_MAXFDS], rl.rlim_cur == RLIM_INFINITY ? 0 : (double)rl.rlim_cur);
    return cairn_metrics_render(self->reg, buf, cap);
}
