/* SPDX-License-Identifier: MIT */
/*
 * The postcopy messages of protocol 2 (codec/postcopy.c): for every rule of docs/wire-format.md's
 * "Postcopy messages" one message that passes and one that breaks it, with errno and message.
 */
#include "codec-test.h"

/*
 * Two channels, 64 KiB chunks (16 pages of 4 KiB), 64 KiB packets: "pc.ram" 64 pages (chunks
 * 0-3: channels 0 1 0 1), "vram" 4 pages of 64 KiB (chunks 4-7: channels 0 1 0 1).
 */
static const blk_spec pc_blocks[] = {
	{ "pc.ram", 64 * 4096, 4096, 0 },
	{ "vram", 4 * 65536, 65536, 1ull << 32 },
};

static void make_pc_session(tm_hello *h)
{
	make_session(h, TM_FEATURE_TAGS_MTE4, 2, 65536, 65536, pc_blocks, G_N_ELEMENTS(pc_blocks));
	h->version = TM_WIRE_VERSION_2;
	h->features |= TM_FEATURE_POSTCOPY;
}

/* Decodes the frame of a postcopy message and returns its body (in msg). */
static const uint8_t *frame_body(const uint8_t *msg, size_t n, uint8_t type)
{
	g_autoptr(GError) err = NULL;
	tm_frame f;

	check_ok(tm_frame_decode(msg, n, TM_WIRE_VERSION_2, 65536, &f, &err), &err);
	g_assert_cmpuint(f.type, ==, type);
	g_assert_cmpuint(f.body_len, ==, n - TM_FRAME_HDR_LEN);
	return msg + TM_FRAME_HDR_LEN;
}

static int discard(const tm_hello *s, unsigned channel, uint32_t block,
		   const tm_discard_range *r, uint32_t count, GError **err)
{
	uint8_t msg[TM_FRAME_HDR_LEN + TM_DISCARD_HDR_LEN + 8 * TM_MAX_DISCARD_RANGES];
	tm_discard_range out[TM_MAX_DISCARD_RANGES];
	uint32_t ob = 99, oc = 99;
	size_t n = tm_discard_encode(msg, 7, block, r, count);
	const uint8_t *body = frame_body(msg, n, TM_MSG_DISCARD);

	int ret = tm_discard_decode(body, n - TM_FRAME_HDR_LEN, s, channel, &ob, out, &oc, err);
	if (ret == 0) {
		g_assert_cmpuint(ob, ==, block);
		g_assert_cmpuint(oc, ==, count);
		g_assert_cmpmem(out, sizeof(*out) * count, r, sizeof(*r) * count);
	} else {
		g_assert_cmpuint(ob, ==, 99); /* untouched on failure */
		g_assert_cmpuint(oc, ==, 99);
	}
	return ret;
}

static void test_discard(void)
{
	g_autoptr(GError) err = NULL;
	tm_hello s;

	make_pc_session(&s);
	/* Channel 0 holds chunks 0 and 2 of pc.ram: pages 0-15 and 32-47. */
	const tm_discard_range ok[] = { { 0, 1 }, { 3, 13 }, { 32, 16 } };
	check_ok(discard(&s, 0, 0, ok, 3, &err), &err);
	const tm_discard_range ok1[] = { { 16, 16 } };
	check_ok(discard(&s, 1, 0, ok1, 1, &err), &err);
	/* vram: page 1 is chunk 5, channel 1. */
	const tm_discard_range okv[] = { { 1, 1 } };
	check_ok(discard(&s, 1, 1, okv, 1, &err), &err);

	/* block */
	check_err(discard(&s, 0, 2, ok, 1, &err), &err, ERANGE, "block 2 out of range (2 blocks)");
	/* npages >= 1 */
	const tm_discard_range empty[] = { { 4, 0 } };
	check_err(discard(&s, 0, 0, empty, 1, &err), &err, EBADMSG, "range 0: block 0 'pc.ram' page 4: npages 0");
	/* inside the block */
	const tm_discard_range past[] = { { 60, 5 } };
	check_err(discard(&s, 1, 0, past, 1, &err), &err, ERANGE, "pages 60+5 out of range (64 pages)");
	const tm_discard_range wrap[] = { { 0xffffffffu, 2 } };
	check_err(discard(&s, 1, 0, wrap, 1, &err), &err, ERANGE, "out of range");
	/* one chunk */
	const tm_discard_range cross[] = { { 8, 16 } };
	check_err(discard(&s, 0, 0, cross, 1, &err), &err, EPROTO,
		  "DISCARD range 0: block 0 'pc.ram' pages 8+16 cross into chunk 1 (channel 1)");
	/* this channel's chunk */
	check_err(discard(&s, 1, 0, ok, 1, &err), &err, EPROTO,
		  "pages 0+1 (offset 0x0) arrived on channel 1, belong to channel 0");
	/* ascending and disjoint */
	const tm_discard_range overlap[] = { { 0, 4 }, { 3, 1 } };
	check_err(discard(&s, 0, 0, overlap, 2, &err), &err, EBADMSG, "ascending and disjoint");
	const tm_discard_range descending[] = { { 32, 1 }, { 0, 1 } };
	check_err(discard(&s, 0, 0, descending, 2, &err), &err, EBADMSG, "range 1");
	const tm_discard_range adjacent[] = { { 0, 4 }, { 4, 1 } };
	check_ok(discard(&s, 0, 0, adjacent, 2, &err), &err);

	/* count and body length, on a hand-made body */
	uint8_t b[TM_DISCARD_HDR_LEN + 8 * (TM_MAX_DISCARD_RANGES + 1)] = { 0 };
	tm_discard_range out[TM_MAX_DISCARD_RANGES];
	uint32_t ob, oc;
	tm_put32(b + 4, 0);
	check_err(tm_discard_decode(b, 8, &s, 0, &ob, out, &oc, &err), &err, EBADMSG, "count 0");
	tm_put32(b + 4, TM_MAX_DISCARD_RANGES + 1);
	check_err(tm_discard_decode(b, sizeof(b), &s, 0, &ob, out, &oc, &err), &err, EMSGSIZE,
		  "count 513 over the maximum 512");
	tm_put32(b + 4, 1);
	tm_put32(b + 12, 1);
	check_ok(tm_discard_decode(b, 16, &s, 0, &ob, out, &oc, &err), &err);
	check_err(tm_discard_decode(b, 15, &s, 0, &ob, out, &oc, &err), &err, EBADMSG, "truncated");
	check_err(tm_discard_decode(b, 24, &s, 0, &ob, out, &oc, &err), &err, EBADMSG,
		  "body of 24 bytes, count 1 needs 16");
	check_err(tm_discard_decode(b, 7, &s, 0, &ob, out, &oc, &err), &err, EBADMSG,
		  "DISCARD truncated");
	check_err(tm_discard_decode(b, 16, &s, 2, &ob, out, &oc, &err), &err, ERANGE, "channel 2");
	/* 512 ranges of one page each fit in one message */
	tm_discard_range many[TM_MAX_DISCARD_RANGES];
	tm_hello big;
	const blk_spec bigb[] = { { "big", 2048 * 4096, 4096, 0 } };
	make_session(&big, 0, 1, 65536, 16ull << 20, bigb, 1);
	for (unsigned i = 0; i < TM_MAX_DISCARD_RANGES; i++)
		many[i] = (tm_discard_range){ 2 * i, 1 };
	check_ok(discard(&big, 0, 0, many, TM_MAX_DISCARD_RANGES, &err), &err);
	tm_hello_clear(&big);
	tm_hello_clear(&s);
}

static void test_postcopy(void)
{
	g_autoptr(GError) err = NULL;
	uint8_t msg[TM_FRAME_HDR_LEN + 16];
	uint64_t got = 0;
	tm_hello s;

	make_pc_session(&s);
	/* 64 + 4 pages in the layout */
	size_t n = tm_postcopy_encode(msg, 1, 68);
	const uint8_t *body = frame_body(msg, n, TM_MSG_POSTCOPY);
	check_ok(tm_postcopy_decode(body, 8, &s, true, &got, &err), &err);
	g_assert_cmpuint(got, ==, 68);
	check_err(tm_postcopy_decode(body, 8, &s, false, &got, &err), &err, EPROTO, "not agreed");
	check_err(tm_postcopy_decode(body, 7, &s, true, &got, &err), &err, EBADMSG, "truncated");
	check_err(tm_postcopy_decode(body, 9, &s, true, &got, &err), &err, EBADMSG, "must be 8");
	n = tm_postcopy_encode(msg, 1, 69);
	check_err(tm_postcopy_decode(msg + 16, 8, &s, true, &got, &err), &err, ERANGE,
		  "pages_missing 69 over the 68 pages");
	g_assert_cmpuint(got, ==, 68);
	tm_hello_clear(&s);
}

static int page_req(const tm_hello *s, const tm_req_window *w, const tm_page_req *q,
		    GError **err)
{
	uint8_t msg[TM_FRAME_HDR_LEN + TM_PAGE_REQ_LEN];
	tm_page_req got = { 0 };
	size_t n = tm_page_req_encode(msg, 3, q);
	const uint8_t *body = frame_body(msg, n, TM_MSG_PAGE_REQ);
	int r = tm_page_req_decode(body, TM_PAGE_REQ_LEN, s, w, &got, err);

	if (r == 0) {
		g_assert_cmpuint(got.req_id, ==, q->req_id);
		g_assert_cmpuint(got.block, ==, q->block);
		g_assert_cmpuint(got.page, ==, q->page);
		g_assert_cmpuint(got.count, ==, q->count);
	} else {
		g_assert_cmpuint(got.req_id, ==, 0);
	}
	return r;
}

static void test_page_req(void)
{
	g_autoptr(GError) err = NULL;
	tm_req_window w = { .next_id = 41, .outstanding = 0, .max_outstanding = 256 };
	tm_hello s;

	make_pc_session(&s);
	g_assert_cmpuint(tm_page_req_max_pages(&s, 0), ==, 16);
	g_assert_cmpuint(tm_page_req_max_pages(&s, 1), ==, 1); /* 64 KiB packets, 64 KiB pages */

	check_ok(page_req(&s, &w, &(tm_page_req){ 41, 0, 48, 16 }, &err), &err);
	check_ok(page_req(&s, &w, &(tm_page_req){ 41, 1, 3, 1 }, &err), &err);
	/* req_id in sequence */
	check_err(page_req(&s, &w, &(tm_page_req){ 42, 0, 0, 1 }, &err), &err, EPROTO,
		  "PAGE_REQ 42: out of sequence, expected request 41");
	/* flood */
	w.outstanding = 256;
	check_err(page_req(&s, &w, &(tm_page_req){ 41, 0, 0, 1 }, &err), &err, EPROTO,
		  "request flood: 257 requests unanswered, the receiver agreed to at most 256");
	w.outstanding = 255;
	check_ok(page_req(&s, &w, &(tm_page_req){ 41, 0, 0, 1 }, &err), &err);
	/* block */
	check_err(page_req(&s, &w, &(tm_page_req){ 41, 2, 0, 1 }, &err), &err, ERANGE,
		  "PAGE_REQ 41: block 2 out of range (2 blocks)");
	/* count */
	check_err(page_req(&s, &w, &(tm_page_req){ 41, 0, 0, 0 }, &err), &err, EBADMSG,
		  "count 0 for block 0 'pc.ram' outside 1..16");
	check_err(page_req(&s, &w, &(tm_page_req){ 41, 0, 0, 17 }, &err), &err, EMSGSIZE,
		  "count 17");
	check_err(page_req(&s, &w, &(tm_page_req){ 41, 1, 0, 2 }, &err), &err, EMSGSIZE,
		  "count 2 for block 1 'vram' outside 1..1");
	/* page + count */
	check_err(page_req(&s, &w, &(tm_page_req){ 41, 0, 60, 5 }, &err), &err, ERANGE,
		  "PAGE_REQ 41: page 60+5 out of range for block 0 'pc.ram' (64 pages)");
	check_err(page_req(&s, &w, &(tm_page_req){ 41, 0, 0xffffffffu, 1 }, &err), &err, ERANGE,
		  "out of range");
	/* length and reserved */
	uint8_t msg[TM_FRAME_HDR_LEN + TM_PAGE_REQ_LEN + 1] = { 0 };
	tm_page_req got;
	tm_page_req_encode(msg, 3, &(tm_page_req){ 41, 0, 0, 1 });
	check_ok(tm_page_req_decode(msg + 16, 24, &s, &w, &got, &err), &err);
	check_err(tm_page_req_decode(msg + 16, 23, &s, &w, &got, &err), &err, EBADMSG, "truncated");
	check_err(tm_page_req_decode(msg + 16, 25, &s, &w, &got, &err), &err, EBADMSG, "must be 24");
	msg[16 + 20] = 1;
	check_err(tm_page_req_decode(msg + 16, 24, &s, &w, &got, &err), &err, EBADMSG,
		  "reserved byte at offset 20 is 0x01");
	tm_hello_clear(&s);
}

/* Builds an URGENT for pages [page, page + n) of block of s; returns the message. */
static uint8_t *urgent_msg(const tm_hello *s, uint64_t req_id, uint32_t block, uint32_t page,
			   uint32_t n, size_t *ret_len)
{
	uint32_t ps = s->blocks[block].page_size;
	g_autofree uint8_t *ram = g_malloc((size_t)n * ps);
	g_autofree uint8_t *tags = g_malloc0((size_t)n * ps / TM_TAG_GRANULE);
	uint8_t prefix[TM_FRAME_HDR_LEN + TM_URGENT_ID_LEN];
	tm_packet pkt;
	size_t len;

	for (uint32_t i = 0; i < n; i++) {
		memset(ram + (size_t)i * ps, 0x30 + (int)i, ps);
		memset(tags + (size_t)i * ps / TM_TAG_GRANULE, (int)(i % 16), ps / TM_TAG_GRANULE);
	}
	tm_packet_init(&pkt, s->packet_size);
	pkt.version = TM_WIRE_VERSION_2;
	tm_packet_begin(&pkt, block, ps, s->packet_size);
	for (uint32_t i = 0; i < n; i++)
		tm_packet_add(&pkt, page + i, ram + (size_t)i * ps, false,
			      tags + (size_t)i * ps / TM_TAG_GRANULE, NULL);
	unsigned cnt = tm_urgent_finish(&pkt, 5, req_id, prefix, &len);
	uint8_t *msg = g_malloc(len), *p = msg;
	memcpy(p, prefix, sizeof(prefix));
	p += sizeof(prefix);
	for (unsigned i = 0; i < cnt; i++) {
		memcpy(p, pkt.iov[i].iov_base, pkt.iov[i].iov_len);
		p += pkt.iov[i].iov_len;
	}
	g_assert_true(p == msg + len);
	tm_packet_fini(&pkt);
	*ret_len = len;
	return msg;
}

/* Decodes an URGENT as the urgent thread does and checks it against req. */
static int urgent(const tm_hello *s, const uint8_t *msg, size_t n, const tm_page_req *req,
		  GError **err)
{
	tm_frame f;
	tm_data_hdr hdr;
	tm_page_entry e[TM_MAX_REQ_PAGES];
	uint64_t id;
	int r;

	check_ok(tm_frame_decode(msg, n, TM_WIRE_VERSION_2, s->packet_size, &f, err), err);
	g_assert_cmpuint(f.type, ==, TM_MSG_URGENT);
	const uint8_t *body = msg + TM_FRAME_HDR_LEN;
	size_t len = n - TM_FRAME_HDR_LEN;
	if ((r = tm_urgent_id_decode(body, len, f.body_len, &id, err)) < 0)
		return r;
	body += 8;
	len -= 8;
	if ((r = tm_data_hdr_decode(body, len, s, &hdr, err)) < 0)
		return r;
	if ((r = tm_urgent_check(s, id, req, &hdr, NULL, err)) < 0)
		return r;
	g_assert_cmpuint(hdr.page_count, <=, G_N_ELEMENTS(e));
	if ((r = tm_data_entries_decode(&hdr, body + 16, len - 16, s, TM_CHANNEL_ANY,
					f.body_len - 8, e, err)) < 0)
		return r;
	return tm_urgent_check(s, id, req, &hdr, e, err);
}

static void test_urgent(void)
{
	g_autoptr(GError) err = NULL;
	size_t n;
	tm_hello s;

	make_pc_session(&s);
	/* Pages 14..17 of pc.ram straddle chunks 0 and 1 (channels 0 and 1): no channel check. */
	const tm_page_req req = { 9, 0, 14, 4 };
	g_autofree uint8_t *m = urgent_msg(&s, 9, 0, 14, 4, &n);
	check_ok(urgent(&s, m, n, &req, &err), &err);
	/* body_len covers req_id */
	g_assert_cmpuint(tm_get32(m + 8), ==, n - TM_FRAME_HDR_LEN);

	/* not outstanding */
	check_err(urgent(&s, m, n, NULL, &err), &err, EPROTO,
		  "URGENT for request 9, which is not outstanding");
	const tm_page_req other_id = { 8, 0, 14, 4 };
	check_err(urgent(&s, m, n, &other_id, &err), &err, EPROTO, "not outstanding");
	/* block and count equal the request's */
	const tm_page_req other_block = { 9, 1, 14, 4 };
	check_err(urgent(&s, m, n, &other_block, &err), &err, EPROTO,
		  "URGENT for request 9: block 0, 4 pages; the request was block 1 page 14+4");
	const tm_page_req fewer = { 9, 0, 14, 3 };
	check_err(urgent(&s, m, n, &fewer, &err), &err, EPROTO, "4 pages");
	/* the request's pages in order */
	const tm_page_req shifted = { 9, 0, 13, 4 };
	check_err(urgent(&s, m, n, &shifted, &err), &err, EPROTO,
		  "entry 0 is block 0 'pc.ram' page 14 (offset 0xe000), the request asked for page 13");
	/* the DATA body's own rules still hold (an entry page out of range) */
	g_autofree uint8_t *bad = g_memdup2(m, n);
	tm_put32(bad + 16 + 8 + 16 + 8 * 3, 64);
	check_err(urgent(&s, bad, n, &req, &err), &err, ERANGE, "page 64 out of range");
	/* too short for req_id and a DATA header */
	uint64_t id;
	check_err(tm_urgent_id_decode(m + 16, 8, 23, &id, &err), &err, EBADMSG, "URGENT truncated");
	check_err(tm_urgent_id_decode(m + 16, 7, 40, &id, &err), &err, EBADMSG, "URGENT truncated");
	/* at most 16 pages, whatever the packet size allows */
	tm_hello wide;
	make_session(&wide, TM_FEATURE_TAGS_MTE4, 1, 1u << 20, 1u << 20, pc_blocks, 1);
	wide.version = TM_WIRE_VERSION_2;
	g_autofree uint8_t *m17 = urgent_msg(&wide, 2, 0, 0, 17, &n);
	const tm_page_req req17 = { 2, 0, 0, 17 };
	check_err(urgent(&wide, m17, n, &req17, &err), &err, EMSGSIZE, "17 pages, over the maximum 16");
	g_autofree uint8_t *m16 = urgent_msg(&wide, 2, 0, 0, 16, &n);
	const tm_page_req req16 = { 2, 0, 0, 16 };
	check_ok(urgent(&wide, m16, n, &req16, &err), &err);
	tm_hello_clear(&wide);
	tm_hello_clear(&s);
}

static void test_req_end(void)
{
	g_autoptr(GError) err = NULL;
	uint8_t msg[TM_FRAME_HDR_LEN + 8];
	uint64_t got = 0;

	size_t n = tm_req_end_encode(msg, 4, 300);
	const uint8_t *body = frame_body(msg, n, TM_MSG_REQ_END);
	check_ok(tm_req_end_decode(body, 8, 300, &got, &err), &err);
	g_assert_cmpuint(got, ==, 300);
	check_err(tm_req_end_decode(body, 8, 301, &got, &err), &err, EPROTO,
		  "REQ_END: the receiver sent 300 requests, 301 were read");
	check_err(tm_req_end_decode(body, 4, 300, &got, &err), &err, EBADMSG, "truncated");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/codec/postcopy/discard", test_discard);
	g_test_add_func("/codec/postcopy/postcopy", test_postcopy);
	g_test_add_func("/codec/postcopy/page-req", test_page_req);
	g_test_add_func("/codec/postcopy/urgent", test_urgent);
	g_test_add_func("/codec/postcopy/req-end", test_req_end);
	return g_test_run();
}
