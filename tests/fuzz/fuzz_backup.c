/* fuzz_backup.c - libFuzzer target: the backup segment reader of `cairnctl restore`
 * (tools/cairnctl_backup.c: seg_read and the record parser behind it). A backup directory is
 * a file format read back from disk, possibly years later and possibly damaged.
 *
 * The input is one segment file (changes-<first>.seg: the 32-byte header, then records). It
 * is read twice, as a middle segment (any bad record is corruption) and as the last one (a
 * torn tail is allowed); every record handed to the callback is walked as restore walks it
 * (the events of a REV record with ev_get, the ids of a LEASES record). The reader must stop
 * inside the file, and a segment it accepts whole must end where its last record ends. Half
 * of the mutations make the header's and every record's CRC-32C right again, so lengths,
 * types and event layouts get past the checksums to the parser. Seeds: segments a real
 * backup wrote (test_backup_pitr's, 4 KiB and 64 KiB segments).
 *
 * The reader is static in cairnctl_backup.c, so this file includes it; cairnctl_snapshot
 * (cairnctl_snapshot.c, which restore hands its result to) is never reached from here. */
#include "../../tools/cairnctl_backup.c"
#include "fuzz_common.h"


int cairnctl_snapshot(int argc, char **argv)
{
    (void)argc, (void)argv;
    abort(); /* not reached: only the segment reader runs here */
}

static char g_path[300];

static void fix_crcs(uint8_t *d, size_t n)
{
    if (n < SEG_HDR)
        return;
    cairn_put_le32(d + 28, cairn_crc32c(d, 28));
    for (size_t p = SEG_HDR; n - p >= REC_HDR;) {
        uint32_t len = cairn_get_le32(d + p);
        if (len == 0 || len > n - p - REC_HDR)
            return;
        cairn_put_le32(d + p + 4, cairn_crc32c(d + p + REC_HDR, len));
        p += REC_HDR + (size_t)len;
    }
}

CAIRN_FUZZ_CRC_MUTATOR(fix_crcs)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cairn_log_set_level(CAIRN_LOG_FATAL);
    char dir[256];
    cairn_fuzz_tmpdir("backup", dir, sizeof dir);
    snprintf(g_path, sizeof g_path, "%s/changes-1.seg", dir);
    return 0;
}

typedef struct {
    uint64_t size;
    uint64_t records, sink;
} walk_t;

static int walk(void *arg, const char *path, uint64_t off, const rec_t *r)
{
    (void)path;
    walk_t *w = arg;
    if (off < SEG_HDR || off >= w->size)
        abort(); /* a record outside the file */
    w->records++;
    if (r->type == R_REV) {
        const uint8_t *p = r->body;
        for (uint32_t i = 0; i < r->n; i++) {
            ev_t e;
            ev_get(&p, &e);
            for (uint32_t k = 0; k < e.klen; k++)
                w->sink += e.key[k];
            for (uint32_t k = 0; k < e.vlen; k++)
                w->sink += e.value[k];
        }
    } else if (r->type == R_LEASES) {
        for (uint32_t i = 0; i < r->n; i++)
            w->sink += cairn_get_le64(r->body + 16 * i) + cairn_get_le64(r->body + 16 * i + 8);
        for (uint32_t i = 0; i < r->n_gone; i++)
            w->sink += cairn_get_le64(r->gone + 8 * i);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    FILE *f = fopen(g_path, "wb");
    if (!f || fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
    for (int tail_ok = 0; tail_ok < 2; tail_ok++) {
        walk_t w = {.size = size};
        seg_info_t si;
        char err[512];
        int rc = seg_read(g_path, 0, tail_ok, walk, &w, &si, err, sizeof err);
        if (si.valid_end > size)
            abort();
        if (rc == 0 && !si.torn && w.records && si.valid_end != size)
            abort(); /* accepted whole, yet bytes after the last record */
        if (rc == 0 && si.last_rev < si.first_rev - 1)
            abort();
    }
    return 0;
}
