/*
 * test_distance.c - every distance kernel of every ISA level this CPU can run,
 * checked against the portable reference (distance.h's contract).
 *
 * Inputs come from one seeded stream (vx_test_seed(1); VX_SEED reproduces a
 * run).  Each vector lives at a random offset inside its own allocation and
 * ends exactly at the allocation's end, so the pointers are unaligned and any
 * read past element n-1 by an unmasked load is a heap overflow that an ASan
 * build reports.  Floats must agree within 1e-5 relative to sum |term| (or
 * 1e-6 absolute when the terms are tiny); the int8 kernel must be exact,
 * including the extreme codes where a saturating instruction (vpmaddubsw)
 * would go wrong and the n = 65536 bound where int32 is just big enough.
 *
 * vx_kernels_init() is once-per-process, so its VECTRON_ISA cap is checked in
 * forked children before the parent's own init, and the tests run in order.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "index/distance.h"
#include "base/err.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const size_t vx__lens[] = {0,  1,  2,  3,   7,   8,   15,  16,  17,  31,   32,  33,
                                  63, 64, 65, 127, 128, 129, 255, 256, 768, 1000, 1536};
#define VX__NLENS (sizeof(vx__lens) / sizeof(vx__lens[0]))
#define VX__TRIALS 6
#define VX__INT_MAX_N 65536

static vx_rng rng;

/* A buffer of `n` elements of `size` bytes placed at a random element offset
 * (0..63) so it ends at the end of the allocation.  *base is what to free. */
static void *vx__tail_buf(size_t n, size_t size, void **base)
{
    size_t off = (size_t)vx_rng_below(&rng, 64);
    char *p = malloc((off + n) * size + (off + n == 0)); /* never malloc(0) */
    assert_non_null(p);
    *base = p;
    return p + off * size;
}

/* ---- float kernels -------------------------------------------------------- */

static void vx__check_f32(const vx_kernels *k, const float *a, const float *b, size_t n)
{
    double l2_abs = 0, dot_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        l2_abs += d * d;
        dot_abs += fabs((double)a[i] * (double)b[i]);
    }
    float want = vx_l2sq_f32_ref(a, b, n), got = k->l2sq_f32(a, b, n);
    double tol = fmax(1e-5 * l2_abs, 1e-6);
    if (fabs((double)got - (double)want) > tol) {
        print_error("%s l2sq_f32 n=%zu: got %.9g want %.9g (tol %.3g)\n", k->name, n, got, want,
                    tol);
        fail();
    }
    want = vx_dot_f32_ref(a, b, n);
    got = k->dot_f32(a, b, n);
    tol = fmax(1e-5 * dot_abs, 1e-6);
    if (fabs((double)got - (double)want) > tol) {
        print_error("%s dot_f32 n=%zu: got %.9g want %.9g (tol %.3g)\n", k->name, n, got, want,
                    tol);
        fail();
    }
}

static void vx__test_f32_level(const vx_kernels *k)
{
    static const float scales[VX__TRIALS] = {1.0f, 1.0f, 1.0f, 1e3f, 1e-3f, 1.0f};
    for (size_t li = 0; li < VX__NLENS; li++) {
        size_t n = vx__lens[li];
        for (int t = 0; t < VX__TRIALS; t++) {
            void *ba, *bb;
            float *a = vx__tail_buf(n, sizeof(float), &ba);
            float *b = vx__tail_buf(n, sizeof(float), &bb);
            for (size_t i = 0; i < n; i++) {
                a[i] = scales[t] * vx_rng_normal(&rng);
                /* last trial: b near a, so l2 is a small difference of large
                 * values (cancellation in a - b). */
                b[i] = t == VX__TRIALS - 1 ? a[i] + 1e-2f * vx_rng_normal(&rng)
                                           : scales[t] * vx_rng_normal(&rng);
            }
            vx__check_f32(k, a, b, n);
            free(ba);
            free(bb);
        }
    }
}

/* ---- int8 kernel ---------------------------------------------------------- */

static void vx__check_u8s8(const vx_kernels *k, const uint8_t *a, const int8_t *b, size_t n)
{
    int64_t exact = 0;
    for (size_t i = 0; i < n; i++)
        exact += (int64_t)a[i] * b[i];
    int32_t want = vx_dot_u8s8_ref(a, b, n);
    assert_true(exact == (int64_t)want); /* the oracle itself, n <= 65536 */
    int32_t got = k->dot_u8s8(a, b, n);
    if (got != want) {
        print_error("%s dot_u8s8 n=%zu: got %d want %d\n", k->name, n, got, want);
        fail();
    }
}

enum { VX__FILL_RANDOM, VX__FILL_MAX_MIN, VX__FILL_MAX_MAX, VX__FILL_ALTERNATE, VX__FILL__COUNT };

static void vx__fill_u8s8(uint8_t *a, int8_t *b, size_t n, int mode)
{
    for (size_t i = 0; i < n; i++) {
        switch (mode) {
        case VX__FILL_RANDOM:
            a[i] = (uint8_t)vx_rng_next(&rng);
            b[i] = (int8_t)(uint8_t)vx_rng_next(&rng);
            break;
        case VX__FILL_MAX_MIN:
            a[i] = 255;
            b[i] = -128;
            break;
        case VX__FILL_MAX_MAX: /* 255*127 pairs: where vpmaddubsw saturates */
            a[i] = 255;
            b[i] = 127;
            break;
        default: /* random extremes */
            a[i] = vx_rng_below(&rng, 2) ? 255 : 0;
            b[i] = vx_rng_below(&rng, 2) ? 127 : -128;
            break;
        }
    }
}

static void vx__test_u8s8_level(const vx_kernels *k)
{
    for (size_t li = 0; li < VX__NLENS; li++) {
        size_t n = vx__lens[li];
        for (int mode = 0; mode < VX__FILL__COUNT; mode++) {
            for (int t = 0; t < (mode == VX__FILL_RANDOM ? VX__TRIALS : 1); t++) {
                void *ba, *bb;
                uint8_t *a = vx__tail_buf(n, 1, &ba);
                int8_t *b = vx__tail_buf(n, 1, &bb);
                vx__fill_u8s8(a, b, n, mode);
                vx__check_u8s8(k, a, b, n);
                free(ba);
                free(bb);
            }
        }
    }
    /* The contract's bound: n = 65536 (and a ragged length just under it). */
    static const size_t big[] = {VX__INT_MAX_N, VX__INT_MAX_N - 37};
    for (size_t bi = 0; bi < 2; bi++) {
        for (int mode = 0; mode < VX__FILL__COUNT; mode++) {
            void *ba, *bb;
            uint8_t *a = vx__tail_buf(big[bi], 1, &ba);
            int8_t *b = vx__tail_buf(big[bi], 1, &bb);
            vx__fill_u8s8(a, b, big[bi], mode);
            vx__check_u8s8(k, a, b, big[bi]);
            if (big[bi] == VX__INT_MAX_N && mode == VX__FILL_MAX_MIN)
                assert_int_equal(k->dot_u8s8(a, b, big[bi]), -2139095040);
            if (big[bi] == VX__INT_MAX_N && mode == VX__FILL_MAX_MAX)
                assert_int_equal(k->dot_u8s8(a, b, big[bi]), 2122383360);
            free(ba);
            free(bb);
        }
    }
}

/* ---- every level ---------------------------------------------------------- */

static void test_kernels_all_levels(void **state)
{
    vx_rng_seed(&rng, vx_test_seed(1));
    vx_isa best = vx_kernels_cpu_best();
    int tested = 0;
    printf("cpu best level: %s\n", vx_isa_name(best));
    for (int i = 0; i < VX_ISA__COUNT; i++) {
        vx_kernels k;
        int rc = vx_kernels_get((vx_isa)i, &k);
        if (rc != 0) {
            assert_int_equal(rc, VX_EINVAL);
            assert_true(i > (int)best);
            printf("  %-10s skipped (CPU lacks it)\n", vx_isa_name((vx_isa)i));
            continue;
        }
        assert_true(i <= (int)best);
        assert_int_equal(k.isa, i);
        assert_string_equal(k.name, vx_isa_name((vx_isa)i));
        assert_non_null(k.l2sq_f32);
        assert_non_null(k.dot_f32);
        assert_non_null(k.dot_u8s8);
        vx__test_f32_level(&k);
        vx__test_u8s8_level(&k);
        printf("  %-10s tested\n", k.name);
        tested++;
    }
    assert_int_equal(tested, (int)best + 1);

    vx_kernels k;
    assert_int_equal(vx_kernels_get(VX_ISA__COUNT, &k), VX_EINVAL);
    assert_int_equal(vx_kernels_get((vx_isa)-1, &k), VX_EINVAL);
    assert_string_equal(vx_isa_name(VX_ISA__COUNT), "unknown");
}

/* ---- init and select ------------------------------------------------------ */

/* VECTRON_ISA value to level, -1 when unset or unknown (then ignored). */
static int vx__env_level(const char *v)
{
    if (v == NULL) return -1;
    for (int i = 0; i < VX_ISA__COUNT; i++)
        if (strcmp(v, vx_isa_name((vx_isa)i)) == 0) return i;
    return -1;
}

static vx_isa vx__expected_level(const char *env)
{
    vx_isa best = vx_kernels_cpu_best();
    int cap = vx__env_level(env);
    return cap >= 0 && (vx_isa)cap < best ? (vx_isa)cap : best;
}

/* Runs before anything calls vx_kernels_init() in this process: each child
 * sets VECTRON_ISA, initializes, and reports the level it got. */
static void test_init_env_cap(void **state)
{
    static const char *values[] = {"reference", "avx2", "avx512", "avx512vnni", "AVX2", "bogus"};
    assert_int_equal(vx_kern.isa, VX_ISA_REFERENCE); /* the pre-init table */
    assert_true(vx_kern.l2sq_f32 == vx_l2sq_f32_ref);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            setenv("VECTRON_ISA", values[i], 1);
            vx_kernels_init();
            _exit((int)vx_kern.isa);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        vx_isa want = strcmp(values[i], "AVX2") == 0 ? vx__expected_level("avx2")
                                                     : vx__expected_level(values[i]);
        assert_int_equal(WEXITSTATUS(status), want);
    }
}

static void test_init_default(void **state)
{
    const char *env = getenv("VECTRON_ISA");
    vx_kernels_init();
    vx_kernels_init(); /* idempotent */
    vx_isa want = vx__expected_level(env);
    if (env == NULL) assert_int_equal(want, vx_kernels_cpu_best());
    assert_int_equal(vx_kern.isa, want);
    vx_kernels k;
    assert_int_equal(vx_kernels_get(want, &k), 0);
    assert_true(vx_kern.l2sq_f32 == k.l2sq_f32);
    assert_true(vx_kern.dot_f32 == k.dot_f32);
    assert_true(vx_kern.dot_u8s8 == k.dot_u8s8);
    printf("vx_kernels_init chose %s (VECTRON_ISA %s)\n", vx_kern.name, env ? env : "unset");
}

static void test_select(void **state)
{
    vx_isa prev = vx_kern.isa;
    assert_int_equal(vx_kernels_select(VX_ISA_REFERENCE), 0);
    assert_int_equal(vx_kern.isa, VX_ISA_REFERENCE);
    assert_true(vx_kern.l2sq_f32 == vx_l2sq_f32_ref);
    assert_true(vx_kern.dot_f32 == vx_dot_f32_ref);
    assert_true(vx_kern.dot_u8s8 == vx_dot_u8s8_ref);
    const float a[3] = {1, 2, 3}, b[3] = {4, 6, 8};
    assert_true(vx_kern.l2sq_f32(a, b, 3) == 50.0f);
    assert_true(vx_kern.dot_f32(a, b, 3) == 40.0f);

    vx_kernels_init(); /* does not undo a selection */
    assert_int_equal(vx_kern.isa, VX_ISA_REFERENCE);

    assert_int_equal(vx_kernels_select(VX_ISA__COUNT), VX_EINVAL);
    assert_int_equal(vx_kern.isa, VX_ISA_REFERENCE);
    vx_isa best = vx_kernels_cpu_best();
    if (best < VX_ISA_AVX512VNNI)
        assert_int_equal(vx_kernels_select((vx_isa)(best + 1)), VX_EINVAL);

    assert_int_equal(vx_kernels_select(prev), 0);
    assert_int_equal(vx_kern.isa, prev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_env_cap),
        cmocka_unit_test(test_init_default),
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_kernels_all_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
