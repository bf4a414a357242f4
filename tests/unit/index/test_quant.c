/*
 * test_quant.c - the scalar quantizer (quant.h): the code-distance formula
 * against exact float distances, quantile clipping, drift detection, and
 * an index whose data drifts away from its trained ranges and is retrained.
 *
 * Code distances are computed exactly as the graph computes them:
 *   d = aux(x) + qconst + qmul * dot_u8s8(code_x, qshift)
 * with aux from vx_quant_encode, (qshift, qconst, qmul) from
 * vx_quant_query_from_code and the dispatched dot_u8s8 kernel; d * scale^2
 * is then the squared L2 (or -dot) in float units.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "index/distance.h"
#include "index/index.h"
#include "index/quant.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A quantizer with every field zeroed (lo == NULL), ready for train. */
static vx_quantizer quant_zero(void)
{
    vx_quantizer qz;
    memset(&qz, 0, sizeof qz);
    return qz;
}

/* A stored vector: its code and aux term. */
typedef struct coded {
    uint8_t *code;
    float aux;
} coded;

static coded *encode_all(vx_quantizer *qz, const float *x, size_t n)
{
    coded *c = calloc(n, sizeof *c);
    assert_non_null(c);
    for (size_t i = 0; i < n; i++) {
        c[i].code = malloc(qz->dim);
        assert_non_null(c[i].code);
        c[i].aux = vx_quant_encode(qz, x + i * qz->dim, c[i].code, false);
    }
    return c;
}

static void free_coded(coded *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(c[i].code);
    free(c);
}

/* The code distance between stored vector x and query q (both encoded), in
 * code units, through the formula the graph uses.  Summed in double so the
 * test measures the formula, not float rounding of the final additions. */
static double code_dist(const vx_quantizer *qz, const coded *x, const coded *q, int8_t *qshift)
{
    float qconst, qmul;
    vx_quant_query_from_code(qz, q->code, qshift, &qconst, &qmul);
    int32_t dp = vx_kern.dot_u8s8(x->code, qshift, qz->dim);
    return (double)x->aux + (double)qconst + (double)qmul * (double)dp;
}

static double exact_l2(const float *a, const float *b, uint32_t dim)
{
    double s = 0;
    for (uint32_t d = 0; d < dim; d++) {
        double t = (double)a[d] - b[d];
        s += t * t;
    }
    return s;
}

static double exact_dot(const float *a, const float *b, uint32_t dim)
{
    double s = 0;
    for (uint32_t d = 0; d < dim; d++)
        s += (double)a[d] * b[d];
    return s;
}

/* (a) 8-bit integer data, quantile 0: scale is exactly 1 and L2 on codes is
 * exactly L2 on floats. */
static void test_l2_lossless_on_8bit_data(void **state)
{
    vx_kernels_init();
    const uint32_t dim = 64;
    const size_t n = 300;
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(11));
    float *x = malloc(n * dim * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) {
        for (uint32_t d = 0; d < dim; d++) {
            /* dimension d takes values in [off, off + width]: different
             * offsets and ranges, dimension 0 spans the full 0..255 */
            uint32_t off = d == 0 ? 0 : (uint32_t)(d * 3 % 100);
            uint32_t width = d == 0 ? 255 : 255 - off - (d % 7) * 10;
            x[i * dim + d] = (float)(off + vx_rng_below(&rng, width + 1));
        }
    }
    x[0] = 0.0f; /* make sure dimension 0 hits both ends */
    x[dim] = 255.0f;

    vx_quantizer qz = quant_zero();
    assert_int_equal(vx_quant_train(&qz, dim, false, 0.0f, x, n), 0);
    fprintf(stderr, "8-bit data: scale=%g (isa %s)\n", (double)qz.scale, vx_kern.name);
    assert_true(fabsf(qz.scale - 1.0f) < 1e-6f);

    coded *c = encode_all(&qz, x, n);
    int8_t *qshift = malloc(dim);
    assert_non_null(qshift);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j += 7) {
            double got = code_dist(&qz, &c[i], &c[j], qshift) * qz.scale * qz.scale;
            double want = exact_l2(x + i * dim, x + j * dim, dim);
            double rel = fabs(got - want) / (want > 1.0 ? want : 1.0);
            if (rel > worst) worst = rel;
            assert_true(rel <= 1e-3);
        }
    }
    fprintf(stderr, "8-bit data: worst relative L2 error %.3g\n", worst);
    free(qshift);
    free_coded(c, n);
    vx_quant_close(&qz);
    free(x);
}

/* (b) IP: symmetric, and ranks like the true dot product. */
static void test_ip_symmetric_and_ranks(void **state)
{
    vx_kernels_init();
    const uint32_t dim = 32;
    const size_t n = 2000, nq = 50, k = 10;
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(11) ^ 0x1b);
    float *x = malloc((n + nq) * dim * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < (n + nq) * dim; i++)
        x[i] = vx_rng_normal(&rng);
    const float *qv = x + n * dim;

    vx_quantizer qz = quant_zero();
    assert_int_equal(vx_quant_train(&qz, dim, true, 0.0f, x, n), 0);
    coded *c = encode_all(&qz, x, n + nq);
    int8_t *qshift = malloc(dim);
    assert_non_null(qshift);

    /* symmetry: d(x, q) == d(q, x) */
    double worst_sym = 0;
    for (size_t i = 0; i < 200; i++) {
        size_t a = vx_rng_below(&rng, n), b = vx_rng_below(&rng, n);
        double ab = code_dist(&qz, &c[a], &c[b], qshift);
        double ba = code_dist(&qz, &c[b], &c[a], qshift);
        /* aux and qconst are float32 terms of ~1e5 code units whose sum
         * cancels down to ~1e3: judge the asymmetry against the terms */
        double mag = fmax(fabs(ab), fmax(fabs(c[a].aux), fabs(c[b].aux)));
        double rel = fabs(ab - ba) / (mag > 1.0 ? mag : 1.0);
        if (rel > worst_sym) worst_sym = rel;
        assert_true(rel <= 1e-6);
        /* and in float units it is -dot up to the rounding of each
         * component by at most s/2: |err| <= s/2 (|x|_1 + |q|_1) + dim s^2/4 */
        double f = ab * qz.scale * qz.scale;
        double want = -exact_dot(x + a * dim, x + b * dim, dim);
        double l1 = 0, s2 = (double)qz.scale;
        for (uint32_t d = 0; d < dim; d++)
            l1 += fabs(x[a * dim + d]) + fabs(x[b * dim + d]);
        assert_true(fabs(f - want) <= 0.5 * s2 * l1 + dim * s2 * s2 + 1e-3);
    }

    /* ranking: top-k by code distance vs. top-k by true dot product */
    double *dc = malloc(n * sizeof(double)), *dt = malloc(n * sizeof(double));
    size_t *ic = malloc(k * sizeof(size_t)), *it = malloc(k * sizeof(size_t));
    assert_true(dc && dt && ic && it);
    size_t overlap_sum = 0, overlap_min = k;
    for (size_t q = 0; q < nq; q++) {
        for (size_t i = 0; i < n; i++) {
            dc[i] = code_dist(&qz, &c[i], &c[n + q], qshift);
            dt[i] = -exact_dot(x + i * dim, qv + q * dim, dim);
        }
        /* k smallest by selection (n is small) */
        for (int pass = 0; pass < 2; pass++) {
            double *dd = pass ? dt : dc;
            size_t *out = pass ? it : ic;
            for (size_t j = 0; j < k; j++) {
                size_t best = SIZE_MAX;
                for (size_t i = 0; i < n; i++) {
                    bool taken = false;
                    for (size_t t = 0; t < j; t++)
                        taken |= out[t] == i;
                    if (!taken && (best == SIZE_MAX || dd[i] < dd[best])) best = i;
                }
                out[j] = best;
            }
        }
        size_t ov = 0;
        for (size_t a = 0; a < k; a++)
            for (size_t b = 0; b < k; b++)
                ov += ic[a] == it[b];
        overlap_sum += ov;
        if (ov < overlap_min) overlap_min = ov;
    }
    double mean = (double)overlap_sum / (double)nq;
    fprintf(stderr,
            "IP: worst asymmetry %.3g of the terms, top-%zu overlap mean %.2f min %zu (scale %g)\n",
            worst_sym, k, mean, overlap_min, (double)qz.scale);
    assert_true(mean >= 8.0);

    free(dc);
    free(dt);
    free(ic);
    free(it);
    free(qshift);
    free_coded(c, n + nq);
    vx_quant_close(&qz);
    free(x);
}

/* (c) A few huge outliers: quantile clipping keeps the scale small, and the
 * outliers themselves clamp to 0 / 255. */
static void test_quantile_clipping(void **state)
{
    const uint32_t dim = 16;
    const size_t n = 1000;
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(11) ^ 0x2c);
    float *x = malloc(n * dim * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n * dim; i++)
        x[i] = vx_rng_normal(&rng);
    /* 3 outlier vectors (0.3 % of the sample) */
    for (uint32_t d = 0; d < dim; d++) {
        x[10 * dim + d] = 1.0e4f;
        x[500 * dim + d] = -1.0e4f;
        x[999 * dim + d] = (d & 1) ? 5.0e3f : -5.0e3f;
    }
    vx_quantizer q0 = quant_zero(), q1 = quant_zero();
    assert_int_equal(vx_quant_train(&q0, dim, false, 0.0f, x, n), 0);
    assert_int_equal(vx_quant_train(&q1, dim, false, 0.01f, x, n), 0);
    fprintf(stderr, "clipping: scale q=0 %g, q=0.01 %g (ratio %.1f)\n", (double)q0.scale,
            (double)q1.scale, (double)(q0.scale / q1.scale));
    assert_true(q1.scale * 100.0f < q0.scale);
    /* with q=0.01 the range is about [-2.3, 2.3] sigma of N(0,1) */
    assert_true(q1.scale * 255.0f > 3.0f && q1.scale * 255.0f < 7.0f);

    uint8_t code[16];
    uint64_t enc0 = atomic_load(&q1.encoded), clip0 = atomic_load(&q1.clipped);
    vx_quant_encode(&q1, x + 10 * dim, code, true);
    for (uint32_t d = 0; d < dim; d++)
        assert_int_equal(code[d], 255);
    vx_quant_encode(&q1, x + 500 * dim, code, true);
    for (uint32_t d = 0; d < dim; d++)
        assert_int_equal(code[d], 0);
    vx_quant_encode(&q1, x + 999 * dim, code, true);
    for (uint32_t d = 0; d < dim; d++)
        assert_int_equal(code[d], (d & 1) ? 255 : 0);
    assert_int_equal(atomic_load(&q1.encoded) - enc0, 3 * dim);
    assert_int_equal(atomic_load(&q1.clipped) - clip0, 3 * dim);
    /* the unclipped quantizer keeps the bulk in a handful of codes */
    vx_quant_encode(&q0, x, code, false);
    int lo = 255, hi = 0;
    for (uint32_t d = 0; d < dim; d++) {
        if (code[d] < lo) lo = code[d];
        if (code[d] > hi) hi = code[d];
    }
    fprintf(stderr, "clipping: q=0 codes of an ordinary vector span %d..%d\n", lo, hi);
    assert_true(hi - lo <= 2);
    vx_quant_close(&q0);
    vx_quant_close(&q1);
    free(x);
}

/* Values whose code would exceed the int range (|x - lo| / s >= 2^31) must
 * still clamp to 0 / 255 and count as clipped: the float must be clamped
 * before it is converted, or the conversion wraps (x86 cvtss2si gives
 * 0x80000000 for out-of-range values). */
static void test_encode_clamps_extremes(void **state)
{
    vx_quantizer qz = quant_zero();
    const float sample[4] = {0.0f, 0.0f, 1.0f, 1.0f}; /* lo = 0, s = 1/255 */
    assert_int_equal(vx_quant_train(&qz, 2, false, 0.0f, sample, 2), 0);
    const float xs[] = {2.0f, 1.0e7f, 3.0e38f, -1.0e7f, -3.0e38f};
    const uint8_t want[] = {255, 255, 255, 0, 0};
    int wrong = 0;
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        float x[2] = {xs[i], 0.5f};
        uint8_t code[2];
        vx_quant_encode(&qz, x, code, true);
        fprintf(stderr, "extremes: x=%g -> code %u (want %u)\n", (double)xs[i], code[0], want[i]);
        wrong += code[0] != want[i];
    }
    fprintf(stderr, "extremes: clipped %llu of 5 out-of-range components\n",
            (unsigned long long)atomic_load(&qz.clipped));
    uint64_t clipped = atomic_load(&qz.clipped);
    vx_quant_close(&qz);
    assert_int_equal(wrong, 0);
    assert_int_equal(clipped, 5);
}

/* (d) Drift: in-range data does not trip the detector, shifted data does,
 * and encoding with count=false never touches the counters. */
static void test_drift_detection(void **state)
{
    const uint32_t dim = 24;
    const size_t n = 500;
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(11) ^ 0x3d);
    float *x = malloc(n * dim * sizeof(float));
    float *far = malloc(n * dim * sizeof(float));
    assert_true(x && far);
    for (size_t i = 0; i < n * dim; i++) {
        x[i] = vx_rng_normal(&rng);
        far[i] = vx_rng_normal(&rng) + 50.0f;
    }
    vx_quantizer qz = quant_zero();
    assert_int_equal(vx_quant_train(&qz, dim, false, 0.0f, x, n), 0);
    uint8_t code[24];
    assert_false(vx_quant_drifted(&qz)); /* nothing encoded yet */

    for (size_t i = 0; i < n; i++)
        vx_quant_encode(&qz, x + i * dim, code, true);
    fprintf(stderr, "drift: in-range encoded=%llu clipped=%llu drifted=%d\n",
            (unsigned long long)atomic_load(&qz.encoded),
            (unsigned long long)atomic_load(&qz.clipped), vx_quant_drifted(&qz));
    assert_int_equal(atomic_load(&qz.encoded), n * dim);
    assert_int_equal(atomic_load(&qz.clipped), 0);
    assert_false(vx_quant_drifted(&qz));

    /* count=false: the counters never move, whatever the data */
    uint64_t enc = atomic_load(&qz.encoded), clip = atomic_load(&qz.clipped);
    for (size_t i = 0; i < n; i++) {
        vx_quant_encode(&qz, far + i * dim, code, false);
        vx_quant_encode(&qz, x + i * dim, code, false);
    }
    assert_int_equal(atomic_load(&qz.encoded), enc);
    assert_int_equal(atomic_load(&qz.clipped), clip);
    assert_false(vx_quant_drifted(&qz));

    /* a trickle of far vectors (under 1 % of components) is tolerated... */
    vx_quant_encode(&qz, far, code, true);
    assert_false(vx_quant_drifted(&qz));
    /* ...a stream of them is not */
    for (size_t i = 0; i < n; i++)
        vx_quant_encode(&qz, far + i * dim, code, true);
    fprintf(stderr, "drift: after far data encoded=%llu clipped=%llu drifted=%d\n",
            (unsigned long long)atomic_load(&qz.encoded),
            (unsigned long long)atomic_load(&qz.clipped), vx_quant_drifted(&qz));
    assert_true(vx_quant_drifted(&qz));

    /* retraining resets the counters */
    assert_int_equal(vx_quant_train(&qz, dim, false, 0.0f, far, n), 0);
    assert_int_equal(atomic_load(&qz.encoded), 0);
    assert_int_equal(atomic_load(&qz.clipped), 0);
    assert_false(vx_quant_drifted(&qz));
    vx_quant_close(&qz);
    free(x);
    free(far);
}

/* (e) An INT8 index whose data drifts: needs_retrain, retrain, recall. */
#define E_DIM 16
#define E_TRAIN 500
#define E_SHIFTED 3000
#define E_NQ 100
#define E_K 10

static double recall_vs_exact(vx_index *idx, const float *queries, size_t nq)
{
    vx_search_params exact = {.exact = true}, graph = {.ef = 64};
    vx_hit want[E_K], got[E_K];
    size_t hit = 0, total = 0;
    for (size_t q = 0; q < nq; q++) {
        uint32_t nw, ng;
        assert_int_equal(vx_index_search(idx, queries + q * E_DIM, E_K, &exact, NULL, want, &nw),
                         0);
        assert_int_equal(vx_index_search(idx, queries + q * E_DIM, E_K, &graph, NULL, got, &ng), 0);
        assert_int_equal(nw, E_K);
        for (uint32_t i = 0; i < nw; i++) {
            total++;
            for (uint32_t j = 0; j < ng; j++) {
                if (got[j].label == want[i].label) {
                    hit++;
                    break;
                }
            }
        }
    }
    return (double)hit / (double)total;
}

static void test_index_drift_and_retrain(void **state)
{
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(11) ^ 0x4e);
    /* before: clustered data around the origin; after: the same kind of
     * data shifted by +12 in every dimension (far outside the trained
     * range, which is about [-12, 12] for these clusters) */
    float *before = vx_test_clustered(&rng, E_TRAIN, E_DIM, 10);
    float *after = vx_test_clustered(&rng, E_SHIFTED + E_NQ, E_DIM, 30);
    assert_true(before && after);
    for (size_t i = 0; i < (size_t)(E_SHIFTED + E_NQ) * E_DIM; i++)
        after[i] += 12.0f;
    const float *queries = after + (size_t)E_SHIFTED * E_DIM;

    vx_index_config cfg;
    vx_index_config_default(&cfg, E_DIM, VX_METRIC_L2);
    cfg.quant = VX_QUANT_INT8;
    cfg.train_size = E_TRAIN;
    cfg.ef_construction = 100;
    vx_index *idx;
    char err[VX_ERRMSG_LEN];
    assert_int_equal(vx_index_new(&cfg, &idx, err), 0);
    assert_int_equal(vx_index_retrain(idx, err), VX_ESTATE); /* not trained yet */
    for (size_t i = 0; i < E_TRAIN; i++)
        assert_int_equal(vx_index_add(idx, i, before + i * E_DIM, err), 0);
    vx_index_stats st;
    vx_index_get_stats(idx, &st);
    assert_true(st.trained);
    assert_false(vx_index_needs_retrain(idx));

    for (size_t i = 0; i < E_SHIFTED; i++)
        assert_int_equal(vx_index_add(idx, E_TRAIN + i, after + i * E_DIM, err), 0);
    bool needs = vx_index_needs_retrain(idx);
    double r_before = recall_vs_exact(idx, queries, E_NQ);
    fprintf(stderr, "drifted index: needs_retrain=%d recall@10 (shifted queries)=%.4f\n", needs,
            r_before);
    assert_true(needs);

    double t0 = vx_test_now();
    int rc = vx_index_retrain(idx, err);
    if (rc != 0) fprintf(stderr, "retrain: %s\n", err);
    assert_int_equal(rc, 0);
    double t1 = vx_test_now();
    assert_false(vx_index_needs_retrain(idx));
    vx_validate_report rep;
    rc = vx_index_validate(idx, &rep);
    if (rc != 0) fprintf(stderr, "validate: %s\n", rep.msg);
    assert_int_equal(rc, 0);
    double r_after = recall_vs_exact(idx, queries, E_NQ);
    fprintf(stderr, "retrained in %.3f s: needs_retrain=%d recall@10=%.4f unreachable=%llu\n",
            t1 - t0, vx_index_needs_retrain(idx), r_after, (unsigned long long)rep.unreachable);
    assert_true(r_after >= 0.9);

    /* further inserts from the shifted distribution do not trip it again */
    vx_rng_seed(&rng, vx_test_seed(11) ^ 0x5f);
    float *more = vx_test_clustered(&rng, 500, E_DIM, 30);
    assert_non_null(more);
    for (size_t i = 0; i < 500 * E_DIM; i++)
        more[i] += 12.0f;
    for (size_t i = 0; i < 500; i++)
        assert_int_equal(vx_index_add(idx, 100000 + i, more + i * E_DIM, err), 0);
    fprintf(stderr, "after 500 more shifted inserts: needs_retrain=%d\n",
            vx_index_needs_retrain(idx));
    assert_int_equal(vx_index_validate(idx, NULL), 0);

    /* NONE indexes have no quantizer */
    vx_index *flat;
    vx_index_config_default(&cfg, E_DIM, VX_METRIC_L2);
    assert_int_equal(vx_index_new(&cfg, &flat, err), 0);
    assert_false(vx_index_needs_retrain(flat));
    assert_int_equal(vx_index_retrain(flat, err), VX_ESTATE);
    vx_index_free(flat);

    free(more);
    vx_index_free(idx);
    free(before);
    free(after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l2_lossless_on_8bit_data),
        cmocka_unit_test(test_ip_symmetric_and_ranks),
        cmocka_unit_test(test_quantile_clipping),
        cmocka_unit_test(test_encode_clamps_extremes),
        cmocka_unit_test(test_drift_detection),
        cmocka_unit_test(test_index_drift_and_retrain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
