/* SPDX-License-Identifier: MIT */
/*
 * Frame header (docs/wire-format.md, "Frame header"): the 16 bytes in front of every message, and
 * the per-type body limits a receiver enforces before it reads (or allocates for) a body.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/delta-wire.h"
#include "tagmig/error.h"

static const uint8_t frame_magic[4] = { 'T', 'M', 'I', 'G' };

const char *tm_msg_name(uint8_t type)
{
	switch (type) {
	case TM_MSG_HELLO:
		return "HELLO";
	case TM_MSG_HELLO_ACK:
		return "HELLO_ACK";
	case TM_MSG_DATA:
		return "DATA";
	case TM_MSG_SYNC:
		return "SYNC";
	case TM_MSG_SYNC_ACK:
		return "SYNC_ACK";
	case TM_MSG_END:
		return "END";
	case TM_MSG_END_ACK:
		return "END_ACK";
	case TM_MSG_ERROR:
		return "ERROR";
	case TM_MSG_STATE:
		return "STATE";
	case TM_MSG_DISCARD:
		return "DISCARD";
	case TM_MSG_RAM_END:
		return "RAM_END";
	case TM_MSG_PING:
		return "PING";
	case TM_MSG_PONG:
		return "PONG";
	case TM_MSG_POSTCOPY:
		return "POSTCOPY";
	case TM_MSG_READY:
		return "READY";
	case TM_MSG_PAGE_REQ:
		return "PAGE_REQ";
	case TM_MSG_URGENT:
		return "URGENT";
	case TM_MSG_ZDATA:
		return "ZDATA";
	case TM_MSG_DELTA:
		return "DELTA";
	case TM_MSG_DELTA_NACK:
		return "DELTA_NACK";
	case TM_MSG_REQ_END:
		return "REQ_END";
	case TM_MSG_RESUME:
		return "RESUME";
	case TM_MSG_RESUME_ACK:
		return "RESUME_ACK";
	case TM_MSG_CTL_RESUME:
		return "CTL_RESUME";
	case TM_MSG_CTL_POS:
		return "CTL_POS";
	case TM_MSG_ZDELTA:
		return "ZDELTA";
	case TM_MSG_CONN_LOST:
		return "CONN_LOST";
	case TM_MSG_LINK_Q:
		return "LINK_Q";
	case TM_MSG_LINK_A:
		return "LINK_A";
	default:
		return "unknown";
	}
}

/*
 * The control messages' fixed body sizes are part of the per-type limits: they live here, so that
 * control.c builds on frame.c and not the other way round.
 */
uint32_t tm_ctrl_body_len(uint8_t version, uint8_t type)
{
	if (version == TM_WIRE_VERSION_1) {
		switch (type) {
		case TM_MSG_HELLO_ACK:
		case TM_MSG_SYNC:
		case TM_MSG_END_ACK:
			return 8;
		case TM_MSG_SYNC_ACK:
		case TM_MSG_END:
			return 16;
		default:
			return 0;
		}
	}
	if (version != TM_WIRE_VERSION_2)
		return 0;
	/* HELLO_ACK v2 has fields of its own (tm_hello_ack_*): not a control message here. */
	switch (type) {
	case TM_MSG_SYNC:
		return 8;
	case TM_MSG_SYNC_ACK:
		return 16;
	case TM_MSG_END:
		return TM_END2_LEN;
	case TM_MSG_END_ACK:
		return TM_END_ACK2_LEN;
	case TM_MSG_PING:
	case TM_MSG_PONG:
		return 8;
	case TM_MSG_CONN_LOST:
	case TM_MSG_LINK_Q:
		return 16;
	case TM_MSG_LINK_A:
		return 40;
	default:
		return 0;
	}
}

/* Worst case of a DATA body of packet_size bytes of page data: every page 4 KiB, NORMAL, PACKED. */
static uint64_t data_max(uint64_t packet_size)
{
	return TM_DATA_HDR_LEN + TM_PAGE_ENTRY_LEN * (packet_size / 4096u) + packet_size +
	       packet_size / 32u;
}

static uint32_t clamp32(uint64_t n)
{
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

uint32_t tm_frame_max_body(uint8_t version, uint8_t type, uint32_t packet_size)
{
	if (version != TM_WIRE_VERSION_1 && version != TM_WIRE_VERSION_2)
		return 0;
	if (version == TM_WIRE_VERSION_1 && type > TM_MSG_LAST_V1)
		return 0;
	switch (type) {
	case TM_MSG_HELLO:
		return TM_HELLO_FIXED_LEN + TM_MAX_BLOCKS * (TM_HELLO_BLOCK_LEN + TM_MAX_BLOCK_NAME);
	case TM_MSG_HELLO_ACK:
		return version == TM_WIRE_VERSION_1 ? 8 : TM_HELLO_ACK2_LEN;
	case TM_MSG_SYNC:
	case TM_MSG_END_ACK:
	case TM_MSG_SYNC_ACK:
	case TM_MSG_END:
		return tm_ctrl_body_len(version, type);
	case TM_MSG_ERROR:
		return TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE;
	/*
	 * Bodies that carry guest data: packet_size 0 means no session yet, so none may arrive. The
	 * sums are done in 64 bits and clamped because packet_size comes from a caller that may not
	 * have validated it yet.
	 */
	case TM_MSG_DATA:
		return packet_size == 0 ? 0 : clamp32(data_max(packet_size));
	case TM_MSG_ZDATA:
		/* The compressed data is shorter than the pages it replaces (docs/wire-format.md). */
		return packet_size == 0 ? 0 : clamp32(TM_ZDATA_HDR_LEN + data_max(packet_size));
	case TM_MSG_DELTA:
		return tm_delta_max_body(packet_size);
	case TM_MSG_DELTA_NACK:
		return tm_delta_nack_max_body(packet_size);
	case TM_MSG_ZDELTA:
		return tm_zdelta_max_body(packet_size);
	case TM_MSG_STATE:
		return packet_size == 0 ? 0 :
					  clamp32((uint64_t)TM_STATE_HDR_LEN + TM_MAX_STATE_NAME + packet_size);
	case TM_MSG_URGENT:
		/* req_id, then a DATA body of at most TM_MAX_REQ_PAGES pages of 64 KiB, PACKED. */
		return packet_size == 0 ? 0 :
					  clamp32(8u + TM_DATA_HDR_LEN +
						  (uint64_t)TM_MAX_REQ_PAGES *
							  (TM_PAGE_ENTRY_LEN + 65536u + 65536u / 32u));
	case TM_MSG_DISCARD:
		return TM_DISCARD_HDR_LEN + 8u * TM_MAX_DISCARD_RANGES;
	case TM_MSG_RAM_END:
	case TM_MSG_PAGE_REQ:
		return 24;
	case TM_MSG_PING:
	case TM_MSG_PONG:
	case TM_MSG_POSTCOPY:
	case TM_MSG_READY:
	case TM_MSG_REQ_END:
		return 8;
	case TM_MSG_CONN_LOST:
	case TM_MSG_LINK_Q:
		return 16;
	case TM_MSG_LINK_A:
		return 40;
	case TM_MSG_RESUME:
		return TM_RESUME_LEN;
	case TM_MSG_RESUME_ACK:
		return TM_RESUME_ACK_LEN;
	case TM_MSG_CTL_RESUME:
		return TM_CTL_RESUME_LEN;
	case TM_MSG_CTL_POS:
		return TM_CTL_POS_LEN;
	default:
		return 0;
	}
}

void tm_frame_encode(uint8_t out[TM_FRAME_HDR_LEN], uint8_t type, uint32_t body_len, uint32_t seq)
{
	tm_frame_encode_v(out, TM_WIRE_VERSION_1, type, body_len, seq);
}

void tm_frame_encode_v(uint8_t out[TM_FRAME_HDR_LEN], uint8_t version, uint8_t type,
		       uint32_t body_len, uint32_t seq)
{
	memcpy(out, frame_magic, sizeof(frame_magic));
	out[4] = version;
	out[5] = type;
	tm_put16(out + 6, 0);
	tm_put32(out + 8, body_len);
	tm_put32(out + 12, seq);
}

int tm_frame_decode(const uint8_t *buf, size_t len, uint8_t version, uint32_t packet_size,
		    tm_frame *ret, GError **error)
{
	if (len < TM_FRAME_HDR_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "frame header truncated: %zu of %u bytes", len, TM_FRAME_HDR_LEN);
		return -EBADMSG;
	}
	if (memcmp(buf, frame_magic, sizeof(frame_magic)) != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "frame header: bad magic %02x %02x %02x %02x (expected 'TMIG')",
			    buf[0], buf[1], buf[2], buf[3]);
		return -EBADMSG;
	}
	/*
	 * Version before anything else that could change between versions, so the peer learns why.
	 * A caller that speaks only protocol 1 says so: its peer then hears "supported: 1", the
	 * words a tagmig 0.1 receiver uses (a protocol 2 sender recognises them).
	 */
	uint8_t v = buf[4];
	uint8_t max = version == TM_WIRE_VERSION_1 ? TM_WIRE_VERSION_1 : TM_WIRE_VERSION_2;
	if (v < TM_WIRE_VERSION_1 || v > max) {
		if (max == TM_WIRE_VERSION_1)
			g_set_error(error, TM_ERROR, EPROTONOSUPPORT,
				    "frame header: unsupported protocol version %u (supported: 1)", v);
		else
			g_set_error(error, TM_ERROR, EPROTONOSUPPORT,
				    "frame header: unsupported protocol version %u (supported: 1..%u)",
				    v, max);
		return -EPROTONOSUPPORT;
	}
	if (version != 0 && v != version) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "frame header: protocol %u frame in a protocol %u session", v, version);
		return -EPROTO;
	}
	uint8_t type = buf[5];
	uint8_t last = v == TM_WIRE_VERSION_1 ? TM_MSG_LAST_V1 : TM_MSG_LAST_V2;
	if (type < TM_MSG_HELLO || type > last) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "frame header: unknown message type %u in protocol %u", type, v);
		return -EBADMSG;
	}
	uint16_t reserved = tm_get16(buf + 6);
	if (reserved != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "frame header (%s): reserved field is 0x%04x, must be 0", tm_msg_name(type),
			    reserved);
		return -EBADMSG;
	}
	if ((type == TM_MSG_DATA || type == TM_MSG_ZDATA || type == TM_MSG_STATE ||
	     type == TM_MSG_URGENT || type == TM_MSG_DELTA || type == TM_MSG_DELTA_NACK ||
	     type == TM_MSG_ZDELTA) &&
	    packet_size == 0) {
		g_set_error(error, TM_ERROR, EPROTO, "frame header: %s before the handshake",
			    tm_msg_name(type));
		return -EPROTO;
	}
	uint32_t body_len = tm_get32(buf + 8);
	uint32_t max_body = tm_frame_max_body(v, type, packet_size);
	if (body_len > max_body) {
		g_set_error(error, TM_ERROR, EMSGSIZE,
			    "frame header (%s): body_len %u over the maximum %u", tm_msg_name(type),
			    body_len, max_body);
		return -EMSGSIZE;
	}
	ret->version = v;
	ret->type = type;
	ret->body_len = body_len;
	ret->seq = tm_get32(buf + 12);
	return 0;
}
