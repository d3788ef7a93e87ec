/* Unit tests for cairn_config: defaults, the three sources and their precedence, etcd's
 * YAML subset, error messages, --initial-cluster and its checks, etcd-identical member and
 * cluster IDs, the unix socket path limit, usage.
 *
 * Criterion runs each test in its own process, so tests may set environment variables and
 * change directory freely. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn_config.h"
#include "cairn_err.h"
#include "cairn_log.h"

static char g_err[1024];

/* Loads argv (NULL-terminated, program name prepended) into a new config. */
static int load_argv(cairn_config_t **out, const char *first, ...)
{
    const char *argv[64] = {"cairnd"};
    int argc = 1;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 63; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    *out = cairn_config_new();
    cr_assert_not_null(*out);
    g_err[0] = 0;
    return cairn_config_load(*out, argc, (char *const *)argv, g_err, sizeof g_err);
}
#define LOAD(cfgp, ...) load_argv(cfgp, __VA_ARGS__, (const char *)NULL)

/* Writes text to a fresh temporary file; returns its path (static buffer per call site). */
static const char *write_tmp(char *path, const char *text)
{
    strcpy(path, "/tmp/cairn_cfg_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void clear_env(void)
{
    /* The tests must not see a developer's CAIRN_* (or etcd's ETCD_*) settings. */
    extern char **environ;
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++)
            if (!strncmp(*e, "CAIRN_", 6) || !strncmp(*e, "ETCD_", 5)) {
                char name[128];
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)n, *e);
                unsetenv(name);
                again = 1;
                break;
            }
    }
}

TestSuite(config, .init = clear_env);

Test(config, new_and_destroy_idempotent)
{
    cairn_config_t *c = cairn_config_new();
    cr_assert_not_null(c);
    cairn_config_destroy(&c);
    cr_assert_null(c);
    cairn_config_destroy(&c);
    cairn_config_destroy(NULL);
}

Test(config, defaults_match_etcd)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, NULL), 0, "%s", g_err);
    cr_assert_str_eq(c->name, "default");
    cr_assert_str_eq(c->data_dir, "default.etcd");
    cr_assert_str_eq(c->wal_dir, "");
    cr_assert_str_eq(c->run_dir, "default.etcd/run");
    cr_assert_eq(c->listen_client_urls.n, 1);
    cr_assert_str_eq(c->listen_client_urls.v[0], "http://localhost:2379");
    cr_assert_str_eq(c->advertise_client_urls.v[0], "http://localhost:2379");
    cr_assert_str_eq(c->listen_peer_urls.v[0], "http://localhost:2380");
    cr_assert_str_eq(c->initial_advertise_peer_urls.v[0], "http://localhost:2380");
    cr_assert_str_eq(c->initial_cluster, "default=http://localhost:2380");
    cr_assert_eq(c->initial_cluster_state, CAIRN_CLUSTER_NEW);
    cr_assert_str_eq(c->initial_cluster_token, "etcd-cluster");
    cr_assert_eq(c->heartbeat_ms, 100);
    cr_assert_eq(c->election_ms, 1000);
    cr_assert_eq(c->snapshot_count, 100000);
    cr_assert_eq(c->quota_backend_bytes, 0);
    cr_assert_eq(c->quota_bytes, 2LL << 30);
    cr_assert_eq(c->auto_compaction_mode, CAIRN_COMPACTION_PERIODIC);
    cr_assert_str_eq(c->auto_compaction_retention, "0");
    cr_assert_eq(c->compaction_retention_ms, 0);
    cr_assert_eq(c->max_request_bytes, 1572864);
    cr_assert_eq(c->max_txn_ops, 128);
    cr_assert_eq(c->grpc_keepalive_min_time_ms, 5000);
    cr_assert_eq(c->grpc_keepalive_interval_ms, 2 * 3600 * 1000);
    cr_assert_eq(c->grpc_keepalive_timeout_ms, 20000);
    cr_assert_eq(c->log_level, CAIRN_LOG_INFO);
    cr_assert_eq(c->metrics, CAIRN_METRICS_BASIC);
    cr_assert_eq(c->listen_metrics_urls.n, 0);
    cr_assert(!c->client_cert_auth && !c->auto_tls && !c->peer_client_cert_auth && !c->peer_auto_tls);
    cr_assert_str_eq(c->cert_file, "");
    cr_assert_str_eq(c->gateway_id, "");
    cr_assert_str_eq(c->config_file, "");
    cr_assert_eq(c->n_members, 1);
    cr_assert_str_eq(c->members[0].name, "default");
    cairn_config_destroy(&c);
}

Test(config, derived_defaults_follow_name_and_data_dir)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name", "n7", "--initial-advertise-peer-urls", "http://10.0.0.7:2380"), 0, "%s", g_err);
    cr_assert_str_eq(c->data_dir, "n7.etcd");
    cr_assert_str_eq(c->run_dir, "n7.etcd/run");
    cr_assert_str_eq(c->initial_cluster, "n7=http://10.0.0.7:2380");
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--data-dir", "/var/lib/cairn"), 0, "%s", g_err);
    cr_assert_str_eq(c->run_dir, "/var/lib/cairn/run");
    cairn_config_destroy(&c);
}

Test(config, flag_forms)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name", "a", "--data-dir=/d", "-wal-dir", "/w", "-snapshot-count=7", "--client-cert-auth",
                      "--auto-tls=false", "--peer-auto-tls=false", "--log-level", "debug", "--metrics=extensive",
                      "--grpc-keepalive-interval=1h30m", "--grpc-keepalive-timeout", "0",
                      "--listen-client-urls", "http://127.0.0.1:1,HTTPS://[::1]:2", "--cert-file", "c",
                      "--key-file", "k", "--initial-cluster-state=existing", "--quota-backend-bytes=-1", "--"),
                 0, "%s", g_err);
    cr_assert_str_eq(c->name, "a");
    cr_assert_str_eq(c->data_dir, "/d");
    cr_assert_str_eq(c->wal_dir, "/w");
    cr_assert_eq(c->snapshot_count, 7);
    cr_assert(c->client_cert_auth);
    cr_assert(!c->auto_tls);
    cr_assert(!c->peer_auto_tls);
    cr_assert_eq(c->log_level, CAIRN_LOG_DEBUG);
    cr_assert_eq(c->metrics, CAIRN_METRICS_EXTENSIVE);
    cr_assert_eq(c->grpc_keepalive_interval_ms, 5400000);
    cr_assert_eq(c->grpc_keepalive_timeout_ms, 0);
    cr_assert_eq(c->listen_client_urls.n, 2);
    cr_assert_str_eq(c->listen_client_urls.v[1], "https://[::1]:2"); /* scheme lower-cased, like Go */
    cr_assert_eq(c->initial_cluster_state, CAIRN_CLUSTER_EXISTING);
    cr_assert_eq(c->quota_bytes, INT64_MAX);
    cairn_config_destroy(&c);

    /* Last one wins, as with Go's flag package. */
    cr_assert_eq(LOAD(&c, "--name", "x", "--name", "y"), 0, "%s", g_err);
    cr_assert_str_eq(c->name, "y");
    cairn_config_destroy(&c);
}

Test(config, help_and_version)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name", "x", "--help"), CAIRN_CONFIG_HELP);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "-h"), CAIRN_CONFIG_HELP);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--version"), CAIRN_CONFIG_VERSION);
    cairn_config_destroy(&c);
}

Test(config, flag_errors)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--bogus", "1"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "unknown flag: --bogus");
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--bogus=1"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "unknown flag: --bogus");
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--name"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "flag needs an argument: --name");
    cairn_config_destroy(&c);

    /* A boolean never takes the next argument (Go's flag package; etcd says the same). */
    cr_assert_eq(LOAD(&c, "--client-cert-auth", "false"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "unexpected argument: false"), "%s", g_err);
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "---name", "x"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "bad flag syntax"), "%s", g_err);
    cairn_config_destroy(&c);
}

Test(config, bad_values_name_the_flag)
{
    static const struct {
        const char *arg, *want;
    } cases[] = {
        {"--heartbeat-interval=abc", "invalid value \"abc\" for flag --heartbeat-interval"},
        {"--heartbeat-interval=-5", "flag --heartbeat-interval"},
        {"--election-timeout=1.5", "flag --election-timeout"},
        {"--snapshot-count=12x", "flag --snapshot-count"},
        {"--snapshot-count=99999999999999999999", "flag --snapshot-count"},
        {"--quota-backend-bytes=1e9", "flag --quota-backend-bytes"},
        {"--grpc-keepalive-min-time=5", "invalid value \"5\" for flag --grpc-keepalive-min-time: missing unit"},
        {"--grpc-keepalive-min-time=5parsecs", "unknown unit"},
        {"--grpc-keepalive-timeout=-1s", "must not be negative"},
        {"--grpc-keepalive-interval=s", "invalid duration"},
        {"--client-cert-auth=maybe", "flag --client-cert-auth: must be true or false"},
        {"--initial-cluster-state=maybe", "flag --initial-cluster-state: must be 'new' or 'existing'"},
        {"--auto-compaction-mode=foo", "flag --auto-compaction-mode"},
        {"--log-level=verbose", "flag --log-level: unknown level"},
        {"--metrics=all", "flag --metrics"},
        {"--listen-client-urls=ftp://a:1", "URL scheme must be http, https, unix, or unixs: ftp://a:1"},
        {"--listen-client-urls=http://a:1/x", "URL must not contain a path: http://a:1/x"},
        {"--listen-client-urls=http://a:1/", "URL must not contain a path"},
        {"--listen-client-urls=http://a", "URL address does not have the form \"host:port\": http://a"},
        {"--listen-client-urls=http://a:99999", "port"},
        {"--listen-client-urls=127.0.0.1:2379", "URL scheme must be"},
        {"--listen-client-urls=", "no valid URLs given"},
        {"--listen-client-urls=http://a:1,,http://b:2", "URL scheme must be"},
        {"--advertise-client-urls=http://:2379", "host"},
        {"--enable-pprof=sure", "flag --enable-pprof"},
        /* etcd flags for behaviour Cairn does not vary: refused with another value */
        {"--enable-pprof=true", "not supported: Cairn has no Go runtime to profile"},
        {"--enable-pprof", "not supported"},
        {"--pre-vote=false", "not supported: Cairn always runs the PreVote phase"},
        {"--strict-reconfig-check=false", "not supported"},
        {"--initial-election-tick-advance=true", "Cairn waits a full election timeout"},
        {"--logger=capnslog", "only 'zap' is accepted"},
        {"--log-outputs=stdout", "only 'default' or 'stderr'"},
        {"--log-outputs=stderr,/var/log/etcd.log", "only 'default' or 'stderr'"},
        {"--max-snapshots=0", "0 (unlimited) are refused"},
        {"--max-snapshots=2", "lower ones"},
        {"--max-wals=0", "0 (unlimited) is refused"},
        {"--max-wals=-1", "0 (unlimited) is refused"},
        {"--max-wals=many", "refused"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cairn_config_t *c;
        cr_assert_eq(LOAD(&c, cases[i].arg), CAIRN_ECONFIG, "%s", cases[i].arg);
        cr_assert(strstr(g_err, cases[i].want), "%s: got \"%s\"", cases[i].arg, g_err);
        cairn_config_destroy(&c);
    }
}

Test(config, durations)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--grpc-keepalive-min-time=5s", "--grpc-keepalive-interval=2h45m",
                      "--grpc-keepalive-timeout=250ms"),
                 0, "%s", g_err);
    cr_assert_eq(c->grpc_keepalive_min_time_ms, 5000);
    cr_assert_eq(c->grpc_keepalive_interval_ms, (2 * 60 + 45) * 60 * 1000);
    cr_assert_eq(c->grpc_keepalive_timeout_ms, 250);
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--grpc-keepalive-interval=1500000us", "--grpc-keepalive-timeout=.5s"), 0, "%s", g_err);
    cr_assert_eq(c->grpc_keepalive_interval_ms, 1500);
    cr_assert_eq(c->grpc_keepalive_timeout_ms, 500);
    cairn_config_destroy(&c);

    /* 5s written otherwise is 5s; any other value is refused: Cairn never closes a client for
     * pinging too often, so it would be accepted and not honoured */
    cr_assert_eq(LOAD(&c, "--grpc-keepalive-min-time=5000ms"), 0, "%s", g_err);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--grpc-keepalive-min-time=1.5s"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "--grpc-keepalive-min-time: not supported"), "%s", g_err);
    cairn_config_destroy(&c);
}

Test(config, election_and_heartbeat_checks)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--heartbeat-interval", "300", "--election-timeout", "1000"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]");
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--heartbeat-interval", "0"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "--heartbeat-interval must be >0 (set to 0ms)");
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--election-timeout", "60000"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "is too long, and should be set less than 50000ms"), "%s", g_err);
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--heartbeat-interval", "200", "--election-timeout", "1000"), 0, "%s", g_err);
    cairn_config_destroy(&c);
}

/* An etcd environment file works as it is: ETCD_<FLAG> sets the flag's option like CAIRN_<FLAG>;
 * both set to different values, an ETCD_ variable for a setting Cairn has not, and etcd's peer
 * TLS ones are refused with the variable's name; ETCDCTL_* is not ours to judge. */
Test(config, etcd_environment_names)
{
    cairn_config_t *c;
    setenv("ETCD_NAME", "etcd-env", 1);
    setenv("ETCD_DATA_DIR", "/etcd/data", 1);
    setenv("ETCD_SNAPSHOT_COUNT", "77", 1);
    setenv("ETCD_AUTO_COMPACTION_MODE", "revision", 1);
    setenv("ETCDCTL_API", "3", 1);
    cr_assert_eq(LOAD(&c, NULL), 0, "%s", g_err);
    cr_assert_str_eq(c->name, "etcd-env");
    cr_assert_str_eq(c->data_dir, "/etcd/data");
    cr_assert_eq(c->snapshot_count, 77);
    cr_assert_eq(c->auto_compaction_mode, CAIRN_COMPACTION_REVISION);
    cairn_config_destroy(&c);
    setenv("CAIRN_NAME", "etcd-env", 1); /* the same value: fine */
    cr_assert_eq(LOAD(&c, NULL), 0, "%s", g_err);
    cairn_config_destroy(&c);
    setenv("CAIRN_NAME", "other", 1);
    cr_assert_eq(LOAD(&c, NULL), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "CAIRN_NAME=\"other\" and ETCD_NAME=\"etcd-env\" disagree"), "%s", g_err);
    cairn_config_destroy(&c);
    unsetenv("CAIRN_NAME");
    setenv("ETCD_ENABLE_V2", "true", 1);
    cr_assert_eq(LOAD(&c, NULL), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "ETCD_ENABLE_V2: not a setting Cairn has"), "%s", g_err);
    cairn_config_destroy(&c);
    unsetenv("ETCD_ENABLE_V2");
    setenv("ETCD_PEER_CERT_FILE", "/tls/peer.crt", 1);
    cr_assert_eq(LOAD(&c, NULL), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "ETCD_PEER_CERT_FILE"), "%s", g_err);
    cairn_config_destroy(&c);
    unsetenv("ETCD_PEER_CERT_FILE");
    setenv("ETCD_ENABLE_PPROF", "true", 1); /* a fixed setting: its value is judged as the flag's */
    cr_assert_eq(LOAD(&c, NULL), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "environment variable ETCD_ENABLE_PPROF"), "%s", g_err);
    cairn_config_destroy(&c);
    unsetenv("ETCD_ENABLE_PPROF");
    unsetenv("ETCDCTL_API");
}

Test(config, env_and_precedence)
{
    char path[64];
    write_tmp(path, "name: from-file\n"
                    "snapshot-count: 1\n"
                    "max-txn-ops: 11\n"
                    "initial-cluster-token: file-token\n");
    cairn_config_t *c;

    /* file only */
    cr_assert_eq(LOAD(&c, "--config-file", path), 0, "%s", g_err);
    cr_assert_str_eq(c->name, "from-file");
    cr_assert_eq(c->snapshot_count, 1);
    cr_assert_str_eq(c->config_file, path);
    cairn_config_destroy(&c);

    /* env over file; file over defaults; CAIRN_CONFIG_FILE names the file */
    setenv("CAIRN_CONFIG_FILE", path, 1);
    setenv("CAIRN_NAME", "from-env", 1);
    setenv("CAIRN_SNAPSHOT_COUNT", "2", 1);
    setenv("CAIRN_DATA_DIR", "/env/data", 1);
    setenv("CAIRN_LISTEN_CLIENT_URLS", "http://127.0.0.1:12379", 1);
    setenv("CAIRN_CLIENT_CERT_AUTH", "true", 1);
    setenv("CAIRN_BIN", "/somewhere", 1); /* someone else's variable: ignored */
    cr_assert_eq(LOAD(&c, NULL), 0, "%s", g_err);
    cr_assert_str_eq(c->name, "from-env");
    cr_assert_eq(c->snapshot_count, 2);
    cr_assert_eq(c->max_txn_ops, 11);
    cr_assert_str_eq(c->initial_cluster_token, "file-token");
    cr_assert_str_eq(c->data_dir, "/env/data");
    cr_assert_str_eq(c->listen_client_urls.v[0], "http://127.0.0.1:12379");
    cr_assert(c->client_cert_auth);
    cairn_config_destroy(&c);

    /* flags over env */
    cr_assert_eq(LOAD(&c, "--name=from-flag", "--snapshot-count", "3", "--client-cert-auth=false"), 0, "%s", g_err);
    cr_assert_str_eq(c->name, "from-flag");
    cr_assert_eq(c->snapshot_count, 3);
    cr_assert(!c->client_cert_auth);
    cr_assert_str_eq(c->data_dir, "/env/data");
    cairn_config_destroy(&c);

    /* a bad environment value names the variable */
    setenv("CAIRN_HEARTBEAT_INTERVAL", "fast", 1);
    cr_assert_eq(LOAD(&c, NULL), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "invalid value \"fast\" for environment variable CAIRN_HEARTBEAT_INTERVAL"), "%s", g_err);
    cairn_config_destroy(&c);
    unlink(path);
}

Test(config, yaml_subset)
{
    char path[64];
    write_tmp(path, "# This is the configuration file for the etcd server.\n"
                    "---\n"
                    "name: 'n1'   # trailing comment\n"
                    "data-dir: \"/var/lib/cairn/n1 data\"\n"
                    "\n"
                    "wal-dir:\n"
                    "snapshot-count: 5000\n"
                    "heartbeat-interval: 50\n"
                    "election-timeout: 500\n"
                    "quota-backend-bytes: 8589934592\n"
                    "listen-peer-urls: http://127.0.0.1:23800\n"
                    "listen-client-urls: http://127.0.0.1:23799,http://localhost:23799\n"
                    "initial-advertise-peer-urls: http://127.0.0.1:23800\n"
                    "advertise-client-urls: http://127.0.0.1:23799\n"
                    "initial-cluster: n1=http://127.0.0.1:23800\n"
                    "initial-cluster-token: 'it''s a token'\n"
                    "initial-cluster-state: 'new'\n"
                    "auto-compaction-mode: revision\n"
                    "auto-compaction-retention: \"1000\"\n"
                    "grpc-keepalive-interval: 10000000000\n" /* nanoseconds, as etcd's YAML */
                    "grpc-keepalive-timeout: '30s'\n"
                    "client-cert-auth: yes\n"
                    "log-level: warn\n"
                    "logger: zap\n"
                    "enable-pprof: false\n"
                    "log-outputs: [stderr]\n"
                    "max-wals: 3\n"
                    "client-transport-security:\n"
                    "  # etcd's nested TLS block\n"
                    "  cert-file: /tls/server.crt\n"
                    "  key-file: /tls/server.key\n"
                    "  trusted-ca-file: /tls/ca.crt\n"
                    "  auto-tls: false\n"
                    "peer-transport-security:\n" /* as in etcd's sample: empty and false pass */
                    "  cert-file:\n"
                    "  key-file: ''\n"
                    "  client-cert-auth: false\n"
                    "  trusted-ca-file:\n"
                    "  auto-tls: false\n"
                    "metrics: extensive\n"
                    "gateway-id: gw-1\n"
                    "run-dir: /run/cairn/n1\r\n");
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--config-file", path), 0, "%s", g_err);
    cr_assert_str_eq(c->name, "n1");
    cr_assert_str_eq(c->data_dir, "/var/lib/cairn/n1 data");
    cr_assert_str_eq(c->wal_dir, "");
    cr_assert_eq(c->snapshot_count, 5000);
    cr_assert_eq(c->heartbeat_ms, 50);
    cr_assert_eq(c->election_ms, 500);
    cr_assert_eq(c->quota_backend_bytes, 8589934592LL);
    cr_assert_eq(c->listen_client_urls.n, 2);
    cr_assert_str_eq(c->initial_cluster_token, "it's a token");
    cr_assert_eq(c->auto_compaction_mode, CAIRN_COMPACTION_REVISION);
    cr_assert_eq(c->compaction_retention_revs, 1000);
    cr_assert_eq(c->grpc_keepalive_interval_ms, 10000);
    cr_assert_eq(c->grpc_keepalive_timeout_ms, 30000);
    cr_assert(c->client_cert_auth);
    cr_assert_eq(c->log_level, CAIRN_LOG_WARN);
    cr_assert_str_eq(c->cert_file, "/tls/server.crt");
    cr_assert_str_eq(c->key_file, "/tls/server.key");
    cr_assert_str_eq(c->trusted_ca_file, "/tls/ca.crt");
    cr_assert_str_eq(c->peer_cert_file, "");
    cr_assert_str_eq(c->peer_key_file, "");
    cr_assert(!c->peer_client_cert_auth && !c->peer_auto_tls);
    cr_assert_eq(c->metrics, CAIRN_METRICS_EXTENSIVE);
    cr_assert_str_eq(c->gateway_id, "gw-1");
    cr_assert_str_eq(c->run_dir, "/run/cairn/n1");
    cairn_config_destroy(&c);
    unlink(path);
}

/* etcd's fixed settings in a config file: the values that say what Cairn does pass (etcd's
 * flow list included), others - and a block list, whose items this reader does not see - are
 * refused with the reason */
Test(config, yaml_fixed_keys)
{
    static const struct {
        const char *text, *want; /* want NULL: loads */
    } cases[] = {
        {"log-outputs: [stderr]\nname: x\n", NULL},
        {"log-outputs: ['default']\nname: x\n", NULL},
        {"log-outputs: [stderr, stdout]\nname: x\n", "only 'default' or 'stderr'"},
        {"log-outputs:\n  - stderr\n  - stdout\nname: x\n", "write the value on the key's line"},
        {"enable-pprof: true\nname: x\n", "Cairn has no Go runtime"},
        {"pre-vote: true\nmax-snapshots: 3\nmax-wals: 1\nname: x\n", NULL},
        {"max-snapshots: 0\nname: x\n", "0 (unlimited) are refused"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[64];
        write_tmp(path, cases[i].text);
        cairn_config_t *c;
        int rc = LOAD(&c, "--config-file", path);
        if (!cases[i].want) {
            cr_assert_eq(rc, 0, "%s: %s", cases[i].text, g_err);
            cr_assert_str_eq(c->name, "x");
        } else {
            cr_assert_eq(rc, CAIRN_ECONFIG, "%s", cases[i].text);
            cr_assert(strstr(g_err, cases[i].want), "%s: got \"%s\"", cases[i].text, g_err);
        }
        cairn_config_destroy(&c);
        unlink(path);
    }
}

Test(config, yaml_errors_give_line_numbers)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"name: a\n# c\nbogus-key: 1\n", "line 3: unknown key \"bogus-key\""},
        {"name: a\nheartbeat-interval: fast\n", "line 2: invalid value \"fast\" for heartbeat-interval"},
        {"name: a\nname: b\n", "line 2: duplicate key \"name\" (first set on line 1)"},
        {"name 'a'\n", "line 1: expected 'key: value'"},
        {"name: 'a\n", "line 1: name: unterminated quoted string"},
        {"name: 'a' b\n", "line 1: name: unexpected text after the quoted string"},
        {"name: a\n  data-dir: b\n", "line 2: unexpected indentation"},
        {"listen-client-urls: [http://a:1]\n", "line 1: listen-client-urls: YAML lists and maps are not supported"},
        {"listen-client-urls:\n  - http://a:1\n", "line 2: unexpected indentation"},
        {"client-transport-security:\n  crl-file: x\n", "line 2: unknown key \"crl-file\" in client-transport-security"},
        {"client-transport-security: x\n", "line 1: client-transport-security must be a nested block"},
        {"peer-transport-security:\n  cert-file: a\n   key-file: b\n", "line 3: inconsistent indentation"},
        {"config-file: /x\n", "line 1: config-file cannot be set inside a config file"},
        {"\tname: a\n", "line 1: tab in indentation"},
        {"grpc-keepalive-min-time: 5\n", "line 1: invalid value \"5\" for grpc-keepalive-min-time: a bare number is nanoseconds"},
        {"client-cert-auth: maybe\n", "line 1: invalid value \"maybe\" for client-cert-auth"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[64];
        write_tmp(path, cases[i].text);
        cairn_config_t *c;
        cr_assert_eq(LOAD(&c, "--config-file", path), CAIRN_ECONFIG, "case %zu", i);
        cr_assert(strstr(g_err, path), "case %zu: %s", i, g_err);
        cr_assert(strstr(g_err, cases[i].want), "case %zu: got \"%s\"", i, g_err);
        cairn_config_destroy(&c);
        unlink(path);
    }
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--config-file", "/nonexistent/cairn.yml"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "cannot read config file /nonexistent/cairn.yml"), "%s", g_err);
    cairn_config_destroy(&c);
}

Test(config, initial_cluster_parsing)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name", "n2", "--initial-advertise-peer-urls", "http://b:2380",
                      "--initial-cluster", "n1=http://c:2380,n2=http://b:2380, n1=http://a:2380,,n3=http://[fd00::3]:2380"),
                 0, "%s", g_err);
    cr_assert_eq(c->n_members, 3);
    cr_assert_str_eq(c->members[0].name, "n1");
    cr_assert_eq(c->members[0].peer_urls.n, 2);
    cr_assert_str_eq(c->members[0].peer_urls.v[0], "http://a:2380"); /* sorted, as etcd hashes them */
    cr_assert_str_eq(c->members[0].peer_urls.v[1], "http://c:2380");
    cr_assert_str_eq(c->members[1].name, "n2");
    cr_assert_str_eq(c->members[2].peer_urls.v[0], "http://[fd00::3]:2380");
    cr_assert_eq(c->self, 1);
    cr_assert_eq(c->member_id, c->members[1].id);
    cr_assert_eq(cairn_config_member_id(c), c->members[1].id);
    cr_assert_neq(c->members[0].id, c->members[1].id);
    cairn_config_destroy(&c);
}

Test(config, initial_cluster_errors)
{
    static const struct {
        const char *name, *apurls, *cluster, *want;
    } cases[] = {
        {"n1", "http://127.0.0.1:23900", "n2=http://127.0.0.1:23900",
         "couldn't find local name \"n1\" in the initial cluster configuration"},
        /* etcd: "--initial-cluster has n1=http://127.0.0.2:23900 but missing from
         * --initial-advertise-peer-urls=http://127.0.0.1:23900 (resolved urls: ...)" */
        {"n1", "http://127.0.0.1:23900", "n1=http://127.0.0.2:23900",
         "--initial-cluster has n1=http://127.0.0.2:23900 but missing from "
         "--initial-advertise-peer-urls=http://127.0.0.1:23900"},
        /* etcd: same text, observed with etcd 3.4.23 */
        {"n1", "http://127.0.0.1:23900,http://127.0.0.1:23901", "n1=http://127.0.0.1:23900",
         "--initial-advertise-peer-urls has http://127.0.0.1:23901 but missing from "
         "--initial-cluster=n1=http://127.0.0.1:23900,n1=http://127.0.0.1:23901"},
        {"n1", "http://127.0.0.1:23900", "n1=http://127.0.0.1:23900,n2=http://127.0.0.1:23900",
         "initial cluster n1=http://127.0.0.1:23900,n2=http://127.0.0.1:23900 has duplicate url"},
        {"n1", "http://127.0.0.1:23900", "n1=http://127.0.0.1:23900,bad", "\"bad\" is not of the form name=url"},
        {"n1", "http://127.0.0.1:23900", "n1=http://127.0.0.1:23900,n2=", "empty URL given for \"n2\""},
        {"n1", "http://127.0.0.1:23900", "n1=http://127.0.0.1:23900,n2=http://x:1/p",
         "error setting up initial cluster: URL must not contain a path"},
        {"n1", "http://127.0.0.1:23900", "", "--initial-cluster is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cairn_config_t *c;
        cr_assert_eq(LOAD(&c, "--name", cases[i].name, "--initial-advertise-peer-urls", cases[i].apurls,
                          "--initial-cluster", cases[i].cluster),
                     CAIRN_ECONFIG, "case %zu", i);
        cr_assert(strstr(g_err, cases[i].want), "case %zu: got \"%s\"", i, g_err);
        cr_assert_eq(c->n_members, 0);
        cr_assert_eq(cairn_config_member_id(c), 0);
        cairn_config_destroy(&c);
    }
}

/* The expected IDs below were observed from a real etcd 3.4.23 on this machine:
 *
 *   etcd --name n1 --data-dir $(mktemp -d) --listen-client-urls http://127.0.0.1:23799 \
 *        --advertise-client-urls http://127.0.0.1:23799 --listen-peer-urls http://127.0.0.1:23800 \
 *        --initial-advertise-peer-urls http://127.0.0.1:23800 \
 *        --initial-cluster n1=http://127.0.0.1:23800 --initial-cluster-token tok
 *   ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:23799 member list -w json
 *   -> "cluster_id":4413477065597753003, member "ID":2681083982177880140 (25351fad42b3c84c)
 */
Test(config, ids_equal_real_etcd_single_member)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name", "n1", "--listen-client-urls", "http://127.0.0.1:23799", "--advertise-client-urls",
                      "http://127.0.0.1:23799", "--listen-peer-urls", "http://127.0.0.1:23800",
                      "--initial-advertise-peer-urls", "http://127.0.0.1:23800", "--initial-cluster",
                      "n1=http://127.0.0.1:23800", "--initial-cluster-token", "tok"),
                 0, "%s", g_err);
    cr_assert_eq(cairn_config_member_id(c), 2681083982177880140ULL);
    cr_assert_eq(cairn_config_member_id(c), 0x25351fad42b3c84cULL);
    cr_assert_eq(cairn_config_cluster_id(c), 4413477065597753003ULL);
    cairn_config_destroy(&c);
}

/* Observed from a real 3-member etcd 3.4.23 cluster started with
 *   --initial-cluster n1=http://127.0.0.1:23810,n1=http://127.0.0.1:23800,n2=http://127.0.0.1:23802,n3=http://127.0.0.1:23804
 *   --initial-cluster-token cairn-test --initial-cluster-state new
 * (n1 listening on and advertising both 23800 and 23810, given unsorted), then
 *   ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:23799 member list -w json
 *   -> cluster_id 15763429696535366767; n1 18269193619143157919 (fd8936cd61dc689f),
 *      n2 2632855202311708185 (2489c7db66d41e19), n3 4195751563540190318 (3a3a4dd1269a546e)
 * This checks URL sorting inside a member and the sorting of member IDs for the cluster ID. */
Test(config, ids_equal_real_etcd_three_members)
{
    const char *ic = "n1=http://127.0.0.1:23810,n1=http://127.0.0.1:23800,n2=http://127.0.0.1:23802,"
                     "n3=http://127.0.0.1:23804";
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name", "n2", "--initial-advertise-peer-urls", "http://127.0.0.1:23802",
                      "--initial-cluster", ic, "--initial-cluster-token", "cairn-test"),
                 0, "%s", g_err);
    cr_assert_eq(c->members[0].id, 18269193619143157919ULL);
    cr_assert_eq(c->members[1].id, 2632855202311708185ULL);
    cr_assert_eq(c->members[2].id, 4195751563540190318ULL);
    cr_assert_eq(cairn_config_member_id(c), 2632855202311708185ULL);
    cr_assert_eq(cairn_config_cluster_id(c), 15763429696535366767ULL);
    cairn_config_destroy(&c);

    /* n1's view: same IDs; its two advertised URLs in another order still match. */
    cr_assert_eq(LOAD(&c, "--name", "n1", "--initial-advertise-peer-urls",
                      "http://127.0.0.1:23810,http://127.0.0.1:23800", "--initial-cluster", ic,
                      "--initial-cluster-token", "cairn-test"),
                 0, "%s", g_err);
    cr_assert_eq(cairn_config_member_id(c), 18269193619143157919ULL);
    cr_assert_eq(cairn_config_cluster_id(c), 15763429696535366767ULL);
    cairn_config_destroy(&c);

    /* The pure helpers, on the same inputs. */
    const char *urls[] = {"http://127.0.0.1:23810", "http://127.0.0.1:23800"};
    cr_assert_eq(cairn_config_compute_member_id(urls, 2, "cairn-test", NULL), 18269193619143157919ULL);
    uint64_t ids[] = {4195751563540190318ULL, 18269193619143157919ULL, 2632855202311708185ULL};
    cr_assert_eq(cairn_config_compute_cluster_id(ids, 3), 15763429696535366767ULL);
    /* A runtime-added member hashes the time too, so it differs. */
    int64_t t = 1700000000;
    cr_assert_neq(cairn_config_compute_member_id(urls, 2, "cairn-test", &t), 18269193619143157919ULL);
}

Test(config, run_dir_path_limit)
{
    char dir[128];
    /* "<dir>/gatewayd-XXXXXXXX.ipc" adds 22 bytes: 85 + 22 = 107 fits, 86 does not. */
    memset(dir, 'r', sizeof dir);
    dir[0] = '/';
    dir[85] = 0;
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--run-dir", dir), 0, "%s", g_err);
    char ep[256];
    cr_assert_eq(cairn_config_ipc_endpoint(c, "gatewayd-0123abcd", ep, sizeof ep), 0);
    cr_assert_eq(strlen(ep) - strlen("ipc://"), 107);
    cr_assert_eq(cairn_config_ipc_endpoint(c, "gatewayd-0123abcde", ep, sizeof ep), CAIRN_ETOOBIG);
    cairn_config_destroy(&c);

    dir[85] = 'r';
    dir[86] = 0;
    cr_assert_eq(LOAD(&c, "--run-dir", dir), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "--run-dir"), "%s", g_err);
    cr_assert(strstr(g_err, "108 bytes, over the 107-byte limit of a unix socket path"), "%s", g_err);
    cairn_config_destroy(&c);

    /* A long data-dir makes the derived run-dir too long; the message says so. */
    dir[86] = 'r';
    dir[90] = 0;
    cr_assert_eq(LOAD(&c, "--data-dir", dir), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "defaults to <data-dir>/run"), "%s", g_err);
    cairn_config_destroy(&c);

    /* A gateway id longer than 8 characters counts in full. */
    dir[80] = 0;
    cr_assert_eq(LOAD(&c, "--run-dir", dir, "--gateway-id", "a-rather-long-gateway"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "gatewayd-a-rather-long-gateway.ipc"), "%s", g_err);
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--gateway-id", "gw/1"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "--gateway-id"), "%s", g_err);
    cairn_config_destroy(&c);
}

Test(config, ipc_endpoint)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--run-dir", "/run/cairn"), 0, "%s", g_err);
    char ep[128];
    cr_assert_eq(cairn_config_ipc_endpoint(c, "raftd", ep, sizeof ep), 0);
    cr_assert_str_eq(ep, "ipc:///run/cairn/raftd.ipc");
    cr_assert_eq(cairn_config_ipc_endpoint(c, "stored", ep, sizeof ep), 0);
    cr_assert_str_eq(ep, "ipc:///run/cairn/stored.ipc");
    cr_assert_eq(cairn_config_ipc_endpoint(c, "../x", ep, sizeof ep), CAIRN_EINVAL);
    cr_assert_eq(cairn_config_ipc_endpoint(c, "", ep, sizeof ep), CAIRN_EINVAL);
    cr_assert_eq(cairn_config_ipc_endpoint(c, "raftd", ep, 10), CAIRN_ETOOBIG);
    cairn_config_destroy(&c);

    c = cairn_config_new();
    cr_assert_eq(cairn_config_ipc_endpoint(c, "raftd", ep, sizeof ep), CAIRN_EINVAL); /* not finalized */
    cairn_config_destroy(&c);
}

Test(config, tls_consistency)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--listen-client-urls", "https://127.0.0.1:2379"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "TLS key/cert (--cert-file, --key-file) must be provided for client url "
                            "https://127.0.0.1:2379 with HTTPS scheme");
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--listen-client-urls", "https://127.0.0.1:2379", "--auto-tls"), 0, "%s", g_err);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--cert-file", "/c"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "--cert-file and --key-file must be given together"), "%s", g_err);
    cairn_config_destroy(&c);
}

/* ---- peer TLS: not supported yet, so every setting that asks for it is refused (issue 7) ---- */

#define PEER_TLS_MSG                                                                                        \
    "peer TLS is not supported yet; raft traffic between members is plaintext. Use http:// peer URLs on a " \
    "trusted network"

Test(config, peer_tls_refused_on_the_command_line)
{
    static const struct {
        const char *a[6], *want;
    } cases[] = {
        {{"--peer-cert-file", "/tls/peer.crt"}, "--peer-cert-file: " PEER_TLS_MSG},
        {{"--peer-key-file=/tls/peer.key"}, "--peer-key-file: " PEER_TLS_MSG},
        {{"--peer-key-file=/k", "--peer-cert-file=/c"}, "--peer-cert-file: " PEER_TLS_MSG},
        {{"--peer-trusted-ca-file", "/tls/ca.crt"}, "--peer-trusted-ca-file: " PEER_TLS_MSG},
        {{"--peer-client-cert-auth"}, "--peer-client-cert-auth: " PEER_TLS_MSG},
        {{"-peer-client-cert-auth=true"}, "--peer-client-cert-auth: " PEER_TLS_MSG},
        {{"--peer-auto-tls"}, "--peer-auto-tls: " PEER_TLS_MSG},
        {{"--peer-auto-tls=1"}, "--peer-auto-tls: " PEER_TLS_MSG},
        /* URLs: the scheme is compared lower-cased, as Go parses it */
        {{"--listen-peer-urls", "https://127.0.0.1:2380"}, "--listen-peer-urls https://127.0.0.1:2380: " PEER_TLS_MSG},
        {{"--listen-peer-urls", "http://127.0.0.1:2380,HTTPS://10.0.0.1:2380"},
         "--listen-peer-urls https://10.0.0.1:2380: " PEER_TLS_MSG},
        {{"--listen-peer-urls", "unixs://localhost:2380"}, "--listen-peer-urls unixs://localhost:2380: " PEER_TLS_MSG},
        {{"--initial-advertise-peer-urls", "https://10.0.0.1:2380"},
         "--initial-advertise-peer-urls https://10.0.0.1:2380: " PEER_TLS_MSG},
        {{"--initial-cluster", "default=http://localhost:2380,n2=https://10.0.0.2:2380"},
         "--initial-cluster n2=https://10.0.0.2:2380: " PEER_TLS_MSG},
        {{"--initial-cluster", "default=http://localhost:2380,n3=unixs://n3:2380"},
         "--initial-cluster n3=unixs://n3:2380: " PEER_TLS_MSG},
        /* a complete etcd mTLS setup: refused at its first setting, not half-applied */
        {{"--listen-peer-urls=https://127.0.0.1:2380", "--peer-cert-file=/c", "--peer-key-file=/k",
          "--peer-client-cert-auth", "--peer-trusted-ca-file=/ca"},
         "--peer-cert-file: " PEER_TLS_MSG},
        /* etcd's other peer TLS flags, which Cairn has no option for */
        {{"--peer-crl-file", "/tls/crl.pem"}, "--peer-crl-file: " PEER_TLS_MSG},
        {{"--peer-cert-allowed-cn=etcd-peer"}, "--peer-cert-allowed-cn: " PEER_TLS_MSG},
        {{"--peer-cert-allowed-hostname", "peer.example"}, "--peer-cert-allowed-hostname: " PEER_TLS_MSG},
        {{"--experimental-peer-skip-client-san-verification"},
         "--experimental-peer-skip-client-san-verification: " PEER_TLS_MSG},
        {{"--peer-client-cert-file", "/c"}, "--peer-client-cert-file: " PEER_TLS_MSG},
        {{"--peer-client-key-file=/k"}, "--peer-client-key-file: " PEER_TLS_MSG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i].a;
        cairn_config_t *c;
        cr_assert_eq(LOAD(&c, a[0], a[1], a[2], a[3], a[4], a[5]), CAIRN_ECONFIG, "case %zu (%s)", i, a[0]);
        cr_assert_str_eq(g_err, cases[i].want, "case %zu (%s)", i, a[0]);
        cr_assert_eq(c->n_members, 0);
        cr_assert_eq(cairn_config_member_id(c), 0);
        cairn_config_destroy(&c);
    }

    /* cairn_config_set, the path tools take, is refused at finalize the same way */
    cairn_config_t *c = cairn_config_new();
    cr_assert_eq(cairn_config_set(c, "peer-auto-tls", "true", g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(cairn_config_finalize(c, g_err, sizeof g_err), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "--peer-auto-tls: " PEER_TLS_MSG);
    cr_assert(!c->finalized);
    cairn_config_destroy(&c);
}

/* Flags that would be accepted and misread are refused: a unix:// peer URL (raftd's peer
 * transport is TCP: it would listen on host:port instead of a socket file), and a
 * --max-request-bytes beyond what one raft entry can carry (an IPC frame / WAL record). */
Test(config, unix_peer_urls_and_huge_requests_refused)
{
    static const struct {
        const char *a[3], *want;
    } cases[] = {
        {{"--listen-peer-urls", "unix://127.0.0.1:2380"},
         "--listen-peer-urls unix://127.0.0.1:2380: unix:// peer URLs are not supported (raft traffic between members "
         "goes over TCP); use http://"},
        {{"--initial-advertise-peer-urls", "unix://n1:2380"},
         "--initial-advertise-peer-urls unix://n1:2380: unix:// peer URLs are not supported (raft traffic between "
         "members goes over TCP); use http://"},
        {{"--initial-cluster", "default=http://localhost:2380,n2=unix://n2:2380"},
         "--initial-cluster n2=unix://n2:2380: unix:// peer URLs are not supported (raft traffic between members goes "
         "over TCP); use http://"},
        {{"--max-request-bytes", "33554433"},
         "--max-request-bytes: must be at most 33554432 (32 MiB): a request is one raft entry, sent and stored whole"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cairn_config_t *c;
        cr_assert_eq(LOAD(&c, cases[i].a[0], cases[i].a[1]), CAIRN_ECONFIG, "case %zu", i);
        cr_assert_str_eq(g_err, cases[i].want, "case %zu", i);
        cairn_config_destroy(&c);
    }
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--max-request-bytes", "33554432"), 0, "%s", g_err);
    cr_assert_eq(c->max_request_bytes, 33554432);
    cairn_config_destroy(&c);
}

/* Issue 11 defect 2: unix:// and unixs:// client URLs are served as etcd 3.4 serves them (a
 * socket file named by the URL's host:port); a name too long for a unix socket (with its
 * ".lock") is refused here, where every daemon and cairnctl run read the configuration,
 * instead of failing in gatewayd at each start (a restart loop under a supervisor). */
Test(config, client_unix_urls)
{
    cairn_config_t *c = NULL;
    cr_assert_eq(LOAD(&c, "--listen-client-urls", "http://127.0.0.1:2379,unix://localhost:2379"), 0, "%s", g_err);
    cr_assert_eq(c->listen_client_urls.n, 2);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--listen-metrics-urls", "unix://m:2381"), 0, "%s", g_err);
    cairn_config_destroy(&c);
    char url[200], want[400];
    memset(url, 0, sizeof url);
    memcpy(url, "unix://", 7);
    memset(url + 7, 'a', 101);
    memcpy(url + 108, ":1", 2); /* 103 bytes of name */
    cr_assert_eq(LOAD(&c, "--listen-client-urls", url), CAIRN_ECONFIG);
    snprintf(want, sizeof want, "--listen-client-urls %s: the unix socket name is 103 bytes, over the limit of 102",
             url);
    cr_assert_str_eq(g_err, want);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--listen-client-urls", "unix://a:1"), 0, "%s", g_err);
    cairn_config_destroy(&c);
}

Test(config, connection_limit_and_header_timeout)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name", "default"), 0, "%s", g_err);
    cr_assert_eq(c->max_client_connections, -1);
    cr_assert_eq(c->client_header_timeout_ms, 10000);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--max-client-connections", "0"), 0, "%s", g_err);
    cr_assert_eq(c->max_client_connections, 0);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--client-header-timeout", "3s"), 0, "%s", g_err);
    cr_assert_eq(c->client_header_timeout_ms, 3000);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--max-client-connections", "-2"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "--max-client-connections: must be -1 (from the descriptor limit), 0 (unlimited) or a "
                            "positive number");
    cairn_config_destroy(&c);
}

Test(config, peer_tls_refused_from_the_environment)
{
    static const struct {
        const char *var, *val, *want;
    } cases[] = {
        {"CAIRN_PEER_CERT_FILE", "/tls/peer.crt",
         "--peer-cert-file (set by environment variable CAIRN_PEER_CERT_FILE): " PEER_TLS_MSG},
        {"CAIRN_PEER_KEY_FILE", "/tls/peer.key",
         "--peer-key-file (set by environment variable CAIRN_PEER_KEY_FILE): " PEER_TLS_MSG},
        {"CAIRN_PEER_TRUSTED_CA_FILE", "/tls/ca.crt",
         "--peer-trusted-ca-file (set by environment variable CAIRN_PEER_TRUSTED_CA_FILE): " PEER_TLS_MSG},
        {"CAIRN_PEER_CLIENT_CERT_AUTH", "true",
         "--peer-client-cert-auth (set by environment variable CAIRN_PEER_CLIENT_CERT_AUTH): " PEER_TLS_MSG},
        {"CAIRN_PEER_AUTO_TLS", "true",
         "--peer-auto-tls (set by environment variable CAIRN_PEER_AUTO_TLS): " PEER_TLS_MSG},
        {"CAIRN_LISTEN_PEER_URLS", "https://127.0.0.1:2380",
         "--listen-peer-urls https://127.0.0.1:2380 (set by environment variable CAIRN_LISTEN_PEER_URLS): "
         PEER_TLS_MSG},
        {"CAIRN_INITIAL_ADVERTISE_PEER_URLS", "unixs://localhost:2380",
         "--initial-advertise-peer-urls unixs://localhost:2380 (set by environment variable "
         "CAIRN_INITIAL_ADVERTISE_PEER_URLS): " PEER_TLS_MSG},
        {"CAIRN_INITIAL_CLUSTER", "default=http://localhost:2380,n2=https://10.0.0.2:2380",
         "--initial-cluster n2=https://10.0.0.2:2380 (set by environment variable CAIRN_INITIAL_CLUSTER): "
         PEER_TLS_MSG},
        /* no such Cairn option, yet not someone else's variable to ignore */
        {"CAIRN_PEER_CRL_FILE", "/tls/crl.pem",
         "--peer-crl-file (set by environment variable CAIRN_PEER_CRL_FILE): " PEER_TLS_MSG},
        {"CAIRN_PEER_CERT_ALLOWED_CN", "etcd-peer",
         "--peer-cert-allowed-cn (set by environment variable CAIRN_PEER_CERT_ALLOWED_CN): " PEER_TLS_MSG},
        {"CAIRN_PEER_CERT_ALLOWED_HOSTNAME", "peer.example",
         "--peer-cert-allowed-hostname (set by environment variable CAIRN_PEER_CERT_ALLOWED_HOSTNAME): "
         PEER_TLS_MSG},
        {"CAIRN_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", "true",
         "--experimental-peer-skip-client-san-verification (set by environment variable "
         "CAIRN_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION): " PEER_TLS_MSG},
        {"CAIRN_PEER_CLIENT_CERT_FILE", "/c",
         "--peer-client-cert-file (set by environment variable CAIRN_PEER_CLIENT_CERT_FILE): " PEER_TLS_MSG},
        {"CAIRN_PEER_CLIENT_KEY_FILE", "/k",
         "--peer-client-key-file (set by environment variable CAIRN_PEER_CLIENT_KEY_FILE): " PEER_TLS_MSG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv(cases[i].var, cases[i].val, 1);
        cairn_config_t *c;
        cr_assert_eq(LOAD(&c, NULL), CAIRN_ECONFIG, "%s", cases[i].var);
        cr_assert_str_eq(g_err, cases[i].want, "%s", cases[i].var);
        cairn_config_destroy(&c);
        unsetenv(cases[i].var);
    }
}

Test(config, peer_tls_refused_from_the_config_file)
{
    static const struct {
        const char *text, *want; /* want: %s is the file's path */
    } cases[] = {
        /* etcd's nested block */
        {"name: n1\npeer-transport-security:\n  cert-file: /tls/peer.crt\n  key-file: /tls/peer.key\n",
         "--peer-cert-file (set by config file %s line 3): " PEER_TLS_MSG},
        {"peer-transport-security:\n  key-file: /tls/peer.key\n",
         "--peer-key-file (set by config file %s line 2): " PEER_TLS_MSG},
        {"peer-transport-security:\n  trusted-ca-file: /tls/ca.crt\n",
         "--peer-trusted-ca-file (set by config file %s line 2): " PEER_TLS_MSG},
        {"peer-transport-security:\n  cert-file:\n  client-cert-auth: true\n",
         "--peer-client-cert-auth (set by config file %s line 3): " PEER_TLS_MSG},
        {"peer-transport-security:\n  auto-tls: yes\n",
         "--peer-auto-tls (set by config file %s line 2): " PEER_TLS_MSG},
        /* the same as plain keys */
        {"peer-cert-file: '/tls/peer.crt'\n", "--peer-cert-file (set by config file %s line 1): " PEER_TLS_MSG},
        {"name: n1\npeer-auto-tls: true\n", "--peer-auto-tls (set by config file %s line 2): " PEER_TLS_MSG},
        /* URLs */
        {"listen-peer-urls: https://127.0.0.1:2380\n",
         "--listen-peer-urls https://127.0.0.1:2380 (set by config file %s line 1): " PEER_TLS_MSG},
        {"initial-advertise-peer-urls: 'https://10.0.0.1:2380'\n",
         "--initial-advertise-peer-urls https://10.0.0.1:2380 (set by config file %s line 1): " PEER_TLS_MSG},
        {"# cluster\ninitial-cluster: default=http://localhost:2380,n2=unixs://n2:2380\n",
         "--initial-cluster n2=unixs://n2:2380 (set by config file %s line 2): " PEER_TLS_MSG},
        /* etcd keys Cairn has no option for: refused where they are written */
        {"peer-transport-security:\n  client-cert-file: /c\n",
         "config file %s line 2: peer-transport-security: client-cert-file: " PEER_TLS_MSG},
        {"peer-transport-security:\n  allowed-cn: etcd-peer\n",
         "config file %s line 2: peer-transport-security: allowed-cn: " PEER_TLS_MSG},
        {"name: n1\npeer-crl-file: /tls/crl.pem\n", "config file %s line 2: peer-crl-file: " PEER_TLS_MSG},
        {"experimental-peer-skip-client-san-verification: true\n",
         "config file %s line 1: experimental-peer-skip-client-san-verification: " PEER_TLS_MSG},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[64], want[1024];
        write_tmp(path, cases[i].text);
        snprintf(want, sizeof want, cases[i].want, path);
        cairn_config_t *c;
        cr_assert_eq(LOAD(&c, "--config-file", path), CAIRN_ECONFIG, "case %zu", i);
        cr_assert_str_eq(g_err, want, "case %zu", i);
        cairn_config_destroy(&c);
        unlink(path);
    }
}

/* What asks for no peer TLS passes: empty paths and false, from any source (etcd's sample
 * config file lists every peer TLS key that way, and cairn_config_print writes them so), and a
 * flag that turns off what the file or the environment turned on. */
Test(config, peer_tls_off_values_are_accepted)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--peer-cert-file=", "--peer-key-file", "", "--peer-trusted-ca-file=",
                      "--peer-client-cert-auth=false", "--peer-auto-tls=false"),
                 0, "%s", g_err);
    cr_assert(!c->peer_auto_tls && !c->peer_client_cert_auth);
    cairn_config_destroy(&c);

    setenv("CAIRN_PEER_CERT_FILE", "", 1);
    setenv("CAIRN_PEER_AUTO_TLS", "false", 1);
    setenv("CAIRN_PEER_CRL_FILE", "", 1);
    cr_assert_eq(LOAD(&c, NULL), 0, "%s", g_err);
    cairn_config_destroy(&c);

    char path[64];
    write_tmp(path, "peer-transport-security:\n  cert-file: /tls/peer.crt\n  auto-tls: true\n");
    setenv("CAIRN_PEER_AUTO_TLS", "true", 1);
    cr_assert_eq(LOAD(&c, "--config-file", path, "--peer-cert-file=", "--peer-auto-tls=false"), 0, "%s", g_err);
    cairn_config_destroy(&c);
    unlink(path);
}

Test(config, compaction_retention)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--auto-compaction-retention", "2"), 0, "%s", g_err);
    cr_assert_eq(c->compaction_retention_ms, 2 * 3600 * 1000); /* periodic: bare number = hours */
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--auto-compaction-retention", "30m"), 0, "%s", g_err);
    cr_assert_eq(c->compaction_retention_ms, 30 * 60 * 1000);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--auto-compaction-mode", "revision", "--auto-compaction-retention", "30m"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "--auto-compaction-retention"), "%s", g_err);
    cairn_config_destroy(&c);
    cr_assert_eq(LOAD(&c, "--auto-compaction-retention", "soon"), CAIRN_ECONFIG);
    cairn_config_destroy(&c);
}

Test(config, set_and_finalize)
{
    cairn_config_t *c = cairn_config_new();
    cr_assert_eq(cairn_config_set(c, "name", "s1", g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(cairn_config_set(c, "initial-advertise-peer-urls", "http://h:1", g_err, sizeof g_err), 0);
    cr_assert_eq(cairn_config_set(c, "nope", "x", g_err, sizeof g_err), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "unknown flag: --nope");
    cr_assert_eq(cairn_config_finalize(c, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_str_eq(c->initial_cluster, "s1=http://h:1");
    cr_assert_str_eq(c->data_dir, "s1.etcd");
    uint64_t id = cairn_config_member_id(c);
    cr_assert_neq(id, 0);
    /* Changing the name re-derives what depends on it. */
    cr_assert_eq(cairn_config_set(c, "name", "s2", g_err, sizeof g_err), 0);
    cr_assert_eq(cairn_config_member_id(c), 0); /* stale until finalized again */
    cr_assert_eq(cairn_config_finalize(c, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_str_eq(c->initial_cluster, "s2=http://h:1");
    cr_assert_str_eq(c->data_dir, "s2.etcd");
    cr_assert_eq(cairn_config_member_id(c), id); /* same URLs and token: same ID */
    cairn_config_destroy(&c);
}

Test(config, print_round_trips)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name", "p1", "--initial-cluster-token", "o'brien", "--listen-client-urls",
                      "http://127.0.0.1:1,http://127.0.0.1:2", "--auto-tls", "--grpc-keepalive-interval", "1500ms",
                      "--log-level", "error", "--auto-compaction-mode", "revision", "--auto-compaction-retention", "7",
                      "--initial-advertise-peer-urls", "http://127.0.0.1:3"),
                 0, "%s", g_err);
    char path[64];
    strcpy(path, "/tmp/cairn_cfg_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    cairn_config_print(c, f);
    fclose(f);
    cairn_config_t *d;
    cr_assert_eq(LOAD(&d, "--config-file", path), 0, "%s", g_err);
    char *a = NULL, *b = NULL;
    size_t al, bl;
    FILE *fa = open_memstream(&a, &al), *fb = open_memstream(&b, &bl);
    cairn_config_print(c, fa);
    cairn_config_print(d, fb);
    fclose(fa);
    fclose(fb);
    cr_assert_str_eq(a, b);
    cr_assert_str_eq(d->initial_cluster_token, "o'brien");
    cr_assert_eq(cairn_config_member_id(d), cairn_config_member_id(c));
    free(a);
    free(b);
    unlink(path);
    cairn_config_destroy(&c);
    cairn_config_destroy(&d);
}

/* etcd 3.4's corruption checks: off by default, a duration and a bool like etcd's, shown in
 * --help with etcd's help texts, settable from the environment and a config file. */
Test(config, corrupt_check_flags)
{
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--name=a"), 0, "%s", g_err);
    cr_assert_eq(c->corrupt_check_ms, 0);
    cr_assert(!c->initial_corrupt_check);
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--experimental-corrupt-check-time=2s", "--experimental-initial-corrupt-check"), 0, "%s",
                 g_err);
    cr_assert_eq(c->corrupt_check_ms, 2000);
    cr_assert(c->initial_corrupt_check);
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--experimental-corrupt-check-time=1m30s", "--experimental-initial-corrupt-check=false"),
                 0, "%s", g_err);
    cr_assert_eq(c->corrupt_check_ms, 90000);
    cr_assert(!c->initial_corrupt_check);
    cairn_config_destroy(&c);

    cr_assert_eq(LOAD(&c, "--experimental-corrupt-check-time=often"), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "experimental-corrupt-check-time"), "%s", g_err);
    cairn_config_destroy(&c);

    setenv("CAIRN_EXPERIMENTAL_CORRUPT_CHECK_TIME", "3s", 1);
    setenv("CAIRN_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true", 1);
    cr_assert_eq(LOAD(&c, "--name=a"), 0, "%s", g_err);
    cr_assert_eq(c->corrupt_check_ms, 3000);
    cr_assert(c->initial_corrupt_check);
    cairn_config_destroy(&c);
    unsetenv("CAIRN_EXPERIMENTAL_CORRUPT_CHECK_TIME");
    unsetenv("CAIRN_EXPERIMENTAL_INITIAL_CORRUPT_CHECK");

    char path[64];
    const char *f = write_tmp(path, "experimental-corrupt-check-time: 5s\nexperimental-initial-corrupt-check: true\n");
    char arg[128];
    snprintf(arg, sizeof arg, "--config-file=%s", f);
    cr_assert_eq(LOAD(&c, arg), 0, "%s", g_err);
    cr_assert_eq(c->corrupt_check_ms, 5000);
    cr_assert(c->initial_corrupt_check);
    cairn_config_destroy(&c);
    unlink(path);

    char *text = NULL;
    size_t len;
    FILE *u = open_memstream(&text, &len);
    cairn_config_usage(u);
    fclose(u);
    cr_assert(strstr(text, "  --experimental-corrupt-check-time '0s'\n"), "%s", text);
    cr_assert(strstr(text, "Duration of time between cluster corruption check passes."));
    cr_assert(strstr(text, "  --experimental-initial-corrupt-check 'false'\n"));
    cr_assert(strstr(text, "Enable to check data corruption before serving any client/peer traffic."));
    free(text);
}

Test(config, usage_lists_every_flag)
{
    char *text = NULL;
    size_t len;
    FILE *f = open_memstream(&text, &len);
    cairn_config_usage(f);
    fclose(f);
    static const char *const flags[] = {
        "name 'default'", "data-dir '${name}.etcd'", "wal-dir ''", "listen-client-urls 'http://localhost:2379'",
        "advertise-client-urls 'http://localhost:2379'", "listen-peer-urls 'http://localhost:2380'",
        "initial-advertise-peer-urls 'http://localhost:2380'", "initial-cluster '",
        "initial-cluster-state 'new'", "initial-cluster-token 'etcd-cluster'", "heartbeat-interval '100'",
        "election-timeout '1000'", "snapshot-count '100000'", "quota-backend-bytes '0'",
        "auto-compaction-mode 'periodic'", "auto-compaction-retention '0'", "max-request-bytes '1572864'",
        "cert-file ''", "key-file ''", "trusted-ca-file ''", "client-cert-auth 'false'", "auto-tls 'false'",
        "peer-cert-file ''", "peer-key-file ''", "peer-trusted-ca-file ''", "peer-client-cert-auth 'false'",
        "peer-auto-tls 'false'", "log-level 'info'", "logger '", "enable-pprof 'false'", "metrics 'basic'",
        "listen-metrics-urls ''", "max-txn-ops '128'", "grpc-keepalive-min-time '5s'",
        "grpc-keepalive-interval '2h'", "grpc-keepalive-timeout '20s'", "run-dir '${data-dir}/run'",
        "gateway-id ''", "config-file ''",
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        char want[128];
        snprintf(want, sizeof want, "  --%s", flags[i]);
        cr_assert(strstr(text, want), "usage lacks \"%s\"", want);
    }
    /* Peer TLS is refused, and the help says so where it lists each setting. */
    static const char *const refused[] = {"peer-cert-file", "peer-key-file", "peer-trusted-ca-file",
                                          "peer-client-cert-auth", "peer-auto-tls", "listen-peer-urls",
                                          "initial-advertise-peer-urls", "initial-cluster"};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char want[128];
        snprintf(want, sizeof want, "  --%s '", refused[i]);
        const char *at = strstr(text, want), *next = at ? strstr(at + 1, "\n  --") : NULL;
        cr_assert(at && next, "usage lacks \"%s\"", want);
        const char *note = strstr(at, "refused");
        cr_assert(note && note < next, "usage of --%s does not say it is refused", refused[i]);
    }
    cr_assert_null(strstr(text, "peer-crl-file"));
    cr_assert(strstr(text, "CAIRN_"));
    cr_assert(strstr(text, "-h, --help"));
    free(text);
}

Test(config, ensure_dirs)
{
    char base[] = "/tmp/cairn_cfg_dirs_XXXXXX";
    cr_assert_not_null(mkdtemp(base));
    char data[128], wal[128];
    snprintf(data, sizeof data, "%s/a/b/data", base);
    snprintf(wal, sizeof wal, "%s/wal", base);
    cairn_config_t *c;
    cr_assert_eq(LOAD(&c, "--data-dir", data, "--wal-dir", wal), 0, "%s", g_err);
    cr_assert_eq(cairn_config_ensure_dirs(c, g_err, sizeof g_err), 0, "%s", g_err);
    cr_assert_eq(cairn_config_ensure_dirs(c, g_err, sizeof g_err), 0, "%s", g_err); /* idempotent */
    struct stat st;
    cr_assert_eq(stat(data, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700);
    cr_assert_eq(stat(c->run_dir, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(stat(wal, &st), 0);
    cairn_config_destroy(&c);

    /* A file where the run dir should be. */
    char file[160], cmd[256];
    snprintf(file, sizeof file, "%s/plainfile", base);
    FILE *f = fopen(file, "w");
    fclose(f);
    cr_assert_eq(LOAD(&c, "--data-dir", data, "--run-dir", file), 0, "%s", g_err);
    cr_assert_eq(cairn_config_ensure_dirs(c, g_err, sizeof g_err), CAIRN_ECONFIG);
    cr_assert(strstr(g_err, "is not a directory"), "%s", g_err);
    cairn_config_destroy(&c);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    cr_assert_eq(system(cmd), 0);
}

Test(config, null_safety)
{
    cr_assert_eq(cairn_config_load(NULL, 0, NULL, NULL, 0), CAIRN_EINVAL);
    cr_assert_eq(cairn_config_finalize(NULL, NULL, 0), CAIRN_EINVAL);
    cr_assert_eq(cairn_config_member_id(NULL), 0);
    cr_assert_eq(cairn_config_cluster_id(NULL), 0);
    cairn_config_t *c = cairn_config_new();
    /* errbuf may be NULL */
    char *argv[] = {"x", "--bogus", NULL};
    cr_assert_eq(cairn_config_load(c, 2, argv, NULL, 0), CAIRN_ECONFIG);
    cairn_config_destroy(&c);
}
