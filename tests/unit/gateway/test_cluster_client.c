/*
 * test_cluster_client.c - the gateway's cluster client (src/gateway/cluster.h)
 * against real processes on 127.0.0.1: one `vectron pd` and three
 * `vectron worker`s (the binary is argv[1]), a collection of 2 shards with
 * 3 replicas each.
 *
 *   1. topology: snapshots, invalidation after a PD mutation, concurrent
 *      readers and invalidations.
 *   2. writes routed by vx_id_hash(id) % shards, gets, shard info (count,
 *      indexed, backlog, payload indexes).
 *   3. scans with pagination (with and without a filter), counts, searches;
 *      bad input answered VX_EINVAL (or VX_EDIM), never a crash.
 *   4. SIGKILL of a shard leader's worker under concurrent writes: writes
 *      go through the other replicas after the election, every acknowledged
 *      point is readable; the dead worker's breaker opens, lets one probe
 *      through per open period, and closes once the worker is back.
 *
 * VX_SEED picks the ports and ids (printed at start).  Logs stay in the
 * temp directory when a test fails (or with VX_KEEP_LOGS set).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/fsutil.h"
#include "base/pointid.h"
#include "gateway/cluster.h"
#include "pd/decide.h"
#include "pd/pdrpc.h"
#include "rpc/rpc.h"
#include "shard/command.h"
#include "testutil.h"
#include "worker.pb-c.h"
#include "worker/worker.h"

#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define NW 3
#define DIM 4
#define SHARDS 2
#define RF 3
#define NPOINTS 300
#define BREAKER_FAILURES 3
/* Long enough that the five calls made while the breaker is open (test 4)
 * all fall inside one open period on a slow, busy machine too. */
#define BREAKER_OPEN_MS 5000

static const char *g_bin;
static uint64_t g_seed;

static struct {
    char root[128];
    int base;
    pid_t pd, wk[NW];
    char pd_rpc[32], wk_rpc[NW][32];
    vx_cluster *cl;
    uint64_t gids[SHARDS];
    int passed; /* tests that ran to their end */
} G;

static double now_s(void) { return vx_test_now(); }

/* ---- processes ---------------------------------------------------------------------------- */

static void spawn_pd(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        char dir[256], log[256], peers[128];
        snprintf(dir, sizeof dir, "%s/pd", G.root);
        snprintf(log, sizeof log, "%s/pd.log", G.root);
        snprintf(peers, sizeof peers, "1@127.0.0.1:%d/%s", G.base, G.pd_rpc);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
        execl(g_bin, g_bin, "pd", "--id", "1", "--data-dir", dir, "--peers", peers, "--tick-ms", "200",
              (char *)NULL);
        _exit(127);
    }
    G.pd = pid;
}

static void spawn_worker(int i)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char dir[256], log[256], raft[32], zone[16];
        snprintf(dir, sizeof dir, "%s/w%d", G.root, i + 1);
        snprintf(log, sizeof log, "%s/w%d.log", G.root, i + 1);
        snprintf(raft, sizeof raft, "127.0.0.1:%d", G.base + 10 + i);
        snprintf(zone, sizeof zone, "z%d", i + 1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
        execl(g_bin, g_bin, "worker", "--data-dir", dir, "--pd", G.pd_rpc, "--raft", raft, "--rpc",
              G.wk_rpc[i], "--zone", zone, "--heartbeat-ms", "300", "--index-threads", "1",
              "--search-threads", "2", (char *)NULL);
        _exit(127);
    }
    G.wk[i] = pid;
}

static void kill9(pid_t *p)
{
    if (*p <= 0) return;
    kill(*p, SIGKILL);
    waitpid(*p, NULL, 0);
    *p = 0;
}

/* SIGTERM, then SIGKILL after 10 s: a graceful stop where possible. */
static void stop_gracefully(pid_t *p)
{
    if (*p <= 0) return;
    kill(*p, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(*p, NULL, WNOHANG) == *p) {
            *p = 0;
            return;
        }
        usleep(10000);
    }
    kill9(p);
}

static int worker_of_addr(const char *addr)
{
    for (int i = 0; i < NW; i++)
        if (strcmp(G.wk_rpc[i], addr) == 0) return i;
    return -1;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static void vec_of(uint64_t id, float *v)
{
    for (int d = 0; d < DIM; d++) v[d] = (float)((id * 2654435761u + (uint64_t)d * 40503u) % 1000) / 100.0f;
}

static unsigned shard_idx(uint64_t id)
{
    vx_point_id pid;
    vx_id_from_uint(&pid, id);
    return (unsigned)(vx_id_hash(&pid) % SHARDS);
}

/* One write command to one shard. */
static int write_cmd(const uint8_t *cmd, size_t len, unsigned s, int timeout_ms, Vxw__WriteResponse **out,
                     char *err)
{
    Vxw__WriteRequest r = VXW__WRITE_REQUEST__INIT;
    r.group_id = G.gids[s];
    r.command.data = (uint8_t *)cmd;
    r.command.len = len;
    ProtobufCMessage *resp = NULL;
    int rc = vx_cluster_shard_call(G.cl, G.gids[s], VX_W_WRITE, &r.base, &vxw__write_response__descriptor, &resp,
                                   true, timeout_ms, err);
    if (out) *out = (Vxw__WriteResponse *)resp;
    else if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* Upsert ids [first, first+n) (only those on shard `only`, unless only < 0). */
static int write_points(uint64_t first, unsigned n, int only, int timeout_ms, char *err)
{
    vx_cmd_buf cb[SHARDS];
    unsigned cnt[SHARDS] = {0};
    for (unsigned s = 0; s < SHARDS; s++) vx_cmd_begin(&cb[s], VX_CMD_UPSERT);
    for (uint64_t id = first; id < first + n; id++) {
        unsigned s = shard_idx(id);
        if (only >= 0 && s != (unsigned)only) continue;
        vx_point_id pid;
        vx_id_from_uint(&pid, id);
        float v[DIM];
        vec_of(id, v);
        char payload[96];
        int pl = snprintf(payload, sizeof payload, "{\"n\":%" PRIu64 ",\"g\":%" PRIu64 "}", id, id % 3);
        vx_cmd_add_point(&cb[s], &pid, v, DIM, payload, (uint32_t)pl);
        cnt[s]++;
    }
    int rc = 0;
    for (unsigned s = 0; s < SHARDS; s++) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (vx_cmd_finish(&cb[s], &data, &len) != 0) rc = vx_errf(err, VX_CLUSTER_ERRMSG_LEN, VX_EINVAL, "bad batch");
        if (cnt[s] > 0 && rc == 0) {
            Vxw__WriteResponse *wr = NULL;
            rc = write_cmd(data, len, s, timeout_ms, &wr, err);
            if (rc == 0) { /* no cmocka asserts here: writer threads call this */
                if (wr->status != 0)
                    rc = vx_errf(err, VX_CLUSTER_ERRMSG_LEN, VX_ESTATE, "shard applied the batch as a no-op: %s",
                                 vx_strerror(wr->status));
                protobuf_c_message_free_unpacked(&wr->base, NULL);
            }
        }
        free(data);
    }
    return rc;
}

static Vxw__GetResponse *get_point(uint64_t id, bool leader_only)
{
    vx_point_id pid;
    vx_id_from_uint(&pid, id);
    unsigned s = shard_idx(id);
    Vxw__GetRequest r = VXW__GET_REQUEST__INIT;
    r.group_id = G.gids[s];
    r.id.data = pid.b;
    r.id.len = pid.len;
    r.allow_follower = !leader_only;
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_shard_call(G.cl, G.gids[s], VX_W_GET, &r.base, &vxw__get_response__descriptor, &resp,
                                   leader_only, 10000, err);
    if (rc != 0) fail_msg("get %" PRIu64 ": %s", id, err);
    return (Vxw__GetResponse *)resp;
}

static Vxw__ShardInfo *shard_info(unsigned s)
{
    Vxw__ShardInfoRequest r = VXW__SHARD_INFO_REQUEST__INIT;
    r.group_id = G.gids[s];
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_shard_call(G.cl, G.gids[s], VX_W_SHARD_INFO, &r.base, &vxw__shard_info__descriptor, &resp,
                                   true, 10000, err);
    if (rc != 0) fail_msg("shard info %u: %s", s, err);
    Vxw__ShardInfo *info = (Vxw__ShardInfo *)resp;
    assert_true(info->leader);
    return info;
}

static int scan(unsigned s, const uint8_t *start, size_t start_len, const char *filter, uint32_t limit, bool wp,
                bool wv, Vxw__ScanResponse **out, char *err)
{
    Vxw__ScanRequest r = VXW__SCAN_REQUEST__INIT;
    r.group_id = G.gids[s];
    r.start_id.data = (uint8_t *)start;
    r.start_id.len = start_len;
    r.filter_json = (char *)(filter ? filter : "");
    r.limit = limit;
    r.with_payload = wp;
    r.with_vector = wv;
    r.allow_follower = false;
    ProtobufCMessage *resp = NULL;
    int rc = vx_cluster_shard_call(G.cl, G.gids[s], VX_W_SCAN, &r.base, &vxw__scan_response__descriptor, &resp,
                                   true, 10000, err);
    *out = (Vxw__ScanResponse *)resp;
    return rc;
}

static int count(unsigned s, const char *filter, uint64_t *n, char *err)
{
    Vxw__CountRequest r = VXW__COUNT_REQUEST__INIT;
    r.group_id = G.gids[s];
    r.filter_json = (char *)(filter ? filter : "");
    ProtobufCMessage *resp = NULL;
    int rc = vx_cluster_shard_call(G.cl, G.gids[s], VX_W_COUNT, &r.base, &vxw__count_response__descriptor, &resp,
                                   true, 10000, err);
    if (rc == 0) {
        *n = ((Vxw__CountResponse *)resp)->count;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return rc;
}

static uint64_t id_of(const ProtobufCBinaryData *b)
{
    vx_point_id pid;
    assert_int_equal(vx_id_from_bytes(&pid, b->data, b->len), 0);
    assert_int_equal(vx_id_kind(&pid), VX_ID_UINT);
    return vx_id_uint(&pid);
}

static uint64_t g_first; /* the ids of this run: g_first .. g_first + NPOINTS - 1 */

/* ---- setup --------------------------------------------------------------------------------- */

static int wait_workers(int n, double seconds)
{
    double t0 = now_s();
    for (;;) {
        vx_cluster_invalidate(G.cl);
        char err[VX_CLUSTER_ERRMSG_LEN];
        vx_topo *t = vx_cluster_topology(G.cl, err);
        int ready = 0;
        for (size_t i = 0; t && i < t->t->n_workers; i++)
            ready += t->t->workers[i]->state == VX_PD_READY || t->t->workers[i]->state == VX_PD_ACTIVE;
        vx_topo_put(t);
        if (ready >= n) return 0;
        if (now_s() - t0 > seconds) return -1;
        usleep(100000);
    }
}

static int group_setup(void **unused)
{
    (void)unused;
    snprintf(G.root, sizeof G.root, "/tmp/vx-gwclient-XXXXXX");
    assert_non_null(mkdtemp(G.root));
    /* below Linux's ephemeral range (32768-60999) */
    G.base = 21000 + (int)(g_seed % 250) * 40;
    snprintf(G.pd_rpc, sizeof G.pd_rpc, "127.0.0.1:%d", G.base + 1);
    for (int i = 0; i < NW; i++) snprintf(G.wk_rpc[i], sizeof G.wk_rpc[i], "127.0.0.1:%d", G.base + 20 + i);
    printf("cluster in %s, ports %d..%d\n", G.root, G.base, G.base + 29);
    spawn_pd();
    for (int i = 0; i < NW; i++) spawn_worker(i);
    vx_cluster_options o = {.pd_addrs = G.pd_rpc,
                            .topology_ttl_ms = 500,
                            .breaker_failures = BREAKER_FAILURES,
                            .breaker_open_ms = BREAKER_OPEN_MS};
    char err[VX_CLUSTER_ERRMSG_LEN];
    assert_int_equal(vx_cluster_new(&o, &G.cl, err), 0);
    g_first = 1 + (g_seed % 1000) * 1000;
    return 0;
}

static int group_teardown(void **unused)
{
    (void)unused;
    vx_cluster_free(G.cl);
    for (int i = 0; i < NW; i++) stop_gracefully(&G.wk[i]);
    stop_gracefully(&G.pd);
    if (G.passed != 4 || getenv("VX_KEEP_LOGS")) printf("logs kept in %s\n", G.root);
    else vx_rm_rf(G.root);
    return 0;
}


/* ---- 1. topology --------------------------------------------------------------------------- */

static void *topo_hammer(void *arg)
{
    atomic_int *stop = arg;
    unsigned n = 0;
    while (!atomic_load(stop)) {
        char err[VX_CLUSTER_ERRMSG_LEN];
        vx_topo *t = vx_cluster_topology(G.cl, err);
        if (t) {
            (void)vx_topo_collection(t, "pts");
            vx_topo_put(t);
        }
        if (++n % 500 == 0) vx_cluster_invalidate(G.cl);
    }
    return NULL;
}

static void test_topology(void **unused)
{
    (void)unused;
    char err[VX_CLUSTER_ERRMSG_LEN];
    if (wait_workers(NW, 30) != 0) fail_msg("%d workers not ready within 30 s", NW);
    vx_topo *t = vx_cluster_topology(G.cl, err);
    assert_non_null(t);
    assert_null(vx_topo_collection(t, "pts"));
    assert_int_equal(t->t->n_workers, NW);
    for (size_t i = 0; i < t->t->n_workers; i++) {
        const Vxpd__Worker *w = vx_topo_worker(t, t->t->workers[i]->id);
        assert_ptr_equal(w, t->t->workers[i]);
        assert_true(worker_of_addr(w->rpc_address) >= 0);
    }
    assert_null(vx_topo_worker(t, 999999));

    /* create through the client: the next snapshot has it (invalidation) */
    Vxpd__CreateCollectionRequest r = VXPD__CREATE_COLLECTION_REQUEST__INIT;
    r.name = (char *)"pts";
    r.config_json = (char *)"{\"vectors\":{\"size\":4,\"distance\":\"Euclid\"}}";
    char rid[33];
    vx_pd_request_id(rid);
    r.request_id = rid;
    r.shard_count = SHARDS;
    r.replication_factor = RF;
    ProtobufCMessage *m = NULL;
    int rc = vx_cluster_pd_call(G.cl, VX_PD_CREATE_COLLECTION, &r.base, &vxpd__collection_response__descriptor, &m,
                                15000, err);
    if (rc != 0) fail_msg("create: %s", err);
    protobuf_c_message_free_unpacked(m, NULL);
    vx_topo *t2 = vx_cluster_topology(G.cl, err);
    assert_non_null(t2);
    const Vxpd__Collection *col = vx_topo_collection(t2, "pts");
    assert_non_null(col);
    assert_int_equal(col->n_shards, SHARDS);
    for (unsigned s = 0; s < SHARDS; s++) {
        G.gids[s] = col->shards[s]->group_id;
        assert_int_equal(col->shards[s]->index, s);
        assert_int_equal(col->shards[s]->n_replicas, RF);
        const Vxpd__Collection *back = NULL;
        assert_ptr_equal(vx_topo_shard(t2, G.gids[s], &back), col->shards[s]);
        assert_ptr_equal(back, col);
    }
    /* the old snapshot is still valid and unchanged */
    assert_null(vx_topo_collection(t, "pts"));
    vx_topo_put(t);
    vx_topo_put(t2);

    /* a PD refusal comes back as is */
    Vxpd__NameRequest nr = VXPD__NAME_REQUEST__INIT;
    nr.name = (char *)"nope";
    rc = vx_cluster_pd_call(G.cl, VX_PD_GET_COLLECTION, &nr.base, &vxpd__collection_response__descriptor, &m, 5000,
                            err);
    assert_int_equal(rc, VX_ENOTFOUND);
    assert_non_null(strstr(err, "nope"));

    /* concurrent snapshots and invalidations */
    atomic_int stop = 0;
    pthread_t th[6];
    for (int i = 0; i < 6; i++) assert_int_equal(pthread_create(&th[i], NULL, topo_hammer, &stop), 0);
    usleep(1000000);
    atomic_store(&stop, 1);
    for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
    vx_cluster_stats st;
    vx_cluster_stats_get(G.cl, &st);
    printf("topology: %" PRIu64 " refreshes so far\n", st.topology_refreshes);
    G.passed++;
}

/* ---- 2. writes, gets, shard info ------------------------------------------------------------ */

static void test_write_get_info(void **unused)
{
    (void)unused;
    char err[VX_CLUSTER_ERRMSG_LEN];
    double t0 = now_s();
    /* the first writes wait for the shards' first elections */
    if (write_points(g_first, NPOINTS, -1, 20000, err) != 0) fail_msg("write: %s", err);
    printf("%d points written in %.2f s (elections included)\n", NPOINTS, now_s() - t0);
    for (uint64_t id = g_first; id < g_first + NPOINTS; id += 7) {
        Vxw__GetResponse *g = get_point(id, id % 2 == 0);
        assert_true(g->found);
        assert_int_equal(g->n_vector, DIM);
        float v[DIM];
        vec_of(id, v);
        assert_memory_equal(g->vector, v, sizeof v);
        char want[96];
        snprintf(want, sizeof want, "\"n\":%" PRIu64, id);
        assert_non_null(strstr(g->payload_json, want));
        assert_true(g->version > 0);
        protobuf_c_message_free_unpacked(&g->base, NULL);
    }
    Vxw__GetResponse *g = get_point(g_first + NPOINTS + 5, true);
    assert_false(g->found);
    protobuf_c_message_free_unpacked(&g->base, NULL);

    /* a payload index on every shard (a shard command) */
    for (unsigned s = 0; s < SHARDS; s++) {
        vx_cmd_buf cb;
        vx_cmd_begin(&cb, VX_CMD_CREATE_INDEX);
        const char *j = "{\"field_name\":\"g\",\"field_schema\":\"integer\"}";
        vx_cmd_set_json(&cb, j, (uint32_t)strlen(j));
        uint8_t *data;
        size_t len;
        assert_int_equal(vx_cmd_finish(&cb, &data, &len), 0);
        Vxw__WriteResponse *wr = NULL;
        if (write_cmd(data, len, s, 10000, &wr, err) != 0) fail_msg("create index: %s", err);
        assert_int_equal(wr->status, 0);
        protobuf_c_message_free_unpacked(&wr->base, NULL);
        free(data);
    }

    /* shard info: counts add up; the index catches up; the payload index lists every point */
    uint64_t total = 0;
    for (unsigned s = 0; s < SHARDS; s++) {
        Vxw__ShardInfo *info = NULL;
        double d0 = now_s();
        for (;;) {
            info = shard_info(s);
            if (info->indexed == info->count && info->backlog == 0) break;
            if (now_s() - d0 > 20)
                fail_msg("shard %u: indexed %" PRIu64 " of %" PRIu64 ", backlog %" PRIu64, s, info->indexed,
                         info->count, info->backlog);
            protobuf_c_message_free_unpacked(&info->base, NULL);
            usleep(50000);
        }
        assert_int_equal(info->group_id, G.gids[s]);
        assert_true(info->leader_worker != 0);
        assert_true(info->applied > 0);
        assert_int_equal(info->n_payload_indexes, 1);
        assert_string_equal(info->payload_indexes[0]->field, "g");
        assert_string_equal(info->payload_indexes[0]->type, "integer");
        assert_int_equal(info->payload_indexes[0]->points, info->count);
        printf("shard %" PRIu64 ": %" PRIu64 " points, %" PRIu64 " indexed, leader worker %" PRIu64 "\n",
               info->group_id, info->count, info->indexed, info->leader_worker);
        total += info->count;
        protobuf_c_message_free_unpacked(&info->base, NULL);
    }
    assert_int_equal(total, NPOINTS);
    G.passed++;
}

/* ---- 3. scans, counts, searches, bad input --------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Every point of shard s matching filter, page by page; checks order and
 * contents; returns the number seen. */
static size_t scan_all(unsigned s, const char *filter, uint32_t page, uint64_t *ids, size_t cap)
{
    char err[VX_CLUSTER_ERRMSG_LEN];
    uint8_t start[VX_ID_MAX_BYTES];
    size_t start_len = 0, n = 0;
    unsigned pages = 0;
    for (;;) {
        Vxw__ScanResponse *r = NULL;
        if (scan(s, start, start_len, filter, page, true, true, &r, err) != 0) fail_msg("scan: %s", err);
        pages++;
        assert_true(r->n_points <= page);
        for (size_t i = 0; i < r->n_points; i++) {
            uint64_t id = id_of(&r->points[i]->id);
            assert_true(n < cap);
            if (n > 0) assert_true(id > ids[n - 1]); /* ascending, no repeats across pages */
            ids[n++] = id;
            assert_int_equal(shard_idx(id), s);
            float v[DIM];
            vec_of(id, v);
            assert_int_equal(r->points[i]->n_vector, DIM);
            assert_memory_equal(r->points[i]->vector, v, sizeof v);
            char want[96];
            snprintf(want, sizeof want, "{\"n\":%" PRIu64 ",\"g\":%" PRIu64 "}", id, id % 3);
            assert_string_equal(r->points[i]->payload_json, want);
            assert_true(r->points[i]->version > 0);
        }
        if (r->next_id.len == 0) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
            break;
        }
        assert_int_equal(r->n_points, page); /* small points: a full page before the end */
        assert_true(id_of(&r->next_id) > ids[n - 1]);
        memcpy(start, r->next_id.data, r->next_id.len);
        start_len = r->next_id.len;
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    (void)pages;
    return n;
}

static void test_scan_count_search(void **unused)
{
    (void)unused;
    char err[VX_CLUSTER_ERRMSG_LEN];
    uint64_t *all = calloc(NPOINTS, sizeof *all), *ids = calloc(NPOINTS, sizeof *ids);
    size_t nall = 0;
    const char *g1 = "{\"must\":[{\"key\":\"g\",\"match\":{\"value\":1}}]}";
    for (unsigned s = 0; s < SHARDS; s++) {
        size_t n = scan_all(s, NULL, 7, ids, NPOINTS);
        uint64_t c = 0;
        if (count(s, NULL, &c, err) != 0) fail_msg("count: %s", err);
        assert_int_equal(c, n);
        memcpy(all + nall, ids, n * sizeof *ids);
        nall += n;
        /* filtered: exactly the points with g == 1 */
        size_t nf = scan_all(s, g1, 5, ids, NPOINTS);
        size_t want = 0;
        for (uint64_t id = g_first; id < g_first + NPOINTS; id++) want += shard_idx(id) == s && id % 3 == 1;
        assert_int_equal(nf, want);
        for (size_t i = 0; i < nf; i++) assert_int_equal(ids[i] % 3, 1);
        if (count(s, g1, &c, err) != 0) fail_msg("count: %s", err);
        assert_int_equal(c, want);
        /* one page of everything: no next id */
        Vxw__ScanResponse *r = NULL;
        assert_int_equal(scan(s, NULL, 0, NULL, 10000, false, false, &r, err), 0);
        assert_int_equal(r->n_points, n);
        assert_int_equal(r->next_id.len, 0);
        assert_int_equal(r->points[0]->n_vector, 0);      /* not asked for */
        assert_string_equal(r->points[0]->payload_json, ""); /* not asked for */
        protobuf_c_message_free_unpacked(&r->base, NULL);
        /* a start id that is not a point: from the next one */
        vx_point_id mid;
        vx_id_from_uint(&mid, ids[0] + 1);
        assert_int_equal(scan(s, mid.b, mid.len, NULL, 3, false, false, &r, err), 0);
        assert_true(r->n_points > 0 && id_of(&r->points[0]->id) > ids[0]);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    assert_int_equal(nall, NPOINTS);
    qsort(all, nall, sizeof *all, cmp_u64);
    for (size_t i = 0; i < nall; i++) assert_int_equal(all[i], g_first + i);
    uint64_t c = 0;
    assert_int_equal(count(0, "{\"must\":[{\"has_id\":[1,2,3]}]}", &c, err), 0);

    /* search: the point itself is the nearest, on its shard */
    for (uint64_t id = g_first; id < g_first + NPOINTS; id += 37) {
        unsigned s = shard_idx(id);
        float v[DIM];
        vec_of(id, v);
        Vxw__SearchRequest q = VXW__SEARCH_REQUEST__INIT;
        q.group_id = G.gids[s];
        q.vector = v;
        q.n_vector = DIM;
        q.limit = 3;
        q.exact = id % 2;
        q.with_payload = true;
        q.allow_follower = true;
        ProtobufCMessage *resp = NULL;
        if (vx_cluster_shard_call(G.cl, G.gids[s], VX_W_SEARCH, &q.base, &vxw__search_response__descriptor, &resp,
                                  false, 10000, err) != 0)
            fail_msg("search: %s", err);
        Vxw__SearchResponse *sr = (Vxw__SearchResponse *)resp;
        assert_true(sr->n_hits >= 1);
        assert_int_equal(id_of(&sr->hits[0]->id), id);
        assert_true(fabsf(sr->hits[0]->distance) < 1e-4f);
        assert_non_null(strstr(sr->hits[0]->payload_json, "\"g\""));
        protobuf_c_message_free_unpacked(resp, NULL);
        /* filtered to g == 1 */
        q.filter_json = (char *)g1;
        if (vx_cluster_shard_call(G.cl, G.gids[s], VX_W_SEARCH, &q.base, &vxw__search_response__descriptor, &resp,
                                  true, 10000, err) != 0)
            fail_msg("search: %s", err);
        sr = (Vxw__SearchResponse *)resp;
        for (size_t i = 0; i < sr->n_hits; i++) assert_int_equal(id_of(&sr->hits[i]->id) % 3, 1);
        protobuf_c_message_free_unpacked(resp, NULL);
    }

    /* bad input: a clear VX_EINVAL (or the worker's own code), never a crash */
    Vxw__ScanResponse *r = NULL;
    assert_int_equal(scan(0, NULL, 0, NULL, 0, false, false, &r, err), VX_EINVAL);
    assert_non_null(strstr(err, "limit"));
    assert_int_equal(scan(0, NULL, 0, NULL, 10001, false, false, &r, err), VX_EINVAL);
    assert_int_equal(scan(0, NULL, 0, "{\"must\":[{\"key\":\"g\",\"match\":", 5, false, false, &r, err), VX_EINVAL);
    assert_non_null(strstr(err, "filter"));
    assert_int_equal(scan(0, NULL, 0, "{\"must\":[{\"key\":\"g\",\"bogus\":{}}]}", 5, false, false, &r, err),
                     VX_EINVAL);
    const uint8_t bad_id[] = {9, 1, 2, 3};
    assert_int_equal(scan(0, bad_id, sizeof bad_id, NULL, 5, false, false, &r, err), VX_EINVAL);
    assert_non_null(strstr(err, "start id"));
    const uint8_t short_uint[] = {VX_ID_UINT, 1, 2};
    assert_int_equal(scan(0, short_uint, sizeof short_uint, NULL, 5, false, false, &r, err), VX_EINVAL);
    assert_int_equal(count(0, "[1,2", &c, err), VX_EINVAL);
    assert_non_null(strstr(err, "filter"));
    {
        float v[DIM + 1] = {0};
        Vxw__SearchRequest q = VXW__SEARCH_REQUEST__INIT;
        q.group_id = G.gids[0];
        q.vector = v;
        q.n_vector = DIM + 1;
        q.limit = 3;
        ProtobufCMessage *resp = NULL;
        assert_int_equal(vx_cluster_shard_call(G.cl, G.gids[0], VX_W_SEARCH, &q.base,
                                               &vxw__search_response__descriptor, &resp, true, 5000, err),
                         VX_EDIM);
        assert_null(resp);
    }
    /* a malformed shard command: refused by the leader, returned as is */
    const uint8_t junk_cmd[8] = {'V', 1, 99, 0, 0, 0, 0, 0};
    assert_int_equal(write_cmd(junk_cmd, sizeof junk_cmd, 0, 5000, NULL, err), VX_EINVAL);
    /* an unknown shard */
    assert_int_equal(count(0, NULL, &c, err), 0);
    {
        Vxw__CountRequest q = VXW__COUNT_REQUEST__INIT;
        q.group_id = 987654321;
        ProtobufCMessage *resp = NULL;
        assert_int_equal(vx_cluster_shard_call(G.cl, q.group_id, VX_W_COUNT, &q.base, &vxw__count_response__descriptor,
                                               &resp, false, 3000, err),
                         VX_ENOTFOUND);
    }
    /* malformed protobuf straight to a worker, for every read method */
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x80};
    uint32_t methods[] = {VX_W_SCAN, VX_W_COUNT, VX_W_SEARCH, VX_W_GET, VX_W_SHARD_INFO, VX_W_WRITE};
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        int32_t status = 0;
        uint8_t *out = NULL;
        size_t outlen = 0;
        char rerr[VX_RPC_ERRMSG_LEN];
        assert_int_equal(vx_rpc_call_once(G.wk_rpc[i % NW], "", 0, methods[i], garbage, sizeof garbage, 5000,
                                          &status, &out, &outlen, rerr),
                         0);
        assert_int_equal(status, VX_EINVAL);
        Vxpd__Error *e = vxpd__error__unpack(NULL, outlen, out);
        assert_non_null(e);
        assert_non_null(strstr(e->message, "malformed"));
        vxpd__error__free_unpacked(e, NULL);
        free(out);
    }
    /* the workers are all still there */
    for (int i = 0; i < NW; i++) assert_int_equal(waitpid(G.wk[i], NULL, WNOHANG), 0);
    free(all);
    free(ids);
    G.passed++;
}

/* ---- 4. failover and breakers ----------------------------------------------------------------- */

typedef struct wthread {
    pthread_t t;
    atomic_int *stop;
    uint64_t next, *acked;
    atomic_size_t nacked; /* read by the main thread while the writer runs */
    size_t cap;
    unsigned ambiguous, failed;
    char last_err[VX_CLUSTER_ERRMSG_LEN];
} wthread;

static void *writer_main(void *arg)
{
    wthread *w = arg;
    while (!atomic_load(w->stop)) {
        uint64_t id = w->next++;
        char err[VX_CLUSTER_ERRMSG_LEN];
        /* long: a write that waits out the election must not fail on a
         * busy machine (the test asserts that none fails) */
        int rc = write_points(id, 1, -1, 30000, err);
        if (rc == 0) {
            size_t n = atomic_load(&w->nacked);
            if (n == w->cap) {
                w->cap = w->cap ? w->cap * 2 : 256;
                w->acked = realloc(w->acked, w->cap * sizeof *w->acked);
            }
            w->acked[n] = id;
            atomic_store(&w->nacked, n + 1);
        } else {
            if (strstr(err, "may or may not")) w->ambiguous++;
            else w->failed++;
            snprintf(w->last_err, sizeof w->last_err, "%s", err);
        }
        usleep(2000);
    }
    return NULL;
}

static void test_failover_and_breaker(void **unused)
{
    (void)unused;
    char err[VX_CLUSTER_ERRMSG_LEN];
    Vxw__ShardInfo *info = shard_info(0);
    uint64_t victim = info->leader_worker;
    protobuf_c_message_free_unpacked(&info->base, NULL);
    vx_topo *t = vx_cluster_topology(G.cl, err);
    const Vxpd__Worker *vw = vx_topo_worker(t, victim);
    assert_non_null(vw);
    char dead[32];
    snprintf(dead, sizeof dead, "%s", vw->rpc_address);
    vx_topo_put(t);
    int vi = worker_of_addr(dead);
    assert_true(vi >= 0);

    atomic_int stop = 0;
    enum { NT = 4 };
    static wthread wt[NT];
    memset(wt, 0, sizeof wt);
    for (int i = 0; i < NT; i++) {
        wt[i].stop = &stop;
        wt[i].next = g_first + 100000 + (uint64_t)i * 100000;
        assert_int_equal(pthread_create(&wt[i].t, NULL, writer_main, &wt[i]), 0);
    }
    /* some writes acknowledged before the kill (polled: a busy machine may
     * take seconds for the first) */
    size_t before = 0;
    for (double w0 = now_s();;) {
        before = 0;
        for (int i = 0; i < NT; i++) before += atomic_load(&wt[i].nacked);
        if (before > 0) break;
        if (now_s() - w0 > 20) fail_msg("no write acknowledged within 20 s");
        usleep(10000);
    }
    assert_true(before > 0);
    double t0 = now_s();
    kill9(&G.wk[vi]);
    printf("killed worker %" PRIu64 " (%s), the leader of shard %" PRIu64 ", after %zu acknowledged writes\n",
           victim, dead, G.gids[0], before);
    /* a write to the orphaned shard goes through once the others elect a leader */
    if (write_points(g_first + 900000, 40, 0, 20000, err) != 0) fail_msg("write after the kill: %s", err);
    double resumed = now_s() - t0;
    /* writes are known to go through again: from here on every writer must
     * get some acknowledged (counted, not timed: a busy machine may stall
     * any one writer for seconds) */
    size_t at_resume[NT];
    for (int i = 0; i < NT; i++) at_resume[i] = atomic_load(&wt[i].nacked);
    /* reads that allow followers never stopped working */
    for (uint64_t id = g_first; id < g_first + 20; id++) {
        Vxw__GetResponse *g = get_point(id, false);
        assert_true(g->found);
        protobuf_c_message_free_unpacked(&g->base, NULL);
    }
    usleep(1000000); /* writers run on the new leader for a while */
    /* ... and at least until each has had a write acknowledged since then
     * (asserted below; the deadline outlasts a writer's 30 s call begun
     * before the failover) */
    for (double g0 = now_s(); now_s() - g0 < 60;) {
        int grown = 0;
        for (int i = 0; i < NT; i++) grown += atomic_load(&wt[i].nacked) > at_resume[i];
        if (grown == NT) break;
        usleep(10000);
    }
    atomic_store(&stop, 1);
    size_t acked = 0;
    unsigned ambiguous = 0, failed = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(wt[i].t, NULL);
        acked += wt[i].nacked;
        ambiguous += wt[i].ambiguous;
        failed += wt[i].failed;
        if (wt[i].failed || wt[i].ambiguous) printf("  writer %d: last error: %s\n", i, wt[i].last_err);
    }
    printf("writes resumed %.2f s after the kill; %zu acknowledged, %u of unknown fate, %u failed\n", resumed,
           acked, ambiguous, failed);
    assert_int_equal(failed, 0);
    assert_true(ambiguous <= NT); /* at most the ones in flight at the kill */
    assert_true(acked > before);
    for (int i = 0; i < NT; i++) assert_true(wt[i].nacked > at_resume[i]); /* none stuck after the failover */
    /* every acknowledged write is there, read from the new leaders */
    for (int i = 0; i < NT; i++) {
        for (size_t k = 0; k < wt[i].nacked; k++) {
            Vxw__GetResponse *g = get_point(wt[i].acked[k], true);
            if (!g->found) fail_msg("acknowledged point %" PRIu64 " is missing", wt[i].acked[k]);
            protobuf_c_message_free_unpacked(&g->base, NULL);
        }
        free(wt[i].acked);
    }
    info = shard_info(0);
    assert_true(info->leader_worker != victim);
    protobuf_c_message_free_unpacked(&info->base, NULL);

    /* the breaker: failures counted; after BREAKER_FAILURES in a row calls skip the worker */
    vx_cluster_endpoint_stats es;
    Vxw__ShardInfoRequest ir = VXW__SHARD_INFO_REQUEST__INIT;
    ir.group_id = G.gids[0];
    ProtobufCMessage *resp = NULL;
    usleep((BREAKER_OPEN_MS + 100) * 1000);
    for (int i = 0; i < BREAKER_FAILURES + 2; i++)
        assert_int_equal(vx_cluster_worker_call(G.cl, dead, VX_W_SHARD_INFO, &ir.base, &vxw__shard_info__descriptor,
                                                &resp, 2000, err),
                         VX_EIO);
    assert_int_equal(vx_cluster_endpoint_stats_get(G.cl, dead, &es), 0);
    printf("breaker of %s: %u consecutive failures, %" PRIu64 " in all, %" PRIu64 " calls skipped, %s\n", dead,
           es.consecutive_failures, es.failures, es.skipped, es.open ? "open" : "closed");
    assert_true(es.open);
    assert_true(es.consecutive_failures >= BREAKER_FAILURES);
    assert_false(es.connected);
    uint64_t f0 = es.failures, s0 = es.skipped;
    /* open: no connection is tried */
    for (int i = 0; i < 5; i++)
        assert_int_equal(vx_cluster_worker_call(G.cl, dead, VX_W_SHARD_INFO, &ir.base, &vxw__shard_info__descriptor,
                                                &resp, 2000, err),
                         VX_EIO);
    assert_non_null(strstr(err, "breaker"));
    assert_int_equal(vx_cluster_endpoint_stats_get(G.cl, dead, &es), 0);
    assert_int_equal(es.failures, f0);
    assert_int_equal(es.skipped, s0 + 5);
    /* after the open period: one probe (it fails: open again), the rest skipped */
    usleep((BREAKER_OPEN_MS + 100) * 1000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(vx_cluster_worker_call(G.cl, dead, VX_W_SHARD_INFO, &ir.base, &vxw__shard_info__descriptor,
                                                &resp, 2000, err),
                         VX_EIO);
    assert_int_equal(vx_cluster_endpoint_stats_get(G.cl, dead, &es), 0);
    assert_int_equal(es.failures, f0 + 1);
    assert_int_equal(es.skipped, s0 + 5 + 2);
    assert_true(es.open);
    /* shard calls skip the dead replica without waiting for it */
    double r0 = now_s();
    for (int i = 0; i < 20; i++) {
        Vxw__GetResponse *g = get_point(g_first + (uint64_t)i, false);
        protobuf_c_message_free_unpacked(&g->base, NULL);
    }
    printf("20 reads with the dead replica skipped: %.3f s\n", now_s() - r0);

    /* the worker comes back: the next probe closes the breaker */
    spawn_worker(vi);
    double b0 = now_s();
    for (;;) {
        int rc = vx_cluster_worker_call(G.cl, dead, VX_W_SHARD_INFO, &ir.base, &vxw__shard_info__descriptor, &resp,
                                        2000, err);
        if (rc == 0) {
            protobuf_c_message_free_unpacked(resp, NULL);
            break;
        }
        if (now_s() - b0 > 30) fail_msg("the restarted worker never answered: %s", err);
        usleep(100000);
    }
    assert_int_equal(vx_cluster_endpoint_stats_get(G.cl, dead, &es), 0);
    assert_false(es.open);
    assert_int_equal(es.consecutive_failures, 0);
    assert_true(es.connected); /* the probe's connection is the endpoint's now */
    assert_int_equal(es.inflight, 0);
    printf("breaker of %s closed %.2f s after the restart\n", dead, now_s() - b0);
    vx_cluster_stats st;
    vx_cluster_stats_get(G.cl, &st);
    printf("client: %" PRIu64 " shard calls, %" PRIu64 " attempts, %" PRIu64 " connects, %" PRIu64
           " redirects, %" PRIu64 " backoff rounds, %" PRIu64 " connection failures, %" PRIu64
           " breaker skips, %" PRIu64 " topology refreshes, %" PRIu64 " retries granted, %" PRIu64 " denied\n",
           st.shard_calls, st.attempts, st.connects, st.redirects, st.rounds, st.conn_failures, st.breaker_skips,
           st.topology_refreshes, st.retries, st.retries_denied);
    assert_true(st.retries > 0);           /* the failover above needed some */
    assert_int_equal(st.retries_denied, 0); /* and the budget let a failover through */
    assert_true(st.connects < st.attempts / 4); /* pooled: not a connection per request */
    G.passed++;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH/TO/vectron\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    g_seed = vx_test_seed((uint64_t)getpid());
    printf("test_cluster_client: VX_SEED=%" PRIu64 "\n", g_seed);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topology),
        cmocka_unit_test(test_write_get_info),
        cmocka_unit_test(test_scan_count_search),
        cmocka_unit_test(test_failover_and_breaker),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
