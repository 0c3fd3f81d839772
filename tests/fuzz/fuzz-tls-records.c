/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the receiving side of tagmig's own TLS 1.3 record layer (tls-own.c's recv over
 * records.c) with a ciphertext stream under fixed traffic keys (or the secret the input carries:
 * records OpenSSL sealed after a real handshake): each cipher suite, both
 * directions (the server opening the sender's records, the client the receiver's), reads of
 * varied sizes split over two iovecs so that records are opened in place and through t->plain,
 * key updates included (tls-fuzz.h: the input layout). The inner handle serves the input from
 * memory and every buffer is an exact-size heap copy, so ASan sees any stray byte our code
 * touches; OpenSSL, which decrypts into t->plain and the caller's iovecs, is not instrumented,
 * so those buffers also carry a canary after their end that must survive every call.
 *
 * The target's own check: a reference walk over the same stream (each record opened, sealed
 * again with the encrypting side of the same key and sequence number, which must give back the
 * record byte for byte) says which application data is authentic. Every byte the layer
 * delivers must be that data, in order: a record that does not authenticate, or anything after
 * it, is never delivered.
 */
#include <errno.h>

#include <glib.h>
#include <openssl/err.h>

#include "fuzz.h"
#include "tls-fuzz.h"

typedef struct mem_in {
	const uint8_t *p;
	size_t len, off;
} mem_in;

static int mem_recv(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	mem_in *m = io->priv;

	if (m->len - m->off < len)
		return -ECONNRESET; /* the peer closed before len bytes */
	for (unsigned i = 0; i < n && len > 0; i++) {
		size_t k = MIN(iov[i].iov_len, len);
		memcpy(iov[i].iov_base, m->p + m->off, k);
		m->off += k;
		len -= k;
	}
	return 0;
}

#define CANARY 64u

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif
#ifdef FUZZ_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

/*
 * n bytes followed by CANARY bytes of 0xa5, poisoned for ASan: our code touching them is a report,
 * OpenSSL's writes (not instrumented) change them. check_guard unpoisons them for good (free).
 */
static uint8_t *guarded(size_t n)
{
	uint8_t *p = g_malloc(n + CANARY);
	memset(p + n, 0xa5, CANARY);
	ASAN_POISON_MEMORY_REGION(p + n, CANARY);
	return p;
}

static void check_guard(uint8_t *p, size_t n, const char *what, bool keep)
{
	ASAN_UNPOISON_MEMORY_REGION(p + n, CANARY);
	for (size_t i = 0; i < CANARY; i++)
		if (p[n + i] != 0xa5)
			g_error("written past the end of %s (%zu bytes)", what, n);
	if (keep)
		ASAN_POISON_MEMORY_REGION(p + n, CANARY);
}

static int mem_send(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	(void)io, (void)iov, (void)n, (void)len;
	return -EPIPE; /* nothing is sent in this direction: a KeyUpdate answer fails */
}

static const tm_transport_ops mem_ops = {
	.name = "fuzz-memory",
	.send = mem_send,
	.recv = mem_recv,
};

/*
 * The reference: the application data of the authentic prefix of the stream s[0..len), as
 * tls-own.c must deliver it. Stops at the first record that is incomplete, malformed or not
 * authentic, or that is not data or a KeyUpdate.
 */
static GByteArray *reference(unsigned suite, unsigned dir, const uint8_t *secret,
			     const uint8_t *s, size_t len)
{
	GByteArray *out = g_byte_array_new();
	tm_tls_dir open, seal;
	g_autofree uint8_t *plain = g_malloc(TM_TLS_MAX_CIPHERTEXT);
	g_autofree uint8_t *again = g_malloc(TM_TLS_HDR + TM_TLS_MAX_CIPHERTEXT);

	g_assert_cmpint(fuzz_tls_dir(&open, suite, dir, secret, false), ==, 0);
	g_assert_cmpint(fuzz_tls_dir(&seal, suite, dir, secret, true), ==, 0);
	for (size_t off = 0; len - off >= TM_TLS_HDR;) {
		const uint8_t *h = s + off;
		size_t clen = (size_t)h[3] << 8 | h[4];
		if (h[0] != TM_TLS_CT_DATA || h[1] != 3 || h[2] != 3 || clen < TM_TLS_TAG + 1 ||
		    clen > TM_TLS_TAG + TM_TLS_RECORD + 1 || len - off - TM_TLS_HDR < clen)
			break;
		size_t plen = clen - TM_TLS_TAG;
		if (tm_tls_open_begin(&open, h) < 0 ||
		    tm_tls_crypt(&open, plain, h + TM_TLS_HDR, plen) < 0 ||
		    tm_tls_open_end(&open, h + TM_TLS_HDR + plen) < 0)
			break;
		/* What was opened seals again to the same record (content, type, padding, tag). */
		g_assert_cmpint(tm_tls_seal_begin(&seal, again, plen - 1), ==, 0);
		g_assert_cmpint(tm_tls_crypt(&seal, again + TM_TLS_HDR, plain, plen - 1), ==, 0);
		g_assert_cmpint(tm_tls_seal_end(&seal, plain[plen - 1], again + TM_TLS_HDR + plen - 1),
				==, 0);
		g_assert_true(memcmp(again, h, TM_TLS_HDR + clen) == 0);
		off += TM_TLS_HDR + clen;
		size_t n = plen;
		while (n > 0 && plain[n - 1] == 0)
			n--;
		if (n == 0)
			break;
		uint8_t type = plain[--n];
		if (type == TM_TLS_CT_DATA && n <= TM_TLS_RECORD) {
			g_byte_array_append(out, plain, (guint)n);
			continue;
		}
		if (type == TM_TLS_CT_HANDSHAKE && n == 5 && plain[0] == TM_TLS_HS_KEY_UPDATE &&
		    plain[1] == 0 && plain[2] == 0 && plain[3] == 1 && plain[4] <= 1) {
			g_assert_cmpint(tm_tls_dir_update(&open), ==, 0);
			g_assert_cmpint(tm_tls_dir_update(&seal), ==, 0);
			continue;
		}
		break;
	}
	tm_tls_dir_free(&open);
	tm_tls_dir_free(&seal);
	return out;
}

/*
 * Sizes of the receiver's reads. Pattern 0 reads what the seeds' sessions send, record by record
 * (a message header, a page in full records, ...: records opened in place); the others cycle
 * through sizes that cut records anywhere.
 */
static size_t read_size(unsigned pattern, unsigned i)
{
	static const size_t session[] = { 24, 1000, 24, 16384, 605, 4096, 24 };
	static const size_t sizes[] = { 1, 5, 24, 511, 513, 4096, 16383, 16384, 16385, 40000, 3 };

	if (pattern == 0)
		return session[i % G_N_ELEMENTS(session)];
	return sizes[(pattern + i * (pattern | 1)) % G_N_ELEMENTS(sizes)];
}

static SSL *fuzz_ssl(void)
{
	static SSL_CTX *ctx;
	static SSL *ssl;

	if (!ssl) {
		ctx = SSL_CTX_new(TLS_method());
		ssl = ctx ? SSL_new(ctx) : NULL;
		g_assert_nonnull(ssl);
	}
	return ssl;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < FUZZ_TLS_PREFIX)
		return 0;
	unsigned suite = (data[0] & ~FUZZ_TLS_OWN_SECRET) % 3, dir = data[1] & 1;
	unsigned pattern = data[1] >> 1;
	const uint8_t *s = data + FUZZ_TLS_PREFIX, *secret = NULL;
	size_t slen = size - FUZZ_TLS_PREFIX;
	if (data[0] & FUZZ_TLS_OWN_SECRET) {
		if (slen < fuzz_tls_secret_len(suite))
			return 0;
		secret = s;
		s += fuzz_tls_secret_len(suite);
		slen -= fuzz_tls_secret_len(suite);
	}
	g_autoptr(GByteArray) ref = reference(suite, dir, secret, s, slen);

	mem_in m = { .p = s, .len = slen };
	tm_io inner = { .fd = -1, .ops = &mem_ops, .priv = &m, .path = "fuzz-memory" };
	tm_tls_ctx ctx = { .role = dir ? TM_TLS_CLIENT : TM_TLS_SERVER };
	tls_chan t = {
		.ctx = &ctx,
		.inner = &inner,
		.ssl = fuzz_ssl(),
		.tx_engine = &tm_tls_engine_own,
		.rx_engine = &tm_tls_engine_own,
		.in = g_malloc(TM_TLS_IN),
		.plain = guarded(TM_TLS_MAX_CIPHERTEXT),
	};
	g_assert_cmpint(fuzz_tls_dir(&t.rx, suite, dir, secret, false), ==, 0);

	size_t got = 0;
	for (unsigned i = 0;; i++) {
		size_t len = read_size(pattern, i), cut = len * (pattern & 7) / 8;
		g_autofree uint8_t *a = guarded(cut);
		g_autofree uint8_t *b = guarded(len - cut);
		struct iovec v[2] = { { a, cut }, { b, len - cut } };
		int r = tm_tls_engine_own.recv(&t, v, 2, len);
		check_guard(t.plain, TM_TLS_MAX_CIPHERTEXT, "t->plain", true);
		check_guard(a, cut, "the first iovec", false);
		check_guard(b, len - cut, "the second iovec", false);
		if (r < 0) {
			/* Explained; fatal unless the stream just ended (close_notify or not). */
			g_assert_nonnull(t.err_msg);
			g_assert_true(r == -ECONNRESET || t.broken);
			break;
		}
		/* Delivered: authentic application data, in order, nothing else. */
		g_assert_cmpuint(got + len, <=, ref->len);
		g_assert_true(memcmp(a, ref->data + got, cut) == 0);
		g_assert_true(memcmp(b, ref->data + got + cut, len - cut) == 0);
		got += len;
	}
	g_assert_cmpuint(m.off, <=, m.len);
	tm_tls_dir_free(&t.rx);
	g_free(t.in);
	check_guard(t.plain, TM_TLS_MAX_CIPHERTEXT, "t->plain", false);
	g_free(t.plain);
	g_free(t.err_msg);
	ERR_clear_error();
	return 0;
}
