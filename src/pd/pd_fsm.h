/*
 * pd_fsm.h - the PD state machine (state.h) as libraft's struct raft_fsm.
 *
 * An entry is a u32 length, the packed Command, zero padding to 8 bytes.
 * apply() hands each entry's result to on_result(data, index, res) (the
 * proposer looks it up by index: libraft drops apply results on followers,
 * so they cannot be allocated memory).  An entry that is not a command this
 * build knows stops the process (exit 70): a replica must not skip an entry
 * and diverge.  Snapshots are the whole packed state.
 */
#ifndef VX_PD_PD_FSM_H
#define VX_PD_PD_FSM_H

#include "pd/state.h"

#include <raft.h>

typedef void (*vx_pd_result_cb)(void *data, uint64_t index, const vx_pd_result *res);

typedef struct vx_pd_fsm {
    struct raft_fsm fsm;
    vx_pd_state *st;
    struct raft *raft; /* set once the raft instance exists */
    vx_pd_result_cb on_result;
    void (*on_restore)(void *data); /* optional: after a snapshot replaced the state */
    void *data;
} vx_pd_fsm;

void vx_pd_fsm_init(vx_pd_fsm *f, vx_pd_state *st, vx_pd_result_cb on_result, void *data);
/* An entry for `cmd` (raft_malloc'd base); 0 or VX_ENOMEM. */
int vx_pd_entry(const Vxpd__Command *cmd, struct raft_buffer *out);

#endif
