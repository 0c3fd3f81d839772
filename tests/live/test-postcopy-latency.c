/* SPDX-License-Identifier: MIT */
/*
 * The postcopy fault path is measured, and requested pages overtake the background (issue 12
 * §4: "the fault path is measured"; the bench goal is p99 fault-to-placed under 1 ms on
 * loopback). The source switches to postcopy before any round, so every page is missing at the
 * destination, and its background stream is held to BACKGROUND_RATE: it would need about
 * GUEST_RAM / BACKGROUND_RATE (8 s) to bring every page. Destination "vCPU" threads touch
 * random pages, one at a time, each blocking in its userfault until the page is placed, and
 * time every touch. The pages they touch lie on average half-way through the background's
 * order, seconds away; a requested page that waited for the background would wait that long.
 *
 * Asserted: the library's fault histogram (tm_live_stats.fault_p99_us, fault read -> placed
 * and woken) and the vCPUs' own p99 (touch -> load returned) stay under FAULT_P99_BOUND_US,
 * a bound chosen for a loaded 2-core CI machine (where a fault takes about 0.1-1 ms unloaded
 * and a scheduling hiccup tens of ms) that is still over 10 times shorter than the median
 * time the background would need to reach the touched pages (about 4 s; computed per page and
 * asserted too, so the test cannot pass by the background being fast). Every touched page is checked
 * against the source, data and tags.
 *
 * Runs on the same-backend plaintext pairs (TLS adds its own cost; bench/ measures it); without
 * userfaultfd it skips with the reason.
 */
#include <errno.h>
#include <string.h>

#include "session-fixture.h"

#define GUEST_RAM (16u << 20)
#define PAGE 4096u
#define CHANNELS 2u
#define CHUNK (2u << 20)              /* the default striping chunk */
#define BACKGROUND_RATE (2000u * 1000) /* bytes/s over both channels: 8.4 s for the guest */
#define VCPUS 2u
#define TOUCHES 100u                   /* per vCPU */
#define FAULT_P99_BOUND_US 250000u

typedef struct vcpu {
	struct dest *d;
	unsigned index;
	GThread *thread;
	uint64_t pages[TOUCHES];
	uint64_t lat_us[TOUCHES];
	unsigned bad;
} vcpu;

typedef struct dest {
	guest g;
	guest *src;
	int listen_fd;
	tm_receiver *r;
	GThread *thread;
	int ret;
	GError *error;
	vcpu v[VCPUS];
	bool running;
} dest;

static gpointer vcpu_thread(gpointer data)
{
	vcpu *v = data;
	dest *d = v->d;
	const uint8_t *dt = tm_tag_store_soft_array(d->g.tags, 0);
	const uint8_t *st = tm_tag_store_soft_array(d->src->tags, 0);
	const unsigned gran = PAGE / TM_TAG_GRANULE;

	for (unsigned i = 0; i < TOUCHES; i++) {
		uint64_t p = v->pages[i];
		const volatile uint8_t *page = d->g.ram[0] + p * PAGE;
		int64_t t0 = g_get_monotonic_time();
		(void)page[PAGE / 2]; /* blocks in the userfault until the page is placed */
		v->lat_us[i] = (uint64_t)(g_get_monotonic_time() - t0);
		if (memcmp((const void *)page, d->src->ram[0] + p * PAGE, PAGE) != 0 ||
		    memcmp(dt + p * gran, st + p * gran, gran) != 0)
			v->bad++;
	}
	return NULL;
}

static gpointer dest_thread(gpointer data)
{
	dest *d = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .timeout_ms = 30000, .ram_zeroed = true };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .uffd_user_mode_only = true };
	tm_state_info info;

	d->ret = tm_receiver_new(&cfg, &d->r, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_set_live(d->r, &lc, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_accept(d->r, d->listen_fd, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(d->r, d->g.layout, d->g.tags, &d->error);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(d->r, &d->error)) == 1) {
		while ((d->ret = tm_receiver_next_state(d->r, &info, &d->error)) == 1)
			;
		if (d->ret == 0 && tm_receiver_phase(d->r) == TM_PHASE_POSTCOPY && !d->running) {
			for (unsigned i = 0; i < VCPUS; i++)
				d->v[i].thread = g_thread_new("vcpu", vcpu_thread, &d->v[i]);
			__atomic_store_n(&d->running, true, __ATOMIC_RELEASE);
		}
	}
	return NULL;
}

typedef struct finisher {
	tm_sender *s;
	int ret;
	GError *error;
} finisher;

static gpointer finish_thread(gpointer data)
{
	finisher *f = data;
	f->ret = tm_sender_finish(f->s, &f->error);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The p-th percentile of n samples (sorted in place): the smallest value >= p% of them. */
static uint64_t percentile(uint64_t *v, size_t n, unsigned p)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	size_t k = (n * p + 99) / 100;
	return v[k ? k - 1 : 0];
}

/*
 * When the background alone would bring page p, in us after the switch: each channel sends its
 * chunks in order at half the rate, so p comes after the pages of its channel's earlier chunks
 * and those before it in its chunk.
 */
static uint64_t background_eta_us(uint64_t p)
{
	const uint64_t per = CHUNK / PAGE, chunk = p / per;
	uint64_t before = (chunk / CHANNELS) * per + p % per;
	return before * PAGE * 1000000ull / (BACKGROUND_RATE / CHANNELS);
}

static void test_fault_latency(void)
{
	if (strcmp(send_io, recv_io) != 0 || tls_dir) {
		g_test_skip("the fault path is timed on the plaintext same-backend pairs");
		return;
	}
	if (!uffd_usable())
		return;
	g_autoptr(GError) err = NULL;
	guest src;
	block_spec spec = { "pc.ram", GUEST_RAM, PAGE };
	guest_init(&src, &spec, 1, true);
	guest_fill(&src);

	/* Distinct random pages, vCPU i taking every VCPUS-th of a shuffled list. */
	const uint64_t npages = GUEST_RAM / PAGE;
	g_autofree uint64_t *order = g_new(uint64_t, npages);
	for (uint64_t p = 0; p < npages; p++)
		order[p] = p;
	for (uint64_t p = npages - 1; p > 0; p--) {
		uint64_t k = rnd() % (p + 1), t = order[p];
		order[p] = order[k];
		order[k] = t;
	}
	dest d = { .src = &src };
	guest_init(&d.g, &spec, 1, true);
	uint64_t eta[VCPUS * TOUCHES];
	for (unsigned i = 0; i < VCPUS; i++) {
		d.v[i] = (vcpu){ .d = &d, .index = i };
		for (unsigned k = 0; k < TOUCHES; k++) {
			d.v[i].pages[k] = order[k * VCPUS + i];
			eta[i * TOUCHES + k] = background_eta_us(d.v[i].pages[k]);
		}
	}
	uint64_t eta_median = percentile(eta, G_N_ELEMENTS(eta), 50);
	/* The bound is meaningful only if the background is far slower than it. */
	g_assert_cmpuint(eta_median, >=, 10ull * FAULT_P99_BOUND_US);

	unsigned port = 0;
	d.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(d.listen_fd, >=, 0);
	d.thread = g_thread_new("dest", dest_thread, &d);
	g_autofree char *ports = g_strdup_printf("%u", port);
	tm_sender_config cfg = { .io_backend = send_io, .channels = CHANNELS, .timeout_ms = 30000,
				 .chunk_size = CHUNK };
	g_autoptr(tm_sender) s = NULL;
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true,
			      .rate_limit = BACKGROUND_RATE };
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	if (tm_sender_connect(s, "127.0.0.1", ports, &err) < 0)
		g_error("connect: %s", err->message);

	/* Round 0: nothing was sent, every page is postcopy's; the background at its rate. */
	g_assert_cmpint(tm_sender_start_postcopy(s, &err), ==, 0);
	finisher f = { .s = s };
	GThread *ft = g_thread_new("finish", finish_thread, &f);

	/* Wait for the vCPUs (started at the end of device state) to finish their touches. */
	int64_t deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
	while (!__atomic_load_n(&d.running, __ATOMIC_ACQUIRE) &&
	       g_get_monotonic_time() < deadline)
		g_usleep(1000);
	g_assert_true(__atomic_load_n(&d.running, __ATOMIC_ACQUIRE));
	for (unsigned i = 0; i < VCPUS; i++)
		g_thread_join(d.v[i].thread);
	tm_live_stats rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &rs), ==, 0);
	/* The rest of the background at full speed: the measurement is over. */
	g_assert_cmpint(tm_sender_set_rate_limit(s, 0), ==, 0);
	g_thread_join(ft);
	g_assert_no_error(f.error);
	g_assert_cmpint(f.ret, ==, 0);
	g_thread_join(d.thread);
	close(d.listen_fd);
	g_assert_no_error(d.error);
	g_assert_cmpint(d.ret, ==, 0);

	uint64_t lat[VCPUS * TOUCHES];
	for (unsigned i = 0; i < VCPUS; i++) {
		g_assert_cmpuint(d.v[i].bad, ==, 0);
		memcpy(lat + i * TOUCHES, d.v[i].lat_us, sizeof(d.v[i].lat_us));
	}
	uint64_t touch_p50 = percentile(lat, G_N_ELEMENTS(lat), 50);
	uint64_t touch_p99 = percentile(lat, G_N_ELEMENTS(lat), 99);
	tm_live_stats ss = { .size = sizeof(ss) };
	g_assert_cmpint(tm_sender_get_live_stats(s, &ss), ==, 0);
	g_test_message("%u touches of random pages, background %u kB/s (median page %.2f s away): "
		       "fault -> placed p50 %" G_GUINT64_FORMAT " us, p99 %" G_GUINT64_FORMAT
		       " us, max %" G_GUINT64_FORMAT " us over %" G_GUINT64_FORMAT " faults; "
		       "vCPU touch p50 %" G_GUINT64_FORMAT " us, p99 %" G_GUINT64_FORMAT " us; "
		       "source service p50 %" G_GUINT64_FORMAT " us, p99 %" G_GUINT64_FORMAT
		       " us; %" G_GUINT64_FORMAT " requests, %" G_GUINT64_FORMAT " urgent pages",
		       VCPUS * TOUCHES, BACKGROUND_RATE / 1000, eta_median / 1e6,
		       (guint64)rs.fault_p50_us, (guint64)rs.fault_p99_us, (guint64)rs.fault_max_us,
		       (guint64)rs.faults, touch_p50, touch_p99, (guint64)ss.service_p50_us,
		       (guint64)ss.service_p99_us, (guint64)ss.requests, (guint64)ss.urgent_pages);
	/* Requested pages ahead of the background: no touch waited for it. */
	g_assert_cmpuint(touch_p99, <, FAULT_P99_BOUND_US);
	g_assert_cmpuint(rs.fault_p99_us, <, FAULT_P99_BOUND_US);
	/* And the touches were faults served on request, not pages the background had brought. */
	g_assert_cmpuint(rs.faults, >=, VCPUS * TOUCHES / 2);
	g_assert_cmpuint(ss.requests, >=, VCPUS * TOUCHES / 2);
	assert_same(&src, &d.g);

	tm_receiver_free(d.r);
	guest_fini(&d.g);
	guest_fini(&src);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-fault-latency", test_fault_latency, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
