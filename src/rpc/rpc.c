/*
 * rpc.c - the internal RPC transport (protocol in rpc.h).
 *
 * Server: a uv_tcp listener; each connection reads into one growable buffer
 * and parses frames out of it.  The buffer grows to a frame's size only
 * after its length field passed the max_frame check, so an oversized frame
 * costs nothing.  Each dispatched request becomes a vx_rpc_call that holds a
 * reference on its connection until its answer is written (or dropped); the
 * connection itself is freed when its handles are closed and no call, write
 * or shutdown refers to it.  Answers come from any thread through a mutex-
 * protected queue and one uv_async_t; uv_async_send is done under the mutex
 * so that the loop cannot finish the last call and free the server between
 * a replying thread's enqueue and its wake-up.
 *
 * Client: a non-blocking socket, every wait a poll() against the call's
 * deadline.
 */
#include "rpc/rpc.h"

#include "base/handshake.h"

#include "base/err.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HELLO_LEN (8 + VX_RPC_NONCE_LEN) /* magic, version, nonce or tag */
#define MIN_LENGTH 16                    /* smallest length field: no payload */
#define READ_CHUNK (64 * 1024)           /* least free space offered to a read */
#define LINGER_MS 1000                   /* drain time after an error frame */

const char *vx_rpc_strstatus(int32_t status)
{
    switch (status) {
    case VX_RPC_EAUTH:
        return "authentication failed";
    case VX_RPC_EUNKNOWN_METHOD:
        return "unknown method";
    case VX_RPC_ETOO_LARGE:
        return "frame too large";
    case VX_RPC_EPROTO:
        return "protocol error";
    }
    return vx_strerror(status);
}

/* ---- encoding ------------------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put_header(uint8_t *h, size_t payload_len, uint32_t method, uint64_t id, int32_t status)
{
    put32(h, (uint32_t)(MIN_LENGTH + payload_len));
    put32(h + 4, method);
    put64(h + 8, id);
    put32(h + 16, (uint32_t)status);
}

/* The client's proof of the secret for the server's nonce (handshake.h). */
static void hello_tag(const char *secret, size_t secret_len, const uint8_t *nonce,
                      uint8_t tag[VX_HS_TAG_LEN])
{
    _Static_assert(VX_RPC_NONCE_LEN == VX_HS_NONCE_LEN, "one nonce size");
    vx_hs_tag((const uint8_t *)secret, secret ? secret_len : 0, "vectron-rpc-v1 client", nonce,
              NULL, NULL, 0, tag);
}

/* "host:port" -> host (NUL-terminated, < hostsz) and port string. */
static int split_address(const char *address, char *host, size_t hostsz, char *port, size_t portsz,
                         bool allow_zero)
{
    if (address == NULL) return VX_EINVAL;
    const char *colon = strrchr(address, ':');
    if (colon == NULL || colon == address || (size_t)(colon - address) >= hostsz) return VX_EINVAL;
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) >= portsz) return VX_EINVAL;
    unsigned v = 0;
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9') return VX_EINVAL;
        v = v * 10 + (unsigned)(*q - '0');
        if (v > 65535) return VX_EINVAL;
    }
    if (v == 0 && !allow_zero) return VX_EINVAL;
    snprintf(port, portsz, "%u", v & 0xffffu);
    return 0;
}

/* IPv4 address of host:port (blocking resolution). */
static int resolve4(const char *address, bool allow_zero, struct sockaddr_in *out, char *errbuf)
{
    char host[256], port[8];
    if (split_address(address, host, sizeof host, port, sizeof port, allow_zero) != 0)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EINVAL, "bad address %s (want host:port)",
                       address ? address : "(null)");
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int gr = getaddrinfo(host, port, &hints, &res);
    if (gr != 0 || res == NULL)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, gr == EAI_NONAME ? VX_EINVAL : VX_EIO,
                       "cannot resolve %s: %s", host, gai_strerror(gr));
    memcpy(out, res->ai_addr, sizeof *out);
    freeaddrinfo(res);
    return 0;
}

/* ---- server -------------------------------------------------------------------------------- */

enum { CONN_HANDSHAKE, CONN_OPEN, CONN_DRAINING, CONN_CLOSED };

typedef struct conn conn;

struct vx_rpc_call {
    uv_write_t wr;
    conn *c;
    vx_rpc_call *next; /* in the server's reply queue */
    uint32_t method;
    uint64_t id;
    uint8_t header[VX_RPC_HEADER_LEN];
    uint8_t *payload; /* the answer's copy */
    size_t len;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* handshake deadline, then the drain deadline */
    uv_write_t hello_wr, err_wr;
    uv_shutdown_t sd;
    vx_rpc_server *s;
    conn *prev, *next;
    int state;
    bool reading, paused; /* paused: stopped reading, too many pending calls */
    unsigned refs;        /* handles, writes, shutdown, calls */
    size_t pending;       /* calls not yet written or dropped */
    uint8_t hello[HELLO_LEN];
    uint8_t expect[crypto_auth_hmacsha256_BYTES];
    uint8_t err_frame[VX_RPC_HEADER_LEN + 64];
    uint8_t *buf; /* unparsed input */
    size_t len, cap;
    char peer[64];
};

struct vx_rpc_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_async_t async;
    pthread_mutex_t mu;
    vx_rpc_call *q_head, *q_tail; /* answers for the loop thread (mu) */
    vx_rpc_handler handler;
    void *data;
    uint8_t *secret;
    size_t secret_len;
    uint32_t max_frame;
    unsigned hs_timeout_ms;
    int port;
    conn *conns;
    bool closing, listener_closed, async_closing;
    void (*close_cb)(void *data);
    void *close_data;
    _Atomic size_t n_conns, n_calls;
};

static void maybe_finish(vx_rpc_server *s);

static void conn_unref(conn *c)
{
    if (--c->refs > 0) return;
    vx_rpc_server *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->buf);
    free(c);
    maybe_finish(s);
}

static void conn_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static void conn_close(conn *c)
{
    if (c->state == CONN_CLOSED) return;
    c->state = CONN_CLOSED;
    atomic_fetch_sub_explicit(&c->s->n_conns, 1, memory_order_relaxed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void conn_timer_cb(uv_timer_t *t)
{
    conn_close(t->data);
}

static void conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static void conn_read_start(conn *c)
{
    if (c->reading) return;
    if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb) != 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
}

static void conn_read_stop(conn *c)
{
    if (!c->reading) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
}

static void err_written_cb(uv_write_t *w, int status)
{
    conn *c = w->data;
    if (status != 0) conn_close(c);
    conn_unref(c);
}

static void shutdown_cb(uv_shutdown_t *sd, int status)
{
    conn *c = sd->data;
    if (status != 0) conn_close(c);
    conn_unref(c);
}

/* Answer a connection-level error (request id 0), stop sending, drain what
 * the peer still sends for a while, close. */
static void conn_fail(conn *c, int32_t status, const char *msg)
{
    if (c->state != CONN_HANDSHAKE && c->state != CONN_OPEN) return;
    c->state = CONN_DRAINING;
    size_t n = strlen(msg);
    if (n > sizeof c->err_frame - VX_RPC_HEADER_LEN) n = sizeof c->err_frame - VX_RPC_HEADER_LEN;
    put_header(c->err_frame, n, 0, 0, status);
    memcpy(c->err_frame + VX_RPC_HEADER_LEN, msg, n);
    uv_buf_t b = uv_buf_init((char *)c->err_frame, (unsigned)(VX_RPC_HEADER_LEN + n));
    c->err_wr.data = c;
    if (uv_write(&c->err_wr, (uv_stream_t *)&c->tcp, &b, 1, err_written_cb) != 0) {
        conn_close(c);
        return;
    }
    c->refs++;
    c->sd.data = c;
    if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, shutdown_cb) != 0) {
        conn_close(c);
        return;
    }
    c->refs++;
    c->len = 0;
    c->paused = false;
    conn_read_start(c); /* to drain */
    uv_timer_start(&c->timer, conn_timer_cb, LINGER_MS, 0);
}

static void dispatch(conn *c, const uint8_t *frame, uint32_t length)
{
    vx_rpc_server *s = c->s;
    vx_rpc_call *call = calloc(1, sizeof *call);
    if (call == NULL) {
        conn_close(c); /* nothing sensible to answer with */
        return;
    }
    call->c = c;
    call->method = get32(frame);
    call->id = get64(frame + 4);
    c->refs++;
    c->pending++;
    atomic_fetch_add_explicit(&s->n_calls, 1, memory_order_relaxed);
    if (call->method == VX_RPC_PING) { /* the transport's own: answered here, at once */
        vx_rpc_reply(call, VX_RPC_OK, NULL, 0);
        return;
    }
    s->handler(s->data, call, call->method, frame + MIN_LENGTH, length - MIN_LENGTH);
}

/* Parse (and dispatch) what is buffered, as far as state and flow control
 * allow.  Handlers run in here; one may close the server (and with it c). */
static void conn_parse(conn *c)
{
    vx_rpc_server *s = c->s;
    size_t off = 0;
    while (!c->paused) {
        size_t avail = c->len - off;
        const uint8_t *p = c->buf + off;
        if (c->state == CONN_HANDSHAKE) {
            if (avail < HELLO_LEN) break;
            if (get32(p) != VX_RPC_MAGIC || get32(p + 4) != VX_RPC_VERSION) {
                conn_fail(c, VX_RPC_EPROTO, "bad handshake (magic or version)");
                return;
            }
            if (sodium_memcmp(p + 8, c->expect, sizeof c->expect) != 0) {
                conn_fail(c, VX_RPC_EAUTH, "authentication failed");
                return;
            }
            off += HELLO_LEN;
            c->state = CONN_OPEN;
            uv_timer_stop(&c->timer);
            continue;
        }
        if (c->state != CONN_OPEN) return; /* closed by a handler */
        if (avail < 4) break;
        uint32_t length = get32(p);
        if (length < MIN_LENGTH || length > s->max_frame) {
            char msg[64];
            snprintf(msg, sizeof msg, "frame length %u outside [%u, %u]", length, MIN_LENGTH,
                     s->max_frame);
            conn_fail(c, VX_RPC_ETOO_LARGE, msg);
            return;
        }
        if (avail - 4 < length) break;
        off += 4 + (size_t)length;
        dispatch(c, p + 4, length);
        if (c->state != CONN_OPEN) return;
        if (c->pending >= VX_RPC_MAX_PENDING) {
            c->paused = true;
            conn_read_stop(c);
        }
    }
    if (off > 0) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
    if (c->len == 0 && c->cap > 4 * READ_CHUNK) { /* after a large frame */
        free(c->buf);
        c->buf = NULL;
        c->cap = 0;
    }
}

static void conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    conn *c = h->data;
    if (c->state == CONN_DRAINING) c->len = 0; /* discard */
    size_t need = c->len + READ_CHUNK / 4;
    if (c->state == CONN_OPEN && c->len >= 4) {
        /* parse has checked this length against max_frame already */
        size_t frame = 4 + (size_t)get32(c->buf);
        if (frame > need && frame <= 4 + (size_t)c->s->max_frame) need = frame;
    }
    if (c->cap < need) {
        size_t cap = c->len + READ_CHUNK;
        if (cap < need) cap = need;
        uint8_t *nb = realloc(c->buf, cap);
        if (nb == NULL) {
            *b = uv_buf_init(NULL, 0); /* UV_ENOBUFS follows */
            return;
        }
        c->buf = nb;
        c->cap = cap;
    }
    size_t avail = c->cap - c->len;
    if (avail > (size_t)1 << 30) avail = (size_t)1 << 30;
    *b = uv_buf_init((char *)c->buf + c->len, (unsigned)avail);
}

static void conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    (void)b;
    conn *c = st->data;
    if (nread == 0) return;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (c->state == CONN_DRAINING) return;
    c->len += (size_t)nread;
    conn_parse(c);
}

static void hello_written_cb(uv_write_t *w, int status)
{
    conn *c = w->data;
    if (status != 0) conn_close(c);
    conn_unref(c);
}

static void on_connection(uv_stream_t *ls, int status)
{
    vx_rpc_server *s = ls->data;
    if (status != 0 || s->closing) return;
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) return;
    c->s = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->refs = 2; /* the two handles */
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    atomic_fetch_add_explicit(&s->n_conns, 1, memory_order_relaxed);
    c->state = CONN_HANDSHAKE;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    snprintf(c->peer, sizeof c->peer, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &salen) == 0) {
        char ip[48] = "?";
        int port = 0;
        if (sa.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&sa;
            uv_ip4_name(in, ip, sizeof ip);
            port = ntohs(in->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
            uv_ip6_name(in6, ip, sizeof ip);
            port = ntohs(in6->sin6_port);
        }
        snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
    }
    put32(c->hello, VX_RPC_MAGIC);
    put32(c->hello + 4, VX_RPC_VERSION);
    vx_hs_nonce(c->hello + 8);
    hello_tag((const char *)s->secret, s->secret_len, c->hello + 8, c->expect);
    uv_buf_t b = uv_buf_init((char *)c->hello, HELLO_LEN);
    c->hello_wr.data = c;
    if (uv_write(&c->hello_wr, (uv_stream_t *)&c->tcp, &b, 1, hello_written_cb) != 0) {
        conn_close(c);
        return;
    }
    c->refs++;
    uv_timer_start(&c->timer, conn_timer_cb, s->hs_timeout_ms, 0);
    conn_read_start(c);
}

/* ---- answers ---- */

static void call_done(vx_rpc_call *call)
{
    conn *c = call->c;
    vx_rpc_server *s = c->s;
    free(call->payload);
    free(call);
    atomic_fetch_sub_explicit(&s->n_calls, 1, memory_order_relaxed);
    c->pending--;
    if (c->paused && c->state == CONN_OPEN && c->pending <= VX_RPC_MAX_PENDING / 2) {
        c->paused = false;
        conn_parse(c); /* frames buffered while paused */
        if (!c->paused && c->state == CONN_OPEN) conn_read_start(c);
    }
    conn_unref(c);
}

static void call_written_cb(uv_write_t *w, int status)
{
    vx_rpc_call *call = w->data;
    if (status != 0 && status != UV_ECANCELED) conn_close(call->c);
    call_done(call);
}

static void async_cb(uv_async_t *a)
{
    vx_rpc_server *s = a->data;
    pthread_mutex_lock(&s->mu);
    vx_rpc_call *call = s->q_head;
    s->q_head = s->q_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (call != NULL) {
        vx_rpc_call *next = call->next;
        conn *c = call->c;
        if (c->state != CONN_OPEN) {
            call_done(call); /* the connection is gone (or going): drop */
        } else {
            uv_buf_t b[2] = {uv_buf_init((char *)call->header, VX_RPC_HEADER_LEN),
                             uv_buf_init((char *)call->payload, (unsigned)call->len)};
            call->wr.data = call;
            if (uv_write(&call->wr, (uv_stream_t *)&c->tcp, b, call->len ? 2 : 1,
                         call_written_cb) != 0) {
                conn_close(c);
                call_done(call);
            }
        }
        call = next;
    }
}

void vx_rpc_reply(vx_rpc_call *call, int32_t status, const uint8_t *payload, size_t len)
{
    if (call == NULL) return;
    if (len > UINT32_MAX - MIN_LENGTH || (len > 0 && payload == NULL)) {
        status = VX_RPC_ETOO_LARGE;
        len = 0;
    }
    if (len > 0) {
        call->payload = malloc(len);
        if (call->payload == NULL) {
            status = VX_ENOMEM;
            len = 0;
        } else {
            memcpy(call->payload, payload, len);
        }
    }
    call->len = len;
    put_header(call->header, len, call->method, call->id, status);
    call->next = NULL;
    vx_rpc_server *s = call->c->s; /* c lives until this call is done */
    pthread_mutex_lock(&s->mu);
    if (s->q_tail)
        s->q_tail->next = call;
    else
        s->q_head = call;
    s->q_tail = call;
    uv_async_send(&s->async); /* under mu: see the file comment */
    pthread_mutex_unlock(&s->mu);
}

const char *vx_rpc_call_peer(vx_rpc_call *call)
{
    return call->c->peer;
}

/* ---- lifecycle ---- */

static void server_free_cb(uv_handle_t *h)
{
    vx_rpc_server *s = h->data;
    void (*cb)(void *) = s->close_cb;
    void *data = s->close_data;
    pthread_mutex_destroy(&s->mu);
    if (s->secret) sodium_memzero(s->secret, s->secret_len);
    free(s->secret);
    free(s);
    if (cb) cb(data);
}

static void maybe_finish(vx_rpc_server *s)
{
    if (!s->closing || !s->listener_closed || s->conns != NULL || s->async_closing) return;
    s->async_closing = true;
    uv_close((uv_handle_t *)&s->async, server_free_cb);
}

static void listener_closed_cb(uv_handle_t *h)
{
    vx_rpc_server *s = h->data;
    s->listener_closed = true;
    maybe_finish(s);
}

int vx_rpc_server_new(uv_loop_t *loop, const char *address, const vx_rpc_server_options *opt,
                      vx_rpc_handler h, void *data, vx_rpc_server **out, char *errbuf)
{
    static const vx_rpc_server_options defaults = {0};
    if (opt == NULL) opt = &defaults;
    if (loop == NULL || h == NULL || out == NULL)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EINVAL, "rpc server: missing argument");
    if (opt->secret == NULL && opt->secret_len > 0)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EINVAL, "rpc server: NULL secret");
    if (opt->max_frame != 0 && opt->max_frame < MIN_LENGTH)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EINVAL, "rpc server: max_frame %u < %u",
                       opt->max_frame, MIN_LENGTH);
    if (sodium_init() < 0)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "rpc server: sodium_init failed");
    struct sockaddr_in sa;
    int rv = resolve4(address, true, &sa, errbuf);
    if (rv != 0) return rv;
    vx_rpc_server *s = calloc(1, sizeof *s);
    size_t slen = opt->secret_len;
    if (s == NULL) return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_ENOMEM, "rpc server");
    s->secret = malloc(slen ? slen : 1);
    if (s->secret == NULL) {
        free(s);
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_ENOMEM, "rpc server");
    }
    if (slen) memcpy(s->secret, opt->secret, slen);
    s->secret_len = slen;
    s->loop = loop;
    s->handler = h;
    s->data = data;
    s->max_frame = opt->max_frame ? opt->max_frame : VX_RPC_DEFAULT_MAX_FRAME;
    s->hs_timeout_ms =
        opt->handshake_timeout_ms ? opt->handshake_timeout_ms : VX_RPC_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    pthread_mutex_init(&s->mu, NULL);
    rv = uv_async_init(loop, &s->async, async_cb);
    if (rv != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s->secret);
        free(s);
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "rpc server: %s", uv_strerror(rv));
    }
    s->async.data = s;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    rv = uv_tcp_bind(&s->listener, (const struct sockaddr *)&sa, 0);
    if (rv == 0) rv = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
    if (rv == 0) {
        struct sockaddr_in bound;
        int blen = sizeof bound;
        rv = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
        if (rv == 0) s->port = ntohs(bound.sin_port);
    }
    if (rv != 0) {
        vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "listen on %s: %s", address, uv_strerror(rv));
        s->closing = true; /* freed once the handles are closed */
        uv_close((uv_handle_t *)&s->listener, listener_closed_cb);
        return VX_EIO;
    }
    *out = s;
    return 0;
}

int vx_rpc_server_port(vx_rpc_server *s)
{
    return s->port;
}

void vx_rpc_server_stats_get(vx_rpc_server *s, vx_rpc_server_stats *out)
{
    out->connections = atomic_load_explicit(&s->n_conns, memory_order_relaxed);
    out->calls = atomic_load_explicit(&s->n_calls, memory_order_relaxed);
}

void vx_rpc_server_close(vx_rpc_server *s, void (*cb)(void *data), void *data)
{
    if (s->closing) return;
    s->closing = true;
    s->close_cb = cb;
    s->close_data = data;
    uv_close((uv_handle_t *)&s->listener, listener_closed_cb);
    for (conn *c = s->conns; c != NULL; c = c->next)
        conn_close(c);
}

/* ---- blocking client ----------------------------------------------------------------------- */

struct vx_rpc_client {
    int fd;
    bool broken;
    uint64_t next_id;
    char address[128];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Wait for `events` on fd until deadline (-1: none).  0, or VX_EIO with
 * errno-style reason in *why. */
static int wait_fd(int fd, short events, int64_t deadline, const char **why)
{
    for (;;) {
        int ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0) {
                *why = "timed out";
                return VX_EIO;
            }
            ms = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms);
        if (n > 0) return 0; /* errors/hangups show up in the following I/O */
        if (n < 0 && errno != EINTR) {
            *why = strerror(errno);
            return VX_EIO;
        }
    }
}

static int send_all2(vx_rpc_client *c, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                     int64_t deadline, char *errbuf)
{
    struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
    int i = 0;
    while (i < 2) {
        if (iov[i].iov_len == 0) {
            i++;
            continue;
        }
        struct msghdr m = {.msg_iov = iov + i, .msg_iovlen = (size_t)(2 - i)};
        ssize_t n = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                const char *why;
                if (wait_fd(c->fd, POLLOUT, deadline, &why) != 0)
                    return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "send to %s: %s", c->address,
                                   why);
                continue;
            }
            return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "send to %s: %s", c->address,
                           strerror(errno));
        }
        size_t left = (size_t)n;
        while (i < 2 && left >= iov[i].iov_len) {
            left -= iov[i].iov_len;
            iov[i].iov_len = 0;
            i++;
        }
        if (i < 2) {
            iov[i].iov_base = (uint8_t *)iov[i].iov_base + left;
            iov[i].iov_len -= left;
        }
    }
    return 0;
}

/* Read exactly n bytes into buf, or discard them when buf is NULL. */
static int recv_all(vx_rpc_client *c, uint8_t *buf, size_t n, int64_t deadline, char *errbuf)
{
    uint8_t sink[4096];
    while (n > 0) {
        uint8_t *dst = buf ? buf : sink;
        size_t want = buf ? n : (n < sizeof sink ? n : sizeof sink);
        ssize_t r = recv(c->fd, dst, want, 0);
        if (r > 0) {
            if (buf) buf += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0)
            return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "%s closed the connection",
                           c->address);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            const char *why;
            if (wait_fd(c->fd, POLLIN, deadline, &why) != 0)
                return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "receive from %s: %s", c->address,
                               why);
            continue;
        }
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "receive from %s: %s", c->address,
                       strerror(errno));
    }
    return 0;
}

int vx_rpc_client_connect(const char *address, const char *secret, size_t secret_len,
                          int timeout_ms, vx_rpc_client **out, char *errbuf)
{
    if (out == NULL || timeout_ms == 0 || (secret == NULL && secret_len > 0))
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EINVAL, "rpc connect: bad arguments");
    *out = NULL;
    if (sodium_init() < 0)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "rpc connect: sodium_init failed");
    int64_t deadline = deadline_of(timeout_ms);
    struct sockaddr_in sa;
    int rv = resolve4(address, false, &sa, errbuf);
    if (rv != 0) return rv;
    vx_rpc_client *c = calloc(1, sizeof *c);
    if (c == NULL) return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_ENOMEM, "rpc client");
    snprintf(c->address, sizeof c->address, "%s", address);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        rv = vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "socket: %s", strerror(errno));
        goto fail;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            rv = vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "connect %s: %s", address,
                         strerror(errno));
            goto fail;
        }
        const char *why;
        if (wait_fd(c->fd, POLLOUT, deadline, &why) != 0) {
            rv = vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "connect %s: %s", address, why);
            goto fail;
        }
        int err = 0;
        socklen_t elen = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) err = errno;
        if (err != 0) {
            rv = vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "connect %s: %s", address,
                         strerror(err));
            goto fail;
        }
    }
    uint8_t hello[HELLO_LEN];
    rv = recv_all(c, hello, sizeof hello, deadline, errbuf);
    if (rv != 0) goto fail;
    if (get32(hello) != VX_RPC_MAGIC || get32(hello + 4) != VX_RPC_VERSION) {
        rv = vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO,
                     "%s is not a Vectron RPC server of protocol version %u", address,
                     VX_RPC_VERSION);
        goto fail;
    }
    uint8_t reply[HELLO_LEN];
    put32(reply, VX_RPC_MAGIC);
    put32(reply + 4, VX_RPC_VERSION);
    hello_tag(secret, secret_len, hello + 8, reply + 8);
    rv = send_all2(c, reply, sizeof reply, NULL, 0, deadline, errbuf);
    if (rv != 0) goto fail;
    *out = c;
    return 0;
fail:
    if (c->fd >= 0) close(c->fd);
    free(c);
    return rv;
}

int vx_rpc_client_call(vx_rpc_client *c, uint32_t method, const uint8_t *req, size_t len,
                       int timeout_ms, int32_t *status, uint8_t **resp, size_t *resp_len,
                       char *errbuf)
{
    if (c == NULL || status == NULL || resp == NULL || resp_len == NULL || timeout_ms == 0 ||
        (req == NULL && len > 0) || len > UINT32_MAX - MIN_LENGTH)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EINVAL, "rpc call: bad arguments");
    *resp = NULL;
    *resp_len = 0;
    if (c->broken)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO,
                       "rpc call: the connection to %s failed before", c->address);
    int64_t deadline = deadline_of(timeout_ms);
    uint64_t id = ++c->next_id;
    uint8_t h[VX_RPC_HEADER_LEN];
    put_header(h, len, method, id, 0);
    char send_err[VX_RPC_ERRMSG_LEN] = "";
    /* A failed send is not the end yet: the server may have answered with a
     * connection-level error (request too large) before closing. */
    int send_rv = send_all2(c, h, sizeof h, req, len, deadline, send_err);
    c->broken = true; /* until a matching response is read in full */
    for (;;) {
        int rv = recv_all(c, h, sizeof h, deadline, errbuf);
        if (rv != 0) {
            if (send_rv != 0) vx_errf(errbuf, VX_RPC_ERRMSG_LEN, send_rv, "%s", send_err);
            return rv;
        }
        uint32_t length = get32(h);
        if (length < MIN_LENGTH || length > VX_RPC_CLIENT_MAX_FRAME)
            return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO,
                           "rpc call to %s: bad response length %u", c->address, length);
        uint64_t rid = get64(h + 8);
        int32_t st = (int32_t)get32(h + 16);
        size_t plen = length - MIN_LENGTH;
        bool conn_error = rid == 0 && st != 0;
        if (rid != id && !conn_error) {
            rv = recv_all(c, NULL, plen, deadline, errbuf);
            if (rv != 0) return rv;
            continue;
        }
        uint8_t *p = NULL;
        if (plen > 0) {
            p = malloc(plen + conn_error); /* room for a NUL after a message */
            if (p == NULL)
                return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_ENOMEM,
                               "rpc call: response of %zu bytes", plen);
            rv = recv_all(c, p, plen, deadline, errbuf);
            if (rv != 0) {
                free(p);
                return rv;
            }
        }
        if (conn_error) {
            vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "%s closed the connection: %.*s", c->address,
                    (int)(plen > 200 ? 200 : plen), p ? (char *)p : "");
            if (p) p[plen] = '\0';
        } else if (send_rv == 0) {
            c->broken = false;
        }
        *status = st;
        *resp = p;
        *resp_len = plen;
        return 0;
    }
}

bool vx_rpc_client_usable(vx_rpc_client *c)
{
    if (c == NULL || c->broken) return false;
    /* between calls nothing may arrive: readable means EOF, a reset or a
     * connection-level error frame, all fatal for the connection */
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    int rv;
    do rv = poll(&p, 1, 0);
    while (rv < 0 && errno == EINTR);
    if (rv != 0) c->broken = true;
    return rv == 0;
}

void vx_rpc_client_close(vx_rpc_client *c)
{
    if (c == NULL) return;
    close(c->fd);
    free(c);
}

int vx_rpc_call_once(const char *address, const char *secret, size_t secret_len, uint32_t method,
                     const uint8_t *req, size_t len, int timeout_ms, int32_t *status,
                     uint8_t **resp, size_t *resp_len, char *errbuf)
{
    int64_t deadline = deadline_of(timeout_ms);
    vx_rpc_client *c;
    int rv = vx_rpc_client_connect(address, secret, secret_len, timeout_ms, &c, errbuf);
    if (rv != 0) return rv;
    int left = timeout_ms;
    if (deadline >= 0) {
        int64_t l = deadline - now_ms();
        left = l < 1 ? 1 : (int)l;
    }
    rv = vx_rpc_client_call(c, method, req, len, left, status, resp, resp_len, errbuf);
    vx_rpc_client_close(c);
    return rv;
}

/* ---- multiplexed client ------------------------------------------------------------------- */

typedef struct mux_wait {
    uint64_t id;
    pthread_cond_t cv;
    bool done;
    int rc; /* 0: a frame arrived (status, payload); VX_EIO: the connection died */
    int32_t status;
    uint8_t *payload;
    size_t plen;
    struct mux_wait *next;
} mux_wait;

struct vx_rpc_mux {
    vx_rpc_client *c; /* the socket, handshake done; c->next_id is not used */
    pthread_mutex_t wmu; /* whole frames: one writer at a time */
    pthread_mutex_t mu;  /* the fields below */
    uint64_t next_id;
    mux_wait *waiting;
    unsigned nwaiting;
    bool broken;
    char why[VX_RPC_ERRMSG_LEN];
    int32_t conn_status; /* a connection-level frame ended it (wrong secret...): for every later call */
    uint8_t *conn_msg;
    size_t conn_len;
    atomic_int refs;
    pthread_t reader;
    bool reader_started;
    /* liveness (reader thread only): a peer silent while calls wait is
     * pinged, and declared dead when the ping goes unanswered */
    int64_t last_rx_ms, ping_sent_ms; /* ping_sent_ms 0: none out */
};

/* mu held: fail every call in flight (rc VX_EIO, or a connection-level
 * frame as its status) and refuse new ones. */
static void mux_break_locked(vx_rpc_mux *m, const char *why, bool conn_frame, int32_t st,
                             const uint8_t *p, size_t plen)
{
    if (!m->broken) snprintf(m->why, sizeof m->why, "%s", why);
    m->broken = true;
    if (conn_frame && m->conn_status == 0) { /* kept for calls that come later */
        m->conn_status = st;
        if (plen > 0 && (m->conn_msg = malloc(plen + 1)) != NULL) {
            memcpy(m->conn_msg, p, plen);
            m->conn_msg[plen] = '\0';
            m->conn_len = plen;
        }
    }
    for (mux_wait *w = m->waiting; w; w = w->next) {
        if (w->done) continue;
        w->done = true;
        w->rc = conn_frame ? 0 : VX_EIO;
        w->status = st;
        if (conn_frame && plen > 0 && (w->payload = malloc(plen + 1)) != NULL) {
            memcpy(w->payload, p, plen);
            w->payload[plen] = '\0';
            w->plen = plen;
        }
        pthread_cond_signal(&w->cv);
    }
}

/* Reader thread: wait for the next frame, pinging a silent peer while calls
 * wait.  0: data is there; VX_EIO: the peer is gone or dead (err set). */
static int mux_await(vx_rpc_mux *m, char *err)
{
    for (;;) {
        struct pollfd p = {.fd = m->c->fd, .events = POLLIN};
        int n = poll(&p, 1, 250);
        if (n > 0) return 0; /* data, EOF or an error: the read tells */
        if (n < 0 && errno != EINTR) return vx_errf(err, VX_RPC_ERRMSG_LEN, VX_EIO, "poll: %s", strerror(errno));
        int64_t now = now_ms();
        pthread_mutex_lock(&m->mu);
        bool waiting = m->nwaiting > 0, broken = m->broken;
        uint64_t id = 0;
        if (waiting && m->ping_sent_ms == 0 && now - m->last_rx_ms >= VX_RPC_MUX_PROBE_MS) id = ++m->next_id;
        pthread_mutex_unlock(&m->mu);
        if (broken) return vx_errf(err, VX_RPC_ERRMSG_LEN, VX_EIO, "closed");
        if (!waiting) {
            m->ping_sent_ms = 0;
            m->last_rx_ms = now; /* silence without calls is no sign of anything */
            continue;
        }
        if (m->ping_sent_ms && now - m->ping_sent_ms >= VX_RPC_MUX_DEAD_MS)
            return vx_errf(err, VX_RPC_ERRMSG_LEN, VX_EIO, "%s did not answer a ping within %d ms",
                           m->c->address, VX_RPC_MUX_DEAD_MS);
        if (id) {
            uint8_t h[VX_RPC_HEADER_LEN];
            put_header(h, 0, VX_RPC_PING, id, 0);
            char serr[VX_RPC_ERRMSG_LEN];
            pthread_mutex_lock(&m->wmu);
            int rv = send_all2(m->c, h, sizeof h, NULL, 0, now + VX_RPC_MUX_DEAD_MS, serr);
            pthread_mutex_unlock(&m->wmu);
            if (rv != 0) return vx_errf(err, VX_RPC_ERRMSG_LEN, VX_EIO, "%s", serr);
            m->ping_sent_ms = now;
        }
    }
}

static void *mux_reader(void *arg)
{
    vx_rpc_mux *m = arg;
    char err[VX_RPC_ERRMSG_LEN];
    m->last_rx_ms = now_ms();
    for (;;) {
        uint8_t h[VX_RPC_HEADER_LEN];
        if (mux_await(m, err) != 0) break;
        /* a frame started: the rest of it must follow within the dead time */
        if (recv_all(m->c, h, sizeof h, now_ms() + 10 * VX_RPC_MUX_DEAD_MS, err) != 0) break;
        m->last_rx_ms = now_ms();
        m->ping_sent_ms = 0;
        uint32_t length = get32(h);
        if (length < MIN_LENGTH || length > VX_RPC_CLIENT_MAX_FRAME) {
            snprintf(err, sizeof err, "%s sent a frame of bad length %u", m->c->address, length);
            break;
        }
        uint64_t rid = get64(h + 8);
        int32_t st = (int32_t)get32(h + 16);
        size_t plen = length - MIN_LENGTH;
        uint8_t *p = NULL;
        if (plen > 0) {
            p = malloc(plen + 1);
            if (p == NULL) {
                snprintf(err, sizeof err, "a response of %zu bytes: out of memory", plen);
                break;
            }
            if (recv_all(m->c, p, plen, now_ms() + 10 * VX_RPC_MUX_DEAD_MS + (int64_t)(plen >> 16), err) != 0) {
                free(p);
                break;
            }
            m->last_rx_ms = now_ms();
            p[plen] = '\0';
        }
        pthread_mutex_lock(&m->mu);
        if (rid == 0 && st != 0) { /* connection-level: for everyone, then the end */
            snprintf(err, sizeof err, "%s closed the connection: %.*s", m->c->address,
                     (int)(plen > 200 ? 200 : plen), p ? (char *)p : "");
            mux_break_locked(m, err, true, st, p, plen);
            pthread_mutex_unlock(&m->mu);
            free(p);
            return NULL;
        }
        mux_wait *w = m->waiting;
        while (w && w->id != rid) w = w->next;
        if (w && !w->done) {
            w->done = true;
            w->rc = 0;
            w->status = st;
            w->payload = p;
            w->plen = plen;
            p = NULL;
            pthread_cond_signal(&w->cv);
        }
        pthread_mutex_unlock(&m->mu);
        free(p); /* nobody waits any more (timed out) */
    }
    pthread_mutex_lock(&m->mu);
    mux_break_locked(m, err, false, 0, NULL, 0);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

int vx_rpc_mux_connect(const char *address, const char *secret, size_t secret_len, int timeout_ms,
                       vx_rpc_mux **out, char *errbuf)
{
    vx_rpc_client *c;
    int rv = vx_rpc_client_connect(address, secret, secret_len, timeout_ms, &c, errbuf);
    if (rv != 0) return rv;
    vx_rpc_mux *m = calloc(1, sizeof *m);
    if (m == NULL) {
        vx_rpc_client_close(c);
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_ENOMEM, "rpc mux");
    }
    m->c = c;
    pthread_mutex_init(&m->wmu, NULL);
    pthread_mutex_init(&m->mu, NULL);
    atomic_init(&m->refs, 1);
    if (pthread_create(&m->reader, NULL, mux_reader, m) != 0) {
        vx_rpc_client_close(c);
        pthread_mutex_destroy(&m->wmu);
        pthread_mutex_destroy(&m->mu);
        free(m);
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_ENOMEM, "rpc mux: reader thread");
    }
    m->reader_started = true;
    *out = m;
    return 0;
}

static void mux_unlink(vx_rpc_mux *m, mux_wait *w)
{
    for (mux_wait **pp = &m->waiting; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            m->nwaiting--;
            return;
        }
}

int vx_rpc_mux_call(vx_rpc_mux *m, uint32_t method, const uint8_t *req, size_t len, int timeout_ms,
                    int32_t *status, uint8_t **resp, size_t *resp_len, char *errbuf)
{
    if (m == NULL || status == NULL || resp == NULL || resp_len == NULL || timeout_ms == 0 ||
        (req == NULL && len > 0) || len > UINT32_MAX - MIN_LENGTH)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EINVAL, "rpc call: bad arguments");
    *resp = NULL;
    *resp_len = 0;
    int64_t deadline = deadline_of(timeout_ms);
    mux_wait w = {0};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&m->mu);
    if (m->broken && m->conn_status != 0) { /* the server's verdict on this connection, as an answer */
        *status = m->conn_status;
        if (m->conn_len > 0 && (*resp = malloc(m->conn_len + 1)) != NULL) {
            memcpy(*resp, m->conn_msg, m->conn_len + 1);
            *resp_len = m->conn_len;
        }
        vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "%s", m->why);
        pthread_mutex_unlock(&m->mu);
        pthread_cond_destroy(&w.cv);
        return 0;
    }
    if (m->broken) {
        int rv = vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "rpc call: the connection to %s failed: %s",
                         m->c->address, m->why);
        pthread_mutex_unlock(&m->mu);
        pthread_cond_destroy(&w.cv);
        return rv;
    }
    w.id = ++m->next_id;
    w.next = m->waiting;
    m->waiting = &w;
    m->nwaiting++;
    pthread_mutex_unlock(&m->mu);

    uint8_t h[VX_RPC_HEADER_LEN];
    put_header(h, len, method, w.id, 0);
    char send_err[VX_RPC_ERRMSG_LEN] = "";
    pthread_mutex_lock(&m->wmu);
    int send_rv = send_all2(m->c, h, sizeof h, req, len, deadline, send_err);
    pthread_mutex_unlock(&m->wmu);
    pthread_mutex_lock(&m->mu);
    if (send_rv != 0 && !w.done) {
        /* a frame may be half written: the stream is lost for everyone, but
         * the server may still have answered with a connection-level frame
         * (request too large): the reader delivers that one; wait briefly */
        shutdown(m->c->fd, SHUT_WR);
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_sec += 1;
        while (!w.done && pthread_cond_timedwait(&w.cv, &m->mu, &t) == 0) {
        }
        if (!w.done) mux_break_locked(m, send_err, false, 0, NULL, 0);
    }
    while (!w.done) {
        if (deadline < 0) {
            pthread_cond_wait(&w.cv, &m->mu);
            continue;
        }
        int64_t dl = deadline;
        struct timespec t = {.tv_sec = (time_t)(dl / 1000), .tv_nsec = (long)(dl % 1000) * 1000000L};
        if (pthread_cond_timedwait(&w.cv, &m->mu, &t) == ETIMEDOUT && !w.done) break;
    }
    mux_unlink(m, &w);
    bool done = w.done;
    pthread_mutex_unlock(&m->mu);
    pthread_cond_destroy(&w.cv);
    if (!done)
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "rpc call to %s: timed out", m->c->address);
    if (w.rc != 0) {
        free(w.payload);
        return vx_errf(errbuf, VX_RPC_ERRMSG_LEN, VX_EIO, "rpc call to %s: %s", m->c->address,
                       send_rv != 0 ? send_err : m->why);
    }
    *status = w.status;
    *resp = w.payload;
    *resp_len = w.plen;
    return 0;
}

bool vx_rpc_mux_usable(vx_rpc_mux *m)
{
    pthread_mutex_lock(&m->mu);
    bool ok = !m->broken;
    pthread_mutex_unlock(&m->mu);
    return ok;
}

unsigned vx_rpc_mux_inflight(vx_rpc_mux *m)
{
    pthread_mutex_lock(&m->mu);
    unsigned n = m->nwaiting;
    pthread_mutex_unlock(&m->mu);
    return n;
}

void vx_rpc_mux_ref(vx_rpc_mux *m) { atomic_fetch_add(&m->refs, 1); }

void vx_rpc_mux_unref(vx_rpc_mux *m)
{
    if (m == NULL || atomic_fetch_sub(&m->refs, 1) != 1) return;
    shutdown(m->c->fd, SHUT_RDWR); /* wakes the reader */
    if (m->reader_started) pthread_join(m->reader, NULL);
    vx_rpc_client_close(m->c);
    pthread_mutex_destroy(&m->wmu);
    pthread_mutex_destroy(&m->mu);
    free(m->conn_msg);
    free(m);
}
