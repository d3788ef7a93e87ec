/* mvcc_overlay.c - the arena and the overlay of the MVCC store (mvcc_internal.h).
 *
 * The arena is a bump allocator (mvcc.h: requests and batches allocate from one so that no
 * key costs a malloc of its own). The overlay is the open batch as a sorted map of LevelDB
 * keys, a skip list whose nodes, keys and values live in its arena: reads of the pending view
 * merge it over LevelDB, and batch_commit walks it in order into one WriteBatch (mvcc.c,
 * "THE RULE THAT KEEPS IT CONSISTENT"). It holds no format of its own.
 */
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "mvcc_internal.h"

/* ---- arena ---------------------------------------------------------------------------- */

struct cairn_arena_chunk {
    cairn_arena_chunk_t *next;
    size_t cap, used;
};
#define ARENA_HDR ((sizeof(cairn_arena_chunk_t) + 15) & ~(size_t)15)
#define ARENA_MIN (64 * 1024)
#define ARENA_MAX (4 * 1024 * 1024)
#define ARENA_DATA(c) ((uint8_t *)(c) + ARENA_HDR)

void *cairn_arena_alloc(cairn_arena_t *a, size_t n)
{
    n = n ? (n + 15) & ~(size_t)15 : 16;
    cairn_arena_chunk_t *c = a->head;
    if (c && c->cap - c->used >= n) {
        void *p = ARENA_DATA(c) + c->used;
        c->used += n;
        a->bytes += n;
        return p;
    }
    if (n > ARENA_MIN / 4) {
        /* A big block gets a chunk of its own, linked behind the head so the head keeps
         * serving small allocations. */
        cairn_arena_chunk_t *nc = malloc(ARENA_HDR + n);
        if (!nc)
            return NULL;
        nc->cap = nc->used = n;
        if (c) {
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = NULL;
            a->head = nc;
        }
        a->bytes += n;
        return ARENA_DATA(nc);
    }
    /* Chunks grow with the arena (a batch of 1000 puts needs megabytes), up to 4 MiB. */
    size_t cap = a->bytes < ARENA_MIN ? ARENA_MIN : a->bytes > ARENA_MAX ? ARENA_MAX : a->bytes;
    cairn_arena_chunk_t *nc = malloc(ARENA_HDR + cap);
    if (!nc)
        return NULL;
    nc->cap = cap;
    nc->used = n;
    nc->next = c;
    a->head = nc;
    a->bytes += n;
    return ARENA_DATA(nc);
}

void *cairn_arena_dup(cairn_arena_t *a, const void *p, size_t n)
{
    void *d = cairn_arena_alloc(a, n);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

void cairn_arena_reset(cairn_arena_t *a)
{
    cairn_arena_chunk_t *keep = a->head;
    if (keep && (keep->cap < ARENA_MIN || keep->cap > ARENA_MAX))
        keep = NULL;   /* a dedicated big block: not worth keeping */
    cairn_arena_chunk_t *c = a->head;
    while (c) {
        cairn_arena_chunk_t *next = c->next;
        if (c != keep)
            free(c);
        c = next;
    }
    if (keep) {
        keep->next = NULL;
        keep->used = 0;
    }
    a->head = keep;
    a->bytes = 0;
}

void cairn_arena_free(cairn_arena_t *a)
{
    cairn_arena_reset(a);
    free(a->head);
    a->head = NULL;
}

int ov_init(overlay_t *o)
{
    memset(o, 0, sizeof *o);
    o->head = calloc(1, sizeof(ov_node_t) + OV_MAXH * sizeof(ov_node_t *));
    o->height = 1;
    o->rnd = 0x9E3779B97F4A7C15ull;
    return o->head ? 0 : CAIRN_ENOMEM;
}

void ov_clear(overlay_t *o)
{
    cairn_arena_reset(&o->arena);
    memset(o->head->next, 0, OV_MAXH * sizeof(ov_node_t *));
    o->height = 1;
    o->count = 0;
}

void ov_fini(overlay_t *o)
{
    cairn_arena_free(&o->arena);
    free(o->head);
    o->head = NULL;
}

/* First node >= key; fills prev[] (may be NULL) with the last node < key on each level. */
ov_node_t *ov_find_ge(const overlay_t *o, const uint8_t *key, size_t klen, ov_node_t **prev)
{
    ov_node_t *x = o->head;
    for (int lv = o->height - 1; lv >= 0; lv--) {
        ov_node_t *nx;
        while ((nx = x->next[lv]) && keycmp(nx->key, nx->klen, key, klen) < 0)
            x = nx;
        if (prev)
            prev[lv] = x;
    }
    return x->next[0];
}

const ov_node_t *ov_get(const overlay_t *o, const uint8_t *key, size_t klen)
{
    if (!o->count)
        return NULL;
    const ov_node_t *n = ov_find_ge(o, key, klen, NULL);
    return n && keycmp(n->key, n->klen, key, klen) == 0 ? n : NULL;
}

/* Sets key to v1||v2 (or deletes it when del), copying everything into the arena. */
int ov_set(overlay_t *o, const uint8_t *key, size_t klen, const void *v1, size_t n1, const void *v2,
                  size_t n2, int del)
{
    if (klen > UINT32_MAX || n1 + n2 > UINT32_MAX)
        return CAIRN_ETOOBIG;
    ov_node_t *prev[OV_MAXH];
    ov_node_t *n = ov_find_ge(o, key, klen, prev);
    if (!n || keycmp(n->key, n->klen, key, klen) != 0) {
        int h = 1;
        while (h < OV_MAXH) {
            o->rnd ^= o->rnd << 13;
            o->rnd ^= o->rnd >> 7;
            o->rnd ^= o->rnd << 17;
            if ((o->rnd & 3) != 0)
                break;
            h++;
        }
        n = cairn_arena_alloc(&o->arena, sizeof(ov_node_t) + (size_t)h * sizeof(ov_node_t *));
        uint8_t *kc = cairn_arena_dup(&o->arena, key, klen);
        if (!n || !kc)
            return CAIRN_ENOMEM;
        n->key = kc;
        n->klen = (uint32_t)klen;
        for (int lv = o->height; lv < h; lv++)
            prev[lv] = o->head;
        if (h > o->height)
            o->height = h;
        for (int lv = 0; lv < h; lv++) {
            n->next[lv] = prev[lv]->next[lv];
            prev[lv]->next[lv] = n;
        }
        o->count++;
    }
    n->del = (uint8_t)(del != 0);
    n->val = NULL;
    n->vlen = 0;
    if (!del) {
        uint8_t *v = cairn_arena_alloc(&o->arena, n1 + n2);
        if (!v)
            return CAIRN_ENOMEM;
        if (n1)
            memcpy(v, v1, n1);
        if (n2)
            memcpy(v + n1, v2, n2);
        n->val = v;
        n->vlen = (uint32_t)(n1 + n2);
    }
    return 0;
}
