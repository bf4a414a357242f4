/*
 * test_pd_cluster.c - the placement driver with real processes on 127.0.0.1
 * (issue 5): 3 `vectron pd` replicas and 3-4 `vectron worker`s in pretend
 * zones, killed with SIGKILL.
 *
 *   1. kill -9 of the PD leader: a new leader within 20 s; writes to the
 *      existing shards keep flowing meanwhile (they never touch the PD).
 *   2. kill -9 of a worker under write load: the PD marks it UNHEALTHY after
 *      the heartbeat timeout and re-replicates its shards onto the spare
 *      worker until every shard has its replication factor of healthy
 *      voters again; writes resume within 20 s; 0 acknowledged points lost;
 *      the replicas' digests are equal.
 *   3. a new worker joins under write load: the balancer moves replicas onto
 *      it (learner, catch-up, promotion, source removed); the PD never lists
 *      fewer voters than the replication factor for any shard; then it is
 *      drained (removal refused while it holds replicas; they move off) and
 *      removed; 0 points lost.
 *
 * The writer is the data path a gateway will use: points grouped by shard
 * (FNV-1a of the id % shard count), one batch per shard to its leader,
 * following not-leader answers and refreshing the topology.  Seeds: VX_SEED
 * picks the port range and ids; printed at start.  Logs stay in the temp
 * directory when a test fails.
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
#include "pd/decide.h"
#include "pd/pdrpc.h"
#include "rpc/rpc.h"
#include "shard/command.h"
#include "testutil.h"
#include "worker.pb-c.h"
#include "worker/worker.h"

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NPD 3
#define MAXW 4
#define DIM 8
#define RF 3
#define SHARDS 2

static const char *g_bin;
static uint64_t g_seed;

typedef struct cluster {
    char root[128];
    int base;
    pid_t pd[NPD], wk[MAXW];
    char pd_rpc[NPD][32], pd_list[128];
    const char *pd_addrs[NPD];
    char peers[256];
} cluster;

static double now_s(void) { return vx_test_now(); }

static cluster *g_cluster; /* the running one, for teardown after a failure */

static void spawn_pd(cluster *c, int i)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char id[16], dir[256], log[256];
        snprintf(id, sizeof id, "%d", i + 1);
        snprintf(dir, sizeof dir, "%s/pd%d", c->root, i + 1);
        snprintf(log, sizeof log, "%s/pd%d.log", c->root, i + 1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
        execl(g_bin, g_bin, "pd", "--id", id, "--data-dir", dir, "--peers", c->peers, "--tick-ms", "200",
              "--reconcile-ms", "2000", "--move-timeout-ms", "60000", "--default-shards", "2", (char *)NULL);
        _exit(127);
    }
    c->pd[i] = pid;
}

static void spawn_worker(cluster *c, int i)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char dir[256], log[256], raft[32], rpc[32], zone[16];
        snprintf(dir, sizeof dir, "%s/w%d", c->root, i + 1);
        snprintf(log, sizeof log, "%s/w%d.log", c->root, i + 1);
        snprintf(raft, sizeof raft, "127.0.0.1:%d", c->base + 20 + i);
        snprintf(rpc, sizeof rpc, "127.0.0.1:%d", c->base + 30 + i);
        snprintf(zone, sizeof zone, "z%d", i % 3 + 1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 2), dup2(fd, 1);
        execl(g_bin, g_bin, "worker", "--data-dir", dir, "--pd", c->pd_list, "--raft", raft, "--rpc", rpc,
              "--zone", zone, "--heartbeat-ms", "300", "--index-threads", "1", "--search-threads", "2",
              (char *)NULL);
        _exit(127);
    }
    c->wk[i] = pid;
}

static void kill9(pid_t *p)
{
    if (*p <= 0) return;
    kill(*p, SIGKILL);
    waitpid(*p, NULL, 0);
    *p = 0;
}

static void cluster_start(cluster *c, int nworkers)
{
    memset(c, 0, sizeof *c);
    snprintf(c->root, sizeof c->root, "/tmp/vx-pdcluster-XXXXXX");
    assert_non_null(mkdtemp(c->root));
    /* below Linux's ephemeral range (32768-60999): no port taken by an
     * outgoing connection */
    c->base = 20000 + (int)(g_seed % 300) * 40;
    char *p = c->peers, *l = c->pd_list;
    for (int i = 0; i < NPD; i++) {
        snprintf(c->pd_rpc[i], sizeof c->pd_rpc[i], "127.0.0.1:%d", c->base + 10 + i);
        c->pd_addrs[i] = c->pd_rpc[i];
        p += sprintf(p, "%s%d@127.0.0.1:%d/%s", i ? "," : "", i + 1, c->base + i, c->pd_rpc[i]);
        l += sprintf(l, "%s%s", i ? "," : "", c->pd_rpc[i]);
    }
    printf("cluster in %s, ports %d..%d\n", c->root, c->base, c->base + 39);
    g_cluster = c;
    for (int i = 0; i < NPD; i++) spawn_pd(c, i);
    for (int i = 0; i < nworkers; i++) spawn_worker(c, i);
}

static void cluster_stop(cluster *c, bool keep)
{
    for (int i = 0; i < NPD; i++) kill9(&c->pd[i]);
    for (int i = 0; i < MAXW; i++) kill9(&c->wk[i]);
    if (!keep) vx_rm_rf(c->root);
    g_cluster = NULL;
}

/* ---- PD calls ---------------------------------------------------------------------------- */

static ProtobufCMessage *pd_call(cluster *c, uint32_t method, const ProtobufCMessage *req,
                                 const ProtobufCMessageDescriptor *d, int timeout_ms, int *rc_out)
{
    ProtobufCMessage *resp = NULL;
    char err[VX_PD_CLIENT_ERRMSG_LEN];
    int rc = vx_pd_client_call(c->pd_addrs, NPD, "", method, req, d, &resp, timeout_ms, err);
    if (rc_out) *rc_out = rc;
    else if (rc != 0) fail_msg("pd call %u: %s", method, err);
    return resp;
}

static Vxpd__Topology *topology(cluster *c)
{
    Vxpd__TopologyRequest r = VXPD__TOPOLOGY_REQUEST__INIT;
    return (Vxpd__Topology *)pd_call(c, VX_PD_GET_TOPOLOGY, &r.base, &vxpd__topology__descriptor, 15000, NULL);
}

static int count_state(const Vxpd__Topology *t, vx_pd_worker_state st)
{
    int n = 0;
    for (size_t i = 0; i < t->n_workers; i++) n += t->workers[i]->state == (uint32_t)st;
    return n;
}

static void wait_workers(cluster *c, int n)
{
    double t0 = now_s();
    for (;;) {
        Vxpd__Topology *t = topology(c);
        int ready = count_state(t, VX_PD_READY) + count_state(t, VX_PD_ACTIVE);
        vxpd__topology__free_unpacked(t, NULL);
        if (ready >= n) return;
        if (now_s() - t0 > 30) fail_msg("%d workers not ready within 30 s", n);
        usleep(100000);
    }
}

static void create_collection(cluster *c, const char *name)
{
    Vxpd__CreateCollectionRequest r = VXPD__CREATE_COLLECTION_REQUEST__INIT;
    r.name = (char *)name;
    r.config_json = (char *)"{\"vectors\":{\"size\":8,\"distance\":\"Euclid\"}}";
    char rid[33];
    vx_pd_request_id(rid);
    r.request_id = rid;
    r.shard_count = SHARDS;
    r.replication_factor = RF;
    ProtobufCMessage *m = pd_call(c, VX_PD_CREATE_COLLECTION, &r.base, &vxpd__collection_response__descriptor,
                                  15000, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- the writer (a gateway's write path) ---------------------------------------------------- */

typedef struct writer {
    cluster *c;
    pthread_t t;
    atomic_bool stop;
    pthread_mutex_t mu;
    Vxpd__Topology *topo;
    uint64_t next_id;
    uint64_t *acked;
    size_t nacked, cap;
    char leader[SHARDS][64];
    double last_ack, max_gap;
    unsigned failed_batches;
    char last_error[512];
} writer;

static void vec_of(uint64_t id, float *v)
{
    for (int d = 0; d < DIM; d++) v[d] = (float)((id * 2654435761u + (uint64_t)d * 40503u) % 1000) / 1000.0f;
}

static const Vxpd__Shard *shard_of(const Vxpd__Topology *t, unsigned idx, const char **leader_rpc)
{
    const Vxpd__Collection *col = t->n_collections ? t->collections[0] : NULL;
    if (col == NULL || idx >= col->n_shards) return NULL;
    const Vxpd__Shard *s = col->shards[idx];
    *leader_rpc = NULL;
    for (size_t i = 0; i < t->n_leaders; i++)
        if (t->leaders[i]->group_id == s->group_id)
            for (size_t k = 0; k < t->n_workers; k++)
                if (t->workers[k]->id == t->leaders[i]->worker) *leader_rpc = t->workers[k]->rpc_address;
    return s;
}

/* Send one shard's batch to its leader until acknowledged (or 15 s). */
static bool write_batch(writer *w, unsigned idx, const uint8_t *cmd, size_t len)
{
    double t0 = now_s();
    while (now_s() - t0 < 15 && !atomic_load(&w->stop)) {
        const char *lr = NULL;
        const Vxpd__Shard *s = w->topo ? shard_of(w->topo, idx, &lr) : NULL;
        if (s == NULL) {
            if (w->topo) vxpd__topology__free_unpacked(w->topo, NULL);
            int rc;
            Vxpd__TopologyRequest r = VXPD__TOPOLOGY_REQUEST__INIT;
            w->topo = (Vxpd__Topology *)pd_call(w->c, VX_PD_GET_TOPOLOGY, &r.base, &vxpd__topology__descriptor,
                                                3000, &rc);
            continue;
        }
        if (w->leader[idx][0] == '\0' && lr) snprintf(w->leader[idx], sizeof w->leader[idx], "%s", lr);
        if (w->leader[idx][0] == '\0' && s->n_replicas > 0) {
            /* no leader known: try a replica, it names the leader */
            for (size_t k = 0; k < w->topo->n_workers; k++)
                if (w->topo->workers[k]->id == s->replicas[(size_t)(now_s() * 10) % s->n_replicas]->worker)
                    snprintf(w->leader[idx], sizeof w->leader[idx], "%s", w->topo->workers[k]->rpc_address);
        }
        Vxw__WriteRequest req = VXW__WRITE_REQUEST__INIT;
        req.group_id = s->group_id;
        req.command.data = (uint8_t *)cmd;
        req.command.len = len;
        size_t n = vxw__write_request__get_packed_size(&req);
        uint8_t *b = malloc(n);
        vxw__write_request__pack(&req, b);
        int32_t status = 0;
        uint8_t *out = NULL;
        size_t outlen = 0;
        char err[VX_RPC_ERRMSG_LEN];
        int rc = vx_rpc_call_once(w->leader[idx], "", 0, VX_W_WRITE, b, n, 3000, &status, &out, &outlen, err);
        free(b);
        if (rc == 0 && status == 0) {
            Vxw__WriteResponse *wr = vxw__write_response__unpack(NULL, outlen, out);
            bool ok = wr && wr->status == 0;
            if (wr) vxw__write_response__free_unpacked(wr, NULL);
            free(out);
            if (ok) return true;
            snprintf(w->last_error, sizeof w->last_error, "shard refused the batch");
            return false;
        }
        char hint[64] = "";
        if (rc == 0) {
            Vxpd__Error *e = vxpd__error__unpack(NULL, outlen, out);
            if (e) {
                snprintf(w->last_error, sizeof w->last_error, "%s: %d %s", w->leader[idx], status, e->message);
                if (status == VX_PD_NOT_LEADER) snprintf(hint, sizeof hint, "%s", e->leader_rpc_address);
                vxpd__error__free_unpacked(e, NULL);
            }
        } else {
            snprintf(w->last_error, sizeof w->last_error, "%s: %s", w->leader[idx], err);
        }
        free(out);
        snprintf(w->leader[idx], sizeof w->leader[idx], "%s", hint);
        if (hint[0] == '\0') { /* refresh the topology and pause */
            if (w->topo) vxpd__topology__free_unpacked(w->topo, NULL);
            int prc;
            Vxpd__TopologyRequest r = VXPD__TOPOLOGY_REQUEST__INIT;
            w->topo = (Vxpd__Topology *)pd_call(w->c, VX_PD_GET_TOPOLOGY, &r.base, &vxpd__topology__descriptor,
                                                3000, &prc);
            usleep(50000);
        }
    }
    return false;
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    while (!atomic_load(&w->stop)) {
        vx_cmd_buf cb[SHARDS];
        uint64_t ids[SHARDS][16];
        unsigned nids[SHARDS] = {0};
        for (unsigned s = 0; s < SHARDS; s++) vx_cmd_begin(&cb[s], VX_CMD_UPSERT);
        for (int i = 0; i < 24; i++) {
            uint64_t id = w->next_id++;
            vx_point_id pid;
            vx_id_from_uint(&pid, id);
            unsigned s = (unsigned)(vx_id_hash(&pid) % SHARDS);
            if (nids[s] == 16) continue;
            float v[DIM];
            vec_of(id, v);
            char payload[64];
            int pl = snprintf(payload, sizeof payload, "{\"n\":%" PRIu64 "}", id);
            vx_cmd_add_point(&cb[s], &pid, v, DIM, payload, (uint32_t)pl);
            ids[s][nids[s]++] = id;
        }
        for (unsigned s = 0; s < SHARDS; s++) {
            uint8_t *data;
            size_t len;
            assert_int_equal(vx_cmd_finish(&cb[s], &data, &len), 0);
            bool ok = nids[s] == 0 || write_batch(w, s, data, len);
            free(data);
            if (!ok) {
                if (!atomic_load(&w->stop)) w->failed_batches++;
                continue;
            }
            double t = now_s();
            pthread_mutex_lock(&w->mu);
            if (w->last_ack > 0 && t - w->last_ack > w->max_gap) w->max_gap = t - w->last_ack;
            w->last_ack = t;
            for (unsigned k = 0; k < nids[s]; k++) {
                if (w->nacked == w->cap) {
                    w->cap = w->cap ? w->cap * 2 : 1024;
                    w->acked = realloc(w->acked, w->cap * sizeof *w->acked);
                }
                w->acked[w->nacked++] = ids[s][k];
            }
            pthread_mutex_unlock(&w->mu);
        }
        usleep(2000);
    }
    return NULL;
}

static writer *g_writer;

static void writer_start(writer *w, cluster *c)
{
    g_writer = w;
    memset(w, 0, sizeof *w);
    w->c = c;
    w->next_id = 1 + (g_seed % 1000) * 100000;
    pthread_mutex_init(&w->mu, NULL);
    assert_int_equal(pthread_create(&w->t, NULL, writer_main, w), 0);
}

static size_t acked_now(writer *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->nacked;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static void wait_acked(writer *w, size_t n, double seconds)
{
    double t0 = now_s();
    while (acked_now(w) < n) {
        if (now_s() - t0 > seconds)
            fail_msg("only %zu of %zu points acknowledged in %.0f s; last error: %s", acked_now(w), n, seconds,
                     w->last_error);
        usleep(20000);
    }
}

static void writer_stop(writer *w)
{
    atomic_store(&w->stop, true);
    pthread_join(w->t, NULL);
    if (w->topo) vxpd__topology__free_unpacked(w->topo, NULL);
    w->topo = NULL;
    g_writer = NULL;
}

/* ---- checks --------------------------------------------------------------------------------- */

static const char *worker_rpc(const Vxpd__Topology *t, uint64_t id)
{
    for (size_t k = 0; k < t->n_workers; k++)
        if (t->workers[k]->id == id) return t->workers[k]->rpc_address;
    return NULL;
}

static int shard_info(const char *addr, uint64_t gid, Vxw__ShardInfo **out)
{
    Vxw__ShardInfoRequest r = VXW__SHARD_INFO_REQUEST__INIT;
    r.group_id = gid;
    uint8_t b[32];
    size_t n = vxw__shard_info_request__pack(&r, b);
    int32_t status;
    uint8_t *resp = NULL;
    size_t rl = 0;
    char err[VX_RPC_ERRMSG_LEN];
    int rc = vx_rpc_call_once(addr, "", 0, VX_W_SHARD_INFO, b, n, 3000, &status, &resp, &rl, err);
    if (rc == 0 && status == 0) *out = vxw__shard_info__unpack(NULL, rl, resp);
    free(resp);
    return rc == 0 && status == 0 && *out ? 0 : -1;
}

/* One connection per worker for the many reads of verify(). */
static struct {
    char addr[32];
    vx_rpc_client *cl;
} g_pool[8];

static int pooled_call(const char *addr, uint32_t method, const uint8_t *req, size_t len, int32_t *status,
                       uint8_t **resp, size_t *rl, char *err)
{
    int slot = -1;
    for (int i = 0; i < 8 && slot < 0; i++)
        if (g_pool[i].cl && !strcmp(g_pool[i].addr, addr)) slot = i;
    for (int i = 0; i < 8 && slot < 0; i++)
        if (g_pool[i].cl == NULL && vx_rpc_client_connect(addr, "", 0, 2000, &g_pool[i].cl, err) == 0) {
            snprintf(g_pool[i].addr, sizeof g_pool[i].addr, "%s", addr);
            slot = i;
        }
    if (slot < 0) return VX_EIO;
    int rc = vx_rpc_client_call(g_pool[slot].cl, method, req, len, 2000, status, resp, rl, err);
    if (rc != 0) {
        vx_rpc_client_close(g_pool[slot].cl);
        g_pool[slot].cl = NULL;
    }
    return rc;
}

static void pool_close(void)
{
    for (int i = 0; i < 8; i++)
        if (g_pool[i].cl) vx_rpc_client_close(g_pool[i].cl), g_pool[i].cl = NULL;
}

/* Every acknowledged point is readable from its shard's leader with the
 * vector that was written; then every healthy replica of every shard
 * reaches the same applied index and digest. */
static void verify(cluster *c, writer *w)
{
    Vxpd__Topology *t = topology(c);
    const Vxpd__Collection *col = t->collections[0];
    size_t missing = 0;
    double t0 = now_s();
    for (size_t i = 0; i < w->nacked; i++) {
        vx_point_id pid;
        vx_id_from_uint(&pid, w->acked[i]);
        const Vxpd__Shard *s = col->shards[vx_id_hash(&pid) % col->n_shards];
        Vxw__GetRequest r = VXW__GET_REQUEST__INIT;
        r.group_id = s->group_id;
        r.id.data = pid.b;
        r.id.len = pid.len;
        r.allow_follower = false;
        uint8_t b[64];
        size_t n = vxw__get_request__pack(&r, b);
        bool found = false;
        for (int attempt = 0; attempt < 200 && !found; attempt++) {
            /* the leader: ask each replica until one answers as leader */
            for (size_t k = 0; k < s->n_replicas && !found; k++) {
                const char *addr = worker_rpc(t, s->replicas[k]->worker);
                int32_t status;
                uint8_t *resp = NULL;
                size_t rl = 0;
                char err[VX_RPC_ERRMSG_LEN];
                if (addr && pooled_call(addr, VX_W_GET, b, n, &status, &resp, &rl, err) == 0 && status == 0) {
                    Vxw__GetResponse *g = vxw__get_response__unpack(NULL, rl, resp);
                    float v[DIM];
                    vec_of(w->acked[i], v);
                    if (g && g->found && g->n_vector == DIM && memcmp(g->vector, v, sizeof v) == 0) found = true;
                    else attempt = 1000; /* a leader answered: it does not have the point */
                    if (g) vxw__get_response__free_unpacked(g, NULL);
                }
                free(resp);
            }
            if (!found && attempt < 1000) usleep(50000);
        }
        if (!found && missing++ < 5) printf("  acknowledged point %" PRIu64 " is missing\n", w->acked[i]);
    }
    pool_close();
    printf("verify: %zu acknowledged points checked in %.1f s, %zu missing\n", w->nacked, now_s() - t0, missing);
    assert_int_equal(missing, 0);
    /* replica digests */
    for (size_t si = 0; si < col->n_shards; si++) {
        const Vxpd__Shard *s = col->shards[si];
        double d0 = now_s();
        for (;;) {
            uint64_t digest = 0, applied = 0;
            bool same = true;
            int seen = 0;
            for (size_t k = 0; k < s->n_replicas; k++) {
                const char *addr = worker_rpc(t, s->replicas[k]->worker);
                Vxw__ShardInfo *info = NULL;
                if (addr == NULL || shard_info(addr, s->group_id, &info) != 0) continue; /* down */
                if (seen++ == 0) {
                    digest = info->digest;
                    applied = info->applied;
                } else if (info->digest != digest || info->applied != applied) {
                    same = false;
                }
                vxw__shard_info__free_unpacked(info, NULL);
            }
            if (same && seen >= RF) {
                printf("shard %" PRIu64 ": %d replicas at applied %" PRIu64 ", digest %016" PRIx64 "\n",
                       s->group_id, seen, applied, digest);
                break;
            }
            if (now_s() - d0 > 30) fail_msg("shard %" PRIu64 ": replicas differ or fewer than %d answer", s->group_id, RF);
            usleep(100000);
        }
    }
    vxpd__topology__free_unpacked(t, NULL);
}

/* The process index of a worker id (its RPC port says which). */
static int worker_index(cluster *c, uint64_t id)
{
    Vxpd__Topology *t = topology(c);
    const char *addr = worker_rpc(t, id);
    int port = addr ? atoi(strchr(addr, ':') + 1) : -1;
    vxpd__topology__free_unpacked(t, NULL);
    return port - (c->base + 30);
}

static uint64_t pd_leader(cluster *c)
{
    Vxpd__Empty e = VXPD__EMPTY__INIT;
    int rc;
    Vxpd__ClusterStatus *s =
        (Vxpd__ClusterStatus *)pd_call(c, VX_PD_CLUSTER_STATUS, &e.base, &vxpd__cluster_status__descriptor, 10000, &rc);
    uint64_t id = rc == 0 && s ? s->leader_id : 0;
    if (s) vxpd__cluster_status__free_unpacked(s, NULL);
    return id;
}

/* Healthy voters of each shard, the fewest over all shards. */
static int min_healthy_voters(const Vxpd__Topology *t)
{
    int minv = 1000;
    for (size_t i = 0; i < t->n_collections; i++)
        for (size_t j = 0; j < t->collections[i]->n_shards; j++) {
            const Vxpd__Shard *s = t->collections[i]->shards[j];
            int v = 0;
            for (size_t k = 0; k < s->n_replicas; k++) {
                if (!s->replicas[k]->voter) continue;
                for (size_t q = 0; q < t->n_workers; q++)
                    if (t->workers[q]->id == s->replicas[k]->worker &&
                        (t->workers[q]->state == VX_PD_READY || t->workers[q]->state == VX_PD_ACTIVE))
                        v++;
            }
            if (v < minv) minv = v;
        }
    return minv;
}

/* ---- scenarios ------------------------------------------------------------------------------ */

static void test_pd_leader_kill(void **unused)
{
    (void)unused;
    static cluster c;
    cluster_start(&c, 3);
    wait_workers(&c, 3);
    create_collection(&c, "pts");
    static writer w;
    writer_start(&w, &c);
    wait_acked(&w, 500, 30);
    uint64_t old = pd_leader(&c);
    assert_true(old >= 1 && old <= NPD);
    size_t before = acked_now(&w);
    double t0 = now_s();
    kill9(&c.pd[old - 1]);
    uint64_t nl = 0;
    /* failover bounds here are generous for a loaded machine or a sanitizer
     * build; the benchmark, not this test, is the place for tight numbers */
    while ((nl = pd_leader(&c)) == 0 || nl == old) {
        if (now_s() - t0 > 20) fail_msg("no new PD leader within 20 s");
        usleep(50000);
    }
    double elect = now_s() - t0;
    wait_acked(&w, before + 500, 10);
    printf("pd leader %" PRIu64 " killed: leader %" PRIu64 " after %.2f s; %zu points acknowledged meanwhile\n",
           old, nl, elect, acked_now(&w) - before);
    /* the new leader serves the same state */
    Vxpd__Topology *t = topology(&c);
    assert_int_equal(t->n_collections, 1);
    assert_int_equal(t->collections[0]->n_shards, SHARDS);
    assert_int_equal(min_healthy_voters(t), RF);
    vxpd__topology__free_unpacked(t, NULL);
    writer_stop(&w);
    printf("writes: %zu acknowledged, longest gap %.2f s, %u failed batches\n", w.nacked, w.max_gap,
           w.failed_batches);
    assert_int_equal(w.failed_batches, 0);
    assert_true(w.max_gap < 8.0); /* never stopped for the PD's election (a busy machine may pause it) */
    verify(&c, &w);
    free(w.acked);
    cluster_stop(&c, false);
}

static void test_worker_kill_rereplicates(void **unused)
{
    (void)unused;
    static cluster c;
    cluster_start(&c, 3);
    wait_workers(&c, 3);
    create_collection(&c, "pts");
    spawn_worker(&c, 3); /* the spare, in zone z1 */
    wait_workers(&c, 4);
    static writer w;
    writer_start(&w, &c);
    wait_acked(&w, 500, 30);
    /* kill the worker leading the first shard */
    Vxpd__Topology *t = topology(&c);
    uint64_t victim = t->n_leaders ? t->leaders[0]->worker : t->collections[0]->shards[0]->replicas[0]->worker;
    vxpd__topology__free_unpacked(t, NULL);
    int vi = worker_index(&c, victim);
    assert_true(vi >= 0 && vi < 3);
    size_t before = acked_now(&w);
    double t0 = now_s();
    kill9(&c.wk[vi]);
    printf("killed worker %" PRIu64 "\n", victim);
    wait_acked(&w, before + 200, 30); /* longer than the gap allowed below */
    double resumed = now_s() - t0;
    /* wait for re-replication: every shard has RF healthy voters again */
    for (;;) {
        t = topology(&c);
        int mv = min_healthy_voters(t);
        bool unhealthy = false;
        for (size_t q = 0; q < t->n_workers; q++)
            unhealthy |= t->workers[q]->id == victim && t->workers[q]->state == VX_PD_UNHEALTHY;
        vxpd__topology__free_unpacked(t, NULL);
        if (unhealthy && mv >= RF) break;
        if (now_s() - t0 > 60) fail_msg("shards not back to %d healthy voters within 60 s (min %d)", RF, mv);
        usleep(200000);
    }
    printf("worker %" PRIu64 " killed: writes resumed after %.2f s; full replication after %.1f s\n", victim,
           resumed, now_s() - t0);
    /* the repair's learners catch up meanwhile (slow under ASan): a longer wait */
    wait_acked(&w, acked_now(&w) + 200, 30);
    writer_stop(&w);
    printf("writes: %zu acknowledged, longest gap %.2f s, %u failed batches (%s)\n", w.nacked, w.max_gap,
           w.failed_batches, w.last_error);
    assert_true(w.max_gap < 20.0); /* writes resumed: a failover, not a hang (generous for slow runs) */
    verify(&c, &w);
    free(w.acked);
    cluster_stop(&c, false);
}

static void test_new_worker_balances(void **unused)
{
    (void)unused;
    static cluster c;
    cluster_start(&c, 3);
    wait_workers(&c, 3);
    create_collection(&c, "pts");
    static writer w;
    writer_start(&w, &c);
    wait_acked(&w, 500, 30);
    spawn_worker(&c, 3);
    double t0 = now_s();
    int minv = 1000;
    bool moved = false;
    for (;;) {
        Vxpd__Topology *t = topology(&c);
        int mv = min_healthy_voters(t);
        if (mv < minv) minv = mv;
        bool on_new = false, moving = false;
        for (size_t j = 0; j < t->collections[0]->n_shards; j++) {
            const Vxpd__Shard *s = t->collections[0]->shards[j];
            moving |= s->move_to != 0;
            for (size_t k = 0; k < s->n_replicas; k++) {
                const char *addr = worker_rpc(t, s->replicas[k]->worker);
                char want[32];
                snprintf(want, sizeof want, "127.0.0.1:%d", c.base + 33);
                on_new |= addr && !strcmp(addr, want) && s->replicas[k]->voter;
            }
        }
        vxpd__topology__free_unpacked(t, NULL);
        if (on_new && !moving) {
            moved = true;
            break;
        }
        if (now_s() - t0 > 60) break;
        usleep(100000);
    }
    printf("new worker: %s after %.1f s; fewest healthy voters seen %d\n", moved ? "holds a voter" : "NOT used",
           now_s() - t0, minv);
    assert_true(moved);
    assert_true(minv >= RF);
    /* drain it again: refused removal first, then its replicas move off */
    char want[32];
    snprintf(want, sizeof want, "127.0.0.1:%d", c.base + 33);
    Vxpd__Topology *t = topology(&c);
    uint64_t nid = 0;
    for (size_t q = 0; q < t->n_workers; q++)
        if (!strcmp(t->workers[q]->rpc_address, want)) nid = t->workers[q]->id;
    vxpd__topology__free_unpacked(t, NULL);
    assert_true(nid != 0);
    Vxpd__WorkerRequest wr = VXPD__WORKER_REQUEST__INIT;
    wr.worker_id = nid;
    int rc;
    ProtobufCMessage *m = pd_call(&c, VX_PD_REMOVE_WORKER, &wr.base, &vxpd__empty__descriptor, 10000, &rc);
    assert_int_equal(rc, VX_ESTATE); /* it holds replicas */
    m = pd_call(&c, VX_PD_DRAIN_WORKER, &wr.base, &vxpd__empty__descriptor, 10000, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    double d0 = now_s();
    for (;;) {
        t = topology(&c);
        int held = 0, mv = min_healthy_voters(t);
        for (size_t j = 0; j < t->collections[0]->n_shards; j++)
            for (size_t k = 0; k < t->collections[0]->shards[j]->n_replicas; k++)
                held += t->collections[0]->shards[j]->replicas[k]->worker == nid;
        vxpd__topology__free_unpacked(t, NULL);
        /* a DRAINING worker's replicas still count until they are moved */
        if (mv < minv) minv = mv;
        if (held == 0) break;
        if (now_s() - d0 > 60) fail_msg("worker %" PRIu64 " still holds %d replicas 60 s into its drain", nid, held);
        usleep(100000);
    }
    m = pd_call(&c, VX_PD_REMOVE_WORKER, &wr.base, &vxpd__empty__descriptor, 10000, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    t = topology(&c);
    for (size_t q = 0; q < t->n_workers; q++)
        if (t->workers[q]->id == nid) assert_int_equal(t->workers[q]->state, VX_PD_REMOVED);
    vxpd__topology__free_unpacked(t, NULL);
    printf("worker %" PRIu64 " drained in %.1f s and removed\n", nid, now_s() - d0);
    wait_acked(&w, acked_now(&w) + 300, 10);
    writer_stop(&w);
    printf("writes: %zu acknowledged, longest gap %.2f s, %u failed batches (%s)\n", w.nacked, w.max_gap,
           w.failed_batches, w.last_error);
    assert_int_equal(w.failed_batches, 0);
    verify(&c, &w);
    free(w.acked);
    cluster_stop(&c, false);
}

/* After a failed scenario: stop its writer and processes, keep the logs. */
static int teardown(void **unused)
{
    (void)unused;
    if (g_writer) writer_stop(g_writer);
    if (g_cluster) {
        printf("logs kept in %s\n", g_cluster->root);
        cluster_stop(g_cluster, true);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH/TO/vectron\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    g_seed = vx_test_seed((uint64_t)getpid());
    printf("test_pd_cluster: VX_SEED=%" PRIu64 "\n", g_seed);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pd_leader_kill, teardown),
        cmocka_unit_test_teardown(test_worker_kill_rereplicates, teardown),
        cmocka_unit_test_teardown(test_new_worker_balances, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
