/*
 * pd.c - a placement driver replica (pd.h): state machine adapter, RPC
 * service and the leader's control loops.  Everything runs on the loop
 * thread.
 */
#include "pd/pd.h"

#include "base/err.h"
#include "pd/pd_fsm.h"
#include "pd/pdrpc.h"
#include "rpc/rpc.h"
#include "server/runtime.h"

#include <cjson/cJSON.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RING 256          /* apply results kept for proposers */
#define MAX_ACTIONS 64    /* control-loop actions per tick */

typedef struct wmem { /* what the leader heard from a worker (not replicated) */
    uint64_t id;
    uint64_t last_hb_ms;
    Vxpd__HeartbeatRequest *hb; /* the last heartbeat, unpacked */
} wmem;

typedef struct move_watch { /* progress of a move in flight */
    uint64_t gid, epoch, since_ms;
} move_watch;

struct vx_pd {
    uv_loop_t *loop;
    vx_node *node;
    vx_group *g;
    struct raft *raft;
    vx_pd_fsm fsm;
    vx_pd_options opt;
    char peer_text[VX_PD_MAX_PEERS][2][VX_PD_ADDR_MAX + 1];
    char secret[256];
    vx_pd_state *st;
    vx_rpc_server *rpc;
    uv_timer_t tick;
    struct {
        uint64_t index;
        vx_pd_result res;
    } ring[RING];
    /* leadership */
    raft_term ready_term;
    bool barrier_pending;
    struct raft_barrier barrier;
    raft_term barrier_term;
    uint64_t grace_ms; /* heartbeats count from here for workers not heard since */
    /* leader memory */
    wmem *mem;
    size_t nmem;
    move_watch *watch;
    size_t nwatch;
    unsigned inflight; /* control-loop proposals not yet applied */
    uint64_t last_balance_ms;
    /* topology watches (leader): answered when the epoch moves */
    struct watch {
        vx_rpc_call *call;
        uint64_t known, since_ms;
    } *watches;
    size_t nwatches, capwatches;
    /* closing */
    bool closing;
    int close_pending;
    void (*close_cb)(void *);
    void *close_data;
};

typedef struct prop {
    struct raft_apply req;
    vx_pd *pd;
    vx_rpc_call *call; /* NULL: a control-loop proposal */
    uint32_t method;
    char name[VX_PD_NAME_MAX + 1];
} prop;

static uint64_t now_ms(vx_pd *pd) { return uv_now(pd->loop); }

/* ---- replies ------------------------------------------------------------------------- */


static void reply_empty(vx_rpc_call *call)
{
    Vxpd__Empty e = VXPD__EMPTY__INIT;
    vx_rpc_reply_msg(call, 0, &e.base);
}

static const char *peer_rpc(vx_pd *pd, uint64_t id)
{
    for (unsigned i = 0; i < pd->opt.npeers; i++)
        if (pd->opt.peers[i].id == id) return pd->opt.peers[i].rpc_address;
    return NULL;
}

/* ---- the state machine (pd_fsm.h) ------------------------------------------------------ */

static void answer_watches(vx_pd *pd, bool all, int32_t status);

static void on_result(void *data, uint64_t index, const vx_pd_result *res)
{
    vx_pd *pd = data;
    pd->ring[index % RING].index = index;
    pd->ring[index % RING].res = *res;
    if (pd->nwatches > 0) answer_watches(pd, false, 0);
}

/* ---- proposals ----------------------------------------------------------------------- */

static const vx_pd_result *ring_result(vx_pd *pd, uint64_t index)
{
    return pd->ring[index % RING].index == index ? &pd->ring[index % RING].res : NULL;
}

static wmem *mem_get(vx_pd *pd, uint64_t id, bool create);
static void answer(vx_pd *pd, prop *p, const vx_pd_result *res);

static void apply_done(struct raft_apply *req, int status, void *result)
{
    (void)result;
    prop *p = req->data;
    vx_pd *pd = p->pd;
    if (p->call == NULL) {
        if (pd->inflight > 0) pd->inflight--;
        const vx_pd_result *res = status == 0 ? ring_result(pd, req->index) : NULL;
        if (res && res->status != 0 && !pd->closing)
            fprintf(stderr, "pd: control step refused: %s\n", res->msg);
    } else if (status != 0) {
        if (status == RAFT_NOTLEADER || status == RAFT_LEADERSHIPLOST)
            vx_rpc_reply_err(p->call, VX_PD_NOT_LEADER, "", "leadership changed; retry");
        else
            vx_rpc_reply_err(p->call, VX_EIO, NULL, "the change was not committed: %s", raft_strerror(status));
    } else {
        const vx_pd_result *res = ring_result(pd, req->index);
        if (res == NULL)
            vx_rpc_reply_err(p->call, VX_EIO, NULL, "the result of entry %" PRIu64 " is gone", (uint64_t)req->index);
        else
            answer(pd, p, res);
    }
    free(p);
}

/* Propose a command; on failure the call (if any) is answered. */
static int propose(vx_pd *pd, const Vxpd__Command *cmd, vx_rpc_call *call, uint32_t method,
                   const char *name)
{
    prop *p = calloc(1, sizeof *p);
    struct raft_buffer rb = {NULL, 0};
    if (p == NULL || vx_pd_entry(cmd, &rb) != 0) {
        free(p);
        if (call) vx_rpc_reply_err(call, VX_ENOMEM, NULL, "out of memory");
        return VX_ENOMEM;
    }
    p->pd = pd;
    p->call = call;
    p->method = method;
    if (name) snprintf(p->name, sizeof p->name, "%s", name);
    p->req.data = p;
    int rv = raft_apply(pd->raft, &p->req, &rb, 1, apply_done);
    if (rv != 0) {
        raft_free(rb.base);
        free(p);
        if (call) vx_rpc_reply_err(call, rv == RAFT_NOTLEADER ? VX_PD_NOT_LEADER : VX_EIO, "",
                            "cannot propose: %s", raft_strerror(rv));
        return VX_EIO;
    }
    if (call == NULL) pd->inflight++;
    return 0;
}

/* ---- leader memory ------------------------------------------------------------------- */

static wmem *mem_get(vx_pd *pd, uint64_t id, bool create)
{
    for (size_t i = 0; i < pd->nmem; i++)
        if (pd->mem[i].id == id) return &pd->mem[i];
    if (!create) return NULL;
    wmem *m = realloc(pd->mem, (pd->nmem + 1) * sizeof *m);
    if (m == NULL) return NULL;
    pd->mem = m;
    m = &pd->mem[pd->nmem++];
    memset(m, 0, sizeof *m);
    m->id = id;
    m->last_hb_ms = now_ms(pd);
    return m;
}

static void mem_clear(vx_pd *pd)
{
    for (size_t i = 0; i < pd->nmem; i++)
        if (pd->mem[i].hb) vxpd__heartbeat_request__free_unpacked(pd->mem[i].hb, NULL);
    free(pd->mem);
    pd->mem = NULL;
    pd->nmem = 0;
    free(pd->watch);
    pd->watch = NULL;
    pd->nwatch = 0;
}

/* The freshest report of a shard's Raft leader (highest term), from the
 * workers heard within the heartbeat timeout: a dead worker's last report
 * says it leads until the others' reports outrank it, and routing must not
 * follow it meanwhile. */
static const Vxpd__ShardReport *leader_report(vx_pd *pd, uint64_t gid, uint64_t *worker)
{
    const Vxpd__ShardReport *best = NULL;
    uint64_t now = now_ms(pd);
    for (size_t i = 0; i < pd->nmem; i++) {
        const Vxpd__HeartbeatRequest *hb = pd->mem[i].hb;
        if (now - pd->mem[i].last_hb_ms > 2 * VX_PD_HEARTBEAT_INTERVAL_MS) continue; /* silent */
        for (size_t j = 0; hb && j < hb->n_shards; j++) {
            const Vxpd__ShardReport *r = hb->shards[j];
            if (r->group_id == gid && r->leader && (best == NULL || r->term > best->term)) {
                best = r;
                if (worker) *worker = pd->mem[i].id;
            }
        }
    }
    return best;
}

/* The decision functions' view with what the leader heard folded in. */
static int cluster_view(vx_pd *pd, vx_pd_cluster *c)
{
    int rc = vx_pd_state_cluster(pd->st, c);
    if (rc != 0) return rc;
    for (size_t i = 0; i < c->nworkers; i++) {
        vx_pd_worker *w = &c->workers[i];
        wmem *m = mem_get(pd, w->id, false);
        w->last_heartbeat_ms = m ? m->last_hb_ms : pd->grace_ms;
        if (m && m->hb && m->hb->load) {
            w->qps = m->hb->load->qps;
            w->cpu_util = m->hb->load->cpu_util;
            w->mem_used = m->hb->load->mem_used;
            w->disk_used = m->hb->load->disk_used;
        }
    }
    for (size_t i = 0; i < c->nshards; i++) {
        vx_pd_shard *s = &c->shards[i];
        uint64_t lw = 0;
        const Vxpd__ShardReport *r = leader_report(pd, s->group_id, &lw);
        if (r) {
            s->leader_hint = lw;
            s->size_bytes = r->size_bytes;
            s->qps = r->qps;
        }
    }
    return 0;
}

/* ---- answers ------------------------------------------------------------------------- */

static void answer(vx_pd *pd, prop *p, const vx_pd_result *res)
{
    const Vxpd__State *s = vx_pd_state_get(pd->st);
    if (res->status != 0) {
        vx_rpc_reply_err(p->call, res->status, NULL, "%s", res->msg);
        return;
    }
    switch (p->method) {
    case VX_PD_REGISTER_WORKER: {
        wmem *m = mem_get(pd, res->value, true);
        if (m) m->last_hb_ms = now_ms(pd); /* registration counts as a heartbeat */
        Vxpd__RegisterWorkerResponse r = VXPD__REGISTER_WORKER_RESPONSE__INIT;
        r.worker_id = res->value;
        r.epoch = s->epoch;
        vx_rpc_reply_msg(p->call, 0, &r.base);
        return;
    }
    case VX_PD_CREATE_COLLECTION: {
        Vxpd__CollectionResponse r = VXPD__COLLECTION_RESPONSE__INIT;
        r.collection = (Vxpd__Collection *)vx_pd_state_collection(pd->st, p->name);
        r.epoch = s->epoch;
        vx_rpc_reply_msg(p->call, 0, &r.base);
        return;
    }
    default:
        reply_empty(p->call);
    }
}

/* ---- RPC ----------------------------------------------------------------------------- */

static void start_barrier(vx_pd *pd);

/* Leader with a barrier of its term applied?  Otherwise answer and false. */
static bool serving(vx_pd *pd, vx_rpc_call *call)
{
    if (pd->closing) {
        vx_rpc_reply_err(call, VX_PD_RETRY, NULL, "shutting down");
        return false;
    }
    if (raft_state(pd->raft) != RAFT_LEADER) {
        raft_id lid = 0;
        const char *laddr = NULL;
        raft_leader(pd->raft, &lid, &laddr);
        const char *rpc = lid ? peer_rpc(pd, lid) : NULL;
        vx_rpc_reply_err(call, VX_PD_NOT_LEADER, rpc ? rpc : "", "not the leader");
        return false;
    }
    if (pd->ready_term != pd->raft->current_term) {
        start_barrier(pd);
        vx_rpc_reply_err(call, VX_PD_RETRY, NULL, "new leader, not ready yet");
        return false;
    }
    return true;
}

#define UNPACK(Type, fn, var, payload, len)                                                        \
    Type *var = fn##__unpack(NULL, len, payload);                                                  \
    if (var == NULL) {                                                                             \
        vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed request");                                     \
        return;                                                                                    \
    }

static void h_register(vx_pd *pd, vx_rpc_call *call, const uint8_t *payload, size_t len);
static void h_heartbeat(vx_pd *pd, vx_rpc_call *call, const uint8_t *payload, size_t len);
static void h_topology(vx_pd *pd, vx_rpc_call *call);
static void h_watch(vx_pd *pd, vx_rpc_call *call, const uint8_t *payload, size_t len);
static void h_create(vx_pd *pd, vx_rpc_call *call, const uint8_t *payload, size_t len);
static void h_status(vx_pd *pd, vx_rpc_call *call);

static void on_call(void *data, vx_rpc_call *call, uint32_t method, const uint8_t *payload,
                    size_t len)
{
    vx_pd *pd = data;
    if (!serving(pd, call)) return;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    switch (method) {
    case VX_PD_REGISTER_WORKER:
        h_register(pd, call, payload, len);
        return;
    case VX_PD_HEARTBEAT:
        h_heartbeat(pd, call, payload, len);
        return;
    case VX_PD_GET_TOPOLOGY:
        h_topology(pd, call);
        return;
    case VX_PD_WATCH_TOPOLOGY:
        h_watch(pd, call, payload, len);
        return;
    case VX_PD_CREATE_COLLECTION:
        h_create(pd, call, payload, len);
        return;
    case VX_PD_DELETE_COLLECTION: {
        UNPACK(Vxpd__NameRequest, vxpd__name_request, req, payload, len);
        if (vx_pd_state_collection(pd->st, req->name) == NULL) {
            vx_rpc_reply_err(call, VX_ENOTFOUND, NULL, "no collection %s", req->name);
        } else {
            Vxpd__CmdDeleteCollection d = VXPD__CMD_DELETE_COLLECTION__INIT;
            d.name = req->name;
            cmd.cmd_case = VXPD__COMMAND__CMD_DELETE_COLLECTION;
            cmd.delete_collection = &d;
            propose(pd, &cmd, call, method, req->name);
        }
        vxpd__name_request__free_unpacked(req, NULL);
        return;
    }
    case VX_PD_GET_AUTH: {
        UNPACK(Vxpd__AuthRequest, vxpd__auth_request, req, payload, len);
        const Vxpd__State *s = vx_pd_state_get(pd->st);
        Vxpd__AuthState r = VXPD__AUTH_STATE__INIT;
        r.auth_epoch = s->auth_epoch;
        r.changed = req->known_auth_epoch != s->auth_epoch + 1; /* callers send epoch + 1 (0: none) */
        if (r.changed) { /* pointers into the state: nothing is copied */
            r.users = s->users;
            r.n_users = s->n_users;
            r.api_keys = s->api_keys;
            r.n_api_keys = s->n_api_keys;
            r.revoked = s->revoked;
            r.n_revoked = s->n_revoked;
        }
        vx_rpc_reply_msg(call, 0, &r.base);
        vxpd__auth_request__free_unpacked(req, NULL);
        return;
    }
    case VX_PD_AUTH_CHANGE: {
        Vxpd__Command *c = vxpd__command__unpack(NULL, len, payload);
        if (c == NULL) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed request");
            return;
        }
        switch (c->cmd_case) {
        case VXPD__COMMAND__CMD_PUT_USER:
        case VXPD__COMMAND__CMD_DELETE_USER:
        case VXPD__COMMAND__CMD_PUT_API_KEY:
        case VXPD__COMMAND__CMD_DELETE_API_KEY:
        case VXPD__COMMAND__CMD_REVOKE_TOKENS: propose(pd, c, call, method, NULL); break;
        default: vx_rpc_reply_err(call, VX_EINVAL, NULL, "not a credential command");
        }
        vxpd__command__free_unpacked(c, NULL);
        return;
    }
    case VX_PD_GET_COLLECTION: {
        UNPACK(Vxpd__NameRequest, vxpd__name_request, req, payload, len);
        const Vxpd__Collection *c = vx_pd_state_collection(pd->st, req->name);
        if (c == NULL) {
            vx_rpc_reply_err(call, VX_ENOTFOUND, NULL, "no collection %s", req->name);
        } else {
            Vxpd__CollectionResponse r = VXPD__COLLECTION_RESPONSE__INIT;
            r.collection = (Vxpd__Collection *)c;
            r.epoch = vx_pd_state_get(pd->st)->epoch;
            vx_rpc_reply_msg(call, 0, &r.base);
        }
        vxpd__name_request__free_unpacked(req, NULL);
        return;
    }
    case VX_PD_LIST_COLLECTIONS: {
        const Vxpd__State *s = vx_pd_state_get(pd->st);
        Vxpd__ListCollectionsResponse r = VXPD__LIST_COLLECTIONS_RESPONSE__INIT;
        char **names = calloc(s->n_collections ? s->n_collections : 1, sizeof *names);
        if (names == NULL) {
            vx_rpc_reply_err(call, VX_ENOMEM, NULL, "out of memory");
            return;
        }
        for (size_t i = 0; i < s->n_collections; i++) names[i] = s->collections[i]->name;
        r.names = names;
        r.n_names = s->n_collections;
        vx_rpc_reply_msg(call, 0, &r.base);
        free(names);
        return;
    }
    case VX_PD_MOVE_SHARD: {
        UNPACK(Vxpd__MoveShardRequest, vxpd__move_shard_request, req, payload, len);
        Vxpd__CmdReplicaStep st = VXPD__CMD_REPLICA_STEP__INIT;
        st.group_id = req->group_id;
        st.step = VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE;
        st.worker = req->to_worker;
        st.from_worker = req->from_worker;
        vxpd__move_shard_request__free_unpacked(req, NULL);
        cmd.cmd_case = VXPD__COMMAND__CMD_REPLICA_STEP;
        cmd.replica_step = &st;
        propose(pd, &cmd, call, method, NULL);
        return;
    }
    case VX_PD_DRAIN_WORKER:
    case VX_PD_REMOVE_WORKER: {
        UNPACK(Vxpd__WorkerRequest, vxpd__worker_request, req, payload, len);
        uint64_t id = req->worker_id;
        vxpd__worker_request__free_unpacked(req, NULL);
        const Vxpd__Worker *w = vx_pd_state_worker(pd->st, id);
        if (w == NULL) {
            vx_rpc_reply_err(call, VX_ENOTFOUND, NULL, "no worker %" PRIu64, id);
            return;
        }
        vx_pd_cluster c;
        if (method == VX_PD_REMOVE_WORKER && vx_pd_state_cluster(pd->st, &c) == 0) {
            unsigned held = 0;
            for (size_t i = 0; i < c.nshards; i++)
                for (unsigned r = 0; r < c.shards[i].n; r++) held += c.shards[i].replicas[r].worker == id;
            vx_pd_cluster_free(&c);
            if (held > 0) {
                vx_rpc_reply_err(call, VX_ESTATE, NULL,
                          "worker %" PRIu64 " still holds %u replicas: drain it first", id, held);
                return;
            }
        }
        Vxpd__CmdSetWorkerState ss = VXPD__CMD_SET_WORKER_STATE__INIT;
        ss.id = id;
        ss.state = method == VX_PD_DRAIN_WORKER ? VX_PD_DRAINING : VX_PD_REMOVED;
        ss.expect_state = w->state;
        ss.check_expect = true;
        cmd.cmd_case = VXPD__COMMAND__CMD_SET_WORKER_STATE;
        cmd.set_worker_state = &ss;
        propose(pd, &cmd, call, method, NULL);
        return;
    }
    case VX_PD_CLUSTER_STATUS:
        h_status(pd, call);
        return;
    case VX_PD_UPDATE_COLLECTION: {
        UNPACK(Vxpd__UpdateCollectionRequest, vxpd__update_collection_request, req, payload, len);
        const Vxpd__Collection *old = vx_pd_state_collection(pd->st, req->name);
        char cerr[VX_RT_ERRMSG_LEN] = "";
        vx_collection_config a, b;
        cJSON *ja = old ? cJSON_Parse(old->config_json) : NULL, *jb = cJSON_Parse(req->config_json);
        int prc = old ? vx_collection_config_parse(jb, &b, cerr) : VX_ENOTFOUND;
        if (prc == 0 && vx_collection_config_parse(ja, &a, cerr) != 0) prc = VX_ECORRUPT;
        cJSON_Delete(ja);
        cJSON_Delete(jb);
        if (prc == VX_ENOTFOUND) {
            vx_rpc_reply_err(call, VX_ENOTFOUND, NULL, "no collection %s", req->name);
        } else if (prc != 0) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "collection config: %s", cerr);
        } else if (a.dim != b.dim || a.metric != b.metric) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "a collection's vector size and distance cannot change");
        } else {
            Vxpd__CmdUpdateCollection uc = VXPD__CMD_UPDATE_COLLECTION__INIT;
            uc.name = req->name;
            uc.config_json = req->config_json;
            cmd.cmd_case = VXPD__COMMAND__CMD_UPDATE_COLLECTION;
            cmd.update_collection = &uc;
            propose(pd, &cmd, call, method, NULL);
        }
        vxpd__update_collection_request__free_unpacked(req, NULL);
        return;
    }
    case VX_PD_PAYLOAD_INDEX: {
        UNPACK(Vxpd__PayloadIndexRequest, vxpd__payload_index_request, req, payload, len);
        if (vx_pd_state_collection(pd->st, req->collection) == NULL) {
            vx_rpc_reply_err(call, VX_ENOTFOUND, NULL, "no collection %s", req->collection);
        } else {
            Vxpd__CmdPayloadIndex pi = VXPD__CMD_PAYLOAD_INDEX__INIT;
            pi.collection = req->collection;
            pi.field = req->field;
            pi.schema = req->schema;
            pi.drop = req->drop;
            cmd.cmd_case = VXPD__COMMAND__CMD_PAYLOAD_INDEX;
            cmd.payload_index = &pi;
            propose(pd, &cmd, call, method, NULL);
        }
        vxpd__payload_index_request__free_unpacked(req, NULL);
        return;
    }
    default:
        vx_rpc_reply_err(call, VX_EINVAL, NULL, "unknown method %u", method);
    }
}

static void h_register(vx_pd *pd, vx_rpc_call *call, const uint8_t *payload, size_t len)
{
    UNPACK(Vxpd__RegisterWorkerRequest, vxpd__register_worker_request, req, payload, len);
    Vxpd__CmdRegisterWorker rw = VXPD__CMD_REGISTER_WORKER__INIT;
    rw.worker = req->worker;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_REGISTER_WORKER;
    cmd.register_worker = &rw;
    if (req->worker == NULL)
        vx_rpc_reply_err(call, VX_EINVAL, NULL, "no worker in the request");
    else
        propose(pd, &cmd, call, VX_PD_REGISTER_WORKER, NULL);
    vxpd__register_worker_request__free_unpacked(req, NULL);
}

/* Pack the topology; the tree points into the state (nothing is copied
 * but the leader list, *mem, freed by the caller). */
static void fill_topology(vx_pd *pd, Vxpd__Topology *t, void **mem)
{
    const Vxpd__State *s = vx_pd_state_get(pd->st);
    t->epoch = s->epoch;
    t->workers = s->workers;
    t->n_workers = s->n_workers;
    t->collections = s->collections;
    t->n_collections = s->n_collections;
    size_t nshards = 0;
    for (size_t i = 0; i < s->n_collections; i++) nshards += s->collections[i]->n_shards;
    size_t cap = nshards ? nshards : 1;
    /* one block: the pointer array, then the structs */
    Vxpd__ShardLeader **ptrs = calloc(1, cap * (sizeof *ptrs + sizeof **ptrs));
    *mem = ptrs;
    if (ptrs == NULL) return;
    Vxpd__ShardLeader *ls = (Vxpd__ShardLeader *)(ptrs + cap);
    size_t k = 0;
    for (size_t i = 0; i < s->n_collections; i++)
        for (size_t j = 0; j < s->collections[i]->n_shards; j++) {
            uint64_t w = 0;
            uint64_t gid = s->collections[i]->shards[j]->group_id;
            if (leader_report(pd, gid, &w) == NULL) continue;
            vxpd__shard_leader__init(&ls[k]);
            ls[k].group_id = gid;
            ls[k].worker = w;
            ptrs[k] = &ls[k];
            k++;
        }
    t->leaders = ptrs;
    t->n_leaders = k;
}

static void h_heartbeat(vx_pd *pd, vx_rpc_call *call, const uint8_t *payload, size_t len)
{
    UNPACK(Vxpd__HeartbeatRequest, vxpd__heartbeat_request, req, payload, len);
    const Vxpd__Worker *w = vx_pd_state_worker(pd->st, req->worker_id);
    if (w == NULL || w->state == VX_PD_REMOVED) {
        vx_rpc_reply_err(call, VX_ENOTFOUND, NULL, "worker %" PRIu64 " is not registered", req->worker_id);
        vxpd__heartbeat_request__free_unpacked(req, NULL);
        return;
    }
    wmem *m = mem_get(pd, req->worker_id, true);
    if (m == NULL) {
        vx_rpc_reply_err(call, VX_ENOMEM, NULL, "out of memory");
        vxpd__heartbeat_request__free_unpacked(req, NULL);
        return;
    }
    m->last_hb_ms = now_ms(pd);
    if (m->hb) vxpd__heartbeat_request__free_unpacked(m->hb, NULL);
    m->hb = req;
    const Vxpd__State *s = vx_pd_state_get(pd->st);
    Vxpd__HeartbeatResponse r = VXPD__HEARTBEAT_RESPONSE__INIT;
    Vxpd__Topology t = VXPD__TOPOLOGY__INIT;
    void *mem = NULL;
    r.epoch = s->epoch;
    r.changed = req->known_epoch != s->epoch;
    if (r.changed) {
        fill_topology(pd, &t, &mem);
        r.topology = &t;
    }
    vx_rpc_reply_msg(call, 0, &r.base);
    free(mem);
}

static void h_topology(vx_pd *pd, vx_rpc_call *call)
{
    Vxpd__Topology t = VXPD__TOPOLOGY__INIT;
    void *mem = NULL;
    fill_topology(pd, &t, &mem);
    vx_rpc_reply_msg(call, 0, &t.base);
    free(mem);
}

/* Watches whose epoch moved get the topology; `all`: every watch (status
 * 0: the topology, else that error, e.g. leadership lost). */
static void answer_watches(vx_pd *pd, bool all, int32_t status)
{
    uint64_t epoch = vx_pd_state_get(pd->st)->epoch;
    size_t kept = 0;
    for (size_t i = 0; i < pd->nwatches; i++) {
        struct watch *w = &pd->watches[i];
        if (!all && w->known == epoch) {
            pd->watches[kept++] = *w;
            continue;
        }
        if (status != 0) vx_rpc_reply_err(w->call, status, "", "no longer the leader");
        else h_topology(pd, w->call);
    }
    pd->nwatches = kept;
}

/* WatchTopology: answered at once when the caller's epoch is stale, else
 * when it moves, or after WATCH_MAX_MS with the same topology. */
#define WATCH_MAX_MS 4000 /* below the client's 5 s per-attempt limit */
static void h_watch(vx_pd *pd, vx_rpc_call *call, const uint8_t *payload, size_t len)
{
    Vxpd__TopologyRequest *req = vxpd__topology_request__unpack(NULL, len, payload);
    if (req == NULL) {
        vx_rpc_reply_err(call, VX_EINVAL, NULL, "malformed request");
        return;
    }
    uint64_t known = req->known_epoch;
    vxpd__topology_request__free_unpacked(req, NULL);
    if (known != vx_pd_state_get(pd->st)->epoch || pd->nwatches >= 4096) {
        h_topology(pd, call);
        return;
    }
    if (pd->nwatches == pd->capwatches) {
        size_t cap = pd->capwatches ? pd->capwatches * 2 : 16;
        struct watch *w = realloc(pd->watches, cap * sizeof *w);
        if (w == NULL) {
            h_topology(pd, call);
            return;
        }
        pd->watches = w;
        pd->capwatches = cap;
    }
    pd->watches[pd->nwatches++] = (struct watch){call, known, now_ms(pd)};
}

static bool valid_collection_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > VX_PD_NAME_MAX) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)n[i];
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\') return false;
    }
    return true;
}

static void h_create(vx_pd *pd, vx_rpc_call *call, const uint8_t *payload, size_t len)
{
    UNPACK(Vxpd__CreateCollectionRequest, vxpd__create_collection_request, req, payload, len);
    unsigned sc = req->shard_count ? req->shard_count : pd->opt.default_shards;
    unsigned rf = req->replication_factor ? req->replication_factor : pd->opt.default_rf;
    uint64_t *placement = NULL;
    vx_pd_cluster c = {0};
    if (!valid_collection_name(req->name)) {
        vx_rpc_reply_err(call, VX_EINVAL, NULL, "bad collection name");
        goto out;
    }
    const Vxpd__Collection *old = vx_pd_state_collection(pd->st, req->name);
    if (old && req->request_id[0] && strcmp(old->create_request, req->request_id) == 0) {
        Vxpd__CollectionResponse r = VXPD__COLLECTION_RESPONSE__INIT; /* a retry of this create */
        r.collection = (Vxpd__Collection *)old;
        r.epoch = vx_pd_state_get(pd->st)->epoch;
        vx_rpc_reply_msg(call, 0, &r.base);
        goto out;
    }
    if (old) {
        vx_rpc_reply_err(call, VX_EEXISTS, NULL, "collection %s already exists", req->name);
        goto out;
    }
    {
        char cerr[VX_RT_ERRMSG_LEN];
        vx_collection_config cfg;
        cJSON *body = cJSON_Parse(req->config_json);
        int prc = vx_collection_config_parse(body, &cfg, cerr);
        cJSON_Delete(body);
        if (prc != 0) {
            vx_rpc_reply_err(call, VX_EINVAL, NULL, "collection config: %s", cerr);
            goto out;
        }
    }
    if (sc < 1 || sc > VX_PD_MAX_SHARDS || rf < 1 || rf > VX_PD_MAX_REPLICAS) {
        vx_rpc_reply_err(call, VX_EINVAL, NULL, "shard_count must be 1 to %d and replication_factor 1 to %d",
                  VX_PD_MAX_SHARDS, VX_PD_MAX_REPLICAS);
        goto out;
    }
    if (cluster_view(pd, &c) != 0) {
        vx_rpc_reply_err(call, VX_ENOMEM, NULL, "out of memory");
        goto out;
    }
    /* place shard by shard, each placed one counted by the next */
    vx_pd_shard *grown = realloc(c.shards, (c.nshards + sc) * sizeof *grown);
    placement = calloc((size_t)sc * rf, sizeof *placement);
    if (grown == NULL || placement == NULL) {
        if (grown) c.shards = grown;
        vx_rpc_reply_err(call, VX_ENOMEM, NULL, "out of memory");
        goto out;
    }
    c.shards = grown;
    for (unsigned i = 0; i < sc; i++) {
        int rc = vx_pd_place(&c, rf, NULL, 0, placement + (size_t)i * rf);
        if (rc != 0) {
            vx_rpc_reply_err(call, rc, NULL,
                      rc == VX_EFULL ? "replication factor %u needs %u ready workers in distinct places"
                                     : "placement failed (%u of %u)",
                      rf, rf);
            goto out;
        }
        vx_pd_shard *ns = &c.shards[c.nshards++];
        memset(ns, 0, sizeof *ns);
        ns->group_id = UINT64_MAX - i;
        ns->rf = rf;
        ns->n = rf;
        for (unsigned r = 0; r < rf; r++) {
            ns->replicas[r].worker = placement[(size_t)i * rf + r];
            ns->replicas[r].voter = true;
        }
    }
    Vxpd__CmdCreateCollection cc = VXPD__CMD_CREATE_COLLECTION__INIT;
    cc.name = req->name;
    cc.config_json = req->config_json;
    cc.shard_count = sc;
    cc.replication_factor = rf;
    cc.request_id = req->request_id;
    cc.placement = placement;
    cc.n_placement = (size_t)sc * rf;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_CREATE_COLLECTION;
    cmd.create_collection = &cc;
    propose(pd, &cmd, call, VX_PD_CREATE_COLLECTION, req->name);
out:
    free(placement);
    vx_pd_cluster_free(&c);
    vxpd__create_collection_request__free_unpacked(req, NULL);
}

static void h_status(vx_pd *pd, vx_rpc_call *call)
{
    Vxpd__ClusterStatus r = VXPD__CLUSTER_STATUS__INIT;
    raft_id lid = 0;
    const char *laddr = NULL;
    raft_leader(pd->raft, &lid, &laddr);
    const char *rpc = peer_rpc(pd, lid);
    r.pd_id = pd->opt.id;
    r.leader_id = lid;
    r.leader_rpc_address = (char *)(rpc ? rpc : "");
    r.term = pd->raft->current_term;
    r.commit_index = pd->raft->commit_index;
    r.state = (Vxpd__State *)vx_pd_state_get(pd->st);
    const Vxpd__State *s = r.state;
    size_t nmoves = 0;
    for (size_t i = 0; i < s->n_collections; i++)
        for (size_t j = 0; j < s->collections[i]->n_shards; j++)
            nmoves += s->collections[i]->shards[j]->move_to != 0;
    char **moves = calloc(nmoves ? nmoves : 1, sizeof *moves);
    char *text = calloc(nmoves ? nmoves : 1, 96);
    if (moves == NULL || text == NULL) {
        free(moves);
        free(text);
        vx_rpc_reply_err(call, VX_ENOMEM, NULL, "out of memory");
        return;
    }
    for (size_t i = 0; i < s->n_collections; i++)
        for (size_t j = 0; j < s->collections[i]->n_shards; j++) {
            const Vxpd__Shard *sh = s->collections[i]->shards[j];
            if (sh->move_to == 0) continue;
            char *t = text + 96 * r.n_moves;
            snprintf(t, 96, "shard %" PRIu64 ": %" PRIu64 " -> %" PRIu64, sh->group_id, sh->move_from,
                     sh->move_to);
            moves[r.n_moves++] = t;
        }
    r.moves = moves;
    vx_rpc_reply_msg(call, 0, &r.base);
    free(moves);
    free(text);
}

/* ---- leadership and the control loops ------------------------------------------------- */

static void barrier_done(struct raft_barrier *req, int status)
{
    vx_pd *pd = req->data;
    pd->barrier_pending = false;
    if (status != 0 || pd->closing) return;
    if (raft_state(pd->raft) == RAFT_LEADER && pd->raft->current_term == pd->barrier_term) {
        pd->ready_term = pd->barrier_term;
        /* a new leader: heartbeats count from now (state.h: not replicated) */
        mem_clear(pd);
        pd->grace_ms = now_ms(pd);
        pd->last_balance_ms = now_ms(pd);
    }
}

static void start_barrier(vx_pd *pd)
{
    if (pd->barrier_pending || pd->closing) return;
    pd->barrier.data = pd;
    pd->barrier_term = pd->raft->current_term;
    if (raft_barrier(pd->raft, &pd->barrier, barrier_done) == 0) pd->barrier_pending = true;
}

static void step(vx_pd *pd, uint64_t gid, Vxpd__CmdReplicaStep__Step kind, uint64_t worker,
                 uint64_t from)
{
    Vxpd__CmdReplicaStep st = VXPD__CMD_REPLICA_STEP__INIT;
    st.group_id = gid;
    st.step = kind;
    st.worker = worker;
    st.from_worker = from;
    Vxpd__Command cmd = VXPD__COMMAND__INIT;
    cmd.cmd_case = VXPD__COMMAND__CMD_REPLICA_STEP;
    cmd.replica_step = &st;
    propose(pd, &cmd, NULL, 0, NULL);
}

static void run_actions(vx_pd *pd, const vx_pd_action *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "pd: shard %" PRIu64 ": %s %" PRIu64 " -> %" PRIu64 " (%s)\n", a[i].group_id,
                a[i].kind == VX_PD_REMOVE_REPLICA ? "remove" : "move", a[i].from_worker,
                a[i].to_worker, a[i].reason ? a[i].reason : "");
        if (a[i].kind == VX_PD_REMOVE_REPLICA)
            step(pd, a[i].group_id, VXPD__CMD_REPLICA_STEP__STEP__REMOVE, a[i].from_worker, 0);
        else
            step(pd, a[i].group_id, VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE, a[i].to_worker,
                 a[i].kind == VX_PD_MOVE_REPLICA ? a[i].from_worker : 0);
    }
}

static bool in_config(const Vxpd__ShardReport *r, uint64_t worker, bool *voter)
{
    for (size_t i = 0; r && i < r->n_config; i++)
        if (r->config[i]->worker == worker) {
            *voter = r->config[i]->voter;
            return true;
        }
    return false;
}

static move_watch *watch_get(vx_pd *pd, uint64_t gid)
{
    for (size_t i = 0; i < pd->nwatch; i++)
        if (pd->watch[i].gid == gid) return &pd->watch[i];
    move_watch *w = realloc(pd->watch, (pd->nwatch + 1) * sizeof *w);
    if (w == NULL) return NULL;
    pd->watch = w;
    w = &pd->watch[pd->nwatch++];
    w->gid = gid;
    w->epoch = 0;
    w->since_ms = now_ms(pd);
    return w;
}

/* One step of every move in flight, as the shard leaders' reports allow. */
static void drive_moves(vx_pd *pd)
{
    const Vxpd__State *s = vx_pd_state_get(pd->st);
    uint64_t now = now_ms(pd);
    for (size_t i = 0; i < s->n_collections; i++)
        for (size_t j = 0; j < s->collections[i]->n_shards; j++) {
            const Vxpd__Shard *sh = s->collections[i]->shards[j];
            if (sh->move_to == 0) continue;
            uint64_t gid = sh->group_id;
            move_watch *w = watch_get(pd, gid);
            if (w && w->epoch != sh->epoch) {
                w->epoch = sh->epoch;
                w->since_ms = now;
            }
            const Vxpd__Worker *to = vx_pd_state_worker(pd->st, sh->move_to);
            bool to_ok = to && (to->state == VX_PD_READY || to->state == VX_PD_ACTIVE);
            if (!to_ok || (w && now - w->since_ms > pd->opt.move_timeout_ms)) {
                fprintf(stderr, "pd: shard %" PRIu64 ": move to %" PRIu64 " rolled back (%s)\n", gid,
                        sh->move_to, to_ok ? "no progress" : "target not healthy");
                step(pd, gid, VXPD__CMD_REPLICA_STEP__STEP__ABORT_MOVE, 0, 0);
                continue;
            }
            const Vxpd__ShardReport *r = leader_report(pd, gid, NULL);
            bool pd_voter = false;
            for (size_t k = 0; k < sh->n_replicas; k++)
                if (sh->replicas[k]->worker == sh->move_to) pd_voter = sh->replicas[k]->voter;
            bool cfg_voter = false, cfg_has = in_config(r, sh->move_to, &cfg_voter);
            bool from_voter, from_in_pd = false;
            for (size_t k = 0; k < sh->n_replicas; k++)
                from_in_pd |= sh->move_from && sh->replicas[k]->worker == sh->move_from;
            if (!pd_voter) {
                if (cfg_has) step(pd, gid, VXPD__CMD_REPLICA_STEP__STEP__PROMOTE, sh->move_to, 0);
            } else if (cfg_has && cfg_voter) {
                if (from_in_pd)
                    step(pd, gid, VXPD__CMD_REPLICA_STEP__STEP__REMOVE, sh->move_from, 0);
                else if (sh->move_from == 0 || !in_config(r, sh->move_from, &from_voter))
                    step(pd, gid, VXPD__CMD_REPLICA_STEP__STEP__FINISH_MOVE, 0, 0);
            }
        }
}

static void tick_cb(uv_timer_t *t)
{
    vx_pd *pd = t->data;
    if (pd->nwatches > 0) {
        if (pd->closing || raft_state(pd->raft) != RAFT_LEADER) {
            answer_watches(pd, true, VX_PD_NOT_LEADER);
        } else { /* long-waiting watches get the (unchanged) topology */
            size_t kept = 0;
            for (size_t i = 0; i < pd->nwatches; i++) {
                if (now_ms(pd) - pd->watches[i].since_ms >= WATCH_MAX_MS) h_topology(pd, pd->watches[i].call);
                else pd->watches[kept++] = pd->watches[i];
            }
            pd->nwatches = kept;
        }
    }
    if (pd->closing || raft_state(pd->raft) != RAFT_LEADER) return;
    if (pd->ready_term != pd->raft->current_term) {
        start_barrier(pd);
        return;
    }
    if (pd->inflight > 0) return; /* the previous round is not applied yet */
    vx_pd_cluster c;
    if (cluster_view(pd, &c) != 0) return;
    uint64_t now = now_ms(pd);
    vx_pd_state_change ch[MAX_ACTIONS];
    size_t n = 0;
    if (vx_pd_health_step(&c, now, ch, MAX_ACTIONS, &n) == 0 && n > 0) {
        for (size_t i = 0; i < n; i++) {
            fprintf(stderr, "pd: worker %" PRIu64 ": %s -> %s\n", ch[i].worker,
                    vx_pd_state_name(ch[i].from), vx_pd_state_name(ch[i].to));
            Vxpd__CmdSetWorkerState ss = VXPD__CMD_SET_WORKER_STATE__INIT;
            ss.id = ch[i].worker;
            ss.state = ch[i].to;
            ss.expect_state = ch[i].from;
            ss.check_expect = true;
            Vxpd__Command cmd = VXPD__COMMAND__INIT;
            cmd.cmd_case = VXPD__COMMAND__CMD_SET_WORKER_STATE;
            cmd.set_worker_state = &ss;
            propose(pd, &cmd, NULL, 0, NULL);
        }
        vx_pd_cluster_free(&c);
        return; /* decide the rest on the new states */
    }
    vx_pd_action a[MAX_ACTIONS];
    n = 0;
    if (vx_pd_repair(&c, a, MAX_ACTIONS, &n) == 0) run_actions(pd, a, n);
    if (n == 0) drive_moves(pd);
    if (n == 0 && pd->inflight == 0 && now - pd->last_balance_ms >= pd->opt.reconcile_ms) {
        pd->last_balance_ms = now;
        vx_pd_balance_opts bo = VX_PD_BALANCE_OPTS_DEFAULT;
        if (vx_pd_balance(&c, &bo, a, MAX_ACTIONS, &n) == 0) run_actions(pd, a, n);
    }
    vx_pd_cluster_free(&c);
}

/* ---- life cycle ---------------------------------------------------------------------- */

int vx_pd_start(vx_node *node, uv_loop_t *loop, const vx_pd_options *opt, vx_pd **out,
                char *errbuf)
{
    if (opt->npeers == 0 || opt->npeers > VX_PD_MAX_PEERS)
        return vx_errf(errbuf, VX_PD_ERRMSG_LEN, VX_EINVAL, "1 to %d PD peers", VX_PD_MAX_PEERS);
    vx_pd *pd = calloc(1, sizeof *pd);
    if (pd == NULL) return vx_errf(errbuf, VX_PD_ERRMSG_LEN, VX_ENOMEM, "out of memory");
    pd->loop = loop;
    pd->node = node;
    pd->opt = *opt;
    const char *self_rpc = NULL;
    for (unsigned i = 0; i < opt->npeers; i++) {
        snprintf(pd->peer_text[i][0], sizeof pd->peer_text[i][0], "%s", opt->peers[i].raft_address);
        snprintf(pd->peer_text[i][1], sizeof pd->peer_text[i][1], "%s", opt->peers[i].rpc_address);
        pd->opt.peers[i].raft_address = pd->peer_text[i][0];
        pd->opt.peers[i].rpc_address = pd->peer_text[i][1];
        if (opt->peers[i].id == opt->id) self_rpc = pd->peer_text[i][1];
    }
    snprintf(pd->secret, sizeof pd->secret, "%s", opt->secret ? opt->secret : "");
    pd->opt.secret = pd->secret;
    if (pd->opt.tick_ms == 0) pd->opt.tick_ms = 500;
    if (pd->opt.reconcile_ms == 0) pd->opt.reconcile_ms = 30000;
    if (pd->opt.move_timeout_ms == 0) pd->opt.move_timeout_ms = 300000;
    if (pd->opt.default_shards == 0) pd->opt.default_shards = 1;
    if (pd->opt.default_rf == 0) pd->opt.default_rf = 3;
    if (self_rpc == NULL) {
        free(pd);
        return vx_errf(errbuf, VX_PD_ERRMSG_LEN, VX_EINVAL, "id %" PRIu64 " is not among the peers",
                       opt->id);
    }
    pd->st = vx_pd_state_new();
    if (pd->st == NULL) {
        free(pd);
        return vx_errf(errbuf, VX_PD_ERRMSG_LEN, VX_ENOMEM, "out of memory");
    }
    vx_pd_fsm_init(&pd->fsm, pd->st, on_result, pd);
    char err[VX_NODE_ERRMSG_LEN];
    vx_group_options go = {0};
    /* the PD is the only group of its process: a short timeout elects a new
     * leader in about a second after a crash (libraft randomizes it in [t, 2t]) */
    go.election_timeout_ms = opt->election_timeout_ms ? opt->election_timeout_ms : 500;
    go.snapshot_threshold = 1024;
    go.snapshot_trailing = 256;
    int rc = vx_group_new(node, VX_PD_GROUP_ID, opt->id, &pd->fsm.fsm, &go, &pd->g, err);
    if (rc != 0) {
        vx_pd_state_free(pd->st);
        free(pd);
        return vx_errf(errbuf, VX_PD_ERRMSG_LEN, rc, "PD group: %s", err);
    }
    pd->raft = pd->fsm.raft = vx_group_raft(pd->g);
    raft_id ids[VX_PD_MAX_PEERS];
    const char *addrs[VX_PD_MAX_PEERS];
    for (unsigned i = 0; i < opt->npeers; i++) {
        ids[i] = pd->opt.peers[i].id;
        addrs[i] = pd->opt.peers[i].raft_address;
    }
    rc = vx_group_bootstrap(pd->g, opt->npeers, ids, addrs);
    if (rc == 0) rc = vx_group_start(pd->g);
    if (rc != 0) /* the group is released with the node */
        return vx_errf(errbuf, VX_PD_ERRMSG_LEN, rc, "PD group cannot start");
    vx_rpc_server_options ro = {pd->secret, strlen(pd->secret), 0, 0};
    char rerr[256];
    rc = vx_rpc_server_new(loop, self_rpc, &ro, on_call, pd, &pd->rpc, rerr);
    if (rc != 0) return vx_errf(errbuf, VX_PD_ERRMSG_LEN, rc, "PD RPC on %s: %s", self_rpc, rerr);
    uv_timer_init(loop, &pd->tick);
    pd->tick.data = pd;
    uv_timer_start(&pd->tick, tick_cb, pd->opt.tick_ms, pd->opt.tick_ms);
    *out = pd;
    return 0;
}

int vx_pd_rpc_port(vx_pd *pd) { return vx_rpc_server_port(pd->rpc); }

bool vx_pd_is_leader(vx_pd *pd)
{
    return raft_state(pd->raft) == RAFT_LEADER && pd->ready_term == pd->raft->current_term;
}

const vx_pd_state *vx_pd_get_state(vx_pd *pd) { return pd->st; }

static void close_part(void *data)
{
    vx_pd *pd = data;
    if (--pd->close_pending == 0 && pd->close_cb) pd->close_cb(pd->close_data);
}

static void timer_closed(uv_handle_t *h) { close_part(h->data); }

void vx_pd_close(vx_pd *pd, void (*cb)(void *data), void *data)
{
    pd->closing = true;
    answer_watches(pd, true, VX_PD_RETRY);
    pd->close_cb = cb;
    pd->close_data = data;
    pd->close_pending = 2;
    uv_timer_stop(&pd->tick);
    uv_close((uv_handle_t *)&pd->tick, timer_closed);
    vx_rpc_server_close(pd->rpc, close_part, pd);
}

void vx_pd_free(vx_pd *pd)
{
    if (pd == NULL) return;
    mem_clear(pd);
    free(pd->watches);
    vx_pd_state_free(pd->st);
    free(pd);
}
