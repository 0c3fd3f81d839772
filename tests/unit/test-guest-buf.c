/* SPDX-License-Identifier: MIT */
/* tm_guest_buf_new() / tm_guest_buf_free(): mapped buffers for copies of guest memory. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <glib.h>

#include "common/guest-buf.h"

static const size_t lens[] = { 1, 63, 64, 4095, 4096, 4097, 65536, 524288 + 2052 };

static size_t pg(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static long minor_faults(void)
{
	struct rusage ru;

	g_assert_cmpint(getrusage(RUSAGE_THREAD, &ru), ==, 0);
	return ru.ru_minflt;
}

/* Whether any page of [p, p + len) is mapped (mincore fails with ENOMEM on a hole). */
static bool mapped(const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p / pg() * pg();
	size_t span = (uintptr_t)p + len - a;
	g_autofree unsigned char *vec = g_malloc((span + pg() - 1) / pg());

	for (size_t off = 0; off < span; off += pg())
		if (mincore((void *)(a + off), pg(), vec) == 0)
			return true;
		else
			g_assert_cmpint(errno, ==, ENOMEM);
	return false;
}

static void test_new(void)
{
	for (unsigned i = 0; i < G_N_ELEMENTS(lens); i++) {
		size_t len = lens[i];
		uint8_t *b = tm_guest_buf_new(len);

		g_assert_nonnull(b);
		g_assert_cmpuint((uintptr_t)b % 64, ==, 0);
		for (size_t j = 0; j < len; j++)
			g_assert_cmpuint(b[j], ==, 0);
		memset(b, 0xa5, len);
		g_assert_cmpuint(b[len - 1], ==, 0xa5);
		g_assert_true(mapped(b, len));
		tm_guest_buf_free(b, len);
		/* Back to the kernel, guard pages too: no copy stays in this process. */
		g_assert_false(mapped(b, len));
	}
	tm_guest_buf_free(NULL, 4096);
}

/* Neither taking nor freeing a buffer touches its pages: only written ones are ever faulted
 * in (clearing a heap buffer before free faulted in every page of it). */
static void test_untouched(void)
{
	const size_t len = 1u << 20; /* under 2 MiB: no transparent huge page fits in it */
	long before = minor_faults();
	uint8_t *b = tm_guest_buf_new(len);

	b[len / 2] = 1;
	tm_guest_buf_free(b, len);
	long faults = minor_faults() - before;
	g_test_message("%ld minor faults for a 1 MiB buffer with one byte written", faults);
	g_assert_cmpint(faults, <, 16); /* 256 pages */
}

/* Whether every page of [p, p + len) is resident. */
static bool resident(const void *p, size_t len)
{
	uintptr_t a = (uintptr_t)p / pg() * pg();
	size_t pages = ((uintptr_t)p + len - a + pg() - 1) / pg();
	g_autofree unsigned char *vec = g_malloc(pages);

	g_assert_cmpint(mincore((void *)a, pages * pg(), vec), ==, 0);
	for (size_t i = 0; i < pages; i++)
		if (!(vec[i] & 1))
			return false;
	return true;
}

/* A resident buffer (a receive plan's stage) is backed when it is returned: the round that
 * first writes it takes no fault (on a host that traps every guest fault, 11-15 us a page, a
 * stage's 128 pages cost 1.5 ms of whichever round used short runs first: maybe the last). */
static void test_resident(void)
{
	for (unsigned i = 0; i < G_N_ELEMENTS(lens); i++) {
		size_t len = lens[i];
		uint8_t *b = tm_guest_buf_new_resident(len);

		g_assert_cmpuint((uintptr_t)b % 64, ==, 0);
		g_assert_true(resident(b, len));
		long before = minor_faults();
		for (size_t j = 0; j < len; j++)
			g_assert_cmpuint(b[j], ==, 0);
		memset(b, 0x5a, len);
		long faults = minor_faults() - before;
		g_test_message("%zu bytes: %ld minor faults reading and writing all of it", len,
			       faults);
		g_assert_cmpint(faults, <=, 1); /* 129 pages of 4 KiB at the most */
		tm_guest_buf_free(b, len);
		g_assert_false(mapped(b, len));
	}
	/* Its guards stay guards. */
	g_test_trap_subprocess("/guest-buf/resident/subprocess", 0, G_TEST_SUBPROCESS_DEFAULT);
	g_test_trap_assert_failed();
}

static void test_resident_guard(void)
{
	volatile uint8_t *b = tm_guest_buf_new_resident(4096);

	b[4096] = 1; /* faults */
	tm_guest_buf_free((void *)b, 4096);
}

/* The byte after the buffer (its length a multiple of 64) and, for a whole number of pages, the
 * byte before it, lie in guard pages: an access kills the process, in every build. */
static const struct guard {
	size_t len;
	long at;
} guards[] = { { 64, 64 }, { 4096, 4096 }, { 0, -1 }, { 524288 + 2112, 524288 + 2112 } };

/* len 0: two of the host's pages (4, 16 or 64 KiB), whose byte before is the lower guard. */
static size_t guard_len(const struct guard *g)
{
	return g->len ? g->len : 2 * pg();
}

static void test_guard_touch(gconstpointer data)
{
	const struct guard *g = data;
	volatile uint8_t *b = tm_guest_buf_new(guard_len(g));

	b[g->at] = 1; /* faults */
	tm_guest_buf_free((void *)b, guard_len(g));
}

static void test_guards(void)
{
	for (unsigned i = 0; i < G_N_ELEMENTS(guards); i++) {
		g_autofree char *path = g_strdup_printf("/guest-buf/guards/subprocess/%u", i);
		g_test_trap_subprocess(path, 0, G_TEST_SUBPROCESS_DEFAULT);
		g_test_trap_assert_failed();
		/* In bounds, the same buffer lives. */
		size_t len = guard_len(&guards[i]);
		volatile uint8_t *b = tm_guest_buf_new(len);
		b[0] = 1;
		b[len - 1] = 1;
		tm_guest_buf_free((void *)b, len);
	}
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/guest-buf/new", test_new);
	g_test_add_func("/guest-buf/untouched", test_untouched);
	g_test_add_func("/guest-buf/resident", test_resident);
	g_test_add_func("/guest-buf/resident/subprocess", test_resident_guard);
	g_test_add_func("/guest-buf/guards", test_guards);
	for (unsigned i = 0; i < G_N_ELEMENTS(guards); i++) {
		g_autofree char *path = g_strdup_printf("/guest-buf/guards/subprocess/%u", i);
		g_test_add_data_func(path, &guards[i], test_guard_touch);
	}
	return g_test_run();
}
