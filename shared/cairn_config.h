/* cairn_config.h - one node's configuration, read by raftd, stored and gatewayd alike.
 *
 * The three processes of a node must agree on every value (the run directory their ipc://
 * sockets live in, this member's ID, the cluster ID, ...), so they all build it the same
 * way from the same sources, in increasing precedence:
 *
 *   defaults  <  config file  <  CAIRN_* environment  <  command-line flags
 *
 * - Flags use etcd's names and forms: `--name n1`, `--name=n1`, `-name n1`; a boolean is
 *   `--client-cert-auth` or `--client-cert-auth=false` (never `--client-cert-auth false`,
 *   as with Go's flag package).
 * - The environment variable of a flag is CAIRN_ + the flag upper-cased with '-' -> '_'
 *   (CAIRN_DATA_DIR, CAIRN_LISTEN_CLIENT_URLS), like etcd's ETCD_*.
 * - The config file (`--config-file path` or CAIRN_CONFIG_FILE) is the subset of YAML that
 *   etcd's own config files use (cairn_yaml.h reads it): `key: value` lines with the flag
 *   names as keys, comments, '...'/"..." quoting, booleans, numbers, and etcd's two nested blocks
 *   `client-transport-security:` / `peer-transport-security:` (cert-file, key-file,
 *   trusted-ca-file, client-cert-auth, auto-tls). Unlike etcd, a config file does not
 *   disable flags and environment: it is only one more layer.
 * - Peer TLS is not supported yet (raft traffic between members is plaintext), and asking
 *   for it is an error, not a silent downgrade: load refuses any --peer-* TLS option that is
 *   not empty or false (flag, CAIRN_* variable or peer-transport-security key), etcd's other
 *   peer TLS flags (--peer-crl-file, --peer-cert-allowed-cn, ...), and any https:// or
 *   unixs:// URL in --listen-peer-urls, --initial-advertise-peer-urls or --initial-cluster,
 *   with "--<flag>[ <url>][ (set by ...)]: peer TLS is not supported yet; ...".
 *
 * Usage (every daemon):
 *
 *   cairn_config_t *cfg = cairn_config_new();
 *   char err[512];
 *   int rc = cairn_config_load(cfg, argc, argv, err, sizeof err);
 *   if (rc == CAIRN_CONFIG_HELP) { cairn_config_usage(stdout); exit(0); }
 *   if (rc < 0) { fprintf(stderr, "raftd: %s\n", err); exit(2); }
 *   ... cfg->heartbeat_ms, cairn_config_member_id(cfg), cairn_config_ipc_endpoint(...) ...
 *   cairn_config_destroy(&cfg);
 *
 * After a successful load every field below is valid, including the derived ones.
 */
#ifndef CAIRN_CONFIG_H
#define CAIRN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Positive results of cairn_config_load: not errors, the caller acts on them. */
#define CAIRN_CONFIG_HELP 1    /* -h / --help given: print cairn_config_usage() and exit */
#define CAIRN_CONFIG_VERSION 2 /* --version given: print the version and exit */

/* Longest path a unix socket address can hold (sizeof sun_path - 1 on Linux). */
#define CAIRN_CONFIG_IPC_PATH_MAX 107

/* A list of URLs, each validated and normalised by cairn_url.h (scheme lower-cased, spaces
 * trimmed). */
typedef struct {
    char **v;
    size_t n;
} cairn_config_urls_t;

/* One member of --initial-cluster. A name may appear several times there; its URLs are
 * gathered here, sorted ascending (the order etcd hashes them in). */
typedef struct {
    char *name;
    cairn_config_urls_t peer_urls;
    uint64_t id; /* etcd's member ID, see cairn_config_compute_member_id */
} cairn_config_member_t;

typedef enum { CAIRN_CLUSTER_NEW = 0, CAIRN_CLUSTER_EXISTING } cairn_cluster_state_t;
typedef enum { CAIRN_COMPACTION_PERIODIC = 0, CAIRN_COMPACTION_REVISION } cairn_compaction_mode_t;
typedef enum { CAIRN_METRICS_BASIC = 0, CAIRN_METRICS_EXTENSIVE } cairn_metrics_t;

typedef struct cairn_config_priv_t cairn_config_priv_t;

/* Public for reading. Change values only through cairn_config_load/cairn_config_set (then
 * cairn_config_finalize), which keep the derived fields consistent. */
typedef struct {
    /* ---- member ---- */
    char *name;                 /* --name, "default" */
    char *data_dir;             /* --data-dir, "<name>.etcd" */
    char *wal_dir;              /* --wal-dir, "" = <data-dir> */
    uint64_t snapshot_count;    /* --snapshot-count, 100000 */
    uint64_t raft_log_memory_bytes; /* --raft-log-memory-bytes, 64 MiB: the applied log held in memory */
    int64_t heartbeat_ms;       /* --heartbeat-interval, 100; also raftd's tick */
    int64_t election_ms;        /* --election-timeout, 1000 */
    cairn_config_urls_t listen_peer_urls;   /* --listen-peer-urls */
    cairn_config_urls_t listen_client_urls; /* --listen-client-urls */
    int64_t quota_backend_bytes;            /* --quota-backend-bytes as given (0 = default) */
    uint64_t max_txn_ops;                   /* --max-txn-ops, 128 */
    uint64_t max_request_bytes;             /* --max-request-bytes, 1572864; at most 32 MiB */
#define CAIRN_MAX_REQUEST_BYTES_LIMIT ((uint64_t)32 << 20)
    int64_t grpc_keepalive_min_time_ms;     /* --grpc-keepalive-min-time, 5s */
    int64_t grpc_keepalive_interval_ms;     /* --grpc-keepalive-interval, 2h (0 = off) */
    int64_t grpc_keepalive_timeout_ms;      /* --grpc-keepalive-timeout, 20s (0 = off) */
    int64_t watch_progress_notify_ms;       /* --experimental-watch-progress-notify-interval, 10m */
    bool initial_corrupt_check;             /* --experimental-initial-corrupt-check, false: raftd
                                               compares its HashKV with the peers' before it starts */
    int64_t corrupt_check_ms;               /* --experimental-corrupt-check-time, 0 (off): how often
                                               the leader's raftd compares the members' HashKV */

    /* ---- clustering ---- */
    cairn_config_urls_t initial_advertise_peer_urls; /* --initial-advertise-peer-urls */
    char *initial_cluster;                           /* --initial-cluster, as text */
    cairn_cluster_state_t initial_cluster_state;     /* --initial-cluster-state */
    char *initial_cluster_token;                     /* --initial-cluster-token */
    cairn_config_urls_t advertise_client_urls;       /* --advertise-client-urls */
    cairn_compaction_mode_t auto_compaction_mode;    /* --auto-compaction-mode */
    char *auto_compaction_retention;                 /* --auto-compaction-retention, text */

    /* ---- security ---- */
    char *cert_file, *key_file, *trusted_ca_file;
    bool client_cert_auth, auto_tls;
    char *peer_cert_file, *peer_key_file, *peer_trusted_ca_file; /* always "" after load: */
    bool peer_client_cert_auth, peer_auto_tls;                     /* always false (refused) */

    /* ---- logging and monitoring ---- */
    int log_level;                          /* --log-level as a cairn_log_level_t */
    cairn_metrics_t metrics;                /* --metrics */
    cairn_config_urls_t listen_metrics_urls; /* --listen-metrics-urls, may be empty */

    /* ---- Cairn's own ---- */
    char *run_dir;     /* --run-dir, "<data-dir>/run": the node's ipc:// endpoints */
    char *gateway_id;  /* --gateway-id, "" = the gateway derives one from its pid */
    uint64_t max_watchers; /* --max-watchers, per gatewayd */
    int64_t max_client_connections;   /* --max-client-connections, per gatewayd: 0 none, -1 from RLIMIT_NOFILE */
    int64_t client_header_timeout_ms; /* --client-header-timeout: request head / preface deadline, 0 none */
    char *config_file; /* the file that was read, "" if none */

    /* ---- derived by cairn_config_finalize ---- */
    cairn_config_member_t *members; /* --initial-cluster parsed, in order of first mention */
    size_t n_members;
    size_t self;                    /* index of this node (--name) in members */
    uint64_t member_id;             /* members[self].id */
    uint64_t cluster_id;            /* etcd's cluster ID over all members */
    int64_t quota_bytes;            /* effective quota: 2 GiB for 0, INT64_MAX (none) if < 0 */
    int64_t compaction_retention_ms;   /* periodic mode: retention as a duration (0 = off) */
    int64_t compaction_retention_revs; /* revision mode: revisions to keep (0 = off) */
    bool finalized;

    cairn_config_priv_t *priv_;
} cairn_config_t;

/* A configuration holding the defaults. NULL when out of memory. */
cairn_config_t *cairn_config_new(void);
/* Frees *self_p and sets it to NULL; does nothing when either is NULL. */
void cairn_config_destroy(cairn_config_t **self_p);

/* Reads config file, environment and argv (argv[0] is the program name and is skipped)
 * into a new config, then finalizes it. Call once per config. Returns 0, CAIRN_CONFIG_HELP,
 * CAIRN_CONFIG_VERSION, CAIRN_ECONFIG (errbuf says what and where: "unknown flag: --x",
 * "invalid value "x" for flag --heartbeat-interval: ...", "config file f line 3: ..."),
 * CAIRN_ENOMEM or CAIRN_EINVAL. errbuf may be NULL. */
int cairn_config_load(cairn_config_t *self, int argc, char *const argv[], char *errbuf, size_t errlen);

/* Sets one option by its flag name (no dashes) as if given on the command line; for
 * tools and tests. Call cairn_config_finalize afterwards. Same error codes as load. */
int cairn_config_set(cairn_config_t *self, const char *flag, const char *value, char *errbuf, size_t errlen);

/* Fills the derived defaults (data-dir, initial-cluster, run-dir), cross-checks the options
 * and computes members and IDs. load calls it; call it again after cairn_config_set. */
int cairn_config_finalize(cairn_config_t *self, char *errbuf, size_t errlen);

/* Prints every flag with its default and meaning (the --help text). */
void cairn_config_usage(FILE *out);

/* Prints the effective configuration as a config file that load reads back the same. */
void cairn_config_print(const cairn_config_t *self, FILE *out);

/* "ipc://<run-dir>/<service>.ipc" into buf. service is "raftd", "stored", "events",
 * "gatewayd-<id>", ... ([A-Za-z0-9._-]+). CAIRN_EINVAL for a bad name or unfinalized
 * config, CAIRN_ETOOBIG when the path exceeds CAIRN_CONFIG_IPC_PATH_MAX or buf is short. */
int cairn_config_ipc_endpoint(const cairn_config_t *self, const char *service, char *buf, size_t len);

/* This member's ID and the cluster ID (0 before a successful finalize). For
 * --initial-cluster-state=existing these are only what a new cluster with the same
 * members would get: the live cluster's IDs (a member added at runtime hashes the time
 * too) come from the cluster itself. */
/* What every refused peer TLS setting says after naming itself (also raftd's answer to a
 * MemberAdd/MemberUpdate with https:// peer URLs). */
#define CAIRN_PEER_TLS_REFUSED                                                                            \
    "peer TLS is not supported yet; raft traffic between members is plaintext. Use http:// peer URLs on a " \
    "trusted network"

uint64_t cairn_config_member_id(const cairn_config_t *self);

/* How much of the applied raft log raftd and stored each keep in memory for members that lag
 * (etcd keeps SnapshotCatchUpEntries = 5000 behind its snapshot): at most this many entries
 * (5000, or --snapshot-count if lower) and at most --raft-log-memory-bytes of entry data. A
 * member further behind is sent a snapshot. */
#define CAIRN_LOG_KEEP_ENTRIES_MAX 5000
static inline uint64_t cairn_config_log_keep_entries(const cairn_config_t *self)
{
    uint64_t sc = self->snapshot_count ? self->snapshot_count : 100000;
    return sc < CAIRN_LOG_KEEP_ENTRIES_MAX ? sc : CAIRN_LOG_KEEP_ENTRIES_MAX;
}
uint64_t cairn_config_cluster_id(const cairn_config_t *self);

/* etcd 3.4's member ID (membership.NewMember): the first 8 bytes, big-endian, of
 * SHA-1(peer URLs sorted ascending and concatenated || token [|| decimal unix_time]).
 * unix_time is NULL for bootstrap members; `member add` passes the current time. */
uint64_t cairn_config_compute_member_id(const char *const *peer_urls, size_t n, const char *token,
                                        const int64_t *unix_time);
/* etcd 3.4's cluster ID (RaftCluster.genID): the first 8 bytes, big-endian, of SHA-1 over
 * the member IDs sorted ascending, each as 8 big-endian bytes. */
uint64_t cairn_config_compute_cluster_id(const uint64_t *member_ids, size_t n);

/* mkdir -p of data-dir, wal-dir (if set) and run-dir, creating with mode 0700 as etcd
 * does (the data is private; so are the sockets). Safe to race with the node's other
 * processes. 0, CAIRN_ECONFIG (path exists but is not a directory) or CAIRN_EIO. */
int cairn_config_ensure_dirs(const cairn_config_t *self, char *errbuf, size_t errlen);

#endif
