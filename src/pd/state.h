/*
 * state.h - the placement driver's replicated state machine.
 *
 * The state (proto/pd.proto, message State) is small -- workers, collections,
 * shards and their replicas -- so it lives in memory as a protobuf-c tree and
 * a snapshot is the whole packed message.  Every change is a Raft command
 * (message Command) applied by vx_pd_state_apply, in log order, on every PD
 * replica; apply is deterministic (no clock, no randomness, no I/O): the
 * leader makes the decisions (src/pd/decide.c) and proposes their outcome,
 * and apply validates the command again against the state it finds, since
 * the state may have changed between the proposal and the commit.  A command
 * that is not valid any more is applied as a no-op with an error status;
 * the proposer reports it.
 *
 * The assignments epoch (State.epoch) is bumped by every change that alters
 * routing or placement: a worker registered or changing state, a collection
 * created or deleted, a replica added, promoted or removed.  Each shard
 * carries the epoch of its own last change.
 *
 * Worker states follow seed §6.1; apply moves READY <-> ACTIVE by itself
 * (a READY worker given a replica is ACTIVE, an ACTIVE worker left without
 * replicas is READY); every other transition is a command.
 *
 * The tree is allocated with malloc in the shape protobuf-c's unpacker
 * produces, so vxpd__state__free_unpacked(s, NULL) releases either.
 */
#ifndef VX_PD_STATE_H
#define VX_PD_STATE_H

#include "pd.pb-c.h"
#include "pd/decide.h"

#include <stddef.h>
#include <stdint.h>

#define VX_PD_FIRST_GROUP_ID 1000 /* shard Raft groups; lower ids are the PD's own */
#define VX_PD_MAX_SHARDS 1024     /* per collection */
#define VX_PD_NAME_MAX 255        /* collection names, bytes */
#define VX_PD_ADDR_MAX 255        /* host:port */

typedef struct vx_pd_state vx_pd_state;

typedef struct vx_pd_result {
    int status;     /* 0, or the VX_E* reason the command was a no-op */
    uint64_t value; /* register: the worker id; create: the collection id */
    char msg[200];  /* why, when status != 0 */
} vx_pd_result;

vx_pd_state *vx_pd_state_new(void);
void vx_pd_state_free(vx_pd_state *st);
/* Read-only view of the tree (valid until the next apply or restore). */
const Vxpd__State *vx_pd_state_get(const vx_pd_state *st);

/* Apply one packed Command.  Returns 0 when it was applied or refused
 * (res->status says which); VX_EFORMAT when the bytes are not a Command or
 * name a kind this build does not know (the replica must stop rather than
 * diverge); VX_ENOMEM. */
int vx_pd_state_apply(vx_pd_state *st, const uint8_t *buf, size_t len, vx_pd_result *res);

/* The whole state, packed (malloc'd). */
int vx_pd_state_encode(const vx_pd_state *st, uint8_t **buf, size_t *len);
/* Replace the state with a packed one; VX_EFORMAT if it does not decode
 * (the state is then unchanged). */
int vx_pd_state_restore(vx_pd_state *st, const uint8_t *buf, size_t len);

/* Lookups (NULL when absent). */
const Vxpd__Worker *vx_pd_state_worker(const vx_pd_state *st, uint64_t id);
const Vxpd__Worker *vx_pd_state_worker_by_name(const vx_pd_state *st, const char *name);
const Vxpd__Collection *vx_pd_state_collection(const vx_pd_state *st, const char *name);
const Vxpd__Shard *vx_pd_state_shard(const vx_pd_state *st, uint64_t group_id,
                                     const Vxpd__Collection **coll);

/* Pack a command (malloc'd); 0 or VX_ENOMEM. */
int vx_pd_command_pack(const Vxpd__Command *cmd, uint8_t **buf, size_t *len);

/* The decision functions' view of the state (decide.h): workers with their
 * capacity and states, every shard with its replicas and rf, moving set for
 * a move in flight.  Load, heartbeats, leader hints and sizes are not
 * replicated: the caller fills them in from what the leader heard.
 * Free with vx_pd_cluster_free. */
int vx_pd_state_cluster(const vx_pd_state *st, vx_pd_cluster *out);
void vx_pd_cluster_free(vx_pd_cluster *c);

#endif
