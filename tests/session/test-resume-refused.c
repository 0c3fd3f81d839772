/* SPDX-License-Identifier: MIT */
/*
 * tm_live_stats.resume_refused counts every reconnect the receiver refuses, also those refused
 * only once they proved the secret: an urgent or a control reconnect of an epoch not newer than
 * the last one taken for that connection. A hand-made protocol 2 sender (fake-peer.c) offers
 * postcopy, RESUME and RESUME_CONTROL, learns the secret from its HELLO_ACKs, reconnects the
 * connection with epoch 5 (taken) and then with epoch 3 (refused with an ERROR, counted).
 * Plaintext only (it speaks the wire by hand); skips without userfaultfd.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "postcopy-dest.h"

static const fake_hello offer = { .version = 2, .channel_count = 2, .packet_size = PS,
				  .chunk_size = PS, .block = { "pc.ram", NPAGES * PAGE, PAGE },
				  .features = TM_FEATURE_TAGS_MTE4 | TM_FEATURE_POSTCOPY |
					      TM_FEATURE_RESUME | TM_FEATURE_RESUME_CONTROL,
				  .sid = 7 };

/* A reconnect of role (urgent or control) with epoch and the secret; returns its socket. */
static int reconnect(const char *port, uint8_t role, uint32_t epoch, uint64_t token)
{
	fake_hello h = offer;
	uint8_t buf[TM_FRAME_HDR_LEN + 16];
	size_t n;

	h.role = role;
	h.epoch = epoch;
	int fd = fake_connect(port, &h);
	if (role == TM_ROLE_CONTROL)
		n = tm_ctl_resume_encode(buf, 1, token, 0);
	else
		n = tm_resume_encode(buf, 1, token);
	g_assert_cmpint(write(fd, buf, n), ==, (ssize_t)n);
	return fd;
}

/* The type of the next frame on fd (5 s at most), 0 if none came. */
static uint8_t next_type(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t hdr[TM_FRAME_HDR_LEN];

	if (poll(&p, 1, 5000) <= 0 || recv(fd, hdr, sizeof(hdr), MSG_WAITALL) != sizeof(hdr))
		return 0;
	return hdr[5];
}

static uint64_t refused(dest *d)
{
	tm_live_stats rs = { .size = sizeof(rs) };
	g_assert_cmpint(tm_receiver_get_live_stats(d->r, &rs), ==, 0);
	return rs.resume_refused;
}

static void old_epoch(uint8_t role)
{
	dest d = { 0 };
	fake_sender w;

	if (!uffd_usable())
		return; /* skipped with the reason */
	g_autofree char *port = dest_start(&d);
	fake_sender_open(&w, port, &offer);
	g_assert_cmpuint(w.ack.features & TM_FEATURE_POSTCOPY, !=, 0);
	g_assert_cmpuint(w.ack.features & TM_FEATURE_RESUME_CONTROL, !=, 0);
	g_assert_cmpuint(w.ack.resume_token, !=, 0);
	int taken = reconnect(port, role, 5, w.ack.resume_token);
	int old = reconnect(port, role, 3, w.ack.resume_token); /* handled after the first */
	g_assert_cmpuint(next_type(old), ==, TM_MSG_ERROR);
	for (unsigned ms = 0; ms < 2000 && refused(&d) == 0; ms++)
		g_usleep(1000); /* counted right after the ERROR went */
	close(old);
	g_test_message("resume_refused %" G_GUINT64_FORMAT, refused(&d));
	g_assert_cmpuint(refused(&d), ==, 1);
	close(taken);
	/* Its thread may still be in tm_receiver_wait (the session is only paused): end it before
	 * freeing the receiver under it. */
	tm_receiver_cancel(d.r, "the test is over");
	dest_join(&d, "old-epoch");
	dest_close(&d, &w);
}

static void test_urgent_old_epoch(void)
{
	old_epoch(TM_ROLE_URGENT);
}

static void test_control_old_epoch(void)
{
	old_epoch(TM_ROLE_CONTROL);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "resume-refused/urgent-old-epoch", test_urgent_old_epoch, true },
		{ "resume-refused/control-old-epoch", test_control_old_epoch, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
