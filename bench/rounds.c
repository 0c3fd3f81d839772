/* SPDX-License-Identifier: MIT */
/*
 * Short rounds and small packets, io_uring against sockets, side by side over loopback: what a
 * live migration is made of besides its first full round (issue 16). Both ends run in this
 * process (the receiver in a thread), through the public API only.
 *
 *   rounds [--size 512M] [--channels 2] [--backend sockets|io_uring|all] [--iters 1000]
 *          [--sessions 1000] [--dirty 5] [--zerocopy 0|1|-1] [--repeat 3]
 *          [--scattered-rounds 5] [--session-gap 0]
 *
 * Per backend and repeat (the backends alternate, so a slow phase of a shared machine hits both,
 * and which one goes first alternates from repeat to repeat):
 * one session over a guest of --size random pages (anonymous memory, MADV_HUGEPAGE) runs
 *   full-cold   a full sequential round into a fresh destination (tm_sender_queue_bitmap, sync),
 *               whose memory the host backs (host_prime), as a bare-metal host's would be
 *   full-warm   the same again: the destination is written now, as in every later round
 *   scattered   the session's first round of --dirty percent random pages (one bitmap, sync)
 *   scattered-later  the median of --scattered-rounds - 1 more such rounds (a new draw each):
 *               the first pays the session's first touches of memory that later ones do not
 *               (README, "The first round with short runs ...")
 *   zero        a full round after the guest wrote zeros over all of its RAM
 *   empty       --iters calls of tm_sender_sync() with nothing queued (an idle guest's round:
 *               complete at once, no SYNC goes to the network)
 *   one-page    --iters rounds of one random page each (queue it, tm_sender_sync()): the cost
 *               of a round that goes to the network, one round trip (the page and the SYNCs)
 * then 2 x --sessions sessions, --session-gap ms apart (the previous session's teardown, kernel
 * work included, out of the next one's finish), each timing tm_sender_finish() (END and its
 * acknowledgement on every connection; nothing left to send) after a last round of 64 pages:
 *   finish      at once, as a VMM's downtime runs them
 *   finish after idle  every other session, after 1 ms of nothing: long enough for an idle vCPU
 *               to halt, whose wake-up the header's second round trip measures
 *
 * Output: CSV rows (host, kernel, backend, channels, page size, row, GiB/s or microseconds), the
 * median of the repeats per row, io_uring / sockets per row, and the goals. Rates count
 * guest RAM covered by the round (pages x page size) per second of sender wall time.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench-session.h"

#define PAGE BENCH_PAGE

static uint64_t opt_size = 512ull << 20;
static unsigned opt_channels = 2;
static const char *opt_backend = "all";
static unsigned opt_iters = 1000;
static unsigned opt_sessions = 1000;
static unsigned opt_dirty = 5;
static unsigned opt_repeat = 3;
static int opt_zerocopy; /* tm_tuning.zerocopy of the sender */
static unsigned opt_scattered = 5; /* scattered rounds per run: the first, the later ones' median */
static unsigned opt_gap_ms;        /* pause before each timed finish's session */

/* A connected session of the backend io (bench-session.c). */
static tm_sender *session_open(bench_recv *t, bench_side *src, bench_side *dst, const char *io)
{
	tm_sender_config cfg = { .channels = opt_channels, .io_backend = io, .timeout_ms = 30000,
				 .tuning.zerocopy = opt_zerocopy };
	return bench_session_open(t, src, dst, &cfg, NULL);
}

/* Monotonic time in microseconds, to the nanosecond: an empty round takes about one. */
static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Queues the pages of bitmap and syncs; returns the seconds the round took. */
static double round_of(tm_sender *s, const uint64_t *bitmap, uint64_t npages)
{
	GError *error = NULL;
	int64_t t0 = g_get_monotonic_time();
	if (tm_sender_queue_bitmap(s, 0, bitmap, 0, npages, &error) < 0 ||
	    tm_sender_sync(s, &error) < 0)
		bench_die("round", error);
	return (double)(g_get_monotonic_time() - t0) / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The q-quantile (0..1) of v[0..n), sorting v. */
static double quantile(double *v, size_t n, double q)
{
	qsort(v, n, sizeof(*v), cmp_double);
	size_t i = (size_t)(q * (double)(n - 1) + 0.5);
	return v[MIN(i, n - 1)];
}

/*
 * The host's floor under every hand-over: a byte sent back and forth between two threads over a
 * socketpair, each blocking in read() (the shape of a round: the peer sleeps until the message
 * comes), back to back, and each after IDLE_US of nothing (the shape of a finish that follows a
 * pause). On a VM whose idle vCPUs halt, waking the other CPU is an exit to the hypervisor, and
 * that, not the session, can be most of a round; the header says what this host costs.
 */
#define FLOOR_ITERS 2000
#define FLOOR_IDLE_ITERS 500
#define IDLE_US 1000 /* long enough for an idle CPU to halt */

static gpointer floor_echo(gpointer data)
{
	int fd = GPOINTER_TO_INT(data);
	char c;
	while (read(fd, &c, 1) == 1 && write(fd, &c, 1) == 1)
		;
	return NULL; /* the other end closed */
}

/* Up to iters round trips through fd, each after gap_us asleep, timed into t; how many ran. */
static unsigned ping_pong(int fd, unsigned iters, unsigned gap_us, double *t)
{
	unsigned n = 0;
	for (char c = 'x'; n < iters; n++) {
		if (gap_us)
			g_usleep(gap_us);
		int64_t t0 = g_get_monotonic_time();
		if (write(fd, &c, 1) != 1 || read(fd, &c, 1) != 1)
			break;
		t[n] = (double)(g_get_monotonic_time() - t0);
	}
	return n;
}

static void host_floor(double *median, double *p99, double *idle_median, double *idle_p99)
{
	int fd[2];
	*median = *p99 = *idle_median = *idle_p99 = 0;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, fd) < 0)
		return;
	g_autofree double *t = g_new(double, FLOOR_ITERS);
	g_autofree double *ti = g_new(double, FLOOR_IDLE_ITERS);
	GThread *th = g_thread_new("floor", floor_echo, GINT_TO_POINTER(fd[1]));
	unsigned n = ping_pong(fd[0], FLOOR_ITERS, 0, t);
	unsigned ni = n == FLOOR_ITERS ? ping_pong(fd[0], FLOOR_IDLE_ITERS, IDLE_US, ti) : 0;
	shutdown(fd[0], SHUT_RDWR); /* the echo's read ends */
	g_thread_join(th);
	close(fd[0]);
	close(fd[1]);
	if (n) {
		*median = quantile(t, n, 0.5);
		*p99 = quantile(t, n, 0.99);
	}
	if (ni) {
		*idle_median = quantile(ti, ni, 0.5);
		*idle_p99 = quantile(ti, ni, 0.99);
	}
}

/* The kernel's idle driver ("none" without one) and, with the haltpoll module, its window. */
static const char *idle_line(void)
{
	static char buf[160];
	g_autofree char *drv = NULL, *poll = NULL;
	g_file_get_contents("/sys/devices/system/cpu/cpuidle/current_driver", &drv, NULL, NULL);
	g_file_get_contents("/sys/module/haltpoll/parameters/guest_halt_poll_ns", &poll, NULL, NULL);
	g_snprintf(buf, sizeof(buf), "cpuidle driver %s%s%s", drv ? g_strstrip(drv) : "none",
		   poll ? ", guest_halt_poll_ns " : "", poll ? g_strstrip(poll) : "");
	return buf;
}

enum {
	FULL_COLD, FULL_WARM, SCATTERED, SCATTERED_LATER, ZERO, EMPTY_MED, EMPTY_P99, ONE_MED, ONE_P99, FINISH_MED,
	FINISH_P99, FINISH_IDLE_MED, FINISH_IDLE_P99, NROWS
};
static const char *const row_name[NROWS] = {
	"full-cold GiB/s", "full-warm GiB/s", "scattered GiB/s", "scattered-later GiB/s",
	"zero GiB/s",
	"empty round median us", "empty round p99 us", "one-page round median us",
	"one-page round p99 us", "finish median us", "finish p99 us", "finish after idle median us",
	"finish after idle p99 us",
};

static const char *host_line(void)
{
	static char buf[256];
	struct utsname u;
	char host[64] = "";
	gethostname(host, sizeof(host) - 1);
	uname(&u);
	g_snprintf(buf, sizeof(buf), "%s,%s %s,%ld", host, u.sysname, u.release,
		   sysconf(_SC_NPROCESSORS_ONLN));
	return buf;
}

/*
 * Touches and frees len bytes, so that the run's own allocations get memory the host backs. A VM
 * that reports its free pages to the host (virtio-balloon free page reporting) gives memory freed
 * a few seconds ago back, and the next first touch of such a page traps to the hypervisor, a cost
 * a bare-metal destination never pays: without this, the backend that ran second got the pages
 * the first had just freed, still backed, and its full-cold round ran 2-5x faster for that alone.
 */
static void host_prime(size_t len)
{
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	madvise(p, len, MADV_HUGEPAGE);
	for (size_t i = 0; i < len; i += PAGE)
		p[i] = 1;
	munmap(p, len);
}

static void run_one(const char *io, double out[NROWS])
{
	bench_side src, dst;
	bench_recv t;
	uint64_t npages = opt_size / PAGE;
	size_t words = (size_t)(npages + 63) / 64;
	g_autofree uint64_t *all = g_new(uint64_t, words);
	g_autofree uint64_t *some = g_new0(uint64_t, words);
	uint64_t dirty = 0;

	bench_side_init(&src, opt_size, true);
	bench_side_init(&dst, opt_size, true);
	for (size_t i = 0; i < opt_size; i += 8) {
		uint64_t v = bench_rnd();
		memcpy(src.ram + i, &v, 8);
	}
	memset(all, 0xff, words * 8);
	if (npages % 64)
		all[words - 1] = (1ull << (npages % 64)) - 1;

	tm_sender *s = session_open(&t, &src, &dst, io);
	double gib = (double)opt_size / (1u << 30);
	host_prime(opt_size); /* just before: the host takes freed memory back within seconds */
	out[FULL_COLD] = gib / round_of(s, all, npages);
	out[FULL_WARM] = gib / round_of(s, all, npages);
	g_autofree double *scat = g_new(double, opt_scattered);
	for (unsigned k = 0; k < opt_scattered; k++) {
		/* A new draw each round: the destination's pages are not the last round's. */
		memset(some, 0, words * 8);
		for (dirty = 0; dirty < npages * opt_dirty / 100;) {
			uint64_t p = bench_rnd() % npages;
			if (!(some[p / 64] >> (p % 64) & 1)) {
				some[p / 64] |= 1ull << (p % 64);
				dirty++;
			}
		}
		scat[k] = (double)dirty * PAGE / (1u << 30) / round_of(s, some, npages);
	}
	out[SCATTERED] = scat[0];
	out[SCATTERED_LATER] = opt_scattered > 1 ? quantile(scat + 1, opt_scattered - 1, 0.5) : NAN;
	memset(src.ram, 0, opt_size);
	out[ZERO] = gib / round_of(s, all, npages);
	g_autofree double *lat = g_new(double, MAX(opt_iters, opt_sessions));
	for (unsigned i = 0; i < opt_iters; i++) {
		GError *error = NULL;
		double t0 = now_us();
		if (tm_sender_sync(s, &error) < 0)
			bench_die("sync", error);
		lat[i] = now_us() - t0;
	}
	out[EMPTY_MED] = quantile(lat, opt_iters, 0.5);
	out[EMPTY_P99] = quantile(lat, opt_iters, 0.99);
	for (unsigned i = 0; i < opt_iters; i++) {
		GError *error = NULL;
		uint64_t page = bench_rnd() % npages;
		double t0 = now_us();
		if (tm_sender_queue_pages(s, 0, &page, 1, &error) < 0)
			bench_die("queue", error);
		if (tm_sender_sync(s, &error) < 0)
			bench_die("sync", error);
		lat[i] = now_us() - t0;
	}
	out[ONE_MED] = quantile(lat, opt_iters, 0.5);
	out[ONE_P99] = quantile(lat, opt_iters, 0.99);
	GError *error = NULL;
	if (tm_sender_finish(s, &error) < 0)
		bench_die("finish", error);
	bench_session_close(&t, s);
	bench_side_fini(&src);
	bench_side_fini(&dst);

	/* finish alone: sessions of 64 pages, all synced, so that END has nothing to wait for
	 * (and the session is complete: the receiver refuses an end with pages missing). */
	bench_side one_src, one_dst;
	bench_side_init(&one_src, PAGE * 64, true);
	bench_side_init(&one_dst, PAGE * 64, true);
	uint64_t one = ~0ull;
	uint64_t sleeps = 0;
	g_autofree double *lat_idle = g_new(double, opt_sessions);
	for (unsigned i = 0; i < 2 * opt_sessions; i++) {
		bool idle = i % 2; /* every other session idles before its finish */
		if (opt_gap_ms)
			g_usleep(opt_gap_ms * 1000ul);
		s = session_open(&t, &one_src, &one_dst, io);
		/* An established session: both control threads run (a PING answered). A session
		 * this young may still be starting them, which is connect's cost, not finish's: on
		 * a loaded machine a new thread can wait a scheduler slice (ms) for its first run. */
		for (tm_live_stats ls = { .size = sizeof(ls) };
		     tm_sender_get_live_stats(s, &ls) >= 0 && !ls.rtt_us;)
			g_usleep(20);
		/* The last round, then finish at once, as a VMM's downtime runs them; or after
		 * IDLE_US of nothing, long enough for an idle CPU to halt (host_floor). */
		round_of(s, &one, 64);
		if (idle)
			g_usleep(IDLE_US);
		struct rusage ru0, ru1;
		getrusage(RUSAGE_THREAD, &ru0);
		double t0 = now_us();
		if (tm_sender_finish(s, &error) < 0)
			bench_die("finish", error);
		(idle ? lat_idle : lat)[i / 2] = now_us() - t0;
		getrusage(RUSAGE_THREAD, &ru1);
		if (!idle)
			sleeps += (uint64_t)(ru1.ru_nvcsw - ru0.ru_nvcsw);
		bench_session_close(&t, s);
	}
	/* Each sleep of finish's thread is a wake-up to wait for inside the guest's downtime. */
	printf("# %s: finish's thread slept %.2f times per finish (voluntary context switches, "
	       "mean of %u)\n", io, (double)sleeps / opt_sessions, opt_sessions);
	out[FINISH_MED] = quantile(lat, opt_sessions, 0.5);
	out[FINISH_P99] = quantile(lat, opt_sessions, 0.99);
	out[FINISH_IDLE_MED] = quantile(lat_idle, opt_sessions, 0.5);
	out[FINISH_IDLE_P99] = quantile(lat_idle, opt_sessions, 0.99);
	bench_side_fini(&one_src);
	bench_side_fini(&one_dst);
}

int main(int argc, char **argv)
{
	bench_prog = "rounds";
	g_autofree char *size = NULL;
	GOptionEntry entries[] = {
		{ "size", 0, 0, G_OPTION_ARG_STRING, &size, "guest RAM (default 512M)", "SIZE" },
		{ "channels", 0, 0, G_OPTION_ARG_INT, &opt_channels, "channels (default 2)", "N" },
		{ "backend", 0, 0, G_OPTION_ARG_STRING, &opt_backend,
		  "sockets, io_uring or all (default)", "NAME" },
		{ "iters", 0, 0, G_OPTION_ARG_INT, &opt_iters, "empty rounds (default 1000)", "N" },
		{ "sessions", 0, 0, G_OPTION_ARG_INT, &opt_sessions,
		  "sessions timed at finish, and as many again after 1 ms idle (default 1000)",
		  "N" },
		{ "dirty", 0, 0, G_OPTION_ARG_INT, &opt_dirty,
		  "percent of pages in the scattered round (default 5)", "P" },
		{ "zerocopy", 0, 0, G_OPTION_ARG_INT, &opt_zerocopy,
		  "io_uring zero-copy sends: 0 while they pay (default), 1 always, -1 never", "Z" },
		{ "repeat", 0, 0, G_OPTION_ARG_INT, &opt_repeat,
		  "runs per backend, median kept (default 3)", "N" },
		{ "scattered-rounds", 0, 0, G_OPTION_ARG_INT, &opt_scattered,
		  "scattered rounds per run: the first, and the median of the others (default 5)",
		  "N" },
		{ "session-gap", 0, 0, G_OPTION_ARG_INT, &opt_gap_ms,
		  "pause before each session timed at finish, ms (default 0)", "MS" },
		{ NULL },
	};
	g_autoptr(GOptionContext) ctx = g_option_context_new("- short rounds, io_uring against sockets");
	g_option_context_add_main_entries(ctx, entries, NULL);
	GError *error = NULL;
	if (!g_option_context_parse(ctx, &argc, &argv, &error))
		bench_die("options", error);
	if (size) {
		char *end;
		opt_size = g_ascii_strtoull(size, &end, 10);
		if (*end == 'K' || *end == 'k')
			opt_size <<= 10;
		else if (*end == 'M' || *end == 'm')
			opt_size <<= 20;
		else if (*end == 'G' || *end == 'g')
			opt_size <<= 30;
	}
	opt_size = MAX(opt_size / PAGE * PAGE, 64 * PAGE);
	opt_iters = MAX(opt_iters, 1);
	opt_sessions = MAX(opt_sessions, 1);
	opt_dirty = CLAMP(opt_dirty, 1, 100);
	opt_repeat = MAX(opt_repeat, 1);
	opt_scattered = MAX(opt_scattered, 1);

	const char *all[] = { "sockets", "io_uring" };
	const char *backends[2];
	unsigned nb = 0;
	for (unsigned i = 0; i < 2; i++) {
		if (strcmp(opt_backend, "all") && strcmp(opt_backend, all[i]))
			continue;
		g_autoptr(GError) why = NULL;
		if (tm_io_backend_probe(all[i], &why) < 0) {
			printf("# %s skipped: %s\n", all[i], why->message);
			continue;
		}
		backends[nb++] = all[i];
	}
	if (!nb) {
		fprintf(stderr, "rounds: no backend to run\n");
		return 77;
	}

	printf("# rounds: guest %" G_GUINT64_FORMAT " MiB, %u channels, %u x %u%% scattered, %u "
	       "empty rounds, %u finishes %u ms apart, %u repeats\n",
	       opt_size >> 20, opt_channels, opt_scattered, opt_dirty, opt_iters, opt_sessions,
	       opt_gap_ms, opt_repeat);
	double floor_med, floor_p99, idle_med, idle_p99;
	host_floor(&floor_med, &floor_p99, &idle_med, &idle_p99);
	printf("# host: thread round trip %.0f us median, %.0f us p99 (socketpair ping-pong, %u); "
	       "after %u us idle %.0f us median, %.0f us p99 (%u); %s\n", floor_med, floor_p99,
	       FLOOR_ITERS, IDLE_US, idle_med, idle_p99, FLOOR_IDLE_ITERS, idle_line());
	printf("host,kernel,cpus,backend,channels,page_size,repeat,row,value\n");
	g_autofree double *res = g_new0(double, (size_t)nb * opt_repeat * NROWS);
	for (unsigned k = 0; k < opt_repeat; k++) {
		for (unsigned i = 0; i < nb; i++) {
			/* Which backend goes first alternates: a run's order (memory the first one
			 * freed, a machine warming up) must not favour one backend in the medians. */
			unsigned b = k % 2 ? nb - 1 - i : i;
			double *out = res + ((size_t)b * opt_repeat + k) * NROWS;
			run_one(backends[b], out);
			for (unsigned r = 0; r < NROWS; r++) {
				if (isnan(out[r]))
					continue; /* scattered-later with --scattered-rounds 1 */
				printf("%s,%s,%u,%u,%u,%s,%.2f\n", host_line(), backends[b],
				       opt_channels, PAGE, k + 1, row_name[r], out[r]);
			}
			fflush(stdout);
		}
	}

	double med[2][NROWS];
	for (unsigned b = 0; b < nb; b++) {
		for (unsigned r = 0; r < NROWS; r++) {
			double v[opt_repeat];
			for (unsigned k = 0; k < opt_repeat; k++)
				v[k] = res[((size_t)b * opt_repeat + k) * NROWS + r];
			med[b][r] = quantile(v, opt_repeat, 0.5);
		}
	}
	printf("\n# median of %u\n| row | %s%s%s |%s\n| --- | --- |%s%s\n", opt_repeat,
	       backends[0], nb > 1 ? " | " : "", nb > 1 ? backends[1] : "",
	       nb > 1 ? " io_uring / sockets |" : "", nb > 1 ? " --- |" : "",
	       nb > 1 ? " --- |" : "");
	for (unsigned r = 0; r < NROWS; r++) {
		if (isnan(med[0][r]))
			continue; /* scattered-later with --scattered-rounds 1 */
		if (nb > 1) {
			/* GiB/s: higher is better; microseconds: lower is, so the ratio is inverted. */
			bool rate = r <= ZERO;
			printf("| %s | %.2f | %.2f | %.2fx |\n", row_name[r], med[0][r], med[1][r],
			       rate ? med[1][r] / med[0][r] : med[0][r] / med[1][r]);
		} else {
			printf("| %s | %.2f |\n", row_name[r], med[0][r]);
		}
	}
	printf("\n# goals (issue 16)\n");
	for (unsigned b = 0; b < nb; b++) {
		const double *m = med[b];
		printf("%-6s [%s] empty round p99 %.1f us (goal < 100; no network round trip: a "
		       "one-page round's p99 is %.0f us)\n",
		       m[EMPTY_P99] < 100 ? "MET" : "MISSED", backends[b], m[EMPTY_P99], m[ONE_P99]);
		printf("%-6s [%s] finish p99 %.0f us (goal < 200; right after the last round. After "
		       "%u us idle: %.0f us, where the host's bare thread round trip takes %.0f)\n",
		       m[FINISH_P99] < 200 ? "MET" : "MISSED", backends[b], m[FINISH_P99], IDLE_US,
		       m[FINISH_IDLE_P99], idle_p99);
		printf("%-6s [%s] scattered %u%% round %.2fx the full warm round (goal >= 0.8; the "
		       "session's first)\n",
		       m[SCATTERED] >= 0.8 * m[FULL_WARM] ? "MET" : "MISSED", backends[b], opt_dirty,
		       m[SCATTERED] / m[FULL_WARM]);
		if (opt_scattered > 1)
			printf("%-6s [%s] scattered %u%% round %.2fx the full warm round (goal >= "
			       "0.8; the later ones, median of %u)\n",
			       m[SCATTERED_LATER] >= 0.8 * m[FULL_WARM] ? "MET" : "MISSED",
			       backends[b], opt_dirty, m[SCATTERED_LATER] / m[FULL_WARM],
			       opt_scattered - 1);
	}
	if (nb > 1) {
		unsigned worse = 0;
		for (unsigned r = 0; r < NROWS; r++)
			worse += r <= ZERO ? med[1][r] < med[0][r] : med[1][r] > med[0][r];
		printf("%-6s io_uring >= sockets on every row (%u of %u rows behind)\n",
		       worse ? "MISSED" : "MET", worse, NROWS);
	}
	return 0;
}
