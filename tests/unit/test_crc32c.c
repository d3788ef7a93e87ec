/* Unit tests for cairn_crc32c: known vectors (RFC 3720 B.4) and that the hardware and
 * incremental paths agree with the one-shot answer. */
#include <criterion/criterion.h>
#include <string.h>

#include "cairn_crc32c.h"
#include "cairn_err.h"

Test(crc32c, known_vectors)
{
    cr_assert_eq(cairn_crc32c("123456789", 9), 0xE3069283u);
    unsigned char zeros[32] = {0};
    cr_assert_eq(cairn_crc32c(zeros, 32), 0x8A9136AAu);
    unsigned char ones[32];
    memset(ones, 0xff, sizeof ones);
    cr_assert_eq(cairn_crc32c(ones, 32), 0x62A8AB43u);
    cr_assert_eq(cairn_crc32c("", 0), 0u);
}

Test(crc32c, incremental_equals_one_shot)
{
    unsigned char buf[1000];
    for (int i = 0; i < 1000; i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    uint32_t whole = cairn_crc32c(buf, sizeof buf);
    for (size_t cut = 0; cut <= sizeof buf; cut += 37) {
        uint32_t c = cairn_crc32c_extend(0, buf, cut);
        c = cairn_crc32c_extend(c, buf + cut, sizeof buf - cut);
        cr_assert_eq(c, whole, "split at %zu", cut);
    }
}

Test(err, strings_are_distinct_and_known)
{
    cr_assert_str_eq(cairn_strerror(CAIRN_ECORRUPT), "data is corrupt");
    cr_assert_str_eq(cairn_strerror(0), "ok");
    cr_assert_str_eq(cairn_strerror(12345), "unknown error");
    cr_assert(CAIRN_ENOMEM < 0 && CAIRN_ESTATE < 0);
}
