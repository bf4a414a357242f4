/*
 * fuzz_api.c - libFuzzer target for the HTTP API's request decoders: the
 * JSON bodies of every write and read route, ids, vectors, selectors and
 * filters, through vx_api_handle on a real runtime (Raft groups, LMDB).
 *
 * Input: byte 0 picks a route from the table below, the rest is the body.
 * Every response must be well-formed: a status in 200..599 and a JSON body
 * (or plain text for health); a crash, a hang or a sanitizer report is a
 * finding.  The collection "f" (dim 4, Cosine, a keyword index on "k") is
 * created once; "fz" may be created and deleted by the inputs.
 */
#define _GNU_SOURCE
#include "base/log.h"
#include "server/api.h"
#include "server/runtime.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static vx_runtime *g_rt;
static vx_api *g_api;

static const struct {
    const char *method, *path;
} routes[] = {
    {"PUT", "/collections/f/points"},          {"POST", "/collections/f/points/search"},
    {"POST", "/collections/f/points/query"},   {"POST", "/collections/f/points/scroll"},
    {"POST", "/collections/f/points/count"},   {"POST", "/collections/f/points/delete"},
    {"POST", "/collections/f/points/payload"}, {"PUT", "/collections/f/points/payload"},
    {"POST", "/collections/f/points/payload/delete"},
    {"POST", "/collections/f/points/payload/clear"},
    {"POST", "/collections/f/points"},         {"PUT", "/collections/fz"},
    {"PATCH", "/collections/f"},               {"PUT", "/collections/f/index"},
    {"POST", "/v1/collections/f/points"},      {"POST", "/v1/collections/f/points/search"},
    {"DELETE", "/collections/fz"},             {"GET", "/collections/f/points/1"},
};

static const char *no_arg(void *ctx, const char *key)
{
    (void)ctx;
    return strcmp(key, "wait") == 0 ? "true" : NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    vx_log_init(stderr, VX_LOG_ERROR);
    char dir[] = "/tmp/vx_fuzz_api_XXXXXX";
    if (mkdtemp(dir) == NULL) abort();
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", 30000 + (int)(getpid() % 20000));
    vx_runtime_options o = {.data_dir = dir, .raft_address = addr, .index_workers = 1};
    char err[VX_RT_ERRMSG_LEN];
    if (vx_runtime_open(&o, &g_rt, err) != 0) {
        fprintf(stderr, "runtime: %s\n", err);
        abort();
    }
    vx_runtime_wait_ready(g_rt, 30000);
    vx_api_limits lim;
    vx_api_limits_default(&lim);
    lim.max_batch = 64;
    lim.max_limit = 100;
    lim.max_body_bytes = 1 << 16;
    vx_backend be;
    vx_backend_local(g_rt, &be);
    if (vx_api_new(&be, &lim, NULL, &g_api) != 0) abort();
    cJSON *body = cJSON_Parse("{\"vectors\":{\"size\":4,\"distance\":\"Cosine\"}}");
    vx_collection_config cfg;
    if (vx_collection_config_parse(body, &cfg, err) != 0 ||
        vx_rt_create_collection(g_rt, "f", &cfg, err) != 0)
        abort();
    cJSON_Delete(body);
    const char *idx = "{\"field_name\":\"k\",\"field_schema\":\"keyword\"}";
    vx_api_request req = {.method = "PUT", .path = "/collections/f/index", .body = idx,
                          .body_len = strlen(idx), .get_arg = no_arg};
    vx_api_response res;
    vx_api_handle(g_api, &req, &res);
    free(res.body);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t r = data[0] % (sizeof routes / sizeof *routes);
    char *body = malloc(size);
    if (body == NULL) return 0;
    memcpy(body, data + 1, size - 1);
    vx_api_request req = {.method = routes[r].method,
                          .path = routes[r].path,
                          .body = body,
                          .body_len = size - 1,
                          .get_arg = no_arg};
    vx_api_response res;
    vx_api_handle(g_api, &req, &res);
    if (res.status < 200 || res.status > 599 || res.body == NULL) abort();
    if (strncmp(res.content_type, "application/json", 16) == 0) {
        cJSON *j = cJSON_ParseWithLength(res.body, res.len);
        if (j == NULL) { /* every JSON response parses */
            fprintf(stderr, "unparsable response to %s %s (%d): %.*s\n", routes[r].method,
                    routes[r].path, res.status, (int)(res.len < 2000 ? res.len : 2000), res.body);
            abort();
        }
        cJSON_Delete(j);
    }
    free(res.body);
    free(body);
    return 0;
}
