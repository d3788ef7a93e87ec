/* svc_watch.c - the Watch service (/etcdserverpb.Watch/Watch, a bidirectional stream) and the
 * gateway's watch hub.
 *
 * Where events come from. stored publishes, after each applied batch, what every revision
 * changed (CAIRN_IPC_EVENTS on <run>/events.ipc, cairn_ipc.h); one SUB socket per gateway feeds
 * every watcher it holds. A watcher that starts in the past, or that must not take live events
 * for a while, reads stored's history (CAIRN_IPC_HISTORY) from its next revision on, a bounded
 * chunk at a time, then joins the live feed. Each watcher keeps one number, next_rev: every
 * event below it was sent, none at or above it was. That number is what makes the guarantees:
 *
 *   - no duplicate, no reorder: an event goes to a watcher only if its revision >= next_rev,
 *     and next_rev then moves past it;
 *   - no gap: revisions are dense (each has an event), so a frame that does not start at the
 *     last revision seen + 1 shows that frames were lost (a full queue drops them; a gateway
 *     starting late missed some; a snapshot replaced the store). lost_hi records the highest
 *     revision that did not come whole through the live feed; a live watcher whose next_rev
 *     is at or below it goes back to history, so it gets exactly what it lacks;
 *   - a live watcher goes live again only when its next_rev is past the last revision the
 *     feed delivered (hub.last), so the feed has nothing it still needs;
 *   - all events of one revision in one response: frames carry whole revisions (a revision cut
 *     over frames is treated as lost and read back whole from history), and history answers
 *     end at revision boundaries;
 *   - created comes first: it is queued on the stream before any event of the watcher, and
 *     the stream delivers in order.
 *
 * A slow client never blocks anyone and never costs unbounded memory: when a stream has more
 * than SLOW_HIGH bytes queued, its watchers stop taking live events and fall back to history,
 * which they read only while the stream has less than SLOW_LOW queued. (gw_stream_queued: a
 * gRPC stream's queue, or for a JSON-gateway watch the JSON bytes its HTTP/1.1 connection has
 * not taken; the same marks hold.)
 *
 * Progress: a progress request is answered (watch_id -1) only when every watcher of the
 * stream has been sent every event up to the revision reported (Kubernetes relies on it;
 * etcd 3.4.23 answers at once and can overtake queued events, fixed in 3.4.31); periodic
 * notifications (--experimental-watch-progress-notify-interval) go to idle live watchers that
 * asked for them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "gw_internal.h"
#include "kv.pb-c.h"

#define SLOW_HIGH ((size_t)8 << 20)
#define SLOW_LOW ((size_t)1 << 20)
#define MAX_HIST_INFLIGHT 32
#define HIST_CHUNK_BYTES ((uint64_t)1 << 20)
#define MAX_WATCHERS_PER_STREAM 100000
#define HIST_TIMEOUT_MS 10000

enum { W_CATCHUP = 0, W_LIVE }; /* a zeroed watcher is not live until the hub says so */

typedef struct wstream wstream_t;

typedef struct watcher {
    int64_t id;
    wstream_t *s;
    uint8_t *key, *end; /* end NULL: the key only; end_len 0 (end set): every key >= key */
    size_t key_len, end_len;
    int noput, nodelete, prev_kv, progress_notify, fragment;
    int64_t next_rev; /* 0: not known yet (a watch from "now" before the hub knows now) */
    int state;
    uint64_t hist_req; /* the HISTORY in flight, 0 none */
    int64_t hist_at;
    int queued;        /* in the catch-up queue */
    int sent_since_notify;
    int64_t ev_hi;     /* the highest revision of an event sent to it */
    int dead;               /* canceled from inside a callback: freed at the next tick */
    gw_iwatch_fn *cb;       /* an internal watcher (gw_iwatch_new): events go here, not to a stream */
    gw_iwatch_cancel_fn *on_cancel;
    void *cb_arg;
    struct watcher *prev_all, *next_all; /* hub's list */
    struct watcher *next_q;              /* catch-up queue */
} watcher_t;

struct wstream {
    cairn_call_id_t call;
    cairn_u64map_t *by_id; /* watch_id + 1 -> watcher */
    int64_t next_auto_id;
    int progress_pending; /* progress requests not answered yet (each gets its answer) */
    int64_t ev_hi;        /* the highest revision of an event sent on the stream */
    int has_leader_md;
    struct wstream *prev, *next;
};

struct gw_watch_hub {
    zsock_t *sub;
    int64_t last;    /* the last revision the live feed brought (complete or not) */
    int64_t lost_hi; /* the highest revision that did not come whole through the feed */
    watcher_t *all;
    size_t n_watchers;
    wstream_t *streams;
    wstream_t *internal;        /* the gateway's own watchers (locks, elections): no client stream */
    size_t n_dead;
    watcher_t *q_head, *q_tail; /* watchers waiting to read history */
    cairn_u64map_t *hist;       /* HISTORY req_id -> watcher */
    size_t n_inflight;
    int64_t next_notify;
    int64_t next_progress_retry;
    int64_t behind_rev, behind_at; /* stored said it was at behind_rev, the feed had not */
    int64_t no_leader_since;
    uint64_t frames, gaps, history_reads;
};

/* ------------------------------------------------------------------ responses */

static int64_t hub_now_rev(cairn_gateway_t *g)
{
    gw_watch_hub_t *h = g->watch;
    if (h->last)
        return h->last;
    return g->st_at ? g->st.revision : 0;
}

static void send_resp(cairn_gateway_t *g, wstream_t *s, Etcdserverpb__WatchResponse *r, int64_t rev)
{
    Etcdserverpb__ResponseHeader hdr = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    gw_fill_header(g, &hdr);
    if (rev > 0)
        hdr.revision = rev;
    else if (rev < 0)
        hdr.revision = 0; /* (etcd's cancel of a compacted watcher: its events' revision, none) */
    r->header = &hdr;
    size_t n = etcdserverpb__watch_response__get_packed_size(r);
    uint8_t stackbuf[512], *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!buf) {
        gw_stream_end(g, s->call, CAIRN_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    etcdserverpb__watch_response__pack(r, buf);
    gw_stream_send(g, s->call, buf, n);
    if (buf != stackbuf)
        free(buf);
}

static void send_simple(cairn_gateway_t *g, wstream_t *s, int64_t id, int created, int canceled, int64_t compact,
                        const char *reason, int64_t rev)
{
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.watch_id = id;
    r.created = created;
    r.canceled = canceled;
    r.compact_revision = compact;
    if (reason)
        r.cancel_reason = (char *)reason;
    send_resp(g, s, &r, rev);
}

/* Sends events (already chosen for w) as one response, or, for a watcher that asked for
 * fragments, as several under --max-request-bytes (fragment set on all but the last). */
static void send_events(cairn_gateway_t *g, watcher_t *w, Mvccpb__Event **ev, size_t n, int64_t rev)
{
    if (w->dead)
        return;
    if (w->cb) {
        w->cb(g, w->cb_arg, (const Mvccpb__Event *const *)ev, n, rev);
        return;
    }
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.watch_id = w->id;
    w->sent_since_notify = 1;
    for (size_t i = 0; i < n; i++) {
        int64_t er = ev[i]->kv ? ev[i]->kv->mod_revision : 0;
        if (er > w->ev_hi)
            w->ev_hi = er;
    }
    if (w->ev_hi > w->s->ev_hi)
        w->s->ev_hi = w->ev_hi;
    size_t limit = g->cfg->max_request_bytes ? g->cfg->max_request_bytes : 1572864;
    if (!w->fragment) {
        r.events = ev;
        r.n_events = n;
        send_resp(g, w->s, &r, rev);
        return;
    }
    size_t i = 0;
    while (i < n) {
        size_t j = i, bytes = 0;
        while (j < n) {
            size_t sz = mvccpb__event__get_packed_size(ev[j]) + 8;
            if (j > i && bytes + sz > limit)
                break;
            bytes += sz;
            j++;
        }
        r.events = ev + i;
        r.n_events = j - i;
        r.fragment = j < n;
        send_resp(g, w->s, &r, rev);
        i = j;
    }
}

/* ------------------------------------------------------------------ matching */

static int key_matches(const watcher_t *w, const uint8_t *k, size_t n)
{
    size_t m = n < w->key_len ? n : w->key_len;
    int c = m ? memcmp(k, w->key, m) : 0;
    if (c < 0 || (c == 0 && n < w->key_len))
        return 0;
    if (!w->end)
        return n == w->key_len && c == 0;
    if (w->end_len == 0)
        return 1;
    m = n < w->end_len ? n : w->end_len;
    c = m ? memcmp(k, w->end, m) : 0;
    return c < 0 || (c == 0 && n < w->end_len);
}

static int64_t ev_rev(const Mvccpb__Event *e) { return e->kv ? e->kv->mod_revision : 0; }

static int wants(const watcher_t *w, const Mvccpb__Event *e)
{
    if (!e->kv)
        return 0;
    if (e->type == MVCCPB__EVENT__EVENT_TYPE__PUT ? w->noput : w->nodelete)
        return 0;
    return key_matches(w, e->kv->key.data, e->kv->key.len);
}

/* The events of a frame or history answer, with and without prev_kv, and room to pick. */
typedef struct {
    Etcdserverpb__WatchResponse *msg;
    Mvccpb__Event *bare; /* copies with prev_kv NULL */
    Mvccpb__Event **pick;
} evset_t;

static int evset_open(evset_t *es, const uint8_t *body, size_t len)
{
    memset(es, 0, sizeof *es);
    if (!len)
        return 0;
    es->msg = etcdserverpb__watch_response__unpack(NULL, len, body);
    if (!es->msg)
        return CAIRN_EPROTO;
    size_t n = es->msg->n_events;
    es->bare = malloc((n ? n : 1) * sizeof *es->bare);
    es->pick = malloc((n ? n : 1) * sizeof *es->pick);
    if (!es->bare || !es->pick) {
        free(es->bare);
        free(es->pick);
        etcdserverpb__watch_response__free_unpacked(es->msg, NULL);
        memset(es, 0, sizeof *es);
        return CAIRN_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        es->bare[i] = *es->msg->events[i];
        es->bare[i].prev_kv = NULL;
    }
    return 0;
}

static void evset_close(evset_t *es)
{
    if (es->msg)
        etcdserverpb__watch_response__free_unpacked(es->msg, NULL);
    free(es->bare);
    free(es->pick);
    memset(es, 0, sizeof *es);
}

/* Sends w the events of es with from <= revision <= to that it wants; rev is the response's
 * header revision. */
static void deliver(cairn_gateway_t *g, watcher_t *w, const evset_t *es, int64_t from, int64_t to, int64_t rev)
{
    if (!es->msg)
        return;
    size_t k = 0;
    for (size_t i = 0; i < es->msg->n_events; i++) {
        const Mvccpb__Event *e = es->msg->events[i];
        int64_t r = ev_rev(e);
        if (r < from || r > to || !wants(w, e))
            continue;
        es->pick[k++] = w->prev_kv ? es->msg->events[i] : &es->bare[i];
    }
    if (k)
        send_events(g, w, es->pick, k, rev);
}

/* ------------------------------------------------------------------ watcher lifecycle */

static void q_push(gw_watch_hub_t *h, watcher_t *w)
{
    if (w->queued)
        return;
    w->queued = 1;
    w->next_q = NULL;
    if (h->q_tail)
        h->q_tail->next_q = w;
    else
        h->q_head = w;
    h->q_tail = w;
}

static void to_catchup(gw_watch_hub_t *h, watcher_t *w)
{
    w->state = W_CATCHUP;
    if (!w->hist_req)
        q_push(h, w);
}

static void watcher_free(cairn_gateway_t *g, watcher_t *w)
{
    gw_watch_hub_t *h = g->watch;
    if (w->hist_req) {
        cairn_u64map_take(h->hist, w->hist_req);
        h->n_inflight--;
    }
    if (w->queued) { /* unlink from the queue */
        watcher_t **pp = &h->q_head, *prev = NULL;
        while (*pp && *pp != w) {
            prev = *pp;
            pp = &(*pp)->next_q;
        }
        if (*pp) {
            *pp = w->next_q;
            if (h->q_tail == w)
                h->q_tail = prev;
        }
    }
    if (w->prev_all)
        w->prev_all->next_all = w->next_all;
    else
        h->all = w->next_all;
    if (w->next_all)
        w->next_all->prev_all = w->prev_all;
    cairn_u64map_take(w->s->by_id, (uint64_t)w->id + 1);
    h->n_watchers--;
    free(w->key);
    free(w->end);
    free(w);
}

static void try_progress(cairn_gateway_t *g, wstream_t *s);

/* A live watcher that was sent everything up to hub.last (next_rev == last + 1) or more. */
static void maybe_live(cairn_gateway_t *g, watcher_t *w)
{
    gw_watch_hub_t *h = g->watch;
    if (w->next_rev > h->last && w->next_rev > h->lost_hi) {
        w->state = W_LIVE;
        if (w->s->progress_pending)
            try_progress(g, w->s);
    } else {
        to_catchup(h, w);
    }
}

/* Whether w may be told "you have everything up to rev": it is live and has been considered
 * for every revision up to rev (next_rev > rev), and no event above rev was sent to it (the
 * answer must not go back behind an event). A watcher from the future (next_rev far above rev,
 * nothing sent) qualifies, as in etcd, where such a watcher counts as synced. */
static int caught_up_to(const watcher_t *w, int64_t rev)
{
    return w->state == W_LIVE && !w->dead && w->next_rev > 0 && w->next_rev - 1 >= rev && w->ev_hi <= rev;
}

/* A progress response once every watcher of s has been sent everything up to the hub's
 * revision and nothing above it.
 *
 * The revision is the feed's (hub.last), and a live watcher's next_rev never lags it: the feed
 * moves every live watcher along. Before the feed's first frame it is the status's revision,
 * and that one can run ahead of a watcher made live on an older guess (a member that installed
 * a snapshot publishes no frame for it; test_watch_cluster caught a progress at 8690 before an
 * event at 8195 that way). Such a watcher lacks what lies between: it reads it from history
 * first, and the answer waits. */
static void try_progress(cairn_gateway_t *g, wstream_t *s)
{
    gw_watch_hub_t *h = g->watch;
    int64_t rev = hub_now_rev(g);
    if (rev <= 0 || s->ev_hi > rev)
        return; /* nothing known yet, or events above what the hub has reached were sent */
    size_t pos = 0;
    uint64_t k;
    void *v;
    int ready = 1;
    while (cairn_u64map_next(s->by_id, &pos, &k, &v)) {
        watcher_t *w = v;
        if (caught_up_to(w, rev))
            continue;
        ready = 0;
        if (w->state == W_LIVE && w->next_rev > 0 && w->next_rev - 1 < rev)
            to_catchup(h, w); /* live on a guess that the store has since passed */
        else
            break;
    }
    if (!ready)
        return;
    for (; s->progress_pending > 0; s->progress_pending--)
        send_simple(g, s, -1, 0, 0, 0, NULL, rev);
}

/* ------------------------------------------------------------------ the live feed */

static void on_frame(cairn_gateway_t *g, const cairn_ipc_msg_t *m)
{
    gw_watch_hub_t *h = g->watch;
    h->frames++;
    int64_t s = m->start_rev, r = m->revision;
    if (r <= 0 || s <= 0 || s > r || r < h->last) {
        if (r < h->last && r > 0 && h->last - r > 1000000) {
            /* the store went back in time (a restore from an older snapshot): start over */
            cairn_warn("the store's revision went back; every watcher reads history again", "was=%lld now=%lld",
                       (long long)h->last, (long long)r);
        }
        return;
    }
    if (!h->last) {
        /* the feed's first frame: nothing before it came through the feed, so a watcher that
         * went live on a guess of "now" (the status, a history answer from a store that was
         * catching up) reads everything below s from history rather than skipping it */
        h->last = g->st_at && g->st.revision < s ? g->st.revision : s - 1;
        if (s - 1 > h->lost_hi)
            h->lost_hi = s - 1;
    }
    if (s > h->last + 1 || m->body_len == 0) {
        /* lost frames (s > last + 1), or an announcement of revisions not carried (no body) */
        int64_t lost = m->body_len == 0 ? r : s - 1;
        if (lost > h->lost_hi)
            h->lost_hi = lost;
        h->gaps++;
    }
    int64_t complete_hi = m->more ? r - 1 : r;
    evset_t es;
    if (m->body_len && evset_open(&es, m->body, m->body_len) != 0) {
        cairn_warn("undecodable events frame; its revisions are read from history", "start=%lld rev=%lld",
                   (long long)s, (long long)r);
        memset(&es, 0, sizeof es);
        if (r > h->lost_hi)
            h->lost_hi = r;
    } else if (!m->body_len) {
        memset(&es, 0, sizeof es);
    }
    for (watcher_t *w = h->all; w; w = w->next_all) {
        if (w->state != W_LIVE || w->dead)
            continue;
        if (w->next_rev <= h->lost_hi) {
            to_catchup(h, w);
            continue;
        }
        if (es.msg && complete_hi >= w->next_rev) {
            if (gw_stream_queued(g, w->s->call) > SLOW_HIGH) {
                to_catchup(h, w); /* a slow reader: history later, nothing queued now */
                continue;
            }
            deliver(g, w, &es, w->next_rev, complete_hi, complete_hi);
        }
        if (complete_hi + 1 > w->next_rev)
            w->next_rev = complete_hi + 1;
    }
    if (m->more && r > h->lost_hi) {
        h->lost_hi = r; /* the rest of r comes in the next frame: read r whole from history */
        for (watcher_t *w = h->all; w; w = w->next_all)
            if (w->state == W_LIVE && w->next_rev <= r)
                to_catchup(h, w);
    }
    evset_close(&es);
    if (r > h->last)
        h->last = r;
    for (wstream_t *st = h->streams; st; st = st->next)
        if (st->progress_pending)
            try_progress(g, st);
}

static int on_sub_frame(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame, size_t len)
{
    cairn_gateway_t *g = ctx;
    cairn_ipc_msg_t m;
    int rc = cairn_ipc_decode(frame, len, &m);
    if (rc) {
        cairn_warn("rejected events frame", "err=\"%s\" bytes=%zu", cairn_strerror(rc), len);
        return 0;
    }
    if (m.type == CAIRN_IPC_EVENTS)
        on_frame(g, &m);
    cairn_ipc_msg_release(&m);
    return 0;
}

/* ------------------------------------------------------------------ history */

static void hist_request(cairn_gateway_t *g, watcher_t *w)
{
    gw_watch_hub_t *h = g->watch;
    uint64_t id = ++g->next_id ? g->next_id : ++g->next_id;
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_HISTORY, .req_id = id, .start_rev = w->next_rev, .end_rev = 0,
                         .key = w->key, .key_len = w->key_len, .max_bytes = HIST_CHUNK_BYTES};
    /* the range in etcd's form: no range_end = the key; "\0" = every key >= key */
    static const uint8_t zero = 0;
    if (w->end) {
        m.range_end = w->end_len ? w->end : &zero;
        m.range_end_len = w->end_len ? w->end_len : 1;
    }
    if (cairn_u64map_put(h->hist, id, w) != 0)
        return;
    if (gw_send_ipc(g, g->stored, &m) != 0) {
        cairn_u64map_take(h->hist, id);
        return;
    }
    w->hist_req = id;
    w->hist_at = cairn_now_ms();
    h->n_inflight++;
    h->history_reads++;
}

/* Starts history reads for queued watchers, within the in-flight budget, skipping (and
 * keeping queued) those whose stream is still backed up. */
static void pump(cairn_gateway_t *g)
{
    gw_watch_hub_t *h = g->watch;
    size_t n = 0, limit = h->n_watchers + 1;
    while (h->q_head && h->n_inflight < MAX_HIST_INFLIGHT && n++ < limit) {
        watcher_t *w = h->q_head;
        h->q_head = w->next_q;
        if (!h->q_head)
            h->q_tail = NULL;
        w->queued = 0;
        if (w->state != W_CATCHUP || w->hist_req || w->dead)
            continue;
        if (gw_stream_queued(g, w->s->call) > SLOW_LOW) {
            q_push(h, w); /* later: the client reads slowly */
            continue;
        }
        hist_request(g, w);
    }
}

void gw_watch_on_history(cairn_gateway_t *g, const cairn_ipc_msg_t *m)
{
    gw_watch_hub_t *h = g->watch;
    if (!h)
        return;
    watcher_t *w = cairn_u64map_take(h->hist, m->req_id);
    if (!w)
        return; /* its watcher is gone */
    w->hist_req = 0;
    h->n_inflight--;
    if (w->dead)
        return;
    if (m->code == 11 && w->cb) { /* an internal watcher: its owner decides what compaction means */
        w->dead = 1;
        h->n_dead++;
        w->cb = NULL;
        if (w->on_cancel)
            w->on_cancel(g, w->cb_arg, m->compact_rev);
        return;
    }
    if (m->code == 11) { /* compacted: created was sent; now the cancel etcd sends */
        wstream_t *s = w->s;
        int64_t id = w->id, compact = m->compact_rev;
        watcher_free(g, w);
        send_simple(g, s, id, 0, 1, compact, NULL, -1); /* etcd 3.4: header.revision 0 */
        if (s->progress_pending)
            try_progress(g, s);
        return;
    }
    if (m->code) {
        to_catchup(h, w); /* stored was busy or failed: try again */
        return;
    }
    if (w->next_rev == 0) { /* a watch from "now": now is known */
        w->next_rev = m->revision + 1;
    } else if (m->revision >= w->next_rev) {
        evset_t es;
        if (evset_open(&es, m->body, m->body_len) != 0) {
            to_catchup(h, w);
            return;
        }
        deliver(g, w, &es, w->next_rev, m->revision, m->revision);
        evset_close(&es);
        w->next_rev = m->revision + 1;
    }
    maybe_live(g, w);
}

/* ------------------------------------------------------------------ the stream */

static wstream_t *stream_of(cairn_gateway_t *g, gw_call_t *c, const cairn_h2_meta_t *meta)
{
    if (c->state)
        return c->state;
    wstream_t *s = calloc(1, sizeof *s);
    if (!s || !(s->by_id = cairn_u64map_new())) {
        free(s);
        return NULL;
    }
    s->call = c->id;
    s->has_leader_md = meta && meta->has_leader_md;
    gw_watch_hub_t *h = g->watch;
    s->next = h->streams;
    if (h->streams)
        h->streams->prev = s;
    h->streams = s;
    c->state = s;
    return s;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

static void do_create(cairn_gateway_t *g, wstream_t *s, const Etcdserverpb__WatchCreateRequest *cr)
{
    gw_watch_hub_t *h = g->watch;
    int64_t now_rev = hub_now_rev(g);
    /* etcd: an empty key is "\0"; range_end "\0" is every key >= key */
    const uint8_t *key = cr->key.len ? cr->key.data : (const uint8_t *)"";
    size_t key_len = cr->key.len ? cr->key.len : 1;
    int all_above = cr->range_end.len == 1 && cr->range_end.data[0] == 0;
    if (cr->range_end.len && !all_above) {
        size_t m = key_len < cr->range_end.len ? key_len : cr->range_end.len;
        int c = memcmp(key, cr->range_end.data, m);
        if (c > 0 || (c == 0 && key_len >= cr->range_end.len)) {
            send_simple(g, s, -1, 1, 1, 0, "mvcc: watcher range is empty", now_rev);
            return;
        }
    }
    if (h->n_watchers >= g->cfg->max_watchers || cairn_u64map_size(s->by_id) >= MAX_WATCHERS_PER_STREAM) {
        send_simple(g, s, -1, 1, 1, 0,
                    h->n_watchers >= g->cfg->max_watchers ? "cairn: too many watchers on this gateway (--max-watchers)"
                                                          : "cairn: too many watchers on this stream",
                    now_rev);
        return;
    }
    int64_t id = cr->watch_id;
    if (id < 0) {
        send_simple(g, s, -1, 1, 1, 0, "mvcc: duplicate watch ID provided on the WatchStream", now_rev);
        return;
    }
    if (id == 0) { /* auto: from 0, skipping ids in use (etcd's watchStream) */
        while (cairn_u64map_get(s->by_id, (uint64_t)s->next_auto_id + 1))
            s->next_auto_id++;
        id = s->next_auto_id++;
    } else if (cairn_u64map_get(s->by_id, (uint64_t)id + 1)) {
        send_simple(g, s, -1, 1, 1, 0, "mvcc: duplicate watch ID provided on the WatchStream", now_rev);
        return;
    }
    watcher_t *w = calloc(1, sizeof *w);
    if (!w || !(w->key = dup_bytes(key, key_len)) ||
        (cr->range_end.len && !all_above && !(w->end = dup_bytes(cr->range_end.data, cr->range_end.len))) ||
        (all_above && !(w->end = dup_bytes((const uint8_t *)"", 0))) ||
        cairn_u64map_put(s->by_id, (uint64_t)id + 1, w) != 0) {
        if (w) {
            free(w->key);
            free(w->end);
        }
        free(w);
        send_simple(g, s, -1, 1, 1, 0, "cairn: out of memory", now_rev);
        return;
    }
    w->id = id;
    w->s = s;
    w->key_len = key_len;
    w->end_len = all_above ? 0 : cr->range_end.len;
    for (size_t i = 0; i < cr->n_filters; i++) {
        if (cr->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT)
            w->noput = 1;
        else if (cr->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
            w->nodelete = 1;
    }
    w->prev_kv = cr->prev_kv;
    w->progress_notify = cr->progress_notify;
    w->fragment = cr->fragment;
    w->next_all = h->all;
    if (h->all)
        h->all->prev_all = w;
    h->all = w;
    h->n_watchers++;
    send_simple(g, s, id, 1, 0, 0, NULL, now_rev);
    if (cr->start_revision > 0 && (now_rev == 0 || cr->start_revision <= now_rev)) {
        w->next_rev = cr->start_revision; /* from the past: history first */
        to_catchup(h, w);
    } else if (cr->start_revision > 0) {
        w->next_rev = cr->start_revision; /* the future: live, events from there on */
        maybe_live(g, w);
    } else if (now_rev) {
        w->next_rev = now_rev + 1;
        maybe_live(g, w);
    } else {
        w->next_rev = 0; /* "now" is not known yet: ask stored */
        to_catchup(h, w);
    }
    pump(g);
}

static void watch_handler(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len,
                          const cairn_h2_meta_t *meta)
{
    wstream_t *s = stream_of(g, c, meta);
    if (!s) {
        gw_error(g, c->id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    /* hasleader: the stream ends once the member has had no leader for a while (gw_watch_tick);
     * not at once on the status, which is up to a second old and says "no leader" for a node
     * that just elected one */
    if (s->has_leader_md && g->watch->no_leader_since &&
        cairn_now_ms() - g->watch->no_leader_since > 3 * g->cfg->election_ms) {
        gw_error(g, c->id, CAIRN_ETCD_NO_LEADER);
        return;
    }
    Etcdserverpb__WatchRequest *rq = etcdserverpb__watch_request__unpack(NULL, len, msg);
    if (!rq) {
        gw_bad_request(g, c->id);
        return;
    }
    switch (rq->request_union_case) {
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST:
        do_create(g, s, rq->create_request);
        break;
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST: {
        int64_t id = rq->cancel_request->watch_id;
        watcher_t *w = id >= 0 ? cairn_u64map_get(s->by_id, (uint64_t)id + 1) : NULL;
        if (w) { /* unknown ids get no answer, as etcd's */
            watcher_free(g, w);
            send_simple(g, s, id, 0, 1, 0, NULL, hub_now_rev(g));
            if (s->progress_pending)
                try_progress(g, s);
        }
        break;
    }
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST:
        if (s->progress_pending < 1000) /* a flood costs one counter, not a queue */
            s->progress_pending++;
        try_progress(g, s);
        break;
    default:
        break; /* an empty request: etcd ignores it */
    }
    etcdserverpb__watch_request__free_unpacked(rq, NULL);
}

static void stream_free(cairn_gateway_t *g, wstream_t *s)
{
    gw_watch_hub_t *h = g->watch;
    size_t pos = 0;
    uint64_t k;
    void *v;
    for (;;) { /* take one at a time: freeing changes the map */
        pos = 0;
        if (!cairn_u64map_next(s->by_id, &pos, &k, &v))
            break;
        watcher_free(g, v);
    }
    cairn_u64map_destroy(&s->by_id);
    if (s->prev)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s);
}

static void watch_close(cairn_gateway_t *g, gw_call_t *c)
{
    if (c->state && g->watch)
        stream_free(g, c->state);
    c->state = NULL;
}

/* ------------------------------------------------------------------ the hub */

int gw_watch_new(cairn_gateway_t *g)
{
    gw_watch_hub_t *h = calloc(1, sizeof *h);
    if (!h || !(h->hist = cairn_u64map_new()) || !(h->internal = calloc(1, sizeof *h->internal)) ||
        !(h->internal->by_id = cairn_u64map_new())) {
        if (h) {
            cairn_u64map_destroy(&h->hist);
            free(h->internal);
        }
        free(h);
        return CAIRN_ENOMEM;
    }
    char ep[512];
    if (cairn_config_ipc_endpoint(g->cfg, "events", ep, sizeof ep) < 0) {
        cairn_u64map_destroy(&h->hist);
        free(h);
        return CAIRN_ECONFIG;
    }
    h->sub = zsock_new(ZMQ_SUB);
    if (!h->sub) {
        cairn_u64map_destroy(&h->hist);
        free(h);
        return CAIRN_ENOMEM;
    }
    zsock_set_rcvhwm(h->sub, 1024);
    zsock_set_linger(h->sub, 0);
    zsock_set_maxmsgsize(h->sub, (int)CAIRN_IPC_MAX_FRAME);
    zsock_set_subscribe(h->sub, "");
    if (zsock_connect(h->sub, "%s", ep) < 0) {
        zsock_destroy(&h->sub);
        cairn_u64map_destroy(&h->hist);
        free(h);
        return CAIRN_EIO;
    }
    h->next_notify = cairn_now_ms() + g->cfg->watch_progress_notify_ms;
    g->watch = h;
    return 0;
}

void gw_watch_destroy(cairn_gateway_t *g)
{
    gw_watch_hub_t *h = g->watch;
    if (!h)
        return;
    while (h->streams)
        stream_free(g, h->streams);
    h->internal->next = h->internal->prev = NULL;
    h->streams = h->internal; /* stream_free unlinks it from the (now empty) list */
    stream_free(g, h->internal);
    cairn_u64map_destroy(&h->hist);
    zsock_destroy(&h->sub);
    free(h);
    g->watch = NULL;
}

void *gw_watch_socket(cairn_gateway_t *g) { return g->watch ? zsock_resolve(g->watch->sub) : NULL; }

void gw_watch_drain(cairn_gateway_t *g)
{
    if (g->watch)
        cairn_zmq_drain(g->watch->sub, 0, 10000, on_sub_frame, g);
}

/* Each loop pass: history reads to start; every 100 ms or so the slower duties. */
void gw_watch_tick(cairn_gateway_t *g, int64_t now)
{
    gw_watch_hub_t *h = g->watch;
    if (!h)
        return;
    if (h->n_dead) { /* internal watchers canceled from a callback */
        watcher_t *w = h->all, *next;
        for (; w; w = next) {
            next = w->next_all;
            if (w->dead)
                watcher_free(g, w);
        }
        h->n_dead = 0;
    }
    /* progress requests still waiting: the status may have moved, or a watcher caught up */
    if (now >= h->next_progress_retry) {
        h->next_progress_retry = now + 100;
        for (wstream_t *s = h->streams; s; s = s->next)
            if (s->progress_pending)
                try_progress(g, s);
    }
    pump(g);
    /* The feed is silent but stored is further on (its status): frames were lost after the
     * last one that came. Give in-flight frames a moment, then read the rest from history. */
    if (g->st_at && g->st.revision > h->last && h->last) {
        if (h->behind_rev < g->st.revision && h->behind_rev <= h->last) {
            h->behind_rev = g->st.revision;
            h->behind_at = now;
        } else if (h->behind_rev > h->last && now - h->behind_at > 1500) {
            cairn_info("events feed behind the store; watchers read history", "feed=%lld store=%lld",
                       (long long)h->last, (long long)h->behind_rev);
            h->lost_hi = h->behind_rev > h->lost_hi ? h->behind_rev : h->lost_hi;
            h->last = h->behind_rev;
            for (watcher_t *w = h->all; w; w = w->next_all)
                if (w->state == W_LIVE && w->next_rev <= h->lost_hi)
                    to_catchup(h, w);
        }
    }
    /* History reads that never came back (stored restarted): ask again */
    if (h->n_inflight) {
        size_t pos = 0;
        uint64_t k;
        void *v;
        uint64_t stale[64];
        size_t ns = 0;
        while (ns < 64 && cairn_u64map_next(h->hist, &pos, &k, &v))
            if (now - ((watcher_t *)v)->hist_at > HIST_TIMEOUT_MS)
                stale[ns++] = k;
        for (size_t i = 0; i < ns; i++) {
            watcher_t *w = cairn_u64map_take(h->hist, stale[i]);
            if (w) {
                w->hist_req = 0;
                h->n_inflight--;
                to_catchup(h, w);
            }
        }
    }
    /* hasleader streams end when the member has had no leader for a while (etcd 3.4's
     * monitorLeader: 3 election timeouts) */
    if (g->st_at && g->st.leader == 0) {
        if (!h->no_leader_since)
            h->no_leader_since = now;
        else if (now - h->no_leader_since > 3 * g->cfg->election_ms)
            for (wstream_t *s = h->streams; s; s = s->next)
                if (s->has_leader_md)
                    gw_stream_end(g, s->call, cairn_etcd_err_code(CAIRN_ETCD_NO_LEADER),
                                           cairn_etcd_err_text(CAIRN_ETCD_NO_LEADER));
    } else {
        h->no_leader_since = 0;
    }
    if (g->cfg->watch_progress_notify_ms > 0 && now >= h->next_notify) {
        int64_t rev = hub_now_rev(g);
        for (watcher_t *w = h->all; w; w = w->next_all) {
            if (!w->progress_notify || w->cb || !caught_up_to(w, rev))
                continue;
            if (!w->sent_since_notify)
                send_simple(g, w->s, w->id, 0, 0, 0, NULL, rev);
            w->sent_since_notify = 0;
        }
        h->next_notify = now + g->cfg->watch_progress_notify_ms;
    }
}

/* ------------------------------------------------------------------ internal watchers */

gw_iwatch_t *gw_iwatch_new(cairn_gateway_t *g, const uint8_t *key, size_t key_len, const uint8_t *end, size_t end_len,
                           int64_t start_rev, gw_iwatch_fn *fn, gw_iwatch_cancel_fn *on_cancel, void *arg)
{
    gw_watch_hub_t *h = g->watch;
    wstream_t *s = h ? h->internal : NULL;
    if (!s || !key_len)
        return NULL;
    watcher_t *w = calloc(1, sizeof *w);
    if (!w || !(w->key = dup_bytes(key, key_len)) || (end && !(w->end = dup_bytes(end, end_len)))) {
        if (w)
            free(w->key);
        free(w);
        return NULL;
    }
    while (cairn_u64map_get(s->by_id, (uint64_t)s->next_auto_id + 1))
        s->next_auto_id++;
    w->id = s->next_auto_id++;
    if (cairn_u64map_put(s->by_id, (uint64_t)w->id + 1, w) != 0) {
        free(w->key);
        free(w->end);
        free(w);
        return NULL;
    }
    w->s = s;
    w->key_len = key_len;
    w->end_len = end ? end_len : 0;
    w->cb = fn;
    w->on_cancel = on_cancel;
    w->cb_arg = arg;
    w->next_all = h->all;
    if (h->all)
        h->all->prev_all = w;
    h->all = w;
    h->n_watchers++;
    int64_t now_rev = hub_now_rev(g);
    if (start_rev > 0 && (now_rev == 0 || start_rev <= now_rev)) {
        w->next_rev = start_rev;
        to_catchup(h, w);
    } else if (start_rev > 0) {
        w->next_rev = start_rev;
        maybe_live(g, w);
    } else if (now_rev) {
        w->next_rev = now_rev + 1;
        maybe_live(g, w);
    } else {
        w->next_rev = 0;
        to_catchup(h, w);
    }
    pump(g);
    return (gw_iwatch_t *)w;
}

void gw_iwatch_cancel(cairn_gateway_t *g, gw_iwatch_t **wp)
{
    if (!wp || !*wp)
        return;
    watcher_t *w = (watcher_t *)*wp;
    *wp = NULL;
    if (!w->dead && g->watch) {
        w->dead = 1;
        w->cb = NULL;
        w->on_cancel = NULL;
        g->watch->n_dead++;
    }
}

size_t gw_watch_count(const cairn_gateway_t *g) { return g->watch ? g->watch->n_watchers : 0; }

int64_t gw_watch_revision(const cairn_gateway_t *g) { return g->watch ? g->watch->last : 0; }

/* clang-format off */
static const gw_method_t rows[] = {
    /* path                        kind       handler        arg perm          json route   half_close        close */
    /* no half_close: when the client stops sending, etcd keeps the stream and its watchers */
    {"/etcdserverpb.Watch/Watch",  GW_STREAM, watch_handler, 0,  GW_PERM_READ, "/v3/watch", NULL,             watch_close, GW_JSON_BIDI},
};
/* clang-format on */

const gw_service_t gw_svc_watch = GW_SERVICE("watch", rows);
