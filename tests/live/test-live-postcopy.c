/* SPDX-License-Identifier: MIT */
/*
 * A running guest migrated with postcopy, end to end (issue 12; docs/design/live-engine.md 4.2,
 * "postcopy-forced"): the test guest (common/testing/guest.h) dirties its RAM and tags from two
 * writer threads; the source switches to postcopy before any round (round 0) or after one
 * precopy round (round 1): pause, final dirty log, tm_sender_start_postcopy(), one device-state
 * section, finish. The destination VMM reads the state, and once the end of device state is
 * reached starts two "vCPU" threads that touch every page of both blocks while the background
 * pages still flow (rate-limited); a touch of a missing page blocks in the userfault until the
 * page is placed, and the thread then compares the page's data and tags with the source's, which
 * is paused for good. At the end the destination holds exactly the guest, both sides are
 * COMPLETE, and the figures add up.
 *
 * Runs on the sockets and io_uring pairs, plaintext and TLS; without userfaultfd (or dirty-page
 * tracking) it skips with the reason.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "live-fixture.h"
#include "tcp-pair.h"

#if defined(__SANITIZE_ADDRESS__)
#define GUEST_RAM (8u << 20)
#else
#define GUEST_RAM (16u << 20)
#endif
#define GUEST_VRAM (2u << 20)
#define DIRTY_RATE (200u * 1000 * 1000)
#define BACKGROUND_RATE (16u * 1000 * 1000) /* the background takes about a second */
#define CPU_STATE 4096u
#define VCPUS 2u

/* ---- the destination ---- */

typedef struct vcpu {
	struct dest *d;
	unsigned index;
	GThread *thread;
	uint64_t touched, bad, blocked; /* pages; wrong data or tags; loads that took > 1 ms */
	char *first_bad;
	bool sigbus;                    /* a poisoned page (free after a pause) */
} vcpu;

/* SIGBUS of a vCPU touching a page poisoned at free: caught for the thread that armed it. */
static __thread sigjmp_buf *bus_jmp;

static void on_sigbus(int sig)
{
	if (bus_jmp)
		siglongjmp(*bus_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

typedef struct dest {
	guest g;
	test_guest *src;      /* paused for good before the switch: what every page must hold */
	int listen_fd;
	tm_receiver *r;
	GThread *thread;
	int ret;
	GError *error;
	uint8_t cpu[CPU_STATE];
	bool cpu_seen;
	vcpu v[VCPUS];
	bool running;
	const int *fds;       /* attach these instead of accepting (VCPUS + 2 of them) */
	unsigned touch_us;    /* vCPUs pause this long between pages */
	bool writes;          /* vCPUs write MARK at byte MARK_AT of each page after checking it */
} dest;

#define MARK 0xa5
#define MARK_AT 8

/* vCPU t touches the pages p % VCPUS == t of each block, from both ends towards the middle. */
static gpointer vcpu_thread(gpointer data)
{
	vcpu *v = data;
	dest *d = v->d;
	sigjmp_buf env;

	if (sigsetjmp(env, 1)) {
		bus_jmp = NULL;
		v->sigbus = true;
		return NULL;
	}
	bus_jmp = &env;
	const tm_ram_layout *sl = test_guest_layout(d->src);
	tm_tag_store *st = test_guest_tags(d->src);

	for (unsigned b = 0; b < d->g.nblocks; b++) {
		tm_ram_block_info bi, si;
		g_assert_cmpint(tm_ram_layout_block(d->g.layout, b, &bi), ==, 0);
		g_assert_cmpint(tm_ram_layout_block(sl, b, &si), ==, 0);
		uint64_t n = bi.length / bi.page_size, gran = bi.page_size / TM_TAG_GRANULE;
		const uint8_t *dt = tm_tag_store_soft_array(d->g.tags, b);
		const uint8_t *stg = tm_tag_store_soft_array(st, b);
		for (uint64_t k = 0; k < n; k++) {
			uint64_t p = k % 2 ? n - 1 - k / 2 : k / 2;
			if (p % VCPUS != v->index)
				continue;
			const volatile uint8_t *page = (const uint8_t *)bi.host + p * bi.page_size;
			int64_t t0 = g_get_monotonic_time();
			(void)page[bi.page_size / 2]; /* blocks until the page is placed */
			if (g_get_monotonic_time() - t0 > 1000)
				v->blocked++;
			v->touched++;
			bool same = memcmp((const void *)page, (const uint8_t *)si.host + p * si.page_size,
					   bi.page_size) == 0;
			bool tags = memcmp(dt + p * gran, stg + p * gran, gran) == 0;
			if ((!same || !tags) && !v->bad++)
				v->first_bad = g_strdup_printf("block %u page %" G_GUINT64_FORMAT ": %s", b,
							       p, !same ? "data differ" : "tags differ");
			/* The guest runs: its own write must survive any later copy of the page. */
			if (d->writes)
				((volatile uint8_t *)page)[MARK_AT] = MARK;
			if (d->touch_us)
				g_usleep(d->touch_us);
		}
	}
	bus_jmp = NULL;
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

static gpointer dest_thread(gpointer data)
{
	dest *d = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = 30000 };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .uffd_user_mode_only = true };

	d->ret = tm_receiver_new(&cfg, &d->r, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_set_live(d->r, &lc, &d->error);
	if (d->ret >= 0)
		d->ret = d->fds ? tm_receiver_attach(d->r, d->fds, 4, &d->error)
				: tm_receiver_accept(d->r, d->listen_fd, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(d->r, d->g.layout, d->g.tags, &d->error);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(d->r, &d->error)) == 1) {
		d->ret = receiver_read_states(d->r, keep_cpu, d, &d->error);
		/* The end of device state in postcopy: READY went, the guest may run. */
		if (d->ret == 0 && tm_receiver_phase(d->r) == TM_PHASE_POSTCOPY && !d->running) {
			d->running = true;
			for (unsigned i = 0; i < VCPUS; i++) {
				d->v[i] = (vcpu){ .d = d, .index = i };
				d->v[i].thread = g_thread_new("vcpu", vcpu_thread, &d->v[i]);
			}
		}
	}
	return NULL;
}

/* ---- the source ---- */

/* The destination equals the paused source but for the vCPUs' marks (postcopy-running). */
static void check_marked(dest *d)
{
	const tm_ram_layout *sl = test_guest_layout(d->src);

	for (unsigned b = 0; b < d->g.nblocks; b++) {
		tm_ram_block_info bi, si;
		g_assert_cmpint(tm_ram_layout_block(d->g.layout, b, &bi), ==, 0);
		g_assert_cmpint(tm_ram_layout_block(sl, b, &si), ==, 0);
		uint64_t gran = bi.page_size / TM_TAG_GRANULE;
		const uint8_t *dt = tm_tag_store_soft_array(d->g.tags, b);
		const uint8_t *st = tm_tag_store_soft_array(test_guest_tags(d->src), b);
		for (uint64_t p = 0; p < bi.length / bi.page_size; p++) {
			const uint8_t *dp = (const uint8_t *)bi.host + p * bi.page_size;
			const uint8_t *sp = (const uint8_t *)si.host + p * si.page_size;
			if (dp[MARK_AT] != MARK)
				g_error("block %u page %" G_GUINT64_FORMAT ": the vCPU's write is gone", b,
					p);
			if (memcmp(dp, sp, MARK_AT) != 0 ||
			    memcmp(dp + MARK_AT + 1, sp + MARK_AT + 1, bi.page_size - MARK_AT - 1) != 0 ||
			    memcmp(dt + p * gran, st + p * gran, gran) != 0)
				g_error("block %u page %" G_GUINT64_FORMAT ": differs from the source", b, p);
		}
	}
}

/*
 * Holds the background (1 B/s from the switch) until the running destination's vCPUs have
 * faulted, then lets it go at BACKGROUND_RATE: the fault path is taken however long the
 * destination took to start on a loaded machine (else a small postcopy set could all come in
 * the background first).
 */
typedef struct releaser {
	tm_sender *s;
	dest *d;
	GThread *thread;
	uint64_t waited_ms;
} releaser;

static gpointer release_thread(gpointer data)
{
	releaser *rl = data;
	for (; rl->waited_ms < 20000; rl->waited_ms++) {
		tm_receiver *r = __atomic_load_n(&rl->d->r, __ATOMIC_ACQUIRE);
		tm_live_stats rs = { .size = sizeof(rs) };
		if (r && tm_receiver_get_live_stats(r, &rs) == 0 && rs.faults > 0)
			break;
		g_usleep(1000);
	}
	int r = tm_sender_set_rate_limit(rl->s, BACKGROUND_RATE);
	g_assert_true(r == 0 || r == -EBADFD); /* -EBADFD: the vCPUs asked for every page */
	return NULL;
}

static void run_postcopy(unsigned precopy_rounds, bool writes)
{
	if (!live_pair_runs("postcopy") || !uffd_usable())
		return;
	g_autoptr(GError) err = NULL;
	g_autoptr(test_guest) g = NULL;
	test_guest_config gc = { .ram_len = GUEST_RAM, .vram_len = GUEST_VRAM, .writers = 2,
				 .rate = DIRTY_RATE, .seed = 21 + precopy_rounds };
	if (!live_guest_new(&gc, &g))
		return;
	const tm_ram_layout *layout = test_guest_layout(g);
	block_spec spec[LIVE_BLOCKS];
	uint64_t npages[LIVE_BLOCKS], *bm[LIVE_BLOCKS]; /* the first round: every page */
	unsigned nb = live_guest_blocks(g, spec, npages, bm);

	dest d = { .src = g, .writes = writes };
	guest_init(&d.g, spec, nb, true);
	unsigned port = 0;
	d.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(d.listen_fd, >=, 0);
	d.thread = g_thread_new("dest", dest_thread, &d);
	g_autofree char *ports = g_strdup_printf("%u", port);

	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 30000 };
	g_autoptr(tm_sender) s = NULL;
	g_assert_cmpint(tm_sender_new(layout, test_guest_tags(g), &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	if (tm_sender_connect(s, "127.0.0.1", ports, &err) < 0)
		g_error("connect: %s", err->message);
	g_test_message("dirty log: %s; guest %u MiB + %u MiB vram, 2 writers at %u MB/s; switch "
		       "after %u precopy rounds", test_guest_dirty_method(g), GUEST_RAM >> 20,
		       GUEST_VRAM >> 20, DIRTY_RATE / 1000000, precopy_rounds);

	test_guest_start(g);
	for (unsigned r = 0; r < precopy_rounds; r++) {
		live_queue_dirty(s, bm, npages, nb);
		g_assert_cmpint(tm_sender_sync(s, &err), ==, 0);
		g_assert_cmpint(test_guest_collect(g, bm, &err), >=, 0);
	}
	/* The guest writes more: a final log of most of its pages, and never a small one, however
	 * little CPU the writers get on a loaded machine (at least 512 writes, 10 s at most): at
	 * the background's rate its pages take over 100 ms to leave, so the switch finds them
	 * missing even if this thread is preempted between the queue and the switch. */
	uint64_t w0 = test_guest_writes(g);
	g_usleep(250000);
	for (unsigned ms = 0; ms < 10000 && test_guest_writes(g) - w0 < 512; ms += 10)
		g_usleep(10000);
	test_guest_stop(g);
	g_assert_cmpint(test_guest_collect(g, bm, &err), >=, 0);
	uint64_t final = live_dirty_count(bm, npages, nb);
	/* The final log mostly stays queued until the switch (then it is postcopy's), and the
	 * background is slow enough for the vCPUs to find pages missing. */
	g_assert_cmpint(tm_sender_set_rate_limit(s, BACKGROUND_RATE), ==, 0);
	live_queue_dirty(s, bm, npages, nb);
	g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, 0);
	g_assert_no_error(err);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_POSTCOPY);
	g_assert_cmpint(tm_sender_set_rate_limit(s, 1), ==, 0);
	releaser rl = { .s = s, .d = &d };
	rl.thread = g_thread_new("release", release_thread, &rl);
	uint8_t cpu[CPU_STATE];
	for (unsigned i = 0; i < CPU_STATE; i++)
		cpu[i] = (uint8_t)rnd();
	g_assert_cmpint(tm_sender_put_state(s, "cpu0", cpu, CPU_STATE, TM_STATE_COPY, &err), ==, 0);
	g_assert_cmpint(tm_sender_finish(s, &err), ==, 0);
	g_assert_no_error(err);
	g_thread_join(rl.thread);
	g_test_message("the background was held %" G_GUINT64_FORMAT " ms, until the first fault",
		       (guint64)rl.waited_ms);
	g_thread_join(d.thread);
	close(d.listen_fd);
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_no_error(d.error);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_true(d.running);
	uint64_t touched = 0, blocked = 0;
	for (unsigned i = 0; i < VCPUS; i++) {
		g_thread_join(d.v[i].thread);
		if (d.v[i].bad)
			g_error("vCPU %u: %" G_GUINT64_FORMAT " pages wrong when touched, the first: %s",
				i, d.v[i].bad, d.v[i].first_bad);
		touched += d.v[i].touched;
		blocked += d.v[i].blocked;
		g_free(d.v[i].first_bad);
	}
	g_assert_cmpuint(touched, ==, npages[0] + npages[1]);

	g_autofree char *why = NULL;
	if (writes)
		check_marked(&d);
	else if (!test_guest_same(g, d.g.layout, d.g.tags, &why))
		g_error("destination differs from the guest: %s", why);
	g_assert_true(d.cpu_seen);
	g_assert_true(memcmp(d.cpu, cpu, CPU_STATE) == 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_COMPLETE);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_COMPLETE);

	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &rs), ==, 0);
	g_test_message("final log %" G_GUINT64_FORMAT " pages; sender: postcopy %" G_GUINT64_FORMAT
		       " background %" G_GUINT64_FORMAT " urgent %" G_GUINT64_FORMAT
		       " requests %" G_GUINT64_FORMAT "; receiver: postcopy %" G_GUINT64_FORMAT
		       " discarded %" G_GUINT64_FORMAT " background %" G_GUINT64_FORMAT
		       " urgent %" G_GUINT64_FORMAT " dup %" G_GUINT64_FORMAT " faults %" G_GUINT64_FORMAT
		       " (%" G_GUINT64_FORMAT " loads blocked) p50 %" G_GUINT64_FORMAT " us p99 %"
		       G_GUINT64_FORMAT " us max %" G_GUINT64_FORMAT " us",
		       final, (guint64)ss.postcopy_pages, (guint64)ss.background_pages,
		       (guint64)ss.urgent_pages, (guint64)ss.requests, (guint64)rs.postcopy_pages,
		       (guint64)rs.discarded_pages, (guint64)rs.background_pages,
		       (guint64)rs.urgent_pages, (guint64)rs.duplicate_pages, (guint64)rs.faults,
		       blocked, (guint64)rs.fault_p50_us, (guint64)rs.fault_p99_us,
		       (guint64)rs.fault_max_us);
	/*
	 * Round 0: what left before the switch is final (the guest was paused), nothing is stale.
	 * Round 1: every page went in the round, so each page still missing at the switch is one
	 * the guest wrote again: a stale copy the destination had to drop.
	 */
	g_assert_cmpuint(rs.discarded_pages, ==, precopy_rounds ? rs.postcopy_pages : 0);
	g_assert_cmpuint(rs.postcopy_pages, >, 0);
	g_assert_cmpuint(rs.postcopy_pages, ==, ss.postcopy_pages);
	g_assert_cmpuint(rs.requests, ==, ss.requests);
	g_assert_cmpuint(rs.urgent_pages, ==, ss.urgent_pages);
	g_assert_cmpuint(rs.background_pages, ==, ss.background_pages);
	/* Every missing page placed exactly once, whichever copy came first. */
	g_assert_cmpuint(rs.urgent_pages + rs.background_pages - rs.duplicate_pages, ==,
			 rs.postcopy_pages);
	g_assert_cmpuint(rs.faults, >, 0);
	g_assert_cmpuint(rs.requests, >, 0);
	g_assert_cmpuint(rs.fault_p50_us, <=, rs.fault_p99_us);
	g_assert_cmpuint(rs.fault_p99_us, <=, rs.fault_max_us);

	tm_receiver_free(d.r);
	guest_fini(&d.g);
	for (unsigned b = 0; b < nb; b++)
		g_free(bm[b]);
}

typedef struct finisher {
	tm_sender *s;
	GThread *thread;
	int ret;
	GError *error;
} finisher;

static gpointer finish_thread(gpointer data)
{
	finisher *f = data;
	f->ret = tm_sender_finish(f->s, &f->error);
	return NULL;
}

/*
 * A data connection cut while the destination runs (3.4): both sides pause (-ENOTCONN, phase
 * POSTCOPY_PAUSED, TM_EVENT_PAUSED), no vCPU saw a wrong page, the ones on missing pages stay
 * blocked; both sides are then cancelled (FAILED) and the destination's free poisons what is
 * still missing, so a blocked vCPU gets SIGBUS instead of a zero page.
 */
static void test_postcopy_paused(void)
{
	if (!live_pair_runs("postcopy") || !uffd_usable())
		return;
	if (tls_dir) {
		g_test_skip("the cut is the same under TLS; the plaintext pairs run it");
		return;
	}
	g_autoptr(GError) err = NULL;
	g_autoptr(test_guest) g = NULL;
	test_guest_config gc = { .ram_len = GUEST_RAM, .vram_len = GUEST_VRAM, .writers = 2,
				 .rate = DIRTY_RATE, .seed = 31 };
	if (!live_guest_new(&gc, &g))
		return;
	const tm_ram_layout *layout = test_guest_layout(g);
	block_spec spec[LIVE_BLOCKS];
	unsigned nb = live_guest_blocks(g, spec, NULL, NULL);
	/* data 0, data 1, control, urgent: the sender's order; the receiver takes any. */
	int sfd[4], rfd[4];
	for (unsigned i = 0; i < 4; i++)
		g_assert_cmpint(tcp_pair(&sfd[i], &rfd[i], &err), ==, 0);

	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	sigaction(SIGBUS, &sa, &old);
	dest d = { .src = g, .fds = rfd, .touch_us = 1000, .listen_fd = -1 };
	guest_init(&d.g, spec, nb, true);
	d.thread = g_thread_new("dest", dest_thread, &d);
	tm_sender_config cfg = { .io_backend = send_io, .channels = 2, .timeout_ms = 30000 };
	g_autoptr(tm_sender) s = NULL;
	g_assert_cmpint(tm_sender_new(layout, test_guest_tags(g), &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	g_assert_cmpint(tm_sender_attach(s, sfd, 4, &err), ==, 0);
	g_assert_no_error(err);

	/* Round 0: everything queued, the switch at once, the background slow. */
	for (unsigned b = 0; b < nb; b++) {
		tm_ram_block_info bi;
		g_assert_cmpint(tm_ram_layout_block(layout, b, &bi), ==, 0);
		uint64_t n = bi.length / bi.page_size;
		g_autofree uint64_t *all = g_new0(uint64_t, (n + 63) / 64);
		for (uint64_t p = 0; p < n; p++)
			all[p / 64] |= 1ull << (p % 64);
		g_assert_cmpint(tm_sender_queue_bitmap(s, b, all, 0, n, &err), ==, 0);
	}
	/* About 18 s for the background: a loaded host (sanitizers, CI) must not finish it
	 * before the cut below. */
	g_assert_cmpint(tm_sender_set_rate_limit(s, BACKGROUND_RATE / 16), ==, 0);
	g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, 0);
	finisher f = { .s = s };
	f.thread = g_thread_new("finish", finish_thread, &f);
	for (unsigned ms = 0; !d.running && ms < 10000; ms++)
		g_usleep(1000);
	g_assert_true(d.running);
	g_usleep(100000); /* the vCPUs are busy, pages are missing */
	shutdown(rfd[1], SHUT_RDWR); /* data channel 1 breaks */
	g_thread_join(f.thread);
	g_thread_join(d.thread);
	g_test_message("sender: %s; receiver: %s", f.error ? f.error->message : "ok",
		       d.error ? d.error->message : "ok");
	g_assert_cmpint(f.ret, ==, -ENOTCONN);
	g_assert_nonnull(strstr(f.error->message, "postcopy paused"));
	g_assert_cmpint(d.ret, ==, -ENOTCONN);
	g_assert_nonnull(strstr(d.error->message, "postcopy paused"));
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_POSTCOPY_PAUSED);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_POSTCOPY_PAUSED);
	g_assert_cmpuint(tm_sender_take_events(s) & TM_EVENT_PAUSED, ==, TM_EVENT_PAUSED);
	g_assert_cmpuint(tm_receiver_take_events(d.r) & TM_EVENT_PAUSED, ==, TM_EVENT_PAUSED);
	g_usleep(100000);
	unsigned running = 0;
	for (unsigned i = 0; i < VCPUS; i++)
		running += !d.v[i].sigbus && d.v[i].touched < (spec[0].len / spec[0].page_size +
							      spec[1].len / spec[1].page_size) / VCPUS;
	/* The library never places what it did not receive: the vCPUs wait. */
	g_assert_cmpuint(running, >, 0);
	g_assert_cmpint(tm_sender_cancel(s, "the operator gives up"), ==, 0);
	g_assert_cmpint(tm_receiver_cancel(d.r, "the operator gives up"), ==, 0);
	g_assert_cmpint(tm_sender_phase(s), ==, TM_PHASE_FAILED);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_FAILED);
	tm_receiver_free(d.r); /* poisons what is missing: the blocked vCPUs get SIGBUS */
	unsigned sigbus = 0;
	for (unsigned i = 0; i < VCPUS; i++) {
		g_thread_join(d.v[i].thread);
		if (d.v[i].bad)
			g_error("vCPU %u: %" G_GUINT64_FORMAT " pages wrong when touched, the first: %s",
				i, d.v[i].bad, d.v[i].first_bad);
		sigbus += d.v[i].sigbus;
		g_free(d.v[i].first_bad);
	}
	sigaction(SIGBUS, &old, NULL);
	g_test_message("%u of %u vCPUs got SIGBUS at free", sigbus, VCPUS);
	g_assert_cmpuint(sigbus, >, 0);
	g_clear_error(&f.error);
	g_clear_error(&d.error);
	guest_fini(&d.g);
}

static void test_postcopy_round0(void)
{
	run_postcopy(0, false);
}

static void test_postcopy_round1(void)
{
	run_postcopy(1, false);
}

/*
 * postcopy-running (design 4.2): the destination's vCPUs write every page right after its
 * first touch while background and urgent copies still arrive (duplicates among them): a page
 * is placed once, so no later copy overwrites what the guest wrote.
 */
static void test_postcopy_running(void)
{
	run_postcopy(0, true);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-round0", test_postcopy_round0, false },
		{ "postcopy-round1", test_postcopy_round1, false },
		{ "postcopy-paused", test_postcopy_paused, false },
		{ "postcopy-running", test_postcopy_running, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
