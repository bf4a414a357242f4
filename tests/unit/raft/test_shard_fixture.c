/*
 * test_shard_fixture.c - three shard replicas in libraft's deterministic
 * in-memory cluster (raft/fixture.h), under seeded random network
 * partitions, server kills and revivals, while a client proposes upserts,
 * deletes and payload updates to whoever leads.
 *
 * A run may also inject one disk fault: a log write that reports failure
 * after writing, as a failed fsync does.  The replica's io wrapper
 * (raft/io_wrap.h) then stops it for good (fail-stop: no votes, no acks);
 * the other two go on.  (The fault is injected in our wrapper, not with
 * raft_fixture_io_fault: libraft 0.15's fixture double-frees a buffer after
 * its own injected faults.)  The store's fail-stop on a failed fsync is
 * tested in test_store.
 *
 * Every replica's I/O goes through the commit-rule guard of raft/io_wrap.h,
 * as in production.  Without it seed 556 fails inside libraft 0.15: the
 * term-20 leader commits entry 29 of term 7 by counting replicas (Raft's
 * "Figure 8" error, fixed upstream in 0.17.1), and the term-26 leader, whose
 * log has entry 29 of term 17, then overwrites it: followers log
 * "conflicting terms 7 and 17 for entry 29 (commit index 29) -> shutdown".
 * Seed 728 (with a disk fault) found the second hole the wrapper closes: a
 * follower holding a stale tail answered a heartbeat with its whole log
 * length, the leader counted entries the follower lacked, committed and
 * acknowledged an entry on itself alone, then lost its disk.  Seeds 556 and
 * 728 are regression seeds run by default.
 *
 * After each run the network heals and all healthy replicas must reach the
 * same applied index with identical store digests, and every acknowledged
 * upsert of a point that no one ever tried to delete must be there, at a
 * version no older than the acknowledged entry.  VX_SEED=<n> runs one seed;
 * VX_FIXTURE_SEEDS=<count> sets how many seeds (default 200; VX_LONG=1 in
 * the test command runs 2000).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/workpool.h"
#include "raft/io_wrap.h"
#include "raft/shard_fsm.h"
#include "shard/command.h"
#include "testutil.h"

#include <raft/fixture.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NSERV 3
#define DIM 8
#define UNIVERSE 300
#define NEVER_DELETED 200 /* ids below this are only ever upserted */
#define STEPS 400

typedef struct world {
    struct raft_fixture f;
    vx_workpool *pool;
    vx_shard *sh[NSERV];
    vx_shard_fsm fsm[NSERV];
    vx_io_wrap wrap[NSERV];
    char root[64];
    vx_rng rng;
    uint64_t acked_ver[UNIVERSE]; /* highest acknowledged upsert entry per id */
    uint32_t acked, proposed, failed;
    uint64_t max_acked_index;
    bool final_acked; /* the marker entry proposed after healing committed */
    uint32_t disk_faults;
    bool no_faults; /* a regression seed found before disk faults were on */
} world;

typedef struct req_ctx {
    world *w;
    uint32_t n;
    uint16_t ids[64];
    bool upsert;
    bool final;
} req_ctx;

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    req_ctx *c = req->data;
    if (status == 0) {
        vx_fsm_result r = vx_fsm_result_decode(result), *res = &r;
        c->w->acked++;
        if (c->final) c->w->final_acked = true;
        if (res->index > c->w->max_acked_index) c->w->max_acked_index = res->index;
        assert_int_equal(res->status, 0);
        if (c->upsert)
            for (uint32_t i = 0; i < c->n; i++)
                if (c->w->acked_ver[c->ids[i]] < res->index) c->w->acked_ver[c->ids[i]] = res->index;
    } else {
        if (getenv("VX_DEBUG")) fprintf(stderr, "apply cb status %d (%s)\n", status, raft_strerror(status));
        c->w->failed++;
    }
    free(c);
    free(req);
}

static void vec_for(uint32_t id, uint64_t salt, float *v)
{
    for (int d = 0; d < DIM; d++) v[d] = (float)((id * 31 + d * 7 + salt) % 97) / 97.0f;
}

/* The fixture's leader, unless it is a replica stopped by a disk fault (its
 * raft state still says leader: only its io wrapper knows it stopped). */
static unsigned leader_index(world *w)
{
    for (unsigned i = 0; i < NSERV; i++)
        if (!w->wrap[i].failed && raft_fixture_alive(&w->f, i) &&
            raft_state(raft_fixture_get(&w->f, i)) == RAFT_LEADER)
            return i;
    return NSERV;
}

static void propose(world *w, bool final)
{
    unsigned li = leader_index(w);
    if (li >= NSERV) return;
    struct raft *r = raft_fixture_get(&w->f, li);
    req_ctx *c = calloc(1, sizeof(*c));
    c->w = w;
    c->final = final;
    vx_cmd_buf b;
    int kind = (int)vx_rng_below(&w->rng, 10);
    c->n = 1 + (uint32_t)vx_rng_below(&w->rng, 20);
    if (kind < 6) {
        c->upsert = true;
        vx_cmd_begin(&b, VX_CMD_UPSERT);
        uint64_t salt = vx_rng_next(&w->rng);
        for (uint32_t i = 0; i < c->n; i++) {
            uint32_t id = (uint32_t)vx_rng_below(&w->rng, UNIVERSE);
            c->ids[i] = (uint16_t)id;
            vx_point_id pid;
            vx_id_from_uint(&pid, id);
            float v[DIM];
            vec_for(id, salt, v);
            char payload[64];
            int pl = snprintf(payload, sizeof payload, "{\"salt\":%llu}",
                              (unsigned long long)(salt % 1000));
            vx_cmd_add_point(&b, &pid, v, DIM, payload, (uint32_t)pl);
        }
    } else if (kind < 8) {
        vx_cmd_begin(&b, VX_CMD_DELETE_IDS);
        for (uint32_t i = 0; i < c->n; i++) {
            vx_point_id pid;
            vx_id_from_uint(&pid, NEVER_DELETED + vx_rng_below(&w->rng, UNIVERSE - NEVER_DELETED));
            vx_cmd_add_id(&b, &pid);
        }
    } else {
        vx_cmd_begin(&b, VX_CMD_SET_PAYLOAD);
        for (uint32_t i = 0; i < c->n; i++) {
            vx_point_id pid;
            vx_id_from_uint(&pid, vx_rng_below(&w->rng, UNIVERSE));
            vx_cmd_add_id(&b, &pid);
        }
        vx_cmd_set_json(&b, "{\"tag\":\"x\"}", 11);
    }
    uint8_t *data;
    size_t len;
    assert_int_equal(vx_cmd_finish(&b, &data, &len), 0);
    struct raft_apply *req = malloc(sizeof(*req));
    req->data = c;
    struct raft_buffer buf = {.base = data, .len = len};
    int arc = raft_apply(r, req, &buf, 1, apply_cb);
    if (arc != 0 && getenv("VX_DEBUG")) fprintf(stderr, "raft_apply: %s\n", raft_strerror(arc));
    if (arc != 0) {
        free(data);
        free(req);
        free(c);
        w->failed++;
        return;
    }
    w->proposed++;
}

static void world_open(world *w, uint64_t seed)
{
    memset(w, 0, sizeof(*w));
    vx_rng_seed(&w->rng, seed);
    snprintf(w->root, sizeof w->root, "/tmp/vx_fixture_XXXXXX");
    assert_non_null(mkdtemp(w->root));
    assert_int_equal(vx_workpool_new(1, &w->pool), 0);
    assert_int_equal(raft_fixture_initialize(&w->f), 0);
    for (unsigned i = 0; i < NSERV; i++) {
        char dir[128], err[VX_SHARD_ERRMSG_LEN];
        snprintf(dir, sizeof dir, "%s/r%u", w->root, i);
        vx_shard_config cfg = {0};
        vx_index_config_default(&cfg.index, DIM, VX_METRIC_L2);
        cfg.index.ef_construction = 32;
        int rc = vx_shard_open(dir, &cfg, w->pool, &w->sh[i], err);
        if (rc) fprintf(stderr, "open: %s\n", err);
        assert_int_equal(rc, 0);
        vx_shard_fsm_init(&w->fsm[i], w->sh[i]);
        vx_shard_fsm_sync_snapshots(&w->fsm[i]);
        assert_int_equal(raft_fixture_grow(&w->f, &w->fsm[i].fsm), 0);
        struct raft *r = raft_fixture_get(&w->f, i);
        w->fsm[i].raft = r;
        raft_set_snapshot_threshold(r, 1u << 30);
        /* the production guard in front of the fixture's I/O (io_wrap.h) */
        vx_io_wrap_init(&w->wrap[i], r->io, NULL);
        w->wrap[i].io.data = r;
        r->io = &w->wrap[i].io;
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&w->f, NSERV, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&w->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&w->f), 0);
}

static void world_close(world *w)
{
    raft_fixture_close(&w->f); /* fails pending requests through apply_cb */
    for (unsigned i = 0; i < NSERV; i++) vx_shard_close(w->sh[i]);
    vx_workpool_free(w->pool);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", w->root);
    assert_int_equal(system(cmd), 0);
}

static void chaos_step(world *w)
{
    uint64_t x = vx_rng_below(&w->rng, 100);
    unsigned i = (unsigned)vx_rng_below(&w->rng, NSERV), j = (unsigned)vx_rng_below(&w->rng, NSERV);
    if (x < 35) {
        propose(w, false);
    } else if (x < 39 && i != j) {
        raft_fixture_disconnect(&w->f, i, j);
        raft_fixture_disconnect(&w->f, j, i);
    } else if (x < 45 && i != j) {
        raft_fixture_reconnect(&w->f, i, j);
        raft_fixture_reconnect(&w->f, j, i);
    } else if (x < 47) {
        if (raft_fixture_alive(&w->f, i)) raft_fixture_kill(&w->f, i);
    } else if (x < 53) {
        if (!raft_fixture_alive(&w->f, i)) raft_fixture_revive(&w->f, i);
    } else if (x < 54 && w->disk_faults == 0 && !w->no_faults) {
        /* A disk fault: one of the next few log writes of server i fails;
         * its io wrapper stops the replica for good (fail-stop; a process
         * would restart and catch up from its peers, which the fixture cannot
         * model), so at most one per run keeps a quorum. */
        vx_io_wrap_inject_fault(&w->wrap[i], 1 + (unsigned)vx_rng_below(&w->rng, 5));
        w->disk_faults++;
    }
    unsigned steps = 1 + (unsigned)vx_rng_below(&w->rng, 8);
    for (unsigned s = 0; s < steps; s++) raft_fixture_step(&w->f);
}

static bool healthy(world *w, unsigned i)
{
    return raft_state(raft_fixture_get(&w->f, i)) != RAFT_UNAVAILABLE && !w->wrap[i].failed;
}

typedef struct applied_arg {
    world *w;
    raft_index index;
} applied_arg;

static bool healthy_applied(struct raft_fixture *f, void *arg)
{
    applied_arg *a = arg;
    for (unsigned i = 0; i < NSERV; i++)
        if (healthy(a->w, i) && raft_last_applied(raft_fixture_get(f, i)) < a->index) return false;
    return true;
}

static void heal_and_check(world *w, uint64_t seed)
{
    for (unsigned i = 0; i < NSERV; i++) w->wrap[i].fault_in = 0; /* faults end with the chaos */
    for (unsigned i = 0; i < NSERV; i++) {
        if (!raft_fixture_alive(&w->f, i)) raft_fixture_revive(&w->f, i);
    }
    /* a replica stopped by its disk fault is down for the fixture as well */
    for (unsigned i = 0; i < NSERV; i++)
        if (!healthy(w, i)) raft_fixture_kill(&w->f, i);
    /* kill/revive saturate links, chaos disconnects them: undo both */
    for (unsigned i = 0; i < NSERV; i++)
        for (unsigned j = 0; j < NSERV; j++)
            if (i != j && healthy(w, i) && healthy(w, j)) {
                raft_fixture_reconnect(&w->f, i, j);
                raft_fixture_desaturate(&w->f, i, j);
            }
    if (!raft_fixture_step_until_has_leader(&w->f, 60000)) {
        for (unsigned i = 0; i < NSERV; i++) {
            struct raft *r = raft_fixture_get(&w->f, i);
            fprintf(stderr,
                    "seed %llu: no leader: server %u state %d term %llu last %llu alive %d "
                    "failed %d: %s\n",
                    (unsigned long long)seed, i, raft_state(r),
                    (unsigned long long)r->current_term, (unsigned long long)raft_last_index(r),
                    raft_fixture_alive(&w->f, i), w->wrap[i].failed, raft_errmsg(r));
        }
        fail();
    }
    /* A marker entry proposed now must commit: then the leader has
     * committed everything before it, and followers holding stale tails
     * from old terms get them replaced. */
    for (int tries = 0; tries < 30 && !w->final_acked; tries++) {
        propose(w, true);
        raft_fixture_step_until_elapsed(&w->f, 2000);
    }
    if (!w->final_acked) {
        for (unsigned i = 0; i < NSERV; i++) {
            struct raft *r = raft_fixture_get(&w->f, i);
            fprintf(stderr, "seed %llu: no progress after healing: server %u state %d term %llu "
                            "commit %llu last %llu: %s\n",
                    (unsigned long long)seed, i, raft_state(r),
                    (unsigned long long)r->current_term, (unsigned long long)r->commit_index,
                    (unsigned long long)raft_last_index(r), raft_errmsg(r));
        }
        fail();
    }
    /* All replicas must reach the leader's last index.  More entries are
     * proposed while waiting: libraft 0.15 can leave a follower that holds a
     * stale tail from an old term with its commit index one behind until
     * the next entry arrives (seed 4 shows it); new entries resolve it. */
    bool converged = false;
    for (int round = 0; round < 20 && !converged; round++) {
        unsigned li = leader_index(w);
        if (li < NSERV) {
            applied_arg aa = {w, raft_last_index(raft_fixture_get(&w->f, li))};
            converged = raft_fixture_step_until(&w->f, healthy_applied, &aa, 3000);
        }
        if (!converged) {
            w->final_acked = false;
            propose(w, true);
            raft_fixture_step_until_elapsed(&w->f, 1000);
        }
    }
    if (!converged) {
        for (unsigned i = 0; i < NSERV; i++) {
            struct raft *r = raft_fixture_get(&w->f, i);
            fprintf(stderr, "seed %llu: server %u state %d alive %d last_applied %llu commit %llu "
                            "last %llu (proposed %u acked %u failed %u)\n",
                    (unsigned long long)seed, i, raft_state(r), raft_fixture_alive(&w->f, i),
                    (unsigned long long)r->last_applied, (unsigned long long)r->commit_index,
                    (unsigned long long)raft_last_index(r), w->proposed, w->acked, w->failed);
        }
        fail();
    }
    uint64_t d0 = 0, a0 = 0;
    unsigned nhealthy = 0, first = NSERV;
    for (unsigned i = 0; i < NSERV; i++)
        if (healthy(w, i)) {
            nhealthy++;
            if (first == NSERV) first = i;
        }
    assert_true(nhealthy >= 2);
    for (unsigned i = 0; i < NSERV; i++) {
        uint64_t d, a;
        if (!healthy(w, i)) continue;
        assert_int_equal(vx_shard_wait_indexed(w->sh[i], 10000), 0);
        assert_int_equal(vx_shard_digest(w->sh[i], &d, &a), 0);
        if (i == first) {
            d0 = d;
            a0 = a;
        } else if (d != d0 || a != a0) {
            fprintf(stderr, "seed %llu: replica %u digest %016llx@%llu != %016llx@%llu\n",
                    (unsigned long long)seed, i, (unsigned long long)d, (unsigned long long)a,
                    (unsigned long long)d0, (unsigned long long)a0);
            fail();
        }
    }
    assert_true(a0 >= w->max_acked_index);
    /* acknowledged upserts of never-deleted ids are present and current */
    for (uint32_t id = 0; id < NEVER_DELETED; id++) {
        if (w->acked_ver[id] == 0) continue;
        vx_point_id pid;
        vx_id_from_uint(&pid, id);
        for (unsigned i = 0; i < NSERV; i++) {
            if (!healthy(w, i)) continue;
            uint64_t ver;
            float v[DIM];
            int rc = vx_shard_get(w->sh[i], &pid, v, NULL, &ver);
            if (rc != 0 || ver < w->acked_ver[id])
                fprintf(stderr, "seed %llu: id %u lost on replica %u (rc %d ver %llu < %llu)\n",
                        (unsigned long long)seed, id, i, rc, (unsigned long long)ver,
                        (unsigned long long)w->acked_ver[id]);
            assert_int_equal(rc, 0);
            assert_true(ver >= w->acked_ver[id]);
            /* and it is searchable: its own vector finds it at distance 0 */
            vx_shard_hit hit[3];
            uint32_t n;
            vx_search_params p = {.exact = true};
            assert_int_equal(vx_shard_search(w->sh[i], v, 3, &p, hit, &n), 0);
            assert_true(n >= 1 && hit[0].distance == 0.0f);
        }
    }
}

typedef struct totals {
    uint64_t acked, failed, disk_faults, held;
} totals;

static void run_seed(uint64_t seed, bool faults, totals *t)
{
    world *w = calloc(1, sizeof(*w));
    world_open(w, seed);
    w->no_faults = !faults;
    for (int i = 0; i < STEPS; i++) chaos_step(w);
    heal_and_check(w, seed);
    t->acked += w->acked;
    t->failed += w->failed;
    t->disk_faults += w->disk_faults;
    for (unsigned i = 0; i < NSERV; i++) t->held += w->wrap[i].held;
    world_close(w);
    free(w);
}

/* Seeds that once found a bug; run by default besides the range. */
static const struct {
    uint64_t seed;
    bool faults;
} regression_seeds[] = {{556, false}, {728, true}};

static void test_random_faults(void **state)
{
    const char *one = getenv("VX_SEED");
    const char *cnt = getenv("VX_FIXTURE_SEEDS");
    uint64_t first = one ? strtoull(one, NULL, 10) : 1;
    unsigned nseeds = one ? 1 : (cnt ? (unsigned)atoi(cnt) : 200);
    totals t = {0};
    bool faults = getenv("VX_FIXTURE_NO_DISK_FAULTS") == NULL;
    for (unsigned s = 0; s < nseeds; s++) run_seed(first + s, faults, &t);
    if (one == NULL)
        for (size_t k = 0; k < sizeof regression_seeds / sizeof *regression_seeds; k++) {
            totals r = {0};
            run_seed(regression_seeds[k].seed, regression_seeds[k].faults, &r);
            fprintf(stderr, "regression seed %llu: %llu acknowledged, %llu results held back "
                            "by the commit-rule guard\n",
                    (unsigned long long)regression_seeds[k].seed, (unsigned long long)r.acked,
                    (unsigned long long)r.held);
            if (regression_seeds[k].seed == 556) assert_true(r.held > 0); /* the guard acted */
        }
    fprintf(stderr, "fixture: %u seeds from %llu (rerun one with VX_SEED=<n>): %llu entries "
                    "acknowledged, %llu failed or not acknowledged, %llu disk faults, %llu "
                    "results held back by the commit-rule guard\n",
            nseeds, (unsigned long long)first, (unsigned long long)t.acked,
            (unsigned long long)t.failed, (unsigned long long)t.disk_faults,
            (unsigned long long)t.held);
    assert_true(nseeds == 1 ? t.acked > 0 : t.acked > nseeds * 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_faults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
