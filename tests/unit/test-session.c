/* SPDX-License-Identifier: MIT */
/*
 * Sender and receiver in one process over loopback: migrations with several blocks, page sizes,
 * rounds and syncs, verified bit-exact; refusals and corrupt input with their messages.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "tagmig/tagmig.h"
#include "transport/transport.h"

/* The I/O backends of the test being run (every test runs for each pair, see main()). */
static const char *send_io = "sockets";
static const char *recv_io = "sockets";
/* TLS credentials of the test being run (NULL: plaintext); one directory holds both sides'. */
static const char *tls_dir;

typedef struct guest {
	tm_ram_layout *layout;
	tm_tag_store *tags;
	uint8_t *ram[4];
	uint8_t *map[4]; /* mapping behind ram[], which is aligned to 64 KiB */
	size_t len[4];
	unsigned nblocks;
} guest;

typedef struct block_spec {
	const char *name;
	size_t len;
	uint32_t page_size;
} block_spec;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	/* splitmix64: fast, deterministic test data */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void guest_init(guest *g, const block_spec *spec, unsigned n, bool with_tags)
{
	memset(g, 0, sizeof(*g));
	tm_ram_layout_new(&g->layout);
	g->nblocks = n;
	for (unsigned i = 0; i < n; i++) {
		g->len[i] = spec[i].len;
		g->map[i] = mmap(NULL, spec[i].len + 65536, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		g_assert_true(g->map[i] != MAP_FAILED);
		g->ram[i] = (uint8_t *)(((uintptr_t)g->map[i] + 65535) & ~(uintptr_t)65535);
		g_assert_cmpint(tm_ram_layout_add_block(g->layout, spec[i].name, g->ram[i],
							spec[i].len, spec[i].page_size,
							(uint64_t)i << 32, NULL),
				==, (int)i);
	}
	if (with_tags)
		g_assert_cmpint(tm_tag_store_new(&tm_tag_store_soft, g->layout, NULL, &g->tags, NULL),
				==, 0);
}

static void guest_fini(guest *g)
{
	tm_tag_store_free(g->tags);
	tm_ram_layout_free(g->layout);
	for (unsigned i = 0; i < g->nblocks; i++)
		munmap(g->map[i], g->len[i] + 65536);
}

/* Fills page p of block b with one of the interesting shapes, chosen by `shape`. */
static void fill_page(guest *g, unsigned b, uint64_t p, unsigned shape)
{
	tm_ram_block_info bi;
	tm_ram_layout_block(g->layout, b, &bi);
	uint8_t *d = g->ram[b] + p * bi.page_size;
	uint8_t *t = g->tags ? tm_tag_store_soft_array(g->tags, b) + p * bi.page_size / 16 : NULL;
	size_t nt = bi.page_size / 16;

	switch (shape % 5) {
	case 0: /* random data, random per-granule tags */
		for (size_t i = 0; i < bi.page_size; i += 8) {
			uint64_t v = rnd();
			memcpy(d + i, &v, 8);
		}
		for (size_t i = 0; t && i < nt; i++)
			t[i] = (uint8_t)(rnd() & 0xf);
		break;
	case 1: /* zero page, zero tags */
		memset(d, 0, bi.page_size);
		if (t)
			memset(t, 0, nt);
		break;
	case 2: /* zero page carrying tags */
		memset(d, 0, bi.page_size);
		if (t)
			memset(t, 0x9, nt), t[nt / 2] = 0x4;
		break;
	case 3: /* data with uniform tags */
		memset(d, (int)(p & 0xff) | 1, bi.page_size);
		if (t)
			memset(t, 0x5, nt);
		break;
	default: /* data with zero tags */
		d[bi.page_size - 1] = 0x7f;
		if (t)
			memset(t, 0, nt);
		break;
	}
}

static void guest_fill(guest *g)
{
	for (unsigned b = 0; b < g->nblocks; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(g->layout, b, &bi);
		for (uint64_t p = 0; p < bi.length / bi.page_size; p++)
			fill_page(g, b, p, (unsigned)(rnd() % 5));
	}
}

static void assert_same(guest *a, guest *b)
{
	for (unsigned i = 0; i < a->nblocks; i++) {
		g_assert_true(memcmp(a->ram[i], b->ram[i], a->len[i]) == 0);
		if (a->tags && b->tags)
			g_assert_true(memcmp(tm_tag_store_soft_array(a->tags, i),
					     tm_tag_store_soft_array(b->tags, i), a->len[i] / 16) == 0);
	}
}

typedef struct peer {
	guest *g;
	bool ram_zeroed;
	unsigned timeout_ms; /* 0: 20 s */
	int listen_fd;
	tm_receiver *r;
	GError *error;
	int ret;
	uint64_t presented;
	GThread *thread;
} peer;

static void count_present(void *opaque, unsigned ch, unsigned block, uint64_t first, uint64_t n)
{
	peer *p = opaque;
	__atomic_fetch_add(&p->presented, n, __ATOMIC_RELAXED);
}

static gpointer receiver_thread(gpointer data)
{
	peer *p = data;
	tm_receiver_config cfg = { .io_backend = recv_io,
				   .tls_creds_dir = tls_dir,
				   .timeout_ms = p->timeout_ms ? p->timeout_ms : 20000,
				   .on_present = count_present,
				   .opaque = p,
				   .ram_zeroed = p->ram_zeroed };

	p->ret = tm_receiver_new(&cfg, &p->r, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_accept(p->r, p->listen_fd, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_start(p->r, p->g->layout, p->g->tags, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_wait(p->r, &p->error);
	return NULL;
}

static char *peer_start_zeroed(peer *p, guest *g, bool ram_zeroed)
{
	unsigned port = 0;
	memset(p, 0, sizeof(*p));
	p->g = g;
	p->ram_zeroed = ram_zeroed;
	p->listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(p->listen_fd, >=, 0);
	p->thread = g_thread_new("receiver", receiver_thread, p);
	return g_strdup_printf("%u", port);
}

static char *peer_start(peer *p, guest *g)
{
	return peer_start_zeroed(p, g, false);
}

static void peer_join(peer *p)
{
	g_thread_join(p->thread);
	close(p->listen_fd);
}

static void peer_free(peer *p)
{
	tm_receiver_free(p->r);
	g_clear_error(&p->error);
}

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

	g_autofree char *port = peer_start_zeroed(&p, &dst, fresh_dst);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = channels, .chunk_size = chunk_size, .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
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
	tm_sender_get_stats(s, &ss);
	tm_receiver_get_stats(p.r, &rs);
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
		/* Channel 0 pays for the certificates; the others resume its session. */
		g_assert_cmpuint(ss.tls_full_handshakes, ==, 1);
		g_assert_cmpuint(ss.tls_resumed_handshakes, ==, channels - 1);
		g_assert_cmpuint(rs.tls_full_handshakes + rs.tls_resumed_handshakes, ==, channels);
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

typedef struct sender_run {
	guest *g;
	const char *port;
	unsigned channels;
	bool queue_all; /* after connect: queue everything and finish */
	int ret;
	GError *error;
} sender_run;

static gpointer sender_thread(gpointer data)
{
	sender_run *sr = data;
	g_autoptr(tm_sender) s = NULL;
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = sr->channels, .timeout_ms = 20000 };

	sr->ret = tm_sender_new(sr->g->layout, sr->g->tags, &cfg, &s, &sr->error);
	if (sr->ret >= 0)
		sr->ret = tm_sender_connect(s, "127.0.0.1", sr->port, &sr->error);
	for (unsigned b = 0; sr->ret >= 0 && sr->queue_all && b < sr->g->nblocks; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(sr->g->layout, b, &bi);
		uint64_t np = bi.length / bi.page_size;
		g_autofree uint64_t *pages = g_new(uint64_t, np);
		for (uint64_t i = 0; i < np; i++)
			pages[i] = i;
		sr->ret = tm_sender_queue_pages(s, b, pages, np, &sr->error);
	}
	if (sr->ret >= 0 && sr->queue_all)
		sr->ret = tm_sender_finish(s, &sr->error);
	return NULL;
}

/* The receiver gives up after accept (a tool that cannot map the RAM): the sender learns why. */
static void test_receiver_abort(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_receiver) r = NULL;
	unsigned port;

	guest_init(&src, a, 1, false);
	int lfd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_autofree char *ports = g_strdup_printf("%u", port);
	sender_run sr = { .g = &src, .port = ports, .channels = 3 };
	GThread *t = g_thread_new("sender", sender_thread, &sr);
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir, .timeout_ms = 20000 };
	g_assert_cmpint(tm_receiver_new(&cfg, &r, NULL), ==, 0);
	g_assert_cmpint(tm_receiver_accept(r, lfd, &err), ==, 0);
	const tm_ram_layout *ann = tm_receiver_announced_layout(r);
	tm_ram_block_info bi;
	g_assert_cmpint(tm_ram_layout_block(ann, 0, &bi), ==, 0);
	g_assert_cmpstr(bi.name, ==, "pc.ram");
	g_assert_cmpuint(bi.length, ==, 1 << 20);
	g_assert_false(tm_receiver_peer_sends_tags(r));
	tm_receiver_abort(r, ENOSPC, "RAM file out.img is 4096 bytes, the sender announces 1048576");
	g_thread_join(t);
	g_assert_cmpint(sr.ret, ==, -ENOSPC);
	g_assert_nonnull(strstr(sr.error->message, "out.img is 4096 bytes"));
	g_clear_error(&sr.error);
	close(lfd);
	guest_fini(&src);
}

/* A tag byte that is not a 4-bit tag stops the sender with block and offset named. */
static void test_sender_bad_tag(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, true);
	tm_tag_store_soft_array(src.tags, 0)[(5 * 4096 + 32) / 16] = 0x21;
	g_autofree char *port = peer_start(&p, &dst);
	sender_run sr = { .g = &src, .port = port, .channels = 2, .queue_all = true };
	sender_thread(&sr);
	peer_join(&p);
	g_assert_cmpint(sr.ret, ==, -EINVAL);
	g_test_message("sender: %s", sr.error->message);
	g_assert_nonnull(strstr(sr.error->message, "block 'pc.ram', offset 0x5020"));
	g_assert_nonnull(strstr(sr.error->message, "high nibble"));
	g_assert_cmpint(p.ret, <, 0);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "sender gave up"));
	g_assert_nonnull(strstr(p.error->message, "high nibble"));
	g_clear_error(&sr.error);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* ---- a hand-made hostile sender: valid HELLO, then whatever the test wants ---- */
static int raw_connect(const char *port, const block_spec *spec, uint16_t id, uint16_t count,
		       bool tags)
{
	int fd = tm_net_connect("127.0.0.1", port, 5000, NULL);
	g_assert_cmpint(fd, >=, 0);
	tm_wire_block wb = { .length = spec->len, .page_size = spec->page_size };
	g_strlcpy(wb.name, spec->name, sizeof(wb.name));
	tm_hello h = { .channel_id = id, .channel_count = count,
		       .features = tags ? TM_FEATURE_TAGS_MTE4 : 0, .packet_size = 512 * 1024,
		       .chunk_size = 2 << 20, .block_count = 1, .blocks = &wb };
	memset(h.session_id, 7, 16);
	g_assert_cmpint(tm_hello_check(&h, NULL), ==, 0);
	size_t bl = tm_hello_body_len(&h);
	g_autofree uint8_t *buf = g_malloc(TM_FRAME_HDR_LEN + bl);
	tm_frame_encode(buf, TM_MSG_HELLO, (uint32_t)bl, 0);
	tm_hello_encode(&h, buf + TM_FRAME_HDR_LEN);
	g_assert_cmpint(write(fd, buf, TM_FRAME_HDR_LEN + bl), ==, (ssize_t)(TM_FRAME_HDR_LEN + bl));
	return fd;
}

static void expect_ack(int fd)
{
	uint8_t ack[TM_FRAME_HDR_LEN + 8];
	g_assert_cmpint(recv(fd, ack, sizeof(ack), MSG_WAITALL), ==, sizeof(ack));
	g_assert_cmpuint(ack[5], ==, TM_MSG_HELLO_ACK);
}

/* A DATA packet whose page lies outside the block: refused before any byte reaches RAM. */
static void test_corrupt_page_out_of_range(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	int fd = raw_connect(port, a, 0, 1, false);
	expect_ack(fd);
	/* DATA: one NORMAL page at index 256 (the block has 256 pages), then 4 KiB of 0xee. */
	uint8_t msg[TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN + 8 + 4096];
	memset(msg, 0xee, sizeof(msg));
	tm_frame_encode(msg, TM_MSG_DATA, sizeof(msg) - TM_FRAME_HDR_LEN, 1);
	uint8_t *d = msg + TM_FRAME_HDR_LEN;
	tm_put32(d, 0);
	tm_put32(d + 4, 1);
	tm_put32(d + 8, 4096);
	tm_put32(d + 12, 0);
	tm_put32(d + 16, 256);
	d[20] = TM_PAGE_NORMAL;
	d[21] = TM_TAGS_ZERO;
	tm_put16(d + 22, 0);
	(void)!write(fd, msg, sizeof(msg));
	/* The receiver says why before it closes. */
	uint8_t hdr[TM_FRAME_HDR_LEN];
	g_assert_cmpint(recv(fd, hdr, sizeof(hdr), MSG_WAITALL), ==, sizeof(hdr));
	g_assert_cmpuint(hdr[5], ==, TM_MSG_ERROR);
	close(fd);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -ERANGE);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	g_assert_nonnull(strstr(p.error->message, "256"));
	g_assert_true(tm_buffer_is_zero(dst.ram[0], dst.len[0]));
	g_assert_false(tm_receiver_page_present(p.r, 0, 0));
	peer_free(&p);
	guest_fini(&dst);
}

/* Two connections claiming the same channel id. */
static void test_corrupt_duplicate_channel(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	int fd0 = raw_connect(port, a, 1, 2, false);
	int fd1 = raw_connect(port, a, 1, 2, false);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(p.error->message, "channel id 1 connected twice"));
	close(fd0);
	close(fd1);
	peer_free(&p);
	guest_fini(&dst);
}

/* A sender that disappears midway: the receiver fails naming the channel, no hang. */
static void test_peer_vanishes(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	int fd = raw_connect(port, a, 0, 1, false);
	expect_ack(fd);
	uint8_t half[TM_FRAME_HDR_LEN / 2] = { 'T', 'M', 'I', 'G' };
	(void)!write(fd, half, sizeof(half));
	close(fd);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -ECONNRESET);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	g_assert_nonnull(strstr(p.error->message, "connection closed"));
	peer_free(&p);
	guest_fini(&dst);
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
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, -EBADFD);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, 0);
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
	g_autofree char *port = peer_start(&p, &dst);
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

typedef struct half_receiver {
	int listen_fd;
	size_t read_before_close;
} half_receiver;

/* Acknowledges the handshake, reads part of the stream and closes: a receiver that dies. */
static gpointer half_receiver_thread(gpointer data)
{
	half_receiver *h = data;
	int fd = accept(h->listen_fd, NULL, NULL);
	uint8_t buf[65536];
	tm_frame f;

	g_assert_cmpint(recv(fd, buf, TM_FRAME_HDR_LEN, MSG_WAITALL), ==, TM_FRAME_HDR_LEN);
	g_assert_cmpint(tm_frame_decode(buf, TM_FRAME_HDR_LEN, 0, &f, NULL), ==, 0);
	g_assert_cmpint(recv(fd, buf, f.body_len, MSG_WAITALL), ==, (ssize_t)f.body_len);
	size_t len = tm_ctrl_encode(buf, TM_MSG_HELLO_ACK, 0, 0, 0);
	g_assert_cmpint(send(fd, buf, len, 0), ==, (ssize_t)len);
	size_t got = 0;
	while (got < h->read_before_close) {
		ssize_t r = recv(fd, buf, MIN(sizeof(buf), h->read_before_close - got), 0);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	return NULL;
}

static void test_peer_closes_mid_packet(void)
{
	guest src;
	const block_spec a[] = { { "pc.ram", 16 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned port;

	guest_init(&src, a, 1, false);
	for (uint64_t i = 0; i < 4096; i++)
		fill_page(&src, 0, i, 0);
	half_receiver h = { .read_before_close = 300000 };
	h.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	GThread *t = g_thread_new("half", half_receiver_thread, &h);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 1, .timeout_ms = 10000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", ports, &err), ==, 0);
	uint64_t bm[64];
	memset(bm, 0xff, sizeof(bm));
	int64_t t0 = g_get_monotonic_time();
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, 4096, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	g_thread_join(t);
	g_assert_cmpint(r, <, 0);
	g_test_message("sender: %s", err->message);
	g_assert_nonnull(strstr(err->message, "channel 0"));
	g_assert_true(r == -EPIPE || r == -ECONNRESET);
	g_assert_nonnull(strstr(err->message, "connection closed by the peer"));
	/* Fails at once, not after the 10 s timeout. */
	g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
	close(h.listen_fd);
	guest_fini(&src);
}

/* ---- a man in the middle that flips one byte of channel 0's ciphertext ---- */
typedef struct flip_proxy {
	int listen_fd;     /* where the sender connects */
	const char *port;  /* the receiver's */
	unsigned channels;
	uint64_t flip_at;  /* offset in channel 0's sender-to-receiver stream */
} flip_proxy;

static gpointer flip_proxy_thread(gpointer data)
{
	flip_proxy *fp = data;
	struct pollfd pfd[2 * TM_MAX_CHANNELS];
	uint64_t forwarded[TM_MAX_CHANNELS] = { 0 };
	unsigned open = 2 * fp->channels;
	uint8_t buf[65536];

	/* The sender connects channel i as the i-th connection. */
	for (unsigned i = 0; i < fp->channels; i++) {
		pfd[2 * i] = (struct pollfd){ .fd = accept(fp->listen_fd, NULL, NULL), .events = POLLIN };
		pfd[2 * i + 1] = (struct pollfd){
			.fd = tm_net_connect("127.0.0.1", fp->port, 5000, NULL), .events = POLLIN };
	}
	while (open > 0 && poll(pfd, 2 * fp->channels, 10000) > 0) {
		for (unsigned k = 0; k < 2 * fp->channels; k++) {
			if (pfd[k].fd < 0 || !(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = recv(pfd[k].fd, buf, sizeof(buf), 0);
			int to = pfd[k ^ 1].fd;
			if (n <= 0) {
				shutdown(to, SHUT_WR);
				pfd[k].fd = -1;
				open--;
				continue;
			}
			unsigned ch = k / 2;
			if (k % 2 == 0) {
				if (ch == 0 && forwarded[0] <= fp->flip_at &&
				    fp->flip_at < forwarded[0] + (uint64_t)n)
					buf[fp->flip_at - forwarded[0]] ^= 0x20;
				forwarded[ch] += (uint64_t)n;
			}
			(void)!send(to, buf, (size_t)n, MSG_NOSIGNAL);
		}
	}
	for (unsigned k = 0; k < 2 * fp->channels; k++)
		close(pfd[k].fd);
	g_test_message("proxy: channel 0 carried %" G_GUINT64_FORMAT " bytes", forwarded[0]);
	return NULL;
}

/* A byte altered in flight: the receiver refuses the record and never marks a wrong page present. */
static void test_tls_tampered(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 8 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned pport;

	if (!tls_dir) {
		g_test_skip("needs TLS");
		return;
	}
	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, true);
	guest_fill(&src);
	g_autofree char *port = peer_start(&p, &dst);
	flip_proxy fp = { .port = port, .channels = 2, .flip_at = 1 << 20 };
	fp.listen_fd = tm_listen("127.0.0.1", "0", &pport, NULL);
	GThread *t = g_thread_new("proxy", flip_proxy_thread, &fp);
	g_autofree char *pports = g_strdup_printf("%u", pport);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", pports, &err), ==, 0);
	uint64_t np = (8 << 20) / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, np, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&p);
	g_thread_join(t);
	close(fp.listen_fd);
	g_assert_cmpint(r, <, 0);
	g_test_message("sender: %s", err->message);
	g_assert_cmpint(p.ret, ==, -EBADMSG);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	g_assert_nonnull(strstr(p.error->message, "authentication"));
	/* Every page marked present holds exactly what was sent; some never arrived. */
	uint64_t present = 0;
	for (uint64_t i = 0; i < np; i++) {
		if (!tm_receiver_page_present(p.r, 0, i))
			continue;
		present++;
		g_assert_true(memcmp(src.ram[0] + i * 4096, dst.ram[0] + i * 4096, 4096) == 0);
		g_assert_true(memcmp(tm_tag_store_soft_array(src.tags, 0) + i * 256,
				     tm_tag_store_soft_array(dst.tags, 0) + i * 256, 256) == 0);
	}
	g_test_message("%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " pages present", present, np);
	g_assert_cmpuint(present, <, np);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/*
 * The destination listens first and the source comes late, as in a real migration: every
 * channel still gets the full timeout for its I/O, not what was left of the accept wait.
 */
static void test_late_sender(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 2 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, a, 1, false);
	guest_init(&dst, a, 1, false);
	guest_fill(&src);
	memset(&p, 0, sizeof(p));
	p.g = &dst;
	/* Timeout 4 s; the sender comes after 2.5 s and pauses 2 s: longer than the 1.5 s left of
	 * the accept window, well inside the full timeout even on a loaded machine. */
	p.timeout_ms = 4000;
	unsigned port;
	p.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	p.thread = g_thread_new("receiver", receiver_thread, &p);
	g_autofree char *ports = g_strdup_printf("%u", port);
	g_usleep(2500 * 1000);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 3,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", ports, &err), ==, 0);
	/* A pause between rounds longer than what was left of the accept window. */
	g_usleep(2000 * 1000);
	uint64_t bm[(2 << 20) / 4096 / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, (2 << 20) / 4096, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	peer_join(&p);
	g_assert_no_error(p.error);
	assert_same(&src, &dst);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* A tag store that fails to set tags: the receiver gives up mid-stream. */
static int failing_set(tm_tag_store *store, unsigned block, uint64_t offset, uint64_t length,
		       const uint8_t *buf)
{
	return offset >= (1 << 20) ? -ENOSPC : tm_tag_store_soft.set(store, block, offset, length, buf);
}

/* The receiver's reason reaches the sender, whichever backend the sender's send failed on. */
static void test_receiver_reason_reaches_sender(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 16 << 20, 4096 } };
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, false);
	guest_fill(&src);
	tm_tag_store_ops ops = tm_tag_store_soft;
	ops.set = failing_set;
	g_assert_cmpint(tm_tag_store_new(&ops, dst.layout, NULL, &dst.tags, NULL), ==, 0);
	g_autofree char *port = peer_start(&p, &dst);
	sender_run sr = { .g = &src, .port = port, .channels = 2, .queue_all = true };
	sender_thread(&sr);
	peer_join(&p);
	g_assert_cmpint(sr.ret, <, 0);
	g_test_message("sender: %s", sr.error->message);
	g_assert_nonnull(strstr(sr.error->message, "receiver failed"));
	g_assert_nonnull(strstr(sr.error->message, "setting tags failed"));
	g_assert_cmpint(p.ret, ==, -ENOSPC);
	g_assert_nonnull(strstr(p.error->message, "block 'pc.ram', offset 0x"));
	g_clear_error(&sr.error);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

/* Setup failures with no GError to fill: reported by the return value, no crash. */
static void test_null_error(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };
	const block_spec b[] = { { "pc.ram", 2 << 20, 4096 } };
	g_autoptr(tm_receiver) r = NULL;
	unsigned port;

	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 200 };
	g_assert_cmpint(tm_receiver_new(&cfg, &r, NULL), ==, 0);
	int lfd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(tm_receiver_accept(r, lfd, NULL), ==, -ETIMEDOUT);
	close(lfd);

	/* A layout mismatch found by start() without an error to fill. */
	guest_init(&src, a, 1, false);
	guest_init(&dst, b, 1, false);
	memset(&p, 0, sizeof(p));
	p.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_autofree char *ports = g_strdup_printf("%u", port);
	sender_run sr = { .g = &src, .port = ports, .channels = 1 };
	GThread *t = g_thread_new("sender", sender_thread, &sr);
	g_autoptr(tm_receiver) r2 = NULL;
	tm_receiver_config cfg2 = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				    .timeout_ms = 20000 };
	g_assert_cmpint(tm_receiver_new(&cfg2, &r2, NULL), ==, 0);
	g_assert_cmpint(tm_receiver_accept(r2, p.listen_fd, NULL), ==, 0);
	g_assert_cmpint(tm_receiver_start(r2, dst.layout, NULL, NULL), ==, -EINVAL);
	g_thread_join(t);
	g_assert_cmpint(sr.ret, ==, -EINVAL);
	g_clear_error(&sr.error);
	close(p.listen_fd);
	guest_fini(&src);
	guest_fini(&dst);
}

typedef struct pair_test {
	const char *send_io;
	const char *recv_io;
	bool tls;
	bool raw; /* speaks the wire protocol by hand: plaintext only */
	void (*fn)(void);
} pair_test;

static char *creds_dir; /* made once by scripts/make-tls-creds.sh */

static const char *tls_creds(void)
{
	if (creds_dir)
		return creds_dir;
	g_autofree char *script = g_test_build_filename(G_TEST_DIST, "..", "scripts",
							"make-tls-creds.sh", NULL);
	g_autofree char *tmp = g_dir_make_tmp("tagmig-session-XXXXXX", NULL);
	g_assert_nonnull(tmp);
	g_autofree char *dir = g_build_filename(tmp, "creds", NULL);
	const char *argv[] = { "/bin/sh", script, dir, "localhost", NULL };
	int status = 0;
	g_autofree char *out = NULL, *errs = NULL;
	if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &errs,
			  &status, NULL) ||
	    !g_spawn_check_wait_status(status, NULL)) {
		g_test_message("make-tls-creds.sh: %s%s", out ? out : "", errs ? errs : "");
		return NULL;
	}
	creds_dir = g_steal_pointer(&dir);
	return creds_dir;
}

static void run_pair(gconstpointer data)
{
	const pair_test *t = data;
	g_autoptr(GError) why = NULL;

	if (tm_io_backend_probe(t->send_io, &why) < 0 || tm_io_backend_probe(t->recv_io, &why) < 0) {
		g_test_skip(why->message);
		return;
	}
	if (t->tls && t->raw) {
		g_test_skip("hand-made plaintext protocol peer; TLS refusals are in test-tls");
		return;
	}
	tls_dir = NULL;
	if (t->tls && !(tls_dir = tls_creds())) {
		g_test_fail_printf("could not create TLS credentials with make-tls-creds.sh");
		return;
	}
	send_io = t->send_io;
	recv_io = t->recv_io;
	t->fn();
}

int main(int argc, char **argv)
{
	static const struct {
		const char *path;
		void (*fn)(void);
		bool raw;
	} tests[] = {
		{ "migrate-basic", test_migrate_basic, false },
		{ "migrate-blocks-pagesizes", test_migrate_blocks_pagesizes, false },
		{ "migrate-no-tags", test_migrate_no_tags, false },
		{ "migrate-fresh-destination", test_migrate_fresh_destination, false },
		{ "refuse-layout", test_refuse_layout, false },
		{ "receiver-abort", test_receiver_abort, false },
		{ "sender-bad-tag", test_sender_bad_tag, false },
		{ "corrupt-page-out-of-range", test_corrupt_page_out_of_range, true },
		{ "corrupt-duplicate-channel", test_corrupt_duplicate_channel, true },
		{ "peer-vanishes", test_peer_vanishes, true },
		{ "queue-errors", test_queue_errors, false },
		{ "config-errors", test_config_errors, false },
		{ "short-sends-resumed", test_short_sends_resumed, false },
		{ "peer-closes-mid-packet", test_peer_closes_mid_packet, true },
		{ "tls-tampered", test_tls_tampered, false },
		{ "late-sender", test_late_sender, false },
		{ "receiver-reason-reaches-sender", test_receiver_reason_reaches_sender, false },
		{ "null-error", test_null_error, false },
	};
	static const struct {
		const char *send_io, *recv_io;
		bool tls;
	} pairs[] = {
		{ "io_uring", "io_uring", false },
		{ "sockets", "sockets", false },
		{ "io_uring", "sockets", false },
		{ "sockets", "io_uring", false },
		{ "io_uring", "io_uring", true },
		{ "sockets", "sockets", true },
		{ "io_uring", "sockets", true },
	};
	static pair_test cases[G_N_ELEMENTS(pairs) * G_N_ELEMENTS(tests)];

	g_test_init(&argc, &argv, NULL);
	for (size_t i = 0; i < G_N_ELEMENTS(pairs); i++) {
		for (size_t j = 0; j < G_N_ELEMENTS(tests); j++) {
			pair_test *t = &cases[i * G_N_ELEMENTS(tests) + j];
			*t = (pair_test){ pairs[i].send_io, pairs[i].recv_io, pairs[i].tls,
					  tests[j].raw, tests[j].fn };
			g_autofree char *path =
				g_strdup_printf("/session/%s%s-to-%s/%s", pairs[i].tls ? "tls-" : "",
						pairs[i].send_io, pairs[i].recv_io, tests[j].path);
			g_test_add_data_func(path, t, run_pair);
		}
	}
	int rc = g_test_run();
	if (creds_dir) {
		g_autofree char *parent = g_path_get_dirname(creds_dir);
		const char *rm[] = { "rm", "-rf", parent, NULL };
		g_spawn_sync(NULL, (char **)rm, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
			     NULL, NULL);
	}
	return rc;
}
