/*
 * hnsw_insert.c - INSERT (Malkov & Yashunin, Alg. 1) and
 * SELECT-NEIGHBORS-HEURISTIC (Alg. 4).
 *
 * Alg. 1 in short: draw the node's level l = floor(-ln(U) * mL); descend
 * greedily from the entry point to level l+1; on each level from
 * min(l, L) down to 0, run SEARCH-LAYER with ef_construction, pick M
 * neighbours with the heuristic, link both ways, and shrink any neighbour
 * whose list overflows Mmax (M above level 0, Mmax0 = 2M on level 0) with
 * the same heuristic.  If l > L the node becomes the entry point.
 *
 * Locking: the new node's lists are written under its stripe; each
 * neighbour's under its own stripe, one stripe at a time.  A node whose
 * level exceeds the current top holds entry_mu for its whole insert (as in
 * hnswlib), so two nodes cannot race to become the entry point.
 */
#include "index/hnsw_internal.h"

#include "base/err.h"

uint32_t vx_hnsw_select_heuristic(vx_index *idx, vx_cand *cands, uint32_t n, uint32_t maxn,
                                  int8_t *qshift_buf)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n && kept < maxn; i++) {
        vx_cand e = cands[i];
        bool good = true;
        if (kept > 0) {
            vx_qdesc qe;
            vx_qdesc_from_node(idx, e.id, qshift_buf, &qe);
            for (uint32_t j = 0; j < kept; j++) {
                if (vx_qdist(idx, &qe, vx_rec(idx, cands[j].id)) < e.d) {
                    good = false;
                    break;
                }
            }
        }
        if (good) cands[kept++] = e;
    }
    return kept;
}

/* Add `id` (at distance d) to the list of `nb` on `level`, shrinking the
 * list with the heuristic when full.  Deleted entries are dropped first. */
void vx_hnsw_connect_back(vx_index *idx, vx_scratch *s, uint32_t nb, uint32_t id, float d,
                          int level)
{
    const uint32_t maxn = vx_maxlinks(idx, level);
    vx_cand c[2 * 128 + 1];
    pthread_mutex_t *mu = vx_link_lock(idx, nb);
    pthread_mutex_lock(mu);
    uint32_t *l = vx_links(idx, nb, level);
    if (l == vx_empty_links) { /* nb was recycled meanwhile: nothing to do */
        pthread_mutex_unlock(mu);
        return;
    }
    uint32_t cnt = vx_links_count(l, maxn);
    for (uint32_t i = 0; i < cnt; i++) {
        if (vx_link_get(l, i) == id) {
            pthread_mutex_unlock(mu);
            return;
        }
    }
    if (cnt < maxn) {
        __atomic_store_n(&l[1 + cnt], id, __ATOMIC_RELEASE);
        __atomic_store_n(&l[0], cnt + 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(mu);
        return;
    }
    vx_qdesc qn;
    vx_qdesc_from_node(idx, nb, vx_scratch_q8(idx, s, 1), &qn);
    uint32_t n = 0;
    c[n++] = (vx_cand){d, id};
    for (uint32_t i = 0; i < cnt; i++) {
        uint32_t x = vx_link_get(l, i);
        const uint8_t *rec = vx_rec(idx, x);
        if (vx_rec_state(idx, rec) != VX_NODE_LIVE) continue;
        c[n++] = (vx_cand){vx_qdist(idx, &qn, rec), x};
    }
    vx_cand_sort(c, n);
    uint32_t k = vx_hnsw_select_heuristic(idx, c, n, maxn, vx_scratch_q8(idx, s, 2));
    uint32_t ids[2 * 128];
    for (uint32_t i = 0; i < k; i++) ids[i] = c[i].id;
    vx_links_store(idx, nb, level, ids, k);
    pthread_mutex_unlock(mu);
}

int vx_hnsw_link(vx_index *idx, uint32_t id, vx_scratch *s)
{
    const uint8_t *rec = vx_rec(idx, id);
    const int level = vx_rec_level(idx, rec);
    vx_qdesc q;
    vx_qdesc_from_node(idx, id, vx_scratch_q8(idx, s, 0), &q);

    bool ep_locked = false;
    uint64_t e = atomic_load(&idx->entry);
    if (e == VX_NO_ENTRY || level > (int)(e >> 32)) {
        pthread_mutex_lock(&idx->entry_mu);
        ep_locked = true;
        e = atomic_load(&idx->entry);
        if (e == VX_NO_ENTRY) {
            atomic_store(&idx->entry, ((uint64_t)level << 32) | id);
            pthread_mutex_unlock(&idx->entry_mu);
            return 0;
        }
        if (level <= (int)(e >> 32)) {
            pthread_mutex_unlock(&idx->entry_mu);
            ep_locked = false;
        }
    }
    const int top = (int)(e >> 32);
    float epd;
    uint32_t ep = vx_hnsw_descend(idx, &q, e, level, &epd);
    int rc = 0;
    for (int l = level < top ? level : top; l >= 0; l--) {
        rc = vx_hnsw_search_layer(idx, s, &q, ep, epd, idx->cfg.ef_construction, l, NULL);
        if (rc != 0) break;
        uint32_t n = s->res.len;
        if (n == 0) continue; /* everything nearby is deleted: keep the current ep */
        rc = vx_scratch_tmp_reserve(s, n);
        if (rc != 0) break;
        vx_cand *c = s->tmp;
        for (uint32_t i = 0; i < n; i++) c[i] = s->res.a[i];
        vx_cand_sort(c, n);
        /* remove the node itself (a re-link after training may find it) */
        uint32_t w = 0;
        for (uint32_t i = 0; i < n; i++)
            if (c[i].id != id) c[w++] = c[i];
        n = w;
        if (n == 0) continue;
        ep = c[0].id;
        epd = c[0].d;
        uint32_t k = vx_hnsw_select_heuristic(idx, c, n, idx->m, vx_scratch_q8(idx, s, 2));
        uint32_t ids[128];
        for (uint32_t i = 0; i < k; i++) ids[i] = c[i].id;
        pthread_mutex_t *mu = vx_link_lock(idx, id);
        pthread_mutex_lock(mu);
        vx_links_store(idx, id, l, ids, k);
        pthread_mutex_unlock(mu);
        for (uint32_t i = 0; i < k; i++) vx_hnsw_connect_back(idx, s, c[i].id, id, c[i].d, l);
    }
    if (ep_locked) {
        if (rc == 0) atomic_store(&idx->entry, ((uint64_t)level << 32) | id);
        pthread_mutex_unlock(&idx->entry_mu);
    }
    return rc;
}
