/* SPDX-License-Identifier: MIT */
/*
 * Postcopy at the destination (docs/design/live-engine.md 3.3, docs/wire-format.md "Postcopy
 * messages") against a hand-made protocol 2 sender that speaks the wire with the codec's
 * encoders (postcopy-dest.h): the switch at round 0 and at round 1, DISCARD dropping a stale
 * page, background pages placed while destination "vCPU" threads touch missing pages (they must
 * find data and tags set when they wake), known-zero pages, postcopy agreed but never switched,
 * and the offer declined. Page requests: test-postcopy-recv-urgent.c; a pause or a cancel:
 * test-postcopy-recv-paused.c; hostile senders: test-postcopy-recv-hostile.c.
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
 * Switch before any page (round 0): POSTCOPY, RAM_END(POSTCOPY) on both channels, no device
 * state; then background pages arrive slowly while four vCPU threads touch every page. Each
 * finds data and tags set when its load returns; pages nobody sent in the background are
 * requested on the urgent connection; the session completes with every page.
 */
static void test_round0(void)
{
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!dest_open(&d, &w))
		return;
	g_assert_cmpuint(w.ack.features & TM_FEATURE_POSTCOPY, ==, TM_FEATURE_POSTCOPY);
	g_assert_cmpuint(w.ack.max_outstanding, ==, TM_MAX_OUTSTANDING_DEFAULT);
	responder_start(&rs, &w, 1);
	raw_postcopy(&w, NPAGES);
	raw_switch_round0(&d, &w, true);
	g_assert_cmpuint(tm_receiver_take_events(d.r) & TM_EVENT_POSTCOPY, ==, TM_EVENT_POSTCOPY);

	vcpu v[4];
	for (unsigned i = 0; i < 4; i++) {
		v[i] = (vcpu){ .d = &d, .first = i, .step = 4, .count = NPAGES / 4, .gen = 1 };
		v[i].thread = g_thread_new("vcpu", vcpu_thread, &v[i]);
	}
	/* Background: the first 48 pages, slowly; the last chunk only on request. */
	for (unsigned p = 0; p < 48; p += 4) {
		g_usleep(20000);
		raw_data(&w, p, 4, 1);
	}
	for (unsigned i = 0; i < 4; i++) {
		g_thread_join(v[i].thread);
		g_assert_cmpuint(v[i].bad, ==, 0);
	}
	g_assert_cmpuint(tm_receiver_take_events(d.r) & TM_EVENT_FAULTS, ==, TM_EVENT_FAULTS);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "round0");
	g_test_message("receiver: %s; %u requests (largest %u pages)",
		       d.error ? d.error->message : "ok", rs.requests, rs.max_count);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_COMPLETE);
	g_assert_cmpuint(d.wait_ones, ==, 1); /* the end of device state, once: the guest may run */
	g_assert_true(rs.req_end_seen);
	g_assert_cmpuint(rs.req_end, ==, rs.requests);
	g_assert_cmpuint(rs.requests, >, 0); /* pages 48..63 came only on request */
	check_pages(&d, 1, 1, 0);
	tm_live_stats st = { .size = sizeof(st) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &st), ==, 0);
	g_test_message("postcopy %" G_GUINT64_FORMAT " background %" G_GUINT64_FORMAT
		       " urgent %" G_GUINT64_FORMAT " dup %" G_GUINT64_FORMAT
		       " faults %" G_GUINT64_FORMAT " p50 %" G_GUINT64_FORMAT " max %" G_GUINT64_FORMAT,
		       (guint64)st.postcopy_pages, (guint64)st.background_pages,
		       (guint64)st.urgent_pages, (guint64)st.duplicate_pages, (guint64)st.faults,
		       (guint64)st.fault_p50_us, (guint64)st.fault_max_us);
	g_assert_cmpuint(st.postcopy_pages, ==, NPAGES);
	g_assert_cmpuint(st.background_pages, ==, 48);
	g_assert_cmpuint(st.requests, ==, rs.requests);
	g_assert_cmpuint(st.urgent_pages + st.background_pages - st.duplicate_pages, ==, NPAGES);
	g_assert_cmpuint(st.faults, >, 0);
	g_assert_cmpuint(st.fault_p50_us, <=, st.fault_max_us);
	g_assert_cmpuint(st.fault_max_us, >, 0);
	dest_close(&d, &w);
}

/*
 * Switch after a precopy round (round 1): every page sent in generation 0, then pages 3 and 4
 * changed; the sender discards them (they are stale at the destination), switches, and sends
 * their generation 1 in the background. Before that they are missing again; at the end they
 * hold generation 1, every other page generation 0.
 */
static void test_round1(void)
{
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!dest_open(&d, &w))
		return;
	responder_start(&rs, &w, 1);
	for (unsigned p = 0; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_discard(&w, CH_DATA0, 3, 2);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_postcopy(&w, 2);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	g_assert_false(tm_receiver_page_present(d.r, 0, 3));
	g_assert_false(tm_receiver_page_present(d.r, 0, 4));
	g_assert_true(tm_receiver_page_present(d.r, 0, 5));
	g_assert_true(tm_receiver_page_present(d.r, 0, 2));
	vcpu v = { .d = &d, .first = 3, .step = 1, .count = 1, .gen = 1 };
	v.thread = g_thread_new("vcpu", vcpu_thread, &v);
	g_usleep(50000);
	raw_data(&w, 3, 2, 1);
	g_thread_join(v.thread);
	g_assert_cmpuint(v.bad, ==, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "round1");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, 0);
	for (unsigned p = 0; p < NPAGES; p++) {
		uint8_t want[PAGE], want_tags[PAGE / 16];
		make_page(p, p == 3 || p == 4, want, want_tags);
		if (memcmp(d.g.ram[0] + (size_t)p * PAGE, want, PAGE) != 0 ||
		    memcmp(tm_tag_store_soft_array(d.g.tags, 0) + (size_t)p * PAGE / 16, want_tags,
			   PAGE / 16) != 0)
			g_error("page %u: not generation %u", p, p == 3 || p == 4);
	}
	tm_live_stats st = { .size = sizeof(st) };
	g_assert_cmpint(tm_receiver_get_live_stats(d.r, &st), ==, 0);
	g_assert_cmpuint(st.discarded_pages, ==, 2);
	g_assert_cmpuint(st.postcopy_pages, ==, 2);
	g_assert_cmpuint(st.background_pages, ==, 2);
	dest_close(&d, &w);
}

/* A receiver without postcopy declines the offer: HELLO_ACK without POSTCOPY, urgent closed. */
static void test_declined(void)
{
	dest d = { .no_postcopy = true };
	fake_sender w;
	uint8_t b;

	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, true);
	g_assert_cmpuint(w.ack.features & TM_FEATURE_POSTCOPY, ==, 0);
	g_assert_cmpuint(w.ack.max_outstanding, ==, 0);
	g_assert_cmpint(recv(w.fd[CH_URG], &b, 1, 0), ==, 0); /* closed at once */
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_FINAL);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_FINAL);
	fake_sender_close(&w);
	dest_join(&d, "declined");
	dest_free(&d);
}

/*
 * ram_zeroed: ZERO pages of precopy were never written, so they may have no page table entry;
 * once registered they would fault forever. They become zero_known at the barrier: a vCPU
 * touching one gets a zero page placed locally (no request), and the session completes with
 * them counted.
 */
static void test_zero_known(void)
{
	dest d = { .ram_zeroed = true };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!dest_open(&d, &w))
		return;
	responder_start(&rs, &w, 0);
	raw_zero(&w, 0, 8);
	raw_zero_tagged(&w, 8, 8, 0x9); /* zero data, non-zero tags: they must survive the fault */
	for (unsigned p = 16; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_POSTCOPY);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_POSTCOPY);
	raw_postcopy(&w, 0);
	raw_eos(&w);
	wait_phase(&d, TM_PHASE_POSTCOPY);
	/* Page 5 is zero, its tags too: a vCPU touching it must come back. */
	const volatile uint8_t *page = d.g.ram[0] + 5 * PAGE;
	g_assert_cmpuint(page[100], ==, 0);
	/* Page 10 is zero with tags 0x9: the local zero page keeps them. */
	const volatile uint8_t *tagged = d.g.ram[0] + 10 * PAGE;
	g_assert_cmpuint(tagged[200], ==, 0);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	g_thread_join(rs.thread);
	raw_finish_control(&w, TM_RAM_END_POSTCOPY);
	dest_join(&d, "zero-known");
	g_test_message("receiver: %s; %u requests", d.error ? d.error->message : "ok", rs.requests);
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_cmpuint(rs.requests, ==, 0);
	for (unsigned p = 0; p < NPAGES; p++)
		g_assert_true(tm_receiver_page_present(d.r, 0, p));
	for (unsigned p = 16; p < NPAGES; p++) {
		uint8_t want[PAGE], want_tags[PAGE / 16];
		make_page(p, 0, want, want_tags);
		g_assert_cmpint(memcmp(d.g.ram[0] + (size_t)p * PAGE, want, PAGE), ==, 0);
	}
	g_assert_true(tm_buffer_is_zero(d.g.ram[0], 16 * PAGE));
	const uint8_t *tagarr = tm_tag_store_soft_array(d.g.tags, 0);
	for (unsigned i = 0; i < 16 * PAGE / 16; i++)
		g_assert_cmpuint(tagarr[i], ==, i >= 8 * PAGE / 16 ? 0x9 : 0);
	dest_close(&d, &w);
}

/*
 * Postcopy agreed, never switched: the session completes in precopy (READY mode 1) and the
 * receiver ends the unused urgent connection with REQ_END(0) / END_ACK before its control
 * END_ACK; no userfaultfd registration ever happened.
 */
static void test_agreed_precopy(void)
{
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = -1 };

	if (!dest_open(&d, &w))
		return;
	responder_start(&rs, &w, 0);
	for (unsigned p = 0; p < NPAGES; p += 16)
		raw_data(&w, p, 16, 0);
	raw_ram_end(&w, CH_DATA0, TM_RAM_END_FINAL);
	raw_ram_end(&w, CH_DATA1, TM_RAM_END_FINAL);
	raw_eos(&w);
	raw_end(&w, CH_DATA0);
	raw_end(&w, CH_DATA1);
	raw_finish_control(&w, TM_RAM_END_FINAL);
	g_thread_join(rs.thread);
	dest_join(&d, "agreed-precopy");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, 0);
	g_assert_true(rs.req_end_seen);
	g_assert_cmpuint(rs.req_end, ==, 0);
	g_assert_cmpint(tm_receiver_phase(d.r), ==, TM_PHASE_COMPLETE);
	check_pages(&d, 0, 0, 0);
	dest_close(&d, &w);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-round0", test_round0, true },
		{ "postcopy-round1", test_round1, true },
		{ "postcopy-declined", test_declined, true },
		{ "postcopy-zero-known", test_zero_known, true },
		{ "postcopy-agreed-precopy", test_agreed_precopy, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
