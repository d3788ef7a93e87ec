/* gatewayd - client connections for one Cairn node (DESIGN.md "gatewayd"). Stateless apart
 * from connections: run as many as you like (they share the client port with SO_REUSEPORT). */
#include <czmq.h>
#include <signal.h>
#include <stdio.h>

#include "cairn_config.h"
#include "cairn_daemon.h"
#include "cairn_log.h"
#include "gateway.h"

static volatile int g_stop;
static void on_signal(int sig) { g_stop = 1; }

int main(int argc, char **argv)
{
    int exit_code;
    cairn_config_t *cfg = cairn_daemon_init("gatewayd", argc, argv, on_signal, &exit_code);
    if (!cfg)
        return exit_code;
    cairn_gateway_t *gw = cairn_gateway_new(cfg);
    if (!gw) {
        cairn_config_destroy(&cfg);
        return 1;
    }
    cairn_daemon_notify_ready("gatewayd ready");
    cairn_gateway_run(gw, &g_stop);
    cairn_daemon_notify_stopping();
    cairn_gateway_destroy(&gw);
    cairn_config_destroy(&cfg);
    return 0;
}
