/*
 * test_decide.c - the placement driver's pure decisions (src/pd/decide.c):
 * the seed's capacity score, zone-then-rack spreading, capacity and shard
 * count weighting, VX_EFULL, determinism (also under a permuted worker
 * array), the 15 s heartbeat timeout and recovery, re-replication after a
 * worker goes UNHEALTHY and surplus removal when it comes back, drains,
 * the imbalance threshold, new workers, hot shards, move budgets, and a
 * property check over random clusters (VX_SEED=<n> reproduces a run; the
 * seed is printed).
 *
 * No testutil: it needs the index objects; a splitmix64 here is enough.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "pd/decide.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GiB (1024ull * 1024 * 1024)
#define TiB (1024ull * GiB)

/* ---- fixtures ---------------------------------------------------------------- */

enum { MAXW = 64, MAXS = 128, MAXA = 256 };

typedef struct fix {
    vx_pd_worker w[MAXW];
    vx_pd_shard s[MAXS];
    vx_pd_cluster c;
} fix;

static void fix_init(fix *f)
{
    memset(f, 0, sizeof *f);
    f->c.workers = f->w;
    f->c.shards = f->s;
}

/* A uniform worker: 16 cores at 50 %, 64 GiB with 16 used, 1 TiB with 100
 * GiB used, heard from at t = 0. */
static vx_pd_worker *add_worker(fix *f, uint64_t id, const char *zone, const char *rack,
                                vx_pd_worker_state st)
{
    assert_true(f->c.nworkers < MAXW);
    vx_pd_worker *w = &f->w[f->c.nworkers++];
    memset(w, 0, sizeof *w);
    w->id = id;
    snprintf(w->zone, sizeof w->zone, "%s", zone);
    snprintf(w->rack, sizeof w->rack, "%s", rack);
    w->state = st;
    w->cpu_cores = 16;
    w->mem_bytes = 64 * GiB;
    w->disk_bytes = TiB;
    w->cpu_util = 0.5;
    w->mem_used = 16 * GiB;
    w->disk_used = 100 * GiB;
    return w;
}

/* A shard with replicas on the given worker ids (0-terminated). */
static vx_pd_shard *add_shard(fix *f, uint64_t group, unsigned rf, const uint64_t *ids)
{
    assert_true(f->c.nshards < MAXS);
    vx_pd_shard *s = &f->s[f->c.nshards++];
    memset(s, 0, sizeof *s);
    s->collection_id = 1;
    s->shard_index = group;
    s->group_id = group;
    s->rf = rf;
    s->size_bytes = GiB;
    for (; *ids != 0; ids++) {
        s->replicas[s->n].worker = *ids;
        s->replicas[s->n].voter = true;
        s->n++;
    }
    return s;
}

static const vx_pd_worker *find_w(const fix *f, uint64_t id)
{
    for (size_t i = 0; i < f->c.nworkers; i++)
        if (f->w[i].id == id) return &f->w[i];
    return NULL;
}

static vx_pd_shard *find_s(fix *f, uint64_t group)
{
    for (size_t i = 0; i < f->c.nshards; i++)
        if (f->s[i].group_id == group) return &f->s[i];
    return NULL;
}

static bool shard_holds(const vx_pd_shard *s, uint64_t id)
{
    for (unsigned r = 0; r < s->n; r++)
        if (s->replicas[r].worker == id) return true;
    return false;
}

static unsigned distinct_zones(const fix *f, const uint64_t *ids, unsigned n)
{
    unsigned z = 0;
    for (unsigned i = 0; i < n; i++) {
        bool fresh = true;
        for (unsigned j = 0; j < i; j++)
            if (strcmp(find_w(f, ids[j])->zone, find_w(f, ids[i])->zone) == 0) fresh = false;
        z += fresh;
    }
    return z;
}

static unsigned distinct_racks(const fix *f, const uint64_t *ids, unsigned n)
{
    unsigned r = 0;
    for (unsigned i = 0; i < n; i++) {
        bool fresh = true;
        for (unsigned j = 0; j < i; j++) {
            const vx_pd_worker *a = find_w(f, ids[j]), *b = find_w(f, ids[i]);
            if (strcmp(a->zone, b->zone) == 0 && strcmp(a->rack, b->rack) == 0) fresh = false;
        }
        r += fresh;
    }
    return r;
}

/* Apply actions as if they completed at once (moves: target replaces source). */
static void apply_actions(fix *f, const vx_pd_action *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        vx_pd_shard *s = find_s(f, a[i].group_id);
        assert_non_null(s);
        if (a[i].kind == VX_PD_ADD_REPLICA) {
            assert_true(s->n < VX_PD_MAX_REPLICAS);
            s->replicas[s->n].worker = a[i].to_worker;
            s->replicas[s->n].voter = true;
            s->n++;
            continue;
        }
        unsigned r = 0;
        while (r < s->n && s->replicas[r].worker != a[i].from_worker)
            r++;
        assert_true(r < s->n);
        if (a[i].kind == VX_PD_MOVE_REPLICA) {
            s->replicas[r].worker = a[i].to_worker;
        } else {
            s->replicas[r] = s->replicas[s->n - 1];
            s->n--;
        }
    }
}

/* ---- splitmix64 --------------------------------------------------------------- */

static uint64_t sm_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t sm_below(uint64_t *x, uint64_t n)
{
    return n ? sm_next(x) % n : 0;
}
static double sm_unit(uint64_t *x)
{
    return (double)(sm_next(x) >> 11) / 9007199254740992.0;
}

static uint64_t test_seed(void)
{
    static uint64_t seed;
    static bool have;
    if (!have) {
        const char *e = getenv("VX_SEED");
        seed = e ? strtoull(e, NULL, 0) : 20240605;
        have = true;
        fprintf(stderr, "test_decide: VX_SEED=%" PRIu64 "\n", seed);
    }
    return seed;
}

/* ---- capacity score -------------------------------------------------------------- */

static void test_capacity_score_seed_example(void **state)
{
    (void)state;
    /* seed §4.1: 24 cores, 256 GB, 1 TB -> 900 + 3200 + 600 = 4700 */
    vx_pd_worker w = {.id = 42, .cpu_cores = 24, .mem_bytes = 256 * GiB, .disk_bytes = TiB};
    assert_float_equal(vx_pd_capacity_score(&w), 4700.0, 1e-9);
    /* idle and empty: free == capacity */
    assert_float_equal(vx_pd_free_score(&w), 4700.0, 1e-9);
    /* half the CPU, a quarter of memory, half the disk in use */
    w.cpu_util = 0.5;
    w.mem_used = 64 * GiB;
    w.disk_used = TiB / 2;
    assert_float_equal(vx_pd_free_score(&w), 450.0 + 2400.0 + 300.0, 1e-9);
    /* out-of-range loads are clamped, never negative */
    w.cpu_util = 3.0;
    w.mem_used = 512 * GiB;
    w.disk_used = 2 * TiB;
    assert_float_equal(vx_pd_free_score(&w), 0.0, 1e-12);
    w.cpu_util = -1.0;
    assert_float_equal(vx_pd_free_score(&w), 900.0, 1e-9);
}

/* ---- placement --------------------------------------------------------------------- */

typedef struct wspec {
    uint64_t id;
    const char *zone, *rack;
} wspec;

/* The chosen set spreads as evenly as the eligible workers allow: no zone
 * holds two more than another zone that still has an unchosen eligible
 * worker, and likewise for racks inside a zone. */
static void assert_spread_balanced(const fix *f, const uint64_t *out, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = 0; j < i; j++)
            assert_true(out[i] != out[j]);
    for (size_t a = 0; a < f->c.nworkers; a++) {
        const vx_pd_worker *u = &f->w[a];
        bool chosen = false;
        for (unsigned i = 0; i < n; i++)
            chosen |= out[i] == u->id;
        if (chosen || (u->state != VX_PD_READY && u->state != VX_PD_ACTIVE)) continue;
        unsigned in_u_zone = 0, in_u_rack = 0;
        for (unsigned i = 0; i < n; i++) {
            const vx_pd_worker *v = find_w(f, out[i]);
            in_u_zone += strcmp(v->zone, u->zone) == 0;
            in_u_rack += strcmp(v->zone, u->zone) == 0 && strcmp(v->rack, u->rack) == 0;
        }
        for (unsigned i = 0; i < n; i++) {
            const vx_pd_worker *v = find_w(f, out[i]);
            unsigned zc = 0, rc = 0;
            for (unsigned j = 0; j < n; j++) {
                const vx_pd_worker *x = find_w(f, out[j]);
                zc += strcmp(x->zone, v->zone) == 0;
                rc += strcmp(x->zone, v->zone) == 0 && strcmp(x->rack, v->rack) == 0;
            }
            /* u could have taken v's place in a less crowded zone */
            assert_false(zc >= in_u_zone + 2);
            if (strcmp(v->zone, u->zone) == 0) assert_false(rc >= in_u_rack + 2);
        }
    }
}

static void test_place_zone_spreading(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        wspec w[8];
        unsigned rf;
        unsigned zones; /* distinct zones expected */
        unsigned racks; /* distinct racks expected */
    } cases[] = {
        {"3 zones x 2 workers, rf 3: one per zone",
         {{1, "a", "r1"},
          {2, "a", "r2"},
          {3, "b", "r1"},
          {4, "b", "r2"},
          {5, "c", "r1"},
          {6, "c", "r2"}},
         3,
         3,
         3},
        {"2 zones, rf 3: 2 + 1, the pair on different racks",
         {{1, "a", "r1"}, {2, "a", "r1"}, {3, "a", "r2"}, {4, "b", "r1"}, {5, "b", "r1"}},
         3,
         2,
         3},
        {"2 zones with one rack each, rf 3: 2 + 1",
         {{1, "a", "r1"}, {2, "a", "r1"}, {3, "b", "r1"}, {4, "b", "r1"}},
         3,
         2,
         2},
        {"1 zone, 3 racks, rf 3: one per rack",
         {{1, "a", "r1"}, {2, "a", "r1"}, {3, "a", "r2"}, {4, "a", "r2"}, {5, "a", "r3"}},
         3,
         1,
         3},
        {"rack names are scoped by zone",
         {{1, "a", "r1"}, {2, "b", "r1"}, {3, "b", "r1"}},
         2,
         2,
         2},
        {"rf 5 over 3 zones: 2 + 2 + 1",
         {{1, "a", "r1"},
          {2, "a", "r2"},
          {3, "b", "r1"},
          {4, "b", "r2"},
          {5, "c", "r1"},
          {6, "c", "r2"},
          {7, "c", "r3"}},
         5,
         3,
         5},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fix f;
        fix_init(&f);
        for (const wspec *w = cases[k].w; w->id != 0; w++)
            add_worker(&f, w->id, w->zone, w->rack, VX_PD_ACTIVE);
        uint64_t out[VX_PD_MAX_REPLICAS];
        assert_int_equal(vx_pd_place(&f.c, cases[k].rf, NULL, 0, out), 0);
        if (distinct_zones(&f, out, cases[k].rf) != cases[k].zones ||
            distinct_racks(&f, out, cases[k].rf) != cases[k].racks)
            fail_msg("%s: %u zones, %u racks", cases[k].name, distinct_zones(&f, out, cases[k].rf),
                     distinct_racks(&f, out, cases[k].rf));
        assert_spread_balanced(&f, out, cases[k].rf);
    }
}

static void test_place_zone_beats_capacity(void **state)
{
    (void)state;
    fix f;
    fix_init(&f);
    for (uint64_t id = 1; id <= 4; id++) {
        vx_pd_worker *w = add_worker(&f, id, "big", id % 2 ? "r1" : "r2", VX_PD_ACTIVE);
        w->cpu_cores = 64;
        w->mem_bytes = 512 * GiB;
    }
    add_worker(&f, 9, "small", "r1", VX_PD_ACTIVE)->cpu_util = 0.95;
    uint64_t out[2];
    assert_int_equal(vx_pd_place(&f.c, 2, NULL, 0, out), 0);
    assert_int_equal(distinct_zones(&f, out, 2), 2);
    assert_true(out[0] == 9 || out[1] == 9);
}

static void test_place_capacity_weighting(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        double util[3];
        uint64_t mem_used_gib[3];
        unsigned shards[3]; /* replicas hosted */
        uint64_t expect;
    } cases[] = {
        {"equal: lowest id", {0.5, 0.5, 0.5}, {16, 16, 16}, {0, 0, 0}, 1},
        {"idle CPU wins", {0.5, 0.1, 0.5}, {16, 16, 16}, {0, 0, 0}, 2},
        {"free memory wins", {0.5, 0.5, 0.5}, {16, 16, 2}, {0, 0, 0}, 3},
        {"fewer shards win", {0.5, 0.5, 0.5}, {16, 16, 16}, {3, 1, 2}, 2},
        {"capacity outweighs one shard", {0.9, 0.9, 0.0}, {60, 60, 0}, {0, 0, 1}, 3},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fix f;
        fix_init(&f);
        for (unsigned i = 0; i < 3; i++) {
            vx_pd_worker *w = add_worker(&f, i + 1, "z", "r", VX_PD_ACTIVE);
            w->cpu_util = cases[k].util[i];
            w->mem_used = cases[k].mem_used_gib[i] * GiB;
        }
        uint64_t g = 100;
        for (unsigned i = 0; i < 3; i++)
            for (unsigned j = 0; j < cases[k].shards[i]; j++) {
                uint64_t ids[] = {i + 1, 0};
                add_shard(&f, g++, 1, ids);
            }
        uint64_t out[1];
        assert_int_equal(vx_pd_place(&f.c, 1, NULL, 0, out), 0);
        if (out[0] != cases[k].expect)
            fail_msg("%s: got worker %" PRIu64 ", want %" PRIu64, cases[k].name, out[0],
                     cases[k].expect);
    }
    /* the bigger machine wins with equal load */
    fix f;
    fix_init(&f);
    add_worker(&f, 1, "z", "r", VX_PD_ACTIVE);
    add_worker(&f, 2, "z", "r", VX_PD_ACTIVE)->cpu_cores = 32;
    uint64_t out[2];
    assert_int_equal(vx_pd_place(&f.c, 2, NULL, 0, out), 0);
    assert_int_equal(out[0], 2);
    assert_int_equal(out[1], 1);
}

static void test_place_insufficient_and_invalid(void **state)
{
    (void)state;
    fix f;
    fix_init(&f);
    add_worker(&f, 1, "a", "r", VX_PD_ACTIVE);
    add_worker(&f, 2, "b", "r", VX_PD_READY);
    add_worker(&f, 3, "c", "r", VX_PD_UNHEALTHY);
    add_worker(&f, 4, "c", "r", VX_PD_DRAINING);
    add_worker(&f, 5, "c", "r", VX_PD_STANDBY);
    add_worker(&f, 6, "c", "r", VX_PD_JOINING);
    add_worker(&f, 7, "c", "r", VX_PD_ERROR);
    add_worker(&f, 8, "c", "r", VX_PD_REMOVED);
    uint64_t out[3] = {77, 77, 77};
    assert_int_equal(vx_pd_place(&f.c, 3, NULL, 0, out), VX_EFULL);
    assert_int_equal(out[0], 77); /* untouched on error */
    assert_int_equal(vx_pd_place(&f.c, 2, NULL, 0, out), 0);
    assert_true((out[0] == 1 && out[1] == 2) || (out[0] == 2 && out[1] == 1));
    uint64_t ex[] = {2, 99};
    assert_int_equal(vx_pd_place(&f.c, 2, ex, 2, out), VX_EFULL);
    assert_int_equal(vx_pd_place(&f.c, 1, ex, 2, out), 0);
    assert_int_equal(out[0], 1);

    assert_int_equal(vx_pd_place(&f.c, 0, NULL, 0, out), VX_EINVAL);
    assert_int_equal(vx_pd_place(&f.c, VX_PD_MAX_REPLICAS + 1, NULL, 0, out), VX_EINVAL);
    assert_int_equal(vx_pd_place(NULL, 1, NULL, 0, out), VX_EINVAL);
    assert_int_equal(vx_pd_place(&f.c, 1, NULL, 0, NULL), VX_EINVAL);
    fix_init(&f);
    assert_int_equal(vx_pd_place(&f.c, 1, NULL, 0, out), VX_EFULL); /* empty cluster */
    add_worker(&f, 5, "a", "r", VX_PD_ACTIVE);
    add_worker(&f, 5, "b", "r", VX_PD_ACTIVE);
    assert_int_equal(vx_pd_place(&f.c, 1, NULL, 0, out), VX_EINVAL); /* duplicate id */
    f.w[1].id = 0;
    assert_int_equal(vx_pd_place(&f.c, 1, NULL, 0, out), VX_EINVAL); /* id 0 */
    f.w[1].id = 6;
    uint64_t ids[] = {5, 0};
    add_shard(&f, 1, 0, ids); /* rf 0 */
    assert_int_equal(vx_pd_place(&f.c, 1, NULL, 0, out), VX_EINVAL);
    f.s[0].rf = 1;
    f.s[0].replicas[1].worker = 5; /* the same worker twice */
    f.s[0].n = 2;
    assert_int_equal(vx_pd_place(&f.c, 1, NULL, 0, out), VX_EINVAL);
}

/* ---- random clusters ------------------------------------------------------------------ */

static const vx_pd_balance_opts wide = {0.20, 64, 256};

static void random_cluster(fix *f, uint64_t *rng)
{
    static const vx_pd_worker_state states[] = {
        VX_PD_ACTIVE,   VX_PD_ACTIVE,    VX_PD_ACTIVE,    VX_PD_ACTIVE,  VX_PD_ACTIVE,
        VX_PD_ACTIVE,   VX_PD_ACTIVE,    VX_PD_READY,     VX_PD_READY,   VX_PD_DRAINING,
        VX_PD_DRAINING, VX_PD_UNHEALTHY, VX_PD_UNHEALTHY, VX_PD_STANDBY, VX_PD_JOINING,
        VX_PD_ERROR,    VX_PD_REMOVED};
    fix_init(f);
    unsigned nz = 1 + (unsigned)sm_below(rng, 4), nr = 1 + (unsigned)sm_below(rng, 3);
    unsigned nw = 1 + (unsigned)sm_below(rng, 14);
    for (unsigned i = 0; i < nw; i++) {
        char zone[16], rack[16];
        snprintf(zone, sizeof zone, "z%u", (unsigned)sm_below(rng, nz));
        snprintf(rack, sizeof rack, "r%u", (unsigned)sm_below(rng, nr));
        uint64_t id = 1 + i * 3 + sm_below(rng, 3); /* not in array order of ties */
        vx_pd_worker *w =
            add_worker(f, id, zone, rack, states[sm_below(rng, sizeof states / sizeof states[0])]);
        w->cpu_cores = 4 + (uint32_t)sm_below(rng, 61);
        w->mem_bytes = (8 + sm_below(rng, 500)) * GiB;
        w->disk_bytes = sm_below(rng, 8) == 0 ? 0 : (1 + sm_below(rng, 4)) * TiB;
        w->cpu_util = sm_unit(rng);
        w->mem_used = sm_below(rng, w->mem_bytes);
        w->disk_used = w->disk_bytes ? sm_below(rng, w->disk_bytes / 2) : 0;
        w->qps = (double)sm_below(rng, 5) * 1000.0 * sm_unit(rng);
    }
    /* shuffle the array so ids are not sorted */
    for (unsigned i = nw; i > 1; i--) {
        unsigned j = (unsigned)sm_below(rng, i);
        vx_pd_worker t = f->w[i - 1];
        f->w[i - 1] = f->w[j];
        f->w[j] = t;
    }
    unsigned ns = (unsigned)sm_below(rng, 40);
    for (unsigned s = 0; s < ns; s++) {
        unsigned rf = 1 + (unsigned)sm_below(rng, 5);
        int n = (int)rf + (int)sm_below(rng, 3) - 1;
        if (n < 1) n = 1;
        if ((unsigned)n > nw) n = (int)nw;
        uint64_t ids[VX_PD_MAX_REPLICAS + 1] = {0};
        for (int r = 0; r < n; r++) {
            uint64_t id;
            bool dup;
            do {
                id = f->w[sm_below(rng, nw)].id;
                dup = false;
                for (int q = 0; q < r; q++)
                    dup |= ids[q] == id;
            } while (dup);
            ids[r] = id;
        }
        vx_pd_shard *sh = add_shard(f, 1000 + s * 7, rf, ids);
        for (unsigned r = 1; r < sh->n; r++)
            sh->replicas[r].voter = sm_below(rng, 10) != 0; /* some learners */
        sh->moving = sm_below(rng, 10) == 0;
        sh->qps = sm_below(rng, 8) == 0 ? 5000.0 * sm_unit(rng) : 100.0 * sm_unit(rng);
        sh->size_bytes = (1 + sm_below(rng, 10)) * GiB;
        sh->leader_hint = sm_below(rng, 4) ? ids[sm_below(rng, (uint64_t)n)] : 0;
    }
}

static bool eligible_w(const vx_pd_worker *w)
{
    return w->state == VX_PD_READY || w->state == VX_PD_ACTIVE;
}

static bool healthy_w(const vx_pd_worker *w)
{
    return w != NULL && w->state != VX_PD_UNHEALTHY && w->state != VX_PD_ERROR &&
           w->state != VX_PD_REMOVED;
}

static unsigned healthy_ids(const fix *f, const vx_pd_shard *s, uint64_t *ids)
{
    unsigned n = 0;
    for (unsigned r = 0; r < s->n; r++)
        if (healthy_w(find_w(f, s->replicas[r].worker))) ids[n++] = s->replicas[r].worker;
    return n;
}

static unsigned eligible_zones(const fix *f)
{
    uint64_t ids[MAXW] = {0};
    unsigned n = 0;
    for (size_t i = 0; i < f->c.nworkers; i++)
        if (eligible_w(&f->w[i])) ids[n++] = f->w[i].id;
    return distinct_zones(f, ids, n);
}

static bool in_zones(const fix *f, const uint64_t *ids, unsigned n, const char *zone)
{
    for (unsigned i = 0; i < n; i++)
        if (strcmp(find_w(f, ids[i])->zone, zone) == 0) return true;
    return false;
}

/* Disk room as the plan sees it before any action (random clusters give
 * every eligible worker room for several shards, so this is exact enough
 * for the zone property: 40 shards of at most 10 GiB against >= 512 GiB free). */
static bool room(const vx_pd_worker *w, uint64_t size)
{
    return w->disk_bytes == 0 || w->disk_bytes - w->disk_used >= size;
}

static bool quorum(const fix *f, const vx_pd_shard *s)
{
    unsigned voters = 0, up = 0;
    for (unsigned r = 0; r < s->n; r++) {
        if (!s->replicas[r].voter) continue;
        voters++;
        up += healthy_w(find_w(f, s->replicas[r].worker));
    }
    return 2 * up > voters;
}

static void check_repair(fix *f, const vx_pd_action *a, size_t n)
{
    bool seen[MAXS] = {false};
    for (size_t i = 0; i < n; i++) {
        vx_pd_shard *s = find_s(f, a[i].group_id);
        assert_non_null(s);
        size_t si = (size_t)(s - f->s);
        assert_false(seen[si]);
        seen[si] = true;
        assert_false(s->moving);
        assert_true(quorum(f, s));
        uint64_t h[VX_PD_MAX_REPLICAS];
        unsigned nh = healthy_ids(f, s, h);
        if (a[i].kind == VX_PD_ADD_REPLICA) {
            assert_true(nh < s->rf);
            assert_false(shard_holds(s, a[i].to_worker));
            const vx_pd_worker *t = find_w(f, a[i].to_worker);
            assert_non_null(t);
            assert_true(eligible_w(t));
            /* a new zone whenever some eligible non-holder offers one */
            bool new_zone_available = false;
            for (size_t w = 0; w < f->c.nworkers; w++)
                if (eligible_w(&f->w[w]) && !shard_holds(s, f->w[w].id) &&
                    room(&f->w[w], s->size_bytes) && !in_zones(f, h, nh, f->w[w].zone))
                    new_zone_available = true;
            if (new_zone_available) assert_false(in_zones(f, h, nh, t->zone));
        } else {
            assert_int_equal(a[i].kind, VX_PD_REMOVE_REPLICA);
            assert_true(shard_holds(s, a[i].from_worker));
            const vx_pd_worker *v = find_w(f, a[i].from_worker);
            if (healthy_w(v)) {
                assert_true(nh > s->rf);
                uint64_t after[VX_PD_MAX_REPLICAS];
                unsigned na = 0;
                for (unsigned r = 0; r < nh; r++)
                    if (h[r] != v->id) after[na++] = h[r];
                unsigned zb = distinct_zones(f, h, nh), za = distinct_zones(f, after, na);
                assert_true(za >= (zb < s->rf ? zb : s->rf));
                /* never the leader when another would do */
                if (s->leader_hint != 0) assert_int_not_equal(v->id, s->leader_hint);
            }
        }
    }
    /* a shard without an action needs none, or has nowhere to go */
    for (size_t si = 0; si < f->c.nshards && n < MAXA; si++) {
        const vx_pd_shard *s = &f->s[si];
        uint64_t h[VX_PD_MAX_REPLICAS];
        unsigned nh = healthy_ids(f, s, h);
        if (s->moving || seen[si] || !quorum(f, s)) continue;
        if (nh < s->rf) {
            for (size_t w = 0; w < f->c.nworkers; w++)
                if (eligible_w(&f->w[w]) && !shard_holds(s, f->w[w].id) &&
                    room(&f->w[w], s->size_bytes))
                    fail_msg("group %" PRIu64 ": under-replicated, worker %" PRIu64 " free",
                             s->group_id, f->w[w].id);
            continue;
        }
        assert_int_equal(nh, s->rf); /* surplus always handled */
        for (unsigned r = 0; r < s->n; r++) {
            const vx_pd_worker *w = find_w(f, s->replicas[r].worker);
            assert_true(w != NULL && w->state != VX_PD_ERROR && w->state != VX_PD_REMOVED);
        }
    }
}

static void check_balance(fix *f, const vx_pd_balance_opts *o, const vx_pd_action *a, size_t n)
{
    bool seen[MAXS] = {false};
    unsigned inflight[MAXW] = {0}, added[MAXW] = {0}, total = 0;
    for (size_t si = 0; si < f->c.nshards; si++) {
        if (!f->s[si].moving) continue;
        total++;
        for (unsigned r = 0; r < f->s[si].n; r++)
            for (size_t w = 0; w < f->c.nworkers; w++)
                inflight[w] += f->w[w].id == f->s[si].replicas[r].worker;
    }
    unsigned zavail = eligible_zones(f);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].kind, VX_PD_MOVE_REPLICA);
        assert_non_null(a[i].reason);
        vx_pd_shard *s = find_s(f, a[i].group_id);
        assert_non_null(s);
        size_t si = (size_t)(s - f->s);
        assert_false(seen[si]);
        seen[si] = true;
        assert_false(s->moving);
        assert_true(quorum(f, s));
        assert_true(shard_holds(s, a[i].from_worker));
        assert_false(shard_holds(s, a[i].to_worker));
        const vx_pd_worker *src = find_w(f, a[i].from_worker), *dst = find_w(f, a[i].to_worker);
        assert_non_null(src);
        assert_non_null(dst);
        assert_true(eligible_w(dst));
        assert_true(eligible_w(src) || src->state == VX_PD_DRAINING);
        for (size_t w = 0; w < f->c.nworkers; w++)
            added[w] += f->w[w].id == src->id || f->w[w].id == dst->id;
        uint64_t h[VX_PD_MAX_REPLICAS], after[VX_PD_MAX_REPLICAS];
        unsigned nh = healthy_ids(f, s, h);
        assert_int_equal(nh, s->rf);
        for (unsigned r = 0; r < nh; r++)
            after[r] = h[r] == src->id ? dst->id : h[r];
        unsigned zb = distinct_zones(f, h, nh), za = distinct_zones(f, after, nh);
        unsigned floor = s->rf < zavail ? s->rf : zavail;
        if (floor > zb) floor = zb;
        if (za < floor)
            fail_msg("group %" PRIu64 " (%s): zones %u -> %u, floor %u", s->group_id, a[i].reason,
                     zb, za, floor);
        if (src->state != VX_PD_DRAINING) {
            assert_true(za >= zb);
            assert_true(distinct_racks(f, after, nh) >= distinct_racks(f, h, nh));
        }
    }
    if (n > 0) assert_true(total + n <= o->max_moves);
    for (size_t w = 0; w < f->c.nworkers; w++)
        if (added[w] > 0) assert_true(inflight[w] + added[w] <= o->max_moves_per_worker);
}

static bool same_actions(const vx_pd_action *a, size_t na, const vx_pd_action *b, size_t nb)
{
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].kind != b[i].kind || a[i].group_id != b[i].group_id ||
            a[i].from_worker != b[i].from_worker || a[i].to_worker != b[i].to_worker ||
            strcmp(a[i].reason, b[i].reason) != 0)
            return false;
    return true;
}

static void test_property_random_clusters(void **state)
{
    (void)state;
    uint64_t rng = test_seed();
    static const vx_pd_balance_opts optsv[] = {
        VX_PD_BALANCE_OPTS_DEFAULT, {0.20, 64, 256}, {0.0, 1, 3}, {0.5, 3, 100}};
    size_t nrep = 0, nbal = 0;
    static const char *const why[] = {"drain", "hot shard", "new worker", "shard count imbalance",
                                      "load imbalance"};
    size_t why_n[5] = {0};
    for (int iter = 0; iter < 500; iter++) {
        static fix f, g;
        random_cluster(&f, &rng);
        vx_pd_action a[MAXA], b[MAXA];
        size_t n, m;

        assert_int_equal(vx_pd_repair(&f.c, a, MAXA, &n), 0);
        check_repair(&f, a, n);
        assert_int_equal(vx_pd_repair(&f.c, b, MAXA, &m), 0);
        assert_true(same_actions(a, n, b, m));
        nrep += n;

        const vx_pd_balance_opts *o = &optsv[iter % 4];
        assert_int_equal(vx_pd_balance(&f.c, o, a, MAXA, &n), 0);
        check_balance(&f, o, a, n);
        nbal += n;
        for (size_t i = 0; i < n; i++)
            for (size_t r = 0; r < sizeof why / sizeof why[0]; r++)
                why_n[r] += strcmp(a[i].reason, why[r]) == 0;
        /* determinism, also against a reversed worker array */
        g = f;
        g.c.workers = g.w;
        g.c.shards = g.s;
        for (size_t i = 0; i < g.c.nworkers; i++)
            g.w[i] = f.w[f.c.nworkers - 1 - i];
        assert_int_equal(vx_pd_balance(&g.c, o, b, MAXA, &m), 0);
        if (!same_actions(a, n, b, m))
            fail_msg("iteration %d: balance depends on worker order", iter);
        assert_int_equal(vx_pd_repair(&g.c, b, MAXA, &m), 0);
        assert_int_equal(vx_pd_repair(&f.c, a, MAXA, &n), 0);
        assert_true(same_actions(a, n, b, m));

        /* a truncated plan is a prefix of the full one */
        assert_int_equal(vx_pd_balance(&f.c, o, a, MAXA, &n), 0);
        if (n > 0) {
            assert_int_equal(vx_pd_balance(&f.c, o, b, n - 1, &m), 0);
            assert_int_equal(m, n - 1);
            assert_true(same_actions(a, n - 1, b, m));
        }
    }
    print_message(
        "random clusters: 500, repair actions %zu, balance actions %zu (drain %zu, hot %zu, "
        "new worker %zu, count %zu, load %zu)\n",
        nrep, nbal, why_n[0], why_n[1], why_n[2], why_n[3], why_n[4]);
    assert_true(nrep > 100);
    for (size_t r = 0; r < 5; r++)
        assert_true(why_n[r] > 0); /* every rule exercised */
}

/* Worker qps as the sum of its replicas' shares (what heartbeats would
 * report once moves complete). */
static void derive_load(fix *f)
{
    for (size_t w = 0; w < f->c.nworkers; w++)
        f->w[w].qps = 0.0;
    for (size_t si = 0; si < f->c.nshards; si++) {
        uint64_t h[VX_PD_MAX_REPLICAS];
        unsigned nh = healthy_ids(f, &f->s[si], h);
        for (unsigned r = 0; r < nh; r++)
            for (size_t w = 0; w < f->c.nworkers; w++)
                if (f->w[w].id == h[r]) f->w[w].qps += f->s[si].qps / nh;
    }
}

/* Repeated rounds with every action completing at once: properties hold
 * each round, drains finish, and the plan reaches a fixed point. */
static void test_property_rounds_converge(void **state)
{
    (void)state;
    uint64_t rng = test_seed() ^ 0x5eedull;
    int converged = 0;
    size_t rounds = 0, max_rounds = 0;
    for (int iter = 0; iter < 200; iter++) {
        static fix f;
        random_cluster(&f, &rng);
        for (size_t i = 0; i < f.c.nshards; i++)
            f.s[i].moving = false;
        derive_load(&f);
        int round;
        for (round = 0; round < 200; round++) {
            vx_pd_action a[MAXA];
            size_t n, m;
            assert_int_equal(vx_pd_repair(&f.c, a, MAXA, &n), 0);
            check_repair(&f, a, n);
            apply_actions(&f, a, n);
            assert_int_equal(vx_pd_balance(&f.c, &wide, a, MAXA, &m), 0);
            check_balance(&f, &wide, a, m);
            if (getenv("VX_TRACE") && round > 190)
                for (size_t i = 0; i < m; i++)
                    fprintf(stderr, "it %d round %d: g%" PRIu64 " %" PRIu64 " -> %" PRIu64 " %s\n",
                            iter, round, a[i].group_id, a[i].from_worker, a[i].to_worker,
                            a[i].reason);
            apply_actions(&f, a, m);
            derive_load(&f);
            if (n == 0 && m == 0) break;
        }
        if (round == 200) fail_msg("iteration %d: no fixed point after 200 rounds", iter);
        converged++;
        rounds += (size_t)round;
        if ((size_t)round > max_rounds) max_rounds = (size_t)round;
        /* at the fixed point nothing remains on a DRAINING worker that had
         * somewhere to go */
        for (size_t si = 0; si < f.c.nshards; si++) {
            const vx_pd_shard *s = &f.s[si];
            uint64_t h[VX_PD_MAX_REPLICAS];
            if (healthy_ids(&f, s, h) != s->rf || !quorum(&f, s)) continue;
            for (unsigned r = 0; r < s->n; r++) {
                const vx_pd_worker *w = find_w(&f, s->replicas[r].worker);
                if (w == NULL || w->state != VX_PD_DRAINING) continue;
                for (size_t t = 0; t < f.c.nworkers; t++)
                    if (eligible_w(&f.w[t]) && !shard_holds(s, f.w[t].id) &&
                        room(&f.w[t], s->size_bytes))
                        fail_msg("iteration %d: group %" PRIu64
                                 " stuck on draining worker %" PRIu64,
                                 iter, s->group_id, w->id);
            }
        }
    }
    print_message("rounds to a fixed point: %zu in all, at most %zu\n", rounds, max_rounds);
    assert_int_equal(converged, 200);
}

static void test_determinism(void **state)
{
    (void)state;
    uint64_t rng = test_seed() ^ 0xd00dull;
    for (int iter = 0; iter < 200; iter++) {
        static fix f, g;
        random_cluster(&f, &rng);
        unsigned rf = 1 + (unsigned)sm_below(&rng, 4);
        uint64_t a[VX_PD_MAX_REPLICAS], b[VX_PD_MAX_REPLICAS];
        int ra = vx_pd_place(&f.c, rf, NULL, 0, a);
        int rb = vx_pd_place(&f.c, rf, NULL, 0, b);
        assert_int_equal(ra, rb);
        g = f;
        g.c.workers = g.w;
        g.c.shards = g.s;
        for (size_t i = 0; i < g.c.nworkers; i++)
            g.w[i] = f.w[f.c.nworkers - 1 - i];
        uint64_t c[VX_PD_MAX_REPLICAS];
        assert_int_equal(vx_pd_place(&g.c, rf, NULL, 0, c), ra);
        if (ra == 0) {
            assert_memory_equal(a, b, rf * sizeof a[0]);
            assert_memory_equal(a, c, rf * sizeof a[0]);
            assert_spread_balanced(&f, a, rf);
        } else {
            assert_int_equal(ra, VX_EFULL);
            unsigned el = 0;
            for (size_t i = 0; i < f.c.nworkers; i++)
                el += eligible_w(&f.w[i]);
            assert_true(el < rf);
        }
    }
}

/* ---- health ------------------------------------------------------------------------------ */

static void test_health_timeout(void **state)
{
    (void)state;
    static const struct {
        vx_pd_worker_state from;
        uint64_t last_hb, now;
        vx_pd_worker_state to;
    } cases[] = {
        {VX_PD_ACTIVE, 1000, 1000 + 14999, VX_PD_ACTIVE},
        {VX_PD_ACTIVE, 1000, 1000 + 15000, VX_PD_UNHEALTHY},
        {VX_PD_READY, 0, 15000, VX_PD_UNHEALTHY},
        {VX_PD_READY, 0, 14999, VX_PD_READY},
        {VX_PD_STANDBY, 5000, 20000, VX_PD_UNHEALTHY},
        {VX_PD_DRAINING, 5000, 20000, VX_PD_UNHEALTHY},
        {VX_PD_ACTIVE, 30000, 20000, VX_PD_ACTIVE}, /* stamped after now: fresh */
        {VX_PD_JOINING, 0, 100000, VX_PD_JOINING},
        {VX_PD_ERROR, 0, 100000, VX_PD_ERROR},
        {VX_PD_REMOVED, 0, 100000, VX_PD_REMOVED},
        {VX_PD_UNHEALTHY, 0, 100000, VX_PD_UNHEALTHY},
        {VX_PD_UNHEALTHY, 90000, 100000, VX_PD_READY}, /* back, hosts nothing */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fix f;
        fix_init(&f);
        vx_pd_worker *w = add_worker(&f, 7, "z", "r", cases[k].from);
        w->last_heartbeat_ms = cases[k].last_hb;
        vx_pd_state_change ch[4];
        size_t n = 99;
        assert_int_equal(vx_pd_health_step(&f.c, cases[k].now, ch, 4, &n), 0);
        if (w->state != cases[k].to)
            fail_msg("case %zu: %s -> %s, want %s", k, vx_pd_state_name(cases[k].from),
                     vx_pd_state_name(w->state), vx_pd_state_name(cases[k].to));
        assert_int_equal(n, cases[k].to != cases[k].from);
        if (n == 1) {
            assert_int_equal(ch[0].worker, 7);
            assert_int_equal(ch[0].from, cases[k].from);
            assert_int_equal(ch[0].to, cases[k].to);
        }
    }
    assert_int_equal(VX_PD_HEARTBEAT_INTERVAL_MS * 3, VX_PD_HEARTBEAT_TIMEOUT_MS);
}

static void test_health_all_or_nothing(void **state)
{
    (void)state;
    fix f;
    fix_init(&f);
    for (uint64_t id = 1; id <= 4; id++)
        add_worker(&f, id, "z", "r", VX_PD_ACTIVE)->last_heartbeat_ms = id * 1000;
    uint64_t ids[] = {2, 0};
    add_shard(&f, 1, 1, ids);
    vx_pd_state_change ch[4];
    size_t n;
    /* at 18 s workers 1..3 are silent for >= 15 s */
    assert_int_equal(vx_pd_health_step(&f.c, 18000, ch, 2, &n), VX_EFULL);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(f.w[i].state, VX_PD_ACTIVE);
    assert_int_equal(vx_pd_health_step(&f.c, 18000, ch, 4, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(ch[i].worker, i + 1);
        assert_int_equal(f.w[i].state, VX_PD_UNHEALTHY);
    }
    assert_int_equal(f.w[3].state, VX_PD_ACTIVE);
    /* a second step at the same time changes nothing */
    assert_int_equal(vx_pd_health_step(&f.c, 18000, ch, 4, &n), 0);
    assert_int_equal(n, 0);
    /* worker 2 (hosting a replica) and 3 heartbeat again */
    f.w[1].last_heartbeat_ms = 19000;
    f.w[2].last_heartbeat_ms = 19000;
    f.w[3].last_heartbeat_ms = 19000;
    assert_int_equal(vx_pd_health_step(&f.c, 20000, ch, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(f.w[1].state, VX_PD_ACTIVE);
    assert_int_equal(f.w[2].state, VX_PD_READY);
    assert_int_equal(vx_pd_health_step(NULL, 0, ch, 4, &n), VX_EINVAL);
    assert_int_equal(vx_pd_health_step(&f.c, 0, NULL, 4, &n), VX_EINVAL);
}

/* ---- repair --------------------------------------------------------------------------------- */

/* 3 zones x 2 workers: a1 a2 | b1 b2 | c1 c2 = ids 1 2 | 3 4 | 5 6 */
static void six_workers(fix *f)
{
    fix_init(f);
    add_worker(f, 1, "a", "r1", VX_PD_ACTIVE);
    add_worker(f, 2, "a", "r2", VX_PD_ACTIVE);
    add_worker(f, 3, "b", "r1", VX_PD_ACTIVE);
    add_worker(f, 4, "b", "r2", VX_PD_ACTIVE);
    add_worker(f, 5, "c", "r1", VX_PD_ACTIVE);
    add_worker(f, 6, "c", "r2", VX_PD_ACTIVE);
    for (size_t i = 0; i < f->c.nworkers; i++)
        f->w[i].last_heartbeat_ms = 100000;
}

static void test_repair_after_unhealthy_and_surplus_on_return(void **state)
{
    (void)state;
    fix f;
    six_workers(&f);
    uint64_t ids[] = {1, 3, 5, 0};
    vx_pd_shard *s = add_shard(&f, 10, 3, ids);
    s->leader_hint = 3;
    vx_pd_action a[8];
    size_t n;
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(n, 0); /* fully replicated */

    /* worker 3 falls silent: UNHEALTHY at +15 s */
    f.w[2].last_heartbeat_ms = 90000;
    vx_pd_state_change ch[8];
    size_t nc;
    assert_int_equal(vx_pd_health_step(&f.c, 104999, ch, 8, &nc), 0);
    assert_int_equal(nc, 0);
    assert_int_equal(vx_pd_health_step(&f.c, 105000, ch, 8, &nc), 0);
    assert_int_equal(nc, 1);
    assert_int_equal(ch[0].worker, 3);
    assert_int_equal(ch[0].to, VX_PD_UNHEALTHY);

    /* re-replication goes to zone b's other worker, not a current holder */
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(a[0].kind, VX_PD_ADD_REPLICA);
    assert_int_equal(a[0].group_id, 10);
    assert_int_equal(a[0].to_worker, 4);
    assert_int_equal(a[0].from_worker, 0);
    assert_string_equal(a[0].reason, "under-replicated");
    /* while the add is in flight nothing more */
    s->moving = true;
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(n, 0);
    s->moving = false;
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    apply_actions(&f, a, n);
    assert_int_equal(s->n, 4);
    /* repaired; the UNHEALTHY replica is kept for its return */
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(n, 0);

    /* worker 3 comes back: one surplus replica in zone b goes, not the leader */
    f.w[2].last_heartbeat_ms = 110000;
    assert_int_equal(vx_pd_health_step(&f.c, 111000, ch, 8, &nc), 0);
    assert_int_equal(nc, 1);
    assert_int_equal(f.w[2].state, VX_PD_ACTIVE);
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(a[0].kind, VX_PD_REMOVE_REPLICA);
    assert_int_equal(a[0].from_worker, 4);
    assert_string_equal(a[0].reason, "over-replicated");
    /* without a leader hint the lower-score one of zone b goes */
    s->leader_hint = 0;
    f.w[2].cpu_util = 0.9;
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(a[0].from_worker, 3);
    f.w[2].cpu_util = 0.1;
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(a[0].from_worker, 4);
    apply_actions(&f, a, n);
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(n, 0);
}

static void test_repair_table(void **state)
{
    (void)state;
    /* workers as in six_workers; each row: states of workers 1..6, the
     * shard's replicas, rf, and the expected action */
    static const struct {
        const char *name;
        vx_pd_worker_state st[6];
        uint64_t replicas[6];
        unsigned rf;
        vx_pd_action_kind kind; /* 0: none */
        uint64_t from, to;
    } cases[] = {
        {"zone b has no eligible worker: a new rack, the better score of 2 and 6",
         {VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_UNHEALTHY, VX_PD_ERROR, VX_PD_ACTIVE, VX_PD_ACTIVE},
         {1, 3, 5, 0},
         3,
         VX_PD_ADD_REPLICA,
         0,
         6},
        {"two of three lost: no voter majority, nothing the PD can commit",
         {VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_UNHEALTHY, VX_PD_ACTIVE, VX_PD_UNHEALTHY, VX_PD_ACTIVE},
         {1, 3, 5, 0},
         3,
         0,
         0,
         0},
        {"one replica of three: one add per call, to an empty zone",
         {VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE},
         {1, 0},
         3,
         VX_PD_ADD_REPLICA,
         0,
         3},
        {"DRAINING, STANDBY, JOINING are not targets",
         {VX_PD_ACTIVE, VX_PD_DRAINING, VX_PD_STANDBY, VX_PD_JOINING, VX_PD_REMOVED, VX_PD_READY},
         {1, 2, 5, 0},
         3,
         VX_PD_ADD_REPLICA,
         0,
         6},
        {"no target left: no action",
         {VX_PD_ACTIVE, VX_PD_UNHEALTHY, VX_PD_ACTIVE, VX_PD_UNHEALTHY, VX_PD_UNHEALTHY,
          VX_PD_UNHEALTHY},
         {1, 3, 5, 0},
         3,
         0,
         0,
         0},
        {"replica on a REMOVED worker after repair: dropped",
         {VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_REMOVED, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE},
         {1, 3, 4, 5, 0},
         3,
         VX_PD_REMOVE_REPLICA,
         3,
         0},
        {"replica on an UNHEALTHY worker after repair: kept",
         {VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_UNHEALTHY, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE},
         {1, 3, 4, 5, 0},
         3,
         0,
         0,
         0},
        {"surplus: the crowded zone loses its lower-scored replica",
         {VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE},
         {1, 2, 3, 5, 0},
         3,
         VX_PD_REMOVE_REPLICA,
         2,
         0},
        {"surplus with all zones single: a DRAINING one goes first",
         {VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_DRAINING, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE},
         {1, 3, 5, 0},
         2,
         VX_PD_REMOVE_REPLICA,
         3,
         0},
        {"unknown worker id counts as gone",
         {VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE, VX_PD_ACTIVE},
         {1, 3, 5, 99, 0},
         3,
         VX_PD_REMOVE_REPLICA,
         99,
         0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fix f;
        six_workers(&f);
        for (int i = 0; i < 6; i++)
            f.w[i].state = cases[k].st[i];
        f.w[0].cpu_util = 0.1; /* worker 1 scores best, worker 2 worst in zone a */
        f.w[1].cpu_util = 0.9;
        add_shard(&f, 10, cases[k].rf, cases[k].replicas);
        vx_pd_action a[4];
        size_t n;
        assert_int_equal(vx_pd_repair(&f.c, a, 4, &n), 0);
        if (cases[k].kind == 0) {
            if (n != 0) fail_msg("%s: unexpected action", cases[k].name);
            continue;
        }
        if (n != 1 || a[0].kind != cases[k].kind || a[0].from_worker != cases[k].from ||
            a[0].to_worker != cases[k].to)
            fail_msg("%s: n %zu kind %d from %" PRIu64 " to %" PRIu64, cases[k].name, n,
                     n ? (int)a[0].kind : 0, n ? a[0].from_worker : 0, n ? a[0].to_worker : 0);
    }
}

static void test_repair_spreads_many_shards(void **state)
{
    (void)state;
    /* worker 3 of six dies holding 6 shards whose other replicas are both in
     * zone a: the adds go to zones b and c and spread out over the plan
     * rather than all landing on the best-scored worker */
    fix f;
    six_workers(&f);
    f.w[2].state = VX_PD_UNHEALTHY;
    for (uint64_t g = 1; g <= 6; g++) {
        uint64_t ids[] = {3, 1, 2, 0};
        add_shard(&f, g, 3, ids);
    }
    vx_pd_action a[8];
    size_t n;
    assert_int_equal(vx_pd_repair(&f.c, a, 8, &n), 0);
    assert_int_equal(n, 6);
    unsigned per[7] = {0};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].kind, VX_PD_ADD_REPLICA);
        assert_true(a[i].to_worker >= 4); /* not zone a, not the dead holder */
        per[a[i].to_worker]++;
    }
    for (int w = 4; w <= 6; w++)
        assert_int_equal(per[w], 2);
    /* cap truncates, in shard order */
    assert_int_equal(vx_pd_repair(&f.c, a, 2, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(a[0].group_id, 1);
    assert_int_equal(a[1].group_id, 2);
    assert_int_equal(vx_pd_repair(&f.c, a, 0, &n), 0);
    assert_int_equal(n, 0);
}

/* ---- balance --------------------------------------------------------------------------------- */

static void test_balance_drain(void **state)
{
    (void)state;
    fix f;
    six_workers(&f);
    /* worker 3 (zone b) holds four shards with replicas in a and c */
    for (uint64_t g = 1; g <= 4; g++) {
        uint64_t ids[] = {g % 2 ? 1 : 2, 3, g <= 2 ? 5 : 6, 0};
        add_shard(&f, g, 3, ids);
    }
    f.w[2].state = VX_PD_DRAINING;
    vx_pd_balance_opts o = {0.20, 8, 16};
    vx_pd_action a[16];
    size_t n;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 16, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].kind, VX_PD_MOVE_REPLICA);
        assert_int_equal(a[i].from_worker, 3);
        assert_int_equal(a[i].to_worker, 4); /* the only worker left in zone b */
        assert_string_equal(a[i].reason, "drain");
    }
    check_balance(&f, &o, a, n);
    /* with the defaults, two at a time */
    assert_int_equal(vx_pd_balance(&f.c, NULL, a, 16, &n), 0);
    assert_int_equal(n, 2);
    apply_actions(&f, a, n);
    assert_int_equal(vx_pd_balance(&f.c, NULL, a, 16, &n), 0);
    assert_int_equal(n, 2);
    apply_actions(&f, a, n);
    for (size_t i = 0; i < f.c.nshards; i++)
        assert_false(shard_holds(&f.s[i], 3));
    /* zone b's last eligible worker drains too: its replicas go to the
     * best remaining rack, never to a DRAINING worker */
    f.w[3].state = VX_PD_DRAINING;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 16, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].from_worker, 4);
        assert_true(a[i].to_worker != 3 && a[i].to_worker != 4);
    }
    check_balance(&f, &o, a, n);
}

/* Three workers in three zones; rf 1 shards counted per worker. */
static void count_cluster(fix *f, const unsigned *counts, unsigned nw)
{
    fix_init(f);
    uint64_t g = 1;
    for (unsigned i = 0; i < nw; i++) {
        char zone[16];
        snprintf(zone, sizeof zone, "z%u", i);
        add_worker(f, i + 1, zone, "r", VX_PD_ACTIVE);
        for (unsigned j = 0; j < counts[i]; j++) {
            uint64_t ids[] = {i + 1, 0};
            add_shard(f, g++, 1, ids);
        }
    }
}

static void test_balance_thresholds(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        unsigned counts[4];
        double qps[4];
        unsigned nw;
        size_t moves;
        uint64_t from, to;
    } cases[] = {
        {"counts 12/10/10: 18.75 %, no move", {12, 10, 10}, {0}, 3, 0, 0, 0},
        {"counts 11/10/9: exactly 20 %, no move", {11, 10, 9}, {0}, 3, 0, 0, 0},
        {"counts 9/8/7: 25 %, one move", {9, 8, 7}, {0}, 3, 1, 1, 3},
        {"counts 2/1: 66 % but a move only swaps them", {2, 1}, {0}, 2, 0, 0, 0},
        {"qps 1095/905: 19 %, no move", {10, 10}, {1095, 905}, 2, 0, 0, 0},
        {"qps 1125/875: 25 %, one move", {10, 10}, {1125, 875}, 2, 1, 1, 2},
        {"qps 1125/875/1000: 25 %, one move", {10, 10, 10}, {1125, 875, 1000}, 3, 1, 1, 2},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fix f;
        count_cluster(&f, cases[k].counts, cases[k].nw);
        for (unsigned i = 0; i < cases[k].nw; i++)
            f.w[i].qps = cases[k].qps[i];
        /* each shard carries its worker's qps evenly */
        for (size_t s = 0; s < f.c.nshards; s++) {
            const vx_pd_worker *w = find_w(&f, f.s[s].replicas[0].worker);
            f.s[s].qps = w->qps / 10.0;
        }
        vx_pd_action a[8];
        size_t n;
        assert_int_equal(vx_pd_balance(&f.c, NULL, a, 8, &n), 0);
        if (n != cases[k].moves) fail_msg("%s: %zu moves", cases[k].name, n);
        if (n == 1 && (a[0].from_worker != cases[k].from || a[0].to_worker != cases[k].to))
            fail_msg("%s: %" PRIu64 " -> %" PRIu64, cases[k].name, a[0].from_worker,
                     a[0].to_worker);
        check_balance(&f, &(vx_pd_balance_opts)VX_PD_BALANCE_OPTS_DEFAULT, a, n);
    }
    /* a custom threshold */
    fix f;
    unsigned counts[] = {12, 10, 10};
    count_cluster(&f, counts, 3);
    vx_pd_balance_opts o = {0.10, 2, 4};
    vx_pd_action a[8];
    size_t n;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(a[0].reason, "shard count imbalance");
    o.threshold = -0.1;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 8, &n), VX_EINVAL);
}

static void test_balance_new_worker(void **state)
{
    (void)state;
    fix f;
    six_workers(&f);
    /* 6 rf-3 shards over workers 1, 3, 5; 2, 4, 6 hold the other 6 */
    for (uint64_t g = 1; g <= 12; g++) {
        uint64_t ids[] = {g <= 6 ? 1 : 2, g <= 6 ? 3 : 4, g <= 6 ? 5 : 6, 0};
        add_shard(&f, g, 3, ids);
    }
    add_worker(&f, 7, "c", "r3", VX_PD_ACTIVE);
    /* threshold out of reach: the new-worker rule alone moves one replica,
     * after which the worker is no longer empty */
    vx_pd_balance_opts o = {5.0, 2, 4};
    vx_pd_action a[8];
    size_t n;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(a[0].to_worker, 7);
    assert_true(a[0].from_worker == 5 || a[0].from_worker == 6); /* zone c keeps its one */
    assert_string_equal(a[0].reason, "new worker");
    check_balance(&f, &o, a, n);
    /* the defaults: the count rule goes on, two moves per worker at a time */
    assert_int_equal(vx_pd_balance(&f.c, NULL, a, 8, &n), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].to_worker, 7);
        assert_true(a[i].from_worker == 5 || a[i].from_worker == 6);
    }
    assert_string_equal(a[0].reason, "new worker");
    assert_string_equal(a[1].reason, "shard count imbalance");
    /* rounds with the default options fill the new worker to the mean */
    for (int round = 0; round < 20; round++) {
        assert_int_equal(vx_pd_balance(&f.c, NULL, a, 8, &n), 0);
        check_balance(&f, &(vx_pd_balance_opts)VX_PD_BALANCE_OPTS_DEFAULT, a, n);
        apply_actions(&f, a, n);
        if (n == 0) break;
    }
    unsigned per[8] = {0};
    for (size_t s = 0; s < f.c.nshards; s++)
        for (unsigned r = 0; r < f.s[s].n; r++)
            per[f.s[s].replicas[r].worker]++;
    /* zone c (5, 6, 7) shares its 12 replicas evenly; other zones cannot give */
    assert_int_equal(per[5], 4);
    assert_int_equal(per[6], 4);
    assert_int_equal(per[7], 4);
    assert_true(per[5] + per[6] + per[7] == 12);
}

static void test_balance_hot_shard(void **state)
{
    (void)state;
    /* seed §4.2 scenario 1: worker 1 at 45k qps, 2 at 12k, 3 at 15k */
    fix f;
    fix_init(&f);
    add_worker(&f, 1, "a", "r", VX_PD_ACTIVE)->qps = 45000;
    add_worker(&f, 2, "b", "r", VX_PD_ACTIVE)->qps = 12000;
    add_worker(&f, 3, "c", "r", VX_PD_ACTIVE)->qps = 15000;
    add_worker(&f, 4, "a", "r", VX_PD_ACTIVE)->qps = 30000;
    uint64_t g = 1;
    for (uint64_t w = 1; w <= 4; w++)
        for (int j = 0; j < 5; j++) {
            uint64_t ids[] = {w, 0};
            vx_pd_shard *s = add_shard(&f, g++, 1, ids);
            s->qps = 2000;
        }
    find_s(&f, 3)->qps = 27000; /* on worker 1: 60 % of its queries */
    vx_pd_action a[8];
    size_t n;
    vx_pd_balance_opts o = {5.0, 2, 4}; /* only the hot rule can fire */
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(a[0].group_id, 3);
    assert_int_equal(a[0].from_worker, 1);
    assert_int_equal(a[0].to_worker, 2);
    assert_string_equal(a[0].reason, "hot shard");
    /* a hot shard whose move would not help stays */
    f.w[1].qps = 44000;
    f.w[2].qps = 44000;
    f.w[3].qps = 44000;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 8, &n), 0);
    assert_int_equal(n, 0);
    /* rf 2 hot shard: the replica on the busier worker moves, zones kept */
    fix_init(&f);
    add_worker(&f, 1, "a", "r", VX_PD_ACTIVE)->qps = 9000;
    add_worker(&f, 2, "b", "r", VX_PD_ACTIVE)->qps = 4000;
    add_worker(&f, 3, "a", "r", VX_PD_ACTIVE)->qps = 100; /* zone a: keeps 2 zones */
    add_worker(&f, 4, "b", "r", VX_PD_ACTIVE)->qps = 50;  /* would put both in b */
    uint64_t ids[] = {1, 2, 0};
    add_shard(&f, 1, 2, ids)->qps = 8000;
    for (uint64_t s = 2; s <= 6; s++) {
        uint64_t one[] = {1 + s % 4, 0};
        add_shard(&f, s, 1, one)->qps = 10;
    }
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 8, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(a[0].from_worker, 1);
    assert_int_equal(a[0].to_worker, 3);
}

static void test_balance_budgets(void **state)
{
    (void)state;
    unsigned counts[] = {8, 8, 8, 8, 0};
    fix f;
    count_cluster(&f, counts, 5);
    vx_pd_balance_opts o = {0.20, 2, 10};
    vx_pd_action a[16];
    size_t n;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 16, &n), 0);
    unsigned into5 = 0;
    for (size_t i = 0; i < n; i++)
        into5 += a[i].to_worker == 5;
    assert_int_equal(into5, 2);
    check_balance(&f, &o, a, n);
    /* a move in flight to worker 5 leaves room for one */
    vx_pd_shard *s = find_s(&f, 1);
    s->replicas[s->n].worker = 5;
    s->replicas[s->n].voter = false;
    s->n++;
    s->rf = 2; /* keep it consistent: two healthy replicas of an rf-2 shard */
    s->moving = true;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 16, &n), 0);
    into5 = 0;
    for (size_t i = 0; i < n; i++) {
        into5 += a[i].to_worker == 5;
        assert_int_not_equal(a[i].group_id, 1);
    }
    assert_int_equal(into5, 1);
    check_balance(&f, &o, a, n);
    /* the cluster-wide bound counts in-flight moves */
    o.max_moves = 1;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 16, &n), 0);
    assert_int_equal(n, 0);
    o.max_moves = 3;
    o.max_moves_per_worker = 8;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 16, &n), 0);
    assert_int_equal(n, 2);
    /* cap */
    o.max_moves = 100;
    assert_int_equal(vx_pd_balance(&f.c, &o, a, 1, &n), 0);
    assert_int_equal(n, 1);
}

static void test_balance_respects_zones(void **state)
{
    (void)state;
    /* counts say move from worker 1 to worker 4, but worker 4 shares zone b
     * with each shard's other replica: no move rather than two in one zone */
    fix f;
    fix_init(&f);
    add_worker(&f, 1, "a", "r", VX_PD_ACTIVE);
    add_worker(&f, 2, "b", "r", VX_PD_ACTIVE);
    add_worker(&f, 4, "b", "r2", VX_PD_ACTIVE);
    for (uint64_t g = 1; g <= 6; g++) {
        uint64_t ids[] = {1, 2, 0};
        add_shard(&f, g, 2, ids);
    }
    vx_pd_action a[8];
    size_t n;
    assert_int_equal(vx_pd_balance(&f.c, NULL, a, 8, &n), 0);
    /* worker 2 (zone b) may hand replicas to worker 4 (zone b); worker 1 may not */
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].from_worker, 2);
        assert_int_equal(a[i].to_worker, 4);
    }
    assert_int_equal(n, 2);
    check_balance(&f, &(vx_pd_balance_opts)VX_PD_BALANCE_OPTS_DEFAULT, a, n);
    assert_int_equal(vx_pd_balance(NULL, NULL, a, 8, &n), VX_EINVAL);
    assert_int_equal(vx_pd_balance(&f.c, NULL, NULL, 8, &n), VX_EINVAL);
    assert_int_equal(vx_pd_balance(&f.c, NULL, a, 8, NULL), VX_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity_score_seed_example),
        cmocka_unit_test(test_place_zone_spreading),
        cmocka_unit_test(test_place_zone_beats_capacity),
        cmocka_unit_test(test_place_capacity_weighting),
        cmocka_unit_test(test_place_insufficient_and_invalid),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_health_timeout),
        cmocka_unit_test(test_health_all_or_nothing),
        cmocka_unit_test(test_repair_after_unhealthy_and_surplus_on_return),
        cmocka_unit_test(test_repair_table),
        cmocka_unit_test(test_repair_spreads_many_shards),
        cmocka_unit_test(test_balance_drain),
        cmocka_unit_test(test_balance_thresholds),
        cmocka_unit_test(test_balance_new_worker),
        cmocka_unit_test(test_balance_hot_shard),
        cmocka_unit_test(test_balance_budgets),
        cmocka_unit_test(test_balance_respects_zones),
        cmocka_unit_test(test_property_random_clusters),
        cmocka_unit_test(test_property_rounds_converge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
