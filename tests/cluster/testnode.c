/*
 * testnode.c - a worker process for the cluster tests: a node host with G
 * shard groups (3 voters each, on the three addresses given), and built-in
 * writers that ingest points into every group this process leads.
 *
 * Protocol on stdout (one line each, flushed):
 *   ready
 *   leader <g>                 this process became the leader of group g
 *   ack <g> <first> <count>    points first..first+count-1 of group g were
 *                              acknowledged (committed by a quorum and applied)
 *   state <g> <applied> <digest> <count>   answer to "state" on stdin
 * Commands on stdin: "state" (report every group), "quit" (graceful exit).
 *
 * Writers: group g has W writers; writer w owns point ids
 * [w*P, (w+1)*P) and proposes batches of B with at most one in flight, only
 * while this process leads g.  A writer that loses its leader retries its
 * batch; a new leader's writers start over from their first batch (upserts
 * are idempotent), so every id is eventually acknowledged by someone.
 */
#include "base/err.h"
#include "base/workpool.h"
#include "raft/node.h"
#include "raft/shard_fsm.h"
#include "shard/command.h"

#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_GROUPS 256
#define MAX_WRITERS 16
#define DIM 8

typedef struct writer {
    uint32_t next; /* offset of the next batch in the writer's range */
    bool in_flight;
} writer;

typedef struct group_state {
    vx_group *grp;
    vx_shard *sh;
    vx_shard_fsm fsm;
    bool was_leader;
    writer w[MAX_WRITERS];
} group_state;

static struct {
    uv_loop_t loop;
    uv_timer_t timer;
    uv_pipe_t in;
    vx_workpool *pool;
    vx_node *node;
    int id, groups, writers, points, batch;
    group_state g[MAX_GROUPS];
    char linebuf[256];
    size_t linelen;
    bool quitting;
} S;

typedef struct req_ctx {
    int g, w;
    uint32_t first, count;
} req_ctx;

static void vec_for(int g, uint64_t id, float *v)
{
    for (int d = 0; d < DIM; d++) v[d] = (float)((id * 2654435761u + (uint64_t)g * 97 + d * 13) % 1000);
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    req_ctx *c = req->data;
    writer *w = &S.g[c->g].w[c->w];
    w->in_flight = false;
    if (status == 0) {
        printf("ack %d %u %u\n", c->g, c->first, c->count);
        fflush(stdout);
        w->next += c->count;
    }
    free(c);
    free(req);
}

static void propose(int g, int wi)
{
    writer *w = &S.g[g].w[wi];
    uint32_t first = (uint32_t)wi * S.points + w->next;
    uint32_t count = (uint32_t)S.batch;
    if (w->next + count > (uint32_t)S.points) count = (uint32_t)S.points - w->next;
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    for (uint32_t i = 0; i < count; i++) {
        vx_point_id id;
        vx_id_from_uint(&id, first + i);
        float v[DIM];
        vec_for(g, first + i, v);
        char payload[48];
        int n = snprintf(payload, sizeof payload, "{\"w\":%d}", wi);
        vx_cmd_add_point(&b, &id, v, DIM, payload, (uint32_t)n);
    }
    uint8_t *data;
    size_t len;
    if (vx_cmd_finish(&b, &data, &len) != 0) return;
    struct raft_apply *req = malloc(sizeof(*req));
    req_ctx *c = malloc(sizeof(*c));
    *c = (req_ctx){g, wi, first, count};
    req->data = c;
    struct raft_buffer buf = {data, len};
    if (raft_apply(vx_group_raft(S.g[g].grp), req, &buf, 1, apply_cb) != 0) {
        free(data);
        free(c);
        free(req);
        return;
    }
    w->in_flight = true;
}

static void tick(uv_timer_t *t)
{
    (void)t;
    for (int g = 0; g < S.groups; g++) {
        group_state *gs = &S.g[g];
        bool leader = raft_state(vx_group_raft(gs->grp)) == RAFT_LEADER;
        if (leader && !gs->was_leader) {
            printf("leader %d\n", g);
            fflush(stdout);
            for (int w = 0; w < S.writers; w++) gs->w[w].next = 0; /* start over */
        }
        gs->was_leader = leader;
        if (!leader || vx_shard_backlog_full(gs->sh)) continue;
        for (int w = 0; w < S.writers; w++)
            if (!gs->w[w].in_flight && gs->w[w].next < (uint32_t)S.points) propose(g, w);
    }
}

static void report_state(void)
{
    for (int g = 0; g < S.groups; g++) {
        uint64_t d = 0, a = 0;
        vx_shard_digest(S.g[g].sh, &d, &a);
        printf("state %d %" PRIu64 " %016" PRIx64 " %" PRIu64 "\n", g, a, d,
               vx_shard_count(S.g[g].sh));
    }
    fflush(stdout);
}

static void node_closed(void *data)
{
    (void)data;
    uv_close((uv_handle_t *)&S.timer, NULL);
    uv_close((uv_handle_t *)&S.in, NULL);
}

static void quit(void)
{
    if (S.quitting) return;
    S.quitting = true;
    uv_timer_stop(&S.timer);
    uv_read_stop((uv_stream_t *)&S.in);
    vx_node_close(S.node, node_closed, NULL);
}

static void in_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)h;
    (void)sz;
    static char b[256];
    *buf = uv_buf_init(b, sizeof b);
}

static void in_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)s;
    if (n < 0) {
        quit();
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (ch != '\n') {
            if (S.linelen < sizeof S.linebuf - 1) S.linebuf[S.linelen++] = ch;
            continue;
        }
        S.linebuf[S.linelen] = '\0';
        S.linelen = 0;
        if (strcmp(S.linebuf, "state") == 0) report_state();
        if (strcmp(S.linebuf, "quit") == 0) quit();
    }
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *peers = NULL;
    S.groups = 1;
    S.writers = 4;
    S.points = 2500;
    S.batch = 50;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--id")) S.id = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--peers")) peers = argv[i + 1];
        else if (!strcmp(argv[i], "--groups")) S.groups = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--writers")) S.writers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--points")) S.points = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) S.batch = atoi(argv[i + 1]);
    }
    if (S.id < 1 || S.id > 3 || dir == NULL || peers == NULL || S.groups < 1 ||
        S.groups > MAX_GROUPS || S.writers < 1 || S.writers > MAX_WRITERS || S.batch < 1) {
        fprintf(stderr, "usage: vx-testnode --id 1..3 --dir D --peers a1,a2,a3 [--groups G] "
                        "[--writers W] [--points P] [--batch B]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char addrbuf[3][64];
    const char *addrs[3];
    raft_id ids[3] = {1, 2, 3};
    if (sscanf(peers, "%63[^,],%63[^,],%63s", addrbuf[0], addrbuf[1], addrbuf[2]) != 3) {
        fprintf(stderr, "--peers needs three addresses\n");
        return 2;
    }
    for (int i = 0; i < 3; i++) addrs[i] = addrbuf[i];
    uv_loop_init(&S.loop);
    vx_workpool_new(1, &S.pool);
    char err[256];
    if (vx_node_new(&S.loop, addrs[S.id - 1], dir, "test-cluster-secret", &S.node, err) != 0) {
        fprintf(stderr, "node: %s\n", err);
        return 1;
    }
    for (int g = 0; g < S.groups; g++) {
        char sdir[512];
        snprintf(sdir, sizeof sdir, "%s/shard%d", dir, g);
        vx_shard_config cfg = {.background_recovery = true}; /* as workers open theirs */
        vx_index_config_default(&cfg.index, DIM, VX_METRIC_L2);
        if (vx_shard_open(sdir, &cfg, S.pool, &S.g[g].sh, err) != 0) {
            fprintf(stderr, "shard: %s\n", err);
            return 1;
        }
        vx_shard_fsm_init(&S.g[g].fsm, S.g[g].sh);
        vx_group_options opt = {.election_timeout_ms = 500, .heartbeat_timeout_ms = 100}; /* as workers */
        if (vx_group_new(S.node, (uint64_t)g + 1, (raft_id)S.id, &S.g[g].fsm.fsm, &opt,
                         &S.g[g].grp, err) != 0) {
            fprintf(stderr, "group: %s\n", err);
            return 1;
        }
        S.g[g].fsm.raft = vx_group_raft(S.g[g].grp);
        if (vx_group_bootstrap(S.g[g].grp, 3, ids, addrs) != 0 || vx_group_start(S.g[g].grp) != 0) {
            fprintf(stderr, "group %d: cannot start: %s\n", g, raft_errmsg(vx_group_raft(S.g[g].grp)));
            return 1;
        }
    }
    uv_timer_init(&S.loop, &S.timer);
    uv_timer_start(&S.timer, tick, 10, 10);
    uv_pipe_init(&S.loop, &S.in, 0);
    uv_pipe_open(&S.in, 0);
    uv_read_start((uv_stream_t *)&S.in, in_alloc, in_read);
    printf("ready\n");
    fflush(stdout);
    uv_run(&S.loop, UV_RUN_DEFAULT);
    for (int g = 0; g < S.groups; g++) vx_shard_close(S.g[g].sh);
    vx_workpool_free(S.pool);
    uv_loop_close(&S.loop);
    return 0;
}
