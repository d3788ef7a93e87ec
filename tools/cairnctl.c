/* cairnctl - Cairn's operator tool.
 *
 *   cairnctl run [--gateways N] [node flags...]
 *       Checks the node flags (with the CAIRN_* environment and --config-file) exactly as the
 *       daemons will, and exits 2 with the daemons' message if they are wrong: a supervisor
 *       that started them anyway would restart daemons that can never start, forever.
 *       Then starts one node's three processes (stored, raftd, N x gatewayd) with the same flags,
 *       supervises them in the foreground (a process that dies is restarted after a short
 *       back-off, as systemd's Restart=always would) and stops them all on Ctrl-C/SIGTERM:
 *       gateways first (they send GOAWAY), then raftd, then stored (which syncs its WAL).
 *       Gateways are added and removed while it runs: SIGUSR1 starts one more (up to 64; they
 *       share the client port), SIGUSR2 stops the newest (never the last one), gracefully - it
 *       answers the calls it has in flight and its clients move to the others (signals do not
 *       queue: send one, wait for its "gateway added/removed" line, then the next). SIGHUP restarts
 *       the node's processes in order - gateways, raftd, stored stopped; stored, raftd,
 *       gateways started - as `systemctl restart cairn.target` does (a rolling restart's step,
 *       deploy/rolling-restart.sh).
 *   cairnctl snapshot status|restore ...
 *       etcdctl's snapshot commands for etcd backend files (cairnctl_snapshot.c).
 *   cairnctl backup ... / cairnctl restore ...
 *       continuous backup (snapshot + every revision's changes) and point-in-time restore
 *       (cairnctl_backup.c).
 *   cairnctl version
 * The daemons are looked up beside cairnctl's own executable, or in $CAIRN_BIN.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cairn_config.h"

static volatile sig_atomic_t g_stop, g_add, g_remove, g_restart;
static void on_signal(int sig) { g_stop = 1; }
static void on_scale(int sig)
{
    if (sig == SIGHUP)
        g_restart = 1;
    else if (sig == SIGUSR1)
        g_add = 1;
    else
        g_remove = 1;
}

#define MAX_GATEWAYS 64

typedef struct {
    char name[32];
    char path[PATH_MAX];
    char extra[64]; /* --gateway-id=... for gateways */
    pid_t pid;
    time_t started;
    int fails;
    time_t restart_at;
} child_t;

static int g_argc;
static char **g_argv;

static void usage(FILE *f);
int cairnctl_snapshot(int argc, char **argv); /* cairnctl_snapshot.c */
int cairnctl_backup(int argc, char **argv);   /* cairnctl_backup.c */
int cairnctl_restore(int argc, char **argv);  /* cairnctl_backup.c */

static void bindir(char *out, size_t len)
{
    const char *env = getenv("CAIRN_BIN");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        snprintf(out, len, ".");
        return;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = 0;
    snprintf(out, len, "%s", self);
}

static pid_t spawn(child_t *c)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* Own process group: Ctrl-C reaches the supervisor only, which stops children in order. */
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        char **av = calloc((size_t)g_argc + 3, sizeof *av);
        int k = 0;
        av[k++] = c->name;
        for (int i = 0; i < g_argc; i++)
            av[k++] = g_argv[i];
        if (c->extra[0])
            av[k++] = c->extra;
        av[k] = NULL;
        execv(c->path, av);
        fprintf(stderr, "cairnctl: cannot exec %s: %s\n", c->path, strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    c->started = time(NULL);
    return pid;
}

/* Stops children n-1..0 (gateways, raftd, stored), each given up to 5 s before SIGKILL. */
static void stop_all(child_t *cs, int n)
{
    for (int k = n - 1; k >= 0; k--) {
        cs[k].restart_at = 0;
        if (!cs[k].pid)
            continue;
        kill(cs[k].pid, SIGTERM);
        /* polled every 10 ms: a daemon exits within milliseconds, and a node stops its three
         * in turn, so a coarse poll would add up to most of the stop time */
        for (int t = 0; t < 500; t++) {
            if (waitpid(cs[k].pid, NULL, WNOHANG) == cs[k].pid) {
                cs[k].pid = 0;
                break;
            }
            struct timespec ts = {0, 10 * 1000000};
            nanosleep(&ts, NULL);
        }
        if (cs[k].pid) {
            kill(cs[k].pid, SIGKILL);
            waitpid(cs[k].pid, NULL, 0);
            cs[k].pid = 0;
        }
    }
}

static int cmd_run(int argc, char **argv)
{
    int gateways = 1;
    int i = 0;
    if (i < argc && strncmp(argv[i], "--gateways", 10) == 0) {
        const char *v = argv[i][10] == '=' ? argv[i] + 11 : (i + 1 < argc ? argv[++i] : "1");
        gateways = atoi(v);
        i++;
        if (gateways < 1 || gateways > MAX_GATEWAYS) {
            fprintf(stderr, "cairnctl: --gateways must be 1..%d\n", MAX_GATEWAYS);
            return 2;
        }
    }
    g_argc = argc - i;
    g_argv = argv + i;
    /* The daemons' own check (cairn_config_load wants argv[0], which it skips). */
    char **cav = calloc((size_t)g_argc + 2, sizeof *cav);
    cairn_config_t *cfg = cairn_config_new();
    if (!cav || !cfg) {
        fprintf(stderr, "cairnctl: out of memory\n");
        free(cav);
        cairn_config_destroy(&cfg);
        return 1;
    }
    cav[0] = "cairnctl run";
    for (int k = 0; k < g_argc; k++)
        cav[k + 1] = g_argv[k];
    char err[1024];
    int rc = cairn_config_load(cfg, g_argc + 1, cav, err, sizeof err);
    cairn_config_destroy(&cfg);
    free(cav);
    if (rc == CAIRN_CONFIG_HELP) {
        usage(stdout);
        printf("\nNode flags (the same for stored, raftd and gatewayd):\n");
        cairn_config_usage(stdout);
        return 0;
    }
    if (rc == CAIRN_CONFIG_VERSION) {
        printf("cairnctl 0.1.0 (etcd API 3.4)\n");
        return 0;
    }
    if (rc < 0) {
        fprintf(stderr, "cairnctl: %s\n", err);
        return 2;
    }
    char dir[PATH_MAX];
    bindir(dir, sizeof dir);
    int n = 2 + gateways, next_gw = gateways + 1;
    child_t *cs = calloc(2 + MAX_GATEWAYS, sizeof *cs);
    if (!cs) {
        fprintf(stderr, "cairnctl: out of memory\n");
        return 1;
    }
    const char *names[2] = {"stored", "raftd"};
    for (int k = 0; k < 2 + MAX_GATEWAYS; k++) {
        snprintf(cs[k].name, sizeof cs[k].name, "%s", k < 2 ? names[k] : "gatewayd");
        if ((size_t)snprintf(cs[k].path, sizeof cs[k].path, "%.*s/%s", (int)(sizeof cs[k].path - 16), dir,
                             cs[k].name) >= sizeof cs[k].path ||
            access(cs[k].path, X_OK) != 0) {
            fprintf(stderr, "cairnctl: %s not found or not executable (set CAIRN_BIN)\n", cs[k].path);
            return 1;
        }
        if (k >= 2 && k < n)
            snprintf(cs[k].extra, sizeof cs[k].extra, "--gateway-id=gw%d", k - 1);
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_scale;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    for (int k = 0; k < n; k++) {
        if (spawn(&cs[k]) < 0) {
            fprintf(stderr, "cairnctl: fork failed: %s\n", strerror(errno));
            g_stop = 1;
            break;
        }
    }
    fprintf(stderr,
            "cairnctl: node running (stored pid %d, raftd pid %d, %d gateway(s)); Ctrl-C stops it; "
            "kill -USR1/-USR2 %d adds/removes a gateway\n",
            (int)cs[0].pid, (int)cs[1].pid, gateways, (int)getpid());
    while (!g_stop) {
        if (g_restart) {
            g_restart = 0;
            fprintf(stderr, "cairnctl: restarting the node's processes\n");
            stop_all(cs, n);
            for (int k = 0; k < n && !g_stop; k++) {
                cs[k].fails = 0;
                if (spawn(&cs[k]) < 0)
                    cs[k].restart_at = time(NULL) + 1;
            }
            fprintf(stderr, "cairnctl: node restarted (stored pid %d, raftd pid %d, %d gateway(s))\n", (int)cs[0].pid,
                    (int)cs[1].pid, n - 2);
            continue;
        }
        if (g_add) {
            g_add = 0;
            if (n - 2 >= MAX_GATEWAYS) {
                fprintf(stderr, "cairnctl: already %d gateways; none added\n", MAX_GATEWAYS);
            } else {
                /* a fresh id: a removed gateway's id is not reused while stored may still hold
                 * answers for it (cairn_zmq's outbox) */
                child_t *c = &cs[n];
                c->fails = 0;
                c->restart_at = 0;
                snprintf(c->extra, sizeof c->extra, "--gateway-id=gw%d", next_gw++);
                if (spawn(c) < 0) {
                    fprintf(stderr, "cairnctl: fork failed: %s\n", strerror(errno));
                } else {
                    n++;
                    fprintf(stderr, "cairnctl: gateway %s added (pid %d); %d gateway(s)\n", c->extra + 13,
                            (int)c->pid, n - 2);
                }
            }
        }
        if (g_remove) {
            g_remove = 0;
            if (n - 2 <= 1) {
                fprintf(stderr, "cairnctl: one gateway left; not removed\n");
            } else {
                child_t *c = &cs[n - 1];
                n--; /* no longer supervised: its exit is not a crash to restart */
                if (c->pid) {
                    pid_t pid = c->pid;
                    kill(pid, SIGTERM);
                    int t = 0;
                    for (; t < 1000 && waitpid(pid, NULL, WNOHANG) != pid; t++) {
                        struct timespec ts = {0, 10 * 1000000};
                        nanosleep(&ts, NULL);
                    }
                    if (t == 1000) { /* 10 s: its drain is bounded well below that */
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                    }
                    fprintf(stderr, "cairnctl: gateway %s removed (pid %d); %d gateway(s)\n", c->extra + 13,
                            (int)pid, n - 2);
                }
                c->pid = 0;
            }
        }
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        time_t now = time(NULL);
        if (pid > 0) {
            for (int k = 0; k < n; k++) {
                if (cs[k].pid != pid)
                    continue;
                cs[k].pid = 0;
                int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                cs[k].fails = now - cs[k].started < 10 ? cs[k].fails + 1 : 1;
                int backoff = cs[k].fails > 5 ? 5 : cs[k].fails;
                fprintf(stderr, "cairnctl: %s (pid %d) exited with %d; restarting in %d s\n", cs[k].name, (int)pid,
                        code, backoff);
                cs[k].restart_at = now + backoff;
            }
            continue;
        }
        for (int k = 0; k < n; k++)
            if (!cs[k].pid && cs[k].restart_at && now >= cs[k].restart_at) {
                cs[k].restart_at = 0;
                spawn(&cs[k]);
            }
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
    stop_all(cs, n);
    fprintf(stderr, "cairnctl: node stopped\n");
    free(cs);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cairnctl run [--gateways N] [node flags, as for etcd: --name --data-dir "
               "--listen-client-urls ...]\n"
               "       cairnctl snapshot status FILE [-w simple|json|table]\n"
               "       cairnctl snapshot restore FILE [--name --data-dir --initial-cluster --initial-cluster-token\n"
               "                 --initial-advertise-peer-urls --skip-hash-check]\n"
               "       cairnctl backup --endpoints HOST:PORT[,...] --dir DIR [--interval 1h] [--lease-poll 2s]\n"
               "                 [--cacert F --cert F --key F] [--user NAME:PASSWORD]\n"
               "       cairnctl restore --dir DIR (--to-revision R | --to-time RFC3339|UNIX_SECONDS)\n"
               "                 [--name --data-dir --initial-cluster --initial-cluster-token\n"
               "                 --initial-advertise-peer-urls]\n"
               "       cairnctl version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(argv[1], "snapshot") == 0)
        return cairnctl_snapshot(argc - 2, argv + 2);
    if (strcmp(argv[1], "backup") == 0)
        return cairnctl_backup(argc - 2, argv + 2);
    if (strcmp(argv[1], "restore") == 0)
        return cairnctl_restore(argc - 2, argv + 2);
    if (strcmp(argv[1], "version") == 0) {
        printf("cairnctl 0.1.0 (etcd API 3.4)\n");
        return 0;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "cairnctl: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
