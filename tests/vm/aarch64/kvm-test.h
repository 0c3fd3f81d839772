/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the test programs that run inside the emulated arm64 machine (real KVM, real MTE).
 * Each program prints "PASS: what" / "FAIL: what" lines, which tests/vm/aarch64/harness.sh turns
 * into TAP, and exits 0 only without a FAIL. Everything is checked through the kernel directly
 * (raw KVM_ARM_MTE_COPY_TAGS), independently of the tag store under test.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

void tk_pass(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
void tk_fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
void tk_info(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
#define TK_CHECK(cond, ...)                                                                        \
	do {                                                                                       \
		if (cond)                                                                          \
			tk_pass(__VA_ARGS__);                                                      \
		else                                                                               \
			tk_fail(__VA_ARGS__);                                                      \
	} while (0)

/* Prints the totals and returns the exit status (0 only if something passed and nothing failed). */
int tk_finish(void);

/* Opens /dev/kvm (a FAIL if it cannot: the harness boots with virtualization=on). -1 on failure. */
int tk_open_kvm(void);

/* A new VM with KVM_CAP_ARM_MTE enabled (before any vCPU), or -1 after a FAIL line. */
int tk_vm_new_mte(int kvm);

/* Anonymous MAP_PRIVATE memory (what an MTE VM's RAM must be on 6.1), 64 KiB aligned; NULL on failure. */
uint8_t *tk_ram_new(size_t len);

/* KVM_SET_USER_MEMORY_REGION (flags 0, or as given); returns 0 or -errno. */
int tk_memslot(int vm, uint32_t slot, uint64_t ipa, uint64_t len, void *host);
int tk_memslot_flags(int vm, uint32_t slot, uint64_t ipa, uint64_t len, void *host,
		     uint32_t flags);

/* Raw KVM_ARM_MTE_COPY_TAGS: returns the ioctl result (bytes covered) or -errno. */
long tk_copy_tags(int vm, uint64_t ipa, uint64_t len, void *buf, bool from_guest);

/* A deterministic non-uniform tag for granule i under seed (differs granule by granule). */
static inline uint8_t tk_tag(uint64_t seed, uint64_t i)
{
	uint64_t z = (seed + 1) * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull;
	z ^= z >> 29;
	/* Adjacent granules always differ: low bits of i mixed in. */
	return (uint8_t)(((z >> 7) + i) & 0xf);
}

/* Fills n tag bytes with tk_tag(seed, first + i). */
void tk_tags_fill(uint8_t *tags, size_t n, uint64_t seed, uint64_t first);

/* Index of the first differing byte of a and b, or -1. */
long tk_first_diff(const uint8_t *a, const uint8_t *b, size_t n);

/* splitmix64: test data. */
uint64_t tk_rand(void);
