/* SPDX-License-Identifier: MIT */
/*
 * CTL_RESUME and CTL_POS (docs/wire-format.md, "Resume of the control connection"): a control
 * connection that broke comes back with a HELLO of epoch >= 1 and CTL_RESUME (the session's
 * secret and how many ordered control messages the sender received); the receiver answers
 * CTL_POS with its own count, and each side sends again what the other lacks. CTL_POS also ends
 * a session that agreed RESUME_CONTROL: the sender's acknowledgement of END_ACK. What one message
 * can tell is checked here; the counts against what was sent are the session's
 * (session/resume-control.c).
 */
#include <errno.h>

#include "codec/codec.h"
#include "tagmig/error.h"

size_t tm_ctl_resume_encode(uint8_t *out, uint32_t seq, uint64_t token, uint64_t received)
{
	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_CTL_RESUME, TM_CTL_RESUME_LEN, seq);
	tm_put64(out + TM_FRAME_HDR_LEN, token);
	tm_put64(out + TM_FRAME_HDR_LEN + 8, received);
	return TM_FRAME_HDR_LEN + TM_CTL_RESUME_LEN;
}

int tm_ctl_resume_decode(const uint8_t *buf, size_t len, uint64_t *ret_token,
			 uint64_t *ret_received, GError **error)
{
	if (len != TM_CTL_RESUME_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "CTL_RESUME: body of %zu bytes, must be %u",
			    len, TM_CTL_RESUME_LEN);
		return -EBADMSG;
	}
	uint64_t token = tm_get64(buf);
	if (token == 0) {
		g_set_error_literal(error, TM_ERROR, EBADMSG, "CTL_RESUME: token 0");
		return -EBADMSG;
	}
	*ret_token = token;
	*ret_received = tm_get64(buf + 8);
	return 0;
}

size_t tm_ctl_pos_encode(uint8_t *out, uint32_t seq, uint64_t received)
{
	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_CTL_POS, TM_CTL_POS_LEN, seq);
	tm_put64(out + TM_FRAME_HDR_LEN, received);
	return TM_FRAME_HDR_LEN + TM_CTL_POS_LEN;
}

int tm_ctl_pos_decode(const uint8_t *buf, size_t len, uint64_t *ret_received, GError **error)
{
	if (len != TM_CTL_POS_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "CTL_POS: body of %zu bytes, must be %u", len,
			    TM_CTL_POS_LEN);
		return -EBADMSG;
	}
	*ret_received = tm_get64(buf);
	return 0;
}
