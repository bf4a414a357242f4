/*
 * test_hugemem.c - vx_huge_alloc: small blocks from calloc, large ones
 * aligned to 2 MiB (calloc'd in sanitizer builds), zero, writable to their
 * last byte, and freed; what the
 * kernel gave in huge pages is printed (a hint it may refuse, so not
 * asserted).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/hugemem.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0) return false;
    return true;
}

/* AnonHugePages of the mapping holding p, in KiB (-1 if not found). */
static long huge_kb(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (f == NULL) return -1;
    char line[256];
    bool in = false;
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
    }
    fclose(f);
    return kb;
}

static void test_small_block(void **state)
{
    (void)state;
    uint8_t *p = vx_huge_alloc(1000);
    assert_non_null(p);
    assert_true(all_zero(p, 1000));
    memset(p, 0xab, 1000);
    vx_huge_free(p, 1000);
    vx_huge_free(NULL, 1000); /* a no-op, as free(NULL) */
    p = vx_huge_alloc(0);
    assert_non_null(p);
    vx_huge_free(p, 0);
}

static void test_large_block(void **state)
{
    (void)state;
    const size_t sizes[] = {VX_HUGE_PAGE, 3 * VX_HUGE_PAGE / 2 + 123, 5 * VX_HUGE_PAGE};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        uint8_t *p = vx_huge_alloc(n);
        assert_non_null(p);
        if (vx_huge_mapped()) assert_int_equal((uintptr_t)p % VX_HUGE_PAGE, 0);
        assert_true(all_zero(p, n));
        for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 31 + k);
        for (size_t i = 0; i < n; i += 4093) assert_int_equal(p[i], (uint8_t)(i * 31 + k));
        assert_int_equal(p[n - 1], (uint8_t)((n - 1) * 31 + k));
        fprintf(stderr, "%zu bytes at %p: %ld KiB in huge pages\n", n, (void *)p, huge_kb(p));
        vx_huge_free(p, n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_block),
        cmocka_unit_test(test_large_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
