/* SPDX-License-Identifier: MIT */
/*
 * The placer tests' shared rig (test-place, test-place-atomic, test-place-pause): guest RAM of
 * RIG_NPAGES small pages, its layout and a userfaultfd, the data and tags a page is placed with,
 * and the fault a blocked "vCPU" raises. Each test brings its own tag store and placer.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "tagmig/ram.h"
#include "tagmig/wire.h"

#define PS 4096u
#define NPAGES 64u
#define GRANULES (PS / TM_TAG_GRANULE)

typedef struct placer_rig {
	uint8_t *ram;          /* NPAGES * PS, anonymous, no huge pages */
	tm_ram_layout *layout; /* one block "pc.ram" over ram */
	int uffd;
} placer_rig;

/* Opens the userfaultfd (with uffd_features) and maps RAM; false, the test skipped with
 * "<lacking>: <why>", where the kernel refuses the userfaultfd. */
bool placer_rig_open(placer_rig *g, uint64_t uffd_features, const char *lacking);
/* Registers all of RAM for missing-page faults (after the store is made). */
void placer_rig_register(placer_rig *g);
void placer_rig_close(placer_rig *g);

/* Page page's data (PS bytes) and tags (GRANULES bytes, none zero). */
void placer_rig_data(uint64_t page, uint8_t *out);
void placer_rig_tags(uint64_t page, uint8_t *out);

/* Reads one fault from the userfaultfd as the fault thread would: it must be on page. */
void placer_rig_read_fault(const placer_rig *g, uint64_t page);
