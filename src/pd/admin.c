/*
 * admin.c - `vectron admin`: the placement driver's admin calls from a shell.
 *
 *   vectron admin --pd HOST:PORT[,HOST:PORT...] COMMAND [ARGS]
 *
 *   status                       leader, term, workers, collections, moves (JSON)
 *   shards COLLECTION            every replica asked directly: leader, term, applied, points
 *   topology                     the routing table gateways use (JSON)
 *   collections                  collection names
 *   create NAME [--shards N] [--replication N] [--config JSON]
 *   delete NAME
 *   index COLLECTION FIELD TYPE  record a payload index (keyword, integer, float, bool)
 *   unindex COLLECTION FIELD
 *   move GROUP FROM_WORKER TO_WORKER
 *   drain WORKER
 *   remove WORKER                (only once it holds no replicas)
 *
 * Output is JSON on stdout; errors go to stderr with exit status 1 (2 for
 * usage).  The cluster secret comes from VECTRON_CLUSTER_SECRET.
 */
#define _GNU_SOURCE
#include "base/handshake.h"
#include "pd/admin.h"

#include "base/err.h"
#include "pd/decide.h"
#include "pd/pdrpc.h"
#include "rpc/rpc.h"
#include "worker.pb-c.h"
#include "worker/worker.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MS 10000

static void admin_usage(FILE *out)
{
    fprintf(out,
            "usage: vectron admin --pd HOST:PORT[,...] COMMAND [ARGS]\n\n"
            "  status | topology | collections | shards COLLECTION\n"
            "  create NAME [--shards N] [--replication N] [--config JSON]\n"
            "  delete NAME\n"
            "  index COLLECTION FIELD TYPE | unindex COLLECTION FIELD\n"
            "  move GROUP FROM_WORKER TO_WORKER\n"
            "  drain WORKER | remove WORKER\n\n"
            "Environment: VECTRON_CLUSTER_SECRET, the cluster's internal RPC secret.\n");
}

static cJSON *worker_json(const Vxpd__Worker *w)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)w->id);
    cJSON_AddStringToObject(o, "name", w->name);
    cJSON_AddStringToObject(o, "state", vx_pd_state_name((vx_pd_worker_state)w->state));
    cJSON_AddStringToObject(o, "rpc", w->rpc_address);
    cJSON_AddStringToObject(o, "raft", w->raft_address);
    cJSON_AddStringToObject(o, "zone", w->zone);
    cJSON_AddStringToObject(o, "rack", w->rack);
    return o;
}

static cJSON *collection_json(const Vxpd__Collection *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", (double)c->id);
    cJSON_AddStringToObject(o, "name", c->name);
    cJSON_AddNumberToObject(o, "shard_count", c->shard_count);
    cJSON_AddNumberToObject(o, "replication_factor", c->replication_factor);
    cJSON *cfg = cJSON_Parse(c->config_json);
    if (cfg) cJSON_AddItemToObject(o, "config", cfg);
    cJSON *pis = cJSON_AddObjectToObject(o, "payload_indexes");
    for (size_t i = 0; i < c->n_payload_indexes; i++)
        cJSON_AddStringToObject(pis, c->payload_indexes[i]->field, c->payload_indexes[i]->schema);
    cJSON *shards = cJSON_AddArrayToObject(o, "shards");
    for (size_t i = 0; i < c->n_shards; i++) {
        const Vxpd__Shard *s = c->shards[i];
        cJSON *so = cJSON_CreateObject();
        cJSON_AddNumberToObject(so, "group", (double)s->group_id);
        cJSON_AddNumberToObject(so, "index", s->index);
        cJSON_AddNumberToObject(so, "epoch", (double)s->epoch);
        cJSON *reps = cJSON_AddArrayToObject(so, "replicas");
        for (size_t r = 0; r < s->n_replicas; r++) {
            cJSON *ro = cJSON_CreateObject();
            cJSON_AddNumberToObject(ro, "worker", (double)s->replicas[r]->worker);
            cJSON_AddBoolToObject(ro, "voter", s->replicas[r]->voter);
            cJSON_AddItemToArray(reps, ro);
        }
        if (s->move_to) {
            cJSON *mv = cJSON_AddObjectToObject(so, "move");
            cJSON_AddNumberToObject(mv, "from", (double)s->move_from);
            cJSON_AddNumberToObject(mv, "to", (double)s->move_to);
        }
        cJSON_AddItemToArray(shards, so);
    }
    return o;
}

static void print_json(cJSON *o)
{
    char *t = cJSON_Print(o);
    if (t) puts(t);
    free(t);
    cJSON_Delete(o);
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || *s == '\0' || *s == '-') return false;
    *out = v;
    return true;
}

int vx_admin_main(int argc, char **argv)
{
    const char *pd = NULL;
    int i = 0;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--pd") && i + 1 < argc) pd = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            admin_usage(stdout);
            return 0;
        } else
            break;
    }
    if (pd == NULL || i >= argc) {
        admin_usage(stderr);
        return 2;
    }
    char *list = strdup(pd), *save = NULL;
    const char *addrs[16];
    size_t n = 0;
    for (char *t = strtok_r(list, ",", &save); t && n < 16; t = strtok_r(NULL, ",", &save)) addrs[n++] = t;
    const char *cmd = argv[i++];
    static char secret_buf[VX_SECRET_MAX];
    {
        char serr[512];
        /* a client listens nowhere: an empty secret is the caller's choice */
        if (vx_cluster_secret_take("vectron admin", NULL, 0, secret_buf, sizeof secret_buf, serr,
                                   sizeof serr) != 0) {
            fprintf(stderr, "%s\n", serr);
            free(list);
            return 2;
        }
    }
    const char *secret = secret_buf;
    char err[VX_PD_CLIENT_ERRMSG_LEN];
    ProtobufCMessage *resp = NULL;
    int rc = VX_EINVAL, out = 0;
    if (!strcmp(cmd, "status") || !strcmp(cmd, "topology") || !strcmp(cmd, "collections")) {
        bool status = !strcmp(cmd, "status"), topo = !strcmp(cmd, "topology");
        Vxpd__Empty e = VXPD__EMPTY__INIT;
        Vxpd__TopologyRequest tr = VXPD__TOPOLOGY_REQUEST__INIT;
        rc = vx_pd_client_call(addrs, n, secret, status ? VX_PD_CLUSTER_STATUS : topo ? VX_PD_GET_TOPOLOGY : VX_PD_LIST_COLLECTIONS,
                               topo ? &tr.base : &e.base,
                               status ? &vxpd__cluster_status__descriptor
                               : topo ? &vxpd__topology__descriptor
                                      : &vxpd__list_collections_response__descriptor,
                               &resp, TIMEOUT_MS, err);
        if (rc == 0) {
            cJSON *o = cJSON_CreateObject();
            const Vxpd__Worker *const *ws = NULL;
            const Vxpd__Collection *const *cs = NULL;
            size_t nw = 0, nc = 0;
            if (status) {
                Vxpd__ClusterStatus *s = (Vxpd__ClusterStatus *)resp;
                cJSON_AddNumberToObject(o, "pd_id", (double)s->pd_id);
                cJSON_AddNumberToObject(o, "leader_id", (double)s->leader_id);
                cJSON_AddStringToObject(o, "leader_rpc", s->leader_rpc_address);
                cJSON_AddNumberToObject(o, "term", (double)s->term);
                cJSON_AddNumberToObject(o, "commit_index", (double)s->commit_index);
                if (s->state) {
                    cJSON_AddNumberToObject(o, "epoch", (double)s->state->epoch);
                    ws = (const Vxpd__Worker *const *)s->state->workers;
                    nw = s->state->n_workers;
                    cs = (const Vxpd__Collection *const *)s->state->collections;
                    nc = s->state->n_collections;
                }
                cJSON *mv = cJSON_AddArrayToObject(o, "moves");
                for (size_t k = 0; k < s->n_moves; k++) cJSON_AddItemToArray(mv, cJSON_CreateString(s->moves[k]));
            } else if (topo) {
                Vxpd__Topology *t = (Vxpd__Topology *)resp;
                cJSON_AddNumberToObject(o, "epoch", (double)t->epoch);
                ws = (const Vxpd__Worker *const *)t->workers;
                nw = t->n_workers;
                cs = (const Vxpd__Collection *const *)t->collections;
                nc = t->n_collections;
                cJSON *ls = cJSON_AddObjectToObject(o, "leaders");
                for (size_t k = 0; k < t->n_leaders; k++) {
                    char g[32];
                    snprintf(g, sizeof g, "%" PRIu64, t->leaders[k]->group_id);
                    cJSON_AddNumberToObject(ls, g, (double)t->leaders[k]->worker);
                }
            } else {
                Vxpd__ListCollectionsResponse *l = (Vxpd__ListCollectionsResponse *)resp;
                cJSON *a = cJSON_AddArrayToObject(o, "collections");
                for (size_t k = 0; k < l->n_names; k++) cJSON_AddItemToArray(a, cJSON_CreateString(l->names[k]));
            }
            if (status || topo) {
                cJSON *wa = cJSON_AddArrayToObject(o, "workers");
                for (size_t k = 0; k < nw; k++) cJSON_AddItemToArray(wa, worker_json(ws[k]));
                cJSON *ca = cJSON_AddArrayToObject(o, "collections");
                for (size_t k = 0; k < nc; k++) cJSON_AddItemToArray(ca, collection_json(cs[k]));
            }
            print_json(o);
        }
    } else if (!strcmp(cmd, "shards") && i + 1 == argc) {
        /* every replica of every shard of a collection, asked directly */
        Vxpd__TopologyRequest tr = VXPD__TOPOLOGY_REQUEST__INIT;
        rc = vx_pd_client_call(addrs, n, secret, VX_PD_GET_TOPOLOGY, &tr.base, &vxpd__topology__descriptor, &resp,
                               TIMEOUT_MS, err);
        const Vxpd__Topology *t = rc == 0 ? (const Vxpd__Topology *)resp : NULL;
        const Vxpd__Collection *col = NULL;
        for (size_t k = 0; t && k < t->n_collections; k++)
            if (!strcmp(t->collections[k]->name, argv[i])) col = t->collections[k];
        if (t && col == NULL) {
            rc = VX_ENOTFOUND;
            snprintf(err, sizeof err, "no collection %s", argv[i]);
        }
        if (col) {
            cJSON *o = cJSON_CreateArray();
            for (size_t k = 0; k < col->n_shards; k++) {
                const Vxpd__Shard *sh = col->shards[k];
                for (size_t r = 0; r < sh->n_replicas; r++) {
                    const char *addr = NULL;
                    for (size_t q = 0; q < t->n_workers; q++)
                        if (t->workers[q]->id == sh->replicas[r]->worker) addr = t->workers[q]->rpc_address;
                    cJSON *e = cJSON_CreateObject();
                    cJSON_AddNumberToObject(e, "group", (double)sh->group_id);
                    cJSON_AddNumberToObject(e, "shard", sh->index);
                    cJSON_AddNumberToObject(e, "worker", (double)sh->replicas[r]->worker);
                    Vxw__ShardInfoRequest q = VXW__SHARD_INFO_REQUEST__INIT;
                    q.group_id = sh->group_id;
                    uint8_t qb[32];
                    size_t ql = vxw__shard_info_request__pack(&q, qb);
                    int32_t st = -1;
                    uint8_t *ob = NULL;
                    size_t ol = 0;
                    char rerr[VX_RPC_ERRMSG_LEN];
                    Vxw__ShardInfo *si = NULL;
                    if (addr && vx_rpc_call_once(addr, secret ? secret : "", secret ? strlen(secret) : 0,
                                                 VX_W_SHARD_INFO, qb, ql, 3000, &st, &ob, &ol, rerr) == 0 &&
                        st == 0)
                        si = vxw__shard_info__unpack(NULL, ol, ob);
                    free(ob);
                    cJSON_AddBoolToObject(e, "reachable", si != NULL);
                    if (si) {
                        cJSON_AddBoolToObject(e, "leader", si->leader);
                        cJSON_AddNumberToObject(e, "term", (double)si->term);
                        cJSON_AddNumberToObject(e, "applied", (double)si->applied);
                        cJSON_AddNumberToObject(e, "points", (double)si->count);
                        char dg[17]; /* as text: a JSON number would lose bits */
                        snprintf(dg, sizeof dg, "%016" PRIx64, si->digest);
                        cJSON_AddStringToObject(e, "digest", dg);
                        vxw__shard_info__free_unpacked(si, NULL);
                    }
                    cJSON_AddItemToArray(o, e);
                }
            }
            print_json(o);
        }
    } else if (!strcmp(cmd, "create") && i < argc) {
        Vxpd__CreateCollectionRequest r = VXPD__CREATE_COLLECTION_REQUEST__INIT;
        char rid[33];
        vx_pd_request_id(rid);
        r.name = argv[i++];
        r.request_id = rid;
        r.config_json = (char *)"{}";
        uint64_t v;
        for (; i + 1 < argc; i += 2) {
            if (!strcmp(argv[i], "--shards") && parse_u64(argv[i + 1], &v) && v < 100000) r.shard_count = (uint32_t)v;
            else if (!strcmp(argv[i], "--replication") && parse_u64(argv[i + 1], &v) && v < 100) r.replication_factor = (uint32_t)v;
            else if (!strcmp(argv[i], "--config")) r.config_json = argv[i + 1];
            else break;
        }
        if (i != argc) {
            admin_usage(stderr);
            free(list);
            return 2;
        }
        rc = vx_pd_client_call(addrs, n, secret, VX_PD_CREATE_COLLECTION, &r.base,
                               &vxpd__collection_response__descriptor, &resp, TIMEOUT_MS, err);
        if (rc == 0 && ((Vxpd__CollectionResponse *)resp)->collection)
            print_json(collection_json(((Vxpd__CollectionResponse *)resp)->collection));
    } else if (!strcmp(cmd, "delete") && i + 1 == argc) {
        Vxpd__NameRequest r = VXPD__NAME_REQUEST__INIT;
        r.name = argv[i];
        rc = vx_pd_client_call(addrs, n, secret, VX_PD_DELETE_COLLECTION, &r.base, &vxpd__empty__descriptor,
                               &resp, TIMEOUT_MS, err);
        if (rc == 0) puts("{\"result\":true}");
    } else if ((!strcmp(cmd, "index") && i + 3 == argc) || (!strcmp(cmd, "unindex") && i + 2 == argc)) {
        Vxpd__PayloadIndexRequest r = VXPD__PAYLOAD_INDEX_REQUEST__INIT;
        r.collection = argv[i];
        r.field = argv[i + 1];
        r.drop = !strcmp(cmd, "unindex");
        r.schema = r.drop ? (char *)"" : argv[i + 2];
        rc = vx_pd_client_call(addrs, n, secret, VX_PD_PAYLOAD_INDEX, &r.base, &vxpd__empty__descriptor, &resp,
                               TIMEOUT_MS, err);
        if (rc == 0) puts("{\"result\":true}");
    } else if (!strcmp(cmd, "move") && i + 3 == argc) {
        Vxpd__MoveShardRequest r = VXPD__MOVE_SHARD_REQUEST__INIT;
        if (!parse_u64(argv[i], &r.group_id) || !parse_u64(argv[i + 1], &r.from_worker) ||
            !parse_u64(argv[i + 2], &r.to_worker)) {
            admin_usage(stderr);
            free(list);
            return 2;
        }
        rc = vx_pd_client_call(addrs, n, secret, VX_PD_MOVE_SHARD, &r.base, &vxpd__empty__descriptor, &resp,
                               TIMEOUT_MS, err);
        if (rc == 0) puts("{\"result\":true}");
    } else if ((!strcmp(cmd, "drain") || !strcmp(cmd, "remove")) && i + 1 == argc) {
        Vxpd__WorkerRequest r = VXPD__WORKER_REQUEST__INIT;
        if (!parse_u64(argv[i], &r.worker_id)) {
            admin_usage(stderr);
            free(list);
            return 2;
        }
        rc = vx_pd_client_call(addrs, n, secret, !strcmp(cmd, "drain") ? VX_PD_DRAIN_WORKER : VX_PD_REMOVE_WORKER,
                               &r.base, &vxpd__empty__descriptor, &resp, TIMEOUT_MS, err);
        if (rc == 0) puts("{\"result\":true}");
    } else {
        admin_usage(stderr);
        free(list);
        return 2;
    }
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    free(list);
    if (rc != 0) {
        fprintf(stderr, "vectron admin %s: %s\n", cmd, err);
        out = 1;
    }
    return out;
}
