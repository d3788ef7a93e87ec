/* cairn_grpcc.h - a small gRPC client: one HTTP/2 connection (nghttp2) to one endpoint, over
 * cleartext (h2c, prior knowledge, as etcdctl speaks it) or TLS (OpenSSL, ALPN h2), carrying
 * any number of calls at once: unary, server-streaming and bidirectional.
 *
 * It is single-threaded and driven by the caller: cairn_grpcc_run() polls the socket for up to
 * a timeout, moves bytes both ways and dispatches callbacks; every call's messages go to its
 * on_msg callback as each one completes, so a long stream (Maintenance/Snapshot) never has
 * more than one message in memory. A message larger than the connection's max_msg fails the
 * call (RESOURCE_EXHAUSTED) instead of growing without bound.
 *
 * Statuses are gRPC's: a call ends with a code (0 OK, 1..16 as grpc-go) and a message - the
 * server's grpc-status / grpc-message trailers (percent-decoded), or one the client makes for
 * what went wrong on its side, as grpc-go does: DEADLINE_EXCEEDED (4) for a deadline that
 * passed, UNAVAILABLE (14) for a connection that failed or closed, CANCELLED (1) for a call
 * the caller cancelled, INTERNAL (13) for a response that is not gRPC. Functions that can fail
 * before a call exists return negative CAIRN_E* codes.
 *
 * Keepalive: a connection that has heard nothing for keepalive_ms sends a PING; no answer
 * within another keepalive_ms (or a socket error, or the server closing) fails the connection
 * and every call on it with UNAVAILABLE. The caller then destroys it and connects again.
 */
#ifndef CAIRN_GRPCC_H
#define CAIRN_GRPCC_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes used by the client itself */
#define CAIRN_GRPC_OK 0
#define CAIRN_GRPC_CANCELLED 1
#define CAIRN_GRPC_UNKNOWN 2
#define CAIRN_GRPC_DEADLINE_EXCEEDED 4
#define CAIRN_GRPC_RESOURCE_EXHAUSTED 8
#define CAIRN_GRPC_INTERNAL 13
#define CAIRN_GRPC_UNAVAILABLE 14

typedef struct cairn_grpcc cairn_grpcc_t;
typedef struct cairn_grpcc_call cairn_grpcc_call_t;

typedef struct {
    int tls;              /* 1: TLS (implied by any of the files below or an https:// endpoint) */
    const char *cacert;   /* PEM CA bundle to verify the server with; NULL: system default */
    const char *cert;     /* client certificate (PEM), with key */
    const char *key;
    int insecure_skip_verify; /* TLS without checking the server's certificate */
    int connect_timeout_ms;   /* TCP connect + TLS handshake; 0: 5000 */
    int keepalive_ms;         /* 0: 10000 */
    size_t max_msg;           /* largest message accepted; 0: 64 MiB */
} cairn_grpcc_opts_t;

/* Connects to endpoint "host:port", "[v6]:port", "http://host:port" or "https://host:port" and
 * completes the TLS handshake (if any) and the HTTP/2 preface. NULL on failure with *err (may
 * be NULL) set and a sentence in errbuf. opts may be NULL (h2c, defaults). */
cairn_grpcc_t *cairn_grpcc_new(const char *endpoint, const cairn_grpcc_opts_t *opts, int *err, char *errbuf,
                               size_t errlen);
/* Closes the connection. Calls still open end with UNAVAILABLE "connection closed" (their
 * on_done runs here). Idempotent, NULLs *self_p. */
void cairn_grpcc_destroy(cairn_grpcc_t **self_p);

/* Sets (or with value NULL removes) a metadata header sent with every later call, e.g.
 * "token". Names are lower-case. */
int cairn_grpcc_set_metadata(cairn_grpcc_t *c, const char *name, const char *value);

/* 0 while the connection works; once it failed, the negative code, with cairn_grpcc_error()
 * giving the reason. */
int cairn_grpcc_failed(const cairn_grpcc_t *c);
const char *cairn_grpcc_error(const cairn_grpcc_t *c);
const char *cairn_grpcc_endpoint(const cairn_grpcc_t *c);

/* Callbacks of a call. on_msg gets each response message (valid only during the call);
 * returning non-zero cancels the call (it then ends with CANCELLED). on_done runs exactly once,
 * from cairn_grpcc_run/cancel/destroy, never from inside cairn_grpcc_start; after it the call
 * is freed and must not be used. */
typedef int (*cairn_grpcc_msg_fn)(void *arg, cairn_grpcc_call_t *call, const uint8_t *msg, size_t len);
typedef void (*cairn_grpcc_done_fn)(void *arg, cairn_grpcc_call_t *call, int status, const char *message);

#define CAIRN_GRPCC_HALF_CLOSE 0x1 /* the first message is the only one (unary, server stream) */
#define CAIRN_GRPCC_HASLEADER 0x2  /* send "hasleader: true" (etcd: fail rather than wait) */

/* Starts a call of method path ("/etcdserverpb.KV/Range"), sending msg (may be NULL for a
 * bidi stream that sends later). timeout_ms > 0 sets a deadline (also sent as grpc-timeout).
 * NULL with *err on failure (a failed connection: CAIRN_ECLOSED). */
cairn_grpcc_call_t *cairn_grpcc_start(cairn_grpcc_t *c, const char *path, const void *msg, size_t len, int flags,
                                      int timeout_ms, cairn_grpcc_msg_fn on_msg, cairn_grpcc_done_fn on_done,
                                      void *arg, int *err);
/* Queues one more request message on a bidi stream; half_close ends the client side. */
int cairn_grpcc_send(cairn_grpcc_call_t *call, const void *msg, size_t len, int half_close);
/* Cancels a call (RST_STREAM CANCEL); its on_done runs from here with CANCELLED. */
void cairn_grpcc_cancel(cairn_grpcc_call_t *call);

/* Waits up to timeout_ms for the socket, moves bytes, runs callbacks, checks deadlines and
 * keepalive. 0, or the negative code once the connection failed (its calls are then done). */
int cairn_grpcc_run(cairn_grpcc_t *c, int timeout_ms);

/* A unary call, run to completion: *resp (malloc'd, the caller frees) gets the response.
 * Returns the gRPC status: 0, or 1..16 with the message in errbuf; negative CAIRN_E* only
 * for a call that could not start (and errbuf says why). Other calls on the connection keep
 * being served meanwhile. */
int cairn_grpcc_unary(cairn_grpcc_t *c, const char *path, const void *req, size_t len, uint8_t **resp,
                      size_t *resp_len, int timeout_ms, char *errbuf, size_t errlen);

#endif
