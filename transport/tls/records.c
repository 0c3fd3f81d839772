/* SPDX-License-Identifier: MIT */
/*
 * tagmig's own TLS 1.3 record protection for one direction of a channel (RFC 8446 section 5),
 * used after OpenSSL has done the handshake. Why: OpenSSL's record layer copies the plaintext
 * into its record buffer before encrypting and decrypts in its buffer before copying out, so
 * every byte of guest RAM is copied twice more than it is encrypted. Here the sender encrypts
 * straight from guest RAM into the record it sends, and the receiver decrypts straight from the
 * received record into guest RAM. The cipher itself is OpenSSL's (EVP AEAD); only the framing,
 * the nonces and the key schedule of RFC 8446 sections 5.2, 5.3, 7.1 and 7.2 are done here.
 *
 * The keys come from the traffic secret OpenSSL reports through its key-log callback; the key
 * and IV follow with HKDF-Expand-Label (OpenSSL's TLS13-KDF).
 */
#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>

#include "transport/tls/tls-internal.h"

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446 section 7.1. */
static int expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len,
			const char *label, uint8_t *out, size_t len)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_3_KDF, NULL);
	EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	static const char prefix[] = "tls13 ";
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)EVP_MD_get0_name(md),
						 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, (void *)prefix,
						  sizeof(prefix) - 1),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)label,
						  strlen(label)),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_DATA, (void *)"", 0),
		OSSL_PARAM_construct_end(),
	};
	int ok = kctx && EVP_KDF_derive(kctx, out, len, params) == 1;

	EVP_KDF_CTX_free(kctx);
	EVP_KDF_free(kdf);
	return ok ? 0 : -EPROTO;
}

/* Key and IV of the current secret into the cipher context (RFC 8446 section 7.3). */
static int install_keys(tm_tls_dir *d)
{
	uint8_t key[EVP_MAX_KEY_LENGTH];
	int klen = EVP_CIPHER_get_key_length(d->cipher);
	int r = -EPROTO;

	if (klen <= 0 || (size_t)klen > sizeof(key))
		return -EPROTO;
	if (expand_label(d->md, d->secret, d->secret_len, "key", key, (size_t)klen) == 0 &&
	    expand_label(d->md, d->secret, d->secret_len, "iv", d->iv, sizeof(d->iv)) == 0 &&
	    EVP_CipherInit_ex(d->aead, d->cipher, NULL, NULL, NULL, d->encrypt) == 1 &&
	    EVP_CIPHER_CTX_ctrl(d->aead, EVP_CTRL_AEAD_SET_IVLEN, sizeof(d->iv), NULL) == 1 &&
	    EVP_CipherInit_ex(d->aead, NULL, NULL, key, NULL, d->encrypt) == 1)
		r = 0;
	OPENSSL_cleanse(key, sizeof(key));
	if (r < 0) {
		/* The context may still hold the old key: make it unusable rather than reuse nonces. */
		EVP_CIPHER_CTX_reset(d->aead);
		return r;
	}
	d->seq = 0;
	d->records = 0;
	return 0;
}

int tm_tls_dir_init(tm_tls_dir *d, const SSL *ssl, const uint8_t *secret, size_t secret_len,
		    bool encrypt)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);

	memset(d, 0, sizeof(*d));
	if (!c)
		return -EPROTO;
	return tm_tls_dir_init_suite(d, SSL_CIPHER_get_protocol_id(c), secret, secret_len, encrypt);
}

int tm_tls_dir_init_suite(tm_tls_dir *d, uint16_t suite, const uint8_t *secret,
			  size_t secret_len, bool encrypt)
{
	memset(d, 0, sizeof(*d));
	if (secret_len == 0 || secret_len > sizeof(d->secret))
		return -EPROTO;
	/* The suite's AEAD and its handshake hash (SSL_CIPHER_get_handshake_digest). */
	switch (suite) {
	case 0x1301: /* TLS_AES_128_GCM_SHA256 */
		d->cipher = EVP_aes_128_gcm();
		d->md = EVP_sha256();
		break;
	case 0x1302: /* TLS_AES_256_GCM_SHA384 */
		d->cipher = EVP_aes_256_gcm();
		d->md = EVP_sha384();
		break;
	case 0x1303: /* TLS_CHACHA20_POLY1305_SHA256 */
		d->cipher = EVP_chacha20_poly1305();
		d->md = EVP_sha256();
		break;
	default:
		return -EPROTONOSUPPORT;
	}
	d->aead = EVP_CIPHER_CTX_new();
	if (!d->md || !d->cipher || !d->aead) {
		tm_tls_dir_free(d);
		return -ENOMEM;
	}
	memcpy(d->secret, secret, secret_len);
	d->secret_len = secret_len;
	d->encrypt = encrypt;
	int r = install_keys(d);
	if (r < 0)
		tm_tls_dir_free(d);
	return r;
}

void tm_tls_dir_free(tm_tls_dir *d)
{
	EVP_CIPHER_CTX_free(d->aead);
	OPENSSL_cleanse(d, sizeof(*d));
}

int tm_tls_dir_update(tm_tls_dir *d)
{
	uint8_t next[sizeof(d->secret)];

	/* application_traffic_secret_N+1 = HKDF-Expand-Label(secret_N, "traffic upd", "", Hash.length) */
	if (expand_label(d->md, d->secret, d->secret_len, "traffic upd", next, d->secret_len) < 0) {
		OPENSSL_cleanse(next, sizeof(next));
		EVP_CIPHER_CTX_reset(d->aead);
		return -EPROTO;
	}
	memcpy(d->secret, next, d->secret_len);
	OPENSSL_cleanse(next, sizeof(next));
	d->generation++;
	return install_keys(d);
}

/* Starts the record with header hdr (the additional data): per-record nonce = IV xor seq. */
static int begin(tm_tls_dir *d, const uint8_t hdr[TM_TLS_HDR])
{
	uint8_t nonce[sizeof(d->iv)];
	int outl;

	memcpy(nonce, d->iv, sizeof(nonce));
	for (unsigned i = 0; i < 8; i++)
		nonce[sizeof(nonce) - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
	if (EVP_CipherInit_ex(d->aead, NULL, NULL, NULL, nonce, d->encrypt) != 1 ||
	    EVP_CipherUpdate(d->aead, NULL, &outl, hdr, TM_TLS_HDR) != 1)
		return -EPROTO;
	return 0;
}

int tm_tls_seal_begin(tm_tls_dir *d, uint8_t *rec, size_t plain_len)
{
	size_t len = plain_len + 1 + TM_TLS_TAG; /* content, content type, tag */

	rec[0] = 23; /* application_data, as every TLS 1.3 protected record says outside */
	rec[1] = 3;
	rec[2] = 3;
	rec[3] = (uint8_t)(len >> 8);
	rec[4] = (uint8_t)len;
	return begin(d, rec);
}

int tm_tls_crypt(tm_tls_dir *d, uint8_t *out, const uint8_t *in, size_t len)
{
	while (len > 0) {
		int n = (int)MIN(len, (size_t)1 << 30), outl;
		if (EVP_CipherUpdate(d->aead, out, &outl, in, n) != 1 || outl != n)
			return -EPROTO;
		out += n;
		in += n;
		len -= (size_t)n;
	}
	return 0;
}

int tm_tls_seal_end(tm_tls_dir *d, uint8_t type, uint8_t *out)
{
	int outl;

	if (tm_tls_crypt(d, out, &type, 1) < 0 || EVP_CipherFinal_ex(d->aead, out + 1, &outl) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->aead, EVP_CTRL_AEAD_GET_TAG, TM_TLS_TAG, out + 1) != 1)
		return -EPROTO;
	d->seq++;
	d->records++;
	return 0;
}

int tm_tls_open_begin(tm_tls_dir *d, const uint8_t hdr[TM_TLS_HDR])
{
	return begin(d, hdr);
}

int tm_tls_open_end(tm_tls_dir *d, const uint8_t *tag)
{
	int outl;
	uint8_t end[16];

	if (EVP_CIPHER_CTX_ctrl(d->aead, EVP_CTRL_AEAD_SET_TAG, TM_TLS_TAG, (void *)tag) != 1 ||
	    EVP_CipherFinal_ex(d->aead, end, &outl) != 1)
		return -EBADMSG;
	d->seq++;
	d->records++;
	return 0;
}

int tm_tls_dir_key(const tm_tls_dir *d, uint8_t *key, size_t *ret_len)
{
	int klen = EVP_CIPHER_get_key_length(d->cipher);

	if (klen <= 0 || (size_t)klen > EVP_MAX_KEY_LENGTH ||
	    expand_label(d->md, d->secret, d->secret_len, "key", key, (size_t)klen) < 0)
		return -EPROTO;
	*ret_len = (size_t)klen;
	return 0;
}
