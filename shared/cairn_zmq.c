/* cairn_zmq.c - see cairn_zmq.h. */
#include "cairn_zmq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cairn_err.h"

static void tune(zsock_t *s)
{
    zsock_set_sndhwm(s, CAIRN_ZMQ_HWM);
    zsock_set_rcvhwm(s, CAIRN_ZMQ_HWM);
    zsock_set_linger(s, 0);
}

zsock_t *cairn_zmq_router_bind(const char *endpoint, int *err)
{
    /* A crashed process leaves its socket file behind; binding over it would fail, and no
     * live process can be using it because only this process binds this endpoint. */
    if (strncmp(endpoint, "ipc://", 6) == 0)
        unlink(endpoint + 6);
    zsock_t *s = zsock_new(ZMQ_ROUTER);
    if (!s) {
        *err = CAIRN_ENOMEM;
        return NULL;
    }
    tune(s);
    zsock_set_router_mandatory(s, 1);
    /* A peer that reconnects under its identity (raftd's "raftd", a gateway's origin) is a
     * restarted process: its new connection takes the identity over. Without this, a ROUTER
     * that was paused (SIGSTOP, a long stall) while the peer died and came back keeps the dead
     * pipe under that identity and never reads the new one - the nemesis found that on the
     * peer link (raftd/peer.c, seed 1002); the local links have the same shape. */
    zsock_set_router_handover(s, 1);
    if (zsock_bind(s, "%s", endpoint) < 0) {
        zsock_destroy(&s);
        *err = CAIRN_EIO;
        return NULL;
    }
    return s;
}

zsock_t *cairn_zmq_dealer_connect(const char *endpoint, const char *identity, int *err)
{
    zsock_t *s = zsock_new(ZMQ_DEALER);
    if (!s) {
        *err = CAIRN_ENOMEM;
        return NULL;
    }
    tune(s);
    if (identity)
        zsock_set_identity(s, identity);
    zsock_set_reconnect_ivl(s, 50);
    zsock_set_reconnect_ivl_max(s, 500);
    if (zsock_connect(s, "%s", endpoint) < 0) {
        zsock_destroy(&s);
        *err = CAIRN_EIO;
        return NULL;
    }
    return s;
}

static void free_buf(void *data, void *hint) { free(data); }

int cairn_zmq_send(zsock_t *sock, const void *identity, size_t identity_len, const cairn_ipc_msg_t *msg)
{
    uint8_t *buf;
    size_t len;
    int rc = cairn_ipc_encode(msg, &buf, &len);
    if (rc)
        return rc;
    void *raw = zsock_resolve(sock);
    if (identity) {
        if (zmq_send(raw, identity, identity_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            int e = errno;
            free(buf);
            return e == EHOSTUNREACH ? CAIRN_EUNREACHABLE : CAIRN_EAGAIN;
        }
    }
    zmq_msg_t m;
    zmq_msg_init_data(&m, buf, len, free_buf, NULL);
    if (zmq_msg_send(&m, raw, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return CAIRN_EAGAIN;
    }
    return 0;
}

/* ------------------------------------------------------------------ the outbox */

typedef struct kept {
    struct kept *next;
    int64_t at;
    size_t ident_len, len;
    uint8_t *buf; /* the encoded message */
    uint8_t ident[];
} kept_t;

struct cairn_zmq_outbox_t {
    kept_t *head, **tail;
    size_t n, bytes, max_msgs, max_bytes;
    int64_t max_age_ms;
    uint64_t dropped;
};

cairn_zmq_outbox_t *cairn_zmq_outbox_new(size_t max_msgs, size_t max_bytes, int64_t max_age_ms)
{
    cairn_zmq_outbox_t *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->tail = &o->head;
    o->max_msgs = max_msgs;
    o->max_bytes = max_bytes;
    o->max_age_ms = max_age_ms;
    return o;
}

static void kept_free(cairn_zmq_outbox_t *o, kept_t *k)
{
    o->n--;
    o->bytes -= k->len;
    free(k->buf);
    free(k);
}

static void drop_head(cairn_zmq_outbox_t *o)
{
    kept_t *k = o->head;
    o->head = k->next;
    if (!o->head)
        o->tail = &o->head;
    kept_free(o, k);
    o->dropped++;
}

void cairn_zmq_outbox_destroy(cairn_zmq_outbox_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    cairn_zmq_outbox_t *o = *self_p;
    while (o->head) {
        kept_t *k = o->head;
        o->head = k->next;
        kept_free(o, k);
    }
    free(o);
    *self_p = NULL;
}

static int send_encoded(void *raw, const void *identity, size_t identity_len, const uint8_t *buf, size_t len)
{
    if (zmq_send(raw, identity, identity_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return errno == EHOSTUNREACH ? CAIRN_EUNREACHABLE : CAIRN_EAGAIN;
    if (zmq_send(raw, buf, len, ZMQ_DONTWAIT) < 0)
        return CAIRN_EAGAIN;
    return 0;
}

int cairn_zmq_send_or_keep(cairn_zmq_outbox_t *o, zsock_t *sock, const void *identity, size_t identity_len,
                           const cairn_ipc_msg_t *msg)
{
    int rc = cairn_zmq_send(sock, identity, identity_len, msg);
    if (rc != CAIRN_EUNREACHABLE || !o || !identity)
        return rc;
    uint8_t *buf;
    size_t len;
    if (cairn_ipc_encode(msg, &buf, &len) != 0)
        return rc;
    kept_t *k = malloc(sizeof *k + identity_len);
    if (!k || len > o->max_bytes) {
        free(k);
        free(buf);
        o->dropped++;
        return rc;
    }
    k->next = NULL;
    k->at = cairn_now_ms();
    k->ident_len = identity_len;
    memcpy(k->ident, identity, identity_len);
    k->buf = buf;
    k->len = len;
    while (o->head && (o->n >= o->max_msgs || o->bytes + len > o->max_bytes))
        drop_head(o);
    *o->tail = k;
    o->tail = &k->next;
    o->n++;
    o->bytes += len;
    return 0;
}

void cairn_zmq_outbox_flush(cairn_zmq_outbox_t *o, zsock_t *sock, const void *identity, size_t identity_len)
{
    if (!o || !o->head)
        return;
    int64_t now = cairn_now_ms();
    while (o->head && now - o->head->at > o->max_age_ms)
        drop_head(o);
    void *raw = zsock_resolve(sock);
    kept_t **pp = &o->head, *prev = NULL;
    while (*pp) {
        kept_t *k = *pp;
        if (k->ident_len != identity_len || memcmp(k->ident, identity, identity_len) != 0) {
            prev = k;
            pp = &k->next;
            continue;
        }
        if (send_encoded(raw, identity, identity_len, k->buf, k->len) == CAIRN_EUNREACHABLE)
            return; /* not connected after all (a message can come in on a pipe going away) */
        *pp = k->next;
        if (o->tail == &k->next)
            o->tail = prev ? &prev->next : &o->head;
        kept_free(o, k);
    }
}

size_t cairn_zmq_outbox_size(const cairn_zmq_outbox_t *o) { return o ? o->n : 0; }
uint64_t cairn_zmq_outbox_dropped(const cairn_zmq_outbox_t *o) { return o ? o->dropped : 0; }

int cairn_zmq_recv(zsock_t *sock, int is_router, cairn_zmq_in_t *in)
{
    void *raw = zsock_resolve(sock);
    memset(in, 0, sizeof *in);
    zmq_msg_init(&in->frame);
    if (is_router) {
        zmq_msg_init(&in->ident);
        if (zmq_msg_recv(&in->ident, raw, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&in->ident);
            zmq_msg_close(&in->frame);
            return CAIRN_EAGAIN;
        }
        in->has_ident = 1;
        if (!zmq_msg_more(&in->ident)) {
            cairn_zmq_in_close(in);
            return CAIRN_EPROTO;
        }
        zmq_msg_recv(&in->frame, raw, 0);
    } else if (zmq_msg_recv(&in->frame, raw, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&in->frame);
        return CAIRN_EAGAIN;
    }
    if (zmq_msg_more(&in->frame)) { /* we only ever send one payload frame: drain the rest */
        int more = 1;
        while (more) {
            zmq_msg_t x;
            zmq_msg_init(&x);
            zmq_msg_recv(&x, raw, 0);
            more = zmq_msg_more(&x);
            zmq_msg_close(&x);
        }
        cairn_zmq_in_close(in);
        return CAIRN_EPROTO;
    }
    return 0;
}

void cairn_zmq_in_close(cairn_zmq_in_t *in)
{
    if (in->has_ident)
        zmq_msg_close(&in->ident);
    zmq_msg_close(&in->frame);
    in->has_ident = 0;
}

int cairn_zmq_drain(zsock_t *sock, int is_router, int max, cairn_zmq_handler_fn fn, void *ctx)
{
    int n = 0;
    while (n < max) {
        cairn_zmq_in_t in;
        int rc = cairn_zmq_recv(sock, is_router, &in);
        if (rc == CAIRN_EAGAIN)
            break;
        if (rc)
            continue; /* consumed and dropped */
        n++;
        int stop = fn(ctx, in.has_ident ? zmq_msg_data(&in.ident) : NULL, in.has_ident ? zmq_msg_size(&in.ident) : 0,
                      zmq_msg_data(&in.frame), zmq_msg_size(&in.frame));
        cairn_zmq_in_close(&in);
        if (stop)
            break;
    }
    return n;
}

int64_t cairn_test_clock_offset_ms = 0;

int64_t cairn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + cairn_test_clock_offset_ms;
}

uint64_t cairn_random_u64(void)
{
    uint64_t v = 0;
    while (v == 0) {
        if (getrandom(&v, sizeof v, 0) != sizeof v)
            v = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    }
    return v;
}
