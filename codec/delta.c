/* SPDX-License-Identifier: MIT */
/* Delta encoding of a re-sent page (delta.h): XOR against the base, zero runs skipped. */
#include <errno.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/delta.h"
#include "tagmig/error.h"

/* A zero run shorter than this stays inside a token: a new token costs 2..6 bytes. */
#define MIN_GAP 8u

static bool size_ok(uint32_t page_size)
{
	return page_size >= 4096 && page_size <= 65536 && page_size % 64 == 0;
}

uint64_t tm_page_hash(const uint8_t *page, uint32_t page_size)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ page_size;

	for (uint32_t i = 0; i + 8 <= page_size; i += 8) {
		uint64_t w;
		memcpy(&w, page + i, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 33);
}

static size_t put_varint(uint8_t *out, uint32_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		out[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

/* First offset >= i where a and b differ, or n. */
static uint32_t next_diff(const uint8_t *a, const uint8_t *b, uint32_t i, uint32_t n)
{
	while (i < n && (i % 8 || n - i < 8) && a[i] == b[i])
		i++;
	for (; i + 8 <= n; i += 8) {
		uint64_t x, y;
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		if (x != y)
			break;
	}
	while (i < n && a[i] == b[i])
		i++;
	return i;
}

ssize_t tm_delta_encode(const uint8_t *page, const uint8_t *base, uint32_t page_size,
			uint8_t *out, size_t cap)
{
	size_t at = 0;
	uint32_t pos = 0;

	if (!size_ok(page_size))
		return -EINVAL;
	for (;;) {
		uint32_t s = next_diff(page, base, pos, page_size);
		if (s == page_size)
			return (ssize_t)at;
		/* The token's bytes end at the first zero run of MIN_GAP bytes (or the page's end). */
		uint32_t e = s + 1;
		for (;;) {
			while (e < page_size && page[e] != base[e])
				e++;
			uint32_t z = next_diff(page, base, e, page_size);
			if (z == page_size || z - e >= MIN_GAP)
				break;
			e = z;
		}
		uint8_t hdr[6];
		size_t hl = put_varint(hdr, s - pos);
		hl += put_varint(hdr + hl, e - s);
		if (cap - at < hl + (e - s))
			return -ENOSPC;
		memcpy(out + at, hdr, hl);
		at += hl;
		for (uint32_t i = s; i < e; i++)
			out[at++] = page[i] ^ base[i];
		pos = e;
	}
}

/* Reads a varint of at most 3 bytes and at most max: 0 or -1. */
static int get_varint(const uint8_t *in, size_t len, size_t *at, uint32_t max, uint32_t *ret)
{
	uint32_t v = 0;

	for (unsigned i = 0; i < 3; i++) {
		if (*at >= len)
			return -1;
		uint8_t b = in[(*at)++];
		v |= (uint32_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			if (v > max)
				return -1;
			*ret = v;
			return 0;
		}
	}
	return -1;
}

/* Walks the token stream: checks every token, and XORs it into page when page is not NULL. */
static int walk(uint8_t *page, uint32_t page_size, const uint8_t *in, size_t len, GError **error)
{
	size_t at = 0;
	uint32_t pos = 0;

	for (unsigned t = 0; at < len; t++) {
		uint32_t skip, n;
		size_t tok = at;
		if (get_varint(in, len, &at, page_size, &skip) < 0 ||
		    get_varint(in, len, &at, page_size, &n) < 0) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "delta token %u (input byte %zu): bad or truncated length", t, tok);
			return -EBADMSG;
		}
		if (skip > page_size - pos || n > page_size - pos - skip) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "delta token %u: %u + %u bytes at page offset %u, past the page's %u",
				    t, skip, n, pos, page_size);
			return -EBADMSG;
		}
		if (n > len - at) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "delta token %u: %u bytes, %zu left in the input", t, n, len - at);
			return -EBADMSG;
		}
		pos += skip;
		if (page)
			for (uint32_t i = 0; i < n; i++)
				page[pos + i] ^= in[at + i];
		pos += n;
		at += n;
	}
	return 0;
}

int tm_delta_check(uint32_t page_size, const uint8_t *in, size_t len, GError **error)
{
	if (!size_ok(page_size)) {
		g_set_error(error, TM_ERROR, EINVAL, "delta: page size %u", page_size);
		return -EINVAL;
	}
	return walk(NULL, page_size, in, len, error);
}

int tm_delta_apply(uint8_t *page, uint32_t page_size, const uint8_t *in, size_t len,
		   GError **error)
{
	/* First pass: every token inside the page and the input, so a bad stream changes nothing. */
	int r = tm_delta_check(page_size, in, len, error);
	return r < 0 ? r : walk(page, page_size, in, len, error);
}
