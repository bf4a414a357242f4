/*
 * visited.h - per-search scratch: the visited set and the two heaps.
 *
 * A visited set is an array of 16-bit tags, one per node slot, and a current
 * tag; "visited" means tags[id] == tag.  Starting a search bumps the tag, so
 * clearing costs nothing except once every 65535 searches (hnswlib's
 * VisitedList).  Scratch objects are pooled per index and reused, so a search
 * allocates nothing in the steady state.  The pool is guarded by a mutex
 * taken twice per search (acquire, release).
 */
#ifndef VX_INDEX_VISITED_H
#define VX_INDEX_VISITED_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vx_cand {
    float d;
    uint32_t id;
} vx_cand;

/* Binary heap of vx_cand; `max` selects a max-heap (results) or a min-heap
 * (candidates) at each call site. */
typedef struct vx_heap {
    vx_cand *a;
    uint32_t len, cap;
} vx_heap;

typedef struct vx_scratch {
    uint16_t *tags;
    size_t ntags;
    uint16_t tag;
    vx_heap cand, res;
    void *qbuf;      /* query encoding buffer (dim floats or dim int8) */
    vx_cand *tmp;    /* general candidate buffer */
    size_t tmp_cap;
    struct vx_scratch *next;
} vx_scratch;

typedef struct vx_scratch_pool {
    pthread_mutex_t mu;
    vx_scratch *free;
    size_t qbuf_bytes;
} vx_scratch_pool;

void vx_scratch_pool_init(vx_scratch_pool *p, size_t qbuf_bytes);
void vx_scratch_pool_close(vx_scratch_pool *p);
/* A scratch whose visited set covers `nslots` ids and is cleared. NULL on OOM. */
vx_scratch *vx_scratch_acquire(vx_scratch_pool *p, size_t nslots);
void vx_scratch_release(vx_scratch_pool *p, vx_scratch *s);
/* Start a new visited set (O(1) except on tag wrap-around). */
static inline void vx_scratch_new_epoch(vx_scratch *s)
{
    if (++s->tag == 0) {
        __builtin_memset(s->tags, 0, s->ntags * sizeof(uint16_t));
        s->tag = 1;
    }
}

/* Make room for n entries in s->tmp. */
int vx_scratch_tmp_reserve(vx_scratch *s, size_t n);

int vx_heap_reserve(vx_heap *h, uint32_t cap);

static inline void vx_heap_push_max(vx_heap *h, float d, uint32_t id)
{
    uint32_t i = h->len++;
    vx_cand *a = h->a;
    while (i > 0) {
        uint32_t p = (i - 1) >> 1;
        if (a[p].d >= d) break;
        a[i] = a[p];
        i = p;
    }
    a[i].d = d;
    a[i].id = id;
}

static inline void vx_heap_pop_max(vx_heap *h)
{
    vx_cand *a = h->a;
    vx_cand last = a[--h->len];
    uint32_t n = h->len, i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && a[c + 1].d > a[c].d) c++;
        if (a[c].d <= last.d) break;
        a[i] = a[c];
        i = c;
    }
    if (n) a[i] = last;
}

static inline void vx_heap_push_min(vx_heap *h, float d, uint32_t id)
{
    uint32_t i = h->len++;
    vx_cand *a = h->a;
    while (i > 0) {
        uint32_t p = (i - 1) >> 1;
        if (a[p].d <= d) break;
        a[i] = a[p];
        i = p;
    }
    a[i].d = d;
    a[i].id = id;
}

static inline void vx_heap_pop_min(vx_heap *h)
{
    vx_cand *a = h->a;
    vx_cand last = a[--h->len];
    uint32_t n = h->len, i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && a[c + 1].d < a[c].d) c++;
        if (a[c].d >= last.d) break;
        a[i] = a[c];
        i = c;
    }
    if (n) a[i] = last;
}

/* Sort n candidates ascending by distance (ties by id, for determinism). */
void vx_cand_sort(vx_cand *a, size_t n);

#endif
