/* SPDX-License-Identifier: MIT */
/*
 * Round trips of a session, counted with a clock: every connection runs through a relay that
 * delivers each chunk of bytes DELAY_MS after it was sent, both ways, so a round trip costs at
 * least 2 * DELAY_MS and anything else (loopback, threads, a loaded machine) is small beside it.
 * A sync with nothing outstanding and the end of a session (END / END_ACK on every connection)
 * must each take one round trip: more than one, and they take twice as long. Every test runs for
 * each backend pair, plaintext and TLS (session-fixture.c).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/testing/tcp-pair.h"
#include "session-fixture.h"

#define DELAY_MS 100

/* One direction of a relayed connection: a reader that stamps chunks, a writer that holds them. */
typedef struct chunk {
	int64_t due_us; /* when it may be written */
	size_t len;     /* 0: end of stream */
	uint8_t data[];
} chunk;

typedef struct relay_dir {
	int from, to;
	GAsyncQueue *q;
	GThread *reader, *writer;
} relay_dir;

static gpointer reader_fn(gpointer data)
{
	relay_dir *d = data;
	uint8_t buf[65536];

	for (;;) {
		ssize_t n = read(d->from, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		chunk *c = g_malloc(sizeof(*c) + (n > 0 ? (size_t)n : 0));
		c->due_us = g_get_monotonic_time() + DELAY_MS * 1000;
		c->len = n > 0 ? (size_t)n : 0;
		if (n > 0)
			memcpy(c->data, buf, (size_t)n);
		g_async_queue_push(d->q, c);
		if (n <= 0)
			return NULL;
	}
}

static gpointer writer_fn(gpointer data)
{
	relay_dir *d = data;
	bool broken = false;

	for (;;) {
		g_autofree chunk *c = g_async_queue_pop(d->q);
		int64_t wait = c->due_us - g_get_monotonic_time();
		if (wait > 0)
			g_usleep((gulong)wait);
		if (c->len == 0) {
			shutdown(d->to, SHUT_WR);
			return NULL;
		}
		for (size_t done = 0; !broken && done < c->len;) {
			ssize_t n = send(d->to, c->data + done, c->len - done, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				broken = true; /* keep draining the queue until the reader ends */
			else
				done += (size_t)n;
		}
	}
}

/* A connection through the relay: the sender's end, the receiver's end, the relay between. */
typedef struct relay {
	int send_fd, recv_fd; /* handed to the sessions */
	int a, b;             /* the relay's own ends */
	relay_dir dir[2];
} relay;

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void relay_start(relay *r)
{
	g_autoptr(GError) err = NULL;

	g_assert_cmpint(tcp_pair(&r->send_fd, &r->a, &err), ==, 0);
	g_assert_cmpint(tcp_pair(&r->b, &r->recv_fd, &err), ==, 0);
	nodelay(r->a);
	nodelay(r->b);
	r->dir[0] = (relay_dir){ .from = r->a, .to = r->b, .q = g_async_queue_new() };
	r->dir[1] = (relay_dir){ .from = r->b, .to = r->a, .q = g_async_queue_new() };
	for (int i = 0; i < 2; i++) {
		r->dir[i].reader = g_thread_new("relay-read", reader_fn, &r->dir[i]);
		r->dir[i].writer = g_thread_new("relay-write", writer_fn, &r->dir[i]);
	}
}

/* After both sessions closed their ends: the readers see the end of the stream, all stop. */
static void relay_stop(relay *r)
{
	for (int i = 0; i < 2; i++) {
		g_thread_join(r->dir[i].reader);
		g_thread_join(r->dir[i].writer);
		g_async_queue_unref(r->dir[i].q);
	}
	close(r->a);
	close(r->b);
}

typedef struct recv_run {
	guest *g;
	int fds[8];
	unsigned n;
	bool resume; /* the reconnect hook on both sides: RESUME_CONTROL is agreed */
	tm_receiver *r;
	int ret;
	GError *error;
} recv_run;

/* Reconnect hooks that never deliver: they only make the session agree to resume, whose end
 * has one more message (the sender's CTL_POS after END_ACK, which the receiver waits for). */
static int send_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	(void)opaque, (void)connection, (void)timeout_ms;
	return -ECONNREFUSED;
}

static int recv_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	(void)opaque, (void)connection;
	g_usleep(MIN(timeout_ms, 50u) * 1000);
	return -ETIMEDOUT;
}

static gpointer recv_fn(gpointer data)
{
	recv_run *rr = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 20000 };
	tm_live_config lc = { .size = sizeof(lc), .reconnect = recv_hook };

	rr->ret = tm_receiver_new(&cfg, &rr->r, &rr->error);
	if (rr->ret >= 0 && rr->resume)
		rr->ret = tm_receiver_set_live(rr->r, &lc, &rr->error);
	if (rr->ret >= 0)
		rr->ret = tm_receiver_attach(rr->r, rr->fds, rr->n, &rr->error);
	if (rr->ret >= 0)
		rr->ret = tm_receiver_start(rr->r, rr->g->layout, rr->g->tags, &rr->error);
	if (rr->ret >= 0)
		rr->ret = tm_receiver_wait(rr->r, &rr->error);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * A session of 2 channels (3 connections: protocol 2) through the relay: one round of pages,
 * then rounds of one page each, empty syncs, then finish. A one-page round is one round trip
 * (the page and the SYNCs on every channel at once, the SYNC_ACKs back); an empty sync has
 * nothing outstanding and takes none; finish is one too (END on every connection at once, each
 * END_ACK back). A second round trip (the control connection's END after the data channels'
 * END_ACKs) would make finish take twice as long as a sync.
 */
static void round_trips(bool resume)
{
	enum { CHANNELS = 2, CONNS = CHANNELS + 1, SYNCS = 3 };
	const block_spec spec[] = { { "pc.ram", 1 << 20, 4096 } };
	guest src, dst;
	relay rel[CONNS];
	recv_run rr = { .g = &dst, .n = CONNS, .resume = resume };
	int sfds[CONNS];
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, spec, 1, true);
	guest_init(&dst, spec, 1, true);
	guest_fill(&src);
	for (unsigned i = 0; i < CONNS; i++) {
		relay_start(&rel[i]);
		sfds[i] = rel[i].send_fd;
	}
	/* The receiver takes them in the order the sender sets them up (TLS: one handshake at a
	 * time): data 0, control (the sender's last), data 1. */
	for (unsigned i = 0; i < CONNS; i++)
		rr.fds[i] = rel[i == 0 ? 0 : i == 1 ? CONNS - 1 : i - 1].recv_fd;
	GThread *rt = g_thread_new("receiver", recv_fn, &rr);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .tls_hostname = "localhost", .channels = CHANNELS,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .wire_version = 2,
			      .reconnect = resume ? send_hook : NULL };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	g_assert_cmpint(tm_sender_attach(s, sfds, CONNS, &err), ==, 0);

	uint64_t bm[(1 << 20) / 4096 / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(s, 0, bm, 0, (1 << 20) / 4096, &err), ==, 0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);

	int64_t sync_us[SYNCS], empty_us[SYNCS];
	for (unsigned i = 0; i < SYNCS; i++) {
		uint64_t page = i * 7;
		int64_t t0 = g_get_monotonic_time();
		g_assert_cmpint(tm_sender_queue_pages(s, 0, &page, 1, &err), ==, 0);
		g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
		sync_us[i] = g_get_monotonic_time() - t0;
		t0 = g_get_monotonic_time();
		g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
		empty_us[i] = g_get_monotonic_time() - t0;
	}
	qsort(sync_us, SYNCS, sizeof(sync_us[0]), cmp_i64);
	qsort(empty_us, SYNCS, sizeof(empty_us[0]), cmp_i64);
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	int64_t finish_us = g_get_monotonic_time() - t0;
	tm_stats at_finish, later;
	tm_sender_get_stats(s, &at_finish);
	g_thread_join(rt);
	/* Final once finish returned: the control connection's close after it (with resume:
	 * CTL_POS, which the receiver waited for; TLS: close_notify) is not the migration's. */
	tm_sender_get_stats(s, &later);
	g_assert_cmpuint(later.wire_bytes, ==, at_finish.wire_bytes);
	g_assert_cmpmem(&later, sizeof(later), &at_finish, sizeof(at_finish));
	g_assert_no_error(rr.error);
	g_assert_cmpint(rr.ret, ==, 0);
	assert_same(&src, &dst);
	tm_receiver_free(rr.r);
	g_clear_pointer(&s, tm_sender_free);
	for (unsigned i = 0; i < CONNS; i++)
		relay_stop(&rel[i]);

	const int64_t rtt = 2 * DELAY_MS * 1000;
	g_test_message("round trip %" G_GINT64_FORMAT " us through the relay; one-page round %"
		       G_GINT64_FORMAT "..%" G_GINT64_FORMAT " us, empty sync %" G_GINT64_FORMAT
		       "..%" G_GINT64_FORMAT " us, finish %" G_GINT64_FORMAT " us",
		       rtt, sync_us[0], sync_us[SYNCS - 1], empty_us[0], empty_us[SYNCS - 1],
		       finish_us);
	/* Each one-page round went through the relay (at least one round trip) and took no second
	 * one; an empty sync did not go to the network: none took a round trip, and the typical
	 * one a small part of it (the slowest may be a loaded machine's preemption). */
	g_assert_cmpint(sync_us[0], >=, rtt);
	g_assert_cmpint(sync_us[SYNCS / 2], <, rtt * 3 / 2);
	g_assert_cmpint(empty_us[SYNCS / 2], <, rtt / 4);
	g_assert_cmpint(empty_us[SYNCS - 1], <, rtt);
	g_assert_cmpint(finish_us, >=, rtt);
	/* TLS too: the sender's close_notify follows END, so the receiver's close waits for nothing.
	 * With resume, finish returns at END_ACK: the close after it (CTL_POS, then with TLS each
	 * side's close_notify, the receiver's only once CTL_POS is in) is another round trip. */
	/* A second round trip takes finish to 2 rtt; 3/4 rtt of slack absorbs a loaded machine's
	 * scheduling (one failed at rtt + rtt / 2 under load 17). */
	g_assert_cmpint(finish_us, <, rtt + MAX(rtt * 3 / 4, sync_us[SYNCS / 2] / 2));
	guest_fini(&src);
	guest_fini(&dst);
}

static void test_round_trips(void)
{
	round_trips(false);
}

/* RESUME_CONTROL agreed: the end's acknowledgement is one round trip still. */
static void test_round_trips_resume(void)
{
	round_trips(true);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "round-trips", test_round_trips, false },
		{ "round-trips-resume", test_round_trips_resume, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
