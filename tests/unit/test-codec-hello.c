/* SPDX-License-Identifier: MIT */
/*
 * Wire codec tests, HELLO: round trips, the largest, every field's refusal table beside it
 * (malformed, duplicate block names, what a sender may announce), and which two HELLOs make one
 * session (docs/wire-format.md). Protocol 1; protocol 2 in test-codec-v2.c (shared helpers:
 * codec-test.h).
 */
#include <errno.h>
#include <string.h>

#include <glib.h>

#include "codec/codec.h"
#include "codec-test.h"
#include "tagmig/error.h"
#include "tagmig/session.h"

/* ---- HELLO ---- */

static void test_hello_round_trip(void)
{
	tm_hello h, d;
	size_t len;
	GError *err = NULL;

	make_hello(&h);
	/* Derived fields: chunk_base counts a short last chunk (rom: 2 MiB + 4 KiB = 2 chunks). */
	g_assert_cmpuint(h.blocks[0].npages, ==, 262144);
	g_assert_cmpuint(h.blocks[0].chunk_base, ==, 0);
	g_assert_cmpuint(h.blocks[1].npages, ==, 513);
	g_assert_cmpuint(h.blocks[1].chunk_base, ==, 512);
	g_assert_cmpuint(h.blocks[2].npages, ==, 256);
	g_assert_cmpuint(h.blocks[2].chunk_base, ==, 514);

	g_autofree uint8_t *buf = encode_hello(&h, &len);
	g_assert_cmpuint(len, ==, 48 + 3 * 24 + strlen("pc.ram") + strlen("rom") + strlen("vram"));
	check_ok(tm_hello_decode(buf, len, TM_WIRE_VERSION_1, &d, &err), &err);
	assert_hello_equal(&h, &d);
	check_ok(tm_hello_same_session(&h, &d, &err), &err);

	/* A different channel of the same session is the same session. */
	tm_hello_clear(&d);
	buf[16] = 3;
	check_ok(tm_hello_decode(buf, len, TM_WIRE_VERSION_1, &d, &err), &err);
	g_assert_cmpuint(d.channel_id, ==, 3);
	check_ok(tm_hello_same_session(&h, &d, &err), &err);
	tm_hello_clear(&d);
	tm_hello_clear(&h);
	tm_hello_clear(NULL);
}

/* The largest HELLO there can be: 1024 blocks with 255-byte names fills the HELLO limit exactly. */
static void test_hello_max(void)
{
	tm_hello h = { 0 }, d;
	GError *err = NULL;
	size_t len;

	h.channel_count = 64;
	h.channel_id = 63;
	h.packet_size = TM_PACKET_SIZE_MAX;
	h.chunk_size = TM_CHUNK_SIZE_MAX;
	h.block_count = TM_MAX_BLOCKS;
	h.blocks = g_new0(tm_wire_block, TM_MAX_BLOCKS);
	for (unsigned i = 0; i < TM_MAX_BLOCKS; i++) {
		memset(h.blocks[i].name, 'n', TM_MAX_BLOCK_NAME);
		g_snprintf(h.blocks[i].name, 8, "%04u", i);
		h.blocks[i].name[4] = '-';
		h.blocks[i].length = (uint64_t)UINT32_MAX * 65536;
		h.blocks[i].page_size = 65536;
	}
	check_ok(tm_hello_check(&h, &err), &err);
	/* each block: (2^32 - 1) * 64 KiB bytes is 256 chunks of 1 TiB, the last one short */
	g_assert_cmpuint(h.blocks[1023].chunk_base, ==, 1023 * 256);

	g_autofree uint8_t *buf = encode_hello(&h, &len);
	g_assert_cmpuint(len, ==, tm_frame_max_body(TM_WIRE_VERSION_1, TM_MSG_HELLO, 0));
	check_ok(tm_hello_decode(buf, len, TM_WIRE_VERSION_1, &d, &err), &err);
	assert_hello_equal(&h, &d);
	tm_hello_clear(&d);
	tm_hello_clear(&h);
}

#define B0 48u                        /* block 0 descriptor */
#define B1 (B0 + 24u + 6u)            /* block 1: after "pc.ram" */
#define B2 (B1 + 24u + 3u)            /* block 2: after "rom" */

static const hello_mutation hello_mutations[] = {
	{ 16, 2, 4, ERANGE, "channel_id 4 out of range (channel_count 4)" },
	{ 16, 2, 0xffff, ERANGE, "channel_id 65535" },
	{ 18, 2, 0, EBADMSG, "channel_count 0" },
	{ 18, 2, 65, EMSGSIZE, "channel_count 65 over the maximum 64" },
	{ 18, 2, 0xffff, EMSGSIZE, "channel_count 65535" },
	{ 20, 4, 0x2, EBADMSG, "reserved bits" },
	{ 20, 4, 0x80000001, EBADMSG, "reserved bits 0x80000000" },
	{ 24, 4, 3 * 65536, EBADMSG, "packet_size 196608" },
	{ 24, 4, 32768, EBADMSG, "packet_size 32768" },
	{ 24, 4, 32u << 20, EBADMSG, "packet_size 33554432" },
	{ 24, 4, 0, EBADMSG, "packet_size 0" },
	{ 28, 4, 1, EBADMSG, "reserved field at offset 28" },
	{ 32, 8, 256 * 1024, EBADMSG, "chunk_size 262144" },
	{ 32, 8, 3u << 20, EBADMSG, "chunk_size" },
	{ 32, 8, 1ull << 41, EBADMSG, "chunk_size 2199023255552" },
	{ 32, 8, 0, EBADMSG, "chunk_size 0" },
	{ 40, 4, 0, EBADMSG, "block_count 0" },
	{ 40, 4, 1025, EMSGSIZE, "block_count 1025 over the maximum 1024" },
	{ 40, 4, UINT32_MAX, EMSGSIZE, "block_count 4294967295" },
	{ 40, 4, 4, EBADMSG, "truncated" },
	{ 40, 4, 2, EBADMSG, "trailing bytes" },
	{ 44, 4, 0x100, EBADMSG, "reserved field at offset 44" },
	{ B0 + 22, 2, 1, EBADMSG, "HELLO block 0: reserved field" },
	{ B2 + 23, 1, 0x80, EBADMSG, "HELLO block 2: reserved field" },
	{ B0 + 20, 2, 0, EBADMSG, "HELLO block 0: name_len 0" },
	{ B0 + 20, 2, 256, EMSGSIZE, "HELLO block 0: name_len 256 over the maximum 255" },
	{ B0 + 20, 2, 0xffff, EMSGSIZE, "name_len 65535" },
	{ B2 + 20, 2, 5, EBADMSG, "HELLO block 2: name truncated" },
	{ B0 + 24 + 2, 1, 0, EBADMSG, "HELLO block 0: name contains a NUL byte at offset 2" },
	{ B1 + 24, 1, 'p', EBADMSG, "" }, /* "rom" -> "pom": still valid, see below */
	{ B0 + 16, 4, 8192, EBADMSG, "HELLO block 0 'pc.ram': page_size 8192 invalid" },
	{ B0 + 16, 4, 0, EBADMSG, "page_size 0 invalid" },
	{ B0 + 16, 4, 1u << 20, EBADMSG, "page_size 1048576 invalid" },
	{ B0, 8, 0, EBADMSG, "HELLO block 0 'pc.ram': length 0" },
	{ B0, 8, (1ull << 30) + 512, EBADMSG, "length 1073742336 is not a non-zero multiple" },
	{ B2, 8, (1ull << 32) * 65536, EMSGSIZE, "HELLO block 2 'vram': 4294967296 pages" },
	{ B2, 8, UINT64_MAX - 65535, EMSGSIZE, "pages, over the maximum" },
	{ B2 + 8, 8, 0x100001000ull, EBADMSG, "HELLO block 2 'vram': guest_base 0x100001000" },
};

static void test_hello_malformed(void)
{
	tm_hello h, d;
	size_t len;
	GError *err = NULL;

	make_hello(&h);
	g_autofree uint8_t *good = encode_hello(&h, &len);
	g_autofree uint8_t *buf = g_malloc(len);

	for (unsigned i = 0; i < G_N_ELEMENTS(hello_mutations); i++) {
		const hello_mutation *m = &hello_mutations[i];

		memcpy(buf, good, len);
		put_le(buf + m->off, m->width, m->value);
		memset(&d, 0x5a, sizeof(d));
		int r = tm_hello_decode(buf, len, TM_WIRE_VERSION_1, &d, &err);
		if (m->substr[0] == '\0') {
			check_ok(r, &err);
			tm_hello_clear(&d);
			continue;
		}
		g_test_message("mutation %u: %s", i, m->substr);
		check_err(r, &err, m->errnum, m->substr);
		/* untouched on failure */
		g_assert_cmpuint(d.block_count, ==, 0x5a5a5a5a);
	}

	/* A trailing byte. */
	g_autofree uint8_t *longer = g_malloc0(len + 1);
	memcpy(longer, good, len);
	check_err(tm_hello_decode(longer, len + 1, TM_WIRE_VERSION_1, &d, &err), &err, EBADMSG, "1 trailing bytes");

	/* Every prefix is rejected (and none crashes). */
	for (size_t n = 0; n < len; n++) {
		g_autofree uint8_t *prefix = g_memdup2(good, n); /* exact size: ASan sees overreads */
		int r = tm_hello_decode(prefix, n, TM_WIRE_VERSION_1, &d, &err);
		check_err(r, &err, EBADMSG, n < 48 ? "HELLO truncated" : "truncated");
	}
	tm_hello_clear(&h);
}

static void test_hello_duplicate_names(void)
{
	static const blk_spec blocks[] = {
		{ "a", 65536, 4096, 0 },
		{ "pc.ram", 65536, 4096, 0 },
		{ "b", 65536, 4096, 0 },
	};
	tm_hello h, d;
	size_t len;
	GError *err = NULL;

	make_session(&h, 0, 1, 65536, 65536, blocks, 3);
	g_strlcpy(h.blocks[2].name, "pc.ram", sizeof(h.blocks[2].name));
	check_err(tm_hello_check(&h, &err), &err, EBADMSG,
		  "HELLO block 2: name 'pc.ram' already used by block 1");

	/* A sender that skipped the check: the receiver refuses the same. */
	g_autofree uint8_t *buf = encode_hello(&h, &len);
	check_err(tm_hello_decode(buf, len, TM_WIRE_VERSION_1, &d, &err), &err, EBADMSG, "already used by block 1");

	/* Empty name (sender side), and a name that is not NUL-terminated. */
	h.blocks[2].name[0] = '\0';
	check_err(tm_hello_check(&h, &err), &err, EBADMSG, "HELLO block 2: empty name");
	memset(h.blocks[2].name, 'x', sizeof(h.blocks[2].name));
	check_err(tm_hello_check(&h, &err), &err, EMSGSIZE, "HELLO block 2: name longer");
	tm_hello_clear(&h);
}

static void test_hello_check_sender(void)
{
	static const blk_spec blocks[] = { { "ram", 1u << 20, 4096, 0 } };
	tm_hello h;
	GError *err = NULL;

	make_session(&h, 0, 2, 65536, 65536, blocks, 1);
	h.channel_id = 2;
	check_err(tm_hello_check(&h, &err), &err, ERANGE, "channel_id 2");
	h.channel_id = 1;
	check_ok(tm_hello_check(&h, &err), &err);

	h.block_count = 0;
	check_err(tm_hello_check(&h, &err), &err, EBADMSG, "block_count 0");
	h.block_count = 1;

	tm_wire_block *blocks_saved = h.blocks;
	h.blocks = NULL;
	check_err(tm_hello_check(&h, &err), &err, EINVAL, "no blocks");
	h.blocks = blocks_saved;

	/* Failed checks leave the derived fields alone. */
	h.blocks[0].npages = 12345;
	h.features = 0x10;
	check_err(tm_hello_check(&h, &err), &err, EBADMSG, "features");
	g_assert_cmpuint(h.blocks[0].npages, ==, 12345);
	tm_hello_clear(&h);
}

static void test_hello_same_session(void)
{
	tm_hello a, b;
	GError *err = NULL;

	make_hello(&a);

#define DIFF(mutate, substr)                                                      \
	do {                                                                      \
		make_hello(&b);                                                   \
		mutate;                                                           \
		check_err(tm_hello_same_session(&a, &b, &err), &err, EPROTO, substr); \
		tm_hello_clear(&b);                                               \
	} while (0)

	DIFF(b.session_id[15] ^= 1, "session id differs between channels: "
				    "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf vs a0a1a2a3a4a5a6a7a8a9aaabacadaeae");
	DIFF(b.channel_count = 8, "channel count differs between channels: 4 vs 8");
	DIFF(b.features = 0, "features differs between channels: 0x00000001 vs 0x00000000");
	DIFF(b.packet_size = 65536, "packet size differs between channels: 524288 vs 65536");
	DIFF(b.chunk_size = 4u << 20, "chunk size differs between channels: 2097152 vs 4194304");
	DIFF(b.block_count = 2, "block count differs between channels: 3 vs 2");
	DIFF(g_strlcpy(b.blocks[1].name, "ram", sizeof(b.blocks[1].name)),
	     "block 1 name differs between channels: 'rom' vs 'ram'");
	DIFF(b.blocks[2].length = 8u << 20,
	     "block 2 'vram' length differs between channels: 16777216 vs 8388608");
	DIFF(b.blocks[0].page_size = 16384,
	     "block 0 'pc.ram' page size differs between channels: 4096 vs 16384");
	DIFF(b.blocks[0].guest_base = 0, "block 0 'pc.ram' guest_base differs between channels: "
					 "0x40000000 vs 0x0");
	/* The first difference is reported. */
	DIFF((b.channel_count = 8, b.blocks[0].length = 4096), "channel count");
	/* channel_id is the one field allowed to differ. */
	make_hello(&b);
	b.channel_id = 0;
	check_ok(tm_hello_same_session(&a, &b, &err), &err);
	tm_hello_clear(&b);
#undef DIFF
	tm_hello_clear(&a);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);

	g_test_add_func("/codec/hello/round-trip", test_hello_round_trip);
	g_test_add_func("/codec/hello/max", test_hello_max);
	g_test_add_func("/codec/hello/malformed", test_hello_malformed);
	g_test_add_func("/codec/hello/duplicate-names", test_hello_duplicate_names);
	g_test_add_func("/codec/hello/check-sender", test_hello_check_sender);
	g_test_add_func("/codec/hello/same-session", test_hello_same_session);

	return g_test_run();
}
