/* Unit tests for shared/cairn_zmq.c's outbox: a ROUTER's answer to an identity that has not
 * connected yet is kept and delivered, in order, once a message from that identity arrives;
 * nothing is kept for long or beyond its bounds; a connected peer is sent to at once. Real
 * ZeroMQ sockets over ipc:// in a temporary directory. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_ipc.h"
#include "cairn_zmq.h"
#include "tmpdir.h"

static char dir[64], ep[128];

static void setup(void)
{
    cairn_test_mkdtemp(dir, sizeof dir, "zmq");
    snprintf(ep, sizeof ep, "ipc://%s/r.ipc", dir);
}

static void teardown(void) { cairn_test_rmtree(dir); }

static cairn_ipc_msg_t result(uint64_t req_id)
{
    return (cairn_ipc_msg_t){.type = CAIRN_IPC_RESULT, .req_id = req_id};
}

/* Receives one message on a DEALER within ms; returns its req_id, or 0 when none came. */
static uint64_t recv_req_id(zsock_t *d, int ms)
{
    zmq_pollitem_t it = {zsock_resolve(d), 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, ms) <= 0)
        return 0;
    cairn_zmq_in_t in;
    if (cairn_zmq_recv(d, 0, &in) != 0)
        return 0;
    cairn_ipc_msg_t m;
    uint64_t id = 0;
    if (cairn_ipc_decode(zmq_msg_data(&in.frame), zmq_msg_size(&in.frame), &m) == 0) {
        id = m.req_id;
        cairn_ipc_msg_release(&m);
    }
    cairn_zmq_in_close(&in);
    return id;
}

/* Waits for one message on the ROUTER and returns its identity's length (copied to id). */
static size_t router_recv(zsock_t *r, char *id, size_t cap)
{
    zmq_pollitem_t it = {zsock_resolve(r), 0, ZMQ_POLLIN, 0};
    cr_assert_gt(zmq_poll(&it, 1, 2000), 0, "nothing reached the ROUTER");
    cairn_zmq_in_t in;
    cr_assert_eq(cairn_zmq_recv(r, 1, &in), 0);
    size_t n = zmq_msg_size(&in.ident);
    cr_assert_leq(n, cap);
    memcpy(id, zmq_msg_data(&in.ident), n);
    cairn_zmq_in_close(&in);
    return n;
}

static void hello(zsock_t *d)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_STATUS, .req_id = 1};
    cr_assert_eq(cairn_zmq_send(d, NULL, 0, &m), 0);
}

TestSuite(zmq, .init = setup, .fini = teardown);

Test(zmq, unreachable_identity_reported_apart_from_a_full_queue)
{
    int err = 0;
    zsock_t *r = cairn_zmq_router_bind(ep, &err);
    cr_assert_not_null(r);
    cairn_ipc_msg_t m = result(7);
    cr_assert_eq(cairn_zmq_send(r, "gw1", 3, &m), CAIRN_EUNREACHABLE);
    cr_assert_str_eq(cairn_strerror(CAIRN_EUNREACHABLE), "peer not connected");
    zsock_destroy(&r);
}

Test(zmq, kept_answers_reach_the_peer_in_order_once_it_speaks)
{
    int err = 0;
    zsock_t *r = cairn_zmq_router_bind(ep, &err);
    cr_assert_not_null(r);
    cairn_zmq_outbox_t *o = cairn_zmq_outbox_new(16, 1 << 20, 10000);
    cr_assert_not_null(o);
    for (uint64_t i = 1; i <= 3; i++) {
        cairn_ipc_msg_t m = result(100 + i);
        cr_assert_eq(cairn_zmq_send_or_keep(o, r, "gw1", 3, &m), 0);
    }
    cairn_ipc_msg_t other = result(900);
    cr_assert_eq(cairn_zmq_send_or_keep(o, r, "gw2", 3, &other), 0);
    cr_assert_eq(cairn_zmq_outbox_size(o), 4);

    zsock_t *d = cairn_zmq_dealer_connect(ep, "gw1", &err);
    cr_assert_not_null(d);
    hello(d);
    char id[64];
    size_t n = router_recv(r, id, sizeof id);
    cr_assert_eq(n, 3);
    cairn_zmq_outbox_flush(o, r, id, n);
    cr_assert_eq(cairn_zmq_outbox_size(o), 1, "gw2's answer stays kept");
    cr_assert_eq(recv_req_id(d, 2000), 101);
    cr_assert_eq(recv_req_id(d, 2000), 102);
    cr_assert_eq(recv_req_id(d, 2000), 103);
    cr_assert_eq(recv_req_id(d, 100), 0, "nothing more");

    /* connected now: sent at once, nothing kept */
    cairn_ipc_msg_t m = result(104);
    cr_assert_eq(cairn_zmq_send_or_keep(o, r, "gw1", 3, &m), 0);
    cr_assert_eq(cairn_zmq_outbox_size(o), 1);
    cr_assert_eq(recv_req_id(d, 2000), 104);
    cr_assert_eq(cairn_zmq_outbox_dropped(o), 0);
    zsock_destroy(&d);
    cairn_zmq_outbox_destroy(&o);
    cr_assert_null(o);
    cairn_zmq_outbox_destroy(&o); /* idempotent */
    zsock_destroy(&r);
}

Test(zmq, bounds_drop_the_oldest_and_age_drops_the_stale)
{
    int err = 0;
    zsock_t *r = cairn_zmq_router_bind(ep, &err);
    cr_assert_not_null(r);
    cairn_zmq_outbox_t *o = cairn_zmq_outbox_new(3, 1 << 20, 200);
    for (uint64_t i = 1; i <= 5; i++) {
        cairn_ipc_msg_t m = result(i);
        cr_assert_eq(cairn_zmq_send_or_keep(o, r, "gw1", 3, &m), 0);
    }
    cr_assert_eq(cairn_zmq_outbox_size(o), 3);
    cr_assert_eq(cairn_zmq_outbox_dropped(o), 2);
    zsock_t *d = cairn_zmq_dealer_connect(ep, "gw1", &err);
    hello(d);
    char id[64];
    size_t n = router_recv(r, id, sizeof id);
    cairn_zmq_outbox_flush(o, r, id, n);
    cr_assert_eq(recv_req_id(d, 2000), 3, "the two oldest went");
    cr_assert_eq(recv_req_id(d, 2000), 4);
    cr_assert_eq(recv_req_id(d, 2000), 5);

    /* kept for another identity, then too old when anyone next speaks */
    cairn_ipc_msg_t m = result(50);
    cr_assert_eq(cairn_zmq_send_or_keep(o, r, "gw9", 3, &m), 0);
    cr_assert_eq(cairn_zmq_outbox_size(o), 1);
    usleep(300 * 1000);
    hello(d);
    n = router_recv(r, id, sizeof id);
    cairn_zmq_outbox_flush(o, r, id, n);
    cr_assert_eq(cairn_zmq_outbox_size(o), 0);
    cr_assert_eq(cairn_zmq_outbox_dropped(o), 3);

    /* a message larger than the whole budget is not kept */
    cairn_zmq_outbox_t *small = cairn_zmq_outbox_new(3, 8, 1000);
    cairn_ipc_msg_t big = {.type = CAIRN_IPC_RESULT, .req_id = 1, .body = (const uint8_t *)"0123456789abcdef",
                           .body_len = 16};
    cr_assert_eq(cairn_zmq_send_or_keep(small, r, "gw7", 3, &big), CAIRN_EUNREACHABLE);
    cr_assert_eq(cairn_zmq_outbox_size(small), 0);
    cairn_zmq_outbox_destroy(&small);
    zsock_destroy(&d);
    cairn_zmq_outbox_destroy(&o);
    zsock_destroy(&r);
}
