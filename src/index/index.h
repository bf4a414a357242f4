/*
 * index.h - the Vectron vector index: HNSW over float32 or int8 codes.
 *
 * One vx_index holds vectors of one dimension and metric, each under a
 * caller-chosen 64-bit label (the shard maps point ids onto labels).  It
 * answers k-nearest-neighbour queries approximately through an HNSW graph
 * (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
 * search using Hierarchical Navigable Small World graphs", 2016/2018) or
 * exactly by a scan, with an optional filter predicate.
 *
 * Storage modes (vx_quant):
 *   NONE: the graph is traversed on the float32 vectors, stored inline with
 *         the level-0 links of each node.
 *   INT8: the graph is traversed on uint8 codes of a trained scalar
 *         quantizer (quant.h), stored inline with the links; float32 vectors
 *         are kept in a separate array and used only to rescore the final
 *         candidates (oversampling), so results are ranked by exact distance.
 *         Until `train_size` vectors have been added, the index is a flat
 *         list answered by exact scan; the add that reaches the threshold
 *         trains the quantizer and builds the graph.
 *
 * Metrics: L2 (distances are squared L2; take sqrt at the API), IP (distance
 * is -dot, so smaller is closer) and COSINE (vectors are normalized on
 * insert and queries on search; distance is -cos).
 *
 * Threading model:
 *   - add/delete may run concurrently from any number of threads, and
 *     concurrently with searches.  They take the structure lock in read mode;
 *     each node's link lists are guarded by a striped mutex, and the entry
 *     point by its own mutex (held for the whole insert of a node that raises
 *     the top level, as in the paper's reference implementation).
 *   - search takes no mutex on the graph: links are read with acquire loads
 *     and written with release stores, so a reader always sees a valid id
 *     (possibly a slightly older list).  Searches hold the "code lock" in read
 *     mode, which only retrain and the grace period of vacuum take in write
 *     mode.
 *   - vacuum, retrain, save and validate take the structure lock in write
 *     mode (they exclude add/delete, not searches, except retrain).
 *   Memory of a node never moves: level-0 records live in fixed-size chunks
 *   that are allocated once and freed only with the index.
 *
 * Deletes are tombstones (never returned, still used for routing) until
 * vx_index_vacuum() repairs every neighbour list that points at them and
 * recycles their slots; vx_index_deleted_ratio() tells the owner when.
 *
 * All functions returning int return 0 or a negative VX_E* code (base/err.h);
 * when errbuf is non-NULL a message is written there (VX_ERRMSG_LEN bytes).
 */
#ifndef VX_INDEX_INDEX_H
#define VX_INDEX_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_ERRMSG_LEN 256
#define VX_MAX_DIM 65536

typedef enum { VX_METRIC_L2 = 0, VX_METRIC_IP = 1, VX_METRIC_COSINE = 2 } vx_metric;
typedef enum { VX_QUANT_NONE = 0, VX_QUANT_INT8 = 1 } vx_quant;

typedef struct vx_index vx_index;

typedef struct vx_index_config {
    uint32_t dim;             /* 1..VX_MAX_DIM */
    vx_metric metric;
    vx_quant quant;
    uint32_t m;               /* max links per node on levels >= 1 (2..128); level 0 gets 2*m */
    uint32_t ef_construction; /* beam width while inserting (>= m) */
    uint64_t seed;            /* level generator seed (deterministic single-threaded builds) */
    /* INT8 only */
    uint32_t train_size;      /* vectors buffered before the quantizer is trained (>= 1) */
    float quantile;           /* 0: per-dimension min/max; else clip each dimension's
                                 range to [q, 1-q] quantiles of the sample (e.g. 0.001) */
    uint32_t rescore;         /* default number of candidates rescored with float32
                                 vectors; 0 = max(4k, 32) capped at ef */
} vx_index_config;

/* Sensible defaults: m=16, ef_construction=200, quant NONE, train_size
 * 10000, quantile 0, rescore 0, seed 42. */
void vx_index_config_default(vx_index_config *cfg, uint32_t dim, vx_metric metric);

int vx_index_new(const vx_index_config *cfg, vx_index **out, char *errbuf);
void vx_index_free(vx_index *idx);

/* Insert `vec` (dim floats, all finite) under `label`; an existing label is
 * replaced (the old vector is deleted first).  The vector is copied. */
int vx_index_add(vx_index *idx, uint64_t label, const float *vec, char *errbuf);

/* Train the quantizer now on `n` sample vectors (INT8 only; optional: add()
 * trains on the first train_size vectors by itself).  VX_ESTATE when already
 * trained. */
int vx_index_train(vx_index *idx, const float *sample, size_t n, char *errbuf);

/* Delete by label: VX_ENOTFOUND when absent. */
int vx_index_delete(vx_index *idx, uint64_t label);
bool vx_index_contains(vx_index *idx, uint64_t label);

/* Call cb(ctx, label) for every live label (structure lock held shared:
 * cb must not add or delete).  Stops early when cb returns non-zero and
 * returns that value. */
int vx_index_for_each_label(vx_index *idx, int (*cb)(void *ctx, uint64_t label), void *ctx);

/* Copy the stored (normalized, for COSINE) vector of `label` into out. */
int vx_index_get_vector(vx_index *idx, uint64_t label, float *out);

typedef struct vx_hit {
    uint64_t label;
    float distance; /* squared L2, -dot or -cos; ascending in results */
} vx_hit;

/* A filter: match() returns true for labels that may appear in results.
 * It is called from the searching thread, possibly many times per query,
 * and must be thread-safe and fast.  Non-matching points still route the
 * graph search.  `selectivity` is the caller's estimate of the fraction of
 * points that match (0..1), or a negative value to let the index sample. */
typedef struct vx_filter {
    bool (*match)(void *ctx, uint64_t label);
    void *ctx;
    double selectivity;
} vx_filter;

typedef struct vx_search_params {
    uint32_t ef;      /* beam width on level 0; raised to k when smaller; 0 = max(k, 64) */
    uint32_t rescore; /* INT8: candidates rescored with float32; 0 = index default */
    bool exact;       /* scan every point instead of walking the graph */
    /* With a filter, the exact scan is chosen when the estimated fraction of
     * matching points is below this; 0 = by a cost model (hnsw_search.c). */
    double exact_below_selectivity;
} vx_search_params;

/* k nearest neighbours of `query` (dim floats).  `out` has room for k hits;
 * *n_out receives how many were found (fewer than k when fewer points
 * match).  params and filter may be NULL. */
int vx_index_search(vx_index *idx, const float *query, uint32_t k,
                    const vx_search_params *params, const vx_filter *filter, vx_hit *out,
                    uint32_t *n_out);

/* Repair the graph around deleted points and recycle their slots. */
int vx_index_vacuum(vx_index *idx);
/* Deleted-but-not-vacuumed points / all slots in use. */
double vx_index_deleted_ratio(vx_index *idx);

/* INT8: true when enough recent inserts were clipped by the quantizer's
 * ranges that it should be retrained; vx_index_retrain() retrains on a
 * sample of the stored vectors and re-encodes every code. */
bool vx_index_needs_retrain(vx_index *idx);
int vx_index_retrain(vx_index *idx, char *errbuf);

/* Persist to `path` (written to a temporary file, fsynced, renamed).  The
 * format is versioned and checksummed; see hnsw_io.c. */
int vx_index_save(vx_index *idx, const char *path, char *errbuf);
/* Load a file written by vx_index_save; a corrupt, truncated or foreign file
 * is rejected with VX_ECORRUPT or VX_EFORMAT and a message, never loaded. */
int vx_index_load(const char *path, vx_index **out, char *errbuf);

typedef struct vx_index_stats {
    uint64_t live;           /* labels present */
    uint64_t deleted;        /* tombstones awaiting vacuum */
    uint64_t slots;          /* node slots ever allocated (live + deleted + free) */
    uint32_t max_level;
    bool trained;            /* INT8: quantizer trained and graph built */
    size_t graph_bytes;      /* links, node headers, label map */
    size_t code_bytes;       /* traversal vectors: float32 (NONE) or int8 codes (INT8) */
    size_t vector_bytes;     /* INT8: float32 vectors kept for rescoring */
} vx_index_stats;
void vx_index_get_stats(vx_index *idx, vx_index_stats *st);
const vx_index_config *vx_index_get_config(vx_index *idx);

typedef struct vx_validate_report {
    uint64_t nodes_checked;
    uint64_t links_checked;
    uint64_t unreachable;    /* live nodes not reachable from the entry point on level 0 */
    char msg[VX_ERRMSG_LEN]; /* the first violation */
} vx_validate_report;
/* Check the graph invariants: degree bounds per level, every link names an
 * allocated node present on that level, no link to a free slot, and (when
 * no deletes are pending) no link to a deleted node, label map consistent
 * with nodes, entry point on the top level.  VX_ECORRUPT on violation. */
int vx_index_validate(vx_index *idx, vx_validate_report *rep);

#endif
