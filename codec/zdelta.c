/* SPDX-License-Identifier: MIT */
/*
 * ZDELTA (delta-wire.h, docs/wire-format.md "ZDELTA"): a DELTA whose deltas are one zstd frame,
 * sent when DELTA and ZSTD are both agreed and the frame is shorter. Writer and reader; the
 * reader checks every size before it decodes and decodes into the receiver's own DELTA buffer,
 * so that the DELTA reader (delta-wire.c) checks the result as any DELTA.
 */
#include <errno.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/compress.h"
#include "codec/delta-wire.h"
#include "tagmig/error.h"

uint32_t tm_zdelta_max_body(uint32_t packet_size)
{
	uint64_t n = tm_delta_max_body(packet_size);

	return n == 0 ? 0 : n + TM_ZDELTA_HDR_LEN > UINT32_MAX ? UINT32_MAX
							    : (uint32_t)(n + TM_ZDELTA_HDR_LEN);
}

unsigned tm_zdelta_finish(const tm_delta_pkt *pkt, uint8_t *zhead, uint8_t version, uint32_t seq,
			  const uint8_t *zdata, uint32_t zlen, struct iovec *iov, size_t *ret_len)
{
	size_t head = TM_DELTA_HDR_LEN + (size_t)pkt->page_count * TM_DELTA_ENTRY_LEN;
	uint32_t body_len = (uint32_t)(TM_ZDELTA_HDR_LEN + head + zlen + pkt->tag_len);
	uint8_t *z = zhead + TM_FRAME_HDR_LEN;
	unsigned n = 0;

	g_assert(zlen > 0 && zlen < pkt->data_len);
	tm_frame_encode_v(zhead, version, TM_MSG_ZDELTA, body_len, seq);
	memset(z, 0, TM_ZDELTA_HDR_LEN);
	z[0] = TM_ZCODEC_ZSTD;
	tm_put32(z + 4, zlen);
	iov[n++] = (struct iovec){ zhead, TM_FRAME_HDR_LEN + TM_ZDELTA_HDR_LEN };
	/* The DELTA header and entries tm_delta_pkt_finish() wrote, behind its frame header. */
	iov[n++] = (struct iovec){ pkt->head + TM_FRAME_HDR_LEN, head };
	iov[n++] = (struct iovec){ (void *)zdata, zlen };
	if (pkt->tag_len)
		iov[n++] = (struct iovec){ pkt->tagbuf, pkt->tag_len };
	*ret_len = TM_FRAME_HDR_LEN + (size_t)body_len;
	return n;
}

int tm_zdelta_unpack(const uint8_t *in, uint32_t body_len, const tm_hello *session,
		     uint32_t agreed, tm_zctx *z, uint8_t *out, uint32_t *ret_len,
		     GError **error)
{
	uint32_t max_entries = session->packet_size / 4096u;

	if (body_len < TM_ZDELTA_HDR_LEN + TM_DELTA_HDR_LEN ||
	    body_len > tm_zdelta_max_body(session->packet_size)) {
		g_set_error(error, TM_ERROR, EBADMSG, "ZDELTA body of %u bytes (%u..%u)", body_len,
			    TM_ZDELTA_HDR_LEN + TM_DELTA_HDR_LEN,
			    tm_zdelta_max_body(session->packet_size));
		return -EBADMSG;
	}
	if (in[0] != TM_ZCODEC_ZSTD || in[1] || in[2] || in[3]) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    in[0] != TM_ZCODEC_ZSTD ? "ZDELTA: codec %u, must be 2 (zstd)"
						    : "ZDELTA: reserved bytes not 0 (codec %u)",
			    in[0]);
		return -EBADMSG;
	}
	if (!(agreed & TM_FEATURE_ZSTD)) {
		g_set_error(error, TM_ERROR, EPROTO, "ZDELTA: codec zstd was not agreed");
		return -EPROTO;
	}
	const uint8_t *d = in + TM_ZDELTA_HDR_LEN;
	uint32_t zlen = tm_get32(in + 4), count = tm_get32(d + 4);
	uint32_t data_len = tm_get32(d + 8), tag_len = tm_get32(d + 12);
	if (count == 0 || count > max_entries) {
		g_set_error(error, TM_ERROR, count ? EMSGSIZE : EBADMSG,
			    "ZDELTA: page_count %u outside 1..%u", count, max_entries);
		return count ? -EMSGSIZE : -EBADMSG;
	}
	/* The frame replaces data_len bytes of deltas and is shorter: anything else, before a
	 * byte is decoded (data_len bounds the output: no bomb gets more room). */
	if (data_len > session->packet_size || zlen == 0 || zlen >= data_len) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "ZDELTA: zlen %u for data_len %u (1..data_len - 1, data_len at most %u)",
			    zlen, data_len, session->packet_size);
		return -EBADMSG;
	}
	uint64_t head = TM_DELTA_HDR_LEN + (uint64_t)TM_DELTA_ENTRY_LEN * count;
	uint64_t want = TM_ZDELTA_HDR_LEN + head + zlen + tag_len;
	uint64_t delta_len = head + data_len + tag_len;
	if (want != body_len || delta_len > tm_delta_max_body(session->packet_size)) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "ZDELTA: body of %u bytes, header says %" G_GUINT64_FORMAT
			    " (%u entries, zlen %u, data_len %u, tag_len %u)",
			    body_len, want, count, zlen, data_len, tag_len);
		return -EBADMSG;
	}
	g_autoptr(GError) why = NULL;
	int r = tm_zdecompress_buf(z, d + head, zlen, out + head, data_len, &why);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "ZDELTA (zstd, %u bytes for %u of deltas): %s", zlen,
			    data_len, why->message);
		return r;
	}
	memcpy(out, d, head);
	memcpy(out + head + data_len, d + head + zlen, tag_len);
	*ret_len = (uint32_t)delta_len;
	return 0;
}
