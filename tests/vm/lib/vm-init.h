/* SPDX-License-Identifier: MIT */
/* Shared by the PID 1 programs of the VM suites (tests/vm/aarch64/init.c, tests/vm/ktls/init.c). */
#pragma once

#include <errno.h>
#include <net/if.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

/*
 * Brings the loopback interface up (the tests connect over 127.0.0.1). Returns 0, or -errno with
 * the step that failed in *ret_step.
 */
static inline int vm_loopback_up(const char **ret_step)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), r = 0;
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	*ret_step = "socket";
	if (s < 0 || (*ret_step = "SIOCGIFFLAGS lo", ioctl(s, SIOCGIFFLAGS, &ifr) < 0)) {
		r = -errno;
	} else {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		*ret_step = "SIOCSIFFLAGS lo up";
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			r = -errno;
	}
	if (s >= 0)
		close(s);
	return r;
}
