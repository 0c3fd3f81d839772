/* SPDX-License-Identifier: MIT */
/*
 * The sender's setup: its connections opened (tm_sender_connect dials them, tm_sender_attach
 * takes them from the VMM) in the order the receiver expects (design 2.2), each with its TLS
 * handshake and HELLO, then the HELLO_ACKs, and the workers started with their buffers. A
 * setup that fails closes what it opened; a cancel's reason explains it best.
 */
#include <errno.h>
#include <unistd.h>
#include <string.h>

#include "session/resume.h"
#include "session/delta.h"
#include "session/session-internal.h"
#include "tagmig/error.h"

/*
 * Index into fds[] (data channels 0..N-1, then control, then urgent) of the k-th connection to
 * set up: data 0 (the full TLS handshake), control, data 1..N-1, urgent (design 2.2).
 */
static unsigned setup_index(const tm_sender *s, unsigned n, unsigned k)
{
	if (n == s->nch || k == 0)
		return k;
	if (k == 1)
		return s->nch;
	return k <= s->nch ? k - 1 : k;
}

/* Connections of the session: data channels, control (protocol 2), urgent (postcopy offered). */
static unsigned connections(const tm_sender *s)
{
	if (s->wire != TM_WIRE_VERSION_2)
		return s->nch;
	return s->nch + TM_V2_EXTRA_CONNECTIONS + (s->pc.offered ? 1u : 0u);
}

/* A setup that failed: a cancel's reason explains it best (it made the I/O fail). */
static int fail_setup(tm_sender *s, GError **error)
{
	s->state = S_DONE;
	g_mutex_lock(&s->lock);
	s->quit = true;
	g_mutex_unlock(&s->lock);
	tm_urgent_stop(s); /* its return thread, if it started, before its connection closes */
	g_mutex_lock(&s->lock);
	/* Under the lock: a cancel shuts down what it sees open, never a closed fd. */
	for (unsigned i = 0; i < s->nch; i++)
		tm_chan_close(&s->chans[i].ch);
	tm_chan_close(&s->ctl);
	if (s->failure.cancelled && error) {
		g_clear_error(error);
		*error = g_error_copy(s->failure.error);
	}
	g_mutex_unlock(&s->lock);
	tm_events_set_phase(&s->events, TM_PHASE_FAILED);
	return error && *error ? -(*error)->code : -EIO;
}

/* Setup: whether a cancel came (it saw the connections opened so far: see tm_sender_cancel). */
static bool setup_cancelled(tm_sender *s)
{
	g_mutex_lock(&s->lock);
	bool c = s->failure.cancelled;
	g_mutex_unlock(&s->lock);
	return c;
}

/*
 * Opens connection fd as data channel id, as the control connection (id == nch) or the urgent
 * one (id == nch + 1): TLS, then its HELLO. Returns 0 or -errno (fd is closed either way on
 * failure).
 */
int tm_sender_open_connection(tm_sender *s, int fd, unsigned id, GError **error)
{
	bool urgent = id == s->nch + 1;
	bool control = id == s->nch || urgent;
	tm_chan *ch = urgent ? &s->pc.urg : id == s->nch ? &s->ctl : &s->chans[id].ch;
	/* Control and urgent messages are latency-bound: always the sockets byte mover. */
	tm_io_config ioc = { .timeout_ms = s->cfg.timeout_ms,
			     .depth = control ? 1 : s->cfg.queue_depth,
			     .zerocopy = control ? -1 : s->cfg.tuning.zerocopy };
	int r = tm_chan_open(ch, fd, control ? 0 : id, control ? &tm_transport_socket : s->io,
			     &ioc, error);
	/* A cancel that came before it saw ch->fd under the lock must still stop the setup. */
	if (r >= 0 && setup_cancelled(s)) {
		g_set_error(error, TM_ERROR, ECANCELED, "cancelled");
		return -ECANCELED;
	}
	if (r >= 0 && control)
		tm_chan_set_control(ch, urgent ? "urgent" : "control");
	if (r >= 0) /* the TLS handshake has a total deadline, as the receiver's (accept.c) */
		tm_io_set_deadline(ch->io, tm_setup_handshake_deadline(s));
	if (r >= 0 && s->tls && (r = tm_tls_wrap(s->tls, &ch->io, error)) < 0)
		tm_chan_close(ch);
	if (r < 0)
		return r;
	tm_io_set_deadline(ch->io, 0);
	ch->version = s->wire;
	tm_conn_role role = urgent ? TM_ROLE_URGENT : control ? TM_ROLE_CONTROL : TM_ROLE_DATA;
	return tm_sender_send_hello(s, ch, role, error);
}

/*
 * A later connection of a protocol 2 session failed to set up: a protocol 1 receiver may have
 * refused channel 0's HELLO already (and given up the session, so nothing answers the rest).
 * Its ERROR on channel 0 explains more than the failure at hand.
 */
static void explain_by_channel0(tm_sender *s, GError **error)
{
	g_autoptr(GError) why = NULL;
	tm_chan *ch0 = &s->chans[0].ch;

	if (s->wire != TM_WIRE_VERSION_2 || ch0->fd < 0)
		return;
	ch0->version = 0; /* the handshake: a protocol 1 ERROR is readable */
	int r = tm_chan_peer_error(ch0, 0, "receiver refused", &why);
	ch0->version = s->wire;
	if (r < 0 && ch0->peer_version == TM_WIRE_VERSION_1) {
		g_clear_error(error);
		tm_sender_v1_refusal(ch0, why->message, error);
	}
}

/*
 * How many work items a channel's lists hold from setup on: a round of isolated pages (one item
 * each) of up to 1/16 of the guest, striped over the channels, at most 64 Ki items (1.5 MiB) a
 * list. A round past that grows them (and pays its page faults) once.
 */
static guint work_items(const tm_sender *s)
{
	uint64_t pages = 0;
	for (unsigned b = 0; b < s->hello.block_count; b++)
		pages += s->hello.blocks[b].npages;
	return (guint)MIN(pages / 16 / s->nch + 64, (uint64_t)1 << 16);
}

void tm_work_presize(GArray *a, guint items)
{
	g_array_set_size(a, items);
	memset(a->data, 0, (size_t)items * g_array_get_element_size(a));
	g_array_set_size(a, 0);
}

int tm_sender_attach(tm_sender *s, const int *fds, unsigned n, GError **error)
{
	g_autoptr(GError) local = NULL;
	int r;

	if (!error)
		error = &local; /* a setup redial quotes its cause (resume-setup.c) */

	if (s->state != S_NEW) {
		for (unsigned i = 0; i < n; i++)
			close(fds[i]);
		g_set_error(error, TM_ERROR, EBUSY, "the session is already open");
		return -EBUSY;
	}
	/* tagmig 0.1's contract for this call: one socket per channel is protocol 1. */
	if (!s->live_set && n == s->nch)
		s->wire = TM_WIRE_VERSION_1;
	unsigned conns = connections(s);
	if (n != conns) {
		for (unsigned i = 0; i < n; i++)
			close(fds[i]);
		if (s->wire == TM_WIRE_VERSION_2)
			g_set_error(error, TM_ERROR, EINVAL,
				    "%u sockets given for %u channels: protocol 2 needs %u (the data "
				    "channels, then the control connection%s)",
				    n, s->nch, conns,
				    s->pc.offered ? ", then the urgent one (postcopy)" : "");
		else
			g_set_error(error, TM_ERROR, EINVAL, "%u sockets given for %u channels", n,
				    s->nch);
		return -EINVAL;
	}
	s->hello.version = s->wire;
	s->hello.features = (s->hello.features & ~TM_FEATURES_COMPRESS) |
			    tm_zsend_offer(&s->live, s->wire) | tm_dsend_offer(&s->live, s->wire) |
			    /* A VMM's own sockets too: counts start at their bases (tm_chan.base). */
			    (s->wire == TM_WIRE_VERSION_2 ? TM_FEATURE_LINK_CHECK : 0u);
	if (s->live.reconnect)
		tm_resume_send_offer(s, NULL, NULL); /* the VMM's hook reconnects (resume.h) */
	if (s->tls_creds_dir && !s->tls) {
		if (!s->tls_hostname) {
			for (unsigned i = 0; i < n; i++)
				close(fds[i]);
			g_set_error(error, TM_ERROR, EINVAL,
				    "TLS needs the receiver's name (tls_hostname) with attached sockets");
			return fail_setup(s, error);
		}
		r = tm_tls_ctx_new(TM_TLS_CLIENT, s->tls_creds_dir, s->tls_hostname, &s->tls, error);
		if (r < 0) {
			for (unsigned i = 0; i < n; i++)
				close(fds[i]);
			return fail_setup(s, error);
		}
		tm_tls_ctx_tune(s->tls, &s->cfg.tuning);
	}
	/*
	 * Channel by channel: connect-level setup, TLS (channel 0 first: it does the full
	 * handshake, the others resume its session), then HELLO. A receiver's accept and attach
	 * handshake several at once, so nothing waits for a step the peer has not reached. The
	 * answers are collected after every HELLO is out.
	 */
	/*
	 * Protocol 2 order: data 0 (the full TLS handshake), control, data 1..N-1; fds[] has the
	 * control connection last. A receiver accepts them in any order.
	 */
	GError *broke[TM_MAX_CHANNELS + TM_V2_EXTRA_CONNECTIONS + 1] = { NULL };
	for (unsigned k = 0; k < n; k++) {
		unsigned idx = setup_index(s, n, k);
		r = tm_sender_open_connection(s, fds[idx], idx, error);
		/* Cut before any HELLO_ACK (or silent past its handshake deadline): dialled again
		 * once the others are open, so they are not held behind it (resume-setup.c). */
		if (r < 0 && !setup_cancelled(s) && tm_setup_redial_wanted(s, -r) &&
		    !(k > 0 && s->chans[0].ch.io && tm_io_readable(s->chans[0].ch.io))) {
			/* The rest opens within the budget: a receiver that answers none ends it. */
			tm_setup_budget_start(s);
			broke[idx] = g_steal_pointer(error);
			continue;
		}
		if (r < 0 || setup_cancelled(s)) {
			tm_setup_redial_all(s, broke, n, NULL); /* frees them */
			for (unsigned j = k + 1; j < n; j++)
				close(fds[setup_index(s, n, j)]);
			if (k > 0)
				explain_by_channel0(s, error);
			return fail_setup(s, error);
		}
	}
	if (tm_setup_redial_all(s, broke, n, error) < 0 || tm_sender_await_acks(s, error) < 0 ||
	    setup_cancelled(s))
		return fail_setup(s, error);
	for (unsigned i = 0; i < s->nch; i++)
		s->chans[i].ch.version = s->wire;
	if (s->wire == TM_WIRE_VERSION_2) {
		tm_chan *data[TM_MAX_CHANNELS];
		for (unsigned i = 0; i < s->nch; i++)
			data[i] = &s->chans[i].ch;
		if (tm_control_start(&s->control, &s->ctl, data, s->nch, s->cfg.timeout_ms, error) < 0 ||
		    tm_urgent_start(s, error) < 0)
			return fail_setup(s, error);
	}
	__atomic_store_n(&s->wire_done, s->wire, __ATOMIC_RELEASE);

	guint items = work_items(s);
	tm_resume_send_presize(s, items);
	for (unsigned i = 0; i < s->nch; i++) {
		send_chan *c = &s->chans[i];
		tm_work_presize(c->pending, items);
		tm_work_presize(c->work, items);
		tm_work_presize(s->staging[i], items);
		c->pkts = g_new0(tm_packet, c->ch.depth);
		for (unsigned k = 0; k < c->ch.depth; k++) {
			tm_packet_init(&c->pkts[k], s->hello.packet_size);
			c->pkts[k].version = s->wire;
		}
		c->tagraw = g_malloc(s->hello.packet_size / TM_TAG_GRANULE);
		__atomic_store_n(&c->z, tm_zsend_new(&s->live, s->zagreed, s->hello.packet_size),
				 __ATOMIC_RELEASE);
		if (s->dagreed)
			__atomic_store_n(&c->ds,
					 tm_dsend_new(s->live.delta_cache_bytes, s->live.delta_policy,
						      (s->zagreed & TM_FEATURE_ZSTD) != 0,
						      s->hello.packet_size),
					 __ATOMIC_RELEASE);
		g_autofree char *name = g_strdup_printf("tm-send-%u", i);
		c->thread = g_thread_new(name, tm_send_worker, c);
	}
	s->state = S_OPEN;
	g_mutex_lock(&s->lock);
	s->t_start = tm_now_us();
	g_mutex_unlock(&s->lock);
	tm_events_set_phase(&s->events, TM_PHASE_PRECOPY);
	return 0;
}

int tm_sender_connect(tm_sender *s, const char *host, const char *port, GError **error)
{
	int fds[TM_MAX_CHANNELS + TM_V2_EXTRA_CONNECTIONS + 1];
	unsigned n = connections(s);

	if (s->state != S_NEW) {
		g_set_error(error, TM_ERROR, EBUSY, "the session is already open");
		return -EBUSY;
	}
	if (s->tls_creds_dir && !s->tls_hostname)
		s->tls_hostname = g_strdup(host); /* the name we connect to is the name to check */
	/*
	 * Connected in the order attach() sets them up (data 0, control, data 1..N-1; fds[] has
	 * control last): a receiver handshakes several at once (accept.c), but one of an older
	 * version took attached sockets one TLS handshake at a time, in arrival order.
	 */
	for (unsigned k = 0; k < n; k++) {
		unsigned i = setup_index(s, n, k);
		int fd = tm_net_connect(host, port, s->cfg.timeout_ms, s->events.cancel_fd, error);
		if (fd < 0) {
			if (i == s->nch + 1)
				g_prefix_error(error, "urgent: ");
			else if (i == s->nch)
				g_prefix_error(error, "control: ");
			else
				g_prefix_error(error, "channel %u: ", i);
			for (unsigned j = 0; j < k; j++)
				close(fds[setup_index(s, n, j)]);
			return fail_setup(s, error);
		}
		fds[i] = fd;
	}
	/* attach() would take N sockets without set_live() for protocol 1: say which it is. */
	s->live_set = true;
	tm_resume_send_offer(s, host, port); /* where a broken channel reconnects (resume.h) */
	return tm_sender_attach(s, fds, n, error);
}
