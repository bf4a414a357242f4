/*
 * cluster.h - the gateway's client of a cluster: the placement driver's
 * topology, and calls to shard replicas on the workers (issue 6).
 *
 * The gateway serves the REST API from many HTTP threads at once; every
 * function here may be called from any thread concurrently (except
 * vx_cluster_free).  All calls are blocking and bounded by their
 * timeout_ms.
 *
 * Topology.  The PD's Vxpd__Topology (workers with their addresses,
 * collections with their shards and replicas, the leader each shard last
 * reported) is held as one immutable, reference-counted snapshot.  A
 * refresher thread (started by vx_cluster_new) replaces it every
 * topology_ttl_ms, at once after vx_cluster_invalidate, and at most every
 * 100 ms while the data path sees signs of a stale one (elections, moved
 * shards).  Callers never wait for the PD while they have a snapshot that
 * covers every invalidation made before their call; otherwise (no snapshot
 * yet, or one older than an invalidation) they wait for the refresher, up
 * to pd_timeout_ms.  A failed refresh keeps the old snapshot -- the data
 * path works while the PD is down or electing -- and is retried after
 * min(ttl, 250 ms); callers with no snapshot at all then get its error at
 * once.  A refresh that was in flight when an invalidation came is
 * followed by another (it may have read the PD before the change).
 * Snapshots are freed when their last reference is put.
 *
 * Shard calls.  vx_cluster_shard_call sends one request to one shard
 * (a Raft group id) and returns its answer:
 *
 *   - candidates, in order: the leader this client learned last (a
 *     per-shard cache fed by accepted writes, leaders' ShardInfo answers
 *     and not-leader redirects; dropped on failure), the topology's
 *     leader hint, then the shard's voters as listed (learners are never
 *     asked: they cannot lead and may be far behind).  leader_only calls
 *     (writes, strong reads) stop at the leader: a follower answers
 *     VX_PD_NOT_LEADER, usually naming the leader, and the call follows
 *     the name at once (redirects to an address already failed in this
 *     round are not followed); other reads take the first replica that
 *     answers.
 *   - a round ends when every candidate was tried (refused, unreachable,
 *     not the leader without a hint, VX_PD_RETRY from a worker shutting
 *     down, VX_ENOTFOUND from a worker that no longer hosts the shard):
 *     a topology refresh is asked for, the call sleeps (10 ms, doubling
 *     to 200 ms) and starts a new round, until timeout_ms.  A gid missing
 *     from the snapshot gets one forced refresh (a collection created
 *     since) before VX_ENOTFOUND.
 *   - writes (VX_W_WRITE) are retried only when the request surely did
 *     not reach a leader: the connection could not be made (or the
 *     worker's breaker is open), the answer was "not the leader" or
 *     "retry".  A write whose connection failed after the request was sent
 *     (a reset, a timeout) returns VX_EIO at once: it may or may not have
 *     been applied.  A connection the worker closed is seen by the mux's
 *     reader as soon as it happens and replaced before the next request,
 *     so it is not mistaken for a lost write.  One ambiguity remains
 *     in the worker itself: a leader that loses its leadership with the
 *     entry uncommitted answers VX_PD_NOT_LEADER, and the entry may still
 *     commit under the next leader; the retry then applies the batch
 *     twice (shard commands are idempotent upserts, deletes and payload
 *     edits, so the only trace is a higher version).
 *   - reads are retried on the next replica after any failure.
 *   - every retry (another replica after a failed attempt, another round
 *     after a pause) is paid from the cluster's retry budget
 *     (retry_budget.h); with the budget spent the call ends with its last
 *     error at once instead of adding load to a failing cluster.
 *   - an answer with a negative status that is none of the above (a
 *     refusal: VX_EINVAL, VX_EDIM, VX_EFULL, ...) is returned as is, with
 *     the worker's message (vxpd.Error) in errbuf.  Transport refusals
 *     become VX_EIO (wrong secret, protocol) or VX_EINVAL (request over
 *     the worker's frame limit).
 *
 * Connections.  Each worker address ("endpoint") has one multiplexed
 * connection (rpc.h: vx_rpc_mux) that every thread's calls share, each
 * with its own request id: no connection per request, and calls do not
 * wait for each other.  A broken connection (the worker closed it, a send
 * failed) is replaced by the next call; one that merely timed out a call
 * stays.  Endpoints live as long as the cluster (workers are few).
 *
 * Circuit breaker, per endpoint: breaker_failures consecutive connection
 * failures (connect or handshake failed, the connection broke or timed out
 * during a call) open it; calls then skip the endpoint without trying
 * (as if unreachable) for breaker_open_ms; after that one call is let
 * through as a probe (half-open) while the others keep skipping: an
 * answer closes the breaker, a failure opens it for another
 * breaker_open_ms.  Any answer, even a refusal, counts as a success.
 *
 * Errors: errbuf has VX_CLUSTER_ERRMSG_LEN bytes (NULL: no message).
 */
#ifndef VX_GATEWAY_CLUSTER_H
#define VX_GATEWAY_CLUSTER_H

#include "pd.pb-c.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_CLUSTER_ERRMSG_LEN 512

typedef struct vx_cluster vx_cluster;

typedef struct vx_cluster_options {
    const char *pd_addrs;        /* comma-separated host:port of the PD replicas' RPC */
    const char *secret;          /* the cluster secret; NULL = empty */
    unsigned topology_ttl_ms;    /* default 2000 */
    unsigned breaker_failures;   /* consecutive failures that open a worker's breaker, default 5 */
    unsigned breaker_open_ms;    /* default 1000, then one half-open probe */
    unsigned pd_timeout_ms;      /* a topology refresh's PD call, default 3000 */
    unsigned connect_timeout_ms; /* one connection attempt to a worker, default 1000 */
    /* the retry budget (retry_budget.h): tokens per call (default 0.2),
     * per second (default 50) and at most (default 200); a negative
     * retry_ratio turns the budget off (unlimited retries) */
    double retry_ratio, retry_per_s, retry_cap;
} vx_cluster_options;

/* VX_EINVAL without a usable PD address (at most 16). */
int vx_cluster_new(const vx_cluster_options *o, vx_cluster **out, char *errbuf);
/* An opaque slot for the gateway's credential sync (auth_sync.h). */
void vx_cluster_set_auth(vx_cluster *c, void *auth);
void *vx_cluster_auth(vx_cluster *c);
/* Stops the refresher (waiting for a PD call in flight, at most
 * pd_timeout_ms), closes the pooled connections and drops the topology; no
 * call may be in progress, and every vx_topo must have been put. */
void vx_cluster_free(vx_cluster *c);

/* ---- topology ---------------------------------------------------------------------------- */

/* A snapshot of the PD's topology; read-only. */
typedef struct vx_topo {
    Vxpd__Topology *t;
    atomic_int refs; /* private */
} vx_topo;

/* The current snapshot, refreshed first when older than the TTL or
 * invalidated (see above); the caller owns one reference.  NULL with a
 * message when the PD cannot be reached and there is no snapshot yet. */
vx_topo *vx_cluster_topology(vx_cluster *c, char *errbuf);
/* A topology fetched after this call (a refresh is forced); NULL when the
 * PD cannot give one in time (the stale snapshot is not returned). */
vx_topo *vx_cluster_topology_fresh(vx_cluster *c, char *errbuf);
void vx_topo_put(vx_topo *t);
/* Lookups in a snapshot (linear; NULL when absent). */
const Vxpd__Collection *vx_topo_collection(const vx_topo *t, const char *name);
const Vxpd__Worker *vx_topo_worker(const vx_topo *t, uint64_t id);
/* The shard with Raft group gid, and its collection (coll may be NULL). */
const Vxpd__Shard *vx_topo_shard(const vx_topo *t, uint64_t gid, const Vxpd__Collection **coll);
/* The worker the shard's leader hint names (0: none). */
uint64_t vx_topo_leader(const vx_topo *t, uint64_t gid);
/* The next vx_cluster_topology refreshes first. */
void vx_cluster_invalidate(vx_cluster *c);

/* ---- calls ------------------------------------------------------------------------------- */

/* A PD call (vx_pd_client_call with the cluster's addresses and secret).
 * After a successful call that changes the topology (create or delete a
 * collection, a payload index, a move, a drain, a removal) the topology is
 * invalidated, so the caller's next request sees the change.  On 0, free
 * *resp with protobuf_c_message_free_unpacked(*resp, NULL). */
int vx_cluster_pd_call(vx_cluster *c, uint32_t method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                       int timeout_ms, char *errbuf);

/* A call to shard gid (a worker.proto method, worker/worker.h): to its
 * leader when leader_only (writes, strong reads), else to any healthy
 * replica, leader first; retries, redirects, breakers as described above.
 * leader_only orders the candidates; what makes a follower refuse is the
 * worker's own check (writes; reads whose request has allow_follower
 * false); ShardInfo, which any replica answers, is the one exception the
 * client checks itself: with leader_only an answer saying leader = false
 * is treated as a redirect to the leader_worker it names.
 * Returns 0 with *resp unpacked as resp_desc (free with
 * protobuf_c_message_free_unpacked), or a VX_E* code: the worker's refusal
 * as is, VX_ENOTFOUND when the topology has no such shard, VX_EIO when no
 * replica answered in time or a write's fate is unknown. */
int vx_cluster_shard_call(vx_cluster *c, uint64_t gid, uint32_t method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                          bool leader_only, int timeout_ms, char *errbuf);

/* One attempt on one worker address through its pool and breaker, no
 * retry, no redirect (per-replica fan-out, health checks): 0 with *resp,
 * the answer's negative status with its message (VX_PD_NOT_LEADER
 * included), or VX_EIO (unreachable, breaker open, connection lost). */
int vx_cluster_worker_call(vx_cluster *c, const char *addr, uint32_t method, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                           int timeout_ms, char *errbuf);

/* ---- observability --------------------------------------------------------------------- */

typedef struct vx_cluster_stats {
    uint64_t shard_calls;        /* vx_cluster_shard_call invocations */
    uint64_t attempts;           /* requests sent to a worker (all calls) */
    uint64_t redirects;          /* not-leader answers followed to the named leader */
    uint64_t rounds;             /* rounds that ended with a backoff pause */
    uint64_t connects;           /* connections opened */
    uint64_t conn_failures;      /* connection failures (breaker failures) */
    uint64_t breaker_skips;      /* attempts skipped by an open breaker */
    uint64_t topology_refreshes; /* PD topology calls (successful or not) */
    uint64_t retries;            /* retries the budget granted */
    uint64_t retries_denied;     /* calls ended early: the budget was spent */
} vx_cluster_stats;
void vx_cluster_stats_get(vx_cluster *c, vx_cluster_stats *out);

typedef struct vx_cluster_endpoint_stats {
    unsigned consecutive_failures;
    bool open;          /* skipping calls now (open, or half-open with its probe out) */
    bool connected;     /* its shared connection is up */
    unsigned inflight;  /* calls waiting on it */
    uint64_t failures;  /* connection failures, in all */
    uint64_t skipped;   /* calls skipped by the breaker, in all */
} vx_cluster_endpoint_stats;
/* VX_ENOTFOUND when this client never called addr. */
int vx_cluster_endpoint_stats_get(vx_cluster *c, const char *addr, vx_cluster_endpoint_stats *out);

#endif
