/*
 * shard_fsm.c - see shard_fsm.h.
 */
#include "raft/shard_fsm.h"

#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_MAGIC 0x5658534e41505331ull /* "VXSNAPS1" */
#define SNAP_LEN 32

/* libraft keeps the log's entries in memory from one snapshot to the next,
 * and `trailing` of them after it, and counts them, not their bytes: with
 * the defaults (8192 and 1024) a shard written in batches of 500 128-d
 * points (about 260 KiB an entry) held up to 2 GiB, and RSS grew by the size
 * of every batch written (10 MiB a round of 20,000 overwrites in the churn
 * bench).  So the counts follow the entries' mean size: a snapshot once
 * about LOG_SNAPSHOT_BYTES are in the log, LOG_TRAILING_BYTES kept after it,
 * never more entries than the group was configured with (small entries keep
 * today's counts) and never fewer than a few dozen. */
#define LOG_SNAPSHOT_BYTES (24u << 20)
#define LOG_TRAILING_BYTES (8u << 20)

static unsigned entries_for(double budget, double mean, unsigned lo, unsigned cap)
{
    double n = budget / (mean > 1.0 ? mean : 1.0);
    unsigned v = n >= (double)cap ? cap : (unsigned)n;
    if (v < lo) v = lo < cap ? lo : cap;
    return v;
}

static void bound_log(vx_shard_fsm *f, size_t len)
{
    if (f->cap_threshold == 0) { /* the group's configuration, as the caps */
        f->cap_threshold = f->raft->snapshot.threshold;
        f->cap_trailing = f->raft->snapshot.trailing;
        f->entry_bytes = (double)len;
    }
    f->entry_bytes = 0.9 * f->entry_bytes + 0.1 * (double)len;
    if (++f->applies % 16 != 0) return;
    raft_set_snapshot_threshold(f->raft, entries_for(LOG_SNAPSHOT_BYTES, f->entry_bytes, 32, f->cap_threshold));
    /* At least 16 kept.  Measured (bench/churn.mjs, 128-d batches of 500):
     * floors of 128 and 64 entries let RSS climb to 1.7x the first round's
     * in 10 rounds, 32 and 16 held it to a sawtooth within 1.37x.  The
     * price: a follower more than ~8 MiB of log behind catches up by a
     * snapshot install (a copy of the shard) rather than from the log. */
    raft_set_snapshot_trailing(f->raft, entries_for(LOG_TRAILING_BYTES, f->entry_bytes, 16, f->cap_trailing));
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    vx_shard_fsm *f = fsm->data;
    bound_log(f, buf->len);
    uint64_t index = f->raft->last_applied + 1;
    vx_apply_result res;
    int rc = vx_shard_apply(f->shard, index, f->raft->current_term, buf->base, buf->len, &res);
    if (rc != 0) return RAFT_IOERR; /* fail-stop: the shard refuses everything from now on */
    *result = (void *)(uintptr_t)((index << 8) | (uint8_t)(int8_t)res.status);
    return 0;
}

/* Taking a snapshot (libraft fsm version 3): snapshot() runs on the loop
 * and only writes the descriptor for the applied index N; snapshot_async()
 * runs on libuv's thread pool while the loop goes on applying, and makes N
 * durable -- it syncs the store (whose applied index is >= N by then) and
 * saves the index checkpoint -- before libraft may persist the snapshot and
 * drop log entries.  So neither the fsync nor the index save (seconds for a
 * large shard) stalls the other groups on the loop.  libraft takes no
 * snapshot while it installs one, so the shard is not replaced meanwhile. */
static int fsm_snapshot_async(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    vx_shard_fsm *f = fsm->data;
    char err[VX_SHARD_ERRMSG_LEN];
    (void)bufs;
    (void)n_bufs;
    if (vx_shard_checkpoint(f->shard, err) != 0) {
        fprintf(stderr, "snapshot: %s\n", err);
        return RAFT_IOERR;
    }
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    vx_shard_fsm *f = fsm->data;
    if (vx_shard_failed(f->shard)) return RAFT_IOERR;
    /* its checkpoint would wait for the compaction on a libuv pool thread
     * (raft_uv's too): libraft takes the snapshot a little later instead */
    if (vx_shard_compacting(f->shard)) return RAFT_BUSY;
    /* N may be a barrier or a configuration entry the shard never saw */
    if (vx_shard_mark_applied(f->shard, f->raft->last_applied, f->raft->current_term) != 0)
        return RAFT_IOERR;
    if (fsm->snapshot_async == NULL) { /* an io without async work: checkpoint here */
        int rv = fsm_snapshot_async(fsm, bufs, n_bufs);
        if (rv != 0) return rv;
    }
    struct raft_buffer *b = raft_malloc(sizeof(*b));
    uint8_t *d = raft_malloc(SNAP_LEN);
    if (b == NULL || d == NULL) {
        raft_free(b);
        raft_free(d);
        return RAFT_NOMEM;
    }
    uint64_t magic = SNAP_MAGIC, version = 1, applied = f->raft->last_applied, digest = 0;
    memcpy(d, &magic, 8);
    memcpy(d + 8, &version, 8);
    memcpy(d + 16, &applied, 8);
    memcpy(d + 24, &digest, 8); /* reserved: a digest would need a read of the whole store */
    b->base = d;
    b->len = SNAP_LEN;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

/* The applied index a descriptor names; 0 when it is not ours. */
static uint64_t descriptor_index(const struct raft_buffer *buf)
{
    uint64_t magic = 0, applied = 0;
    if (buf->len == SNAP_LEN) {
        memcpy(&magic, buf->base, 8);
        memcpy(&applied, (const uint8_t *)buf->base + 16, 8);
    }
    return magic == SNAP_MAGIC ? applied : 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    vx_shard_fsm *f = fsm->data;
    uint64_t applied = descriptor_index(buf);
    raft_free(buf->base);
    if (applied == 0) return RAFT_MALFORMED;
    if (applied <= vx_shard_applied(f->shard)) return 0; /* the store already covers it */
    /* The node host installs the data before libraft persists a leader's
     * snapshot (snapshot_io.c), so this is a restart whose store lost data
     * the snapshot says it had: refuse rather than run with a hole. */
    fprintf(stderr,
            "restore: this replica's store is at %llu but its snapshot at %llu: the store lost "
            "synced data; remove this replica's directory so it rejoins from its peers\n",
            (unsigned long long)vx_shard_applied(f->shard), (unsigned long long)applied);
    return RAFT_IOERR;
}

/* ---- snapshot data (node.h, vx_snapshot_ops) ---------------------------------- */

static bool ops_covers(void *data, const struct raft_snapshot *snap)
{
    vx_shard_fsm *f = data;
    uint64_t applied = snap->n_bufs == 1 ? descriptor_index(&snap->bufs[0]) : 0;
    return applied != 0 && applied <= vx_shard_applied(f->shard);
}

static int ops_serve(void *data, int fd, uint64_t min_index, char *errbuf)
{
    vx_shard_fsm *f = data;
    pthread_rwlock_rdlock(&f->lock);
    int rc = vx_shard_send(f->shard, fd, min_index, errbuf);
    pthread_rwlock_unlock(&f->lock);
    return rc;
}

static int ops_receive(void *data, int fd, uint64_t min_index, char *errbuf)
{
    vx_shard_fsm *f = data;
    pthread_rwlock_rdlock(&f->lock);
    int rc = vx_shard_receive(f->shard, fd, min_index, errbuf);
    pthread_rwlock_unlock(&f->lock);
    return rc;
}

static int ops_install(void *data, char *errbuf)
{
    vx_shard_fsm *f = data;
    /* the install closes the replaced shard, which waits for a compaction:
     * on the loop that would stall every group of the node; try later */
    if (vx_shard_compacting(f->shard))
        return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ESTATE, "replica compacting its index");
    if (pthread_rwlock_trywrlock(&f->lock) != 0)
        return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ESTATE, "replica in use");
    int rc = vx_shard_install(&f->shard, errbuf);
    if (rc == 0) f->installs++;
    pthread_rwlock_unlock(&f->lock);
    return rc;
}

void vx_shard_fsm_snapshot_ops(vx_shard_fsm *f, vx_snapshot_ops *ops)
{
    *ops = (vx_snapshot_ops){.data = f,
                             .covers = ops_covers,
                             .serve = ops_serve,
                             .receive = ops_receive,
                             .install = ops_install};
}

void vx_shard_fsm_sync_snapshots(vx_shard_fsm *f) { f->fsm.snapshot_async = NULL; }

vx_shard *vx_shard_fsm_acquire(vx_shard_fsm *f)
{
    pthread_rwlock_rdlock(&f->lock);
    return f->shard;
}

void vx_shard_fsm_release(vx_shard_fsm *f) { pthread_rwlock_unlock(&f->lock); }

void vx_shard_fsm_destroy(vx_shard_fsm *f) { pthread_rwlock_destroy(&f->lock); }

void vx_shard_fsm_init(vx_shard_fsm *f, vx_shard *shard)
{
    memset(f, 0, sizeof(*f));
    f->shard = shard;
    pthread_rwlock_init(&f->lock, NULL);
    f->fsm.version = 3;
    f->fsm.data = f;
    f->fsm.apply = fsm_apply;
    f->fsm.snapshot = fsm_snapshot;
    f->fsm.restore = fsm_restore;
    f->fsm.snapshot_async = fsm_snapshot_async;
}
