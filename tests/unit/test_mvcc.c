/* Unit tests for cairn_mvcc: revisions, history, tombstones, compaction, persistence, batch
 * atomicity, views, leases, hash. The LevelDB underneath is inspected directly where the
 * test is about what is (not) on disk. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <ftw.h>
#include <leveldb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tmpdir.h"
#include "cairn_err.h"
#include "cairn_bytes.h"
#include "cairn_crc32c.h"
#include "mvcc.h"
#include "mvcc_ldblog.h"

CAIRN_TEST_DIR_FIXTURE("mvcc")

static cairn_mvcc_t *open_store(void)
{
    int err = 0;
    char eb[256];
    char path[300];
    snprintf(path, sizeof path, "%s/mvcc", g_dir);
    cairn_mvcc_t *m = cairn_mvcc_open(path, &err, eb, sizeof eb);
    cr_assert_not_null(m, "open: %d %s", err, eb);
    return m;
}

TestSuite(mvcc, .init = mkdir_tmp, .fini = rm_tmp);

/* ---- helpers ---- */

static int64_t put(cairn_mvcc_t *m, const char *k, const char *v, int64_t lease)
{
    cairn_kv_t prev;
    void *owned = NULL;
    int own = !cairn_mvcc_in_batch(m);
    if (own)
        cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    int found = cairn_mvcc_get(m, CAIRN_MVCC_PENDING, k, strlen(k), 0, &prev, &owned);
    cr_assert_geq(found, 0);
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    cr_assert_eq(cairn_mvcc_put(m, k, strlen(k), v, strlen(v), lease, found ? &prev : NULL), 0);
    int64_t rev = cairn_mvcc_txn_end(m);
    free(owned);
    if (own)
        cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    return rev;
}

static int del(cairn_mvcc_t *m, const char *k)
{
    cairn_kv_t prev;
    void *owned = NULL;
    int own = !cairn_mvcc_in_batch(m);
    if (own)
        cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    int found = cairn_mvcc_get(m, CAIRN_MVCC_PENDING, k, strlen(k), 0, &prev, &owned);
    cr_assert_geq(found, 0);
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    if (found)
        cr_assert_eq(cairn_mvcc_delete(m, &prev), 0);
    cairn_mvcc_txn_end(m);
    free(owned);
    if (own)
        cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    return found;
}

typedef struct {
    int64_t create, mod, version, lease;
    char value[64];
    int found;
} got_t;

static got_t get_at(cairn_mvcc_t *m, int view, const char *k, int64_t rev, int *rc_out)
{
    got_t g = {0};
    cairn_kv_t kv;
    void *owned = NULL;
    int rc = cairn_mvcc_get(m, view, k, strlen(k), rev, &kv, &owned);
    if (rc_out)
        *rc_out = rc;
    else
        cr_assert_geq(rc, 0, "get %s@%lld: %s", k, (long long)rev, cairn_strerror(rc));
    if (rc == 1) {
        g.found = 1;
        g.create = kv.create_revision;
        g.mod = kv.mod_revision;
        g.version = kv.version;
        g.lease = kv.lease;
        cr_assert_lt(kv.value_len, sizeof g.value);
        memcpy(g.value, kv.value, kv.value_len);
        cr_assert_eq(kv.key_len, strlen(k));
        cr_assert(memcmp(kv.key, k, kv.key_len) == 0);
    }
    free(owned);
    return g;
}

static got_t get(cairn_mvcc_t *m, const char *k, int64_t rev) { return get_at(m, CAIRN_MVCC_COMMITTED, k, rev, NULL); }

typedef struct {
    char keys[64][16];
    int64_t mods[64];
    int n;
} list_t;

static int list_cb(void *arg, const cairn_kv_t *kv)
{
    list_t *l = arg;
    cr_assert_lt(l->n, 64);
    cr_assert_lt(kv->key_len, 16);
    memcpy(l->keys[l->n], kv->key, kv->key_len);
    l->keys[l->n][kv->key_len] = 0;
    l->mods[l->n] = kv->mod_revision;
    l->n++;
    return 0;
}

/* "a..c" style: keys of [k, end) at rev, as "a,b,c" */
static char *range_str(cairn_mvcc_t *m, int view, const char *k, const char *end, int64_t rev, int64_t limit,
                       int64_t *count)
{
    static char out[1024];
    list_t l = {0};
    cairn_mvcc_range_t r = {.key = k, .key_len = strlen(k), .end = end, .end_len = end ? strlen(end) : 0,
                            .rev = rev, .limit = limit};
    int rc = cairn_mvcc_range(m, view, &r, list_cb, &l, count);
    cr_assert_eq(rc, 0, "range: %s", cairn_strerror(rc));
    out[0] = 0;
    for (int i = 0; i < l.n; i++) {
        if (i)
            strcat(out, ",");
        strcat(out, l.keys[i]);
    }
    return out;
}

/* Counts the LevelDB records of one table (first key byte) - what is really on disk. */
static int count_table(char table)
{
    char path[300];
    snprintf(path, sizeof path, "%s/mvcc", g_dir);
    leveldb_options_t *o = leveldb_options_create();
    char *err = NULL;
    leveldb_t *db = leveldb_open(o, path, &err);
    cr_assert_null(err, "%s", err);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
    int n = 0;
    for (leveldb_iter_seek(it, &table, 1); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kn;
        const char *k = leveldb_iter_key(it, &kn);
        if (k[0] != table)
            break;
        n++;
    }
    leveldb_iter_destroy(it);
    leveldb_readoptions_destroy(ro);
    leveldb_close(db);
    leveldb_options_destroy(o);
    return n;
}

/* ---- tests ---- */

Test(mvcc, fresh_store)
{
    cairn_mvcc_t *m = open_store();
    cr_assert_eq(cairn_mvcc_revision(m), 1);
    cr_assert_eq(cairn_mvcc_applied_index(m), 0);
    cr_assert_eq(cairn_mvcc_compact_revision(m), -1);
    cr_assert(!get(m, "a", 0).found);
    cr_assert_gt(cairn_mvcc_db_size(m), 0);
    cairn_mvcc_destroy(&m);
    cr_assert_null(m);
    cairn_mvcc_destroy(&m);   /* idempotent */
}

/* A second open of a store this process has open is refused before anything touches its
 * files (the log check's LOCK probe would drop LevelDB's POSIX lock of the first handle), and
 * the first handle keeps working - and keeps its lock: another process cannot take it. */
Test(mvcc, a_second_open_in_one_process_is_refused)
{
    cairn_mvcc_t *m = open_store();
    int err = 0;
    char eb[256], path[300];
    snprintf(path, sizeof path, "%s/mvcc/.", g_dir); /* another spelling of the same directory */
    cairn_mvcc_t *m2 = cairn_mvcc_open(path, &err, eb, sizeof eb);
    cr_assert_null(m2);
    cr_assert_eq(err, CAIRN_ESTATE);
    cr_assert(strstr(eb, "this process has it open already"), "%s", eb);
    put(m, "still", "works", 0);
    char lock[320];
    snprintf(lock, sizeof lock, "%s/mvcc/LOCK", g_dir);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(lock, O_RDWR);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        _exit(fd >= 0 && fcntl(fd, F_SETLK, &fl) == 0 ? 1 : 0); /* 0: the lock is still held */
    }
    int st = 0;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another process could take the store's lock");
    cairn_mvcc_destroy(&m);
    m = open_store(); /* closed, it opens again */
    cairn_mvcc_destroy(&m);
}

/* The fallback behind mvcc_ldblog's own check: a log whose records are whole (checksums and
 * sequences right, so the check keeps it) but whose batch LevelDB refuses ("WriteBatch has
 * wrong count", paranoid_checks) fails LevelDB's open; the logs are then moved aside and the
 * store opens at its flushed state (the WAL replay would bring the rest back). */
Test(mvcc, a_log_leveldb_refuses_is_moved_aside)
{
    cairn_mvcc_t *m = open_store();
    put(m, "k", "v", 0);
    cairn_mvcc_destroy(&m);
    char dir[300], log[600] = "";
    snprintf(dir, sizeof dir, "%s/mvcc", g_dir);
    DIR *d = opendir(dir);
    struct dirent *de;
    unsigned long long best = 0;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".log") == 0 && strtoull(de->d_name, NULL, 10) >= best) {
            best = strtoull(de->d_name, NULL, 10);
            snprintf(log, sizeof log, "%s/%s", dir, de->d_name);
        }
    }
    closedir(d);
    cr_assert(log[0]);
    /* the next sequence, from the scan of the log as it is */
    FILE *f = fopen(log, "rb");
    static uint8_t blk[CAIRN_LDBLOG_BLOCK];
    size_t n = fread(blk, 1, sizeof blk, f);
    fclose(f);
    cr_assert_lt(n, sizeof blk - 64, "the log is bigger than this test expects");
    cairn_ldblog_scan_t sc;
    cairn_ldblog_scan_init(&sc);
    cairn_ldblog_scan_block(&sc, blk, n);
    cairn_ldblog_scan_end(&sc);
    cr_assert(sc.records > 0 && !sc.damaged && sc.good == n);
    /* a FULL record: a batch that says 5 ops and holds one Put */
    uint8_t rec[64], *b = rec + 7;
    cairn_put_le64(b, sc.next_seq);
    cairn_put_le32(b + 8, 5);
    memcpy(b + 12, "\x01\x01x\x01y", 5);
    size_t len = 17;
    rec[4] = (uint8_t)len, rec[5] = 0, rec[6] = 1;
    uint32_t c = cairn_crc32c_extend(cairn_crc32c(rec + 6, 1), b, len);
    cairn_put_le32(rec, ((c >> 15) | (c << 17)) + 0xa282ead8u);
    f = fopen(log, "ab");
    cr_assert_eq(fwrite(rec, 1, 7 + len, f), 7 + len);
    fclose(f);
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 0, "the check keeps it: every record is whole");
    m = open_store();
    int rc;
    cr_assert_not(get_at(m, CAIRN_MVCC_COMMITTED, "k", 0, &rc).found, "the moved log's put is not there");
    cairn_mvcc_destroy(&m);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "ls %s.torn-*/%s >/dev/null", dir, strrchr(log, '/') + 1);
    cr_assert_eq(system(cmd), 0, "the refused log is kept aside");
}

Test(mvcc, revisions_create_mod_version)
{
    cairn_mvcc_t *m = open_store();
    cr_assert_eq(put(m, "a", "1", 0), 2);   /* first write gets 2 */
    cr_assert_eq(put(m, "b", "x", 0), 3);
    cr_assert_eq(put(m, "a", "2", 0), 4);
    got_t g = get(m, "a", 0);
    cr_assert(g.found);
    cr_assert_eq(g.create, 2);
    cr_assert_eq(g.mod, 4);
    cr_assert_eq(g.version, 2);
    cr_assert_str_eq(g.value, "2");
    cr_assert_eq(cairn_mvcc_revision(m), 4);
    /* history */
    g = get(m, "a", 3);
    cr_assert(g.found);
    cr_assert_eq(g.mod, 2);
    cr_assert_eq(g.version, 1);
    cr_assert_str_eq(g.value, "1");
    cr_assert(!get(m, "a", 1).found);
    cr_assert(!get(m, "b", 2).found);
    cr_assert(get(m, "b", 3).found);
    int rc;
    get_at(m, CAIRN_MVCC_COMMITTED, "a", 5, &rc);
    cr_assert_eq(rc, CAIRN_EFUTURE_REV);
    cairn_mvcc_destroy(&m);
}

Test(mvcc, txn_shares_main_revision_with_sub_revisions)
{
    cairn_mvcc_t *m = open_store();
    put(m, "z", "0", 0);   /* rev 2 */
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    cr_assert_eq(cairn_mvcc_put(m, "a", 1, "1", 1, 0, NULL), 0);
    cr_assert_eq(cairn_mvcc_view_revision(m, CAIRN_MVCC_PENDING), 3);
    cr_assert_eq(cairn_mvcc_put(m, "b", 1, "1", 1, 0, NULL), 0);
    got_t z = get_at(m, CAIRN_MVCC_PENDING, "z", 0, NULL);
    cairn_kv_t prev = {.key = (const uint8_t *)"z", .key_len = 1, .create_revision = z.create,
                       .mod_revision = z.mod, .version = z.version};
    cr_assert_eq(cairn_mvcc_delete(m, &prev), 0);
    cr_assert_eq(cairn_mvcc_txn_changes(m), 3);
    cr_assert_eq(cairn_mvcc_txn_end(m), 3);
    /* a read-only txn does not bump the revision */
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    cr_assert_eq(cairn_mvcc_txn_end(m), 3);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_eq(cairn_mvcc_revision(m), 3);
    cr_assert_eq(get(m, "a", 0).mod, 3);
    cr_assert_eq(get(m, "b", 0).mod, 3);
    cr_assert(!get(m, "z", 0).found);
    cr_assert(get(m, "z", 2).found);
    cairn_mvcc_destroy(&m);
}

typedef struct {
    int n;
    int type[8];
    int64_t sub[8], mod[8], prev_mod[8];
} evlog_t;

static void ev_cb(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev, int64_t sub)
{
    evlog_t *e = arg;
    e->type[e->n] = type;
    e->sub[e->n] = sub;
    e->mod[e->n] = kv->mod_revision;
    e->prev_mod[e->n] = prev ? prev->mod_revision : 0;
    e->n++;
}

Test(mvcc, events_report_sub_revisions_and_prev)
{
    cairn_mvcc_t *m = open_store();
    put(m, "a", "1", 0);   /* 2 */
    evlog_t ev = {0};
    cairn_mvcc_set_event_fn(m, ev_cb, &ev);
    cr_assert(cairn_mvcc_has_event_fn(m));
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    put(m, "b", "1", 0);   /* 3, sub 0 */
    del(m, "a");           /* 4, sub 0 */
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_eq(ev.n, 2);
    cr_assert_eq(ev.type[0], 0);
    cr_assert_eq(ev.mod[0], 3);
    cr_assert_eq(ev.prev_mod[0], 0);
    cr_assert_eq(ev.type[1], 1);
    cr_assert_eq(ev.mod[1], 4);
    cr_assert_eq(ev.prev_mod[1], 2);
    cr_assert_eq(ev.sub[1], 0);
    cairn_mvcc_destroy(&m);
}

Test(mvcc, tombstones_and_recreation)
{
    cairn_mvcc_t *m = open_store();
    put(m, "k", "v1", 0);     /* 2 */
    put(m, "k", "v2", 0);     /* 3 */
    cr_assert(del(m, "k"));   /* 4: tombstone */
    cr_assert(!del(m, "k"));  /* no-op: no revision */
    cr_assert_eq(cairn_mvcc_revision(m), 4);
    cr_assert(!get(m, "k", 0).found);
    cr_assert(!get(m, "k", 4).found);
    cr_assert_str_eq(get(m, "k", 3).value, "v2");
    put(m, "k", "v3", 0);     /* 5: a new generation */
    got_t g = get(m, "k", 0);
    cr_assert_eq(g.create, 5);
    cr_assert_eq(g.version, 1);
    cr_assert_eq(get(m, "k", 3).create, 2);
    cr_assert_eq(get(m, "k", 3).version, 2);
    cairn_mvcc_destroy(&m);
}

Test(mvcc, ranges_current_and_history)
{
    cairn_mvcc_t *m = open_store();
    put(m, "a", "1", 0);   /* 2 */
    put(m, "b", "1", 0);   /* 3 */
    put(m, "c", "1", 0);   /* 4 */
    del(m, "b");           /* 5 */
    put(m, "d", "1", 0);   /* 6 */
    put(m, "a", "2", 0);   /* 7 */
    int64_t count;
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 0, 0, &count), "a,c,d");
    cr_assert_eq(count, 3);
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 4, 0, &count), "a,b,c");
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 5, 0, &count), "a,c");
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "b", "d", 3, 0, &count), "b");
    /* limit: hands over 2, counts all */
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 0, 2, &count), "a,c");
    cr_assert_eq(count, 3);
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 6, 1, &count), "a");
    cr_assert_eq(count, 3);
    /* open end (etcd's range_end "\0"), single key, empty ranges */
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "c", "", 0, 0, &count), "c,d");
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "c", NULL, 0, 0, &count), "c");
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "d", "c", 0, 0, &count), "");
    cr_assert_eq(count, 0);
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "d", "c", 4, 0, &count), "");
    /* history ranges report the mod revision of the version they show */
    list_t l = {0};
    cairn_mvcc_range_t r = {.key = "a", .key_len = 1, .end = "", .end_len = 0, .rev = 6};
    cr_assert_eq(cairn_mvcc_range(m, CAIRN_MVCC_COMMITTED, &r, list_cb, &l, NULL), 0);
    cr_assert_eq(l.n, 3);
    cr_assert_eq(l.mods[0], 2);
    cr_assert_eq(l.mods[2], 6);
    /* keys with long histories: the scan skips the rest of a key's records with a seek */
    for (int i = 0; i < 10; i++) {
        put(m, "b", "x", 0);   /* 8..17 */
        put(m, "bb", "x", 0);  /* 9..18, interleaved */
    }
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 12, 0, &count), "a,b,bb,c,d");
    cr_assert_eq(count, 5);
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "b", "c", 8, 0, &count), "b");
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "", 5, 0, &count), "a,c");
    cairn_mvcc_destroy(&m);
}

Test(mvcc, keys_with_zero_bytes_and_prefixes_keep_order)
{
    cairn_mvcc_t *m = open_store();
    /* keys that are prefixes of each other and contain 0x00: the history escaping must keep
     * (key, revision) order */
    const char *keys[] = {"a", "a\0", "a\0\0", "a\0b", "a\x01", "ab", "a\xff"};
    size_t lens[] = {1, 2, 3, 3, 2, 2, 2};
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 7; i++) {
            cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
            cairn_kv_t prev;
            void *owned = NULL;
            int f = cairn_mvcc_get(m, CAIRN_MVCC_PENDING, keys[i], lens[i], 0, &prev, &owned);
            cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
            cr_assert_eq(cairn_mvcc_put(m, keys[i], lens[i], "v", 1, 0, f ? &prev : NULL), 0);
            cairn_mvcc_txn_end(m);
            free(owned);
            cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
        }
    /* at rev 8 (end of round 1) and now: all 7 keys, in key order, right versions */
    for (int64_t rev = 8; rev <= 15; rev += 7) {
        list_t l = {0};
        cairn_mvcc_range_t r = {.key = "a", .key_len = 1, .end = "", .rev = rev == 15 ? 0 : rev};
        int64_t count;
        cr_assert_eq(cairn_mvcc_range(m, CAIRN_MVCC_COMMITTED, &r, list_cb, &l, &count), 0);
        cr_assert_eq(count, 7, "rev %lld", (long long)rev);
        for (int i = 0; i < 7; i++)
            cr_assert_eq(l.mods[i], rev == 8 ? 2 + i : 9 + i, "rev %lld key %d", (long long)rev, i);
    }
    /* a history read at rev 9 sees the first key's second version, others' first */
    got_t g = get(m, "a", 9);
    cr_assert_eq(g.version, 2);
    cairn_kv_t kv;
    void *owned = NULL;
    cr_assert_eq(cairn_mvcc_get(m, CAIRN_MVCC_COMMITTED, "a\0", 2, 9, &kv, &owned), 1);
    cr_assert_eq(kv.version, 1);
    free(owned);
    cairn_mvcc_destroy(&m);
}

Test(mvcc, batch_sees_own_writes_committed_view_does_not)
{
    cairn_mvcc_t *m = open_store();
    put(m, "a", "1", 0);   /* 2 */
    put(m, "b", "1", 0);   /* 3 */
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    put(m, "c", "1", 0);   /* 4 */
    del(m, "a");           /* 5 */
    put(m, "b", "2", 0);   /* 6 */
    int64_t count;
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_PENDING, "a", "z", 0, 0, &count), "b,c");
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 0, 0, &count), "a,b");
    cr_assert_eq(cairn_mvcc_view_revision(m, CAIRN_MVCC_PENDING), 6);
    cr_assert_eq(cairn_mvcc_view_revision(m, CAIRN_MVCC_COMMITTED), 3);
    /* history inside the batch, at a revision the batch made */
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_PENDING, "a", "z", 4, 0, &count), "a,b,c");
    cr_assert_str_eq(get_at(m, CAIRN_MVCC_PENDING, "b", 5, NULL).value, "1");
    cr_assert_str_eq(get_at(m, CAIRN_MVCC_PENDING, "b", 0, NULL).value, "2");
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 0, 0, &count), "b,c");
    cr_assert_eq(cairn_mvcc_revision(m), 6);
    cairn_mvcc_destroy(&m);
}

Test(mvcc, persistence_across_reopen)
{
    cairn_mvcc_t *m = open_store();
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    put(m, "a", "1", 0);   /* 2 */
    put(m, "a", "2", 0);   /* 3 */
    put(m, "b", "1", 0);   /* 4 */
    cr_assert_eq(cairn_mvcc_set_applied(m, 7, 2), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_compact(m, 3), 0);
    cr_assert_eq(cairn_mvcc_set_applied(m, 8, 3), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cairn_mvcc_destroy(&m);

    m = open_store();
    cr_assert_eq(cairn_mvcc_applied_index(m), 8);
    cr_assert_eq(cairn_mvcc_applied_term(m), 3);
    cr_assert_eq(cairn_mvcc_revision(m), 4);
    cr_assert_eq(cairn_mvcc_compact_revision(m), 3);
    cr_assert_str_eq(get(m, "a", 0).value, "2");
    cr_assert_str_eq(get(m, "a", 3).value, "2");
    int rc;
    get_at(m, CAIRN_MVCC_COMMITTED, "a", 2, &rc);
    cr_assert_eq(rc, CAIRN_ECOMPACTED);
    cr_assert_eq(put(m, "c", "1", 0), 5);   /* revisions continue */
    cairn_mvcc_destroy(&m);
}

Test(mvcc, uncommitted_batch_leaves_nothing)
{
    cairn_mvcc_t *m = open_store();
    put(m, "a", "1", 0);   /* 2, committed */
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_batch_begin(m), CAIRN_ESTATE);
    put(m, "a", "2", 0);
    put(m, "b", "1", 0);
    cr_assert_eq(cairn_mvcc_lease_grant(m, 42, 10), 0);
    cr_assert_eq(cairn_mvcc_set_applied(m, 99, 9), 0);
    cairn_mvcc_destroy(&m);   /* no commit: "crash" */

    m = open_store();
    cr_assert_eq(cairn_mvcc_applied_index(m), 0);
    cr_assert_eq(cairn_mvcc_revision(m), 2);
    cr_assert_str_eq(get(m, "a", 0).value, "1");
    cr_assert(!get(m, "b", 0).found);
    cr_assert_eq(cairn_mvcc_lease_exists(m, CAIRN_MVCC_COMMITTED, 42), 0);
    /* an aborted batch is just as gone */
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    put(m, "b", "1", 0);
    cairn_mvcc_batch_abort(m);
    cr_assert(!get(m, "b", 0).found);
    cr_assert_eq(cairn_mvcc_revision(m), 2);
    cr_assert_eq(put(m, "b", "1", 0), 3);
    cairn_mvcc_destroy(&m);
}

/* a: 2,4,6(after C)  b: 3, deleted 5 (<= C)  c: 7 (after C)  d: 3b... compact at 5 */
static void compaction_fixture(cairn_mvcc_t *m)
{
    put(m, "a", "a1", 0);   /* 2 */
    put(m, "b", "b1", 0);   /* 3 */
    put(m, "a", "a2", 0);   /* 4 */
    del(m, "b");            /* 5 */
    put(m, "a", "a3", 0);   /* 6 */
    put(m, "c", "c1", 0);   /* 7 */
    put(m, "d", "d1", 0);   /* 8 */
    del(m, "d");            /* 9: tombstone after C stays */
}

static void check_compacted_at_5(cairn_mvcc_t *m)
{
    cr_assert_eq(cairn_mvcc_compact_revision(m), 5);
    cr_assert(!cairn_mvcc_compact_pending(m));
    int rc;
    get_at(m, CAIRN_MVCC_COMMITTED, "a", 4, &rc);
    cr_assert_eq(rc, CAIRN_ECOMPACTED);
    got_t g = get(m, "a", 5);   /* == compact rev is fine */
    cr_assert_str_eq(g.value, "a2");
    cr_assert_eq(g.version, 2);
    cr_assert_eq(g.create, 2);
    cr_assert(!get(m, "b", 5).found);
    cr_assert_str_eq(get(m, "a", 6).value, "a3");
    cr_assert_str_eq(get(m, "d", 8).value, "d1");
    int64_t count;
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 5, 0, &count), "a");
    cr_assert_str_eq(range_str(m, CAIRN_MVCC_COMMITTED, "a", "z", 8, 0, &count), "a,c,d");
}

Test(mvcc, compaction_keeps_latest_before_rev_and_drops_tombstones)
{
    cairn_mvcc_t *m = open_store();
    compaction_fixture(m);
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_compact(m, 10), CAIRN_EFUTURE_REV);
    cr_assert_eq(cairn_mvcc_compact(m, 5), 0);
    cr_assert_eq(cairn_mvcc_compact(m, 5), CAIRN_ECOMPACTED);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    check_compacted_at_5(m);
    cairn_mvcc_destroy(&m);
    /* On disk: a@4 (kept: latest <= 5), a@6, c@7, d@8, d@9(tombstone). Gone: a@2, b@3, b@5. */
    cr_assert_eq(count_table('h'), 5);
    cr_assert_eq(count_table('r'), 5);
    cr_assert_eq(count_table('k'), 2);   /* a, c */
    m = open_store();
    check_compacted_at_5(m);
    /* compacting again further on drops the old kept version and the d tombstone */
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_compact(m, 9), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_str_eq(get(m, "a", 9).value, "a3");
    cairn_mvcc_destroy(&m);
    cr_assert_eq(count_table('h'), 2);   /* a@6, c@7 */
    cr_assert_eq(count_table('r'), 2);
}

Test(mvcc, compaction_in_chunks_and_resumed_after_crash)
{
    cairn_mvcc_t *m = open_store();
    compaction_fixture(m);
    /* many revisions of one key */
    for (int i = 0; i < 100; i++)
        put(m, "m", "x", 0);   /* 10..109 */
    cairn_mvcc_set_compact_async(m, 1);
    cairn_mvcc_set_compact_chunk(m, 4);
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_compact(m, 100), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert(cairn_mvcc_compact_pending(m));
    /* logically compacted already */
    int rc;
    get_at(m, CAIRN_MVCC_COMMITTED, "m", 99, &rc);
    cr_assert_eq(rc, CAIRN_ECOMPACTED);
    cr_assert_eq(get(m, "m", 100).version, 91);
    cr_assert_eq(cairn_mvcc_compact_step(m, 4), 1);   /* one chunk, then "crash" */
    cr_assert_eq(cairn_mvcc_compact_step(m, 4), 1);
    cairn_mvcc_destroy(&m);
    cr_assert_gt(count_table('h'), 12);
    m = open_store();   /* open finishes it */
    cr_assert(!cairn_mvcc_compact_pending(m));
    cr_assert_eq(cairn_mvcc_compact_revision(m), 100);
    cr_assert_eq(get(m, "m", 100).version, 91);
    cr_assert_eq(get(m, "m", 0).version, 100);
    cr_assert_str_eq(get(m, "a", 100).value, "a3");
    cairn_mvcc_destroy(&m);
    /* a@6, c@7, m@100..109 */
    cr_assert_eq(count_table('h'), 12);
    cr_assert_eq(count_table('r'), 12);
}

Test(mvcc, leases_attach_and_revoke_in_one_revision)
{
    cairn_mvcc_t *m = open_store();
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_lease_grant(m, 7, 30), 0);
    cr_assert_eq(cairn_mvcc_lease_grant(m, 7, 30), CAIRN_EEXISTS);
    cr_assert_eq(cairn_mvcc_lease_exists(m, CAIRN_MVCC_PENDING, 7), 1);
    cr_assert_eq(cairn_mvcc_lease_exists(m, CAIRN_MVCC_COMMITTED, 7), 0);
    put(m, "a", "1", 7);   /* 2 */
    put(m, "b", "1", 7);   /* 3 */
    put(m, "c", "1", 7);   /* 4 */
    put(m, "c", "2", 0);   /* 5: detached */
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cairn_mvcc_destroy(&m);
    m = open_store();
    int64_t ttl = 0;
    cr_assert_eq(cairn_mvcc_lease_get(m, CAIRN_MVCC_COMMITTED, 7, &ttl), 1);
    cr_assert_eq(ttl, 30);
    cr_assert_eq(get(m, "a", 0).lease, 7);
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    int64_t n = 0;
    cr_assert_eq(cairn_mvcc_lease_revoke(m, 8, &n), CAIRN_ENOTFOUND);
    cr_assert_eq(cairn_mvcc_lease_revoke(m, 7, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_eq(cairn_mvcc_revision(m), 6);   /* both deletes in revision 6 */
    cr_assert(!get(m, "a", 0).found);
    cr_assert(!get(m, "b", 0).found);
    cr_assert_str_eq(get(m, "c", 0).value, "2");
    cr_assert_eq(cairn_mvcc_lease_exists(m, CAIRN_MVCC_COMMITTED, 7), 0);
    cairn_mvcc_destroy(&m);
    cr_assert_eq(count_table('l'), 0);
    cr_assert_eq(count_table('L'), 0);
}

static uint32_t hash_of(cairn_mvcc_t *m, int64_t rev)
{
    uint32_t h = 0;
    int64_t c;
    cr_assert_eq(cairn_mvcc_hash_kv(m, rev, &h, &c), 0);
    return h;
}

Test(mvcc, hash_kv)
{
    cairn_mvcc_t *m = open_store();
    compaction_fixture(m);
    uint32_t h8 = hash_of(m, 8), h0 = hash_of(m, 0);
    cr_assert_neq(h8, h0);
    cr_assert_eq(hash_of(m, 9), h0);
    uint32_t h;
    int64_t c;
    cr_assert_eq(cairn_mvcc_hash_kv(m, 10, &h, &c), CAIRN_EFUTURE_REV);
    cairn_mvcc_destroy(&m);
    rm_tmp();
    mkdir_tmp();
    m = open_store();   /* same history, same hash */
    compaction_fixture(m);
    cr_assert_eq(hash_of(m, 0), h0);
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_compact(m, 5), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_eq(cairn_mvcc_hash_kv(m, 5, &h, &c), CAIRN_ECOMPACTED);   /* <= compact rev */
    cr_assert_eq(c, 5);
    cairn_mvcc_destroy(&m);
}

/* HashKV in two steps (maint.c runs the walk on a thread): what is written between begin and
 * run is not hashed, the snapshot pinned at begin is. */
Test(mvcc, hash_kv_job_sees_its_snapshot)
{
    cairn_mvcc_t *m = open_store();
    compaction_fixture(m);
    uint32_t before = hash_of(m, 0);
    cairn_mvcc_hashkv_t *j = NULL;
    int64_t c = 0;
    cr_assert_eq(cairn_mvcc_hashkv_begin(m, 0, &c, &j), 0);
    cr_assert_eq(cairn_mvcc_hashkv_current_revision(j), 9);
    put(m, "a", "later", 0); /* 10 */
    put(m, "z", "later", 0); /* 11 */
    uint32_t h = 0;
    cr_assert_eq(cairn_mvcc_hashkv_run(j, &h), 0);
    cairn_mvcc_hashkv_end(&j);
    cr_assert_null(j);
    cr_assert_eq(h, before, "the job hashed writes made after it began");
    cr_assert_neq(hash_of(m, 0), before);
    cr_assert_eq(hash_of(m, 9), before);
    cr_assert_eq(cairn_mvcc_hashkv_begin(m, 12, &c, &j), CAIRN_EFUTURE_REV);
    cr_assert_null(j);
    cairn_mvcc_destroy(&m);
}

Test(mvcc, big_batch_is_one_write)
{
    cairn_mvcc_t *m = open_store();
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    char k[32], v[128];
    memset(v, 'v', sizeof v - 1);
    v[sizeof v - 1] = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "key%05d", i);
        put(m, k, v, 0);
    }
    cr_assert_eq(cairn_mvcc_set_applied(m, 1000, 1), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_eq(cairn_mvcc_revision(m), 1001);
    int64_t count;
    range_str(m, CAIRN_MVCC_COMMITTED, "key", "kez", 0, 5, &count);
    cr_assert_eq(count, 1000);
    cairn_mvcc_destroy(&m);
}

Test(mvcc, refuses_foreign_database)
{
    char path[300];
    snprintf(path, sizeof path, "%s/mvcc", g_dir);
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 1);
    char *err = NULL;
    leveldb_t *db = leveldb_open(o, path, &err);
    cr_assert_null(err);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_put(db, wo, "x", 1, "y", 1, &err);
    leveldb_writeoptions_destroy(wo);
    leveldb_close(db);
    leveldb_options_destroy(o);
    int e = 0;
    char eb[256];
    cr_assert_null(cairn_mvcc_open(path, &e, eb, sizeof eb));
    cr_assert_eq(e, CAIRN_ECORRUPT);
    cr_assert(strstr(eb, "not a cairn mvcc store") != NULL, "%s", eb);
}

typedef struct {
    int n;
    char line[16][64];
} chlog_t;

static int ch_cb(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev, int64_t sub)
{
    chlog_t *c = arg;
    cr_assert_lt(c->n, 16);
    snprintf(c->line[c->n++], 64, "%s %.*s@%lld.%lld v%lld prev@%lld", type ? "DEL" : "PUT", (int)kv->key_len,
             (const char *)kv->key, (long long)kv->mod_revision, (long long)sub, (long long)kv->version,
             prev ? (long long)prev->mod_revision : 0LL);
    return 0;
}

Test(mvcc, changes_by_revision_for_watch_catch_up)
{
    cairn_mvcc_t *m = open_store();
    compaction_fixture(m);   /* a2 b3 a4 b-5 a6 c7 d8 d-9 */
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
    cairn_kv_t pc = {.key = (const uint8_t *)"c", .key_len = 1, .create_revision = 7, .mod_revision = 7,
                     .version = 1};
    cr_assert_eq(cairn_mvcc_put(m, "e", 1, "e1", 2, 0, NULL), 0);
    cr_assert_eq(cairn_mvcc_delete(m, &pc), 0);
    cairn_mvcc_txn_end(m);   /* 10: e put sub 0, c deleted sub 1 */
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    chlog_t c = {0};
    cr_assert_eq(cairn_mvcc_changes(m, 4, 0, ch_cb, &c), 0);
    cr_assert_eq(c.n, 8);
    cr_assert_str_eq(c.line[0], "PUT a@4.0 v2 prev@2");
    cr_assert_str_eq(c.line[1], "DEL b@5.0 v0 prev@3");
    cr_assert_str_eq(c.line[2], "PUT a@6.0 v3 prev@4");
    cr_assert_str_eq(c.line[3], "PUT c@7.0 v1 prev@0");
    cr_assert_str_eq(c.line[5], "DEL d@9.0 v0 prev@8");
    cr_assert_str_eq(c.line[6], "PUT e@10.0 v1 prev@0");
    cr_assert_str_eq(c.line[7], "DEL c@10.1 v0 prev@7");
    c.n = 0;
    cr_assert_eq(cairn_mvcc_changes(m, 6, 7, ch_cb, &c), 0);
    cr_assert_eq(c.n, 2);
    /* after compaction at 6: a@6's previous version is gone (a@4 was superseded) */
    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
    cr_assert_eq(cairn_mvcc_compact(m, 6), 0);
    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
    cr_assert_eq(cairn_mvcc_changes(m, 5, 0, ch_cb, &c), CAIRN_ECOMPACTED);
    c.n = 0;
    cr_assert_eq(cairn_mvcc_changes(m, 7, 0, ch_cb, &c), 0);
    cr_assert_eq(c.n, 5);
    cr_assert_str_eq(c.line[0], "PUT c@7.0 v1 prev@0");
    cairn_mvcc_destroy(&m);
}

/* ---- randomized differential test against a simple in-memory model ------------------ */

#define NKEYS 10
static const struct {
    const char *p;
    size_t n;
} rkeys[NKEYS] = {{"\0", 1}, {"a", 1}, {"a\0", 2}, {"a\0b", 3}, {"a\xff", 2}, {"ab", 2}, {"b", 1}, {"b\0", 2}, {"c", 1}, {"\xff", 1}};

typedef struct {
    int64_t main, sub, create, version;
    int tomb;
    int val;
} mver_t;

static struct {
    mver_t v[NKEYS][2048];
    int n[NKEYS];
    int64_t rev, committed_rev, compact;
} md;

static const mver_t *m_at(int k, int64_t rev)
{
    for (int i = md.n[k] - 1; i >= 0; i--)
        if (md.v[k][i].main <= rev)
            return md.v[k][i].tomb ? NULL : &md.v[k][i];
    return NULL;
}

static int keyidx_cmp(int a, int b)
{
    size_t n = rkeys[a].n < rkeys[b].n ? rkeys[a].n : rkeys[b].n;
    int c = memcmp(rkeys[a].p, rkeys[b].p, n);
    return c ? c : (int)rkeys[a].n - (int)rkeys[b].n;
}

typedef struct {
    int64_t mods[NKEYS], vers[NKEYS], vals[NKEYS];
    int keys[NKEYS];
    int n;
} rres_t;

static int rres_cb(void *arg, const cairn_kv_t *kv)
{
    rres_t *r = arg;
    int k = -1;
    for (int i = 0; i < NKEYS; i++)
        if (rkeys[i].n == kv->key_len && memcmp(rkeys[i].p, kv->key, kv->key_len) == 0)
            k = i;
    cr_assert_geq(k, 0);
    cr_assert_lt(r->n, NKEYS);
    r->keys[r->n] = k;
    r->mods[r->n] = kv->mod_revision;
    r->vers[r->n] = kv->version;
    cr_assert_eq(kv->value_len, sizeof(int));
    int v;
    memcpy(&v, kv->value, sizeof v);
    r->vals[r->n] = v;
    r->n++;
    return 0;
}

static uint64_t rnd_state;
static uint32_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (uint32_t)(rnd_state >> 11);
}

static void m_change(cairn_mvcc_t *m, int k, int tomb, int val, int64_t main, int64_t sub)
{
    const mver_t *prev = m_at(k, md.rev);
    if (md.n[k] > 0 && md.v[k][md.n[k] - 1].main == main) {
        /* changed twice in one txn: the latest state so far, not the txn's start */
        const mver_t *l = &md.v[k][md.n[k] - 1];
        prev = l->tomb ? NULL : l;
    }
    cr_assert_lt(md.n[k], 2048);
    mver_t nv = {.main = main, .sub = sub, .tomb = tomb, .val = val,
                 .create = prev ? prev->create : main, .version = prev ? prev->version + 1 : 1};
    md.v[k][md.n[k]++] = nv;
    (void)m;
}

static void rand_check(cairn_mvcc_t *m, unsigned seed, int view)
{
    int64_t cur = view == CAIRN_MVCC_PENDING ? md.rev : md.committed_rev;
    int64_t lo = md.compact > 1 ? md.compact : 1;
    int64_t rev = rnd() % 3 == 0 ? 0 : lo + (int64_t)(rnd() % (uint32_t)(cur - lo + 1));
    int64_t at = rev ? rev : cur;
    int a = rnd() % NKEYS, b = rnd() % NKEYS, mode = rnd() % 3;
    rres_t got = {0};
    cairn_mvcc_range_t r = {.key = rkeys[a].p, .key_len = rkeys[a].n, .rev = rev};
    if (mode == 1) {
        r.end = rkeys[b].p;
        r.end_len = rkeys[b].n;
    } else if (mode == 2) {
        r.end = "";
        r.end_len = 0;
    }
    int64_t count = -1;
    int rc = cairn_mvcc_range(m, view, &r, rres_cb, &got, &count);
    cr_assert_eq(rc, 0, "seed %u: range rc %d", seed, rc);
    /* expected: keys in order */
    int order[NKEYS], no = 0;
    for (int i = 0; i < NKEYS; i++)
        order[no++] = i;
    for (int i = 1; i < no; i++)
        for (int j = i; j > 0 && keyidx_cmp(order[j - 1], order[j]) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    int ne = 0;
    for (int i = 0; i < no; i++) {
        int k = order[i];
        int in = mode == 0 ? k == a : mode == 1 ? keyidx_cmp(k, a) >= 0 && keyidx_cmp(k, b) < 0 : keyidx_cmp(k, a) >= 0;
        const mver_t *v = in ? m_at(k, at) : NULL;
        if (!v)
            continue;
        cr_assert_lt(ne, got.n, "seed %u: missing key %d at %lld", seed, k, (long long)at);
        cr_assert_eq(got.keys[ne], k, "seed %u: key %d want %d at %lld view %d", seed, got.keys[ne], k, (long long)at,
                     view);
        cr_assert_eq(got.mods[ne], v->main, "seed %u", seed);
        cr_assert_eq(got.vers[ne], v->version, "seed %u", seed);
        cr_assert_eq(got.vals[ne], v->val, "seed %u", seed);
        ne++;
    }
    cr_assert_eq(got.n, ne, "seed %u: %d keys, want %d (rev %lld view %d mode %d)", seed, got.n, ne, (long long)at,
                 view, mode);
    cr_assert_eq(count, ne);
    if (md.compact > 1) {
        int64_t c;
        r.rev = md.compact - 1;
        cr_assert_eq(cairn_mvcc_range(m, view, &r, NULL, NULL, &c), CAIRN_ECOMPACTED);
    }
}

typedef struct {
    unsigned seed;
    int64_t start;
    int64_t last_main, last_sub;
    int n;
} chk_t;

static int changes_check_cb(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev, int64_t sub)
{
    chk_t *c = arg;
    int k = -1;
    for (int i = 0; i < NKEYS; i++)
        if (rkeys[i].n == kv->key_len && memcmp(rkeys[i].p, kv->key, kv->key_len) == 0)
            k = i;
    cr_assert_geq(k, 0);
    cr_assert(kv->mod_revision > c->last_main || (kv->mod_revision == c->last_main && sub > c->last_sub));
    c->last_main = kv->mod_revision;
    c->last_sub = sub;
    int i = 0;
    while (i < md.n[k] && !(md.v[k][i].main == kv->mod_revision && md.v[k][i].sub == sub))
        i++;
    cr_assert_lt(i, md.n[k], "seed %u: unknown change", c->seed);
    cr_assert_eq(type, md.v[k][i].tomb);
    const mver_t *pv = i > 0 && !md.v[k][i - 1].tomb ? &md.v[k][i - 1] : NULL;
    cr_assert_eq(prev != NULL, pv != NULL, "seed %u: prev of key %d @%lld", c->seed, k, (long long)kv->mod_revision);
    if (pv)
        cr_assert_eq(prev->mod_revision, pv->main);
    c->n++;
    return 0;
}

static void check_changes(cairn_mvcc_t *m, unsigned seed)
{
    int64_t start = md.compact + 1 > 1 ? md.compact + 1 : 1;
    chk_t c = {.seed = seed};
    cr_assert_eq(cairn_mvcc_changes(m, start, 0, changes_check_cb, &c), 0);
    int want = 0;
    for (int k = 0; k < NKEYS; k++)
        for (int i = 0; i < md.n[k]; i++)
            want += md.v[k][i].main >= start && md.v[k][i].main <= md.committed_rev;
    cr_assert_eq(c.n, want, "seed %u: %d changes, want %d", seed, c.n, want);
}

Test(mvcc, randomized_against_model)
{
    for (unsigned seed = 1; seed <= 6; seed++) {
        memset(&md, 0, sizeof md);
        md.rev = md.committed_rev = 1;
        md.compact = -1;
        rnd_state = 0x9E3779B97F4A7C15ull * seed;
        rm_tmp();
        mkdir_tmp();
        cairn_mvcc_t *m = open_store();
        if (seed % 2)
            cairn_mvcc_set_compact_chunk(m, 4);
        for (int step = 0; step < 1500; step++) {
            int in_batch = cairn_mvcc_in_batch(m);
            int op = rnd() % 100;
            if (op < 45) {
                /* a write txn of 1..4 changes (the same key may change twice) */
                if (!in_batch)
                    cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
                cr_assert_eq(cairn_mvcc_txn_begin(m), 0);
                int nch = 1 + rnd() % 4;
                int64_t main = md.rev + 1, sub = 0;
                for (int i = 0; i < nch; i++) {
                    int k = rnd() % NKEYS;
                    cairn_kv_t prev;
                    void *owned = NULL;
                    int f = cairn_mvcc_get(m, CAIRN_MVCC_PENDING, rkeys[k].p, rkeys[k].n, 0, &prev, &owned);
                    cr_assert_geq(f, 0);
                    if (f && rnd() % 3 == 0) {
                        cr_assert_eq(cairn_mvcc_delete(m, &prev), 0);
                        m_change(m, k, 1, 0, main, sub++);
                    } else {
                        int val = (int)rnd();
                        cr_assert_eq(cairn_mvcc_put(m, rkeys[k].p, rkeys[k].n, &val, sizeof val, 0, f ? &prev : NULL), 0);
                        m_change(m, k, 0, val, main, sub++);
                    }
                    free(owned);
                }
                cr_assert_eq(cairn_mvcc_txn_end(m), main);
                md.rev = main;
                if (rnd() % 4 == 0) {   /* else the batch stays open for more entries */
                    cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
                    md.committed_rev = md.rev;
                }
            } else if (op < 80) {
                rand_check(m, seed, CAIRN_MVCC_COMMITTED);
                if (in_batch)
                    rand_check(m, seed, CAIRN_MVCC_PENDING);
            } else if (op < 85 && in_batch) {
                /* abandon the batch: the model forgets it too */
                cairn_mvcc_batch_abort(m);
                for (int k = 0; k < NKEYS; k++)
                    while (md.n[k] > 0 && md.v[k][md.n[k] - 1].main > md.committed_rev)
                        md.n[k]--;
                md.rev = md.committed_rev;
            } else if (op < 88 && !in_batch && md.rev > md.compact + 2) {
                int64_t c = md.compact + 1 + (int64_t)(rnd() % (uint32_t)(md.rev - md.compact - 1));
                if (c < 1)
                    c = 1;
                cr_assert_eq(cairn_mvcc_batch_begin(m), 0);
                cr_assert_eq(cairn_mvcc_compact(m, c), 0, "seed %u compact %lld", seed, (long long)c);
                cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
                md.compact = c;
            } else if (op < 90 && !in_batch) {
                cairn_mvcc_destroy(&m);
                m = open_store();
                cr_assert_eq(cairn_mvcc_revision(m), md.committed_rev);
                cr_assert_eq(cairn_mvcc_compact_revision(m), md.compact);
            } else if (op < 92 && !in_batch) {
                check_changes(m, seed);
            }
        }
        if (cairn_mvcc_in_batch(m)) {
            cr_assert_eq(cairn_mvcc_batch_commit(m), 0);
            md.committed_rev = md.rev;
        }
        check_changes(m, seed);
        for (int i = 0; i < 50; i++)
            rand_check(m, seed, CAIRN_MVCC_COMMITTED);
        cairn_mvcc_destroy(&m);
    }
}
