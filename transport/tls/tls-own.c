/* SPDX-License-Identifier: MIT */
/*
 * The sender-to-receiver direction of a TLS channel once OpenSSL's handshake is done: tagmig's
 * own records (records.c seals and opens them) and kernel TLS (ktls.c), both with the keys
 * OpenSSL derived. The sender encrypts straight from the caller's iovecs (guest RAM) into the
 * batch it hands to the inner send; the receiver decrypts a record that fills the caller's
 * iovecs straight into them. tls-chan.c dispatches here when t->own_tx / t->own_rx is set.
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

/* Content types (RFC 8446 5.1) and handshake message types we handle after the handshake. */
enum { CT_ALERT = 21, CT_HANDSHAKE = 22, CT_DATA = 23, HS_KEY_UPDATE = 24 };

/*
 * A record whose content would fill at least this much of the caller's buffer is decrypted
 * straight into it; shorter ones (message headers, control messages) go through t->plain.
 */
#define STREAM_MIN 512u

/* A position in an iovec array; zero-length entries are skipped. */
typedef struct cursor {
	const struct iovec *v;
	unsigned n;
	size_t off;
} cursor;

static size_t cursor_span(cursor *c)
{
	while (c->n > 0 && c->off == c->v->iov_len) {
		c->v++;
		c->n--;
		c->off = 0;
	}
	return c->n > 0 ? c->v->iov_len - c->off : 0;
}

/* Fails the session with a message of ours (not an OpenSSL error). Returns code. */
static int own_fail(tls_chan *t, int code, char *msg)
{
	g_free(t->err_msg);
	t->err_msg = msg;
	t->broken = true;
	return code;
}

/*
 * The inner handle failed under our records: explained like OpenSSL's failures, and always
 * fatal (sealed records may have been dropped, so the stream cannot go on).
 */
static int own_io_fail(tls_chan *t, const char *what)
{
	int r = tm_tls_io_fail(t, 0, what);
	t->broken = true;
	return r;
}

/* Seals one record of plen content bytes taken from c (advanced) into t->out. */
static int seal(tls_chan *t, uint8_t type, cursor *c, size_t plen)
{
	if (t->nout + plen + TM_TLS_OVERHEAD > TM_TLS_OUT && tm_tls_flush_out(t) < 0)
		return own_io_fail(t, "send");
	uint8_t *rec = t->out + t->nout, *o = rec + TM_TLS_HDR;
	int r = tm_tls_seal_begin(&t->tx, rec, plen);
	for (size_t left = plen; r == 0 && left > 0;) {
		size_t k = MIN(cursor_span(c), left);
		if (k == 0)
			return own_fail(t, -EINVAL, g_strdup("TLS send: the iovecs hold less than "
							     "the length given"));
		r = tm_tls_crypt(&t->tx, o, (const uint8_t *)c->v->iov_base + c->off, k);
		c->off += k;
		o += k;
		left -= k;
	}
	if (r == 0)
		r = tm_tls_seal_end(&t->tx, type, o);
	if (r < 0)
		return own_fail(t, -EPROTO, g_strdup("TLS send: encryption failed in OpenSSL"));
	t->nout += plen + TM_TLS_OVERHEAD;
	return 0;
}

static int seal_buf(tls_chan *t, uint8_t type, const void *buf, size_t len)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
	cursor c = { &v, 1, 0 };
	return seal(t, type, &c, len);
}

/*
 * RFC 8446 5.5: a key protects a bounded number of records (about 2^24.5 for AES-GCM). Past
 * ctx->key_limit records, tell the peer (KeyUpdate, update_not_requested, as the last message
 * under the old key) and move to the next traffic secret.
 */
static int maybe_update_key(tls_chan *t)
{
	static const uint8_t key_update[5] = { HS_KEY_UPDATE, 0, 0, 1, 0 };

	if (t->tx.records < t->ctx->key_limit)
		return 0;
	int r = t->ktls_tx ? tm_ktls_send_ctrl(t->inner->fd, CT_HANDSHAKE, key_update,
					       sizeof(key_update))
			   : seal_buf(t, CT_HANDSHAKE, key_update, sizeof(key_update));
	if (r < 0 && t->ktls_tx)
		r = own_fail(t, r, g_strdup_printf("TLS send: kernel TLS: sending a key update: %s",
						   g_strerror(-r)));
	if (r == 0 && tm_tls_dir_update(&t->tx) < 0)
		r = own_fail(t, -EPROTO, g_strdup("TLS send: deriving the next key failed"));
	if (r == 0 && t->ktls_tx && (r = tm_ktls_set(t->inner->fd, &t->tx, true, false)) < 0)
		r = own_fail(t, -EPROTO, g_strdup_printf("TLS send: kernel TLS refused the next key: "
							 "%s", g_strerror(-r)));
	if (r == 0)
		tm_count(&t->ctx->key_updates, 1);
	return r;
}

/* ---- kernel TLS (ktls.c) for the same direction ---- */

static int own_content(tls_chan *t, uint8_t type, size_t len);

/* Copies len bytes' worth of iov into t->kv (grown once to the largest message) to advance it. */
static struct iovec *kv_copy(tls_chan *t, const struct iovec *iov, unsigned n, size_t len,
			     unsigned *ret_n)
{
	if (n > t->kv_cap) {
		t->kv = g_renew(struct iovec, t->kv, n);
		t->kv_cap = n;
	}
	unsigned k = 0;
	for (unsigned i = 0; i < n && len > 0; i++) {
		size_t l = MIN(iov[i].iov_len, len);
		if (l == 0)
			continue;
		t->kv[k++] = (struct iovec){ .iov_base = iov[i].iov_base, .iov_len = l };
		len -= l;
	}
	*ret_n = k;
	return t->kv;
}

/* The kernel seals: plaintext straight from the caller's memory (guest RAM) into sendmsg. */
static int ktls_send(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	unsigned kn;
	struct iovec *v = kv_copy(t, iov, n, len, &kn);

	while (len > 0) {
		if (kn == 0)
			return own_fail(t, -EINVAL, g_strdup("TLS send: the iovecs hold less than "
							     "the length given"));
		struct msghdr msg = { .msg_iov = v, .msg_iovlen = MIN(kn, (unsigned)IOV_MAX) };
		ssize_t r = sendmsg(t->inner->fd, &msg, MSG_NOSIGNAL);
		/* One system call of the TLS handle itself (path ktls), submitted and completed at once. */
		tm_count(&t->io->st.io_submissions, 1);
		tm_count(&t->io->st.io_completions, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			t->io_err = errno == EAGAIN ? -ETIMEDOUT : -errno;
			return own_io_fail(t, "send");
		}
		/* Records the kernel made: a full one per 16 KiB, a short one at the end at most. */
		t->tx.records += (size_t)r / TM_TLS_RECORD + 1;
		len -= (size_t)r;
		tm_iov_advance(&v, &kn, (size_t)r);
	}
	return 0;
}

/*
 * The kernel opens: page data straight from the socket into the caller's memory. Short reads
 * (message headers, the 1-byte read that waits for close_notify) go through t->plain, so that a
 * whole control record always fits; what comes with them is served from there.
 */
static int ktls_recv(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	unsigned kn;
	struct iovec *v = kv_copy(t, iov, n, len, &kn);

	while (len > 0) {
		if (kn == 0)
			return own_fail(t, -EINVAL, g_strdup("TLS receive: the iovecs hold less than "
							     "the length given"));
		if (t->plain_len > 0) {
			size_t k = MIN(MIN(t->plain_len, len), v->iov_len);
			memcpy(v->iov_base, t->plain + t->plain_off, k);
			t->plain_off += k;
			t->plain_len -= k;
			len -= k;
			tm_iov_advance(&v, &kn, k);
			continue;
		}
		if (t->rx_closed)
			return -ECONNRESET; /* err_msg says so */
		bool bounce = len < STREAM_MIN;
		struct iovec b = { .iov_base = t->plain, .iov_len = MAX(len, (size_t)64) };
		uint8_t type;
		ssize_t r = tm_ktls_recv(t->inner->fd, bounce ? &b : v, bounce ? 1 : kn, &type);
		/* One system call of the TLS handle itself (path ktls), submitted and completed at once. */
		tm_count(&t->io->st.io_submissions, 1);
		tm_count(&t->io->st.io_completions, 1);
		if (r == -EBADMSG)
			return own_fail(t, -EBADMSG, g_strdup("TLS record authentication failed (bad "
							      "record MAC): the data was altered in "
							      "transit"));
		if (r == -EMSGSIZE || r == -EINVAL || r == -EPROTO)
			return own_fail(t, -EBADMSG,
					g_strdup_printf("TLS receive: malformed TLS record (kernel "
							"TLS: %s)", g_strerror((int)-r)));
		if (r <= 0) {
			t->io_err = r == 0 ? -ECONNRESET : r == -EAGAIN ? -ETIMEDOUT : (int)r;
			return own_io_fail(t, "receive");
		}
		if (type == CT_DATA && bounce) {
			t->plain_off = 0;
			t->plain_len = (size_t)r;
			continue;
		}
		if (type == CT_DATA) {
			len -= (size_t)r;
			tm_iov_advance(&v, &kn, (size_t)r);
			continue;
		}
		/* A control record (its content, without type or padding) landed in the buffer. */
		if (!bounce) {
			cursor g = { v, kn, 0 };
			for (size_t i = 0; i < (size_t)r;) {
				size_t k = MIN(cursor_span(&g), (size_t)r - i);
				memcpy(t->plain + i, (uint8_t *)g.v->iov_base + g.off, k);
				g.off += k;
				i += k;
			}
		}
		int c = own_content(t, type, (size_t)r);
		if (c < 0)
			return c;
	}
	return 0;
}

/*
 * The first iovec (a message header, with its page entries) gets records of its own, the rest
 * of the call (page data, tags) is cut into full records: a receiver that reads the header,
 * then the payload, finds records that fit its buffers and decrypts the payload in place.
 */
int tm_tls_own_send(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	if (t->ktls_tx) {
		int r = maybe_update_key(t);
		return r < 0 ? r : ktls_send(t, iov, n, len);
	}
	cursor c = { iov, n, 0 };
	size_t head = n > 0 ? MIN(iov[0].iov_len, len) : 0;
	int r = 0;

	while (r == 0 && len > 0) {
		size_t k = MIN(head > 0 ? head : len, (size_t)TM_TLS_RECORD);
		if ((r = maybe_update_key(t)) == 0)
			r = seal(t, CT_DATA, &c, k);
		head -= MIN(head, k);
		len -= k;
	}
	if (r == 0 && tm_tls_flush_out(t) < 0)
		r = own_io_fail(t, "send");
	return r;
}

/*
 * Makes sure t->in holds `need` unread bytes. Reads what is missing plus whatever the socket
 * already holds (never waiting for it), plus `ahead` more bytes that must come anyway.
 */
static int fill_in(tls_chan *t, size_t need, size_t ahead)
{
	if (t->in_len >= need)
		return 0;
	if (t->in_off + need + ahead > TM_TLS_IN) {
		memmove(t->in, t->in + t->in_off, t->in_len);
		t->in_off = 0;
	}
	size_t space = TM_TLS_IN - t->in_off - t->in_len;
	size_t want = MIN(need - t->in_len + ahead, space);
	int avail = 0;
	if (ioctl(t->inner->fd, FIONREAD, &avail) == 0 && avail > 0 && (size_t)avail > want)
		want = MIN((size_t)avail, space);
	struct iovec v = { .iov_base = t->in + t->in_off + t->in_len, .iov_len = want };
	int r = tm_io_recv(t->inner, &v, 1, want);
	if (r < 0) {
		t->io_err = r;
		return own_io_fail(t, "receive");
	}
	t->in_len += want;
	return 0;
}

/* The content of an opened record, t->plain[0..len): content, type, zero padding. */
static int own_plain(tls_chan *t, size_t len)
{
	uint8_t *p = t->plain;

	while (len > 0 && p[len - 1] == 0)
		len--;
	if (len == 0)
		return own_fail(t, -EBADMSG, g_strdup("TLS receive: a record without content type "
						      "(malformed TLS record)"));
	uint8_t type = p[--len];
	return own_content(t, type, len);
}

/*
 * What a record of content type `type` with content t->plain[0..len) means: data to deliver,
 * the end of the session, or a key update.
 */
static int own_content(tls_chan *t, uint8_t type, size_t len)
{
	const char *peer = t->ctx->role == TM_TLS_CLIENT ? "receiver" : "sender";
	uint8_t *p = t->plain;

	if (len > TM_TLS_RECORD)
		return own_fail(t, -EBADMSG,
				g_strdup_printf("TLS receive: a record with %zu bytes of content, more "
						"than TLS allows (record overflow)", len));
	switch (type) {
	case CT_DATA:
		t->plain_off = 0;
		t->plain_len = len;
		return 0;
	case CT_ALERT:
		if (len == 2 && p[1] == SSL_AD_CLOSE_NOTIFY) {
			t->rx_closed = true;
			g_free(t->err_msg);
			t->err_msg = g_strdup_printf("the %s ended the TLS session (close_notify) while "
						     "more data was expected", peer);
			return -ECONNRESET;
		}
		return own_fail(t, -EPROTO,
				g_strdup_printf("the %s aborted the TLS session (alert: %s)", peer,
						len == 2 ? SSL_alert_desc_string_long(p[1]) : "?"));
	case CT_HANDSHAKE:
		/* Only KeyUpdate may follow the handshake towards a server, last in its record. */
		if (len == 5 && p[0] == HS_KEY_UPDATE && p[1] == 0 && p[2] == 0 && p[3] == 1 &&
		    p[4] <= 1) {
			if (tm_tls_dir_update(&t->rx) < 0)
				return own_fail(t, -EPROTO, g_strdup("TLS receive: deriving the "
								     "next key failed"));
			int kr = t->ktls_rx ? tm_ktls_set(t->inner->fd, &t->rx, false, false) : 0;
			if (kr < 0)
				return own_fail(t, -EPROTO,
						g_strdup_printf("TLS receive: kernel TLS refused the "
								"next key: %s", g_strerror(-kr)));
			tm_count(&t->ctx->key_updates, 1);
			/*
			 * update_requested: OpenSSL protects our sending direction; make it send its
			 * KeyUpdate now (SSL_key_update alone waits for the next SSL_write).
			 */
			if (p[4] == 1 && SSL_get_key_update_type(t->ssl) == SSL_KEY_UPDATE_NONE &&
			    (SSL_key_update(t->ssl, SSL_KEY_UPDATE_NOT_REQUESTED) != 1 ||
			     SSL_do_handshake(t->ssl) != 1 || tm_tls_flush_out(t) < 0)) {
				int r = tm_tls_io_fail(t, 0, "receive");
				t->broken = true;
				return r;
			}
			return 0;
		}
		return own_fail(t, -EPROTO,
				g_strdup_printf("the %s sent an unexpected TLS handshake message "
						"(type %u) after the handshake", peer, p[0]));
	default:
		return own_fail(t, -EBADMSG,
				g_strdup_printf("TLS receive: unexpected record content type %u "
						"(malformed TLS record)", type));
	}
}

/*
 * Opens the next record. Application data that fills at least STREAM_MIN bytes of what the
 * caller still wants (len) is decrypted straight into c (advanced by what it delivered, *done);
 * anything else lands in t->plain. The content type is the last byte of a record's content and
 * padding may precede it, so a record decrypted in place is taken back into t->plain when it
 * turns out not to be unpadded application data; the caller's bytes it touched are then written
 * again from there. Nothing of a record counts as received before its tag is checked.
 */
static int own_record(tls_chan *t, cursor *c, size_t len, size_t *done)
{
	int r;

	*done = 0;
	if ((r = fill_in(t, TM_TLS_HDR, 0)) < 0)
		return r;
	const uint8_t *h = t->in + t->in_off;
	size_t clen = (size_t)h[3] << 8 | h[4];
	if (h[0] != CT_DATA || h[1] != 3 || h[2] != 3 || clen < TM_TLS_TAG + 1 ||
	    clen > TM_TLS_MAX_CIPHERTEXT)
		return own_fail(t, -EBADMSG,
				g_strdup_printf("TLS receive: malformed TLS record header %02x %02x "
						"%02x, length %zu", h[0], h[1], h[2], clen));
	size_t plen = clen - TM_TLS_TAG; /* content, type and padding */
	/*
	 * When the caller wants more than this (long) record holds, the next header must come too:
	 * read it with the body. Never after a short record, which may be the last (close_notify).
	 */
	if ((r = fill_in(t, TM_TLS_HDR + clen, clen >= 256 && len > plen - 1 ? TM_TLS_HDR : 0)) < 0)
		return r;
	uint8_t hdr[TM_TLS_HDR];
	memcpy(hdr, t->in + t->in_off, sizeof(hdr));
	const uint8_t *body = t->in + t->in_off + TM_TLS_HDR;
	bool direct = plen - 1 >= STREAM_MIN && len >= plen - 1;
	cursor start = *c;
	uint8_t last;

	r = tm_tls_open_begin(&t->rx, hdr);
	if (direct) {
		const uint8_t *in = body;
		for (size_t left = plen - 1; r == 0 && left > 0;) {
			size_t k = MIN(cursor_span(c), left);
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
		return own_fail(t, -EINVAL, g_strdup("TLS receive: the iovecs hold less than the "
						     "length given"));
	if (r < 0) {
		*c = start;
		return own_fail(t, -EBADMSG, g_strdup("TLS record authentication failed (bad record "
						      "MAC): the data was altered in transit"));
	}
	if (direct && last == CT_DATA) {
		*done = plen - 1;
		return 0;
	}
	if (direct) {
		/* Not plain data after all: take the content back and rewind. */
		*c = start;
		cursor g = start;
		for (size_t i = 0; i < plen - 1;) {
			size_t k = MIN(cursor_span(&g), plen - 1 - i);
			memcpy(t->plain + i, (uint8_t *)g.v->iov_base + g.off, k);
			g.off += k;
			i += k;
		}
		t->plain[plen - 1] = last;
	}
	return own_plain(t, plen);
}

int tm_tls_own_recv(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	if (t->ktls_rx)
		return ktls_recv(t, iov, n, len);
	cursor c = { iov, n, 0 };

	while (len > 0) {
		if (t->plain_len > 0) {
			size_t k = MIN(MIN(t->plain_len, len), cursor_span(&c));
			if (k == 0)
				return own_fail(t, -EINVAL, g_strdup("TLS receive: the iovecs hold "
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
int tm_tls_own_close_notify(tls_chan *t)
{
	static const uint8_t alert[2] = { 1 /* warning */, SSL_AD_CLOSE_NOTIFY };

	if (t->tx_closed)
		return 0;
	t->tx_closed = true;
	int r;
	if (t->ktls_tx) {
		r = tm_ktls_send_ctrl(t->inner->fd, CT_ALERT, alert, sizeof(alert));
		if (r < 0) {
			t->io_err = r;
			r = own_io_fail(t, "close");
		}
	} else {
		r = seal_buf(t, CT_ALERT, alert, sizeof(alert));
		if (r == 0 && tm_tls_flush_out(t) < 0)
			r = own_io_fail(t, "close");
	}
	/* OpenSSL must not send one of its own in our direction. */
	SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
	return r;
}

/* After the handshake: our records take over the sender-to-receiver direction. */
int tm_tls_own_start(tls_chan *t)
{
	const bool client = t->ctx->role == TM_TLS_CLIENT;
	int r = -EPROTO;

	if (t->secret_len > 0)
		r = tm_tls_dir_init(client ? &t->tx : &t->rx, t->ssl, t->secret, t->secret_len,
				    client);
	OPENSSL_cleanse(t->secret, sizeof(t->secret));
	t->secret_len = 0;
	if (r < 0)
		return own_fail(t, r, g_strdup_printf("cannot set up tagmig's TLS record layer for "
						      "cipher suite %s (%s)",
						      SSL_get_cipher_name(t->ssl),
						      g_strerror(-r)));
	if (client) {
		t->own_tx = true;
	} else {
		t->own_rx = true;
		t->plain = g_malloc(TM_TLS_MAX_CIPHERTEXT);
	}
	/*
	 * Kernel TLS where the context found it usable (key updates included). Nothing of this
	 * direction has been sent or read yet (sequence 0; the receiver read nothing past the
	 * client's Finished), and records already queued on the socket are the kernel's to open.
	 * A refusal here leaves the socket as it was: our records go on in user space.
	 */
	if (t->ctx->ktls && tm_ktls_set(t->inner->fd, client ? &t->tx : &t->rx, client, true) == 0) {
		if (client)
			t->ktls_tx = true;
		else
			t->ktls_rx = true;
		tm_count(&t->ctx->ktls_channels, 1);
	}
	return 0;
}
