/*
 * shard.h - one replica of a shard: the state machine Raft drives.
 *
 * A shard replica owns a store (store/store.h: the durable truth) and a
 * vector index (index/index.h: derived, rebuildable) in one directory:
 *
 *   DIR/store/            LMDB environment
 *   DIR/index-<N>.vxi     the index as of applied Raft index N (checkpoint)
 *
 * apply() runs one committed Raft entry: it decodes the command, writes
 * every record and the applied index in ONE store transaction, then queues
 * the vector changes for the index; a job on the shared worker pool drains
 * the queue into the index.  So apply never waits for HNSW inserts, and a
 * leader may acknowledge as soon as apply returns.  Searches cover the
 * index plus an exact scan of the queued (not yet indexed) changes, so a
 * point is searchable -- and a deleted point gone -- as soon as its write is
 * applied.  backlog() is the leader's backpressure signal.
 *
 * Replay is idempotent: an entry at or below the store's applied index is
 * skipped.  A malformed command is applied as a no-op on every replica (the
 * result says VX_EINVAL), never half-applied.
 *
 * Restart: the newest index checkpoint not newer than the store is loaded,
 * records written after it are re-indexed and labels deleted after it are
 * removed; a missing or corrupt checkpoint means a rebuild from the store,
 * never a failure to open.
 *
 * Threading: apply from one thread (the Raft loop's apply path);
 * checkpoint from one thread at a time, concurrently with apply; search,
 * get, digest and send from any thread.
 */
#ifndef VX_SHARD_SHARD_H
#define VX_SHARD_SHARD_H

#include "base/pointid.h"
#include "base/workpool.h"
#include "index/index.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_SHARD_ERRMSG_LEN 256

typedef struct vx_shard vx_shard;

typedef struct vx_shard_config {
    vx_index_config index; /* dim, metric, quantization, HNSW parameters */
    uint32_t max_backlog;  /* queued index changes above which backlog_full() (default 20000) */
    size_t max_backlog_bytes; /* ... or queued vector bytes (default 256 MiB): memory stays
                                 bounded whatever the dimension */
    /* Open (and snapshot install) queue the records written after the index
     * checkpoint for the background indexer instead of indexing them before
     * vx_shard_open returns, up to half of max_backlog and of
     * max_backlog_bytes (the rest is indexed in place, so writes are not held
     * back from the start).  Searches score the queued records exactly
     * meanwhile, and writes meet the backlog bound as usual.  For shards
     * opened on an event loop (serve, workers): an install re-indexing
     * thousands of records there stalled every group of the node. */
    bool background_recovery;
    /* Compaction (the collection's optimizers_config): once the index's
     * deleted nodes are at least vacuum_ratio of its slots and at least
     * vacuum_min of them, the index worker repairs the graph around them and
     * frees their slots for new points (vx_index_vacuum), in the background:
     * searches go on meanwhile (queued writes are scored exactly), writes
     * are applied and queue up within the backlog bound, and nothing of it
     * runs on a Raft loop.  Off unless `vacuum` (hosts turn it on; a unit
     * test that counts tombstones does not); vacuum_ratio 0 with vacuum_min
     * 0 vacuums after every drain that left a deleted node. */
    bool vacuum;
    double vacuum_ratio;
    uint64_t vacuum_min;
} vx_shard_config;

/* The compaction's state and counts. */
typedef struct vx_shard_optimizer {
    bool running;        /* a vacuum is in progress (the collection is "yellow") */
    uint64_t deleted;    /* deleted nodes awaiting it */
    uint64_t runs;       /* vacuums finished */
    uint64_t reclaimed;  /* slots they freed, in all */
    double seconds;      /* time they took, in all */
} vx_shard_optimizer;

int vx_shard_open(const char *dir, const vx_shard_config *cfg, vx_workpool *pool,
                  vx_shard **out, char *errbuf);
/* A new compaction policy (a PATCH of optimizers_config); checked at once. */
void vx_shard_set_optimizer(vx_shard *sh, double vacuum_ratio, uint64_t vacuum_min);
void vx_shard_optimizer_status(vx_shard *sh, vx_shard_optimizer *out);
/* A compaction is scheduled or running (an install or a checkpoint would
 * wait for it: their callers on a loop try again later). */
bool vx_shard_compacting(vx_shard *sh);
/* Waits for queued index work, then closes.  Does not checkpoint. */
void vx_shard_close(vx_shard *sh);

typedef struct vx_apply_result {
    int status;         /* 0, or why the command was a no-op (VX_EINVAL, VX_EDIM) */
    uint32_t written;   /* points inserted/replaced/updated/deleted */
    uint32_t not_found; /* ids of deletes/payload updates that did not exist */
} vx_apply_result;

/* Apply the committed entry (index, term).  Returns 0 (see res->status), or
 * VX_EFATAL when the store failed: the replica must stop. */
int vx_shard_apply(vx_shard *sh, uint64_t index, uint64_t term, const void *cmd, size_t len,
                   vx_apply_result *res);

typedef struct vx_shard_hit {
    vx_point_id id;
    float distance; /* squared L2, -dot or -cos: ascending */
    uint64_t version;
} vx_shard_hit;

/* k nearest applied points (index + queued changes). */
int vx_shard_search(vx_shard *sh, const float *query, uint32_t k, const vx_search_params *params,
                    vx_shard_hit *out, uint32_t *n_out);
/* The same among the points whose id and payload satisfy `flt` (shard/filter.h;
 * NULL = all).  The payload is read from the store per candidate, so a
 * selective filter makes the index choose its exact scan. */
struct vx_filter_expr;
int vx_shard_search_filtered(vx_shard *sh, const float *query, uint32_t k,
                             const vx_search_params *params, const struct vx_filter_expr *flt,
                             vx_shard_hit *out, uint32_t *n_out);

/* Every point with id >= start (NULL: from the first), in id order (the
 * canonical bytes: integers ascending, then UUIDs, then strings), that
 * satisfies flt (NULL: all), in one read transaction; cb's record is a
 * view valid during the call.  cb returns > 0 to stop, < 0 to fail. */
struct vx_record;
typedef int (*vx_shard_scan_cb)(void *ctx, const vx_point_id *id, const struct vx_record *rec);
int vx_shard_scan(vx_shard *sh, const vx_point_id *start, const struct vx_filter_expr *flt,
                  vx_shard_scan_cb cb, void *ctx);

/* Copy of one point: vector (dim floats) and payload (malloc'd, NUL-ended). */
int vx_shard_get(vx_shard *sh, const vx_point_id *id, float *vec, char **payload,
                 uint64_t *version);

uint64_t vx_shard_applied(vx_shard *sh);
/* Raft entries that are not commands (barriers, configuration changes)
 * never reach apply, so the store's applied index can lag the group's.
 * Before a snapshot names index N, every entry <= N is applied: record N as
 * applied (if higher), so a snapshot, a restart or a transfer that needs N
 * finds it covered.  Apply thread; VX_EFATAL when the store failed. */
int vx_shard_mark_applied(vx_shard *sh, uint64_t index, uint64_t term);
uint64_t vx_shard_count(vx_shard *sh);
size_t vx_shard_backlog(vx_shard *sh);
bool vx_shard_backlog_full(vx_shard *sh);
/* Wait (at most timeout_ms, on the indexer's signal, no polling) until the
 * backlog is below its bounds: 0, or VX_EFULL when it still is not. */
int vx_shard_wait_backlog(vx_shard *sh, int timeout_ms);
/* Wait until every change applied so far is in the index (tests, shutdown);
 * VX_ESTATE on timeout. */
int vx_shard_wait_indexed(vx_shard *sh, int timeout_ms);
/* Store digest + applied index: equal on identical replicas. */
int vx_shard_digest(vx_shard *sh, uint64_t *digest, uint64_t *applied);
/* Sync the store and save the index as of what it covers; older
 * checkpoints are removed (a checkpoint already at that index is kept and
 * not written again).  Call before Raft may drop log entries, and on a
 * graceful stop so that a restart loads the index as it was. */
int vx_shard_checkpoint(vx_shard *sh, char *errbuf);
bool vx_shard_failed(vx_shard *sh);
vx_index *vx_shard_index(vx_shard *sh);
/* The payload indexes (shard/pindex.h) with the number of points each
 * lists; *out is malloc'd. */
typedef struct vx_shard_pindex_info {
    char field[120];
    int type; /* vx_pidx_type */
    uint64_t points;
} vx_shard_pindex_info;
int vx_shard_payload_indexes(vx_shard *sh, vx_shard_pindex_info **out, size_t *n);
const char *vx_shard_dir(vx_shard *sh);
struct vx_store *vx_shard_store(vx_shard *sh);
const vx_shard_config *vx_shard_get_config(vx_shard *sh);

/* ---- moving a replica's data between nodes (snapshot install) ------------------
 * A replica far behind its leader (its log entries were compacted away) gets
 * the leader's data as one stream (shard/xfer.c): the newest index checkpoint
 * and a compacted copy of the store, framed and hashed.  The receiver writes
 * it to DIR.incoming, verifies it, and vx_shard_install() swaps it in:
 * DIR -> DIR.old, DIR.incoming -> DIR, reopen, remove DIR.old.  A crash at
 * any point leaves one complete side, which vx_shard_open() restores. */

/* Open the newest index checkpoint file (read-only fd); VX_ENOTFOUND: none. */
int vx_shard_open_checkpoint(vx_shard *sh, int *fd, uint64_t *index, uint64_t *size);
/* Stream this replica's data to `fd` (a connected socket).  VX_ESTATE (and
 * an error frame) when the store has not applied `min_index` yet.  Any
 * thread; the shard must stay open meanwhile. */
int vx_shard_send(vx_shard *sh, int fd, uint64_t min_index, char *errbuf);
/* Receive such a stream into DIR.incoming for this replica and verify it:
 * stream hash, sizes, store applied >= min_index, every record's checksum.
 * Any thread (reads only the shard's directory name). */
int vx_shard_receive(vx_shard *sh, int fd, uint64_t min_index, char *errbuf);
/* Replace *shp by the data received (closes it, opens the new one).  On
 * failure the previous data is reopened; VX_EFATAL when even that failed
 * (*shp is then NULL and the replica must stop). */
int vx_shard_install(vx_shard **shp, char *errbuf);

#endif
