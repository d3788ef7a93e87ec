/* h2srv_http1.h - the request parser of h2srv's minimal HTTP/1.1 server (internal).
 *
 * Just enough HTTP/1.1 for /health, /version, /metrics and etcd's JSON gateway: a request
 * line, headers, and a body framed by Content-Length or by "Transfer-Encoding: chunked" (an
 * interactive JSON watch: curl -T - sends each request as it is typed), whose chunks
 * cairn_h1_chunk reads one at a time; any other Transfer-Encoding is refused with 501, both
 * framings at once with 400. Nothing here allocates. */
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
    size_t content_length;   /* 0 when chunked */
    int chunked;             /* Transfer-Encoding: chunked: the body follows the headers in chunks */
    int headers_done;        /* headers parsed, body still incomplete */
    int err_status;          /* on error: the HTTP status to answer before closing */
} cairn_h1_req_t;

/* Parses the request at the start of buf. Returns the full length (headers + body) when
 * the request is complete, 0 when more bytes are needed (headers_done tells whether the
 * headers are already in, e.g. to send "100 Continue"), or -1 with req->err_status set.
 * Leading empty lines are skipped and counted in the returned length and header_len. */
long cairn_h1_parse(const uint8_t *buf, size_t len, size_t max_body, cairn_h1_req_t *req);

/* One chunk of a chunked body at the start of buf: "<hex size>[;ext]" CRLF, the data, CRLF;
 * the last one is size 0 followed by optional trailer lines and a blank line. Returns the bytes
 * it takes (data at buf + *data_off, *data_len bytes; *last set for the last chunk), 0 when more
 * bytes are needed, -1 when malformed or when a chunk's size exceeds max_chunk (a client may not
 * make us buffer more than that). Bare LF line ends are accepted, as in headers. */
long cairn_h1_chunk(const uint8_t *buf, size_t len, size_t max_chunk, size_t *data_off, size_t *data_len, int *last);

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *cairn_h1_reason(int status);

#endif
