/*
 * api.h - the HTTP API of a Vectron node: Qdrant's REST API (the clients of
 * ../shared/reference/qdrant-rest-compat.md work unchanged) and the seed's
 * /v1 API, one implementation behind both.
 *
 * The transport (libmicrohttpd, server/http.c) hands a complete request to
 * vx_api_handle; handlers parse the JSON body, act on the runtime
 * (server/runtime.h) and write the response.  Every failure is a JSON error
 * with the status the clients expect: 400 bad input, 404 missing, 409
 * exists, 413 too large, 422 unprocessable, 429 rate, 500/503 server.
 */
#ifndef VX_SERVER_API_H
#define VX_SERVER_API_H

#include "server/backend.h"
#include "server/runtime.h"

#include <stddef.h>
#include <stdint.h>

typedef struct vx_api_limits {
    size_t max_body_bytes;    /* refused with 413 before it is read */
    uint32_t max_batch;       /* points per write request */
    uint32_t max_dim;         /* vectors.size at creation */
    uint32_t max_limit;       /* limit / top_k / offset */
    uint32_t max_json_depth;  /* nesting of any request body */
    uint32_t slow_query_ms;   /* requests slower than this are logged */
    int write_timeout_ms;     /* commit + apply wait */
    int shard_timeout_ms;     /* a search's per-shard deadline (0: the backend's) */
    size_t cache_bytes;       /* search result cache (server/rcache.h); 0: off */
    unsigned cache_ttl_ms;    /* its entries' lifetime (default 200) */
} vx_api_limits;

void vx_api_limits_default(vx_api_limits *l);

typedef struct vx_api vx_api;
struct vx_metrics;

int vx_api_new(const vx_backend *be, const vx_api_limits *lim, struct vx_metrics *metrics, vx_api **out);
void vx_api_free(vx_api *api);
const vx_api_limits *vx_api_get_limits(const vx_api *api);

/* A request as the transport gives it; query parameters through get_arg. */
typedef struct vx_api_request {
    const char *method;
    const char *path; /* decoded, without the query string */
    const char *body;
    size_t body_len;
    const char *(*get_arg)(void *ctx, const char *key);
    void *arg_ctx;
    /* a request header by name (case-insensitive), NULL when absent; the
     * callback may be NULL (no headers) */
    const char *(*get_header)(void *ctx, const char *name);
    const char *peer; /* the client's address (rate limits); may be NULL */
    char rid[17];
    /* the caller as vx_api_headers authenticated it from the headers, before
     * the body was read (its rate was charged then); NULL: authenticate here */
    const struct vx_principal *who;
} vx_api_request;

typedef struct vx_api_response {
    int status;
    const char *content_type;
    char *body; /* malloc'd */
    size_t len;
    const char *route; /* a static name for metrics and logs */
    const char *retry_after; /* a Retry-After header value, or NULL */
    char retry_buf[16];      /* where a computed Retry-After is kept */
    bool close;              /* the transport closes the connection after it */
} vx_api_response;

void vx_api_handle(vx_api *api, const vx_api_request *req, vx_api_response *res);

/* Before any body is read: authenticate and authorize the request from its
 * method, path and headers alone (req->body is ignored).  VX_API_REFUSED:
 * answered in res (401, 403, 429), read no body.  VX_API_AUTHED: *who is the
 * caller (clear it after; hand it to vx_api_handle as req->who).
 * VX_API_OPEN: a route that needs no credentials (health, /v1/auth): nobody
 * is known, so the transport keeps its body small.  VX_API_UNGUARDED:
 * authentication is off. */
enum { VX_API_OPEN = 0, VX_API_AUTHED = 1, VX_API_REFUSED = 2, VX_API_UNGUARDED = 3 };
struct vx_principal;
int vx_api_headers(vx_api *api, const vx_api_request *req, vx_api_response *res,
                   struct vx_principal *who);
/* Authentication, authorization and rate limits (auth/gate.h) for every
 * request from now on, and the /v1/auth and /v1/admin routes.  Without a
 * gate (or with a disabled one) the API is open. */
struct vx_gate;
void vx_api_set_gate(vx_api *api, struct vx_gate *gate);
/* A JSON error response (the transport's own refusals: 413, 408, 500). */
void vx_api_error(vx_api_response *res, int status, const char *msg);

#endif
