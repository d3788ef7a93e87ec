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
 * queue or an unroutable peer returns CAIRN_EAGAIN, nothing blocks. */
int cairn_zmq_send(zsock_t *sock, const void *identity, size_t identity_len, const cairn_ipc_msg_t *msg);

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
