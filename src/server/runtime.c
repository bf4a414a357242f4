/*
 * runtime.c - see runtime.h.
 *
 * The catalog is a state machine of its own (a Raft group, id 1): its
 * entries are small JSON commands ({"op":"create"|"delete"|"update", ...}),
 * applied into an LMDB store as definitions "coll:<name>" -> {cfg, gids}
 * beside "next_gid".  Group ids of shards come from next_gid at apply time,
 * so every replica of the catalog assigns the same ones.  Applying a create
 * opens the collection's shard groups on this node (one voter each: this
 * node); applying a delete closes them and removes their data.
 */
#define _GNU_SOURCE
#include "server/runtime.h"

#include "base/err.h"
#include "base/fsutil.h"
#include "base/pointid.h"
#include "base/workpool.h"
#include "raft/node.h"
#include "raft/shard_fsm.h"
#include "store/store.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CATALOG_GID 1
#define FIRST_SHARD_GID 1000
#define SELF_ID 1
#define CAT_SNAP_MAGIC 0x5658434154534e31ull /* "VXCATSN1" */

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
    _Atomic int refs;
    struct task *next;
} task;

struct vx_runtime {
    char dir[400];
    char address[64];
    uint32_t max_backlog;
    void (*observe_commit)(void *ctx, double seconds);
    void *observe_ctx;
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
    /* catalog */
    vx_store *cat;
    struct raft_fsm cat_fsm;
    vx_group *cat_group;
    uint64_t next_gid;
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
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(body, "optimizers_config");
    if (cJSON_IsObject(opt)) {
        uint64_t it = cfg->indexing_threshold;
        rc = get_uint(opt, "indexing_threshold", 0, UINT64_MAX >> 12, &it, errbuf,
                      "optimizers_config.");
        if (rc != 0) return rc;
        cfg->indexing_threshold = it;
    }
    return 0;
}

int vx_collection_config_patch(vx_collection_config *cfg, const cJSON *body, char *errbuf)
{
    if (!cJSON_IsObject(body))
        return vx_errf(errbuf, VX_RT_ERRMSG_LEN, VX_EINVAL, "the body must be a JSON object");
    vx_collection_config c = *cfg;
    int rc = parse_hnsw(cJSON_GetObjectItemCaseSensitive(body, "hnsw_config"), &c, errbuf);
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(body, "optimizers_config");
    if (rc == 0 && cJSON_IsObject(opt)) {
        uint64_t it = c.indexing_threshold;
        rc = get_uint(opt, "indexing_threshold", 0, UINT64_MAX >> 12, &it, errbuf,
                      "optimizers_config.");
        c.indexing_threshold = it;
    }
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

/* The stored form of a configuration (catalog entries and definitions). */
static cJSON *config_to_json(const vx_collection_config *c)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "dim", c->dim);
    cJSON_AddNumberToObject(j, "metric", c->metric);
    cJSON_AddNumberToObject(j, "shard_number", c->shard_number);
    cJSON_AddNumberToObject(j, "replication_factor", c->replication_factor);
    cJSON_AddNumberToObject(j, "write_consistency_factor", c->write_consistency_factor);
    cJSON_AddBoolToObject(j, "on_disk_payload", c->on_disk_payload);
    cJSON_AddNumberToObject(j, "m", c->hnsw_m);
    cJSON_AddNumberToObject(j, "ef_construct", c->hnsw_ef_construct);
    cJSON_AddNumberToObject(j, "full_scan_threshold", c->full_scan_threshold);
    cJSON_AddBoolToObject(j, "int8", c->int8);
    cJSON_AddNumberToObject(j, "quantile", c->quantile);
    cJSON_AddBoolToObject(j, "always_ram", c->always_ram);
    cJSON_AddNumberToObject(j, "indexing_threshold", (double)c->indexing_threshold);
    return j;
}

static double num(const cJSON *j, const char *k, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static int config_from_json(const cJSON *j, vx_collection_config *c)
{
    memset(c, 0, sizeof(*c));
    c->dim = (uint32_t)num(j, "dim", 0);
    c->metric = (vx_metric)(int)num(j, "metric", 0);
    c->shard_number = (uint32_t)num(j, "shard_number", 1);
    c->replication_factor = (uint32_t)num(j, "replication_factor", 1);
    c->write_consistency_factor = (uint32_t)num(j, "write_consistency_factor", 1);
    c->on_disk_payload = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "on_disk_payload"));
    c->hnsw_m = (uint32_t)num(j, "m", 16);
    c->hnsw_ef_construct = (uint32_t)num(j, "ef_construct", 100);
    c->full_scan_threshold = (uint32_t)num(j, "full_scan_threshold", 10000);
    c->int8 = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "int8"));
    c->quantile = (float)num(j, "quantile", 0);
    c->always_ram = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "always_ram"));
    c->indexing_threshold = (uint64_t)num(j, "indexing_threshold", 10000);
    bool ok = c->dim >= 1 && c->dim <= VX_MAX_DIM && c->shard_number >= 1 &&
              c->shard_number <= VX_RT_MAX_SHARDS && c->hnsw_m >= 2;
    return ok ? 0 : VX_ECORRUPT;
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
        vx_shard_config sc = {.max_backlog = rt->max_backlog};
        vx_collection_index_config(cfg, &sc.index);
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

/* ---- the catalog state machine --------------------------------------------------------- */

static int def_name(const char *coll, char *out, size_t n)
{
    int len = snprintf(out, n, "coll:%s", coll);
    return len < 0 || (size_t)len >= n ? VX_EINVAL : 0;
}

static int load_next_gid(vx_store_txn *t, const char *name, const void *val, size_t len)
{
    (void)t;
    (void)name;
    (void)val;
    (void)len;
    return 0;
}

typedef struct def_scan {
    vx_runtime *rt;
    bool open_collections;
    char *err;
    int rc;
} def_scan;

static int def_cb(void *ctx, const char *name, const void *val, size_t len)
{
    def_scan *d = ctx;
    if (strcmp(name, "next_gid") == 0 && len == 8) {
        memcpy(&d->rt->next_gid, val, 8);
        return 0;
    }
    if (strncmp(name, "coll:", 5) != 0 || !d->open_collections) return 0;
    cJSON *j = cJSON_ParseWithLength(val, len);
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(j, "cfg");
    const cJSON *gj = cJSON_GetObjectItemCaseSensitive(j, "gids");
    vx_collection_config cfg;
    int rc = j && cJSON_IsArray(gj) ? config_from_json(cj, &cfg) : VX_ECORRUPT;
    uint64_t gids[VX_RT_MAX_SHARDS];
    if (rc == 0 && (uint32_t)cJSON_GetArraySize(gj) != cfg.shard_number) rc = VX_ECORRUPT;
    for (uint32_t i = 0; rc == 0 && i < cfg.shard_number; i++)
        gids[i] = (uint64_t)cJSON_GetArrayItem(gj, (int)i)->valuedouble;
    cJSON_Delete(j);
    if (rc != 0) {
        fprintf(stderr, "catalog: definition %s is unreadable; skipped\n", name);
        return 0;
    }
    vx_collection *c;
    char err[VX_RT_ERRMSG_LEN];
    rc = collection_open(d->rt, name + 5, &cfg, gids, &c, err);
    if (rc != 0) {
        fprintf(stderr, "catalog: collection %s cannot open: %s\n", name + 5, err);
        return 0;
    }
    add_collection(d->rt, c);
    return 0;
}

static int cat_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    vx_runtime *rt = fsm->data;
    struct raft *r = vx_group_raft(rt->cat_group);
    uint64_t index = r->last_applied + 1;
    uint64_t applied = 0;
    int status = 0;
    vx_store_applied(rt->cat, &applied, NULL);
    if (index <= applied) goto done; /* replayed: the store has it */
    size_t len = buf->len;
    while (len > 0 && ((const char *)buf->base)[len - 1] == '\0') len--; /* padding */
    cJSON *cmd = cJSON_ParseWithLength(buf->base, len);
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(cmd, "op");
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cmd, "name");
    char dn[300];
    vx_collection_config cfg;
    if (!cJSON_IsString(op) || !cJSON_IsString(nm) || !vx_collection_name_ok(nm->valuestring) ||
        def_name(nm->valuestring, dn, sizeof dn) != 0) {
        status = VX_EINVAL;
        cJSON_Delete(cmd);
        goto record;
    }
    vx_store_txn *rt_txn;
    int rc = vx_store_rbegin(rt->cat, &rt_txn);
    bool exists = false;
    if (rc == 0) {
        exists = find_locked(rt, nm->valuestring) != NULL; /* the loop is the only writer */
        vx_store_rend(rt_txn);
    }
    uint64_t gids[VX_RT_MAX_SHARDS];
    vx_store_txn *t;
    rc = vx_store_wbegin(rt->cat, &t);
    if (rc != 0) goto fatal;
    if (strcmp(op->valuestring, "create") == 0 || strcmp(op->valuestring, "update") == 0) {
        bool create = op->valuestring[0] == 'c';
        if (config_from_json(cJSON_GetObjectItemCaseSensitive(cmd, "cfg"), &cfg) != 0) {
            status = VX_EINVAL;
        } else if (create && exists) {
            status = VX_EEXISTS;
        } else if (!create && !exists) {
            status = VX_ENOTFOUND;
        } else {
            cJSON *def = cJSON_CreateObject();
            cJSON_AddItemToObject(def, "cfg", config_to_json(&cfg));
            cJSON *ga = cJSON_AddArrayToObject(def, "gids");
            if (create) {
                for (uint32_t i = 0; i < cfg.shard_number; i++) {
                    gids[i] = rt->next_gid++;
                    cJSON_AddItemToArray(ga, cJSON_CreateNumber((double)gids[i]));
                }
            } else {
                pthread_rwlock_rdlock(&rt->coll_lock);
                vx_collection *c = find_locked(rt, nm->valuestring);
                cfg.shard_number = c->nshards; /* shape is fixed at creation */
                cfg.dim = c->cfg.dim;
                cfg.metric = c->cfg.metric;
                for (uint32_t i = 0; i < c->nshards; i++)
                    cJSON_AddItemToArray(ga, cJSON_CreateNumber((double)c->shards[i].gid));
                pthread_rwlock_unlock(&rt->coll_lock);
            }
            char *text = cJSON_PrintUnformatted(def);
            cJSON_Delete(def);
            rc = text ? vx_store_def_put(t, dn, text, strlen(text)) : VX_ENOMEM;
            free(text);
            if (rc == 0 && create) rc = vx_store_def_put(t, "next_gid", &rt->next_gid, 8);
            if (rc != 0) {
                vx_store_abort(t);
                cJSON_Delete(cmd);
                goto fatal;
            }
        }
    } else if (strcmp(op->valuestring, "delete") == 0) {
        if (!exists) {
            status = VX_ENOTFOUND;
        } else if ((rc = vx_store_def_del(t, dn)) != 0) {
            vx_store_abort(t);
            cJSON_Delete(cmd);
            goto fatal;
        }
    } else {
        status = VX_EINVAL;
    }
    rc = vx_store_set_applied(t, index, r->current_term);
    if (rc == 0) rc = vx_store_commit(t);
    else vx_store_abort(t);
    if (rc != 0) {
        cJSON_Delete(cmd);
        goto fatal;
    }
    /* the effects on this node, now that the change is durable */
    if (status == 0 && op->valuestring[0] == 'c') {
        vx_collection *c;
        char err[VX_RT_ERRMSG_LEN];
        if (collection_open(rt, nm->valuestring, &cfg, gids, &c, err) == 0)
            add_collection(rt, c);
        else
            fprintf(stderr, "catalog: collection %s cannot open: %s\n", nm->valuestring, err);
    } else if (status == 0 && op->valuestring[0] == 'u') {
        pthread_rwlock_wrlock(&rt->coll_lock);
        vx_collection *c = find_locked(rt, nm->valuestring);
        if (c) c->cfg = cfg;
        pthread_rwlock_unlock(&rt->coll_lock);
    } else if (status == 0 && op->valuestring[0] == 'd') {
        collection_teardown(rt, nm->valuestring);
    }
    cJSON_Delete(cmd);
    goto done;
record:
    if (vx_store_wbegin(rt->cat, &t) != 0) goto fatal;
    if (vx_store_set_applied(t, index, r->current_term) != 0 || vx_store_commit(t) != 0) goto fatal;
done:
    *result = (void *)(uintptr_t)((index << 8) | (uint8_t)(int8_t)status);
    return 0;
fatal:
    fprintf(stderr, "catalog: apply of entry %" PRIu64 " failed: %s; stopping\n", index,
            vx_store_errmsg(rt->cat));
    return RAFT_IOERR;
}

/* The catalog is small: its snapshot carries every definition. */
static int cat_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    vx_runtime *rt = fsm->data;
    if (vx_store_sync(rt->cat) != 0) return RAFT_IOERR;
    uint64_t applied = 0;
    vx_store_applied(rt->cat, &applied, NULL);
    /* a descriptor of the applied index; the definitions are in the store */
    struct raft_buffer *b = raft_malloc(sizeof(*b));
    uint8_t *d = raft_malloc(16);
    if (b == NULL || d == NULL) {
        raft_free(b);
        raft_free(d);
        return RAFT_NOMEM;
    }
    uint64_t magic = CAT_SNAP_MAGIC;
    memcpy(d, &magic, 8);
    memcpy(d + 8, &applied, 8);
    b->base = d;
    b->len = 16;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

static int cat_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    vx_runtime *rt = fsm->data;
    uint64_t magic = 0, index = 0, applied = 0;
    if (buf->len == 16) {
        memcpy(&magic, buf->base, 8);
        memcpy(&index, (uint8_t *)buf->base + 8, 8);
    }
    raft_free(buf->base);
    if (magic != CAT_SNAP_MAGIC) return RAFT_MALFORMED;
    vx_store_applied(rt->cat, &applied, NULL);
    if (index <= applied) return 0; /* a restart: the store covers it */
    fprintf(stderr, "catalog: snapshot %" PRIu64 " is ahead of the store (%" PRIu64
                    "): a catalog replica cannot be restored from a peer yet\n",
            index, applied);
    return RAFT_IOERR;
}

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

static void ready_cb(uv_timer_t *timer)
{
    vx_runtime *rt = timer->data;
    bool ready = group_leads(rt->cat_group);
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
    rt->next_gid = FIRST_SHARD_GID;
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
    vx_store_options so = {.sync_each_commit = true}; /* rare, and must not roll back */
    rc = vx_store_open(path, &so, &rt->cat, err);
    if (rc != 0) {
        vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "catalog: %s", err);
        goto fail;
    }
    uv_loop_init(&rt->loop);
    snprintf(path, sizeof path, "%s/node", rt->dir);
    rc = vx_node_new(&rt->loop, rt->address, path, &rt->node, err);
    if (rc != 0) {
        vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "%s", err);
        uv_run(&rt->loop, UV_RUN_NOWAIT);
        goto fail_loop;
    }
    /* collections first (their groups exist before the catalog replays) */
    vx_store_txn *t;
    rc = vx_store_rbegin(rt->cat, &t);
    if (rc == 0) {
        def_scan ds = {rt, true, NULL, 0};
        rc = vx_store_def_iterate(t, def_cb, &ds);
        vx_store_rend(t);
    }
    (void)load_next_gid;
    if (rc != 0) {
        vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "catalog: %s", vx_store_errmsg(rt->cat));
        goto fail_node;
    }
    gc_dirs(rt);
    rt->cat_fsm.version = 1;
    rt->cat_fsm.data = rt;
    rt->cat_fsm.apply = cat_apply;
    rt->cat_fsm.snapshot = cat_snapshot;
    rt->cat_fsm.restore = cat_restore;
    rc = vx_group_new(rt->node, CATALOG_GID, SELF_ID, &rt->cat_fsm, NULL, &rt->cat_group, err);
    if (rc != 0) {
        vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "catalog group: %s", err);
        goto fail_node;
    }
    raft_id id = SELF_ID;
    const char *addr = rt->address;
    rc = vx_group_bootstrap(rt->cat_group, 1, &id, &addr);
    if (rc == 0) rc = vx_group_start(rt->cat_group);
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
    if (rt->cat) vx_store_close(rt->cat);
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
    vx_store_close(rt->cat);
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

static int catalog_propose(vx_runtime *rt, cJSON *cmd, int *status)
{
    char *text = cJSON_PrintUnformatted(cmd);
    if (text == NULL) return VX_ENOMEM;
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    task *t = task_new(T_CATALOG, CATALOG_GID);
    uint8_t *buf = t ? calloc(1, padded) : NULL;
    if (buf == NULL) {
        free(text);
        free(t);
        return VX_ENOMEM;
    }
    memcpy(buf, text, n);
    free(text);
    t->buf = buf;
    t->len = padded;
    int rc = submit(rt, t, 30000, status);
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
    cJSON *cmd = cJSON_CreateObject();
    cJSON_AddStringToObject(cmd, "op", "create");
    cJSON_AddStringToObject(cmd, "name", name);
    cJSON_AddItemToObject(cmd, "cfg", config_to_json(cfg));
    int status = 0, rc = catalog_propose(rt, cmd, &status);
    cJSON_Delete(cmd);
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
    cJSON *cmd = cJSON_CreateObject();
    cJSON_AddStringToObject(cmd, "op", "delete");
    cJSON_AddStringToObject(cmd, "name", name);
    int status = 0, rc = catalog_propose(rt, cmd, &status);
    cJSON_Delete(cmd);
    if (rc != 0) return vx_errf(errbuf, VX_RT_ERRMSG_LEN, rc, "the catalog did not accept the change");
    return status;
}

int vx_rt_update_collection(vx_runtime *rt, const char *name, const vx_collection_config *cfg,
                            char *errbuf)
{
    cJSON *cmd = cJSON_CreateObject();
    cJSON_AddStringToObject(cmd, "op", "update");
    cJSON_AddStringToObject(cmd, "name", name);
    cJSON_AddItemToObject(cmd, "cfg", config_to_json(cfg));
    int status = 0, rc = catalog_propose(rt, cmd, &status);
    cJSON_Delete(cmd);
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
    for (int waited = 0; vx_shard_backlog_full(sh) && waited < timeout_ms; waited++) usleep(1000);
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
