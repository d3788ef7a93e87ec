/* memlog.c - the in-memory tail of the raft log in stored (memlog.h has the rules).
 *
 * An array of entries, e[k] at index first + k; dropping from the front moves the array
 * down (trim amortises that over thousands of entries). bytes counts the entries' data so
 * that the log is bounded by bytes as well as by entries.
 */
#include "memlog.h"

#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_log.h"

struct cairn_memlog {
    cairn_memlog_entry_t *e;
    size_t n, cap;
    uint64_t first;                 /* index of e[0] */
    uint64_t snap_index, snap_term; /* the log starts after this point */
    uint64_t bytes;                 /* sum of the entries' lengths */
};

cairn_memlog_t *cairn_memlog_new(void) { return calloc(1, sizeof(cairn_memlog_t)); }

void cairn_memlog_destroy(cairn_memlog_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_memlog_t *l = *self_p;
    for (size_t i = 0; i < l->n; i++)
        free((void *)l->e[i].data);
    free(l->e);
    free(l);
    *self_p = NULL;
}

uint64_t cairn_memlog_last(const cairn_memlog_t *l) { return l->n ? l->first + l->n - 1 : l->snap_index; }
uint64_t cairn_memlog_first(const cairn_memlog_t *l) { return l->n ? l->first : l->snap_index + 1; }
size_t cairn_memlog_count(const cairn_memlog_t *l) { return l->n; }
uint64_t cairn_memlog_bytes(const cairn_memlog_t *l) { return l->bytes; }
uint64_t cairn_memlog_snap_index(const cairn_memlog_t *l) { return l->snap_index; }
uint64_t cairn_memlog_snap_term(const cairn_memlog_t *l) { return l->snap_term; }

void cairn_memlog_set_snap(cairn_memlog_t *l, uint64_t index, uint64_t term)
{
    l->snap_index = index;
    l->snap_term = term;
}

const cairn_memlog_entry_t *cairn_memlog_at(const cairn_memlog_t *l, uint64_t index)
{
    if (index < l->first || index >= l->first + l->n)
        return NULL;
    return &l->e[index - l->first];
}

const cairn_memlog_entry_t *cairn_memlog_nth(const cairn_memlog_t *l, size_t i) { return i < l->n ? &l->e[i] : NULL; }

void cairn_memlog_truncate_from(cairn_memlog_t *l, uint64_t index)
{
    while (l->n && l->first + l->n - 1 >= index) {
        l->bytes -= l->e[l->n - 1].len;
        free((void *)l->e[l->n - 1].data);
        l->n--;
    }
}

/* Drops the first k entries (the caller says what the log now starts after). */
static void drop_front(cairn_memlog_t *l, size_t k)
{
    if (k > l->n)
        k = l->n;
    if (k == 0)
        return;
    for (size_t i = 0; i < k; i++) {
        l->bytes -= l->e[i].len;
        free((void *)l->e[i].data);
    }
    memmove(l->e, l->e + k, (l->n - k) * sizeof *l->e);
    l->n -= k;
    l->first += k;
}

int cairn_memlog_append(cairn_memlog_t *l, uint64_t index, uint64_t term, uint8_t type, const uint8_t *data,
                        size_t len)
{
    if (l->n && index <= cairn_memlog_last(l))
        cairn_memlog_truncate_from(l, index); /* Raft overwrote a suffix (§5.3) */
    if (l->n && index != cairn_memlog_last(l) + 1) {
        /* A gap: only possible when the entries before it were already applied (a torn WAL
         * tail behind a newer state machine); they are no longer needed. */
        cairn_warn("log gap; restarting the in-memory log", "last=%llu next=%llu",
                   (unsigned long long)cairn_memlog_last(l), (unsigned long long)index);
        l->snap_index = index - 1;
        l->snap_term = 0;
        cairn_memlog_truncate_from(l, 0);
    }
    if (l->n == 0)
        l->first = index;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 1024;
        cairn_memlog_entry_t *ne = realloc(l->e, nc * sizeof *ne);
        if (!ne)
            return CAIRN_ENOMEM;
        l->e = ne;
        l->cap = nc;
    }
    cairn_memlog_entry_t *e = &l->e[l->n];
    uint8_t *copy = NULL;
    if (len) {
        if (!(copy = malloc(len)))
            return CAIRN_ENOMEM;
        memcpy(copy, data, len);
    }
    *e = (cairn_memlog_entry_t){index, term, type, copy, len};
    l->n++;
    l->bytes += len;
    return 0;
}

size_t cairn_memlog_trim(cairn_memlog_t *l, uint64_t applied, uint64_t keep_entries, uint64_t max_bytes)
{
    if (l->n == 0 || l->first > applied)
        return 0;
    size_t n_applied = (size_t)(applied - l->first + 1);
    if (n_applied > l->n)
        n_applied = l->n;
    size_t k = n_applied > keep_entries ? (size_t)(n_applied - keep_entries) : 0;
    if (k < 4096 && k < n_applied)
        k = 0; /* amortise the memmove */
    if (l->bytes > max_bytes) {
        uint64_t target = max_bytes / 4 * 3, bytes = l->bytes;
        for (size_t i = 0; i < k; i++)
            bytes -= l->e[i].len;
        while (k < n_applied && bytes > target)
            bytes -= l->e[k++].len;
    }
    if (k == 0)
        return 0;
    l->snap_index = l->e[k - 1].index;
    l->snap_term = l->e[k - 1].term;
    drop_front(l, k);
    return k;
}

void cairn_memlog_start_after(cairn_memlog_t *l, uint64_t index, uint64_t term)
{
    size_t k = 0;
    while (k < l->n && l->e[k].index <= index)
        k++;
    drop_front(l, k);
    if (l->n == 0)
        l->first = index + 1;
    l->snap_index = index;
    l->snap_term = term;
}

void cairn_memlog_reset_to_snapshot(cairn_memlog_t *l, uint64_t S, uint64_t T, uint64_t A, uint64_t AT)
{
    const cairn_memlog_entry_t *e = cairn_memlog_at(l, S);
    int held = (e && e->term == T) || (l->snap_index == S && l->snap_term == T);
    if (held && l->n && S >= l->first) {
        drop_front(l, (size_t)(S - l->first + 1));
        l->first = S + 1;
    } else if (!held) {
        cairn_memlog_truncate_from(l, 0);
    }
    if (l->n == 0)
        l->first = S + 1;
    l->snap_index = S;
    l->snap_term = T;
    /* The state machine may be past S (the leader snapshots its current state). Entries up
     * to A are in it; an old entry kept between S and A could be one that a later leader
     * replaced (only S is known to match), and one that raftd would load and replicate: drop
     * them, the log starts after A. */
    if (A > S) {
        cairn_memlog_start_after(l, A, AT);
        if (l->n && l->first != A + 1) {
            /* not contiguous with A: nothing after it is usable */
            cairn_memlog_truncate_from(l, 0);
            l->first = A + 1;
        }
    }
}
