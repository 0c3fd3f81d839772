/* SPDX-License-Identifier: MIT */
/*
 * DELTA and DELTA_NACK in the codec (codec/delta-wire.c): the sender's packet decodes on the
 * receiver to the same pages, deltas and tags; every field a peer can get wrong is refused with
 * its errno and words (the receiver's side in tests/session/test-session-delta.c, the
 * sender's reading of DELTA_NACK here).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec/codec.h"
#include "codec/delta-wire.h"
#include "codec/delta.h"
#include "tagmig/error.h"

#define PS 4096u
#define PACKET (64u * 1024u)

/* The session: one block of 64 pages, 2 channels, chunks of 16 pages (pages 0..15: channel 0). */
static void session(tm_hello *h, tm_wire_block *b)
{
	memset(h, 0, sizeof(*h));
	memset(b, 0, sizeof(*b));
	g_strlcpy(b->name, "pc.ram", sizeof(b->name));
	b->length = 64 * PS;
	b->page_size = PS;
	h->version = 2;
	h->channel_count = 2;
	h->features = TM_FEATURE_TAGS_MTE4 | TM_FEATURE_DELTA;
	h->packet_size = PACKET;
	h->chunk_size = PACKET;
	h->block_count = 1;
	h->blocks = b;
	g_assert_cmpint(tm_hello_check(h, NULL), ==, 0);
}

/* A DELTA of pages 1, 2, 5 (each with a few bytes changed), flattened into rx->body. */
static uint32_t build(tm_delta_rx *rx, uint8_t base[3][PS], uint8_t page[3][PS])
{
	static const uint32_t pages[] = { 1, 2, 5 };
	tm_delta_pkt pkt;
	uint8_t tags[PS / 16];
	size_t len;

	tm_delta_pkt_init(&pkt, PACKET);
	tm_delta_pkt_begin(&pkt, 0, PS);
	for (unsigned i = 0; i < 3; i++) {
		for (unsigned j = 0; j < PS; j++)
			base[i][j] = page[i][j] = (uint8_t)(j * 3 + i);
		for (unsigned j = 0; j < 40; j++)
			page[i][100 * (i + 1) + j] ^= 0x81;
		memset(tags, (int)i, sizeof(tags)); /* zero, uniform 1, uniform 2 */
		g_assert_cmpint(tm_delta_pkt_add(&pkt, pages[i], page[i], base[i], tags, PS - 1), >, 0);
	}
	unsigned n = tm_delta_pkt_finish(&pkt, 2, 7, &len);
	size_t at = 0;
	uint8_t frame[TM_FRAME_HDR_LEN];
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *p = pkt.iov[i].iov_base;
		size_t l = pkt.iov[i].iov_len;
		if (i == 0) {
			memcpy(frame, p, TM_FRAME_HDR_LEN);
			p += TM_FRAME_HDR_LEN;
			l -= TM_FRAME_HDR_LEN;
		}
		memcpy(rx->body + at, p, l);
		at += l;
	}
	g_assert_cmpuint(frame[5], ==, TM_MSG_DELTA);
	g_assert_cmpuint(tm_get32(frame + 8), ==, at);
	g_assert_cmpuint(tm_get32(frame + 12), ==, 7);
	g_assert_cmpuint(len, ==, TM_FRAME_HDR_LEN + at);
	tm_delta_pkt_fini(&pkt);
	return (uint32_t)at;
}

/* Whether the page holding p is mapped (mincore fails with ENOMEM on a hole). */
static bool mapped(const void *p)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char vec;

	if (mincore((void *)((uintptr_t)p / pg * pg), pg, &vec) == 0)
		return true;
	g_assert_cmpint(errno, ==, ENOMEM);
	return false;
}

static void test_round_trip(void)
{
	tm_hello h;
	tm_wire_block b;
	tm_delta_rx rx;
	uint8_t base[3][PS], page[3][PS];
	uint32_t first;
	GError *err = NULL;

	session(&h, &b);
	tm_delta_rx_init(&rx, PACKET);
	uint32_t len = build(&rx, base, page);
	g_assert_cmpint(tm_delta_decode(&rx, len, &h, 0, &first, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpuint(rx.page_count, ==, 3);
	g_assert_cmpuint(rx.tag_len, ==, 2); /* TAGS_ZERO, then two uniform bytes */
	for (unsigned i = 0; i < 3; i++) {
		const tm_delta_entry *e = &rx.entries[i];
		g_assert_cmpuint(e->base_hash, ==, tm_page_hash(base[i], PS));
		g_assert_cmpint(tm_delta_apply(base[i], PS, rx.body + e->off, e->dlen, NULL), ==, 0);
		g_assert_cmpmem(base[i], PS, page[i], PS);
		for (unsigned g = 0; g < PS / 16; g++)
			g_assert_cmpuint(rx.tags[i * (PS / 16) + g], ==, i);
	}
	/* On the other channel the same packet is refused. */
	g_assert_cmpint(tm_delta_decode(&rx, len, &h, 1, &first, &err), ==, -EPROTO);
	g_assert_nonnull(strstr(err->message, "arrived on channel 1, belongs to channel 0"));
	g_clear_error(&err);
	/* The body holds guest bytes: its pages go back to the kernel at fini (guest-buf.h). */
	uint8_t *body = rx.body;
	g_assert_true(mapped(body));
	tm_delta_rx_fini(&rx);
	g_assert_false(mapped(body));
}

typedef struct dcase {
	const char *what;
	size_t off;    /* byte of the body to set */
	uint32_t value; /* as u32 at off (u8 when byte) */
	bool byte;
	int len_delta; /* body_len change */
	int errnum;
	const char *words;
} dcase;

static void test_refused(void)
{
	const size_t e0 = TM_DELTA_HDR_LEN, e1 = e0 + TM_DELTA_ENTRY_LEN;
	const dcase cases[] = {
		{ "block", 0, 1, false, 0, ERANGE, "DELTA: block 1 out of range (1 blocks)" },
		{ "count 0", 4, 0, false, 0, EBADMSG, "page_count 0 outside 1..16" },
		{ "count big", 4, 17, false, 0, EMSGSIZE, "page_count 17 outside 1..16" },
		{ "data_len", 8, 0, false, 0, EBADMSG, "header says" },
		{ "truncated", 0, 0, false, -1, EBADMSG, "header says" },
		{ "page range", e0, 64, false, 0, ERANGE, "page 64 out of range" },
		{ "order", e1, 1, false, 0, EBADMSG, "page 1 after page 1 (must ascend)" },
		{ "dlen", e0 + 4, PS, false, 0, EBADMSG, "dlen 4096" },
		{ "tag_enc", e0 + 16, 3, true, 0, EBADMSG, "invalid tag_enc" },
		{ "reserved", e0 + 23, 1, true, 0, EBADMSG, "reserved bytes not 0" },
		{ "stream", 0, 0, false, 0, EBADMSG, "delta token 0 (input byte 0): bad or truncated" },
	};
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		const dcase *c = &cases[i];
		tm_hello h;
		tm_wire_block b;
		tm_delta_rx rx;
		uint8_t base[3][PS], page[3][PS];
		uint32_t first;
		GError *err = NULL;

		session(&h, &b);
		tm_delta_rx_init(&rx, PACKET);
		uint32_t len = build(&rx, base, page);
		if (strcmp(c->what, "stream") == 0) {
			size_t d0 = TM_DELTA_HDR_LEN + 3 * TM_DELTA_ENTRY_LEN;
			memset(rx.body + d0, 0xff, 3); /* a varint of more than 3 bytes */
		} else if (c->byte) {
			rx.body[c->off] = (uint8_t)c->value;
		} else if (c->len_delta == 0) {
			tm_put32(rx.body + c->off, c->value);
		}
		int r = tm_delta_decode(&rx, (uint32_t)((int)len + c->len_delta), &h, 0, &first, &err);
		g_test_message("%s: %s", c->what, err ? err->message : "(accepted)");
		g_assert_cmpint(r, ==, -c->errnum);
		g_assert_nonnull(strstr(err->message, c->words));
		g_clear_error(&err);
		tm_delta_rx_fini(&rx);
	}
}

static void test_nack(void)
{
	tm_hello h;
	tm_wire_block b;
	uint8_t buf[TM_FRAME_HDR_LEN + 8 + 8 * 16];
	uint32_t pages[16], block, count;
	static const uint32_t in[] = { 0, 15, 32 }, why[] = { 1, 2, 1 };
	GError *err = NULL;

	session(&h, &b);
	size_t len = tm_delta_nack_encode(buf, 2, 3, 0, in, why, 3);
	g_assert_cmpuint(len, ==, TM_FRAME_HDR_LEN + 8 + 24);
	g_assert_cmpuint(buf[5], ==, TM_MSG_DELTA_NACK);
	const uint8_t *body = buf + TM_FRAME_HDR_LEN;
	g_assert_cmpint(tm_delta_nack_decode(body, len - TM_FRAME_HDR_LEN, &h, 0, pages, &block,
					     &count, &err), ==, 0);
	g_assert_cmpuint(block, ==, 0);
	g_assert_cmpuint(count, ==, 3);
	g_assert_cmpmem(pages, sizeof(in), in, sizeof(in));

	const struct {
		const char *what;
		size_t off;
		uint32_t value;
		size_t len;
		unsigned channel;
		int errnum;
		const char *words;
	} bad[] = {
		{ "short", 0, 0, 7, 0, EBADMSG, "truncated" },
		{ "block", 0, 2, 32, 0, ERANGE, "block 2 out of range" },
		{ "count 0", 4, 0, 32, 0, EBADMSG, "count 0 outside 1..16" },
		{ "count big", 4, 17, 32, 0, EMSGSIZE, "count 17 outside 1..16" },
		{ "length", 4, 2, 32, 0, EBADMSG, "body of 32 bytes for 2 pages" },
		{ "page", 8, 64, 32, 0, ERANGE, "page 64: out of range" },
		{ "channel", 0, 0, 32, 1, EPROTO, "not a page of channel 1" },
		{ "reason", 12, 3, 32, 0, EBADMSG, "reason 3" },
	};
	for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
		uint8_t copy[32];
		memcpy(copy, body, 32);
		if (strcmp(bad[i].what, "channel") && strcmp(bad[i].what, "short"))
			tm_put32(copy + bad[i].off, bad[i].value);
		int r = tm_delta_nack_decode(copy, bad[i].len, &h, bad[i].channel, pages, &block,
					     &count, &err);
		g_test_message("%s: %s", bad[i].what, err ? err->message : "(accepted)");
		g_assert_cmpint(r, ==, -bad[i].errnum);
		g_assert_nonnull(strstr(err->message, bad[i].words));
		g_clear_error(&err);
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/delta-wire/round-trip", test_round_trip);
	g_test_add_func("/delta-wire/refused", test_refused);
	g_test_add_func("/delta-wire/nack", test_nack);
	return g_test_run();
}
