/* SPDX-License-Identifier: MIT */
/*
 * The io_uring byte mover alone, over a loopback TCP pair, with zero-copy forced on
 * (io->zerocopy 1): small packets are copied all the same (a notification costs more than the
 * copy, and waits for the peer's ACK), large ones go zero-copy where the kernel can; the counters
 * add up (one completion per submission, one more per zero-copy send); the bytes arrive in order.
 * On a unix socketpair the same large packets go as plain sends.
 * Skips where io_uring cannot run.
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/testing/tcp-pair.h"
#include "transport/transport.h"

#define DEPTH 4
#define SMALL 4096u
#define LARGE (1u << 20)

typedef struct sink {
	int fd;
	uint64_t bytes;
	uint64_t sum; /* of every byte, to check order and content */
	GThread *th;
} sink;

static gpointer sink_fn(gpointer data)
{
	sink *k = data;
	g_autofree uint8_t *buf = g_malloc(65536);
	for (;;) {
		ssize_t n = read(k->fd, buf, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL;
		for (ssize_t i = 0; i < n; i++)
			k->sum += buf[i] * ((k->bytes + (uint64_t)i) % 251 + 1);
		k->bytes += (uint64_t)n;
	}
}

static bool kernel_has_send_zc(void)
{
	struct io_uring ring;
	if (io_uring_queue_init(4, &ring, 0) < 0)
		return false;
	struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
	bool ok = p && io_uring_opcode_supported(p, IORING_OP_SENDMSG_ZC);
	io_uring_free_probe(p);
	io_uring_queue_exit(&ring);
	return ok;
}

/* Sends count messages of len bytes through the packet slots, as the sender's worker does. */
static void send_packets(tm_io *io, uint8_t *buf, unsigned count, size_t len, uint64_t *sent,
			 uint64_t *sum)
{
	for (unsigned i = 0; i < count; i++) {
		unsigned slot = i % io->depth;
		g_assert_cmpint(io->ops->wait_slot(io, slot), ==, 0);
		/* Each slot has its own part of buf: the others may still be pinned. */
		uint8_t *m = buf + (size_t)slot * len;
		for (size_t j = 0; j < len; j++) {
			m[j] = (uint8_t)(i * 7 + j);
			*sum += m[j] * ((*sent + j) % 251 + 1);
		}
		*sent += len;
		/* Two iovecs: a header and the pages, the shape of a DATA packet. */
		struct iovec iov[2] = { { m, 64 }, { m + 64, len - 64 } };
		g_assert_cmpint(io->ops->submit(io, slot, iov, 2, len), ==, 0);
	}
}

/* A loopback TCP pair for an io_uring mover, or false (the test skipped) where it cannot run. */
static bool uring_pair(int *a, int *b)
{
	g_autoptr(GError) err = NULL;

	if (tm_io_backend_probe("io_uring", &err) < 0) {
		g_test_skip(err->message);
		return false;
	}
	g_assert_cmpint(tcp_pair(a, b, &err), ==, 0);
	return true;
}

/* An io_uring mover on fd, DEPTH packet slots, zero-copy as zerocopy says (tm_io_config). */
static tm_io *mover(int fd, int zerocopy)
{
	g_autoptr(GError) err = NULL;
	tm_io_config cfg = { .timeout_ms = 10000, .depth = DEPTH, .zerocopy = zerocopy };
	tm_io *io = NULL;

	g_assert_cmpint(tm_io_open(fd, 0, &tm_transport_io_uring, &cfg, &io, &err), ==, 0);
	return io;
}

/* Frees io (its end of the stream), waits for k to read to the end and checks what came. */
static void sink_check(sink *k, tm_io *io, int peer_fd, uint64_t sent, uint64_t sum)
{
	tm_io_free(io);
	g_thread_join(k->th);
	close(peer_fd);
	g_assert_cmpuint(k->bytes, ==, sent);
	g_assert_cmpuint(k->sum, ==, sum);
}

static void test_zerocopy_threshold(void)
{
	int a, b;

	if (!uring_pair(&a, &b))
		return;
	sink k = { .fd = b };
	k.th = g_thread_new("sink", sink_fn, &k);
	tm_io *io = mover(a, 1);
	g_assert_cmpuint(io->depth, ==, DEPTH);
	g_autofree uint8_t *buf = g_malloc((size_t)DEPTH * LARGE);
	uint64_t sent = 0, sum = 0;

	send_packets(io, buf, 64, SMALL, &sent, &sum);
	g_assert_cmpint(io->ops->drain(io), ==, 0);
	g_test_message("64 packets of %u bytes: %" G_GUINT64_FORMAT " zero-copy sends, %"
		       G_GUINT64_FORMAT " waits that blocked", SMALL, io->st.zc_sends,
		       io->st.io_waits);
	g_assert_cmpuint(io->st.zc_sends, ==, 0);

	send_packets(io, buf, 8, LARGE, &sent, &sum);
	for (unsigned i = 0; i < DEPTH; i++)
		g_assert_cmpint(io->ops->wait_slot(io, i), ==, 0);
	g_test_message("8 packets of %u bytes: %" G_GUINT64_FORMAT " zero-copy sends", LARGE,
		       io->st.zc_sends);
	if (kernel_has_send_zc())
		g_assert_cmpuint(io->st.zc_sends, ==, 8);
	else
		g_assert_cmpuint(io->st.zc_sends, ==, 0);
	/* Every completion reaped: one per submission, one notification per zero-copy send. */
	g_assert_cmpuint(io->st.io_completions, ==, io->st.io_submissions + io->st.zc_sends);

	/* A control message after them is not held back by their notifications. */
	uint8_t ctl[24] = { 1, 2, 3 };
	struct iovec v = { ctl, sizeof(ctl) };
	g_assert_cmpint(tm_io_send(io, &v, 1, sizeof(ctl)), ==, 0);
	for (size_t j = 0; j < sizeof(ctl); j++)
		sum += ctl[j] * ((sent + j) % 251 + 1);
	sent += sizeof(ctl);

	sink_check(&k, io, b, sent, sum);
}

/*
 * A VMM's unix socketpair (an attached socket that is not TCP): zero-copy forced on, large
 * packets still go, as plain sends (the kernel refuses a zero-copy send there: -EOPNOTSUPP).
 */
static void test_unix_socket(void)
{
	g_autoptr(GError) err = NULL;
	int sv[2];

	if (tm_io_backend_probe("io_uring", &err) < 0) {
		g_test_skip(err->message);
		return;
	}
	g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
	sink k = { .fd = sv[1] };
	k.th = g_thread_new("sink", sink_fn, &k);
	tm_io *io = mover(sv[0], 1);
	g_autofree uint8_t *buf = g_malloc((size_t)DEPTH * LARGE);
	uint64_t sent = 0, sum = 0;
	send_packets(io, buf, 8, LARGE, &sent, &sum);
	g_assert_cmpint(io->ops->drain(io), ==, 0);
	g_assert_cmpuint(io->st.zc_sends, ==, 0);
	sink_check(&k, io, sv[1], sent, sum);
}

/*
 * The peer resets the connection: the send that fails is reported by a later call, and
 * unsent_slot() names the slot of that message (the last one submit() accepted: the kernel never
 * took it in full, so resume does not count it as sent and lost); -1 while every submitted
 * message was taken.
 */
static void test_unsent_slot(void)
{
	int a, b;

	if (!uring_pair(&a, &b))
		return;
	tm_io *io = mover(a, -1);
	g_autofree uint8_t *buf = g_malloc0((size_t)DEPTH * LARGE);
	struct iovec v = { buf, SMALL };
	g_assert_cmpint(io->ops->submit(io, 0, &v, 1, SMALL), ==, 0);
	g_assert_cmpint(io->ops->wait_slot(io, 0), ==, 0);
	g_assert_cmpint(tm_io_unsent_slot(io), ==, -1);

	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	g_assert_cmpint(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), ==, 0);
	close(b); /* an RST: the next sends fail */
	int last = -1, r = 0;
	for (unsigned i = 1; i < 4096 && r == 0; i++) {
		unsigned slot = i % io->depth;
		r = io->ops->wait_slot(io, slot);
		struct iovec w = { buf + (size_t)slot * LARGE, LARGE };
		if (r == 0 && (r = io->ops->submit(io, slot, &w, 1, LARGE)) == 0)
			last = (int)slot;
	}
	if (r == 0)
		r = io->ops->drain(io);
	g_test_message("after the reset: %s; the last message submit() accepted: slot %d",
		       g_strerror(-r), last);
	g_assert_cmpint(r, <, 0);
	g_assert_cmpint(last, >=, 0);
	g_assert_cmpint(tm_io_unsent_slot(io), ==, last);
	tm_io_free(io);
}

/* The SQ tail of this process's only io_uring (from its fdinfo): SQEs ever submitted to it. */
static long ring_sq_tail(void)
{
	g_autoptr(GDir) dir = g_dir_open("/proc/self/fd", 0, NULL);
	const char *name;
	long tail = -1;
	unsigned rings = 0;

	g_assert_nonnull(dir);
	while ((name = g_dir_read_name(dir))) {
		g_autofree char *path = g_strdup_printf("/proc/self/fd/%s", name);
		g_autofree char *target = g_file_read_link(path, NULL);
		if (!target || !strstr(target, "io_uring"))
			continue;
		g_autofree char *info_path = g_strdup_printf("/proc/self/fdinfo/%s", name);
		g_autofree char *info = NULL;
		g_assert_true(g_file_get_contents(info_path, &info, NULL, NULL));
		const char *t = strstr(info, "SqTail:");
		g_assert_nonnull(t);
		tail = strtol(t + strlen("SqTail:"), NULL, 10);
		rings++;
	}
	g_assert_cmpuint(rings, ==, 1);
	return tail;
}

/*
 * Small messages (a SYNC, an END, a control connection's) go by a plain sendmsg, not through the
 * ring, once nothing of the ring's is in the kernel: the thread that ends a round or a session
 * sends those, and a thread that ever submitted to a ring is interrupted by the ring's teardown
 * long after. A packet still goes through the ring (the tail moves).
 */
static void test_small_send_plain(void)
{
	int a, b;

	if (!uring_pair(&a, &b))
		return;
	sink k = { .fd = b };
	k.th = g_thread_new("sink", sink_fn, &k);
	tm_io *io = mover(a, -1);
	uint64_t sent = 0, sum = 0;
	uint8_t ctl[SMALL];
	for (unsigned i = 0; i < 10; i++) {
		size_t len = i == 9 ? sizeof(ctl) : 24 + i;
		for (size_t j = 0; j < len; j++) {
			ctl[j] = (uint8_t)(i + j);
			sum += ctl[j] * ((sent + j) % 251 + 1);
		}
		struct iovec v = { ctl, len };
		g_assert_cmpint(tm_io_send(io, &v, 1, len), ==, 0);
		sent += len;
	}
	g_assert_cmpint(ring_sq_tail(), ==, 0);
	g_autofree uint8_t *buf = g_malloc((size_t)DEPTH * SMALL);
	send_packets(io, buf, 1, SMALL, &sent, &sum);
	g_assert_cmpint(io->ops->drain(io), ==, 0);
	g_assert_cmpint(ring_sq_tail(), ==, 1);
	/* The counters' invariant holds for the plain sends too. */
	g_assert_cmpuint(io->st.io_completions, ==, io->st.io_submissions);
	sink_check(&k, io, b, sent, sum);
}

/*
 * free() closes the connection itself: the peer sees its end at once, not when the ring's
 * teardown (a kernel worker, after an RCU grace period) drops the ring's reference to the socket.
 */
static void test_close_at_free(void)
{
	int a, b;

	if (!uring_pair(&a, &b))
		return;
	tm_io *io = mover(a, -1);
	g_autofree uint8_t *buf = g_malloc0((size_t)DEPTH * SMALL);
	uint64_t sent = 0, sum = 0;
	send_packets(io, buf, DEPTH, SMALL, &sent, &sum);
	g_assert_cmpint(io->ops->drain(io), ==, 0);
	tm_io_free(io);
	struct pollfd p = { .fd = b, .events = POLLRDHUP };
	g_assert_cmpint(poll(&p, 1, 0), ==, 1);
	g_assert_true(p.revents & POLLRDHUP);
	close(b);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/uring/zerocopy-threshold", test_zerocopy_threshold);
	g_test_add_func("/uring/unsent-slot", test_unsent_slot);
	g_test_add_func("/uring/unix-socket", test_unix_socket);
	g_test_add_func("/uring/small-send-plain", test_small_send_plain);
	g_test_add_func("/uring/close-at-free", test_close_at_free);
	return g_test_run();
}
