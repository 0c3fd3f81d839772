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
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
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

/* A connected loopback TCP pair: the client end from tm_net_connect. */
static void tcp_pair_of(int *ret_a, int *ret_b)
{
	unsigned port = 0;
	int lfd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(lfd, >=, 0);
	g_autofree char *ports = g_strdup_printf("%u", port);
	*ret_a = tm_net_connect("127.0.0.1", ports, 5000, -1, NULL);
	g_assert_cmpint(*ret_a, >=, 0);
	*ret_b = tm_net_accept(lfd, 5000, -1, NULL);
	g_assert_cmpint(*ret_b, >=, 0);
	close(lfd);
}

static const tm_transport_ops *backend_or_skip(const char *name)
{
	const tm_transport_ops *ops;
	g_autoptr(GError) err = NULL;
	if (tm_transport_lookup(name, &ops, NULL, &err) < 0) {
		g_test_skip(err->message);
		return NULL;
	}
	return ops;
}

/* tm_io_readable on a byte mover: what the socket holds, the end of the stream included. */
static void test_readable(gconstpointer name)
{
	const tm_transport_ops *ops = backend_or_skip(name);
	if (!ops)
		return;
	int a, b;
	tcp_pair_of(&a, &b);
	tm_io_config cfg = { .timeout_ms = 2000, .depth = 1 };
	tm_io *io = NULL;
	g_assert_cmpint(tm_io_open(b, 0, ops, &cfg, &io, NULL), ==, 0);
	g_assert_false(tm_io_readable(io));
	g_assert_cmpint(write(a, "12345678", 8), ==, 8);
	for (int i = 0; i < 100 && !tm_io_readable(io); i++)
		g_usleep(10000);
	g_assert_true(tm_io_readable(io));
	uint8_t buf[8];
	struct iovec v = { .iov_base = buf, .iov_len = 8 };
	g_assert_cmpint(tm_io_recv(io, &v, 1, 8), ==, 0);
	g_assert_false(tm_io_readable(io));
	close(a); /* the end of the stream: recv returns at once */
	for (int i = 0; i < 100 && !tm_io_readable(io); i++)
		g_usleep(10000);
	g_assert_true(tm_io_readable(io));
	g_assert_cmpint(tm_io_recv(io, &v, 1, 8), ==, -ECONNRESET);
	tm_io_free(io);
}

typedef struct late_write {
	int fd;
	unsigned delay_ms;
} late_write;

static gpointer late_write_fn(gpointer data)
{
	late_write *w = data;
	g_usleep(w->delay_ms * 1000);
	g_assert_cmpint(write(w->fd, "12345678", 8), ==, 8);
	return NULL;
}

/*
 * Timeout 0 is no limit: a receive waits 3 times the original timeout for a peer that writes
 * late. A protocol 2 data channel relies on it between rounds (issue 12's idle defect).
 */
static void test_no_timeout(gconstpointer name)
{
	const tm_transport_ops *ops = backend_or_skip(name);
	if (!ops)
		return;
	int a, b;
	tcp_pair_of(&a, &b);
	tm_io_config cfg = { .timeout_ms = 200, .depth = 1 };
	tm_io *io = NULL;
	g_assert_cmpint(tm_io_open(b, 0, ops, &cfg, &io, NULL), ==, 0);
	uint8_t buf[8];
	struct iovec v = { .iov_base = buf, .iov_len = 8 };
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_io_recv(io, &v, 1, 8), ==, -ETIMEDOUT);
	g_assert_cmpint(g_get_monotonic_time() - t0, <, 2 * G_USEC_PER_SEC);
	tm_io_set_timeout(io, 0);
	late_write w = { .fd = a, .delay_ms = 600 };
	GThread *th = g_thread_new("late", late_write_fn, &w);
	g_assert_cmpint(tm_io_recv(io, &v, 1, 8), ==, 0);
	g_thread_join(th);
	tm_io_free(io);
	close(a);
}

typedef struct net_call {
	int listen_fd; /* accept when >= 0, else connect to port */
	char port[16];
	int cancel_fd;
	int ret;
	GError *err;
	int64_t t_end;
} net_call;

static gpointer net_call_fn(gpointer data)
{
	net_call *c = data;
	if (c->listen_fd >= 0)
		c->ret = tm_net_accept(c->listen_fd, 20000, c->cancel_fd, &c->err);
	else
		c->ret = tm_net_connect("127.0.0.1", c->port, 20000, c->cancel_fd, &c->err);
	__atomic_store_n(&c->t_end, g_get_monotonic_time(), __ATOMIC_RELEASE);
	return NULL;
}

/* Runs c in a thread, checks that it is still blocked after 300 ms, cancels, expects it back
 * within a second with -ECANCELED. */
static void cancel_blocked(net_call *c)
{
	c->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	g_assert_cmpint(c->cancel_fd, >=, 0);
	GThread *th = g_thread_new("net", net_call_fn, c);
	g_usleep(300000);
	g_assert_cmpint(__atomic_load_n(&c->t_end, __ATOMIC_ACQUIRE), ==, 0);
	uint64_t one = 1;
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(write(c->cancel_fd, &one, 8), ==, 8);
	g_thread_join(th);
	g_assert_cmpint(c->t_end - t0, <, G_USEC_PER_SEC);
	g_assert_cmpint(c->ret, ==, -ECANCELED);
	g_assert_nonnull(strstr(c->err->message, "cancelled"));
	g_clear_error(&c->err);
	close(c->cancel_fd);
}

static void test_accept_cancel(void)
{
	unsigned port = 0;
	net_call c = { .listen_fd = tm_listen("127.0.0.1", "0", &port, NULL) };
	g_assert_cmpint(c.listen_fd, >=, 0);
	cancel_blocked(&c);
	close(c.listen_fd);
}

/*
 * A connect that cannot complete: the listener's accept queue is full (backlog 0, nobody
 * accepts), so Linux drops the SYN and the connect waits for its retransmissions.
 */
static void test_connect_cancel(void)
{
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	g_assert_cmpint(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), ==, 0);
	g_assert_cmpint(listen(lfd, 0), ==, 0);
	g_assert_cmpint(getsockname(lfd, (struct sockaddr *)&sa, &sl), ==, 0);
	int fill[4];
	for (int i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		(void)!connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
	}
	g_usleep(100000);
	net_call c = { .listen_fd = -1 };
	g_snprintf(c.port, sizeof(c.port), "%u", ntohs(sa.sin_port));
	cancel_blocked(&c);
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(lfd);
}

static void test_keepalive(void)
{
	int a, b, v = 0;
	socklen_t sl = sizeof(v);
	unsigned ut = 0;
	tcp_pair_of(&a, &b);
	g_assert_cmpint(tm_net_keepalive(a, 1500, 3000), ==, 0);
	g_assert_cmpint(getsockopt(a, SOL_SOCKET, SO_KEEPALIVE, &v, &sl), ==, 0);
	g_assert_cmpint(v, ==, 1);
	g_assert_cmpint(getsockopt(a, IPPROTO_TCP, TCP_KEEPIDLE, &v, &sl), ==, 0);
	g_assert_cmpint(v, ==, 2); /* rounded up to seconds */
	g_assert_cmpint(getsockopt(a, IPPROTO_TCP, TCP_KEEPINTVL, &v, &sl), ==, 0);
	g_assert_cmpint(v, ==, 2);
	g_assert_cmpint(getsockopt(a, IPPROTO_TCP, TCP_KEEPCNT, &v, &sl), ==, 0);
	g_assert_cmpint(v, ==, 4);
	sl = sizeof(ut);
	g_assert_cmpint(getsockopt(a, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, &sl), ==, 0);
	g_assert_cmpuint(ut, ==, 3000);
	/* a data channel: no user timeout */
	g_assert_cmpint(tm_net_keepalive(b, 100, 0), ==, 0);
	g_assert_cmpint(getsockopt(b, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, &sl), ==, 0);
	g_assert_cmpuint(ut, ==, 0);
	g_assert_cmpint(getsockopt(b, IPPROTO_TCP, TCP_KEEPIDLE, &v, &sl), ==, 0);
	g_assert_cmpint(v, ==, 1);

	/* Everything written is acknowledged on loopback at once: nothing unacknowledged. */
	uint32_t unacked = 99, age = 0;
	g_assert_cmpint(write(a, "x", 1), ==, 1);
	g_usleep(50000);
	g_assert_cmpint(tm_net_ack_age(a, &unacked, &age), ==, 0);
	g_assert_cmpuint(unacked, ==, 0);
	g_assert_cmpint(tm_net_ack_age(-1, &unacked, &age), ==, -EBADF);
	close(a);
	close(b);
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/io/default-is-io_uring", test_default_is_io_uring);
	g_test_add_func("/io/env-forces", test_env_forces);
	g_test_add_func("/io/env-tuning", test_env_tuning);
	g_test_add_func("/io/seccomp-forbids", test_seccomp_forbids);
	g_test_add_data_func("/io/readable/sockets", "sockets", test_readable);
	g_test_add_data_func("/io/readable/io_uring", "io_uring", test_readable);
	g_test_add_data_func("/io/no-timeout/sockets", "sockets", test_no_timeout);
	g_test_add_data_func("/io/no-timeout/io_uring", "io_uring", test_no_timeout);
	g_test_add_func("/io/accept-cancel", test_accept_cancel);
	g_test_add_func("/io/connect-cancel", test_connect_cancel);
	g_test_add_func("/io/keepalive", test_keepalive);
	return g_test_run();
}
