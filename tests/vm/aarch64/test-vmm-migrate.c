/* SPDX-License-Identifier: MIT */
/*
 * The reference VMM (vmm/, tagmig-vmm) inside the emulated arm64 machine, as two processes over
 * loopback (docs/aarch64.md, "The reference VMM"):
 *   1. standalone: `tagmig-vmm run` boots the guest, which reports passes through the test port;
 *   2. live migration: `tagmig-vmm incoming` waits, `tagmig-vmm run --migrate-to` lets the guest
 *      run a pass, then migrates it precopy while it runs (3 rounds from KVM_GET_DIRTY_LOG: a
 *      downtime target of 1 ms is never met, --max-rounds ends precopy; pause,
 *      final round, registers and port as device state); the destination checks the tags the
 *      source wrote through KVM into the upper half of RAM (--tag-pattern), resumes the guest, and
 *      the guest must report 3 more passes whose numbers continue the source's; again over TLS
 *      (throwaway credentials);
 *   3. a destination without a tag store (hidden --test-no-tags) must refuse the migration and
 *      never resume the guest;
 *   4. a hostile source (the engine's fake peer) aims a page past guest RAM at a waiting
 *      destination: refused naming the page, the guest never resumed;
 *   2b. postcopy: after 1 precopy round, after none (the destination widening the gap between a
 *      requested page's data and its tags to 20 ms, so that a vCPU woken too early would be
 *      seen, and the source's background stream slowed to 256 KiB/s), and after 1 over TLS; the guest resumes at the switchover and faults pages in; then a
 *      destination lost after the switch: the source says "postcopy paused", never resumes;
 *   2c. the background window: postcopy at once, the destination sleeping 20 ms after every
 *      background placement while the guest runs: on 6.8+ it must place by move (guest RAM
 *      PROT_MTE, UFFDIO_MOVE) with no background page placed non-atomically, and the guest
 *      passes on; without UFFDIO_MOVE (6.1) not widened, and it must say it places by copy;
 *   2e. the background window met for certain: a guest that holds the lower half of its window
 *      back until the destination says a background placement there is under way (held open
 *      500 ms before its tags): no tag-check fault with move (6.8+) or with copy and the vCPU
 *      paused around background batches (6.1; 6.12 with copy forced), a tag-check fault with
 *      copy and the pause hook off (the mutation, hidden incoming --test-no-pause);
 *   5. a destination killed after the source's first precopy round, then one killed as the
 *      device state arrives (after the source paused its guest): each time the source says why,
 *      its guest runs on (resumed, the second time), 3 more passes there, exit status 3 (also
 *      checked in 3., where the guest was never paused).
 * The guest is the MTE test guest (/vmm/guest.bin: vmm/guest/, its own data and tag checks) when
 * the harness packed it, else a small guest of this file (data checks only: the tags are then
 * checked by --tag-pattern alone), said in an INFO line. On an arm64 host the native build runs
 * it with TAGMIG_VMM and TAGMIG_VMM_GUEST naming the built VMM and guest instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "codec/codec.h"
#include "common/testing/tls-creds.h"
#include "kvm-test.h"

#define TIMEOUT_S 900

/*
 * The small guest, MMU off: the parameter block of vmm/guest/guest-params.h at offset 8 (the VMM
 * fills in RAM and port), then forever: check that the 64 KiB window at RAM + 4 MiB holds the
 * generation in x19 (its first word is read first: a window that did not follow the registers
 * is a "mismatch" line), write generation + 1 into every word, read it back, report
 * "pass N ok" one byte per 32-bit store to the port.
 */
extern const unsigned char tg_start[], tg_end[];
__asm__(".pushsection .rodata\n"
	".balign 8\n"
	".global tg_start, tg_end\n"
	".hidden tg_start, tg_end\n"
	"tg_start:\n"
	"  b 1f\n"
	"  nop\n"
	"tg_params:\n"
	"  .quad 0x3154534555474d54\n" /* magic */
	"  .word 1, 88\n"              /* version, size */
	"  .quad 0x40000000, 0x4000000, 0x09000000, 0, 0, 0\n" /* ram, size, port, window, passes */
	"  .word 0, 0\n"
	"  .quad 0\n"
	"  .word 1, 0\n"
	"1:\n"
	"  adr x20, tg_params\n"
	"  ldr x21, [x20, #32]\n"
	"  ldr x22, [x20, #16]\n"
	"  mov x23, #0x400000\n"
	"  add x23, x22, x23\n"
	"  mov x24, #0x300000\n"
	"  add x24, x22, x24\n"
	"  mov x19, #0\n"
	"2:\n"
	"  ldr x1, [x23]\n"
	"  cmp x1, x19\n"
	"  b.ne 9f\n"
	"  add x19, x19, #1\n"
	"  mov x2, x23\n"
	"  mov x3, #0x10000\n"
	"3:\n"
	"  str x19, [x2], #8\n"
	"  subs x3, x3, #8\n"
	"  b.ne 3b\n"
	"  mov x2, x23\n"
	"  mov x3, #0x10000\n"
	"4:\n"
	"  ldr x4, [x2], #8\n"
	"  cmp x4, x19\n"
	"  b.ne 9f\n"
	"  subs x3, x3, #8\n"
	"  b.ne 4b\n"
	"  adr x6, 20f\n"
	"  bl 30f\n"
	"  mov x5, x19\n"
	"  add x6, x24, #32\n"
	"  mov x7, #10\n"
	"5:\n"
	"  udiv x9, x5, x7\n"
	"  msub x10, x9, x7, x5\n"
	"  add x10, x10, #48\n"
	"  sub x6, x6, #1\n"
	"  strb w10, [x6]\n"
	"  mov x5, x9\n"
	"  cbnz x5, 5b\n"
	"  add x8, x24, #32\n"
	"6:\n"
	"  ldrb w1, [x6], #1\n"
	"  str w1, [x21]\n"
	"  cmp x6, x8\n"
	"  b.ne 6b\n"
	"  adr x6, 21f\n"
	"  bl 30f\n"
	"  b 2b\n"
	"9:\n"
	"  adr x6, 22f\n"
	"  bl 30f\n"
	"10:\n"
	"  wfi\n"
	"  b 10b\n"
	/* 30: prints the NUL-terminated string at x6 */
	"30:\n"
	"  ldrb w1, [x6], #1\n"
	"  cbz w1, 31f\n"
	"  str w1, [x21]\n"
	"  b 30b\n"
	"31:\n"
	"  ret\n"
	"20: .asciz \"pass \"\n"
	"21: .asciz \" ok\\n\"\n"
	"22: .asciz \"mismatch: the window does not hold the generation in x19\\n\"\n"
	"  .balign 4\n"
	"tg_end:\n"
	".popsection\n");

typedef struct proc {
	const char *name;
	char log[64];
	GPid pid;
	int status;
	bool done;
} proc;

static bool spawn(proc *p, const char *const *argv)
{
	g_autoptr(GError) err = NULL;
	snprintf(p->log, sizeof(p->log), "/tmp/%s.log", p->name);
	int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	p->done = false;
	if (fd < 0 || !g_spawn_async_with_fds(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
					      NULL, NULL, &p->pid, -1, fd, fd, &err)) {
		tk_fail("%s: spawning %s: %s", p->name, argv[0], err ? err->message : g_strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	close(fd);
	return true;
}

/* Waits for every process (killing all after timeout_s); true if all exited 0. */
static bool wait_all(proc **ps, int n, int timeout_s)
{
	gint64 deadline = g_get_monotonic_time() + timeout_s * G_TIME_SPAN_SECOND;
	int left = n;
	while (left) {
		for (int i = 0; i < n; i++) {
			if (ps[i]->done)
				continue;
			int st;
			pid_t r = waitpid(ps[i]->pid, &st, WNOHANG);
			if (r == ps[i]->pid) {
				ps[i]->done = true;
				ps[i]->status = st;
				left--;
			}
		}
		if (left && g_get_monotonic_time() > deadline) {
			for (int i = 0; i < n; i++)
				if (!ps[i]->done) {
					tk_info("%s: no exit in %d s: killed", ps[i]->name, timeout_s);
					kill(ps[i]->pid, SIGKILL);
				}
			deadline = G_MAXINT64;
		}
		if (left)
			g_usleep(50000);
	}
	bool ok = true;
	for (int i = 0; i < n; i++)
		ok = ok && WIFEXITED(ps[i]->status) && WEXITSTATUS(ps[i]->status) == 0;
	return ok;
}

/* The process's output as INFO lines; returns it. */
static char *show(proc *p)
{
	char *text = NULL;
	if (!g_file_get_contents(p->log, &text, NULL, NULL))
		text = g_strdup("");
	g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
	for (char **l = lines; *l; l++)
		if (**l)
			tk_info("%s: %s", p->name, *l);
	tk_info("%s: exit status %d", p->name,
		WIFEXITED(p->status) ? WEXITSTATUS(p->status) : 128 + WTERMSIG(p->status));
	return text;
}

static bool exited_ok(const proc *p)
{
	return WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
}

/* The destination, half a second to listen, then the source; false (both gone) if either could
 * not start. */
static bool start_pair(proc *dst, const char *const *dst_argv, proc *src,
		       const char *const *src_argv)
{
	if (!spawn(dst, dst_argv))
		return false;
	g_usleep(500000); /* listening */
	if (!spawn(src, src_argv)) {
		kill(dst->pid, SIGKILL);
		return false;
	}
	return true;
}

/* start_pair, both to their end, their output shown: *so the source's, *dout the destination's. */
static bool run_pair(proc *dst, const char *const *dst_argv, proc *src,
		     const char *const *src_argv, char **so, char **dout)
{
	if (!start_pair(dst, dst_argv, src, src_argv))
		return false;
	proc *ps[] = { src, dst };
	wait_all(ps, 2, TIMEOUT_S);
	*so = show(src);
	*dout = show(dst);
	return true;
}

/* One live migration between two VMM processes over 127.0.0.1:port, with TLS if creds. */
static void migration(const char *VMM, const char *guest, const char *port, const char *creds)
{
	const char *how = creds ? " (TLS)" : "";
	g_autofree char *at = g_strdup_printf("127.0.0.1:%s", port);
	proc dst = { .name = creds ? "destination-tls" : "destination" };
	proc src = { .name = creds ? "source-tls" : "source" };
	const char *dst_argv[] = { VMM, "incoming", "--listen", at, "--passes", "3",
				   "--check-tag-pattern", creds ? "--tls-creds" : NULL, creds, NULL };
	const char *src_argv[] = { VMM, "run", "--guest", guest, "--migrate-to", at,
				   "--migrate-after", "1", "--tag-pattern", "--max-downtime", "1",
				   "--max-rounds", "3", creds ? "--tls-creds" : NULL, creds, NULL };
	g_autofree char *so = NULL, *dout = NULL;
	if (!run_pair(&dst, dst_argv, &src, src_argv, &so, &dout))
		return;
	TK_CHECK(exited_ok(&src) && strstr(so, "switchover after 3 precopy rounds") &&
			 (!creds || strstr(so, "TLS ")),
		 "source%s: 3 precopy rounds while the guest ran, pause, final round and device "
		 "state sent", how);
	TK_CHECK(strstr(dout, "tag pattern of the upper half of RAM arrived intact"),
		 "destination%s: the tags the source set through KVM arrived (read back through KVM)",
		 how);
	TK_CHECK(exited_ok(&dst) && strstr(dout, "continuing from the source's pass"),
		 "destination%s: the resumed guest reported 3 more passes, numbered on from the "
		 "source's", how);
}

/* The destination's "N faults" of its postcopy line, or -1. */
static long postcopy_faults(const char *dout)
{
	const char *l = strstr(dout, "pages missing at the switch (");
	const char *f = l ? strstr(l, "); ") : NULL;
	long n;
	return f && sscanf(f, "); %ld faults", &n) == 1 ? n : -1;
}

/*
 * A live migration through postcopy after `after` precopy rounds (0: at once): the source pauses
 * the guest at the end of a pass, switches, sends the vCPU state and serves the destination's
 * requests; the destination resumes the guest at the switchover, so its next pass first checks
 * the window the source wrote (every page faulted in or placed in the background, data and tags
 * before the vCPU sees it; the window from its last page down, against the background stream
 * going up), and must pass 3 passes numbered on from the source's. place_delay: the destination
 * sleeps that many ms between a requested page's data and its tags (a wake before the tags would
 * let the guest see the page without them). kib_s: the source's pages go at that rate
 * (--max-bandwidth: precopy and the background stream, never the requested pages), so that the
 * guest faults in most of the window (0: unlimited).
 */
static void postcopy_migration(const char *VMM, const char *guest, const char *port,
			       unsigned after, const char *creds, unsigned place_delay,
			       unsigned kib_s)
{
	g_autofree char *what = g_strdup_printf("postcopy after %u round%s%s", after,
						after == 1 ? "" : "s", creds ? " (TLS)" : "");
	g_autofree char *at = g_strdup_printf("127.0.0.1:%s", port);
	g_autofree char *after_s = g_strdup_printf("%u", after);
	g_autofree char *delay_s = g_strdup_printf("%u", place_delay);
	g_autofree char *kib_str = g_strdup_printf("%u", kib_s);
	g_autofree char *dname = g_strdup_printf("destination-pc%u%s", after, creds ? "-tls" : "");
	g_autofree char *sname = g_strdup_printf("source-pc%u%s", after, creds ? "-tls" : "");
	proc dst = { .name = dname }, src = { .name = sname };
	const char *dst_argv[] = { VMM, "incoming", "--listen", at, "--passes", "3",
				   "--check-tag-pattern", "--test-place-delay-ms", delay_s,
				   creds ? "--tls-creds" : NULL, creds, NULL };
	const char *src_argv[] = { VMM, "run", "--guest", guest, "--migrate-to", at,
				   "--migrate-after", "1", "--tag-pattern", "--postcopy-after",
				   after_s, "--max-bandwidth", kib_str, creds ? "--tls-creds" : NULL,
				   creds, NULL };
	g_autofree char *so = NULL, *dout = NULL;
	if (!run_pair(&dst, dst_argv, &src, src_argv, &so, &dout))
		return;
	g_autofree char *switched = g_strdup_printf("switched to postcopy after %u precopy round",
						    after);
	TK_CHECK(exited_ok(&src) && strstr(so, switched) && strstr(so, "vmm: postcopy done:") &&
			 (after == 0 || strstr(so, "vmm: round 1:")) && (!creds || strstr(so, "TLS ")),
		 "%s: source: %u precopy round%s, pause at a pass's end, switch, device state, "
		 "requests and background pages served", what, after, after == 1 ? "" : "s");
	long faults = postcopy_faults(dout);
	tk_info("%s: the destination's vCPU faulted %ld times", what, faults);
	/* After 0 rounds every page is missing when the guest resumes, its code too: it faults.
	 * After 1, whether it reaches a missing page before the background stream is timing. */
	TK_CHECK(strstr(dout, "postcopy: resuming the guest at the switchover after pass") &&
			 faults >= (after == 0 ? 1 : 0),
		 "%s: destination: the guest resumed at the switchover%s", what,
		 after == 0 ? " and faulted missing pages in" : " (faults printed above)");
	TK_CHECK(strstr(dout, "tag pattern of the upper half of RAM arrived intact"),
		 "%s: destination: the tags the source set through KVM arrived (background pages)",
		 what);
	TK_CHECK(exited_ok(&dst) && strstr(dout, "continuing from the source's pass"),
		 "%s: destination: 3 more passes (each first checking the source's last pass), "
		 "numbered on from the source's", what);
}

/* Whether the running kernel has UFFDIO_MOVE (Linux 6.8+). */
static bool kernel_has_move(void)
{
	struct utsname u;
	unsigned major = 0, minor = 0;
	if (uname(&u) != 0 || sscanf(u.release, "%u.%u", &major, &minor) != 2)
		return false;
	return major > 6 || (major == 6 && minor >= 8);
}

/*
 * 2c. The background window (docs/design/postcopy-move.md): postcopy at once, background pages
 * slowed to 256 KiB/s, and the destination sleeping 20 ms after each placement's UFFDIO_COPY or
 * MOVE, on the BACKGROUND path too (as 2b does on the urgent path), while the guest runs and
 * sweeps its window. With copy placement a background page is present without its tags for
 * those 20 ms (a guest touching it then takes a tag-check fault: seen once on 6.1); with move
 * placement (6.8+: UFFDIO_MOVE, guest RAM PROT_MTE) it became present with its tags. The
 * destination's counts say which: no background page placed non-atomically with move. On a
 * kernel without UFFDIO_MOVE the background is not widened and the run must say that it places
 * by copy, and why.
 */
static void postcopy_background_window(const char *VMM, const char *guest)
{
	const bool move = kernel_has_move();
	proc dst = { .name = "destination-bgwin" }, src = { .name = "source-bgwin" };
	const char *dst_argv[] = { VMM, "incoming", "--listen", "127.0.0.1:4720", "--passes", "3",
				   "--check-tag-pattern", "--test-place-delay-ms", "20",
				   move ? "--test-place-delay-bg-ms" : NULL, "20", NULL };
	const char *src_argv[] = { VMM, "run", "--guest", guest, "--migrate-to", "127.0.0.1:4720",
				   "--migrate-after", "1", "--tag-pattern", "--postcopy-after", "0",
				   "--max-bandwidth", "256", NULL };
	tk_info("background window: kernel %s UFFDIO_MOVE: %s", move ? "has" : "lacks",
		move ? "20 ms after every background placement" : "not widened");
	g_autofree char *so = NULL, *dout = NULL;
	if (!run_pair(&dst, dst_argv, &src, src_argv, &so, &dout))
		return;
	if (move) {
		TK_CHECK(strstr(dout, "vmm: postcopy placement: move (") &&
				 strstr(dout, " 0 background pages placed non-atomically"),
			 "background window: the destination places by UFFDIO_MOVE (data and tags "
			 "in one step), no background page non-atomically");
		TK_CHECK(exited_ok(&dst) && !strstr(dout, "tag-check") &&
				 strstr(dout, "continuing from the source's pass") && exited_ok(&src),
			 "background window widened to 20 ms: no tag-check fault, the guest passed 3 "
			 "more passes numbered on from the source's");
	} else {
		TK_CHECK(strstr(dout, "vmm: postcopy placement: copy (") &&
				 strstr(dout, "UFFD_FEATURE_MOVE"),
			 "background window: without UFFDIO_MOVE the destination says it places by "
			 "copy, and why");
		TK_CHECK(exited_ok(&dst) && strstr(dout, "continuing from the source's pass") &&
				 exited_ok(&src),
			 "background window (not widened): the guest passed 3 more passes numbered on "
			 "from the source's");
	}
}

/*
 * 2e. The background window met for certain (docs/design/postcopy-move.md, "Status"): the MTE
 * guest (run --test-guest-hold-ms) checks the upper half of its window first after the switch
 * and leaves the lower half alone until the destination's hold register says go; the
 * destination (--test-hold-bg) says go at the first background placement in that half, with its
 * address, and holds that placement open after its UFFDIO_COPY (or MOVE), before its tags,
 * until the guest has read the go, and 500 ms more. The
 * guest's first access to the lower half is then a page of that placement, while it is open: by copy with the vCPU running, a page without its tags, which the guest reports as
 * a tag-check fault. The pause hook (tm_live_config.vcpu_pause) keeps the vCPU out of KVM_RUN
 * for the placement; move placement (6.8+) makes the page present with its tags. x1, x2: more
 * destination options (NULL: none); label: the run's name. Returns the destination's output
 * (NULL if it did not run); *ret_ok: both exited 0.
 */
static char *postcopy_held_window(const char *VMM, const char *guest, const char *port,
				  const char *x1, const char *x2, const char *label, bool *ret_ok)
{
	g_autofree char *at = g_strdup_printf("127.0.0.1:%s", port);
	g_autofree char *dname = g_strdup_printf("destination-held-%s", label);
	g_autofree char *sname = g_strdup_printf("source-held-%s", label);
	proc dst = { .name = dname }, src = { .name = sname };
	const char *dst_argv[] = { VMM, "incoming", "--listen", at, "--passes", "3",
				   "--test-hold-bg", "--test-place-delay-bg-ms", "500", x1, x2, NULL };
	const char *src_argv[] = { VMM, "run", "--guest", guest, "--migrate-to", at,
				   "--migrate-after", "1", "--postcopy-after", "0",
				   "--test-guest-hold-ms", "60000", NULL };
	g_autofree char *so = NULL;
	char *dout = NULL;
	*ret_ok = false;
	if (!run_pair(&dst, dst_argv, &src, src_argv, &so, &dout))
		return NULL;
	*ret_ok = exited_ok(&dst) && exited_ok(&src);
	TK_CHECK(strstr(dout, "the guest's hold released at 0x404") &&
			 !strstr(dout, "hold: not released"),
		 "held window (%s): the guest held its lower half back until the first background "
		 "placement there, which the destination held open", label);
	return dout;
}

/* The guest's report of a tag-check fault in the held half (0x40400000..0x40480000). */
static bool held_half_fault(const char *dout)
{
	const char *f = strstr(dout, "tag-check at 0x404");
	return f && f[18] >= '0' && f[18] <= '7';
}

/* The destination paused its vCPU for at least one background batch placed by copy. */
static bool paused_batches(const char *dout)
{
	const char *l = strstr(dout, "vmm: postcopy: the vCPU paused for ");
	unsigned long n = 0;
	return l && sscanf(l, "vmm: postcopy: the vCPU paused for %lu", &n) == 1 && n > 0;
}

/* A run that must pass: no tag-check fault, 3 more passes numbered on. */
static bool held_passed(bool ok, const char *dout)
{
	return ok && !strstr(dout, "tag-check") && strstr(dout, "continuing from the source's pass");
}

static void postcopy_held_windows(const char *VMM, const char *guest, bool mte_guest)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	if (!mte_guest) {
		tk_info("skipped: the held background window needs the MTE test guest");
		return;
	}
	const bool move = kernel_has_move();
	bool ok;
	/* the VMM as it is: move where the kernel has it, else copy with the vCPU paused */
	g_autofree char *d1 = postcopy_held_window(VMM, guest, "4721", NULL, NULL, "default", &ok);
	if (d1 && move)
		TK_CHECK(held_passed(ok, d1) && strstr(d1, "vmm: postcopy placement: move (") &&
				 strstr(d1, "the guest read the go while the placement is open"),
			 "held window, UFFDIO_MOVE: the guest's first access to the held half, while "
			 "the placement was held open, found its tags (moved in with the page), 3 "
			 "more passes");
	else if (d1)
		TK_CHECK(held_passed(ok, d1) && strstr(d1, "vmm: postcopy placement: copy (") &&
				 paused_batches(d1) && strstr(d1, " 0 background pages placed ") &&
				 strstr(d1, "the vCPU is held (pause hook)"),
			 "held window, copy placement with the vCPU paused around background "
			 "batches: no tag-check fault, no page exposed, 3 more passes");
	/* 6.8+: the copy path too, through a userfaultfd without UFFD_FEATURE_MOVE */
	const char *force = move ? "--test-force-copy" : NULL;
	if (move) {
		g_autofree char *d2 = postcopy_held_window(VMM, guest, "4722", force, NULL,
							   "forced-copy", &ok);
		if (d2)
			TK_CHECK(held_passed(ok, d2) && strstr(d2, "vmm: postcopy placement: copy (") &&
					 paused_batches(d2) && strstr(d2, "the vCPU is held (pause hook)"),
				 "held window, copy forced on a kernel with UFFDIO_MOVE, the vCPU "
				 "paused around background batches: no tag-check fault, 3 more passes");
	}
	/* The mutation: copy without the pause. The window is real: the guest meets it. (The
	 * destination's postcopy placement line comes only with its end; a guest that failed
	 * still lets every page arrive, so it is printed.) */
	g_autofree char *d3 = postcopy_held_window(VMM, guest, "4723", "--test-no-pause", force,
						   "no-pause", &ok);
	if (d3)
		TK_CHECK(!ok && strstr(d3, "vmm: postcopy placement: copy (") && held_half_fault(d3) &&
				 strstr(d3, "the guest read the go while the placement is open"),
			 "held window, copy placement WITHOUT the pause (--test-no-pause): the "
			 "guest's first access to the held half is a tag-check fault (the page present "
			 "before its tags while the vCPU runs)");
#else
	(void)VMM;
	(void)guest;
	(void)mte_guest;
	tk_info("skipped: the held background window needs the test hooks");
#endif
}

/*
 * The destination dies as the device state arrives, after the source switched to postcopy:
 * the source must say "postcopy paused", keep the guest paused (the destination might run it)
 * and exit 1, never resume it.
 */
static void postcopy_destination_dies(const char *VMM, const char *guest)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	proc dst = { .name = "destination-pc-dies" }, src = { .name = "source-pc-paused" };
	const char *dst_argv[] = { VMM, "incoming", "--listen", "127.0.0.1:4719",
				   "--test-die-at-state", NULL };
	const char *src_argv[] = { VMM, "run", "--guest", guest, "--migrate-to", "127.0.0.1:4719",
				   "--migrate-after", "1", "--postcopy-after", "0", NULL };
	g_autofree char *so = NULL, *dout = NULL;
	if (!run_pair(&dst, dst_argv, &src, src_argv, &so, &dout))
		return;
	TK_CHECK(WIFEXITED(src.status) && WEXITSTATUS(src.status) == 1 &&
			 strstr(so, "switched to postcopy") && strstr(so, "postcopy paused") &&
			 !strstr(so, "resuming the guest") && !strstr(so, "after the failed migration"),
		 "a destination lost after the switch to postcopy: the source says postcopy "
		 "paused, keeps the guest paused (never resumed), exit status 1");
#else
	(void)VMM;
	(void)guest;
	tk_info("skipped: a destination lost in postcopy needs the test hooks");
#endif
}

/*
 * A source whose migration failed before the destination had the guest: exit status 3, the
 * reason on stderr, "resuming the guest" if the switchover had paused it (else "keeps running"),
 * then 3 more passes numbered on from its own (tagmig-vmm checks the numbers).
 */
static bool failed_on_source(const proc *p, const char *out, bool paused)
{
	return WIFEXITED(p->status) && WEXITSTATUS(p->status) == 3 &&
	       strstr(out, "tagmig-vmm: migration failed: ") &&
	       strstr(out, paused ? "resuming the guest on the source after pass"
				  : "the guest keeps running on the source after pass") &&
	       strstr(out, "after the failed migration the guest passed passes");
}

/*
 * The destination is killed (SIGKILL from here) after the source's first precopy round, while
 * the guest runs: the source must say why, keep its guest running and see it pass on. Precopy
 * must still be on when the kill lands: the pages are rate-limited (512 KiB/s: round 2's few
 * hundred dirty pages take over a second), so round 2 is under way, not over. Without the limit
 * round 2 took 30 ms and every later round, with nothing dirty in its microseconds, completes
 * at once without the network: precopy could reach its 30 rounds and the switchover before
 * the kill landed, and the failure came in the switchover instead.
 */
static void destination_killed_in_precopy(const char *VMM, const char *guest)
{
	proc dst = { .name = "destination-killed" }, src = { .name = "source-keeps-running" };
	const char *dst_argv[] = { VMM, "incoming", "--listen", "127.0.0.1:4715", NULL };
	const char *src_argv[] = { VMM, "run", "--guest", guest, "--migrate-to", "127.0.0.1:4715",
				   "--migrate-after", "1", "--max-downtime", "1", "--max-rounds",
				   "30", "--passes", "3", "--max-bandwidth", "512", NULL };
	if (!start_pair(&dst, dst_argv, &src, src_argv))
		return;
	gint64 deadline = g_get_monotonic_time() + TIMEOUT_S * G_TIME_SPAN_SECOND;
	bool round1 = false;
	while (!round1 && g_get_monotonic_time() < deadline && waitpid(src.pid, NULL, WNOHANG) == 0) {
		g_autofree char *text = NULL;
		round1 = g_file_get_contents(src.log, &text, NULL, NULL) &&
			 strstr(text, "vmm: round 1:");
		if (!round1)
			g_usleep(20000);
	}
	kill(dst.pid, SIGKILL);
	proc *ps[] = { &src, &dst };
	wait_all(ps, 2, TIMEOUT_S);
	g_autofree char *so = show(&src), *dout = show(&dst);
	TK_CHECK(round1 && !strstr(so, "vmm: switchover after") &&
			 strstr(so, "migration failed: precopy round ") &&
			 failed_on_source(&src, so, false) && !strstr(dout, "resuming the guest"),
		 "a destination killed after precopy round 1: the source names the round that "
		 "failed, its guest runs on and passes 3 more passes, exit status 3");
}

/*
 * The destination dies (SIGKILL, hidden --test-die-at-state) as the device state arrives: the
 * source has paused its guest by then and sent the final round. tm_sender_finish() fails; the
 * source must say why, resume the guest from its pause, and see it pass on. Needs the test hooks
 * (-Dtest_hooks=true: the suite's cross build has them).
 */
static void destination_dies(const char *VMM, const char *guest)
{
#if defined(TAGMIG_TEST_HOOKS) && TAGMIG_TEST_HOOKS
	proc dst = { .name = "destination-dies" }, src = { .name = "source-resumes" };
	const char *dst_argv[] = { VMM, "incoming", "--listen", "127.0.0.1:4714",
				   "--test-die-at-state", NULL };
	const char *src_argv[] = { VMM, "run", "--guest", guest, "--migrate-to", "127.0.0.1:4714",
				   "--migrate-after", "1", "--max-downtime", "1", "--max-rounds",
				   "2", "--passes", "3", NULL };
	g_autofree char *so = NULL, *dout = NULL;
	if (!run_pair(&dst, dst_argv, &src, src_argv, &so, &dout))
		return;
	TK_CHECK(WIFSIGNALED(dst.status) && WTERMSIG(dst.status) == SIGKILL &&
			 strstr(dout, "killed as the device state arrives") &&
			 !strstr(dout, "resuming the guest"),
		 "a destination killed as the device state arrives never resumes the guest");
	TK_CHECK(!strstr(so, "vmm: switchover after") && failed_on_source(&src, so, true),
		 "the source reports the failed switchover, resumes its paused guest, which passes 3 "
		 "more passes numbered on from its own, and exits 3");
#else
	(void)VMM;
	(void)guest;
	tk_info("skipped: a destination lost mid-switchover needs the test hooks "
		"(meson -Dtest_hooks=true; the suite's cross build has them)");
#endif
}

/* Throwaway CA, server (127.0.0.1) and client credentials in /tmp/tls, as `tagmig demo --tls`. */
static char *make_creds(void)
{
	const char *dir = "/tmp/tls";
	g_autoptr(tls_cred) ca = NULL, server = NULL, client = NULL;
	g_autoptr(GError) err = NULL;
	g_mkdir_with_parents(dir, 0700);
	if (tls_cred_new("tagmig-vmm test CA", NULL, NULL, NULL, -1, 1, &ca, &err) < 0 ||
	    tls_cred_new("localhost", ca, "serverAuth", "DNS:localhost,IP:127.0.0.1", -1, 1, &server,
			 &err) < 0 ||
	    tls_cred_new("tagmig-vmm test source", ca, "clientAuth", NULL, -1, 1, &client, &err) < 0 ||
	    tls_cred_write(ca, dir, "ca", &err) < 0 || tls_cred_write(server, dir, "server", &err) < 0 ||
	    tls_cred_write(client, dir, "client", &err) < 0) {
		tk_fail("TLS credentials in %s: %s", dir, err->message);
		return NULL;
	}
	return g_strdup(dir);
}

/*
 * A hostile source (the engine's fake peer, as in test-kvm-migrate) aimed at a waiting
 * destination VMM: it announces the VMM's own layout (64 MiB at 0x40000000), is accepted, then
 * sends a DATA packet for page 16384, one past the end of guest RAM. Returns whether the
 * acknowledgement came.
 */
static bool hostile_source(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 60 }; /* never wait longer for the destination's answer */
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		tk_info("hostile source: connect: %s", g_strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	tm_wire_block wb;
	memset(&wb, 0, sizeof(wb));
	g_strlcpy(wb.name, "mach-virt.ram", sizeof(wb.name));
	wb.length = 64ull << 20;
	wb.guest_base = 0x40000000;
	wb.page_size = 4096;
	tm_hello h = { .channel_id = 0, .channel_count = 1, .features = TM_FEATURE_TAGS_MTE4,
		       .packet_size = 512 * 1024, .chunk_size = 2 << 20, .block_count = 1,
		       .blocks = &wb };
	memset(h.session_id, 0x42, sizeof(h.session_id));
	size_t bl = tm_hello_body_len(&h);
	g_autofree uint8_t *hb = g_malloc(TM_FRAME_HDR_LEN + bl);
	tm_frame_encode(hb, TM_MSG_HELLO, (uint32_t)bl, 0);
	tm_hello_encode(&h, hb + TM_FRAME_HDR_LEN);
	(void)!write(fd, hb, TM_FRAME_HDR_LEN + bl);

	static uint8_t msg[TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN + TM_PAGE_ENTRY_LEN + 4096 + 1];
	memset(msg, 0xee, sizeof(msg));
	tm_frame_encode(msg, TM_MSG_DATA, sizeof(msg) - TM_FRAME_HDR_LEN, 1);
	uint8_t *d = msg + TM_FRAME_HDR_LEN;
	tm_put32(d, 0);        /* block */
	tm_put32(d + 4, 1);    /* page count */
	tm_put32(d + 8, 4096); /* data length */
	tm_put32(d + 12, 1);   /* tag length */
	tm_put32(d + 16, (uint32_t)(wb.length / 4096)); /* one past the last page */
	d[20] = TM_PAGE_NORMAL;
	d[21] = TM_TAGS_UNIFORM;
	tm_put16(d + 22, 0);
	msg[sizeof(msg) - 1] = 0x0f;
	uint8_t ack[TM_FRAME_HDR_LEN + 8];
	ssize_t n = recv(fd, ack, sizeof(ack), MSG_WAITALL); /* so that a started receiver gets it */
	(void)!write(fd, msg, sizeof(msg));
	char sink[256];
	while (recv(fd, sink, sizeof(sink), 0) > 0)
		; /* until the destination closes */
	close(fd);
	return n == (ssize_t)sizeof(ack) && ack[5] == TM_MSG_HELLO_ACK;
}

/*
 * The operator's command on this arm64 KVM host with MTE: `tagmig demo --kvm-guest` (the static
 * tagmig of the cross build, beside tagmig-vmm in /vmm, which it finds there) runs the same
 * migration and prints the guest's verdict.
 */
static void demo_kvm_guest(const char *guest)
{
	const char *tagmig = "/vmm/tagmig-static";
	if (access(tagmig, X_OK) != 0) {
		tk_fail("%s: %s (the harness copies the cross build's tools/tagmig-static)", tagmig,
			g_strerror(errno));
		return;
	}
	proc demo = { .name = "tagmig-demo" };
	const char *argv[] = { tagmig, "demo", "--kvm-guest", "--guest-image", guest, NULL };
	if (!spawn(&demo, argv))
		return;
	proc *ps[] = { &demo };
	wait_all(ps, 1, TIMEOUT_S);
	g_autofree char *out = show(&demo);
	TK_CHECK(exited_ok(&demo) && strstr(out, "migrates a running arm64 KVM guest with MTE") &&
			 strstr(out, "verdict: ok: the guest, migrated while running with its MTE "
				     "tags, kept passing"),
		 "tagmig demo --kvm-guest on this arm64 KVM host with MTE: the guest migrated, "
		 "verdict ok, exit 0");
}

/* TAGMIG_VMM_CASES (harness.sh passes it in): a comma-separated list of the cases to run
 * (1, 2, 2b, 2c, 2d, 2e, 3, 4, 5); unset: all. */
static bool want(const char *c)
{
	const char *list = g_getenv("TAGMIG_VMM_CASES");
	if (!list || !*list)
		return true;
	g_auto(GStrv) l = g_strsplit(list, ",", -1);
	return g_strv_contains((const gchar *const *)l, c);
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	const char *vmm_env = g_getenv("TAGMIG_VMM"), *guest_env = g_getenv("TAGMIG_VMM_GUEST");
	const char *VMM = vmm_env ? vmm_env : "/vmm/tagmig-vmm";
	const char *guest = guest_env ? guest_env : "/vmm/guest.bin";
	const bool mte_guest = access(guest, R_OK) == 0;
	if (!mte_guest) {
		guest = "/tmp/small-guest.bin";
		g_autoptr(GError) err = NULL;
		if (!g_file_set_contents(guest, (const char *)tg_start, tg_end - tg_start, &err)) {
			tk_fail("writing %s: %s", guest, err->message);
			return tk_finish();
		}
		tk_info("guest: this file's small guest (data checks; tags by --tag-pattern)");
	} else {
		tk_info("guest: the MTE test guest %s (data and tag checks)", guest);
	}
	if (access("/dev/kvm", R_OK | W_OK) != 0) {
		tk_fail("/dev/kvm: %s (the machine boots with virtualization=on)", g_strerror(errno));
		return tk_finish();
	}

	if (g_getenv("TAGMIG_VMM_CASES"))
		tk_info("cases: %s (TAGMIG_VMM_CASES)", g_getenv("TAGMIG_VMM_CASES"));

	/* 1. standalone */
	proc alone = { .name = "run" };
	const char *run_argv[] = { VMM, "run", "--guest", guest, "--passes", "2", NULL };
	if (want("1") && spawn(&alone, run_argv)) {
		proc *ps[] = { &alone };
		wait_all(ps, 1, TIMEOUT_S);
		g_autofree char *out = show(&alone);
		TK_CHECK(exited_ok(&alone) && strstr(out, "the guest reported 2 passes ok"),
			 "tagmig-vmm run: the guest ran 2 passes with MTE enabled");
	}

	/* 2. live migration, precopy, while the guest runs; then again over TLS */
	g_autofree char *creds = want("2") || want("2b") ? make_creds() : NULL;
	if (want("2")) {
		migration(VMM, guest, "4710", NULL);
		if (creds)
			migration(VMM, guest, "4712", creds);
	}

	/* 2b. postcopy: after 1 precopy round, at once (with the placement widened so that a wake
	 *     before the tags is seen), over TLS; then a destination lost after the switch */
	if (want("2b")) {
		postcopy_migration(VMM, guest, "4716", 1, NULL, 0, 0);
		postcopy_migration(VMM, guest, "4717", 0, NULL, 20, 256);
		if (creds)
			postcopy_migration(VMM, guest, "4718", 1, creds, 0, 0);
		postcopy_destination_dies(VMM, guest);
	}
	/* 2c. the background window, widened where placement can be atomic */
	if (want("2c"))
		postcopy_background_window(VMM, guest);
	/* 2d. the same through the operator's command */
	if (want("2d"))
		demo_kvm_guest(guest);
	/* 2e. the background window met for certain: a guest that holds half its window back */
	if (want("2e"))
		postcopy_held_windows(VMM, guest, mte_guest);

	/* 3. a destination without tags refuses, and never resumes the guest */
	proc bad_dst = { .name = "destination-no-tags" }, bad_src = { .name = "source-2" };
	const char *bad_dst_argv[] = { VMM, "incoming", "--listen", "127.0.0.1:4711",
				       "--test-no-tags", NULL };
	const char *bad_src_argv[] = { VMM, "run", "--guest", guest, "--migrate-to",
				       "127.0.0.1:4711", "--migrate-after", "0", NULL };
	if (want("3") && spawn(&bad_dst, bad_dst_argv)) {
		g_usleep(500000);
		if (spawn(&bad_src, bad_src_argv)) {
			proc *ps[] = { &bad_src, &bad_dst };
			wait_all(ps, 2, TIMEOUT_S);
			g_autofree char *so = show(&bad_src), *dout = show(&bad_dst);
			TK_CHECK(!exited_ok(&bad_src) && !exited_ok(&bad_dst) &&
					 !strstr(dout, "resuming the guest"),
				 "a destination without a tag store: the migration is refused, the "
				 "guest not resumed");
			TK_CHECK(failed_on_source(&bad_src, so, false),
				 "... and the source says why, its guest runs on and passes 3 more "
				 "passes, exit status 3");
		} else {
			kill(bad_dst.pid, SIGKILL);
		}
	}
	/* 4. a hostile source at a waiting destination: refused, the guest never resumed */
	proc hdst = { .name = "destination-hostile" };
	const char *hdst_argv[] = { VMM, "incoming", "--listen", "127.0.0.1:4713", NULL };
	if (want("4") && spawn(&hdst, hdst_argv)) {
		g_usleep(500000);
		bool acked = hostile_source(4713);
		proc *ps[] = { &hdst };
		wait_all(ps, 1, 60); /* it refuses at once; a receiver still waiting is a failure */
		g_autofree char *dout = show(&hdst);
		TK_CHECK(acked && !exited_ok(&hdst) && strstr(dout, "16384") &&
				 strstr(dout, "out of range") && !strstr(dout, "resuming the guest"),
			 "a hostile source aiming a page past guest RAM: accepted, then refused "
			 "naming the page, the guest not resumed");
	}
	/* 5. a destination lost mid-precopy, then one lost mid-switchover: the source's guest runs
	 *    on, resumed in the second case */
	if (want("5")) {
		destination_killed_in_precopy(VMM, guest);
		destination_dies(VMM, guest);
	}
	return tk_finish();
}
