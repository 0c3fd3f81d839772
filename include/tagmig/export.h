/* SPDX-License-Identifier: MIT */
#pragma once

#if defined(TAGMIG_BUILDING) && defined(__GNUC__)
#define TM_EXPORT __attribute__((visibility("default")))
#else
#define TM_EXPORT
#endif
