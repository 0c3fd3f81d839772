/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>

#include "export.h"

G_BEGIN_DECLS

/*
 * Errors. Every fallible function returns an int: >= 0 on success, a negative errno on failure.
 * Where a GError ** is taken, the same failure is described there in the domain TM_ERROR with the
 * positive errno as code, and a message naming the channel, RAM block and offset where they apply.
 * Errors caused by bad data from the peer are -EBADMSG (malformed), -EPROTO (out of sequence),
 * -ERANGE (outside guest RAM), -EMSGSIZE (a count over its maximum), -EPROTONOSUPPORT (version).
 */
#define TM_ERROR (tm_error_quark())
TM_EXPORT GQuark tm_error_quark(void);

G_END_DECLS
