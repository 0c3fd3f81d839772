/* SPDX-License-Identifier: MIT */
/*
 * Device state through the session (docs/design/live-engine.md §1.3, §1.4, §2.5): sections of
 * every size around the chunk size over 1..4 channels, read in small pieces; state_names; state
 * delivered only after all RAM of the final round ("ramhash"); the receiver's limits; the API's
 * refusals; and a hand-made protocol 2 sender whose hostile STATE the receiver refuses, each
 * with its errno and a message naming the channel and the section.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "fake-peer.h"
#include "session-fixture.h"
#include "transport/transport.h"

#define PS (64u * 1024u) /* packet_size: the chunk size of device state */

static const block_spec spec[] = { { "pc.ram", 4 << 20, 4096 }, { "vram", 1 << 20, 65536 } };

/* 64-bit FNV-1a: the "ramhash" section. */
static uint64_t hash(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static uint64_t ram_hash(guest *g)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (unsigned i = 0; i < g->nblocks; i++)
		h = hash(h, g->ram[i], g->len[i]);
	return h;
}

/* The destination: a receiver in a thread that reads every section as a VMM does. */
typedef struct dest {
	guest *g;
	tm_live_config lc;
	const char *const *names;
	int listen_fd;
	unsigned read_step;   /* bytes per tm_receiver_read_state() (cycled up to 3x) */
	bool slow_channel_1;  /* on_present sleeps on channel 1: its RAM arrives late */
	bool leave_unread;    /* reads one byte less of section 0 than it has */
	tm_receiver *r;
	GThread *thread;
	/* results */
	int ret;
	GError *error;
	GPtrArray *names_read; /* char * */
	GPtrArray *data_read;  /* GBytes * */
	unsigned wait_ones;    /* tm_receiver_wait() returned 1 */
	int ramhash_ok;        /* 1 ok, 0 not seen, -1 mismatch */
	gint done;             /* dest_thread returned (atomic) */
} dest;

static void slow_present(void *opaque, unsigned ch, unsigned block, uint64_t first, uint64_t n)
{
	if (ch == 1)
		g_usleep(2000);
}

static int read_sections(dest *d)
{
	tm_state_info info;
	int ret;

	while ((ret = tm_receiver_next_state(d->r, &info, &d->error)) == 1) {
		g_assert_cmpuint(info.index, ==, d->names_read->len);
		uint8_t *buf = g_malloc(info.length + 1);
		uint64_t want = info.length - (d->leave_unread && info.index == 0 && info.length);
		if (!d->leave_unread && info.length) {
			/* past the end: refused, nothing read */
			GError *e = NULL;
			g_assert_cmpint(tm_receiver_read_state(d->r, buf, info.length + 1, &e), ==,
					-EINVAL);
			g_assert_nonnull(strstr(e->message, "past the end"));
			g_error_free(e);
		}
		for (uint64_t off = 0, k = 0; off < want; k++) {
			size_t n = MIN(want - off, (uint64_t)d->read_step * (1 + k % 3));
			if ((ret = tm_receiver_read_state(d->r, buf + off, n, &d->error)) < 0) {
				g_free(buf);
				return ret;
			}
			off += n;
		}
		if (!d->leave_unread) {
			/* read to its end: nothing more */
			GError *e = NULL;
			g_assert_cmpint(tm_receiver_read_state(d->r, buf, 1, &e), ==, -EINVAL);
			g_assert_nonnull(strstr(e->message, "no state section is open"));
			g_error_free(e);
		}
		if (strcmp(info.name, "ramhash") == 0 && info.length == 8) {
			uint64_t h;
			memcpy(&h, buf, 8);
			d->ramhash_ok = h == ram_hash(d->g) ? 1 : -1;
		}
		g_ptr_array_add(d->names_read, g_strdup(info.name));
		g_ptr_array_add(d->data_read, g_bytes_new_take(buf, info.length));
	}
	return ret;
}

static uint64_t spec_page_size(guest *g, unsigned b)
{
	tm_ram_block_info bi;

	g_assert_cmpint(tm_ram_layout_block(g->layout, b, &bi), ==, 0);
	return bi.page_size;
}

static gpointer dest_thread(gpointer data)
{
	dest *d = data;
	tm_receiver_config cfg = { .io_backend = recv_io,
				   .tls_creds_dir = tls_dir,
				   .timeout_ms = 20000,
				   .on_present = d->slow_channel_1 ? slow_present : NULL };

	d->ret = tm_receiver_new(&cfg, &d->r, &d->error);
	d->lc.size = sizeof(d->lc);
	d->lc.state_names = d->names;
	if (d->ret >= 0)
		d->ret = tm_receiver_set_live(d->r, &d->lc, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_accept(d->r, d->listen_fd, &d->error);
	/* These sessions move a few pages and the state: the VMM declares it needs no other page
	 * (else the receiver rightly refuses an incomplete migration). */
	for (unsigned b = 0; d->ret >= 0 && b < d->g->nblocks; b++)
		d->ret = tm_receiver_waive_pages(d->r, b, 0, d->g->len[b] / spec_page_size(d->g, b),
						 &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(d->r, d->g->layout, d->g->tags, &d->error);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(d->r, &d->error)) == 1) {
		d->wait_ones++;
		d->ret = read_sections(d);
	}
	g_atomic_int_set(&d->done, 1);
	return NULL;
}

static char *dest_start(dest *d, guest *g)
{
	unsigned port = 0;

	d->g = g;
	d->read_step = d->read_step ? d->read_step : 4093;
	d->names_read = g_ptr_array_new_with_free_func(g_free);
	d->data_read = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
	d->listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(d->listen_fd, >=, 0);
	d->thread = g_thread_new("dest", dest_thread, d);
	return g_strdup_printf("%u", port);
}

static void dest_join(dest *d)
{
	g_thread_join(d->thread);
	close(d->listen_fd);
}

static void dest_free(dest *d)
{
	tm_receiver_free(d->r);
	g_clear_error(&d->error);
	g_ptr_array_unref(d->names_read);
	g_ptr_array_unref(d->data_read);
}

static tm_sender *source(guest *g, const char *port, unsigned channels)
{
	g_autoptr(GError) err = NULL;
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .channels = channels, .packet_size = PS, .chunk_size = PS,
				 .timeout_ms = 20000 };
	tm_sender *s;

	g_assert_cmpint(tm_sender_new(g->layout, g->tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	return s;
}

/* Queues every page of g. */
static void queue_all(tm_sender *s, guest *g)
{
	g_autoptr(GError) err = NULL;
	for (unsigned b = 0; b < g->nblocks; b++) {
		uint64_t n = g->len[b] / spec[b].page_size;
		g_autofree uint64_t *bm = g_malloc0((n + 63) / 64 * 8);
		for (uint64_t p = 0; p < n; p++)
			bm[p / 64] |= 1ull << (p % 64);
		g_assert_cmpint(tm_sender_queue_bitmap(s, b, bm, 0, n, &err), ==, 0);
	}
}

static uint8_t *random_bytes(size_t n)
{
	uint8_t *p = g_malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
	return p;
}

/* Sizes 0, 1, chunk - 1, chunk, chunk + 1, 1 MiB over 1..4 channels, with state_names. */
static void test_sizes(void)
{
	static const size_t sizes[] = { 0, 1, PS - 1, PS, PS + 1, 1 << 20 };
	static const char *const names[] = { "empty", "one", "chunk-1", "chunk", "chunk+1",
					     "mib", NULL };

	for (unsigned channels = 1; channels <= 4; channels++) {
		g_autoptr(GError) err = NULL;
		guest src, dst;
		dest d = { .names = names, .read_step = 1000 + 997 * channels };
		uint8_t *data[G_N_ELEMENTS(sizes)];

		guest_init(&src, spec, 2, true);
		guest_init(&dst, spec, 2, true);
		guest_fill(&src);
		g_autofree char *port = dest_start(&d, &dst);
		tm_sender *s = source(&src, port, channels);
		queue_all(s, &src);
		g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
		g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
		for (unsigned i = 0; i < G_N_ELEMENTS(sizes); i++) {
			data[i] = random_bytes(sizes[i]);
			/* by reference and copied, alternately; a copy may be freed at once */
			unsigned flags = i % 2 ? TM_STATE_COPY : 0;
			g_assert_cmpint(tm_sender_put_state(s, names[i], data[i], sizes[i], flags,
							    &err),
					==, 0);
		}
		g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
		tm_live_stats ls = { .size = sizeof(ls) };
		g_assert_cmpint(tm_sender_get_live_stats(s, &ls), ==, 0);
		g_test_message("%u channels: downtime %" G_GUINT64_FORMAT " us", channels,
			       (guint64)ls.downtime_us);
		g_assert_cmpuint(ls.downtime_us, >, 0);
		g_assert_cmpuint(ls.state_sections, ==, G_N_ELEMENTS(sizes));
		g_assert_cmpuint(ls.state_bytes, ==, 3 * PS + 1 + (1 << 20));
		dest_join(&d);
		g_assert_no_error(d.error);
		g_assert_cmpint(d.ret, ==, 0);
		g_assert_cmpuint(d.wait_ones, >=, 1);
		g_assert_cmpuint(d.names_read->len, ==, G_N_ELEMENTS(sizes));
		for (unsigned i = 0; i < G_N_ELEMENTS(sizes); i++) {
			g_assert_cmpstr(g_ptr_array_index(d.names_read, i), ==, names[i]);
			gsize n;
			const void *got = g_bytes_get_data(g_ptr_array_index(d.data_read, i), &n);
			g_assert_cmpmem(got, n, data[i], sizes[i]);
			g_free(data[i]);
		}
		assert_same(&src, &dst);
		tm_sender_free(s);
		dest_free(&d);
		guest_fini(&src);
		guest_fini(&dst);
	}
}

/*
 * The final round is large and all on channel 1, whose receiver applies slowly; the one state
 * section, "ramhash" (the hash of all RAM at the stop), is chunk 0 on channel 0, which is done
 * at once. The destination hashes its RAM when it reads the section: equal only if state waits
 * for the RAM of every channel.
 */
static void test_ramhash(void)
{
	g_autoptr(GError) err = NULL;
	guest src, dst;
	dest d = { .slow_channel_1 = true };

	guest_init(&src, spec, 2, false);
	guest_init(&dst, spec, 2, false);
	g_autofree char *port = dest_start(&d, &dst);
	tm_sender *s = source(&src, port, 2);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	/* pc.ram chunks of 64 KiB: pages 16..31, 48..63, ... are channel 1's */
	uint64_t pages[1024];
	size_t n = 0;
	for (uint64_t p = 0; p < 1024 && n < G_N_ELEMENTS(pages); p++)
		if ((p / 16) % 2 == 1) {
			fill_page(&src, 0, p, 0);
			pages[n++] = p;
		}
	g_assert_cmpint(tm_sender_queue_pages(s, 0, pages, n, &err), ==, 0);
	uint64_t h = ram_hash(&src);
	g_assert_cmpint(tm_sender_put_state(s, "ramhash", &h, sizeof(h), TM_STATE_COPY, &err), ==,
			0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	dest_join(&d);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpint(d.ramhash_ok, ==, 1);
	assert_same(&src, &dst);
	tm_sender_free(s);
	dest_free(&d);
	guest_fini(&src);
	guest_fini(&dst);
}

/* A section out of the receiver's state_names order: both sides fail with its words. */
static void test_names_order(void)
{
	static const char *const names[] = { "cpu0", "dev", NULL };
	g_autoptr(GError) err = NULL;
	guest src, dst;
	dest d = { .names = names };

	guest_init(&src, spec, 1, false);
	guest_init(&dst, spec, 1, false);
	g_autofree char *port = dest_start(&d, &dst);
	tm_sender *s = source(&src, port, 3);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "dev", "x", 1, 0, &err), ==, 0);
	/* The receiver may have refused section 0 before the next put: it reports the failure. */
	int r = tm_sender_put_state(s, "cpu0", "y", 1, 0, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	g_assert_cmpint(r, ==, -EPROTO);
	g_test_message("sender: %s", err->message);
	g_assert_nonnull(strstr(err->message, "state section 0 is 'dev', expected 'cpu0'"));
	dest_join(&d);
	g_test_message("receiver: %s", d.error->message);
	g_assert_cmpint(d.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(d.error->message, "channel 0: STATE chunk 0 (section 0)"));
	g_assert_cmpuint(d.names_read->len, ==, 0);
	tm_sender_free(s);
	dest_free(&d);
	guest_fini(&src);
	guest_fini(&dst);
}

/* put_state refuses what the receiver announced it would refuse, quoting its limits. */
static void test_limits(void)
{
	g_autoptr(GError) err = NULL;
	guest src, dst;
	dest d = { .lc = { .max_state_section = 4096, .max_state_total = 6000 } };
	static uint8_t buf[8192];

	guest_init(&src, spec, 1, false);
	guest_init(&dst, spec, 1, false);
	g_autofree char *port = dest_start(&d, &dst);
	tm_sender *s = source(&src, port, 2);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "big", buf, 4097, 0, &err), ==, -EMSGSIZE);
	g_assert_nonnull(strstr(err->message, "max_state_section 4096"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_put_state(s, "a", buf, 4096, 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "b", buf, 1905, 0, &err), ==, -EMSGSIZE);
	g_assert_nonnull(strstr(err->message, "max_state_total 6000 of which 4096 are used"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_put_state(s, "b", buf, 1904, 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	dest_join(&d);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpuint(d.names_read->len, ==, 2);
	tm_sender_free(s);
	dest_free(&d);
	guest_fini(&src);
	guest_fini(&dst);
}

/* The calls' own refusals, and a VMM that leaves a section half read. */
static void test_api_errors(void)
{
	g_autoptr(GError) err = NULL;
	guest src, dst;
	dest d = { .leave_unread = true };
	uint64_t page = 0;

	guest_init(&src, spec, 1, false);
	guest_init(&dst, spec, 1, false);
	g_autofree char *port = dest_start(&d, &dst);
	tm_sender *s = source(&src, port, 2);
	g_assert_cmpint(tm_sender_put_state(s, "cpu0", "x", 1, 0, &err), ==, -EBADFD);
	g_assert_nonnull(strstr(err->message, "tm_sender_guest_stopped() first"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, -EBADFD);
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_put_state(s, "a\x1b[31m", "x", 1, 0, &err), ==, -EINVAL);
	g_assert_nonnull(strstr(err->message, "control character 0x1b"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_put_state(s, "", "x", 1, 0, &err), ==, -EINVAL);
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_put_state(s, "a", "x", 1, 4, &err), ==, -EINVAL);
	g_clear_error(&err);
	/* RAM is open until the first section */
	g_assert_cmpint(tm_sender_queue_pages(s, 0, &page, 1, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "cpu0", "xyz", 3, TM_STATE_COPY, &err), ==, 0);
	g_assert_cmpint(tm_sender_queue_pages(s, 0, &page, 1, &err), ==, -EBADFD);
	g_assert_nonnull(strstr(err->message, "RAM is closed"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, -EBADFD);
	g_clear_error(&err);
	/* the destination reads 2 of "cpu0"'s 3 bytes, then asks for the next section: its
	 * failure may already have come back (a loaded machine), and then this says it */
	int r = tm_sender_put_state(s, "dev", "abc", 3, TM_STATE_COPY, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	dest_join(&d);
	g_test_message("receiver: %s", d.error->message);
	g_assert_cmpint(d.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(d.error->message, "state section 0 'cpu0' not read to its end: 1 bytes left"));
	g_assert_cmpint(r, <, 0);
	g_test_message("sender: %s", err->message);
	g_assert_nonnull(strstr(err->message, "not read to its end"));
	tm_sender_free(s);
	dest_free(&d);
	guest_fini(&src);
	guest_fini(&dst);
}

/* Protocol 1 has no device state: put_state refuses, next_state says "no more", wait() is never 1. */
static void test_v1(void)
{
	g_autoptr(GError) err = NULL;
	guest src, dst;
	dest d = { 0 };
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 20000 };
	tm_live_config lc = { .size = sizeof(lc), .wire_version = 1 };
	tm_sender *s;

	guest_init(&src, spec, 1, false);
	guest_init(&dst, spec, 1, false);
	guest_fill(&src);
	g_autofree char *port = dest_start(&d, &dst);
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	queue_all(s, &src);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_put_state(s, "cpu0", "x", 1, 0, &err), ==, -EOPNOTSUPP);
	g_assert_nonnull(strstr(err->message, "protocol 1 carries no device state"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	dest_join(&d);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpuint(d.wait_ones, ==, 0);
	tm_state_info info;
	g_assert_cmpint(tm_receiver_next_state(d.r, &info, &err), ==, 0);
	g_assert_cmpuint(tm_receiver_wire_version(d.r), ==, 1);
	assert_same(&src, &dst);
	tm_sender_free(s);
	dest_free(&d);
	guest_fini(&src);
	guest_fini(&dst);
}

/* ---- a hand-made protocol 2 sender (fake-peer.h): 2 data channels and control, one block ---- */

static const fake_hello hello = { .version = 2, .channel_count = 2, .packet_size = PS,
				  .chunk_size = PS, .block = { "pc.ram", 4 << 20, 4096 },
				  .sid = 7 };

/* One STATE chunk on channel ch (whatever its number says), data a pattern. */
static void raw_chunk(fake_sender *w, unsigned ch, tm_state_hdr h, const char *name)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN + TM_MAX_STATE_NAME];
	h.name_len = name ? (uint16_t)strlen(name) : 0;
	size_t n = tm_state_encode(buf, w->seq[ch]++, &h, name);
	g_autofree uint8_t *data = g_malloc0(h.data_len + 1);
	fake_send(w, ch, buf, n);
	fake_send(w, ch, data, h.data_len);
}

typedef struct hostile_case {
	const char *what;
	int errnum;
	const char *words; /* in the receiver's error */
} hostile_case;

static void hostile_send(fake_sender *w, unsigned i)
{
	const tm_state_hdr one = { 0, TM_STATE_FIRST | TM_STATE_LAST, 0, 0, 10, 0, 10 };
	tm_state_hdr h = one;

	if (i != 5 && i != 9) { /* case 5: STATE before RAM_END; 9: its own RAM_END */
		fake_ram_end(w, 0, TM_RAM_END_FINAL, 0, 0);
		fake_ram_end(w, 1, TM_RAM_END_FINAL, 0, 0);
	}
	switch (i) {
	case 0: /* over max_state_section (4096) */
		h.section_len = h.data_len = 5000;
		raw_chunk(w, 0, h, "cpu0");
		break;
	case 1: /* out of order: chunk 2 before chunk 0 on channel 0 */
		h.chunk = 2;
		raw_chunk(w, 0, h, "cpu0");
		break;
	case 2: /* wrong channel: chunk 1 on channel 0 */
		h.chunk = 1;
		raw_chunk(w, 0, h, "cpu0");
		break;
	case 3: /* name with ESC */
		raw_chunk(w, 0, h, "cpu\x1b[2J");
		break;
	case 4: { /* after END_OF_STATE */
		tm_state_hdr end = { .section = 1, .flags = TM_STATE_END, .chunk = 1 };
		raw_chunk(w, 0, h, "cpu0");
		raw_chunk(w, 1, end, NULL);
		h.chunk = 2;
		h.section = 1;
		raw_chunk(w, 0, h, "late");
		break;
	}
	case 5:
		raw_chunk(w, 0, h, "cpu0");
		break;
	case 6: /* over max_state_total (6000) in the second section */
		h.section_len = h.data_len = 4000;
		raw_chunk(w, 0, h, "cpu0");
		h.chunk = 1;
		h.section = 1;
		raw_chunk(w, 1, h, "dev");
		break;
	case 7: /* a continuation at the wrong offset */
		h.flags = TM_STATE_FIRST;
		h.section_len = PS + 10;
		h.data_len = PS;
		raw_chunk(w, 0, h, "cpu0");
		h.flags = TM_STATE_LAST;
		h.chunk = 1;
		h.offset = PS - 1;
		h.data_len = 11;
		raw_chunk(w, 1, h, NULL);
		break;
	case 8: /* RAM_END twice */
		fake_ram_end(w, 0, TM_RAM_END_FINAL, 0, 0);
		break;
	case 9: /* RAM_END that does not count what arrived */
		fake_ram_end(w, 1, TM_RAM_END_FINAL, 5, 0);
		break;
	case 10: /* channel 1 ends while its chunk 1 (the rest of section 0) is due */
		h.flags = TM_STATE_FIRST;
		h.section_len = PS + 10;
		h.data_len = PS;
		raw_chunk(w, 0, h, "cpu0");
		fake_end(w, 1, 0, 0, 0);
		break;
	case 11: { /* every channel ends, no END_OF_STATE */
		raw_chunk(w, 0, h, "cpu0");
		fake_end(w, 0, 0, 0, 1);
		fake_end(w, 1, 0, 0, 0);
		break;
	}
	case 12: { /* a chunk after END_OF_STATE on END_OF_STATE's channel, the other one ends */
		tm_state_hdr end = { .section = 1, .flags = TM_STATE_END, .chunk = 1 };
		raw_chunk(w, 0, h, "cpu0");
		raw_chunk(w, 1, end, NULL);
		h.chunk = 3;
		h.section = 1;
		raw_chunk(w, 1, h, "late");
		fake_end(w, 0, 0, 0, 1);
		break;
	}
	}
}

static void test_hostile(void)
{
	static const hostile_case cases[] = {
		{ "over-section", EMSGSIZE, "channel 0: STATE chunk 0 (section 0): section_len 5000 "
					    "over the receiver's max_state_section 4096" },
		{ "out-of-order", EPROTO, "channel 0: STATE chunk 2 (section 0): out of order" },
		{ "wrong-channel", EPROTO, "channel 0: STATE chunk 1 (section 0): belongs on channel 1" },
		{ "name-esc", EBADMSG, "channel 0: STATE chunk 0 (section 0): state section name: "
				       "control character 0x1b at byte 3" },
		{ "after-end", EPROTO, "channel 0: STATE chunk 2 (section 1): STATE after the end of "
				       "device state" },
		{ "before-ram-end", EPROTO, "channel 0: STATE before RAM_END" },
		{ "over-total", EMSGSIZE, "channel 1: STATE chunk 1 (section 1): section 'dev' of "
					  "4000 bytes after 4000 exceeds the receiver's "
					  "max_state_total 6000" },
		{ "offset", EPROTO, "channel 1: STATE chunk 1 (section 0): offset 65535, 65536 bytes "
				    "of 'cpu0' arrived" },
		{ "ram-end-twice", EPROTO, "channel 0: RAM_END twice" },
		{ "ram-end-count", EPROTO, "channel 1: RAM_END counts 5 pages in 0 packets, 0 in 0 "
					   "arrived" },
		{ "end-mid-section", EPROTO, "channel 1 ended before STATE chunk 1 (no "
					     "END_OF_STATE)" },
		{ "end-no-eos", EPROTO, "channel 1 ended before STATE chunk 1 (no END_OF_STATE)" },
		{ "after-end-other", EPROTO, "channel 1: STATE chunk 3 (section 1): STATE after the "
					     "end of device state" },
	};
	guest dst;
	const block_spec a[] = { { "pc.ram", 4 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		dest d = { .lc = { .max_state_section = 4096, .max_state_total = 6000 } };
		if (i == 7 || i == 10) /* two chunks: a section over the packet size */
			d.lc = (tm_live_config){ 0 };
		g_autofree char *port = dest_start(&d, &dst);
		fake_sender w;

		fake_sender_open(&w, port, &hello);
		hostile_send(&w, i);
		/* The sender keeps its connections open: the receiver must not wait for it. */
		for (unsigned ms = 0; !g_atomic_int_get(&d.done) && ms < 10000; ms += 10)
			g_usleep(10000);
		if (!g_atomic_int_get(&d.done))
			g_error("%s: the receiver hangs (10 s)", cases[i].what);
		dest_join(&d);
		g_test_message("%s: receiver: %s", cases[i].what, d.error ? d.error->message : "ok");
		g_assert_cmpint(d.ret, ==, -cases[i].errnum);
		if (!strstr(d.error->message, cases[i].words))
			g_error("%s: \"%s\" does not say \"%s\"", cases[i].what, d.error->message,
				cases[i].words);
		/* what was refused never reached the VMM */
		for (guint k = 0; k < d.names_read->len; k++)
			g_assert_cmpstr(g_ptr_array_index(d.names_read, k), ==, "cpu0");
		fake_sender_close(&w);
		dest_free(&d);
	}
	guest_fini(&dst);
}

/*
 * A stranger's well-formed HELLO of another session (its own session id) between the session's
 * connections is dropped like garbage: it must not end the session it does not belong to.
 */
static void test_stranger_hello(void)
{
	guest dst;
	const block_spec a[] = { { "pc.ram", 4 << 20, 4096 } };
	const tm_state_hdr eos = { .section = 0, .flags = TM_STATE_END, .chunk = 0 };
	dest d = { 0 };
	fake_sender w = { .fd = { -1, -1, -1, -1 } };
	fake_hello stranger_hello = hello;

	guest_init(&dst, a, 1, false);
	g_autofree char *port = dest_start(&d, &dst);
	fake_hello c = hello;
	c.role = TM_ROLE_DATA;
	w.fd[FAKE_DATA0] = fake_connect(port, &c);
	stranger_hello.channel_id = 1;
	stranger_hello.sid = 9;
	int stranger = fake_connect(port, &stranger_hello);
	c.role = TM_ROLE_CONTROL;
	w.fd[FAKE_CTL] = fake_connect(port, &c);
	c.role = TM_ROLE_DATA;
	c.channel_id = 1;
	w.fd[FAKE_DATA1] = fake_connect(port, &c);
	fake_sender_acks(&w, &hello);
	fake_ram_end(&w, 0, TM_RAM_END_FINAL, 0, 0);
	fake_ram_end(&w, 1, TM_RAM_END_FINAL, 0, 0);
	raw_chunk(&w, 0, eos, NULL);
	fake_end(&w, 0, 0, 0, 1);
	fake_end(&w, 1, 0, 0, 0);
	fake_end(&w, 2, 0, 0, 0);
	fake_finish_control(&w, 0);
	/* The stranger is told no more than that: not this session's id (it would let it in). */
	uint8_t back[512];
	ssize_t n = recv(stranger, back, sizeof(back), MSG_WAITALL);
	g_assert_cmpint(n, >, TM_FRAME_HDR_LEN);
	g_assert_cmpuint(back[5], ==, TM_MSG_ERROR);
	g_autofree char *told = g_strndup((const char *)back + 24, (gsize)n - 24);
	g_test_message("stranger told: %s", told);
	g_assert_nonnull(strstr(told, "a HELLO of another session"));
	g_assert_null(strstr(told, "07070707"));
	dest_join(&d);
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, 0);
	close(stranger);
	fake_sender_close(&w);
	dest_free(&d);
	guest_fini(&dst);
}

/* Every test over every backend pair, plaintext and TLS (the hand-made sender: plaintext). */
int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "state-sizes", test_sizes, false },
		{ "state-ramhash", test_ramhash, false },
		{ "state-names-order", test_names_order, false },
		{ "state-limits", test_limits, false },
		{ "state-api-errors", test_api_errors, false },
		{ "state-v1", test_v1, false },
		{ "state-hostile", test_hostile, true },
		{ "state-stranger-hello", test_stranger_hello, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
