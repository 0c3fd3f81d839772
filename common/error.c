/* SPDX-License-Identifier: MIT */
#include "tagmig/error.h"

GQuark tm_error_quark(void)
{
	return g_quark_from_static_string("tagmig-error-quark");
}
