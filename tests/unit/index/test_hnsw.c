/*
 * test_hnsw.c - recall of the HNSW index for every metric x storage mode,
 * against exact ground truth, plus the basic API contract.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "index/index.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 6000
#define NQ 200
#define DIM 32
#define K 10

static double run_recall(vx_metric metric, vx_quant quant, uint32_t ef, int *validated)
{
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(7) + metric * 31 + quant);
    float *base = vx_test_clustered(&rng, N + NQ, DIM, 40);
    float *queries = base + (size_t)N * DIM;
    uint64_t *gt = vx_test_ground_truth(base, N, queries, NQ, DIM, (int)metric, K);

    vx_index_config cfg;
    vx_index_config_default(&cfg, DIM, metric);
    cfg.quant = quant;
    cfg.train_size = 1000; /* exercises the flat phase and the build after training */
    cfg.ef_construction = 100;
    vx_index *idx;
    char err[VX_ERRMSG_LEN];
    assert_int_equal(vx_index_new(&cfg, &idx, err), 0);
    for (size_t i = 0; i < N; i++) assert_int_equal(vx_index_add(idx, i, base + i * DIM, err), 0);
    vx_validate_report rep;
    int vrc = vx_index_validate(idx, &rep);
    if (vrc != 0) fprintf(stderr, "validate: %s\n", rep.msg);
    assert_int_equal(vrc, 0);
    *validated = 1;
    uint64_t *res = malloc(sizeof(uint64_t) * NQ * K);
    vx_hit hits[K];
    vx_search_params p = {.ef = ef};
    for (size_t q = 0; q < NQ; q++) {
        uint32_t n;
        assert_int_equal(vx_index_search(idx, queries + q * DIM, K, &p, NULL, hits, &n), 0);
        assert_int_equal(n, K);
        for (uint32_t i = 0; i < K; i++) {
            res[q * K + i] = hits[i].label;
            if (i) assert_true(hits[i - 1].distance <= hits[i].distance);
        }
    }
    double r = vx_test_recall(res, gt, NQ, K, K);
    fprintf(stderr, "metric=%d quant=%d ef=%u recall@10=%.4f unreachable=%llu\n", metric, quant,
            ef, r, (unsigned long long)rep.unreachable);
    free(res);
    free(gt);
    free(base);
    vx_index_free(idx);
    return r;
}

static void test_recall_matrix(void **state)
{
    for (int m = VX_METRIC_L2; m <= VX_METRIC_COSINE; m++) {
        for (int q = VX_QUANT_NONE; q <= VX_QUANT_INT8; q++) {
            int validated = 0;
            double r = run_recall((vx_metric)m, (vx_quant)q, 64, &validated);
            assert_true(validated);
            assert_true(r >= 0.95);
        }
    }
}

static void test_exact_matches_ground_truth(void **state)
{
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(7) ^ 0x55);
    const size_t n = 2000, nq = 20;
    float *base = vx_test_clustered(&rng, n + nq, DIM, 10);
    uint64_t *gt = vx_test_ground_truth(base, n, base + n * DIM, nq, DIM, VX_METRIC_L2, K);
    vx_index_config cfg;
    vx_index_config_default(&cfg, DIM, VX_METRIC_L2);
    cfg.quant = VX_QUANT_INT8;
    cfg.train_size = 500;
    vx_index *idx;
    assert_int_equal(vx_index_new(&cfg, &idx, NULL), 0);
    for (size_t i = 0; i < n; i++) assert_int_equal(vx_index_add(idx, i, base + i * DIM, NULL), 0);
    vx_search_params p = {.exact = true};
    vx_hit hits[K];
    for (size_t q = 0; q < nq; q++) {
        uint32_t got;
        assert_int_equal(vx_index_search(idx, base + (n + q) * DIM, K, &p, NULL, hits, &got), 0);
        assert_int_equal(got, K);
        for (int i = 0; i < K; i++) assert_int_equal(hits[i].label, gt[q * K + i]);
    }
    vx_index_free(idx);
    free(gt);
    free(base);
}

static void test_api_contract(void **state)
{
    vx_index_config cfg;
    vx_index *idx;
    char err[VX_ERRMSG_LEN];
    vx_index_config_default(&cfg, 0, VX_METRIC_L2);
    assert_int_equal(vx_index_new(&cfg, &idx, err), VX_EINVAL);
    assert_non_null(strstr(err, "dimension"));
    vx_index_config_default(&cfg, 4, VX_METRIC_L2);
    cfg.m = 1;
    assert_int_equal(vx_index_new(&cfg, &idx, err), VX_EINVAL);

    vx_index_config_default(&cfg, 4, VX_METRIC_COSINE);
    assert_int_equal(vx_index_new(&cfg, &idx, err), 0);
    float zero[4] = {0, 0, 0, 0}, nan4[4] = {1, NAN, 0, 0}, inf4[4] = {INFINITY, 0, 0, 0};
    assert_int_equal(vx_index_add(idx, 1, zero, err), VX_EINVAL);
    assert_int_equal(vx_index_add(idx, 1, nan4, err), VX_EINVAL);
    assert_int_equal(vx_index_add(idx, 1, inf4, err), VX_EINVAL);
    assert_false(vx_index_contains(idx, 1));

    float a[4] = {1, 0, 0, 0}, b[4] = {0, 2, 0, 0}, c[4] = {3, 3, 0, 0};
    assert_int_equal(vx_index_add(idx, 10, a, err), 0);
    assert_int_equal(vx_index_add(idx, 20, b, err), 0);
    assert_true(vx_index_contains(idx, 20));
    float got[4];
    assert_int_equal(vx_index_get_vector(idx, 20, got), 0);
    assert_true(fabsf(got[1] - 1.0f) < 1e-6f); /* normalized */
    /* replace label 20: the old vector must never come back */
    assert_int_equal(vx_index_add(idx, 20, c, err), 0);
    vx_hit hits[4];
    uint32_t n;
    float qb[4] = {0, 1, 0, 0};
    assert_int_equal(vx_index_search(idx, qb, 4, NULL, NULL, hits, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(hits[0].label, 20);
    assert_true(fabsf(hits[0].distance + (float)M_SQRT1_2) < 1e-5f);
    assert_int_equal(vx_index_delete(idx, 20), 0);
    assert_int_equal(vx_index_delete(idx, 20), VX_ENOTFOUND);
    assert_int_equal(vx_index_search(idx, qb, 4, NULL, NULL, hits, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(hits[0].label, 10);
    assert_int_equal(vx_index_search(idx, nan4, 4, NULL, NULL, hits, &n), VX_EINVAL);
    vx_index_stats st;
    vx_index_get_stats(idx, &st);
    assert_int_equal(st.live, 1);
    assert_int_equal(st.deleted, 2);
    assert_int_equal(vx_index_vacuum(idx), 0);
    vx_index_get_stats(idx, &st);
    assert_int_equal(st.deleted, 0);
    assert_int_equal(vx_index_validate(idx, NULL), 0);
    vx_index_free(idx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_contract),
        cmocka_unit_test(test_exact_matches_ground_truth),
        cmocka_unit_test(test_recall_matrix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
