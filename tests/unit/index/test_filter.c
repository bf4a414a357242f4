/*
 * test_filter.c - filtered search: results always match, recall against the
 * exact filtered answer, the choice between graph walk and exact scan.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "index/index.h"
#include "index/distance.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 20000
#define NQ 100
#define DIM 32
#define K 10

typedef struct modfilter {
    uint64_t mod, rem;
    uint64_t calls;
} modfilter;

static bool match_mod(void *ctx, uint64_t label)
{
    modfilter *f = ctx;
    __atomic_fetch_add(&f->calls, 1, __ATOMIC_RELAXED);
    return label % f->mod == f->rem;
}

static float *g_base;
static vx_index *g_idx[2];

static int setup(void **state)
{
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(5));
    g_base = vx_test_clustered(&rng, N + NQ, DIM, 50);
    for (int q = 0; q < 2; q++) {
        vx_index_config cfg;
        vx_index_config_default(&cfg, DIM, VX_METRIC_L2);
        cfg.quant = q ? VX_QUANT_INT8 : VX_QUANT_NONE;
        cfg.ef_construction = 100;
        cfg.train_size = 2000;
        if (vx_index_new(&cfg, &g_idx[q], NULL) != 0) return -1;
        for (size_t i = 0; i < N; i++)
            if (vx_index_add(g_idx[q], i, g_base + i * DIM, NULL) != 0) return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    vx_index_free(g_idx[0]);
    vx_index_free(g_idx[1]);
    free(g_base);
    return 0;
}

/* Exact filtered top-K by brute force with the reference kernel. */
static void exact_filtered(const float *q, modfilter *f, uint64_t *out)
{
    float best[K];
    for (int i = 0; i < K; i++) {
        best[i] = 1e30f;
        out[i] = UINT64_MAX;
    }
    for (uint64_t i = 0; i < N; i++) {
        if (i % f->mod != f->rem) continue;
        float d = vx_l2sq_f32_ref(q, g_base + i * DIM, DIM);
        if (d >= best[K - 1]) continue;
        int j = K - 1;
        while (j > 0 && best[j - 1] > d) {
            best[j] = best[j - 1];
            out[j] = out[j - 1];
            j--;
        }
        best[j] = d;
        out[j] = i;
    }
}

static double filtered_recall(vx_index *idx, uint64_t mod, const vx_search_params *p,
                              double selectivity, uint64_t *calls)
{
    modfilter f = {.mod = mod, .rem = 7 % mod};
    vx_filter flt = {.match = match_mod, .ctx = &f, .selectivity = selectivity};
    uint64_t *res = malloc(sizeof(uint64_t) * NQ * K), *gt = malloc(sizeof(uint64_t) * NQ * K);
    vx_hit hits[K];
    for (size_t q = 0; q < NQ; q++) {
        const float *qv = g_base + (N + q) * DIM;
        exact_filtered(qv, &f, gt + q * K);
        uint32_t n;
        assert_int_equal(vx_index_search(idx, qv, K, p, &flt, hits, &n), 0);
        for (uint32_t i = 0; i < K; i++) {
            res[q * K + i] = i < n ? hits[i].label : UINT64_MAX;
            if (i < n) assert_int_equal(hits[i].label % mod, f.rem); /* always matches */
        }
    }
    double r = vx_test_recall(res, gt, NQ, K, K);
    free(res);
    free(gt);
    if (calls) *calls = f.calls;
    return r;
}

static void test_selective_filter_uses_scan(void **state)
{
    for (int q = 0; q < 2; q++) {
        uint64_t calls;
        vx_search_params p = {.ef = 64};
        /* 1 % match: the estimate picks the exact scan, recall is 1 */
        double r = filtered_recall(g_idx[q], 100, &p, -1.0, &calls);
        fprintf(stderr, "quant=%d 1%% filter, auto: recall=%.4f predicate calls/query=%.0f\n", q,
                r, (double)calls / NQ);
        assert_true(r >= 0.999);
        /* forced graph walk with 1 % matching still finds them (ef large) */
        vx_search_params walk = {.ef = 200, .exact_below_selectivity = 1e-9};
        r = filtered_recall(g_idx[q], 100, &walk, -1.0, &calls);
        fprintf(stderr, "quant=%d 1%% filter, graph walk ef=200: recall=%.4f calls/query=%.0f\n",
                q, r, (double)calls / NQ);
        assert_true(r >= 0.95);
    }
}

static void test_broad_filter_walks_graph(void **state)
{
    for (int q = 0; q < 2; q++) {
        uint64_t calls;
        vx_search_params p = {.ef = 64};
        double r = filtered_recall(g_idx[q], 10, &p, -1.0, &calls); /* 10 %, auto */
        fprintf(stderr, "quant=%d 10%% filter, auto: recall=%.4f predicate calls/query=%.0f\n",
                q, r, (double)calls / NQ);
        assert_true(r >= 0.95);
        vx_search_params walk = {.ef = 64, .exact_below_selectivity = 1e-9};
        r = filtered_recall(g_idx[q], 10, &walk, -1.0, &calls);
        fprintf(stderr, "quant=%d 10%% filter, walk: recall=%.4f predicate calls/query=%.0f\n",
                q, r, (double)calls / NQ);
        assert_true(r >= 0.95);
        /* a graph walk touches far fewer points than a scan (N calls) */
        assert_true((double)calls / NQ < N / 2);
        r = filtered_recall(g_idx[q], 2, &p, 0.5, &calls); /* 50 %, caller's estimate */
        fprintf(stderr, "quant=%d 50%% filter: recall=%.4f\n", q, r);
        assert_true(r >= 0.95);
    }
}

static bool match_none(void *ctx, uint64_t label) { return false; }

static void test_filter_matching_nothing(void **state)
{
    vx_filter flt = {.match = match_none, .selectivity = -1.0};
    vx_hit hits[K];
    uint32_t n = 99;
    assert_int_equal(vx_index_search(g_idx[0], g_base, K, NULL, &flt, hits, &n), 0);
    assert_int_equal(n, 0);
    vx_search_params walk = {.ef = 32, .exact_below_selectivity = 1e-9};
    assert_int_equal(vx_index_search(g_idx[1], g_base, K, &walk, &flt, hits, &n), 0);
    assert_int_equal(n, 0);
    vx_filter bad = {.match = NULL};
    assert_int_equal(vx_index_search(g_idx[0], g_base, K, NULL, &bad, hits, &n), VX_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selective_filter_uses_scan),
        cmocka_unit_test(test_broad_filter_walks_graph),
        cmocka_unit_test(test_filter_matching_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
