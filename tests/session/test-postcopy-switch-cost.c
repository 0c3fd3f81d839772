/* SPDX-License-Identifier: MIT */
/*
 * The cost of the destination's switch to postcopy in system calls, not in time (robust on a
 * loaded CI machine): against the hand-made sender of postcopy-dest.h, a precopy round, then
 * DISCARDs of many one-page runs on both channels and pages never sent. Every one of them must be
 * absent at the switch and come back right, and the switch must drop them in a few batched calls
 * (session/drop-pages.h): before, one madvise(2) per DISCARD range and again one per missing run
 * at the barrier, which made the downtime grow with the pages missing (bench/README.md, live).
 *
 * Skips without userfaultfd, and where process_madvise(2) refuses MADV_DONTNEED on the calling
 * process (before Linux 6.13: there the switch still makes one madvise(2) per range).
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "postcopy-dest.h"
#include "session/drop-pages.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_process_madvise
#define SYS_process_madvise 440
#endif

/* NULL when process_madvise(2) drops two ranges of this process at once, else why not. */
static const char *batch_unsupported(void)
{
	static char why[128];
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *m = mmap(NULL, 4 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	g_assert_true(m != MAP_FAILED);
	memset(m, 1, 4 * (size_t)page);
	int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	struct iovec v[2] = { { m, (size_t)page }, { m + 2 * page, (size_t)page } };
	long r = fd < 0 ? -1 : syscall(SYS_process_madvise, fd, v, (size_t)2, MADV_DONTNEED, 0u);
	int err = errno;
	bool ok = r == 2 * page && m[0] == 0 && m[page] == 1 && m[2 * page] == 0;
	if (fd >= 0)
		close(fd);
	munmap(m, 4 * (size_t)page);
	if (ok)
		return NULL;
	g_snprintf(why, sizeof(why), "%s: %s (before Linux 6.13?)",
		   fd < 0 ? "pidfd_open" : "process_madvise(MADV_DONTNEED)",
		   r < 0 ? g_strerror(err) : "did not drop the pages");
	return why;
}

static void discard_many(fake_sender *w, unsigned ch, const tm_discard_range *r, uint32_t n)
{
	uint8_t buf[TM_FRAME_HDR_LEN + TM_DISCARD_HDR_LEN + 8 * 32];
	g_assert_cmpuint(n, <=, 32);
	size_t len = tm_discard_encode(buf, w->seq[ch]++, 0, r, n);
	fake_send(w, ch, buf, len);
}

/* Pages 49, 51, ..., 63 (channel 1) are never sent. */
static bool never_sent(unsigned p)
{
	return p >= 48 && p % 2 == 1;
}

/* Even pages of 0..47 were sent and then changed: the DISCARDs drop them. */
static bool discarded(unsigned p)
{
	return p < 48 && p % 2 == 0;
}

static void test_switch_cost(void)
{
	const char *why = batch_unsupported();
	if (why) {
		g_test_skip(why);
		return;
	}
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!dest_open(&d, &w))
		return;
	responder_start(&rs, &w, 1);
	for (unsigned p = 0; p < 48; p += 16)
		raw_data(&w, p, 16, 0);
	for (unsigned p = 48; p < NPAGES; p += 2)
		raw_data(&w, p, 1, 0);
	/* Channel 0 has chunks 0 and 2 (pages 0-15, 32-47), channel 1 chunks 1 and 3. */
	tm_discard_range r0[16], r1[8];
	uint32_t n0 = 0, n1 = 0;
	for (unsigned p = 0; p < 48; p++)
		if (discarded(p)) {
			if (channel_of(p) == 0)
				r0[n0++] = (tm_discard_range){ p, 1 };
			else
				r1[n1++] = (tm_discard_range){ p, 1 };
		}
	g_assert_cmpuint(n0, ==, 16);
	g_assert_cmpuint(n1, ==, 8);
	uint64_t calls0 = tm_drop_test_syscalls(), ranges0 = tm_drop_test_ranges();
	discard_many(&w, CH_DATA0, r0, n0);
	discard_many(&w, CH_DATA1, r1, n1);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_postcopy(&w, 32);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	uint64_t calls = tm_drop_test_syscalls() - calls0, ranges = tm_drop_test_ranges() - ranges0;
	g_test_message("switch: %" G_GUINT64_FORMAT " system calls for %" G_GUINT64_FORMAT
		       " ranges (24 discarded runs, 8 never sent)",
		       (guint64)calls, (guint64)ranges);
	for (unsigned p = 0; p < NPAGES; p++)
		if (tm_receiver_page_present(d.r, 0, p) == (discarded(p) || never_sent(p)))
			g_error("page %u: %s at the switch", p,
				tm_receiver_page_present(d.r, 0, p) ? "present" : "missing");
	/* Each DISCARD's 8 or 16 ranges in one call (and a pidfd_open); the barrier drops only the
	 * 8 never-sent runs, in one call: what a DISCARD dropped is absent already. */
	g_assert_cmpuint(ranges, ==, 24 + 8);
	g_assert_cmpuint(calls, <=, 6);

	/* The missing pages fault and come back: generation 1 where discarded, 0 never sent. */
	vcpu v = { .d = &d, .first = 0, .step = 2, .count = 24, .gen = 1 };
	v.thread = g_thread_new("vcpu", vcpu_thread, &v);
	g_usleep(20000);
	for (unsigned p = 0; p < NPAGES; p++)
		if (discarded(p))
			raw_data(&w, p, 1, 1);
		else if (never_sent(p))
			raw_data(&w, p, 1, 0);
	g_thread_join(v.thread);
	g_assert_cmpuint(v.bad, ==, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "switch-cost");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, 0);
	for (unsigned p = 0; p < NPAGES; p++) {
		uint8_t want[PAGE], want_tags[PAGE / 16];
		make_page(p, discarded(p), want, want_tags);
		if (memcmp(d.g.ram[0] + (size_t)p * PAGE, want, PAGE) != 0 ||
		    memcmp(tm_tag_store_soft_array(d.g.tags, 0) + (size_t)p * PAGE / 16, want_tags,
			   PAGE / 16) != 0)
			g_error("page %u: not generation %u", p, discarded(p));
	}
	tm_live_stats st = { .size = sizeof(st) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &st), ==, 0);
	g_assert_cmpuint(st.discarded_pages, ==, 24);
	g_assert_cmpuint(st.postcopy_pages, ==, 32);
	dest_close(&d, &w);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-switch-cost", test_switch_cost, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
