/*
 * pd.h - a placement driver replica: the PD state machine (state.h) in its
 * own Raft group on a node host, its internal RPC service (pdrpc.h), and --
 * on the leader -- the control loops: worker health, re-replication,
 * balancing and the shard move protocol.
 *
 * Every PD replica is started with the same static peer list (Raft id, Raft
 * address, RPC address); the first start bootstraps the group with all of
 * them as voters.  Calls reaching a follower are answered VX_PD_NOT_LEADER
 * with the leader's RPC address when known (pdrpc.h).
 *
 * What is replicated and what is not: the state (workers, collections,
 * shards, replicas, epochs) is; heartbeats, load reports and shard leader
 * hints are held by the leader in memory only -- a new leader starts every
 * worker's heartbeat clock afresh (a full timeout of grace) and learns the
 * rest from the next heartbeats.  Reads are served by a leader once it has
 * applied a barrier of its own term, so a reader never sees a state older
 * than one it saw from the previous leader.
 *
 * Control loops (leader only, one tick every tick_ms, skipped while an
 * earlier tick's proposals are in flight):
 *   - health: vx_pd_health_step over the heartbeats -> SetWorkerState;
 *   - repair: vx_pd_repair -> BEGIN_MOVE (add) or REMOVE;
 *   - moves: each shard with a move in flight advances one step when its
 *     Raft leader's heartbeat shows the previous one done (the worker
 *     reconciles its group's membership to the replica list, node.h):
 *       learner in the group's configuration -> PROMOTE;
 *       voter in the configuration -> REMOVE the source (if any);
 *       source gone from the configuration -> FINISH_MOVE;
 *     a move whose target is not healthy, or that made no progress for
 *     move_timeout_ms, is rolled back (ABORT_MOVE);
 *   - balance, every reconcile_ms: vx_pd_balance -> BEGIN_MOVE.
 * Every step is a Raft command, idempotent when repeated, so a new leader
 * (or a restarted worker) simply continues from the replicated state.
 */
#ifndef VX_PD_PD_H
#define VX_PD_PD_H

#include "pd/state.h"
#include "raft/node.h"

#include <stdint.h>
#include <uv.h>

#define VX_PD_GROUP_ID 2 /* the PD's own Raft group on its node host */
#define VX_PD_MAX_PEERS 7
#define VX_PD_ERRMSG_LEN 256

typedef struct vx_pd_peer {
    uint64_t id;              /* Raft id, 1.. */
    const char *raft_address; /* host:port of its node host */
    const char *rpc_address;  /* host:port of its PD RPC service */
} vx_pd_peer;

typedef struct vx_pd_options {
    uint64_t id; /* this replica's Raft id (one of peers) */
    unsigned npeers;
    vx_pd_peer peers[VX_PD_MAX_PEERS];
    const char *secret; /* cluster secret for internal RPC ("" or NULL: none) */
    unsigned tick_ms;              /* control loop period, default 500 */
    unsigned reconcile_ms;         /* balancing period, default 30000 */
    unsigned move_timeout_ms;      /* default 300000 */
    unsigned default_shards;       /* CreateCollection without a count, default 1 */
    unsigned default_rf;           /* ... without a replication factor, default 3 */
    unsigned election_timeout_ms;  /* default 500 */
} vx_pd_options;

typedef struct vx_pd vx_pd;

/* Start a PD replica on `node` (its loop) with its RPC service listening on
 * its own rpc_address.  Loop thread. */
int vx_pd_start(vx_node *node, uv_loop_t *loop, const vx_pd_options *opt, vx_pd **out,
                char *errbuf);
/* Stop the RPC service and the timers; the group closes with the node.
 * cb(data) once they are released.  Loop thread.  Free the replica with
 * vx_pd_free once the node has closed too (libraft completes pending
 * proposals while it closes). */
void vx_pd_close(vx_pd *pd, void (*cb)(void *data), void *data);
void vx_pd_free(vx_pd *pd);
/* The bound RPC port (an address with port 0 picks one). */
int vx_pd_rpc_port(vx_pd *pd);
bool vx_pd_is_leader(vx_pd *pd);
const vx_pd_state *vx_pd_get_state(vx_pd *pd);

#endif
