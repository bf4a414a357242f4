/*
 * hnsw.c - index lifecycle, node slots, add/delete, quantizer training.
 *
 * The graph algorithms are in hnsw_insert.c (paper Alg. 1, 4), hnsw_search.c
 * (Alg. 2, 5, exact scan, filters), hnsw_vacuum.c (delete repair),
 * hnsw_io.c (persistence) and hnsw_validate.c (invariants).
 */
#include "index/hnsw_internal.h"

#include "base/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

uint32_t vx_empty_links[1] = {0};

void vx_index_config_default(vx_index_config *cfg, uint32_t dim, vx_metric metric)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->dim = dim;
    cfg->metric = metric;
    cfg->quant = VX_QUANT_NONE;
    cfg->m = 16;
    cfg->ef_construction = 200;
    cfg->seed = 42;
    cfg->train_size = 10000;
    cfg->quantile = 0.0f;
    cfg->rescore = 0;
}

int vx_index_check_config(const vx_index_config *cfg, char *errbuf)
{
    if (cfg->dim < 1 || cfg->dim > VX_MAX_DIM)
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL, "dimension %u outside 1..%u", cfg->dim,
                       VX_MAX_DIM);
    if (cfg->metric > VX_METRIC_COSINE)
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL, "unknown metric %d", (int)cfg->metric);
    if (cfg->quant > VX_QUANT_INT8)
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL, "unknown quantization %d",
                       (int)cfg->quant);
    if (cfg->m < 2 || cfg->m > 128)
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL, "m=%u outside 2..128", cfg->m);
    if (cfg->ef_construction < cfg->m || cfg->ef_construction > 65536)
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL,
                       "ef_construction=%u must be within m..65536", cfg->ef_construction);
    if (cfg->quant == VX_QUANT_INT8 && cfg->train_size < 1)
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL, "train_size must be >= 1");
    if (!(cfg->quantile >= 0.0f && cfg->quantile < 0.5f))
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL, "quantile %g outside [0, 0.5)",
                       (double)cfg->quantile);
    return 0;
}

int vx_index_alloc(const vx_index_config *cfg, vx_index **out, char *errbuf)
{
    int rc = vx_index_check_config(cfg, errbuf);
    if (rc != 0) return rc;
    vx_kernels_init();
    vx_index *idx = calloc(1, sizeof(*idx));
    if (idx == NULL) return vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "index allocation");
    idx->cfg = *cfg;
    idx->dim = cfg->dim;
    idx->m = cfg->m;
    idx->m0 = 2 * cfg->m;
    idx->level_mult = 1.0 / log((double)cfg->m);
    idx->int8 = cfg->quant == VX_QUANT_INT8;
    idx->ip = cfg->metric != VX_METRIC_L2;
    idx->code_size = idx->int8 ? cfg->dim : (size_t)cfg->dim * sizeof(float);
    idx->off_state = 0;
    idx->off_level = 1;
    idx->off_aux = 4;
    idx->off_code = 8;
    idx->off_count = align_up(idx->off_code + idx->code_size, 4);
    idx->off_links = idx->off_count + 4;
    idx->off_label = align_up(idx->off_links + (size_t)idx->m0 * 4, 8);
    idx->off_upper = idx->off_label + 8;
    idx->rec_size = align_up(idx->off_upper + sizeof(void *), 16);
    size_t per_node = idx->rec_size + (idx->int8 ? (size_t)cfg->dim * sizeof(float) : 0);
    idx->chunk_shift = VX_CHUNK_SHIFT_MAX;
    while (idx->chunk_shift > VX_CHUNK_SHIFT_MIN &&
           ((size_t)1 << idx->chunk_shift) * per_node > VX_CHUNK_BYTES)
        idx->chunk_shift--;
    idx->chunk_mask = (1u << idx->chunk_shift) - 1;
    uint64_t max_slots = (uint64_t)VX_MAX_CHUNKS << idx->chunk_shift;
    idx->max_slots = max_slots > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)max_slots;
    idx->rng = cfg->seed ^ 0x9e3779b97f4a7c15ull;

    idx->chunks = calloc(VX_MAX_CHUNKS, sizeof(uint8_t *));
    if (idx->int8) idx->vchunks = calloc(VX_MAX_CHUNKS, sizeof(float *));
    if (idx->chunks == NULL || (idx->int8 && idx->vchunks == NULL) ||
        vx_labelmap_init(&idx->map, 1024) != 0) {
        free(idx->chunks);
        free(idx->vchunks);
        free(idx);
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "index tables");
    }
    pthread_mutex_init(&idx->alloc_mu, NULL);
    pthread_mutex_init(&idx->map_mu, NULL);
    pthread_mutex_init(&idx->entry_mu, NULL);
    for (int i = 0; i < VX_LOCK_STRIPES; i++) pthread_mutex_init(&idx->link_locks[i], NULL);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&idx->struct_lock, &ra);
    pthread_rwlock_init(&idx->code_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    atomic_store(&idx->entry, VX_NO_ENTRY);
    atomic_store(&idx->trained, !idx->int8);
    vx_scratch_pool_init(&idx->pool, VX_SCRATCH_QBUF_BYTES(cfg->dim));
    *out = idx;
    return 0;
}

int vx_index_new(const vx_index_config *cfg, vx_index **out, char *errbuf)
{
    return vx_index_alloc(cfg, out, errbuf);
}

void vx_index_free(vx_index *idx)
{
    if (idx == NULL) return;
    uint32_t n = atomic_load(&idx->nslots);
    for (uint32_t id = 0; id < n; id++) {
        uint8_t *rec = vx_rec(idx, id);
        free(*(uint32_t **)(rec + idx->off_upper));
    }
    for (uint32_t c = 0; c < idx->nchunks; c++) {
        free(idx->chunks[c]);
        if (idx->vchunks) free(idx->vchunks[c]);
    }
    free(idx->chunks);
    free(idx->vchunks);
    free(idx->free_slots);
    vx_labelmap_close(&idx->map);
    vx_quant_close(&idx->qz);
    vx_scratch_pool_close(&idx->pool);
    pthread_mutex_destroy(&idx->alloc_mu);
    pthread_mutex_destroy(&idx->map_mu);
    pthread_mutex_destroy(&idx->entry_mu);
    for (int i = 0; i < VX_LOCK_STRIPES; i++) pthread_mutex_destroy(&idx->link_locks[i]);
    pthread_rwlock_destroy(&idx->struct_lock);
    pthread_rwlock_destroy(&idx->code_lock);
    free(idx);
}

const vx_index_config *vx_index_get_config(vx_index *idx) { return &idx->cfg; }

/* ---- slots ----------------------------------------------------------------- */

int vx_random_level(vx_index *idx)
{
    pthread_mutex_lock(&idx->alloc_mu);
    /* splitmix64 step: uniform in (0, 1] */
    uint64_t z = (idx->rng += 0x9e3779b97f4a7c15ull);
    pthread_mutex_unlock(&idx->alloc_mu);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 1.0) * 0x1.0p-53;
    int level = (int)(-log(u) * idx->level_mult);
    return level > VX_MAX_LEVEL ? VX_MAX_LEVEL : level;
}

static int slot_chunk_ensure(vx_index *idx, uint32_t c)
{
    if (idx->chunks[c] != NULL) return 0;
    const size_t nodes = (size_t)1 << idx->chunk_shift;
    uint8_t *chunk = calloc(nodes, idx->rec_size);
    if (chunk == NULL) return VX_ENOMEM;
    if (idx->int8) {
        float *v = calloc(nodes * idx->dim, sizeof(float));
        if (v == NULL) {
            free(chunk);
            return VX_ENOMEM;
        }
        __atomic_store_n(&idx->vchunks[c], v, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&idx->chunks[c], chunk, __ATOMIC_RELEASE);
    idx->nchunks = c + 1;
    return 0;
}

int vx_slot_set_level(vx_index *idx, uint32_t id, int level)
{
    uint8_t *rec = vx_rec(idx, id);
    uint32_t *up = NULL;
    if (level > 0) {
        size_t bytes = (size_t)level * (1 + idx->m) * sizeof(uint32_t);
        up = calloc(1, bytes);
        if (up == NULL) return VX_ENOMEM;
        atomic_fetch_add(&idx->upper_bytes, bytes);
    }
    __atomic_store_n(rec + idx->off_level, (uint8_t)level, __ATOMIC_RELEASE);
    __atomic_store_n((uint32_t **)(rec + idx->off_upper), up, __ATOMIC_RELEASE);
    return 0;
}

uint32_t vx_slot_alloc(vx_index *idx, int level)
{
    pthread_mutex_lock(&idx->alloc_mu);
    uint32_t id;
    if (idx->nfree > 0) {
        id = idx->free_slots[--idx->nfree];
    } else {
        id = atomic_load(&idx->nslots);
        if (id >= idx->max_slots || slot_chunk_ensure(idx, id >> idx->chunk_shift) != 0) {
            pthread_mutex_unlock(&idx->alloc_mu);
            return VX_NO_NODE;
        }
        atomic_store_explicit(&idx->nslots, id + 1, memory_order_release);
    }
    pthread_mutex_unlock(&idx->alloc_mu);
    uint8_t *rec = vx_rec(idx, id);
    __atomic_store_n((uint32_t *)(rec + idx->off_count), 0, __ATOMIC_RELEASE);
    if (vx_slot_set_level(idx, id, level) != 0) {
        vx_slot_release(idx, id);
        return VX_NO_NODE;
    }
    return id;
}

void vx_slot_release(vx_index *idx, uint32_t id)
{
    uint8_t *rec = vx_rec(idx, id);
    uint32_t **upp = (uint32_t **)(rec + idx->off_upper);
    uint32_t *up = *upp;
    if (up != NULL) {
        atomic_fetch_sub(&idx->upper_bytes,
                         (size_t)vx_rec_level(idx, rec) * (1 + idx->m) * sizeof(uint32_t));
        __atomic_store_n(upp, NULL, __ATOMIC_RELEASE);
        free(up);
    }
    __atomic_store_n((uint32_t *)(rec + idx->off_count), 0, __ATOMIC_RELEASE);
    __atomic_store_n(rec + idx->off_level, 0, __ATOMIC_RELEASE);
    vx_rec_set_state(idx, rec, VX_NODE_FREE);
    pthread_mutex_lock(&idx->alloc_mu);
    if (idx->nfree == idx->free_cap) {
        size_t cap = idx->free_cap ? idx->free_cap * 2 : 256;
        uint32_t *f = realloc(idx->free_slots, cap * sizeof(uint32_t));
        if (f == NULL) { /* the slot leaks until reload; never unsafe */
            pthread_mutex_unlock(&idx->alloc_mu);
            return;
        }
        idx->free_slots = f;
        idx->free_cap = cap;
    }
    idx->free_slots[idx->nfree++] = id;
    pthread_mutex_unlock(&idx->alloc_mu);
}

void vx_links_store(vx_index *idx, uint32_t id, int level, const uint32_t *ids, uint32_t n)
{
    uint32_t *l = vx_links(idx, id, level);
    for (uint32_t i = 0; i < n; i++) __atomic_store_n(&l[1 + i], ids[i], __ATOMIC_RELEASE);
    __atomic_store_n(&l[0], n, __ATOMIC_RELEASE);
}

void vx_node_write_payload(vx_index *idx, uint32_t id, const float *v, bool count)
{
    uint8_t *rec = vx_rec(idx, id);
    if (!idx->int8) {
        memcpy(vx_rec_code(idx, rec), v, (size_t)idx->dim * sizeof(float));
        return;
    }
    memcpy(vx_vec(idx, id), v, (size_t)idx->dim * sizeof(float));
    if (atomic_load(&idx->trained)) {
        float aux = vx_quant_encode(&idx->qz, v, vx_rec_code(idx, rec), count);
        memcpy(rec + idx->off_aux, &aux, sizeof aux);
    }
}

void vx_qdesc_from_node(const vx_index *idx, uint32_t id, int8_t *qshift_buf, vx_qdesc *q)
{
    const uint8_t *rec = vx_rec(idx, id);
    q->vec = vx_vec(idx, id);
    q->qshift = NULL;
    q->qconst = 0.0f;
    q->qmul = 0.0f;
    if (idx->int8) {
        vx_quant_query_from_code(&idx->qz, vx_rec_code(idx, rec), qshift_buf, &q->qconst,
                                 &q->qmul);
        q->qshift = qshift_buf;
    }
}

/* ---- add / delete ------------------------------------------------------------ */

/* Validate and (COSINE) normalize `vec` into dst. */
static int prepare_vector(const vx_index *idx, const float *vec, float *dst, char *errbuf)
{
    double norm = 0.0;
    for (uint32_t d = 0; d < idx->dim; d++) {
        if (!isfinite(vec[d]))
            return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL,
                           "vector component %u is not a finite number", d);
        norm += (double)vec[d] * vec[d];
    }
    if (idx->cfg.metric == VX_METRIC_COSINE) {
        if (norm == 0.0)
            return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL,
                           "a zero vector has no direction (cosine metric)");
        float inv = (float)(1.0 / sqrt(norm));
        for (uint32_t d = 0; d < idx->dim; d++) dst[d] = vec[d] * inv;
    } else if (dst != vec) {
        memcpy(dst, vec, (size_t)idx->dim * sizeof(float));
    }
    return 0;
}

/* Put label -> id in the map; an existing node of the label becomes a
 * tombstone. */
static int map_publish(vx_index *idx, uint64_t label, uint32_t id)
{
    uint32_t old;
    pthread_mutex_lock(&idx->map_mu);
    int rc = vx_labelmap_put(&idx->map, label, id, &old);
    if (rc == 0) {
        if (old != VX_NO_NODE) {
            vx_rec_set_state(idx, vx_rec(idx, old), VX_NODE_DELETED);
            atomic_fetch_add(&idx->deleted, 1);
        } else {
            atomic_fetch_add(&idx->live, 1);
        }
    }
    pthread_mutex_unlock(&idx->map_mu);
    return rc;
}

/* Encode every stored node and link it (INT8, right after training).
 * Caller holds struct_lock in write mode. */
static int build_pending(vx_index *idx)
{
    uint32_t n = atomic_load(&idx->nslots);
    vx_scratch *s = vx_scratch_acquire(&idx->pool, n);
    if (s == NULL) return VX_ENOMEM;
    int rc = 0;
    for (uint32_t id = 0; id < n && rc == 0; id++) {
        uint8_t *rec = vx_rec(idx, id);
        uint8_t st = vx_rec_state(idx, rec);
        if (st == VX_NODE_FREE) continue;
        float aux = vx_quant_encode(&idx->qz, vx_vec(idx, id), vx_rec_code(idx, rec), false);
        memcpy(rec + idx->off_aux, &aux, sizeof aux);
        if (st == VX_NODE_LIVE) rc = vx_hnsw_link(idx, id, s);
    }
    vx_scratch_release(&idx->pool, s);
    return rc;
}

/* Collect up to `max` LIVE float vectors spread across the slots. */
static float *sample_vectors(vx_index *idx, size_t max, size_t *n_out)
{
    uint32_t n = atomic_load(&idx->nslots);
    uint64_t live = atomic_load(&idx->live);
    if (live == 0 || max == 0) {
        *n_out = 0;
        return NULL;
    }
    size_t want = live < max ? live : max;
    size_t stride = live / want;
    if (stride == 0) stride = 1;
    float *buf = malloc(want * idx->dim * sizeof(float));
    if (buf == NULL) return NULL;
    size_t got = 0, seen = 0;
    for (uint32_t id = 0; id < n && got < want; id++) {
        if (vx_rec_state(idx, vx_rec(idx, id)) != VX_NODE_LIVE) continue;
        if (seen++ % stride == 0) {
            memcpy(buf + got * idx->dim, vx_vec(idx, id), idx->dim * sizeof(float));
            got++;
        }
    }
    *n_out = got;
    return buf;
}

static int train_locked(vx_index *idx, const float *sample, size_t n, char *errbuf)
{
    int rc = vx_quant_train(&idx->qz, idx->dim, idx->ip, idx->cfg.quantile, sample, n);
    if (rc != 0) return vx_errf(errbuf, VX_ERRMSG_LEN, rc, "quantizer training failed");
    atomic_store(&idx->trained, true);
    rc = build_pending(idx);
    if (rc != 0) return vx_errf(errbuf, VX_ERRMSG_LEN, rc, "building the graph after training");
    return 0;
}

int vx_index_train(vx_index *idx, const float *sample, size_t n, char *errbuf)
{
    if (!idx->int8)
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_ESTATE, "index is not quantized");
    if (n == 0) return vx_errf(errbuf, VX_ERRMSG_LEN, VX_EINVAL, "empty training sample");
    float *norm = NULL;
    if (idx->cfg.metric == VX_METRIC_COSINE) {
        norm = malloc(n * idx->dim * sizeof(float));
        if (norm == NULL) return vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "training sample");
        for (size_t i = 0; i < n; i++) {
            int rc = prepare_vector(idx, sample + i * idx->dim, norm + i * idx->dim, errbuf);
            if (rc != 0) {
                free(norm);
                return rc;
            }
        }
        sample = norm;
    }
    pthread_rwlock_wrlock(&idx->struct_lock);
    int rc;
    if (atomic_load(&idx->trained))
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_ESTATE, "quantizer already trained");
    else
        rc = train_locked(idx, sample, n, errbuf);
    pthread_rwlock_unlock(&idx->struct_lock);
    free(norm);
    return rc;
}

int vx_index_add(vx_index *idx, uint64_t label, const float *vec, char *errbuf)
{
    vx_scratch *s = vx_scratch_acquire(&idx->pool, atomic_load(&idx->nslots));
    if (s == NULL) return vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "search scratch");
    float *v = vx_scratch_vec(idx, s);
    int rc = prepare_vector(idx, vec, v, errbuf);
    if (rc != 0) goto out_scratch;

    bool trained = atomic_load(&idx->trained);
    if (trained)
        pthread_rwlock_rdlock(&idx->struct_lock);
    else
        pthread_rwlock_wrlock(&idx->struct_lock);
    if (!trained && atomic_load(&idx->trained)) { /* trained meanwhile: fine under wrlock */
        trained = true;
    }
    int level = vx_random_level(idx);
    uint32_t id = vx_slot_alloc(idx, level);
    if (id == VX_NO_NODE) {
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "no memory for a new node");
        goto out_unlock;
    }
    uint8_t *rec = vx_rec(idx, id);
    vx_node_write_payload(idx, id, v, true);
    __atomic_store_n((uint64_t *)(rec + idx->off_label), label, __ATOMIC_RELEASE);
    vx_rec_set_state(idx, rec, VX_NODE_LIVE);
    rc = map_publish(idx, label, id);
    if (rc != 0) {
        vx_slot_release(idx, id);
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, rc, "label map");
        goto out_unlock;
    }
    if (trained) {
        rc = vx_hnsw_link(idx, id, s);
    } else if (atomic_load(&idx->live) >= idx->cfg.train_size) {
        size_t n;
        float *sample = sample_vectors(idx, idx->cfg.train_size, &n);
        rc = sample ? train_locked(idx, sample, n, errbuf)
                    : vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "training sample");
        free(sample);
    }
out_unlock:
    pthread_rwlock_unlock(&idx->struct_lock);
out_scratch:
    vx_scratch_release(&idx->pool, s);
    return rc;
}

int vx_index_delete(vx_index *idx, uint64_t label)
{
    pthread_rwlock_rdlock(&idx->struct_lock);
    pthread_mutex_lock(&idx->map_mu);
    uint32_t id = vx_labelmap_del(&idx->map, label);
    if (id != VX_NO_NODE) {
        vx_rec_set_state(idx, vx_rec(idx, id), VX_NODE_DELETED);
        atomic_fetch_sub(&idx->live, 1);
        atomic_fetch_add(&idx->deleted, 1);
    }
    pthread_mutex_unlock(&idx->map_mu);
    pthread_rwlock_unlock(&idx->struct_lock);
    return id == VX_NO_NODE ? VX_ENOTFOUND : 0;
}

bool vx_index_contains(vx_index *idx, uint64_t label)
{
    pthread_mutex_lock(&idx->map_mu);
    uint32_t id = vx_labelmap_get(&idx->map, label);
    pthread_mutex_unlock(&idx->map_mu);
    return id != VX_NO_NODE;
}

int vx_index_get_vector(vx_index *idx, uint64_t label, float *out)
{
    pthread_rwlock_rdlock(&idx->struct_lock);
    pthread_mutex_lock(&idx->map_mu);
    uint32_t id = vx_labelmap_get(&idx->map, label);
    if (id != VX_NO_NODE) memcpy(out, vx_vec(idx, id), idx->dim * sizeof(float));
    pthread_mutex_unlock(&idx->map_mu);
    pthread_rwlock_unlock(&idx->struct_lock);
    return id == VX_NO_NODE ? VX_ENOTFOUND : 0;
}

int vx_index_for_each_label(vx_index *idx, int (*cb)(void *ctx, uint64_t label), void *ctx)
{
    pthread_rwlock_rdlock(&idx->struct_lock);
    const uint32_t n = atomic_load(&idx->nslots);
    int rc = 0;
    for (uint32_t id = 0; id < n && rc == 0; id++) {
        const uint8_t *rec = vx_rec(idx, id);
        if (vx_rec_state(idx, rec) == VX_NODE_LIVE) rc = cb(ctx, vx_rec_label(idx, rec));
    }
    pthread_rwlock_unlock(&idx->struct_lock);
    return rc;
}

double vx_index_deleted_ratio(vx_index *idx)
{
    uint64_t del = atomic_load(&idx->deleted);
    uint64_t all = del + atomic_load(&idx->live);
    return all ? (double)del / (double)all : 0.0;
}

bool vx_index_needs_retrain(vx_index *idx)
{
    return idx->int8 && atomic_load(&idx->trained) && vx_quant_drifted(&idx->qz);
}

int vx_index_retrain(vx_index *idx, char *errbuf)
{
    if (!idx->int8)
        return vx_errf(errbuf, VX_ERRMSG_LEN, VX_ESTATE, "index is not quantized");
    pthread_rwlock_wrlock(&idx->struct_lock);
    int rc = 0;
    if (!atomic_load(&idx->trained)) {
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_ESTATE, "quantizer not trained yet");
        goto out;
    }
    size_t n;
    float *sample = sample_vectors(idx, idx->cfg.train_size, &n);
    if (sample == NULL) {
        rc = n == 0 ? 0 : vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "training sample");
        goto out;
    }
    /* Searches read codes without locks: exclude them while codes change. */
    pthread_rwlock_wrlock(&idx->code_lock);
    rc = vx_quant_train(&idx->qz, idx->dim, idx->ip, idx->cfg.quantile, sample, n);
    if (rc == 0) {
        uint32_t slots = atomic_load(&idx->nslots);
        for (uint32_t id = 0; id < slots; id++) {
            uint8_t *rec = vx_rec(idx, id);
            if (vx_rec_state(idx, rec) == VX_NODE_FREE) continue;
            float aux = vx_quant_encode(&idx->qz, vx_vec(idx, id), vx_rec_code(idx, rec), false);
            memcpy(rec + idx->off_aux, &aux, sizeof aux);
        }
        atomic_store(&idx->qz.encoded, 0);
        atomic_store(&idx->qz.clipped, 0);
    } else {
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, rc, "quantizer retraining failed");
    }
    pthread_rwlock_unlock(&idx->code_lock);
    free(sample);
out:
    pthread_rwlock_unlock(&idx->struct_lock);
    return rc;
}

void vx_index_get_stats(vx_index *idx, vx_index_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->live = atomic_load(&idx->live);
    st->deleted = atomic_load(&idx->deleted);
    st->slots = atomic_load(&idx->nslots);
    uint64_t e = atomic_load(&idx->entry);
    st->max_level = e == VX_NO_ENTRY ? 0 : (uint32_t)(e >> 32);
    st->trained = atomic_load(&idx->trained);
    size_t payload = idx->code_size + 4;
    st->code_bytes = st->slots * payload;
    st->graph_bytes = st->slots * (idx->rec_size - payload) + atomic_load(&idx->upper_bytes);
    pthread_mutex_lock(&idx->map_mu);
    st->graph_bytes += vx_labelmap_bytes(&idx->map);
    pthread_mutex_unlock(&idx->map_mu);
    if (idx->int8) st->vector_bytes = st->slots * idx->dim * sizeof(float);
}
