/*
 * bench_util.c - helpers shared by the vectron-bench commands (bench_util.h).
 */
#include "bench_util.h"
#include "peer_hnswlib.h"

#include "base/err.h"
#include "base/fvecs.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_BUILD_CHUNK 64
#define BENCH_MAX_THREADS 1024

/* ---- messages ------------------------------------------------------------ */

static const char *g_command = "?";
bool bench_quiet;

void bench_set_command(const char *name)
{
    g_command = name;
}

void bench_progress(const char *fmt, ...)
{
    if (bench_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

int bench_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "vectron-bench %s: ", g_command);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(run 'vectron-bench %s --help' for the options)\n", g_command);
    return 2;
}

void bench_fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "vectron-bench %s: ", g_command);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- options ------------------------------------------------------------- */

int bench_parse_uint(const char *opt, const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out)
{
    char *end;
    unsigned long long v;
    if (s == NULL || *s == '\0' || *s == '-' || *s == '+' || *s == ' ')
        return bench_usage_error("--%s: expected a number, got '%s'", opt, s ? s : "");
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return bench_usage_error("--%s: expected a number, got '%s'", opt, s);
    if (v < lo || v > hi)
        return bench_usage_error("--%s: %llu is out of range %llu..%llu", opt, v, lo, hi);
    *out = v;
    return 0;
}

int bench_parse_metric(const char *s, vx_metric *out)
{
    if (strcmp(s, "l2") == 0)
        *out = VX_METRIC_L2;
    else if (strcmp(s, "ip") == 0)
        *out = VX_METRIC_IP;
    else if (strcmp(s, "cosine") == 0)
        *out = VX_METRIC_COSINE;
    else
        return bench_usage_error("--metric: expected l2, ip or cosine, got '%s'", s);
    return 0;
}

/* ---- measurement --------------------------------------------------------- */

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

size_t bench_rss_bytes(void)
{
    unsigned long long size_pages, resident_pages;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL) return 0;
    int n = fscanf(f, "%llu %llu", &size_pages, &resident_pages);
    fclose(f);
    if (n != 2) return 0;
    return (size_t)resident_pages * (size_t)sysconf(_SC_PAGESIZE);
}

size_t bench_rss_baseline(void)
{
    malloc_trim(0);
    return bench_rss_bytes();
}

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile_sorted(const double *v, size_t n, double p)
{
    size_t r = (size_t)ceil(p * (double)n);
    if (r < 1) r = 1;
    if (r > n) r = n;
    return v[r - 1];
}

void bench_print_num(const char *fmt, double v)
{
    if (isfinite(v))
        printf(fmt, v);
    else
        fputs("null", stdout);
}

/* ---- the data set ---------------------------------------------------------- */

int bench_load_vectors(const char *base_path, size_t nbase, const char *query_path, size_t nq,
                       bool nq_is_limit, bench_data *d)
{
    char err[256];
    size_t qdim;

    bench_progress("loading %s ...\n", base_path);
    if (vx_fvecs_read(base_path, nbase, &d->base, &d->nbase, &d->dim, err)) {
        bench_fail("base vectors: %s", err);
        return 1;
    }
    if (nbase && d->nbase < nbase) {
        bench_fail("--nbase %zu: %s has only %zu vectors", nbase, base_path, d->nbase);
        return 1;
    }
    if (vx_fvecs_read(query_path, nq, &d->query, &d->nq, &qdim, err)) {
        bench_fail("query vectors: %s", err);
        return 1;
    }
    if (nq && d->nq < nq && !nq_is_limit) {
        bench_fail("--nq %zu: %s has only %zu queries", nq, query_path, d->nq);
        return 1;
    }
    if (qdim != d->dim) {
        bench_fail("%s has dimension %zu but %s has %zu", query_path, qdim, base_path, d->dim);
        return 1;
    }
    if (d->dim > VX_MAX_DIM) {
        bench_fail("dimension %zu exceeds VX_MAX_DIM %d", d->dim, VX_MAX_DIM);
        return 1;
    }
    return 0;
}

void bench_free_data(bench_data *d)
{
    free(d->base);
    free(d->query);
    free(d->gt);
    d->base = d->query = NULL;
    d->gt = NULL;
}

/* ---- building ------------------------------------------------------------ */

int bench_vectron_create(const bench_data *d, const vx_index_config *cfg, vx_index **out)
{
    char err[VX_ERRMSG_LEN] = "";
    vx_index *idx = NULL;
    float *sample_copy = NULL;
    int rc;

    *out = NULL;
    if ((rc = vx_index_new(cfg, &idx, err))) {
        bench_fail("vx_index_new: %s: %s", vx_strerror(rc), err);
        return 1;
    }
    if (cfg->quant == VX_QUANT_INT8) {
        size_t ns = d->nbase < BENCH_TRAIN_ROWS ? d->nbase : BENCH_TRAIN_ROWS;
        const float *sample = d->base;
        /* index.h does not say whether train() normalizes a COSINE sample as
         * add() does; hand it unit vectors so either way it sees what the
         * index stores (normalizing twice is harmless). */
        if (cfg->metric == VX_METRIC_COSINE) {
            sample_copy = malloc(ns * d->dim * sizeof(float));
            if (sample_copy == NULL) {
                bench_fail("out of memory for the training sample");
                vx_index_free(idx);
                return 1;
            }
            for (size_t i = 0; i < ns; i++) {
                const float *v = d->base + i * d->dim;
                float *w = sample_copy + i * d->dim;
                double ss = 0;
                for (size_t j = 0; j < d->dim; j++)
                    ss += (double)v[j] * v[j];
                float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
                for (size_t j = 0; j < d->dim; j++)
                    w[j] = v[j] * inv;
            }
            sample = sample_copy;
        }
        rc = vx_index_train(idx, sample, ns, err);
        free(sample_copy);
        if (rc) {
            bench_fail("vx_index_train (%zu vectors): %s: %s", ns, vx_strerror(rc), err);
            vx_index_free(idx);
            return 1;
        }
    }
    *out = idx;
    return 0;
}

typedef struct build_shared {
    const bench_data *d;
    bool peer;
    void *impl;
    size_t next; /* next row to claim (atomic) */
    int failed;  /* atomic */
    pthread_mutex_t mu;
    char err[VX_ERRMSG_LEN];
} build_shared;

static void *build_worker(void *arg)
{
    build_shared *b = arg;
    const bench_data *d = b->d;
    char err[VX_ERRMSG_LEN];
    for (;;) {
        if (__atomic_load_n(&b->failed, __ATOMIC_RELAXED)) return NULL;
        size_t lo = __atomic_fetch_add(&b->next, BENCH_BUILD_CHUNK, __ATOMIC_RELAXED);
        if (lo >= d->nbase) return NULL;
        size_t hi = lo + BENCH_BUILD_CHUNK < d->nbase ? lo + BENCH_BUILD_CHUNK : d->nbase;
        for (size_t i = lo; i < hi; i++) {
            const float *v = d->base + i * d->dim;
            int rc;
            err[0] = '\0';
            if (b->peer)
                rc = vx_peer_hnswlib_add(b->impl, v, i);
            else
                rc = vx_index_add(b->impl, i, v, err);
            if (rc) {
                pthread_mutex_lock(&b->mu);
                if (!b->failed) {
                    if (b->peer)
                        snprintf(b->err, sizeof b->err,
                                 "insert of row %zu: addPoint threw (message above)", i);
                    else
                        snprintf(b->err, sizeof b->err, "vx_index_add of row %zu: %s: %s", i,
                                 vx_strerror(rc), err);
                    __atomic_store_n(&b->failed, 1, __ATOMIC_RELAXED);
                }
                pthread_mutex_unlock(&b->mu);
                return NULL;
            }
        }
    }
}

int bench_build_insert_all(const bench_data *d, bool peer, void *impl, size_t nthreads)
{
    build_shared b = {.d = d, .peer = peer, .impl = impl};
    pthread_mutex_init(&b.mu, NULL);
    if (nthreads <= 1) {
        build_worker(&b);
    } else {
        pthread_t *tids = calloc(nthreads, sizeof *tids);
        size_t started = 0;
        if (tids == NULL) {
            pthread_mutex_destroy(&b.mu);
            bench_fail("out of memory");
            return 1;
        }
        for (; started < nthreads; started++) {
            int rc = pthread_create(&tids[started], NULL, build_worker, &b);
            if (rc != 0) {
                bench_fail("pthread_create: %s", strerror(rc));
                __atomic_store_n(&b.failed, 1, __ATOMIC_RELAXED);
                snprintf(b.err, sizeof b.err, "could not start build thread");
                break;
            }
        }
        for (size_t t = 0; t < started; t++)
            pthread_join(tids[t], NULL);
        free(tids);
    }
    pthread_mutex_destroy(&b.mu);
    if (b.failed) {
        bench_fail("%s build: %s", peer ? "hnswlib" : "vectron", b.err);
        return 1;
    }
    return 0;
}

/* ---- query passes ---------------------------------------------------------- */

typedef struct pass_shared {
    bench_system *sys;
    const float *queries;
    size_t dim;
    uint64_t *labels; /* nq * k, UINT64_MAX where fewer than k were found */
    double *lat_us;   /* nq */
    int failed;       /* atomic */
    pthread_mutex_t mu;
    char err[VX_ERRMSG_LEN];
} pass_shared;

typedef struct pass_slice {
    pass_shared *p;
    size_t lo, hi;
} pass_slice;

static void *pass_worker(void *arg)
{
    pass_slice *sl = arg;
    pass_shared *p = sl->p;
    bench_system *s = p->sys;
    const size_t k = s->k, dim = p->dim;
    char err[VX_ERRMSG_LEN];
    void *scratch = s->scratch_bytes ? malloc(s->scratch_bytes) : NULL;
    if (s->scratch_bytes && scratch == NULL) {
        snprintf(err, sizeof err, "out of memory");
        goto failed;
    }
    for (size_t i = sl->lo; i < sl->hi; i++) {
        uint64_t *out = p->labels + i * k;
        double t0 = bench_now_s();
        int n = s->search(s, p->queries + i * dim, out, scratch, err);
        double t1 = bench_now_s();
        if (n < 0) goto failed;
        for (size_t j = (size_t)n; j < k; j++)
            out[j] = UINT64_MAX;
        p->lat_us[i] = (t1 - t0) * 1e6;
    }
    free(scratch);
    return NULL;

failed:
    free(scratch);
    pthread_mutex_lock(&p->mu);
    if (!p->failed) {
        snprintf(p->err, sizeof p->err, "%s", err);
        __atomic_store_n(&p->failed, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

double bench_run_pass(bench_system *s, const float *queries, size_t dim, size_t nq, size_t nthreads,
                      uint64_t *labels, double *lat_us)
{
    pass_shared p = {.sys = s, .queries = queries, .dim = dim, .labels = labels, .lat_us = lat_us};
    pass_slice slices[BENCH_MAX_THREADS];
    pthread_t tids[BENCH_MAX_THREADS];
    size_t started = 0;
    double t0, t1;

    if (nthreads < 1) nthreads = 1;
    if (nthreads > BENCH_MAX_THREADS) {
        bench_fail("%s search: at most %d threads", s->name, BENCH_MAX_THREADS);
        return -1;
    }
    pthread_mutex_init(&p.mu, NULL);
    for (size_t t = 0; t < nthreads; t++) {
        slices[t].p = &p;
        slices[t].lo = nq * t / nthreads;
        slices[t].hi = nq * (t + 1) / nthreads;
    }
    t0 = bench_now_s();
    if (nthreads == 1) {
        pass_worker(&slices[0]);
    } else {
        for (; started < nthreads; started++) {
            int rc = pthread_create(&tids[started], NULL, pass_worker, &slices[started]);
            if (rc != 0) {
                snprintf(p.err, sizeof p.err, "pthread_create: %s", strerror(rc));
                p.failed = 1;
                break;
            }
        }
        for (size_t t = 0; t < started; t++)
            pthread_join(tids[t], NULL);
    }
    t1 = bench_now_s();
    pthread_mutex_destroy(&p.mu);
    if (p.failed) {
        bench_fail("%s search: %s", s->name, p.err);
        return -1;
    }
    return t1 - t0;
}
