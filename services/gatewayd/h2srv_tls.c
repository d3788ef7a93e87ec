/* h2srv_tls.c - see h2srv_tls.h. */
#include "h2srv_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "cairn_err.h"
#include "cairn_log.h"

/* Appends the most recent OpenSSL error to errbuf after a sentence of ours. */
static void tls_err(char *errbuf, size_t errlen, const char *what, const char *arg)
{
    unsigned long e = ERR_peek_last_error();
    char es[256] = "";
    if (e)
        ERR_error_string_n(e, es, sizeof es);
    ERR_clear_error();
    if (errbuf && errlen)
        snprintf(errbuf, errlen, "%s%s%s%s%s", what, arg ? " " : "", arg ? arg : "", es[0] ? ": " : "", es);
}

/* Go's grpc (>= 1.67) refuses a TLS server that does not negotiate h2, and etcdctl 3.4
 * offers it; so whenever h2 is offered we select it. A client that offers only http/1.1
 * (curl --http1.1) gets that; one that offers neither gets no ALPN and is sniffed. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char protos[] = "\x02h2\x08http/1.1";
    unsigned char *sel = NULL;
    unsigned char sellen = 0;
    if (SSL_select_next_proto(&sel, &sellen, protos, sizeof protos - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        *outlen = sellen;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX *cairn_tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ca_file,
                                  int require_client, char *errbuf, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_err(errbuf, errlen, "SSL_CTX_new failed", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Renegotiation is a CPU DoS vector and no gRPC client needs it. */
    /* IGNORE_UNEXPECTED_EOF: a peer closing without close_notify is an ordinary EOF (HTTP/2
     * and HTTP/1.1 framing detect truncation themselves), not an SSL error. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Non-blocking writes of our own output buffer: partial writes return what went out,
     * and the buffer may move (we compact it) between retries. RELEASE_BUFFERS frees the
     * ~34 KiB of record buffers of idle connections, which matters with thousands. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    static const unsigned char sid[] = "cairn-gatewayd";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);

    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_err(errbuf, errlen, "cannot load certificate", cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_err(errbuf, errlen, "cannot load private key", key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_err(errbuf, errlen, "private key does not match certificate", key_file);
        goto fail;
    }
    if (ca_file && *ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            tls_err(errbuf, errlen, "cannot load trusted CA file", ca_file);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (require_client ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    } else if (require_client) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "client certificate auth needs a trusted CA file");
        goto fail;
    }
    ERR_clear_error();
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

void cairn_tls_peer_cn(SSL *ssl, char *out, size_t cap)
{
    if (!cap)
        return;
    out[0] = 0;
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (!peer)
        return;
    if (SSL_get_verify_result(ssl) == X509_V_OK) {
        int n = X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, out, (int)cap);
        if (n < 0)
            out[0] = 0;
    }
    X509_free(peer);
}

/* ---- auto TLS ------------------------------------------------------------------------- */

/* 1 if the pair loads, matches and the certificate has not expired. */
static int existing_pair_ok(const char *cert_path, const char *key_path)
{
    int ok = 0;
    FILE *f = fopen(cert_path, "r");
    if (!f)
        return 0;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    f = fopen(key_path, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (x && k && X509_check_private_key(x, k) == 1 && X509_cmp_current_time(X509_get0_notAfter(x)) > 0)
        ok = 1;
    X509_free(x);
    EVP_PKEY_free(k);
    ERR_clear_error();
    return ok;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ex)
        return -1;
    int r = X509_add_ext(x, ex, -1);
    X509_EXTENSION_free(ex);
    return r == 1 ? 0 : -1;
}

/* Writes PEM via tmp+rename so a crash never leaves half a file that would be "reused". */
static int write_pem(const char *path, int mode, X509 *x, EVP_PKEY *k)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    int ok = x ? PEM_write_X509(f, x) : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int mkdir_p(const char *dir)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    return 0;
}

int cairn_tls_auto_cert(const char *dir, char *cert_path, size_t cert_cap, char *key_path, size_t key_cap,
                        char *errbuf, size_t errlen)
{
    if (!dir || !*dir) {
        snprintf(errbuf, errlen, "auto-tls needs a directory");
        return CAIRN_ECONFIG;
    }
    if ((size_t)snprintf(cert_path, cert_cap, "%s/cert.pem", dir) >= cert_cap ||
        (size_t)snprintf(key_path, key_cap, "%s/key.pem", dir) >= key_cap) {
        snprintf(errbuf, errlen, "auto-tls directory path too long");
        return CAIRN_ECONFIG;
    }
    if (existing_pair_ok(cert_path, key_path))
        return 0;
    if (mkdir_p(dir) != 0) {
        snprintf(errbuf, errlen, "cannot create auto-tls directory %s: %s", dir, strerror(errno));
        return CAIRN_EIO;
    }

    int rc = CAIRN_ETLS;
    X509 *x = NULL;
    /* P-256: every client (Go, Python, Node) supports it and its handshakes are cheap. */
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k) {
        tls_err(errbuf, errlen, "cannot generate EC P-256 key", NULL);
        goto out;
    }
    x = X509_new();
    if (!x)
        goto sslfail;
    X509_set_version(x, 2); /* v3: extensions */
    unsigned char sn[16];
    if (RAND_bytes(sn, sizeof sn) != 1)
        goto sslfail;
    sn[0] &= 0x7f; /* positive */
    BIGNUM *bn = BN_bin2bn(sn, sizeof sn, NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))) {
        BN_free(bn);
        goto sslfail;
    }
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600); /* tolerate small clock skew */
    X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"cairn", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"cairn auto-tls", -1, -1, 0);
    X509_set_issuer_name(x, name);

    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = 0;
    host[sizeof host - 1] = 0;
    /* A hostname with characters the config parser would choke on is simply left out. */
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '.')) {
            host[0] = 0;
            break;
        }
    char san[400];
    if (host[0] && strcmp(host, "localhost") != 0)
        snprintf(san, sizeof san, "IP:127.0.0.1,IP:::1,DNS:localhost,DNS:%s", host);
    else
        snprintf(san, sizeof san, "IP:127.0.0.1,IP:::1,DNS:localhost");
    /* Like etcd's SelfCert: a leaf (CA:FALSE) for server auth, trusted as itself. */
    if (add_ext(x, NID_basic_constraints, "critical,CA:FALSE") || add_ext(x, NID_subject_alt_name, san) ||
        add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
        add_ext(x, NID_ext_key_usage, "serverAuth") || add_ext(x, NID_subject_key_identifier, "hash"))
        goto sslfail;
    if (!X509_sign(x, k, EVP_sha256()))
        goto sslfail;
    if (write_pem(key_path, 0600, NULL, k) != 0 || write_pem(cert_path, 0644, x, NULL) != 0) {
        snprintf(errbuf, errlen, "cannot write auto-tls files in %s: %s", dir, strerror(errno));
        rc = CAIRN_EIO;
        goto out;
    }
    cairn_info("generated self-signed certificate", "cert=%s san=%s", cert_path, san);
    rc = 0;
    goto out;
sslfail:
    tls_err(errbuf, errlen, "cannot build self-signed certificate", NULL);
out:
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}
