/*
 * pd_main.c - `vectron pd`: one placement driver replica as a process.
 *
 *   vectron pd --id 1 --data-dir DIR \
 *       --peers 1@127.0.0.1:7001/127.0.0.1:7101,2@...,3@...
 *
 * Each peer is id@raft_address/rpc_address; every replica gets the same
 * list (the first start bootstraps the group with all of them as voters).
 * The cluster secret for internal RPC comes from VECTRON_CLUSTER_SECRET
 * (never a flag: flags show in `ps`).  Runs until SIGINT or SIGTERM.
 */
#define _GNU_SOURCE
#include "base/handshake.h"
#include "pd/pd_main.h"

#include "base/err.h"
#include "base/fsutil.h"
#include "pd/pd.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void pd_usage(FILE *out)
{
    fprintf(out,
            "usage: vectron pd --id N --data-dir DIR --peers ID@RAFT/RPC,... [flags]\n\n"
            "Runs one placement driver replica (the cluster's control plane).\n\n"
            "  --id N                 this replica's id (one of --peers)\n"
            "  --data-dir DIR         Raft log and snapshots (created if missing)\n"
            "  --peers LIST           every replica: id@raft_host:port/rpc_host:port, comma-separated\n"
            "  --tick-ms MS           control loop period (default 500)\n"
            "  --reconcile-ms MS      balancing period (default 30000)\n"
            "  --move-timeout-ms MS   roll a stalled shard move back after this (default 300000)\n"
            "  --default-shards N     shards of a collection created without a count (default 1)\n"
            "  --default-replication N replicas per shard when not given (default 3)\n"
            "  --election-timeout-ms MS  Raft election timeout (default 500)\n\n"
            "Environment: VECTRON_CLUSTER_SECRET, the shared secret of internal RPC.\n");
}

static int parse_peers(const char *text, vx_pd_options *o, char store[][2][128])
{
    char *copy = strdup(text), *save = NULL;
    if (copy == NULL) return VX_ENOMEM;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *at = strchr(tok, '@'), *slash = at ? strchr(at, '/') : NULL;
        if (at == NULL || slash == NULL || o->npeers >= VX_PD_MAX_PEERS) {
            rc = VX_EINVAL;
            break;
        }
        *at = *slash = '\0';
        char *end;
        unsigned long long id = strtoull(tok, &end, 10);
        if (*end || id == 0 || strlen(at + 1) >= 128 || strlen(slash + 1) >= 128 || !strchr(at + 1, ':') ||
            !strchr(slash + 1, ':')) {
            rc = VX_EINVAL;
            break;
        }
        for (unsigned i = 0; i < o->npeers; i++)
            if (o->peers[i].id == id) rc = VX_EINVAL;
        snprintf(store[o->npeers][0], 128, "%s", at + 1);
        snprintf(store[o->npeers][1], 128, "%s", slash + 1);
        o->peers[o->npeers].id = id;
        o->peers[o->npeers].raft_address = store[o->npeers][0];
        o->peers[o->npeers].rpc_address = store[o->npeers][1];
        o->npeers++;
    }
    free(copy);
    return rc != 0 || o->npeers == 0 ? VX_EINVAL : 0;
}

typedef struct pd_proc {
    uv_loop_t loop;
    uv_signal_t sigint, sigterm;
    vx_node *node;
    vx_pd *pd;
    int stopping;
} pd_proc;

static void node_closed(void *data)
{
    pd_proc *p = data;
    uv_close((uv_handle_t *)&p->sigint, NULL);
    uv_close((uv_handle_t *)&p->sigterm, NULL);
}

static void pd_closed(void *data)
{
    pd_proc *p = data;
    vx_node_close(p->node, node_closed, p);
}

static void on_signal(uv_signal_t *s, int signum)
{
    pd_proc *p = s->data;
    if (p->stopping++) return;
    fprintf(stderr, "pd: signal %d: stopping\n", signum);
    vx_pd_close(p->pd, pd_closed, p);
}

static bool uint_flag(const char *v, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || *end || *v == '\0' || x > 86400000ul) return false;
    *out = (unsigned)x;
    return true;
}

int vx_pd_main(int argc, char **argv)
{
    vx_pd_options o = {0};
    static char store[VX_PD_MAX_PEERS][2][128];
    const char *dir = NULL, *peers = NULL;
    for (int i = 0; i < argc; i += 2) { /* flag value pairs */
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            pd_usage(stdout);
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "vectron pd: %s needs a value\n", f);
            return 2;
        }
        bool ok = true;
        if (!strcmp(f, "--id")) {
            char *end;
            o.id = strtoull(v, &end, 10);
            ok = *end == '\0' && o.id > 0;
        } else if (!strcmp(f, "--data-dir")) dir = v;
        else if (!strcmp(f, "--peers")) peers = v;
        else if (!strcmp(f, "--tick-ms")) ok = uint_flag(v, &o.tick_ms) && o.tick_ms > 0;
        else if (!strcmp(f, "--reconcile-ms")) ok = uint_flag(v, &o.reconcile_ms) && o.reconcile_ms > 0;
        else if (!strcmp(f, "--move-timeout-ms")) ok = uint_flag(v, &o.move_timeout_ms) && o.move_timeout_ms > 0;
        else if (!strcmp(f, "--default-shards")) ok = uint_flag(v, &o.default_shards) && o.default_shards > 0;
        else if (!strcmp(f, "--default-replication")) ok = uint_flag(v, &o.default_rf) && o.default_rf > 0;
        else if (!strcmp(f, "--election-timeout-ms")) ok = uint_flag(v, &o.election_timeout_ms) && o.election_timeout_ms >= 100;
        else {
            fprintf(stderr, "vectron pd: unknown flag %s (see vectron pd --help)\n", f);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "vectron pd: bad value for %s: %s\n", f, v);
            return 2;
        }
    }
    if (o.id == 0 || dir == NULL || peers == NULL) {
        pd_usage(stderr);
        return 2;
    }
    if (parse_peers(peers, &o, store) != 0) {
        fprintf(stderr, "vectron pd: --peers wants id@raft_host:port/rpc_host:port,... with distinct ids\n");
        return 2;
    }
    const char *self_raft = NULL;
    for (unsigned i = 0; i < o.npeers; i++)
        if (o.peers[i].id == o.id) self_raft = o.peers[i].raft_address;
    if (self_raft == NULL) {
        fprintf(stderr, "vectron pd: --id %" PRIu64 " is not in --peers\n", o.id);
        return 2;
    }
    static char secret[VX_SECRET_MAX];
    {
        const char *self_rpc = NULL;
        for (unsigned i = 0; i < o.npeers; i++)
            if (o.peers[i].id == o.id) self_rpc = o.peers[i].rpc_address;
        const char *listen[2] = {self_raft, self_rpc};
        char serr[512];
        if (vx_cluster_secret_take("vectron pd", listen, 2, secret, sizeof secret, serr, sizeof serr) != 0) {
            fprintf(stderr, "%s\n", serr);
            return 2;
        }
    }
    o.secret = secret;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "vectron pd: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    pd_proc p = {0};
    uv_loop_init(&p.loop);
    char err[VX_PD_ERRMSG_LEN];
    if (vx_node_new(&p.loop, self_raft, dir, secret, &p.node, err) != 0) {
        fprintf(stderr, "vectron pd: node host on %s: %s\n", self_raft, err);
        return 1;
    }
    if (vx_pd_start(p.node, &p.loop, &o, &p.pd, err) != 0) {
        fprintf(stderr, "vectron pd: %s\n", err);
        vx_node_close(p.node, NULL, NULL);
        uv_run(&p.loop, UV_RUN_DEFAULT);
        return 1;
    }
    uv_signal_init(&p.loop, &p.sigint);
    uv_signal_init(&p.loop, &p.sigterm);
    p.sigint.data = p.sigterm.data = &p;
    uv_signal_start(&p.sigint, on_signal, SIGINT);
    uv_signal_start(&p.sigterm, on_signal, SIGTERM);
    fprintf(stderr, "pd %" PRIu64 ": raft %s, rpc port %d, %u peers\n", o.id, self_raft,
            vx_pd_rpc_port(p.pd), o.npeers);
    uv_run(&p.loop, UV_RUN_DEFAULT);
    vx_pd_free(p.pd);
    uv_loop_close(&p.loop);
    fprintf(stderr, "pd %" PRIu64 ": stopped\n", o.id);
    return 0;
}
