/* SPDX-License-Identifier: MIT */
/*
 * Throwaway TLS credentials for `tagmig demo --tls`: a CA, a server certificate for localhost
 * (and 127.0.0.1, ::1) and a client certificate, ECDSA P-256, valid for a day, written in the
 * layout of docs/tls.md. Real deployments make theirs with scripts/make-tls-creds.sh or their
 * own PKI.
 */
#include <errno.h>
#include <glib/gstdio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cli-common.h"

typedef struct cred {
	EVP_PKEY *key;
	X509 *cert;
} cred;

static void cred_clear(cred *c)
{
	EVP_PKEY_free(c->key);
	X509_free(c->cert);
}

static bool add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	bool ok = ext && X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	return ok;
}

/* A certificate for cn signed by issuer (NULL: self-signed CA). */
static bool make_cred(cred *c, const char *cn, const cred *issuer, const char *eku,
		      const char *san, long serial)
{
	c->key = EVP_EC_gen("P-256");
	c->cert = X509_new();
	if (!c->key || !c->cert)
		return false;
	X509_set_version(c->cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(c->cert), serial);
	X509_gmtime_adj(X509_getm_notBefore(c->cert), -3600);
	X509_gmtime_adj(X509_getm_notAfter(c->cert), 24 * 3600);
	X509_set_pubkey(c->cert, c->key);
	X509_NAME *name = X509_get_subject_name(c->cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509 *icert = issuer ? issuer->cert : c->cert;
	X509_set_issuer_name(c->cert, X509_get_subject_name(icert));
	bool ok = issuer ? add_ext(c->cert, icert, NID_basic_constraints, "critical,CA:FALSE") &&
				   add_ext(c->cert, icert, NID_key_usage,
					   "critical,digitalSignature") &&
				   add_ext(c->cert, icert, NID_ext_key_usage, eku)
			 : add_ext(c->cert, icert, NID_basic_constraints, "critical,CA:TRUE") &&
				   add_ext(c->cert, icert, NID_key_usage, "critical,keyCertSign,cRLSign");
	if (ok && san)
		ok = add_ext(c->cert, icert, NID_subject_alt_name, san);
	return ok && X509_sign(c->cert, issuer ? issuer->key : c->key, EVP_sha256()) > 0;
}

static bool write_pem(const char *dir, const char *base, const cred *c)
{
	g_autofree char *cpath = g_strdup_printf("%s/%s-cert.pem", dir, base);
	g_autofree char *kpath = g_strdup_printf("%s/%s-key.pem", dir, base);
	FILE *f = fopen(cpath, "w");
	bool ok = f && PEM_write_X509(f, c->cert);
	if (f)
		ok = fclose(f) == 0 && ok;
	f = ok ? fopen(kpath, "w") : NULL;
	ok = f && PEM_write_PrivateKey(f, c->key, NULL, NULL, 0, NULL, NULL);
	if (f)
		ok = fclose(f) == 0 && ok;
	return ok;
}

int cli_make_tls_creds(const char *dir, GError **error)
{
	cred ca = { 0 }, server = { 0 }, client = { 0 };
	bool ok = make_cred(&ca, "tagmig demo CA", NULL, NULL, NULL, 1) &&
		  make_cred(&server, "localhost", &ca, "serverAuth",
			    "DNS:localhost,IP:127.0.0.1,IP:::1", 2) &&
		  make_cred(&client, "tagmig demo sender", &ca, "clientAuth", NULL, 3) &&
		  write_pem(dir, "ca", &ca) && write_pem(dir, "server", &server) &&
		  write_pem(dir, "client", &client);
	cred_clear(&ca);
	cred_clear(&server);
	cred_clear(&client);
	if (!ok) {
		g_set_error(error, TM_ERROR, EIO, "cannot create TLS credentials in %s", dir);
		return -EIO;
	}
	return 0;
}

void cli_tmpdir_free(char *dir)
{
	if (!dir)
		return;
	g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
	const char *name;
	while (d && (name = g_dir_read_name(d))) {
		g_autofree char *path = g_build_filename(dir, name, NULL);
		g_unlink(path);
	}
	g_rmdir(dir);
	g_free(dir);
}
