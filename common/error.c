/* SPDX-License-Identifier: MIT */
#include <stdarg.h>

#include "common/error-internal.h"

GQuark tm_error_quark(void)
{
	return g_quark_from_static_string("tagmig-error-quark");
}

int tm_error_at(GError **error, int code, unsigned channel, const char *block, uint64_t offset,
		const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	g_autofree char *what = g_strdup_vprintf(fmt, ap);
	va_end(ap);
	g_set_error(error, TM_ERROR, code,
		    "channel %u, block '%s', offset 0x%" G_GINT64_MODIFIER "x: %s", channel, block,
		    offset, what);
	return -code;
}
