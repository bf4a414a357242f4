/*
 * main.c - the `vectron` command.
 *
 *   vectron serve [flags]   the single-node database: the HTTP API (Qdrant's
 *                           REST API and the /v1 API) over a runtime whose
 *                           catalog and shards are one-voter Raft groups
 *   vectron cli ...         the client (src/cli): collections, load, search
 *   vectron pd [flags]      one placement driver replica (src/pd/pd_main.c)
 *   vectron admin ...       the placement driver's admin calls (src/pd/admin.c)
 *   vectron worker [flags]  a data node of a cluster (src/worker/worker.c)
 *   vectron gateway [flags] the REST API in front of a cluster (src/gateway/)
 *   vectron version
 *   vectron help
 *
 * `serve` runs until SIGINT or SIGTERM, then stops gracefully: it stops
 * accepting requests, lets the requests in flight finish, closes every Raft
 * group and shard (the index is checkpointed by Raft snapshots; what is not
 * is rebuilt from the store on the next start).  kill -9 loses nothing that
 * was acknowledged: every acknowledged write is in the Raft log and the
 * store.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "auth/gate.h"
#include "auth/setup.h"
#include "base/log.h"
#include "cli/cli.h"
#include "gateway/gateway.h"
#include "pd/admin.h"
#include "pd/pd_main.h"
#include "worker/worker.h"
#include "server/api.h"
#include "server/config.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/runtime.h"

#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VECTRON_VERSION "0.4.0"

static void usage(FILE *out)
{
    fprintf(out, "usage: vectron <command> [flags]\n\n"
                 "commands:\n"
                 "  serve     run the single-node database (HTTP API on 127.0.0.1:6333)\n"
                 "  cli       the client: collections, bulk load, search, server info\n"
                 "            (`vectron cli help`)\n"
                 "  pd        a placement driver replica of a cluster (`vectron pd --help`)\n"
                 "  admin     cluster admin calls: status, topology, moves, drains\n"
                 "  worker    a data node of a cluster (`vectron worker --help`)\n"
                 "  gateway   the REST API in front of a cluster (`vectron gateway --help`)\n"
                 "  version   print the version\n"
                 "  help      this text; `vectron serve --help` lists every setting\n");
}

static void observe_commit(void *ctx, double seconds) { vx_histogram_observe(ctx, seconds); }

static void gate_load(void *ctx, const Vxpd__State *s)
{
    if (vx_gate_load(ctx, s) != 0) vx_log(VX_LOG_ERROR, "auth_load_failed", "message=%s", "out of memory");
}

/* Authentication as configured (auth/setup.h). */
static int open_gate(const vx_config *cfg, vx_gate **out)
{
    vx_gate_setup gs = {.mode = cfg->auth,
                        .host = cfg->http_host,
                        .admin_key_file = cfg->admin_key_file,
                        .jwt_secret_file = cfg->jwt_secret_file,
                        .jwt_kid = cfg->jwt_kid,
                        .jwt_accept = cfg->jwt_accept,
                        .access_ttl_s = cfg->access_token_ttl_s,
                        .refresh_ttl_s = cfg->refresh_token_ttl_s,
                        .rate_per_key = cfg->rate_per_key,
                        .burst_per_key = cfg->burst_per_key,
                        .rate_per_address = cfg->rate_per_address,
                        .burst_per_address = cfg->burst_per_address,
                        .login_per_address = cfg->login_attempts_per_address,
                        .login_per_account = cfg->login_attempts_per_account,
                        .login_window_s = cfg->login_window_s};
    return vx_gate_setup_open(&gs, out);
}

static int serve(int argc, char **argv)
{
    vx_config cfg;
    char err[VX_CONFIG_ERRMAX];
    int first = 0;
    if (vx_config_load(&cfg, argc, argv, &first, err) != 0) {
        fprintf(stderr, "vectron serve: %s\n(see vectron serve --help)\n", err);
        return 2;
    }
    if (cfg.help) {
        printf("usage: vectron serve [flags]\n\nRuns the single-node database.  Settings "
               "(defaults < config file < environment < flags):\n\n");
        vx_config_usage(stdout);
        return 0;
    }
    if (first < argc) {
        fprintf(stderr, "vectron serve: unexpected argument %s\n", argv[first]);
        return 2;
    }
    vx_log_init(stderr, vx_log_level_from_name(cfg.log_level));
    vx_gate *gate = NULL;
    if (open_gate(&cfg, &gate) != 0) return 2;

    /* signals are taken by sigwait below, in this thread only */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char *tls_cert = NULL, *tls_key = NULL; /* read before anything opens: a bad file stops here */
    if (vx_http_tls_load(cfg.tls_cert, cfg.tls_key, &tls_cert, &tls_key) != 0) {
        vx_gate_free(gate);
        return 2;
    }
    vx_metrics *metrics = vx_metrics_new();
    vx_histogram *commit_hist =
        vx_metrics_histogram(metrics, "vectron_raft_commit_seconds",
                             "Raft propose to commit+apply latency of acknowledged writes", "");
    char raft_addr[64];
    snprintf(raft_addr, sizeof raft_addr, "127.0.0.1:%u", vx_config_raft_port(&cfg));
    vx_runtime_options ro = {.data_dir = cfg.data_dir,
                             .raft_address = raft_addr,
                             .index_workers = vx_config_index_workers(&cfg),
                             .max_backlog = cfg.max_backlog,
                             .observe_commit = observe_commit,
                             .observe_ctx = commit_hist,
                             .on_auth = gate_load,
                             .auth_ctx = gate};
    vx_runtime *rt;
    char rerr[VX_RT_ERRMSG_LEN];
    if (vx_runtime_open(&ro, &rt, rerr) != 0) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s", rerr);
        vx_metrics_free(metrics);
        vx_gate_free(gate);
        free(tls_cert);
        if (tls_key) sodium_memzero(tls_key, strlen(tls_key));
        free(tls_key);
        return 1;
    }
    vx_api_limits lim;
    vx_api_limits_default(&lim);
    lim.max_body_bytes = cfg.max_body_bytes;
    lim.max_batch = cfg.max_batch_points;
    lim.max_dim = cfg.max_dim;
    lim.max_limit = cfg.max_limit;
    lim.max_json_depth = cfg.max_json_depth;
    lim.slow_query_ms = cfg.slow_query_ms;
    vx_api *api = NULL;
    vx_http *http = NULL;
    vx_backend be;
    vx_backend_local(rt, &be);
    int rc = vx_api_new(&be, &lim, metrics, &api);
    if (rc == 0) vx_api_set_gate(api, gate);
    if (rc == 0) {
        vx_http_options ho = {.host = cfg.http_host,
                              .port = (uint16_t)cfg.http_port,
                              .max_body_bytes = cfg.max_body_bytes,
                              .conn_timeout_s = cfg.conn_timeout_s,
                              .body_timeout_s = cfg.body_timeout_s,
                              .max_connections = cfg.http_threads * 64,
                              .max_connections_per_address = cfg.max_connections_per_address,
                              .slow_query_ms = cfg.slow_query_ms ? cfg.slow_query_ms : UINT32_MAX,
                              .tls_cert_pem = tls_cert,
                              .tls_key_pem = tls_key};
        char herr[VX_HTTP_ERRMSG_LEN];
        rc = vx_http_start(&ho, api, metrics, &http, herr);
        if (rc != 0) vx_log(VX_LOG_ERROR, "start_failed", "message=%s", herr);
    }
    if (rc == 0) {
        vx_runtime_wait_ready(rt, 30000);
        vx_log(VX_LOG_INFO, "listening", "version=%s scheme=%s http_host=%s http_port=%u raft=%s data_dir=%s",
               VECTRON_VERSION, tls_cert ? "https" : "http", cfg.http_host, cfg.http_port, raft_addr,
               cfg.data_dir);
        int sig = 0;
        sigwait(&set, &sig);
        vx_log(VX_LOG_INFO, "stopping", "signal=%d", sig);
    }
    vx_http_stop(http);
    if (api) vx_api_free(api);
    vx_runtime_close(rt);
    vx_gate_free(gate);
    vx_metrics_free(metrics);
    free(tls_cert);
    if (tls_key) sodium_memzero(tls_key, strlen(tls_key));
    free(tls_key);
    vx_log(VX_LOG_INFO, "stopped", "status=%d", rc);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "serve") == 0) return serve(argc - 1, argv + 1);
    if (strcmp(argv[1], "cli") == 0) return vx_cli_main(argc - 1, argv + 1);
    if (strcmp(argv[1], "pd") == 0) return vx_pd_main(argc - 2, argv + 2);
    if (strcmp(argv[1], "admin") == 0) return vx_admin_main(argc - 2, argv + 2);
    if (strcmp(argv[1], "worker") == 0) return vx_worker_main(argc - 2, argv + 2);
    if (strcmp(argv[1], "gateway") == 0) return vx_gateway_main(argc - 2, argv + 2);
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("vectron %s\n", VECTRON_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "vectron: unknown command %s\n", argv[1]);
    usage(stderr);
    return 2;
}
