/* SPDX-License-Identifier: MIT */
/*
 * Delta encoding of re-sent pages (codec/delta.c): every page size round-trips bit-exact for
 * equal pages, a byte changed at either end, scattered and clustered rewrites and whole new
 * pages; a page with 5% of it rewritten costs at most a fifth of the page (issue 15's goal for
 * delta rounds); hostile streams are refused with the token named and the page untouched; the
 * base hash tells pages apart.
 */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "codec/delta.h"
#include "tagmig/error.h"

static uint64_t state = 0x1234;

static uint64_t rnd(void)
{
	uint64_t z = (state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill(uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}

/* Encodes page against base, applies it to a copy of base, checks the result; returns len. */
static size_t roundtrip(const uint8_t *page, const uint8_t *base, uint32_t ps)
{
	size_t cap = (size_t)ps * 2 + 64;
	g_autofree uint8_t *enc = g_malloc(cap);
	g_autofree uint8_t *dst = g_memdup2(base, ps);
	g_autoptr(GError) err = NULL;

	ssize_t n = tm_delta_encode(page, base, ps, enc, cap);
	g_assert_cmpint(n, >=, 0);
	g_assert_cmpint(tm_delta_apply(dst, ps, enc, (size_t)n, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_true(memcmp(dst, page, ps) == 0);
	return (size_t)n;
}

static void test_roundtrip(void)
{
	static const uint32_t sizes[] = { 4096, 16384, 65536 };

	for (unsigned s = 0; s < G_N_ELEMENTS(sizes); s++) {
		uint32_t ps = sizes[s];
		g_autofree uint8_t *base = g_malloc(ps);
		g_autofree uint8_t *page = g_malloc(ps);

		fill(base, ps);
		memcpy(page, base, ps);
		g_assert_cmpuint(roundtrip(page, base, ps), ==, 0); /* equal: nothing to send */
		page[0] ^= 1;
		g_assert_cmpuint(roundtrip(page, base, ps), ==, 3);
		page[ps - 1] ^= 0x80;
		g_assert_cmpuint(roundtrip(page, base, ps), <=, 3 + 6 + 1);
		/* Scattered 8-byte words, then clustered 64-byte records: 5% of the page. */
		memcpy(page, base, ps);
		for (uint32_t k = 0; k < ps / 20 / 8; k++) {
			uint64_t w = rnd() | 1;
			memcpy(page + (rnd() % (ps / 8)) * 8, &w, 8);
		}
		size_t scattered = roundtrip(page, base, ps);
		memcpy(page, base, ps);
		for (uint32_t k = 0; k < ps / 20 / 64; k++)
			fill(page + (rnd() % (ps / 64)) * 64, 64);
		size_t clustered = roundtrip(page, base, ps);
		g_test_message("%u-byte page, 5%% rewritten: %zu bytes scattered, %zu clustered", ps,
			       scattered, clustered);
		g_assert_cmpuint(scattered * 5, <=, ps);
		g_assert_cmpuint(clustered * 5, <=, ps);
		/* A new page: larger than itself, so a small cap says send it whole. */
		fill(page, ps);
		g_assert_cmpuint(roundtrip(page, base, ps), >, ps);
		uint8_t small[64];
		g_assert_cmpint(tm_delta_encode(page, base, ps, small, sizeof(small)), ==, -ENOSPC);
	}
	uint8_t p[4096] = { 0 };
	g_assert_cmpint(tm_delta_encode(p, p, 1000, p, sizeof(p)), ==, -EINVAL);
}

static void test_hostile(void)
{
	static const struct {
		const char *what;
		uint8_t bytes[8];
		size_t len;
		const char *substr;
	} cases[] = {
		{ "truncated varint", { 0x80 }, 1, "truncated length" },
		{ "overlong varint", { 0x80, 0x80, 0x80, 0x01, 0x01 }, 5, "bad or truncated" },
		{ "skip over the page", { 0x81, 0x20, 0x00 }, 3, "bad or truncated" },
		{ "token past the page", { 0xff, 0x1f, 0x02, 1, 2 }, 5, "past the page" },
		{ "bytes past the input", { 0x00, 0x05, 1, 2 }, 4, "left in the input" },
		{ "second token truncated", { 0x00, 0x01, 7, 0x03 }, 4, "token 1" },
	};
	uint8_t page[4096], copy[4096];

	fill(page, sizeof(page));
	memcpy(copy, page, sizeof(page));
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autoptr(GError) err = NULL;
		int r = tm_delta_apply(page, sizeof(page), cases[i].bytes, cases[i].len, &err);
		g_test_message("%s: %s", cases[i].what, err ? err->message : "accepted");
		g_assert_cmpint(r, ==, -EBADMSG);
		g_assert_error(err, TM_ERROR, EBADMSG);
		g_assert_nonnull(strstr(err->message, cases[i].substr));
		/* Checked before the first byte changes: the first token of the last case was good. */
		g_assert_true(memcmp(page, copy, sizeof(page)) == 0);
	}
	/* The largest skip and length that fit: the last byte, exactly. */
	const uint8_t last[] = { 0xff, 0x1f, 0x01, 0x5a };
	g_assert_cmpint(tm_delta_apply(page, sizeof(page), last, sizeof(last), NULL), ==, 0);
	g_assert_cmpuint(page[4095], ==, copy[4095] ^ 0x5a);
}

static void test_hash(void)
{
	uint8_t a[4096], b[4096];

	fill(a, sizeof(a));
	memcpy(b, a, sizeof(a));
	g_assert_cmpuint(tm_page_hash(a, 4096), ==, tm_page_hash(b, 4096));
	for (unsigned i = 0; i < 4096; i += 511) {
		b[i] ^= 1;
		g_assert_cmpuint(tm_page_hash(a, 4096), !=, tm_page_hash(b, 4096));
		b[i] ^= 1;
	}
	/* Two words swapped are another page. */
	memcpy(b, a + 8, 8);
	memcpy(b + 8, a, 8);
	g_assert_cmpuint(tm_page_hash(a, 4096), !=, tm_page_hash(b, 4096));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/delta/roundtrip", test_roundtrip);
	g_test_add_func("/delta/hostile", test_hostile);
	g_test_add_func("/delta/hash", test_hash);
	return g_test_run();
}
