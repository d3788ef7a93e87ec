/* cairn_u64map.c - linear probing with backward-shift deletion (no tombstones), capacity a
 * power of two kept at most 3/4 full. */
#include "cairn_u64map.h"

#include <stdlib.h>

#include "cairn_err.h"

typedef struct {
    uint64_t key;
    void *value;
} slot_t;

struct cairn_u64map {
    slot_t *slots;
    size_t cap, size;
};

static size_t hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k;
}

cairn_u64map_t *cairn_u64map_new(void)
{
    cairn_u64map_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->cap = 64;
    m->slots = calloc(m->cap, sizeof(slot_t));
    if (!m->slots) {
        free(m);
        return NULL;
    }
    return m;
}

void cairn_u64map_destroy(cairn_u64map_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->slots);
    free(*self_p);
    *self_p = NULL;
}

static int grow(cairn_u64map_t *m)
{
    size_t ncap = m->cap * 2;
    slot_t *ns = calloc(ncap, sizeof(slot_t));
    if (!ns)
        return CAIRN_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        size_t j = hash(m->slots[i].key) & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int cairn_u64map_put(cairn_u64map_t *m, uint64_t key, void *value)
{
    if (!key)
        return CAIRN_EINVAL;
    if ((m->size + 1) * 4 > m->cap * 3 && grow(m))
        return CAIRN_ENOMEM;
    size_t i = hash(key) & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & (m->cap - 1);
    if (!m->slots[i].key)
        m->size++;
    m->slots[i].key = key;
    m->slots[i].value = value;
    return 0;
}

static size_t find(const cairn_u64map_t *m, uint64_t key)
{
    if (!key)
        return (size_t)-1;
    size_t i = hash(key) & (m->cap - 1);
    while (m->slots[i].key) {
        if (m->slots[i].key == key)
            return i;
        i = (i + 1) & (m->cap - 1);
    }
    return (size_t)-1;
}

void *cairn_u64map_get(const cairn_u64map_t *m, uint64_t key)
{
    size_t i = find(m, key);
    return i == (size_t)-1 ? NULL : m->slots[i].value;
}

void *cairn_u64map_take(cairn_u64map_t *m, uint64_t key)
{
    size_t i = find(m, key);
    if (i == (size_t)-1)
        return NULL;
    void *v = m->slots[i].value;
    size_t mask = m->cap - 1, j = i;
    for (;;) { /* backward shift: keep every probe chain unbroken */
        j = (j + 1) & mask;
        if (!m->slots[j].key)
            break;
        size_t home = hash(m->slots[j].key) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->slots[i].value = NULL;
    m->size--;
    return v;
}

size_t cairn_u64map_size(const cairn_u64map_t *m) { return m->size; }

int cairn_u64map_next(const cairn_u64map_t *m, size_t *pos, uint64_t *key, void **value)
{
    while (*pos < m->cap) {
        slot_t *s = &m->slots[(*pos)++];
        if (s->key) {
            *key = s->key;
            *value = s->value;
            return 1;
        }
    }
    return 0;
}
