/* cairn_err.h - error codes shared by every Cairn module.
 *
 * Errors are negative ints (libuv style): a function returns 0 (or a non-negative count)
 * on success and one of the CAIRN_E* constants on failure. The constants and their
 * strings are generated from the single X-macro below so they can never drift apart.
 */
#ifndef CAIRN_ERR_H
#define CAIRN_ERR_H

#include <stddef.h>

#define CAIRN_ERRNO_MAP(X)                                                   \
    X(NOMEM, "out of memory")                                                \
    X(INVAL, "invalid argument")                                             \
    X(IO, "input/output error")                                              \
    X(NOSPC, "no space left on device")                                      \
    X(CORRUPT, "data is corrupt")                                            \
    X(TRUNCATED, "data is truncated")                                        \
    X(PROTO, "malformed message")                                            \
    X(VERSION, "unsupported protocol version")                               \
    X(UNKNOWN_MSG, "unknown message type")                                   \
    X(TOOBIG, "message too large")                                           \
    X(NOTFOUND, "not found")                                                 \
    X(EXISTS, "already exists")                                              \
    X(COMPACTED, "required revision has been compacted")                     \
    X(FUTURE_REV, "required revision is a future revision")                  \
    X(TIMEOUT, "timed out")                                                  \
    X(AGAIN, "resource temporarily unavailable")                             \
    X(CLOSED, "closed")                                                      \
    X(NOT_LEADER, "not leader")                                              \
    X(CONFIG, "configuration error")                                         \
    X(TLS, "TLS error")                                                      \
    X(STATE, "operation not valid in the current state")                     \
    X(UNREACHABLE, "peer not connected")

typedef enum {
    CAIRN_OK = 0,
    CAIRN_ERR_BASE_ = -1000,
#define CAIRN_ERR_ENUM_(name, str) CAIRN_E##name,
    CAIRN_ERRNO_MAP(CAIRN_ERR_ENUM_)
#undef CAIRN_ERR_ENUM_
    CAIRN_ERR_END_
} cairn_err_t;

/* Returns a static, human-readable string for a CAIRN_E* code (or for 0). */
const char *cairn_strerror(int err);

/* Formats a sentence into a caller's error buffer (the errbuf/errlen pair many constructors
 * take); does nothing when errbuf is NULL or errlen is 0. */
void cairn_errbuf_set(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
