/* SPDX-License-Identifier: MIT */
#pragma once

#include "tagmig/tagstore.h"

struct tm_tag_store {
	const tm_tag_store_ops *ops;
	const tm_ram_layout *layout;
	/* backend private area of ops->priv_size bytes follows, 16-byte aligned */
	_Alignas(16) unsigned char priv[];
};
