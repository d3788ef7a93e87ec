/* cairn_daemon.h - the start-up every Cairn daemon shares: read the node configuration,
 * answer --help/--version, start logging, create the node's directories, and install the
 * signal handlers (which only set a flag: nginx's rule). */
#ifndef CAIRN_DAEMON_H
#define CAIRN_DAEMON_H

#include "cairn_config.h"

/* Returns the loaded configuration, or NULL when the process should exit at once with
 * *exit_code (0 after --help/--version, 2 for a bad configuration, 1 for a start failure;
 * the reason has been printed). on_signal handles SIGINT and SIGTERM; SIGPIPE is ignored. */
cairn_config_t *cairn_daemon_init(const char *name, int argc, char **argv, void (*on_signal)(int), int *exit_code);

#endif
