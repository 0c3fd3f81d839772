/* SPDX-License-Identifier: MIT */
/*
 * bench/guest-dirty/dirty.c: the running guest of bench/run's QEMU live rows (bench/lib/qemulive.py).
 *
 * As the /init of a tiny initramfs (PID 1) under a Debian kernel: mounts /proc, reads tm.rate=
 * (bytes per second to dirty, 0 = idle) and tm.fill= (bytes to fill; default: all the kernel says
 * is available but a margin) from /proc/cmdline, fills that memory (three pages in four with
 * pseudo-random words, one in four left zero, as the tagmig demo's guest starts), prints READY,
 * then dirties pages forever at the rate, paced by CLOCK_MONOTONIC, and prints a line a second
 * with its running count. A page is dirtied by one 8-byte store of a new value at a random
 * place in a page chosen uniformly at random: a migration must send the whole page again, and a
 * guest under TCG can reach rates a memset of whole pages could not. Rate = pages x 4096 per s.
 *
 * On a host (not PID 1), for bench/test-live.py: dirty --rate BYTES --fill BYTES --seconds S
 * runs the same fill and loop for S seconds and prints the same lines.
 *
 * The pacing never runs ahead of the clock and never catches up more than PACE_DEBT_NS of lost
 * time in a burst: a guest that was descheduled (or paused by the migration) resumes at the rate,
 * it does not dirty the backlog at once. Built static by bench/lib/dirtyguest.py; standard C and
 * Linux system calls only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define PACE_DEBT_NS 20000000ull  /* at most 20 ms of missed dirtying is made up in a burst */
#define REPORT_NS 1000000000ull   /* a line a second */
#define BATCH 256u                /* pages between clock reads */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void say(const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	for (int off = 0; off < n;) {
		ssize_t w = write(1, line + off, (size_t)(n - off));

		if (w <= 0 && errno != EINTR)
			return;
		if (w > 0)
			off += (int)w;
	}
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* "123", "100M", "1G" (binary suffixes, as tagmig's --dirty-rate); 0 with *ok false if bad. */
static uint64_t parse_size(const char *s, int *ok)
{
	char *end;
	uint64_t v = strtoull(s, &end, 10);

	*ok = end != s;
	switch (*end) {
	case 'K': case 'k': v <<= 10; end++; break;
	case 'M': case 'm': v <<= 20; end++; break;
	case 'G': case 'g': v <<= 30; end++; break;
	default: break;
	}
	if (*end && *end != ' ' && *end != '\n')
		*ok = 0;
	return v;
}

/* The value of "key=" in the kernel command line, or NULL. */
static const char *cmdline_arg(const char *cmdline, const char *key)
{
	size_t kl = strlen(key);

	for (const char *p = cmdline; (p = strstr(p, key)) != NULL; p += kl)
		if ((p == cmdline || p[-1] == ' ') && p[kl] == '=')
			return p + kl + 1;
	return NULL;
}

static uint64_t meminfo_kib(const char *key)
{
	char buf[4096];
	int fd = open("/proc/meminfo", O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	const char *p = strstr(buf, key);
	return p ? strtoull(p + strlen(key) + 1, NULL, 10) : 0;
}

static void fill(uint8_t *ram, uint64_t npages, uint64_t seed)
{
	for (uint64_t p = 0; p < npages; p++) {
		uint64_t *w = (uint64_t *)(ram + p * PAGE);

		if (p % 4 == 3)
			continue; /* a zero page */
		for (unsigned i = 0; i < PAGE / 8; i++)
			w[i] = xorshift(&seed) | 1;
	}
}

/*
 * Dirties npages at rate bytes/s until the deadline (0: forever); reports every second.
 * Returns the pages dirtied.
 */
static uint64_t dirty_loop(uint8_t *ram, uint64_t npages, uint64_t rate, uint64_t seconds,
			   uint64_t seed)
{
	const uint64_t t0 = now_ns(), stop = seconds ? t0 + seconds * 1000000000ull : 0;
	uint64_t base = t0;          /* pacing origin: moved forward when debt is dropped */
	uint64_t base_pages = 0;     /* pages dirtied when base was set */
	uint64_t done = 0, next_report = t0 + REPORT_NS, last_t = t0, last_done = 0;

	for (;;) {
		uint64_t t = now_ns();

		if (t >= next_report) {
			uint64_t dt = t - last_t;

			say("TAGMIG-DIRTY t_ms %" PRIu64 " pages %" PRIu64 " rate %" PRIu64,
			    (t - t0) / 1000000, done,
			    dt ? (uint64_t)((double)(done - last_done) * PAGE * 1e9 / (double)dt) : 0);
			last_t = t;
			last_done = done;
			next_report = t + REPORT_NS;
		}
		if (stop && t >= stop)
			return done;
		if (!rate) {
			struct timespec ts = { .tv_sec = 0, .tv_nsec = 100000000 };

			nanosleep(&ts, NULL);
			continue;
		}
		/* pages due by now at the rate, from the pacing origin */
		uint64_t due = base_pages + (uint64_t)((double)(t - base) * (double)rate / 1e9 / PAGE);
		uint64_t debt_max = (uint64_t)((double)PACE_DEBT_NS * (double)rate / 1e9 / PAGE) + BATCH;

		if (due > done + debt_max) {
			/* fell behind (descheduled, or the guest was paused): resume at the rate
			 * from here rather than dirtying the backlog in a burst */
			base = t;
			base_pages = done;
			due = done + BATCH;
		}
		if (due <= done) {
			uint64_t wait_ns = (uint64_t)((double)PAGE * 1e9 / (double)rate);
			struct timespec ts;

			if (wait_ns < 200000)
				wait_ns = 200000; /* sleep in slices of at least 0.2 ms */
			ts.tv_sec = (time_t)(wait_ns / 1000000000ull);
			ts.tv_nsec = (long)(wait_ns % 1000000000ull);
			nanosleep(&ts, NULL);
			continue;
		}
		uint64_t n = due - done;

		if (n > BATCH)
			n = BATCH;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t r = xorshift(&seed);
			volatile uint64_t *w = (volatile uint64_t *)(ram + (r >> 11) % npages * PAGE);

			w[r & (PAGE / 8 - 1)] = r | 1;
		}
		done += n;
	}
}

static int usage(void)
{
	say("usage: dirty --rate BYTES_PER_S --fill BYTES --seconds S  (or as /init: tm.rate=, "
	    "tm.fill= on the kernel command line)");
	return 2;
}

int main(int argc, char **argv)
{
	const int as_init = getpid() == 1;
	uint64_t rate = 0, fill_bytes = 0, seconds = 0;
	int ok = 1;

	if (as_init) {
		char cmdline[4096];
		int fd;
		ssize_t n;

		mkdir("/proc", 0555);
		mount("proc", "/proc", "proc", 0, NULL);
		fd = open("/proc/cmdline", O_RDONLY);
		n = fd >= 0 ? read(fd, cmdline, sizeof(cmdline) - 1) : -1;
		if (fd >= 0)
			close(fd);
		cmdline[n > 0 ? n : 0] = 0;
		say("TAGMIG-DIRTY-BOOTED");
		const char *v = cmdline_arg(cmdline, "tm.rate");
		if (v)
			rate = parse_size(v, &ok);
		if (ok && (v = cmdline_arg(cmdline, "tm.fill")) != NULL)
			fill_bytes = parse_size(v, &ok);
		if (!ok)
			say("TAGMIG-DIRTY bad tm.rate= or tm.fill=: %s", cmdline);
		if (!fill_bytes) {
			/* all that is available but a margin for the kernel's own needs */
			uint64_t avail = meminfo_kib("MemAvailable:") * 1024;
			uint64_t keep = avail / 16 > (24u << 20) ? avail / 16 : (24u << 20);

			fill_bytes = avail > keep ? avail - keep : 0;
		}
	} else {
		for (int i = 1; i < argc; i++) {
			if (i + 1 >= argc)
				return usage();
			if (!strcmp(argv[i], "--rate"))
				rate = parse_size(argv[++i], &ok);
			else if (!strcmp(argv[i], "--fill"))
				fill_bytes = parse_size(argv[++i], &ok);
			else if (!strcmp(argv[i], "--seconds"))
				seconds = parse_size(argv[++i], &ok);
			else
				return usage();
			if (!ok)
				return usage();
		}
		if (!fill_bytes || !seconds)
			return usage();
	}
	uint64_t npages = fill_bytes / PAGE;
	uint8_t *ram = npages ? mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
				     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;

	if (ram == MAP_FAILED) {
		say("TAGMIG-DIRTY cannot map %" PRIu64 " bytes: %s", fill_bytes, strerror(errno));
		if (!as_init)
			return 1;
		for (;;)
			pause();
	}
	uint64_t t = now_ns();

	fill(ram, npages, 0x6469727479ull);
	say("TAGMIG-DIRTY-READY fill %" PRIu64 " pages %" PRIu64 " rate %" PRIu64 " fill_ms %" PRIu64,
	    npages * PAGE, npages, rate, (now_ns() - t) / 1000000);
	uint64_t done = dirty_loop(ram, npages, rate, seconds, 0x9e3779b97f4a7c15ull);

	/* only on a host: PID 1 dirties forever */
	say("TAGMIG-DIRTY-DONE pages %" PRIu64 " seconds %" PRIu64, done, seconds);
	return 0;
}
