/* SPDX-License-Identifier: MIT */
/*
 * The receiving side of a session. One worker per channel validates every packet with the codec
 * before it touches guest RAM, reads page data straight into guest RAM at the validated offsets,
 * sets the tags through the tag store and only then marks the pages present.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ram/ram-internal.h"
#include "session/resume.h"
#include "session/postcopy-recv.h"
#include "session/delta.h"
#include "session/session-internal.h"
#include "tagmig/error.h"
#include "tagstore/tagstore-internal.h"

static int control_tick(void *owner, GError **error)
{
	return tm_pc_recv_control_tick(owner, error);
}

static void control_fail(void *owner, GError *err, bool from_peer)
{
	tm_receiver_fail(owner, NULL, err, from_peer);
}

/*
 * The control thread's END_ACK goes after every data channel's (design 2.4), and only for a
 * complete session (complete.c): otherwise its ERROR tells the sender which pages are missing.
 */
static int data_end(void *owner, GError **error)
{
	tm_receiver *r = owner;

	g_mutex_lock(&r->lock);
	bool quit = r->quit, ended = r->ended == r->nch;
	g_mutex_unlock(&r->lock);
	if (quit) {
		g_set_error(error, TM_ERROR, ECANCELED, "control: stopped");
		return -ECANCELED;
	}
	if (tm_pc_recv_agreed(r))
		return tm_pc_recv_data_end(r, ended, error);
	if (!ended)
		return 0;
	int ret = tm_receiver_check_complete(r, error);
	return ret < 0 ? ret : 1;
}

int tm_receiver_new(const tm_receiver_config *cfg, tm_receiver **ret, GError **error)
{
	tm_receiver_config c = cfg ? *cfg : (tm_receiver_config){ 0 };
	const tm_transport_ops *io;

	if (!c.timeout_ms)
		c.timeout_ms = 60000;
	g_autofree char *note = NULL;
	int r = tm_transport_lookup(c.io_backend, &io, &note, error);
	if (r < 0)
		return r;
	g_autoptr(tm_tls_ctx) tls = NULL;
	if (c.tls_creds_dir &&
	    (r = tm_tls_ctx_new(TM_TLS_SERVER, c.tls_creds_dir, NULL, &tls, error)) < 0)
		return r;
	if (tls)
		tm_tls_ctx_tune(tls, &c.tuning);
	if (c.tls_authz && !tls) {
		g_set_error(error, TM_ERROR, EINVAL,
			    "an allow-list of senders (tls_authz) needs TLS (tls_creds_dir)");
		return -EINVAL;
	}
	if (c.tls_authz && (r = tm_tls_ctx_set_authz(tls, c.tls_authz, error)) < 0)
		return r;
	tm_receiver *rc = g_new0(tm_receiver, 1);
	rc->io_note = g_steal_pointer(&note);
	rc->tls = g_steal_pointer(&tls);
	rc->cfg = c;
	rc->cfg.io_backend = NULL;    /* not owned; io holds the choice */
	rc->cfg.tls_creds_dir = NULL; /* not owned; tls holds what it needs */
	rc->cfg.tls_authz = NULL;     /* likewise (copied into tls) */
	rc->io = io;
	rc->ctl.fd = -1;
	for (unsigned k = 0; k < TM_HS_SLOTS; k++)
		rc->setup_fds[k] = -1;
	tm_live_config dflt = { .size = sizeof(dflt) };
	tm_live_config_load(&dflt, false, &rc->live, NULL);
	g_mutex_init(&rc->lock);
	g_cond_init(&rc->cond);
	g_cond_init(&rc->stop);
	rc->events.fd = rc->events.cancel_fd = -1;
	rc->control = (tm_control){ .sender = false, .owner = rc, .lock = &rc->lock,
				    .cond = &rc->cond, .quit = &rc->quit, .failure = &rc->failure,
				    .fail = control_fail, .data_end = data_end,
				    .ready = tm_receiver_send_ready, .wake_fd = -1, .end_fd = -1,
				    .postcopy = tm_pc_recv_postcopy_msg, .tick = control_tick,
				    .link_dead = tm_resume_recv_link_dead };
	rc->urg.fd = -1;
	if ((r = tm_events_init(&rc->events, error)) < 0 ||
	    (r = tm_control_init(&rc->control, error)) < 0) {
		tm_receiver_free(rc);
		return r;
	}
	*ret = rc;
	return 0;
}

int tm_receiver_set_live(tm_receiver *r, const tm_live_config *cfg, GError **error)
{
	tm_live_config c;

	if (r->state != R_NEW) {
		g_set_error(error, TM_ERROR, EBUSY,
			    "tm_receiver_set_live() after accept: the session is agreed already");
		return -EBUSY;
	}
	int ret = tm_live_config_load(cfg, false, &c, error);
	if (ret < 0 || (ret = tm_receiver_load_state_names(r, cfg, error)) < 0)
		return ret;
	/* Postcopy: the userfaultfd now, so that a refusal comes with its reason before accept. */
	r->pc_refused = 0;
	if (c.postcopy && (ret = tm_pc_recv_setup(r, &c, error)) < 0)
		return ret;
	if (!c.postcopy)
		tm_pc_recv_free(r);
	r->live = c;
	return 0;
}

unsigned tm_receiver_wire_version(tm_receiver *r)
{
	return __atomic_load_n(&r->wire_done, __ATOMIC_ACQUIRE);
}

int tm_receiver_get_session_id(tm_receiver *r, uint8_t ret[16])
{
	/* wire_done is published after the HELLO that carries the id was stored. */
	if (!__atomic_load_n(&r->wire_done, __ATOMIC_ACQUIRE))
		return -EBADFD;
	memcpy(ret, r->hello.session_id, sizeof(r->hello.session_id));
	return 0;
}

/* Tells every connected channel why we give up (best effort) and closes it. */
static void abort_channels(tm_receiver *r, int code, const char *message)
{
	for (unsigned i = 0; r->chans && i <= r->nch + 1; i++) {
		tm_chan *ch = i < r->nch ? &r->chans[i].ch : i == r->nch ? &r->ctl : &r->urg;
		if (ch->fd < 0)
			continue;
		tm_chan_send_error(ch, code, message);
		/* Under the lock: a cancel shuts down what it sees open, never a closed fd. */
		g_mutex_lock(&r->lock);
		tm_chan_close(ch);
		g_mutex_unlock(&r->lock);
	}
	tm_events_set_phase(&r->events, TM_PHASE_FAILED);
}

int tm_receiver_abort(tm_receiver *r, int code, const char *message)
{
	if (r->state == R_RUNNING) {
		/* Workers and the control thread own the channels now: stop them instead. Like a
		 * cancel (1.7), the VMM's decision: FAILED, never POSTCOPY_PAUSED. */
		g_mutex_lock(&r->lock);
		r->failure.cancelled = r->failure.cancelled || !r->failure.error;
		g_mutex_unlock(&r->lock);
		tm_receiver_fail(r, NULL, g_error_new_literal(TM_ERROR, code, message), false);
		return 0;
	}
	abort_channels(r, code, message);
	r->state = R_DONE;
	return 0;
}

static int accept_fail(tm_receiver *r, GError **error)
{
	/* A cancel made the setup fail: its reason is the one to report. */
	g_mutex_lock(&r->lock);
	if (r->failure.cancelled) {
		g_clear_error(error);
		*error = g_error_copy(r->failure.error);
	}
	r->quit = true;
	g_mutex_unlock(&r->lock);
	g_autofree char *msg = g_strdup(*error ? (*error)->message : "setup failed");
	abort_channels(r, *error ? (*error)->code : EIO, msg);
	r->state = R_DONE;
	return *error ? -(*error)->code : -EIO;
}

/* The connections of the session not placed yet, for the accept's timeout: "channel 2,
 * control". Strangers, a HELLO lost on the way: the sender cannot tell which one it was. */
static char *missing_connections(const tm_receiver *r)
{
	GString *m = g_string_new(NULL);
	unsigned n = tm_receiver_connections(r);

	for (unsigned i = 0; r->chans && i < n; i++) {
		bool used = i < r->nch ? r->chans[i].used : i == r->nch ? r->ctl_used : r->urg_used;
		if (used)
			continue;
		if (m->len)
			g_string_append(m, ", ");
		if (i < r->nch)
			g_string_append_printf(m, "channel %u", i);
		else
			g_string_append(m, i == r->nch ? "control" : "urgent");
	}
	return g_string_free(m, FALSE);
}

static int accept_common(tm_receiver *r, int listen_fd, const int *fds, unsigned n,
			 GError **error)
{
	tm_accept_clock clk;
	/* The hook during setup only where a redial may come (no_resume: none ever does). */
	tm_accept_src src = { .listen_fd = listen_fd, .fds = fds, .nfds = fds ? n : 0,
			      .hook = fds && r->live.reconnect && !r->live.no_resume };

	if (r->state != R_NEW) {
		g_set_error(error, TM_ERROR, EBUSY, "a session was accepted already");
		return -EBUSY;
	}
	g_auto(tm_strangers) strangers = { 0 };
	r->setup_redial_ok = !fds; /* a listener's redials may replace (resume-setup.c) */
	r->setup_redial_hook = src.hook; /* and those the VMM's hook hands over */
	tm_accept_clock_start(r, &clk);
	int ret = 0;
	unsigned k;
	/* Drops connections that fail their handshake (accept.c); the VMM's own only with a hook. */
	for (k = 0; !r->chans || k < tm_receiver_connections(r); k++) {
		ret = tm_receiver_accept_one(r, &src, &clk, &strangers, error);
		if (ret < 0 || (fds && n != tm_receiver_connections(r)))
			break; /* -ENODATA: every attached socket tried, the count said below */
	}
	for (unsigned j = src.next; j < src.nfds; j++)
		close(fds[j]); /* ours, never handshaken */
	if (ret == -ETIMEDOUT && !*error) {
		/* timeout_ms, or more when the sender was at work (accept.c) */
		double waited = (double)(clk.deadline_us - clk.start_us) / 1e6;
		g_autofree char *miss = missing_connections(r);
		if (r->nch && r->wire == TM_WIRE_VERSION_2)
			g_set_error(error, TM_ERROR, ETIMEDOUT,
				    "only %u of %u connections (%u channels%s) connected within %.1f s "
				    "(missing: %s)",
				    k, tm_receiver_connections(r), r->nch,
				    tm_receiver_connections(r) > r->nch + 1 ? ", control and urgent"
									    : " and control",
				    waited, miss);
		else if (r->nch)
			g_set_error(error, TM_ERROR, ETIMEDOUT,
				    "only %u of %u channels connected within %.1f s (missing: %s)", k,
				    r->nch, waited, miss);
		else if (fds)
			g_set_error(error, TM_ERROR, ETIMEDOUT,
				    "no HELLO on the %u attached sockets within %.1f s", n,
				    r->cfg.timeout_ms / 1000.0);
		else
			g_set_error(error, TM_ERROR, ETIMEDOUT, "no sender connected within %.1f s",
				    r->cfg.timeout_ms / 1000.0);
		tm_strangers_explain(&strangers, error);
	}
	if (ret < 0 && ret != -ENODATA)
		return accept_fail(r, error);
	tm_receiver_accept_drain(r, &strangers); /* a redial that finished late (accept.c) */
	if (fds && !r->chans) {
		g_set_error(error, TM_ERROR, EINVAL, "no sockets given");
		return accept_fail(r, error);
	}
	if (fds && n == tm_receiver_connections(r) && k < n) {
		/* Not without the hook (a failed one ends it at once), but never a session short. */
		g_set_error(error, TM_ERROR, EPROTO,
			    "only %u of the %u attached sockets carried a connection of the session",
			    k, n);
		return accept_fail(r, error);
	}
	if (fds && n != tm_receiver_connections(r)) {
		g_set_error(error, TM_ERROR, EPROTO, "%u sockets given, the session has %u channels%s",
			    n, r->nch,
			    r->wire == TM_WIRE_VERSION_2 ? " and a control connection" : "");
		return accept_fail(r, error);
	}
	for (unsigned i = 0; i < r->nch; i++)
		r->chans[i].ch.version = r->wire;
	r->ctl.version = r->wire;
	r->urg.version = r->wire;
	ret = tm_receiver_build_announced(r, error);
	if (ret < 0)
		return accept_fail(r, error);
	r->state = R_ACCEPTED;
	__atomic_store_n(&r->wire_done, r->wire, __ATOMIC_RELEASE);
	return 0;
}

/* The setup paths report through *error internally; callers may pass NULL. */
int tm_receiver_accept(tm_receiver *r, int listen_fd, GError **error)
{
	g_autoptr(GError) local = NULL;
	int ret = accept_common(r, listen_fd, NULL, 0, error ? error : &local);
	if (ret == 0)
		tm_resume_recv_listen(r, listen_fd); /* reconnects come here (resume.h) */
	return ret;
}

int tm_receiver_attach(tm_receiver *r, const int *fds, unsigned n, GError **error)
{
	g_autoptr(GError) local = NULL;

	if (n > TM_MAX_CONNECTIONS) { /* each is handshaken at once (accept.c) */
		for (unsigned i = 0; i < n; i++)
			close(fds[i]);
		g_set_error(error, TM_ERROR, EINVAL,
			    "%u sockets given: a session has at most %u connections (%u channels, "
			    "control, urgent)", n, TM_MAX_CONNECTIONS, TM_MAX_CHANNELS);
		return -EINVAL;
	}
	int ret = accept_common(r, -1, fds, n, error ? error : &local);
	if (ret == 0 && r->live.reconnect)
		tm_resume_recv_listen(r, -1); /* the VMM's hook takes reconnects (resume.h) */
	return ret;
}

const tm_ram_layout *tm_receiver_announced_layout(tm_receiver *r)
{
	return r->announced;
}

bool tm_receiver_peer_sends_tags(tm_receiver *r)
{
	return r->hello.features & TM_FEATURE_TAGS_MTE4;
}

void tm_receiver_fail(tm_receiver *r, recv_chan *c, GError *err, bool from_peer)
{
	g_mutex_lock(&r->lock);
	bool was_quit = r->quit;
	tm_failure_record(&r->failure, err, from_peer); /* which one explains it: failure.c */
	__atomic_store_n(&r->quit, true, __ATOMIC_RELAXED);
	bool paused = tm_pc_recv_pauses_locked(r); /* postcopy: nothing is lost (3.4) */
	g_cond_broadcast(&r->cond);
	tm_control_wake(&r->control);
	tm_events_stop(&r->events);
	g_mutex_unlock(&r->lock);
	if (paused)
		tm_events_raise(&r->events, TM_EVENT_PAUSED);
	tm_events_set_phase(&r->events, paused ? TM_PHASE_POSTCOPY_PAUSED : TM_PHASE_FAILED);
	if (!was_quit) {
		for (unsigned i = 0; i < r->nch; i++)
			if (&r->chans[i] != c)
				shutdown(r->chans[i].ch.fd, SHUT_RD); /* wakes its worker */
		tm_pc_recv_quit(r);
	}
}

static int start_common(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			GError **error);

int tm_receiver_start(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
		      GError **error)
{
	g_autoptr(GError) local = NULL;
	return start_common(r, layout, tags, error ? error : &local);
}

static int start_common(tm_receiver *r, const tm_ram_layout *layout, tm_tag_store *tags,
			GError **error)
{
	if (r->state != R_ACCEPTED) {
		g_set_error(error, TM_ERROR, EBADFD, "tm_receiver_start() needs an accepted session");
		return -EBADFD;
	}
	g_mutex_lock(&r->lock);
	if (r->failure.cancelled)
		*error = g_error_copy(r->failure.error);
	g_mutex_unlock(&r->lock);
	int ret = *error ? -ECANCELED : tm_receiver_compare_layout(r, layout, tags, error);
	if (ret < 0) {
		abort_channels(r, -ret, (*error)->message);
		r->state = R_DONE;
		return ret;
	}
	r->layout = layout;
	((tm_ram_layout *)layout)->frozen = true;
	r->tags = tm_receiver_peer_sends_tags(r) ? tags : NULL;
	tm_receiver_state_init(r);
	r->present = g_new0(uint64_t *, r->hello.block_count);
	for (unsigned i = 0; i < r->hello.block_count; i++)
		r->present[i] = g_new0(uint64_t, (r->hello.blocks[i].npages + 63) / 64);

	/* Protocol 2: the same HELLO_ACK on every connection, with what this receiver accepts. */
	bool postcopy = (r->hello.features & TM_FEATURE_POSTCOPY) && tm_pc_recv_accepts(r);
	if (postcopy)
		tm_pc_recv_start(r);
	tm_hello_ack ack = {
		.features = (r->hello.features &
			     ~(TM_FEATURES_COMPRESS | TM_FEATURE_DELTA |
			       (postcopy ? 0u : TM_FEATURE_POSTCOPY))) |
			    tm_zrecv_accept(r->hello.features) |
			    /* deltas when offered, never with postcopy (wire-format.md, DELTA) */
			    ((r->hello.features & TM_FEATURE_POSTCOPY) ? 0u
								       : r->hello.features & TM_FEATURE_DELTA),
		.max_outstanding = postcopy ? r->live.max_outstanding : 0,
		.pc_decline = (r->hello.features & TM_FEATURE_POSTCOPY) && !postcopy
				      ? tm_pc_recv_decline_reason(r)
				      : 0,
		.max_state_section = r->live.max_state_section,
		.max_state_total = r->live.max_state_total,
	};
	if (r->wire == TM_WIRE_VERSION_2 && (ret = tm_resume_recv_agree(r, &ack, error)) < 0) {
		g_autofree char *msg = g_strdup((*error)->message);
		abort_channels(r, -ret, msg);
		r->state = R_DONE;
		return ret;
	}
	/* Also on a VMM's own sockets: counts start at their bases (tm_chan.base, link-check.c). */
	r->control.link_check = (ack.features & TM_FEATURE_LINK_CHECK) != 0;
	uint8_t ackbuf[TM_FRAME_HDR_LEN + TM_HELLO_ACK2_LEN];
	for (unsigned i = 0; i <= r->nch + 1; i++) {
		tm_chan *ch = i < r->nch ? &r->chans[i].ch : i == r->nch ? &r->ctl : &r->urg;
		ret = 0;
		if (i < r->nch) {
			tm_recv_plan_init(&r->chans[i].plan, r->hello.packet_size);
			ret = tm_zrecv_setup(&r->chans[i], ack.features, r->hello.packet_size, error);
			tm_drecv_setup(&r->chans[i], ack.features, r->hello.packet_size);
			if (r->wire == TM_WIRE_VERSION_2)
				tm_recv_state_setup(&r->chans[i], r->hello.packet_size);
		}
		if (ret >= 0 && ch->fd < 0)
			continue; /* protocol 1: no control connection */
		if (ret < 0) {
			/* no context for the codecs: the failure below */
		} else if (r->wire == TM_WIRE_VERSION_2) {
			size_t len = tm_hello_ack_encode(ackbuf, ch->tx_seq++, &ack);
			struct iovec v = { .iov_base = ackbuf, .iov_len = len };
			tm_setup_test_ack_hook(r, i, ch); /* resume.h: only with test hooks */
			ret = tm_chan_send(ch, &v, 1, len, error);
			/* A data channel broken now is resumed: its worker waits (resume.h); control
			 * too with RESUME_CONTROL; a declined urgent connection closes anyway, an
			 * accepted one is reconnected at the switch with RESUME (resume-postcopy.c). */
			if (ret < 0 && tm_resume_broken(-ret) &&
			    (i < r->nch ? (ack.features & TM_FEATURE_RESUME)
			     : i == r->nch ? (ack.features & TM_FEATURE_RESUME_CONTROL)
					    : !postcopy || (ack.features & TM_FEATURE_RESUME))) {
				g_clear_error(error);
				ret = 0;
			}
		} else {
			ret = tm_chan_send_ctrl(ch, TM_MSG_HELLO_ACK, 0, 0, error);
		}
		if (ret < 0) {
			g_autofree char *msg = g_strdup((*error)->message);
			abort_channels(r, -ret, msg);
			r->state = R_DONE;
			return ret;
		}
	}
	/* Postcopy declined: the urgent connection closes right after its HELLO_ACK (2.2). */
	if (!postcopy)
		tm_chan_close(&r->urg);
	if (r->wire == TM_WIRE_VERSION_2) {
		tm_chan *data[TM_MAX_CHANNELS];
		for (unsigned i = 0; i < r->nch; i++)
			data[i] = &r->chans[i].ch;
		if ((ret = tm_control_start(&r->control, &r->ctl, data, r->nch, r->cfg.timeout_ms,
					    error)) < 0) {
			g_autofree char *msg = g_strdup((*error)->message);
			abort_channels(r, -ret, msg);
			r->state = R_DONE;
			return ret;
		}
	}
	g_mutex_lock(&r->lock);
	r->t_start = tm_now_us();
	g_mutex_unlock(&r->lock);
	/* Before the workers run: one of them may move the phase on at once (postcopy). */
	tm_events_set_phase(&r->events, TM_PHASE_PRECOPY);
	for (unsigned i = 0; i < r->nch; i++) {
		g_autofree char *name = g_strdup_printf("tm-recv-%u", i);
		r->chans[i].thread = g_thread_new(name, tm_recv_worker, &r->chans[i]);
	}
	r->state = R_RUNNING;
	return 0;
}

int tm_receiver_wait(tm_receiver *r, GError **error)
{
	if (r->state != R_RUNNING) {
		g_set_error(error, TM_ERROR, EBADFD, "the receiver is not running");
		return -EBADFD;
	}
	g_mutex_lock(&r->lock);
	/* Protocol 2: complete once the control thread also ended control (READY, END / END_ACK,
	 * after its check that every page is there); a state section for the VMM comes first,
	 * and in postcopy the end of device state once (the guest may start). */
	bool start_guest = false;
	while (!r->quit && (r->ended < r->nch || (r->control.started && !r->control.ended)) &&
	       !tm_receiver_state_waiting(r) && !(start_guest = tm_pc_recv_wait_one_locked(r)))
		g_cond_wait(&r->cond, &r->lock);
	if (start_guest) {
		g_mutex_unlock(&r->lock);
		return 1;
	}
	if (!r->quit && r->ended < r->nch) {
		g_mutex_unlock(&r->lock);
		return 1; /* a device-state section waits for the VMM */
	}
	int ret = 0;
	if (r->quit) {
		/* Let every worker stop so that the sender's own explanation, if any, wins. */
		for (unsigned i = 0; i < r->nch; i++)
			while (!r->chans[i].exited)
				g_cond_wait(&r->cond, &r->lock);
		tm_control_await_exit_locked(&r->control);
		ret = r->failure.error ? -r->failure.error->code : -EIO;
		if (tm_pc_recv_pauses_locked(r))
			ret = tm_pc_recv_paused_error_locked(r, error);
		else if (error)
			*error = r->failure.error ? g_error_copy(r->failure.error)
						  : g_error_new(TM_ERROR, EIO, "migration aborted");
	}
	g_mutex_unlock(&r->lock);
	/* Protocol 1 has no control connection: the completeness check is here. */
	g_autoptr(GError) incomplete = NULL;
	if (ret == 0 && !r->control.started &&
	    (ret = tm_receiver_check_complete(r, &incomplete)) < 0) {
		if (error)
			*error = g_error_copy(incomplete);
		tm_receiver_fail(r, NULL, g_steal_pointer(&incomplete), false);
	}
	/* Agreed to postcopy, ended in precopy: the unused urgent connection's END_ACK. */
	g_autoptr(GError) urgent = NULL;
	if (ret == 0 && r->control.started && (ret = tm_pc_urgent_close_unused(r, &urgent)) < 0) {
		if (error)
			*error = g_error_copy(urgent);
		tm_receiver_fail(r, NULL, g_steal_pointer(&urgent), r->urg.peer_error);
	}
	if (ret == 0)
		tm_events_set_phase(&r->events, TM_PHASE_COMPLETE);
	return ret;
}

bool tm_receiver_page_present(tm_receiver *r, unsigned block, uint64_t page)
{
	if (!r->present || block >= r->hello.block_count || page >= r->hello.blocks[block].npages)
		return false;
	return (__atomic_load_n(&r->present[block][page / 64], __ATOMIC_ACQUIRE) >> (page % 64)) & 1;
}

void tm_receiver_free(tm_receiver *r)
{
	if (!r)
		return;
	g_mutex_lock(&r->lock);
	r->quit = true;
	g_cond_broadcast(&r->cond); /* workers waiting to hand over device state */
	g_cond_broadcast(&r->stop); /* and those that ended */
	tm_control_wake(&r->control);
	g_mutex_unlock(&r->lock);
	/* First: it reads the data channels' sockets (TCP_INFO) until it exits. */
	tm_control_stop(&r->control);
	tm_pc_recv_stop(r); /* the fault and urgent threads */
	for (unsigned i = 0; i < r->nch; i++) {
		recv_chan *c = &r->chans[i];
		if (c->thread) {
			g_mutex_lock(&r->lock);
			bool exited = c->exited;
			g_mutex_unlock(&r->lock);
			if (!exited)
				shutdown(c->ch.fd, SHUT_RDWR);
			g_thread_join(c->thread);
		}
		tm_chan_close(&c->ch);
		tm_recv_plan_fini(&c->plan);
		tm_zrecv_free(c->z);
		tm_drecv_free(c->dr);
		tm_pc_bounce_free(c->pc_bounce);
	}
	tm_resume_recv_free(r); /* after the workers, which may wait for a reconnect */
	tm_chan_close(&r->ctl);
	tm_chan_close(&r->urg);
	tm_pc_recv_free(r);
	tm_receiver_state_free(r);
	tm_events_fini(&r->events);
	for (unsigned i = 0; r->present && i < r->hello.block_count; i++)
		g_free(r->present[i]);
	g_free(r->present);
	for (unsigned i = 0; r->waived && i < r->hello.block_count; i++)
		g_free(r->waived[i]);
	g_free(r->waived);
	g_free(r->chans);
	tm_ram_layout_free(r->announced);
	g_free(r->io_note);
	tm_tls_ctx_free(r->tls);
	tm_hello_clear(&r->hello);
	g_clear_error(&r->failure.error);
	tm_control_clear(&r->control); /* after the data workers: the last one may end control */
	g_mutex_clear(&r->lock);
	g_cond_clear(&r->cond);
	g_cond_clear(&r->stop);
	g_free(r);
}
