/*
 * hnsw_internal.h - the index's private structure, shared by hnsw_*.c.
 *
 * Node storage.  A node is a slot number (uint32).  Its level-0 record lives
 * in a chunk of VX_CHUNK_NODES records; chunk pointers sit in a fixed table,
 * so records never move and readers need no lock to find them.  Record
 * layout (offsets computed once in hnsw.c):
 *
 *   [state u8] [level u8] [pad u16] [aux f32]
 *   [code: dim float32 (NONE) or dim uint8 (INT8)]
 *   [count u32] [links u32 * m0] [label u64] [upper: u32 * pointer]
 *
 * The 8-byte header shares the first cache line with the traversal payload,
 * so the state check and the aux term of a candidate cost no extra miss;
 * `count` and the links follow the payload.
 * Levels >= 1 of a node live in one malloc'd block `upper`: level l (1-based)
 * at upper + (l-1)*(1+m), holding [count, links[m]].
 * INT8 keeps the float32 vectors in a parallel chunked array (vchunks) for
 * rescoring only.
 *
 * States: FREE (slot on the free list or never used), LIVE, DELETED
 * (tombstone: routes searches, never returned, waiting for vacuum).
 *
 * Concurrency: see index.h.  Every link word and count is accessed with
 * __atomic builtins (acquire loads, release stores); a writer of a node's
 * lists holds that node's stripe of link_locks and never two stripes at once.
 */
#ifndef VX_INDEX_HNSW_INTERNAL_H
#define VX_INDEX_HNSW_INTERNAL_H

#include "index/index.h"
#include "index/distance.h"
#include "index/labelmap.h"
#include "index/quant.h"
#include "index/visited.h"

#include <pthread.h>
#include <stdatomic.h>

/* A chunk holds 2^chunk_shift records: as many as fit in about 4 MiB,
 * between 16 and 16,384, so a tiny index of huge vectors commits little. */
#define VX_CHUNK_BYTES (4u << 20)
#define VX_CHUNK_SHIFT_MIN 4
#define VX_CHUNK_SHIFT_MAX 14
#define VX_MAX_CHUNKS (1u << 20) /* pointer table (8 MiB virtual, touched lazily) */
#define VX_MAX_LEVEL 31
#define VX_LOCK_STRIPES 4096
#define VX_NO_ENTRY UINT64_MAX

enum { VX_NODE_FREE = 0, VX_NODE_LIVE = 1, VX_NODE_DELETED = 2 };

struct vx_index {
    vx_index_config cfg;
    uint32_t dim, m, m0;
    double level_mult;
    bool int8;
    bool ip; /* IP or COSINE: distance is -dot */

    /* record layout */
    size_t code_size, off_code, off_aux, off_state, off_level, off_count, off_links, off_label,
        off_upper, rec_size;

    uint32_t chunk_shift, chunk_mask;
    uint32_t max_slots;
    uint8_t **chunks;  /* VX_MAX_CHUNKS, entries published with release stores */
    float **vchunks;   /* INT8 only: float vectors, same chunking */
    uint32_t nchunks;  /* under alloc_mu */

    /* slot allocation */
    pthread_mutex_t alloc_mu;
    _Atomic uint32_t nslots; /* slots handed out so far (high-water mark) */
    uint32_t *free_slots;
    size_t nfree, free_cap;
    uint64_t rng; /* level generator state, under alloc_mu */

    /* labels */
    pthread_mutex_t map_mu;
    vx_labelmap map;
    _Atomic uint64_t live, deleted;
    _Atomic size_t upper_bytes;

    /* entry point: (uint64)max_level << 32 | node, or VX_NO_ENTRY */
    _Atomic uint64_t entry;
    pthread_mutex_t entry_mu;

    pthread_mutex_t link_locks[VX_LOCK_STRIPES];
    pthread_rwlock_t struct_lock; /* read: add/delete; write: vacuum/retrain/save/validate */
    pthread_rwlock_t code_lock;   /* read: search; write: retrain, vacuum grace period */

    /* INT8 */
    _Atomic bool trained;
    vx_quantizer qz;

    vx_scratch_pool pool;
};

/* ---- record access ----------------------------------------------------- */

static inline uint8_t *vx_rec(const vx_index *idx, uint32_t id)
{
    uint8_t *chunk = __atomic_load_n(&idx->chunks[id >> idx->chunk_shift], __ATOMIC_ACQUIRE);
    return chunk + (size_t)(id & idx->chunk_mask) * idx->rec_size;
}

static inline uint8_t *vx_rec_code(const vx_index *idx, const uint8_t *rec)
{
    return (uint8_t *)rec + idx->off_code;
}

static inline float *vx_vec(const vx_index *idx, uint32_t id)
{
    if (!idx->int8) return (float *)vx_rec_code(idx, vx_rec(idx, id));
    float *chunk = __atomic_load_n(&idx->vchunks[id >> idx->chunk_shift], __ATOMIC_ACQUIRE);
    return chunk + (size_t)(id & idx->chunk_mask) * idx->dim;
}

static inline float vx_rec_aux(const vx_index *idx, const uint8_t *rec)
{
    float a;
    __builtin_memcpy(&a, rec + idx->off_aux, sizeof a);
    return a;
}

static inline uint8_t vx_rec_state(const vx_index *idx, const uint8_t *rec)
{
    return __atomic_load_n(rec + idx->off_state, __ATOMIC_ACQUIRE);
}

static inline void vx_rec_set_state(const vx_index *idx, uint8_t *rec, uint8_t st)
{
    __atomic_store_n(rec + idx->off_state, st, __ATOMIC_RELEASE);
}

static inline uint8_t vx_rec_level(const vx_index *idx, const uint8_t *rec)
{
    return __atomic_load_n(rec + idx->off_level, __ATOMIC_ACQUIRE);
}

static inline uint64_t vx_rec_label(const vx_index *idx, const uint8_t *rec)
{
    return __atomic_load_n((const uint64_t *)(rec + idx->off_label), __ATOMIC_ACQUIRE);
}

/* The list header of `id` on `level`: word 0 is the count, then the links. */
extern uint32_t vx_empty_links[1];

/* The list header of `id` on `level`: word 0 is the count, then the links.
 * A node absent from `level` (or a slot being recycled) yields an empty
 * list, never a wild pointer. */
static inline uint32_t *vx_links(const vx_index *idx, uint32_t id, int level)
{
    uint8_t *rec = vx_rec(idx, id);
    if (level == 0) return (uint32_t *)(rec + idx->off_count);
    uint32_t *up = __atomic_load_n((uint32_t **)(rec + idx->off_upper), __ATOMIC_ACQUIRE);
    if (up == NULL || level > __atomic_load_n(rec + idx->off_level, __ATOMIC_ACQUIRE))
        return vx_empty_links;
    return up + (size_t)(level - 1) * (1 + idx->m);
}

static inline uint32_t vx_links_count(const uint32_t *l, uint32_t maxn)
{
    uint32_t n = __atomic_load_n(&l[0], __ATOMIC_ACQUIRE);
    return n < maxn ? n : maxn;
}

static inline uint32_t vx_link_get(const uint32_t *l, uint32_t i)
{
    return __atomic_load_n(&l[1 + i], __ATOMIC_ACQUIRE);
}

static inline uint32_t vx_maxlinks(const vx_index *idx, int level)
{
    return level == 0 ? idx->m0 : idx->m;
}

static inline pthread_mutex_t *vx_link_lock(vx_index *idx, uint32_t id)
{
    return &idx->link_locks[id & (VX_LOCK_STRIPES - 1)];
}

/* Replace the list of `id` on `level` (caller holds the node's stripe). */
void vx_links_store(vx_index *idx, uint32_t id, int level, const uint32_t *ids, uint32_t n);

/* ---- distances ---------------------------------------------------------- */

/* A prepared query: float vector (NONE, or INT8 rescoring) and, for INT8,
 * the shifted int8 code and the formula constants of quant.h. */
typedef struct vx_qdesc {
    const float *vec;
    const int8_t *qshift;
    float qconst, qmul;
} vx_qdesc;

/* Distance from the query to the traversal payload of a record. */
static inline float vx_qdist(const vx_index *idx, const vx_qdesc *q, const uint8_t *rec)
{
    if (idx->int8) {
        int32_t dp = vx_kern.dot_u8s8(vx_rec_code(idx, rec), q->qshift, idx->dim);
        return vx_rec_aux(idx, rec) + q->qconst + q->qmul * (float)dp;
    }
    const float *v = (const float *)vx_rec_code(idx, rec);
    if (idx->ip) return -vx_kern.dot_f32(q->vec, v, idx->dim);
    return vx_kern.l2sq_f32(q->vec, v, idx->dim);
}

/* Exact float distance between a query vector and a stored float vector. */
static inline float vx_fdist(const vx_index *idx, const float *a, const float *b)
{
    if (idx->ip) return -vx_kern.dot_f32(a, b, idx->dim);
    return vx_kern.l2sq_f32(a, b, idx->dim);
}

/* Prepare a traversal query from the stored payload of node `id`
 * (qshift_buf: dim int8 for INT8). */
void vx_qdesc_from_node(const vx_index *idx, uint32_t id, int8_t *qshift_buf, vx_qdesc *q);

static inline void vx_prefetch_rec(const vx_index *idx, const uint8_t *rec)
{
    size_t n = idx->off_count;
    for (size_t o = 0; o < n && o < 256; o += 64) __builtin_prefetch(rec + o, 0, 3);
}

/* Scratch query buffers: one float vector and three int8 codes. */
static inline size_t vx_align64(size_t x) { return (x + 63) & ~(size_t)63; }
static inline float *vx_scratch_vec(const vx_index *idx, vx_scratch *s)
{
    return (float *)s->qbuf;
}
static inline int8_t *vx_scratch_q8(const vx_index *idx, vx_scratch *s, int which)
{
    return (int8_t *)s->qbuf + vx_align64((size_t)idx->dim * 4) +
           (size_t)which * vx_align64(idx->dim);
}
#define VX_SCRATCH_QBUF_BYTES(dim) (vx_align64((size_t)(dim) * 4) + 3 * vx_align64(dim))

/* ---- the algorithms ------------------------------------------------------ */

/* Greedy descent from the entry point down to level `stop_level` + 1 (paper
 * Alg. 5 lines 5-7 / Alg. 1 lines 5-7): returns the closest node found. */
uint32_t vx_hnsw_descend(vx_index *idx, const vx_qdesc *q, uint64_t entry, int stop_level,
                         float *out_dist);

/* SEARCH-LAYER (paper Alg. 2) on `level` from `ep`, beam width ef.  Results
 * (closest ef admissible nodes) are left in s->res as a max-heap.  A node is
 * admissible when LIVE (and, if filter != NULL, matched).  Deleted and
 * filtered-out nodes still route. */
int vx_hnsw_search_layer(vx_index *idx, vx_scratch *s, const vx_qdesc *q, uint32_t ep,
                         float ep_dist, uint32_t ef, int level, const vx_filter *filter);

/* SELECT-NEIGHBORS-HEURISTIC (paper Alg. 4, without extendCandidates and
 * keepPrunedConnections, as in the reference implementation): keeps
 * candidates that are closer to the base than to every kept neighbour.
 * cands (n, sorted ascending by distance to the base) is compacted in place;
 * returns how many were kept (<= maxn). */
uint32_t vx_hnsw_select_heuristic(vx_index *idx, vx_cand *cands, uint32_t n, uint32_t maxn,
                                  int8_t *qshift_buf);

/* Add the edge nb -> id (distance d) on `level`, shrinking nb's list with
 * the heuristic when it is full.  Takes nb's stripe; uses q8 buffers 1, 2. */
void vx_hnsw_connect_back(vx_index *idx, vx_scratch *s, uint32_t nb, uint32_t id, float d,
                          int level);

/* Link an allocated, initialised node into the graph (paper Alg. 1). */
int vx_hnsw_link(vx_index *idx, uint32_t id, vx_scratch *s);

/* Allocate a slot (free list first); returns VX_NO_NODE when full. */
uint32_t vx_slot_alloc(vx_index *idx, int level);
int vx_random_level(vx_index *idx);
int vx_slot_set_level(vx_index *idx, uint32_t id, int level);
void vx_slot_release(vx_index *idx, uint32_t id);

/* Write the payload (float or code + aux) of slot id from vector v; with
 * count, quantizer clipping counts toward drift (inserts, not loads). */
void vx_node_write_payload(vx_index *idx, uint32_t id, const float *v, bool count);

/* Scan-based k-NN over all admissible nodes with float distances. */
int vx_index_search_exact(vx_index *idx, const float *q, uint32_t k, const vx_filter *filter,
                          vx_hit *out, uint32_t *n_out);

/* Allocate an empty index from a validated config (shared by new and load). */
int vx_index_alloc(const vx_index_config *cfg, vx_index **out, char *errbuf);
int vx_index_check_config(const vx_index_config *cfg, char *errbuf);

#endif
