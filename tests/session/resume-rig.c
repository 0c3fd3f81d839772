/* SPDX-License-Identifier: MIT */
/* The resume tests' migration through a cutting proxy (resume-rig.h). */
#include "resume-rig.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/transport.h"

unsigned rig_recv_timeout_ms = 20000;
unsigned rig_send_timeout_ms = 20000;
unsigned rig_channels = 3;
bool rig_attach;

static const block_spec spec[] = { { "pc.ram", RIG_RAM, 4096 } };

/* Each section the receiver reads is the sender's device state. */
static void check_section(void *opaque, const char *name, const uint8_t *data, size_t len)
{
	rpeer *p = opaque;
	(void)name;
	p->states++;
	g_assert_nonnull(p->state);
	g_assert_cmpuint(len, ==, RIG_STATE_LEN);
	g_assert_true(memcmp(data, p->state, RIG_STATE_LEN) == 0);
}

int rig_accept_within(int listen_fd, unsigned timeout_ms)
{
	struct pollfd pf = { .fd = listen_fd, .events = POLLIN };
	int n = poll(&pf, 1, (int)timeout_ms);
	if (n <= 0)
		return n < 0 ? -errno : -ETIMEDOUT;
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* The destination VMM's reconnect hook: the next connection on its listener. */
static int receiver_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	rpeer *p = opaque;
	g_assert_cmpuint(connection, ==, TM_RECONNECT_ANY);
	int fd = rig_accept_within(p->listen_fd, timeout_ms);
	if (fd >= 0)
		__atomic_add_fetch(&p->hooked, 1, __ATOMIC_RELAXED);
	return fd;
}

/* Attach mode: the VMM accepts the session's sockets itself (within the receiver's timeout),
 * then hands them over. */
static int rpeer_attach(rpeer *p)
{
	int fds[TM_MAX_CHANNELS + 1];
	for (unsigned i = 0; i < RIG_CONNECTIONS; i++) {
		fds[i] = rig_accept_within(p->listen_fd, rig_recv_timeout_ms);
		if (fds[i] < 0) {
			g_set_error(&p->error, TM_ERROR, -fds[i],
				    "the VMM accepted only %u of %u connections", i, RIG_CONNECTIONS);
			for (unsigned j = 0; j < i; j++)
				close(fds[j]);
			return fds[i];
		}
	}
	return tm_receiver_attach(p->r, fds, RIG_CONNECTIONS, &p->error);
}

static gpointer rpeer_thread(gpointer data)
{
	rpeer *p = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = rig_recv_timeout_ms };

	if (p->attach) {
		p->live.reconnect = receiver_hook;
		p->live.reconnect_opaque = p;
	}
	p->ret = tm_receiver_new(&cfg, &p->r, &p->error);
	if (p->ret >= 0)
		p->ret = tm_receiver_set_live(p->r, &p->live, &p->error);
	if (p->ret >= 0)
		p->ret = p->attach ? rpeer_attach(p)
				   : tm_receiver_accept(p->r, p->listen_fd, &p->error);
	int64_t t0 = g_get_monotonic_time();
	if (p->ret >= 0)
		p->ret = tm_receiver_start(p->r, p->g->layout, p->g->tags, &p->error);
	while (p->ret >= 0) {
		p->ret = tm_receiver_wait(p->r, &p->error);
		if (p->ret != 1)
			break;
		if (p->state_delay_ms)
			g_usleep((gulong)p->state_delay_ms * 1000);
		p->ret = receiver_read_states(p->r, check_section, p, &p->error);
	}
	p->secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	return NULL;
}

char *rpeer_start(rpeer *p, guest *g, uint32_t resume_deadline_ms)
{
	unsigned port = 0;
	memset(p, 0, sizeof(*p));
	p->g = g;
	p->attach = rig_attach;
	p->live = (tm_live_config){ .size = sizeof(p->live),
				    .resume_deadline_ms = resume_deadline_ms };
	p->listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(p->listen_fd, >=, 0);
	p->thread = g_thread_new("receiver", rpeer_thread, p);
	return g_strdup_printf("%u", port);
}

void rpeer_join(rpeer *p)
{
	g_thread_join(p->thread);
	close(p->listen_fd);
}

void rpeer_free(rpeer *p)
{
	tm_receiver_free(p->r);
	g_clear_error(&p->error);
}

/* The source VMM's reconnect hook: a new connection through the proxy. */
static int sender_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	run *t = opaque;
	(void)connection;
	int fd = tm_net_connect("127.0.0.1", t->pport, timeout_ms, -1, NULL);
	if (fd >= 0)
		__atomic_add_fetch(&t->dialled, 1, __ATOMIC_RELAXED);
	return fd;
}

void run_start(run *t, const tm_live_config *lc, uint32_t recv_deadline_ms)
{
	g_autoptr(GError) err = NULL;
	tm_live_config alc = { .size = sizeof(alc) };

	memset(t, 0, sizeof(*t));
	guest_init(&t->src, spec, 1, true);
	guest_init(&t->dst, spec, 1, true);
	guest_fill(&t->src);
	t->port = rpeer_start(&t->p, &t->dst, recv_deadline_ms);
	t->pport = proxy_start(&t->px, t->port);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .tls_hostname = rig_attach ? "127.0.0.1" : NULL,
				 .channels = rig_channels, .timeout_ms = rig_send_timeout_ms,
				 .packet_size = 64u << 10 };
	g_assert_cmpint(tm_sender_new(t->src.layout, t->src.tags, &cfg, &t->s, &err), ==, 0);
	if (rig_attach) {
		if (lc)
			alc = *lc;
		alc.reconnect = sender_hook;
		alc.reconnect_opaque = t;
		lc = &alc;
	}
	if (lc)
		g_assert_cmpint(tm_sender_set_live(t->s, lc, &err), ==, 0);
}

/*
 * Attach mode: the source VMM dials the session's sockets through the proxy in the sender's
 * setup order (data 0, control, data 1..: the proxy's indices are tm_sender_connect()'s), one
 * at a time, each once the proxy took the one before.
 */
static int run_attach(run *t)
{
	int fds[TM_MAX_CHANNELS + 1];
	for (unsigned k = 0; k < RIG_CONNECTIONS; k++) {
		unsigned idx = k == 0 ? 0 : k == 1 ? rig_channels : k - 1;
		unsigned before = proxy_get(&t->px, &t->px.accepted);
		fds[idx] = tm_net_connect("127.0.0.1", t->pport, 5000, -1, &t->err);
		g_assert_cmpint(fds[idx], >=, 0);
		for (int w = 0; w < 5000 && proxy_get(&t->px, &t->px.accepted) == before; w++)
			g_usleep(1000);
	}
	return tm_sender_attach(t->s, fds, RIG_CONNECTIONS, &t->err);
}

int run_connect(run *t)
{
	if (t->p.attach)
		return run_attach(t);
	return tm_sender_connect(t->s, "127.0.0.1", t->pport, &t->err);
}

int run_queue_all(run *t)
{
	uint64_t np = RIG_RAM / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	return tm_sender_queue_bitmap(t->s, 0, bm, 0, np, &t->err);
}

void run_fill_state(run *t)
{
	t->state = g_malloc(RIG_STATE_LEN);
	for (size_t i = 0; i < RIG_STATE_LEN / 8; i++)
		((uint64_t *)t->state)[i] = rnd();
	t->p.state = t->state;
}

int run_first_round(run *t)
{
	int r = run_connect(t);
	if (r == 0)
		r = run_queue_all(t);
	if (r == 0)
		r = tm_sender_sync(t->s, &t->err);
	return r;
}

int run_stop_and_finish(run *t)
{
	int r = tm_sender_guest_stopped(t->s, &t->err);
	if (r == 0)
		r = tm_sender_put_state(t->s, "dev", t->state, RIG_STATE_LEN, 0, &t->err);
	if (r == 0)
		r = tm_sender_finish(t->s, &t->err);
	return r;
}

int run_migrate(run *t)
{
	int r = run_first_round(t);
	return r == 0 ? run_stop_and_finish(t) : r;
}

void run_end(run *t)
{
	tm_sender_free(t->s);
	rpeer_free(&t->p);
	proxy_stop(&t->px);
	guest_fini(&t->src);
	guest_fini(&t->dst);
	g_free(t->port);
	g_free(t->pport);
	g_free(t->state);
	g_clear_error(&t->err);
}

void run_assert_complete(run *t, tm_live_stats *ss, tm_live_stats *rs)
{
	if (t->r != 0)
		g_test_message("sender: %s", t->err->message);
	g_assert_cmpint(t->r, ==, 0);
	if (t->p.ret != 0)
		g_test_message("receiver: %s", t->p.error->message);
	g_assert_cmpint(t->p.ret, ==, 0);
	assert_same(&t->src, &t->dst);
	*ss = (tm_live_stats){ .size = sizeof(*ss) };
	*rs = (tm_live_stats){ .size = sizeof(*rs) };
	g_assert_cmpint(tm_sender_get_live_stats(t->s, ss), ==, 0);
	g_assert_cmpint(tm_receiver_get_live_stats(t->p.r, rs), ==, 0);
	g_test_message("reconnects: sender %" G_GUINT64_FORMAT ", receiver %" G_GUINT64_FORMAT
		       " (refused %" G_GUINT64_FORMAT ")",
		       (guint64)ss->reconnects, (guint64)rs->reconnects, (guint64)rs->resume_refused);
	g_assert_cmpuint(ss->phase, ==, TM_PHASE_COMPLETE);
	tm_stats st;
	tm_receiver_get_stats(t->p.r, &st);
	g_assert_cmpuint(st.pages, ==, RIG_RAM / 4096);
}
