/*
 * test_hitmap.c - the in-memory label map of the store (store/hitmap.h)
 * against a plain reference array: random puts, replacements and deletes
 * (backward-shift deletion keeps every other entry findable), growth by
 * copy, inline and long ids.  And the map inside a store, under TSan in
 * the test command: reader threads resolving labels while a writer
 * commits inserts, updates and deletes.  The seed is printed (VX_SEED to
 * replay).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "store/hitmap.h"
#include "store/store.h"
#include "testutil.h"

#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define HAVE_LSAN 1
#endif

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

/* A live map's long ids are reachable to a leak checker: the pointer sits
 * aligned in its slot (LSan looks for pointers at aligned words only; the
 * fuzzer once reported a live long id as leaked).  Without LSan (release
 * builds) this checks the round trip only. */
static void test_long_ids_reachable(void **state)
{
    (void)state;
    vx_hitmap m;
    assert_int_equal(vx_hitmap_init(&m, 64), 0);
    uint8_t id[40];
    for (uint64_t l = 0; l < 50; l++) {
        memset(id, (int)('a' + l % 26), sizeof id);
        assert_int_equal(vx_hitmap_put(&m, l, l, id, 24 + (size_t)(l % 16)), 0);
    }
#ifdef HAVE_LSAN
    assert_int_equal(__lsan_do_recoverable_leak_check(), 0);
#endif
    for (uint64_t l = 0; l < 50; l++) {
        uint64_t v;
        const uint8_t *p;
        size_t len;
        assert_true(vx_hitmap_get(&m, l, &v, &p, &len));
        assert_int_equal(len, 24 + l % 16);
        assert_int_equal(p[len - 1], 'a' + l % 26);
    }
    vx_hitmap_free(&m);
}

/* ---- the map in a store, with concurrent readers ---------------------------------- */

enum { MAXL = 20000 };
#ifndef NREADERS
#define NREADERS 3
#endif

typedef struct shared {
    vx_store *st;
    _Atomic uint64_t owner[2 * MAXL]; /* label -> id + 1, set before the label's commit */
    _Atomic uint64_t newest;      /* newest version committed */
    _Atomic bool stop;
    _Atomic uint64_t found, checked;
} shared;

static void *reader_main(void *arg)
{
    shared *sh = arg;
    uint64_t x = (uint64_t)(uintptr_t)&x;
    while (!atomic_load(&sh->stop)) {
        vx_store_txn *t;
        assert_int_equal(vx_store_rbegin(sh->st, &t), 0);
        for (int i = 0; i < 200; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t label = (x >> 33) % (2 * MAXL);
            vx_point_id id;
            uint64_t version;
            int rc = vx_store_hit_by_label(t, label, &id, &version);
            atomic_fetch_add(&sh->checked, 1);
            if (rc == VX_ENOTFOUND) continue;
            assert_int_equal(rc, 0);
            /* the id is the one given this label, the version one that
             * was committed by the time the lookup ended */
            uint64_t own = atomic_load(&sh->owner[label]);
            if (own == 0 || vx_id_uint(&id) != own - 1)
                fail_msg("label %llu: id %llu, owner %llu", (unsigned long long)label,
                         (unsigned long long)vx_id_uint(&id), (unsigned long long)own);
            assert_true(version >= 1 && version <= atomic_load(&sh->newest) + 1);
            atomic_fetch_add(&sh->found, 1);
        }
        vx_store_rend(t);
    }
    return NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void test_store_concurrent_readers(void **state)
{
    (void)state;
    char dir[] = "/tmp/vx_hitmap_XXXXXX";
    assert_non_null(mkdtemp(dir));
    shared *sh = calloc(1, sizeof(*sh));
    assert_non_null(sh);
    char err[VX_STORE_ERRMSG_LEN];
    assert_int_equal(vx_store_open(dir, NULL, &sh->st, err), 0);
    pthread_t th[3];
    for (int i = 0; i < NREADERS; i++) assert_int_equal(pthread_create(&th[i], NULL, reader_main, sh), 0);
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(22));
    uint64_t next_id = 0, version = 0;
    uint64_t *label_of = calloc(MAXL, sizeof(uint64_t)); /* id -> label + 1, 0: deleted */
    assert_non_null(label_of);
    float v[4] = {1, 2, 3, 4};
    /* commits of up to 300 changes, growing the map several times, until
     * the labels (new points, and deleted ones brought back) near 2 * MAXL */
    uint64_t labels_used = 0;
    while (next_id < MAXL - 300 && labels_used < 2 * MAXL - 300) {
        vx_store_txn *t;
        assert_int_equal(vx_store_wbegin(sh->st, &t), 0);
        version++;
        size_t nb = 1 + vx_rng_below(&rng, 300);
        for (size_t i = 0; i < nb; i++) {
            uint64_t r = vx_rng_below(&rng, 10);
            vx_point_id pid;
            uint64_t label;
            bool existed;
            if (r < 6 || next_id == 0) { /* a new point: its label is the next one */
                vx_id_from_uint(&pid, next_id);
                assert_int_equal(vx_store_put(t, &pid, v, 4, "", 0, version, &label, &existed), 0);
                assert_false(existed);
                assert_true(label < 2 * MAXL);
                labels_used = label + 1 > labels_used ? label + 1 : labels_used;
                atomic_store(&sh->owner[label], next_id + 1);
                label_of[next_id++] = label + 1;
            } else {
                uint64_t id = vx_rng_below(&rng, next_id);
                vx_id_from_uint(&pid, id);
                if (r < 8) { /* update, or bring back a deleted one under a new label */
                    assert_int_equal(vx_store_put(t, &pid, v, 4, "", 0, version, &label, &existed), 0);
                    assert_true(label < 2 * MAXL);
                    labels_used = label + 1 > labels_used ? label + 1 : labels_used;
                    atomic_store(&sh->owner[label], id + 1);
                    label_of[id] = label + 1;
                } else if (label_of[id]) {
                    int rc = vx_store_del(t, &pid, &label);
                    assert_true(rc == 0 || rc == VX_ENOTFOUND);
                    if (rc == 0) label_of[id] = 0;
                }
            }
        }
        assert_int_equal(vx_store_commit(t), 0);
        atomic_store(&sh->newest, version);
    }
    atomic_store(&sh->stop, true);
    for (int i = 0; i < NREADERS; i++) pthread_join(th[i], NULL);
    /* at rest, the map and LMDB agree on every label */
    vx_store_txn *r, *w;
    assert_int_equal(vx_store_rbegin(sh->st, &r), 0);
    assert_int_equal(vx_store_wbegin(sh->st, &w), 0); /* reads LMDB, not the map */
    for (uint64_t l = 0; l < 2 * MAXL; l++) {
        vx_point_id a, b;
        uint64_t va = 0, vb = 0;
        int ra = vx_store_hit_by_label(r, l, &a, &va), rb = vx_store_hit_by_label(w, l, &b, &vb);
        assert_int_equal(ra, rb);
        if (ra == 0) assert_true(vx_id_equal(&a, &b) && va == vb);
    }
    vx_store_abort(w);
    vx_store_rend(r);
    printf("# %llu lookups, %llu found\n", (unsigned long long)atomic_load(&sh->checked),
           (unsigned long long)atomic_load(&sh->found));
    assert_true(atomic_load(&sh->found) > 0);
    vx_store_close(sh->st);
    free(label_of);
    free(sh);
    assert_int_equal(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_runs),
        cmocka_unit_test(test_long_ids_reachable),
        cmocka_unit_test(test_store_concurrent_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
