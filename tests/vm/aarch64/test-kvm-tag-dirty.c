/* SPDX-License-Identifier: MIT */
/*
 * Does KVM_GET_DIRTY_LOG report a page whose tags, and only its tags, the guest changed? A precopy
 * VMM (vmm/migrate-out.c) re-sends only what the dirty log reports, so a tags-only change it
 * missed would leave stale tags on the destination (docs/aarch64.md, "The reference VMM").
 *
 * A real vCPU with its MMU on (page tables and system registers set by this program through
 * KVM_SET_ONE_REG: RAM mapped Normal Tagged, MAIR attribute 0xF0; SCTLR_EL1.ATA so that EL1 may
 * access tags) runs STG over every granule of one page, tag 1, then reports with an MMIO store;
 * the memslot dirty-logs from the start. The first log read must name exactly that page (code and
 * page tables are only read). Then the vCPU stores tag 2 over the same page, its data untouched
 * (zero throughout): the second log read must name the page again, the tags read back through
 * KVM must be 2 and the data still zero.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "kvm-test.h"

#define RAM_IPA 0x40000000ull
#define RAM_LEN (4ull << 20)
#define PT_OFF 0x1000ull    /* level 1 table */
#define PAGE_OFF 0x200000ull /* the page the guest tags */
#define PORT_IPA 0x09000000ull
#define PAGE 4096ull

/* The guest, entered with the MMU already on: sweeps STG over the page, reports the tag, and
 * goes on with the next tag. */
extern const unsigned char td_guest[], td_guest_end[];
__asm__(".pushsection .rodata\n"
	".balign 4\n"
	".global td_guest, td_guest_end\n"
	".hidden td_guest, td_guest_end\n"
	".arch armv8.5-a+memtag\n"
	"td_guest:\n"
	"  movz x1, #0x4020, lsl #16\n" /* RAM_IPA + PAGE_OFF */
	"  movz x2, #0x0900, lsl #16\n" /* PORT_IPA */
	"  mov x3, #1\n"
	"1:\n"
	"  mov x6, x1\n"
	"  orr x4, x1, x3, lsl #56\n"   /* the tag to store, in bits 59:56 */
	"  mov x5, #256\n"
	"2:\n"
	"  stg x4, [x6], #16\n"
	"  subs x5, x5, #1\n"
	"  b.ne 2b\n"
	"  str w3, [x2]\n"
	"  add x3, x3, #1\n"
	"  and x3, x3, #0xf\n"
	"  b 1b\n"
	"td_guest_end:\n"
	".popsection\n");

#define CORE_REG(r) (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | KVM_REG_ARM_CORE_REG(r))

static bool set_reg(int vcpu, uint64_t id, uint64_t v, const char *name)
{
	struct kvm_one_reg o = { .id = id, .addr = (uint64_t)(uintptr_t)&v };
	if (ioctl(vcpu, KVM_SET_ONE_REG, &o) < 0) {
		tk_fail("KVM_SET_ONE_REG %s: %s", name, g_strerror(errno));
		return false;
	}
	return true;
}

static uint64_t get_reg(int vcpu, uint64_t id)
{
	uint64_t v = 0;
	struct kvm_one_reg o = { .id = id, .addr = (uint64_t)(uintptr_t)&v };
	ioctl(vcpu, KVM_GET_ONE_REG, &o);
	return v;
}

/* Runs until the guest's next MMIO store; returns its value or -1 (with the reason as INFO). */
static long run_to_report(int vcpu, struct kvm_run *run)
{
	if (ioctl(vcpu, KVM_RUN, 0) < 0) {
		tk_info("KVM_RUN: %s", g_strerror(errno));
		return -1;
	}
	if (run->exit_reason != KVM_EXIT_MMIO || !run->mmio.is_write ||
	    run->mmio.phys_addr != PORT_IPA) {
		tk_info("exit reason %u at pc 0x%" G_GINT64_MODIFIER "x, esr_el1 0x%" G_GINT64_MODIFIER
			"x, far_el1 0x%" G_GINT64_MODIFIER "x",
			run->exit_reason, get_reg(vcpu, CORE_REG(regs.pc)),
			get_reg(vcpu, ARM64_SYS_REG(3, 0, 5, 2, 0)),
			get_reg(vcpu, ARM64_SYS_REG(3, 0, 6, 0, 0)));
		return -1;
	}
	uint32_t v;
	memcpy(&v, run->mmio.data, 4);
	return v;
}

/* The pages the log names, as text; *only_page: exactly PAGE_OFF's page. */
static char *dirty_pages(int vm, uint64_t *bitmap, bool *only_page)
{
	struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = bitmap };
	memset(bitmap, 0, RAM_LEN / PAGE / 8);
	if (ioctl(vm, KVM_GET_DIRTY_LOG, &log) < 0) {
		*only_page = false;
		return g_strdup_printf("KVM_GET_DIRTY_LOG: %s", g_strerror(errno));
	}
	GString *s = g_string_new(NULL);
	unsigned n = 0;
	bool page = false;
	for (uint64_t p = 0; p < RAM_LEN / PAGE; p++) {
		if (!(bitmap[p / 64] >> (p % 64) & 1))
			continue;
		n++;
		page |= p == PAGE_OFF / PAGE;
		g_string_append_printf(s, "%s0x%" G_GINT64_MODIFIER "x", s->len ? " " : "",
				       (uint64_t)(RAM_IPA + p * PAGE));
	}
	*only_page = page && n == 1;
	if (!n)
		g_string_append(s, "none");
	return g_string_free(s, FALSE);
}

static bool page_is(int vm, const uint8_t *ram, uint8_t tag)
{
	uint8_t tags[PAGE / 16], want[PAGE / 16];
	memset(want, tag, sizeof(want));
	bool zero = true;
	for (uint64_t i = 0; i < PAGE; i++)
		zero &= ram[PAGE_OFF + i] == 0;
	return zero && tk_copy_tags(vm, RAM_IPA + PAGE_OFF, PAGE, tags, true) == (long)PAGE &&
	       memcmp(tags, want, sizeof(tags)) == 0;
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	int kvm = tk_open_kvm();
	int vm = kvm < 0 ? -1 : tk_vm_new_mte(kvm);
	uint8_t *ram = vm < 0 ? NULL : tk_ram_new(RAM_LEN);
	if (!ram)
		return tk_finish();
	memcpy(ram, td_guest, (size_t)(td_guest_end - td_guest));
	uint64_t *l1 = (uint64_t *)(ram + PT_OFF);
	l1[0] = 0x0ull | 0 << 2 | 1 << 10 | 1;               /* 0..1G: Device-nGnRnE (the port) */
	l1[1] = RAM_IPA | 1 << 2 | 3 << 8 | 1 << 10 | 1;     /* 1G..2G: Normal Tagged, inner shareable */
	int r = tk_memslot_flags(vm, 0, RAM_IPA, RAM_LEN, ram, KVM_MEM_LOG_DIRTY_PAGES);
	TK_CHECK(r == 0, "memslot with dirty logging: %s", r ? g_strerror(-r) : "ok");

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	struct kvm_vcpu_init init;
	memset(&init, 0, sizeof(init));
	long msz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	struct kvm_run *run = vcpu < 0 || msz <= 0 ? MAP_FAILED :
		mmap(NULL, (size_t)msz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED || ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init) < 0 ||
	    ioctl(vcpu, KVM_ARM_VCPU_INIT, &init) < 0) {
		tk_fail("vCPU: %s", g_strerror(errno));
		return tk_finish();
	}
	/* MMU on at entry: 39-bit VA from level 1, 4K granule, top byte ignored (tagged pointers). */
	uint64_t tcr = 25 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23 | 2ull << 32 | 1ull << 37;
	uint64_t sctlr = 0x30d00800ull | 1 /* M */ | 1 << 2 /* C */ | 1 << 12 /* I */ |
			 1ull << 40 /* TCF: synchronous */ | 1ull << 43 /* ATA */;
	if (!set_reg(vcpu, ARM64_SYS_REG(3, 0, 10, 2, 0), 0xf000, "MAIR_EL1") ||
	    !set_reg(vcpu, ARM64_SYS_REG(3, 0, 2, 0, 2), tcr, "TCR_EL1") ||
	    !set_reg(vcpu, ARM64_SYS_REG(3, 0, 2, 0, 0), RAM_IPA + PT_OFF, "TTBR0_EL1") ||
	    !set_reg(vcpu, ARM64_SYS_REG(3, 0, 1, 0, 0), sctlr, "SCTLR_EL1") ||
	    !set_reg(vcpu, CORE_REG(regs.pstate), 0x3c5, "PSTATE") ||
	    !set_reg(vcpu, CORE_REG(regs.pc), RAM_IPA, "PC"))
		return tk_finish();

	g_autofree uint64_t *bitmap = g_malloc0(RAM_LEN / PAGE / 8);
	bool only;
	long v = run_to_report(vcpu, run);
	g_autofree char *first = dirty_pages(vm, bitmap, &only);
	TK_CHECK(v == 1 && page_is(vm, ram, 1),
		 "the guest stored tag 1 over page 0x%llx with STG, its data still zero (%ld)",
		 RAM_IPA + PAGE_OFF, v);
	TK_CHECK(only, "first log read names exactly that page: %s", first);

	v = run_to_report(vcpu, run);
	g_autofree char *second = dirty_pages(vm, bitmap, &only);
	TK_CHECK(v == 2 && page_is(vm, ram, 2),
		 "the guest stored tag 2 over the same page, data untouched (%ld)", v);
	TK_CHECK(only, "a tags-only change is in KVM_GET_DIRTY_LOG: the second read names the page "
		 "again: %s", second);
	return tk_finish();
}
