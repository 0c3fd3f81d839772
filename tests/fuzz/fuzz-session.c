/* SPDX-License-Identifier: MIT */
/*
 * Drives a whole receiver through a session from one input (issue 14's stateful target): the
 * input is what a sender writes on each of its connections, interleaved; the receiver
 * (tm_receiver_attach, start, wait, free: the public API, as the tool and a VMM run it) reads it
 * over loopback TCP and answers into sockets nobody reads. Guest RAM is exact-size heap blocks
 * as the announced layout asks (capped at FUZZ_SESSION_RAM_CAP), so a stray write is an ASan
 * report; a hang is libFuzzer's timeout.
 *
 * Input: byte 0 chooses n = 1 + byte % FUZZ_SESSION_MAX_CONNS connections (protocol 1: the
 * channels; protocol 2: channels + control), then records [conn][len hi][len lo][len bytes]: the
 * bytes go to connection conn % n (the last record may be short). When every record is written
 * each connection's sending side is shut down, so the receiver always reaches an end.
 * gen-session records real sessions in this format (corpus/session/).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib.h>

#include "common/testing/tcp-pair.h"
#include "fuzz.h"
#include "tagmig/ram.h"
#include "tagmig/session.h"
#include "tagmig/tagstore.h"

#define FUZZ_SESSION_MAX_CONNS 5u
#define FUZZ_SESSION_RAM_CAP (4u << 20)

typedef struct {
	const uint8_t *data;
	size_t size;
	unsigned n;
	int fds[FUZZ_SESSION_MAX_CONNS]; /* the sender's ends */
} feed;

static void *feed_thread(void *arg)
{
	feed *f = arg;
	bool dead[FUZZ_SESSION_MAX_CONNS] = { false };
	size_t at = 1;

	while (at + 3 <= f->size) {
		unsigned c = f->data[at] % f->n;
		size_t len = (size_t)f->data[at + 1] << 8 | f->data[at + 2];

		at += 3;
		len = MIN(len, f->size - at);
		for (size_t done = 0; !dead[c] && done < len;) {
			ssize_t w = send(f->fds[c], f->data + at + done, len - done, MSG_NOSIGNAL);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				dead[c] = true; /* the receiver closed it: the rest goes nowhere */
				break;
			}
			done += (size_t)w;
		}
		at += len;
	}
	for (unsigned i = 0; i < f->n; i++)
		shutdown(f->fds[i], SHUT_WR);
	return NULL;
}

/* RAM and tags as the sender announced them, or -EFBIG past the cap. */
static int make_guest(tm_receiver *r, tm_ram_layout **ret_layout, tm_tag_store **ret_tags,
		      GPtrArray *blocks)
{
	const tm_ram_layout *announced = tm_receiver_announced_layout(r);
	g_autoptr(tm_ram_layout) layout = NULL;
	uint64_t total = 0;
	unsigned count = tm_ram_layout_block_count(announced);

	tm_ram_layout_new(&layout);
	for (unsigned i = 0; i < count; i++) {
		tm_ram_block_info b;
		void *host;

		if (tm_ram_layout_block(announced, i, &b) < 0)
			return -EPROTO;
		total += b.length;
		if (total > FUZZ_SESSION_RAM_CAP)
			return -EFBIG;
		if (posix_memalign(&host, b.page_size, b.length))
			return -ENOMEM;
		memset(host, 0, b.length);
		g_ptr_array_add(blocks, host);
		if (tm_ram_layout_add_block(layout, b.name, host, b.length, b.page_size, b.guest_base,
					    NULL) < 0)
			return -EPROTO;
	}
	if (tm_receiver_peer_sends_tags(r) &&
	    tm_tag_store_new(&tm_tag_store_soft, layout, NULL, ret_tags, NULL) < 0)
		return -ENOMEM;
	*ret_layout = g_steal_pointer(&layout);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tm_receiver_config cfg = { .io_backend = "sockets", .timeout_ms = 2000, .ram_zeroed = true };
	feed f = { .data = data, .size = size };
	int theirs[FUZZ_SESSION_MAX_CONNS];
	tm_receiver *r = NULL;
	tm_ram_layout *layout = NULL;
	tm_tag_store *tags = NULL;
	g_autoptr(GPtrArray) blocks = g_ptr_array_new_with_free_func(free);
	pthread_t writer;
	unsigned made = 0;

	if (size < 1)
		return 0;
	f.n = 1 + data[0] % FUZZ_SESSION_MAX_CONNS;
	for (; made < f.n; made++) {
		int big = 1 << 20;

		if (tcp_pair(&f.fds[made], &theirs[made], NULL) < 0)
			goto out;
		setsockopt(f.fds[made], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
		setsockopt(theirs[made], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	}
	if (tm_receiver_new(&cfg, &r, NULL) < 0)
		goto out;
	if (pthread_create(&writer, NULL, feed_thread, &f))
		abort();
	/* From here on the receiver owns theirs[], whatever attach returns. */
	if (tm_receiver_attach(r, theirs, f.n, NULL) == 0) {
		if (make_guest(r, &layout, &tags, blocks) < 0)
			tm_receiver_abort(r, EFBIG, "fuzz: no RAM for that");
		else if (tm_receiver_start(r, layout, tags, NULL) == 0)
			/* device state is read as a VMM reads it, in pieces */
			while (tm_receiver_wait(r, NULL) == 1) {
				static uint8_t scratch[4096];
				tm_state_info info;
				int k;
				while ((k = tm_receiver_next_state(r, &info, NULL)) == 1)
					for (uint64_t off = 0; k >= 0 && off < info.length;
					     off += sizeof(scratch))
						k = tm_receiver_read_state(
							r, scratch,
							MIN(sizeof(scratch), info.length - off), NULL);
				if (k < 0)
					break;
			}
	}
	tm_receiver_free(r);
	pthread_join(writer, NULL);
	for (unsigned i = 0; i < f.n; i++)
		close(f.fds[i]);
	tm_tag_store_free(tags);
	tm_ram_layout_free(layout);
	return 0;

out:
	for (unsigned i = 0; i < made; i++) {
		close(f.fds[i]);
		close(theirs[i]);
	}
	tm_receiver_free(r);
	return 0;
}
