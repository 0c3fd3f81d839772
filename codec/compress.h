/* SPDX-License-Identifier: MIT */
/*
 * Compression of a DATA packet's page data (issue 15): lz4 and zstd, chosen per packet by the
 * sender among the codecs both sides agreed on in HELLO. No I/O. A context per channel holds every
 * buffer and library state, made once at setup (never per packet).
 *
 * The compressed form of n pages of page_size bytes (the packet's NORMAL pages, in entry order):
 *  - zstd: one zstd frame whose content size is stated in its header and equals n * page_size.
 *  - lz4: per page a u32 (little-endian) then its bytes: length L in 1..LZ4_compressBound(page)
 *    for an LZ4 block that decodes to exactly page_size bytes, or 0x80000000 | page_size for the
 *    page stored as it is (incompressible pages cost 4 bytes, not LZ4's expansion).
 * Decoding checks every length against the pages it fills: a stream that decodes to more (a
 * decompression bomb) or less than n * page_size, a corrupt stream and trailing bytes are refused
 * with -EBADMSG naming the page, and nothing is ever written outside the n pages.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <glib.h>

G_BEGIN_DECLS

typedef enum tm_zcodec {
	TM_ZCODEC_NONE = 0,
	TM_ZCODEC_LZ4 = 1,
	TM_ZCODEC_ZSTD = 2,
	TM_ZCODEC_COUNT
} tm_zcodec;

#define TM_ZSTD_LEVEL_MIN (-7)
#define TM_ZSTD_LEVEL_MAX 19
#define TM_LZ4_RAW 0x80000000u

/* Bit (1 << codec) for each codec this build has (TM_ZCODEC_NONE always). */
uint32_t tm_zcodec_available(void);

/* "none", "lz4", "zstd"; NULL for anything else. */
const char *tm_zcodec_name(tm_zcodec c);

typedef struct tm_zctx tm_zctx;

/*
 * A context for packets of at most max_data bytes of page data (pages of 4 KiB..64 KiB).
 * Returns 0 or -ENOMEM / -EINVAL with *error.
 */
int tm_zctx_new(size_t max_data, tm_zctx **ret, GError **error);
void tm_zctx_free(tm_zctx *z);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(tm_zctx, tm_zctx_free)

/* Output capacity tm_zcompress() needs for max_data bytes, whatever the codec. */
size_t tm_zctx_bound(const tm_zctx *z);

/*
 * Compresses the n pages (pointers to page_size bytes each, n * page_size <= max_data) with codec
 * c at level (zstd: TM_ZSTD_LEVEL_MIN..MAX, 0 = default; lz4: ignored) into out (cap >= the
 * bound). Returns the compressed length, 0 when it is not smaller than the raw data (send the
 * packet raw), or -errno (-EINVAL bad argument, -EOPNOTSUPP codec not built, -EIO library
 * failure) with *error.
 */
ssize_t tm_zcompress(tm_zctx *z, tm_zcodec c, int level, uint8_t *const *pages, unsigned n,
		     uint32_t page_size, uint8_t *out, size_t cap, GError **error);

/*
 * Decodes in[0..len), received from the peer, into the n pages (each page_size bytes, in order).
 * Returns 0, or -EBADMSG (corrupt, too much or too little output, trailing bytes: the message
 * names the page), -EOPNOTSUPP (codec not built), -EINVAL (bad argument). On failure pages may
 * hold partial output: the caller never marks them present.
 */
int tm_zdecompress(tm_zctx *z, tm_zcodec c, const uint8_t *in, size_t len, uint8_t *const *pages,
		   unsigned n, uint32_t page_size, GError **error);

/*
 * zstd over one buffer (ZDELTA's deltas, codec/zdelta.c): compresses in[0..len) (1..max_data
 * bytes of z) as one frame that states its content size into out (cap >= tm_zctx_bound(z)).
 * Returns the frame's length when it is shorter than len, 0 when it is not (send it raw), or
 * -EINVAL / -EOPNOTSUPP (zstd not built) / -EIO.
 */
ssize_t tm_zcompress_buf(tm_zctx *z, int level, const uint8_t *in, size_t len, uint8_t *out,
			 size_t cap, GError **error);
/*
 * Decodes in[0..len), from the peer, into out: exactly want bytes (1..max_data of z). The frame
 * must state want as its content size (a bomb, or none: refused before decoding), decode to
 * exactly want bytes and end with the input. Returns 0, -EBADMSG naming what was wrong (out may
 * hold partial output: the caller's own buffer, never guest RAM), -EINVAL, -EOPNOTSUPP.
 */
int tm_zdecompress_buf(tm_zctx *z, const uint8_t *in, size_t len, uint8_t *out, size_t want,
		       GError **error);

G_END_DECLS
