/* SPDX-License-Identifier: MIT */
/* The resume tests' cutting proxy (cut-proxy.h). */
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "codec/codec.h"
#include "cut-proxy.h"
#include "transport/transport.h"

/* Where frames start in one direction of a forwarded connection (plaintext). */
typedef struct fparse {
	uint8_t hdr[TM_FRAME_HDR_LEN];
	unsigned hlen;
	uint64_t left; /* body bytes of the current frame still to pass */
} fparse;

/*
 * Moves fp over buf[0..n): the offset at which a frame of type starts (its header wholly in
 * buf), or -1 when none does.
 */
static ssize_t find_frame(fparse *fp, const uint8_t *buf, size_t n, uint8_t type)
{
	size_t i = 0;

	while (i < n) {
		if (fp->left) {
			size_t k = MIN(fp->left, (uint64_t)(n - i));
			fp->left -= k;
			i += k;
			continue;
		}
		bool whole = fp->hlen == 0;
		size_t k = MIN(TM_FRAME_HDR_LEN - fp->hlen, n - i);
		memcpy(fp->hdr + fp->hlen, buf + i, k);
		fp->hlen += (unsigned)k;
		i += k;
		if (fp->hlen < TM_FRAME_HDR_LEN)
			break;
		fp->hlen = 0;
		fp->left = (uint64_t)fp->hdr[8] | (uint64_t)fp->hdr[9] << 8 |
			   (uint64_t)fp->hdr[10] << 16 | (uint64_t)fp->hdr[11] << 24;
		if (type && whole && fp->hdr[5] == type)
			return (ssize_t)(i - TM_FRAME_HDR_LEN);
	}
	return -1;
}


void proxy_arm(cut_proxy *p, int conn, uint64_t more_bytes)
{
	g_mutex_lock(&p->lock);
	p->cut_conn = conn;
	p->cut_at = p->fwd[conn] + more_bytes;
	g_mutex_unlock(&p->lock);
}

void proxy_arm_frame(cut_proxy *p, int conn, uint8_t type, bool from_sender)
{
	g_mutex_lock(&p->lock);
	p->cut_conn = conn;
	p->cut_before = type;
	p->from_sender = from_sender;
	g_mutex_unlock(&p->lock);
}

void proxy_arm_reply(cut_proxy *p, int conn, uint8_t type)
{
	g_mutex_lock(&p->lock);
	p->cut_conn = conn;
	p->cut_reply_to = type;
	g_mutex_unlock(&p->lock);
}

void proxy_arm_hold_to_end(cut_proxy *p, int conn)
{
	g_mutex_lock(&p->lock);
	p->cut_conn = conn;
	p->hold_to_end = true;
	g_mutex_unlock(&p->lock);
}

void proxy_arm_next(cut_proxy *p, int conn, uint64_t more_bytes)
{
	g_mutex_lock(&p->lock);
	p->next_conn = conn;
	p->next_bytes = more_bytes;
	g_mutex_unlock(&p->lock);
}

/*
 * hold_to_end: buf[0..n) held so far; once it holds a whole END header, *ret_pass is how much of
 * it precedes the first STATE frame (all of it without one) and true is returned.
 */
static bool held_end(const uint8_t *buf, size_t n, size_t *ret_pass)
{
	fparse f = { 0 };
	ssize_t st = find_frame(&f, buf, n, TM_MSG_STATE);
	memset(&f, 0, sizeof(f));
	if (find_frame(&f, buf, n, TM_MSG_END) < 0)
		return false;
	*ret_pass = st >= 0 ? (size_t)st : n;
	return true;
}

unsigned proxy_cuts(cut_proxy *p)
{
	return proxy_get(p, &p->cuts);
}

unsigned proxy_get(cut_proxy *p, const unsigned *field)
{
	g_mutex_lock(&p->lock);
	unsigned n = *field;
	g_mutex_unlock(&p->lock);
	return n;
}

/* The cut: both sockets close at once, or (half) the sender's alone, the receiver's kept in held,
 * or (half_recv) the receiver's alone, the sender's kept; reset sends the sender an RST instead
 * of a FIN. */
static void cut(cut_proxy *p, int *sfd, int *rfd, int *held, unsigned *nheld)
{
	g_mutex_lock(&p->lock);
	bool half = p->half, half_recv = p->half_recv, reset = p->reset;
	g_mutex_unlock(&p->lock);
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	if (*sfd >= 0 && reset)
		(void)setsockopt(*sfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (*sfd >= 0 && half_recv && *nheld < MAXP)
		held[(*nheld)++] = *sfd; /* open and silent: a dead path */
	else if (*sfd >= 0)
		close(*sfd);
	if (*rfd >= 0 && half && *nheld < MAXP)
		held[(*nheld)++] = *rfd; /* open and silent: a dead path */
	else if (*rfd >= 0)
		close(*rfd);
	*sfd = *rfd = -1;
	g_mutex_lock(&p->lock);
	p->cut_conn = -1;
	p->cut_before = 0;
	p->cut_reply_to = 0;
	p->reply_due = false;
	p->hold_to_end = false;
	p->cuts++;
	if (p->next_conn >= 0) {
		/* Counted from now: before anything more of that connection went through. */
		p->cut_conn = p->next_conn;
		p->cut_at = p->fwd[p->next_conn] + p->next_bytes;
		p->next_conn = -1;
	}
	g_mutex_unlock(&p->lock);
}

/* greet_in: reads n bytes of fd's (within 5 s) and answers m bytes. */
static bool greet(int fd, unsigned n, unsigned m)
{
	uint8_t buf[256];
	struct pollfd pf = { .fd = fd, .events = POLLIN };

	g_assert_cmpuint(MAX(n, m), <=, sizeof(buf));
	if (poll(&pf, 1, 5000) != 1 || recv(fd, buf, n, MSG_WAITALL) != (ssize_t)n)
		return false;
	memset(buf, 'G', m);
	return send(fd, buf, m, MSG_NOSIGNAL) == (ssize_t)m;
}

static gpointer proxy_thread(gpointer data)
{
	cut_proxy *p = data;
	int sfd[MAXP], rfd[MAXP];
	fparse fp[MAXP][2];
	int held[MAXP]; /* half cuts' receiver sides and held connections, closed at the end */
	uint8_t buf[65536];
	unsigned n = 0, nheld = 0;
	GByteArray *withheld = g_byte_array_new(); /* hold_to_end: the bytes held back */

	for (;;) {
		struct pollfd pfd[2 * MAXP + 1];
		unsigned map[2 * MAXP + 1], np = 0;
		pfd[np++] = (struct pollfd){ .fd = p->listen_fd, .events = POLLIN };
		for (unsigned i = 0; i < n; i++) {
			if (sfd[i] >= 0) {
				map[np] = 2 * i;
				pfd[np++] = (struct pollfd){ .fd = sfd[i], .events = POLLIN };
			}
			if (rfd[i] >= 0) {
				map[np] = 2 * i + 1;
				pfd[np++] = (struct pollfd){ .fd = rfd[i], .events = POLLIN };
			}
		}
		poll(pfd, np, 20);
		g_mutex_lock(&p->lock);
		bool stop = p->stop;
		int c = p->cut_conn;
		bool due = c >= 0 && (unsigned)c < n && !p->cut_before && !p->cut_reply_to &&
			   !p->hold_to_end && p->fwd[c] >= p->cut_at;
		g_mutex_unlock(&p->lock);
		if (stop)
			break;
		if (due) {
			cut(p, &sfd[c], &rfd[c], held, &nheld);
			continue;
		}
		if (pfd[0].revents & POLLIN) {
			int fd = accept(p->listen_fd, NULL, NULL);
			g_mutex_lock(&p->lock);
			bool refuse = p->refuse_after && p->cuts > 0;
			bool hold = p->hold_after && p->cuts > 0;
			p->refused += refuse || hold;
			g_mutex_unlock(&p->lock);
			if (fd >= 0 && hold && nheld < MAXP) {
				held[nheld++] = fd;
			} else if (fd >= 0 && (refuse || hold || n == MAXP)) {
				close(fd);
			} else if (fd >= 0) {
				g_mutex_lock(&p->lock);
				unsigned gin = p->greet_in, gout = p->greet_out;
				uint64_t pre_s = p->pre_s, pre_r = p->pre_r;
				g_mutex_unlock(&p->lock);
				if (gin && !greet(fd, gin, gout)) {
					close(fd);
					continue;
				}
				sfd[n] = fd;
				rfd[n] = tm_net_connect("127.0.0.1", p->port, 5000, -1, NULL);
				memset(fp[n], 0, sizeof(fp[n]));
				fp[n][0].left = pre_s; /* not frames */
				fp[n][1].left = pre_r;
				n++;
				g_mutex_lock(&p->lock);
				p->accepted = n;
				g_mutex_unlock(&p->lock);
			}
		}
		for (unsigned k = 1; k < np; k++) {
			if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			unsigned i = map[k] / 2;
			bool from_sender = map[k] % 2 == 0;
			int from = from_sender ? sfd[i] : rfd[i], to = from_sender ? rfd[i] : sfd[i];
			if (from < 0)
				continue;
			size_t want = sizeof(buf);
			g_mutex_lock(&p->lock);
			if (p->exact && from_sender && p->cut_conn == (int)i && !p->cut_before &&
			    !p->cut_reply_to && p->cut_at > p->fwd[i])
				want = MIN(want, p->cut_at - p->fwd[i]); /* stop exactly at the cut */
			g_mutex_unlock(&p->lock);
			ssize_t got = recv(from, buf, want, 0);
			if (got <= 0) {
				/* One side closed: pass the close on, both ways. */
				close(sfd[i]);
				close(rfd[i]);
				sfd[i] = rfd[i] = -1;
				continue;
			}
			g_mutex_lock(&p->lock);
			bool mine = p->cut_conn == (int)i;
			bool holding = mine && from_sender && p->hold_to_end;
			g_mutex_unlock(&p->lock);
			if (holding) {
				g_byte_array_append(withheld, buf, (guint)got);
				size_t pass;
				if (!held_end(withheld->data, withheld->len, &pass))
					continue;
				if (to >= 0 && pass)
					(void)!send(to, withheld->data, pass, MSG_NOSIGNAL);
				g_byte_array_set_size(withheld, 0);
				cut(p, &sfd[i], &rfd[i], held, &nheld);
				continue;
			}
			g_mutex_lock(&p->lock);
			uint8_t type = mine && p->from_sender == from_sender ? p->cut_before : 0;
			uint8_t reply = mine && !from_sender && !p->reply_due ? p->cut_reply_to : 0;
			bool answer = mine && from_sender && p->reply_due; /* cut, not passed on */
			g_mutex_unlock(&p->lock);
			fparse *f = &fp[i][!from_sender];
			ssize_t at = -1, r;
			if (answer) {
				at = 0;
			} else if (!reply) {
				at = find_frame(f, buf, (size_t)got, type);
			} else if ((r = find_frame(f, buf, (size_t)got, reply)) >= 0) {
				/* That frame passes on whole: the parser goes on past its header. */
				size_t past = (size_t)r + TM_FRAME_HDR_LEN;
				(void)find_frame(f, buf + past, (size_t)got - past, 0);
				g_mutex_lock(&p->lock);
				p->reply_due = true;
				g_mutex_unlock(&p->lock);
			}
			size_t pass = at >= 0 ? (size_t)at : (size_t)got;
			if (to >= 0 && pass)
				(void)!send(to, buf, pass, MSG_NOSIGNAL);
			if (from_sender) {
				g_mutex_lock(&p->lock);
				p->fwd[i] += pass;
				g_mutex_unlock(&p->lock);
			}
			if (at >= 0)
				cut(p, &sfd[i], &rfd[i], held, &nheld);
		}
	}
	for (unsigned i = 0; i < n; i++) {
		if (sfd[i] >= 0)
			close(sfd[i]);
		if (rfd[i] >= 0)
			close(rfd[i]);
	}
	for (unsigned i = 0; i < nheld; i++)
		close(held[i]);
	g_byte_array_unref(withheld);
	return NULL;
}

char *proxy_start(cut_proxy *p, const char *port)
{
	unsigned pport = 0;
	memset(p, 0, sizeof(*p));
	g_mutex_init(&p->lock);
	p->cut_conn = -1;
	p->next_conn = -1;
	p->port = port;
	p->listen_fd = tm_listen("127.0.0.1", "0", &pport, NULL);
	g_assert_cmpint(p->listen_fd, >=, 0);
	p->thread = g_thread_new("cut-proxy", proxy_thread, p);
	return g_strdup_printf("%u", pport);
}

void proxy_stop(cut_proxy *p)
{
	g_mutex_lock(&p->lock);
	p->stop = true;
	g_mutex_unlock(&p->lock);
	g_thread_join(p->thread);
	close(p->listen_fd);
	g_mutex_clear(&p->lock);
}

