/* SPDX-License-Identifier: MIT */
/* The postcopy resume tests' migration through a cutting proxy (resume-pc-rig.h). */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "resume-pc-rig.h"
#include "session/resume.h"
#include "transport/transport.h"

/* ---- the destination: a receiver in postcopy and its vCPUs ---- */

static gpointer vcpu_thread(gpointer data)
{
	vcpu *v = data;
	dest *d = v->d;
	const uint8_t *dt = tm_tag_store_soft_array(d->g.tags, 0);
	const uint8_t *st = tm_tag_store_soft_array(d->src->tags, 0);
	const uint64_t gran = PAGE / TM_TAG_GRANULE;

	/* From both ends towards the middle, as a guest that is not a linear scan. */
	for (uint64_t k = 0; k < NPAGES; k++) {
		uint64_t p = k % 2 ? NPAGES - 1 - k / 2 : k / 2;
		if (p % d->stride != v->index)
			continue;
		const volatile uint8_t *page = d->g.ram[0] + p * PAGE;
		int64_t t0 = g_get_monotonic_time();
		(void)page[PAGE / 2]; /* blocks until the page is placed with its tags */
		v->max_block_us = MAX(v->max_block_us, g_get_monotonic_time() - t0);
		v->touched++;
		/* Checked from the faulting thread: data and tags were both there when it woke. */
		if (memcmp((const void *)page, d->src->ram[0] + p * PAGE, PAGE) != 0 ||
		    memcmp(dt + p * gran, st + p * gran, gran) != 0)
			v->bad++;
		g_usleep(500);
	}
	__atomic_store_n(&v->done, true, __ATOMIC_RELEASE);
	return NULL;
}

/* The vCPU state the sender put, kept to compare. */
static void keep_cpu(void *opaque, const char *name, const uint8_t *data, size_t len)
{
	dest *d = opaque;
	if (!strcmp(name, "cpu0") && len == CPU_STATE) {
		memcpy(d->cpu, data, CPU_STATE);
		d->cpu_seen = true;
	}
}

unsigned dest_timeout_ms = 20000;

static gpointer dest_thread(gpointer data)
{
	dest *d = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = dest_timeout_ms };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .uffd_user_mode_only = true };

	d->ret = tm_receiver_new(&cfg, &d->r, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_set_live(d->r, &lc, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_accept(d->r, d->listen_fd, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(d->r, d->g.layout, d->g.tags, &d->error);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(d->r, &d->error)) == 1) {
		d->ret = receiver_read_states(d->r, keep_cpu, d, &d->error);
		/* The end of device state in postcopy: the guest may run. */
		if (d->ret == 0 && tm_receiver_phase(d->r) == TM_PHASE_POSTCOPY &&
		    !__atomic_load_n(&d->running, __ATOMIC_ACQUIRE)) {
			for (unsigned i = 0; d->vcpus && i < VCPUS; i++) {
				d->v[i] = (vcpu){ .d = d, .index = i };
				d->v[i].thread = g_thread_new("vcpu", vcpu_thread, &d->v[i]);
			}
			__atomic_store_n(&d->running, true, __ATOMIC_RELEASE);
		}
	}
	return NULL;
}

/* ---- one migration through the proxy, switched to postcopy at round 0 ---- */

gpointer finish_thread(gpointer data)
{
	run *x = data;
	x->ret = tm_sender_finish(x->s, &x->error);
	__atomic_store_n(&x->finished, true, __ATOMIC_RELEASE);
	return NULL;
}

const block_spec spec[1] = { { "pc.ram", RAM, PAGE } };

/*
 * Up to the switch and beyond: every page queued, the switch at once, the background at rate
 * bytes/s, device state, finish() in its own thread. Returns once the destination runs. With
 * hold, no background page goes (the rate limit at 1 B/s from before device state, the only
 * thing that lets the background start) until the caller sets a rate: a test that arms a cut
 * some bytes into the background then finds the background still there, however long the
 * destination took to start on a loaded machine.
 */
void run_start(run *x, const tm_live_config *lc, uint64_t rate, bool vcpus, unsigned stride,
	       bool hold)
{
	if (run_open(x, lc, vcpus, stride, URG_NONE) < 0)
		g_error("connect: %s", x->error->message);
	run_switch(x, rate, hold);
}

/* One precopy round of every page at full speed, acknowledged (tm_sender_sync()). */
void run_round(run *x)
{
	g_autoptr(GError) err = NULL;
	uint64_t bm[NPAGES / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(x->s, 0, bm, 0, NPAGES, &err), ==, 0);
	if (tm_sender_sync(x->s, &err) < 0)
		g_error("round: %s", err->message);
}

/*
 * The guests, the destination, the proxy and the connected sender; with cut, the urgent
 * connection is cut before the switch: at setup (its HELLO_ACK lost), or between two precopy
 * rounds. Returns 0, or tm_sender_connect()'s failure (x->error).
 */
int run_open(run *x, const tm_live_config *lc, bool vcpus, unsigned stride, urg_cut cut)
{
	g_autoptr(GError) err = NULL;

	memset(x, 0, sizeof(*x));
	guest_init(&x->src, spec, 1, true);
	guest_fill(&x->src);
	guest_init(&x->d.g, spec, 1, true);
	x->d.src = &x->src;
	x->d.vcpus = vcpus;
	x->d.stride = stride;
	unsigned port = 0;
	x->d.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(x->d.listen_fd, >=, 0);
	x->port = g_strdup_printf("%u", port);
	x->d.thread = g_thread_new("dest", dest_thread, &x->d);
	g_autofree char *pport = proxy_start(&x->px, x->port);
	g_mutex_lock(&x->px.lock);
	x->px.exact = true; /* a cut n bytes into a connection falls there, not a read later */
	g_mutex_unlock(&x->px.lock);

	/* Small packets: many in flight, so that a cut loses some. */
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = NCH,
				 .timeout_ms = 20000, .packet_size = 64u << 10,
				 .chunk_size = 64u << 10 };
	g_assert_cmpint(tm_sender_new(x->src.layout, x->src.tags, &cfg, &x->s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(x->s, lc, &err), ==, 0);
	if (cut == URG_SETUP_ACK)
		proxy_arm_frame(&x->px, URGENT_CONN, TM_MSG_HELLO_ACK, false);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	if (cut == URG_SETUP_SEND)
		tm_setup_test_fail_ack(TM_SETUP_TEST_ACK_URGENT);
#endif
	x->ret = tm_sender_connect(x->s, "127.0.0.1", pport, &x->error);
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	tm_setup_test_fail_ack(0); /* the receiver sent its HELLO_ACKs: connect() saw them */
#endif
	if (cut == URG_SETUP_ACK) {
		/* The proxy counts a cut after closing both ends: the sender may see the close first. */
		for (unsigned ms = 0; proxy_get(&x->px, &x->px.cuts) == 0 && ms < 10000; ms += 10)
			g_usleep(10000);
		g_assert_cmpuint(proxy_get(&x->px, &x->px.cuts), ==, 1);
	}
	if (x->ret < 0 || cut == URG_NONE)
		return x->ret;
	run_round(x);
	if (cut == URG_IDLE || cut == URG_IDLE_HALF || cut == URG_IDLE_HALF_RECV) {
		g_mutex_lock(&x->px.lock);
		x->px.half = cut == URG_IDLE_HALF;
		x->px.half_recv = cut == URG_IDLE_HALF_RECV;
		g_mutex_unlock(&x->px.lock);
		proxy_arm(&x->px, URGENT_CONN, 0); /* nothing flows on it: cut at once */
		for (unsigned ms = 0; proxy_get(&x->px, &x->px.cuts) == 0 && ms < 10000; ms += 10)
			g_usleep(10000);
		g_assert_cmpuint(proxy_get(&x->px, &x->px.cuts), ==, 1);
	}
	run_round(x);
	return 0;
}

/* The final dirty log (every page) at rate bytes/s, the switch, device state (with hold, the
 * background held from before it: run_start), finish() in its own thread; returns once the
 * destination runs. */
void run_switch(run *x, uint64_t rate, bool hold)
{
	g_autoptr(GError) err = NULL;

	/* Slow from here: little goes before the switch, the background lasts. */
	g_assert_cmpint(tm_sender_set_rate_limit(x->s, rate), ==, 0);
	uint64_t bm[NPAGES / 64];
	memset(bm, 0xff, sizeof(bm));
	g_assert_cmpint(tm_sender_queue_bitmap(x->s, 0, bm, 0, NPAGES, &err), ==, 0);
	g_assert_cmpint(tm_sender_start_postcopy(x->s, &err), ==, 0);
	int64_t t0 = g_get_monotonic_time();
	if (hold)
		g_assert_cmpint(tm_sender_set_rate_limit(x->s, 1), ==, 0);
	for (unsigned i = 0; i < CPU_STATE; i++)
		x->cpu[i] = (uint8_t)rnd();
	g_assert_cmpint(tm_sender_put_state(x->s, "cpu0", x->cpu, CPU_STATE, TM_STATE_COPY, &err),
			==, 0);
	x->finisher = g_thread_new("finish", finish_thread, x);
	/* The destination may run: guest RAM is registered, device state read. */
	for (unsigned ms = 0; !__atomic_load_n(&x->d.running, __ATOMIC_ACQUIRE) && ms < 10000; ms++)
		g_usleep(1000);
	g_assert_true(__atomic_load_n(&x->d.running, __ATOMIC_ACQUIRE));
	g_test_message("the destination runs %.3f s after the switch",
		       (double)(g_get_monotonic_time() - t0) / 1e6);
}

/* Both sides ended; the vCPUs (if any) are joined, and none saw a wrong page. */
void run_join(run *x)
{
	g_thread_join(x->finisher);
	g_thread_join(x->d.thread);
	g_test_message("sender: %s; receiver: %s", x->error ? x->error->message : "ok",
		       x->d.error ? x->d.error->message : "ok");
	for (unsigned i = 0; x->d.vcpus && i < VCPUS; i++) {
		g_thread_join(x->d.v[i].thread);
		g_test_message("vCPU %u: %" G_GUINT64_FORMAT " pages, the longest wait %.1f ms", i,
			       x->d.v[i].touched, (double)x->d.v[i].max_block_us / 1000);
		g_assert_cmpuint(x->d.v[i].bad, ==, 0);
	}
}

void run_free(run *x)
{
	tm_sender_free(x->s);
	tm_receiver_free(x->d.r);
	close(x->d.listen_fd);
	proxy_stop(&x->px);
	g_free(x->port);
	g_clear_error(&x->error);
	g_clear_error(&x->d.error);
	guest_fini(&x->src);
	guest_fini(&x->d.g);
}

/*
 * What a session that stopped serving says: both phases, and both errors once the sender's
 * finish() and the receiver's wait() returned (given 2 s: a paused session returns at once).
 */
char *run_state(run *x)
{
	for (unsigned ms = 0; !__atomic_load_n(&x->finished, __ATOMIC_ACQUIRE) && ms < 2000;
	     ms += 10)
		g_usleep(10000);
	bool fin = __atomic_load_n(&x->finished, __ATOMIC_ACQUIRE);
	return g_strdup_printf("sender phase %d, %s; receiver phase %d, %s", tm_sender_phase(x->s),
			       !fin ? "running" : x->error ? x->error->message : "ok",
			       tm_receiver_phase(x->d.r),
			       x->d.error ? x->d.error->message : "running");
}

/*
 * The background may end. With every page touched by the vCPUs, every page may have come
 * through requests already, and then the session ended: -EBADFD is no failure here (run_join()
 * and the asserts after it say whether it completed).
 */
void release_background(run *x)
{
	int r = tm_sender_set_rate_limit(x->s, 0);

	g_assert_true(r == 0 || r == -EBADFD);
	if (r < 0)
		g_test_message("the session ended before the background was released");
}

/* Completed bit-exact, one reconnect on each side, the vCPUs touched what they should; the
 * proxy cut `cuts` times. */
void assert_resumed(run *x, unsigned cuts)
{
	g_assert_cmpint(x->ret, ==, 0);
	g_assert_cmpint(x->d.ret, ==, 0);
	assert_same(&x->src, &x->d.g);
	g_assert_true(x->d.cpu_seen);
	g_assert_true(memcmp(x->d.cpu, x->cpu, CPU_STATE) == 0);
	g_assert_cmpint(tm_sender_phase(x->s), ==, TM_PHASE_COMPLETE);
	g_assert_cmpint(tm_receiver_phase(x->d.r), ==, TM_PHASE_COMPLETE);
	g_mutex_lock(&x->px.lock);
	g_test_message("forwarded to the receiver: data 0 %" G_GUINT64_FORMAT ", control %"
		       G_GUINT64_FORMAT ", data 1 %" G_GUINT64_FORMAT ", data 2 %" G_GUINT64_FORMAT
		       ", urgent %" G_GUINT64_FORMAT " bytes", x->px.fwd[0], x->px.fwd[1],
		       x->px.fwd[2], x->px.fwd[3], x->px.fwd[4]);
	g_mutex_unlock(&x->px.lock);
	g_assert_cmpuint(proxy_get(&x->px, &x->px.cuts), ==, cuts);
	uint64_t touched = 0;
	for (unsigned i = 0; i < VCPUS; i++)
		touched += x->d.v[i].touched;
	g_assert_cmpuint(touched, ==, NPAGES / x->d.stride * VCPUS);
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_sender_get_live_stats(x->s, &ss), ==, 0);
	g_assert_cmpint(tm_receiver_get_live_stats(x->d.r, &rs), ==, 0);
	g_test_message("reconnects: sender %" G_GUINT64_FORMAT ", receiver %" G_GUINT64_FORMAT
		       "; re-sent %" G_GUINT64_FORMAT " bytes; requests: receiver %" G_GUINT64_FORMAT
		       ", sender %" G_GUINT64_FORMAT "; background: receiver %" G_GUINT64_FORMAT
		       ", sender %" G_GUINT64_FORMAT "; duplicates %" G_GUINT64_FORMAT,
		       (guint64)ss.reconnects, (guint64)rs.reconnects, (guint64)ss.resent_bytes,
		       (guint64)rs.requests, (guint64)ss.requests, (guint64)rs.background_pages,
		       (guint64)ss.background_pages, (guint64)rs.duplicate_pages);
	g_assert_cmpuint(ss.reconnects, ==, 1);
	g_assert_cmpuint(rs.reconnects, ==, 1);
	g_assert_cmpuint(rs.resume_refused, ==, 0);
	g_assert_cmpuint(rs.faults, >, 0);
	/* Every missing page placed exactly once, whichever copy came first; a lost background
	 * page is counted by the sender only when it goes again. */
	g_assert_cmpuint(rs.background_pages, ==, ss.background_pages);
	g_assert_cmpuint(rs.urgent_pages + rs.background_pages - rs.duplicate_pages, ==,
			 rs.postcopy_pages);
}

/* Waits (bounded) until every vCPU touched every page of its share. */
void await_vcpus(run *x, const char *after)
{
	bool done = false;
	for (unsigned ms = 0; !done && ms < 20000; ms += 10) {
		done = true;
		for (unsigned i = 0; i < VCPUS; i++)
			done &= __atomic_load_n(&x->d.v[i].done, __ATOMIC_ACQUIRE);
		if (!done)
			g_usleep(10000);
	}
	if (!done)
		g_error("the vCPUs are still blocked 20 s after %s (%s)", after, run_state(x));
}

uint64_t reconnects(run *x, bool sender)
{
	tm_live_stats st = { .size = sizeof(st) };
	if (sender)
		g_assert_cmpint(tm_sender_get_live_stats(x->s, &st), ==, 0);
	else
		g_assert_cmpint(tm_receiver_get_live_stats(x->d.r, &st), ==, 0);
	return st.reconnects;
}

/* The session completes (bounded: a hang is a failure, not a timeout of the suite). */
void await_complete(run *x)
{
	for (unsigned ms = 0; !__atomic_load_n(&x->finished, __ATOMIC_ACQUIRE) && ms < 20000;
	     ms += 10)
		g_usleep(10000);
	if (!__atomic_load_n(&x->finished, __ATOMIC_ACQUIRE))
		g_error("the session hangs 20 s after the urgent cut at its end (receiver: %s)",
			x->d.error ? x->d.error->message : "running");
	run_join(x);
	g_assert_cmpint(x->ret, ==, 0);
	g_assert_cmpint(x->d.ret, ==, 0);
	assert_same(&x->src, &x->d.g);
	g_assert_cmpint(tm_sender_phase(x->s), ==, TM_PHASE_COMPLETE);
	g_assert_cmpint(tm_receiver_phase(x->d.r), ==, TM_PHASE_COMPLETE);
	g_assert_cmpuint(proxy_get(&x->px, &x->px.cuts), ==, 1);
}

