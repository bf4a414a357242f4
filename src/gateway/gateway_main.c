/*
 * gateway_main.c - `vectron gateway`: the REST API of `vectron serve` (the
 * same handlers, src/server/api.c) in front of a cluster: collections live
 * in the placement driver, shards on workers (backend_cluster.c).  Several
 * gateways can run side by side; they hold no state of their own.
 *
 *   vectron gateway --pd HOST:PORT[,...] [--host 127.0.0.1] [--port 6333]
 *
 * The cluster secret comes from VECTRON_CLUSTER_SECRET.  Runs until SIGINT
 * or SIGTERM, then stops accepting requests and lets those in flight end.
 */
#define _GNU_SOURCE
#include "gateway/gateway.h"

#include "base/err.h"
#include "base/log.h"
#include "gateway/backend_cluster.h"
#include "server/api.h"
#include "server/http.h"
#include "server/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void gw_usage(FILE *out)
{
    fprintf(out,
            "usage: vectron gateway --pd HOST:PORT[,...] [flags]\n\n"
            "Serves the REST API (Qdrant's and /v1) over a cluster.\n\n"
            "  --pd LIST              the placement driver replicas' RPC addresses\n"
            "  --host ADDR            HTTP listen address (default 127.0.0.1)\n"
            "  --port N               HTTP port (default 6333)\n"
            "  --max-body-bytes N     largest request body (default 33554432)\n"
            "  --conn-timeout-s N     idle connections are closed after this (default 30)\n"
            "  --http-threads N       connection limit / 64 (default 16)\n"
            "  --topology-ttl-ms N    routing table cache lifetime (default 2000)\n"
            "  --cache-mb N           search result cache, TinyLFU (default 64; 0: off)\n"
            "  --cache-ttl-ms N       a cached answer's lifetime (default 200)\n"
            "  --shard-timeout-ms N   a search's deadline per shard (default 50; per request:\n"
            "                         ?timeout=SECONDS; ?partial=true answers without late shards)\n"
            "  --log-level L          debug, info, warn, error (default info)\n\n"
            "Environment: VECTRON_CLUSTER_SECRET, the cluster's internal RPC secret.\n");
}

static bool num_flag(const char *v, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || *end || *v == '\0' || *v == '-' || x > max) return false;
    *out = x;
    return true;
}

int vx_gateway_main(int argc, char **argv)
{
    const char *pd = NULL, *host = "127.0.0.1", *level = "info";
    unsigned long port = 6333, max_body = 32ul << 20, conn_timeout = 30, threads = 16, ttl = 2000, shard_ms = 50, cache_mb = 64,
                  cache_ttl = 200;
    for (int i = 0; i < argc; i += 2) { /* flag value pairs */
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            gw_usage(stdout);
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "vectron gateway: %s needs a value\n", f);
            return 2;
        }
        bool ok = true;
        if (!strcmp(f, "--pd")) pd = v;
        else if (!strcmp(f, "--host")) host = v;
        else if (!strcmp(f, "--log-level")) level = v;
        else if (!strcmp(f, "--port")) ok = num_flag(v, 65535, &port) && port > 0;
        else if (!strcmp(f, "--max-body-bytes")) ok = num_flag(v, 1ul << 31, &max_body) && max_body >= 1024;
        else if (!strcmp(f, "--conn-timeout-s")) ok = num_flag(v, 3600, &conn_timeout) && conn_timeout > 0;
        else if (!strcmp(f, "--http-threads")) ok = num_flag(v, 1024, &threads) && threads > 0;
        else if (!strcmp(f, "--topology-ttl-ms")) ok = num_flag(v, 600000, &ttl) && ttl > 0;
        else if (!strcmp(f, "--shard-timeout-ms")) ok = num_flag(v, 3600000, &shard_ms) && shard_ms > 0;
        else if (!strcmp(f, "--cache-mb")) ok = num_flag(v, 1ul << 20, &cache_mb);
        else if (!strcmp(f, "--cache-ttl-ms")) ok = num_flag(v, 3600000, &cache_ttl) && cache_ttl > 0;
        else {
            fprintf(stderr, "vectron gateway: unknown flag %s (see vectron gateway --help)\n", f);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "vectron gateway: bad value for %s: %s\n", f, v);
            return 2;
        }
    }
    if (pd == NULL) {
        gw_usage(stderr);
        return 2;
    }
    vx_log_init(stderr, vx_log_level_from_name(level));
    bool lo = strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0;
    vx_log(lo ? VX_LOG_INFO : VX_LOG_WARN, "auth_disabled", "message=%s host=%s",
           lo ? "no authentication: the API listens on loopback only"
              : "listening beyond loopback without authentication",
           host);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    vx_cluster_options co = {.pd_addrs = pd,
                             .secret = getenv("VECTRON_CLUSTER_SECRET"),
                             .topology_ttl_ms = (unsigned)ttl};
    vx_cluster *cl;
    char cerr[VX_CLUSTER_ERRMSG_LEN];
    if (vx_cluster_new(&co, &cl, cerr) != 0) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s", cerr);
        return 1;
    }
    vx_metrics *metrics = vx_metrics_new();
    vx_backend be;
    vx_backend_cluster(cl, &be);
    vx_api_limits lim;
    vx_api_limits_default(&lim);
    lim.max_body_bytes = max_body;
    lim.shard_timeout_ms = (int)shard_ms;
    lim.cache_bytes = cache_mb << 20;
    lim.cache_ttl_ms = (unsigned)cache_ttl;
    vx_api *api = NULL;
    vx_http *http = NULL;
    int rc = vx_api_new(&be, &lim, metrics, &api);
    if (rc == 0) {
        vx_http_options ho = {.host = host,
                              .port = (uint16_t)port,
                              .max_body_bytes = max_body,
                              .conn_timeout_s = (unsigned)conn_timeout,
                              .max_connections = (unsigned)threads * 64,
                              .slow_query_ms = 500};
        char herr[VX_HTTP_ERRMSG_LEN];
        rc = vx_http_start(&ho, api, metrics, &http, herr);
        if (rc != 0) vx_log(VX_LOG_ERROR, "start_failed", "message=%s", herr);
    }
    if (rc == 0) {
        vx_log(VX_LOG_INFO, "listening", "http_host=%s http_port=%lu pd=%s", host, port, pd);
        int sig = 0;
        sigwait(&set, &sig);
        vx_log(VX_LOG_INFO, "stopping", "signal=%d", sig);
    }
    vx_http_stop(http);
    if (api) vx_api_free(api);
    vx_metrics_free(metrics);
    vx_cluster_free(cl);
    vx_log(VX_LOG_INFO, "stopped", "status=%d", rc);
    return rc == 0 ? 0 : 1;
}
