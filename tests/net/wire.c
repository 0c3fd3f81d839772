/* SPDX-License-Identifier: MIT */
/*
 * tm-wire: a point-to-point link between two network namespaces, emulated in user space, for
 * the tests and bench/ (tests/net/netns.sh starts it; tests/net/README.md).
 *
 * Why user space: the kernels of our build hosts have no sch_netem (see
 * ../shared/notes/machine.md), so `tc netem` cannot add delay, jitter or loss. tm-wire opens a
 * TUN device "tmw0" in each namespace and carries every IP packet from one to the other itself:
 * a FIFO per direction with a serialisation rate, a propagation delay with optional jitter (order
 * kept: a link does not reorder), random loss, and a drop-tail queue limit, as one link with a
 * router buffer would. The TUN devices live as long as this process: when it ends, the link is
 * gone.
 *
 * usage: tm-wire --ns-a NAME --ns-b NAME --link SPEC [--ready FILE] [--stats FILE] [--seed N]
 *               [--blackhole FILE]
 *   SPEC    RATE,DELAY[,jitter=TIME][,reorder][,loss=PERCENT%][,limit=BYTES][,mtu=BYTES]
 *           RATE: bits/s with k/m/g suffix and "bit" (200mbit, 1gbit) or 0/unlimited;
 *           DELAY/TIME: one-way, per direction, with us/ms/s (5ms; the round trip is twice);
 *           reorder: jitter may reorder packets (default: order is kept, as on one link);
 *           limit: the queue ahead of the link in bytes (default: 2 x rate x delay, >= 256 KiB);
 *           mtu: of both TUN devices (default 9000; what netns.sh configures).
 *   --ready FILE   written ("mtu N") once both devices exist
 *   --stats FILE   written at exit: one line per direction with packets and bytes forwarded,
 *                  packets lost (random loss), dropped (queue full), the largest queue, and
 *                  packets blackholed.
 *   --blackhole FILE  on SIGUSR1, FILE names a TCP port: from then on every packet to or from
 *                  that port is dropped, both ways, without a word (a path that died under one
 *                  connection; a TCP_INFO check, not a reset, finds it).
 * Ends on SIGTERM/SIGINT or when its parent dies.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_PACKET 65536
#define READ_BATCH 64

struct link_spec {
	uint64_t rate_bps; /* 0: unlimited */
	uint64_t delay_ns;
	uint64_t jitter_ns;
	uint32_t loss_ppm; /* per million */
	bool reorder;      /* jitter may let a packet overtake the one before it */
	uint64_t limit;    /* bytes */
	unsigned mtu;
};

struct packet {
	struct packet *next;
	uint64_t due_ns;
	uint32_t len;
	unsigned char data[];
};

struct direction {
	const char *name;
	int in, out;
	struct packet *head, *tail;
	uint64_t busy_until_ns; /* when the link finishes serialising what is queued */
	uint64_t last_due_ns;
	uint64_t packets, bytes, lost, dropped, max_backlog, reordered, blackholed;
};

static volatile sig_atomic_t stop, blackhole_due;
static unsigned blackhole_port; /* 0: none */

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void on_usr1(int sig)
{
	(void)sig;
	blackhole_due = 1;
}

/* The TCP ports of an IPv4 or IPv6 packet (no extension headers), or false. */
static bool tcp_ports(const unsigned char *p, uint32_t len, unsigned *sport, unsigned *dport)
{
	uint32_t off;

	if (len < 20)
		return false;
	if (p[0] >> 4 == 4) {
		if (p[9] != 6)
			return false;
		off = (uint32_t)(p[0] & 0xf) * 4;
	} else if (p[0] >> 4 == 6) {
		if (len < 40 || p[6] != 6)
			return false;
		off = 40;
	} else {
		return false;
	}
	if (len < off + 4)
		return false;
	*sport = (unsigned)p[off] << 8 | p[off + 1];
	*dport = (unsigned)p[off + 2] << 8 | p[off + 3];
	return true;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng_next(void)
{
	/* xorshift64*: fixed seed by default, so a run's losses repeat. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1du;
}

static void die(const char *what)
{
	fprintf(stderr, "tm-wire: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "tm-wire: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
	exit(2);
}

/* "5ms", "200us", "0.5ms", "1s" -> ns; -1 on error. */
static int64_t parse_time(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || v < 0)
		return -1;
	if (!strcmp(end, "s"))
		v *= 1e9;
	else if (!strcmp(end, "ms"))
		v *= 1e6;
	else if (!strcmp(end, "us"))
		v *= 1e3;
	else if (!strcmp(end, "ns"))
		;
	else
		return -1;
	if (v > 60e9)
		return -1;
	return (int64_t)v;
}

/* "200mbit", "1gbit", "25gbit", "800kbit", "0", "unlimited" -> bits/s; -1 on error. */
static int64_t parse_rate(const char *s)
{
	char *end;
	double v;

	if (!strcmp(s, "unlimited"))
		return 0;
	v = strtod(s, &end);
	if (end == s || v < 0)
		return -1;
	if (!strcasecmp(end, "gbit"))
		v *= 1e9;
	else if (!strcasecmp(end, "mbit"))
		v *= 1e6;
	else if (!strcasecmp(end, "kbit"))
		v *= 1e3;
	else if (!strcasecmp(end, "bit") || (!*end && v == 0))
		;
	else
		return -1;
	if (v > 1e12)
		return -1;
	return (int64_t)v;
}

static void parse_spec(const char *spec, struct link_spec *ret)
{
	char *copy = strdup(spec), *save = NULL, *tok;
	int field = 0;
	bool have_limit = false;

	if (!copy)
		die("strdup");
	*ret = (struct link_spec){ .mtu = 9000 };
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save), field++) {
		int64_t v;

		if (field == 0) {
			if ((v = parse_rate(tok)) < 0)
				usage_error("bad rate (e.g. 200mbit, 1gbit, unlimited)", tok);
			ret->rate_bps = (uint64_t)v;
		} else if (field == 1) {
			if ((v = parse_time(tok)) < 0)
				usage_error("bad delay (e.g. 5ms, 200us)", tok);
			ret->delay_ns = (uint64_t)v;
		} else if (!strncmp(tok, "jitter=", 7)) {
			if ((v = parse_time(tok + 7)) < 0)
				usage_error("bad jitter", tok);
			ret->jitter_ns = (uint64_t)v;
		} else if (!strcmp(tok, "reorder")) {
			ret->reorder = true;
		} else if (!strncmp(tok, "loss=", 5)) {
			char *end;
			double p = strtod(tok + 5, &end);

			if (end == tok + 5 || strcmp(end, "%") || p < 0 || p > 100)
				usage_error("bad loss (e.g. loss=0.1%)", tok);
			ret->loss_ppm = (uint32_t)(p * 10000.0 + 0.5);
		} else if (!strncmp(tok, "limit=", 6)) {
			char *end;
			unsigned long long l = strtoull(tok + 6, &end, 10);

			if (end == tok + 6 || *end || l < MAX_PACKET)
				usage_error("bad limit (bytes, at least 65536)", tok);
			ret->limit = l;
			have_limit = true;
		} else if (!strncmp(tok, "mtu=", 4)) {
			char *end;
			unsigned long m = strtoul(tok + 4, &end, 10);

			if (end == tok + 4 || *end || m < 1280 || m > 65000)
				usage_error("bad mtu (1280..65000)", tok);
			ret->mtu = (unsigned)m;
		} else {
			usage_error("unknown link option", tok);
		}
	}
	if (field < 2)
		usage_error("link spec needs RATE,DELAY", spec);
	if (!have_limit) {
		/* Twice the bandwidth-delay product of the round trip, at least 256 KiB. */
		double bdp = (double)ret->rate_bps / 8.0 * 2.0 * (double)ret->delay_ns / 1e9;

		ret->limit = bdp * 2 > 262144 ? (uint64_t)(bdp * 2) : 262144;
		if (!ret->rate_bps)
			ret->limit = 64u << 20;
	}
	free(copy);
}

/* A TUN device "tmw0" in the network namespace NAME (ip netns). */
static int tun_in_ns(const char *ns)
{
	char path[512];
	struct ifreq ifr;
	int nsfd, fd;

	snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		die(path);
	if (setns(nsfd, CLONE_NEWNET) < 0)
		die("setns");
	close(nsfd);
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		die("/dev/net/tun");
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "tmw0");
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		die("TUNSETIFF tmw0");
	return fd;
}

/* Bytes queued ahead of the link (not yet serialised) at time now. */
static uint64_t backlog(const struct direction *d, const struct link_spec *ls, uint64_t now)
{
	if (!ls->rate_bps || d->busy_until_ns <= now)
		return 0;
	return (uint64_t)((double)(d->busy_until_ns - now) * (double)ls->rate_bps / 8e9);
}

static void enqueue(struct direction *d, const struct link_spec *ls, const unsigned char *buf,
		    uint32_t len, uint64_t now)
{
	struct packet *p;
	uint64_t start, due, q;

	unsigned sport, dport;
	if (blackhole_port && tcp_ports(buf, len, &sport, &dport) &&
	    (sport == blackhole_port || dport == blackhole_port)) {
		d->blackholed++;
		return;
	}
	if (ls->loss_ppm && rng_next() % 1000000u < ls->loss_ppm) {
		d->lost++;
		return;
	}
	q = backlog(d, ls, now);
	if (q + len > ls->limit) {
		d->dropped++;
		return;
	}
	if (q + len > d->max_backlog)
		d->max_backlog = q + len;
	start = d->busy_until_ns > now ? d->busy_until_ns : now;
	if (ls->rate_bps)
		start += (uint64_t)((double)len * 8e9 / (double)ls->rate_bps);
	d->busy_until_ns = start;
	due = start + ls->delay_ns;
	if (ls->jitter_ns) {
		int64_t j = (int64_t)(rng_next() % (2 * ls->jitter_ns + 1)) - (int64_t)ls->jitter_ns;

		due = (int64_t)due + j > (int64_t)start ? (uint64_t)((int64_t)due + j) : start;
	}
	if (!ls->reorder && due < d->last_due_ns) /* a link keeps order: jitter never overtakes */
		due = d->last_due_ns;
	if (due > d->last_due_ns)
		d->last_due_ns = due;

	p = malloc(sizeof(*p) + len);
	if (!p)
		die("malloc");
	p->next = NULL;
	p->due_ns = due;
	p->len = len;
	memcpy(p->data, buf, len);
	if (d->tail && d->tail->due_ns > due) { /* reorder: overtakes, keep the list by due time */
		struct packet **pp = &d->head;

		while ((*pp)->due_ns <= due)
			pp = &(*pp)->next;
		p->next = *pp;
		*pp = p;
		d->reordered++;
		return;
	}
	if (d->tail)
		d->tail->next = p;
	else
		d->head = p;
	d->tail = p;
}

static void deliver(struct direction *d, uint64_t now)
{
	while (d->head && d->head->due_ns <= now) {
		struct packet *p = d->head;

		/* A TUN write does not block; a full receive queue drops, as a NIC would. */
		if (write(d->out, p->data, p->len) == (ssize_t)p->len) {
			d->packets++;
			d->bytes += p->len;
		} else {
			d->dropped++;
		}
		d->head = p->next;
		if (!d->head)
			d->tail = NULL;
		free(p);
	}
}

static void drain_input(struct direction *d, const struct link_spec *ls, unsigned char *buf)
{
	for (int i = 0; i < READ_BATCH; i++) {
		ssize_t n = read(d->in, buf, MAX_PACKET);

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			die("read tun");
		}
		if (n > 0)
			enqueue(d, ls, buf, (uint32_t)n, now_ns());
	}
}

static void write_stats(const char *path, struct direction *dirs)
{
	FILE *f = fopen(path, "w");

	if (!f)
		die(path);
	for (int i = 0; i < 2; i++)
		fprintf(f, "%s packets %llu bytes %llu lost %llu dropped %llu max_backlog %llu "
			"reordered %llu blackholed %llu\n",
			dirs[i].name, (unsigned long long)dirs[i].packets,
			(unsigned long long)dirs[i].bytes, (unsigned long long)dirs[i].lost,
			(unsigned long long)dirs[i].dropped, (unsigned long long)dirs[i].max_backlog,
			(unsigned long long)dirs[i].reordered, (unsigned long long)dirs[i].blackholed);
	fclose(f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "ns-a", required_argument, NULL, 'a' }, { "ns-b", required_argument, NULL, 'b' },
		{ "link", required_argument, NULL, 'l' }, { "ready", required_argument, NULL, 'r' },
		{ "stats", required_argument, NULL, 's' }, { "seed", required_argument, NULL, 'S' },
		{ "blackhole", required_argument, NULL, 'B' }, { NULL, 0, NULL, 0 },
	};
	const char *ns_a = NULL, *ns_b = NULL, *spec = NULL, *ready = NULL, *stats = NULL;
	const char *blackhole = NULL;
	struct sigaction su = { .sa_handler = on_usr1 };
	struct link_spec ls;
	struct direction dirs[2];
	struct sigaction sa = { .sa_handler = on_signal };
	static unsigned char buf[MAX_PACKET];
	pid_t parent = getppid();
	int c, fa, fb;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'a': ns_a = optarg; break;
		case 'b': ns_b = optarg; break;
		case 'l': spec = optarg; break;
		case 'r': ready = optarg; break;
		case 's': stats = optarg; break;
		case 'S': rng_state = strtoull(optarg, NULL, 0) | 1; break;
		case 'B': blackhole = optarg; break;
		default: usage_error("usage: tm-wire --ns-a NS --ns-b NS --link SPEC [--ready F] [--stats F] [--seed N] [--blackhole F]", NULL);
		}
	}
	if (!ns_a || !ns_b || !spec || optind != argc)
		usage_error("usage: tm-wire --ns-a NS --ns-b NS --link SPEC [--ready F] [--stats F] [--seed N] [--blackhole F]", NULL);
	parse_spec(spec, &ls);

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGUSR1, &su, NULL);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent) /* the parent died before the line above */
		return 0;

	fa = tun_in_ns(ns_a);
	fb = tun_in_ns(ns_b);
	dirs[0] = (struct direction){ .name = "a_to_b", .in = fa, .out = fb };
	dirs[1] = (struct direction){ .name = "b_to_a", .in = fb, .out = fa };

	if (ready) {
		FILE *f = fopen(ready, "w");

		if (!f)
			die(ready);
		fprintf(f, "mtu %u\n", ls.mtu);
		fclose(f);
	}

	while (!stop) {
		struct pollfd pfd[2] = { { .fd = fa, .events = POLLIN }, { .fd = fb, .events = POLLIN } };
		struct timespec ts, *tp = NULL;
		uint64_t now = now_ns(), next = UINT64_MAX;

		for (int i = 0; i < 2; i++)
			if (dirs[i].head && dirs[i].head->due_ns < next)
				next = dirs[i].head->due_ns;
		if (next != UINT64_MAX) {
			uint64_t wait = next > now ? next - now : 0;

			ts.tv_sec = (time_t)(wait / 1000000000u);
			ts.tv_nsec = (long)(wait % 1000000000u);
			tp = &ts;
		}
		if (ppoll(pfd, 2, tp, NULL) < 0 && errno != EINTR)
			die("ppoll");
		if (blackhole_due) {
			FILE *f = blackhole ? fopen(blackhole, "r") : NULL;

			blackhole_due = 0;
			if (!f || fscanf(f, "%u", &blackhole_port) != 1 || blackhole_port > 65535)
				usage_error("SIGUSR1: --blackhole FILE names no TCP port", blackhole);
			fclose(f);
		}
		for (int i = 0; i < 2; i++)
			if (pfd[i].revents & POLLIN)
				drain_input(&dirs[i], &ls, buf);
		now = now_ns();
		deliver(&dirs[0], now);
		deliver(&dirs[1], now);
	}
	if (stats)
		write_stats(stats, dirs);
	return 0;
}
