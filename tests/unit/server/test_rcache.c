/*
 * test_rcache.c - the search result cache (src/server/rcache.c): hits,
 * TTL expiry, freshness across writes (an answer computed before a write
 * completed is never served after it, even when it is stored later),
 * TinyLFU admission (one-off keys do not flush popular ones), the byte
 * budget, and coalescing (8 threads asking the same search at once share
 * one computation; a failed leader lets the others compute).  VX_SEED is
 * printed; the timing parts poll with deadlines.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "server/rcache.h"
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static vx_rcache_outcome get(vx_rcache *c, const char *coll, const char *key, char **body)
{
    size_t len;
    vx_rcache_token *t;
    vx_rcache_outcome o = vx_rcache_lookup(c, coll, key, strlen(key), body, &len, &t);
    if (o == VX_RC_LEAD) vx_rcache_finish(c, t, "answer", 6); /* compute and store */
    return o;
}

static void test_hit_and_ttl(void **unused)
{
    (void)unused;
    vx_rcache *c;
    /* long enough that the HIT right after the store holds on a busy
     * machine; the expiry below is a lower bound, which slowness cannot
     * break */
    enum { TTL_MS = 1000 };
    assert_int_equal(vx_rcache_new(1 << 20, TTL_MS, &c), 0);
    char *b = NULL;
    double t0 = vx_test_now(); /* before the store, so no earlier than it */
    assert_int_equal(get(c, "a", "q1", &b), VX_RC_LEAD);
    assert_int_equal(get(c, "a", "q1", &b), VX_RC_HIT);
    assert_memory_equal(b, "answer", 6);
    free(b);
    /* the same key in another collection is another entry */
    assert_int_equal(get(c, "b", "q1", &b), VX_RC_LEAD);
    /* expires, not before the TTL has passed since the store, and not much
     * later (the deadline is generous for slow runs) */
    vx_rcache_outcome o;
    while ((o = get(c, "a", "q1", &b)) == VX_RC_HIT) {
        free(b);
        b = NULL;
        assert_true(vx_test_now() - t0 < 10.0);
        usleep(10000);
    }
    assert_int_equal(o, VX_RC_LEAD);
    /* less 1 ms: the cache's clock counts whole milliseconds, so the
     * store's time may read up to 1 ms earlier than it was */
    assert_true(vx_test_now() - t0 >= (TTL_MS - 1) / 1000.0);
    vx_rcache_free(c);
    /* off */
    assert_int_equal(vx_rcache_new(0, 100, &c), 0);
    assert_null(c);
    assert_int_equal(get(NULL, "a", "q", &b), VX_RC_MISS);
}

static void test_writes_invalidate(void **unused)
{
    (void)unused;
    vx_rcache *c;
    assert_int_equal(vx_rcache_new(1 << 20, 60000, &c), 0);
    char *b = NULL;
    assert_int_equal(get(c, "a", "q", &b), VX_RC_LEAD);
    get(c, "b", "q", &b);
    vx_rcache_invalidate(c, "a");
    assert_int_equal(get(c, "a", "q", &b), VX_RC_LEAD); /* computed again */
    assert_int_equal(get(c, "b", "q", &b), VX_RC_HIT);  /* other collections keep theirs */
    free(b);
    /* a search that began before a write completed and finishes after it:
     * stored, but never served */
    size_t len;
    vx_rcache_token *t;
    assert_int_equal(vx_rcache_lookup(c, "a", "slow", 4, &b, &len, &t), VX_RC_LEAD);
    vx_rcache_invalidate(c, "a");
    vx_rcache_finish(c, t, "old answer", 10);
    assert_int_equal(get(c, "a", "slow", &b), VX_RC_LEAD);
    vx_rcache_free(c);
}

static void test_tinylfu(void **unused)
{
    (void)unused;
    vx_rcache *c;
    /* room for about 8 entries of ~1 KiB per shard */
    assert_int_equal(vx_rcache_new((size_t)VX_RCACHE_SHARDS * 9000, 60000, &c), 0);
    static char big[1000];
    memset(big, 'x', sizeof big);
    /* popular keys: asked for many times */
    char key[32];
    int popular = 400;
    for (int round = 0; round < 6; round++)
        for (int i = 0; i < popular; i++) {
            snprintf(key, sizeof key, "pop%d", i);
            size_t len;
            char *b;
            vx_rcache_token *t;
            if (vx_rcache_lookup(c, "a", key, strlen(key), &b, &len, &t) == VX_RC_LEAD)
                vx_rcache_finish(c, t, big, sizeof big);
            else
                free(b);
        }
    vx_rcache_stats before;
    vx_rcache_stats_get(c, &before);
    /* a scan of one-off keys */
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "once%d", i);
        size_t len;
        char *b;
        vx_rcache_token *t;
        if (vx_rcache_lookup(c, "a", key, strlen(key), &b, &len, &t) == VX_RC_LEAD) vx_rcache_finish(c, t, big, sizeof big);
        else free(b);
    }
    vx_rcache_stats after;
    vx_rcache_stats_get(c, &after);
    assert_true(after.bytes <= (size_t)VX_RCACHE_SHARDS * 9000);
    assert_true(after.rejected > 4000); /* most one-offs kept out */
    int still = 0;
    for (int i = 0; i < popular; i++) {
        snprintf(key, sizeof key, "pop%d", i);
        size_t len;
        char *b;
        vx_rcache_token *t;
        vx_rcache_outcome o = vx_rcache_lookup(c, "a", key, strlen(key), &b, &len, &t);
        if (o == VX_RC_HIT) {
            still++;
            free(b);
        } else if (o == VX_RC_LEAD) {
            vx_rcache_finish(c, t, NULL, 0);
        }
    }
    printf("tinylfu: %llu popular entries before the scan, %d of %d popular keys still cached after 5000 "
           "one-offs (%llu rejected)\n",
           (unsigned long long)before.entries, still, popular, (unsigned long long)after.rejected);
    assert_true(still >= (int)before.entries * 8 / 10);
    /* an answer bigger than a shard's budget is never stored */
    char *huge = calloc(1, 20000);
    size_t len;
    char *b;
    vx_rcache_token *t;
    assert_int_equal(vx_rcache_lookup(c, "a", "huge", 4, &b, &len, &t), VX_RC_LEAD);
    vx_rcache_finish(c, t, huge, 20000);
    assert_int_equal(vx_rcache_lookup(c, "a", "huge", 4, &b, &len, &t), VX_RC_LEAD);
    vx_rcache_finish(c, t, NULL, 0);
    free(huge);
    vx_rcache_free(c);
}

typedef struct co {
    vx_rcache *c;
    atomic_int computed, served, go;
    int fail_leader;
} co;

static void *asker(void *arg)
{
    co *x = arg;
    while (!atomic_load(&x->go)) usleep(100);
    size_t len;
    char *b;
    vx_rcache_token *t;
    vx_rcache_outcome o = vx_rcache_lookup(x->c, "a", "same", 4, &b, &len, &t);
    if (o == VX_RC_LEAD || o == VX_RC_MISS) {
        atomic_fetch_add(&x->computed, 1);
        usleep(100000); /* a slow backend: the others arrive meanwhile */
        if (o == VX_RC_LEAD) vx_rcache_finish(x->c, t, x->fail_leader-- > 0 ? NULL : "answer", 6);
    } else {
        assert_memory_equal(b, "answer", 6);
        free(b);
    }
    atomic_fetch_add(&x->served, 1);
    return NULL;
}

static void run_coalesce(int fail_leader, int *computed)
{
    co x = {0};
    assert_int_equal(vx_rcache_new(1 << 20, 60000, &x.c), 0);
    x.fail_leader = fail_leader;
    pthread_t th[8];
    for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, asker, &x);
    atomic_store(&x.go, 1);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&x.served), 8);
    *computed = atomic_load(&x.computed);
    vx_rcache_free(x.c);
}

static void test_coalescing(void **unused)
{
    (void)unused;
    int computed;
    run_coalesce(0, &computed);
    printf("coalescing: 8 identical searches, %d computed\n", computed);
    assert_true(computed <= 2); /* one, unless a thread came late enough to hit... or lead again */
    run_coalesce(1, &computed); /* the leader fails: waiters compute their own */
    assert_true(computed >= 2);
}

int main(void)
{
    printf("test_rcache: VX_SEED=%llu (no randomness)\n", (unsigned long long)vx_test_seed(1));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_ttl),
        cmocka_unit_test(test_writes_invalidate),
        cmocka_unit_test(test_tinylfu),
        cmocka_unit_test(test_coalescing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
