/* backend_cluster.h - the API's backend over a cluster (backend_cluster.c). */
#ifndef VX_GATEWAY_BACKEND_CLUSTER_H
#define VX_GATEWAY_BACKEND_CLUSTER_H

#include "gateway/cluster.h"
#include "server/backend.h"

void vx_backend_cluster(vx_cluster *cl, vx_backend *out);

#endif
