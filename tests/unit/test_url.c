/* Unit tests for cairn_url: etcd's types.NewURLs rules (good and bad URLs, IPv6, ports,
 * missing host or port, paths, scheme case) and the helpers the daemons use. */
#include <criterion/criterion.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_url.h"

static int parse(cairn_url_t *u, const char *text, unsigned flags, char *why, size_t wl)
{
    return cairn_url_parse(u, text, strlen(text), flags, why, wl);
}

Test(url, good_urls)
{
    static const struct {
        const char *in, *text, *host;
        int scheme, port;
        bool bracketed;
    } cases[] = {
        {"http://127.0.0.1:2379", "http://127.0.0.1:2379", "127.0.0.1", CAIRN_URL_HTTP, 2379, false},
        {"https://example.com:443", "https://example.com:443", "example.com", CAIRN_URL_HTTPS, 443, false},
        {"unix://localhost:2379", "unix://localhost:2379", "localhost", CAIRN_URL_UNIX, 2379, false},
        {"unixs://n1:1", "unixs://n1:1", "n1", CAIRN_URL_UNIXS, 1, false},
        {"http://[::1]:2380", "http://[::1]:2380", "::1", CAIRN_URL_HTTP, 2380, true},
        {"https://[fd00::3]:0", "https://[fd00::3]:0", "fd00::3", CAIRN_URL_HTTPS, 0, true},
        {"http://:2379", "http://:2379", "", CAIRN_URL_HTTP, 2379, false},
        {"http://a:65535", "http://a:65535", "a", CAIRN_URL_HTTP, 65535, false},
        /* the scheme is lower-cased as Go does; the rest stays as written (it is hashed) */
        {"HTTPS://Host.Example:02380", "https://Host.Example:02380", "Host.Example", CAIRN_URL_HTTPS, 2380, false},
        {"  http://a:1 \t", "http://a:1", "a", CAIRN_URL_HTTP, 1, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cairn_url_t u;
        char why[256] = "";
        cr_assert_eq(parse(&u, cases[i].in, 0, why, sizeof why), 0, "%s: %s", cases[i].in, why);
        cr_assert_str_eq(u.text, cases[i].text);
        cr_assert_str_eq(u.host, cases[i].host, "%s", cases[i].in);
        cr_assert_eq((int)u.scheme, cases[i].scheme, "%s", cases[i].in);
        cr_assert_eq(u.port, cases[i].port, "%s", cases[i].in);
        cr_assert_eq(u.bracketed, cases[i].bracketed, "%s", cases[i].in);
    }
}

Test(url, bad_urls_say_why)
{
    static const struct {
        const char *in;
        unsigned flags;
        const char *why;
    } cases[] = {
        {"ftp://a:1", 0, "URL scheme must be http, https, unix, or unixs: ftp://a:1"},
        {"FTP://a:1", 0, "URL scheme must be http, https, unix, or unixs: ftp://a:1"},
        {"127.0.0.1:2379", 0, "URL scheme must be http, https, unix, or unixs: 127.0.0.1:2379"},
        {"", 0, "URL scheme must be"},
        {"http://a:1/x", 0, "URL must not contain a path: http://a:1/x"},
        {"http://a:1/", 0, "URL must not contain a path: http://a:1/"},
        {"http://a:1?x=1", 0, "URL must not contain a query or fragment: http://a:1?x=1"},
        {"http://a:1#f", 0, "URL must not contain a query or fragment"},
        {"http://u@a:1", 0, "URL must not contain user information: http://u@a:1"},
        {"http://a", 0, "URL address does not have the form \"host:port\": http://a"},
        {"http://::1:80", 0, "URL address does not have the form \"host:port\""},
        {"http://[::1]", 0, "URL address does not have the form \"host:port\""},
        {"http://[::1:80", 0, "URL address does not have the form \"host:port\""},
        {"http://a:", 0, "URL port must be a number from 0 to 65535: http://a:"},
        {"http://a:65536", 0, "URL port must be a number from 0 to 65535"},
        {"http://a:99999", 0, "URL port must be a number from 0 to 65535"},
        {"http://a:123456", 0, "URL port must be a number from 0 to 65535"},
        {"http://a:-1", 0, "URL port must be a number from 0 to 65535"},
        {"http://a:8o", 0, "URL port must be a number from 0 to 65535"},
        {"http://:2379", CAIRN_URL_NEED_HOST, "URL must name a host that others can reach: http://:2379"},
        {"http://[]:2379", CAIRN_URL_NEED_HOST, "URL must name a host that others can reach"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cairn_url_t u;
        char why[256] = "";
        cr_assert_eq(parse(&u, cases[i].in, cases[i].flags, why, sizeof why), CAIRN_EINVAL, "%s", cases[i].in);
        cr_assert(strstr(why, cases[i].why), "%s: got \"%s\"", cases[i].in, why);
    }
    /* why may be NULL; a URL too long for the struct is refused, not cut */
    cairn_url_t u;
    cr_assert_eq(parse(&u, "http://a", 0, NULL, 0), CAIRN_EINVAL);
    char big[CAIRN_URL_MAX + 16], why[256];
    memset(big, 'a', sizeof big - 1);
    memcpy(big, "http://", 7);
    big[sizeof big - 1] = 0;
    cr_assert_eq(parse(&u, big, 0, why, sizeof why), CAIRN_EINVAL);
    cr_assert(strstr(why, "URL is longer than"), "%s", why);
    /* only len bytes are read */
    cr_assert_eq(cairn_url_parse(&u, "http://a:1,http://b:2", 10, 0, why, sizeof why), 0, "%s", why);
    cr_assert_str_eq(u.text, "http://a:1");
}

Test(url, ignore_path_for_old_log_entries)
{
    cairn_url_t u;
    char why[256] = "";
    cr_assert_eq(parse(&u, "http://10.0.0.1:2380/", CAIRN_URL_IGNORE_PATH, why, sizeof why), 0, "%s", why);
    cr_assert_str_eq(u.host, "10.0.0.1");
    cr_assert_eq(u.port, 2380);
    cr_assert_eq(parse(&u, "http://[::1]:2380/raft", CAIRN_URL_IGNORE_PATH, why, sizeof why), 0, "%s", why);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 2380);
    cr_assert_eq(parse(&u, "http://a:1?q", CAIRN_URL_IGNORE_PATH, why, sizeof why), CAIRN_EINVAL);
    cr_assert_eq(parse(&u, "http://a/x:1", CAIRN_URL_IGNORE_PATH, why, sizeof why), CAIRN_EINVAL);
    cr_assert(strstr(why, "host:port"), "%s", why);
}

Test(url, tls_and_scheme_of_text)
{
    cr_assert_eq(cairn_url_scheme("http://a:1"), CAIRN_URL_HTTP);
    cr_assert_eq(cairn_url_scheme("HTTPS://a:1"), CAIRN_URL_HTTPS);
    cr_assert_eq(cairn_url_scheme("Unix://a:1"), CAIRN_URL_UNIX);
    cr_assert_eq(cairn_url_scheme("unixs://x"), CAIRN_URL_UNIXS);
    cr_assert_eq(cairn_url_scheme("ftp://a:1"), CAIRN_EINVAL);
    cr_assert_eq(cairn_url_scheme("http:/a:1"), CAIRN_EINVAL);
    cr_assert_eq(cairn_url_scheme(NULL), CAIRN_EINVAL);
    cr_assert(cairn_url_text_is_tls("https://a:1"));
    cr_assert(cairn_url_text_is_tls("UNIXS://a:1"));
    cr_assert(!cairn_url_text_is_tls("http://a:1"));
    cr_assert(!cairn_url_text_is_tls("unix://a:1"));
    cr_assert(!cairn_url_text_is_tls("httpsx://a:1"));
    cairn_url_t u;
    cr_assert_eq(parse(&u, "HTTPS://a:1", 0, NULL, 0), 0);
    cr_assert(cairn_url_is_tls(&u));
    cr_assert_eq(parse(&u, "unix://a:1", 0, NULL, 0), 0);
    cr_assert(!cairn_url_is_tls(&u));
    cr_assert(!cairn_url_is_tls(NULL));
}

Test(url, zmq_endpoint)
{
    static const struct {
        const char *in, *ep;
    } cases[] = {
        {"http://10.0.0.1:2380", "tcp://10.0.0.1:2380"},
        {"http://localhost:2380", "tcp://127.0.0.1:2380"}, /* ZeroMQ binds addresses */
        {"http://[::1]:2380", "tcp://[::1]:2380"},
        {"http://n1.example:12380", "tcp://n1.example:12380"},
        {"http://:2380", "tcp://:2380"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cairn_url_t u;
        char ep[64];
        cr_assert_eq(parse(&u, cases[i].in, 0, NULL, 0), 0, "%s", cases[i].in);
        cr_assert_eq(cairn_url_zmq_endpoint(&u, ep, sizeof ep), 0);
        cr_assert_str_eq(ep, cases[i].ep);
    }
    cairn_url_t u;
    char small[12];
    cr_assert_eq(parse(&u, "http://10.0.0.1:2380", 0, NULL, 0), 0);
    cr_assert_eq(cairn_url_zmq_endpoint(&u, small, sizeof small), CAIRN_ETOOBIG);
    cr_assert_eq(cairn_url_zmq_endpoint(NULL, small, sizeof small), CAIRN_EINVAL);
}
