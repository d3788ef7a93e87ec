/* seedgen.c - writes the generated part of the fuzzers' seed corpora (tests/fuzz/corpus/),
 * with the real encoders, so the seeds are what the processes really exchange and store:
 *   ipc/    one frame of every IPC message type (cairn_ipc_encode, fields filled) and a
 *           request envelope of every kind;
 *   proto/  for every method: its request as JSON (odd second byte) and, through gw_json_to_pb,
 *           as protobuf (even second byte), byte 0 = the method's index in fuzz_proto's table;
 *   wal/    WAL directories as fuzz_wal takes them (segments concatenated): a short run of
 *           entries, hard states and a snapshot record with 4 KiB segments (several segments);
 *   snap/   Cairn snapshot files (byte 0 = 0) made from the etcd backend file given as argv[2]
 *           (imported, then cairn_snap_save), and that file itself for fuzz_snap's bbolt and
 *           import readers (byte 0 = 1 and 2);
 *   ldblog/ LevelDB logs as LevelDB writes them (fuzz_ldblog): small batches, a batch that
 *           spans blocks (FIRST, MIDDLE, LAST fragments), batches of puts and deletes.
 * Usage: cairn_fuzz_seedgen <corpus dir> <etcd snapshot.db>  (see tests/fuzz/README). */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <leveldb/c.h>
#include <protobuf-c/protobuf-c.h>

#include "cairn_ipc.h"
#include "cairn_kvcheck.h"
#include "cairn_log.h"
#include "gw_json.h"
#include "mvcc.h"
#include "mvcc_etcd.h"
#include "rpc.pb-c.h"
#include "snapshot.h"
#include "v3election.pb-c.h"
#include "v3lock.pb-c.h"
#include "wal.h"

static const char *g_out;

static void put_file(const char *sub, const char *name, const void *a, size_t al, const void *b, size_t bl)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", g_out, sub);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/%s", g_out, sub, name);
    FILE *f = fopen(p, "wb");
    if (!f || (al && fwrite(a, 1, al, f) != al) || (bl && fwrite(b, 1, bl, f) != bl)) {
        perror(p);
        exit(1);
    }
    fclose(f);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n)
        exit(1);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void gen_ipc(void)
{
    static const uint8_t body[] = "\x0a\x03" "foo\x12\x03" "bar";
    static const uint64_t ids[] = {0x8e9e05c52164694dULL, 2, 3};
    uint8_t env[256];
    size_t env_len = 0;
    /* envelopes: the data of proposed entries */
    for (int kind = CAIRN_REQ_PUT; kind <= CAIRN_REQ_ALARM; kind++) {
        cairn_ipc_req_t r = {(const uint8_t *)"gw:1", 4, 42 + (uint64_t)kind, (uint64_t)kind, body, sizeof body - 1};
        uint8_t *out;
        size_t ol;
        if (cairn_ipc_req_encode(&r, &out, &ol))
            exit(1);
        char name[64];
        snprintf(name, sizeof name, "envelope-%d", kind);
        put_file("ipc", name, out, ol, NULL, 0);
        if (kind == CAIRN_REQ_PUT) {
            memcpy(env, out, ol);
            env_len = ol;
        }
        free(out);
    }
    cairn_ipc_entry_t ents[3] = {{5, 2, 0, env, env_len}, {6, 2, 1, (const uint8_t *)"\x01\x02", 2}, {7, 3, 0, NULL, 0}};
    for (int t = 1; t < CAIRN_IPC_TYPE_MAX_; t++) {
        cairn_ipc_msg_t m;
        memset(&m, 0, sizeof m);
        m.type = (uint8_t)t;
        m.req_id = 7, m.seq = 3, m.index = 6, m.term = 2, m.vote = 1, m.commit = 5, m.leader = 1, m.boot_id = 99;
        m.snap_index = 4, m.snap_term = 1, m.read_index = 5, m.has_hs = 1, m.applied = 5, m.db_size = 20480;
        m.revision = 11, m.compact_rev = 3, m.code = t % 3 ? 0 : 14;
        cairn_ipc_set_message(&m, "etcdserver: no leader");
        m.body = body, m.body_len = sizeof body - 1;
        m.entries = ents, m.n_entries = 3;
        m.first = 1, m.last = 7, m.target = 2, m.op = 1, m.snap_id = 4, m.offset = 0, m.total = 7;
        m.fwd_id = 9, m.want_reply = 1;
        m.urls = (const uint8_t *)"http://127.0.0.1:2379", m.urls_len = 21;
        m.name = (const uint8_t *)"infra1", m.name_len = 6;
        m.start_rev = 2, m.end_rev = 0, m.more = 0, m.max_bytes = 1 << 20;
        m.key = (const uint8_t *)"foo", m.key_len = 3, m.range_end = (const uint8_t *)"fop", m.range_end_len = 3;
        m.lease_id = 0x694da2439b3cd80aLL, m.ttl = 60, m.granted_ttl = 60;
        m.cluster_id = 0xcdf818194e3a8c32ULL, m.raft_type = 3, m.from = 1, m.to = 2, m.log_term = 2;
        m.voters = ids, m.n_voters = 3, m.learners = ids + 2, m.n_learners = 1;
        uint8_t *out;
        size_t ol;
        if (cairn_ipc_encode(&m, &out, &ol))
            continue;
        char name[64];
        snprintf(name, sizeof name, "%02d-%s", t, cairn_ipc_type_name(t));
        put_file("ipc", name, out, ol, NULL, 0);
        free(out);
    }
}

/* fuzz_proto's method table order: the services as gw_json.c lists them. */
static const ProtobufCServiceDescriptor *const services[] = {
    &etcdserverpb__kv__descriptor,          &etcdserverpb__watch__descriptor, &etcdserverpb__lease__descriptor,
    &etcdserverpb__cluster__descriptor,     &etcdserverpb__maintenance__descriptor,
    &etcdserverpb__auth__descriptor,        &v3lockpb__lock__descriptor,      &v3electionpb__election__descriptor,
};

static const struct {
    const char *method, *json;
} reqs[] = {
    {"Range", "{\"key\":\"Zm9v\",\"range_end\":\"Zm9w\",\"limit\":\"10\",\"revision\":3,\"sort_order\":\"DESCEND\","
              "\"sort_target\":\"MOD\",\"serializable\":true,\"keys_only\":false,\"count_only\":false,"
              "\"min_mod_revision\":\"1\",\"max_create_revision\":\"9\"}"},
    {"Put", "{\"key\":\"Zm9v\",\"value\":\"YmFy\",\"lease\":\"7587862072907597834\",\"prev_kv\":true}"},
    {"DeleteRange", "{\"key\":\"AA==\",\"range_end\":\"AA==\",\"prev_kv\":true}"},
    {"Txn", "{\"compare\":[{\"key\":\"Zm9v\",\"target\":\"VALUE\",\"result\":\"EQUAL\",\"value\":\"YmFy\"},"
            "{\"key\":\"Zm9v\",\"target\":\"MOD\",\"result\":\"LESS\",\"mod_revision\":\"5\"}],"
            "\"success\":[{\"request_put\":{\"key\":\"Zm9v\",\"value\":\"YmF6\"}},{\"request_range\":{\"key\":\"Zm9v\"}},"
            "{\"request_txn\":{\"success\":[{\"request_delete_range\":{\"key\":\"YQ==\",\"range_end\":\"Yg==\"}}]}}],"
            "\"failure\":[{\"request_put\":{\"key\":\"Zm9v\",\"value\":\"cXV4\"}}]}"},
    {"Compact", "{\"revision\":\"3\",\"physical\":true}"},
    {"Watch", "{\"create_request\":{\"key\":\"Zm9v\",\"range_end\":\"AA==\",\"start_revision\":\"2\","
              "\"progress_notify\":true,\"filters\":[\"NOPUT\"],\"prev_kv\":true,\"watch_id\":\"1\",\"fragment\":true}}"
              "{\"cancel_request\":{\"watch_id\":\"1\"}}{\"progress_request\":{}}"},
    {"LeaseGrant", "{\"TTL\":\"60\",\"ID\":\"0\"}"},
    {"LeaseRevoke", "{\"ID\":\"7587862072907597834\"}"},
    {"LeaseKeepAlive", "{\"ID\":\"7587862072907597834\"}\n{\"ID\":\"1\"}"},
    {"LeaseTimeToLive", "{\"ID\":\"7587862072907597834\",\"keys\":true}"},
    {"LeaseLeases", "{}"},
    {"MemberAdd", "{\"peerURLs\":[\"http://127.0.0.1:2380\"],\"isLearner\":true}"},
    {"MemberRemove", "{\"ID\":\"10276657743932975437\"}"},
    {"MemberUpdate", "{\"ID\":\"1\",\"peerURLs\":[\"http://10.0.0.1:2380\",\"http://10.0.0.2:2380\"]}"},
    {"MemberList", "{}"},
    {"MemberPromote", "{\"ID\":\"1\"}"},
    {"Alarm", "{\"action\":\"ACTIVATE\",\"memberID\":\"1\",\"alarm\":\"NOSPACE\"}"},
    {"Status", "{}"},
    {"Defragment", "{}"},
    {"Hash", "{}"},
    {"HashKV", "{\"revision\":\"4\"}"},
    {"Snapshot", "{}"},
    {"MoveLeader", "{\"targetID\":\"2\"}"},
    {"Authenticate", "{\"name\":\"root\",\"password\":\"pw\"}"},
    {"UserAdd", "{\"name\":\"u\",\"password\":\"p\",\"options\":{\"no_password\":true}}"},
    {"RoleGrantPermission", "{\"name\":\"r\",\"perm\":{\"permType\":\"READWRITE\",\"key\":\"YQ==\",\"range_end\":\"Yg==\"}}"},
    {"Lock", "{\"name\":\"bXlsb2Nr\",\"lease\":\"7587862072907597834\"}"},
    {"Unlock", "{\"key\":\"bXlsb2NrLzY5NGRhMjQzOWIzY2Q4MGE=\"}"},
    {"Campaign", "{\"name\":\"ZWxlY3Q=\",\"lease\":\"1\",\"value\":\"dmFs\"}"},
    {"Proclaim", "{\"leader\":{\"name\":\"ZWxlY3Q=\",\"key\":\"ZWxlY3QvMQ==\",\"rev\":\"5\",\"lease\":\"1\"},\"value\":\"dg==\"}"},
    {"Leader", "{\"name\":\"ZWxlY3Q=\"}"},
    {"Observe", "{\"name\":\"ZWxlY3Q=\"}"},
    {"Resign", "{\"leader\":{\"name\":\"ZWxlY3Q=\",\"key\":\"ZWxlY3QvMQ==\",\"rev\":\"5\",\"lease\":\"1\"}}"},
};

static void gen_proto(void)
{
    size_t idx = 0;
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
        for (unsigned k = 0; k < services[i]->n_methods; k++, idx++) {
            const ProtobufCMethodDescriptor *md = &services[i]->methods[k];
            for (size_t r = 0; r < sizeof reqs / sizeof reqs[0]; r++) {
                if (strcmp(reqs[r].method, md->name) != 0)
                    continue;
                uint8_t hdr[2] = {(uint8_t)idx, 1};
                char name[128];
                snprintf(name, sizeof name, "json-%s-%s", services[i]->short_name, md->name);
                put_file("proto", name, hdr, 2, reqs[r].json, strlen(reqs[r].json));
                uint8_t *pb;
                size_t pl;
                char err[256];
                if (gw_json_to_pb(md->input, reqs[r].json, strlen(reqs[r].json), &pb, &pl, err, sizeof err) == 0) {
                    hdr[1] = 0;
                    snprintf(name, sizeof name, "pb-%s-%s", services[i]->short_name, md->name);
                    put_file("proto", name, hdr, 2, pb, pl);
                    free(pb);
                } else {
                    fprintf(stderr, "%s: %s\n", md->name, err);
                    exit(1);
                }
            }
        }
}

static int no_cb_entry(void *c, const cairn_wal_entry_t *e) { (void)c, (void)e; return 0; }
static int no_cb_hs(void *c, const cairn_wal_hardstate_t *h) { (void)c, (void)h; return 0; }

/* The WAL directory's segments concatenated in name order (fuzz_wal's input). */
static void wal_dump(const char *dir, const char *name)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort);
    uint8_t *all = NULL;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (strstr(list[i]->d_name, ".wal") && !strstr(list[i]->d_name, ".tmp")) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, list[i]->d_name);
            size_t l;
            uint8_t *b = slurp(p, &l);
            all = realloc(all, total + l);
            memcpy(all + total, b, l);
            total += l;
            free(b);
        }
        free(list[i]);
    }
    free(list);
    put_file("wal", name, all, total, NULL, 0);
    free(all);
}

static void gen_wal(const char *tmp)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/wal", tmp);
    mkdir(dir, 0755);
    cairn_wal_opts_t o = {.segment_bytes = 4096, .no_sync = 1};
    cairn_wal_replay_t cb = {no_cb_entry, no_cb_hs, NULL, NULL};
    int err;
    char eb[256];
    cairn_wal_t *w = cairn_wal_open(dir, &o, &cb, &err, eb, sizeof eb);
    if (!w) {
        fprintf(stderr, "wal: %s\n", eb);
        exit(1);
    }
    static const uint8_t body[] = "\x0a\x03" "foo\x12\x03" "bar";
    cairn_ipc_req_t r = {(const uint8_t *)"gw:1", 4, 1, CAIRN_REQ_PUT, body, sizeof body - 1};
    uint8_t *env;
    size_t el;
    cairn_ipc_req_encode(&r, &env, &el);
    uint64_t term = 1, idx = 0;
    for (int i = 1; i <= 100; i++) {
        if (i == 50)
            term = 2;
        if (i == 12) /* a raft truncation: a new leader overwrote the log from index 8 on */
            idx = 7;
        cairn_wal_entry_t e = {++idx, term, 0, env, el};
        if (cairn_wal_append_entry(w, &e)) {
            fprintf(stderr, "wal append %llu failed\n", (unsigned long long)idx);
            exit(1);
        }
        cairn_wal_hardstate_t hs = {term, 1, idx - 1};
        cairn_wal_append_hardstate(w, &hs);
        if (i == 70)
            cairn_wal_append_snapshot(w, idx - 5, term);
        if (i % 3 == 0 && cairn_wal_sync(w)) {
            fprintf(stderr, "wal sync: %s\n", cairn_wal_error(w));
            exit(1);
        }
        if (i == 6) { /* the first segment alone: a short log */
            cairn_wal_sync(w);
            wal_dump(dir, "short");
        }
    }
    cairn_wal_sync(w);
    fprintf(stderr, "wal: %zu segments, last index %llu\n", cairn_wal_segment_count(w),
            (unsigned long long)cairn_wal_last_index(w));
    cairn_wal_destroy(&w);
    free(env);
    wal_dump(dir, "multi-segment");
}

static void gen_snap(const char *tmp, const char *etcd_db)
{
    size_t l;
    uint8_t *db = slurp(etcd_db, &l);
    if (!db) {
        perror(etcd_db);
        exit(1);
    }
    put_file("snap", "etcd-bbolt", "\x01", 1, db, l);
    put_file("snap", "etcd-import", "\x02", 1, db, l);
    free(db);
    char store[512], eb[256];
    snprintf(store, sizeof store, "%s/store", tmp);
    cairn_mvcc_point_t pt;
    if (cairn_mvcc_etcd_import(etcd_db, 0, store, 10, 2, NULL, 0, &pt, eb, sizeof eb)) {
        fprintf(stderr, "import: %s\n", eb);
        exit(1);
    }
    int err;
    cairn_mvcc_t *m = cairn_mvcc_open(store, &err, eb, sizeof eb);
    if (!m || cairn_snap_save(m, tmp, "cairn.snap", NULL, eb, sizeof eb)) {
        fprintf(stderr, "snap: %s\n", eb);
        exit(1);
    }
    cairn_mvcc_destroy(&m);
    char p[600];
    snprintf(p, sizeof p, "%s/cairn.snap", tmp);
    uint8_t *s = slurp(p, &l);
    put_file("snap", "cairn-snap", "\x00", 1, s, l);
    free(s);
}

/* one LevelDB store per seed, written with `shape`, and its (only) log taken as the seed */
static void ldblog_seed(const char *tmp, const char *name, int shape)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ldb-%s", tmp, name);
    leveldb_options_t *o = leveldb_options_create();
    leveldb_options_set_create_if_missing(o, 1);
    char *err = NULL;
    leveldb_t *db = leveldb_open(o, dir, &err);
    if (!db) {
        fprintf(stderr, "leveldb: %s\n", err);
        exit(1);
    }
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    static char val[40000];
    memset(val, 'v', sizeof val);
    char key[32];
    for (int i = 0; i < 24; i++) {
        snprintf(key, sizeof key, "key-%03d", i);
        if (shape == 0) { /* one small put per batch */
            leveldb_put(db, wo, key, strlen(key), val, (size_t)(i * 7), &err);
        } else if (shape == 1) { /* a 40000-byte value across blocks among small ones */
            leveldb_put(db, wo, key, strlen(key), val, i == 5 ? sizeof val : 100, &err);
        } else { /* batches of several puts and a delete */
            leveldb_writebatch_t *b = leveldb_writebatch_create();
            for (int j = 0; j < 3; j++) {
                snprintf(key, sizeof key, "b%02d-%d", i, j);
                leveldb_writebatch_put(b, key, strlen(key), val, 30);
            }
            leveldb_writebatch_delete(b, "b00-0", 5);
            leveldb_write(db, wo, b, &err);
            leveldb_writebatch_destroy(b);
        }
        if (err) {
            fprintf(stderr, "leveldb: %s\n", err);
            exit(1);
        }
    }
    leveldb_writeoptions_destroy(wo);
    leveldb_close(db);
    leveldb_options_destroy(o);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 4 && strcmp(de->d_name + l - 4, ".log") == 0) {
            char p[900];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            uint8_t *b = slurp(p, &l);
            put_file("ldblog", name, b, l, NULL, 0);
            free(b);
        }
    }
    if (d)
        closedir(d);
}

static void gen_ldblog(const char *tmp)
{
    ldblog_seed(tmp, "small-batches", 0);
    ldblog_seed(tmp, "spanning-blocks", 1);
    ldblog_seed(tmp, "puts-and-deletes", 2);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s <corpus dir> <etcd snapshot.db>\n", argv[0]);
        return 2;
    }
    cairn_log_set_level(CAIRN_LOG_ERROR);
    g_out = argv[1];
    char tmp[] = "/tmp/cairn-seedgen-XXXXXX";
    if (!mkdtemp(tmp))
        return 1;
    gen_ipc();
    gen_proto();
    gen_wal(tmp);
    gen_snap(tmp, argv[2]);
    gen_ldblog(tmp);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    return system(cmd) ? 1 : 0;
}
