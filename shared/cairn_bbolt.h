/* cairn_bbolt.h - bbolt database files (the backend file of etcd 3.4: `member/snap/db`, and
 * what Maintenance/Snapshot streams): a streaming writer and a checked reader. The file format
 * is described byte by byte at the top of cairn_bbolt.c.
 *
 * Only what etcd's files use is supported: top-level buckets holding key/value pairs (no
 * buckets nested deeper, no sequences). The writer takes buckets in name order and keys in
 * key order (both bytewise, as bbolt sorts) and writes each page once, as it fills, so its
 * memory does not grow with the data: a few pages per tree level, plus the list of top-level
 * buckets. The reader maps the file read-only and checks every page id, size and offset
 * against the file before it touches the bytes, so a damaged or hostile file is an error,
 * never a crash.
 *
 * Errors are CAIRN_E* codes; functions that take errbuf fill it with a sentence.
 */
#ifndef CAIRN_BBOLT_H
#define CAIRN_BBOLT_H

#include <stddef.h>
#include <stdint.h>

#define CAIRN_BBOLT_PAGE_SIZE 4096u
#define CAIRN_BBOLT_MAX_KEY 32768u              /* bbolt's MaxKeySize */
#define CAIRN_BBOLT_MAX_VALUE ((1u << 31) - 2u) /* bbolt's MaxValueSize */

/* ---- writing ----------------------------------------------------------------------------- */

typedef struct cairn_bbolt_writer cairn_bbolt_writer_t;

/* A writer that fills fd from offset 0 (the caller opened it empty, and syncs and closes it).
 * NULL only when out of memory. */
cairn_bbolt_writer_t *cairn_bbolt_writer_new(int fd);
void cairn_bbolt_writer_destroy(cairn_bbolt_writer_t **self_p);

/* Starts the next top-level bucket: names strictly ascending, 1..MAX_KEY bytes. */
int cairn_bbolt_bucket_begin(cairn_bbolt_writer_t *w, const void *name, size_t name_len);
/* Adds a pair to the open bucket: keys strictly ascending, 1..MAX_KEY bytes; values up to
 * MAX_VALUE bytes (may be empty). CAIRN_EINVAL for out-of-order or oversized input,
 * CAIRN_ENOSPC/CAIRN_EIO when writing failed (the writer then refuses everything). */
int cairn_bbolt_put(cairn_bbolt_writer_t *w, const void *key, size_t key_len, const void *value, size_t value_len);
int cairn_bbolt_bucket_end(cairn_bbolt_writer_t *w);
/* Writes the root bucket, the (empty) freelist and both meta pages. *bytes (may be NULL) gets
 * the file's size, a multiple of the page size. */
int cairn_bbolt_writer_finish(cairn_bbolt_writer_t *w, uint64_t *bytes);

/* ---- reading ----------------------------------------------------------------------------- */

typedef struct cairn_bbolt cairn_bbolt_t;

/* Opens the file at path read-only. Only its first db_bytes bytes are the database (0 = the
 * whole file; a snapshot from Maintenance/Snapshot has a SHA-256 after them). Checks both
 * meta pages (magic, version, checksum) and takes the valid one with the higher txid, as bbolt
 * does. CAIRN_ECORRUPT (with a reason in errbuf) when neither is valid. */
cairn_bbolt_t *cairn_bbolt_open(const char *path, uint64_t db_bytes, int *err, char *errbuf, size_t errlen);
void cairn_bbolt_close(cairn_bbolt_t **self_p);

uint32_t cairn_bbolt_page_size(const cairn_bbolt_t *db);
uint64_t cairn_bbolt_size(const cairn_bbolt_t *db); /* the meta's high-water mark x page size */

/* fn gets each pair in key order; a non-zero return stops the walk and is returned. */
typedef int (*cairn_bbolt_fn)(void *arg, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len);

/* Every top-level bucket's name, in order (value NULL, 0). */
int cairn_bbolt_buckets(cairn_bbolt_t *db, cairn_bbolt_fn fn, void *arg);
/* Every pair of top-level bucket name, in key order. CAIRN_ENOTFOUND when there is no such
 * bucket, CAIRN_ECORRUPT (errbuf of the open says nothing: use cairn_bbolt_error) for a page
 * that does not check out. */
int cairn_bbolt_foreach(cairn_bbolt_t *db, const void *name, size_t name_len, cairn_bbolt_fn fn, void *arg);
/* The reason of the last CAIRN_ECORRUPT ("" if none). */
const char *cairn_bbolt_error(const cairn_bbolt_t *db);

#endif
