/* SPDX-License-Identifier: MIT */
/*
 * Shared by the files of transport/tls/: tls.c (context, credentials), tls-failure.c (failure
 * text), ktls-probe.c, tls-stats.c, tls-chan.c (the channel), tls-own.c, records.c, ktls.c.
 */
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "transport/tls/tls.h"

/* Kernel TLS's socket options, for headers that predate them (ktls.c, ktls-probe.c). */
#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* ---- records.c: tagmig's own TLS 1.3 record protection, one direction ---- */

#define TM_TLS_HDR 5u       /* type, legacy version, length */
#define TM_TLS_TAG 16u      /* AEAD tag of every cipher suite we offer */
#define TM_TLS_OVERHEAD (TM_TLS_HDR + 1u + TM_TLS_TAG) /* per record, with the content type */
#define TM_TLS_MAX_CIPHERTEXT (TM_TLS_RECORD + 256u)   /* RFC 8446 5.2 */

typedef struct tm_tls_dir {
	EVP_CIPHER_CTX *aead;
	const EVP_CIPHER *cipher;
	const EVP_MD *md;           /* the suite's hash: HKDF of key updates */
	uint8_t secret[EVP_MAX_MD_SIZE];
	size_t secret_len;
	uint8_t iv[12];
	uint64_t seq;               /* record sequence number under the current key */
	uint64_t records;           /* records protected with the current key */
	unsigned generation;        /* key updates so far */
	bool encrypt;
} tm_tls_dir;

/*
 * Sets d up for ssl's cipher suite from a traffic secret (key and IV derived per RFC 8446 7.3),
 * sequence number 0. Returns 0, -EPROTONOSUPPORT for a suite we do not know, -ENOMEM, -EPROTO.
 */
int tm_tls_dir_init(tm_tls_dir *d, const SSL *ssl, const uint8_t *secret, size_t secret_len,
		    bool encrypt);
/*
 * The same for the suite with TLS protocol id `suite` (0x1301-0x1303) without an SSL object: the
 * fuzz target and its seed generator (tests/fuzz/fuzz-tls-records.c) set up fixed keys with it.
 */
int tm_tls_dir_init_suite(tm_tls_dir *d, uint16_t suite, const uint8_t *secret,
			  size_t secret_len, bool encrypt);
/* Wipes the keys; d may be zeroed or half set up. */
void tm_tls_dir_free(tm_tls_dir *d);
/* Moves to the next traffic secret (KeyUpdate, RFC 8446 7.2); sequence number back to 0. */
int tm_tls_dir_update(tm_tls_dir *d);

/* The current key of d (EVP_MAX_KEY_LENGTH bytes of room), for kernel TLS. Wipe it after use. */
int tm_tls_dir_key(const tm_tls_dir *d, uint8_t *key, size_t *ret_len);

/*
 * ktls-probe.c: whether this kernel can take over TLS 1.3 records with our keys, key updates
 * included (TLS_TX set twice on a loopback connection: kernels before 6.14 refuse the second).
 * Returns 0, or -errno with the reason in *ret_reason (g_free).
 */
int tm_ktls_probe(char **ret_reason);

/*
 * Sealing one record of plain_len content bytes at rec: seal_begin writes the 5-byte header,
 * crypt encrypts the content in any number of pieces into rec + TM_TLS_HDR onwards, seal_end
 * appends the encrypted content type and the tag at out (right after the content).
 */
int tm_tls_seal_begin(tm_tls_dir *d, uint8_t *rec, size_t plain_len);
int tm_tls_crypt(tm_tls_dir *d, uint8_t *out, const uint8_t *in, size_t len);
int tm_tls_seal_end(tm_tls_dir *d, uint8_t type, uint8_t *out);
/*
 * Opening one record: open_begin with its header, crypt (decrypts) its body but the tag in any
 * number of pieces, open_end with the tag: 0, or -EBADMSG when the record is not authentic.
 */
int tm_tls_open_begin(tm_tls_dir *d, const uint8_t hdr[TM_TLS_HDR]);
int tm_tls_open_end(tm_tls_dir *d, const uint8_t *tag);

struct tm_tls_ctx {
	/* read-only after setup */
	gatomicrefcount ref;
	tm_tls_role role;
	SSL_CTX *ssl_ctx;
	char *hostname; /* client: the name the server's certificate must carry, as given */
	char *sni;      /* client: that name for SNI when it is a DNS name, else NULL */
	char *ktls_reason;
	char **authz;   /* server: the subjects a client certificate may carry (RFC 2253), or NULL */
	/* protected by ->lock */
	GMutex lock;
	SSL_SESSION *session; /* client: the newest resumable session (ticket) */
	bool own_records;       /* tagmig's record layer after the handshake (else OpenSSL's) */
	uint64_t key_limit;     /* records per key before a KeyUpdate (own record layer) */
	bool ktls;              /* hand our records to kernel TLS (ktls_reason says why not) */
	/* relaxed atomics */
	uint64_t full, resumed, handshake_us, key_updates, ktls_channels;
};

/*
 * Outgoing records are collected up to this many bytes and handed to the inner send together:
 * one send per 8 records instead of one per record, for one more copy of the ciphertext.
 * Measured with bench/tls-layer (4 channels, both backends): sending each record straight from
 * OpenSSL's buffer (no copy) costs about 15% more CPU per GiB and a third of the throughput;
 * 16 or 32 records per send are no better than 8.
 */
#define TM_TLS_OUT (8u * (TM_TLS_RECORD + 22u))

/*
 * Incoming ciphertext is read ahead into a buffer of this size: OpenSSL (without read-ahead)
 * asks for a record header, then for exactly its body, and one inner recv for each would be one
 * kernel round trip per 16 KiB. The BIO reads what OpenSSL asks for plus whatever the socket
 * already holds (FIONREAD), so it never waits for bytes the peer has not sent.
 */
#define TM_TLS_IN (16u * (TM_TLS_RECORD + 22u))

typedef struct tls_chan tls_chan;

/* Content types (RFC 8446 5.1) and the handshake message type we handle after the handshake. */
enum { TM_TLS_CT_ALERT = 21, TM_TLS_CT_HANDSHAKE = 22, TM_TLS_CT_DATA = 23, TM_TLS_HS_KEY_UPDATE = 24 };

/*
 * A record engine: who protects the records of one direction of a TLS channel once the handshake
 * is done. A channel has one per direction (t->tx_engine, t->rx_engine). OpenSSL's engine serves
 * both directions and is the only one for the receiver-to-sender direction; the sender-to-receiver
 * direction, which carries the guest's memory, may instead run on tagmig's own records
 * (tm_tls_engine_own: sealed from guest RAM, opened into it) or on kernel TLS (tm_tls_engine_ktls:
 * the same keys, the kernel seals and opens, sendmsg/recvmsg on the socket). All speak TLS 1.3 on
 * the wire and interoperate with whatever the peer uses.
 *
 * Hooks are called by tls-chan.c on the thread that owns the channel, after io_begin (t is not
 * broken, t->io_err is 0, OpenSSL's error queue is clear). On failure a hook returns -errno with
 * t->err_msg saying why (tm_tls_io_fail, tm_tls_fail) and marks t->broken when the stream cannot
 * go on; the channel then refuses every later call with -EPIPE. A send the peer's close or reset
 * ended marks t->tx_dead instead (tm_tls_io_fail): later sends are refused, reads go on.
 */
typedef struct tm_tls_engine {
	const char *name; /* "openssl", "tagmig", "ktls" */
	bool own_keys;    /* keys from tagmig's record layer (t->tx / t->rx), not OpenSSL's */
	bool kernel;      /* the kernel seals or opens the records: the handle's path is "ktls" */
	/*
	 * Optional. Called once after the handshake, for the direction this side protects with it
	 * (the client's sending, the server's receiving), before any record of that direction:
	 * takes it over. Returns 0, or -errno (t->err_msg set) and leaves the direction as it was.
	 */
	int (*start)(tls_chan *t);
	/* Sends exactly len bytes of iov[0..n) in records; 0 once the buffers may be reused. */
	int (*send)(tls_chan *t, const struct iovec *iov, unsigned n, size_t len);
	/*
	 * Fills exactly len bytes into iov[0..n). A record's bytes count as delivered only after its
	 * tag is checked; on failure the iovecs may hold unverified bytes of it. The peer's
	 * close_notify before len bytes is -ECONNRESET (t->rx_closed with tagmig's keys).
	 */
	int (*recv)(tls_chan *t, const struct iovec *iov, unsigned n, size_t len);
	/*
	 * Sends our close_notify as the last record of the sending direction (once: a second call
	 * sends nothing). Returns 0 (sent: the peer's is still to come), 1 (the peer's came already),
	 * or -errno.
	 */
	int (*close_notify)(tls_chan *t);
	/*
	 * Of the receiving direction, after ours is sent: waits for the peer's close_notify. 0 when
	 * it came; -EPROTO when data came instead; -ECONNRESET when the connection ended without it.
	 */
	int (*await_close)(tls_chan *t);
	/*
	 * Optional, receiving direction: t->rx has just moved to the next key (the peer's
	 * KeyUpdate); hands it to whoever opens the records. 0 or -errno (t->err_msg set).
	 */
	int (*rekey_rx)(tls_chan *t);
	/*
	 * Optional, sending direction: sends the fatal alert desc (RFC 8446 6.2) as the last record
	 * of this direction, after the channel failed (t->broken; tls-alert.c calls it once). Nothing
	 * may be sent in the direction afterwards. Returns 0 or -errno, and leaves t->err_msg alone:
	 * the failure it reports is the one to keep. Missing: this side cannot send alerts itself.
	 */
	int (*alert)(tls_chan *t, uint8_t desc);
} tm_tls_engine;

extern const tm_tls_engine tm_tls_engine_openssl; /* tls-openssl.c */
extern const tm_tls_engine tm_tls_engine_own;     /* tls-own.c */
extern const tm_tls_engine tm_tls_engine_ktls;    /* ktls.c: starts only after tm_tls_engine_own */

struct tls_chan {
	/* read-only after start */
	tm_tls_ctx *ctx; /* a reference */
	tm_io *inner;    /* the handle TLS wraps: it moves the ciphertext (owned by io) */
	tm_io *io;       /* the TLS handle itself (its counters: the kernel TLS path), once started */
	SSL *ssl;
	/* worker-local */
	uint8_t *stage;     /* TM_TLS_RECORD bytes: gathers iovec pieces shorter than a record */
	uint8_t *out;       /* TM_TLS_OUT bytes: records waiting to go to the inner send */
	size_t nout;
	size_t want;        /* plaintext bytes the current recv call still needs */
	uint8_t *in;        /* TM_TLS_IN bytes: ciphertext received ahead of OpenSSL's reads */
	size_t in_off;      /* the unread ciphertext is in[in_off, in_off + in_len) */
	size_t in_len;
	int io_err;         /* -errno of the inner handle's last failure, seen by the BIO */
	/* who protects each direction once the handshake is done (OpenSSL's until then) */
	const tm_tls_engine *tx_engine, *rx_engine;
	tm_tls_dir tx, rx;     /* tagmig's keys of the direction an own_keys engine protects */
	struct iovec *kv;      /* kernel TLS: the caller's iovecs, to advance over partial I/O */
	unsigned kv_cap;
	uint8_t *plain;     /* own_keys rx: TM_TLS_MAX_CIPHERTEXT bytes, an opened record's content */
	size_t plain_off, plain_len;
	bool rx_closed;     /* own_keys rx: the peer's close_notify arrived */
	bool tx_closed;     /* own_keys tx: our close_notify is sent */
	bool writes_barred; /* client, own records: OpenSSL may no longer write (nonce reuse) */
	bool write_blocked; /* ... and tried to */
	bool update_requested; /* client, own records: the receiver asked for a KeyUpdate (4.6.3) */
	/*
	 * Alerts on failures of tagmig's records (tls-alert.c). The server follows OpenSSL's sending
	 * direction record by record (keys from the key-log callback, sequence numbers and key
	 * updates from the message callback), so that it can seal an alert in it; the client keeps
	 * the fatal alert OpenSSL meant to send in the direction our records own.
	 */
	tm_tls_dir ossl_tx;    /* server: OpenSSL's sending direction as it stands */
	bool ossl_tx_ok;       /* ... followed since its first application record */
	bool ossl_alert_next;  /* OpenSSL has just sealed an alert: its next BIO write */
	uint8_t alert_wanted;  /* client: OpenSSL's fatal alert, refused on the wire (0: none) */
	bool alert_sent;       /* our fatal alert went out, or was tried: at most one */
	bool nowait;           /* the BIO reads only what has arrived (tm_tls_read_alert) */
	/* the client's traffic secret from the key-log callback, until the handshake ends */
	uint8_t secret[EVP_MAX_MD_SIZE];
	size_t secret_len;
	bool handshaking;
	bool broken;        /* a fatal error: no close_notify at close */
	/*
	 * A send found the connection closed or reset by the peer (tm_tls_io_fail): no more sends
	 * and no close_notify, but what the peer sent before its close (its tagmig ERROR, say) is
	 * still read, through either engine.
	 */
	bool tx_dead;
	/* OpenSSL rx: plaintext tm_tls_read_alert read on its way to an alert, for the next recv */
	GByteArray *kept;
	size_t kept_off;
	uint8_t first[5];   /* the first bytes received, to recognise a plaintext peer */
	unsigned nfirst;
	/* set by the verify callback when the peer's certificate fails */
	int verify_err;
	int verify_depth;
	char *verify_subject;
	char *verify_when; /* notBefore or notAfter of the failing certificate, for time errors */
	/* the last failure of send/recv (tm_tls_last_error) */
	char *err_msg;
};

tm_tls_ctx *tm_tls_ctx_ref(tm_tls_ctx *ctx);

/*
 * Turns the failure of an SSL call (its return value ret) on t into -errno and a message
 * (g_free it) saying which check failed; what is "handshake", "send", "receive", "close_notify"
 * (sending ours) or "close" (waiting for the peer's).
 * Clears the thread's OpenSSL error queue.
 */
int tm_tls_explain(tls_chan *t, int ret, const char *what, char **ret_msg);

/*
 * tls-failure.c: turns the failure of an SSL call (or, ret 0, of the inner handle in t->io_err)
 * into -errno and t->err_msg; see tm_tls_explain.
 */
int tm_tls_io_fail(tls_chan *t, int ret, const char *what);
/* tls-failure.c: the same for a failure of the inner handle under our records: fatal, but for a
 * send the peer's close ended (t->tx_dead). */
int tm_tls_io_fatal(tls_chan *t, const char *what);
/*
 * tls-failure.c: the peer sent the fatal alert `alert` (whoever read it: OpenSSL or our records):
 * -errno and a message (g_free it) saying what it means.
 */
int tm_tls_explain_alert(const tls_chan *t, int alert, char **ret_msg);
/* tls-failure.c: fails the session with a message of ours (msg, taken). Returns code. */
int tm_tls_fail(tls_chan *t, int code, char *msg);

/* tls-io.c: hands the collected records (t->out) to the inner send (-errno, also in t->io_err). */
int tm_tls_flush_out(tls_chan *t);
/*
 * tls-io.c: makes sure t->in holds `need` unread bytes. Reads what is missing plus whatever the
 * socket already holds (never waiting for it), plus `ahead` more bytes that must come anyway.
 */
int tm_tls_fill_in(tls_chan *t, size_t need, size_t ahead);

/* tls-openssl.c: a BIO whose read and write go to t's inner handle (NULL: out of memory). */
BIO *tm_tls_bio_new(tls_chan *t);
/* tls-openssl.c: writes len bytes through OpenSSL (SSL_write); 0 or -errno (t->err_msg). */
int tm_tls_ssl_write(tls_chan *t, const void *buf, size_t len);

/*
 * tls-own.c, for the engines with tagmig's keys: what a record of content type `type` with
 * content t->plain[0..len) means: data to deliver, the end of the session, or a key update.
 */
int tm_tls_own_content(tls_chan *t, uint8_t type, size_t len);
/* tls-own.c: await_close of the engines with tagmig's keys (reads through t->rx_engine). */
int tm_tls_own_await_close(tls_chan *t);

/*
 * A record whose content would fill at least this much of the caller's buffer is decrypted
 * straight into it; shorter ones (message headers, control messages) go through t->plain.
 */
#define TM_TLS_STREAM_MIN 512u

/* A position in an iovec array; zero-length entries are skipped (tls-own.c, ktls.c). */
typedef struct tm_tls_cursor {
	const struct iovec *v;
	unsigned n;
	size_t off;
} tm_tls_cursor;

/* The bytes left in the cursor's current iovec (0 at the end), skipping empty ones. */
static inline size_t tm_tls_cursor_span(tm_tls_cursor *c)
{
	while (c->n > 0 && c->off == c->v->iov_len) {
		c->v++;
		c->n--;
		c->off = 0;
	}
	return c->n > 0 ? c->v->iov_len - c->off : 0;
}

/*
 * tls.c: the key-log callback of both roles: keeps the client's traffic secret (own records) and
 * hands the server's to tm_tls_alert_follow.
 */
void tm_tls_keylog_cb(const SSL *ssl, const char *line);

/*
 * tls.c: the message callback of both roles: notes a KeyUpdate from the receiver that requests
 * one of ours (t->update_requested), which our record layer sends before its next record, and
 * passes what OpenSSL writes to tm_tls_alert_msg.
 */
void tm_tls_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
		   SSL *ssl, void *arg);

/* tls.c: the verify callback of both roles: records why the peer's chain failed. */
int tm_tls_verify_cb(int ok, X509_STORE_CTX *store);

/* ---- tls-alert.c: fatal alerts when tagmig's records fail (RFC 8446 6) ---- */

/*
 * Server, own records: OpenSSL's first application traffic secret of the server's sending
 * direction (from the key-log callback): t->ossl_tx follows that direction from sequence 0.
 */
void tm_tls_alert_follow(tls_chan *t, const SSL *ssl, const uint8_t *secret, size_t len);
/*
 * What OpenSSL writes, from the message callback: every record it seals (the sequence number of
 * t->ossl_tx), its KeyUpdates (the next key), and the alert it means to send (t->alert_wanted).
 */
void tm_tls_alert_msg(tls_chan *t, int write_p, int content_type, const uint8_t *buf, size_t len);
/*
 * Sends the fatal alert desc (SSL_AD_*) to the peer in t's sending direction, through its engine's
 * alert hook: once per channel, best effort (the connection may be gone), never touching
 * t->err_msg. Called on failures that RFC 8446 answers with an alert.
 */
void tm_tls_alert(tls_chan *t, uint8_t desc);
/*
 * Our send failed because the peer closed the connection or stopped reading: a peer whose
 * records failed sends its alert first. Reads, through OpenSSL and without waiting, what has
 * arrived in the receiving direction; at the peer's alert, explains the failure with it
 * (t->err_msg) and returns its -errno. 0: no alert has arrived (t->err_msg unchanged).
 */
int tm_tls_read_alert(tls_chan *t);
/* tm_tls_fail (msg taken), then the fatal alert desc to the peer. Returns code. */
int tm_tls_fail_alert(tls_chan *t, int code, uint8_t desc, char *msg);
/*
 * Seals the fatal alert desc with d's keys and sequence number into t->out and hands it to the
 * inner send. 0 or -errno; t->err_msg untouched.
 */
int tm_tls_seal_alert(tls_chan *t, tm_tls_dir *d, uint8_t desc);
