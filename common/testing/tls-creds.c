/* SPDX-License-Identifier: MIT */
/* Throwaway X.509 credentials made with OpenSSL (tls-creds.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "tagmig/error.h"
#include "common/testing/tls-creds.h"

/* Fails with OpenSSL's first queued reason, and empties the queue for the caller's next call. */
static int openssl_fail(GError **error, const char *cn, const char *what)
{
	char reason[256] = "no reason given";
	unsigned long e = ERR_peek_error();
	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	ERR_clear_error();
	g_set_error(error, TM_ERROR, EIO, "certificate for CN=%s: %s: %s", cn, what, reason);
	return -EIO;
}

static bool add_ext(X509 *cert, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	bool ok = ext && X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

/* The v3 extensions of a CA (issuer NULL) or of a leaf; c's public key must be set already. */
static bool add_exts(tls_cred *c, const tls_cred *issuer, const char *eku, const char *san)
{
	X509V3_CTX v3;
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer ? issuer->cert : c->cert, c->cert, NULL, NULL, 0);
	if (!issuer)
		return add_ext(c->cert, &v3, NID_basic_constraints, "critical,CA:TRUE") &&
		       add_ext(c->cert, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") &&
		       add_ext(c->cert, &v3, NID_subject_key_identifier, "hash");
	return add_ext(c->cert, &v3, NID_basic_constraints, "critical,CA:FALSE") &&
	       add_ext(c->cert, &v3, NID_key_usage, "critical,digitalSignature") &&
	       add_ext(c->cert, &v3, NID_subject_key_identifier, "hash") &&
	       add_ext(c->cert, &v3, NID_authority_key_identifier, "keyid:always") &&
	       (!eku || add_ext(c->cert, &v3, NID_ext_key_usage, eku)) &&
	       (!san || add_ext(c->cert, &v3, NID_subject_alt_name, san));
}

int tls_cred_new(const char *cn, const tls_cred *issuer, const char *eku, const char *san,
		 int not_before_days, int not_after_days, tls_cred **ret_cred, GError **error)
{
	return tls_cred_new_rsa(0, cn, issuer, eku, san, not_before_days, not_after_days, ret_cred,
				error);
}

int tls_cred_new_rsa(unsigned rsa_bits, const char *cn, const tls_cred *issuer, const char *eku,
		     const char *san, int not_before_days, int not_after_days, tls_cred **ret_cred,
		     GError **error)
{
	g_autoptr(tls_cred) c = g_new0(tls_cred, 1);
	uint64_t serial;

	c->key = rsa_bits ? EVP_RSA_gen(rsa_bits) : EVP_EC_gen("P-256");
	c->cert = X509_new();
	if (!c->key || !c->cert)
		return openssl_fail(error, cn, "cannot make the key");
	/* A random serial: certificates of one CA never share one, without a counter to keep. */
	if (RAND_bytes((unsigned char *)&serial, sizeof(serial)) != 1)
		return openssl_fail(error, cn, "no random serial number");
	X509_NAME *name = X509_get_subject_name(c->cert);
	bool ok = X509_set_version(c->cert, X509_VERSION_3) &&
		  ASN1_INTEGER_set_uint64(X509_get_serialNumber(c->cert), (serial >> 1) | 1) &&
		  X509_time_adj_ex(X509_getm_notBefore(c->cert), not_before_days, 0, NULL) &&
		  X509_time_adj_ex(X509_getm_notAfter(c->cert), not_after_days, 0, NULL) &&
		  X509_set_pubkey(c->cert, c->key) &&
		  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn,
					     -1, -1, 0) &&
		  X509_set_issuer_name(c->cert,
				       issuer ? X509_get_subject_name(issuer->cert) : name) &&
		  add_exts(c, issuer, eku, san);
	if (!ok)
		return openssl_fail(error, cn, "cannot build the certificate");
	if (X509_sign(c->cert, issuer ? issuer->key : c->key, EVP_sha256()) <= 0)
		return openssl_fail(error, cn, "cannot sign the certificate");
	*ret_cred = g_steal_pointer(&c);
	return 0;
}

void tls_cred_free(tls_cred *c)
{
	if (!c)
		return;
	X509_free(c->cert);
	EVP_PKEY_free(c->key);
	g_free(c);
}

/* One PEM file: the certificate, or the key when cert is NULL (created 0600, as ssh would). */
/* Closes f after a PEM write that ok says succeeded; either failing is "cannot write path". */
static int close_written(FILE *f, bool ok, const char *path, GError **error)
{
	int e = ok ? 0 : EIO;
	if (fclose(f) != 0 && !e)
		e = errno;
	ERR_clear_error();
	if (e) {
		g_set_error(error, TM_ERROR, e, "cannot write %s: %s", path, g_strerror(e));
		return -e;
	}
	return 0;
}

static int write_pem(const char *path, const X509 *cert, const EVP_PKEY *key, GError **error)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, cert ? 0644 : 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		g_set_error(error, TM_ERROR, e, "cannot create %s: %s", path, g_strerror(e));
		return -e;
	}
	bool ok = cert ? PEM_write_X509(f, cert)
		       : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	return close_written(f, ok, path, error);
}

int tls_cred_write(const tls_cred *c, const char *dir, const char *base, GError **error)
{
	g_autofree char *cert = g_strdup_printf("%s/%s-cert.pem", dir, base);
	g_autofree char *key = g_strdup_printf("%s/%s-key.pem", dir, base);
	int r = write_pem(cert, c->cert, NULL, error);
	return r < 0 ? r : write_pem(key, NULL, c->key, error);
}

int tls_crl_write(const tls_cred *ca, const tls_cred *const *revoked, size_t n,
		  int next_update_days, const char *path, GError **error)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *now = X509_time_adj_ex(NULL, 0, 0, NULL);
	ASN1_TIME *last = X509_time_adj_ex(NULL, -1, 0, NULL);
	ASN1_TIME *next = X509_time_adj_ex(NULL, next_update_days, 0, NULL);
	bool ok = crl && now && last && next && X509_CRL_set_version(crl, X509_CRL_VERSION_2) &&
		  X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert)) &&
		  X509_CRL_set1_lastUpdate(crl, last) && X509_CRL_set1_nextUpdate(crl, next);
	for (size_t i = 0; ok && i < n; i++) {
		X509_REVOKED *rv = X509_REVOKED_new();
		ok = rv && X509_REVOKED_set_serialNumber(rv, (ASN1_INTEGER *)X509_get0_serialNumber(
								     revoked[i]->cert)) &&
		     X509_REVOKED_set_revocationDate(rv, now) && X509_CRL_add0_revoked(crl, rv);
		if (!ok)
			X509_REVOKED_free(rv);
	}
	ok = ok && X509_CRL_sort(crl) && X509_CRL_sign(crl, ca->key, EVP_sha256()) > 0;
	ASN1_TIME_free(now);
	ASN1_TIME_free(last);
	ASN1_TIME_free(next);
	if (!ok) {
		X509_CRL_free(crl);
		return openssl_fail(error, "(CRL)", "cannot build the revocation list");
	}
	FILE *f = fopen(path, "we");
	if (!f) {
		int e = errno;
		X509_CRL_free(crl);
		g_set_error(error, TM_ERROR, e, "cannot create %s: %s", path, g_strerror(e));
		return -e;
	}
	ok = PEM_write_X509_CRL(f, crl);
	X509_CRL_free(crl);
	return close_written(f, ok, path, error);
}
