/* cairn_zmq.h - ZeroMQ plumbing shared by the three processes (over czmq's zsock).
 *
 * Endpoints are ipc:// paths in the node's run directory. Every socket gets high-water
 * marks (a full queue is an explicit error, never a blocked process: sends are
 * non-blocking), linger 0 so a stopping process never hangs on undelivered messages, and
 * ROUTERs are told to report unroutable destinations instead of silently dropping them
 * where the caller wants to know.
 */
#ifndef CAIRN_ZMQ_H
#define CAIRN_ZMQ_H

#include <czmq.h>
#include <stdint.h>

#include "cairn_ipc.h"

#define CAIRN_ZMQ_HWM 100000

/* A ROUTER bound at endpoint ("ipc://..."); a stale socket file left by a crash is replaced. */
zsock_t *cairn_zmq_router_bind(const char *endpoint, int *err);
/* A DEALER with the given identity connected to endpoint (connects lazily; reconnects by itself). */
zsock_t *cairn_zmq_dealer_connect(const char *endpoint, const char *identity, int *err);

/* Encodes msg and sends it (ROUTER: to identity; DEALER: identity NULL). Non-blocking: a full
 * queue returns CAIRN_EAGAIN, a ROUTER's identity with no connection CAIRN_EUNREACHABLE;
 * nothing blocks. */
int cairn_zmq_send(zsock_t *sock, const void *identity, size_t identity_len, const cairn_ipc_msg_t *msg);

/* An outbox for a ROUTER's answers to peers that have not connected yet.
 *
 * A process that starts or restarts connects its DEALERs lazily, with a back-off: a gateway
 * started while stored replays its WAL reaches stored's socket up to half a second after its
 * first write went through raftd, and stored's answer to that write found no connection under
 * the gateway's identity - dropped, the client waited out its deadline ("request timed out",
 * test_rolling_restart). cairn_zmq_send_or_keep keeps such an answer (encoded), and
 * cairn_zmq_outbox_flush sends what was kept for an identity when a message from it arrives
 * (a gateway polls its stored every second, and at once when it starts). Bounded: at most
 * max_msgs messages and max_bytes bytes, each for max_age_ms; the oldest go first. */
typedef struct cairn_zmq_outbox_t cairn_zmq_outbox_t;
cairn_zmq_outbox_t *cairn_zmq_outbox_new(size_t max_msgs, size_t max_bytes, int64_t max_age_ms);
void cairn_zmq_outbox_destroy(cairn_zmq_outbox_t **self_p);
/* cairn_zmq_send, but an unreachable identity's message is kept (returns 0 then). */
int cairn_zmq_send_or_keep(cairn_zmq_outbox_t *self, zsock_t *sock, const void *identity, size_t identity_len,
                           const cairn_ipc_msg_t *msg);
/* Sends, in order, what was kept for identity; drops what is older than max_age_ms. */
void cairn_zmq_outbox_flush(cairn_zmq_outbox_t *self, zsock_t *sock, const void *identity, size_t identity_len);
/* Messages kept now, and messages dropped for age or bounds since the start. */
size_t cairn_zmq_outbox_size(const cairn_zmq_outbox_t *self);
uint64_t cairn_zmq_outbox_dropped(const cairn_zmq_outbox_t *self);

/* A received message: identity (ROUTER only) and the raw frame; decode with cairn_ipc_decode. */
typedef struct {
    zmq_msg_t ident;
    zmq_msg_t frame;
    int has_ident;
} cairn_zmq_in_t;

/* Non-blocking receive of one whole message. Returns 0, CAIRN_EAGAIN when nothing is
 * waiting, or CAIRN_EPROTO for a message with an unexpected number of frames (consumed and
 * dropped). On 0 the caller must call cairn_zmq_in_close. */
int cairn_zmq_recv(zsock_t *sock, int is_router, cairn_zmq_in_t *in);
void cairn_zmq_in_close(cairn_zmq_in_t *in);

/* A handler for cairn_zmq_drain: ident is NULL/0 on a DEALER. Return non-zero to stop
 * draining (the rest stays queued for the next pass). */
typedef int (*cairn_zmq_handler_fn)(void *ctx, const uint8_t *ident, size_t ident_len, const uint8_t *frame,
                                    size_t len);
/* Receives every whole message waiting on sock (at most max) and hands each to fn; malformed
 * multi-frame messages are dropped. The loops call it for sockets zmq_poll reported readable.
 * Returns how many were handed. */
int cairn_zmq_drain(zsock_t *sock, int is_router, int max, cairn_zmq_handler_fn fn, void *ctx);

/* Current time in milliseconds on the monotonic clock, plus cairn_test_clock_offset_ms. */
int64_t cairn_now_ms(void);
/* Test only: added to cairn_now_ms(); 0 unless raftd's CAIRN_TEST_FAULTS=1 switch
 * <run-dir>/fault-clock-offset-ms sets it (a forward clock jump, tests/nemesis). */
extern int64_t cairn_test_clock_offset_ms;
/* A random 64-bit value from the OS (ids, boot ids), never 0. */
uint64_t cairn_random_u64(void);

#endif
