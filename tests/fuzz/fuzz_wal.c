/* fuzz_wal.c - libFuzzer target: the WAL reader and replay (services/stored/wal.c).
 *
 * stored replays its WAL at every start, from files a crash may have torn or a disk may have
 * damaged; wal.c promises to tell a torn tail (cut it) from corruption (refuse) without ever
 * reading past a length it has not checked. The input is the WAL directory's content: it is
 * cut before every occurrence of the segment magic "CAIRNWAL", and each piece is written as a
 * segment file named after the sequence and first index its header claims (bytes 16..31), so
 * a real segment (tests/fuzz/corpus/wal/) keeps a valid name and the fuzzer can also build
 * multi-segment logs, gaps and duplicates. The WAL is opened with replay callbacks that check
 * what the API promises; an open that succeeds is then appended to, synced and reopened,
 * which must succeed again (a log we accepted and wrote to must stay readable).
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cairn_crc32c.h"
#include "cairn_log.h"
#include "fuzz_common.h"
#include "wal.h"


static char g_dir[256];

typedef struct {
    uint64_t n_entries, n_hs, n_snap;
    uint64_t last_index;
} replay_t;

static int on_entry(void *ctx, const cairn_wal_entry_t *e)
{
    replay_t *r = ctx;
    /* the data must be readable for the whole callback */
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < e->len; i++)
        sink ^= e->data[i];
    (void)sink;
    r->n_entries++;
    r->last_index = e->index;
    return 0;
}

static int on_hardstate(void *ctx, const cairn_wal_hardstate_t *hs)
{
    (void)hs;
    ((replay_t *)ctx)->n_hs++;
    return 0;
}

static int on_snapshot(void *ctx, uint64_t index, uint64_t term)
{
    (void)index, (void)term;
    ((replay_t *)ctx)->n_snap++;
    return 0;
}

static void clear_dir(void)
{
    DIR *d = opendir(g_dir);
    if (!d)
        return;
    struct dirent *de;
    char p[600];
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", g_dir, de->d_name);
            unlink(p);
        }
    closedir(d);
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void write_seg(const uint8_t *p, size_t n, uint64_t fallback_seq)
{
    uint64_t seq = n >= 32 ? le64(p + 16) : fallback_seq, first = n >= 32 ? le64(p + 24) : 0;
    char path[600];
    snprintf(path, sizeof path, "%s/%016llx-%016llx.wal", g_dir, (unsigned long long)seq,
             (unsigned long long)first);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return;
    if (n && write(fd, p, n) != (ssize_t)n)
        abort();
    close(fd);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the CRCs of one segment at data[0..n): the header's, then every record's met
 * walking from offset 40 by their lengths (a BATCH record is 32 bytes and its body's records
 * follow it, so one walk covers both), until a length of 0 or one that does not fit. */
static void fix_segment(uint8_t *d, size_t n)
{
    if (n < 40)
        return;
    put_le32(d + 36, cairn_crc32c(d, 36));
    for (size_t p = 40; p + 8 <= n;) {
        uint32_t len = (uint32_t)d[p] | (uint32_t)d[p + 1] << 8 | (uint32_t)d[p + 2] << 16 | (uint32_t)d[p + 3] << 24;
        if (len == 0 || len > n - p - 8)
            return;
        put_le32(d + p + 4, cairn_crc32c_extend(cairn_crc32c(d + p, 4), d + p + 8, len));
        p += (8 + (size_t)len + 7) & ~(size_t)7;
    }
}

/* The mutator (fuzz_common.h) makes every CRC right again for half the mutations: a random
 * byte change almost always breaks a CRC, which only ever tests the torn-tail/corruption
 * checks; with the CRCs fixed the mutated lengths, types, offsets and counts reach the batch
 * validation and replay behind them. The input format stays the directory's raw bytes. Every
 * segment's CRCs: the input is split at each "CAIRNWAL", as LLVMFuzzerTestOneInput does. */
static void fix_all(uint8_t *data, size_t size)
{
    size_t start = 0;
    for (size_t i = 1; i + 8 <= size; i++)
        if (memcmp(data + i, "CAIRNWAL", 8) == 0) {
            fix_segment(data + start, i - start);
            start = i;
        }
    fix_segment(data + start, size - start);
}

CAIRN_FUZZ_CRC_MUTATOR(fix_all)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cairn_log_set_level(CAIRN_LOG_FATAL);
    cairn_fuzz_tmpdir("wal", g_dir, sizeof g_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    clear_dir();
    /* split at each "CAIRNWAL" (a segment header's magic) */
    size_t start = 0;
    uint64_t seq = 0;
    for (size_t i = 1; i + 8 <= size; i++)
        if (memcmp(data + i, "CAIRNWAL", 8) == 0) {
            write_seg(data + start, i - start, seq++);
            start = i;
        }
    write_seg(data + start, size - start, seq);

    /* small segments: a rollover to a new segment happens within one fuzz input's appends */
    cairn_wal_opts_t opts = {.segment_bytes = 4096, .no_sync = 1};
    replay_t r = {0};
    cairn_wal_replay_t cb = {on_entry, on_hardstate, &r, on_snapshot};
    char err[512];
    int werr = 0;
    cairn_wal_t *w = cairn_wal_open(g_dir, &opts, &cb, &werr, err, sizeof err);
    if (!w)
        return 0;
    (void)cairn_wal_last_index(w);
    uint64_t si, st;
    (void)cairn_wal_last_snapshot(w, &si, &st);
    cairn_wal_hardstate_t hs;
    int have_hs = cairn_wal_hardstate(w, &hs) == 0;
    /* Append the next entry (Raft appends after its last index) and a hard state, sync. */
    uint64_t next = cairn_wal_last_index(w) + 1;
    if (next == 0)
        next = 1;
    uint8_t payload[100];
    memset(payload, 'x', sizeof payload);
    cairn_wal_entry_t e = {.index = next, .term = have_hs ? hs.term : 1, .type = 0, .data = payload,
                           .len = sizeof payload};
    int ok = cairn_wal_append_entry(w, &e) == 0 && cairn_wal_sync(w) == 0;
    cairn_wal_destroy(&w);
    if (!ok)
        return 0;
    replay_t r2 = {0};
    cairn_wal_replay_t cb2 = {on_entry, on_hardstate, &r2, on_snapshot};
    w = cairn_wal_open(g_dir, &opts, &cb2, &werr, err, sizeof err);
    if (!w) {
        fprintf(stderr, "reopen after a successful open + append failed: %s\n", err);
        abort();
    }
    if (r2.last_index != next) {
        fprintf(stderr, "reopen replayed up to %llu, appended %llu\n", (unsigned long long)r2.last_index,
                (unsigned long long)next);
        abort();
    }
    cairn_wal_destroy(&w);
    return 0;
}
