/* SPDX-License-Identifier: MIT */
/*
 * Error helpers shared by the library's modules (the domain itself is public: tagmig/error.h).
 */
#pragma once

#include <stdint.h>

#include <glib.h>

#include "tagmig/error.h"

/*
 * Sets *error (TM_ERROR, code: a positive errno) to "channel C, block 'B', offset 0xO: " and the
 * formatted text: the one place that names where in guest RAM a page failed. Returns -code.
 */
int tm_error_at(GError **error, int code, unsigned channel, const char *block, uint64_t offset,
		const char *fmt, ...) G_GNUC_PRINTF(6, 7);
