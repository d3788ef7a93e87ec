/* fuzz_snap.c - libFuzzer target: the snapshot readers.
 *
 * A member installs snapshots it receives from its leader (Cairn's own format,
 * services/stored/snapshot.c) and `cairnctl snapshot status/restore` reads etcd backend files
 * (bbolt, shared/cairn_bbolt.c, with etcd's buckets: services/stored/mvcc_etcd.c) that may come
 * from anywhere. Byte 0 of the input picks the reader, the rest is the file:
 *   0 mod 3: cairn_snap_read (Cairn's format), and cairn_snap_restore when it reads;
 *   1 mod 3: cairn_bbolt_open + every bucket walked (cairn_bbolt_buckets/foreach) and
 *            cairn_etcd_db_status;
 *   2 mod 3: cairn_mvcc_etcd_import into a new store (LevelDB) in a temp dir.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_bbolt.h"
#include "cairn_log.h"
#include "mvcc_etcd.h"
#include "snapshot.h"
#include "fuzz_common.h"

static char g_dir[256], g_file[300], g_store[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cairn_log_set_level(CAIRN_LOG_FATAL);
    cairn_fuzz_tmpdir("snap", g_dir, sizeof g_dir);
    snprintf(g_file, sizeof g_file, "%s/in.db", g_dir);
    snprintf(g_store, sizeof g_store, "%s/store", g_dir);
    return 0;
}

static int on_record(void *arg, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl)
{
    /* touch every byte: the reader promised they are inside the file */
    volatile uint8_t s = 0;
    for (size_t i = 0; i < kl; i++)
        s ^= k[i];
    for (size_t i = 0; i < vl; i++)
        s ^= v[i];
    (void)s;
    (*(uint64_t *)arg)++;
    return 0;
}

typedef struct {
    cairn_bbolt_t *db;
    uint64_t n;
} walk_t;

static int on_bucket(void *arg, const uint8_t *name, size_t nl, const uint8_t *v, size_t vl)
{
    (void)v, (void)vl;
    walk_t *w = arg;
    (void)cairn_bbolt_foreach(w->db, name, nl, on_record, &w->n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (4u << 20))
        return 0;
    int fd = open(g_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        abort();
    if (size > 1 && write(fd, data + 1, size - 1) != (ssize_t)(size - 1))
        abort();
    close(fd);
    char err[512];
    switch (data[0] % 3) {
    case 0: {
        cairn_snap_info_t info;
        uint64_t n = 0;
        if (cairn_snap_read(g_file, &info, on_record, &n, err, sizeof err) == 0) {
            cairn_snap_rmtree(g_store);
            (void)cairn_snap_restore(g_file, g_store, &info, err, sizeof err);
            cairn_snap_rmtree(g_store);
        }
        break;
    }
    case 1: {
        int e = 0;
        cairn_bbolt_t *db = cairn_bbolt_open(g_file, 0, &e, err, sizeof err);
        if (db) {
            (void)cairn_bbolt_page_size(db);
            (void)cairn_bbolt_size(db);
            walk_t w = {db, 0};
            (void)cairn_bbolt_buckets(db, on_bucket, &w);
            cairn_bbolt_close(&db);
        }
        cairn_etcd_status_t st;
        (void)cairn_etcd_db_status(g_file, 0, &st, err, sizeof err);
        break;
    }
    default: {
        cairn_snap_rmtree(g_store);
        cairn_mvcc_point_t pt;
        (void)cairn_mvcc_etcd_import(g_file, 0, g_store, 10, 2, NULL, 0, &pt, err, sizeof err);
        cairn_snap_rmtree(g_store);
        break;
    }
    }
    return 0;
}
