/* SPDX-License-Identifier: MIT */
#include "tagmig/tagstore.h"

/* No tags: the migration is negotiated without TM_FEATURE_TAGS_MTE4 and never calls get/set. */
const tm_tag_store_ops tm_tag_store_none = {
	.name = "none",
	.has_tags = 0,
};
