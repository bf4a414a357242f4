/*
 * http.h - the HTTP transport of the API (libmicrohttpd); see http.c.
 */
#ifndef VX_SERVER_HTTP_H
#define VX_SERVER_HTTP_H

#include "server/api.h"

#include <stddef.h>
#include <stdint.h>

#define VX_HTTP_ERRMSG_LEN 256

typedef struct vx_http vx_http;
struct vx_metrics;

typedef struct vx_http_options {
    const char *host; /* IPv4 address to listen on */
    uint16_t port;
    size_t max_body_bytes;
    unsigned conn_timeout_s;  /* a request's headers must be in within this of the connection
                                 opening or the previous answer (idle or trickling alike) */
    unsigned body_timeout_s;  /* and its body within this of its headers (0: 60) */
    unsigned max_connections;
    unsigned max_connections_per_address; /* 0: no limit */
    unsigned slow_query_ms;
    /* HTTPS (libmicrohttpd over GnuTLS): PEM text of the certificate chain
     * and its private key; both NULL: plain HTTP */
    const char *tls_cert_pem, *tls_key_pem;
} vx_http_options;

/* The TLS settings of a role: the PEM files' contents into *cert and *key
 * (malloc'd; both NULL when both paths are NULL or "none").  2 with a
 * logged reason when only one is given or a file cannot be read. */
int vx_http_tls_load(const char *cert_path, const char *key_path, char **cert, char **key);

int vx_http_start(const vx_http_options *opt, vx_api *api, struct vx_metrics *metrics,
                  vx_http **out, char *errbuf);
/* Stop listening and wait for the requests in flight. */
void vx_http_stop(vx_http *h);

#endif
