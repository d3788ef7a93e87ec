/* cairn_etcd_err.h - the gRPC status codes and etcd's error texts, each written once.
 *
 * A client of etcd sees an error as a gRPC status (a number) and a grpc-message (a text),
 * and clients match on the text (ETCD_API.md §3). Both come from the two X-macro tables
 * below, so a code and its text can never drift apart and no file spells them out again:
 *
 *   CAIRN_GRPC_CODE_MAP  X(NAME, number)            -> enum constants CAIRN_GRPC_<NAME>
 *   CAIRN_ETCD_ERR_MAP   X(SYMBOL, CODE, "text")    -> enum constants CAIRN_ETCD_<SYMBOL>,
 *                                                      with CAIRN_GRPC_<CODE> and the exact text
 *
 * Use: cairn_h2srv_error(srv, call, cairn_etcd_err_code(e), cairn_etcd_err_text(e)), or a
 * module's own one-argument helper around that pair. gRPC-level texts that are not etcd's
 * (grpc-go's "grpc: error unmarshalling request...", "unknown method ...") stay with the code
 * that produces them, but take their number from CAIRN_GRPC_*.
 *
 * The etcd rows are etcd v3.4.23's (rpctypes/error.go), in ETCD_API.md §3's order; the rows
 * after them are texts Cairn says where etcd would say something else or nothing (every text
 * still begins "etcdserver: ", because clients expect that prefix). Two rows use a constant
 * from another header (CAIRN_KVCHECK_MAX_TXN_DEPTH, CAIRN_PEER_TLS_REFUSED): the table is
 * expanded in cairn_etcd_err.c only, which includes them.
 *
 * Adding an error: one row here (tests/unit/test_etcd_err.c checks the etcd rows against its
 * own copy of ETCD_API.md §3, so an etcd row also goes there).
 */
#ifndef CAIRN_ETCD_ERR_H
#define CAIRN_ETCD_ERR_H

/* gRPC status codes (grpc/codes), all of them. */
#define CAIRN_GRPC_CODE_MAP(X) \
    X(OK, 0)                   \
    X(CANCELED, 1)             \
    X(UNKNOWN, 2)              \
    X(INVALID_ARGUMENT, 3)     \
    X(DEADLINE_EXCEEDED, 4)    \
    X(NOT_FOUND, 5)            \
    X(ALREADY_EXISTS, 6)       \
    X(PERMISSION_DENIED, 7)    \
    X(RESOURCE_EXHAUSTED, 8)   \
    X(FAILED_PRECONDITION, 9)  \
    X(ABORTED, 10)             \
    X(OUT_OF_RANGE, 11)        \
    X(UNIMPLEMENTED, 12)       \
    X(INTERNAL, 13)            \
    X(UNAVAILABLE, 14)         \
    X(DATA_LOSS, 15)           \
    X(UNAUTHENTICATED, 16)

typedef enum {
#define CAIRN_GRPC_ENUM_(name, num) CAIRN_GRPC_##name = num,
    CAIRN_GRPC_CODE_MAP(CAIRN_GRPC_ENUM_)
#undef CAIRN_GRPC_ENUM_
} cairn_grpc_code_t;

/* clang-format off */
#define CAIRN_ETCD_ERR_MAP(X)                                                                                       \
    /* InvalidArgument */                                                                                           \
    X(EMPTY_KEY, INVALID_ARGUMENT, "etcdserver: key is not provided")                                               \
    X(KEY_NOT_FOUND, INVALID_ARGUMENT, "etcdserver: key not found")                                                 \
    X(VALUE_PROVIDED, INVALID_ARGUMENT, "etcdserver: value is provided")                                            \
    X(LEASE_PROVIDED, INVALID_ARGUMENT, "etcdserver: lease is provided")                                            \
    X(TOO_MANY_OPS, INVALID_ARGUMENT, "etcdserver: too many operations in txn request")                             \
    X(DUPLICATE_KEY, INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")                            \
    X(REQUEST_TOO_LARGE, INVALID_ARGUMENT, "etcdserver: request is too large")                                      \
    X(USER_EMPTY, INVALID_ARGUMENT, "etcdserver: user name is empty")                                               \
    X(ROLE_EMPTY, INVALID_ARGUMENT, "etcdserver: role name is empty")                                               \
    X(AUTH_FAILED, INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")              \
    X(INVALID_AUTH_MGMT, INVALID_ARGUMENT, "etcdserver: invalid auth management")                                   \
    X(AUTH_OLD_REVISION, INVALID_ARGUMENT, "etcdserver: revision of auth store is old")                             \
    X(BAD_PEER_URLS, INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")                                 \
    /* OutOfRange */                                                                                                \
    X(COMPACTED, OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")                            \
    X(FUTURE_REV, OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")                         \
    X(LEASE_TTL_TOO_LARGE, OUT_OF_RANGE, "etcdserver: too large lease TTL")                                         \
    /* ResourceExhausted */                                                                                         \
    X(NO_SPACE, RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")                                    \
    X(TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED, "etcdserver: too many requests")                                       \
    /* NotFound */                                                                                                  \
    X(LEASE_NOT_FOUND, NOT_FOUND, "etcdserver: requested lease not found")                                          \
    X(MEMBER_NOT_FOUND, NOT_FOUND, "etcdserver: member not found")                                                  \
    /* FailedPrecondition */                                                                                        \
    X(LEASE_EXISTS, FAILED_PRECONDITION, "etcdserver: lease already exists")                                        \
    X(MEMBER_EXISTS, FAILED_PRECONDITION, "etcdserver: member ID already exist")                                    \
    X(PEER_URL_EXISTS, FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")                                 \
    X(NOT_ENOUGH_STARTED, FAILED_PRECONDITION,                                                                      \
      "etcdserver: re-configuration failed due to not enough started members")                                      \
    X(MEMBER_NOT_LEARNER, FAILED_PRECONDITION, "etcdserver: can only promote a learner member")                     \
    X(LEARNER_NOT_READY, FAILED_PRECONDITION,                                                                       \
      "etcdserver: can only promote a learner member which is in sync with leader")                                 \
    X(TOO_MANY_LEARNERS, FAILED_PRECONDITION, "etcdserver: too many learner members in cluster")                    \
    X(ROOT_USER_MISSING, FAILED_PRECONDITION, "etcdserver: root user does not exist")                               \
    X(ROOT_ROLE_MISSING, FAILED_PRECONDITION, "etcdserver: root user does not have root role")                      \
    X(USER_EXISTS, FAILED_PRECONDITION, "etcdserver: user name already exists")                                     \
    X(USER_NOT_FOUND, FAILED_PRECONDITION, "etcdserver: user name not found")                                       \
    X(ROLE_EXISTS, FAILED_PRECONDITION, "etcdserver: role name already exists")                                     \
    X(ROLE_NOT_FOUND, FAILED_PRECONDITION, "etcdserver: role name not found")                                       \
    X(ROLE_NOT_GRANTED, FAILED_PRECONDITION, "etcdserver: role is not granted to the user")                         \
    X(PERMISSION_NOT_GRANTED, FAILED_PRECONDITION, "etcdserver: permission is not granted to the role")             \
    X(AUTH_NOT_ENABLED, FAILED_PRECONDITION, "etcdserver: authentication is not enabled")                           \
    X(NOT_LEADER, FAILED_PRECONDITION, "etcdserver: not leader")                                                    \
    X(BAD_LEADER_TRANSFEREE, FAILED_PRECONDITION, "etcdserver: bad leader transferee")                              \
    /* the rest */                                                                                                  \
    X(PERMISSION_DENIED, PERMISSION_DENIED, "etcdserver: permission denied")                                        \
    X(INVALID_AUTH_TOKEN, UNAUTHENTICATED, "etcdserver: invalid auth token")                                        \
    X(CORRUPT, DATA_LOSS, "etcdserver: corrupt cluster")                                                            \
    X(WATCH_CANCELED, CANCELED, "etcdserver: watch canceled")                                                       \
    /* Unavailable */                                                                                               \
    X(NO_LEADER, UNAVAILABLE, "etcdserver: no leader")                                                              \
    X(LEADER_CHANGED, UNAVAILABLE, "etcdserver: leader changed")                                                    \
    X(NOT_CAPABLE, UNAVAILABLE, "etcdserver: not capable")                                                          \
    X(STOPPED, UNAVAILABLE, "etcdserver: server stopped")                                                           \
    X(TIMEOUT, UNAVAILABLE, "etcdserver: request timed out")                                                        \
    X(TIMEOUT_LEADER_FAIL, UNAVAILABLE, "etcdserver: request timed out, possibly due to previous leader failure")   \
    X(TIMEOUT_CONN_LOST, UNAVAILABLE, "etcdserver: request timed out, possibly due to connection lost")             \
    X(TIMEOUT_WAIT_APPLIED, UNAVAILABLE,                                                                            \
      "etcdserver: request timed out, waiting for the applied index took too long")                                 \
    X(UNHEALTHY, UNAVAILABLE, "etcdserver: unhealthy cluster")                                                      \
    X(LEARNER_NOT_SUPPORTED, UNAVAILABLE, "etcdserver: rpc not supported for learner")                              \
    /* etcd's too (ErrTimeoutLeaderTransfer), not listed in ETCD_API.md */                                          \
    X(TIMEOUT_LEADER_TRANSFER, UNAVAILABLE, "etcdserver: request timed out, leader transfer took too long")         \
    /* Cairn's own */                                                                                               \
    X(TXN_TOO_DEEP, INVALID_ARGUMENT, /* etcd has no depth limit: see cairn_kvcheck.c */                            \
      "etcdserver: txn nested too deeply (more than " CAIRN_ETCD_STR_(CAIRN_KVCHECK_MAX_TXN_DEPTH) " levels)")      \
    X(PEER_TLS_REFUSED, INVALID_ARGUMENT, "etcdserver: " CAIRN_PEER_TLS_REFUSED)                                    \
    X(INTERNAL, INTERNAL, "etcdserver: internal error")                                                             \
    X(STORAGE, INTERNAL, "etcdserver: storage error")                                                               \
    X(ANSWER_LOST, UNAVAILABLE, "etcdserver: the answer was lost inside the node (a queue was full); retry")         \
    X(ANSWER_TOO_LARGE, RESOURCE_EXHAUSTED,                                                                         \
      "etcdserver: the answer is larger than gRPC's 2 GiB; ask for less (a limit or a smaller range)")
/* clang-format on */
#define CAIRN_ETCD_STR_(x) CAIRN_ETCD_STR__(x)
#define CAIRN_ETCD_STR__(x) #x

typedef enum {
    CAIRN_ETCD_NONE = 0, /* no error */
#define CAIRN_ETCD_ENUM_(sym, code, text) CAIRN_ETCD_##sym,
    CAIRN_ETCD_ERR_MAP(CAIRN_ETCD_ENUM_)
#undef CAIRN_ETCD_ENUM_
    CAIRN_ETCD_ERR_END_ /* one past the last */
} cairn_etcd_err_t;

/* The gRPC code of an etcd error; CAIRN_GRPC_UNKNOWN for a value outside the table,
 * CAIRN_GRPC_OK for CAIRN_ETCD_NONE. */
int cairn_etcd_err_code(cairn_etcd_err_t e);
/* Its exact text (static); "" for CAIRN_ETCD_NONE, "etcdserver: unknown error" outside the table. */
const char *cairn_etcd_err_text(cairn_etcd_err_t e);
/* Its symbol without the prefix ("TOO_MANY_REQUESTS"); NULL outside the table. */
const char *cairn_etcd_err_name(cairn_etcd_err_t e);
/* The error whose text is text, or CAIRN_ETCD_NONE. */
cairn_etcd_err_t cairn_etcd_err_find(const char *text);
/* The text and, when code is not NULL, the code: msg = cairn_etcd_err(E, &code). */
const char *cairn_etcd_err(cairn_etcd_err_t e, int *code);
/* A code's name ("RESOURCE_EXHAUSTED"); NULL for a number that is not a gRPC code. */
const char *cairn_grpc_code_name(int code);

#endif
