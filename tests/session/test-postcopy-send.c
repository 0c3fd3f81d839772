/* SPDX-License-Identifier: MIT */
/*
 * The source side of postcopy against a hand-made receiver that speaks the wire with the codec
 * (docs/wire-format.md "Version 2", docs/design/live-engine.md 3.2): the bytes the sender emits
 * at the switch and after it. Each page the receiver gets is compared with the source guest at
 * that moment (data and tags), and the receiver checks: DISCARD exactly for the pages that were
 * sent before and are missing now, every missing page sent once in the background, RAM_END and
 * END counts, POSTCOPY's page count; URGENT answering PAGE_REQ with the right pages; REQ_END
 * answered by END_ACK. Switches at round 0 and at round 1; a receiver that declines postcopy.
 *
 * The sender's sockets have small buffers and the receiver stops reading its data channels
 * ("the gate") until the switch is under way, so that a part of the queued pages is still
 * unsent at the switch: what DISCARD and the background must cover.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "fake-peer.h"
#include "session-fixture.h"
#include "session/postcopy-send.h"
#include "transport/transport.h"

#define NCH 2u
#define PKT (64u << 10)   /* packet and chunk: 16 pages, so stripes alternate every 16 pages */
#define NPAGES 1024u      /* 4 MiB of 4 KiB pages */
#define PAGE 4096u
#define SOCKBUF (32 << 10)

typedef struct rx rx;

typedef struct conn {
	rx *x;
	unsigned i;
	uint32_t seq;
} conn;

struct rx {
	guest *src;
	bool decline;          /* HELLO_ACK without POSTCOPY; the urgent connection is closed */
	bool requests;         /* the urgent thread asks for two runs of pages */
	bool round1;           /* precopy copies count only after the channel's SYNC */
	int hostile;           /* HOSTILE_*: the urgent thread misbehaves, the sender must fail */
	bool ready_early;      /* READY(2) as soon as END_OF_STATE arrives (before or after the
	                        * control END: the sender takes either) */
	bool ready_sent;       /* under lock, with control writes */
	int listen_fd;
	tm_hello hello;
	int fd[NCH + 2];       /* data 0..NCH-1, control, urgent */
	GThread *thread[NCH + 2];
	conn conn[NCH + 2];

	GMutex lock;
	GCond cond;
	bool gate;             /* data threads read only while it is open */
	bool pc_seen;          /* control POSTCOPY arrived */
	uint64_t pc_missing;
	unsigned data_ended;
	/* per page (block 0) */
	uint8_t pre[NPAGES];   /* precopy copies after the SYNC (or all, without a SYNC) */
	uint8_t disc[NPAGES];  /* DISCARDed */
	uint8_t bg[NPAGES];    /* background copies (after RAM_END(POSTCOPY) on its channel) */
	uint8_t urg[NPAGES];   /* URGENT copies */
	uint32_t ram_end_mode[NCH];
	uint64_t state_chunks;
	uint64_t discard_msgs;
	uint64_t ready_mode;
	bool req_end_acked;    /* the urgent connection ended with REQ_END / END_ACK */
};

enum { HOSTILE_NONE, HOSTILE_EARLY, HOSTILE_TWICE, HOSTILE_CUT };

/* false at the end of the stream (or a reset), which only a hostile case may meet */
static bool rd_ok(int fd, void *p, size_t n)
{
	return recv(fd, p, n, MSG_WAITALL) == (ssize_t)n;
}

static void wr(int fd, const void *p, size_t n)
{
	g_assert_cmpint(send(fd, p, n, MSG_NOSIGNAL), ==, (ssize_t)n);
}

/* wr() where the sender may have failed and closed already, which only a hostile case may
 * meet: another thread's refusal ends the session while this one still answers. */
static void wr_or_hostile(rx *x, int fd, const void *p, size_t n)
{
	if (send(fd, p, n, MSG_NOSIGNAL) != (ssize_t)n)
		g_assert_true(x->hostile);
}

/* The next frame and its body (g_free); NULL at the end of the stream in a hostile case. */
static uint8_t *next_frame_or_end(rx *x, int fd, tm_frame *f)
{
	uint8_t h[TM_FRAME_HDR_LEN];
	if (!rd_ok(fd, h, sizeof(h))) {
		g_assert_true(x->hostile);
		return NULL;
	}
	g_assert_cmpint(tm_frame_decode(h, sizeof(h), 2, PKT, f, NULL), ==, 0);
	uint8_t *body = g_malloc(f->body_len + 1);
	if (!rd_ok(fd, body, f->body_len)) {
		g_assert_true(x->hostile); /* a DATA cut short by the sender's shutdown */
		g_free(body);
		return NULL;
	}
	return body;
}

static void ctrl(conn *c, uint8_t type, uint64_t a, uint64_t b)
{
	uint8_t buf[TM_FRAME_HDR_LEN + 24];
	const uint64_t v[TM_CTRL_MAX_FIELDS] = { a, b, 0 };
	g_mutex_lock(&c->x->lock); /* a data thread may write READY on control */
	size_t n = tm_ctrl_encode_v(buf, 2, type, c->seq++, v);
	wr_or_hostile(c->x, c->x->fd[c->i], buf, n);
	g_mutex_unlock(&c->x->lock);
}

/* READY on control, once; under x->lock. */
static void send_ready_locked(rx *x)
{
	conn *c = &x->conn[NCH];
	uint8_t buf[TM_FRAME_HDR_LEN + TM_READY_LEN];

	if (x->ready_sent)
		return;
	/* the channel that carries END_OF_STATE had its RAM_END first (POSTCOPY may still be
	 * on its way on control) */
	bool pc = x->pc_seen;
	for (unsigned i = 0; i < NCH; i++)
		pc = pc || x->ram_end_mode[i] == TM_RAM_END_POSTCOPY;
	x->ready_mode = pc ? TM_RAM_END_POSTCOPY : TM_RAM_END_FINAL;
	size_t n = tm_ready_encode(buf, c->seq++, x->ready_mode);
	wr_or_hostile(x, x->fd[NCH], buf, n);
	x->ready_sent = true;
}

/* A DATA body (after an URGENT's req_id, or a whole DATA): every page equals the source's. */
static uint32_t check_pages(rx *x, const uint8_t *body, size_t len, unsigned channel,
			    uint32_t *ret_first)
{
	tm_data_hdr h;
	g_assert_cmpint(tm_data_hdr_decode(body, len, &x->hello, &h, NULL), ==, 0);
	g_assert_cmpuint(h.block, ==, 0);
	tm_page_entry e[PKT / PAGE];
	g_assert_cmpint(tm_data_entries_decode(&h, body + TM_DATA_HDR_LEN, len - TM_DATA_HDR_LEN,
					       &x->hello, channel, (uint32_t)len, e, NULL),
			==, 0);
	const uint8_t *data = body + TM_DATA_HDR_LEN + TM_PAGE_ENTRY_LEN * h.page_count;
	g_autofree uint8_t *tags = g_malloc(h.page_count * PAGE / 16);
	g_assert_cmpint(tm_data_tags_expand(&h, e, PAGE, data + h.data_len, h.tag_len, tags, NULL),
			==, 0);
	static const uint8_t zero[PAGE];
	const uint8_t *stags = tm_tag_store_soft_array(x->src->tags, 0);
	for (uint32_t k = 0; k < h.page_count; k++) {
		uint32_t p = e[k].page;
		const uint8_t *want = x->src->ram[0] + (uint64_t)p * PAGE;
		if (e[k].kind == TM_PAGE_NORMAL) {
			g_assert_cmpmem(data, PAGE, want, PAGE);
			data += PAGE;
		} else {
			g_assert_cmpmem(zero, PAGE, want, PAGE);
		}
		g_assert_cmpmem(tags + k * PAGE / 16, PAGE / 16, stags + (uint64_t)p * PAGE / 16,
				PAGE / 16);
	}
	if (ret_first)
		*ret_first = e[0].page;
	return h.page_count;
}

static gpointer data_thread(gpointer p)
{
	conn *c = p;
	rx *x = c->x;
	int fd = x->fd[c->i];
	uint64_t pages = 0, packets = 0, chunks = 0;
	bool ram_end = false, synced = false;

	for (;;) {
		g_mutex_lock(&x->lock);
		while (!x->gate)
			g_cond_wait(&x->cond, &x->lock);
		g_mutex_unlock(&x->lock);
		tm_frame f;
		g_autofree uint8_t *body = next_frame_or_end(x, fd, &f);
		uint64_t v[TM_CTRL_MAX_FIELDS];
		if (!body || (x->hostile && f.type == TM_MSG_ERROR))
			return NULL;
		if (f.type == TM_MSG_DATA) {
			g_assert_false(ram_end && x->ram_end_mode[c->i] == TM_RAM_END_FINAL);
			tm_data_hdr h;
			g_assert_cmpint(tm_data_hdr_decode(body, f.body_len, &x->hello, &h, NULL), ==, 0);
			tm_page_entry e[PKT / PAGE];
			g_assert_cmpint(tm_data_entries_decode(&h, body + TM_DATA_HDR_LEN,
							       f.body_len - TM_DATA_HDR_LEN, &x->hello,
							       c->i, f.body_len, e, NULL),
					==, 0);
			check_pages(x, body, f.body_len, c->i, NULL);
			g_mutex_lock(&x->lock);
			for (uint32_t k = 0; k < h.page_count; k++) {
				uint8_t *cnt = ram_end ? x->bg : x->pre;
				if (ram_end || synced || !x->round1)
					cnt[e[k].page]++;
			}
			g_mutex_unlock(&x->lock);
			pages += h.page_count;
			packets++;
		} else if (f.type == TM_MSG_SYNC) {
			g_assert_false(ram_end);
			g_assert_cmpint(tm_ctrl_decode_v(2, f.type, body, f.body_len, v, NULL), ==, 0);
			ctrl(c, TM_MSG_SYNC_ACK, v[0], pages);
			synced = true;
		} else if (f.type == TM_MSG_DISCARD) {
			uint32_t block, n;
			tm_discard_range r[TM_MAX_DISCARD_RANGES];
			g_assert_false(ram_end);
			/* on the pages' own channel, inside one chunk, ascending: the decoder checks */
			g_assert_cmpint(tm_discard_decode(body, f.body_len, &x->hello, c->i, &block, r,
							  &n, NULL),
					==, 0);
			g_mutex_lock(&x->lock);
			x->discard_msgs++;
			for (uint32_t k = 0; k < n; k++)
				for (uint32_t q = 0; q < r[k].npages; q++)
					x->disc[r[k].first_page + q]++;
			g_mutex_unlock(&x->lock);
		} else if (f.type == TM_MSG_RAM_END) {
			uint32_t mode;
			uint64_t rp, rk;
			g_assert_false(ram_end);
			g_assert_cmpint(tm_ram_end_decode(body, f.body_len, !x->decline, &mode, &rp, &rk,
							  NULL),
					==, 0);
			g_assert_cmpuint(rp, ==, pages);
			g_assert_cmpuint(rk, ==, packets);
			g_mutex_lock(&x->lock);
			x->ram_end_mode[c->i] = mode;
			g_mutex_unlock(&x->lock);
			ram_end = true;
			if (x->hostile == HOSTILE_CUT && c->i == 0) {
				/* after the switch committed (POSTCOPY follows it), before this
				 * channel could end */
				g_mutex_lock(&x->lock);
				while (!x->pc_seen)
					g_cond_wait(&x->cond, &x->lock);
				/* a close with unread data: a reset, as a dying receiver's */
				x->fd[0] = -1;
				g_mutex_unlock(&x->lock);
				close(fd);
				return NULL;
			}
		} else if (f.type == TM_MSG_STATE) {
			g_assert_true(ram_end);
			chunks++;
			/* flags at offset 4: END_OF_STATE; the destination may run (postcopy) */
			g_mutex_lock(&x->lock);
			if (x->ready_early && (body[4] & TM_STATE_END))
				send_ready_locked(x);
			g_mutex_unlock(&x->lock);
		} else {
			g_assert_cmpuint(f.type, ==, TM_MSG_END);
			g_assert_true(ram_end);
			g_assert_cmpint(tm_ctrl_decode_v(2, f.type, body, f.body_len, v, NULL), ==, 0);
			g_assert_cmpuint(v[0], ==, pages);
			g_assert_cmpuint(v[1], ==, packets);
			g_assert_cmpuint(v[2], ==, chunks);
			ctrl(c, TM_MSG_END_ACK, pages, chunks);
			g_mutex_lock(&x->lock);
			x->state_chunks += chunks;
			x->data_ended++;
			g_cond_broadcast(&x->cond);
			g_mutex_unlock(&x->lock);
			return NULL;
		}
	}
}

static gpointer control_thread(gpointer p)
{
	conn *c = p;
	rx *x = c->x;
	int fd = x->fd[c->i];

	for (;;) {
		tm_frame f;
		g_autofree uint8_t *body = next_frame_or_end(x, fd, &f);
		uint64_t v[TM_CTRL_MAX_FIELDS];
		if (!body || (x->hostile && f.type == TM_MSG_ERROR))
			return NULL;
		if (f.type == TM_MSG_PING) {
			g_assert_cmpint(tm_ctrl_decode_v(2, f.type, body, f.body_len, v, NULL), ==, 0);
			ctrl(c, TM_MSG_PONG, v[0], 0);
		} else if (f.type == TM_MSG_POSTCOPY) {
			uint64_t missing;
			g_assert_cmpint(tm_postcopy_decode(body, f.body_len, &x->hello, true, &missing,
							   NULL),
					==, 0);
			g_mutex_lock(&x->lock);
			g_assert_false(x->pc_seen); /* once */
			x->pc_seen = true;
			x->pc_missing = missing;
			g_cond_broadcast(&x->cond);
			g_mutex_unlock(&x->lock);
		} else {
			g_assert_cmpuint(f.type, ==, TM_MSG_END);
			g_mutex_lock(&x->lock);
			send_ready_locked(x);
			g_mutex_unlock(&x->lock);
			ctrl(c, TM_MSG_END_ACK, 0, 0);
			return NULL;
		}
	}
}

/* One PAGE_REQ and its URGENT, checked against the request and the source guest; false when
 * the sender answered otherwise (a hostile case). */
static bool request(conn *c, uint64_t id, uint32_t page, uint16_t count)
{
	rx *x = c->x;
	int fd = x->fd[c->i];
	uint8_t buf[TM_FRAME_HDR_LEN + TM_PAGE_REQ_LEN];
	tm_page_req req = { .req_id = id, .block = 0, .page = page, .count = count };
	size_t n = tm_page_req_encode(buf, c->seq++, &req);
	wr(fd, buf, n);

	tm_frame f;
	g_autofree uint8_t *body = next_frame_or_end(x, fd, &f);
	if (!body || (x->hostile && f.type != TM_MSG_URGENT))
		return false;
	g_assert_cmpuint(f.type, ==, TM_MSG_URGENT);
	uint64_t rid;
	g_assert_cmpint(tm_urgent_id_decode(body, f.body_len, f.body_len, &rid, NULL), ==, 0);
	g_assert_cmpuint(rid, ==, id);
	uint32_t first;
	g_assert_cmpuint(check_pages(x, body + 8, f.body_len - 8, TM_CHANNEL_ANY, &first), ==, count);
	g_assert_cmpuint(first, ==, page);
	tm_data_hdr h;
	tm_page_entry e[PKT / PAGE];
	g_assert_cmpint(tm_data_hdr_decode(body + 8, f.body_len - 8, &x->hello, &h, NULL), ==, 0);
	g_assert_cmpint(tm_data_entries_decode(&h, body + 8 + TM_DATA_HDR_LEN,
					       f.body_len - 8 - TM_DATA_HDR_LEN, &x->hello,
					       TM_CHANNEL_ANY, f.body_len - 8, e, NULL),
			==, 0);
	g_assert_cmpint(tm_urgent_check(&x->hello, rid, &req, &h, e, NULL), ==, 0);
	g_mutex_lock(&x->lock);
	for (uint16_t k = 0; k < count; k++)
		x->urg[page + k]++;
	g_mutex_unlock(&x->lock);
	return true;
}

static gpointer urgent_thread(gpointer p)
{
	conn *c = p;
	rx *x = c->x;
	int fd = x->fd[c->i];
	uint64_t sent = 0;

	if (x->hostile == HOSTILE_EARLY) {
		request(c, 1, 7, 1); /* in precopy */
		return NULL;
	}
	if (x->hostile == HOSTILE_CUT)
		return NULL; /* data channel 0 breaks instead (data_thread) */
	g_mutex_lock(&x->lock);
	while (!x->pc_seen && x->data_ended < NCH) /* (a precopy end: REQ_END 0 below) */
		g_cond_wait(&x->cond, &x->lock);
	g_mutex_unlock(&x->lock);
	if (x->hostile == HOSTILE_TWICE) {
		g_assert_true(request(c, 1, 7, 1));
		/* page 7 again: refused, never answered */
		if (request(c, 2, 6, 2))
			g_error("the sender answered a request for a page it answered before");
		return NULL;
	}
	if (x->requests) {
		/* a run across two chunks (two channels' stripes), and a single page */
		request(c, ++sent, NPAGES - 20, 16);
		request(c, ++sent, 7, 1);
	}
	g_mutex_lock(&x->lock);
	while (x->data_ended < NCH)
		g_cond_wait(&x->cond, &x->lock);
	g_mutex_unlock(&x->lock);
	/* every page is there: REQ_END, answered by END_ACK */
	uint8_t buf[TM_FRAME_HDR_LEN + TM_REQ_END_LEN];
	size_t n = tm_req_end_encode(buf, c->seq++, sent);
	wr(fd, buf, n);
	tm_frame f;
	uint8_t peek;
	if (recv(fd, &peek, 1, MSG_PEEK) != 1)
		return NULL; /* the sender failed: the main thread says why */
	g_autofree uint8_t *body = next_frame_or_end(x, fd, &f);
	g_assert_cmpuint(f.type, ==, TM_MSG_END_ACK);
	g_assert_cmpuint(f.body_len, ==, 16);
	g_assert_cmpuint(tm_get64(body) | tm_get64(body + 8), ==, 0);
	x->req_end_acked = true; /* read after the join */
	return NULL;
}

/* Accepts the sender's connections, acknowledges them and starts a thread per connection. */
static gpointer accept_thread(gpointer p)
{
	rx *x = p;
	unsigned n = NCH + 2;

	for (unsigned k = 0; k < n; k++) {
		int fd = accept(x->listen_fd, NULL, NULL);
		g_assert_cmpint(fd, >=, 0);
		tm_hello hello;
		fake_read_hello(fd, TM_WIRE_VERSION_2, &hello);
		/* the connect order of design 2.2: data 0, control, data 1..N-1, urgent */
		unsigned want_role = k == 0 ? TM_ROLE_DATA : k == 1 ? TM_ROLE_CONTROL
					    : k <= NCH	    ? TM_ROLE_DATA
							    : TM_ROLE_URGENT;
		g_assert_cmpuint(hello.role, ==, want_role);
		g_assert_true(hello.features & TM_FEATURE_POSTCOPY);
		unsigned slot = hello.role == TM_ROLE_DATA ? hello.channel_id
				: hello.role == TM_ROLE_CONTROL ? NCH : NCH + 1;
		if (k == 0)
			x->hello = hello;
		else
			tm_hello_clear(&hello);
		x->fd[slot] = fd;
		/* This receiver reads DATA only: it decodes no codec (no ZDATA). */
		tm_hello_ack ack = { .features = x->hello.features & ~TM_FEATURES_COMPRESS,
				     .max_outstanding = 4, .max_state_section = 1 << 20,
				     .max_state_total = 1 << 22 };
		if (x->decline) {
			ack.features &= ~TM_FEATURE_POSTCOPY;
			ack.max_outstanding = 0;
		}
		uint8_t buf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
		size_t len = tm_hello_ack_encode(buf, 0, &ack);
		wr(fd, buf, len);
	}
	for (unsigned i = 0; i < n; i++) {
		conn *c = &x->conn[i];
		*c = (conn){ .x = x, .i = i, .seq = 1 };
		if (i == NCH + 1 && x->decline) {
			close(x->fd[i]); /* declined: closed right after HELLO_ACK */
			x->fd[i] = -1;
			continue;
		}
		x->thread[i] = g_thread_new("rx", i < NCH ? data_thread
						  : i == NCH ? control_thread
							     : urgent_thread,
					    c);
	}
	return NULL;
}

/* The sender's sockets, connected in the order attach() sets them up, with small buffers. */
static tm_sender *sender_open(rx *x, unsigned port)
{
	g_autofree char *ps = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .channels = NCH, .packet_size = PKT, .chunk_size = PKT,
				 .timeout_ms = 20000 };
	tm_sender *s = NULL;
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_sender_new(x->src->layout, x->src->tags, &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	int fds[NCH + 2];
	for (unsigned k = 0; k < NCH + 2; k++) {
		unsigned i = k == 0 ? 0 : k == 1 ? NCH : k <= NCH ? k - 1 : NCH + 1;
		fds[i] = tm_net_connect("127.0.0.1", ps, 5000, -1, NULL);
		g_assert_cmpint(fds[i], >=, 0);
		int sz = SOCKBUF;
		g_assert_cmpint(setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), ==, 0);
	}
	/* attach() sets them up in that order too; the receiver's thread answers each */
	GThread *acc = g_thread_new("accept", accept_thread, x);
	g_assert_cmpint(tm_sender_attach(s, fds, NCH + 2, &err), ==, 0);
	g_thread_join(acc);
	return s;
}

/* Every page of the block, in order. */
static void queue_every_page(tm_sender *s)
{
	g_autoptr(GError) err = NULL;
	uint64_t all[NPAGES];
	for (unsigned p = 0; p < NPAGES; p++)
		all[p] = p;
	g_assert_cmpint(tm_sender_queue_pages(s, 0, all, NPAGES, &err), ==, 0);
}

static void rx_init(rx *x, guest *src, unsigned *ret_port)
{
	memset(x, 0, sizeof(*x));
	x->src = src;
	g_mutex_init(&x->lock);
	g_cond_init(&x->cond);
	x->listen_fd = tm_listen("127.0.0.1", "0", ret_port, NULL);
	g_assert_cmpint(x->listen_fd, >=, 0);
	int sz = SOCKBUF;
	g_assert_cmpint(setsockopt(x->listen_fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), ==, 0);
}

/* The source, one block of NPAGES filled, and a receiver for it started with its gate open. */
static void src_rx_init(guest *src, rx *x, unsigned *ret_port)
{
	static const block_spec spec[] = { { "pc.ram", NPAGES * PAGE, PAGE } };

	guest_init(src, spec, 1, true);
	guest_fill(src);
	rx_init(x, src, ret_port);
	x->gate = true;
}

static void rx_fini(rx *x)
{
	for (unsigned i = 0; i < NCH + 2; i++) {
		if (x->thread[i])
			g_thread_join(x->thread[i]);
		if (x->fd[i] > 0)
			close(x->fd[i]);
	}
	close(x->listen_fd);
	tm_hello_clear(&x->hello);
	g_mutex_clear(&x->lock);
	g_cond_clear(&x->cond);
}

static void set_gate(rx *x, bool open)
{
	g_mutex_lock(&x->lock);
	x->gate = open;
	g_cond_broadcast(&x->cond);
	g_mutex_unlock(&x->lock);
}

typedef struct gate_opener {
	rx *x;
	tm_sender *s;
} gate_opener;

/*
 * Opens the gate 200 ms after the switch began: tm_sender_start_postcopy() stops the guest
 * (TM_PHASE_STOPPED) right before it takes what is still queued, and then waits for the data
 * channels, which only the open gate lets go on. Timed from the call instead, a test thread
 * starved before the call let every queued page through first (nothing missing at the switch).
 */
static gpointer open_gate_later(gpointer p)
{
	gate_opener *o = p;

	for (int ms = 0; ms < 10000 && tm_sender_phase(o->s) == TM_PHASE_PRECOPY; ms++)
		g_usleep(1000);
	g_usleep(200 * 1000);
	set_gate(o->x, true);
	return NULL;
}

static uint64_t state_section_len = 150000; /* three chunks */

/*
 * One migration: round 1 (when rounds) sends everything and syncs, then dirty pages (new
 * content) are queued with the gate shut; the switch comes while most of them are unsent.
 */
static void run(bool round1, bool requests)
{
	static const block_spec spec[] = { { "pc.ram", NPAGES * PAGE, PAGE } };
	guest src;
	rx x;
	unsigned port;
	g_autoptr(GError) err = NULL;
	uint64_t all[NPAGES], dirty[NPAGES];
	size_t ndirty = 0;

	guest_init(&src, spec, 1, true);
	guest_fill(&src);
	rx_init(&x, &src, &port);
	x.requests = requests;
	x.round1 = round1;
	x.ready_early = round1 && !requests; /* as a receiver whose RAM is registered does */
	x.gate = round1; /* round 0: shut from the start */
	tm_sender *s = sender_open(&x, port);

	for (unsigned p = 0; p < NPAGES; p++)
		all[p] = p;
	if (round1) {
		g_assert_cmpint(tm_sender_queue_pages(s, 0, all, NPAGES, &err), ==, 0);
		g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
		set_gate(&x, false);
		/* every third page dirtied with new content, shape changed */
		for (unsigned p = 0; p < NPAGES; p += 3) {
			fill_page(&src, 0, p, p + 1);
			dirty[ndirty++] = p;
		}
		g_assert_cmpint(tm_sender_queue_pages(s, 0, dirty, ndirty, &err), ==, 0);
	} else {
		/* round 0: half of the pages queued, the rest never */
		g_assert_cmpint(tm_sender_queue_pages(s, 0, all, NPAGES / 2, &err), ==, 0);
	}
	gate_opener op = { &x, s };
	GThread *opener = g_thread_new("gate", open_gate_later, &op);
	g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_POSTCOPY);
	g_thread_join(opener);
	/* device state after the switch, interleaved with the background */
	g_autofree uint8_t *state = g_malloc(state_section_len);
	memset(state, 0x5a, state_section_len);
	g_assert_cmpint(tm_sender_put_state(s, "cpu0", state, state_section_len, 0, &err), ==, 0);
	int fr = tm_sender_finish(s, &err);
	g_assert_no_error(err);
	g_assert_cmpint(fr, ==, 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_COMPLETE);
	tm_live_stats st = { .size = sizeof(st) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &st), ==, 0);
	rx_fini(&x);

	/* What the receiver saw. */
	g_assert_true(x.pc_seen);
	g_assert_true(x.req_end_acked);
	g_assert_cmpuint(x.ready_mode, ==, TM_RAM_END_POSTCOPY);
	for (unsigned i = 0; i < NCH; i++)
		g_assert_cmpuint(x.ram_end_mode[i], ==, TM_RAM_END_POSTCOPY);
	g_assert_cmpuint(x.state_chunks, ==, 3 + 1); /* the section and END_OF_STATE */
	uint64_t missing = 0, discarded = 0, urgent = 0;
	for (unsigned p = 0; p < NPAGES; p++) {
		bool dirtied = round1 && p % 3 == 0;
		bool queued = round1 ? dirtied : p < NPAGES / 2;
		/* at most one copy after the sync (round 0: at all) in precopy; no page twice */
		g_assert_cmpuint(x.pre[p], <=, 1);
		g_assert_cmpuint(x.disc[p], <=, 1);
		g_assert_cmpuint(x.bg[p], <=, 1);
		g_assert_cmpuint(x.urg[p], <=, 1);
		/* DISCARD exactly the pages sent before and still missing at the switch */
		bool stale = round1 && dirtied && !x.pre[p];
		if (x.disc[p] != stale)
			g_error("page %u: discarded %u times, stale %d", p, x.disc[p], stale);
		/* missing at the switch: stale, or (round 0) never sent */
		bool miss = stale || (!round1 && !x.pre[p]);
		if (!queued)
			g_assert_cmpuint(x.pre[p], ==, 0);
		missing += miss;
		discarded += x.disc[p];
		urgent += x.urg[p];
		/* every missing page came exactly once, in the background or on request */
		if (miss && x.bg[p] + x.urg[p] == 0)
			g_error("page %u missing at the switch never came", p);
		if (!miss)
			g_assert_cmpuint(x.bg[p] + x.urg[p], ==, x.urg[p]);
		if (miss && !x.urg[p])
			g_assert_cmpuint(x.bg[p], ==, 1);
	}
	g_assert_cmpuint(x.pc_missing, ==, missing);
	g_assert_cmpuint(st.postcopy_pages, ==, missing);
	g_assert_cmpuint(missing, >, 0);
	if (round1)
		g_assert_cmpuint(discarded, >, 0); /* the gate kept some dirty pages unsent */
	else
		g_assert_cmpuint(x.discard_msgs, ==, 0); /* nothing was ever sent twice */
	if (requests) {
		g_assert_cmpuint(st.requests, ==, 2);
		g_assert_cmpuint(st.urgent_pages, ==, 17);
		g_assert_cmpuint(urgent, ==, 17);
		g_assert_cmpuint(st.service_p99_us, >, 0);
	} else {
		g_assert_cmpuint(st.requests, ==, 0);
		g_assert_cmpuint(st.background_pages, ==, missing);
	}
	tm_sender_free(s);
	guest_fini(&src);
}

static void test_round0(void)
{
	run(false, false);
}

static void test_round1(void)
{
	run(true, false);
}

static void test_urgent(void)
{
	run(true, true);
}

/* A receiver that declines: start_postcopy says so, and precopy still ends normally. */
static void test_declined(void)
{
	guest src;
	rx x;
	unsigned port;
	g_autoptr(GError) err = NULL;

	src_rx_init(&src, &x, &port);
	x.decline = true;
	tm_sender *s = sender_open(&x, port);
	queue_every_page(s);
	g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, -EOPNOTSUPP);
	g_assert_error(err, TM_ERROR, EOPNOTSUPP);
	g_assert_nonnull(strstr(err->message, "the destination declined postcopy"));
	g_clear_error(&err);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	rx_fini(&x);
	g_assert_cmpuint(x.ready_mode, ==, TM_RAM_END_FINAL);
	for (unsigned i = 0; i < NCH; i++)
		g_assert_cmpuint(x.ram_end_mode[i], ==, TM_RAM_END_FINAL);
	for (unsigned p = 0; p < NPAGES; p++)
		g_assert_cmpuint(x.pre[p], ==, 1);
	tm_sender_free(s);
	guest_fini(&src);
}

/* Postcopy agreed, never switched: a precopy end, the urgent connection closed by REQ_END(0). */
static void test_agreed_precopy(void)
{
	guest src;
	rx x;
	unsigned port;
	g_autoptr(GError) err = NULL;

	src_rx_init(&src, &x, &port);
	tm_sender *s = sender_open(&x, port);
	queue_every_page(s);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_COMPLETE);
	rx_fini(&x); /* its urgent thread got END_ACK for REQ_END(0) */
	g_assert_false(x.pc_seen);
	g_assert_true(x.req_end_acked);
	g_assert_cmpuint(x.ready_mode, ==, TM_RAM_END_FINAL);
	for (unsigned i = 0; i < NCH; i++)
		g_assert_cmpuint(x.ram_end_mode[i], ==, TM_RAM_END_FINAL);
	for (unsigned p = 0; p < NPAGES; p++)
		g_assert_cmpuint(x.pre[p] + x.disc[p] * 10 + x.bg[p] * 10, ==, 1);
	tm_sender_free(s);
	guest_fini(&src);
}

/*
 * A receiver asking for pages it must not, or a connection cut: before the switch the sender
 * fails (FAILED, the error); after it the session is paused (POSTCOPY_PAUSED, -ENOTCONN quoting
 * the cause, TM_EVENT_PAUSED), and only a cancel makes it FAILED.
 */
static void hostile(int how, const char *words)
{
	guest src;
	rx x;
	unsigned port;
	g_autoptr(GError) err = NULL;
	uint64_t all[NPAGES];

	src_rx_init(&src, &x, &port);
	x.hostile = how;
	tm_sender *s = sender_open(&x, port);
	for (unsigned p = 0; p < NPAGES; p++)
		all[p] = p;
	if (how == HOSTILE_EARLY) {
		/* the request comes right after the handshake */
		for (int i = 0; i < 500 && tm_sender_phase(s) != TM_PHASE_FAILED; i++)
			g_usleep(10000);
	} else {
		g_assert_cmpint(tm_sender_queue_pages(s, 0, all, NPAGES / 2, &err), ==, 0);
		g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, 0);
	}
	int code = how == HOSTILE_EARLY ? EPROTO : ENOTCONN;
	g_assert_cmpint(tm_sender_finish(s, &err), ==, -code);
	g_assert_error(err, TM_ERROR, code);
	if (!strstr(err->message, words))
		g_error("\"%s\" does not say \"%s\"", err->message, words);
	if (how == HOSTILE_EARLY) {
		g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_FAILED);
	} else {
		g_assert_true(g_str_has_prefix(err->message, "postcopy paused: "));
		g_assert_nonnull(strstr(err->message, "the source must stay paused and keep its RAM"));
		g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_POSTCOPY_PAUSED);
		g_assert_true(tm_sender_take_events(s) & TM_EVENT_PAUSED);
		g_assert_cmpint(tm_sender_cancel(s, "giving up"), ==, 0);
		g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_FAILED);
	}
	tm_sender_free(s);
	rx_fini(&x);
	guest_fini(&src);
}

static void test_request_early(void)
{
	hostile(HOSTILE_EARLY, "urgent: PAGE_REQ before the switch to postcopy");
}

static void test_cut_paused(void)
{
	hostile(HOSTILE_CUT, "channel 0: ");
}

static void test_request_twice(void)
{
	hostile(HOSTILE_TWICE, "urgent: PAGE_REQ 2 asks again for block 0 'pc.ram' page 7 "
			       "(offset 0x7000)");
}

/*
 * Every page was delivered before the switch: no channel has background pages, so nothing is
 * sent after RAM_END(POSTCOPY) until END. The switch must still leave at once (the destination's
 * registration barrier waits for RAM_END(POSTCOPY) on every channel), not sit in the channel's
 * cork (tm_chan_cork) until finish().
 */
static void test_switch_idle(void)
{
	guest src;
	rx x;
	unsigned port;
	g_autoptr(GError) err = NULL;

	src_rx_init(&src, &x, &port);
	tm_sender *s = sender_open(&x, port);
	queue_every_page(s);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0); /* all applied: nothing is missing */
	g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, 0);
	unsigned seen = 0;
	for (int t = 0; t < 300 && seen < NCH; t++) {
		g_usleep(10000);
		g_mutex_lock(&x.lock);
		seen = 0;
		for (unsigned i = 0; i < NCH; i++)
			seen += x.ram_end_mode[i] == TM_RAM_END_POSTCOPY;
		g_mutex_unlock(&x.lock);
	}
	if (seen < NCH)
		g_error("3 s after start_postcopy() only %u of %u channels delivered "
			"RAM_END(POSTCOPY)", seen, NCH);
	uint8_t state[100];
	memset(state, 0x5a, sizeof(state));
	g_assert_cmpint(tm_sender_put_state(s, "cpu0", state, sizeof(state), 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	rx_fini(&x);
	g_assert_true(x.pc_seen);
	g_assert_cmpuint(x.pc_missing, ==, 0);
	g_assert_cmpuint(x.discard_msgs, ==, 0);
	for (unsigned p = 0; p < NPAGES; p++)
		g_assert_cmpuint(x.pre[p] + x.bg[p], ==, 1);
	tm_sender_free(s);
	guest_fini(&src);
}

/*
 * After a switch under a rate limit: the limit lifted (the background at full speed), device
 * state, finish; the switch found at least min_missing pages missing, and every page came once,
 * before or after it. Frees s and src.
 */
static void unlimited_end(tm_sender *s, rx *x, guest *src, uint64_t min_missing)
{
	g_autoptr(GError) err = NULL;
	uint8_t state[100];

	g_assert_cmpint(tm_sender_set_rate_limit(s, 0), ==, 0);
	memset(state, 0x5a, sizeof(state));
	g_assert_cmpint(tm_sender_put_state(s, "cpu0", state, sizeof(state), 0, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	rx_fini(x);
	g_assert_true(x->pc_seen);
	g_test_message("%" G_GUINT64_FORMAT " of %u pages missing at the switch", x->pc_missing,
		       NPAGES);
	g_assert_cmpuint(x->pc_missing, >=, min_missing);
	for (unsigned p = 0; p < NPAGES; p++)
		g_assert_cmpuint(x->pre[p] + x->bg[p], ==, 1);
	tm_sender_free(s);
	guest_fini(src);
}

/*
 * A packet the rate limit holds when the switch comes is precopy's last: it goes at once (the
 * switch waits for it, and the guest is paused), not when the bucket has paid its debt. At
 * 32 KiB/s each 64 KiB packet leaves a debt of 2 s: the second channel's first packet waits for
 * the first's. start_postcopy() must return well within that; the background then keeps the
 * limit (its first packet waits), until the test lifts it.
 */
/* A session to a receiver that reads all it gets, rate-limited to rate bytes/s, every page
 * queued: only the limit holds pages back. */
static tm_sender *limited_queued(guest *src, rx *x, uint64_t rate)
{
	unsigned port;

	src_rx_init(src, x, &port);
	tm_sender *s = sender_open(x, port);
	g_assert_cmpint(tm_sender_set_rate_limit(s, rate), ==, 0);
	queue_every_page(s);
	return s;
}

static void test_switch_not_held(void)
{
	guest src;
	rx x;
	g_autoptr(GError) err = NULL;

	tm_sender *s = limited_queued(&src, &x, 32u << 10);
	g_usleep(100000); /* the packets are packed, one sent, the other waiting on the bucket */
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, 0);
	int64_t took = g_get_monotonic_time() - t0;
	g_test_message("start_postcopy() took %" G_GINT64_FORMAT " us", took);
	g_assert_cmpint(took, <, 1000000);
	unlimited_end(s, &x, &src, NPAGES - 3 * PKT / PAGE);
}

#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
/*
 * The rate limit holds across tm_sender_start_postcopy() when the VMM did not mark the guest
 * stopped: that call stops the guest's clock itself, but leaves the limit on. A hook delays the
 * switch by 300 ms after that (a VMM thread preempted there, as on a loaded host); had the limit
 * been lifted, the queued 4 MiB would all leave at full speed in that time and the switch would
 * find nothing missing. At 256 KiB/s about three 64 KiB packets leave.
 */
static void test_limit_kept(void)
{
	guest src;
	rx x;
	g_autoptr(GError) err = NULL;

	tm_sender *s = limited_queued(&src, &x, 256u << 10);
	tm_send_pc_test_switch_delay(300);
	int r = tm_sender_start_postcopy(s, &err);
	tm_send_pc_test_switch_delay(0);
	g_assert_cmpint(r, ==, 0);
	unlimited_end(s, &x, &src, NPAGES / 2);
}
#endif

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/postcopy-send/round0", test_round0);
	g_test_add_func("/postcopy-send/round1", test_round1);
	g_test_add_func("/postcopy-send/urgent", test_urgent);
	g_test_add_func("/postcopy-send/declined", test_declined);
	g_test_add_func("/postcopy-send/agreed-precopy", test_agreed_precopy);
	g_test_add_func("/postcopy-send/request-early", test_request_early);
	g_test_add_func("/postcopy-send/request-twice", test_request_twice);
	g_test_add_func("/postcopy-send/cut-paused", test_cut_paused);
	g_test_add_func("/postcopy-send/switch-idle", test_switch_idle);
	g_test_add_func("/postcopy-send/switch-not-held", test_switch_not_held);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	g_test_add_func("/postcopy-send/limit-kept", test_limit_kept);
#endif
	return g_test_run();
}
