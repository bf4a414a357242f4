/*
 * runtime.h - a Vectron node in one process: the libuv loop thread with the
 * node host, the catalog group (the placement driver's state machine,
 * src/pd/state.c, as a one-voter Raft group with this process its only
 * worker) and every shard group, plus the index worker pool.  `vectron serve` is one runtime whose groups all have
 * one voter -- the same code paths as a cluster.
 *
 * Threads: the loop thread owns every raft object.  Other threads (HTTP
 * workers) talk to it through tasks: vx_rt_* calls that change state enqueue
 * a task, wake the loop (uv_async), and block until the loop completes it --
 * for a write, until the entry is committed and applied.  Reads do not go
 * through the loop: they take a collection reference and read the shard
 * replicas directly (their search is thread-safe); a linearizable read first
 * runs a barrier through the loop.
 *
 * Data directory:
 *   DIR/node/           the node host (DIR/node/g<gid>/raft: Raft logs and
 *                       snapshots; g2 is the catalog, whose state they hold)
 *   DIR/shards/<gid>/   one shard replica per shard group
 */
#ifndef VX_SERVER_RUNTIME_H
#define VX_SERVER_RUNTIME_H

#include "index/index.h"
#include "shard/shard.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_RT_ERRMSG_LEN 256
#define VX_RT_MAX_SHARDS 64
#define VX_COLLECTION_NAME_MAX 255

typedef struct vx_runtime vx_runtime;
typedef struct vx_collection vx_collection;

struct Vxpd__State;
struct Vxpd__Command;

typedef struct vx_runtime_options {
    const char *data_dir;
    const char *raft_address;  /* "127.0.0.1:7333" */
    unsigned index_workers;    /* 0: number of CPUs */
    uint32_t max_backlog;      /* queued index changes per shard before writes wait */
    /* called on the loop thread with the propose-to-apply time of every
     * acknowledged write (the Raft commit latency metric); may be NULL */
    void (*observe_commit)(void *ctx, double seconds);
    void *observe_ctx;
    uint32_t catalog_snapshot_threshold; /* catalog entries between snapshots (0: 1024) */
    /* called on the loop thread with the catalog's state whenever its
     * credentials (auth_epoch) change, and once it is first loaded; may be NULL */
    void (*on_auth)(void *ctx, const struct Vxpd__State *state);
    void *auth_ctx;
} vx_runtime_options;

/* Open (creating if needed) and start the loop thread; every collection of
 * the catalog is opened again.  Ready once the catalog has replayed its log,
 * this process is registered in it, and every group has a leader. */
int vx_runtime_open(const vx_runtime_options *opt, vx_runtime **out, char *errbuf);
/* Stop accepting tasks, close every group and shard, join the loop. */
void vx_runtime_close(vx_runtime *rt);
bool vx_runtime_ready(vx_runtime *rt);
int vx_runtime_wait_ready(vx_runtime *rt, int timeout_ms);

/* ---- collections ---------------------------------------------------------------
 * A collection's configuration, as created (defaults filled in). */
typedef struct vx_collection_config {
    uint32_t dim;
    vx_metric metric;
    bool manhattan;         /* reserved: refused at create for now */
    uint32_t shard_number;  /* 1..VX_RT_MAX_SHARDS */
    uint32_t replication_factor;
    uint32_t write_consistency_factor;
    bool on_disk_payload;
    uint32_t hnsw_m, hnsw_ef_construct, full_scan_threshold;
    bool int8;              /* quantization_config.scalar.type == int8 */
    float quantile;         /* 0 = min/max */
    bool always_ram;
    uint64_t indexing_threshold; /* optimizers_config, reported */
    /* optimizers_config: a shard's index is compacted in the background
     * (deleted nodes repaired around and their slots reused) once deleted
     * nodes are at least this share of its slots and at least this many */
    double deleted_threshold;    /* default 0.2 */
    uint64_t vacuum_min_vector_number; /* default 1000 */
} vx_collection_config;

/* Parse a Qdrant CreateCollection body into cfg (defaults filled in);
 * VX_EINVAL with a message naming the bad field. */
struct cJSON;
int vx_collection_config_parse(const struct cJSON *body, vx_collection_config *cfg,
                               char *errbuf);
/* The index settings of a collection's shards. */
void vx_collection_index_config(const vx_collection_config *cfg, vx_index_config *ic);
/* A shard's settings for this collection (index, compaction), before the
 * host adds its own (backlog, recovery). */
struct vx_shard_config;
void vx_collection_shard_config(const vx_collection_config *cfg, struct vx_shard_config *sc);
/* Apply a Qdrant UpdateCollection body (hnsw_config, optimizers_config,
 * params...) to cfg; fields that cannot change (size, distance) are refused. */
int vx_collection_config_patch(vx_collection_config *cfg, const struct cJSON *body,
                               char *errbuf);
bool vx_collection_name_ok(const char *name);
/* The configuration as a Qdrant CreateCollection body (malloc'd; NULL: out
 * of memory): the form the placement driver's state keeps, which
 * vx_collection_config_parse reads back to the same configuration. */
char *vx_collection_config_body(const vx_collection_config *cfg);

/* Propose one credential command (proto/pd.proto: put_user, delete_user,
 * put_api_key, delete_api_key, revoke_tokens) to the catalog and wait for it
 * to apply: 0, the refusal's VX_E* status (message in errbuf), or the error
 * of the proposal.  When it returns, on_auth has seen the change. */
struct Vxpd__Command;
int vx_rt_catalog_change(vx_runtime *rt, const struct Vxpd__Command *cmd, char *errbuf);

/* VX_EEXISTS when the name is taken; returns once every shard is ready. */
int vx_rt_create_collection(vx_runtime *rt, const char *name, const vx_collection_config *cfg,
                            char *errbuf);
/* VX_ENOTFOUND when missing. */
int vx_rt_delete_collection(vx_runtime *rt, const char *name, char *errbuf);
int vx_rt_update_collection(vx_runtime *rt, const char *name, const vx_collection_config *cfg,
                            char *errbuf);
/* Sorted names (malloc'd array of malloc'd strings). */
int vx_rt_list_collections(vx_runtime *rt, char ***names, size_t *n);

/* A reference to a live collection (NULL: none), released with put. */
vx_collection *vx_rt_collection_get(vx_runtime *rt, const char *name);
void vx_rt_collection_put(vx_collection *c);
const char *vx_collection_name(const vx_collection *c);
const vx_collection_config *vx_collection_get_config(const vx_collection *c);
uint32_t vx_collection_shards(const vx_collection *c);
/* The shard a point id belongs to: FNV-1a of its canonical bytes. */
uint32_t vx_collection_route(const vx_collection *c, const struct vx_point_id *id);
/* The replica of shard i, held against replacement until release. */
vx_shard *vx_collection_shard_acquire(vx_collection *c, uint32_t i);
void vx_collection_shard_release(vx_collection *c, uint32_t i);

/* Propose a shard command (consumed: malloc'd, as vx_cmd_finish gives it)
 * to shard i and wait until it is committed and applied, or timeout_ms.
 * *status is the shard's apply status (0, or why it was a no-op).  Writers
 * wait first while the shard's index backlog is full (backpressure).
 * VX_ESTATE: this node does not lead the shard; VX_ENOTFOUND: the collection
 * is gone; VX_EIO on timeout (the entry may still apply). */
int vx_collection_propose(vx_collection *c, uint32_t i, uint8_t *cmd, size_t len, int timeout_ms,
                          int *status);
/* Linearizable read point for shard i (raft barrier). */
int vx_collection_barrier(vx_collection *c, uint32_t i, int timeout_ms);

/* ---- observability ------------------------------------------------------------- */
typedef struct vx_shard_stats {
    uint64_t gid, applied, points, backlog;
    bool leader;
    double last_commit_seconds; /* propose -> apply of the last write */
} vx_shard_stats;
int vx_collection_shard_stats(vx_collection *c, uint32_t i, vx_shard_stats *out);

#endif
