/* SPDX-License-Identifier: MIT */
/*
 * Fuzzes the receiver's device-state path (RAM_END, STATE headers, names, the order of chunks
 * across channels) on a stream of frames: fuzz_state_stream() in state-stream.h. Run twice:
 * without expected names and with state_names.
 */
#include <glib.h>

#include "state-stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int k = 0; k < 2; k++) {
		g_autoptr(GError) error = NULL;
		uint32_t sections;
		bool ended;
		int r = fuzz_state_stream(data, size, k ? fuzz_state_names : NULL, &sections, &ended,
					  &error);
		g_assert_true(r == 0 || error != NULL);
		g_assert_true(r != 0 || error == NULL);
	}
	return 0;
}
