/*
 * io_wrap.h - a raft_io in front of another raft_io (raft_uv, or the
 * fixture's), for two things libraft 0.15 lacks:
 *
 * 1. The commit rule of Raft section 5.4.2.  libraft 0.15's
 *    replicationQuorum() commits the leader's last stored entry as soon as
 *    a majority stores it, even when that entry is from an earlier term --
 *    the "Figure 8" error: such an entry can still be overwritten by a later
 *    leader, so an acknowledged write could be lost.  (Found by our fixture
 *    test, seed 556; fixed upstream in raft 0.17.1, commit 524f735; Debian 12
 *    ships 0.15.)  The wrapper closes it without touching libraft: the
 *    leader's commit index only moves in replicationQuorum(r, last_stored),
 *    so while this leader has not yet stored an entry of its own term it
 *    holds back the successful AppendEntries results it receives (they are
 *    what would let it count an old-term entry), and it appends a barrier
 *    entry of its term at once so that window closes within one local
 *    write.  Results are only delayed: followers resend on the next
 *    heartbeat, and rejected results (log probing) pass untouched.
 *
 * 2. Hooks on snapshot_put, close and tick, used by the node host to fetch a
 *    snapshot's data before libraft persists it (snapshot_io.c).
 *
 * 5. What a follower reports it holds.  libraft 0.15 answers a successful
 *    AppendEntries with last_log_index = its whole stored log, and the
 *    leader counts that as matched up to min(that, its own last index).  A
 *    follower holding a stale tail from an old term (same indexes, other
 *    terms) thus makes the leader count entries the follower does not have,
 *    and commit them on too few replicas (found by our fixture test, seed
 *    728 with disk faults: an acknowledged write lost).  The wrapper caps
 *    the reported index at what the request it answers verified:
 *    prev_log_index + n_entries (for answers given inside the receive, i.e.
 *    heartbeats and rejections, exactly that request's; for answers after a
 *    disk write or a snapshot install, the highest such end -- or snapshot
 *    index -- among this term's requests).
 *
 * 4. Fail-stop on storage errors.  libraft 0.15 carries on after a failed
 *    write (a follower answers "rejected", a leader fails the request and
 *    keeps the entry in memory).  We do not: once the inner io reports a
 *    failed append or snapshot write (an fsync that failed may or may not
 *    have persisted the data, and is never retried), the wrapper stops the
 *    replica -- it drops every message and tick and refuses every request --
 *    so it neither votes nor acknowledges again; its peers go on, and it
 *    rejoins from them after a restart.  vx_io_wrap_inject_fault makes the
 *    n-th later append report a failure after writing (tests).
 *
 * 3. A message to a peer without an address is refused (RAFT_NOCONNECTION)
 *    instead of crashing raft_uv: libraft 0.15 answers an installed
 *    snapshot to its "current leader", which is unset when a vote or a
 *    higher term arrived meanwhile.
 */
#ifndef VX_RAFT_IO_WRAP_H
#define VX_RAFT_IO_WRAP_H

#include <raft.h>
#include <stdbool.h>

typedef struct vx_io_wrap vx_io_wrap;

typedef struct vx_io_wrap_hooks {
    void *data;
    /* Return true when the hook took the request (it must complete it). */
    bool (*snapshot_put)(void *data, unsigned trailing, struct raft_io_snapshot_put *req,
                         const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb);
    /* Runs first in close; call done(w) when ready for the inner close. */
    void (*close)(void *data, vx_io_wrap *w, void (*done)(vx_io_wrap *w));
    /* While true, libraft's ticks are withheld (a replica fetching snapshot
     * data must not time out into an election: it lacks the data its log
     * claims). */
    bool (*hold_ticks)(void *data);
} vx_io_wrap_hooks;

struct vx_io_wrap {
    struct raft_io io; /* give this one to raft_init (or set raft->io to it) */
    struct raft_io *inner;
    vx_io_wrap_hooks hooks;
    raft_io_recv_cb recv;
    raft_io_tick_cb tick;
    raft_io_close_cb close_cb;
    bool close_fired; /* libraft 0.15's raft_uv may report its close again */
    raft_term stored_term;  /* highest term of an entry stored locally */
    raft_term barrier_term; /* term of the last barrier this wrapper asked for */
    unsigned long held;     /* results held back (statistics, tests) */
    bool failed;            /* fail-stopped after a storage error */
    bool in_recv;           /* inside libraft's handling of an AppendEntries */
    raft_index recv_end;    /* its prev_log_index + n_entries */
    raft_term ae_term;      /* term of the AppendEntries seen last */
    raft_index ae_max_end;  /* highest prev_log_index + n_entries this term */
    unsigned fault_in;      /* inject: the fault_in-th next append fails (0: none) */
};

/* Make the n-th next append (n >= 1) report an I/O error after the inner io
 * wrote it, as a failed fsync would. */
void vx_io_wrap_inject_fault(vx_io_wrap *w, unsigned n);

/* Set up w in front of inner.  When raft_init already ran on inner (the
 * fixture), set raft->io = &w->io and w->io.data = raft before raft_start. */
void vx_io_wrap_init(vx_io_wrap *w, struct raft_io *inner, const vx_io_wrap_hooks *hooks);

#endif
