/* SPDX-License-Identifier: MIT */
/* The progress bar on a terminal's stderr (progress.h). */
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "progress.h"
#include "report.h"

struct cli_progress {
	/* read-only after setup */
	char *label;
	cli_progress_fn fn;
	void *opaque;
	double start;
	GThread *thread;
	/* protected by ->lock */
	GMutex lock;
	GCond cond;
	bool stop;
};

#define PROGRESS_WIDTH 30

static void progress_draw(cli_progress *p)
{
	uint64_t done = 0, total = 0, bytes = 0;
	double elapsed = cli_now() - p->start;
	char bar[PROGRESS_WIDTH + 1];

	p->fn(p->opaque, &done, &total, &bytes);
	double frac = total ? (double)MIN(done, total) / (double)total : 0;
	unsigned fill = (unsigned)(frac * PROGRESS_WIDTH);
	for (unsigned i = 0; i < PROGRESS_WIDTH; i++)
		bar[i] = i < fill ? '#' : '-';
	bar[PROGRESS_WIDTH] = '\0';
	if (total) {
		fprintf(stderr, "\r\033[K%s [%s] %5.1f%% %" PRIu64 "/%" PRIu64 " pages %.2f GiB/s",
			p->label, bar, 100 * frac, done, total, cli_gib_per_s(bytes, elapsed));
	} else {
		fprintf(stderr, "\r\033[K%s %" PRIu64 " pages %.2f GiB/s", p->label, done,
			cli_gib_per_s(bytes, elapsed));
	}
	fflush(stderr);
}

static gpointer progress_thread(gpointer data)
{
	cli_progress *p = data;

	g_mutex_lock(&p->lock);
	while (!p->stop) {
		gint64 deadline = g_get_monotonic_time() + G_TIME_SPAN_SECOND / 10;
		while (!p->stop && g_cond_wait_until(&p->cond, &p->lock, deadline))
			;
		if (p->stop)
			break;
		g_mutex_unlock(&p->lock);
		progress_draw(p);
		g_mutex_lock(&p->lock);
	}
	g_mutex_unlock(&p->lock);
	return NULL;
}

cli_progress *cli_progress_start(const char *label, cli_progress_fn fn, void *opaque)
{
	if (!isatty(STDERR_FILENO))
		return NULL;
	cli_progress *p = g_new0(cli_progress, 1);
	p->label = g_strdup(label);
	p->fn = fn;
	p->opaque = opaque;
	p->start = cli_now();
	g_mutex_init(&p->lock);
	g_cond_init(&p->cond);
	p->thread = g_thread_new("progress", progress_thread, p);
	return p;
}

void cli_progress_stop(cli_progress *p)
{
	if (!p)
		return;
	g_mutex_lock(&p->lock);
	p->stop = true;
	g_cond_signal(&p->cond);
	g_mutex_unlock(&p->lock);
	g_thread_join(p->thread);
	fputs("\r\033[K", stderr);
	fflush(stderr);
	g_mutex_clear(&p->lock);
	g_cond_clear(&p->cond);
	g_free(p->label);
	g_free(p);
}
