/*
 * test_hitmap.c - the in-memory label map of the store (store/hitmap.h)
 * against a plain reference array: random puts, replacements and deletes
 * (backward-shift deletion keeps every other entry findable), growth by
 * copy, inline and long ids.  The seed is printed (VX_SEED to replay).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "store/hitmap.h"
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

enum { NLABELS = 5000 };

typedef struct ref {
    bool present;
    uint64_t version;
    uint8_t id[300];
    size_t len;
} ref;

static void check_all(const vx_hitmap *m, const ref *r)
{
    size_t n = 0;
    for (uint64_t l = 0; l < NLABELS; l++) {
        uint64_t v;
        const uint8_t *id;
        size_t len;
        bool found = vx_hitmap_get(m, l * 7919, &v, &id, &len);
        if (found != r[l].present) fail_msg("label %llu: found %d, want %d", (unsigned long long)l, found, r[l].present);
        if (!found) continue;
        n++;
        assert_true(v == r[l].version);
        assert_int_equal(len, r[l].len);
        assert_memory_equal(id, r[l].id, len);
    }
    assert_int_equal(m->n, n);
}

static void test_against_reference(void **state)
{
    (void)state;
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(21));
    ref *r = calloc(NLABELS, sizeof(ref));
    assert_non_null(r);
    vx_hitmap m;
    assert_int_equal(vx_hitmap_init(&m, 0), 0);
    for (int round = 0; round < 40; round++) {
        /* a batch of changes, applied as the store applies a commit */
        size_t nb = 1 + vx_rng_below(&rng, 400);
        if (vx_hitmap_needs_grow(&m, nb)) {
            vx_hitmap bigger;
            assert_int_equal(vx_hitmap_grow(&m, nb, &bigger), 0);
            assert_int_equal(bigger.n, m.n);
            vx_hitmap_free_shallow(&m);
            m = bigger;
        }
        for (size_t i = 0; i < nb; i++) {
            uint64_t l = vx_rng_below(&rng, NLABELS);
            if (round > 20 && vx_rng_below(&rng, 3) == 0) { /* churn: deletes */
                vx_hitmap_del(&m, l * 7919);
                r[l].present = false;
                continue;
            }
            r[l].present = true;
            r[l].version = vx_rng_next(&rng) >> 1;
            r[l].len = vx_rng_below(&rng, 4) == 0 ? 24 + vx_rng_below(&rng, 250) : 1 + vx_rng_below(&rng, 23);
            for (size_t b = 0; b < r[l].len; b++) r[l].id[b] = (uint8_t)vx_rng_next(&rng);
            assert_int_equal(vx_hitmap_put(&m, l * 7919, r[l].version, r[l].id, r[l].len), 0);
        }
        check_all(&m, r);
        assert_true(m.n <= m.cap - m.cap / 4);
    }
    assert_true(vx_hitmap_bytes(&m) >= m.cap * sizeof(vx_hitmap_slot));
    /* everything out: the table is empty again */
    for (uint64_t l = 0; l < NLABELS; l++) {
        vx_hitmap_del(&m, l * 7919);
        r[l].present = false;
    }
    check_all(&m, r);
    assert_int_equal(m.n, 0);
    vx_hitmap_free(&m);
    free(r);
}

/* Labels that share a home slot: deleting from the middle of a run keeps
 * the rest of the run reachable, including runs that wrap around the end. */
static void test_runs(void **state)
{
    (void)state;
    vx_hitmap m;
    assert_int_equal(vx_hitmap_init(&m, 8), 0); /* 16 slots */
    uint8_t id[1] = {1};
    for (uint64_t l = 0; l < 12; l++) assert_int_equal(vx_hitmap_put(&m, l * 16, l, id, 1), 0);
    for (uint64_t l = 0; l < 12; l += 2) vx_hitmap_del(&m, l * 16);
    for (uint64_t l = 0; l < 12; l++) {
        uint64_t v;
        const uint8_t *p;
        size_t len;
        bool found = vx_hitmap_get(&m, l * 16, &v, &p, &len);
        assert_int_equal(found, l % 2 == 1);
        if (found) assert_true(v == l);
    }
    vx_hitmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_runs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
