/* SPDX-License-Identifier: MIT */
/*
 * Tag payload helpers (docs/wire-format.md, "Tag encodings") and the zero-page test. Both run for
 * every page the sender sends, so they avoid per-byte loops over the bulk of a buffer.
 */
#include <string.h>

#include "codec/codec.h"

tm_tag_enc tm_tags_classify(const uint8_t *tags, size_t n, uint8_t *ret_value)
{
	if (n == 0) {
		if (ret_value)
			*ret_value = 0;
		return TM_TAGS_ZERO;
	}
	/*
	 * All bytes equal iff the buffer equals itself shifted by one; memcmp is vectorised by libc.
	 * Tag bytes carry the tag in the low nibble; a store that leaves garbage in the high nibble
	 * makes the bytes differ and so lands in PACKED, which masks, so the result stays right.
	 */
	if (memcmp(tags, tags + 1, n - 1) != 0)
		return TM_TAGS_PACKED;

	uint8_t v = tags[0] & 0x0f;
	if (ret_value)
		*ret_value = v;
	return v ? TM_TAGS_UNIFORM : TM_TAGS_ZERO;
}

void tm_tags_pack(const uint8_t *tags, size_t n, uint8_t *out)
{
	for (size_t i = 0; i < n / 2; i++)
		out[i] = (uint8_t)((tags[2 * i] & 0x0f) | (tags[2 * i + 1] & 0x0f) << 4);
}

/* n is the number of tags (granules), as for tm_tags_pack(); in holds n / 2 bytes. */
void tm_tags_unpack(const uint8_t *in, size_t n, uint8_t *tags)
{
	for (size_t i = 0; i < n / 2; i++) {
		tags[2 * i] = in[i] & 0x0f;
		tags[2 * i + 1] = in[i] >> 4;
	}
}

ssize_t tm_tags_find_invalid(const uint8_t *tags, size_t n)
{
	size_t i = 0;

	/* Eight bytes at a time: a valid run is common, an invalid byte the exception. */
	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, tags + i, sizeof(w));
		if (w & UINT64_C(0xf0f0f0f0f0f0f0f0))
			break;
	}
	for (; i < n; i++) {
		if (tags[i] & 0xf0)
			return (ssize_t)i;
	}
	return -1;
}

/*
 * 16-byte GCC vectors: SSE2 on x86-64 and NEON on arm64 hold them in one register, so four
 * accumulators cover 64 bytes per step without spilling. Vectors are only passed through
 * pointers, so no function depends on the target's vector-passing ABI.
 */
typedef uint64_t zero_vec __attribute__((vector_size(16)));

static inline void or_vec(zero_vec *acc, const uint8_t *p)
{
	zero_vec v;

	/* memcpy: the buffer need not be aligned, and this is how to say "unaligned load" in C. */
	memcpy(&v, p, sizeof(v));
	*acc |= v;
}

/* ORs 64 bytes at p into the four accumulators. */
static inline void or_64(zero_vec acc[4], const uint8_t *p)
{
	or_vec(&acc[0], p);
	or_vec(&acc[1], p + 16);
	or_vec(&acc[2], p + 32);
	or_vec(&acc[3], p + 48);
}

static inline bool acc_is_zero(const zero_vec acc[4])
{
	zero_vec t = (acc[0] | acc[1]) | (acc[2] | acc[3]);

	return (t[0] | t[1]) == 0;
}

bool tm_buffer_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (len < 64) {
		size_t i = 0;
		for (; i + 8 <= len; i += 8) {
			uint64_t w;
			memcpy(&w, p + i, sizeof(w));
			if (w)
				return false;
		}
		for (; i < len; i++) {
			if (p[i])
				return false;
		}
		return true;
	}

	const uint8_t *end = p + len;
	zero_vec acc[4] = { { 0 } };

	/*
	 * A length that is not a multiple of 64 is covered by one extra, overlapping load of the
	 * last 64 bytes, so the loops below need no byte tail.
	 */
	or_64(acc, end - 64);

	/*
	 * 256 bytes per check: a non-zero page usually differs from zero early, so the exit comes
	 * after the first 256 bytes, while a zero page runs at memory speed.
	 */
	while ((size_t)(end - p) >= 256) {
		or_64(acc, p);
		or_64(acc, p + 64);
		or_64(acc, p + 128);
		or_64(acc, p + 192);
		if (!acc_is_zero(acc))
			return false;
		p += 256;
	}
	while ((size_t)(end - p) >= 64) {
		or_64(acc, p);
		p += 64;
	}
	return acc_is_zero(acc);
}
