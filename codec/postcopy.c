/* SPDX-License-Identifier: MIT */
/*
 * The postcopy messages of protocol 2 (docs/wire-format.md, "Postcopy messages"): DISCARD on the
 * data channels, POSTCOPY on the control connection, PAGE_REQ, URGENT and REQ_END on the urgent
 * connection. Reader and writer of each live here; no I/O. Every page a decoder lets through is
 * inside a block of the session, so a caller may address guest RAM with it.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "codec/codec.h"
#include "tagmig/error.h"

/* Block names came through tm_hello_check(), but may still hold non-printable bytes. */
static char *block_label(const tm_wire_block *b)
{
	return g_strescape(b->name, NULL);
}

static int body_exact(const char *what, size_t len, size_t want, GError **error)
{
	if (len == want)
		return 0;
	g_set_error(error, TM_ERROR, EBADMSG, "%s: body of %zu bytes, must be %zu%s", what, len,
		    want, len < want ? " (truncated)" : "");
	return -EBADMSG;
}

/* ---- DISCARD ---- */

size_t tm_discard_encode(uint8_t *out, uint32_t seq, uint32_t block, const tm_discard_range *ranges,
			 uint32_t count)
{
	g_return_val_if_fail(count >= 1 && count <= TM_MAX_DISCARD_RANGES, 0);
	uint32_t body = TM_DISCARD_HDR_LEN + 8u * count;
	uint8_t *p = out + TM_FRAME_HDR_LEN;

	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_DISCARD, body, seq);
	tm_put32(p, block);
	tm_put32(p + 4, count);
	for (uint32_t i = 0; i < count; i++) {
		tm_put32(p + 8 + 8 * i, ranges[i].first_page);
		tm_put32(p + 12 + 8 * i, ranges[i].npages);
	}
	return TM_FRAME_HDR_LEN + body;
}

/* Checks range i of a DISCARD for block (index bi) on channel; prev_end: end of range i - 1. */
static int check_range(const tm_hello *session, uint32_t bi, unsigned channel, uint32_t i,
		       const tm_discard_range *r, uint64_t prev_end, GError **error)
{
	const tm_wire_block *b = &session->blocks[bi];
	uint64_t end = (uint64_t)r->first_page + r->npages;
	g_autofree char *label = block_label(b);

	if (r->npages == 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DISCARD range %u: block %u '%s' page %u: npages 0", i, bi, label,
			    r->first_page);
		return -EBADMSG;
	}
	if (end > b->npages) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "DISCARD range %u: block %u '%s' pages %u+%u out of range (%" PRIu64
			    " pages)",
			    i, bi, label, r->first_page, r->npages, b->npages);
		return -ERANGE;
	}
	if (i > 0 && r->first_page < prev_end) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DISCARD range %u: block %u '%s' pages %u+%u overlap or precede range %u "
			    "(which ends at page %" PRIu64 "): ranges must be ascending and disjoint",
			    i, bi, label, r->first_page, r->npages, i - 1, prev_end);
		return -EBADMSG;
	}
	/* page < 2^32, page_size <= 2^16: byte offsets fit in 64 bits. */
	uint64_t first_off = (uint64_t)r->first_page * b->page_size;
	uint64_t last_off = end * b->page_size - 1;
	uint64_t first_chunk = b->chunk_base + first_off / session->chunk_size;
	uint64_t last_chunk = b->chunk_base + last_off / session->chunk_size;
	if (first_chunk != last_chunk) {
		unsigned other = tm_channel_of(b->chunk_base, last_off, session->chunk_size,
					       session->channel_count);
		g_set_error(error, TM_ERROR, EPROTO,
			    "DISCARD range %u: block %u '%s' pages %u+%u cross into chunk %" PRIu64
			    " (channel %u)",
			    i, bi, label, r->first_page, r->npages, last_chunk, other);
		return -EPROTO;
	}
	unsigned want = tm_channel_of(b->chunk_base, first_off, session->chunk_size,
				      session->channel_count);
	if (want != channel) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "DISCARD range %u: block %u '%s' pages %u+%u (offset 0x%" PRIx64
			    ") arrived on channel %u, belong to channel %u",
			    i, bi, label, r->first_page, r->npages, first_off, channel, want);
		return -EPROTO;
	}
	return 0;
}

int tm_discard_decode(const uint8_t *buf, size_t len, const tm_hello *session, unsigned channel,
		      uint32_t *ret_block, tm_discard_range *ret_ranges, uint32_t *ret_count,
		      GError **error)
{
	if (len < TM_DISCARD_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DISCARD truncated: %zu of %u fixed bytes", len,
			    TM_DISCARD_HDR_LEN);
		return -EBADMSG;
	}
	uint32_t block = tm_get32(buf), count = tm_get32(buf + 4);

	if (block >= session->block_count) {
		g_set_error(error, TM_ERROR, ERANGE, "DISCARD: block %u out of range (%u blocks)",
			    block, session->block_count);
		return -ERANGE;
	}
	if (count == 0) {
		g_set_error(error, TM_ERROR, EBADMSG, "DISCARD block %u: count 0", block);
		return -EBADMSG;
	}
	if (count > TM_MAX_DISCARD_RANGES) {
		g_set_error(error, TM_ERROR, EMSGSIZE, "DISCARD block %u: count %u over the maximum %u",
			    block, count, TM_MAX_DISCARD_RANGES);
		return -EMSGSIZE;
	}
	if (len != TM_DISCARD_HDR_LEN + 8u * (size_t)count) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DISCARD block %u: body of %zu bytes, count %u needs %zu%s", block, len,
			    count, TM_DISCARD_HDR_LEN + 8u * (size_t)count,
			    len < TM_DISCARD_HDR_LEN + 8u * (size_t)count ? " (truncated)" : "");
		return -EBADMSG;
	}
	if (channel >= session->channel_count) {
		g_set_error(error, TM_ERROR, ERANGE, "DISCARD: channel %u out of range (%u channels)",
			    channel, session->channel_count);
		return -ERANGE;
	}
	/* Check every range before writing any, so ret_ranges is only touched for a valid message. */
	uint64_t prev_end = 0;
	for (uint32_t i = 0; i < count; i++) {
		tm_discard_range r = { tm_get32(buf + 8 + 8 * i), tm_get32(buf + 12 + 8 * i) };
		int ret = check_range(session, block, channel, i, &r, prev_end, error);
		if (ret < 0)
			return ret;
		prev_end = (uint64_t)r.first_page + r.npages;
	}
	for (uint32_t i = 0; i < count; i++) {
		ret_ranges[i].first_page = tm_get32(buf + 8 + 8 * i);
		ret_ranges[i].npages = tm_get32(buf + 12 + 8 * i);
	}
	*ret_block = block;
	*ret_count = count;
	return 0;
}

/* ---- POSTCOPY ---- */

size_t tm_postcopy_encode(uint8_t *out, uint32_t seq, uint64_t pages_missing)
{
	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_POSTCOPY, TM_POSTCOPY_LEN, seq);
	tm_put64(out + TM_FRAME_HDR_LEN, pages_missing);
	return TM_FRAME_HDR_LEN + TM_POSTCOPY_LEN;
}

int tm_postcopy_decode(const uint8_t *buf, size_t len, const tm_hello *session, bool postcopy,
		       uint64_t *ret_pages_missing, GError **error)
{
	if (!postcopy) {
		g_set_error(error, TM_ERROR, EPROTO, "POSTCOPY: postcopy was not agreed");
		return -EPROTO;
	}
	int r = body_exact("POSTCOPY", len, TM_POSTCOPY_LEN, error);
	if (r < 0)
		return r;
	uint64_t missing = tm_get64(buf), pages = 0;
	for (uint32_t i = 0; i < session->block_count; i++)
		pages += session->blocks[i].npages;
	if (missing > pages) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "POSTCOPY: pages_missing %" PRIu64 " over the %" PRIu64
			    " pages of the layout",
			    missing, pages);
		return -ERANGE;
	}
	*ret_pages_missing = missing;
	return 0;
}

/* ---- PAGE_REQ ---- */

uint32_t tm_page_req_max_pages(const tm_hello *session, uint32_t block)
{
	g_return_val_if_fail(block < session->block_count, 0);
	uint32_t n = session->packet_size / session->blocks[block].page_size;
	return MIN(n, TM_MAX_REQ_PAGES);
}

size_t tm_page_req_encode(uint8_t *out, uint32_t seq, const tm_page_req *req)
{
	uint8_t *p = out + TM_FRAME_HDR_LEN;

	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_PAGE_REQ, TM_PAGE_REQ_LEN, seq);
	memset(p, 0, TM_PAGE_REQ_LEN);
	tm_put64(p, req->req_id);
	tm_put32(p + 8, req->block);
	tm_put32(p + 12, req->page);
	tm_put16(p + 16, req->count);
	return TM_FRAME_HDR_LEN + TM_PAGE_REQ_LEN;
}

int tm_page_req_decode(const uint8_t *buf, size_t len, const tm_hello *session,
		       const tm_req_window *win, tm_page_req *ret, GError **error)
{
	int r = body_exact("PAGE_REQ", len, TM_PAGE_REQ_LEN, error);
	if (r < 0)
		return r;
	tm_page_req q = {
		.req_id = tm_get64(buf),
		.block = tm_get32(buf + 8),
		.page = tm_get32(buf + 12),
		.count = tm_get16(buf + 16),
	};
	for (unsigned i = 18; i < TM_PAGE_REQ_LEN; i++) {
		if (buf[i] != 0) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "PAGE_REQ %" PRIu64 ": reserved byte at offset %u is 0x%02x, must be 0",
				    q.req_id, i, buf[i]);
			return -EBADMSG;
		}
	}
	if (q.req_id != win->next_id) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "PAGE_REQ %" PRIu64 ": out of sequence, expected request %" PRIu64,
			    q.req_id, win->next_id);
		return -EPROTO;
	}
	if (win->outstanding >= win->max_outstanding) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "PAGE_REQ %" PRIu64 ": request flood: %u requests unanswered, the receiver "
			    "agreed to at most %u",
			    q.req_id, win->outstanding + 1, win->max_outstanding);
		return -EPROTO;
	}
	if (q.block >= session->block_count) {
		g_set_error(error, TM_ERROR, ERANGE,
			    "PAGE_REQ %" PRIu64 ": block %u out of range (%u blocks)", q.req_id,
			    q.block, session->block_count);
		return -ERANGE;
	}
	const tm_wire_block *b = &session->blocks[q.block];
	uint32_t max = tm_page_req_max_pages(session, q.block);
	if (q.count == 0 || q.count > max) {
		g_autofree char *label = block_label(b);
		g_set_error(error, TM_ERROR, q.count == 0 ? EBADMSG : EMSGSIZE,
			    "PAGE_REQ %" PRIu64 ": count %u for block %u '%s' outside 1..%u", q.req_id,
			    q.count, q.block, label, max);
		return q.count == 0 ? -EBADMSG : -EMSGSIZE;
	}
	if ((uint64_t)q.page + q.count > b->npages) {
		g_autofree char *label = block_label(b);
		g_set_error(error, TM_ERROR, ERANGE,
			    "PAGE_REQ %" PRIu64 ": page %u+%u out of range for block %u '%s' (%" PRIu64
			    " pages)",
			    q.req_id, q.page, q.count, q.block, label, b->npages);
		return -ERANGE;
	}
	*ret = q;
	return 0;
}

/* ---- URGENT ---- */

unsigned tm_urgent_finish(tm_packet *pkt, uint32_t seq, uint64_t req_id,
			  uint8_t prefix[TM_FRAME_HDR_LEN + TM_URGENT_ID_LEN], size_t *ret_len)
{
	size_t data_len;
	unsigned n = tm_packet_finish(pkt, seq, &data_len);

	/* The DATA body stays as tm_packet_finish() built it; only its frame header is replaced. */
	g_assert(pkt->iov[0].iov_len >= TM_FRAME_HDR_LEN);
	pkt->iov[0].iov_base = (uint8_t *)pkt->iov[0].iov_base + TM_FRAME_HDR_LEN;
	pkt->iov[0].iov_len -= TM_FRAME_HDR_LEN;
	uint32_t body = (uint32_t)(data_len - TM_FRAME_HDR_LEN) + TM_URGENT_ID_LEN;
	tm_frame_encode_v(prefix, TM_WIRE_VERSION_2, TM_MSG_URGENT, body, seq);
	tm_put64(prefix + TM_FRAME_HDR_LEN, req_id);
	*ret_len = TM_FRAME_HDR_LEN + body;
	return n;
}

int tm_urgent_id_decode(const uint8_t *buf, size_t len, uint32_t body_len, uint64_t *ret_req_id,
			GError **error)
{
	if (body_len < TM_URGENT_ID_LEN + TM_DATA_HDR_LEN || len < TM_URGENT_ID_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "URGENT truncated: body of %u bytes (%zu at hand), needs req_id and a DATA "
			    "header (%u)",
			    body_len, len, TM_URGENT_ID_LEN + TM_DATA_HDR_LEN);
		return -EBADMSG;
	}
	*ret_req_id = tm_get64(buf);
	return 0;
}

int tm_urgent_check(const tm_hello *session, uint64_t req_id, const tm_page_req *req,
		    const tm_data_hdr *hdr, const tm_page_entry *entries, GError **error)
{
	if (!req || req->req_id != req_id) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "URGENT for request %" PRIu64 ", which is not outstanding", req_id);
		return -EPROTO;
	}
	if (hdr->page_count > TM_MAX_REQ_PAGES) {
		g_set_error(error, TM_ERROR, EMSGSIZE,
			    "URGENT for request %" PRIu64 ": %u pages, over the maximum %u", req_id,
			    hdr->page_count, TM_MAX_REQ_PAGES);
		return -EMSGSIZE;
	}
	if (hdr->block != req->block || hdr->page_count != req->count) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "URGENT for request %" PRIu64 ": block %u, %u pages; the request was block "
			    "%u page %u+%u",
			    req_id, hdr->block, hdr->page_count, req->block, req->page, req->count);
		return -EPROTO;
	}
	for (uint32_t i = 0; entries && i < hdr->page_count; i++) {
		if (entries[i].page != (uint64_t)req->page + i) {
			const tm_wire_block *b = &session->blocks[req->block];
			g_autofree char *label = block_label(b);
			g_set_error(error, TM_ERROR, EPROTO,
				    "URGENT for request %" PRIu64 ": entry %u is block %u '%s' page %u "
				    "(offset 0x%" PRIx64 "), the request asked for page %" PRIu64,
				    req_id, i, req->block, label, entries[i].page,
				    (uint64_t)entries[i].page * b->page_size, (uint64_t)req->page + i);
			return -EPROTO;
		}
	}
	return 0;
}

/* ---- REQ_END ---- */

size_t tm_req_end_encode(uint8_t *out, uint32_t seq, uint64_t requests_sent)
{
	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_REQ_END, TM_REQ_END_LEN, seq);
	tm_put64(out + TM_FRAME_HDR_LEN, requests_sent);
	return TM_FRAME_HDR_LEN + TM_REQ_END_LEN;
}

int tm_req_end_decode(const uint8_t *buf, size_t len, uint64_t requests_read,
		      uint64_t *ret_requests_sent, GError **error)
{
	int r = body_exact("REQ_END", len, TM_REQ_END_LEN, error);
	if (r < 0)
		return r;
	uint64_t sent = tm_get64(buf);
	if (sent != requests_read) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "REQ_END: the receiver sent %" PRIu64 " requests, %" PRIu64 " were read",
			    sent, requests_read);
		return -EPROTO;
	}
	*ret_requests_sent = sent;
	return 0;
}
