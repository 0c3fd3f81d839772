/* SPDX-License-Identifier: MIT */
/*
 * ZDATA (docs/wire-format.md, "ZDATA"): a DATA packet whose page data travels compressed, with
 * a codec both sides agreed on in HELLO / HELLO_ACK. Reader and writer of the message: the
 * receive plan's compressed variant (the compressed bytes land in a per-channel buffer, never in
 * guest RAM, and are decoded into the packet's own pages only after every field and the tags
 * were checked) and the sender's packet, rewritten around the compressed data. No I/O.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/compress.h"
#include "common/guest-buf.h"
#include "tagmig/error.h"

static uint32_t codec_feature(uint8_t codec)
{
	return codec == TM_ZCODEC_LZ4 ? TM_FEATURE_LZ4 : codec == TM_ZCODEC_ZSTD ? TM_FEATURE_ZSTD : 0;
}

/* ---- receiver ---- */

int tm_recv_plan_begin_z(tm_recv_plan *plan, const tm_hello *session, uint32_t features,
			 uint32_t body_len, GError **error)
{
	int r = tm_recv_plan_begin(plan, session, body_len, error);
	if (r < 0)
		return r;
	if (body_len < TM_ZDATA_HDR_LEN + TM_DATA_HDR_LEN) {
		plan->session = NULL;
		g_set_error(error, TM_ERROR, EBADMSG, "ZDATA body of %u bytes is truncated", body_len);
		return -EBADMSG;
	}
	plan->features = features;
	return TM_ZDATA_HDR_LEN;
}

int tm_recv_plan_zheader(tm_recv_plan *plan, GError **error)
{
	const uint8_t *p = plan->zhdr;
	uint8_t codec = p[0];
	uint32_t reserved = (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16;
	uint32_t zlen = tm_get32(p + 4);

	if (codec != TM_ZCODEC_LZ4 && codec != TM_ZCODEC_ZSTD) {
		g_set_error(error, TM_ERROR, EBADMSG, "ZDATA: unknown codec %u (1 lz4, 2 zstd)",
			    codec);
		return -EBADMSG;
	}
	if (!(plan->features & codec_feature(codec))) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "ZDATA: codec %s was not agreed in the handshake (features 0x%08x)",
			    tm_zcodec_name(codec), plan->features);
		return -EPROTO;
	}
	if (reserved != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "ZDATA: reserved bytes are 0x%06x, must be 0", reserved);
		return -EBADMSG;
	}
	/* The DATA body that follows holds its header and the compressed bytes at least. */
	uint32_t rest = plan->body_len - TM_ZDATA_HDR_LEN;
	if (zlen == 0 || (uint64_t)zlen + TM_DATA_HDR_LEN > rest) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "ZDATA: zlen %u outside 1..%u (body of %u bytes)", zlen,
			    rest > TM_DATA_HDR_LEN ? rest - TM_DATA_HDR_LEN : 0, plan->body_len);
		return -EBADMSG;
	}
	plan->zcodec = codec;
	plan->zlen = zlen;
	plan->body_len = rest;
	if (!plan->zbuf) {
		plan->zbuf = tm_guest_buf_new(plan->packet_size);
		plan->zpages = g_new(uint8_t *, plan->max_entries);
	}
	return TM_DATA_HDR_LEN;
}

int tm_recv_plan_zcheck(tm_recv_plan *plan, uint32_t *body_len, GError **error)
{
	const tm_data_hdr *hdr = &plan->hdr;

	/*
	 * A compressed section is shorter than the pages it stands for: anything else is not what a
	 * sender makes (it sends such a packet raw), and this bounds zbuf by packet_size.
	 */
	if (hdr->data_len == 0 || plan->zlen >= hdr->data_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "ZDATA block %u: zlen %u for data_len %u (must be 1..data_len - 1)",
			    hdr->block, plan->zlen, hdr->data_len);
		return -EBADMSG;
	}
	/* zheader checked zlen + 16 <= body_len: no underflow; the sum is checked by the entries. */
	uint64_t as_data = (uint64_t)*body_len - plan->zlen + hdr->data_len;
	if (as_data > UINT32_MAX) {
		g_set_error(error, TM_ERROR, EBADMSG, "ZDATA block %u: body_len %u inconsistent",
			    hdr->block, *body_len);
		return -EBADMSG;
	}
	*body_len = (uint32_t)as_data;
	return 0;
}

int tm_recv_plan_decompress(tm_recv_plan *plan, tm_zctx *z, GError **error)
{
	unsigned n = 0;

	if (!plan->zcodec)
		return 0;
	for (uint32_t i = 0; i < plan->hdr.page_count; i++)
		if (plan->entries[i].kind == TM_PAGE_NORMAL)
			plan->zpages[n++] = plan->block_host +
					    (uint64_t)plan->entries[i].page * plan->page_size;
	/* tm_recv_plan_zcheck() and the entries: n * page_size == data_len <= packet_size. */
	g_assert((uint64_t)n * plan->page_size == plan->hdr.data_len);
	return tm_zdecompress(z, plan->zcodec, plan->zbuf, plan->zlen, plan->zpages, n,
			      plan->page_size, error);
}

/* ---- sender ---- */

ssize_t tm_packet_compress(tm_packet *pkt, tm_zctx *z, uint8_t codec, int level,
			   uint32_t max_pages, uint32_t at, GError **error)
{
	if (pkt->data_len == 0)
		return 0;
	if (!pkt->zbuf) {
		pkt->zcap = tm_zctx_bound(z);
		pkt->zbuf = tm_guest_buf_new(pkt->zcap);
		/* As many page pointers as 4 KiB pages fit: the most any page size needs. */
		pkt->zpages = g_new(uint8_t *, pkt->iov_cap);
	}
	unsigned n = 0;
	for (unsigned i = 1; i < pkt->iov_count; i++)
		for (size_t off = 0; off < pkt->iov[i].iov_len; off += pkt->page_size)
			pkt->zpages[n++] = (uint8_t *)pkt->iov[i].iov_base + off;
	g_assert((uint64_t)n * pkt->page_size == pkt->data_len);
	uint8_t **pages = pkt->zpages;
	if (max_pages && max_pages < n) {
		pages += at % (n - max_pages + 1);
		n = max_pages;
	}
	ssize_t r = tm_zcompress(z, codec, level, pages, n, pkt->page_size, pkt->zbuf,
				 pkt->zcap, error);
	/* Not smaller than the pages: raw. (tm_zcompress says 0 then; be strict about equal.) */
	if (r >= (ssize_t)((uint64_t)n * pkt->page_size))
		return 0;
	return r;
}

unsigned tm_packet_finish_z(tm_packet *pkt, uint8_t codec, size_t zlen, size_t *ret_len)
{
	g_assert(zlen > 0 && zlen < pkt->data_len);
	size_t dhdr_len = TM_DATA_HDR_LEN + (size_t)pkt->page_count * TM_PAGE_ENTRY_LEN;
	uint32_t body_len = (uint32_t)(TM_ZDATA_HDR_LEN + dhdr_len + zlen + pkt->tag_len);
	uint32_t seq = tm_get32(pkt->hdr + 12); /* tm_packet_finish() wrote it */

	tm_frame_encode_v(pkt->zhdr, pkt->version, TM_MSG_ZDATA, body_len, seq);
	uint8_t *p = pkt->zhdr + TM_FRAME_HDR_LEN;
	p[0] = codec;
	p[1] = p[2] = p[3] = 0;
	tm_put32(p + 4, (uint32_t)zlen);

	unsigned n = 0;
	pkt->ziov[n++] = (struct iovec){ pkt->zhdr, sizeof(pkt->zhdr) };
	pkt->ziov[n++] = (struct iovec){ pkt->hdr + TM_FRAME_HDR_LEN, dhdr_len };
	pkt->ziov[n++] = (struct iovec){ pkt->zbuf, zlen };
	if (pkt->tag_len)
		pkt->ziov[n++] = (struct iovec){ pkt->tagbuf, pkt->tag_len };
	if (ret_len)
		*ret_len = TM_FRAME_HDR_LEN + (size_t)body_len;
	return n;
}
