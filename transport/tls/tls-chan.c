/* SPDX-License-Identifier: MIT */
/*
 * TLS on one channel: the handshake, the tm_transport_ops wrapper and the clean close.
 *
 * OpenSSL reads and writes through a BIO of ours whose read and write call the inner handle's
 * recv and send with exact lengths. Without read-ahead OpenSSL asks for a record header (5 bytes),
 * then for exactly the record's body, so the inner handle's "fill exactly len bytes" contract
 * fits. The BIO reads ahead what has already arrived (bio_read), so during bulk transfer one
 * inner recv brings many records. Written records are collected (up to TM_TLS_OUT bytes) and go
 * to the inner send together at the end of every call into OpenSSL (and when OpenSSL flushes a
 * handshake flight). After the handshake the sender-to-receiver direction goes to tls-own.c
 * (tagmig's records or kernel TLS); OpenSSL keeps the other one.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tagmig/error.h"
#include "transport/tls/tls-internal.h"

/* The server's confirmation after the handshake (see tls.h). */
static const uint8_t ready_msg[8] = { 'T', 'M', 'T', 'L', 'S', '1', '\r', '\n' };

/* ---- the BIO between OpenSSL and the inner handle ---- */

/* Hands the collected records to the inner handle. */
int tm_tls_flush_out(tls_chan *t)
{
	if (t->nout == 0 || t->io_err)
		return t->io_err;
	struct iovec v = { .iov_base = t->out, .iov_len = t->nout };
	int r = tm_io_send(t->inner, &v, 1, t->nout);
	t->nout = 0;
	if (r < 0)
		t->io_err = r;
	return r;
}

static int bio_write(BIO *b, const char *buf, int len)
{
	tls_chan *t = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (t->writes_barred) {
		/*
		 * Our records carry this direction's sequence numbers (from the end of the client's
		 * handshake on): a record of OpenSSL's (an alert, a reply to a key update request)
		 * would reuse a nonce. Refuse it.
		 */
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

/* ---- helpers ---- */

/* Frees what t holds, not t itself nor the inner handle. */
static void tls_release(tls_chan *t)
{
	SSL_free(t->ssl); /* and the BIO */
	t->ssl = NULL;
	tm_tls_ctx_free(t->ctx);
	t->ctx = NULL;
	/* Plaintext of guest memory does not outlive the channel. */
	if (t->stage)
		OPENSSL_cleanse(t->stage, TM_TLS_RECORD);
	if (t->plain)
		OPENSSL_cleanse(t->plain, TM_TLS_MAX_CIPHERTEXT);
	g_free(t->stage);
	g_free(t->out);
	g_free(t->in);
	g_free(t->plain);
	tm_tls_dir_free(&t->tx);
	tm_tls_dir_free(&t->rx);
	OPENSSL_cleanse(t->secret, sizeof(t->secret));
	g_free(t->kv);
	g_free(t->verify_subject);
	g_free(t->verify_when);
	g_free(t->err_msg);
}

/* Records why an SSL call failed, for tm_tls_last_error(). Returns -errno. */
int tm_tls_io_fail(tls_chan *t, int ret, const char *what)
{
	g_free(t->err_msg);
	t->err_msg = NULL;
	return tm_tls_explain(t, ret, what, &t->err_msg);
}

/* Checks that t may still be used; a failed TLS session stays failed. */
static int io_begin(tls_chan *t)
{
	if (t->broken)
		return -EPIPE; /* err_msg still says why */
	t->io_err = 0;
	ERR_clear_error();
	return 0;
}

static int write_all(tls_chan *t, const void *buf, size_t len)
{
	size_t done;

	/* A blocking BIO and no partial-write mode: SSL_write_ex writes everything or fails. */
	int ok = SSL_write_ex(t->ssl, buf, len, &done);
	return ok == 1 ? 0 : tm_tls_io_fail(t, ok, "send");
}

/* ---- the wrapper backend ---- */

static int tls_open(tm_io *io, GError **error)
{
	g_set_error(error, TM_ERROR, EINVAL,
		    "channel %u: TLS wraps another I/O handle: open the channel with a byte mover, "
		    "then call tm_tls_wrap()", io->id);
	return -EINVAL;
}

static void tls_close(tm_io *io)
{
	tls_chan *t = io->priv;

	/* Best effort: a session that did not call tm_tls_shutdown still ends cleanly. */
	if (t->own_tx && !t->broken) {
		tm_tls_own_close_notify(t);
		ERR_clear_error();
	} else if (t->ssl && !t->broken && !(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN)) {
		ERR_clear_error();
		SSL_shutdown(t->ssl);
		tm_tls_flush_out(t);
		ERR_clear_error();
	}
	tls_release(t);
	/* tm_io_free frees t itself (io->priv), then closes the inner handle */
}

/*
 * Full records straight from the caller's memory wherever an iovec holds one; pieces shorter than
 * a record (headers, the ends of page runs, tag buffers) are gathered in t->stage, so the stream
 * is cut into 16 KiB records and only the end of each call may be shorter. OpenSSL copies the
 * plaintext into its record buffer as it encrypts; no copy of ours for whole records.
 */
static int tls_send(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	tls_chan *t = io->priv;
	size_t fill = 0;
	int r = io_begin(t);

	if (r == 0 && t->own_tx)
		return t->tx_closed ? -EPIPE : tm_tls_own_send(t, iov, n, len);
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
			if ((r = write_all(t, t->stage, fill)) < 0)
				break;
			fill = 0;
		}
		size_t direct = l - l % TM_TLS_RECORD;
		if (direct > 0 && (r = write_all(t, p, direct)) < 0)
			break;
		if (l > direct)
			memcpy(t->stage, p + direct, l - direct);
		fill = l - direct;
	}
	if (r == 0 && fill > 0)
		r = write_all(t, t->stage, fill);
	if (r == 0 && tm_tls_flush_out(t) < 0)
		r = tm_tls_io_fail(t, 0, "send");
	return r;
}

/*
 * OpenSSL decrypts each record in place in its record buffer and copies the plaintext out: into
 * the caller's iovecs (guest RAM) directly, without a buffer of ours in between.
 */
static int tls_recv(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	tls_chan *t = io->priv;
	int r = io_begin(t);

	if (r == 0 && t->own_rx)
		return tm_tls_own_recv(t, iov, n, len);
	for (unsigned i = 0; r == 0 && i < n && len > 0; i++) {
		uint8_t *p = iov[i].iov_base;
		size_t l = MIN(iov[i].iov_len, len);

		len -= l;
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

/*
 * The last message before giving up (an ERROR) goes inside the TLS stream, or the peer could not
 * read it. Small, so it does not wait for a peer that is not reading unless the socket buffer is
 * full, and then at most the channel's timeout.
 */
static void tls_send_last(tm_io *io, const void *buf, size_t len)
{
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
	(void)tls_send(io, &v, 1, len);
}

static const char *tls_last_error(const tm_io *io)
{
	const tls_chan *t = io->priv;
	return t->err_msg;
}

const tm_transport_ops tm_transport_tls = {
	.name = "tls",
	.priv_size = sizeof(tls_chan),
	.open = tls_open,
	.close = tls_close,
	.send = tls_send,
	.recv = tls_recv,
	.send_last = tls_send_last,
	.last_error = tls_last_error,
};

/* ---- handshake and close ---- */

static int handshake(tls_chan *t)
{
	int ok = SSL_do_handshake(t->ssl);
	if (ok != 1)
		return tm_tls_io_fail(t, ok, "handshake");
	/* The client's sending direction is ours from its first application record. */
	if (t->ctx->role == TM_TLS_CLIENT && t->ctx->own_records)
		t->writes_barred = true;

	/* The server confirms that it accepted us (and its tickets are on the wire before this). */
	if (t->ctx->role == TM_TLS_SERVER) {
		int r = write_all(t, ready_msg, sizeof(ready_msg));
		if (r == 0 && tm_tls_flush_out(t) < 0)
			r = tm_tls_io_fail(t, 0, "handshake");
		return r;
	}
	uint8_t buf[sizeof(ready_msg)];
	size_t have = 0;
	while (have < sizeof(buf)) {
		size_t got;
		ok = SSL_read_ex(t->ssl, buf + have, sizeof(buf) - have, &got);
		if (ok != 1)
			return tm_tls_io_fail(t, ok, "handshake");
		have += got;
	}
	if (memcmp(buf, ready_msg, sizeof(buf)) != 0) {
		g_free(t->err_msg);
		t->err_msg = g_strdup("the receiver completed the TLS handshake but is not a tagmig "
				      "TLS endpoint (no confirmation)");
		t->broken = true;
		return -EPROTO;
	}
	return 0;
}

int tm_tls_wrap(tm_tls_ctx *ctx, tm_io **io, GError **error)
{
	tm_io *inner = *io;

	if (inner->ops == &tm_transport_tls) {
		g_set_error(error, TM_ERROR, EALREADY, "channel %u: TLS is already running",
			    inner->id);
		return -EALREADY;
	}
	BIO_METHOD *m = bio_method();
	tls_chan *t = g_new0(tls_chan, 1);
	t->ctx = tm_tls_ctx_ref(ctx);
	t->inner = inner;
	ERR_clear_error();
	t->ssl = SSL_new(ctx->ssl_ctx);
	BIO *bio = m ? BIO_new(m) : NULL;
	if (!t->ssl || !bio) {
		BIO_free(bio);
		tls_release(t);
		g_free(t);
		ERR_clear_error();
		g_set_error(error, TM_ERROR, ENOMEM, "channel %u: TLS: out of memory", inner->id);
		return -ENOMEM;
	}
	t->out = g_malloc(TM_TLS_OUT);
	BIO_set_data(bio, t);
	BIO_set_init(bio, 1);
	SSL_set_bio(t->ssl, bio, bio);
	SSL_set_app_data(t->ssl, t);

	if (ctx->role == TM_TLS_CLIENT) {
		if (g_hostname_is_ip_address(ctx->hostname)) {
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), ctx->hostname);
		} else {
			SSL_set1_host(t->ssl, ctx->hostname);
			SSL_set_tlsext_host_name(t->ssl, ctx->hostname);
		}
		g_mutex_lock(&ctx->lock);
		if (ctx->session)
			SSL_set_session(t->ssl, ctx->session);
		g_mutex_unlock(&ctx->lock);
		SSL_set_connect_state(t->ssl);
	} else {
		SSL_set_accept_state(t->ssl);
	}

	int64_t t0 = tm_now_us();
	t->handshaking = true;
	int r = handshake(t);
	t->handshaking = false;
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS handshake: %s", inner->id,
			    t->err_msg);
		tls_release(t);
		g_free(t);
		return r;
	}
	if (ctx->own_records && (r = tm_tls_own_start(t)) < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS handshake: %s", inner->id,
			    t->err_msg);
		tls_release(t);
		g_free(t);
		return r;
	}
	tm_count(SSL_session_reused(t->ssl) ? &ctx->resumed : &ctx->full, 1);
	tm_count(&ctx->handshake_us, (uint64_t)(tm_now_us() - t0));
	t->stage = g_malloc(TM_TLS_RECORD);
	t->in = g_malloc(TM_TLS_IN);
	g_clear_pointer(&t->err_msg, g_free);
	t->io = tm_io_wrap(inner, &tm_transport_tls, t);
	/* The statistics say who moved the sender's records: the kernel, or the inner handle. */
	t->io->path = t->ktls_tx || t->ktls_rx ? "ktls" : NULL;
	*io = t->io;
	return 0;
}

int tm_tls_shutdown(tm_io *io, GError **error)
{
	if (!io || io->ops != &tm_transport_tls)
		return 0;
	tls_chan *t = io->priv;
	int r = io_begin(t);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS close: the session already failed%s%s",
			    io->id, t->err_msg ? ": " : "", t->err_msg ? t->err_msg : "");
		return r;
	}
	t->want = 0;
	if (t->own_tx && (r = tm_tls_own_close_notify(t)) < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS close: %s", io->id, t->err_msg);
		return r;
	}
	int ok = t->own_tx ? 0 : SSL_shutdown(t->ssl);
	if (ok >= 0 && tm_tls_flush_out(t) < 0)
		ok = -1;
	if (ok < 0) {
		r = tm_tls_io_fail(t, ok, "close");
	} else if (ok == 0 && t->own_rx) {
		/* Ours is sent; now the peer's close_notify must come, and nothing else. */
		uint8_t b;
		struct iovec v = { .iov_base = &b, .iov_len = 1 };
		r = tm_tls_own_recv(t, &v, 1, 1);
		if (r == 0) {
			g_free(t->err_msg);
			t->err_msg = g_strdup("the sender sent data after the end of the session "
					      "instead of a TLS close_notify");
			t->broken = true;
			r = -EPROTO;
		} else if (t->rx_closed) {
			r = 0;
		}
	} else if (ok == 0) {
		/* Ours is sent; now the peer's close_notify must come, and nothing else. */
		uint8_t b;
		size_t got;
		ok = SSL_read_ex(t->ssl, &b, 1, &got);
		if (ok == 1) {
			g_free(t->err_msg);
			t->err_msg = g_strdup_printf("the %s sent data after the end of the session "
						     "instead of a TLS close_notify",
						     t->ctx->role == TM_TLS_CLIENT ? "receiver"
										 : "sender");
			t->broken = true;
			r = -EPROTO;
		} else if (SSL_get_error(t->ssl, ok) != SSL_ERROR_ZERO_RETURN) {
			r = tm_tls_io_fail(t, ok, "close");
		}
	}
	if (r < 0)
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS close: %s", io->id, t->err_msg);
	return r;
}

bool tm_tls_active(const tm_io *io)
{
	return io && io->ops == &tm_transport_tls;
}

const char *tm_tls_cipher(const tm_io *io)
{
	if (!tm_tls_active(io))
		return NULL;
	const tls_chan *t = io->priv;
	return SSL_get_cipher_name(t->ssl);
}

unsigned tm_tls_ktls(const tm_io *io)
{
	if (!tm_tls_active(io))
		return 0;
	const tls_chan *t = io->priv;
	return (t->ktls_tx ? TM_TLS_KTLS_TX : 0) | (t->ktls_rx ? TM_TLS_KTLS_RX : 0);
}

bool tm_tls_resumed(const tm_io *io)
{
	if (!tm_tls_active(io))
		return false;
	const tls_chan *t = io->priv;
	return SSL_session_reused(t->ssl);
}

const char *tm_tls_last_error(const tm_io *io)
{
	if (!tm_tls_active(io))
		return NULL;
	const tls_chan *t = io->priv;
	return t->err_msg;
}
