/* SPDX-License-Identifier: MIT */
/*
 * Choosing the I/O backend: the default is io_uring where it can run; a forced backend that
 * cannot run says why; $TAGMIG_IO forces a choice through the tools' mapping (tools/env.c). io_uring is taken away for real with a seccomp
 * filter (what a container runtime does), in a child process.
 */
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tagmig/tagmig.h"
#include "tools/env.h"
#include "transport/transport.h"

/* Makes io_uring_setup fail with EPERM in this process, as Docker's default profile does. */
static void forbid_io_uring(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = G_N_ELEMENTS(f), .filter = f };
	g_assert_cmpint(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), ==, 0);
	g_assert_cmpint(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), ==, 0);
}

static void test_default_is_io_uring(void)
{
	g_autoptr(GError) err = NULL;
	if (tm_io_backend_probe("io_uring", &err) < 0) {
		g_test_skip(err->message);
		return;
	}
	g_assert_cmpstr(tm_io_backend_default(), ==, "io_uring");
	const tm_transport_ops *ops;
	char *note = NULL;
	g_unsetenv("TAGMIG_IO");
	g_assert_cmpint(tm_transport_lookup(NULL, &ops, &note, NULL), ==, 0);
	g_assert_cmpstr(ops->name, ==, "io_uring");
	g_assert_null(note);
	/* "uring" is accepted as a short name. */
	g_assert_cmpint(tm_transport_lookup("uring", &ops, NULL, NULL), ==, 0);
	g_assert_cmpstr(ops->name, ==, "io_uring");
}

static void test_env_forces(void)
{
	const tm_transport_ops *ops;
	g_autoptr(GError) err = NULL;

	g_setenv("TAGMIG_IO", "sockets", TRUE);
	/* The library itself reads no environment: NULL is still the default. */
	g_assert_cmpint(tm_transport_lookup(NULL, &ops, NULL, NULL), ==, 0);
	g_assert_cmpstr(ops->name, ==, tm_io_backend_default());
	/* The tools map $TAGMIG_IO onto the configs (tools/env.c). */
	g_assert_cmpint(tm_transport_lookup(cli_env_io_backend(NULL), &ops, NULL, NULL), ==, 0);
	g_assert_cmpstr(ops->name, ==, "sockets");
	tm_sender_config scfg = { 0 };
	tm_receiver_config rcfg = { 0 };
	cli_env_sender_config(&scfg);
	cli_env_receiver_config(&rcfg);
	g_assert_cmpstr(scfg.io_backend, ==, "sockets");
	g_assert_cmpstr(rcfg.io_backend, ==, "sockets");
	/* A name in the configuration wins over the environment. */
	if (tm_io_backend_probe("io_uring", NULL) == 0) {
		g_assert_cmpint(tm_transport_lookup(cli_env_io_backend("io_uring"), &ops, NULL, NULL),
				==, 0);
		g_assert_cmpstr(ops->name, ==, "io_uring");
	}
	g_setenv("TAGMIG_IO", "telepathy", TRUE);
	g_assert_cmpint(tm_transport_lookup(cli_env_io_backend(NULL), &ops, NULL, &err), ==, -ENOENT);
	g_assert_nonnull(strstr(err->message, "unknown I/O backend 'telepathy'"));
	g_unsetenv("TAGMIG_IO");
}

/* The tools map the tuning variables onto tm_tuning (tools/env.c); unset or other values: 0. */
static void test_env_tuning(void)
{
	tm_tuning t = { 0 };
	cli_env_tuning(&t);
	g_assert_cmpint(t.zerocopy, ==, 0);
	g_assert_false(t.tls_openssl_records);
	g_assert_false(t.no_ktls);

	g_setenv("TAGMIG_ZEROCOPY", "0", TRUE);
	g_setenv("TAGMIG_TLS_RECORDS", "openssl", TRUE);
	g_setenv("TAGMIG_KTLS", "0", TRUE);
	tm_sender_config scfg = { 0 };
	tm_receiver_config rcfg = { 0 };
	cli_env_sender_config(&scfg);
	cli_env_receiver_config(&rcfg);
	g_assert_cmpint(scfg.tuning.zerocopy, ==, -1);
	g_assert_true(scfg.tuning.tls_openssl_records);
	g_assert_true(scfg.tuning.no_ktls);
	g_assert_cmpint(rcfg.tuning.zerocopy, ==, -1);
	g_assert_true(rcfg.tuning.tls_openssl_records && rcfg.tuning.no_ktls);

	g_setenv("TAGMIG_ZEROCOPY", "1", TRUE);
	g_setenv("TAGMIG_TLS_RECORDS", "own", TRUE);
	g_setenv("TAGMIG_KTLS", "1", TRUE);
	t = (tm_tuning){ 0 };
	cli_env_tuning(&t);
	g_assert_cmpint(t.zerocopy, ==, 1);
	g_assert_false(t.tls_openssl_records);
	g_assert_false(t.no_ktls);
	g_unsetenv("TAGMIG_ZEROCOPY");
	g_unsetenv("TAGMIG_TLS_RECORDS");
	g_unsetenv("TAGMIG_KTLS");
}

static void test_seccomp_forbids(void)
{
	if (g_test_subprocess()) {
		forbid_io_uring();
		const tm_transport_ops *ops;
		char *note = NULL;
		g_autoptr(GError) err = NULL;

		/* Forced on: refused with the reason. */
		g_assert_cmpint(tm_io_backend_probe("io_uring", &err), ==, -EPERM);
		g_print("forced: %s\n", err->message);
		g_clear_error(&err);
		g_assert_cmpint(tm_transport_lookup("io_uring", &ops, NULL, &err), ==, -EPERM);
		g_assert_nonnull(strstr(err->message, "io_uring_setup failed"));
		g_clear_error(&err);
		/* Default: falls back to sockets and says why. */
		g_unsetenv("TAGMIG_IO");
		g_assert_cmpint(tm_transport_lookup(NULL, &ops, &note, NULL), ==, 0);
		g_assert_cmpstr(ops->name, ==, "sockets");
		g_print("fallback: %s\n", note);
		g_assert_nonnull(strstr(note, "using sockets"));
		g_free(note);
		g_assert_cmpstr(tm_io_backend_default(), ==, "sockets");
		/* A session created without a backend runs on sockets and reports the note. */
		g_autoptr(tm_receiver) r = NULL;
		tm_stats st;
		g_assert_cmpint(tm_receiver_new(NULL, &r, NULL), ==, 0);
		tm_receiver_get_stats(r, &st);
		g_assert_cmpstr(st.io_backend, ==, "sockets");
		g_assert_nonnull(strstr(st.io_note, "io_uring unavailable"));
		/* Forcing it for a session is refused at creation. */
		tm_receiver_config cfg = { .io_backend = "io_uring" };
		g_autoptr(tm_receiver) r2 = NULL;
		g_assert_cmpint(tm_receiver_new(&cfg, &r2, &err), ==, -EPERM);
		g_assert_nonnull(strstr(err->message, "io_uring cannot run here"));
		return;
	}
	g_test_trap_subprocess(NULL, 20 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
	g_test_trap_assert_passed();
	g_test_trap_assert_stdout("*forced: io_uring cannot run here: io_uring_setup failed: Operation not permitted*");
	g_test_trap_assert_stdout("*fallback: io_uring unavailable, using sockets*");
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/io/default-is-io_uring", test_default_is_io_uring);
	g_test_add_func("/io/env-forces", test_env_forces);
	g_test_add_func("/io/env-tuning", test_env_tuning);
	g_test_add_func("/io/seccomp-forbids", test_seccomp_forbids);
	return g_test_run();
}
