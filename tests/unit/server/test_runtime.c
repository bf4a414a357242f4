/*
 * test_runtime.c - vectron serve's runtime (src/server/runtime.c) with its
 * catalog as the placement driver's state machine in a one-voter group:
 * collections created, updated, deleted and created again survive restarts
 * (from the log, and from a catalog snapshot), their points with them; a
 * collection deleted while the process was down for it is gone with its data
 * directory; the catalog's refusals (duplicate, missing, bad name) keep their
 * statuses; a data directory from the earlier catalog format is refused with
 * a clear message, not misread.  Real Raft groups on 127.0.0.1; VX_SEED is
 * printed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "server/api.h"
#include "server/backend.h"
#include "server/runtime.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_addr[64];

static vx_runtime *open_rt(const char *dir, uint32_t snap)
{
    vx_runtime_options o = {.data_dir = dir,
                            .raft_address = g_addr,
                            .index_workers = 1,
                            .catalog_snapshot_threshold = snap};
    char err[VX_RT_ERRMSG_LEN];
    vx_runtime *rt = NULL;
    int rc = vx_runtime_open(&o, &rt, err);
    if (rc != 0) fail_msg("open: %s", err);
    assert_int_equal(vx_runtime_wait_ready(rt, 20000), 0);
    return rt;
}

static void create(vx_runtime *rt, const char *name, const char *body_json)
{
    cJSON *body = cJSON_Parse(body_json);
    vx_collection_config cfg;
    char err[VX_RT_ERRMSG_LEN];
    assert_int_equal(vx_collection_config_parse(body, &cfg, err), 0);
    cJSON_Delete(body);
    int rc = vx_rt_create_collection(rt, name, &cfg, err);
    if (rc != 0) fail_msg("create %s: %s", name, err);
}

static const char *yes_wait(void *ctx, const char *key)
{
    (void)ctx;
    return strcmp(key, "wait") == 0 ? "true" : NULL;
}

/* One API call; returns the status, *out the parsed body (caller frees). */
static int call(vx_runtime *rt, const char *method, const char *path, const char *body, cJSON **out)
{
    vx_api_limits lim;
    vx_api_limits_default(&lim);
    vx_backend be;
    vx_backend_local(rt, &be);
    vx_api *api;
    assert_int_equal(vx_api_new(&be, &lim, NULL, &api), 0);
    vx_api_request req = {.method = method, .path = path, .body = body,
                          .body_len = body ? strlen(body) : 0, .get_arg = yes_wait};
    vx_api_response res;
    vx_api_handle(api, &req, &res);
    if (out) *out = cJSON_ParseWithLength(res.body, res.len);
    free(res.body);
    vx_api_free(api);
    return res.status;
}

static double count(vx_runtime *rt, const char *coll)
{
    char path[300];
    snprintf(path, sizeof path, "/collections/%s/points/count", coll);
    cJSON *j;
    assert_int_equal(call(rt, "POST", path, "{\"exact\":true}", &j), 200);
    double n = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "result"), "count")->valuedouble;
    cJSON_Delete(j);
    return n;
}

static void upsert(vx_runtime *rt, const char *coll, vx_rng *rng, int n, int dim)
{
    char path[300];
    snprintf(path, sizeof path, "/collections/%s/points", coll);
    size_t cap = (size_t)n * (size_t)dim * 16 + 64;
    char *body = malloc(cap);
    size_t at = (size_t)snprintf(body, cap, "{\"points\":[");
    for (int i = 0; i < n; i++) {
        at += (size_t)snprintf(body + at, cap - at, "%s{\"id\":%d,\"vector\":[", i ? "," : "", i + 1);
        for (int d = 0; d < dim; d++)
            at += (size_t)snprintf(body + at, cap - at, "%s%.4f", d ? "," : "", vx_rng_uniform(rng));
        at += (size_t)snprintf(body + at, cap - at, "]}");
    }
    snprintf(body + at, cap - at, "]}");
    assert_int_equal(call(rt, "PUT", path, body, NULL), 200);
    free(body);
}

static size_t list(vx_runtime *rt, char *joined, size_t cap)
{
    char **names;
    size_t n;
    assert_int_equal(vx_rt_list_collections(rt, &names, &n), 0);
    joined[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strncat(joined, names[i], cap - strlen(joined) - 2);
        strncat(joined, " ", cap - strlen(joined) - 1);
        free(names[i]);
    }
    free(names);
    return n;
}

static uint64_t first_gid(vx_runtime *rt, const char *name)
{
    vx_collection *c = vx_rt_collection_get(rt, name);
    assert_non_null(c);
    vx_shard_stats st;
    vx_collection_shard_stats(c, 0, &st);
    vx_rt_collection_put(c);
    return st.gid;
}

static bool dir_exists(const char *root, uint64_t gid)
{
    char p[600];
    snprintf(p, sizeof p, "%s/shards/%llu", root, (unsigned long long)gid);
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_restart_keeps_the_catalog(void **unused)
{
    (void)unused;
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(4242));
    char dir[] = "/tmp/vx_test_runtime_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char err[VX_RT_ERRMSG_LEN];
    char names[400];

    vx_runtime *rt = open_rt(dir, 0);
    create(rt, "a", "{\"vectors\":{\"size\":4,\"distance\":\"Cosine\"},\"shard_number\":2}");
    create(rt, "b", "{\"vectors\":{\"size\":3,\"distance\":\"Euclid\"}}");
    create(rt, "c", "{\"vectors\":{\"size\":2,\"distance\":\"Dot\"},"
                    "\"quantization_config\":{\"scalar\":{\"type\":\"int8\",\"quantile\":0.99}}}");
    upsert(rt, "a", &rng, 50, 4);
    upsert(rt, "b", &rng, 7, 3);
    /* refusals keep their statuses */
    cJSON *body = cJSON_Parse("{\"vectors\":{\"size\":4,\"distance\":\"Cosine\"}}");
    vx_collection_config cfg;
    assert_int_equal(vx_collection_config_parse(body, &cfg, err), 0);
    cJSON_Delete(body);
    assert_int_equal(vx_rt_create_collection(rt, "a", &cfg, err), VX_EEXISTS);
    assert_int_equal(vx_rt_create_collection(rt, "bad/name", &cfg, err), VX_EINVAL);
    assert_int_equal(vx_rt_delete_collection(rt, "nope", err), VX_ENOTFOUND);
    /* b deleted and created again: new groups, the old data gone */
    uint64_t old_b = first_gid(rt, "b");
    assert_int_equal(vx_rt_delete_collection(rt, "b", err), 0);
    create(rt, "b", "{\"vectors\":{\"size\":5,\"distance\":\"Euclid\"}}");
    uint64_t new_b = first_gid(rt, "b");
    assert_true(new_b != old_b);
    assert_true(count(rt, "b") == 0);
    upsert(rt, "b", &rng, 3, 5);
    /* an update of a's index settings */
    vx_collection *ca = vx_rt_collection_get(rt, "a");
    vx_collection_config acfg = *vx_collection_get_config(ca);
    vx_rt_collection_put(ca);
    acfg.hnsw_m = 24;
    assert_int_equal(vx_rt_update_collection(rt, "a", &acfg, err), 0);
    vx_runtime_close(rt);

    for (int round = 0; round < 2; round++) {
        /* round 0 replays the log; round 1 starts from a catalog snapshot
         * taken after enough changes (threshold 8) */
        rt = open_rt(dir, 8);
        assert_int_equal(list(rt, names, sizeof names), 3);
        assert_string_equal(names, "a b c ");
        assert_true(count(rt, "a") == 50);
        assert_true(count(rt, "b") == 3);
        assert_true(count(rt, "c") == 0);
        ca = vx_rt_collection_get(rt, "a");
        assert_int_equal(vx_collection_get_config(ca)->hnsw_m, 24);
        assert_int_equal(vx_collection_shards(ca), 2);
        assert_int_equal(vx_collection_get_config(ca)->dim, 4);
        vx_rt_collection_put(ca);
        vx_collection *cc = vx_rt_collection_get(rt, "c");
        assert_true(vx_collection_get_config(cc)->int8);
        /* kept as the share clipped (1 - quantile) */
        assert_true(fabsf(vx_collection_get_config(cc)->quantile - 0.01f) < 1e-6f);
        vx_rt_collection_put(cc);
        assert_int_equal(first_gid(rt, "b"), new_b);
        assert_false(dir_exists(dir, old_b));
        assert_true(dir_exists(dir, new_b));
        if (round == 0) /* churn past the snapshot threshold */
            for (int i = 0; i < 6; i++) {
                char nm[16];
                snprintf(nm, sizeof nm, "t%d", i);
                create(rt, nm, "{\"vectors\":{\"size\":2,\"distance\":\"Dot\"}}");
                assert_int_equal(vx_rt_delete_collection(rt, nm, err), 0);
            }
        vx_runtime_close(rt);
    }
    /* the catalog's snapshot exists (round 1 started from it) */
    char snapdir[600];
    snprintf(snapdir, sizeof snapdir, "%s/node/g2", dir);
    DIR *d = opendir(snapdir);
    assert_non_null(d);
    closedir(d);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls -R %s/node/g2 | grep -q snapshot", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_earlier_format_refused(void **unused)
{
    (void)unused;
    char dir[] = "/tmp/vx_test_runtime_old_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[600];
    snprintf(p, sizeof p, "%s/catalog", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    vx_runtime_options o = {.data_dir = dir, .raft_address = g_addr, .index_workers = 1};
    char err[VX_RT_ERRMSG_LEN];
    vx_runtime *rt = NULL;
    assert_int_equal(vx_runtime_open(&o, &rt, err), VX_ESTATE);
    assert_non_null(strstr(err, "earlier vectron"));
    assert_null(rt);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    snprintf(g_addr, sizeof g_addr, "127.0.0.1:%d", 18000 + (int)(getpid() % 1000));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_keeps_the_catalog),
        cmocka_unit_test(test_earlier_format_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
