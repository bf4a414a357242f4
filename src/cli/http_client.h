/*
 * http_client.h - a minimal blocking HTTP/1.1 client for the CLI.
 *
 * Just enough of RFC 9112 to talk to `vectron serve` (or Qdrant): one
 * request at a time on one keep-alive TCP connection, the body framed by
 * Content-Length; the response read as status line + headers + a body framed
 * by Content-Length, chunked transfer coding (RFC 9112 §7.1) or, failing
 * both, the end of the connection.  No TLS, no proxies, no redirects, no
 * compression (we send no Accept-Encoding, so RFC 9110 §12.5.3 lets the
 * server send only the identity coding).
 *
 * Threading: a vx_httpc is owned by one thread; threads that want parallel
 * requests each open their own (the bulk loader does).  Nothing is global,
 * and SIGPIPE is avoided with MSG_NOSIGNAL, so the process's signal
 * dispositions are left alone.
 *
 * Timeouts: SO_SNDTIMEO / SO_RCVTIMEO of timeout_s seconds on the socket;
 * on Linux SO_SNDTIMEO also bounds connect().  A timeout is an error and is
 * never retried (the request may still be running on the server).
 *
 * Keep-alive and retries: the connection is opened on the first request and
 * kept until the server says `Connection: close`, an error happens, or
 * vx_httpc_close.  A server may close an idle connection at any moment; when
 * a request on a *reused* connection fails before a single byte of response
 * arrived, and the method is idempotent (RFC 9110 §9.2.2: GET, HEAD, PUT,
 * DELETE, OPTIONS), the request is sent once more on a fresh connection
 * (RFC 9112 §9.3.1).  POST is never retried.
 *
 * Errors are VX_E* codes with the reason in the client's errmsg, worded for a
 * person: "cannot connect to 127.0.0.1:6333: Connection refused".
 *   VX_EINVAL  bad URL or arguments
 *   VX_EIO     name resolution, connect, send, receive, timeout, early close
 *   VX_EFORMAT a response that is not HTTP/1.x as we read it
 *   VX_ENOMEM  allocation failed, or a body over VX_HTTPC_MAX_BODY
 */
#ifndef VX_CLI_HTTP_CLIENT_H
#define VX_CLI_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#define VX_HTTPC_ERRMSG_LEN 512
#define VX_HTTPC_MAX_BODY ((size_t)1 << 30) /* largest response body accepted */

/* A parsed base URL: http://HOST[:PORT][/PREFIX].  The scheme may be left
 * out; the port defaults to 6333 as in the Qdrant clients (not 80); an IPv6
 * address is written in brackets.  prefix ("" or "/x/y", no trailing slash)
 * is put in front of every request path. */
typedef struct vx_httpc_url {
    char host[256];
    char port[8];
    char prefix[256];
    char authority[280]; /* "host:port", "[v6]:port": for messages and Host */
} vx_httpc_url;

/* 0, or VX_EINVAL with the reason in errbuf (VX_HTTPC_ERRMSG_LEN bytes). */
int vx_httpc_url_parse(const char *url, vx_httpc_url *out, char *errbuf);

typedef struct vx_httpc {
    vx_httpc_url url;
    int timeout_s;
    int fd;                  /* -1 when not connected */
    bool reused;             /* the connection has served a request before */
    char extra_headers[320]; /* whole header lines, each ending in CRLF */
    char *rbuf;              /* buffered reader over fd */
    size_t rpos, rlen, rcap;
    char errmsg[VX_HTTPC_ERRMSG_LEN];
} vx_httpc;

/* A response.  body is malloc'd and NUL-terminated (also when len is 0);
 * vx_httpc_response_free releases it. */
typedef struct vx_httpc_response {
    int status;
    char *body;
    size_t len;
    char content_type[128];
} vx_httpc_response;

/* Set up c for base URL `url` (see vx_httpc_url_parse).  Nothing is
 * connected yet.  timeout_s > 0.  api_key, when not NULL or "", is sent as
 * the `api-key` header (Qdrant's).  Returns 0, or VX_EINVAL with the reason
 * in errbuf (VX_HTTPC_ERRMSG_LEN bytes); nothing to free on error. */
int vx_httpc_init(vx_httpc *c, const char *url, int timeout_s, const char *api_key, char *errbuf);
/* Close the connection and free the buffers; c may be initialised again. */
void vx_httpc_close(vx_httpc *c);

/* Send `method path` (path starts with '/' and is already escaped; the URL
 * prefix is added) with body[0..len) as application/json when body is not
 * NULL, and read the whole response into *res.  Any HTTP status is a
 * success here: the caller judges res->status.  On error *res is empty and
 * c->errmsg says why; the connection is closed, the next request opens a
 * new one. */
int vx_httpc_request(vx_httpc *c, const char *method, const char *path, const char *body,
                     size_t len, vx_httpc_response *res);
void vx_httpc_response_free(vx_httpc_response *res);

/* Percent-encode one path segment (RFC 3986 §3.3: everything but the
 * unreserved characters) into out (n bytes).  Returns the length, or n or
 * more when out was too small (then out holds a truncated string). */
size_t vx_httpc_escape_segment(const char *seg, char *out, size_t n);

#endif
