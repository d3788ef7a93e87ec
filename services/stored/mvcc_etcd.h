/* mvcc_etcd.h - the MVCC store as an etcd 3.4 backend file and back: what
 * Maintenance/Snapshot streams, what `etcdctl snapshot status/restore` read, and what
 * `cairnctl snapshot restore` builds a member from (a snapshot taken by Cairn or by etcd).
 * etcd's buckets and their encodings are described byte by byte at the top of mvcc_etcd.c;
 * the bbolt file that carries them is shared/cairn_bbolt.c's.
 */
#ifndef CAIRN_MVCC_ETCD_H
#define CAIRN_MVCC_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include "mvcc.h"

/* What `etcdctl snapshot status` prints for a file. */
typedef struct {
    uint32_t hash;      /* CRC-32C over every bucket name, key and value, in order */
    int64_t revision;   /* main revision of the last record of the "key" bucket */
    uint64_t total_keys; /* pairs in all buckets */
    uint64_t total_size; /* the database's bytes (pages up to the high-water mark) */
} cairn_etcd_status_t;

/* Writes m's committed state, read through one LevelDB snapshot (so it may run on another
 * thread while m's owner keeps writing), as an etcd 3.4 backend file into fd (empty, written
 * from offset 0; the caller syncs it). *bytes gets its size, *pt (may be NULL) the point it
 * holds. */
int cairn_mvcc_etcd_export(cairn_mvcc_t *m, int fd, uint64_t *bytes, cairn_mvcc_point_t *pt, char *errbuf,
                           size_t errlen);

/* The status of the backend file at path (its first db_bytes bytes; 0 = all), walking every
 * bucket. CAIRN_ECORRUPT with the reason in errbuf for a file that is not one. */
int cairn_etcd_db_status(const char *path, uint64_t db_bytes, cairn_etcd_status_t *st, char *errbuf, size_t errlen);

/* Builds a NEW store in mvcc_dir (must not exist) from the backend file at path (its first
 * db_bytes bytes): every revision of the "key" bucket (history, current state, lease
 * attachments), the leases, the alarms and the compaction marks. The store's applied point is
 * (index, term) at the file's revision, and its membership ('C' 0) is members_blob (a
 * cairn_member blob): a restored member belongs to the new cluster it is restored for, as with
 * etcdctl, which drops the file's members too. On failure mvcc_dir is removed. */
int cairn_mvcc_etcd_import(const char *path, uint64_t db_bytes, const char *mvcc_dir, uint64_t index, uint64_t term,
                           const uint8_t *members_blob, size_t members_len, cairn_mvcc_point_t *pt, char *errbuf,
                           size_t errlen);

#endif
