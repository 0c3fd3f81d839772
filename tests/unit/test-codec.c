/* SPDX-License-Identifier: MIT */
/*
 * Wire codec tests, page data: DATA round trips of every page kind and page size, the
 * receiver's plan, every class of malformed DATA rejected with its errno and a message naming
 * the field, tag packing and zero detection (docs/wire-format.md). Protocol 1 here; protocol 2
 * in test-codec-v2.c (shared helpers: codec-test.h). The frame and the control messages:
 * test-codec-frame.c; HELLO: test-codec-hello.c.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib.h>

#include "codec/codec.h"
#include "common/stream-copy.h"
#include "codec-test.h"
#include "tagmig/error.h"
#include "tagmig/session.h"

/* ---- helpers ---- */

static uint8_t *flatten(const struct iovec *iov, unsigned n, size_t expect_len)
{
	uint8_t *buf = g_malloc(expect_len ? expect_len : 1);
	size_t off = 0;

	for (unsigned i = 0; i < n; i++) {
		g_assert_cmpuint(off + iov[i].iov_len, <=, expect_len);
		memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	g_assert_cmpuint(off, ==, expect_len);
	return buf;
}

typedef struct rx_packet {
	tm_frame frame;
	tm_data_hdr hdr;
	tm_page_entry entries[TM_PACKET_SIZE_MAX / 4096];
	const uint8_t *data; /* data area inside the message */
	uint8_t tags[TM_PACKET_SIZE_MAX / TM_TAG_GRANULE];
} rx_packet;

/*
 * What a receiver does with a DATA message of len bytes on channel: frame, data header, entries,
 * tags. Every decoder gets only the bytes that are there. The data area is read by the transport
 * straight into RAM, so only the transport can notice it is short: that check is ours here.
 */
static int receive_packet(const tm_hello *s, unsigned channel, const uint8_t *buf, size_t len,
			  rx_packet *rx, GError **error)
{
	int r = tm_frame_decode(buf, len, TM_WIRE_VERSION_1, s->packet_size, &rx->frame, error);
	if (r < 0)
		return r;
	g_assert_cmpuint(rx->frame.type, ==, TM_MSG_DATA);

	const uint8_t *body = buf + TM_FRAME_HDR_LEN;
	size_t avail = len - TM_FRAME_HDR_LEN;
	r = tm_data_hdr_decode(body, avail, s, &rx->hdr, error);
	if (r < 0)
		return r;
	r = tm_data_entries_decode(&rx->hdr, body + TM_DATA_HDR_LEN, avail - TM_DATA_HDR_LEN, s,
				   channel, rx->frame.body_len, rx->entries, error);
	if (r < 0)
		return r;

	size_t data_off = TM_DATA_HDR_LEN + (size_t)TM_PAGE_ENTRY_LEN * rx->hdr.page_count;
	size_t tag_off = data_off + rx->hdr.data_len;
	size_t tag_avail = avail > tag_off ? MIN(avail - tag_off, rx->hdr.tag_len) : 0;
	uint32_t page_size = s->blocks[rx->hdr.block].page_size;

	r = tm_data_tags_expand(&rx->hdr, rx->entries, page_size, body + tag_off, tag_avail,
				rx->tags, error);
	if (r < 0)
		return r;
	if (avail < rx->frame.body_len) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA data area truncated (transport)");
		return -EBADMSG;
	}
	rx->data = body + data_off;
	return 0;
}

/* ---- DATA round trips ---- */

typedef struct page_case {
	uint32_t page;
	enum { D_RANDOM, D_ZERO } data;
	enum { T_NONE, T_ZERO, T_UNIFORM, T_PACKED } tags;
	uint8_t uniform;
	tm_page_kind kind;
	tm_tag_enc enc;
} page_case;

/*
 * Pages 0-2 adjacent in RAM (one iovec), 3-5 zero, 6-7 adjacent again, 8 zero, 9 and 12 alone.
 * Every kind with every allowed tag encoding, and tags == NULL.
 */
static const page_case page_cases[] = {
	{ 0, D_RANDOM, T_ZERO, 0, TM_PAGE_NORMAL, TM_TAGS_ZERO },
	{ 1, D_RANDOM, T_UNIFORM, 5, TM_PAGE_NORMAL, TM_TAGS_UNIFORM },
	{ 2, D_RANDOM, T_PACKED, 0, TM_PAGE_NORMAL, TM_TAGS_PACKED },
	{ 3, D_ZERO, T_ZERO, 0, TM_PAGE_ZERO, TM_TAGS_ZERO },
	{ 4, D_ZERO, T_UNIFORM, 0xa, TM_PAGE_ZERO_TAGGED, TM_TAGS_UNIFORM },
	{ 5, D_ZERO, T_PACKED, 0, TM_PAGE_ZERO_TAGGED, TM_TAGS_PACKED },
	{ 6, D_RANDOM, T_NONE, 0, TM_PAGE_NORMAL, TM_TAGS_ZERO },
	{ 7, D_RANDOM, T_PACKED, 0, TM_PAGE_NORMAL, TM_TAGS_PACKED },
	{ 8, D_ZERO, T_NONE, 0, TM_PAGE_ZERO, TM_TAGS_ZERO },
	{ 9, D_RANDOM, T_UNIFORM, 0xf, TM_PAGE_NORMAL, TM_TAGS_UNIFORM },
	{ 12, D_RANDOM, T_PACKED, 0, TM_PAGE_NORMAL, TM_TAGS_PACKED },
};

static void round_trip_page_size(uint32_t ps, bool with_tags)
{
	const uint32_t packet_size = 1u << 20, npages = 32, granules = ps / TM_TAG_GRANULE;
	/* "boot" takes chunk 0, so the first chunk of "ram" is global chunk 1: channel 1. */
	const blk_spec blocks[] = {
		{ "boot", ps, ps, 0 },
		{ "ram", (uint64_t)npages * ps, ps, 1ull << 32 },
	};
	tm_hello s;
	GError *err = NULL;
	g_autoptr(GRand) rnd = g_rand_new_with_seed(ps);

	make_session(&s, with_tags ? TM_FEATURE_TAGS_MTE4 : 0, 2, packet_size, packet_size, blocks, 2);
	g_assert_cmpuint(tm_channel_of(s.blocks[1].chunk_base, 0, s.chunk_size, 2), ==, 1);

	g_autofree uint8_t *ram = g_malloc0((size_t)npages * ps);
	g_autofree uint8_t *ram_tags = g_malloc0((size_t)npages * granules);
	for (unsigned i = 0; i < G_N_ELEMENTS(page_cases); i++) {
		const page_case *c = &page_cases[i];
		uint8_t *d = ram + (size_t)c->page * ps, *t = ram_tags + (size_t)c->page * granules;

		if (c->data == D_RANDOM) {
			for (uint32_t j = 0; j < ps; j++)
				d[j] = (uint8_t)g_rand_int(rnd);
			d[0] |= 1; /* never all zero */
		}
		switch (c->tags) {
		case T_UNIFORM:
			memset(t, c->uniform, granules);
			break;
		case T_PACKED:
		case T_NONE: /* tags in the store that the sender does not pass must not matter */
			for (uint32_t j = 0; j < granules; j++)
				t[j] = (uint8_t)g_rand_int_range(rnd, 0, 16);
			t[0] = 1;
			t[1] = 2;
			break;
		default:
			break;
		}
	}

	tm_packet pkt;
	tm_packet_init(&pkt, packet_size);
	tm_packet_begin(&pkt, 1, ps, packet_size);
	g_assert_cmpuint(pkt.max_pages, ==, packet_size / ps);

	uint32_t want_data = 0, want_tags = 0;
	for (unsigned i = 0; i < G_N_ELEMENTS(page_cases); i++) {
		const page_case *c = &page_cases[i];
		const uint8_t *d = ram + (size_t)c->page * ps;
		const uint8_t *t = ram_tags + (size_t)c->page * granules;
		bool no_tags = !with_tags || c->tags == T_NONE;
		tm_page_kind want_kind = c->kind;
		tm_tag_enc want_enc = no_tags ? TM_TAGS_ZERO : c->enc;
		tm_tag_enc enc = 99;

		if (no_tags && want_kind == TM_PAGE_ZERO_TAGGED)
			want_kind = TM_PAGE_ZERO;
		g_assert_false(tm_packet_full(&pkt));
		tm_page_kind kind = tm_packet_add(&pkt, c->page, d, tm_buffer_is_zero(d, ps),
						  no_tags ? NULL : t, &enc);
		g_assert_cmpint(kind, ==, want_kind);
		g_assert_cmpint(enc, ==, want_enc);
		if (kind == TM_PAGE_NORMAL)
			want_data += ps;
		want_tags += tm_tag_payload_len(enc, ps);
	}
	g_assert_cmpuint(pkt.data_len, ==, want_data);
	g_assert_cmpuint(pkt.tag_len, ==, want_tags);

	size_t wire_len = 0;
	unsigned iovcnt = tm_packet_finish(&pkt, 7, &wire_len);
	/* header + runs {0-2} {6-7} {9} {12} + tags */
	g_assert_cmpuint(iovcnt, ==, 5 + (want_tags ? 1 : 0));
	g_assert_cmpuint(pkt.iov[1].iov_len, ==, 3 * ps);
	g_assert_true(pkt.iov[1].iov_base == ram);
	g_assert_cmpuint(pkt.iov[2].iov_len, ==, 2 * ps);
	g_assert_cmpuint(wire_len, ==, TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN +
					       TM_PAGE_ENTRY_LEN * G_N_ELEMENTS(page_cases) +
					       want_data + want_tags);
	/* Finishing twice gives the same message. */
	size_t wire_len2;
	g_assert_cmpuint(tm_packet_finish(&pkt, 7, &wire_len2), ==, iovcnt);
	g_assert_cmpuint(wire_len2, ==, wire_len);

	g_autofree uint8_t *msg = flatten(pkt.iov, iovcnt, wire_len);
	g_autofree rx_packet *rx = g_new0(rx_packet, 1);

	check_ok(receive_packet(&s, 1, msg, wire_len, rx, &err), &err);
	g_assert_cmpuint(rx->frame.seq, ==, 7);
	g_assert_cmpuint(rx->frame.body_len, ==, wire_len - TM_FRAME_HDR_LEN);
	g_assert_cmpuint(rx->hdr.block, ==, 1);
	g_assert_cmpuint(rx->hdr.page_count, ==, G_N_ELEMENTS(page_cases));

	/* Apply to a fresh RAM and compare data and tags bit for bit. */
	g_autofree uint8_t *zeros = g_malloc0(granules);
	const uint8_t *data = rx->data;
	for (unsigned i = 0; i < rx->hdr.page_count; i++) {
		const page_case *c = &page_cases[i];
		const tm_page_entry *e = &rx->entries[i];
		const uint8_t *src = ram + (size_t)c->page * ps;
		const uint8_t *src_tags = ram_tags + (size_t)c->page * granules;
		bool no_tags = !with_tags || c->tags == T_NONE;

		g_assert_cmpuint(e->page, ==, c->page);
		if (e->kind == TM_PAGE_NORMAL) {
			g_assert_cmpmem(data, ps, src, ps);
			data += ps;
		} else {
			g_assert_true(tm_buffer_is_zero(src, ps));
		}
		g_assert_cmpmem(rx->tags + (size_t)i * granules, granules,
				no_tags ? zeros : src_tags, granules);
	}
	g_assert_true(data == rx->data + rx->hdr.data_len);

	/* The packet also decodes on no other channel. */
	check_err(receive_packet(&s, 0, msg, wire_len, rx, &err), &err, EPROTO,
		  "arrived on channel 0, belongs to channel 1");

	/* A full packet. */
	tm_packet_begin(&pkt, 1, ps, packet_size);
	for (uint32_t p = 0; p < pkt.max_pages; p++)
		tm_packet_add(&pkt, p, ram + (size_t)(p % npages) * ps, false, NULL, NULL);
	g_assert_true(tm_packet_full(&pkt));
	tm_packet_fini(&pkt);
	tm_packet_fini(NULL);
	tm_hello_clear(&s);
}

static void test_data_round_trip(gconstpointer arg)
{
	round_trip_page_size(GPOINTER_TO_UINT(arg), true);
	round_trip_page_size(GPOINTER_TO_UINT(arg), false);
}

/* ---- DATA malformed ---- */

/* Session: 2 channels, 64 KiB packets and chunks; pc.ram 256 x 4 KiB (16 chunks), hi 4 x 64 KiB. */
static void make_data_session(tm_hello *s, uint32_t features)
{
	static const blk_spec blocks[] = {
		{ "pc.ram", 1u << 20, 4096, 0 },
		{ "hi", 256 * 1024, 65536, 1u << 20 },
	};
	make_session(s, features, 2, 65536, 65536, blocks, 2);
}

/*
 * A valid packet for block 0 on channel 0: page 0 NORMAL packed, 1 ZERO, 2 ZERO_TAGGED uniform 3,
 * 3 NORMAL uniform 7. Offsets: entries at 32, data at 64, tags at 64 + 8192 (128 + 1 + 1 bytes).
 */
#define E(i) (32u + 8u * (i))
#define TAGS_OFF (64u + 8192u)

static uint8_t *make_data_packet(bool tags, size_t *ret_len)
{
	static uint8_t ram[4][4096];
	static uint8_t ram_tags[4][256];
	tm_packet pkt;

	memset(ram, 0, sizeof(ram));
	memset(ram[0], 0x11, 4096);
	memset(ram[3], 0x33, 4096);
	for (unsigned i = 0; i < 256; i++)
		ram_tags[0][i] = (uint8_t)(i & 0xf);
	memset(ram_tags[1], 0, 256);
	memset(ram_tags[2], 3, 256);
	memset(ram_tags[3], 7, 256);

	tm_packet_init(&pkt, 65536);
	tm_packet_begin(&pkt, 0, 4096, 65536);
	for (unsigned i = 0; i < 4; i++)
		tm_packet_add(&pkt, i, ram[i], tm_buffer_is_zero(ram[i], 4096),
			      tags ? ram_tags[i] : NULL, NULL);
	unsigned n = tm_packet_finish(&pkt, 0, ret_len);
	uint8_t *msg = flatten(pkt.iov, n, *ret_len);
	tm_packet_fini(&pkt);
	return msg;
}

/*
 * Receives a DATA frame's DATA header and entries into plan as the session's channel does (they
 * arrive in separate receives), plans the entries on channel 0 into ram, and returns where the
 * payload starts in msg. page_count: what the header must announce.
 */
static const uint8_t *plan_headers(tm_recv_plan *plan, const tm_hello *s, const uint8_t *msg,
				   size_t len, uint32_t page_count, uint8_t *ram)
{
	g_autoptr(GError) err = NULL;
	const uint8_t *in = msg + TM_FRAME_HDR_LEN;
	int n = tm_recv_plan_begin(plan, s, (uint32_t)(len - TM_FRAME_HDR_LEN), &err);
	g_assert_no_error(err);
	g_assert_cmpint(n, ==, TM_DATA_HDR_LEN);
	memcpy(plan->head, in, (size_t)n);
	in += n;
	n = tm_recv_plan_header(plan, &err);
	g_assert_no_error(err);
	g_assert_cmpint(n, ==, (int)(page_count * TM_PAGE_ENTRY_LEN));
	memcpy(plan->head + TM_DATA_HDR_LEN, in, (size_t)n);
	in += n;
	check_ok(tm_recv_plan_entries(plan, 0, ram, &err), &err);
	return in;
}

/*
 * The receiver's plan of the same packet: header, entries, then the payload straight into the
 * destination RAM through the plan's iovecs (what the session's channel does), then the tags.
 */
static void test_data_recv_plan(void)
{
	g_autoptr(GError) err = NULL;
	tm_hello s;
	tm_recv_plan plan;
	size_t len;

	make_data_session(&s, TM_FEATURE_TAGS_MTE4);
	g_autofree uint8_t *msg = make_data_packet(true, &len);
	g_autofree uint8_t *ram = g_malloc0(s.blocks[0].length);
	uint32_t body_len = (uint32_t)(len - TM_FRAME_HDR_LEN);

	tm_recv_plan_init(&plan, s.packet_size);
	const uint8_t *in = plan_headers(&plan, &s, msg, len, 4, ram);
	/*
	 * Pages 0 and 3 carry data, then the tag payload. Page 3's uniform tag byte can only be
	 * checked after the data, so the data waits in the stage (one iovec) until the tags passed.
	 */
	g_assert_cmpuint(plan.stage_run_count, ==, 2);
	g_assert_cmpuint(plan.data_iov_count, ==, 1);
	g_assert_cmpuint(plan.iov_count, ==, 2);
	g_assert_true(plan.iov[0].iov_base == plan.stage && plan.iov[0].iov_len == 8192);
	g_assert_true(plan.iov[1].iov_base == plan.tag_payload && plan.iov[1].iov_len == 130);
	g_assert_cmpuint(plan.payload_len, ==, 8192 + 130);
	for (unsigned i = 0; i < plan.iov_count; i++) {
		memcpy(plan.iov[i].iov_base, in, plan.iov[i].iov_len);
		in += plan.iov[i].iov_len;
	}
	g_assert_true(in == msg + len);
	g_assert_true(tm_buffer_is_zero(ram, s.blocks[0].length)); /* nothing in RAM yet */
	check_ok(tm_recv_plan_tags(&plan, &err), &err);
	tm_recv_plan_commit(&plan);
	g_assert_cmpuint(ram[0], ==, 0x11);
	g_assert_cmpuint(ram[4 * 4096 - 1], ==, 0x33);
	g_assert_true(tm_buffer_is_zero(ram + 4096, 2 * 4096));
	g_assert_cmpuint(plan.tags[17], ==, 1);     /* page 0: packed, granule i has tag i & 0xf */
	g_assert_cmpuint(plan.tags[256 + 5], ==, 0); /* page 1: zero */
	g_assert_cmpuint(plan.tags[512 + 9], ==, 3); /* page 2: uniform 3 */
	g_assert_cmpuint(plan.tags[768], ==, 7);     /* page 3: uniform 7 */
	g_assert_cmpuint(tm_recv_plan_run_end(&plan, 0), ==, 4);

	/* What the plan refuses before anything is received into RAM. */
	check_err(tm_recv_plan_begin(&plan, &s, TM_DATA_HDR_LEN - 1, &err), &err, EBADMSG,
		  "DATA body of 15 bytes is truncated");
	g_assert_cmpint(tm_recv_plan_begin(&plan, &s, TM_DATA_HDR_LEN + TM_PAGE_ENTRY_LEN, &err), ==,
			TM_DATA_HDR_LEN);
	check_err(tm_recv_plan_header(&plan, &err), &err, EBADMSG,
		  "DATA with 4 pages is truncated at 24 bytes");
	g_assert_cmpint(tm_recv_plan_begin(&plan, &s, body_len, &err), ==, TM_DATA_HDR_LEN);
	g_assert_cmpint(tm_recv_plan_header(&plan, &err), ==, 4 * TM_PAGE_ENTRY_LEN);
	check_err(tm_recv_plan_entries(&plan, 1, ram, &err), &err, EPROTO,
		  "arrived on channel 1, belongs to channel 0");
	tm_recv_plan_fini(&plan);
	tm_hello_clear(&s);

	/*
	 * Without tags nothing is left to check after the data, but pages 0 and 3 are short runs:
	 * both into the stage, back to back (one iovec), then into RAM at the commit.
	 */
	make_data_session(&s, 0);
	g_autofree uint8_t *plain = make_data_packet(false, &len);
	memset(ram, 0, s.blocks[0].length);
	tm_recv_plan_init(&plan, s.packet_size);
	in = plan_headers(&plan, &s, plain, len, 4, ram);
	g_assert_cmpuint(plan.stage_run_count, ==, 2); /* pages 0 and 3: not adjacent */
	g_assert_cmpuint(plan.data_iov_count, ==, 1);
	g_assert_true(plan.iov[0].iov_base == plan.stage && plan.iov[0].iov_len == 8192);
	memcpy(plan.stage, in, 8192);
	check_ok(tm_recv_plan_tags(&plan, &err), &err);
	g_assert_true(tm_buffer_is_zero(ram, s.blocks[0].length));
	tm_recv_plan_commit(&plan);
	g_assert_cmpuint(ram[4095], ==, 0x11);
	g_assert_cmpuint(ram[3 * 4096], ==, 0x33);
	g_assert_true(in + 8192 == plain + len);
	g_assert_true(tm_buffer_is_zero(ram + 4096, 2 * 4096));
	tm_recv_plan_fini(&plan);
	tm_hello_clear(&s);
}

/*
 * Which runs go through the stage: short ones (< TM_STAGE_RUN_MAX) do, long ones go straight
 * into guest RAM, in one packet. Pages 0 (1 page), 2-17 (16 pages: 64 KiB), 20-21 (2 pages),
 * 23 a zero page; a session without tags, 256 KiB packets, all of it on channel 0.
 */
static void test_data_recv_stage(void)
{
	static const blk_spec blocks[] = { { "pc.ram", 1u << 20, 4096, 0 } };
	g_autoptr(GError) err = NULL;
	tm_hello s;
	tm_recv_plan plan;
	tm_packet pkt;
	size_t len;

	make_session(&s, 0, 2, 256 * 1024, 1u << 20, blocks, 1);
	g_autofree uint8_t *src = g_malloc0(1u << 20);
	for (size_t i = 0; i < (1u << 20); i++)
		src[i] = (uint8_t)(i / 4096 + 1 + i % 7);
	memset(src + 23 * 4096, 0, 4096);
	static const uint32_t pages[] = { 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
					  20, 21, 23 };
	tm_packet_init(&pkt, s.packet_size);
	tm_packet_begin(&pkt, 0, 4096, s.packet_size);
	for (unsigned i = 0; i < G_N_ELEMENTS(pages); i++) {
		const uint8_t *pg = src + (size_t)pages[i] * 4096;
		tm_packet_add(&pkt, pages[i], pg, tm_buffer_is_zero(pg, 4096), NULL, NULL);
	}
	unsigned n = tm_packet_finish(&pkt, 0, &len);
	g_autofree uint8_t *msg = flatten(pkt.iov, n, len);
	tm_packet_fini(&pkt);

	g_autofree uint8_t *ram = g_malloc0(1u << 20);
	tm_recv_plan_init(&plan, s.packet_size);
	/* The stage is backed at setup: no round pays its faults (guest-buf.h). */
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), stage_pages = (s.packet_size + pg - 1) / pg;
	g_autofree unsigned char *vec = g_malloc(stage_pages + 1);
	uintptr_t stage_lo = (uintptr_t)plan.stage / pg * pg;
	g_assert_cmpint(mincore((void *)stage_lo, (uintptr_t)plan.stage + s.packet_size - stage_lo, vec),
			==, 0);
	for (size_t i = 0; i < ((uintptr_t)plan.stage + s.packet_size - stage_lo + pg - 1) / pg; i++)
		g_assert_cmpuint(vec[i] & 1, ==, 1);
	const uint8_t *in = plan_headers(&plan, &s, msg, len, G_N_ELEMENTS(pages), ram);

	g_assert_cmpuint(plan.stage_run_count, ==, 2);
	g_assert_cmpuint(plan.data_iov_count, ==, 3);
	g_assert_true(plan.iov[0].iov_base == plan.stage && plan.iov[0].iov_len == 4096);
	g_assert_true(plan.iov[1].iov_base == ram + 2 * 4096 && plan.iov[1].iov_len == 65536);
	g_assert_true(plan.iov[2].iov_base == plan.stage + 4096 && plan.iov[2].iov_len == 8192);
	g_assert_true(tm_recv_plan_iov_staged(&plan, 0) && !tm_recv_plan_iov_staged(&plan, 1) &&
		      tm_recv_plan_iov_staged(&plan, 2));
	g_assert_cmpuint(plan.payload_len, ==, 19 * 4096);
	for (unsigned i = 0; i < plan.iov_count; i++) {
		memcpy(plan.iov[i].iov_base, in, plan.iov[i].iov_len);
		in += plan.iov[i].iov_len;
	}
	g_assert_true(in == msg + len);
	/* The long run is in; the short ones wait for the commit. */
	g_assert_cmpmem(ram + 2 * 4096, 65536, src + 2 * 4096, 65536);
	g_assert_true(tm_buffer_is_zero(ram, 4096));
	g_assert_true(tm_buffer_is_zero(ram + 20 * 4096, 2 * 4096));
	check_ok(tm_recv_plan_tags(&plan, &err), &err);
	tm_recv_plan_commit(&plan);
	memset(src + 1 * 4096, 0, 4096); /* pages not in the packet stay as they were: zero */
	memset(src + 18 * 4096, 0, 2 * 4096);
	memset(src + 22 * 4096, 0, 4096);
	g_assert_cmpmem(ram, 24 * 4096, src, 24 * 4096);
	g_assert_true(tm_buffer_is_zero(ram + 24 * 4096, (1u << 20) - 24 * 4096));
	tm_recv_plan_fini(&plan);
	tm_hello_clear(&s);
}

/* The non-temporal copy copies exactly len bytes, aligned or not (memcpy's path). */
static void test_stream_copy(void)
{
	g_autofree uint8_t *src = g_malloc(3 * 4096), *dst = g_malloc(3 * 4096 + 64);
	for (size_t i = 0; i < 3 * 4096; i++)
		src[i] = (uint8_t)(i * 31 + 7);
	static const struct { size_t doff, soff, len; } cases[] = {
		{ 0, 0, 4096 }, { 0, 0, 3 * 4096 }, { 0, 0, 64 }, { 16, 32, 4096 - 64 },
		{ 1, 0, 4096 }, { 0, 3, 100 }, { 0, 0, 4096 - 16 }, { 0, 0, 0 },
	};
	for (unsigned c = 0; c < G_N_ELEMENTS(cases); c++) {
		memset(dst, 0xee, 3 * 4096 + 64);
		tm_stream_copy(dst + cases[c].doff, src + cases[c].soff, cases[c].len);
		tm_stream_copy_fence();
		g_assert_cmpmem(dst + cases[c].doff, cases[c].len, src + cases[c].soff, cases[c].len);
		for (size_t i = 0; i < 3 * 4096 + 64; i++)
			if (i < cases[c].doff || i >= cases[c].doff + cases[c].len)
				g_assert_cmpuint(dst[i], ==, 0xee);
	}
}

typedef struct data_mutation {
	size_t off;
	unsigned width;
	uint64_t value;
	int errnum;
	const char *substr;
} data_mutation;

static const data_mutation data_mutations[] = {
	/* frame */
	{ 0, 1, 'X', EBADMSG, "magic" },
	{ 4, 1, 2, EPROTONOSUPPORT, "version 2" },
	{ 5, 1, 42, EBADMSG, "unknown message type 42" },
	{ 6, 2, 0x8000, EBADMSG, "reserved" },
	{ 8, 4, 65536 + 2048 + 128 + 17, EMSGSIZE, "body_len" },
	{ 8, 4, 16 + 32 + 8192 + 130 + 1, EBADMSG, "body_len 8371, expected 8370" },
	{ 8, 4, 16 + 32 + 8192 + 130 - 1, EBADMSG, "body_len 8369, expected 8370" },
	/* data header */
	{ 16, 4, 2, ERANGE, "DATA: block 2 out of range (2 blocks)" },
	{ 16, 4, UINT32_MAX, ERANGE, "block 4294967295 out of range" },
	{ 20, 4, 0, EBADMSG, "DATA block 0 'pc.ram': page_count 0" },
	{ 20, 4, 17, EMSGSIZE, "page_count 17 over the maximum 16 (packet_size 65536 / page_size 4096)" },
	{ 20, 4, UINT32_MAX, EMSGSIZE, "page_count 4294967295" },
	{ 20, 4, 5, EBADMSG, "DATA entry 4: reserved" }, /* entry 4 overlaps the data: 0x11 bytes */
	{ 20, 4, 3, EBADMSG, "data_len" },
	{ 24, 4, 3 * 4096, EBADMSG, "data_len 12288 but the entries carry 8192" },
	{ 24, 4, 5 * 4096, EBADMSG, "data_len 20480 larger than page_count 4 * page_size 4096" },
	{ 24, 4, 4096, EBADMSG, "data_len 4096 but the entries carry 8192" },
	{ 28, 4, 131, EBADMSG, "tag_len 131 but the entries carry 130" },
	{ 28, 4, 0, EBADMSG, "tag_len 0 but the entries carry 130" },
	{ 28, 4, 4 * 128 + 1, EBADMSG, "tag_len 513 larger than page_count 4 * 128" },
	/* entries */
	{ E(1), 4, 256, ERANGE, "DATA entry 1: page 256 out of range for block 0 'pc.ram' (256 pages)" },
	{ E(3), 4, UINT32_MAX, ERANGE, "DATA entry 3: page 4294967295 out of range" },
	{ E(1), 4, 16, EPROTO, "DATA entry 1: page 16 of block 0 'pc.ram' arrived on channel 0, belongs to channel 1" },
	{ E(3), 4, 32, 0, NULL }, /* chunk 2 is channel 0 again: valid */
	{ E(1), 4, 0, EBADMSG, "DATA block 0 entry 1: page 0 after page 0 (a packet's pages ascend)" },
	{ E(3), 4, 1, EBADMSG, "DATA block 0 entry 3: page 1 after page 2" },
	{ E(2) + 6, 1, 1, EBADMSG, "DATA entry 2: reserved field is 0x0001" },
	{ E(0) + 7, 1, 0x80, EBADMSG, "DATA entry 0: reserved field is 0x8000" },
	{ E(0) + 4, 1, 3, EBADMSG, "DATA entry 0 (page 0): invalid kind 3" },
	{ E(0) + 4, 1, 0xff, EBADMSG, "invalid kind 255" },
	{ E(3) + 5, 1, 3, EBADMSG, "DATA entry 3 (page 3): invalid tag_enc 3" },
	{ E(1) + 5, 1, TM_TAGS_UNIFORM, EBADMSG, "DATA entry 1 (page 1): kind ZERO with tag_enc TAGS_UNIFORM" },
	{ E(1) + 5, 1, TM_TAGS_PACKED, EBADMSG, "kind ZERO with tag_enc TAGS_PACKED" },
	{ E(2) + 5, 1, TM_TAGS_ZERO, EBADMSG, "DATA entry 2 (page 2): kind ZERO_TAGGED with tag_enc TAGS_ZERO" },
	{ E(1) + 4, 1, TM_PAGE_NORMAL, EBADMSG, "data_len 8192 but the entries carry 12288" },
	{ E(3) + 5, 1, TM_TAGS_PACKED, EBADMSG, "tag_len 130 but the entries carry 257" },
	/* tag payload */
	{ TAGS_OFF + 128, 1, 0x13, EBADMSG, "DATA entry 2 (page 2): uniform tag byte 0x13 has the high nibble set" },
	{ TAGS_OFF + 129, 1, 0xf0, EBADMSG, "DATA entry 3 (page 3): uniform tag byte 0xf0" },
};

static void test_data_malformed(void)
{
	tm_hello s;
	size_t len;
	GError *err = NULL;
	g_autofree rx_packet *rx = g_new0(rx_packet, 1);

	make_data_session(&s, TM_FEATURE_TAGS_MTE4);
	g_autofree uint8_t *good = make_data_packet(true, &len);
	g_assert_cmpuint(len, ==, 16 + 16 + 32 + 8192 + 130);
	check_ok(receive_packet(&s, 0, good, len, rx, &err), &err);
	g_assert_cmpuint(rx->tags[256 * 2], ==, 3);
	g_assert_cmpuint(rx->tags[256 * 3 + 255], ==, 7);

	g_autofree uint8_t *buf = g_malloc(len);
	for (unsigned i = 0; i < G_N_ELEMENTS(data_mutations); i++) {
		const data_mutation *m = &data_mutations[i];

		memcpy(buf, good, len);
		put_le(buf + m->off, m->width, m->value);
		int r = receive_packet(&s, 0, buf, len, rx, &err);
		if (!m->substr) {
			check_ok(r, &err);
			continue;
		}
		g_test_message("mutation %u: %s", i, m->substr);
		check_err(r, &err, m->errnum, m->substr);
	}

	/* Every prefix of the packet is rejected cleanly: exact-size copies let ASan see overreads. */
	for (size_t n = 0; n < len; n++) {
		g_autofree uint8_t *prefix = g_memdup2(good, n);
		check_err(receive_packet(&s, 0, prefix, n, rx, &err), &err, EBADMSG, "truncated");
	}

	/* Wrong channel, channel out of range, DATA before the handshake. */
	check_err(receive_packet(&s, 1, good, len, rx, &err), &err, EPROTO,
		  "DATA entry 0: page 0 of block 0 'pc.ram' arrived on channel 1, belongs to channel 0");
	tm_data_hdr hdr;
	check_ok(tm_data_hdr_decode(good + 16, len - 16, &s, &hdr, &err), &err);
	check_err(tm_data_entries_decode(&hdr, good + 32, len - 32, &s, 2, (uint32_t)len - 16,
					 rx->entries, &err),
		  &err, ERANGE, "DATA: channel 2 out of range (2 channels)");
	tm_frame f;
	check_err(tm_frame_decode(good, len, TM_WIRE_VERSION_1, 0, &f, &err), &err, EPROTO, "DATA before the handshake");

	/* A forged header handed to entries_decode is still checked. */
	tm_data_hdr forged = hdr;
	forged.block = 7;
	check_err(tm_data_entries_decode(&forged, good + 32, len - 32, &s, 0, (uint32_t)len - 16,
					 rx->entries, &err),
		  &err, ERANGE, "block 7");
	forged = hdr;
	forged.page_count = 1000;
	check_err(tm_data_entries_decode(&forged, good + 32, len - 32, &s, 0, (uint32_t)len - 16,
					 rx->entries, &err),
		  &err, EMSGSIZE, "page_count 1000");

	/* Tag payload longer than tag_len, and a bad page size. */
	check_ok(tm_data_entries_decode(&hdr, good + 32, len - 32, &s, 0, (uint32_t)len - 16,
					rx->entries, &err),
		 &err);
	g_autofree uint8_t *payload = g_malloc0(hdr.tag_len + 1);
	memcpy(payload, good + TAGS_OFF, hdr.tag_len);
	check_err(tm_data_tags_expand(&hdr, rx->entries, 4096, payload, hdr.tag_len + 1, rx->tags,
				      &err),
		  &err, EBADMSG, "payload of 131 bytes, tag_len is 130");
	check_err(tm_data_tags_expand(&hdr, rx->entries, 100, payload, hdr.tag_len, rx->tags, &err),
		  &err, EINVAL, "page_size 100");
	/* An entry array the decoder never produced: tag_enc checked, and lengths too. */
	tm_page_entry bad_entries[4];
	memcpy(bad_entries, rx->entries, sizeof(bad_entries));
	bad_entries[3].tag_enc = 9;
	check_err(tm_data_tags_expand(&hdr, bad_entries, 4096, payload, hdr.tag_len, rx->tags, &err),
		  &err, EBADMSG, "invalid tag_enc 9");
	bad_entries[3].tag_enc = TM_TAGS_ZERO;
	check_err(tm_data_tags_expand(&hdr, bad_entries, 4096, payload, hdr.tag_len, rx->tags, &err),
		  &err, EBADMSG, "1 bytes of payload left over");
	bad_entries[3].tag_enc = TM_TAGS_PACKED;
	check_err(tm_data_tags_expand(&hdr, bad_entries, 4096, payload, hdr.tag_len, rx->tags, &err),
		  &err, EBADMSG, "DATA entry 3 (page 3): TAGS_PACKED tag payload truncated (1 of 128 bytes)");

	/* Block 1 ("hi", 64 KiB pages): at most 1 page per 64 KiB packet. */
	memcpy(buf, good, len);
	put_le(buf + 16, 4, 1);
	check_err(receive_packet(&s, 0, buf, len, rx, &err), &err, EMSGSIZE,
		  "DATA block 1 'hi': page_count 4 over the maximum 1");
	tm_hello_clear(&s);
}

static void test_data_no_tag_feature(void)
{
	tm_hello s;
	size_t len;
	GError *err = NULL;
	g_autofree rx_packet *rx = g_new0(rx_packet, 1);

	make_data_session(&s, 0);

	/* A packet with tags sent to a session without the feature. */
	g_autofree uint8_t *tagged = make_data_packet(true, &len);
	check_err(receive_packet(&s, 0, tagged, len, rx, &err), &err, EBADMSG,
		  "DATA block 0 'pc.ram': tag_len 130 but the session has no tag feature");

	/* Without tags the packet is valid; then forge tag encodings with tag_len 0. */
	g_autofree uint8_t *plain = make_data_packet(false, &len);
	check_ok(receive_packet(&s, 0, plain, len, rx, &err), &err);
	g_assert_cmpuint(rx->entries[2].kind, ==, TM_PAGE_ZERO);
	for (unsigned i = 0; i < 4 * 256; i++)
		g_assert_cmpuint(rx->tags[i], ==, 0);

	plain[E(0) + 5] = TM_TAGS_UNIFORM;
	check_err(receive_packet(&s, 0, plain, len, rx, &err), &err, EBADMSG,
		  "DATA entry 0 (page 0): tag_enc TAGS_UNIFORM but the session has no tag feature");
	plain[E(0) + 5] = TM_TAGS_ZERO;
	plain[E(2) + 4] = TM_PAGE_ZERO_TAGGED;
	check_err(receive_packet(&s, 0, plain, len, rx, &err), &err, EBADMSG,
		  "DATA entry 2 (page 2): kind ZERO_TAGGED but the session has no tag feature");
	tm_hello_clear(&s);
}

/* ---- tags ---- */

static void test_tags(void)
{
	uint8_t t[4096 / 16], packed[128], back[256], v = 0x55;

	memset(t, 0, sizeof(t));
	g_assert_cmpint(tm_tags_classify(t, sizeof(t), &v), ==, TM_TAGS_ZERO);
	g_assert_cmpuint(v, ==, 0);
	g_assert_cmpint(tm_tags_classify(t, 0, NULL), ==, TM_TAGS_ZERO);
	memset(t, 9, sizeof(t));
	g_assert_cmpint(tm_tags_classify(t, sizeof(t), &v), ==, TM_TAGS_UNIFORM);
	g_assert_cmpuint(v, ==, 9);
	g_assert_cmpint(tm_tags_classify(t, 1, &v), ==, TM_TAGS_UNIFORM);
	for (size_t i = 0; i < sizeof(t); i++) {
		memset(t, 9, sizeof(t));
		t[i] = 4;
		g_assert_cmpint(tm_tags_classify(t, sizeof(t), NULL), ==, TM_TAGS_PACKED);
	}
	/* High-nibble garbage from a store is not sent. */
	memset(t, 0x10, sizeof(t));
	g_assert_cmpint(tm_tags_classify(t, sizeof(t), &v), ==, TM_TAGS_ZERO);
	memset(t, 0xf3, sizeof(t));
	g_assert_cmpint(tm_tags_classify(t, sizeof(t), &v), ==, TM_TAGS_UNIFORM);
	g_assert_cmpuint(v, ==, 3);

	for (size_t i = 0; i < sizeof(t); i++)
		t[i] = (uint8_t)((i * 7 + 3) & 0xf);
	tm_tags_pack(t, sizeof(t), packed);
	g_assert_cmpuint(packed[0], ==, (3 | 10 << 4));
	g_assert_cmpuint(packed[5], ==, (t[10] | t[11] << 4));
	tm_tags_unpack(packed, sizeof(t), back);
	g_assert_cmpmem(back, sizeof(t), t, sizeof(t));

	g_assert_cmpint(tm_tags_find_invalid(t, sizeof(t)), ==, -1);
	g_assert_cmpint(tm_tags_find_invalid(t, 0), ==, -1);
	for (size_t i = 0; i < 37; i++) {
		uint8_t u[37] = { 0 };
		u[i] = 0x10;
		g_assert_cmpint(tm_tags_find_invalid(u, sizeof(u)), ==, (ssize_t)i);
		u[36] = 0x80; /* the first one counts */
		g_assert_cmpint(tm_tags_find_invalid(u, sizeof(u)), ==, (ssize_t)i);
	}
}

static void test_buffer_is_zero(void)
{
	g_autofree uint8_t *page = g_malloc0(4096 + 64);

	g_assert_true(tm_buffer_is_zero(page, 4096));
	for (size_t i = 0; i < 4096; i++) {
		page[i] = 0x80;
		g_assert_false(tm_buffer_is_zero(page, 4096));
		page[i] = 0;
	}
	g_assert_true(tm_buffer_is_zero(page, 4096));

	/* Any length at any alignment, with a non-zero byte just outside that must not count. */
	for (size_t off = 0; off < 8; off++) {
		for (size_t len = 0; len <= 600; len++) {
			uint8_t *p = page + off;
			if (off > 0)
				p[-1] = 1;
			p[len] = 1;
			g_assert_true(tm_buffer_is_zero(p, len));
			for (size_t i = 0; i < len; i++) {
				p[i] = 1;
				g_assert_false(tm_buffer_is_zero(p, len));
				p[i] = 0;
			}
			p[len] = 0;
			if (off > 0)
				p[-1] = 0;
		}
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);

	g_test_add_data_func("/codec/data/round-trip/4k", GUINT_TO_POINTER(4096), test_data_round_trip);
	g_test_add_data_func("/codec/data/round-trip/16k", GUINT_TO_POINTER(16384), test_data_round_trip);
	g_test_add_data_func("/codec/data/round-trip/64k", GUINT_TO_POINTER(65536), test_data_round_trip);
	g_test_add_func("/codec/data/recv-plan", test_data_recv_plan);
	g_test_add_func("/codec/data/recv-stage", test_data_recv_stage);
	g_test_add_func("/codec/stream-copy", test_stream_copy);
	g_test_add_func("/codec/data/malformed", test_data_malformed);
	g_test_add_func("/codec/data/no-tag-feature", test_data_no_tag_feature);
	g_test_add_func("/codec/tags", test_tags);
	g_test_add_func("/codec/buffer-is-zero", test_buffer_is_zero);

	return g_test_run();
}
