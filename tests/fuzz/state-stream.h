/* SPDX-License-Identifier: MIT */
/*
 * A stream of protocol 2 frames on the two channels of the fuzz session (fuzz.h), each frame on
 * channel seq mod 2, taken through the device-state decoders in the order a receiver applies
 * them: RAM_END (tm_ram_end_decode), then STATE chunks (tm_state_hdr_decode, the name check,
 * tm_state_order_check). The data of every accepted chunk is copied into a buffer of exactly its
 * section's length, so a chunk the checks let through that would write outside its section
 * trips ASan. Shared by fuzz-state.c and the unit test that holds each seed to its errno.
 */
#pragma once

#include <errno.h>

#include <glib.h>

#include "fuzz.h"
#include "tagmig/error.h"

#define FUZZ_STATE_MAX_SECTION (256u * 1024u)
#define FUZZ_STATE_MAX_TOTAL (512u * 1024u)

static const char *const fuzz_state_names[] = { "cpu0", "dev", "empty", NULL };

/*
 * Walks the stream; returns 0 when every frame was accepted (*ret_sections: sections started,
 * *ret_ended: END_OF_STATE seen), else the first refusal's -errno with *error. A stream that
 * stops inside a frame is -ENODATA (the transport's part, not a decoder's).
 */
static inline int fuzz_state_stream(const uint8_t *data, size_t size, const char *const *names,
				    uint32_t *ret_sections, bool *ret_ended, GError **error)
{
	tm_state_order o;
	uint64_t expected[FUZZ_DATA_CHANNELS];
	bool ram_ended[FUZZ_DATA_CHANNELS] = { false };
	g_autofree uint8_t *section = NULL;
	size_t pos = 0;
	int r;

	tm_state_order_init(&o, FUZZ_STATE_MAX_TOTAL, names);
	for (unsigned i = 0; i < FUZZ_DATA_CHANNELS; i++)
		expected[i] = i;
	while (pos < size) {
		tm_frame f;

		if ((r = tm_frame_decode(data + pos, size - pos, TM_WIRE_VERSION_2,
					 FUZZ_DATA_PACKET_SIZE, &f, error)) < 0)
			return r;
		pos += TM_FRAME_HDR_LEN;
		if (f.body_len > size - pos) {
			g_set_error(error, TM_ERROR, ENODATA, "stream ends inside a frame");
			return -ENODATA;
		}
		/* Exact-size copy: a decoder reading past what it was given trips ASan. */
		g_autofree uint8_t *body = g_memdup2(data + pos, f.body_len);
		unsigned ch = f.seq % FUZZ_DATA_CHANNELS;
		pos += f.body_len;

		if (f.type == TM_MSG_RAM_END) {
			uint32_t mode;
			uint64_t pages, packets;
			if ((r = tm_ram_end_decode(body, f.body_len, false, &mode, &pages, &packets,
						   error)) < 0)
				return r;
			g_assert_cmpuint(mode, ==, TM_RAM_END_FINAL);
			if (ram_ended[ch]) {
				g_set_error(error, TM_ERROR, EPROTO, "RAM_END twice");
				return -EPROTO;
			}
			ram_ended[ch] = true;
			continue;
		}
		if (f.type != TM_MSG_STATE || !ram_ended[ch]) {
			g_set_error(error, TM_ERROR, EPROTO, "channel %u: %s before RAM_END", ch,
				    tm_msg_name(f.type));
			return -EPROTO;
		}
		tm_state_limits lim = { .packet_size = FUZZ_DATA_PACKET_SIZE,
					.max_section = FUZZ_STATE_MAX_SECTION,
					.channels = FUZZ_DATA_CHANNELS,
					.channel = ch,
					.expected = expected[ch] };
		tm_state_hdr h;
		if ((r = tm_state_hdr_decode(body, f.body_len, f.body_len, &lim, &h, error)) < 0)
			return r;
		g_assert_cmpuint(h.chunk % FUZZ_DATA_CHANNELS, ==, ch);
		g_assert_cmpuint(h.data_len, <=, FUZZ_DATA_PACKET_SIZE);
		g_assert_cmpuint((uint64_t)TM_STATE_HDR_LEN + h.name_len + h.data_len, ==,
				 f.body_len);
		expected[ch] += FUZZ_DATA_CHANNELS;
		char name[TM_MAX_STATE_NAME + 1] = "";
		if (h.flags & TM_STATE_FIRST) {
			if ((r = tm_state_name_check((const char *)body + TM_STATE_HDR_LEN,
						     h.name_len, error)) < 0)
				return r;
			memcpy(name, body + TM_STATE_HDR_LEN, h.name_len);
			name[h.name_len] = '\0';
			g_assert_cmpuint(strlen(name), ==, h.name_len);
		}
		uint64_t total = o.total;
		if ((r = tm_state_order_check(&o, &h, name, error)) < 0)
			return r;
		g_assert_cmpuint(o.total, <=, FUZZ_STATE_MAX_TOTAL);
		g_assert_cmpuint(o.total, >=, total);
		if (h.flags & TM_STATE_END)
			continue;
		if (h.flags & TM_STATE_FIRST) {
			g_free(section);
			section = g_malloc(h.section_len ? h.section_len : 1);
		}
		g_assert_cmpuint(h.offset + h.data_len, <=, h.section_len);
		memcpy(section + h.offset, body + TM_STATE_HDR_LEN + h.name_len, h.data_len);
	}
	*ret_sections = o.sections;
	*ret_ended = o.ended;
	return 0;
}
