/*
 * state.c - the placement driver's replicated state machine (state.h).
 */
#include "pd/state.h"

#include "base/err.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vx_pd_state {
    Vxpd__State *s;
};

#define REFUSE(res, code, ...)                                                                     \
    do {                                                                                           \
        (res)->status = (code);                                                                    \
        snprintf((res)->msg, sizeof (res)->msg, __VA_ARGS__);                                      \
        return 0;                                                                                  \
    } while (0)

/* ---- the malloc'd tree ---------------------------------------------------------------- */

static void str_free(char *s)
{
    if (s != NULL && s != protobuf_c_empty_string) free(s);
}

/* Replace *field by a copy of v; false when out of memory (field unchanged). */
static bool str_set(char **field, const char *v)
{
    char *c = strdup(v ? v : "");
    if (c == NULL) return false;
    str_free(*field);
    *field = c;
    return true;
}

static bool push(void ***arr, size_t *n, void *item)
{
    void **a = realloc(*arr, (*n + 1) * sizeof *a);
    if (a == NULL) return false;
    a[(*n)++] = item;
    *arr = a;
    return true;
}

static void erase(void **arr, size_t *n, size_t i)
{
    memmove(&arr[i], &arr[i + 1], (*n - i - 1) * sizeof *arr);
    (*n)--;
}

static Vxpd__State *state_alloc(void)
{
    Vxpd__State *s = malloc(sizeof *s);
    if (s) vxpd__state__init(s);
    return s;
}

vx_pd_state *vx_pd_state_new(void)
{
    vx_pd_state *st = calloc(1, sizeof *st);
    if (st == NULL) return NULL;
    st->s = state_alloc();
    if (st->s == NULL) {
        free(st);
        return NULL;
    }
    return st;
}

void vx_pd_state_free(vx_pd_state *st)
{
    if (st == NULL) return;
    vxpd__state__free_unpacked(st->s, NULL);
    free(st);
}

const Vxpd__State *vx_pd_state_get(const vx_pd_state *st) { return st->s; }

/* ---- lookups ------------------------------------------------------------------------- */

static Vxpd__Worker *find_worker(const Vxpd__State *s, uint64_t id)
{
    for (size_t i = 0; i < s->n_workers; i++)
        if (s->workers[i]->id == id) return s->workers[i];
    return NULL;
}

static Vxpd__Collection *find_coll(const Vxpd__State *s, const char *name, size_t *pos)
{
    for (size_t i = 0; i < s->n_collections; i++)
        if (strcmp(s->collections[i]->name, name) == 0) {
            if (pos) *pos = i;
            return s->collections[i];
        }
    return NULL;
}

static Vxpd__Shard *find_shard(const Vxpd__State *s, uint64_t gid, Vxpd__Collection **coll)
{
    for (size_t i = 0; i < s->n_collections; i++)
        for (size_t j = 0; j < s->collections[i]->n_shards; j++)
            if (s->collections[i]->shards[j]->group_id == gid) {
                if (coll) *coll = s->collections[i];
                return s->collections[i]->shards[j];
            }
    return NULL;
}

static Vxpd__Replica *find_replica(const Vxpd__Shard *sh, uint64_t worker, size_t *pos)
{
    for (size_t i = 0; i < sh->n_replicas; i++)
        if (sh->replicas[i]->worker == worker) {
            if (pos) *pos = i;
            return sh->replicas[i];
        }
    return NULL;
}

const Vxpd__Worker *vx_pd_state_worker(const vx_pd_state *st, uint64_t id)
{
    return find_worker(st->s, id);
}

const Vxpd__Worker *vx_pd_state_worker_by_name(const vx_pd_state *st, const char *name)
{
    for (size_t i = 0; i < st->s->n_workers; i++)
        if (strcmp(st->s->workers[i]->name, name) == 0) return st->s->workers[i];
    return NULL;
}

const Vxpd__Collection *vx_pd_state_collection(const vx_pd_state *st, const char *name)
{
    return find_coll(st->s, name, NULL);
}

const Vxpd__Shard *vx_pd_state_shard(const vx_pd_state *st, uint64_t group_id,
                                     const Vxpd__Collection **coll)
{
    Vxpd__Collection *c = NULL;
    Vxpd__Shard *sh = find_shard(st->s, group_id, &c);
    if (coll) *coll = c;
    return sh;
}

static size_t replicas_on(const Vxpd__State *s, uint64_t worker)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_collections; i++)
        for (size_t j = 0; j < s->collections[i]->n_shards; j++)
            if (find_replica(s->collections[i]->shards[j], worker, NULL)) n++;
    return n;
}

/* READY <-> ACTIVE follow whether a worker hosts replicas (state.h). */
static void settle_active(Vxpd__State *s)
{
    for (size_t i = 0; i < s->n_workers; i++) {
        Vxpd__Worker *w = s->workers[i];
        if (w->state == VX_PD_READY && replicas_on(s, w->id) > 0)
            w->state = VX_PD_ACTIVE;
        else if (w->state == VX_PD_ACTIVE && replicas_on(s, w->id) == 0)
            w->state = VX_PD_READY;
    }
}

static void bump(Vxpd__State *s, Vxpd__Shard *sh)
{
    s->epoch++;
    if (sh) sh->epoch = s->epoch;
}

/* ---- commands ------------------------------------------------------------------------ */

static bool valid_addr(const char *a) { return a && *a && strlen(a) <= VX_PD_ADDR_MAX && strchr(a, ':'); }

static int apply_register(Vxpd__State *s, const Vxpd__CmdRegisterWorker *c, vx_pd_result *res)
{
    const Vxpd__Worker *in = c ? c->worker : NULL;
    if (in == NULL || in->name[0] == '\0' || strlen(in->name) > 128)
        REFUSE(res, VX_EINVAL, "a worker needs a name of 1 to 128 bytes");
    if (!valid_addr(in->rpc_address) || !valid_addr(in->raft_address))
        REFUSE(res, VX_EINVAL, "worker %s: rpc and raft addresses must be host:port", in->name);
    if (strlen(in->zone) >= VX_PD_DOMAIN_MAX || strlen(in->rack) >= VX_PD_DOMAIN_MAX)
        REFUSE(res, VX_EINVAL, "worker %s: zone and rack names are at most %d bytes", in->name,
               VX_PD_DOMAIN_MAX - 1);
    Vxpd__Worker *w = NULL;
    for (size_t i = 0; i < s->n_workers; i++)
        if (strcmp(s->workers[i]->name, in->name) == 0) w = s->workers[i];
    if (w != NULL && w->state == VX_PD_REMOVED)
        REFUSE(res, VX_ESTATE, "worker %s (id %llu) was removed; it cannot rejoin under that name",
               in->name, (unsigned long long)w->id);
    bool fresh = w == NULL;
    if (fresh) {
        w = malloc(sizeof *w);
        if (w == NULL) return VX_ENOMEM;
        vxpd__worker__init(w);
        w->capacity = malloc(sizeof *w->capacity);
        if (w->capacity == NULL || !str_set(&w->name, in->name)) {
            free(w->capacity);
            free(w);
            return VX_ENOMEM;
        }
        vxpd__capacity__init(w->capacity);
    }
    bool changed = fresh || strcmp(w->rpc_address, in->rpc_address) != 0 ||
                   strcmp(w->raft_address, in->raft_address) != 0 ||
                   strcmp(w->zone, in->zone) != 0 || strcmp(w->rack, in->rack) != 0;
    if (!str_set(&w->rpc_address, in->rpc_address) || !str_set(&w->raft_address, in->raft_address) ||
        !str_set(&w->zone, in->zone) || !str_set(&w->rack, in->rack)) {
        if (fresh) vxpd__worker__free_unpacked(w, NULL);
        return VX_ENOMEM;
    }
    w->labels = in->labels;
    if (in->capacity) {
        w->capacity->cpu_cores = in->capacity->cpu_cores;
        w->capacity->mem_bytes = in->capacity->mem_bytes;
        w->capacity->disk_bytes = in->capacity->disk_bytes;
    }
    if (fresh) {
        if (s->next_worker_id == 0) s->next_worker_id = 1;
        w->id = s->next_worker_id;
        w->state = VX_PD_READY;
        w->registered_epoch = s->epoch + 1;
        if (!push((void ***)&s->workers, &s->n_workers, w)) {
            vxpd__worker__free_unpacked(w, NULL);
            return VX_ENOMEM;
        }
        s->next_worker_id++;
    }
    if (changed) bump(s, NULL);
    settle_active(s);
    res->value = w->id;
    return 0;
}

static int apply_set_state(Vxpd__State *s, const Vxpd__CmdSetWorkerState *c, vx_pd_result *res)
{
    if (c == NULL || c->state > VX_PD_REMOVED) REFUSE(res, VX_EINVAL, "unknown worker state");
    Vxpd__Worker *w = find_worker(s, c->id);
    if (w == NULL) REFUSE(res, VX_ENOTFOUND, "no worker %llu", (unsigned long long)c->id);
    if (c->check_expect && w->state != c->expect_state)
        REFUSE(res, VX_ESTATE, "worker %llu is %s, not %s", (unsigned long long)c->id,
               vx_pd_state_name(w->state), vx_pd_state_name(c->expect_state));
    if (w->state == VX_PD_REMOVED && c->state != VX_PD_REMOVED)
        REFUSE(res, VX_ESTATE, "worker %llu was removed", (unsigned long long)c->id);
    res->value = w->id;
    if (w->state == c->state) return 0;
    w->state = c->state;
    bump(s, NULL);
    settle_active(s);
    return 0;
}

static int apply_create(Vxpd__State *s, const Vxpd__CmdCreateCollection *c, vx_pd_result *res)
{
    if (c == NULL || c->name[0] == '\0' || strlen(c->name) > VX_PD_NAME_MAX)
        REFUSE(res, VX_EINVAL, "a collection name is 1 to %d bytes", VX_PD_NAME_MAX);
    const Vxpd__Collection *old = find_coll(s, c->name, NULL);
    if (old && c->request_id[0] && strcmp(old->create_request, c->request_id) == 0) {
        res->value = old->id; /* the same create, retried */
        return 0;
    }
    if (old) REFUSE(res, VX_EEXISTS, "collection %s already exists", c->name);
    if (strlen(c->request_id) > 64) REFUSE(res, VX_EINVAL, "request ids are at most 64 bytes");
    if (c->shard_count < 1 || c->shard_count > VX_PD_MAX_SHARDS)
        REFUSE(res, VX_EINVAL, "shard_count must be 1 to %d", VX_PD_MAX_SHARDS);
    if (c->replication_factor < 1 || c->replication_factor > VX_PD_MAX_REPLICAS)
        REFUSE(res, VX_EINVAL, "replication_factor must be 1 to %d", VX_PD_MAX_REPLICAS);
    if (c->n_placement != (size_t)c->shard_count * c->replication_factor)
        REFUSE(res, VX_EINVAL, "placement names %zu replicas, want %u", c->n_placement,
               c->shard_count * c->replication_factor);
    for (size_t i = 0; i < c->n_placement; i++) {
        const Vxpd__Worker *w = find_worker(s, c->placement[i]);
        if (w == NULL || w->state == VX_PD_REMOVED || w->state == VX_PD_ERROR)
            REFUSE(res, VX_ESTATE, "placement names worker %llu, which cannot take replicas",
                   (unsigned long long)c->placement[i]);
        size_t first = i - i % c->replication_factor;
        for (size_t j = first; j < i; j++)
            if (c->placement[j] == c->placement[i])
                REFUSE(res, VX_EINVAL, "placement puts two replicas of shard %zu on worker %llu",
                       i / c->replication_factor, (unsigned long long)c->placement[i]);
    }
    Vxpd__Collection *col = malloc(sizeof *col);
    if (col == NULL) return VX_ENOMEM;
    vxpd__collection__init(col);
    if (!str_set(&col->name, c->name) || !str_set(&col->config_json, c->config_json) ||
        !str_set(&col->create_request, c->request_id))
        goto nomem;
    col->shard_count = c->shard_count;
    col->replication_factor = c->replication_factor;
    col->shards = calloc(c->shard_count, sizeof *col->shards);
    if (col->shards == NULL) goto nomem;
    if (s->next_group_id < VX_PD_FIRST_GROUP_ID) s->next_group_id = VX_PD_FIRST_GROUP_ID;
    for (uint32_t i = 0; i < c->shard_count; i++) {
        Vxpd__Shard *sh = malloc(sizeof *sh);
        if (sh == NULL) goto nomem;
        vxpd__shard__init(sh);
        col->shards[col->n_shards++] = sh;
        sh->index = i;
        sh->group_id = s->next_group_id + i;
        sh->replicas = calloc(c->replication_factor, sizeof *sh->replicas);
        sh->bootstrap = calloc(c->replication_factor, sizeof *sh->bootstrap);
        if (sh->replicas == NULL || sh->bootstrap == NULL) goto nomem;
        sh->n_bootstrap = c->replication_factor;
        memcpy(sh->bootstrap, &c->placement[(size_t)i * c->replication_factor],
               c->replication_factor * sizeof *sh->bootstrap);
        for (uint32_t r = 0; r < c->replication_factor; r++) {
            Vxpd__Replica *rep = malloc(sizeof *rep);
            if (rep == NULL) goto nomem;
            vxpd__replica__init(rep);
            rep->worker = c->placement[(size_t)i * c->replication_factor + r];
            rep->voter = true;
            sh->replicas[sh->n_replicas++] = rep;
        }
    }
    if (!push((void ***)&s->collections, &s->n_collections, col)) goto nomem;
    if (s->next_collection_id == 0) s->next_collection_id = 1;
    col->id = s->next_collection_id++;
    s->next_group_id += c->shard_count;
    bump(s, NULL);
    col->created_epoch = s->epoch;
    for (size_t i = 0; i < col->n_shards; i++) col->shards[i]->epoch = s->epoch;
    settle_active(s);
    res->value = col->id;
    return 0;
nomem:
    vxpd__collection__free_unpacked(col, NULL);
    return VX_ENOMEM;
}

static int apply_delete(Vxpd__State *s, const Vxpd__CmdDeleteCollection *c, vx_pd_result *res)
{
    size_t pos;
    Vxpd__Collection *col = c ? find_coll(s, c->name, &pos) : NULL;
    if (col == NULL) REFUSE(res, VX_ENOTFOUND, "no collection %s", c ? c->name : "");
    res->value = col->id;
    erase((void **)s->collections, &s->n_collections, pos);
    vxpd__collection__free_unpacked(col, NULL);
    bump(s, NULL);
    settle_active(s);
    return 0;
}

static bool valid_schema(const char *t)
{
    return !strcmp(t, "keyword") || !strcmp(t, "integer") || !strcmp(t, "float") || !strcmp(t, "bool");
}

static int apply_payload_index(Vxpd__State *s, const Vxpd__CmdPayloadIndex *c, vx_pd_result *res)
{
    Vxpd__Collection *col = c ? find_coll(s, c->collection, NULL) : NULL;
    if (col == NULL) REFUSE(res, VX_ENOTFOUND, "no collection %s", c ? c->collection : "");
    if (c->field[0] == '\0' || strlen(c->field) > 119)
        REFUSE(res, VX_EINVAL, "a payload index field is 1 to 119 bytes");
    size_t pos = col->n_payload_indexes;
    for (size_t i = 0; i < col->n_payload_indexes; i++)
        if (!strcmp(col->payload_indexes[i]->field, c->field)) pos = i;
    if (c->drop) {
        if (pos == col->n_payload_indexes) return 0; /* not there: nothing to do */
        vxpd__payload_index__free_unpacked(col->payload_indexes[pos], NULL);
        erase((void **)col->payload_indexes, &col->n_payload_indexes, pos);
        bump(s, NULL);
        return 0;
    }
    if (!valid_schema(c->schema)) REFUSE(res, VX_EINVAL, "unknown payload index type %s", c->schema);
    if (pos < col->n_payload_indexes) {
        if (!strcmp(col->payload_indexes[pos]->schema, c->schema)) return 0;
        if (!str_set(&col->payload_indexes[pos]->schema, c->schema)) return VX_ENOMEM;
    } else {
        Vxpd__PayloadIndex *pi = malloc(sizeof *pi);
        if (pi == NULL) return VX_ENOMEM;
        vxpd__payload_index__init(pi);
        if (!str_set(&pi->field, c->field) || !str_set(&pi->schema, c->schema) ||
            !push((void ***)&col->payload_indexes, &col->n_payload_indexes, pi)) {
            vxpd__payload_index__free_unpacked(pi, NULL);
            return VX_ENOMEM;
        }
    }
    bump(s, NULL);
    return 0;
}

/* New settings for a collection (the PD validated them: same size and
 * distance); its shape (shards, replicas) is not part of it. */
static int apply_update(Vxpd__State *s, const Vxpd__CmdUpdateCollection *c, vx_pd_result *res)
{
    Vxpd__Collection *col = c ? find_coll(s, c->name, NULL) : NULL;
    if (col == NULL) REFUSE(res, VX_ENOTFOUND, "no collection %s", c ? c->name : "");
    if (strcmp(col->config_json, c->config_json) == 0) return 0;
    if (!str_set(&col->config_json, c->config_json)) return VX_ENOMEM;
    bump(s, NULL);
    return 0;
}

static unsigned voters(const Vxpd__Shard *sh)
{
    unsigned n = 0;
    for (size_t i = 0; i < sh->n_replicas; i++) n += sh->replicas[i]->voter;
    return n;
}

static void drop_replica(Vxpd__Shard *sh, size_t pos)
{
    vxpd__replica__free_unpacked(sh->replicas[pos], NULL);
    erase((void **)sh->replicas, &sh->n_replicas, pos);
}

static int apply_step(Vxpd__State *s, const Vxpd__CmdReplicaStep *c, vx_pd_result *res)
{
    if (c == NULL) REFUSE(res, VX_EINVAL, "empty replica step");
    Vxpd__Collection *col = NULL;
    Vxpd__Shard *sh = find_shard(s, c->group_id, &col);
    if (sh == NULL) REFUSE(res, VX_ENOTFOUND, "no shard with group %llu", (unsigned long long)c->group_id);
    unsigned long long gid = c->group_id, wid = c->worker;
    size_t pos;
    Vxpd__Replica *rep = find_replica(sh, c->worker, &pos);
    switch (c->step) {
    case VXPD__CMD_REPLICA_STEP__STEP__BEGIN_MOVE: {
        if (sh->move_to != 0) {
            if (sh->move_to == c->worker && sh->move_from == c->from_worker) return 0;
            REFUSE(res, VX_ESTATE, "shard %llu: a move to worker %llu is in flight", gid,
                   (unsigned long long)sh->move_to);
        }
        const Vxpd__Worker *w = find_worker(s, c->worker);
        if (w == NULL || (w->state != VX_PD_READY && w->state != VX_PD_ACTIVE))
            REFUSE(res, VX_ESTATE, "worker %llu cannot take replicas", wid);
        if (rep != NULL) REFUSE(res, VX_EEXISTS, "worker %llu already holds shard %llu", wid, gid);
        if (c->from_worker != 0 && find_replica(sh, c->from_worker, NULL) == NULL)
            REFUSE(res, VX_ENOTFOUND, "worker %llu holds no replica of shard %llu",
                   (unsigned long long)c->from_worker, gid);
        if (sh->n_replicas >= VX_PD_MAX_REPLICAS)
            REFUSE(res, VX_EFULL, "shard %llu has %d replicas already", gid, VX_PD_MAX_REPLICAS);
        Vxpd__Replica *n = malloc(sizeof *n);
        if (n == NULL) return VX_ENOMEM;
        vxpd__replica__init(n);
        n->worker = c->worker;
        n->voter = false;
        if (!push((void ***)&sh->replicas, &sh->n_replicas, n)) {
            free(n);
            return VX_ENOMEM;
        }
        sh->move_to = c->worker;
        sh->move_from = c->from_worker;
        break;
    }
    case VXPD__CMD_REPLICA_STEP__STEP__PROMOTE:
        if (rep == NULL) REFUSE(res, VX_ENOTFOUND, "worker %llu holds no replica of shard %llu", wid, gid);
        if (rep->voter) return 0;
        rep->voter = true;
        break;
    case VXPD__CMD_REPLICA_STEP__STEP__REMOVE:
        if (rep == NULL) return 0;
        /* never below the replication factor in voters: a removal that
         * would be (a stale step of a move rolled back meanwhile, say) is
         * refused; a dead replica is removed only once a replacement is in */
        if (rep->voter && voters(sh) - 1 < col->replication_factor)
            REFUSE(res, VX_ESTATE, "shard %llu: removing worker %llu would leave %u voters, fewer than %u",
                   gid, wid, voters(sh) - 1, col->replication_factor);
        drop_replica(sh, pos);
        if (sh->move_to == c->worker) sh->move_to = sh->move_from = 0;
        break;
    case VXPD__CMD_REPLICA_STEP__STEP__FINISH_MOVE: {
        if (sh->move_to == 0) return 0;
        Vxpd__Replica *to = find_replica(sh, sh->move_to, NULL);
        if (to == NULL || !to->voter || (sh->move_from && find_replica(sh, sh->move_from, NULL)))
            REFUSE(res, VX_ESTATE, "shard %llu: the move has steps left", gid);
        sh->move_to = sh->move_from = 0;
        return 0; /* replicas unchanged: no epoch */
    }
    case VXPD__CMD_REPLICA_STEP__STEP__ABORT_MOVE: {
        if (sh->move_to == 0) return 0;
        /* Roll back to the replicas before the move: the joining replica
         * leaves (learner or already promoted) while the source is still
         * there; once the source is gone the move is as good as done and
         * only the record is cleared.  A repair (no source) keeps a
         * replica that was promoted. */
        size_t tpos;
        Vxpd__Replica *to = find_replica(sh, sh->move_to, &tpos);
        bool from_there = sh->move_from && find_replica(sh, sh->move_from, NULL);
        sh->move_to = sh->move_from = 0;
        if (to == NULL || (!from_there && to->voter)) return 0;
        drop_replica(sh, tpos);
        break;
    }
    default:
        REFUSE(res, VX_EINVAL, "unknown replica step %d", (int)c->step);
    }
    bump(s, sh);
    settle_active(s);
    return 0;
}

/* ---- credentials (issue 7) --------------------------------------------------------------
 * Checked again at apply like everything else: a command that would store a
 * clear password, an unbounded scope or a malformed digest is refused. */

#define AUTH_MAX_USERS 10000
#define AUTH_MAX_KEYS 100000
#define AUTH_MAX_REVOKED 100000
#define AUTH_MAX_SCOPE 256

static bool valid_scope(char **colls, size_t n)
{
    if (n > AUTH_MAX_SCOPE) return false;
    for (size_t i = 0; i < n; i++)
        if (colls[i][0] == '\0' || strlen(colls[i]) > VX_PD_NAME_MAX) return false;
    return true;
}

static bool valid_principal_name(const char *n)
{
    size_t len = strlen(n);
    if (len < 1 || len > 128) return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)n[i] < 0x20 || n[i] == 0x7f) return false;
    return true;
}

/* A deep copy in protobuf-c's unpacked shape (pack, unpack). */
#define DEEP_COPY(fn, src, out)                                                              \
    do {                                                                                           \
        size_t n_ = vxpd__##fn##__get_packed_size(src);                                           \
        uint8_t *b_ = malloc(n_ ? n_ : 1);                                                         \
        if (b_ == NULL) return VX_ENOMEM;                                                          \
        vxpd__##fn##__pack(src, b_);                                                               \
        (out) = vxpd__##fn##__unpack(NULL, n_, b_);                                                \
        free(b_);                                                                                  \
        if ((out) == NULL) return VX_ENOMEM;                                                       \
    } while (0)

static Vxpd__User *find_user(const Vxpd__State *s, const char *name, size_t *pos)
{
    for (size_t i = 0; i < s->n_users; i++)
        if (strcmp(s->users[i]->name, name) == 0) {
            if (pos) *pos = i;
            return s->users[i];
        }
    return NULL;
}

static int apply_put_user(Vxpd__State *s, const Vxpd__CmdPutUser *c, vx_pd_result *res)
{
    const Vxpd__User *in = c ? c->user : NULL;
    if (in == NULL || !valid_principal_name(in->name))
        REFUSE(res, VX_EINVAL, "a user name is 1 to 128 printable bytes");
    if (in->role < 1 || in->role > 3) REFUSE(res, VX_EINVAL, "role must be read, write or admin");
    if (!valid_scope(in->collections, in->n_collections))
        REFUSE(res, VX_EINVAL, "a scope names at most %d collections of 1 to %d bytes",
               AUTH_MAX_SCOPE, VX_PD_NAME_MAX);
    if (in->pwhash[0] != '\0' && strncmp(in->pwhash, "$argon2id$", 10) != 0)
        REFUSE(res, VX_EINVAL, "a password is stored only as an argon2id hash");
    size_t pos = 0;
    Vxpd__User *old = find_user(s, in->name, &pos);
    if (old && c->create_only) REFUSE(res, VX_EEXISTS, "user %s already exists", in->name);
    if (old == NULL && in->pwhash[0] == '\0') REFUSE(res, VX_EINVAL, "a new user needs a password");
    if (old == NULL && s->n_users >= AUTH_MAX_USERS)
        REFUSE(res, VX_EFULL, "at most %d users", AUTH_MAX_USERS);
    Vxpd__User *u;
    DEEP_COPY(user, in, u);
    if (old) {
        u->created_ms = old->created_ms;
        u->token_gen = old->token_gen + (in->pwhash[0] != '\0');
        if (in->pwhash[0] == '\0' && !str_set(&u->pwhash, old->pwhash)) {
            vxpd__user__free_unpacked(u, NULL);
            return VX_ENOMEM;
        }
        vxpd__user__free_unpacked(old, NULL);
        s->users[pos] = u;
    } else {
        /* a generation no token of any earlier user of this name can carry:
         * a user's generation never runs ahead of auth_epoch + 1 (each bump
         * of it bumps auth_epoch too), and auth_epoch only grows, so a
         * deleted and re-created user's old tokens never verify again */
        u->token_gen = s->auth_epoch + 1;
        if (!push((void ***)&s->users, &s->n_users, u)) {
            vxpd__user__free_unpacked(u, NULL);
            return VX_ENOMEM;
        }
    }
    s->auth_epoch++;
    return 0;
}

static int apply_delete_user(Vxpd__State *s, const Vxpd__CmdDeleteUser *c, vx_pd_result *res)
{
    size_t pos;
    Vxpd__User *u = c ? find_user(s, c->name, &pos) : NULL;
    if (u == NULL) REFUSE(res, VX_ENOTFOUND, "no user %s", c ? c->name : "");
    erase((void **)s->users, &s->n_users, pos);
    vxpd__user__free_unpacked(u, NULL);
    s->auth_epoch++;
    return 0;
}

static Vxpd__ApiKey *find_key(const Vxpd__State *s, const char *id, size_t *pos)
{
    for (size_t i = 0; i < s->n_api_keys; i++)
        if (strcmp(s->api_keys[i]->id, id) == 0) {
            if (pos) *pos = i;
            return s->api_keys[i];
        }
    return NULL;
}

static int apply_put_key(Vxpd__State *s, const Vxpd__CmdPutApiKey *c, vx_pd_result *res)
{
    const Vxpd__ApiKey *in = c ? c->key : NULL;
    if (in == NULL || in->id[0] == '\0' || strlen(in->id) > 32)
        REFUSE(res, VX_EINVAL, "a key id is 1 to 32 bytes");
    for (const char *p = in->id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            REFUSE(res, VX_EINVAL, "a key id is lower-case hex");
    if (in->digest.len != 32) REFUSE(res, VX_EINVAL, "a key is kept as a 32-byte digest");
    if (in->role < 1 || in->role > 3) REFUSE(res, VX_EINVAL, "role must be read, write or admin");
    if (strlen(in->name) > 128) REFUSE(res, VX_EINVAL, "a key name is at most 128 bytes");
    if (!valid_scope(in->collections, in->n_collections))
        REFUSE(res, VX_EINVAL, "a scope names at most %d collections of 1 to %d bytes",
               AUTH_MAX_SCOPE, VX_PD_NAME_MAX);
    if (!(in->rate >= 0 && in->rate <= 1e9) || !(in->burst >= 0 && in->burst <= 1e9))
        REFUSE(res, VX_EINVAL, "rate and burst are 0 to 1e9");
    if (find_key(s, in->id, NULL)) REFUSE(res, VX_EEXISTS, "key %s already exists", in->id);
    if (s->n_api_keys >= AUTH_MAX_KEYS) REFUSE(res, VX_EFULL, "at most %d keys", AUTH_MAX_KEYS);
    Vxpd__ApiKey *k;
    DEEP_COPY(api_key, in, k);
    if (!push((void ***)&s->api_keys, &s->n_api_keys, k)) {
        vxpd__api_key__free_unpacked(k, NULL);
        return VX_ENOMEM;
    }
    s->auth_epoch++;
    return 0;
}

static int apply_delete_key(Vxpd__State *s, const Vxpd__CmdDeleteApiKey *c, vx_pd_result *res)
{
    size_t pos;
    Vxpd__ApiKey *k = c ? find_key(s, c->id, &pos) : NULL;
    if (k == NULL) REFUSE(res, VX_ENOTFOUND, "no key %s", c ? c->id : "");
    erase((void **)s->api_keys, &s->n_api_keys, pos);
    vxpd__api_key__free_unpacked(k, NULL);
    s->auth_epoch++;
    return 0;
}

static int apply_revoke(Vxpd__State *s, const Vxpd__CmdRevokeTokens *c, vx_pd_result *res)
{
    if (c == NULL) REFUSE(res, VX_EINVAL, "empty revocation");
    for (size_t i = 0; i < s->n_revoked;) { /* expired entries go */
        if (s->revoked[i]->exp < c->now) {
            vxpd__revoked_token__free_unpacked(s->revoked[i], NULL);
            erase((void **)s->revoked, &s->n_revoked, i);
        } else {
            i++;
        }
    }
    if (c->jti[0] == '\0') {
        Vxpd__User *u = find_user(s, c->user, NULL);
        if (u == NULL) REFUSE(res, VX_ENOTFOUND, "no user %s", c->user);
        u->token_gen++;
    } else {
        if (strlen(c->jti) > 64) REFUSE(res, VX_EINVAL, "a token id is at most 64 bytes");
        for (size_t i = 0; i < s->n_revoked; i++)
            if (strcmp(s->revoked[i]->jti, c->jti) == 0) return 0; /* already */
        if (s->n_revoked >= AUTH_MAX_REVOKED)
            REFUSE(res, VX_EFULL, "at most %d revoked tokens outstanding", AUTH_MAX_REVOKED);
        Vxpd__RevokedToken *r = malloc(sizeof *r);
        if (r == NULL) return VX_ENOMEM;
        vxpd__revoked_token__init(r);
        r->exp = c->exp;
        if (!str_set(&r->jti, c->jti) || !push((void ***)&s->revoked, &s->n_revoked, r)) {
            vxpd__revoked_token__free_unpacked(r, NULL);
            return VX_ENOMEM;
        }
    }
    s->auth_epoch++;
    return 0;
}

int vx_pd_state_apply(vx_pd_state *st, const uint8_t *buf, size_t len, vx_pd_result *res)
{
    memset(res, 0, sizeof *res);
    Vxpd__Command *cmd = vxpd__command__unpack(NULL, len, buf);
    if (cmd == NULL) return VX_EFORMAT;
    int rc;
    switch (cmd->cmd_case) {
    case VXPD__COMMAND__CMD_REGISTER_WORKER:
        rc = apply_register(st->s, cmd->register_worker, res);
        break;
    case VXPD__COMMAND__CMD_SET_WORKER_STATE:
        rc = apply_set_state(st->s, cmd->set_worker_state, res);
        break;
    case VXPD__COMMAND__CMD_CREATE_COLLECTION:
        rc = apply_create(st->s, cmd->create_collection, res);
        break;
    case VXPD__COMMAND__CMD_DELETE_COLLECTION:
        rc = apply_delete(st->s, cmd->delete_collection, res);
        break;
    case VXPD__COMMAND__CMD_REPLICA_STEP:
        rc = apply_step(st->s, cmd->replica_step, res);
        break;
    case VXPD__COMMAND__CMD_PAYLOAD_INDEX:
        rc = apply_payload_index(st->s, cmd->payload_index, res);
        break;
    case VXPD__COMMAND__CMD_UPDATE_COLLECTION:
        rc = apply_update(st->s, cmd->update_collection, res);
        break;
    case VXPD__COMMAND__CMD_PUT_USER:
        rc = apply_put_user(st->s, cmd->put_user, res);
        break;
    case VXPD__COMMAND__CMD_DELETE_USER:
        rc = apply_delete_user(st->s, cmd->delete_user, res);
        break;
    case VXPD__COMMAND__CMD_PUT_API_KEY:
        rc = apply_put_key(st->s, cmd->put_api_key, res);
        break;
    case VXPD__COMMAND__CMD_DELETE_API_KEY:
        rc = apply_delete_key(st->s, cmd->delete_api_key, res);
        break;
    case VXPD__COMMAND__CMD_REVOKE_TOKENS:
        rc = apply_revoke(st->s, cmd->revoke_tokens, res);
        break;
    default:
        rc = VX_EFORMAT;
        break;
    }
    vxpd__command__free_unpacked(cmd, NULL);
    return rc;
}

/* ---- snapshots ----------------------------------------------------------------------- */

int vx_pd_state_encode(const vx_pd_state *st, uint8_t **buf, size_t *len)
{
    size_t n = vxpd__state__get_packed_size(st->s);
    uint8_t *b = malloc(n ? n : 1);
    if (b == NULL) return VX_ENOMEM;
    vxpd__state__pack(st->s, b);
    *buf = b;
    *len = n;
    return 0;
}

int vx_pd_state_restore(vx_pd_state *st, const uint8_t *buf, size_t len)
{
    Vxpd__State *s = vxpd__state__unpack(NULL, len, buf);
    if (s == NULL) return VX_EFORMAT;
    for (size_t i = 0; i < s->n_workers; i++)
        if (s->workers[i]->capacity == NULL) {
            s->workers[i]->capacity = malloc(sizeof *s->workers[i]->capacity);
            if (s->workers[i]->capacity == NULL) {
                vxpd__state__free_unpacked(s, NULL);
                return VX_ENOMEM;
            }
            vxpd__capacity__init(s->workers[i]->capacity);
        }
    vxpd__state__free_unpacked(st->s, NULL);
    st->s = s;
    return 0;
}

int vx_pd_command_pack(const Vxpd__Command *cmd, uint8_t **buf, size_t *len)
{
    size_t n = vxpd__command__get_packed_size(cmd);
    uint8_t *b = malloc(n ? n : 1);
    if (b == NULL) return VX_ENOMEM;
    vxpd__command__pack(cmd, b);
    *buf = b;
    *len = n;
    return 0;
}

/* ---- the decision functions' view -------------------------------------------------- */

int vx_pd_state_cluster(const vx_pd_state *st, vx_pd_cluster *out)
{
    const Vxpd__State *s = st->s;
    memset(out, 0, sizeof *out);
    size_t nshards = 0;
    for (size_t i = 0; i < s->n_collections; i++) nshards += s->collections[i]->n_shards;
    out->workers = calloc(s->n_workers ? s->n_workers : 1, sizeof *out->workers);
    out->shards = calloc(nshards ? nshards : 1, sizeof *out->shards);
    if (out->workers == NULL || out->shards == NULL) {
        vx_pd_cluster_free(out);
        return VX_ENOMEM;
    }
    for (size_t i = 0; i < s->n_workers; i++) {
        const Vxpd__Worker *w = s->workers[i];
        vx_pd_worker *o = &out->workers[out->nworkers++];
        o->id = w->id;
        snprintf(o->zone, sizeof o->zone, "%s", w->zone);
        snprintf(o->rack, sizeof o->rack, "%s", w->rack);
        o->state = (vx_pd_worker_state)w->state;
        o->cpu_cores = w->capacity ? w->capacity->cpu_cores : 0;
        o->mem_bytes = w->capacity ? w->capacity->mem_bytes : 0;
        o->disk_bytes = w->capacity ? w->capacity->disk_bytes : 0;
        o->labels = w->labels;
    }
    for (size_t i = 0; i < s->n_collections; i++) {
        const Vxpd__Collection *c = s->collections[i];
        for (size_t j = 0; j < c->n_shards; j++) {
            const Vxpd__Shard *sh = c->shards[j];
            vx_pd_shard *o = &out->shards[out->nshards++];
            o->collection_id = c->id;
            o->shard_index = sh->index;
            o->group_id = sh->group_id;
            o->rf = c->replication_factor;
            for (size_t r = 0; r < sh->n_replicas && o->n < VX_PD_MAX_REPLICAS; r++) {
                o->replicas[o->n].worker = sh->replicas[r]->worker;
                o->replicas[o->n].voter = sh->replicas[r]->voter;
                o->n++;
            }
            o->moving = sh->move_to != 0;
        }
    }
    return 0;
}

void vx_pd_cluster_free(vx_pd_cluster *c)
{
    free(c->workers);
    free(c->shards);
    memset(c, 0, sizeof *c);
}
