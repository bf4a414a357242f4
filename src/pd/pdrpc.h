/*
 * pdrpc.h - the placement driver's internal RPC methods (proto/pd.proto
 * messages over the framed transport of src/rpc/rpc.h) and a client that
 * finds the leader.
 *
 * Every answer with a negative frame status carries a vxpd.Error message.
 * VX_PD_NOT_LEADER names the leader's RPC address when the replica knows
 * it; VX_PD_RETRY means "leader, not ready yet" (it has not applied a
 * barrier of its term).  Other statuses are VX_E* codes (base/err.h).
 */
#ifndef VX_PD_PDRPC_H
#define VX_PD_PDRPC_H

#include "pd.pb-c.h"
#include "rpc/rpc.h"

#include <stddef.h>
#include <stdint.h>

enum vx_pd_method {
    VX_PD_REGISTER_WORKER = 1,   /* RegisterWorkerRequest -> RegisterWorkerResponse */
    VX_PD_HEARTBEAT = 2,         /* HeartbeatRequest -> HeartbeatResponse */
    VX_PD_GET_TOPOLOGY = 3,      /* TopologyRequest -> Topology */
    VX_PD_CREATE_COLLECTION = 4, /* CreateCollectionRequest -> CollectionResponse */
    VX_PD_DELETE_COLLECTION = 5, /* NameRequest -> Empty */
    VX_PD_LIST_COLLECTIONS = 6,  /* Empty -> ListCollectionsResponse */
    VX_PD_MOVE_SHARD = 7,        /* MoveShardRequest -> Empty (the move runs on) */
    VX_PD_DRAIN_WORKER = 8,      /* WorkerRequest -> Empty */
    VX_PD_REMOVE_WORKER = 9,     /* WorkerRequest -> Empty (refused while it holds replicas) */
    VX_PD_CLUSTER_STATUS = 10,   /* Empty -> ClusterStatus */
    VX_PD_GET_COLLECTION = 11,   /* NameRequest -> CollectionResponse */
    VX_PD_PAYLOAD_INDEX = 12,    /* PayloadIndexRequest -> Empty (declare or drop) */
    VX_PD_UPDATE_COLLECTION = 13, /* UpdateCollectionRequest -> Empty (same size and distance) */
    VX_PD_WATCH_TOPOLOGY = 14,   /* TopologyRequest -> Topology once the epoch differs from
                                    known_epoch (at most ~10 s later: then unchanged) */
    VX_PD_GET_AUTH = 15,         /* AuthRequest -> AuthState (credentials only when the
                                    auth epoch differs from known_auth_epoch) */
    VX_PD_AUTH_CHANGE = 16,      /* Command (a credential kind only) -> Empty */
};

#define VX_PD_NOT_LEADER (-2000)
#define VX_PD_RETRY (-2001)

#define VX_PD_CLIENT_ERRMSG_LEN 256

/* Call `method` on the PD cluster whose replicas listen at addrs[0..n):
 * tries them in turn, follows VX_PD_NOT_LEADER to the named leader, retries
 * VX_PD_RETRY and connection failures with a short backoff until
 * timeout_ms.  On 0, *resp is the unpacked answer (free with
 * protobuf_c_message_free_unpacked(*resp, NULL)).  A refusal by the leader
 * returns its status (a VX_E* code) with its message in errbuf; VX_EIO when
 * no leader answered in time. */
int vx_pd_client_call(const char *const *addrs, size_t n, const char *secret, uint32_t method,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                      ProtobufCMessage **resp, int timeout_ms, char *errbuf);

/* Answer a call with a packed message (status 0, or an error status with a
 * message of its own), or with a vxpd.Error: the message and, for
 * VX_PD_NOT_LEADER, the leader's RPC address ("" or NULL: unknown). */
void vx_rpc_reply_msg(vx_rpc_call *call, int32_t status, const ProtobufCMessage *m);
void vx_rpc_reply_err(vx_rpc_call *call, int32_t status, const char *leader, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A fresh request id (32 hex digits) for calls that must not run twice
 * when retried (CreateCollection). */
void vx_pd_request_id(char out[33]);

#endif
