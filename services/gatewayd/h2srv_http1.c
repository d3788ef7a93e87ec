/* h2srv_http1.c - see h2srv_http1.h. Strict where laxness would let a request be read two
 * ways (conflicting Content-Length, any Transfer-Encoding), lenient about bare LF line ends
 * and header whitespace, like most servers. */
#include "h2srv_http1.h"

#include <string.h>
#include <strings.h>

static int is_tchar(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Copies [v, v+n) trimmed of spaces/tabs into out; 0 if it fits. */
static int copy_trim(const uint8_t *v, size_t n, char *out, size_t cap)
{
    while (n && (v[0] == ' ' || v[0] == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= cap)
        return -1;
    memcpy(out, v, n);
    out[n] = 0;
    return 0;
}

/* Does the comma-separated token list [v, v+n) contain tok (case-insensitive)? */
static int has_token(const uint8_t *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp((const char *)v + s, tok, tl) == 0)
            return 1;
    }
    return 0;
}

static long fail(cairn_h1_req_t *req, int status)
{
    req->err_status = status;
    return -1;
}

long cairn_h1_parse(const uint8_t *buf, size_t len, size_t max_body, cairn_h1_req_t *req)
{
    req->method[0] = req->path[0] = req->host[0] = req->authorization[0] = 0;
    req->version_minor = 1;
    req->keep_alive = 0;
    req->expect_continue = 0;
    req->header_len = 0;
    req->content_length = 0;
    req->chunked = 0;
    req->headers_done = 0;
    req->err_status = 0;

    size_t p = 0;
    while (p < len && (buf[p] == '\r' || buf[p] == '\n'))
        p++;
    if (p > 64)
        return fail(req, 400);
    /* find the end of the header block */
    size_t end = 0;
    for (size_t i = p; i < len; i++) {
        if (buf[i] == '\n' && ((i >= 1 && buf[i - 1] == '\n') || (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n'))) {
            end = i + 1;
            break;
        }
        if (i - p >= CAIRN_H1_MAX_HEADER)
            return fail(req, 431);
    }
    if (!end) {
        /* Reject an obviously non-HTTP first line early instead of waiting for 16 KiB. */
        for (size_t i = p; i < len && i - p < 16; i++) {
            if (buf[i] == ' ')
                break;
            if (!is_tchar(buf[i]))
                return fail(req, 400);
        }
        if (len - p >= CAIRN_H1_MAX_HEADER)
            return fail(req, 431);
        return 0;
    }

    /* request line: METHOD SP target SP HTTP/1.x */
    size_t q = p;
    while (q < end && is_tchar(buf[q]))
        q++;
    if (q == p || q - p >= sizeof req->method || buf[q] != ' ')
        return fail(req, 400);
    memcpy(req->method, buf + p, q - p);
    req->method[q - p] = 0;
    size_t t = ++q;
    while (q < end && buf[q] > 0x20 && buf[q] != 0x7f)
        q++;
    if (q == t || buf[q] != ' ')
        return fail(req, 400);
    if (q - t >= sizeof req->path)
        return fail(req, 414);
    memcpy(req->path, buf + t, q - t);
    req->path[q - t] = 0;
    q++;
    if (end - q < 8 || memcmp(buf + q, "HTTP/", 5) != 0)
        return fail(req, 400);
    if (memcmp(buf + q, "HTTP/1.1", 8) == 0)
        req->version_minor = 1;
    else if (memcmp(buf + q, "HTTP/1.0", 8) == 0)
        req->version_minor = 0;
    else
        return fail(req, 505);
    q += 8;
    if (q < end && buf[q] == '\r')
        q++;
    if (q >= end || buf[q] != '\n')
        return fail(req, 400);
    q++;

    int conn_close = 0, conn_keep = 0, have_cl = 0;
    while (q < end) {
        size_t ls = q;
        while (q < end && buf[q] != '\n')
            q++;
        size_t le = q; /* at '\n' */
        q++;
        if (le > ls && buf[le - 1] == '\r')
            le--;
        if (le == ls)
            break; /* blank line */
        if (buf[ls] == ' ' || buf[ls] == '\t')
            return fail(req, 400); /* obsolete line folding */
        size_t c = ls;
        while (c < le && is_tchar(buf[c]))
            c++;
        if (c == ls || c >= le || buf[c] != ':')
            return fail(req, 400);
        const char *name = (const char *)buf + ls;
        size_t nl = c - ls;
        const uint8_t *v = buf + c + 1;
        size_t vn = le - c - 1;
        for (size_t i = 0; i < vn; i++)
            if ((v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
                return fail(req, 400);
#define NAME_IS(s) (nl == sizeof(s) - 1 && strncasecmp(name, s, nl) == 0)
        if (NAME_IS("content-length")) {
            char tmp[32];
            if (copy_trim(v, vn, tmp, sizeof tmp) != 0 || !tmp[0])
                return fail(req, 400);
            size_t val = 0;
            for (char *d = tmp; *d; d++) {
                if (*d < '0' || *d > '9')
                    return fail(req, 400);
                if (val > (SIZE_MAX - 9) / 10)
                    return fail(req, 413);
                val = val * 10 + (size_t)(*d - '0');
            }
            if (have_cl && val != req->content_length)
                return fail(req, 400);
            have_cl = 1;
            req->content_length = val;
        } else if (NAME_IS("transfer-encoding")) {
            char tmp[32];
            if (copy_trim(v, vn, tmp, sizeof tmp) != 0 || strcasecmp(tmp, "chunked") != 0 || req->chunked)
                return fail(req, 501); /* gzip, "chunked, chunked"...: not served */
            req->chunked = 1;
        } else if (NAME_IS("connection")) {
            if (has_token(v, vn, "close"))
                conn_close = 1;
            if (has_token(v, vn, "keep-alive"))
                conn_keep = 1;
        } else if (NAME_IS("expect")) {
            if (has_token(v, vn, "100-continue"))
                req->expect_continue = 1;
            else
                return fail(req, 417);
        } else if (NAME_IS("host")) {
            if (copy_trim(v, vn, req->host, sizeof req->host) != 0)
                return fail(req, 400);
        } else if (NAME_IS("authorization")) {
            if (copy_trim(v, vn, req->authorization, sizeof req->authorization) != 0)
                return fail(req, 431);
        }
#undef NAME_IS
    }
    req->keep_alive = req->version_minor == 1 ? !conn_close : (conn_keep && !conn_close);
    req->header_len = end;
    if (req->chunked) {
        /* both framings: which one ends the body is ambiguous (request smuggling) */
        if (have_cl || req->version_minor == 0)
            return fail(req, 400);
        req->content_length = 0;
        return (long)end; /* the headers: the chunks are read as they come */
    }
    if (req->content_length > max_body)
        return fail(req, 413);
    if (len - end < req->content_length) {
        req->headers_done = 1;
        return 0;
    }
    return (long)(end + req->content_length);
}

/* The end of the line starting at p (the index of its '\n'), or -1 if it is not all there;
 * *le: where its content ends (before "\r\n" or "\n"). */
static long line_end(const uint8_t *buf, size_t len, size_t p, size_t *le)
{
    for (size_t i = p; i < len; i++) {
        if (buf[i] == '\n') {
            *le = i > p && buf[i - 1] == '\r' ? i - 1 : i;
            return (long)i;
        }
        if (i - p >= CAIRN_H1_MAX_HEADER)
            return -2;
    }
    return -1;
}

long cairn_h1_chunk(const uint8_t *buf, size_t len, size_t max_chunk, size_t *data_off, size_t *data_len, int *last)
{
    *data_off = *data_len = 0;
    *last = 0;
    size_t le;
    long nl = line_end(buf, len, 0, &le);
    if (nl == -2)
        return -1;
    if (nl < 0)
        return 0;
    size_t size = 0, i = 0;
    for (; i < le; i++) {
        uint8_t c = buf[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            break;
        if (size > (SIZE_MAX >> 4))
            return -1;
        size = size * 16 + (size_t)d;
    }
    if (i == 0 || (i < le && buf[i] != ';' && buf[i] != ' ' && buf[i] != '\t'))
        return -1; /* no size, or junk after it that is not an extension */
    size_t p = (size_t)nl + 1;
    if (size == 0) {
        /* trailers (ignored) up to a blank line */
        for (;;) {
            nl = line_end(buf, len, p, &le);
            if (nl == -2)
                return -1;
            if (nl < 0)
                return 0;
            size_t start = p;
            p = (size_t)nl + 1;
            if (le == start) {
                *last = 1;
                return (long)p;
            }
            if (p > 2 * CAIRN_H1_MAX_HEADER)
                return -1;
        }
    }
    if (size > max_chunk)
        return -1;
    if (len - p < size + 1)
        return 0;
    size_t q = p + size;
    if (buf[q] == '\r') {
        if (len - q < 2)
            return 0;
        if (buf[q + 1] != '\n')
            return -1;
        q += 2;
    } else if (buf[q] == '\n') {
        q += 1;
    } else {
        return -1;
    }
    *data_off = p;
    *data_len = size;
    return (long)q;
}

const char *cairn_h1_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
