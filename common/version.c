/* SPDX-License-Identifier: MIT */
/* The library's own version at run time (version.h). */
#include "version.h"

const char *tm_version(void)
{
	return TAGMIG_VERSION;
}
