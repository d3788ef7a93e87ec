/* Unit tests for mvcc_ldblog.c: the check of LevelDB's logs before the store opens them.
 *
 * The logs are real: LevelDB writes them (records sized so that eight fill a 32 KiB block
 * exactly: a 5-byte key and a 4068-byte value make a 4089-byte WriteBatch, a 4096-byte
 * physical record), then the test damages them as a power loss can. The first test shows the
 * edge this module exists for: a page of zeroes at a record boundary makes LevelDB itself
 * skip the rest of the block without an error, even with paranoid_checks, and recover the
 * batches after it - a store that is not a prefix of what was written. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <leveldb/c.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cairn_bytes.h"
#include "cairn_crc32c.h"
#include "mvcc_ldblog.h"
#include "tmpdir.h"

#define NREC 40
#define REC 4096
#define VLEN 4068

static char dir[256], logpath[512];

static leveldb_t *open_db(const char *d, char **err)
{
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 1);
    leveldb_options_set_paranoid_checks(o, 1);
    leveldb_t *db = leveldb_open(o, d, err);
    leveldb_options_destroy(o);
    return db;
}

/* writes NREC puts k0000..k0039 (one batch each) into a new store and finds its log */
static void setup(void)
{
    cairn_test_mkdtemp(dir, sizeof dir, "ldblog");
    char *err = NULL;
    leveldb_t *db = open_db(dir, &err);
    cr_assert_null(err, "%s", err);
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    char key[8], val[VLEN];
    for (int i = 0; i < NREC; i++) {
        snprintf(key, sizeof key, "k%04d", i);
        memset(val, 'a' + i % 26, sizeof val);
        leveldb_put(db, wo, key, 5, val, sizeof val, &err);
        cr_assert_null(err, "%s", err);
    }
    leveldb_writeoptions_destroy(wo);
    leveldb_close(db);
    DIR *d = opendir(dir);
    struct dirent *de;
    logpath[0] = 0;
    while ((de = readdir(d)) != NULL)
        if (strlen(de->d_name) > 4 && strcmp(de->d_name + strlen(de->d_name) - 4, ".log") == 0)
            snprintf(logpath, sizeof logpath, "%s/%s", dir, de->d_name);
    closedir(d);
    cr_assert(logpath[0], "no log in %s", dir);
    struct stat st;
    cr_assert_eq(stat(logpath, &st), 0);
    cr_assert_eq(st.st_size, NREC * REC, "log size %lld: the records are not 4096 bytes", (long long)st.st_size);
}

static void teardown(void)
{
    cairn_test_rmtree(dir);
    char pat[300];
    snprintf(pat, sizeof pat, "%s.torn-", dir);
    /* the aside directories sit beside dir */
    DIR *d = opendir("/tmp");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char p[600];
        snprintf(p, sizeof p, "/tmp/%s", de->d_name);
        if (strncmp(p, pat, strlen(pat)) == 0)
            cairn_test_rmtree(p);
    }
    if (d)
        closedir(d);
}

static void zero_at(const char *path, long off, size_t len)
{
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    static const char z[32768];
    cr_assert_eq(pwrite(fd, z, len, off), (ssize_t)len);
    close(fd);
}

static void poke(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    unsigned char b;
    cr_assert_eq(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    cr_assert_eq(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static long fsize(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* which of k0000..k0039 the store holds, as a bit per key */
static unsigned long long present(void)
{
    char *err = NULL;
    leveldb_t *db = open_db(dir, &err);
    cr_assert_null(err, "open: %s", err);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    unsigned long long bits = 0;
    for (int i = 0; i < NREC; i++) {
        char key[8];
        size_t vl;
        snprintf(key, sizeof key, "k%04d", i);
        char *v = leveldb_get(db, ro, key, 5, &vl, &err);
        cr_assert_null(err);
        if (v)
            bits |= 1ull << i;
        leveldb_free(v);
    }
    leveldb_readoptions_destroy(ro);
    leveldb_close(db);
    return bits;
}

static cairn_ldblog_scan_t scan_path(const char *path)
{
    cairn_ldblog_scan_t s;
    cairn_ldblog_scan_init(&s);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    static uint8_t blk[CAIRN_LDBLOG_BLOCK];
    size_t n;
    while ((n = fread(blk, 1, sizeof blk, f)) > 0)
        if (cairn_ldblog_scan_block(&s, blk, n) || n < sizeof blk)
            break;
    cairn_ldblog_scan_end(&s);
    fclose(f);
    return s;
}

TestSuite(ldblog, .init = setup, .fini = teardown);

Test(ldblog, a_whole_log_is_all_prefix)
{
    cairn_ldblog_scan_t s = scan_path(logpath);
    cr_assert_not(s.damaged, "%s", s.why);
    cr_assert_not(s.eof_in_record);
    cr_assert_eq(s.records, NREC);
    cr_assert_eq(s.good, (uint64_t)NREC * REC);
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 0);
    cr_assert_eq(fsize(logpath), NREC * REC);
    cr_assert_eq(present(), (1ull << NREC) - 1);
}

/* The edge: LevelDB alone recovers around the hole; after the repair, the store is a prefix. */
Test(ldblog, a_page_of_zeroes_at_a_record_boundary)
{
    zero_at(logpath, 32768 + 2 * REC, REC); /* record 10, in block 1 */
    /* LevelDB by itself, paranoid_checks and all: opens, without records 10..15 (the rest of
     * block 1) but with 16.. - not a prefix. Checked on a copy of the store. */
    char dir2[300], cmd[700];
    snprintf(dir2, sizeof dir2, "%s.leveldb-alone", dir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", dir, dir2);
    cr_assert_eq(system(cmd), 0);
    char *err = NULL;
    leveldb_t *db = open_db(dir2, &err);
    cr_assert_null(err, "LevelDB refused the damaged log (%s): the edge is gone, and this test should say so", err);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    size_t vl;
    char *v10 = leveldb_get(db, ro, "k0010", 5, &vl, &err), *v16 = leveldb_get(db, ro, "k0016", 5, &vl, &err);
    cr_assert_null(v10);
    cr_assert_not_null(v16, "LevelDB alone dropped the batches after the hole too");
    leveldb_free(v16);
    leveldb_readoptions_destroy(ro);
    leveldb_close(db);
    cairn_test_rmtree(dir2);

    cairn_ldblog_scan_t s = scan_path(logpath);
    cr_assert(s.damaged);
    cr_assert_str_eq(s.why, "a record header of zeroes at offset 40960");
    cr_assert_eq(s.records, 10);
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 1);
    cr_assert_eq(fsize(logpath), 10 * REC);
    cr_assert_eq(present(), (1ull << 10) - 1, "the store is k0000..k0009 and nothing after");
}

Test(ldblog, a_checksum_that_fails)
{
    poke(logpath, 20 * REC + 100); /* in record 20's data */
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 1);
    cr_assert_eq(fsize(logpath), 20 * REC);
    cr_assert_eq(present(), (1ull << 20) - 1);
}

Test(ldblog, a_sequence_that_does_not_follow)
{
    /* record 25's WriteBatch sequence (bytes 7..14 of it) changed and its checksum made
     * right again: only the sequence check can see it */
    long off = 25 * REC;
    int fd = open(logpath, O_RDWR);
    uint8_t rec[REC];
    cr_assert_eq(pread(fd, rec, REC, off), REC);
    rec[7] ^= 0x40;
    uint8_t type = rec[6];
    uint32_t c = cairn_crc32c_extend(cairn_crc32c(&type, 1), rec + 7, REC - 7);
    c = ((c >> 15) | (c << 17)) + 0xa282ead8u;
    cairn_put_le32(rec, c);
    cr_assert_eq(pwrite(fd, rec, REC, off), REC);
    close(fd);
    cairn_ldblog_scan_t s = scan_path(logpath);
    cr_assert(s.damaged);
    cr_assert(strstr(s.why, "sequence"), "%s", s.why);
    cr_assert_eq(s.good, 25 * REC);
}

Test(ldblog, newer_logs_are_moved_aside)
{
    char newer[600], cmd[1400];
    snprintf(newer, sizeof newer, "%s/999999.log", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", logpath, newer); /* whole, but after the damage */
    cr_assert_eq(system(cmd), 0);
    zero_at(logpath, 3 * 32768, 32768); /* all of block 3: records 24..31 */
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 2);
    cr_assert_eq(fsize(logpath), 24 * REC);
    cr_assert_eq(fsize(newer), -1, "the newer log is still there");
    /* both kept aside for a post-mortem, the damaged one as it was */
    snprintf(cmd, sizeof cmd, "test -f %s.torn-*/999999.log && test $(stat -c %%s %s.torn-*/%s) = %d", dir, dir,
             strrchr(logpath, '/') + 1, NREC * REC);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

/* across logs: a newer log whose first batch does not follow the older one's last (here a
 * copy of the older one: its sequences start again) holds batches after a lost stretch */
Test(ldblog, a_newer_log_that_does_not_follow)
{
    char newer[600], cmd[1400];
    snprintf(newer, sizeof newer, "%s/999999.log", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", logpath, newer);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 1);
    cr_assert_eq(fsize(logpath), NREC * REC, "the older log is whole and stays");
    cr_assert_eq(fsize(newer), 0, "the newer log's batches were dropped (a copy is aside)");
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 0, "a second repair finds nothing");
}

/* an older log with no whole record while a newer one has some: the newer one goes */
Test(ldblog, an_empty_older_log_before_a_newer_one)
{
    char older[600];
    snprintf(older, sizeof older, "%s/000001.log", dir);
    FILE *f = fopen(older, "w");
    fclose(f);
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 1);
    cr_assert_eq(fsize(logpath), -1, "the newer log was moved aside");
    cr_assert_eq(fsize(older), 0);
}

Test(ldblog, the_newest_logs_tail_is_left_to_leveldb)
{
    /* zeroes after the last record (a size that reached the disk before the pages) */
    int fd = open(logpath, O_WRONLY | O_APPEND);
    static const char z[10000];
    cr_assert_eq(write(fd, z, sizeof z), (ssize_t)sizeof z);
    close(fd);
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 0);
    cr_assert_eq(fsize(logpath), NREC * REC + 10000);
    /* a last record cut short (a writer that died mid-record) */
    cr_assert_eq(truncate(logpath, 39 * REC + 1000), 0);
    cairn_ldblog_scan_t s = scan_path(logpath);
    cr_assert_not(s.damaged);
    cr_assert(s.eof_in_record);
    cr_assert_eq(s.good, 39 * REC);
    cr_assert_eq(cairn_ldblog_repair(dir, NULL, 0), 0);
    cr_assert_eq(present(), (1ull << 39) - 1);
}

Test(ldblog, a_store_another_process_holds_is_not_touched)
{
    zero_at(logpath, 32768, REC);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        char lock[600];
        snprintf(lock, sizeof lock, "%s/LOCK", dir);
        int fd = open(lock, O_RDWR);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fd < 0 || fcntl(fd, F_SETLK, &fl) != 0)
            _exit(1);
        (void)!write(pfd[1], "x", 1);
        pause();
        _exit(0);
    }
    char c;
    cr_assert_eq(read(pfd[0], &c, 1), 1);
    int rc = cairn_ldblog_repair(dir, NULL, 0);
    long sz = fsize(logpath);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    cr_assert_eq(rc, 0);
    cr_assert_eq(sz, NREC * REC);
}

Test(ldblog, garbage_never_reads_past_the_input)
{
    /* every prefix length of a real log, and random bytes: the scan stops inside its input */
    uint8_t *buf = malloc(2 * CAIRN_LDBLOG_BLOCK);
    FILE *f = fopen(logpath, "rb");
    cr_assert_eq(fread(buf, 1, 2 * CAIRN_LDBLOG_BLOCK, f), 2 * CAIRN_LDBLOG_BLOCK);
    fclose(f);
    for (size_t n = 0; n <= CAIRN_LDBLOG_BLOCK; n += 509) {
        cairn_ldblog_scan_t s;
        cairn_ldblog_scan_init(&s);
        cairn_ldblog_scan_block(&s, buf, n);
        cairn_ldblog_scan_end(&s);
        cr_assert_leq(s.good, n);
        cr_assert_eq(s.good, n / REC * REC);
    }
    srand(7);
    for (int k = 0; k < 200; k++) {
        for (size_t i = 0; i < CAIRN_LDBLOG_BLOCK; i++)
            buf[i] = (uint8_t)rand();
        cairn_ldblog_scan_t s;
        cairn_ldblog_scan_init(&s);
        cairn_ldblog_scan_block(&s, buf, CAIRN_LDBLOG_BLOCK);
        cairn_ldblog_scan_end(&s);
        cr_assert_eq(s.good, 0);
        cr_assert_eq(s.records, 0);
    }
    free(buf);
}
