/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the test programs that run inside the emulated arm64 machine (real KVM, real MTE).
 * Each program prints "PASS: what" / "FAIL: what" lines, which tests/vm/aarch64/harness.sh turns
 * into TAP, and exits 0 only without a FAIL. Everything is checked through the kernel directly
 * (raw KVM_ARM_MTE_COPY_TAGS), independently of the tag store under test.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "tagmig/tagmig.h"

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

/*
 * The demand-fault VM of test-kvm-uffd.c and test-kvm-uffd-move.c: guest code at TK_CODE_IPA,
 * run with the MMU off at EL1, loads from data page 1 (a userfault), reports the value with an
 * MMIO write to TK_MMIO_IPA (no memslot), then the same for page 3 at offset 8 (to
 * TK_MMIO_IPA + 8), then spins. Its exception vectors at TK_CODE_IPA + 0x800 spin too, so that a
 * guest exception keeps ELR/ESR/FAR.
 */
#define TK_CODE_IPA 0x80000000ull
#define TK_DATA_IPA 0x80100000ull
#define TK_DATA_LEN (64 * 1024ull)
#define TK_MMIO_IPA 0x90000000ull
#define TK_PAGE 4096ull

struct kvm_run;

typedef struct tk_vcpu {
	int fd;
	struct kvm_run *run;
	/* written by the vCPU thread, read by main once `exits` says so */
	uint64_t mmio_addr[2], mmio_val[2];
	int exits; /* atomic */
	int error; /* atomic: errno of a failed KVM_RUN or 1 for an unexpected exit */
	pthread_t thread;
} tk_vcpu;

/* Writes the guest code and its spinning vectors into the code page (TK_PAGE bytes). */
void tk_fault_guest_write(uint8_t *code);

/*
 * The kvm-mte store over data (TK_DATA_LEN at TK_DATA_IPA, one block "ram"), with its PASS or
 * FAIL line; 0 or -errno.
 */
int tk_fault_store_new(int vm, uint8_t *data, tm_ram_layout **ret_layout,
		       tm_tag_store **ret_store);

/*
 * The vCPU (the recipe in docs/aarch64.md: preferred target, PC at the code, VBAR at its
 * vectors), with its PASS or FAIL line; false if it could not be made.
 */
bool tk_vcpu_new(int kvm, int vm, tk_vcpu *v);

/*
 * Runs the vCPU on a thread of its own until its two MMIO writes; SIGUSR1 interrupts a KVM_RUN
 * (the thread then prints where the guest is).
 */
GThread *tk_vcpu_start(tk_vcpu *v);

/* Waits up to ms for a userfault; returns the faulting address or 0. */
uint64_t tk_wait_fault(int uffd, int ms);

/* Waits up to ms until *what (atomic) is value. */
bool tk_wait_for(int *what, int value, int ms);

/* The tags of [ipa, ipa + len) read back through KVM are want. */
bool tk_tags_are(int vm, uint64_t ipa, uint64_t len, const uint8_t *want);
