/*
 * distance.h - distance kernels and their one dispatch table.
 *
 * Three primitive kernels cover every metric and both storage modes:
 *
 *   l2sq_f32(a, b, n)   = sum_i (a[i] - b[i])^2                 (float32)
 *   dot_f32(a, b, n)    = sum_i a[i] * b[i]                      (float32)
 *   dot_u8s8(a, b, n)   = sum_i (int32)a[i] * (int32)b[i]        (a uint8, b int8)
 *
 * The int8 kernel is the unsigned-by-signed dot product because that is what
 * AVX-512 VNNI (vpdpbusd) computes natively; the quantizer (quant.h) maps
 * both squared L2 and inner product on uint8 codes onto it by shifting the
 * query codes by -128 and precomputing per-vector terms.
 *
 * One portable reference implementation lives in distance.c, one file per
 * instruction set beside it (distance_avx2.c, distance_avx512.c,
 * distance_avx512vnni.c), each compiled with its own -m flags so the binary
 * runs on any x86-64 CPU.  vx_kernels_init() fills the table once from CPU
 * features (thread-safe, idempotent); after that it is read-only.  Tests may
 * force a level with vx_kernels_select() before any index is used.
 *
 * Contract for every kernel: n may be any value >= 0 (including values that
 * are not a multiple of the vector width); pointers need no alignment; the
 * integer kernel is exact (no saturation) for n <= 65536; float kernels agree
 * with the reference within a relative error of 1e-5 (different summation
 * order).
 */
#ifndef VX_INDEX_DISTANCE_H
#define VX_INDEX_DISTANCE_H

#include <stddef.h>
#include <stdint.h>

typedef float (*vx_f32_kernel)(const float *a, const float *b, size_t n);
typedef int32_t (*vx_u8s8_kernel)(const uint8_t *a, const int8_t *b, size_t n);

typedef enum {
    VX_ISA_REFERENCE = 0,
    VX_ISA_AVX2 = 1,       /* AVX2 + FMA */
    VX_ISA_AVX512 = 2,     /* AVX-512 F + BW */
    VX_ISA_AVX512VNNI = 3, /* AVX-512 F + BW + VNNI */
    VX_ISA__COUNT
} vx_isa;

typedef struct vx_kernels {
    vx_isa isa;
    const char *name;
    vx_f32_kernel l2sq_f32;
    vx_f32_kernel dot_f32;
    vx_u8s8_kernel dot_u8s8;
} vx_kernels;

/* The active table.  Valid after vx_kernels_init(); read-only afterwards. */
extern vx_kernels vx_kern;

/* Resolve the best level this CPU supports.  Safe to call many times from
 * many threads (pthread_once).  Honors VECTRON_ISA=reference|avx2|avx512|
 * avx512vnni in the environment to cap the level (for tests and triage). */
void vx_kernels_init(void);

/* The best level the CPU supports (independent of the active table). */
vx_isa vx_kernels_cpu_best(void);

/* Fill *out with the table of one level.  Returns 0, or VX_EINVAL when the
 * level is unknown or the CPU lacks it (tests iterate every level). */
int vx_kernels_get(vx_isa isa, vx_kernels *out);

/* Make `isa` the active level.  Only for tests and start-up: callers must
 * guarantee no other thread is computing distances.  VX_EINVAL if the CPU
 * cannot run it. */
int vx_kernels_select(vx_isa isa);

const char *vx_isa_name(vx_isa isa);

/* Portable reference kernels (always available; the oracle in tests). */
float vx_l2sq_f32_ref(const float *a, const float *b, size_t n);
float vx_dot_f32_ref(const float *a, const float *b, size_t n);
int32_t vx_dot_u8s8_ref(const uint8_t *a, const int8_t *b, size_t n);

/* Per-ISA kernels, defined in their own files. */
float vx_l2sq_f32_avx2(const float *a, const float *b, size_t n);
float vx_dot_f32_avx2(const float *a, const float *b, size_t n);
int32_t vx_dot_u8s8_avx2(const uint8_t *a, const int8_t *b, size_t n);
float vx_l2sq_f32_avx512(const float *a, const float *b, size_t n);
float vx_dot_f32_avx512(const float *a, const float *b, size_t n);
int32_t vx_dot_u8s8_avx512(const uint8_t *a, const int8_t *b, size_t n);
int32_t vx_dot_u8s8_avx512vnni(const uint8_t *a, const int8_t *b, size_t n);

#endif
