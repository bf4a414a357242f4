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
 * The apply result handed to raft_apply's callback is not memory: libraft
 * drops results on followers (and for entries no request waits for), so an
 * allocated result would leak.  The entry's index and the shard's status are
 * packed into the pointer value; decode it with vx_fsm_result_decode().
 */
#ifndef VX_RAFT_SHARD_FSM_H
#define VX_RAFT_SHARD_FSM_H

#include "shard/shard.h"

#include <raft.h>

typedef struct vx_fsm_result {
    uint64_t index; /* Raft index of the entry (56 bits) */
    int status;     /* 0, or why the shard applied it as a no-op (VX_E*) */
} vx_fsm_result;

/* Decode the `result` argument of a raft_apply callback (status 0). */
static inline vx_fsm_result vx_fsm_result_decode(const void *result)
{
    uint64_t v = (uint64_t)(uintptr_t)result;
    vx_fsm_result r = {v >> 8, (int)(int8_t)(v & 0xff)};
    return r;
}

typedef struct vx_shard_fsm {
    struct raft_fsm fsm;
    vx_shard *shard;
    struct raft *raft; /* set once the raft instance exists */
} vx_shard_fsm;

void vx_shard_fsm_init(vx_shard_fsm *f, vx_shard *shard);

#endif
