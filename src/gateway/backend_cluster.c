/*
 * backend_cluster.c - the API's backend over a cluster (server/backend.h):
 * `vectron gateway`.  Collections are the placement driver's; a shard
 * operation is an internal RPC to the worker that leads the shard (or to
 * any replica for reads that allow it), through the cluster client
 * (cluster.h: topology cache, pooled connections, redirects, retries,
 * breakers).
 *
 * An open collection holds a reference to the topology snapshot it was
 * opened with and the collection's parsed configuration, so one request
 * sees one consistent routing table even if a refresh happens meanwhile.
 * Reads go to shard leaders: a search after an acknowledged write sees it.
 */
#include "gateway/backend_cluster.h"

#include "base/log.h"
#include "gateway/auth_sync.h"

#include "base/err.h"
#include "pd/pdrpc.h"
#include "shard/pindex.h"
#include "worker.pb-c.h"
#include "worker/worker.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CALL_TIMEOUT_MS 10000

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
#define READY_TIMEOUT_MS 30000
#define SCAN_PAGE 1000

struct vx_bcol {
    vx_cluster *cl;
    vx_topo *topo;
    const Vxpd__Collection *col;
    vx_collection_config cfg;
    bool strong[VX_RT_MAX_SHARDS]; /* a barrier was asked for: linearizable reads */
};

static int c_list(void *self, char ***names, size_t *n)
{
    char err[VX_CLUSTER_ERRMSG_LEN];
    vx_topo *t = vx_cluster_topology(self, err);
    if (t == NULL) return VX_EIO;
    size_t k = t->t->n_collections;
    char **v = calloc(k ? k : 1, sizeof *v);
    if (v == NULL) {
        vx_topo_put(t);
        return VX_ENOMEM;
    }
    for (size_t i = 0; i < k; i++) {
        v[i] = strdup(t->t->collections[i]->name);
        if (v[i] == NULL) {
            for (size_t j = 0; j < i; j++) free(v[j]);
            free(v);
            vx_topo_put(t);
            return VX_ENOMEM;
        }
    }
    vx_topo_put(t);
    *names = v;
    *n = k;
    return 0;
}

/* Every shard of the collection has a leader that answers (so the first
 * write does not wait for elections), within READY_TIMEOUT_MS. */
static int wait_ready(vx_cluster *cl, const char *name, char *errbuf)
{
    for (int waited = 0; waited < READY_TIMEOUT_MS; waited += 50) {
        vx_topo *t = vx_cluster_topology(cl, errbuf);
        const Vxpd__Collection *c = t ? vx_topo_collection(t, name) : NULL;
        bool ready = c != NULL;
        for (size_t i = 0; ready && i < c->n_shards; i++) {
            Vxw__ShardInfoRequest r = VXW__SHARD_INFO_REQUEST__INIT;
            r.group_id = c->shards[i]->group_id;
            ProtobufCMessage *resp = NULL;
            char err[VX_CLUSTER_ERRMSG_LEN];
            ready = vx_cluster_shard_call(cl, r.group_id, VX_W_SHARD_INFO, &r.base, &vxw__shard_info__descriptor,
                                          &resp, true, 1000, err) == 0;
            if (resp) protobuf_c_message_free_unpacked(resp, NULL);
        }
        if (t) vx_topo_put(t);
        if (ready) return 0;
        vx_cluster_invalidate(cl);
        usleep(50000);
    }
    return vx_errf(errbuf, VX_BACKEND_ERRMSG_LEN, VX_ESTATE, "collection %s: shards without a leader after %d s",
                   name, READY_TIMEOUT_MS / 1000);
}

static int c_create(void *self, const char *name, const vx_collection_config *cfg, const char *body,
                    char *errbuf)
{
    (void)cfg;
    /* shard_number / replication_factor only when the client gave them:
     * otherwise the PD's defaults apply */
    cJSON *b = cJSON_Parse(body);
    const cJSON *sn = cJSON_GetObjectItemCaseSensitive(b, "shard_number");
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(b, "replication_factor");
    char rid[33];
    vx_pd_request_id(rid);
    Vxpd__CreateCollectionRequest r = VXPD__CREATE_COLLECTION_REQUEST__INIT;
    r.name = (char *)name;
    r.config_json = (char *)body;
    r.shard_count = cJSON_IsNumber(sn) ? (uint32_t)sn->valuedouble : 0;
    r.replication_factor = cJSON_IsNumber(rf) ? (uint32_t)rf->valuedouble : 0;
    r.request_id = rid;
    cJSON_Delete(b);
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_pd_call(self, VX_PD_CREATE_COLLECTION, &r.base, &vxpd__collection_response__descriptor,
                                &resp, CALL_TIMEOUT_MS, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (rc != 0) return vx_errf(errbuf, VX_BACKEND_ERRMSG_LEN, rc, "%.240s", err);
    return wait_ready(self, name, errbuf);
}

static int c_update(void *self, const char *name, const vx_collection_config *cfg, char *errbuf)
{
    char *body = vx_collection_config_body(cfg);
    if (body == NULL) return vx_errf(errbuf, VX_BACKEND_ERRMSG_LEN, VX_ENOMEM, "out of memory");
    Vxpd__UpdateCollectionRequest r = VXPD__UPDATE_COLLECTION_REQUEST__INIT;
    r.name = (char *)name;
    r.config_json = body;
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_pd_call(self, VX_PD_UPDATE_COLLECTION, &r.base, &vxpd__empty__descriptor, &resp,
                                CALL_TIMEOUT_MS, err);
    free(body);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (rc != 0) return vx_errf(errbuf, VX_BACKEND_ERRMSG_LEN, rc, "%.240s", err);
    return 0;
}

static int c_drop(void *self, const char *name, char *errbuf)
{
    Vxpd__NameRequest r = VXPD__NAME_REQUEST__INIT;
    r.name = (char *)name;
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_pd_call(self, VX_PD_DELETE_COLLECTION, &r.base, &vxpd__empty__descriptor, &resp,
                                CALL_TIMEOUT_MS, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (rc != 0) return vx_errf(errbuf, VX_BACKEND_ERRMSG_LEN, rc, "%.240s", err);
    return 0;
}

static vx_bcol *c_open(void *self, const char *name, int *why)
{
    char err[VX_CLUSTER_ERRMSG_LEN];
    *why = VX_ESTATE;
    vx_topo *t = vx_cluster_topology(self, err);
    if (t == NULL) return NULL;
    const Vxpd__Collection *c = vx_topo_collection(t, name);
    if (c == NULL) {
        /* not in this snapshot: a collection created through another
         * gateway since, or none; one fresh topology decides */
        vx_topo_put(t);
        if ((t = vx_cluster_topology_fresh(self, err)) == NULL) return NULL; /* unknown: VX_ESTATE */
        c = vx_topo_collection(t, name);
    }
    *why = VX_ENOTFOUND;
    if (c == NULL || c->n_shards == 0 || c->n_shards > VX_RT_MAX_SHARDS) {
        vx_topo_put(t);
        return NULL;
    }
    vx_bcol *b = calloc(1, sizeof *b);
    cJSON *body = cJSON_Parse(c->config_json);
    char cerr[VX_RT_ERRMSG_LEN];
    int rc = b ? vx_collection_config_parse(body, &b->cfg, cerr) : VX_ENOMEM;
    cJSON_Delete(body);
    if (rc != 0) {
        free(b);
        vx_topo_put(t);
        return NULL;
    }
    b->cfg.shard_number = c->shard_count;
    b->cfg.replication_factor = c->replication_factor;
    b->cl = self;
    b->topo = t;
    b->col = c;
    return b;
}

static void c_close(vx_bcol *b)
{
    if (b == NULL) return;
    vx_topo_put(b->topo);
    free(b);
}

static bool c_ready(void *self)
{
    char err[VX_CLUSTER_ERRMSG_LEN];
    vx_topo *t = vx_cluster_topology(self, err);
    if (t) vx_topo_put(t);
    return t != NULL;
}

static const vx_collection_config *c_config(vx_bcol *b) { return &b->cfg; }
static uint32_t c_nshards(vx_bcol *b) { return (uint32_t)b->col->n_shards; }
static uint32_t c_route(vx_bcol *b, const vx_point_id *id) { return (uint32_t)(vx_id_hash(id) % b->col->n_shards); }
static uint64_t gid_of(vx_bcol *b, uint32_t i) { return b->col->shards[i]->group_id; }

static int c_propose(vx_bcol *b, uint32_t i, uint8_t *cmd, size_t len, int timeout_ms, int *status,
                     char *errbuf)
{
    Vxw__WriteRequest r = VXW__WRITE_REQUEST__INIT;
    r.group_id = gid_of(b, i);
    r.command.data = cmd;
    r.command.len = len;
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    /* A shard whose index is far behind refuses writes before proposing
     * them (VX_EFULL): wait and send again, as vectron serve's writers wait,
     * within the write's deadline.  Nothing was applied, so this is safe. */
    long long deadline = mono_ms() + timeout_ms;
    int rc, pause = 5;
    for (;;) {
        long long left = deadline - mono_ms();
        rc = vx_cluster_shard_call(b->cl, r.group_id, VX_W_WRITE, &r.base, &vxw__write_response__descriptor, &resp,
                                   true, (int)(left > 1 ? left : 1), err);
        if (rc != VX_EFULL || mono_ms() + pause >= deadline) break;
        usleep((useconds_t)pause * 1000);
        if (pause < 100) pause *= 2;
    }
    free(cmd);
    *status = 0;
    if (rc == 0) {
        *status = ((Vxw__WriteResponse *)resp)->status;
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
    }
    if (errbuf) snprintf(errbuf, VX_BACKEND_ERRMSG_LEN, "%.240s", err);
    return rc;
}

static int c_barrier(vx_bcol *b, uint32_t i, int timeout_ms)
{
    (void)timeout_ms;
    b->strong[i] = true; /* the shard's next read is linearizable (a Raft barrier on its leader) */
    return 0;
}

static int c_search(vx_bcol *b, uint32_t i, const float *q, uint32_t k, const vx_search_params *p,
                    const vx_bfilter *f, const vx_read_opts *ro, vx_shard_hit *out, uint32_t *n)
{
    bool any = ro && ro->any_replica && !b->strong[i];
    int timeout = ro && ro->timeout_ms > 0 ? ro->timeout_ms : CALL_TIMEOUT_MS;
    Vxw__SearchRequest r = VXW__SEARCH_REQUEST__INIT;
    r.group_id = gid_of(b, i);
    r.vector = (float *)q;
    r.n_vector = b->cfg.dim;
    r.limit = k;
    r.ef = p ? p->ef : 0;
    r.exact = p && p->exact;
    r.filter_json = (char *)(f && f->json ? f->json : "");
    r.linearizable = b->strong[i];
    r.allow_follower = any;
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_shard_call(b->cl, r.group_id, VX_W_SEARCH, &r.base, &vxw__search_response__descriptor,
                                   &resp, !any, timeout, err);
    *n = 0;
    if (rc != 0) return rc;
    Vxw__SearchResponse *sr = (Vxw__SearchResponse *)resp;
    for (size_t j = 0; j < sr->n_hits && *n < k; j++) {
        if (vx_id_from_bytes(&out[*n].id, sr->hits[j]->id.data, sr->hits[j]->id.len) != 0) continue;
        out[*n].distance = sr->hits[j]->distance;
        out[*n].version = sr->hits[j]->version;
        (*n)++;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int c_get(vx_bcol *b, uint32_t i, const vx_point_id *id, float *vec, char **payload, uint64_t *version)
{
    Vxw__GetRequest r = VXW__GET_REQUEST__INIT;
    r.group_id = gid_of(b, i);
    r.id.data = (uint8_t *)id->b;
    r.id.len = id->len;
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_shard_call(b->cl, r.group_id, VX_W_GET, &r.base, &vxw__get_response__descriptor, &resp,
                                   true, CALL_TIMEOUT_MS, err);
    *payload = NULL;
    if (rc != 0) return rc;
    Vxw__GetResponse *g = (Vxw__GetResponse *)resp;
    if (!g->found) {
        protobuf_c_message_free_unpacked(resp, NULL);
        return VX_ENOTFOUND;
    }
    if (vec) {
        if (g->n_vector != b->cfg.dim) {
            protobuf_c_message_free_unpacked(resp, NULL);
            return VX_ECORRUPT;
        }
        memcpy(vec, g->vector, sizeof(float) * b->cfg.dim);
    }
    *payload = strdup(g->payload_json[0] ? g->payload_json : "{}");
    *version = g->version;
    protobuf_c_message_free_unpacked(resp, NULL);
    return *payload ? 0 : VX_ENOMEM;
}

static int c_scan_ids(vx_bcol *b, uint32_t i, const vx_point_id *start, const vx_bfilter *f, size_t limit,
                      vx_point_id *ids, size_t *n)
{
    *n = 0;
    vx_point_id cur;
    bool have = start != NULL;
    if (have) cur = *start;
    while (*n < limit) {
        Vxw__ScanRequest r = VXW__SCAN_REQUEST__INIT;
        r.group_id = gid_of(b, i);
        r.start_id.data = have ? cur.b : NULL;
        r.start_id.len = have ? cur.len : 0;
        r.filter_json = (char *)(f && f->json ? f->json : "");
        size_t want = limit - *n;
        r.limit = (uint32_t)(want < SCAN_PAGE ? want : SCAN_PAGE);
        ProtobufCMessage *resp = NULL;
        char err[VX_CLUSTER_ERRMSG_LEN];
        int rc = vx_cluster_shard_call(b->cl, r.group_id, VX_W_SCAN, &r.base, &vxw__scan_response__descriptor,
                                       &resp, true, CALL_TIMEOUT_MS, err);
        if (rc != 0) return rc;
        Vxw__ScanResponse *sr = (Vxw__ScanResponse *)resp;
        for (size_t j = 0; j < sr->n_points && *n < limit; j++)
            if (vx_id_from_bytes(&ids[*n], sr->points[j]->id.data, sr->points[j]->id.len) == 0) (*n)++;
        bool more = sr->next_id.len > 0 && vx_id_from_bytes(&cur, sr->next_id.data, sr->next_id.len) == 0;
        protobuf_c_message_free_unpacked(resp, NULL);
        if (!more) break;
        have = true;
    }
    return 0;
}

static int c_count(vx_bcol *b, uint32_t i, const vx_bfilter *f, uint64_t *n)
{
    Vxw__CountRequest r = VXW__COUNT_REQUEST__INIT;
    r.group_id = gid_of(b, i);
    r.filter_json = (char *)(f && f->json ? f->json : "");
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_shard_call(b->cl, r.group_id, VX_W_COUNT, &r.base, &vxw__count_response__descriptor, &resp,
                                   true, CALL_TIMEOUT_MS, err);
    *n = 0;
    if (rc != 0) return rc;
    *n = ((Vxw__CountResponse *)resp)->count;
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int c_stats(vx_bcol *b, uint32_t i, vx_bshard_stats *st)
{
    memset(st, 0, sizeof *st);
    Vxw__ShardInfoRequest r = VXW__SHARD_INFO_REQUEST__INIT;
    r.group_id = gid_of(b, i);
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_shard_call(b->cl, r.group_id, VX_W_SHARD_INFO, &r.base, &vxw__shard_info__descriptor, &resp,
                                   true, CALL_TIMEOUT_MS, err);
    if (rc != 0) return rc;
    Vxw__ShardInfo *si = (Vxw__ShardInfo *)resp;
    st->points = si->count;
    st->indexed = si->indexed;
    st->backlog = si->backlog;
    st->applied = si->applied;
    st->leader = si->leader;
    st->optimizing = si->optimizing;
    st->deleted = si->deleted;
    st->vacuums = si->vacuums;
    st->reclaimed = si->reclaimed;
    if (si->n_payload_indexes > 0) {
        st->pindex = calloc(si->n_payload_indexes, sizeof *st->pindex);
        if (st->pindex == NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
            return VX_ENOMEM;
        }
        for (size_t k = 0; k < si->n_payload_indexes; k++) {
            snprintf(st->pindex[k].field, sizeof st->pindex[k].field, "%s", si->payload_indexes[k]->field);
            st->pindex[k].type = vx_pidx_type_parse(si->payload_indexes[k]->type);
            st->pindex[k].points = si->payload_indexes[k]->points;
        }
        st->npindex = si->n_payload_indexes;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int c_auth_change(void *self, const struct Vxpd__Command *cmd, char *errbuf)
{
    ProtobufCMessage *resp = NULL;
    char err[VX_CLUSTER_ERRMSG_LEN];
    int rc = vx_cluster_pd_call(self, VX_PD_AUTH_CHANGE, &cmd->base, &vxpd__empty__descriptor, &resp,
                                CALL_TIMEOUT_MS, err);
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    if (rc != 0) return vx_errf(errbuf, VX_BACKEND_ERRMSG_LEN, rc, "%.240s", err);
    /* this gateway sees the change before it answers */
    vx_auth_sync *as = vx_cluster_auth(self);
    if (as && vx_auth_sync_now(as, err) != 0)
        vx_log(VX_LOG_WARN, "auth_sync_failed", "message=%s", err);
    return 0;
}

void vx_backend_cluster(vx_cluster *cl, vx_backend *out)
{
    *out = (vx_backend){
        .self = cl,
        .kind = "cluster",
        .list = c_list,
        .create = c_create,
        .update = c_update,
        .drop = c_drop,
        .open = c_open,
        .close = c_close,
        .ready = c_ready,
        .config = c_config,
        .nshards = c_nshards,
        .route = c_route,
        .propose = c_propose,
        .barrier = c_barrier,
        .search = c_search,
        .get = c_get,
        .scan_ids = c_scan_ids,
        .count = c_count,
        .stats = c_stats,
        .auth_change = c_auth_change,
    };
}
