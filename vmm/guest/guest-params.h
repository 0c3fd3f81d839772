/* The parameter block of the reference VMM's MTE test guest (vmm/guest/, docs/aarch64.md).
 *
 * The block sits at byte offset 8 of the guest image (guest.bin; in guest.elf at the link address
 * 0x40200000 + 8), right after the image's first instruction and a nop. The image carries the
 * defaults for QEMU's `virt` machine; a loader (the reference VMM) may overwrite fields in its copy
 * of the image before it places the image in guest RAM. The guest only reads the block.
 *
 * Freestanding: this header includes nothing but <stdint.h>, so that the guest and a VMM both
 * include it. All fields are little-endian. */
#ifndef TM_GUEST_PARAMS_H
#define TM_GUEST_PARAMS_H

#include <stdint.h>

#define TM_GUEST_MAGIC 0x3154534555474d54ULL /* "TMGUEST1" in memory order */
#define TM_GUEST_VERSION 1
#define TM_GUEST_LOAD_ADDR 0x40200000ULL /* where the image is linked and must be loaded */
#define TM_GUEST_PARAMS_OFFSET 8         /* of the block inside the image */

/* selftest: deliberate damage after the write phase of pass selftest_pass, at the 16-byte granule
 * window_base + selftest_offset, so that the checker is seen to fail. */
enum {
	TM_GUEST_SELFTEST_NONE = 0,
	TM_GUEST_SELFTEST_DATA = 1,     /* flip bit 0 of the granule's first word: "mismatch ... data" */
	TM_GUEST_SELFTEST_TAG = 2,      /* change the granule's tag: a tag-check fault on the read */
	TM_GUEST_SELFTEST_TAG_LDG = 3,  /* change it after the data sweep: "mismatch ... tag" (LDG) */
};

/* stop: what the guest does when it is done (all passes, a mismatch or a fault). */
enum {
	TM_GUEST_STOP_WFI = 0, /* loop in WFI with interrupts masked */
	TM_GUEST_STOP_HVC = 1, /* PSCI SYSTEM_OFF through HVC (QEMU virt without EL2; KVM) */
	TM_GUEST_STOP_SMC = 2, /* PSCI SYSTEM_OFF through SMC */
};

struct tm_guest_params {
	uint64_t magic;          /* TM_GUEST_MAGIC; the guest refuses to run without it */
	uint32_t version;        /* TM_GUEST_VERSION */
	uint32_t size;           /* sizeof(struct tm_guest_params) */
	uint64_t ram_base;       /* guest RAM (IPA), 2 MiB aligned: mapped Normal Tagged */
	uint64_t ram_size;       /* multiple of 2 MiB; must hold the image and the window */
	uint64_t port;           /* MMIO report port (IPA), outside RAM: mapped Device-nGnRnE */
	uint64_t window_base;    /* IPA of the tested window, 4 KiB aligned; 0: ram_base + 4 MiB */
	uint64_t window_size;    /* bytes, a multiple of 16 KiB (four page kinds); 0: 1 MiB */
	uint64_t passes;         /* stop after this many passes; 0: run forever */
	uint32_t selftest;       /* TM_GUEST_SELFTEST_*: 0 in a real run */
	uint32_t selftest_pass;  /* the pass that damages its window (>= 1) */
	uint64_t selftest_offset;/* offset of the damaged granule in the window (16-byte aligned) */
	uint32_t stop;           /* TM_GUEST_STOP_* */
	uint32_t hold_ms;        /* 0: none. Else each pass's first check (pass 2 on) checks the
	                          * window's upper half first (last page down), then leaves the
	                          * lower half untouched until the report port's hold register
	                          * (TM_GUEST_HOLD_REG) reads non-zero, at most hold_ms ms; a value
	                          * inside the lower half is the address its check starts at */
};

/* The hold register: a 64-bit read at port + 8 (hold_ms). 0: hold; anything else: go, and a
 * page address inside the window's lower half says where to look first. */
#define TM_GUEST_HOLD_REG 8

#endif
