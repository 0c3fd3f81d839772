/* SPDX-License-Identifier: MIT */
/*
 * The destination side (docs/aarch64.md, "The reference VMM"): a new VM with MTE and the same
 * RAM, its memslot WITHOUT dirty logging (Linux 6.12 refuses tag writes with EBUSY while any
 * memslot logs), a kvm-mte tag store on its fd and a tm_receiver. RAM and tags arrive; then the
 * device-state sections: the vCPU's registers go into the vCPU (vcpu-state.c), the port's state
 * into the port; only then does the vCPU run. In postcopy (the source switched) the vCPU runs
 * from the end of device state on, while the missing pages still come: a page it touches faults
 * (KVM's stage-2 fault reaches the engine's userfaultfd) and is placed data, tags, then wake
 * (the engine's placer, tm_kvm_mte_place semantics), so the guest never sees it before its tags. The guest's pass counter must continue from the
 * source's: this VMM checks that the guest's next pass numbers follow the last one the source saw.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "tagmig/tagmig.h"
#include "vmm.h"

/* The device-state sections waiting now: *got gains bit 0 for the registers, bit 1 for the port;
 * *ret_read counts the sections read. */
static int read_sections(tm_receiver *rcv, vmm_runner *r, unsigned *got, unsigned *ret_read,
			 GError **error)
{
	tm_state_info si;
	int ret;
	*ret_read = 0;
	while ((ret = tm_receiver_next_state(rcv, &si, error)) == 1) {
		g_autofree uint8_t *buf = g_malloc(si.length ? si.length : 1);
		if ((ret = tm_receiver_read_state(rcv, buf, si.length, error)) < 0)
			return ret;
		if (strcmp(si.name, "arm64.vcpu0") == 0)
			ret = vmm_vcpu_state_load(r->vm, buf, si.length, error);
		else if (strcmp(si.name, "tagmig-vmm.port") == 0)
			ret = vmm_port_load(&r->port, buf, si.length, error);
		else {
			g_set_error(error, TM_ERROR, EPROTO,
				    "state section %u '%s': not a device of this VMM", si.index, si.name);
			ret = -EPROTO;
		}
		if (ret < 0)
			return ret;
		*got |= strcmp(si.name, "arm64.vcpu0") == 0 ? 1u : 2u;
		(*ret_read)++;
	}
	return ret;
}

static int missing_sections(unsigned got, GError **error)
{
	g_set_error(error, TM_ERROR, EPROTO,
		    "the source sent no %s state section: the guest cannot be resumed",
		    got & 1 ? "'tagmig-vmm.port'" : "'arm64.vcpu0'");
	return -EPROTO;
}

#if VMM_TEST_HOOKS && defined(VMM_CORE_HOOKS)
#include <sys/prctl.h>
#include "session/place.h"
/*
 * incoming --test-place-delay-ms: a requested page's data is in RAM, its tags not yet, and the
 * vCPU that faulted on it must still be asleep. A placer that woke it already (a bug) lets the
 * guest read the page now, and the guest sees the missing tags. Only on the urgent connection's
 * thread, whose pages the (one) vCPU waits for.
 * --test-place-delay-bg-ms: the same point on the data channels' threads, whose background
 * pages the RUNNING vCPU may touch: with copy placement the page is present there and its tags
 * are not set yet (the window docs/aarch64.md describes, widened so that the guest meets it);
 * with move placement the page became present with its tags, and the delay changes nothing.
 * --test-hold-bg: the guest (run --test-guest-hold-ms) leaves the lower half of its window
 * alone until the port's hold register says go; this hook says go at the first background
 * placement there, with the page's address, and only that placement is widened (until the
 * guest read the go, then --test-place-delay-bg-ms): the guest's first access to that half
 * lands on a page inside the widened window, unless the placement kept the vCPU out (the pause
 * hook) or was atomic (move).
 */
static unsigned delay_urgent_ms, delay_bg_ms;
static vmm_runner *hold_runner;
/* The lower half of the MTE guest's default window (vmm/guest: RAM + 4 MiB, 1 MiB). */
#define HOLD_LO (VMM_RAM_BASE + (4ull << 20))
#define HOLD_HI (HOLD_LO + (512ull << 10))

/*
 * The placement that released the hold stays open (present, its tags not set) until the guest
 * has read the go, so that its next access, to this placement's first page, comes while it is
 * open; unless the pause hook holds the vCPU, which then cannot read it (nor touch the page)
 * before the placement is complete. At most 30 s. Says which.
 */
static const char *hold_open(vmm_runner *r)
{
	gint64 end = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
	while (g_get_monotonic_time() < end) {
		if (__atomic_load_n(&r->hold_seen, __ATOMIC_ACQUIRE))
			return "the guest read the go while the placement is open";
		g_mutex_lock(&r->lock);
		bool held = r->hold;
		g_mutex_unlock(&r->lock);
		if (held)
			return "the vCPU is held (pause hook): the guest cannot read the go before "
			       "the placement is complete";
		g_usleep(1000);
	}
	return "the guest did not read the go within 30 s";
}

static void place_delay(tm_place_point point, unsigned block, uint64_t page, uint32_t npages,
			void *opaque)
{
	char name[16] = "";
	(void)block;
	(void)opaque;
	if (point != TM_PLACE_COPIED || prctl(PR_GET_NAME, name) != 0)
		return;
	if (strcmp(name, "tm-recv-urgent") == 0) {
		g_usleep((gulong)delay_urgent_ms * 1000);
	} else if (g_str_has_prefix(name, "tm-recv-") && g_ascii_isdigit(name[8])) {
		uint64_t ipa0 = VMM_RAM_BASE + page * VMM_PAGE, ipa1 = ipa0 + npages * VMM_PAGE;
		if (hold_runner) {
			if (ipa1 <= HOLD_LO || ipa0 >= HOLD_HI)
				return; /* only the held half's first placement is widened */
			uint64_t at = MAX(ipa0, HOLD_LO), none = 0;
			if (__atomic_compare_exchange_n(&hold_runner->hold_reg, &none, at, false,
							__ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
				printf("vmm: TEST HOOK: background placement of 0x%" PRIx64 "..0x%" PRIx64
				       " (%s): the guest's hold released at 0x%" PRIx64 "\n", ipa0,
				       ipa1, name, at);
				printf("vmm: TEST HOOK: %s\n", hold_open(hold_runner));
				g_usleep((gulong)delay_bg_ms * 1000);
			}
			return; /* the others are not widened: the first is the proof */
		}
		g_usleep((gulong)delay_bg_ms * 1000);
	}
}
#endif

static void set_place_delay(unsigned ms, unsigned bg_ms, vmm_runner *hold)
{
	if (!ms && !bg_ms && !hold)
		return;
#if VMM_TEST_HOOKS && defined(VMM_CORE_HOOKS)
	if (ms)
		printf("vmm: TEST HOOK: %u ms between a requested page's data and its tags\n", ms);
	if (bg_ms)
		printf("vmm: TEST HOOK: %u ms after %s background page's placement (copy: before "
		       "its tags) while the guest runs\n", bg_ms,
		       hold ? "the held half's first" : "a");
	if (hold) {
		printf("vmm: TEST HOOK: the guest's hold register says go at the first background "
		       "placement in 0x%llx..0x%llx\n", HOLD_LO, HOLD_HI);
		__atomic_store_n(&hold->hold_reg, 0, __ATOMIC_RELEASE);
	}
	delay_urgent_ms = ms;
	delay_bg_ms = bg_ms;
	hold_runner = hold;
	tm_place_set_test_hook(place_delay, NULL);
#else
	(void)hold;
	printf("vmm: --test-place-delay-ms and --test-hold-bg need the static core with test "
	       "hooks: ignored\n");
#endif
}

/*
 * Postcopy's pause hook (tm_live_config.vcpu_pause, docs/vmm.md step 5): the engine calls it
 * around a batch of background pages it places by copy (no UFFDIO_MOVE: Linux 6.1), so that the
 * running vCPU never meets one of them between its data and its tags. The vCPU leaves KVM_RUN
 * (immediate_exit and SIGUSR1) and parks, or counts as stopped while it is blocked in a
 * userfault (its wchan, else PAUSE_BOUND_MS): it cannot leave KVM_RUN before the engine wakes
 * it, which the engine does only after the resume.
 */
#define PAUSE_BOUND_MS 1000

static int vcpu_pause(void *opaque)
{
	vmm_runner_hold(opaque, PAUSE_BOUND_MS);
	return 0;
}

static void vcpu_resume(void *opaque)
{
	vmm_runner_unhold(opaque);
}

/*
 * incoming --test-force-copy: a userfaultfd of this VMM's own, opened without
 * UFFD_FEATURE_MOVE and lent to the engine (tm_live_config.uffd_borrow), so that it places by
 * copy on a kernel that could move (6.8+): the 6.1 placement, on 6.12. Not user-mode-only: KVM's
 * faults are kernel-mode ones. -errno with the reason.
 */
static int copy_only_uffd(GError **error)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	if (fd < 0 || ioctl(fd, UFFDIO_API, &api) < 0) {
		int e = errno;
		g_set_error(error, TM_ERROR, e, "--test-force-copy: %s: %s",
			    fd < 0 ? "userfaultfd" : "UFFDIO_API", g_strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	return fd;
}

static void closep(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}

/* The receiver with the live limits; postcopy accepted unless declined or userfaultfd is refused
 * here (then precopy only, and said why). KVM's faults on guest RAM are kernel-mode faults, so
 * the userfaultfd must not be UFFD_USER_MODE_ONLY. runner: the vCPU the pause hook holds;
 * uffd: a userfaultfd to lend (--test-force-copy), or -1. */
static int receiver_new(const vmm_in_config *cfg, vmm_runner *runner, int uffd,
			tm_receiver **ret, GError **error)
{
	tm_receiver_config rc = { .ram_zeroed = true, .timeout_ms = 600000,
				  .tls_creds_dir = cfg->tls_creds };
	/* The engine checks the sections against what this VMM has: two, named, small. */
	static const char *const names[] = { "arm64.vcpu0", "tagmig-vmm.port", NULL };
	tm_live_config lc = { .size = sizeof(lc), .max_state_section = 1 << 20,
			      .max_state_total = 2 << 20, .state_names = names,
			      .postcopy = !cfg->no_postcopy };
	if (uffd >= 0) {
		printf("vmm: TEST HOOK: the engine borrows a userfaultfd without UFFD_FEATURE_MOVE: "
		       "placement by copy\n");
		lc.uffd_borrow = true;
		lc.uffd = uffd;
		lc.uffd_features = 0;
	}
	if (cfg->no_pause) {
		printf("vmm: TEST MUTATION: no vCPU pause around background copies\n");
	} else {
		lc.vcpu_pause = vcpu_pause;
		lc.vcpu_resume = vcpu_resume;
		lc.vcpu_pause_opaque = runner;
	}
	g_autoptr(tm_receiver) rcv = NULL;
	g_autoptr(GError) why = NULL;
	int r = tm_receiver_new(&rc, &rcv, error);
	if (r < 0)
		return r;
	if (lc.postcopy && (r = tm_receiver_set_live(rcv, &lc, &why)) < 0) {
		if (r != -EPERM && r != -ENOSYS && r != -EOPNOTSUPP) {
			g_propagate_error(error, g_steal_pointer(&why));
			return r;
		}
		printf("vmm: postcopy declined (precopy only): %s\n", why->message);
		tm_receiver_free(rcv);
		if ((r = tm_receiver_new(&rc, &rcv, error)) < 0)
			return r;
		lc.postcopy = false;
	}
	if (!lc.postcopy && (r = tm_receiver_set_live(rcv, &lc, error)) < 0)
		return r;
	*ret = g_steal_pointer(&rcv);
	return 0;
}

static void print_received(tm_receiver *rcv, vmm_runner *r, bool postcopy, uint64_t from)
{
	tm_live_stats ls = { .size = sizeof(ls) };
	tm_stats st;
	tm_receiver_get_live_stats(rcv, &ls);
	tm_receiver_get_stats(rcv, &st);
	printf("vmm: received %" PRIu64 " pages (%" PRIu64 " zero with tags) in %" PRIu64
	       " synced rounds and %" PRIu64 " state bytes%s%s; %s after pass %" PRIu64 "\n",
	       st.pages, st.pages_by_kind[TM_PAGE_ZERO_TAGGED], ls.rounds, ls.state_bytes,
	       st.tls_cipher[0] ? " over TLS " : "", st.tls_cipher,
	       postcopy ? "the guest had been resumed at the switchover" : "resuming the guest",
	       from);
	if (postcopy)
		printf("vmm: postcopy: %" PRIu64 " pages missing at the switch (%" PRIu64
		       " discarded); %" PRIu64 " faults, %" PRIu64 " requests, fault latency p50 %"
		       PRIu64 " us p99 %" PRIu64 " us max %" PRIu64 " us; %" PRIu64 " urgent + %"
		       PRIu64 " background pages, %" PRIu64 " duplicates\n",
		       ls.postcopy_pages, ls.discarded_pages, ls.faults, ls.requests, ls.fault_p50_us,
		       ls.fault_p99_us, ls.fault_max_us, ls.urgent_pages, ls.background_pages,
		       ls.duplicate_pages);
	if (postcopy)
		printf("vmm: postcopy placement: %s (%s); %" PRIu64 " pages moved, %" PRIu64
		       " copied, %" PRIu64 " background pages placed non-atomically while the guest "
		       "ran\n",
		       ls.placement == TM_PLACEMENT_MOVE ? "move" : "copy", ls.placement_reason,
		       ls.moved_pages, ls.copied_pages, ls.background_nonatomic_pages);
	if (postcopy && ls.placement != TM_PLACEMENT_MOVE) {
		g_mutex_lock(&r->lock);
		uint64_t blocked = r->holds_blocked;
		g_mutex_unlock(&r->lock);
		printf("vmm: postcopy: the vCPU paused for %" PRIu64 " background batches placed by "
		       "copy (%" PRIu64 " of the pauses found it blocked in a fault), %" PRIu64
		       " ms in total; %" PRIu64 " pauses failed\n",
		       ls.paused_batches, blocked, ls.pause_us / 1000, ls.pause_failures);
	}
}

/* The runner lives on the heap: a vCPU left blocked in postcopy keeps using it (vmm.h). */
static void runner_free(vmm_runner *r)
{
	if (!r)
		return;
	vmm_runner_clear(r);
	g_free(r);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(vmm_runner, runner_free)

int vmm_migrate_in(const vmm_in_config *cfg, bool *ret_stuck, GError **error)
{
	g_autoptr(vmm_vm) vm = NULL;
	/* declared before the receiver: freed after it, whose placers may still hold the vCPU */
	g_autoptr(vmm_runner) r = NULL;
	__attribute__((cleanup(closep))) int uffd = -1; /* --test-force-copy's, lent */
	g_autoptr(tm_ram_layout) layout = NULL;
	g_autoptr(tm_tag_store) store = NULL;
	g_autoptr(tm_receiver) rcv = NULL;
	const tm_tag_store_ops *ops;
	int ret, lfd;
	unsigned port;

	*ret_stuck = false;
	/* Fresh anonymous memory, never touched here: in postcopy the engine registers it with
	 * userfaultfd (MISSING) at the switch, and a page the vCPU touches then faults in. */
	if ((ret = vmm_vm_new(cfg->ram_size, &vm, error)) < 0)
		return ret;
	r = g_new0(vmm_runner, 1);
	vmm_runner_init(r, vm);
	r->verbose = cfg->verbose;
	tm_kvm_mte_config kc = { .vm_fd = vm->vm_fd };
	if ((ret = tm_ram_layout_new(&layout)) < 0 ||
	    (ret = tm_ram_layout_add_block(layout, VMM_BLOCK_NAME, vm->ram, vm->ram_size, VMM_PAGE,
					   VMM_RAM_BASE, error)) < 0)
		return ret;
	if (cfg->no_tags)
		printf("vmm: TEST MUTATION: receiving without a tag store\n");
	else if ((ret = tm_tag_store_lookup("kvm-mte", &ops, error)) < 0 ||
		 (ret = tm_tag_store_new(ops, layout, &kc, &store, error)) < 0)
		return ret;
	if (VMM_TEST_HOOKS && cfg->force_copy && !cfg->no_postcopy &&
	    (uffd = copy_only_uffd(error)) < 0)
		return uffd;
	if ((ret = receiver_new(cfg, r, uffd, &rcv, error)) < 0)
		return ret;
	set_place_delay(cfg->place_delay_ms, cfg->place_delay_bg_ms, cfg->hold_bg ? r : NULL);
	lfd = tm_listen(cfg->host, cfg->port, &port, error);
	if (lfd < 0)
		return lfd;
	printf("vmm: waiting for the migration on %s:%u (VM with MTE, %" PRIu64 " MiB)\n",
	       cfg->host, port, cfg->ram_size >> 20);
	ret = tm_receiver_accept(rcv, lfd, error);
	close(lfd);
	if (ret < 0 || (ret = tm_receiver_start(rcv, layout, store, error)) < 0)
		return ret;

	unsigned got = 0, nread;
	bool started = false, complete = false;
	uint64_t from = 0, seen = 0; /* the port as it arrived: the pass the source paused after */
	/*
	 * Precopy: RAM and tags, then (wait returns 1) the device-state sections, then READY (0).
	 * Postcopy: after the switch the sections come, then wait returns 1 once more with none
	 * (the end of device state: READY went): the vCPU starts there while the missing pages
	 * still come (faulted in, or in the background); 0 once every page is in place.
	 */
	while ((ret = tm_receiver_wait(rcv, error)) == 1) {
		if (VMM_TEST_HOOKS && cfg->die_at_state) {
			printf("vmm: TEST HOOK: killed as the device state arrives\n");
			raise(SIGKILL);
		}
		if ((ret = read_sections(rcv, r, &got, &nread, error)) < 0)
			break;
		if (started || nread || tm_receiver_phase(rcv) != TM_PHASE_POSTCOPY)
			continue;
		if (got != 3) {
			ret = missing_sections(got, error);
			break;
		}
		tm_live_stats ls = { .size = sizeof(ls) };
		tm_receiver_get_live_stats(rcv, &ls);
		from = r->port.last_pass; /* the vCPU thread is not started yet */
		seen = r->port.passes;
		printf("vmm: postcopy: resuming the guest at the switchover after pass %" PRIu64
		       " (%" PRIu64 " pages missing, coming on demand and in the background)\n",
		       from, ls.postcopy_pages);
		printf("vmm: postcopy placement: %s (%s)\n",
		       ls.placement == TM_PLACEMENT_MOVE ? "move" : "copy", ls.placement_reason);
		if ((ret = vmm_runner_start(r, error)) < 0)
			break;
		started = true;
	}
	complete = ret == 0; /* every page in place: no vCPU can wait on one any more */
	if (ret == 0 && got != 3)
		ret = missing_sections(got, error);
	if (ret == 0 && cfg->check_tag_pattern) {
		/* postcopy: now that every page is in place (the guest never touches that half) */
		ret = vmm_tag_pattern_check(vm, error);
		if (ret == 0)
			printf("vmm: the tag pattern of the upper half of RAM arrived intact\n");
	}
	if (ret < 0 && started && !complete) {
		/*
		 * Postcopy failed (paused) with the guest running here: its vCPU may wait on a page
		 * that never comes. The engine keeps what was placed; this VMM gives up, and the
		 * caller leaves without freeing (see vmm.h).
		 */
		*ret_stuck = true;
		g_prefix_error(error, "postcopy failed with the guest running here after the source's "
			       "pass %" PRIu64 ": ", from);
		(void)g_steal_pointer(&rcv);
		(void)g_steal_pointer(&store);
		(void)g_steal_pointer(&layout);
		(void)g_steal_pointer(&r);
		(void)g_steal_pointer(&vm);
		uffd = -1; /* the engine may still read it */
		return ret;
	}
	if (ret < 0)
		return ret; /* the guest is never resumed on a failed migration */
	if (!started) {
		from = r->port.last_pass;
		seen = r->port.passes;
	}
	print_received(rcv, r, started, from);
	if (started) {
		g_mutex_lock(&r->lock);
		uint64_t now = r->port.last_pass;
		g_mutex_unlock(&r->lock);
		printf("vmm: postcopy: every page in place after the guest's pass %" PRIu64 " here\n",
		       now);
	}
	if ((started || (ret = vmm_runner_start(r, error)) == 0) &&
	    (ret = vmm_runner_wait_passes(r, seen + cfg->passes, error)) == 0) {
		/* at least cfg->passes here (more in postcopy, where the guest ran while the last
		 * pages came), each numbered on from the last: the same guest, not a restart */
		g_mutex_lock(&r->lock);
		uint64_t now = r->port.last_pass, here = r->port.passes - seen;
		g_mutex_unlock(&r->lock);
		if (now != from + here) {
			g_set_error(error, TM_ERROR, EIO,
				    "the guest's pass counter did not continue: %" PRIu64 " passes after "
				    "pass %" PRIu64 " it reports pass %" PRIu64 " (a restart?)",
				    here, from, now);
			ret = -EIO;
		} else {
			printf("vmm: the migrated guest passed passes %" PRIu64 "..%" PRIu64
			       " on the destination, continuing from the source's pass %" PRIu64 "\n",
			       from + 1, now, from);
		}
	}
	return ret;
}
