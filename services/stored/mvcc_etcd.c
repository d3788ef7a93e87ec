/* mvcc_etcd.c - the MVCC store as an etcd 3.4 backend file and back (mvcc_etcd.h).
 *
 * ETCD 3.4'S BACKEND LAYOUT (what etcd keeps in member/snap/db and what Maintenance/Snapshot
 * streams). A bbolt file (format: shared/cairn_bbolt.c) with these top-level buckets; integers
 * in keys are big-endian, so bbolt's bytewise order is numeric order.
 *
 *   "alarm"            key   an etcdserverpb.AlarmMember, packed (memberID = 1, alarm = 2)
 *                      value empty. One pair per active alarm.
 *   "auth"             "authEnabled" -> 1 byte (0 = off); "authRevision" -> u64.
 *   "authRoles"        role name -> authpb.Role     (Cairn has no auth yet: empty)
 *   "authUsers"        user name -> authpb.User     (empty)
 *   "cluster"          "clusterVersion" -> "3.4.0"
 *   "key"              a revision: main u64 | '_' | sub u64 (17 bytes), with a 't' appended
 *                      (18 bytes) when the change was a delete
 *                      value: an mvccpb.KeyValue, packed: key, create_revision, mod_revision
 *                      (= main), version, value, lease. A delete's value has the key only.
 *                      One pair per change kept by compaction: the whole history.
 *   "lease"            lease ID i64 -> leasepb.Lease packed (ID = 1, TTL = 2 (granted),
 *                      RemainingTTL = 3 (0: never checkpointed))
 *   "members"          member ID in lower-case hex without padding -> JSON
 *                      {"id":<decimal>,"peerURLs":[...],"isLearner":true (only if so),
 *                      "name":"..." (omitted if empty)}
 *   "members_removed"  member ID in hex -> "removed"
 *   "meta"             "consistent_index" -> u64: the raft index applied
 *                      "finishedCompactRev" -> a revision (main C, sub 0): compaction at C is
 *                      complete; "scheduledCompactRev" -> one being done (both absent while
 *                      never compacted)
 *
 * From Cairn's tables (mvcc.c's format): 'r' gives the "key" bucket's order, each revision's
 * value comes from its 'h' record; 'L' -> "lease", 'A' -> "alarm", the newest 'C' record ->
 * "members", "Mapplied"/"Mcompact" -> "meta". Back again, each "key" pair becomes an 'h' and
 * an 'r' record, and a second pass over 'h' (newest record of each key first) makes the 'k'
 * and 'l' records of the keys alive at the end - the same result as applying the history.
 */
#include "mvcc_etcd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cairn_bbolt.h"
#include "cairn_bytes.h"
#include "cairn_crc32c.h"
#include "cairn_err.h"
#include "cairn_member.h"
#include "kv.pb-c.h"
#include "mvcc_internal.h"
#include "rpc.pb-c.h"
#include "snapshot.h"

#define CLUSTER_VERSION "3.4.0"

static void rev_bytes(uint8_t out[17], int64_t main, int64_t sub)
{
    be64_put(out, (uint64_t)main);
    out[8] = '_';
    be64_put(out + 9, (uint64_t)sub);
}

/* ---- export ------------------------------------------------------------------------------ */

typedef struct {
    cairn_mvcc_t *m;
    leveldb_readoptions_t *ro;
    cairn_bbolt_writer_t *w;
    char *errbuf;
    size_t errlen;
    mvcc_etcd_rev_t rev; /* the "key" bucket's pairs, one at a time */
    struct alarms *alarms; /* collected while the "alarm" bucket is written */
} ex_t;

static int ex_fail(ex_t *x, int rc, const char *what)
{
    if (x->errbuf && x->errlen && !x->errbuf[0])
        snprintf(x->errbuf, x->errlen, "%s: %s", what, cairn_strerror(rc));
    return rc;
}

static int ex_put(ex_t *x, const void *k, size_t kn, const void *v, size_t vn)
{
    int rc = cairn_bbolt_put(x->w, k, kn, v, vn);
    return rc ? ex_fail(x, rc, "writing the backend file") : 0;
}

static int ex_bucket(ex_t *x, const char *name)
{
    int rc = cairn_bbolt_bucket_begin(x->w, name, strlen(name));
    return rc ? ex_fail(x, rc, "writing the backend file") : 0;
}

static int ex_end(ex_t *x)
{
    int rc = cairn_bbolt_bucket_end(x->w);
    return rc ? ex_fail(x, rc, "writing the backend file") : 0;
}

/* Walks the records of table t through x's snapshot; fn returns 0 to go on. */
static int ex_scan(ex_t *x, uint8_t t, int (*fn)(ex_t *x, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn))
{
    leveldb_iterator_t *it = leveldb_create_iterator(x->m->db, x->ro);
    if (!it)
        return CAIRN_ENOMEM;
    int rc = 0;
    for (leveldb_iter_seek(it, (const char *)&t, 1); rc == 0 && leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t kn = 0, vn = 0;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kn);
        if (kn == 0 || k[0] != t)
            break;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vn);
        rc = fn(x, k, kn, v, vn);
    }
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    if (err) {
        mvcc_ldb_err("etcd export", err);
        if (rc == 0)
            rc = ex_fail(x, CAIRN_EIO, "reading the store");
    }
    leveldb_iter_destroy(it);
    return rc;
}

typedef struct {
    uint8_t key[24];
    size_t len;
} alarm_key_t;

static int cmp_alarm(const void *a, const void *b)
{
    const alarm_key_t *x = a, *y = b;
    return keycmp(x->key, x->len, y->key, y->len);
}

/* Alarms are few (two types per member); their packed keys do not sort like 'A' does. */
typedef struct alarms {
    alarm_key_t *v;
    size_t n, cap;
} alarms_t;

static int on_alarm(ex_t *x, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    (void)v, (void)vn;
    if (kn != 17)
        return 0;
    alarms_t *a = x->alarms;
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 8;
        alarm_key_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv)
            return CAIRN_ENOMEM;
        a->v = nv;
        a->cap = nc;
    }
    alarm_key_t *e = &a->v[a->n++];
    size_t n = 0;
    e->key[n++] = 0x08;
    n += cairn_put_varint(e->key + n, be64_get(k + 1));
    e->key[n++] = 0x10;
    n += cairn_put_varint(e->key + n, be64_get(k + 9));
    e->len = n;
    return 0;
}

static int ex_alarms(ex_t *x)
{
    alarms_t a = {0};
    x->alarms = &a;
    int rc = ex_bucket(x, "alarm");
    if (rc == 0)
        rc = ex_scan(x, T_ALARM, on_alarm);
    if (rc == 0) {
        if (a.n) /* a.v is NULL without alarms: qsort's base must not be */
            qsort(a.v, a.n, sizeof *a.v, cmp_alarm);
        for (size_t i = 0; i < a.n && rc == 0; i++)
            if (i == 0 || cmp_alarm(&a.v[i - 1], &a.v[i]) != 0)
                rc = ex_put(x, a.v[i].key, a.v[i].len, "", 0);
    }
    free(a.v);
    x->alarms = NULL;
    return rc ? rc : ex_end(x);
}

/* etcd's "key" bucket pair for one 'r' record (mvcc_internal.h). The 'h' record is found with
 * an iterator seek rather than a Get: consecutive revisions mostly sit in the same LevelDB block,
 * which an iterator keeps between seeks (a Get, without the block cache a whole-store walk must
 * not fill, reads and decompresses the block again every time). */
int mvcc_etcd_rev(mvcc_etcd_rev_t *r, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    if (kn != 17 || vn < 1 || k[0] != T_REV)
        return CAIRN_ECORRUPT;
    uint64_t main = be64_get(k + 1), sub = be64_get(k + 9);
    int tomb = v[0] & HFLAG_TOMB;
    const uint8_t *key = v + 1;
    size_t klen = vn - 1;
    rev_bytes(r->rk, (int64_t)main, (int64_t)sub);
    r->rkn = 17;
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    kv.key.data = (uint8_t *)key;
    kv.key.len = klen;
    if (tomb) {
        r->rk[17] = 't';
        r->rkn = 18;
    } else {
        kbuf_t hk;
        kb_init(&hk);
        kb_hist_key(&hk, key, klen, (int64_t)main, (int64_t)sub);
        if (hk.oom)
            return CAIRN_ENOMEM;
        leveldb_iter_seek(r->hit, (const char *)hk.p, hk.n);
        size_t fk = 0, hn = 0;
        const uint8_t *found = leveldb_iter_valid(r->hit) ? (const uint8_t *)leveldb_iter_key(r->hit, &fk) : NULL;
        int same = found && keycmp(found, fk, hk.p, hk.n) == 0;
        kb_free(&hk);
        if (!same) {
            char *err = NULL;
            leveldb_iter_get_error(r->hit, &err);
            if (err) {
                mvcc_ldb_err("etcd revision history", err);
                return CAIRN_EIO;
            }
            return CAIRN_ECORRUPT; /* a revision without its history record */
        }
        const uint8_t *h = (const uint8_t *)leveldb_iter_value(r->hit, &hn);
        if (hn < HIST_HDR || (h[0] & HFLAG_TOMB))
            return CAIRN_ECORRUPT;
        kv.create_revision = (int64_t)be64_get(h + 1);
        kv.mod_revision = (int64_t)main;
        kv.version = (int64_t)be64_get(h + 9);
        kv.lease = (int64_t)be64_get(h + 17);
        kv.value.data = (uint8_t *)h + HIST_HDR;
        kv.value.len = hn - HIST_HDR;
    }
    size_t need = mvccpb__key_value__get_packed_size(&kv);
    if (need > r->vcap) {
        uint8_t *nb = realloc(r->val, need);
        if (!nb)
            return CAIRN_ENOMEM;
        r->val = nb;
        r->vcap = need;
    }
    r->vlen = mvccpb__key_value__pack(&kv, r->val);
    return 0;
}

/* One revision of the 'r' index: its 'h' record gives the value. */
static int on_rev(ex_t *x, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    int rc = mvcc_etcd_rev(&x->rev, k, kn, v, vn);
    if (rc == CAIRN_ECORRUPT)
        return ex_fail(x, rc, "a revision index record without its history record");
    if (rc)
        return ex_fail(x, rc, "reading the store");
    return ex_put(x, x->rev.rk, x->rev.rkn, x->rev.val, x->rev.vlen);
}

static int on_lease(ex_t *x, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    if (kn != 9 || vn != 16)
        return ex_fail(x, CAIRN_ECORRUPT, "a lease record of the store");
    uint8_t b[3 * 11];
    size_t n = 0;
    int64_t id = (int64_t)be64_get(k + 1), granted = (int64_t)be64_get(v), remaining = (int64_t)be64_get(v + 8);
    b[n++] = 0x08;
    n += cairn_put_varint(b + n, (uint64_t)id);
    if (granted) {
        b[n++] = 0x10;
        n += cairn_put_varint(b + n, (uint64_t)granted);
    }
    if (remaining) {
        b[n++] = 0x18;
        n += cairn_put_varint(b + n, (uint64_t)remaining);
    }
    return ex_put(x, k + 1, 8, b, n);
}

/* JSON string as Go's encoding/json writes it (HTML characters escaped too). */
static void json_str(kbuf_t *b, const char *s)
{
    kb_u8(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            kb_u8(b, '\\');
            kb_u8(b, *p);
        } else if (*p < 0x20 || *p == '<' || *p == '>' || *p == '&') {
            if (*p == '\n')
                kb_add(b, "\\n", 2);
            else if (*p == '\r')
                kb_add(b, "\\r", 2);
            else if (*p == '\t')
                kb_add(b, "\\t", 2);
            else {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                kb_add(b, esc, 6);
            }
        } else {
            kb_u8(b, *p);
        }
    }
    kb_u8(b, '"');
}

typedef struct {
    char hex[17];
    const cairn_member_t *m;
} member_key_t;

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const member_key_t *)a)->hex, ((const member_key_t *)b)->hex);
}

static int ex_members(ex_t *x)
{
    int rc = ex_bucket(x, "members");
    if (rc)
        return rc;
    /* the membership in effect now: the newest 'C' record */
    leveldb_iterator_t *it = leveldb_create_iterator(x->m->db, x->ro);
    if (!it)
        return CAIRN_ENOMEM;
    uint8_t after[1] = {T_CONF + 1};
    leveldb_iter_seek(it, (const char *)after, 1);
    if (leveldb_iter_valid(it))
        leveldb_iter_prev(it);
    else
        leveldb_iter_seek_to_last(it);
    cairn_members_t ms = {0};
    if (leveldb_iter_valid(it)) {
        size_t kn = 0, vn = 0;
        const uint8_t *k = (const uint8_t *)leveldb_iter_key(it, &kn);
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vn);
        if (kn == 9 && k[0] == T_CONF && cairn_members_decode(&ms, v, vn) != 0)
            cairn_members_clear(&ms); /* an unreadable membership leaves the bucket empty */
    }
    leveldb_iter_destroy(it);
    member_key_t *keys = ms.n ? calloc(ms.n, sizeof *keys) : NULL;
    if (ms.n && !keys) {
        cairn_members_clear(&ms);
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < ms.n; i++) {
        snprintf(keys[i].hex, sizeof keys[i].hex, "%" PRIx64, ms.v[i].id);
        keys[i].m = &ms.v[i];
    }
    if (ms.n)
        qsort(keys, ms.n, sizeof *keys, cmp_member);
    for (size_t i = 0; i < ms.n && rc == 0; i++) {
        const cairn_member_t *mb = keys[i].m;
        kbuf_t j;
        kb_init(&j);
        char num[64]; /* 6 + up to 20 digits + 13 */
        int nn = snprintf(num, sizeof num, "{\"id\":%" PRIu64 ",\"peerURLs\":[", mb->id);
        kb_add(&j, num, (size_t)nn);
        for (size_t u = 0; u < mb->n_peer_urls; u++) {
            if (u)
                kb_u8(&j, ',');
            json_str(&j, mb->peer_urls[u]);
        }
        kb_u8(&j, ']');
        if (mb->learner)
            kb_add(&j, ",\"isLearner\":true", 17);
        if (mb->name && *mb->name) {
            kb_add(&j, ",\"name\":", 8);
            json_str(&j, mb->name);
        }
        kb_u8(&j, '}');
        rc = j.oom ? CAIRN_ENOMEM : ex_put(x, keys[i].hex, strlen(keys[i].hex), j.p, j.n);
        kb_free(&j);
    }
    free(keys);
    cairn_members_clear(&ms);
    return rc ? rc : ex_end(x);
}

static int ex_meta(ex_t *x, const cairn_mvcc_point_t *pt, int64_t finished)
{
    int rc = ex_bucket(x, "meta");
    uint8_t ci[8], r[17];
    be64_put(ci, pt->index);
    if (rc == 0)
        rc = ex_put(x, "consistent_index", 16, ci, 8);
    if (rc == 0 && pt->compact_rev > 0 && finished > 0) {
        rev_bytes(r, finished > pt->compact_rev ? pt->compact_rev : finished, 0);
        rc = ex_put(x, "finishedCompactRev", 18, r, 17);
    }
    if (rc == 0 && pt->compact_rev > 0) {
        rev_bytes(r, pt->compact_rev, 0);
        rc = ex_put(x, "scheduledCompactRev", 19, r, 17);
    }
    return rc ? rc : ex_end(x);
}

static int ex_empty(ex_t *x, const char *name)
{
    int rc = ex_bucket(x, name);
    return rc ? rc : ex_end(x);
}

int cairn_mvcc_etcd_export(cairn_mvcc_t *m, int fd, uint64_t *bytes, cairn_mvcc_point_t *ptp, char *errbuf,
                           size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = 0;
    const leveldb_snapshot_t *snap = leveldb_create_snapshot(m->db);
    leveldb_readoptions_t *ro = leveldb_readoptions_create();
    ex_t x = {.m = m, .ro = ro, .errbuf = errbuf, .errlen = errlen};
    x.w = cairn_bbolt_writer_new(fd);
    int rc = 0;
    if (!snap || !ro || !x.w) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    leveldb_readoptions_set_snapshot(ro, snap);
    leveldb_readoptions_set_fill_cache(ro, 0); /* a full scan must not evict the hot set */
    leveldb_readoptions_set_verify_checksums(ro, 1);
    if (!(x.rev.hit = leveldb_create_iterator(m->db, ro))) {
        rc = CAIRN_ENOMEM;
        goto out;
    }
    char *err = NULL;
    size_t an = 0, cn = 0;
    char *ap = leveldb_get(m->db, ro, "Mapplied", 8, &an, &err);
    char *cp = err ? NULL : leveldb_get(m->db, ro, "Mcompact", 8, &cn, &err);
    cairn_mvcc_point_t pt = {.compact_rev = -1};
    int64_t finished = -1;
    if (err) {
        mvcc_ldb_err("etcd export meta", err);
        rc = CAIRN_EIO;
    } else if (!ap || an != 24 || !cp || cn != 32) {
        rc = CAIRN_ECORRUPT;
    } else {
        pt.index = be64_get((uint8_t *)ap);
        pt.term = be64_get((uint8_t *)ap + 8);
        pt.revision = (int64_t)be64_get((uint8_t *)ap + 16);
        pt.compact_rev = (int64_t)be64_get((uint8_t *)cp);
        finished = (int64_t)be64_get((uint8_t *)cp + 8);
    }
    leveldb_free(ap);
    leveldb_free(cp);
    if (rc) {
        ex_fail(&x, rc, "reading the store's applied point");
        goto out;
    }
    uint8_t one[1] = {0};
    uint8_t authrev[8];
    be64_put(authrev, 1);
    /* buckets in bbolt's (bytewise) order */
    if ((rc = ex_alarms(&x)) || (rc = ex_bucket(&x, "auth")) || (rc = ex_put(&x, "authEnabled", 11, one, 1)) ||
        (rc = ex_put(&x, "authRevision", 12, authrev, 8)) || (rc = ex_end(&x)) || (rc = ex_empty(&x, "authRoles")) ||
        (rc = ex_empty(&x, "authUsers")) || (rc = ex_bucket(&x, "cluster")) ||
        (rc = ex_put(&x, "clusterVersion", 14, CLUSTER_VERSION, strlen(CLUSTER_VERSION))) || (rc = ex_end(&x)) ||
        (rc = ex_bucket(&x, "key")) || (rc = ex_scan(&x, T_REV, on_rev)) || (rc = ex_end(&x)) ||
        (rc = ex_bucket(&x, "lease")) || (rc = ex_scan(&x, T_LEASE, on_lease)) || (rc = ex_end(&x)) ||
        (rc = ex_members(&x)) || (rc = ex_empty(&x, "members_removed")) || (rc = ex_meta(&x, &pt, finished)))
        goto out;
    rc = cairn_bbolt_writer_finish(x.w, bytes);
    if (rc)
        ex_fail(&x, rc, "writing the backend file");
    else if (ptp)
        *ptp = pt;
out:
    if (rc)
        ex_fail(&x, rc, "etcd backend export");
    cairn_bbolt_writer_destroy(&x.w);
    free(x.rev.val);
    if (x.rev.hit)
        leveldb_iter_destroy(x.rev.hit);
    if (ro)
        leveldb_readoptions_destroy(ro);
    if (snap)
        leveldb_release_snapshot(m->db, snap);
    return rc;
}

/* ---- status ------------------------------------------------------------------------------ */

typedef struct {
    cairn_bbolt_t *db;
    cairn_etcd_status_t *st;
    int is_key;
} st_t;

static int st_pair(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    st_t *s = arg;
    s->st->hash = cairn_crc32c_extend(s->st->hash, k, kn);
    s->st->hash = cairn_crc32c_extend(s->st->hash, v, vn);
    if (s->is_key && kn >= 8)
        s->st->revision = (int64_t)be64_get(k);
    s->st->total_keys++;
    return 0;
}

static int st_bucket(void *arg, const uint8_t *name, size_t n, const uint8_t *v, size_t vn)
{
    (void)v, (void)vn;
    st_t *s = arg;
    s->st->hash = cairn_crc32c_extend(s->st->hash, name, n);
    s->is_key = n == 3 && memcmp(name, "key", 3) == 0;
    return cairn_bbolt_foreach(s->db, name, n, st_pair, s);
}

int cairn_etcd_db_status(const char *path, uint64_t db_bytes, cairn_etcd_status_t *st, char *errbuf, size_t errlen)
{
    memset(st, 0, sizeof *st);
    int rc = 0;
    cairn_bbolt_t *db = cairn_bbolt_open(path, db_bytes, &rc, errbuf, errlen);
    if (!db)
        return rc;
    st_t s = {db, st, 0};
    rc = cairn_bbolt_buckets(db, st_bucket, &s);
    if (rc == CAIRN_ECORRUPT)
        cairn_errbuf_set(errbuf, errlen, "%s: %s", path, cairn_bbolt_error(db));
    st->total_size = cairn_bbolt_size(db);
    cairn_bbolt_close(&db);
    return rc;
}

/* ---- import ------------------------------------------------------------------------------ */

typedef struct {
    cairn_mvcc_builder_t *b;
    int64_t last_main;
    uint64_t revs;
    int64_t finished, scheduled;
    char *errbuf;
    size_t errlen;
} im_t;

static int im_fail(im_t *im, int rc, const char *fmt, const char *a)
{
    if (im->errbuf && im->errlen && !im->errbuf[0])
        snprintf(im->errbuf, im->errlen, fmt, a);
    return rc;
}

static int im_key(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    im_t *im = arg;
    if ((kn != 17 && kn != 18) || k[8] != '_' || (kn == 18 && k[17] != 't'))
        return im_fail(im, CAIRN_ECORRUPT, "the \"key\" bucket holds a key that is not a revision%s", "");
    int64_t main = (int64_t)be64_get(k), sub = (int64_t)be64_get(k + 9);
    int tomb = kn == 18;
    if (main < 1 || sub < 0 || main < im->last_main)
        return im_fail(im, CAIRN_ECORRUPT, "the \"key\" bucket holds a revision out of order%s", "");
    Mvccpb__KeyValue *kv = mvccpb__key_value__unpack(NULL, vn, v);
    if (!kv || kv->key.len == 0) {
        if (kv)
            mvccpb__key_value__free_unpacked(kv, NULL);
        return im_fail(im, CAIRN_ECORRUPT, "the \"key\" bucket holds a value that is not an mvccpb.KeyValue%s", "");
    }
    kbuf_t hk, hv, rk, rv;
    kb_init(&hk), kb_init(&hv), kb_init(&rk), kb_init(&rv);
    kb_hist_key(&hk, kv->key.data, kv->key.len, main, sub);
    kb_u8(&hv, tomb ? HFLAG_TOMB : 0);
    if (!tomb) {
        kb_be64(&hv, (uint64_t)kv->create_revision);
        kb_be64(&hv, (uint64_t)kv->version);
        kb_be64(&hv, (uint64_t)kv->lease);
        kb_add(&hv, kv->value.data, kv->value.len);
    }
    kb_u8(&rk, T_REV);
    kb_be64(&rk, (uint64_t)main);
    kb_be64(&rk, (uint64_t)sub);
    kb_u8(&rv, tomb ? HFLAG_TOMB : 0);
    kb_add(&rv, kv->key.data, kv->key.len);
    int rc = hk.oom || hv.oom || rk.oom || rv.oom ? CAIRN_ENOMEM : 0;
    if (rc == 0)
        rc = cairn_mvcc_builder_put(im->b, hk.p, hk.n, hv.p, hv.n);
    if (rc == 0)
        rc = cairn_mvcc_builder_put(im->b, rk.p, rk.n, rv.p, rv.n);
    kb_free(&hk), kb_free(&hv), kb_free(&rk), kb_free(&rv);
    mvccpb__key_value__free_unpacked(kv, NULL);
    im->last_main = main;
    im->revs++;
    return rc;
}

static int im_lease(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    im_t *im = arg;
    uint64_t f[4];
    if (kn != 8 || cairn_pb_varint_fields(v, vn, f, 4) || f[1] != be64_get(k))
        return im_fail(im, CAIRN_ECORRUPT, "the \"lease\" bucket holds a record that is not a leasepb.Lease%s", "");
    uint8_t lk[9], lv[16];
    lk[0] = T_LEASE;
    memcpy(lk + 1, k, 8);
    be64_put(lv, f[2]);
    be64_put(lv + 8, f[3]);
    return cairn_mvcc_builder_put(im->b, lk, 9, lv, 16);
}

static int im_alarm(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    (void)v, (void)vn;
    im_t *im = arg;
    uint64_t f[4];
    if (cairn_pb_varint_fields(k, kn, f, 4))
        return im_fail(im, CAIRN_ECORRUPT, "the \"alarm\" bucket holds a key that is not an AlarmMember%s", "");
    uint8_t ak[17];
    ak[0] = T_ALARM;
    be64_put(ak + 1, f[1]);
    be64_put(ak + 9, f[2]);
    return f[2] ? cairn_mvcc_builder_put(im->b, ak, 17, "", 0) : 0;
}

static int im_meta(void *arg, const uint8_t *k, size_t kn, const uint8_t *v, size_t vn)
{
    im_t *im = arg;
    if (vn >= 8 && kn == 18 && memcmp(k, "finishedCompactRev", 18) == 0)
        im->finished = (int64_t)be64_get(v);
    if (vn >= 8 && kn == 19 && memcmp(k, "scheduledCompactRev", 19) == 0)
        im->scheduled = (int64_t)be64_get(v);
    return 0;
}

int cairn_mvcc_etcd_import(const char *path, uint64_t db_bytes, const char *mvcc_dir, uint64_t index, uint64_t term,
                           const uint8_t *members_blob, size_t members_len, cairn_mvcc_point_t *pt, char *errbuf,
                           size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = 0;
    int rc = 0;
    struct stat sb;
    if (stat(mvcc_dir, &sb) == 0) {
        cairn_errbuf_set(errbuf, errlen, "%s already exists", mvcc_dir);
        return CAIRN_EEXISTS;
    }
    cairn_bbolt_t *db = cairn_bbolt_open(path, db_bytes, &rc, errbuf, errlen);
    if (!db)
        return rc;
    im_t im = {.finished = -1, .scheduled = -1, .errbuf = errbuf, .errlen = errlen};
    im.b = cairn_mvcc_builder_new(mvcc_dir, &rc, errbuf, errlen);
    if (!im.b)
        goto out;
    if ((rc = cairn_mvcc_builder_put(im.b, "Mformat", 7, MVCC_FORMAT, strlen(MVCC_FORMAT))) != 0)
        goto out;
    rc = cairn_bbolt_foreach(db, "key", 3, im_key, &im);
    if (rc == 0 || rc == CAIRN_ENOTFOUND)
        rc = cairn_bbolt_foreach(db, "lease", 5, im_lease, &im);
    if (rc == 0 || rc == CAIRN_ENOTFOUND)
        rc = cairn_bbolt_foreach(db, "alarm", 5, im_alarm, &im);
    if (rc == 0 || rc == CAIRN_ENOTFOUND)
        rc = cairn_bbolt_foreach(db, "meta", 4, im_meta, &im);
    if (rc == CAIRN_ENOTFOUND)
        rc = 0;
    if (rc == CAIRN_ECORRUPT && errbuf && errlen && !errbuf[0])
        cairn_errbuf_set(errbuf, errlen, "%s: %s", path, cairn_bbolt_error(db));
    if (rc)
        goto out;
    /* etcd's rule (mvcc restore): the revision is the last one in the key bucket, or the
     * compaction's if that is higher; a fresh store is at revision 1 */
    int64_t compact = im.scheduled > 0 ? im.scheduled : im.finished;
    int64_t rev = im.last_main > 0 ? im.last_main : 1;
    if (compact > rev)
        rev = compact;
    uint8_t ap[24], cp[32], ck[9];
    be64_put(ap, index);
    be64_put(ap + 8, term);
    be64_put(ap + 16, (uint64_t)rev);
    /* the removal of superseded history is redone by the store's open (it is idempotent and
     * walks from the start of the revision index): the file may hold an unfinished one */
    be64_put(cp, (uint64_t)(compact > 0 ? compact : -1));
    be64_put(cp + 8, (uint64_t)(int64_t)-1);
    be64_put(cp + 16, 0);
    be64_put(cp + 24, 0);
    ck[0] = T_CONF;
    be64_put(ck + 1, 0);
    if ((rc = cairn_mvcc_builder_put(im.b, "Mapplied", 8, ap, 24)) ||
        (rc = cairn_mvcc_builder_put(im.b, "Mcompact", 8, cp, 32)) ||
        (members_blob && (rc = cairn_mvcc_builder_put(im.b, ck, 9, members_blob, members_len))) ||
        (rc = cairn_mvcc_builder_derive_current(im.b)) || (rc = cairn_mvcc_builder_finish(im.b, pt, errbuf, errlen)))
        goto out;
out:
    if (rc && errbuf && errlen && !errbuf[0])
        cairn_errbuf_set(errbuf, errlen, "building %s from %s: %s", mvcc_dir, path, cairn_strerror(rc));
    cairn_mvcc_builder_destroy(&im.b);
    cairn_bbolt_close(&db);
    if (rc)
        cairn_snap_rmtree(mvcc_dir);
    return rc;
}
