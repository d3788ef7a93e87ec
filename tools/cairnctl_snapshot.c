/* cairnctl_snapshot.c - `cairnctl snapshot status|restore`, as etcdctl 3.4 has them.
 *
 *   cairnctl snapshot status FILE [-w simple|json|table]
 *       What `etcdctl snapshot status` prints: hash, revision, total keys, total size.
 *   cairnctl snapshot restore FILE [--name N] [--data-dir D] [--initial-cluster C]
 *       [--initial-cluster-token T] [--initial-advertise-peer-urls U] [--skip-hash-check]
 *       Builds a new member's data directory from a snapshot - one saved from Cairn or from
 *       etcd 3.4 by `etcdctl snapshot save` (an etcd backend file with its SHA-256 after it)
 *       or etcd's own member/snap/db (no hash: needs --skip-hash-check). Every key with its
 *       revisions, the leases and the alarms come from the file; the membership is the new
 *       cluster's, from the flags (as etcdctl does, which drops the file's members). The member
 *       then starts with the same --name/--initial-cluster/--initial-cluster-token flags.
 *
 * The data directory a restore makes is the one a member has after installing a raft snapshot
 * (services/stored/replay.c): member/mvcc at applied index = the number of members and term 1
 * (etcdctl's choice: the members' configuration entries would be entries 1..n), and a WAL whose
 * only records are that snapshot mark and a hard state committing it. Every member of the new
 * cluster restores the same file, so all start from the same state at the same index.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn_config.h"
#include "cairn_err.h"
#include "cairn_member.h"
#include "mvcc_etcd.h"
#include "snapshot.h"
#include "wal.h"

#define SHA_LEN 32

int cairnctl_snapshot(int argc, char **argv);

static void snap_usage(FILE *f)
{
    fprintf(f, "usage: cairnctl snapshot status FILE [-w simple|json|table]\n"
               "       cairnctl snapshot restore FILE [--name NAME] [--data-dir DIR] [--initial-cluster C]\n"
               "                 [--initial-cluster-token T] [--initial-advertise-peer-urls URLS] "
               "[--skip-hash-check]\n");
}

/* go-humanize's Bytes, which etcdctl prints sizes with: SI units, one decimal below 10. */
static void human_bytes(uint64_t s, char *out, size_t len)
{
    static const char *sizes[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    if (s < 10) {
        snprintf(out, len, "%" PRIu64 " B", s);
        return;
    }
    int e = (int)floor(log((double)s) / log(1000.0));
    if (e > 6)
        e = 6;
    double val = floor((double)s / pow(1000.0, e) * 10 + 0.5) / 10;
    snprintf(out, len, val < 10 ? "%.1f %s" : "%.0f %s", val, sizes[e]);
}

/* The database's bytes in the file: without the SHA-256 a snapshot stream appends (etcd's
 * rule: a size with 32 bytes over a multiple of 512 has one). */
static int file_size(const char *path, uint64_t *size, int *has_hash)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "Error: stat %s: %s\n", path, strerror(errno));
        return -1;
    }
    *size = (uint64_t)st.st_size;
    *has_hash = (*size % 512) == SHA_LEN;
    return 0;
}

static int cmd_status(int argc, char **argv)
{
    const char *path = NULL, *fmt = "simple";
    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "-w") == 0 || strcmp(argv[i], "--write-out") == 0) && i + 1 < argc)
            fmt = argv[++i];
        else if (strncmp(argv[i], "--write-out=", 12) == 0)
            fmt = argv[i] + 12;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "Error: unknown flag: %s\n", argv[i]);
            return 2;
        } else if (!path)
            path = argv[i];
        else {
            fprintf(stderr, "Error: snapshot status requires exactly one argument\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "Error: snapshot status requires exactly one argument\n");
        return 2;
    }
    if (strcmp(fmt, "simple") && strcmp(fmt, "json") && strcmp(fmt, "table")) {
        fprintf(stderr, "Error: unsupported output format %s (simple, json or table)\n", fmt);
        return 2;
    }
    uint64_t size;
    int has_hash;
    if (file_size(path, &size, &has_hash))
        return 1;
    /* etcdctl opens the whole file with bbolt, which reads the pages the meta names: the
     * hash after them does not matter */
    cairn_etcd_status_t st;
    char err[512];
    int rc = cairn_etcd_db_status(path, has_hash ? size - SHA_LEN : 0, &st, err, sizeof err);
    if (rc) {
        fprintf(stderr, "Error: %s\n", err[0] ? err : cairn_strerror(rc));
        return 1;
    }
    char hs[32];
    human_bytes(st.total_size, hs, sizeof hs);
    if (strcmp(fmt, "json") == 0) {
        printf("{\"hash\":%" PRIu32 ",\"revision\":%" PRId64 ",\"totalKey\":%" PRIu64 ",\"totalSize\":%" PRIu64 "}\n",
               st.hash, st.revision, st.total_keys, st.total_size);
    } else if (strcmp(fmt, "table") == 0) {
        char c[4][32];
        snprintf(c[0], sizeof c[0], "%x", st.hash);
        snprintf(c[1], sizeof c[1], "%" PRId64, st.revision);
        snprintf(c[2], sizeof c[2], "%" PRIu64, st.total_keys);
        snprintf(c[3], sizeof c[3], "%s", hs);
        const char *h[4] = {"HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"};
        int w[4];
        for (int i = 0; i < 4; i++) {
            int a = (int)strlen(h[i]), b = (int)strlen(c[i]);
            w[i] = a > b ? a : b;
        }
        /* etcdctl's tablewriter: headers centred, numbers right-aligned, text left */
        for (int row = 0; row < 5; row++) {
            if (row == 0 || row == 2 || row == 4) {
                for (int i = 0; i < 4; i++) {
                    printf("+");
                    for (int k = 0; k < w[i] + 2; k++)
                        putchar('-');
                }
                printf("+\n");
            } else if (row == 1) {
                for (int i = 0; i < 4; i++) {
                    int n = (int)strlen(h[i]), pad = w[i] - n, l = pad / 2;
                    printf("| %*s%s%*s ", l, "", h[i], pad - l, "");
                }
                printf("|\n");
            } else {
                for (int i = 0; i < 4; i++)
                    printf(i == 0 ? "| %-*s " : "| %*s ", w[i], c[i]);
                printf("|\n");
            }
        }
    } else {
        printf("%x, %" PRId64 ", %" PRIu64 ", %s\n", st.hash, st.revision, st.total_keys, hs);
    }
    return 0;
}

static int sha_check(const char *path, uint64_t db_bytes)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "Error: open %s: %s\n", path, strerror(errno));
        return -1;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    static uint8_t buf[1 << 20];
    uint64_t left = db_bytes;
    int rc = 0;
    while (left) {
        size_t n = fread(buf, 1, left < sizeof buf ? (size_t)left : sizeof buf, f);
        if (n == 0) {
            rc = -1;
            break;
        }
        EVP_DigestUpdate(ctx, buf, n);
        left -= n;
    }
    uint8_t want[SHA_LEN], got[SHA_LEN];
    unsigned glen = 0;
    EVP_DigestFinal_ex(ctx, got, &glen);
    EVP_MD_CTX_free(ctx);
    if (rc == 0 && fread(want, 1, SHA_LEN, f) != SHA_LEN)
        rc = -1;
    int ioerr = ferror(f), e = errno;
    fclose(f);
    if (rc) {
        fprintf(stderr, "Error: reading %s: %s\n", path, ioerr ? strerror(e) : "unexpected end of file");
        return -1;
    }
    if (memcmp(want, got, SHA_LEN) != 0) {
        /* etcdctl's words (it prints both hashes as Go byte slices) */
        fprintf(stderr, "Error: expected sha256 [");
        for (int i = 0; i < SHA_LEN; i++)
            fprintf(stderr, i ? " %u" : "%u", want[i]);
        fprintf(stderr, "], got [");
        for (int i = 0; i < SHA_LEN; i++)
            fprintf(stderr, i ? " %u" : "%u", got[i]);
        fprintf(stderr, "]\n");
        return -1;
    }
    return 0;
}

static int cmd_restore(int argc, char **argv)
{
    const char *path = NULL;
    int skip_hash = 0;
    cairn_config_t *cfg = cairn_config_new();
    if (!cfg)
        return 1;
    char err[1024];
    int rc = 0;
    static const char *const flags[] = {"name", "data-dir", "initial-cluster", "initial-cluster-token",
                                        "initial-advertise-peer-urls"};
    int data_dir_set = 0;
    for (int i = 0; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--skip-hash-check") == 0 || strcmp(a, "--skip-hash-check=true") == 0) {
            skip_hash = 1;
            continue;
        }
        if (strcmp(a, "--skip-hash-check=false") == 0)
            continue;
        if (a[0] != '-') {
            if (path) {
                fprintf(stderr, "Error: snapshot restore requires exactly one argument\n");
                rc = 2;
            }
            path = a;
            continue;
        }
        const char *name = a + (a[1] == '-' ? 2 : 1);
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        int known = 0;
        for (size_t f = 0; f < sizeof flags / sizeof *flags; f++)
            if (strlen(flags[f]) == nl && strncmp(name, flags[f], nl) == 0)
                known = 1;
        if (!known) {
            fprintf(stderr, "Error: unknown flag: %s\n", a);
            rc = 2;
            break;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        char fl[64];
        snprintf(fl, sizeof fl, "%.*s", (int)nl, name);
        if (!val) {
            fprintf(stderr, "Error: flag needs an argument: --%s\n", fl);
            rc = 2;
        } else if (cairn_config_set(cfg, fl, val, err, sizeof err) != 0) {
            fprintf(stderr, "Error: %s\n", err);
            rc = 2;
        }
        if (strcmp(fl, "data-dir") == 0)
            data_dir_set = 1;
    }
    if (rc == 0 && !path) {
        fprintf(stderr, "Error: snapshot restore requires exactly one argument\n");
        rc = 2;
    }
    if (rc == 0 && !data_dir_set) {
        /* etcdctl's default: <name>.etcd */
        char dd[4096];
        snprintf(dd, sizeof dd, "%s.etcd", cfg->name ? cfg->name : "default");
        if (cairn_config_set(cfg, "data-dir", dd, err, sizeof err) != 0) {
            fprintf(stderr, "Error: %s\n", err);
            rc = 2;
        }
    }
    if (rc == 0 && cairn_config_finalize(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "Error: %s\n", err);
        rc = 2;
    }
    if (rc) {
        cairn_config_destroy(&cfg);
        return rc;
    }
    const char *dd = cfg->data_dir;
    struct stat sb;
    uint64_t size;
    int has_hash;
    if (stat(dd, &sb) == 0) {
        fprintf(stderr, "Error: data-dir %s exists\n", dd);
        rc = 1;
    } else if (file_size(path, &size, &has_hash)) {
        rc = 1;
    } else if (!has_hash && !skip_hash) {
        fprintf(stderr, "Error: snapshot missing hash but --skip-hash-check=false\n");
        rc = 1;
    } else if (has_hash && !skip_hash && sha_check(path, size - SHA_LEN) != 0) {
        rc = 1;
    }
    cairn_members_t ms = {0};
    uint8_t *blob = NULL;
    size_t blen = 0;
    if (rc == 0 && (cairn_members_initial(&ms, cfg) != 0 || cairn_members_encode(&ms, &blob, &blen) != 0)) {
        fprintf(stderr, "Error: out of memory\n");
        rc = 1;
    }
    uint64_t index = ms.n, term = 1;
    char member[4096], mvcc[4160], wal[4160];
    snprintf(member, sizeof member, "%s/member", dd);
    snprintf(mvcc, sizeof mvcc, "%s/mvcc", member);
    if (cfg->wal_dir && *cfg->wal_dir)
        snprintf(wal, sizeof wal, "%s", cfg->wal_dir);
    else
        snprintf(wal, sizeof wal, "%s/wal", member);
    int created = 0;
    if (rc == 0) {
        printf("restoring snapshot path=%s data-dir=%s name=%s\n", path, dd, cfg->name);
        created = mkdir(dd, 0700) == 0;
        if (!created || mkdir(member, 0700) != 0) {
            fprintf(stderr, "Error: mkdir %s: %s\n", member, strerror(errno));
            rc = 1;
        }
    }
    cairn_mvcc_point_t pt = {0};
    if (rc == 0 && cairn_mvcc_etcd_import(path, has_hash ? size - SHA_LEN : 0, mvcc, index, term, blob, blen, &pt,
                                          err, sizeof err) != 0) {
        fprintf(stderr, "Error: %s\n", err);
        rc = 1;
    }
    if (rc == 0) {
        int wrc = 0;
        cairn_wal_t *w = cairn_wal_open(wal, NULL, NULL, &wrc, err, sizeof err);
        cairn_wal_hardstate_t hs = {.term = term, .vote = 0, .commit = index};
        if (!w || (wrc = cairn_wal_append_snapshot(w, index, term)) != 0 ||
            (wrc = cairn_wal_append_hardstate(w, &hs)) != 0 || (wrc = cairn_wal_sync(w)) != 0) {
            fprintf(stderr, "Error: writing the WAL in %s: %s\n", wal, w ? cairn_strerror(wrc) : err);
            rc = 1;
        }
        cairn_wal_destroy(&w);
    }
    if (rc == 0) {
        printf("restored snapshot path=%s data-dir=%s revision=%" PRId64 " compact-revision=%" PRId64
               " members=%zu cluster-id=%016" PRIx64 "\n",
               path, dd, pt.revision, pt.compact_rev, ms.n, ms.cluster_id);
    } else if (created) {
        cairn_snap_rmtree(dd); /* a half-built data dir must not look like a member */
    }
    free(blob);
    cairn_members_clear(&ms);
    cairn_config_destroy(&cfg);
    return rc;
}

int cairnctl_snapshot(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
        snap_usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    if (strcmp(argv[0], "status") == 0)
        return cmd_status(argc - 1, argv + 1);
    if (strcmp(argv[0], "restore") == 0)
        return cmd_restore(argc - 1, argv + 1);
    if (strcmp(argv[0], "save") == 0) {
        fprintf(stderr, "Error: cairnctl has no client: save a snapshot with `etcdctl snapshot save FILE` "
                        "against a Cairn endpoint\n");
        return 2;
    }
    fprintf(stderr, "Error: unknown snapshot command \"%s\"\n", argv[0]);
    snap_usage(stderr);
    return 2;
}
