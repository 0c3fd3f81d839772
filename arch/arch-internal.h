/* SPDX-License-Identifier: MIT */
/*
 * Architecture backends as the core sees them. arch/meson.build defines TAGMIG_HAVE_KVM_MTE=1
 * when it builds arch/aarch64/ (arm64 Linux with KVM_ARM_MTE_COPY_TAGS in the kernel headers).
 */
#pragma once

#include "tagmig/tagstore.h"

#if defined(TAGMIG_HAVE_KVM_MTE) && TAGMIG_HAVE_KVM_MTE
/* The "kvm-mte" tag store (arch/aarch64/kvm-mte.c); reached through tm_tag_store_lookup(). */
extern const tm_tag_store_ops tm_tag_store_kvm_mte;
#endif
