/* SPDX-License-Identifier: MIT */
/*
 * Failure text: turns what OpenSSL, the certificate checks and the inner handle report into
 * -errno and a message that says which check failed, for the handshake and for every later call.
 */
#include <errno.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "transport/tls/tls-internal.h"

/* ---- explaining failures ---- */

/* A failure of this side's sending direction: data, or our close_notify. */
static bool sending(const char *what)
{
	return strcmp(what, "send") == 0 || strcmp(what, "close_notify") == 0;
}

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
	case X509_V_ERR_CERT_REVOKED:
		*ret_msg = g_strdup_printf("the %s's %s (%s) has been revoked (listed in our "
					   "ca-crl.pem)", peer, which, subj);
		return -EKEYREJECTED;
	case X509_V_ERR_UNABLE_TO_GET_CRL:
		*ret_msg = g_strdup_printf("the %s's %s (%s) cannot be checked for revocation: our "
					   "ca-crl.pem holds no revocation list of its issuer (it "
					   "needs one of every CA of the chain)", peer, which, subj);
		return -EKEYREJECTED;
	case X509_V_ERR_CRL_HAS_EXPIRED:
	case X509_V_ERR_CRL_NOT_YET_VALID:
		*ret_msg = g_strdup_printf("the revocation list in our ca-crl.pem for the %s's %s "
					   "(%s) %s: renew ca-crl.pem", peer, which, subj,
					   t->verify_err == X509_V_ERR_CRL_HAS_EXPIRED
						   ? "has expired (past its nextUpdate)"
						   : "is not valid yet");
		return -EKEYEXPIRED;
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		*ret_msg = g_strdup_printf("the %s's certificate (%s) does not match the name '%s' "
					   "(name mismatch: see --tls-hostname)", peer, subj,
					   t->ctx->hostname);
		return -EKEYREJECTED;
	case X509_V_ERR_APPLICATION_VERIFICATION:
		*ret_msg = g_strdup_printf("the %s's certificate (subject %s) is from our CA but not in "
					   "the allow-list of senders (tls_authz, --tls-authz)", peer, subj);
		return -EACCES;
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

int tm_tls_explain_alert(const tls_chan *t, int alert, char **ret_msg)
{
	const char *peer = t->ctx->role == TM_TLS_CLIENT ? "receiver" : "sender";
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
			else if (sending(what))
				/* What it sent before (a close_notify, say) is not read yet. */
				*ret_msg = g_strdup_printf("the %s closed or reset the connection "
							   "while this side was sending%s", peer,
							   strcmp(what, "send") ? " its TLS close_notify"
										: "");
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
		code = tm_tls_explain_alert(t, reason - SSL_AD_REASON_OFFSET, ret_msg);
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

/* Records why an SSL call failed, for tm_tls_last_error(). Returns -errno. */
int tm_tls_io_fail(tls_chan *t, int ret, const char *what)
{
	g_free(t->err_msg);
	t->err_msg = NULL;
	int io_err = t->io_err;
	int r = tm_tls_explain(t, ret, what, &t->err_msg);
	/* A send the peer stopped taking: its alert, if it sent one, says why. */
	int a = 0;
	if ((r == -ECONNRESET || r == -ETIMEDOUT) &&
	    sending(what) && (a = tm_tls_read_alert(t)) < 0)
		r = a;
	/*
	 * The peer closed or reset the connection under a send (our close_notify's too), and sent
	 * no alert: only our sending is over. What it sent before its close stays readable
	 * (tm_tls_read_alert kept what it read on OpenSSL's side; our records' side has read
	 * nothing of it yet). OpenSSL keeps the record the failed write left pending: a KeyUpdate
	 * request the peer sends after this (OpenSSL both ways; tagmig peers send none) would have
	 * OpenSSL write during a read, which then fails the channel for good.
	 */
	if (a == 0 && r == -ECONNRESET && (io_err == -EPIPE || io_err == -ECONNRESET) &&
	    sending(what)) {
		t->tx_dead = true;
		t->broken = false;
	}
	/* OpenSSL's alert for the direction our records own: sent with our keys. */
	if (t->alert_wanted)
		tm_tls_alert(t, t->alert_wanted);
	return r;
}

/*
 * The inner handle failed under our records: explained like OpenSSL's failures, and fatal (sealed
 * records may have been dropped, so the stream cannot go on), but for a send the peer's close
 * ended: that direction alone is over (t->tx_dead).
 */
int tm_tls_io_fatal(tls_chan *t, const char *what)
{
	int r = tm_tls_io_fail(t, 0, what);
	if (!t->tx_dead || !sending(what))
		t->broken = true;
	return r;
}

int tm_tls_fail(tls_chan *t, int code, char *msg)
{
	g_free(t->err_msg);
	t->err_msg = msg;
	t->broken = true;
	return code;
}
