/* SPDX-License-Identifier: MIT */
/*
 * Postcopy at the destination, its page requests (docs/design/live-engine.md 3.3): requests on
 * the urgent connection answered by the hand-made sender (postcopy-dest.h) within the agreed
 * max_outstanding, neighbouring faults coalesced into one request, and an URGENT in precopy
 * refused.
 *
 * Without userfaultfd every case skips with the kernel's reason.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/uffd-internal.h"
#include "postcopy-dest.h"

/*
 * max_outstanding 1: with four vCPUs faulting on pages far apart, the receiver keeps one request
 * unanswered at a time (the others wait in its queue) and still serves every fault.
 */
static void test_max_outstanding(void)
{
	dest d = { .max_outstanding = 1 };
	fake_sender w;
	responder rs = { .wrong_page = -1, .delay_ms = 30 };

	if (!dest_open(&d, &w))
		return;
	g_assert_cmpuint(w.ack.max_outstanding, ==, 1);
	responder_start(&rs, &w, 0);
	raw_switch_round0(&d, &w, true);
	vcpu v[4];
	for (unsigned i = 0; i < 4; i++) {
		v[i] = (vcpu){ .d = &d, .first = 1 + 16 * i, .step = 1, .count = 1, .gen = 0 };
		v[i].thread = g_thread_new("vcpu", vcpu_thread, &v[i]);
	}
	for (unsigned i = 0; i < 4; i++) {
		g_thread_join(v[i].thread);
		g_assert_cmpuint(v[i].bad, ==, 0);
	}
	/* The rest in the background; then the end. */
	for (unsigned p = 0; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "max-outstanding");
	g_test_message("receiver: %s; %u requests, %u over the limit",
		       d.error ? d.error->message : "ok", rs.requests, rs.over);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpuint(rs.requests, ==, 4);
	g_assert_cmpuint(rs.over, ==, 0);
	check_pages(&d, 0, 0, 0);
	dest_close(&d, &w);
}

/*
 * Coalescing: sixteen vCPUs fault on the sixteen pages of one chunk while the only request the
 * receiver may have out (max_outstanding 1) is unanswered; the faults that queued meanwhile go
 * in one PAGE_REQ (adjacent pages, at most 16 and one DATA body).
 */
static void test_coalesce(void)
{
	dest d = { .max_outstanding = 1 };
	fake_sender w;
	responder rs = { .wrong_page = -1, .delay_ms = 100 };

	if (!dest_open(&d, &w))
		return;
	rs.watch = d.r;
	rs.hold_faults = 16; /* all sixteen queued before the first answer, however loaded */
	responder_start(&rs, &w, 0);
	raw_switch_round0(&d, &w, true);
	vcpu v[16];
	for (unsigned i = 0; i < 16; i++) {
		v[i] = (vcpu){ .d = &d, .first = 48 + i, .step = 1, .count = 1, .gen = 0 };
		v[i].thread = g_thread_new("vcpu", vcpu_thread, &v[i]);
	}
	for (unsigned i = 0; i < 16; i++) {
		g_thread_join(v[i].thread);
		g_assert_cmpuint(v[i].bad, ==, 0);
	}
	for (unsigned p = 0; p < 48; p += 16)
		raw_data(&w, p, 16, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "coalesce");
	g_test_message("receiver: %s; %u requests, the largest %u pages",
		       d.error ? d.error->message : "ok", rs.requests, rs.max_count);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpuint(rs.over, ==, 0);
	g_assert_cmpuint(rs.max_count, >=, 8);
	g_assert_cmpuint(rs.requests, <=, 8);
	check_pages(&d, 0, 0, 0);
	dest_close(&d, &w);
}

/* An URGENT in precopy (postcopy agreed, never switched): refused, the session fails. */
static void test_urgent_in_precopy(void)
{
	dest d = { 0 };
	fake_sender w;
	size_t n;

	if (!dest_open(&d, &w))
		return;
	g_autofree uint8_t *m = data_msg(w.seq[CH_URG]++, true, 1, 0, 1, 0, &n);
	fake_send(&w, CH_URG, m, n);
	for (unsigned p = 0; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_FINAL);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_FINAL);
	raw_eos(&w);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	raw_end(&w, CH_CTL);
	/* Control: PONGs for the receiver's PINGs until it says why it fails. */
	uint8_t buf[2048];
	tm_frame f;
	while (fake_read(&w, CH_CTL, &f, buf, sizeof(buf)) && f.type == TM_MSG_PING) {
		const uint64_t nonce[TM_CTRL_MAX_FIELDS] = { tm_get64(buf) };
		uint8_t out[TM_FRAME_HDR_LEN + 8];
		size_t k = tm_ctrl_encode_v(out, TM_WIRE_VERSION_2, TM_MSG_PONG, w.seq[CH_CTL]++,
					    nonce);
		fake_send(&w, CH_CTL, out, k);
	}
	dest_join(&d, "urgent-in-precopy");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(d.error->message, "urgent"));
	g_assert_nonnull(strstr(d.error->message, "URGENT"));
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_FAILED);
	dest_close(&d, &w);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-max-outstanding", test_max_outstanding, true },
		{ "postcopy-coalesce", test_coalesce, true },
		{ "postcopy-urgent-in-precopy", test_urgent_in_precopy, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
