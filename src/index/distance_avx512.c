/*
 * distance_avx512.c - AVX-512 F/BW/VL kernels (built with -mavx512f
 * -mavx512bw -mavx512vl -mavx2 -mfma; reached only through the dispatch
 * table once vx_kernels_init() has seen those features).
 *
 * Float kernels: 16-wide FMA, four accumulators over 64-float steps (768-d:
 * twelve steps), then two accumulators over 32-float steps (128-d: four
 * steps), then one 16-float step, then a single masked step for the last
 * 0..15 elements.  Masked-off lanes load as zero (_mm512_maskz_loadu_ps) and
 * contribute nothing; a masked load never touches, and never faults on, the
 * memory of disabled lanes, so there is no scalar tail and no over-read.
 *
 * Integer kernel (uint8 x int8 -> int32), exact, without VNNI: each 32-byte
 * block is widened to 32 int16 (zero-extend a, sign-extend b) and multiplied
 * with vpmaddwd (adjacent pairs summed into int32: at most 65280 in
 * magnitude, never saturating).  The last 0..31 bytes use masked 256-bit
 * loads (_mm256_maskz_loadu_epi8, needs BW+VL).
 */
#include "index/distance.h"

#include <immintrin.h>

static inline __mmask16 vx__mask16(size_t rem)
{
    return (__mmask16)((1u << rem) - 1u); /* rem < 16 */
}

float vx_l2sq_f32_avx512(const float *a, const float *b, size_t n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    size_t i = 0;
    if (n >= 64) {
        __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
        for (; i + 64 <= n; i += 64) {
            __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
            __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
            __m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32));
            __m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48));
            acc0 = _mm512_fmadd_ps(d0, d0, acc0);
            acc1 = _mm512_fmadd_ps(d1, d1, acc1);
            acc2 = _mm512_fmadd_ps(d2, d2, acc2);
            acc3 = _mm512_fmadd_ps(d3, d3, acc3);
        }
        acc0 = _mm512_add_ps(acc0, acc2);
        acc1 = _mm512_add_ps(acc1, acc3);
    }
    for (; i + 32 <= n; i += 32) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        acc0 = _mm512_fmadd_ps(d0, d0, acc0);
        acc1 = _mm512_fmadd_ps(d1, d1, acc1);
    }
    if (i + 16 <= n) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        acc0 = _mm512_fmadd_ps(d, d, acc0);
        i += 16;
    }
    if (i < n) {
        __mmask16 m = vx__mask16(n - i);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        acc1 = _mm512_fmadd_ps(d, d, acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

float vx_dot_f32_avx512(const float *a, const float *b, size_t n)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    size_t i = 0;
    if (n >= 64) {
        __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
        for (; i + 64 <= n; i += 64) {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
            acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
            acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
        }
        acc0 = _mm512_add_ps(acc0, acc2);
        acc1 = _mm512_add_ps(acc1, acc3);
    }
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    if (i + 16 <= n) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        i += 16;
    }
    if (i < n) {
        __mmask16 m = vx__mask16(n - i);
        acc1 =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* 32 products of a[0..31] * b[0..31], pairwise summed into 16 int32 lanes. */
static inline __m512i vx__madd32(__m256i a8, __m256i b8)
{
    return _mm512_madd_epi16(_mm512_cvtepu8_epi16(a8), _mm512_cvtepi8_epi16(b8));
}

int32_t vx_dot_u8s8_avx512(const uint8_t *a, const int8_t *b, size_t n)
{
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        acc0 = _mm512_add_epi32(acc0, vx__madd32(_mm256_loadu_si256((const __m256i *)(a + i)),
                                                 _mm256_loadu_si256((const __m256i *)(b + i))));
        acc1 =
            _mm512_add_epi32(acc1, vx__madd32(_mm256_loadu_si256((const __m256i *)(a + i + 32)),
                                              _mm256_loadu_si256((const __m256i *)(b + i + 32))));
    }
    if (i + 32 <= n) {
        acc0 = _mm512_add_epi32(acc0, vx__madd32(_mm256_loadu_si256((const __m256i *)(a + i)),
                                                 _mm256_loadu_si256((const __m256i *)(b + i))));
        i += 32;
    }
    if (i < n) {
        __mmask32 m = (__mmask32)((1u << (n - i)) - 1u); /* n - i < 32 */
        acc1 = _mm512_add_epi32(
            acc1, vx__madd32(_mm256_maskz_loadu_epi8(m, a + i), _mm256_maskz_loadu_epi8(m, b + i)));
    }
    return _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
}
