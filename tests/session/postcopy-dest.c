/* SPDX-License-Identifier: MIT */
/* The postcopy destination tests' shared fixture: postcopy-dest.h. */
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "postcopy-dest.h"
#include "transport/transport.h"

const block_spec spec[1] = { { "pc.ram", NPAGES * PAGE, PAGE } };

/* Page p of generation gen: data and per-granule tags derived from both. */
void make_page(unsigned p, unsigned gen, uint8_t *data, uint8_t *tags)
{
	for (unsigned i = 0; i < PAGE; i++)
		data[i] = (uint8_t)(p * 31 + gen * 7 + i / 64);
	for (unsigned i = 0; i < PAGE / 16; i++)
		tags[i] = (uint8_t)((p + gen + i) % 16);
}

unsigned channel_of(unsigned p)
{
	return (p * PAGE / PS) % 2;
}

/* ---- the destination: a receiver with postcopy in a thread ---- */

gpointer dest_thread(gpointer data)
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

char *dest_start(dest *d)
{
	unsigned port = 0;

	guest_init(&d->g, spec, 1, true);
	d->listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(d->listen_fd, >=, 0);
	d->thread = g_thread_new("dest", dest_thread, d);
	return g_strdup_printf("%u", port);
}

bool dest_open(dest *d, fake_sender *w)
{
	if (!uffd_usable())
		return false;
	g_autofree char *port = dest_start(d);
	raw_open(w, port, true);
	return true;
}

/* Waits (10 s at most) for the receiver to end. */
void dest_join(dest *d, const char *what)
{
	for (unsigned ms = 0; !g_atomic_int_get(&d->done) && ms < 10000; ms += 10)
		g_usleep(10000);
	if (!g_atomic_int_get(&d->done))
		g_error("%s: the receiver hangs (10 s)", what);
	g_thread_join(d->thread);
	close(d->listen_fd);
}

void dest_free(dest *d)
{
	tm_receiver_free(d->r);
	g_clear_error(&d->error);
	guest_fini(&d->g);
}

void dest_close(dest *d, fake_sender *w)
{
	fake_sender_close(w);
	dest_free(d);
}

void wait_phase(dest *d, tm_phase p)
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
void raw_open(fake_sender *w, const char *port, bool postcopy)
{
	fake_hello h = hello;

	h.features |= postcopy ? TM_FEATURE_POSTCOPY : 0;
	fake_sender_open(w, port, &h);
}

/* Builds a DATA body (URGENT with req_id) of pages [first, first + n) of gen into a message. */
uint8_t *data_msg(uint32_t seq, bool urgent, uint64_t req_id, unsigned first, unsigned n,
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
void raw_data(fake_sender *w, unsigned first, unsigned n, unsigned gen)
{
	unsigned ch = channel_of(first);
	size_t len;
	g_autofree uint8_t *msg = data_msg(w->seq[ch]++, false, 0, first, n, gen, &len);
	fake_send(w, ch, msg, len);
	w->pages[ch] += n;
	w->packets[ch]++;
}

/* ZERO pages (tag 0) or, with tag != 0, ZERO_TAGGED pages: zero data, every granule tagged. */
void raw_zero_tagged(fake_sender *w, unsigned first, unsigned n, uint8_t tag)
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

void raw_zero(fake_sender *w, unsigned first, unsigned n)
{
	raw_zero_tagged(w, first, n, 0);
}

void raw_discard(fake_sender *w, unsigned ch, unsigned first, unsigned n)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_DISCARD_HDR_LEN + 8];
	const tm_discard_range range = { first, n };
	size_t len = tm_discard_encode(buf, w->seq[ch]++, 0, &range, 1);
	fake_send(w, ch, buf, len);
}

void raw_ram_end(fake_sender *w, unsigned ch, uint32_t mode)
{
	fake_ram_end(w, ch, mode, w->pages[ch], w->packets[ch]);
}

void raw_postcopy(fake_sender *w, uint64_t missing)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_POSTCOPY_LEN];
	size_t n = tm_postcopy_encode(buf, w->seq[CH_CTL]++, missing);
	fake_send(w, CH_CTL, buf, n);
}

/* END_OF_STATE without sections: chunk 0, on channel 0. */
void raw_eos(fake_sender *w)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_STATE_HDR_LEN];
	const tm_state_hdr h = { .section = 0, .flags = TM_STATE_END, .chunk = 0 };
	size_t n = tm_state_encode(buf, w->seq[CH_DATA0]++, &h, NULL);
	fake_send(w, CH_DATA0, buf, n);
	w->chunks[CH_DATA0]++;
}

void raw_end(fake_sender *w, unsigned ch)
{
	if (ch < 2)
		fake_end(w, ch, w->pages[ch], w->packets[ch], w->chunks[ch]);
	else
		fake_end(w, ch, 0, 0, 0);
}

void raw_switch_round0(dest *d, fake_sender *w, bool eos)
{
	raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
	if (eos)
		raw_eos(w);
	wait_phase(d, TM_PHASE_POSTCOPY);
}

/* Control after its END: PONGs for the receiver's PINGs; READY (mode 2) then END_ACK. */
void raw_finish_control(fake_sender *w, uint64_t want_mode)
{
	raw_end(w, CH_CTL);
	fake_finish_control(w, want_mode);
}

/* ---- the fake's return path: answers PAGE_REQ with URGENT, REQ_END with END_ACK ---- */

gpointer responder_thread(gpointer data)
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
		for (int64_t until = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
		     rs->watch && rs->requests == 1 && g_get_monotonic_time() < until;) {
			tm_live_stats ls = { .size = sizeof(ls) };
			if (tm_receiver_get_live_stats(rs->watch, &ls) < 0 || ls.faults >= rs->hold_faults)
				break;
			g_usleep(1000);
		}
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

void responder_start(responder *rs, fake_sender *w, unsigned gen)
{
	rs->w = w;
	rs->gen = gen;
	rs->thread = g_thread_new("responder", responder_thread, rs);
}

/* ---- destination "vCPUs": each touches its pages and checks data and tags when it wakes ---- */

gpointer vcpu_thread(gpointer data)
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

void on_sigbus(int sig)
{
	if (bus_jmp)
		siglongjmp(*bus_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

gpointer bus_vcpu_thread(gpointer data)
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
void check_pages(dest *d, unsigned gen_low, unsigned gen_high, unsigned split)
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