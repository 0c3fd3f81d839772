/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "tagmig/error.h"
#include "transport.h"

static const tm_transport_ops *const backends[] = {
	&tm_transport_socket,
};

const char *tm_io_backend_default(void)
{
	return tm_transport_socket.name;
}

int tm_transport_lookup(const char *name, const tm_transport_ops **ret, GError **error)
{
	const char *want = name;

	if (!want || !*want)
		want = g_getenv("TAGMIG_IO");
	if (!want || !*want)
		want = tm_io_backend_default();
	for (size_t i = 0; i < G_N_ELEMENTS(backends); i++) {
		if (g_strcmp0(backends[i]->name, want) != 0)
			continue;
		if (backends[i]->probe) {
			int r = backends[i]->probe(error);
			if (r < 0)
				return r;
		}
		*ret = backends[i];
		return 0;
	}
	g_set_error(error, TM_ERROR, ENOENT, "unknown I/O backend '%s' (this build has: sockets)",
		    want);
	return -ENOENT;
}

bool tm_failure_record(tm_failure *f, GError *err, bool from_peer)
{
	if (!f->error || (from_peer && !f->from_peer)) {
		g_clear_error(&f->error);
		f->error = err;
		f->from_peer = from_peer;
		return true;
	}
	g_error_free(err);
	return false;
}

void tm_counters_sum(const tm_counters *c, tm_stats *ret)
{
	ret->pages += __atomic_load_n(&c->pages, __ATOMIC_RELAXED);
	for (int k = 0; k < TM_PAGE_KIND_COUNT; k++)
		ret->pages_by_kind[k] += __atomic_load_n(&c->by_kind[k], __ATOMIC_RELAXED);
	for (int k = 0; k < TM_TAG_ENC_COUNT; k++)
		ret->pages_by_tag_enc[k] += __atomic_load_n(&c->by_enc[k], __ATOMIC_RELAXED);
	ret->packets += __atomic_load_n(&c->packets, __ATOMIC_RELAXED);
	ret->wire_bytes += __atomic_load_n(&c->wire_bytes, __ATOMIC_RELAXED);
	ret->data_bytes += __atomic_load_n(&c->data_bytes, __ATOMIC_RELAXED);
	ret->tag_bytes += __atomic_load_n(&c->tag_bytes, __ATOMIC_RELAXED);
}
