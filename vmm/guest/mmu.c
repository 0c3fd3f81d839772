/* The guest's identity map and the EL1 controls for MTE.
 *
 * Register fields as the Arm Architecture Reference Manual for A-profile (DDI 0487) defines them
 * (chapter D24.2 for the registers, D8.3 for the descriptors); each constant names its field. */
#include "guest.h"

/* MAIR_EL1 (D24.2 MAIR_EL1): AttrIndx 0 and 1 of our descriptors. */
#define ATTR_DEVICE 0 /* Attr0 = 0b0000_0000: Device-nGnRnE (the report port) */
#define ATTR_TAGGED 1 /* Attr1 = 0b1111_0000: Tagged Normal, Inner/Outer Write-Back, RA/WA,
		       * Non-transient (FEAT_MTE2; otherwise UNPREDICTABLE, so checked first) */
#define MAIR_VALUE ((0x00ULL << (8 * ATTR_DEVICE)) | (0xf0ULL << (8 * ATTR_TAGGED)))

/* TCR_EL1 (D24.2 TCR_EL1). Fields not named are 0: TTBR1 walks off, no hardware AF/dirty
 * updates, TBI1 = 0, TCMA0 = 0 (tag 0 pointers are checked too), TBID0 = 0, MTX0 = 0. */
#define TCR_T0SZ(n) ((uint64_t)(n) << 0)  /* T0SZ [5:0]: region 2^(64-T0SZ) bytes */
#define TCR_IRGN0_WBWA (1ULL << 8)        /* IRGN0 [9:8] = 0b01: Write-Back RA WA walks */
#define TCR_ORGN0_WBWA (1ULL << 10)       /* ORGN0 [11:10] = 0b01 */
#define TCR_SH0_INNER (3ULL << 12)        /* SH0 [13:12] = 0b11: Inner Shareable */
#define TCR_TG0_4K (0ULL << 14)           /* TG0 [15:14] = 0b00: 4KB granule */
#define TCR_EPD1 (1ULL << 23)             /* EPD1 [23] = 1: no walks through TTBR1_EL1 */
#define TCR_TG1_4K (2ULL << 30)           /* TG1 [31:30] = 0b10: 4KB (its own encoding) */
#define TCR_IPS(n) ((uint64_t)(n) << 32)  /* IPS [34:32]: same encoding as PARange */
#define TCR_TBI0 (1ULL << 37)             /* TBI0 [37] = 1: top byte ignored, tagged pointers */

/* SCTLR_EL1 (D24.2 SCTLR_EL1). Every field resets UNKNOWN, so the whole register is written. */
#define SCTLR_M (1ULL << 0)      /* M: stage 1 translation on */
#define SCTLR_C (1ULL << 2)      /* C: data accesses cacheable as the tables say */
#define SCTLR_SA (1ULL << 3)     /* SA: SP alignment check */
#define SCTLR_I (1ULL << 12)     /* I: instruction fetches cacheable */
#define SCTLR_TCF_SYNC (1ULL << 40) /* TCF [41:40] = 0b01: Tag Check Faults in EL1 are a
				     * synchronous exception (EC 0x25, DFSC 0b010001) */
#define SCTLR_ATA (1ULL << 43)   /* ATA [43]: Allocation Tag access and tag checks in EL1 (its
				  * effective value is 0 if HCR_EL2.ATA or SCR_EL3.ATA is 0: KVM
				  * sets HCR_EL2.ATA for a VM with KVM_CAP_ARM_MTE) */
/* Bits that are RES1 when their feature is absent (LSMAOE 29, nTLSMD 28, SPAN 23, EIS 22,
 * TSCXT 20, EOS 11) or when EL0 has no AArch32 (SED 8, ITD 7); 1 is also their harmless value
 * when the feature exists. EE [25] = 0: little-endian. TCF0/ATA0 (EL0) stay 0: no EL0 here. */
#define SCTLR_RES1 ((1ULL << 29) | (1ULL << 28) | (1ULL << 23) | (1ULL << 22) | (1ULL << 20) |    \
		    (1ULL << 11) | (1ULL << 8) | (1ULL << 7))

/* VMSAv8-64 descriptors, 4KB granule (D8.3, "Stage 1 VMSAv8-64 Block and Page descriptor
 * fields"). */
#define DESC_VALID (1ULL << 0)
#define DESC_TABLE (1ULL << 1)       /* bit[1] = 1: table (levels 0-2) or page (level 3) */
#define DESC_ATTR(i) ((uint64_t)(i) << 2) /* AttrIndx[2:0], bits [4:2] */
#define DESC_SH_INNER (3ULL << 8)    /* SH [9:8] = 0b11 */
#define DESC_AF (1ULL << 10)         /* Access flag: set, so no Access flag faults */
#define DESC_PXN (1ULL << 53)
#define DESC_UXN (1ULL << 54)
/* AP[2:1] (bits [7:6]) = 0b00: read/write at EL1, no EL0 access. */
#define DESC_ADDR_MASK 0x0000fffffffff000ULL

#define ENTRIES 512
#define N_TABLES 16
#define SZ_2M (2ULL << 20)

/* The translation tables: a NOLOAD pool in guest.ld, page-aligned. */
extern uint64_t __pgtables_start[];
extern uint64_t __pgtables_end[];
extern char __image_start[];
extern char __image_end[];

static uint64_t dcache_line(void)
{
	/* CTR_EL0.DminLine [19:16]: log2 of the smallest data cache line, in 4-byte words */
	return 4ULL << ((READ_SYSREG(ctr_el0) >> 16) & 0xf);
}

/* Drops any cache line of the table pool (DC IVAC, to the Point of Coherency): with the MMU off
 * the tables are written straight to memory, and a stale line (from the loader, or a speculative
 * fill) must not be found by the walker or evicted over them later. */
static void invalidate_tables(void)
{
	uint64_t line = dcache_line();
	for (uint64_t a = (uint64_t)__pgtables_start & ~(line - 1); a < (uint64_t)__pgtables_end;
	     a += line)
		__asm__ volatile("dc ivac, %0" : : "r"(a) : "memory");
	__asm__ volatile("dsb sy" : : : "memory");
}

/* Tables come from the pool in order; *used counts them (a local: .bss is not cleared yet). */
static uint64_t *new_table(unsigned *used)
{
	if (*used == N_TABLES)
		return 0;
	uint64_t *t = __pgtables_start + (uint64_t)(*used)++ * ENTRIES;
	for (unsigned i = 0; i < ENTRIES; i++)
		t[i] = 0;
	return t;
}

/* Maps one block (level 2, 2 MiB) or page (level 3) at va == pa, creating tables on the way from
 * level 0 (T0SZ = 16: a 48-bit space, walks start at level 0). */
static int map_one(uint64_t *l0, unsigned *used, uint64_t addr, int level, uint64_t attrs)
{
	uint64_t *t = l0;
	for (int l = 0; l < level; l++) {
		unsigned idx = (addr >> (39 - 9 * l)) & (ENTRIES - 1);
		if (!(t[idx] & DESC_VALID)) {
			uint64_t *n = new_table(used);
			if (!n)
				return -1;
			t[idx] = (uint64_t)n | DESC_TABLE | DESC_VALID;
		} else if (!(t[idx] & DESC_TABLE)) {
			return -1; /* already a block: overlapping ranges */
		}
		t = (uint64_t *)(t[idx] & DESC_ADDR_MASK);
	}
	unsigned idx = (addr >> (39 - 9 * level)) & (ENTRIES - 1);
	if (t[idx] & DESC_VALID)
		return -1;
	t[idx] = (addr & DESC_ADDR_MASK) | attrs | (level == 3 ? DESC_TABLE : 0) | DESC_VALID;
	return 0;
}

static int map_range(uint64_t *l0, unsigned *used, uint64_t base, uint64_t size,
		     uint64_t attrs)
{
	uint64_t a = base, end = base + size;
	while (a < end) {
		int two_m = !(a & (SZ_2M - 1)) && end - a >= SZ_2M;
		if (map_one(l0, used, a, two_m ? 2 : 3, attrs) < 0)
			return -1;
		a += two_m ? SZ_2M : PAGE;
	}
	return 0;
}

static uint64_t refuse(const char *why, uint64_t value)
{
	report_str("error: ");
	report_str(why);
	report_str(" ");
	report_hex(value);
	report_line_end();
	return 0;
}

uint64_t mmu_prepare(void)
{
	const struct tm_guest_params *p = &tm_guest_params;

	/* the first thing the guest reads: everything else depends on the block */
	if (p->magic != TM_GUEST_MAGIC || p->version != TM_GUEST_VERSION ||
	    p->size != sizeof(*p))
		return refuse("bad parameter block (magic, version or size): version",
			      p->version);

	/* ID_AA64PFR1_EL1.MTE [11:8]: 0b0010 or more is FEAT_MTE2 (tags in memory, tag checks);
	 * 0b0001 is instructions only, where 0xF0 in MAIR is UNPREDICTABLE. */
	uint64_t mte = (READ_SYSREG(id_aa64pfr1_el1) >> 8) & 0xf;
	if (mte < 2)
		return refuse("no MTE with tag memory (FEAT_MTE2): ID_AA64PFR1_EL1.MTE =", mte);
	/* ID_AA64MMFR0_EL1.PARange [3:0]: 0b0101 = 48 bits; TCR_EL1.IPS takes the same encoding.
	 * Descriptors with the 4KB granule and DS = 0 hold 48 bits at most. */
	uint64_t parange = READ_SYSREG(id_aa64mmfr0_el1) & 0xf;
	uint64_t ips = parange > 5 ? 5 : parange;
	static const uint8_t pa_bits[] = {32, 36, 40, 42, 44, 48};
	uint64_t pa_limit = 1ULL << pa_bits[ips];

	uint64_t ram_end = p->ram_base + p->ram_size;
	if ((p->ram_base | p->ram_size) & (SZ_2M - 1) || !p->ram_size || ram_end > pa_limit ||
	    ram_end < p->ram_base)
		return refuse("RAM must be 2 MiB aligned, inside the PA range: ram_base", p->ram_base);
	if ((uint64_t)__image_start < p->ram_base || (uint64_t)__image_end > ram_end)
		return refuse("the image is not inside RAM: it is linked at", (uint64_t)__image_start);
	if (p->port >= p->ram_base && p->port < ram_end)
		return refuse("the report port is inside RAM:", p->port);
	if (p->port >= pa_limit)
		return refuse("the report port is outside the PA range:", p->port);

	invalidate_tables();
	unsigned used = 0;
	uint64_t *l0 = new_table(&used);
	uint64_t normal = DESC_ATTR(ATTR_TAGGED) | DESC_SH_INNER | DESC_AF | DESC_UXN;
	uint64_t device = DESC_ATTR(ATTR_DEVICE) | DESC_AF | DESC_PXN | DESC_UXN;
	if (map_range(l0, &used, p->ram_base, p->ram_size, normal) < 0 ||
	    map_range(l0, &used, p->port & ~(PAGE - 1), PAGE, device) < 0)
		return refuse("out of translation tables; tables used:", used);
	__asm__ volatile("dsb sy" : : : "memory");
	invalidate_tables();

	WRITE_SYSREG(mair_el1, MAIR_VALUE);
	WRITE_SYSREG(tcr_el1, TCR_T0SZ(16) | TCR_IRGN0_WBWA | TCR_ORGN0_WBWA | TCR_SH0_INNER |
				      TCR_TG0_4K | TCR_EPD1 | TCR_TG1_4K | TCR_IPS(ips) | TCR_TBI0);
	WRITE_SYSREG(ttbr0_el1, (uint64_t)l0); /* ASID 0 */
	/* GCR_EL1 and RGSR_EL1 only steer IRG/ADDG/SUBG (random tags), which the guest does not
	 * use; TFSR_EL1 accumulates asynchronous faults only (and exists only with
	 * FEAT_MTE_ASYNC): with TCF = 0b01 none of them needs a value. */
	__asm__ volatile("isb" : : : "memory");
	return SCTLR_RES1 | SCTLR_M | SCTLR_C | SCTLR_SA | SCTLR_I | SCTLR_TCF_SYNC | SCTLR_ATA;
}
