/* SPDX-License-Identifier: MIT */
/*
 * Fatal TLS alerts (RFC 8446 6.2) when a direction that tagmig's record layer serves fails, so
 * that the peer learns why instead of seeing the connection end.
 *
 * The receiver (server) opens the sender's records itself (tls-own.c, or kernel TLS), but its own
 * sending direction is OpenSSL's, and OpenSSL has no call to send an arbitrary alert. So the
 * server follows that direction as OpenSSL writes it: the first application traffic secret from
 * the key-log callback (SERVER_TRAFFIC_SECRET_0, logged right after OpenSSL sealed its Finished
 * under the handshake key), then one sequence number per record OpenSSL seals (the message
 * callback reports each record's inner content type as it seals it, before the BIO sees it), and
 * the next secret after each KeyUpdate it writes (reported once sealed, before OpenSSL switches).
 * An alert is then sealed with those keys and the next sequence number, after whatever OpenSSL
 * has already written, and OpenSSL may write nothing more (its next record would reuse the
 * alert's nonce): writes_barred, as on the client.
 *
 * The sender (client) owns its sending direction (tagmig's records or kernel TLS), where OpenSSL
 * may not write at all. When OpenSSL's receiving direction fails, OpenSSL seals an alert in our
 * direction with its stale sequence number: the BIO drops that record unsent, the message
 * callback tells which alert it was, and the client sends it with its own keys (the engine's
 * alert hook) once the failing call returns.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "transport/tls/tls-internal.h"

void tm_tls_alert_follow(tls_chan *t, const SSL *ssl, const uint8_t *secret, size_t len)
{
	tm_tls_dir_free(&t->ossl_tx);
	/* A suite our records cannot seal (none we offer): no alerts, nothing else changes. */
	t->ossl_tx_ok = tm_tls_dir_init(&t->ossl_tx, ssl, secret, len, true) == 0;
}

void tm_tls_alert_msg(tls_chan *t, int write_p, int content_type, const uint8_t *buf, size_t len)
{
	if (!write_p)
		return;
	switch (content_type) {
	case SSL3_RT_INNER_CONTENT_TYPE:
		/* One more protected record sealed: the next nonce. */
		if (t->ossl_tx_ok) {
			t->ossl_tx.seq++;
			t->ossl_tx.records++;
		}
		t->ossl_alert_next = len == 1 && buf[0] == SSL3_RT_ALERT;
		break;
	case SSL3_RT_HANDSHAKE:
		/* Sealed under the old key; OpenSSL moves to the next one right after. */
		if (len >= 1 && buf[0] == TM_TLS_HS_KEY_UPDATE && t->ossl_tx_ok &&
		    tm_tls_dir_update(&t->ossl_tx) < 0)
			t->ossl_tx_ok = false;
		break;
	case SSL3_RT_ALERT:
		/* The BIO dropped it (writes_barred): ours goes out instead (tm_tls_io_fail). */
		if (t->writes_barred && len == 2 && buf[0] == SSL3_AL_FATAL && !t->alert_wanted)
			t->alert_wanted = buf[1];
		break;
	}
}

int tm_tls_seal_alert(tls_chan *t, tm_tls_dir *d, uint8_t desc)
{
	const uint8_t alert[2] = { SSL3_AL_FATAL, desc };
	const size_t rlen = sizeof(alert) + TM_TLS_OVERHEAD;

	if (t->nout + rlen > TM_TLS_OUT && tm_tls_flush_out(t) < 0)
		return t->io_err;
	uint8_t *rec = t->out + t->nout;
	int r = tm_tls_seal_begin(d, rec, sizeof(alert));
	if (r == 0)
		r = tm_tls_crypt(d, rec + TM_TLS_HDR, alert, sizeof(alert));
	if (r == 0)
		r = tm_tls_seal_end(d, TM_TLS_CT_ALERT, rec + TM_TLS_HDR + sizeof(alert));
	if (r < 0)
		return r;
	t->nout += rlen;
	return tm_tls_flush_out(t);
}

void tm_tls_alert(tls_chan *t, uint8_t desc)
{
	if (t->alert_sent || !t->tx_engine->alert || !t->out)
		return;
	t->alert_sent = true;
	/*
	 * Under kernel TLS a record that failed in the kernel left its error on the socket
	 * (sk_err), which the next send would report instead of sending: take it off first.
	 */
	if (t->rx_engine->kernel) {
		int e;
		socklen_t elen = sizeof(e);
		(void)getsockopt(t->inner->fd, SOL_SOCKET, SO_ERROR, &e, &elen);
	}
	int io_err = t->io_err;
	t->io_err = 0;
	(void)t->tx_engine->alert(t, desc);
	/* The failure being reported is the one before the alert. */
	t->io_err = io_err;
}

int tm_tls_read_alert(tls_chan *t)
{
	uint8_t buf[4096];
	size_t got;
	int code = 0;

	if (t->rx_engine != &tm_tls_engine_openssl || !t->in)
		return 0;
	t->nowait = true;
	t->io_err = 0;
	size_t want = t->want;
	t->want = 0; /* no read-ahead past what has arrived (bio_read) */
	ERR_clear_error();
	/*
	 * Whatever data came before the alert is kept for the next recv: the peer's last words
	 * (a tagmig ERROR) may be in it. Bounded: 64 reads.
	 */
	for (int i = 0; i < 64; i++) {
		int ok = SSL_read_ex(t->ssl, buf, sizeof(buf), &got);
		if (ok == 1) {
			if (!t->kept) /* sized once: no copy of the plaintext is freed unwiped */
				t->kept = g_byte_array_sized_new(64 * sizeof(buf));
			g_byte_array_append(t->kept, buf, (guint)got);
			continue;
		}
		unsigned long e = ERR_peek_error();
		int reason = ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
		if (SSL_get_error(t->ssl, ok) == SSL_ERROR_SSL && reason > SSL_AD_REASON_OFFSET &&
		    reason < SSL_AD_REASON_OFFSET + 256) {
			char *msg;
			code = tm_tls_explain_alert(t, reason - SSL_AD_REASON_OFFSET, &msg);
			g_free(t->err_msg);
			t->err_msg = msg;
		} else if (SSL_get_error(t->ssl, ok) == SSL_ERROR_SSL) {
			/* A record OpenSSL refused: that is the failure, and the stream is over. */
			char *msg = NULL;
			t->want = want;
			code = tm_tls_explain(t, ok, "receive", &msg);
			g_free(t->err_msg);
			t->err_msg = msg;
			t->broken = true;
		}
		break;
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	ERR_clear_error();
	t->nowait = false;
	t->want = want;
	return code;
}

int tm_tls_fail_alert(tls_chan *t, int code, uint8_t desc, char *msg)
{
	tm_tls_fail(t, code, msg);
	tm_tls_alert(t, desc);
	return code;
}
