/*
 * decide.h - the placement driver's decisions as pure functions.
 *
 * Placement of a new shard, worker health, re-replication (repair) and
 * balancing are computed here from a snapshot of the PD state machine
 * (seed §2.3, §4.1, §4.2, §6.1, §7.1).  Nothing here does I/O, reads a
 * clock or keeps global state: time is a parameter, the cluster is passed
 * in, and the same input always gives the same output, whatever the order
 * of the worker array (ties between workers are broken by id, between
 * shards by their order in the array).  The PD leader turns the actions
 * into Raft commands and the move protocol (issue 5); a plan that is cut
 * short is simply computed again on the next round.
 *
 * Capacity score (seed §4.1, "Calculate capacity score"):
 *     capacity = 300 * cores / 8  +  400 * mem / 32 GiB  +  300 * disk / 512 GiB
 * The seed's worked example (24 cores, 256 GB, "1 TB") gives 900 + 3200 +
 * 600 = 4700; its "500GB" disk unit is read as half a TiB so that 1 TiB
 * scores exactly 600.  The free score applies the same weights to the
 * headroom: CPU scaled by (1 - cpu_util), memory and disk by what is unused.
 * Placement ranks a worker by free / (1 + replicas it hosts), so free
 * capacity attracts replicas and every replica already there repels them.
 *
 * Failure domains: zone first, then rack within the zone.  A target is
 * chosen by the key (replicas of the shard already in its zone, already in
 * its rack, -placement score, id), lowest first: a replica never goes to a
 * zone holding k of the shard's replicas while an eligible worker sits in a
 * zone holding fewer, and likewise for racks inside a zone.  Only READY and
 * ACTIVE workers are targets.
 *
 * Healthy replica: one on a known worker whose state is not UNHEALTHY,
 * ERROR or REMOVED (DRAINING, JOINING, STANDBY still hold data and count).
 *
 * Worker ids are nonzero (0 means "none" in vx_pd_action) and unique.
 */
#ifndef VX_PD_DECIDE_H
#define VX_PD_DECIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_PD_MAX_REPLICAS 8
#define VX_PD_DOMAIN_MAX 32 /* zone / rack name bytes, NUL included */

#define VX_PD_HEARTBEAT_INTERVAL_MS 5000u /* workers send one every 5 s */
#define VX_PD_HEARTBEAT_TIMEOUT_MS 15000u /* silent this long: UNHEALTHY */

/* Capacity score weights and units (seed §4.1). */
#define VX_PD_CPU_WEIGHT 300.0
#define VX_PD_CPU_UNIT 8.0 /* cores */
#define VX_PD_MEM_WEIGHT 400.0
#define VX_PD_MEM_UNIT (32.0 * 1024 * 1024 * 1024) /* 32 GiB */
#define VX_PD_DISK_WEIGHT 300.0
#define VX_PD_DISK_UNIT (512.0 * 1024 * 1024 * 1024) /* the seed's "500GB" */

/* Worker lifecycle, seed §6.1. */
typedef enum vx_pd_worker_state {
    VX_PD_JOINING = 0,
    VX_PD_READY,
    VX_PD_ACTIVE,
    VX_PD_STANDBY,
    VX_PD_UNHEALTHY,
    VX_PD_DRAINING,
    VX_PD_ERROR,
    VX_PD_REMOVED,
} vx_pd_worker_state;

typedef struct vx_pd_worker {
    uint64_t id;                 /* nonzero, unique */
    char zone[VX_PD_DOMAIN_MAX]; /* failure domains; compared as strings */
    char rack[VX_PD_DOMAIN_MAX]; /* a rack name is scoped by its zone */
    vx_pd_worker_state state;
    /* capacity (registration) */
    uint32_t cpu_cores;
    uint64_t mem_bytes;
    uint64_t disk_bytes; /* 0: not reported, no fit check */
    /* load (last heartbeat) */
    double qps;
    double cpu_util; /* 0..1; clamped, NaN reads as 1 */
    uint64_t mem_used;
    uint64_t disk_used;
    uint64_t last_heartbeat_ms;
    uint64_t labels; /* capability bits (e.g. search-optimized); informational */
} vx_pd_worker;

typedef struct vx_pd_replica {
    uint64_t worker;
    bool voter; /* false: a learner being caught up (move or repair) */
} vx_pd_replica;

typedef struct vx_pd_shard {
    uint64_t collection_id;
    uint64_t shard_index;
    uint64_t group_id; /* Raft group; names the shard in actions */
    vx_pd_replica replicas[VX_PD_MAX_REPLICAS];
    unsigned n;           /* replicas in use, <= VX_PD_MAX_REPLICAS */
    unsigned rf;          /* the collection's replication factor, 1..MAX */
    uint64_t leader_hint; /* worker id of the last known leader, 0: unknown */
    uint64_t size_bytes;
    double qps;  /* the shard's total over its replicas */
    bool moving; /* a move or repair is in flight: no new action for it */
} vx_pd_shard;

typedef struct vx_pd_cluster {
    vx_pd_worker *workers;
    size_t nworkers;
    vx_pd_shard *shards;
    size_t nshards;
} vx_pd_cluster;

typedef enum vx_pd_action_kind {
    VX_PD_ADD_REPLICA = 1, /* to_worker joins the group (learner, then voter) */
    VX_PD_REMOVE_REPLICA,  /* from_worker leaves the group */
    VX_PD_MOVE_REPLICA,    /* add to_worker, then remove from_worker (seed §4.2) */
} vx_pd_action_kind;

typedef struct vx_pd_action {
    vx_pd_action_kind kind;
    uint64_t group_id;
    uint64_t from_worker; /* 0 for ADD */
    uint64_t to_worker;   /* 0 for REMOVE */
    const char *reason;   /* static string */
} vx_pd_action;

typedef struct vx_pd_state_change {
    uint64_t worker;
    vx_pd_worker_state from, to;
} vx_pd_state_change;

typedef struct vx_pd_balance_opts {
    double threshold;              /* relative spread that triggers moves, 0.20 */
    unsigned max_moves_per_worker; /* concurrent moves touching one worker, 2 */
    unsigned max_moves;            /* concurrent moves in the cluster, 4 */
} vx_pd_balance_opts;

#define VX_PD_BALANCE_OPTS_DEFAULT                                                                 \
    {                                                                                              \
        0.20, 2, 4                                                                                 \
    }

/* Static name of a state ("ACTIVE", ...); "?" for an unknown value. */
const char *vx_pd_state_name(vx_pd_worker_state s);

/* The seed's capacity score of a worker's hardware (no load). */
double vx_pd_capacity_score(const vx_pd_worker *w);

/* The same weights applied to the headroom: CPU by (1 - cpu_util), memory
 * and disk by what is unused (used beyond capacity counts as full).  >= 0. */
double vx_pd_free_score(const vx_pd_worker *w);

/* Choose rf distinct workers for a new shard.  Candidates are READY and
 * ACTIVE workers whose id is not in exclude[0..nexclude).  Picks one at a
 * time by the failure-domain key in the file comment, with the placement
 * score free / (1 + replicas hosted) from the shards in c.  out_workers
 * (rf entries) receives the ids in pick order and is written only on
 * success.  Errors: VX_EINVAL (NULL pointers, rf 0 or above
 * VX_PD_MAX_REPLICAS, a malformed cluster), VX_EFULL (fewer than rf
 * candidates), VX_ENOMEM. */
int vx_pd_place(const vx_pd_cluster *c, unsigned rf, const uint64_t *exclude, size_t nexclude,
                uint64_t *out_workers);

/* One health round at now_ms.  A READY, ACTIVE, STANDBY or DRAINING worker
 * whose last heartbeat is VX_PD_HEARTBEAT_TIMEOUT_MS or more ago becomes
 * UNHEALTHY (seed §4.1 "Failure Detection", §7.1).  An UNHEALTHY worker
 * heard from within the timeout comes back as ACTIVE if it still hosts a
 * replica, else READY (a drain request does not survive this; the caller
 * keeps it if it wants the worker back in DRAINING).  A heartbeat stamped
 * after now_ms counts as fresh.  JOINING, ERROR and REMOVED are left alone.
 * The changes, in worker array order, go to out[0..*n).  All or nothing:
 * if more than cap changes are due, nothing is changed, *n is the number
 * needed and the result is VX_EFULL.  VX_EINVAL for NULL pointers.  Does
 * not allocate. */
int vx_pd_health_step(vx_pd_cluster *c, uint64_t now_ms, vx_pd_state_change *out, size_t cap,
                      size_t *n);

/* Re-replication plan (seed §7.1 "PD Actions"): at most one action per
 * shard, in shard order, none for a shard with moving set or for one whose
 * healthy voters are not a majority of its voters (its Raft group cannot
 * commit a membership change; that needs an operator):
 *  - fewer healthy replicas than rf: ADD_REPLICA to the best target by the
 *    placement rules, spreading against the healthy replicas and excluding
 *    every current holder (healthy or not), with disk room for size_bytes.
 *    Targets already given a replica earlier in the same plan count it.
 *    No candidate: no action for that shard.  (A shard whose replica array
 *    is full first gets a REMOVE of one unhealthy replica to make room.)
 *  - healthy replicas >= rf and a replica on an ERROR or REMOVED worker (or
 *    on an unknown id): REMOVE_REPLICA of it; it is not coming back.
 *    Replicas on UNHEALTHY workers are kept, so a returning worker finds its
 *    data and the surplus rule below settles it.
 *  - more healthy replicas than rf: REMOVE_REPLICA of the surplus one, chosen
 *    by (not the leader_hint, most crowded zone, DRAINING, most crowded rack,
 *    lowest placement score, lowest id).
 * At most cap actions are written to out[0..*n); the rest come on a later
 * call.  VX_EINVAL for NULL pointers or a malformed cluster; VX_ENOMEM. */
int vx_pd_repair(const vx_pd_cluster *c, vx_pd_action *out, size_t cap, size_t *n);

/* Balancing plan (seed §2.3 reconciler, §4.2) of MOVE_REPLICA actions.
 * o NULL means VX_PD_BALANCE_OPTS_DEFAULT.  Considers shards that are not
 * moving, have exactly rf healthy replicas (repair owns the others) and a
 * healthy voter majority; each shard moves at most once per plan; a target
 * is a READY or ACTIVE worker not holding the shard (any replica, healthy
 * or not) with disk room.
 * Budgets: the moves in flight (shards with moving set, counted against
 * every worker holding one of their replicas) plus the new ones stay within
 * max_moves in the cluster and max_moves_per_worker for each source and
 * target.  In order, each step re-evaluated against the plan so far:
 *  1. drain: every replica on a DRAINING worker moves to the target with the
 *     best failure-domain key (if that target is over its budget, the shard
 *     waits rather than settle for a worse spread);
 *  2. hot shards (qps > 2 x mean shard qps, hottest first): the replica on
 *     the busiest worker moves to the least loaded worker whose load plus
 *     the replica's qps share stays below the source's load;
 *  3. shard counts: while (max - min) / mean > threshold over READY/ACTIVE
 *     workers, or one of them hosts nothing while another hosts two or more
 *     (a new worker), move from a fuller to an emptier worker whose counts
 *     differ by 2 or more and by more than the threshold;
 *  4. load: the same on the workers' reported qps (a replica carries
 *     shard qps / healthy replicas of it).
 * Every move of steps 2-4 must lower the potential
 *     phi = sum (count / mean count)^2 + sum (qps / mean qps)^2
 * over READY/ACTIVE workers, so count and load moves never undo each other
 * and repeated rounds reach a fixed point; among the replicas that qualify
 * it takes a non-leader first, then the largest drop of phi, then the
 * smallest shard.  (A load gap between two workers with few shards may stay
 * when every move would cost more in count balance than it gains.)
 * Moves in steps 2-4 never reduce the shard's distinct zones or racks;
 * step 1 reduces zones only when no eligible worker is left in a new zone.
 * At most cap actions; VX_EINVAL for NULL pointers, a malformed cluster or
 * a negative or NaN threshold; VX_ENOMEM. */
int vx_pd_balance(const vx_pd_cluster *c, const vx_pd_balance_opts *o, vx_pd_action *out,
                  size_t cap, size_t *n);

#endif
