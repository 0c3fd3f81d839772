/* SPDX-License-Identifier: MIT */
/*
 * PID 1 of the kernel-TLS test machine's initramfs (tests/vm/ktls/harness.sh), linked statically for
 * the host. The kernel command line ends in "-- PROGRAM ARGS..." (the kernel hands everything
 * after "--" to init) and carries the test's environment as NAME=value words before it.
 *
 * As PID 1 it mounts proc, sysfs, devtmpfs and a tmpfs on /tmp (unless the program lives there),
 * brings up the loopback interface (the tests talk TCP over 127.0.0.1), loads the modules listed
 * in /ktls/preload (tls) with finit_module, reports the kernel's TCP upper-layer protocols as "# ulp: ...", runs PROGRAM in
 * a child process and powers the machine off. Its own lines and the program's output go to the
 * second serial port (ttyS1), so kernel messages on the console (ttyS0) never cut a TAP line.
 * Lines for the harness: "KTLS-INIT: FAIL <reason>" (the run must fail), "KTLS-RESULT: exit=N"
 * or "KTLS-RESULT: signal=N"; lines starting with '#' are TAP comments.
 *
 * Started as /sbin/modprobe (the kernel's request_module(), e.g. for "crypto-gcm" when a socket
 * gets its first AES-GCM key) it loads the module named or aliased, with its dependencies, from
 * the index in /ktls/modules.ktls and logs what it did to /tmp/ktls-modprobe.log, which PID 1
 * prints as comments. The index has lines "mod NAME FILE [DEPENDENCY...]" and
 * "alias PATTERN NAME" (fnmatch patterns, from the modules' .modinfo; Debian's packages ship no
 * modules.dep or modules.alias, depmod makes them at install time).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "../lib/vm-init.h"

#define INDEX "/ktls/modules.ktls"
#define MODPROBE_LOG "/tmp/ktls-modprobe.log"
#define MAX_MODS 2048
#define MAX_DEPS 16

typedef struct mod {
	char *name, *file;
	char *deps[MAX_DEPS];
	int ndeps;
} mod;

typedef struct alias {
	char *pattern, *name;
} alias;

static mod mods[MAX_MODS];
static alias aliases[4 * MAX_MODS];
static int nmods, naliases;
static FILE *report; /* where load_module() reports: the TAP stream, or the modprobe log */

static void say(const char *fmt, ...)
{
	va_list ap;

	if (!report)
		return;
	va_start(ap, fmt);
	vfprintf(report, fmt, ap);
	va_end(ap);
	fflush(report);
}

/* Module names treat '-' and '_' alike (kmod does the same). */
static void normalize(char *s)
{
	for (; *s; s++)
		if (*s == '-')
			*s = '_';
}

static void read_index(void)
{
	FILE *f = fopen(INDEX, "re");
	char line[4096];

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *kind = strtok_r(line, " \n", &save);
		if (!kind)
			continue;
		if (strcmp(kind, "mod") == 0 && nmods < MAX_MODS) {
			mod *m = &mods[nmods];
			char *name = strtok_r(NULL, " \n", &save), *file = strtok_r(NULL, " \n", &save);
			if (!name || !file)
				continue;
			m->name = strdup(name);
			m->file = strdup(file);
			normalize(m->name);
			for (char *d; m->ndeps < MAX_DEPS && (d = strtok_r(NULL, " \n", &save));) {
				m->deps[m->ndeps] = strdup(d);
				normalize(m->deps[m->ndeps++]);
			}
			nmods++;
		} else if (strcmp(kind, "alias") == 0 && naliases < (int)(sizeof(aliases) /
									     sizeof(aliases[0]))) {
			char *pat = strtok_r(NULL, " \n", &save), *name = strtok_r(NULL, " \n", &save);
			if (!pat || !name)
				continue;
			aliases[naliases].pattern = strdup(pat);
			aliases[naliases].name = strdup(name);
			normalize(aliases[naliases++].name);
		}
	}
	fclose(f);
}

static mod *find_mod(const char *name)
{
	char n[256];

	snprintf(n, sizeof(n), "%s", name);
	normalize(n);
	for (int i = 0; i < nmods; i++)
		if (strcmp(mods[i].name, n) == 0)
			return &mods[i];
	return NULL;
}

/* Loads a module after its dependencies: 0, or -errno (EEXIST, already loaded, counts as 0). */
static int load_module(mod *m, int depth)
{
	if (depth > 8) {
		say("KTLS-INIT: FAIL module %s: dependency chain too deep\n", m->name);
		return -ELOOP;
	}
	for (int i = 0; i < m->ndeps; i++) {
		mod *d = find_mod(m->deps[i]);
		if (!d) {
			say("KTLS-INIT: FAIL module %s needs %s, which is not in the initramfs\n",
			    m->name, m->deps[i]);
			return -ENOENT;
		}
		int r = load_module(d, depth + 1);
		if (r < 0)
			return r;
	}
	int fd = open(m->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		say("KTLS-INIT: FAIL module %s: %s: %s\n", m->name, m->file, strerror(e));
		return -e;
	}
	int r = (int)syscall(SYS_finit_module, fd, "", 0);
	int e = errno;
	close(fd);
	if (r < 0 && e != EEXIST) {
		say("KTLS-INIT: FAIL module %s: finit_module: %s\n", m->name, strerror(e));
		return -e;
	}
	return 0;
}

/* The kernel's request_module(): modprobe -q -- NAME. Never PID 1. */
static int modprobe_main(int argc, char **argv)
{
	int status = 0;

	report = fopen(MODPROBE_LOG, "ae");
	read_index();
	for (int i = 1; i < argc; i++) {
		const char *want = argv[i];
		if (want[0] == '-')
			continue;
		mod *m = find_mod(want);
		for (int a = 0; !m && a < naliases; a++)
			if (fnmatch(aliases[a].pattern, want, 0) == 0)
				m = find_mod(aliases[a].name);
		if (!m) {
			say("MISS %s\n", want);
			status = 1;
			continue;
		}
		if (load_module(m, 0) < 0)
			status = 1;
		else
			say("# modprobe %s: loaded %s\n", want, m->name);
	}
	return status;
}

static bool dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	bool empty = true;

	while (d && (e = readdir(d)))
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			empty = false;
	if (d)
		closedir(d);
	return empty;
}

static void loopback_up(void)
{
	const char *step;
	int r = vm_loopback_up(&step);

	if (r < 0)
		say("KTLS-INIT: FAIL loopback: %s: %s\n", step, strerror(-r));
}

/* Output to the second serial port, raw (no \r added, nothing echoed); the console if absent. */
static void output_to_ttyS1(void)
{
	int fd = open("/dev/ttyS1", O_RDWR | O_NOCTTY | O_CLOEXEC);
	struct termios t;

	if (fd < 0) {
		fprintf(stderr, "KTLS-INIT: no /dev/ttyS1 (%s): output on the console\n",
			strerror(errno));
		return;
	}
	if (tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(fd, TCSANOW, &t);
	}
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
}

static void load_preload(void)
{
	FILE *f = fopen("/ktls/preload", "re");
	char name[256];

	if (!f)
		return;
	while (fscanf(f, "%255s", name) == 1) {
		mod *m = find_mod(name);
		if (!m)
			say("KTLS-INIT: FAIL module %s is not in the initramfs\n", name);
		else if (load_module(m, 0) == 0)
			say("# module %s: loaded (%s)\n", m->name, m->file);
	}
	fclose(f);
}

static char *read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);

	if (fd >= 0)
		close(fd);
	if (n < 0)
		return NULL;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	return buf;
}

/* Kernel TLS must be a registered upper-layer protocol once the tls module is in. */
static void report_ulp(void)
{
	char buf[512];
	bool want_tls = find_mod("tls") != NULL;

	if (!read_small("/proc/sys/net/ipv4/tcp_available_ulp", buf, sizeof(buf))) {
		say("KTLS-INIT: FAIL cannot read tcp_available_ulp: %s\n", strerror(errno));
		return;
	}
	say("# ulp: %s\n", buf);
	bool have_tls = false;
	for (char *save = NULL, *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save))
		have_tls |= strcmp(w, "tls") == 0;
	if (want_tls && !have_tls)
		say("KTLS-INIT: FAIL the kernel lists no tls upper-layer protocol after loading tls\n");
}

/*
 * What the kernel asked modprobe for. Misses are normal (the kernel tries "crypto-gcm(aes)" before
 * the template "crypto-gcm", and asks for what is built in), so they go on one line.
 */
static void print_modprobe_log(void)
{
	FILE *f = fopen(MODPROBE_LOG, "re");
	char line[512], misses[2048] = "";

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "MISS ", 5) != 0) {
			say("%s", line);
			continue;
		}
		line[strcspn(line, "\n")] = 0;
		size_t used = strlen(misses);
		snprintf(misses + used, sizeof(misses) - used, " %s", line + 5);
	}
	fclose(f);
	if (misses[0])
		say("# modprobe: no module (built in, or not needed) for%s\n", misses);
}

/*
 * A kernel warning or oops during the run fails it even if the program passed. Under "quiet"
 * they do not reach the console, so the taint flags tell, and the kernel log's warnings and
 * worse (priority <= 4) are printed as comments.
 */
static void check_kernel_health(void)
{
	char buf[64];
	unsigned long taint = read_small("/proc/sys/kernel/tainted", buf, sizeof(buf)) ?
				      strtoul(buf, NULL, 10) : 0;
	const unsigned long bad = 1ul << 4 /* M: machine check */ | 1ul << 5 /* B: bad page */ |
				  1ul << 7 /* D: oops */ | 1ul << 9 /* W: warning */ |
				  1ul << 14 /* L: soft lockup */;

	say("# kernel taint flags: %lu\n", taint);
	if (!(taint & bad))
		return;
	say("KTLS-INIT: FAIL the kernel reported a problem (tainted %lu); its warnings follow\n",
	    taint);
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	char rec[2048];
	ssize_t n;
	int shown = 0;
	while (fd >= 0 && shown < 60 && ((n = read(fd, rec, sizeof(rec) - 1)) > 0 || errno == EPIPE)) {
		if (n <= 0)
			continue; /* EPIPE: overwritten records, go on */
		rec[n] = 0;
		int prio = atoi(rec) & 7;
		char *msg = strchr(rec, ';');
		if (prio <= 4 && msg) {
			msg[strcspn(msg, "\n")] = 0;
			say("# kernel: %s\n", msg + 1);
			shown++;
		}
	}
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	const char *base = strrchr(argv[0], '/');

	if (strcmp(base ? base + 1 : argv[0], "modprobe") == 0 || getpid() != 1)
		return modprobe_main(argc, argv);

	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	/* The initramfs is writable itself; a tmpfs must not hide a build directory under /tmp */
	if (dir_is_empty("/tmp"))
		mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777");
	chmod("/tmp", 01777);
	output_to_ttyS1();
	setvbuf(stdout, NULL, _IONBF, 0);
	report = stdout;

	struct utsname u;
	if (uname(&u) == 0)
		say("# kernel: Linux %s %s\n", u.release, u.version);
	loopback_up();
	read_index();
	load_preload();
	report_ulp();

	setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
	if (!getenv("TMPDIR"))
		setenv("TMPDIR", "/tmp", 1);

	int first = 1;
	if (first < argc && strcmp(argv[first], "--") == 0)
		first++;
	if (first >= argc) {
		say("KTLS-INIT: FAIL no program on the kernel command line (after \"--\")\n");
	} else {
		pid_t pid = fork();
		if (pid == 0) {
			setsid();
			if (chdir("/tmp") < 0)
				_exit(126);
			execv(argv[first], argv + first);
			fprintf(stderr, "KTLS-INIT: FAIL exec %s: %s\n", argv[first], strerror(errno));
			_exit(127);
		}
		int st = 0;
		pid_t got;
		/* PID 1 also reaps orphans of the program; wait for the program itself */
		while (pid > 0 && (got = wait(&st)) != pid)
			if (got < 0 && errno != EINTR) {
				st = 127 << 8;
				break;
			}
		if (pid < 0)
			say("KTLS-INIT: FAIL fork: %s\n", strerror(errno));
		else if (WIFEXITED(st))
			say("KTLS-RESULT: exit=%d\n", WEXITSTATUS(st));
		else
			say("KTLS-RESULT: signal=%d\n", WTERMSIG(st));
	}
	print_modprobe_log();
	check_kernel_health();
	say("KTLS-DONE\n");
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}
