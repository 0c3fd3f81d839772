/* SPDX-License-Identifier: MIT */
/*
 * tagmig's own record engine (tm_tls_engine_own) for the sender-to-receiver direction once
 * OpenSSL's handshake is done, with the keys OpenSSL derived (records.c seals and opens). The
 * sender encrypts straight from the caller's iovecs (guest RAM) into the batch it hands to the
 * inner send; the receiver decrypts a record that fills the caller's iovecs straight into them.
 * What a record's content means (data, close_notify, alerts, KeyUpdate) is shared with the kernel
 * TLS engine, which opens the same records in the kernel (ktls.c).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "tagmig/error.h"
#include "transport/tls/tls-internal.h"

/* ---- tagmig's own records for the sender-to-receiver direction (records.c) ---- */

/* Seals one record of plen content bytes taken from c (advanced) into t->out. */
static int seal(tls_chan *t, uint8_t type, tm_tls_cursor *c, size_t plen)
{
	if (t->nout + plen + TM_TLS_OVERHEAD > TM_TLS_OUT && tm_tls_flush_out(t) < 0)
		return tm_tls_io_fatal(t, "send");
	uint8_t *rec = t->out + t->nout, *o = rec + TM_TLS_HDR;
	int r = tm_tls_seal_begin(&t->tx, rec, plen);
	for (size_t left = plen; r == 0 && left > 0;) {
		size_t k = MIN(tm_tls_cursor_span(c), left);
		if (k == 0)
			return tm_tls_fail(t, -EINVAL, g_strdup("TLS send: the iovecs hold less than "
							     "the length given"));
		r = tm_tls_crypt(&t->tx, o, (const uint8_t *)c->v->iov_base + c->off, k);
		c->off += k;
		o += k;
		left -= k;
	}
	if (r == 0)
		r = tm_tls_seal_end(&t->tx, type, o);
	if (r < 0)
		return tm_tls_fail(t, -EPROTO, g_strdup("TLS send: encryption failed in OpenSSL"));
	t->nout += plen + TM_TLS_OVERHEAD;
	return 0;
}

static int seal_buf(tls_chan *t, uint8_t type, const void *buf, size_t len)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
	tm_tls_cursor c = { &v, 1, 0 };
	return seal(t, type, &c, len);
}

/*
 * RFC 8446 5.5: a key protects a bounded number of records (about 2^24.5 for AES-GCM). Past
 * ctx->key_limit records, or when the receiver asked for it (KeyUpdate with update_requested,
 * which 4.6.3 says must be answered; OpenSSL would answer at its next write, which our
 * direction never makes), tell the peer (KeyUpdate, update_not_requested, as the last message
 * under the old key) and move to the next traffic secret.
 */
static int maybe_update_key(tls_chan *t)
{
	static const uint8_t key_update[5] = { TM_TLS_HS_KEY_UPDATE, 0, 0, 1, 0 };

	if (t->tx.records < t->ctx->key_limit && !t->update_requested)
		return 0;
	int r = seal_buf(t, TM_TLS_CT_HANDSHAKE, key_update, sizeof(key_update));
	if (r == 0 && tm_tls_dir_update(&t->tx) < 0)
		r = tm_tls_fail(t, -EPROTO, g_strdup("TLS send: deriving the next key failed"));
	if (r == 0) {
		t->update_requested = false;
		tm_count(&t->ctx->key_updates, 1);
	}
	return r;
}

/*
 * The first iovec (a message header, with its page entries) gets records of its own, the rest
 * of the call (page data, tags) is cut into full records: a receiver that reads the header,
 * then the payload, finds records that fit its buffers and decrypts the payload in place.
 */
static int own_send(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	if (t->tx_closed)
		return -EPIPE;
	tm_tls_cursor c = { iov, n, 0 };
	size_t head = n > 0 ? MIN(iov[0].iov_len, len) : 0;
	int r = 0;

	while (r == 0 && len > 0) {
		size_t k = MIN(head > 0 ? head : len, (size_t)TM_TLS_RECORD);
		if ((r = maybe_update_key(t)) == 0)
			r = seal(t, TM_TLS_CT_DATA, &c, k);
		head -= MIN(head, k);
		len -= k;
	}
	if (r == 0 && tm_tls_flush_out(t) < 0)
		r = tm_tls_io_fatal(t, "send");
	return r;
}

/* The content of an opened record, t->plain[0..len): content, type, zero padding. */
static int own_plain(tls_chan *t, size_t len)
{
	uint8_t *p = t->plain;

	while (len > 0 && p[len - 1] == 0)
		len--;
	/* RFC 8446 5.4: no non-zero octet is unexpected_message. */
	if (len == 0)
		return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_UNEXPECTED_MESSAGE,
					 g_strdup("TLS receive: a record without content type "
						  "(malformed TLS record)"));
	uint8_t type = p[--len];
	return tm_tls_own_content(t, type, len);
}

/* The peer's KeyUpdate: the next key for its records; requested: answer with ours (4.6.3). */
static int key_update_rx(tls_chan *t, bool requested)
{
	if (tm_tls_dir_update(&t->rx) < 0)
		return tm_tls_fail_alert(t, -EPROTO, SSL_AD_INTERNAL_ERROR,
					 g_strdup("TLS receive: deriving the next key failed"));
	int kr = t->rx_engine->rekey_rx ? t->rx_engine->rekey_rx(t) : 0;
	if (kr < 0)
		return kr;
	tm_count(&t->ctx->key_updates, 1);
	/*
	 * update_requested: OpenSSL protects our sending direction; make it send its KeyUpdate now
	 * (SSL_key_update alone waits for the next SSL_write).
	 */
	if (requested && SSL_get_key_update_type(t->ssl) == SSL_KEY_UPDATE_NONE &&
	    (SSL_key_update(t->ssl, SSL_KEY_UPDATE_NOT_REQUESTED) != 1 ||
	     SSL_do_handshake(t->ssl) != 1 || tm_tls_flush_out(t) < 0)) {
		int r = tm_tls_io_fail(t, 0, "receive");
		t->broken = true;
		return r;
	}
	return 0;
}

/*
 * What a record's content means. Each refusal answers with the alert RFC 8446 names for it:
 * record_overflow (5.4), unexpected_message for an unknown content type (5.1), a handshake
 * message other than KeyUpdate, or one that does not end its record (5.1), decode_error for a
 * message of the wrong length (6.2), illegal_parameter for a request_update other than 0 or 1
 * (4.6.3). An alert from the peer is answered by none.
 */
int tm_tls_own_content(tls_chan *t, uint8_t type, size_t len)
{
	const char *peer = t->ctx->role == TM_TLS_CLIENT ? "receiver" : "sender";
	uint8_t *p = t->plain;

	if (len > TM_TLS_RECORD)
		return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_RECORD_OVERFLOW,
				g_strdup_printf("TLS receive: a record with %zu bytes of content, more "
						"than TLS allows (record overflow)", len));
	switch (type) {
	case TM_TLS_CT_DATA:
		t->plain_off = 0;
		t->plain_len = len;
		return 0;
	case TM_TLS_CT_ALERT:
		if (len == 2 && p[1] == SSL_AD_CLOSE_NOTIFY) {
			t->rx_closed = true;
			g_free(t->err_msg);
			t->err_msg = g_strdup_printf("the %s ended the TLS session (close_notify) while "
						     "more data was expected", peer);
			return -ECONNRESET;
		}
		if (len != 2)
			return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_DECODE_ERROR,
					g_strdup_printf("the %s sent a malformed TLS alert (%zu bytes)",
							peer, len));
		char *msg;
		int code = tm_tls_explain_alert(t, p[1], &msg);
		return tm_tls_fail(t, code, msg);
	case TM_TLS_CT_HANDSHAKE:
		/* Only KeyUpdate may follow the handshake towards a server, last in its record. */
		if (len < 4 || p[0] != TM_TLS_HS_KEY_UPDATE)
			return tm_tls_fail_alert(t, -EPROTO, SSL_AD_UNEXPECTED_MESSAGE,
					g_strdup_printf("the %s sent an unexpected TLS handshake message "
							"(type %u) after the handshake", peer,
							len > 0 ? p[0] : 0u));
		if (p[1] != 0 || p[2] != 0 || p[3] != 1)
			return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_DECODE_ERROR,
					g_strdup_printf("the %s sent a malformed TLS KeyUpdate (length "
							"%u)", peer, (unsigned)p[1] << 16 |
							(unsigned)p[2] << 8 | p[3]));
		if (len != 5)
			return tm_tls_fail_alert(t, -EPROTO, SSL_AD_UNEXPECTED_MESSAGE,
					g_strdup_printf("the %s sent a TLS KeyUpdate that does not end "
							"its record", peer));
		if (p[4] > 1)
			return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_ILLEGAL_PARAMETER,
					g_strdup_printf("the %s sent a TLS KeyUpdate with request_update "
							"%u", peer, p[4]));
		return key_update_rx(t, p[4] == 1);
	default:
		return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_UNEXPECTED_MESSAGE,
				g_strdup_printf("TLS receive: unexpected record content type %u "
						"(malformed TLS record)", type));
	}
}

/*
 * Opens the next record. Application data that fills at least TM_TLS_STREAM_MIN bytes of what the
 * caller still wants (len) is decrypted straight into c (advanced by what it delivered, *done);
 * anything else lands in t->plain. The content type is the last byte of a record's content and
 * padding may precede it, so a record decrypted in place is taken back into t->plain when it
 * turns out not to be unpadded application data; the caller's bytes it touched are then written
 * again from there. Nothing of a record counts as received before its tag is checked.
 */
static int own_record(tls_chan *t, tm_tls_cursor *c, size_t len, size_t *done)
{
	int r;

	*done = 0;
	if ((r = tm_tls_fill_in(t, TM_TLS_HDR, 0)) < 0)
		return r;
	const uint8_t *h = t->in + t->in_off;
	size_t clen = (size_t)h[3] << 8 | h[4];
	/*
	 * The alert for each (RFC 8446): another record type than application_data is
	 * unexpected_message (5.1); a length beyond 2^14 + 256 record_overflow (5.2); a record too
	 * short for its tag cannot be authentic, bad_record_mac (5.2); another legacy version
	 * decode_error, as OpenSSL answers it (5.1 says to ignore the field; TLS stacks write
	 * 0x0303, and it is authenticated anyway).
	 */
	uint8_t alert = h[0] != TM_TLS_CT_DATA		 ? SSL_AD_UNEXPECTED_MESSAGE
			: clen > TM_TLS_MAX_CIPHERTEXT	 ? SSL_AD_RECORD_OVERFLOW
			: clen < TM_TLS_TAG		 ? SSL_AD_BAD_RECORD_MAC
			: h[1] != 3 || h[2] != 3	 ? SSL_AD_DECODE_ERROR
							 : 0;
	if (alert)
		return tm_tls_fail_alert(t, -EBADMSG, alert,
				g_strdup_printf("TLS receive: malformed TLS record header %02x %02x "
						"%02x, length %zu", h[0], h[1], h[2], clen));
	size_t plen = clen - TM_TLS_TAG; /* content, type and padding (0: no content type) */
	/* RFC 8446 5.4: content, type and padding together at most 2^14 + 1 bytes. */
	if (plen > TM_TLS_RECORD + 1)
		return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_RECORD_OVERFLOW,
				g_strdup_printf("TLS receive: a record with %zu bytes of content, type "
						"and padding, more than TLS allows (record overflow)",
						plen));
	/*
	 * When the caller wants more than this (long) record holds, the next header must come too:
	 * read it with the body. Never after a short record, which may be the last (close_notify).
	 */
	if ((r = tm_tls_fill_in(t, TM_TLS_HDR + clen, clen >= 256 && len > plen - 1 ? TM_TLS_HDR : 0)) < 0)
		return r;
	uint8_t hdr[TM_TLS_HDR];
	memcpy(hdr, t->in + t->in_off, sizeof(hdr));
	const uint8_t *body = t->in + t->in_off + TM_TLS_HDR;
	bool direct = plen > TM_TLS_STREAM_MIN && len >= plen - 1;
	tm_tls_cursor start = *c;
	uint8_t last;

	r = tm_tls_open_begin(&t->rx, hdr);
	if (direct) {
		const uint8_t *in = body;
		for (size_t left = plen - 1; r == 0 && left > 0;) {
			size_t k = MIN(tm_tls_cursor_span(c), left);
			if (k == 0) {
				r = -EINVAL; /* iovecs shorter than len: the caller's bug */
				break;
			}
			r = tm_tls_crypt(&t->rx, (uint8_t *)c->v->iov_base + c->off, in, k);
			c->off += k;
			in += k;
			left -= k;
		}
		if (r == 0)
			r = tm_tls_crypt(&t->rx, &last, in, 1);
	} else {
		r = tm_tls_crypt(&t->rx, t->plain, body, plen);
	}
	if (r == 0)
		r = tm_tls_open_end(&t->rx, body + plen);
	t->in_off += TM_TLS_HDR + clen;
	t->in_len -= TM_TLS_HDR + clen;
	if (r == -EINVAL)
		return tm_tls_fail(t, -EINVAL, g_strdup("TLS receive: the iovecs hold less than the "
						     "length given"));
	if (r < 0) {
		*c = start;
		return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_BAD_RECORD_MAC,
					 g_strdup("TLS record authentication failed (bad record MAC): "
						  "the data was altered in transit"));
	}
	if (direct && last == TM_TLS_CT_DATA) {
		*done = plen - 1;
		return 0;
	}
	if (direct) {
		/* Not plain data after all: take the content back and rewind. */
		*c = start;
		tm_tls_cursor g = start;
		for (size_t i = 0; i < plen - 1;) {
			size_t k = MIN(tm_tls_cursor_span(&g), plen - 1 - i);
			memcpy(t->plain + i, (uint8_t *)g.v->iov_base + g.off, k);
			g.off += k;
			i += k;
		}
		t->plain[plen - 1] = last;
	}
	return own_plain(t, plen);
}

static int own_recv(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	tm_tls_cursor c = { iov, n, 0 };

	while (len > 0) {
		if (t->plain_len > 0) {
			size_t k = MIN(MIN(t->plain_len, len), tm_tls_cursor_span(&c));
			if (k == 0)
				return tm_tls_fail(t, -EINVAL, g_strdup("TLS receive: the iovecs hold "
								     "less than the length given"));
			memcpy((uint8_t *)c.v->iov_base + c.off, t->plain + t->plain_off, k);
			c.off += k;
			t->plain_off += k;
			t->plain_len -= k;
			len -= k;
			continue;
		}
		if (t->rx_closed)
			return -ECONNRESET; /* err_msg says so */
		size_t done;
		int r = own_record(t, &c, len, &done);
		if (r < 0)
			return r;
		len -= done;
	}
	return 0;
}

/* Our close_notify, as the last record of our direction. */
static int own_close_notify(tls_chan *t)
{
	static const uint8_t alert[2] = { 1 /* warning */, SSL_AD_CLOSE_NOTIFY };

	if (t->tx_closed)
		return 0;
	t->tx_closed = true;
	int r = seal_buf(t, TM_TLS_CT_ALERT, alert, sizeof(alert));
	if (r == 0 && tm_tls_flush_out(t) < 0)
		r = tm_tls_io_fatal(t, "close_notify");
	/* OpenSSL must not send one of its own in our direction. */
	SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
	return r;
}

int tm_tls_own_await_close(tls_chan *t)
{
	/* Ours is sent; now the peer's close_notify must come, and nothing else. */
	uint8_t b;
	struct iovec v = { .iov_base = &b, .iov_len = 1 };
	int r = t->rx_engine->recv(t, &v, 1, 1);
	if (r == 0)
		return tm_tls_fail(t, -EPROTO, g_strdup("the sender sent data after the end of the "
							"session instead of a TLS close_notify"));
	return t->rx_closed ? 0 : r;
}

/* A fatal alert as the last record of our direction (tls-alert.c), with our keys. */
static int own_alert(tls_chan *t, uint8_t desc)
{
	if (t->tx_closed)
		return 0;
	t->tx_closed = true;
	SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
	return tm_tls_seal_alert(t, &t->tx, desc);
}

/* After the handshake: our records take over the sender-to-receiver direction. */
static int own_start(tls_chan *t)
{
	const bool client = t->ctx->role == TM_TLS_CLIENT;
	int r = -EPROTO;

	if (t->secret_len > 0)
		r = tm_tls_dir_init(client ? &t->tx : &t->rx, t->ssl, t->secret, t->secret_len,
				    client);
	OPENSSL_cleanse(t->secret, sizeof(t->secret));
	t->secret_len = 0;
	if (r < 0)
		return tm_tls_fail(t, r, g_strdup_printf("cannot set up tagmig's TLS record layer for "
						      "cipher suite %s (%s)",
						      SSL_get_cipher_name(t->ssl),
						      g_strerror(-r)));
	if (!client)
		t->plain = g_malloc(TM_TLS_MAX_CIPHERTEXT);
	return 0;
}

const tm_tls_engine tm_tls_engine_own = {
	.name = "tagmig",
	.own_keys = true,
	.start = own_start,
	.send = own_send,
	.recv = own_recv,
	.close_notify = own_close_notify,
	.await_close = tm_tls_own_await_close,
	.alert = own_alert,
};
