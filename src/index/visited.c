/*
 * visited.c - scratch pool (see visited.h).
 */
#include "index/visited.h"

#include "base/err.h"

#include <stdlib.h>
#include <string.h>

void vx_scratch_pool_init(vx_scratch_pool *p, size_t qbuf_bytes)
{
    pthread_mutex_init(&p->mu, NULL);
    p->free = NULL;
    p->qbuf_bytes = qbuf_bytes;
}

static void scratch_free(vx_scratch *s)
{
    free(s->tags);
    free(s->cand.a);
    free(s->res.a);
    free(s->qbuf);
    free(s->tmp);
    free(s);
}

void vx_scratch_pool_close(vx_scratch_pool *p)
{
    vx_scratch *s = p->free;
    while (s) {
        vx_scratch *n = s->next;
        scratch_free(s);
        s = n;
    }
    p->free = NULL;
    pthread_mutex_destroy(&p->mu);
}

vx_scratch *vx_scratch_acquire(vx_scratch_pool *p, size_t nslots)
{
    pthread_mutex_lock(&p->mu);
    vx_scratch *s = p->free;
    if (s) p->free = s->next;
    pthread_mutex_unlock(&p->mu);
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL) return NULL;
        s->qbuf = malloc(p->qbuf_bytes ? p->qbuf_bytes : 1);
        if (s->qbuf == NULL) {
            free(s);
            return NULL;
        }
    }
    /* Headroom: nodes added while a search runs get ids above nslots. */
    if (s->ntags < nslots + 256) {
        size_t n = nslots + nslots / 4 + 1024;
        uint16_t *t = realloc(s->tags, n * sizeof(uint16_t));
        if (t == NULL) {
            vx_scratch_release(p, s);
            return NULL;
        }
        memset(t, 0, n * sizeof(uint16_t));
        s->tags = t;
        s->ntags = n;
        s->tag = 0;
    }
    vx_scratch_new_epoch(s);
    s->cand.len = 0;
    s->res.len = 0;
    return s;
}

void vx_scratch_release(vx_scratch_pool *p, vx_scratch *s)
{
    pthread_mutex_lock(&p->mu);
    s->next = p->free;
    p->free = s;
    pthread_mutex_unlock(&p->mu);
}

int vx_heap_reserve(vx_heap *h, uint32_t cap)
{
    if (h->cap >= cap) return 0;
    vx_cand *a = realloc(h->a, sizeof(vx_cand) * cap);
    if (a == NULL) return VX_ENOMEM;
    h->a = a;
    h->cap = cap;
    return 0;
}

int vx_scratch_tmp_reserve(vx_scratch *s, size_t n)
{
    if (s->tmp_cap >= n) return 0;
    size_t cap = n + n / 2 + 16;
    vx_cand *t = realloc(s->tmp, sizeof(vx_cand) * cap);
    if (t == NULL) return VX_ENOMEM;
    s->tmp = t;
    s->tmp_cap = cap;
    return 0;
}

static int cand_cmp(const void *a, const void *b)
{
    const vx_cand *x = a, *y = b;
    if (x->d < y->d) return -1;
    if (x->d > y->d) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

void vx_cand_sort(vx_cand *a, size_t n)
{
    /* Small n dominates (ef-sized lists): insertion sort below 24. */
    if (n < 24) {
        for (size_t i = 1; i < n; i++) {
            vx_cand v = a[i];
            size_t j = i;
            while (j > 0 && cand_cmp(&a[j - 1], &v) > 0) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = v;
        }
        return;
    }
    qsort(a, n, sizeof(vx_cand), cand_cmp);
}
