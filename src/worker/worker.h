/*
 * worker.h - `vectron worker`: a data node of a cluster.
 *
 * A worker registers with the placement driver (issue 5), heartbeats with
 * its load and the state of the shard replicas it hosts, and hosts what the
 * PD's topology assigns it: for every shard listing this worker among its
 * replicas it opens the shard (store + index, src/shard/) and runs its Raft
 * group on the node host, with this worker's PD id as its Raft id.  Shards
 * no longer assigned are closed and their data removed.
 *
 * Group membership follows the PD: the replica leading a shard's group
 * reconciles the group's Raft configuration with the PD's replica list, one
 * change at a time -- a listed learner not in the configuration is added
 * (RAFT_STANDBY), a listed voter that is a standby is promoted (libraft
 * catches it up first), a member no longer listed is removed (a leader no
 * longer listed hands leadership over first).  The leader reports the
 * configuration in its heartbeat; the PD advances a move only when the
 * report shows the previous step done (pd.h).  Only the voters a shard was
 * created with bootstrap its group; replicas added later start empty and
 * are filled by libraft (log entries) and the snapshot transfer of issue 3.
 *
 * Data path (internal RPC, proto/worker.proto, methods in worker.h): writes
 * go to the shard's leader and are acknowledged after commit and apply;
 * searches, point reads, scans, counts and shard info run on the search
 * pool, never on the loop thread.  A replica that does not lead answers VX_PD_NOT_LEADER naming
 * the leader's RPC address when it knows it.
 */
#ifndef VX_WORKER_WORKER_H
#define VX_WORKER_WORKER_H

enum vx_worker_method {
    VX_W_WRITE = 101,      /* WriteRequest -> WriteResponse */
    VX_W_SEARCH = 102,     /* SearchRequest -> SearchResponse */
    VX_W_GET = 103,        /* GetRequest -> GetResponse */
    VX_W_SHARD_INFO = 104, /* ShardInfoRequest -> ShardInfo */
    VX_W_SCAN = 105,       /* ScanRequest -> ScanResponse (a page of points in id order) */
    VX_W_COUNT = 106,      /* CountRequest -> CountResponse */
};

/* argv after the command word. */
int vx_worker_main(int argc, char **argv);

#endif
