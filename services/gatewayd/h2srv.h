/* h2srv.h - gatewayd's client transport: gRPC over HTTP/2 (h2c prior knowledge or TLS with
 * ALPN h2) and a minimal HTTP/1.1 server, on the same ports, driven from one zmq_poll loop.
 *
 * The module knows nothing about etcd: it frames and unframes gRPC messages and hands each
 * call to the service layer through callbacks; the service answers through the reply
 * functions below, now or later (after an IPC round trip). Single-threaded: every function
 * must be called from the thread that runs the poll loop.
 *
 * Loop shape:
 *     for (;;) {
 *         size_t n = cairn_h2srv_poll_count(srv);          // + your IPC sockets
 *         n = cairn_h2srv_poll_fill(srv, items, cap);      // items[0..n)
 *         zmq_poll(items, n + n_ipc, timeout_ms);
 *         cairn_h2srv_poll_handle(srv, items, n);          // may call the handlers
 *         ... handle IPC, call cairn_h2srv_reply/stream_send ...
 *         cairn_h2srv_flush(srv);                          // send what was queued
 *     }
 * Call flush at least about once a second even when idle: it also expires connections
 * that never finish their TLS handshake or first request.
 *
 * Callbacks run inside poll_handle and flush. From a callback you may call reply, error,
 * stream_send, stream_end, http1_reply and the query functions (for any call, on any
 * connection); never poll_handle, flush, drain or destroy. Pointers passed to a callback
 * (path, msg, meta and its strings) are valid only during that callback.
 *
 * A call is "known" to the service once on_message or on_half_close was delivered for it;
 * for every known call on_close is delivered exactly once, when the stream is gone (the
 * server finished it, the client reset it, or the connection closed). Replies to a call
 * that is gone are dropped and return CAIRN_ECLOSED, which callers may ignore. destroy()
 * makes no callbacks.
 */
#ifndef CAIRN_H2SRV_H
#define CAIRN_H2SRV_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

/* (connection serial << 32) | stream id (HTTP/2) or request sequence (HTTP/1.1). Never 0. */
typedef uint64_t cairn_call_id_t;

typedef struct {
    const char *authority;  /* :authority (HTTP/2) or Host (HTTP/1.1); "" if absent */
    const char *token;      /* etcd "token" metadata, else "authorization"; NULL if absent */
    int has_leader_md;      /* "hasleader: true" metadata (watch, keepalive streams) */
    int64_t timeout_ms;     /* from grpc-timeout, rounded up to whole ms; -1 none */
    const char *client_cn;  /* TLS client certificate CN when one was verified, else NULL */
    int tls;                /* 1 if the connection is TLS */
    int metrics_only;       /* accepted on a metrics listener (cairn_h2srv_opts_t.metrics_urls) */
    int body_follows;       /* HTTP/1.1 chunked request: the body comes in on_http1_body calls */
} cairn_h2_meta_t;

typedef struct {
    /* A complete unary request (dispatched at END_STREAM) OR, for streaming methods, each
     * complete length-prefixed message as it arrives. msg excludes the 5-byte prefix. Paths
     * are not checked here: unknown ones arrive like any other (answer 12 UNIMPLEMENTED). */
    void (*on_message)(void *ud, cairn_call_id_t call, const char *path, const uint8_t *msg,
                       size_t len, const cairn_h2_meta_t *meta);
    /* Client half-closed a streaming call (END_STREAM). May come without any on_message. */
    void (*on_half_close)(void *ud, cairn_call_id_t call);
    /* Stream gone (RST_STREAM, connection closed, finished): forget the call. */
    void (*on_close)(void *ud, cairn_call_id_t call);
    /* Plain HTTP request, answered at once: HTTP/1.1 on the same port (sniffed), or an
     * HTTP/2 request whose content-type is not gRPC and whose path is not gRPC-shaped
     * ("/pkg.Service/Method" gets 415) - curl and Go clients use h2 over TLS for /health.
     * Fill *status, *content_type (static string; NULL means text/plain) and a malloc'd
     * body (freed here). Not called when on_http1_async is set. Without either HTTP
     * handler, HTTP/1.1 gets 404 and non-gRPC HTTP/2 gets 415. */
    void (*on_http1)(void *ud, const char *method, const char *path, const uint8_t *body, size_t body_len,
                     int *status, const char **content_type, char **resp_body, size_t *resp_len);
    /* Optional: a gRPC call's status is being sent (once per call that gets one; a call reset
     * by the client gets none). For metrics. */
    void (*on_status)(void *ud, cairn_call_id_t call, int grpc_status);
    /* Is this path a streaming method (Watch, LeaseKeepAlive, Snapshot...)? NULL: none is. */
    int (*is_streaming)(void *ud, const char *path);
    void *ud;
    /* Optional. HTTP/1.1 request answered later with cairn_h2srv_http1_reply(req, ...)
     * (e.g. /health needs a linearizable read). HTTP/1.1 requests of one connection are
     * handed over one at a time, in order; HTTP/2 ones concurrently. If the request is
     * abandoned before the reply (connection closed, stream reset), on_close(req) is
     * delivered; after the reply, nothing. meta->token is the Authorization header. */
    void (*on_http1_async)(void *ud, cairn_call_id_t req, const char *method, const char *path,
                           const uint8_t *body, size_t body_len, const cairn_h2_meta_t *meta);
    /* Optional (only with on_http1_async): an HTTP/1.1 request with "Transfer-Encoding: chunked" is
     * handed over at its headers (body_len 0, meta->body_follows), then its body as the chunks
     * come (each non-empty chunk, then end = 1 after the last), for as long as the request is
     * pending and not ended: an interactive JSON watch. Answering before the body ended closes
     * the connection after the answer (the rest of the body is not read). NULL: such requests
     * are refused with 501. */
    void (*on_http1_body)(void *ud, cairn_call_id_t req, const uint8_t *data, size_t len, int end);
} cairn_h2srv_handlers_t;

typedef struct {
    const char *const *listen_urls;  /* "http://127.0.0.1:2379", "https://[::1]:2379", port 0 ok */
    size_t n_listen;
    const char *cert_file, *key_file; /* TLS for https:// urls */
    int auto_tls;                     /* without cert/key: self-signed cert, see below */
    const char *auto_tls_dir;         /* where cert.pem/key.pem are generated, reused if valid */
    const char *trusted_ca_file;      /* verify client certificates against this CA ... */
    int client_cert_auth;             /* ... and require one (etcd --client-cert-auth) */
    size_t max_request_bytes;         /* etcd --max-request-bytes; 0 = 1.5 MiB. gRPC messages up to
                                         this + 512 KiB are delivered (etcd answers "request is too
                                         large" itself above max_request_bytes); larger: status 8 */
    int reuseport;                    /* SO_REUSEPORT so several gateways share the port */
    const char *const *metrics_urls;  /* etcd --listen-metrics-urls: more listeners whose requests are */
    size_t n_metrics;                 /* all plain HTTP (no gRPC): the service answers /metrics, /health */
    uint32_t max_concurrent_streams;  /* per connection; 0 = 1000 */
    int64_t keepalive_interval_ms;    /* etcd --grpc-keepalive-interval: PING a client silent this long; 0 off */
    int64_t keepalive_timeout_ms;     /* etcd --grpc-keepalive-timeout: close if the PING is not answered; 0 off */
    int64_t header_timeout_ms;        /* a connection must finish its TLS handshake, HTTP/2 preface or
                                       * HTTP/1.1 request head within this; 0 = 10 s, < 0 = no limit */
    int64_t max_conns;                /* connections held at once, past it accepted and closed at once;
                                       * 0 = unlimited, < 0 = RLIMIT_NOFILE minus 64 */
} cairn_h2srv_opts_t;

typedef struct cairn_h2srv_t cairn_h2srv_t;

/* Binds every listen URL (errors are CAIRN_ECONFIG/EIO/ETLS/ENOMEM, with a sentence in
 * errbuf). Also sets SIGPIPE to SIG_IGN if it is at its default: OpenSSL writes to the
 * socket with write(2), and a peer that resets must not kill the process. */
cairn_h2srv_t *cairn_h2srv_new(const cairn_h2srv_opts_t *opts, const cairn_h2srv_handlers_t *h,
                               int *err, char *errbuf, size_t errlen);
/* GOAWAY NO_ERROR to every HTTP/2 client, flush briefly (<= 200 ms), close. Idempotent. */
void cairn_h2srv_destroy(cairn_h2srv_t **self_p);
/* Graceful shutdown start: close the listeners and send GOAWAY NO_ERROR; calls in flight
 * go on until they finish. Poll until cairn_h2srv_conn_count() is 0 (or you tire of it). */
void cairn_h2srv_drain(cairn_h2srv_t *self);

/* Poll integration. poll_count = entries poll_fill wants; poll_fill writes at most cap of
 * them (listeners first) and returns how many: POLLIN unless the connection's output is
 * backed up, POLLOUT only while output is pending (or OpenSSL asks for it). poll_handle
 * takes the same array slice back after zmq_poll. */
size_t cairn_h2srv_poll_count(const cairn_h2srv_t *self);
size_t cairn_h2srv_poll_fill(cairn_h2srv_t *self, zmq_pollitem_t *items, size_t cap);
void cairn_h2srv_poll_handle(cairn_h2srv_t *self, const zmq_pollitem_t *items, size_t n);
/* After each loop pass: pull frames for every connection touched and write them out. */
void cairn_h2srv_flush(cairn_h2srv_t *self);

/* Replies. All return 0, CAIRN_ECLOSED (call gone: drop silently), CAIRN_ESTATE (the call
 * already finished / wrong call kind), CAIRN_EINVAL or CAIRN_ENOMEM. */
/* unary OK: HEADERS, DATA (prefix + msg), trailers grpc-status 0 */
int cairn_h2srv_reply(cairn_h2srv_t *self, cairn_call_id_t call, const uint8_t *msg, size_t len);
/* Trailers-Only if nothing was sent yet, else trailers after the queued messages;
 * grpc-message is percent-encoded here (pass plain text; NULL or "" for none). */
int cairn_h2srv_error(cairn_h2srv_t *self, cairn_call_id_t call, int grpc_status, const char *message);
/* Server-stream message (the first one sends the response HEADERS). Queued without limit:
 * watch cairn_h2srv_stream_queued_bytes for backpressure. */
int cairn_h2srv_stream_send(cairn_h2srv_t *self, cairn_call_id_t call, const uint8_t *msg, size_t len);
/* Finish a call: status 0 or an error; same as cairn_h2srv_error. */
int cairn_h2srv_stream_end(cairn_h2srv_t *self, cairn_call_id_t call, int grpc_status, const char *message);
/* Bytes queued on this call not yet handed to HTTP/2 (flow control / slow reader); 0 if gone. */
size_t cairn_h2srv_stream_queued_bytes(const cairn_h2srv_t *self, cairn_call_id_t call);
/* Bytes pending on the call's connection socket (shared by all its streams); 0 if gone. */
size_t cairn_h2srv_conn_queued_bytes(const cairn_h2srv_t *self, cairn_call_id_t call);
/* Answer an on_http1_async request. content_type NULL = text/plain. Body is copied. */
int cairn_h2srv_http1_reply(cairn_h2srv_t *self, cairn_call_id_t req, int status, const char *content_type,
                            const uint8_t *body, size_t len);
/* A streamed answer to an on_http1_async request (etcd's JSON gateway streams: watch, lease
 * keepalive, election observe), written as the messages come:
 *   - stream_begin: req is a stream (call it before the first send if the first message may
 *     be long in coming): an HTTP/1.1 client that half-closes is then gone, as Go's server
 *     cancels such a request, instead of waiting for its answer;
 *   - stream_send: the first call sends the status line and headers (HTTP/1.1: status,
 *     Content-Type, Transfer-Encoding: chunked; HTTP/1.0: no framing, closed at the end;
 *     HTTP/2: HEADERS), then each call with len > 0 is one chunk / DATA; len 0 sends only the
 *     headers. status and content_type matter only in the first call;
 *   - stream_end: data (may be empty) as the last chunk, then the end of the body (HTTP/1.1's
 *     zero chunk; the connection stays for the next request unless the client asked for a
 *     close). If nothing was sent yet, a whole answer with Content-Length instead.
 * Unlike http1_reply, on_close(req) is delivered for a stream exactly once, from flush after
 * stream_end, or when the client goes away first (reset, close, HTTP/1.1 half-close). A
 * client that stops reading: watch http1_queued_bytes (the connection's unsent output for
 * HTTP/1.1, whose one request at a time owns it; the stream's queue for HTTP/2); its
 * connection is not read from while the output is backed up. Same return codes as reply. */
int cairn_h2srv_http1_stream_begin(cairn_h2srv_t *self, cairn_call_id_t req);
int cairn_h2srv_http1_stream_send(cairn_h2srv_t *self, cairn_call_id_t req, int status, const char *content_type,
                                  const uint8_t *data, size_t len);
int cairn_h2srv_http1_stream_end(cairn_h2srv_t *self, cairn_call_id_t req, int status, const char *content_type,
                                 const uint8_t *data, size_t len);
size_t cairn_h2srv_http1_queued_bytes(const cairn_h2srv_t *self, cairn_call_id_t req);

/* Introspection (tests, metrics). */
size_t cairn_h2srv_listener_count(const cairn_h2srv_t *self);
int cairn_h2srv_bound_port(const cairn_h2srv_t *self, size_t idx); /* port of listener idx, or -1 */
size_t cairn_h2srv_conn_count(const cairn_h2srv_t *self);

/* gRPC helpers, exposed for the service layer and tests. */
/* grpc-timeout value ("4998230u") to milliseconds, rounded up; -1 if malformed. */
int64_t cairn_grpc_timeout_parse(const char *v);
/* Percent-encode per the gRPC spec (bytes outside 0x20-0x7E and '%'): writes at most
 * cap-1 bytes + NUL, never splitting an escape; returns the length written. */
size_t cairn_grpc_percent_encode(const char *in, char *out, size_t cap);

#endif
