/* SPDX-License-Identifier: MIT */
/* DELTA and DELTA_NACK (delta-wire.h, docs/wire-format.md "DELTA"): writer and reader of both. */
#include <errno.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/delta-wire.h"
#include "codec/delta.h"
#include "common/escape.h"
#include "common/guest-buf.h"
#include "tagmig/error.h"

/* The most pages a packet may hold: packet_size of 4 KiB pages. */
static uint32_t max_entries(uint32_t packet_size)
{
	return packet_size / 4096u;
}

static uint32_t clamp32(uint64_t n)
{
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

uint32_t tm_delta_max_body(uint32_t packet_size)
{
	if (packet_size == 0)
		return 0;
	return clamp32(TM_DELTA_HDR_LEN + (uint64_t)TM_DELTA_ENTRY_LEN * max_entries(packet_size) +
		       packet_size + packet_size / 32u);
}

uint32_t tm_delta_nack_max_body(uint32_t packet_size)
{
	if (packet_size == 0)
		return 0;
	return clamp32(TM_DELTA_NACK_HDR_LEN +
		       (uint64_t)TM_DELTA_NACK_ENTRY_LEN * max_entries(packet_size));
}

/* ---- sender ---- */

void tm_delta_pkt_init(tm_delta_pkt *pkt, uint32_t packet_size)
{
	memset(pkt, 0, sizeof(*pkt));
	pkt->packet_size = packet_size;
	pkt->head = g_malloc(TM_FRAME_HDR_LEN + TM_DELTA_HDR_LEN +
			     (size_t)TM_DELTA_ENTRY_LEN * max_entries(packet_size));
	pkt->data = g_malloc(packet_size);
	pkt->tagbuf = g_malloc(packet_size / 32u);
}

void tm_delta_pkt_fini(tm_delta_pkt *pkt)
{
	g_free(pkt->head);
	g_free(pkt->data);
	g_free(pkt->tagbuf);
	memset(pkt, 0, sizeof(*pkt));
}

void tm_delta_pkt_begin(tm_delta_pkt *pkt, uint32_t block, uint32_t page_size)
{
	pkt->block = block;
	pkt->page_size = page_size;
	pkt->max_pages = pkt->packet_size / page_size;
	pkt->page_count = pkt->data_len = pkt->tag_len = 0;
}

ssize_t tm_delta_pkt_add(tm_delta_pkt *pkt, uint32_t page, const uint8_t *data,
			 const uint8_t *base, const uint8_t *tags, uint32_t max_dlen)
{
	g_assert(pkt->page_count < pkt->max_pages && max_dlen < pkt->page_size);
	g_assert(pkt->page_count == 0 || page > pkt->last_page);
	if (pkt->packet_size - pkt->data_len < max_dlen)
		return -ENOBUFS;
	ssize_t n = tm_delta_encode(data, base, pkt->page_size, pkt->data + pkt->data_len, max_dlen);
	if (n < 0)
		return n; /* -ENOSPC: longer than max_dlen */

	uint32_t granules = pkt->page_size / TM_TAG_GRANULE;
	uint8_t value = 0;
	tm_tag_enc enc = tags ? tm_tags_classify(tags, granules, &value) : TM_TAGS_ZERO;
	if (enc == TM_TAGS_UNIFORM) {
		pkt->tagbuf[pkt->tag_len++] = value;
	} else if (enc == TM_TAGS_PACKED) {
		tm_tags_pack(tags, granules, pkt->tagbuf + pkt->tag_len);
		pkt->tag_len += pkt->page_size / 32u;
	}
	uint8_t *e = pkt->head + TM_FRAME_HDR_LEN + TM_DELTA_HDR_LEN +
		     (size_t)pkt->page_count * TM_DELTA_ENTRY_LEN;
	memset(e, 0, TM_DELTA_ENTRY_LEN);
	tm_put32(e, page);
	tm_put32(e + 4, (uint32_t)n);
	tm_put64(e + 8, tm_page_hash(base, pkt->page_size));
	e[16] = (uint8_t)enc;
	pkt->page_count++;
	pkt->data_len += (uint32_t)n;
	pkt->last_page = page;
	return n;
}

unsigned tm_delta_pkt_finish(tm_delta_pkt *pkt, uint8_t version, uint32_t seq, size_t *ret_len)
{
	size_t head = TM_DELTA_HDR_LEN + (size_t)pkt->page_count * TM_DELTA_ENTRY_LEN;
	uint32_t body_len = (uint32_t)(head + pkt->data_len + pkt->tag_len);
	uint8_t *h = pkt->head + TM_FRAME_HDR_LEN;
	unsigned n = 0;

	g_assert(pkt->page_count > 0);
	tm_frame_encode_v(pkt->head, version, TM_MSG_DELTA, body_len, seq);
	tm_put32(h, pkt->block);
	tm_put32(h + 4, pkt->page_count);
	tm_put32(h + 8, pkt->data_len);
	tm_put32(h + 12, pkt->tag_len);
	pkt->iov[n++] = (struct iovec){ pkt->head, TM_FRAME_HDR_LEN + head };
	if (pkt->data_len)
		pkt->iov[n++] = (struct iovec){ pkt->data, pkt->data_len };
	if (pkt->tag_len)
		pkt->iov[n++] = (struct iovec){ pkt->tagbuf, pkt->tag_len };
	*ret_len = TM_FRAME_HDR_LEN + (size_t)body_len;
	return n;
}

/* ---- receiver ---- */

void tm_delta_rx_init(tm_delta_rx *rx, uint32_t packet_size)
{
	uint32_t n = max_entries(packet_size);

	memset(rx, 0, sizeof(*rx));
	rx->packet_size = packet_size;
	rx->max_entries = n;
	/* Deltas carry guest bytes: a mapping of its own, unmapped at fini (guest-buf.h). */
	rx->body = tm_guest_buf_new(tm_delta_max_body(packet_size));
	rx->entries = g_new(tm_delta_entry, n);
	rx->pe = g_new(tm_page_entry, n);
	rx->tags = g_malloc(packet_size / TM_TAG_GRANULE);
}

void tm_delta_rx_fini(tm_delta_rx *rx)
{
	tm_guest_buf_free(rx->body, tm_delta_max_body(rx->packet_size));
	g_free(rx->entries);
	g_free(rx->pe);
	g_free(rx->tags);
	memset(rx, 0, sizeof(*rx));
}

int tm_delta_decode(tm_delta_rx *rx, uint32_t body_len, const tm_hello *session,
		    unsigned channel, uint32_t *ret_page, GError **error)
{
	const uint8_t *b = rx->body;

	*ret_page = 0;
	if (body_len < TM_DELTA_HDR_LEN || body_len > tm_delta_max_body(rx->packet_size)) {
		g_set_error(error, TM_ERROR, EBADMSG, "DELTA body of %u bytes (%u..%u)", body_len,
			    TM_DELTA_HDR_LEN, tm_delta_max_body(rx->packet_size));
		return -EBADMSG;
	}
	uint32_t block = tm_get32(b), count = tm_get32(b + 4);
	uint32_t data_len = tm_get32(b + 8), tag_len = tm_get32(b + 12);
	if (block >= session->block_count) {
		g_set_error(error, TM_ERROR, ERANGE, "DELTA: block %u out of range (%u blocks)",
			    block, session->block_count);
		return -ERANGE;
	}
	const tm_wire_block *wb = &session->blocks[block];
	uint32_t ps = wb->page_size, max = session->packet_size / ps;
	if (count == 0 || count > max) {
		g_set_error(error, TM_ERROR, count ? EMSGSIZE : EBADMSG,
			    "DELTA: page_count %u outside 1..%u", count, max);
		return count ? -EMSGSIZE : -EBADMSG;
	}
	uint64_t want = TM_DELTA_HDR_LEN + (uint64_t)TM_DELTA_ENTRY_LEN * count + data_len +
			tag_len;
	if (data_len > session->packet_size || want != body_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DELTA: body of %u bytes, header says %" G_GUINT64_FORMAT
			    " (%u entries, data_len %u, tag_len %u)",
			    body_len, want, count, data_len, tag_len);
		return -EBADMSG;
	}
	g_autofree char *label = NULL;
	uint64_t off = TM_DELTA_HDR_LEN + (uint64_t)TM_DELTA_ENTRY_LEN * count;
	uint64_t data_end = off + data_len;
	*ret_page = tm_get32(b + TM_DELTA_HDR_LEN);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = b + TM_DELTA_HDR_LEN + (size_t)i * TM_DELTA_ENTRY_LEN;
		tm_delta_entry *d = &rx->entries[i];
		d->page = tm_get32(e);
		d->dlen = tm_get32(e + 4);
		d->base_hash = tm_get64(e + 8);
		d->tag_enc = e[16];
		bool reserved = false;
		for (unsigned k = 17; k < TM_DELTA_ENTRY_LEN; k++)
			reserved |= e[k] != 0;
		if (d->page >= wb->npages) {
			*ret_page = i ? rx->entries[i - 1].page : 0;
			label = tm_escape_untrusted(wb->name);
			g_set_error(error, TM_ERROR, ERANGE,
				    "DELTA entry %u: page %u out of range for block %u '%s' (%" G_GUINT64_FORMAT
				    " pages)",
				    i, d->page, block, label, wb->npages);
			return -ERANGE;
		}
		*ret_page = d->page;
		if (i && d->page <= rx->entries[i - 1].page) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DELTA entry %u: page %u after page %u (must ascend)", i, d->page,
				    rx->entries[i - 1].page);
			return -EBADMSG;
		}
		if (reserved || d->tag_enc >= TM_TAG_ENC_COUNT ||
		    (!(session->features & TM_FEATURE_TAGS_MTE4) && d->tag_enc != TM_TAGS_ZERO)) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DELTA entry %u (page %u): %s", i, d->page,
				    reserved ? "reserved bytes not 0" : "invalid tag_enc");
			return -EBADMSG;
		}
		unsigned want_ch = tm_channel_of(wb->chunk_base, (uint64_t)d->page * ps,
						 session->chunk_size, session->channel_count);
		if (channel != TM_CHANNEL_ANY && want_ch != channel) {
			label = tm_escape_untrusted(wb->name);
			g_set_error(error, TM_ERROR, EPROTO,
				    "DELTA entry %u: page %u of block %u '%s' arrived on channel %u, "
				    "belongs to channel %u",
				    i, d->page, block, label, channel, want_ch);
			return -EPROTO;
		}
		if (d->dlen >= ps || d->dlen > data_end - off) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DELTA entry %u (page %u): dlen %u (page size %u, %" G_GUINT64_FORMAT
				    " bytes of deltas left)",
				    i, d->page, d->dlen, ps, data_end - off);
			return -EBADMSG;
		}
		d->off = (uint32_t)off;
		off += d->dlen;
		rx->pe[i] = (tm_page_entry){ .page = d->page, .kind = TM_PAGE_NORMAL,
					     .tag_enc = d->tag_enc };
	}
	if (off != data_end) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DELTA: entries' deltas take %" G_GUINT64_FORMAT " bytes, data_len is %u",
			    off - (data_end - data_len), data_len);
		return -EBADMSG;
	}
	/* Every delta stream whole, before anything is applied. */
	for (uint32_t i = 0; i < count; i++) {
		g_autoptr(GError) why = NULL;
		const tm_delta_entry *d = &rx->entries[i];
		*ret_page = d->page;
		if (tm_delta_check(ps, b + d->off, d->dlen, &why) < 0) {
			g_set_error(error, TM_ERROR, EBADMSG, "DELTA entry %u (page %u): %s", i,
				    d->page, why->message);
			return -EBADMSG;
		}
	}
	*ret_page = rx->entries[0].page;
	tm_data_hdr hdr = { .block = block, .page_count = count, .data_len = 0,
			    .tag_len = tag_len };
	int r = tm_data_tags_expand(&hdr, rx->pe, ps, b + data_end, tag_len, rx->tags, error);
	if (r < 0) {
		g_prefix_error(error, "DELTA: ");
		return r;
	}
	rx->block = block;
	rx->page_count = count;
	rx->data_len = data_len;
	rx->tag_len = tag_len;
	rx->page_size = ps;
	return 0;
}

/* ---- DELTA_NACK ---- */

size_t tm_delta_nack_encode(uint8_t *out, uint8_t version, uint32_t seq, uint32_t block,
			    const uint32_t *pages, const uint32_t *reasons, uint32_t count)
{
	uint32_t body = TM_DELTA_NACK_HDR_LEN + count * TM_DELTA_NACK_ENTRY_LEN;
	uint8_t *p = out + TM_FRAME_HDR_LEN;

	tm_frame_encode_v(out, version, TM_MSG_DELTA_NACK, body, seq);
	tm_put32(p, block);
	tm_put32(p + 4, count);
	for (uint32_t i = 0; i < count; i++) {
		tm_put32(p + 8 + 8 * i, pages[i]);
		tm_put32(p + 12 + 8 * i, reasons[i]);
	}
	return TM_FRAME_HDR_LEN + body;
}

int tm_delta_nack_decode(const uint8_t *body, size_t len, const tm_hello *session,
			 unsigned channel, uint32_t *pages, uint32_t *ret_block,
			 uint32_t *ret_count, GError **error)
{
	if (len < TM_DELTA_NACK_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DELTA_NACK body of %zu bytes is truncated",
			    len);
		return -EBADMSG;
	}
	uint32_t block = tm_get32(body), count = tm_get32(body + 4);
	if (block >= session->block_count) {
		g_set_error(error, TM_ERROR, ERANGE, "DELTA_NACK: block %u out of range (%u blocks)",
			    block, session->block_count);
		return -ERANGE;
	}
	const tm_wire_block *wb = &session->blocks[block];
	uint32_t max = session->packet_size / wb->page_size;
	if (count == 0 || count > max) {
		g_set_error(error, TM_ERROR, count ? EMSGSIZE : EBADMSG,
			    "DELTA_NACK: count %u outside 1..%u", count, max);
		return count ? -EMSGSIZE : -EBADMSG;
	}
	if (len != TM_DELTA_NACK_HDR_LEN + (size_t)count * TM_DELTA_NACK_ENTRY_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DELTA_NACK: body of %zu bytes for %u pages",
			    len, count);
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < count; i++) {
		uint32_t page = tm_get32(body + 8 + 8 * i), why = tm_get32(body + 12 + 8 * i);
		if (page >= wb->npages) {
			g_set_error(error, TM_ERROR, ERANGE,
				    "DELTA_NACK page %u: out of range for block %u (%" G_GUINT64_FORMAT
				    " pages)",
				    page, block, wb->npages);
			return -ERANGE;
		}
		if (tm_channel_of(wb->chunk_base, (uint64_t)page * wb->page_size,
				  session->chunk_size, session->channel_count) != channel) {
			g_set_error(error, TM_ERROR, EPROTO,
				    "DELTA_NACK page %u of block %u: not a page of channel %u", page,
				    block, channel);
			return -EPROTO;
		}
		if (why != TM_DELTA_REFUSED_BASE && why != TM_DELTA_REFUSED_ABSENT) {
			g_set_error(error, TM_ERROR, EBADMSG, "DELTA_NACK page %u: reason %u", page,
				    why);
			return -EBADMSG;
		}
		pages[i] = page;
	}
	*ret_block = block;
	*ret_count = count;
	return 0;
}
