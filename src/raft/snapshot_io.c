/*
 * snapshot_io.c - snapshot data beside libraft (see node.h, "snapshot data").
 *
 * libraft installs a leader's snapshot on a follower in two steps: it asks
 * its raft_io to store the snapshot (snapshot_put, asynchronous), then calls
 * the state machine's restore() from the put's callback.  While the put is
 * pending, libraft ignores further AppendEntries and InstallSnapshot
 * messages (replication.c: "already taking or installing snapshot"), and
 * the leader retries later.  So the group hands libraft a wrapper raft_io
 * that passes every call to raft_uv, except a put of a leader's snapshot
 * (trailing == 0) that the state machine does not cover: that one is held
 * until the data is fetched and installed, then passed on.  Because the data
 * is in place before the snapshot is persisted, every crash leaves either
 * the old snapshot with the old (or newer) data or the new snapshot with the
 * new data, never a snapshot without its data.
 *
 * A put is never failed back to libraft: libraft 0.15 has already replaced
 * its in-memory log by the snapshot's position when it asks, and a failed
 * put leaves it believing it has the snapshot.  Fetches are retried until
 * they succeed or the group closes.
 */
#include "base/err.h"
#include "raft/node_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FETCH_CONNECT_TIMEOUT_S 3
#define XFER_IO_TIMEOUT_S 60
#define FETCH_RETRY_MAX_MS 5000

typedef struct snap_fetch {
    vx_group *g;
    struct raft_io_snapshot_put *req;
    const struct raft_snapshot *snap;
    raft_io_snapshot_put_cb cb;
    unsigned trailing;
    bool running;  /* a fetch thread exists, not joined yet */
    bool received; /* the data is staged: install pending */
    _Atomic int fd;
    _Atomic bool cancel;
    pthread_t th;
    int rc;
    char err[VX_NODE_ERRMSG_LEN + 128];
    char address[128];
    unsigned attempts;
} snap_fetch;


static void set_timeouts(int fd)
{
    struct timeval tv = {XFER_IO_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* ---- fetching (the replica that lacks the data) ------------------------------- */

static bool recv_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static bool send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static void *fetch_main(void *arg)
{
    snap_fetch *f = arg;
    vx_group *g = f->g;
    struct sockaddr_storage sa;
    f->rc = VX_EIO;
    if (vx_parse_address(f->address, &sa) != 0) {
        snprintf(f->err, sizeof f->err, "bad leader address %s", f->address);
        goto done;
    }
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(f->err, sizeof f->err, "socket: %s", strerror(errno));
        goto done;
    }
    atomic_store(&f->fd, fd);
    if (atomic_load(&f->cancel)) goto close_fd;
    struct timeval tv = {FETCH_CONNECT_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() */
    socklen_t salen = sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : sizeof(struct sockaddr_in);
    if (connect(fd, (struct sockaddr *)&sa, salen) != 0) {
        snprintf(f->err, sizeof f->err, "connect %s: %s", f->address, strerror(errno));
        goto close_fd;
    }
    set_timeouts(fd);
    /* the handshake (node.h): the leader's challenge, our claim, its proof */
    uint8_t ch[CH_LEN], ok[OK_LEN], msg[HS_MAX], cnonce[VX_HS_NONCE_LEN];
    if (!recv_all(fd, ch, sizeof ch)) {
        snprintf(f->err, sizeof f->err, "no handshake from %s", f->address);
        goto close_fd;
    }
    size_t len = vx_hs_connect_msg(g->node, SN_MAGIC, g->gid, g->id, f->snap->index, ch, msg, cnonce);
    if (len == 0) {
        snprintf(f->err, sizeof f->err, "%s is not a node of this version", f->address);
        goto close_fd;
    }
    if (send(fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len) {
        snprintf(f->err, sizeof f->err, "send to %s: %s", f->address, strerror(errno));
        goto close_fd;
    }
    if (!recv_all(fd, ok, sizeof ok) || !vx_hs_accepted(g->node, ch, msg, len, ok)) {
        snprintf(f->err, sizeof f->err, "%s refused the handshake or does not hold the cluster secret",
                 f->address);
        goto close_fd;
    }
    f->rc = g->snap_ops.receive(g->snap_ops.data, fd, f->snap->index, f->err);
close_fd:
    atomic_store(&f->fd, -1);
    close(fd);
done:
    uv_async_send(&g->fetch_async);
    return NULL;
}

static void fetch_timer_cb(uv_timer_t *t);

static void fetch_schedule(snap_fetch *f, uint64_t ms)
{
    uv_timer_start(&f->g->fetch_timer, fetch_timer_cb, ms, 0);
}

static void fetch_finish(snap_fetch *f)
{
    vx_group *g = f->g;
    g->fetch = NULL;
    int rv = g->io.snapshot_put(&g->io, f->trailing, f->req, f->snap, f->cb);
    if (rv != 0) f->cb(f->req, rv);
    free(f);
}

static void fetch_step(snap_fetch *f)
{
    vx_group *g = f->g;
    if (f->received) {
        int rc = g->snap_ops.install(g->snap_ops.data, f->err);
        if (rc == 0) {
            fprintf(stderr, "group %" PRIu64 " node %" PRIu64 ": snapshot %" PRIu64
                            " data installed\n",
                    g->gid, (uint64_t)g->id, (uint64_t)f->snap->index);
            fetch_finish(f);
            return;
        }
        if (rc == VX_EFATAL) {
            fprintf(stderr, "group %" PRIu64 ": FATAL: installing snapshot data: %s\n", g->gid,
                    f->err);
            abort(); /* fail-stop; vx_shard_open recovers one complete side on restart */
        }
        if (rc == VX_ESTATE) { /* busy (a stream is being served from it) */
            fetch_schedule(f, 100);
            return;
        }
        fprintf(stderr, "group %" PRIu64 ": installing snapshot data: %s; fetching again\n",
                g->gid, f->err);
        f->received = false;
    }
    raft_id id = 0;
    const char *address = NULL;
    raft_leader(&g->raft, &id, &address);
    if (id == 0 || id == g->id || address == NULL || strlen(address) >= sizeof f->address) {
        fetch_schedule(f, 200);
        return;
    }
    snprintf(f->address, sizeof f->address, "%s", address);
    f->err[0] = '\0';
    f->running = true;
    if (pthread_create(&f->th, NULL, fetch_main, f) != 0) {
        f->running = false;
        fetch_schedule(f, 1000);
    }
}

static void fetch_timer_cb(uv_timer_t *t)
{
    vx_group *g = t->data;
    if (g->fetch != NULL && !g->fetch->running) fetch_step(g->fetch);
}

static void fetch_async_cb(uv_async_t *a)
{
    vx_group *g = a->data;
    snap_fetch *f = g->fetch;
    if (f == NULL || !f->running) return;
    pthread_join(f->th, NULL);
    f->running = false;
    if (atomic_load(&f->cancel)) return;
    if (f->rc == 0) {
        f->received = true;
        fetch_step(f);
        return;
    }
    f->attempts++;
    uint64_t ms = 250u * f->attempts;
    if (ms > FETCH_RETRY_MAX_MS) ms = FETCH_RETRY_MAX_MS;
    fprintf(stderr,
            "group %" PRIu64 ": fetching snapshot %" PRIu64 " from %s: %s (attempt %u; retry in "
            "%" PRIu64 " ms)\n",
            g->gid, (uint64_t)f->snap->index, f->address, f->err, f->attempts, ms);
    fetch_schedule(f, ms);
}

static void fetch_cancel(vx_group *g)
{
    snap_fetch *f = g->fetch;
    if (f == NULL) return;
    atomic_store(&f->cancel, true);
    int fd = atomic_load(&f->fd);
    if (fd >= 0) shutdown(fd, SHUT_RDWR);
    if (f->running) pthread_join(f->th, NULL);
    uv_timer_stop(&g->fetch_timer);
    g->fetch = NULL;
    f->cb(f->req, RAFT_CANCELED); /* libraft is closing: it discards the snapshot */
    free(f);
}

/* ---- serving (any replica whose data covers the request) -------------------------- */

typedef struct serve_arg {
    vx_group *g;
    int slot;
    uint64_t min_index;
    uint8_t ok[OK_LEN]; /* the handshake's proof, sent before the data */
} serve_arg;

static void *serve_main(void *arg)
{
    serve_arg *a = arg;
    vx_group *g = a->g;
    char err[VX_NODE_ERRMSG_LEN];
    int fd = g->serve_fds[a->slot];
    int rc = send_all(fd, a->ok, OK_LEN) ? g->snap_ops.serve(g->snap_ops.data, fd, a->min_index, err)
                                         : vx_errf(err, sizeof err, VX_EIO, "the peer went away");
    if (rc != 0)
        fprintf(stderr, "group %" PRIu64 ": serving snapshot data: %s\n", g->gid, err);
    pthread_mutex_lock(&g->serve_mu);
    close(fd);
    g->serve_fds[a->slot] = -2; /* finished, to be joined */
    g->serve_done[a->slot] = true;
    pthread_mutex_unlock(&g->serve_mu);
    free(a);
    uv_async_send(&g->serve_async);
    return NULL;
}

static void serve_reap(vx_group *g, bool all)
{
    pthread_mutex_lock(&g->serve_mu);
    if (all)
        for (int i = 0; i < SN_MAX_SERVES; i++)
            if (g->serve_fds[i] >= 0) shutdown(g->serve_fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&g->serve_mu);
    for (int i = 0; i < SN_MAX_SERVES; i++) {
        pthread_mutex_lock(&g->serve_mu);
        bool join = g->serve_fds[i] != -1 && (all || g->serve_done[i]);
        pthread_mutex_unlock(&g->serve_mu);
        if (!join) continue;
        pthread_join(g->serve_threads[i], NULL);
        pthread_mutex_lock(&g->serve_mu);
        g->serve_fds[i] = -1;
        g->serve_done[i] = false;
        pthread_mutex_unlock(&g->serve_mu);
    }
}

static void serve_async_cb(uv_async_t *a) { serve_reap(a->data, false); }

void vx_group_serve_snapshot(vx_group *g, uv_tcp_t *tcp, uint64_t min_index, const uint8_t ok[OK_LEN])
{
    uv_os_fd_t ufd;
    if (g->snap_ops.serve == NULL || g->closing_io || uv_fileno((uv_handle_t *)tcp, &ufd) != 0)
        return;
    pthread_mutex_lock(&g->serve_mu);
    int slot = -1;
    for (int i = 0; i < SN_MAX_SERVES && slot < 0; i++)
        if (g->serve_fds[i] == -1) slot = i;
    int fd = slot >= 0 ? fcntl(ufd, F_DUPFD_CLOEXEC, 0) : -1;
    serve_arg *a = fd >= 0 ? malloc(sizeof(*a)) : NULL;
    if (a == NULL) {
        if (fd >= 0) close(fd);
        pthread_mutex_unlock(&g->serve_mu);
        return; /* too many at once: the fetcher retries */
    }
    /* the duplicate shares the file description libuv made non-blocking */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    set_timeouts(fd);
    *a = (serve_arg){g, slot, min_index, {0}};
    memcpy(a->ok, ok, OK_LEN);
    g->serve_fds[slot] = fd;
    g->serve_done[slot] = false;
    if (pthread_create(&g->serve_threads[slot], NULL, serve_main, a) != 0) {
        g->serve_fds[slot] = -1;
        close(fd);
        free(a);
    }
    pthread_mutex_unlock(&g->serve_mu);
}

/* ---- hooks on the group's raft_io wrapper --------------------------------------------- */

static bool hook_snapshot_put(void *data, unsigned trailing, struct raft_io_snapshot_put *req,
                              const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb)
{
    vx_group *g = data;
    bool install = trailing == 0 && g->snap_ops.receive != NULL && g->fetch == NULL &&
                   !g->closing_io && !g->snap_ops.covers(g->snap_ops.data, snapshot);
    if (!install) return false;
    snap_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL) return false; /* libraft persists it; restore() then refuses */
    f->g = g;
    f->req = req;
    f->snap = snapshot;
    f->cb = cb;
    f->trailing = trailing;
    atomic_store(&f->fd, -1);
    g->fetch = f;
    fprintf(stderr,
            "group %" PRIu64 ": snapshot %" PRIu64 " (term %" PRIu64
            ") needs data this replica lacks: fetching it\n",
            g->gid, (uint64_t)snapshot->index, (uint64_t)snapshot->term);
    fetch_step(f);
    return true;
}

static void handle_closed_cb(uv_handle_t *h)
{
    vx_group *g = h->data;
    if (--g->handles_open == 0) g->wrap_done(&g->wrap);
}

static void hook_close(void *data, vx_io_wrap *w, void (*done)(vx_io_wrap *w))
{
    vx_group *g = data;
    g->closing_io = true;
    fetch_cancel(g);
    serve_reap(g, true);
    if (g->handles_open == 0) {
        done(w);
        return;
    }
    g->wrap_done = done;
    uv_handle_t *h[3] = {(uv_handle_t *)&g->fetch_timer, (uv_handle_t *)&g->fetch_async,
                         (uv_handle_t *)&g->serve_async};
    for (unsigned i = 0, n = g->handles_open; i < n; i++) uv_close(h[i], handle_closed_cb);
}

static bool hook_hold_ticks(void *data) { return ((vx_group *)data)->fetch != NULL; }

void vx_group_io_wrap(vx_group *g)
{
    vx_io_wrap_hooks hooks = {.data = g,
                              .snapshot_put = hook_snapshot_put,
                              .close = hook_close,
                              .hold_ticks = hook_hold_ticks};
    vx_io_wrap_init(&g->wrap, &g->io, &hooks);
    pthread_mutex_init(&g->serve_mu, NULL);
    for (int i = 0; i < SN_MAX_SERVES; i++) g->serve_fds[i] = -1;
}

int vx_group_io_start(vx_group *g)
{
    uv_loop_t *loop = g->node->loop;
    g->fetch_timer.data = g->fetch_async.data = g->serve_async.data = g;
    if (uv_timer_init(loop, &g->fetch_timer) != 0) return VX_EIO;
    g->handles_open = 1;
    if (uv_async_init(loop, &g->fetch_async, fetch_async_cb) != 0) return VX_EIO;
    g->handles_open = 2;
    if (uv_async_init(loop, &g->serve_async, serve_async_cb) != 0) return VX_EIO;
    g->handles_open = 3;
    return 0;
}

void vx_group_set_snapshot_ops(vx_group *g, const vx_snapshot_ops *ops) { g->snap_ops = *ops; }
