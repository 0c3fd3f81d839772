/* SPDX-License-Identifier: MIT */
/*
 * The vCPU thread: KVM_RUN until the guest powers off, fails, or the migration thread pauses it.
 *
 * The guest's only device is the test port, one page of MMIO without memslot at VMM_PORT_BASE:
 * every store there is a KVM_EXIT_MMIO whose first byte is one character of a text line (the MTE
 * test guest's report.c). "pass N ok" lines count passes; any other line but the guest's banner
 * ("tmguest: ...") and "selftest: ..." notes is a failure report (a mismatch, a fault).
 *
 * Pausing: the migration thread sets kvm_run.immediate_exit and signals the thread (SIGUSR1,
 * whose handler does nothing and which main.c installs without SA_RESTART), so that KVM_RUN
 * returns EINTR. Before it waits, the thread completes an MMIO access the guest had in flight
 * (on arm64 the PC moves past a store only at the next KVM_RUN) with one more KVM_RUN under
 * immediate_exit, so the registers read after the pause are the ones to resume from.
 * Postcopy's pause hook (vmm_runner_hold) parks the thread the same way.
 *
 * Reads of the port: the hold register at +8 (VMM_PORT_HOLD; the MTE guest's hold_ms) answers
 * ->hold_reg, everything else 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "tagmig/error.h"
#include "vmm.h"

#define PASS_TIMEOUT_S 600

void vmm_runner_init(vmm_runner *r, vmm_vm *vm)
{
	memset(r, 0, sizeof(*r));
	r->vm = vm;
	r->port.line = g_string_new(NULL);
	r->hold_reg = 1;
	g_mutex_init(&r->lock);
	g_cond_init(&r->cond);
}

void vmm_runner_clear(vmm_runner *r)
{
	vmm_runner_stop(r);
	g_string_free(r->port.line, TRUE);
	g_free(r->port.failure);
	g_free(r->why);
	g_mutex_clear(&r->lock);
	g_cond_clear(&r->cond);
}

/* A complete line from the guest (under ->lock). */
static void port_line(vmm_runner *r, const char *line)
{
	vmm_port *p = &r->port;
	unsigned long long n;
	char tail[4];
	if (sscanf(line, "pass %llu %3s", &n, tail) == 2 && strcmp(tail, "ok") == 0) {
		p->passes++;
		p->last_pass = n;
		if (r->verbose)
			printf("guest: %s\n", line);
		if (r->pause_at_pass)
			r->pause_req = true; /* the loop parks the thread before the next KVM_RUN */
		return;
	}
	printf("guest: %s\n", line);
	if (g_str_has_prefix(line, "tmguest:") || g_str_has_prefix(line, "selftest:") ||
	    g_str_has_prefix(line, "hold:") || g_str_has_prefix(line, "done "))
		return;
	if (!p->failed) {
		p->failed = true;
		p->failure = g_strdup(line);
	}
}

static void port_write(vmm_runner *r, uint8_t c)
{
	vmm_port *p = &r->port;
	g_mutex_lock(&r->lock);
	if (c == '\n') {
		port_line(r, p->line->str);
		g_string_truncate(p->line, 0);
		g_cond_broadcast(&r->cond);
	} else if (p->line->len < 4096) {
		g_string_append_c(p->line, (char)c);
	}
	g_mutex_unlock(&r->lock);
}

/* Handles one exit: 0 to go on, 1 when the guest is off, -errno (with ->why set) otherwise. */
static int handle_exit(vmm_runner *r)
{
	struct kvm_run *run = r->vm->run;
	switch (run->exit_reason) {
	case KVM_EXIT_MMIO:
		if (run->mmio.phys_addr < VMM_PORT_BASE ||
		    run->mmio.phys_addr >= VMM_PORT_BASE + VMM_PORT_SIZE) {
			r->why = g_strdup_printf("KVM_RUN: guest MMIO %s at 0x%llx, outside RAM and "
						 "the test port",
						 run->mmio.is_write ? "write" : "read",
						 (unsigned long long)run->mmio.phys_addr);
			return -EFAULT;
		}
		if (run->mmio.is_write) {
			port_write(r, run->mmio.data[0]);
		} else if (run->mmio.phys_addr == VMM_PORT_BASE + VMM_PORT_HOLD) {
			/* the hold register (hold_ms of the MTE guest), little-endian */
			uint64_t v = __atomic_load_n(&r->hold_reg, __ATOMIC_ACQUIRE);
			if (v)
				__atomic_fetch_add(&r->hold_seen, 1, __ATOMIC_RELEASE);
			for (unsigned i = 0; i < sizeof(run->mmio.data); i++)
				run->mmio.data[i] = i < run->mmio.len ? (uint8_t)(v >> (8 * i)) : 0;
		} else {
			memset(run->mmio.data, 0, sizeof(run->mmio.data));
		}
		return 0;
	case KVM_EXIT_SYSTEM_EVENT:
		if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN) {
			r->why = g_strdup("the guest powered off (PSCI SYSTEM_OFF)");
			return 1;
		}
		r->why = g_strdup_printf("KVM_RUN: system event %u (reset or crash)",
					 run->system_event.type);
		return -EIO;
	default:
		r->why = g_strdup_printf("KVM_RUN: unexpected exit reason %u", run->exit_reason);
		return -EIO;
	}
}

static void *vcpu_thread(void *arg)
{
	vmm_runner *r = arg;
	struct kvm_run *run = r->vm->run;
	int ret = 0;
	g_mutex_lock(&r->lock);
	r->tid = (int)syscall(SYS_gettid);
	g_mutex_unlock(&r->lock);
	for (;;) {
		g_mutex_lock(&r->lock);
		if ((r->pause_req || r->hold) && !r->quit) {
			/*
			 * The last exit may be an MMIO store this thread has handled but KVM has
			 * not completed: arm64 KVM moves the PC past it only in the next KVM_RUN.
			 * One KVM_RUN with immediate_exit completes it and returns EINTR without
			 * entering the guest, so the registers saved now resume after the store
			 * (else the destination repeats it: "ppass 10 ok").
			 */
			g_mutex_unlock(&r->lock);
			__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_RELAXED);
			if (ioctl(r->vm->vcpu_fd, KVM_RUN, 0) == 0 || errno != EINTR) {
				ret = -EIO;
				r->why = g_strdup_printf("KVM_RUN with immediate_exit (vCPU 0): %s",
							 g_strerror(errno));
				g_mutex_lock(&r->lock);
				break;
			}
			__atomic_store_n(&run->immediate_exit, 0, __ATOMIC_RELAXED);
			g_mutex_lock(&r->lock);
		}
		while ((r->pause_req || r->hold) && !r->quit) {
			r->paused = true;
			g_cond_broadcast(&r->cond);
			g_cond_wait(&r->cond, &r->lock);
		}
		r->paused = false;
		if (r->quit)
			break; /* with ->lock held, as every break */
		g_mutex_unlock(&r->lock);
		if (ioctl(r->vm->vcpu_fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				__atomic_store_n(&run->immediate_exit, 0, __ATOMIC_RELAXED);
				continue;
			}
			ret = -errno;
			r->why = g_strdup_printf("KVM_RUN (vCPU 0): %s", g_strerror(errno));
			g_mutex_lock(&r->lock);
			break;
		}
		ret = handle_exit(r);
		if (ret != 0) {
			g_mutex_lock(&r->lock);
			break;
		}
	}
	r->stopped = true;
	r->error = ret < 0 ? ret : 0;
	if (!r->why)
		r->why = g_strdup("the VMM stopped the vCPU");
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	return NULL;
}

int vmm_runner_start(vmm_runner *r, GError **error)
{
	/* under the lock: a hold (another thread) signals the thread only once it exists */
	g_mutex_lock(&r->lock);
	int e = pthread_create(&r->thread, NULL, vcpu_thread, r);
	r->launched = e == 0;
	g_mutex_unlock(&r->lock);
	if (e) {
		g_set_error(error, TM_ERROR, e, "pthread_create (vCPU 0): %s", g_strerror(e));
		return -e;
	}
	r->started = true;
	return 0;
}

int vmm_runner_wait_passes(vmm_runner *r, uint64_t passes, GError **error)
{
	gint64 deadline = g_get_monotonic_time() + PASS_TIMEOUT_S * G_TIME_SPAN_SECOND;
	int ret = 0;
	g_mutex_lock(&r->lock);
	for (;;) {
		if (r->port.failed) {
			g_set_error(error, TM_ERROR, EIO, "the guest reported a failure after %" G_GUINT64_FORMAT
				    " passes: %s", r->port.passes, r->port.failure);
			ret = -EIO;
			break;
		}
		if (r->port.passes >= passes)
			break;
		if (r->paused && r->pause_req) {
			/* no pass can come until something resumes it: say so now, not at the timeout */
			g_set_error(error, TM_ERROR, EAGAIN, "the vCPU is paused after %" G_GUINT64_FORMAT
				    " of %" G_GUINT64_FORMAT " passes: nothing resumed it", r->port.passes,
				    passes);
			ret = -EAGAIN;
			break;
		}
		if (r->stopped) {
			ret = r->error ? r->error : -EIO;
			g_set_error(error, TM_ERROR, -ret, "the vCPU stopped after %" G_GUINT64_FORMAT
				    " of %" G_GUINT64_FORMAT " passes: %s", r->port.passes, passes, r->why);
			break;
		}
		if (!g_cond_wait_until(&r->cond, &r->lock, deadline)) {
			g_set_error(error, TM_ERROR, ETIMEDOUT, "the guest reported %" G_GUINT64_FORMAT
				    " of %" G_GUINT64_FORMAT " passes in %d s", r->port.passes, passes,
				    PASS_TIMEOUT_S);
			ret = -ETIMEDOUT;
			break;
		}
	}
	g_mutex_unlock(&r->lock);
	return ret;
}

int vmm_runner_pause(vmm_runner *r, GError **error)
{
	g_mutex_lock(&r->lock);
	r->pause_req = true;
	g_mutex_unlock(&r->lock);
	__atomic_store_n(&r->vm->run->immediate_exit, 1, __ATOMIC_RELAXED);
	pthread_kill(r->thread, SIGUSR1);
	int ret = 0;
	g_mutex_lock(&r->lock);
	while (!r->paused && !r->stopped)
		g_cond_wait(&r->cond, &r->lock);
	if (!r->paused) {
		ret = r->error ? r->error : -EIO;
		g_set_error(error, TM_ERROR, -ret, "pausing the vCPU: it had stopped: %s", r->why);
	}
	g_mutex_unlock(&r->lock);
	return ret;
}

int vmm_runner_pause_at_pass(vmm_runner *r, GError **error)
{
	int ret = 0;
	g_mutex_lock(&r->lock);
	r->pause_at_pass = true;
	while (!r->paused && !r->stopped && !r->port.failed)
		g_cond_wait(&r->cond, &r->lock);
	if (!r->paused) {
		ret = r->error ? r->error : -EIO;
		g_set_error(error, TM_ERROR, -ret, "pausing the vCPU at the end of a pass: %s",
			    r->port.failed ? r->port.failure : r->why);
	}
	r->pause_at_pass = false;
	g_mutex_unlock(&r->lock);
	return ret;
}

/* Whether thread tid sleeps in a userfault (its wchan; false where the kernel does not say). */
static bool in_userfault(int tid)
{
	char path[64], wchan[64] = "";
	g_autofree char *text = NULL;
	snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", tid);
	if (tid <= 0 || !g_file_get_contents(path, &text, NULL, NULL))
		return false;
	g_strlcpy(wchan, text, sizeof(wchan));
	return strcmp(wchan, "handle_userfault") == 0;
}

bool vmm_runner_hold(vmm_runner *r, unsigned bound_ms)
{
	gint64 deadline = g_get_monotonic_time() + (gint64)bound_ms * 1000;
	bool blocked = false;
	g_mutex_lock(&r->lock);
	r->hold = true;
	if (r->launched && !r->stopped && !r->paused) {
		__atomic_store_n(&r->vm->run->immediate_exit, 1, __ATOMIC_RELAXED);
		pthread_kill(r->thread, SIGUSR1);
		/*
		 * A vCPU blocked in a userfault (on a page of the very batch, say) cannot leave
		 * KVM_RUN before the placer wakes it, after the resume: the trap of
		 * docs/design/postcopy-move.md. It counts as stopped; the signal stays pending, so
		 * once woken it leaves KVM_RUN before it enters the guest again.
		 */
		while (!r->paused && !r->stopped && !blocked) {
			gint64 now = g_get_monotonic_time();
			if (now >= deadline || in_userfault(r->tid))
				blocked = true;
			else
				g_cond_wait_until(&r->cond, &r->lock, MIN(deadline, now + 1000));
		}
	}
	r->holds++;
	r->holds_blocked += blocked;
	g_mutex_unlock(&r->lock);
	return blocked;
}

void vmm_runner_unhold(vmm_runner *r)
{
	g_mutex_lock(&r->lock);
	r->hold = false;
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
}

bool vmm_runner_resume(vmm_runner *r)
{
	g_mutex_lock(&r->lock);
	bool was = r->pause_req;
	r->pause_req = false; /* the thread leaves its wait and enters KVM_RUN again */
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	return was;
}

void vmm_runner_stop(vmm_runner *r)
{
	if (!r->started)
		return;
	g_mutex_lock(&r->lock);
	r->quit = true;
	g_cond_broadcast(&r->cond);
	g_mutex_unlock(&r->lock);
	__atomic_store_n(&r->vm->run->immediate_exit, 1, __ATOMIC_RELAXED);
	pthread_kill(r->thread, SIGUSR1);
	pthread_join(r->thread, NULL);
	r->started = false;
}

GBytes *vmm_port_save(const vmm_port *p)
{
	GByteArray *b = g_byte_array_new();
	uint64_t v[2] = { GUINT64_TO_LE(p->passes), GUINT64_TO_LE(p->last_pass) };
	g_byte_array_append(b, (const guint8 *)v, sizeof(v));
	g_byte_array_append(b, (const guint8 *)p->line->str, (guint)p->line->len);
	return g_byte_array_free_to_bytes(b);
}

int vmm_port_load(vmm_port *p, const void *data, size_t len, GError **error)
{
	uint64_t v[2];
	if (len < sizeof(v) || len - sizeof(v) > 4096) {
		g_set_error(error, TM_ERROR, EBADMSG, "state section 'tagmig-vmm.port': %zu bytes, "
			    "expected 16 to %d", len, 16 + 4096);
		return -EBADMSG;
	}
	memcpy(v, data, sizeof(v));
	p->passes = GUINT64_FROM_LE(v[0]);
	p->last_pass = GUINT64_FROM_LE(v[1]);
	g_string_truncate(p->line, 0);
	g_string_append_len(p->line, (const char *)data + sizeof(v), (gssize)(len - sizeof(v)));
	return 0;
}
