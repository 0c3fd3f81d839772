/* SPDX-License-Identifier: MIT */
/*
 * Page-data compression (codec/compress.h): both codecs round-trip every kind of page over every
 * page size; incompressible data says "send raw"; and every hostile stream is refused without a
 * byte outside the pages: corrupt, truncated, too much output (a bomb), too little, trailing
 * bytes, lengths out of range. Pages are exact-size heap blocks, so ASan sees a stray byte.
 */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "codec/codec.h"
#include "codec/compress.h"
#include "tagmig/error.h"

#define MAX_DATA (1u << 20)

static uint64_t seed = 7;
static uint8_t rnd8(void)
{
	seed = seed * 6364136223846793005ull + 1442695040888963407ull;
	return (uint8_t)(seed >> 56);
}

typedef struct pages {
	uint8_t *p[256];
	unsigned n;
	uint32_t size;
} pages;

/* Kinds: 0 random, 1 text-like, 2 one repeated byte, 3 half random half zero. */
static void pages_make(pages *ps, unsigned n, uint32_t size, unsigned kind)
{
	ps->n = n;
	ps->size = size;
	for (unsigned i = 0; i < n; i++) {
		ps->p[i] = g_malloc(size);
		for (uint32_t j = 0; j < size; j++) {
			unsigned k = kind == 4 ? i % 4 : kind;
			ps->p[i][j] = k == 0 ? rnd8() : k == 1 ? (uint8_t)("the quick brown fox "[j % 20]) :
				      k == 2 ? 0x5a : (j < size / 2 ? rnd8() : 0);
		}
	}
}

static void pages_empty(pages *ps, unsigned n, uint32_t size)
{
	ps->n = n;
	ps->size = size;
	for (unsigned i = 0; i < n; i++)
		ps->p[i] = g_malloc0(size);
}

static void pages_free(pages *ps)
{
	for (unsigned i = 0; i < ps->n; i++)
		g_free(ps->p[i]);
}

static bool built(tm_zcodec c)
{
	if (tm_zcodec_available() & (1u << c))
		return true;
	g_test_skip("codec not built (libzstd / liblz4 missing at build time)");
	return false;
}

static void roundtrip(tm_zcodec c, int level, uint32_t size, unsigned n, unsigned kind,
		      bool expect_smaller)
{
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_zctx) z = NULL;
	pages src, dst;

	g_assert_cmpint(tm_zctx_new(MAX_DATA, &z, &err), ==, 0);
	size_t cap = tm_zctx_bound(z);
	g_autofree uint8_t *out = g_malloc(cap);
	pages_make(&src, n, size, kind);
	pages_empty(&dst, n, size);
	ssize_t len = tm_zcompress(z, c, level, src.p, n, size, out, cap, &err);
	g_assert_no_error(err);
	g_assert_cmpint(len, >=, 0);
	if (!expect_smaller) {
		g_assert_cmpint(len, ==, 0); /* random data: send raw */
	} else {
		g_assert_cmpint(len, >, 0);
		g_assert_cmpint(len, <, (ssize_t)n * size);
		/* Exact-size input: the decoder may not read past it. */
		g_autofree uint8_t *exact = g_memdup2(out, (gsize)len);
		g_assert_cmpint(tm_zdecompress(z, c, exact, (size_t)len, dst.p, n, size, &err), ==, 0);
		g_assert_no_error(err);
		for (unsigned i = 0; i < n; i++)
			g_assert_true(memcmp(src.p[i], dst.p[i], size) == 0);
	}
	pages_free(&src);
	pages_free(&dst);
}

static void test_roundtrip(gconstpointer data)
{
	tm_zcodec c = (tm_zcodec)GPOINTER_TO_UINT(data);

	if (!built(c))
		return;
	for (uint32_t size = 4096; size <= 65536; size *= 4) {
		unsigned n = MAX_DATA / size;
		roundtrip(c, 1, size, n, 1, true);
		roundtrip(c, 3, size, 1, 2, true);
		roundtrip(c, 1, size, n / 2, 3, true);
		roundtrip(c, 1, size, n, 4, true); /* mixed, some pages stored raw (lz4) */
		roundtrip(c, 1, size, 3, 0, false);
	}
	if (c == TM_ZCODEC_ZSTD) {
		roundtrip(c, TM_ZSTD_LEVEL_MIN, 4096, 16, 1, true);
		roundtrip(c, TM_ZSTD_LEVEL_MAX, 4096, 4, 1, true);
	}
}

/* Compresses n text pages with c into a fresh buffer; returns its length. */
static size_t make_stream(tm_zctx *z, tm_zcodec c, unsigned n, uint32_t size, uint8_t **ret)
{
	g_autoptr(GError) err = NULL;
	pages src;
	size_t cap = tm_zctx_bound(z);
	uint8_t *out = g_malloc(cap);

	pages_make(&src, n, size, 3);
	ssize_t len = tm_zcompress(z, c, 1, src.p, n, size, out, cap, &err);
	g_assert_cmpint(len, >, 0);
	pages_free(&src);
	*ret = out;
	return (size_t)len;
}

/* Decodes in[0..len) into n exact-size pages: must fail with -EBADMSG mentioning what. */
static void expect_refused(tm_zctx *z, tm_zcodec c, const uint8_t *in, size_t len, unsigned n,
			   uint32_t size, const char *what)
{
	g_autoptr(GError) err = NULL;
	g_autofree uint8_t *exact = g_memdup2(in, (gsize)len);
	pages dst;

	pages_empty(&dst, n, size);
	int r = tm_zdecompress(z, c, exact, len, dst.p, n, size, &err);
	g_assert_cmpint(r, ==, -EBADMSG);
	g_assert_error(err, TM_ERROR, EBADMSG);
	if (!strstr(err->message, what))
		g_error("'%s' does not mention '%s'", err->message, what);
	pages_free(&dst);
}

static void test_hostile(gconstpointer data)
{
	tm_zcodec c = (tm_zcodec)GPOINTER_TO_UINT(data);
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_zctx) z = NULL;
	g_autofree uint8_t *s = NULL;
	g_autofree uint8_t *big = NULL;

	if (!built(c))
		return;
	g_assert_cmpint(tm_zctx_new(MAX_DATA, &z, &err), ==, 0);
	size_t len = make_stream(z, c, 8, 4096, &s);
	const char *name = tm_zcodec_name(c);

	/* Truncated anywhere, and trailing bytes. */
	expect_refused(z, c, s, len - 1, 8, 4096, name);
	expect_refused(z, c, s, len / 2, 8, 4096, name);
	expect_refused(z, c, s, 0, 8, 4096, name);
	g_autofree uint8_t *longer = g_malloc0(len + 3);
	memcpy(longer, s, len);
	expect_refused(z, c, longer, len + 3, 8, 4096, "after");
	/* A bomb: the stream of 8 pages into 7 (too much output), and into 9 (too little). */
	expect_refused(z, c, s, len, 7, 4096, name);
	expect_refused(z, c, s, len, 9, 4096, name);
	/* Corrupt: flipped bytes inside the stream. */
	for (size_t off = 0; off < len; off += len / 7 + 1) {
		g_autofree uint8_t *bad = g_memdup2(s, (gsize)len);
		pages dst;
		bad[off] ^= 0xa5;
		pages_empty(&dst, 8, 4096);
		int r = tm_zdecompress(z, c, bad, len, dst.p, 8, 4096, NULL);
		/* A flip in a literal can still decode: then the length checks held, and that is
		 * all a codec without a checksum can promise (TLS or TCP guard the bytes). */
		g_assert_true(r == 0 || r == -EBADMSG);
		pages_free(&dst);
	}
	if (c == TM_ZCODEC_LZ4) {
		/* Lengths out of range, and a stored page of the wrong size. */
		uint8_t hdr[8];
		tm_put32(hdr, 0);
		expect_refused(z, c, hdr, 8, 1, 4096, "length 0");
		tm_put32(hdr, 0x7fffffff);
		expect_refused(z, c, hdr, 8, 1, 4096, "length");
		tm_put32(hdr, TM_LZ4_RAW | 65536);
		expect_refused(z, c, hdr, 8, 1, 4096, "length");
		tm_put32(hdr, TM_LZ4_RAW | 4096);
		expect_refused(z, c, hdr, 8, 1, 4096, "truncated");
	}
	if (c == TM_ZCODEC_ZSTD) {
		/* A frame that states another content size than the packet's pages. */
		expect_refused(z, c, s, len, 16, 4096, "the packet's 16 pages");
		/* A real bomb: 1 MiB of zeros compresses to a few bytes; into one 4 KiB page. */
		pages zeros;
		pages_empty(&zeros, 256, 4096);
		size_t cap = tm_zctx_bound(z);
		big = g_malloc(cap);
		ssize_t blen = tm_zcompress(z, c, 1, zeros.p, 256, 4096, big, cap, &err);
		g_assert_cmpint(blen, >, 0);
		g_assert_cmpint(blen, <, 200);
		expect_refused(z, c, big, (size_t)blen, 1, 4096, "states");
		pages_free(&zeros);
	}
}

static void test_args(void)
{
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_zctx) z = NULL;
	uint8_t page[4096] = { 0 }, out[16];
	uint8_t *p[1] = { page };

	g_assert_cmpint(tm_zctx_new(1000, &z, &err), ==, -EINVAL);
	g_clear_error(&err);
	g_assert_cmpint(tm_zctx_new(MAX_DATA, &z, &err), ==, 0);
	g_assert_cmpint(tm_zcompress(z, TM_ZCODEC_LZ4, 0, p, 1, 4096, out, sizeof(out), &err), ==,
			-EINVAL);
	g_clear_error(&err);
	g_assert_cmpint(tm_zcompress(z, (tm_zcodec)7, 0, p, 1, 4096, out, sizeof(out), &err), <, 0);
	g_clear_error(&err);
	g_assert_cmpint(tm_zdecompress(z, TM_ZCODEC_NONE, out, 1, p, 1, 4096, &err), ==,
			-EOPNOTSUPP);
	g_clear_error(&err);
	g_assert_cmpint(tm_zdecompress(z, TM_ZCODEC_LZ4, out, 1, p, 1, 3000, &err), ==, -EINVAL);
	g_clear_error(&err);
	g_assert_cmpint(tm_zdecompress(z, TM_ZCODEC_LZ4, out, 1, p, 257, 4096, &err), ==, -EINVAL);
	g_assert_cmpstr(tm_zcodec_name(TM_ZCODEC_ZSTD), ==, "zstd");
	g_assert_null(tm_zcodec_name(TM_ZCODEC_COUNT));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_data_func("/compress/lz4/roundtrip", GUINT_TO_POINTER(TM_ZCODEC_LZ4), test_roundtrip);
	g_test_add_data_func("/compress/zstd/roundtrip", GUINT_TO_POINTER(TM_ZCODEC_ZSTD), test_roundtrip);
	g_test_add_data_func("/compress/lz4/hostile", GUINT_TO_POINTER(TM_ZCODEC_LZ4), test_hostile);
	g_test_add_data_func("/compress/zstd/hostile", GUINT_TO_POINTER(TM_ZCODEC_ZSTD), test_hostile);
	g_test_add_func("/compress/args", test_args);
	return g_test_run();
}
