/* cairn_url.h - the one parser of the URLs Cairn is configured with and told about.
 *
 * Listen and advertise URLs (--listen-client-urls, --initial-cluster, ...), the peer URLs of
 * MemberAdd/MemberUpdate, and gatewayd's listen addresses are all checked here, the way
 * etcd's types.NewURLs checks them, so that a URL one daemon accepts the others accept too:
 *
 *   scheme://host:port
 *
 * - scheme: http, https, unix or unixs, in any case; lower-cased in the normal form, as Go's
 *   url.Parse does (the normal form is what etcd hashes into member IDs).
 * - host: an IPv4 address or a name as written, or an IPv6 address in brackets ([::1]); it
 *   may be empty (http://:2379, "every interface") unless CAIRN_URL_NEED_HOST.
 * - port: decimal, 0 to 65535, and required (etcd lets net.SplitHostPort take "host:").
 * - no path, not even "/" (etcd: "URL must not contain a path"); no query, fragment or user
 *   information either (stricter than etcd: none of them means anything for an address).
 * - Surrounding white space is trimmed (etcd trims each item of a comma-separated list).
 *
 * Usage:
 *
 *   cairn_url_t u;
 *   char why[256];
 *   if (cairn_url_parse(&u, text, strlen(text), CAIRN_URL_NEED_HOST, why, sizeof why) < 0)
 *       ... why: "URL address does not have the form \"host:port\": http://a" ...
 *   if (cairn_url_is_tls(&u)) ...
 *   cairn_url_zmq_endpoint(&u, ep, sizeof ep);  ->  "tcp://10.0.0.1:2380"
 */
#ifndef CAIRN_URL_H
#define CAIRN_URL_H

#include <stdbool.h>
#include <stddef.h>

/* A host name holds at most 253 bytes (RFC 1035); an address URL with no path, query or
 * user information fits easily in the rest. */
#define CAIRN_URL_HOST_MAX 256
#define CAIRN_URL_MAX 512

typedef enum { CAIRN_URL_HTTP = 0, CAIRN_URL_HTTPS, CAIRN_URL_UNIX, CAIRN_URL_UNIXS } cairn_url_scheme_t;

/* Flags of cairn_url_parse. */
enum {
    CAIRN_URL_NEED_HOST = 1,   /* others connect to this URL, so the host must be given */
    CAIRN_URL_IGNORE_PATH = 2, /* a path ("/...") is tolerated and left out of host and port:
                                  for peer URLs an older raftd let into the raft log */
};

typedef struct {
    char text[CAIRN_URL_MAX];       /* normal form: trimmed, scheme lower-cased, else as written */
    cairn_url_scheme_t scheme;
    char host[CAIRN_URL_HOST_MAX];  /* without brackets; "" when not given */
    bool bracketed;                 /* the host was written in brackets (an IPv6 address) */
    int port;                       /* 0 to 65535 */
} cairn_url_t;

/* Parses len bytes of text into *u. 0, or CAIRN_EINVAL with why (may be NULL) saying what is
 * wrong, in etcd's words where etcd has them, followed by ": <the URL>". */
int cairn_url_parse(cairn_url_t *u, const char *text, size_t len, unsigned flags, char *why, size_t wl);

/* The scheme of a URL's text, in any case, without checking the rest: a cairn_url_scheme_t,
 * or CAIRN_EINVAL when it is none of the four. */
int cairn_url_scheme(const char *text);

/* https:// and unixs://: the ones that ask for TLS. */
bool cairn_url_is_tls(const cairn_url_t *u);
/* The same on a URL's text, by its scheme alone. */
bool cairn_url_text_is_tls(const char *text);

/* The ZeroMQ endpoint of a peer URL: "tcp://host:port", "tcp://[v6]:port" (the socket needs
 * ZMQ_IPV6), with localhost as 127.0.0.1 because ZeroMQ binds addresses, not names. 0, or
 * CAIRN_ETOOBIG when buf is short. */
int cairn_url_zmq_endpoint(const cairn_url_t *u, char *buf, size_t len);

#endif
