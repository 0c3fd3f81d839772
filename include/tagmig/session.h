/* SPDX-License-Identifier: MIT */
/*
 * Migration sessions: a sender that pushes dirty pages and their tags over N channels, and a
 * receiver that applies them to guest RAM. See docs/api.md for the life cycle a VMM follows.
 *
 * Threads: each session runs one worker thread per channel. Unless a function says otherwise it
 * must be called from one thread at a time (the VMM's migration thread); tm_*_get_stats() and
 * tm_receiver_page_present() may be called from any thread at any time.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

#include "export.h"
#include "ram.h"
#include "tagstore.h"
#include "wire.h"

G_BEGIN_DECLS

typedef struct tm_sender tm_sender;
typedef struct tm_receiver tm_receiver;

/* Statistics of one side; counters only grow. */
typedef struct tm_stats {
	uint64_t pages;                           /* pages sent (sender) or applied (receiver) */
	uint64_t pages_by_kind[TM_PAGE_KIND_COUNT]; /* NORMAL, ZERO, ZERO_TAGGED */
	uint64_t pages_by_tag_enc[TM_TAG_ENC_COUNT]; /* TAGS_ZERO, TAGS_UNIFORM, TAGS_PACKED */
	uint64_t packets;                         /* DATA messages */
	uint64_t syncs;                           /* sender: rounds ended (empty ones too) */
	uint64_t wire_bytes;                      /* every byte on the channels, framing included */
	uint64_t data_bytes;                      /* page data bytes on the wire */
	uint64_t tag_bytes;                       /* tag payload bytes on the wire */
	double seconds;                           /* from the end of the handshake to now or to the end */
	unsigned channels;
	char io_backend[16];                      /* I/O backend that ran: "io_uring" or "sockets" */
	uint64_t io_submissions;                  /* kernel submissions (SQEs, or syscalls) */
	uint64_t io_completions;                  /* completions reaped (io_uring) */
	uint64_t zc_sends;                        /* zero-copy sends issued */
	uint64_t zc_copied;                       /* of those, completed by copying after all */
	char io_note[160];                        /* why the default backend was not used, or "" */
	/* TLS (all zero / empty without it) */
	uint64_t tls_full_handshakes;             /* channels that did a full handshake */
	uint64_t tls_resumed_handshakes;          /* connections that resumed channel 0's session
	                                           * (protocol 2: the control connection too) */
	double tls_handshake_seconds;             /* wall time of all handshakes, summed */
	char tls_cipher[48];                      /* e.g. "TLS_AES_128_GCM_SHA256" */
	char tls_note[160];                       /* why records are protected in user space */
} tm_stats;

/*
 * I/O backends: "io_uring" (alias "uring"; the default wherever its probe succeeds: io_uring
 * enabled, not blocked by seccomp or kernel.io_uring_disabled, the needed opcodes present) and
 * "sockets" (portable, blocking sendmsg/readv). A config's io_backend NULL takes the default; a
 * backend asked for by name that cannot run is refused with the reason. The library reads no
 * environment variable; the tagmig tool maps $TAGMIG_IO onto io_backend.
 */
TM_EXPORT const char *tm_io_backend_default(void);

/* 0 if backend name can run on this host, else -errno with the reason in *error. */
TM_EXPORT int tm_io_backend_probe(const char *name, GError **error);

/*
 * Switches for benchmarks and diagnosis, in both configs; all zero is the default. The library
 * reads no environment: the tagmig tool maps $TAGMIG_ZEROCOPY, $TAGMIG_TLS_RECORDS and
 * $TAGMIG_KTLS onto these fields (tagmig(1), ENVIRONMENT).
 */
typedef struct tm_tuning {
	int zerocopy;             /* io_uring zero-copy sends: 0 while they pay, 1 always, -1 never */
	bool tls_openssl_records; /* TLS records by OpenSSL's layer, not tagmig's in-place one */
	bool no_ktls;             /* never hand the TLS keys to the kernel (kernel TLS) */
} tm_tuning;

typedef struct tm_sender_config {
	unsigned channels;    /* 1..64; 0 means 4 */
	uint64_t chunk_size;  /* striping chunk (power of two >= packet_size); 0 means 2 MiB */
	uint32_t packet_size; /* page data bytes per packet (power of two, 64 KiB..16 MiB); 0: 512 KiB */
	const char *io_backend; /* NULL: tm_io_backend_default() */
	unsigned timeout_ms;  /* connect and handshake; then protocol 2: peer unresponsive (no
	                       * answer on the control connection) this long, never idle time;
	                       * protocol 1: any single blocked I/O. 0 means 60000 */
	unsigned queue_depth; /* packets in flight per channel (io_uring), 1..64; 0 means 4 */
	/*
	 * TLS 1.3 on every channel when set: a directory with ca-cert.pem, client-cert.pem and
	 * client-key.pem (docs/tls.md). tls_hostname is the name the receiver's certificate must
	 * carry; NULL means the host given to tm_sender_connect() (required with tm_sender_attach()).
	 */
	const char *tls_creds_dir;
	const char *tls_hostname;
	tm_tuning tuning;
} tm_sender_config;

/*
 * Creates a sender for layout and tag store (store may be NULL: no tags). Both must outlive the
 * sender; cfg may be NULL for defaults and is copied. Returns 0 or -errno (-EINVAL for a bad
 * configuration, -EOPNOTSUPP for an unsupported mode) with the reason in *error.
 */
TM_EXPORT int tm_sender_new(const tm_ram_layout *layout, tm_tag_store *tags,
			    const tm_sender_config *cfg, tm_sender **ret, GError **error);

/*
 * Opens the session: connects every channel to host:port, sends HELLO on each and waits for every
 * HELLO_ACK. On refusal by the receiver the error carries the receiver's message. Returns 0 or
 * -errno with *error set; after a failure only tm_sender_free() is allowed.
 */
TM_EXPORT int tm_sender_connect(tm_sender *sender, const char *host, const char *port,
				GError **error);

/*
 * Like tm_sender_connect() on sockets the VMM connected itself: fds[i] becomes channel i. The
 * sender owns the fds from the call on, also on failure. Protocol 2: n is the configured
 * channels + 1, the last one being the control connection. Without tm_sender_set_live(), n equal
 * to the configured channels means protocol 1 (what a VMM built against tagmig 0.1 does).
 * A socket (here and in tm_receiver_attach()) may have carried bytes of the VMM's own before (a
 * preamble, a proxy's handshake) if the VMM read all the peer sent of them and leaves it alone
 * from the call on: the session's byte counts (LINK_CHECK) start here.
 */
TM_EXPORT int tm_sender_attach(tm_sender *sender, const int *fds, unsigned n, GError **error);

/*
 * Queues pages of block for sending: pages[] are page indexes (any order, duplicates allowed).
 * Returns at once; channel workers read the pages' data and tags when they send them, so a page
 * written by the guest after this call is sent with its newer content or must be queued again.
 * Returns 0, -ERANGE (index out of the block) or the session's earlier failure.
 */
TM_EXPORT int tm_sender_queue_pages(tm_sender *sender, unsigned block, const uint64_t *pages,
				    size_t count, GError **error);

/*
 * Queues the pages whose bit is set in bitmap (bit i of bitmap[i / 64], least significant first)
 * for pages first_page .. first_page + npages - 1 of block (bit 0 is first_page).
 */
TM_EXPORT int tm_sender_queue_bitmap(tm_sender *sender, unsigned block, const uint64_t *bitmap,
				     uint64_t first_page, uint64_t npages, GError **error);

/*
 * End-of-round barrier: returns 0 once every page queued before the call has been written into
 * the receiver's RAM with its tags and marked present there, or -errno on failure of any channel.
 * A round with nothing queued since the last one, which is complete, completes at once: no SYNC
 * goes to the network (before postcopy, and while no connection is being resumed: then the
 * round waits for the resume, or fails with it, as any round does).
 */
TM_EXPORT int tm_sender_sync(tm_sender *sender, GError **error);

/*
 * Switchover: sends what is still queued, waits as tm_sender_sync() does, then tells the receiver
 * the migration is complete on every channel and waits for its acknowledgement. Returns 0 or -errno.
 * After it only tm_sender_get_stats() and tm_sender_free() are allowed.
 */
TM_EXPORT int tm_sender_finish(tm_sender *sender, GError **error);

/*
 * Copies the current statistics; thread-safe, also while connect or attach runs in another
 * thread (the channels' counters read zero until the session has started, and stay zero after a
 * failed setup). Final once tm_sender_finish() returned.
 */
TM_EXPORT void tm_sender_get_stats(tm_sender *sender, tm_stats *ret);

/* Stops the workers (abandoning a migration in progress), closes the channels. NULL: no-op. */
TM_EXPORT void tm_sender_free(tm_sender *sender);

/* Called from a channel worker after pages [first_page, first_page + npages) of block became present. */
typedef void (*tm_present_fn)(void *opaque, unsigned channel, unsigned block, uint64_t first_page,
			      uint64_t npages);

typedef struct tm_receiver_config {
	const char *io_backend; /* NULL: tm_io_backend_default() */
	unsigned timeout_ms;    /* accept and handshake; then as the sender's (docs/api.md,
	                         * "Timeouts and liveness"). 0 means 60000 */
	tm_present_fn on_present; /* optional */
	void *opaque;
	/*
	 * Guest RAM is all zero before the migration (fresh anonymous memory or new files): a zero
	 * page that has not arrived before needs no write, so it is neither read nor dirtied.
	 * Leave false when RAM may hold stale data; zero pages are then checked and cleared.
	 */
	bool ram_zeroed;
	/*
	 * TLS 1.3 on every channel when set: a directory with ca-cert.pem, server-cert.pem and
	 * server-key.pem; the sender must present a certificate issued by that CA.
	 */
	const char *tls_creds_dir;
	tm_tuning tuning;
	/*
	 * With TLS: NULL lets in any sender whose certificate comes from the CA; else a
	 * NULL-terminated, non-empty list of the subjects a sender's certificate may carry, in RFC
	 * 2253 form as `openssl x509 -noout -subject -nameopt RFC2253` prints them
	 * ("CN=src1.example,O=Example"), compared exactly (QEMU's tls-authz). Copied at new.
	 */
	const char *const *tls_authz;
} tm_receiver_config;

/* Creates a receiver; cfg may be NULL. Returns 0 or -errno. */
TM_EXPORT int tm_receiver_new(const tm_receiver_config *cfg, tm_receiver **ret, GError **error);

/*
 * Accepts the channels of one session on listen_fd (a listening socket the caller keeps) and
 * reads their HELLOs; channels may arrive in any order. The first HELLO's protocol is the
 * session's: protocol 2 brings channels + 1 connections (the control connection), protocol 1
 * the channels alone (tm_receiver_wire_version() tells). Fails (-EPROTO, -ERANGE, -ETIMEDOUT, ...)
 * on an inconsistent or incomplete session. The peer is not answered yet.
 */
TM_EXPORT int tm_receiver_accept(tm_receiver *receiver, int listen_fd, GError **error);

/*
 * Same on sockets the VMM accepted itself (in any order; protocol 2: channels + 1 of them); the
 * receiver owns them from the call on. They are handshaken at once (each one's handshake
 * deadline from its first byte: the sender reaches them one at a time); the first that fails its
 * handshake fails the call, named by its index in fds, unless tm_live_config.reconnect is set
 * (then the sender's redial of it is awaited through the hook: docs/api.md, "Resume").
 */
TM_EXPORT int tm_receiver_attach(tm_receiver *receiver, const int *fds, unsigned n, GError **error);

/*
 * The layout the sender announced (host pointers NULL), valid after accept until free; and
 * whether it sends tags. A VMM normally knows its layout; a tool can size its RAM from this.
 */
TM_EXPORT const tm_ram_layout *tm_receiver_announced_layout(tm_receiver *receiver);
TM_EXPORT bool tm_receiver_peer_sends_tags(tm_receiver *receiver);

/*
 * Compares layout (and whether tags is a store with tags) with what the sender announced. On a
 * difference it tells the sender why (ERROR on every channel) and returns -EINVAL with the same
 * message in *error; otherwise acknowledges every channel and starts the channel workers.
 * layout and tags must outlive the receiver; tags may be NULL (no tags).
 */
TM_EXPORT int tm_receiver_start(tm_receiver *receiver, const tm_ram_layout *layout,
				tm_tag_store *tags, GError **error);

/*
 * Gives up after accept (for instance when the caller cannot provide the announced RAM): tells the
 * sender why with an ERROR (code: positive errno) on every channel and closes them. Returns 0.
 */
TM_EXPORT int tm_receiver_abort(tm_receiver *receiver, int code, const char *message);

/*
 * Waits until the sender finished on every channel (0) or the migration failed (-errno); in
 * protocol 2 it returns 1 when a device-state section waits to be read (tm_receiver_next_state()
 * until it returns 0, then wait again), and sends READY once RAM and every section arrived. After a
 * failure the destination's guest RAM must not be run: a page being received when the channel
 * failed may hold bytes that were never verified (with TLS, the receiver decrypts into guest RAM
 * and checks each record's tag at its end), including pages marked present in an earlier round.
 * Postcopy: it returns 1 once more when the end of device state is reached (READY went: the guest
 * may start); a failure after the switch pauses postcopy instead (TM_PHASE_POSTCOPY_PAUSED,
 * TM_EVENT_PAUSED): -ENOTCONN with the cause, threads on missing pages stay blocked, placed pages
 * stay valid; then only cancel (FAILED), statistics and free remain.
 */
TM_EXPORT int tm_receiver_wait(tm_receiver *receiver, GError **error);

/*
 * Declares pages [first, first + count) of block as not needed (symbol version TAGMIG_0.2): the
 * session completes without them; they keep what the destination's RAM held. Without it
 * tm_receiver_wait() succeeds only when every page of every announced block was applied at least
 * once (-EPROTO "incomplete migration" otherwise; protocol 2 tells the sender too). Call after
 * accept and before wait returns; thread-safe. Returns 0, -ERANGE outside the announced layout,
 * -EBADFD in another state.
 */
TM_EXPORT int tm_receiver_waive_pages(tm_receiver *receiver, unsigned block, uint64_t first,
				      uint64_t count, GError **error);

/* Whether the page is present (data and tags applied). Thread-safe; false for bad indexes. */
TM_EXPORT bool tm_receiver_page_present(tm_receiver *receiver, unsigned block, uint64_t page);

TM_EXPORT void tm_receiver_get_stats(tm_receiver *receiver, tm_stats *ret);

/* NULL: no-op. Stops workers, closes the channels. */
TM_EXPORT void tm_receiver_free(tm_receiver *receiver);

/* ---- protocol 2: live configuration, versions, session id (symbol version TAGMIG_0.2) ---- */

/*
 * Live-migration settings (docs/design/live-engine.md). The first field is the size of the
 * struct as the caller compiled it: the library reads only min(size, sizeof(tm_live_config))
 * bytes and takes missing fields as zero, so a caller built against an older, shorter struct
 * keeps working. All zero (beyond size) is the default everywhere.
 */
typedef struct tm_live_config {
	uint32_t size;              /* sizeof(tm_live_config) as compiled by the caller (>= 8) */
	uint32_t wire_version;      /* sender: 0 or 2 = protocol 2; 1 = protocol 1 for an old receiver
	                             * (no control connection, no live features); receiver: ignored
	                             * (it serves the version the sender chose) */
	uint64_t max_downtime_us;   /* sender: target of tm_sender_advise(); 0 means 300000 */
	uint64_t rate_limit;        /* sender: bytes/s over all data channels until
	                             * tm_sender_guest_stopped(); 0 = unlimited */
	uint64_t switchover_bandwidth; /* sender: bytes/s tm_sender_advise() assumes; 0 = estimate */
	bool postcopy;              /* offer (sender: protocol 2; one more connection, the urgent
	                             * one) / accept (receiver: opens its userfaultfd in set_live) */
	bool uffd_user_mode_only;   /* receiver, postcopy: UFFD_USER_MODE_ONLY */
	bool uffd_borrow;           /* receiver, postcopy: use uffd instead of opening one */
	int uffd;                   /* receiver, with uffd_borrow: a userfaultfd after UFFDIO_API */
	uint32_t max_outstanding;   /* receiver: page requests in flight, 0..512; 0 means 256 */
	uint64_t max_state_section; /* receiver: bytes per state section; 0 means 1 GiB (max 2^40) */
	uint64_t max_state_total;   /* receiver: bytes of all sections; 0 means 4 GiB (max 2^42,
	                             * at least max_state_section) */
	const char *const *state_names; /* receiver: optional NULL-terminated list: sections must
	                                 * come with exactly these names in this order (copied) */
	bool no_resume;             /* either side: a broken data channel fails the session; by
	                             * default it reconnects and only the rest is re-sent (docs/api.md,
	                             * "Resume"). Needs tm_sender_connect() and tm_receiver_accept() */
	uint32_t resume_deadline_ms; /* sender: how long a broken connection may take to come back
	                              * (all its attempts); 0 means 30000. Receiver: with timeout_ms, how
	                              * long it waits for a broken control connection (RESUME_CONTROL)
	                              * to come back (timeout_ms + this: the sender may see the break
	                              * only as silence), and the most its accept's deadline moves on
	                              * past timeout_ms while the sender redials at setup; a data
	                              * channel waits as long as the session lives */
	uint32_t compress;          /* sender: tm_compress_mode of the page data; 0 = the default
	                             * (TM_COMPRESS_AUTO). Receiver: ignored (it accepts every codec
	                             * it was built with) */
	int32_t compress_level;     /* sender, TM_COMPRESS_ZSTD: -7..19; 0 = zstd's default (3) */
	uint64_t delta_cache_bytes; /* sender: bytes of last-sent page copies kept per channel for
	                             * delta encoding of re-sent pages (DELTA, protocol 2, not with
	                             * postcopy); 0 = off, else 1 MiB..1 TiB. Receiver: ignored (it
	                             * accepts deltas when offered) */
	/*
	 * Resume in attach mode (tm_*_attach(); docs/api.md, "Resume"): sockets the VMM connected
	 * give the library nowhere to reconnect, so without this hook such a session does not
	 * resume. Optional; ignored with tm_*_connect()/accept() and in protocol 1. A socket it
	 * returns may have carried bytes of the VMM's own first, as with tm_sender_attach().
	 * Sender: called when connection `connection` (a data channel's index,
	 * TM_RECONNECT_CONTROL, or TM_RECONNECT_URGENT after the switch to postcopy) broke, once per attempt (backoff, resume_deadline_ms), on the thread
	 * of that connection: several may call at once. Returns a new socket connected to where
	 * the receiver's hook takes connections, which the library owns from then on (closed on
	 * failure too), or -errno: that attempt failed.
	 * Receiver: called again and again (connection TM_RECONNECT_ANY) by a thread of
	 * tm_receiver_attach() while it handshakes the attached sockets (setup redials: an
	 * attached socket that fails its handshake is then dropped and its redial awaited instead
	 * of failing the session), then by the library's reconnect thread from the end of
	 * tm_receiver_start()'s handshake until tm_receiver_free(), never by two at once: returns
	 * the next incoming connection (owned by the library from then on), or -errno
	 * (-ETIMEDOUT, -EAGAIN: none within timeout_ms; it is called again).
	 * Either side: may block at most timeout_ms and must not call the session.
	 */
	int (*reconnect)(void *opaque, unsigned connection, unsigned timeout_ms);
	void *reconnect_opaque;
	uint32_t delta_policy;      /* sender, with delta_cache_bytes: tm_delta_policy, 0 =
	                             * TM_DELTA_AUTO (deltas only while the link, not the sender's
	                             * CPU, is the bottleneck); receiver: ignored */
	uint64_t uffd_features;     /* receiver, with uffd_borrow: the UFFD_FEATURE_* bits UFFDIO_API
	                             * granted that fd. With UFFD_FEATURE_MOVE (1 << 16) and a tag
	                             * store that places atomically (kvm-mte), postcopy places pages
	                             * by UFFDIO_MOVE (docs/api.md, "Postcopy placement"); 0: by copy.
	                             * Without uffd_borrow the library asks for it itself (arm64) */
	/*
	 * Receiver, postcopy, optional: vCPUs paused around background placement by copy
	 * (docs/api.md, "Postcopy placement: move or copy"). A page placed by copy into a
	 * page-resident tag store (kvm-mte without UFFDIO_MOVE: Linux before 6.8, or guest RAM not
	 * PROT_MTE) is present one ioctl before its tags; a vCPU that runs, not blocked in a fault
	 * on it, may touch it then and see zero tags. With these hooks the library calls
	 * vcpu_pause before it places such a batch (a run of consecutive background pages of one
	 * DATA packet: at most packet_size bytes) and vcpu_resume once the batch's tags are set;
	 * threads blocked on the batch's pages are woken only after vcpu_resume. Never called for
	 * pages a vCPU asked for (the urgent connection's), with move placement, or with a
	 * side-array store (soft, none: tags before the page), nor when the session has no tags.
	 * Data channels place batches at once: the library counts them, the first batch calls
	 * vcpu_pause, the last to end calls vcpu_resume, so the two alternate (pause, resume,
	 * pause, ...), one call at a time, from any data channel's thread.
	 * vcpu_pause(opaque): returns once no vCPU can touch guest RAM before vcpu_resume: each is
	 * out of guest mode and held there (KVM: kvm_run.immediate_exit and a signal out of
	 * KVM_RUN), or blocked in a userfault. A vCPU blocked on a page of the very batch cannot
	 * leave KVM_RUN before that page is woken, which comes after vcpu_resume: it must count
	 * as stopped, not be waited for (e.g. a vCPU that does not leave KVM_RUN within a bound
	 * counts as blocked). Returns 0, or -errno: the batch is placed anyway, unpaused (counted
	 * in background_nonatomic_pages and pause_failures), and no vcpu_resume follows for it.
	 * vcpu_resume(opaque): lets them run again.
	 * Neither may call the session or wait for a page to be placed. Both or neither
	 * (-EINVAL). Statistics: tm_live_stats.paused_batches, pause_us, pause_failures.
	 */
	int (*vcpu_pause)(void *opaque);
	void (*vcpu_resume)(void *opaque);
	void *vcpu_pause_opaque;
} tm_live_config;

/* tm_live_config.reconnect's connection: the control connection / any (the receiver) / the
 * urgent connection of postcopy. */
#define TM_RECONNECT_CONTROL 0xffffu
#define TM_RECONNECT_ANY 0xfffeu
#define TM_RECONNECT_URGENT 0xfffdu

/*
 * Before tm_sender_connect()/attach(): the protocol and its live settings. Without this call a
 * sender speaks protocol 2 with defaults (tm_sender_attach() with exactly `channels` sockets
 * keeps the 0.1 meaning: protocol 1). Protocol 2 opens one more connection, the control
 * connection, and with postcopy offered also the urgent connection. Returns 0, -EINVAL (bad
 * field, named in *error; postcopy with wire_version 1), -EBUSY after connect. Migration thread.
 */
TM_EXPORT int tm_sender_set_live(tm_sender *sender, const tm_live_config *cfg, GError **error);

/*
 * Before tm_receiver_accept()/attach(): the limits this receiver announces in protocol 2. A
 * receiver serves protocol 1 and 2 senders alike, with or without this call. With postcopy it
 * opens its userfaultfd now (uffd_user_mode_only: UFFD_USER_MODE_ONLY) or takes the borrowed
 * one, and accepts a sender's offer; without, it declines offers. Returns 0, -EINVAL, -EPERM /
 * -ENOSYS (userfaultfd refused: the message says how to be allowed), -EBADF (uffd_borrow with
 * a closed fd), -EBUSY after accept. Migration thread.
 */
TM_EXPORT int tm_receiver_set_live(tm_receiver *receiver, const tm_live_config *cfg,
				   GError **error);

/* 1 or 2 once the handshake is done (the receiver knows it after accept), else 0. Any thread. */
TM_EXPORT unsigned tm_sender_wire_version(tm_sender *sender);
TM_EXPORT unsigned tm_receiver_wire_version(tm_receiver *receiver);

/*
 * The 16-byte session id of the HELLOs: 0, or -EBADFD before accept (receiver; the sender has
 * one from tm_sender_new()). Any thread.
 */
TM_EXPORT int tm_sender_get_session_id(tm_sender *sender, uint8_t ret[16]);
TM_EXPORT int tm_receiver_get_session_id(tm_receiver *receiver, uint8_t ret[16]);

/* ---- protocol 2: rounds, convergence, rate limit (symbol version TAGMIG_0.2) ---- */

/* Where a session is (tm_live_stats.phase). */
typedef enum tm_phase {
	TM_PHASE_SETUP = 0,           /* before the handshake completed */
	TM_PHASE_PRECOPY = 1,         /* rounds while the guest runs at the source */
	TM_PHASE_STOPPED = 2,         /* guest paused at the source: final round, device state */
	TM_PHASE_POSTCOPY = 3,        /* destination may run; missing pages on demand */
	TM_PHASE_COMPLETE = 4,        /* every page and every state section is at the destination */
	TM_PHASE_FAILED = 5,          /* terminal; the error says why */
	TM_PHASE_POSTCOPY_PAUSED = 6, /* a connection failed after the switch to postcopy */
} tm_phase;

/* The figures of one completed round (tm_sender_get_round()). */
typedef struct tm_round_stats {
	uint64_t round;        /* 1, 2, ...: round k ends at the k-th barrier (end_round or sync) */
	uint64_t pages_queued; /* pages handed to queue_* since the previous barrier (each index of
	                        * queue_pages, each set bit of queue_bitmap: what will be sent) */
	uint64_t pages_sent;   /* pages packed and sent on the data channels in the round */
	uint64_t wire_bytes;   /* bytes the data channels moved in the round, framing, the SYNC and
	                        * its acknowledgement included */
	double seconds;        /* from the previous barrier acknowledged (or the session's start)
	                        * to this one acknowledged */
	double busy_seconds;   /* of those, time with pages queued or in flight on some channel */
	bool throttled;        /* the rate limit held packets back in this round */
} tm_round_stats;

/*
 * Ends the round without waiting: queues the barrier tm_sender_sync() waits for, behind every
 * page queued so far, and returns its round number in *ret_round (tm_sender_sync() is end_round
 * plus the wait). Returns 0 or the session's failure. Migration thread.
 */
TM_EXPORT int tm_sender_end_round(tm_sender *sender, uint64_t *ret_round, GError **error);

/*
 * 1 if round has been acknowledged on every channel (every page queued before it is present at
 * the destination), 0 if not yet, -EINVAL for a round never ended, or the session's failure
 * (-errno, *error set). Never blocks. Any thread.
 */
TM_EXPORT int tm_sender_round_done(tm_sender *sender, uint64_t round, GError **error);

/* Copies a completed round's figures: 0, or -ENOENT (not complete, or older than the last
 * 1024 rounds). Any thread. */
TM_EXPORT int tm_sender_get_round(tm_sender *sender, uint64_t round, tm_round_stats *ret);

/* What tm_sender_advise() estimates. */
typedef struct tm_switch_advice {
	uint64_t bandwidth;            /* bytes/s assumed for the switchover; 0: no estimate yet */
	uint64_t pending_bytes;        /* queued, not yet sent, in estimated wire bytes */
	uint64_t dirty_bytes;          /* the dirty_pages given, in estimated wire bytes */
	uint64_t expected_downtime_us; /* (pending + dirty + state_bytes) / bandwidth (+ 2 RTT once
	                                * the control connection measures it); UINT64_MAX without
	                                * a bandwidth estimate, unless there is nothing to send */
	uint64_t max_downtime_us;      /* the target it is compared with */
	bool switch_now;               /* expected_downtime_us <= max_downtime_us */
	bool converging;               /* the last round's dirty rate (pages queued x bytes per
	                                * page / seconds) is below the bandwidth; false before a
	                                * round gave an estimate. false: consider postcopy */
} tm_switch_advice;

/*
 * The switchover helper (docs/api.md, "Rounds and convergence"). dirty_pages: what the VMM's
 * dirty log holds now, i.e. what the final round would send; state_bytes: its estimate of the
 * device state. Bandwidth: an average (EWMA) of the rounds' wire_bytes / busy_seconds, rounds
 * under 1 MiB or 5 ms left out, throttled rounds used only while there is no other;
 * tm_live_config.switchover_bandwidth overrides it. Returns 0 or -EBADFD before the handshake.
 * Any thread.
 */
TM_EXPORT int tm_sender_advise(tm_sender *sender, uint64_t dirty_pages, uint64_t state_bytes,
			       tm_switch_advice *ret);

/*
 * Change the switchover target (microseconds; 0: the default, 300 ms) and the rate limit
 * (bytes/s over all data channels together; 0: none). The rate limit takes effect for the next
 * packet, also for a worker waiting on the old limit. Both return 0, or -EBADFD once the
 * session has finished or failed. Any thread.
 */
TM_EXPORT int tm_sender_set_max_downtime(tm_sender *sender, uint64_t max_downtime_us);
TM_EXPORT int tm_sender_set_rate_limit(tm_sender *sender, uint64_t bytes_per_sec);

/*
 * The VMM has paused the guest: starts the downtime clock and lifts the rate limit for the rest
 * of the migration (a later tm_sender_set_rate_limit() does not bring it back). Next: queue the
 * final dirty log, tm_sender_put_state() per device-state section, then tm_sender_finish(),
 * which waits until the destination has all RAM and state (READY: the downtime clock stops,
 * tm_live_stats.downtime_us). Returns 0, -EBADFD (called twice, or the session is not open), or
 * the session's failure. Migration thread.
 */
TM_EXPORT int tm_sender_guest_stopped(tm_sender *sender, GError **error);

/*
 * Switches to postcopy, at any round (also before the first): the guest must be paused and its
 * final dirty log queued. Every page queued and not yet packed, and every page never sent, is
 * then missing at the destination (a copy it got before is discarded) and comes in the
 * background or on the destination's request; the rate limit applies again to the background.
 * Starts the downtime clock itself if the VMM did not call tm_sender_guest_stopped(), but
 * leaves the rate limit on (the packets the channels had packed go at once, charged). Device
 * state may follow (tm_sender_put_state()), then tm_sender_finish(), which returns once every
 * page is at the destination. Returns once every data channel has committed the switch (not
 * waiting for the network): 0, -EOPNOTSUPP (postcopy not agreed: not offered, protocol 1, or
 * declined by the receiver, which the message says; the downtime clock is not started: call
 * tm_sender_guest_stopped() to finish in precopy), -ENOTCONN (the urgent connection broke
 * before the switch and resume is off: nothing would reconnect it; the session is unchanged
 * and may end in precopy), -EBADFD (in postcopy already, device state started, or the session
 * is not open), or the session's failure. After 0 the source guest must never run again: a
 * failure from then on (a connection, the peer's silence or ERROR, a bad message; not
 * a cancel) pauses the session, TM_PHASE_POSTCOPY_PAUSED and TM_EVENT_PAUSED, and every call
 * returns -ENOTCONN quoting the cause; the sender keeps all it knows until tm_sender_free();
 * tm_sender_cancel() then gives the session up (FAILED). Migration thread.
 */
TM_EXPORT int tm_sender_start_postcopy(tm_sender *sender, GError **error);

/*
 * Live statistics. The first field is the size of the struct as the caller compiled it; the
 * library fills min(size, sizeof(tm_live_stats)) bytes and sets size to that. Fields a side or
 * an implemented step does not have read zero.
 */
typedef struct tm_live_stats {
	uint32_t size;              /* in: sizeof(tm_live_stats) as compiled by the caller */
	uint32_t phase;             /* tm_phase */
	uint32_t wire_version;
	uint32_t reserved;
	uint64_t rounds;            /* rounds completed: acknowledged (sender) or answered
	                             * (receiver) on every channel; an empty round sends no
	                             * SYNC, so the receiver does not count it, and a SYNC sent
	                             * again (refused deltas) counts once */
	uint64_t bandwidth;         /* sender: bytes/s estimate (as tm_sender_advise()), 0: none */
	uint64_t pending_bytes;     /* sender: queued, not yet sent, estimated wire bytes */
	uint64_t expected_downtime_us; /* sender: for pending_bytes alone */
	uint64_t max_downtime_us;
	uint64_t rate_limit;        /* sender: bytes/s in force now; 0 = none (or lifted) */
	uint64_t downtime_us;       /* sender: guest_stopped -> READY (the destination has all RAM and
	                             * read every state section); 0 before */
	uint64_t rtt_us;            /* control connection round trip (PING/PONG), smoothed; 0 before
	                             * the first PONG */
	uint64_t keepalives;        /* PINGs sent */
	uint64_t state_sections, state_bytes; /* put (sender) / delivered to the VMM (receiver) */
	/* postcopy */
	uint64_t postcopy_pages;    /* pages the destination lacked at the switch */
	uint64_t discarded_pages;   /* receiver: pages dropped by DISCARD */
	uint64_t requests;          /* sender: page requests answered; receiver: sent */
	uint64_t urgent_pages, background_pages; /* pages sent (received) on request / in the
	                             * background */
	uint64_t duplicate_pages;   /* receiver: copies skipped, the page was placed already */
	uint64_t faults;            /* receiver: userfaults read */
	uint64_t fault_p50_us, fault_p99_us, fault_max_us; /* receiver: fault read -> woken */
	uint64_t service_p50_us, service_p99_us; /* sender: request read -> reply sent */
	uint64_t inline_wait_p50_us, inline_wait_p99_us; /* sender: what a reply would have waited
	                             * on its page's data channel (its socket's unsent bytes at that
	                             * channel's throughput) */
	/* resume (docs/api.md, "Resume") */
	uint64_t reconnects;        /* connections (data channels, control) that broke and were
	                             * resumed */
	uint64_t resent_bytes;      /* sender: page and state bytes sent again after a reconnect */
	uint64_t resume_refused;    /* receiver: reconnects refused (another session, a wrong secret,
	                             * a bad handshake): strangers, the session went on */
	/* receiver, postcopy placement (docs/api.md, "Postcopy placement"); zero before the switch */
	uint32_t placement;         /* tm_placement: how pages are placed now */
	uint32_t reserved2;
	uint64_t moved_pages;       /* placed with data and tags in one step (UFFDIO_MOVE) */
	uint64_t copied_pages;      /* placed by UFFDIO_COPY / UFFDIO_ZEROPAGE, tags after or before */
	uint64_t background_nonatomic_pages; /* of copied_pages, background pages whose tags came
	                             * after the page was present while the guest may run (the
	                             * window of a page-resident tag store; 0 with move placement) */
	char placement_reason[192]; /* why that mode, e.g. "the userfaultfd has no
	                             * UFFD_FEATURE_MOVE (Linux 6.8+ ...)" */
	/* receiver, tm_live_config.vcpu_pause: background batches placed by copy */
	uint64_t paused_batches;    /* placed with the vCPUs paused (vcpu_pause returned 0) */
	uint64_t pause_us;          /* time they were paused for them: vcpu_pause called ->
	                             * vcpu_resume returned, summed */
	uint64_t pause_failures;    /* vcpu_pause returned an error: placed unpaused */
	/* sender, after the switch to postcopy */
	uint64_t end_count_mismatches; /* data channels whose END_ACK counted other than was sent:
	                             * the end went on, as the receiver had checked those counts
	                             * itself (docs/api.md, tm_sender_get_live_stats) */
	char end_count_mismatch[128]; /* the first of them, e.g. "channel 2: receiver applied 202
	                             * pages and 0 state chunks, 201 and 0 were sent"; "" if none */
} tm_live_stats;

/* tm_live_stats.placement */
typedef enum tm_placement {
	TM_PLACEMENT_NONE = 0, /* no postcopy placement (yet) */
	TM_PLACEMENT_COPY = 1, /* UFFDIO_COPY, tags, UFFDIO_WAKE */
	TM_PLACEMENT_MOVE = 2, /* stage + UFFDIO_MOVE: atomic for running vCPUs too */
} tm_placement;

/* Copies the live statistics: 0, or -EINVAL when ret->size < 8. Any thread. */
TM_EXPORT int tm_sender_get_live_stats(tm_sender *sender, tm_live_stats *ret);
TM_EXPORT int tm_receiver_get_live_stats(tm_receiver *receiver, tm_live_stats *ret);

/* ---- protocol 2: compression of page data (symbol version TAGMIG_0.2; docs/api.md) ---- */

/*
 * How the sender compresses page data (tm_live_config.compress). Protocol 2 only: the sender
 * offers the codecs the mode may use in its HELLO, the receiver accepts those it was built with,
 * and each packet then goes raw or compressed with one of them (docs/wire-format.md, ZDATA). A
 * packet that would not get smaller always goes raw. Protocol 1 never compresses.
 */
typedef enum tm_compress_mode {
	TM_COMPRESS_DEFAULT = 0, /* TM_COMPRESS_AUTO */
	TM_COMPRESS_NONE = 1,    /* never: nothing offered */
	TM_COMPRESS_AUTO = 2,    /* per channel, what moves page data fastest: none, lz4 or zstd
	                          * levels 1 and 3, measured on the link as it goes */
	TM_COMPRESS_LZ4 = 3,     /* every packet lz4 */
	TM_COMPRESS_ZSTD = 4,    /* every packet zstd at compress_level */
} tm_compress_mode;

/* "none", "auto", "lz4", "zstd"; NULL for an unknown mode (DEFAULT: "auto"). */
TM_EXPORT const char *tm_compress_mode_name(uint32_t mode);

/*
 * Parses "auto", "none", "lz4", "zstd" or "zstd:LEVEL" (-7..19) into *ret_mode and
 * *ret_level: 0, -EINVAL (the message says what is wrong), -EOPNOTSUPP (the codec is not built
 * into this library). Any thread.
 */
TM_EXPORT int tm_compress_parse(const char *text, uint32_t *ret_mode, int32_t *ret_level,
				GError **error);

/* What one channel's compression did. First field: the size as the caller compiled it. */
typedef struct tm_compress_stats {
	uint32_t size;              /* in: sizeof(tm_compress_stats) */
	uint32_t mode;              /* sender: tm_compress_mode in force (NONE when nothing was
	                             * agreed); receiver: 0 */
	uint32_t codecs;            /* agreed in the handshake: TM_FEATURE_LZ4 | TM_FEATURE_ZSTD */
	uint32_t last_codec;        /* the last packet's: 0 raw, 1 lz4, 2 zstd */
	int32_t last_level;         /* its zstd level (0 otherwise) */
	uint32_t reserved;
	uint64_t packets_by_codec[3]; /* DATA packets raw, ZDATA lz4, ZDATA zstd */
	uint64_t data_bytes;        /* page data of all packets, uncompressed */
	uint64_t wire_data_bytes;   /* what of it went on the wire: raw data plus compressed
	                             * sections */
	double ratio;               /* wire_data_bytes / data_bytes; 0 before any page data */
	double cpu_seconds;         /* thread CPU time spent compressing / decompressing */
	uint64_t link_bytes_per_sec; /* sender, auto: wire bytes per second the channel achieved
	                              * in its last measured window; 0 otherwise */
} tm_compress_stats;

/*
 * Copies channel's compression statistics (channel < channels): 0, -ERANGE (no such channel),
 * -EBADFD (before the handshake), -EINVAL (ret->size < 8). The library fills min(size,
 * sizeof(tm_compress_stats)) bytes and sets size to that. Any thread.
 */
TM_EXPORT int tm_sender_get_compress_stats(tm_sender *sender, unsigned channel,
					   tm_compress_stats *ret);
TM_EXPORT int tm_receiver_get_compress_stats(tm_receiver *receiver, unsigned channel,
					     tm_compress_stats *ret);

/* ---- protocol 2: delta encoding of re-sent pages (symbol version TAGMIG_0.2; docs/api.md) ---- */

/* What one channel's delta encoding did. First field: the size as the caller compiled it. */
typedef struct tm_delta_stats {
	uint32_t size;              /* in: sizeof(tm_delta_stats) */
	uint32_t agreed;            /* 1 when DELTA was agreed in the handshake */
	uint64_t cache_bytes;       /* sender: the cache's budget (delta_cache_bytes); receiver: 0 */
	uint64_t pages;             /* pages sent (receiver: applied) as deltas */
	uint64_t page_bytes;        /* their whole size: what they would have taken as pages */
	uint64_t wire_bytes;        /* what they took: deltas and their 24-byte entries */
	uint64_t refused;           /* pages whose base the receiver refused (DELTA_NACK); the
	                             * sender re-sent each whole */
	/* sender, TM_DELTA_AUTO (receiver: 0): the policy's windows (docs/api.md) */
	uint64_t windows_delta;     /* windows that ended choosing deltas */
	uint64_t windows_whole;     /* windows that ended choosing whole pages */
	uint64_t skipped;           /* pages with a copy to diff against sent whole by that choice */
	uint32_t policy;            /* tm_delta_policy in force */
	uint32_t reason;            /* tm_delta_reason of the last choice */
	uint64_t zdelta_packets;    /* packets of deltas sent (received) as ZDELTA: zstd-compressed,
	                             * with DELTA and ZSTD agreed (the sender's wire_bytes counts
	                             * them compressed, the receiver's the deltas it decoded) */
} tm_delta_stats;

/* How the sender chooses between a delta and the whole page (tm_live_config.delta_policy). */
typedef enum tm_delta_policy {
	TM_DELTA_AUTO = 0,   /* per channel, once per window of the compression policy's
	                      * measurements: deltas while they move re-sent pages faster than
	                      * whole pages on this link and this CPU (docs/api.md) */
	TM_DELTA_ALWAYS = 1, /* every re-sent page whose delta is small enough (bytes only) */
} tm_delta_policy;

/* Why the sender's last choice was what it was (tm_delta_stats.reason). */
typedef enum tm_delta_reason {
	TM_DELTA_REASON_NONE = 0,       /* no choice made yet (or DELTA not agreed) */
	TM_DELTA_REASON_ALWAYS = 1,     /* TM_DELTA_ALWAYS: deltas */
	TM_DELTA_REASON_UNMEASURED = 2, /* the link or a delta's cost not measured yet: whole */
	TM_DELTA_REASON_LINK = 3,       /* the link is the bottleneck: deltas */
	TM_DELTA_REASON_CPU = 4,        /* the sender's CPU is: a delta costs more time than its
	                                 * bytes save, whole */
} tm_delta_reason;

/*
 * Copies channel's delta statistics (channel < channels): 0, -ERANGE (no such channel), -EBADFD
 * (sender, before the handshake), -EINVAL (ret->size < 8). The library fills min(size,
 * sizeof(tm_delta_stats)) bytes and sets size to that. Any thread.
 */
TM_EXPORT int tm_sender_get_delta_stats(tm_sender *sender, unsigned channel,
					tm_delta_stats *ret);
TM_EXPORT int tm_receiver_get_delta_stats(tm_receiver *receiver, unsigned channel,
					  tm_delta_stats *ret);

/* ---- protocol 2: device state (symbol version TAGMIG_0.2; docs/api.md, "Device state") ---- */

#define TM_STATE_COPY 1u /* put_state flag: copy data now (else it must stay valid until finish) */

/*
 * One device-state section: name (1..255 bytes of UTF-8, no control characters), len bytes of
 * data (0 allowed). Protocol 2, after tm_sender_guest_stopped(); sections keep their call order
 * and travel after all RAM. Queues at once (blocks only for TM_STATE_COPY's copy); the first call
 * closes RAM: tm_sender_queue_*() and tm_sender_sync() then return -EBADFD. Without
 * TM_STATE_COPY data is referenced until tm_sender_finish() returns. Returns 0, -EINVAL (name,
 * flags), -EMSGSIZE (over the receiver's max_state_section / max_state_total, which the message
 * quotes), -EBADFD (guest not stopped, session not open), -EOPNOTSUPP (protocol 1), or the
 * session's failure. Migration thread.
 */
TM_EXPORT int tm_sender_put_state(tm_sender *sender, const char *name, const void *data,
				  size_t len, unsigned flags, GError **error);

typedef struct tm_state_info {
	char name[256];  /* NUL-terminated, validated: 1..255 bytes, UTF-8, no control characters */
	uint32_t index;  /* 0, 1, ... in the sender's put_state order */
	uint64_t length; /* bytes; tm_receiver_read_state() delivers exactly this many */
} tm_state_info;

/*
 * Blocks until the next device-state section can be read: returns 1 with *ret filled, 0 when
 * the sender marked the end of device state (at once in protocol 1, which has none), -errno on
 * failure. Sections are delivered in the sender's order, only once all RAM of the final round
 * is applied, each checked (length, name, order, the state_names of tm_receiver_set_live()).
 * A section not read to its end fails the session (-EPROTO). Migration thread (or any single
 * thread).
 */
TM_EXPORT int tm_receiver_next_state(tm_receiver *receiver, tm_state_info *ret, GError **error);

/*
 * Reads exactly len bytes of the current section (blocking until they arrived): 0, -EINVAL (no
 * section open, or len past its end: nothing read), -errno on failure. Same thread as
 * tm_receiver_next_state().
 */
TM_EXPORT int tm_receiver_read_state(tm_receiver *receiver, void *buf, size_t len,
				     GError **error);

/* ---- protocol 2: phases, cancel, events (symbol version TAGMIG_0.2) ---- */


/* The current phase. Any thread. */
TM_EXPORT tm_phase tm_sender_phase(tm_sender *sender);
TM_EXPORT tm_phase tm_receiver_phase(tm_receiver *receiver);

/*
 * Gives up the migration, from any thread (a monitor's), at any time between new and free. The
 * first reason wins: later calls, and calls once the session completed or failed, return
 * -EALREADY; so does the sender's once finish() decided the end with RESUME_CONTROL (the
 * default): the destination completes, and finish() returns 0. Every blocked call of this
 * side (connect, accept, sync, finish, wait) returns -ECANCELED with "sender cancelled:
 * <reason>" ("receiver cancelled: ..."), at once; protocol 2 tells the peer on the control
 * connection (within 200 ms, then every socket is shut down), and the peer's blocked calls
 * fail with that reason within a second. reason NULL: "cancelled".
 * Both sides stay freeable (tm_*_free from the migration thread, after its calls returned).
 * Returns 0 or -EALREADY.
 */
TM_EXPORT int tm_sender_cancel(tm_sender *sender, const char *reason);
TM_EXPORT int tm_receiver_cancel(tm_receiver *receiver, const char *reason);

/* Event bits, accumulated until taken (tm_*_take_events). */
#define TM_EVENT_ROUND    (1u << 0) /* sender: a sync round was acknowledged on every channel */
#define TM_EVENT_FAILED   (1u << 1) /* either: the session failed or was cancelled */
#define TM_EVENT_PAUSED   (1u << 2) /* either: TM_PHASE_POSTCOPY_PAUSED */
#define TM_EVENT_READY    (1u << 3) /* (device state, not used yet) */
#define TM_EVENT_COMPLETE (1u << 4) /* either: TM_PHASE_COMPLETE */
#define TM_EVENT_STATE    (1u << 5) /* (device state, not used yet) */
#define TM_EVENT_POSTCOPY (1u << 6) /* receiver: the sender switched, guest RAM is registered */
#define TM_EVENT_FAULTS   (1u << 7) /* receiver: threads wait on missing pages (at most 10/s) */

/*
 * An eventfd (EFD_NONBLOCK | EFD_CLOEXEC) owned by the session, valid until free: readable when
 * an event bit was set. Poll it in a main loop, then take the bits; the blocking calls stay.
 * Any thread.
 */
TM_EXPORT int tm_sender_event_fd(tm_sender *sender);
TM_EXPORT int tm_receiver_event_fd(tm_receiver *receiver);

/*
 * Reads the eventfd (without blocking) and returns and clears the accumulated bits: a bit is
 * never lost, a wake may be spurious (then 0). Any thread.
 */
TM_EXPORT uint32_t tm_sender_take_events(tm_sender *sender);
TM_EXPORT uint32_t tm_receiver_take_events(tm_receiver *receiver);

/*
 * Creates a listening TCP socket on host:port (host may be NULL for any address, port "0" picks
 * one). Returns the fd (>= 0) or -errno. *ret_port receives the bound port if not NULL.
 */
TM_EXPORT int tm_listen(const char *host, const char *port, unsigned *ret_port, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(tm_sender, tm_sender_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(tm_receiver, tm_receiver_free)

G_END_DECLS
