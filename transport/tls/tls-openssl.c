/* SPDX-License-Identifier: MIT */
/*
 * OpenSSL's record engine, and the BIO through which OpenSSL reads and writes the inner handle
 * (during the handshake, and afterwards for every direction OpenSSL protects).
 *
 * The BIO's read and write call the inner handle's recv and send with exact lengths. Without
 * read-ahead OpenSSL asks for a record header (5 bytes), then for exactly the record's body, so
 * the inner handle's "fill exactly len bytes" contract fits. The BIO reads ahead what has
 * already arrived (bio_read), so during bulk transfer one inner recv brings many records.
 * Written records are collected (up to TM_TLS_OUT bytes) and go to the inner send together at
 * the end of every call into OpenSSL (and when OpenSSL flushes a handshake flight).
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "transport/tls/tls-internal.h"

/* ---- the BIO between OpenSSL and the inner handle ---- */

static int bio_write(BIO *b, const char *buf, int len)
{
	tls_chan *t = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (t->writes_barred) {
		/*
		 * Our records carry this direction's sequence numbers (from the end of the client's
		 * handshake on, or the server's alert): a record of OpenSSL's (an alert, a reply to a
		 * key update request) would reuse a nonce. Refuse it; an alert is dropped as if sent,
		 * and the message callback has told which one, for our records to send it
		 * (tls-alert.c).
		 */
		if (t->ossl_alert_next && (size_t)len == 2 + TM_TLS_OVERHEAD) {
			t->ossl_alert_next = false;
			return len;
		}
		t->write_blocked = true;
		return -1;
	}
	if (t->out && (size_t)len <= TM_TLS_OUT) {
		/* Collect; the wrapper flushes at the end of every call into OpenSSL. */
		if (t->nout + (size_t)len > TM_TLS_OUT && tm_tls_flush_out(t) < 0)
			return -1;
		memcpy(t->out + t->nout, buf, (size_t)len);
		t->nout += (size_t)len;
		return len;
	}
	if (tm_tls_flush_out(t) < 0)
		return -1;
	struct iovec v = { .iov_base = (void *)buf, .iov_len = (size_t)len };
	int r = tm_io_send(t->inner, &v, 1, (size_t)len);
	if (r < 0) {
		t->io_err = r;
		return -1;
	}
	return len;
}

/*
 * OpenSSL (without read-ahead) asks for a record header, then for exactly the record's body. One
 * inner recv per request would be two kernel round trips per 16 KiB record, so the BIO reads
 * ahead into t->in: what OpenSSL asks for, plus whatever the socket already holds (FIONREAD),
 * up to TM_TLS_IN bytes; the following requests are served from there. Reading only what has
 * arrived never waits for bytes the peer has not sent, so a peer that ends the session (a short
 * close_notify record, then EOF) is still told apart from one that vanishes. Besides, when the
 * caller still needs more plaintext than the record being read can hold (16 bytes of tag and one
 * of content type come off its body), another record must follow: its header is read together
 * with this body even if it has not arrived yet. No read-ahead during the handshake (t->in is
 * not allocated yet): OpenSSL gets exactly the bytes it asks for.
 */
static int bio_read(BIO *b, char *buf, int len)
{
	tls_chan *t = BIO_get_data(b);
	size_t n = (size_t)len;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (t->nowait) {
		/* Only what has arrived: else "try again", which ends tm_tls_read_alert. */
		int avail = 0;
		if (ioctl(t->inner->fd, FIONREAD, &avail) < 0 || avail < 0 ||
		    t->in_len + (size_t)avail < n) {
			BIO_set_retry_read(b);
			return -1;
		}
	}
	if (t->in_len > 0) {
		size_t k = MIN(n, t->in_len);
		memcpy(buf, t->in + t->in_off, k);
		t->in_off += k;
		t->in_len -= k;
		if (k == n)
			return len;
		buf += k;
		n -= k;
	}
	size_t extra = 0;
	if (t->in) {
		int avail = 0;
		if (ioctl(t->inner->fd, FIONREAD, &avail) == 0 && avail > 0 && (size_t)avail > n)
			extra = (size_t)avail - n;
		/* n is a whole record body (none of it came from t->in): is a header due? */
		if ((size_t)len == n && n >= 256 && t->want > n - 17)
			extra = MAX(extra, 5u);
		extra = MIN(extra, (size_t)TM_TLS_IN);
	}
	struct iovec v[2] = { { .iov_base = buf, .iov_len = n },
			      { .iov_base = t->in, .iov_len = extra } };
	int r = tm_io_recv(t->inner, v, extra ? 2 : 1, n + extra);
	if (r < 0) {
		t->io_err = r;
		return -1;
	}
	t->in_off = 0;
	t->in_len = extra;
	if (t->nfirst < sizeof(t->first)) {
		unsigned k = MIN((unsigned)n, (unsigned)sizeof(t->first) - t->nfirst);
		memcpy(t->first + t->nfirst, buf, k);
		t->nfirst += k;
	}
	return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	/* OpenSSL flushes after each handshake flight; every other control is unsupported. */
	if (cmd == BIO_CTRL_FLUSH)
		return tm_tls_flush_out(BIO_get_data(b)) < 0 ? 0 : 1;
	return 0;
}

static BIO_METHOD *bio_method(void)
{
	static gsize once;
	static BIO_METHOD *m;

	if (g_once_init_enter(&once)) {
		BIO_METHOD *nm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
					      "tagmig channel");
		if (nm) {
			BIO_meth_set_write(nm, bio_write);
			BIO_meth_set_read(nm, bio_read);
			BIO_meth_set_ctrl(nm, bio_ctrl);
		}
		m = nm;
		g_once_init_leave(&once, 1);
	}
	return m;
}

BIO *tm_tls_bio_new(tls_chan *t)
{
	BIO_METHOD *m = bio_method();
	BIO *b = m ? BIO_new(m) : NULL;

	if (b) {
		BIO_set_data(b, t);
		BIO_set_init(b, 1);
	}
	return b;
}

/* ---- the engine ---- */

int tm_tls_ssl_write(tls_chan *t, const void *buf, size_t len)
{
	size_t done;

	/* A blocking BIO and no partial-write mode: SSL_write_ex writes everything or fails. */
	int ok = SSL_write_ex(t->ssl, buf, len, &done);
	return ok == 1 ? 0 : tm_tls_io_fail(t, ok, "send");
}

/*
 * Full records straight from the caller's memory wherever an iovec holds one; pieces shorter than
 * a record (headers, the ends of page runs, tag buffers) are gathered in t->stage, so the stream
 * is cut into 16 KiB records and only the end of each call may be shorter. OpenSSL copies the
 * plaintext into its record buffer as it encrypts; no copy of ours for whole records.
 */
static int ossl_send(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	size_t fill = 0;
	int r = 0;

	for (unsigned i = 0; r == 0 && i < n && len > 0; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t l = MIN(iov[i].iov_len, len);

		len -= l;
		if (fill > 0) {
			size_t k = MIN(l, TM_TLS_RECORD - fill);
			memcpy(t->stage + fill, p, k);
			fill += k;
			p += k;
			l -= k;
			if (fill < TM_TLS_RECORD)
				continue; /* this iovec is used up */
			if ((r = tm_tls_ssl_write(t, t->stage, fill)) < 0)
				break;
			fill = 0;
		}
		size_t direct = l - l % TM_TLS_RECORD;
		if (direct > 0 && (r = tm_tls_ssl_write(t, p, direct)) < 0)
			break;
		if (l > direct)
			memcpy(t->stage, p + direct, l - direct);
		fill = l - direct;
	}
	if (r == 0 && fill > 0)
		r = tm_tls_ssl_write(t, t->stage, fill);
	if (r == 0 && tm_tls_flush_out(t) < 0)
		r = tm_tls_io_fail(t, 0, "send");
	return r;
}

/*
 * OpenSSL decrypts each record in place in its record buffer and copies the plaintext out: into
 * the caller's iovecs (guest RAM) directly, without a buffer of ours in between.
 */
static int ossl_recv(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	int r = 0;

	for (unsigned i = 0; r == 0 && i < n && len > 0; i++) {
		uint8_t *p = iov[i].iov_base;
		size_t l = MIN(iov[i].iov_len, len);

		len -= l;
		if (t->kept && t->kept_off < t->kept->len) {
			/* What tm_tls_read_alert read ahead comes first. */
			size_t k = MIN(l, t->kept->len - t->kept_off);
			memcpy(p, t->kept->data + t->kept_off, k);
			t->kept_off += k;
			p += k;
			l -= k;
		}
		while (l > 0) {
			size_t got;
			t->want = l + len; /* for the read-ahead of the next record's header */
			int ok = SSL_read_ex(t->ssl, p, l, &got);
			if (ok != 1) {
				r = tm_tls_io_fail(t, ok, "receive");
				break;
			}
			p += got;
			l -= got;
		}
	}
	/* Reading may have made OpenSSL answer (a KeyUpdate): send that now. */
	if (r == 0 && t->nout > 0 && tm_tls_flush_out(t) < 0)
		r = tm_tls_io_fail(t, 0, "receive");
	return r;
}

static int ossl_close_notify(tls_chan *t)
{
	if (SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN)
		return 0;
	int ok = SSL_shutdown(t->ssl);
	if (ok >= 0 && tm_tls_flush_out(t) < 0)
		ok = -1;
	return ok < 0 ? tm_tls_io_fail(t, ok, "close_notify") : ok;
}

static int ossl_await_close(tls_chan *t)
{
	/* Ours is sent; now the peer's close_notify must come, and nothing else. */
	uint8_t b;
	size_t got;
	int ok = SSL_read_ex(t->ssl, &b, 1, &got);
	if (ok == 1)
		return tm_tls_fail(t, -EPROTO,
				   g_strdup_printf("the %s sent data after the end of the session "
						   "instead of a TLS close_notify",
						   t->ctx->role == TM_TLS_CLIENT ? "receiver" : "sender"));
	if (SSL_get_error(t->ssl, ok) != SSL_ERROR_ZERO_RETURN)
		return tm_tls_io_fail(t, ok, "close");
	return 0;
}

/*
 * The server's sending direction, when tagmig's records of the other direction failed: the alert
 * goes out as OpenSSL's next record, with the keys and sequence number tls-alert.c has followed,
 * and OpenSSL may write nothing after it. Where OpenSSL protects both directions it sends its own
 * alerts, and there is nothing to follow (no alert from here).
 */
static int ossl_alert(tls_chan *t, uint8_t desc)
{
	if (!t->ossl_tx_ok || t->writes_barred || (SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN))
		return 0;
	t->writes_barred = true;
	SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
	return tm_tls_seal_alert(t, &t->ossl_tx, desc);
}

const tm_tls_engine tm_tls_engine_openssl = {
	.name = "openssl",
	.send = ossl_send,
	.recv = ossl_recv,
	.close_notify = ossl_close_notify,
	.await_close = ossl_await_close,
	.alert = ossl_alert,
};
