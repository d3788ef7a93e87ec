/* gatewayd - client connections for one Cairn node (DESIGN.md "gatewayd"). Stateless apart
 * from connections: run as many as you like (they share the client port with SO_REUSEPORT). */
#include <czmq.h>
#include <signal.h>
#include <stdio.h>

#include "cairn_config.h"
#include "cairn_log.h"
#include "gateway.h"

static volatile int g_stop;
static void on_signal(int sig) { g_stop = 1; }

int main(int argc, char **argv)
{
    char err[512];
    cairn_config_t *cfg = cairn_config_new();
    int rc = cairn_config_load(cfg, argc, argv, err, sizeof err);
    if (rc == CAIRN_CONFIG_HELP) {
        cairn_config_usage(stdout);
        cairn_config_destroy(&cfg);
        return 0;
    }
    if (rc == CAIRN_CONFIG_VERSION) {
        printf("gatewayd (cairn) 0.1.0, etcd API 3.4\n");
        cairn_config_destroy(&cfg);
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "gatewayd: %s\n", err);
        cairn_config_destroy(&cfg);
        return 2;
    }
    cairn_log_init("gatewayd", cfg->log_level);
    if (cairn_config_ensure_dirs(cfg, err, sizeof err) < 0) {
        cairn_error("cannot create directories", "err=\"%s\"", err);
        cairn_config_destroy(&cfg);
        return 1;
    }
    zsys_init();
    zsys_handler_set(NULL);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    cairn_gateway_t *gw = cairn_gateway_new(cfg);
    if (!gw) {
        cairn_config_destroy(&cfg);
        return 1;
    }
    cairn_gateway_run(gw, &g_stop);
    cairn_gateway_destroy(&gw);
    cairn_config_destroy(&cfg);
    return 0;
}
