/*
 * test_concurrency.c - adds, replaces, deletes, searches, vacuum, retrain and
 * save running at the same time; built and run under TSan by the test
 * command (ctest label "tsan").  Afterwards the graph validates and the
 * index answers like a fresh one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "index/index.h"
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 3000
#define DIM 16
#define K 5
#define WRITERS 2
#define SEARCHERS 2

typedef struct shared {
    vx_index *idx;
    float *data;
    _Atomic uint32_t progress[WRITERS]; /* labels written so far by each writer */
    _Atomic bool stop;
    _Atomic uint64_t searches;
    _Atomic int failures;
} shared;

typedef struct warg {
    shared *sh;
    int id;
} warg;

static void *writer(void *p)
{
    warg *a = p;
    shared *sh = a->sh;
    for (uint32_t i = a->id; i < N; i += WRITERS) {
        if (vx_index_add(sh->idx, i, sh->data + (size_t)i * DIM, NULL) != 0) sh->failures++;
        /* every 7th point is replaced right away by the same vector (update) */
        if (i % 7 == 0 && vx_index_add(sh->idx, i, sh->data + (size_t)i * DIM, NULL) != 0)
            sh->failures++;
        atomic_store(&sh->progress[a->id], i + 1);
    }
    return NULL;
}

/* Deletes every label == 3 mod 10 once its writer has written it. */
static void *deleter(void *p)
{
    shared *sh = p;
    uint32_t next = 3;
    while (next < N) {
        int w = next % WRITERS;
        if (atomic_load(&sh->progress[w]) > next) {
            if (vx_index_delete(sh->idx, next) != 0) sh->failures++;
            next += 10;
        } else {
            sched_yield();
        }
    }
    return NULL;
}

static void *searcher(void *p)
{
    shared *sh = p;
    vx_rng rng;
    vx_rng_seed(&rng, (uint64_t)(uintptr_t)p ^ 99);
    vx_hit hits[K];
    while (!atomic_load(&sh->stop)) {
        const float *q = sh->data + vx_rng_below(&rng, N) * DIM;
        uint32_t n;
        vx_search_params sp = {.ef = 32};
        if (vx_index_search(sh->idx, q, K, &sp, NULL, hits, &n) != 0) sh->failures++;
        for (uint32_t i = 0; i < n; i++) {
            if (hits[i].label >= N) sh->failures++;
            if (i && hits[i - 1].distance > hits[i].distance) sh->failures++;
        }
        atomic_fetch_add(&sh->searches, 1);
    }
    return NULL;
}

static void start_searchers(shared *sh, pthread_t *th)
{
    atomic_store(&sh->stop, false);
    for (int i = 0; i < SEARCHERS; i++) pthread_create(&th[i], NULL, searcher, sh);
}

static void stop_searchers(shared *sh, pthread_t *th)
{
    /* let them overlap with the operation for a bounded number of queries */
    uint64_t until = atomic_load(&sh->searches) + 50;
    while (atomic_load(&sh->searches) < until) sched_yield();
    atomic_store(&sh->stop, true);
    for (int i = 0; i < SEARCHERS; i++) pthread_join(th[i], NULL);
}

static void run(vx_quant quant)
{
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(3) + quant);
    shared sh;
    memset(&sh, 0, sizeof sh);
    sh.data = vx_test_clustered(&rng, N, DIM, 20);
    vx_index_config cfg;
    vx_index_config_default(&cfg, DIM, VX_METRIC_L2);
    cfg.quant = quant;
    cfg.ef_construction = 64;
    cfg.train_size = 400; /* training happens in the middle of the concurrent adds */
    assert_int_equal(vx_index_new(&cfg, &sh.idx, NULL), 0);

    pthread_t w[WRITERS], s[SEARCHERS], d;
    warg wa[WRITERS];
    start_searchers(&sh, s);
    for (int i = 0; i < WRITERS; i++) {
        wa[i] = (warg){&sh, i};
        pthread_create(&w[i], NULL, writer, &wa[i]);
    }
    pthread_create(&d, NULL, deleter, &sh);
    for (int i = 0; i < WRITERS; i++) pthread_join(w[i], NULL);
    pthread_join(d, NULL);
    stop_searchers(&sh, s);
    assert_int_equal(sh.failures, 0);
    vx_validate_report rep;
    assert_int_equal(vx_index_validate(&*sh.idx, &rep), 0);

    /* vacuum while searching */
    start_searchers(&sh, s);
    assert_int_equal(vx_index_vacuum(sh.idx), 0);
    stop_searchers(&sh, s);

    /* save and retrain while searching */
    char dir[] = "/tmp/vx_conc_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/idx", dir);
    start_searchers(&sh, s);
    char err[VX_ERRMSG_LEN];
    assert_int_equal(vx_index_save(sh.idx, path, err), 0);
    if (quant == VX_QUANT_INT8) assert_int_equal(vx_index_retrain(sh.idx, err), 0);
    stop_searchers(&sh, s);
    unlink(path);
    rmdir(dir);
    assert_int_equal(sh.failures, 0);
    int vrc = vx_index_validate(sh.idx, &rep);
    if (vrc) fprintf(stderr, "validate: %s\n", rep.msg);
    assert_int_equal(vrc, 0);

    vx_index_stats st;
    vx_index_get_stats(sh.idx, &st);
    assert_int_equal(st.live, N - N / 10);
    for (uint32_t i = 0; i < N; i++) assert_int_equal(vx_index_contains(sh.idx, i), i % 10 != 3);
    /* every live point finds itself */
    uint32_t self = 0;
    for (uint32_t i = 0; i < N; i += 10) {
        vx_hit h[1];
        uint32_t n;
        assert_int_equal(vx_index_search(sh.idx, sh.data + (size_t)i * DIM, 1, NULL, NULL, h, &n), 0);
        self += n == 1 && h[0].label == i;
    }
    fprintf(stderr, "quant=%d searches=%llu self-recall=%u/%u slots=%llu\n", quant,
            (unsigned long long)sh.searches, self, N / 10, (unsigned long long)st.slots);
    assert_true(self >= (N / 10) * 95 / 100);
    vx_index_free(sh.idx);
    free(sh.data);
}

static void test_concurrent_float(void **state) { run(VX_QUANT_NONE); }
static void test_concurrent_int8(void **state) { run(VX_QUANT_INT8); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_float),
        cmocka_unit_test(test_concurrent_int8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
