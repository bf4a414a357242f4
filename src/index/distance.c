/*
 * distance.c - the portable reference kernels and the dispatch table.
 *
 * Reference kernels.  Plain C loops, compiled with the project's default
 * flags and nothing else, so they run on any x86-64 (and any other) CPU.
 * They are both the fallback for CPUs without AVX2 and the oracle the SIMD
 * kernels are tested against, so they favour accuracy over speed: the float
 * kernels widen every term to double and sum in double, which makes them
 * closer to the exact value than any float-accumulating SIMD kernel (the
 * contract's 1e-5 relative tolerance is then measured against the better of
 * the two).  Four independent accumulators break the add dependency chain;
 * the summation order is fixed by the source (no -ffast-math anywhere), so a
 * compiler that vectorizes the loop still computes the same value.  The
 * integer kernel sums in int64 and wraps to int32 at the end, so it is exact
 * wherever the result fits (always for n <= 65536: |255 * -128| * 65536 =
 * 2139095040 < 2^31) and matches the wrapping SIMD kernels beyond that.
 *
 * Dispatch.  `vx_kern` starts as the reference table, so a caller that forgets
 * vx_kernels_init() gets correct, slow answers rather than a NULL call.
 * vx_kernels_init() runs once (pthread_once) and writes the table for the
 * best level the CPU supports, capped by VECTRON_ISA; afterwards the table is
 * read-only, and kernels never test CPU features per call.  The only other
 * writer is vx_kernels_select(), which first runs the one-time init (so a
 * later vx_kernels_init() cannot undo a test's choice) and is documented as
 * start-up/test-only: it must not race with distance computations.
 *
 * CPU features come from __builtin_cpu_supports(), which also checks that the
 * OS saves the AVX / AVX-512 register state (XCR0), so a level is only chosen
 * when its instructions can actually run.
 */
#include "index/distance.h"

#include "base/err.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

/* ---- reference kernels ---------------------------------------------------- */

float vx_l2sq_f32_ref(const float *a, const float *b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = (double)a[i] - (double)b[i];
        double d1 = (double)a[i + 1] - (double)b[i + 1];
        double d2 = (double)a[i + 2] - (double)b[i + 2];
        double d3 = (double)a[i + 3] - (double)b[i + 3];
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        s0 += d * d;
    }
    return (float)((s0 + s1) + (s2 + s3));
}

float vx_dot_f32_ref(const float *a, const float *b, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)a[i] * (double)b[i];
        s1 += (double)a[i + 1] * (double)b[i + 1];
        s2 += (double)a[i + 2] * (double)b[i + 2];
        s3 += (double)a[i + 3] * (double)b[i + 3];
    }
    for (; i < n; i++)
        s0 += (double)a[i] * (double)b[i];
    return (float)((s0 + s1) + (s2 + s3));
}

int32_t vx_dot_u8s8_ref(const uint8_t *a, const int8_t *b, size_t n)
{
    int64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += (int32_t)a[i] * (int32_t)b[i];
    /* Exact when it fits; otherwise the same mod-2^32 value the SIMD kernels'
     * wrapping int32 lanes produce (gcc/clang define this conversion). */
    return (int32_t)(uint32_t)(uint64_t)s;
}

/* ---- the tables ----------------------------------------------------------- */

static const vx_kernels vx__tables[VX_ISA__COUNT] = {
    [VX_ISA_REFERENCE] = {VX_ISA_REFERENCE, "reference", vx_l2sq_f32_ref, vx_dot_f32_ref,
                          vx_dot_u8s8_ref},
    [VX_ISA_AVX2] = {VX_ISA_AVX2, "avx2", vx_l2sq_f32_avx2, vx_dot_f32_avx2, vx_dot_u8s8_avx2},
    [VX_ISA_AVX512] = {VX_ISA_AVX512, "avx512", vx_l2sq_f32_avx512, vx_dot_f32_avx512,
                       vx_dot_u8s8_avx512},
    /* VNNI only adds an integer instruction: the float kernels are AVX-512's. */
    [VX_ISA_AVX512VNNI] = {VX_ISA_AVX512VNNI, "avx512vnni", vx_l2sq_f32_avx512, vx_dot_f32_avx512,
                           vx_dot_u8s8_avx512vnni},
};

/* The one process-wide mutable table: written by the one-time init (and by
 * vx_kernels_select in tests), read-only otherwise. */
vx_kernels vx_kern = {VX_ISA_REFERENCE, "reference", vx_l2sq_f32_ref, vx_dot_f32_ref,
                      vx_dot_u8s8_ref};

static pthread_once_t vx__kern_once = PTHREAD_ONCE_INIT;

const char *vx_isa_name(vx_isa isa)
{
    if ((int)isa < 0 || isa >= VX_ISA__COUNT) return "unknown";
    return vx__tables[isa].name;
}

vx_isa vx_kernels_cpu_best(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return VX_ISA_REFERENCE;
    /* Our AVX-512 kernels use F, BW and VL (256-bit masked byte loads). */
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl"))
        return VX_ISA_AVX2;
    if (!__builtin_cpu_supports("avx512vnni")) return VX_ISA_AVX512;
    return VX_ISA_AVX512VNNI;
#else
    return VX_ISA_REFERENCE;
#endif
}

int vx_kernels_get(vx_isa isa, vx_kernels *out)
{
    if ((int)isa < 0 || isa >= VX_ISA__COUNT || isa > vx_kernels_cpu_best()) return VX_EINVAL;
    *out = vx__tables[isa];
    return 0;
}

/* VECTRON_ISA as a level, or -1 when unset; an unknown value is reported once
 * (init runs once) and ignored rather than silently capping to reference. */
static int vx__isa_cap_from_env(void)
{
    const char *v = getenv("VECTRON_ISA");
    if (v == NULL || *v == '\0') return -1;
    for (int i = 0; i < VX_ISA__COUNT; i++)
        if (strcasecmp(v, vx__tables[i].name) == 0) return i;
    fprintf(stderr,
            "vectron: ignoring unknown VECTRON_ISA=%s (want reference|avx2|avx512|"
            "avx512vnni)\n",
            v);
    return -1;
}

static void vx__kernels_init_once(void)
{
    vx_isa isa = vx_kernels_cpu_best();
    int cap = vx__isa_cap_from_env();
    if (cap >= 0 && (vx_isa)cap < isa) isa = (vx_isa)cap;
    vx_kern = vx__tables[isa];
}

void vx_kernels_init(void)
{
    pthread_once(&vx__kern_once, vx__kernels_init_once);
}

int vx_kernels_select(vx_isa isa)
{
    vx_kernels k;
    int rc = vx_kernels_get(isa, &k);
    if (rc != 0) return rc;
    vx_kernels_init();
    vx_kern = k;
    return 0;
}
