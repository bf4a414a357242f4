/*
 * hnsw_search.c - K-NN-SEARCH (Malkov & Yashunin, Alg. 5), SEARCH-LAYER
 * (Alg. 2), the exact scan, filters and int8 rescoring.
 *
 * Alg. 5: descend greedily (ef = 1) from the entry point to level 1, then
 * SEARCH-LAYER on level 0 with ef >= k, return the k closest.
 *
 * Alg. 2 keeps a min-heap C of candidates to expand and a max-heap W of the
 * ef best results; it stops when the closest unexpanded candidate is
 * farther than the worst result.  Deleted and filtered-out nodes are
 * expanded (they route) but never enter W; while W is not full the search
 * keeps expanding, which is what makes restrictive filters still find
 * matches (hnswlib does the same).
 *
 * Filters: with a share p of matching points, walking the graph expands
 * about ef/p nodes to collect ef matches, each costing about Mmax0/2 new
 * distances, while a scan costs one predicate per point (counted as a
 * quarter of a distance) and one distance per match.  The cheaper plan wins
 * (walk_cost/scan_cost below); a caller may instead fix a threshold on p
 * with exact_below_selectivity.  p is the caller's estimate or measured on a
 * sample of 256 slots.
 *
 * INT8: the walk ranks by code distance; the best `rescore` candidates are
 * then re-ranked with the float32 vectors (prefetched together first), so
 * the returned distances are exact.
 */
#include "index/hnsw_internal.h"

#include "base/err.h"

#include <math.h>
#include <string.h>

#define VX_SELECTIVITY_SAMPLE 256
#define VX_PREDICATE_COST 0.25 /* one predicate call, in distance computations */

/* True when an exact scan is expected to be cheaper than a filtered walk. */
static bool scan_is_cheaper(const vx_index *idx, double p, uint32_t ef, uint64_t live)
{
    if (p <= 0.0) return true;
    double scan = (double)live * (VX_PREDICATE_COST + p);
    double walk = (double)ef / p * (idx->m0 / 2.0);
    return scan < walk;
}

uint32_t vx_hnsw_descend(vx_index *idx, const vx_qdesc *q, uint64_t entry, int stop_level,
                         float *out_dist)
{
    uint32_t cur = (uint32_t)entry;
    int top = (int)(entry >> 32);
    float curd = vx_qdist(idx, q, vx_rec(idx, cur));
    const uint32_t nslots = atomic_load_explicit(&idx->nslots, memory_order_acquire);
    for (int l = top; l > stop_level; l--) {
        bool changed = true;
        while (changed) {
            changed = false;
            const uint32_t *links = vx_links(idx, cur, l);
            uint32_t n = vx_links_count(links, idx->m);
            for (uint32_t i = 0; i < n; i++) {
                uint32_t c = vx_link_get(links, i);
                if (c >= nslots) continue;
                float d = vx_qdist(idx, q, vx_rec(idx, c));
                if (d < curd) {
                    curd = d;
                    cur = c;
                    changed = true;
                }
            }
        }
    }
    *out_dist = curd;
    return cur;
}

static inline bool admissible(const vx_index *idx, const uint8_t *rec, const vx_filter *filter)
{
    if (vx_rec_state(idx, rec) != VX_NODE_LIVE) return false;
    return filter == NULL || filter->match(filter->ctx, vx_rec_label(idx, rec));
}

static inline int heap_push_grow(vx_heap *h)
{
    return h->len < h->cap ? 0 : vx_heap_reserve(h, h->cap ? h->cap * 2 : 64);
}

int vx_hnsw_search_layer(vx_index *idx, vx_scratch *s, const vx_qdesc *q, uint32_t ep,
                         float ep_dist, uint32_t ef, int level, const vx_filter *filter)
{
    vx_heap *cand = &s->cand, *res = &s->res;
    if (vx_heap_reserve(res, ef + 1) != 0 || vx_heap_reserve(cand, ef + 1) != 0)
        return VX_ENOMEM;
    vx_scratch_new_epoch(s);
    cand->len = 0;
    res->len = 0;
    uint16_t *tags = s->tags;
    const uint16_t tag = s->tag;
    const size_t ntags = s->ntags;
    const uint32_t maxn = vx_maxlinks(idx, level);
    /* Without deletes or a filter, W fills with the first ef nodes seen and
     * the plain stopping rule applies. */
    const bool sparse = filter != NULL || atomic_load(&idx->deleted) > 0;

    if (ep < ntags) tags[ep] = tag;
    float lb = INFINITY;
    if (admissible(idx, vx_rec(idx, ep), filter)) {
        vx_heap_push_max(res, ep_dist, ep);
        lb = ep_dist;
    }
    vx_heap_push_min(cand, ep_dist, ep);

    while (cand->len > 0) {
        vx_cand cur = cand->a[0];
        if (cur.d > lb && (res->len >= ef || !sparse)) break;
        vx_heap_pop_min(cand);
        const uint32_t *links = vx_links(idx, cur.id, level);
        uint32_t n = vx_links_count(links, maxn);
        if (n == 0) continue;
        uint32_t next = vx_link_get(links, 0);
        if (next < ntags) {
            __builtin_prefetch(&tags[next], 1, 3);
            vx_prefetch_rec(idx, vx_rec(idx, next));
        }
        for (uint32_t i = 0; i < n; i++) {
            uint32_t c = next;
            if (i + 1 < n) {
                next = vx_link_get(links, i + 1);
                if (next < ntags) {
                    __builtin_prefetch(&tags[next], 1, 3);
                    vx_prefetch_rec(idx, vx_rec(idx, next));
                }
            }
            if (c >= ntags || tags[c] == tag) continue;
            tags[c] = tag;
            const uint8_t *rec = vx_rec(idx, c);
            float d = vx_qdist(idx, q, rec);
            if (res->len < ef || d < lb) {
                if (heap_push_grow(cand) != 0) return VX_ENOMEM;
                vx_heap_push_min(cand, d, c);
                if (admissible(idx, rec, filter)) {
                    vx_heap_push_max(res, d, c);
                    if (res->len > ef) vx_heap_pop_max(res);
                    lb = res->a[0].d;
                }
            }
        }
    }
    return 0;
}

/* Bounded top-k by float distance over every admissible slot. */
int vx_index_search_exact(vx_index *idx, const float *q, uint32_t k, const vx_filter *filter,
                          vx_hit *out, uint32_t *n_out)
{
    vx_scratch *s = vx_scratch_acquire(&idx->pool, 0);
    if (s == NULL) return VX_ENOMEM;
    int rc = vx_heap_reserve(&s->res, k + 1);
    if (rc != 0) goto out;
    vx_heap *h = &s->res;
    h->len = 0;
    const uint32_t n = atomic_load_explicit(&idx->nslots, memory_order_acquire);
    for (uint32_t id = 0; id < n; id++) {
        const uint8_t *rec = vx_rec(idx, id);
        if (!admissible(idx, rec, filter)) continue;
        float d = vx_fdist(idx, q, vx_vec(idx, id));
        if (h->len < k) {
            vx_heap_push_max(h, d, id);
        } else if (d < h->a[0].d) {
            vx_heap_pop_max(h);
            vx_heap_push_max(h, d, id);
        }
    }
    uint32_t m = h->len;
    vx_cand_sort(h->a, m);
    for (uint32_t i = 0; i < m; i++) {
        out[i].label = vx_rec_label(idx, vx_rec(idx, h->a[i].id));
        out[i].distance = h->a[i].d;
    }
    *n_out = m;
out:
    vx_scratch_release(&idx->pool, s);
    return rc;
}

/* Fraction of LIVE points the filter matches, from a deterministic sample. */
static double estimate_selectivity(vx_index *idx, const vx_filter *filter)
{
    const uint32_t n = atomic_load_explicit(&idx->nslots, memory_order_acquire);
    if (n == 0) return 1.0;
    uint32_t tested = 0, matched = 0;
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (int i = 0; i < VX_SELECTIVITY_SAMPLE; i++) {
        x += 0x9e3779b97f4a7c15ull;
        uint64_t z = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ull;
        uint32_t id = (uint32_t)((z >> 32) % n);
        const uint8_t *rec = vx_rec(idx, id);
        if (vx_rec_state(idx, rec) != VX_NODE_LIVE) continue;
        tested++;
        matched += filter->match(filter->ctx, vx_rec_label(idx, rec));
    }
    return tested ? (double)matched / tested : 1.0;
}

int vx_index_search(vx_index *idx, const float *query, uint32_t k,
                    const vx_search_params *params, const vx_filter *filter, vx_hit *out,
                    uint32_t *n_out)
{
    static const vx_search_params defaults = {0};
    if (params == NULL) params = &defaults;
    *n_out = 0;
    if (k == 0) return 0;
    if (filter != NULL && filter->match == NULL) return VX_EINVAL;

    vx_scratch *s = vx_scratch_acquire(&idx->pool, atomic_load(&idx->nslots));
    if (s == NULL) return VX_ENOMEM;
    float *v = vx_scratch_vec(idx, s);
    double norm = 0.0;
    for (uint32_t d = 0; d < idx->dim; d++) {
        if (!isfinite(query[d])) {
            vx_scratch_release(&idx->pool, s);
            return VX_EINVAL;
        }
        norm += (double)query[d] * query[d];
    }
    if (idx->cfg.metric == VX_METRIC_COSINE && norm > 0.0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (uint32_t d = 0; d < idx->dim; d++) v[d] = query[d] * inv;
    } else {
        memcpy(v, query, idx->dim * sizeof(float));
    }

    uint32_t ef = params->ef ? params->ef : (k > 64 ? k : 64);
    if (ef < k) ef = k;
    pthread_rwlock_rdlock(&idx->code_lock);
    uint64_t entry = atomic_load(&idx->entry);
    bool exact = params->exact || !atomic_load(&idx->trained) || entry == VX_NO_ENTRY ||
                 atomic_load(&idx->live) <= ef;
    if (!exact && filter != NULL) {
        double p = filter->selectivity >= 0 ? filter->selectivity
                                            : estimate_selectivity(idx, filter);
        exact = params->exact_below_selectivity > 0
                    ? p < params->exact_below_selectivity
                    : scan_is_cheaper(idx, p, ef, atomic_load(&idx->live));
    }
    int rc;
    if (exact) {
        rc = vx_index_search_exact(idx, v, k, filter, out, n_out);
        goto out;
    }

    vx_qdesc q = {.vec = v};
    if (idx->int8) {
        int8_t *q8 = vx_scratch_q8(idx, s, 0);
        vx_quant_encode(&idx->qz, v, (uint8_t *)q8, false);
        vx_quant_query_from_code(&idx->qz, (const uint8_t *)q8, q8, &q.qconst, &q.qmul);
        q.qshift = q8;
    }
    float epd;
    uint32_t ep = vx_hnsw_descend(idx, &q, entry, 0, &epd);
    rc = vx_hnsw_search_layer(idx, s, &q, ep, epd, ef, 0, filter);
    if (rc != 0) goto out;
    uint32_t n = s->res.len;
    rc = vx_scratch_tmp_reserve(s, n);
    if (rc != 0) goto out;
    vx_cand *c = s->tmp;
    memcpy(c, s->res.a, n * sizeof(vx_cand));
    vx_cand_sort(c, n);
    if (idx->int8) {
        uint32_t r = params->rescore ? params->rescore : idx->cfg.rescore;
        if (r == 0) r = 4 * k > 32 ? 4 * k : 32;
        if (r < k) r = k;
        if (r > n) r = n;
        for (uint32_t i = 0; i < r; i++) __builtin_prefetch(vx_vec(idx, c[i].id), 0, 3);
        for (uint32_t i = 0; i < r; i++) c[i].d = vx_fdist(idx, v, vx_vec(idx, c[i].id));
        vx_cand_sort(c, r);
        n = r;
    }
    if (n > k) n = k;
    for (uint32_t i = 0; i < n; i++) {
        out[i].label = vx_rec_label(idx, vx_rec(idx, c[i].id));
        out[i].distance = c[i].d;
    }
    *n_out = n;
out:
    pthread_rwlock_unlock(&idx->code_lock);
    vx_scratch_release(&idx->pool, s);
    return rc;
}
