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

/* ---- outgoing connections ------------------------------------------------------------- */

typedef struct out_conn {
    vx_group *g;
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
    uv_tcp_t *tcp; /* raft_malloc'd: handed to libraft on success */
    uv_connect_t connect;
    uv_write_t write;
    uint8_t hs[HS_FIXED + HS_ADDR_MAX];
    int status;
} out_conn;

static void transport_maybe_closed(vx_group *g)
{
    if (g->transport_closing && g->pending_connects == 0 && g->transport_close_cb) {
        raft_uv_transport_close_cb cb = g->transport_close_cb;
        g->transport_close_cb = NULL;
        cb(&g->transport);
    }
}

static void out_conn_failed_close_cb(uv_handle_t *h)
{
    out_conn *c = h->data;
    vx_group *g = c->g;
    raft_free(c->tcp);
    c->cb(c->req, NULL, c->status);
    free(c);
    g->pending_connects--;
    transport_maybe_closed(g);
}

static void out_conn_fail(out_conn *c, int status)
{
    c->status = status;
    uv_close((uv_handle_t *)c->tcp, out_conn_failed_close_cb);
}

static void out_conn_write_cb(uv_write_t *w, int status)
{
    out_conn *c = w->data;
    vx_group *g = c->g;
    if (status != 0 || g->transport_closing) {
        out_conn_fail(c, g->transport_closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
        return;
    }
    uv_stream_t *stream = (uv_stream_t *)c->tcp;
    c->cb(c->req, stream, 0); /* libraft owns the stream now */
    free(c);
    g->pending_connects--;
    transport_maybe_closed(g);
}

static void out_conn_connect_cb(uv_connect_t *req, int status)
{
    out_conn *c = req->data;
    if (status != 0 || c->g->transport_closing) {
        out_conn_fail(c, c->g->transport_closing ? RAFT_CANCELED : RAFT_NOCONNECTION);
        return;
    }
    size_t alen = strlen(c->g->node->address);
    uint32_t u32;
    uint64_t u64;
    u32 = HS_MAGIC;
    memcpy(c->hs, &u32, 4);
    u32 = HS_VERSION;
    memcpy(c->hs + 4, &u32, 4);
    u64 = c->g->gid;
    memcpy(c->hs + 8, &u64, 8);
    u64 = c->g->id;
    memcpy(c->hs + 16, &u64, 8);
    u32 = (uint32_t)alen;
    memcpy(c->hs + 24, &u32, 4);
    memset(c->hs + 28, 0, 4);
    memcpy(c->hs + HS_FIXED, c->g->node->address, alen);
    uv_buf_t buf = uv_buf_init((char *)c->hs, (unsigned)(HS_FIXED + alen));
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)c->tcp, &buf, 1, out_conn_write_cb) != 0)
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
    uv_tcp_init(g->node->loop, tcp);
    uv_tcp_nodelay(tcp, 1);
    tcp->data = c;
    c->connect.data = c;
    g->pending_connects++;
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
    transport_maybe_closed(g); /* pending connects report RAFT_CANCELED as they end */
}

/* ---- incoming connections -------------------------------------------------------------- */

typedef struct in_conn {
    vx_node *node;
    uv_tcp_t *tcp; /* raft_malloc'd */
    uint8_t hs[HS_FIXED + HS_ADDR_MAX + 1];
    size_t got, want;
} in_conn;

static void in_conn_close_cb(uv_handle_t *h)
{
    in_conn *c = h->data;
    raft_free(c->tcp);
    free(c);
}

static void in_conn_reject(in_conn *c)
{
    uv_read_stop((uv_stream_t *)c->tcp);
    uv_close((uv_handle_t *)c->tcp, in_conn_close_cb);
}

static void in_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    in_conn *c = h->data;
    (void)suggested;
    /* exactly what the handshake still lacks: never a byte of Raft traffic */
    *buf = uv_buf_init((char *)c->hs + c->got, (unsigned)(c->want - c->got));
}

static void in_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    in_conn *c = s->data;
    (void)buf;
    if (nread < 0) {
        in_conn_reject(c);
        return;
    }
    c->got += (size_t)nread;
    if (c->got < c->want) return;
    if (c->want == HS_FIXED) {
        uint32_t magic, version, alen;
        memcpy(&magic, c->hs, 4);
        memcpy(&version, c->hs + 4, 4);
        memcpy(&alen, c->hs + 24, 4);
        if (magic == SN_MAGIC && version == HS_VERSION) { /* snapshot data, not Raft */
            uint64_t gid, min_index;
            memcpy(&gid, c->hs + 8, 8);
            memcpy(&min_index, c->hs + 16, 8);
            vx_group *g = vx_node_find_group(c->node, gid);
            uv_read_stop(s);
            if (g != NULL && !c->node->closing) vx_group_serve_snapshot(g, c->tcp, min_index);
            in_conn_reject(c); /* the serving thread has its own descriptor */
            return;
        }
        if (magic != HS_MAGIC || version != HS_VERSION || alen == 0 || alen > HS_ADDR_MAX) {
            in_conn_reject(c);
            return;
        }
        c->want = HS_FIXED + alen;
        return;
    }
    uv_read_stop(s);
    uint64_t gid, id;
    memcpy(&gid, c->hs + 8, 8);
    memcpy(&id, c->hs + 16, 8);
    c->hs[c->want] = '\0';
    vx_group *g = vx_node_find_group(c->node, gid);
    if (g == NULL || g->accept_cb == NULL || c->node->closing) {
        in_conn_reject(c);
        return;
    }
    uv_tcp_t *tcp = c->tcp;
    char address[HS_ADDR_MAX + 1];
    memcpy(address, c->hs + HS_FIXED, c->want - HS_FIXED + 1);
    free(c);
    tcp->data = NULL;
    g->accept_cb(&g->transport, id, address, (uv_stream_t *)tcp); /* libraft owns it */
}

static void on_connection(uv_stream_t *server, int status)
{
    vx_node *n = server->data;
    if (status != 0 || n->closing) return;
    in_conn *c = calloc(1, sizeof(*c));
    uv_tcp_t *tcp = raft_malloc(sizeof(*tcp));
    if (c == NULL || tcp == NULL) {
        free(c);
        raft_free(tcp);
        return;
    }
    c->node = n;
    c->tcp = tcp;
    c->want = HS_FIXED;
    uv_tcp_init(n->loop, tcp);
    tcp->data = c;
    if (uv_accept(server, (uv_stream_t *)tcp) != 0 ||
        uv_read_start((uv_stream_t *)tcp, in_alloc_cb, in_read_cb) != 0) {
        uv_close((uv_handle_t *)tcp, in_conn_close_cb);
        return;
    }
    uv_tcp_nodelay(tcp, 1);
}

/* ---- the node ------------------------------------------------------------------------------ */

static void free_node_cb(uv_handle_t *h) { free(h->data); }

int vx_node_new(uv_loop_t *loop, const char *address, const char *data_dir, vx_node **out,
                char *errbuf)
{
    struct sockaddr_storage sa;
    if (strlen(address) >= 64 || vx_parse_address(address, &sa) != 0)
        return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EINVAL, "bad listen address %s", address);
    if (strlen(data_dir) >= 300 || vx_mkdir_p(data_dir) != 0)
        return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_EIO, "cannot create %s", data_dir);
    vx_node *n = calloc(1, sizeof(*n));
    if (n == NULL) return vx_errf(errbuf, VX_NODE_ERRMSG_LEN, VX_ENOMEM, "node");
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
    if (n->open_groups > 0 || n->listener.data != NULL) return;
    while (n->groups) {
        vx_group *g = n->groups;
        n->groups = g->next;
        free(g);
    }
    void (*cb)(void *) = n->close_cb;
    void *data = n->close_data;
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
    uv_close((uv_handle_t *)&n->listener, listener_close_cb);
    for (vx_group *g = n->groups; g; g = g->next)
        if (!g->closed && !g->closing) {
            g->closing = true;
            raft_close(&g->raft, group_close_cb);
        }
}
