/* SPDX-License-Identifier: MIT */
/*
 * Throwaway X.509 credentials made in process with OpenSSL: for `tagmig demo --tls`
 * (cli_make_tls_creds) and for tests that need certificates scripts/make-tls-creds.sh cannot
 * make (expired, wrong purpose, another CA). Not for real deployments: they use that script or
 * their own PKI. Errors come back as -errno and a GError; nothing here prints.
 */
#pragma once

#include <glib.h>
#include <openssl/types.h>

G_BEGIN_DECLS

/*
 * A key pair and its certificate. Not opaque on purpose: a test may pair one credential's
 * certificate with another's key to write a mismatched pair.
 */
typedef struct tls_cred {
	EVP_PKEY *key;
	X509 *cert;
} tls_cred;

/*
 * Makes an ECDSA P-256 key and an X.509 v3 certificate for common name cn, with a random serial,
 * valid from now + not_before_days to now + not_after_days (negative: in the past).
 * issuer NULL: a self-signed CA (CA:TRUE, keyCertSign). Otherwise a leaf signed by issuer
 * (CA:FALSE, digitalSignature) with extendedKeyUsage eku ("serverAuth", "clientAuth") and
 * subjectAltName san ("DNS:localhost,IP:127.0.0.1"), each left out when NULL.
 * Returns 0 and *ret_cred (free with tls_cred_free), or -EIO with error set and *ret_cred
 * untouched. Thread-safe (OpenSSL 3 is).
 */
int tls_cred_new(const char *cn, const tls_cred *issuer, const char *eku, const char *san,
		 int not_before_days, int not_after_days, tls_cred **ret_cred, GError **error);

/* The same with an RSA key of rsa_bits bits instead (0: P-256): weak keys for the tests. */
int tls_cred_new_rsa(unsigned rsa_bits, const char *cn, const tls_cred *issuer, const char *eku,
		     const char *san, int not_before_days, int not_after_days, tls_cred **ret_cred,
		     GError **error);

/* Frees the key, the certificate and c itself; NULL is a no-op. */
void tls_cred_free(tls_cred *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(tls_cred, tls_cred_free)

/*
 * Writes c as PEM to dir/<base>-cert.pem and dir/<base>-key.pem (the naming of docs/tls.md),
 * replacing existing files; a new key file is readable by its owner only. Returns 0, or -errno
 * with error naming the file; a file may be left half written.
 */
int tls_cred_write(const tls_cred *c, const char *dir, const char *base, GError **error);

/*
 * Writes a certificate revocation list (X.509 v2 CRL, PEM) of CA ca to path: the certificates
 * revoked[0..n) listed by serial number, revoked now; thisUpdate a day ago, nextUpdate
 * next_update_days from now (negative: an expired list). Returns 0, or -errno with error naming
 * the file. Thread-safe.
 */
int tls_crl_write(const tls_cred *ca, const tls_cred *const *revoked, size_t n,
		  int next_update_days, const char *path, GError **error);

G_END_DECLS
