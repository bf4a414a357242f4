/*
 * io_wrap.c - see io_wrap.h.
 *
 * Every method passes to the inner raft_io.  The inner calls libraft back
 * (tick, recv, close, request callbacks) with its own raft_io, whose `data`
 * is the struct raft like ours; the struct raft's `io` is &w->io, which is
 * how the callbacks find the wrapper.
 */
#include "raft/io_wrap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vx_io_wrap *wrap_of(struct raft_io *io) { return (vx_io_wrap *)io; }
static struct raft_io *in(struct raft_io *io) { return wrap_of(io)->inner; }

/* The wrapper of the raft instance an inner raft_io calls back for. */
static vx_io_wrap *wrap_of_inner(struct raft_io *inner)
{
    struct raft *r = inner->data;
    return (vx_io_wrap *)r->io;
}

static void copy_errmsg(struct raft_io *io, int rv)
{
    if (rv != 0) memcpy(io->errmsg, in(io)->errmsg, sizeof io->errmsg);
}

/* ---- the commit rule (io_wrap.h, 1.) ------------------------------------------ */

static void barrier_cb(struct raft_barrier *req, int status)
{
    (void)status;
    free(req);
}

static bool leading_without_own_entry(vx_io_wrap *w)
{
    struct raft *r = w->io.data;
    return raft_state(r) == RAFT_LEADER && w->stored_term < r->current_term;
}

static void maybe_barrier(vx_io_wrap *w)
{
    struct raft *r = w->io.data;
    if (!leading_without_own_entry(w) || w->barrier_term == r->current_term) return;
    struct raft_barrier *b = calloc(1, sizeof(*b));
    if (b == NULL) return; /* the next tick tries again */
    if (raft_barrier(r, b, barrier_cb) == 0)
        w->barrier_term = r->current_term;
    else
        free(b);
}

/* Drop what a message owns (entries, snapshot data): libraft is not told. */
static void drop_message(struct raft_message *m)
{
    if (m->type == RAFT_IO_APPEND_ENTRIES) {
        struct raft_append_entries *a = &m->append_entries;
        if (a->n_entries > 0) {
            if (a->entries[0].batch != NULL) raft_free(a->entries[0].batch);
            raft_free(a->entries);
        }
    } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
    }
}

static void fail_stop(vx_io_wrap *w, const char *what, int status)
{
    if (w->failed) return;
    w->failed = true;
    struct raft *r = w->io.data;
    fprintf(stderr,
            "raft node %llu: %s failed (%s): this replica stops (fail-stop) and rejoins from its "
            "peers after a restart\n",
            (unsigned long long)r->id, what, raft_strerror(status));
}

static void w_recv_cb(struct raft_io *inner, struct raft_message *m)
{
    vx_io_wrap *w = wrap_of_inner(inner);
    struct raft *r = w->io.data;
    if (w->failed) {
        drop_message(m);
        return;
    }
    if (m->type == RAFT_IO_APPEND_ENTRIES_RESULT && m->append_entries_result.rejected == 0 &&
        m->append_entries_result.term == r->current_term && leading_without_own_entry(w)) {
        maybe_barrier(w);
        w->held++;
        return; /* nothing to free: a result carries no buffers */
    }
    if (m->type == RAFT_IO_APPEND_ENTRIES) { /* see io_wrap.h, 5. */
        const struct raft_append_entries *a = &m->append_entries;
        raft_index end = a->prev_log_index + a->n_entries;
        if (a->term != w->ae_term) {
            w->ae_term = a->term;
            w->ae_max_end = 0;
        }
        if (a->n_entries > 0 && end > w->ae_max_end) w->ae_max_end = end;
        w->in_recv = true;
        w->recv_end = end;
        w->recv(&w->io, m);
        w->in_recv = false;
        return;
    }
    if (m->type == RAFT_IO_INSTALL_SNAPSHOT) { /* an installed snapshot verifies its index */
        const struct raft_install_snapshot *is = &m->install_snapshot;
        if (is->term != w->ae_term) {
            w->ae_term = is->term;
            w->ae_max_end = 0;
        }
        if (is->last_index > w->ae_max_end) w->ae_max_end = is->last_index;
    }
    w->recv(&w->io, m);
}

static void w_tick_cb(struct raft_io *inner)
{
    vx_io_wrap *w = wrap_of_inner(inner);
    if (w->failed) return;
    if (w->hooks.hold_ticks != NULL && w->hooks.hold_ticks(w->hooks.data)) return;
    w->tick(&w->io);
    maybe_barrier(w);
}

typedef struct append_req {
    struct raft_io_append req; /* given to the inner io */
    struct raft_io_append *orig;
    raft_io_append_cb cb;
    vx_io_wrap *w;
    raft_term term;
} append_req;

static void append_cb(struct raft_io_append *req, int status)
{
    append_req *a = req->data;
    if (status == 0 && a->w->fault_in > 0 && --a->w->fault_in == 0) status = RAFT_IOERR;
    if (status != 0 && status != RAFT_CANCELED) fail_stop(a->w, "a log write", status);
    if (status == 0 && a->term > a->w->stored_term) a->w->stored_term = a->term;
    raft_io_append_cb cb = a->cb;
    struct raft_io_append *orig = a->orig;
    free(a);
    cb(orig, status);
}

static int w_append(struct raft_io *io, struct raft_io_append *req,
                    const struct raft_entry entries[], unsigned n, raft_io_append_cb cb)
{
    if (wrap_of(io)->failed) return RAFT_IOERR;
    append_req *a = malloc(sizeof(*a));
    if (a == NULL) return RAFT_NOMEM;
    a->req.data = a;
    a->orig = req;
    a->cb = cb;
    a->w = wrap_of(io);
    a->term = n > 0 ? entries[n - 1].term : 0;
    int rv = in(io)->append(in(io), &a->req, entries, n, append_cb);
    if (rv != 0) free(a);
    return rv;
}

static int w_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                  struct raft_snapshot **snapshot, raft_index *start_index,
                  struct raft_entry *entries[], size_t *n_entries)
{
    int rv = in(io)->load(in(io), term, voted_for, snapshot, start_index, entries, n_entries);
    copy_errmsg(io, rv);
    if (rv == 0) {
        vx_io_wrap *w = wrap_of(io);
        if (*snapshot != NULL) w->stored_term = (*snapshot)->term;
        if (*n_entries > 0 && (*entries)[*n_entries - 1].term > w->stored_term)
            w->stored_term = (*entries)[*n_entries - 1].term;
    }
    return rv;
}

static int w_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv)
{
    vx_io_wrap *w = wrap_of(io);
    w->tick = tick;
    w->recv = recv;
    int rv = in(io)->start(in(io), msecs, w_tick_cb, w_recv_cb);
    copy_errmsg(io, rv);
    return rv;
}

/* ---- plain delegation -------------------------------------------------------------- */

static int w_init(struct raft_io *io, raft_id id, const char *address)
{
    in(io)->data = io->data; /* the inner calls libraft back with its own io */
    int rv = in(io)->init(in(io), id, address);
    copy_errmsg(io, rv);
    return rv;
}

/* raft_uv 0.15 fires its close callback from uvMaybeFireCloseCb every time
 * something it tracks finishes while closing, and it does not track the
 * close of a finalized segment's writer (uvAliveSegmentFinalize dequeues
 * the segment before UvWriterClose completes): that writer's close, a loop
 * turn later, calls the callback again.  Pass libraft's ioCloseCb on once. */
static void inner_close_cb(struct raft_io *inner)
{
    vx_io_wrap *w = wrap_of_inner(inner);
    if (w->close_fired) return;
    w->close_fired = true;
    w->close_cb(inner);
}

static void inner_close(vx_io_wrap *w) { w->inner->close(w->inner, inner_close_cb); }

static void w_close(struct raft_io *io, raft_io_close_cb cb)
{
    vx_io_wrap *w = wrap_of(io);
    w->close_cb = cb;
    if (w->hooks.close != NULL)
        w->hooks.close(w->hooks.data, w, inner_close);
    else
        inner_close(w);
}

static int w_bootstrap(struct raft_io *io, const struct raft_configuration *conf)
{
    int rv = in(io)->bootstrap(in(io), conf);
    copy_errmsg(io, rv);
    return rv;
}

static int w_recover(struct raft_io *io, const struct raft_configuration *conf)
{
    int rv = in(io)->recover(in(io), conf);
    copy_errmsg(io, rv);
    return rv;
}

static int w_set_term(struct raft_io *io, raft_term term) { return in(io)->set_term(in(io), term); }

static int w_set_vote(struct raft_io *io, raft_id id) { return in(io)->set_vote(in(io), id); }

static int w_send(struct raft_io *io, struct raft_io_send *req, const struct raft_message *message,
                  raft_io_send_cb cb)
{
    if (message->server_address == NULL) return RAFT_NOCONNECTION; /* see io_wrap.h, 3. */
    vx_io_wrap *w = wrap_of(io);
    if (w->failed) return RAFT_NOCONNECTION;
    if (message->type == RAFT_IO_APPEND_ENTRIES_RESULT &&
        message->append_entries_result.rejected == 0) { /* see io_wrap.h, 5. */
        raft_index cap = w->in_recv ? w->recv_end : w->ae_max_end;
        if (message->append_entries_result.last_log_index > cap) {
            struct raft_message m = *message; /* the inner io encodes it before returning */
            m.append_entries_result.last_log_index = cap;
            return in(io)->send(in(io), req, &m, cb);
        }
    }
    return in(io)->send(in(io), req, message, cb);
}

static int w_truncate(struct raft_io *io, raft_index index)
{
    return in(io)->truncate(in(io), index);
}

static int w_snapshot_put(struct raft_io *io, unsigned trailing, struct raft_io_snapshot_put *req,
                          const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb)
{
    vx_io_wrap *w = wrap_of(io);
    if (w->hooks.snapshot_put != NULL &&
        w->hooks.snapshot_put(w->hooks.data, trailing, req, snapshot, cb))
        return 0;
    return in(io)->snapshot_put(in(io), trailing, req, snapshot, cb);
}

static int w_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                          raft_io_snapshot_get_cb cb)
{
    return in(io)->snapshot_get(in(io), req, cb);
}

static raft_time w_time(struct raft_io *io) { return in(io)->time(in(io)); }

static int w_random(struct raft_io *io, int min, int max)
{
    return in(io)->random(in(io), min, max);
}

static int w_async_work(struct raft_io *io, struct raft_io_async_work *req,
                        raft_io_async_work_cb cb)
{
    return in(io)->async_work(in(io), req, cb);
}

void vx_io_wrap_inject_fault(vx_io_wrap *w, unsigned n) { w->fault_in = n; }

void vx_io_wrap_init(vx_io_wrap *w, struct raft_io *inner, const vx_io_wrap_hooks *hooks)
{
    memset(w, 0, sizeof(*w));
    w->inner = inner;
    if (hooks != NULL) w->hooks = *hooks;
    struct raft_io *io = &w->io;
    io->data = inner->data;
    io->impl = w;
    /* raft_uv 0.15 says version 1 but implements async_work (a version 2
     * method), which async snapshots need: say what it does */
    io->version = inner->async_work != NULL ? 2 : inner->version;
    io->init = w_init;
    io->close = w_close;
    io->load = w_load;
    io->start = w_start;
    io->bootstrap = w_bootstrap;
    io->recover = w_recover;
    io->set_term = w_set_term;
    io->set_vote = w_set_vote;
    io->send = w_send;
    io->append = w_append;
    io->truncate = w_truncate;
    io->snapshot_put = w_snapshot_put;
    io->snapshot_get = w_snapshot_get;
    io->time = w_time;
    io->random = w_random;
    if (inner->async_work != NULL) io->async_work = w_async_work;
}
