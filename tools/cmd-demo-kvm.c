/* SPDX-License-Identifier: MIT */
/*
 * tagmig demo --kvm-guest: a running arm64 KVM guest with MTE live-migrated to a second VM, tags
 * intact, by the reference VMM (vmm/, tagmig-vmm; docs/aarch64.md "The reference VMM"), which
 * this command runs as two processes over 127.0.0.1, printing their lines and the verdict. The
 * verdict is the guest's own: it checks its data and tags with MTE tag checking on, and must go
 * on passing on the destination, its pass counter continuing from the source's.
 *
 * Where that cannot run (not arm64, no usable /dev/kvm, KVM without MTE, no tagmig-vmm) it says
 * why and what to run instead: the aarch64 suite's vmm-migrate, the same migration in an emulated
 * arm64 machine with KVM and MTE, or demo --live, a running synthetic guest here.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "cli.h"
#include "demo-kvm.h"

#ifndef KVM_CAP_ARM_MTE
#define KVM_CAP_ARM_MTE 205
#endif

#define PORT_LINE "vmm: waiting for the migration on 127.0.0.1:"

/* NULL if this host runs arm64 KVM guests with MTE, else why not. */
static char *kvm_mte_missing(void)
{
	struct utsname u;
	if (uname(&u) == 0 && strcmp(u.machine, "aarch64") != 0)
		return g_strdup_printf("this host is %s, not arm64", u.machine);
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return g_strdup_printf("/dev/kvm: %s", g_strerror(errno));
	int mte = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_ARM_MTE);
	close(fd);
	if (mte <= 0)
		return g_strdup("KVM on this host has no MTE (KVM_CAP_ARM_MTE: the CPU or the kernel "
				"lacks it)");
	return NULL;
}

void cli_demo_kvm_note(void)
{
	g_autofree char *why = kvm_mte_missing();
	if (why)
		fprintf(stderr, "tagmig demo: a synthetic guest with software tags; a running arm64 KVM "
			"guest with MTE needs arm64 KVM with MTE (%s): tagmig demo --kvm-guest says "
			"what to run instead\n", why);
	else
		fprintf(stderr, "tagmig demo: a synthetic guest with software tags; tagmig demo "
			"--kvm-guest migrates a running arm64 KVM guest with MTE on this host\n");
}

static int instead(const char *why)
{
	fprintf(stderr,
		"tagmig demo --kvm-guest: needs an arm64 host with KVM and MTE: %s.\n"
		"Run instead:\n"
		"  meson test -C BUILD vmm-migrate vmm-migrate-6.12\n"
		"      the same live migration of a running MTE guest, by the reference VMM, in an\n"
		"      emulated arm64 machine with KVM and MTE (QEMU, TCG; docs/aarch64.md); its log\n"
		"      shows the guest's verdict\n"
		"  tagmig demo --live\n"
		"      a running synthetic guest (software tags) migrated by precopy on this host\n",
		why);
	return CLI_EXIT_FAILED;
}

/* --vmm, else tagmig-vmm of the build tree this tagmig runs from (BUILD/tools/tagmig ->
 * BUILD/vmm/tagmig-vmm), else tagmig-vmm in PATH; NULL if none. */
static char *find_vmm(const char *opt)
{
	if (opt)
		return g_strdup(opt);
	g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
	if (self) {
		g_autofree char *dir = g_path_get_dirname(self);
		char *p = g_build_filename(dir, "..", "vmm", "tagmig-vmm", NULL);
		if (g_file_test(p, G_FILE_TEST_IS_EXECUTABLE))
			return p;
		g_free(p);
	}
	return g_find_program_in_path("tagmig-vmm");
}

typedef struct vmm_proc {
	const char *name;
	GPid pid;
	FILE *out; /* its stdout and stderr */
	int status;
} vmm_proc;

static bool start(vmm_proc *p, char **argv, GError **error)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0) {
		g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "pipe: %s",
			    g_strerror(errno));
		return false;
	}
	bool ok = g_spawn_async_with_fds(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
					 &p->pid, -1, fds[1], fds[1], error);
	close(fds[1]);
	if (!ok) {
		close(fds[0]);
		return false;
	}
	p->out = fdopen(fds[0], "r");
	if (!p->out) {
		g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "fdopen: %s",
			    g_strerror(errno));
		close(fds[0]);
		kill(p->pid, SIGTERM);
		return false;
	}
	return true;
}

/* Prints p's lines until one starts with stop (returned) or its output ends (NULL). */
static char *relay(vmm_proc *p, const char *stop)
{
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, p->out) >= 0) {
		printf("%s: %s", p->name, line);
		if (stop && g_str_has_prefix(line, stop))
			return line;
	}
	free(line);
	return NULL;
}

static void finish(vmm_proc *p)
{
	if (p->out)
		fclose(p->out);
	p->out = NULL;
	if (p->pid > 0 && waitpid(p->pid, &p->status, 0) < 0)
		p->status = -1;
	p->pid = 0;
}

static char *status_text(int status)
{
	if (WIFEXITED(status))
		return g_strdup_printf("exited with status %d", WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		return g_strdup_printf("was killed by signal %d", WTERMSIG(status));
	return g_strdup("did not end normally");
}

static bool exited_ok(const vmm_proc *p)
{
	return WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
}

int cli_demo_kvm(const char *vmm_opt, const char *image_opt, bool any_host, int postcopy_after)
{
	g_autofree char *why = any_host ? NULL : kvm_mte_missing();
	if (why)
		return instead(why);
	g_autofree char *vmm = find_vmm(vmm_opt);
	if (!vmm || !g_file_test(vmm, G_FILE_TEST_IS_EXECUTABLE))
		return instead("no tagmig-vmm (the reference VMM is built in an arm64 build tree, not "
			       "installed: pass --vmm BUILD/vmm/tagmig-vmm)");
	g_autofree char *vdir = g_path_get_dirname(vmm);
	g_autofree char *image = image_opt ? g_strdup(image_opt)
					   : g_build_filename(vdir, "guest", "guest.bin", NULL);
	if (access(image, R_OK) != 0)
		return cli_failf("demo --kvm-guest: the guest image %s: %s (pass --guest-image: "
				 "BUILD/vmm/guest/guest.bin)", image, g_strerror(errno));

	printf("tagmig demo --kvm-guest: %s migrates a running arm64 KVM guest with MTE (%s) to a "
	       "second VM over 127.0.0.1\n", vmm, image);
	g_autoptr(GError) err = NULL;
	vmm_proc dst = { .name = "destination" }, src = { .name = "source" };
	char *dst_argv[] = { vmm, "incoming", "--listen", "127.0.0.1:0", "--check-tag-pattern", NULL };
	if (!start(&dst, dst_argv, &err))
		return cli_failf("demo --kvm-guest: starting %s incoming: %s", vmm, err->message);
	g_autofree char *port_line = relay(&dst, PORT_LINE);
	if (!port_line) {
		finish(&dst);
		return cli_failf("demo --kvm-guest: tagmig-vmm incoming ended before it listened");
	}
	g_autofree char *to = g_strdup_printf("127.0.0.1:%u",
					      (unsigned)strtoul(port_line + strlen(PORT_LINE), NULL, 10));
	g_autofree char *after = g_strdup_printf("%d", postcopy_after);
	char *src_argv[] = { vmm, "run", "--guest", image, "--migrate-to", to, "--tag-pattern",
			     postcopy_after >= 0 ? "--postcopy-after" : NULL, after, NULL };
	if (!start(&src, src_argv, &err)) {
		kill(dst.pid, SIGTERM);
		finish(&dst);
		return cli_failf("demo --kvm-guest: starting %s run: %s", vmm, err->message);
	}
	g_free(relay(&src, NULL));
	finish(&src);
	if (!exited_ok(&src))
		kill(dst.pid, SIGTERM); /* it would wait for a source that is gone */
	g_free(relay(&dst, NULL));
	finish(&dst);
	if (exited_ok(&src) && exited_ok(&dst)) {
		printf("verdict: ok: the guest, migrated while running with its MTE tags, kept passing "
		       "its own data and tag checks on the destination, its passes numbered on from "
		       "the source's\n");
		return CLI_EXIT_OK;
	}
	g_autofree char *ss = status_text(src.status), *ds = status_text(dst.status);
	printf("verdict: FAILED: the source %s, the destination %s (their lines above say why)\n",
	       ss, ds);
	return CLI_EXIT_FAILED;
}
