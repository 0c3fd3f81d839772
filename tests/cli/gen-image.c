/* SPDX-License-Identifier: MIT */
/*
 * Deterministic test inputs for the CLI integration tests.
 *
 *   tm-gen-image ram  BYTES SEED PATH    guest RAM image: random, zero and patterned regions
 *   tm-gen-image tags BYTES SEED PATH    tag file: bytes 0..15 in runs of random, uniform and zero
 *   tm-gen-image text BYTES SEED PATH    compressible RAM: lines of words and numbers, no zero
 *                                        page (lz4 makes about half of it, zstd less)
 *   tm-gen-image poke PATH OFFSET BYTE   overwrite one byte (BYTE decimal or 0x..)
 *
 * The same BYTES and SEED always give the same file. Exit 0, or 1 with a message.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int parse_u64(const char *s, uint64_t *ret)
{
	char *end = NULL;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

/*
 * RAM: 4 KiB regions; a run of 1..32 regions shares one mode so that 16K and 64K pages see zero
 * and random pages too: random (50%), zero (35%), a repeated 8-byte pattern (15%).
 */
static void gen_ram(uint8_t *buf, uint64_t len, uint64_t seed)
{
	uint64_t st = seed;
	uint64_t off = 0;

	while (off < len) {
		uint64_t r = splitmix64(&st);
		uint64_t run = (1 + r % 32) * 4096;
		unsigned mode = (unsigned)((r >> 8) % 100);
		uint64_t pattern = splitmix64(&st);

		if (run > len - off)
			run = len - off;
		for (uint64_t i = 0; i < run; i += 8) {
			uint64_t w = mode < 50 ? splitmix64(&st) : mode < 85 ? 0 : pattern;
			uint64_t n = run - i < 8 ? run - i : 8;
			memcpy(buf + off + i, &w, n);
		}
		off += run;
	}
}

/* Tags: runs of 64..8192 bytes: random nibbles (40%), one uniform non-zero nibble (30%), zero. */
static void gen_tags(uint8_t *buf, uint64_t len, uint64_t seed)
{
	uint64_t st = seed ^ 0x7a6a;
	uint64_t off = 0;

	while (off < len) {
		uint64_t r = splitmix64(&st);
		uint64_t run = 64ull << (r % 8);
		unsigned mode = (unsigned)((r >> 8) % 100);
		uint8_t uniform = (uint8_t)(1 + (r >> 16) % 15);

		if (run > len - off)
			run = len - off;
		for (uint64_t i = 0; i < run; i++) {
			if (mode < 40)
				buf[off + i] = (uint8_t)(splitmix64(&st) & 0x0f);
			else if (mode < 70)
				buf[off + i] = uniform;
			else
				buf[off + i] = 0;
		}
		off += run;
	}
}

/* Compressible like a guest's page cache of logs and text: words and decimal numbers. */
static void gen_text(uint8_t *buf, uint64_t len, uint64_t seed)
{
	static const char *const words[] = { "kernel", "page", "migrate", "tag", "granule", "qemu",
					     "virtio", "block", "alpha", "request", "memory",
					     "device", "state", "round", "the", "of" };
	uint64_t st = seed ^ 0x7e47;
	uint64_t off = 0;

	while (off < len) {
		uint64_t r = splitmix64(&st);
		char tmp[32];
		int n = (r & 7) == 0 ? snprintf(tmp, sizeof(tmp), "%u ", (unsigned)(r >> 40) % 100000)
				     : snprintf(tmp, sizeof(tmp), "%s%s", words[(r >> 8) % 16],
						(r >> 16) % 12 == 0 ? "\n" : " ");
		for (int i = 0; i < n && off < len; i++)
			buf[off++] = (uint8_t)tmp[i];
	}
}

static int write_file(const char *path, const uint8_t *buf, uint64_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f) != 0) {
		fprintf(stderr, "tm-gen-image: cannot write %s: %s\n", path, strerror(errno));
		return 1;
	}
	return 0;
}

static int poke(const char *path, uint64_t offset, uint64_t value)
{
	FILE *f = fopen(path, "r+b");
	uint8_t b = (uint8_t)value;

	if (!f || fseeko(f, (off_t)offset, SEEK_SET) != 0 || fwrite(&b, 1, 1, f) != 1 ||
	    fclose(f) != 0) {
		fprintf(stderr, "tm-gen-image: cannot poke %s: %s\n", path, strerror(errno));
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t a = 0, b = 0;

	if (argc == 5 && strcmp(argv[1], "poke") == 0) {
		if (parse_u64(argv[3], &a) < 0 || parse_u64(argv[4], &b) < 0 || b > 255)
			goto usage;
		return poke(argv[2], a, b);
	}
	if (argc != 5 || parse_u64(argv[2], &a) < 0 || parse_u64(argv[3], &b) < 0)
		goto usage;
	uint8_t *buf = calloc(1, a ? a : 1);
	if (!buf) {
		fprintf(stderr, "tm-gen-image: out of memory\n");
		return 1;
	}
	if (strcmp(argv[1], "ram") == 0)
		gen_ram(buf, a, b);
	else if (strcmp(argv[1], "tags") == 0)
		gen_tags(buf, a, b);
	else if (strcmp(argv[1], "text") == 0)
		gen_text(buf, a, b);
	else {
		free(buf);
		goto usage;
	}
	int rc = write_file(argv[4], buf, a);
	free(buf);
	return rc;
usage:
	fprintf(stderr, "usage: tm-gen-image ram|tags|text BYTES SEED PATH\n"
			"       tm-gen-image poke PATH OFFSET BYTE\n");
	return 1;
}
