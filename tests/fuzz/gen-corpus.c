/* SPDX-License-Identifier: MIT */
/*
 * Writes the seed corpora of the fuzz targets: valid messages made with the codec's own encoders,
 * and mutations of them that hit each class of rejection. Usage: gen-corpus OUT-DIR (normally
 * tests/fuzz/corpus); it writes OUT-DIR/{frame,hello,data,state,postcopy}/. The output is deterministic, so
 * rerunning it after a wire change shows up as a reviewable diff of the seeds.
 */
#include <stdio.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "codec/compress.h"
#include "codec/delta.h"
#include "codec/delta-wire.h"
#include "fuzz.h"
#include "postcopy-fuzz.h"

static const char *out_root;

static void put(const char *target, const char *name, const void *buf, size_t len)
{
	g_autoptr(GError) error = NULL;
	g_autofree char *dir = g_build_filename(out_root, target, NULL);
	g_autofree char *path = g_build_filename(dir, name, NULL);

	if (g_mkdir_with_parents(dir, 0755) < 0)
		g_error("cannot create %s", dir);
	if (!g_file_set_contents(path, buf, (gssize)len, &error))
		g_error("%s", error->message);
}

/* Writes buf with byte off replaced by v. */
static void put_mut(const char *target, const char *name, const uint8_t *buf, size_t len,
		    size_t off, uint8_t v)
{
	g_autofree uint8_t *copy = g_memdup2(buf, len);

	copy[off] = v;
	put(target, name, copy, len);
}

static uint8_t *hello_body(const tm_hello *h, size_t *ret_len)
{
	*ret_len = tm_hello_body_len(h);
	uint8_t *buf = g_malloc(*ret_len);
	tm_hello_encode(h, buf);
	return buf;
}

static void gen_hello(void)
{
	tm_hello h;
	size_t len;

	fuzz_data_session(&h);
	g_autofree uint8_t *two = hello_body(&h, &len);
	put("hello", "valid-2-blocks", two, len);
	put_mut("hello", "bad-channel-id", two, len, 16, 2);
	put_mut("hello", "bad-channel-count", two, len, 18, 65);
	put_mut("hello", "bad-features", two, len, 20, 0x3);
	put_mut("hello", "bad-packet-size", two, len, 25, 0x01);
	put_mut("hello", "bad-chunk-size", two, len, 34, 0x00);
	put_mut("hello", "reserved-28", two, len, 28, 1);
	put_mut("hello", "reserved-44", two, len, 47, 1);
	put_mut("hello", "block-count-0", two, len, 40, 0);
	put_mut("hello", "block-count-3", two, len, 40, 3);
	put_mut("hello", "block-count-huge", two, len, 43, 0xff);
	put_mut("hello", "block-reserved", two, len, 48 + 22, 1);
	put_mut("hello", "name-len-0", two, len, 48 + 20, 0);
	put_mut("hello", "name-len-256", two, len, 48 + 21, 1);
	put_mut("hello", "name-nul", two, len, 48 + 24 + 1, 0);
	put_mut("hello", "dup-names", two, len, 48 + 28 + 24 + 3, '0');
	put_mut("hello", "page-size-8k", two, len, 48 + 17, 0x20);
	put_mut("hello", "length-unaligned", two, len, 48 + 0, 1);
	put_mut("hello", "guest-base-unaligned", two, len, 48 + 28 + 9, 1);
	put("hello", "truncated", two, len - 1);

	/* Three blocks, all page sizes, no tags, one long name. */
	g_strlcpy(h.blocks[0].name, "pc.ram", sizeof(h.blocks[0].name));
	h.blocks = g_renew(tm_wire_block, h.blocks, 3);
	memset(&h.blocks[2], 0, sizeof(h.blocks[2]));
	memset(h.blocks[2].name, 'L', TM_MAX_BLOCK_NAME);
	h.blocks[2].length = 3 * 16384;
	h.blocks[2].page_size = 16384;
	h.block_count = 3;
	h.features = 0;
	h.channel_count = 64;
	h.channel_id = 63;
	if (tm_hello_check(&h, NULL) < 0)
		g_error("3-block hello invalid");
	g_autofree uint8_t *three = hello_body(&h, &len);
	put("hello", "valid-3-blocks", three, len);
	tm_hello_clear(&h);

	/* Protocol 2: one HELLO per role; mutations of the fields protocol 2 gives a meaning. */
	fuzz_data_session(&h);
	h.version = TM_WIRE_VERSION_2;
	h.features |= TM_FEATURE_POSTCOPY;
	h.channel_id = 1;
	if (tm_hello_check(&h, NULL) < 0)
		g_error("v2 data hello invalid");
	g_autofree uint8_t *v2 = hello_body(&h, &len);
	put("hello", "v2-valid-data", v2, len);
	put_mut("hello", "v2-role-3", v2, len, 28, 3);
	put_mut("hello", "v2-role-reserved", v2, len, 30, 1);
	put_mut("hello", "v2-epoch", v2, len, 44, 1);
	put_mut("hello", "v2-features-reserved", v2, len, 20, 0x7);
	put_mut("hello", "v2-control-channel-id", v2, len, 28, TM_ROLE_CONTROL);
	h.channel_id = 0;
	h.role = TM_ROLE_CONTROL;
	g_autofree uint8_t *ctl = hello_body(&h, &len);
	put("hello", "v2-valid-control", ctl, len);
	/* A control reconnect (RESUME_CONTROL): epoch 1; without the feature bit it is refused. */
	h.features |= TM_FEATURE_RESUME | TM_FEATURE_RESUME_CONTROL;
	h.epoch = 1;
	if (tm_hello_check(&h, NULL) < 0)
		g_error("v2 control reconnect hello invalid");
	g_autofree uint8_t *ctl_re = hello_body(&h, &len);
	put("hello", "v2-valid-control-reconnect", ctl_re, len);
	put_mut("hello", "v2-control-reconnect-no-feature", ctl_re, len, 20,
		(uint8_t)(h.features & ~TM_FEATURE_RESUME_CONTROL));
	h.features &= ~(TM_FEATURE_RESUME | TM_FEATURE_RESUME_CONTROL);
	h.epoch = 0;
	h.role = TM_ROLE_URGENT;
	g_autofree uint8_t *urg = hello_body(&h, &len);
	put("hello", "v2-valid-urgent", urg, len);
	put_mut("hello", "v2-urgent-no-postcopy", urg, len, 20, TM_FEATURE_TAGS_MTE4);
	tm_hello_clear(&h);
}

static void gen_frame(void)
{
	static const uint8_t types[] = { TM_MSG_HELLO_ACK, TM_MSG_SYNC, TM_MSG_SYNC_ACK, TM_MSG_END,
					 TM_MSG_END_ACK };
	uint8_t buf[TM_FRAME_HDR_LEN + TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE];
	size_t n;

	for (unsigned i = 0; i < G_N_ELEMENTS(types); i++) {
		g_autofree char *name = g_strdup_printf("valid-%s", tm_msg_name(types[i]));
		n = tm_ctrl_encode(buf, types[i], i, 1000 + i, 2000 + i);
		put("frame", name, buf, n);
	}
	n = tm_ctrl_encode(buf, TM_MSG_SYNC, 0, 1, 0);
	put_mut("frame", "bad-magic", buf, n, 0, 'X');
	put_mut("frame", "bad-version", buf, n, 4, 2);
	put_mut("frame", "bad-type", buf, n, 5, 9);
	put_mut("frame", "reserved", buf, n, 7, 1);
	put_mut("frame", "body-len-huge", buf, n, 11, 0x10);
	put_mut("frame", "body-len-short", buf, n, 8, 7);
	put("frame", "truncated-header", buf, 8);
	n = tm_ctrl_encode(buf, TM_MSG_HELLO_ACK, 0, 0, 0);
	put_mut("frame", "hello-ack-reserved", buf, n, 16, 1);

	const char *msg = "RAM block 1 'pc.ram': sender length 1073741824, receiver length 536870912";
	n = tm_error_encode(buf, 3, EINVAL, msg);
	put("frame", "valid-ERROR", buf, n);
	put_mut("frame", "error-code-0", buf, n, 16, 0);
	put_mut("frame", "error-reserved", buf, n, 16 + 6, 1);
	put_mut("frame", "error-message-len", buf, n, 16 + 4, 0xff);
	put_mut("frame", "error-nul", buf, n, 16 + 8 + 3, 0);
	put_mut("frame", "error-bad-utf8", buf, n, 16 + 8 + 3, 0xff);
	g_autofree char *longmsg = g_strnfill(TM_MAX_ERROR_MESSAGE, 'e');
	n = tm_error_encode(buf, 3, EBADMSG, longmsg);
	put("frame", "valid-ERROR-max", buf, n);
	put_mut("frame", "error-too-long", buf, n, 16 + 4, 0x01);

	/* A HELLO and a DATA frame, as the frame target sees them. */
	tm_hello h;
	size_t blen;
	fuzz_data_session(&h);
	g_autofree uint8_t *body = hello_body(&h, &blen);
	g_autofree uint8_t *hello = g_malloc(TM_FRAME_HDR_LEN + blen);
	tm_frame_encode(hello, TM_MSG_HELLO, (uint32_t)blen, 0);
	memcpy(hello + TM_FRAME_HDR_LEN, body, blen);
	put("frame", "valid-HELLO", hello, TM_FRAME_HDR_LEN + blen);
	tm_frame_encode(buf, TM_MSG_DATA, 16 + 8, 1);
	put("frame", "data-header", buf, TM_FRAME_HDR_LEN);

	/* Protocol 2: the control bodies that changed, HELLO_ACK, a HELLO, the new types. */
	static const uint8_t types2[] = { TM_MSG_SYNC, TM_MSG_SYNC_ACK, TM_MSG_END, TM_MSG_END_ACK };
	const uint64_t vals[3] = { 1000, 2000, 3000 };
	for (unsigned i = 0; i < G_N_ELEMENTS(types2); i++) {
		g_autofree char *name = g_strdup_printf("v2-valid-%s", tm_msg_name(types2[i]));
		n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, types2[i], i, vals);
		put("frame", name, buf, n);
	}
	n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_END, 0, vals);
	put_mut("frame", "v2-end-as-v1", buf, n, 4, 1);
	put_mut("frame", "v2-bad-type", buf, n, 5, 20);
	put_mut("frame", "v2-bad-version", buf, n, 4, 3);
	n = tm_ctrl_encode(buf, TM_MSG_SYNC, 0, 1, 0);
	put_mut("frame", "v1-type-9", buf, n, 5, TM_MSG_STATE);
	const tm_hello_ack ack = { TM_FEATURE_TAGS_MTE4 | TM_FEATURE_POSTCOPY, 256, 1ull << 30,
				   4ull << 30, 0, 0 };
	n = tm_hello_ack_encode(buf, 0, &ack);
	put("frame", "v2-valid-HELLO_ACK", buf, n);
	put_mut("frame", "v2-hello-ack-features", buf, n, 16, 0x7);
	put_mut("frame", "v2-hello-ack-outstanding-0", buf, n, 16 + 5, 0);
	put_mut("frame", "v2-hello-ack-outstanding-513", buf, n, 16 + 5, 2);
	put_mut("frame", "v2-hello-ack-section", buf, n, 16 + 13, 0x01);
	put_mut("frame", "v2-hello-ack-total", buf, n, 16 + 19, 0);
	put_mut("frame", "v2-hello-ack-reserved", buf, n, 16 + 24, 1);
	/* Resume: RESUME and RESUME_ACK, valid and not. */
	n = tm_resume_encode(buf, 1, 0x0123456789abcdefull);
	put("frame", "v2-valid-RESUME", buf, n);
	put_mut("frame", "v2-resume-seq-2", buf, n, 12, 2);
	n = tm_resume_encode(buf, 1, 0);
	put("frame", "v2-resume-token-0", buf, n);
	const tm_resume_pos rpos = { 4096, 8, 2, 3, TM_RESUME_RAM_ENDED };
	n = tm_resume_ack_encode(buf, 0, &rpos);
	put("frame", "v2-valid-RESUME_ACK", buf, n);
	put_mut("frame", "v2-resume-ack-flags", buf, n, 16 + 32, 2);
	put_mut("frame", "v2-resume-ack-reserved", buf, n, 16 + 36, 1);
	/* Resume of the control connection: CTL_RESUME and CTL_POS, valid and not. */
	n = tm_ctl_resume_encode(buf, 1, 0x0123456789abcdefull, 2);
	put("frame", "v2-valid-CTL_RESUME", buf, n);
	n = tm_ctl_resume_encode(buf, 1, 0, 2);
	put("frame", "v2-ctl-resume-token-0", buf, n);
	n = tm_ctl_pos_encode(buf, 0, 1);
	put("frame", "v2-valid-CTL_POS", buf, n);
	put_mut("frame", "v2-ctl-pos-type-27", buf, n, 5, 27);
	const tm_hello_ack ack1 = { TM_FEATURE_TAGS_MTE4, 0, 0, 0, 0, 0 };
	n = tm_hello_ack_encode(buf, 0, &ack1);
	put("frame", "v2-valid-HELLO_ACK-no-postcopy", buf, n);
	/* Postcopy declined with a reason (byte 6); the reserved byte 7; a reason with POSTCOPY. */
	const tm_hello_ack ack2 = { TM_FEATURE_TAGS_MTE4, 0, 1ull << 30, 4ull << 30, 0,
				    TM_PC_DECLINE_UFFD_DENIED };
	n = tm_hello_ack_encode(buf, 0, &ack2);
	put("frame", "v2-valid-HELLO_ACK-declined", buf, n);
	put_mut("frame", "v2-hello-ack-decline-reserved", buf, n, 16 + 7, 1);
	put_mut("frame", "v2-hello-ack-decline-with-postcopy", buf, n, 16, 0x3);
	h.version = TM_WIRE_VERSION_2;
	h.role = TM_ROLE_CONTROL;
	h.channel_id = 0;
	tm_hello_encode(&h, body);
	tm_frame_encode_v(hello, TM_WIRE_VERSION_2, TM_MSG_HELLO, (uint32_t)blen, 0);
	memcpy(hello + TM_FRAME_HDR_LEN, body, blen);
	put("frame", "v2-valid-HELLO", hello, TM_FRAME_HDR_LEN + blen);
	static const uint8_t later[] = { TM_MSG_STATE, TM_MSG_DISCARD, TM_MSG_RAM_END, TM_MSG_PING,
					 TM_MSG_PAGE_REQ, TM_MSG_URGENT, TM_MSG_REQ_END };
	for (unsigned i = 0; i < G_N_ELEMENTS(later); i++) {
		g_autofree char *name = g_strdup_printf("v2-header-%s", tm_msg_name(later[i]));
		tm_frame_encode_v(buf, TM_WIRE_VERSION_2, later[i],
				  tm_frame_max_body(TM_WIRE_VERSION_2, later[i], TM_PACKET_SIZE_MIN), 1);
		put("frame", name, buf, TM_FRAME_HDR_LEN);
	}
	tm_hello_clear(&h);
}

/* One DATA message of the fuzz session for pages of block, sent with seq; codec 1 lz4, 2 zstd:
 * a protocol 2 ZDATA instead. */
static uint8_t *data_msg_z(uint32_t block, const uint32_t *pages, unsigned n, uint32_t seq,
			   uint8_t codec, size_t *ret_len)
{
	tm_hello s;
	tm_packet pkt;

	fuzz_data_session(&s);
	uint32_t ps = s.blocks[block].page_size, granules = ps / TM_TAG_GRANULE;
	g_autofree uint8_t *ram = g_malloc0((size_t)n * ps);
	g_autofree uint8_t *tags = g_malloc0((size_t)n * granules);

	/*
	 * pages[i] % 6 picks the page: 0 NORMAL, 1 NORMAL uniform, 2 NORMAL packed, 3 ZERO,
	 * 4 ZERO_TAGGED uniform, 5 ZERO_TAGGED packed.
	 */
	for (unsigned i = 0; i < n; i++) {
		uint8_t *d = ram + (size_t)i * ps, *t = tags + (size_t)i * granules;
		unsigned v = pages[i] % 6;

		if (v == 0 || v == 1 || v == 2)
			memset(d, 0x41 + (int)i, ps);
		if (v == 1 || v == 4)
			memset(t, 0x5, granules);
		if (v == 2 || v == 5)
			for (unsigned j = 0; j < granules; j++)
				t[j] = (uint8_t)(j % 16);
	}
	tm_packet_init(&pkt, s.packet_size);
	tm_packet_begin(&pkt, block, ps, s.packet_size);
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *d = ram + (size_t)i * ps;
		tm_packet_add(&pkt, pages[i], d, tm_buffer_is_zero(d, ps), tags + (size_t)i * granules,
			      NULL);
	}
	if (codec)
		pkt.version = TM_WIRE_VERSION_2;
	unsigned iovcnt = tm_packet_finish(&pkt, seq, ret_len);
	const struct iovec *iov = pkt.iov;
	if (codec) {
		g_autoptr(tm_zctx) z = NULL;
		if (tm_zctx_new(s.packet_size, &z, NULL) < 0)
			g_error("tm_zctx_new");
		ssize_t zlen = tm_packet_compress(&pkt, z, codec, 1, 0, 0, NULL);
		if (zlen <= 0)
			g_error("data_msg_z: %s did not compress", tm_zcodec_name(codec));
		iovcnt = tm_packet_finish_z(&pkt, codec, (size_t)zlen, ret_len);
		iov = pkt.ziov;
	}
	uint8_t *msg = g_malloc(*ret_len), *p = msg;
	for (unsigned i = 0; i < iovcnt; i++) {
		memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	tm_packet_fini(&pkt);
	tm_hello_clear(&s);
	return msg;
}

static uint8_t *data_msg(uint32_t block, const uint32_t *pages, unsigned n, uint32_t seq,
			 size_t *ret_len)
{
	return data_msg_z(block, pages, n, seq, 0, ret_len);
}

/* ZDATA seeds (fuzz-data's corpus, read by fuzz-recv-plan): each codec, then broken ones. */
static void gen_zdata(void)
{
	static const uint32_t mixed[] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	static const uint32_t big[] = { 2 };

	for (uint8_t c = TM_ZCODEC_LZ4; c <= TM_ZCODEC_ZSTD; c++) {
		size_t n;
		if (!(tm_zcodec_available() & (1u << c)))
			continue;
		g_autofree uint8_t *m = data_msg_z(0, mixed, G_N_ELEMENTS(mixed), 0, c, &n);
		g_autofree char *name = g_strdup_printf("zdata-%s-mixed", tm_zcodec_name(c));
		put("data", name, m, n);
		/* Block 1, 64 KiB page 2 (chunk 6: channel 0), packed tags. */
		size_t bn;
		g_autofree uint8_t *b = data_msg_z(1, big, G_N_ELEMENTS(big), 0, c, &bn);
		g_autofree char *bname = g_strdup_printf("zdata-%s-64k", tm_zcodec_name(c));
		put("data", bname, b, bn);
		const char *cn = tm_zcodec_name(c);
		g_autofree char *n1 = g_strdup_printf("zdata-%s-codec-3", cn);
		put_mut("data", n1, m, n, 16, 3);
		g_autofree char *n2 = g_strdup_printf("zdata-%s-reserved", cn);
		put_mut("data", n2, m, n, 17, 1);
		g_autofree char *n3 = g_strdup_printf("zdata-%s-zlen-huge", cn);
		put_mut("data", n3, m, n, 23, 0x7f);
		g_autofree char *n4 = g_strdup_printf("zdata-%s-zlen-short", cn);
		put_mut("data", n4, m, n, 20, (uint8_t)(m[20] - 1));
		g_autofree char *n5 = g_strdup_printf("zdata-%s-corrupt", cn);
		put_mut("data", n5, m, n, 16 + 8 + 16 + 8 * 8 + 6, 0xff);
	}
}

/*
 * ZDELTA seeds from the finished DELTA pkt (its wire form m): the same packet with its deltas
 * as a zstd frame, and broken: codec lz4, reserved byte, zlen not the frame's, a frame that
 * states 256 bytes more than the deltas (a bomb), one that states a byte less (decodes long), a
 * corrupt frame.
 */
static void gen_zdelta(const tm_delta_pkt *pkt, const uint8_t *delta, size_t delta_len)
{
	g_autoptr(tm_zctx) z = NULL;
	uint8_t zhead[TM_FRAME_HDR_LEN + TM_ZDELTA_HDR_LEN];
	struct iovec iov[4];
	size_t len;

	if (tm_zctx_new(FUZZ_DATA_PACKET_SIZE, &z, NULL) < 0)
		g_error("tm_zctx_new");
	g_autofree uint8_t *frame = g_malloc(tm_zctx_bound(z));
	ssize_t zlen = tm_zcompress_buf(z, 1, pkt->data, pkt->data_len, frame, tm_zctx_bound(z),
					NULL);
	if (zlen <= 0)
		return; /* zstd not built (or no gain): no ZDELTA seeds */
	unsigned n = tm_zdelta_finish(pkt, zhead, TM_WIRE_VERSION_2, 0, frame, (uint32_t)zlen, iov,
				      &len);
	g_autofree uint8_t *m = g_malloc(len);
	size_t at = 0;
	for (unsigned i = 0; i < n; i++) {
		memcpy(m + at, iov[i].iov_base, iov[i].iov_len);
		at += iov[i].iov_len;
	}
	put("data", "zdelta-4k", m, len);
	size_t z0 = TM_FRAME_HDR_LEN, f0 = z0 + TM_ZDELTA_HDR_LEN + TM_DELTA_HDR_LEN +
					  (size_t)pkt->page_count * TM_DELTA_ENTRY_LEN;
	put_mut("data", "zdelta-codec-lz4", m, len, z0, 1);
	put_mut("data", "zdelta-reserved", m, len, z0 + 2, 1);
	put_mut("data", "zdelta-zlen", m, len, z0 + 4, (uint8_t)(m[z0 + 4] - 1));
	put_mut("data", "zdelta-corrupt", m, len, f0 + (size_t)zlen / 2, 0xff);
	/* The frame's content size (a 2-byte field after magic and descriptor for these sizes,
	 * + 256): zstd's single-segment header stores it in the bytes after the descriptor. */
	put_mut("data", "zdelta-bomb", m, len, f0 + 6, (uint8_t)(m[f0 + 6] + 1));
	put_mut("data", "zdelta-short", m, len, f0 + 5, (uint8_t)(m[f0 + 5] - 1));
	(void)delta;
	(void)delta_len;
}

/* DELTA seeds (fuzz-data's corpus, read by fuzz-recv-plan) and DELTA_NACK (frame). */
static void gen_delta_wire(void)
{
	tm_delta_pkt pkt;
	size_t len;
	uint8_t base[65536], page[65536], tags[65536 / TM_TAG_GRANULE];

	tm_delta_pkt_init(&pkt, FUZZ_DATA_PACKET_SIZE);
	for (unsigned b = 0; b < 2; b++) {
		uint32_t ps = b ? 65536 : 4096;
		tm_delta_pkt_begin(&pkt, b, ps);
		/* Pages of channel 0: 0..3 of ram0 (chunk 0), ram1's page 0 (chunk 4). */
		for (uint32_t p = 0; p < (b ? 1u : 4u); p++) {
			for (uint32_t i = 0; i < ps; i++)
				base[i] = page[i] = (uint8_t)(i * 13 + p);
			for (uint32_t i = 64 * p; i < ps; i += 97)
				page[i] ^= (uint8_t)(0x11 + p);
			memset(tags, p % 2 ? 0x7 : (int)(p & 0xf), ps / TM_TAG_GRANULE);
			tags[3] = 0x2;
			if (tm_delta_pkt_add(&pkt, p, page, base, p == 1 ? NULL : tags, ps - 1) < 0)
				g_error("delta seed");
		}
		unsigned n = tm_delta_pkt_finish(&pkt, TM_WIRE_VERSION_2, 0, &len);
		g_autofree uint8_t *m = g_malloc(len);
		size_t at = 0;
		for (unsigned i = 0; i < n; i++) {
			memcpy(m + at, pkt.iov[i].iov_base, pkt.iov[i].iov_len);
			at += pkt.iov[i].iov_len;
		}
		put("data", b ? "delta-64k" : "delta-4k", m, len);
		if (b)
			continue;
		gen_zdelta(&pkt, m, len);
		/* Broken: reserved byte, a page on the other channel, dlen past the deltas, a
		 * varint of 4 bytes, a bad tag encoding. */
		size_t e0 = TM_FRAME_HDR_LEN + TM_DELTA_HDR_LEN;
		size_t d0 = e0 + 4 * TM_DELTA_ENTRY_LEN;
		put_mut("data", "delta-reserved", m, len, e0 + 20, 1);
		put_mut("data", "delta-channel", m, len, e0, 16);
		put_mut("data", "delta-dlen", m, len, e0 + 5, 0x7f);
		put_mut("data", "delta-varint", m, len, d0, 0xff);
		put_mut("data", "delta-tag-enc", m, len, e0 + 16, 7);
	}
	tm_delta_pkt_fini(&pkt);

	uint8_t buf[TM_FRAME_HDR_LEN + TM_DELTA_NACK_HDR_LEN + 4 * TM_DELTA_NACK_ENTRY_LEN];
	static const uint32_t pages[] = { 0, 3, 32, 35 }, why[] = { 1, 2, 1, 2 };
	len = tm_delta_nack_encode(buf, TM_WIRE_VERSION_2, 1, 0, pages, why, 4);
	put("frame", "v2-valid-DELTA_NACK", buf, len);
	put_mut("frame", "v2-DELTA_NACK-reason", buf, len, TM_FRAME_HDR_LEN + 12, 9);
	put_mut("frame", "v2-DELTA_NACK-count", buf, len, TM_FRAME_HDR_LEN + 4, 0);
	put_mut("frame", "v2-DELTA_NACK-page", buf, len, TM_FRAME_HDR_LEN + 9, 1);
}

static void gen_data(void)
{
	static const uint32_t mixed[] = { 0, 1, 2, 3, 4, 5, 6, 7 };
	static const uint32_t small[] = { 9, 10, 11, 12 }; /* ascending; % 6 picks the kinds */
	static const uint32_t ch1[] = { 16, 17, 31 };
	static const uint32_t big_packed[] = { 2 }, big_zero[] = { 3 };
	size_t n;

	/* Block 0, pages 0-7 (chunk 0: channel 0), every kind and tag encoding. */
	g_autofree uint8_t *m = data_msg(0, mixed, G_N_ELEMENTS(mixed), 0, &n);
	put("data", "valid-mixed", m, n);

	/*
	 * The mutations start from a small packet (one page of data): entries at 32 + 8 * i for
	 * ZERO, ZERO_TAGGED uniform, ZERO_TAGGED packed, NORMAL; tags = 1 uniform byte + 128.
	 */
	g_autofree uint8_t *s = data_msg(0, small, G_N_ELEMENTS(small), 0, &n);
	put("data", "valid-small", s, n);
	put_mut("data", "wrong-channel", s, n, 12, 1);
	put_mut("data", "block-range", s, n, 16, 2);
	put_mut("data", "page-count-0", s, n, 20, 0);
	put_mut("data", "page-count-max", s, n, 20, 17);
	put_mut("data", "data-len", s, n, 25, 0x20);
	put_mut("data", "tag-len", s, n, 28, 0x80);
	put_mut("data", "page-range", s, n, 32 + 8, 64);
	put_mut("data", "pages-descending", s, n, 32 + 16, 9); /* entry 2: page 9 after 10 */
	put_mut("data", "kind", s, n, 32 + 8 + 4, 3);
	put_mut("data", "tag-enc", s, n, 32 + 8 + 5, 3);
	put_mut("data", "zero-with-tags", s, n, 32 + 5, 1);
	put_mut("data", "zero-tagged-no-tags", s, n, 32 + 8 + 5, 0);
	put_mut("data", "entry-reserved", s, n, 32 + 16 + 6, 1);
	put_mut("data", "uniform-high-nibble", s, n, n - 129, 0x35);
	put_mut("data", "body-len", s, n, 8, (uint8_t)(s[8] + 1));
	put("data", "truncated", s, n - 1);

	g_autofree uint8_t *c1 = data_msg(0, ch1, G_N_ELEMENTS(ch1), 1, &n);
	put("data", "valid-channel-1", c1, n);
	/* Block 1 (64 KiB pages): chunk_base 4, so page 2 is channel 0 and page 3 channel 1. */
	g_autofree uint8_t *bp = data_msg(1, big_packed, 1, 2, &n);
	put("data", "valid-block-1-packed", bp, n);
	g_autofree uint8_t *bz = data_msg(1, big_zero, 1, 5, &n);
	put("data", "valid-block-1-zero", bz, n);
}

/* ---- device state: a stream of frames, each on channel seq mod 2 (fuzz-state.c) ---- */
typedef struct stream {
	GByteArray *buf;
	uint32_t seq[FUZZ_DATA_CHANNELS]; /* next seq per channel: channel, channel + 2, ... */
} stream;

static size_t stream_ram_end(stream *st, unsigned ch)
{
	uint8_t m[TM_FRAME_HDR_LEN + TM_RAM_END_LEN];
	size_t at = st->buf->len;
	size_t n = tm_ram_end_encode(m, st->seq[ch], TM_RAM_END_FINAL, 0, 0);

	st->seq[ch] += FUZZ_DATA_CHANNELS;
	g_byte_array_append(st->buf, m, (guint)n);
	return at;
}

/* Appends one chunk (data: data_len bytes of a pattern); returns the offset of its frame. */
static size_t stream_chunk(stream *st, const tm_state_hdr *h, const char *name)
{
	uint8_t m[TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + TM_MAX_STATE_NAME];
	unsigned ch = (unsigned)(h->chunk % FUZZ_DATA_CHANNELS);
	size_t at = st->buf->len;
	size_t n = tm_state_encode(m, st->seq[ch], h, name);

	st->seq[ch] += FUZZ_DATA_CHANNELS;
	g_byte_array_append(st->buf, m, (guint)n);
	for (uint32_t i = 0; i < h->data_len; i++) {
		uint8_t b = (uint8_t)(h->chunk * 31 + i);
		g_byte_array_append(st->buf, &b, 1);
	}
	return at;
}

static void gen_state(void)
{
	stream st = { .buf = g_byte_array_new(), .seq = { 0, 1 } };
	const uint32_t ps = FUZZ_DATA_PACKET_SIZE;

	stream_ram_end(&st, 0);
	stream_ram_end(&st, 1);
	/* "cpu0" 100 bytes: chunk 0; "dev" ps + 1: chunks 1, 2; "empty": chunk 3; END: chunk 4. */
	tm_state_hdr c0 = { 0, TM_STATE_FIRST | TM_STATE_LAST, 4, 0, 100, 0, 100 };
	tm_state_hdr c1 = { 1, TM_STATE_FIRST, 3, 1, ps + 1u, 0, ps };
	tm_state_hdr c2 = { 1, TM_STATE_LAST, 0, 2, ps + 1u, ps, 1 };
	tm_state_hdr c3 = { 2, TM_STATE_FIRST | TM_STATE_LAST, 5, 3, 0, 0, 0 };
	tm_state_hdr c4 = { 3, TM_STATE_END, 0, 4, 0, 0, 0 };
	size_t o0 = stream_chunk(&st, &c0, "cpu0") + TM_FRAME_HDR_LEN;
	size_t o1 = stream_chunk(&st, &c1, "dev") + TM_FRAME_HDR_LEN;
	size_t o2 = stream_chunk(&st, &c2, NULL) + TM_FRAME_HDR_LEN;
	size_t o3 = stream_chunk(&st, &c3, "empty") + TM_FRAME_HDR_LEN;
	size_t o4 = stream_chunk(&st, &c4, NULL) + TM_FRAME_HDR_LEN;
	const uint8_t *v = st.buf->data;
	size_t n = st.buf->len;

	put("state", "valid-3-sections", v, n);
	/* Each mutation: one field of one chunk (body offsets as in docs/wire-format.md). */
	put_mut("state", "wrong-channel", v, n, o1 - TM_FRAME_HDR_LEN + 12, 2); /* seq: channel 0 */
	put_mut("state", "chunk-skipped", v, n, o2 + 8, 4);
	put_mut("state", "section-out-of-order", v, n, o1 + 0, 2);
	put_mut("state", "section-huge", v, n, o0 + 3, 1);
	put_mut("state", "flags-unknown", v, n, o0 + 4, 0x0b);
	put_mut("state", "first-missing", v, n, o1 + 4, 0);
	put_mut("state", "name-len-0", v, n, o0 + 6, 0);
	put_mut("state", "name-esc", v, n, o0 + TM_STATE_HDR_LEN + 1, 0x1b);
	put_mut("state", "name-del", v, n, o0 + TM_STATE_HDR_LEN, 0x7f);
	put_mut("state", "name-bad-utf8", v, n, o0 + TM_STATE_HDR_LEN + 3, 0xff);
	put_mut("state", "name-unexpected", v, n, o1 + TM_STATE_HDR_LEN + 2, 'x');
	put_mut("state", "section-len-over-limit", v, n, o1 + 16 + 3, 0x10);
	put_mut("state", "section-len-changes", v, n, o2 + 16, 2);
	put_mut("state", "offset-wrong", v, n, o2 + 24, 1);
	put_mut("state", "last-missing", v, n, o0 + 4, TM_STATE_FIRST);
	put_mut("state", "data-len-past-section", v, n, o2 + 32, 2);
	put_mut("state", "reserved", v, n, o3 + 36, 1);
	put_mut("state", "end-count", v, n, o4 + 0, 2);
	put_mut("state", "end-with-data", v, n, o4 + 16, 1);
	put_mut("state", "body-len", v, n, o3 - TM_FRAME_HDR_LEN + 8, 46);
	put("state", "truncated", v, n - 1);
	/* Without the RAM_END of channel 0: its first STATE comes before the end of RAM. */
	size_t skip = TM_FRAME_HDR_LEN + TM_RAM_END_LEN;
	put("state", "before-ram-end", v + skip, n - skip);
	put_mut("state", "ram-end-postcopy", v, n, TM_FRAME_HDR_LEN, TM_RAM_END_POSTCOPY);
	put_mut("state", "ram-end-reserved", v, n, TM_FRAME_HDR_LEN + 4, 1);

	/* One more section after END_OF_STATE. */
	tm_state_hdr c5 = { 3, TM_STATE_FIRST | TM_STATE_LAST, 2, 5, 1, 0, 1 };
	stream_chunk(&st, &c5, "xx");
	put("state", "after-end", st.buf->data, st.buf->len);
	g_byte_array_unref(st.buf);

	stream big = { .buf = g_byte_array_new(), .seq = { 0, 1 } };
	stream_ram_end(&big, 0);
	stream_ram_end(&big, 1);
	/* Sections of 256 KiB, 256 KiB and 1 byte: over fuzz-state's max_state_total of 512 KiB. */
	uint64_t g = 0;
	for (uint32_t sec = 0; sec < 3; sec++) {
		uint64_t len = sec < 2 ? 256u * 1024u : 1;
		for (uint64_t off = 0; off < len; off += ps, g++) {
			uint32_t dl = (uint32_t)MIN((uint64_t)ps, len - off);
			tm_state_hdr h = { sec, (uint16_t)((off == 0 ? TM_STATE_FIRST : 0) |
							  (off + dl == len ? TM_STATE_LAST : 0)),
					   (uint16_t)(off == 0 ? 3 : 0), g, len, off, dl };
			stream_chunk(&big, &h, "big");
		}
	}
	put("state", "over-total", big.buf->data, big.buf->len);
	g_byte_array_unref(big.buf);
}

/* fuzz-decompress: [codec/page size][pages] + a real stream of text-like pages, both codecs. */
static void gen_decompress(void)
{
	g_autoptr(tm_zctx) z = NULL;
	static const uint32_t sizes[] = { 4096, 16384, 65536 };

	if (tm_zctx_new(16 * 65536, &z, NULL) < 0)
		g_error("tm_zctx_new");
	size_t cap = tm_zctx_bound(z);
	g_autofree uint8_t *buf = g_malloc(cap + 2);
	for (unsigned sel = 0; sel < 6; sel++) {
		tm_zcodec c = sel & 1 ? TM_ZCODEC_LZ4 : TM_ZCODEC_ZSTD;
		uint32_t ps = sizes[(sel >> 1) % 3];
		unsigned n = sel + 1;
		uint8_t *pages[16];
		if (!(tm_zcodec_available() & (1u << c)))
			continue;
		for (unsigned i = 0; i < n; i++) {
			pages[i] = g_malloc(ps);
			for (uint32_t j = 0; j < ps; j++)
				pages[i][j] = j % 97 < 50 ? (uint8_t)"page data "[j % 10] : (uint8_t)(j * i);
		}
		ssize_t len = tm_zcompress(z, c, 1, pages, n, ps, buf + 2, cap, NULL);
		if (len <= 0)
			g_error("gen_decompress: %s did not compress", tm_zcodec_name(c));
		buf[0] = (uint8_t)sel;
		buf[1] = (uint8_t)(n - 1);
		g_autofree char *name = g_strdup_printf("%s-%u-%ux%u", tm_zcodec_name(c), sel, n, ps);
		put("decompress", name, buf, (size_t)len + 2);
		for (unsigned i = 0; i < n; i++)
			g_free(pages[i]);
	}
}

/* fuzz-delta: [page size] + real deltas against fuzz-delta's base, and broken ones. */
static void gen_delta(void)
{
	static const uint32_t sizes[] = { 4096, 16384, 65536 };

	for (unsigned sel = 0; sel < 3; sel++) {
		uint32_t ps = sizes[sel];
		g_autofree uint8_t *base = g_malloc(ps);
		for (uint32_t i = 0; i < ps; i++)
			base[i] = (uint8_t)(i * 7 + (i >> 9));
		g_autofree uint8_t *page = g_memdup2(base, ps);
		/* 5% rewritten in 16-byte records, and the page's first and last bytes. */
		for (uint32_t k = 0; k < ps / 20 / 16; k++)
			memset(page + ((k * 2654435761u) % (ps / 16)) * 16, (int)(k | 1), 16);
		page[0] ^= 0xff;
		page[ps - 1] ^= 0x01;
		size_t cap = (size_t)ps + 1;
		g_autofree uint8_t *buf = g_malloc(cap);
		buf[0] = (uint8_t)sel;
		ssize_t n = tm_delta_encode(page, base, ps, buf + 1, cap - 1);
		if (n <= 0)
			g_error("gen_delta: no delta");
		g_autofree char *name = g_strdup_printf("delta-%u", ps);
		put("delta", name, buf, (size_t)n + 1);
		g_autofree char *cut = g_strdup_printf("delta-%u-cut", ps);
		put("delta", cut, buf, (size_t)n);
		g_autofree char *big = g_strdup_printf("delta-%u-skip-past", ps);
		put_mut("delta", big, buf, (size_t)n + 1, 2, 0xff);
	}
	static const uint8_t empty[] = { 0 };
	put("delta", "equal-page", empty, sizeof(empty));
	static const uint8_t overlong[] = { 0, 0x80, 0x80, 0x80, 0x01, 0x00 };
	put("delta", "overlong-varint", overlong, sizeof(overlong));
}

/* One URGENT of the postcopy fuzz session answering req_id (fuzz_urgent_request()). */
static uint8_t *urgent_msg(uint64_t req_id, size_t *ret_len)
{
	tm_hello s;
	tm_page_req q;
	tm_packet pkt;
	uint8_t prefix[TM_FRAME_HDR_LEN + TM_URGENT_ID_LEN];

	fuzz_postcopy_session(&s);
	if (!fuzz_urgent_request(req_id, &q))
		g_error("request %" G_GUINT64_FORMAT " is not outstanding", (guint64)req_id);
	uint32_t ps = s.blocks[q.block].page_size, granules = ps / TM_TAG_GRANULE;
	g_autofree uint8_t *ram = g_malloc0((size_t)q.count * ps);
	g_autofree uint8_t *tags = g_malloc0((size_t)q.count * granules);
	for (unsigned i = 0; i < q.count; i++) {
		/* every third page zero, tags on every other one */
		if (i % 3 != 1)
			memset(ram + (size_t)i * ps, 0x61 + (int)i, ps);
		if (i % 2)
			for (unsigned j = 0; j < granules; j++)
				tags[(size_t)i * granules + j] = (uint8_t)((i + j) % 16);
	}
	tm_packet_init(&pkt, s.packet_size);
	pkt.version = TM_WIRE_VERSION_2;
	tm_packet_begin(&pkt, q.block, ps, s.packet_size);
	for (unsigned i = 0; i < q.count; i++) {
		const uint8_t *d = ram + (size_t)i * ps;
		tm_packet_add(&pkt, q.page + i, d, tm_buffer_is_zero(d, ps), tags + (size_t)i * granules,
			      NULL);
	}
	unsigned iovcnt = tm_urgent_finish(&pkt, 0, req_id, prefix, ret_len);
	uint8_t *msg = g_malloc(*ret_len), *p = msg;
	memcpy(p, prefix, sizeof(prefix));
	p += sizeof(prefix);
	for (unsigned i = 0; i < iovcnt; i++) {
		memcpy(p, pkt.iov[i].iov_base, pkt.iov[i].iov_len);
		p += pkt.iov[i].iov_len;
	}
	tm_packet_fini(&pkt);
	tm_hello_clear(&s);
	return msg;
}

static void gen_postcopy(void)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_DISCARD_HDR_LEN + 8 * TM_MAX_DISCARD_RANGES];
	size_t n;

	/*
	 * DISCARD: the frame's seq picks the channel (seq % 2). "ram0" chunks 0-3 are pages 0-15,
	 * 16-31, ... on channels 0 1 0 1; "ram1" chunk 4 + page on channel page % 2.
	 */
	const tm_discard_range r0[] = { { 0, 2 }, { 5, 11 }, { 32, 16 } };
	n = tm_discard_encode(buf, 0, 0, r0, G_N_ELEMENTS(r0));
	put("postcopy", "discard-valid", buf, n);
	put_mut("postcopy", "discard-wrong-channel", buf, n, 12, 1);
	put_mut("postcopy", "discard-block", buf, n, 16, 2);
	put_mut("postcopy", "discard-count-0", buf, n, 20, 0);
	put_mut("postcopy", "discard-count-513", buf, n, 21, 2);
	put_mut("postcopy", "discard-npages-0", buf, n, 16 + 8 + 4, 0);
	put_mut("postcopy", "discard-cross-chunk", buf, n, 16 + 8 + 8 + 4, 12);
	put_mut("postcopy", "discard-overlap", buf, n, 16 + 8 + 8, 1);
	put_mut("postcopy", "discard-out-of-block", buf, n, 16 + 8 + 16, 60);
	put_mut("postcopy", "discard-body-len", buf, n, 8, (uint8_t)(buf[8] + 8));
	const tm_discard_range r1[] = { { 1, 1 }, { 3, 1 } };
	n = tm_discard_encode(buf, 1, 1, r1, G_N_ELEMENTS(r1));
	put("postcopy", "discard-valid-ram1", buf, n);

	n = tm_postcopy_encode(buf, 0, 68);
	put("postcopy", "postcopy-valid", buf, n);
	put_mut("postcopy", "postcopy-too-many", buf, n, 16, 69);
	put_mut("postcopy", "postcopy-body-len", buf, n, 8, 9);

	/* PAGE_REQ: seq 0 expects request 1 with nothing outstanding. */
	n = tm_page_req_encode(buf, 0, &(tm_page_req){ 1, 0, 48, 16 });
	put("postcopy", "page-req-valid", buf, n);
	put_mut("postcopy", "page-req-id", buf, n, 16, 2);
	put_mut("postcopy", "page-req-outstanding-255", buf, n, 14, 0xff); /* seq 0xff0000 */
	put_mut("postcopy", "page-req-flood", buf, n, 15, 1); /* seq 1 << 24: 256 outstanding */
	put_mut("postcopy", "page-req-block", buf, n, 16 + 8, 2);
	put_mut("postcopy", "page-req-count-0", buf, n, 16 + 16, 0);
	put_mut("postcopy", "page-req-count-17", buf, n, 16 + 16, 17);
	put_mut("postcopy", "page-req-page", buf, n, 16 + 12, 49);
	put_mut("postcopy", "page-req-reserved", buf, n, 16 + 23, 1);
	n = tm_page_req_encode(buf, 0, &(tm_page_req){ 1, 1, 3, 1 });
	put("postcopy", "page-req-valid-ram1", buf, n);
	put_mut("postcopy", "page-req-ram1-count-2", buf, n, 16 + 16, 2);

	/* URGENT: request 6 is 4 pages of ram0, request 7 one page of ram1. */
	g_autofree uint8_t *u = urgent_msg(6, &n);
	put("postcopy", "urgent-valid", u, n);
	put_mut("postcopy", "urgent-not-outstanding", u, n, 16, 0);
	put_mut("postcopy", "urgent-wrong-block", u, n, 16 + 8, 1);
	put_mut("postcopy", "urgent-page-order", u, n, 16 + 8 + 16 + 8, 0x3f);
	put_mut("postcopy", "urgent-page-count", u, n, 16 + 8 + 4, 3);
	put_mut("postcopy", "urgent-body-len", u, n, 8, (uint8_t)(u[8] + 1));
	put("postcopy", "urgent-truncated", u, n - 1);
	g_autofree uint8_t *u1 = urgent_msg(7, &n);
	put("postcopy", "urgent-valid-ram1", u1, n);

	/* REQ_END: seq is the requests read. */
	n = tm_req_end_encode(buf, 300, 300);
	put("postcopy", "req-end-valid", buf, n);
	put_mut("postcopy", "req-end-count", buf, n, 16, 0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s OUT-DIR\n", argv[0]);
		return 2;
	}
	out_root = argv[1];
	gen_frame();
	gen_hello();
	gen_data();
	gen_state();
	gen_decompress();
	gen_zdata();
	gen_delta_wire();
	gen_delta();
	gen_postcopy();
	return 0;
}
