/*
 * shard_fsm.h - a shard replica as libraft's state machine (struct raft_fsm).
 *
 * This adapter is the only place where raft_* types meet the shard; the
 * rest of Vectron sees vx_shard.  libraft calls apply() with committed
 * entries in log order; the entry's index is raft->last_applied + 1 at that
 * moment (libraft sets last_applied after apply returns), which the shard
 * uses for versions and idempotent replay.
 *
 * Snapshots (design in docs/replication.md): libraft keeps snapshots whole
 * in memory, so ours carry no data.  snapshot() checkpoints the shard -- the
 * LMDB store is fsynced and the index saved -- and returns a 32-byte
 * descriptor {magic, version, applied index, store digest}; only then may
 * libraft drop the log entries it covers.  restore() of a descriptor the
 * local store already covers (a restart) is a no-op.  A replica whose store
 * is behind a leader's descriptor needs the leader's LMDB copy streamed
 * separately (not built yet): restore() refuses it with RAFT_IOERR.
 *
 * The apply result handed to raft_apply's callback is a vx_fsm_result
 * (malloc'd; the callback frees it).
 */
#ifndef VX_RAFT_SHARD_FSM_H
#define VX_RAFT_SHARD_FSM_H

#include "shard/shard.h"

#include <raft.h>

typedef struct vx_fsm_result {
    uint64_t index;         /* Raft index of the entry */
    vx_apply_result result; /* what the shard did with it */
} vx_fsm_result;

typedef struct vx_shard_fsm {
    struct raft_fsm fsm;
    vx_shard *shard;
    struct raft *raft; /* set once the raft instance exists */
} vx_shard_fsm;

void vx_shard_fsm_init(vx_shard_fsm *f, vx_shard *shard);

#endif
