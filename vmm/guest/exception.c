/* Every exception stops the guest with one line saying what happened. The expected one is the
 * synchronous Tag Check Fault of a read whose pointer tag differs from the granule's tag. */
#include "guest.h"

/* ESR_EL1 (D24.2 ESR_EL1): EC [31:26], ISS [24:0]; for a Data Abort the fault status code
 * DFSC is ISS [5:0]. */
#define EC_DABT_CUR 0x25   /* Data Abort without a change in Exception level */
#define DFSC_TAG_CHECK 0x11 /* 0b010001: Synchronous Tag Check Fault (FEAT_MTE2) */

__attribute__((noreturn)) void guest_exception(uint64_t vector)
{
	uint64_t esr = READ_SYSREG(esr_el1);
	uint64_t far = READ_SYSREG(far_el1);
	uint64_t elr = READ_SYSREG(elr_el1);
	uint64_t ec = (esr >> 26) & 0x3f;
	/* FAR_EL1: for a Tag Check Fault with TBI on, bits [63:60] are UNKNOWN without
	 * FEAT_MTE_TAGGED_FAR and bits [59:56] hold the pointer's tag; the address is bits [55:0],
	 * somewhere inside the faulting 16-byte granule. */
	uint64_t addr = far & 0x00ffffffffffffffULL;

	report_str("fault pass ");
	report_dec(guest_pass);
	if (ec == EC_DABT_CUR && (esr & 0x3f) == DFSC_TAG_CHECK) {
		report_str(" tag-check at ");
		report_hex(addr);
		report_str(" pointer tag ");
		report_hex((far >> 56) & 0xf);
		/* PSTATE.TCO is 1 in the handler; LDG is Unchecked anyway */
		report_str(" memory tag ");
		report_hex(mte_ldg(addr & ~(GRANULE - 1)));
	} else {
		report_str(" ec ");
		report_hex(ec);
		report_str(" at ");
		report_hex(far);
	}
	report_str(" esr ");
	report_hex(esr);
	report_str(" far ");
	report_hex(far);
	report_str(" elr ");
	report_hex(elr);
	report_str(" vector ");
	report_dec(vector);
	report_line_end();
	guest_stop();
}
