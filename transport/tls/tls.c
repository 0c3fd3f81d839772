/* SPDX-License-Identifier: MIT */
/*
 * The TLS context of a session: credentials, verification, the client's session cache for
 * resumption, and the translation of OpenSSL's failures into messages that say which check
 * failed. The channel I/O is in tls-chan.c.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tagmig/error.h"
#include "transport/tls/tls-internal.h"

#define ULP_SYSCTL "/proc/sys/net/ipv4/tcp_available_ulp"

/* Preference order: AES-128-GCM is the fastest with AES-NI and what the goal is measured with. */
static const char ciphersuites[] =
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/* Resumption needs a session id context on a server that verifies client certificates. */
static const unsigned char sid_ctx[] = "tagmig";

int tm_tls_ktls_probe(GError **error)
{
	g_autofree char *ulp = NULL;
	g_autoptr(GError) local = NULL;

	if (!g_file_get_contents(ULP_SYSCTL, &ulp, NULL, &local)) {
		g_set_error(error, TM_ERROR, EOPNOTSUPP,
			    "kernel TLS offload unavailable: cannot read %s: %s", ULP_SYSCTL,
			    local->message);
		return -EOPNOTSUPP;
	}
	g_strstrip(ulp);
	g_auto(GStrv) names = g_strsplit_set(ulp, " \t\n", -1);
	for (char **n = names; *n; n++) {
		if (strcmp(*n, "tls") == 0)
			return 0;
	}
	g_set_error(error, TM_ERROR, EOPNOTSUPP,
		    "kernel TLS offload unavailable (tcp_available_ulp: '%s', no 'tls'; "
		    "modprobe tls adds it)", ulp);
	return -EOPNOTSUPP;
}

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

int tm_tls_verify_cb(int ok, X509_STORE_CTX *store)
{
	if (ok)
		return 1;
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	tls_chan *t = ssl ? SSL_get_app_data(ssl) : NULL;
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
	ERR_clear_error();

	tm_tls_ctx *ctx = g_new0(tm_tls_ctx, 1);
	g_atomic_ref_count_init(&ctx->ref);
	g_mutex_init(&ctx->lock);
	ctx->role = role;
	ctx->ssl_ctx = sc;
	ctx->hostname = server ? NULL : g_strdup(hostname);
	SSL_CTX_set_app_data(sc, ctx);
	/* The traffic secret for our own record layer (tls-chan.c own_start). */
	SSL_CTX_set_keylog_callback(sc, tm_tls_keylog_cb);
	ctx->own_records = g_strcmp0(g_getenv("TAGMIG_TLS_RECORDS"), "openssl") != 0;
	ctx->key_limit = TM_TLS_KEY_LIMIT;

	g_autoptr(GError) ktls = NULL;
	g_autofree char *why = NULL;
	if (g_strcmp0(g_getenv("TAGMIG_KTLS"), "0") == 0)
		ctx->ktls_reason = g_strdup("kernel TLS offload disabled (TAGMIG_KTLS=0): records "
					    "protected in user space");
	else if (tm_tls_ktls_probe(&ktls) < 0)
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
	g_free(ctx->ktls_reason);
	g_free(ctx);
}

void tm_tls_ctx_get_stats(const tm_tls_ctx *ctx, tm_tls_stats *ret)
{
	ret->full_handshakes = __atomic_load_n(&ctx->full, __ATOMIC_RELAXED);
	ret->resumed_handshakes = __atomic_load_n(&ctx->resumed, __ATOMIC_RELAXED);
	ret->handshake_us = __atomic_load_n(&ctx->handshake_us, __ATOMIC_RELAXED);
	ret->key_updates = __atomic_load_n(&ctx->key_updates, __ATOMIC_RELAXED);
	ret->ktls_channels = __atomic_load_n(&ctx->ktls_channels, __ATOMIC_RELAXED);
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

bool tm_tls_looks_like_tls(const uint8_t *buf, size_t len)
{
	/* A handshake record (22) with a 3.x legacy version: how every ClientHello starts. */
	return len >= 3 && buf[0] == 22 && buf[1] == 3 && buf[2] <= 4;
}

/* ---- explaining failures ---- */

/* Our verification of the peer's certificate failed: which check, for which certificate. */
static int explain_verify(const tls_chan *t, const char *peer, char **ret_msg)
{
	const char *subj = t->verify_subject ? t->verify_subject : "?";
	const char *which = t->verify_depth == 0 ? "certificate" : "CA certificate";
	const char *use = t->ctx->role == TM_TLS_CLIENT ? "server" : "client";
	const char *want = t->ctx->role == TM_TLS_CLIENT ? "receiver" : "sender";

	switch (t->verify_err) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		if (t->verify_depth == 0)
			*ret_msg = g_strdup_printf("the %s's certificate (%s) is not issued by the CA "
						   "in our ca-cert.pem (wrong CA?): %s", peer, subj,
						   X509_verify_cert_error_string(t->verify_err));
		else
			*ret_msg = g_strdup_printf("the %s's certificate chain leads to a CA (%s) "
						   "that is not the one in our ca-cert.pem (wrong "
						   "CA?): %s", peer, subj,
						   X509_verify_cert_error_string(t->verify_err));
		return -EKEYREJECTED;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		*ret_msg = g_strdup_printf("the %s's %s (%s) has expired (notAfter %s)", peer,
					   which, subj, t->verify_when ? t->verify_when : "?");
		return -EKEYEXPIRED;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		*ret_msg = g_strdup_printf("the %s's %s (%s) is not valid yet (notBefore %s)", peer,
					   which, subj, t->verify_when ? t->verify_when : "?");
		return -EKEYEXPIRED;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		*ret_msg = g_strdup_printf("the %s's certificate (%s) does not match the name '%s' "
					   "(name mismatch: see --tls-hostname)", peer, subj,
					   t->ctx->hostname);
		return -EKEYREJECTED;
	case X509_V_ERR_INVALID_PURPOSE:
		*ret_msg = g_strdup_printf("the %s's certificate (%s) is not meant for TLS %s "
					   "authentication (extendedKeyUsage); the %s needs a %s "
					   "certificate", peer, subj, use, want, use);
		return -EKEYREJECTED;
	default:
		*ret_msg = g_strdup_printf("the %s's %s (%s) failed verification: %s", peer, which,
					   subj, X509_verify_cert_error_string(t->verify_err));
		return -EKEYREJECTED;
	}
}

/* The peer sent a fatal alert. */
static int explain_alert(const tls_chan *t, int alert, const char *peer, char **ret_msg)
{
	const char *desc = SSL_alert_desc_string_long(alert);

	switch (alert) {
	case TLS13_AD_CERTIFICATE_REQUIRED:
		*ret_msg = g_strdup_printf("the %s requires a client certificate and we sent none "
					   "(alert: %s)", peer, desc);
		return -EACCES;
	case SSL_AD_UNKNOWN_CA:
		*ret_msg = g_strdup_printf("the %s refused our certificate: not issued by the CA it "
					   "trusts (wrong CA?) (alert: %s)", peer, desc);
		return -EKEYREJECTED;
	case SSL_AD_CERTIFICATE_EXPIRED:
		*ret_msg = g_strdup_printf("the %s refused our certificate as expired or not yet "
					   "valid (alert: %s)", peer, desc);
		return -EKEYEXPIRED;
	case SSL_AD_BAD_CERTIFICATE:
	case SSL_AD_UNSUPPORTED_CERTIFICATE:
	case SSL_AD_CERTIFICATE_REVOKED:
	case SSL_AD_CERTIFICATE_UNKNOWN:
	case SSL_AD_ACCESS_DENIED:
		*ret_msg = g_strdup_printf("the %s refused our certificate (alert: %s)", peer, desc);
		return -EKEYREJECTED;
	case SSL_AD_PROTOCOL_VERSION:
	case SSL_AD_INSUFFICIENT_SECURITY:
		*ret_msg = g_strdup_printf("the %s refused the TLS version or cipher suites: TLS 1.3 "
					   "is required (alert: %s)", peer, desc);
		return -EPROTONOSUPPORT;
	case SSL_AD_BAD_RECORD_MAC:
	case SSL_AD_DECRYPT_ERROR:
		*ret_msg = g_strdup_printf("the %s could not authenticate our TLS records: the data "
					   "was altered in transit (alert: %s)", peer, desc);
		return -EBADMSG;
	default:
		*ret_msg = g_strdup_printf("the %s aborted the TLS session (alert: %s)", peer, desc);
		return -EPROTO;
	}
}

int tm_tls_explain(tls_chan *t, int ret, const char *what, char **ret_msg)
{
	const char *peer = t->ctx->role == TM_TLS_CLIENT ? "receiver" : "sender";
	int sslerr = SSL_get_error(t->ssl, ret);
	unsigned long e = ERR_peek_error();
	int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
	int code;

	/* Past here the SSL object is unusable: no close_notify at close. Never un-broken. */
	if (sslerr != SSL_ERROR_ZERO_RETURN)
		t->broken = true;

	if (t->write_blocked && SSL_get_key_update_type(t->ssl) != SSL_KEY_UPDATE_NONE) {
		/* OpenSSL answers a KeyUpdate request with a record in our direction: refused. */
		*ret_msg = g_strdup_printf("the %s requested a TLS key update of the sender's "
					   "direction, which tagmig's record layer does not take "
					   "from OpenSSL: not supported", peer);
		code = -EPROTO;
	} else if (t->verify_err) {
		code = explain_verify(t, peer, ret_msg);
	} else if (t->io_err) {
		code = t->io_err;
		if (code == -ECONNRESET || code == -EPIPE) {
			code = -ECONNRESET;
			if (t->handshaking)
				*ret_msg = g_strdup_printf(
					"the %s closed the connection during the TLS handshake%s", peer,
					t->nfirst == 0 ? " (does it expect plaintext? is TLS "
							 "configured on both sides?)" : "");
			else
				*ret_msg = g_strdup_printf(
					"premature end: the %s closed the connection without a TLS "
					"close_notify (the stream may have been cut)", peer);
		} else if (code == -ETIMEDOUT) {
			*ret_msg = g_strdup_printf("TLS %s: timed out waiting for the %s", what, peer);
		} else {
			*ret_msg = g_strdup_printf("TLS %s: %s", what, g_strerror(-code));
		}
	} else if (sslerr == SSL_ERROR_ZERO_RETURN) {
		*ret_msg = g_strdup_printf("the %s ended the TLS session (close_notify) while more "
					   "data was expected", peer);
		code = -ECONNRESET;
	} else if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
		*ret_msg = g_strdup_printf("the %s presented no client certificate: mutual "
					   "authentication requires client-cert.pem", peer);
		code = -EACCES;
	} else if (reason > SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) {
		code = explain_alert(t, reason - SSL_AD_REASON_OFFSET, peer, ret_msg);
	} else if (t->handshaking &&
		   (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_HTTP_REQUEST ||
		    reason == SSL_R_HTTPS_PROXY_REQUEST || reason == SSL_R_UNKNOWN_PROTOCOL ||
		    reason == SSL_R_PACKET_LENGTH_TOO_LONG || reason == SSL_R_WRONG_SSL_VERSION ||
		    reason == SSL_R_LENGTH_TOO_SHORT || reason == SSL_R_UNEXPECTED_MESSAGE ||
		    reason == SSL_R_UNEXPECTED_RECORD || reason == SSL_R_RECORD_LENGTH_MISMATCH)) {
		if (t->nfirst >= 4 && memcmp(t->first, "TMIG", 4) == 0)
			*ret_msg = g_strdup_printf("the %s is not speaking TLS: it sent a plaintext "
						   "tagmig message (is TLS configured on both sides?)",
						   peer);
		else
			*ret_msg = g_strdup_printf("the %s is not speaking TLS (first bytes received: "
						   "%02x %02x %02x %02x %02x): %s", peer,
						   t->first[0], t->first[1], t->first[2], t->first[3],
						   t->first[4], ERR_reason_error_string(e));
		code = -EPROTO;
	} else if (reason == SSL_R_UNSUPPORTED_PROTOCOL || reason == SSL_R_NO_SHARED_CIPHER ||
		   reason == SSL_R_NO_PROTOCOLS_AVAILABLE ||
		   reason == SSL_R_NO_SUITABLE_KEY_SHARE) {
		*ret_msg = g_strdup_printf("the %s does not offer TLS 1.3 with a common cipher "
					   "suite: %s", peer, ERR_reason_error_string(e));
		code = -EPROTONOSUPPORT;
	} else if (reason == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC ||
		   reason == SSL_R_DECRYPTION_FAILED) {
		*ret_msg = g_strdup("TLS record authentication failed (bad record MAC): the data "
				    "was altered in transit");
		code = -EBADMSG;
	} else if (e) {
		/* Anything else: a malformed record or handshake message. */
		*ret_msg = g_strdup_printf("TLS %s failed: %s%s", what, ERR_reason_error_string(e),
					   t->handshaking ? "" : " (malformed TLS record)");
		code = t->handshaking ? -EPROTO : -EBADMSG;
	} else {
		*ret_msg = g_strdup_printf("TLS %s failed: unexpected end of the TLS stream", what);
		code = -ECONNRESET;
	}
	ERR_clear_error();
	return code;
}

void tm_tls_fill_stats(const tm_tls_ctx *ctx, const tm_chan *ch, tm_stats *ret)
{
	tm_tls_stats st;

	if (!ctx)
		return;
	tm_tls_ctx_get_stats(ctx, &st);
	ret->tls_full_handshakes = st.full_handshakes;
	ret->tls_resumed_handshakes = st.resumed_handshakes;
	ret->tls_handshake_seconds = (double)st.handshake_us / 1e6;
	const char *cipher = ch ? tm_tls_chan_cipher(ch) : NULL;
	g_strlcpy(ret->tls_cipher, cipher ? cipher : "", sizeof(ret->tls_cipher));
	if (st.ktls_channels > 0)
		g_snprintf(ret->tls_note, sizeof(ret->tls_note), "kernel TLS offload: the kernel "
			   "protects the sender's records on %" G_GUINT64_FORMAT " channel(s)",
			   st.ktls_channels);
	else
		g_snprintf(ret->tls_note, sizeof(ret->tls_note), "%s by %s record layer",
			   tm_tls_ctx_ktls_reason(ctx),
			   ctx->own_records ? "tagmig's" : "OpenSSL's");
}
