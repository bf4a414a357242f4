/*
 * auth_sync.h - a gateway's copy of the cluster's credentials.
 *
 * Credentials live in the placement driver's state; a gateway's gate
 * (auth/gate.h) checks every request against a copy.  The copy follows the
 * PD by polling GetAuth every poll_ms (the answer carries the credentials
 * only when the auth epoch moved), and at once after a change made through
 * this gateway (vx_auth_sync_now), so a key created here works here as soon
 * as its creation is answered.  Another gateway sees a change within
 * poll_ms; a revoked key may still pass there meanwhile.  While the PD is
 * unreachable the last copy stays in force (fail static: a PD outage does
 * not lock every client out; the bootstrap admin key always works).
 */
#ifndef VX_GATEWAY_AUTH_SYNC_H
#define VX_GATEWAY_AUTH_SYNC_H

#include "auth/gate.h"
#include "gateway/cluster.h"

typedef struct vx_auth_sync vx_auth_sync;

/* Starts the poller (it also registers itself with the cluster for the
 * backend's auth_change). */
int vx_auth_sync_start(vx_cluster *cl, vx_gate *gate, unsigned poll_ms, vx_auth_sync **out);
/* One GetAuth now; 0 when the copy is current. */
int vx_auth_sync_now(vx_auth_sync *s, char *errbuf);
void vx_auth_sync_stop(vx_auth_sync *s);

#endif
