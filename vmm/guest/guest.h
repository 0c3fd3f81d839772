/* Shared declarations of the MTE test guest's files (freestanding, aarch64 only). */
#ifndef TM_GUEST_H
#define TM_GUEST_H

#include <stdint.h>
#include "guest-params.h"

#define GRANULE 16ULL   /* MTE tag granule (Arm ARM: one Allocation Tag per 16 bytes) */
#define PAGE 4096ULL

#define READ_SYSREG(name)                                                                          \
	({                                                                                         \
		uint64_t v_;                                                                       \
		__asm__ volatile("mrs %0, " #name : "=r"(v_));                                     \
		v_;                                                                                \
	})
#define WRITE_SYSREG(name, v) __asm__ volatile("msr " #name ", %0" : : "r"((uint64_t)(v)))

/* The parameter block, as the loader left it (main.c); read-only for the guest. */
extern struct tm_guest_params tm_guest_params;

/* main.c: the pass the guest is in (0 before the first), for the exception report. */
extern uint64_t guest_pass;

/* mmu.c: builds the identity map and programs MAIR/TCR/TTBR0; returns the SCTLR_EL1 value that
 * start.S writes to switch the MMU on, or 0 after reporting why the guest cannot run. */
uint64_t mmu_prepare(void);

/* report.c: text to the report port, one 32-bit write per byte. */
void report_str(const char *s);
void report_hex(uint64_t v);       /* 0x followed by the hex digits, no leading zeros */
void report_dec(uint64_t v);
void report_line_end(void);

/* main.c */
void guest_main(void);
__attribute__((noreturn)) void guest_stop(void);
/* exception.c: entered from any vector with the entry index; reports and stops. */
__attribute__((noreturn)) void guest_exception(uint64_t vector);

/* pattern.c: what pass `gen` writes, and its checks. */
void pattern_write(uint64_t base, uint64_t size, uint64_t gen);
/* Both return 0, or report the first mismatch and return -1. */
int pattern_check_data(uint64_t base, uint64_t size, uint64_t gen);
int pattern_check_tags(uint64_t base, uint64_t size, uint64_t gen);
/* Both checks, page by page from the window's last page down to its first. */
int pattern_check_down(uint64_t base, uint64_t size, uint64_t gen);
/* Both checks page by page over [lo, hi) (page-aligned, inside the window at base): from the
 * last page down when down, else from the first page up. */
int pattern_check_range(uint64_t base, uint64_t lo, uint64_t hi, uint64_t gen, int down);
uint64_t pattern_tag(uint64_t granule_addr, uint64_t gen);
uint64_t pattern_word(uint64_t addr, uint64_t gen);

/* MTE instructions (Arm ARM C6.2, FEAT_MTE): the Logical Address Tag is address bits [59:56]. */
static inline uint64_t tagged(uint64_t addr, uint64_t tag)
{
	return (addr & ~(0xfULL << 56)) | ((tag & 0xf) << 56);
}
/* STG: stores the Allocation Tag taken from the source register's Logical Address Tag to the
 * granule at the base address (an Unchecked access). */
static inline void mte_stg(uint64_t tagged_addr)
{
	__asm__ volatile("stg %0, [%0]" : : "r"(tagged_addr) : "memory");
}
/* ST2G: the same for two consecutive granules. */
static inline void mte_st2g(uint64_t tagged_addr)
{
	__asm__ volatile("st2g %0, [%0]" : : "r"(tagged_addr) : "memory");
}
/* STZ2G: tags two granules and zeroes their 32 bytes of data. */
static inline void mte_stz2g(uint64_t tagged_addr)
{
	__asm__ volatile("stz2g %0, [%0]" : : "r"(tagged_addr) : "memory");
}
/* STGP: stores two doublewords and the Allocation Tag taken from the base register. */
static inline void mte_stgp(uint64_t tagged_addr, uint64_t lo, uint64_t hi)
{
	__asm__ volatile("stgp %1, %2, [%0]" : : "r"(tagged_addr), "r"(lo), "r"(hi) : "memory");
}
/* LDG: loads the granule's Allocation Tag and merges it into bits [59:56] of the register. */
static inline uint64_t mte_ldg(uint64_t addr)
{
	uint64_t r = addr;
	__asm__ volatile("ldg %0, [%1]" : "+r"(r) : "r"(addr) : "memory");
	return (r >> 56) & 0xf;
}

#endif
