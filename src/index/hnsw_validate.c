/*
 * hnsw_validate.c - checker of the graph's invariants, for tests and for
 * operators after a load.  Takes the structure lock in write mode, so it
 * sees a graph no add/delete/vacuum is changing.
 */
#include "index/hnsw_internal.h"

#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...)                                                                           \
    do {                                                                                    \
        snprintf(rep->msg, sizeof rep->msg, __VA_ARGS__);                                   \
        rc = VX_ECORRUPT;                                                                   \
        goto out;                                                                           \
    } while (0)

int vx_index_validate(vx_index *idx, vx_validate_report *rep)
{
    vx_validate_report local;
    if (rep == NULL) rep = &local;
    memset(rep, 0, sizeof(*rep));
    int rc = 0;
    uint32_t *queue = NULL;
    uint8_t *seen = NULL;
    pthread_rwlock_wrlock(&idx->struct_lock);
    pthread_mutex_lock(&idx->map_mu);
    const uint32_t nslots = atomic_load(&idx->nslots);
    const uint64_t deleted = atomic_load(&idx->deleted);
    const uint64_t e = atomic_load(&idx->entry);
    const int top = e == VX_NO_ENTRY ? -1 : (int)(e >> 32);
    const bool trained = atomic_load(&idx->trained);
    uint64_t live_seen = 0, deleted_seen = 0;
    int max_level_seen = -1;

    for (uint32_t u = 0; u < nslots; u++) {
        const uint8_t *rec = vx_rec(idx, u);
        uint8_t st = vx_rec_state(idx, rec);
        int lv = vx_rec_level(idx, rec);
        if (st == VX_NODE_FREE) continue;
        if (st != VX_NODE_LIVE && st != VX_NODE_DELETED) FAIL("node %u: bad state %u", u, st);
        if (lv > VX_MAX_LEVEL) FAIL("node %u: level %d above %d", u, lv, VX_MAX_LEVEL);
        if (lv > 0 && *(uint32_t *const *)(rec + idx->off_upper) == NULL)
            FAIL("node %u: level %d without upper lists", u, lv);
        rep->nodes_checked++;
        if (st == VX_NODE_LIVE) {
            live_seen++;
            uint64_t label = vx_rec_label(idx, rec);
            if (vx_labelmap_get(&idx->map, label) != u)
                FAIL("node %u: label %llu does not map back to it", u,
                     (unsigned long long)label);
        } else {
            deleted_seen++;
        }
        if (trained && lv > max_level_seen) max_level_seen = lv;
        for (int l = 0; l <= lv; l++) {
            const uint32_t *lk = vx_links(idx, u, l);
            uint32_t cnt = __atomic_load_n(&lk[0], __ATOMIC_ACQUIRE);
            if (cnt > vx_maxlinks(idx, l))
                FAIL("node %u level %d: degree %u above %u", u, l, cnt, vx_maxlinks(idx, l));
            for (uint32_t i = 0; i < cnt; i++) {
                uint32_t c = vx_link_get(lk, i);
                rep->links_checked++;
                if (c >= nslots) FAIL("node %u level %d: link to unallocated %u", u, l, c);
                if (c == u) FAIL("node %u level %d: link to itself", u, l);
                const uint8_t *crec = vx_rec(idx, c);
                uint8_t cst = vx_rec_state(idx, crec);
                if (cst == VX_NODE_FREE) FAIL("node %u level %d: link to free slot %u", u, l, c);
                if (vx_rec_level(idx, crec) < l)
                    FAIL("node %u level %d: link to %u which has level %d", u, l, c,
                         vx_rec_level(idx, crec));
                if (deleted == 0 && cst != VX_NODE_LIVE)
                    FAIL("node %u level %d: link to deleted %u", u, l, c);
                for (uint32_t j = 0; j < i; j++)
                    if (vx_link_get(lk, j) == c)
                        FAIL("node %u level %d: duplicate link %u", u, l, c);
            }
        }
    }
    if (live_seen != atomic_load(&idx->live))
        FAIL("live count %llu, but %llu live nodes", (unsigned long long)atomic_load(&idx->live),
             (unsigned long long)live_seen);
    if (deleted_seen != deleted)
        FAIL("deleted count %llu, but %llu deleted nodes", (unsigned long long)deleted,
             (unsigned long long)deleted_seen);
    if (idx->map.len != live_seen)
        FAIL("label map holds %zu labels for %llu live nodes", idx->map.len,
             (unsigned long long)live_seen);
    if (!trained) { /* INT8 before training: a flat list, no graph */
        if (e != VX_NO_ENTRY) FAIL("untrained index with an entry point");
        goto out;
    }
    if (live_seen > 0 && e == VX_NO_ENTRY) FAIL("live nodes but no entry point");
    if (e != VX_NO_ENTRY) {
        uint32_t ep = (uint32_t)e;
        if (ep >= nslots) FAIL("entry point %u unallocated", ep);
        const uint8_t *rec = vx_rec(idx, ep);
        if (vx_rec_state(idx, rec) == VX_NODE_FREE) FAIL("entry point %u is a free slot", ep);
        if (vx_rec_level(idx, rec) != top)
            FAIL("entry point %u has level %d, top is %d", ep, vx_rec_level(idx, rec), top);
        if (max_level_seen > top) FAIL("a node has level %d above the top %d", max_level_seen, top);
        /* Reachability on level 0. */
        queue = malloc(sizeof(uint32_t) * (nslots ? nslots : 1));
        seen = calloc(nslots ? nslots : 1, 1);
        if (queue == NULL || seen == NULL) {
            rc = VX_ENOMEM;
            goto out;
        }
        size_t qh = 0, qt = 0;
        uint64_t reached = 0;
        queue[qt++] = ep;
        seen[ep] = 1;
        while (qh < qt) {
            uint32_t u = queue[qh++];
            if (vx_rec_state(idx, vx_rec(idx, u)) == VX_NODE_LIVE) reached++;
            const uint32_t *lk = vx_links(idx, u, 0);
            uint32_t cnt = vx_links_count(lk, idx->m0);
            for (uint32_t i = 0; i < cnt; i++) {
                uint32_t c = vx_link_get(lk, i);
                if (!seen[c]) {
                    seen[c] = 1;
                    queue[qt++] = c;
                }
            }
        }
        rep->unreachable = live_seen - reached;
    }
out:
    pthread_mutex_unlock(&idx->map_mu);
    pthread_rwlock_unlock(&idx->struct_lock);
    free(queue);
    free(seen);
    return rc;
}
