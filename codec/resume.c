/* SPDX-License-Identifier: MIT */
/*
 * RESUME and RESUME_ACK (docs/wire-format.md, "Resume"): a data channel of a protocol 2 session
 * that broke comes back on a new connection with a HELLO of epoch >= 1, then RESUME with the
 * session's secret (the HELLO_ACK's resume token); the receiver answers RESUME_ACK with what it
 * applied on that channel, and the sender re-sends only the rest. Both checked here for what one
 * message can tell; the positions against the sender's record are the session's (resume-send.c).
 */
#include <errno.h>

#include "codec/codec.h"
#include "tagmig/error.h"

size_t tm_resume_encode(uint8_t *out, uint32_t seq, uint64_t token)
{
	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_RESUME, TM_RESUME_LEN, seq);
	tm_put64(out + TM_FRAME_HDR_LEN, token);
	return TM_FRAME_HDR_LEN + TM_RESUME_LEN;
}

int tm_resume_decode(const uint8_t *buf, size_t len, uint64_t *ret_token, GError **error)
{
	if (len != TM_RESUME_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "RESUME: body of %zu bytes, must be %u", len,
			    TM_RESUME_LEN);
		return -EBADMSG;
	}
	uint64_t token = tm_get64(buf);
	if (token == 0) {
		g_set_error_literal(error, TM_ERROR, EBADMSG, "RESUME: token 0");
		return -EBADMSG;
	}
	*ret_token = token;
	return 0;
}

bool tm_resume_token_equal(uint64_t a, uint64_t b)
{
	/* No early exit: how long the comparison takes says nothing about the secret. */
	volatile uint64_t d = a ^ b;
	uint64_t x = d;
	x |= x >> 32;
	x |= x >> 16;
	x |= x >> 8;
	return (x & 0xff) == 0;
}

size_t tm_resume_ack_encode(uint8_t *out, uint32_t seq, const tm_resume_pos *pos)
{
	uint8_t *p = out + TM_FRAME_HDR_LEN;

	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_RESUME_ACK, TM_RESUME_ACK_LEN, seq);
	tm_put64(p, pos->pages_applied);
	tm_put64(p + 8, pos->packets_applied);
	tm_put64(p + 16, pos->state_chunks);
	tm_put64(p + 24, pos->syncs);
	tm_put32(p + 32, pos->flags);
	tm_put32(p + 36, 0);
	return TM_FRAME_HDR_LEN + TM_RESUME_ACK_LEN;
}

int tm_resume_ack_decode(const uint8_t *buf, size_t len, tm_resume_pos *ret, GError **error)
{
	if (len != TM_RESUME_ACK_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "RESUME_ACK: body of %zu bytes, must be %u",
			    len, TM_RESUME_ACK_LEN);
		return -EBADMSG;
	}
	tm_resume_pos p = {
		.pages_applied = tm_get64(buf),
		.packets_applied = tm_get64(buf + 8),
		.state_chunks = tm_get64(buf + 16),
		.syncs = tm_get64(buf + 24),
		.flags = tm_get32(buf + 32),
	};
	uint32_t reserved = tm_get32(buf + 36);
	if (reserved != 0 || (p.flags & ~(TM_RESUME_RAM_ENDED | TM_RESUME_ENDED))) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "RESUME_ACK: flags 0x%08x, reserved 0x%08x (flags 0..3, reserved 0)",
			    p.flags, reserved);
		return -EBADMSG;
	}
	if ((p.flags & TM_RESUME_ENDED) && !(p.flags & TM_RESUME_RAM_ENDED)) {
		g_set_error_literal(error, TM_ERROR, EBADMSG,
				    "RESUME_ACK: channel ended without RAM_END");
		return -EBADMSG;
	}
	/* A DATA packet carries at least one page. */
	if (p.packets_applied > p.pages_applied) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "RESUME_ACK: %" G_GUINT64_FORMAT " packets applied with %" G_GUINT64_FORMAT
			    " pages",
			    (guint64)p.packets_applied, (guint64)p.pages_applied);
		return -EBADMSG;
	}
	*ret = p;
	return 0;
}
