/*
 * backend.h - what the HTTP API (api.c) needs from the database below it.
 *
 * The same handlers serve two deployments: `vectron serve`, whose
 * collections are shards in this process (runtime.h; backend_local.c), and
 * `vectron gateway`, whose shards live on workers reached over internal RPC
 * (src/gateway/).  The API parses, validates and formats; a backend stores,
 * routes and searches.  Every operation is on one shard of an open
 * collection, so fan-out, merging and error reporting stay in one place
 * (the API), whatever the transport.
 *
 * Threads: every function may be called from many HTTP threads at once.
 * A vx_bcol is held open (open .. close) for the length of one request; the
 * backend keeps it valid that long even if the collection is deleted
 * meanwhile (its operations then fail with VX_ENOTFOUND).
 */
#ifndef VX_SERVER_BACKEND_H
#define VX_SERVER_BACKEND_H

#include "base/pointid.h"
#include "server/runtime.h"
#include "shard/filter.h"
#include "shard/shard.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_BACKEND_ERRMSG_LEN 256

typedef struct vx_bcol vx_bcol; /* an open collection (the backend's own type) */

/* A filter in both forms: compiled (validated by the API) and as JSON text
 * (what a remote shard compiles again).  NULL: no filter. */
typedef struct vx_bfilter {
    const vx_filter_expr *expr;
    const char *json;
} vx_bfilter;

/* How a read may be served. */
typedef struct vx_read_opts {
    int timeout_ms;   /* the shard's deadline; 0: the backend's default */
    bool any_replica; /* a follower may answer (no read-your-writes) */
} vx_read_opts;

typedef struct vx_bshard_stats {
    uint64_t points, indexed, backlog, applied;
    bool leader;                 /* local: this process leads the shard */
    double last_commit_seconds;  /* local: propose -> apply of the last write */
    vx_shard_pindex_info *pindex; /* malloc'd, npindex entries (may be NULL) */
    size_t npindex;
    /* compaction (vx_shard_optimizer) */
    bool optimizing;
    uint64_t deleted, vacuums, reclaimed;
} vx_bshard_stats;

typedef struct vx_backend {
    void *self;
    const char *kind; /* "local" or "cluster": reported by /cluster */
    /* collections */
    int (*list)(void *self, char ***names, size_t *n); /* names malloc'd */
    /* body: the Qdrant create body as received (kept by a cluster's PD) */
    int (*create)(void *self, const char *name, const vx_collection_config *cfg, const char *body,
                  char *errbuf);
    int (*update)(void *self, const char *name, const vx_collection_config *cfg, char *errbuf);
    int (*drop)(void *self, const char *name, char *errbuf); /* VX_ENOTFOUND if absent */
    /* NULL: no such collection (*why VX_ENOTFOUND), or the backend cannot
     * tell now (*why VX_ESTATE: a cluster whose topology cannot be refreshed) */
    vx_bcol *(*open)(void *self, const char *name, int *why);
    void (*close)(vx_bcol *c);
    bool (*ready)(void *self);
    /* an open collection */
    const vx_collection_config *(*config)(vx_bcol *c);
    uint32_t (*nshards)(vx_bcol *c);
    uint32_t (*route)(vx_bcol *c, const vx_point_id *id);
    /* one shard: i < nshards */
    /* cmd: malloc'd, ownership taken; *status: the shard's apply status */
    int (*propose)(vx_bcol *c, uint32_t i, uint8_t *cmd, size_t len, int timeout_ms, int *status,
                   char *errbuf);
    int (*barrier)(vx_bcol *c, uint32_t i, int timeout_ms);
    /* ro may be NULL (defaults); a missed deadline is VX_EIO */
    int (*search)(vx_bcol *c, uint32_t i, const float *q, uint32_t k, const vx_search_params *p,
                  const vx_bfilter *f, const vx_read_opts *ro, vx_shard_hit *out, uint32_t *n);
    /* vec (dim floats) may be NULL; *payload malloc'd; VX_ENOTFOUND if absent */
    int (*get)(vx_bcol *c, uint32_t i, const vx_point_id *id, float *vec, char **payload,
               uint64_t *version);
    /* up to `limit` ids >= start (NULL: from the first) matching f, in id order */
    int (*scan_ids)(vx_bcol *c, uint32_t i, const vx_point_id *start, const vx_bfilter *f,
                    size_t limit, vx_point_id *ids, size_t *n);
    int (*count)(vx_bcol *c, uint32_t i, const vx_bfilter *f, uint64_t *n);
    int (*stats)(vx_bcol *c, uint32_t i, vx_bshard_stats *st);
    /* credentials: one command (runtime.h: vx_rt_catalog_change) through the
     * placement driver's state; returns once the gate has seen it.  NULL:
     * this backend keeps no credentials. */
    int (*auth_change)(void *self, const struct Vxpd__Command *cmd, char *errbuf);
} vx_backend;

/* `vectron serve`: the collections of a local runtime. */
void vx_backend_local(vx_runtime *rt, vx_backend *out);

#endif
