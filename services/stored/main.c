/* stored - durability and state for one Cairn node (DESIGN.md "stored").
 *
 * One thread, one ROUTER socket (<run>/stored.ipc) that raftd and every gatewayd connect to.
 * Each pass of the loop:
 *   1. drains every message waiting (so many APPENDs share one fdatasync: group commit);
 *   2. writes the buffered WAL records and fdatasyncs ONCE, then acks raftd with APPENDED
 *      (raftd counts this node toward a quorum only after that ack);
 *   3. applies committed entries (min(commit, persisted)) to the MVCC store in one LevelDB
 *      write per pass, the applied index riding in the same write, and sends each result to
 *      the gateway that proposed it;
 *   4. serves the reads whose read index is now applied.
 * The raft log since the last snapshot is kept in memory as well as in the WAL, so that
 * raftd can reload it at start (LOAD) and apply never re-reads the disk.
 *
 * This file is the loop and the message dispatch; stored.h lists the files that hold the rest
 * (apply and replies, start-up and WAL replay, snapshot transfer and install, metrics).
 */
#include <czmq.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sys/statvfs.h>

#include "cairn_config.h"
#include "cairn_daemon.h"
#include "cairn_kvcheck.h"
#include "rpc.pb-c.h"
#include "cairn_err.h"
#include "cairn_ipc.h"
#include "cairn_log.h"
#include "cairn_member.h"
#include "cairn_zmq.h"
#include "memlog.h"
#include "mvcc.h"
#include "snapshot.h"
#include "cairn_procmetrics.h"
#include "stored.h"
#include "wal.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { g_stop = 1; }

/* ---- a full disk --------------------------------------------------------------------------
 *
 * When a write to the disk fails (ENOSPC, EIO: the WAL's sync, LevelDB's write), stored does
 * not exit (a restart on a full disk only fails again, in a loop, and reads go down with it).
 * It goes on in a mode that refuses writes and serves reads, and recovers in place:
 *
 * - Nothing that failed is acknowledged. A failed WAL sync drops its batch (wal.h); its
 *   entries leave the in-memory log (they are not durable) and raftd is never told they are.
 *   While the mode lasts, APPENDs are not written and never acknowledged either: a raftd
 *   that gets no ack counts nothing of ours toward a quorum, votes for no one, promises
 *   nothing. Entries durable before the failure are applied as usual (the WAL failed but
 *   LevelDB works), reads at the applied state answer (RANGE, serializable and
 *   linearizable: the commit index stops where our disk stopped, on one member).
 * - Clients get a clear error where that is true: a write (an entry from one of our gateways)
 *   refused while this member is the ONLY voter can never commit (no quorum without our
 *   disk, and raftd forgets it, see recovery), so its gateway is answered at once with etcd's
 *   "etcdserver: mvcc: database space exceeded" (ResourceExhausted). Not so for the entries of
 *   the batch whose write failed part way (cairn_wal_dirty_bytes: they may be on disk until
 *   the WAL clears them): those and every write refused on a member of a larger cluster (the
 *   others may commit it without us) keep an unknown outcome and time out. An alarm GET
 *   (etcdctl alarm list goes through the log) is a read: it is answered from here.
 * - The NOSPACE alarm. In a cluster, stored proposes ACTIVATE NOSPACE for this member
 *   through its raftd (stored_propose, as the quota does); the others commit it and refuse
 *   writes as etcd does. A single member cannot write the alarm to its own full WAL, so the
 *   alarm is a LOCAL condition while the disk is full: this member's alarm list (MAINT
 *   ALARMS: Status, /health, and the alarm GET above) reports NOSPACE for it on top of the
 *   applied alarm table, and the alarm is proposed through the log as soon as the WAL takes
 *   writes again, so that, as in etcd, it stays until an operator disarms it (a write made
 *   right after the space returned would otherwise race the disk filling up again). The
 *   local condition ends once the proposed alarm is seen applied.
 * - Recovery, at most once a second: once the filesystem has room (a WAL segment, and for
 *   LevelDB twice its logs: reopening rewrites them), the WAL clears what the failed sync may
 *   have written (cairn_wal_recover), a LevelDB that failed is closed and reopened (LevelDB
 *   keeps a failed background write sticky, and a failed log write leaves a torn record that
 *   later writes must not follow) and applies again from the in-memory log above its applied
 *   index - what a restart does, without one. Then stored takes a new boot id and says HELLO:
 *   raftd reloads its state from what is durable (exactly as after a restart of stored), so
 *   every entry it handed us while we refused them is forgotten before anything new is
 *   written. Said in the log once when the mode starts (with the file and the errno's text)
 *   and once when it ends; not once per attempt.
 */
enum { DF_WAL = 1, DF_MVCC = 2 };
/* The reserve (CockroachDB's "ballast"): a preallocated file in member/ that is removed the
 * moment a LevelDB write fails, so that LevelDB finds the room to be reopened and to apply
 * what is already committed and durable in the WAL: without it the commit index
 * stays above the applied one and every linearizable read waits for the disk. Recreated
 * before writes resume. CAIRN_DISK_RESERVE_BYTES sets its size (0: none). */
#define DF_RESERVE_DEFAULT ((uint64_t)16 << 20)
#define DF_PROBE_MS 1000
#define DF_PROPOSE_MS 2000

static struct {
    int active;           /* writes are refused (the mode above) */
    int broken;           /* DF_WAL | DF_MVCC: what must be repaired before writes resume */
    int have_reserve;     /* the reserve file is in place */
    uint64_t reserve_bytes;
    char reserve_path[4200];
    int local_alarm;      /* NOSPACE reported for this member until the applied table has it */
    int alarm_seen;       /* the applied table had it in this episode */
    int reopen_logged;    /* a failed reopen is said once */
    int released_at_start; /* no reserve since the start (no room): made once there is */
    int64_t next_reserve; /* when to look for that room again */
    int64_t since, next_probe, next_propose;
    uint64_t refused;     /* entries refused in this episode */
} g_df;

/* The member is the only voter: an entry it does not persist can never be committed. */
static int df_single_voter(const stored_t *s)
{
    uint64_t self = cairn_config_member_id(s->cfg);
    size_t voters = 0;
    int me = 0;
    for (size_t i = 0; i < s->members.n; i++) {
        if (s->members.v[i].learner)
            continue;
        voters++;
        me |= s->members.v[i].id == self;
    }
    return voters == 1 && me;
}

static void df_dirs(const stored_t *s, char *wal, size_t wl, char *mvcc, size_t ml)
{
    /* the same places as replay.c's stored_start */
    if (s->cfg->wal_dir && *s->cfg->wal_dir)
        snprintf(wal, wl, "%s", s->cfg->wal_dir);
    else
        snprintf(wal, wl, "%s/member/wal", s->cfg->data_dir);
    snprintf(mvcc, ml, "%s/member/mvcc", s->cfg->data_dir);
}

static uint64_t df_free_bytes(const char *dir)
{
    struct statvfs v;
    return statvfs(dir, &v) == 0 ? (uint64_t)v.f_bavail * v.f_frsize : 0;
}

/* Bytes in LevelDB's logs: a reopen turns them into a table (and starts a new log). */
static uint64_t df_ldb_log_bytes(const char *dir)
{
    uint64_t n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    char p[4352];
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        struct stat st;
        if (l > 4 && strcmp(e->d_name + l - 4, ".log") == 0) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (stat(p, &st) == 0)
                n += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return n;
}

/* This member's alarm list: the applied table, plus (with_local) NOSPACE for this member if
 * the table lacks it. *body is malloc'd (the packed AlarmResponse). 0 or a CAIRN_E*. */
static int df_alarm_list(stored_t *s, int with_local, uint8_t **body, size_t *len)
{
    *body = NULL;
    *len = 0;
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    if (s->mvcc) {
        Etcdserverpb__AlarmRequest q = ETCDSERVERPB__ALARM_REQUEST__INIT; /* GET, NONE: all */
        uint8_t qb[16];
        size_t qn = etcdserverpb__alarm_request__pack(&q, qb);
        cairn_apply_err_t err = {0};
        cairn_hdr_ctx_t hc = stored_hdr_ctx(s);
        int rc = cairn_apply_read(s->mvcc, CAIRN_REQ_ALARM, qb, qn, &hc, &resp, &resp_len, &err);
        if (rc < 0 || err.grpc_code) {
            free(resp);
            resp = NULL;
            resp_len = 0;
        }
    }
    Etcdserverpb__AlarmResponse *r = resp ? etcdserverpb__alarm_response__unpack(NULL, resp_len, resp) : NULL;
    free(resp);
    uint64_t self = cairn_config_member_id(s->cfg);
    size_t n = r ? r->n_alarms : 0;
    int have = 0;
    for (size_t i = 0; i < n; i++)
        have |= r->alarms[i]->memberid == self && r->alarms[i]->alarm == ETCDSERVERPB__ALARM_TYPE__NOSPACE;
    Etcdserverpb__AlarmResponse out = ETCDSERVERPB__ALARM_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__AlarmMember mine = ETCDSERVERPB__ALARM_MEMBER__INIT;
    Etcdserverpb__AlarmMember **v = calloc(n + 1, sizeof *v);
    if (!v) {
        if (r)
            etcdserverpb__alarm_response__free_unpacked(r, NULL);
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = r->alarms[i];
    if (!have && with_local) {
        mine.memberid = self;
        mine.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
        v[n++] = &mine;
    }
    if (r && r->header) {
        out.header = r->header;
    } else {
        cairn_hdr_ctx_t hc = stored_hdr_ctx(s);
        h.cluster_id = hc.cluster_id;
        h.member_id = hc.member_id;
        h.raft_term = hc.raft_term;
        h.revision = s->mvcc ? cairn_mvcc_revision(s->mvcc) : 0;
        out.header = &h;
    }
    out.alarms = v;
    out.n_alarms = n;
    size_t sz = etcdserverpb__alarm_response__get_packed_size(&out);
    uint8_t *b = malloc(sz ? sz : 1);
    if (b)
        etcdserverpb__alarm_response__pack(&out, b);
    free(v);
    if (r)
        etcdserverpb__alarm_response__free_unpacked(r, NULL);
    if (!b)
        return CAIRN_ENOMEM;
    *body = b;
    *len = sz;
    return 0;
}

static void df_answer_alarms(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id)
{
    uint8_t *body;
    size_t len;
    if (df_alarm_list(s, 1, &body, &len) != 0) {
        stored_reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    stored_reply_result(s, ident, ident_len, req_id, CAIRN_GRPC_OK, NULL, body, len);
    free(body);
}

/* An entry we will not persist. Answers its gateway when that is true (see above): an alarm
 * GET with the alarm list, a write with "database space exceeded" when it can never commit
 * (can_refuse). Others are left to time out: their outcome is not ours to say. */
static void df_refuse_entry(stored_t *s, uint8_t type, const uint8_t *data, size_t len, int can_refuse)
{
    g_df.refused++;
    cairn_ipc_req_t req;
    if (type != 0 || len == 0 || cairn_ipc_req_decode(data, len, &req) != 0)
        return;
    if (req.origin_len <= s->origin_prefix_len || req.origin_len > 256 ||
        memcmp(req.origin, s->origin_prefix, s->origin_prefix_len) != 0)
        return; /* not from one of our gateways (another member's, or stored's own) */
    if (req.kind == CAIRN_REQ_ALARM) {
        Etcdserverpb__AlarmRequest *q =
            etcdserverpb__alarm_request__unpack(NULL, req.body_len, req.body ? req.body : (const uint8_t *)"");
        int get = q && q->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET;
        if (q)
            etcdserverpb__alarm_request__free_unpacked(q, NULL);
        if (get) {
            df_answer_alarms(s, req.origin, req.origin_len, req.req_id);
            return;
        }
    }
    if (can_refuse)
        stored_reply_error(s, req.origin, req.origin_len, req.req_id, CAIRN_ETCD_NO_SPACE);
}

static void df_reserve_init(stored_t *s)
{
    if (g_df.reserve_path[0])
        return;
    snprintf(g_df.reserve_path, sizeof g_df.reserve_path, "%s/member/disk-reserve", s->cfg->data_dir);
    const char *env = getenv("CAIRN_DISK_RESERVE_BYTES");
    g_df.reserve_bytes = env && *env ? (uint64_t)strtoull(env, NULL, 10) : DF_RESERVE_DEFAULT;
}

/* Creates the reserve if it is not there; 0, or -1 when the disk has no room for it. */
static int df_reserve_make(stored_t *s)
{
    df_reserve_init(s);
    if (g_df.have_reserve || g_df.reserve_bytes == 0)
        return 0;
    int fd = open(g_df.reserve_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int rc = posix_fallocate(fd, 0, (off_t)g_df.reserve_bytes);
    if (rc == 0)
        rc = fsync(fd) ? errno : 0;
    close(fd);
    if (rc) {
        unlink(g_df.reserve_path);
        return -1;
    }
    g_df.have_reserve = 1;
    return 0;
}

static void df_reserve_release(void)
{
    if (!g_df.have_reserve)
        return;
    if (unlink(g_df.reserve_path) == 0 || errno == ENOENT)
        g_df.have_reserve = 0;
    cairn_info("released the disk reserve for the state machine to catch up", "file=%s bytes=%llu", g_df.reserve_path,
               (unsigned long long)g_df.reserve_bytes);
}

static int df_reopen_mvcc(stored_t *s, const char *path);

/* Before the start: opening the store on a full disk needs room too (LevelDB turns its log
 * into a table, the WAL may cut a torn tail), so a reserve left by the last run is released
 * for it: a member restarted on a full disk comes up and serves reads instead of failing its
 * start in a loop. */
static void df_before_start(stored_t *s)
{
    df_reserve_init(s);
    struct stat st;
    if (stat(g_df.reserve_path, &st) != 0)
        return;
    g_df.have_reserve = 1;
    char waldir[4096], mvccdir[4096];
    df_dirs(s, waldir, sizeof waldir, mvccdir, sizeof mvccdir);
    if (df_free_bytes(s->cfg->data_dir) < 2 * df_ldb_log_bytes(mvccdir) + (4u << 20)) {
        df_reserve_release(); /* made again right after the start, or once there is room */
    }
}

/* LevelDB failed: reopen it now if the disk has the room (the reserve just released), so that
 * what is committed gets applied and linearizable reads answer while writes stay refused. */
static void df_repair_mvcc_now(stored_t *s)
{
    char waldir[4096], mvccdir[4096];
    df_dirs(s, waldir, sizeof waldir, mvccdir, sizeof mvccdir);
    if (df_free_bytes(mvccdir) < 2 * df_ldb_log_bytes(mvccdir) + (1u << 20))
        return; /* not even that: reads of the applied state go on from the open store */
    if (df_reopen_mvcc(s, mvccdir) == 0)
        g_df.broken &= ~DF_MVCC;
}

/* A write to the disk failed (what: DF_WAL or DF_MVCC): refuse writes from now on. */
static void df_enter(stored_t *s, int what, int rc)
{
    int64_t now = cairn_now_ms();
    if (!g_df.active) {
        char why[600] = "";
        if (what & DF_WAL)
            snprintf(why, sizeof why, "%s", cairn_wal_error(s->wal));
        else
            cairn_mvcc_last_error(why, sizeof why);
        cairn_error("storage is full or failing; refusing writes and serving reads until it can write again",
                    "data_dir=%s store=%s err=\"%s\" retry_ms=%d", s->cfg->data_dir, what & DF_WAL ? "wal" : "mvcc",
                    why[0] ? why : cairn_strerror(rc), DF_PROBE_MS);
        g_df.since = now;
        g_df.refused = 0;
        g_df.next_probe = now + DF_PROBE_MS;
        g_df.reopen_logged = 0;
        g_df.alarm_seen = 0;
    }
    g_df.active = 1;
    g_df.broken |= what;
    g_df.local_alarm = 1;
    g_df.next_propose = now;
    /* The reserve is released only for LevelDB, and only the moment it failed: its repair
     * below takes the room at once. Released when the WAL failed, the room was anyone's
     * until LevelDB met the full disk too (another writer on the filesystem could take it
     * first, and the reopen then had no room: linearizable reads waited for the disk). The
     * WAL needs no reserve: it recovers once the filesystem has a segment's room. */
    if (what & DF_MVCC)
        df_reserve_release();
    if (what & DF_WAL) {
        /* the dropped batch: its entries are not durable, so they leave the log (a restart
         * would not have them either); their writers are told only if nothing of them can be
         * on disk */
        int can_refuse = df_single_voter(s) && cairn_wal_dirty_bytes(s->wal) == 0;
        for (uint64_t i = s->persisted + 1; i <= cairn_memlog_last(s->log); i++) {
            const cairn_memlog_entry_t *e = cairn_memlog_at(s->log, i);
            if (e)
                df_refuse_entry(s, e->type, e->data, e->len, can_refuse);
        }
        cairn_memlog_truncate_from(s->log, s->persisted + 1);
        /* and a term or vote it carried was never made durable: raftd, reloading, must not be
         * told it was (it could vote twice across a crash) */
        if (!cairn_wal_hardstate(s->wal, &s->hs))
            s->hs = (cairn_wal_hardstate_t){0, 0, 0};
        s->wal_failed = 1;
        s->have_pending = 0;
    }
    /* raftd's single-voter shortcut names entries of the log we just dropped */
    s->commit_on_persist = 0;
    if (what & DF_MVCC)
        df_repair_mvcc_now(s);
}

/* Closes and reopens the store (see above); 0, or -1 (s->mvcc may then be NULL: retried). */
static int df_reopen_mvcc(stored_t *s, const char *path)
{
    if (s->inst.running)
        return -1; /* a snapshot install owns the store's replacement: after it */
    stored_snap_build_wait(s); /* threads reading the store end before it closes */
    stored_defrag_reap(s, 1);
    cairn_mvcc_destroy(&s->mvcc);
    char err[512];
    int rc;
    s->mvcc = cairn_mvcc_open(path, &rc, err, sizeof err);
    if (!s->mvcc) {
        if (!g_df.reopen_logged)
            cairn_error("cannot reopen the mvcc store; retrying", "path=%s err=\"%s\"", path, err);
        g_df.reopen_logged = 1;
        return -1;
    }
    cairn_members_clear(&s->members);
    if ((rc = stored_load_members(s)) != 0) {
        cairn_error("cannot read the cluster membership after a reopen; stopping", "err=\"%s\"", cairn_strerror(rc));
        stored_stop_with(s, rc);
        return -1;
    }
    stored_events_attach(s);
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    cairn_info("mvcc store reopened after a failed write", "path=%s applied=%llu commit=%llu", path,
               (unsigned long long)applied, (unsigned long long)s->commit);
    if (cairn_memlog_count(s->log) && cairn_memlog_first(s->log) > applied + 1) {
        /* the reopened store is behind what the in-memory log still holds: only the WAL has
         * the rest, and reading it back is what a start does */
        cairn_error("reopened store is behind the in-memory log; stopping so the WAL is replayed",
                    "applied=%llu first=%llu", (unsigned long long)applied,
                    (unsigned long long)cairn_memlog_first(s->log));
        stored_stop_with(s, CAIRN_EIO);
        return -1;
    }
    return 0;
}

static void df_try_recover(stored_t *s, int64_t now)
{
    char waldir[4096], mvccdir[4096];
    df_dirs(s, waldir, sizeof waldir, mvccdir, sizeof mvccdir);
    /* room for a rollover of the WAL (and LevelDB's reopen): trying sooner only fails again */
    uint64_t need_wal = (uint64_t)cairn_wal_segment_bytes(s->wal) + (1u << 20) + (g_df.have_reserve ? 0 : g_df.reserve_bytes);
    uint64_t need_ldb = (g_df.broken & DF_MVCC) ? 2 * df_ldb_log_bytes(mvccdir) + (4u << 20) : (1u << 20);
    uint64_t fw = df_free_bytes(waldir), fm = df_free_bytes(mvccdir);
    if (fw < need_wal || fm < need_ldb || (fw == fm && fw < need_wal + need_ldb))
        return;
    if (s->wal_failed) {
        if (cairn_wal_recover(s->wal) != 0)
            return;
        s->wal_failed = 0;
    }
    g_df.broken &= ~DF_WAL;
    if ((g_df.broken & DF_MVCC) && df_reopen_mvcc(s, mvccdir) != 0)
        return;
    g_df.broken = 0;
    if (df_reserve_make(s) != 0)
        return; /* the room went again meanwhile */
    g_df.released_at_start = 0;
    /* raftd forgets every entry it handed us meanwhile: it reloads what is durable, as after
     * a restart of stored (a new boot id; APPENDs and COMMITs of the old one are ignored) */
    s->boot_id = cairn_random_u64();
    s->commit_on_persist = 0;
    s->leader = 0; /* learned again from raftd's next COMMIT: the alarm is proposed then */
    cairn_ipc_msg_t h = {.type = CAIRN_IPC_HELLO, .boot_id = s->boot_id};
    cairn_zmq_send(s->router, "raftd", 5, &h);
    cairn_info("storage writes again; writes resume (the NOSPACE alarm stays until disarmed)",
               "down_ms=%lld refused_entries=%llu free_bytes=%llu needed=%llu applied=%llu", (long long)(now - g_df.since),
               (unsigned long long)g_df.refused, (unsigned long long)fw, (unsigned long long)(need_wal + need_ldb),
               (unsigned long long)(s->mvcc ? cairn_mvcc_applied_index(s->mvcc) : 0));
    g_df.active = 0;
    g_df.next_propose = now;
    /* In a cluster the alarm was proposed while we were full, and the others committed it
     * (we apply it as we catch up): proposing it again now could undo a disarm made
     * meanwhile. A single member could not commit it then: it proposes it now. */
    if (!df_single_voter(s))
        g_df.local_alarm = 0;
}

static int df_alarm_applied(stored_t *s)
{
    if (!s->mvcc || !(cairn_mvcc_alarms(s->mvcc, CAIRN_MVCC_COMMITTED) & (1u << ETCDSERVERPB__ALARM_TYPE__NOSPACE)))
        return 0;
    uint8_t *body;
    size_t len;
    int found = 0;
    if (df_alarm_list(s, 0, &body, &len) == 0) {
        Etcdserverpb__AlarmResponse *r = etcdserverpb__alarm_response__unpack(NULL, len, body);
        for (size_t i = 0; r && i < r->n_alarms; i++)
            found |= r->alarms[i]->memberid == cairn_config_member_id(s->cfg) &&
                     r->alarms[i]->alarm == ETCDSERVERPB__ALARM_TYPE__NOSPACE;
        if (r)
            etcdserverpb__alarm_response__free_unpacked(r, NULL);
        free(body);
    }
    return found;
}

/* Once per loop pass: recovery attempts and the alarm's proposal. */
static void df_tick(stored_t *s, int64_t now)
{
    if (g_df.active && now >= g_df.next_probe) {
        g_df.next_probe = now + DF_PROBE_MS;
        df_try_recover(s, now);
    }
    if (!g_df.active && g_df.released_at_start && now >= g_df.next_reserve) {
        g_df.next_reserve = now + 10 * DF_PROBE_MS;
        if (df_free_bytes(s->cfg->data_dir) >= 2 * g_df.reserve_bytes + (1u << 20) && df_reserve_make(s) == 0)
            g_df.released_at_start = 0;
    }
    if (!g_df.local_alarm)
        return;
    /* Seen applied once in this episode: the cluster's alarm now, which stays until an
     * operator disarms it; never proposed again in this episode (a disarm must stick). */
    if (!g_df.alarm_seen && df_alarm_applied(s)) {
        g_df.alarm_seen = 1;
        /* said because a single member can only propose it once its disk takes writes again:
         * a disarm made before this line is overtaken by it (an operator, or a test, waits
         * for it before disarming) */
        cairn_info("the NOSPACE alarm for the full disk is in the cluster's alarm table; it stays until an alarm disarm",
                   "member_id=%016llx disk_full=%d", (unsigned long long)cairn_config_member_id(s->cfg), g_df.active);
    }
    if (g_df.alarm_seen) {
        if (!g_df.active)
            g_df.local_alarm = 0;
        return;
    }
    /* proposed while full only where others can commit it; after recovery once raftd has a
     * leader again (it reloads first) */
    if (now < g_df.next_propose || !s->leader || (g_df.active && df_single_voter(s)))
        return;
    Etcdserverpb__AlarmRequest q = ETCDSERVERPB__ALARM_REQUEST__INIT;
    q.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    q.memberid = cairn_config_member_id(s->cfg);
    q.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
    uint8_t qb[32];
    size_t qn = etcdserverpb__alarm_request__pack(&q, qb);
    if (stored_propose(s, CAIRN_REQ_ALARM, qb, qn) == 0)
        cairn_debug("proposed the NOSPACE alarm for the full disk", NULL);
    g_df.next_propose = now + DF_PROPOSE_MS;
}


/* After an answer this large (a Range over much of the store), the memory it took goes back
 * to the system: glibc keeps freed heap chunks, so one big read would otherwise stay in RSS. */
#define BIG_ANSWER_BYTES ((size_t)16 << 20)


static void serve_read(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t req_id, const uint8_t *body,
                       size_t len)
{
    cairn_hdr_ctx_t h = stored_hdr_ctx(s);
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    cairn_apply_err_t err = {0};
    int rc = cairn_apply_range(s->mvcc, body, len, &h, &resp, &resp_len, &err);
    if (rc < 0)
        stored_reply_error(s, ident, ident_len, req_id, CAIRN_ETCD_STORAGE);
    else if (err.grpc_code)
        stored_reply_result(s, ident, ident_len, req_id, err.grpc_code, err.message, NULL, 0);
    else
        stored_reply_result(s, ident, ident_len, req_id, CAIRN_GRPC_OK, NULL, resp, resp_len);
    free(resp);
    if (resp_len > BIG_ANSWER_BYTES)
        malloc_trim(0);
}

static void serve_ready_reads(stored_t *s)
{
    uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
    read_t **pp = &s->reads;
    while (*pp) {
        read_t *r = *pp;
        if (r->read_index <= applied) {
            serve_read(s, r->ident, r->ident_len, r->req_id, r->body, r->body_len);
            *pp = r->next;
            free(r->body);
            free(r);
        } else
            pp = &r->next;
    }
    s->reads_tail = pp;
}

/* LOAD is paged (no message grows with the log): LOAD {index = from} answers the header
 * (hard state, the point the log starts after, the membership there) with the durable entries
 * from `from` (0 or out of range: from the first) up to LOAD_PAGE_BYTES of entry data, at
 * least one entry, and index = the last durable index, where raftd's load ends. raftd asks for
 * the next page from the index after the page's last entry; a page that does not continue
 * where it asked (the log moved meanwhile) makes it start over. */
#define LOAD_PAGE_BYTES ((size_t)4 << 20)
#define LOAD_PAGE_ENTRIES 65536


static void send_load_resp(stored_t *s, const uint8_t *ident, size_t ident_len, uint64_t from, uint64_t seq)
{
    /* Only what is durable: raftd must never believe in an entry a crash could erase. */
    const cairn_memlog_t *l = s->log;
    size_t n = cairn_memlog_count(l);
    while (n && cairn_memlog_nth(l, n - 1)->index > s->persisted)
        n--;
    uint64_t first = cairn_memlog_first(l), snap_index = cairn_memlog_snap_index(l);
    size_t start = 0;
    if (from >= first && from < first + n)
        start = (size_t)(from - first);
    size_t end = start, bytes = 0;
    while (end < n && end - start < LOAD_PAGE_ENTRIES &&
           (end == start || bytes + cairn_memlog_nth(l, end)->len <= LOAD_PAGE_BYTES))
        bytes += cairn_memlog_nth(l, end++)->len;
    /* the log holds its entries in one array of the IPC's own entry type: the page is sent
     * from it as it is */
    const cairn_ipc_entry_t *ents = end > start ? cairn_memlog_nth(l, start) : NULL;
    uint64_t last = n ? cairn_memlog_nth(l, n - 1)->index : snap_index;
    if (!n && !snap_index)
        last = cairn_mvcc_applied_index(s->mvcc);
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LOAD_RESP, .boot_id = s->boot_id, .term = s->hs.term, .vote = s->hs.vote,
                         .commit = s->hs.commit < last ? s->hs.commit : last, .snap_index = snap_index,
                         .snap_term = cairn_memlog_snap_term(l),
                         .entries = ents, .n_entries = end - start, .last = n ? last : 0, .seq = seq};
    if (n == 0 && snap_index == 0) {
        /* nothing in the log: everything up to the applied index was compacted away */
        m.snap_index = cairn_mvcc_applied_index(s->mvcc);
        m.snap_term = cairn_mvcc_applied_term(s->mvcc);
    }
    /* the membership where raftd's log starts; the configuration entries after it are in ents */
    uint8_t *blob = NULL;
    size_t blen = 0;
    if (cairn_mvcc_conf_get(s->mvcc, m.snap_index, &blob, &blen, NULL) == 1) {
        m.body = blob;
        m.body_len = blen;
    }
    m.cluster_id = s->members.cluster_id;
    stored_reply(s, ident, ident_len, &m);
    free(blob);
}

/* A record raftd sent could not be buffered for the WAL: the WAL drops the batch and refuses
 * everything from now on (wal.h), nothing more is acknowledged, and stored exits so that its
 * supervisor restarts it; the restart replays what is durable and raftd reloads from it. */
static int persist_failed(stored_t *s, const char *what, int rc)
{
    cairn_error("cannot persist raft state; stopping without acknowledging it", "step=\"%s\" err=\"%s\"", what,
                cairn_strerror(rc));
    s->wal_failed = 1;
    s->have_pending = 0;
    return stored_stop_with(s, rc);
}

static void handle(stored_t *s, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected ipc message", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .code = rc};
        cairn_ipc_set_message(&e, cairn_strerror(rc));
        stored_reply(s, ident, ident_len, &e);
        return;
    }
    if (!s->mvcc && m.type != CAIRN_IPC_APPEND && m.type != CAIRN_IPC_COMMIT) {
        /* the store is being reopened after a full disk and could not be yet: a request that
         * needs it gets an error now rather than a wait (LOAD, snapshots: retried by raftd) */
        if (m.req_id)
            stored_reply_error(s, ident, ident_len, m.req_id, CAIRN_ETCD_STORAGE);
        cairn_ipc_msg_release(&m);
        return;
    }
    switch (m.type) {
    case CAIRN_IPC_LOAD:
        if (ident_len <= sizeof s->raftd_ident) {
            memcpy(s->raftd_ident, ident, ident_len);
            s->raftd_ident_len = ident_len;
        }
        send_load_resp(s, ident, ident_len, m.first, m.seq);
        break;
    case CAIRN_IPC_APPEND:
        if (s->fatal)
            break;
        if (m.boot_id != s->boot_id) {
            /* From a raftd that loaded from an earlier instance of us: what it believes we
             * hold may be lost. Ignore it and tell it at once to reload. */
            cairn_ipc_msg_t h = {.type = CAIRN_IPC_HELLO, .boot_id = s->boot_id};
            stored_reply(s, ident, ident_len, &h);
            break;
        }
        if (ident_len <= sizeof s->raftd_ident) {
            memcpy(s->raftd_ident, ident, ident_len);
            s->raftd_ident_len = ident_len;
        }
        if (g_df.active || s->wal_failed) {
            /* the disk is full: nothing is written, nothing acknowledged (see "a full disk");
             * the hard state it carries is not taken either: it is not durable */
            int can_refuse = df_single_voter(s);
            for (size_t i = 0; i < m.n_entries; i++)
                if (m.entries[i].index > s->persisted) /* below it: durable, not ours to refuse */
                    df_refuse_entry(s, m.entries[i].type, m.entries[i].data, m.entries[i].len, can_refuse);
            break;
        }
        if (m.n_entries && m.entries[0].index > cairn_memlog_last(s->log) + 1) {
            /* A raftd that has not yet noticed our restart sends past our log: ignore it; our
             * HELLO makes it reload (LOAD) and resend from what we really hold. */
            cairn_warn("append leaves a gap; ignored until raftd reloads", "first=%llu last=%llu",
                       (unsigned long long)m.entries[0].index, (unsigned long long)cairn_memlog_last(s->log));
            break;
        }
        for (size_t i = 0; i < m.n_entries; i++) {
            const cairn_ipc_entry_t *e = &m.entries[i];
            if (e->index <= cairn_mvcc_applied_index(s->mvcc)) {
                /* Committed and already in the state machine: after a snapshot install whose
                 * state is past the raft snapshot point, raftd replicates S+1..applied again.
                 * Keep them in the in-memory log (raftd reloads it, lagging members are served
                 * from it) but not in the WAL: the state machine holds them durably, and Raft
                 * never rewrites a committed entry. The persisted index moves past them with
                 * the next sync. */
                const cairn_memlog_entry_t *have = cairn_memlog_at(s->log, e->index);
                uint64_t applied = cairn_mvcc_applied_index(s->mvcc);
                if (have && have->term != e->term) {
                    cairn_error("append conflicts with an applied entry; ignored", "index=%llu term=%llu held_term=%llu applied=%llu",
                                (unsigned long long)e->index, (unsigned long long)e->term,
                                (unsigned long long)have->term, (unsigned long long)applied);
                } else if (!have && e->index == cairn_memlog_last(s->log) + 1) {
                    if ((rc = cairn_memlog_append(s->log, e->index, e->term, e->type, e->data, e->len))) {
                        persist_failed(s, "in-memory log append", rc);
                        break;
                    }
                    cairn_debug("applied entry kept in memory only", "index=%llu applied=%llu",
                                (unsigned long long)e->index, (unsigned long long)applied);
                }
                continue;
            }
            cairn_wal_entry_t we = {e->index, e->term, e->type, e->data, e->len};
            if ((rc = cairn_wal_append_entry(s->wal, &we)) || (rc = cairn_memlog_append(s->log, e->index, e->term, e->type, e->data, e->len))) {
                persist_failed(s, "wal entry append", rc);
                break;
            }
            if (e->index <= s->persisted)
                s->persisted = e->index - 1; /* the overwritten suffix is no longer durable */
        }
        int must_sync = m.n_entries > 0;
        if (m.has_hs) {
            /* Raft needs term and vote durable before answering (§5.1, §5.2); the commit index
             * can always be learned again, so a change of commit alone rides along with the
             * next sync instead of costing an fdatasync of its own (etcd's MustSync rule). */
            if (m.term != s->hs.term || m.vote != s->hs.vote)
                must_sync = 1;
            s->hs = (cairn_wal_hardstate_t){m.term, m.vote, m.commit};
            if ((rc = cairn_wal_append_hardstate(s->wal, &s->hs)) != 0)
                persist_failed(s, "wal hard state append", rc);
        }
        if (s->wal_failed)
            break; /* never acknowledged: raftd must not promise what may not be on disk */
        if (!must_sync && !s->have_pending) {
            /* nothing this APPEND carries needs the disk: acknowledge it at once */
            const cairn_memlog_entry_t *le = cairn_memlog_at(s->log, s->persisted);
            cairn_ipc_msg_t a = {.type = CAIRN_IPC_APPENDED, .boot_id = s->boot_id, .seq = m.seq, .index = s->persisted,
                                 .term = le ? le->term : cairn_memlog_snap_term(s->log)};
            stored_reply(s, ident, ident_len, &a);
            break;
        }
        s->pending_seq = m.seq;
        s->have_pending = 1;
        if (m.commit_durable > s->commit_on_persist)
            s->commit_on_persist = m.commit_durable;
        break;
    case CAIRN_IPC_SNAP_REQ:
        stored_snap_req(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_SNAP_RECV:
        stored_snap_recv(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_COMMIT:
        if (m.boot_id != s->boot_id)
            break; /* computed against another instance's log: see cairn_ipc.h "Epochs" */
        if (m.commit > s->commit)
            s->commit = m.commit;
        s->term = m.term;
        s->leader = m.leader;
        break;
    case CAIRN_IPC_RANGE:
        if (m.read_index <= cairn_mvcc_applied_index(s->mvcc)) {
            serve_read(s, ident, ident_len, m.req_id, m.body, m.body_len);
        } else {
            read_t *r = calloc(1, sizeof *r);
            if (!r || ident_len > sizeof r->ident || (m.body_len && !(r->body = malloc(m.body_len)))) {
                free(r);
                stored_reply_error(s, ident, ident_len, m.req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
                break;
            }
            memcpy(r->ident, ident, ident_len);
            r->ident_len = ident_len;
            r->req_id = m.req_id;
            r->read_index = m.read_index;
            if (m.body_len)
                memcpy(r->body, m.body, m.body_len);
            r->body_len = m.body_len;
            *s->reads_tail = r;
            s->reads_tail = &r->next;
        }
        break;
    case CAIRN_IPC_METRICS:
        stored_metrics_answer(s, ident, ident_len, m.req_id);
        break;
    case CAIRN_IPC_LEASE_LIST:
        stored_lease_list(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_LEASE_READ:
        stored_lease_read(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_HISTORY: {
        cairn_ipc_msg_t r;
        uint8_t *owned;
        cairn_events_history(s->mvcc, &m, &r, &owned);
        stored_reply(s, ident, ident_len, &r);
        free(owned);
        break;
    }
    case CAIRN_IPC_MAINT:
        if (m.op == CAIRN_MAINT_ALARMS && (g_df.local_alarm || g_df.active))
            df_answer_alarms(s, ident, ident_len, m.req_id); /* with the local NOSPACE */
        else
            stored_maint(s, ident, ident_len, &m);
        break;
    case CAIRN_IPC_STATUS: {
        int64_t size = cairn_mvcc_db_size(s->mvcc);
        cairn_ipc_msg_t r = {.type = CAIRN_IPC_STATUS_RESP, .req_id = m.req_id, .leader = s->leader, .term = s->term,
                             .index = s->persisted, .applied = cairn_mvcc_applied_index(s->mvcc),
                             .db_size = size > 0 ? (uint64_t)size : 0,
                             .revision = cairn_mvcc_revision(s->mvcc),
                             .compact_rev = cairn_mvcc_compact_revision(s->mvcc),
                             .cluster_id = stored_hdr_ctx(s).cluster_id};
        const cairn_member_t *self = cairn_members_find(&s->members, cairn_config_member_id(s->cfg));
        r.learner = self && self->learner;
        int64_t in_use = cairn_mvcc_db_size_in_use(s->mvcc);
        r.db_size_in_use = in_use > 0 ? (uint64_t)(in_use < size ? in_use : size) : 0;
        stored_reply(s, ident, ident_len, &r);
        break;
    }
    default: {
        cairn_warn("unexpected ipc message", "type=%s", cairn_ipc_type_name(m.type));
        cairn_ipc_msg_t e = {.type = CAIRN_IPC_ERROR, .req_id = m.req_id, .code = CAIRN_EUNKNOWN_MSG};
        cairn_ipc_set_message(&e, "stored does not handle this message type");
        stored_reply(s, ident, ident_len, &e);
    }
    }
    cairn_ipc_msg_release(&m);
}

static int on_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    stored_t *s = ctx;
    cairn_zmq_outbox_flush(s->outbox, s->router, ident, ident_len); /* it is connected now */
    handle(s, ident, ident_len, frame, len);
    /* stop draining on a fatal error (nothing more is acknowledged); bound the group-commit batch */
    return s->fatal || (s->have_pending && cairn_wal_pending_bytes(s->wal) > (8u << 20));
}

int main(int argc, char **argv)
{
    stored_t S = {0}, *s = &S;
    int exit_code = 1;
    int rc;
    s->cfg = cairn_daemon_init("stored", argc, argv, on_signal, &exit_code);
    if (!s->cfg)
        return exit_code;
    exit_code = 1;
    s->boot_id = cairn_random_u64();
    s->reads_tail = &s->reads;
    if (stored_metrics_init(s) != 0)
        goto out;
    if (!(s->log = cairn_memlog_new())) {
        cairn_error("out of memory", NULL);
        goto out;
    }
    s->origin_prefix_len = (size_t)snprintf(s->origin_prefix, sizeof s->origin_prefix, "%016llx/",
                                            (unsigned long long)cairn_config_member_id(s->cfg));

    df_before_start(s);
    if (stored_start(s) != 0)
        goto out;
    /* entries the WAL holds beyond the store, on a disk that cannot take them now: the mode
     * of a full disk, once the socket is there */
    int start_full = 0;
    if ((rc = stored_apply_committed(s)) < 0) {
        if (s->fatal)
            goto out;
        start_full = 1;
    }

    char ep[512];
    if (cairn_config_ipc_endpoint(s->cfg, "stored", ep, sizeof ep) < 0) {
        cairn_error("ipc endpoint path too long", "run_dir=%s", s->cfg->run_dir);
        goto out;
    }
    s->router = cairn_zmq_router_bind(ep, &rc);
    if (!s->router) {
        cairn_error("cannot bind", "endpoint=%s err=\"%s\"", ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    /* 10 s: longer than a client's usual deadline, so an answer is never kept for no one */
    if (!(s->outbox = cairn_zmq_outbox_new(4096, (size_t)64 << 20, 10000))) {
        cairn_error("out of memory", NULL);
        goto out;
    }
    /* After the replay: what it applied was published by no one, and a gateway that watched
     * through our restart sees the revisions jump and reads them from history. */
    char ev_ep[512];
    if (cairn_config_ipc_endpoint(s->cfg, "events", ev_ep, sizeof ev_ep) < 0 ||
        !(s->events = cairn_events_new(ev_ep, &rc))) {
        cairn_error("cannot publish events", "endpoint=%s", ev_ep);
        goto out;
    }
    stored_events_attach(s);
    if (start_full)
        df_enter(s, DF_MVCC, rc);
    else if (df_reserve_make(s) != 0) {
        g_df.released_at_start = 1; /* tried again in df_tick */
        cairn_warn("no room for the disk reserve; a full disk may stop linearizable reads until it has space",
                   "file=%s bytes=%llu", g_df.reserve_path, (unsigned long long)g_df.reserve_bytes);
    }
    cairn_info("stored ready", "endpoint=%s events=%s member_id=%016llx", ep, ev_ep,
               (unsigned long long)cairn_config_member_id(s->cfg));
    cairn_daemon_notify_ready("stored ready");

    /* raftd learns our boot id from HELLO (sent every second, and dropped while raftd is not
     * connected): a raftd that sees a new boot id knows we restarted and reloads its state. */
    int64_t next_hello = 0, started_at = cairn_now_ms();
    while (!g_stop && !s->fatal) {
        int64_t now = cairn_now_ms();
        if (now >= next_hello) {
            cairn_ipc_msg_t h = {.type = CAIRN_IPC_HELLO, .boot_id = s->boot_id};
            cairn_zmq_send(s->router, "raftd", 5, &h);
            /* every 100 ms while young: raftd's socket reconnects within that and must learn
             * of the restart before it proposes into a log we no longer hold */
            next_hello = now + (now - started_at < 3000 ? 100 : 1000);
            cairn_snap_out_expire(s->snap_out, now, SNAP_OUT_IDLE_MS);
        }
        zmq_pollitem_t item = {zsock_resolve(s->router), 0, ZMQ_POLLIN, 0};
        stored_snap_build_reap(s, 0);
        stored_snap_install_reap(s, 0);
        stored_defrag_reap(s, 0);
        df_tick(s, now);
        if (s->fatal)
            break;
        if (s->mvcc && !g_df.active) {
            stored_quota_check(s, now);
            stored_compactor_tick(s, now);
        }
        /* 10 ms while a thread's answer may be due (Maintenance/Snapshot's first byte waited
         * up to the 500 ms idle poll for its file, even for a tiny store) */
        int timeout = s->reads || s->build.running || s->inst.running || stored_maint_busy(s) ? 10 : 500;
        if (zmq_poll(&item, 1, timeout) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        /* 1. drain */
        if (item.revents & ZMQ_POLLIN)
            cairn_zmq_drain(s->router, 1, 100000, on_frame, s);
        if (s->fatal)
            break;
        /* 2. one fdatasync for everything drained (a failure is a full disk, not an exit) */
        rc = stored_sync_wal(s);
        if (s->fatal)
            break;
        if (s->wal_failed && !(g_df.broken & DF_WAL))
            df_enter(s, DF_WAL, rc < 0 ? rc : cairn_wal_failed(s->wal));
        /* 3. apply (what is durable still is, while only the WAL refuses) */
        if (s->mvcc && !(g_df.broken & DF_MVCC) && (rc = stored_apply_committed(s)) < 0) {
            if (s->fatal)
                break;
            df_enter(s, DF_MVCC, rc);
        }
        /* 4. reads */
        if (s->reads && s->mvcc)
            serve_ready_reads(s);
    }
    cairn_info("stored stopping", "applied=%llu", (unsigned long long)(s->mvcc ? cairn_mvcc_applied_index(s->mvcc) : 0));
    cairn_daemon_notify_stopping();
    exit_code = s->fatal ? 1 : 0;
out:
    zsock_destroy(&s->router);
    cairn_zmq_outbox_destroy(&s->outbox);
    cairn_events_destroy(&s->events);
    free(s->lease_buf);
    stored_snap_install_reap(s, 1);
    stored_snap_build_wait(s); /* before the store it reads is closed */
    stored_defrag_reap(s, 1);  /* the same */
    cairn_wal_destroy(&s->wal);
    cairn_mvcc_destroy(&s->mvcc);
    cairn_snap_in_destroy(&s->snap_in);
    cairn_snap_out_destroy(&s->snap_out);
    cairn_memlog_destroy(&s->log);
    while (s->reads) {
        read_t *r = s->reads;
        s->reads = r->next;
        free(r->body);
        free(r);
    }
    free(s->outs);
    cairn_members_clear(&s->members);
    cairn_metrics_destroy(&s->metrics);
    cairn_procmetrics_destroy(&s->procmetrics);
    cairn_config_destroy(&s->cfg);
    return exit_code;
}
