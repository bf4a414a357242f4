/*
 * bench_replicated.c - `vectron-bench replicated`: acknowledged ingest into
 * one shard group with 1 and with 3 replicas on loopback.
 *
 *   vectron-bench replicated [--dims 128,768] [--batches 100,1000]
 *       [--replicas 1,3] [--points N] [--inflight K] [--json-only]
 *
 * Each configuration gets fresh directories and R node hosts (real TCP on
 * 127.0.0.1, the group-multiplexing transport, libraft's uv backend with
 * its fsynced log, LMDB stores).  The leader's writer keeps K batches in
 * flight; a batch's latency is raft_apply -> callback, i.e. quorum commit
 * plus apply on the leader.  One JSON line per configuration:
 *   {"bench":"replicated","dim":..,"batch":..,"replicas":..,"points":..,
 *    "points_per_s":..,"ack_p50_ms":..,"ack_p99_ms":..,"index_catchup_s":..}
 * where index_catchup_s is how long after the last ack the leader's index
 * held every point.  Then a summary line per (dim, batch) with the ratio of
 * 3-replica to 1-replica throughput.  All replicas share this process's one
 * loop thread (as groups on one node host do), which understates what three
 * separate machines would do.
 */
#include "bench.h"
#include "bench_util.h"

#include "base/err.h"
#include "base/workpool.h"
#include "raft/node.h"
#include "raft/shard_fsm.h"
#include "shard/command.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXR 3
#define MAXLIST 8

typedef struct run {
    uv_loop_t loop;
    vx_workpool *pool;
    vx_node *node[MAXR];
    vx_group *grp[MAXR];
    vx_shard *sh[MAXR];
    vx_shard_fsm fsm[MAXR];
    int replicas, closed;
    uint32_t dim, batch, points, inflight;
    uint32_t next, acked, outstanding, failed;
    double *lat;
    uint32_t nlat;
    float *vecs;
    int leader;
} run;

typedef struct req_ctx {
    run *r;
    double t0;
    uint32_t count;
} req_ctx;

static void submit(run *r);

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    req_ctx *c = req->data;
    run *r = c->r;
    r->outstanding--;
    if (status == 0) {
        r->acked += c->count;
        r->lat[r->nlat++] = (bench_now_s() - c->t0) * 1e3;
    } else {
        r->failed++;
    }
    free(c);
    free(req);
    submit(r);
}

static void submit(run *r)
{
    while (r->outstanding < r->inflight && r->next < r->points) {
        uint32_t n = r->batch;
        if (r->next + n > r->points) n = r->points - r->next;
        vx_cmd_buf b;
        vx_cmd_begin(&b, VX_CMD_UPSERT);
        for (uint32_t i = 0; i < n; i++) {
            vx_point_id id;
            vx_id_from_uint(&id, r->next + i);
            vx_cmd_add_point(&b, &id, r->vecs + (size_t)((r->next + i) % 4096) * r->dim, r->dim,
                             "{\"k\":1}", 7);
        }
        uint8_t *data;
        size_t len;
        if (vx_cmd_finish(&b, &data, &len) != 0) bench_fail("command encoding failed");
        struct raft_apply *req = malloc(sizeof(*req));
        req_ctx *c = malloc(sizeof(*c));
        *c = (req_ctx){r, bench_now_s(), n};
        req->data = c;
        struct raft_buffer buf = {data, len};
        if (raft_apply(vx_group_raft(r->grp[r->leader]), req, &buf, 1, apply_cb) != 0) {
            free(data);
            free(c);
            free(req);
            r->failed++;
            return;
        }
        r->next += n;
        r->outstanding++;
    }
}

static void closed_cb(void *data) { ((run *)data)->closed++; }

static int find_leader(run *r)
{
    for (int i = 0; i < r->replicas; i++)
        if (raft_state(vx_group_raft(r->grp[i])) == RAFT_LEADER) return i;
    return -1;
}

static int one_run(uint32_t dim, uint32_t batch, int replicas, uint32_t points, uint32_t inflight,
                   double *pps_out)
{
    run *r = calloc(1, sizeof(*r));
    r->dim = dim;
    r->batch = batch;
    r->replicas = replicas;
    r->points = points;
    r->inflight = inflight;
    r->lat = malloc(sizeof(double) * (points / batch + 2));
    r->vecs = malloc(sizeof(float) * 4096 * dim);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < (size_t)4096 * dim; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        r->vecs[i] = (float)(x % 10000) / 10000.0f;
    }
    char root[] = "/tmp/vx_bench_repl_XXXXXX";
    if (mkdtemp(root) == NULL) bench_fail("mkdtemp");
    uv_loop_init(&r->loop);
    vx_workpool_new(1, &r->pool);
    int base = 40000 + (int)((unsigned)getpid() % 2000) * 10;
    char addr[MAXR][32], err[256];
    const char *addrs[MAXR];
    raft_id ids[MAXR];
    for (int i = 0; i < replicas; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", base + i);
        addrs[i] = addr[i];
        ids[i] = (raft_id)(i + 1);
    }
    for (int i = 0; i < replicas; i++) {
        char dir[128];
        snprintf(dir, sizeof dir, "%s/n%d", root, i);
        if (vx_node_new(&r->loop, addr[i], dir, "bench-cluster-secret", &r->node[i], err) != 0) bench_fail("node: %s", err);
        snprintf(dir, sizeof dir, "%s/n%d/shard", root, i);
        vx_shard_config cfg = {0};
        vx_index_config_default(&cfg.index, dim, VX_METRIC_L2);
        cfg.max_backlog = 1u << 30;
        if (vx_shard_open(dir, &cfg, r->pool, &r->sh[i], err) != 0) bench_fail("shard: %s", err);
        vx_shard_fsm_init(&r->fsm[i], r->sh[i]);
        vx_group_options opt = {.election_timeout_ms = 500, .heartbeat_timeout_ms = 50,
                                .snapshot_threshold = 1u << 30};
        if (vx_group_new(r->node[i], 1, ids[i], &r->fsm[i].fsm, &opt, &r->grp[i], err) != 0)
            bench_fail("group: %s", err);
        r->fsm[i].raft = vx_group_raft(r->grp[i]);
        if (vx_group_bootstrap(r->grp[i], (unsigned)replicas, ids, addrs) != 0 ||
            vx_group_start(r->grp[i]) != 0)
            bench_fail("group start");
    }
    double dl = bench_now_s() + 20;
    while ((r->leader = find_leader(r)) < 0 && bench_now_s() < dl) uv_run(&r->loop, UV_RUN_ONCE);
    if (r->leader < 0) bench_fail("no leader elected");
    double t0 = bench_now_s();
    submit(r);
    while ((r->acked + r->failed * batch) < points && bench_now_s() < t0 + 600)
        uv_run(&r->loop, UV_RUN_ONCE);
    double t_ack = bench_now_s() - t0;
    if (r->failed) bench_fail("%u batches failed", r->failed);
    vx_shard_wait_indexed(r->sh[r->leader], 600000);
    double catchup = bench_now_s() - t0 - t_ack;
    qsort(r->lat, r->nlat, sizeof(double), bench_cmp_double);
    double pps = points / t_ack;
    printf("{\"bench\":\"replicated\",\"dim\":%u,\"batch\":%u,\"replicas\":%d,\"points\":%u,", dim,
           batch, replicas, points);
    printf("\"points_per_s\":");
    bench_print_num("%.0f", pps);
    printf(",\"ack_p50_ms\":");
    bench_print_num("%.2f", bench_percentile_sorted(r->lat, r->nlat, 0.50));
    printf(",\"ack_p99_ms\":");
    bench_print_num("%.2f", bench_percentile_sorted(r->lat, r->nlat, 0.99));
    printf(",\"index_catchup_s\":");
    bench_print_num("%.2f", catchup);
    printf(",\"inflight\":%u}\n", inflight);
    fflush(stdout);
    *pps_out = pps;
    for (int i = 0; i < replicas; i++) vx_node_close(r->node[i], closed_cb, r);
    while (r->closed < replicas) uv_run(&r->loop, UV_RUN_ONCE);
    for (int i = 0; i < replicas; i++) vx_shard_close(r->sh[i]);
    uv_run(&r->loop, UV_RUN_NOWAIT);
    uv_loop_close(&r->loop);
    vx_workpool_free(r->pool);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) bench_progress("cleanup of %s failed\n", root);
    free(r->lat);
    free(r->vecs);
    free(r);
    return 0;
}

static int parse_list(const char *opt, const char *s, unsigned long long lo, unsigned long long hi,
                      uint32_t *out, int *n)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    *n = 0;
    for (char *tok = strtok(buf, ","); tok && *n < MAXLIST; tok = strtok(NULL, ",")) {
        unsigned long long v;
        if (bench_parse_uint(opt, tok, lo, hi, &v) != 0) return 2;
        out[(*n)++] = (uint32_t)v;
    }
    return *n ? 0 : bench_usage_error("%s needs values", opt);
}

int bench_replicated_main(int argc, char **argv)
{
    bench_set_command("replicated");
    uint32_t dims[MAXLIST] = {128, 768}, batches[MAXLIST] = {100, 1000}, reps[MAXLIST] = {1, 3};
    int nd = 2, nb = 2, nr = 2;
    unsigned long long points = 50000, inflight = 4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json-only")) {
            bench_quiet = true;
            continue;
        }
        if (!strcmp(a, "--help")) {
            printf("usage: vectron-bench replicated [--dims 128,768] [--batches 100,1000] "
                   "[--replicas 1,3] [--points N] [--inflight K] [--json-only]\n");
            return 0;
        }
        if (v == NULL) return bench_usage_error("%s needs a value", a);
        int rc = 0;
        if (!strcmp(a, "--dims")) rc = parse_list(a, v, 1, 65536, dims, &nd);
        else if (!strcmp(a, "--batches")) rc = parse_list(a, v, 1, 100000, batches, &nb);
        else if (!strcmp(a, "--replicas")) rc = parse_list(a, v, 1, 3, reps, &nr);
        else if (!strcmp(a, "--points")) rc = bench_parse_uint(a, v, 1, 100000000, &points);
        else if (!strcmp(a, "--inflight")) rc = bench_parse_uint(a, v, 1, 1024, &inflight);
        else return bench_usage_error("unknown option %s", a);
        if (rc) return rc;
        i++;
    }
    signal(SIGPIPE, SIG_IGN);
    for (int d = 0; d < nd; d++)
        for (int b = 0; b < nb; b++) {
            double pps[MAXLIST] = {0};
            for (int k = 0; k < nr; k++) {
                bench_progress("dim %u batch %u replicas %u ...\n", dims[d], batches[b], reps[k]);
                one_run(dims[d], batches[b], (int)reps[k], (uint32_t)points, (uint32_t)inflight,
                        &pps[k]);
            }
            if (nr >= 2 && pps[0] > 0)
                printf("{\"summary\":true,\"dim\":%u,\"batch\":%u,\"throughput_ratio_%uv%u\":%.3f}\n",
                       dims[d], batches[b], reps[nr - 1], reps[0], pps[nr - 1] / pps[0]);
        }
    return 0;
}
