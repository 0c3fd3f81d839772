/* SPDX-License-Identifier: MIT */
/*
 * PID 1 of the emulated arm64 machine's initramfs (tests/vm/aarch64/harness.sh). With rdinit= the
 * kernel mounts nothing, so this mounts proc, sysfs and devtmpfs (/dev/kvm lives there) and brings
 * up the loopback interface (the migration test talks TCP over 127.0.0.1). It then runs every
 * program in /tests in name order, each in a child process (PID 1 dying panics the kernel), prints
 * "RUNNER: <name> exit=<status>" for each and "RUNNER-DONE", and powers the machine off.
 */
#include <dirent.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../lib/vm-init.h"

static void loopback_up(void)
{
	const char *step;
	int r = vm_loopback_up(&step);

	if (r < 0)
		fprintf(stderr, "RUNNER: %s: %s\n", step, strerror(-r));
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mkdir("/tmp", 01777);
	mount("tmpfs", "/tmp", "tmpfs", 0, NULL);
	loopback_up();
	setenv("PATH", "/tests", 1);
	setenv("TAGMIG_IN_EMULATOR", "1", 1);

	struct dirent **ents = NULL;
	int n = scandir("/tests", &ents, NULL, alphasort), ran = 0;
	for (int i = 0; i < n; i++) {
		const char *name = ents[i]->d_name;
		if (name[0] == '.')
			continue;
		char path[512];
		snprintf(path, sizeof(path), "/tests/%s", name);
		printf("RUNNER: start %s\n", name);
		ran++;
		pid_t pid = fork();
		if (pid == 0) {
			execl(path, name, (char *)NULL);
			perror("RUNNER: exec");
			_exit(127);
		}
		int st = 0;
		if (pid < 0 || waitpid(pid, &st, 0) < 0)
			st = 127 << 8;
		if (WIFEXITED(st))
			printf("RUNNER: %s exit=%d\n", name, WEXITSTATUS(st));
		else
			printf("RUNNER: %s exit=%d (killed by signal %d)\n", name,
			       128 + WTERMSIG(st), WTERMSIG(st));
	}
	printf("RUNNER-DONE: %d programs\n", ran);
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}
