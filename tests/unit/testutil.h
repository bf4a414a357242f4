/*
 * testutil.h - helpers shared by the unit tests.
 *
 * Every test that uses randomness takes its seed from vx_test_seed(): the
 * VX_SEED environment variable when set, else a fixed default; the seed is
 * printed once so a failing run can be reproduced with VX_SEED=<seed>.
 */
#ifndef VX_TESTUTIL_H
#define VX_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* splitmix64-seeded xoshiro256** generator: deterministic across platforms. */
typedef struct vx_rng {
    uint64_t s[4];
} vx_rng;

void vx_rng_seed(vx_rng *r, uint64_t seed);
uint64_t vx_rng_next(vx_rng *r);
double vx_rng_uniform(vx_rng *r);            /* [0, 1) */
float vx_rng_normal(vx_rng *r);              /* N(0, 1) */
uint64_t vx_rng_below(vx_rng *r, uint64_t n); /* [0, n) */

/* The run's seed (VX_SEED or default_seed), printed to stderr on first use. */
uint64_t vx_test_seed(uint64_t default_seed);

/* n*dim floats: a mixture of `clusters` Gaussian blobs (realistic ANN data,
 * harder than uniform noise).  Caller frees. */
float *vx_test_clustered(vx_rng *r, size_t n, size_t dim, size_t clusters);

/* Ground truth by exhaustive search with the reference kernels: for each
 * query the k nearest labels (base row numbers) under metric (0=L2, 1=IP,
 * 2=cosine).  Caller frees (nq*k). */
uint64_t *vx_test_ground_truth(const float *base, size_t n, const float *queries, size_t nq,
                               size_t dim, int metric, size_t k);

/* Mean recall@k of results (nq*k labels, UINT64_MAX for missing) against
 * gt (nq*gt_k, first k used). */
double vx_test_recall(const uint64_t *results, const uint64_t *gt, size_t nq, size_t k,
                      size_t gt_k);

/* Monotonic seconds. */
double vx_test_now(void);

/* Directory of the SIFT data (VX_DATA_DIR/sift100k), or NULL when absent. */
const char *vx_test_sift_dir(void);

#endif
