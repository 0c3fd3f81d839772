/* SPDX-License-Identifier: MIT */
/* The fixtures of the session tests (session-fixture.h). */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec/codec.h"
#include "session-fixture.h"
#include "transport/transport.h"

/* Set by run_pair before each test; the tests read them when they configure a session. */
const char *send_io = "sockets";
const char *recv_io = "sockets";
const char *tls_dir;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

bool uffd_usable(void)
{
	g_autoptr(GError) err = NULL;
	tm_receiver *r = NULL;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .uffd_user_mode_only = true };

	g_assert_cmpint(tm_receiver_new(NULL, &r, NULL), ==, 0);
	int ret = tm_receiver_set_live(r, &lc, &err);
	tm_receiver_free(r);
	if (ret < 0) {
		g_autofree char *why = g_strdup_printf("no userfaultfd: %s", err->message);
		g_test_skip(why);
		return false;
	}
	return true;
}

void guest_init(guest *g, const block_spec *spec, unsigned n, bool with_tags)
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

void guest_fini(guest *g)
{
	tm_tag_store_free(g->tags);
	tm_ram_layout_free(g->layout);
	for (unsigned i = 0; i < g->nblocks; i++)
		munmap(g->map[i], g->len[i] + 65536);
}

void fill_page(guest *g, unsigned b, uint64_t p, unsigned shape)
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

void guest_fill(guest *g)
{
	for (unsigned b = 0; b < g->nblocks; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(g->layout, b, &bi);
		for (uint64_t p = 0; p < bi.length / bi.page_size; p++)
			fill_page(g, b, p, (unsigned)(rnd() % 5));
	}
}

void assert_same(guest *a, guest *b)
{
	for (unsigned i = 0; i < a->nblocks; i++) {
		g_assert_true(memcmp(a->ram[i], b->ram[i], a->len[i]) == 0);
		if (a->tags && b->tags)
			g_assert_true(memcmp(tm_tag_store_soft_array(a->tags, i),
					     tm_tag_store_soft_array(b->tags, i), a->len[i] / 16) == 0);
	}
}

static void count_present(void *opaque, unsigned ch, unsigned block, uint64_t first, uint64_t n)
{
	peer *p = opaque;
	__atomic_fetch_add(&p->presented, n, __ATOMIC_RELAXED);
}

int receiver_read_states(tm_receiver *r, state_section_fn fn, void *opaque, GError **error)
{
	tm_state_info info;
	int ret;

	while ((ret = tm_receiver_next_state(r, &info, error)) == 1) {
		g_autofree uint8_t *buf = g_malloc(info.length + 1);
		ret = tm_receiver_read_state(r, buf, info.length, error);
		if (ret < 0)
			break;
		if (fn)
			fn(opaque, info.name, buf, info.length);
	}
	return ret;
}

static void peer_section(void *opaque, const char *name, const uint8_t *data, size_t len)
{
	peer *p = opaque;
	p->states++;
	if (p->on_state)
		p->on_state(p, name, data, len);
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
	for (unsigned b = 0; p->ret >= 0 && p->waive_all && b < p->g->nblocks; b++) {
		tm_ram_block_info bi;
		tm_ram_layout_block(p->g->layout, b, &bi);
		p->ret = tm_receiver_waive_pages(p->r, b, 0, bi.length / bi.page_size, &p->error);
	}
	if (p->ret >= 0)
		p->ret = tm_receiver_start(p->r, p->g->layout, p->g->tags, &p->error);
	while (p->ret >= 0) {
		p->ret = tm_receiver_wait(p->r, &p->error);
		if (p->ret != 1)
			break;
		/* Device state waits: read every section, as a destination VMM loads devices. */
		p->ret = receiver_read_states(p->r, peer_section, p, &p->error);
	}
	return NULL;
}

static gpointer watchdog_thread(gpointer data)
{
	watchdog *w = data;
	int64_t end = g_get_monotonic_time() + (int64_t)w->secs * G_TIME_SPAN_SECOND;

	g_mutex_lock(&w->lock);
	while (!w->done && g_cond_wait_until(&w->cond, &w->lock, end))
		;
	w->fired = !w->done;
	g_mutex_unlock(&w->lock);
	if (w->fired) {
		(void)tm_sender_cancel(w->s, w->why);
		if (w->r && *w->r)
			(void)tm_receiver_cancel(*w->r, w->why);
	}
	return NULL;
}

void watchdog_start(watchdog *w, tm_sender *s, tm_receiver *const *r, unsigned secs,
		    const char *why)
{
	*w = (watchdog){ .s = s, .r = r, .secs = secs, .why = why };
	g_mutex_init(&w->lock);
	g_cond_init(&w->cond);
	w->thread = g_thread_new("watchdog", watchdog_thread, w);
}

bool watchdog_stop(watchdog *w)
{
	g_mutex_lock(&w->lock);
	w->done = true;
	g_cond_signal(&w->cond);
	g_mutex_unlock(&w->lock);
	g_thread_join(w->thread);
	g_mutex_clear(&w->lock);
	g_cond_clear(&w->cond);
	return w->fired;
}

static char *peer_launch(peer *p, guest *g, bool ram_zeroed, unsigned timeout_ms, bool waive_all,
			peer_state_fn fn, void *opaque)
{
	unsigned port = 0;
	memset(p, 0, sizeof(*p));
	p->g = g;
	p->waive_all = waive_all;
	p->ram_zeroed = ram_zeroed;
	p->timeout_ms = timeout_ms;
	p->on_state = fn;
	p->opaque = opaque;
	p->listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(p->listen_fd, >=, 0);
	p->thread = g_thread_new("receiver", receiver_thread, p);
	return g_strdup_printf("%u", port);
}

char *peer_start_state(peer *p, guest *g, bool ram_zeroed, unsigned timeout_ms, peer_state_fn fn,
		       void *opaque)
{
	return peer_launch(p, g, ram_zeroed, timeout_ms, false, fn, opaque);
}

char *peer_start_ex(peer *p, guest *g, bool ram_zeroed, unsigned timeout_ms)
{
	return peer_launch(p, g, ram_zeroed, timeout_ms, false, NULL, NULL);
}

char *peer_start_waived(peer *p, guest *g, unsigned timeout_ms)
{
	return peer_launch(p, g, false, timeout_ms, true, NULL, NULL);
}

char *peer_start(peer *p, guest *g)
{
	return peer_start_ex(p, g, false, 0);
}

void peer_join(peer *p)
{
	g_thread_join(p->thread);
	close(p->listen_fd);
}

void peer_free(peer *p)
{
	tm_receiver_free(p->r);
	g_clear_error(&p->error);
}

/* One test with one backend pair. */
typedef struct pair_test {
	const char *send_io;
	const char *recv_io;
	bool tls;
	const session_test *test;
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
	if (t->tls && t->test->raw) {
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
	t->test->fn();
}

int session_tests_run(int *argc, char ***argv, const session_test *tests, size_t n)
{
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
	g_autofree pair_test *cases = g_new(pair_test, G_N_ELEMENTS(pairs) * n);

	g_test_init(argc, argv, NULL);
	for (size_t i = 0; i < G_N_ELEMENTS(pairs); i++) {
		for (size_t j = 0; j < n; j++) {
			pair_test *t = &cases[i * n + j];
			*t = (pair_test){ pairs[i].send_io, pairs[i].recv_io, pairs[i].tls, &tests[j] };
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
		g_clear_pointer(&creds_dir, g_free);
	}
	return rc;
}

int raw_hello2(const char *port, uint8_t role, uint32_t features, uint8_t session_byte)
{
	int fd = tm_net_connect("127.0.0.1", port, 5000, -1, NULL);
	g_assert_cmpint(fd, >=, 0);
	tm_wire_block wb = { .length = 1 << 20, .page_size = 4096 };
	g_strlcpy(wb.name, "pc.ram", sizeof(wb.name));
	tm_hello h = { .version = 2, .role = role, .channel_count = 1, .features = features,
		       .packet_size = 512 * 1024, .chunk_size = 2 << 20, .block_count = 1,
		       .blocks = &wb };
	memset(h.session_id, session_byte, 16);
	g_assert_cmpint(tm_hello_check(&h, NULL), ==, 0);
	size_t bl = tm_hello_body_len(&h);
	g_autofree uint8_t *buf = g_malloc(TM_FRAME_HDR_LEN + bl);
	tm_frame_encode_v(buf, 2, TM_MSG_HELLO, (uint32_t)bl, 0);
	tm_hello_encode(&h, buf + TM_FRAME_HDR_LEN);
	g_assert_cmpint(write(fd, buf, TM_FRAME_HDR_LEN + bl), ==, (ssize_t)(TM_FRAME_HDR_LEN + bl));
	return fd;
}
