/* SPDX-License-Identifier: MIT */
/* Compression of a DATA packet's page data (compress.h): lz4 and zstd, each optional at build. */
#include <errno.h>
#include <string.h>

#include "codec/compress-config.h"
#include "codec/compress.h"
#include "codec/codec.h"
#include "tagmig/error.h"

#if TM_HAVE_ZSTD
#include <zstd.h>
#endif
#if TM_HAVE_LZ4
#include <lz4.h>
#endif

/* zstd's window for packets of up to 16 MiB; more in a peer's frame header is refused. */
#define ZSTD_WINDOW_LOG_MAX 25

struct tm_zctx {
	size_t max_data;
#if TM_HAVE_ZSTD
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
#endif
#if TM_HAVE_LZ4
	void *lz4_state;
#endif
};

uint32_t tm_zcodec_available(void)
{
	return 1u << TM_ZCODEC_NONE | (TM_HAVE_LZ4 ? 1u << TM_ZCODEC_LZ4 : 0) |
	       (TM_HAVE_ZSTD ? 1u << TM_ZCODEC_ZSTD : 0);
}

const char *tm_zcodec_name(tm_zcodec c)
{
	switch (c) {
	case TM_ZCODEC_NONE: return "none";
	case TM_ZCODEC_LZ4: return "lz4";
	case TM_ZCODEC_ZSTD: return "zstd";
	default: return NULL;
	}
}

int tm_zctx_new(size_t max_data, tm_zctx **ret, GError **error)
{
	g_autoptr(tm_zctx) z = NULL;

	if (max_data == 0 || max_data > (64u << 20) || max_data % 4096) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "compression: %zu bytes of page data per packet (a multiple of 4 KiB up "
			    "to 64 MiB)", max_data);
		return -EINVAL;
	}
	z = g_new0(tm_zctx, 1);
	z->max_data = max_data;
#if TM_HAVE_ZSTD
	z->cctx = ZSTD_createCCtx();
	z->dctx = ZSTD_createDCtx();
	if (!z->cctx || !z->dctx ||
	    ZSTD_isError(ZSTD_DCtx_setParameter(z->dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX))) {
		g_set_error(error, TM_ERROR, ENOMEM, "compression: zstd contexts");
		return -ENOMEM;
	}
#endif
#if TM_HAVE_LZ4
	z->lz4_state = g_malloc(LZ4_sizeofState());
#endif
	*ret = g_steal_pointer(&z);
	return 0;
}

void tm_zctx_free(tm_zctx *z)
{
	if (!z)
		return;
#if TM_HAVE_ZSTD
	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeDCtx(z->dctx);
#endif
#if TM_HAVE_LZ4
	g_free(z->lz4_state);
#endif
	g_free(z);
}

size_t tm_zctx_bound(const tm_zctx *z)
{
	/* lz4: every page at most 4 + its size (stored raw when LZ4 would not shrink it). */
	size_t b = z->max_data + 4 * (z->max_data / 4096);
#if TM_HAVE_ZSTD
	b = MAX(b, ZSTD_compressBound(z->max_data));
#endif
	return b;
}

static int not_built(tm_zcodec c, GError **error)
{
	g_set_error(error, TM_ERROR, EOPNOTSUPP, "compression: %s is not built into this tagmig",
		    tm_zcodec_name(c) ? tm_zcodec_name(c) : "an unknown codec");
	return -EOPNOTSUPP;
}

static int bad_args(tm_zctx *z, unsigned n, uint32_t page_size, GError **error)
{
	if (page_size < 4096 || page_size > 65536 || (page_size & (page_size - 1)) || n == 0 ||
	    (uint64_t)n * page_size > z->max_data) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "compression: %u pages of %u bytes (at most %zu bytes per packet)", n,
			    page_size, z->max_data);
		return -EINVAL;
	}
	return 0;
}

#if TM_HAVE_ZSTD
static ssize_t zstd_compress(tm_zctx *z, int level, uint8_t *const *pages, unsigned n,
			     uint32_t page_size, uint8_t *out, size_t cap, GError **error)
{
	ZSTD_outBuffer o = { out, cap, 0 };
	size_t r;

	ZSTD_CCtx_reset(z->cctx, ZSTD_reset_session_only);
	r = ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level);
	if (!ZSTD_isError(r))
		r = ZSTD_CCtx_setPledgedSrcSize(z->cctx, (unsigned long long)n * page_size);
	for (unsigned i = 0; !ZSTD_isError(r) && i < n; i++) {
		ZSTD_inBuffer in = { pages[i], page_size, 0 };
		ZSTD_EndDirective end = i + 1 == n ? ZSTD_e_end : ZSTD_e_continue;

		do {
			r = ZSTD_compressStream2(z->cctx, &o, &in, end);
		} while (!ZSTD_isError(r) && (in.pos < in.size || (end == ZSTD_e_end && r != 0)) &&
			 o.pos < o.size);
		if (!ZSTD_isError(r) && (in.pos < in.size || (end == ZSTD_e_end && r != 0)))
			return 0; /* out is full: larger than the bound would allow raw, send raw */
	}
	if (ZSTD_isError(r)) {
		g_set_error(error, TM_ERROR, EIO, "compression: zstd: %s", ZSTD_getErrorName(r));
		return -EIO;
	}
	return o.pos < (size_t)n * page_size ? (ssize_t)o.pos : 0;
}

static int zstd_decompress(tm_zctx *z, const uint8_t *src, size_t len, uint8_t *const *pages,
			   unsigned n, uint32_t page_size, GError **error)
{
	unsigned long long want = (unsigned long long)n * page_size;
	unsigned long long stated = ZSTD_getFrameContentSize(src, len);
	ZSTD_inBuffer in = { src, len, 0 };
	size_t r = 1;

	if (stated != want) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "zstd data: the frame states %s, the packet's %u pages are %llu bytes",
			    stated == ZSTD_CONTENTSIZE_UNKNOWN ? "no content size" :
			    stated == ZSTD_CONTENTSIZE_ERROR ? "no valid header" : "another size",
			    n, want);
		return -EBADMSG;
	}
	ZSTD_DCtx_reset(z->dctx, ZSTD_reset_session_only);
	for (unsigned i = 0; i < n; i++) {
		ZSTD_outBuffer o = { pages[i], page_size, 0 };

		while (o.pos < o.size) {
			size_t in_before = in.pos, out_before = o.pos;

			r = ZSTD_decompressStream(z->dctx, &o, &in);
			if (ZSTD_isError(r)) {
				g_set_error(error, TM_ERROR, EBADMSG, "zstd data, page %u of %u: %s",
					    i, n, ZSTD_getErrorName(r));
				return -EBADMSG;
			}
			if (o.pos < o.size && (r == 0 || (in.pos == in_before && o.pos == out_before))) {
				g_set_error(error, TM_ERROR, EBADMSG,
					    "zstd data ends in page %u of %u, at byte %zu of it", i, n,
					    o.pos);
				return -EBADMSG;
			}
		}
	}
	/* Every page is full: the frame must end here, with no byte left over. */
	if (r != 0) {
		uint8_t extra;
		ZSTD_outBuffer o = { &extra, 1, 0 };

		r = ZSTD_decompressStream(z->dctx, &o, &in);
		if (ZSTD_isError(r) || o.pos || r != 0) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "zstd data: the frame does not end after the packet's %u pages "
				    "(%s)", n, ZSTD_isError(r) ? ZSTD_getErrorName(r) :
				    o.pos ? "more data" : "truncated");
			return -EBADMSG;
		}
	}
	if (in.pos != in.size) {
		g_set_error(error, TM_ERROR, EBADMSG, "zstd data: %zu bytes after the frame",
			    in.size - in.pos);
		return -EBADMSG;
	}
	return 0;
}
#endif

#if TM_HAVE_LZ4
static ssize_t lz4_compress(tm_zctx *z, uint8_t *const *pages, unsigned n, uint32_t page_size,
			    uint8_t *out, size_t cap)
{
	size_t at = 0;

	for (unsigned i = 0; i < n; i++) {
		int c;

		if (cap - at < 4 + (size_t)page_size)
			return 0;
		/* At most page_size - 1 bytes: what does not shrink is stored raw. */
		c = LZ4_compress_fast_extState(z->lz4_state, (const char *)pages[i],
					       (char *)out + at + 4, (int)page_size,
					       (int)page_size - 1, 1);
		if (c > 0) {
			tm_put32(out + at, (uint32_t)c);
			at += 4 + (size_t)c;
		} else {
			tm_put32(out + at, TM_LZ4_RAW | page_size);
			memcpy(out + at + 4, pages[i], page_size);
			at += 4 + (size_t)page_size;
		}
	}
	return at < (size_t)n * page_size ? (ssize_t)at : 0;
}

static int lz4_decompress(const uint8_t *src, size_t len, uint8_t *const *pages, unsigned n,
			  uint32_t page_size, GError **error)
{
	size_t at = 0;

	for (unsigned i = 0; i < n; i++) {
		uint32_t l;

		if (len - at < 4) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "lz4 data ends before page %u of %u (%zu bytes)", i, n, len);
			return -EBADMSG;
		}
		l = tm_get32(src + at);
		at += 4;
		if (l == (TM_LZ4_RAW | page_size)) {
			if (len - at < page_size) {
				g_set_error(error, TM_ERROR, EBADMSG,
					    "lz4 data: stored page %u of %u truncated", i, n);
				return -EBADMSG;
			}
			memcpy(pages[i], src + at, page_size);
			at += page_size;
			continue;
		}
		if (l == 0 || l > (uint32_t)LZ4_compressBound((int)page_size) || l > len - at) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "lz4 data, page %u of %u: length %#x (%zu bytes left, at most %d)",
				    i, n, l, len - at, LZ4_compressBound((int)page_size));
			return -EBADMSG;
		}
		int d = LZ4_decompress_safe((const char *)src + at, (char *)pages[i], (int)l,
					    (int)page_size);
		if (d != (int)page_size) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "lz4 data, page %u of %u: %s (%d of %u bytes)", i, n,
				    d < 0 ? "corrupt block" : "decodes short", d, page_size);
			return -EBADMSG;
		}
		at += l;
	}
	if (at != len) {
		g_set_error(error, TM_ERROR, EBADMSG, "lz4 data: %zu bytes after the packet's %u pages",
			    len - at, n);
		return -EBADMSG;
	}
	return 0;
}
#endif

ssize_t tm_zcompress(tm_zctx *z, tm_zcodec c, int level, uint8_t *const *pages, unsigned n,
		     uint32_t page_size, uint8_t *out, size_t cap, GError **error)
{
	int rc = bad_args(z, n, page_size, error);

	if (rc < 0)
		return rc;
	if (cap < tm_zctx_bound(z)) {
		g_set_error(error, TM_ERROR, EINVAL, "compression: output of %zu bytes, %zu needed",
			    cap, tm_zctx_bound(z));
		return -EINVAL;
	}
	switch (c) {
#if TM_HAVE_ZSTD
	case TM_ZCODEC_ZSTD:
		if (level < TM_ZSTD_LEVEL_MIN || level > TM_ZSTD_LEVEL_MAX) {
			g_set_error(error, TM_ERROR, EINVAL, "compression: zstd level %d (%d..%d)",
				    level, TM_ZSTD_LEVEL_MIN, TM_ZSTD_LEVEL_MAX);
			return -EINVAL;
		}
		return zstd_compress(z, level, pages, n, page_size, out, cap, error);
#endif
#if TM_HAVE_LZ4
	case TM_ZCODEC_LZ4:
		return lz4_compress(z, pages, n, page_size, out, cap);
#endif
	default:
		return not_built(c, error);
	}
}

int tm_zdecompress(tm_zctx *z, tm_zcodec c, const uint8_t *in, size_t len, uint8_t *const *pages,
		   unsigned n, uint32_t page_size, GError **error)
{
	int rc = bad_args(z, n, page_size, error);

	if (rc < 0)
		return rc;
	switch (c) {
#if TM_HAVE_ZSTD
	case TM_ZCODEC_ZSTD:
		return zstd_decompress(z, in, len, pages, n, page_size, error);
#endif
#if TM_HAVE_LZ4
	case TM_ZCODEC_LZ4:
		return lz4_decompress(in, len, pages, n, page_size, error);
#endif
	default:
		return not_built(c, error);
	}
}

ssize_t tm_zcompress_buf(tm_zctx *z, int level, const uint8_t *in, size_t len, uint8_t *out,
			 size_t cap, GError **error)
{
	if (len == 0 || len > z->max_data || cap < tm_zctx_bound(z) || level < TM_ZSTD_LEVEL_MIN ||
	    level > TM_ZSTD_LEVEL_MAX) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "compression: %zu bytes (1..%zu), output %zu, level %d", len,
			    z->max_data, cap, level);
		return -EINVAL;
	}
#if TM_HAVE_ZSTD
	uint8_t *const one[1] = { (uint8_t *)in };
	return zstd_compress(z, level, one, 1, (uint32_t)len, out, cap, error);
#else
	(void)in;
	(void)out;
	return not_built(TM_ZCODEC_ZSTD, error);
#endif
}

int tm_zdecompress_buf(tm_zctx *z, const uint8_t *in, size_t len, uint8_t *out, size_t want,
		       GError **error)
{
	if (want == 0 || want > z->max_data) {
		g_set_error(error, TM_ERROR, EINVAL, "decompression: %zu bytes wanted (1..%zu)", want,
			    z->max_data);
		return -EINVAL;
	}
#if TM_HAVE_ZSTD
	unsigned long long stated = ZSTD_getFrameContentSize(in, len);
	if (stated != want) {
		/* Before a byte is decoded: a frame that claims more (a bomb), less or nothing. */
		g_set_error(error, TM_ERROR, EBADMSG,
			    "zstd data: the frame states %s, %zu bytes expected",
			    stated == ZSTD_CONTENTSIZE_UNKNOWN ? "no content size" :
			    stated == ZSTD_CONTENTSIZE_ERROR ? "no valid header" : "another size",
			    want);
		return -EBADMSG;
	}
	size_t flen = ZSTD_findFrameCompressedSize(in, len);
	if (ZSTD_isError(flen) || flen != len) {
		g_set_error(error, TM_ERROR, EBADMSG, "zstd data: %s",
			    ZSTD_isError(flen) ? ZSTD_getErrorName(flen) : "bytes after the frame");
		return -EBADMSG;
	}
	ZSTD_DCtx_reset(z->dctx, ZSTD_reset_session_only);
	ZSTD_inBuffer i = { in, len, 0 };
	ZSTD_outBuffer o = { out, want, 0 };
	size_t r = ZSTD_decompressStream(z->dctx, &o, &i);
	if (ZSTD_isError(r) || r != 0 || o.pos != want || i.pos != len) {
		g_set_error(error, TM_ERROR, EBADMSG, "zstd data: %s (%zu of %zu bytes decoded)",
			    ZSTD_isError(r) ? ZSTD_getErrorName(r) :
			    o.pos < want ? "the frame ends short" : "the frame does not end there",
			    o.pos, want);
		return -EBADMSG;
	}
	return 0;
#else
	(void)in;
	(void)len;
	(void)out;
	return not_built(TM_ZCODEC_ZSTD, error);
#endif
}
