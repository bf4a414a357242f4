/*
 * test_retry_budget.c - the gateway's retry budget (src/gateway/retry_budget.c):
 * it starts full, each call adds per_call tokens, time adds per_s, it never
 * holds more than cap, a retry takes one token, and under a sustained
 * failure the retries granted are bounded by per_call x calls + per_s x
 * time (+ cap); eight threads drawing at once grant exactly what a single
 * thread would.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway/retry_budget.h"

#include <pthread.h>

static void test_bucket(void **unused)
{
    (void)unused;
    vx_retry_budget b;
    vx_retry_budget_init(&b, 0.2, 10, 5, 0);
    for (int i = 0; i < 5; i++) assert_true(vx_retry_budget_withdraw(&b, 0)); /* starts full */
    assert_false(vx_retry_budget_withdraw(&b, 0));
    for (int i = 0; i < 5; i++) vx_retry_budget_deposit(&b, 0); /* five calls: one retry */
    assert_true(vx_retry_budget_withdraw(&b, 0));
    assert_false(vx_retry_budget_withdraw(&b, 0));
    assert_false(vx_retry_budget_withdraw(&b, 99)); /* 0.99 tokens after 99 ms at 10/s */
    assert_true(vx_retry_budget_withdraw(&b, 200)); /* 0.99 + 1.01: two */
    assert_true(vx_retry_budget_withdraw(&b, 200));
    assert_false(vx_retry_budget_withdraw(&b, 200));
    for (int i = 0; i < 1000; i++) vx_retry_budget_deposit(&b, 200); /* capped */
    int n = 0;
    while (vx_retry_budget_withdraw(&b, 200)) n++;
    assert_int_equal(n, 5);
    uint64_t g, d;
    vx_retry_budget_counts(&b, &g, &d);
    assert_int_equal(g, 5 + 1 + 2 + 5);
    assert_true(d >= 4);
    vx_retry_budget_destroy(&b);
}

/* A storm: 100 calls/s for 10 s, each wanting 3 retries.  What is granted
 * stays under 0.2 x calls + 50/s x time + cap. */
static void test_storm_is_bounded(void **unused)
{
    (void)unused;
    vx_retry_budget b;
    vx_retry_budget_init(&b, 0.2, 50, 200, 0);
    long long granted = 0, calls = 0;
    for (long long t = 0; t < 10000; t += 10) {
        vx_retry_budget_deposit(&b, t);
        calls++;
        for (int r = 0; r < 3; r++) granted += vx_retry_budget_withdraw(&b, t);
    }
    double bound = 0.2 * (double)calls + 50.0 * 10 + 200;
    assert_true((double)granted <= bound + 1);
    assert_true((double)granted >= bound - 50); /* and it is spent, not hoarded */
    vx_retry_budget_destroy(&b);
}

typedef struct drawer {
    vx_retry_budget *b;
    int got;
    pthread_t th;
} drawer;

static void *draw_main(void *arg)
{
    drawer *d = arg;
    for (int i = 0; i < 10000; i++) d->got += vx_retry_budget_withdraw(d->b, 0);
    return NULL;
}

static void test_threads(void **unused)
{
    (void)unused;
    vx_retry_budget b;
    vx_retry_budget_init(&b, 0.2, 0.001, 1000, 0);
    drawer d[8];
    for (int i = 0; i < 8; i++) {
        d[i] = (drawer){&b, 0, 0};
        assert_int_equal(pthread_create(&d[i].th, NULL, draw_main, &d[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(d[i].th, NULL);
        total += d[i].got;
    }
    assert_int_equal(total, 1000); /* the cap, to the token */
    vx_retry_budget_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket),
        cmocka_unit_test(test_storm_is_bounded),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
