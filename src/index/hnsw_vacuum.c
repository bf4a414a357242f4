/*
 * hnsw_vacuum.c - repairing the graph around deleted nodes, recycling slots.
 *
 * A delete only marks its node DELETED: it keeps routing searches and is
 * never returned.  Vacuum then, level by level, rewrites the list of every
 * live node that points at a deleted one: the candidates are the node's live
 * neighbours plus the live neighbours of each deleted neighbour (two hops
 * through chains of deleted nodes), re-ranked by distance and pruned with
 * the heuristic of Alg. 4 -- the repair hnswlib applies on update and
 * FreshDiskANN on delete.  A node left with too few candidates is re-linked
 * from a fresh SEARCH-LAYER, as on insert.  A deleted entry point is replaced
 * by a live node of the highest level.
 *
 * Then a grace period (the code lock taken once in write mode) waits for
 * every search that might still hold a deleted id, and the slots go to the
 * free list, where new inserts reuse them: memory stays flat under churn.
 *
 * Runs with the structure lock in write mode: adds and deletes wait,
 * searches do not (they read lists that are replaced atomically per word).
 */
#include "index/hnsw_internal.h"

#include "base/err.h"

static inline bool is_live(const vx_index *idx, uint32_t id)
{
    return vx_rec_state(idx, vx_rec(idx, id)) == VX_NODE_LIVE;
}

/* Collect live candidates around u on `level` into s->tmp (unsorted, no
 * duplicates, without u).  Returns the count or a negative error. */
static int gather(vx_index *idx, vx_scratch *s, uint32_t u, int level, const vx_qdesc *qu)
{
    const uint32_t maxn = vx_maxlinks(idx, level);
    vx_scratch_new_epoch(s);
    s->tags[u] = s->tag;
    uint32_t n = 0;
    /* stack of nodes to expand: u's links, then deleted nodes' links (2 hops) */
    uint32_t frontier[2][2 * 128 * 4];
    uint32_t nf = 0;
    frontier[0][nf++] = u;
    for (int hop = 0; hop < 3 && nf > 0; hop++) {
        uint32_t nnext = 0;
        for (uint32_t f = 0; f < nf; f++) {
            const uint32_t *l = vx_links(idx, frontier[hop & 1][f], level);
            uint32_t cnt = vx_links_count(l, maxn);
            if (vx_scratch_tmp_reserve(s, n + cnt) != 0) return VX_ENOMEM;
            for (uint32_t i = 0; i < cnt; i++) {
                uint32_t c = vx_link_get(l, i);
                if (c >= s->ntags || s->tags[c] == s->tag) continue;
                s->tags[c] = s->tag;
                uint8_t st = vx_rec_state(idx, vx_rec(idx, c));
                if (st == VX_NODE_LIVE) {
                    s->tmp[n++] = (vx_cand){vx_qdist(idx, qu, vx_rec(idx, c)), c};
                } else if (st == VX_NODE_DELETED && hop < 2 &&
                           nnext < sizeof(frontier[0]) / sizeof(uint32_t)) {
                    frontier[(hop + 1) & 1][nnext++] = c;
                }
            }
        }
        nf = nnext;
    }
    return (int)n;
}

static int repair_node(vx_index *idx, vx_scratch *s, uint32_t u, int level)
{
    const uint32_t maxn = vx_maxlinks(idx, level);
    vx_qdesc qu;
    vx_qdesc_from_node(idx, u, vx_scratch_q8(idx, s, 0), &qu);
    int n = gather(idx, s, u, level, &qu);
    if (n < 0) return n;
    if ((uint32_t)n < maxn / 2) {
        /* Too few survivors nearby: find neighbours as an insert would. */
        uint64_t e = atomic_load(&idx->entry);
        uint32_t ep = (uint32_t)e;
        float epd;
        ep = vx_hnsw_descend(idx, &qu, e, level, &epd);
        int rc = vx_hnsw_search_layer(idx, s, &qu, ep, epd, idx->cfg.ef_construction, level,
                                      NULL);
        if (rc != 0) return rc;
        rc = vx_scratch_tmp_reserve(s, s->res.len);
        if (rc != 0) return rc;
        n = 0;
        for (uint32_t i = 0; i < s->res.len; i++)
            if (s->res.a[i].id != u) s->tmp[n++] = s->res.a[i];
    }
    vx_cand_sort(s->tmp, (size_t)n);
    uint32_t cap = idx->cfg.ef_construction;
    if ((uint32_t)n > cap) n = (int)cap;
    uint32_t k = vx_hnsw_select_heuristic(idx, s->tmp, (uint32_t)n, maxn, vx_scratch_q8(idx, s, 2));
    uint32_t ids[2 * 128];
    for (uint32_t i = 0; i < k; i++) ids[i] = s->tmp[i].id;
    pthread_mutex_t *mu = vx_link_lock(idx, u);
    pthread_mutex_lock(mu);
    vx_links_store(idx, u, level, ids, k);
    pthread_mutex_unlock(mu);
    /* Reverse edges, as an insert makes them: nodes that lost in-links
     * through the deleted ones get them back, so none is cut off. */
    for (uint32_t i = 0; i < k; i++) vx_hnsw_connect_back(idx, s, ids[i], u, s->tmp[i].d, level);
    return 0;
}

int vx_index_vacuum(vx_index *idx)
{
    pthread_rwlock_wrlock(&idx->struct_lock);
    int rc = 0;
    if (atomic_load(&idx->deleted) == 0) goto out;
    const uint32_t nslots = atomic_load(&idx->nslots);
    vx_scratch *s = vx_scratch_acquire(&idx->pool, nslots);
    if (s == NULL) {
        rc = VX_ENOMEM;
        goto out;
    }
    uint64_t e = atomic_load(&idx->entry);
    int top = e == VX_NO_ENTRY ? -1 : (int)(e >> 32);

    /* 1. A deleted entry point is replaced first, so repair searches start
     *    from a live node: the live node of the highest level. */
    if (e != VX_NO_ENTRY && !is_live(idx, (uint32_t)e)) {
        uint32_t best = VX_NO_NODE;
        int best_level = -1;
        for (uint32_t id = 0; id < nslots; id++) {
            const uint8_t *rec = vx_rec(idx, id);
            if (vx_rec_state(idx, rec) != VX_NODE_LIVE) continue;
            int lv = vx_rec_level(idx, rec);
            if (lv > best_level) {
                best_level = lv;
                best = id;
            }
        }
        e = best == VX_NO_NODE ? VX_NO_ENTRY : ((uint64_t)best_level << 32) | best;
        atomic_store(&idx->entry, e);
    }

    /* 2. Repair every live node's lists that name a deleted node. */
    for (int l = 0; l <= top && rc == 0; l++) {
        for (uint32_t u = 0; u < nslots && rc == 0; u++) {
            const uint8_t *rec = vx_rec(idx, u);
            if (vx_rec_state(idx, rec) != VX_NODE_LIVE || vx_rec_level(idx, rec) < l) continue;
            const uint32_t *lk = vx_links(idx, u, l);
            uint32_t cnt = vx_links_count(lk, vx_maxlinks(idx, l));
            bool dirty = false;
            for (uint32_t i = 0; i < cnt && !dirty; i++) dirty = !is_live(idx, vx_link_get(lk, i));
            if (dirty) rc = repair_node(idx, s, u, l);
        }
    }
    vx_scratch_release(&idx->pool, s);
    if (rc != 0) goto out;

    /* 3. Grace period: no search started before this point is still running
     *    once the write lock is granted. */
    pthread_rwlock_wrlock(&idx->code_lock);
    pthread_rwlock_unlock(&idx->code_lock);

    /* 4. Recycle. */
    for (uint32_t id = 0; id < nslots; id++) {
        if (vx_rec_state(idx, vx_rec(idx, id)) != VX_NODE_DELETED) continue;
        vx_slot_release(idx, id);
        atomic_fetch_sub(&idx->deleted, 1);
    }
out:
    pthread_rwlock_unlock(&idx->struct_lock);
    return rc;
}
