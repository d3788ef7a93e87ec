/* cairn_log.c - see cairn_log.h. Writes whole lines with one write(2) so lines from the
 * three processes of a node never interleave mid-line on a shared terminal or journal. */
#include "cairn_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char g_service[32] = "cairn";
static cairn_log_level_t g_level = CAIRN_LOG_INFO;
static const char *g_names[] = {"debug", "info", "warn", "error", "fatal"};

void cairn_log_init(const char *service, cairn_log_level_t level)
{
    if (service) {
        strncpy(g_service, service, sizeof g_service - 1);
        g_service[sizeof g_service - 1] = 0;
    }
    g_level = level;
}

int cairn_log_level_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(name, g_names[i]) == 0)
            return i;
    if (strcmp(name, "panic") == 0 || strcmp(name, "dpanic") == 0)
        return CAIRN_LOG_FATAL;
    return -1;
}

void cairn_log_set_level(cairn_log_level_t level) { g_level = level; }
int cairn_log_enabled(cairn_log_level_t level) { return level >= g_level; }

void cairn_log(cairn_log_level_t level, const char *msg, const char *fmt, ...)
{
    if (level < g_level)
        return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s svc=%s msg=\"%s\"",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, g_names[level], g_service, msg ? msg : "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line - 2)
        n = sizeof line - 2;
    if (fmt && *fmt) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - 1 - n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += (size_t)m < sizeof line - 1 - n ? m : (int)(sizeof line - 2 - n);
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
