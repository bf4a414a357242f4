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
#include "base/handshake.h"
#include "gateway/gateway.h"

#include "base/err.h"
#include "base/log.h"
#include "auth/setup.h"
#include "gateway/auth_sync.h"
#include "gateway/backend_cluster.h"
#include "server/api.h"
#include "server/http.h"
#include "server/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
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
            "  --conn-timeout-s N     a request's headers must arrive within N s of the connection\n"
            "                         opening or the previous answer (default 30)\n"
            "  --body-timeout-s N     and its body within N s of its headers (default 60)\n"
            "  --max-connections-per-address N  open connections from one address (128; 0: no limit)\n"
            "  --http-threads N       connection limit / 64 (default 16)\n"
            "  --topology-ttl-ms N    routing table cache lifetime (default 2000)\n"
            "  --cache-mb N           search result cache, TinyLFU (default 64; 0: off)\n"
            "  --cache-ttl-ms N       a cached answer's lifetime (default 200)\n"
            "  --shard-timeout-ms N   a search's deadline per shard (default 50; per request:\n"
            "                         ?timeout=SECONDS; ?partial=true answers without late shards)\n"
            "  --log-level L          debug, info, warn, error (default info)\n"
            "  --auth MODE            auto (default: on unless --host is loopback), on, off\n"
            "  --admin-key-file F     the bootstrap admin key (else VECTRON_ADMIN_KEY)\n"
            "  --jwt-secret-file F    the secret JWT keys derive from (default: the admin key)\n"
            "  --jwt-kid KID          the id of the signing key (default k1)\n"
            "  --jwt-accept KIDS      more key ids still accepted, comma-separated\n"
            "  --access-token-ttl-s N, --refresh-token-ttl-s N  token lifetimes (900, 604800)\n"
            "  --rate-per-key N, --burst-per-key N  per API key or user (1000, 2000; rate 0: off)\n"
            "  --rate-per-address N, --burst-per-address N  per address without valid\n"
            "                         credentials (10, 20; rate 0: off)\n"
            "  --login-attempts-per-address N, --login-attempts-per-account N, --login-window-s S\n"
            "                         login attempts counted when received, per address and\n"
            "                         per account in any window of S seconds (20, 10, 60)\n"
            "  --auth-poll-ms N       how often credentials are fetched from the PD (default 1000)\n"
            "  --tls-cert FILE, --tls-key FILE  HTTPS on the API (PEM certificate chain and key)\n\n"
            "Environment: VECTRON_CLUSTER_SECRET, the cluster's internal RPC secret;\n"
            "VECTRON_ADMIN_KEY, the bootstrap admin key.  Every gateway of a cluster needs the\n"
            "same admin key (or JWT secret) to accept the others' tokens.\n");
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
    const char *pd = NULL, *host = "127.0.0.1", *level = "info", *tls_cert_path = NULL, *tls_key_path = NULL;
    unsigned long port = 6333, max_body = 32ul << 20, conn_timeout = 30, threads = 16, ttl = 2000, shard_ms = 50, cache_mb = 64,
                  cache_ttl = 200, access_ttl = 900, refresh_ttl = 604800, rate_key = 1000, burst_key = 2000,
                  rate_addr = 10, burst_addr = 20, auth_poll = 1000,
                  login_addr = 20, login_acct = 10, login_win = 60, body_timeout = 60, per_addr = 128;
    const char *auth = "auto", *admin_file = "none", *jwt_file = "none", *jwt_kid = "k1", *jwt_accept = "none";
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
        else if (!strcmp(f, "--body-timeout-s")) ok = num_flag(v, 86400, &body_timeout) && body_timeout > 0;
        else if (!strcmp(f, "--max-connections-per-address")) ok = num_flag(v, 1000000, &per_addr);
        else if (!strcmp(f, "--http-threads")) ok = num_flag(v, 1024, &threads) && threads > 0;
        else if (!strcmp(f, "--topology-ttl-ms")) ok = num_flag(v, 600000, &ttl) && ttl > 0;
        else if (!strcmp(f, "--shard-timeout-ms")) ok = num_flag(v, 3600000, &shard_ms) && shard_ms > 0;
        else if (!strcmp(f, "--cache-mb")) ok = num_flag(v, 1ul << 20, &cache_mb);
        else if (!strcmp(f, "--cache-ttl-ms")) ok = num_flag(v, 3600000, &cache_ttl) && cache_ttl > 0;
        else if (!strcmp(f, "--auth")) ok = !strcmp((auth = v), "auto") || !strcmp(v, "on") || !strcmp(v, "off");
        else if (!strcmp(f, "--admin-key-file")) admin_file = v;
        else if (!strcmp(f, "--jwt-secret-file")) jwt_file = v;
        else if (!strcmp(f, "--jwt-kid")) jwt_kid = v;
        else if (!strcmp(f, "--jwt-accept")) jwt_accept = v;
        else if (!strcmp(f, "--access-token-ttl-s")) ok = num_flag(v, 86400, &access_ttl) && access_ttl >= 10;
        else if (!strcmp(f, "--refresh-token-ttl-s")) ok = num_flag(v, 31536000, &refresh_ttl) && refresh_ttl >= 60;
        else if (!strcmp(f, "--rate-per-key")) ok = num_flag(v, 100000000, &rate_key);
        else if (!strcmp(f, "--burst-per-key")) ok = num_flag(v, 100000000, &burst_key) && burst_key > 0;
        else if (!strcmp(f, "--rate-per-address")) ok = num_flag(v, 100000000, &rate_addr);
        else if (!strcmp(f, "--burst-per-address")) ok = num_flag(v, 100000000, &burst_addr) && burst_addr > 0;
        else if (!strcmp(f, "--login-attempts-per-address")) ok = num_flag(v, 1000, &login_addr) && login_addr > 0;
        else if (!strcmp(f, "--login-attempts-per-account")) ok = num_flag(v, 1000, &login_acct) && login_acct > 0;
        else if (!strcmp(f, "--login-window-s")) ok = num_flag(v, 86400, &login_win) && login_win > 0;
        else if (!strcmp(f, "--tls-cert")) tls_cert_path = v;
        else if (!strcmp(f, "--tls-key")) tls_key_path = v;
        else if (!strcmp(f, "--auth-poll-ms")) ok = num_flag(v, 600000, &auth_poll) && auth_poll >= 10;
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
    static char secret[VX_SECRET_MAX];
    {
        char haddr[300], serr[512];
        snprintf(haddr, sizeof haddr, "%s:%lu", host, port);
        const char *listen[1] = {haddr};
        if (vx_cluster_secret_take("vectron gateway", listen, 1, secret, sizeof secret, serr,
                                   sizeof serr) != 0) {
            vx_log(VX_LOG_ERROR, "start_failed", "message=%s", serr);
            return 2;
        }
    }
    vx_gate_setup gs = {.mode = auth,
                        .host = host,
                        .admin_key_file = admin_file,
                        .jwt_secret_file = jwt_file,
                        .jwt_kid = jwt_kid,
                        .jwt_accept = jwt_accept,
                        .access_ttl_s = (unsigned)access_ttl,
                        .refresh_ttl_s = (unsigned)refresh_ttl,
                        .rate_per_key = (unsigned)rate_key,
                        .burst_per_key = (unsigned)burst_key,
                        .rate_per_address = (unsigned)rate_addr,
                        .burst_per_address = (unsigned)burst_addr,
                        .login_per_address = (unsigned)login_addr,
                        .login_per_account = (unsigned)login_acct,
                        .login_window_s = (unsigned)login_win};
    char *tls_cert = NULL, *tls_key = NULL;
    if (vx_http_tls_load(tls_cert_path, tls_key_path, &tls_cert, &tls_key) != 0) return 2;
    vx_gate *gate = NULL;
    if (vx_gate_setup_open(&gs, &gate) != 0) return 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    vx_cluster_options co = {.pd_addrs = pd,
                             .secret = secret,
                             .topology_ttl_ms = (unsigned)ttl};
    vx_cluster *cl;
    char cerr[VX_CLUSTER_ERRMSG_LEN];
    if (vx_cluster_new(&co, &cl, cerr) != 0) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s", cerr);
        vx_gate_free(gate);
        return 1;
    }
    vx_auth_sync *as = NULL;
    if (vx_gate_enabled(gate) && vx_auth_sync_start(cl, gate, (unsigned)auth_poll, &as) != 0) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s", "cannot start the credential sync");
        vx_cluster_free(cl);
        vx_gate_free(gate);
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
    if (rc == 0) vx_api_set_gate(api, gate);
    if (rc == 0) {
        vx_http_options ho = {.host = host,
                              .port = (uint16_t)port,
                              .max_body_bytes = max_body,
                              .conn_timeout_s = (unsigned)conn_timeout,
                              .body_timeout_s = (unsigned)body_timeout,
                              .max_connections = (unsigned)threads * 64,
                              .max_connections_per_address = (unsigned)per_addr,
                              .slow_query_ms = 500,
                              .tls_cert_pem = tls_cert,
                              .tls_key_pem = tls_key};
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
    free(tls_cert);
    if (tls_key) sodium_memzero(tls_key, strlen(tls_key));
    free(tls_key);
    vx_metrics_free(metrics);
    vx_auth_sync_stop(as);
    vx_cluster_free(cl);
    vx_gate_free(gate);
    vx_log(VX_LOG_INFO, "stopped", "status=%d", rc);
    return rc == 0 ? 0 : 1;
}
