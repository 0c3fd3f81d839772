/* SPDX-License-Identifier: MIT */
/*
 * Runs a fuzz target over every file of a corpus directory (argv[1]) without libFuzzer, so the
 * seed corpora replay as ordinary tests (meson test --suite fuzz). Besides each whole file it
 * feeds the file's prefixes, which exercises every truncation point of the seeds. Inputs are
 * exact-size heap copies, so ASan sees any read past the end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fuzz.h"

static void run(const uint8_t *data, size_t size)
{
	g_autofree uint8_t *copy = g_memdup2(data, size);

	LLVMFuzzerTestOneInput(copy, size);
}

/* All prefixes of small files; of large ones (a 64 KiB page) the ends and a sample between. */
static bool want_prefix(size_t n, size_t size)
{
	return size <= 16384 || n < 4096 || size - n <= 256 || n % 1021 == 0;
}

/* g_ptr_array_sort() passes pointers to the elements. */
static gint compare_names(gconstpointer a, gconstpointer b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv)
{
	g_autoptr(GError) error = NULL;
	unsigned files = 0, inputs = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS-DIR\n", argv[0]);
		return 2;
	}
	g_autoptr(GDir) dir = g_dir_open(argv[1], 0, &error);
	if (!dir) {
		fprintf(stderr, "%s\n", error->message);
		return 1;
	}

	/* Sorted, so a failure reproduces in the same order. */
	g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
	const char *name;
	while ((name = g_dir_read_name(dir)))
		g_ptr_array_add(names, g_strdup(name));
	g_ptr_array_sort(names, compare_names);

	run(NULL, 0);
	inputs++;
	for (unsigned i = 0; i < names->len; i++) {
		g_autofree char *path = g_build_filename(argv[1], names->pdata[i], NULL);
		g_autofree char *contents = NULL;
		gsize size;

		if (!g_file_test(path, G_FILE_TEST_IS_REGULAR))
			continue;
		if (!g_file_get_contents(path, &contents, &size, &error)) {
			fprintf(stderr, "%s\n", error->message);
			return 1;
		}
		files++;
		run((const uint8_t *)contents, size);
		inputs++;
		for (size_t n = 0; n < size; n++) {
			if (want_prefix(n, size)) {
				run((const uint8_t *)contents, n);
				inputs++;
			}
		}
	}
	if (files == 0) {
		fprintf(stderr, "no corpus files in %s\n", argv[1]);
		return 1;
	}
	printf("replayed %u files (%u inputs with prefixes) from %s\n", files, inputs, argv[1]);
	return 0;
}
