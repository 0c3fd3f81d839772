/* SPDX-License-Identifier: MIT */
/*
 * Delta encoding of re-sent pages on the wire (issue 15, docs/wire-format.md "DELTA"): a session
 * of several rounds in which the guest rewrites 5% of each page round-trips RAM and tags
 * bit-exact with the re-sent pages as deltas, both sides count the same, and the deltas take at
 * most 20% of the whole pages; a destination page that is not the sender's base (the test
 * scribbles on it, between rounds and before the final one) is refused, left alone and re-sent
 * whole; and a hand-made protocol 2 sender's hostile DELTA packets (a bad base hash, a page never
 * sent, overlong runs, a run past the page, lengths that lie, DELTA not agreed, a page count or
 * page outside the block, a bad tag) are refused with the channel, block and offset named and
 * nothing written; and a hand-made receiver's DELTA_NACK for a DELTA never sent ends the sender
 * with -EPROTO. Every session test runs for each backend pair (session-fixture.c).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "codec/compress.h"
#include "codec/delta-wire.h"
#include "codec/delta.h"
#include "session-fixture.h"
#include "session/session-internal.h"
#include "transport/transport.h"

#define CHANNELS 3u

static void sum_stats(tm_sender *s, tm_receiver *r, tm_delta_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	for (unsigned i = 0; i < CHANNELS; i++) {
		tm_delta_stats c = { .size = sizeof(c) };
		g_assert_cmpint(s ? tm_sender_get_delta_stats(s, i, &c)
				  : tm_receiver_get_delta_stats(r, i, &c), ==, 0);
		g_assert_cmpuint(c.size, ==, sizeof(c));
		ret->agreed |= c.agreed;
		ret->cache_bytes += c.cache_bytes;
		ret->pages += c.pages;
		ret->page_bytes += c.page_bytes;
		ret->wire_bytes += c.wire_bytes;
		ret->refused += c.refused;
	}
	tm_delta_stats c = { .size = sizeof(c) };
	g_assert_cmpint(s ? tm_sender_get_delta_stats(s, CHANNELS, &c)
			  : tm_receiver_get_delta_stats(r, CHANNELS, &c), ==, -ERANGE);
}

/* Rewrites 5% of page p of block b: one 8-byte word in every 20; and a tag in every 8. */
static void rewrite_5pct(guest *g, unsigned b, uint64_t p, uint32_t ps)
{
	uint8_t *d = g->ram[b] + p * ps;
	for (uint32_t w = 0; w < ps / 8; w += 20) {
		uint64_t v = rnd() | 1;
		uint32_t at = w + (uint32_t)(rnd() % MIN(20u, ps / 8 - w));
		memcpy(d + (size_t)at * 8, &v, 8);
	}
	if (g->tags) {
		uint8_t *t = tm_tag_store_soft_array(g->tags, b) + p * ps / 16;
		for (uint32_t i = 0; i < ps / 16; i += 8)
			t[i] = (uint8_t)(rnd() & 0xf);
	}
}

/* Text-like data that compresses to a few percent (the same line over and over). */
static void fill_text(guest *g, const block_spec *spec, unsigned n)
{
	static const char line[] = "tagmig delta encoding of re-sent pages, page ";
	for (unsigned b = 0; b < n; b++)
		for (size_t i = 0; i < spec[b].len; i++)
			g->ram[b][i] = (uint8_t)line[i % (sizeof(line) - 1)];
}

/* Random data in every page of every block (no zero page: each one has a base worth a delta). */
static void fill_random(guest *g, const block_spec *spec, unsigned n)
{
	for (unsigned b = 0; b < n; b++)
		for (uint64_t p = 0; p < spec[b].len / spec[b].page_size; p++)
			fill_page(g, b, p, p % 7 == 3 ? 3 : 0); /* some pages with uniform tags */
}

static void queue_all(tm_sender *s, const block_spec *spec, unsigned n)
{
	g_autoptr(GError) err = NULL;
	for (unsigned b = 0; b < n; b++) {
		uint64_t np = spec[b].len / spec[b].page_size;
		g_autofree uint64_t *bm = g_new(uint64_t, (np + 63) / 64);
		memset(bm, 0xff, (np + 63) / 64 * 8);
		g_assert_cmpint(tm_sender_queue_bitmap(s, b, bm, 0, np, &err), ==, 0);
	}
}

/* A sender of CHANNELS channels from src with live's settings (packet_size 0: the default),
 * connected to the receiver at port. */
static tm_sender *sender_connect(guest *src, const char *port, uint32_t packet_size,
				 const tm_live_config *live)
{
	g_autoptr(GError) err = NULL;
	tm_sender *s = NULL;
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .channels = CHANNELS, .packet_size = packet_size,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src->layout, src->tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, live, &err), ==, 0);
	tm_delta_stats early = { .size = sizeof(early) };
	g_assert_cmpint(tm_sender_get_delta_stats(s, 0, &early), ==, -EBADFD);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	return s;
}

/*
 * rounds rounds of a guest with deltas on; from the second round on every page is rewritten
 * 5% and re-sent. scribble: before round 1 (synced) and before the final round (not synced:
 * the barrier before RAM_END hears the refusals), the destination's copy of some pages changes.
 */
static void migrate_ex(unsigned rounds, bool scribble, uint32_t compress, bool text,
		       tm_delta_stats *ret_s, tm_delta_stats *ret_r)
{
	const block_spec spec[] = { { "pc.ram", 2 << 20, 4096 }, { "vram", 1 << 20, 16384 } };
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	uint64_t scribbled = 0;

	guest_init(&src, spec, 2, true);
	guest_init(&dst, spec, 2, true);
	if (text)
		fill_text(&src, spec, 2);
	else
		fill_random(&src, spec, 2);
	g_autofree char *port = peer_start_ex(&p, &dst, false, 0);
	tm_live_config live = { .size = sizeof(live), .compress = compress,
				.delta_cache_bytes = 8 << 20,
				.delta_policy = TM_DELTA_ALWAYS }; /* the encoding, on any link */
	s = sender_connect(&src, port, 256 << 10, &live);
	for (unsigned round = 0; round < rounds; round++) {
		if (round > 0)
			for (unsigned b = 0; b < 2; b++)
				for (uint64_t i = 0; i < spec[b].len / spec[b].page_size; i++)
					rewrite_5pct(&src, b, i, spec[b].page_size);
		if (scribble && (round == 1 || round == rounds - 1)) {
			/* The destination's copy is not the base any more: 3 pages of pc.ram
			 * on different channels, one of vram. */
			for (uint64_t i = 1; i < 512; i += 200, scribbled++)
				dst.ram[0][i * 4096 + 100 + round] ^= 0x5a;
			dst.ram[1][3 * 16384 + 7] ^= 0x33;
			scribbled++;
		}
		queue_all(s, spec, 2);
		if (round + 1 < rounds)
			g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	}
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	peer_join(&p);
	g_assert_no_error(p.error);
	assert_same(&src, &dst);

	sum_stats(s, NULL, ret_s);
	sum_stats(NULL, p.r, ret_r);
	g_assert_cmpuint(ret_s->agreed, ==, 1);
	g_assert_cmpuint(ret_r->agreed, ==, 1);
	g_assert_cmpuint(ret_s->cache_bytes, ==, CHANNELS * (8ull << 20));
	g_assert_cmpuint(ret_s->refused, ==, scribbled);
	g_assert_cmpuint(ret_r->refused, ==, scribbled);
	/* What the receiver applied as deltas is what the sender sent, minus the refused. */
	g_assert_cmpuint(ret_r->pages + scribbled, ==, ret_s->pages);
	/* The receiver knows SYNCs by id: one repeated for refused deltas, or before RAM_END by a
	 * channel that sent DELTAs, is the same SYNC. A resume would be told the last id answered
	 * (so it never takes an unanswered SYNC as answered), and the live stats count rounds. */
	tm_live_stats ls = { .size = sizeof(ls) };
	g_assert_cmpint(tm_receiver_get_live_stats(p.r, &ls), ==, 0);
	g_assert_cmpuint(ls.rounds, ==, rounds - 1);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	for (unsigned i = 0; i < CHANNELS; i++)
		g_assert_cmpuint(tm_receiver_test_resume_syncs(p.r, i), ==, rounds - 1);
#endif
	g_test_message("rounds %u: %" G_GUINT64_FORMAT " pages as deltas, %" G_GUINT64_FORMAT
		       " bytes for %" G_GUINT64_FORMAT " (%.3f), %" G_GUINT64_FORMAT " refused",
		       rounds, ret_s->pages, ret_s->wire_bytes, ret_s->page_bytes,
		       (double)ret_s->wire_bytes / (double)ret_s->page_bytes, ret_s->refused);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void migrate(unsigned rounds, bool scribble, tm_delta_stats *ret_s, tm_delta_stats *ret_r)
{
	migrate_ex(rounds, scribble, TM_COMPRESS_NONE, false, ret_s, ret_r);
}

/*
 * With compression the delta must also beat what the page is expected to compress to: text
 * that zstd shrinks to a few percent goes whole (compressed), random pages as deltas.
 */
static void test_vs_compression(void)
{
	tm_delta_stats ss, rs;

	if (!(tm_zcodec_available() & (1u << TM_ZCODEC_ZSTD))) {
		g_test_skip("zstd is not built in");
		return;
	}
	migrate_ex(2, false, TM_COMPRESS_ZSTD, true, &ss, &rs);
	g_assert_cmpuint(ss.agreed, ==, 1);
	g_assert_cmpuint(ss.pages, ==, 0);
	migrate_ex(2, false, TM_COMPRESS_ZSTD, false, &ss, &rs);
	g_assert_cmpuint(ss.pages, ==, 512 + 64);
}

static void test_roundtrip(void)
{
	tm_delta_stats ss, rs;
	migrate(3, false, &ss, &rs);
	/* Every page of rounds 2 and 3 went as a delta: 512 + 64 pages per round. */
	g_assert_cmpuint(ss.pages, ==, 2 * (512 + 64));
	g_assert_cmpuint(rs.pages, ==, ss.pages);
	g_assert_cmpuint(rs.wire_bytes, ==, ss.wire_bytes);
	g_assert_cmpuint(ss.page_bytes, ==, 2 * (512 * 4096 + 64 * 16384));
	/* The goal: 5% rewritten costs at most 20% of the whole pages. */
	g_assert_cmpuint(ss.wire_bytes * 5, <=, ss.page_bytes);
}

static void test_base_refused(void)
{
	tm_delta_stats ss, rs;
	migrate(3, true, &ss, &rs);
	g_assert_cmpuint(ss.refused, ==, 8);
}

/*
 * Pages queued with no SYNC behind them leave once the worker has nothing more to pack, deltas
 * too: here a run whose first page goes whole and the rest as deltas (so the whole page's
 * packet was sent before the first delta, and only the DELTA packet is open at the end) must
 * reach the receiver before any SYNC, not wait in the parked worker for the next round.
 */
static void test_idle_flush(void)
{
	const block_spec spec[] = { { "pc.ram", 1 << 20, 4096 } };
	const uint64_t pages[] = { 0, 1, 2, 3, 4, 5, 6, 7 }; /* one chunk: one channel's run */
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, spec, 1, true);
	guest_init(&dst, spec, 1, true);
	fill_random(&src, spec, 1);
	g_autofree char *port = peer_start_ex(&p, &dst, false, 0);
	tm_live_config live = { .size = sizeof(live), .delta_cache_bytes = 8 << 20,
				.delta_policy = TM_DELTA_ALWAYS };
	s = sender_connect(&src, port, 0, &live);
	queue_all(s, spec, 1);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);

	fill_page(&src, 0, 0, 0); /* rewritten whole: no delta pays */
	for (uint64_t i = 1; i < G_N_ELEMENTS(pages); i++)
		rewrite_5pct(&src, 0, i, 4096);
	g_assert_cmpint(tm_sender_queue_pages(s, 0, pages, G_N_ELEMENTS(pages), &err), ==, 0);
	tm_delta_stats rs = { 0 };
	int64_t deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
	do {
		g_usleep(1000);
		sum_stats(NULL, p.r, &rs);
	} while (rs.pages < G_N_ELEMENTS(pages) - 1 && g_get_monotonic_time() < deadline);
	g_assert_cmpuint(rs.pages, ==, G_N_ELEMENTS(pages) - 1);

	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	peer_join(&p);
	g_assert_no_error(p.error);
	assert_same(&src, &dst);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* Without a cache (the default) nothing is offered; protocol 1 never. */
static void test_off_by_default(void)
{
	const block_spec spec[] = { { "pc.ram", 1 << 20, 4096 } };
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;

	for (unsigned wire = 1; wire <= 2; wire++) {
		g_autoptr(tm_sender) s = NULL;
		guest_init(&src, spec, 1, true);
		guest_init(&dst, spec, 1, true);
		fill_random(&src, spec, 1);
		g_autofree char *port = peer_start_ex(&p, &dst, false, 0);
		tm_live_config live = { .size = sizeof(live), .wire_version = wire,
					.delta_cache_bytes = wire == 1 ? 8 << 20 : 0 };
		s = sender_connect(&src, port, 0, &live);
		for (int round = 0; round < 2; round++) {
			if (round)
				rewrite_5pct(&src, 0, 5, 4096);
			queue_all(s, spec, 1);
			g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
		}
		g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
		peer_join(&p);
		g_assert_no_error(p.error);
		assert_same(&src, &dst);
		tm_delta_stats ds;
		if (wire == 2) {
			sum_stats(s, NULL, &ds);
			g_assert_cmpuint(ds.agreed, ==, 0);
			g_assert_cmpuint(ds.pages, ==, 0);
		}
		peer_free(&p);
		guest_fini(&src);
		guest_fini(&dst);
	}
}

static void test_config_refused(void)
{
	const block_spec spec[] = { { "pc.ram", 1 << 20, 4096 } };
	guest src;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, spec, 1, false);
	tm_sender_config cfg = { .channels = 1 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	tm_live_config live = { .size = sizeof(live), .delta_cache_bytes = 4096 };
	g_assert_cmpint(tm_sender_set_live(s, &live, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "delta_cache_bytes 4096 outside 1 MiB..1 TiB"));
	guest_fini(&src);
}

/* ---- a hand-made protocol 2 sender: HELLO, DATA of pages 8..11, then one DELTA ---- */

#define NPAGES 4u
#define FIRST_PAGE 8u

typedef struct dcase {
	const char *what;
	int errnum;        /* 0: not an error but a refusal (DELTA_NACK) */
	const char *substr; /* in the error; or the NACK's reason as text */
	bool decoded;      /* the decoder names block and offset */
} dcase;

static uint8_t base_of(unsigned i, unsigned j)
{
	return (uint8_t)(j * 7 + i * 31 + 1);
}

static void run_dcase(const dcase *dc)
{
	const char *w = dc->what;
	bool tags = strcmp(w, "bad-tag") == 0;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	guest dst;
	peer p;

	guest_init(&dst, a, 1, tags);
	g_autofree char *port = peer_start(&p, &dst);
	uint32_t features = (strcmp(w, "not-agreed") ? TM_FEATURE_DELTA : 0) |
			    (tags ? TM_FEATURE_TAGS_MTE4 : 0);
	int fd0 = raw_hello2(port, TM_ROLE_DATA, features, 6);
	int fdc = raw_hello2(port, TM_ROLE_CONTROL, features, 6);
	uint8_t ack[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
	for (int k = 0; k < 2; k++) {
		g_assert_cmpint(recv(k ? fdc : fd0, ack, sizeof(ack), MSG_WAITALL), ==, sizeof(ack));
		g_assert_cmpuint(ack[5], ==, TM_MSG_HELLO_ACK);
		g_assert_cmpuint(tm_get32(ack + TM_FRAME_HDR_LEN) & TM_FEATURE_DELTA, ==,
				 features & TM_FEATURE_DELTA);
	}

	/* DATA: pages 8..11, the bases (none for "never-sent", which names page 20). */
	size_t dbody = TM_DATA_HDR_LEN + 8 * NPAGES + NPAGES * 4096 + (tags ? NPAGES : 0);
	g_autofree uint8_t *data = g_malloc0(TM_FRAME_HDR_LEN + dbody);
	tm_frame_encode_v(data, 2, TM_MSG_DATA, (uint32_t)dbody, 1);
	uint8_t *q = data + TM_FRAME_HDR_LEN;
	tm_put32(q + 4, NPAGES);
	tm_put32(q + 8, NPAGES * 4096);
	tm_put32(q + 12, tags ? NPAGES : 0);
	for (unsigned i = 0; i < NPAGES; i++) {
		tm_put32(q + 16 + 8 * i, FIRST_PAGE + i);
		q[21 + 8 * i] = tags ? TM_TAGS_UNIFORM : TM_TAGS_ZERO;
		for (unsigned j = 0; j < 4096; j++)
			q[16 + 8 * NPAGES + i * 4096 + j] = base_of(i, j);
		if (tags)
			q[16 + 8 * NPAGES + NPAGES * 4096 + i] = 0x3;
	}
	g_assert_cmpint(send(fd0, data, TM_FRAME_HDR_LEN + dbody, MSG_NOSIGNAL), ==,
			(ssize_t)(TM_FRAME_HDR_LEN + dbody));

	/* DELTA: each page with 100 bytes changed at 1000 + 8 i. */
	uint8_t base[NPAGES][4096], page[NPAGES][4096], enc[NPAGES][512];
	size_t elen[NPAGES];
	for (unsigned i = 0; i < NPAGES; i++) {
		for (unsigned j = 0; j < 4096; j++)
			base[i][j] = page[i][j] = base_of(i, j);
		for (unsigned j = 0; j < 100; j++)
			page[i][1000 + 8 * i + j] ^= 0xa5;
		ssize_t n = tm_delta_encode(page[i], base[i], 4096, enc[i], sizeof(enc[i]));
		g_assert_cmpint(n, >, 100);
		elen[i] = (size_t)n;
	}
	if (strcmp(w, "overlong-run") == 0) {
		/* A varint of 4 bytes: runs are at most 3. */
		static const uint8_t bad[] = { 0x80, 0x80, 0x80, 0x01, 0x01, 0x00 };
		memcpy(enc[2], bad, sizeof(bad));
		elen[2] = sizeof(bad);
	} else if (strcmp(w, "run-past-page") == 0) {
		/* skip 4000, then 200 bytes: past the page's 4096. */
		uint8_t bad[4 + 200] = { 0xa0, 0x1f, 0xc8, 0x01 };
		memcpy(enc[1], bad, sizeof(bad));
		elen[1] = sizeof(bad);
	}
	uint32_t count = NPAGES, dlen_sum = 0;
	for (unsigned i = 0; i < NPAGES; i++)
		dlen_sum += (uint32_t)elen[i];
	size_t body = TM_DELTA_HDR_LEN + TM_DELTA_ENTRY_LEN * NPAGES + dlen_sum + (tags ? NPAGES : 0);
	g_autofree uint8_t *msg = g_malloc0(TM_FRAME_HDR_LEN + body);
	tm_frame_encode_v(msg, 2, TM_MSG_DELTA, (uint32_t)body, 2);
	q = msg + TM_FRAME_HDR_LEN;
	tm_put32(q, 0);
	tm_put32(q + 4, strcmp(w, "count-past-block") == 0 ? 129 : count);
	tm_put32(q + 8, dlen_sum - (strcmp(w, "data-len-lies") == 0 ? 1 : 0));
	tm_put32(q + 12, tags ? NPAGES : 0);
	uint8_t *dd = q + TM_DELTA_HDR_LEN + TM_DELTA_ENTRY_LEN * NPAGES;
	for (unsigned i = 0; i < NPAGES; i++) {
		uint8_t *e = q + TM_DELTA_HDR_LEN + TM_DELTA_ENTRY_LEN * i;
		uint32_t pg = FIRST_PAGE + i;
		if (strcmp(w, "never-sent") == 0 && i == 3)
			pg = 20;
		if (strcmp(w, "page-past-block") == 0 && i == 3)
			pg = 256;
		tm_put32(e, pg);
		tm_put32(e + 4, (uint32_t)elen[i]);
		uint64_t h = tm_page_hash(base[i], 4096);
		if (strcmp(w, "bad-base") == 0 && i == 1)
			h ^= 1;
		tm_put64(e + 8, h);
		e[16] = tags ? TM_TAGS_UNIFORM : TM_TAGS_ZERO;
		memcpy(dd, enc[i], elen[i]);
		dd += elen[i];
	}
	for (unsigned i = 0; tags && i < NPAGES; i++)
		dd[i] = i == NPAGES - 1 ? 0x35 : 0x05; /* the last: high nibble set */
	(void)!send(fd0, msg, TM_FRAME_HDR_LEN + body, MSG_NOSIGNAL);

	uint8_t *ram = dst.ram[0];
	if (dc->errnum == 0) {
		/* A refusal: one DELTA_NACK naming the page, the others applied. */
		uint8_t nack[TM_FRAME_HDR_LEN + 16];
		g_assert_cmpint(recv(fd0, nack, sizeof(nack), MSG_WAITALL), ==, sizeof(nack));
		g_assert_cmpuint(nack[5], ==, TM_MSG_DELTA_NACK);
		g_assert_cmpuint(tm_get32(nack + 8), ==, 16);
		g_assert_cmpuint(tm_get32(nack + 12), ==, 1); /* after HELLO_ACK */
		const uint8_t *nb = nack + TM_FRAME_HDR_LEN;
		g_assert_cmpuint(tm_get32(nb), ==, 0);
		g_assert_cmpuint(tm_get32(nb + 4), ==, 1);
		bool never = strcmp(w, "never-sent") == 0;
		unsigned refused = never ? 3 : 1;
		g_assert_cmpuint(tm_get32(nb + 8), ==, never ? 20 : FIRST_PAGE + 1);
		g_assert_cmpuint(tm_get32(nb + 12), ==,
				 never ? TM_DELTA_REFUSED_ABSENT : TM_DELTA_REFUSED_BASE);
		/* The receiver answered before reading on: its state is final for the packet. */
		for (unsigned i = 0; i < NPAGES; i++) {
			if (i == refused) {
				if (!never)
					g_assert_cmpmem(ram + (FIRST_PAGE + i) * 4096, 4096, base[i], 4096);
				g_assert_false(tm_receiver_page_present(p.r, 0, never ? 20 : FIRST_PAGE + i));
				continue;
			}
			g_assert_cmpmem(ram + (FIRST_PAGE + i) * 4096, 4096, page[i], 4096);
			g_assert_true(tm_receiver_page_present(p.r, 0, FIRST_PAGE + i));
		}
		if (never)
			g_assert_true(tm_buffer_is_zero(ram + 20 * 4096, 4096));
		tm_delta_stats ds = { .size = sizeof(ds) };
		g_assert_cmpint(tm_receiver_get_delta_stats(p.r, 0, &ds), ==, 0);
		g_assert_cmpuint(ds.refused, ==, 1);
		g_assert_cmpuint(ds.pages, ==, NPAGES - 1);
		close(fd0);
		close(fdc);
		peer_join(&p);
	} else {
		peer_join(&p);
		g_test_message("%s: receiver: %s", w, p.error ? p.error->message : "(none)");
		g_assert_cmpint(p.ret, ==, -dc->errnum);
		g_assert_nonnull(strstr(p.error->message, "channel 0"));
		g_assert_nonnull(strstr(p.error->message, dc->substr));
		if (dc->decoded)
			g_assert_nonnull(strstr(p.error->message, "block 'pc.ram', offset 0x"));
		/* Nothing of the DELTA was applied: the pages hold their bases, no other page
		 * was written. */
		for (unsigned i = 0; i < NPAGES; i++)
			g_assert_cmpmem(ram + (FIRST_PAGE + i) * 4096, 4096, base[i], 4096);
		g_assert_true(tm_buffer_is_zero(ram, FIRST_PAGE * 4096));
		g_assert_true(tm_buffer_is_zero(ram + (FIRST_PAGE + NPAGES) * 4096,
						(1 << 20) - (FIRST_PAGE + NPAGES) * 4096));
		if (tags) {
			const uint8_t *t = tm_tag_store_soft_array(dst.tags, 0);
			for (unsigned i = 0; i < NPAGES * 256; i++)
				g_assert_cmpuint(t[FIRST_PAGE * 256 + i], ==, 0x3);
		}
		close(fd0);
		close(fdc);
	}
	peer_free(&p);
	guest_fini(&dst);
}

static void test_hostile_delta(void)
{
	const dcase cases[] = {
		{ "bad-base", 0, NULL, false },
		{ "never-sent", 0, NULL, false },
		{ "overlong-run", EBADMSG, "delta token 0 (input byte 0): bad or truncated length", true },
		{ "run-past-page", EBADMSG, "4000 + 200 bytes at page offset 0, past the page's 4096",
		  true },
		{ "data-len-lies", EBADMSG, "DELTA: body of", true },
		{ "not-agreed", EPROTO, "DELTA without DELTA agreed in the handshake", false },
		{ "count-past-block", EMSGSIZE, "page_count 129 outside 1..128", true },
		{ "page-past-block", ERANGE, "page 256 out of range for block 0 'pc.ram'", true },
		{ "bad-tag", EBADMSG, "high nibble", true },
	};
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		g_test_message("case %s", cases[i].what);
		run_dcase(&cases[i]);
	}
}

/* ---- a hand-made receiver: it accepts DELTA, then refuses a DELTA that was never sent ---- */

typedef struct fake_recv {
	int listen_fd;
	bool sent_nack;
} fake_recv;

static bool read_all(int fd, uint8_t *buf, size_t len)
{
	return recv(fd, buf, len, MSG_WAITALL) == (ssize_t)len;
}

static gpointer fake_recv_fn(gpointer data)
{
	fake_recv *f = data;
	int fds[2], data_fd = -1;
	uint8_t hdr[TM_FRAME_HDR_LEN], body[4096];

	for (unsigned i = 0; i < 2; i++) {
		fds[i] = accept(f->listen_fd, NULL, NULL);
		g_assert_cmpint(fds[i], >=, 0);
		g_assert_true(read_all(fds[i], hdr, sizeof(hdr)));
		uint32_t len = tm_get32(hdr + 8);
		g_assert_cmpuint(len, <=, sizeof(body));
		g_assert_true(read_all(fds[i], body, len));
		uint32_t offered = tm_get32(body + 20);
		g_assert_cmpuint(offered & TM_FEATURE_DELTA, ==, TM_FEATURE_DELTA);
		if (body[28] == TM_ROLE_DATA)
			data_fd = fds[i];
		tm_hello_ack ack = { .features = offered & (TM_FEATURE_TAGS_MTE4 | TM_FEATURE_DELTA),
				     .max_state_section = 1 << 20, .max_state_total = 1 << 20 };
		uint8_t out[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
		size_t n = tm_hello_ack_encode(out, 0, &ack);
		g_assert_cmpint(send(fds[i], out, n, MSG_NOSIGNAL), ==, (ssize_t)n);
	}
	g_assert_cmpint(data_fd, >=, 0);
	/* The first DATA is on its way: refuse page 0 of a DELTA that never came. */
	g_assert_true(read_all(data_fd, hdr, sizeof(hdr)));
	g_assert_cmpuint(hdr[5], ==, TM_MSG_DATA);
	static const uint32_t page = 0, why = TM_DELTA_REFUSED_BASE;
	uint8_t nack[TM_FRAME_HDR_LEN + 16];
	size_t n = tm_delta_nack_encode(nack, 2, 1, 0, &page, &why, 1);
	g_assert_cmpint(send(data_fd, nack, n, MSG_NOSIGNAL), ==, (ssize_t)n);
	f->sent_nack = true;
	/* Read on until the sender gives up, so that it never blocks on a full socket. */
	while (recv(data_fd, body, sizeof(body), 0) > 0)
		;
	close(fds[0]);
	close(fds[1]);
	return NULL;
}

static void test_hostile_nack(void)
{
	const block_spec spec[] = { { "pc.ram", 4 << 20, 4096 } };
	guest src;
	fake_recv f = { 0 };
	unsigned port = 0;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, spec, 1, false);
	fill_random(&src, spec, 1);
	f.listen_fd = tm_listen("127.0.0.1", "0", &port, &err);
	g_assert_cmpint(f.listen_fd, >=, 0);
	GThread *th = g_thread_new("fake-recv", fake_recv_fn, &f);
	tm_sender_config cfg = { .io_backend = "sockets", .channels = 1, .timeout_ms = 5000,
				 .packet_size = 64 << 10 };
	tm_live_config live = { .size = sizeof(live), .compress = TM_COMPRESS_NONE,
				.delta_cache_bytes = 8 << 20, .no_resume = true };
	g_autofree char *portstr = g_strdup_printf("%u", port);
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &live, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", portstr, &err), ==, 0);
	queue_all(s, spec, 1);
	int r = tm_sender_sync(s, &err);
	g_test_message("sender: %s", err ? err->message : "(none)");
	g_assert_cmpint(r, ==, -EPROTO);
	g_assert_nonnull(strstr(err->message, "channel 0, block 'pc.ram', offset 0x0: DELTA_NACK "
					      "answers no DELTA (1 page refused)"));
	g_assert_true(f.sent_nack);
	g_clear_pointer(&s, tm_sender_free); /* closes the connections: the fake receiver ends */
	g_thread_join(th);
	close(f.listen_fd);
	guest_fini(&src);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "delta/roundtrip", test_roundtrip, false },
		{ "delta/base-refused", test_base_refused, false },
		{ "delta/idle-flush", test_idle_flush, false },
		{ "delta/vs-compression", test_vs_compression, false },
		{ "delta/off-by-default", test_off_by_default, false },
		{ "delta/config-refused", test_config_refused, true },
		{ "delta/hostile-delta", test_hostile_delta, true },
		{ "delta/hostile-nack", test_hostile_nack, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
