/* cairn_u64map.h - an open-addressing hash map from uint64 keys to pointers, for the
 * per-request tables (pending calls by request id, read contexts). Key 0 is reserved. */
#ifndef CAIRN_U64MAP_H
#define CAIRN_U64MAP_H
#include <stddef.h>
#include <stdint.h>

typedef struct cairn_u64map cairn_u64map_t;

cairn_u64map_t *cairn_u64map_new(void);
void cairn_u64map_destroy(cairn_u64map_t **self_p);
/* 0, CAIRN_EINVAL for key 0, CAIRN_ENOMEM. Replaces an existing value. */
int cairn_u64map_put(cairn_u64map_t *self, uint64_t key, void *value);
void *cairn_u64map_get(const cairn_u64map_t *self, uint64_t key);
/* Removes and returns the value (NULL if absent). */
void *cairn_u64map_take(cairn_u64map_t *self, uint64_t key);
size_t cairn_u64map_size(const cairn_u64map_t *self);
/* Iteration: *pos starts at 0; returns 0 when done. Removing the current key while
 * iterating is allowed (backward-shift deletion may revisit a moved entry: callers are
 * idempotent). */
int cairn_u64map_next(const cairn_u64map_t *self, size_t *pos, uint64_t *key, void **value);

#endif
