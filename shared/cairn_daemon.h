/* cairn_daemon.h - the start-up every Cairn daemon shares: read the node configuration,
 * answer --help/--version, start logging, create the node's directories, and install the
 * signal handlers (which only set a flag: nginx's rule); and the readiness notification a
 * service manager waits for (systemd's Type=notify). */
#ifndef CAIRN_DAEMON_H
#define CAIRN_DAEMON_H

#include "cairn_config.h"

/* Returns the loaded configuration, or NULL when the process should exit at once with
 * *exit_code (0 after --help/--version, 2 for a bad configuration, 1 for a start failure;
 * the reason has been printed). on_signal handles SIGINT and SIGTERM; SIGPIPE is ignored. */
cairn_config_t *cairn_daemon_init(const char *name, int argc, char **argv, void (*on_signal)(int), int *exit_code);

/* The sd_notify protocol, spoken directly so that no daemon links libsystemd: when
 * NOTIFY_SOCKET names an AF_UNIX datagram socket (a path, or an abstract name written with a
 * leading '@'), one datagram of newline-separated KEY=VALUE lines is sent to it:
 *     READY=1\nSTATUS=<status>     once the daemon serves (its "<name> ready" log line)
 *     STOPPING=1\nSTATUS=<name> stopping   once it starts to shut down
 * Without NOTIFY_SOCKET both are no-ops. A failure is logged and returned (a negative
 * CAIRN_E* code) but never fatal: a daemon that cannot tell its supervisor still serves.
 * Newlines in status become spaces (they would start a new assignment). */
int cairn_daemon_notify_ready(const char *status);
/* Sent at most once per process. cairn_daemon_init also arranges for it to be sent at exit
 * (atexit) if the daemon has not sent it by then, so a daemon that never calls it still
 * reports STOPPING=1 when it returns from main. */
int cairn_daemon_notify_stopping(void);

#endif
