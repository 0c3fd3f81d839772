/* SPDX-License-Identifier: MIT */
/*
 * Sessions whose data is corrupt, on purpose: hand-made hostile senders (fake-peer.h) with a
 * page outside its block, a bad uniform tag, a channel id twice, and a man in the middle that
 * alters TLS ciphertext. The receiver refuses each, naming channel, block and offset, and
 * never lets bad data into guest RAM or marks a wrong page present.
 * Every test runs for each backend pair, plaintext and TLS (session-fixture.c).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "fake-peer.h"
#include "session-fixture.h"
#include "transport/transport.h"
#include "transport/tls/tls.h"

/* A DATA packet whose page lies outside the block: refused before any byte reaches RAM. */
static void test_corrupt_page_out_of_range(void)
{
	guest dst;
	peer p;

	int fd = fake_v1_start(&p, &dst, false);
	/* DATA: one NORMAL page at index 256 (the block has 256 pages), then 4 KiB of 0xee. */
	uint8_t msg[TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN + 8 + 4096];
	memset(msg, 0xee, sizeof(msg));
	tm_frame_encode(msg, TM_MSG_DATA, sizeof(msg) - TM_FRAME_HDR_LEN, 1);
	uint8_t *d = msg + TM_FRAME_HDR_LEN;
	tm_put32(d, 0);
	tm_put32(d + 4, 1);
	tm_put32(d + 8, 4096);
	tm_put32(d + 12, 0);
	tm_put32(d + 16, 256);
	d[20] = TM_PAGE_NORMAL;
	d[21] = TM_TAGS_ZERO;
	tm_put16(d + 22, 0);
	(void)!write(fd, msg, sizeof(msg));
	/* The receiver says why before it closes. */
	uint8_t hdr[TM_FRAME_HDR_LEN];
	g_assert_cmpint(recv(fd, hdr, sizeof(hdr), MSG_WAITALL), ==, sizeof(hdr));
	g_assert_cmpuint(hdr[5], ==, TM_MSG_ERROR);
	close(fd);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -ERANGE);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	g_assert_nonnull(strstr(p.error->message, "256"));
	g_assert_true(tm_buffer_is_zero(dst.ram[0], dst.len[0]));
	g_assert_false(tm_receiver_page_present(p.r, 0, 0));
	peer_free(&p);
	guest_fini(&dst);
}

/*
 * Issue 14, defect 6: a DATA packet of two NORMAL pages whose second uniform tag byte has its high
 * nibble set. The tag payload follows the page data on the wire; still, no byte of the packet's
 * data may reach guest RAM (it is staged until the tags are checked).
 */
static void test_bad_uniform_tag_before_ram(void)
{
	guest dst;
	peer p;

	int fd = fake_v1_start(&p, &dst, true);
	uint8_t msg[TM_FRAME_HDR_LEN + TM_DATA_HDR_LEN + 16 + 2 * 4096 + 2];
	memset(msg, 0xee, sizeof(msg));
	tm_frame_encode(msg, TM_MSG_DATA, sizeof(msg) - TM_FRAME_HDR_LEN, 1);
	uint8_t *d = msg + TM_FRAME_HDR_LEN;
	tm_put32(d, 0);
	tm_put32(d + 4, 2);
	tm_put32(d + 8, 2 * 4096);
	tm_put32(d + 12, 2);
	for (unsigned i = 0; i < 2; i++) {
		tm_put32(d + 16 + 8 * i, 3 + i);
		d[20 + 8 * i] = TM_PAGE_NORMAL;
		d[21 + 8 * i] = TM_TAGS_UNIFORM;
		tm_put16(d + 22 + 8 * i, 0);
	}
	msg[sizeof(msg) - 2] = 0x05; /* valid */
	msg[sizeof(msg) - 1] = 0x35; /* high nibble set */
	g_assert_cmpint(write(fd, msg, sizeof(msg)), ==, (ssize_t)sizeof(msg));
	peer_join(&p);
	g_test_message("receiver: %s", p.error->message);
	g_assert_cmpint(p.ret, ==, -EBADMSG);
	g_assert_nonnull(strstr(p.error->message, "high nibble"));
	g_assert_true(tm_buffer_is_zero(dst.ram[0], dst.len[0]));
	g_assert_false(tm_receiver_page_present(p.r, 0, 3));
	close(fd);
	peer_free(&p);
	guest_fini(&dst);
}

/* Two connections claiming the same channel id. */
static void test_corrupt_duplicate_channel(void)
{
	guest dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 1 << 20, 4096 } };

	guest_init(&dst, a, 1, false);
	g_autofree char *port = peer_start(&p, &dst);
	int fd0 = fake_connect_v1(port, a, 1, 2, false);
	int fd1 = fake_connect_v1(port, a, 1, 2, false);
	peer_join(&p);
	g_assert_cmpint(p.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(p.error->message, "channel id 1 connected twice"));
	close(fd0);
	close(fd1);
	peer_free(&p);
	guest_fini(&dst);
}

/* ---- a man in the middle that flips one byte of channel 0's ciphertext ---- */
typedef struct flip_proxy {
	int listen_fd;     /* where the sender connects */
	const char *port;  /* the receiver's */
	unsigned channels;
	uint64_t flip_at;  /* offset in channel 0's sender-to-receiver stream */
} flip_proxy;

static gpointer flip_proxy_thread(gpointer data)
{
	flip_proxy *fp = data;
	struct pollfd pfd[2 * TM_MAX_CHANNELS];
	uint64_t forwarded[TM_MAX_CHANNELS] = { 0 };
	unsigned open = 2 * fp->channels;
	uint8_t buf[65536];

	/* The sender connects channel 0 first (then control, then the other channels). */
	for (unsigned i = 0; i < fp->channels; i++) {
		pfd[2 * i] = (struct pollfd){ .fd = accept(fp->listen_fd, NULL, NULL), .events = POLLIN };
		pfd[2 * i + 1] = (struct pollfd){
			.fd = tm_net_connect("127.0.0.1", fp->port, 5000, -1, NULL), .events = POLLIN };
	}
	while (open > 0 && poll(pfd, 2 * fp->channels, 10000) > 0) {
		for (unsigned k = 0; k < 2 * fp->channels; k++) {
			if (pfd[k].fd < 0 || !(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = recv(pfd[k].fd, buf, sizeof(buf), 0);
			int to = pfd[k ^ 1].fd;
			if (n <= 0) {
				shutdown(to, SHUT_WR);
				pfd[k].fd = -1;
				open--;
				continue;
			}
			unsigned ch = k / 2;
			if (k % 2 == 0) {
				if (ch == 0 && forwarded[0] <= fp->flip_at &&
				    fp->flip_at < forwarded[0] + (uint64_t)n)
					buf[fp->flip_at - forwarded[0]] ^= 0x20;
				forwarded[ch] += (uint64_t)n;
			}
			(void)!send(to, buf, (size_t)n, MSG_NOSIGNAL);
		}
	}
	for (unsigned k = 0; k < 2 * fp->channels; k++)
		close(pfd[k].fd);
	g_test_message("proxy: channel 0 carried %" G_GUINT64_FORMAT " bytes", forwarded[0]);
	return NULL;
}

/* A byte altered in flight: the receiver refuses the record and never marks a wrong page present. */
static void test_tls_tampered(void)
{
	guest src, dst;
	peer p;
	const block_spec a[] = { { "pc.ram", 8 << 20, 4096 } };
	g_autoptr(GError) err = NULL;
	g_autoptr(tm_sender) s = NULL;
	unsigned pport;

	if (!tls_dir) {
		g_test_skip("needs TLS");
		return;
	}
	guest_init(&src, a, 1, true);
	guest_init(&dst, a, 1, true);
	guest_fill(&src);
	g_autofree char *port = peer_start(&p, &dst);
	/* Two data channels and the control connection (protocol 2). */
	flip_proxy fp = { .port = port, .channels = 3, .flip_at = 1 << 20 };
	fp.listen_fd = tm_listen("127.0.0.1", "0", &pport, NULL);
	GThread *t = g_thread_new("proxy", flip_proxy_thread, &fp);
	g_autofree char *pports = g_strdup_printf("%u", pport);
	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir, .channels = 2,
				 .timeout_ms = 20000 };
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_connect(s, "127.0.0.1", pports, &err), ==, 0);
	uint64_t np = (8 << 20) / 4096, bm[np / 64];
	memset(bm, 0xff, sizeof(bm));
	int r = tm_sender_queue_bitmap(s, 0, bm, 0, np, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	peer_join(&p);
	g_assert_cmpint(r, <, 0);
	g_test_message("sender: %s", err->message);
	g_assert_cmpint(p.ret, ==, -EBADMSG);
	g_test_message("receiver: %s", p.error->message);
	g_assert_nonnull(strstr(p.error->message, "channel 0"));
	/* Its own "authentication failed", or (when the sender's reaction to our alert arrives on
	 * control first) the sender's echo of it, "could not authenticate". */
	g_assert_nonnull(strstr(p.error->message, "authenticat"));
	/* Every page marked present holds exactly what was sent; some never arrived. */
	uint64_t present = 0;
	for (uint64_t i = 0; i < np; i++) {
		if (!tm_receiver_page_present(p.r, 0, i))
			continue;
		present++;
		g_assert_true(memcmp(src.ram[0] + i * 4096, dst.ram[0] + i * 4096, 4096) == 0);
		g_assert_true(memcmp(tm_tag_store_soft_array(src.tags, 0) + i * 256,
				     tm_tag_store_soft_array(dst.tags, 0) + i * 256, 256) == 0);
	}
	g_test_message("%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " pages present", present, np);
	g_assert_cmpuint(present, <, np);
	/* Both sides' connections close when they are freed (a failed session keeps them until
	 * then): only then has the proxy seen every stream end. */
	peer_free(&p);
	tm_sender_free(g_steal_pointer(&s));
	g_thread_join(t);
	close(fp.listen_fd);
	guest_fini(&src);
	guest_fini(&dst);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "corrupt-page-out-of-range", test_corrupt_page_out_of_range, true },
		{ "corrupt-duplicate-channel", test_corrupt_duplicate_channel, true },
		{ "bad-uniform-tag-before-ram", test_bad_uniform_tag_before_ram, true },
		{ "tls-tampered", test_tls_tampered, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
