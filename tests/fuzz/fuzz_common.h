/* fuzz_common.h - what the fuzz targets share (header only).
 *
 * cairn_fuzz_tmpdir: the target's own directory, $TMPDIR/cairn-fuzz-<tag>-XXXXXX (run_fuzz.sh
 * points TMPDIR at a tmpfs), made once in LLVMFuzzerInitialize; aborts if it cannot.
 * CAIRN_FUZZ_CRC_MUTATOR(fix): libFuzzer's mutations, then for half of them fix(data, size)
 * makes every checksum of the format right again, so mutated lengths, types and numbers get
 * past the checksums to the parser behind them (fuzz_wal, fuzz_ldblog, fuzz_backup). */
#ifndef CAIRN_FUZZ_COMMON_H
#define CAIRN_FUZZ_COMMON_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

static inline void cairn_fuzz_tmpdir(const char *tag, char *dir, size_t cap)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, cap, "%s/cairn-fuzz-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (!mkdtemp(dir))
        abort();
}

#define CAIRN_FUZZ_CRC_MUTATOR(fix)                                                              \
    size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) \
    {                                                                                            \
        size = LLVMFuzzerMutate(data, size, max_size);                                           \
        if (seed & 1)                                                                            \
            fix(data, size);                                                                     \
        return size;                                                                             \
    }

#endif
