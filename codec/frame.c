/* SPDX-License-Identifier: MIT */
/*
 * Frame header (docs/wire-format.md, "Frame header"): the 16 bytes in front of every message, and
 * the per-type body limits a receiver enforces before it reads (or allocates for) a body.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "codec/codec.h"
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
	default:
		return "unknown";
	}
}

/*
 * The control messages' fixed body sizes are part of the per-type limits: they live here, so that
 * control.c builds on frame.c and not the other way round.
 */
uint32_t tm_ctrl_body_len(uint8_t type)
{
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

uint32_t tm_frame_max_body(uint8_t type, uint32_t packet_size)
{
	switch (type) {
	case TM_MSG_HELLO:
		return TM_HELLO_FIXED_LEN + TM_MAX_BLOCKS * (TM_HELLO_BLOCK_LEN + TM_MAX_BLOCK_NAME);
	case TM_MSG_HELLO_ACK:
	case TM_MSG_SYNC:
	case TM_MSG_END_ACK:
	case TM_MSG_SYNC_ACK:
	case TM_MSG_END:
		return tm_ctrl_body_len(type);
	case TM_MSG_ERROR:
		return TM_ERROR_FIXED_LEN + TM_MAX_ERROR_MESSAGE;
	case TM_MSG_DATA: {
		/*
		 * Worst case: every page 4 KiB, NORMAL and PACKED. packet_size 0 means no session yet,
		 * so no DATA may arrive. The sum is done in 64 bits and clamped because packet_size
		 * comes from a caller that may not have validated it yet.
		 */
		if (packet_size == 0)
			return 0;
		uint64_t n = (uint64_t)TM_DATA_HDR_LEN + (uint64_t)TM_PAGE_ENTRY_LEN * (packet_size / 4096u) +
			     packet_size + packet_size / 32u;
		return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
	}
	default:
		return 0;
	}
}

void tm_frame_encode(uint8_t out[TM_FRAME_HDR_LEN], uint8_t type, uint32_t body_len, uint32_t seq)
{
	memcpy(out, frame_magic, sizeof(frame_magic));
	out[4] = TM_WIRE_VERSION;
	out[5] = type;
	tm_put16(out + 6, 0);
	tm_put32(out + 8, body_len);
	tm_put32(out + 12, seq);
}

int tm_frame_decode(const uint8_t *buf, size_t len, uint32_t packet_size, tm_frame *ret,
		    GError **error)
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
	/* Version before anything else that could change between versions, so the peer learns why. */
	if (buf[4] != TM_WIRE_VERSION) {
		g_set_error(error, TM_ERROR, EPROTONOSUPPORT,
			    "frame header: unsupported protocol version %u (supported: %u)", buf[4],
			    TM_WIRE_VERSION);
		return -EPROTONOSUPPORT;
	}
	uint8_t type = buf[5];
	if (type < TM_MSG_HELLO || type > TM_MSG_ERROR) {
		g_set_error(error, TM_ERROR, EBADMSG, "frame header: unknown message type %u", type);
		return -EBADMSG;
	}
	uint16_t reserved = tm_get16(buf + 6);
	if (reserved != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "frame header (%s): reserved field is 0x%04x, must be 0", tm_msg_name(type),
			    reserved);
		return -EBADMSG;
	}
	if (type == TM_MSG_DATA && packet_size == 0) {
		g_set_error(error, TM_ERROR, EPROTO, "frame header: DATA before the handshake");
		return -EPROTO;
	}
	uint32_t body_len = tm_get32(buf + 8);
	uint32_t max = tm_frame_max_body(type, packet_size);
	if (body_len > max) {
		g_set_error(error, TM_ERROR, EMSGSIZE,
			    "frame header (%s): body_len %u over the maximum %u", tm_msg_name(type),
			    body_len, max);
		return -EMSGSIZE;
	}
	ret->type = type;
	ret->body_len = body_len;
	ret->seq = tm_get32(buf + 12);
	return 0;
}
