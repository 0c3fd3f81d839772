/* SPDX-License-Identifier: MIT */
/*
 * Small control messages (HELLO_ACK, SYNC, SYNC_ACK, END, END_ACK) and ERROR
 * (docs/wire-format.md), in protocols 1 and 2. Their bodies have fixed sizes, so the decoders
 * demand exact lengths.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "codec/codec.h"
#include "tagmig/error.h"

size_t tm_ctrl_encode(uint8_t *out, uint8_t type, uint32_t seq, uint64_t a, uint64_t b)
{
	size_t body = tm_ctrl_body_len(TM_WIRE_VERSION_1, type);

	g_return_val_if_fail(body != 0, 0);
	tm_frame_encode(out, type, (uint32_t)body, seq);
	/* HELLO_ACK's only field is reserved: never let a caller's value leak into it. */
	tm_put64(out + TM_FRAME_HDR_LEN, type == TM_MSG_HELLO_ACK ? 0 : a);
	if (body == 16)
		tm_put64(out + TM_FRAME_HDR_LEN + 8, b);
	return TM_FRAME_HDR_LEN + body;
}

int tm_ctrl_decode(uint8_t type, const uint8_t *buf, size_t len, uint64_t *ret_a, uint64_t *ret_b,
		   GError **error)
{
	size_t body = tm_ctrl_body_len(TM_WIRE_VERSION_1, type);

	if (body == 0) {
		g_set_error(error, TM_ERROR, EINVAL, "%s (type %u) is not a control message",
			    tm_msg_name(type), type);
		return -EINVAL;
	}
	if (len != body) {
		g_set_error(error, TM_ERROR, EBADMSG, "%s: body of %zu bytes, must be %zu%s",
			    tm_msg_name(type), len, body, len < body ? " (truncated)" : "");
		return -EBADMSG;
	}
	uint64_t a = tm_get64(buf);
	uint64_t b = body == 16 ? tm_get64(buf + 8) : 0;

	if (type == TM_MSG_HELLO_ACK && a != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: reserved field is 0x%016" G_GINT64_MODIFIER "x, must be 0",
			    (guint64)a);
		return -EBADMSG;
	}
	if (ret_a)
		*ret_a = a;
	if (ret_b)
		*ret_b = b;
	return 0;
}

size_t tm_ctrl_encode_v(uint8_t *out, uint8_t version, uint8_t type, uint32_t seq,
			const uint64_t *vals)
{
	size_t body = tm_ctrl_body_len(version, type);

	g_return_val_if_fail(body != 0, 0);
	tm_frame_encode_v(out, version, type, (uint32_t)body, seq);
	for (size_t i = 0; i < body / 8; i++)
		/* protocol 1 HELLO_ACK: reserved, never a caller's value */
		tm_put64(out + TM_FRAME_HDR_LEN + 8 * i, type == TM_MSG_HELLO_ACK ? 0 : vals[i]);
	return TM_FRAME_HDR_LEN + body;
}

int tm_ctrl_decode_v(uint8_t version, uint8_t type, const uint8_t *buf, size_t len,
		     uint64_t ret[TM_CTRL_MAX_FIELDS], GError **error)
{
	size_t body = tm_ctrl_body_len(version, type);

	if (body == 0) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "%s (type %u) is not a control message of protocol %u",
			    tm_msg_name(type), type, version);
		return -EINVAL;
	}
	if (len != body) {
		g_set_error(error, TM_ERROR, EBADMSG, "%s: body of %zu bytes, must be %zu%s",
			    tm_msg_name(type), len, body, len < body ? " (truncated)" : "");
		return -EBADMSG;
	}
	uint64_t v[TM_CTRL_MAX_FIELDS] = { 0 };
	for (size_t i = 0; i < body / 8; i++)
		v[i] = tm_get64(buf + 8 * i);
	if (type == TM_MSG_HELLO_ACK && v[0] != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: reserved field is 0x%016" G_GINT64_MODIFIER "x, must be 0",
			    (guint64)v[0]);
		return -EBADMSG;
	}
	memcpy(ret, v, sizeof(v));
	return 0;
}

int tm_hello_ack_check(const tm_hello_ack *ack, uint32_t offered, GError **error)
{
	if (ack->features & ~TM_FEATURES_KNOWN_V2) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: features 0x%08x has reserved bits 0x%08x set", ack->features,
			    ack->features & ~TM_FEATURES_KNOWN_V2);
		return -EBADMSG;
	}
	/* Accepted only if offered; the resume extensions only with RESUME itself. */
	static const struct {
		uint32_t bit;
		const char *name;
		bool needs_resume;
	} agreed[] = {
		{ TM_FEATURE_POSTCOPY, "POSTCOPY", false },
		{ TM_FEATURE_RESUME, "RESUME", false },
		{ TM_FEATURE_RESUME_CONTROL, "RESUME_CONTROL", true },
		{ TM_FEATURE_CONN_LOST, "CONN_LOST", true },
		{ TM_FEATURE_LINK_CHECK, "LINK_CHECK", false },
	};
	for (size_t i = 0; i < G_N_ELEMENTS(agreed); i++) {
		if (!(ack->features & agreed[i].bit))
			continue;
		if (!(offered & agreed[i].bit)) {
			g_set_error(error, TM_ERROR, EPROTO,
				    "HELLO_ACK: features 0x%08x accept %s, which was not offered "
				    "(offered 0x%08x)",
				    ack->features, agreed[i].name, offered);
			return -EPROTO;
		}
		if (agreed[i].needs_resume && !(ack->features & TM_FEATURE_RESUME)) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "HELLO_ACK: features 0x%08x accept %s without RESUME", ack->features,
				    agreed[i].name);
			return -EBADMSG;
		}
	}
	/* The session's secret for reconnects: there exactly when RESUME is agreed. */
	if (!(ack->features & TM_FEATURE_RESUME) != !ack->resume_token) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: resume token %s RESUME (features 0x%08x)",
			    ack->resume_token ? "set without" : "0 with", ack->features);
		return -EBADMSG;
	}
	if (ack->features & TM_FEATURES_COMPRESS & ~offered) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "HELLO_ACK: features 0x%08x accept a compression codec that was not "
			    "offered (offered 0x%08x)",
			    ack->features, offered);
		return -EPROTO;
	}
	if ((ack->features & TM_FEATURE_DELTA) && !(offered & TM_FEATURE_DELTA)) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "HELLO_ACK: features 0x%08x accept DELTA, which was not offered "
			    "(offered 0x%08x)",
			    ack->features, offered);
		return -EPROTO;
	}
	if ((ack->features ^ offered) & TM_FEATURE_TAGS_MTE4) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "HELLO_ACK: features 0x%08x change TAGS_MTE4 (offered 0x%08x)",
			    ack->features, offered);
		return -EPROTO;
	}
	if (ack->features & TM_FEATURE_POSTCOPY) {
		if (ack->max_outstanding == 0 || ack->max_outstanding > TM_MAX_OUTSTANDING) {
			g_set_error(error, TM_ERROR, EBADMSG,
				    "HELLO_ACK: max_outstanding %u invalid with POSTCOPY (1..%u)",
				    ack->max_outstanding, TM_MAX_OUTSTANDING);
			return -EBADMSG;
		}
	} else if (ack->max_outstanding != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: max_outstanding %u without POSTCOPY, must be 0",
			    ack->max_outstanding);
		return -EBADMSG;
	}
	/* A reason only where an offer was declined; any value then (0: none given). */
	if (ack->pc_decline &&
	    ((ack->features & TM_FEATURE_POSTCOPY) || !(offered & TM_FEATURE_POSTCOPY))) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: postcopy decline reason %u, but %s", ack->pc_decline,
			    (ack->features & TM_FEATURE_POSTCOPY) ? "POSTCOPY is accepted"
								 : "POSTCOPY was not offered");
		return -EBADMSG;
	}
	if (ack->max_state_section > TM_STATE_SECTION_MAX) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: max_state_section %" G_GUINT64_FORMAT " over the maximum %llu",
			    (guint64)ack->max_state_section, TM_STATE_SECTION_MAX);
		return -EBADMSG;
	}
	if (ack->max_state_total < ack->max_state_section ||
	    ack->max_state_total > TM_STATE_TOTAL_MAX) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: max_state_total %" G_GUINT64_FORMAT
			    " invalid (max_state_section %" G_GUINT64_FORMAT "..%llu)",
			    (guint64)ack->max_state_total, (guint64)ack->max_state_section,
			    TM_STATE_TOTAL_MAX);
		return -EBADMSG;
	}
	return 0;
}

const char *tm_pc_decline_text(uint8_t code)
{
	switch (code) {
	case TM_PC_DECLINE_NONE:
		return "no reason given";
	case TM_PC_DECLINE_NOT_CONFIGURED:
		return "its VMM did not ask for postcopy (tm_live_config.postcopy)";
	case TM_PC_DECLINE_UFFD_DENIED:
		return "userfaultfd is not permitted there";
	case TM_PC_DECLINE_UFFD_UNSUPPORTED:
		return "its kernel has no userfaultfd, or lacks a feature postcopy needs";
	case TM_PC_DECLINE_UFFD_FAILED:
		return "its userfaultfd could not be set up";
	default:
		return "a reason this sender does not know";
	}
}

size_t tm_hello_ack_encode(uint8_t *out, uint32_t seq, const tm_hello_ack *ack)
{
	uint8_t *p = out + TM_FRAME_HDR_LEN;

	tm_frame_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_HELLO_ACK, TM_HELLO_ACK2_LEN, seq);
	tm_put32(p, ack->features);
	tm_put16(p + 4, (uint16_t)ack->max_outstanding);
	p[6] = ack->pc_decline;
	p[7] = 0;
	tm_put64(p + 8, ack->max_state_section);
	tm_put64(p + 16, ack->max_state_total);
	tm_put64(p + 24, ack->resume_token);
	return TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN;
}

int tm_hello_ack_decode(const uint8_t *buf, size_t len, uint32_t offered, tm_hello_ack *ret,
			GError **error)
{
	if (len != TM_HELLO_ACK2_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "HELLO_ACK: body of %zu bytes, must be %u%s",
			    len, TM_HELLO_ACK2_LEN, len < TM_HELLO_ACK2_LEN ? " (truncated)" : "");
		return -EBADMSG;
	}
	if (buf[7] != 0) {
		g_set_error(error, TM_ERROR, EBADMSG,
			    "HELLO_ACK: reserved byte at offset 7 is 0x%02x, must be 0", buf[7]);
		return -EBADMSG;
	}
	tm_hello_ack a = {
		.features = tm_get32(buf),
		.max_outstanding = tm_get16(buf + 4),
		.pc_decline = buf[6],
		.max_state_section = tm_get64(buf + 8),
		.max_state_total = tm_get64(buf + 16),
		.resume_token = tm_get64(buf + 24),
	};
	int r = tm_hello_ack_check(&a, offered, error);
	if (r < 0)
		return r;
	*ret = a;
	return 0;
}

/* Longest prefix of s, at most max bytes, that does not end inside a UTF-8 sequence. */
static size_t utf8_prefix_len(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	if (n <= max)
		return n;
	n = max;
	/* Step back over continuation bytes (10xxxxxx) to the start of the cut sequence. */
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

size_t tm_error_encode(uint8_t *out, uint32_t seq, int code, const char *message)
{
	return tm_error_encode_v(out, TM_WIRE_VERSION_1, seq, code, message);
}

size_t tm_error_encode_v(uint8_t *out, uint8_t version, uint32_t seq, int code,
			 const char *message)
{
	/*
	 * The wire carries a positive errno; the library passes around negative ones, so accept
	 * both. 0 (or INT_MIN, which has no positive twin) would be no reason at all: say EIO.
	 */
	uint32_t wire_code = code > 0 ? (uint32_t)code : code < 0 && code != INT_MIN ? (uint32_t)-code : EIO;
	size_t mlen = message ? utf8_prefix_len(message, TM_MAX_ERROR_MESSAGE) : 0;
	uint32_t body = TM_ERROR_FIXED_LEN + (uint32_t)mlen;

	tm_frame_encode_v(out, version, TM_MSG_ERROR, body, seq);
	uint8_t *p = out + TM_FRAME_HDR_LEN;
	tm_put32(p, wire_code);
	tm_put16(p + 4, (uint16_t)mlen);
	tm_put16(p + 6, 0);
	if (mlen)
		memcpy(p + TM_ERROR_FIXED_LEN, message, mlen);
	return TM_FRAME_HDR_LEN + body;
}

int tm_error_decode(const uint8_t *buf, size_t len, int *ret_code, char **ret_message,
		    GError **error)
{
	if (len < TM_ERROR_FIXED_LEN) {
		g_set_error(error, TM_ERROR, EBADMSG, "ERROR truncated: %zu of %u fixed bytes", len,
			    TM_ERROR_FIXED_LEN);
		return -EBADMSG;
	}
	uint32_t code = tm_get32(buf);
	uint16_t mlen = tm_get16(buf + 4);
	uint16_t reserved = tm_get16(buf + 6);

	if (reserved != 0) {
		g_set_error(error, TM_ERROR, EBADMSG, "ERROR: reserved field is 0x%04x, must be 0",
			    reserved);
		return -EBADMSG;
	}
	if (code == 0 || code > INT_MAX) {
		g_set_error(error, TM_ERROR, EBADMSG, "ERROR: code %u is not a positive errno", code);
		return -EBADMSG;
	}
	if (mlen > TM_MAX_ERROR_MESSAGE) {
		g_set_error(error, TM_ERROR, EMSGSIZE, "ERROR: message_len %u over the maximum %u",
			    mlen, TM_MAX_ERROR_MESSAGE);
		return -EMSGSIZE;
	}
	if (len != TM_ERROR_FIXED_LEN + (size_t)mlen) {
		g_set_error(error, TM_ERROR, EBADMSG, "ERROR: body of %zu bytes, message_len %u needs %zu%s",
			    len, mlen, TM_ERROR_FIXED_LEN + (size_t)mlen,
			    len < TM_ERROR_FIXED_LEN + (size_t)mlen ? " (truncated)" : "");
		return -EBADMSG;
	}
	const char *msg = (const char *)buf + TM_ERROR_FIXED_LEN;
	const char *nul = memchr(msg, 0, mlen);
	if (nul) {
		g_set_error(error, TM_ERROR, EBADMSG, "ERROR: message contains a NUL byte at offset %td",
			    nul - msg);
		return -EBADMSG;
	}
	/* The peer's text ends up in our GErrors and logs: make it valid UTF-8 first. */
	*ret_message = g_utf8_make_valid(msg, mlen);
	*ret_code = (int)code;
	return 0;
}
