/* fuzz_ldblog.c - libFuzzer target: the check of LevelDB's logs before the store opens them
 * (services/stored/mvcc_ldblog.c).
 *
 * The input is one LevelDB log file. It is scanned block by block (the prefix may not pass
 * the input's end), then written as <dir>/000005.log beside a LOCK file and repaired; the
 * repaired log must be a prefix of the input, must scan again without damage, and a second
 * repair must change nothing. Half of the mutations make every record's checksum right
 * again (as fuzz_wal's mutator does for the WAL), so lengths, types, fragment order and the
 * WriteBatch sequences get past the checksums. Seeds: logs LevelDB wrote (seedgen.c). */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn_bytes.h"
#include "cairn_crc32c.h"
#include "cairn_log.h"
#include "fuzz_common.h"
#include "mvcc_ldblog.h"


static char g_dir[256], g_log[300];

static void fix_crcs(uint8_t *d, size_t n)
{
    for (size_t b = 0; b < n; b += CAIRN_LDBLOG_BLOCK) {
        size_t end = n - b < CAIRN_LDBLOG_BLOCK ? n : b + CAIRN_LDBLOG_BLOCK;
        for (size_t p = b; end - p >= 7;) {
            size_t len = (size_t)d[p + 4] | (size_t)d[p + 5] << 8;
            if (len > end - p - 7)
                break;
            uint8_t type = d[p + 6];
            uint32_t c = cairn_crc32c_extend(cairn_crc32c(&type, 1), d + p + 7, len);
            c = ((c >> 15) | (c << 17)) + 0xa282ead8u;
            cairn_put_le32(d + p, c);
            p += 7 + len;
        }
    }
}

CAIRN_FUZZ_CRC_MUTATOR(fix_crcs)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cairn_log_set_level(CAIRN_LOG_FATAL);
    cairn_fuzz_tmpdir("ldblog", g_dir, sizeof g_dir);
    snprintf(g_log, sizeof g_log, "%s/000005.log", g_dir);
    char lock[300];
    snprintf(lock, sizeof lock, "%s/LOCK", g_dir);
    int fd = open(lock, O_WRONLY | O_CREAT, 0600);
    if (fd < 0)
        abort();
    close(fd);
    return 0;
}

static cairn_ldblog_scan_t scan(const uint8_t *data, size_t size)
{
    cairn_ldblog_scan_t s;
    cairn_ldblog_scan_init(&s);
    for (size_t off = 0; off < size; off += CAIRN_LDBLOG_BLOCK) {
        size_t n = size - off < CAIRN_LDBLOG_BLOCK ? size - off : CAIRN_LDBLOG_BLOCK;
        /* a copy of exactly n bytes: ASan sees any read past the block */
        uint8_t *blk = malloc(n);
        memcpy(blk, data + off, n);
        int done = cairn_ldblog_scan_block(&s, blk, n);
        free(blk);
        if (done || n < CAIRN_LDBLOG_BLOCK)
            break;
    }
    cairn_ldblog_scan_end(&s);
    if (s.good > size)
        abort();
    return s;
}

/* the rest of g_dir: the repair may have moved nothing else, but clear any torn-* sibling */
static void clear_aside(void)
{
    char *slash = strrchr(g_dir, '/');
    if (!slash)
        return;
    char parent[256];
    snprintf(parent, sizeof parent, "%.*s", (int)(slash - g_dir), g_dir);
    DIR *d = opendir(parent);
    struct dirent *de;
    size_t bl = strlen(slash + 1);
    while (d && (de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, slash + 1, bl) != 0 || strncmp(de->d_name + bl, ".torn-", 6) != 0)
            continue;
        char sub[600], f[900];
        snprintf(sub, sizeof sub, "%s/%s", parent, de->d_name);
        DIR *s = opendir(sub);
        struct dirent *e;
        while (s && (e = readdir(s)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(f, sizeof f, "%s/%s", sub, e->d_name);
            unlink(f);
        }
        if (s)
            closedir(s);
        rmdir(sub);
    }
    if (d)
        closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    cairn_ldblog_scan_t s = scan(data, size);
    int fd = open(g_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    close(fd);
    char err[512];
    int rc = cairn_ldblog_repair(g_dir, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "repair failed: %s\n", err);
        abort();
    }
    /* read back what the repair left */
    struct stat st;
    if (stat(g_log, &st) != 0 || (uint64_t)st.st_size > size)
        abort();
    size_t n = (size_t)st.st_size;
    uint8_t *back = malloc(n ? n : 1);
    fd = open(g_log, O_RDONLY);
    if (fd < 0 || read(fd, back, n) != (ssize_t)n)
        abort();
    close(fd);
    if (memcmp(back, data, n) != 0) /* a prefix of the input */
        abort();
    if (rc == 1) {
        if (n != s.good) /* cut exactly at the prefix */
            abort();
        cairn_ldblog_scan_t t = scan(back, n);
        if (t.damaged || t.eof_in_record || t.good != n || t.records != s.records)
            abort();
    } else if (n != size) {
        abort(); /* nothing changed, nothing cut */
    }
    if (cairn_ldblog_repair(g_dir, err, sizeof err) != 0)
        abort(); /* a repaired log needs no second repair */
    free(back);
    clear_aside();
    return 0;
}
