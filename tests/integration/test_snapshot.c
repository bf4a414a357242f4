/*
 * test_snapshot.c - snapshot installs with their data streamed beside
 * libraft (raft/snapshot_io.c, shard/xfer.c), over real TCP on 127.0.0.1.
 *
 * One shard group on three node hosts (one libuv loop), with a small
 * snapshot threshold so the leader compacts its log often:
 *   1. a replica is stopped, writes go on past several snapshots, and it is
 *      restarted: its log ends before the leader's first entry, so the
 *      leader sends a snapshot; the replica fetches the leader's data,
 *      swaps it in for its own, and catches up (equal digests);
 *   2. a fresh node joins as a learner: the same from an empty directory;
 *   3. a linearizable read: after a barrier on the leader, a search sees the
 *      last acknowledged write; a follower refuses the barrier.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/workpool.h"
#include "raft/node.h"
#include "raft/shard_fsm.h"
#include "shard/command.h"
#include "testutil.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NODES 4 /* three voters, then a learner */
#define GID 7
#define DIM 32
#define PER_BATCH 20

typedef struct cluster {
    uv_loop_t loop;
    vx_workpool *pool;
    vx_node *node[NODES];
    vx_group *grp[NODES];
    vx_shard_fsm fsm[NODES];
    char addr[NODES][32];
    bool up[NODES];
    char root[64];
    int acked, failed, proposed, closed;
    uint64_t next_point, points_acked;
    vx_rng rng;
    float last_vec[DIM];   /* of the last acknowledged batch's last point */
    uint64_t last_id;
} cluster;

typedef struct proposal {
    struct raft_apply req;
    cluster *c;
    uint64_t last_id;
    float last_vec[DIM];
} proposal;

/* A failed proposal (leadership lost: slow runs under TSan see elections)
 * may or may not commit; the checks below compare replicas with each other
 * and look for acknowledged points only. */
static void apply_cb(struct raft_apply *req, int status, void *result)
{
    proposal *p = (proposal *)req;
    cluster *c = p->c;
    (void)result;
    if (status == 0) {
        c->acked++;
        c->points_acked += PER_BATCH;
        if (p->last_id >= c->last_id || c->points_acked == PER_BATCH) {
            c->last_id = p->last_id;
            memcpy(c->last_vec, p->last_vec, sizeof c->last_vec);
        }
    } else {
        c->failed++;
    }
    free(p);
}

static int leader_of(cluster *c)
{
    for (int n = 0; n < NODES; n++)
        if (c->up[n] && raft_state(vx_group_raft(c->grp[n])) == RAFT_LEADER) return n;
    return -1;
}

static bool run_until(cluster *c, bool (*pred)(cluster *), int deadline_ms)
{
    double end = vx_test_now() + deadline_ms / 1000.0;
    while (!pred(c) && vx_test_now() < end) uv_run(&c->loop, UV_RUN_ONCE);
    return pred(c);
}

static bool has_leader(cluster *c) { return leader_of(c) >= 0; }
static bool all_acked(cluster *c) { return c->acked + c->failed == c->proposed; }

static bool all_applied(cluster *c)
{
    int l = leader_of(c);
    if (l < 0) return false;
    raft_index last = raft_last_applied(vx_group_raft(c->grp[l]));
    for (int n = 0; n < NODES; n++)
        if (c->up[n] && raft_last_applied(vx_group_raft(c->grp[n])) < last) return false;
    return true;
}

static void propose(cluster *c, int l)
{
    proposal *p = calloc(1, sizeof(*p));
    p->c = c;
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    for (int i = 0; i < PER_BATCH; i++) {
        vx_point_id id;
        p->last_id = c->next_point++;
        vx_id_from_uint(&id, p->last_id);
        for (int d = 0; d < DIM; d++) p->last_vec[d] = vx_rng_normal(&c->rng);
        vx_cmd_add_point(&b, &id, p->last_vec, DIM, "{\"k\":1}", 7);
    }
    uint8_t *data;
    size_t len;
    assert_int_equal(vx_cmd_finish(&b, &data, &len), 0);
    struct raft_buffer buf = {data, len};
    if (raft_apply(vx_group_raft(c->grp[l]), &p->req, &buf, 1, apply_cb) != 0) {
        free(data);
        free(p);
        return;
    }
    c->proposed++;
}

static void dump(cluster *c)
{
    for (int n = 0; n < NODES; n++) {
        if (!c->up[n]) continue;
        struct raft *r = vx_group_raft(c->grp[n]);
        fprintf(stderr,
                "node %d: state %d term %llu commit %llu applied %llu shard %llu snapshot put "
                "pending %d taking %d installs %u\n",
                n + 1, raft_state(r), (unsigned long long)r->current_term,
                (unsigned long long)r->commit_index, (unsigned long long)raft_last_applied(r),
                (unsigned long long)vx_shard_applied(c->fsm[n].shard),
                r->snapshot.put.data != NULL, r->snapshot.pending.term != 0, c->fsm[n].installs);
    }
}

/* `batches` acknowledged batches, at most 16 in flight (failed ones are
 * replaced by new ones). */
static void write_batches(cluster *c, int batches)
{
    int target = c->acked + batches;
    double end = vx_test_now() + 120;
    while (c->acked < target && vx_test_now() < end) {
        if (!run_until(c, has_leader, 20000)) break;
        int l = leader_of(c);
        for (int k = 0; k < 16 && c->acked + (c->proposed - c->acked - c->failed) < target; k++)
            propose(c, l);
        if (!run_until(c, all_acked, 20000)) break;
    }
    if (c->acked < target) {
        dump(c);
        fail_msg("%d of %d proposals acknowledged, %d failed", c->acked, c->proposed, c->failed);
    }
}

static void open_node(cluster *c, int n, bool bootstrap)
{
    char dir[128], err[VX_NODE_ERRMSG_LEN], serr[VX_SHARD_ERRMSG_LEN];
    snprintf(dir, sizeof dir, "%s/n%d", c->root, n);
    int rc = vx_node_new(&c->loop, c->addr[n], dir, "test-cluster-secret", &c->node[n], err);
    if (rc) fprintf(stderr, "node: %s\n", err);
    assert_int_equal(rc, 0);
    snprintf(dir, sizeof dir, "%s/n%d/shard", c->root, n);
    /* on the loop all nodes share, as a worker opens its shards: an install
     * must not re-index in place (under TSan that stalled the loop 20 s) */
    vx_shard_config cfg = {.background_recovery = true};
    vx_index_config_default(&cfg.index, DIM, VX_METRIC_L2);
    vx_shard *sh;
    assert_int_equal(vx_shard_open(dir, &cfg, c->pool, &sh, serr), 0);
    vx_shard_fsm_init(&c->fsm[n], sh);
#ifdef __SANITIZE_THREAD__ /* TSan slows the loop past heartbeats: fewer needless elections */
    unsigned election_ms = 4000;
#else
    unsigned election_ms = 1000;
#endif
    vx_group_options opt = {.election_timeout_ms = election_ms,
                            .heartbeat_timeout_ms = 100,
                            .snapshot_threshold = 64,
                            .snapshot_trailing = 16};
    assert_int_equal(
        vx_group_new(c->node[n], GID, (raft_id)n + 1, &c->fsm[n].fsm, &opt, &c->grp[n], err), 0);
    c->fsm[n].raft = vx_group_raft(c->grp[n]);
    vx_snapshot_ops ops;
    vx_shard_fsm_snapshot_ops(&c->fsm[n], &ops);
    vx_group_set_snapshot_ops(c->grp[n], &ops);
    if (bootstrap) {
        raft_id ids[3] = {1, 2, 3};
        const char *addrs[3] = {c->addr[0], c->addr[1], c->addr[2]};
        assert_int_equal(vx_group_bootstrap(c->grp[n], 3, ids, addrs), 0);
    }
    assert_int_equal(vx_group_start(c->grp[n]), 0);
    c->up[n] = true;
}

static void node_closed(void *data) { ((cluster *)data)->closed++; }
static int g_want_closed;
static bool closed_enough(cluster *c) { return c->closed >= g_want_closed; }

static void close_node(cluster *c, int n)
{
    c->up[n] = false;
    g_want_closed = c->closed + 1;
    vx_node_close(c->node[n], node_closed, c);
    assert_true(run_until(c, closed_enough, 10000));
    vx_shard_close(c->fsm[n].shard);
    vx_shard_fsm_destroy(&c->fsm[n]);
}

static void expect_same_data(cluster *c)
{
    if (!run_until(c, all_applied, 30000)) {
        dump(c);
        fail_msg("replicas did not catch up");
    }
    uint64_t d0 = 0, a0 = 0;
    bool first = true;
    for (int n = 0; n < NODES; n++) {
        if (!c->up[n]) continue;
        uint64_t d, a;
        assert_int_equal(vx_shard_digest(c->fsm[n].shard, &d, &a), 0);
        assert_true(vx_shard_count(c->fsm[n].shard) >= c->points_acked);
        if (first) {
            d0 = d;
            a0 = a;
            first = false;
        }
        if (d != d0)
            fail_msg("node %d: digest %llx at %llu, node 0's %llx at %llu", n,
                     (unsigned long long)d, (unsigned long long)a, (unsigned long long)d0,
                     (unsigned long long)a0);
    }
}

static unsigned snapshot_files(cluster *c, int n)
{
    char dir[160];
    snprintf(dir, sizeof dir, "%s/n%d/g%d/raft", c->root, n, GID);
    DIR *d = opendir(dir);
    unsigned count = 0;
    if (d == NULL) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) count += strncmp(e->d_name, "snapshot-", 9) == 0;
    closedir(d);
    return count;
}

/* The last written point is the nearest neighbour of its own vector. */
static void expect_last_point(cluster *c, int n)
{
    vx_shard *sh = vx_shard_fsm_acquire(&c->fsm[n]);
    vx_shard_hit hit;
    uint32_t got = 0;
    vx_search_params p = {.ef = 64};
    assert_int_equal(vx_shard_search(sh, c->last_vec, 1, &p, &hit, &got), 0);
    vx_shard_fsm_release(&c->fsm[n]);
    vx_point_id want;
    vx_id_from_uint(&want, c->last_id);
    assert_int_equal(got, 1);
    assert_true(vx_id_equal(&hit.id, &want));
}

typedef struct step {
    int status; /* 1 = pending */
} step;
static void step_done(void *data, int status) { ((step *)data)->status = status; }
static step *g_step;
static bool step_finished(cluster *c)
{
    (void)c;
    return g_step->status != 1;
}

/* No running node's log holds the entry after g_behind (the victim's last
 * log entry) any more, so the victim can only catch up from a snapshot.
 * Checking only the leader's applied-index view left two ways around it,
 * one of which failed this test once under TSan: entries the victim held
 * but had not applied are replayed from its own log, and leadership may
 * move on the restart to a node that has not compacted yet. */
static uint64_t g_behind;
static bool running_compacted(cluster *c)
{
    if (leader_of(c) < 0) return false;
    for (int n = 0; n < 3; n++)
        if (c->up[n] && vx_group_raft(c->grp[n])->log.offset <= g_behind) return false;
    return true;
}

static void test_snapshot_install(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    cluster *c = calloc(1, sizeof(*c));
    assert_int_equal(uv_loop_init(&c->loop), 0);
    assert_int_equal(vx_workpool_new(1, &c->pool), 0);
    vx_rng_seed(&c->rng, vx_test_seed(5));
    snprintf(c->root, sizeof c->root, "/tmp/vx_snap_XXXXXX");
    assert_non_null(mkdtemp(c->root));
    int base = 17000 + (int)(vx_test_seed(5) * 6151 % 2000); /* below the ephemeral range */
    for (int n = 0; n < NODES; n++) snprintf(c->addr[n], sizeof c->addr[n], "127.0.0.1:%d", base + n);
    for (int n = 0; n < 3; n++) open_node(c, n, true);
    write_batches(c, 100);
    expect_same_data(c);
    assert_true(snapshot_files(c, leader_of(c)) > 0);

    /* 1. a stopped replica falls behind the leader's compacted log */
    int l = leader_of(c);
    int victim = (l + 1) % 3;
    /* behind its log's last entry, not just its applied index: entries it
     * holds but had not applied would be replayed from its own log, and
     * the leader would send the rest as entries */
    g_behind = vx_shard_applied(c->fsm[victim].shard);
    raft_index last = raft_last_index(vx_group_raft(c->grp[victim]));
    if (last > g_behind) g_behind = last;
    close_node(c, victim);
    write_batches(c, 200);
    /* Snapshots are taken one at a time, off the loop; a slow one (TSan)
     * can leave a log uncompacted past the victim: write on until none is */
    for (int more = 0; more < 20 && !run_until(c, running_compacted, 2000); more++)
        write_batches(c, 64);
    assert_true(running_compacted(c));
    open_node(c, victim, false);
    expect_same_data(c);
    assert_true(c->fsm[victim].installs > 0); /* its data was replaced, not replayed */
    expect_last_point(c, victim);
    fprintf(stderr, "restarted replica %d installed the leader's snapshot data and caught up\n",
            victim + 1);

    /* 2. a new, empty node joins as a learner */
    open_node(c, 3, false);
    step s = {1};
    g_step = &s;
    l = leader_of(c);
    assert_int_equal(vx_group_add_learner(c->grp[l], 4, c->addr[3], step_done, &s), 0);
    assert_true(run_until(c, step_finished, 20000));
    assert_int_equal(s.status, 0);
    write_batches(c, 5);
    expect_same_data(c);
    assert_true(c->fsm[3].installs > 0);
    expect_last_point(c, 3);
    fprintf(stderr, "a new learner installed the snapshot data and caught up\n");

    /* 3. linearizable read: barrier, then search the leader's replica */
    l = leader_of(c);
    write_batches(c, 1);
    s.status = 1;
    assert_int_equal(vx_group_barrier(c->grp[l], step_done, &s), 0);
    assert_true(run_until(c, step_finished, 10000));
    assert_int_equal(s.status, 0);
    expect_last_point(c, l);
    s.status = 1;
    int rc = vx_group_barrier(c->grp[(l + 1) % 3], step_done, &s);
    assert_int_equal(rc, VX_ESTATE);

    for (int n = 0; n < NODES; n++)
        if (c->up[n]) close_node(c, n);
    uv_run(&c->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    vx_workpool_free(c->pool);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", c->root);
    assert_int_equal(system(cmd), 0);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_install),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
