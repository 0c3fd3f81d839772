/* SPDX-License-Identifier: MIT */
/*
 * Postcopy with a userfaultfd the destination VMM opened itself (tm_live_config.uffd_borrow,
 * docs/api.md "A worked postcopy setup"): the library registers guest RAM on it, serves the
 * faults of the VMM's vCPU threads from it, and leaves it open for the VMM after free. The
 * source switches at round 0 with a slow background, so the vCPUs fault; every page they touch
 * must hold the source's data and tags. Skips where userfaultfd cannot be opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "session-fixture.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define GUEST_RAM (4u << 20)
#define PAGE 4096u
#define BACKGROUND_RATE (4000u * 1000)

typedef struct dest {
	guest g;
	guest *src;
	int uffd, listen_fd;
	tm_receiver *r;
	GThread *thread, *vcpu;
	int ret;
	GError *error;
	bool running;
	uint64_t bad;
} dest;

static gpointer vcpu_thread(gpointer data)
{
	dest *d = data;
	const unsigned gran = PAGE / TM_TAG_GRANULE;
	const uint8_t *dt = tm_tag_store_soft_array(d->g.tags, 0);
	const uint8_t *st = tm_tag_store_soft_array(d->src->tags, 0);

	for (uint64_t p = 0; p < GUEST_RAM / PAGE; p++) {
		uint64_t q = (p * 769) % (GUEST_RAM / PAGE); /* all pages, out of order */
		const volatile uint8_t *page = d->g.ram[0] + q * PAGE;
		(void)page[0];
		if (memcmp((const void *)page, d->src->ram[0] + q * PAGE, PAGE) != 0 ||
		    memcmp(dt + q * gran, st + q * gran, gran) != 0)
			d->bad++;
	}
	return NULL;
}

static gpointer dest_thread(gpointer data)
{
	dest *d = data;

	d->ret = tm_receiver_accept(d->r, d->listen_fd, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(d->r, d->g.layout, d->g.tags, &d->error);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(d->r, &d->error)) == 1) {
		while ((d->ret = tm_receiver_next_state(d->r, &(tm_state_info){ 0 }, &d->error)) == 1)
			;
		if (d->ret == 0 && tm_receiver_phase(d->r) == TM_PHASE_POSTCOPY && !d->running) {
			d->vcpu = g_thread_new("vcpu", vcpu_thread, d);
			d->running = true;
		}
	}
	return NULL;
}

/* The VMM's own userfaultfd (user-mode faults only: no privilege needed), or -errno. */
static int open_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return -errno;
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

static void test_borrowed(void)
{
	if (strcmp(send_io, recv_io) != 0 || tls_dir) {
		g_test_skip("the borrowed userfaultfd runs on the plaintext same-backend pairs");
		return;
	}
	int uffd = open_uffd();
	if (uffd < 0) {
		g_autofree char *why = g_strdup_printf("no userfaultfd: %s", g_strerror(-uffd));
		g_test_skip(why);
		return;
	}
	g_autoptr(GError) err = NULL;
	block_spec spec = { "pc.ram", GUEST_RAM, PAGE };
	guest src;
	guest_init(&src, &spec, 1, true);
	guest_fill(&src);
	dest d = { .src = &src, .uffd = uffd };
	guest_init(&d.g, &spec, 1, true);
	/* The destination takes the VMM's fd at setup (set_live), before any connection. */
	tm_receiver_config rcfg = { .io_backend = recv_io, .timeout_ms = 20000,
				    .ram_zeroed = true };
	tm_live_config rlc = { .size = sizeof(rlc), .postcopy = true, .uffd_borrow = true,
			       .uffd = uffd };
	g_assert_cmpint(tm_receiver_new(&rcfg, &d.r, &err), ==, 0);
	if (tm_receiver_set_live(d.r, &rlc, &err) < 0)
		g_error("set_live with the borrowed uffd %d: %s", uffd, err->message);
	unsigned port = 0;
	d.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(d.listen_fd, >=, 0);
	d.thread = g_thread_new("dest", dest_thread, &d);
	g_autofree char *ports = g_strdup_printf("%u", port);

	tm_sender_config cfg = { .io_backend = send_io, .channels = 2, .timeout_ms = 20000 };
	g_autoptr(tm_sender) s = NULL;
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .rate_limit = BACKGROUND_RATE };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	if (tm_sender_connect(s, "127.0.0.1", ports, &err) < 0)
		g_error("connect: %s", err->message);
	if (tm_sender_start_postcopy(s, &err) < 0)
		g_error("start_postcopy: %s", err->message);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	g_thread_join(d.thread);
	close(d.listen_fd);
	g_assert_no_error(d.error);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_true(d.running);
	g_thread_join(d.vcpu);
	g_assert_cmpuint(d.bad, ==, 0);
	tm_live_stats rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &rs), ==, 0);
	g_test_message("borrowed uffd %d: %" G_GUINT64_FORMAT " faults, %" G_GUINT64_FORMAT
		       " requests, p99 %" G_GUINT64_FORMAT " us",
		       uffd, (guint64)rs.faults, (guint64)rs.requests, (guint64)rs.fault_p99_us);
	g_assert_cmpuint(rs.postcopy_pages, ==, GUEST_RAM / PAGE);
	g_assert_cmpuint(rs.faults, >, 0);
	assert_same(&src, &d.g);
	tm_receiver_free(d.r);
	/* Borrowed: still the VMM's after free. */
	g_assert_cmpint(fcntl(uffd, F_GETFD), >=, 0);
	close(uffd);
	guest_fini(&d.g);
	guest_fini(&src);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-borrowed-uffd", test_borrowed, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
