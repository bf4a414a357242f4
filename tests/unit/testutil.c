/*
 * testutil.c - randomness, synthetic data, exact ground truth and timing for
 * the unit tests (see testutil.h).
 *
 * Randomness is xoshiro256** (Blackman & Vigna) seeded through splitmix64, so
 * a seed names the same stream on every platform and compiler; normals use
 * Box-Muller on that stream (one normal per call, the second is discarded so
 * the generator state stays the whole state).  Nothing here reads the clock
 * or the process id for randomness: the only entropy is the printed seed.
 *
 * Ground truth is exhaustive search with the reference kernels (the oracle,
 * independent of whatever ISA the dispatch table chose) and a bounded
 * max-heap of the k best per query.  Ties are broken by the smaller row
 * number so the answer is a deterministic function of the data.
 *
 * The only mutable statics are the seed-printed flag and the path buffer of
 * vx_test_sift_dir(); tests call both from the main thread.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include "index/distance.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ---- rng ------------------------------------------------------------------ */

static uint64_t vx__splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t vx__rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void vx_rng_seed(vx_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = vx__splitmix64(&x);
}

uint64_t vx_rng_next(vx_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = vx__rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = vx__rotl(s[3], 45);
    return result;
}

double vx_rng_uniform(vx_rng *r)
{
    return (double)(vx_rng_next(r) >> 11) * 0x1.0p-53;
}

float vx_rng_normal(vx_rng *r)
{
    double u1 = 1.0 - vx_rng_uniform(r); /* (0, 1]: log() stays finite */
    double u2 = vx_rng_uniform(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint64_t vx_rng_below(vx_rng *r, uint64_t n)
{
    if (n == 0) return 0;
    /* Lemire's multiply-shift with rejection: unbiased. */
    unsigned __int128 m = (unsigned __int128)vx_rng_next(r) * n;
    uint64_t lo = (uint64_t)m;
    if (lo < n) {
        uint64_t threshold = -n % n;
        while (lo < threshold) {
            m = (unsigned __int128)vx_rng_next(r) * n;
            lo = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

uint64_t vx_test_seed(uint64_t default_seed)
{
    static int printed;
    uint64_t seed = default_seed;
    const char *env = getenv("VX_SEED");
    if (env != NULL && *env != '\0') {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(env, &end, 10);
        if (errno == 0 && *end == '\0')
            seed = (uint64_t)v;
        else if (!printed)
            fprintf(stderr, "ignoring VX_SEED=%s (not a decimal number)\n", env);
    }
    if (!printed) {
        printed = 1;
        fprintf(stderr, "seed=%llu (rerun with VX_SEED=%llu)\n", (unsigned long long)seed,
                (unsigned long long)seed);
    }
    return seed;
}

/* ---- data ----------------------------------------------------------------- */

float *vx_test_clustered(vx_rng *r, size_t n, size_t dim, size_t clusters)
{
    if (clusters == 0) clusters = 1;
    if (dim != 0 &&
        (n > SIZE_MAX / sizeof(float) / dim || clusters > SIZE_MAX / sizeof(float) / dim))
        return NULL;
    float *centers = malloc(clusters * dim * sizeof(float) + 1);
    float *out = malloc(n * dim * sizeof(float) + 1);
    if (centers == NULL || out == NULL) {
        free(centers);
        free(out);
        return NULL;
    }
    for (size_t i = 0; i < clusters * dim; i++)
        centers[i] = 3.0f * vx_rng_normal(r);
    for (size_t i = 0; i < n; i++) {
        const float *c = centers + vx_rng_below(r, clusters) * dim;
        for (size_t j = 0; j < dim; j++)
            out[i * dim + j] = c[j] + vx_rng_normal(r);
    }
    free(centers);
    return out;
}

/* ---- ground truth --------------------------------------------------------- */

typedef struct vx__cand {
    float d; /* smaller is better */
    uint64_t id;
} vx__cand;

/* a is worse than b: farther, or as far with a larger row number. */
static inline int vx__worse(const vx__cand *a, const vx__cand *b)
{
    return a->d > b->d || (a->d == b->d && a->id > b->id);
}

static void vx__heap_sift_down(vx__cand *h, size_t len, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, w = i;
        if (l < len && vx__worse(&h[l], &h[w])) w = l;
        if (l + 1 < len && vx__worse(&h[l + 1], &h[w])) w = l + 1;
        if (w == i) return;
        vx__cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void vx__heap_push(vx__cand *h, size_t *len, vx__cand c)
{
    size_t i = (*len)++;
    h[i] = c;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!vx__worse(&h[i], &h[p])) break;
        vx__cand t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static float vx__norm(const float *x, size_t dim)
{
    return sqrtf(vx_dot_f32_ref(x, x, dim));
}

uint64_t *vx_test_ground_truth(const float *base, size_t n, const float *queries, size_t nq,
                               size_t dim, int metric, size_t k)
{
    if (metric < 0 || metric > 2 || (k != 0 && nq > SIZE_MAX / sizeof(uint64_t) / k)) return NULL;
    uint64_t *out = malloc(nq * k * sizeof(uint64_t) + 1);
    vx__cand *heap = malloc(k * sizeof(vx__cand) + 1);
    float *inv_norm = metric == 2 ? malloc(n * sizeof(float) + 1) : NULL;
    if (out == NULL || heap == NULL || (metric == 2 && inv_norm == NULL)) {
        free(out);
        free(heap);
        free(inv_norm);
        return NULL;
    }
    if (metric == 2) {
        for (size_t i = 0; i < n; i++) {
            float nm = vx__norm(base + i * dim, dim);
            inv_norm[i] = nm > 0 ? 1.0f / nm : 0.0f; /* zero vector: cosine 0 */
        }
    }
    for (size_t q = 0; q < nq; q++) {
        const float *qv = queries + q * dim;
        float qinv = 1.0f;
        if (metric == 2) {
            float nm = vx__norm(qv, dim);
            qinv = nm > 0 ? 1.0f / nm : 0.0f;
        }
        size_t len = 0;
        for (size_t i = 0; i < n && k > 0; i++) {
            const float *x = base + i * dim;
            vx__cand c = {0, i};
            if (metric == 0)
                c.d = vx_l2sq_f32_ref(qv, x, dim);
            else if (metric == 1)
                c.d = -vx_dot_f32_ref(qv, x, dim);
            else
                c.d = -(vx_dot_f32_ref(qv, x, dim) * qinv * inv_norm[i]);
            if (len < k) {
                vx__heap_push(heap, &len, c);
            } else if (vx__worse(&heap[0], &c)) {
                heap[0] = c;
                vx__heap_sift_down(heap, len, 0);
            }
        }
        /* Pop worst-first into the row from the back: row is best-first. */
        uint64_t *row = out + q * k;
        for (size_t j = len; j < k; j++)
            row[j] = UINT64_MAX;
        while (len > 0) {
            row[len - 1] = heap[0].id;
            heap[0] = heap[--len];
            vx__heap_sift_down(heap, len, 0);
        }
    }
    free(heap);
    free(inv_norm);
    return out;
}

double vx_test_recall(const uint64_t *results, const uint64_t *gt, size_t nq, size_t k, size_t gt_k)
{
    if (nq == 0 || k == 0) return 1.0;
    size_t kk = k < gt_k ? k : gt_k; /* true neighbours available per query */
    double sum = 0;
    for (size_t q = 0; q < nq; q++) {
        const uint64_t *res = results + q * k;
        const uint64_t *truth = gt + q * gt_k;
        size_t want = 0, hit = 0;
        /* Count each true neighbour once, however often the result repeats it. */
        for (size_t i = 0; i < kk; i++) {
            if (truth[i] == UINT64_MAX) continue;
            want++;
            for (size_t j = 0; j < k; j++) {
                if (res[j] == truth[i]) {
                    hit++;
                    break;
                }
            }
        }
        sum += want > 0 ? (double)hit / (double)want : 1.0;
    }
    return sum / (double)nq;
}

/* ---- time and data files -------------------------------------------------- */

double vx_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *vx_test_sift_dir(void)
{
    static char dir[PATH_MAX];
    char file[PATH_MAX + 16];
    const char *root = getenv("VX_DATA_DIR");
    if (root == NULL || *root == '\0') return NULL;
    int len = snprintf(dir, sizeof(dir), "%s/sift100k", root);
    if (len < 0 || (size_t)len >= sizeof(dir)) return NULL;
    snprintf(file, sizeof(file), "%s/base.fvecs", dir);
    return access(file, R_OK) == 0 ? dir : NULL;
}
