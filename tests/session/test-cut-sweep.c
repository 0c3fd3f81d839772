/* SPDX-License-Identifier: MIT */
/*
 * An adversarial sweep of issue 14's acceptance ("a cut of any one channel at any point completes
 * bit-exact with both sides exiting 0"): many migrations through cut-proxy.c (resume-rig.h), each
 * cutting ONE connection (data channel 0, a later data channel, control) in one way (close,
 * half: the sender's side closed, half_recv: the receiver's side closed, freeze: both held
 * silent, reset) at one point (a byte offset from setup to mid-stream, or right before a frame of
 * a given type: plaintext only). A point passes when both sides return 0 within a bound and the
 * copy is exact, or counts apart when the cut was never reached (the session ended first).
 *
 * cut-sweep/precopy-attach sweeps the precopy points in attach mode (resume-rig.h, rig_attach): the
 * test dials and accepts the sockets itself through the proxy, tm_sender_attach() and
 * tm_receiver_attach() with the reconnect hook on both sides; its points are named
 * 'precopy-attach/...'. cut-sweep/postcopy-attach does the same for the postcopy points (the
 * urgent connection is one of the VMM's sockets too). cut-sweep/precopy-delta cuts during a second
 * round in which every page goes as a delta (TM_DELTA_ALWAYS; DELTA, or ZDELTA where zstd pays)
 * and every 61st page's base was changed at the destination (refused: DELTA_NACK, then the whole
 * page); its points, armed once the first round is synced, are named 'precopy-delta/...'.
 *
 * Too long for CI: skipped unless CUT_SWEEP=1. CUT_SWEEP_ONLY=<glob> runs only the points whose
 * name matches (e.g. 'postcopy/urgent/before-*'). By default only the io_uring pairs (plaintext and TLS)
 * sweep; CUT_SWEEP_ALL_PAIRS=1 sweeps every backend pair. The sender's and the receiver's
 * timeout_ms and both resume_deadline_ms are 2000 unless CUT_SWEEP_SEND_MS, CUT_SWEEP_RECV_MS,
 * CUT_SWEEP_RESUME_MS say. Each point runs in a child process, killed if it hangs. A summary
 * (passed, not reached, failed with both sides' errors) ends each run, which fails if any point
 * failed.
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "resume-rig.h"
#include "transport/transport.h"

#define POINT_BOUND_S 15.0 /* a point that takes longer fails, even if it completed */
#define POINT_KILL_S 25    /* a point still running then is killed and fails (a hang) */

typedef enum mode { M_CLOSE, M_HALF, M_HALF_RECV, M_FREEZE, M_RESET, M_COUNT } mode;
static const char *const mode_name[M_COUNT] = { "close", "half", "half_recv", "freeze", "reset" };

typedef struct role {
	const char *name;
	int conn; /* the proxy's accept index: 0 data 0, 1 control, k + 1 data k */
} role;
static const role roles[] = { { "data0", 0 }, { "ctl", 1 }, { "data2", 3 } };
static const role pc_roles[] = { { "data0", 0 }, { "ctl", 1 }, { "data2", 3 }, { "urgent", 4 } };

typedef struct position {
	const char *name;
	uint64_t bytes; /* a cut by bytes: this many sender bytes passed (0: at setup) */
	uint8_t frame;  /* else right before a frame of this type (plaintext only) */
	bool from_sender;
} position;
static const position positions[] = {
	{ "at-setup", 0, 0, false },
	{ "byte-1", 1, 0, false },
	{ "byte-13", 13, 0, false },
	{ "byte-200", 200, 0, false },
	{ "byte-4k", 4096, 0, false },
	{ "byte-70k", 70000, 0, false },
	{ "byte-1m", 1u << 20, 0, false },
	{ "byte-6m", 6u << 20, 0, false },
	{ "before-HELLO", 0, TM_MSG_HELLO, true },
	{ "before-HELLO_ACK", 0, TM_MSG_HELLO_ACK, false },
	{ "before-DATA", 0, TM_MSG_DATA, true },
	{ "before-SYNC", 0, TM_MSG_SYNC, true },
	{ "before-SYNC_ACK", 0, TM_MSG_SYNC_ACK, false },
	{ "before-RAM_END", 0, TM_MSG_RAM_END, true },
	{ "before-STATE", 0, TM_MSG_STATE, true },
	{ "before-END", 0, TM_MSG_END, true },
	{ "before-READY", 0, TM_MSG_READY, false },
	{ "before-END_ACK", 0, TM_MSG_END_ACK, false },
	{ "before-CTL_POS", 0, TM_MSG_CTL_POS, true },
	{ "before-PONG", 0, TM_MSG_PONG, false },
};
/* Postcopy: the same byte offsets, and the frames of postcopy's end and its urgent traffic. */
static const position pc_positions[] = {
	{ "at-setup", 0, 0, false },
	{ "byte-1", 1, 0, false },
	{ "byte-13", 13, 0, false },
	{ "byte-200", 200, 0, false },
	{ "byte-4k", 4096, 0, false },
	{ "byte-70k", 70000, 0, false },
	{ "byte-1m", 1u << 20, 0, false },
	{ "byte-5m", 5u << 20, 0, false },
	{ "before-HELLO", 0, TM_MSG_HELLO, true },
	{ "before-HELLO_ACK", 0, TM_MSG_HELLO_ACK, false },
	{ "before-SYNC_ACK", 0, TM_MSG_SYNC_ACK, false },
	{ "before-POSTCOPY", 0, TM_MSG_POSTCOPY, true },
	{ "before-STATE", 0, TM_MSG_STATE, true },
	{ "before-PAGE_REQ", 0, TM_MSG_PAGE_REQ, false },
	{ "before-URGENT", 0, TM_MSG_URGENT, true },
	{ "before-RAM_END", 0, TM_MSG_RAM_END, true },
	{ "before-REQ_END", 0, TM_MSG_REQ_END, false },
	{ "before-END", 0, TM_MSG_END, true },
	{ "before-READY", 0, TM_MSG_READY, false },
	{ "before-END_ACK", 0, TM_MSG_END_ACK, false },
	{ "before-CTL_POS", 0, TM_MSG_CTL_POS, true },
};

/*
 * Delta rounds: armed once the first round is synced, so the byte offsets count from the start
 * of the second round, whose re-sent pages go as deltas (DELTA) or, where the receiver refuses
 * the base, as a DELTA_NACK and the whole page again.
 */
static const position delta_positions[] = {
	{ "byte-1", 1, 0, false },
	{ "byte-13", 13, 0, false },
	{ "byte-200", 200, 0, false },
	{ "byte-4k", 4096, 0, false },
	{ "byte-70k", 70000, 0, false },
	{ "byte-300k", 300000, 0, false },
	{ "before-DELTA", 0, TM_MSG_DELTA, true },
	{ "before-ZDELTA", 0, TM_MSG_ZDELTA, true }, /* zstd agreed too: deltas that compress */
	{ "before-DELTA_NACK", 0, TM_MSG_DELTA_NACK, false },
	{ "before-DATA", 0, TM_MSG_DATA, true },
	{ "before-SYNC", 0, TM_MSG_SYNC, true },
	{ "before-SYNC_ACK", 0, TM_MSG_SYNC_ACK, false },
	{ "before-END", 0, TM_MSG_END, true },
	{ "before-END_ACK", 0, TM_MSG_END_ACK, false },
};

typedef enum outcome { O_PASS, O_NOT_REACHED, O_FAIL } outcome;

typedef struct tally {
	unsigned n[3];
	unsigned skipped; /* frame points under TLS, or not selected */
	GString *failures;
} tally;

/* The copy is exact: RAM and soft tags. */
static bool same(guest *a, guest *b)
{
	for (unsigned i = 0; i < a->nblocks; i++) {
		if (memcmp(a->ram[i], b->ram[i], a->len[i]) != 0)
			return false;
		if (a->tags && b->tags &&
		    memcmp(tm_tag_store_soft_array(a->tags, i), tm_tag_store_soft_array(b->tags, i),
			   a->len[i] / 16) != 0)
			return false;
	}
	return true;
}

/* A timeout the environment may set for the sweep: 2000 ms unless it says. */
static unsigned env_ms(const char *name)
{
	const char *v = g_getenv(name);
	return v && *v ? (unsigned)g_ascii_strtoull(v, NULL, 10) : 2000;
}

/* Delta points (sweep(..., delta)): a second round of deltas, with some bases refused. */
static bool delta_round;

#define DELTA_REFUSED_EVERY 61u /* every 61st page's base changes at the destination */

/*
 * The second round of a delta point: every page changed in 200 bytes at the source (a delta
 * each), every DELTA_REFUSED_EVERY-th page's copy at the destination changed behind the
 * sender's back (refused: DELTA_NACK, then the whole page), the cut armed, every page queued
 * and synced.
 */
static int delta_second_round(run *t, const position *pos, int conn)
{
	uint64_t np = RIG_RAM / 4096;

	for (uint64_t pg = 0; pg < np; pg++) {
		uint8_t *p = t->src.ram[0] + pg * 4096 + (pg * 37) % 3800;
		for (unsigned i = 0; i < 200; i++)
			p[i] ^= (uint8_t)(0x5a + i);
		if (pg % DELTA_REFUSED_EVERY == 0)
			memset(t->dst.ram[0] + pg * 4096, 0xee, 64);
	}
	if (pos->frame)
		proxy_arm_frame(&t->px, conn, pos->frame, pos->from_sender);
	else
		proxy_arm(&t->px, conn, pos->bytes);
	int r = run_queue_all(t);
	return r == 0 ? tm_sender_sync(t->s, &t->err) : r;
}

/* The sender's pages sent as deltas and refused, summed over its channels; false if unread. */
static bool delta_totals(tm_sender *s, guint64 *deltas, guint64 *refused)
{
	for (unsigned i = 0; i < rig_channels; i++) {
		tm_delta_stats ds = { .size = sizeof(ds) };
		if (tm_sender_get_delta_stats(s, i, &ds) != 0)
			return false;
		*deltas += ds.pages;
		*refused += ds.refused;
	}
	return true;
}

/* One migration with one cut; the outcome, and why in *why when it failed. */
static outcome run_point(const role *ro, mode m, const position *pos, GString *why)
{
	run t;
	tm_live_config lc = { .size = sizeof(lc),
			      .resume_deadline_ms = env_ms("CUT_SWEEP_RESUME_MS") };

	if (delta_round) {
		lc.delta_cache_bytes = RIG_RAM;
		lc.delta_policy = TM_DELTA_ALWAYS;
	}

	rig_send_timeout_ms = env_ms("CUT_SWEEP_SEND_MS");
	rig_recv_timeout_ms = env_ms("CUT_SWEEP_RECV_MS");
	run_start(&t, &lc, env_ms("CUT_SWEEP_RESUME_MS"));
	run_fill_state(&t);
	g_mutex_lock(&t.px.lock);
	t.px.exact = true;
	t.px.half = m == M_HALF || m == M_FREEZE;
	t.px.half_recv = m == M_HALF_RECV || m == M_FREEZE;
	t.px.reset = m == M_RESET;
	g_mutex_unlock(&t.px.lock);
	if (delta_round) {
		/* armed after the first round (delta_second_round) */
	} else if (pos->frame) {
		proxy_arm_frame(&t.px, ro->conn, pos->frame, pos->from_sender);
	} else {
		proxy_arm(&t.px, ro->conn, pos->bytes);
	}

	int64_t t0 = g_get_monotonic_time();
	if (delta_round) {
		t.r = run_first_round(&t);
		if (t.r == 0)
			t.r = delta_second_round(&t, pos, ro->conn);
		if (t.r == 0)
			t.r = run_stop_and_finish(&t);
	} else {
		t.r = run_migrate(&t);
	}
	double ssecs = (double)(g_get_monotonic_time() - t0) / 1e6;
	rpeer_join(&t.p);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	unsigned cuts = proxy_cuts(&t.px);

	bool ok = t.r == 0 && t.p.ret == 0 && secs <= POINT_BOUND_S;
	if (ok)
		ok = same(&t.src, &t.dst) && t.p.states == 1;
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	tm_stats st = { 0 };
	if (ok && t.s && t.p.r) {
		ok = tm_sender_get_live_stats(t.s, &ss) == 0 &&
		     tm_receiver_get_live_stats(t.p.r, &rs) == 0 && ss.phase == TM_PHASE_COMPLETE;
		tm_receiver_get_stats(t.p.r, &st);
		ok = ok && (delta_round || st.pages == RIG_RAM / 4096);
	}
	/* A delta point must have moved deltas and had bases refused, or it tested nothing. */
	guint64 deltas = 0, refused = 0;
	if (ok && delta_round) {
		ok = delta_totals(t.s, &deltas, &refused) && deltas > 0 && refused > 0;
		if (!ok)
			g_string_append_printf(why, "deltas %" G_GUINT64_FORMAT
						    ", refused %" G_GUINT64_FORMAT "; ",
					       deltas, refused);
	}
	if (!ok) {
		g_string_append_printf(why,
				       "cuts %u, sender %d after %.2f s (%s), receiver %d after "
				       "%.2f s (%s), states %u, exact %s",
				       cuts, t.r, ssecs, t.err ? t.err->message : "done", t.p.ret,
				       t.p.secs, t.p.error ? t.p.error->message : "done", t.p.states,
				       t.r == 0 && t.p.ret == 0 ? (same(&t.src, &t.dst) ? "yes" : "NO")
								 : "-");
	} else {
		g_string_append_printf(why, "cuts %u, %.2f s, reconnects %" G_GUINT64_FORMAT "/%"
					    G_GUINT64_FORMAT,
				       cuts, secs, (guint64)ss.reconnects, (guint64)rs.reconnects);
		if (delta_round)
			g_string_append_printf(why, ", deltas %" G_GUINT64_FORMAT
						    ", refused %" G_GUINT64_FORMAT
						    ", pages %" G_GUINT64_FORMAT,
					       deltas, refused, (guint64)st.pages);
	}
	run_end(&t);
	rig_send_timeout_ms = rig_recv_timeout_ms = 20000;
	if (!ok)
		return O_FAIL;
	return cuts ? O_PASS : O_NOT_REACHED;
}

/* ---- postcopy: switched after one precopy round, a vCPU touching pages at the destination ---- */

#define PC_RAM (4u << 20)
#define PC_PAGE 4096u
#define PC_NPAGES (PC_RAM / PC_PAGE)
#define PC_STATE 4096u
#define PC_STRIDE 3u /* the vCPU touches every third page: the rest only the background brings */

static const block_spec pc_spec[] = { { "pc.ram", PC_RAM, PC_PAGE } };

typedef struct pdest {
	guest g;
	guest *src;
	int listen_fd;
	tm_receiver *r;
	GThread *thread, *vcpu;
	int ret;
	GError *error;
	double secs;
	uint8_t state[PC_STATE];
	unsigned states;
	uint64_t touched, bad;
} pdest;

/*
 * postcopy-attach: the VMMs' own sockets, as in precopy-attach. Both "VMMs" take the session's
 * PC_CONNECTIONS sockets themselves and give both sides the reconnect hook: the sender's dials
 * the proxy, the receiver's accepts on its listener.
 */
static bool pc_attach;
#define PC_CHANNELS 3u
#define PC_CONNECTIONS (PC_CHANNELS + 2) /* the data channels, control, urgent */

static int pc_receiver_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	pdest *d = opaque;
	(void)connection;
	return rig_accept_within(d->listen_fd, timeout_ms);
}

/* The destination VMM accepts the session's sockets (in any order) and hands them over. */
static int pc_dest_attach(pdest *d, unsigned timeout_ms)
{
	int fds[PC_CONNECTIONS];
	for (unsigned i = 0; i < PC_CONNECTIONS; i++) {
		fds[i] = rig_accept_within(d->listen_fd, timeout_ms);
		if (fds[i] < 0) {
			g_set_error(&d->error, TM_ERROR, -fds[i],
				    "the VMM accepted only %u of %u connections", i, PC_CONNECTIONS);
			for (unsigned j = 0; j < i; j++)
				close(fds[j]);
			return fds[i];
		}
	}
	return tm_receiver_attach(d->r, fds, PC_CONNECTIONS, &d->error);
}

static int pc_sender_hook(void *opaque, unsigned connection, unsigned timeout_ms)
{
	const char *pport = opaque;
	(void)connection;
	return tm_net_connect("127.0.0.1", pport, timeout_ms, -1, NULL);
}

/*
 * The source VMM dials in tm_sender_connect()'s order (data 0, control, data 1, data 2, urgent),
 * each once the proxy took the one before, so the proxy's indices are connect mode's; fds[]
 * holds the data channels, then control, then urgent.
 */
static int pc_sender_attach(tm_sender *s, cut_proxy *px, const char *pport, GError **err)
{
	static const unsigned order[PC_CONNECTIONS] = { 0, PC_CHANNELS, 1, 2, PC_CHANNELS + 1 };
	int fds[PC_CONNECTIONS];
	for (unsigned k = 0; k < PC_CONNECTIONS; k++) {
		unsigned before = proxy_get(px, &px->accepted);
		fds[order[k]] = tm_net_connect("127.0.0.1", pport, 5000, -1, err);
		g_assert_cmpint(fds[order[k]], >=, 0);
		for (int w = 0; w < 5000 && proxy_get(px, &px->accepted) == before; w++)
			g_usleep(1000);
	}
	return tm_sender_attach(s, fds, PC_CONNECTIONS, err);
}

static void pc_keep_state(void *opaque, const char *name, const uint8_t *data, size_t len)
{
	pdest *d = opaque;
	if (!strcmp(name, "cpu0") && len == PC_STATE) {
		memcpy(d->state, data, PC_STATE);
		d->states++;
	}
}

/* The guest runs: each touch of a missing page blocks in its userfault until it is placed. */
static gpointer pc_vcpu(gpointer data)
{
	pdest *d = data;
	for (uint64_t p = 0; p < PC_NPAGES; p += PC_STRIDE) {
		const volatile uint8_t *page = d->g.ram[0] + p * PC_PAGE;
		(void)page[PC_PAGE / 2];
		d->touched++;
		if (memcmp((const void *)page, d->src->ram[0] + p * PC_PAGE, PC_PAGE) != 0)
			d->bad++;
	}
	return NULL;
}

static gpointer pc_dest_thread(gpointer data)
{
	pdest *d = data;
	tm_receiver_config cfg = { .io_backend = recv_io, .tls_creds_dir = tls_dir,
				   .timeout_ms = env_ms("CUT_SWEEP_RECV_MS") };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true, .uffd_user_mode_only = true,
			      .resume_deadline_ms = env_ms("CUT_SWEEP_RESUME_MS") };

	if (pc_attach) {
		lc.reconnect = pc_receiver_hook;
		lc.reconnect_opaque = d;
	}
	d->ret = tm_receiver_new(&cfg, &d->r, &d->error);
	if (d->ret >= 0)
		d->ret = tm_receiver_set_live(d->r, &lc, &d->error);
	if (d->ret >= 0)
		d->ret = pc_attach ? pc_dest_attach(d, cfg.timeout_ms ? cfg.timeout_ms : 20000)
				   : tm_receiver_accept(d->r, d->listen_fd, &d->error);
	int64_t t0 = g_get_monotonic_time();
	if (d->ret >= 0)
		d->ret = tm_receiver_start(d->r, d->g.layout, d->g.tags, &d->error);
	while (d->ret >= 0 && (d->ret = tm_receiver_wait(d->r, &d->error)) == 1) {
		d->ret = receiver_read_states(d->r, pc_keep_state, d, &d->error);
		if (d->ret == 0 && !d->vcpu && tm_receiver_phase(d->r) == TM_PHASE_POSTCOPY)
			d->vcpu = g_thread_new("vcpu", pc_vcpu, d);
	}
	d->secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	return NULL;
}

/* One postcopy migration with one cut (the urgent connection is the proxy's accept index 4). */
static outcome run_point_postcopy(const role *ro, mode m, const position *pos, GString *why)
{
	g_autoptr(GError) err = NULL;
	guest src;
	pdest d = { 0 };
	cut_proxy px;
	tm_sender *s = NULL;
	uint8_t state[PC_STATE];

	guest_init(&src, pc_spec, 1, true);
	guest_fill(&src);
	guest_init(&d.g, pc_spec, 1, true);
	d.src = &src;
	unsigned port = 0;
	d.listen_fd = tm_listen("127.0.0.1", "0", &port, NULL);
	g_assert_cmpint(d.listen_fd, >=, 0);
	g_autofree char *rport = g_strdup_printf("%u", port);
	d.thread = g_thread_new("dest", pc_dest_thread, &d);
	g_autofree char *pport = proxy_start(&px, rport);
	g_mutex_lock(&px.lock);
	px.exact = true;
	px.half = m == M_HALF || m == M_FREEZE;
	px.half_recv = m == M_HALF_RECV || m == M_FREEZE;
	px.reset = m == M_RESET;
	g_mutex_unlock(&px.lock);
	if (pos->frame)
		proxy_arm_frame(&px, ro->conn, pos->frame, pos->from_sender);
	else
		proxy_arm(&px, ro->conn, pos->bytes);

	tm_sender_config cfg = { .io_backend = send_io, .tls_creds_dir = tls_dir,
				 .tls_hostname = pc_attach ? "127.0.0.1" : NULL, .channels = PC_CHANNELS,
				 .timeout_ms = env_ms("CUT_SWEEP_SEND_MS"),
				 .packet_size = 64u << 10, .chunk_size = 64u << 10 };
	tm_live_config lc = { .size = sizeof(lc), .postcopy = true,
			      .resume_deadline_ms = env_ms("CUT_SWEEP_RESUME_MS") };
	if (pc_attach) {
		lc.reconnect = pc_sender_hook;
		lc.reconnect_opaque = pport;
	}
	g_assert_cmpint(tm_sender_new(src.layout, src.tags, &cfg, &s, &err), ==, 0);
	g_assert_cmpint(tm_sender_set_live(s, &lc, &err), ==, 0);
	for (unsigned i = 0; i < PC_STATE; i++)
		state[i] = (uint8_t)rnd();
	uint64_t bm[PC_NPAGES / 64];
	memset(bm, 0xff, sizeof(bm));

	int64_t t0 = g_get_monotonic_time();
	int r = pc_attach ? pc_sender_attach(s, &px, pport, &err)
			  : tm_sender_connect(s, "127.0.0.1", pport, &err);
	if (r == 0)
		r = tm_sender_queue_bitmap(s, 0, bm, 0, PC_NPAGES, &err);
	if (r == 0)
		r = tm_sender_sync(s, &err);
	if (r == 0)
		r = tm_sender_queue_bitmap(s, 0, bm, 0, PC_NPAGES, &err);
	if (r == 0)
		r = tm_sender_set_rate_limit(s, 8u << 20); /* the background lasts ~0.5 s */
	if (r == 0)
		r = tm_sender_start_postcopy(s, &err);
	if (r == 0)
		r = tm_sender_put_state(s, "cpu0", state, PC_STATE, TM_STATE_COPY, &err);
	if (r == 0)
		r = tm_sender_finish(s, &err);
	double ssecs = (double)(g_get_monotonic_time() - t0) / 1e6;
	g_thread_join(d.thread);
	double secs = (double)(g_get_monotonic_time() - t0) / 1e6;
	unsigned cuts = proxy_cuts(&px);
	bool ok = r == 0 && d.ret == 0 && secs <= POINT_BOUND_S;
	if (ok && d.vcpu) {
		g_thread_join(d.vcpu); /* every page is placed: it cannot block */
		d.vcpu = NULL;
	}
	ok = ok && d.bad == 0 && same(&src, &d.g) && d.states == 1 &&
	     memcmp(d.state, state, PC_STATE) == 0 && tm_sender_phase(s) == TM_PHASE_COMPLETE &&
	     tm_receiver_phase(d.r) == TM_PHASE_COMPLETE;
	if (!ok) {
		g_string_append_printf(why,
				       "cuts %u, sender %d after %.2f s phase %d (%s), receiver %d "
				       "after %.2f s phase %d (%s), states %u, vcpu touched %"
				       G_GUINT64_FORMAT " bad %" G_GUINT64_FORMAT ", exact %s",
				       cuts, r, ssecs, tm_sender_phase(s), err ? err->message : "done",
				       d.ret, d.secs, d.r ? (int)tm_receiver_phase(d.r) : -1,
				       d.error ? d.error->message : "done", d.states,
				       (guint64)d.touched, (guint64)d.bad,
				       r == 0 && d.ret == 0 ? (same(&src, &d.g) ? "yes" : "NO") : "-");
		/* A vCPU may be blocked on a page that never came: the child process ends here. */
		proxy_stop(&px);
		return O_FAIL;
	}
	tm_live_stats ss = { .size = sizeof(ss) }, rs = { .size = sizeof(rs) };
	(void)tm_sender_get_live_stats(s, &ss);
	(void)tm_receiver_get_live_stats(d.r, &rs);
	g_string_append_printf(why,
			       "cuts %u, %.2f s, reconnects %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT
			       ", requests %" G_GUINT64_FORMAT,
			       cuts, secs, (guint64)ss.reconnects, (guint64)rs.reconnects,
			       (guint64)rs.requests);
	tm_sender_free(s);
	tm_receiver_free(d.r);
	close(d.listen_fd);
	proxy_stop(&px);
	g_clear_error(&d.error);
	guest_fini(&src);
	guest_fini(&d.g);
	return cuts ? O_PASS : O_NOT_REACHED;
}

/*
 * run_point() in a child process: a point that hangs (or aborts) fails with what it said so far
 * instead of ending the sweep; the child is killed after POINT_KILL_S.
 */
static outcome run_isolated(bool postcopy, const role *ro, mode m, const position *pos,
				GString *why)
{
	int fds[2];
	g_assert_cmpint(pipe(fds), ==, 0);
	fflush(NULL);
	pid_t pid = fork();
	g_assert_cmpint(pid, >=, 0);
	if (pid == 0) {
		close(fds[0]);
		g_autoptr(GString) line = g_string_new(NULL);
		outcome o = postcopy ? run_point_postcopy(ro, m, pos, line)
				     : run_point(ro, m, pos, line);
		char c = (char)('0' + o);
		(void)!write(fds[1], &c, 1);
		(void)!write(fds[1], line->str, line->len);
		_exit(0);
	}
	close(fds[1]);
	GString *got = g_string_new(NULL);
	int64_t until = g_get_monotonic_time() + (int64_t)POINT_KILL_S * 1000000;
	bool killed = false;
	for (;;) {
		int64_t left = until - g_get_monotonic_time();
		if (left <= 0) {
			kill(pid, SIGKILL);
			killed = true;
			break;
		}
		struct pollfd pf = { .fd = fds[0], .events = POLLIN };
		if (poll(&pf, 1, (int)(left / 1000) + 1) <= 0)
			continue;
		char buf[4096];
		ssize_t n = read(fds[0], buf, sizeof(buf));
		if (n <= 0)
			break;
		g_string_append_len(got, buf, n);
	}
	close(fds[0]);
	int status = 0;
	(void)waitpid(pid, &status, 0);
	outcome o = O_FAIL;
	if (killed)
		g_string_append_printf(why, "HUNG: killed after %d s", POINT_KILL_S);
	else if (got->len == 0)
		g_string_append_printf(why, "CRASHED: the point's process ended (status 0x%x)",
				       status);
	else {
		o = (outcome)(got->str[0] - '0');
		g_string_append(why, got->str + 1);
	}
	g_string_free(got, TRUE);
	return o;
}

static void sweep(bool postcopy, bool attach, bool delta)
{
	const char *only = g_getenv("CUT_SWEEP_ONLY");
	g_autoptr(GPatternSpec) pat = only && *only ? g_pattern_spec_new(only) : NULL;
	tally tl = { .failures = g_string_new(NULL) };
	g_autoptr(GString) line = g_string_new(NULL);

	if (g_strcmp0(g_getenv("CUT_SWEEP"), "1") != 0) {
		g_test_skip("the cut sweep is long: set CUT_SWEEP=1 (CUT_SWEEP_ONLY=<glob> to select "
			    "points)");
		g_string_free(tl.failures, TRUE);
		return;
	}
	if (g_strcmp0(g_getenv("CUT_SWEEP_ALL_PAIRS"), "1") != 0 &&
	    (strcmp(send_io, "io_uring") != 0 || strcmp(recv_io, "io_uring") != 0)) {
		g_test_skip("sweeps the io_uring pairs only unless CUT_SWEEP_ALL_PAIRS=1");
		g_string_free(tl.failures, TRUE);
		return;
	}
	int64_t t0 = g_get_monotonic_time();
	if (postcopy && !uffd_usable()) {
		g_string_free(tl.failures, TRUE);
		return; /* skipped with the reason */
	}
	rig_attach = attach; /* read by run_start() in each point's process */
	pc_attach = attach;
	delta_round = delta;
	const char *kind = postcopy ? (attach ? "postcopy-attach" : "postcopy")
			   : delta  ? "precopy-delta"
			   : attach ? "precopy-attach"
				    : "precopy";
	const role *rl = postcopy ? pc_roles : roles;
	size_t nr = postcopy ? G_N_ELEMENTS(pc_roles) : G_N_ELEMENTS(roles);
	const position *ps = postcopy ? pc_positions : delta ? delta_positions : positions;
	size_t npos = postcopy ? G_N_ELEMENTS(pc_positions)
		      : delta  ? G_N_ELEMENTS(delta_positions)
			       : G_N_ELEMENTS(positions);
	for (size_t ri = 0; ri < nr; ri++) {
		for (size_t pi = 0; pi < npos; pi++) {
			for (int m = 0; m < M_COUNT; m++) {
				const position *pos = &ps[pi];
				g_autofree char *name = g_strdup_printf(
					"%s/%s/%s/%s", kind, rl[ri].name, pos->name, mode_name[m]);
				if ((pat && !g_pattern_spec_match_string(pat, name)) ||
				    (pos->frame && tls_dir)) {
					tl.skipped++;
					continue;
				}
				g_string_truncate(line, 0);
				outcome o = run_isolated(postcopy, &rl[ri], (mode)m, pos, line);
				tl.n[o]++;
				static const char *const oname[] = { "pass", "not-reached",
								     "FAIL" };
				g_test_message("%-36s %-11s %s", name, oname[o], line->str);
				if (o == O_FAIL)
					g_string_append_printf(tl.failures, "  %s%s: %s\n",
							       tls_dir ? "tls " : "", name,
							       line->str);
			}
		}
	}
	g_test_message("cut sweep (%s, %s%s-to-%s, %.0f s): %u passed, %u not reached (completed "
		       "before the cut), %u failed, %u skipped",
		       kind, tls_dir ? "tls-" : "", send_io, recv_io,
		       (double)(g_get_monotonic_time() - t0) / 1e6, tl.n[O_PASS],
		       tl.n[O_NOT_REACHED], tl.n[O_FAIL], tl.skipped);
	if (tl.n[O_FAIL]) {
		g_test_message("failed points:\n%s", tl.failures->str);
		g_test_fail_printf("%u cut points failed", tl.n[O_FAIL]);
	}
	g_string_free(tl.failures, TRUE);
	rig_attach = false;
	pc_attach = false;
	delta_round = false;
}

static void test_sweep_precopy(void)
{
	sweep(false, false, false);
}

static void test_sweep_precopy_attach(void)
{
	sweep(false, true, false);
}

static void test_sweep_precopy_delta(void)
{
	sweep(false, false, true);
}

static void test_sweep_postcopy(void)
{
	sweep(true, false, false);
}

static void test_sweep_postcopy_attach(void)
{
	sweep(true, true, false);
}

int main(int argc, char **argv)
{
	static const session_test tests[] = {
		{ "cut-sweep/precopy", test_sweep_precopy, false },
		{ "cut-sweep/precopy-attach", test_sweep_precopy_attach, false },
		{ "cut-sweep/precopy-delta", test_sweep_precopy_delta, false },
		{ "cut-sweep/postcopy", test_sweep_postcopy, false },
		{ "cut-sweep/postcopy-attach", test_sweep_postcopy_attach, false },
	};
	return session_tests_run(&argc, &argv, tests, G_N_ELEMENTS(tests));
}
