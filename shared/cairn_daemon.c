/* cairn_daemon.c - see cairn_daemon.h. */
#include "cairn_daemon.h"

#include <czmq.h>
#include <signal.h>
#include <stdio.h>

#include "cairn_log.h"

cairn_config_t *cairn_daemon_init(const char *name, int argc, char **argv, void (*on_signal)(int), int *exit_code)
{
    char err[512];
    cairn_config_t *cfg = cairn_config_new();
    if (!cfg) {
        fprintf(stderr, "%s: out of memory\n", name);
        *exit_code = 1;
        return NULL;
    }
    int rc = cairn_config_load(cfg, argc, argv, err, sizeof err);
    if (rc == CAIRN_CONFIG_HELP || rc == CAIRN_CONFIG_VERSION) {
        if (rc == CAIRN_CONFIG_HELP)
            cairn_config_usage(stdout);
        else
            printf("%s (cairn) 0.1.0, etcd API 3.4\n", name);
        cairn_config_destroy(&cfg);
        *exit_code = 0;
        return NULL;
    }
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", name, err);
        cairn_config_destroy(&cfg);
        *exit_code = 2;
        return NULL;
    }
    cairn_log_init(name, cfg->log_level);
    const char *notes = cairn_config_notes(cfg);
    if (notes)
        cairn_info("configuration note", "notes=\"%s\"", notes);
    if (cairn_config_ensure_dirs(cfg, err, sizeof err) < 0) {
        cairn_error("cannot create directories", "err=\"%s\"", err);
        cairn_config_destroy(&cfg);
        *exit_code = 1;
        return NULL;
    }
    /* czmq would install its own SIGINT handler; ours only sets the stop flag. */
    zsys_init();
    zsys_handler_set(NULL);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    *exit_code = 0;
    return cfg;
}
