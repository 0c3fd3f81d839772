/* Entry, stack, MMU switch-on and exception vectors of the MTE test guest (docs/aarch64.md).
 *
 * Entered at EL1h with the MMU off (QEMU -kernel on `virt` without EL2/EL3; KVM's vCPU reset).
 * The image starts with a branch and a nop, then the parameter block (guest-params.h) at offset 8.
 * Nothing is written to memory with the MMU off except the page tables (mmu.c, which invalidates
 * them around the writes) and the stack of mmu_prepare(), which is dead once it returns: memory
 * written non-cacheably and read back through the cache could otherwise meet stale lines. */
	.section .text.head, "ax"
	.global _start
_start:
	b	entry
	nop
	/* the parameter block (main.c) follows at offset 8: section .head.params */

	.text
entry:
	msr	daifset, #0xf		/* no interrupts: the guest uses none */
	/* PSTATE.TCO (Tag Check Override) = 0 so that loads and stores are tag-checked. Exception
	 * entry sets it to 1 (Arm ARM, TakeException pseudocode), which is what the handler wants. */
	msr	tco, #0
	ldr	x0, =__stack_top
	mov	sp, x0
	ldr	x0, =vectors
	msr	vbar_el1, x0		/* VBAR_EL1: 2 KiB aligned vector base */
	isb
	bl	mmu_prepare		/* x0 = SCTLR_EL1 value to write, 0 to stop */
	cbz	x0, halt
	tlbi	vmalle1
	dsb	nsh
	isb
	msr	sctlr_el1, x0
	isb
	ic	iallu
	dsb	nsh
	isb
	/* MMU, caches and tag checking are on: a fresh stack, then .bss */
	ldr	x0, =__stack_top
	mov	sp, x0
	ldr	x0, =__bss_start
	ldr	x1, =__bss_end
1:	cmp	x0, x1
	b.hs	2f
	str	xzr, [x0], #8
	b	1b
2:	bl	guest_main
halt:	bl	guest_stop
3:	wfi
	b	3b

/* Exception vectors (Arm ARM "Exception vectors": 16 entries of 0x80 bytes, VBAR_EL1 2 KiB
 * aligned). Every entry reports what happened and stops: x0 = entry index; the handler reads
 * ESR_EL1, FAR_EL1 and ELR_EL1 itself. */
	.macro	vec idx
	.balign	0x80
	mov	x0, #\idx
	b	vector_common
	.endm

	.balign	0x800
vectors:
	.irp	i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vec	\i
	.endr

vector_common:
	/* a fault on the stack itself must not recurse: use the stack's top again */
	ldr	x1, =__stack_top
	mov	sp, x1
	bl	guest_exception
	b	halt
