/* SPDX-License-Identifier: MIT */
/*
 * TLS on one channel: the handshake, the tm_transport_ops wrapper and the clean close.
 *
 * OpenSSL reads and writes through a BIO of ours whose read and write call the inner backend's
 * recv and send with exact lengths. Without read-ahead OpenSSL asks for a record header (5 bytes),
 * then for exactly the record's body, so the inner backend's "fill exactly len bytes" contract
 * fits. The BIO reads ahead what has already arrived (bio_read), so during bulk transfer one
 * inner recv brings many records. Written records are collected (up to TM_TLS_OUT bytes) and go
 * to the inner send together at the end of every call into OpenSSL (and when OpenSSL flushes a
 * handshake flight).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tagmig/error.h"
#include "transport/tls/tls-internal.h"

/* The server's confirmation after the handshake (see tls.h). */
static const uint8_t ready_msg[8] = { 'T', 'M', 'T', 'L', 'S', '1', '\r', '\n' };

/* ---- the BIO between OpenSSL and the inner backend ---- */

/* Hands the collected records to the inner backend. */
static int flush_out(tls_chan *t)
{
	if (t->nout == 0 || t->io_err)
		return t->io_err;
	struct iovec v = { .iov_base = t->out, .iov_len = t->nout };
	int r = t->inner.ops->send(&t->inner, &v, 1, t->nout);
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
		if (t->nout + (size_t)len > TM_TLS_OUT && flush_out(t) < 0)
			return -1;
		memcpy(t->out + t->nout, buf, (size_t)len);
		t->nout += (size_t)len;
		return len;
	}
	if (flush_out(t) < 0)
		return -1;
	struct iovec v = { .iov_base = (void *)buf, .iov_len = (size_t)len };
	int r = t->inner.ops->send(&t->inner, &v, 1, (size_t)len);
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
		if (ioctl(t->inner.fd, FIONREAD, &avail) == 0 && avail > 0 && (size_t)avail > n)
			extra = (size_t)avail - n;
		/* n is a whole record body (none of it came from t->in): is a header due? */
		if ((size_t)len == n && n >= 256 && t->want > n - 17)
			extra = MAX(extra, 5u);
		extra = MIN(extra, (size_t)TM_TLS_IN);
	}
	struct iovec v[2] = { { .iov_base = buf, .iov_len = n },
			      { .iov_base = t->in, .iov_len = extra } };
	int r = t->inner.ops->recv(&t->inner, v, extra ? 2 : 1, n + extra);
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
		return flush_out(BIO_get_data(b)) < 0 ? 0 : 1;
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

/* Frees what t holds, not t itself nor the inner backend. */
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

/* Records why an SSL call failed, for tm_tls_chan_last_error(). Returns -errno. */
static int io_fail(tls_chan *t, int ret, const char *what)
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

/*
 * The inner backend counts into the shadow channel (kernel submissions and the like): move what
 * it counted to the real channel, whose counters the session sums. Every counter is a uint64_t.
 */
static void fold_counters(tm_chan *ch, tls_chan *t)
{
	G_STATIC_ASSERT(sizeof(tm_counters) % sizeof(uint64_t) == 0);
	uint64_t *from = (uint64_t *)&t->inner.st, *to = (uint64_t *)&ch->st;

	for (size_t i = 0; i < sizeof(tm_counters) / sizeof(uint64_t); i++) {
		if (from[i]) {
			tm_count(&to[i], from[i]);
			from[i] = 0;
		}
	}
}

static int write_all(tls_chan *t, const void *buf, size_t len)
{
	size_t done;

	/* A blocking BIO and no partial-write mode: SSL_write_ex writes everything or fails. */
	int ok = SSL_write_ex(t->ssl, buf, len, &done);
	return ok == 1 ? 0 : io_fail(t, ok, "send");
}

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
 * The inner backend failed under our records: explained like OpenSSL's failures, and always
 * fatal (sealed records may have been dropped, so the stream cannot go on).
 */
static int own_io_fail(tls_chan *t, const char *what)
{
	int r = io_fail(t, 0, what);
	t->broken = true;
	return r;
}

/* Seals one record of plen content bytes taken from c (advanced) into t->out. */
static int seal(tls_chan *t, uint8_t type, cursor *c, size_t plen)
{
	if (t->nout + plen + TM_TLS_OVERHEAD > TM_TLS_OUT && flush_out(t) < 0)
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
	int r = t->ktls_tx ? tm_ktls_send_ctrl(t->inner.fd, CT_HANDSHAKE, key_update,
					       sizeof(key_update))
			   : seal_buf(t, CT_HANDSHAKE, key_update, sizeof(key_update));
	if (r < 0 && t->ktls_tx)
		r = own_fail(t, r, g_strdup_printf("TLS send: kernel TLS: sending a key update: %s",
						   g_strerror(-r)));
	if (r == 0 && tm_tls_dir_update(&t->tx) < 0)
		r = own_fail(t, -EPROTO, g_strdup("TLS send: deriving the next key failed"));
	if (r == 0 && t->ktls_tx && (r = tm_ktls_set(t->inner.fd, &t->tx, true, false)) < 0)
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
		ssize_t r = sendmsg(t->inner.fd, &msg, MSG_NOSIGNAL);
		/* A system call is submitted and completed at once, as the io_uring counters see it. */
		tm_count(&t->inner.st.io_submissions, 1);
		tm_count(&t->inner.st.io_completions, 1);
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
		ssize_t r = tm_ktls_recv(t->inner.fd, bounce ? &b : v, bounce ? 1 : kn, &type);
		/* A system call is submitted and completed at once, as the io_uring counters see it. */
		tm_count(&t->inner.st.io_submissions, 1);
		tm_count(&t->inner.st.io_completions, 1);
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
static int own_send(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
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
	if (r == 0 && flush_out(t) < 0)
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
	if (ioctl(t->inner.fd, FIONREAD, &avail) == 0 && avail > 0 && (size_t)avail > want)
		want = MIN((size_t)avail, space);
	struct iovec v = { .iov_base = t->in + t->in_off + t->in_len, .iov_len = want };
	int r = t->inner.ops->recv(&t->inner, &v, 1, want);
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
			int kr = t->ktls_rx ? tm_ktls_set(t->inner.fd, &t->rx, false, false) : 0;
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
			     SSL_do_handshake(t->ssl) != 1 || flush_out(t) < 0)) {
				int r = io_fail(t, 0, "receive");
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

static int own_recv(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
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
static int own_close_notify(tls_chan *t)
{
	static const uint8_t alert[2] = { 1 /* warning */, SSL_AD_CLOSE_NOTIFY };

	if (t->tx_closed)
		return 0;
	t->tx_closed = true;
	int r;
	if (t->ktls_tx) {
		r = tm_ktls_send_ctrl(t->inner.fd, CT_ALERT, alert, sizeof(alert));
		if (r < 0) {
			t->io_err = r;
			r = own_io_fail(t, "close");
		}
	} else {
		r = seal_buf(t, CT_ALERT, alert, sizeof(alert));
		if (r == 0 && flush_out(t) < 0)
			r = own_io_fail(t, "close");
	}
	/* OpenSSL must not send one of its own in our direction. */
	SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
	return r;
}

/*
 * The key-log callback of both roles: OpenSSL reports each secret as it derives it. The
 * client's first application traffic secret is the one our records need (RFC 8446 7.1).
 */
void tm_tls_keylog_cb(const SSL *ssl, const char *line)
{
	static const char label[] = "CLIENT_TRAFFIC_SECRET_0 ";
	tls_chan *t = SSL_get_app_data(ssl);

	if (!t || !t->ctx->own_records || strncmp(line, label, sizeof(label) - 1) != 0)
		return;
	const char *hex = strchr(line + sizeof(label) - 1, ' ');
	if (!hex)
		return;
	hex++;
	size_t n = strlen(hex) / 2;
	if (n == 0 || n > sizeof(t->secret))
		return;
	for (size_t i = 0; i < n; i++) {
		int hi = g_ascii_xdigit_value(hex[2 * i]), lo = g_ascii_xdigit_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return;
		t->secret[i] = (uint8_t)(hi << 4 | lo);
	}
	t->secret_len = n;
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
	if (t->ctx->ktls && tm_ktls_set(t->inner.fd, client ? &t->tx : &t->rx, client, true) == 0) {
		if (client)
			t->ktls_tx = true;
		else
			t->ktls_rx = true;
		tm_count(&t->ctx->ktls_channels, 1);
	}
	return 0;
}

/* ---- the wrapper backend ---- */

static int tls_open(tm_chan *ch, GError **error)
{
	g_set_error(error, TM_ERROR, EINVAL,
		    "channel %u: TLS wraps another backend: open the channel with it, then call "
		    "tm_tls_chan_start()", ch->id);
	return -EINVAL;
}

static void tls_close(tm_chan *ch)
{
	tls_chan *t = ch->priv;

	/* Best effort: a session that did not call tm_tls_chan_shutdown still ends cleanly. */
	if (t->own_tx && !t->broken) {
		own_close_notify(t);
		ERR_clear_error();
	} else if (t->ssl && !t->broken && !(SSL_get_shutdown(t->ssl) & SSL_SENT_SHUTDOWN)) {
		ERR_clear_error();
		SSL_shutdown(t->ssl);
		flush_out(t);
		ERR_clear_error();
	}
	if (t->inner.ops->close)
		t->inner.ops->close(&t->inner);
	g_free(t->inner.priv);
	tls_release(t);
	/* tm_chan_close frees t itself (ch->priv) */
}

/*
 * Full records straight from the caller's memory wherever an iovec holds one; pieces shorter than
 * a record (headers, the ends of page runs, tag buffers) are gathered in t->stage, so the stream
 * is cut into 16 KiB records and only the end of each call may be shorter. OpenSSL copies the
 * plaintext into its record buffer as it encrypts; no copy of ours for whole records.
 */
static int tls_send(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len)
{
	tls_chan *t = ch->priv;
	size_t fill = 0;
	int r = io_begin(t);

	if (r == 0 && t->own_tx) {
		r = t->tx_closed ? -EPIPE : own_send(t, iov, n, len);
		fold_counters(ch, t);
		return r;
	}
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
	if (r == 0 && flush_out(t) < 0)
		r = io_fail(t, 0, "send");
	fold_counters(ch, t);
	return r;
}

/*
 * OpenSSL decrypts each record in place in its record buffer and copies the plaintext out: into
 * the caller's iovecs (guest RAM) directly, without a buffer of ours in between.
 */
static int tls_recv(tm_chan *ch, const struct iovec *iov, unsigned n, size_t len)
{
	tls_chan *t = ch->priv;
	int r = io_begin(t);

	if (r == 0 && t->own_rx) {
		r = own_recv(t, iov, n, len);
		fold_counters(ch, t);
		return r;
	}
	for (unsigned i = 0; r == 0 && i < n && len > 0; i++) {
		uint8_t *p = iov[i].iov_base;
		size_t l = MIN(iov[i].iov_len, len);

		len -= l;
		while (l > 0) {
			size_t got;
			t->want = l + len; /* for the read-ahead of the next record's header */
			int ok = SSL_read_ex(t->ssl, p, l, &got);
			if (ok != 1) {
				r = io_fail(t, ok, "receive");
				break;
			}
			p += got;
			l -= got;
		}
	}
	/* Reading may have made OpenSSL answer (a KeyUpdate): send that now. */
	if (r == 0 && t->nout > 0 && flush_out(t) < 0)
		r = io_fail(t, 0, "receive");
	fold_counters(ch, t);
	return r;
}

const tm_transport_ops tm_transport_tls = {
	.name = "tls",
	.priv_size = sizeof(tls_chan),
	.open = tls_open,
	.close = tls_close,
	.send = tls_send,
	.recv = tls_recv,
};

/* ---- handshake and close ---- */

static int handshake(tls_chan *t)
{
	int ok = SSL_do_handshake(t->ssl);
	if (ok != 1)
		return io_fail(t, ok, "handshake");
	/* The client's sending direction is ours from its first application record. */
	if (t->ctx->role == TM_TLS_CLIENT && t->ctx->own_records)
		t->writes_barred = true;

	/* The server confirms that it accepted us (and its tickets are on the wire before this). */
	if (t->ctx->role == TM_TLS_SERVER) {
		int r = write_all(t, ready_msg, sizeof(ready_msg));
		if (r == 0 && flush_out(t) < 0)
			r = io_fail(t, 0, "handshake");
		return r;
	}
	uint8_t buf[sizeof(ready_msg)];
	size_t have = 0;
	while (have < sizeof(buf)) {
		size_t got;
		ok = SSL_read_ex(t->ssl, buf + have, sizeof(buf) - have, &got);
		if (ok != 1)
			return io_fail(t, ok, "handshake");
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

int tm_tls_chan_start(tm_tls_ctx *ctx, tm_chan *ch, GError **error)
{
	if (ch->ops == &tm_transport_tls) {
		g_set_error(error, TM_ERROR, EALREADY, "channel %u: TLS is already running", ch->id);
		return -EALREADY;
	}
	BIO_METHOD *m = bio_method();
	tls_chan *t = g_new0(tls_chan, 1);
	t->ctx = tm_tls_ctx_ref(ctx);
	t->inner = *ch;
	memset(&t->inner.st, 0, sizeof(t->inner.st)); /* counts only what moves while under TLS */
	ERR_clear_error();
	t->ssl = SSL_new(ctx->ssl_ctx);
	BIO *bio = m ? BIO_new(m) : NULL;
	if (!t->ssl || !bio) {
		BIO_free(bio);
		tls_release(t);
		g_free(t);
		ERR_clear_error();
		g_set_error(error, TM_ERROR, ENOMEM, "channel %u: TLS: out of memory", ch->id);
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
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS handshake: %s", ch->id,
			    t->err_msg);
		tls_release(t);
		g_free(t);
		return r;
	}
	if (ctx->own_records && (r = own_start(t)) < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS handshake: %s", ch->id,
			    t->err_msg);
		tls_release(t);
		g_free(t);
		return r;
	}
	fold_counters(ch, t);
	tm_count(SSL_session_reused(t->ssl) ? &ctx->resumed : &ctx->full, 1);
	tm_count(&ctx->handshake_us, (uint64_t)(tm_now_us() - t0));
	t->stage = g_malloc(TM_TLS_RECORD);
	t->in = g_malloc(TM_TLS_IN);
	g_clear_pointer(&t->err_msg, g_free);
	ch->ops = &tm_transport_tls;
	ch->priv = t;
	return 0;
}

int tm_tls_chan_shutdown(tm_chan *ch, GError **error)
{
	if (ch->ops != &tm_transport_tls)
		return 0;
	tls_chan *t = ch->priv;
	int r = io_begin(t);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS close: the session already failed%s%s",
			    ch->id, t->err_msg ? ": " : "", t->err_msg ? t->err_msg : "");
		return r;
	}
	t->want = 0;
	if (t->own_tx && (r = own_close_notify(t)) < 0) {
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS close: %s", ch->id, t->err_msg);
		return r;
	}
	int ok = t->own_tx ? 0 : SSL_shutdown(t->ssl);
	if (ok >= 0 && flush_out(t) < 0)
		ok = -1;
	if (ok < 0) {
		r = io_fail(t, ok, "close");
	} else if (ok == 0 && t->own_rx) {
		/* Ours is sent; now the peer's close_notify must come, and nothing else. */
		uint8_t b;
		struct iovec v = { .iov_base = &b, .iov_len = 1 };
		r = own_recv(t, &v, 1, 1);
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
			r = io_fail(t, ok, "close");
		}
	}
	if (r < 0)
		g_set_error(error, TM_ERROR, -r, "channel %u: TLS close: %s", ch->id, t->err_msg);
	return r;
}

bool tm_tls_chan_is_tls(const tm_chan *ch)
{
	return ch->ops == &tm_transport_tls;
}

const char *tm_tls_chan_cipher(const tm_chan *ch)
{
	if (ch->ops != &tm_transport_tls)
		return NULL;
	const tls_chan *t = ch->priv;
	return SSL_get_cipher_name(t->ssl);
}

unsigned tm_tls_chan_ktls(const tm_chan *ch)
{
	if (ch->ops != &tm_transport_tls)
		return 0;
	const tls_chan *t = ch->priv;
	return (t->ktls_tx ? TM_TLS_KTLS_TX : 0) | (t->ktls_rx ? TM_TLS_KTLS_RX : 0);
}

bool tm_tls_chan_resumed(const tm_chan *ch)
{
	if (ch->ops != &tm_transport_tls)
		return false;
	const tls_chan *t = ch->priv;
	return SSL_session_reused(t->ssl);
}

const char *tm_tls_chan_last_error(const tm_chan *ch)
{
	if (ch->ops != &tm_transport_tls)
		return NULL;
	const tls_chan *t = ch->priv;
	return t->err_msg;
}
