/* SPDX-License-Identifier: MIT */
/*
 * Cuts during setup (docs/wire-format.md, "Setup") through resume-rig.h's proxy, shared by
 * test-resume-setup.c (the sessions' own connections), test-resume-setup-attach.c (the VMMs'
 * sockets) and test-resume-setup-ends.c (where a setup must end, and how).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "resume-rig.h"

/* The proxy's accept indexes with 3 channels: data 0, control, data 1, data 2, urgent. */
#define DATA0 0
#define CONTROL 1
#define DATA2 3
#define URGENT 4

typedef enum { BEFORE_HELLO, BEFORE_ACK, MID_TLS } cut_point;

/* Both sides completed, the copy is exact, the sender counted at least min reconnects. */
void setup_assert_done(run *t, uint64_t min);
/* Connect, every page, sync, finish; the receiver joined. The sender's result in t->r. */
void setup_migrate(run *t);
/* setup_migrate(), timed and logged; the rig's timeouts back to 20 s. Its seconds. */
double setup_migrate_timed(run *t);
/* Connection conn (accept index) is cut at point (both ways); postcopy: the sender offers it
 * (the receiver declines: its VMM did not ask), so the urgent connection is part of the setup.
 * The migration completes; the test skips where the point does not exist (plaintext/TLS). */
void setup_cut(int conn, cut_point point, bool postcopy);
/* A one-sided cut of conn at point (the receiver's side closed, the sender's kept open and
 * silent; freeze: both kept open and silent), the sender's timeout 2 s, the receiver's
 * recv_ms: the migration completes within 9 s. */
void setup_silent_cut(int conn, cut_point point, bool freeze, unsigned recv_ms);
