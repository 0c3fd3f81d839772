/* SPDX-License-Identifier: MIT */
/*
 * The reference VMM (tagmig-vmm, docs/aarch64.md "The reference VMM"): one arm64 KVM VM with MTE,
 * one memslot of guest RAM, one vCPU, one MMIO test port. Files, one idea each:
 *   vm.c          the VM: KVM_CAP_ARM_MTE, the memslot, dirty logging, the vCPU and its init
 *   run.c         the vCPU thread: KVM_RUN, the test port, pausing
 *   vcpu-state.c  the vCPU's registers as one device-state section (KVM_GET_REG_LIST)
 *   image.c       loading a flat guest image and its parameter block
 *   migrate-out.c the source: precopy rounds from KVM_GET_DIRTY_LOG through tm_sender
 *   migrate-in.c  the destination: tm_receiver into a new VM, then state and resume
 *   main.c        the command line
 * Errors are -errno plus a GError (domain TM_ERROR) naming the ioctl, and block and offset where
 * they apply; only main.c prints.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

/*
 * Test hooks (meson -Dtest_hooks=true, which scripts/build.sh and the aarch64 suite's cross build
 * set; never in a package): hidden options that break a migration on purpose, so that the suite
 * can show what the VMM does then. Without them neither the options nor
 * what they do is compiled in.
 */
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
#define VMM_TEST_HOOKS 1
#else
#define VMM_TEST_HOOKS 0
#endif

#define VMM_RAM_BASE 0x40000000ull  /* guest-physical base of RAM (QEMU virt's) */
#define VMM_PORT_BASE 0x09000000ull /* the MMIO test port: one page, no memslot */
#define VMM_PORT_SIZE 0x1000ull
#define VMM_PORT_HOLD 8ull         /* the port's hold register (vmm/guest/guest-params.h) */
#define VMM_LOAD_ADDR 0x40200000ull /* where the flat guest image goes */
#define VMM_BLOCK_NAME "mach-virt.ram"
#define VMM_PAGE 4096ull

typedef struct vmm_vm {
	/* read-only after vmm_vm_new() */
	int kvm_fd, vm_fd, vcpu_fd;
	struct kvm_run *run;
	size_t run_size;
	uint8_t *ram;
	uint64_t ram_size;
	bool dirty_log; /* the memslot has KVM_MEM_LOG_DIRTY_PAGES (migration thread only) */
} vmm_vm;

/* The test port: text lines the guest writes one byte per store (run.c). */
typedef struct vmm_port {
	GString *line;     /* the line being written */
	uint64_t passes;   /* "pass N ok" lines seen (in this VMM and, migrated, its source) */
	uint64_t last_pass; /* N of the last "pass N ok" */
	bool failed;       /* a line that is neither a pass nor the guest's banner */
	char *failure;     /* that line */
} vmm_port;

/* The vCPU thread and what it shares with the migration thread (run.c). */
typedef struct vmm_runner {
	/* read-only after vmm_runner_init() and the caller's setup */
	vmm_vm *vm;
	bool verbose;    /* print every guest line, passes too */
	/* migration thread only */
	pthread_t thread;
	bool started;
	GMutex lock;
	GCond cond;
	/* protected by ->lock (the port: written by the vCPU thread; read by the migration thread,
	 * also without the lock once the vCPU is paused or not started) */
	vmm_port port;
	bool pause_req;  /* the migration thread wants the vCPU out of KVM_RUN */
	bool pause_at_pass; /* ... as soon as the guest reported its next pass (the vCPU thread
			     * sets pause_req then) */
	bool hold;       /* a postcopy placement wants the vCPU out of KVM_RUN (vmm_runner_hold) */
	bool launched;   /* the thread was created (set under the lock with it) */
	int tid;         /* the vCPU thread's id, once it runs (0 before) */
	uint64_t holds, holds_blocked; /* vmm_runner_hold() calls; of those, bound expired */
	bool paused;     /* the vCPU thread is out of KVM_RUN and waits */
	bool stopped;    /* the vCPU thread ended (guest off, failure, or asked to) */
	bool quit;       /* end the thread */
	int error;       /* -errno of a failed KVM_RUN or an unexpected exit */
	char *why;       /* how the vCPU thread ended */
	/* any thread, atomic: the test port's hold register (port + 8, the MTE guest's hold_ms):
	 * 0 holds the guest, anything else lets it go; 1 unless a test hook holds it */
	uint64_t hold_reg;
	uint64_t hold_seen; /* reads of it that answered go (atomic) */
} vmm_runner;

/* vm.c */
int vmm_vm_new(uint64_t ram_size, vmm_vm **ret, GError **error);
void vmm_vm_free(vmm_vm *vm);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vmm_vm, vmm_vm_free)
int vmm_vm_set_dirty_log(vmm_vm *vm, bool on, GError **error);
/* KVM_GET_DIRTY_LOG into bitmap (ram_size / 4096 bits, 64-bit words, cleared by KVM). */
int vmm_vm_get_dirty_log(vmm_vm *vm, uint64_t *bitmap, GError **error);
int vmm_vcpu_get_reg(vmm_vm *vm, uint64_t id, void *val, GError **error);
int vmm_vcpu_set_reg(vmm_vm *vm, uint64_t id, const void *val, GError **error);
/* The size in bytes of register id's value (KVM_REG_SIZE). */
size_t vmm_reg_size(uint64_t id);
/* KVM_ARM_MTE_COPY_TAGS for [ipa, ipa + len), one tag byte per 16 bytes. */
int vmm_vm_copy_tags(vmm_vm *vm, uint64_t ipa, uint64_t len, uint8_t *tags, bool from_guest,
		     GError **error);

/* image.c: copies the image to VMM_LOAD_ADDR, fills its parameter block if it has one (hold_ms:
 * the MTE guest's field of that name, 0 normally), and sets PC, PSTATE (EL1h, interrupts masked)
 * and X0 (the parameter block's IPA). */
int vmm_image_load(vmm_vm *vm, const char *path, uint32_t hold_ms, GError **error);

/* run.c */
void vmm_runner_init(vmm_runner *r, vmm_vm *vm);
void vmm_runner_clear(vmm_runner *r);
int vmm_runner_start(vmm_runner *r, GError **error);
/* Waits until the guest has reported `passes` passes in total (0: returns at once), or the vCPU
 * thread ended: 0, or -errno with the reason (a failed pass, the guest off early, KVM_RUN; the
 * vCPU paused and not resumed: -EAGAIN at once). */
int vmm_runner_wait_passes(vmm_runner *r, uint64_t passes, GError **error);
/* Stops the vCPU out of KVM_RUN (an MMIO access in flight completed) and waits until it is. */
int vmm_runner_pause(vmm_runner *r, GError **error);
/* Stops the vCPU right after the guest's next "pass N ok" line (the newline's store completed),
 * so that the first thing it does on resuming is the next pass, and waits until it is: 0, or
 * -errno if the guest failed or the thread ended first. */
int vmm_runner_pause_at_pass(vmm_runner *r, GError **error);
/*
 * Postcopy's pause hook (tm_live_config.vcpu_pause, migrate-in.c): asks the vCPU out of KVM_RUN
 * (immediate_exit and SIGUSR1) and waits until it is parked or stopped, or it is blocked in a
 * userfault: its thread sleeps in handle_userfault (/proc/self/task/TID/wchan) or bound_ms
 * passed (it cannot leave KVM_RUN before its page is woken, which comes after
 * vmm_runner_unhold()); it stays asked, so it parks when it leaves. A vCPU not
 * started yet parks when it starts. Returns whether the bound expired. Any thread, one at a
 * time (the engine calls pause and resume alternately).
 */
bool vmm_runner_hold(vmm_runner *r, unsigned bound_ms);
/* Ends a hold: the vCPU runs again. */
void vmm_runner_unhold(vmm_runner *r);
/* Lets a paused vCPU run again (a migration that failed before the destination had everything):
 * returns whether it was paused. The registers are the ones the pause left, so the guest goes
 * on where it stopped. */
bool vmm_runner_resume(vmm_runner *r);
/* Ends the vCPU thread (after a pause, or at any time). */
void vmm_runner_stop(vmm_runner *r);
/* The port's state as bytes (a device-state section) and back. */
GBytes *vmm_port_save(const vmm_port *p);
int vmm_port_load(vmm_port *p, const void *data, size_t len, GError **error);

/* vcpu-state.c: every register of KVM_GET_REG_LIST as (id, value) records; the virtual counter
 * as read at the pause, so that the destination's guest sees time continue from there. */
int vmm_vcpu_state_save(vmm_vm *vm, GBytes **ret, GError **error);
int vmm_vcpu_state_load(vmm_vm *vm, const void *data, size_t len, GError **error);

/* migrate-out.c / migrate-in.c */
typedef struct vmm_out_config {
	const char *host, *port;
	uint64_t max_downtime_ms;
	unsigned channels;
	uint64_t after_passes;  /* migrate once the guest reported this many passes */
	unsigned max_rounds;
	int postcopy_after;     /* >= 0: that many precopy rounds, then postcopy; -1: precopy */
	uint64_t rate_limit;    /* bytes/s of RAM pages (precopy rounds, postcopy's background);
				 * 0: unlimited */
	bool skip_final_round;  /* test mutation: the guest's last writes stay behind */
	const char *tls_creds;  /* TLS 1.3 with the client credentials there (docs/tls.md), or NULL */
} vmm_out_config;
/* What a failed vmm_migrate_out() left. */
typedef struct vmm_out_result {
	bool handed_over; /* READY came: the destination has the guest; it stays paused here */
	bool running;     /* the migration failed before that: the guest runs here again */
	bool resumed;     /* ... and it had been paused for the switchover, and was resumed */
	bool postcopy;    /* the failure came after the switch to postcopy: the destination may
			   * run the guest; paused here for good, its RAM intact */
} vmm_out_result;
/* Migrates the running guest: 0, or -errno. On a failure before the destination had everything
 * (before READY, and before the switch to postcopy), the vCPU runs on here (resumed if the
 * switchover had paused it); after READY or the switch it stays paused. *ret_result says which. */
int vmm_migrate_out(vmm_runner *r, const vmm_out_config *cfg, vmm_out_result *ret_result,
		    GError **error);

typedef struct vmm_in_config {
	const char *host, *port;
	uint64_t ram_size;
	uint64_t passes;       /* after resuming, run until this many more passes */
	bool no_tags;          /* test mutation: receive without a tag store */
	bool die_at_state;     /* test hook: SIGKILL itself when the device state arrives, after
				* the source paused its guest (a destination lost mid-switchover) */
	bool check_tag_pattern; /* compare the upper half of RAM's tags with vmm_tag_pattern() */
	bool verbose;
	const char *tls_creds;  /* TLS 1.3 with the server credentials there, or NULL */
	bool no_postcopy;       /* decline postcopy (else accepted where userfaultfd is allowed) */
	unsigned place_delay_ms; /* test hook: sleep between a page's data and its tags */
	unsigned place_delay_bg_ms; /* test hook: the same for background pages (the data
	                             * channels' placers), while the guest runs */
	bool no_pause;          /* test mutation: no vCPU pause around background copies */
	bool force_copy;        /* test hook: lend the engine a userfaultfd without
	                         * UFFD_FEATURE_MOVE (placement by copy on 6.8+ too) */
	bool hold_bg;           /* test hook: the guest's hold register (run --test-guest-hold-ms)
	                         * says go at the first background placement in the lower half of
	                         * its window, and only those are delayed (place_delay_bg_ms) */
} vmm_in_config;
/* Receives the guest and runs it: 0, or -errno. *ret_stuck (on a failure): the vCPU was started in
 * postcopy and may wait on a page that never comes; the caller must leave with _exit(), without
 * freeing anything (a blocked vCPU cannot be joined, and dropping the userfaultfd under it would
 * give it SIGBUS). */
int vmm_migrate_in(const vmm_in_config *cfg, bool *ret_stuck, GError **error);

/* The VMM's own tag check (main.c's --tag-pattern, docs/aarch64.md): tags it writes through KVM
 * into the upper half of guest RAM, which the guests never touch, before the guest starts; the
 * destination reads them back through KVM after the migration. */
uint8_t vmm_tag_pattern(uint64_t granule);
int vmm_tag_pattern_write(vmm_vm *vm, GError **error);
int vmm_tag_pattern_check(vmm_vm *vm, GError **error);
