/* Unit tests for cairn_u64map against a reference array, through growth and deletions. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "cairn_err.h"
#include "cairn_u64map.h"

Test(u64map, matches_reference_under_random_ops)
{
    cairn_u64map_t *m = cairn_u64map_new();
    enum { N = 5000 };
    static void *ref[N];
    srand(1);
    for (int op = 0; op < 200000; op++) {
        uint64_t k = 1 + (uint64_t)(rand() % (N - 1));
        if (rand() % 3) {
            void *v = (void *)(uintptr_t)(op + 1);
            cr_assert_eq(cairn_u64map_put(m, k, v), 0);
            ref[k] = v;
        } else {
            cr_assert_eq(cairn_u64map_take(m, k), ref[k]);
            ref[k] = NULL;
        }
    }
    size_t n = 0;
    for (uint64_t k = 1; k < N; k++) {
        cr_assert_eq(cairn_u64map_get(m, k), ref[k], "key %lu", (unsigned long)k);
        n += ref[k] != NULL;
    }
    cr_assert_eq(cairn_u64map_size(m), n);
    size_t pos = 0, seen = 0;
    uint64_t key;
    void *val;
    while (cairn_u64map_next(m, &pos, &key, &val)) {
        cr_assert_eq(ref[key], val);
        seen++;
    }
    cr_assert_eq(seen, n);
    cr_assert_eq(cairn_u64map_put(m, 0, NULL), CAIRN_EINVAL);
    cairn_u64map_destroy(&m);
    cr_assert_null(m);
    cairn_u64map_destroy(&m);
}
