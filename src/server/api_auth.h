/*
 * api_auth.h - the API's gate (internal to src/server): every request is
 * authenticated, rate-limited and authorized here before a handler sees it,
 * and the /v1/auth and /v1/admin routes are served here.
 *
 * What each route needs (the collection is the one in the path):
 *   open            GET /healthz /livez /readyz; POST /v1/auth/login,
 *                   /v1/auth/refresh, /v1/auth/logout (charged to the
 *                   address's bucket before any password or token work)
 *   any credential  GET / ; GET /collections (lists only what the
 *                   credential may read); unknown routes (then 404)
 *   read            collection info, exists, get/retrieve points, search,
 *                   query, scroll, count
 *   write           upsert, delete points, payload changes, payload indexes
 *   admin           create, update, delete a collection (within the scope)
 *   global admin    /v1/admin/... (users, keys), /metrics
 * A scoped credential asking for another collection gets 403 with the same
 * body whether that collection exists or not; every authentication failure
 * gets 401 with one body.
 */
#ifndef VX_SERVER_API_AUTH_H
#define VX_SERVER_API_AUTH_H

#include "auth/gate.h"
#include "server/api.h"
#include "server/backend.h"

#include <stdbool.h>
#include <stddef.h>

/* true: answered (res is set: 401, 403, 429 or an auth/admin route);
 * false: go on with the handlers as *who (clear it after). */
bool vx_api_gate(vx_gate *g, const vx_backend *be, const vx_api_request *req, char **seg, size_t n,
                 vx_api_response *res, vx_principal *who);
/* vx_api_headers' check (api.h) on the split path. */
int vx_api_gate_headers(vx_gate *g, const vx_api_request *req, char **seg, size_t n,
                        vx_api_response *res, vx_principal *who);

#endif
