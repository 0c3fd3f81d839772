/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the receiver's DATA path as the session runs it: the receive plan (tm_recv_plan_*) of a
 * DATA or ZDATA frame (both codecs agreed) against the fixed session of fuzz-data.c, with the
 * transport's part played by copying the input into the plan's buffers and iovecs. Every iovec
 * must lie inside the block's RAM (exactly the session's size, so ASan sees any stray byte), the
 * plan's tag buffer or, for ZDATA, its compressed-data buffer; a ZDATA decodes into the block's
 * RAM only; the applied packet must leave only valid tags. DELTA frames go through the codec's
 * whole-body check (tm_delta_decode) and are applied to that RAM; ZDELTA frames are first
 * unpacked (tm_zdelta_unpack: sizes checked, the zstd frame decoded into an exact-size DELTA
 * buffer) and then go the same way. Replays fuzz-data's corpus.
 */
#include <glib.h>

#include "codec/compress.h"
#include "codec/delta-wire.h"
#include "codec/delta.h"
#include "fuzz.h"

static tm_hello session;
static tm_recv_plan plan;
static tm_zctx *zctx;
static tm_delta_rx drx;
static uint8_t *ram[2], *ram_tags[2];

static void setup(void)
{
	fuzz_data_guest(&session, ram, ram_tags);
	tm_recv_plan_init(&plan, session.packet_size);
	if (tm_zctx_new(session.packet_size, &zctx, NULL) < 0)
		g_error("tm_zctx_new");
}

/* The transport's part: takes n bytes from the input, or fails like a peer that closed. */
static bool take(const uint8_t **in, size_t *left, void *dst, size_t n)
{
	if (*left < n)
		return false;
	memcpy(dst, *in, n);
	*in += n;
	*left -= n;
	return true;
}

/*
 * A DELTA: decoded whole from an exact-size copy of its body; what is accepted applies to the
 * block's exact-size RAM (every delta stream was checked: applying cannot fail) with valid tags.
 */
static int delta_frame(const tm_frame *f, const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;
	uint32_t first, body_len = f->body_len;

	if (!drx.body)
		tm_delta_rx_init(&drx, session.packet_size);
	if (size - TM_FRAME_HDR_LEN < f->body_len)
		return 0; /* the transport would wait for the rest */
	uint8_t *own = drx.body;
	g_autofree uint8_t *body = g_memdup2(data + TM_FRAME_HDR_LEN, f->body_len);
	if (f->type == TM_MSG_ZDELTA) {
		/* Exact-size input; the output buffer exactly DELTA's limit. */
		g_autofree uint8_t *out = g_malloc(tm_delta_max_body(session.packet_size));
		int r = tm_zdelta_unpack(body, f->body_len, &session,
					 TM_FEATURE_LZ4 | TM_FEATURE_ZSTD, zctx, out, &body_len,
					 &error);
		if (r < 0) {
			g_assert_nonnull(error);
			return 0;
		}
		g_assert_cmpuint(body_len, <=, tm_delta_max_body(session.packet_size));
		g_free(body);
		body = g_memdup2(out, body_len);
	}
	drx.body = body;
	int r = tm_delta_decode(&drx, body_len, &session, f->seq % session.channel_count, &first,
				&error);
	if (r < 0) {
		g_assert_nonnull(error);
		drx.body = own;
		return 0;
	}
	const tm_wire_block *b = &session.blocks[drx.block];
	size_t granules = b->page_size / TM_TAG_GRANULE;
	for (uint32_t i = 0; i < drx.page_count; i++) {
		const tm_delta_entry *e = &drx.entries[i];
		g_assert_cmpuint(e->page, <, b->npages);
		g_assert_cmpuint(e->dlen, <, b->page_size);
		g_assert_cmpuint((uint64_t)e->off + e->dlen, <=, body_len);
		g_assert_cmpint(tm_delta_apply(ram[drx.block] + (size_t)e->page * b->page_size,
					       b->page_size, body + e->off, e->dlen, NULL), ==, 0);
		memcpy(ram_tags[drx.block] + (size_t)e->page * granules, drx.tags + i * granules,
		       granules);
	}
	g_assert_cmpint(tm_tags_find_invalid(drx.tags, (size_t)drx.page_count * granules), ==, -1);
	drx.body = own;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	g_autoptr(GError) error = NULL;
	tm_frame f;

	if (!session.blocks)
		setup();
	/* Either protocol's frames: DATA in both, ZDATA in protocol 2. */
	if (tm_frame_decode(data, size, 0, session.packet_size, &f, &error) < 0)
		return 0;
	if (f.type == TM_MSG_DELTA || f.type == TM_MSG_ZDELTA)
		return delta_frame(&f, data, size);
	if (f.type != TM_MSG_DATA && f.type != TM_MSG_ZDATA)
		return 0;
	unsigned channel = f.seq % session.channel_count;
	size_t left = MIN(size - TM_FRAME_HDR_LEN, f.body_len);
	/* Exact-size copy of what arrived: the plan must never read past it. */
	g_autofree uint8_t *body = g_memdup2(data + TM_FRAME_HDR_LEN, left);
	const uint8_t *in = body;

	int n;
	if (f.type == TM_MSG_ZDATA) {
		n = tm_recv_plan_begin_z(&plan, &session,
					 session.features | TM_FEATURE_LZ4 | TM_FEATURE_ZSTD,
					 f.body_len, &error);
		if (n < 0 || !take(&in, &left, plan.zhdr, (size_t)n))
			return 0;
		n = tm_recv_plan_zheader(&plan, &error);
	} else {
		n = tm_recv_plan_begin(&plan, &session, f.body_len, &error);
	}
	if (n < 0 || !take(&in, &left, plan.head, (size_t)n))
		return 0;
	n = tm_recv_plan_header(&plan, &error);
	if (n < 0 || !take(&in, &left, plan.head + TM_DATA_HDR_LEN, (size_t)n))
		return 0;
	const tm_data_hdr *hdr = &plan.hdr;
	const tm_wire_block *b = &session.blocks[hdr->block];
	uint8_t *host = ram[hdr->block];
	if (tm_recv_plan_entries(&plan, channel, host, &error) < 0)
		return 0;

	/* The plan covers the rest of the body exactly, and only guest RAM and the tag buffer. */
	size_t covered = 0;
	for (unsigned i = 0; i < plan.iov_count; i++) {
		const uint8_t *p = plan.iov[i].iov_base;
		size_t len = plan.iov[i].iov_len;
		if (plan.zcodec && i == 0) {
			/* Compressed data: only into its own buffer, shorter than the pages. */
			g_assert_true(p == plan.zbuf && len == plan.zlen && len < hdr->data_len);
		} else if (tm_recv_plan_iov_staged(&plan, i)) {
			/* Page data staged (short runs, or waiting for its tags' check): only
			 * inside the stage. */
			g_assert_true(plan.stage_run_count && len <= plan.packet_size &&
				      (size_t)(p - plan.stage) <= plan.packet_size - len);
		} else if (i < plan.data_iov_count) {
			g_assert_true(p >= host && len <= b->length &&
				      (size_t)(p - host) <= b->length - len);
			g_assert_cmpuint((size_t)(p - host) % b->page_size, ==, 0);
		} else {
			g_assert_true(p == plan.tag_payload && len == hdr->tag_len);
		}
		covered += len;
	}
	g_assert_cmpuint(covered, ==, plan.payload_len);
	/* Where the commit will write the staged runs: only guest RAM, whole pages. */
	for (unsigned i = 0; i < plan.stage_run_count; i++) {
		const tm_stage_run *sr = &plan.stage_runs[i];
		g_assert_true(sr->to >= host && sr->len <= b->length &&
			      (size_t)(sr->to - host) <= b->length - sr->len);
		g_assert_cmpuint((size_t)(sr->to - host) % b->page_size, ==, 0);
		g_assert_cmpuint(sr->len % b->page_size, ==, 0);
		g_assert_cmpuint((size_t)sr->off + sr->len, <=, plan.packet_size);
	}
	g_assert_cmpuint((plan.zcodec ? TM_ZDATA_HDR_LEN : 0) + TM_DATA_HDR_LEN +
				 (size_t)TM_PAGE_ENTRY_LEN * hdr->page_count + covered, ==, f.body_len);
	for (unsigned i = 0; i < plan.iov_count; i++)
		if (!take(&in, &left, plan.iov[i].iov_base, plan.iov[i].iov_len))
			return 0;
	if (tm_recv_plan_tags(&plan, &error) < 0)
		return 0;
	tm_recv_plan_commit(&plan); /* staged data into guest RAM, at validated pages only */
	if (tm_recv_plan_decompress(&plan, zctx, &error) < 0)
		return 0; /* the session fails here: nothing is marked present */

	/* Apply as the session does: zero pages, then tags in runs of consecutive pages. */
	size_t granules = b->page_size / TM_TAG_GRANULE;
	for (uint32_t i = 0; i < hdr->page_count; i++) {
		const tm_page_entry *e = &plan.entries[i];
		g_assert_cmpuint(e->page, <, b->npages);
		if (e->kind != TM_PAGE_NORMAL)
			memset(host + (size_t)e->page * b->page_size, 0, b->page_size);
		if (e->kind == TM_PAGE_ZERO)
			g_assert_true(tm_buffer_is_zero(plan.tags + (size_t)i * granules, granules));
	}
	for (uint32_t i = 0; i < hdr->page_count;) {
		uint32_t j = tm_recv_plan_run_end(&plan, i);
		g_assert_cmpuint(j, >, i);
		g_assert_cmpuint(j, <=, hdr->page_count);
		memcpy(ram_tags[hdr->block] + (size_t)plan.entries[i].page * granules,
		       plan.tags + (size_t)i * granules, (size_t)(j - i) * granules);
		i = j;
	}
	g_assert_cmpint(tm_tags_find_invalid(plan.tags, (size_t)hdr->page_count * granules), ==, -1);
	return 0;
}
