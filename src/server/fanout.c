/*
 * fanout.c - per-shard parallelism of one request (fanout.h).
 */
#include "server/fanout.h"

#include "base/err.h"
#include "base/workpool.h"

#include <pthread.h>
#include <stdlib.h>

struct vx_fanout {
    vx_workpool *pool;
};

typedef struct latch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned left;
} latch;

typedef struct part {
    void (*fn)(void *arg, unsigned i);
    void *arg;
    unsigned i;
    latch *l;
} part;

static void run_part(void *p_)
{
    part *p = p_;
    p->fn(p->arg, p->i);
    pthread_mutex_lock(&p->l->mu);
    if (--p->l->left == 0) pthread_cond_signal(&p->l->cv);
    pthread_mutex_unlock(&p->l->mu);
}

int vx_fanout_new(unsigned threads, vx_fanout **out)
{
    vx_fanout *f = calloc(1, sizeof *f);
    if (f == NULL) return VX_ENOMEM;
    int rc = vx_workpool_new(threads ? threads : 1, &f->pool);
    if (rc != 0) {
        free(f);
        return rc;
    }
    *out = f;
    return 0;
}

void vx_fanout_free(vx_fanout *f)
{
    if (f == NULL) return;
    vx_workpool_free(f->pool);
    free(f);
}

void vx_fanout_run(vx_fanout *f, unsigned n, void (*fn)(void *arg, unsigned i), void *arg)
{
    if (n == 0) return;
    part *parts = n > 1 && f ? malloc(n * sizeof *parts) : NULL;
    if (parts == NULL) { /* one part, no pool, or no memory: in order, inline */
        for (unsigned i = 0; i < n; i++) fn(arg, i);
        return;
    }
    latch l = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, n};
    for (unsigned i = 0; i < n; i++) parts[i] = (part){fn, arg, i, &l};
    for (unsigned i = 1; i < n; i++)
        if (vx_workpool_submit(f->pool, run_part, &parts[i]) != 0) run_part(&parts[i]);
    run_part(&parts[0]);
    pthread_mutex_lock(&l.mu);
    while (l.left > 0) pthread_cond_wait(&l.cv, &l.mu);
    pthread_mutex_unlock(&l.mu);
    pthread_mutex_destroy(&l.mu);
    pthread_cond_destroy(&l.cv);
    free(parts);
}
