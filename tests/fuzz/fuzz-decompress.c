/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the decoders of compressed page data (codec/compress.h) as a receiver runs them on a
 * peer's packet: byte 0 picks the codec (odd lz4, even zstd) and the page size (4, 16 or 64 KiB),
 * byte 1 the number of pages (1..16), the rest is the stream. The pages are exact-size heap blocks,
 * so a byte written outside them is an ASan report; any failure other than the data's refusal
 * (-EBADMSG) is a bug.
 */
#include <errno.h>
#include <stdlib.h>

#include <glib.h>

#include "codec/compress.h"
#include "fuzz.h"

static tm_zctx *z;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t sizes[] = { 4096, 16384, 65536 };
	uint8_t *pages[16];

	if (!z && tm_zctx_new(16 * 65536, &z, NULL) < 0)
		abort();
	if (size < 2)
		return 0;
	tm_zcodec c = data[0] & 1 ? TM_ZCODEC_LZ4 : TM_ZCODEC_ZSTD;
	uint32_t page_size = sizes[(data[0] >> 1) % 3];
	unsigned n = 1 + data[1] % 16;
	if (!(tm_zcodec_available() & (1u << c)))
		return 0;
	for (unsigned i = 0; i < n; i++)
		pages[i] = g_malloc(page_size);
	g_autofree uint8_t *in = g_memdup2(data + 2, size - 2);
	int r = tm_zdecompress(z, c, in, size - 2, pages, n, page_size, NULL);
	if (r != 0 && r != -EBADMSG)
		abort(); /* only a refusal of the data is a valid failure here */
	for (unsigned i = 0; i < n; i++)
		g_free(pages[i]);
	return 0;
}
