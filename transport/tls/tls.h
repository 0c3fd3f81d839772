/* SPDX-License-Identifier: MIT */
/*
 * TLS 1.3 on a channel (OpenSSL 3), as a wrapper around another I/O handle, the way QEMU's
 * io/channel-tls.c wraps its master channel.
 *
 * A session creates one tm_tls_ctx from a credentials directory (QEMU/libvirt layout, docs/tls.md).
 * Each channel's I/O handle is first opened with a byte mover (tm_io_open, through tm_chan_open,
 * with sockets or io_uring); tm_tls_wrap() then runs the TLS handshake over that handle and, on
 * success, replaces it with a TLS handle (ops tm_transport_tls) that owns it as its inner handle.
 * From then on the channel's sends and receives carry the tagmig stream inside TLS records and the
 * inner handle moves only ciphertext (kernel TLS aside: docs/tls.md). OpenSSL does the handshake;
 * who protects the records afterwards is a record engine per direction (tls-internal.h: OpenSSL's,
 * tagmig's own records, or kernel TLS). OpenSSL never touches the socket, it talks to a BIO whose
 * read and write call the inner handle's recv and send.
 *
 * Wiring it into channel setup is the same on both sides:
 *
 *	tm_chan_open(&ch, fd, id, inner_ops, timeout_ms, depth, error);
 *	if (tls && tm_tls_wrap(tls, &ch.io, error) < 0)
 *		{ tm_chan_close(&ch); fail; }          // ch.io is still the byte mover here
 *	... HELLO / DATA / END exchange through tm_chan_send / tm_chan_recv ...
 *	tm_tls_shutdown(ch.io, error);                // after END / END_ACK: close_notify both ways
 *	tm_chan_close(&ch);                           // the TLS handle, then the byte mover below
 *
 * The sender (client) should start channel 0 first and the others after it returned: channel 0
 * does the full handshake and leaves a session ticket in the context, the others resume it (they
 * may then start in parallel). A channel that starts while no ticket is cached does a full
 * handshake; tm_tls_ctx_get_stats() counts both kinds.
 *
 * After the TLS handshake the server sends an 8-byte confirmation ("TMTLS1\r\n") that the client
 * reads before tm_tls_wrap() returns: in TLS 1.3 the client finishes its handshake before the
 * server has checked the client's certificate, and this way a refusal reaches the client inside
 * tm_tls_wrap() with its reason, and channel 0's ticket has arrived before the other channels
 * start.
 *
 * Threads: a tm_tls_ctx is thread-safe (channels of one session start from several threads). A
 * TLS handle is used by one thread at a time, like any I/O handle. It counts only the system calls
 * it makes itself (kernel TLS); its inner handle counts its own. The wrapper has no submit hook
 * (OpenSSL reuses its record buffer, so a record cannot stay in flight): tm_chan_submit falls back
 * to a synchronous send.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "tagmig/session.h"
#include "transport/transport.h"

G_BEGIN_DECLS

typedef struct tm_tls_ctx tm_tls_ctx;

typedef enum tm_tls_role {
	TM_TLS_CLIENT, /* the sender: connects; verifies the receiver's certificate and name */
	TM_TLS_SERVER, /* the receiver: accepts; requires and verifies a client certificate */
} tm_tls_role;

/* Plaintext bytes per TLS record: the TLS maximum, which is also what gives the best throughput. */
#define TM_TLS_RECORD 16384u

typedef struct tm_tls_stats {
	uint64_t full_handshakes;    /* channels that did a full handshake (certificates) */
	uint64_t resumed_handshakes; /* channels that resumed a session from a ticket */
	uint64_t handshake_us;       /* wall time of all handshakes, summed over channels */
	uint64_t key_updates;        /* KeyUpdates sent (client) or received (server) */
	uint64_t ktls_channels;      /* channels whose records the kernel protects (kernel TLS) */
} tm_tls_stats;

/*
 * Records one key protects before the sender moves to the next (KeyUpdate): 2^23 full records,
 * 128 GiB, under the 2^24.5 that RFC 8446 5.5 allows for AES-GCM.
 */
#define TM_TLS_KEY_LIMIT (UINT64_C(1) << 23)

/* 0 where this build has TLS; else -EOPNOTSUPP with the reason (tls-stub.c). */
int tm_tls_available(GError **error);

/*
 * Creates the TLS context of one session from creds_dir: ca-cert.pem plus server-cert.pem and
 * server-key.pem (TM_TLS_SERVER) or client-cert.pem and client-key.pem (TM_TLS_CLIENT), and
 * ca-crl.pem if it is there (revocation lists; every certificate of the peer's chain is then
 * checked against them).
 * hostname (client only, required there) is the name the server's certificate must carry: a DNS
 * name (subjectAltName DNS, wildcards allowed) or an IP address (subjectAltName IP): a name with
 * a ':' is an IPv6 address (in brackets or not; a zone, "fe80::1%eth0", is left out of the
 * check), one of digits and dots a dotted-decimal IPv4 address. TLS 1.3 only,
 * cipher suites TLS_AES_128_GCM_SHA256 (preferred), TLS_AES_256_GCM_SHA384,
 * TLS_CHACHA20_POLY1305_SHA256. Also probes kernel TLS (tm_tls_ctx_ktls_reason).
 * Returns 0 and *ret (free with tm_tls_ctx_free), or -errno with a message naming the file:
 * -ENOENT missing file, -EKEYREJECTED unusable certificate or key (or a key not matching its
 * certificate, or a ca-crl.pem without a readable list), -EINVAL missing hostname or one that cannot be checked (an invalid address, an
 * empty zone, a DNS name over 255 bytes). Thread-safe.
 */
int tm_tls_ctx_new(tm_tls_role role, const char *creds_dir, const char *hostname,
		   tm_tls_ctx **ret, GError **error);

/* Drops the caller's reference; channels started with ctx keep their own until closed. NULL ok. */
void tm_tls_ctx_free(tm_tls_ctx *ctx);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(tm_tls_ctx, tm_tls_ctx_free)

/*
 * Who protects the records of the sender-to-receiver direction, which carries the guest's memory,
 * on channels started from now on: tagmig's own record layer (own = true, the default; the sender
 * encrypts straight from guest RAM, the receiver decrypts straight into it) or OpenSSL's (false;
 * a session's tuning.tls_openssl_records). Both are TLS 1.3 on the wire and interoperate: a
 * side may use either whatever the peer uses. The other direction is always OpenSSL's. For
 * benchmarks and tests; not thread-safe against channels starting.
 */
void tm_tls_ctx_set_record_layer(tm_tls_ctx *ctx, bool own);

/*
 * Receiver only: besides coming from the CA, a sender's certificate must carry one of subjects
 * (NULL-terminated, not empty), each a subject in RFC 2253 form as
 * `openssl x509 -noout -subject -nameopt RFC2253` prints it ("CN=host1.example,O=Example"),
 * compared exactly; others are refused at the handshake, "not in the allow-list". Copies the
 * strings. Returns 0, or -EINVAL (client context, empty list) with *error. Before any channel.
 */
int tm_tls_ctx_set_authz(tm_tls_ctx *ctx, const char *const *subjects, GError **error);

/*
 * Applies a session's tuning (tagmig/session.h) to a new context: OpenSSL's record layer for
 * tls_openssl_records, kernel TLS off for no_ktls (the reason says so).
 */
void tm_tls_ctx_tune(tm_tls_ctx *ctx, const tm_tuning *t);

/*
 * Turns kernel TLS off for channels started from now on (it is on where tm_tls_ctx_new found it
 * usable: the tls ULP, and a kernel that takes new keys, Linux 6.14 on). Kernel TLS needs tagmig's record layer (our keys). For benchmarks and tests.
 */
void tm_tls_ctx_set_ktls(tm_tls_ctx *ctx, bool on);

/* Changes TM_TLS_KEY_LIMIT for channels started from now on (tests make it small). */
void tm_tls_ctx_set_key_limit(tm_tls_ctx *ctx, uint64_t records);

/* Handshake counters of every channel started with ctx. Thread-safe, any time. */
void tm_tls_ctx_get_stats(const tm_tls_ctx *ctx, tm_tls_stats *ret);

/*
 * Whether the kernel will protect the records of channels started with ctx (kernel TLS), or why
 * they are protected in user space: e.g. "kernel TLS offload unavailable (tcp_available_ulp:
 * 'mptcp', no 'tls'; modprobe tls adds it): records protected in user space". The string belongs
 * to ctx. Meant for a log line or the statistics of a run.
 */
const char *tm_tls_ctx_ktls_reason(const tm_tls_ctx *ctx);

/*
 * Whether the kernel offers the TLS ULP (kernel TLS offload). Returns 0 if it does, -EOPNOTSUPP
 * (or the -errno of reading the sysctl) with the reason in *error if not. Thread-safe.
 */
int tm_tls_ktls_probe(GError **error);

/*
 * Runs the TLS handshake over the open handle *io (a byte mover) and on success replaces *io with
 * a TLS handle wrapping it (ops tm_transport_tls; closing it with tm_io_free closes the inner
 * handle too). Blocks up to io->timeout_ms per read or write. Returns 0, or -errno with
 * "channel N: TLS handshake: <which check failed>" in *error; then *io is left as it was, to be
 * closed by the caller:
 *   -EKEYREJECTED  the peer's certificate is not issued by our CA, does not match the expected
 *                  name, is not meant for this use, or is revoked (or ca-crl.pem has no list
 *                  of its CA); or the peer refused ours
 *   -EKEYEXPIRED   a certificate has expired or is not valid yet (ours, as the peer says, or its)
 *   -EACCES        the client presented no certificate (or the server says we did not)
 *   -EPROTO        the peer does not speak TLS (e.g. a plaintext tagmig peer) or broke the protocol
 *   -EPROTONOSUPPORT  no TLS 1.3, or no common cipher suite
 *   -ECONNRESET, -ETIMEDOUT, ...  from the inner handle
 * -EALREADY if *io already is a TLS handle.
 */
int tm_tls_wrap(tm_tls_ctx *ctx, tm_io **io, GError **error);

/*
 * Ends the TLS session of io cleanly: sends close_notify, then waits for the peer's. Call it
 * after the last message of the session (END_ACK sent or received) on both sides; each side
 * sends before it reads, so they do not wait for each other. Returns 0, or -errno in *error:
 * -ECONNRESET "premature end" when the peer closed the connection without close_notify (the
 * stream may have been truncated), -EPROTO when the peer sent data instead of close_notify.
 * Returns 0 at once for a handle that is not a TLS handle (or NULL).
 */
int tm_tls_shutdown(tm_io *io, GError **error);

/*
 * Sends our close_notify now, ahead of tm_tls_shutdown() (which then only waits for the peer's):
 * for a side whose last message is sent but whose peer still answers, so that the peer's own
 * tm_tls_shutdown() does not wait a round trip for it. Receiving still works. Returns 0, or
 * -errno in *error; 0 at once for a handle that is not a TLS handle (or NULL).
 */
int tm_tls_close_notify(tm_io *io, GError **error);

/* Whether io is a TLS handle (tm_tls_wrap succeeded on it). false for NULL. */
bool tm_tls_active(const tm_io *io);

/* Cipher suite name of io (e.g. "TLS_AES_128_GCM_SHA256"), NULL if io is not a TLS handle. */
const char *tm_tls_cipher(const tm_io *io);

/* Which direction of io the kernel protects (kernel TLS): TM_TLS_KTLS_TX | TM_TLS_KTLS_RX, or 0. */
#define TM_TLS_KTLS_TX 1u
#define TM_TLS_KTLS_RX 2u
unsigned tm_tls_ktls(const tm_io *io);

/* Whether io's handshake resumed a session (false if not a TLS handle). */
bool tm_tls_resumed(const tm_io *io);

/*
 * The explanation of the last failed send or recv on TLS handle io, e.g. "TLS record
 * authentication failed (bad record MAC): the data was altered in transit", or NULL. The hooks
 * of tm_transport_ops return only -errno (-EBADMSG there); this is the text for the error
 * message (also the handle's last_error hook, so tm_io_reason gives it). Valid until the next
 * call on io.
 */
const char *tm_tls_last_error(const tm_io *io);

/*
 * Copies ctx's handshake counters, io's cipher and the note on who protects and moves the records
 * into ret (io: channel 0's handle, may be NULL); ctx NULL: no-op.
 */
void tm_tls_fill_stats(const tm_tls_ctx *ctx, const tm_io *io, tm_stats *ret);

/*
 * Whether the first bytes received on a plaintext channel look like a TLS handshake record (a
 * ClientHello): for a plaintext receiver to say "the sender speaks TLS" instead of "bad magic".
 * Needs at least 3 bytes.
 */
bool tm_tls_looks_like_tls(const uint8_t *buf, size_t len);

/*
 * The TLS wrapper's ops, installed by tm_tls_wrap(). tm_io_open() with it fails (-EINVAL): it
 * needs an inner handle.
 *
 * The sender-to-receiver direction (the guest's memory) runs on tagmig's own record layer by
 * default (records.c, tm_tls_ctx_set_record_layer): send() seals the first iovec of each call (a
 * message header with its page entries) in records of its own and cuts the rest (page data, tags)
 * into full 16 KiB records, encrypting straight from the caller's memory into a batch of up to 8
 * records that goes to the inner send at once; recv() reads ahead whatever ciphertext has
 * arrived (up to 16 records) and decrypts a record that fills the caller's iovecs straight into
 * them (guest RAM), shorter ones through a record-sized buffer. A record's bytes count as
 * received only after its tag is checked; on failure the caller's memory holds unverified
 * plaintext of that record (flipped ciphertext bits become flipped bytes there). That may be a
 * page marked present in an earlier round and re-sent: it keeps its present bit while its bytes
 * are altered, so the RAM of a failed migration must not be run (tm_receiver_wait()).
 *
 * The other direction, and both directions with OpenSSL's record layer, go through SSL_write and
 * SSL_read: the plaintext is gathered into 16 KiB records (OpenSSL copies it into its record
 * buffer) and decrypted in OpenSSL's buffer, then copied out.
 *
 * Errors: -EBADMSG (record failed authentication or malformed, or the peer's bad_record_mac
 * alert), -ECONNRESET (peer closed: with close_notify, or "premature end" without), -EPROTO (a
 * TLS message tagmig does not accept at this point, the peer's other fatal alerts), the inner
 * handle's -errno; the text is in tm_tls_last_error(). Whichever layer refuses a record tells
 * the peer with the fatal alert RFC 8446 names for it (tls-alert.c), and a send the peer stopped
 * taking is explained by the peer's alert when one has arrived.
 */
extern const tm_transport_ops tm_transport_tls;

G_END_DECLS
