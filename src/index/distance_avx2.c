/*
 * distance_avx2.c - AVX2 + FMA kernels (built with -mavx2 -mfma only; reached
 * solely through the dispatch table, after vx_kernels_init() has checked the
 * CPU, so nothing here may be called directly).
 *
 * Float kernels: four independent 8-wide FMA accumulators (32 floats per
 * step).  Two loads feed each FMA, so the loop is load-bound at one FMA per
 * cycle and four chains cover the FMA latency; 128-d is four steps, 768-d
 * twenty-four.  Then 8-wide steps into the first accumulator and a scalar
 * tail of at most 7 elements.  All loads are unaligned (loadu) and never read
 * past a[n-1] / b[n-1].
 *
 * Integer kernel (uint8 x int8 -> int32), exact: each 16-byte half is widened
 * to int16 (zero-extended for a, sign-extended for b) and multiplied with
 * vpmaddwd, which adds adjacent int16 products into int32.  A pair sums to at
 * most 2 * 255 * 128 = 65280 in magnitude, so nothing saturates.  vpmaddubsw
 * is deliberately not used: it saturates its int16 pair sums (255*127*2 >
 * 32767).  int32 lanes wrap only past n = 65536, like the reference.
 */
#include "index/distance.h"

#include <immintrin.h>

static inline float vx__hsum256_ps(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehdup_ps(lo); /* (1,1,3,3) */
    lo = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, lo); /* (2,3,..) */
    lo = _mm_add_ss(lo, sh);
    return _mm_cvtss_f32(lo);
}

static inline int32_t vx__hsum256_epi32(__m256i v)
{
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(1, 0, 3, 2)));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(x);
}

float vx_l2sq_f32_avx2(const float *a, const float *b, size_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
        __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
        acc0 = _mm256_fmadd_ps(d0, d0, acc0);
        acc1 = _mm256_fmadd_ps(d1, d1, acc1);
        acc2 = _mm256_fmadd_ps(d2, d2, acc2);
        acc3 = _mm256_fmadd_ps(d3, d3, acc3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        acc0 = _mm256_fmadd_ps(d, d, acc0);
    }
    float s = vx__hsum256_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++) {
        float d = a[i] - b[i];
        s += d * d;
    }
    return s;
}

float vx_dot_f32_avx2(const float *a, const float *b, size_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float s = vx__hsum256_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* 16 products of a[0..15] * b[0..15], pairwise summed into 8 int32 lanes. */
static inline __m256i vx__madd16(const uint8_t *a, const int8_t *b)
{
    __m256i wa = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)a));
    __m256i wb = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b));
    return _mm256_madd_epi16(wa, wb);
}

int32_t vx_dot_u8s8_avx2(const uint8_t *a, const int8_t *b, size_t n)
{
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        acc0 = _mm256_add_epi32(acc0, vx__madd16(a + i, b + i));
        acc1 = _mm256_add_epi32(acc1, vx__madd16(a + i + 16, b + i + 16));
        acc0 = _mm256_add_epi32(acc0, vx__madd16(a + i + 32, b + i + 32));
        acc1 = _mm256_add_epi32(acc1, vx__madd16(a + i + 48, b + i + 48));
    }
    for (; i + 16 <= n; i += 16)
        acc0 = _mm256_add_epi32(acc0, vx__madd16(a + i, b + i));
    /* Wrapping (unsigned) scalar adds: exact for n <= 65536, and past that the
     * same mod-2^32 result as the vector lanes instead of signed overflow. */
    uint32_t s = (uint32_t)vx__hsum256_epi32(_mm256_add_epi32(acc0, acc1));
    for (; i < n; i++)
        s += (uint32_t)((int32_t)a[i] * (int32_t)b[i]);
    return (int32_t)s;
}
