/* SPDX-License-Identifier: MIT */
/*
 * The postcopy setup of docs/api.md ("A worked postcopy setup") as a program a VMM developer can
 * build from the installed library alone:
 *
 *     cc -o postcopy postcopy.c $(pkg-config --cflags --libs tagmig)
 *     ./postcopy [MIB [ROUNDS]]
 *
 * A "guest" of MIB MiB (default 32) with MTE-style tags (the soft tag store stands in for the
 * hardware) migrates over loopback to a second copy in this process. The source runs ROUNDS
 * precopy rounds (default 1; 0 switches before any), pauses the guest, switches to postcopy and
 * sends its device state; the destination starts two "vCPU" threads as soon as device state is
 * complete, long before the (rate-limited) background has brought every page: a vCPU touching a
 * missing page blocks in a userfault until the page was fetched, its data and tags placed. Each
 * vCPU checks every page it touches, data and tags, against the paused source. A main loop
 * polls the destination's event fd. The program prints both sides' postcopy figures and exits 0
 * when every page arrived intact; 77 when this host gives no userfaultfd (the reason printed).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_ANONYMOUS under -std=c11 */
#endif
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <tagmig/tagmig.h>

#define PAGE 4096u
#define VCPUS 2u
#define BACKGROUND_RATE (32u << 20) /* bytes/s: the background takes about a second per 32 MiB */

typedef struct vcpu {
	struct dest *d;
	unsigned index;
	GThread *thread;
	uint64_t touched, wrong;
} vcpu;

typedef struct dest {
	int listen_fd;
	tm_ram_layout *layout;
	tm_tag_store *tags;
	const uint8_t *src, *src_tags; /* the paused source: what every page must hold */
	uint64_t npages;
	tm_receiver *r;
	uint8_t cpu[64];               /* the "vCPU registers" section */
	vcpu v[VCPUS];
	bool running;
	int done;                      /* the migration thread returned (for the main loop) */
	int ret;
	char why[512];
} dest;

/* A destination vCPU: touches its pages; a missing one blocks until placed with its tags. */
static gpointer vcpu_thread(gpointer data)
{
	vcpu *v = data;
	dest *d = v->d;
	tm_ram_block_info bi;
	tm_ram_layout_block(d->layout, 0, &bi);
	const uint8_t *tags = tm_tag_store_soft_array(d->tags, 0);

	for (uint64_t p = v->index; p < d->npages; p += VCPUS) {
		const volatile uint8_t *page = (const uint8_t *)bi.host + p * PAGE;
		(void)page[0]; /* the userfault: returns once data and tags are in place */
		v->touched++;
		if (memcmp((const void *)page, d->src + p * PAGE, PAGE) != 0 ||
		    memcmp(tags + p * (PAGE / TM_TAG_GRANULE), d->src_tags + p * (PAGE / TM_TAG_GRANULE),
			   PAGE / TM_TAG_GRANULE) != 0)
			v->wrong++;
	}
	return NULL;
}

/*
 * The destination VMM's migration thread (postcopy was accepted in set_live, in main): device
 * state read, vCPUs started at the end of device state, then wait until every page is there.
 */
static gpointer destination(gpointer data)
{
	dest *d = data;
	g_autoptr(GError) err = NULL;
	tm_state_info info;

	d->ret = tm_receiver_accept(d->r, d->listen_fd, &err);
	if (d->ret >= 0)
		d->ret = tm_receiver_start(d->r, d->layout, d->tags, &err);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(d->r, &err)) == 1) {
		while ((d->ret = tm_receiver_next_state(d->r, &info, &err)) == 1) {
			uint8_t buf[sizeof(d->cpu)];
			if (info.length != sizeof(buf)) {
				d->ret = tm_receiver_cancel(d->r, "unexpected device state");
				break;
			}
			if ((d->ret = tm_receiver_read_state(d->r, buf, sizeof(buf), &err)) < 0)
				break;
			memcpy(d->cpu, buf, sizeof(buf));
		}
		/* End of device state in postcopy: READY went, the guest runs from here on. */
		if (d->ret == 0 && tm_receiver_phase(d->r) == TM_PHASE_POSTCOPY && !d->running) {
			d->running = true;
			for (unsigned i = 0; i < VCPUS; i++) {
				d->v[i] = (vcpu){ .d = d, .index = i };
				d->v[i].thread = g_thread_new("vcpu", vcpu_thread, &d->v[i]);
			}
		}
	}
	/*
	 * -ENOTCONN: postcopy paused (a connection failed after the switch). vCPUs on missing
	 * pages stay blocked and placed pages stay valid; a real VMM keeps the guest stopped and
	 * waits for recovery. Here the source gave up too: cancel, so that free poisons what is
	 * missing (a blocked vCPU then gets SIGBUS instead of a zero page).
	 */
	if (d->ret == -ENOTCONN)
		tm_receiver_cancel(d->r, "postcopy paused, not recovered");
	if (err)
		snprintf(d->why, sizeof(d->why), "%s", err->message);
	__atomic_store_n(&d->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* The destination's main loop: the event fd says what happened without blocking any call. */
static gpointer destination_events(gpointer data)
{
	dest *d = data;
	struct pollfd pfd = { .fd = tm_receiver_event_fd(d->r), .events = POLLIN };

	while (!__atomic_load_n(&d->done, __ATOMIC_ACQUIRE)) {
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		uint32_t ev = tm_receiver_take_events(d->r); /* 0: a spurious wake */
		if (ev & TM_EVENT_POSTCOPY)
			printf("destination: the source switched to postcopy, guest RAM registered\n");
		if (ev & TM_EVENT_FAULTS) {
			tm_live_stats ls = { .size = sizeof(ls) };
			tm_receiver_get_live_stats(d->r, &ls); /* at most 10 such events a second */
			printf("destination: vCPUs wait on missing pages (%" PRIu64 " faults so far)\n",
			       ls.faults);
		}
		if (ev & TM_EVENT_PAUSED)
			printf("destination: postcopy paused: keep the vCPUs stopped\n");
		if (ev & (TM_EVENT_COMPLETE | TM_EVENT_FAILED))
			break;
	}
	return NULL;
}

static void guest_write(uint8_t *ram, uint8_t *tags, uint64_t *dirty, uint64_t page, unsigned gen)
{
	uint8_t *p = ram + page * PAGE;

	for (unsigned i = 0; i < PAGE; i += 8)
		memcpy(p + i, &(uint64_t){ page * 0x9e3779b97f4a7c15ull ^ (i + gen) }, 8);
	for (unsigned g = 0; g < PAGE / TM_TAG_GRANULE; g++)
		tags[page * (PAGE / TM_TAG_GRANULE) + g] = (uint8_t)((page + g + gen) & 0xf);
	dirty[page / 64] |= 1ull << (page % 64);
}

static int fail(const char *what, GError *err)
{
	fprintf(stderr, "postcopy: %s: %s\n", what, err ? err->message : "failed");
	return 1;
}

static void *map_ram(uint64_t len)
{
	/* Guest RAM as a VMM maps it: anonymous, private, page-aligned. */
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 32;
	unsigned rounds = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 1;
	uint64_t len = mib << 20, npages = len / PAGE, words = (npages + 63) / 64;
	g_autoptr(tm_ram_layout) src_layout = NULL, dst_layout = NULL;
	g_autoptr(tm_tag_store) src_tags = NULL, dst_tags = NULL;
	g_autoptr(tm_sender) s = NULL;
	g_autoptr(tm_receiver) r = NULL;
	g_autoptr(GError) err = NULL;
	tm_sender_config cfg = { .channels = 2 };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true };
	dest d = { .npages = npages };
	unsigned port;
	bool declined = false;

	if (mib == 0 || mib > 4096 || rounds > 100) {
		fprintf(stderr, "usage: postcopy [MIB [ROUNDS]], MIB 1..4096, ROUNDS 0..100\n");
		return 2;
	}
	uint8_t *src = map_ram(len), *dst = map_ram(len);
	g_autofree uint64_t *dirty = g_new0(uint64_t, words);
	if (!src || !dst) {
		fprintf(stderr, "postcopy: mmap of 2 x %" PRIu64 " MiB failed\n", mib);
		return 1;
	}
	if (tm_ram_layout_new(&src_layout) < 0 || tm_ram_layout_new(&dst_layout) < 0 ||
	    tm_ram_layout_add_block(src_layout, "pc.ram", src, len, PAGE, 0, &err) < 0 ||
	    tm_ram_layout_add_block(dst_layout, "pc.ram", dst, len, PAGE, 0, &err) < 0)
		return fail("layout", err);
	if (tm_tag_store_new(&tm_tag_store_soft, src_layout, NULL, &src_tags, &err) < 0 ||
	    tm_tag_store_new(&tm_tag_store_soft, dst_layout, NULL, &dst_tags, &err) < 0)
		return fail("tag store", err);
	uint8_t *tags = tm_tag_store_soft_array(src_tags, 0);
	for (uint64_t p = 0; p < npages; p++)
		guest_write(src, tags, dirty, p, 0);

	/*
	 * The destination accepts postcopy: set_live opens the userfaultfd at once, so a host that
	 * refuses it says so before anything is accepted. uffd_user_mode_only: a userfaultfd for
	 * faults of user space, allowed without privilege; a KVM guest's faults come from the
	 * kernel: leave it false (CAP_SYS_PTRACE or /dev/userfaultfd), or open the fd yourself and
	 * hand it in (uffd_borrow, uffd).
	 */
	tm_receiver_config rcfg = { .ram_zeroed = true };
	tm_live_config rlc = { .size = sizeof(rlc), .postcopy = true, .uffd_user_mode_only = true };
	if (tm_receiver_new(&rcfg, &r, &err) < 0)
		return fail("receiver", err);
	if (tm_receiver_set_live(r, &rlc, &err) < 0) {
		/* e.g. -EPERM "userfaultfd: not permitted (...)": the message says how to be allowed */
		printf("postcopy: skipped, the destination cannot do postcopy here: %s\n",
		       err->message);
		return 77;
	}
	d.r = r;
	d.layout = dst_layout;
	d.tags = dst_tags;
	d.src = src;
	d.src_tags = tags;
	d.listen_fd = tm_listen("127.0.0.1", "0", &port, &err);
	if (d.listen_fd < 0)
		return fail("listen", err);
	GThread *t = g_thread_new("destination", destination, &d);
	GThread *loop = g_thread_new("main loop", destination_events, &d);
	g_autofree char *ports = g_strdup_printf("%u", port);

	/* The source: postcopy offered before connect (one more connection, the urgent one). */
	if (tm_sender_new(src_layout, src_tags, &cfg, &s, &err) < 0 ||
	    tm_sender_set_live(s, &lc, &err) < 0 ||
	    tm_sender_connect(s, "127.0.0.1", ports, &err) < 0) {
		tm_receiver_cancel(r, "the source could not connect");
		g_thread_join(t);
		g_thread_join(loop);
		return fail("connect", err);
	}
	memset(dirty, 0xff, words * 8);
	for (unsigned round = 1; round <= rounds && !err; round++) {
		g_autofree uint64_t *this_round = g_memdup2(dirty, words * 8);
		memset(dirty, 0, words * 8);
		if (tm_sender_queue_bitmap(s, 0, this_round, 0, npages, &err) < 0 ||
		    tm_sender_sync(s, &err) < 0)
			break;
		/* the guest keeps running: a quarter of its pages change after the round, so the
		 * destination's copies of them are stale (postcopy discards them) */
		for (uint64_t i = 0; i < npages / 4; i++)
			guest_write(src, tags, dirty, (i * 7919 + round * 104729) % npages, round);
	}

	/*
	 * The switch. Pause the vCPUs (here: the guest writes no more), queue the final dirty log,
	 * then start_postcopy: what is queued and not sent, and every page never sent, becomes
	 * postcopy's (fetched on demand, or sent in the background). A slow background, so that
	 * the vCPUs find pages missing: start_postcopy starts the downtime clock itself and keeps
	 * the limit (tm_sender_guest_stopped() would lift it for the final log).
	 */
	int ret = err ? -1 : tm_sender_queue_bitmap(s, 0, dirty, 0, npages, &err);
	if (ret >= 0)
		ret = tm_sender_set_rate_limit(s, BACKGROUND_RATE);
	if (ret >= 0) {
		ret = tm_sender_start_postcopy(s, &err);
		if (ret == -EOPNOTSUPP) {
			/* Declined (the message says why): the guest is paused, finish in precopy. */
			printf("source: %s; finishing in precopy\n", err->message);
			g_clear_error(&err);
			declined = true;
			ret = tm_sender_guest_stopped(s, &err);
		}
	}
	/* From here on the source guest never runs again. Device state, then finish. */
	uint8_t cpu[sizeof(d.cpu)];
	for (unsigned i = 0; i < sizeof(cpu); i++)
		cpu[i] = (uint8_t)(i * 37 + 1);
	if (ret >= 0)
		ret = tm_sender_put_state(s, "cpu0", cpu, sizeof(cpu), TM_STATE_COPY, &err);
	if (ret >= 0)
		ret = tm_sender_finish(s, &err); /* background pages, requests, until all is there */
	if (ret < 0 && tm_sender_phase(s) == TM_PHASE_POSTCOPY_PAUSED) {
		/*
		 * -ENOTCONN after the switch: the destination may have run the guest, so the source
		 * must NOT resume it. Keep it paused and its RAM intact; the sender keeps what the
		 * destination lacks. Recovery is a reconnect (not in this example): give up here.
		 */
		fprintf(stderr, "postcopy: %s\n", err->message);
		tm_sender_cancel(s, "postcopy paused, operator gave up");
	}

	g_thread_join(t);
	g_thread_join(loop);
	close(d.listen_fd);
	uint64_t touched = 0, wrong = 0;
	for (unsigned i = 0; d.running && i < VCPUS; i++) {
		g_thread_join(d.v[i].thread);
		touched += d.v[i].touched;
		wrong += d.v[i].wrong;
	}
	if (ret < 0)
		return fail("migration", err);
	if (d.ret < 0) {
		fprintf(stderr, "postcopy: destination: %s\n", d.why);
		return 1;
	}

	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	tm_sender_get_live_stats(s, &ss);
	tm_receiver_get_live_stats(r, &rs);
	printf("source: %" PRIu64 " precopy rounds, downtime %.1f ms; postcopy %" PRIu64
	       " pages: %" PRIu64 " in the background, %" PRIu64 " on %" PRIu64
	       " requests (service p50 %" PRIu64 " us, p99 %" PRIu64 " us)\n",
	       ss.rounds, ss.downtime_us / 1e3, ss.postcopy_pages, ss.background_pages,
	       ss.urgent_pages, ss.requests, ss.service_p50_us, ss.service_p99_us);
	printf("destination: %" PRIu64 " faults, fault -> placed p50 %" PRIu64 " us, p99 %" PRIu64
	       " us, max %" PRIu64 " us; %" PRIu64 " discarded, %" PRIu64 " duplicates\n",
	       rs.faults, rs.fault_p50_us, rs.fault_p99_us, rs.fault_max_us, rs.discarded_pages,
	       rs.duplicate_pages);
	bool same = memcmp(src, dst, len) == 0 && memcmp(d.cpu, cpu, sizeof(cpu)) == 0 &&
		    memcmp(tags, tm_tag_store_soft_array(dst_tags, 0), len / TM_TAG_GRANULE) == 0;
	printf("vCPUs touched %" PRIu64 " of %" PRIu64 " pages, %" PRIu64 " wrong; copy %s\n",
	       touched, npages, wrong, same ? "identical (data, tags, device state)" : "DIFFERS");
	/* Declined, the copy is still whole, but this program is about postcopy. */
	return same && !declined && d.running && wrong == 0 && touched == npages ? 0 : 1;
}
