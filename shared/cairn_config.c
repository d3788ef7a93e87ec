/* cairn_config.c - see cairn_config.h.
 *
 * Every option is one row of k_opts: its flag name (which is also its YAML key and, upper-
 * cased, its CAIRN_* variable), how its text is parsed, where the value lands in
 * cairn_config_t, its default and its help line. Flags, environment, file, usage and print
 * all walk that one table, so an option cannot exist in one source and be missing from
 * another.
 *
 * Loading happens in two steps. Each source is parsed value by value into the typed fields
 * (so an error can name the exact flag, variable or file line), in precedence order, later
 * sources overwriting earlier ones. Then cairn_config_finalize fills the defaults that
 * depend on other options (data-dir from name, initial-cluster from name and peer URLs,
 * run-dir from data-dir), checks the options against each other, and computes the member
 * list and the etcd member and cluster IDs.
 *
 * Where etcd has an error for the same mistake, the message follows etcd's wording so that
 * operators and their search engines recognise it.
 */
#include "cairn_config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <openssl/evp.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_url.h"
#include "cairn_yaml.h"

/* ---- the option table ------------------------------------------------------------------- */

typedef enum {
    K_STR,         /* char *, any text */
    K_URLS,        /* cairn_config_urls_t, comma-separated URLs */
    K_U64,         /* uint64_t, decimal */
    K_I64,         /* int64_t, decimal, may be negative */
    K_MS,          /* int64_t milliseconds written as a plain integer (etcd's uint flags) */
    K_DUR,         /* int64_t milliseconds written as a Go duration ("5s", "2h", "1m30s") */
    K_BOOL,        /* bool */
    K_ENUM,        /* int index into choices */
    K_LOGLEVEL,    /* int cairn_log_level_t */
    K_FIXED,       /* etcd flag for behaviour Cairn does not vary: only the values that say what
                      Cairn always does are accepted (choices; O_BOOLISH: a boolean; O_COUNT: any
                      count >= min, a maximum Cairn stays below), any other is refused at start -
                      a setting accepted and ignored would make an operator believe it is on */
    K_CONFIG_FILE, /* char *, the config file; not settable from inside a file */
} kind_t;

enum {
    O_EMPTY_OK = 1,  /* K_URLS: an empty list is allowed */
    O_NEED_HOST = 2, /* K_URLS: others connect to these URLs, so the host must be given */
    O_BOOLISH = 4,   /* K_FIXED: a boolean in etcd (`--flag` alone is true); choices[0] is the one */
    O_COUNT = 8,     /* K_FIXED: an integer >= the option's min */
    O_PEER_TLS = 16, /* peer TLS, which raftd does not do yet: refused unless empty or false */
};

typedef struct {
    const char *name;
    kind_t kind;
    size_t off;
    const char *def;  /* default as text; NULL when derived in finalize */
    const char *shown; /* default as printed in usage when def is NULL */
    const char *help;
    const char *const *choices; /* K_ENUM */
    unsigned flags;
    const char *group; /* non-NULL: a new group starts here in usage */
    unsigned long long min; /* K_FIXED with O_COUNT: the lowest value accepted */
} opt_t;

static const char *const k_states[] = {"new", "existing", NULL};
static const char *const k_compaction[] = {"periodic", "revision", NULL};
static const char *const k_metrics[] = {"basic", "extensive", NULL};
static const char *const k_logger[] = {"zap", NULL};
static const char *const k_log_outputs[] = {"default", "stderr", NULL};
static const char *const k_true[] = {"true", NULL};
static const char *const k_false[] = {"false", NULL};

#define F(field) offsetof(cairn_config_t, field)
static const opt_t k_opts[] = {
    {"config-file", K_CONFIG_FILE, F(config_file), "", NULL,
     "Path to the node's config file (YAML with etcd's keys); also CAIRN_CONFIG_FILE.", NULL, 0, "Config"},

    {"name", K_STR, F(name), "default", NULL, "Human-readable name for this member.", NULL, 0, "Member"},
    {"data-dir", K_STR, F(data_dir), NULL, "${name}.etcd", "Path to the data directory.", NULL, 0, NULL},
    {"wal-dir", K_STR, F(wal_dir), "", NULL, "Path to the dedicated wal directory.", NULL, 0, NULL},
    {"snapshot-count", K_U64, F(snapshot_count), "100000", NULL,
     "Number of committed transactions to trigger a snapshot to disk.", NULL, 0, NULL},
    {"raft-log-memory-bytes", K_U64, F(raft_log_memory_bytes), "67108864", NULL,
     "Bytes of applied raft log entries raftd and stored each keep in memory for members that lag "
     "(at most 5000 entries, or --snapshot-count if lower); a member further behind is sent a snapshot.",
     NULL, 0, NULL},
    {"heartbeat-interval", K_MS, F(heartbeat_ms), "100", NULL,
     "Time (in milliseconds) of a heartbeat interval; also raftd's tick.", NULL, 0, NULL},
    {"election-timeout", K_MS, F(election_ms), "1000", NULL,
     "Time (in milliseconds) for an election to timeout.", NULL, 0, NULL},
    {"listen-peer-urls", K_URLS, F(listen_peer_urls), "http://localhost:2380", NULL,
     "List of URLs to listen on for peer traffic (http://; https://, unix:// and unixs:// are refused).",
     NULL, 0, NULL},
    {"listen-client-urls", K_URLS, F(listen_client_urls), "http://localhost:2379", NULL,
     "List of URLs to listen on for client traffic (unix://NAME: a socket file NAME, relative to the working "
     "directory, served by one gatewayd of the node at a time).",
     NULL, 0, NULL},
    {"quota-backend-bytes", K_I64, F(quota_backend_bytes), "0", NULL,
     "Raise alarms when backend size exceeds the given quota (0 defaults to 2 GiB, negative disables).",
     NULL, 0, NULL},
    {"max-txn-ops", K_U64, F(max_txn_ops), "128", NULL,
     "Maximum number of operations permitted in a transaction.", NULL, 0, NULL},
    {"max-request-bytes", K_U64, F(max_request_bytes), "1572864", NULL,
     "Maximum client request size in bytes the server will accept (at most 33554432).", NULL, 0, NULL},
    {"grpc-keepalive-min-time", K_DUR, F(grpc_keepalive_min_time_ms), "5s", NULL,
     "Minimum duration interval that a client should wait before pinging server (only 5s: Cairn never "
     "closes a connection for pinging too often).", NULL, 0, NULL},
    {"grpc-keepalive-interval", K_DUR, F(grpc_keepalive_interval_ms), "2h", NULL,
     "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).",
     NULL, 0, NULL},
    {"grpc-keepalive-timeout", K_DUR, F(grpc_keepalive_timeout_ms), "20s", NULL,
     "Additional duration of wait before closing a non-responsive connection (0 to disable).", NULL, 0,
     NULL},
    {"experimental-watch-progress-notify-interval", K_DUR, F(watch_progress_notify_ms), "10m", NULL,
     "Duration of periodic watch progress notifications.", NULL, 0, NULL},
    {"experimental-initial-corrupt-check", K_BOOL, F(initial_corrupt_check), "false", NULL,
     "Enable to check data corruption before serving any client/peer traffic.", NULL, 0, NULL},
    {"experimental-corrupt-check-time", K_DUR, F(corrupt_check_ms), "0s", NULL,
     "Duration of time between cluster corruption check passes.", NULL, 0, NULL},

    {"initial-advertise-peer-urls", K_URLS, F(initial_advertise_peer_urls), "http://localhost:2380", NULL,
     "List of this member's peer URLs to advertise to the rest of the cluster (http://; https://, unix:// "
     "and unixs:// are refused).",
     NULL, O_NEED_HOST, "Clustering"},
    {"initial-cluster", K_STR, F(initial_cluster), NULL, "${name}=${initial-advertise-peer-urls}",
     "Initial cluster configuration for bootstrapping (name=url,...; a name may repeat; https://, unix:// and "
     "unixs:// URLs are refused).",
     NULL, 0, NULL},
    {"initial-cluster-state", K_ENUM, F(initial_cluster_state), "new", NULL,
     "Initial cluster state ('new' or 'existing').", k_states, 0, NULL},
    {"initial-cluster-token", K_STR, F(initial_cluster_token), "etcd-cluster", NULL,
     "Initial cluster token for the cluster during bootstrap; part of every member ID.", NULL, 0, NULL},
    {"advertise-client-urls", K_URLS, F(advertise_client_urls), "http://localhost:2379", NULL,
     "List of this member's client URLs to advertise to the public.", NULL, O_NEED_HOST, NULL},
    {"auto-compaction-retention", K_STR, F(auto_compaction_retention), "0", NULL,
     "Auto compaction retention length. 0 means disable auto compaction.", NULL, 0, NULL},
    {"auto-compaction-mode", K_ENUM, F(auto_compaction_mode), "periodic", NULL,
     "Interpret 'auto-compaction-retention' as 'periodic' (duration, hours if no unit) or 'revision'.",
     k_compaction, 0, NULL},

    {"cert-file", K_STR, F(cert_file), "", NULL, "Path to the client server TLS cert file.", NULL, 0,
     "Security"},
    {"key-file", K_STR, F(key_file), "", NULL, "Path to the client server TLS key file.", NULL, 0, NULL},
    {"client-cert-auth", K_BOOL, F(client_cert_auth), "false", NULL, "Enable client cert authentication.",
     NULL, 0, NULL},
    {"trusted-ca-file", K_STR, F(trusted_ca_file), "", NULL,
     "Path to the client server TLS trusted CA cert file.", NULL, 0, NULL},
    {"auto-tls", K_BOOL, F(auto_tls), "false", NULL, "Client TLS using generated certificates.", NULL, 0,
     NULL},
    /* Peer TLS: raftd's peer transport is plaintext ZeroMQ, so until it does TLS these are
     * refused (check_no_peer_tls) rather than accepted and ignored. They stay in the table so
     * that etcd's sample config file (which lists them empty or false) and the output of
     * cairn_config_print still load. */
    {"peer-cert-file", K_STR, F(peer_cert_file), "", NULL,
     "Path to the peer server TLS cert file (not supported yet: refused).", NULL, O_PEER_TLS, NULL},
    {"peer-key-file", K_STR, F(peer_key_file), "", NULL,
     "Path to the peer server TLS key file (not supported yet: refused).", NULL, O_PEER_TLS, NULL},
    {"peer-client-cert-auth", K_BOOL, F(peer_client_cert_auth), "false", NULL,
     "Enable peer client cert authentication (not supported yet: refused).", NULL, O_PEER_TLS, NULL},
    {"peer-trusted-ca-file", K_STR, F(peer_trusted_ca_file), "", NULL,
     "Path to the peer server TLS trusted CA file (not supported yet: refused).", NULL, O_PEER_TLS, NULL},
    {"peer-auto-tls", K_BOOL, F(peer_auto_tls), "false", NULL,
     "Peer TLS using self-generated certificates (not supported yet: refused).", NULL, O_PEER_TLS, NULL},

    {"log-level", K_LOGLEVEL, F(log_level), "info", NULL,
     "Configures log level. Only supports debug, info, warn, error, panic, or fatal.", NULL, 0,
     "Logging and monitoring"},
    {"metrics", K_ENUM, F(metrics), "basic", NULL,
     "Set level of detail for exported metrics, specify 'extensive' to include histogram metrics.",
     k_metrics, 0, NULL},
    {"listen-metrics-urls", K_URLS, F(listen_metrics_urls), "", NULL,
     "List of URLs to listen on for the metrics and health endpoints.", NULL, O_EMPTY_OK, NULL},

    {"run-dir", K_STR, F(run_dir), NULL, "${data-dir}/run",
     "Directory of the node's ipc:// sockets (raftd, stored, gateways); paths must fit 107 bytes.", NULL, 0,
     "Cairn"},
    {"gateway-id", K_STR, F(gateway_id), "", NULL,
     "Identifies one gatewayd among several on the node ([A-Za-z0-9._-]; empty: derived from its pid).",
     NULL, 0, NULL},
    {"max-watchers", K_U64, F(max_watchers), "1000000", NULL,
     "Most watchers one gatewayd holds over all its streams; a watch created past it is refused.", NULL, 0,
     NULL},
    {"max-client-connections", K_I64, F(max_client_connections), "-1", NULL,
     "Most client connections one gatewayd holds (every listener, the metrics ones too); one past it is "
     "accepted and closed at once, and counted in one log line per 5s. 0 = unlimited; -1 = from the "
     "descriptor limit (RLIMIT_NOFILE minus 64 kept for the node's IPC sockets and files).",
     NULL, 0, NULL},
    {"client-header-timeout", K_DUR, F(client_header_timeout_ms), "10s", NULL,
     "How long a client connection may take to send a whole HTTP/1.1 request head (or the HTTP/2 "
     "preface, or the TLS handshake) before it is closed; 0 = no limit (not advised: half-sent "
     "requests then hold descriptors forever).",
     NULL, 0, NULL},

    {"logger", K_FIXED, 0, "zap", NULL,
     "Cairn logs structured key=value lines to stderr; only 'zap' is accepted ('capnslog' is refused).",
     k_logger, 0, "Fixed in Cairn: only the values that describe what Cairn does are accepted"},
    {"log-outputs", K_FIXED, 0, "default", NULL,
     "Cairn logs to stderr (journald captures it); only 'default' or 'stderr' is accepted.", k_log_outputs, 0,
     NULL},
    {"enable-pprof", K_FIXED, 0, "false", NULL, "Cairn has no Go runtime to profile; only 'false' is accepted.",
     k_false, O_BOOLISH, NULL},
    {"pre-vote", K_FIXED, 0, "true", NULL, "Cairn always runs the PreVote phase; only 'true' is accepted.", k_true,
     O_BOOLISH, NULL},
    {"strict-reconfig-check", K_FIXED, 0, "true", NULL,
     "Cairn always rejects reconfigurations that would lose quorum; only 'true' is accepted.", k_true, O_BOOLISH,
     NULL},
    {"initial-election-tick-advance", K_FIXED, 0, "false", NULL,
     "Cairn waits a full election timeout before its first campaign (no ticks advanced at start); only "
     "'false' is accepted.",
     k_false, O_BOOLISH, NULL},
    {"max-snapshots", K_FIXED, 0, "5", NULL,
     "Maximum number of snapshot files to retain: Cairn keeps at most three (the last one installed, the one "
     "being sent to a member behind and the one it replaces), so any value >= 3 holds; lower ones and 0 "
     "(unlimited) are refused.",
     NULL, O_COUNT, NULL, 3},
    {"max-wals", K_FIXED, 0, "5", NULL,
     "Maximum number of wal files to retain: Cairn removes a segment as soon as the log no longer needs it "
     "(etcd too keeps the files still in use), so any value >= 1 holds; 0 (unlimited) is refused.",
     NULL, O_COUNT, NULL, 1},
};
#undef F
#define N_OPTS (sizeof k_opts / sizeof k_opts[0])

#define PEER_TLS_REFUSED CAIRN_PEER_TLS_REFUSED

/* etcd's other peer TLS flags (3.4, and 3.5's client certificate pair), which Cairn has no
 * option for. Unknown names are refused anyway on the command line and in a file, but a
 * CAIRN_* variable of an unknown name is someone else's and ignored; this list makes all
 * three sources refuse them the way they refuse --peer-cert-file. */
static const char *const k_etcd_peer_tls[] = {"peer-crl-file",
                                              "peer-cert-allowed-cn",
                                              "peer-cert-allowed-hostname",
                                              "experimental-peer-skip-client-san-verification",
                                              "peer-client-cert-file",
                                              "peer-client-key-file",
                                              NULL};

/* Where an option's current value came from; derived defaults apply only to SRC_DEFAULT. */
enum { SRC_DEFAULT = 0, SRC_FILE, SRC_ENV, SRC_FLAG };

struct cairn_config_priv_t {
    unsigned char src[N_OPTS];
    int line[N_OPTS]; /* SRC_FILE: the line of the config file that set it */
};

/* ---- small helpers ---------------------------------------------------------------------- */

static int fail(char *eb, size_t el, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *eb, size_t el, int code, const char *fmt, ...)
{
    if (eb && el) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(eb, el, fmt, ap);
        va_end(ap);
    }
    return code;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static void *field(cairn_config_t *c, const opt_t *o) { return (char *)c + o->off; }
static const void *cfield(const cairn_config_t *c, const opt_t *o) { return (const char *)c + o->off; }

static int opt_index(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strncmp(k_opts[i].name, name, len) == 0 && k_opts[i].name[len] == 0)
            return (int)i;
    return -1;
}

static bool opt_is_bool(const opt_t *o) { return o->kind == K_BOOL || (o->kind == K_FIXED && (o->flags & O_BOOLISH)); }

static bool is_etcd_peer_tls(const char *name, size_t len)
{
    for (size_t i = 0; k_etcd_peer_tls[i]; i++)
        if (strncmp(k_etcd_peer_tls[i], name, len) == 0 && k_etcd_peer_tls[i][len] == 0)
            return true;
    return false;
}

/* CAIRN_ + the flag upper-cased, '-' -> '_'. */
static void env_name_p(const char *prefix, const char *flag, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "%s", prefix);
    for (const char *p = flag; *p && n + 1 < len; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[n < len ? n : len - 1] = 0;
}

static void env_name(const char *flag, char *buf, size_t len) { env_name_p("CAIRN_", flag, buf, len); }

/* ---- URL lists ---------------------------------------------------------------------------- */

static void urls_free(cairn_config_urls_t *u)
{
    for (size_t i = 0; i < u->n; i++)
        free(u->v[i]);
    free(u->v);
    u->v = NULL;
    u->n = 0;
}

static int urls_push(cairn_config_urls_t *u, char *s)
{
    char **v = realloc(u->v, (u->n + 1) * sizeof *v);
    if (!v) {
        free(s);
        return CAIRN_ENOMEM;
    }
    u->v = v;
    u->v[u->n++] = s;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void urls_sort(cairn_config_urls_t *u)
{
    if (u->n > 1)
        qsort(u->v, u->n, sizeof *u->v, cmp_str);
}

/* Joins with sep, each item prefixed by prefix (may be ""). Returns malloc'd text or NULL. */
static char *join(char *const *v, size_t n, const char *prefix, const char *sep)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(prefix) + strlen(v[i]) + strlen(sep);
    char *s = malloc(len), *p = s;
    if (!s)
        return NULL;
    *p = 0;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s%s%s", i ? sep : "", prefix, v[i]);
    return s;
}

/* Validates one URL (cairn_url.h: etcd's types.NewURLs rules) and returns its normal form,
 * the exact string etcd hashes into member IDs. */
static int url_norm(const char *in, size_t len, bool need_host, char **out, char *why, size_t wl)
{
    cairn_url_t u;
    if (cairn_url_parse(&u, in, len, need_host ? CAIRN_URL_NEED_HOST : 0, why, wl) < 0)
        return CAIRN_ECONFIG;
    return (*out = strdup(u.text)) ? 0 : CAIRN_ENOMEM;
}

static int urls_parse(const char *text, unsigned flags, cairn_config_urls_t *out, char *why, size_t wl)
{
    cairn_config_urls_t u = {0};
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == 0) {
        if (flags & O_EMPTY_OK) {
            *out = u;
            return 0;
        }
        return fail(why, wl, CAIRN_ECONFIG, "no valid URLs given");
    }
    for (;;) {
        size_t n = strcspn(p, ",");
        char *one;
        int rc = url_norm(p, n, flags & O_NEED_HOST, &one, why, wl);
        if (rc == 0)
            rc = urls_push(&u, one);
        if (rc) {
            urls_free(&u);
            return rc;
        }
        if (!p[n])
            break;
        p += n + 1;
    }
    *out = u;
    return 0;
}

/* ---- scalar parsers --------------------------------------------------------------------- */

static bool parse_u64(const char *s, uint64_t *v)
{
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return false;
    uint64_t x = 0;
    for (; *s; s++) {
        if (x > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *v = x;
    return true;
}

static bool parse_i64(const char *s, int64_t *v)
{
    bool neg = *s == '-';
    uint64_t x;
    if (!parse_u64(s + neg, &x) || x > (uint64_t)INT64_MAX + neg)
        return false;
    *v = neg ? (int64_t)(0 - x) : (int64_t)x;
    return true;
}

/* Go's strconv.ParseBool, plus the YAML 1.1 words etcd's YAML parser takes. */
static int parse_bool(const char *s, bool *v)
{
    static const char *const t[] = {"1", "t", "T", "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *const f[] = {"0", "f", "F", "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (!strcmp(s, t[i]))
            return *v = true, 0;
        if (!strcmp(s, f[i]))
            return *v = false, 0;
    }
    return -1;
}

/* Go's time.ParseDuration ("300ms", "1.5h", "2h45m", "0"), truncated to milliseconds.
 * Negative durations are refused: nothing here means anything negative. */
static int parse_duration_ms(const char *s, int64_t *ms, char *why, size_t wl)
{
    static const struct {
        const char *u;
        double ns;
    } units[] = {{"ns", 1}, {"us", 1e3}, {"\xc2\xb5s", 1e3}, {"\xce\xbcs", 1e3}, {"ms", 1e6},
                 {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
    const char *p = s;
    if (*p == '-')
        return fail(why, wl, -1, "must not be negative");
    if (*p == '+')
        p++;
    if (!strcmp(p, "0")) {
        *ms = 0;
        return 0;
    }
    if (!*p)
        return fail(why, wl, -1, "invalid duration");
    double total = 0;
    while (*p) {
        const char *start = p;
        double v = 0, scale = 1;
        while (isdigit((unsigned char)*p))
            v = v * 10 + (*p++ - '0');
        if (*p == '.') {
            p++;
            while (isdigit((unsigned char)*p))
                v += (*p++ - '0') * (scale /= 10);
        }
        if (p == start || (p == start + 1 && *start == '.'))
            return fail(why, wl, -1, "invalid duration");
        const char *u = p;
        while (*p && !isdigit((unsigned char)*p) && *p != '.')
            p++;
        if (u == p)
            return fail(why, wl, -1, "missing unit in duration (e.g. 5s, 500ms, 2h)");
        double mult = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (strlen(units[i].u) == (size_t)(p - u) && !memcmp(units[i].u, u, (size_t)(p - u)))
                mult = units[i].ns;
        if (mult == 0)
            return fail(why, wl, -1, "unknown unit \"%.*s\" in duration", (int)(p - u), u);
        total += v * mult;
        if (total > 9.2e18) /* Go's limit: int64 nanoseconds */
            return fail(why, wl, -1, "invalid duration (too large)");
    }
    *ms = (int64_t)(total / 1e6);
    return 0;
}

/* ---- applying one value ------------------------------------------------------------------- */

enum { HOW_TEXT = 0, HOW_YAML_PLAIN, HOW_YAML_QUOTED };

/* Parses val into o's field. On CAIRN_ECONFIG, why says what is wrong with val. */
/* A K_FIXED option's value: one Cairn's behaviour matches (kind_t). val may be a list ("a,b",
 * or YAML's flow "[a, b]"): every item must be accepted. */
static int fixed_ok(const opt_t *o, const char *val, char *why, size_t wl)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", val);
    char *p = buf;
    while (*p == ' ' || *p == '[')
        p++;
    char *e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == ']'))
        *--e = 0;
    int n = 0;
    for (char *save = NULL, *item = strtok_r(p, ",", &save); item; item = strtok_r(NULL, ",", &save), n++) {
        while (*item == ' ' || *item == '\'' || *item == '"')
            item++;
        char *ie = item + strlen(item);
        while (ie > item && (ie[-1] == ' ' || ie[-1] == '\'' || ie[-1] == '"'))
            *--ie = 0;
        int ok = 0;
        if (o->flags & O_COUNT) {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(item, &end, 10);
            ok = *item && end && !*end && errno == 0 && v >= o->min && item[0] != '-';
        } else if (o->flags & O_BOOLISH) {
            bool b;
            ok = parse_bool(item, &b) == 0 && b == (strcmp(o->choices[0], "true") == 0);
        } else {
            for (size_t i = 0; o->choices[i]; i++)
                ok |= strcmp(item, o->choices[i]) == 0;
        }
        if (!ok)
            return fail(why, wl, CAIRN_ECONFIG, "not supported: %s", o->help);
    }
    if (n == 0 && !(o->flags & O_BOOLISH))
        return fail(why, wl, CAIRN_ECONFIG, "not supported: %s", o->help);
    return 0;
}

static int parse_into(cairn_config_t *c, const opt_t *o, const char *val, int how, char *why, size_t wl)
{
    void *f = field(c, o);
    switch (o->kind) {
    case K_STR:
    case K_CONFIG_FILE: {
        char *s = strdup(val);
        if (!s)
            return CAIRN_ENOMEM;
        free(*(char **)f);
        *(char **)f = s;
        return 0;
    }
    case K_URLS: {
        cairn_config_urls_t u;
        int rc = urls_parse(val, o->flags, &u, why, wl);
        if (rc)
            return rc;
        urls_free(f);
        *(cairn_config_urls_t *)f = u;
        return 0;
    }
    case K_U64:
        if (!parse_u64(val, f))
            return fail(why, wl, CAIRN_ECONFIG, "must be a non-negative integer");
        return 0;
    case K_I64:
        if (!parse_i64(val, f))
            return fail(why, wl, CAIRN_ECONFIG, "must be an integer");
        return 0;
    case K_MS: {
        uint64_t v;
        if (!parse_u64(val, &v))
            return fail(why, wl, CAIRN_ECONFIG, "must be a whole number of milliseconds");
        if (v > INT32_MAX)
            return fail(why, wl, CAIRN_ECONFIG, "too large");
        *(int64_t *)f = (int64_t)v;
        return 0;
    }
    case K_DUR: {
        /* In etcd's YAML a duration is a bare integer of nanoseconds (the YAML becomes JSON
         * for a Go time.Duration), while its flags take "5s". Take both; refuse the small
         * bare numbers that are surely meant as seconds or milliseconds. */
        uint64_t ns;
        if (how == HOW_YAML_PLAIN && parse_u64(val, &ns)) {
            if (ns != 0 && ns < 1000000)
                return fail(why, wl, CAIRN_ECONFIG,
                            "a bare number is nanoseconds here (as in etcd's YAML); write a duration "
                            "such as '5s'");
            *(int64_t *)f = (int64_t)(ns / 1000000);
            return 0;
        }
        return parse_duration_ms(val, f, why, wl) ? CAIRN_ECONFIG : 0;
    }
    case K_BOOL:
        if (parse_bool(val, f))
            return fail(why, wl, CAIRN_ECONFIG, "must be true or false");
        return 0;
    case K_ENUM:
        for (int i = 0; o->choices[i]; i++)
            if (!strcmp(val, o->choices[i])) {
                *(int *)f = i;
                return 0;
            }
        return fail(why, wl, CAIRN_ECONFIG, "must be '%s' or '%s'", o->choices[0], o->choices[1]);
    case K_LOGLEVEL: {
        int lv = cairn_log_level_parse(val);
        if (lv < 0)
            return fail(why, wl, CAIRN_ECONFIG, "unknown level (debug, info, warn, error, panic or fatal)");
        *(int *)f = lv;
        return 0;
    }
    case K_FIXED:
        return fixed_ok(o, val, why, wl);
    }
    return CAIRN_EINVAL;
}

/* Applies val to option i from source src; ctx names the source for the error message:
 * "flag --x", "CAIRN_X", "x" (file: the caller prefixes file and line). */
static int apply(cairn_config_t *c, size_t i, const char *val, int src, int how, const char *ctx, char *eb,
                 size_t el)
{
    char why[256] = "";
    int rc = parse_into(c, &k_opts[i], val, how, why, sizeof why);
    if (rc == CAIRN_ECONFIG)
        return fail(eb, el, rc, "invalid value \"%s\" for %s: %s", val, ctx, why);
    if (rc)
        return fail(eb, el, rc, "%s", cairn_strerror(rc));
    c->priv_->src[i] = (unsigned char)src;
    return 0;
}

/* ---- new / destroy -------------------------------------------------------------------------- */

static void free_derived(cairn_config_t *c)
{
    for (size_t i = 0; i < c->n_members; i++) {
        free(c->members[i].name);
        urls_free(&c->members[i].peer_urls);
    }
    free(c->members);
    c->members = NULL;
    c->n_members = 0;
    c->self = 0;
    c->member_id = c->cluster_id = 0;
    c->finalized = false;
    if (c->priv_) {
    }
}

void cairn_config_destroy(cairn_config_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_config_t *c = *self_p;
    free_derived(c);
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &k_opts[i];
        if (o->kind == K_STR || o->kind == K_CONFIG_FILE)
            free(*(char **)field(c, o));
        else if (o->kind == K_URLS)
            urls_free(field(c, o));
    }
    free(c->priv_);
    free(c);
    *self_p = NULL;
}

cairn_config_t *cairn_config_new(void)
{
    cairn_config_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->priv_ = calloc(1, sizeof *c->priv_);
    if (!c->priv_)
        goto oom;
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &k_opts[i];
        /* Derived options hold "" until finalize, so no string field is ever NULL. */
        const char *def = o->def ? o->def : "";
        if (o->kind == K_FIXED)
            continue;
        if (parse_into(c, o, def, HOW_TEXT, NULL, 0))
            goto oom; /* the defaults are valid, so only allocation can fail */
    }
    return c;
oom:
    cairn_config_destroy(&c);
    return NULL;
}

/* ---- config file ---------------------------------------------------------------------------- */

/* etcd writes TLS settings as two nested blocks; their keys map onto our flags. */
static const char *const k_tls_keys[] = {"cert-file", "key-file", "client-cert-auth", "trusted-ca-file",
                                         "auto-tls", NULL};

typedef struct {
    cairn_config_t *c;
    int seen[N_OPTS]; /* the line that set each option, to name it in a duplicate's error */
} file_ctx_t;

/* One key of the config file (cairn_yaml.h), which is either a flag name at column 0 or a key
 * of etcd's two TLS blocks. */
static int file_entry(void *arg, const cairn_yaml_entry_t *e, char *why, size_t wl)
{
    file_ctx_t *fc = arg;
    cairn_config_t *c = fc->c;
    const char *s = e->key;
    if (!e->parent && (!strcmp(s, "client-transport-security") || !strcmp(s, "peer-transport-security"))) {
        if (!e->null)
            return fail(why, wl, CAIRN_ECONFIG, "%s must be a nested block of keys", s);
        return CAIRN_YAML_MAP;
    }
    int i;
    if (e->parent) {
        bool peer = !strcmp(e->parent, "peer-transport-security");
        i = -1;
        for (int k = 0; k_tls_keys[k]; k++)
            if (!strcmp(s, k_tls_keys[k])) {
                char full[64];
                snprintf(full, sizeof full, "%s%s", peer ? "peer-" : "", s);
                i = opt_index(full, strlen(full));
            }
        if (i < 0 && peer) /* etcd 3.5's client-cert-file, ... */
            return fail(why, wl, CAIRN_ECONFIG, "%s: %s: " PEER_TLS_REFUSED, e->parent, s);
        if (i < 0)
            return fail(why, wl, CAIRN_ECONFIG, "unknown key \"%s\" in %s", s, e->parent);
    } else {
        i = opt_index(s, strlen(s));
        if (i < 0 && is_etcd_peer_tls(s, strlen(s)))
            return fail(why, wl, CAIRN_ECONFIG, "%s: " PEER_TLS_REFUSED, s);
        if (i < 0)
            return fail(why, wl, CAIRN_ECONFIG, "unknown key \"%s\"", s);
    }
    const opt_t *o = &k_opts[i];
    if (o->kind == K_CONFIG_FILE)
        return fail(why, wl, CAIRN_ECONFIG, "config-file cannot be set inside a config file");
    if (fc->seen[i])
        return fail(why, wl, CAIRN_ECONFIG, "duplicate key \"%s\" (first set on line %d)", o->name, fc->seen[i]);
    fc->seen[i] = e->line;
    c->priv_->line[i] = e->line;
    if (o->kind == K_FIXED) {
        /* etcd writes some of these as lists (log-outputs: [stderr]); a flow list is read, a
         * block list would hide its items from this reader */
        if (e->null)
            return fail(why, wl, CAIRN_ECONFIG, "%s: write the value on the key's line (e.g. %s: %s): %s", o->name,
                        o->name, o->def, o->help);
        return apply(c, (size_t)i, e->value, SRC_FILE, e->quoted ? HOW_YAML_QUOTED : HOW_YAML_PLAIN, o->name, why,
                     wl);
    }
    if (e->null)
        return 0; /* an empty value keeps the default, as in etcd's YAML */
    if (!e->quoted && (*e->value == '[' || *e->value == '{'))
        return fail(why, wl, CAIRN_ECONFIG, "%s: YAML lists and maps are not supported; write a comma-separated string",
                    o->name);
    return apply(c, (size_t)i, e->value, SRC_FILE, e->quoted ? HOW_YAML_QUOTED : HOW_YAML_PLAIN, o->name, why, wl);
}

static int load_file(cairn_config_t *c, const char *path, char *eb, size_t el)
{
    file_ctx_t fc = {.c = c};
    return cairn_yaml_read_file(path, "config file", file_entry, &fc, eb, el);
}

/* ---- load ------------------------------------------------------------------------------------ */

typedef struct {
    size_t opt;
    const char *val;
} flagval_t;

/* Parses argv the way Go's flag package (and so etcd) does, into a list applied later, so
 * that flag errors are reported before any file is read and flags still win over it. */
static int parse_argv(int argc, char *const argv[], flagval_t *fv, size_t *nfv, char *eb, size_t el)
{
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            if (i + 1 < argc)
                return fail(eb, el, CAIRN_ECONFIG, "unexpected argument: %s", argv[i + 1]);
            break;
        }
        if (a[0] != '-' || !a[1])
            return fail(eb, el, CAIRN_ECONFIG, "unexpected argument: %s (flags start with --)", a);
        const char *name = a + 1 + (a[1] == '-');
        if (!*name || *name == '-' || *name == '=')
            return fail(eb, el, CAIRN_ECONFIG, "bad flag syntax: %s", a);
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if ((len == 1 && *name == 'h') || (len == 4 && !strncmp(name, "help", 4)))
            return CAIRN_CONFIG_HELP;
        if (len == 7 && !strncmp(name, "version", 7))
            return CAIRN_CONFIG_VERSION;
        int k = opt_index(name, len);
        if (k < 0 && is_etcd_peer_tls(name, len))
            return fail(eb, el, CAIRN_ECONFIG, "--%.*s: " PEER_TLS_REFUSED, (int)len, name);
        if (k < 0)
            return fail(eb, el, CAIRN_ECONFIG, "unknown flag: --%.*s", (int)len, name);
        const char *val;
        if (eq)
            val = eq + 1;
        else if (opt_is_bool(&k_opts[k]))
            val = "true"; /* Go: a bare boolean flag never takes the next argument */
        else if (i + 1 < argc)
            val = argv[++i];
        else
            return fail(eb, el, CAIRN_ECONFIG, "flag needs an argument: --%s", k_opts[k].name);
        fv[n].opt = (size_t)k;
        fv[n].val = val;
        n++;
    }
    *nfv = n;
    return 0;
}

/* Every ETCD_* variable must name a setting Cairn has (an option, or a peer-TLS one, refused
 * above); ETCDCTL_* is etcdctl's and not looked at. */
static int check_etcd_env(char *eb, size_t el)
{
    extern char **environ;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "ETCD_", 5) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        int known = 0;
        for (size_t i = 0; i < N_OPTS && !known; i++) {
            char var[96];
            env_name_p("ETCD_", k_opts[i].name, var, sizeof var);
            known = strlen(var) == n && strncmp(var, *e, n) == 0;
        }
        for (size_t i = 0; k_etcd_peer_tls[i] && !known; i++) {
            char var[96];
            env_name_p("ETCD_", k_etcd_peer_tls[i], var, sizeof var);
            known = strlen(var) == n && strncmp(var, *e, n) == 0;
        }
        if (!known)
            return fail(eb, el, CAIRN_ECONFIG,
                        "environment variable %.*s: not a setting Cairn has (stored --help lists them); unset it", (int)n,
                        *e);
    }
    return 0;
}

int cairn_config_load(cairn_config_t *c, int argc, char *const argv[], char *eb, size_t el)
{
    if (eb && el)
        eb[0] = 0;
    if (!c || argc < 0 || (argc > 0 && !argv))
        return fail(eb, el, CAIRN_EINVAL, "invalid argument");
    flagval_t *fv = calloc((size_t)argc + 1, sizeof *fv);
    if (!fv)
        return fail(eb, el, CAIRN_ENOMEM, "out of memory");
    size_t nfv = 0;
    int rc = parse_argv(argc, argv, fv, &nfv, eb, el);
    if (rc)
        goto out;

    /* The config file: the last --config-file flag, else CAIRN_CONFIG_FILE (or etcd's
     * ETCD_CONFIG_FILE). */
    const char *file = getenv("CAIRN_CONFIG_FILE");
    if (!file)
        file = getenv("ETCD_CONFIG_FILE");
    int file_src = SRC_ENV;
    for (size_t i = 0; i < nfv; i++)
        if (k_opts[fv[i].opt].kind == K_CONFIG_FILE)
            file = fv[i].val, file_src = SRC_FLAG;
    if (file && *file) {
        size_t k = (size_t)opt_index("config-file", 11);
        if ((rc = apply(c, k, file, file_src, HOW_TEXT, "--config-file", eb, el)))
            goto out;
        if ((rc = load_file(c, file, eb, el)))
            goto out;
    }

    /* The environment: CAIRN_<FLAG>, or etcd's own ETCD_<FLAG> so that an etcd environment
     * file (/etc/default/etcd, a unit's EnvironmentFile) works as it is. Both set to different
     * values is refused (which one would an operator expect?). Other CAIRN_* variables
     * (CAIRN_BIN, ...) belong to other tools and are left alone; an ETCD_* variable for a
     * setting Cairn does not have is refused, as a flag would be: accepted and ignored, it
     * would leave an operator believing it is on. */
    for (size_t i = 0; i < N_OPTS; i++) {
        if (k_opts[i].kind == K_CONFIG_FILE)
            continue;
        char var[96], evar[96];
        env_name(k_opts[i].name, var, sizeof var);
        env_name_p("ETCD_", k_opts[i].name, evar, sizeof evar);
        const char *v = getenv(var), *ev = getenv(evar);
        if (v && ev && strcmp(v, ev) != 0) {
            rc = fail(eb, el, CAIRN_ECONFIG, "environment variables %s=\"%s\" and %s=\"%s\" disagree; set one", var,
                      v, evar, ev);
            goto out;
        }
        const char *name = v ? var : evar;
        if (!v)
            v = ev;
        if (!v)
            continue;
        char ctx[160];
        snprintf(ctx, sizeof ctx, "environment variable %s", name);
        if ((rc = apply(c, i, v, SRC_ENV, HOW_TEXT, ctx, eb, el)))
            goto out;
    }
    for (size_t i = 0; k_etcd_peer_tls[i]; i++) {
        for (int p = 0; p < 2; p++) {
            char var[96];
            env_name_p(p ? "ETCD_" : "CAIRN_", k_etcd_peer_tls[i], var, sizeof var);
            const char *v = getenv(var);
            if (v && *v) { /* empty asks for nothing, as with the options' own variables */
                rc = fail(eb, el, CAIRN_ECONFIG, "--%s (set by environment variable %s): " PEER_TLS_REFUSED,
                          k_etcd_peer_tls[i], var);
                goto out;
            }
        }
    }
    if ((rc = check_etcd_env(eb, el)))
        goto out;

    for (size_t i = 0; i < nfv; i++) {
        const opt_t *o = &k_opts[fv[i].opt];
        if (o->kind == K_CONFIG_FILE)
            continue;
        char ctx[96];
        snprintf(ctx, sizeof ctx, "flag --%s", o->name);
        if ((rc = apply(c, fv[i].opt, fv[i].val, SRC_FLAG, HOW_TEXT, ctx, eb, el)))
            goto out;
    }
    rc = cairn_config_finalize(c, eb, el);
out:
    free(fv);
    return rc;
}

int cairn_config_set(cairn_config_t *c, const char *flag, const char *value, char *eb, size_t el)
{
    if (!c || !flag || !value)
        return fail(eb, el, CAIRN_EINVAL, "invalid argument");
    int k = opt_index(flag, strlen(flag));
    if (k < 0)
        return fail(eb, el, CAIRN_ECONFIG, "unknown flag: --%s", flag);
    char ctx[96];
    snprintf(ctx, sizeof ctx, "flag --%s", flag);
    c->finalized = false;
    return apply(c, (size_t)k, value, SRC_FLAG, HOW_TEXT, ctx, eb, el);
}

/* ---- IDs ----------------------------------------------------------------------------------- */

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

uint64_t cairn_config_compute_member_id(const char *const *peer_urls, size_t n, const char *token,
                                        const int64_t *unix_time)
{
    const char **sorted = malloc((n ? n : 1) * sizeof *sorted);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int hl = 0;
    uint64_t id = 0;
    if (!sorted || !md || !EVP_DigestInit_ex(md, EVP_sha1(), NULL))
        goto out;
    memcpy(sorted, peer_urls, n * sizeof *sorted);
    if (n > 1)
        qsort(sorted, n, sizeof *sorted, cmp_str);
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= EVP_DigestUpdate(md, sorted[i], strlen(sorted[i]));
    if (token)
        ok &= EVP_DigestUpdate(md, token, strlen(token));
    if (unix_time) {
        char t[32];
        int tl = snprintf(t, sizeof t, "%" PRId64, *unix_time);
        ok &= EVP_DigestUpdate(md, t, (size_t)tl);
    }
    if (ok && EVP_DigestFinal_ex(md, h, &hl) && hl >= 8)
        id = be64(h);
out:
    EVP_MD_CTX_free(md);
    free(sorted);
    return id; /* 0 only on allocation failure: raft reserves 0 as "no member" */
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t cairn_config_compute_cluster_id(const uint64_t *ids, size_t n)
{
    uint64_t *s = malloc((n ? n : 1) * sizeof *s);
    unsigned char *b = malloc(n * 8 + 1), h[EVP_MAX_MD_SIZE];
    unsigned int hl = 0;
    uint64_t id = 0;
    if (s && b) {
        memcpy(s, ids, n * sizeof *s);
        qsort(s, n, sizeof *s, cmp_u64);
        for (size_t i = 0; i < n; i++)
            for (int j = 0; j < 8; j++)
                b[i * 8 + j] = (unsigned char)(s[i] >> (56 - 8 * j));
        if (EVP_Digest(b, n * 8, h, &hl, EVP_sha1(), NULL) && hl >= 8)
            id = be64(h);
    }
    free(s);
    free(b);
    return id;
}

uint64_t cairn_config_member_id(const cairn_config_t *c) { return c && c->finalized ? c->member_id : 0; }
uint64_t cairn_config_cluster_id(const cairn_config_t *c) { return c && c->finalized ? c->cluster_id : 0; }

/* ---- finalize -------------------------------------------------------------------------------- */

static size_t src_of(const cairn_config_t *c, const char *name)
{
    return c->priv_->src[opt_index(name, strlen(name))];
}

static int set_str(char **f, char *s)
{
    if (!s)
        return CAIRN_ENOMEM;
    free(*f);
    *f = s;
    return 0;
}

static bool valid_ident(const char *s)
{
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == strlen(s);
}

static bool urls_equal_sorted(const cairn_config_urls_t *a, const cairn_config_urls_t *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]))
            return false;
    return true;
}

static bool urls_has(const cairn_config_urls_t *u, const char *s)
{
    for (size_t i = 0; i < u->n; i++)
        if (!strcmp(u->v[i], s))
            return true;
    return false;
}

/* Parses --initial-cluster into c->members (etcd's types.NewURLsMap: comma-separated
 * name=url pairs, a name may repeat to give a member several URLs). */
static int parse_members(cairn_config_t *c, char *eb, size_t el)
{
    const char *p = c->initial_cluster;
    int rc = 0;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *s = p, *e = p + n;
        p = *e ? e + 1 : e;
        while (s < e && isspace((unsigned char)*s))
            s++;
        if (s == e)
            continue; /* empty items are skipped, as etcd's parser does */
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq || eq == s)
            return fail(eb, el, CAIRN_ECONFIG, "--initial-cluster: \"%.*s\" is not of the form name=url",
                        (int)(e - s), s);
        if (eq + 1 == e)
            return fail(eb, el, CAIRN_ECONFIG, "--initial-cluster: empty URL given for \"%.*s\"", (int)(eq - s),
                        s);
        char why[256], *url;
        if ((rc = url_norm(eq + 1, (size_t)(e - eq - 1), true, &url, why, sizeof why)))
            return rc == CAIRN_ECONFIG ? fail(eb, el, rc, "error setting up initial cluster: %s", why) : rc;
        size_t m;
        for (m = 0; m < c->n_members; m++)
            if (strlen(c->members[m].name) == (size_t)(eq - s) && !strncmp(c->members[m].name, s, (size_t)(eq - s)))
                break;
        if (m == c->n_members) {
            cairn_config_member_t *v = realloc(c->members, (m + 1) * sizeof *v);
            if (!v) {
                free(url);
                return CAIRN_ENOMEM;
            }
            c->members = v;
            memset(&v[m], 0, sizeof v[m]);
            if (!(v[m].name = xstrndup(s, (size_t)(eq - s)))) {
                free(url);
                return CAIRN_ENOMEM;
            }
            c->n_members++;
        }
        if ((rc = urls_push(&c->members[m].peer_urls, url)))
            return rc;
    }
    if (c->n_members == 0)
        return fail(eb, el, CAIRN_ECONFIG, "--initial-cluster is empty");
    /* One URL must lead to one member: etcd refuses duplicates anywhere in the list. */
    cairn_config_urls_t all = {0};
    for (size_t m = 0; m < c->n_members; m++) {
        urls_sort(&c->members[m].peer_urls);
        for (size_t i = 0; i < c->members[m].peer_urls.n; i++) {
            char *dup = strdup(c->members[m].peer_urls.v[i]);
            if (!dup || urls_push(&all, dup)) {
                urls_free(&all);
                return CAIRN_ENOMEM;
            }
        }
    }
    urls_sort(&all);
    for (size_t i = 1; i < all.n; i++)
        if (!strcmp(all.v[i - 1], all.v[i])) {
            urls_free(&all);
            return fail(eb, el, CAIRN_ECONFIG, "initial cluster %s has duplicate url", c->initial_cluster);
        }
    urls_free(&all);
    return 0;
}

/* etcd's advertiseMatchesCluster, without its DNS resolution: this member's URLs in
 * --initial-cluster must be exactly --initial-advertise-peer-urls. */
static int check_self_urls(cairn_config_t *c, char *eb, size_t el)
{
    const cairn_config_urls_t *init = &c->members[c->self].peer_urls;
    cairn_config_urls_t ap = {0};
    for (size_t i = 0; i < c->initial_advertise_peer_urls.n; i++) {
        char *d = strdup(c->initial_advertise_peer_urls.v[i]);
        if (!d || urls_push(&ap, d)) {
            urls_free(&ap);
            return CAIRN_ENOMEM;
        }
    }
    urls_sort(&ap);
    int rc = 0;
    if (urls_equal_sorted(init, &ap))
        goto out;
    /* Like etcd: first report what --initial-cluster has that the advertised list lacks,
     * else the other way round. */
    cairn_config_urls_t miss = {0};
    bool init_side = true;
    for (int pass = 0; pass < 2 && !miss.n; pass++) {
        init_side = pass == 0;
        const cairn_config_urls_t *from = init_side ? init : &ap, *in = init_side ? &ap : init;
        for (size_t i = 0; i < from->n; i++)
            if (!urls_has(in, from->v[i])) {
                char *d = strdup(from->v[i]);
                if (!d || urls_push(&miss, d)) {
                    urls_free(&miss);
                    rc = CAIRN_ENOMEM;
                    goto out;
                }
            }
    }
    char pre[256];
    snprintf(pre, sizeof pre, "%s=", c->name);
    char *apstr = join(ap.v, ap.n, "", ","), *apmap = join(ap.v, ap.n, pre, ",");
    char *m_init = join(miss.v, miss.n, pre, ","), *m_ap = join(miss.v, miss.n, "", ",");
    if (!apstr || !apmap || !m_init || !m_ap)
        rc = CAIRN_ENOMEM;
    else if (init_side)
        rc = fail(eb, el, CAIRN_ECONFIG,
                  "--initial-cluster has %s but missing from --initial-advertise-peer-urls=%s (URLs are compared "
                  "as written, host names are not resolved)",
                  m_init, apstr);
    else
        rc = fail(eb, el, CAIRN_ECONFIG,
                  "--initial-advertise-peer-urls has %s but missing from --initial-cluster=%s", m_ap, apmap);
    free(apstr);
    free(apmap);
    free(m_init);
    free(m_ap);
    urls_free(&miss);
out:
    urls_free(&ap);
    return rc;
}

static bool is_tls_url(const char *u) { return cairn_url_text_is_tls(u); }

static int check_tls(const cairn_config_urls_t *u, const char *cert, const char *key, bool autotls,
                     const char *what, const char *flags, char *eb, size_t el)
{
    for (size_t i = 0; i < u->n; i++)
        if (is_tls_url(u->v[i]) && (!*cert || !*key) && !autotls)
            return fail(eb, el, CAIRN_ECONFIG, "TLS key/cert (%s) must be provided for %s url %s with HTTPS scheme",
                        flags, what, u->v[i]);
    return 0;
}

/* Refuses option i, whose value (what: "" or " <url>") asks for something Cairn cannot do
 * (why), naming it and where its value came from. */
static int refuse_opt(const cairn_config_t *c, size_t i, const char *what, const char *why, char *eb, size_t el)
{
    const char *name = k_opts[i].name;
    char var[96];
    switch (c->priv_->src[i]) {
    case SRC_ENV: /* CAIRN_<FLAG>, else etcd's ETCD_<FLAG> set it */
        env_name(name, var, sizeof var);
        if (!getenv(var))
            env_name_p("ETCD_", name, var, sizeof var);
        return fail(eb, el, CAIRN_ECONFIG, "--%s%s (set by environment variable %s): %s", name, what, var, why);
    case SRC_FILE:
        return fail(eb, el, CAIRN_ECONFIG, "--%s%s (set by config file %s line %d): %s", name, what,
                    c->config_file, c->priv_->line[i], why);
    default: return fail(eb, el, CAIRN_ECONFIG, "--%s%s: %s", name, what, why);
    }
}

static int refuse_peer_tls(const cairn_config_t *c, size_t i, const char *what, char *eb, size_t el)
{
    return refuse_opt(c, i, what, PEER_TLS_REFUSED, eb, el);
}

/* raftd's peer transport is ZeroMQ over TCP: a unix:// peer URL would be dialled and listened
 * on as TCP host:port, not as a socket file, so it is refused rather than misread. */
#define PEER_UNIX_REFUSED "unix:// peer URLs are not supported (raft traffic between members goes over TCP); use http://"
static bool is_unix_url(const char *u) { return cairn_url_scheme(u) == CAIRN_URL_UNIX; }

/* Peer TLS is not implemented yet: raftd's peer transport is plaintext ZeroMQ over TCP that
 * anyone who can reach the port may connect to. Accepting a setting that asks for TLS would
 * leave the operator believing in an encryption and a mutual authentication that do not
 * exist, so every one is refused at start, the same way by all three daemons: a peer TLS
 * option that is not empty or false, and an https:// or unixs:// URL in --listen-peer-urls
 * or --initial-advertise-peer-urls (--initial-cluster: check_no_peer_tls_members). Empty and
 * false ask for nothing; they are what etcd's sample config file and cairn_config_print
 * write, so they pass. */
static int check_no_peer_tls(const cairn_config_t *c, char *eb, size_t el)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &k_opts[i];
        const void *f = cfield(c, o);
        if ((o->flags & O_PEER_TLS) && (o->kind == K_BOOL ? *(const bool *)f : **(char *const *)f != 0))
            return refuse_peer_tls(c, i, "", eb, el);
    }
    static const char *const url_opts[] = {"listen-peer-urls", "initial-advertise-peer-urls"};
    for (size_t k = 0; k < sizeof url_opts / sizeof url_opts[0]; k++) {
        size_t i = (size_t)opt_index(url_opts[k], strlen(url_opts[k]));
        const cairn_config_urls_t *u = cfield(c, &k_opts[i]);
        for (size_t j = 0; j < u->n; j++)
            if (is_tls_url(u->v[j]) || is_unix_url(u->v[j])) {
                char what[300];
                snprintf(what, sizeof what, " %s", u->v[j]);
                return refuse_opt(c, i, what, is_unix_url(u->v[j]) ? PEER_UNIX_REFUSED : PEER_TLS_REFUSED, eb, el);
            }
    }
    return 0;
}

/* The same for the members of --initial-cluster: raftd would dial them in plaintext. */
static int check_no_peer_tls_members(const cairn_config_t *c, char *eb, size_t el)
{
    for (size_t m = 0; m < c->n_members; m++)
        for (size_t j = 0; j < c->members[m].peer_urls.n; j++)
            if (is_tls_url(c->members[m].peer_urls.v[j]) || is_unix_url(c->members[m].peer_urls.v[j])) {
                char what[600];
                snprintf(what, sizeof what, " %s=%s", c->members[m].name, c->members[m].peer_urls.v[j]);
                return refuse_opt(c, (size_t)opt_index("initial-cluster", 15), what,
                                  is_unix_url(c->members[m].peer_urls.v[j]) ? PEER_UNIX_REFUSED : PEER_TLS_REFUSED, eb,
                                  el);
            }
    return 0;
}

/* A unix:// or unixs:// client (or metrics) URL names a socket file, etcd's way: its host:port
 * as written, relative to gatewayd's working directory. sun_path holds 107 bytes and gatewayd
 * also creates "<name>.lock" beside it (which gateway of the node serves it), so a longer name
 * is refused here, in every daemon, rather than making gatewayd fail at each start. */
#define UNIX_CLIENT_NAME_MAX 102
static int check_client_unix(const cairn_config_t *c, char *eb, size_t el)
{
    static const char *const url_opts[] = {"listen-client-urls", "listen-metrics-urls"};
    for (size_t k = 0; k < sizeof url_opts / sizeof url_opts[0]; k++) {
        size_t i = (size_t)opt_index(url_opts[k], strlen(url_opts[k]));
        const cairn_config_urls_t *u = cfield(c, &k_opts[i]);
        for (size_t j = 0; j < u->n; j++) {
            int sc = cairn_url_scheme(u->v[j]);
            const char *sep = strstr(u->v[j], "://");
            if ((sc != CAIRN_URL_UNIX && sc != CAIRN_URL_UNIXS) || !sep)
                continue;
            size_t n = strcspn(sep + 3, "/?#");
            if (n > UNIX_CLIENT_NAME_MAX) {
                char what[300], why[160];
                snprintf(what, sizeof what, " %.200s", u->v[j]);
                snprintf(why, sizeof why, "the unix socket name is %zu bytes, over the limit of %d", n,
                         UNIX_CLIENT_NAME_MAX);
                return refuse_opt(c, i, what, why, eb, el);
            }
        }
    }
    return 0;
}

int cairn_config_finalize(cairn_config_t *c, char *eb, size_t el)
{
    if (eb && el)
        eb[0] = 0;
    if (!c)
        return fail(eb, el, CAIRN_EINVAL, "invalid argument");
    free_derived(c);
    int rc;
    char *s;

    if (!*c->name)
        return fail(eb, el, CAIRN_ECONFIG, "--name must not be empty");
    if (strpbrk(c->name, ",="))
        return fail(eb, el, CAIRN_ECONFIG, "--name \"%s\" must not contain ',' or '='", c->name);
    if (src_of(c, "data-dir") == SRC_DEFAULT) {
        if (asprintf(&s, "%s.etcd", c->name) < 0 || (rc = set_str(&c->data_dir, s)))
            return fail(eb, el, CAIRN_ENOMEM, "out of memory");
    }
    if (!*c->data_dir)
        return fail(eb, el, CAIRN_ECONFIG, "--data-dir must not be empty");
    if (src_of(c, "run-dir") == SRC_DEFAULT) {
        if (asprintf(&s, "%s/run", c->data_dir) < 0 || (rc = set_str(&c->run_dir, s)))
            return fail(eb, el, CAIRN_ENOMEM, "out of memory");
    }
    if (!*c->run_dir)
        return fail(eb, el, CAIRN_ECONFIG, "--run-dir must not be empty");
    if (!valid_ident(c->gateway_id))
        return fail(eb, el, CAIRN_ECONFIG, "--gateway-id \"%s\" may only contain letters, digits, '.', '_' and '-'",
                    c->gateway_id);
    /* ZeroMQ ipc:// endpoints are unix sockets, whose address holds at most 107 bytes; a
     * gateway's endpoint is the longest, with an id of 8 hex digits unless one is given. */
    size_t idlen = strlen(c->gateway_id) > 8 ? strlen(c->gateway_id) : 8;
    size_t longest = strlen(c->run_dir) + strlen("/gatewayd-") + idlen + strlen(".ipc");
    if (longest > CAIRN_CONFIG_IPC_PATH_MAX)
        return fail(eb, el, CAIRN_ECONFIG,
                    "--run-dir \"%s\" is too long: the longest ipc endpoint path \"%s/gatewayd-%s.ipc\" would be "
                    "%zu bytes, over the %d-byte limit of a unix socket path; set a shorter --run-dir "
                    "(it defaults to <data-dir>/run)",
                    c->run_dir, c->run_dir, strlen(c->gateway_id) > 8 ? c->gateway_id : "XXXXXXXX", longest,
                    CAIRN_CONFIG_IPC_PATH_MAX);

    /* etcd's embed.Config.Validate, same words. */
    if (c->heartbeat_ms <= 0)
        return fail(eb, el, CAIRN_ECONFIG, "--heartbeat-interval must be >0 (set to %" PRId64 "ms)", c->heartbeat_ms);
    if (c->election_ms <= 0)
        return fail(eb, el, CAIRN_ECONFIG, "--election-timeout must be >0 (set to %" PRId64 "ms)", c->election_ms);
    if (5 * c->heartbeat_ms > c->election_ms)
        return fail(eb, el, CAIRN_ECONFIG,
                    "--election-timeout[%" PRId64 "ms] should be at least as 5 times as --heartbeat-interval[%" PRId64
                    "ms]",
                    c->election_ms, c->heartbeat_ms);
    if (c->election_ms > 50000)
        return fail(eb, el, CAIRN_ECONFIG,
                    "--election-timeout[%" PRId64 "ms] is too long, and should be set less than 50000ms",
                    c->election_ms);

    if ((rc = check_no_peer_tls(c, eb, el)))
        return rc;
    if ((rc = check_client_unix(c, eb, el)))
        return rc;
    if (c->max_client_connections < -1)
        return refuse_opt(c, (size_t)opt_index("max-client-connections", 22), "",
                          "must be -1 (from the descriptor limit), 0 (unlimited) or a positive number", eb, el);
    /* A request becomes one raft entry: it must fit one IPC frame and one WAL record (64 MiB)
     * with room for the envelope; etcd itself warns above 10 MiB. */
    if (c->max_request_bytes > CAIRN_MAX_REQUEST_BYTES_LIMIT)
        return refuse_opt(c, (size_t)opt_index("max-request-bytes", 17), "",
                          "must be at most 33554432 (32 MiB): a request is one raft entry, sent and stored whole",
                          eb, el);
    /* grpc-go closes a client that pings more often than this (GOAWAY too_many_pings). Cairn
     * never does (etcdctl and other clients must never be cut off for their keepalives), so a
     * value other than etcd's default would be accepted and not honoured: refused instead. */
    if (c->grpc_keepalive_min_time_ms != 5000)
        return refuse_opt(c, (size_t)opt_index("grpc-keepalive-min-time", 23), "",
                          "not supported: Cairn never closes a connection for pinging too often; leave it at 5s",
                          eb, el);

    /* Without --initial-cluster, a one-member cluster of this node (etcd does the same for
     * the default name). */
    if (src_of(c, "initial-cluster") == SRC_DEFAULT) {
        char pre[512];
        snprintf(pre, sizeof pre, "%s=", c->name);
        s = join(c->initial_advertise_peer_urls.v, c->initial_advertise_peer_urls.n, pre, ",");
        if ((rc = set_str(&c->initial_cluster, s)))
            return fail(eb, el, rc, "out of memory");
    }
    if ((rc = parse_members(c, eb, el)) || (rc = check_no_peer_tls_members(c, eb, el)))
        goto fail_derived;
    for (c->self = 0; c->self < c->n_members; c->self++)
        if (!strcmp(c->members[c->self].name, c->name))
            break;
    if (c->self == c->n_members) {
        rc = fail(eb, el, CAIRN_ECONFIG, "couldn't find local name \"%s\" in the initial cluster configuration",
                  c->name);
        goto fail_derived;
    }
    if ((rc = check_self_urls(c, eb, el)))
        goto fail_derived;

    /* IDs: etcd's NewClusterFromURLsMap hashes every member with the token whatever the
     * cluster state, then genID hashes the member IDs. */
    uint64_t *ids = malloc(c->n_members * sizeof *ids);
    if (!ids) {
        rc = CAIRN_ENOMEM;
        goto fail_derived;
    }
    for (size_t m = 0; m < c->n_members; m++) {
        cairn_config_member_t *mb = &c->members[m];
        mb->id = cairn_config_compute_member_id((const char *const *)mb->peer_urls.v, mb->peer_urls.n,
                                                c->initial_cluster_token, NULL);
        ids[m] = mb->id;
        if (mb->id == 0) {
            free(ids);
            rc = fail(eb, el, CAIRN_ENOMEM, "cannot compute the ID of member %s", mb->name);
            goto fail_derived;
        }
        for (size_t k = 0; k < m; k++)
            if (ids[k] == mb->id) {
                free(ids);
                rc = fail(eb, el, CAIRN_ECONFIG, "--initial-cluster: members %s and %s have identical IDs",
                          c->members[k].name, mb->name);
                goto fail_derived;
            }
    }
    c->member_id = c->members[c->self].id;
    c->cluster_id = cairn_config_compute_cluster_id(ids, c->n_members);
    free(ids);

    if ((!*c->cert_file) != (!*c->key_file)) {
        rc = fail(eb, el, CAIRN_ECONFIG, "--cert-file and --key-file must be given together");
        goto fail_derived;
    }
    /* (Their peer twins cannot be reached: check_no_peer_tls refused any peer TLS.) */
    if ((rc = check_tls(&c->listen_client_urls, c->cert_file, c->key_file, c->auto_tls, "client",
                        "--cert-file, --key-file", eb, el)))
        goto fail_derived;

    /* etcd: periodic retention is hours when it is a bare number, else a duration;
     * revision retention is a number of revisions. */
    c->compaction_retention_ms = c->compaction_retention_revs = 0;
    uint64_t n;
    char why[128];
    if (c->auto_compaction_mode == CAIRN_COMPACTION_REVISION) {
        if (!parse_u64(c->auto_compaction_retention, &n) || n > INT64_MAX) {
            rc = fail(eb, el, CAIRN_ECONFIG,
                      "invalid value \"%s\" for --auto-compaction-retention: must be a number of revisions in "
                      "revision mode",
                      c->auto_compaction_retention);
            goto fail_derived;
        }
        c->compaction_retention_revs = (int64_t)n;
    } else if (parse_u64(c->auto_compaction_retention, &n)) {
        if (n > INT64_MAX / 3600000) {
            rc = fail(eb, el, CAIRN_ECONFIG, "invalid value \"%s\" for --auto-compaction-retention: too large",
                      c->auto_compaction_retention);
            goto fail_derived;
        }
        c->compaction_retention_ms = (int64_t)n * 3600000;
    } else if (parse_duration_ms(c->auto_compaction_retention, &c->compaction_retention_ms, why, sizeof why)) {
        rc = fail(eb, el, CAIRN_ECONFIG, "invalid value \"%s\" for --auto-compaction-retention: %s",
                  c->auto_compaction_retention, why);
        goto fail_derived;
    }

    c->quota_bytes = c->quota_backend_bytes == 0  ? (int64_t)2 << 30
                     : c->quota_backend_bytes < 0 ? INT64_MAX
                                                  : c->quota_backend_bytes;

    c->finalized = true;
    return 0;
fail_derived:
    free_derived(c);
    if (rc == CAIRN_ENOMEM && eb && el && !eb[0])
        fail(eb, el, rc, "out of memory");
    return rc;
}


/* ---- endpoints and directories ----------------------------------------------------------- */

int cairn_config_ipc_endpoint(const cairn_config_t *c, const char *service, char *buf, size_t len)
{
    if (!c || !c->finalized || !service || !*service || !valid_ident(service) || !buf)
        return CAIRN_EINVAL;
    size_t path = strlen(c->run_dir) + 1 + strlen(service) + strlen(".ipc");
    if (path > CAIRN_CONFIG_IPC_PATH_MAX)
        return CAIRN_ETOOBIG;
    int n = snprintf(buf, len, "ipc://%s/%s.ipc", c->run_dir, service);
    return n < 0 || (size_t)n >= len ? CAIRN_ETOOBIG : 0;
}

/* mkdir -p: creates each missing component with mode (0700), so a fresh data directory is
 * never readable by others even for a moment. EEXIST is fine: the node's other processes
 * may be creating the same directories right now. */
static int mkdir_p(const char *dir, const char *flag, char *eb, size_t el)
{
    char *p = strdup(dir);
    if (!p)
        return fail(eb, el, CAIRN_ENOMEM, "out of memory");
    int rc = 0;
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q)
            continue;
        char save = *q;
        *q = 0;
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            rc = fail(eb, el, errno == ENOSPC ? CAIRN_ENOSPC : CAIRN_EIO, "cannot create %s directory %s: %s",
                      flag, p, strerror(errno));
            break;
        }
        *q = save;
        if (!save)
            break;
    }
    struct stat st;
    if (!rc && stat(dir, &st) < 0)
        rc = fail(eb, el, CAIRN_EIO, "cannot create %s directory %s: %s", flag, dir, strerror(errno));
    else if (!rc && !S_ISDIR(st.st_mode))
        rc = fail(eb, el, CAIRN_ECONFIG, "%s %s exists and is not a directory", flag, dir);
    free(p);
    return rc;
}

int cairn_config_ensure_dirs(const cairn_config_t *c, char *eb, size_t el)
{
    if (!c || !c->finalized)
        return fail(eb, el, CAIRN_EINVAL, "configuration not finalized");
    int rc = mkdir_p(c->data_dir, "--data-dir", eb, el);
    if (!rc && *c->wal_dir)
        rc = mkdir_p(c->wal_dir, "--wal-dir", eb, el);
    if (!rc)
        rc = mkdir_p(c->run_dir, "--run-dir", eb, el);
    return rc;
}

/* ---- usage and print ------------------------------------------------------------------------- */

void cairn_config_usage(FILE *out)
{
    fprintf(out, "Usage:\n\n  raftd|stored|gatewayd [flags]\n    Start one process of a Cairn node; the node's three "
                 "processes take the same flags.\n\n"
                 "  Every flag can also be set as an environment variable CAIRN_<FLAG> (upper case, '-' -> '_',\n"
                 "  e.g. CAIRN_DATA_DIR) or etcd's ETCD_<FLAG> (an etcd environment file works as it is; an\n"
                 "  ETCD_ variable for a setting Cairn lacks is refused), or as a key of the YAML --config-file.\n"
                 "  Precedence, highest first: flags, environment, config file, defaults.\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &k_opts[i];
        if (o->group)
            fprintf(out, "\n%s:\n", o->group);
        fprintf(out, "  --%s '%s'\n    %s\n", o->name, o->def ? o->def : o->shown, o->help);
    }
    fprintf(out, "\n  -h, --help\n    Show this help.\n  --version\n    Show the version.\n");
}

/* YAML single-quoted: only the quote itself needs escaping (by doubling it). */
static void print_quoted(FILE *out, const char *s)
{
    fputc('\'', out);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', out);
        fputc(*s, out);
    }
    fputc('\'', out);
}

void cairn_config_print(const cairn_config_t *c, FILE *out)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", "fatal"};
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &k_opts[i];
        const void *f = cfield(c, o);
        if (o->kind == K_FIXED || o->kind == K_CONFIG_FILE)
            continue;
        fprintf(out, "%s: ", o->name);
        switch (o->kind) {
        case K_STR: print_quoted(out, *(char *const *)f); break;
        case K_URLS: {
            const cairn_config_urls_t *u = f;
            char *s = join(u->v, u->n, "", ",");
            print_quoted(out, s ? s : "");
            free(s);
            break;
        }
        case K_U64: fprintf(out, "%" PRIu64, *(const uint64_t *)f); break;
        case K_I64:
        case K_MS: fprintf(out, "%" PRId64, *(const int64_t *)f); break;
        case K_DUR: fprintf(out, "'%" PRId64 "ms'", *(const int64_t *)f); break;
        case K_BOOL: fputs(*(const bool *)f ? "true" : "false", out); break;
        case K_ENUM: fprintf(out, "'%s'", o->choices[*(const int *)f]); break;
        case K_LOGLEVEL: {
            int lv = *(const int *)f;
            fputs(lv >= 0 && lv < 5 ? levels[lv] : "info", out);
            break;
        }
        default: break;
        }
        fputc('\n', out);
    }
}
