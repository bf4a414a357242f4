/*
 * runtime.c - see runtime.h.
 *
 * The catalog (which collections exist, their configuration and their shard
 * groups) is the placement driver's state machine run as a one-voter Raft
 * group in this process (see "the catalog" below); each shard is a Raft group
 * of its own with this node as its only voter.
 */
#define _GNU_SOURCE
#include "server/runtime.h"

#include "base/err.h"
#include "base/fsutil.h"
#include "base/handshake.h"
#include "base/pointid.h"
#include "base/workpool.h"
#include "raft/node.h"
#include "raft/shard_fsm.h"
#include "pd/pd_fsm.h"
#include "pd/state.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PD_GID 2 /* pd/pd.h: VX_PD_GROUP_ID */
#define SELF_ID 1
#define VX_RT_MAX_BROKEN 64

typedef struct rt_shard {
    uint64_t gid;
    char dir[512];
    vx_shard_fsm fsm;
    vx_group *g;
    bool opened, grouped;
    _Atomic bool leads;         /* set by the loop's ready timer */
    _Atomic uint64_t commit_ns; /* propose -> apply of the last write */
} rt_shard;

struct vx_collection {
    vx_runtime *rt;
    char name[VX_COLLECTION_NAME_MAX + 1];
    vx_collection_config cfg;
    uint32_t nshards;
    rt_shard *shards;
    _Atomic int refs; /* the runtime's list holds one */
    _Atomic bool dead;
    int groups_open; /* loop thread: teardown progress */
    struct vx_collection *next;
};

typedef enum { T_PROPOSE, T_BARRIER, T_CATALOG, T_STOP } task_kind;

typedef struct task {
    task_kind kind;
    vx_runtime *rt;
    uint64_t gid;
    uint8_t *buf;
    size_t len;
    rt_shard *shard;
    uint64_t t0_ns;
    struct raft_apply apply;
    struct raft_barrier barrier;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc, status;
    char msg[200]; /* T_CATALOG: why it was refused */
    _Atomic int refs;
    struct task *next;
} task;

struct vx_runtime {
    char dir[400];
    char address[64];
    uint32_t max_backlog;
    void (*observe_commit)(void *ctx, double seconds);
    void *observe_ctx;
    void (*on_auth)(void *ctx, const Vxpd__State *state);
    void *auth_ctx;
    uint64_t auth_seen; /* auth_epoch + 1 last given to on_auth (0: never) */
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t ready_timer;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t task_mu;
    task *tasks, *tasks_tail;
    bool stopping;
    vx_workpool *pool;
    vx_node *node;
    bool node_closed;
    /* catalog (loop thread) */
    vx_pd_state *pd_st;
    vx_pd_fsm pd_fsm;
    vx_group *pd_group;
    uint64_t pd_res_index; /* the last applied command's result */
    vx_pd_result pd_res;
    struct raft_barrier pd_barrier;
    struct raft_apply pd_register;
    bool pd_barrier_sent, pd_caught_up, pd_register_sent;
    _Atomic uint64_t self_worker; /* this process as the PD's worker (0: not registered yet) */
    uint64_t broken[VX_RT_MAX_BROKEN]; /* collections that cannot open (first shard's group) */
    size_t nbroken;
    /* collections */
    pthread_rwlock_t coll_lock;
    vx_collection *colls;
    pthread_mutex_t janitor_mu;
    pthread_cond_t janitor_cv;
    int janitors; /* teardowns in flight */
    _Atomic bool ready;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- collection configuration -------------------------------------------------------- */

bool vx_collection_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > VX_COLLECTION_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        /* Qdrant forbids path separators and a few shell-hostile characters */
        if (c < 0x20 || c == '/' || c == '\\' || c == '*' || c == '<' || c == '>' || c == ':' ||
            c == '|' || c == '?' || c == '"' || c == 0x7f)
            return false;
    }
    return strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int get_uint(const cJSON *obj, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                    char *errbuf, const char *where)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (v == NULL || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < (double)min || v->valuedouble > (double)max ||
        v->valuedouble != floor(v->valuedouble))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                       "%s%s must be an integer in [%" PRIu64 ", %" PRIu64 "]", where, key, min,
                       max);
    *out = (uint64_t)v->valuedouble;
    return 0;
}

static int parse_hnsw(const cJSON *h, vx_collection_config *cfg, char *errbuf)
{
    if (h == NULL || cJSON_IsNull(h)) return 0;
    if (!cJSON_IsObject(h))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "hnsw_config must be an object");
    uint64_t m = cfg->hnsw_m, ef = cfg->hnsw_ef_construct, fst = cfg->full_scan_threshold;
    int rc = get_uint(h, "m", 0, 128, &m, errbuf, "hnsw_config.");
    if (rc == 0) rc = get_uint(h, "ef_construct", 4, 10000, &ef, errbuf, "hnsw_config.");
    if (rc == 0)
        rc = get_uint(h, "full_scan_threshold", 0, UINT32_MAX, &fst, errbuf, "hnsw_config.");
    if (rc != 0) return rc;
    cfg->hnsw_m = m < 2 ? 2 : (uint32_t)m; /* m 0 (no graph) is served as the minimum */
    cfg->hnsw_ef_construct = (uint32_t)(ef < cfg->hnsw_m ? cfg->hnsw_m : ef);
    cfg->full_scan_threshold = (uint32_t)fst;
    return 0;
}

static int parse_quant(const cJSON *q, vx_collection_config *cfg, char *errbuf)
{
    if (q == NULL || cJSON_IsNull(q)) return 0;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(q, "scalar");
    if (!cJSON_IsObject(q) || !cJSON_IsObject(s))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                       "quantization_config: only {\"scalar\":{\"type\":\"int8\"}} is supported");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "int8") != 0)
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                       "quantization_config.scalar.type must be \"int8\"");
    const cJSON *qu = cJSON_GetObjectItemCaseSensitive(s, "quantile");
    if (qu != NULL && !cJSON_IsNull(qu)) {
        if (!cJSON_IsNumber(qu) || qu->valuedouble < 0.5 || qu->valuedouble > 1.0)
            return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                           "quantization_config.scalar.quantile must be in [0.5, 1]");
        cfg->quantile = (float)(1.0 - qu->valuedouble);
    }
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(s, "always_ram");
    cfg->always_ram = cJSON_IsTrue(ar);
    cfg->int8 = true;
    return 0;
}

static int parse_distance(const cJSON *d, vx_collection_config *cfg, char *errbuf)
{
    if (!cJSON_IsString(d))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                       "vectors.distance is required: \"Cosine\", \"Euclid\" or \"Dot\"");
    if (strcmp(d->valuestring, "Cosine") == 0) cfg->metric = VX_METRIC_COSINE;
    else if (strcmp(d->valuestring, "Euclid") == 0) cfg->metric = VX_METRIC_L2;
    else if (strcmp(d->valuestring, "Dot") == 0) cfg->metric = VX_METRIC_IP;
    else
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                       "vectors.distance \"%s\" is not supported (Cosine, Euclid, Dot)",
                       d->valuestring);
    return 0;
}

/* optimizers_config's fields we honour (indexing_threshold is reported only) */
static int parse_optimizers(const cJSON *opt, vx_collection_config *cfg, char *errbuf)
{
    if (opt == NULL || cJSON_IsNull(opt)) return 0;
    if (!cJSON_IsObject(opt))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "optimizers_config must be an object");
    uint64_t it = cfg->indexing_threshold, vm = cfg->vacuum_min_vector_number;
    int rc = get_uint(opt, "indexing_threshold", 0, UINT64_MAX >> 12, &it, errbuf, "optimizers_config.");
    if (rc == 0)
        rc = get_uint(opt, "vacuum_min_vector_number", 0, UINT64_MAX >> 12, &vm, errbuf,
                      "optimizers_config.");
    if (rc != 0) return rc;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(opt, "deleted_threshold");
    if (dt != NULL && !cJSON_IsNull(dt)) {
        if (!cJSON_IsNumber(dt) || !(dt->valuedouble >= 0.0 && dt->valuedouble <= 1.0))
            return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                           "optimizers_config.deleted_threshold must be a number in [0, 1]");
        cfg->deleted_threshold = dt->valuedouble;
    }
    cfg->indexing_threshold = it;
    cfg->vacuum_min_vector_number = vm;
    return 0;
}

int vx_collection_config_parse(const cJSON *body, vx_collection_config *cfg, char *errbuf)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->shard_number = 1;
    cfg->replication_factor = 1;
    cfg->write_consistency_factor = 1;
    cfg->hnsw_m = 16;
    cfg->hnsw_ef_construct = 100;
    cfg->full_scan_threshold = 10000;
    cfg->indexing_threshold = 10000;
    cfg->deleted_threshold = 0.2;
    cfg->vacuum_min_vector_number = 1000;
    if (!cJSON_IsObject(body))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "the body must be a JSON object");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, "vectors");
    if (!cJSON_IsObject(v))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                       "vectors is required: {\"size\": n, \"distance\": \"Cosine\"}");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(v, "size");
    if (size == NULL)
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                       "named vectors are not supported: vectors must be {size, distance}");
    if (!cJSON_IsNumber(size) || size->valuedouble < 1 || size->valuedouble > VX_MAX_DIM ||
        size->valuedouble != floor(size->valuedouble))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                       "vectors.size must be an integer in [1, %d]", VX_MAX_DIM);
    cfg->dim = (uint32_t)size->valuedouble;
    int rc = parse_distance(cJSON_GetObjectItemCaseSensitive(v, "distance"), cfg, errbuf);
    if (rc == 0) rc = parse_hnsw(cJSON_GetObjectItemCaseSensitive(body, "hnsw_config"), cfg, errbuf);
    if (rc == 0) rc = parse_hnsw(cJSON_GetObjectItemCaseSensitive(v, "hnsw_config"), cfg, errbuf);
    if (rc == 0)
        rc = parse_quant(cJSON_GetObjectItemCaseSensitive(body, "quantization_config"), cfg, errbuf);
    if (rc == 0)
        rc = parse_quant(cJSON_GetObjectItemCaseSensitive(v, "quantization_config"), cfg, errbuf);
    uint64_t sn = cfg->shard_number, rf = cfg->replication_factor,
             wc = cfg->write_consistency_factor;
    if (rc == 0) rc = get_uint(body, "shard_number", 1, VX_RT_MAX_SHARDS, &sn, errbuf, "");
    if (rc == 0) rc = get_uint(body, "replication_factor", 1, 16, &rf, errbuf, "");
    if (rc == 0) rc = get_uint(body, "write_consistency_factor", 1, 16, &wc, errbuf, "");
    if (rc != 0) return rc;
    cfg->shard_number = (uint32_t)sn;
    cfg->replication_factor = (uint32_t)rf;
    cfg->write_consistency_factor = (uint32_t)wc;
    cfg->on_disk_payload = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "on_disk_payload"));
    /* a stored body without these (written before they existed) keeps the defaults */
    return parse_optimizers(cJSON_GetObjectItemCaseSensitive(body, "optimizers_config"), cfg, errbuf);
}

int vx_collection_config_patch(vx_collection_config *cfg, const cJSON *body, char *errbuf)
{
    if (!cJSON_IsObject(body))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "the body must be a JSON object");
    vx_collection_config c = *cfg;
    int rc = parse_hnsw(cJSON_GetObjectItemCaseSensitive(body, "hnsw_config"), &c, errbuf);
    if (rc == 0) rc = parse_optimizers(cJSON_GetObjectItemCaseSensitive(body, "optimizers_config"), &c, errbuf);
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(body, "params");
    if (rc == 0 && cJSON_IsObject(params)) {
        uint64_t rf = c.replication_factor, wc = c.write_consistency_factor;
        rc = get_uint(params, "replication_factor", 1, 16, &rf, errbuf, "params.");
        if (rc == 0) rc = get_uint(params, "write_consistency_factor", 1, 16, &wc, errbuf, "params.");
        c.replication_factor = (uint32_t)rf;
        c.write_consistency_factor = (uint32_t)wc;
        const cJSON *odp = cJSON_GetObjectItemCaseSensitive(params, "on_disk_payload");
        if (cJSON_IsBool(odp)) c.on_disk_payload = cJSON_IsTrue(odp);
    }
    const cJSON *vecs = cJSON_GetObjectItemCaseSensitive(body, "vectors");
    if (rc == 0 && vecs != NULL && !cJSON_IsObject(vecs))
        rc = vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "vectors must be an object");
    if (rc == 0 && cJSON_IsObject(vecs)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, vecs)
        {
            if (strcmp(e->string, "size") == 0 || strcmp(e->string, "distance") == 0) {
                rc = vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL,
                             "vectors.%s cannot change after creation", e->string);
                break;
            }
        }
        if (rc == 0) rc = parse_hnsw(cJSON_GetObjectItemCaseSensitive(vecs, "hnsw_config"), &c, errbuf);
    }
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(body, "quantization_config");
    if (rc == 0 && q != NULL && !cJSON_IsNull(q) && !c.int8) rc = parse_quant(q, &c, errbuf);
    if (rc == 0) *cfg = c;
    return rc;
}

char *vx_collection_config_body(const vx_collection_config *cfg)
{
    cJSON *b = cJSON_CreateObject(), *v = cJSON_AddObjectToObject(b, "vectors");
    cJSON_AddNumberToObject(v, "size", cfg->dim);
    cJSON_AddStringToObject(v, "distance",
                            cfg->metric == VX_METRIC_COSINE ? "Cosine" : cfg->metric == VX_METRIC_IP ? "Dot" : "Euclid");
    cJSON_AddNumberToObject(b, "shard_number", cfg->shard_number);
    cJSON_AddNumberToObject(b, "replication_factor", cfg->replication_factor);
    cJSON_AddNumberToObject(b, "write_consistency_factor", cfg->write_consistency_factor);
    cJSON_AddBoolToObject(b, "on_disk_payload", cfg->on_disk_payload);
    cJSON *h = cJSON_AddObjectToObject(b, "hnsw_config");
    cJSON_AddNumberToObject(h, "m", cfg->hnsw_m);
    cJSON_AddNumberToObject(h, "ef_construct", cfg->hnsw_ef_construct);
    cJSON_AddNumberToObject(h, "full_scan_threshold", cfg->full_scan_threshold);
    cJSON *o = cJSON_AddObjectToObject(b, "optimizers_config");
    cJSON_AddNumberToObject(o, "indexing_threshold", (double)cfg->indexing_threshold);
    cJSON_AddNumberToObject(o, "deleted_threshold", cfg->deleted_threshold);
    cJSON_AddNumberToObject(o, "vacuum_min_vector_number", (double)cfg->vacuum_min_vector_number);
    if (cfg->int8) {
        cJSON *q = cJSON_AddObjectToObject(cJSON_AddObjectToObject(b, "quantization_config"), "scalar");
        cJSON_AddStringToObject(q, "type", "int8");
        if (cfg->quantile > 0) cJSON_AddNumberToObject(q, "quantile", 1.0 - cfg->quantile);
        cJSON_AddBoolToObject(q, "always_ram", cfg->always_ram);
    }
    char *text = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return text;
}

/* ---- collections: open and tear down --------------------------------------------------- */

void vx_collection_index_config(const vx_collection_config *cfg, vx_index_config *ic)
{
    vx_index_config_default(ic, cfg->dim, cfg->metric);
    ic->m = cfg->hnsw_m;
    ic->ef_construction = cfg->hnsw_ef_construct;
    if (cfg->int8) {
        ic->quant = VX_QUANT_INT8;
        ic->quantile = cfg->quantile;
    }
}

void vx_collection_shard_config(const vx_collection_config *cfg, vx_shard_config *sc)
{
    vx_collection_index_config(cfg, &sc->index);
    sc->vacuum = true;
    sc->vacuum_ratio = cfg->deleted_threshold;
    sc->vacuum_min = cfg->vacuum_min_vector_number;
}

static void collection_free(vx_collection *c)
{
    free(c->shards);
    free(c);
}

/* Open every shard replica and group of a collection (loop thread, or before
 * the loop runs).  Groups start with this node as their only voter. */
static int collection_open(vx_runtime *rt, const char *name, const vx_collection_config *cfg,
                           const uint64_t *gids, vx_collection **out, char *errbuf)
{
    vx_collection *c = calloc(1, sizeof(*c));
    if (c == NULL) return VX_ENOMEM;
    c->shards = calloc(cfg->shard_number, sizeof(rt_shard));
    if (c->shards == NULL) {
        free(c);
        return VX_ENOMEM;
    }
    c->rt = rt;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->cfg = *cfg;
    c->nshards = cfg->shard_number;
    atomic_store(&c->refs, 1);
    int rc = 0;
    for (uint32_t i = 0; i < c->nshards && rc == 0; i++) {
        rt_shard *s = &c->shards[i];
        s->gid = gids[i];
        snprintf(s->dir, sizeof s->dir, "%s/shards/%" PRIu64, rt->dir, s->gid);
        vx_shard_config sc = {0};
        vx_collection_shard_config(cfg, &sc);
        sc.max_backlog = rt->max_backlog;
        sc.background_recovery = true;
        vx_shard *sh;
        char err[VX_SHARD_ERRMSG_LEN];
        rc = vx_shard_open(s->dir, &sc, rt->pool, &sh, err);
        if (rc != 0) {
            vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "shard %" PRIu64 ": %s", s->gid, err);
            break;
        }
        vx_shard_fsm_init(&s->fsm, sh);
        s->opened = true;
        char nerr[VX_NODE_ERRMSG_LEN];
        rc = vx_group_new(rt->node, s->gid, SELF_ID, &s->fsm.fsm, NULL, &s->g, nerr);
        if (rc != 0) {
            vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "group %" PRIu64 ": %s", s->gid, nerr);
            break;
        }
        s->grouped = true;
        s->fsm.raft = vx_group_raft(s->g);
        vx_snapshot_ops ops;
        vx_shard_fsm_snapshot_ops(&s->fsm, &ops);
        vx_group_set_snapshot_ops(s->g, &ops);
        raft_id id = SELF_ID;
        const char *addr = rt->address;
        rc = vx_group_bootstrap(s->g, 1, &id, &addr);
        if (rc == 0) rc = vx_group_start(s->g);
        if (rc != 0) vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "starting group %" PRIu64, s->gid);
    }
    if (rc != 0) {
        /* groups that exist are closed with the node; shards now */
        for (uint32_t i = 0; i < c->nshards; i++)
            if (c->shards[i].opened && !c->shards[i].grouped) {
                vx_shard_close(c->shards[i].fsm.shard);
                vx_shard_fsm_destroy(&c->shards[i].fsm);
            }
        if (c->nshards > 0 && c->shards[0].grouped) {
            atomic_store(&c->dead, true); /* leaked until the node closes: rare */
            return rc;
        }
        collection_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void add_collection(vx_runtime *rt, vx_collection *c)
{
    pthread_rwlock_wrlock(&rt->coll_lock);
    c->next = rt->colls;
    rt->colls = c;
    pthread_rwlock_unlock(&rt->coll_lock);
}

static vx_collection *find_locked(vx_runtime *rt, const char *name)
{
    for (vx_collection *c = rt->colls; c; c = c->next)
        if (strcmp(c->name, name) == 0) return c;
    return NULL;
}

static void *janitor_main(void *arg)
{
    vx_collection *c = arg;
    vx_runtime *rt = c->rt;
    while (atomic_load(&c->refs) > 0) usleep(1000); /* readers finish what they started */
    for (uint32_t i = 0; i < c->nshards; i++) {
        rt_shard *s = &c->shards[i];
        if (s->opened) {
            vx_shard_close(s->fsm.shard);
            vx_shard_fsm_destroy(&s->fsm);
        }
        char raftdir[600];
        snprintf(raftdir, sizeof raftdir, "%s/node/g%" PRIu64, rt->dir, s->gid);
        vx_rm_rf(s->dir);
        vx_rm_rf(raftdir);
    }
    collection_free(c);
    pthread_mutex_lock(&rt->janitor_mu);
    rt->janitors--;
    pthread_cond_broadcast(&rt->janitor_cv);
    pthread_mutex_unlock(&rt->janitor_mu);
    return NULL;
}

static void teardown_group_closed(void *data)
{
    vx_collection *c = data;
    if (--c->groups_open > 0) return;
    vx_runtime *rt = c->rt;
    pthread_mutex_lock(&rt->janitor_mu);
    rt->janitors++;
    pthread_mutex_unlock(&rt->janitor_mu);
    pthread_t th;
    if (pthread_create(&th, NULL, janitor_main, c) == 0)
        pthread_detach(th);
    else
        janitor_main(c);
}

/* Loop thread: take the collection out of service and remove its data once
 * its groups are closed and no reader holds it. */
static void collection_teardown(vx_runtime *rt, const char *name)
{
    pthread_rwlock_wrlock(&rt->coll_lock);
    vx_collection **pp = &rt->colls, *c = NULL;
    while (*pp && strcmp((*pp)->name, name) != 0) pp = &(*pp)->next;
    if (*pp) {
        c = *pp;
        *pp = c->next;
    }
    pthread_rwlock_unlock(&rt->coll_lock);
    if (c == NULL) return;
    atomic_store(&c->dead, true);
    atomic_fetch_sub(&c->refs, 1); /* the list's reference */
    c->groups_open = 1;            /* held until every close is issued */
    for (uint32_t i = 0; i < c->nshards; i++)
        if (c->shards[i].grouped) {
            c->groups_open++;
            vx_group_close(c->shards[i].g, teardown_group_closed, c);
        }
    teardown_group_closed(c);
}

/* ---- the catalog: the placement driver's state machine, one voter ----------------------
 *
 * vectron serve keeps its collections in the same replicated state as a
 * cluster's placement driver (src/pd/state.c): one Raft group (VX_PD_GROUP_ID)
 * with this process as its only voter, and this process registered in it as
 * the only worker (LOCAL_WORKER).  Creating a collection is the PD's
 * CreateCollection with every shard placed here (one replica), so shard group
 * ids, validation and the collection's recorded configuration are the
 * cluster's.  The PD's RPC service and control loops do not run: with one
 * worker there is nothing to place, repair or balance.
 *
 * Every applied command (and a restored snapshot) reconciles the open
 * collections with the state, on the loop thread: collections the state has
 * and this process has not are opened, ones it has not any more are torn
 * down, configuration changes are taken. */

#define LOCAL_WORKER "local"

static int cfg_from_pd(const Vxpd__Collection *pc, vx_collection_config *cfg)
{
    cJSON *body = cJSON_Parse(pc->config_json);
    char err[VX_RT_ERRMSG_LEN];
    int rc = vx_collection_config_parse(body, cfg, err);
    cJSON_Delete(body);
    if (rc != 0) return rc;
    if (pc->n_shards == 0 || pc->n_shards > VX_RT_MAX_SHARDS) return VX_ECORRUPT;
    cfg->shard_number = (uint32_t)pc->n_shards;
    return 0;
}

/* The shards' group ids in routing order (Shard.index). */
static int pd_gids(const Vxpd__Collection *pc, uint64_t *gids)
{
    for (size_t i = 0; i < pc->n_shards; i++) {
        uint32_t at = pc->shards[i]->index;
        if (at >= pc->n_shards) return VX_ECORRUPT;
        gids[at] = pc->shards[i]->group_id;
    }
    return 0;
}

static bool same_shards(const vx_collection *c, const Vxpd__Collection *pc)
{
    uint64_t gids[VX_RT_MAX_SHARDS];
    if (pc->n_shards != c->nshards || pd_gids(pc, gids) != 0) return false;
    for (uint32_t i = 0; i < c->nshards; i++)
        if (gids[i] != c->shards[i].gid) return false;
    return true;
}

static bool is_broken(vx_runtime *rt, uint64_t gid)
{
    for (size_t i = 0; i < rt->nbroken; i++)
        if (rt->broken[i] == gid) return true;
    return false;
}

/* Loop thread (or the opening thread before the loop runs). */
static void reconcile(vx_runtime *rt)
{
    const Vxpd__State *s = vx_pd_state_get(rt->pd_st);
    if (rt->on_auth && rt->auth_seen != s->auth_epoch + 1) {
        rt->on_auth(rt->auth_ctx, s);
        rt->auth_seen = s->auth_epoch + 1;
    }
    const Vxpd__Worker *me = vx_pd_state_worker_by_name(rt->pd_st, LOCAL_WORKER);
    atomic_store(&rt->self_worker, me ? me->id : 0);
    for (;;) { /* gone, or deleted and created again under the same name */
        char victim[VX_COLLECTION_NAME_MAX + 1] = "";
        pthread_rwlock_rdlock(&rt->coll_lock);
        for (vx_collection *c = rt->colls; c && !victim[0]; c = c->next) {
            const Vxpd__Collection *pc = vx_pd_state_collection(rt->pd_st, c->name);
            if (pc == NULL || !same_shards(c, pc)) snprintf(victim, sizeof victim, "%s", c->name);
        }
        pthread_rwlock_unlock(&rt->coll_lock);
        if (!victim[0]) break;
        collection_teardown(rt, victim);
    }
    for (size_t k = 0; k < s->n_collections; k++) {
        const Vxpd__Collection *pc = s->collections[k];
        vx_collection_config cfg;
        uint64_t gids[VX_RT_MAX_SHARDS];
        if (pc->n_shards == 0 || is_broken(rt, pc->shards[0]->group_id)) continue;
        if (cfg_from_pd(pc, &cfg) != 0 || pd_gids(pc, gids) != 0) {
            fprintf(stderr, "catalog: collection %s has an unusable definition; not opened\n", pc->name);
            if (rt->nbroken < VX_RT_MAX_BROKEN) rt->broken[rt->nbroken++] = pc->shards[0]->group_id;
            continue;
        }
        pthread_rwlock_wrlock(&rt->coll_lock);
        vx_collection *c = find_locked(rt, pc->name);
        if (c) { /* the shape is fixed at creation; the rest may change */
            cfg.shard_number = c->nshards;
            cfg.dim = c->cfg.dim;
            cfg.metric = c->cfg.metric;
            c->cfg = cfg;
            for (uint32_t i = 0; i < c->nshards; i++) /* a PATCH of optimizers_config */
                if (c->shards[i].opened)
                    vx_shard_set_optimizer(c->shards[i].fsm.shard, cfg.deleted_threshold,
                                           cfg.vacuum_min_vector_number);
        }
        pthread_rwlock_unlock(&rt->coll_lock);
        if (c) continue;
        char err[VX_RT_ERRMSG_LEN];
        if (collection_open(rt, pc->name, &cfg, gids, &c, err) == 0) {
            add_collection(rt, c);
        } else {
            fprintf(stderr, "catalog: collection %s cannot open: %s\n", pc->name, err);
            if (rt->nbroken < VX_RT_MAX_BROKEN) rt->broken[rt->nbroken++] = gids[0];
        }
    }
}

static void pd_result(void *data, uint64_t index, const vx_pd_result *res)
{
    vx_runtime *rt = data;
    rt->pd_res_index = index;
    rt->pd_res = *res;
    reconcile(rt);
}

static void pd_restored(void *data) { reconcile(data); }

/* ---- the loop thread and its tasks ---------------------------------------------------------- */

static void task_unref(task *t)
{
    if (atomic_fetch_sub(&t->refs, 1) == 1) {
        free(t->buf);
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        free(t);
    }
}

static void task_complete(task *t, int rc, int status)
{
    pthread_mutex_lock(&t->mu);
    t->rc = rc;
    t->status = status;
    t->done = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    task_unref(t);
}

static int map_raft_status(int status)
{
    switch (status) {
    case 0: return 0;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST: return VX_ESTATE;
    case RAFT_NOMEM: return VX_ENOMEM;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED: return VX_ESTATE;
    default: return VX_EIO;
    }
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    task *t = req->data;
    if (status == 0 && t->shard) {
        uint64_t ns = now_ns() - t->t0_ns;
        atomic_store(&t->shard->commit_ns, ns);
        if (t->rt && t->rt->observe_commit) t->rt->observe_commit(t->rt->observe_ctx, (double)ns / 1e9);
    }
    if (t->kind == T_CATALOG) { /* the PD state machine's result, kept by pd_result */
        vx_runtime *rt = t->rt;
        int st = status == 0 && rt->pd_res_index == req->index ? rt->pd_res.status : 0;
        if (st != 0) snprintf(t->msg, sizeof t->msg, "%s", rt->pd_res.msg);
        task_complete(t, map_raft_status(status), st);
        return;
    }
    vx_fsm_result r = status == 0 ? vx_fsm_result_decode(result) : (vx_fsm_result){0, 0};
    task_complete(t, map_raft_status(status), r.status);
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    task *t = req->data;
    task_complete(t, map_raft_status(status), 0);
}

static void run_task(vx_runtime *rt, task *t)
{
    vx_group *g = rt->node_closed ? NULL : vx_node_find_group(rt->node, t->gid);
    if (g == NULL) {
        task_complete(t, VX_ENOTFOUND, 0);
        return;
    }
    struct raft *r = vx_group_raft(g);
    if (raft_state(r) != RAFT_LEADER) {
        task_complete(t, VX_ESTATE, 0);
        return;
    }
    int rv;
    if (t->kind == T_BARRIER) {
        t->barrier.data = t;
        rv = raft_barrier(r, &t->barrier, barrier_cb);
    } else {
        t->apply.data = t;
        struct raft_buffer b = {t->buf, t->len};
        t->t0_ns = now_ns();
        rv = raft_apply(r, &t->apply, &b, 1, apply_cb);
        if (rv == 0) t->buf = NULL; /* libraft owns it now */
    }
    if (rv != 0) task_complete(t, map_raft_status(rv), 0);
}

static void node_closed_cb(void *data)
{
    vx_runtime *rt = data;
    rt->node_closed = true;
    /* the loop's own handles are all that is left: let uv_run return */
    if (!uv_is_closing((uv_handle_t *)&rt->wake)) uv_close((uv_handle_t *)&rt->wake, NULL);
    if (!uv_is_closing((uv_handle_t *)&rt->ready_timer))
        uv_close((uv_handle_t *)&rt->ready_timer, NULL);
}

static void wake_cb(uv_async_t *a)
{
    vx_runtime *rt = a->data;
    pthread_mutex_lock(&rt->task_mu);
    task *list = rt->tasks;
    rt->tasks = rt->tasks_tail = NULL;
    pthread_mutex_unlock(&rt->task_mu);
    while (list) {
        task *t = list;
        list = t->next;
        if (t->kind == T_STOP) {
            task_complete(t, 0, 0);
            uv_timer_stop(&rt->ready_timer);
            vx_node_close(rt->node, node_closed_cb, rt);
            continue;
        }
        run_task(rt, t);
    }
}

static bool group_leads(vx_group *g) { return g && raft_state(vx_group_raft(g)) == RAFT_LEADER; }

static int gc_dirs(vx_runtime *rt);

static void pd_register_cb(struct raft_apply *req, int status, void *result)
{
    (void)result;
    vx_runtime *rt = req->data;
    rt->pd_register_sent = false; /* the ready timer tries again if it did not take */
    if (status == 0 && rt->pd_res_index == req->index && rt->pd_res.status != 0)
        fprintf(stderr, "catalog: registering this process: %s\n", rt->pd_res.msg);
}

static void pd_barrier_cb(struct raft_barrier *req, int status)
{
    vx_runtime *rt = req->data;
    rt->pd_barrier_sent = false;
    if (status != 0 || rt->pd_caught_up) return;
    /* everything the log held at the start is applied: the collections are
     * the ones the state names, so directories of no collection can go */
    rt->pd_caught_up = true;
    pthread_rwlock_rdlock(&rt->coll_lock);
    gc_dirs(rt);
    pthread_rwlock_unlock(&rt->coll_lock);
}

/* Once the catalog leads: catch up with its log, then register this process
 * as its worker if it is not yet. */
static void catalog_step(vx_runtime *rt)
{
    struct raft *r = vx_group_raft(rt->pd_group);
    if (!rt->pd_caught_up) {
        if (!rt->pd_barrier_sent) {
            rt->pd_barrier.data = rt;
            rt->pd_barrier_sent = raft_barrier(r, &rt->pd_barrier, pd_barrier_cb) == 0;
        }
        return;
    }
    if (atomic_load(&rt->self_worker) != 0 || rt->pd_register_sent) return;
    Vxpd__Worker w = VXPD__WORKER__INIT;
    Vxpd__Capacity cap = VXPD__CAPACITY__INIT;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cap.cpu_cores = cpus > 0 ? (uint32_t)cpus : 1;
    w.name = LOCAL_WORKER;
    w.rpc_address = rt->address; /* serve has no internal RPC: its node address stands in */
    w.raft_address = rt->address;
    w.capacity = &cap;
    Vxpd__CmdRegisterWorker reg = VXPD__CMD_REGISTER_WORKER__INIT;
    reg.worker = &w;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_REGISTER_WORKER;
    cmd.register_worker = &reg;
    struct raft_buffer b;
    if (vx_pd_entry(&cmd, &b) != 0) return;
    rt->pd_register.data = rt;
    if (raft_apply(r, &rt->pd_register, &b, 1, pd_register_cb) == 0) rt->pd_register_sent = true;
    else raft_free(b.base);
}

static void ready_cb(uv_timer_t *timer)
{
    vx_runtime *rt = timer->data;
    bool ready = group_leads(rt->pd_group);
    if (ready) catalog_step(rt);
    ready = ready && rt->pd_caught_up && atomic_load(&rt->self_worker) != 0;
    pthread_rwlock_rdlock(&rt->coll_lock);
    for (vx_collection *c = rt->colls; c; c = c->next)
        for (uint32_t i = 0; i < c->nshards; i++) {
            bool leads = c->shards[i].grouped && group_leads(c->shards[i].g);
            atomic_store(&c->shards[i].leads, leads);
            ready = ready && leads;
        }
    pthread_rwlock_unlock(&rt->coll_lock);
    atomic_store(&rt->ready, ready);
}

static void *loop_main(void *arg)
{
    vx_runtime *rt = arg;
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Hand a task to the loop and wait for it (timeout_ms < 0: no limit). */
static int submit(vx_runtime *rt, task *t, int timeout_ms, int *status)
{
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    atomic_store(&t->refs, 2);
    pthread_mutex_lock(&rt->task_mu);
    if (rt->stopping && t->kind != T_STOP) {
        pthread_mutex_unlock(&rt->task_mu);
        atomic_store(&t->refs, 1);
        task_unref(t);
        return VX_ESTATE;
    }
    t->next = NULL;
    if (rt->tasks_tail) rt->tasks_tail->next = t;
    else rt->tasks = t;
    rt->tasks_tail = t;
    if (t->kind == T_STOP) rt->stopping = true;
    pthread_mutex_unlock(&rt->task_mu);
    uv_async_send(&rt->wake);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&t->mu);
    int w = 0;
    while (!t->done && w == 0)
        w = timeout_ms >= 0 ? pthread_cond_timedwait(&t->cv, &t->mu, &dl)
                            : pthread_cond_wait(&t->cv, &t->mu);
    int rc = t->done ? t->rc : VX_EIO;
    if (status) *status = t->done ? t->status : 0;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static task *task_new(task_kind kind, uint64_t gid)
{
    task *t = calloc(1, sizeof(*t));
    if (t) {
        t->kind = kind;
        t->gid = gid;
    }
    return t;
}

/* ---- open and close --------------------------------------------------------------------- */

static int gc_dirs(vx_runtime *rt)
{
    char path[600];
    snprintf(path, sizeof path, "%s/shards", rt->dir);
    DIR *d = opendir(path);
    if (d == NULL) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        unsigned long long gid = strtoull(e->d_name, &end, 10);
        if (e->d_name[0] == '.' || *end != '\0') continue;
        bool used = false;
        for (vx_collection *c = rt->colls; c && !used; c = c->next)
            for (uint32_t i = 0; i < c->nshards; i++) used = used || c->shards[i].gid == gid;
        if (used) continue;
        char victim[1000], raftdir[700];
        snprintf(victim, sizeof victim, "%s/%s", path, e->d_name);
        snprintf(raftdir, sizeof raftdir, "%s/node/g%llu", rt->dir, gid);
        fprintf(stderr, "removing %s: no collection uses it\n", victim);
        vx_rm_rf(victim);
        vx_rm_rf(raftdir);
    }
    closedir(d);
    return 0;
}

int vx_runtime_open(const vx_runtime_options *opt, vx_runtime **out, char *errbuf)
{
    if (strlen(opt->data_dir) >= 300)
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "data directory path too long");
    vx_runtime *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) return VX_ENOMEM;
    snprintf(rt->dir, sizeof rt->dir, "%s", opt->data_dir);
    snprintf(rt->address, sizeof rt->address, "%s", opt->raft_address);
    rt->max_backlog = opt->max_backlog ? opt->max_backlog : 100000;
    rt->observe_commit = opt->observe_commit;
    rt->observe_ctx = opt->observe_ctx;
    rt->on_auth = opt->on_auth;
    rt->auth_ctx = opt->auth_ctx;
    pthread_mutex_init(&rt->task_mu, NULL);
    pthread_rwlock_init(&rt->coll_lock, NULL);
    pthread_mutex_init(&rt->janitor_mu, NULL);
    pthread_cond_init(&rt->janitor_cv, NULL);
    char path[600], err[VX_NODE_ERRMSG_LEN];
    int rc = 0;
    snprintf(path, sizeof path, "%s/shards", rt->dir);
    if (vx_mkdir_p(path) != 0) {
        rc = vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EIO, "cannot create %s: %s", path,
                     strerror(errno));
        goto fail;
    }
    unsigned workers = opt->index_workers;
    if (workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        workers = n > 0 ? (unsigned)n : 1;
    }
    rc = vx_workpool_new(workers, &rt->pool);
    if (rc != 0) goto fail;
    snprintf(path, sizeof path, "%s/catalog", rt->dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        rc = vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_ESTATE,
                     "%s is an earlier vectron's catalog (0.1, before collections were kept in the "
                     "placement driver's state): this version cannot read it; start with an empty "
                     "data directory, or run the version that wrote it",
                     path);
        goto fail;
    }
    rt->pd_st = vx_pd_state_new();
    if (rt->pd_st == NULL) {
        rc = VX_ENOMEM;
        goto fail;
    }
    vx_pd_fsm_init(&rt->pd_fsm, rt->pd_st, pd_result, rt);
    rt->pd_fsm.on_restore = pd_restored;
    uv_loop_init(&rt->loop);
    snprintf(path, sizeof path, "%s/node", rt->dir);
    {
        /* serve's groups have one voter, itself: nobody else has any business
         * on its Raft port, so it takes a random secret nobody else knows
         * (docs/security.md) */
        char secret[65];
        vx_hs_random_secret(secret, 32);
        rc = vx_node_new(&rt->loop, rt->address, path, secret, &rt->node, err);
        sodium_memzero(secret, sizeof secret);
    }
    if (rc != 0) {
        vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "%s", err);
        uv_run(&rt->loop, UV_RUN_NOWAIT);
        goto fail_loop;
    }
    /* the catalog's group: starting it restores its snapshot and replays its
     * log, which opens the collections (reconcile) */
    unsigned snap = opt->catalog_snapshot_threshold ? opt->catalog_snapshot_threshold : 1024;
    vx_group_options go = {.snapshot_threshold = snap, .snapshot_trailing = snap / 4 + 1};
    rc = vx_group_new(rt->node, PD_GID, SELF_ID, &rt->pd_fsm.fsm, &go, &rt->pd_group, err);
    if (rc != 0) {
        vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "catalog group: %s", err);
        goto fail_node;
    }
    rt->pd_fsm.raft = vx_group_raft(rt->pd_group);
    raft_id id = SELF_ID;
    const char *addr = rt->address;
    rc = vx_group_bootstrap(rt->pd_group, 1, &id, &addr);
    if (rc == 0) rc = vx_group_start(rt->pd_group);
    if (rc != 0) {
        vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "catalog group cannot start");
        goto fail_node;
    }
    rt->wake.data = rt;
    uv_async_init(&rt->loop, &rt->wake, wake_cb);
    rt->ready_timer.data = rt;
    uv_timer_init(&rt->loop, &rt->ready_timer);
    uv_timer_start(&rt->ready_timer, ready_cb, 0, 50);
    if (pthread_create(&rt->thread, NULL, loop_main, rt) != 0) {
        rc = vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_ENOMEM, "loop thread");
        goto fail_node;
    }
    rt->thread_started = true;
    *out = rt;
    return 0;
fail_node:
    vx_node_close(rt->node, node_closed_cb, rt);
    while (!rt->node_closed) uv_run(&rt->loop, UV_RUN_ONCE);
fail_loop:
    uv_walk(&rt->loop, (uv_walk_cb)(void (*)(void))uv_close, NULL);
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    uv_loop_close(&rt->loop);
fail:
    /* collections the replay opened were released with the node's groups */
    while (rt->colls) {
        vx_collection *c = rt->colls;
        rt->colls = c->next;
        for (uint32_t i = 0; i < c->nshards; i++)
            if (c->shards[i].opened) {
                vx_shard_close(c->shards[i].fsm.shard);
                vx_shard_fsm_destroy(&c->shards[i].fsm);
            }
        collection_free(c);
    }
    if (rt->pd_st) vx_pd_state_free(rt->pd_st);
    if (rt->pool) vx_workpool_free(rt->pool);
    free(rt);
    return rc;
}

/* A graceful stop saves each shard's index as it is, so that the restart
 * loads the same graph (same answers, no rebuild) instead of re-indexing
 * everything after the last snapshot.  Best effort: Raft replay and the
 * store make a restart correct without it. */
static void stop_checkpoint(vx_collection *c, uint32_t i)
{
    vx_shard *sh = c->shards[i].fsm.shard;
    if (vx_shard_failed(sh)) return;
    char err[VX_SHARD_ERRMSG_LEN];
    if (vx_shard_wait_indexed(sh, 10000) != 0) {
        fprintf(stderr, "shard %s: indexing did not finish; no checkpoint at stop\n", vx_shard_dir(sh));
        return;
    }
    if (vx_shard_checkpoint(sh, err) != 0)
        fprintf(stderr, "shard %s: checkpoint at stop: %s\n", vx_shard_dir(sh), err);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void vx_runtime_close(vx_runtime *rt)
{
    if (rt == NULL) return;
    task *t = task_new(T_STOP, 0);
    if (t) submit(rt, t, -1, NULL), task_unref(t);
    /* the node closes on the loop; then the loop runs out of work */
    pthread_join(rt->thread, NULL);
    uv_walk(&rt->loop, close_handle, NULL);
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    uv_loop_close(&rt->loop);
    pthread_mutex_lock(&rt->janitor_mu);
    while (rt->janitors > 0) pthread_cond_wait(&rt->janitor_cv, &rt->janitor_mu);
    pthread_mutex_unlock(&rt->janitor_mu);
    while (rt->colls) {
        vx_collection *c = rt->colls;
        rt->colls = c->next;
        for (uint32_t i = 0; i < c->nshards; i++)
            if (c->shards[i].opened) {
                stop_checkpoint(c, i);
                vx_shard_close(c->shards[i].fsm.shard);
                vx_shard_fsm_destroy(&c->shards[i].fsm);
            }
        collection_free(c);
    }
    vx_pd_state_free(rt->pd_st);
    vx_workpool_free(rt->pool);
    free(rt);
}

bool vx_runtime_ready(vx_runtime *rt) { return atomic_load(&rt->ready); }

int vx_runtime_wait_ready(vx_runtime *rt, int timeout_ms)
{
    for (int waited = 0; !atomic_load(&rt->ready); waited += 5) {
        if (waited >= timeout_ms) return VX_ESTATE;
        usleep(5000);
    }
    return 0;
}

/* ---- collection operations ------------------------------------------------------------- */

static int catalog_propose_msg(vx_runtime *rt, const Vxpd__Command *cmd, int *status, char *msg,
                               size_t msglen);

static int catalog_propose(vx_runtime *rt, const Vxpd__Command *cmd, int *status)
{
    return catalog_propose_msg(rt, cmd, status, NULL, 0);
}

int vx_rt_catalog_change(vx_runtime *rt, const Vxpd__Command *cmd, char *errbuf)
{
    switch (cmd->cmd_case) {
    case VXPD__COMMAND__CMD_PUT_USER:
    case VXPD__COMMAND__CMD_DELETE_USER:
    case VXPD__COMMAND__CMD_PUT_API_KEY:
    case VXPD__COMMAND__CMD_DELETE_API_KEY:
    case VXPD__COMMAND__CMD_REVOKE_TOKENS: break;
    default: return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "not a credential command");
    }
    int status = 0;
    char msg[200] = "";
    int rc = catalog_propose_msg(rt, cmd, &status, msg, sizeof msg);
    if (rc != 0) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "the catalog did not accept the change");
    if (status != 0) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, status, "%s", msg);
    return 0;
}

static int catalog_propose_msg(vx_runtime *rt, const Vxpd__Command *cmd, int *status, char *msg,
                               size_t msglen)
{
    task *t = task_new(T_CATALOG, PD_GID);
    if (t == NULL) return VX_ENOMEM;
    struct raft_buffer b;
    if (vx_pd_entry(cmd, &b) != 0) {
        free(t);
        return VX_ENOMEM;
    }
    t->buf = b.base;
    t->len = b.len;
    t->rt = rt;
    int rc = submit(rt, t, 30000, status);
    if (msg && msglen) { /* the task is done (or timed out: then msg stays empty) */
        pthread_mutex_lock(&t->mu);
        snprintf(msg, msglen, "%s", t->done ? t->msg : "");
        pthread_mutex_unlock(&t->mu);
    }
    task_unref(t);
    return rc;
}

static int wait_collection_ready(vx_runtime *rt, const char *name, int timeout_ms)
{
    for (int waited = 0;; waited += 5) {
        vx_collection *c = vx_rt_collection_get(rt, name);
        bool ready = c != NULL;
        for (uint32_t i = 0; c && i < c->nshards && ready; i++)
            ready = atomic_load(&c->shards[i].leads);
        if (c) vx_rt_collection_put(c);
        if (ready) return 0;
        if (waited >= timeout_ms) return VX_ESTATE;
        usleep(5000);
    }
}

int vx_rt_create_collection(vx_runtime *rt, const char *name, const vx_collection_config *cfg,
                            char *errbuf)
{
    if (!vx_collection_name_ok(name))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "bad collection name");
    uint64_t self = atomic_load(&rt->self_worker);
    if (self == 0) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_ESTATE, "the catalog is not ready yet");
    uint64_t placement[VX_RT_MAX_SHARDS];
    for (uint32_t i = 0; i < cfg->shard_number; i++) placement[i] = self;
    char *body = vx_collection_config_body(cfg);
    if (body == NULL) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_ENOMEM, "out of memory");
    Vxpd__CmdCreateCollection cc = VXPD__CMD_CREATE_COLLECTION__INIT;
    cc.name = (char *)name;
    cc.config_json = body;
    cc.shard_count = cfg->shard_number;
    cc.replication_factor = 1; /* one process holds every shard */
    cc.n_placement = cfg->shard_number;
    cc.placement = placement;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_CREATE_COLLECTION;
    cmd.create_collection = &cc;
    int status = 0, rc = catalog_propose(rt, &cmd, &status);
    free(body);
    if (rc != 0) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "the catalog did not accept the change");
    if (status == VX_EEXISTS)
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EEXISTS, "Collection `%s` already exists!", name);
    if (status != 0) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, status, "refused: %s", vx_strerror(status));
    if (wait_collection_ready(rt, name, 30000) != 0)
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_ESTATE, "the collection's shards did not start");
    return 0;
}

int vx_rt_delete_collection(vx_runtime *rt, const char *name, char *errbuf)
{
    if (!vx_collection_name_ok(name)) return VX_ENOTFOUND;
    Vxpd__CmdDeleteCollection dc = VXPD__CMD_DELETE_COLLECTION__INIT;
    dc.name = (char *)name;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_DELETE_COLLECTION;
    cmd.delete_collection = &dc;
    int status = 0, rc = catalog_propose(rt, &cmd, &status);
    if (rc != 0) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "the catalog did not accept the change");
    return status;
}

int vx_rt_update_collection(vx_runtime *rt, const char *name, const vx_collection_config *cfg,
                            char *errbuf)
{
    char *body = vx_collection_config_body(cfg);
    if (body == NULL) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_ENOMEM, "out of memory");
    Vxpd__CmdUpdateCollection uc = VXPD__CMD_UPDATE_COLLECTION__INIT;
    uc.name = (char *)name;
    uc.config_json = body;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_UPDATE_COLLECTION;
    cmd.update_collection = &uc;
    int status = 0, rc = catalog_propose(rt, &cmd, &status);
    free(body);
    if (rc != 0) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "the catalog did not accept the change");
    return status;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int vx_rt_list_collections(vx_runtime *rt, char ***names, size_t *n)
{
    pthread_rwlock_rdlock(&rt->coll_lock);
    size_t count = 0;
    for (vx_collection *c = rt->colls; c; c = c->next) count++;
    char **v = calloc(count ? count : 1, sizeof(char *));
    size_t i = 0;
    for (vx_collection *c = rt->colls; v && c; c = c->next) v[i++] = strdup(c->name);
    pthread_rwlock_unlock(&rt->coll_lock);
    if (v == NULL) return VX_ENOMEM;
    qsort(v, count, sizeof(char *), name_cmp);
    *names = v;
    *n = count;
    return 0;
}

vx_collection *vx_rt_collection_get(vx_runtime *rt, const char *name)
{
    pthread_rwlock_rdlock(&rt->coll_lock);
    vx_collection *c = find_locked(rt, name);
    if (c) atomic_fetch_add(&c->refs, 1);
    pthread_rwlock_unlock(&rt->coll_lock);
    return c;
}

void vx_rt_collection_put(vx_collection *c)
{
    if (c) atomic_fetch_sub(&c->refs, 1);
}

const char *vx_collection_name(const vx_collection *c) { return c->name; }
const vx_collection_config *vx_collection_get_config(const vx_collection *c) { return &c->cfg; }
uint32_t vx_collection_shards(const vx_collection *c) { return c->nshards; }

uint32_t vx_collection_route(const vx_collection *c, const vx_point_id *id)
{
    return (uint32_t)(vx_id_hash(id) % c->nshards);
}

vx_shard *vx_collection_shard_acquire(vx_collection *c, uint32_t i)
{
    return vx_shard_fsm_acquire(&c->shards[i].fsm);
}

void vx_collection_shard_release(vx_collection *c, uint32_t i)
{
    vx_shard_fsm_release(&c->shards[i].fsm);
}

int vx_collection_propose(vx_collection *c, uint32_t i, uint8_t *cmd, size_t len, int timeout_ms,
                          int *status)
{
    *status = 0;
    if (atomic_load(&c->dead)) {
        free(cmd);
        return VX_ENOTFOUND;
    }
    /* backpressure: while the index is far behind, writers wait (bounded) */
    vx_shard *sh = vx_collection_shard_acquire(c, i);
    (void)vx_shard_wait_backlog(sh, timeout_ms); /* full after it: proposed anyway, as before */
    vx_collection_shard_release(c, i);
    task *t = task_new(T_PROPOSE, c->shards[i].gid);
    if (t == NULL) {
        free(cmd);
        return VX_ENOMEM;
    }
    t->buf = cmd;
    t->len = len;
    t->shard = &c->shards[i];
    t->rt = c->rt;
    int rc = submit(c->rt, t, timeout_ms, status);
    task_unref(t);
    return rc;
}

int vx_collection_barrier(vx_collection *c, uint32_t i, int timeout_ms)
{
    task *t = task_new(T_BARRIER, c->shards[i].gid);
    if (t == NULL) return VX_ENOMEM;
    int rc = submit(c->rt, t, timeout_ms, NULL);
    task_unref(t);
    return rc;
}

int vx_collection_shard_stats(vx_collection *c, uint32_t i, vx_shard_stats *out)
{
    rt_shard *s = &c->shards[i];
    vx_shard *sh = vx_collection_shard_acquire(c, i);
    out->gid = s->gid;
    out->applied = vx_shard_applied(sh);
    out->points = vx_shard_count(sh);
    out->backlog = vx_shard_backlog(sh);
    vx_collection_shard_release(c, i);
    out->leader = atomic_load(&s->leads);
    out->last_commit_seconds = (double)atomic_load(&s->commit_ns) / 1e9;
    return 0;
}
