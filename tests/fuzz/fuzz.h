/* SPDX-License-Identifier: MIT */
/*
 * Shared by the fuzz targets, the corpus replayer and the corpus generator: the libFuzzer entry
 * point, and the fixed session fuzz-data decodes against (gen-corpus builds its seeds for it).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Two channels, tags, 64 KiB packets and chunks. "ram0": 64 pages of 4 KiB (4 chunks), "ram1":
 * 4 pages of 64 KiB (4 chunks, chunk_base 4). Small enough to back with real memory, so that a
 * receiver applying what the decoders accept writes inside it or ASan says otherwise.
 */
#define FUZZ_DATA_CHANNELS 2u
#define FUZZ_DATA_PACKET_SIZE 65536u

static inline void fuzz_data_session(tm_hello *h)
{
	static const struct {
		const char *name;
		uint64_t length;
		uint32_t page_size;
	} blocks[] = {
		{ "ram0", 64 * 4096, 4096 },
		{ "ram1", 4 * 65536, 65536 },
	};

	memset(h, 0, sizeof(*h));
	memcpy(h->session_id, "fuzz-data-sessio", sizeof(h->session_id));
	h->channel_count = FUZZ_DATA_CHANNELS;
	h->features = TM_FEATURE_TAGS_MTE4;
	h->packet_size = FUZZ_DATA_PACKET_SIZE;
	h->chunk_size = FUZZ_DATA_PACKET_SIZE;
	h->block_count = 2;
	h->blocks = g_new0(tm_wire_block, 2);
	for (unsigned i = 0; i < 2; i++) {
		g_strlcpy(h->blocks[i].name, blocks[i].name, sizeof(h->blocks[i].name));
		h->blocks[i].length = blocks[i].length;
		h->blocks[i].page_size = blocks[i].page_size;
		h->blocks[i].guest_base = (uint64_t)i << 32;
	}
	if (tm_hello_check(h, NULL) < 0)
		g_error("fuzz session is invalid");
}

/* The fixed session and guest RAM (data and tags) for each of its blocks, for the DATA fuzzers. */
static inline void fuzz_data_guest(tm_hello *h, uint8_t **ram, uint8_t **ram_tags)
{
	fuzz_data_session(h);
	for (unsigned i = 0; i < h->block_count; i++) {
		ram[i] = g_malloc(h->blocks[i].length);
		ram_tags[i] = g_malloc(h->blocks[i].length / TM_TAG_GRANULE);
	}
}
