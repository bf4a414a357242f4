/*
 * node_internal.h - what node.c and snapshot_io.c share: the group and node
 * structures and the connection handshake.
 */
#ifndef VX_RAFT_NODE_INTERNAL_H
#define VX_RAFT_NODE_INTERNAL_H

#include "raft/io_wrap.h"
#include "raft/node.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define HS_MAGIC 0x48525856u /* "VXRH" little-endian */
#define HS_VERSION 1u
#define HS_FIXED 32
#define SN_MAGIC 0x4e535856u /* "VXSN": a snapshot data request, not Raft traffic */
#define SN_MAX_SERVES 4 /* concurrent snapshot streams served per group */
#define HS_ADDR_MAX 255

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
void vx_group_serve_snapshot(vx_group *g, uv_tcp_t *tcp, uint64_t min_index); /* loop */
int vx_parse_address(const char *address, struct sockaddr_storage *sa);

#endif
