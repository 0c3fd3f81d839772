/* SPDX-License-Identifier: MIT */
/* Builds without the kvm-mte backend: every entry point refuses with -EOPNOTSUPP and says why. */
#include <errno.h>
#include <string.h>

#include "tagmig/tagmig.h"

static void test_stub(void)
{
	g_autoptr(GError) err = NULL;
	const tm_tag_store_ops *ops = NULL;

	g_assert_cmpint(tm_tag_store_lookup("kvm-mte", &ops, &err), ==, -EOPNOTSUPP);
	g_assert_null(ops);
	g_assert_error(err, TM_ERROR, EOPNOTSUPP);
	g_assert_nonnull(strstr(err->message, "arm64"));
	g_clear_error(&err);

	uint8_t page[4096] = { 0 }, tags[256] = { 0 };
	g_assert_cmpint(tm_kvm_mte_place(NULL, -1, 0, 0, sizeof(page), page, tags, &err), ==,
			-EOPNOTSUPP);
	g_assert_error(err, TM_ERROR, EOPNOTSUPP);
	g_assert_nonnull(strstr(err->message, "KVM_ARM_MTE_COPY_TAGS"));
	g_clear_error(&err);

	uint8_t staging[4096];
	g_assert_cmpint(tm_kvm_mte_stage(staging, page, tags, sizeof(page), &err), ==, -EOPNOTSUPP);
	g_assert_error(err, TM_ERROR, EOPNOTSUPP);
	g_assert_nonnull(strstr(err->message, "arm64"));
	g_clear_error(&err);
	g_assert_cmpint(tm_kvm_mte_place_move(NULL, -1, 0, 0, sizeof(page), staging, &err), ==,
			-EOPNOTSUPP);
	g_assert_error(err, TM_ERROR, EOPNOTSUPP);
	g_assert_nonnull(strstr(err->message, "arm64"));
}

int main(int argc, char **argv)
{
	g_test_init(&argc, &argv, NULL);
	g_test_add_func("/kvm-mte/stub", test_stub);
	return g_test_run();
}
