/* SPDX-License-Identifier: MIT */
/*
 * Postcopy at the destination (docs/design/live-engine.md 3.3, docs/wire-format.md "Postcopy
 * messages") against a hand-made protocol 2 sender that speaks the wire with the codec's
 * encoders: the switch at round 0 and at round 1, DISCARD dropping a stale page, background
 * pages placed while destination "vCPU" threads touch missing pages (they must find data and
 * tags set when they wake), page requests on the urgent connection answered by the fake, and
 * hostile senders refused with the connection, block and offset named.
 *
 * Without userfaultfd every case skips with the kernel's reason.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "common/uffd-internal.h"
#include "fake-peer.h"
#include "session-fixture.h"
#include "transport/transport.h"

#define PS (64u * 1024u) /* packet_size and chunk_size: 16 pages per chunk */
#define PAGE 4096u
#define NPAGES 64u       /* one block "pc.ram" of 256 KiB: chunks 0..3, channel = chunk % 2 */
#define CH_DATA0 FAKE_DATA0
#define CH_DATA1 FAKE_DATA1
#define CH_CTL FAKE_CTL
#define CH_URG FAKE_URG

static const block_spec spec[] = { { "pc.ram", NPAGES * PAGE, PAGE } };

/* Page p of generation gen: data and per-granule tags derived from both. */
static void make_page(unsigned p, unsigned gen, uint8_t *data, uint8_t *tags)
{
	for (unsigned i = 0; i < PAGE; i++)
		data[i] = (uint8_t)(p * 31 + gen * 7 + i / 64);
	for (unsigned i = 0; i < PAGE / 16; i++)
		tags[i] = (uint8_t)((p + gen + i) % 16);
}

static unsigned channel_of(unsigned p)
{
	return (p * PAGE / PS) % 2;
}

/* ---- the destination: a receiver with postcopy in a thread ---- */

typedef struct dest {
	guest g;
	int listen_fd;
	bool no_postcopy; /* the receiver does not ask for postcopy */
	bool ram_zeroed;  /* tm_receiver_config.ram_zeroed */
	uint32_t max_outstanding;
	tm_receiver *r;
	GThread *thread;
	int ret;
	GError *error;
	unsigned wait_ones;
	gint done;
} dest;

static gpointer dest_thread(gpointer data)
{
	dest *d = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .timeout_ms = 20000,
				   .ram_zeroed = d->ram_zeroed };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = !d->no_postcopy,
			      .uffd_user_mode_only = true, .max_outstanding = d->max_outstanding };
	tm_state_info info;

	d->ret = tm_receiver_new(&cfg, &d->r, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_set_live(d->r, &lc, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_accept(d->r, d->listen_fd, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(d->r, d->g.layout, d->g.tags, &d->error);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(d->r, &d->error)) == 1) {
		d->wait_ones++;
		while ((d->ret = tm_receiver_next_state(d->r, &info, &d->error)) == 1)
			;
	}
	g_atomic_int_set(&d->done, 1);
	return NULL;
}

/* Probes userfaultfd as the receiver will; false: the test is skipped with the reason. */
static bool uffd_usable(void)
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

static char *dest_start(dest *d)
{
	unsigned port = 0;

	guest_init(&d->g, spec, 1, true);
	d->listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(d->listen_fd, >=, 0);
	d->thread = g_thread_new("dest", dest_thread, d);
	return g_strdup_printf("%u", port);
}

/* Waits (10 s at most) for the receiver to end. */
static void dest_join(dest *d, const char *what)
{
	for (unsigned ms = 0; !g_atomic_int_get(&d->done) && ms < 10000; ms += 10)
		g_usleep(10000);
	if (!g_atomic_int_get(&d->done))
		g_error("%s: the receiver hangs (10 s)", what);
	g_thread_join(d->thread);
	close(d->listen_fd);
}

static void dest_free(dest *d)
{
	tm_receiver_free(d->r);
	g_clear_error(&d->error);
	guest_fini(&d->g);
}

static void wait_phase(dest *d, tm_phase p)
{
	for (unsigned ms = 0; ms < 10000; ms++) {
		if (d->r && tm_receiver_phase(d->r) == p)
			return;
		g_usleep(1000);
	}
	g_error("the receiver never reached phase %d (phase %d, %s)", p,
		d->r ? (int)tm_receiver_phase(d->r) : -1,
		g_atomic_int_get(&d->done) ? (d->error ? d->error->message : "ended") : "running");
}

/* ---- the hand-made sender ---- */

static const fake_hello hello = { .version = 2, .channel_count = 2, .packet_size = PS,
				  .chunk_size = PS, .block = { "pc.ram", NPAGES * PAGE, PAGE },
				  .features = TM_FEATURE_TAGS_MTE4, .sid = 7 };

/* Connects as a sender does (data 0, control, data 1, urgent) and reads every HELLO_ACK. */
static void raw_open(fake_sender *w, const char *port, bool postcopy)
{
	fake_hello h = hello;

	h.features |= postcopy ? TM_FEATURE_POSTCOPY : 0;
	fake_sender_open(w, port, &h);
}

/* Builds a DATA body (URGENT with req_id) of pages [first, first + n) of gen into a message. */
static uint8_t *data_msg(uint32_t seq, bool urgent, uint64_t req_id, unsigned first, unsigned n,
			 unsigned gen, size_t *ret_len)
{
	g_autofree uint8_t *ram = g_malloc((size_t)n * PAGE);
	g_autofree uint8_t *tags = g_malloc((size_t)n * PAGE / 16);
	uint8_t prefix[TM_FRAME_HDR_LEN + TM_URGENT_ID_LEN];
	tm_packet pkt;
	size_t len;
	unsigned cnt;

	tm_packet_init(&pkt, PS);
	pkt.version = TM_WIRE_VERSION_2;
	tm_packet_begin(&pkt, 0, PAGE, PS);
	for (unsigned i = 0; i < n; i++) {
		make_page(first + i, gen, ram + (size_t)i * PAGE, tags + (size_t)i * PAGE / 16);
		tm_packet_add(&pkt, first + i, ram + (size_t)i * PAGE, false,
			      tags + (size_t)i * PAGE / 16, NULL);
	}
	size_t plen = 0;
	if (urgent) {
		cnt = tm_urgent_finish(&pkt, seq, req_id, prefix, &len);
		plen = sizeof(prefix);
	} else {
		cnt = tm_packet_finish(&pkt, seq, &len);
	}
	uint8_t *msg = g_malloc(len), *p = msg;
	memcpy(p, prefix, plen);
	p += plen;
	for (unsigned i = 0; i < cnt; i++) {
		memcpy(p, pkt.iov[i].iov_base, pkt.iov[i].iov_len);
		p += pkt.iov[i].iov_len;
	}
	g_assert_true(p == msg + len);
	tm_packet_fini(&pkt);
	*ret_len = len;
	return msg;
}

/* DATA of pages [first, first + n) of gen on their channel (one chunk). */
static void raw_data(fake_sender *w, unsigned first, unsigned n, unsigned gen)
{
	unsigned ch = channel_of(first);
	size_t len;
	g_autofree uint8_t *msg = data_msg(w->seq[ch]++, false, 0, first, n, gen, &len);
	fake_send(w, ch, msg, len);
	w->pages[ch] += n;
	w->packets[ch]++;
}

/* ZERO pages (zero data, zero tags) [first, first + n) on their channel (one chunk). */
/* ZERO pages (tag 0) or, with tag != 0, ZERO_TAGGED pages: zero data, every granule tagged. */
static void raw_zero_tagged(fake_sender *w, unsigned first, unsigned n, uint8_t tag)
{
	unsigned ch = channel_of(first);
	static const uint8_t zero[PAGE];
	uint8_t ztags[PAGE / 16];
	tm_packet pkt;
	size_t len;

	memset(ztags, tag, sizeof(ztags));

	tm_packet_init(&pkt, PS);
	pkt.version = TM_WIRE_VERSION_2;
	tm_packet_begin(&pkt, 0, PAGE, PS);
	for (unsigned i = 0; i < n; i++)
		g_assert_cmpint(tm_packet_add(&pkt, first + i, zero, true, ztags, NULL), ==,
				tag ? TM_PAGE_ZERO_TAGGED : TM_PAGE_ZERO);
	unsigned cnt = tm_packet_finish(&pkt, w->seq[ch]++, &len);
	for (unsigned i = 0; i < cnt; i++)
		fake_send(w, ch, pkt.iov[i].iov_base, pkt.iov[i].iov_len);
	tm_packet_fini(&pkt);
	w->pages[ch] += n;
	w->packets[ch]++;
}

static void raw_zero(fake_sender *w, unsigned first, unsigned n)
{
	raw_zero_tagged(w, first, n, 0);
}

static void raw_discard(fake_sender *w, unsigned ch, unsigned first, unsigned n)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_DISCARD_HDR_LEN + 8];
	const tm_discard_range range = { first, n };
	size_t len = tm_discard_encode(buf, w->seq[ch]++, 0, &range, 1);
	fake_send(w, ch, buf, len);
}

static void raw_ram_end(fake_sender *w, unsigned ch, uint32_t mode)
{
	fake_ram_end(w, ch, mode, w->pages[ch], w->packets[ch]);
}

static void raw_postcopy(fake_sender *w, uint64_t missing)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_POSTCOPY_LEN];
	size_t n = tm_postcopy_encode(buf, w->seq[CH_CTL]++, missing);
	fake_send(w, CH_CTL, buf, n);
}

/* END_OF_STATE without sections: chunk 0, on channel 0. */
static void raw_eos(fake_sender *w)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN];
	const tm_state_hdr h = { .section = 0, .flags = TM_STATE_END, .chunk = 0 };
	size_t n = tm_state_encode(buf, w->seq[CH_DATA0]++, &h, NULL);
	fake_send(w, CH_DATA0, buf, n);
	w->chunks[CH_DATA0]++;
}

static void raw_end(fake_sender *w, unsigned ch)
{
	if (ch < 2)
		fake_end(w, ch, w->pages[ch], w->packets[ch], w->chunks[ch]);
	else
		fake_end(w, ch, 0, 0, 0);
}

/* Control after its END: PONGs for the receiver's PINGs; READY (mode 2) then END_ACK. */
static void raw_finish_control(fake_sender *w, uint64_t want_mode)
{
	raw_end(w, CH_CTL);
	fake_finish_control(w, want_mode);
}

/* ---- the fake's return path: answers PAGE_REQ with URGENT, REQ_END with END_ACK ---- */

typedef struct responder {
	fake_sender *w;
	unsigned gen;       /* generation of the pages it answers with */
	int wrong_page;     /* hostile: answer the first request with this page (-1: honest) */
	unsigned delay_ms;  /* wait this long before each answer, watching for more requests */
	GThread *thread;
	/* results */
	unsigned requests, max_count;
	unsigned over;      /* requests beyond max_outstanding seen while one was unanswered */
	uint64_t req_end;   /* REQ_END's requests_sent */
	bool req_end_seen;
} responder;

static gpointer responder_thread(gpointer data)
{
	responder *rs = data;
	fake_sender *w = rs->w;
	uint8_t body[64];
	tm_frame f;
	tm_req_window win = { .next_id = 1, .max_outstanding = w->ack.max_outstanding };
	tm_wire_block wb = { .length = NPAGES * PAGE, .page_size = PAGE, .npages = NPAGES };
	tm_hello s = { .version = 2, .channel_count = 2, .packet_size = PS, .chunk_size = PS,
		       .block_count = 1, .blocks = &wb };

	while (fake_read(w, CH_URG, &f, body, sizeof(body))) {
		if (f.type == TM_MSG_REQ_END) {
			rs->req_end = tm_get64(body);
			rs->req_end_seen = true;
			uint8_t out[TM_FRAME_HDR_LEN + 16];
			const uint64_t v[TM_CTRL_MAX_FIELDS] = { 0 };
			size_t n = tm_ctrl_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_END_ACK,
						    w->seq[CH_URG]++, v);
			fake_send(w, CH_URG, out, n);
			break;
		}
		g_assert_cmpuint(f.type, ==, TM_MSG_PAGE_REQ);
		tm_page_req req;
		g_assert_cmpint(tm_page_req_decode(body, f.body_len, &s, &win, &req, NULL), ==, 0);
		win.next_id++;
		rs->requests++;
		rs->max_count = MAX(rs->max_count, req.count);
		if (rs->delay_ms) {
			/* The receiver agreed to max_outstanding unanswered requests: no more. */
			g_usleep(rs->delay_ms * 1000);
			uint8_t peek;
			if (w->ack.max_outstanding == 1 &&
			    recv(w->fd[CH_URG], &peek, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
				rs->over++;
		}
		unsigned first = rs->wrong_page >= 0 ? (unsigned)rs->wrong_page : req.page;
		rs->wrong_page = -1;
		size_t len;
		g_autofree uint8_t *msg = data_msg(w->seq[CH_URG]++, true, req.req_id, first,
						   req.count, rs->gen, &len);
		fake_send(w, CH_URG, msg, len);
	}
	return NULL;
}

static void responder_start(responder *rs, fake_sender *w, unsigned gen)
{
	rs->w = w;
	rs->gen = gen;
	rs->thread = g_thread_new("responder", responder_thread, rs);
}

/* ---- destination "vCPUs": each touches its pages and checks data and tags when it wakes ---- */

typedef struct vcpu {
	dest *d;
	unsigned first, step, count; /* pages first, first + step, ... */
	unsigned gen;
	GThread *thread;
	unsigned bad;                 /* pages whose data or tags were wrong when the load returned */
	int64_t max_wait_us;
} vcpu;

static gpointer vcpu_thread(gpointer data)
{
	vcpu *v = data;
	uint8_t want[PAGE], want_tags[PAGE / 16];
	const uint8_t *tagarr = tm_tag_store_soft_array(v->d->g.tags, 0);

	for (unsigned k = 0; k < v->count; k++) {
		unsigned p = v->first + k * v->step;
		const volatile uint8_t *page = v->d->g.ram[0] + (size_t)p * PAGE;
		int64_t t0 = g_get_monotonic_time();
		(void)page[0]; /* blocks in the userfault until the page is placed */
		v->max_wait_us = MAX(v->max_wait_us, g_get_monotonic_time() - t0);
		make_page(p, v->gen, want, want_tags);
		if (memcmp((const void *)page, want, PAGE) != 0 ||
		    memcmp(tagarr + (size_t)p * PAGE / 16, want_tags, PAGE / 16) != 0)
			v->bad++;
	}
	return NULL;
}

/* A vCPU that touches a poisoned page gets SIGBUS: caught here, for the thread that armed it. */
static __thread sigjmp_buf *bus_jmp;

static void on_sigbus(int sig)
{
	if (bus_jmp)
		siglongjmp(*bus_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

typedef struct bus_vcpu {
	const volatile uint8_t *page;
	GThread *thread;
	gint started;
	bool sigbus;
	uint8_t seen;
} bus_vcpu;

static gpointer bus_vcpu_thread(gpointer data)
{
	bus_vcpu *v = data;
	sigjmp_buf env;

	if (sigsetjmp(env, 1)) {
		v->sigbus = true;
		bus_jmp = NULL;
		return NULL;
	}
	bus_jmp = &env;
	g_atomic_int_set(&v->started, 1);
	v->seen = v->page[0]; /* blocks: the page is missing */
	bus_jmp = NULL;
	return NULL;
}

/* RAM and tags of the destination equal generation gen_of(p) of every page. */
static void check_pages(dest *d, unsigned gen_low, unsigned gen_high, unsigned split)
{
	uint8_t want[PAGE], want_tags[PAGE / 16];
	const uint8_t *tagarr = tm_tag_store_soft_array(d->g.tags, 0);

	for (unsigned p = 0; p < NPAGES; p++) {
		make_page(p, p < split ? gen_low : gen_high, want, want_tags);
		if (memcmp(d->g.ram[0] + (size_t)p * PAGE, want, PAGE) != 0)
			g_error("page %u: data differs from generation %u", p,
				p < split ? gen_low : gen_high);
		if (memcmp(tagarr + (size_t)p * PAGE / 16, want_tags, PAGE / 16) != 0)
			g_error("page %u: tags differ", p);
	}
}

/* ---- tests ---- */

/*
 * Switch before any page (round 0): POSTCOPY, RAM_END(POSTCOPY) on both channels, no device
 * state; then background pages arrive slowly while four vCPU threads touch every page. Each
 * finds data and tags set when its load returns; pages nobody sent in the background are
 * requested on the urgent connection; the session completes with every page.
 */
static void test_round0(void)
{
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	g_assert_cmpuint(w.ack.features & TM_FEATURE_POSTCOPY, ==, TM_FEATURE_POSTCOPY);
	g_assert_cmpuint(w.ack.max_outstanding, ==, TM_MAX_OUTSTANDING_DEFAULT);
	responder_start(&rs, &w, 1);
	raw_postcopy(&w, NPAGES);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	g_assert_cmpuint(tm_receiver_take_events(d.r) & TM_EVENT_POSTCOPY, ==, TM_EVENT_POSTCOPY);

	vcpu v[4];
	for (unsigned i = 0; i < 4; i++) {
		v[i] = (vcpu){ .d = &d, .first = i, .step = 4, .count = NPAGES / 4, .gen = 1 };
		v[i].thread = g_thread_new("vcpu", vcpu_thread, &v[i]);
	}
	/* Background: the first 48 pages, slowly; the last chunk only on request. */
	for (unsigned p = 0; p < 48; p += 4) {
		g_usleep(20000);
		raw_data(&w, p, 4, 1);
	}
	for (unsigned i = 0; i < 4; i++) {
		g_thread_join(v[i].thread);
		g_assert_cmpuint(v[i].bad, ==, 0);
	}
	g_assert_cmpuint(tm_receiver_take_events(d.r) & TM_EVENT_FAULTS, ==, TM_EVENT_FAULTS);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "round0");
	g_test_message("receiver: %s; %u requests (largest %u pages)",
		       d.error ? d.error->message : "ok", rs.requests, rs.max_count);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_COMPLETE);
	g_assert_cmpuint(d.wait_ones, ==, 1); /* the end of device state, once: the guest may run */
	g_assert_true(rs.req_end_seen);
	g_assert_cmpuint(rs.req_end, ==, rs.requests);
	g_assert_cmpuint(rs.requests, >, 0); /* pages 48..63 came only on request */
	check_pages(&d, 1, 1, 0);
	tm_live_stats st = { .size = sizeof(st) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &st), ==, 0);
	g_test_message("postcopy %" G_GUINT64_FORMAT " background %" G_GUINT64_FORMAT
		       " urgent %" G_GUINT64_FORMAT " dup %" G_GUINT64_FORMAT
		       " faults %" G_GUINT64_FORMAT " p50 %" G_GUINT64_FORMAT " max %" G_GUINT64_FORMAT,
		       (guint64)st.postcopy_pages, (guint64)st.background_pages,
		       (guint64)st.urgent_pages, (guint64)st.duplicate_pages, (guint64)st.faults,
		       (guint64)st.fault_p50_us, (guint64)st.fault_max_us);
	g_assert_cmpuint(st.postcopy_pages, ==, NPAGES);
	g_assert_cmpuint(st.background_pages, ==, 48);
	g_assert_cmpuint(st.requests, ==, rs.requests);
	g_assert_cmpuint(st.urgent_pages + st.background_pages - st.duplicate_pages, ==, NPAGES);
	g_assert_cmpuint(st.faults, >, 0);
	g_assert_cmpuint(st.fault_p50_us, <=, st.fault_max_us);
	g_assert_cmpuint(st.fault_max_us, >, 0);
	fake_sender_close(&w);
	dest_free(&d);
}

/*
 * Switch after a precopy round (round 1): every page sent in generation 0, then pages 3 and 4
 * changed; the sender discards them (they are stale at the destination), switches, and sends
 * their generation 1 in the background. Before that they are missing again; at the end they
 * hold generation 1, every other page generation 0.
 */
static void test_round1(void)
{
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	responder_start(&rs, &w, 1);
	for (unsigned p = 0; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_discard(&w, CH_DATA0, 3, 2);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_postcopy(&w, 2);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	g_assert_false(tm_receiver_page_present(d.r, 0, 3));
	g_assert_false(tm_receiver_page_present(d.r, 0, 4));
	g_assert_true(tm_receiver_page_present(d.r, 0, 5));
	g_assert_true(tm_receiver_page_present(d.r, 0, 2));
	vcpu v = { .d = &d, .first = 3, .step = 1, .count = 1, .gen = 1 };
	v.thread = g_thread_new("vcpu", vcpu_thread, &v);
	g_usleep(50000);
	raw_data(&w, 3, 2, 1);
	g_thread_join(v.thread);
	g_assert_cmpuint(v.bad, ==, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "round1");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, 0);
	for (unsigned p = 0; p < NPAGES; p++) {
		uint8_t want[PAGE], want_tags[PAGE / 16];
		make_page(p, p == 3 || p == 4, want, want_tags);
		if (memcmp(d.g.ram[0] + (size_t)p * PAGE, want, PAGE) != 0 ||
		    memcmp(tm_tag_store_soft_array(d.g.tags, 0) + (size_t)p * PAGE / 16, want_tags,
			   PAGE / 16) != 0)
			g_error("page %u: not generation %u", p, p == 3 || p == 4);
	}
	tm_live_stats st = { .size = sizeof(st) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &st), ==, 0);
	g_assert_cmpuint(st.discarded_pages, ==, 2);
	g_assert_cmpuint(st.postcopy_pages, ==, 2);
	g_assert_cmpuint(st.background_pages, ==, 2);
	fake_sender_close(&w);
	dest_free(&d);
}

/*
 * ram_zeroed: ZERO pages of precopy were never written, so they may have no page table entry;
 * once registered they would fault forever. They become zero_known at the barrier: a vCPU
 * touching one gets a zero page placed locally (no request), and the session completes with
 * them counted.
 */
static void test_zero_known(void)
{
	dest d = { .ram_zeroed = true };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	responder_start(&rs, &w, 0);
	raw_zero(&w, 0, 8);
	raw_zero_tagged(&w, 8, 8, 0x9); /* zero data, non-zero tags: they must survive the fault */
	for (unsigned p = 16; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_postcopy(&w, 0);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	/* Page 5 is zero, its tags too: a vCPU touching it must come back. */
	const volatile uint8_t *page = d.g.ram[0] + 5 * PAGE;
	g_assert_cmpuint(page[100], ==, 0);
	/* Page 10 is zero with tags 0x9: the local zero page keeps them. */
	const volatile uint8_t *tagged = d.g.ram[0] + 10 * PAGE;
	g_assert_cmpuint(tagged[200], ==, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "zero-known");
	g_test_message("receiver: %s; %u requests", d.error ? d.error->message : "ok", rs.requests);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpuint(rs.requests, ==, 0);
	for (unsigned p = 0; p < NPAGES; p++)
		g_assert_true(tm_receiver_page_present(d.r, 0, p));
	for (unsigned p = 16; p < NPAGES; p++) {
		uint8_t want[PAGE], want_tags[PAGE / 16];
		make_page(p, 0, want, want_tags);
		g_assert_cmpint(memcmp(d.g.ram[0] + (size_t)p * PAGE, want, PAGE), ==, 0);
	}
	g_assert_true(tm_buffer_is_zero(d.g.ram[0], 16 * PAGE));
	const uint8_t *tagarr = tm_tag_store_soft_array(d.g.tags, 0);
	for (unsigned i = 0; i < 16 * PAGE / 16; i++)
		g_assert_cmpuint(tagarr[i], ==, i >= 8 * PAGE / 16 ? 0x9 : 0);
	fake_sender_close(&w);
	dest_free(&d);
}

/*
 * max_outstanding 1: with four vCPUs faulting on pages far apart, the receiver keeps one request
 * unanswered at a time (the others wait in its queue) and still serves every fault.
 */
static void test_max_outstanding(void)
{
	dest d = { .max_outstanding = 1 };
	fake_sender w;
	responder rs = { .wrong_page = -1, .delay_ms = 30 };

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	g_assert_cmpuint(w.ack.max_outstanding, ==, 1);
	responder_start(&rs, &w, 0);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	vcpu v[4];
	for (unsigned i = 0; i < 4; i++) {
		v[i] = (vcpu){ .d = &d, .first = 1 + 16 * i, .step = 1, .count = 1, .gen = 0 };
		v[i].thread = g_thread_new("vcpu", vcpu_thread, &v[i]);
	}
	for (unsigned i = 0; i < 4; i++) {
		g_thread_join(v[i].thread);
		g_assert_cmpuint(v[i].bad, ==, 0);
	}
	/* The rest in the background; then the end. */
	for (unsigned p = 0; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "max-outstanding");
	g_test_message("receiver: %s; %u requests, %u over the limit",
		       d.error ? d.error->message : "ok", rs.requests, rs.over);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpuint(rs.requests, ==, 4);
	g_assert_cmpuint(rs.over, ==, 0);
	check_pages(&d, 0, 0, 0);
	fake_sender_close(&w);
	dest_free(&d);
}

/*
 * Coalescing: sixteen vCPUs fault on the sixteen pages of one chunk while the only request the
 * receiver may have out (max_outstanding 1) is unanswered; the faults that queued meanwhile go
 * in one PAGE_REQ (adjacent pages, at most 16 and one DATA body).
 */
static void test_coalesce(void)
{
	dest d = { .max_outstanding = 1 };
	fake_sender w;
	responder rs = { .wrong_page = -1, .delay_ms = 100 };

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	responder_start(&rs, &w, 0);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	vcpu v[16];
	for (unsigned i = 0; i < 16; i++) {
		v[i] = (vcpu){ .d = &d, .first = 48 + i, .step = 1, .count = 1, .gen = 0 };
		v[i].thread = g_thread_new("vcpu", vcpu_thread, &v[i]);
	}
	for (unsigned i = 0; i < 16; i++) {
		g_thread_join(v[i].thread);
		g_assert_cmpuint(v[i].bad, ==, 0);
	}
	for (unsigned p = 0; p < 48; p += 16)
		raw_data(&w, p, 16, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "coalesce");
	g_test_message("receiver: %s; %u requests, the largest %u pages",
		       d.error ? d.error->message : "ok", rs.requests, rs.max_count);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpuint(rs.over, ==, 0);
	g_assert_cmpuint(rs.max_count, >=, 8);
	g_assert_cmpuint(rs.requests, <=, 8);
	check_pages(&d, 0, 0, 0);
	fake_sender_close(&w);
	dest_free(&d);
}

/*
 * A connection lost after the switch pauses postcopy (3.4): wait() says -ENOTCONN with the
 * cause, TM_EVENT_PAUSED, phase POSTCOPY_PAUSED; a vCPU on a missing page stays blocked (the
 * library never places what it did not receive); a cancel then gives up (FAILED).
 */
static void test_paused(void)
{
	dest d = { 0 };
	fake_sender w;

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	sigaction(SIGBUS, &sa, &old);
	bus_vcpu v = { .page = d.g.ram[0] + 20 * PAGE };
	v.thread = g_thread_new("vcpu", bus_vcpu_thread, &v);
	while (!g_atomic_int_get(&v.started))
		g_usleep(1000);
	g_usleep(50000);
	close(w.fd[CH_DATA1]); /* the path to the source breaks */
	w.fd[CH_DATA1] = -1;
	dest_join(&d, "paused");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, -ENOTCONN);
	g_assert_nonnull(strstr(d.error->message, "postcopy paused: channel 1: "));
	g_assert_nonnull(strstr(d.error->message, "the source must stay paused"));
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_POSTCOPY_PAUSED);
	g_assert_cmpuint(tm_receiver_take_events(d.r) & TM_EVENT_PAUSED, ==, TM_EVENT_PAUSED);
	tm_live_stats st = { .size = sizeof(st) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &st), ==, 0);
	g_assert_cmpuint(st.phase, ==, TM_PHASE_POSTCOPY_PAUSED);
	g_usleep(200000);
	g_assert_false(tm_receiver_page_present(d.r, 0, 20));
	g_assert_false(v.sigbus); /* still inside its load */
	g_assert_cmpint(tm_receiver_cancel(d.r, "giving up"), ==, 0);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_FAILED);
	/* Free poisons what is missing before it closes the userfaultfd: the straggler gets SIGBUS,
	 * not a zero page it would take for guest data (design 1.7), where the kernel has poison. */
	int probe;
	bool poison = tm_uffd_open(true, true, TM_UFFD_FEATURE_POISON, &probe, NULL, NULL) == 0;
	if (poison)
		close(probe);
	tm_receiver_free(d.r);
	d.r = NULL;
	g_thread_join(v.thread);
	sigaction(SIGBUS, &old, NULL);
	g_test_message("vCPU after free: %s", v.sigbus ? "SIGBUS" : "a zero page");
	g_assert_true(v.sigbus == poison);
	fake_sender_close(&w);
	g_clear_error(&d.error);
	guest_fini(&d.g);
}

/* A cancel in postcopy ends every thread of the receiver within a second (-ECANCELED). */
static void test_cancel(void)
{
	dest d = { 0 };
	fake_sender w;

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_receiver_cancel(d.r, "test"), ==, 0);
	dest_join(&d, "cancel");
	g_test_message("receiver: %s after %.0f ms", d.error ? d.error->message : "ok",
		       (g_get_monotonic_time() - t0) / 1e3);
	g_assert_cmpint(d.ret, ==, -ECANCELED);
	g_assert_cmpint(g_get_monotonic_time() - t0, <, G_USEC_PER_SEC);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_FAILED);
	fake_sender_close(&w);
	dest_free(&d);
}

/*
 * Postcopy agreed, never switched: the session completes in precopy (READY mode 1) and the
 * receiver ends the unused urgent connection with REQ_END(0) / END_ACK before its control
 * END_ACK; no userfaultfd registration ever happened.
 */
static void test_agreed_precopy(void)
{
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	responder_start(&rs, &w, 0);
	for (unsigned p = 0; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_FINAL);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_FINAL);
	raw_eos(&w);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	raw_finish_control(&w, TM_RAM_END_FINAL);
	g_thread_join(rs.thread);
	dest_join(&d, "agreed-precopy");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_true(rs.req_end_seen);
	g_assert_cmpuint(rs.req_end, ==, 0);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_COMPLETE);
	check_pages(&d, 0, 0, 0);
	fake_sender_close(&w);
	dest_free(&d);
}

/* An URGENT in precopy (postcopy agreed, never switched): refused, the session fails. */
static void test_urgent_in_precopy(void)
{
	dest d = { 0 };
	fake_sender w;
	size_t n;

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	g_autofree uint8_t *m = data_msg(w.seq[CH_URG]++, true, 1, 0, 1, 0, &n);
	fake_send(&w, CH_URG, m, n);
	for (unsigned p = 0; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_FINAL);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_FINAL);
	raw_eos(&w);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	raw_end(&w, CH_CTL);
	/* Control: PONGs for the receiver's PINGs until it says why it fails. */
	uint8_t buf[2048];
	tm_frame f;
	while (fake_read(&w, CH_CTL, &f, buf, sizeof(buf)) && f.type == TM_MSG_PING) {
		const uint64_t nonce[TM_CTRL_MAX_FIELDS] = { tm_get64(buf) };
		uint8_t out[TM_FRAME_HDR_LEN + 8];
		size_t k = tm_ctrl_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_PONG, w.seq[CH_CTL]++,
					    nonce);
		fake_send(&w, CH_CTL, out, k);
	}
	dest_join(&d, "urgent-in-precopy");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(d.error->message, "urgent"));
	g_assert_nonnull(strstr(d.error->message, "URGENT"));
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_FAILED);
	fake_sender_close(&w);
	dest_free(&d);
}

/* A receiver without postcopy declines the offer: HELLO_ACK without POSTCOPY, urgent closed. */
static void test_declined(void)
{
	dest d = { .no_postcopy = true };
	fake_sender w;
	uint8_t b;

	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	g_assert_cmpuint(w.ack.features & TM_FEATURE_POSTCOPY, ==, 0);
	g_assert_cmpuint(w.ack.max_outstanding, ==, 0);
	g_assert_cmpint(recv(w.fd[CH_URG], &b, 1, 0), ==, 0); /* closed at once */
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_FINAL);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_FINAL);
	fake_sender_close(&w);
	dest_join(&d, "declined");
	dest_free(&d);
}

typedef struct hostile_case {
	const char *what;
	int errnum;
	const char *words; /* in the receiver's error */
	bool paused;       /* after the switch: POSTCOPY_PAUSED, -ENOTCONN with the cause */
} hostile_case;

static void hostile_send(fake_sender *w, unsigned i)
{
	uint8_t buf[256];
	size_t n;

	switch (i) {
	case 0: { /* DISCARD outside the block */
		const tm_discard_range r = { 60, 10 };
		n = tm_discard_encode(buf, w->seq[0]++, 0, &r, 1);
		fake_send(w, 0, buf, n);
		break;
	}
	case 1: /* DISCARD of channel 1's pages on channel 0 */
		raw_discard(w, CH_DATA0, 16, 2);
		break;
	case 2: /* DISCARD after RAM_END(POSTCOPY) (both: the first waits at the barrier) */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		raw_discard(w, CH_DATA0, 3, 1);
		break;
	case 3: /* RAM_END(POSTCOPY) counting pages that never came */
		w->pages[1] = 5;
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		break;
	case 4: /* modes mixed across channels */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_FINAL);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		break;
	case 5: /* POSTCOPY twice */
		raw_postcopy(w, 1);
		raw_postcopy(w, 1);
		break;
	case 6: { /* an URGENT nobody asked for, after the switch */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		g_autofree uint8_t *m = data_msg(w->seq[CH_URG]++, true, 9, 0, 1, 0, &n);
		fake_send(w, CH_URG, m, n);
		break;
	}
	case 7: { /* SYNC after RAM_END(POSTCOPY) */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		const uint64_t v[TM_CTRL_MAX_FIELDS] = { 1 };
		n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_SYNC, w->seq[0]++, v);
		fake_send(w, 0, buf, n);
		break;
	}
	case 8: { /* END_ACK on urgent before any REQ_END */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		const uint64_t v[TM_CTRL_MAX_FIELDS] = { 0 };
		n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_END_ACK, w->seq[CH_URG]++, v);
		fake_send(w, CH_URG, buf, n);
		break;
	}
	case 9: { /* background DATA of a page of channel 1 on channel 0 */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		g_autofree uint8_t *m = data_msg(w->seq[0]++, false, 0, 20, 1, 0, &n);
		fake_send(w, 0, m, n);
		break;
	}
	}
}

static void test_hostile(void)
{
	static const hostile_case cases[] = {
		{ "discard-range", ERANGE, "channel 0: DISCARD range 0: block 0 'pc.ram' pages 60+10", false },
		{ "discard-channel", EPROTO, "channel 0: DISCARD range 0: block 0 'pc.ram' pages 16+2", false },
		{ "discard-after-ram-end", EPROTO, "channel 0: DISCARD after RAM_END", true },
		{ "ram-end-count", EPROTO, "channel 1: RAM_END counts 5 pages in 0 packets, 0 in 0 "
					   "arrived", false },
		/* either channel's RAM_END may be read first */
		{ "ram-end-mixed", EPROTO, "RAM_END(FINAL)", false },
		{ "postcopy-twice", EPROTO, "control: POSTCOPY twice", false },
		{ "urgent-unsolicited", EPROTO, "urgent: URGENT for request 9, which is not "
						"outstanding", true },
		{ "sync-after-switch", EPROTO, "channel 0: SYNC after RAM_END", true },
		{ "urgent-end-ack", EPROTO, "urgent: END_ACK before REQ_END", true },
		{ "background-channel", EPROTO, "channel 0: DATA entry 0: page 20 of block 0 "
						"'pc.ram' arrived on channel 0", true },
	};

	if (!uffd_usable())
		return;
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		dest d = { 0 };
		fake_sender w;
		g_autofree char *port = dest_start(&d);

		raw_open(&w, port, true);
		hostile_send(&w, i);
		dest_join(&d, cases[i].what);
		g_test_message("%s: receiver: %s", cases[i].what, d.error ? d.error->message : "ok");
		g_assert_cmpint(d.ret, ==, cases[i].paused ? -ENOTCONN : -cases[i].errnum);
		g_assert_cmpint(tm_receiver_phase(d.r), ==,
				cases[i].paused ? TM_PHASE_POSTCOPY_PAUSED : TM_PHASE_FAILED);
		if (!strstr(d.error->message, cases[i].words))
			g_error("%s: \"%s\" does not say \"%s\"", cases[i].what, d.error->message,
				cases[i].words);
		fake_sender_close(&w);
		dest_free(&d);
	}
}

/* DISCARD when postcopy was not agreed (the sender did not offer it). */
static void test_discard_unagreed(void)
{
	dest d = { 0 };
	fake_sender w;

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, false);
	raw_discard(&w, CH_DATA0, 3, 1);
	dest_join(&d, "discard-unagreed");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(d.error->message, "channel 0: DISCARD without postcopy agreed"));
	fake_sender_close(&w);
	dest_free(&d);
}

/* An URGENT whose pages are not those of its request: refused, nothing placed. */
static void test_urgent_mismatch(void)
{
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = 40 };

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	responder_start(&rs, &w, 1);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	/* A vCPU touches page 50: requested, answered with page 40. The thread stays blocked
	 * (3.4: the library never places what it did not receive) until free. */
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	sigaction(SIGBUS, &sa, &old);
	bus_vcpu v = { .page = d.g.ram[0] + 50 * PAGE };
	v.thread = g_thread_new("vcpu", bus_vcpu_thread, &v);
	dest_join(&d, "urgent-mismatch");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, -ENOTCONN); /* after the switch: paused, nothing lost */
	g_assert_nonnull(strstr(d.error->message, "postcopy paused: urgent: URGENT for request 1"));
	g_assert_false(tm_receiver_page_present(d.r, 0, 40));
	g_assert_false(tm_receiver_page_present(d.r, 0, 50));
	/* Free poisons page 50 (or, without poison, closing the fd gives it a zero page). */
	tm_receiver_free(d.r);
	d.r = NULL;
	g_thread_join(v.thread);
	sigaction(SIGBUS, &old, NULL);
	g_thread_join(rs.thread);
	fake_sender_close(&w);
	g_clear_error(&d.error);
	guest_fini(&d.g);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-round0", test_round0, true },
		{ "postcopy-round1", test_round1, true },
		{ "postcopy-declined", test_declined, true },
		{ "postcopy-zero-known", test_zero_known, true },
		{ "postcopy-max-outstanding", test_max_outstanding, true },
		{ "postcopy-cancel", test_cancel, true },
		{ "postcopy-coalesce", test_coalesce, true },
		{ "postcopy-paused", test_paused, true },
		{ "postcopy-agreed-precopy", test_agreed_precopy, true },
		{ "postcopy-urgent-in-precopy", test_urgent_in_precopy, true },
		{ "postcopy-hostile", test_hostile, true },
		{ "postcopy-discard-unagreed", test_discard_unagreed, true },
		{ "postcopy-urgent-mismatch", test_urgent_mismatch, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
