/* SPDX-License-Identifier: MIT */
/*
 * The source side of a live migration (docs/aarch64.md, "The reference VMM"), public API only:
 *
 *   1. guest RAM is one block ("mach-virt.ram", guest_base = the memslot's IPA) with a kvm-mte
 *      tag store on this VM's fd; a tm_sender with the switchover target (tm_live_config);
 *   2. dirty logging on the memslot, then rounds: round 1 queues every page, each later round
 *      the pages KVM_GET_DIRTY_LOG reported since (tm_sender_queue_bitmap, then tm_sender_sync);
 *      after each round tm_sender_advise() with the dirty count says whether the rest fits in
 *      --max-downtime;
 *   3. switchover: the vCPU paused out of KVM_RUN, tm_sender_guest_stopped(), the last dirty log,
 *      the vCPU's registers and the test port's state as device-state sections, tm_sender_finish().
 *   3'. or postcopy (--postcopy-after N, after N rounds; switch_postcopy()): the vCPU paused at
 *      the end of a guest pass, the last dirty log queued, tm_sender_start_postcopy(), the
 *      sections, tm_sender_finish() answering the destination's requests until every page is
 *      there;
 *   4. a failure before the destination had everything (before READY, before the switch to
 *      postcopy): the session dropped, dirty logging off, the vCPU resumed if step 3 had paused
 *      it; after READY or the switch it stays paused ("postcopy paused": RAM intact here).
 *
 * The guest keeps running during the rounds: pages (and tags) it writes after a page was queued
 * go out again in the next round. Reading tags with KVM_ARM_MTE_COPY_TAGS while dirty logging is
 * on is fine on every kernel (only writing them is refused on 6.12).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tagmig/tagmig.h"
#include "vmm.h"

#define STATE_ESTIMATE 8192 /* bytes of device state: a few hundred registers and the port */

static uint64_t popcount(const uint64_t *b, size_t words)
{
	uint64_t n = 0;
	for (size_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(b[i]);
	return n;
}

static uint64_t last_pass(vmm_runner *r)
{
	g_mutex_lock(&r->lock);
	uint64_t n = r->port.last_pass;
	g_mutex_unlock(&r->lock);
	return n;
}

/* What one migration holds; the sender is freed first (it references the layout and the store). */
typedef struct out_session {
	tm_ram_layout *layout;
	tm_tag_store *store;
	tm_sender *s;
	bool switched;  /* tm_sender_start_postcopy() returned 0: the guest never runs here again */
	char stage[80]; /* where the migration is, for the error of a failure */
} out_session;

static void out_session_clear(out_session *o)
{
	tm_sender_free(o->s);
	tm_tag_store_free(o->store);
	tm_ram_layout_free(o->layout);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(out_session, out_session_clear)

/* The vCPU's registers and the port as the two device-state sections, then tm_sender_finish().
 * *ret_at_pass and *ret_passes: the guest's pass counter as the pause left it. */
static int send_state(vmm_runner *r, tm_sender *s, uint64_t *ret_at_pass, uint64_t *ret_passes,
		      size_t *ret_bytes, GError **error)
{
	g_autoptr(GBytes) regs = NULL, port = NULL;
	int ret;
	if ((ret = vmm_vcpu_state_save(r->vm, &regs, error)) < 0)
		return ret;
	g_mutex_lock(&r->lock); /* the vCPU thread is paused: the port is still */
	port = vmm_port_save(&r->port);
	*ret_at_pass = r->port.last_pass;
	*ret_passes = r->port.passes;
	g_mutex_unlock(&r->lock);
	gsize rlen, plen;
	const void *rdata = g_bytes_get_data(regs, &rlen), *pdata = g_bytes_get_data(port, &plen);
	*ret_bytes = rlen + plen;
	/* after all RAM; referenced (no TM_STATE_COPY) until finish returns */
	if ((ret = tm_sender_put_state(s, "arm64.vcpu0", rdata, rlen, 0, error)) < 0 ||
	    (ret = tm_sender_put_state(s, "tagmig-vmm.port", pdata, plen, 0, error)) < 0 ||
	    (ret = tm_sender_finish(s, error)) < 0)
		return ret;
	return 0;
}

/*
 * Postcopy after `rounds` precopy rounds (0: none; dirty logging was never on then): the vCPU is
 * paused at the end of its next pass (so that on the destination it starts with the check of
 * the whole window the source wrote: every page is read, faulted in with its tags, before it is
 * written again), the pages the guest wrote since the last log read are queued, then
 * tm_sender_start_postcopy() (it starts the downtime clock itself): every page queued and not
 * yet packed, and every page never sent, is missing at the destination from now on and comes
 * in the background or when the destination's vCPU faults on it. The device state follows at
 * once (the destination resumes the guest with it); tm_sender_finish() serves the destination's
 * requests and the background pages until every page is there. This side's RAM is only read
 * and stays intact; from the switch on, the guest never runs here again (o->switched).
 */
static int switch_postcopy(vmm_runner *r, out_session *o, uint64_t *dirty, size_t words,
			   unsigned rounds, GError **error)
{
	vmm_vm *vm = r->vm;
	uint64_t npages = vm->ram_size / VMM_PAGE, final_dirty = 0;
	int ret;
	g_snprintf(o->stage, sizeof(o->stage), "switch to postcopy after round %u (guest paused)",
		   rounds);
	if ((ret = vmm_runner_pause_at_pass(r, error)) < 0)
		return ret;
	if (rounds > 0) {
		g_autofree uint64_t *last = g_new0(uint64_t, words);
		if ((ret = vmm_vm_get_dirty_log(vm, last, error)) < 0)
			return ret;
		for (size_t i = 0; i < words; i++)
			dirty[i] |= last[i];
		final_dirty = popcount(dirty, words);
		if ((ret = tm_sender_queue_bitmap(o->s, 0, dirty, 0, npages, error)) < 0)
			return ret;
	}
	ret = tm_sender_start_postcopy(o->s, error);
	if (ret < 0)
		return ret;
	o->switched = true;
	printf("vmm: switched to postcopy after %u precopy round%s at guest pass %" PRIu64
	       " (paused at the pass's end), %" PRIu64 " pages dirty since the last round\n",
	       rounds, rounds == 1 ? "" : "s", last_pass(r), final_dirty);
	g_strlcpy(o->stage, "postcopy (guest paused here, running on the destination)",
		  sizeof(o->stage));
	uint64_t at_pass, passes;
	size_t state_bytes;
	if ((ret = send_state(r, o->s, &at_pass, &passes, &state_bytes, error)) < 0)
		return ret;

	tm_live_stats ls = { .size = sizeof(ls) };
	tm_stats st;
	tm_sender_get_live_stats(o->s, &ls);
	tm_sender_get_stats(o->s, &st);
	printf("vmm: postcopy done: switchover at guest pass %" PRIu64 " (%" PRIu64 " passes "
	       "reported here), %u precopy round%s, device state %zu bytes, downtime %.1f ms; %"
	       PRIu64 " pages missing at the switch: %" PRIu64 " requests answered (%" PRIu64
	       " urgent pages), %" PRIu64 " background pages, service p50 %" PRIu64 " us p99 %"
	       PRIu64 " us; %" PRIu64 " pages (%" PRIu64 " zero with tags) in %.3f s over %u "
	       "channels%s%s\n",
	       at_pass, passes, rounds, rounds == 1 ? "" : "s", state_bytes, ls.downtime_us / 1e3,
	       ls.postcopy_pages, ls.requests, ls.urgent_pages, ls.background_pages,
	       ls.service_p50_us, ls.service_p99_us, st.pages,
	       st.pages_by_kind[TM_PAGE_ZERO_TAGGED], st.seconds, st.channels,
	       st.tls_cipher[0] ? ", TLS " : "", st.tls_cipher);
	if (ls.end_count_mismatches)
		fprintf(stderr, "vmm: warning: %" PRIu64 " data channel%s acknowledged other counts "
			"than were sent (the first: %s); the destination had checked them itself, "
			"so the migration completed\n", ls.end_count_mismatches,
			ls.end_count_mismatches == 1 ? "" : "s", ls.end_count_mismatch);
	vmm_runner_stop(r);
	return 0;
}

static int migrate(vmm_runner *r, const vmm_out_config *cfg, out_session *o, GError **error)
{
	vmm_vm *vm = r->vm;
	uint64_t npages = vm->ram_size / VMM_PAGE;
	size_t words = (size_t)((npages + 63) / 64);
	g_autofree uint64_t *dirty = g_new0(uint64_t, words);
	const tm_tag_store_ops *ops;
	tm_kvm_mte_config kc = { .vm_fd = vm->vm_fd };
	tm_sender_config sc = { .channels = cfg->channels, .timeout_ms = 600000,
				.tls_creds_dir = cfg->tls_creds };
	const bool postcopy = cfg->postcopy_after >= 0;
	tm_live_config lc = { .size = sizeof(lc), .max_downtime_us = cfg->max_downtime_ms * 1000,
			      .postcopy = postcopy, .rate_limit = cfg->rate_limit };
	int ret;

	if (cfg->after_passes) {
		ret = vmm_runner_wait_passes(r, cfg->after_passes, error);
		if (ret < 0)
			return ret;
	}
	printf("vmm: migrating to %s:%s at guest pass %" PRIu64 "\n", cfg->host, cfg->port,
	       last_pass(r));
	g_strlcpy(o->stage, "connecting", sizeof(o->stage));
	if ((ret = tm_ram_layout_new(&o->layout)) < 0 ||
	    (ret = tm_ram_layout_add_block(o->layout, VMM_BLOCK_NAME, vm->ram, vm->ram_size,
					   VMM_PAGE, VMM_RAM_BASE, error)) < 0 ||
	    (ret = tm_tag_store_lookup("kvm-mte", &ops, error)) < 0 ||
	    (ret = tm_tag_store_new(ops, o->layout, &kc, &o->store, error)) < 0 ||
	    (ret = tm_sender_new(o->layout, o->store, &sc, &o->s, error)) < 0 ||
	    (ret = tm_sender_set_live(o->s, &lc, error)) < 0 ||
	    (ret = tm_sender_connect(o->s, cfg->host, cfg->port, error)) < 0)
		return ret;
	tm_sender *s = o->s;
	/* Postcopy at once: every page is missing at the destination, no log needed. */
	if (postcopy && cfg->postcopy_after == 0)
		return switch_postcopy(r, o, dirty, words, 0, error);
	/* From here on every guest write marks its page; round 1 sends them all anyway. */
	if ((ret = vmm_vm_set_dirty_log(vm, true, error)) < 0)
		return ret;

	memset(dirty, 0xff, words * 8);
	if (npages % 64)
		dirty[words - 1] = (1ull << (npages % 64)) - 1;
	unsigned round;
	for (round = 1;; round++) {
		g_snprintf(o->stage, sizeof(o->stage), "precopy round %u (guest running)", round);
		if ((ret = tm_sender_queue_bitmap(s, 0, dirty, 0, npages, error)) < 0 ||
		    (ret = tm_sender_sync(s, error)) < 0 ||
		    (ret = vmm_vm_get_dirty_log(vm, dirty, error)) < 0)
			return ret;
		tm_round_stats rs;
		tm_switch_advice adv;
		uint64_t ndirty = popcount(dirty, words);
		if ((ret = tm_sender_get_round(s, round, &rs)) < 0 ||
		    (ret = tm_sender_advise(s, ndirty, STATE_ESTIMATE, &adv)) < 0) {
			g_set_error(error, TM_ERROR, -ret, "round %u: no round figures or advice", round);
			return ret;
		}
		printf("vmm: round %u: %" PRIu64 " pages, %" PRIu64 " bytes in %.3f s; %" PRIu64
		       " pages dirty since, expected downtime %.1f ms; guest at pass %" PRIu64 "\n",
		       round, rs.pages_sent, rs.wire_bytes, rs.seconds, ndirty,
		       adv.expected_downtime_us == UINT64_MAX ? -1.0 : adv.expected_downtime_us / 1e3,
		       last_pass(r));
		if (postcopy && round >= (unsigned)cfg->postcopy_after)
			return switch_postcopy(r, o, dirty, words, round, error);
		if (!postcopy && (adv.switch_now || round >= cfg->max_rounds))
			break;
	}

	/*
	 * Switchover: the vCPU out of KVM_RUN, then the final round: the pages the last log read
	 * reported (not sent yet) and what the guest wrote since. KVM_GET_DIRTY_LOG clears what it
	 * returns, so the two must be merged, not the first overwritten by the second.
	 */
	g_autofree uint64_t *last = g_new0(uint64_t, words);
	g_snprintf(o->stage, sizeof(o->stage), "switchover after round %u (guest paused)", round);
	if ((ret = vmm_runner_pause(r, error)) < 0 ||
	    (ret = tm_sender_guest_stopped(s, error)) < 0 ||
	    (ret = vmm_vm_get_dirty_log(vm, last, error)) < 0)
		return ret;
	for (size_t i = 0; i < words; i++)
		dirty[i] |= last[i];
	uint64_t final_dirty = popcount(dirty, words);
	if (VMM_TEST_HOOKS && cfg->skip_final_round)
		printf("vmm: TEST MUTATION: the final round's %" PRIu64 " pages stay behind\n",
		       final_dirty);
	else if ((ret = tm_sender_queue_bitmap(s, 0, dirty, 0, npages, error)) < 0)
		return ret;
	uint64_t at_pass, passes;
	size_t state_bytes;
	if ((ret = send_state(r, s, &at_pass, &passes, &state_bytes, error)) < 0)
		return ret;

	tm_live_stats ls = { .size = sizeof(ls) };
	tm_stats st;
	tm_sender_get_live_stats(s, &ls);
	tm_sender_get_stats(s, &st);
	printf("vmm: switchover after %u precopy rounds at guest pass %" PRIu64 " (%" PRIu64
	       " passes reported here): final round %" PRIu64 " pages, device state %zu bytes; "
	       "downtime %.1f ms; %" PRIu64 " pages (%" PRIu64 " zero with tags) in %.3f s over %u "
	       "channels%s%s\n",
	       round, at_pass, passes, final_dirty, state_bytes, ls.downtime_us / 1e3,
	       st.pages, st.pages_by_kind[TM_PAGE_ZERO_TAGGED], st.seconds, st.channels,
	       st.tls_cipher[0] ? ", TLS " : "", st.tls_cipher);
	vmm_runner_stop(r);
	return 0;
}

/* Whether the destination has everything: READY came (tm_live_stats.downtime_us is set from then
 * on), or the session completed. From that moment on the guest may run there and must never run
 * here again, even if tm_sender_finish() failed after it. */
static bool handed_over(tm_sender *s)
{
	tm_live_stats ls = { .size = sizeof(ls) };
	if (!s || tm_sender_get_live_stats(s, &ls) < 0)
		return false;
	return ls.downtime_us != 0 || ls.phase == TM_PHASE_COMPLETE;
}

/* Whether the sender is past the switch to postcopy (also when start_postcopy() failed late). */
static bool after_switch(tm_sender *s)
{
	if (!s)
		return false;
	tm_phase ph = tm_sender_phase(s);
	return ph == TM_PHASE_POSTCOPY || ph == TM_PHASE_POSTCOPY_PAUSED;
}

int vmm_migrate_out(vmm_runner *r, const vmm_out_config *cfg, vmm_out_result *ret_result,
		    GError **error)
{
	g_auto(out_session) o = { 0 };
	*ret_result = (vmm_out_result){ 0 };
	int ret = migrate(r, cfg, &o, error);
	if (ret >= 0)
		return ret;
	if (o.stage[0])
		g_prefix_error(error, "%s: ", o.stage);
	if (o.switched || after_switch(o.s)) {
		/* postcopy: the destination may run the guest; this side keeps it paused, RAM and
		 * session (which knows what the destination lacks) intact until the process ends */
		ret_result->handed_over = ret_result->postcopy = true;
		return ret;
	}
	if (handed_over(o.s)) {
		ret_result->handed_over = true; /* paused here for good: the destination has it */
		return ret;
	}
	/*
	 * Failed before the destination had everything: the guest is whole here (its RAM was only
	 * read). Abandon the session (its channels closed: the destination cannot resume a guest
	 * it did not get whole), stop logging, and let the vCPU go on from the pause, if it came.
	 */
	tm_sender_free(o.s);
	o.s = NULL;
	if (r->vm->dirty_log)
		vmm_vm_set_dirty_log(r->vm, false, NULL); /* only costs write faults if it fails */
	ret_result->resumed = vmm_runner_resume(r);
	g_mutex_lock(&r->lock);
	ret_result->running = !r->stopped;
	g_mutex_unlock(&r->lock);
	return ret;
}
