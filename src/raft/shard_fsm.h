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
 * in memory, so ours carry no data: a 32-byte descriptor {magic, version,
 * applied index, reserved}.  Taking one checkpoints the shard -- the LMDB
 * store is fsynced and the index saved -- off the loop thread (libraft's
 * snapshot_async); only then may libraft drop the log entries it covers.  restore() of a descriptor the
 * local store covers is a no-op.  A replica whose store is behind a
 * leader's descriptor gets the data before libraft sees the snapshot: the
 * node host fetches it with vx_shard_fsm_snapshot_ops() (node.h), the
 * leader's vx_shard_send streams it, vx_shard_receive/install swap it in.
 *
 * The install replaces the shard object: threads other than the loop's
 * reach the shard through vx_shard_fsm_acquire/release (a read lock).
 *
 * The apply result handed to raft_apply's callback is not memory: libraft
 * drops results on followers (and for entries no request waits for), so an
 * allocated result would leak.  The entry's index and the shard's status are
 * packed into the pointer value; decode it with vx_fsm_result_decode().
 */
#ifndef VX_RAFT_SHARD_FSM_H
#define VX_RAFT_SHARD_FSM_H

#include "raft/node.h"
#include "shard/shard.h"

#include <pthread.h>

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
    vx_shard *shard;   /* replaced by a snapshot install (loop thread, write lock) */
    struct raft *raft; /* set once the raft instance exists */
    pthread_rwlock_t lock;
    unsigned installs; /* snapshots whose data was installed (loop thread) */
    /* the Raft log in memory, bounded by bytes (see fsm_apply): the mean
     * entry size, and the group's configured entry counts as the caps */
    double entry_bytes;
    uint64_t applies;
    unsigned cap_threshold, cap_trailing;
} vx_shard_fsm;

void vx_shard_fsm_init(vx_shard_fsm *f, vx_shard *shard);
/* For a raft_io without async work (libraft's fixture): snapshots checkpoint
 * on the loop thread. */
void vx_shard_fsm_sync_snapshots(vx_shard_fsm *f);
void vx_shard_fsm_destroy(vx_shard_fsm *f);
/* The operations to give vx_group_set_snapshot_ops. */
void vx_shard_fsm_snapshot_ops(vx_shard_fsm *f, vx_snapshot_ops *ops);
/* The shard, held against replacement until release (any thread but the
 * loop's, which owns replacement and needs no lock). */
vx_shard *vx_shard_fsm_acquire(vx_shard_fsm *f);
void vx_shard_fsm_release(vx_shard_fsm *f);

#endif
