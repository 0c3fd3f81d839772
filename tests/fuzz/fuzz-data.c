/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the receiver's DATA path against a fixed session (fuzz_data_session()): frame, data
 * header, entries, tags, then applies the packet to RAM and tag buffers of exactly the session's
 * size, so anything the decoders let through that would address outside guest RAM trips ASan.
 * The channel the input arrives on is the frame's seq modulo the channel count.
 */
#include <glib.h>

#include "fuzz.h"

static tm_hello session;
static uint8_t *ram[2], *ram_tags[2];

static void setup(void)
{
	fuzz_data_guest(&session, ram, ram_tags);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static tm_page_entry entries[FUZZ_DATA_PACKET_SIZE / 4096];
	static uint8_t tags[FUZZ_DATA_PACKET_SIZE / TM_TAG_GRANULE];
	g_autoptr(GError) error = NULL;
	tm_frame f;
	tm_data_hdr hdr;

	if (!session.blocks)
		setup();

	if (tm_frame_decode(data, size, TM_WIRE_VERSION_1, session.packet_size, &f, &error) < 0)
		return 0;
	if (f.type != TM_MSG_DATA)
		return 0;
	unsigned channel = f.seq % session.channel_count;
	size_t avail = MIN(size - TM_FRAME_HDR_LEN, f.body_len);
	/* Exact-size copy: a decoder reading past what it was given trips ASan. */
	g_autofree uint8_t *body = g_memdup2(data + TM_FRAME_HDR_LEN, avail);

	if (tm_data_hdr_decode(body, avail, &session, &hdr, &error) < 0)
		return 0;
	g_assert_cmpuint(hdr.page_count, <=, G_N_ELEMENTS(entries));
	if (tm_data_entries_decode(&hdr, body + TM_DATA_HDR_LEN, avail - TM_DATA_HDR_LEN, &session,
				   channel, f.body_len, entries, &error) < 0)
		return 0;

	const tm_wire_block *b = &session.blocks[hdr.block];
	size_t data_off = TM_DATA_HDR_LEN + (size_t)TM_PAGE_ENTRY_LEN * hdr.page_count;
	size_t tag_off = data_off + hdr.data_len;
	size_t granules = b->page_size / TM_TAG_GRANULE;

	g_assert_cmpuint(tag_off + hdr.tag_len, ==, f.body_len);
	/* The transport's part: the whole body must have arrived. */
	if (avail < f.body_len)
		return 0;
	g_assert_cmpuint((size_t)hdr.page_count * granules, <=, sizeof(tags));
	if (tm_data_tags_expand(&hdr, entries, b->page_size, body + tag_off, hdr.tag_len, tags,
				&error) < 0)
		return 0;

	/* Apply as a receiver would. */
	const uint8_t *src = body + data_off;
	for (uint32_t i = 0; i < hdr.page_count; i++) {
		const tm_page_entry *e = &entries[i];
		uint8_t *dst = ram[hdr.block] + (size_t)e->page * b->page_size;

		g_assert_cmpuint(e->page, <, b->npages);
		if (e->kind == TM_PAGE_NORMAL) {
			memcpy(dst, src, b->page_size);
			src += b->page_size;
		} else {
			memset(dst, 0, b->page_size);
		}
		memcpy(ram_tags[hdr.block] + (size_t)e->page * granules, tags + (size_t)i * granules,
		       granules);
		if (e->kind == TM_PAGE_ZERO)
			g_assert_true(tm_buffer_is_zero(tags + (size_t)i * granules, granules));
	}
	g_assert_true(src == body + tag_off);
	g_assert_cmpint(tm_tags_find_invalid(tags, (size_t)hdr.page_count * granules), ==, -1);
	return 0;
}
