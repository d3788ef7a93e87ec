/* h2srv_http1.h - the request parser of h2srv's minimal HTTP/1.1 server (internal).
 *
 * Just enough HTTP/1.1 for /health, /version, /metrics and etcd's JSON gateway: a request
 * line, headers, and a body framed by Content-Length. Transfer-Encoding (chunked uploads)
 * is refused with 501; nothing here allocates. */
#ifndef CAIRN_H2SRV_HTTP1_H
#define CAIRN_H2SRV_HTTP1_H

#include <stddef.h>
#include <stdint.h>

#define CAIRN_H1_MAX_HEADER 16384 /* request line + headers; beyond: 431 */

typedef struct {
    char method[16];
    char path[8192];
    char host[256];
    char authorization[2048];
    int version_minor;       /* 0 or 1 */
    int keep_alive;          /* after this request, keep the connection */
    int expect_continue;     /* "Expect: 100-continue" */
    size_t header_len;       /* bytes of request line + headers (incl. blank line) */
    size_t content_length;
    int headers_done;        /* headers parsed, body still incomplete */
    int err_status;          /* on error: the HTTP status to answer before closing */
} cairn_h1_req_t;

/* Parses the request at the start of buf. Returns the full length (headers + body) when
 * the request is complete, 0 when more bytes are needed (headers_done tells whether the
 * headers are already in, e.g. to send "100 Continue"), or -1 with req->err_status set.
 * Leading empty lines are skipped and counted in the returned length and header_len. */
long cairn_h1_parse(const uint8_t *buf, size_t len, size_t max_body, cairn_h1_req_t *req);

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *cairn_h1_reason(int status);

#endif
