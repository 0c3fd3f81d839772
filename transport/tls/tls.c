/* SPDX-License-Identifier: MIT */
/*
 * The TLS context of a session: credentials, the callbacks the context installs (verification,
 * key log, the client's session cache for resumption) and the settings of the channels it starts.
 * Failure text is in tls-failure.c, the kernel TLS probe in ktls-probe.c, statistics in
 * tls-stats.c, the channel itself in tls-chan.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tagmig/error.h"
#include "transport/tls/tls-internal.h"

/* Preference order: AES-128-GCM is the fastest with AES-NI and what the goal is measured with. */
static const char ciphersuites[] =
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/* Resumption needs a session id context on a server that verifies client certificates. */
static const unsigned char sid_ctx[] = "tagmig";

/* The first queued OpenSSL error as text (for credential loading); clears the queue. */
static char *ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	char *s = g_strdup(r ? r : "unknown OpenSSL error");
	ERR_clear_error();
	return s;
}

/* Checks that dir/name is readable; returns 0 and the path, or -errno with the path named. */
static int cred_file(const char *dir, const char *name, char **ret, GError **error)
{
	char *path = g_build_filename(dir, name, NULL);

	if (access(path, R_OK) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "TLS credentials: %s: %s", path, g_strerror(e));
		g_free(path);
		return -e;
	}
	*ret = path;
	return 0;
}

/*
 * dir/ca-crl.pem, when present (QEMU's and libvirt's optional revocation list): every CRL in it
 * goes into the store, and every certificate of the peer's chain is checked against them
 * (X509_V_FLAG_CRL_CHECK_ALL: the file must hold a current CRL of each CA of the chain). A file
 * that is there but holds no readable CRL fails setup rather than checking nothing.
 */
static int load_crl(SSL_CTX *sc, const char *dir, GError **error)
{
	g_autofree char *path = g_build_filename(dir, "ca-crl.pem", NULL);

	if (access(path, F_OK) < 0 && errno == ENOENT)
		return 0;
	X509_LOOKUP *lu = X509_STORE_add_lookup(SSL_CTX_get_cert_store(sc), X509_LOOKUP_file());
	if (!lu || X509_load_crl_file(lu, path, X509_FILETYPE_PEM) <= 0 ||
	    X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(sc),
					X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL) != 1) {
		g_autofree char *why = ssl_reason();
		g_set_error(error, TM_ERROR, EKEYREJECTED, "TLS credentials: %s: cannot load the "
			    "certificate revocation list: %s", path, why);
		return -EKEYREJECTED;
	}
	return 0;
}

/* Client: keeps the newest resumable session for the channels that start next. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	tm_tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

	if (!SSL_SESSION_is_resumable(sess))
		return 0;
	g_mutex_lock(&ctx->lock);
	SSL_SESSION *old = ctx->session;
	ctx->session = sess;
	g_mutex_unlock(&ctx->lock);
	SSL_SESSION_free(old);
	return 1; /* we keep the reference OpenSSL gave us */
}

static char *asn1_time_str(const ASN1_TIME *t)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;

	if (!b)
		return g_strdup("?");
	ASN1_TIME_print(b, t);
	long n = BIO_get_mem_data(b, &data);
	char *s = g_strndup(data, n > 0 ? (size_t)n : 0);
	BIO_free(b);
	return s;
}

/* The subject of cert in RFC 2253 form ("CN=tagmig sender,O=Example"), g_free it. */
static char *subject_rfc2253(X509 *cert)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;

	if (!b)
		return NULL;
	X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
	long n = BIO_get_mem_data(b, &data);
	char *s = g_strndup(data, n > 0 ? (size_t)n : 0);
	BIO_free(b);
	return s;
}

/* Whether the peer's certificate (depth 0, verified) is one the allow-list lets in. */
static bool authorized(const tls_chan *t, X509 *cert, char **ret_subject)
{
	g_autofree char *subj = subject_rfc2253(cert);
	bool ok = subj && g_strv_contains((const char *const *)t->ctx->authz, subj);
	if (!ok)
		*ret_subject = g_steal_pointer(&subj);
	return ok;
}

int tm_tls_verify_cb(int ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	tls_chan *t = ssl ? SSL_get_app_data(ssl) : NULL;
	if (ok && t && !t->verify_err && t->ctx->authz && X509_STORE_CTX_get_error_depth(store) == 0) {
		/* The chain is good; the sender must also be one of those allowed (tls_authz). */
		char *subj = NULL;
		if (authorized(t, X509_STORE_CTX_get_current_cert(store), &subj))
			return 1;
		/* the peer learns "bad certificate"; our explanation keys on verify_err */
		X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
		t->verify_err = X509_V_ERR_APPLICATION_VERIFICATION;
		t->verify_depth = 0;
		t->verify_subject = subj ? subj : g_strdup("?");
		return 0;
	}
	if (ok)
		return 1;
	if (!t || t->verify_err)
		return 0;
	/* The first failure is the one to report; OpenSSL stops the handshake at it. */
	t->verify_err = X509_STORE_CTX_get_error(store);
	t->verify_depth = X509_STORE_CTX_get_error_depth(store);
	X509 *cert = X509_STORE_CTX_get_current_cert(store);
	if (cert) {
		char buf[256];
		X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
		t->verify_subject = g_strdup(buf);
		if (t->verify_err == X509_V_ERR_CERT_HAS_EXPIRED)
			t->verify_when = asn1_time_str(X509_get0_notAfter(cert));
		else if (t->verify_err == X509_V_ERR_CERT_NOT_YET_VALID)
			t->verify_when = asn1_time_str(X509_get0_notBefore(cert));
	}
	return 0;
}

/*
 * The key-log callback of both roles: OpenSSL reports each secret as it derives it (RFC 8446
 * 7.1). The client's first application traffic secret is the one our records need; the server's
 * lets the receiver seal an alert in OpenSSL's direction (tls-alert.c).
 */
void tm_tls_keylog_cb(const SSL *ssl, const char *line)
{
	static const char client_label[] = "CLIENT_TRAFFIC_SECRET_0 ";
	static const char server_label[] = "SERVER_TRAFFIC_SECRET_0 ";
	tls_chan *t = SSL_get_app_data(ssl);
	uint8_t secret[EVP_MAX_MD_SIZE];

	if (!t || !t->ctx->own_records)
		return;
	bool client = strncmp(line, client_label, sizeof(client_label) - 1) == 0;
	bool server = t->ctx->role == TM_TLS_SERVER &&
		      strncmp(line, server_label, sizeof(server_label) - 1) == 0;
	if (!client && !server)
		return;
	const char *hex = strchr(line + sizeof(client_label) - 1, ' ');
	if (!hex)
		return;
	hex++;
	size_t n = strlen(hex) / 2;
	if (n == 0 || n > sizeof(secret))
		return;
	for (size_t i = 0; i < n; i++) {
		int hi = g_ascii_xdigit_value(hex[2 * i]), lo = g_ascii_xdigit_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			OPENSSL_cleanse(secret, sizeof(secret));
			return;
		}
		secret[i] = (uint8_t)(hi << 4 | lo);
	}
	if (client) {
		memcpy(t->secret, secret, n);
		t->secret_len = n;
	} else {
		tm_tls_alert_follow(t, ssl, secret, n);
	}
	OPENSSL_cleanse(secret, sizeof(secret));
}

/*
 * Client: makes every channel check the receiver's certificate against name, in the context's
 * verify parameters (each SSL inherits them): an IP address (subjectAltName IP) or else a DNS
 * name (subjectAltName DNS, wildcards allowed). A name with a ':' is an IPv6 address, optionally
 * in brackets and with a zone ("fe80::1%eth0": the zone says which link to connect over and is
 * not part of the address a certificate names, so it is left out of the check); one of digits
 * and dots is an IPv4 address in the dotted-decimal form connect reads (no octal "010.0.0.1").
 * Every setter is checked: a name that cannot be checked fails here, at the session's setup,
 * instead of leaving the handshake to verify the chain only. *ret_sni: the DNS name for SNI,
 * NULL for an address (RFC 6066 3 allows no address there).
 */
static int set_expected_name(SSL_CTX *sc, const char *name, char **ret_sni, GError **error)
{
	X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(sc);
	size_t len = strlen(name);
	g_autofree char *addr = NULL;
	const char *why = NULL;

	if (len >= 2 && name[0] == '[' && name[len - 1] == ']')
		addr = g_strndup(name + 1, len - 2);
	else if (strchr(name, ':') || strspn(name, "0123456789.") == len)
		addr = g_strdup(name);
	if (addr && strchr(addr, ':')) {
		char *zone = strchr(addr, '%');
		if (zone && zone[1] == '\0')
			why = "an IPv6 address with an empty zone";
		if (zone)
			*zone = '\0';
		if (!why && X509_VERIFY_PARAM_set1_ip_asc(vp, addr) != 1)
			why = "not a valid IPv6 address";
	} else if (addr) {
		struct in_addr a;
		if (inet_pton(AF_INET, addr, &a) != 1)
			why = "not an IPv4 address in dotted-decimal form";
		else if (X509_VERIFY_PARAM_set1_ip_asc(vp, addr) != 1)
			why = "not a valid IPv4 address";
	} else if (len > TLSEXT_MAXLEN_host_name) {
		why = "a DNS name longer than 255 bytes";
	} else if (X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1) {
		why = "not a DNS name OpenSSL can check";
	}
	ERR_clear_error();
	if (why) {
		g_set_error(error, TM_ERROR, EINVAL, "TLS: cannot check the receiver's certificate "
			    "against '%s': %s (see --tls-hostname)", name, why);
		return -EINVAL;
	}
	*ret_sni = addr ? NULL : g_strdup(name);
	return 0;
}

void tm_tls_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
		   SSL *ssl, void *arg)
{
	const uint8_t *m = buf;
	tls_chan *t = SSL_get_app_data(ssl);

	if (!t)
		return;
	/* KeyUpdate: type 24, length 1, request_update 1 (update_requested), RFC 8446 4.6.3 */
	if (!write_p && t->ctx->role == TM_TLS_CLIENT && content_type == SSL3_RT_HANDSHAKE &&
	    len == 5 && m[0] == TM_TLS_HS_KEY_UPDATE && m[4] == 1)
		t->update_requested = true;
	if (t->ctx->own_records)
		tm_tls_alert_msg(t, write_p, content_type, m, len);
}

int tm_tls_available(GError **error)
{
	return 0;
}

int tm_tls_ctx_new(tm_tls_role role, const char *creds_dir, const char *hostname,
		   tm_tls_ctx **ret, GError **error)
{
	const bool server = role == TM_TLS_SERVER;
	g_autofree char *ca = NULL, *cert = NULL, *key = NULL;
	int r;

	if (!server && (!hostname || !*hostname)) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "TLS: the name to verify the receiver's certificate against is missing");
		return -EINVAL;
	}
	if ((r = cred_file(creds_dir, "ca-cert.pem", &ca, error)) < 0 ||
	    (r = cred_file(creds_dir, server ? "server-cert.pem" : "client-cert.pem", &cert,
			   error)) < 0 ||
	    (r = cred_file(creds_dir, server ? "server-key.pem" : "client-key.pem", &key, error)) < 0)
		return r;

	ERR_clear_error();
	SSL_CTX *sc = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!sc) {
		g_autofree char *why = ssl_reason();
		g_set_error(error, TM_ERROR, ENOMEM, "TLS: cannot create a context: %s", why);
		return -ENOMEM;
	}
	/*
	 * Security level 2 (112-bit keys at least: RSA and DH 2048, ECC 224) for our certificates
	 * and the peer's, before any is loaded: OpenSSL 3.0's default, level 1, lets RSA-1024 in.
	 */
	SSL_CTX_set_security_level(sc, 2);
	const char *bad = NULL;
	if (!SSL_CTX_load_verify_file(sc, ca))
		bad = ca;
	else if (!SSL_CTX_use_certificate_chain_file(sc, cert))
		bad = cert;
	else if (!SSL_CTX_use_PrivateKey_file(sc, key, SSL_FILETYPE_PEM) &&
		 ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
		bad = key;
	if (bad) {
		g_autofree char *why = ssl_reason();
		g_set_error(error, TM_ERROR, EKEYREJECTED, "TLS credentials: %s: %s", bad, why);
		SSL_CTX_free(sc);
		return -EKEYREJECTED;
	}
	if (ERR_peek_last_error() || !SSL_CTX_check_private_key(sc)) {
		g_autofree char *why = ssl_reason();
		g_set_error(error, TM_ERROR, EKEYREJECTED,
			    "TLS credentials: %s does not belong to the certificate in %s: %s", key,
			    cert, why);
		SSL_CTX_free(sc);
		return -EKEYREJECTED;
	}

	SSL_CTX_set_min_proto_version(sc, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(sc, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(sc, ciphersuites);
	/* No middlebox-compatibility ChangeCipherSpec records; no read-ahead (exact BIO reads). */
	SSL_CTX_clear_options(sc, SSL_OP_ENABLE_MIDDLEBOX_COMPAT);
	SSL_CTX_set_read_ahead(sc, 0);
	/*
	 * Send the chain in the certificate file, not the CA from ca-cert.pem as well: the peer has
	 * its own copy of the CA, and a peer trusting another CA then names our certificate.
	 */
	SSL_CTX_set_mode(sc, SSL_MODE_NO_AUTO_CHAIN);
	SSL_CTX_set_verify(sc, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
				      : SSL_VERIFY_PEER,
			   tm_tls_verify_cb);
	if (server) {
		SSL_CTX_set_options(sc, SSL_OP_CIPHER_SERVER_PREFERENCE);
		SSL_CTX_set_session_id_context(sc, sid_ctx, sizeof(sid_ctx) - 1);
		/*
		 * Stateless tickets (the default without SSL_OP_NO_TICKET) may be used by several
		 * channels; one per handshake is enough, since every channel uses the newest.
		 */
		SSL_CTX_set_num_tickets(sc, 1);
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
		if (names)
			SSL_CTX_set_client_CA_list(sc, names);
	} else {
		SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT |
						   SSL_SESS_CACHE_NO_INTERNAL_STORE);
		SSL_CTX_sess_set_new_cb(sc, new_session_cb);
	}
	/*
	 * Client: OpenSSL cannot answer a key update request, nor send an alert, in the direction our
	 * records protect. Server: an alert of ours in OpenSSL's direction must know its records.
	 */
	SSL_CTX_set_msg_callback(sc, tm_tls_msg_cb);
	ERR_clear_error();
	if ((r = load_crl(sc, creds_dir, error)) < 0) {
		SSL_CTX_free(sc);
		return r;
	}
	g_autofree char *sni = NULL;
	if (!server && (r = set_expected_name(sc, hostname, &sni, error)) < 0) {
		SSL_CTX_free(sc);
		return r;
	}

	tm_tls_ctx *ctx = g_new0(tm_tls_ctx, 1);
	g_atomic_ref_count_init(&ctx->ref);
	g_mutex_init(&ctx->lock);
	ctx->role = role;
	ctx->ssl_ctx = sc;
	ctx->hostname = server ? NULL : g_strdup(hostname);
	ctx->sni = g_steal_pointer(&sni);
	SSL_CTX_set_app_data(sc, ctx);
	/* The traffic secret for our own record layer (tls-chan.c own_start). */
	SSL_CTX_set_keylog_callback(sc, tm_tls_keylog_cb);
	ctx->own_records = true;
	ctx->key_limit = TM_TLS_KEY_LIMIT;

	g_autoptr(GError) ktls = NULL;
	g_autofree char *why = NULL;
	if (tm_tls_ktls_probe(&ktls) < 0)
		ctx->ktls_reason = g_strdup_printf("%s: records protected in user space",
						   ktls->message);
	else if (tm_ktls_probe(&why) < 0)
		ctx->ktls_reason = g_strdup_printf("kernel TLS offload unavailable: %s: records "
						   "protected in user space", why);
	else
		ctx->ktls = true;
	if (ctx->ktls)
		ctx->ktls_reason = g_strdup("kernel TLS offload available: the kernel protects "
					    "the sender's records");
	*ret = ctx;
	return 0;
}

tm_tls_ctx *tm_tls_ctx_ref(tm_tls_ctx *ctx)
{
	g_atomic_ref_count_inc(&ctx->ref);
	return ctx;
}

void tm_tls_ctx_free(tm_tls_ctx *ctx)
{
	if (!ctx || !g_atomic_ref_count_dec(&ctx->ref))
		return;
	SSL_SESSION_free(ctx->session);
	SSL_CTX_free(ctx->ssl_ctx);
	g_mutex_clear(&ctx->lock);
	g_free(ctx->hostname);
	g_free(ctx->sni);
	g_free(ctx->ktls_reason);
	g_strfreev(ctx->authz);
	g_free(ctx);
}

void tm_tls_ctx_set_ktls(tm_tls_ctx *ctx, bool on)
{
	if (!on && ctx->ktls) {
		ctx->ktls = false;
		g_free(ctx->ktls_reason);
		ctx->ktls_reason = g_strdup("kernel TLS offload turned off for this session: records "
					    "protected in user space");
	}
}

int tm_tls_ctx_set_authz(tm_tls_ctx *ctx, const char *const *subjects, GError **error)
{
	if (ctx->role != TM_TLS_SERVER) {
		g_set_error(error, TM_ERROR, EINVAL, "TLS: an allow-list of sender subjects is the "
			    "receiver's (tls_authz)");
		return -EINVAL;
	}
	if (!subjects || !subjects[0]) {
		g_set_error(error, TM_ERROR, EINVAL, "TLS: the allow-list of sender subjects "
			    "(tls_authz) is empty: no sender could connect");
		return -EINVAL;
	}
	g_strfreev(ctx->authz);
	ctx->authz = g_strdupv((char **)subjects);
	return 0;
}

void tm_tls_ctx_tune(tm_tls_ctx *ctx, const tm_tuning *t)
{
	if (t->tls_openssl_records)
		tm_tls_ctx_set_record_layer(ctx, false);
	if (t->no_ktls && ctx->ktls) {
		ctx->ktls = false;
		g_free(ctx->ktls_reason);
		ctx->ktls_reason = g_strdup("kernel TLS offload turned off (tuning.no_ktls; "
					    "$TAGMIG_KTLS=0 in the tools): records protected in user space");
	}
}

void tm_tls_ctx_set_record_layer(tm_tls_ctx *ctx, bool own)
{
	ctx->own_records = own;
}

void tm_tls_ctx_set_key_limit(tm_tls_ctx *ctx, uint64_t records)
{
	ctx->key_limit = MAX(records, 1);
}

const char *tm_tls_ctx_ktls_reason(const tm_tls_ctx *ctx)
{
	return ctx->ktls_reason;
}
