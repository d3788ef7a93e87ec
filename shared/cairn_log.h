/* cairn_log.h - structured logging to stderr.
 *
 * One line per event, logfmt-shaped so both people and tools can read it:
 *   ts=2026-11-22T00:00:00.123Z level=info svc=stored msg="wal opened" segments=3
 * The service name is set once at start. Levels follow etcd's --log-level names.
 */
#ifndef CAIRN_LOG_H
#define CAIRN_LOG_H

typedef enum { CAIRN_LOG_DEBUG = 0, CAIRN_LOG_INFO, CAIRN_LOG_WARN, CAIRN_LOG_ERROR, CAIRN_LOG_FATAL } cairn_log_level_t;

void cairn_log_init(const char *service, cairn_log_level_t level);
/* Parses etcd's level names (debug, info, warn, error, panic, fatal); -1 if unknown. */
int cairn_log_level_parse(const char *name);
void cairn_log_set_level(cairn_log_level_t level);
int cairn_log_enabled(cairn_log_level_t level);
/* msg is quoted; fmt (may be NULL) appends free-form key=value pairs. */
void cairn_log(cairn_log_level_t level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cairn_debug(msg, ...) do { if (cairn_log_enabled(CAIRN_LOG_DEBUG)) cairn_log(CAIRN_LOG_DEBUG, msg, __VA_ARGS__); } while (0)
#define cairn_info(msg, ...) cairn_log(CAIRN_LOG_INFO, msg, __VA_ARGS__)
#define cairn_warn(msg, ...) cairn_log(CAIRN_LOG_WARN, msg, __VA_ARGS__)
#define cairn_error(msg, ...) cairn_log(CAIRN_LOG_ERROR, msg, __VA_ARGS__)

#endif
