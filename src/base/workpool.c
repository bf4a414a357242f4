/*
 * workpool.c - see workpool.h.
 */
#include "base/workpool.h"

#include "base/err.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct job {
    vx_job_fn fn;
    void *arg;
    struct job *next;
} job;

struct vx_workpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    bool stopping;
    unsigned n;
    pthread_t *threads;
};

static void *worker(void *arg)
{
    vx_workpool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->head == NULL && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        job *j = p->head;
        if (j == NULL) break; /* stopping and drained */
        p->head = j->next;
        if (p->head == NULL) p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int vx_workpool_new(unsigned nthreads, vx_workpool **out)
{
    if (nthreads == 0) nthreads = 1;
    vx_workpool *p = calloc(1, sizeof(*p));
    if (p == NULL) return VX_ENOMEM;
    p->threads = calloc(nthreads, sizeof(pthread_t));
    if (p->threads == NULL) {
        free(p);
        return VX_ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) break;
        p->n++;
    }
    if (p->n == 0) {
        vx_workpool_free(p);
        return VX_ENOMEM;
    }
    *out = p;
    return 0;
}

void vx_workpool_free(vx_workpool *p)
{
    if (p == NULL) return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int vx_workpool_submit(vx_workpool *p, vx_job_fn fn, void *arg)
{
    job *j = malloc(sizeof(*j));
    if (j == NULL) return VX_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        free(j);
        return VX_ESTATE;
    }
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}
