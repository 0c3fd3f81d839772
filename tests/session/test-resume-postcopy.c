/* SPDX-License-Identifier: MIT */
/*
 * Resume after the switch to postcopy (docs/wire-format.md, "Resume in postcopy"): a proxy
 * between sender and receiver cuts data channel 0, data channel 2 or the urgent connection
 * while the destination runs: two "vCPU" threads touch pages, each touch of a missing page
 * blocks in its userfault until the page is placed, and the thread then checks the page's data
 * and tags against the source (which never changes). The migration completes bit-exact, both
 * sides count the reconnect, and no vCPU ever saw a wrong page. The urgent cut comes while
 * requests are outstanding (plaintext: the proxy drops a PAGE_REQ and cuts; TLS: it cuts in the
 * middle of an URGENT) with the background held back, so the pages only come because the
 * receiver asks again. Without resume, or when the reconnect cannot come within the deadline,
 * the session pauses (TM_PHASE_POSTCOPY_PAUSED) naming the cause, as before resume. The urgent
 * connection's end is cut too (REQ_END lost, END_ACK lost, and REQ_END lost with no reconnect
 * getting through): the session completes without a hang. And the urgent connection cut before
 * the switch (its HELLO_ACK lost at setup, or idle between precopy rounds): reconnected at the
 * switch, or, without resume, refused there with a clear error (the session ends in precopy);
 * and reconnected with the destination's urgent thread starting late, its first requests
 * failing on the old connection (test hook): asked again on the new one.
 *
 * Every test runs for each backend pair, plaintext and TLS (session-fixture.c); without
 * userfaultfd it skips with the reason.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "codec/codec.h"
#include "cut-proxy.h"
#include "session-fixture.h"
#include "session/postcopy-recv.h"
#include "session/resume.h"
#include "transport/transport.h"

#define NCH 3u
#define RAM (4u << 20)
#define PAGE 4096u
#define NPAGES (RAM / PAGE)
#define VCPUS 2u
#define CPU_STATE 4096u
#define URGENT_CONN (NCH + 1) /* the proxy's accept index: data 0, control, data 1.., urgent */

/* ---- the destination: a receiver in postcopy and its vCPUs ---- */

typedef struct dest dest;

typedef struct vcpu {
	dest *d;
	unsigned index;
	GThread *thread;
	uint64_t touched, bad;
	int64_t max_block_us; /* the longest a touch waited for its page */
	bool done;            /* atomic */
} vcpu;

struct dest {
	guest g;
	guest *src;
	int listen_fd;
	tm_receiver *r;
	GThread *thread;
	int ret;
	GError *error;
	bool vcpus;          /* start vCPUs once the end of device state is reached */
	unsigned stride;     /* a vCPU touches the pages p % stride == its index */
	bool running;        /* atomic: the guest runs (its vCPUs if vcpus) */
	uint8_t cpu[CPU_STATE];
	bool cpu_seen;
	vcpu v[VCPUS];
};

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

/* The destination's timeout_ms (a test of a silent path lowers it). */
static unsigned dest_timeout_ms = 20000;

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

typedef struct run {
	guest src;
	dest d;
	cut_proxy px;
	tm_sender *s;
	GThread *finisher;
	int ret;              /* tm_sender_finish() */
	GError *error;
	uint8_t cpu[CPU_STATE];
	char *port;           /* the receiver's (the proxy connects there) */
	bool finished;        /* atomic: tm_sender_finish() returned */
} run;

static gpointer finish_thread(gpointer data)
{
	run *x = data;
	x->ret = tm_sender_finish(x->s, &x->error);
	__atomic_store_n(&x->finished, true, __ATOMIC_RELEASE);
	return NULL;
}

static const block_spec spec[] = { { "pc.ram", RAM, PAGE } };

/* Where the urgent connection is cut before the switch (run_open). */
typedef enum {
	URG_NONE,
	URG_SETUP_ACK, /* its HELLO_ACK is lost at setup (plaintext: found by its frame header) */
	URG_IDLE,      /* while idle in precopy, between two rounds */
	URG_IDLE_HALF, /* ... only the sender's side: the receiver's stays open and silent */
	URG_IDLE_HALF_RECV, /* ... only the receiver's side: the sender's stays open and silent */
	URG_SETUP_SEND, /* the receiver's send of its HELLO_ACK fails (test hook: TLS too) */
} urg_cut;

static int run_open(run *x, const tm_live_config *lc, bool vcpus, unsigned stride,
		    urg_cut cut);
static void run_switch(run *x, uint64_t rate, bool hold);

/*
 * Up to the switch and beyond: every page queued, the switch at once, the background at rate
 * bytes/s, device state, finish() in its own thread. Returns once the destination runs. With
 * hold, no background page goes (the rate limit at 1 B/s from before device state, the only
 * thing that lets the background start) until the caller sets a rate: a test that arms a cut
 * some bytes into the background then finds the background still there, however long the
 * destination took to start on a loaded machine.
 */
static void run_start(run *x, const tm_live_config *lc, uint64_t rate, bool vcpus,
		      unsigned stride, bool hold)
{
	if (run_open(x, lc, vcpus, stride, URG_NONE) < 0)
		g_error("connect: %s", x->error->message);
	run_switch(x, rate, hold);
}

/* One precopy round of every page at full speed, acknowledged (tm_sender_sync()). */
static void run_round(run *x)
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
static int run_open(run *x, const tm_live_config *lc, bool vcpus, unsigned stride, urg_cut cut)
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
static void run_switch(run *x, uint64_t rate, bool hold)
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
static void run_join(run *x)
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

static void run_free(run *x)
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
static char *run_state(run *x)
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
static void release_background(run *x)
{
	int r = tm_sender_set_rate_limit(x->s, 0);

	g_assert_true(r == 0 || r == -EBADFD);
	if (r < 0)
		g_test_message("the session ended before the background was released");
}

/* Completed bit-exact, one reconnect on each side, the vCPUs touched what they should; the
 * proxy cut `cuts` times. */
static void assert_resumed(run *x, unsigned cuts)
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

/*
 * Data channel ch is cut 32 KiB into the background, the vCPUs touching half the pages: the
 * other half only the background brings, so a lost background page that is never sent again
 * leaves the migration incomplete.
 */
static void cut_data(unsigned ch)
{
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	run_start(&x, &lc, 1u << 20, true, 2 * VCPUS, true);
	proxy_arm(&x.px, ch == 0 ? 0 : (int)ch + 1, 32u << 10);
	g_assert_cmpint(tm_sender_set_rate_limit(x.s, 1u << 20), ==, 0);
	run_join(&x);
	if (proxy_get(&x.px, &x.px.cuts) == 0 && x.ret == 0 && x.d.ret == 0) {
		/* Seen under load: the vCPUs fetched every page over the urgent connection
		 * before the channel's background went 32 KiB further. */
		assert_same(&x.src, &x.d.g);
		g_test_skip("the session completed before the cut: the vCPUs fetched every page "
			    "before the channel's background reached it");
		run_free(&x);
		return;
	}
	assert_resumed(&x, 1);
	run_free(&x);
}

static void test_cut_data0(void)
{
	cut_data(0);
}

static void test_cut_data2(void)
{
	cut_data(2);
}

/*
 * The urgent connection is cut while requests are outstanding (plaintext: instead of passing on
 * a PAGE_REQ; TLS: in the middle of an URGENT). Once the destination runs the background is
 * held back (a debt of hours) until every vCPU touched every page: a page it lacks comes
 * through a request, and the ones outstanding at the cut only because the receiver asks again
 * on the new connection.
 */
/* How cut_urgent() cuts: both ends closed, one of them kept open and silent, or both kept
 * (a frozen path: neither end ever sees a break). */
enum { CUT_BOTH, CUT_HALF, CUT_HALF_RECV, CUT_FREEZE };

static void cut_urgent(int how)
{
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	/* Frozen: only the destination's silence rule (timeout_ms) can find it. */
	dest_timeout_ms = how == CUT_FREEZE ? 2000 : 20000;
	/* The background held from before device state: every page the vCPUs lack comes
	 * through a request, however long the destination took to start. */
	run_start(&x, &lc, 256u << 10, true, VCPUS, true);
	dest_timeout_ms = 20000;
	g_mutex_lock(&x.px.lock);
	x.px.half = how == CUT_HALF || how == CUT_FREEZE;
	x.px.half_recv = how == CUT_HALF_RECV || how == CUT_FREEZE;
	g_mutex_unlock(&x.px.lock);
	if (tls_dir)
		proxy_arm(&x.px, URGENT_CONN, 40u << 10);
	else
		proxy_arm_frame(&x.px, URGENT_CONN, TM_MSG_PAGE_REQ, false);
	bool done = false;
	for (unsigned ms = 0; !done && ms < 20000; ms += 10) {
		done = true;
		for (unsigned i = 0; i < VCPUS; i++)
			done &= __atomic_load_n(&x.d.v[i].done, __ATOMIC_ACQUIRE);
		if (!done)
			g_usleep(10000);
	}
	if (!done)
		g_error("the vCPUs are still blocked 20 s after the urgent cut (sender: %s; "
			"receiver: %s)", x.error ? x.error->message : "running",
			x.d.error ? x.d.error->message : "running");
	release_background(&x);
	run_join(&x);
	assert_resumed(&x, 1);
	run_free(&x);
}

static void test_cut_urgent(void)
{
	cut_urgent(CUT_BOTH);
}

/* The sender's end closed, the destination's open and silent: the sender reconnects. */
static void test_cut_urgent_half(void)
{
	cut_urgent(CUT_HALF);
}

/* The destination's end closed, the sender's open and silent: the sender sees nothing; the
 * destination's URGENT_LOST on control tells it. */
static void test_cut_urgent_half_recv(void)
{
	cut_urgent(CUT_HALF_RECV);
}

/* Both ends open and silent: the destination's requests go unanswered for its timeout_ms
 * (2 s here); it takes that as a break and says URGENT_LOST. */
static void test_cut_urgent_freeze(void)
{
	cut_urgent(CUT_FREEZE);
}

/* Waits (bounded) until every vCPU touched every page of its share. */
static void await_vcpus(run *x, const char *after)
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

static uint64_t reconnects(run *x, bool sender)
{
	tm_live_stats st = { .size = sizeof(st) };
	if (sender)
		g_assert_cmpint(tm_sender_get_live_stats(x->s, &st), ==, 0);
	else
		g_assert_cmpint(tm_receiver_get_live_stats(x->d.r, &st), ==, 0);
	return st.reconnects;
}

/* The session completes (bounded: a hang is a failure, not a timeout of the suite). */
static void await_complete(run *x)
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

/*
 * The urgent connection is cut at its end, REQ_END / END_ACK (docs/wire-format.md, "Resume in
 * postcopy"): the vCPUs request every page (the background held back), so the receiver sends
 * REQ_END once the last one is placed, and the proxy cuts
 *  - end_ack: instead of passing on the sender's END_ACK: the sender is done with the
 *    connection and never comes back, so the receiver must take the break as the end;
 *  - req_end: instead of passing on REQ_END: the sender reconnects and the receiver, done
 *    already, answers it with REQ_END at once; with refuse, no reconnect gets through and the
 *    sender's urgent connection ends with control's END_ACK, long before the resume deadline.
 * Plaintext only: the proxy finds the messages by their frame headers.
 */
static void cut_end_how(bool end_ack, bool refuse, int how)
{
	bool half = how == CUT_HALF, half_recv = how == CUT_HALF_RECV;

	if (!uffd_usable())
		return;
	if (tls_dir) {
		g_test_skip("the proxy finds REQ_END / END_ACK by their plaintext frame headers");
		return;
	}
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true,
			      .resume_deadline_ms = refuse ? 60000 : 0 };
	/* Half: only the destination's silence rule (timeout_ms) ends its wait for END_ACK. */
	dest_timeout_ms = half ? 2000 : 20000;
	run_start(&x, &lc, 256u << 10, true, VCPUS, true); /* held, as test_cut_urgent */
	dest_timeout_ms = 20000;
	g_mutex_lock(&x.px.lock);
	x.px.half = half;
	x.px.half_recv = half_recv;
	x.px.cut_conn = URGENT_CONN;
	if (end_ack)
		x.px.cut_reply_to = TM_MSG_REQ_END;
	else
		x.px.cut_before = TM_MSG_REQ_END;
	x.px.refuse_after = refuse;
	g_mutex_unlock(&x.px.lock);
	await_vcpus(&x, "the switch");
	for (unsigned ms = 0; proxy_get(&x.px, &x.px.cuts) == 0 && ms < 10000; ms += 10)
		g_usleep(10000);
	g_assert_cmpuint(proxy_get(&x.px, &x.px.cuts), ==, 1);
	/* REQ_END lost where only the destination's end broke: it takes the break as the end
	 * (REQ_END went), the sender sees nothing and no reconnect comes; its wait for REQ_END
	 * ends TM_URGENT_END_GRACE_MS after control's END_ACK. */
	bool reconnect = !end_ack && !refuse && !half_recv;
	if (reconnect) {
		/* The background is still held: only the urgent reconnect can end the sender's
		 * urgent connection now, and both count it. */
		for (unsigned ms = 0; (reconnects(&x, true) == 0 || reconnects(&x, false) == 0) &&
		     ms < 10000; ms += 10)
			g_usleep(10000);
		g_assert_cmpuint(reconnects(&x, true), ==, 1);
		g_assert_cmpuint(reconnects(&x, false), ==, 1);
	}
	int64_t t0 = g_get_monotonic_time();
	release_background(&x);
	await_complete(&x);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_test_message("completed %.2f s after the background was released", secs);
	g_assert_cmpuint(reconnects(&x, true), ==, reconnect);
	g_assert_cmpuint(reconnects(&x, false), ==, reconnect);
	if (refuse) {
		/* Every page is present once REQ_END goes, so control's END_ACK may come before the
		 * sender's return thread tried a reconnect at all (a starved thread under load):
		 * what must hold is that no attempt waits for the resume deadline. */
		g_test_message("reconnects refused by the proxy: %u",
			       proxy_get(&x.px, &x.px.refused));
		g_assert_cmpfloat(secs, <, 20.0); /* not the 60 s resume deadline */
	} else if (end_ack) {
		g_assert_cmpuint(proxy_get(&x.px, &x.px.accepted), ==, NCH + 2);
	}
	run_free(&x);
}

static void cut_end(bool end_ack, bool refuse)
{
	cut_end_how(end_ack, refuse, CUT_BOTH);
}

static void test_end_ack_lost(void)
{
	cut_end(true, false);
}

/* END_ACK lost on a path whose destination end stays open and silent: no break ever comes
 * there; its silence rule (timeout_ms, 2 s here) ends the connection after REQ_END. */
static void test_end_ack_lost_half(void)
{
	cut_end_how(true, false, CUT_HALF);
}

/* REQ_END lost on a path whose sender end stays open and silent: the destination takes the
 * break after REQ_END as the end; the sender, which sees nothing, stops waiting for REQ_END
 * once control ended (TM_URGENT_END_GRACE_MS later). */
static void test_req_end_lost_half_recv(void)
{
	cut_end_how(false, false, CUT_HALF_RECV);
}

static void test_req_end_lost(void)
{
	cut_end(false, false);
}

static void test_req_end_lost_refused(void)
{
	cut_end(false, true);
}

/*
 * The urgent connection breaks before the switch (docs/wire-format.md, "Resume in postcopy":
 * "An urgent connection that breaks before the switch"): its HELLO_ACK is lost at setup
 * (postcopy accepted; plaintext: the proxy finds it by its frame header), or it is cut while
 * idle between two precopy rounds. Neither side fails; the sender reconnects it at the switch.
 * The background is then held back, so every page the vCPUs touch comes through a request on
 * the new connection, and both sides count that one reconnect.
 */
static void cut_before_switch(urg_cut cut)
{
	if (!uffd_usable())
		return;
	if (cut == URG_SETUP_ACK && tls_dir) {
		g_test_skip("the proxy finds the HELLO_ACK by its plaintext frame header");
		return;
	}
#if !(defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS)
	if (cut == URG_SETUP_SEND) {
		g_test_skip("needs -Dtest_hooks=true (a HELLO_ACK send that fails)");
		return;
	}
#endif
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	if (run_open(&x, &lc, true, VCPUS, cut) < 0)
		g_error("connect: %s", x.error->message);
	/* The background held from before device state (as test_cut_urgent, but the session
	 * cannot complete before the hold): every page the vCPUs touch comes through a request
	 * on the reconnected connection. */
	run_switch(&x, 256u << 10, true);
	await_vcpus(&x, "the switch (the urgent connection was cut before it)");
	release_background(&x);
	run_join(&x);
	tm_live_stats rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_receiver_get_live_stats(x.d.r, &rs), ==, 0);
	if (rs.postcopy_pages == 0 && x.ret == 0 && x.d.ret == 0) {
		/* Seen about once in 30 runs (also before the half cuts existed): every page of the
		 * final round had arrived before the switch, so nothing was missing and nothing was
		 * asked on the reconnected connection. Not understood yet (issue 14's note). */
		g_test_skip("no page was missing at the switch: nothing to ask on the urgent "
			    "connection");
		run_free(&x);
		return;
	}
	assert_resumed(&x, cut == URG_SETUP_SEND ? 0 : 1); /* the hook cuts, not the proxy */
	run_free(&x);
}

/* The receiver's send of the urgent HELLO_ACK fails (postcopy accepted): it goes on. */
static void test_urgent_ack_send_fails(void)
{
	cut_before_switch(URG_SETUP_SEND);
}

static void test_urgent_setup_ack_lost(void)
{
	cut_before_switch(URG_SETUP_ACK);
}

static void test_urgent_idle_cut(void)
{
	cut_before_switch(URG_IDLE);
}

/*
 * Cut on the receiver's side only (the sender's end stays open and silent): the sender never
 * sees the break; the destination's URGENT_LOST on control tells it, and it reconnects. Cut on
 * the sender's side only, it sees the break and reconnects at the switch as after any.
 */
static void test_urgent_idle_half_recv(void)
{
	cut_before_switch(URG_IDLE_HALF_RECV);
}

static void test_urgent_idle_half(void)
{
	cut_before_switch(URG_IDLE_HALF);
}

/*
 * The same cut with the destination's urgent thread starting late, as under load: the sender's
 * reconnect came and the vCPUs faulted before it runs, so its first PAGE_REQs go to the old
 * connection, which that reconnect shut down. The send fails; those faults must be asked again
 * on the new connection (a vCPU faults once: a fault dropped there blocks it for good).
 */
static void test_urgent_idle_cut_late(void)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	tm_pc_test_urgent_late(true);
	cut_before_switch(URG_IDLE);
	tm_pc_test_urgent_late(false);
#else
	g_test_skip("needs -Dtest_hooks=true (an urgent thread that starts late)");
#endif
}

/*
 * Resume off (no_resume on the sender): the same cuts end with a clear error naming the urgent
 * connection, without a hang. At setup tm_sender_connect() fails and the receiver ends too;
 * while idle in precopy tm_sender_start_postcopy() refuses the switch (-ENOTCONN), and the
 * session, untouched, still ends in precopy, bit-exact.
 */
static void test_urgent_setup_ack_lost_off(void)
{
	if (!uffd_usable())
		return;
	if (tls_dir) {
		g_test_skip("the proxy finds the HELLO_ACK by its plaintext frame header");
		return;
	}
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .no_resume = true };
	g_assert_cmpint(run_open(&x, &lc, false, VCPUS, URG_SETUP_ACK), <, 0);
	g_test_message("sender: %s", x.error->message);
	g_assert_true(g_str_has_prefix(x.error->message, "handshake: urgent: "));
	g_assert_nonnull(strstr(x.error->message, "resume is off (no_resume)"));
	g_thread_join(x.d.thread); /* its control connection closed: it ends */
	g_test_message("receiver: %s", x.d.error ? x.d.error->message : "ok");
	g_assert_cmpint(x.d.ret, <, 0);
	run_free(&x);
}

/*
 * The urgent connection cut while idle in precopy, and the session ends in precopy: without
 * resume tm_sender_start_postcopy() refused the switch first; with resume nothing asks for the
 * switch. Either way nothing reconnects the urgent connection, and both sides take its break
 * as its end (REQ_END(0) meets a closed connection): bit-exact, no reconnect counted. Cut on
 * one side only (URG_IDLE_HALF*), the other side's end of the connection stays open and
 * silent, and neither REQ_END(0) nor its END_ACK ever comes: each side waits for it a bounded
 * time (TM_URGENT_END_GRACE_MS), and control's END_ACK never waits for it at all.
 */
static void idle_cut_precopy(bool no_resume, urg_cut cut)
{
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .no_resume = no_resume };
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(run_open(&x, &lc, false, VCPUS, cut), ==, 0);
	if (no_resume) {
		g_assert_cmpint(tm_sender_start_postcopy(x.s, &err), ==, -ENOTCONN);
		g_test_message("tm_sender_start_postcopy(): %s", err->message);
		g_assert_nonnull(strstr(err->message, "the urgent connection broke before the switch"));
		g_assert_nonnull(strstr(err->message, "resume is off (no_resume)"));
		g_assert_cmpint(tm_sender_phase(x.s), ==, TM_PHASE_PRECOPY);
	}
	/* It goes on in precopy: the guest stopped, its device state, the end. */
	g_assert_cmpint(tm_sender_guest_stopped(x.s, &err), ==, 0);
	for (unsigned i = 0; i < CPU_STATE; i++)
		x.cpu[i] = (uint8_t)rnd();
	g_assert_cmpint(tm_sender_put_state(x.s, "cpu0", x.cpu, CPU_STATE, TM_STATE_COPY, &err),
			==, 0);
	int64_t t0 = g_get_monotonic_time();
	x.finisher = g_thread_new("finish", finish_thread, &x);
	for (unsigned ms = 0; !__atomic_load_n(&x.finished, __ATOMIC_ACQUIRE) && ms < 20000; ms += 10)
		g_usleep(10000);
	g_test_message("finish() returned after %.3f s",
		       (double)(g_get_monotonic_time() - t0) / 1e6);
	if (!__atomic_load_n(&x.finished, __ATOMIC_ACQUIRE))
		g_error("the session hangs 20 s after tm_sender_finish() (receiver: %s)",
			x.d.error ? x.d.error->message : "running");
	g_thread_join(x.finisher);
	g_thread_join(x.d.thread);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_test_message("sender: %s; receiver: %s; both ended %.3f s after finish()",
		       x.error ? x.error->message : "ok", x.d.error ? x.d.error->message : "ok",
		       secs);
	g_assert_cmpint(x.ret, ==, 0);
	g_assert_cmpint(x.d.ret, ==, 0);
	/* A dead path on the unused connection costs its grace (1 s), never timeout_ms (20 s). */
	g_assert_cmpfloat(secs, <, 10.0);
	assert_same(&x.src, &x.d.g);
	g_assert_true(x.d.cpu_seen);
	g_assert_true(memcmp(x.d.cpu, x.cpu, CPU_STATE) == 0);
	g_assert_cmpint(tm_sender_phase(x.s), ==, TM_PHASE_COMPLETE);
	g_assert_cmpint(tm_receiver_phase(x.d.r), ==, TM_PHASE_COMPLETE);
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_sender_get_live_stats(x.s, &ss), ==, 0);
	g_assert_cmpint(tm_receiver_get_live_stats(x.d.r, &rs), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 0);
	g_assert_cmpuint(rs.reconnects, ==, 0);
	run_free(&x);
}

static void test_urgent_idle_cut_off(void)
{
	idle_cut_precopy(true, URG_IDLE);
}

static void test_urgent_idle_cut_precopy(void)
{
	idle_cut_precopy(false, URG_IDLE);
}

static void test_urgent_idle_half_precopy(void)
{
	idle_cut_precopy(false, URG_IDLE_HALF);
}

static void test_urgent_idle_half_recv_precopy(void)
{
	idle_cut_precopy(false, URG_IDLE_HALF_RECV);
}

/*
 * Resume off, or a reconnect that cannot come within the deadline: the session pauses as it
 * did before resume (both sides -ENOTCONN "postcopy paused: <cause>", TM_PHASE_POSTCOPY_PAUSED),
 * and can only be cancelled.
 */
static void cut_paused(bool no_resume)
{
	if (!uffd_usable())
		return;
	run x;
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .no_resume = no_resume,
			      .resume_deadline_ms = 1000 };
	run_start(&x, &lc, 512u << 10, false, VCPUS, true);
	g_mutex_lock(&x.px.lock);
	x.px.refuse_after = true; /* once the cut happened, no reconnect gets through */
	g_mutex_unlock(&x.px.lock);
	proxy_arm(&x.px, 2, 32u << 10); /* data channel 1 */
	int64_t t0 = g_get_monotonic_time();
	g_assert_cmpint(tm_sender_set_rate_limit(x.s, 512u << 10), ==, 0);
	g_thread_join(x.finisher);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_test_message("sender (%.1f s): %s", secs, x.error ? x.error->message : "ok");
	g_mutex_lock(&x.px.lock);
	unsigned cuts = x.px.cuts;
	uint64_t cut_at = x.px.cut_at, fwd = x.px.fwd[2];
	g_mutex_unlock(&x.px.lock);
	if (cuts != 1 && x.ret == 0) {
		/* On a loaded machine the vCPUs may fetch every page over the urgent connection
		 * before channel 1's background reaches the cut: then the session completed. */
		g_thread_join(x.d.thread);
		for (unsigned i = 0; x.d.vcpus && i < VCPUS; i++) {
			g_thread_join(x.d.v[i].thread);
			g_assert_cmpuint(x.d.v[i].bad, ==, 0);
		}
		g_assert_cmpint(x.d.ret, ==, 0);
		g_test_skip("the session completed before the cut: the vCPUs fetched every page "
			    "before channel 1's background reached it");
		run_free(&x);
		return;
	}
	if (cuts != 1)
		g_error("the cut %" G_GUINT64_FORMAT " bytes into data channel 1 never came: %"
			G_GUINT64_FORMAT " forwarded (sender: %s)", cut_at, fwd,
			x.error ? x.error->message : "ok");
	g_assert_cmpint(x.ret, ==, -ENOTCONN);
	g_assert_nonnull(strstr(x.error->message, "postcopy paused"));
	if (no_resume) {
		/* Nobody came back: the cause is the cut (or the receiver's word on it, or its
		 * urgent connection closed as it paused: whichever the sender saw first). */
		g_assert_cmpuint(proxy_get(&x.px, &x.px.refused), ==, 0);
		g_assert_cmpuint(proxy_get(&x.px, &x.px.accepted), ==, NCH + 2);
	} else {
		g_assert_nonnull(strstr(x.error->message, "channel 1: could not resume within"));
		g_assert_cmpuint(proxy_get(&x.px, &x.px.refused), >, 0);
		g_assert_cmpfloat(secs, <, 10.0);
	}
	g_assert_cmpint(tm_sender_phase(x.s), ==, TM_PHASE_POSTCOPY_PAUSED);
	g_assert_cmpuint(tm_sender_take_events(x.s) & TM_EVENT_PAUSED, ==, TM_EVENT_PAUSED);
	/* The destination learns it on control, paused too. */
	for (unsigned ms = 0; tm_receiver_phase(x.d.r) != TM_PHASE_POSTCOPY_PAUSED && ms < 10000;
	     ms++)
		g_usleep(1000);
	g_assert_cmpint(tm_receiver_phase(x.d.r), ==, TM_PHASE_POSTCOPY_PAUSED);
	g_thread_join(x.d.thread); /* its wait() returned: paused */
	g_test_message("receiver: %s", x.d.error ? x.d.error->message : "ok");
	g_assert_cmpint(x.d.ret, ==, -ENOTCONN);
	g_assert_nonnull(strstr(x.d.error->message, "postcopy paused"));
	g_assert_cmpint(tm_receiver_cancel(x.d.r, "the operator gives up"), ==, 0);
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(x.s, &ss), ==, 0);
	g_assert_cmpuint(ss.reconnects, ==, 0);
	g_assert_cmpint(tm_sender_cancel(x.s, "the operator gives up"), ==, 0);
	run_free(&x);
}

static void test_deadline_pauses(void)
{
	cut_paused(false);
}

static void test_off_pauses(void)
{
	cut_paused(true);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-postcopy/cut-data0", test_cut_data0, false },
		{ "resume-postcopy/cut-data2", test_cut_data2, false },
		{ "resume-postcopy/cut-urgent", test_cut_urgent, false },
		{ "resume-postcopy/cut-urgent-half", test_cut_urgent_half, false },
		{ "resume-postcopy/cut-urgent-half-recv", test_cut_urgent_half_recv, false },
		{ "resume-postcopy/cut-urgent-freeze", test_cut_urgent_freeze, false },
		{ "resume-postcopy/end-ack-lost", test_end_ack_lost, false },
		{ "resume-postcopy/end-ack-lost-half", test_end_ack_lost_half, false },
		{ "resume-postcopy/req-end-lost-half-recv", test_req_end_lost_half_recv, false },
		{ "resume-postcopy/req-end-lost", test_req_end_lost, false },
		{ "resume-postcopy/req-end-lost-refused", test_req_end_lost_refused, false },
		{ "resume-postcopy/urgent-setup-ack-lost", test_urgent_setup_ack_lost, false },
		{ "resume-postcopy/urgent-idle-cut", test_urgent_idle_cut, false },
		{ "resume-postcopy/urgent-idle-half", test_urgent_idle_half, false },
		{ "resume-postcopy/urgent-idle-half-recv", test_urgent_idle_half_recv, false },
		{ "resume-postcopy/urgent-idle-cut-late", test_urgent_idle_cut_late, false },
		{ "resume-postcopy/urgent-ack-send-fails", test_urgent_ack_send_fails, false },
		{ "resume-postcopy/urgent-setup-ack-lost-off", test_urgent_setup_ack_lost_off, false },
		{ "resume-postcopy/urgent-idle-cut-off", test_urgent_idle_cut_off, false },
		{ "resume-postcopy/urgent-idle-cut-precopy", test_urgent_idle_cut_precopy, false },
		{ "resume-postcopy/urgent-idle-half-precopy", test_urgent_idle_half_precopy, false },
		{ "resume-postcopy/urgent-idle-half-recv-precopy", test_urgent_idle_half_recv_precopy,
		  false },
		{ "resume-postcopy/deadline-pauses", test_deadline_pauses, false },
		{ "resume-postcopy/off-pauses", test_off_pauses, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
