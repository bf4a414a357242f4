/*
 * rpc.h - the internal RPC transport: request/response frames over TCP.
 *
 * Vectron's processes (workers, the placement driver, the CLI) talk to each
 * other with small binary requests: a method number and an opaque payload
 * (usually a protobuf) in, a status and a payload out.  The server side runs
 * on a libuv loop; the client side is blocking (plain sockets and poll()),
 * for heartbeat threads, the CLI and tests.
 *
 * Handshake.  Every connection starts by proving that the client knows the
 * cluster secret (a byte string, possibly empty: an empty secret on both
 * sides is "no auth", through the very same code path):
 *
 *   server -> client:  u32 magic "VXRP", u32 version (1), 32-byte nonce
 *   client -> server:  u32 magic "VXRP", u32 version (1),
 *                      32-byte tag = HMAC-SHA256(key = secret, msg = nonce)
 *
 * The nonce is fresh random bytes per connection (randombytes_buf), the tag
 * libsodium's crypto_auth_hmacsha256 with a key of any length, compared in
 * constant time.  A wrong tag is answered with one error frame (status
 * VX_RPC_EAUTH, payload "authentication failed"), a wrong magic or version
 * with one error frame (VX_RPC_EPROTO), and the connection is closed.  There
 * is no acknowledgement of a good handshake, so vx_rpc_client_connect cannot
 * tell a wrong secret: the first call on such a connection gets the
 * VX_RPC_EAUTH frame instead of its answer.  Only the connection is
 * authenticated; the frames that follow travel in the clear, unsigned:
 * the transport is for a trusted network.  A client that connects and does
 * not complete the handshake within handshake_timeout_ms is disconnected.
 *
 * Frames.  After the handshake both directions carry frames, all integers
 * little-endian:
 *
 *   u32 length      bytes after this field: 16 + payload length;
 *                   16 <= length <= max_frame (default 16 MiB)
 *   u32 method      chosen by the application
 *   u64 request id  chosen by the client; the response echoes it
 *   i32 status      0 in requests; in responses VX_RPC_OK or an error status
 *   payload         length - 16 bytes
 *
 * A response echoes the method and the request id of its request.  Requests
 * on one connection are dispatched in the order they arrive, but their
 * handlers may answer in any order (from any thread), so responses may come
 * back out of order; clients match them by request id.
 *
 * Errors.  Status values of the transport itself are the VX_RPC_E* codes
 * below (all <= -1000, clear of the VX_E* codes).  Handlers may answer with
 * any other negative status, e.g. a VX_E* code with a message payload.  The
 * transport knows no methods: the handler sees every request, and answering
 * a method it does not know (VX_RPC_EUNKNOWN_METHOD is the conventional
 * status) is the application's business.
 *
 * Method 0 (VX_RPC_PING) is the transport's: the server answers it itself,
 * with status 0 and no payload, and the handler never sees it.
 *
 * Connection-level errors are frames with request id 0 (client request ids
 * start at 1) and a message payload: a failed handshake, or a frame whose
 * length is outside [16, max_frame] (VX_RPC_ETOO_LARGE).  The server decides
 * on the length field alone, so an oversized body is never read into
 * memory; after such a frame it shuts down its sending side, reads and
 * discards whatever the peer still sends for up to a second (so that the
 * error frame is not destroyed by a TCP reset), then closes.
 *
 * Flow control: each connection has at most VX_RPC_MAX_PENDING requests
 * dispatched but not yet answered and written; past that the server stops
 * reading from it until replies go out (a client that sends but never reads
 * thus holds at most that many answers in the server's memory).
 *
 * Threading: the server's functions run on its loop thread, except
 * vx_rpc_reply, vx_rpc_call_peer (for a call not yet answered) and
 * vx_rpc_server_stats_get, which any thread may call.  A client object
 * belongs to one thread at a time.
 */
#ifndef VX_RPC_RPC_H
#define VX_RPC_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define VX_RPC_ERRMSG_LEN 256
#define VX_RPC_MAGIC 0x50525856u /* "VXRP" as little-endian bytes */
#define VX_RPC_VERSION 1u
#define VX_RPC_NONCE_LEN 32
#define VX_RPC_HEADER_LEN 20                 /* length field + 16 */
#define VX_RPC_DEFAULT_MAX_FRAME (16u << 20) /* server side, default */
#define VX_RPC_CLIENT_MAX_FRAME (1u << 30)   /* largest response a client takes */
#define VX_RPC_MAX_PENDING 1024              /* unanswered calls per connection */
#define VX_RPC_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
#define VX_RPC_PING 0u              /* method 0: the transport's ping, answered by the server itself */
#define VX_RPC_MUX_PROBE_MS 1000    /* a mux pings a peer silent this long while calls wait ... */
#define VX_RPC_MUX_DEAD_MS 2000     /* ... and gives the connection up when the ping goes unanswered */

/* Response status values. */
#define VX_RPC_OK 0
#define VX_RPC_EAUTH (-1001)           /* wrong cluster secret */
#define VX_RPC_EUNKNOWN_METHOD (-1002) /* for handlers: a method they do not serve */
#define VX_RPC_ETOO_LARGE (-1003)      /* frame length outside [16, max_frame] */
#define VX_RPC_EPROTO (-1004)          /* bad handshake magic or version */

/* Static text for a status: the transport's codes, else vx_strerror. */
const char *vx_rpc_strstatus(int32_t status);

/* ---- server ------------------------------------------------------------------------------ */

typedef struct vx_rpc_server vx_rpc_server;
typedef struct vx_rpc_call vx_rpc_call; /* one request awaiting its answer */

/* Called on the loop thread for every request.  payload is valid only
 * during the call.  The handler (or whoever it hands `call` to) must answer
 * with vx_rpc_reply exactly once, now or later, from any thread; an
 * unanswered call keeps its connection's memory and blocks
 * vx_rpc_server_close from completing. */
typedef void (*vx_rpc_handler)(void *data, vx_rpc_call *call, uint32_t method,
                               const uint8_t *payload, size_t len);

typedef struct vx_rpc_server_options {
    const char *secret; /* cluster secret (any bytes); NULL with secret_len 0 = empty */
    size_t secret_len;
    uint32_t max_frame;            /* largest request length field; 0 = 16 MiB */
    unsigned handshake_timeout_ms; /* 0 = VX_RPC_DEFAULT_HANDSHAKE_TIMEOUT_MS */
} vx_rpc_server_options;

/* Listen on `address` ("127.0.0.1:7100"; port 0 = any free port).  opt
 * NULL = defaults with an empty secret.  Call on the loop thread (or before
 * the loop runs).  On failure nothing is left to release by the caller (the
 * handles are freed on the loop's next turn). */
int vx_rpc_server_new(uv_loop_t *loop, const char *address, const vx_rpc_server_options *opt,
                      vx_rpc_handler h, void *data, vx_rpc_server **out, char *errbuf);
/* The bound port. */
int vx_rpc_server_port(vx_rpc_server *s);

/* Answer a call exactly once, from any thread; payload is copied.  The
 * answer is queued for the loop thread (uv_async_send); when the call's
 * connection is gone by then, it is dropped. */
void vx_rpc_reply(vx_rpc_call *call, int32_t status, const uint8_t *payload, size_t len);
/* The peer address ("127.0.0.1:53412") of the call's connection, for logs;
 * valid until the call is answered. */
const char *vx_rpc_call_peer(vx_rpc_call *call);

/* Counters, readable from any thread (relaxed: for tests and metrics). */
typedef struct vx_rpc_server_stats {
    size_t connections; /* open (accepted, not yet closed) */
    size_t calls;       /* dispatched, not yet answered and written or dropped */
} vx_rpc_server_stats;
void vx_rpc_server_stats_get(vx_rpc_server *s, vx_rpc_server_stats *out);

/* Stop listening and close every connection.  Calls not yet answered are
 * still answered later by their handlers, and those answers dropped.
 * cb(data) (cb may be NULL) runs on the loop thread once everything is
 * released, i.e. after the last such answer; s is freed then. */
void vx_rpc_server_close(vx_rpc_server *s, void (*cb)(void *data), void *data);

/* ---- blocking client ---------------------------------------------------------------------
 * A client is one connection, used by one thread at a time, one call at a
 * time.  Any thread may own one; nothing is global; SIGPIPE is avoided with
 * MSG_NOSIGNAL.  timeout_ms bounds the whole operation (name resolution
 * aside); a negative value waits forever, 0 is VX_EINVAL.  Messages go to
 * errbuf (VX_RPC_ERRMSG_LEN bytes, may be NULL). */

typedef struct vx_rpc_client vx_rpc_client;

/* Connect to `address` ("host:port", IPv4) and do the handshake.  Success
 * does not prove the secret right (see the header comment). */
int vx_rpc_client_connect(const char *address, const char *secret, size_t secret_len,
                          int timeout_ms, vx_rpc_client **out, char *errbuf);

/* Send one request and wait for its response (matching request id; other
 * ids are discarded).  *resp is malloc'd (free it); NULL with *resp_len 0
 * for an empty payload.  Returns 0 when a response arrived, its status in
 * *status.  A connection-level error frame (wrong secret, request too large
 * for the server) also returns 0, with its status (VX_RPC_EAUTH,
 * VX_RPC_ETOO_LARGE, ...) in *status and its message as the payload; the
 * client is broken afterwards.  Returns VX_EIO on connection errors and
 * timeouts (the client is then broken: later calls fail at once; close it),
 * VX_EINVAL for bad arguments (len over 4 GiB - 17 included). */
int vx_rpc_client_call(vx_rpc_client *c, uint32_t method, const uint8_t *req, size_t len,
                       int timeout_ms, int32_t *status, uint8_t **resp, size_t *resp_len,
                       char *errbuf);
/* Between calls: is the connection still worth a request?  False when a
 * call failed on it before, or when the peer closed or reset it (or sent
 * anything) while it sat idle: poll() with a zero timeout, no blocking.
 * Connection pools check this before reusing a connection, so a request is
 * not written into a connection that is already dead (for a write, that
 * failure could not tell "not sent" from "sent, answer lost"). */
bool vx_rpc_client_usable(vx_rpc_client *c);
void vx_rpc_client_close(vx_rpc_client *c);

/* ---- multiplexed client ---------------------------------------------------------------------
 * One connection shared by many threads, each with calls in flight at once:
 * a caller writes its request frame (under a write lock, whole frames only)
 * and waits for the response with its request id; a reader thread reads
 * every response and hands it to its caller.  Calls do not wait for each
 * other (the server answers in any order).  A call that times out leaves
 * the connection usable (its late response is dropped on arrival); a failed
 * send or a dead connection fails every call in flight with VX_EIO, and the
 * mux stays broken (vx_rpc_mux_usable false): make a new one.  A
 * connection-level error frame (wrong secret) is delivered to every call in
 * flight, and to every later call on that mux, as its status (with its
 * message as the payload), as vx_rpc_client_call does.
 *
 * Liveness: a peer can vanish without a reset (a network partition, a
 * paused host): then nothing would ever fail the calls but their own
 * timeouts.  While calls wait and nothing has arrived for
 * VX_RPC_MUX_PROBE_MS, the reader sends a ping (method VX_RPC_PING, which
 * every server answers on its loop at once, never passing it to the
 * handler); if nothing arrives within VX_RPC_MUX_DEAD_MS of the ping, the
 * connection is declared dead and every call in flight fails with VX_EIO.
 * A slow answer from a live peer is no problem: its pings come back.
 *
 * Lifetime: reference counted.  vx_rpc_mux_connect returns one reference;
 * every thread that calls holds its own (vx_rpc_mux_ref) for the call; the
 * last vx_rpc_mux_unref closes the socket and joins the reader. */
typedef struct vx_rpc_mux vx_rpc_mux;

int vx_rpc_mux_connect(const char *address, const char *secret, size_t secret_len, int timeout_ms,
                       vx_rpc_mux **out, char *errbuf);
/* As vx_rpc_client_call, from any thread. */
int vx_rpc_mux_call(vx_rpc_mux *m, uint32_t method, const uint8_t *req, size_t len, int timeout_ms,
                    int32_t *status, uint8_t **resp, size_t *resp_len, char *errbuf);
bool vx_rpc_mux_usable(vx_rpc_mux *m);
unsigned vx_rpc_mux_inflight(vx_rpc_mux *m); /* calls waiting for their answer */
void vx_rpc_mux_ref(vx_rpc_mux *m);
void vx_rpc_mux_unref(vx_rpc_mux *m);

/* Connect, call, close. */
int vx_rpc_call_once(const char *address, const char *secret, size_t secret_len, uint32_t method,
                     const uint8_t *req, size_t len, int timeout_ms, int32_t *status,
                     uint8_t **resp, size_t *resp_len, char *errbuf);

#endif
