/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend: one ring per channel, the socket registered as a fixed file.
 *
 * Sending: the sender keeps io->depth packet slots. Exactly one send operation is in the kernel
 * at a time per channel: two sends on one TCP socket that are both in flight may be issued out of
 * order when the first waits for socket space, which would corrupt the stream. What may overlap
 * is everything else: with zero-copy sends (IORING_OP_SENDMSG_ZC) a send completes once the
 * kernel holds references to the pages, and the slot's buffers stay pinned until the
 * notification CQE arrives; the worker packs the next packets meanwhile. A slot is free for reuse
 * only when its send has completed in full and every notification of it has arrived.
 *
 * Nothing but a slot's reuse waits for a notification: the order of the stream only needs the
 * earlier send to have completed, so a control message (send()), drain() and a receive go ahead
 * while pages are still pinned. That matters: the kernel releases a zero-copy buffer when TCP has
 * the peer's acknowledgement of it, and a peer that has nothing to answer yet delays its ACK (up
 * to 40 ms), so a SYNC behind a notification would wait for a timer instead of for the peer.
 *
 * Zero-copy is used for packets of at least ZC_MIN_BYTES wherever the kernel has
 * IORING_OP_SENDMSG_ZC and it pays: a NIC that transmits from our pages. Below that size (zero
 * pages, a few scattered pages: mostly headers) pinning, the notification and its wait cost more
 * than the copy, on any device. On loopback (and with drivers that cannot) the kernel copies
 * anyway and says so in each notification (IORING_NOTIF_USAGE_ZC_COPIED); then zero-copy only
 * adds pinning and notification completions (bench/README.md), so after ZC_COPIED_LIMIT such
 * reports in a row the channel switches to plain IORING_OP_SENDMSG. io->zerocopy (the sessions'
 * tm_tuning.zerocopy) -1 turns zero-copy off, 1 keeps it on for large packets regardless; a
 * socket that is not TCP (a VMM's unix socket) never sends zero-copy.
 *
 * Waiting: a small send completes while it is submitted (the socket has room), so its completion
 * is reaped without a second system call; a receive is submitted and waited for in one. io->st
 * counts the waits that blocked (io_waits).
 *
 * Receives are synchronous here (one at a time, waited for at once), so the ring only pays for
 * large ones (a packet's page data: one MSG_WAITALL submission). A small one (a frame header, a
 * control message, a DATA header: up to DIRECT_RECV_MAX) is a plain recvmsg when nothing else is
 * on the ring: a thread blocked in recvmsg is woken with the bytes, where one blocked in
 * io_uring_enter is woken to run the completion first (bench/rounds: an empty round 1.3-1.7x
 * slower than sockets, the end of a session 1.2x, until this). With a send or a zero-copy
 * notification outstanding the ring waits, reaping them meanwhile.
 *
 * A small control message (send(): SYNC, END, a control connection's messages, up to
 * DIRECT_SEND_MAX) goes by a plain sendmsg too, once the packet before it has completed. Besides a
 * wake-up, that keeps the threads that only end rounds and sessions (tm_sender_sync() and
 * tm_sender_finish() send those themselves) off the ring: a thread that ever submitted to a ring
 * is interrupted by the ring's teardown, a kernel worker that runs well after close() and asks
 * every such thread still alive to run a task (TWA_SIGNAL): bench/rounds saw the next session's
 * finish woken several times over 200 us by the previous session's rings.
 *
 * A short send is resubmitted from where it stopped (MSG_WAITALL makes it rare).
 */
#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "tagmig/error.h"
#include "transport/transport.h"

#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

#define ZC_COPIED_LIMIT 8
/* Smaller messages are copied: zero-copy pays for large sends only (MSG_ZEROCOPY: ~10 KiB up). */
#define ZC_MIN_BYTES (64u << 10)
/* Receives up to this size go by a plain system call (recv_direct, top of file). */
#define DIRECT_RECV_MAX (4u << 10)
/* And sends of control messages up to this size (send_direct, top of file). */
#define DIRECT_SEND_MAX (4u << 10)
#define UD_RECV UINT64_C(0xffffffff)
#define UD_CANCEL UINT64_C(0xfffffffe)

typedef struct uslot {
	struct iovec *iov; /* private copy, advanced after a short send */
	unsigned n;
	unsigned cap;
	size_t left;
	struct msghdr msg;
	bool sending;     /* a send of this slot is in the kernel */
	bool zc_op;       /* that send is zero-copy */
	unsigned notifs;  /* zero-copy notifications still to come */
} uslot;

typedef struct uring_priv {
	struct io_uring ring;
	bool ring_ok;
	uslot *slots;  /* io->depth for packets, one more for synchronous sends */
	unsigned nslots;
	int active;    /* slot whose send is in the kernel, or -1 */
	int error;     /* first failure of an asynchronous send (negative errno), sticky */
	int failed;    /* the slot whose send failed with it, or -1 */
	bool zc;       /* use zero-copy sends for packets */
	bool zc_forced; /* zerocopy > 0: even when the kernel copies */
	unsigned zc_copied_run; /* copied notifications in a row */
	/* receive */
	struct iovec *riov;
	unsigned rcap;
	struct msghdr rmsg;
	bool recv_pending;
	bool in_recv;      /* uring_recv is waiting: io->deadline_us applies */
	int recv_res;
} uring_priv;

static bool zc_supported;

/* Whether io_uring runs here, and what it offers: a ring made and torn down (the caller of
 * probe() keeps the answer). */
static int probe_ring(GError **error)
{
	struct io_uring ring;
	int r = io_uring_queue_init(4, &ring, 0);

	if (r < 0) {
		g_autofree char *disabled = NULL;
		g_file_get_contents("/proc/sys/kernel/io_uring_disabled", &disabled, NULL, NULL);
		g_set_error(error, TM_ERROR, -r,
			    "io_uring cannot run here: io_uring_setup failed: %s%s%s%s",
			    g_strerror(-r), disabled ? " (kernel.io_uring_disabled=" : "",
			    disabled ? g_strstrip(disabled) : "",
			    disabled ? "; a seccomp filter may also forbid it)" : "");
		return r;
	}
	struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
	static const struct {
		int op;
		const char *name;
	} need[] = {
		{ IORING_OP_SENDMSG, "IORING_OP_SENDMSG" },
		{ IORING_OP_RECVMSG, "IORING_OP_RECVMSG" },
		{ IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL" },
	};
	for (size_t i = 0; i < G_N_ELEMENTS(need); i++) {
		if (!p || !io_uring_opcode_supported(p, need[i].op)) {
			g_set_error(error, TM_ERROR, EOPNOTSUPP,
				    "io_uring cannot run here: the kernel lacks %s", need[i].name);
			io_uring_free_probe(p);
			io_uring_queue_exit(&ring);
			return -EOPNOTSUPP;
		}
	}
	__atomic_store_n(&zc_supported, io_uring_opcode_supported(p, IORING_OP_SENDMSG_ZC),
			 __ATOMIC_RELAXED);
	io_uring_free_probe(p);
	io_uring_queue_exit(&ring);
	return 0;
}

/*
 * Asked at every tm_sender_new() / tm_receiver_new(): answered once per process, as
 * tm_io_backend_default() does. A ring's teardown is not its close: the kernel finishes it
 * later in a worker, over RCU grace periods (~12 ms each on a 2-vCPU guest), work that two
 * probes per session added for an answer that does not change (bench/README, issue 16).
 */
static int probe(GError **error)
{
	static gsize once;
	static int answer;
	static char *why;

	if (g_once_init_enter(&once)) {
		g_autoptr(GError) err = NULL;
		answer = probe_ring(&err);
		if (answer < 0)
			why = g_strdup(err->message); /* kept for the process's life */
		g_once_init_leave(&once, 1);
	}
	if (answer < 0)
		g_set_error(error, TM_ERROR, -answer, "%s", why);
	return answer;
}

static int uring_open(tm_io *io, GError **error)
{
	uring_priv *p = io->priv;
	unsigned depth = CLAMP(io->depth, 1, 64);

	/* Two CQEs per zero-copy send, a receive and a cancel: never overflow the CQ. */
	int r = io_uring_queue_init(4 * depth + 8, &p->ring, 0);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: io_uring_queue_init: %s", io->label,
			    g_strerror(-r));
		return r;
	}
	p->ring_ok = true;
	r = io_uring_register_files(&p->ring, &io->fd, 1);
	if (r < 0) {
		g_set_error(error, TM_ERROR, -r, "%s: io_uring_register_files: %s", io->label,
			    g_strerror(-r));
		io_uring_queue_exit(&p->ring);
		p->ring_ok = false;
		return r;
	}
	io->depth = depth;
	p->nslots = depth + 1;
	p->slots = g_new0(uslot, p->nslots);
	p->active = -1;
	p->failed = -1;
	/* Zero-copy sends are TCP's: a socket of another family (a VMM's unix socketpair) refuses
	 * them with -EOPNOTSUPP, so it gets plain sends, whatever io->zerocopy says. */
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	bool inet = getsockname(io->fd, (struct sockaddr *)&ss, &sl) == 0 &&
		    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
	p->zc = inet && __atomic_load_n(&zc_supported, __ATOMIC_RELAXED) && io->zerocopy >= 0;
	p->zc_forced = p->zc && io->zerocopy > 0;
	return 0;
}

/*
 * Takes the next completion, waiting up to io->timeout_ms for it; submits what is queued in the
 * same system call. A wait that blocks (nothing was ready) counts in io->st.io_waits.
 */
static int wait_cqe(tm_io *io, struct io_uring_cqe **cqe)
{
	uring_priv *p = io->priv;
	/*
	 * A receive's deadline (tm_io_set_deadline) caps the wait; otherwise the timeout, where 0
	 * means no limit (tm_io_set_timeout). A shutdown of the socket ends a send or a receive,
	 * but not the wait for a zero-copy completion, which needs the peer to acknowledge the
	 * data: an unlimited wait goes in slices, until tm_io_cancel().
	 */
	bool by_deadline = p->in_recv && io->deadline_us;
	int ms = by_deadline ? tm_io_wait_ms(io) : (int)io->timeout_ms;
	if (by_deadline && ms == 0)
		return -ETIMEDOUT;
	bool unbounded = ms <= 0;
	const struct __kernel_timespec slice = { .tv_nsec = 250 * 1000 * 1000 };
	struct __kernel_timespec ts = unbounded ? slice :
		(struct __kernel_timespec){ .tv_sec = ms / 1000,
					    .tv_nsec = (long long)(ms % 1000) * 1000000 };

	if (io_uring_peek_cqe(&p->ring, cqe) == 0) {
		/* Ready: what is queued still goes to the kernel now, without waiting. */
		int r = io_uring_sq_ready(&p->ring) ? io_uring_submit(&p->ring) : 0;
		return r < 0 ? r : 0;
	}
	tm_count(&io->st.io_waits, 1);
	int64_t deadline = unbounded ? 0 : tm_now_us() + (int64_t)ms * 1000;
	int r = io_uring_submit_and_wait_timeout(&p->ring, cqe, 1, &ts, NULL);
	/* liburing 2.3 reports a wait that ended without a completion (its timeout, a signal)
	 * after submitting as the count submitted with *cqe NULL: wait out the rest. */
	while (r == -EINTR || (r >= 0 && !*cqe) || (r == -ETIME && unbounded)) {
		if (unbounded) {
			if (__atomic_load_n(&io->cancelled, __ATOMIC_ACQUIRE))
				return -ECANCELED;
			ts = slice;
		} else {
			int64_t left = deadline - tm_now_us();
			if (left <= 0)
				return -ETIMEDOUT;
			ts = (struct __kernel_timespec){ .tv_sec = left / 1000000,
							 .tv_nsec = (long long)(left % 1000000) * 1000 };
		}
		*cqe = NULL;
		r = io_uring_submit_and_wait_timeout(&p->ring, cqe, 1, &ts, NULL);
	}
	return r == -ETIME ? -ETIMEDOUT : r < 0 ? r : 0;
}

static int issue_send(tm_io *io, unsigned slot)
{
	uring_priv *p = io->priv;
	uslot *s = &p->slots[slot];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
	bool zc = p->zc && slot + 1 < p->nslots && s->left >= ZC_MIN_BYTES;

	if (!sqe)
		return -EBUSY; /* cannot happen: the ring is sized for every slot */
	s->msg = (struct msghdr){ .msg_iov = s->iov, .msg_iovlen = MIN(s->n, (unsigned)IOV_MAX) };
	if (zc) {
		io_uring_prep_sendmsg_zc(sqe, 0, &s->msg, MSG_WAITALL | MSG_NOSIGNAL);
		sqe->ioprio |= IORING_SEND_ZC_REPORT_USAGE;
		s->notifs++;
		tm_count(&io->st.zc_sends, 1);
	} else {
		io_uring_prep_sendmsg(sqe, 0, &s->msg, MSG_WAITALL | MSG_NOSIGNAL);
	}
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, slot);
	s->sending = true;
	s->zc_op = zc;
	p->active = (int)slot;
	int r = io_uring_submit(&p->ring);
	if (r < 0) {
		s->sending = false;
		if (zc)
			s->notifs--;
		p->active = -1;
		return r;
	}
	tm_count(&io->st.io_submissions, 1);
	return 0;
}

/* Reaps one completion (waiting for it) and updates the slot or receive it belongs to. */
static int reap(tm_io *io)
{
	uring_priv *p = io->priv;
	struct io_uring_cqe *cqe;
	int r = wait_cqe(io, &cqe);
	if (r < 0)
		return r;
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	int res = cqe->res;
	unsigned flags = cqe->flags;
	io_uring_cqe_seen(&p->ring, cqe);
	tm_count(&io->st.io_completions, 1);

	if (ud == UD_CANCEL)
		return 0;
	if (ud == UD_RECV) {
		p->recv_pending = false;
		p->recv_res = res;
		return 0;
	}
	if (ud >= p->nslots)
		return -EIO;
	uslot *s = &p->slots[ud];
	if (flags & IORING_CQE_F_NOTIF) {
		s->notifs--;
		if ((unsigned)res & IORING_NOTIF_USAGE_ZC_COPIED) {
			tm_count(&io->st.zc_copied, 1);
			if (++p->zc_copied_run >= ZC_COPIED_LIMIT && !p->zc_forced)
				p->zc = false;
		} else {
			p->zc_copied_run = 0;
		}
		return 0;
	}
	/* The send itself. Without F_MORE no notification follows (error, or not zero-copy). */
	if (s->zc_op && !(flags & IORING_CQE_F_MORE))
		s->notifs--;
	if (res < 0) {
		s->sending = false;
		p->active = -1;
		if (!p->error) {
			p->error = res == -EAGAIN ? -ETIMEDOUT : res;
			p->failed = (int)ud;
		}
		return 0;
	}
	if ((size_t)res < s->left) {
		/* Short send: the rest goes next, before anything else on this channel. */
		s->left -= (size_t)res;
		struct iovec *v = s->iov;
		unsigned n = s->n;
		tm_iov_advance(&v, &n, (size_t)res);
		memmove(s->iov, v, n * sizeof(*v));
		s->n = n;
		r = issue_send(io, (unsigned)ud);
		if (r < 0 && !p->error) {
			p->error = r;
			p->failed = (int)ud;
		}
		return 0;
	}
	s->left = 0;
	s->sending = false;
	p->active = -1;
	return 0;
}

static int wait_slot(tm_io *io, unsigned slot)
{
	uring_priv *p = io->priv;
	uslot *s = &p->slots[slot];

	/* After a failure the session is going down: do not wait for notifications that only a
	 * close will bring (close cancels and collects them before buffers go). */
	while (!p->error && (s->sending || s->notifs)) {
		int r = reap(io);
		if (r < 0)
			return r;
	}
	return p->error;
}

static int uring_submit(tm_io *io, unsigned slot, const struct iovec *iov, unsigned n,
			size_t len)
{
	uring_priv *p = io->priv;
	if (p->error)
		return p->error;
	/* One send in the kernel at a time keeps the byte stream in order. */
	while (p->active >= 0) {
		int r = reap(io);
		if (r < 0)
			return r;
	}
	int r = wait_slot(io, slot);
	if (r < 0)
		return r;
	uslot *s = &p->slots[slot];
	if (n > s->cap) {
		s->iov = g_renew(struct iovec, s->iov, n);
		s->cap = n;
	}
	memcpy(s->iov, iov, n * sizeof(*iov));
	s->n = n;
	s->left = len;
	return issue_send(io, slot);
}

/* Until the send in the kernel (if any) has completed in full: what comes next is behind it. */
static int wait_sent(tm_io *io)
{
	uring_priv *p = io->priv;

	while (!p->error && p->active >= 0) {
		int r = reap(io);
		if (r < 0)
			return r;
	}
	return p->error;
}

static int unsent_slot(const tm_io *io)
{
	const uring_priv *p = io->priv;

	return p->failed >= 0 ? p->failed : p->active;
}

static int uring_drain(tm_io *io)
{
	/* The order of the stream is all a caller of drain needs: not the notifications. */
	return wait_sent(io);
}

/*
 * A small message by a plain system call, the stream's order kept (nothing of the ring's is in
 * the kernel): blocking, with the socket's SO_SNDTIMEO (the I/O handle's timeout), as the
 * sockets backend sends. The extra slot's iov is the private copy advanced after a short send.
 */
static int send_direct(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	uring_priv *p = io->priv;
	uslot *s = &p->slots[p->nslots - 1];

	if (n > s->cap) {
		s->iov = g_renew(struct iovec, s->iov, n);
		s->cap = n;
	}
	memcpy(s->iov, iov, n * sizeof(*iov));
	/* A system call is a submission that completes at once (the counters' invariant). */
	return tm_io_sendmsg_all(io, s->iov, n, len, true);
}

static int uring_send(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	uring_priv *p = io->priv;
	/* A control message goes out as soon as the packets before it have: pinned pages of
	 * earlier zero-copy sends are released by the peer's ACK, which a SYNC hastens. */
	int r = wait_sent(io);
	if (r < 0)
		return r;
	if (len <= DIRECT_SEND_MAX)
		return send_direct(io, iov, n, len);
	/* The extra slot: never zero-copy (small control messages), waited for at once. */
	r = uring_submit(io, p->nslots - 1, iov, n, len);
	return r < 0 ? r : wait_slot(io, p->nslots - 1);
}

/*
 * A small receive by a plain system call: blocking, with the socket's SO_RCVTIMEO (the I/O
 * handle's timeout) or, with a deadline, without blocking and a poll for what is left of it.
 * v is the private copy (advanced here).
 */
static int recv_direct(tm_io *io, struct iovec *v, unsigned n, size_t len, bool some)
{
	while (len > 0) {
		struct msghdr msg = { .msg_iov = v, .msg_iovlen = MIN(n, (unsigned)IOV_MAX) };
		ssize_t r = recvmsg(io->fd, &msg, io->deadline_us ? MSG_DONTWAIT : 0);
		/* A system call is a submission that completes at once (the counters' invariant). */
		tm_count(&io->st.io_submissions, 1);
		tm_count(&io->st.io_completions, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && io->deadline_us) {
			int ms = tm_io_wait_ms(io);
			if (ms == 0)
				return -ETIMEDOUT;
			struct pollfd pfd = { .fd = io->fd, .events = POLLIN };
			int pr = poll(&pfd, 1, ms);
			if (pr < 0 && errno != EINTR)
				return -errno;
			if (pr == 0 && ms == (int)io->timeout_ms)
				return -ETIMEDOUT; /* the timeout, not the deadline */
			continue;
		}
		if (r < 0)
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		if (r == 0)
			return -ECONNRESET;
		if (some)
			return (int)r;
		len -= (size_t)r;
		tm_iov_advance(&v, &n, (size_t)r);
		if (len && io->deadline_us && tm_now_us() >= io->deadline_us)
			return -ETIMEDOUT;
	}
	return 0;
}

/* A send or a zero-copy notification still to come: a wait on the ring reaps it meanwhile. */
static bool ring_busy(const uring_priv *p)
{
	if (p->active >= 0)
		return true;
	for (unsigned i = 0; i < p->nslots; i++)
		if (p->slots[i].notifs)
			return true;
	return false;
}

/* Receives into iov[0..n): all len bytes, or (some) what the first completion brought. */
static int recv_msg(tm_io *io, const struct iovec *iov, unsigned n, size_t len, bool some)
{
	uring_priv *p = io->priv;

	/* A failed send does not stop this direction: the peer's ERROR may be waiting here. */
	if (n > p->rcap) {
		p->riov = g_renew(struct iovec, p->riov, n);
		p->rcap = n;
	}
	memcpy(p->riov, iov, n * sizeof(*iov));
	struct iovec *v = p->riov;
	if (len <= DIRECT_RECV_MAX && !ring_busy(p))
		return recv_direct(io, v, n, len, some);
	while (len > 0) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
		if (!sqe)
			return -EBUSY;
		p->rmsg = (struct msghdr){ .msg_iov = v, .msg_iovlen = MIN(n, (unsigned)IOV_MAX) };
		io_uring_prep_recvmsg(sqe, 0, &p->rmsg, some ? 0 : MSG_WAITALL);
		sqe->flags |= IOSQE_FIXED_FILE;
		io_uring_sqe_set_data64(sqe, UD_RECV);
		p->recv_pending = true;
		tm_count(&io->st.io_submissions, 1);
		/* Submitted and waited for in one system call (wait_cqe). */
		p->in_recv = true;
		while (p->recv_pending) {
			int r = reap(io);
			if (r < 0) {
				p->in_recv = false;
				return r;
			}
		}
		p->in_recv = false;
		if (p->recv_res < 0)
			return p->recv_res == -EAGAIN ? -ETIMEDOUT : p->recv_res;
		if (p->recv_res == 0)
			return -ECONNRESET;
		if (some)
			return p->recv_res;
		len -= (size_t)p->recv_res;
		tm_iov_advance(&v, &n, (size_t)p->recv_res);
		if (len && io->deadline_us && tm_now_us() >= io->deadline_us)
			return -ETIMEDOUT;
	}
	return 0;
}

static int uring_recv(tm_io *io, const struct iovec *iov, unsigned n, size_t len)
{
	return recv_msg(io, iov, n, len, false);
}

static int uring_recv_some(tm_io *io, void *buf, size_t len)
{
	struct iovec v = { .iov_base = buf, .iov_len = MIN(len, (size_t)INT_MAX) };

	return recv_msg(io, &v, 1, v.iov_len, true);
}

static void uring_close(tm_io *io)
{
	uring_priv *p = io->priv;

	if (p->ring_ok) {
		/* Nothing may land in guest RAM or read a freed buffer after we return: cancel
		 * what is in flight and collect its completions before the ring goes. */
		struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring);
		bool busy = p->recv_pending || p->active >= 0;
		for (unsigned i = 0; i < p->nslots; i++)
			busy = busy || p->slots[i].notifs;
		if (busy && sqe) {
			io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
			io_uring_sqe_set_data64(sqe, UD_CANCEL);
			io_uring_submit(&p->ring);
			unsigned saved = io->timeout_ms;
			io->timeout_ms = 1000;
			while (busy && reap(io) == 0) {
				busy = p->recv_pending || p->active >= 0;
				for (unsigned i = 0; i < p->nslots; i++)
					busy = busy || p->slots[i].notifs;
			}
			io->timeout_ms = saved;
		}
		/*
		 * The ring's reference to the socket goes now, in this thread: left to the ring's
		 * teardown, a kernel worker that runs after close(), the socket's last reference and
		 * so its TCP close (100-450 us of a CPU each, bench/rounds) would fall at some moment
		 * after free() returned, into whatever runs next (the next session's end), and the
		 * peer would see the connection close only then. Not with requests still in the
		 * kernel (the cancel gave up after a second): kernels before 6.4 would wait for them
		 * here (zero-copy notifications need the peer's ACK), where the teardown does not block.
		 */
		if (!busy)
			(void)io_uring_unregister_files(&p->ring);
		io_uring_queue_exit(&p->ring);
	}
	for (unsigned i = 0; i < p->nslots; i++)
		g_free(p->slots[i].iov);
	g_free(p->slots);
	g_free(p->riov);
}

const tm_transport_ops tm_transport_io_uring = {
	.name = "io_uring",
	.priv_size = sizeof(uring_priv),
	.probe = probe,
	.open = uring_open,
	.close = uring_close,
	.send = uring_send,
	.recv = uring_recv,
	.recv_some = uring_recv_some,
	.submit = uring_submit,
	.wait_slot = wait_slot,
	.drain = uring_drain,
	.unsent_slot = unsent_slot,
};
