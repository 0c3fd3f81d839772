/* SPDX-License-Identifier: MIT */
/* RAM and tag files: sizing, creating and mapping them (map.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "map.h"

int cli_file_size(const char *path, uint64_t *ret, GError **error)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		int err = errno;
		if (err != ENOENT)
			g_set_error(error, TM_ERROR, err, "%s: %s", path, g_strerror(err));
		return -err;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		g_set_error(error, TM_ERROR, EINVAL, "%s: not a regular file", path);
		return -EINVAL;
	}
	*ret = (uint64_t)st.st_size;
	return 0;
}

int cli_file_create(const char *path, uint64_t size, GError **error)
{
	cli_autofd int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "cannot create %s: %s", path, g_strerror(err));
		return -err;
	}
	if (ftruncate(fd, (off_t)size) < 0) {
		int err = errno;
		unlink(path); /* ours: O_EXCL */
		g_set_error(error, TM_ERROR, err, "cannot size %s to %" PRIu64 " bytes: %s", path,
			    size, g_strerror(err));
		return -err;
	}
	return 0;
}

/*
 * Guest RAM must be aligned to its page size, up to 64 KiB; mmap() only promises the host's. So
 * reserve len + 2 MiB of address space, place the real mapping at the aligned address inside it
 * with MAP_FIXED, and give back the slack on both sides. 2 MiB, not 64 KiB: huge pages (THP, a
 * tmpfs mounted with huge=) are mapped whole only at 2 MiB-aligned addresses, and a VMM backs
 * guest RAM with them. Measured on this project's VMs: the first touch of each 4 KiB mapping
 * costs as much as the data transfer (bench/README.md).
 */
#define CLI_MAP_ALIGN (2u << 20)

static void *mmap_aligned(size_t len, int prot, int flags, int fd)
{
	size_t span = len + CLI_MAP_ALIGN;
	uint8_t *base = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			     -1, 0);

	if (base == MAP_FAILED)
		return MAP_FAILED;
	uint8_t *aligned = (uint8_t *)(((uintptr_t)base + CLI_MAP_ALIGN - 1) &
				       ~(uintptr_t)(CLI_MAP_ALIGN - 1));
	void *addr = mmap(aligned, len, prot, flags | MAP_FIXED, fd, 0);
	if (addr == MAP_FAILED) {
		int err = errno;
		munmap(base, span);
		errno = err;
		return MAP_FAILED;
	}
	if (aligned > base)
		munmap(base, (size_t)(aligned - base));
	size_t tail = (size_t)(base + span - (aligned + len));
	if (tail)
		munmap(aligned + len, tail);
	/* Huge pages where the memory allows them (anonymous THP in "madvise" mode); a hint. */
	madvise(addr, len, MADV_HUGEPAGE);
	return addr;
}

int cli_map_open(const char *path, bool writable, cli_map **ret, GError **error)
{
	cli_autofd int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "cannot open %s: %s", path, g_strerror(err));
		return -err;
	}
	if (!S_ISREG(st.st_mode)) {
		g_set_error(error, TM_ERROR, EINVAL, "%s: not a regular file", path);
		return -EINVAL;
	}
	g_autoptr(cli_map) map = g_new0(cli_map, 1);
	map->path = g_strdup(path);
	map->size = (uint64_t)st.st_size;
	map->writable = writable;
	if (map->size) {
		void *addr = mmap_aligned(map->size,
					  writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
					  fd);
		if (addr == MAP_FAILED) {
			int err = errno;
			g_set_error(error, TM_ERROR, err, "cannot map %s: %s", path, g_strerror(err));
			return -err;
		}
		map->addr = addr;
	}
	/* The mapping keeps the file; the fd closes here. */
	*ret = g_steal_pointer(&map);
	return 0;
}

int cli_map_anon(uint64_t size, bool populate, cli_map **ret, GError **error)
{
	void *addr = mmap_aligned(size, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | (populate ? 0 : MAP_NORESERVE), -1);

	/* Populated after MADV_HUGEPAGE (in mmap_aligned), so that it gets huge pages. */
	if (addr != MAP_FAILED && populate && madvise(addr, size, MADV_POPULATE_WRITE) < 0 &&
	    errno != EINVAL) {
		int err = errno;
		munmap(addr, size);
		errno = err;
		addr = MAP_FAILED;
	}
	if (addr == MAP_FAILED) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "cannot map %" PRIu64 " bytes of memory: %s", size,
			    g_strerror(err));
		return -err;
	}
	cli_map *map = g_new0(cli_map, 1);
	map->path = g_strdup("(anonymous)");
	map->addr = addr;
	map->size = size;
	map->writable = true;
	*ret = map;
	return 0;
}

int cli_map_sync(cli_map *map, GError **error)
{
	if (!map->addr || !map->writable)
		return 0;
	if (msync(map->addr, map->size, MS_SYNC) < 0) {
		int err = errno;
		g_set_error(error, TM_ERROR, err, "msync %s: %s", map->path, g_strerror(err));
		return -err;
	}
	return 0;
}

void cli_map_free(cli_map *map)
{
	if (!map)
		return;
	if (map->addr)
		munmap(map->addr, map->size);
	g_free(map->path);
	g_free(map);
}
