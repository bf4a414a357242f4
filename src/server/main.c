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
#include <sodium.h>
#include <signal.h>
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

static bool loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0;
}

static void gate_load(void *ctx, const Vxpd__State *s)
{
    if (vx_gate_load(ctx, s) != 0) vx_log(VX_LOG_ERROR, "auth_load_failed", "message=%s", "out of memory");
}

/* The first line of path (malloc'd; NULL and a logged error when unreadable or empty). */
static char *read_secret(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = f ? getline(&line, &cap, f) : -1;
    if (f) fclose(f);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (n <= 0) {
        free(line);
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s %s path=%s", what, "file cannot be read or is empty", path);
        return NULL;
    }
    return line;
}

/* Authentication as configured: on beyond loopback unless told off (which is
 * refused there), off on loopback unless told on. */
static int open_gate(const vx_config *cfg, vx_gate **out)
{
    bool on = strcmp(cfg->auth, "on") == 0 || (strcmp(cfg->auth, "auto") == 0 && !loopback(cfg->http_host));
    if (!on && !loopback(cfg->http_host)) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s host=%s",
               "auth=off is refused beyond loopback: anyone who can reach the port could read and "
               "change every collection",
               cfg->http_host);
        return 2;
    }
    char *admin = NULL, *jwt = NULL;
    if (on) {
        if (strcmp(cfg->admin_key_file, "none") != 0) {
            if ((admin = read_secret(cfg->admin_key_file, "admin_key_file")) == NULL) return 2;
        } else if (getenv("VECTRON_ADMIN_KEY") && getenv("VECTRON_ADMIN_KEY")[0]) {
            admin = strdup(getenv("VECTRON_ADMIN_KEY"));
        }
        if (strcmp(cfg->jwt_secret_file, "none") != 0 &&
            (jwt = read_secret(cfg->jwt_secret_file, "jwt_secret_file")) == NULL) {
            free(admin);
            return 2;
        }
    }
    vx_gate_options go = {.enabled = on,
                          .admin_key = admin,
                          .jwt_secret = (const uint8_t *)jwt,
                          .jwt_secret_len = jwt ? strlen(jwt) : 0,
                          .jwt_kid = cfg->jwt_kid,
                          .jwt_accept = strcmp(cfg->jwt_accept, "none") ? cfg->jwt_accept : NULL,
                          .access_ttl_s = cfg->access_token_ttl_s,
                          .refresh_ttl_s = cfg->refresh_token_ttl_s,
                          .key_rate = cfg->rate_per_key ? (double)cfg->rate_per_key : -1.0,
                          .key_burst = cfg->burst_per_key,
                          .anon_rate = cfg->rate_per_address ? (double)cfg->rate_per_address : -1.0,
                          .anon_burst = cfg->burst_per_address};
    char err[VX_GATE_ERRMSG_LEN];
    int rc = vx_gate_new(&go, out, err);
    if (admin) sodium_memzero(admin, strlen(admin)), free(admin);
    if (jwt) sodium_memzero(jwt, strlen(jwt)), free(jwt);
    if (rc != 0) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s", err);
        return 2;
    }
    if (on)
        vx_log(VX_LOG_INFO, "auth_enabled", "message=%s host=%s",
               "authentication is on: requests need an API key or a token", cfg->http_host);
    else
        vx_log(VX_LOG_WARN, "auth_disabled", "message=%s",
               "no authentication: the API listens on loopback only, open to every local user");
    return 0;
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
                              .max_connections = cfg.http_threads * 64,
                              .slow_query_ms = cfg.slow_query_ms ? cfg.slow_query_ms : UINT32_MAX};
        char herr[VX_HTTP_ERRMSG_LEN];
        rc = vx_http_start(&ho, api, metrics, &http, herr);
        if (rc != 0) vx_log(VX_LOG_ERROR, "start_failed", "message=%s", herr);
    }
    if (rc == 0) {
        vx_runtime_wait_ready(rt, 30000);
        vx_log(VX_LOG_INFO, "listening", "version=%s http_host=%s http_port=%u raft=%s data_dir=%s",
               VECTRON_VERSION, cfg.http_host, cfg.http_port, raft_addr, cfg.data_dir);
        int sig = 0;
        sigwait(&set, &sig);
        vx_log(VX_LOG_INFO, "stopping", "signal=%d", sig);
    }
    vx_http_stop(http);
    if (api) vx_api_free(api);
    vx_runtime_close(rt);
    vx_gate_free(gate);
    vx_metrics_free(metrics);
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
