/* test_memlog.c - the in-memory tail of the raft log in stored (services/stored/memlog.h):
 * append with Raft's overwrite and gap rules, the trim that bounds it by entries and bytes
 * (issue 7), and the snapshot install rule. */
#include <criterion/criterion.h>
#include <string.h>

#include "cairn_err.h"
#include "memlog.h"

static uint8_t g_buf[1 << 16];

static void put(cairn_memlog_t *l, uint64_t from, uint64_t to, uint64_t term, size_t len)
{
    for (uint64_t i = from; i <= to; i++) {
        memset(g_buf, (int)(i & 0xff), len);
        cr_assert_eq(cairn_memlog_append(l, i, term, 0, g_buf, len), 0);
    }
}

static void check_contiguous(const cairn_memlog_t *l)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < cairn_memlog_count(l); i++) {
        const cairn_memlog_entry_t *e = cairn_memlog_nth(l, i);
        cr_assert_eq(e->index, cairn_memlog_first(l) + i);
        cr_assert_eq(cairn_memlog_at(l, e->index), e);
        cr_assert_eq(e, cairn_memlog_nth(l, 0) + i, "entries are one array (LOAD sends a page from it)");
        bytes += e->len;
    }
    cr_assert_eq(cairn_memlog_bytes(l), bytes, "bytes counted %llu, held %llu",
                 (unsigned long long)cairn_memlog_bytes(l), (unsigned long long)bytes);
}

Test(memlog, append_overwrite_and_gap)
{
    cairn_memlog_t *l = cairn_memlog_new();
    cr_assert_eq(cairn_memlog_last(l), 0);
    cr_assert_null(cairn_memlog_at(l, 1));
    put(l, 1, 10, 1, 100);
    cr_assert_eq(cairn_memlog_count(l), 10);
    cr_assert_eq(cairn_memlog_last(l), 10);
    cr_assert_eq(cairn_memlog_bytes(l), 1000);
    /* a new leader overwrites 6.. (Raft §5.3) */
    put(l, 6, 7, 2, 50);
    cr_assert_eq(cairn_memlog_last(l), 7);
    cr_assert_eq(cairn_memlog_at(l, 6)->term, 2);
    cr_assert_eq(cairn_memlog_bytes(l), 500 + 100);
    check_contiguous(l);
    /* a gap restarts the log after it (the torn-tail case) */
    put(l, 20, 20, 3, 10);
    cr_assert_eq(cairn_memlog_count(l), 1);
    cr_assert_eq(cairn_memlog_first(l), 20);
    cr_assert_eq(cairn_memlog_snap_index(l), 19);
    cr_assert_eq(cairn_memlog_bytes(l), 10);
    check_contiguous(l);
    cairn_memlog_truncate_from(l, 0);
    cr_assert_eq(cairn_memlog_count(l), 0);
    cr_assert_eq(cairn_memlog_bytes(l), 0);
    cairn_memlog_destroy(&l);
    cr_assert_null(l);
    cairn_memlog_destroy(&l); /* idempotent */
}

/* Never an unapplied entry; at most keep_entries applied ones, by steps of >= 4096. */
Test(memlog, trim_by_entries_keeps_unapplied)
{
    cairn_memlog_t *l = cairn_memlog_new();
    put(l, 1, 20000, 1, 8);
    cr_assert_eq(cairn_memlog_trim(l, 0, 5000, UINT64_MAX), 0, "nothing applied: nothing goes");
    cr_assert_eq(cairn_memlog_trim(l, 8000, 5000, UINT64_MAX), 0, "3000 over the keep: below the step");
    size_t k = cairn_memlog_trim(l, 15000, 5000, UINT64_MAX);
    cr_assert_eq(k, 10000);
    cr_assert_eq(cairn_memlog_first(l), 10001);
    cr_assert_eq(cairn_memlog_snap_index(l), 10000);
    cr_assert_eq(cairn_memlog_snap_term(l), 1);
    cr_assert_eq(cairn_memlog_last(l), 20000);
    check_contiguous(l);
    /* everything applied, keep 0: all goes (fewer than the step, but every applied one) */
    cr_assert_eq(cairn_memlog_trim(l, 20000, 0, UINT64_MAX), 10000);
    cr_assert_eq(cairn_memlog_count(l), 0);
    cr_assert_eq(cairn_memlog_last(l), 20000, "the log starts after the last one dropped");
    cairn_memlog_destroy(&l);
}

/* Over the byte budget: applied entries go down to 3/4 of it; unapplied ones stay even when
 * they alone exceed it (100,000 entries of 1 MiB must not mean 100 GB, but what is not applied
 * yet cannot be dropped). */
Test(memlog, trim_by_bytes)
{
    cairn_memlog_t *l = cairn_memlog_new();
    put(l, 1, 100, 1, 1000); /* 100,000 bytes */
    cr_assert_eq(cairn_memlog_trim(l, 100, 5000, 40000), 70, "down to 30,000 (3/4 of 40,000)");
    cr_assert_eq(cairn_memlog_bytes(l), 30000);
    cr_assert_eq(cairn_memlog_first(l), 71);
    check_contiguous(l);
    put(l, 101, 200, 1, 1000); /* 130,000 bytes, 101.. not applied */
    cr_assert_eq(cairn_memlog_trim(l, 100, 5000, 40000), 30, "only the applied ones can go");
    cr_assert_eq(cairn_memlog_first(l), 101);
    cr_assert_eq(cairn_memlog_bytes(l), 100000);
    cr_assert_eq(cairn_memlog_trim(l, 100, 5000, 40000), 0);
    check_contiguous(l);
    cairn_memlog_destroy(&l);
}

Test(memlog, snapshot_install_rule)
{
    /* the log holds (S, T): the entries after S stay */
    cairn_memlog_t *l = cairn_memlog_new();
    put(l, 1, 10, 2, 10);
    cairn_memlog_reset_to_snapshot(l, 5, 2, 0, 0);
    cr_assert_eq(cairn_memlog_first(l), 6);
    cr_assert_eq(cairn_memlog_last(l), 10);
    cr_assert_eq(cairn_memlog_snap_index(l), 5);
    check_contiguous(l);
    /* it does not (another term at S): the whole log goes */
    cairn_memlog_reset_to_snapshot(l, 8, 3, 0, 0);
    cr_assert_eq(cairn_memlog_count(l), 0);
    cr_assert_eq(cairn_memlog_last(l), 8);
    cr_assert_eq(cairn_memlog_snap_term(l), 3);
    cr_assert_eq(cairn_memlog_bytes(l), 0);
    cairn_memlog_destroy(&l);

    /* a state machine past S (applied 7): the log starts after 7, old entries between S and
     * it are not kept */
    l = cairn_memlog_new();
    put(l, 1, 10, 2, 10);
    cairn_memlog_reset_to_snapshot(l, 5, 2, 7, 2);
    cr_assert_eq(cairn_memlog_first(l), 8);
    cr_assert_eq(cairn_memlog_snap_index(l), 7);
    check_contiguous(l);
    /* ... and past the whole log: empty, starting after the applied index */
    cairn_memlog_reset_to_snapshot(l, 9, 2, 12, 4);
    cr_assert_eq(cairn_memlog_count(l), 0);
    cr_assert_eq(cairn_memlog_last(l), 12);
    cr_assert_eq(cairn_memlog_snap_term(l), 4);
    put(l, 13, 13, 4, 1);
    cr_assert_eq(cairn_memlog_first(l), 13);
    cairn_memlog_destroy(&l);
}

Test(memlog, start_after_and_set_snap)
{
    cairn_memlog_t *l = cairn_memlog_new();
    put(l, 5, 9, 1, 3);
    cairn_memlog_start_after(l, 5, 1);
    cr_assert_eq(cairn_memlog_first(l), 6);
    cr_assert_eq(cairn_memlog_snap_index(l), 5);
    cr_assert_eq(cairn_memlog_bytes(l), 12);
    cairn_memlog_set_snap(l, 5, 7);
    cr_assert_eq(cairn_memlog_snap_term(l), 7);
    cr_assert_eq(cairn_memlog_count(l), 4, "set_snap drops nothing");
    cairn_memlog_start_after(l, 20, 2);
    cr_assert_eq(cairn_memlog_count(l), 0);
    cr_assert_eq(cairn_memlog_first(l), 21);
    cr_assert_eq(cairn_memlog_last(l), 20);
    cairn_memlog_destroy(&l);
}
