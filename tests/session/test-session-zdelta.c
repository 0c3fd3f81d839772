/* SPDX-License-Identifier: MIT */
/*
 * ZDELTA in a session (docs/wire-format.md "ZDELTA"): with DELTA and zstd both agreed, a guest
 * of random pages (zstd does not shrink them, so deltas beat the compressed page) whose second
 * round flips a flag bit in every eighth word (deltas that zstd does shrink) sends its re-sent
 * pages as ZDELTAs: RAM and tags bit-exact, both sides count the same ZDELTA packets, and the
 * sender's delta bytes on the wire are fewer than the deltas the receiver decoded. Without zstd
 * agreed (lz4 only) no ZDELTA goes. Every session test runs for each backend pair
 * (session-fixture.c).
 */
#include <errno.h>
#include <string.h>

#include "codec/compress.h"
#include "session-fixture.h"
#include "session/delta.h"

#define CHANNELS 2u

static void sum(tm_sender *s, tm_receiver *r, tm_delta_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	for (unsigned i = 0; i < CHANNELS; i++) {
		tm_delta_stats c = { .size = sizeof(c) };
		g_assert_cmpint(s ? tm_sender_get_delta_stats(s, i, &c)
				  : tm_receiver_get_delta_stats(r, i, &c), ==, 0);
		ret->pages += c.pages;
		ret->wire_bytes += c.wire_bytes;
		ret->zdelta_packets += c.zdelta_packets;
		ret->refused += c.refused;
	}
}

/* A session into dst's peer p, with deltas always and compress, its channels connected. */
static tm_sender *connect_to(guest *src, guest *dst, peer *p, uint32_t compress)
{
	g_autoptr(GError) err = NULL;
	tm_sender *s = NULL;

	g_autofree char *port = peer_start_ex(p, dst, false, 0);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .channels = CHANNELS, .packet_size = 256 << 10,
				 .timeout_ms = 20000 };
	tm_live_config live = { .size = sizeof(live), .compress = compress,
				.delta_cache_bytes = 4 << 20, .delta_policy = TM_DELTA_ALWAYS };
	g_assert_cmpint(tm_sender_new(src->layout, src->tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &live, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	return s;
}

static void migrate(uint32_t compress, tm_delta_stats *ret_s, tm_delta_stats *ret_r)
{
	const block_spec spec[] = { { "pc.ram", 2 << 20, 4096 } };
	uint64_t np = spec[0].len / spec[0].page_size;
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, spec, 1, true);
	guest_init(&dst, spec, 1, true);
	for (uint64_t i = 0; i < np; i++)
		fill_page(&src, 0, i, 0); /* random data and tags */
	s = connect_to(&src, &dst, &p, compress);
	g_autofree uint64_t *bm = g_new(uint64_t, (np + 63) / 64);
	for (int round = 0; round < 2; round++) {
		if (round)
			for (size_t i = 0; i < spec[0].len; i += 64)
				src.ram[0][i + 2] ^= 0x04; /* a flag bit in every eighth word */
		memset(bm, 0xff, (np + 63) / 64 * 8);
		g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, np, &err), ==, 0);
		g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	}
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	peer_join(&p);
	g_assert_no_error(p.error);
	assert_same(&src, &dst);
	sum(s, NULL, ret_s);
	sum(NULL, p.r, ret_r);
	g_test_message("compress %u: %" G_GUINT64_FORMAT " pages as deltas, %" G_GUINT64_FORMAT
		       " ZDELTA packets, sender %" G_GUINT64_FORMAT " bytes, receiver decoded %"
		       G_GUINT64_FORMAT,
		       compress, ret_s->pages, ret_s->zdelta_packets, ret_s->wire_bytes,
		       ret_r->wire_bytes);
	g_assert_cmpuint(ret_s->pages, ==, np);
	g_assert_cmpuint(ret_r->pages, ==, np);
	g_assert_cmpuint(ret_s->refused, ==, 0);
	g_assert_cmpuint(ret_r->zdelta_packets, ==, ret_s->zdelta_packets);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_zstd(void)
{
	tm_delta_stats ss, rs;

	if (!(tm_zcodec_available() & (1u << TM_ZCODEC_ZSTD))) {
		g_test_skip("zstd is not built in");
		return;
	}
	migrate(TM_COMPRESS_ZSTD, &ss, &rs);
	g_assert_cmpuint(ss.zdelta_packets, >, 0);
	/* zstd shrank the deltas: fewer bytes sent than the receiver decoded. */
	g_assert_cmpuint(ss.wire_bytes * 2, <, rs.wire_bytes);
}

static void test_lz4_only(void)
{
	tm_delta_stats ss, rs;

	if (!(tm_zcodec_available() & (1u << TM_ZCODEC_LZ4))) {
		g_test_skip("lz4 is not built in");
		return;
	}
	migrate(TM_COMPRESS_LZ4, &ss, &rs);
	g_assert_cmpuint(ss.zdelta_packets, ==, 0);
	g_assert_cmpuint(ss.wire_bytes, ==, rs.wire_bytes);
}

/*
 * A receiver that could not get a zstd context at setup (out of memory) has nowhere to read a
 * ZDELTA's body into: it refuses the first one with ENOMEM, and the sender's round fails with
 * that reason. (It read the body into NULL: EFAULT from the socket, a crash with tagmig's own
 * TLS records.)
 */
static void test_no_context(void)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	const block_spec spec[] = { { "pc.ram", 1 << 20, 4096 } };
	uint64_t np = spec[0].len / spec[0].page_size;
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	if (!(tm_zcodec_available() & (1u << TM_ZCODEC_ZSTD))) {
		g_test_skip("zstd is not built in");
		return;
	}
	guest_init(&src, spec, 1, true);
	guest_init(&dst, spec, 1, true);
	for (uint64_t i = 0; i < np; i++)
		fill_page(&src, 0, i, 0);
	tm_drecv_test_no_zctx(true);
	s = connect_to(&src, &dst, &p, TM_COMPRESS_ZSTD);
	g_autofree uint64_t *bm = g_new(uint64_t, (np + 63) / 64);
	memset(bm, 0xff, (np + 63) / 64 * 8);
	int r = 0;
	for (int round = 0; round < 2 && r == 0; round++) {
		if (round)
			for (size_t i = 0; i < spec[0].len; i += 64)
				src.ram[0][i + 2] ^= 0x04; /* deltas zstd shrinks: ZDELTAs */
		r = tm_sender_queue_bitmap(s, 0, bm, 0, np, &err);
		if (r == 0)
			r = tm_sender_sync(s, &err);
		g_assert_true(r == 0 || round == 1);
	}
	if (r == 0) /* the refusal may come after the round's SYNC_ACKs: finish then fails */
		r = tm_sender_finish(s, &err);
	peer_join(&p);
	tm_drecv_test_no_zctx(false);
	g_assert_cmpint(r, <, 0);
	g_assert_nonnull(p.error);
	g_test_message("receiver: %s; sender: %s", p.error->message, err->message);
	g_assert_cmpint(p.error->code, ==, ENOMEM);
	g_assert_nonnull(strstr(p.error->message, "ZDELTA: no zstd context on this side"));
	g_assert_nonnull(strstr(err->message, "no zstd context"));
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
#else
	g_test_skip("needs the library's test hooks (-Dtest_hooks=true)");
#endif
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "zdelta/zstd", test_zstd, false },
		{ "zdelta/lz4-only", test_lz4_only, false },
		{ "zdelta/no-context", test_no_context, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
