/* The MTE test guest's pass loop (docs/aarch64.md, "The reference VMM's guest").
 *
 * Pass N (N = 1, 2, ...): check that the window still holds generation N - 1 (from pass 2 on),
 * write it with generation N (pattern.c), read every word back through tagged pointers, read
 * every tag with LDG, report "pass N ok". The first mismatch or
 * fault is reported and the guest stops. */
#include "guest.h"

#ifndef TM_GUEST_DEFAULT_SELFTEST
#define TM_GUEST_DEFAULT_SELFTEST TM_GUEST_SELFTEST_NONE
#endif

/* Defaults for QEMU's virt machine with -m 128M: RAM at 0x40000000, the PL011 UART's data
 * register as the report port, PSCI through HVC (virt without EL2). A loader overwrites them in
 * its copy of the image, so the block is not const: the compiler must read it, not fold these
 * initial values into the code. */
__attribute__((section(".head.params"), used)) struct tm_guest_params tm_guest_params = {
	.magic = TM_GUEST_MAGIC,
	.version = TM_GUEST_VERSION,
	.size = sizeof(struct tm_guest_params),
	.ram_base = 0x40000000,
	.ram_size = 128 << 20,
	.port = 0x09000000,
	.window_base = 0,
	.window_size = 0,
	.passes = 0,
	.selftest = TM_GUEST_DEFAULT_SELFTEST,
	.selftest_pass = 2,
	/* page 1 of the window is a zero-data page: granule 3 of it */
	.selftest_offset = 0x1030,
	.stop = TM_GUEST_STOP_HVC,
	.hold_ms = 0,
};

uint64_t guest_pass;

extern char __image_start[];
extern char __image_end[];

__attribute__((noreturn)) void guest_stop(void)
{
	/* PSCI SYSTEM_OFF, function ID 0x84000008 (PSCI 0.2+, SMC32 convention). */
	register uint64_t x0 __asm__("x0") = 0x84000008;
	if (tm_guest_params.stop == TM_GUEST_STOP_HVC)
		__asm__ volatile("hvc #0" : "+r"(x0) : : "memory");
	else if (tm_guest_params.stop == TM_GUEST_STOP_SMC)
		__asm__ volatile("smc #0" : "+r"(x0) : : "memory");
	for (;;)
		__asm__ volatile("wfi");
}

static void say(const char *a, uint64_t v, const char *b)
{
	report_str(a);
	report_hex(v);
	report_str(b);
}

/* The damage a self-check run does: *when* is 0 after the write phase, 1 after the data sweep. */
static void selftest(uint64_t base, uint64_t gen, int when)
{
	const struct tm_guest_params *p = &tm_guest_params;
	uint64_t g = base + (p->selftest_offset & ~(GRANULE - 1));
	if (gen != p->selftest_pass)
		return;
	uint64_t tag = mte_ldg(g);
	uint64_t bad = (tag + 1) & 0xf; /* any tag but the right one */
	switch (p->selftest) {
	case TM_GUEST_SELFTEST_DATA:
		if (when != 0)
			return;
		say("selftest: flipping bit 0 of the data at ", g, "\n");
		*(volatile uint64_t *)tagged(g, tag) ^= 1;
		break;
	case TM_GUEST_SELFTEST_TAG:
		if (when != 0)
			return;
		say("selftest: changing the tag at ", g, "\n");
		mte_stg(tagged(g, bad));
		break;
	case TM_GUEST_SELFTEST_TAG_LDG:
		if (when != 1)
			return;
		say("selftest: changing the tag at ", g, " after the data sweep\n");
		mte_stg(tagged(g, bad));
		break;
	}
}

/* hold_ms: reads the hold register until it is non-zero, at most ms milliseconds of the virtual
 * counter, a millisecond between reads (each is an exit to the VMM): its value, or 0. */
static uint64_t hold_wait(uint32_t ms)
{
	uint64_t reg = tm_guest_params.port + TM_GUEST_HOLD_REG;
	uint64_t frq = READ_SYSREG(cntfrq_el0);
	if (!frq)
		frq = 62500000; /* not programmed: QEMU virt's and KVM's usual 62.5 MHz */
	uint64_t t0 = READ_SYSREG(cntvct_el0), tick = frq / 1000;
	for (;;) {
		uint64_t v;
		/* a plain LDR (no writeback): KVM can decode it as an MMIO read */
		__asm__ volatile("ldr %0, [%1]" : "=r"(v) : "r"(reg) : "memory");
		if (v)
			return v;
		uint64_t now = READ_SYSREG(cntvct_el0);
		if (now - t0 >= tick * ms)
			return 0;
		while (READ_SYSREG(cntvct_el0) - now < tick)
			;
	}
}

/*
 * The first check of a pass with hold_ms (docs/aarch64.md, "The parameter block"): the upper
 * half from its last page down, then nothing of the lower half until the VMM says go through
 * the hold register, then the lower half from the page it names (or its first) up, then the
 * rest of it. A destination VMM that says go once the postcopy background placed a page of the
 * lower half, while that placement is held open between the page's data and its tags, makes
 * the guest's first access land in that window: a tag-check fault unless the placement kept
 * the vCPU out of it (docs/design/postcopy-move.md).
 */
static int check_held(uint64_t base, uint64_t size, uint64_t gen)
{
	uint64_t mid = base + size / 2; /* size is a multiple of 16 KiB: mid is page-aligned */
	if (pattern_check_range(base, mid, base + size, gen, 1) < 0)
		return -1;
	uint64_t at = hold_wait(tm_guest_params.hold_ms);
	if (!at) {
		report_str("hold: not released in ");
		report_dec(tm_guest_params.hold_ms);
		report_str(" ms, checking the lower half anyway\n");
	}
	at &= ~(PAGE - 1);
	if (at < base || at >= mid)
		at = base;
	if (pattern_check_range(base, at, mid, gen, 0) < 0 ||
	    pattern_check_range(base, base, at, gen, 0) < 0)
		return -1;
	return 0;
}

void guest_main(void)
{
	const struct tm_guest_params *p = &tm_guest_params;
	uint64_t base = p->window_base ? p->window_base : p->ram_base + (4ULL << 20);
	uint64_t size = p->window_size ? p->window_size : 1ULL << 20;
	uint64_t img0 = (uint64_t)__image_start, img1 = (uint64_t)__image_end;

	report_str("tmguest: ram ");
	report_hex(p->ram_base);
	say("+", p->ram_size, " window ");
	report_hex(base);
	say("+", size, " image ");
	report_hex(img0);
	say("-", img1, " port ");
	report_hex(p->port);
	report_str(" passes ");
	report_dec(p->passes);
	report_str(" selftest ");
	report_dec(p->selftest);
	if (p->hold_ms) {
		report_str(" hold ");
		report_dec(p->hold_ms);
	}
	report_line_end();

	if ((base | size) & (PAGE - 1) || !size || size % (4 * PAGE) || base < p->ram_base ||
	    base + size > p->ram_base + p->ram_size || base + size < base ||
	    (base < img1 && img0 < base + size)) {
		report_str("error: the window must be 16 KiB multiples inside RAM, clear of the image\n");
		return;
	}
	if (p->selftest && (p->selftest_offset >= size || !p->selftest_pass)) {
		report_str("error: selftest_offset outside the window or selftest_pass 0\n");
		return;
	}

	for (;;) {
		uint64_t gen = ++guest_pass;
		/*
		 * First, what the last pass left, before anything overwrites it: a guest migrated
		 * at a pass boundary reads every page of the window (and with postcopy faults each
		 * in) with the tags the source gave it, so a tag lost on the way is seen here, not
		 * hidden under this pass's writes. From the last page down: a migration streams
		 * pages upwards, so the guest meets it once, and faults on the pages above.
		 */
		if (gen > 1 && (p->hold_ms ? check_held(base, size, gen - 1)
					   : pattern_check_down(base, size, gen - 1)) < 0)
			return;
		pattern_write(base, size, gen);
		selftest(base, gen, 0);
		if (pattern_check_data(base, size, gen) < 0)
			return;
		selftest(base, gen, 1);
		if (pattern_check_tags(base, size, gen) < 0)
			return;
		report_str("pass ");
		report_dec(gen);
		report_str(" ok\n");
		if (p->passes && gen >= p->passes)
			break;
	}
	report_str("done ");
	report_dec(guest_pass);
	report_str(" passes\n");
}
