/* events.c - publishing applied changes and reading them back (see events.h; the frame and
 * message formats are in cairn_ipc.h: CAIRN_IPC_EVENTS, HISTORY, HISTORY_RESP).
 *
 * Body encoding, byte by byte: the concatenation, in revision then sub-revision order, of
 *     0x5a  varint(n)  <n bytes: a packed mvccpb.Event>
 * which is exactly a packed etcdserverpb.WatchResponse whose only field is events (field 11,
 * wire type 2), so the gateway unpacks it with protobuf-c and nothing here builds a message
 * tree. Frames are cut between events; a cut inside one revision sets more = 1.
 */
#include "events.h"

#include <czmq.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_bytes.h"
#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "kv.pb-c.h"

/* Frames a slow gateway may have queued before newer ones are dropped (it then sees a gap
 * and reads history): with frames of at most CAIRN_EVENTS_FRAME_BYTES this bounds the
 * memory one subscriber can hold here. */
#define EVENTS_SNDHWM 256

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf_t;

static int buf_need(buf_t *b, size_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->n + more)
        nc *= 2;
    uint8_t *np = realloc(b->p, nc);
    if (!np)
        return CAIRN_ENOMEM;
    b->p = np;
    b->cap = nc;
    return 0;
}

/* A frame waiting for the batch to be written. */
typedef struct {
    int64_t start_rev, rev;
    int more;
    size_t off, len; /* its bytes in ev->data */
} frame_t;

struct cairn_events_t {
    zsock_t *pub;
    buf_t data;         /* the bytes of every frame of the open batch */
    frame_t *frames;    /* finished frames of the open batch, in order */
    size_t n_frames, cap_frames;
    frame_t cur;        /* the frame being filled (len 0: empty) */
    int64_t skip_from, skip_to; /* revisions not buffered (the batch outgrew its budget) */
    int oom;
    uint64_t published, dropped;
};

cairn_events_t *cairn_events_new(const char *endpoint, int *err)
{
    cairn_events_t *ev = calloc(1, sizeof *ev);
    if (!ev) {
        *err = CAIRN_ENOMEM;
        return NULL;
    }
    if (strncmp(endpoint, "ipc://", 6) == 0)
        unlink(endpoint + 6); /* a socket file left by a crash */
    ev->pub = zsock_new(ZMQ_PUB);
    if (!ev->pub) {
        free(ev);
        *err = CAIRN_ENOMEM;
        return NULL;
    }
    zsock_set_sndhwm(ev->pub, EVENTS_SNDHWM);
    zsock_set_linger(ev->pub, 0);
    if (zsock_bind(ev->pub, "%s", endpoint) < 0) {
        cairn_error("cannot bind the events socket", "endpoint=%s err=\"%s\"", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&ev->pub);
        free(ev);
        *err = CAIRN_EIO;
        return NULL;
    }
    return ev;
}

void cairn_events_destroy(cairn_events_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_events_t *ev = *self_p;
    zsock_destroy(&ev->pub);
    free(ev->data.p);
    free(ev->frames);
    free(ev);
    *self_p = NULL;
}

uint64_t cairn_events_published(const cairn_events_t *ev) { return ev ? ev->published : 0; }
uint64_t cairn_events_dropped(const cairn_events_t *ev) { return ev ? ev->dropped : 0; }

static void fill_kv(Mvccpb__KeyValue *o, const cairn_kv_t *kv)
{
    o->key.data = (uint8_t *)kv->key;
    o->key.len = kv->key_len;
    o->value.data = (uint8_t *)kv->value;
    o->value.len = kv->value_len;
    o->create_revision = kv->create_revision;
    o->mod_revision = kv->mod_revision;
    o->version = kv->version;
    o->lease = kv->lease;
}

/* Appends one event, as field 11 of a WatchResponse, to b. */
static int append_event(buf_t *b, int type, const cairn_kv_t *kv, const cairn_kv_t *prev)
{
    Mvccpb__KeyValue k = MVCCPB__KEY_VALUE__INIT, pk = MVCCPB__KEY_VALUE__INIT;
    Mvccpb__Event e = MVCCPB__EVENT__INIT;
    e.type = type ? MVCCPB__EVENT__EVENT_TYPE__DELETE : MVCCPB__EVENT__EVENT_TYPE__PUT;
    if (type) { /* etcd's DELETE event: the key and the revision of the delete only */
        k.key.data = (uint8_t *)kv->key;
        k.key.len = kv->key_len;
        k.mod_revision = kv->mod_revision;
    } else {
        fill_kv(&k, kv);
    }
    e.kv = &k;
    if (prev) {
        fill_kv(&pk, prev);
        e.prev_kv = &pk;
    }
    size_t n = mvccpb__event__get_packed_size(&e);
    int rc = buf_need(b, n + 11);
    if (rc)
        return rc;
    b->p[b->n++] = 0x5a;
    b->n += cairn_put_varint(b->p + b->n, n);
    b->n += mvccpb__event__pack(&e, b->p + b->n);
    return 0;
}

static int push_frame(cairn_events_t *ev, int more)
{
    if (ev->cur.len == 0)
        return 0;
    if (ev->n_frames == ev->cap_frames) {
        size_t nc = ev->cap_frames ? ev->cap_frames * 2 : 16;
        frame_t *nf = realloc(ev->frames, nc * sizeof *nf);
        if (!nf)
            return CAIRN_ENOMEM;
        ev->frames = nf;
        ev->cap_frames = nc;
    }
    ev->cur.more = more;
    ev->frames[ev->n_frames++] = ev->cur;
    ev->cur = (frame_t){.off = ev->data.n};
    return 0;
}

/* Stops buffering from revision rev on: the rest of the batch is announced, not carried. */
static void start_skip(cairn_events_t *ev, int64_t rev)
{
    int split = ev->cur.len && ev->cur.rev == rev;
    if (push_frame(ev, split) != 0)
        ev->oom = 1;
    ev->skip_from = rev;
    ev->skip_to = rev;
}

void cairn_events_observe(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev_kv, int64_t sub)
{
    cairn_events_t *ev = arg;
    int64_t rev = kv->mod_revision;
    if (ev->skip_from) {
        ev->skip_to = rev;
        return;
    }
    size_t before = ev->data.n;
    if (ev->oom || append_event(&ev->data, type, kv, prev_kv) != 0 || ev->data.n > CAIRN_EVENTS_BATCH_BYTES) {
        ev->data.n = before;
        start_skip(ev, rev);
        return;
    }
    size_t n = ev->data.n - before;
    if (ev->cur.len && ev->cur.len + n > CAIRN_EVENTS_FRAME_BYTES) {
        /* cut here: between two revisions when the frame ends one, else inside this one */
        int more = ev->cur.rev == rev;
        size_t keep_off = before; /* this event starts the next frame */
        ev->cur.len = keep_off - ev->cur.off;
        if (push_frame(ev, more) != 0) {
            ev->data.n = before;
            start_skip(ev, rev);
            return;
        }
        ev->cur.off = keep_off;
    }
    if (ev->cur.len == 0) {
        ev->cur.off = before;
        ev->cur.start_rev = rev;
    }
    ev->cur.len = ev->data.n - ev->cur.off;
    ev->cur.rev = rev;
}

static int send_frame(cairn_events_t *ev, int64_t start, int64_t rev, int more, const uint8_t *body, size_t len)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_EVENTS, .start_rev = start, .revision = rev, .more = (uint64_t)more,
                         .body = body, .body_len = len};
    /* a PUB socket never blocks: past its high-water mark a subscriber just misses frames */
    int rc = cairn_zmq_send(ev->pub, NULL, 0, &m);
    if (rc)
        ev->dropped++;
    else
        ev->published++;
    return rc;
}

int cairn_events_publish(cairn_events_t *ev)
{
    if (!ev)
        return 0;
    int rc = 0;
    if (push_frame(ev, 0) != 0)
        ev->oom = 1;
    for (size_t i = 0; i < ev->n_frames; i++) {
        const frame_t *f = &ev->frames[i];
        int r = send_frame(ev, f->start_rev, f->rev, f->more, ev->data.p + f->off, f->len);
        if (r && !rc)
            rc = r;
    }
    if (ev->skip_from) {
        /* no body: "these revisions happened, read them from history" */
        int r = send_frame(ev, ev->skip_from, ev->skip_to, 0, NULL, 0);
        if (r && !rc)
            rc = r;
    }
    cairn_events_discard(ev);
    return rc;
}

int cairn_events_announce(cairn_events_t *ev, int64_t from, int64_t to)
{
    if (!ev || from <= 0 || to < from)
        return 0;
    return send_frame(ev, from, to, 0, NULL, 0);
}

void cairn_events_discard(cairn_events_t *ev)
{
    if (!ev)
        return;
    ev->data.n = 0;
    ev->n_frames = 0;
    ev->cur = (frame_t){0};
    ev->skip_from = ev->skip_to = 0;
    ev->oom = 0;
    /* a batch that once needed a lot gives it back */
    if (ev->data.cap > 4 * CAIRN_EVENTS_FRAME_BYTES) {
        free(ev->data.p);
        ev->data = (buf_t){0};
    }
}

/* ------------------------------------------------------------------ history */

typedef struct {
    const uint8_t *key, *end; /* end NULL: the key only; end_len 0 (with end set): every key >= key */
    size_t key_len, end_len;
    int all;
    buf_t out;
    size_t max_bytes;
    long scanned;
    int64_t cur_rev;  /* the revision being read */
    int64_t covered;  /* every event up to it is in out */
    int oom;
} hist_t;

static int in_range(const hist_t *h, const uint8_t *k, size_t n)
{
    if (h->all)
        return 1;
    size_t m = n < h->key_len ? n : h->key_len;
    int c = memcmp(k, h->key, m);
    if (c < 0 || (c == 0 && n < h->key_len))
        return 0; /* below key */
    if (!h->end)
        return n == h->key_len && c == 0;
    if (h->end_len == 0)
        return 1;
    m = n < h->end_len ? n : h->end_len;
    c = memcmp(k, h->end, m);
    return c < 0 || (c == 0 && n < h->end_len);
}

static int hist_fn(void *arg, int type, const cairn_kv_t *kv, const cairn_kv_t *prev, int64_t sub)
{
    hist_t *h = arg;
    if (kv->mod_revision != h->cur_rev) {
        /* a revision boundary: everything before it is complete */
        if (h->cur_rev)
            h->covered = h->cur_rev;
        if (h->out.n >= h->max_bytes || h->scanned >= CAIRN_EVENTS_SCAN_BUDGET)
            return 1;
        h->cur_rev = kv->mod_revision;
    }
    h->scanned++;
    if (!in_range(h, kv->key, kv->key_len))
        return 0;
    if (append_event(&h->out, type, kv, prev) != 0) {
        h->oom = 1;
        return 1;
    }
    return 0;
}

void cairn_events_history(cairn_mvcc_t *m, const cairn_ipc_msg_t *req, cairn_ipc_msg_t *resp, uint8_t **owned)
{
    *owned = NULL;
    int64_t cur = cairn_mvcc_revision(m), compact = cairn_mvcc_compact_revision(m);
    *resp = (cairn_ipc_msg_t){.type = CAIRN_IPC_HISTORY_RESP, .req_id = req->req_id, .revision = cur,
                              .compact_rev = compact};
    if (req->start_rev <= 0 || req->start_rev > cur)
        return; /* a probe of the current revision, or nothing there yet */
    if (compact > 0 && req->start_rev < compact) {
        resp->code = 11; /* OutOfRange, as etcd's ErrCompacted */
        cairn_ipc_set_message(resp, "etcdserver: mvcc: required revision has been compacted");
        return;
    }
    int64_t end = req->end_rev > 0 && req->end_rev < cur ? req->end_rev : cur;
    hist_t h = {.key = req->key, .key_len = req->key_len, .end = req->range_end, .end_len = req->range_end_len,
                .max_bytes = req->max_bytes && req->max_bytes < CAIRN_EVENTS_HISTORY_MAX_BYTES
                                 ? req->max_bytes
                                 : CAIRN_EVENTS_HISTORY_MAX_BYTES};
    /* etcd's rules (ETCD_API.md §2): no range_end = the key; "\0" = every key >= key; an
     * empty key with "\0" = every key. An empty key alone is every key here (a gateway's own
     * use, e.g. resyncing a whole stream). */
    if (req->range_end_len == 1 && req->range_end[0] == 0) {
        h.end = (const uint8_t *)"";
        h.end_len = 0;
    } else if (req->range_end_len == 0) {
        h.end = NULL;
    }
    h.all = req->key_len == 0 && (!h.end || h.end_len == 0);
    int rc = cairn_mvcc_changes(m, req->start_rev, end, hist_fn, &h);
    if (rc == CAIRN_ECOMPACTED) {
        free(h.out.p);
        resp->code = 11;
        cairn_ipc_set_message(resp, "etcdserver: mvcc: required revision has been compacted");
        return;
    }
    if (rc < 0 || h.oom) {
        free(h.out.p);
        resp->code = 14; /* Unavailable: the gateway asks again */
        cairn_ipc_set_message(resp, rc < 0 ? cairn_strerror(rc) : "out of memory");
        return;
    }
    /* rc == 1: stopped at a boundary (covered is set); 0: read everything up to end */
    resp->revision = rc == 1 ? h.covered : end;
    resp->body = h.out.p;
    resp->body_len = h.out.n;
    *owned = h.out.p;
}
