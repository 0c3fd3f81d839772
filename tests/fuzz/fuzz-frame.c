/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes what a channel does with any message: the frame header (before and after the
 * handshake, as a protocol 1 peer, a protocol 2 session and a handshake serving both), then the
 * body of the control, HELLO_ACK, RESUME, RESUME_ACK, CTL_RESUME, CTL_POS, DELTA_NACK and ERROR
 * messages in the frame's protocol. HELLO and DATA bodies have targets of their own.
 */
#include <glib.h>

#include "codec/delta-wire.h"
#include "fuzz.h"

static void decode_body(const tm_frame *f, const uint8_t *body)
{
	g_autoptr(GError) error = NULL;
	uint64_t a, b, v[TM_CTRL_MAX_FIELDS];
	int code;
	char *message = NULL;

	switch (f->type) {
	case TM_MSG_HELLO_ACK:
		if (f->version == TM_WIRE_VERSION_2) {
			static const uint32_t offers[] = { 0, TM_FEATURE_TAGS_MTE4,
							   TM_FEATURES_KNOWN_V2 };
			for (unsigned i = 0; i < G_N_ELEMENTS(offers); i++) {
				tm_hello_ack ack;
				g_clear_error(&error);
				if (tm_hello_ack_decode(body, f->body_len, offers[i], &ack, &error) < 0)
					g_assert_nonnull(error);
				else
					g_assert_cmpint(tm_hello_ack_check(&ack, offers[i], NULL), ==, 0);
			}
			break;
		}
		/* protocol 1 HELLO_ACK is a control message */
		G_GNUC_FALLTHROUGH;
	case TM_MSG_SYNC:
	case TM_MSG_SYNC_ACK:
	case TM_MSG_END:
	case TM_MSG_END_ACK:
		if (tm_ctrl_decode_v(f->version, f->type, body, f->body_len, v, &error) < 0)
			g_assert_nonnull(error);
		g_clear_error(&error);
		if (f->version == TM_WIRE_VERSION_1 &&
		    tm_ctrl_decode(f->type, body, f->body_len, &a, &b, &error) < 0)
			g_assert_nonnull(error);
		break;
	case TM_MSG_RESUME: {
		uint64_t token = 0;
		if (tm_resume_decode(body, f->body_len, &token, &error) < 0)
			g_assert_nonnull(error);
		else
			g_assert_cmpuint(token, !=, 0);
		break;
	}
	case TM_MSG_RESUME_ACK: {
		tm_resume_pos pos;
		if (tm_resume_ack_decode(body, f->body_len, &pos, &error) < 0)
			g_assert_nonnull(error);
		else
			g_assert_cmpuint(pos.packets_applied, <=, pos.pages_applied);
		break;
	}
	case TM_MSG_DELTA_NACK: {
		/* Against fuzz-data's session, as the channel's sender hears it. */
		static tm_hello s;
		uint32_t pages[FUZZ_DATA_PACKET_SIZE / 4096], block = 0, count = 0;
		if (!s.blocks)
			fuzz_data_session(&s);
		for (unsigned ch = 0; ch < FUZZ_DATA_CHANNELS; ch++) {
			g_clear_error(&error);
			if (tm_delta_nack_decode(body, f->body_len, &s, ch, pages, &block, &count,
						 &error) < 0) {
				g_assert_nonnull(error);
				continue;
			}
			g_assert_cmpuint(block, <, s.block_count);
			g_assert_cmpuint(count, >=, 1);
			g_assert_cmpuint(count, <=, s.packet_size / s.blocks[block].page_size);
			for (uint32_t i = 0; i < count; i++)
				g_assert_cmpuint(pages[i], <, s.blocks[block].npages);
		}
		break;
	}
	case TM_MSG_CTL_RESUME: {
		uint64_t token = 0, received = 0;
		if (tm_ctl_resume_decode(body, f->body_len, &token, &received, &error) < 0)
			g_assert_nonnull(error);
		else
			g_assert_cmpuint(token, !=, 0);
		break;
	}
	case TM_MSG_CTL_POS: {
		uint64_t received = 0;
		if (tm_ctl_pos_decode(body, f->body_len, &received, &error) < 0)
			g_assert_nonnull(error);
		break;
	}
	case TM_MSG_ERROR:
		if (tm_error_decode(body, f->body_len, &code, &message, &error) == 0) {
			g_assert_cmpint(code, >, 0);
			g_assert_true(g_utf8_validate(message, -1, NULL));
			g_free(message);
		} else {
			g_assert_nonnull(error);
			g_assert_null(message);
		}
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t packet_sizes[] = { 0, TM_PACKET_SIZE_MIN, TM_PACKET_SIZE_DEFAULT };
	static const uint8_t versions[] = { 0, TM_WIRE_VERSION_1, TM_WIRE_VERSION_2 };

	for (unsigned j = 0; j < G_N_ELEMENTS(versions) * G_N_ELEMENTS(packet_sizes); j++) {
		unsigned i = j % G_N_ELEMENTS(packet_sizes);
		uint8_t version = versions[j / G_N_ELEMENTS(packet_sizes)];
		g_autoptr(GError) error = NULL;
		tm_frame f;

		if (tm_frame_decode(data, size, version, packet_sizes[i], &f, &error) < 0) {
			g_assert_nonnull(error);
			continue;
		}
		g_assert_true(version == 0 || f.version == version);
		g_assert_cmpuint(f.body_len, <=, tm_frame_max_body(f.version, f.type, packet_sizes[i]));
		/* The transport reads exactly body_len bytes; a short input never reaches a decoder. */
		if (size - TM_FRAME_HDR_LEN < f.body_len)
			continue;
		/* An exact-size copy, so ASan catches a decoder reading past body_len. */
		g_autofree uint8_t *body = g_memdup2(data + TM_FRAME_HDR_LEN, f.body_len);
		decode_body(&f, body);
	}
	return 0;
}
