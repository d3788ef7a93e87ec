/* cairn_url.c - see cairn_url.h.
 *
 * The checks run in the order etcd's types.NewURLs runs them (scheme, then "host:port",
 * then path), so that a URL wrong in several ways gets the message etcd would give. */
#include "cairn_url.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cairn_err.h"

static const char *const k_schemes[] = {"http", "https", "unix", "unixs"};

static int bad(char *why, size_t wl, const char *text, const char *what)
{
    cairn_errbuf_set(why, wl, "%s: %s", what, text);
    return CAIRN_EINVAL;
}

static int scheme_of(const char *s, size_t n)
{
    for (int i = 0; i < 4; i++)
        if (strlen(k_schemes[i]) == n && !strncasecmp(s, k_schemes[i], n))
            return i;
    return CAIRN_EINVAL;
}

int cairn_url_scheme(const char *text)
{
    const char *sep = text ? strstr(text, "://") : NULL;
    return sep ? scheme_of(text, (size_t)(sep - text)) : CAIRN_EINVAL;
}

int cairn_url_parse(cairn_url_t *u, const char *in, size_t len, unsigned flags, char *why, size_t wl)
{
    if (!u || !in)
        return bad(why, wl, "(null)", "invalid argument");
    while (len && isspace((unsigned char)*in))
        in++, len--;
    while (len && isspace((unsigned char)in[len - 1]))
        len--;
    memset(u, 0, sizeof *u);
    if (len >= sizeof u->text) {
        cairn_errbuf_set(why, wl, "URL is longer than %d bytes: %.60s...", CAIRN_URL_MAX - 1, in);
        return CAIRN_EINVAL;
    }
    char *s = u->text;
    memcpy(s, in, len);
    s[len] = 0;
    if (memchr(s, 0, len))
        return bad(why, wl, s, "URL must not contain a NUL byte");

    char *sep = strstr(s, "://");
    if (sep) /* before the check, so that its message shows the scheme as Go would */
        for (char *p = s; p < sep; p++)
            *p = (char)tolower((unsigned char)*p);
    int sc = sep ? scheme_of(s, (size_t)(sep - s)) : CAIRN_EINVAL;
    if (sc < 0)
        return bad(why, wl, s, "URL scheme must be http, https, unix, or unixs");
    u->scheme = (cairn_url_scheme_t)sc;

    const char *auth = sep + 3;
    size_t al = strcspn(auth, "/?#");
    if (auth[al] == '/' && !(flags & CAIRN_URL_IGNORE_PATH))
        return bad(why, wl, s, "URL must not contain a path");
    if (auth[al] && auth[al] != '/')
        return bad(why, wl, s, "URL must not contain a query or fragment");
    if (memchr(auth, '@', al))
        return bad(why, wl, s, "URL must not contain user information");

    /* host:port, the host of an IPv6 address in brackets (net.SplitHostPort) */
    const char *host, *hend, *port;
    if (*auth == '[') {
        hend = memchr(auth, ']', al);
        if (!hend || hend[1] != ':')
            return bad(why, wl, s, "URL address does not have the form \"host:port\"");
        host = auth + 1;
        port = hend + 2;
        u->bracketed = true;
    } else {
        hend = NULL;
        for (const char *p = auth; p < auth + al; p++)
            if (*p == ':') {
                if (hend) /* a second colon: an IPv6 address without its brackets */
                    return bad(why, wl, s, "URL address does not have the form \"host:port\"");
                hend = p;
            }
        if (!hend)
            return bad(why, wl, s, "URL address does not have the form \"host:port\"");
        host = auth;
        port = hend + 1;
    }
    size_t pl = (size_t)(auth + al - port);
    if (pl == 0 || pl > 5 || strspn(port, "0123456789") < pl)
        return bad(why, wl, s, "URL port must be a number from 0 to 65535");
    int pn = 0;
    for (size_t i = 0; i < pl; i++)
        pn = pn * 10 + (port[i] - '0');
    if (pn > 65535)
        return bad(why, wl, s, "URL port must be a number from 0 to 65535");
    u->port = pn;
    if ((flags & CAIRN_URL_NEED_HOST) && hend == host)
        return bad(why, wl, s, "URL must name a host that others can reach");
    size_t hl = (size_t)(hend - host);
    if (hl >= sizeof u->host)
        return bad(why, wl, s, "URL host is too long");
    memcpy(u->host, host, hl);
    u->host[hl] = 0;
    return 0;
}

bool cairn_url_is_tls(const cairn_url_t *u) { return u && (u->scheme == CAIRN_URL_HTTPS || u->scheme == CAIRN_URL_UNIXS); }

bool cairn_url_text_is_tls(const char *text)
{
    int sc = cairn_url_scheme(text);
    return sc == CAIRN_URL_HTTPS || sc == CAIRN_URL_UNIXS;
}

int cairn_url_zmq_endpoint(const cairn_url_t *u, char *buf, size_t len)
{
    if (!u || !buf)
        return CAIRN_EINVAL;
    const char *host = strcmp(u->host, "localhost") == 0 ? "127.0.0.1" : u->host;
    int n = snprintf(buf, len, u->bracketed ? "tcp://[%s]:%d" : "tcp://%s:%d", host, u->port);
    return n >= 0 && (size_t)n < len ? 0 : CAIRN_ETOOBIG;
}
