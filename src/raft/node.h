/*
 * node.h - the node host: many Raft groups on one libuv loop, one port.
 *
 * A process (worker, placement driver, or `vectron serve`) runs one node
 * host.  It listens on ONE TCP address for all of its groups: every Raft
 * group gets its own struct raft_uv_transport (libraft's public transport
 * vtable).  Every connection, Raft or snapshot data, starts with a mutual
 * challenge-response on the cluster secret (base/handshake.h), all integers
 * little-endian:
 *
 *   acceptor:  "VXCH", u32 version (2), 32-byte nonce Na
 *   connector: "VXRH" (Raft) or "VXSN" (snapshot data), u32 version, u64
 *              group id, u64 its server id, u64 argument (VXSN: the
 *              snapshot index wanted), u32 address length, u32 0, its node
 *              address (host:port), 32-byte nonce Nc, 32-byte tag
 *              HMAC(secret; "connector", Na, Nc, everything before Nc)
 *   acceptor:  "VXOK", u32 version, 32-byte tag HMAC(secret; "acceptor",
 *              Na, Nc, the same claim)
 *
 * The acceptor reads exactly those bytes (the libuv alloc callback never
 * offers more), checks the tag, finds the named group and checks that the
 * sender's server id is in its configuration (any id while a new replica has
 * none yet), and only then hands the stream to the group's accept callback
 * (libraft) or to the snapshot sender; the connector checks the acceptor's
 * tag before it sends a byte of Raft traffic or takes a byte of snapshot
 * data.  Anything else, or a handshake not done within 5 s, closes the
 * connection without a word; at most 256 handshakes are pending per node,
 * 64 from one address.
 * What this does not do: encrypt (docs/security.md).
 *
 * Everything here runs on the loop thread.  Raft apply callbacks (the state
 * machines) run on it too; they must not block on index work (the shard
 * queues it to the worker pool).
 */
#ifndef VX_RAFT_NODE_H
#define VX_RAFT_NODE_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define VX_NODE_ERRMSG_LEN 256

typedef struct vx_node vx_node;
typedef struct vx_group vx_group;

/* Listen on `address` ("127.0.0.1:7001"); group data under data_dir; every
 * connection authenticated with `secret` (NUL-terminated; copied).  An empty
 * or NULL secret authenticates nothing: only for nodes the caller keeps off
 * the network (the roles refuse it beyond loopback). */
int vx_node_new(uv_loop_t *loop, const char *address, const char *data_dir, const char *secret,
                vx_node **out, char *errbuf);
/* Close every group, then the listener; cb(data) runs when all is released. */
void vx_node_close(vx_node *n, void (*cb)(void *data), void *data);
const char *vx_node_address(vx_node *n);

typedef struct vx_group_options {
    unsigned election_timeout_ms;  /* default 1000 (many groups share a loop) */
    unsigned heartbeat_timeout_ms; /* default 100 */
    unsigned snapshot_threshold;   /* entries; default 8192 */
    unsigned snapshot_trailing;    /* entries kept after a snapshot; default 1024 */
    unsigned install_snapshot_timeout_ms; /* resend an unanswered snapshot; default 5000
                                             (the message is 32 bytes; a replica busy
                                             fetching the data ignores resends) */
} vx_group_options;

/* ---- snapshot data ---------------------------------------------------------------
 * libraft ships a snapshot whole in one message, so a state machine's
 * snapshot is a small descriptor and its data travels on a side connection
 * (docs/replication.md).  A group with these operations installs a leader's
 * snapshot on a replica lacking its data in three steps, none on the loop
 * thread except install: the node host connects to the leader's node
 * address with a "VXSN" handshake naming the group and the snapshot index,
 * the leader's serve() streams, this replica's receive() stores and checks
 * it, install() swaps it in; only then is the snapshot handed to libraft
 * (whose restore() then finds its data present).  Failed fetches are retried
 * with backoff, from whichever node leads by then. */
typedef struct vx_snapshot_ops {
    void *data;
    /* loop thread: does local state already cover this snapshot? */
    bool (*covers)(void *data, const struct raft_snapshot *snapshot);
    /* serve thread: stream data covering `min_index` to the blocking socket fd */
    int (*serve)(void *data, int fd, uint64_t min_index, char *errbuf);
    /* fetch thread: read such a stream from fd into staging, verify it */
    int (*receive)(void *data, int fd, uint64_t min_index, char *errbuf);
    /* loop thread: swap the staged data in; VX_ESTATE = busy, try later;
     * VX_EFATAL = the local data is unusable: the process stops */
    int (*install)(void *data, char *errbuf);
} vx_snapshot_ops;

/* Create group `group_id` with this node's raft id `id` and state machine
 * `fsm` (not started).  Its Raft log lives in DATA/g<group_id>/raft. */
int vx_group_new(vx_node *n, uint64_t group_id, raft_id id, struct raft_fsm *fsm,
                 const vx_group_options *opt, vx_group **out, char *errbuf);
/* First start of a new group: the initial voters (ids and node addresses).
 * Harmless (returns 0) when the group already has state on disk. */
int vx_group_bootstrap(vx_group *g, unsigned n, const raft_id *ids, const char *const *addresses);
/* Set before vx_group_start. */
void vx_group_set_snapshot_ops(vx_group *g, const vx_snapshot_ops *ops);
int vx_group_start(vx_group *g);
struct raft *vx_group_raft(vx_group *g);
/* Close one group (its Raft log stays on disk); cb(data) on the loop
 * thread once closed.  The group's memory is released with the node. */
void vx_group_close(vx_group *g, void (*cb)(void *data), void *data);

/* ---- membership (the operations the placement driver calls) ------------------
 * Each runs on the group's leader (VX_ESTATE elsewhere: the caller redirects
 * to the leader) and completes through cb(data, status), status 0 or a
 * VX_E* code, on the loop thread.  One change at a time per group
 * (VX_ESTATE while one is in flight, as libraft allows).  The steps are
 * idempotent: repeating one that is already in effect completes at once
 * (cb runs before the call returns), so a shard move resumes after any
 * leader change or crash by repeating its current step. */
typedef void (*vx_group_done_cb)(void *data, int status);
/* Add `id` at `address` as a learner (RAFT_STANDBY: replicates, never votes).
 * The node must host the group already, created and started without
 * bootstrap. */
int vx_group_add_learner(vx_group *g, raft_id id, const char *address, vx_group_done_cb cb,
                         void *data);
/* Make `id` a voter; libraft first lets it catch up with the log. */
int vx_group_promote(vx_group *g, raft_id id, vx_group_done_cb cb, void *data);
int vx_group_remove(vx_group *g, raft_id id, vx_group_done_cb cb, void *data);
/* Hand leadership to `id` (0: the most up-to-date voter).  Status 0 once this
 * node has stepped down; VX_ESTATE when it still leads (the target did not
 * win in time): the caller checks the new leader and retries. */
int vx_group_transfer(vx_group *g, raft_id id, vx_group_done_cb cb, void *data);
/* Linearizable read point: cb fires once every entry committed before the
 * call is applied on this leader. */
int vx_group_barrier(vx_group *g, vx_group_done_cb cb, void *data);
/* The current leader's id and address as this node knows them (0/NULL). */
void vx_group_leader(vx_group *g, raft_id *id, const char **address);
uint64_t vx_group_id(vx_group *g);
vx_group *vx_node_find_group(vx_node *n, uint64_t group_id);

#endif
