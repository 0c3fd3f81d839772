/* SPDX-License-Identifier: MIT */
/*
 * Non-temporal copies (stream-copy.h). x86-64 has SSE2 in every CPU, so no run-time probe is
 * needed there; other architectures copy with memcpy (arm64's STNP would be the equivalent,
 * not done: no arm64 host here to measure it on).
 */
#include <stdint.h>
#include <string.h>

#include "common/stream-copy.h"

#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>

void tm_stream_copy(void *dst, const void *src, size_t len)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	if (((uintptr_t)d | (uintptr_t)s | len) % 16 || len % 64) {
		memcpy(dst, src, len);
		return;
	}
	for (size_t o = 0; o < len; o += 64) {
		__m128i a = _mm_load_si128((const __m128i *)(s + o));
		__m128i b = _mm_load_si128((const __m128i *)(s + o + 16));
		__m128i c = _mm_load_si128((const __m128i *)(s + o + 32));
		__m128i e = _mm_load_si128((const __m128i *)(s + o + 48));
		_mm_stream_si128((__m128i *)(d + o), a);
		_mm_stream_si128((__m128i *)(d + o + 16), b);
		_mm_stream_si128((__m128i *)(d + o + 32), c);
		_mm_stream_si128((__m128i *)(d + o + 48), e);
	}
}

void tm_stream_copy_fence(void)
{
	_mm_sfence();
}

#else

void tm_stream_copy(void *dst, const void *src, size_t len)
{
	memcpy(dst, src, len);
}

void tm_stream_copy_fence(void)
{
}

#endif
