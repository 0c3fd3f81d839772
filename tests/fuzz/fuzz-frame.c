/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes what a channel does with any message: the frame header (before and after the
 * handshake), then the body of the control and ERROR messages. HELLO and DATA bodies have
 * targets of their own.
 */
#include <glib.h>

#include "fuzz.h"

static void decode_body(const tm_frame *f, const uint8_t *body)
{
	g_autoptr(GError) error = NULL;
	uint64_t a, b;
	int code;
	char *message = NULL;

	switch (f->type) {
	case TM_MSG_HELLO_ACK:
	case TM_MSG_SYNC:
	case TM_MSG_SYNC_ACK:
	case TM_MSG_END:
	case TM_MSG_END_ACK:
		if (tm_ctrl_decode(f->type, body, f->body_len, &a, &b, &error) < 0)
			g_assert_nonnull(error);
		break;
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

	for (unsigned i = 0; i < G_N_ELEMENTS(packet_sizes); i++) {
		g_autoptr(GError) error = NULL;
		tm_frame f;

		if (tm_frame_decode(data, size, packet_sizes[i], &f, &error) < 0) {
			g_assert_nonnull(error);
			continue;
		}
		g_assert_cmpuint(f.body_len, <=, tm_frame_max_body(f.type, packet_sizes[i]));
		/* The transport reads exactly body_len bytes; a short input never reaches a decoder. */
		if (size - TM_FRAME_HDR_LEN < f.body_len)
			continue;
		/* An exact-size copy, so ASan catches a decoder reading past body_len. */
		g_autofree uint8_t *body = g_memdup2(data + TM_FRAME_HDR_LEN, f.body_len);
		decode_body(&f, body);
	}
	return 0;
}
