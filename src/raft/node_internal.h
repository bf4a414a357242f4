/*
 * node_internal.h - what node.c and snapshot_io.c share: the group and node
 * structures and the connection handshake.
 */
#ifndef VX_RAFT_NODE_INTERNAL_H
#define VX_RAFT_NODE_INTERNAL_H

#include "base/handshake.h"
#include "raft/io_wrap.h"
#include "raft/node.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* The connection handshake (node.h; the cryptography is base/handshake.h). */
#define HS_MAGIC 0x48525856u /* "VXRH": Raft traffic for a group follows */
#define SN_MAGIC 0x4e535856u /* "VXSN": a snapshot data request, not Raft traffic */
#define CH_MAGIC 0x48435856u /* "VXCH": the acceptor's challenge */
#define OK_MAGIC 0x4b4f5856u /* "VXOK": the acceptor's proof */
#define HS_VERSION 2u
#define HS_FIXED 40 /* magic, version, group id, server id, argument, address length, reserved */
#define HS_ADDR_MAX 255
#define HS_TAIL (VX_HS_NONCE_LEN + VX_HS_TAG_LEN) /* the connector's nonce and tag */
#define HS_MAX (HS_FIXED + HS_ADDR_MAX + HS_TAIL)
#define CH_LEN (8 + VX_HS_NONCE_LEN)
#define OK_LEN (8 + VX_HS_TAG_LEN)
#define HS_TIMEOUT_MS 5000    /* a handshake not done by then is closed */
#define HS_MAX_PENDING 256    /* handshakes in progress per node; more are closed at once */
#define HS_MAX_PER_ADDRESS 64 /* ... of them from one address (a local cluster is one address) */
#define HS_LABEL_CONNECTOR "vectron-raft-v2 connector"
#define HS_LABEL_ACCEPTOR "vectron-raft-v2 acceptor"
#define SN_MAX_SERVES 4 /* concurrent snapshot streams served per group */

struct vx_group {
    vx_node *node;
    uint64_t gid;
    raft_id id;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    raft_uv_accept_cb accept_cb;
    unsigned pending_connects;
    bool transport_closing;
    raft_uv_transport_close_cb transport_close_cb;
    struct out_conn *out_conns; /* connects in their handshake */
    bool raft_inited, closed, closing;
    void (*close_cb)(void *data); /* vx_group_close */
    void *close_data;
    uv_idle_t reap; /* closed twice after raft_close's callback: see group_close_cb */
    int reap_turns;
    struct vx_group *next;

    /* libraft talks to `wrap` (io_wrap.h: the commit-rule guard), which
     * passes everything to `io` (raft_uv) except the install of a snapshot
     * whose data this replica lacks: that waits until the data is fetched
     * (snapshot_io.c). */
    vx_io_wrap wrap;
    void (*wrap_done)(vx_io_wrap *w);
    vx_snapshot_ops snap_ops; /* .receive == NULL: none */
    struct snap_fetch *fetch; /* the install in progress, or NULL */
    bool closing_io;
    uv_async_t serve_async;
    uv_timer_t fetch_timer;
    uv_async_t fetch_async;
    unsigned handles_open;
    pthread_mutex_t serve_mu;
    int serve_fds[SN_MAX_SERVES]; /* -1: free slot */
    pthread_t serve_threads[SN_MAX_SERVES];
    bool serve_done[SN_MAX_SERVES];
};

struct vx_node {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uint8_t *secret; /* the cluster secret (handshake.h) */
    size_t secret_len;
    unsigned pending_in; /* handshakes being received (and their handles closing) */
    struct in_conn *in_conns; /* those still in their handshake */
    char address[64];
    char dir[400];
    vx_group *groups;
    unsigned open_groups;
    bool closing;
    void (*close_cb)(void *data);
    void *close_data;
};


/* snapshot_io.c */
void vx_group_io_wrap(vx_group *g); /* before raft_init */
int vx_group_io_start(vx_group *g); /* after raft_init: handles */
/* loop: serve snapshot data on tcp after sending `ok` (the acceptor's proof) */
void vx_group_serve_snapshot(vx_group *g, uv_tcp_t *tcp, uint64_t min_index, const uint8_t ok[OK_LEN]);

/* node.c: the connector's handshake for a challenge `ch` (CH_LEN bytes):
 * into out (HS_MAX bytes), its length, or 0 when ch is not a challenge;
 * *cnonce gets the connector's nonce, for checking the acceptor's proof. */
size_t vx_hs_connect_msg(const vx_node *n, uint32_t magic, uint64_t gid, uint64_t id, uint64_t arg,
                         const uint8_t ch[CH_LEN], uint8_t *out, uint8_t cnonce[VX_HS_NONCE_LEN]);
/* node.c, the acceptor's side: the whole message's length from its first
 * HS_FIXED bytes (0: refuse); a whole message checked against challenge ch
 * (false: refuse) with what it claims; the proof to answer it with. */
typedef struct vx_hs_claim {
    uint32_t magic;
    uint64_t gid, id, arg;
    char address[HS_ADDR_MAX + 1];
    const uint8_t *cnonce; /* in the message */
    size_t claim_len;
} vx_hs_claim;
size_t vx_hs_msg_len(const uint8_t fixed[HS_FIXED]);
bool vx_hs_check(const vx_node *n, const uint8_t ch[CH_LEN], const uint8_t *msg, size_t len,
                 vx_hs_claim *out);
void vx_hs_proof(const vx_node *n, const uint8_t ch[CH_LEN], const uint8_t *msg, const vx_hs_claim *cl,
                 uint8_t ok[OK_LEN]);
/* node.c: is `ok` (OK_LEN bytes) the acceptor's proof for this handshake? */
bool vx_hs_accepted(const vx_node *n, const uint8_t ch[CH_LEN], const uint8_t *msg, size_t msg_len,
                    const uint8_t ok[OK_LEN]);
int vx_parse_address(const char *address, struct sockaddr_storage *sa);

#endif
