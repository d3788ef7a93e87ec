/* gw_internal.h - what gatewayd's service files (svc_*.c) share with the loop (gateway.c).
 *
 * A gRPC method is declared in exactly one place: one row of its service's method table,
 * in the service's own file. The row says everything the gateway needs to know about it:
 *
 *     {path, kind, handler, arg, perm, json route, half_close, close}
 *
 *   path        "/etcdserverpb.KV/Range" - what the client sends as :path
 *   kind        GW_UNARY (dispatched once, at END_STREAM) or GW_STREAM (each message as it
 *               arrives; h2srv asks is_streaming, which reads this)
 *   handler     called with each request message; NULL: declared but not served yet,
 *               answered as grpc-go answers a method it does not register (12 UNIMPLEMENTED)
 *   arg         an int handed to the handler, so one handler can serve several rows
 *   perm        what the call will need once auth exists: GW_PERM_READ, _WRITE, _ADMIN
 *   json        its JSON-gateway route ("/v3/kv/range", ETCD_API.md §5): gateway.c serves
 *               POST <json> (and /v3beta/...) over HTTP/1.1 by running the same handler on
 *               the request converted from JSON (gw_json.h); the handler answers with gw_reply
 *               / gw_status / gw_error as for gRPC, and the answer is converted back.
 *   half_close, close   streams only: the client finished sending / the stream is gone.
 *               close frees whatever the handler hung on gw_call_t.state.
 *   json_kind   streams only: how the JSON gateway serves it (gw_json_kind_t below).
 *
 * gateway.c collects the services listed in its gw_services[] into one table sorted by path
 * and dispatches by binary search; a path in no row is 12 UNIMPLEMENTED.
 *
 * Adding a UNARY method: in its service's file (svc_kv.c, svc_cluster.c, svc_maint.c), write
 * the handler - validate the request, then either answer at once (gw_reply / gw_status /
 * gw_error: never cairn_h2srv_reply/error directly, so that JSON calls are answered too) or
 * send an IPC request with gw_ask and name, in a gw_answer_t, how its answer is turned into
 * the reply (gw_answer_body: the body from stored/raftd is the reply as is) - and add one row
 * {path, GW_UNARY, handler, arg, perm, json}. Nothing else changes.
 *
 * Adding a STREAMING method: the same, with GW_STREAM. The handler is called for every
 * message of the call with the same gw_call_t, whose .state (NULL at first) it may point at
 * its per-stream state; set the row's close to free that state (called once, when the
 * stream is gone, whatever ended it) and half_close if the client's END_STREAM matters.
 * Messages are pushed with gw_stream_send and the call is ended with gw_stream_end (never
 * cairn_h2srv_stream_* directly: the same code then serves the JSON gateway's streams); a
 * slow reader is seen with gw_stream_queued. If the row exists already with handler NULL (Watch,
 * LeaseKeepAlive, Snapshot, Observe), fill it in (moving it to the service's file).
 *
 * Adding a SERVICE: a new svc_<name>.c defining `const gw_service_t gw_svc_<name>` with its
 * rows, declared below and listed in gw_services[] in gateway.c. CMake globs the sources.
 */
#ifndef CAIRN_GW_INTERNAL_H
#define CAIRN_GW_INTERNAL_H

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#include "cairn_config.h"
#include "cairn_etcd_err.h"
#include "cairn_ipc.h"
#include "cairn_metrics.h"
#include "cairn_u64map.h"
#include "gateway.h"
#include "h2srv.h"
#include "rpc.pb-c.h"

#define CAIRN_ETCD_VERSION "3.4.23"
#define CAIRN_ETCD_CLUSTER_VERSION "3.4.0"

/* ------------------------------------------------------------------ the method table */

typedef enum { GW_UNARY = 0, GW_STREAM } gw_kind_t;

/* How the JSON gateway serves a GW_STREAM row: as etcd's grpc-gateway serves the method its
 * .proto declares, which is not always how Cairn serves it over gRPC.
 *   GW_JSON_NONE (the default): not served over JSON yet (501, code 12): a row opts in once its
 *     handler answers through gw_stream_send / gw_stream_end (Maintenance/Snapshot: set
 *     GW_JSON_SERVER_STREAM then);
 *   GW_JSON_BIDI: a client stream (Watch, LeaseKeepAlive). The body is read as
 *     a sequence of JSON requests, each handed to the handler in turn, then half_close (the
 *     gateway's CloseSend); a first request that does not convert is HTTP 500 with code 2 (the
 *     decoder's error is not a gRPC status), a later one just ends the sending. The answers
 *     are a chunked body of {"result":...} lines, headers with the first of them.
 *   GW_JSON_SERVER_STREAM: one request (errors: 400 with code 3, as unary), answers as above
 *     (Election/Observe, Maintenance/Snapshot).
 *   GW_JSON_UNARY: unary in etcd, a stream here only to see the client's reset (Lock/Lock,
 *     Election/Campaign): one request, and the one answer the handler sends before ending
 *     with status 0 is the JSON reply, as for a GW_UNARY row. */
typedef enum { GW_JSON_NONE = 0, GW_JSON_BIDI, GW_JSON_SERVER_STREAM, GW_JSON_UNARY } gw_json_kind_t;

/* What a method will need under auth (ETCD_API.md §4): READ - any authenticated user (KV:
 * read permission on the keys); WRITE - write permission on the keys it touches (a Txn: on
 * each op's keys); ADMIN - the root role. Recorded now, checked once auth exists. */
typedef enum { GW_PERM_READ = 0, GW_PERM_WRITE, GW_PERM_ADMIN } gw_perm_t;

typedef struct gw_method gw_method_t;

/* One call of a method as the handler sees it. Unary calls get a fresh one per request;
 * a stream's lives from its first message to on_close. */
typedef struct {
    cairn_call_id_t id;
    const gw_method_t *method;
    void *state; /* a stream's own state (freed by the row's close) */
} gw_call_t;

typedef void gw_handler_fn(cairn_gateway_t *g, gw_call_t *c, const uint8_t *msg, size_t len,
                           const cairn_h2_meta_t *meta);
typedef void gw_stream_fn(cairn_gateway_t *g, gw_call_t *c);

struct gw_method {
    const char *path;
    gw_kind_t kind;
    gw_handler_fn *handler;
    int arg;
    gw_perm_t perm;
    const char *json;
    gw_stream_fn *half_close, *close;
    gw_json_kind_t json_kind; /* GW_STREAM rows: how the JSON gateway serves it */
};

typedef struct {
    const char *name;
    const gw_method_t *methods;
    size_t n;
} gw_service_t;

#define GW_SERVICE(svc_name, rows) {svc_name, rows, sizeof rows / sizeof rows[0]}

extern const gw_service_t gw_svc_kv, gw_svc_cluster, gw_svc_maint, gw_svc_watch, gw_svc_lease, gw_svc_lock,
    gw_svc_election;

/* ------------------------------------------------------------------ pending requests */

typedef struct gw_pending gw_pending_t;
typedef struct gw_watch_hub gw_watch_hub_t;

/* How the answer to a pending request becomes the reply. ok: the answer arrived with code 0
 * (body: the answer's body, put back together if it came in parts; m: the whole IPC
 * message); NULL means the body is the reply as it is. fail: it failed or timed out; NULL
 * means a gRPC error to the call. */
typedef struct {
    void (*ok)(cairn_gateway_t *g, gw_pending_t *p, const uint8_t *body, size_t len, const cairn_ipc_msg_t *m);
    void (*fail)(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message);
    int proposal; /* a write in the log: failed at once when raftd reports proposals lost */
    void (*release)(void *ctx); /* called with p->ctx when the request is freed, however it ended */
} gw_answer_t;

struct gw_pending {
    uint64_t req_id;
    cairn_call_id_t call;
    const gw_answer_t *how;
    int64_t deadline;
    uint8_t *body; /* RangeRequest bytes waiting for a read index */
    size_t body_len;
    /* a large answer arriving in RESULT_PARTs (cairn_ipc.h): the bytes so far, the whole length */
    uint8_t *part;
    size_t part_len, part_total;
    int part_bad; /* 1: a part was missing, the answer cannot be rebuilt; 2: larger than gRPC allows */
    void *ctx;    /* the asker's own (how->ok/fail know what it is); not freed with the request */
};

/* The reply is the answer's body as it is (a Range or write response from stored). */
extern const gw_answer_t gw_answer_body;

typedef struct {
    uint64_t *ids;
    size_t n;
} gw_read_batch_t;

struct cairn_gateway {
    cairn_config_t *cfg;
    cairn_h2srv_t *srv;
    zsock_t *raftd, *stored;
    char origin[96];
    size_t origin_len;
    uint64_t next_id;
    const gw_method_t **methods; /* every service's rows, sorted by path */
    size_t n_methods;
    cairn_u64map_t *calls;      /* call id -> gw_call_t of a served stream */
    cairn_u64map_t *json_calls; /* call id -> response descriptor of a JSON-gateway call in flight */
    cairn_u64map_t *json_streams; /* call id -> gw_jstream_t (gateway.c) of a JSON-gateway stream */
    cairn_u64map_t *json_bodies;  /* request id -> gw_jbody_t (gateway.c): a chunked body being read whole */
    cairn_u64map_t *pending;    /* req_id -> gw_pending_t */
    cairn_u64map_t *batches;    /* read-index request id -> gw_read_batch_t */
    uint64_t *queued_reads;     /* req_ids waiting for the next read-index round */
    size_t n_queued, cap_queued;
    zmq_pollitem_t *items;
    size_t cap_items;
    int64_t next_sweep, next_status_poll;
    /* last status seen from stored */
    cairn_ipc_msg_t st;
    int64_t st_at;
    uint64_t n_failed;
    cairn_metrics_reg_t *metrics; /* /metrics: gw_metrics.c's table */
    gw_watch_hub_t *watch;        /* svc_watch.c: every watcher of this gateway, the events feed */
};

/* A pending request for call, answered as how says; its deadline from timeout_ms (the
 * call's grpc-timeout; <= 0: etcd's default). NULL when out of memory. */
gw_pending_t *gw_add_pending(cairn_gateway_t *g, cairn_call_id_t call, const gw_answer_t *how, int64_t timeout_ms);
/* Forgets the pending request req_id and frees it (nothing if it is gone). */
void gw_drop_pending(cairn_gateway_t *g, uint64_t req_id);
/* Answers a pending request with an error (how->fail, else a gRPC error); does not free it. */
void gw_fail(cairn_gateway_t *g, gw_pending_t *p, int code, const char *message);
void gw_fail_etcd(cairn_gateway_t *g, gw_pending_t *p, cairn_etcd_err_t e);
/* Answers a unary call: msg (a packed response) as gRPC, or as JSON when the call came
 * through the JSON gateway. Returns what cairn_h2srv_reply / http1_reply return. */
int gw_reply(cairn_gateway_t *g, cairn_call_id_t call, const uint8_t *msg, size_t len);
/* Ends a unary call with a gRPC status (the JSON gateway's {"error",...} for a JSON call). */
int gw_status(cairn_gateway_t *g, cairn_call_id_t call, int code, const char *message);
/* A stream's message (a packed response): over gRPC as is; on a JSON-gateway stream as one
 * chunk {"result":<JSON>}\n (GW_JSON_UNARY: kept as the reply). CAIRN_ECLOSED: gone. */
int gw_stream_send(cairn_gateway_t *g, cairn_call_id_t call, const uint8_t *msg, size_t len);
/* Ends a stream with a gRPC status (0: OK); on JSON, an error is the last chunk
 * {"error":{"grpc_code":...}} (gw_json_stream_error). The row's close follows later. */
int gw_stream_end(cairn_gateway_t *g, cairn_call_id_t call, int code, const char *message);
/* Bytes sent on the stream and not yet taken by the client (the slow-reader mark). */
size_t gw_stream_queued(const cairn_gateway_t *g, cairn_call_id_t call);
/* etcd 3.4's quota check at the member a write came to (svc_kv.c): 1 when a write of this cost
 * (bytes etcd estimates it adds; 0: not a write) would take the store past the quota - the
 * caller refuses it with NO_SPACE - after proposing this member's NOSPACE alarm. */
int gw_over_quota(cairn_gateway_t *g, int64_t cost);
/* Answers a call with no pending request with an etcd error. */
void gw_error(cairn_gateway_t *g, cairn_call_id_t call, cairn_etcd_err_t e);
/* grpc-go's answer to a body that does not parse as the method's request. */
void gw_bad_request(cairn_gateway_t *g, cairn_call_id_t call);
/* The call's grpc-timeout in ms, -1 for none. */
int64_t gw_timeout(const cairn_h2_meta_t *meta);
int gw_send_ipc(cairn_gateway_t *g, zsock_t *s, const cairn_ipc_msg_t *m);
/* Sends m (its req_id set here) to sock for call and waits for the answer as how says.
 * Answers the call itself when it cannot: TOO_MANY_REQUESTS without memory, send_err when
 * the send fails. Returns the pending request, or NULL when the call was answered. */
gw_pending_t *gw_ask(cairn_gateway_t *g, cairn_call_id_t call, const gw_answer_t *how, zsock_t *sock,
                     cairn_ipc_msg_t *m, const cairn_h2_meta_t *meta, cairn_etcd_err_t send_err);
/* A write: msg (a request of kind, cairn_req_kind_t) in a request envelope, proposed to raftd;
 * the call is answered with the response stored sends once the entry is applied. */
void gw_propose(cairn_gateway_t *g, cairn_call_id_t call, int kind, const uint8_t *msg, size_t len,
                const cairn_h2_meta_t *meta);
/* The same with the answer handled as how says (how->ok gets the packed response, e.g. a
 * TxnResponse; set the returned request's ctx for it). On failure to send, the call is
 * answered with an error here and NULL returned. */
gw_pending_t *gw_propose_with(cairn_gateway_t *g, cairn_call_id_t call, const gw_answer_t *how, int kind,
                              const uint8_t *msg, size_t len, int64_t timeout_ms);
/* A linearizable read: p->body (a RangeRequest) goes to stored once the next read-index
 * round (one per loop pass for every read queued in it) comes back. */
void gw_queue_read(cairn_gateway_t *g, gw_pending_t *p);
/* /metrics (gw_metrics.c): the gateway's own table; the page it serves adds raftd's and
 * stored's (asked with CAIRN_IPC_METRICS). */
/* extensive: --metrics extensive (adds grpc_server_handling_seconds, as etcd's) */
cairn_metrics_reg_t *gw_metrics_new(int extensive, int *rc, char *err, size_t errlen);
void gw_serve_metrics(cairn_gateway_t *g, cairn_call_id_t req);
void gw_metrics_destroy(cairn_gateway_t *g);
/* grpc_server_started_total / grpc_server_handled_total by method (and code): a call of mt
 * started; a call's status went out (h2srv's on_status); a call went away without one. */
void gw_metrics_call_started(cairn_gateway_t *g, cairn_call_id_t call, const gw_method_t *mt);
void gw_metrics_call_status(cairn_gateway_t *g, cairn_call_id_t call, int grpc_status);
void gw_metrics_call_closed(cairn_gateway_t *g, cairn_call_id_t call);
/* The watch hub (svc_watch.c): created with the gateway, its SUB socket polled by the loop
 * (gw_watch_drain when readable), gw_watch_tick every pass, HISTORY_RESP handed over. */
int gw_watch_new(cairn_gateway_t *g);
void gw_watch_destroy(cairn_gateway_t *g);
void *gw_watch_socket(cairn_gateway_t *g);
void gw_watch_drain(cairn_gateway_t *g);
void gw_watch_tick(cairn_gateway_t *g, int64_t now);
void gw_watch_on_history(cairn_gateway_t *g, const cairn_ipc_msg_t *m);
size_t gw_watch_count(const cairn_gateway_t *g);
/* The gateway's own watchers (locks, elections: svc_lock.c, svc_election.c). Events of [key,
 * end) (end NULL: the key only; end_len 0 with end set: every key >= key) from start_rev on
 * (<= 0: from now) come to fn with the same guarantees as a client's watcher: in revision
 * order, no duplicate, no gap, a revision whole; rev is the last revision the call covers.
 * on_cancel (may be NULL) is called once if start_rev fell below a compaction (the watcher is
 * gone then). gw_iwatch_cancel may be called from inside fn or on_cancel; the handle is set to
 * NULL and the watcher freed at the next tick. */
typedef struct gw_iwatch gw_iwatch_t;
typedef void gw_iwatch_fn(cairn_gateway_t *g, void *arg, const Mvccpb__Event *const *ev, size_t n, int64_t rev);
typedef void gw_iwatch_cancel_fn(cairn_gateway_t *g, void *arg, int64_t compact_rev);
gw_iwatch_t *gw_iwatch_new(cairn_gateway_t *g, const uint8_t *key, size_t key_len, const uint8_t *end, size_t end_len,
                           int64_t start_rev, gw_iwatch_fn *fn, gw_iwatch_cancel_fn *on_cancel, void *arg);
void gw_iwatch_cancel(cairn_gateway_t *g, gw_iwatch_t **w);
/* clientv3/concurrency's Mutex and Election run in the gateway (svc_lock.c), used by the
 * v3lock and v3election services (svc_lock.c, svc_election.c). */
enum { GW_CC_LOCK, GW_CC_CAMPAIGN, GW_CC_PROCLAIM, GW_CC_RESIGN };
typedef struct {
    const uint8_t *name, *key, *value;
    size_t name_len, key_len, value_len;
    int64_t lease, rev;
} gw_cc_args_t;
void gw_cc_start(cairn_gateway_t *g, gw_call_t *c, int kind, const gw_cc_args_t *a, const cairn_h2_meta_t *meta);
void gw_cc_half_close(cairn_gateway_t *g, gw_call_t *c);
void gw_cc_close(cairn_gateway_t *g, gw_call_t *c);
/* The end of the range of keys with prefix k (etcd's GetPrefixRangeEnd) into out (n bytes). */
size_t gw_cc_prefix_end(const uint8_t *k, size_t n, uint8_t *out);
/* A linearizable Range of the first (last = 0) or last (last = 1) key by create revision under
 * pfx, below max_create_rev when > 0; answered as how says, with ctx on the request. */
gw_pending_t *gw_cc_range_top(cairn_gateway_t *g, cairn_call_id_t call, const gw_answer_t *how, void *ctx,
                              const uint8_t *pfx, size_t pfx_len, int last, int64_t max_create_rev,
                              int64_t timeout_ms);
/* etcd's answer for a plain Go error: code 2 (Unknown) with its text. */
void gw_cc_error(cairn_gateway_t *g, cairn_call_id_t call, const char *message);
/* The last revision the events feed brought (0: none yet). */
int64_t gw_watch_revision(const cairn_gateway_t *g);
/* The response header every answer carries: cluster, member, last revision and term seen. */
void gw_fill_header(cairn_gateway_t *g, Etcdserverpb__ResponseHeader *h);

#endif
