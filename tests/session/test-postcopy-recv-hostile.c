/* SPDX-License-Identifier: MIT */
/*
 * Postcopy at the destination against hostile senders (docs/wire-format.md "Postcopy
 * messages"): each refused with the connection, block and offset named, nothing placed that
 * the receiver did not ask for. The hand-made sender: postcopy-dest.h.
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

typedef struct hostile_case {
	const char *what;
	int errnum;
	const char *words; /* in the receiver's error */
	bool paused;       /* after the switch: POSTCOPY_PAUSED, -ENOTCONN with the cause */
} hostile_case;

static void hostile_send(fake_sender *w, unsigned i)
{
	uint8_t buf[256];
	size_t n;

	switch (i) {
	case 0: { /* DISCARD outside the block */
		const tm_discard_range r = { 60, 10 };
		n = tm_discard_encode(buf, w->seq[0]++, 0, &r, 1);
		fake_send(w, 0, buf, n);
		break;
	}
	case 1: /* DISCARD of channel 1's pages on channel 0 */
		raw_discard(w, CH_DATA0, 16, 2);
		break;
	case 2: /* DISCARD after RAM_END(POSTCOPY) (both: the first waits at the barrier) */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		raw_discard(w, CH_DATA0, 3, 1);
		break;
	case 3: /* RAM_END(POSTCOPY) counting pages that never came */
		w->pages[1] = 5;
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		break;
	case 4: /* modes mixed across channels */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_FINAL);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		break;
	case 5: /* POSTCOPY twice */
		raw_postcopy(w, 1);
		raw_postcopy(w, 1);
		break;
	case 6: { /* an URGENT nobody asked for, after the switch */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		g_autofree uint8_t *m = data_msg(w->seq[CH_URG]++, true, 9, 0, 1, 0, &n);
		fake_send(w, CH_URG, m, n);
		break;
	}
	case 7: { /* SYNC after RAM_END(POSTCOPY) */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		const uint64_t v[TM_CTRL_MAX_FIELDS] = { 1 };
		n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_SYNC, w->seq[0]++, v);
		fake_send(w, 0, buf, n);
		break;
	}
	case 8: { /* END_ACK on urgent before any REQ_END */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		const uint64_t v[TM_CTRL_MAX_FIELDS] = { 0 };
		n = tm_ctrl_encode_v(buf, TM_WIRE_VERSION_2, TM_MSG_END_ACK, w->seq[CH_URG]++, v);
		fake_send(w, CH_URG, buf, n);
		break;
	}
	case 9: { /* background DATA of a page of channel 1 on channel 0 */
		raw_ram_end(w, CH_DATA0, TM_RAM_END_POSTCOPY);
		raw_ram_end(w, CH_DATA1, TM_RAM_END_POSTCOPY);
		g_autofree uint8_t *m = data_msg(w->seq[0]++, false, 0, 20, 1, 0, &n);
		fake_send(w, 0, m, n);
		break;
	}
	}
}

static void test_hostile(void)
{
	static const hostile_case cases[] = {
		{ "discard-range", ERANGE, "channel 0: DISCARD range 0: block 0 'pc.ram' pages 60+10", false },
		{ "discard-channel", EPROTO, "channel 0: DISCARD range 0: block 0 'pc.ram' pages 16+2", false },
		{ "discard-after-ram-end", EPROTO, "channel 0: DISCARD after RAM_END", true },
		{ "ram-end-count", EPROTO, "channel 1: RAM_END counts 5 pages in 0 packets, 0 in 0 "
					   "arrived", false },
		/* either channel's RAM_END may be read first */
		{ "ram-end-mixed", EPROTO, "RAM_END(FINAL)", false },
		{ "postcopy-twice", EPROTO, "control: POSTCOPY twice", false },
		{ "urgent-unsolicited", EPROTO, "urgent: URGENT for request 9, which is not "
						"outstanding", true },
		{ "sync-after-switch", EPROTO, "channel 0: SYNC after RAM_END", true },
		{ "urgent-end-ack", EPROTO, "urgent: END_ACK before REQ_END", true },
		{ "background-channel", EPROTO, "channel 0: DATA entry 0: page 20 of block 0 "
						"'pc.ram' arrived on channel 0", true },
	};

	if (!uffd_usable())
		return;
	for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
		dest d = { 0 };
		fake_sender w;
		g_autofree char *port = dest_start(&d);

		raw_open(&w, port, true);
		hostile_send(&w, i);
		dest_join(&d, cases[i].what);
		g_test_message("%s: receiver: %s", cases[i].what, d.error ? d.error->message : "ok");
		g_assert_cmpint(d.ret, ==, cases[i].paused ? -ENOTCONN : -cases[i].errnum);
		g_assert_cmpint(tm_receiver_phase(d.r), ==,
				cases[i].paused ? TM_PHASE_POSTCOPY_PAUSED : TM_PHASE_FAILED);
		if (!strstr(d.error->message, cases[i].words))
			g_error("%s: \"%s\" does not say \"%s\"", cases[i].what, d.error->message,
				cases[i].words);
		dest_close(&d, &w);
	}
}

/* DISCARD when postcopy was not agreed (the sender did not offer it). */
static void test_discard_unagreed(void)
{
	dest d = { 0 };
	fake_sender w;

	if (!uffd_usable())
		return;
	g_autofree char *port = dest_start(&d);
	raw_open(&w, port, false);
	raw_discard(&w, CH_DATA0, 3, 1);
	dest_join(&d, "discard-unagreed");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, -EPROTO);
	g_assert_nonnull(strstr(d.error->message, "channel 0: DISCARD without postcopy agreed"));
	dest_close(&d, &w);
}

/* An URGENT whose pages are not those of its request: refused, nothing placed. */
static void test_urgent_mismatch(void)
{
	dest d = { 0 };
	fake_sender w;
	responder rs = { .wrong_page = 40 };

	if (!dest_open(&d, &w))
		return;
	responder_start(&rs, &w, 1);
	raw_switch_round0(&d, &w, false);
	/* A vCPU touches page 50: requested, answered with page 40. The thread stays blocked
	 * (3.4: the library never places what it did not receive) until free. */
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	sigaction(SIGBUS, &sa, &old);
	bus_vcpu v = { .page = d.g.ram[0] + 50 * PAGE };
	v.thread = g_thread_new("vcpu", bus_vcpu_thread, &v);
	dest_join(&d, "urgent-mismatch");
	g_test_message("receiver: %s", d.error ? d.error->message : "ok");
	g_assert_cmpint(d.ret, ==, -ENOTCONN); /* after the switch: paused, nothing lost */
	g_assert_nonnull(strstr(d.error->message, "postcopy paused: urgent: URGENT for request 1"));
	g_assert_false(tm_receiver_page_present(d.r, 0, 40));
	g_assert_false(tm_receiver_page_present(d.r, 0, 50));
	/* Free poisons page 50 (or, without poison, closing the fd gives it a zero page). */
	tm_receiver_free(d.r);
	d.r = NULL;
	g_thread_join(v.thread);
	sigaction(SIGBUS, &old, NULL);
	g_thread_join(rs.thread);
	fake_sender_close(&w);
	g_clear_error(&d.error);
	guest_fini(&d.g);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "postcopy-hostile", test_hostile, true },
		{ "postcopy-discard-unagreed", test_discard_unagreed, true },
		{ "postcopy-urgent-mismatch", test_urgent_mismatch, true },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
