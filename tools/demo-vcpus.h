/* SPDX-License-Identifier: MIT */
/*
 * The postcopy demo's destination "vCPUs" (demo-vcpus.c): reader threads that touch every page of
 * the destination's RAM, each load of a missing page blocking in the engine's userfault until it
 * is placed, and compare what they find, data and tags, with the source guest (paused for good).
 */
#pragma once

#include <glib.h>

#include "tagmig/tagmig.h"

typedef struct demo_vcpus demo_vcpus;

/* Starts n threads; thread t touches the pages p % n == t of each block of dst. dst and src have
 * the same blocks and soft tag stores; all four outlive demo_vcpus_join(). */
demo_vcpus *demo_vcpus_start(unsigned n, const tm_ram_layout *dst, tm_tag_store *dst_tags,
			     const tm_ram_layout *src, tm_tag_store *src_tags);

/* Joins and frees: pages touched, loads that waited over 1 ms, and the first page found wrong
 * (*first_bad, g_free; NULL when every page was right). */
void demo_vcpus_join(demo_vcpus *v, uint64_t *touched, uint64_t *blocked, char **first_bad);
