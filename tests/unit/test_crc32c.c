/* Unit tests for cairn_crc32c: known vectors (RFC 3720 B.4), agreement with a bit-at-a-time
 * reference at every length and alignment (whichever of the SSE4.2 or table paths this CPU
 * takes), and that the incremental path agrees with the one-shot answer. Also cairn_strerror:
 * every code has its own string. */
#include <criterion/criterion.h>
#include <stdint.h>
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
    unsigned char inc[32], dec[32];
    for (int i = 0; i < 32; i++)
        inc[i] = (unsigned char)i, dec[i] = (unsigned char)(31 - i);
    cr_assert_eq(cairn_crc32c(inc, 32), 0x46DD794Eu);
    cr_assert_eq(cairn_crc32c(dec, 32), 0x113FDB5Cu);
    cr_assert_eq(cairn_crc32c("a", 1), 0xC1D04330u);
}

/* the definition: reflected CRC-32C, one bit at a time */
static uint32_t crc_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

Test(crc32c, agrees_with_reference_at_every_length_and_alignment)
{
    static unsigned char buf[300 + 8];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    for (size_t align = 0; align < 8; align++)
        for (size_t n = 0; n <= 300; n++)
            cr_assert_eq(cairn_crc32c(buf + align, n), crc_ref(buf + align, n), "len %zu at offset %zu", n, align);
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
    cr_assert_str_eq(cairn_strerror(CAIRN_ERR_BASE_), "unknown error");
    cr_assert_str_eq(cairn_strerror(CAIRN_ERR_END_), "unknown error");

    /* every code of the X-macro: negative, its own value, the string the map gives it, and a
     * string no other code (nor 0, nor an unknown code) has */
    static const struct {
        int code;
        const char *name, *str;
    } all[] = {
#define E_(name, str) {CAIRN_E##name, #name, str},
        CAIRN_ERRNO_MAP(E_)
#undef E_
    };
    const size_t n = sizeof all / sizeof all[0];
    cr_assert_eq(n, (size_t)(CAIRN_ERR_END_ - CAIRN_ERR_BASE_ - 1), "the map and the enum disagree");
    for (size_t i = 0; i < n; i++) {
        const char *s = cairn_strerror(all[i].code);
        cr_assert_lt(all[i].code, 0, "CAIRN_E%s is not negative", all[i].name);
        cr_assert_str_eq(s, all[i].str, "CAIRN_E%s", all[i].name);
        cr_assert_str_neq(s, "ok", "CAIRN_E%s", all[i].name);
        cr_assert_str_neq(s, "unknown error", "CAIRN_E%s", all[i].name);
        cr_assert_gt(strlen(s), 0, "CAIRN_E%s has an empty string", all[i].name);
        for (size_t j = 0; j < i; j++) {
            cr_assert_neq(all[i].code, all[j].code, "CAIRN_E%s == CAIRN_E%s", all[i].name, all[j].name);
            cr_assert_str_neq(s, cairn_strerror(all[j].code), "CAIRN_E%s and CAIRN_E%s share a string",
                              all[i].name, all[j].name);
        }
    }
}
