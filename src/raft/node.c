/*
 * node.c - the node host and its group-multiplexing transport (see node.h).
 *
 * Handle ownership: libraft frees the stream it is handed (raft_free on the
 * handle pointer once it closes it), so every uv_tcp_t given to libraft is
 * its own raft_malloc'd block, never embedded in one of our structs.
 */
#include "raft/node.h"

#include "base/err.h"
#include "base/fsutil.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/stat.h>

#include "raft/node_internal.h"

/* ---- addresses ---------------------------------------------------------------------- */

int vx_parse_address(const char *address, struct sockaddr_storage *sa)
{
    char host[128];
    const char *colon = strrchr(address, ':');
    if (colon == NULL || colon == address || (size_t)(colon - address) >= sizeof host)
        return VX_EINVAL;
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535) return VX_EINVAL;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) == 0) return 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        host[strlen(host) - 1] = '\0';
        if (uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)sa) == 0) return 0;
    }
    return VX_EINVAL;
}

/* ---- the handshake's messages (node.h) ------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void challenge(uint8_t ch[CH_LEN])
{
    put32(ch, CH_MAGIC);
    put32(ch + 4, HS_VERSION);
    vx_hs_nonce(ch + 8);
}

size_t vx_hs_connect_msg(const vx_node *n, uint32_t magic, uint64_t gid, uint64_t id, uint64_t arg,
                         const uint8_t ch[CH_LEN], uint8_t *out, uint8_t cnonce[VX_HS_NONCE_LEN])
{
    if (get32(ch) != CH_MAGIC || get32(ch + 4) != HS_VERSION) return 0;
    size_t alen = strlen(n->address);
    put32(out, magic);
    put32(out + 4, HS_VERSION);
    put64(out + 8, gid);
    put64(out + 16, id);
    put64(out + 24, arg);
    put32(out + 32, (uint32_t)alen);
    put32(out + 36, 0);
    memcpy(out + HS_FIXED, n->address, alen);
    size_t claim = HS_FIXED + alen;
    vx_hs_nonce(cnonce);
    memcpy(out + claim, cnonce, VX_HS_NONCE_LEN);
    vx_hs_tag(n->secret, n->secret_len, HS_LABEL_CONNECTOR, ch + 8, cnonce, out, claim,
              out + claim + VX_HS_NONCE_LEN);
    return claim + HS_TAIL;
}

size_t vx_hs_msg_len(const uint8_t fixed[HS_FIXED])
{
    uint32_t magic = get32(fixed), version = get32(fixed + 4), alen = get32(fixed + 32);
    if ((magic != HS_MAGIC && magic != SN_MAGIC) || version != HS_VERSION || alen == 0 ||
        alen > HS_ADDR_MAX || get32(fixed + 36) != 0)
        return 0;
    return HS_FIXED + alen + HS_TAIL;
}

bool vx_hs_check(const vx_node *n, const uint8_t ch[CH_LEN], const uint8_t *msg, size_t len,
                 vx_hs_claim *out)
{
    if (len < HS_FIXED || vx_hs_msg_len(msg) != len) return false;
    size_t claim = len - HS_TAIL;
    const uint8_t *cnonce = msg + claim, *tag = cnonce + VX_HS_NONCE_LEN;
    if (!vx_hs_verify(n->secret, n->secret_len, HS_LABEL_CONNECTOR, ch + 8, cnonce, msg, claim, tag))
        return false;
    out->magic = get32(msg);
    out->gid = get64(msg + 8);
    out->id = get64(msg + 16);
    out->arg = get64(msg + 24);
    out->claim_len = claim;
    out->cnonce = cnonce;
    memcpy(out->address, msg + HS_FIXED, claim - HS_FIXED);
    out->address[claim - HS_FIXED] = '\0';
    return true;
}

void vx_hs_proof(const vx_node *n, const uint8_t ch[CH_LEN], const uint8_t *msg, const vx_hs_claim *cl,
                 uint8_t ok[OK_LEN])
{
    put32(ok, OK_MAGIC);
    put32(ok + 4, HS_VERSION);
    vx_hs_tag(n->secret, n->secret_len, HS_LABEL_ACCEPTOR, ch + 8, cl->cnonce, msg, cl->claim_len, ok + 8);
}

bool vx_hs_accepted(const vx_node *n, const uint8_t ch[CH_LEN], const uint8_t *msg, size_t msg_len,
                    const uint8_t ok[OK_LEN])
{
    if (msg_len < HS_FIXED + HS_TAIL || get32(ok) != OK_MAGIC || get32(ok + 4) != HS_VERSION)
        return false;
    size_t claim = msg_len - HS_TAIL;
    return vx_hs_verify(n->secret, n->secret_len, HS_LABEL_ACCEPTOR, ch + 8, msg + claim, msg, claim,
                        ok + 8);
}

/* ---- outgoing connections ------------------------------------------------------------- */

/* A Raft connection being made: connect, read the acceptor's challenge,
 * send the handshake, read the acceptor's proof, then hand the stream to
 * libraft.  A deadline bounds it all; a transport that closes cancels it. */
typedef struct out_conn {
    vx_group *g;
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
    uv_tcp_t *tcp; /* raft_malloc'd: handed to libraft on success */
    uv_timer_t timer;
    uv_connect_t connect;
    uv_write_t write;
    struct out_conn *next; /* in g->out_conns */
    int phase;             /* 0 connecting, 1 reading the challenge, 2 writing, 3 reading the proof */
    bool done;
    unsigned open; /* handles not yet closed (tcp while ours, timer) */
    int status;
    uint8_t ch[CH_LEN], ok[OK_LEN], cnonce[VX_HS_NONCE_LEN];
    size_t got;
    uint8_t hs[HS_MAX];
    size_t hs_len;
} out_conn;

static void transport_maybe_closed(vx_group *g)
{
    if (g->transport_closing && g->pending_connects == 0 && g->transport_close_cb) {
        raft_uv_transport_close_cb cb = g->transport_close_cb;
        g->transport_close_cb = NULL;
        cb(&g->transport);
    }
}

static void out_conn_unlink(out_conn *c)
{
    for (out_conn **pp = &c->g->out_conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            return;
        }
}

/* the last of its handles closed: report and free */
static void out_conn_release(out_conn *c)
{
    if (--c->open > 0) return;
    vx_group *g = c->g;
    if (c->status != 0) c->cb(c->req, NULL, c->status);
    free(c);
    g->pending_connects--;
    transport_maybe_closed(g);
}

static void out_tcp_closed(uv_handle_t *h)
{
    out_conn *c = h->data;
    raft_free(h);
    out_conn_release(c);
}

static void out_timer_closed(uv_handle_t *h) { out_conn_release(h->data); }

static void out_conn_fail(out_conn *c, int status)
{
    if (c->done) return;
    c->done = true;
    c->status = status;
    out_conn_unlink(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, out_timer_closed);
    uv_close((uv_handle_t *)c->tcp, out_tcp_closed);
}

static void out_conn_succeed(out_conn *c)
{
    c->done = true;
    out_conn_unlink(c);
    uv_timer_stop(&c->timer);
    uv_tcp_t *tcp = c->tcp;
    tcp->data = NULL;
    c->cb(c->req, (uv_stream_t *)tcp, 0); /* libraft owns the stream now */
    c->open--;                             /* the stream is no longer ours to close */
    uv_close((uv_handle_t *)&c->timer, out_timer_closed);
}

static void out_timeout_cb(uv_timer_t *t) { out_conn_fail(t->data, RAFT_NOCONNECTION); }

static void out_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    out_conn *c = h->data;
    (void)suggested;
    /* exactly what the handshake still lacks: never a byte of Raft traffic */
    uint8_t *base = c->phase == 1 ? c->ch : c->ok;
    size_t want = c->phase == 1 ? CH_LEN : OK_LEN;
    *buf = uv_buf_init((char *)base + c->got, (unsigned)(want - c->got));
}

static void out_conn_write_cb(uv_write_t *w, int status);

static void out_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    out_conn *c = s->data;
    (void)buf;
    if (c == NULL || c->done) return;
    if (nread < 0 || c->g->transport_closing) {
        out_conn_fail(c, c->g->transport_closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
        return;
    }
    c->got += (size_t)nread;
    if (c->phase == 1) {
        if (c->got < CH_LEN) return;
        uv_read_stop(s);
        vx_group *g = c->g;
        c->hs_len = vx_hs_connect_msg(g->node, HS_MAGIC, g->gid, g->id, 0, c->ch, c->hs, c->cnonce);
        if (c->hs_len == 0) {
            out_conn_fail(c, RAFT_NOCONNECTION); /* not a Vectron node of this version */
            return;
        }
        c->phase = 2;
        c->got = 0;
        uv_buf_t b = uv_buf_init((char *)c->hs, (unsigned)c->hs_len);
        c->write.data = c;
        if (uv_write(&c->write, s, &b, 1, out_conn_write_cb) != 0) out_conn_fail(c, RAFT_NOCONNECTION);
        return;
    }
    if (c->got < OK_LEN) return;
    uv_read_stop(s);
    if (!vx_hs_accepted(c->g->node, c->ch, c->hs, c->hs_len, c->ok)) {
        out_conn_fail(c, RAFT_NOCONNECTION); /* the acceptor does not hold the secret */
        return;
    }
    out_conn_succeed(c);
}

static void out_conn_write_cb(uv_write_t *w, int status)
{
    out_conn *c = w->data;
    if (c->done) return;
    if (status != 0 || c->g->transport_closing) {
        out_conn_fail(c, c->g->transport_closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
        return;
    }
    c->phase = 3;
    if (uv_read_start((uv_stream_t *)c->tcp, out_alloc_cb, out_read_cb) != 0)
        out_conn_fail(c, RAFT_NOCONNECTION);
}

static void out_conn_connect_cb(uv_connect_t *req, int status)
{
    out_conn *c = req->data;
    if (c->done) return;
    if (status != 0 || c->g->transport_closing) {
        out_conn_fail(c, c->g->transport_closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
        return;
    }
    c->phase = 1;
    if (uv_read_start((uv_stream_t *)c->tcp, out_alloc_cb, out_read_cb) != 0)
        out_conn_fail(c, RAFT_NOCONNECTION);
}

static int t_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id,
                     const char *address, raft_uv_connect_cb cb)
{
    vx_group *g = t->impl;
    (void)id;
    struct sockaddr_storage sa;
    if (vx_parse_address(address, &sa) != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "bad address %s", address);
        return RAFT_NOCONNECTION;
    }
    out_conn *c = calloc(1, sizeof(*c));
    uv_tcp_t *tcp = raft_malloc(sizeof(*tcp));
    if (c == NULL || tcp == NULL) {
        free(c);
        raft_free(tcp);
        return RAFT_NOMEM;
    }
    c->g = g;
    c->req = req;
    c->cb = cb;
    c->tcp = tcp;
    c->open = 2;
    uv_tcp_init(g->node->loop, tcp);
    uv_tcp_nodelay(tcp, 1);
    tcp->data = c;
    uv_timer_init(g->node->loop, &c->timer);
    c->timer.data = c;
    c->connect.data = c;
    c->next = g->out_conns;
    g->out_conns = c;
    g->pending_connects++;
    uv_timer_start(&c->timer, out_timeout_cb, HS_TIMEOUT_MS, 0);
    int rv = uv_tcp_connect(&c->connect, tcp, (struct sockaddr *)&sa, out_conn_connect_cb);
    if (rv != 0) {
        out_conn_fail(c, RAFT_NOCONNECTION); /* reports through cb, as libraft expects */
    }
    return 0;
}

static int t_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    (void)t;
    (void)id;
    (void)address;
    return 0;
}

static int t_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    vx_group *g = t->impl;
    g->accept_cb = cb;
    return 0;
}

static void t_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    vx_group *g = t->impl;
    g->accept_cb = NULL;
    g->transport_closing = true;
    g->transport_close_cb = cb;
    while (g->out_conns) out_conn_fail(g->out_conns, RAFT_CANCELED); /* each unlinks itself */
    transport_maybe_closed(g); /* the cancelled connects report as their handles close */
}

/* ---- incoming connections -------------------------------------------------------------- */

/* A connection being accepted: the challenge is sent at once; then exactly
 * the handshake's bytes are read (never a byte more), its tag checked, the
 * named group found and the sender's server id checked against the group's
 * configuration; only then does anything reach libraft or the snapshot
 * sender.  Anything else, or a deadline passed, closes the connection
 * without a word. */
typedef struct in_conn {
    vx_node *node;
    struct in_conn *prev, *next; /* in node->in_conns */
    struct sockaddr_storage peer; /* for the per-address cap */
    uv_tcp_t *tcp; /* raft_malloc'd */
    uv_timer_t timer;
    uv_write_t ch_write;
    unsigned open; /* handles and writes not yet finished */
    bool done;
    uint8_t ch[CH_LEN];
    uint8_t hs[HS_MAX + 1];
    size_t got, want;
} in_conn;

typedef struct ok_write {
    uv_write_t w;
    uint8_t ok[OK_LEN];
} ok_write;

static void node_maybe_closed(vx_node *n);

static void in_conn_release(in_conn *c)
{
    if (--c->open > 0) return;
    vx_node *n = c->node;
    n->pending_in--;
    free(c);
    if (n->closing) node_maybe_closed(n);
}

static void in_tcp_closed(uv_handle_t *h)
{
    in_conn *c = h->data;
    raft_free(h);
    in_conn_release(c);
}

static void in_timer_closed(uv_handle_t *h) { in_conn_release(h->data); }

static void in_conn_end(in_conn *c, bool close_tcp)
{
    if (c->done) return;
    c->done = true;
    if (c->prev) c->prev->next = c->next;
    else c->node->in_conns = c->next;
    if (c->next) c->next->prev = c->prev;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, in_timer_closed);
    if (close_tcp) {
        uv_read_stop((uv_stream_t *)c->tcp);
        uv_close((uv_handle_t *)c->tcp, in_tcp_closed);
    } else {
        c->open--; /* the stream went to libraft or the snapshot sender */
    }
}

static void in_conn_reject(in_conn *c) { in_conn_end(c, true); }

static void in_timeout_cb(uv_timer_t *t) { in_conn_reject(t->data); }

static void in_ch_written(uv_write_t *w, int status)
{
    in_conn *c = w->data;
    if (status != 0 && !c->done) in_conn_reject(c);
    in_conn_release(c);
}

static void ok_written(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
}

static void in_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    in_conn *c = h->data;
    (void)suggested;
    /* exactly what the handshake still lacks: never a byte of Raft traffic */
    *buf = uv_buf_init((char *)c->hs + c->got, (unsigned)(c->want - c->got));
}

/* May server `id` talk to group g?  A member of its configuration other than
 * itself; or anyone holding the secret while the group has no configuration
 * yet (a new replica learns it from the leader's first message). */
static bool peer_known(const vx_group *g, uint64_t id)
{
    if (!g->raft_inited || id == 0 || id == g->id) return false;
    const struct raft_configuration *cf = &g->raft.configuration;
    if (cf->n == 0) return true;
    for (unsigned i = 0; i < cf->n; i++)
        if (cf->servers[i].id == id) return true;
    return false;
}

static void in_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    in_conn *c = s->data;
    (void)buf;
    if (c == NULL || c->done) return;
    if (nread < 0) {
        in_conn_reject(c);
        return;
    }
    c->got += (size_t)nread;
    if (c->got < c->want) return;
    if (c->want == HS_FIXED) {
        if ((c->want = vx_hs_msg_len(c->hs)) == 0) {
            in_conn_reject(c);
            return;
        }
        return;
    }
    uv_read_stop(s);
    vx_node *n = c->node;
    vx_hs_claim cl;
    if (!vx_hs_check(n, c->ch, c->hs, c->want, &cl)) {
        in_conn_reject(c);
        return;
    }
    vx_group *g = vx_node_find_group(n, cl.gid);
    /* a closing group's configuration may already be freed by libraft */
    if (g == NULL || n->closing || g->closing || !peer_known(g, cl.id) ||
        (cl.magic == HS_MAGIC && g->accept_cb == NULL)) {
        in_conn_reject(c);
        return;
    }
    uint8_t ok[OK_LEN];
    vx_hs_proof(n, c->ch, c->hs, &cl, ok);
    if (cl.magic == SN_MAGIC) { /* snapshot data, not Raft: its thread sends the proof first */
        vx_group_serve_snapshot(g, c->tcp, cl.arg, ok);
        in_conn_reject(c); /* the serving thread has its own descriptor */
        return;
    }
    ok_write *w = malloc(sizeof *w);
    if (w == NULL) {
        in_conn_reject(c);
        return;
    }
    memcpy(w->ok, ok, OK_LEN);
    w->w.data = w;
    uv_buf_t b = uv_buf_init((char *)w->ok, OK_LEN);
    if (uv_write(&w->w, s, &b, 1, ok_written) != 0) {
        free(w);
        in_conn_reject(c);
        return;
    }
    /* libraft's writes queue behind the proof on the same stream */
    uv_tcp_t *tcp = c->tcp;
    in_conn_end(c, false);
    tcp->data = NULL;
    g->accept_cb(&g->transport, cl.id, cl.address, (uv_stream_t *)tcp); /* libraft owns it */
}

static void raft_free_handle(uv_handle_t *h) { raft_free(h); }

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)(const void *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)(const void *)b)->sin6_addr, 16) == 0;
    return false;
}

static void on_connection(uv_stream_t *server, int status)
{
    vx_node *n = server->data;
    if (status != 0 || n->closing) return;
    uv_tcp_t *tcp = raft_malloc(sizeof(*tcp));
    if (tcp == NULL) return;
    uv_tcp_init(n->loop, tcp);
    in_conn *c = n->pending_in < HS_MAX_PENDING ? calloc(1, sizeof(*c)) : NULL;
    tcp->data = c;
    if (uv_accept(server, (uv_stream_t *)tcp) != 0 || c == NULL) {
        free(c);
        tcp->data = NULL;
        uv_close((uv_handle_t *)tcp, raft_free_handle);
        return;
    }
    /* one address may hold a few pending handshakes, not all of them: a
     * stranger opening connections cannot lock members out */
    int plen = sizeof c->peer;
    unsigned same = 0;
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&c->peer, &plen) == 0)
        for (in_conn *o = n->in_conns; o; o = o->next)
            same += same_host(&o->peer, &c->peer);
    if (same >= HS_MAX_PER_ADDRESS) {
        free(c);
        tcp->data = NULL;
        uv_close((uv_handle_t *)tcp, raft_free_handle);
        return;
    }
    n->pending_in++;
    c->node = n;
    c->next = n->in_conns;
    if (c->next) c->next->prev = c;
    n->in_conns = c;
    c->tcp = tcp;
    c->want = HS_FIXED;
    c->open = 3; /* tcp, timer, the challenge's write */
    uv_timer_init(n->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, in_timeout_cb, HS_TIMEOUT_MS, 0);
    uv_tcp_nodelay(tcp, 1);
    challenge(c->ch);
    c->ch_write.data = c;
    uv_buf_t b = uv_buf_init((char *)c->ch, CH_LEN);
    if (uv_write(&c->ch_write, (uv_stream_t *)tcp, &b, 1, in_ch_written) != 0) {
        c->open--;
        in_conn_reject(c);
        return;
    }
    if (uv_read_start((uv_stream_t *)tcp, in_alloc_cb, in_read_cb) != 0) in_conn_reject(c);
}

/* ---- the node ------------------------------------------------------------------------------ */

static void free_secret(vx_node *n)
{
    if (n->secret) sodium_memzero(n->secret, n->secret_len);
    free(n->secret);
    n->secret = NULL;
}

static void free_node_cb(uv_handle_t *h)
{
    free_secret(h->data);
    free(h->data);
}

int vx_node_new(uv_loop_t *loop, const char *address, const char *data_dir, const char *secret,
                vx_node **out, char *errbuf)
{
    struct sockaddr_storage sa;
    if (strlen(address) >= 64 || vx_parse_address(address, &sa) != 0)
        return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EINVAL, "bad listen address %s", address);
    if (strlen(data_dir) >= 300 || vx_mkdir_p(data_dir) != 0)
        return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EIO, "cannot create %s", data_dir);
    vx_node *n = calloc(1, sizeof(*n));
    size_t slen = secret ? strlen(secret) : 0;
    if (n != NULL && (n->secret = malloc(slen + 1)) == NULL) {
        free(n);
        n = NULL;
    }
    if (n == NULL) return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_ENOMEM, "node");
    if (slen) memcpy(n->secret, secret, slen);
    n->secret_len = slen;
    n->loop = loop;
    snprintf(n->address, sizeof n->address, "%s", address);
    snprintf(n->dir, sizeof n->dir, "%s", data_dir);
    uv_tcp_init(loop, &n->listener);
    n->listener.data = n;
    int rv = uv_tcp_bind(&n->listener, (struct sockaddr *)&sa, 0);
    if (rv == 0) rv = uv_listen((uv_stream_t *)&n->listener, 128, on_connection);
    if (rv != 0) {
        vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EIO, "listen on %s: %s", address, uv_strerror(rv));
        uv_close((uv_handle_t *)&n->listener, free_node_cb); /* n freed on the next turn */
        return VX_EIO;
    }
    *out = n;
    return 0;
}

const char *vx_node_address(vx_node *n) { return n->address; }

vx_group *vx_node_find_group(vx_node *n, uint64_t gid)
{
    for (vx_group *g = n->groups; g; g = g->next)
        if (g->gid == gid && !g->closed) return g;
    return NULL;
}

int vx_group_new(vx_node *n, uint64_t gid, raft_id id, struct raft_fsm *fsm,
                 const vx_group_options *opt, vx_group **out, char *errbuf)
{
    static const vx_group_options defaults = {0};
    if (opt == NULL) opt = &defaults;
    if (vx_node_find_group(n, gid) != NULL)
        return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EEXISTS, "group %" PRIu64 " exists", gid);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/g%" PRIu64 "/raft", n->dir, gid);
    if (vx_mkdir_p(dir) != 0)
        return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EIO, "cannot create %s", dir);
    vx_group *g = calloc(1, sizeof(*g));
    if (g == NULL) return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_ENOMEM, "group");
    g->node = n;
    g->gid = gid;
    g->id = id;
    g->transport.impl = g;
    g->transport.init = t_init;
    g->transport.listen = t_listen;
    g->transport.connect = t_connect;
    g->transport.close = t_close;
    int rv = raft_uv_init(&g->io, n->loop, dir, &g->transport);
    if (rv != 0) {
        vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EIO, "raft io for group %" PRIu64 ": %s", gid,
                g->io.errmsg);
        free(g);
        return VX_EIO;
    }
    vx_group_io_wrap(g);
    rv = raft_init(&g->raft, &g->wrap.io, fsm, id, n->address);
    if (rv != 0) {
        vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EIO, "raft init for group %" PRIu64 ": %s", gid,
                raft_errmsg(&g->raft));
        raft_uv_close(&g->io);
        free(g); /* raft_uv_close releases asynchronously only its own handles */
        return VX_EIO;
    }
    g->raft_inited = true;
    if (vx_group_io_start(g) != 0) fprintf(stderr, "group %" PRIu64 ": no snapshot handles\n", gid);
    raft_set_election_timeout(&g->raft, opt->election_timeout_ms ? opt->election_timeout_ms : 1000);
    raft_set_heartbeat_timeout(&g->raft,
                               opt->heartbeat_timeout_ms ? opt->heartbeat_timeout_ms : 100);
    raft_set_snapshot_threshold(&g->raft, opt->snapshot_threshold ? opt->snapshot_threshold : 8192);
    raft_set_snapshot_trailing(&g->raft, opt->snapshot_trailing ? opt->snapshot_trailing : 1024);
    raft_set_install_snapshot_timeout(
        &g->raft, opt->install_snapshot_timeout_ms ? opt->install_snapshot_timeout_ms : 5000);
    g->next = n->groups;
    n->groups = g;
    n->open_groups++;
    *out = g;
    return 0;
}

int vx_group_bootstrap(vx_group *g, unsigned n, const raft_id *ids, const char *const *addresses)
{
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    int rv = 0;
    for (unsigned i = 0; i < n && rv == 0; i++)
        rv = raft_configuration_add(&conf, ids[i], addresses[i], RAFT_VOTER);
    if (rv == 0) rv = raft_bootstrap(&g->raft, &conf);
    raft_configuration_close(&conf);
    if (rv == RAFT_CANTBOOTSTRAP) return 0; /* already has state */
    return rv == 0 ? 0 : VX_EIO;
}

int vx_group_start(vx_group *g) { return raft_start(&g->raft) == 0 ? 0 : VX_EIO; }
struct raft *vx_group_raft(vx_group *g) { return &g->raft; }
uint64_t vx_group_id(vx_group *g) { return g->gid; }

/* ---- membership ---------------------------------------------------------------------- */

typedef struct change_op {
    union {
        struct raft_change change;
        struct raft_transfer transfer;
        struct raft_barrier barrier;
    } req;
    vx_group *g;
    raft_id id;
    bool then_standby; /* add_learner: raft_add, then raft_assign(STANDBY) */
    vx_group_done_cb cb;
    void *data;
} change_op;

static int map_raft(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
    case RAFT_CANTCHANGE:
        return VX_ESTATE;
    case RAFT_NOMEM:
        return VX_ENOMEM;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return VX_EEXISTS;
    case RAFT_NOTFOUND:
        return VX_ENOTFOUND;
    case RAFT_BADID:
    case RAFT_BADROLE:
        return VX_EINVAL;
    default:
        return VX_EIO;
    }
}

static void change_done(change_op *op, int status)
{
    op->cb(op->data, status);
    free(op);
}

static void assign_cb(struct raft_change *req, int status)
{
    change_done(req->data, map_raft(status));
}

static void add_cb(struct raft_change *req, int status)
{
    change_op *op = req->data;
    if (status == 0 && op->then_standby) {
        op->then_standby = false;
        int rv = raft_assign(&op->g->raft, &op->req.change, op->id, RAFT_STANDBY, assign_cb);
        if (rv == 0) return;
        status = rv;
    }
    change_done(op, map_raft(status));
}

static change_op *change_new(vx_group *g, raft_id id, vx_group_done_cb cb, void *data)
{
    change_op *op = calloc(1, sizeof(*op));
    if (op == NULL) return NULL;
    op->g = g;
    op->id = id;
    op->cb = cb;
    op->data = data;
    op->req.change.data = op;
    return op;
}

/* The role of `id` in the configuration this node knows, or -1. */
static int member_role(vx_group *g, raft_id id)
{
    const struct raft_configuration *c = &g->raft.configuration;
    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id) return c->servers[i].role;
    return -1;
}

/* Membership steps are idempotent, so a caller that lost track of a step
 * (leader change, crash) simply repeats it: a step already in effect
 * completes at once, through cb, before the call returns. */
int vx_group_add_learner(vx_group *g, raft_id id, const char *address, vx_group_done_cb cb,
                         void *data)
{
    if (raft_state(&g->raft) != RAFT_LEADER) return VX_ESTATE;
    int role = member_role(g, id);
    if (role == RAFT_STANDBY || role == RAFT_VOTER) {
        cb(data, 0);
        return 0;
    }
    change_op *op = change_new(g, id, cb, data);
    if (op == NULL) return VX_ENOMEM;
    int rv;
    if (role == RAFT_SPARE) { /* added earlier, never made a learner */
        rv = raft_assign(&g->raft, &op->req.change, id, RAFT_STANDBY, assign_cb);
    } else {
        op->then_standby = true;
        rv = raft_add(&g->raft, &op->req.change, id, address, add_cb);
    }
    if (rv != 0) free(op);
    return map_raft(rv);
}

int vx_group_promote(vx_group *g, raft_id id, vx_group_done_cb cb, void *data)
{
    if (raft_state(&g->raft) != RAFT_LEADER) return VX_ESTATE;
    int role = member_role(g, id);
    if (role < 0) return VX_ENOTFOUND;
    if (role == RAFT_VOTER) {
        cb(data, 0);
        return 0;
    }
    change_op *op = change_new(g, id, cb, data);
    if (op == NULL) return VX_ENOMEM;
    int rv = raft_assign(&g->raft, &op->req.change, id, RAFT_VOTER, assign_cb);
    if (rv != 0) free(op);
    return map_raft(rv);
}

int vx_group_remove(vx_group *g, raft_id id, vx_group_done_cb cb, void *data)
{
    if (raft_state(&g->raft) != RAFT_LEADER) return VX_ESTATE;
    if (member_role(g, id) < 0) {
        cb(data, 0);
        return 0;
    }
    change_op *op = change_new(g, id, cb, data);
    if (op == NULL) return VX_ENOMEM;
    int rv = raft_remove(&g->raft, &op->req.change, id, assign_cb);
    if (rv != 0) free(op);
    return map_raft(rv);
}

static void transfer_cb(struct raft_transfer *req)
{
    /* Done when this node no longer leads (the target may not be known as
     * leader here yet); still leading means the transfer failed. */
    change_op *op = req->data;
    change_done(op, raft_state(&op->g->raft) == RAFT_LEADER ? VX_ESTATE : 0);
}

int vx_group_transfer(vx_group *g, raft_id id, vx_group_done_cb cb, void *data)
{
    change_op *op = change_new(g, id, cb, data);
    if (op == NULL) return VX_ENOMEM;
    op->req.transfer.data = op;
    int rv = raft_transfer(&g->raft, &op->req.transfer, id, transfer_cb);
    if (rv != 0) free(op);
    return map_raft(rv);
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    change_done(req->data, map_raft(status));
}

int vx_group_barrier(vx_group *g, vx_group_done_cb cb, void *data)
{
    change_op *op = change_new(g, 0, cb, data);
    if (op == NULL) return VX_ENOMEM;
    op->req.barrier.data = op;
    int rv = raft_barrier(&g->raft, &op->req.barrier, barrier_cb);
    if (rv != 0) free(op);
    return map_raft(rv);
}

void vx_group_leader(vx_group *g, raft_id *id, const char **address)
{
    raft_leader(&g->raft, id, address);
}

static void node_maybe_closed(vx_node *n);

static void listener_close_cb(uv_handle_t *h)
{
    vx_node *n = h->data;
    n->listener.data = NULL;
    node_maybe_closed(n);
}

static void node_maybe_closed(vx_node *n)
{
    if (n->open_groups > 0 || n->listener.data != NULL || n->pending_in > 0) return;
    while (n->groups) {
        vx_group *g = n->groups;
        n->groups = g->next;
        free(g);
    }
    void (*cb)(void *) = n->close_cb;
    void *data = n->close_data;
    free_secret(n);
    free(n);
    if (cb) cb(data);
}

/* raft_close's callback can come before raft_uv is done with its state: a
 * finalized segment's writer (a uv_poll and a uv_check handle) may still be
 * closing, and its close callback then calls uvMaybeFireCloseCb(uv) again
 * (io_wrap.c passes that second report on to nobody).  Those handles were
 * uv_close'd before the callback, so they have finished once a handle
 * closed now has gone through two close phases of the loop (a close issued
 * inside a close phase lands in the next one).  Only then is the raft_uv
 * state freed and the group reported closed. */
static void group_reaped_cb(uv_handle_t *h)
{
    vx_group *g = h->data;
    if (++g->reap_turns < 2) {
        uv_idle_init(g->node->loop, &g->reap);
        g->reap.data = g;
        uv_close((uv_handle_t *)&g->reap, group_reaped_cb);
        return;
    }
    raft_uv_close(&g->io); /* libraft's uv backend frees its state only here */
    g->closed = true;
    g->node->open_groups--;
    void (*cb)(void *) = g->close_cb;
    void *data = g->close_data;
    g->close_cb = NULL;
    if (cb) cb(data);
    node_maybe_closed(g->node);
}

static void group_close_cb(struct raft *r)
{
    vx_group *g = (vx_group *)((char *)r - offsetof(vx_group, raft));
    uv_idle_init(g->node->loop, &g->reap);
    g->reap.data = g;
    uv_close((uv_handle_t *)&g->reap, group_reaped_cb);
}

void vx_group_close(vx_group *g, void (*cb)(void *data), void *data)
{
    if (g->closed || g->closing) return;
    g->closing = true;
    g->close_cb = cb;
    g->close_data = data;
    raft_close(&g->raft, group_close_cb);
}

void vx_node_close(vx_node *n, void (*cb)(void *data), void *data)
{
    n->closing = true;
    n->close_cb = cb;
    n->close_data = data;
    while (n->in_conns) in_conn_reject(n->in_conns); /* each unlinks itself */
    uv_close((uv_handle_t *)&n->listener, listener_close_cb);
    for (vx_group *g = n->groups; g; g = g->next)
        if (!g->closed && !g->closing) {
            g->closing = true;
            raft_close(&g->raft, group_close_cb);
        }
}
