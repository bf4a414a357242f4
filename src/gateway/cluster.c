/*
 * cluster.c - the gateway's cluster client (cluster.h): topology snapshots,
 * shard routing with retries and redirects, connection pools and circuit
 * breakers per worker.
 *
 * Threads: a refresher thread keeps the topology snapshot (it refreshes
 * every TTL, at once after an invalidation, soon after a data-path hint
 * that the snapshot is stale); callers never call the PD for a topology
 * themselves, they wait for the refresher only when they have no usable
 * snapshot.  c->mu guards the topology slot, the endpoints and the leader
 * cache; it is never held across blocking I/O (PD calls, connects, RPCs).
 */
#define _GNU_SOURCE
#include "gateway/cluster.h"

#include "gateway/retry_budget.h"

#include "base/err.h"
#include "pd/pdrpc.h"
#include "rpc/rpc.h"
#include "worker.pb-c.h"
#include "worker/worker.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_PD 16
#define ADDR_MAX 128
#define MAX_CANDIDATES 16
#define MAX_REDIRECTS 8 /* per round: stale hints could otherwise bounce forever */
#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 200
#define REFRESH_RETRY_MS 250 /* a failed refresh is retried after this */
#define SOFT_REFRESH_MS 100  /* data-path staleness hints refresh at most this often */

typedef struct endpoint {
    struct endpoint *next;
    char addr[ADDR_MAX];
    vx_rpc_mux *mux; /* the shared connection (one reference held here), NULL: none yet */
    /* breaker */
    unsigned fails;        /* consecutive */
    long long open_until;  /* ms; meaningful while fails >= breaker_failures */
    bool probing;          /* the half-open probe is out */
    uint64_t total_fails, skipped;
} endpoint;

typedef struct leader_entry {
    uint64_t gid;
    char addr[ADDR_MAX];
} leader_entry;

struct vx_cluster {
    char *pd_buf;
    const char *pd_addrs[MAX_PD];
    size_t npd;
    char *secret;
    size_t secret_len;
    unsigned ttl_ms, breaker_failures, breaker_open_ms, pd_timeout_ms, connect_timeout_ms;

    pthread_mutex_t mu;
    pthread_cond_t done_cv; /* a refresh finished (callers wait) */
    pthread_cond_t wake_cv; /* the refresher's wake-up */
    pthread_t refresher;
    bool stop;
    /* topology */
    vx_topo *topo;
    uint64_t gen;           /* invalidations so far */
    uint64_t topo_gen;      /* the snapshot was asked for after this many */
    long long next_refresh; /* ms, monotonic: the refresher's next call (0: now) */
    long long last_start;   /* ms: when the last refresh began */
    bool failed;            /* the last refresh failed ... */
    uint64_t failed_gen;    /* ... and was asked for after this many invalidations */
    char refresh_err[VX_CLUSTER_ERRMSG_LEN];
    /* workers */
    endpoint *eps;
    leader_entry *leaders;
    size_t nleaders, cap_leaders;

    void *auth; /* the gateway's credential sync (auth_sync.h), opaque here */
    vx_retry_budget budget;
    bool budget_on;

    struct {
        atomic_ullong shard_calls, attempts, redirects, rounds, connects, conn_failures, breaker_skips,
            topology_refreshes;
    } st;
};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long long ms)
{
    if (ms > 0) usleep((useconds_t)ms * 1000);
}

#define ERRF(code, ...) vx_errf(errbuf, VX_CLUSTER_ERRMSG_LEN, (code), __VA_ARGS__)

/* ---- life cycle ----------------------------------------------------------------------------- */

static void *refresher_main(void *arg);
static vx_topo *topo_ref(vx_topo *t);

int vx_cluster_new(const vx_cluster_options *o, vx_cluster **out, char *errbuf)
{
    if (o == NULL || out == NULL || o->pd_addrs == NULL) return ERRF(VX_EINVAL, "cluster: bad arguments");
    vx_cluster *c = calloc(1, sizeof *c);
    if (c == NULL) return ERRF(VX_ENOMEM, "out of memory");
    c->pd_buf = strdup(o->pd_addrs);
    c->secret = strdup(o->secret ? o->secret : "");
    if (c->pd_buf == NULL || c->secret == NULL) {
        free(c->pd_buf);
        free(c->secret);
        free(c);
        return ERRF(VX_ENOMEM, "out of memory");
    }
    c->secret_len = strlen(c->secret);
    char *save = NULL;
    for (char *t = strtok_r(c->pd_buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        if (*t == '\0') continue;
        if (c->npd == MAX_PD || strlen(t) >= ADDR_MAX || strchr(t, ':') == NULL) {
            int rc = ERRF(VX_EINVAL, "cluster: bad PD address list \"%s\" (host:port, at most %d)",
                          o->pd_addrs, MAX_PD);
            free(c->pd_buf);
            free(c->secret);
            free(c);
            return rc;
        }
        c->pd_addrs[c->npd++] = t;
    }
    if (c->npd == 0) {
        free(c->pd_buf);
        free(c->secret);
        free(c);
        return ERRF(VX_EINVAL, "cluster: no PD address");
    }
    c->ttl_ms = o->topology_ttl_ms ? o->topology_ttl_ms : 2000;
    c->breaker_failures = o->breaker_failures ? o->breaker_failures : 5;
    c->breaker_open_ms = o->breaker_open_ms ? o->breaker_open_ms : 1000;
    c->pd_timeout_ms = o->pd_timeout_ms ? o->pd_timeout_ms : 3000;
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 1000;
    c->budget_on = o->retry_ratio >= 0;
    vx_retry_budget_init(&c->budget, o->retry_ratio > 0 ? o->retry_ratio : 0.2,
                         o->retry_per_s > 0 ? o->retry_per_s : 50, o->retry_cap > 0 ? o->retry_cap : 200,
                         mono_ms());
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->done_cv, &ca);
    pthread_cond_init(&c->wake_cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(c->refresh_err, sizeof c->refresh_err, "no topology from the placement driver yet");
    if (pthread_create(&c->refresher, NULL, refresher_main, c) != 0) {
        pthread_cond_destroy(&c->done_cv);
        pthread_cond_destroy(&c->wake_cv);
        pthread_mutex_destroy(&c->mu);
        free(c->pd_buf);
        free(c->secret);
        free(c);
        return ERRF(VX_ENOMEM, "cluster: cannot start the topology thread");
    }
    *out = c;
    return 0;
}

void vx_cluster_set_auth(vx_cluster *c, void *auth) { c->auth = auth; }
void *vx_cluster_auth(vx_cluster *c) { return c->auth; }

void vx_cluster_free(vx_cluster *c)
{
    if (c == NULL) return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->wake_cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->refresher, NULL);
    for (endpoint *e = c->eps, *next; e; e = next) {
        next = e->next;
        vx_rpc_mux_unref(e->mux);
        free(e);
    }
    if (c->topo) vx_topo_put(c->topo);
    free(c->leaders);
    vx_retry_budget_destroy(&c->budget);
    pthread_cond_destroy(&c->done_cv);
    pthread_cond_destroy(&c->wake_cv);
    pthread_mutex_destroy(&c->mu);
    free(c->pd_buf);
    free(c->secret);
    free(c);
}

/* ---- topology ------------------------------------------------------------------------------- */

void vx_topo_put(vx_topo *t)
{
    if (t == NULL) return;
    if (atomic_fetch_sub(&t->refs, 1) == 1) {
        vxpd__topology__free_unpacked(t->t, NULL);
        free(t);
    }
}

static vx_topo *topo_ref(vx_topo *t)
{
    atomic_fetch_add(&t->refs, 1);
    return t;
}

const Vxpd__Collection *vx_topo_collection(const vx_topo *t, const char *name)
{
    for (size_t i = 0; t && name && i < t->t->n_collections; i++)
        if (strcmp(t->t->collections[i]->name, name) == 0) return t->t->collections[i];
    return NULL;
}

const Vxpd__Worker *vx_topo_worker(const vx_topo *t, uint64_t id)
{
    for (size_t i = 0; t && i < t->t->n_workers; i++)
        if (t->t->workers[i]->id == id) return t->t->workers[i];
    return NULL;
}

const Vxpd__Shard *vx_topo_shard(const vx_topo *t, uint64_t gid, const Vxpd__Collection **coll)
{
    for (size_t i = 0; t && i < t->t->n_collections; i++)
        for (size_t j = 0; j < t->t->collections[i]->n_shards; j++)
            if (t->t->collections[i]->shards[j]->group_id == gid) {
                if (coll) *coll = t->t->collections[i];
                return t->t->collections[i]->shards[j];
            }
    return NULL;
}

uint64_t vx_topo_leader(const vx_topo *t, uint64_t gid)
{
    for (size_t i = 0; t && i < t->t->n_leaders; i++)
        if (t->t->leaders[i]->group_id == gid) return t->t->leaders[i]->worker;
    return 0;
}

static void abs_time(struct timespec *ts, long long at_ms)
{
    ts->tv_sec = at_ms / 1000;
    ts->tv_nsec = (at_ms % 1000) * 1000000L;
}

static void *refresher_main(void *arg)
{
    vx_cluster *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        long long now = mono_ms();
        if (now < c->next_refresh) {
            struct timespec ts;
            abs_time(&ts, c->next_refresh);
            pthread_cond_timedwait(&c->wake_cv, &c->mu, &ts);
            continue;
        }
        uint64_t gen = c->gen;
        c->last_start = now;
        pthread_mutex_unlock(&c->mu);

        Vxpd__TopologyRequest req = VXPD__TOPOLOGY_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        char err[VX_PD_CLIENT_ERRMSG_LEN];
        atomic_fetch_add(&c->st.topology_refreshes, 1);
        int rc = vx_pd_client_call(c->pd_addrs, c->npd, c->secret, VX_PD_GET_TOPOLOGY, &req.base,
                                   &vxpd__topology__descriptor, &resp, (int)c->pd_timeout_ms, err);
        vx_topo *nt = NULL;
        if (rc == 0) {
            nt = calloc(1, sizeof *nt);
            if (nt == NULL) {
                protobuf_c_message_free_unpacked(resp, NULL);
                snprintf(err, sizeof err, "out of memory");
            } else {
                nt->t = (Vxpd__Topology *)resp;
                atomic_init(&nt->refs, 1);
            }
        }

        pthread_mutex_lock(&c->mu);
        now = mono_ms();
        if (nt) {
            vx_topo *old = c->topo;
            c->topo = nt;
            c->topo_gen = gen;
            c->failed = false;
            if (old) vx_topo_put(old);
            /* invalidated meanwhile: this answer may predate the change */
            c->next_refresh = c->gen == gen ? now + c->ttl_ms : 0;
        } else {
            snprintf(c->refresh_err, sizeof c->refresh_err, "placement driver: %s", err);
            c->failed = true;
            c->failed_gen = gen;
            c->next_refresh = now + (c->ttl_ms < REFRESH_RETRY_MS ? c->ttl_ms : REFRESH_RETRY_MS);
        }
        pthread_cond_broadcast(&c->done_cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

void vx_cluster_invalidate(vx_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    c->gen++;
    c->next_refresh = 0;
    pthread_cond_signal(&c->wake_cv);
    pthread_mutex_unlock(&c->mu);
}

/* The data path saw signs of a stale snapshot (an election, a moved
 * shard): refresh soon, but callers need not wait for it. */
static void hint_stale(vx_cluster *c)
{
    pthread_mutex_lock(&c->mu);
    long long soon = c->last_start + SOFT_REFRESH_MS;
    if (soon < c->next_refresh) {
        c->next_refresh = soon;
        pthread_cond_signal(&c->wake_cv);
    }
    pthread_mutex_unlock(&c->mu);
}

/* A snapshot that covers every invalidation made before the call, waiting
 * up to timeout_ms for the refresher.  When the refresh fails (or the
 * time runs out) the older snapshot is returned if there is one. */
static vx_topo *topology_wait(vx_cluster *c, long long timeout_ms, char *errbuf)
{
    long long deadline = mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    pthread_mutex_lock(&c->mu);
    uint64_t want = c->gen;
    for (;;) {
        if (c->topo && c->topo_gen >= want) break;
        if (c->failed && c->failed_gen >= want) break; /* a refresh for us failed */
        if (mono_ms() >= deadline) break;
        struct timespec ts;
        abs_time(&ts, deadline);
        pthread_cond_timedwait(&c->done_cv, &c->mu, &ts);
    }
    vx_topo *t = c->topo ? topo_ref(c->topo) : NULL;
    if (t == NULL) ERRF(VX_EIO, "%s", c->refresh_err);
    pthread_mutex_unlock(&c->mu);
    return t;
}

vx_topo *vx_cluster_topology(vx_cluster *c, char *errbuf)
{
    return topology_wait(c, c->pd_timeout_ms + 500, errbuf);
}

vx_topo *vx_cluster_topology_fresh(vx_cluster *c, char *errbuf)
{
    vx_cluster_invalidate(c);
    long long deadline = mono_ms() + c->pd_timeout_ms + 500;
    pthread_mutex_lock(&c->mu);
    uint64_t want = c->gen;
    while (!(c->topo && c->topo_gen >= want) && !(c->failed && c->failed_gen >= want) && mono_ms() < deadline) {
        struct timespec ts;
        abs_time(&ts, deadline);
        pthread_cond_timedwait(&c->done_cv, &c->mu, &ts);
    }
    vx_topo *t = c->topo && c->topo_gen >= want ? topo_ref(c->topo) : NULL;
    if (t == NULL) ERRF(VX_EIO, "no fresh topology: %s", c->refresh_err);
    pthread_mutex_unlock(&c->mu);
    return t;
}

/* ---- PD calls ------------------------------------------------------------------------------- */

int vx_cluster_pd_call(vx_cluster *c, uint32_t method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                       int timeout_ms, char *errbuf)
{
    char err[VX_PD_CLIENT_ERRMSG_LEN];
    int rc = vx_pd_client_call(c->pd_addrs, c->npd, c->secret, method, req, resp_desc, resp, timeout_ms, err);
    if (rc != 0) return ERRF(rc, "%s", err);
    switch (method) {
    case VX_PD_CREATE_COLLECTION:
    case VX_PD_DELETE_COLLECTION:
    case VX_PD_PAYLOAD_INDEX:
    case VX_PD_UPDATE_COLLECTION:
    case VX_PD_MOVE_SHARD:
    case VX_PD_DRAIN_WORKER:
    case VX_PD_REMOVE_WORKER:
        vx_cluster_invalidate(c);
        break;
    default:
        break;
    }
    return 0;
}

/* ---- endpoints: pools and breakers ------------------------------------------------------------ */

/* c->mu held. */
static endpoint *endpoint_get(vx_cluster *c, const char *addr)
{
    for (endpoint *e = c->eps; e; e = e->next)
        if (strcmp(e->addr, addr) == 0) return e;
    endpoint *e = calloc(1, sizeof *e);
    if (e == NULL) return NULL;
    snprintf(e->addr, sizeof e->addr, "%s", addr);
    e->next = c->eps;
    c->eps = e;
    return e;
}

/* c->mu held. */
static bool breaker_open(vx_cluster *c, const endpoint *e, long long now)
{
    return e->fails >= c->breaker_failures && (now < e->open_until || e->probing);
}

static void endpoint_failed(vx_cluster *c, endpoint *e)
{
    atomic_fetch_add(&c->st.conn_failures, 1);
    pthread_mutex_lock(&c->mu);
    e->total_fails++;
    e->probing = false;
    if (++e->fails >= c->breaker_failures) e->open_until = mono_ms() + c->breaker_open_ms;
    pthread_mutex_unlock(&c->mu);
}

static void endpoint_answered(vx_cluster *c, endpoint *e)
{
    pthread_mutex_lock(&c->mu);
    e->fails = 0;
    e->probing = false;
    pthread_mutex_unlock(&c->mu);
}

typedef enum {
    ATT_NOCONN,  /* the request was not sent (no connection, breaker open) */
    ATT_LOST,    /* sent, but the connection failed before the answer */
    ATT_ANSWER,  /* an answer frame: *status, *out */
} att_result;

/* One request to one address through its pool and breaker. */
static att_result attempt(vx_cluster *c, const char *addr, uint32_t method, const uint8_t *req, size_t len,
                          long long deadline, int32_t *status, uint8_t **out, size_t *outlen, char *errbuf)
{
    *out = NULL;
    *outlen = 0;
    pthread_mutex_lock(&c->mu);
    endpoint *e = endpoint_get(c, addr);
    if (e == NULL) {
        pthread_mutex_unlock(&c->mu);
        ERRF(VX_ENOMEM, "out of memory");
        return ATT_NOCONN;
    }
    long long now = mono_ms();
    if (e->fails >= c->breaker_failures) {
        if (breaker_open(c, e, now)) {
            e->skipped++;
            pthread_mutex_unlock(&c->mu);
            atomic_fetch_add(&c->st.breaker_skips, 1);
            ERRF(VX_EIO, "%s: circuit breaker open after %u connection failures", addr, e->fails);
            return ATT_NOCONN;
        }
        e->probing = true; /* half-open: this call is the probe */
    }
    /* the endpoint's shared connection, or a new one */
    vx_rpc_mux *m = e->mux, *dead = NULL;
    if (m && !vx_rpc_mux_usable(m)) { /* broken: the worker closed it, a call failed on it */
        dead = m;
        e->mux = m = NULL;
    }
    if (m) vx_rpc_mux_ref(m);
    pthread_mutex_unlock(&c->mu);
    vx_rpc_mux_unref(dead); /* outside the lock: joins its reader */
    char rerr[VX_RPC_ERRMSG_LEN];
    if (m == NULL) {
        long long left = deadline - mono_ms();
        if (left > c->connect_timeout_ms) left = c->connect_timeout_ms;
        if (left < 1) left = 1;
        atomic_fetch_add(&c->st.connects, 1);
        if (vx_rpc_mux_connect(addr, c->secret, c->secret_len, (int)left, &m, rerr) != 0) {
            endpoint_failed(c, e);
            ERRF(VX_EIO, "%s", rerr);
            return ATT_NOCONN;
        }
        pthread_mutex_lock(&c->mu);
        if (e->mux == NULL) { /* ours is the endpoint's now (a second reference) */
            vx_rpc_mux_ref(m);
            e->mux = m;
        }
        pthread_mutex_unlock(&c->mu);
    }
    long long left = deadline - mono_ms();
    if (left < 1) left = 1;
    atomic_fetch_add(&c->st.attempts, 1);
    int rc = vx_rpc_mux_call(m, method, req, len, (int)left, status, out, outlen, rerr);
    vx_rpc_mux_unref(m);
    if (rc != 0) {
        if (rc == VX_EINVAL || rc == VX_ENOMEM) { /* ours, not the connection's */
            endpoint_answered(c, e);
            ERRF(VX_EIO, "%s: %s", addr, rerr);
            return ATT_NOCONN;
        }
        endpoint_failed(c, e);
        ERRF(VX_EIO, "%s", rerr);
        return ATT_LOST;
    }
    /* connection-level error frames leave the connection broken (the mux
     * knows; the next call replaces it) */
    endpoint_answered(c, e);
    return ATT_ANSWER;
}

/* An answer's error: status mapped for the caller, message into errbuf,
 * the leader's address (for VX_PD_NOT_LEADER) into leader. */
static int answer_error(const char *addr, int32_t status, const uint8_t *out, size_t outlen, char *leader,
                        size_t leader_len, char *errbuf)
{
    if (leader) leader[0] = '\0';
    if (status == VX_RPC_EAUTH || status == VX_RPC_EPROTO || status == VX_RPC_ETOO_LARGE) {
        /* a connection-level frame: the payload is text */
        int n = (int)(outlen > 200 ? 200 : outlen);
        ERRF(status == VX_RPC_ETOO_LARGE ? VX_EINVAL : VX_EIO, "%s: %s: %.*s", addr, vx_rpc_strstatus(status), n,
             out ? (const char *)out : "");
        return status == VX_RPC_ETOO_LARGE ? VX_EINVAL : VX_EIO;
    }
    Vxpd__Error *e = vxpd__error__unpack(NULL, outlen, out);
    const char *msg = e && e->message[0] ? e->message : vx_rpc_strstatus(status);
    ERRF(status, "%s: %s", addr, msg);
    if (e && leader && e->leader_rpc_address[0]) snprintf(leader, leader_len, "%s", e->leader_rpc_address);
    if (e) vxpd__error__free_unpacked(e, NULL);
    if (status == VX_RPC_EUNKNOWN_METHOD) return VX_EINVAL;
    return status;
}

int vx_cluster_worker_call(vx_cluster *c, const char *addr, uint32_t method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                           int timeout_ms, char *errbuf)
{
    if (c == NULL || addr == NULL || strlen(addr) >= ADDR_MAX || req == NULL || resp_desc == NULL ||
        resp == NULL || timeout_ms <= 0)
        return ERRF(VX_EINVAL, "worker call: bad arguments");
    *resp = NULL;
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) return ERRF(VX_ENOMEM, "out of memory");
    protobuf_c_message_pack(req, buf);
    int32_t status = 0;
    uint8_t *out = NULL;
    size_t outlen = 0;
    att_result ar = attempt(c, addr, method, buf, len, mono_ms() + timeout_ms, &status, &out, &outlen, errbuf);
    free(buf);
    int rc;
    if (ar != ATT_ANSWER) {
        rc = VX_EIO;
    } else if (status == 0) {
        *resp = protobuf_c_message_unpack(resp_desc, NULL, outlen, out);
        rc = *resp ? 0 : ERRF(VX_EFORMAT, "%s: unreadable answer", addr);
    } else {
        rc = answer_error(addr, status, out, outlen, NULL, 0, errbuf);
    }
    free(out);
    return rc;
}

/* ---- the leader cache ------------------------------------------------------------------------ */

static bool cached_leader(vx_cluster *c, uint64_t gid, char *addr)
{
    bool found = false;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nleaders && !found; i++)
        if (c->leaders[i].gid == gid) {
            memcpy(addr, c->leaders[i].addr, ADDR_MAX);
            found = true;
        }
    pthread_mutex_unlock(&c->mu);
    return found;
}

static void set_leader(vx_cluster *c, uint64_t gid, const char *addr)
{
    pthread_mutex_lock(&c->mu);
    size_t i = 0;
    while (i < c->nleaders && c->leaders[i].gid != gid) i++;
    if (i == c->nleaders) {
        if (c->nleaders == c->cap_leaders) {
            size_t cap = c->cap_leaders ? c->cap_leaders * 2 : 16;
            leader_entry *n = realloc(c->leaders, cap * sizeof *n);
            if (n == NULL) {
                pthread_mutex_unlock(&c->mu);
                return;
            }
            c->leaders = n;
            c->cap_leaders = cap;
        }
        c->leaders[c->nleaders++].gid = gid;
    }
    snprintf(c->leaders[i].addr, ADDR_MAX, "%s", addr);
    pthread_mutex_unlock(&c->mu);
}

/* Forget gid's cached leader if it is addr (NULL: whatever it is). */
static void forget_leader(vx_cluster *c, uint64_t gid, const char *addr)
{
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nleaders; i++)
        if (c->leaders[i].gid == gid) {
            if (addr == NULL || strcmp(c->leaders[i].addr, addr) == 0) c->leaders[i] = c->leaders[--c->nleaders];
            break;
        }
    pthread_mutex_unlock(&c->mu);
}

/* ---- shard calls ------------------------------------------------------------------------------ */

typedef struct round {
    char tried[MAX_CANDIDATES][ADDR_MAX];
    unsigned ntried;
} round_t;

static bool was_tried(const round_t *r, const char *addr)
{
    for (unsigned i = 0; i < r->ntried; i++)
        if (strcmp(r->tried[i], addr) == 0) return true;
    return false;
}

static void mark_tried(round_t *r, const char *addr)
{
    if (r->ntried < MAX_CANDIDATES && !was_tried(r, addr)) snprintf(r->tried[r->ntried++], ADDR_MAX, "%s", addr);
}

/* The next address to try for shard s, or false when the round is over. */
static bool next_candidate(vx_cluster *c, const vx_topo *t, const Vxpd__Shard *s, const round_t *r, char *addr)
{
    char cand[MAX_CANDIDATES + 2][ADDR_MAX];
    unsigned n = 0;
    if (cached_leader(c, s->group_id, cand[n])) n++;
    const Vxpd__Worker *lw = vx_topo_worker(t, vx_topo_leader(t, s->group_id));
    if (lw && lw->rpc_address[0] && strlen(lw->rpc_address) < ADDR_MAX) snprintf(cand[n++], ADDR_MAX, "%s", lw->rpc_address);
    for (size_t i = 0; i < s->n_replicas && n < MAX_CANDIDATES + 2; i++) {
        if (!s->replicas[i]->voter) continue;
        const Vxpd__Worker *w = vx_topo_worker(t, s->replicas[i]->worker);
        if (w && w->rpc_address[0] && strlen(w->rpc_address) < ADDR_MAX)
            snprintf(cand[n++], ADDR_MAX, "%s", w->rpc_address);
    }
    for (unsigned i = 0; i < n; i++)
        if (!was_tried(r, cand[i])) {
            memcpy(addr, cand[i], ADDR_MAX);
            return true;
        }
    return false;
}

/* A retry: paid from the budget unless it follows a named leader. */
static bool retry_allowed(vx_cluster *c, bool routed)
{
    if (routed || !c->budget_on) return true;
    return vx_retry_budget_withdraw(&c->budget, mono_ms());
}

int vx_cluster_shard_call(vx_cluster *c, uint64_t gid, uint32_t method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                          bool leader_only, int timeout_ms, char *errbuf)
{
    if (c == NULL || req == NULL || resp_desc == NULL || resp == NULL || timeout_ms <= 0)
        return ERRF(VX_EINVAL, "shard call: bad arguments");
    *resp = NULL;
    atomic_fetch_add(&c->st.shard_calls, 1);
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) return ERRF(VX_ENOMEM, "out of memory");
    protobuf_c_message_pack(req, buf);
    const bool write = method == VX_W_WRITE;
    long long deadline = mono_ms() + timeout_ms;
    unsigned backoff = BACKOFF_MIN_MS, redirects = 0;
    bool first = true; /* the first attempt is not a retry */
    vx_retry_budget_deposit(&c->budget, mono_ms());
    bool refreshed_for_missing = false, routed = false;
    round_t rnd = {.ntried = 0};
    char hint[ADDR_MAX] = "", last[VX_CLUSTER_ERRMSG_LEN] = "no replica answered";
    int rc = VX_EIO;
    for (;;) {
        if (mono_ms() >= deadline) break;
        char addr[ADDR_MAX];
        if (hint[0]) {
            memcpy(addr, hint, ADDR_MAX);
            hint[0] = '\0';
            routed = true; /* to the leader a replica named: routing, free */
        } else {
            char terr[VX_CLUSTER_ERRMSG_LEN];
            long long tleft = deadline - mono_ms();
            vx_topo *t = topology_wait(c, tleft < c->pd_timeout_ms ? tleft : c->pd_timeout_ms, terr);
            if (t == NULL) {
                snprintf(last, sizeof last, "%s", terr);
                goto pause;
            }
            const Vxpd__Shard *s = vx_topo_shard(t, gid, NULL);
            if (s == NULL) {
                vx_topo_put(t);
                if (!refreshed_for_missing) { /* a collection created since the snapshot? */
                    refreshed_for_missing = true;
                    vx_cluster_invalidate(c);
                    continue;
                }
                rc = ERRF(VX_ENOTFOUND, "no shard %" PRIu64 " in the cluster's topology", gid);
                goto done;
            }
            bool more = next_candidate(c, t, s, &rnd, addr);
            vx_topo_put(t);
            if (!more) goto pause;
        }
        if (!first && !retry_allowed(c, routed)) {
            rc = ERRF(VX_EIO, "shard %" PRIu64 ": retry budget spent (last: %s)", gid, last);
            goto done;
        }
        first = false;
        routed = false;
        mark_tried(&rnd, addr);
        int32_t status = 0;
        uint8_t *out = NULL;
        size_t outlen = 0;
        char aerr[VX_CLUSTER_ERRMSG_LEN];
        att_result ar = attempt(c, addr, method, buf, len, deadline, &status, &out, &outlen, aerr);
        if (ar != ATT_ANSWER) {
            forget_leader(c, gid, addr);
            snprintf(last, sizeof last, "%s", aerr);
            if (ar == ATT_LOST && write) {
                rc = ERRF(VX_EIO, "%s (the write may or may not have been applied)", aerr);
                goto done;
            }
            continue; /* the next replica at once */
        }
        if (status == 0) {
            *resp = protobuf_c_message_unpack(resp_desc, NULL, outlen, out);
            free(out);
            if (*resp == NULL) {
                rc = ERRF(VX_EFORMAT, "%s: unreadable answer", addr);
                goto done;
            }
            if (leader_only && method == VX_W_SHARD_INFO && !((Vxw__ShardInfo *)*resp)->leader) {
                /* any replica answers this one: go on to the leader it names */
                uint64_t lw = ((Vxw__ShardInfo *)*resp)->leader_worker;
                protobuf_c_message_free_unpacked(*resp, NULL);
                *resp = NULL;
                forget_leader(c, gid, addr);
                snprintf(last, sizeof last, "%s: not the leader of shard %" PRIu64, addr, gid);
                vx_topo *t = lw ? topology_wait(c, 0, NULL) : NULL;
                const Vxpd__Worker *w = vx_topo_worker(t, lw);
                if (w && strlen(w->rpc_address) < ADDR_MAX && !was_tried(&rnd, w->rpc_address) &&
                    redirects < MAX_REDIRECTS) {
                    redirects++;
                    atomic_fetch_add(&c->st.redirects, 1);
                    snprintf(hint, sizeof hint, "%s", w->rpc_address);
                } else if (lw == 0) {
                    hint_stale(c);
                }
                vx_topo_put(t);
                continue;
            }
            if (write || (leader_only && method == VX_W_SHARD_INFO))
                set_leader(c, gid, addr); /* a leader answered */
            rc = 0;
            goto done;
        }
        char leader[ADDR_MAX];
        int st = answer_error(addr, status, out, outlen, leader, sizeof leader, aerr);
        free(out);
        snprintf(last, sizeof last, "%s", aerr);
        if (status == VX_PD_NOT_LEADER) {
            forget_leader(c, gid, addr);
            if (leader[0] && strcmp(leader, addr) != 0 && !was_tried(&rnd, leader) && redirects < MAX_REDIRECTS) {
                redirects++;
                atomic_fetch_add(&c->st.redirects, 1);
                set_leader(c, gid, leader);
                memcpy(hint, leader, ADDR_MAX);
            } else if (leader[0] == '\0') {
                hint_stale(c); /* an election: the topology's leader hint is stale too */
            }
            continue;
        }
        if (status == VX_PD_RETRY) continue; /* shutting down: another replica */
        if (status == VX_ENOTFOUND) {        /* no longer hosted there: the shard moved */
            hint_stale(c);
            continue;
        }
        rc = st; /* a refusal: the caller's business */
        ERRF(rc, "%s", aerr);
        goto done;
    pause:
        {
            long long left = deadline - mono_ms();
            if (left <= 0) break;
            if (!retry_allowed(c, false)) {
                rc = ERRF(VX_EIO, "shard %" PRIu64 ": retry budget spent (last: %s)", gid, last);
                goto done;
            }
            first = true; /* paid for: the round's first attempt */
            atomic_fetch_add(&c->st.rounds, 1);
            hint_stale(c);
            sleep_ms(backoff < left ? backoff : left);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            rnd.ntried = 0;
            redirects = 0;
        }
    }
    rc = ERRF(VX_EIO, "shard %" PRIu64 ": no %s answered within %d ms (last: %s)", gid,
              leader_only ? "leader" : "replica", timeout_ms, last);
done:
    free(buf);
    return rc;
}

/* ---- observability ---------------------------------------------------------------------------- */

void vx_cluster_stats_get(vx_cluster *c, vx_cluster_stats *out)
{
    out->shard_calls = atomic_load(&c->st.shard_calls);
    out->attempts = atomic_load(&c->st.attempts);
    out->redirects = atomic_load(&c->st.redirects);
    out->rounds = atomic_load(&c->st.rounds);
    out->connects = atomic_load(&c->st.connects);
    out->conn_failures = atomic_load(&c->st.conn_failures);
    out->breaker_skips = atomic_load(&c->st.breaker_skips);
    out->topology_refreshes = atomic_load(&c->st.topology_refreshes);
    vx_retry_budget_counts(&c->budget, &out->retries, &out->retries_denied);
}

int vx_cluster_endpoint_stats_get(vx_cluster *c, const char *addr, vx_cluster_endpoint_stats *out)
{
    int rc = VX_ENOTFOUND;
    pthread_mutex_lock(&c->mu);
    for (endpoint *e = c->eps; e; e = e->next)
        if (strcmp(e->addr, addr) == 0) {
            out->consecutive_failures = e->fails;
            out->open = breaker_open(c, e, mono_ms());
            out->connected = e->mux != NULL && vx_rpc_mux_usable(e->mux);
            out->inflight = e->mux ? vx_rpc_mux_inflight(e->mux) : 0;
            out->failures = e->total_fails;
            out->skipped = e->skipped;
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
