/* cairn_daemon.c - see cairn_daemon.h. */
#include "cairn_daemon.h"

#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_log.h"

/* the daemon's name, for the STATUS of STOPPING=1 */
static char g_name[32] = "cairn";
static int g_stopping_sent;

/* One datagram to $NOTIFY_SOCKET (see cairn_daemon.h). What systemd's sd_notify does, less
 * what Cairn does not need (fd passing, vsock addresses, credentials of another pid). */
static int notify_send(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n < 2 || n >= sizeof sa.sun_path) {
        cairn_warn("NOTIFY_SOCKET is not a unix socket path or @abstract name; not notifying", "NOTIFY_SOCKET=\"%s\"", path);
        return CAIRN_EINVAL;
    }
    memcpy(sa.sun_path, path, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (path[0] == '@')
        sa.sun_path[0] = 0; /* abstract: the name is the n bytes after sun_family, no terminator */
    else
        len += 1; /* a path counts its terminating NUL, as systemd does */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        cairn_warn("cannot notify the service manager", "err=\"%s\"", strerror(errno));
        return CAIRN_EIO;
    }
    ssize_t w;
    do
        w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (const struct sockaddr *)&sa, len);
    while (w < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    if (w < 0) {
        cairn_warn("cannot notify the service manager", "NOTIFY_SOCKET=\"%s\" err=\"%s\"", path, strerror(err));
        return err == EAGAIN ? CAIRN_EAGAIN : CAIRN_EIO;
    }
    return 0;
}

int cairn_daemon_notify_ready(const char *status)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status && *status ? status : "ready");
    if (n < 0)
        return CAIRN_EINVAL;
    /* a newline would end STATUS and start another assignment */
    for (char *p = msg + sizeof "READY=1\nSTATUS=" - 1; *p; p++)
        if (*p == '\n')
            *p = ' ';
    return notify_send(msg);
}

int cairn_daemon_notify_stopping(void)
{
    if (g_stopping_sent)
        return 0;
    g_stopping_sent = 1;
    char msg[128];
    snprintf(msg, sizeof msg, "STOPPING=1\nSTATUS=%s stopping", g_name);
    return notify_send(msg);
}

static void notify_stopping_at_exit(void) { cairn_daemon_notify_stopping(); }

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
    snprintf(g_name, sizeof g_name, "%s", name);
    /* a daemon that returns from main without saying so still tells its supervisor */
    atexit(notify_stopping_at_exit);
    *exit_code = 0;
    return cfg;
}
