/* SPDX-License-Identifier: MIT */
/*
 * DATA (docs/wire-format.md, "DATA"): the receiver's decoders for the data header, the page
 * entries and the tag payload, the receive plan built from them, and the sender's packet builder. A receiver uses what the decoders
 * return to address guest RAM, so every index is checked against the HELLO layout here and every
 * length is checked against what the entries imply before the caller reads data into RAM.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "codec/codec.h"
#include "common/escape.h"
#include "common/guest-buf.h"
#include "common/stream-copy.h"
#include "tagmig/error.h"

static const char *enc_name(uint8_t enc)
{
	switch (enc) {
	case TM_TAGS_ZERO:
		return "TAGS_ZERO";
	case TM_TAGS_UNIFORM:
		return "TAGS_UNIFORM";
	case TM_TAGS_PACKED:
		return "TAGS_PACKED";
	default:
		return "invalid";
	}
}

/* Block names came through tm_hello_check(), but may still hold non-printable bytes. */
static char *block_label(const tm_wire_block *b)
{
	return tm_escape_untrusted(b->name);
}

/*
 * Appends len bytes at p to the page data runs iov[first..*count): adjacent in RAM and on the wire,
 * a page extends the last run (one iovec, fewer segments for sendmsg and readv). *run_end is the
 * end of the last run. The sender's packets and the receiver's plans build their runs here.
 */
static void iov_append_run(struct iovec *iov, unsigned *count, unsigned first,
			   const uint8_t **run_end, const uint8_t *p, size_t len)
{
	if (*count > first && *run_end == p) {
		iov[*count - 1].iov_len += len;
	} else {
		iov[*count].iov_base = (void *)p;
		iov[*count].iov_len = len;
		(*count)++;
	}
	*run_end = p + len;
}

/* ---- receiver ---- */

int tm_data_hdr_decode(const uint8_t *buf, size_t len, const tm_hello *session, tm_data_hdr *ret,
		       GError **error)
{
	if (len < TM_DATA_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA header truncated: %zu of %u bytes", len,
			    TM_DATA_HDR_LEN);
		return -EBADMSG;
	}
	tm_data_hdr h = {
		.block = tm_get32(buf),
		.page_count = tm_get32(buf + 4),
		.data_len = tm_get32(buf + 8),
		.tag_len = tm_get32(buf + 12),
	};

	if (h.block >= session->block_count) {
		g_set_error(error, TM_ERROR, ERANGE, "DATA: block %u out of range (%u blocks)",
			    h.block, session->block_count);
		return -ERANGE;
	}
	const tm_wire_block *b = &session->blocks[h.block];
	uint32_t max_pages = session->packet_size / b->page_size;

	if (h.page_count == 0) {
		g_autofree char *label = block_label(b);
		g_set_error(error, TM_ERROR, EBADMSG, "DATA block %u '%s': page_count 0", h.block,
			    label);
		return -EBADMSG;
	}
	if (h.page_count > max_pages) {
		g_autofree char *label = block_label(b);
		g_set_error(error, TM_ERROR, EMSGSIZE,
			    "DATA block %u '%s': page_count %u over the maximum %u (packet_size %u / page_size %u)",
			    h.block, label, h.page_count, max_pages, session->packet_size,
			    b->page_size);
		return -EMSGSIZE;
	}
	/*
	 * Upper bounds the entries will refine: a receiver may size its reads from the header, so
	 * refuse impossible lengths now. page_count <= 4096 and page_size <= 64 KiB: no overflow.
	 */
	uint64_t max_data = (uint64_t)h.page_count * b->page_size;
	uint64_t max_tags = (session->features & TM_FEATURE_TAGS_MTE4) ?
				    (uint64_t)h.page_count * (b->page_size / 32u) : 0;
	if (h.data_len > max_data) {
		g_autofree char *label = block_label(b);
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA block %u '%s': data_len %u larger than page_count %u * page_size %u",
			    h.block, label, h.data_len, h.page_count, b->page_size);
		return -EBADMSG;
	}
	if (h.tag_len > max_tags) {
		g_autofree char *label = block_label(b);
		if (!(session->features & TM_FEATURE_TAGS_MTE4))
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DATA block %u '%s': tag_len %u but the session has no tag feature",
				    h.block, label, h.tag_len);
		else
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DATA block %u '%s': tag_len %u larger than page_count %u * %u",
				    h.block, label, h.tag_len, h.page_count, b->page_size / 32u);
		return -EBADMSG;
	}
	*ret = h;
	return 0;
}

static void parse_entry(const uint8_t *p, tm_page_entry *e, uint16_t *reserved)
{
	e->page = tm_get32(p);
	e->kind = p[4];
	e->tag_enc = p[5];
	*reserved = tm_get16(p + 6);
}

/* Checks entry i; returns 0 or -errno with *error naming the entry, block and page. */
static int check_entry(const tm_data_hdr *hdr, const tm_hello *session, unsigned channel,
		       uint32_t i, const tm_page_entry *e, uint16_t reserved, GError **error)
{
	const tm_wire_block *b = &session->blocks[hdr->block];
	bool tags = session->features & TM_FEATURE_TAGS_MTE4;
	g_autofree char *label = NULL;

	if (reserved != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA entry %u: reserved field is 0x%04x, must be 0", i, reserved);
		return -EBADMSG;
	}
	if (e->page >= b->npages) {
		label = block_label(b);
		g_set_error(error, TM_ERROR, ERANGE,
			    "DATA entry %u: page %u out of range for block %u '%s' (%" PRIu64 " pages)",
			    i, e->page, hdr->block, label, b->npages);
		return -ERANGE;
	}
	if (e->kind >= TM_PAGE_KIND_COUNT) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA entry %u (page %u): invalid kind %u", i,
			    e->page, e->kind);
		return -EBADMSG;
	}
	if (e->tag_enc >= TM_TAG_ENC_COUNT) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA entry %u (page %u): invalid tag_enc %u",
			    i, e->page, e->tag_enc);
		return -EBADMSG;
	}
	if (!tags && e->tag_enc != TM_TAGS_ZERO) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA entry %u (page %u): tag_enc %s but the session has no tag feature", i,
			    e->page, enc_name(e->tag_enc));
		return -EBADMSG;
	}
	if (!tags && e->kind == TM_PAGE_ZERO_TAGGED) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA entry %u (page %u): kind ZERO_TAGGED but the session has no tag feature",
			    i, e->page);
		return -EBADMSG;
	}
	if (e->kind == TM_PAGE_ZERO && e->tag_enc != TM_TAGS_ZERO) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA entry %u (page %u): kind ZERO with tag_enc %s (must be TAGS_ZERO)", i,
			    e->page, enc_name(e->tag_enc));
		return -EBADMSG;
	}
	if (e->kind == TM_PAGE_ZERO_TAGGED && e->tag_enc == TM_TAGS_ZERO) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA entry %u (page %u): kind ZERO_TAGGED with tag_enc TAGS_ZERO", i,
			    e->page);
		return -EBADMSG;
	}
	/* page < 2^32 and page_size <= 2^16: the offset fits in 64 bits. */
	unsigned want = tm_channel_of(b->chunk_base, (uint64_t)e->page * b->page_size,
				      session->chunk_size, session->channel_count);
	if (channel != TM_CHANNEL_ANY && want != channel) {
		label = block_label(b);
		g_set_error(error, TM_ERROR, EPROTO,
			    "DATA entry %u: page %u of block %u '%s' arrived on channel %u, belongs to channel %u",
			    i, e->page, hdr->block, label, channel, want);
		return -EPROTO;
	}
	return 0;
}

int tm_data_entries_decode(const tm_data_hdr *hdr, const uint8_t *buf, size_t len,
			   const tm_hello *session, unsigned channel, uint32_t body_len,
			   tm_page_entry *out, GError **error)
{
	/* hdr normally comes from tm_data_hdr_decode(); recheck what indexes memory here. */
	if (hdr->block >= session->block_count) {
		g_set_error(error, TM_ERROR, ERANGE, "DATA: block %u out of range (%u blocks)",
			    hdr->block, session->block_count);
		return -ERANGE;
	}
	const tm_wire_block *b = &session->blocks[hdr->block];
	if (hdr->page_count == 0 || hdr->page_count > session->packet_size / b->page_size) {
		g_set_error(error, TM_ERROR, EMSGSIZE,
			    "DATA block %u: page_count %u outside 1..%u", hdr->block, hdr->page_count,
			    session->packet_size / b->page_size);
		return -EMSGSIZE;
	}
	if (channel != TM_CHANNEL_ANY && channel >= session->channel_count) {
		g_set_error(error, TM_ERROR, ERANGE, "DATA: channel %u out of range (%u channels)",
			    channel, session->channel_count);
		return -ERANGE;
	}
	uint64_t entries_len = (uint64_t)TM_PAGE_ENTRY_LEN * hdr->page_count;
	if (len < entries_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA entries truncated: %zu of %" PRIu64 " bytes (page_count %u)", len,
			    entries_len, hdr->page_count);
		return -EBADMSG;
	}

	/* First pass checks everything, so out[] is only written for a valid packet. */
	uint64_t data_len = 0, tag_len = 0;
	uint32_t prev = 0;
	for (uint32_t i = 0; i < hdr->page_count; i++) {
		tm_page_entry e;
		uint16_t reserved;

		parse_entry(buf + (size_t)i * TM_PAGE_ENTRY_LEN, &e, &reserved);
		int r = check_entry(hdr, session, channel, i, &e, reserved, error);
		if (r < 0)
			return r;
		/* Ascending: no page twice, so the order in which the receiver writes a packet's
		 * runs (long ones while receiving, short ones at the commit) cannot matter. */
		if (i > 0 && e.page <= prev) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DATA block %u entry %u: page %u after page %u "
				    "(a packet's pages ascend)",
				    hdr->block, i, e.page, prev);
			return -EBADMSG;
		}
		prev = e.page;
		if (e.kind == TM_PAGE_NORMAL)
			data_len += b->page_size;
		tag_len += tm_tag_payload_len(e.tag_enc, b->page_size);
	}
	if (data_len != hdr->data_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA block %u: data_len %u but the entries carry %" PRIu64 " bytes of data",
			    hdr->block, hdr->data_len, data_len);
		return -EBADMSG;
	}
	if (tag_len != hdr->tag_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA block %u: tag_len %u but the entries carry %" PRIu64 " bytes of tags",
			    hdr->block, hdr->tag_len, tag_len);
		return -EBADMSG;
	}
	uint64_t want = TM_DATA_HDR_LEN + entries_len + data_len + tag_len;
	if (want != body_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA block %u: body_len %u, expected %" PRIu64
			    " (16 + 8 * %u entries + data_len %u + tag_len %u)",
			    hdr->block, body_len, want, hdr->page_count, hdr->data_len, hdr->tag_len);
		return -EBADMSG;
	}

	for (uint32_t i = 0; i < hdr->page_count; i++) {
		uint16_t reserved;
		parse_entry(buf + (size_t)i * TM_PAGE_ENTRY_LEN, &out[i], &reserved);
	}
	return 0;
}

int tm_data_tags_expand(const tm_data_hdr *hdr, const tm_page_entry *entries, uint32_t page_size,
			const uint8_t *payload, size_t payload_len, uint8_t *tags, GError **error)
{
	if (page_size == 0 || page_size % 32u != 0) {
		g_set_error(error, TM_ERROR, EINVAL, "DATA tags: invalid page_size %u", page_size);
		return -EINVAL;
	}
	if (payload_len != hdr->tag_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA tags: payload of %zu bytes, tag_len is %u%s", payload_len,
			    hdr->tag_len, payload_len < hdr->tag_len ? " (truncated)" : "");
		return -EBADMSG;
	}

	/* First pass: payload bounds and uniform values, so tags[] is only written when valid. */
	size_t off = 0;
	for (uint32_t i = 0; i < hdr->page_count; i++) {
		const tm_page_entry *e = &entries[i];
		size_t need = tm_tag_payload_len(e->tag_enc, page_size);

		if (e->tag_enc >= TM_TAG_ENC_COUNT) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DATA entry %u (page %u): invalid tag_enc %u", i, e->page,
				    e->tag_enc);
			return -EBADMSG;
		}
		if (payload_len - off < need) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DATA entry %u (page %u): %s tag payload truncated (%zu of %zu bytes)",
				    i, e->page, enc_name(e->tag_enc), payload_len - off, need);
			return -EBADMSG;
		}
		if (e->tag_enc == TM_TAGS_UNIFORM && (payload[off] & 0xf0)) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "DATA entry %u (page %u): uniform tag byte 0x%02x has the high nibble set",
				    i, e->page, payload[off]);
			return -EBADMSG;
		}
		off += need;
	}
	if (off != payload_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "DATA tags: %zu bytes of payload left over after %u entries",
			    payload_len - off, hdr->page_count);
		return -EBADMSG;
	}

	size_t granules = page_size / TM_TAG_GRANULE;
	off = 0;
	for (uint32_t i = 0; i < hdr->page_count; i++) {
		uint8_t *t = tags + (size_t)i * granules;

		switch (entries[i].tag_enc) {
		case TM_TAGS_ZERO:
			memset(t, 0, granules);
			break;
		case TM_TAGS_UNIFORM:
			memset(t, payload[off], granules);
			off += 1;
			break;
		case TM_TAGS_PACKED:
			tm_tags_unpack(payload + off, granules, t);
			off += page_size / 32u;
			break;
		}
	}
	return 0;
}

/* ---- receiver: the receive plan ---- */

void tm_recv_plan_init(tm_recv_plan *plan, uint32_t packet_size)
{
	uint32_t max_pages = packet_size / 4096u;

	memset(plan, 0, sizeof(*plan));
	plan->max_entries = max_pages;
	plan->head = g_malloc(TM_DATA_HDR_LEN + (size_t)max_pages * TM_PAGE_ENTRY_LEN);
	plan->entries = g_new(tm_page_entry, max_pages);
	/* PACKED for every page is the most: page_size / 32 bytes per page, plus one per page. */
	plan->tag_payload = g_malloc(packet_size / 32u + max_pages);
	plan->tags = g_malloc(packet_size / TM_TAG_GRANULE);
	/* One run per page when no two pages are adjacent, and the tags. */
	plan->iov = g_new(struct iovec, max_pages + 1);
	plan->stage = tm_guest_buf_new_resident(packet_size); /* every round with short runs writes it */
	plan->stage_runs = g_new(tm_stage_run, max_pages);
	plan->packet_size = packet_size;
}

void tm_recv_plan_fini(tm_recv_plan *plan)
{
	if (!plan)
		return;
	g_free(plan->head);
	g_free(plan->entries);
	g_free(plan->tag_payload);
	g_free(plan->tags);
	g_free(plan->iov);
	/* Guest memory (with TLS: decrypted) does not outlive the channel: unmapped. */
	tm_guest_buf_free(plan->stage, plan->packet_size);
	g_free(plan->stage_runs);
	tm_guest_buf_free(plan->zbuf, plan->packet_size);
	g_free(plan->zpages);
	memset(plan, 0, sizeof(*plan));
}

int tm_recv_plan_begin(tm_recv_plan *plan, const tm_hello *session, uint32_t body_len,
		       GError **error)
{
	plan->session = NULL;
	plan->stage_run_count = 0;
	plan->zcodec = 0;
	plan->zlen = 0;
	plan->iov_count = plan->data_iov_count = 0;
	plan->payload_len = 0;
	if (body_len < TM_DATA_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA body of %u bytes is truncated", body_len);
		return -EBADMSG;
	}
	plan->session = session;
	plan->body_len = body_len;
	return TM_DATA_HDR_LEN;
}

int tm_recv_plan_header(tm_recv_plan *plan, GError **error)
{
	int r = tm_data_hdr_decode(plan->head, TM_DATA_HDR_LEN, plan->session, &plan->hdr, error);
	if (r < 0)
		return r;
	/* tm_data_hdr_decode() bounds page_count by packet_size / page_size <= max_entries. */
	g_assert(plan->hdr.page_count <= plan->max_entries);
	size_t elen = (size_t)plan->hdr.page_count * TM_PAGE_ENTRY_LEN;
	if (elen > plan->body_len - TM_DATA_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "DATA with %u pages is truncated at %u bytes",
			    plan->hdr.page_count, plan->body_len);
		return -EBADMSG;
	}
	plan->page_size = plan->session->blocks[plan->hdr.block].page_size;
	return (int)elen;
}

int tm_recv_plan_entries(tm_recv_plan *plan, unsigned channel, uint8_t *block_host,
			 GError **error)
{
	const tm_data_hdr *hdr = &plan->hdr;
	uint32_t body_len = plan->body_len;
	int r = plan->zcodec ? tm_recv_plan_zcheck(plan, &body_len, error) : 0;
	if (r < 0)
		return r;
	r = tm_data_entries_decode(hdr, plan->head + TM_DATA_HDR_LEN,
				   (size_t)hdr->page_count * TM_PAGE_ENTRY_LEN, plan->session,
				   channel, body_len, plan->entries, error);
	if (r < 0)
		return r;
	plan->block_host = block_host;
	if (plan->zcodec) {
		/* The compressed bytes go to zbuf; tm_recv_plan_decompress() fills the pages once
		 * the tags are checked. */
		unsigned n = 0;
		plan->iov[n].iov_base = plan->zbuf;
		plan->iov[n++].iov_len = plan->zlen;
		plan->data_iov_count = 0; /* nothing of guest RAM to populate for the socket */
		if (hdr->tag_len) {
			plan->iov[n].iov_base = plan->tag_payload;
			plan->iov[n++].iov_len = hdr->tag_len;
		}
		plan->iov_count = n;
		plan->payload_len = (size_t)plan->zlen + hdr->tag_len;
		return 0;
	}

	/*
	 * Every page is inside the block (checked above). A run of NORMAL pages (adjacent in RAM
	 * and on the wire) goes straight into RAM when it is long; a short one goes to the stage
	 * (see codec.h). Every run is staged when the tag payload that follows the data still holds
	 * something to check (a uniform tag byte may have its high nibble set): the data then waits
	 * until tm_recv_plan_tags() accepted the tags. Packed tags are valid whatever their bytes.
	 */
	bool stage_all = false;
	for (uint32_t i = 0; i < hdr->page_count && hdr->data_len; i++)
		stage_all = stage_all || plan->entries[i].tag_enc == TM_TAGS_UNIFORM;
	const uint8_t *run_end = NULL;
	unsigned n = 0;
	uint32_t staged = 0; /* bytes of the stage used */
	for (uint32_t i = 0; i < hdr->page_count;) {
		if (plan->entries[i].kind != TM_PAGE_NORMAL) {
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < hdr->page_count && plan->entries[j].kind == TM_PAGE_NORMAL &&
		       plan->entries[j].page == plan->entries[j - 1].page + 1)
			j++;
		/* NORMAL pages x page_size = data_len <= packet_size (the decoders): fits the stage */
		uint32_t len = (j - i) * plan->page_size;
		uint8_t *ram = block_host + (uint64_t)plan->entries[i].page * plan->page_size;
		if (stage_all || len < TM_STAGE_RUN_MAX) {
			plan->stage_runs[plan->stage_run_count++] =
				(tm_stage_run){ .to = ram, .off = staged, .len = len };
			iov_append_run(plan->iov, &n, 0, &run_end, plan->stage + staged, len);
			staged += len;
		} else {
			iov_append_run(plan->iov, &n, 0, &run_end, ram, len);
		}
		i = j;
	}
	plan->data_iov_count = n;
	if (hdr->tag_len) {
		plan->iov[n].iov_base = plan->tag_payload;
		plan->iov[n++].iov_len = hdr->tag_len;
	}
	plan->iov_count = n;
	plan->payload_len = (size_t)hdr->data_len + hdr->tag_len;
	return 0;
}

int tm_recv_plan_tags(tm_recv_plan *plan, GError **error)
{
	if (!(plan->session->features & TM_FEATURE_TAGS_MTE4))
		return 0;
	return tm_data_tags_expand(&plan->hdr, plan->entries, plan->page_size, plan->tag_payload,
				   plan->hdr.tag_len, plan->tags, error);
}

void tm_recv_plan_commit(tm_recv_plan *plan)
{
	if (!plan->stage_run_count)
		return;
	for (unsigned i = 0; i < plan->stage_run_count; i++) {
		const tm_stage_run *r = &plan->stage_runs[i];
		tm_stream_copy(r->to, plan->stage + r->off, r->len);
	}
	tm_stream_copy_fence(); /* before the presence bits say these pages are in */
}

bool tm_recv_plan_iov_staged(const tm_recv_plan *plan, unsigned i)
{
	const uint8_t *p = plan->iov[i].iov_base;
	return i < plan->data_iov_count && p >= plan->stage && p < plan->stage + plan->packet_size;
}

uint32_t tm_recv_plan_run_end(const tm_recv_plan *plan, uint32_t i)
{
	uint32_t j = i + 1;
	while (j < plan->hdr.page_count && plan->entries[j].page == plan->entries[j - 1].page + 1)
		j++;
	return j;
}

/* ---- sender ---- */

void tm_packet_init(tm_packet *pkt, uint32_t packet_size)
{
	uint32_t max_entries = packet_size / 4096u;

	memset(pkt, 0, sizeof(*pkt));
	pkt->version = TM_WIRE_VERSION_1;
	pkt->hdr_cap = TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN + (size_t)TM_PAGE_ENTRY_LEN * max_entries;
	pkt->hdr = g_malloc(pkt->hdr_cap);
	/* PACKED for every page is the most: page_size / 32 bytes per page_size bytes. */
	pkt->tag_cap = packet_size / 32u;
	pkt->tagbuf = g_malloc(pkt->tag_cap ? pkt->tag_cap : 1);
	/* Header, one run per page when no two pages are adjacent, tags. */
	pkt->iov_cap = 1 + max_entries + 1;
	pkt->iov = g_new(struct iovec, pkt->iov_cap);
}

void tm_packet_fini(tm_packet *pkt)
{
	if (!pkt)
		return;
	g_free(pkt->hdr);
	g_free(pkt->tagbuf);
	g_free(pkt->iov);
	tm_guest_buf_free(pkt->zbuf, pkt->zcap); /* compressed guest memory: as tm_recv_plan_fini */
	g_free(pkt->zpages);
	memset(pkt, 0, sizeof(*pkt));
}

void tm_packet_begin(tm_packet *pkt, uint32_t block, uint32_t page_size, uint32_t packet_size)
{
	g_assert(page_size >= 4096 && page_size % 4096 == 0);
	pkt->block = block;
	pkt->page_size = page_size;
	pkt->max_pages = packet_size / page_size;
	/* The buffers were sized by tm_packet_init() for at most this many 4 KiB pages. */
	g_assert((size_t)pkt->max_pages * (page_size / 4096u) <= pkt->iov_cap - 2);
	pkt->page_count = 0;
	pkt->data_len = 0;
	pkt->tag_len = 0;
	pkt->iov_count = 1; /* iov[0] is the header, filled by tm_packet_finish() */
	pkt->run_end = NULL;
}

tm_page_kind tm_packet_add(tm_packet *pkt, uint32_t page, const uint8_t *data, bool data_is_zero,
			   const uint8_t *tags, tm_tag_enc *ret_enc)
{
	g_assert(pkt->page_count < pkt->max_pages && tm_packet_takes(pkt, page));
	pkt->last_page = page;

	uint32_t granules = pkt->page_size / TM_TAG_GRANULE;
	uint8_t value = 0;
	tm_tag_enc enc = tags ? tm_tags_classify(tags, granules, &value) : TM_TAGS_ZERO;
	tm_page_kind kind;

	if (data_is_zero) {
		kind = enc == TM_TAGS_ZERO ? TM_PAGE_ZERO : TM_PAGE_ZERO_TAGGED;
	} else {
		kind = TM_PAGE_NORMAL;
		g_assert(data);
		/* iov[0] is the header: runs start at 1. */
		iov_append_run(pkt->iov, &pkt->iov_count, 1, &pkt->run_end, data, pkt->page_size);
		pkt->data_len += pkt->page_size;
	}

	switch (enc) {
	case TM_TAGS_UNIFORM:
		pkt->tagbuf[pkt->tag_len] = value;
		pkt->tag_len += 1;
		break;
	case TM_TAGS_PACKED:
		tm_tags_pack(tags, granules, pkt->tagbuf + pkt->tag_len);
		pkt->tag_len += pkt->page_size / 32u;
		break;
	default:
		break;
	}

	uint8_t *p = pkt->hdr + TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN +
		     (size_t)pkt->page_count * TM_PAGE_ENTRY_LEN;
	tm_put32(p, page);
	p[4] = (uint8_t)kind;
	p[5] = (uint8_t)enc;
	tm_put16(p + 6, 0);
	pkt->page_count++;

	if (ret_enc)
		*ret_enc = enc;
	return kind;
}

unsigned tm_packet_finish(tm_packet *pkt, uint32_t seq, size_t *ret_len)
{
	g_assert(pkt->page_count > 0);

	size_t hdr_len = TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN +
			 (size_t)pkt->page_count * TM_PAGE_ENTRY_LEN;
	uint32_t body_len = (uint32_t)(hdr_len - TM_FRAME_HDR_LEN) + pkt->data_len + pkt->tag_len;

	tm_frame_encode_v(pkt->hdr, pkt->version, TM_MSG_DATA, body_len, seq);
	uint8_t *d = pkt->hdr + TM_FRAME_HDR_LEN;
	tm_put32(d, pkt->block);
	tm_put32(d + 4, pkt->page_count);
	tm_put32(d + 8, pkt->data_len);
	tm_put32(d + 12, pkt->tag_len);

	pkt->iov[0].iov_base = pkt->hdr;
	pkt->iov[0].iov_len = hdr_len;
	/* The tag iovec is not counted in iov_count, so finishing twice gives the same result. */
	unsigned count = pkt->iov_count;
	if (pkt->tag_len > 0) {
		pkt->iov[count].iov_base = pkt->tagbuf;
		pkt->iov[count].iov_len = pkt->tag_len;
		count++;
	}
	if (ret_len)
		*ret_len = TM_FRAME_HDR_LEN + (size_t)body_len;
	return count;
}
