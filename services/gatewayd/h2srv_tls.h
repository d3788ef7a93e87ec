/* h2srv_tls.h - server TLS contexts for gatewayd's client listeners, and etcd's --auto-tls
 * (a self-signed certificate generated on first start and reused afterwards). Internal to
 * the h2srv module; kept apart so the OpenSSL details stay out of the transport code. */
#ifndef CAIRN_H2SRV_TLS_H
#define CAIRN_H2SRV_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

/* A TLS 1.2+ server context: certificate chain and key from PEM files, ALPN that always
 * picks h2 when offered (else http/1.1, else none), non-blocking friendly modes. With
 * ca_file, client certificates are verified against it (and required if require_client).
 * Returns NULL with a sentence in errbuf. */
SSL_CTX *cairn_tls_server_ctx_new(const char *cert_file, const char *key_file, const char *ca_file,
                                  int require_client, char *errbuf, size_t errlen);

/* --auto-tls: make sure dir holds cert.pem and key.pem, a self-signed EC P-256 certificate
 * valid for a year with SANs IP:127.0.0.1, IP:::1, DNS:localhost, DNS:<hostname> (Go
 * clients reject certificates without SANs). Existing files are reused if they load, match
 * and have not expired; otherwise they are regenerated (written to a temporary name and
 * renamed, the key with mode 0600). Fills cert_path/key_path. 0 or a CAIRN_E* code. */
int cairn_tls_auto_cert(const char *dir, char *cert_path, size_t cert_cap, char *key_path, size_t key_cap,
                        char *errbuf, size_t errlen);

/* Common name of the verified client certificate, copied into out ("" if none). */
void cairn_tls_peer_cn(SSL *ssl, char *out, size_t cap);

#endif
