/* SPDX-License-Identifier: MIT */
/*
 * The kernel TLS record engine (tm_tls_engine_ktls, Documentation/networking/tls.rst) for the
 * direction tagmig's record layer protects, with its keys: the kernel seals records as the sender
 * writes guest RAM to the socket, and opens them straight from the socket buffers into guest RAM
 * on the receiver, one pass over the data and no ciphertext buffer in user space. Records of
 * other content types (close_notify, KeyUpdate) travel as control messages (TLS_SET_RECORD_TYPE /
 * TLS_GET_RECORD_TYPE). This engine moves its bytes itself, with sendmsg/recvmsg on the socket
 * rather than through the inner handle: it counts those system calls on the TLS handle, whose
 * path is then "ktls" (tls-chan.c).
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/tls.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include "transport/tls/tls-internal.h"

typedef union crypto_info {
	struct tls_crypto_info info;
	struct tls12_crypto_info_aes_gcm_128 aes128;
	struct tls12_crypto_info_aes_gcm_256 aes256;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
} crypto_info;

/* RFC 8446 nonce = IV xor sequence; the kernel splits the IV into salt (4 bytes for GCM) and iv. */
#define FILL(ci, type, k, klen, d)                                                          \
	do {                                                                                \
		(ci).info.version = TLS_1_3_VERSION;                                        \
		(ci).info.cipher_type = (type);                                             \
		memcpy((ci).key, (k), sizeof((ci).key));                                    \
		memcpy((ci).salt, (d)->iv, sizeof((ci).salt));                              \
		memcpy((ci).iv, (d)->iv + sizeof((ci).salt), sizeof((ci).iv));              \
		for (unsigned i_ = 0; i_ < 8; i_++)                                          \
			(ci).rec_seq[i_] = (uint8_t)((d)->seq >> (56 - 8 * i_));             \
		G_STATIC_ASSERT(sizeof((ci).salt) + sizeof((ci).iv) == sizeof((d)->iv));    \
		(void)(klen);                                                               \
	} while (0)

static int crypto_info_of(const tm_tls_dir *d, crypto_info *ci, size_t *ret_len)
{
	uint8_t key[EVP_MAX_KEY_LENGTH];
	size_t klen;
	int nid = EVP_CIPHER_get_nid(d->cipher);

	memset(ci, 0, sizeof(*ci));
	if (tm_tls_dir_key(d, key, &klen) < 0)
		return -EPROTO;
	if (nid == NID_aes_128_gcm && klen == 16) {
		FILL(ci->aes128, TLS_CIPHER_AES_GCM_128, key, klen, d);
		*ret_len = sizeof(ci->aes128);
	} else if (nid == NID_aes_256_gcm && klen == 32) {
		FILL(ci->aes256, TLS_CIPHER_AES_GCM_256, key, klen, d);
		*ret_len = sizeof(ci->aes256);
	} else if (nid == NID_chacha20_poly1305 && klen == 32) {
		FILL(ci->chacha, TLS_CIPHER_CHACHA20_POLY1305, key, klen, d);
		*ret_len = sizeof(ci->chacha);
	} else {
		OPENSSL_cleanse(key, sizeof(key));
		return -EOPNOTSUPP;
	}
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

/* Hands d's direction of fd to the kernel (tx: TLS_TX, else TLS_RX); install_ulp the first time. */
static int ktls_set(int fd, const tm_tls_dir *d, bool tx, bool install_ulp)
{
	crypto_info ci;
	size_t len;
	int r = crypto_info_of(d, &ci, &len);

	if (r < 0)
		return r;
	if (install_ulp && setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0)
		r = -errno;
	else if (setsockopt(fd, SOL_TLS, tx ? TLS_TX : TLS_RX, &ci, (socklen_t)len) < 0)
		r = -errno;
	OPENSSL_cleanse(&ci, sizeof(ci));
	return r;
}

/* One record of another content type than application data (alert, KeyUpdate) via the kernel. */
static int ktls_send_ctrl(int fd, uint8_t type, const void *buf, size_t len)
{
	char cbuf[CMSG_SPACE(sizeof(type))] = { 0 };
	struct iovec v = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_TLS;
	cm->cmsg_type = TLS_SET_RECORD_TYPE;
	cm->cmsg_len = CMSG_LEN(sizeof(type));
	memcpy(CMSG_DATA(cm), &type, sizeof(type));
	for (;;) {
		ssize_t r = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		/* A control record is sent whole or not at all. */
		return (size_t)r == len ? 0 : -EIO;
	}
}

/*
 * One recvmsg on a kernel TLS socket into iov[0..n) (at most IOV_MAX used): returns the bytes
 * received (0 at the end of the stream) and the record's content type in *ret_type, or -errno
 * (-EAGAIN after the socket's receive timeout, -EBADMSG for a record that is not authentic).
 */
static ssize_t ktls_recvmsg(int fd, const struct iovec *iov, unsigned n, uint8_t *ret_type)
{
	char cbuf[CMSG_SPACE(sizeof(uint8_t))];
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = MIN(n, (unsigned)IOV_MAX),
			      .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	ssize_t r;

	do
		r = recvmsg(fd, &msg, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	*ret_type = TM_TLS_CT_DATA; /* unless the kernel says otherwise */
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
			*ret_type = *CMSG_DATA(cm);
	return r;
}

/* ---- the engine: kernel TLS with the keys of tagmig's record layer ---- */

/*
 * Takes over the direction tm_tls_engine_own has just set up (its keys, sequence 0). A refusal
 * leaves the socket as it was.
 */
static int ktls_start(tls_chan *t)
{
	const bool client = t->ctx->role == TM_TLS_CLIENT;

	return ktls_set(t->inner->fd, client ? &t->tx : &t->rx, client, true);
}

/*
 * RFC 8446 5.5: a key protects a bounded number of records. Past ctx->key_limit records, or
 * when the receiver asked for it (4.6.3; see tls-own.c maybe_update_key), tell the peer
 * (KeyUpdate, update_not_requested, as the last message under the old key, sent by the kernel
 * as a handshake record) and give the kernel the next traffic secret's key.
 */
static int ktls_update_key(tls_chan *t)
{
	static const uint8_t key_update[5] = { TM_TLS_HS_KEY_UPDATE, 0, 0, 1, 0 };

	if (t->tx.records < t->ctx->key_limit && !t->update_requested)
		return 0;
	int r = ktls_send_ctrl(t->inner->fd, TM_TLS_CT_HANDSHAKE, key_update, sizeof(key_update));
	if (r < 0)
		r = tm_tls_fail(t, r, g_strdup_printf("TLS send: kernel TLS: sending a key update: %s",
						      g_strerror(-r)));
	if (r == 0 && tm_tls_dir_update(&t->tx) < 0)
		r = tm_tls_fail(t, -EPROTO, g_strdup("TLS send: deriving the next key failed"));
	if (r == 0 && (r = ktls_set(t->inner->fd, &t->tx, true, false)) < 0)
		r = tm_tls_fail(t, -EPROTO, g_strdup_printf("TLS send: kernel TLS refused the next "
							    "key: %s", g_strerror(-r)));
	if (r == 0) {
		t->update_requested = false;
		tm_count(&t->ctx->key_updates, 1);
	}
	return r;
}

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
			return tm_tls_fail(t, -EINVAL, g_strdup("TLS send: the iovecs hold less than "
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
			return tm_tls_io_fatal(t, "send");
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
			return tm_tls_fail(t, -EINVAL, g_strdup("TLS receive: the iovecs hold less than "
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
		bool bounce = len < TM_TLS_STREAM_MIN;
		struct iovec b = { .iov_base = t->plain, .iov_len = MAX(len, (size_t)64) };
		uint8_t type = 0;
		ssize_t r = ktls_recvmsg(t->inner->fd, bounce ? &b : v, bounce ? 1 : kn, &type);
		/* One system call of the TLS handle itself (path ktls), submitted and completed at once. */
		tm_count(&t->io->st.io_submissions, 1);
		tm_count(&t->io->st.io_completions, 1);
		/*
		 * The kernel's verdicts (net/tls): EBADMSG a record that is not authentic (or has no
		 * content type), EMSGSIZE one longer than TLS allows, EINVAL another legacy version.
		 */
		if (r == -EBADMSG)
			return tm_tls_fail_alert(t, -EBADMSG, SSL_AD_BAD_RECORD_MAC,
						 g_strdup("TLS record authentication failed (bad record "
							  "MAC): the data was altered in transit"));
		if (r == -EMSGSIZE || r == -EINVAL || r == -EPROTO)
			return tm_tls_fail_alert(t, -EBADMSG,
					r == -EMSGSIZE ? SSL_AD_RECORD_OVERFLOW : SSL_AD_DECODE_ERROR,
					g_strdup_printf("TLS receive: malformed TLS record (kernel "
							"TLS: %s)", g_strerror((int)-r)));
		if (r <= 0) {
			t->io_err = r == 0 ? -ECONNRESET : r == -EAGAIN ? -ETIMEDOUT : (int)r;
			return tm_tls_io_fatal(t, "receive");
		}
		if (type == TM_TLS_CT_DATA && bounce) {
			t->plain_off = 0;
			t->plain_len = (size_t)r;
			continue;
		}
		if (type == TM_TLS_CT_DATA) {
			len -= (size_t)r;
			tm_iov_advance(&v, &kn, (size_t)r);
			continue;
		}
		/* A control record (its content, without type or padding) landed in the buffer. */
		if (!bounce) {
			tm_tls_cursor g = { v, kn, 0 };
			for (size_t i = 0; i < (size_t)r;) {
				size_t k = MIN(tm_tls_cursor_span(&g), (size_t)r - i);
				memcpy(t->plain + i, (uint8_t *)g.v->iov_base + g.off, k);
				g.off += k;
				i += k;
			}
		}
		int c = tm_tls_own_content(t, type, (size_t)r);
		if (c < 0)
			return c;
	}
	return 0;
}

/* The key is checked once per send call, not per record: the kernel cuts the records. */
static int ktls_engine_send(tls_chan *t, const struct iovec *iov, unsigned n, size_t len)
{
	if (t->tx_closed)
		return -EPIPE;
	int r = ktls_update_key(t);
	return r < 0 ? r : ktls_send(t, iov, n, len);
}

static int ktls_close_notify(tls_chan *t)
{
	static const uint8_t alert[2] = { 1 /* warning */, SSL_AD_CLOSE_NOTIFY };

	if (t->tx_closed)
		return 0;
	t->tx_closed = true;
	int r = ktls_send_ctrl(t->inner->fd, TM_TLS_CT_ALERT, alert, sizeof(alert));
	if (r < 0) {
		t->io_err = r;
		r = tm_tls_io_fatal(t, "close_notify");
	}
	/* OpenSSL must not send one of its own in our direction. */
	SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
	return r;
}

static int ktls_rekey_rx(tls_chan *t)
{
	int r = ktls_set(t->inner->fd, &t->rx, false, false);
	if (r < 0)
		return tm_tls_fail_alert(t, -EPROTO, SSL_AD_INTERNAL_ERROR,
				g_strdup_printf("TLS receive: kernel TLS refused the next key: %s",
						g_strerror(-r)));
	return 0;
}

/*
 * A fatal alert as the last record of our direction (tls-alert.c): a control record the kernel
 * seals with our keys and its sequence number, as it does close_notify.
 */
static int ktls_alert(tls_chan *t, uint8_t desc)
{
	const uint8_t alert[2] = { SSL3_AL_FATAL, desc };

	if (t->tx_closed)
		return 0;
	t->tx_closed = true;
	SSL_set_shutdown(t->ssl, SSL_get_shutdown(t->ssl) | SSL_SENT_SHUTDOWN);
	return ktls_send_ctrl(t->inner->fd, TM_TLS_CT_ALERT, alert, sizeof(alert));
}

const tm_tls_engine tm_tls_engine_ktls = {
	.name = "ktls",
	.own_keys = true,
	.kernel = true,
	.start = ktls_start,
	.send = ktls_engine_send,
	.recv = ktls_recv,
	.close_notify = ktls_close_notify,
	.await_close = tm_tls_own_await_close,
	.rekey_rx = ktls_rekey_rx,
	.alert = ktls_alert,
};
