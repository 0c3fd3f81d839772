/* SPDX-License-Identifier: MIT */
/*
 * ZDELTA (codec/zdelta.c, docs/wire-format.md "ZDELTA"): a DELTA whose deltas are one zstd
 * frame. Round trip: unpacked, it is the DELTA body it stands for, and tm_delta_decode()
 * accepts that. Hostile bodies, each refused with its errno and words: codec lz4, reserved
 * bytes, zstd not agreed, zlen 0 or not shorter than the deltas, data_len past packet_size, a
 * body whose length lies; and before any byte is decoded (the output buffer untouched) a frame
 * that states more than the deltas (a bomb) or less; then a truncated frame (decodes short), a
 * frame with a byte after it, a corrupt frame.
 */
#include <errno.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/compress.h"
#include "codec/delta-wire.h"
#include "codec/delta.h"

#define PS 4096u
#define PACKET (64u * 1024u)
#define NPAGES 3u

static tm_hello hello;
static tm_wire_block block;
static tm_zctx *zctx;

static void setup(void)
{
	memset(&block, 0, sizeof(block));
	g_strlcpy(block.name, "pc.ram", sizeof(block.name));
	block.length = 64 * PS;
	block.page_size = PS;
	hello = (tm_hello){ .version = 2, .channel_count = 1, .packet_size = PACKET,
			    .chunk_size = PACKET, .block_count = 1, .blocks = &block,
			    .features = TM_FEATURE_TAGS_MTE4 | TM_FEATURE_DELTA | TM_FEATURE_ZSTD };
	g_assert_cmpint(tm_hello_check(&hello, NULL), ==, 0);
	if (!zctx)
		g_assert_cmpint(tm_zctx_new(PACKET, &zctx, NULL), ==, 0);
}

/* A DELTA of pages 1, 2, 5 whose words changed by a flag bit (compressible deltas). */
typedef struct built {
	tm_delta_pkt pkt;
	uint8_t *delta;      /* the DELTA body, flattened */
	uint32_t delta_len;
	uint8_t *frame;      /* the deltas' zstd frame */
	uint32_t zlen;
} built;

static void build(built *b)
{
	static uint8_t base[PS], page[PS];
	static const uint32_t pages[NPAGES] = { 1, 2, 5 };
	size_t len;

	tm_delta_pkt_init(&b->pkt, PACKET);
	tm_delta_pkt_begin(&b->pkt, 0, PS);
	for (unsigned i = 0; i < NPAGES; i++) {
		for (uint32_t k = 0; k < PS; k++)
			base[k] = page[k] = (uint8_t)(k * 7 + i * 29 + (k >> 5));
		for (uint32_t k = 0; k < PS; k += 64)
			page[k + 3] ^= 0x10;
		g_assert_cmpint(tm_delta_pkt_add(&b->pkt, pages[i], page, base, NULL, PS - 1), >, 0);
	}
	unsigned n = tm_delta_pkt_finish(&b->pkt, 2, 0, &len);
	b->delta_len = (uint32_t)(len - TM_FRAME_HDR_LEN);
	b->delta = g_malloc(len);
	size_t at = 0;
	for (unsigned i = 0; i < n; i++) {
		memcpy(b->delta + at, b->pkt.iov[i].iov_base, b->pkt.iov[i].iov_len);
		at += b->pkt.iov[i].iov_len;
	}
	memmove(b->delta, b->delta + TM_FRAME_HDR_LEN, b->delta_len);
	b->frame = g_malloc(tm_zctx_bound(zctx));
	ssize_t z = tm_zcompress_buf(zctx, 1, b->pkt.data, b->pkt.data_len, b->frame,
				     tm_zctx_bound(zctx), NULL);
	g_assert_cmpint(z, >, 0);
	g_assert_cmpint(z, <, b->pkt.data_len);
	b->zlen = (uint32_t)z;
}

static void built_free(built *b)
{
	tm_delta_pkt_fini(&b->pkt);
	g_free(b->delta);
	g_free(b->frame);
}

/* A ZDELTA body: the ZDELTA header (codec, reserved byte 1, zlen), the DELTA header and
 * entries of b with data_len as given, frame[0..flen), the tags; *ret_len its length. */
static uint8_t *zbody(const built *b, uint8_t codec, uint8_t reserved, uint32_t zlen,
		      uint32_t data_len, const uint8_t *frame, uint32_t flen, uint32_t *ret_len)
{
	uint32_t head = TM_DELTA_HDR_LEN + NPAGES * TM_DELTA_ENTRY_LEN;
	uint32_t len = TM_ZDELTA_HDR_LEN + head + flen + b->pkt.tag_len;
	uint8_t *m = g_malloc0(len);

	m[0] = codec;
	m[1] = reserved;
	tm_put32(m + 4, zlen);
	memcpy(m + 8, b->delta, head);
	tm_put32(m + 8 + 8, data_len);
	memcpy(m + 8 + head, frame, flen);
	memcpy(m + 8 + head + flen, b->delta + head + b->pkt.data_len, b->pkt.tag_len);
	*ret_len = len;
	return m;
}

static void test_roundtrip(void)
{
	built b;
	uint8_t zhead[TM_FRAME_HDR_LEN + TM_ZDELTA_HDR_LEN];
	struct iovec iov[4];
	size_t len;

	if (!(tm_zcodec_available() & (1u << TM_ZCODEC_ZSTD))) {
		g_test_skip("zstd is not built in");
		return;
	}
	setup();
	build(&b);
	/* The writer's form equals the test's own. */
	unsigned n = tm_zdelta_finish(&b.pkt, zhead, 2, 7, b.frame, b.zlen, iov, &len);
	g_autofree uint8_t *wire = g_malloc(len);
	size_t at = 0;
	for (unsigned i = 0; i < n; i++) {
		memcpy(wire + at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	g_assert_cmpuint(at, ==, len);
	tm_frame f;
	g_assert_cmpint(tm_frame_decode(wire, len, 0, PACKET, &f, NULL), ==, 0);
	g_assert_cmpuint(f.type, ==, TM_MSG_ZDELTA);
	g_assert_cmpuint(f.body_len, ==, len - TM_FRAME_HDR_LEN);
	uint32_t blen;
	g_autofree uint8_t *mine = zbody(&b, TM_ZCODEC_ZSTD, 0, b.zlen, b.pkt.data_len, b.frame,
					 b.zlen, &blen);
	g_assert_cmpuint(blen, ==, f.body_len);
	g_assert_cmpmem(mine, blen, wire + TM_FRAME_HDR_LEN, f.body_len);
	g_test_message("%u bytes of deltas as a %u-byte frame", b.pkt.data_len, b.zlen);

	tm_delta_rx rx;
	tm_delta_rx_init(&rx, PACKET);
	uint32_t out_len = 0, first;
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_zdelta_unpack(wire + TM_FRAME_HDR_LEN, f.body_len, &hello,
					 hello.features, zctx, rx.body, &out_len, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpmem(rx.body, out_len, b.delta, b.delta_len);
	g_assert_cmpint(tm_delta_decode(&rx, out_len, &hello, 0, &first, &err), ==, 0);
	g_assert_cmpuint(rx.page_count, ==, NPAGES);
	tm_delta_rx_fini(&rx);
	built_free(&b);
}

typedef struct zcase {
	const char *what;
	int errnum;
	const char *words;
	bool untouched; /* refused before decoding: the output buffer is as it was */
} zcase;

/* Runs one hostile body; the DELTA buffer starts as 0xa5 bytes. */
static void refuse(const zcase *c, const uint8_t *body, uint32_t len, uint32_t agreed)
{
	g_autofree uint8_t *out = g_malloc(tm_delta_max_body(PACKET));
	g_autofree uint8_t *mark = g_malloc(tm_delta_max_body(PACKET));
	g_autoptr(GError) err = NULL;
	uint32_t out_len = 12345;

	memset(out, 0xa5, tm_delta_max_body(PACKET));
	memset(mark, 0xa5, tm_delta_max_body(PACKET));
	int r = tm_zdelta_unpack(body, len, &hello, agreed, zctx, out, &out_len, &err);
	g_test_message("%s: %d %s", c->what, r, err ? err->message : "(no error)");
	g_assert_cmpint(r, ==, -c->errnum);
	g_assert_nonnull(err);
	g_assert_nonnull(strstr(err->message, c->words));
	g_assert_cmpuint(out_len, ==, 12345);
	if (c->untouched)
		g_assert_cmpmem(out, tm_delta_max_body(PACKET), mark, tm_delta_max_body(PACKET));
}

static void test_hostile(void)
{
	built b;
	uint32_t len;

	if (!(tm_zcodec_available() & (1u << TM_ZCODEC_ZSTD))) {
		g_test_skip("zstd is not built in");
		return;
	}
	setup();
	build(&b);
	uint32_t dl = b.pkt.data_len, zl = b.zlen;
	struct {
		zcase c;
		uint8_t codec, reserved;
		uint32_t zlen, data_len, flen;
		const uint8_t *frame;
		uint32_t agreed;
	} cases[] = {
		{ { "codec lz4", EBADMSG, "codec 1, must be 2 (zstd)", true },
		  1, 0, zl, dl, zl, b.frame, hello.features },
		{ { "reserved", EBADMSG, "reserved bytes not 0", true },
		  2, 1, zl, dl, zl, b.frame, hello.features },
		{ { "zstd not agreed", EPROTO, "codec zstd was not agreed", true },
		  2, 0, zl, dl, zl, b.frame, TM_FEATURE_DELTA | TM_FEATURE_LZ4 },
		{ { "zlen 0", EBADMSG, "zlen 0 for data_len", true }, 2, 0, 0, dl, 0, b.frame,
		  hello.features },
		{ { "zlen not shorter", EBADMSG, "(1..data_len - 1", true },
		  2, 0, dl, dl, dl, b.pkt.data, hello.features },
		{ { "data_len past packet_size", EBADMSG, "data_len at most 65536", true },
		  2, 0, zl, PACKET + 1, zl, b.frame, hello.features },
		{ { "body length lies", EBADMSG, "header says", true },
		  2, 0, zl + 1, dl, zl, b.frame, hello.features },
		/* The frame says what it decodes to; data_len says what it must: a frame for
		 * more (a bomb) or less is refused before a byte is decoded. */
		{ { "bomb", EBADMSG, "the frame states another size", true },
		  2, 0, zl, dl - 1, zl, b.frame, hello.features },
		{ { "states less", EBADMSG, "the frame states another size", true },
		  2, 0, zl, dl + 1, zl, b.frame, hello.features },
		{ { "truncated frame", EBADMSG, "zstd data", false },
		  2, 0, zl - 3, dl, zl - 3, b.frame, hello.features },
	};
	for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_autofree uint8_t *m = zbody(&b, cases[i].codec, cases[i].reserved, cases[i].zlen,
					      cases[i].data_len, cases[i].frame, cases[i].flen, &len);
		refuse(&cases[i].c, m, len, cases[i].agreed);
	}
	/* A byte after the frame (zlen counts it): the frame does not end the section. */
	g_autofree uint8_t *more = g_malloc(zl + 1);
	memcpy(more, b.frame, zl);
	more[zl] = 0;
	g_autofree uint8_t *m1 = zbody(&b, 2, 0, zl + 1, dl, more, zl + 1, &len);
	refuse(&(zcase){ "byte after the frame", EBADMSG, "bytes after the frame", true }, m1, len,
	       hello.features);
	/* A corrupt frame: its last block's bytes flipped (the header still states dl). */
	g_autofree uint8_t *bad = g_memdup2(b.frame, zl);
	for (uint32_t k = 8; k < zl; k++)
		bad[k] ^= 0x5a;
	g_autofree uint8_t *m2 = zbody(&b, 2, 0, zl, dl, bad, zl, &len);
	refuse(&(zcase){ "corrupt frame", EBADMSG, "ZDELTA (zstd", false }, m2, len,
	       hello.features);
	/* Too short for the headers. */
	refuse(&(zcase){ "short body", EBADMSG, "ZDELTA body of 10 bytes", true }, m2, 10,
	       hello.features);
	built_free(&b);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/zdelta/roundtrip", test_roundtrip);
	g_test_add_func("/zdelta/hostile", test_hostile);
	int r = g_test_run();
	tm_zctx_free(zctx);
	return r;
}
