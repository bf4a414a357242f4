/*
 * test_churn.c - deletes, tombstones, vacuum and slot reuse.
 *
 * Rounds of "delete 30 % of the points, vacuum, re-insert them" must keep
 * recall@10 within 0.01 of a fresh build of the same data and memory within
 * 10 %; deleted points never appear in results, before or after vacuum; the
 * graph validates after every step.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "index/index.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 8000
#define NQ 300
#define DIM 48
#define K 10
#define EF 24
#define ROUNDS 3

typedef struct dataset {
    float *base, *queries;
    uint64_t *gt;
} dataset;

static void dataset_make(dataset *d, uint64_t seed)
{
    vx_rng rng;
    vx_rng_seed(&rng, seed);
    d->base = vx_test_clustered(&rng, N + NQ, DIM, 64);
    d->queries = d->base + (size_t)N * DIM;
    d->gt = vx_test_ground_truth(d->base, N, d->queries, NQ, DIM, 0, K);
}

static double recall_of(vx_index *idx, const dataset *d, const uint8_t *deleted)
{
    uint64_t *res = malloc(sizeof(uint64_t) * NQ * K);
    vx_hit hits[K];
    vx_search_params p = {.ef = EF};
    for (size_t q = 0; q < NQ; q++) {
        uint32_t n;
        assert_int_equal(vx_index_search(idx, d->queries + q * DIM, K, &p, NULL, hits, &n), 0);
        for (uint32_t i = 0; i < K; i++) {
            res[q * K + i] = i < n ? hits[i].label : UINT64_MAX;
            if (i < n && deleted != NULL) assert_false(deleted[hits[i].label]);
        }
    }
    double r = vx_test_recall(res, d->gt, NQ, K, K);
    free(res);
    return r;
}

static size_t index_bytes(vx_index *idx)
{
    vx_index_stats st;
    vx_index_get_stats(idx, &st);
    return st.graph_bytes + st.code_bytes + st.vector_bytes;
}

static vx_index *build(const dataset *d, vx_quant quant)
{
    vx_index_config cfg;
    vx_index_config_default(&cfg, DIM, VX_METRIC_L2);
    cfg.quant = quant;
    cfg.ef_construction = 100;
    cfg.train_size = 2000;
    vx_index *idx;
    assert_int_equal(vx_index_new(&cfg, &idx, NULL), 0);
    for (size_t i = 0; i < N; i++) assert_int_equal(vx_index_add(idx, i, d->base + i * DIM, NULL), 0);
    return idx;
}

static void churn(vx_quant quant)
{
    dataset d;
    uint64_t seed = vx_test_seed(11);
    dataset_make(&d, seed);
    vx_index *fresh = build(&d, quant);
    double r_fresh = recall_of(fresh, &d, NULL);
    size_t mem_fresh = index_bytes(fresh);
    vx_index_free(fresh);

    vx_index *idx = build(&d, quant);
    vx_rng rng;
    vx_rng_seed(&rng, seed ^ 0xc0ffee);
    uint8_t *deleted = calloc(N, 1);
    uint32_t *order = malloc(sizeof(uint32_t) * N);
    for (int round = 0; round < ROUNDS; round++) {
        for (uint32_t i = 0; i < N; i++) order[i] = i;
        for (uint32_t i = N - 1; i > 0; i--) {
            uint32_t j = (uint32_t)vx_rng_below(&rng, i + 1);
            uint32_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        const uint32_t ndel = N * 3 / 10;
        for (uint32_t i = 0; i < ndel; i++) {
            assert_int_equal(vx_index_delete(idx, order[i]), 0);
            deleted[order[i]] = 1;
        }
        assert_int_equal(vx_index_validate(idx, NULL), 0);
        /* tombstones: never returned */
        double r_tomb = recall_of(idx, &d, deleted);
        assert_true(vx_index_deleted_ratio(idx) > 0.29);
        assert_int_equal(vx_index_vacuum(idx), 0);
        vx_validate_report rep;
        int vrc = vx_index_validate(idx, &rep);
        if (vrc) fprintf(stderr, "validate after vacuum: %s\n", rep.msg);
        assert_int_equal(vrc, 0);
        recall_of(idx, &d, deleted); /* still never returned after vacuum */
        for (uint32_t i = 0; i < ndel; i++) {
            uint32_t l = order[i];
            assert_int_equal(vx_index_add(idx, l, d.base + (size_t)l * DIM, NULL), 0);
            deleted[l] = 0;
        }
        vrc = vx_index_validate(idx, &rep);
        if (vrc) fprintf(stderr, "validate after re-insert: %s\n", rep.msg);
        assert_int_equal(vrc, 0);
        double r = recall_of(idx, &d, NULL);
        size_t mem = index_bytes(idx);
        vx_index_stats st;
        vx_index_get_stats(idx, &st);
        fprintf(stderr,
                "quant=%d round=%d recall fresh=%.4f tombstoned=%.4f churned=%.4f "
                "mem fresh=%zu churned=%zu slots=%llu unreachable=%llu\n",
                quant, round, r_fresh, r_tomb, r, mem_fresh, mem,
                (unsigned long long)st.slots, (unsigned long long)rep.unreachable);
        assert_true(r >= r_fresh - 0.01);
        assert_true((double)mem <= (double)mem_fresh * 1.10);
        assert_int_equal(st.live, N);
        assert_int_equal(st.slots, N); /* every deleted slot was reused */
    }
    free(order);
    free(deleted);
    free(d.gt);
    free(d.base);
    vx_index_free(idx);
}

static void test_churn_float(void **state) { churn(VX_QUANT_NONE); }
static void test_churn_int8(void **state) { churn(VX_QUANT_INT8); }

/* Deleting everything, then the entry point, then refilling. */
static void test_delete_all_and_refill(void **state)
{
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(11) + 1);
    const size_t n = 500;
    float *base = vx_test_clustered(&rng, n, 8, 5);
    vx_index_config cfg;
    vx_index_config_default(&cfg, 8, VX_METRIC_L2);
    vx_index *idx;
    assert_int_equal(vx_index_new(&cfg, &idx, NULL), 0);
    for (size_t i = 0; i < n; i++) assert_int_equal(vx_index_add(idx, i, base + i * 8, NULL), 0);
    for (size_t i = 0; i < n; i++) assert_int_equal(vx_index_delete(idx, i), 0);
    vx_hit hits[5];
    uint32_t got;
    assert_int_equal(vx_index_search(idx, base, 5, NULL, NULL, hits, &got), 0);
    assert_int_equal(got, 0);
    assert_int_equal(vx_index_vacuum(idx), 0);
    assert_int_equal(vx_index_validate(idx, NULL), 0);
    for (size_t i = 0; i < n; i++) assert_int_equal(vx_index_add(idx, i + n, base + i * 8, NULL), 0);
    assert_int_equal(vx_index_validate(idx, NULL), 0);
    assert_int_equal(vx_index_search(idx, base, 5, NULL, NULL, hits, &got), 0);
    assert_int_equal(got, 5);
    assert_int_equal(hits[0].label, n);
    vx_index_stats st;
    vx_index_get_stats(idx, &st);
    assert_int_equal(st.slots, n);
    vx_index_free(idx);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delete_all_and_refill),
        cmocka_unit_test(test_churn_float),
        cmocka_unit_test(test_churn_int8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
