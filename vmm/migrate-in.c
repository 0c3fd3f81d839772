/* SPDX-License-Identifier: MIT */
/*
 * The destination side (docs/aarch64.md, "The reference VMM"): a new VM with MTE and the same
 * RAM, its memslot WITHOUT dirty logging (Linux 6.12 refuses tag writes with EBUSY while any
 * memslot logs), a kvm-mte tag store on its fd and a tm_receiver. RAM and tags arrive; then the
 * device-state sections: the vCPU's registers go into the vCPU (vcpu-state.c), the port's state
 * into the port; only then does the vCPU run. The guest's pass counter must continue from the
 * source's: this VMM checks that the guest's next pass numbers follow the last one the source saw.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tagmig/tagmig.h"
#include "vmm.h"

static int read_sections(tm_receiver *rcv, vmm_runner *r, unsigned *got, GError **error)
{
	tm_state_info si;
	int ret;
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
	}
	return ret;
}

int vmm_migrate_in(const vmm_in_config *cfg, GError **error)
{
	g_autoptr(vmm_vm) vm = NULL;
	g_autoptr(tm_ram_layout) layout = NULL;
	g_autoptr(tm_tag_store) store = NULL;
	g_autoptr(tm_receiver) rcv = NULL;
	const tm_tag_store_ops *ops;
	tm_receiver_config rc = { .ram_zeroed = true, .timeout_ms = 600000,
				  .tls_creds_dir = cfg->tls_creds };
	int ret, lfd;
	unsigned port;

	if ((ret = vmm_vm_new(cfg->ram_size, &vm, error)) < 0)
		return ret;
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
	/* The engine checks the sections against what this VMM has: two, named, small. */
	static const char *const names[] = { "arm64.vcpu0", "tagmig-vmm.port", NULL };
	tm_live_config lc = { .size = sizeof(lc), .max_state_section = 1 << 20,
			      .max_state_total = 2 << 20, .state_names = names };
	if ((ret = tm_receiver_new(&rc, &rcv, error)) < 0 ||
	    (ret = tm_receiver_set_live(rcv, &lc, error)) < 0)
		return ret;
	lfd = tm_listen(cfg->host, cfg->port, &port, error);
	if (lfd < 0)
		return lfd;
	printf("vmm: waiting for the migration on %s:%u (VM with MTE, %" PRIu64 " MiB)\n",
	       cfg->host, port, cfg->ram_size >> 20);
	ret = tm_receiver_accept(rcv, lfd, error);
	close(lfd);
	if (ret < 0 || (ret = tm_receiver_start(rcv, layout, store, error)) < 0)
		return ret;

	vmm_runner r;
	vmm_runner_init(&r, vm);
	r.verbose = cfg->verbose;
	unsigned got = 0;
	/* RAM and tags, then (wait returns 1) the device-state sections, then READY (0) */
	while ((ret = tm_receiver_wait(rcv, error)) == 1) {
		if (VMM_TEST_HOOKS && cfg->die_at_state) {
			printf("vmm: TEST HOOK: killed as the device state arrives\n");
			raise(SIGKILL);
		}
		if ((ret = read_sections(rcv, &r, &got, error)) < 0)
			break;
	}
	if (ret == 0 && got != 3) {
		g_set_error(error, TM_ERROR, EPROTO,
			    "the source sent no %s state section: the guest cannot be resumed",
			    got & 1 ? "'tagmig-vmm.port'" : "'arm64.vcpu0'");
		ret = -EPROTO;
	}
	if (ret == 0 && cfg->check_tag_pattern) {
		ret = vmm_tag_pattern_check(vm, error);
		if (ret == 0)
			printf("vmm: the tag pattern of the upper half of RAM arrived intact\n");
	}
	if (ret < 0) {
		vmm_runner_clear(&r);
		return ret; /* the guest is never resumed on a failed migration */
	}
	tm_live_stats ls = { .size = sizeof(ls) };
	tm_stats st;
	tm_receiver_get_live_stats(rcv, &ls);
	tm_receiver_get_stats(rcv, &st);
	uint64_t from = r.port.last_pass, seen = r.port.passes;
	printf("vmm: received %" PRIu64 " pages (%" PRIu64 " zero with tags) in %" PRIu64
	       " rounds and %" PRIu64 " state bytes%s%s; resuming the guest after pass %" PRIu64 "\n",
	       st.pages, st.pages_by_kind[TM_PAGE_ZERO_TAGGED], ls.rounds, ls.state_bytes,
	       st.tls_cipher[0] ? " over TLS " : "", st.tls_cipher, from);

	if ((ret = vmm_runner_start(&r, error)) == 0 &&
	    (ret = vmm_runner_wait_passes(&r, seen + cfg->passes, error)) == 0) {
		g_mutex_lock(&r.lock);
		uint64_t now = r.port.last_pass;
		g_mutex_unlock(&r.lock);
		if (now != from + cfg->passes) {
			g_set_error(error, TM_ERROR, EIO,
				    "the guest's pass counter did not continue: %" PRIu64 " passes after "
				    "pass %" PRIu64 " it reports pass %" PRIu64 " (a restart?)",
				    cfg->passes, from, now);
			ret = -EIO;
		} else {
			printf("vmm: the migrated guest passed passes %" PRIu64 "..%" PRIu64
			       " on the destination, continuing from the source's pass %" PRIu64 "\n",
			       from + 1, now, from);
		}
	}
	vmm_runner_clear(&r);
	return ret;
}
