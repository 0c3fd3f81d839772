/* SPDX-License-Identifier: MIT */
/* The placer tests' shared rig: placer-rig.h. */
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <glib.h>

#include "common/uffd-internal.h"
#include "placer-rig.h"
#include "tagmig/error.h"

bool placer_rig_open(placer_rig *g, uint64_t uffd_features, const char *lacking)
{
	g_autoptr(GError) err = NULL;

	*g = (placer_rig){ .uffd = -1 };
	if (tm_uffd_open(true, true, uffd_features, &g->uffd, NULL, &err) < 0) {
		g_autofree char *why = g_strdup_printf("%s: %s", lacking, err->message);
		g_test_skip(why);
		return false;
	}
	g->ram = mmap(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	g_assert_true(g->ram != MAP_FAILED);
	madvise(g->ram, NPAGES * PS, MADV_NOHUGEPAGE);
	g_assert_cmpint(tm_ram_layout_new(&g->layout), ==, 0);
	g_assert_cmpint(tm_ram_layout_add_block(g->layout, "pc.ram", g->ram, NPAGES * PS, PS, 0,
						&err), ==, 0);
	return true;
}

void placer_rig_register(placer_rig *g)
{
	g_autoptr(GError) err = NULL;
	g_assert_cmpint(tm_uffd_register_missing(g->uffd, g->ram, NPAGES * PS, &err), ==, 0);
}

void placer_rig_close(placer_rig *g)
{
	tm_ram_layout_free(g->layout);
	if (g->ram)
		munmap(g->ram, NPAGES * PS);
	if (g->uffd >= 0)
		close(g->uffd);
	*g = (placer_rig){ .uffd = -1 };
}

void placer_rig_data(uint64_t page, uint8_t *out)
{
	for (unsigned i = 0; i < PS; i++)
		out[i] = (uint8_t)(page * 7 + i / 64 + 1);
}

void placer_rig_tags(uint64_t page, uint8_t *out)
{
	for (unsigned i = 0; i < GRANULES; i++)
		out[i] = (uint8_t)((page + i) % 15 + 1);
}

void placer_rig_read_fault(const placer_rig *g, uint64_t page)
{
	struct pollfd pfd = { .fd = g->uffd, .events = POLLIN };
	struct uffd_msg msg;

	g_assert_cmpint(poll(&pfd, 1, 10000), ==, 1);
	g_assert_cmpint(read(g->uffd, &msg, sizeof(msg)), ==, sizeof(msg));
	g_assert_cmpuint(msg.event, ==, UFFD_EVENT_PAGEFAULT);
	g_assert_cmpuint(msg.arg.pagefault.address / PS * PS, ==,
			 (uint64_t)(uintptr_t)(g->ram + page * PS));
}
