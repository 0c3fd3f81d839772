/* SPDX-License-Identifier: MIT */
/*
 * Writes the seeds of fuzz-tls-records: OUT-DIR/tls-records/ (normally tests/fuzz/corpus), for
 * each cipher suite and direction (tls-fuzz.h). Valid streams are sealed twice over: by
 * records.c (our sender's code) and, independently of it, straight with OpenSSL's TLS 1.3 KDF
 * and AEAD (the key, IV and nonces of RFC 8446 7.3 and 5.3 done here), which must give the
 * same bytes; then variants the receiver must refuse: truncated, oversized, bad header type,
 * version or length, bad tag, bad content. Deterministic: rerun after a change to compare.
 * With --openssl it writes openssl-* instead: records OpenSSL's record layer sealed (padding, a
 * KeyUpdate, close_notify) after a real handshake between two OpenSSL ends in memory, with that
 * handshake's traffic secret in the input; these differ run to run (the handshake is random).
 */
#include <stdio.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <openssl/core_names.h>
#include <openssl/kdf.h>

#include "common/testing/tls-creds.h"
#include "tls-fuzz.h"

static const char *out_dir;

/* Input name-SUITE-DIRECTION of stream s, read as the session sent it (read pattern 0). */
static void put_read(const char *name, unsigned suite, unsigned dir, const GByteArray *s,
		     unsigned pattern)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *path = g_strdup_printf("%s/%s-%u%s", out_dir, name,
						1301 + (suite & ~FUZZ_TLS_OWN_SECRET), dir ? "-s2c" : "-c2s");
	g_autoptr(GByteArray) in = g_byte_array_new();
	uint8_t prefix[FUZZ_TLS_PREFIX] = { (uint8_t)suite, (uint8_t)(dir | pattern << 1) };

	g_byte_array_append(in, prefix, sizeof(prefix));
	g_byte_array_append(in, s->data, s->len);
	if (!g_file_set_contents(path, (const char *)in->data, (gssize)in->len, &error))
		g_error("%s", error->message);
}

static void put(const char *name, unsigned suite, unsigned dir, const GByteArray *s)
{
	put_read(name, suite, dir, s, 0);
}

/* Appends a record of content c[0..n), content type `type` and pad zero bytes, sealed by d. */
static void rec(GByteArray *s, tm_tls_dir *d, uint8_t type, const uint8_t *c, size_t n, size_t pad)
{
	size_t inner = n + 1 + pad, at = s->len;
	static const uint8_t zero[256];

	g_byte_array_set_size(s, (guint)(at + TM_TLS_HDR + inner + TM_TLS_TAG));
	uint8_t *r = s->data + at, *o = r + TM_TLS_HDR;
	g_assert_cmpint(tm_tls_seal_begin(d, r, inner - 1), ==, 0);
	g_assert_cmpint(tm_tls_crypt(d, o, c, n), ==, 0);
	if (pad > 0) {
		g_assert_cmpint(tm_tls_crypt(d, o + n, &type, 1), ==, 0);
		g_assert_cmpint(tm_tls_crypt(d, o + n + 1, zero, pad - 1), ==, 0);
		type = 0;
	}
	g_assert_cmpint(tm_tls_seal_end(d, type, o + inner - 1), ==, 0);
}

static uint8_t *content(size_t n, unsigned salt)
{
	uint8_t *c = g_malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		c[i] = (uint8_t)(i * 13 + salt + (i >> 8));
	return c;
}

/* A data record of n bytes. */
static void data(GByteArray *s, tm_tls_dir *d, size_t n, size_t pad, unsigned salt)
{
	g_autofree uint8_t *c = content(n, salt);
	rec(s, d, TM_TLS_CT_DATA, c, n, pad);
}

static void key_update(GByteArray *s, tm_tls_dir *d, uint8_t requested)
{
	const uint8_t ku[5] = { TM_TLS_HS_KEY_UPDATE, 0, 0, 1, requested };
	rec(s, d, TM_TLS_CT_HANDSHAKE, ku, sizeof(ku), 0);
	g_assert_cmpint(tm_tls_dir_update(d), ==, 0);
}

/*
 * The session a sender's records make: message headers and bodies, page data in full records
 * (opened in place), a padded record (taken back from in place), a KeyUpdate, more under the next key,
 * close_notify.
 */
static GByteArray *valid_stream(unsigned suite, unsigned dir)
{
	GByteArray *s = g_byte_array_new();
	tm_tls_dir d;
	static const uint8_t close_notify[2] = { 1, 0 };

	g_assert_cmpint(fuzz_tls_dir(&d, suite, dir, NULL, true), ==, 0);
	data(s, &d, 24, 0, 1);
	data(s, &d, 1000, 0, 2);
	data(s, &d, 24, 0, 3);
	data(s, &d, TM_TLS_RECORD, 0, 4);
	data(s, &d, 600, 3, 5); /* opened in place, then taken back: padded */
	data(s, &d, 5, 0, 6);
	key_update(s, &d, 0);
	data(s, &d, 4096, 0, 7);
	data(s, &d, 0, 0, 8);
	rec(s, &d, TM_TLS_CT_ALERT, close_notify, sizeof(close_notify), 0);
	tm_tls_dir_free(&d);
	return s;
}

/* ---- the same records without records.c: OpenSSL's KDF and AEAD, straight ---- */

static void label(const EVP_MD *md, const uint8_t *secret, size_t slen, const char *l,
		  uint8_t *out, size_t len)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_3_KDF, NULL);
	EVP_KDF_CTX *k = EVP_KDF_CTX_new(kdf);
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	OSSL_PARAM p[] = {
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, slen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, "tls13 ", 6),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)l, strlen(l)),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_DATA, "", 0),
		OSSL_PARAM_construct_end(),
	};
	g_assert_true(k && EVP_KDF_derive(k, out, len, p) == 1);
	EVP_KDF_CTX_free(k);
	EVP_KDF_free(kdf);
}

/* One application data record of n bytes under the first traffic secret, sequence seq. */
static void evp_data(GByteArray *s, unsigned suite, unsigned dir, uint64_t seq, size_t n,
		     unsigned salt)
{
	tm_tls_dir ref;
	g_assert_cmpint(fuzz_tls_dir(&ref, suite, dir, NULL, true), ==, 0); /* for its secret only */
	const EVP_CIPHER *cipher = ref.cipher;
	uint8_t key[32], iv[12], tag[16];
	int klen = EVP_CIPHER_get_key_length(cipher), outl;
	label(ref.md, ref.secret, ref.secret_len, "key", key, (size_t)klen);
	label(ref.md, ref.secret, ref.secret_len, "iv", iv, sizeof(iv));
	for (unsigned i = 0; i < 8; i++)
		iv[11 - i] ^= (uint8_t)(seq >> (8 * i));
	tm_tls_dir_free(&ref);

	g_autofree uint8_t *c = content(n + 1, salt);
	c[n] = TM_TLS_CT_DATA;
	size_t clen = n + 1 + TM_TLS_TAG, at = s->len;
	uint8_t hdr[TM_TLS_HDR] = { TM_TLS_CT_DATA, 3, 3, (uint8_t)(clen >> 8), (uint8_t)clen };
	g_byte_array_set_size(s, (guint)(at + TM_TLS_HDR + clen));
	uint8_t *r = s->data + at;
	memcpy(r, hdr, sizeof(hdr));
	EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
	g_assert_true(EVP_EncryptInit_ex(x, cipher, NULL, NULL, NULL) == 1 &&
		      EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1 &&
		      EVP_EncryptInit_ex(x, NULL, NULL, key, iv) == 1 &&
		      EVP_EncryptUpdate(x, NULL, &outl, hdr, sizeof(hdr)) == 1 &&
		      EVP_EncryptUpdate(x, r + TM_TLS_HDR, &outl, c, (int)(n + 1)) == 1 &&
		      EVP_EncryptFinal_ex(x, tag, &outl) == 1 &&
		      EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1);
	memcpy(r + TM_TLS_HDR + n + 1, tag, sizeof(tag));
	EVP_CIPHER_CTX_free(x);
}

static void gen(unsigned suite, unsigned dir)
{
	g_autoptr(GByteArray) valid = valid_stream(suite, dir);
	put("valid", suite, dir, valid);
	/* The same read in pieces that cut records anywhere (the prefix's other read patterns). */
	put_read("valid-cut", suite, dir, valid, suite * 2 + 1);

	/* Independently sealed: the first records of valid, byte for byte. */
	g_autoptr(GByteArray) evp = g_byte_array_new();
	evp_data(evp, suite, dir, 0, 24, 1);
	evp_data(evp, suite, dir, 1, 1000, 2);
	evp_data(evp, suite, dir, 2, 24, 3);
	evp_data(evp, suite, dir, 3, TM_TLS_RECORD, 4);
	g_assert_true(memcmp(evp->data, valid->data, evp->len) == 0);
	put("openssl-evp", suite, dir, evp);

	g_autoptr(GByteArray) s = g_byte_array_new();
	tm_tls_dir d;
	g_assert_cmpint(fuzz_tls_dir(&d, suite, dir, NULL, true), ==, 0);
	data(s, &d, 24, 0, 1);
	size_t first = s->len;
	data(s, &d, 1000, 0, 2);
	size_t second = s->len;
	data(s, &d, 24, 0, 3); /* the start of valid: read 24, 1000, 24 */
	tm_tls_dir_free(&d);

	struct { const char *name; size_t off; uint8_t xor; } flips[] = {
		{ "bad-tag", second - 1, 0x01 },
		{ "bad-ciphertext", first + TM_TLS_HDR + 10, 0x80 },
		{ "bad-header-type", first, 23 ^ 22 },
		{ "bad-version", first + 2, 0x01 },
		{ "bad-length", first + 4, 0x01 },
	};
	for (unsigned i = 0; i < G_N_ELEMENTS(flips); i++) {
		g_autoptr(GByteArray) m = g_byte_array_new();
		g_byte_array_append(m, s->data, s->len);
		m->data[flips[i].off] ^= flips[i].xor;
		put(flips[i].name, suite, dir, m);
	}
	g_autoptr(GByteArray) cut = g_byte_array_new();
	g_byte_array_append(cut, s->data, second - 7);
	put("truncated", suite, dir, cut);

	/* Oversized: a header announcing 64 KiB - 1 and that many bytes; 2^14 + 256 + 1. */
	g_autoptr(GByteArray) big = g_byte_array_new();
	g_byte_array_append(big, s->data, first);
	for (unsigned k = 0; k < 2; k++) {
		size_t clen = k == 0 ? 0xffff : TM_TLS_MAX_CIPHERTEXT + 1, at = big->len;
		g_byte_array_set_size(big, (guint)(at + TM_TLS_HDR + clen));
		memset(big->data + at, 0x5a, TM_TLS_HDR + clen);
		uint8_t hdr[TM_TLS_HDR] = { TM_TLS_CT_DATA, 3, 3, (uint8_t)(clen >> 8), (uint8_t)clen };
		memcpy(big->data + at, hdr, sizeof(hdr));
		put(k == 0 ? "oversized-64k" : "oversized-by-1", suite, dir, big);
		g_byte_array_set_size(big, (guint)first);
	}

	/* Authentic records the receiver must refuse for their content. */
	static const struct { const char *name; uint8_t type; uint8_t c[6]; size_t n, pad; } bad[] = {
		{ "content-overflow", TM_TLS_CT_DATA, { 0 }, TM_TLS_RECORD + 1, 0 },
		{ "no-content-type", 0, { 0 }, 0, 0 },
		{ "unknown-type", 99, { 1, 2 }, 2, 0 },
		{ "alert-fatal", TM_TLS_CT_ALERT, { 2, 40 }, 2, 0 },
		{ "alert-long", TM_TLS_CT_ALERT, { 2, 40, 0 }, 3, 0 },
		{ "handshake-other", TM_TLS_CT_HANDSHAKE, { 4, 0, 0, 1, 0 }, 5, 0 },
		{ "key-update-bad-len", TM_TLS_CT_HANDSHAKE, { 24, 0, 0, 2, 0, 0 }, 6, 0 },
		{ "key-update-trailing", TM_TLS_CT_HANDSHAKE, { 24, 0, 0, 1, 0, 0 }, 6, 0 },
		{ "key-update-param", TM_TLS_CT_HANDSHAKE, { 24, 0, 0, 1, 2 }, 5, 0 },
		{ "key-update-requested", TM_TLS_CT_HANDSHAKE, { 24, 0, 0, 1, 1 }, 5, 0 },
	};
	for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
		g_autoptr(GByteArray) m = g_byte_array_new();
		g_assert_cmpint(fuzz_tls_dir(&d, suite, dir, NULL, true), ==, 0);
		data(m, &d, 24, 0, 1);
		if (bad[i].n > sizeof(bad[i].c))
			data(m, &d, bad[i].n, 0, 7);
		else if (bad[i].type == 0)
			rec(m, &d, 0, NULL, 0, 8); /* all zeros: no content type */
		else
			rec(m, &d, bad[i].type, bad[i].c, bad[i].n, bad[i].pad);
		data(m, &d, 24, 0, 9);
		tm_tls_dir_free(&d);
		put(bad[i].name, suite, dir, m);
	}
}

/* ---- --openssl: records OpenSSL's own record layer sealed after a real handshake ---- */

static char keylog[2][200]; /* the CLIENT_ and SERVER_TRAFFIC_SECRET_0 lines */

static void keylog_cb(const SSL *ssl, const char *line)
{
	(void)ssl;
	if (g_str_has_prefix(line, "CLIENT_TRAFFIC_SECRET_0 "))
		g_strlcpy(keylog[0], line, sizeof(keylog[0]));
	else if (g_str_has_prefix(line, "SERVER_TRAFFIC_SECRET_0 "))
		g_strlcpy(keylog[1], line, sizeof(keylog[1]));
}

/* The secret of a key-log line: its last field, in hex. */
static void keylog_secret(const char *line, uint8_t *out, size_t len)
{
	const char *hex = strrchr(line, ' ');
	g_assert_nonnull(hex);
	g_assert_cmpuint(strlen(hex + 1), ==, 2 * len);
	for (size_t i = 0; i < len; i++)
		out[i] = (uint8_t)(g_ascii_xdigit_value(hex[1 + 2 * i]) << 4 |
				   g_ascii_xdigit_value(hex[2 + 2 * i]));
}

/* Moves what each side wrote to the other until neither has anything to say. */
static void pump(SSL *c, SSL *sv, BIO *cout, BIO *cin, BIO *sout, BIO *sin)
{
	for (int i = 0; i < 100; i++) {
		SSL_do_handshake(c);
		SSL_do_handshake(sv);
		uint8_t buf[16384];
		int n, moved = 0;
		while ((n = BIO_read(cout, buf, sizeof(buf))) > 0)
			moved += BIO_write(sin, buf, n);
		while ((n = BIO_read(sout, buf, sizeof(buf))) > 0)
			moved += BIO_write(cin, buf, n);
		if (!moved && SSL_is_init_finished(c) && SSL_is_init_finished(sv))
			return;
	}
	g_error("the handshake did not finish");
}

/*
 * One handshake per suite; then each side's OpenSSL writes a session's worth of records
 * (a header, a page, padded records, a KeyUpdate, more): what it sent, read off the wire, with
 * its traffic secret in the input (FUZZ_TLS_OWN_SECRET).
 */
static void gen_openssl(unsigned suite)
{
	static const char *names[3] = { "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
					 "TLS_CHACHA20_POLY1305_SHA256" };
	g_autoptr(GError) error = NULL;
	g_autoptr(tls_cred) cred = NULL;
	if (tls_cred_new("gen-tls-records", NULL, NULL, NULL, -1, 1, &cred, &error) < 0)
		g_error("%s", error->message);
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method()), *sctx = SSL_CTX_new(TLS_server_method());
	g_assert_true(cctx && sctx);
	for (SSL_CTX *x = cctx; x; x = x == cctx ? sctx : NULL) {
		SSL_CTX_set_min_proto_version(x, TLS1_3_VERSION);
		g_assert_cmpint(SSL_CTX_set_ciphersuites(x, names[suite]), ==, 1);
		SSL_CTX_set_keylog_callback(x, keylog_cb);
	}
	SSL_CTX_set_num_tickets(sctx, 0); /* no NewSessionTicket in the server's direction */
	g_assert_cmpint(SSL_CTX_use_certificate(sctx, cred->cert), ==, 1);
	g_assert_cmpint(SSL_CTX_use_PrivateKey(sctx, cred->key), ==, 1);
	SSL *c = SSL_new(cctx), *sv = SSL_new(sctx);
	BIO *cin = BIO_new(BIO_s_mem()), *cout = BIO_new(BIO_s_mem());
	BIO *sin = BIO_new(BIO_s_mem()), *sout = BIO_new(BIO_s_mem());
	SSL_set_bio(c, cin, cout);
	SSL_set_bio(sv, sin, sout);
	SSL_set_connect_state(c);
	SSL_set_accept_state(sv);
	pump(c, sv, cout, cin, sout, sin); /* both directions are empty after it */
	for (unsigned dir = 0; dir < 2; dir++) {
		SSL *w = dir ? sv : c;
		BIO *wire = dir ? sout : cout;
		g_autofree uint8_t *page = content(TM_TLS_RECORD, 2);
		g_assert_cmpint(SSL_write(w, page, 24), ==, 24);
		g_assert_cmpint(SSL_write(w, page, 1000), ==, 1000);
		g_assert_cmpint(SSL_write(w, page, 24), ==, 24);
		g_assert_cmpint(SSL_write(w, page, TM_TLS_RECORD), ==, TM_TLS_RECORD);
		SSL_set_block_padding(w, 512);
		g_assert_cmpint(SSL_write(w, page, 605), ==, 605);
		SSL_set_block_padding(w, 0);
		g_assert_cmpint(SSL_key_update(w, SSL_KEY_UPDATE_NOT_REQUESTED), ==, 1);
		g_assert_cmpint(SSL_write(w, page, 4096), ==, 4096);
		g_assert_cmpint(SSL_shutdown(w), >=, 0);
		g_autoptr(GByteArray) s = g_byte_array_new();
		uint8_t secret[48];
		size_t len = fuzz_tls_secret_len(suite);
		keylog_secret(keylog[dir], secret, len);
		g_byte_array_append(s, secret, (guint)len);
		uint8_t buf[16384];
		int n;
		while ((n = BIO_read(wire, buf, sizeof(buf))) > 0)
			g_byte_array_append(s, buf, (guint)n);
		put_read("openssl", suite | FUZZ_TLS_OWN_SECRET, dir, s, 0);
	}
	SSL_free(c);
	SSL_free(sv);
	SSL_CTX_free(cctx);
	SSL_CTX_free(sctx);
}

int main(int argc, char **argv)
{
	bool openssl = argc == 3 && strcmp(argv[1], "--openssl") == 0;
	if (argc != 2 && !openssl) {
		fprintf(stderr, "usage: %s [--openssl] OUT-DIR\n", argv[0]);
		return 2;
	}
	g_autofree char *dir = g_build_filename(argv[argc - 1], "tls-records", NULL);
	if (g_mkdir_with_parents(dir, 0755) < 0)
		g_error("cannot create %s", dir);
	out_dir = dir;
	for (unsigned suite = 0; suite < 3; suite++) {
		if (openssl) {
			gen_openssl(suite);
			continue;
		}
		for (unsigned d = 0; d < 2; d++)
			gen(suite, d);
	}
	return 0;
}
