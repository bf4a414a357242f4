/*
 * distance_avx512vnni.c - the AVX-512 VNNI integer kernel (built with the
 * AVX-512 flags plus -mavx512vnni; reached only through the dispatch table).
 * The VNNI level reuses the AVX-512 float kernels: VNNI adds no float
 * instruction.
 *
 * vpdpbusd multiplies 64 unsigned bytes of a by 64 signed bytes of b and adds
 * each group of four products into one int32 lane, without intermediate
 * saturation (that would be vpdpbusds): four products are at most 4 * 32640
 * in magnitude, so the kernel is exact for n <= 65536 (the whole sum then
 * fits in int32) and wraps like the reference beyond.  64 bytes per step;
 * two independent accumulators for n >= 128 to hide the instruction's
 * latency; the last 0..63 bytes are one masked step (masked-off bytes load as
 * zero and are never read).
 */
#include "index/distance.h"

#include <immintrin.h>

int32_t vx_dot_u8s8_avx512vnni(const uint8_t *a, const int8_t *b, size_t n)
{
    __m512i acc0 = _mm512_setzero_si512();
    size_t i = 0;
    if (n >= 128) {
        __m512i acc1 = _mm512_setzero_si512();
        for (; i + 128 <= n; i += 128) {
            acc0 = _mm512_dpbusd_epi32(acc0, _mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
            acc1 = _mm512_dpbusd_epi32(acc1, _mm512_loadu_si512(a + i + 64),
                                       _mm512_loadu_si512(b + i + 64));
        }
        acc0 = _mm512_add_epi32(acc0, acc1);
    }
    if (i + 64 <= n) {
        acc0 = _mm512_dpbusd_epi32(acc0, _mm512_loadu_si512(a + i), _mm512_loadu_si512(b + i));
        i += 64;
    }
    if (i < n) {
        __mmask64 m = (__mmask64)((1ull << (n - i)) - 1ull); /* n - i < 64 */
        acc0 = _mm512_dpbusd_epi32(acc0, _mm512_maskz_loadu_epi8(m, a + i),
                                   _mm512_maskz_loadu_epi8(m, b + i));
    }
    return _mm512_reduce_add_epi32(acc0);
}
