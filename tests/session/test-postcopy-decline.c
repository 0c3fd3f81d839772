/* SPDX-License-Identifier: MIT */
/*
 * A destination that declines postcopy tells the source why (HELLO_ACK's decline reason,
 * docs/wire-format.md): tm_sender_start_postcopy() fails with -EOPNOTSUPP and "the destination
 * declined postcopy: <reason>", and the migration still ends in precopy. Reasons a real
 * receiver gives: its VMM did not ask for postcopy (no set_live, or set_live without it), and
 * a userfaultfd that could not be set up (set_live failed, the VMM went on without postcopy).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "session-fixture.h"

#define PAGES 256u
#define PAGE 4096u

typedef enum { NO_SET_LIVE, SET_LIVE_WITHOUT, UFFD_FAILED, UFFD_FAILED_THEN_WITHOUT } how;

typedef struct dest {
	guest g;
	how how;
	int listen_fd;
	GThread *thread;
	int ret;
	GError *error;
	char *set_live_error; /* UFFD_FAILED: what set_live said */
} dest;

static gpointer dest_thread(gpointer data)
{
	dest *d = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 20000 };
	g_autoptr(tm_receiver) r = NULL;

	d->ret = tm_receiver_new(&cfg, &r, &d->error);
	if (d->ret < 0)
		return NULL;
	if (d->how == UFFD_FAILED || d->how == UFFD_FAILED_THEN_WITHOUT) {
		/* A borrowed userfaultfd that is not open: set_live refuses, the VMM goes on. A number
		 * past the open-files limit (a closed one could be reused by another thread at once). */
		struct rlimit rl;
		g_assert_cmpint(getrlimit(RLIMIT_NOFILE, &rl), ==, 0);
		int closed = rl.rlim_cur < (rlim_t)G_MAXINT - 8 ? (int)rl.rlim_cur + 7 : G_MAXINT - 1;
		tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .uffd_borrow = true,
				      .uffd = closed };
		GError *err = NULL;
		g_assert_cmpint(tm_receiver_set_live(r, &lc, &err), ==, -EBADF);
		d->set_live_error = g_strdup(err->message);
		g_clear_error(&err);
	}
	if (d->how == SET_LIVE_WITHOUT || d->how == UFFD_FAILED_THEN_WITHOUT) {
		tm_live_config lc = { .size = sizeof(lc) };
		g_assert_cmpint(tm_receiver_set_live(r, &lc, NULL), ==, 0);
	}
	d->ret = tm_receiver_accept(r, d->listen_fd, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(r, d->g.layout, d->g.tags, &d->error);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(r, &d->error)) == 1)
		while ((d->ret = tm_receiver_next_state(r, &(tm_state_info){ 0 }, &d->error)) == 1)
			;
	return NULL;
}

static void run(how h, const char *reason)
{
	block_spec spec = { "pc.ram", PAGES * PAGE, PAGE };
	guest src;
	dest d = { .how = h };
	unsigned port = 0;
	g_autoptr(GError) err = NULL;

	guest_init(&src, &spec, 1, true);
	guest_fill(&src);
	guest_init(&d.g, &spec, 1, true);
	d.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(d.listen_fd, >=, 0);
	d.thread = g_thread_new("dest", dest_thread, &d);
	g_autofree char *ports = g_strdup_printf("%u", port);

	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 20000 };
	g_autoptr(tm_sender) s = NULL;
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	if (tm_sender_connect(s, "127.0.0.1", ports, &err) < 0)
		g_error("connect: %s", err->message);
	uint64_t all[PAGES];
	for (unsigned p = 0; p < PAGES; p++)
		all[p] = p;
	g_assert_cmpint(tm_sender_queue_pages(s, 0, all, PAGES, &err), ==, 0);
	g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, -EOPNOTSUPP);
	g_assert_error(err, TM_ERROR, EOPNOTSUPP);
	g_test_message("start_postcopy: %s", err->message);
	g_autofree char *want = g_strdup_printf("the destination declined postcopy: %s", reason);
	if (!strstr(err->message, want))
		g_error("\"%s\" does not say \"%s\"", err->message, want);
	g_clear_error(&err);
	/* Nothing was switched: the guest is paused, the migration ends in precopy. */
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_PRECOPY);
	g_assert_cmpint(tm_sender_guest_stopped(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	g_thread_join(d.thread);
	close(d.listen_fd);
	g_assert_no_error(d.error);
	g_assert_cmpint(d.ret, ==, 0);
	if (d.set_live_error)
		g_test_message("the destination's set_live said: %s", d.set_live_error);
	g_free(d.set_live_error);
	assert_same(&src, &d.g);
	guest_fini(&d.g);
	guest_fini(&src);
}

static void test_no_set_live(void)
{
	run(NO_SET_LIVE, "its VMM did not ask for postcopy (tm_live_config.postcopy)");
}

static void test_set_live_without(void)
{
	run(SET_LIVE_WITHOUT, "its VMM did not ask for postcopy (tm_live_config.postcopy)");
}

static void test_uffd_failed(void)
{
	run(UFFD_FAILED, "its userfaultfd could not be set up");
}

/* A later set_live without postcopy replaces the failed one: then it was not asked for. */
static void test_uffd_failed_then_without(void)
{
	run(UFFD_FAILED_THEN_WITHOUT, "its VMM did not ask for postcopy");
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-decline/not-configured", test_no_set_live, false },
		{ "postcopy-decline/set-live-without", test_set_live_without, false },
		{ "postcopy-decline/uffd-failed", test_uffd_failed, false },
		{ "postcopy-decline/uffd-failed-then-without", test_uffd_failed_then_without, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
