/* SPDX-License-Identifier: MIT */
/*
 * The ciphertext path between a TLS channel and its inner handle, shared by the record engines:
 * outgoing records are collected in t->out and handed to the inner send together; incoming
 * ciphertext is read ahead into t->in, never waiting for bytes the peer has not sent.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "transport/tls/tls-internal.h"

int tm_tls_flush_out(tls_chan *t)
{
	if (t->nout == 0 || t->io_err)
		return t->io_err;
	struct iovec v = { .iov_base = t->out, .iov_len = t->nout };
	int r = tm_io_send(t->inner, &v, 1, t->nout);
	t->nout = 0;
	if (r < 0)
		t->io_err = r;
	return r;
}

int tm_tls_fill_in(tls_chan *t, size_t need, size_t ahead)
{
	if (t->in_len >= need)
		return 0;
	if (t->in_off + need + ahead > TM_TLS_IN) {
		memmove(t->in, t->in + t->in_off, t->in_len);
		t->in_off = 0;
	}
	size_t space = TM_TLS_IN - t->in_off - t->in_len;
	size_t want = MIN(need - t->in_len + ahead, space);
	int avail = 0;
	if (ioctl(t->inner->fd, FIONREAD, &avail) == 0 && avail > 0 && (size_t)avail > want)
		want = MIN((size_t)avail, space);
	struct iovec v = { .iov_base = t->in + t->in_off + t->in_len, .iov_len = want };
	int r = tm_io_recv(t->inner, &v, 1, want);
	if (r < 0) {
		t->io_err = r;
		return tm_tls_io_fatal(t, "receive");
	}
	t->in_len += want;
	return 0;
}
