/* SPDX-License-Identifier: MIT */
/* The postcopy demo's destination vCPUs (demo-vcpus.h). */
#include <inttypes.h>
#include <string.h>

#include "demo-vcpus.h"

typedef struct vcpu {
	struct demo_vcpus *all;
	unsigned index;
	GThread *thread;
	uint64_t touched, blocked;
	char *first_bad;
} vcpu;

struct demo_vcpus {
	const tm_ram_layout *dst, *src;
	tm_tag_store *dst_tags, *src_tags;
	unsigned n;
	vcpu v[];
};

static gpointer vcpu_thread(gpointer data)
{
	vcpu *v = data;
	demo_vcpus *a = v->all;

	for (unsigned b = 0; b < tm_ram_layout_block_count(a->dst); b++) {
		tm_ram_block_info di, si;

		if (tm_ram_layout_block(a->dst, b, &di) < 0 || tm_ram_layout_block(a->src, b, &si) < 0)
			break;
		uint64_t n = di.length / di.page_size, gran = di.page_size / TM_TAG_GRANULE;
		const uint8_t *dt = tm_tag_store_soft_array(a->dst_tags, b);
		const uint8_t *st = tm_tag_store_soft_array(a->src_tags, b);

		for (uint64_t p = v->index; p < n; p += a->n) {
			const volatile uint8_t *page = (const uint8_t *)di.host + p * di.page_size;
			int64_t t0 = g_get_monotonic_time();

			(void)page[di.page_size / 2]; /* a missing page: waits until it is placed */
			if (g_get_monotonic_time() - t0 > 1000)
				v->blocked++;
			v->touched++;
			bool data_ok = memcmp((const void *)page,
					      (const uint8_t *)si.host + p * si.page_size,
					      di.page_size) == 0;
			bool tags_ok = !dt || !st || memcmp(dt + p * gran, st + p * gran, gran) == 0;
			if ((!data_ok || !tags_ok) && !v->first_bad)
				v->first_bad = g_strdup_printf("RAM block '%s' offset 0x%" PRIx64
							       ": %s when a vCPU touched it", di.name,
							       p * di.page_size,
							       !data_ok ? "data differ" : "tags differ");
		}
	}
	return NULL;
}

demo_vcpus *demo_vcpus_start(unsigned n, const tm_ram_layout *dst, tm_tag_store *dst_tags,
			     const tm_ram_layout *src, tm_tag_store *src_tags)
{
	demo_vcpus *a = g_malloc0(sizeof(*a) + n * sizeof(vcpu));

	*a = (demo_vcpus){ .dst = dst, .src = src, .dst_tags = dst_tags, .src_tags = src_tags,
			   .n = n };
	for (unsigned i = 0; i < n; i++) {
		a->v[i] = (vcpu){ .all = a, .index = i };
		a->v[i].thread = g_thread_new("demo-vcpu", vcpu_thread, &a->v[i]);
	}
	return a;
}

void demo_vcpus_join(demo_vcpus *a, uint64_t *touched, uint64_t *blocked, char **first_bad)
{
	*touched = *blocked = 0;
	*first_bad = NULL;
	for (unsigned i = 0; i < a->n; i++) {
		g_thread_join(a->v[i].thread);
		*touched += a->v[i].touched;
		*blocked += a->v[i].blocked;
		if (!*first_bad)
			*first_bad = g_steal_pointer(&a->v[i].first_bad);
		g_free(a->v[i].first_bad);
	}
	g_free(a);
}
