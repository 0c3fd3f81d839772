/* SPDX-License-Identifier: MIT */
/*
 * TLS on one channel: the TLS handle (tm_transport_tls) that wraps an inner I/O handle, the
 * handshake, the choice of record engine per direction, and the clean close. The engines do the
 * records: OpenSSL's (tls-openssl.c, also the BIO OpenSSL talks through), tagmig's (tls-own.c)
 * and kernel TLS (ktls.c); this file calls them only through their ops tables.
 */
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tagmig/error.h"
#include "transport/tls/tls-internal.h"

/* The server's confirmation after the handshake (see tls.h). */
static const uint8_t ready_msg[8] = { 'T', 'M', 'T', 'L', 'S', '1', '\r', '\n' };

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
	if (t->kept) {
		OPENSSL_cleanse(t->kept->data, t->kept->len);
		g_byte_array_unref(g_steal_pointer(&t->kept));
	}
	g_free(t->stage);
	g_free(t->out);
	g_free(t->in);
	g_free(t->plain);
	tm_tls_dir_free(&t->tx);
	tm_tls_dir_free(&t->rx);
	tm_tls_dir_free(&t->ossl_tx);
	OPENSSL_cleanse(t->secret, sizeof(t->secret));
	g_free(t->kv);
	g_free(t->verify_subject);
	g_free(t->verify_when);
	g_free(t->err_msg);
}

/* Checks that t may still be used (to send, or to read); a failed TLS session stays failed. */
static int io_begin(tls_chan *t, bool sending)
{
	if (t->broken || (sending && t->tx_dead))
		return -EPIPE; /* err_msg still says why */
	t->io_err = 0;
	ERR_clear_error();
	return 0;
}

/* ---- the wrapper backend ---- */

static int tls_open(tm_io *io, GError **error)
{
	g_set_error(error, TM_ERROR, EINVAL,
		    "%s: TLS wraps another I/O handle: open the channel with a byte mover, "
		    "then call tm_tls_wrap()", io->label);
	return -EINVAL;
}

static void tls_close(tm_io *io)
{
	tls_chan *t = io->priv;

	/* Best effort: a session that did not call tm_tls_shutdown still ends cleanly. */
	if (!t->broken && !t->tx_dead) {
		ERR_clear_error();
		t->tx_engine->close_notify(t);
		ERR_clear_error();
	}
	tls_release(t);
	/* tm_io_free frees t itself (io->priv), then closes the inner handle */
}

/* Both directions go to their record engine (tls-internal.h), once the channel is still usable. */
static int tls_send(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	tls_chan *t = io->priv;
	int r = io_begin(t, true);

	return r < 0 ? r : t->tx_engine->send(t, iov, n, len);
}

static int tls_recv(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	tls_chan *t = io->priv;
	int r = io_begin(t, false);

	return r < 0 ? r : t->rx_engine->recv(t, iov, n, len);
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

/*
 * What a recv could take without a new write of the peer: plaintext opened ahead (our record
 * layer), records OpenSSL decrypted ahead, ciphertext read ahead (possibly half a record: then
 * recv waits only for the rest), or whatever the socket below holds (kernel TLS keeps its
 * records in the socket, so a poll of it is the answer there too).
 */
static bool tls_readable(tm_io *io)
{
	tls_chan *t = io->priv;

	if (t->broken || t->plain_len > 0 || t->in_len > 0 || (t->ssl && SSL_pending(t->ssl) > 0) ||
	    (t->kept && t->kept_off < t->kept->len))
		return true;
	return tm_io_readable(t->inner);
}

static const char *tls_last_error(const tm_io *io)
{
	const tls_chan *t = io->priv;
	return t->err_msg;
}

/* The peer's close_notify came: tagmig's records and kernel TLS note it, OpenSSL's its SSL. */
static bool tls_peer_ended(const tm_io *io)
{
	const tls_chan *t = io->priv;
	return t->rx_closed || (SSL_get_shutdown(t->ssl) & SSL_RECEIVED_SHUTDOWN);
}

const tm_transport_ops tm_transport_tls = {
	.name = "tls",
	.priv_size = sizeof(tls_chan),
	.open = tls_open,
	.close = tls_close,
	.readable = tls_readable,
	.send = tls_send,
	.recv = tls_recv,
	.send_last = tls_send_last,
	.last_error = tls_last_error,
	.peer_ended = tls_peer_ended,
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
		int r = tm_tls_ssl_write(t, ready_msg, sizeof(ready_msg));
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

/*
 * After the handshake: the engine of the direction that carries the guest's memory (the client's
 * sending, the server's receiving). tagmig's records unless the context says OpenSSL's; kernel
 * TLS on top where the context found it usable. Nothing of this direction has been sent or read
 * yet (sequence 0; the server read nothing past the client's Finished), and records already
 * queued on the socket are the kernel's to open. A refusal of kernel TLS leaves the socket as it
 * was: tagmig's records go on in user space.
 */
static int pick_engine(tls_chan *t)
{
	const tm_tls_engine *e = &tm_tls_engine_openssl;

	if (t->ctx->own_records) {
		int r = tm_tls_engine_own.start(t);
		if (r < 0)
			return r;
		e = &tm_tls_engine_own;
		if (t->ctx->ktls && tm_tls_engine_ktls.start(t) == 0) {
			e = &tm_tls_engine_ktls;
			tm_count(&t->ctx->ktls_channels, 1);
		}
	}
	if (t->ctx->role == TM_TLS_CLIENT)
		t->tx_engine = e;
	else
		t->rx_engine = e;
	return 0;
}

/*
 * Whether ssl will check the receiver's name: the context set it up (tm_tls_ctx_new, every
 * setter checked) and each SSL inherits it. Checked again per channel, because without it the
 * handshake would verify the chain only and accept any certificate of the CA.
 */
static bool has_name_check(SSL *ssl)
{
	X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
	char *ip = X509_VERIFY_PARAM_get1_ip_asc(vp);
	bool ok = ip || X509_VERIFY_PARAM_get0_host(vp, 0);

	OPENSSL_free(ip);
	return ok;
}

int tm_tls_wrap(tm_tls_ctx *ctx, tm_io **io, GError **error)
{
	tm_io *inner = *io;

	if (inner->ops == &tm_transport_tls) {
		g_set_error(error, TM_ERROR, EALREADY, "%s: TLS is already running",
			    inner->label);
		return -EALREADY;
	}
	tls_chan *t = g_new0(tls_chan, 1);
	t->ctx = tm_tls_ctx_ref(ctx);
	t->inner = inner;
	t->tx_engine = t->rx_engine = &tm_tls_engine_openssl;
	ERR_clear_error();
	t->ssl = SSL_new(ctx->ssl_ctx);
	BIO *bio = tm_tls_bio_new(t);
	if (!t->ssl || !bio) {
		BIO_free(bio);
		tls_release(t);
		g_free(t);
		ERR_clear_error();
		g_set_error(error, TM_ERROR, ENOMEM, "%s: TLS: out of memory", inner->label);
		return -ENOMEM;
	}
	t->out = g_malloc(TM_TLS_OUT);
	SSL_set_bio(t->ssl, bio, bio);
	SSL_set_app_data(t->ssl, t);

	if (ctx->role == TM_TLS_CLIENT) {
		if (!has_name_check(t->ssl) ||
		    (ctx->sni && SSL_set_tlsext_host_name(t->ssl, ctx->sni) != 1)) {
			tls_release(t);
			g_free(t);
			ERR_clear_error();
			g_set_error(error, TM_ERROR, EINVAL, "%s: TLS: cannot set up the check "
				    "of the receiver's certificate against '%s'", inner->label,
				    ctx->hostname);
			return -EINVAL;
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
		g_set_error(error, TM_ERROR, -r, "%s: TLS handshake: %s", inner->label,
			    t->err_msg);
		tls_release(t);
		g_free(t);
		return r;
	}
	if ((r = pick_engine(t)) < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: TLS handshake: %s", inner->label,
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
	t->io->path = t->tx_engine->kernel || t->rx_engine->kernel ? "ktls" : NULL;
	*io = t->io;
	return 0;
}

int tm_tls_close_notify(tm_io *io, GError **error)
{
	if (!io || io->ops != &tm_transport_tls)
		return 0;
	tls_chan *t = io->priv;
	int r = io_begin(t, true);
	if (r == 0) {
		t->want = 0;
		r = t->tx_engine->close_notify(t);
	}
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: TLS close: %s", io->label,
			    t->err_msg ? t->err_msg : g_strerror(-r));
		return r;
	}
	return 0;
}

int tm_tls_shutdown(tm_io *io, GError **error)
{
	if (!io || io->ops != &tm_transport_tls)
		return 0;
	tls_chan *t = io->priv;
	int r = io_begin(t, true);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: TLS close: the session already failed%s%s",
			    io->label, t->err_msg ? ": " : "", t->err_msg ? t->err_msg : "");
		return r;
	}
	t->want = 0;
	/*
	 * The close is one short record each way: it gets a deadline of its own (5 s), not what is
	 * left of the last message's (session/channel.h), nor none.
	 */
	tm_io_set_deadline(io, tm_now_us() + 5 * G_USEC_PER_SEC);
	r = t->tx_engine->close_notify(t);
	if (r == 0)
		r = t->rx_engine->await_close(t);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: TLS close: %s", io->label, t->err_msg);
		return r;
	}
	return 0;
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
	return (t->tx_engine->kernel ? TM_TLS_KTLS_TX : 0) | (t->rx_engine->kernel ? TM_TLS_KTLS_RX : 0);
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
