/* compactor.c - --auto-compaction-mode / --auto-compaction-retention, as etcd 3.4's
 * v3compactor does it. Only the member whose raftd leads compacts (etcd pauses the compactor
 * on followers); a compaction is a proposal through the log like a client's Compact, so every
 * member compacts at the same revision.
 *
 * periodic (retention P): every P/10 (at most 6 min: P is capped at 1 h for the interval) the
 * current revision is recorded, keeping the last P/(P/10)+1 samples, so the oldest is the
 * revision P ago. Once P has passed since the start (later: since the last success, every
 * min(P, 1 h)), the store is compacted at that oldest sample. Samples are taken whether or not
 * this member leads, so a new leader can compact as soon as its window is full.
 * revision (retention R): every 5 minutes, compact at current - R if that is positive and not
 * the revision compacted last.
 * A target at or below the store's compact revision is skipped (etcd would propose it and get
 * ErrCompacted, which it counts as success).
 */
#include <stdlib.h>
#include <string.h>

#include "cairn_log.h"
#include "stored.h"

#define REV_INTERVAL_MS (5 * 60 * 1000)
#define MAX_SAMPLES 64

static struct {
    int64_t next_sample, last_success, base_interval, started;
    int64_t revs[MAX_SAMPLES];
    size_t n;
    int64_t prev_rev; /* revision mode: the last target */
} cc;

static int leads(const stored_t *s) { return s->leader && s->leader == cairn_config_member_id(s->cfg); }

static void compact_at(stored_t *s, int64_t rev, const char *mode)
{
    if (rev <= 0 || rev <= cairn_mvcc_compact_revision(s->mvcc) || rev > cairn_mvcc_revision(s->mvcc))
        return;
    Etcdserverpb__CompactionRequest q = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    q.revision = rev;
    uint8_t b[24];
    size_t n = etcdserverpb__compaction_request__pack(&q, b);
    if (stored_propose(s, CAIRN_REQ_COMPACT, b, n) == 0)
        cairn_info("starting auto compaction", "mode=%s revision=%lld", mode, (long long)rev);
}

void stored_compactor_tick(stored_t *s, int64_t now)
{
    const cairn_config_t *cfg = s->cfg;
    if (s->replaying)
        return;
    if (cfg->auto_compaction_mode == CAIRN_COMPACTION_REVISION) {
        if (cfg->compaction_retention_revs <= 0)
            return;
        if (!cc.started) {
            cc.started = 1;
            cc.next_sample = now + REV_INTERVAL_MS;
        }
        if (now < cc.next_sample)
            return;
        cc.next_sample = now + REV_INTERVAL_MS;
        int64_t rev = cairn_mvcc_revision(s->mvcc) - cfg->compaction_retention_revs;
        if (!leads(s) || rev <= 0 || rev == cc.prev_rev)
            return;
        compact_at(s, rev, "revision");
        cc.prev_rev = rev;
        return;
    }
    int64_t period = cfg->compaction_retention_ms;
    if (period <= 0)
        return;
    int64_t itv = period > 3600000 ? 3600000 : period, retry = itv / 10 > 0 ? itv / 10 : 1;
    size_t keep = (size_t)(period / retry) + 1;
    if (keep > MAX_SAMPLES)
        keep = MAX_SAMPLES; /* P > 1 h: samples every 6 min; beyond 6.4 h the window is the last 64 */
    if (!cc.started) {
        cc.started = 1;
        cc.last_success = now;
        cc.base_interval = period;
        cc.next_sample = now;
    }
    if (now < cc.next_sample)
        return;
    cc.next_sample = now + retry;
    if (cc.n == keep)
        memmove(cc.revs, cc.revs + 1, (--cc.n) * sizeof cc.revs[0]);
    cc.revs[cc.n++] = cairn_mvcc_revision(s->mvcc);
    if (!leads(s) || now - cc.last_success < cc.base_interval)
        return;
    cc.base_interval = itv; /* after the first window: every min(P, 1 h) */
    compact_at(s, cc.revs[0], "periodic");
    cc.last_success = now;
}
