/* SPDX-License-Identifier: MIT */
/*
 * Sender and receiver in one process over loopback: migrations with several blocks, page sizes,
 * rounds and syncs, verified bit-exact; refusals at setup and misuse of the API with their
 * messages. Every test runs for each backend pair, plaintext and TLS (session-fixture.c).
 * Injected faults (hostile or vanishing peers, tampering, failing stores) are in
 * test-session-faults.c.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "session-fixture.h"
#include "transport/transport.h"

/*
 * fresh_dst: the destination starts all zero and says so (ram_zeroed); otherwise it holds stale
 * pages and tags that zero pages and zero tags must overwrite.
 */
static void migrate_ex(const block_spec *spec, unsigned nblocks, unsigned channels, bool tags,
		       uint64_t chunk_size, bool fresh_dst)
{
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	tm_sender *s = NULL;

	guest_init(&src, spec, nblocks, tags);
	guest_init(&dst, spec, nblocks, tags);
	guest_fill(&src);
	/* Stale destination content: zero pages must be cleared, zero tags must be set. */
	if (!fresh_dst)
		guest_fill(&dst);

	g_autofree char *port = peer_start_ex(&p, &dst, fresh_dst, 0);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = channels, .chunk_size = chunk_size, .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	int cr = tm_sender_connect(s, "127.0.0.1", port, &err);
	if (cr < 0)
		g_test_message("sender: %s; receiver: %s", err->message,
			       p.error ? p.error->message : "(none)");
	g_assert_cmpint(cr, ==, 0);
	g_assert_no_error(err);

	/* Round 1: everything, by bitmap. */
	uint64_t total = 0;
	for (unsigned b = 0; b < nblocks; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(src.layout, b, &bi);
		uint64_t np = bi.length / bi.page_size;
		g_autofree uint64_t *bm = g_new0(uint64_t, (np + 63) / 64);
		for (uint64_t i = 0; i < np; i++)
			bm[i / 64] |= 1ull << (i % 64);
		g_assert_cmpint(tm_sender_queue_bitmap(s, b, bm, 0, np, &err), ==, 0);
		total += np;
	}
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	g_assert_no_error(err);
	/* The barrier: every page queued before sync is present on the receiver now. */
	g_assert_nonnull(p.r);
	for (unsigned b = 0; b < nblocks; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(src.layout, b, &bi);
		for (uint64_t i = 0; i < bi.length / bi.page_size; i++)
			g_assert_true(tm_receiver_page_present(p.r, b, i));
	}
	g_assert_cmpuint(__atomic_load_n(&p.presented, __ATOMIC_RELAXED), ==, total);
	assert_same(&src, &dst);

	/* Round 2: the guest dirtied some pages (shapes change: data->zero keeps tags). */
	for (unsigned b = 0; b < nblocks; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(src.layout, b, &bi);
		uint64_t np = bi.length / bi.page_size;
		GArray *dirty = g_array_new(FALSE, FALSE, sizeof(uint64_t));
		for (uint64_t i = 0; i < np; i += 1 + rnd() % 7) {
			fill_page(&src, b, i, (unsigned)(rnd() % 5));
			g_array_append_val(dirty, i);
			/* Duplicates are allowed and harmless. */
			if (i % 3 == 0)
				g_array_append_val(dirty, i);
		}
		g_assert_cmpint(tm_sender_queue_pages(s, b, (uint64_t *)dirty->data, dirty->len, &err),
				==, 0);
		g_array_unref(dirty);
	}
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	peer_join(&p);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);
	assert_same(&src, &dst);

	tm_stats ss, rs;
	tm_receiver_get_stats(p.r, &rs);
	/* With RESUME_CONTROL finish returns at END_ACK and the sender's control thread sends
	 * CTL_POS (and with TLS its close_notify) after it: its count reaches the receiver's
	 * when that send returns, which the receiver's end does not wait for. */
	int64_t until = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
	do
		tm_sender_get_stats(s, &ss);
	while (ss.wire_bytes < rs.wire_bytes && g_get_monotonic_time() < until &&
	       (g_usleep(1000), true));
	g_assert_cmpuint(ss.pages, ==, rs.pages);
	g_assert_cmpuint(ss.pages, >=, total);
	g_assert_cmpuint(ss.wire_bytes, ==, rs.wire_bytes);
	g_assert_cmpuint(ss.tag_bytes, ==, rs.tag_bytes);
	for (int k = 0; k < TM_PAGE_KIND_COUNT; k++) {
		g_assert_cmpuint(ss.pages_by_kind[k], ==, rs.pages_by_kind[k]);
		if (tags || k != TM_PAGE_ZERO_TAGGED)
			g_assert_cmpuint(ss.pages_by_kind[k], >, 0);
	}
	if (tags) {
		for (int k = 0; k < TM_TAG_ENC_COUNT; k++)
			g_assert_cmpuint(ss.pages_by_tag_enc[k], >, 0);
		g_assert_cmpuint(ss.tag_bytes, >, 0);
	} else {
		g_assert_cmpuint(ss.tag_bytes, ==, 0);
		g_assert_cmpuint(ss.pages_by_kind[TM_PAGE_ZERO_TAGGED], ==, 0);
	}
	g_assert_cmpuint(ss.channels, ==, channels);
	g_assert_cmpstr(ss.io_backend, ==, send_io);
	g_assert_cmpstr(rs.io_backend, ==, recv_io);
	g_assert_cmpuint(ss.io_submissions, >=, ss.packets);
	if (tls_dir) {
		/* Channel 0 pays for the certificates; the others resume its session, and so does
		 * the control connection of protocol 2. */
		g_assert_cmpuint(ss.tls_full_handshakes, ==, 1);
		g_assert_cmpuint(ss.tls_resumed_handshakes, ==, channels);
		g_assert_cmpuint(rs.tls_full_handshakes + rs.tls_resumed_handshakes, ==, channels + 1);
		g_assert_cmpstr(ss.tls_cipher, ==, "TLS_AES_128_GCM_SHA256");
		g_assert_cmpstr(rs.tls_cipher, ==, ss.tls_cipher);
	} else {
		g_assert_cmpstr(ss.tls_cipher, ==, "");
	}
	if (strcmp(send_io, "io_uring") == 0)
		/* Every completion was reaped, zero-copy notifications included: no buffer was
		 * released while the kernel could still read it. */
		g_assert_cmpuint(ss.io_completions, ==, ss.io_submissions + ss.zc_sends);
	tm_sender_free(s);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/*
 * One migration with a given tuning.zerocopy; returns the sender's zero-copy sends. The library
 * reads no environment: $TAGMIG_ZEROCOPY says the opposite of the tuning and must not matter.
 */
static uint64_t migrate_zerocopy(int zerocopy, const char *env)
{
	static const block_spec spec[] = { { "ram", 8u << 20, 4096 } };
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	tm_sender *s = NULL;

	g_setenv("TAGMIG_ZEROCOPY", env, TRUE);
	guest_init(&src, spec, 1, true);
	guest_init(&dst, spec, 1, true);
	guest_fill(&src);
	g_autofree char *port = peer_start(&p, &dst);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 20000, .tuning = { .zerocopy = zerocopy } };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	uint64_t all = 0;
	g_autofree uint64_t *pages = g_new(uint64_t, (8u << 20) / 4096);
	for (uint64_t i = 0; i < (8u << 20) / 4096; i++)
		pages[all++] = i;
	g_assert_cmpint(tm_sender_queue_pages(s, 0, pages, all, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, 0);
	assert_same(&src, &dst);
	tm_stats ss;
	tm_sender_get_stats(s, &ss);
	tm_sender_free(s);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
	g_unsetenv("TAGMIG_ZEROCOPY");
	g_test_message("zerocopy %d ($TAGMIG_ZEROCOPY=%s): %" G_GUINT64_FORMAT " zero-copy sends of "
		       "%" G_GUINT64_FORMAT " packets", zerocopy, env, ss.zc_sends, ss.packets);
	return ss.zc_sends;
}

static void test_zerocopy_tuning(void)
{
	uint64_t never = migrate_zerocopy(-1, "1"), always = migrate_zerocopy(1, "0");
	g_assert_cmpuint(never, ==, 0);
	if (strcmp(send_io, "io_uring") != 0 || tls_dir) {
		/* plain sockets, and TLS records, never send from guest RAM zero-copy */
		g_assert_cmpuint(always, ==, 0);
		return;
	}
	/* forced on: past the point where the kernel's copying would have turned it off (8) */
	g_assert_cmpuint(always, >, 8);
}

static void migrate(const block_spec *spec, unsigned nblocks, unsigned channels, bool tags,
		    uint64_t chunk_size)
{
	migrate_ex(spec, nblocks, channels, tags, chunk_size, false);
}

static void test_migrate_fresh_destination(void)
{
	/* Round 2 turns pages sent in round 1 into zero pages: those must be cleared even though
	 * the receiver skips zero pages it has never received. */
	const block_spec spec[] = { { "pc.ram", 4 << 20, 4096 }, { "b", 1 << 20, 65536 } };
	migrate_ex(spec, 2, 3, true, 0, true);
}

static void test_migrate_basic(void)
{
	const block_spec spec[] = { { "pc.ram", 8 << 20, 4096 } };
	migrate(spec, 1, 4, true, 0);
}

static void test_migrate_blocks_pagesizes(void)
{
	/* Sizes that are not multiples of the chunk, three page sizes, several channel counts. */
	const block_spec spec[] = {
		{ "ram-4k", (3 << 20) + 5 * 4096, 4096 },
		{ "ram-16k", (1 << 20) + 3 * 16384, 16384 },
		{ "ram-64k", (2 << 20) + 65536, 65536 },
	};
	for (unsigned ch = 1; ch <= 8; ch *= 2)
		migrate(spec, 3, ch, true, 1 << 20);
}

static void test_migrate_no_tags(void)
{
	const block_spec spec[] = { { "a", 4 << 20, 4096 }, { "b", 1 << 20, 16384 } };
	migrate(spec, 2, 3, false, 0);
}

/* A receiver whose RAM differs from what the sender announces refuses, and says what differs. */
static void refuse_case(const block_spec *ss, const block_spec *rs, bool stags, bool rtags,
			const char *expect)
{
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, ss, 1, stags);
	guest_init(&dst, rs, 1, rtags);
	g_autofree char *port = peer_start(&p, &dst);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2, .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	int r = tm_sender_connect(s, "127.0.0.1", port, &err);
	peer_join(&p);
	g_assert_cmpint(r, <, 0);
	g_assert_nonnull(err);
	g_test_message("sender: %s", err->message);
	g_test_message("receiver: %s", p.error ? p.error->message : "(none)");
	g_assert_nonnull(strstr(err->message, expect));
	g_assert_nonnull(p.error);
	g_assert_nonnull(strstr(p.error->message, expect));
	/* Nothing was written into the receiver's RAM. */
	g_assert_true(tm_buffer_is_zero(dst.ram[0], dst.len[0]));
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_refuse_layout(void)
{
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	const block_spec len[] = { { "pc.ram", 1 << 20, 4096 } };
	const block_spec name[] = { { "other", 2 << 20, 4096 } };
	const block_spec psz[] = { { "pc.ram", 2 << 20, 65536 } };
	refuse_case(a, len, false, false, "sender length 2097152 page size 4096, receiver length 1048576");
	refuse_case(a, name, false, false, "'pc.ram' on the sender, 'other' on the receiver");
	refuse_case(a, psz, false, false, "receiver length 2097152 page size 65536");
	refuse_case(a, a, true, false, "no tag store");
	refuse_case(a, a, false, true, "sender migrates no tags");
}

typedef struct poller {
	tm_sender *s;
	gint stop;
	gint polls;
} poller;

static gpointer poll_stats(gpointer data)
{
	poller *pl = data;
	tm_stats st;
	while (!g_atomic_int_get(&pl->stop)) {
		tm_sender_get_stats(pl->s, &st);
		/* nothing of the channels shows before the session started */
		g_assert_cmpuint(st.wire_bytes, ==, 0);
		g_atomic_int_inc(&pl->polls);
	}
	return NULL;
}

/*
 * A VMM's progress thread reads the statistics while connect fails at setup (here: the receiver
 * refuses the layout, and the sender closes every channel it opened). The statistics must not
 * touch a channel's handle while attach opens or closes it (ASan sees a use after free).
 */
static void test_stats_during_failed_setup(void)
{
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	const block_spec other[] = { { "pc.ram", 1 << 20, 4096 } };

	for (unsigned round = 0; round < 8; round++) {
		guest src, dst;
		peer p;
		g_autoptr(GError) err = NULL;
		tm_sender *s = NULL;
		guest_init(&src, a, 1, false);
		guest_init(&dst, other, 1, false);
		g_autofree char *port = peer_start(&p, &dst);
		tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
					 .channels = 8, .timeout_ms = 20000 };
		g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
		poller pl = { .s = s };
		GThread *t = g_thread_new("stats", poll_stats, &pl);
		while (!g_atomic_int_get(&pl.polls)) /* the poller runs before connect starts */
			g_thread_yield();
		g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), <, 0);
		g_atomic_int_set(&pl.stop, 1);
		g_thread_join(t);
		peer_join(&p);
		tm_sender_free(s);
		peer_free(&p);
		guest_fini(&src);
		guest_fini(&dst);
	}
}

static void test_queue_errors(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	uint64_t bad = 256, bm = 1;

	guest_init(&src, a, 1, false);
	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 1, .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_queue_pages(s, 0, &bad, 1, &err), ==, -EBADFD);
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	g_assert_cmpint(tm_sender_queue_pages(s, 0, &bad, 1, &err), ==, -ERANGE);
	g_assert_nonnull(strstr(err->message, "page 256 out of range"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_queue_pages(s, 1, &bad, 0, &err), ==, -ERANGE);
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, &bm, 250, 7, &err), ==, -ERANGE);
	g_clear_error(&err);
	/* Nothing was queued: no page of the layout arrived, and the receiver says so (issue 14). */
	g_assert_cmpint(tm_sender_finish(s, &err), ==, -EPROTO);
	g_test_message("sender: %s", err->message);
	g_assert_nonnull(strstr(err->message, "incomplete migration: 256 pages never arrived"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, -EBADFD);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(p.error->message, "block 'pc.ram', offset 0x0"));
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/*
 * Pages queued out of order and twice (tm_sender_queue_pages allows both) go in packets whose
 * pages ascend, all a receiver takes (tm_data_entries_decode: a page twice in one packet would
 * leave which copy lands to the order the receiver writes its runs in): a page at or below the
 * open packet's last starts another packet. [5] [0..15] [5] [3 200] [100] [100 255]: 6.
 */
static void test_queue_unordered(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	uint64_t odd[] = { 5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
			   5, 3, 200, 100, 100, 255 };
	uint64_t all[256];
	tm_stats st;

	for (unsigned i = 0; i < G_N_ELEMENTS(all); i++)
		all[i] = i;
	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, true);
	guest_fill(&src);
	g_autofree char *port = peer_start(&p, &dst);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 1,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	g_assert_cmpint(tm_sender_queue_pages(s, 0, odd, G_N_ELEMENTS(odd), &err), ==, 0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	g_assert_no_error(err);
	tm_sender_get_stats(s, &st);
	g_assert_cmpuint(st.pages, ==, G_N_ELEMENTS(odd));
	g_assert_cmpuint(st.packets, ==, 6);
	g_assert_cmpint(tm_sender_queue_pages(s, 0, all, G_N_ELEMENTS(all), &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	peer_join(&p);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);
	assert_same(&src, &dst);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_config_errors(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	tm_sender *s = NULL;

	guest_init(&src, a, 1, false);
	tm_sender_config c1 = { .channels = 65 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &c1, &s, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "65 channels"));
	g_clear_error(&err);
	tm_sender_config c2 = { .packet_size = 3000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &c2, &s, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "invalid configuration: packet_size 3000"));
	g_clear_error(&err);
	tm_sender_config c4 = { .chunk_size = 3 << 20 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &c4, &s, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "chunk_size 3145728"));
	g_clear_error(&err);
	tm_sender_config c3 = { .io_backend = "carrier-pigeon" };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &c3, &s, &err), ==, -ENOENT);
	g_assert_nonnull(strstr(err->message, "carrier-pigeon"));
	g_assert_null(s);
	guest_fini(&src);
}

/*
 * Packets of 16 MiB of every other page: over 2000 iovecs each, more than one sendmsg takes
 * (IOV_MAX), so every packet goes out in several partial sends that must be resumed in order.
 */
static void test_short_sends_resumed(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 32 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, true);
	for (uint64_t i = 0; i < (32 << 20) / 4096; i++)
		fill_page(&src, 0, i, i % 2 ? 0 : 3);
	/* Half the pages only: the receiver's VMM waives the rest. */
	g_autofree char *port = peer_start_waived(&p, &dst, 0);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2, .timeout_ms = 20000,
				 .packet_size = 16 << 20, .chunk_size = 16 << 20 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	g_autofree uint64_t *pages = g_new(uint64_t, 4096);
	size_t n = 0;
	for (uint64_t i = 0; i < 8192; i += 2)
		pages[n++] = i;
	g_assert_cmpint(tm_sender_queue_pages(s, 0, pages, n, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	peer_join(&p);
	g_assert_no_error(p.error);
	tm_stats st;
	tm_sender_get_stats(s, &st);
	g_test_message("%" G_GUINT64_FORMAT " packets in %" G_GUINT64_FORMAT " submissions",
		       st.packets, st.io_submissions);
	g_assert_cmpuint(st.packets, ==, 2);
	g_assert_cmpuint(st.io_submissions, >, st.packets + 2);
	for (uint64_t i = 0; i < 8192; i += 2) {
		g_assert_true(tm_receiver_page_present(p.r, 0, i));
		g_assert_false(tm_receiver_page_present(p.r, 0, i + 1));
		g_assert_true(memcmp(src.ram[0] + i * 4096, dst.ram[0] + i * 4096, 4096) == 0);
		g_assert_true(memcmp(tm_tag_store_soft_array(src.tags, 0) + i * 256,
				     tm_tag_store_soft_array(dst.tags, 0) + i * 256, 256) == 0);
	}
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* ---- protocol versions (docs/design/live-engine.md 2.1) ---- */

/*
 * One small migration with the sender speaking wire (0: without tm_sender_set_live(), which is
 * protocol 2): both sides report the version after the handshake, 0 before; the session id is
 * the same on both sides; the guest arrives whole.
 */
static void migrate_version(unsigned wire)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	uint8_t sid[16], rid[16];
	unsigned want = wire ? wire : 2;

	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, true);
	guest_fill(&src);
	g_autofree char *port = peer_start(&p, &dst);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 3,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	if (wire) {
		tm_live_config lc = { .size = sizeof(lc), .wire_version = wire };
		g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	}
	g_assert_cmpuint(tm_sender_wire_version(s), ==, 0);
	g_assert_cmpint(tm_sender_get_session_id(s, sid), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	g_assert_cmpuint(tm_sender_wire_version(s), ==, want);
	/* The protocol is agreed: too late to change it. */
	tm_live_config late = { .size = sizeof(late) };
	g_assert_cmpint(tm_sender_set_live(s, &late, &err), ==, -EBUSY);
	g_clear_error(&err);

	uint64_t np = (2 << 20) / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, np, &err), ==, 0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	peer_join(&p);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);
	g_assert_cmpuint(tm_receiver_wire_version(p.r), ==, want);
	g_assert_cmpint(tm_receiver_get_session_id(p.r, rid), ==, 0);
	g_assert_cmpmem(sid, 16, rid, 16);
	assert_same(&src, &dst);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_protocol_2(void)
{
	migrate_version(0);
	migrate_version(2);
}

/* A protocol 1 sender (tagmig 0.1, or wire_version = 1) is served in protocol 1. */
static void test_protocol_1_served(void)
{
	migrate_version(1);
}

/*
 * Attached sockets: protocol 2 takes channels + 1 (control last); without set_live, exactly
 * `channels` sockets keep tagmig 0.1's meaning (protocol 1); other counts are refused.
 */
typedef struct attach_peer {
	guest *g;
	int fds[8];
	unsigned n;
	tm_receiver *r;
	int ret;
	GError *error;
} attach_peer;

static gpointer attach_receiver(gpointer data)
{
	attach_peer *a = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .timeout_ms = 20000 };

	a->ret = tm_receiver_new(&cfg, &a->r, &a->error);
	if (a->ret >= 0)
		a->ret = tm_receiver_attach(a->r, a->fds, a->n, &a->error);
	if (a->ret >= 0)
		a->ret = tm_receiver_start(a->r, a->g->layout, a->g->tags, &a->error);
	if (a->ret >= 0)
		a->ret = tm_receiver_wait(a->r, &a->error);
	return NULL;
}

static void attach_once(unsigned channels, unsigned n, bool set_live, unsigned want)
{
	guest src, dst;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	attach_peer ap = { .g = &dst, .n = n };
	int sfds[8];

	guest_init(&src, a, 1, false);
	guest_init(&dst, a, 1, false);
	guest_fill(&src);
	/* TCP connections over loopback, as a VMM would hand them over (io_uring's zero-copy
	 * sends need TCP). */
	unsigned lport;
	int lfd = tm_listen("127.0.0.1", "0", &lport, NULL);
	g_assert_cmpint(lfd, >=, 0);
	g_autofree char *lports = g_strdup_printf("%u", lport);
	for (unsigned i = 0; i < n; i++) {
		sfds[i] = tm_net_connect("127.0.0.1", lports, 5000, -1, NULL);
		g_assert_cmpint(sfds[i], >=, 0);
		ap.fds[i] = accept(lfd, NULL, NULL);
		g_assert_cmpint(ap.fds[i], >=, 0);
	}
	close(lfd);
	tm_sender_config cfg = { .io_backend = send_io, .channels = channels, .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	if (set_live) {
		tm_live_config lc = { .size = sizeof(lc) };
		g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	}
	if (want == 0) {
		/* Refused before anything is sent: the sockets are the sender's, and closed. */
		int r = tm_sender_attach(s, sfds, n, &err);
		g_assert_cmpint(r, ==, -EINVAL);
		g_test_message("attach %u for %u channels: %s", n, channels, err->message);
		g_assert_nonnull(strstr(err->message, "sockets given for"));
		if (set_live)
			g_assert_nonnull(strstr(err->message, "protocol 2 needs"));
		for (unsigned i = 0; i < n; i++)
			close(ap.fds[i]);
		guest_fini(&src);
		guest_fini(&dst);
		return;
	}
	GThread *t = g_thread_new("attach-receiver", attach_receiver, &ap);
	g_assert_cmpint(tm_sender_attach(s, sfds, n, &err), ==, 0);
	g_assert_cmpuint(tm_sender_wire_version(s), ==, want);
	uint64_t bm[(1 << 20) / 4096 / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, (1 << 20) / 4096, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_thread_join(t);
	g_assert_no_error(ap.error);
	g_assert_cmpint(ap.ret, ==, 0);
	g_assert_cmpuint(tm_receiver_wire_version(ap.r), ==, want);
	assert_same(&src, &dst);
	tm_receiver_free(ap.r);
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_attach_counts(void)
{
	attach_once(2, 3, false, 2); /* channels + control: protocol 2 */
	attach_once(2, 2, false, 1); /* tagmig 0.1's call: protocol 1 */
	attach_once(2, 3, true, 2);
	attach_once(2, 2, true, 0);  /* set_live said protocol 2: control missing */
	attach_once(2, 4, false, 0);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "migrate-basic", test_migrate_basic, false },
		{ "migrate-blocks-pagesizes", test_migrate_blocks_pagesizes, false },
		{ "migrate-no-tags", test_migrate_no_tags, false },
		{ "migrate-fresh-destination", test_migrate_fresh_destination, false },
		{ "refuse-layout", test_refuse_layout, false },
		{ "queue-errors", test_queue_errors, false },
		{ "queue-unordered", test_queue_unordered, false },
		{ "config-errors", test_config_errors, false },
		{ "short-sends-resumed", test_short_sends_resumed, false },
		{ "zerocopy-tuning", test_zerocopy_tuning, false },
		{ "stats-during-failed-setup", test_stats_during_failed_setup, false },
		{ "protocol-2", test_protocol_2, false },
		{ "protocol-1-served", test_protocol_1_served, false },
		{ "attach-counts", test_attach_counts, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
