/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the postcopy messages (codec/postcopy.c) as a protocol 2 peer meets them: a frame, then
 * DISCARD (data channel seq % 2), POSTCOPY (control), PAGE_REQ (the sender's urgent thread, with
 * the window fuzz_req_window(seq)), URGENT (the receiver's urgent thread: req_id, DATA header,
 * entries, tags, checked against fuzz_urgent_request()) or REQ_END (requests read = seq). What a
 * decoder accepts is then applied to exact-size RAM and tag buffers, as a session would, so any
 * page outside guest RAM trips ASan.
 */
#include <glib.h>

#include "postcopy-fuzz.h"

static tm_hello session;
static uint8_t *ram[2], *ram_tags[2];

static void setup(void)
{
	fuzz_postcopy_session(&session);
	for (unsigned i = 0; i < session.block_count; i++) {
		ram[i] = g_malloc(session.blocks[i].length);
		ram_tags[i] = g_malloc(session.blocks[i].length / TM_TAG_GRANULE);
	}
}

static void discard(const tm_frame *f, const uint8_t *body)
{
	g_autoptr(GError) error = NULL;
	tm_discard_range r[TM_MAX_DISCARD_RANGES];
	uint32_t block, count;
	unsigned channel = f->seq % session.channel_count;

	if (tm_discard_decode(body, f->body_len, &session, channel, &block, r, &count, &error) < 0) {
		g_assert_nonnull(error);
		return;
	}
	const tm_wire_block *b = &session.blocks[block];
	for (uint32_t i = 0; i < count; i++) {
		uint64_t off = (uint64_t)r[i].first_page * b->page_size;
		uint64_t len = (uint64_t)r[i].npages * b->page_size;

		g_assert_cmpuint(tm_channel_of(b->chunk_base, off, session.chunk_size,
					       session.channel_count), ==, channel);
		g_assert_cmpuint(off / session.chunk_size, ==, (off + len - 1) / session.chunk_size);
		g_assert_true(i == 0 || r[i].first_page >= r[i - 1].first_page + r[i - 1].npages);
		/* What MADV_DONTNEED would do to the range. */
		memset(ram[block] + off, 0, len);
		memset(ram_tags[block] + off / TM_TAG_GRANULE, 0, len / TM_TAG_GRANULE);
	}
}

static void page_req(const tm_frame *f, const uint8_t *body)
{
	g_autoptr(GError) error = NULL;
	tm_req_window w = fuzz_req_window(f->seq);
	tm_page_req q;

	if (tm_page_req_decode(body, f->body_len, &session, &w, &q, &error) < 0) {
		g_assert_nonnull(error);
		return;
	}
	g_assert_cmpuint(q.req_id, ==, w.next_id);
	g_assert_cmpuint(w.outstanding, <, w.max_outstanding);
	g_assert_cmpuint(q.count, <=, tm_page_req_max_pages(&session, q.block));
	/* The sender reads the pages it answers with: data and tags. */
	const tm_wire_block *b = &session.blocks[q.block];
	uint64_t off = (uint64_t)q.page * b->page_size, len = (uint64_t)q.count * b->page_size;
	volatile uint8_t sink = ram[q.block][off] ^ ram[q.block][off + len - 1] ^
				ram_tags[q.block][(off + len) / TM_TAG_GRANULE - 1];
	(void)sink;
}

static void urgent(const tm_frame *f, const uint8_t *body)
{
	static tm_page_entry entries[TM_MAX_REQ_PAGES];
	static uint8_t tags[TM_MAX_REQ_PAGES * 65536 / TM_TAG_GRANULE];
	g_autoptr(GError) error = NULL;
	tm_data_hdr hdr;
	tm_page_req req;
	uint64_t id;

	if (tm_urgent_id_decode(body, f->body_len, f->body_len, &id, &error) < 0)
		return;
	const uint8_t *d = body + TM_URGENT_ID_LEN;
	uint32_t dlen = f->body_len - TM_URGENT_ID_LEN;
	if (tm_data_hdr_decode(d, dlen, &session, &hdr, &error) < 0)
		return;
	/* The header alone first: entries then fit TM_MAX_REQ_PAGES. */
	bool have = fuzz_urgent_request(id, &req);
	if (tm_urgent_check(&session, id, have ? &req : NULL, &hdr, NULL, &error) < 0)
		return;
	g_assert_cmpuint(hdr.page_count, <=, TM_MAX_REQ_PAGES);
	if (tm_data_entries_decode(&hdr, d + TM_DATA_HDR_LEN, dlen - TM_DATA_HDR_LEN, &session,
				   TM_CHANNEL_ANY, dlen, entries, &error) < 0)
		return;
	if (tm_urgent_check(&session, id, have ? &req : NULL, &hdr, entries, &error) < 0) {
		g_assert_nonnull(error);
		return;
	}
	g_assert_true(have);
	g_assert_cmpuint(hdr.block, ==, req.block);
	g_assert_cmpuint(hdr.page_count, ==, req.count);

	const tm_wire_block *b = &session.blocks[hdr.block];
	size_t data_off = TM_DATA_HDR_LEN + (size_t)TM_PAGE_ENTRY_LEN * hdr.page_count;
	size_t tag_off = data_off + hdr.data_len, granules = b->page_size / TM_TAG_GRANULE;
	if (tm_data_tags_expand(&hdr, entries, b->page_size, d + tag_off, hdr.tag_len, tags,
				&error) < 0)
		return;
	/* Place as the urgent thread would: the bounce buffer is the body itself. */
	const uint8_t *src = d + data_off;
	for (uint32_t i = 0; i < hdr.page_count; i++) {
		uint8_t *dst = ram[hdr.block] + (size_t)entries[i].page * b->page_size;

		g_assert_cmpuint(entries[i].page, ==, (uint64_t)req.page + i);
		if (entries[i].kind == TM_PAGE_NORMAL) {
			memcpy(dst, src, b->page_size);
			src += b->page_size;
		} else {
			memset(dst, 0, b->page_size);
		}
		memcpy(ram_tags[hdr.block] + (size_t)entries[i].page * granules,
		       tags + (size_t)i * granules, granules);
	}
	g_assert_true(src == d + tag_off);
}

static void small(const tm_frame *f, const uint8_t *body)
{
	g_autoptr(GError) error = NULL;
	uint64_t v;

	if (f->type == TM_MSG_POSTCOPY) {
		if (tm_postcopy_decode(body, f->body_len, &session, true, &v, &error) == 0)
			g_assert_cmpuint(v, <=, 64 + 4);
		else
			g_assert_nonnull(error);
		g_clear_error(&error);
		g_assert_cmpint(tm_postcopy_decode(body, f->body_len, &session, false, &v, &error), ==,
				-EPROTO);
	} else if (tm_req_end_decode(body, f->body_len, f->seq, &v, &error) == 0) {
		g_assert_cmpuint(v, ==, f->seq);
	} else {
		g_assert_nonnull(error);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;
	tm_frame f;

	if (!session.blocks)
		setup();
	if (tm_frame_decode(data, size, TM_WIRE_VERSION_2, session.packet_size, &f, &error) < 0)
		return 0;
	/* The transport reads exactly body_len bytes; a short input never reaches a decoder. */
	if (size - TM_FRAME_HDR_LEN < f.body_len)
		return 0;
	/* An exact-size copy, so ASan catches a decoder reading past body_len. */
	g_autofree uint8_t *body = g_memdup2(data + TM_FRAME_HDR_LEN, f.body_len);

	switch (f.type) {
	case TM_MSG_DISCARD:
		discard(&f, body);
		break;
	case TM_MSG_PAGE_REQ:
		page_req(&f, body);
		break;
	case TM_MSG_URGENT:
		urgent(&f, body);
		break;
	case TM_MSG_POSTCOPY:
	case TM_MSG_REQ_END:
		small(&f, body);
		break;
	default:
		break;
	}
	return 0;
}
