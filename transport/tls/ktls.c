/* SPDX-License-Identifier: MIT */
/*
 * Kernel TLS (Documentation/networking/tls.rst) for the direction tagmig's record layer protects:
 * with our keys the kernel seals records as the sender writes guest RAM to the socket, and opens
 * them straight from the socket buffers into guest RAM on the receiver, one pass over the data
 * and no ciphertext buffer in user space. Records of other content types (close_notify,
 * KeyUpdate) travel as control messages (TLS_SET_RECORD_TYPE / TLS_GET_RECORD_TYPE).
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

#include "transport/tls/tls-internal.h"

#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SOL_TLS
#define SOL_TLS 282
#endif

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

int tm_ktls_set(int fd, const tm_tls_dir *d, bool tx, bool install_ulp)
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

int tm_ktls_send_ctrl(int fd, uint8_t type, const void *buf, size_t len)
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

ssize_t tm_ktls_recv(int fd, const struct iovec *iov, unsigned n, uint8_t *ret_type)
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
	*ret_type = 23; /* application data unless the kernel says otherwise */
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE)
			*ret_type = *CMSG_DATA(cm);
	return r;
}
