/* SPDX-License-Identifier: MIT */
/*
 * Liveness of a protocol 2 session (docs/design/live-engine.md 3.5): timeout_ms means "peer
 * unresponsive", never "idle". A pause between rounds longer than timeout_ms completes; a peer
 * frozen with SIGSTOP (a separate process: its kernel still acknowledges TCP, only its library's
 * PONGs tell) is reported unresponsive within about timeout_ms (and the time a new control
 * connection is given to be answered: a dead path would be resumed). The frozen peer is this program
 * itself, exec'd with --live-peer (separate process, real SIGSTOP).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "session-fixture.h"

#define PAGES ((2u << 20) / 4096u)
static const block_spec one_block[] = { { "pc.ram", 2 << 20, 4096 } };

static bool same_backends(void)
{
	if (strcmp(send_io, recv_io) == 0)
		return true;
	g_test_skip("timing of idle and frozen peers: the same-backend pairs cover it");
	return false;
}

static int queue_all(tm_sender *s, GError **err)
{
	uint64_t bm[PAGES / 64];
	memset(bm, 0xff, sizeof(bm));
	return tm_sender_queue_bitmap(s, 0, bm, 0, PAGES, err);
}

/* ---- the exec'd peer ---- */

/*
 * --live-peer receiver IO TLSDIR TIMEOUT: listens, prints "port N", receives one session.
 * --live-peer sender IO TLSDIR TIMEOUT PORT: one round, prints "synced", then waits for a
 * line on stdin (never comes while it is stopped) and finishes.
 */
static int live_peer(int argc, char **argv)
{
	if (argc < 6)
		return 2;
	const char *io = argv[3], *tls = strcmp(argv[4], "-") ? argv[4] : NULL;
	unsigned timeout = (unsigned)atoi(argv[5]);
	g_autoptr(GError) err = NULL;
	guest g;
	int r;

	/* A failed assertion in the test leaves no stopped child behind (SIGKILL ends it too). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	guest_init(&g, one_block, 1, false);
	setvbuf(stdout, NULL, _IONBF, 0);
	if (strcmp(argv[2], "receiver") == 0) {
		unsigned port = 0;
		int lfd = tm_listen("127.0.0.1", "0", &port, NULL);
		tm_receiver_config cfg = { .io_backend = io, .tls_creds_dir = tls, .timeout_ms = timeout };
		g_autoptr(tm_receiver) rc = NULL;
		printf("port %u\n", port);
		r = tm_receiver_new(&cfg, &rc, &err);
		if (r >= 0)
			r = tm_receiver_accept(rc, lfd, &err);
		if (r >= 0)
			r = tm_receiver_start(rc, g.layout, NULL, &err);
		if (r >= 0)
			r = tm_receiver_wait(rc, &err);
	} else {
		tm_sender_config cfg = { .io_backend = io, .tls_creds_dir = tls, .channels = 2,
					 .timeout_ms = timeout };
		g_autoptr(tm_sender) s = NULL;
		char line[16];
		r = tm_sender_new(g.layout, NULL, &cfg, &s, &err);
		if (r >= 0 && argc > 6)
			r = tm_sender_connect(s, "127.0.0.1", argv[6], &err);
		if (r >= 0)
			r = queue_all(s, &err);
		if (r >= 0)
			r = tm_sender_sync(s, &err);
		if (r >= 0)
			printf("synced\n");
		if (r >= 0 && fgets(line, sizeof(line), stdin))
			r = tm_sender_finish(s, &err);
	}
	if (r < 0)
		fprintf(stderr, "live-peer %s: %s\n", argv[2], err ? err->message : g_strerror(-r));
	guest_fini(&g);
	return r < 0 ? 1 : 0;
}

typedef struct child {
	GPid pid;
	int in, out;
	FILE *outf;
} child;

static void child_spawn(child *c, const char *role, unsigned timeout, const char *port)
{
	g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
	g_autofree char *t = g_strdup_printf("%u", timeout);
	const char *io = strcmp(role, "receiver") ? send_io : recv_io;
	const char *argv[] = { self, "--live-peer", role, io, tls_dir ? tls_dir : "-", t, port, NULL };
	g_autoptr(GError) err = NULL;
	g_assert_true(g_spawn_async_with_pipes(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
					       NULL, NULL, &c->pid, &c->in, &c->out, NULL, &err));
	c->outf = fdopen(c->out, "r");
}

/* The next line the child prints (without the newline). */
static char *child_line(child *c)
{
	char buf[64];
	g_assert_nonnull(fgets(buf, sizeof(buf), c->outf));
	return g_strchomp(g_strdup(buf));
}

static void child_kill(child *c)
{
	int status;
	kill(c->pid, SIGKILL);
	g_assert_cmpint(waitpid(c->pid, &status, 0), ==, c->pid);
	g_spawn_close_pid(c->pid);
	fclose(c->outf);
	close(c->in);
}

/* Stops the child and waits until every thread of it is stopped (kill() only queues SIGSTOP). */
static void child_stop(child *c)
{
	g_assert_cmpint(kill(c->pid, SIGSTOP), ==, 0);
	g_autofree char *dir = g_strdup_printf("/proc/%d/task", (int)c->pid);
	for (int tries = 0; tries < 200; tries++) {
		g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
		g_assert_nonnull(d);
		bool all = true;
		for (const char *t; all && (t = g_dir_read_name(d));) {
			g_autofree char *path = g_strdup_printf("%s/%s/stat", dir, t);
			g_autofree char *stat = NULL;
			/* "pid (comm) S ...": the state follows the last ')' */
			if (!g_file_get_contents(path, &stat, NULL, NULL))
				continue;
			const char *st = strrchr(stat, ')');
			all = st && (st[2] == 'T' || st[2] == 't');
		}
		if (all)
			return;
		g_usleep(10000);
	}
	g_assert_not_reached();
}

/* ---- tests ---- */

/*
 * Issue 12's defect: a 4 s pause between rounds killed the session with "receive: timed out"
 * (the I/O timeout was an idle timeout). Here both sides have timeout_ms 1000 and the VMM pauses
 * 2.5 s between rounds, and again before finish: the session completes, data identical.
 */
static void test_idle_gap(void)
{
	if (!same_backends())
		return;
	guest src, dst;
	peer p;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, one_block, 1, false);
	guest_init(&dst, one_block, 1, false);
	guest_fill(&src);
	g_autofree char *port = peer_start_ex(&p, &dst, false, 1000);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 1000 };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_SETUP);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", port, &err), ==, 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_PRECOPY);
	g_assert_cmpint(queue_all(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	g_assert_cmpuint(tm_sender_take_events(s) & TM_EVENT_ROUND, ==, TM_EVENT_ROUND);
	g_usleep(2500 * 1000);
	for (uint64_t pg = 0; pg < PAGES; pg += 7)
		fill_page(&src, 0, pg, (unsigned)pg);
	g_assert_cmpint(queue_all(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
	g_usleep(2500 * 1000);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_COMPLETE);
	g_assert_cmpuint(tm_sender_take_events(s), ==, TM_EVENT_ROUND | TM_EVENT_COMPLETE);
	peer_join(&p);
	g_assert_no_error(p.error);
	g_assert_cmpint(p.ret, ==, 0);
	g_assert_cmpint(tm_receiver_phase(p.r), ==, TM_PHASE_COMPLETE);
	g_assert_cmpuint(tm_receiver_take_events(p.r), ==, TM_EVENT_COMPLETE);
	assert_same(&src, &dst);
	peer_free(&p);
	guest_fini(&src);
	guest_fini(&dst);
}

#define FREEZE_TIMEOUT_MS 1500u
/* After timeout_ms of silence, a new control connection tells a frozen peer from a dead path
 * (docs/api.md, "Resume"): the sender waits ANSWER_MS for its answer, the receiver for it one
 * keepalive interval (KA_MS) longer. */
#define ANSWER_MS (FREEZE_TIMEOUT_MS / 2)
#define KA_MS (FREEZE_TIMEOUT_MS / 4)

/* The receiver process is stopped after a round: the sender's next sync fails "unresponsive". */
static void test_frozen_receiver(void)
{
	if (!same_backends())
		return;
	guest src;
	child c;
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;

	guest_init(&src, one_block, 1, false);
	guest_fill(&src);
	child_spawn(&c, "receiver", FREEZE_TIMEOUT_MS, NULL);
	g_autofree char *line = child_line(&c);
	g_assert_true(g_str_has_prefix(line, "port "));
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = FREEZE_TIMEOUT_MS };
	g_assert_cmpint(tm_sender_new(src.layout, NULL, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", line + 5, &err), ==, 0);
	g_assert_cmpint(queue_all(s, &err), ==, 0);
	g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);

	child_stop(&c);
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(queue_all(s, &err), ==, 0);
	int r = tm_sender_sync(s, &err);
	int64_t took = g_get_monotonic_time() - t0;
	g_test_message("sender after %.2f s: %s", took / 1e6, err ? err->message : "no error");
	g_assert_cmpint(r, ==, -ETIMEDOUT);
	g_assert_nonnull(strstr(err->message, "control: peer unresponsive: nothing from the "
					      "receiver for"));
	g_assert_cmpint(took, >=, FREEZE_TIMEOUT_MS * 1000);
	g_assert_cmpint(took, <=, (FREEZE_TIMEOUT_MS + ANSWER_MS + 1000) * 1000);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_FAILED);
	g_assert_cmpuint(tm_sender_take_events(s) & TM_EVENT_FAILED, ==, TM_EVENT_FAILED);
	child_kill(&c);
	guest_fini(&src);
}

/* The sender process is stopped after a round: the receiver's wait fails "unresponsive". */
static void test_frozen_sender(void)
{
	if (!same_backends())
		return;
	guest dst;
	peer p;
	child c;

	guest_init(&dst, one_block, 1, false);
	g_autofree char *port = peer_start_ex(&p, &dst, false, FREEZE_TIMEOUT_MS);
	child_spawn(&c, "sender", FREEZE_TIMEOUT_MS, port);
	g_autofree char *line = child_line(&c);
	g_assert_cmpstr(line, ==, "synced");
	child_stop(&c);
	int64_t t0 = g_get_monotonic_time();
	peer_join(&p);
	int64_t took = g_get_monotonic_time() - t0;
	g_test_message("receiver after %.2f s: %s", took / 1e6,
		       p.error ? p.error->message : "no error");
	g_assert_cmpint(p.ret, ==, -ETIMEDOUT);
	g_assert_nonnull(strstr(p.error->message, "control: peer unresponsive: nothing from the "
						  "sender for"));
	g_assert_cmpint(took, <=, (FREEZE_TIMEOUT_MS + KA_MS + ANSWER_MS + 1000) * 1000);
	g_assert_cmpint(tm_receiver_phase(p.r), ==, TM_PHASE_FAILED);
	child_kill(&c);
	peer_free(&p);
	guest_fini(&dst);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--live-peer") == 0)
		return live_peer(argc, argv);
	static const session_test tests[] = {
		{ "idle-gap", test_idle_gap, false },
		{ "frozen-receiver", test_frozen_receiver, false },
		{ "frozen-sender", test_frozen_sender, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
