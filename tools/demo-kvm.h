/* SPDX-License-Identifier: MIT */
/*
 * `tagmig demo --kvm-guest`: a running arm64 KVM guest with MTE migrated by the reference VMM
 * (cmd-demo-kvm.c); elsewhere, why not and what to run instead. cmd-demo.c hands it over.
 */
#pragma once

#include <stdbool.h>

/* Runs it with tagmig-vmm at vmm (NULL: found) and the guest image (NULL: beside the VMM);
 * returns the tool's exit status (cli.h): 1 with the reason where the host cannot run it.
 * any_host (a test hook) skips the host check, to run a stand-in VMM anywhere. postcopy_after
 * >= 0: the source's --postcopy-after (-1: precopy). */
int cli_demo_kvm(const char *vmm, const char *image, bool any_host, int postcopy_after);

/* For the other demos' human output: one line on stderr, whether this host could run it. */
void cli_demo_kvm_note(void);
