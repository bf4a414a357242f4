/*
 * worker.c - `vectron worker` (worker.h): a cluster's data node.
 *
 * Threads: the loop thread owns the node host, every Raft group, the RPC
 * server, the topology and the list of hosted shards; the heartbeat thread
 * talks to the placement driver (blocking calls) and hands new topologies
 * to the loop; the search pool runs searches and point reads; the index
 * pool (the shards') builds the index.  A hosted shard is freed by a
 * janitor thread once no search holds it.
 */
#define _GNU_SOURCE
#include "base/handshake.h"
#include "worker/worker.h"

#include "base/err.h"
#include "base/fsutil.h"
#include "base/pointid.h"
#include "base/workpool.h"
#include "pd/pdrpc.h"
#include "pd/decide.h"
#include "raft/node.h"
#include "raft/shard_fsm.h"
#include "rpc/rpc.h"
#include "server/runtime.h"
#include "shard/command.h"
#include "shard/filter.h"
#include "shard/pindex.h"
#include "shard/shard.h"
#include "store/store.h"
#include "worker.pb-c.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 200
#define DROP_GRACE_MS 10000 /* a follower no longer listed waits this long for its removal */
#define MAX_LIMIT 10000
#define SCAN_MAX_BYTES (32u << 20) /* a scan page stops growing past this */

typedef struct worker worker;

typedef struct hosted {
    struct hosted *next;
    worker *w;
    uint64_t gid;
    uint32_t dim;
    vx_shard_fsm fsm;
    vx_group *g;
    struct raft *raft;
    atomic_int refs; /* searches holding it */
    bool member_op;  /* a membership change in flight */
    uint64_t member_op_since;
    uint64_t drop_since; /* not listed for this worker since (ms; 0: listed) */
    uint64_t last_transfer;
    uint64_t last_err_log;
    uint64_t read_term; /* a barrier of this term applied: leader reads see every commit */
    uint64_t config_hash; /* of the collection's config as last applied (FNV-1a) */
    char dir[600];
} hosted;

static uint64_t config_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; s && *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* The collection's settings that apply to a running shard (optimizers_config
 * after a PATCH); the shape never changes. */
static void host_reconfigure(hosted *h, const Vxpd__Collection *c)
{
    uint64_t hash = config_hash(c->config_json);
    if (hash == h->config_hash) return;
    cJSON *body = cJSON_Parse(c->config_json);
    vx_collection_config cc;
    char err[VX_RT_ERRMSG_LEN];
    int rc = vx_collection_config_parse(body, &cc, err);
    cJSON_Delete(body);
    if (rc != 0) return;
    h->config_hash = hash;
    vx_shard *sh = vx_shard_fsm_acquire(&h->fsm);
    vx_shard_set_optimizer(sh, cc.deleted_threshold, cc.vacuum_min_vector_number);
    vx_shard_fsm_release(&h->fsm);
}

struct worker {
    uv_loop_t loop;
    uv_timer_t tick;
    uv_async_t wake;
    uv_signal_t sigint, sigterm;
    vx_node *node;
    vx_rpc_server *rpc;
    vx_workpool *index_pool, *search_pool;
    uint64_t id;
    char name[64];
    char dir[512];
    char raft_addr[128], rpc_addr[128], zone[32], rack[32];
    const char *pd_addrs[16];
    size_t npd;
    char *pd_list;
    char secret[256];
    uint32_t max_backlog; /* queued index changes per shard before writers wait (as serve) */
    unsigned heartbeat_ms;
    unsigned election_timeout_ms; /* shard groups' Raft election timeout (libraft draws from [t, 2t]) */
    hosted *hosts;    /* loop thread */
    uint64_t dropping[64]; /* gids whose janitor has not finished */
    size_t ndropping;
    Vxpd__Topology *topo; /* loop thread */
    /* heartbeat thread <-> loop */
    pthread_t hb_thread, watch_thread;
    uint64_t seen_epoch; /* newest topology handed to the loop (under mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    Vxpd__Topology *pending;
    uint8_t *report;
    size_t report_len;
    uint64_t done_gids[64]; /* janitors finished (loop clears dropping) */
    size_t ndone;
    atomic_ullong searches;
    uint64_t last_searches, last_report_ms;
    bool stopping;
};

static uint64_t now_ms(worker *w) { return uv_now(&w->loop); }

/* ---- replies ------------------------------------------------------------------------- */


/* ---- topology lookups (loop thread) ---------------------------------------------------- */

static const Vxpd__Worker *topo_worker(worker *w, uint64_t id)
{
    for (size_t i = 0; w->topo && i < w->topo->n_workers; i++)
        if (w->topo->workers[i]->id == id) return w->topo->workers[i];
    return NULL;
}

static const Vxpd__Shard *topo_shard(worker *w, uint64_t gid, const Vxpd__Collection **coll)
{
    for (size_t i = 0; w->topo && i < w->topo->n_collections; i++)
        for (size_t j = 0; j < w->topo->collections[i]->n_shards; j++)
            if (w->topo->collections[i]->shards[j]->group_id == gid) {
                if (coll) *coll = w->topo->collections[i];
                return w->topo->collections[i]->shards[j];
            }
    return NULL;
}

static const Vxpd__Replica *listed(const Vxpd__Shard *s, uint64_t worker_id)
{
    for (size_t i = 0; s && i < s->n_replicas; i++)
        if (s->replicas[i]->worker == worker_id) return s->replicas[i];
    return NULL;
}

static hosted *find_hosted(worker *w, uint64_t gid)
{
    for (hosted *h = w->hosts; h; h = h->next)
        if (h->gid == gid) return h;
    return NULL;
}

static bool leads(hosted *h) { return raft_state(h->raft) == RAFT_LEADER; }

static const char *leader_rpc(worker *w, hosted *h)
{
    raft_id lid = 0;
    const char *addr = NULL;
    vx_group_leader(h->g, &lid, &addr);
    const Vxpd__Worker *lw = lid ? topo_worker(w, lid) : NULL;
    return lw ? lw->rpc_address : "";
}

/* ---- hosting -------------------------------------------------------------------------- */

static bool is_dropping(worker *w, uint64_t gid)
{
    for (size_t i = 0; i < w->ndropping; i++)
        if (w->dropping[i] == gid) return true;
    return false;
}

static void host_open(worker *w, const Vxpd__Collection *c, const Vxpd__Shard *s, const Vxpd__Replica *me)
{
    if (is_dropping(w, s->group_id) || vx_node_find_group(w->node, s->group_id)) return;
    char err[VX_RT_ERRMSG_LEN];
    cJSON *body = cJSON_Parse(c->config_json);
    vx_collection_config cc;
    int rc = vx_collection_config_parse(body, &cc, err);
    cJSON_Delete(body);
    if (rc != 0) {
        fprintf(stderr, "worker: collection %s: unusable configuration: %s\n", c->name, err);
        return;
    }
    hosted *h = calloc(1, sizeof *h);
    if (h == NULL) return;
    h->w = w;
    h->gid = s->group_id;
    h->dim = cc.dim;
    h->config_hash = config_hash(c->config_json);
    snprintf(h->dir, sizeof h->dir, "%s/shards/%" PRIu64, w->dir, s->group_id);
    vx_shard_config sc = {0};
    vx_collection_shard_config(&cc, &sc);
    sc.background_recovery = true; /* opened on the node's loop */
    sc.max_backlog = w->max_backlog; /* the same backpressure as serve's */
    vx_shard *sh;
    char serr[VX_SHARD_ERRMSG_LEN];
    if (vx_mkdir_p(h->dir) != 0 || vx_shard_open(h->dir, &sc, w->index_pool, &sh, serr) != 0) {
        fprintf(stderr, "worker: shard %" PRIu64 ": cannot open %s\n", s->group_id, h->dir);
        free(h);
        return;
    }
    vx_shard_fsm_init(&h->fsm, sh);
    char nerr[VX_NODE_ERRMSG_LEN];
    vx_group_options go = {.election_timeout_ms = w->election_timeout_ms};
    if (vx_group_new(w->node, s->group_id, w->id, &h->fsm.fsm, &go, &h->g, nerr) != 0) {
        fprintf(stderr, "worker: group %" PRIu64 ": %s\n", s->group_id, nerr);
        vx_shard_close(sh);
        vx_shard_fsm_destroy(&h->fsm);
        free(h);
        return;
    }
    h->raft = h->fsm.raft = vx_group_raft(h->g);
    vx_snapshot_ops ops;
    vx_shard_fsm_snapshot_ops(&h->fsm, &ops);
    vx_group_set_snapshot_ops(h->g, &ops);
    /* only the voters the shard was created with bootstrap its group */
    bool boot = false;
    for (size_t i = 0; i < s->n_bootstrap; i++)
        if (s->bootstrap[i] == w->id) boot = me->voter && s->move_to != w->id;
    rc = 0;
    if (boot) {
        raft_id ids[VX_PD_MAX_REPLICAS];
        const char *addrs[VX_PD_MAX_REPLICAS];
        unsigned n = 0;
        for (size_t i = 0; i < s->n_bootstrap && n < VX_PD_MAX_REPLICAS; i++) {
            const Vxpd__Worker *bw = topo_worker(w, s->bootstrap[i]);
            if (bw == NULL) rc = VX_ENOTFOUND;
            else {
                ids[n] = bw->id;
                addrs[n++] = bw->raft_address;
            }
        }
        if (rc == 0) rc = vx_group_bootstrap(h->g, n, ids, addrs);
    }
    if (rc == 0) rc = vx_group_start(h->g);
    if (rc != 0) {
        /* the group is released with the node; keep the shard out of service */
        fprintf(stderr, "worker: group %" PRIu64 " cannot start (%s)\n", s->group_id, vx_strerror(rc));
        return;
    }
    h->next = w->hosts;
    w->hosts = h;
    fprintf(stderr, "worker %" PRIu64 ": hosting shard %" PRIu64 " of %s (%s)\n", w->id, s->group_id,
            c->name, boot ? "bootstrapped" : me->voter ? "voter" : "learner");
}

typedef struct janitor_arg {
    hosted *h;
} janitor_arg;

static void *janitor_main(void *arg)
{
    hosted *h = arg;
    worker *w = h->w;
    while (atomic_load(&h->refs) > 0) usleep(1000);
    vx_shard_close(h->fsm.shard);
    vx_shard_fsm_destroy(&h->fsm);
    char raftdir[700];
    snprintf(raftdir, sizeof raftdir, "%s/node/g%" PRIu64, w->dir, h->gid);
    vx_rm_rf(h->dir);
    vx_rm_rf(raftdir);
    pthread_mutex_lock(&w->mu);
    if (w->ndone < 64) w->done_gids[w->ndone++] = h->gid;
    pthread_mutex_unlock(&w->mu);
    uv_async_send(&w->wake);
    free(h);
    return NULL;
}

static void group_closed(void *data)
{
    hosted *h = data;
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, janitor_main, h) != 0) janitor_main(h);
    pthread_attr_destroy(&a);
}

static void drop(worker *w, hosted *h, const char *why)
{
    for (hosted **p = &w->hosts; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    if (w->ndropping < 64) w->dropping[w->ndropping++] = h->gid;
    fprintf(stderr, "worker %" PRIu64 ": dropping shard %" PRIu64 " (%s)\n", w->id, h->gid, why);
    vx_group_close(h->g, group_closed, h);
}

static void member_done(void *data, int status)
{
    hosted *h = data;
    h->member_op = false;
    if (status != 0 && !h->w->stopping)
        fprintf(stderr, "worker: shard %" PRIu64 ": membership change: %s\n", h->gid, vx_strerror(status));
}

/* The leader brings its group's configuration to the PD's replica list. */
static void reconcile_members(worker *w, hosted *h, const Vxpd__Shard *s)
{
    if (h->member_op) {
        if (now_ms(w) - h->member_op_since < 30000) return;
        h->member_op = false; /* a callback that never came (leadership lost): try again */
    }
    const struct raft_configuration *conf = &h->raft->configuration;
    int rc = 1;
    /* add listed replicas that are missing, as learners */
    for (size_t i = 0; i < s->n_replicas && rc == 1; i++) {
        bool found = false;
        for (unsigned k = 0; k < conf->n; k++) found |= conf->servers[k].id == s->replicas[i]->worker;
        if (found) continue;
        const Vxpd__Worker *tw = topo_worker(w, s->replicas[i]->worker);
        if (tw == NULL) continue;
        h->member_op = true;
        h->member_op_since = now_ms(w);
        rc = vx_group_add_learner(h->g, tw->id, tw->raft_address, member_done, h);
        if (rc == 0) fprintf(stderr, "worker %" PRIu64 ": shard %" PRIu64 ": adding learner %" PRIu64 "\n",
                             w->id, h->gid, tw->id);
    }
    /* promote listed voters that are standbys */
    for (unsigned k = 0; k < conf->n && rc == 1; k++) {
        const Vxpd__Replica *r = listed(s, conf->servers[k].id);
        if (r == NULL || !r->voter || conf->servers[k].role == RAFT_VOTER) continue;
        h->member_op = true;
        h->member_op_since = now_ms(w);
        rc = vx_group_promote(h->g, conf->servers[k].id, member_done, h);
        if (rc == 0) fprintf(stderr, "worker %" PRIu64 ": shard %" PRIu64 ": promoting %" PRIu64 "\n",
                             w->id, h->gid, (uint64_t)conf->servers[k].id);
    }
    /* remove members no longer listed (never this leader itself: it hands over first) */
    for (unsigned k = 0; k < conf->n && rc == 1; k++) {
        raft_id id = conf->servers[k].id;
        if (listed(s, id) || id == w->id) continue;
        h->member_op = true;
        h->member_op_since = now_ms(w);
        rc = vx_group_remove(h->g, id, member_done, h);
        if (rc == 0) fprintf(stderr, "worker %" PRIu64 ": shard %" PRIu64 ": removing %" PRIu64 "\n", w->id,
                             h->gid, (uint64_t)id);
    }
    if (rc != 1 && rc != 0) {
        h->member_op = false;
        if (rc != VX_ESTATE && now_ms(w) - h->last_err_log > 10000) { /* once per 10 s */
            h->last_err_log = now_ms(w);
            fprintf(stderr, "worker: shard %" PRIu64 ": membership change refused: %s\n", h->gid, vx_strerror(rc));
        }
    }
}

static void transfer_done(void *data, int status)
{
    (void)data;
    (void)status;
}

static void reconcile(worker *w)
{
    if (w->topo == NULL || w->stopping) return;
    uint64_t now = now_ms(w);
    for (size_t i = 0; i < w->topo->n_collections; i++) {
        const Vxpd__Collection *c = w->topo->collections[i];
        for (size_t j = 0; j < c->n_shards; j++) {
            const Vxpd__Shard *s = c->shards[j];
            const Vxpd__Replica *me = listed(s, w->id);
            if (me == NULL) continue;
            hosted *h = find_hosted(w, s->group_id);
            if (h == NULL) {
                host_open(w, c, s, me);
                continue;
            }
            h->drop_since = 0;
            host_reconfigure(h, c);
            if (leads(h)) reconcile_members(w, h, s);
        }
    }
    for (hosted *h = w->hosts, *next; h; h = next) {
        next = h->next;
        const Vxpd__Shard *s = topo_shard(w, h->gid, NULL);
        if (s == NULL) {
            drop(w, h, "its collection was deleted");
            continue;
        }
        if (listed(s, w->id)) continue;
        if (leads(h)) { /* hand over; the next leader removes this replica */
            if (now - h->last_transfer > 2000) {
                h->last_transfer = now;
                vx_group_transfer(h->g, 0, transfer_done, h);
            }
            continue;
        }
        if (h->drop_since == 0) h->drop_since = now;
        bool in_conf = false;
        for (unsigned k = 0; k < h->raft->configuration.n; k++)
            in_conf |= h->raft->configuration.servers[k].id == w->id;
        if (!in_conf || now - h->drop_since > DROP_GRACE_MS) drop(w, h, "no longer assigned here");
    }
}

/* ---- heartbeats ------------------------------------------------------------------------ */

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%llu %llu", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Pack this worker's report for the heartbeat thread (loop thread). */
static void build_report(worker *w)
{
    size_t n = 0;
    for (hosted *h = w->hosts; h; h = h->next) n++;
    Vxpd__HeartbeatRequest hb = VXPD__HEARTBEAT_REQUEST__INIT;
    Vxpd__Load load = VXPD__LOAD__INIT;
    Vxpd__ShardReport *reps = calloc(n ? n : 1, sizeof *reps);
    Vxpd__ShardReport **rp = calloc(n ? n : 1, sizeof *rp);
    size_t nconf = 0;
    for (hosted *h = w->hosts; h; h = h->next) nconf += h->raft->configuration.n;
    Vxpd__Replica *cr = calloc(nconf ? nconf : 1, sizeof *cr);
    Vxpd__Replica **crp = calloc(nconf ? nconf : 1, sizeof *crp);
    if (reps == NULL || rp == NULL || cr == NULL || crp == NULL) goto out;
    uint64_t now = now_ms(w), s = atomic_load(&w->searches);
    if (now > w->last_report_ms) load.qps = (double)(s - w->last_searches) * 1000.0 / (double)(now - w->last_report_ms);
    w->last_searches = s;
    w->last_report_ms = now;
    load.mem_used = rss_bytes();
    hb.worker_id = w->id;
    hb.load = &load;
    hb.known_epoch = w->topo ? w->topo->epoch : 0;
    size_t k = 0, c = 0;
    for (hosted *h = w->hosts; h; h = h->next, k++) {
        vxpd__shard_report__init(&reps[k]);
        reps[k].group_id = h->gid;
        reps[k].leader = leads(h);
        reps[k].applied = raft_last_applied(h->raft);
        reps[k].term = h->raft->current_term;
        if (reps[k].leader) {
            reps[k].config = &crp[c];
            for (unsigned i = 0; i < h->raft->configuration.n; i++, c++) {
                vxpd__replica__init(&cr[c]);
                cr[c].worker = h->raft->configuration.servers[i].id;
                cr[c].voter = h->raft->configuration.servers[i].role == RAFT_VOTER;
                crp[c] = &cr[c];
                reps[k].n_config++;
            }
        }
        rp[k] = &reps[k];
    }
    hb.shards = rp;
    hb.n_shards = n;
    size_t len = vxpd__heartbeat_request__get_packed_size(&hb);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        vxpd__heartbeat_request__pack(&hb, buf);
        pthread_mutex_lock(&w->mu);
        free(w->report);
        w->report = buf;
        w->report_len = len;
        pthread_mutex_unlock(&w->mu);
    }
out:
    free(reps);
    free(rp);
    free(cr);
    free(crp);
}

/* A topology from the heartbeat or the watch: handed to the loop if it is
 * newer than any before it (under mu; takes ownership of t). */
static void offer_topology(worker *w, Vxpd__Topology *t)
{
    pthread_mutex_lock(&w->mu);
    bool newer = !w->stop && (t->epoch > w->seen_epoch || w->seen_epoch == 0);
    if (newer) {
        if (w->pending) vxpd__topology__free_unpacked(w->pending, NULL);
        w->pending = t;
        w->seen_epoch = t->epoch;
    }
    pthread_mutex_unlock(&w->mu);
    if (newer) uv_async_send(&w->wake);
    else vxpd__topology__free_unpacked(t, NULL);
}

/* Topology changes reach the worker at once through a watch the PD answers
 * when the epoch moves (heartbeats carry them too, every heartbeat_ms). */
static void *watch_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        bool stop = w->stop;
        uint64_t known = w->seen_epoch;
        pthread_mutex_unlock(&w->mu);
        if (stop) break;
        Vxpd__TopologyRequest r = VXPD__TOPOLOGY_REQUEST__INIT;
        r.known_epoch = known;
        ProtobufCMessage *resp = NULL;
        char err[VX_PD_CLIENT_ERRMSG_LEN];
        int rc = vx_pd_client_call(w->pd_addrs, w->npd, w->secret, VX_PD_WATCH_TOPOLOGY, &r.base,
                                   &vxpd__topology__descriptor, &resp, 5000, err);
        if (rc == 0) offer_topology(w, (Vxpd__Topology *)resp);
        else usleep(200000);
    }
    return NULL;
}

static void *heartbeat_main(void *arg)
{
    worker *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        uint8_t *buf = NULL;
        size_t len = w->report_len;
        if (w->report) {
            buf = malloc(len ? len : 1);
            if (buf) memcpy(buf, w->report, len);
        }
        pthread_mutex_unlock(&w->mu);
        Vxpd__HeartbeatRequest *req = buf ? vxpd__heartbeat_request__unpack(NULL, len, buf) : NULL;
        free(buf);
        if (req) {
            ProtobufCMessage *resp = NULL;
            char err[VX_PD_CLIENT_ERRMSG_LEN];
            int rc = vx_pd_client_call(w->pd_addrs, w->npd, w->secret, VX_PD_HEARTBEAT, &req->base,
                                       &vxpd__heartbeat_response__descriptor, &resp, 3000, err);
            vxpd__heartbeat_request__free_unpacked(req, NULL);
            if (rc == 0) {
                Vxpd__HeartbeatResponse *r = (Vxpd__HeartbeatResponse *)resp;
                if (r->changed && r->topology) {
                    offer_topology(w, r->topology);
                    r->topology = NULL;
                }
                protobuf_c_message_free_unpacked(resp, NULL);
            } else {
                fprintf(stderr, "worker %" PRIu64 ": heartbeat: %s\n", w->id, err);
            }
        }
        pthread_mutex_lock(&w->mu);
        if (w->stop) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += w->heartbeat_ms / 1000;
        ts.tv_nsec += (long)(w->heartbeat_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void take_pending(worker *w)
{
    pthread_mutex_lock(&w->mu);
    Vxpd__Topology *t = w->pending;
    w->pending = NULL;
    for (size_t i = 0; i < w->ndone; i++)
        for (size_t k = 0; k < w->ndropping; k++)
            if (w->dropping[k] == w->done_gids[i]) {
                w->dropping[k] = w->dropping[--w->ndropping];
                break;
            }
    w->ndone = 0;
    pthread_mutex_unlock(&w->mu);
    if (t) {
        if (w->topo) vxpd__topology__free_unpacked(w->topo, NULL);
        w->topo = t;
    }
}

static void wake_cb(uv_async_t *a)
{
    worker *w = a->data;
    take_pending(w);
    reconcile(w);
}

static void tick_cb(uv_timer_t *t)
{
    worker *w = t->data;
    take_pending(w);
    reconcile(w);
    build_report(w);
}

/* ---- data path --------------------------------------------------------------------------- */

typedef struct wreq {
    struct raft_apply apply;
    struct raft_barrier barrier;
    vx_rpc_call *call;
    hosted *h;
    uint32_t method;
    uint8_t *payload; /* the request, kept for the job */
    size_t len;
    uint64_t term; /* a read's barrier: the term it was issued in */
} wreq;

static void write_done(struct raft_apply *req, int status, void *result)
{
    wreq *r = req->data;
    if (status != 0) {
        vx_rpc_reply_err(r->call, status == RAFT_NOTLEADER || status == RAFT_LEADERSHIPLOST ? VX_PD_NOT_LEADER : VX_EIO,
                  "", "not committed: %s", raft_strerror(status));
    } else {
        vx_fsm_result fr = vx_fsm_result_decode(result);
        Vxw__WriteResponse resp = VXW__WRITE_RESPONSE__INIT;
        resp.status = fr.status;
        resp.index = fr.index;
        vx_rpc_reply_msg(r->call, 0, &resp.base);
    }
    free(r);
}

static void on_write(worker *w, vx_rpc_call *call, const uint8_t *payload, size_t len)
{
    Vxw__WriteRequest *req = vxw__write_request__unpack(NULL, len, payload);
    if (req == NULL) {
        vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed write request");
        return;
    }
    hosted *h = find_hosted(w, req->group_id);
    if (h == NULL) {
        vx_rpc_reply_err(call, VX_ENOTFOUND, NULL, "worker %" PRIu64 " does not host shard %" PRIu64, w->id, req->group_id);
    } else if (!leads(h)) {
        vx_rpc_reply_err(call, VX_PD_NOT_LEADER, leader_rpc(w, h), "not the leader of shard %" PRIu64, h->gid);
    } else if (vx_cmd_validate(req->command.data, req->command.len) != 0) {
        vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed shard command");
    } else if (vx_shard_backlog_full(h->fsm.shard)) {
        vx_rpc_reply_err(call, VX_EFULL, NULL, "shard %" PRIu64 " is indexing a backlog; retry", h->gid);
    } else {
        wreq *r = calloc(1, sizeof *r);
        uint8_t *cmd = raft_malloc(req->command.len ? req->command.len : 1);
        if (r == NULL || cmd == NULL) {
            free(r);
            raft_free(cmd);
            vx_rpc_reply_err(call, VX_ENOMEM, NULL, "out of memory");
        } else {
            memcpy(cmd, req->command.data, req->command.len);
            r->call = call;
            r->apply.data = r;
            struct raft_buffer b = {cmd, req->command.len};
            int rv = raft_apply(h->raft, &r->apply, &b, 1, write_done);
            if (rv != 0) {
                raft_free(cmd);
                free(r);
                vx_rpc_reply_err(call, rv == RAFT_NOTLEADER ? VX_PD_NOT_LEADER : VX_EIO, leader_rpc(w, h),
                          "cannot propose: %s", raft_strerror(rv));
            }
        }
    }
    vxw__write_request__free_unpacked(req, NULL);
}

static void search_job(void *arg);
static void get_job(void *arg);
static void info_job(void *arg);
static void scan_job(void *arg);
static void count_job(void *arg);

static void submit_job(worker *w, wreq *r)
{
    vx_job_fn fn = r->method == VX_W_SEARCH ? search_job
                   : r->method == VX_W_GET  ? get_job
                   : r->method == VX_W_SCAN ? scan_job
                   : r->method == VX_W_COUNT ? count_job
                                             : info_job;
    atomic_fetch_add(&r->h->refs, 1);
    if (vx_workpool_submit(w->search_pool, fn, r) != 0) {
        atomic_fetch_sub(&r->h->refs, 1);
        vx_rpc_reply_err(r->call, VX_ENOMEM, NULL, "cannot queue the request");
        free(r->payload);
        free(r);
    }
}

static void read_barrier_done(struct raft_barrier *req, int status)
{
    wreq *r = req->data;
    hosted *h = r->h;
    if (status != 0) {
        vx_rpc_reply_err(r->call, VX_PD_NOT_LEADER, "", "leadership not confirmed: %s", raft_strerror(status));
        free(r->payload);
        free(r);
        atomic_fetch_sub(&h->refs, 1);
        return;
    }
    /* everything committed before the barrier is applied here: this term's
     * reads need no barrier any more */
    if (h->raft->current_term == r->term && r->term > h->read_term) h->read_term = r->term;
    submit_job(h->w, r);
    atomic_fetch_sub(&h->refs, 1);
}

/* Reads: route to the pool, after the leadership checks the request asks for. */
static void on_read(worker *w, vx_rpc_call *call, uint32_t method, const uint8_t *payload, size_t len)
{
    uint64_t gid = 0;
    bool allow_follower = true, linearizable = false;
    if (method == VX_W_SEARCH) {
        Vxw__SearchRequest *q = vxw__search_request__unpack(NULL, len, payload);
        if (q == NULL) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed search request");
            return;
        }
        gid = q->group_id;
        allow_follower = q->allow_follower && !q->linearizable;
        linearizable = q->linearizable;
        vxw__search_request__free_unpacked(q, NULL);
    } else if (method == VX_W_GET) {
        Vxw__GetRequest *q = vxw__get_request__unpack(NULL, len, payload);
        if (q == NULL) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed get request");
            return;
        }
        gid = q->group_id;
        allow_follower = q->allow_follower;
        vxw__get_request__free_unpacked(q, NULL);
    } else if (method == VX_W_SCAN) {
        Vxw__ScanRequest *q = vxw__scan_request__unpack(NULL, len, payload);
        if (q == NULL) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed scan request");
            return;
        }
        gid = q->group_id;
        allow_follower = q->allow_follower;
        vxw__scan_request__free_unpacked(q, NULL);
    } else if (method == VX_W_COUNT) {
        Vxw__CountRequest *q = vxw__count_request__unpack(NULL, len, payload);
        if (q == NULL) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed count request");
            return;
        }
        gid = q->group_id;
        allow_follower = q->allow_follower;
        vxw__count_request__free_unpacked(q, NULL);
    } else {
        Vxw__ShardInfoRequest *q = vxw__shard_info_request__unpack(NULL, len, payload);
        if (q == NULL) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed shard info request");
            return;
        }
        gid = q->group_id;
        vxw__shard_info_request__free_unpacked(q, NULL);
    }
    hosted *h = find_hosted(w, gid);
    if (h == NULL) {
        vx_rpc_reply_err(call, VX_ENOTFOUND, NULL, "worker %" PRIu64 " does not host shard %" PRIu64, w->id, gid);
        return;
    }
    if (!allow_follower && !leads(h)) {
        vx_rpc_reply_err(call, VX_PD_NOT_LEADER, leader_rpc(w, h), "not the leader of shard %" PRIu64, gid);
        return;
    }
    wreq *r = calloc(1, sizeof *r);
    uint8_t *copy = malloc(len ? len : 1);
    if (r == NULL || copy == NULL) {
        free(r);
        free(copy);
        vx_rpc_reply_err(call, VX_ENOMEM, NULL, "out of memory");
        return;
    }
    memcpy(copy, payload, len);
    *r = (wreq){.call = call, .h = h, .method = method, .payload = copy, .len = len};
    if (method == VX_W_SHARD_INFO) {
        /* leadership facts are the loop's: pack them into the request's slot */
        Vxw__ShardInfo *info = calloc(1, sizeof *info);
        if (info) {
            vxw__shard_info__init(info);
            raft_id lid = 0;
            const char *la = NULL;
            vx_group_leader(h->g, &lid, &la);
            info->group_id = gid;
            info->leader = leads(h);
            info->leader_worker = lid;
            info->term = h->raft->current_term;
        }
        free(r->payload);
        r->payload = (uint8_t *)info;
    }
    /* A new leader may not have applied every entry committed before its
     * term: until a barrier of its term has applied, leader reads wait for
     * one (read-your-writes across leader changes); later ones go straight
     * to the shard. */
    if (!allow_follower && leads(h) && h->read_term != h->raft->current_term) linearizable = true;
    if (linearizable) {
        r->barrier.data = r;
        r->term = h->raft->current_term;
        atomic_fetch_add(&h->refs, 1);
        if (raft_barrier(h->raft, &r->barrier, read_barrier_done) != 0) {
            atomic_fetch_sub(&h->refs, 1);
            vx_rpc_reply_err(call, VX_PD_NOT_LEADER, leader_rpc(w, h), "not the leader of shard %" PRIu64, gid);
            free(r->payload);
            free(r);
        }
        return;
    }
    submit_job(w, r);
}

static void finish_job(wreq *r)
{
    atomic_fetch_sub(&r->h->refs, 1);
    free(r->payload);
    free(r);
}

static void search_job(void *arg)
{
    wreq *r = arg;
    hosted *h = r->h;
    Vxw__SearchRequest *q = vxw__search_request__unpack(NULL, r->len, r->payload);
    vx_filter_expr *flt = NULL;
    vx_shard_hit *hits = NULL;
    char ferr[256];
    if (q == NULL) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "malformed search request");
        goto out;
    }
    if (q->n_vector != h->dim) {
        vx_rpc_reply_err(r->call, VX_EDIM, NULL, "the vector has %zu dimensions, the collection %u", q->n_vector, h->dim);
        goto out;
    }
    if (q->limit < 1 || q->limit > MAX_LIMIT) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "limit must be 1 to %d", MAX_LIMIT);
        goto out;
    }
    if (q->filter_json[0] && vx_filter_compile_text(q->filter_json, strlen(q->filter_json), &flt, ferr) != 0) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "filter: %s", ferr);
        goto out;
    }
    hits = calloc(q->limit, sizeof *hits);
    if (hits == NULL) {
        vx_rpc_reply_err(r->call, VX_ENOMEM, NULL, "out of memory");
        goto out;
    }
    vx_search_params sp = {.ef = q->ef, .exact = q->exact};
    uint32_t n = 0;
    vx_shard *sh = vx_shard_fsm_acquire(&h->fsm);
    int rc = flt ? vx_shard_search_filtered(sh, q->vector, q->limit, &sp, flt, hits, &n)
                 : vx_shard_search(sh, q->vector, q->limit, &sp, hits, &n);
    Vxw__SearchResponse resp = VXW__SEARCH_RESPONSE__INIT;
    Vxw__Hit *hv = calloc(n ? n : 1, sizeof *hv);
    Vxw__Hit **hp = calloc(n ? n : 1, sizeof *hp);
    char **payloads = calloc(n ? n : 1, sizeof *payloads);
    float *vec = malloc(sizeof(float) * h->dim);
    if (rc == 0 && hv && hp && payloads && vec) {
        for (uint32_t i = 0; i < n; i++) {
            vxw__hit__init(&hv[i]);
            hv[i].id.data = hits[i].id.b;
            hv[i].id.len = hits[i].id.len;
            hv[i].distance = hits[i].distance;
            hv[i].version = hits[i].version;
            if (q->with_payload) {
                uint64_t ver;
                if (vx_shard_get(sh, &hits[i].id, vec, &payloads[i], &ver) == 0 && payloads[i])
                    hv[i].payload_json = payloads[i];
            }
            hp[i] = &hv[i];
        }
        resp.hits = hp;
        resp.n_hits = n;
    }
    vx_shard_fsm_release(&h->fsm);
    if (rc != 0)
        vx_rpc_reply_err(r->call, rc, NULL, "search failed: %s", vx_strerror(rc));
    else if (hv == NULL || hp == NULL || payloads == NULL || vec == NULL)
        vx_rpc_reply_err(r->call, VX_ENOMEM, NULL, "out of memory");
    else
        vx_rpc_reply_msg(r->call, 0, &resp.base);
    atomic_fetch_add(&h->w->searches, 1);
    for (uint32_t i = 0; payloads && i < n; i++) free(payloads[i]);
    free(payloads);
    free(vec);
    free(hv);
    free(hp);
out:
    free(hits);
    vx_filter_free(flt);
    if (q) vxw__search_request__free_unpacked(q, NULL);
    finish_job(r);
}

static void get_job(void *arg)
{
    wreq *r = arg;
    hosted *h = r->h;
    Vxw__GetRequest *q = vxw__get_request__unpack(NULL, r->len, r->payload);
    vx_point_id id;
    if (q == NULL || vx_id_from_bytes(&id, q->id.data, q->id.len) != 0) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "malformed point id");
    } else {
        float *vec = malloc(sizeof(float) * h->dim);
        char *payload = NULL;
        uint64_t version = 0;
        vx_shard *sh = vx_shard_fsm_acquire(&h->fsm);
        int rc = vec ? vx_shard_get(sh, &id, vec, &payload, &version) : VX_ENOMEM;
        vx_shard_fsm_release(&h->fsm);
        Vxw__GetResponse resp = VXW__GET_RESPONSE__INIT;
        if (rc == 0) {
            resp.found = true;
            resp.vector = vec;
            resp.n_vector = h->dim;
            resp.payload_json = payload ? payload : (char *)"";
            resp.version = version;
        }
        if (rc == 0 || rc == VX_ENOTFOUND)
            vx_rpc_reply_msg(r->call, 0, &resp.base);
        else
            vx_rpc_reply_err(r->call, rc, NULL, "read failed: %s", vx_strerror(rc));
        free(payload);
        free(vec);
    }
    if (q) vxw__get_request__free_unpacked(q, NULL);
    finish_job(r);
}

static void info_job(void *arg)
{
    wreq *r = arg;
    Vxw__ShardInfo *info = (Vxw__ShardInfo *)r->payload;
    if (info == NULL) {
        vx_rpc_reply_err(r->call, VX_ENOMEM, NULL, "out of memory");
    } else {
        vx_shard *sh = vx_shard_fsm_acquire(&r->h->fsm);
        int rc = vx_shard_digest(sh, &info->digest, &info->applied);
        info->count = vx_shard_count(sh);
        info->backlog = vx_shard_backlog(sh);
        vx_index_stats st;
        vx_index_get_stats(vx_shard_index(sh), &st);
        info->indexed = st.live;
        vx_shard_optimizer op;
        vx_shard_optimizer_status(sh, &op);
        info->optimizing = op.running;
        info->deleted = op.deleted;
        info->vacuums = op.runs;
        info->reclaimed = op.reclaimed;
        vx_shard_pindex_info *pi = NULL;
        size_t npi = 0;
        if (rc == 0) rc = vx_shard_payload_indexes(sh, &pi, &npi);
        vx_shard_fsm_release(&r->h->fsm);
        Vxw__PayloadIndexInfo *pv = calloc(npi ? npi : 1, sizeof *pv);
        Vxw__PayloadIndexInfo **pp = calloc(npi ? npi : 1, sizeof *pp);
        if (rc == 0 && (pv == NULL || pp == NULL)) rc = VX_ENOMEM;
        if (rc == 0) {
            for (size_t i = 0; i < npi; i++) {
                vxw__payload_index_info__init(&pv[i]);
                pv[i].field = pi[i].field;
                pv[i].type = (char *)vx_pidx_type_name(pi[i].type);
                pv[i].points = pi[i].points;
                pp[i] = &pv[i];
            }
            info->payload_indexes = pp;
            info->n_payload_indexes = npi;
        }
        if (rc != 0)
            vx_rpc_reply_err(r->call, rc, NULL, "shard info: %s", vx_strerror(rc));
        else
            vx_rpc_reply_msg(r->call, 0, &info->base);
        free(pv);
        free(pp);
        free(pi);
    }
    finish_job(r);
}

/* Scan: limit + 1 matching records from the start id; the extra one's id
 * is where the next page starts.  The page also ends when it has grown
 * past SCAN_MAX_BYTES (next_id is then the first point left out). */
typedef struct scan_acc {
    Vxw__Point *pts;
    uint32_t n, limit;
    bool with_payload, with_vector;
    size_t bytes;
    vx_point_id next;
    bool has_next;
    int err;
} scan_acc;

static int scan_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    scan_acc *a = ctx;
    if (a->n == a->limit || (a->n > 0 && a->bytes > SCAN_MAX_BYTES)) {
        a->next = *id;
        a->has_next = true;
        return 1;
    }
    Vxw__Point *p = &a->pts[a->n];
    vxw__point__init(p);
    p->id.data = malloc(id->len);
    if (p->id.data == NULL) goto nomem;
    memcpy(p->id.data, id->b, id->len);
    p->id.len = id->len;
    p->version = rec->version;
    a->n++; /* from here on the point's buffers are freed with the page */
    if (a->with_vector && rec->dim > 0) {
        p->vector = malloc(sizeof(float) * rec->dim);
        if (p->vector == NULL) goto nomem;
        memcpy(p->vector, rec->vector, sizeof(float) * rec->dim); /* possibly unaligned */
        p->n_vector = rec->dim;
    }
    if (a->with_payload && rec->payload && rec->payload_len > 0) {
        p->payload_json = malloc((size_t)rec->payload_len + 1);
        if (p->payload_json == NULL) goto nomem;
        memcpy(p->payload_json, rec->payload, rec->payload_len);
        p->payload_json[rec->payload_len] = '\0';
    }
    a->bytes += id->len + 16 + sizeof(float) * p->n_vector + (a->with_payload ? rec->payload_len : 0);
    return 0;
nomem:
    a->err = VX_ENOMEM;
    return -1;
}

static void scan_job(void *arg)
{
    wreq *r = arg;
    hosted *h = r->h;
    Vxw__ScanRequest *q = vxw__scan_request__unpack(NULL, r->len, r->payload);
    vx_filter_expr *flt = NULL;
    char ferr[VX_FILTER_ERRMSG_LEN];
    vx_point_id start;
    scan_acc a = {0};
    if (q == NULL) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "malformed scan request");
        goto out;
    }
    if (q->limit < 1 || q->limit > MAX_LIMIT) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "limit must be 1 to %d", MAX_LIMIT);
        goto out;
    }
    if (q->start_id.len > 0 && vx_id_from_bytes(&start, q->start_id.data, q->start_id.len) != 0) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "malformed start id");
        goto out;
    }
    if (q->filter_json[0] && vx_filter_compile_text(q->filter_json, strlen(q->filter_json), &flt, ferr) != 0) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "filter: %s", ferr);
        goto out;
    }
    a.limit = q->limit;
    a.with_payload = q->with_payload;
    a.with_vector = q->with_vector;
    a.pts = calloc(q->limit, sizeof *a.pts);
    Vxw__Point **pp = calloc(q->limit, sizeof *pp);
    if (a.pts == NULL || pp == NULL) {
        free(pp);
        vx_rpc_reply_err(r->call, VX_ENOMEM, NULL, "out of memory");
        goto out;
    }
    vx_shard *sh = vx_shard_fsm_acquire(&h->fsm);
    int rc = vx_shard_scan(sh, q->start_id.len > 0 ? &start : NULL, flt, scan_cb, &a);
    vx_shard_fsm_release(&h->fsm);
    if (rc == 0) rc = a.err;
    if (rc != 0) {
        vx_rpc_reply_err(r->call, rc, NULL, "scan failed: %s", vx_strerror(rc));
    } else {
        Vxw__ScanResponse resp = VXW__SCAN_RESPONSE__INIT;
        for (uint32_t i = 0; i < a.n; i++) pp[i] = &a.pts[i];
        resp.points = pp;
        resp.n_points = a.n;
        if (a.has_next) {
            resp.next_id.data = a.next.b;
            resp.next_id.len = a.next.len;
        }
        vx_rpc_reply_msg(r->call, 0, &resp.base);
    }
    free(pp);
out:
    for (uint32_t i = 0; i < a.n; i++) {
        free(a.pts[i].id.data);
        free(a.pts[i].vector);
        if (a.pts[i].payload_json != protobuf_c_empty_string) free(a.pts[i].payload_json);
    }
    free(a.pts);
    vx_filter_free(flt);
    if (q) vxw__scan_request__free_unpacked(q, NULL);
    finish_job(r);
}

static int count_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    (void)id;
    (void)rec;
    (*(uint64_t *)ctx)++;
    return 0;
}

static void count_job(void *arg)
{
    wreq *r = arg;
    Vxw__CountRequest *q = vxw__count_request__unpack(NULL, r->len, r->payload);
    vx_filter_expr *flt = NULL;
    char ferr[VX_FILTER_ERRMSG_LEN];
    if (q == NULL) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "malformed count request");
    } else if (q->filter_json[0] &&
               vx_filter_compile_text(q->filter_json, strlen(q->filter_json), &flt, ferr) != 0) {
        vx_rpc_reply_err(r->call, VX_EINVAL, NULL, "filter: %s", ferr);
    } else {
        Vxw__CountResponse resp = VXW__COUNT_RESPONSE__INIT;
        int rc = 0;
        vx_shard *sh = vx_shard_fsm_acquire(&r->h->fsm);
        if (flt == NULL) resp.count = vx_shard_count(sh);
        else rc = vx_shard_scan(sh, NULL, flt, count_cb, &resp.count);
        vx_shard_fsm_release(&r->h->fsm);
        if (rc != 0)
            vx_rpc_reply_err(r->call, rc, NULL, "count failed: %s", vx_strerror(rc));
        else
            vx_rpc_reply_msg(r->call, 0, &resp.base);
    }
    vx_filter_free(flt);
    if (q) vxw__count_request__free_unpacked(q, NULL);
    finish_job(r);
}

static void on_call(void *data, vx_rpc_call *call, uint32_t method, const uint8_t *payload, size_t len)
{
    worker *w = data;
    if (w->stopping) {
        vx_rpc_reply_err(call, VX_PD_RETRY, NULL, "shutting down");
        return;
    }
    switch (method) {
    case VX_W_WRITE:
        on_write(w, call, payload, len);
        return;
    case VX_W_SEARCH:
    case VX_W_GET:
    case VX_W_SHARD_INFO:
    case VX_W_SCAN:
    case VX_W_COUNT:
        on_read(w, call, method, payload, len);
        return;
    default:
        vx_rpc_reply_err(call, VX_RPC_EUNKNOWN_METHOD, NULL, "unknown method %u", method);
    }
}

/* ---- identity and registration ------------------------------------------------------------ */

static int read_small(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) return VX_ENOTFOUND;
    size_t got = fread(buf, 1, n - 1, f);
    fclose(f);
    buf[got] = '\0';
    while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == ' ')) buf[--got] = '\0';
    return 0;
}

static int write_small(const char *dir, const char *name, const char *text)
{
    char tmp[700], path[700];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return VX_EIO;
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) return VX_EIO;
    return vx_fsync_dir(dir);
}

static int identity(worker *w)
{
    char path[700];
    snprintf(path, sizeof path, "%s/worker.name", w->dir);
    if (read_small(path, w->name, sizeof w->name) == 0 && w->name[0]) return 0;
    uint8_t rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) return VX_EIO;
    snprintf(w->name, sizeof w->name, "w-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
             rnd[4], rnd[5], rnd[6], rnd[7]);
    return write_small(w->dir, "worker.name", w->name);
}

static int register_worker(worker *w)
{
    Vxpd__Worker me = VXPD__WORKER__INIT;
    Vxpd__Capacity cap = VXPD__CAPACITY__INIT;
    me.name = w->name;
    me.rpc_address = w->rpc_addr;
    me.raft_address = w->raft_addr;
    me.zone = w->zone;
    me.rack = w->rack;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cap.cpu_cores = cores > 0 ? (uint32_t)cores : 1;
    cap.mem_bytes = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    me.capacity = &cap;
    Vxpd__RegisterWorkerRequest req = VXPD__REGISTER_WORKER_REQUEST__INIT;
    req.worker = &me;
    char err[VX_PD_CLIENT_ERRMSG_LEN];
    for (unsigned attempt = 0;; attempt++) {
        ProtobufCMessage *resp = NULL;
        int rc = vx_pd_client_call(w->pd_addrs, w->npd, w->secret, VX_PD_REGISTER_WORKER, &req.base,
                                   &vxpd__register_worker_response__descriptor, &resp, 5000, err);
        if (rc == 0) {
            w->id = ((Vxpd__RegisterWorkerResponse *)resp)->worker_id;
            protobuf_c_message_free_unpacked(resp, NULL);
            break;
        }
        if (rc != VX_EIO) {
            fprintf(stderr, "vectron worker: registration refused: %s\n", err);
            return rc;
        }
        if (attempt % 5 == 0) fprintf(stderr, "vectron worker: waiting for the placement driver: %s\n", err);
    }
    char path[700], text[32];
    snprintf(path, sizeof path, "%s/worker.id", w->dir);
    if (read_small(path, text, sizeof text) == 0) {
        if (strtoull(text, NULL, 10) != w->id) {
            fprintf(stderr,
                    "vectron worker: the placement driver assigned id %" PRIu64 " but this data directory "
                    "belongs to worker %s: refusing to start (another cluster, or a PD that lost its state)\n",
                    w->id, text);
            return VX_ESTATE;
        }
        return 0;
    }
    snprintf(text, sizeof text, "%" PRIu64, w->id);
    return write_small(w->dir, "worker.id", text);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

static void node_closed(void *data)
{
    worker *w = data;
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
}

static void rpc_closed(void *data)
{
    worker *w = data;
    /* the shards are closed after the node (their groups first) */
    vx_node_close(w->node, node_closed, w);
}

static void on_signal(uv_signal_t *s, int signum)
{
    worker *w = s->data;
    if (w->stopping) return;
    w->stopping = true;
    fprintf(stderr, "worker %" PRIu64 ": signal %d: stopping\n", w->id, signum);
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, NULL);
    vx_rpc_server_close(w->rpc, rpc_closed, w);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: vectron worker --data-dir DIR --pd HOST:PORT[,...] --raft HOST:PORT --rpc HOST:PORT\n"
            "                      [--zone Z] [--rack R] [--heartbeat-ms MS] [--index-threads N]\n"
            "                      [--election-timeout-ms MS (500)]\n"
            "                      [--search-threads N] [--max-backlog N (100000, as serve)]\n\n"
            "Runs a data node: registers with the placement driver and hosts the shard\n"
            "replicas it is assigned.  Environment: VECTRON_CLUSTER_SECRET.\n");
}

int vx_worker_main(int argc, char **argv)
{
    static worker W;
    worker *w = &W;
    const char *dir = NULL, *pd = NULL, *raft = NULL, *rpc = NULL, *zone = "", *rack = "";
    unsigned index_threads = 2, search_threads = 4;
    w->heartbeat_ms = VX_PD_HEARTBEAT_INTERVAL_MS;
    w->election_timeout_ms = 500;
    w->max_backlog = 100000; /* serve's default (max_backlog) */
    for (int i = 0; i < argc; i += 2) { /* flag value pairs */
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "vectron worker: %s needs a value\n", f);
            return 2;
        }
        if (!strcmp(f, "--data-dir")) dir = v;
        else if (!strcmp(f, "--pd")) pd = v;
        else if (!strcmp(f, "--raft")) raft = v;
        else if (!strcmp(f, "--rpc")) rpc = v;
        else if (!strcmp(f, "--zone")) zone = v;
        else if (!strcmp(f, "--rack")) rack = v;
        else if (!strcmp(f, "--heartbeat-ms")) w->heartbeat_ms = (unsigned)atoi(v);
        else if (!strcmp(f, "--election-timeout-ms")) w->election_timeout_ms = (unsigned)atoi(v);
        else if (!strcmp(f, "--index-threads")) index_threads = (unsigned)atoi(v);
        else if (!strcmp(f, "--search-threads")) search_threads = (unsigned)atoi(v);
        else if (!strcmp(f, "--max-backlog")) w->max_backlog = (uint32_t)strtoul(v, NULL, 10);
        else {
            fprintf(stderr, "vectron worker: unknown flag %s\n", f);
            return 2;
        }
    }
    if (!dir || !pd || !raft || !rpc || w->heartbeat_ms < 50 || w->heartbeat_ms > 60000 || w->election_timeout_ms < 200 ||
        w->election_timeout_ms > 60000 || index_threads < 1 ||
        index_threads > 256 || search_threads < 1 || search_threads > 256 || strlen(zone) >= VX_PD_DOMAIN_MAX ||
        strlen(rack) >= VX_PD_DOMAIN_MAX || strlen(dir) > 400) {
        usage(stderr);
        return 2;
    }
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    snprintf(w->raft_addr, sizeof w->raft_addr, "%s", raft);
    snprintf(w->rpc_addr, sizeof w->rpc_addr, "%s", rpc);
    snprintf(w->zone, sizeof w->zone, "%s", zone);
    snprintf(w->rack, sizeof w->rack, "%s", rack);
    {
        const char *listen[2] = {w->raft_addr, w->rpc_addr};
        char serr[512];
        if (vx_cluster_secret_take("vectron worker", listen, 2, w->secret, sizeof w->secret, serr,
                                   sizeof serr) != 0) {
            fprintf(stderr, "%s\n", serr);
            return 2;
        }
    }
    w->pd_list = strdup(pd);
    char *save = NULL;
    for (char *t = strtok_r(w->pd_list, ",", &save); t && w->npd < 16; t = strtok_r(NULL, ",", &save))
        w->pd_addrs[w->npd++] = t;
    signal(SIGPIPE, SIG_IGN);
    if (vx_mkdir_p(w->dir) != 0) {
        fprintf(stderr, "vectron worker: cannot create %s: %s\n", w->dir, strerror(errno));
        return 1;
    }
    if (identity(w) != 0) {
        fprintf(stderr, "vectron worker: cannot keep an identity in %s\n", w->dir);
        return 1;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    uv_loop_init(&w->loop);
    if (vx_workpool_new(index_threads, &w->index_pool) != 0 || vx_workpool_new(search_threads, &w->search_pool) != 0) {
        fprintf(stderr, "vectron worker: cannot start threads\n");
        return 1;
    }
    char path[4096], err[VX_NODE_ERRMSG_LEN];
    snprintf(path, sizeof path, "%s/node", w->dir);
    vx_mkdir_p(path);
    if (vx_node_new(&w->loop, w->raft_addr, path, w->secret, &w->node, err) != 0) {
        fprintf(stderr, "vectron worker: node host on %s: %s\n", w->raft_addr, err);
        return 1;
    }
    vx_rpc_server_options ro = {w->secret, strlen(w->secret), 64u << 20, 0};
    char rerr[VX_RPC_ERRMSG_LEN];
    if (vx_rpc_server_new(&w->loop, w->rpc_addr, &ro, on_call, w, &w->rpc, rerr) != 0) {
        fprintf(stderr, "vectron worker: RPC on %s: %s\n", w->rpc_addr, rerr);
        return 1;
    }
    /* listening first: a worker that cannot take its ports never registers */
    if (register_worker(w) != 0) return 1;
    uv_async_init(&w->loop, &w->wake, wake_cb);
    w->wake.data = w;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, tick_cb, 0, TICK_MS);
    uv_signal_init(&w->loop, &w->sigint);
    uv_signal_init(&w->loop, &w->sigterm);
    w->sigint.data = w->sigterm.data = w;
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    build_report(w);
    /* detached: it may sit in a long poll when the worker stops */
    if (pthread_create(&w->watch_thread, NULL, watch_main, w) == 0) pthread_detach(w->watch_thread);
    if (pthread_create(&w->hb_thread, NULL, heartbeat_main, w) != 0) {
        fprintf(stderr, "vectron worker: cannot start the heartbeat thread\n");
        return 1;
    }
    fprintf(stderr, "worker %" PRIu64 " (%s): raft %s, rpc %s, zone %s, rack %s, pd %s\n", w->id, w->name,
            w->raft_addr, w->rpc_addr, w->zone, w->rack, pd);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pthread_join(w->hb_thread, NULL);
    /* the groups are closed: close the shards, checkpointing their indexes */
    while (w->hosts) {
        hosted *h = w->hosts;
        w->hosts = h->next;
        while (atomic_load(&h->refs) > 0) usleep(1000);
        char serr[VX_SHARD_ERRMSG_LEN];
        if (!vx_shard_failed(h->fsm.shard) && vx_shard_wait_indexed(h->fsm.shard, 10000) == 0)
            vx_shard_checkpoint(h->fsm.shard, serr);
        vx_shard_close(h->fsm.shard);
        vx_shard_fsm_destroy(&h->fsm);
        free(h);
    }
    vx_workpool_free(w->search_pool);
    vx_workpool_free(w->index_pool);
    uv_loop_close(&w->loop);
    if (w->topo) vxpd__topology__free_unpacked(w->topo, NULL);
    pthread_mutex_lock(&w->mu); /* the watch thread may still be in a call */
    if (w->pending) vxpd__topology__free_unpacked(w->pending, NULL);
    w->pending = NULL;
    pthread_mutex_unlock(&w->mu);
    free(w->report);
    free(w->pd_list);
    fprintf(stderr, "worker %" PRIu64 ": stopped\n", w->id);
    return 0;
}
