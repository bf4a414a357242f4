/*
 * test_shard.c - one shard replica (shard/shard.h): apply of every command
 * type, searches that cover the queued (not yet indexed) changes, idempotent
 * replay, malformed and dimension-mismatched commands applied as no-ops,
 * restart with and without an index checkpoint, a corrupt checkpoint,
 * replica digests, and the indexing backlog.
 *
 * Indexing runs on a vx_workpool with one thread.  To look at the state
 * "applied but not yet indexed" deterministically, a test closes a gate: a
 * job that holds the pool's only thread until the test opens it again, so
 * the shard's drain job waits behind it and every change applied meanwhile
 * stays queued.  Nothing sleeps: waits are on condition variables with
 * deadlines, or vx_shard_wait_indexed with a timeout.
 *
 * Every test works in its own mkdtemp directory under /tmp, removed at the
 * end.  Randomness comes from vx_test_seed (printed; VX_SEED to replay).
 * Dimension 16; L2 unless said otherwise (one test uses COSINE with
 * pre-normalized vectors).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/pointid.h"
#include "base/workpool.h"
#include "index/index.h"
#include "shard/command.h"
#include "shard/filter.h"
#include "shard/pindex.h"
#include "shard/shard.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DIM 16
#define WAIT_MS 60000

/* ---- directories ----------------------------------------------------------------------------- */

static void make_dir(char dir[64])
{
    snprintf(dir, 64, "/tmp/vx_shard_XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_dir(const char *dir)
{
    assert_int_equal(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* ---- the pool gate --------------------------------------------------------------------------- */

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, open, left;
} gate;

static void gate_job(void *arg)
{
    gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
    g->left = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void deadline_in(struct timespec *dl, int ms)
{
    clock_gettime(CLOCK_REALTIME, dl);
    dl->tv_sec += ms / 1000;
    dl->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl->tv_nsec >= 1000000000L) {
        dl->tv_sec++;
        dl->tv_nsec -= 1000000000L;
    }
}

/* Wait (bounded) until *flag under g->mu. */
static void gate_wait_for(gate *g, const bool *flag, const char *what)
{
    struct timespec dl;
    deadline_in(&dl, WAIT_MS);
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    while (!*flag && rc == 0) rc = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
    bool ok = *flag;
    pthread_mutex_unlock(&g->mu);
    if (!ok) fail_msg("gate: timed out waiting until the job %s", what);
}

/* Occupy the pool's (only) thread: returns once the gate job runs. */
static void gate_close(gate *g, vx_workpool *pool)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    assert_int_equal(vx_workpool_submit(pool, gate_job, g), 0);
    gate_wait_for(g, &g->entered, "started");
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    gate_wait_for(g, &g->left, "left");
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

/* ---- stderr capture (the recovery report) ---------------------------------------------------- */

typedef struct capture {
    int saved, fd;
    char path[64];
} capture;

static void capture_begin(capture *c)
{
    fflush(stderr);
    snprintf(c->path, sizeof c->path, "/tmp/vx_shard_err_XXXXXX");
    c->fd = mkstemp(c->path);
    assert_true(c->fd >= 0);
    c->saved = dup(2);
    assert_true(c->saved >= 0);
    assert_true(dup2(c->fd, 2) == 2);
}

/* Restores stderr, returns what was written (malloc'd) and echoes it. */
static char *capture_end(capture *c)
{
    fflush(stderr);
    assert_true(dup2(c->saved, 2) == 2);
    close(c->saved);
    off_t n = lseek(c->fd, 0, SEEK_END);
    assert_true(n >= 0);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_true(pread(c->fd, buf, (size_t)n, 0) == n);
    buf[n] = '\0';
    close(c->fd);
    unlink(c->path);
    fputs(buf, stderr);
    return buf;
}

/* ---- points ---------------------------------------------------------------------------------- */

/* Point number i has an id of kind i % 3: UINT i, STRING "p<i>", UUID ending in i. */
static void id_of(vx_point_id *id, uint32_t i)
{
    char text[48];
    switch (i % 3) {
    case 0:
        vx_id_from_uint(id, i);
        break;
    case 1:
        snprintf(text, sizeof text, "p%u", i);
        assert_int_equal(vx_id_from_string(id, text, strlen(text)), 0);
        break;
    default:
        snprintf(text, sizeof text, "00000000-0000-4000-8000-%012x", i);
        assert_int_equal(vx_id_from_uuid_text(id, text, strlen(text)), 0);
        break;
    }
}

static uint32_t num_of(const vx_point_id *id)
{
    switch (vx_id_kind(id)) {
    case VX_ID_UINT:
        return (uint32_t)vx_id_uint(id);
    case VX_ID_STRING: { /* "p<i>": the bytes are not NUL-terminated */
        uint32_t v = 0;
        for (uint16_t k = 2; k < id->len; k++) v = v * 10 + (uint32_t)(id->b[k] - '0');
        return v;
    }
    default: {
        uint32_t v = 0;
        for (int k = 13; k < 17; k++) v = (v << 8) | id->b[k];
        return v;
    }
    }
}

/* What the test knows of up to `cap` points. */
typedef struct model {
    uint32_t cap;
    float *vecs;       /* cap * DIM */
    bool *alive;
    uint64_t *version;
    uint64_t count;
} model;

static void model_init(model *m, uint32_t cap)
{
    m->cap = cap;
    m->vecs = calloc((size_t)cap * DIM, sizeof(float));
    m->alive = calloc(cap, sizeof(bool));
    m->version = calloc(cap, sizeof(uint64_t));
    m->count = 0;
    assert_true(m->vecs && m->alive && m->version);
}

static void model_free(model *m)
{
    free(m->vecs);
    free(m->alive);
    free(m->version);
}

static float *vec_of(model *m, uint32_t i) { return m->vecs + (size_t)i * DIM; }

static void rand_vec(vx_rng *r, float *v)
{
    for (int d = 0; d < DIM; d++) v[d] = vx_rng_normal(r);
}

static void payload_of(uint32_t i, const char *tag, char *buf, size_t n)
{
    snprintf(buf, n, "{\"i\":%u,\"tag\":\"%s\"}", i, tag);
}

/* UPSERT of points first..first+n-1 with fresh random vectors (recorded in
 * the model, applied or not). */
static uint8_t *cmd_upsert(model *m, vx_rng *r, uint32_t first, uint32_t n, const char *tag,
                           size_t *len)
{
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    for (uint32_t i = first; i < first + n; i++) {
        assert_true(i < m->cap);
        rand_vec(r, vec_of(m, i));
        vx_point_id id;
        id_of(&id, i);
        char pl[96];
        payload_of(i, tag, pl, sizeof pl);
        vx_cmd_add_point(&b, &id, vec_of(m, i), DIM, pl, (uint32_t)strlen(pl));
    }
    uint8_t *data;
    assert_int_equal(vx_cmd_finish(&b, &data, len), 0);
    return data;
}

static uint8_t *cmd_ids(vx_cmd_type type, const uint32_t *nums, uint32_t n, const char *json,
                        const char *const *keys, uint32_t nkeys, size_t *len)
{
    vx_cmd_buf b;
    vx_cmd_begin(&b, type);
    for (uint32_t k = 0; k < n; k++) {
        vx_point_id id;
        id_of(&id, nums[k]);
        vx_cmd_add_id(&b, &id);
    }
    if (json) vx_cmd_set_json(&b, json, (uint32_t)strlen(json));
    if (type == VX_CMD_DELETE_PAYLOAD_KEYS) {
        uint32_t lens[16];
        assert_true(nkeys <= 16);
        for (uint32_t k = 0; k < nkeys; k++) lens[k] = (uint32_t)strlen(keys[k]);
        vx_cmd_set_keys(&b, keys, lens, nkeys);
    }
    uint8_t *data;
    assert_int_equal(vx_cmd_finish(&b, &data, len), 0);
    return data;
}

static uint8_t *cmd_delete_range(uint32_t first, uint32_t n, size_t *len)
{
    uint32_t *nums = malloc(n * sizeof(uint32_t));
    for (uint32_t k = 0; k < n; k++) nums[k] = first + k;
    uint8_t *d = cmd_ids(VX_CMD_DELETE_IDS, nums, n, NULL, NULL, 0, len);
    free(nums);
    return d;
}

/* Apply; the call itself must succeed.  Frees cmd. */
static vx_apply_result apply(vx_shard *sh, uint64_t index, uint8_t *cmd, size_t len)
{
    vx_apply_result res;
    int rc = vx_shard_apply(sh, index, 1, cmd, len, &res);
    if (rc != 0) fail_msg("apply of entry %" PRIu64 ": %d", index, rc);
    free(cmd);
    assert_true(vx_shard_applied(sh) >= index);
    return res;
}

/* Apply a command the model already describes (UPSERT of first..first+n-1). */
static void apply_upsert(vx_shard *sh, model *m, vx_rng *r, uint64_t index, uint32_t first,
                         uint32_t n)
{
    size_t len;
    uint8_t *c = cmd_upsert(m, r, first, n, "t", &len);
    vx_apply_result res = apply(sh, index, c, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, n);
    for (uint32_t i = first; i < first + n; i++) {
        if (!m->alive[i]) m->count++;
        m->alive[i] = true;
        m->version[i] = index;
    }
}

static void apply_delete(vx_shard *sh, model *m, uint64_t index, uint32_t first, uint32_t n)
{
    size_t len;
    uint8_t *c = cmd_delete_range(first, n, &len);
    uint32_t live = 0;
    for (uint32_t i = first; i < first + n; i++) live += m->alive[i];
    vx_apply_result res = apply(sh, index, c, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, live);
    assert_int_equal(res.not_found, n - live);
    for (uint32_t i = first; i < first + n; i++) {
        if (m->alive[i]) m->count--;
        m->alive[i] = false;
    }
}

/* ---- shard ----------------------------------------------------------------------------------- */

static vx_shard *open_shard_full(const char *dir, vx_workpool *pool, vx_metric metric,
                                 uint32_t max_backlog, size_t max_backlog_bytes,
                                 bool background_recovery)
{
    vx_shard_config cfg;
    memset(&cfg, 0, sizeof cfg);
    vx_index_config_default(&cfg.index, DIM, metric);
    cfg.index.ef_construction = 100;
    cfg.max_backlog = max_backlog;
    cfg.max_backlog_bytes = max_backlog_bytes;
    cfg.background_recovery = background_recovery;
    vx_shard *sh = NULL;
    char err[VX_SHARD_ERRMSG_LEN] = "";
    int rc = vx_shard_open(dir, &cfg, pool, &sh, err);
    if (rc != 0) fail_msg("vx_shard_open(%s): %d %s", dir, rc, err);
    return sh;
}

static vx_shard *open_shard_cfg(const char *dir, vx_workpool *pool, vx_metric metric,
                                uint32_t max_backlog)
{
    return open_shard_full(dir, pool, metric, max_backlog, 0, false);
}

static vx_shard *open_shard(const char *dir, vx_workpool *pool)
{
    return open_shard_cfg(dir, pool, VX_METRIC_L2, 0);
}

static void wait_indexed(vx_shard *sh)
{
    assert_int_equal(vx_shard_wait_indexed(sh, WAIT_MS), 0);
    assert_int_equal(vx_shard_backlog(sh), 0);
}

/* Every job the pool had queued so far has returned: a gate round trip
 * (one pool thread, jobs run in submission order). */
static void pool_barrier(vx_workpool *pool)
{
    gate g;
    gate_close(&g, pool);
    gate_open(&g);
}

/* Close an idle shard: everything indexed and the drain job gone from the
 * pool.  Closing a busy shard is test_close_while_indexing's subject (it
 * once hung); here a regression there fails that one test instead of
 * hanging every other. */
static void close_shard(vx_shard *sh, vx_workpool *pool)
{
    wait_indexed(sh);
    pool_barrier(pool);
    vx_shard_close(sh);
}

static const vx_search_params k_params = {.ef = 128};

static uint32_t search(vx_shard *sh, const float *q, uint32_t k, vx_shard_hit *hits)
{
    uint32_t n = UINT32_MAX;
    assert_int_equal(vx_shard_search(sh, q, k, &k_params, hits, &n), 0);
    assert_true(n <= k);
    for (uint32_t j = 1; j < n; j++) assert_true(hits[j - 1].distance <= hits[j].distance);
    return n;
}

/* Point i is found by its own vector, first, at distance 0, with its version. */
static void expect_self_p(vx_shard *sh, model *m, uint32_t i, const vx_search_params *params)
{
    vx_shard_hit hits[5];
    uint32_t n = UINT32_MAX;
    assert_int_equal(vx_shard_search(sh, vec_of(m, i), 5, params, hits, &n), 0);
    assert_true(n >= 1 && n <= 5);
    if (num_of(&hits[0].id) != i || hits[0].distance != 0.0f)
        fail_msg("search for point %u: first hit %u at %g", i, num_of(&hits[0].id),
                 (double)hits[0].distance);
    assert_true(hits[0].version == m->version[i]);
}

static void expect_self(vx_shard *sh, model *m, uint32_t i) { expect_self_p(sh, m, i, &k_params); }

/* No search result is a point the model says is gone. */
static void expect_no_dead(vx_shard *sh, model *m, const float *q)
{
    vx_shard_hit hits[20];
    uint32_t n = search(sh, q, 20, hits);
    assert_true(n == 20 || n == m->count);
    for (uint32_t j = 0; j < n; j++) {
        uint32_t i = num_of(&hits[j].id);
        if (i >= m->cap) {
            char text[VX_ID_TEXT_MAX];
            vx_id_format(&hits[j].id, text);
            fail_msg("search returned unknown point %s (kind %d)", text, vx_id_kind(&hits[j].id));
        }
        if (!m->alive[i]) fail_msg("search returned deleted point %u", i);
        assert_true(hits[j].version == m->version[i]);
    }
}

/* Every live point of `stride` finds itself; every dead one of the range
 * is never returned, even searched by its own last vector. */
static void check_model(vx_shard *sh, model *m, uint32_t upto, uint32_t stride)
{
    assert_true(vx_shard_count(sh) == m->count);
    for (uint32_t i = 0; i < upto; i += stride) {
        if (m->alive[i])
            expect_self(sh, m, i);
        else if (m->version[i] != 0)
            expect_no_dead(sh, m, vec_of(m, i));
    }
}

static void check_get(vx_shard *sh, model *m, uint32_t i, const char *want_payload)
{
    vx_point_id id;
    id_of(&id, i);
    float v[DIM];
    char *pl = NULL;
    uint64_t ver = 0;
    assert_int_equal(vx_shard_get(sh, &id, v, &pl, &ver), 0);
    assert_memory_equal(v, vec_of(m, i), sizeof v);
    assert_true(ver == m->version[i]);
    if (want_payload) assert_string_equal(pl, want_payload);
    free(pl);
}

static void expect_gone(vx_shard *sh, uint32_t i)
{
    vx_point_id id;
    id_of(&id, i);
    char *pl = NULL;
    assert_int_equal(vx_shard_get(sh, &id, NULL, &pl, NULL), VX_ENOTFOUND);
    assert_null(pl);
}

static uint64_t index_live(vx_shard *sh)
{
    vx_index_stats st;
    vx_index_get_stats(vx_shard_index(sh), &st);
    return st.live;
}

static uint64_t digest(vx_shard *sh, uint64_t *applied)
{
    uint64_t d = 0, a = 0;
    assert_int_equal(vx_shard_digest(sh, &d, &a), 0);
    if (applied) *applied = a;
    return d;
}

typedef struct env {
    char dir[64];
    vx_workpool *pool;
    vx_rng rng;
    model m;
} env;

static void env_init(env *e, uint32_t cap, uint64_t seed_offset)
{
    make_dir(e->dir);
    assert_int_equal(vx_workpool_new(1, &e->pool), 0);
    vx_rng_seed(&e->rng, vx_test_seed(7) + seed_offset);
    model_init(&e->m, cap);
}

static void env_free(env *e)
{
    vx_workpool_free(e->pool);
    model_free(&e->m);
    rm_dir(e->dir);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static uint8_t *cmd_delete_filter(const char *json, size_t *len)
{
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_DELETE_FILTER);
    vx_cmd_set_json(&b, json, (uint32_t)strlen(json));
    uint8_t *data;
    assert_int_equal(vx_cmd_finish(&b, &data, len), 0);
    return data;
}

/* Filtered search hits all satisfy the filter; the nearest matching point
 * of a matching query point is itself. */
static void check_filtered(vx_shard *sh, model *m, const vx_filter_expr *f, uint32_t below)
{
    vx_shard_hit hits[10];
    for (uint32_t i = 0; i < m->cap; i += 37) {
        if (!m->alive[i]) continue;
        uint32_t n;
        assert_int_equal(vx_shard_search_filtered(sh, vec_of(m, i), 10, &k_params, f, hits, &n), 0);
        assert_true(n > 0);
        for (uint32_t h = 0; h < n; h++) assert_true(num_of(&hits[h].id) < below);
        if (i < below) assert_int_equal(num_of(&hits[0].id), i);
    }
}

static void test_filters(void **state)
{
    env e;
    env_init(&e, 400, 13);
    vx_shard *sh = open_shard(e.dir, e.pool);
    gate g;
    gate_close(&g, e.pool); /* everything stays queued: the pending path */
    apply_upsert(sh, &e.m, &e.rng, 1, 0, 400);
    vx_filter_expr *f;
    char err[VX_FILTER_ERRMSG_LEN];
    const char *lt100 = "{\"must\":[{\"key\":\"i\",\"range\":{\"lt\":100}}]}";
    assert_int_equal(vx_filter_compile_text(lt100, strlen(lt100), &f, err), 0);
    check_filtered(sh, &e.m, f, 100);

    /* delete by filter, applied while the upserts are still queued */
    size_t len;
    uint8_t *c = cmd_delete_filter("{\"must\":[{\"key\":\"i\",\"range\":{\"gte\":300}}]}", &len);
    vx_apply_result res = apply(sh, 2, c, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, 100);
    for (uint32_t i = 300; i < 400; i++) e.m.alive[i] = false;
    assert_true(vx_shard_count(sh) == 300);
    for (uint32_t i = 300; i < 400; i += 11) expect_gone(sh, i);
    expect_no_dead(sh, &e.m, vec_of(&e.m, 350));

    /* a filter that does not compile is a no-op with a status */
    c = cmd_delete_filter("{\"must\":[{\"key\":\"\"}]}", &len);
    res = apply(sh, 3, c, len);
    assert_int_equal(res.status, VX_EINVAL);
    assert_true(vx_shard_count(sh) == 300);

    /* payload by filter: mark points i < 50 as hot, then search among them */
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_SET_PAYLOAD);
    const char *lt50 = "{\"must\":[{\"key\":\"i\",\"range\":{\"lt\":50}}]}";
    vx_cmd_set_target_filter(&b, lt50, (uint32_t)strlen(lt50));
    vx_cmd_set_json(&b, "{\"hot\":true}", 12);
    assert_int_equal(vx_cmd_finish(&b, &c, &len), 0);
    res = apply(sh, 4, c, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, 50);
    for (uint32_t i = 0; i < 50; i++) e.m.version[i] = 4; /* payload writes bump the version */
    vx_filter_expr *hot;
    const char *hotf = "{\"must\":[{\"key\":\"hot\",\"match\":{\"value\":true}}]}";
    assert_int_equal(vx_filter_compile_text(hotf, strlen(hotf), &hot, err), 0);
    check_filtered(sh, &e.m, hot, 50);
    /* ids and a target filter together are refused by the builder */
    vx_cmd_begin(&b, VX_CMD_SET_PAYLOAD);
    vx_point_id one;
    vx_id_from_uint(&one, 1);
    vx_cmd_add_id(&b, &one);
    vx_cmd_set_target_filter(&b, lt50, (uint32_t)strlen(lt50));
    vx_cmd_set_json(&b, "{}", 2);
    assert_int_not_equal(vx_cmd_finish(&b, &c, &len), 0);

    gate_open(&g);
    wait_indexed(sh);
    check_filtered(sh, &e.m, f, 100); /* the same through the index */
    check_filtered(sh, &e.m, hot, 50);
    vx_filter_free(hot);
    expect_no_dead(sh, &e.m, vec_of(&e.m, 350));
    vx_filter_free(f);
    close_shard(sh, e.pool);
    env_free(&e);
}

static void test_search_before_indexing(void **state)
{
    env e;
    env_init(&e, 500, 1);
    vx_shard *sh = open_shard(e.dir, e.pool);
    assert_true(vx_shard_applied(sh) == 0);
    assert_true(vx_shard_count(sh) == 0);
    vx_shard_hit hits[5];
    uint32_t n = 7;
    assert_int_equal(vx_shard_search(sh, vec_of(&e.m, 0), 5, NULL, hits, &n), 0);
    assert_int_equal(n, 0); /* empty shard */

    gate g;
    gate_close(&g, e.pool);
    apply_upsert(sh, &e.m, &e.rng, 1, 0, 500);
    /* applied and durable, but nothing indexed yet */
    assert_true(vx_shard_applied(sh) == 1);
    assert_true(vx_shard_count(sh) == 500);
    assert_int_equal(vx_shard_backlog(sh), 500);
    assert_int_equal(index_live(sh), 0);
    assert_int_equal(vx_shard_wait_indexed(sh, 20), VX_ESTATE);
    for (uint32_t i = 0; i < 500; i += 7) expect_self(sh, &e.m, i);
    char want[96];
    for (uint32_t i = 0; i < 500; i += 49) {
        payload_of(i, "t", want, sizeof want);
        check_get(sh, &e.m, i, want);
    }
    expect_gone(sh, 500);
    n = 0;
    assert_int_equal(vx_shard_search(sh, vec_of(&e.m, 3), 0, NULL, hits, &n), 0); /* k = 0 */
    assert_int_equal(n, 0);

    gate_open(&g);
    wait_indexed(sh);
    assert_int_equal(index_live(sh), 500);
    for (uint32_t i = 0; i < 500; i += 7) expect_self(sh, &e.m, i);

    /* and without the gate: a second batch is searchable as soon as apply returns */
    close_shard(sh, e.pool);
    sh = open_shard(e.dir, e.pool);
    model m2;
    model_init(&m2, 1000);
    memcpy(m2.vecs, e.m.vecs, 500 * DIM * sizeof(float));
    for (uint32_t i = 0; i < 500; i++) {
        m2.alive[i] = true;
        m2.version[i] = 1;
    }
    m2.count = 500;
    apply_upsert(sh, &m2, &e.rng, 2, 500, 500);
    /* the drain job inserts meanwhile: an HNSW walk concurrent with inserts
     * may miss a node, so the index part is searched exactly here */
    const vx_search_params exact = {.exact = true};
    for (uint32_t i = 500; i < 1000; i += 5) expect_self_p(sh, &m2, i, &exact);
    wait_indexed(sh);
    check_model(sh, &m2, 1000, 3);
    assert_true(index_live(sh) == 1000);
    model_free(&m2);
    close_shard(sh, e.pool);
    env_free(&e);
}

static void test_replay_and_delete(void **state)
{
    env e;
    env_init(&e, 700, 2);
    vx_shard *sh = open_shard(e.dir, e.pool);
    size_t len;
    uint8_t *first = cmd_upsert(&e.m, &e.rng, 0, 500, "t", &len);
    uint8_t *again = malloc(len);
    memcpy(again, first, len);
    vx_apply_result res = apply(sh, 1, first, len);
    assert_int_equal(res.written, 500);
    for (uint32_t i = 0; i < 500; i++) {
        e.m.alive[i] = true;
        e.m.version[i] = 1;
    }
    e.m.count = 500;
    uint64_t a0, d0 = digest(sh, &a0);
    assert_true(a0 == 1);

    /* replay of entry 1: skipped, whatever its bytes */
    res = apply(sh, 1, again, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, 0);
    uint8_t *del_all = cmd_delete_range(0, 500, &len);
    res = apply(sh, 1, del_all, len);
    assert_int_equal(res.written, 0);
    uint64_t a1, d1 = digest(sh, &a1);
    assert_true(d1 == d0 && a1 == 1);
    assert_true(vx_shard_count(sh) == 500);
    assert_true(vx_shard_applied(sh) == 1);
    wait_indexed(sh);

    /* deletes of indexed points, still queued: never returned */
    gate g;
    gate_close(&g, e.pool);
    uint32_t nums[105];
    for (uint32_t k = 0; k < 100; k++) nums[k] = k * 5; /* 0, 5, ..., 495 */
    for (uint32_t k = 0; k < 5; k++) nums[100 + k] = 600 + k; /* never existed */
    uint8_t *c = cmd_ids(VX_CMD_DELETE_IDS, nums, 105, NULL, NULL, 0, &len);
    res = apply(sh, 2, c, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, 100);
    assert_int_equal(res.not_found, 5);
    for (uint32_t k = 0; k < 100; k++) {
        e.m.alive[nums[k]] = false;
        e.m.count--;
    }
    assert_int_equal(vx_shard_backlog(sh), 100);
    assert_true(vx_shard_count(sh) == 400);
    assert_true(index_live(sh) == 500); /* the index has not seen the deletes */
    for (uint32_t k = 0; k < 100; k += 3) expect_gone(sh, nums[k]);
    check_model(sh, &e.m, 500, 1);

    /* a queued replacement of an indexed point: the new vector wins */
    float old[DIM];
    memcpy(old, vec_of(&e.m, 201), sizeof old);
    apply_upsert(sh, &e.m, &e.rng, 3, 201, 1);
    expect_self(sh, &e.m, 201);
    vx_shard_hit hits[20];
    uint32_t n = search(sh, old, 20, hits);
    for (uint32_t j = 0; j < n; j++)
        if (num_of(&hits[j].id) == 201) assert_true(hits[j].distance > 0.0f);
    /* a deleted id upserted again */
    apply_upsert(sh, &e.m, &e.rng, 4, 5, 1);
    expect_self(sh, &e.m, 5);
    assert_int_equal(vx_shard_backlog(sh), 102);
    gate_open(&g);
    wait_indexed(sh);
    check_model(sh, &e.m, 500, 1);
    assert_true(index_live(sh) == 401);

    /* deletes queued behind the adds of the same points */
    gate_close(&g, e.pool);
    apply_upsert(sh, &e.m, &e.rng, 5, 500, 100);
    apply_delete(sh, &e.m, 6, 500, 50);
    assert_int_equal(vx_shard_backlog(sh), 150);
    check_model(sh, &e.m, 600, 1);
    gate_open(&g);
    wait_indexed(sh);
    check_model(sh, &e.m, 600, 1);
    assert_true(index_live(sh) == vx_shard_count(sh));
    assert_true(vx_shard_applied(sh) == 6);
    close_shard(sh, e.pool);
    env_free(&e);
}

static cJSON *payload_json(vx_shard *sh, uint32_t i, uint64_t *version)
{
    vx_point_id id;
    id_of(&id, i);
    char *pl = NULL;
    assert_int_equal(vx_shard_get(sh, &id, NULL, &pl, version), 0);
    cJSON *j = cJSON_Parse(pl);
    if (j == NULL || !cJSON_IsObject(j)) fail_msg("payload of %u is not an object: %s", i, pl);
    free(pl);
    return j;
}

static void test_payload_commands(void **state)
{
    env e;
    env_init(&e, 32, 3);
    vx_shard *sh = open_shard(e.dir, e.pool);
    /* 20 points with {"a":1,"b":"x"}; point 19 with a payload that is not JSON */
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    for (uint32_t i = 0; i < 20; i++) {
        rand_vec(&e.rng, vec_of(&e.m, i));
        vx_point_id id;
        id_of(&id, i);
        const char *pl = i == 19 ? "plain text" : "{\"a\":1,\"b\":\"x\"}";
        vx_cmd_add_point(&b, &id, vec_of(&e.m, i), DIM, pl, (uint32_t)strlen(pl));
        e.m.alive[i] = true;
        e.m.version[i] = 1;
    }
    e.m.count = 20;
    uint8_t *c;
    size_t len;
    assert_int_equal(vx_cmd_finish(&b, &c, &len), 0);
    assert_int_equal(apply(sh, 1, c, len).written, 20);
    wait_indexed(sh);

    /* SET merges top-level keys */
    uint32_t ids3[3] = {0, 1, 999};
    c = cmd_ids(VX_CMD_SET_PAYLOAD, ids3, 3, "{\"b\":\"y\",\"c\":true}", NULL, 0, &len);
    vx_apply_result res = apply(sh, 2, c, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, 2);
    assert_int_equal(res.not_found, 1);
    e.m.version[0] = e.m.version[1] = 2;
    assert_int_equal(vx_shard_backlog(sh), 0); /* payloads do not touch the index */
    uint64_t ver;
    cJSON *j = payload_json(sh, 0, &ver);
    assert_true(ver == 2);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "a")->valueint, 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "b")->valuestring, "y");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "c")));
    assert_int_equal(cJSON_GetArraySize(j), 3);
    cJSON_Delete(j);
    check_get(sh, &e.m, 0, NULL); /* vector unchanged, version 2 */
    check_get(sh, &e.m, 2, "{\"a\":1,\"b\":\"x\"}"); /* not named: untouched */
    expect_self(sh, &e.m, 0); /* the search reports the new version */

    /* OVERWRITE replaces */
    uint32_t id0 = 0;
    c = cmd_ids(VX_CMD_OVERWRITE_PAYLOAD, &id0, 1, "{\"z\":[1,2]}", NULL, 0, &len);
    res = apply(sh, 3, c, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, 1);
    e.m.version[0] = 3;
    j = payload_json(sh, 0, &ver);
    assert_true(ver == 3);
    assert_int_equal(cJSON_GetArraySize(j), 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "z")), 2);
    cJSON_Delete(j);

    /* DELETE_PAYLOAD_KEYS removes (absent keys are fine) */
    const char *keys[3] = {"z", "a", "nope"};
    uint32_t ids2[2] = {0, 1};
    c = cmd_ids(VX_CMD_DELETE_PAYLOAD_KEYS, ids2, 2, NULL, keys, 3, &len);
    res = apply(sh, 4, c, len);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.written, 2);
    e.m.version[0] = e.m.version[1] = 4;
    j = payload_json(sh, 0, &ver);
    assert_true(ver == 4);
    assert_int_equal(cJSON_GetArraySize(j), 0);
    cJSON_Delete(j);
    j = payload_json(sh, 1, &ver);
    assert_true(ver == 4);
    assert_null(cJSON_GetObjectItemCaseSensitive(j, "a"));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "b")->valuestring, "y");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "c")));
    cJSON_Delete(j);

    /* SET on a payload that is not JSON starts from {} */
    uint32_t id19 = 19;
    c = cmd_ids(VX_CMD_SET_PAYLOAD, &id19, 1, "{\"k\":1}", NULL, 0, &len);
    assert_int_equal(apply(sh, 5, c, len).status, 0);
    e.m.version[19] = 5;
    j = payload_json(sh, 19, &ver);
    assert_int_equal(cJSON_GetArraySize(j), 1);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "k")->valueint, 1);
    cJSON_Delete(j);

    /* invalid JSON, or JSON that is not an object: a no-op, but applied */
    uint64_t a0, d0 = digest(sh, &a0);
    const char *bad[4] = {"{\"b\":", "[1,2]", "42", ""};
    const vx_cmd_type bad_t[4] = {VX_CMD_SET_PAYLOAD, VX_CMD_SET_PAYLOAD, VX_CMD_OVERWRITE_PAYLOAD,
                                  VX_CMD_OVERWRITE_PAYLOAD};
    for (int k = 0; k < 4; k++) {
        c = cmd_ids(bad_t[k], ids2, 2, bad[k], NULL, 0, &len);
        res = apply(sh, (uint64_t)(6 + k), c, len);
        assert_int_equal(res.status, VX_EINVAL);
        assert_int_equal(res.written, 0);
        assert_int_equal(res.not_found, 0);
        assert_true(vx_shard_applied(sh) == (uint64_t)(6 + k));
    }
    uint64_t a1, d1 = digest(sh, &a1);
    assert_true(a1 == 9 && a0 == 5);
    assert_true(d1 == d0); /* only the applied index moved: the content is the same */
    check_get(sh, &e.m, 1, "{\"b\":\"y\",\"c\":true}");
    check_get(sh, &e.m, 0, "{}");
    assert_true(vx_shard_count(sh) == 20);
    close_shard(sh, e.pool);
    env_free(&e);
}

/* Two replicas: A gets malformed entries, B no-ops at the same indexes.
 * Afterwards they must be identical. */
static void test_malformed_commands(void **state)
{
    env e;
    env_init(&e, 200, 4);
    char dir_b[64];
    make_dir(dir_b);
    vx_shard *sa = open_shard(e.dir, e.pool);
    vx_shard *sb = open_shard(dir_b, e.pool);
    size_t len;
    uint8_t *c = cmd_upsert(&e.m, &e.rng, 0, 100, "t", &len);
    uint8_t *c2 = malloc(len);
    memcpy(c2, c, len);
    assert_int_equal(apply(sa, 1, c, len).written, 100);
    assert_int_equal(apply(sb, 1, c2, len).written, 100);
    for (uint32_t i = 0; i < 100; i++) {
        e.m.alive[i] = true;
        e.m.version[i] = 1;
    }
    e.m.count = 100;
    wait_indexed(sa);
    uint64_t d_before = digest(sa, NULL);

    /* the malformed commands */
    enum { NBAD = 10 };
    uint8_t *bad[NBAD];
    size_t bad_len[NBAD];
    int want[NBAD];
    model scratch; /* vectors of the would-be points, never applied */
    model_init(&scratch, 200);
    for (int k = 0; k < NBAD; k++) want[k] = VX_EINVAL;
    bad[0] = malloc(1), bad_len[0] = 0; /* empty */
    bad[1] = malloc(64), bad_len[1] = 64; /* noise */
    for (int k = 0; k < 64; k++) bad[1][k] = (uint8_t)vx_rng_next(&e.rng);
    bad[1][0] = 'X';
    bad[2] = cmd_upsert(&scratch, &e.rng, 100, 10, "new", &bad_len[2]); /* version 2 */
    bad[2][1] = 2;
    want[2] = VX_EFORMAT;
    bad[3] = cmd_upsert(&scratch, &e.rng, 100, 10, "new", &bad_len[3]); /* truncated */
    bad_len[3] -= 8 + 3; /* past the 0..7 bytes of padding */
    bad[4] = cmd_upsert(&scratch, &e.rng, 100, 10, "new", &bad_len[4]); /* 8 bytes more */
    bad[4] = realloc(bad[4], bad_len[4] + 8);
    memset(bad[4] + bad_len[4], 0, 8);
    bad_len[4] += 8;
    bad[5] = cmd_upsert(&scratch, &e.rng, 100, 10, "new", &bad_len[5]); /* count says 11 */
    bad[5][4] = 11;
    bad[6] = cmd_upsert(&scratch, &e.rng, 100, 10, "new", &bad_len[6]); /* NaN in the last point */
    {
        float nan = NAN;
        const char *pl = "{\"i\":109,\"tag\":\"new\"}";
        uint8_t *at = memmem(bad[6], bad_len[6], pl, strlen(pl));
        assert_non_null(at);
        memcpy(at - 4 - 4, &nan, 4); /* before u32 payload_len: vector[15] */
    }
    bad[7] = cmd_upsert(&scratch, &e.rng, 3, 1, "new", &bad_len[7]); /* +inf, replacing point 3 */
    {
        float inf = INFINITY;
        memcpy(bad[7] + 8 + 2 + 9 + 4, &inf, 4); /* header, id len, UINT id, dim: vector[0] */
    }
    bad[8] = cmd_delete_range(0, 3, &bad_len[8]); /* an id of unknown kind */
    bad[8][8 + 2] = 9;
    bad[9] = cmd_delete_range(0, 3, &bad_len[9]); /* unknown type */
    bad[9][2] = 6;
    model_free(&scratch);

    uint64_t index = 2;
    uint32_t missing = 1000;
    for (int k = 0; k < NBAD; k++, index++) {
        vx_apply_result res;
        assert_int_equal(vx_shard_apply(sa, index, 1, bad[k], bad_len[k], &res), 0);
        if (res.status != want[k])
            fail_msg("bad command %d: status %d, want %d", k, res.status, want[k]);
        assert_int_equal(res.written, 0);
        assert_int_equal(res.not_found, 0);
        assert_true(vx_shard_applied(sa) == index);
        assert_int_equal(vx_shard_backlog(sa), 0); /* nothing queued */
        free(bad[k]);
        /* B: a valid no-op at the same index */
        size_t nl;
        uint8_t *noop = cmd_ids(VX_CMD_DELETE_IDS, &missing, 1, NULL, NULL, 0, &nl);
        vx_apply_result rb = apply(sb, index, noop, nl);
        assert_int_equal(rb.not_found, 1);
        /* nothing else changed on A */
        assert_true(vx_shard_count(sa) == 100);
        check_get(sa, &e.m, 3, "{\"i\":3,\"tag\":\"t\"}");
        check_get(sa, &e.m, 99, "{\"i\":99,\"tag\":\"t\"}");
        expect_gone(sa, 100);
        expect_gone(sa, 109);
    }
    wait_indexed(sa);
    wait_indexed(sb);
    uint64_t aa, ab;
    uint64_t da = digest(sa, &aa), db = digest(sb, &ab);
    assert_true(aa == index - 1 && ab == aa);
    assert_true(da == db);
    assert_true(da == d_before); /* no-op entries move the applied index, not the content */
    check_model(sa, &e.m, 100, 1);
    assert_true(index_live(sa) == 100);
    close_shard(sa, e.pool);
    close_shard(sb, e.pool);
    rm_dir(dir_b);
    env_free(&e);
}

static void test_dim_mismatch(void **state)
{
    env e;
    env_init(&e, 200, 5);
    vx_shard *sh = open_shard(e.dir, e.pool);
    apply_upsert(sh, &e.m, &e.rng, 1, 0, 50);
    wait_indexed(sh);
    uint64_t count0 = vx_shard_count(sh);

    /* a batch of new points and a replacement of point 3, with one bad
     * dimension first, in the middle or last: nothing of it is written */
    const uint32_t bad_at[3] = {0, 5, 10};
    const uint32_t bad_dim[3] = {8, 17, 1};
    for (int t = 0; t < 3; t++) {
        vx_cmd_buf b;
        vx_cmd_begin(&b, VX_CMD_UPSERT);
        float v[32];
        for (uint32_t k = 0; k <= 10; k++) {
            uint32_t i = k < 10 ? 100 + k : 3;
            vx_point_id id;
            id_of(&id, i);
            for (int d = 0; d < 32; d++) v[d] = vx_rng_normal(&e.rng);
            uint32_t dim = k == bad_at[t] ? bad_dim[t] : DIM;
            vx_cmd_add_point(&b, &id, v, dim, "{}", 2);
            if (i == 100) memcpy(vec_of(&e.m, 100), v, DIM * sizeof(float));
        }
        uint8_t *c;
        size_t len;
        assert_int_equal(vx_cmd_finish(&b, &c, &len), 0);
        assert_int_equal(vx_cmd_validate(c, len), 0); /* well-formed: the shard says EDIM */
        vx_apply_result res = apply(sh, (uint64_t)(2 + t), c, len);
        assert_int_equal(res.status, VX_EDIM);
        assert_int_equal(res.written, 0);
        assert_true(vx_shard_applied(sh) == (uint64_t)(2 + t));
        assert_int_equal(vx_shard_backlog(sh), 0);
        assert_true(vx_shard_count(sh) == count0);
        for (uint32_t i = 100; i < 110; i++) expect_gone(sh, i);
        check_get(sh, &e.m, 3, "{\"i\":3,\"tag\":\"t\"}"); /* old vector, version 1 */
        if (bad_at[t] != 0) expect_no_dead(sh, &e.m, vec_of(&e.m, 100));
    }
    check_model(sh, &e.m, 50, 1);
    assert_true(index_live(sh) == 50);
    close_shard(sh, e.pool);
    env_free(&e);
}

/* k results of each query, exact and approximate. */
typedef struct snapshot {
    uint32_t nq, k;
    vx_shard_hit *hits; /* nq * k * 2 */
    uint32_t *n;        /* nq * 2 */
} snapshot;

static void take_snapshot(vx_shard *sh, const float *queries, uint32_t nq, uint32_t k, snapshot *s)
{
    s->nq = nq;
    s->k = k;
    s->hits = calloc((size_t)nq * k * 2, sizeof(vx_shard_hit));
    s->n = calloc((size_t)nq * 2, sizeof(uint32_t));
    vx_search_params exact = {.exact = true};
    for (uint32_t q = 0; q < nq; q++) {
        assert_int_equal(vx_shard_search(sh, queries + (size_t)q * DIM, k, &k_params,
                                         s->hits + (size_t)(2 * q) * k, &s->n[2 * q]),
                         0);
        assert_int_equal(vx_shard_search(sh, queries + (size_t)q * DIM, k, &exact,
                                         s->hits + (size_t)(2 * q + 1) * k, &s->n[2 * q + 1]),
                         0);
    }
}

static void compare_snapshots(const snapshot *a, const snapshot *b)
{
    for (uint32_t r = 0; r < a->nq * 2; r++) {
        assert_int_equal(a->n[r], b->n[r]);
        for (uint32_t j = 0; j < a->n[r]; j++) {
            const vx_shard_hit *x = &a->hits[(size_t)r * a->k + j],
                               *y = &b->hits[(size_t)r * a->k + j];
            if (!vx_id_equal(&x->id, &y->id) || x->distance != y->distance ||
                x->version != y->version)
                fail_msg("query %u (%s) rank %u: %u at %g before, %u at %g after", r / 2,
                         r % 2 ? "exact" : "hnsw", j, num_of(&x->id), (double)x->distance,
                         num_of(&y->id), (double)y->distance);
        }
    }
}

static void free_snapshot(snapshot *s)
{
    free(s->hits);
    free(s->n);
}

static void test_restart(void **state)
{
    env e;
    env_init(&e, 900, 6);
    vx_shard *sh = open_shard(e.dir, e.pool);
    for (uint32_t b = 0; b < 4; b++) apply_upsert(sh, &e.m, &e.rng, 1 + b, b * 200, 200);
    apply_delete(sh, &e.m, 5, 100, 50);
    uint32_t some[3] = {1, 2, 700};
    size_t len;
    uint8_t *c = cmd_ids(VX_CMD_SET_PAYLOAD, some, 3, "{\"x\":1}", NULL, 0, &len);
    assert_int_equal(apply(sh, 6, c, len).written, 3);
    e.m.version[1] = e.m.version[2] = e.m.version[700] = 6;
    apply_upsert(sh, &e.m, &e.rng, 7, 300, 20); /* new vectors for 300..319 */
    wait_indexed(sh);

    enum { NQ = 30 };
    float queries[NQ * DIM];
    for (uint32_t q = 0; q < NQ; q++) {
        if (q % 2)
            rand_vec(&e.rng, queries + q * DIM);
        else
            memcpy(queries + q * DIM, vec_of(&e.m, q * 26), DIM * sizeof(float));
    }
    snapshot before, after;
    take_snapshot(sh, queries, NQ, 10, &before);
    uint64_t a0, d0 = digest(sh, &a0);
    uint64_t n0 = vx_shard_count(sh);
    assert_true(n0 == e.m.count && a0 == 7);
    close_shard(sh, e.pool);

    sh = open_shard(e.dir, e.pool);
    wait_indexed(sh); /* nothing queued after a restart */
    uint64_t a1, d1 = digest(sh, &a1);
    assert_true(a1 == a0 && d1 == d0);
    assert_true(vx_shard_applied(sh) == 7);
    assert_true(vx_shard_count(sh) == n0);
    assert_true(index_live(sh) == n0);
    take_snapshot(sh, queries, NQ, 10, &after);
    compare_snapshots(&before, &after);
    check_model(sh, &e.m, 800, 3);
    free_snapshot(&before);
    free_snapshot(&after);
    close_shard(sh, e.pool);
    env_free(&e);
}

static int count_checkpoints(const char *dir, uint64_t *which)
{
    char cmd[128];
    int n = 0;
    *which = 0;
    for (uint64_t i = 0; i < 64; i++) {
        snprintf(cmd, sizeof cmd, "%s/index-%" PRIu64 ".vxi", dir, i);
        if (access(cmd, F_OK) == 0) {
            n++;
            *which = i;
        }
    }
    return n;
}

static void expect_recovery(const char *log, uint64_t from, uint64_t reindexed, uint64_t removed)
{
    char want[128];
    snprintf(want, sizeof want, "index recovered from checkpoint %" PRIu64 ": %" PRIu64
                                " re-indexed, %" PRIu64 " removed", from, reindexed, removed);
    if (strstr(log, want) == NULL) fail_msg("expected \"%s\" in the recovery log", want);
}

static void test_checkpoint_restart(void **state)
{
    env e;
    env_init(&e, 1400, 7);
    vx_shard *sh = open_shard(e.dir, e.pool);
    apply_upsert(sh, &e.m, &e.rng, 1, 0, 500);
    apply_upsert(sh, &e.m, &e.rng, 2, 500, 500);
    wait_indexed(sh);
    char err[VX_SHARD_ERRMSG_LEN] = "";
    if (vx_shard_checkpoint(sh, err) != 0) fail_msg("checkpoint: %s", err);
    uint64_t which;
    assert_int_equal(count_checkpoints(e.dir, &which), 1);
    assert_true(which == 2);

    /* after the checkpoint: new points, deletes of old ones, new vectors
     * for old ones, new points deleted again, a payload update */
    apply_upsert(sh, &e.m, &e.rng, 3, 1000, 200);
    apply_delete(sh, &e.m, 4, 0, 50);
    apply_upsert(sh, &e.m, &e.rng, 5, 100, 10);
    apply_delete(sh, &e.m, 6, 1000, 5);
    uint32_t some[10];
    for (uint32_t k = 0; k < 10; k++) some[k] = 500 + k;
    size_t len;
    uint8_t *c = cmd_ids(VX_CMD_SET_PAYLOAD, some, 10, "{\"p\":7}", NULL, 0, &len);
    assert_int_equal(apply(sh, 7, c, len).written, 10);
    for (uint32_t k = 0; k < 10; k++) e.m.version[500 + k] = 7;
    uint64_t d0 = digest(sh, NULL);
    close_shard(sh, e.pool);

    /* 195 new + 10 new vectors + 10 payload updates (their version moved)
     * are re-indexed; the 50 deleted labels of the checkpoint removed */
    capture cap;
    capture_begin(&cap);
    sh = open_shard(e.dir, e.pool);
    char *log = capture_end(&cap);
    expect_recovery(log, 2, 215, 50);
    free(log);
    assert_true(digest(sh, NULL) == d0);
    wait_indexed(sh);
    assert_true(index_live(sh) == vx_shard_count(sh));
    assert_true(vx_shard_count(sh) == e.m.count);
    check_model(sh, &e.m, 1200, 1);

    /* a checkpoint while changes are still queued covers only what is
     * indexed; the queued ones are re-indexed after a restart */
    gate g;
    gate_close(&g, e.pool);
    apply_upsert(sh, &e.m, &e.rng, 8, 1200, 100);
    if (vx_shard_checkpoint(sh, err) != 0) fail_msg("checkpoint: %s", err);
    assert_int_equal(count_checkpoints(e.dir, &which), 1); /* the older one is removed */
    assert_true(which == 7);
    check_model(sh, &e.m, 1300, 7);
    gate_open(&g);
    close_shard(sh, e.pool);
    capture_begin(&cap);
    sh = open_shard(e.dir, e.pool);
    log = capture_end(&cap);
    expect_recovery(log, 7, 100, 0);
    free(log);
    wait_indexed(sh);
    assert_true(index_live(sh) == vx_shard_count(sh));
    check_model(sh, &e.m, 1300, 1);

    /* a checkpoint at the applied index: nothing to recover, nothing said */
    if (vx_shard_checkpoint(sh, err) != 0) fail_msg("checkpoint: %s", err);
    assert_int_equal(count_checkpoints(e.dir, &which), 1);
    assert_true(which == 8);
    close_shard(sh, e.pool);
    capture_begin(&cap);
    sh = open_shard(e.dir, e.pool);
    log = capture_end(&cap);
    assert_null(strstr(log, "recovered"));
    free(log);
    assert_true(index_live(sh) == vx_shard_count(sh));
    check_model(sh, &e.m, 1300, 5);
    close_shard(sh, e.pool);
    env_free(&e);
}

static void test_corrupt_checkpoint(void **state)
{
    env e;
    env_init(&e, 700, 8);
    vx_shard *sh = open_shard(e.dir, e.pool);
    apply_upsert(sh, &e.m, &e.rng, 1, 0, 600);
    apply_delete(sh, &e.m, 2, 0, 30);
    wait_indexed(sh);
    char err[VX_SHARD_ERRMSG_LEN] = "";
    if (vx_shard_checkpoint(sh, err) != 0) fail_msg("checkpoint: %s", err);
    apply_upsert(sh, &e.m, &e.rng, 3, 600, 50);
    apply_delete(sh, &e.m, 4, 600, 10);
    uint64_t d0 = digest(sh, NULL);
    close_shard(sh, e.pool);

    char path[128];
    snprintf(path, sizeof path, "%s/index-2.vxi", e.dir);
    for (int round = 0; round < 2; round++) {
        int fd = open(path, O_RDWR);
        assert_true(fd >= 0);
        off_t size = lseek(fd, 0, SEEK_END);
        assert_true(size > 4096);
        if (round == 0) {
            uint8_t junk[64];
            memset(junk, 0x5a, sizeof junk);
            assert_true(pwrite(fd, junk, sizeof junk, size / 2) == (ssize_t)sizeof junk);
        } else {
            assert_int_equal(ftruncate(fd, size / 2), 0); /* and then a torn one */
        }
        close(fd);
        capture cap;
        capture_begin(&cap);
        sh = open_shard(e.dir, e.pool);
        char *log = capture_end(&cap);
        assert_non_null(strstr(log, "checkpoint unusable"));
        expect_recovery(log, 0, e.m.count, 0); /* a rebuild from the store */
        free(log);
        assert_true(digest(sh, NULL) == d0);
        wait_indexed(sh);
        assert_true(index_live(sh) == vx_shard_count(sh));
        check_model(sh, &e.m, 650, 1);
        close_shard(sh, e.pool);
    }
    env_free(&e);
}

static void test_digests(void **state)
{
    env e;
    env_init(&e, 300, 9);
    char dirs[3][64];
    vx_shard *sh[3];
    for (int s = 0; s < 3; s++) {
        make_dir(dirs[s]);
        sh[s] = open_shard(dirs[s], e.pool);
    }
    uint32_t ids4[4] = {1, 2, 3, 250};
    const char *keys[1] = {"tag"};
    for (uint64_t index = 1; index <= 6; index++) {
        size_t len = 0;
        uint8_t *c = NULL;
        switch (index) {
        case 1: c = cmd_upsert(&e.m, &e.rng, 0, 200, "t", &len); break;
        case 2: c = cmd_delete_range(50, 20, &len); break;
        case 3: c = cmd_upsert(&e.m, &e.rng, 190, 20, "u", &len); break;
        case 4: c = cmd_ids(VX_CMD_OVERWRITE_PAYLOAD, ids4, 4, "{\"o\":1}", NULL, 0, &len); break;
        case 5: c = cmd_ids(VX_CMD_DELETE_PAYLOAD_KEYS, ids4 + 1, 2, NULL, keys, 1, &len); break;
        default: c = cmd_ids(VX_CMD_SET_PAYLOAD, ids4, 2, "{\"s\":\"v\"}", NULL, 0, &len); break;
        }
        for (int s = 0; s < 3; s++) {
            uint8_t *copy = malloc(len);
            memcpy(copy, c, len);
            if (s == 2 && index == 6) { /* {"s":"w"}: the JSON is followed by padding */
                uint8_t *v = memmem(copy, len, "\"v\"}", 4);
                assert_non_null(v);
                v[1] = 'w';
            }
            assert_int_equal(apply(sh[s], index, copy, len).status, 0);
        }
        free(c);
    }
    uint64_t ap[3], dg[3];
    for (int s = 0; s < 3; s++) dg[s] = digest(sh[s], &ap[s]);
    assert_true(ap[0] == 6 && ap[1] == 6 && ap[2] == 6);
    assert_true(dg[0] == dg[1]);
    assert_true(dg[2] != dg[0]);
    assert_true(vx_shard_count(sh[0]) == vx_shard_count(sh[2]));
    /* the same after a restart */
    close_shard(sh[1], e.pool);
    sh[1] = open_shard(dirs[1], e.pool);
    assert_true(digest(sh[1], NULL) == dg[0]);
    for (int s = 0; s < 3; s++) {
        close_shard(sh[s], e.pool);
        rm_dir(dirs[s]);
    }
    env_free(&e);
}

static void test_backlog(void **state)
{
    /* fewer points where indexing is many times slower: one indexing thread
     * under TSan (20000 took over a minute), ASan, unoptimized builds; 5000
     * still fill the backlog (max 1000) several times over */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__) || !defined(__OPTIMIZE__)
    enum { N = 5000 };
#else
    enum { N = 20000 };
#endif
    /* returns as soon as the backlog is indexed: the deadline only matters on
     * a slow, busy machine, where WAIT_MS may not suffice */
    enum { INDEX_WAIT_MS = 600000 };
    env e;
    env_init(&e, N, 10);
    vx_shard *sh = open_shard_cfg(e.dir, e.pool, VX_METRIC_L2, 1000);
    assert_false(vx_shard_backlog_full(sh));
    size_t len;
    uint8_t *c = cmd_upsert(&e.m, &e.rng, 0, N, "t", &len);
    gate g;
    gate_close(&g, e.pool);
    double t0 = vx_test_now();
    vx_apply_result res = apply(sh, 1, c, len);
    double t_apply = vx_test_now() - t0;
    assert_int_equal(res.written, N);
    for (uint32_t i = 0; i < N; i++) {
        e.m.alive[i] = true;
        e.m.version[i] = 1;
    }
    e.m.count = N;
    assert_true(vx_shard_backlog_full(sh));
    assert_int_equal(vx_shard_backlog(sh), N);
    for (uint32_t i = 0; i < N; i += 2003) expect_self(sh, &e.m, i); /* exact scan of the queue */
    /* a writer waits for room, bounded: the gate holds the indexer, so the
     * wait ends at its timeout (not before: a lower bound), full */
    double tw = vx_test_now();
    assert_int_equal(vx_shard_wait_backlog(sh, 100), VX_EFULL);
    assert_true(vx_test_now() - tw >= 0.09);
    gate_open(&g);
    /* and returns as soon as the indexer has made room */
    assert_int_equal(vx_shard_wait_backlog(sh, INDEX_WAIT_MS), 0);
    t0 = vx_test_now();
    assert_int_equal(vx_shard_wait_indexed(sh, INDEX_WAIT_MS), 0);
    double t_index = vx_test_now() - t0;
    print_message("apply of %d points: %.3f s; indexing: %.3f s\n", N, t_apply, t_index);
    assert_int_equal(vx_shard_backlog(sh), 0);
    assert_false(vx_shard_backlog_full(sh));
    assert_true(index_live(sh) == N);
    for (uint32_t i = 0; i < N; i += 997) expect_self(sh, &e.m, i);
    close_shard(sh, e.pool);
    env_free(&e);
}

/* background_recovery: the records written after the index checkpoint (here
 * all of them: none was saved) are queued at open instead of indexed inside
 * it, as far as max_backlog_bytes allows; searches find them meanwhile and
 * the background indexer catches up.  The pool is gated, so nothing drains
 * before the checks. */
static vx_shard *open_background(const char *dir, vx_workpool *pool, vx_metric metric,
                                 uint32_t max_count, size_t max_bytes)
{
    return open_shard_full(dir, pool, metric, max_count, max_bytes, true);
}

static void test_background_recovery(void **state)
{
    enum { N = 600, FIT = 100 }; /* N below half the default max_backlog (20000) */
    env e;
    env_init(&e, N, 13);
    vx_shard *sh = open_shard(e.dir, e.pool);
    apply_upsert(sh, &e.m, &e.rng, 1, 0, N);
    close_shard(sh, e.pool); /* no checkpoint: a reopen re-indexes every record */

    for (int round = 0; round < 3; round++) {
        /* round 0: every record fits half the bounds; rounds 1 and 2: FIT of
         * them fit half the byte bound, half the count bound */
        size_t bound = round == 1 ? (size_t)2 * FIT * DIM * sizeof(float) : 0;
        uint32_t count = round == 2 ? 2 * FIT : 0;
        uint32_t queued = round == 0 ? N : FIT;
        gate g;
        gate_close(&g, e.pool);
        double t0 = vx_test_now();
        sh = open_background(e.dir, e.pool, VX_METRIC_L2, count, bound);
        print_message("open with %u of %d records queued: %.3f s\n", queued, N,
                      vx_test_now() - t0);
        assert_int_equal(vx_shard_backlog(sh), queued);
        assert_true(index_live(sh) == N - queued);
        assert_true(vx_shard_count(sh) == N);
        assert_int_equal(vx_shard_wait_indexed(sh, 20), VX_ESTATE);
        for (uint32_t i = 0; i < N; i += 7) expect_self(sh, &e.m, i); /* queued ones exactly */
        gate_open(&g);
        wait_indexed(sh);
        assert_true(index_live(sh) == N);
        for (uint32_t i = 0; i < N; i += 7) expect_self(sh, &e.m, i);
        close_shard(sh, e.pool);
    }
    env_free(&e);
}

static void normalize(float *v)
{
    double s = 0;
    for (int d = 0; d < DIM; d++) s += (double)v[d] * v[d];
    for (int d = 0; d < DIM; d++) v[d] = (float)(v[d] / sqrt(s));
}

/* COSINE: every 7th of the first n points, searched by its unit vector
 * times scale, comes first at distance -1, and every distance is in [-1, 1]. */
static void expect_cosine_self(vx_shard *sh, model *m, uint32_t n_points, float scale, int phase)
{
    for (uint32_t i = 0; i < n_points; i += 7) {
        float q[DIM];
        for (int d = 0; d < DIM; d++) q[d] = vec_of(m, i)[d] * scale;
        vx_shard_hit hits[5];
        uint32_t n = search(sh, q, 5, hits);
        assert_int_equal(n, 5);
        if (num_of(&hits[0].id) != i || fabsf(hits[0].distance + 1.0f) > 1e-5f)
            fail_msg("phase %d: search for %u: first hit %u at %g", phase, i,
                     num_of(&hits[0].id), (double)hits[0].distance);
        for (uint32_t j = 0; j < n; j++)
            assert_true(hits[j].distance >= -1.0f - 1e-5f && hits[j].distance <= 1.0f + 1e-5f);
    }
}

/* COSINE keeps vectors as written in the store; the recovered ones that wait
 * in the queue are scored at unit length, as the index scores them. */
static void test_background_recovery_cosine(void **state)
{
    enum { N = 300 };
    env e;
    env_init(&e, N, 14);
    vx_shard *sh = open_shard_cfg(e.dir, e.pool, VX_METRIC_COSINE, 0);
    size_t len;
    uint8_t *c = cmd_upsert(&e.m, &e.rng, 0, N, "t", &len); /* draws the vectors */
    free(c);
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    for (uint32_t i = 0; i < N; i++) {
        normalize(vec_of(&e.m, i));
        float v[DIM];
        for (int d = 0; d < DIM; d++) v[d] = vec_of(&e.m, i)[d] * (2.0f + (float)(i % 5));
        vx_point_id id;
        id_of(&id, i);
        vx_cmd_add_point(&b, &id, v, DIM, "{}", 2);
    }
    assert_int_equal(vx_cmd_finish(&b, &c, &len), 0);
    assert_int_equal(apply(sh, 1, c, len).written, N);
    close_shard(sh, e.pool);
    gate g;
    gate_close(&g, e.pool);
    sh = open_background(e.dir, e.pool, VX_METRIC_COSINE, 0, 0);
    assert_int_equal(vx_shard_backlog(sh), N);
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 1) {
            gate_open(&g);
            wait_indexed(sh);
            assert_true(index_live(sh) == N);
        }
        expect_cosine_self(sh, &e.m, N, 1.0f, phase);
    }
    close_shard(sh, e.pool);
    env_free(&e);
}

static void test_cosine(void **state)
{
    env e;
    env_init(&e, 300, 11);
    vx_shard *sh = open_shard_cfg(e.dir, e.pool, VX_METRIC_COSINE, 0);
    size_t len;
    uint8_t *c = cmd_upsert(&e.m, &e.rng, 0, 300, "t", &len); /* draws the vectors */
    free(c);
    for (uint32_t i = 0; i < 300; i++) normalize(vec_of(&e.m, i));
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    for (uint32_t i = 0; i < 300; i++) {
        vx_point_id id;
        id_of(&id, i);
        vx_cmd_add_point(&b, &id, vec_of(&e.m, i), DIM, "{}", 2);
        e.m.alive[i] = true;
        e.m.version[i] = 1;
    }
    e.m.count = 300;
    assert_int_equal(vx_cmd_finish(&b, &c, &len), 0);
    gate g;
    gate_close(&g, e.pool);
    assert_int_equal(apply(sh, 1, c, len).written, 300);
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 1) {
            gate_open(&g);
            wait_indexed(sh);
            assert_true(index_live(sh) == 300);
        } else {
            assert_int_equal(vx_shard_backlog(sh), 300);
        }
        expect_cosine_self(sh, &e.m, 300, 3.0f, phase); /* scaled queries */
    }
    close_shard(sh, e.pool);
    env_free(&e);
}

/* vx_shard_close must wait for the drain job and return, also when it is
 * called while indexing is still running, or right after
 * vx_shard_wait_indexed (as at shutdown).  The closer runs
 * on a helper thread so that a hang fails the test instead of hanging it;
 * a shard whose close hangs is leaked. */
typedef struct closer {
    vx_shard *sh;
    bool wait_first;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} closer;

static void *closer_main(void *arg)
{
    closer *c = arg;
    if (c->wait_first && vx_shard_wait_indexed(c->sh, WAIT_MS) != 0) abort();
    vx_shard_close(c->sh);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void test_close_while_indexing(void **state)
{
    env e;
    env_init(&e, 200, 12);
    for (int round = 0; round < 20; round++) {
        vx_shard *sh = open_shard(e.dir, e.pool);
        apply_upsert(sh, &e.m, &e.rng, (uint64_t)round + 1, 0, 200);
        closer *c = calloc(1, sizeof(*c)); /* leaked if the close hangs */
        c->sh = sh;
        /* even rounds: right after wait_indexed returns (the drain job may
         * not have cleared drain_scheduled yet); odd: while indexing */
        c->wait_first = round % 2 == 0;
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, closer_main, c), 0);
        struct timespec dl;
        deadline_in(&dl, 10000);
        pthread_mutex_lock(&c->mu);
        int rc = 0;
        while (!c->done && rc == 0) rc = pthread_cond_timedwait(&c->cv, &c->mu, &dl);
        bool done = c->done;
        pthread_mutex_unlock(&c->mu);
        if (!done) {
            pthread_detach(t);
            model_free(&e.m);
            fail_msg("round %d: vx_shard_close did not return within 10 s of an apply of 200 "
                     "points (%s); lost wakeup: "
                     "drain_job clears drain_scheduled without signalling q_cv",
                     round, round % 2 ? "while indexing" : "after wait_indexed");
        }
        assert_int_equal(pthread_join(t, NULL), 0);
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
    }
    env_free(&e);
}


/* ---- compaction in the background (issue 14) --------------------------------------------- */

typedef struct searcher {
    vx_shard *sh;
    _Atomic bool stop;
    uint64_t searches, errors, short_answers;
    uint32_t dim;
    uint64_t seed;
} searcher;

static void *search_main(void *arg)
{
    searcher *s = arg;
    vx_rng r;
    vx_rng_seed(&r, s->seed);
    float q[DIM];
    vx_shard_hit hits[10];
    while (!atomic_load(&s->stop)) {
        for (uint32_t d = 0; d < s->dim; d++) q[d] = (float)(vx_rng_uniform(&r) * 2 - 1);
        uint32_t n = 0;
        if (vx_shard_search(s->sh, q, 10, NULL, hits, &n) != 0) s->errors++;
        else if (n < 10) s->short_answers++; /* at least 1500 points are always live */
        s->searches++;
    }
    return NULL;
}

static void wait_compacted(vx_shard *sh, const char *what)
{
    vx_shard_optimizer op;
    for (double end = vx_test_now() + 120; vx_test_now() < end; usleep(5000)) {
        vx_shard_optimizer_status(sh, &op);
        if (op.deleted == 0 && !op.running && vx_shard_backlog(sh) == 0) return;
    }
    fail_msg("%s: %" PRIu64 " deleted nodes left after 120 s", what, op.deleted);
}

/* Rounds of overwrites and deletes while a thread searches: the shard
 * compacts its index in the background (the policy set as a PATCH would),
 * the deleted nodes go back to 0 after each round, the index's slots stay
 * near the live count instead of growing with every round, every search
 * answers with k hits (a search racing the backlog that drains behind a
 * compaction once came back short: vx_shard_search_filtered), and the shard
 * agrees with the model. */
static void test_compaction(void **state)
{
    (void)state;
    enum { N = 2000, ROUNDS = 6 };
    env e;
    env_init(&e, N, 21);
    vx_shard *sh = open_shard(e.dir, e.pool);
    vx_shard_set_optimizer(sh, 0.1, 50);
    uint64_t idx = 1;
    apply_upsert(sh, &e.m, &e.rng, idx++, 0, N);
    searcher s = {.sh = sh, .dim = DIM, .seed = vx_test_seed(7) ^ 0xc0ffee};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, search_main, &s), 0);
    for (int round = 0; round < ROUNDS; round++) {
        /* delete a quarter, overwrite the rest, put the quarter back */
        uint32_t q0 = (uint32_t)(round % 4) * (N / 4);
        apply_delete(sh, &e.m, idx++, q0, N / 4);
        for (uint32_t first = 0; first < N; first += N / 4)
            if (first != q0) apply_upsert(sh, &e.m, &e.rng, idx++, first, N / 4);
        apply_upsert(sh, &e.m, &e.rng, idx++, q0, N / 4);
        wait_compacted(sh, "a round of churn");
        vx_index_stats st;
        vx_index_get_stats(vx_shard_index(sh), &st);
        assert_int_equal(st.live, N);
        assert_int_equal(st.deleted, 0);
        /* without compaction every round adds 2000 slots */
        if (st.slots > 2 * N) fail_msg("round %d: %" PRIu64 " slots for %d live points", round, st.slots, N);
        assert_int_equal(vx_shard_count(sh), N);
    }
    atomic_store(&s.stop, true);
    pthread_join(t, NULL);
    vx_shard_optimizer op;
    vx_shard_optimizer_status(sh, &op);
    fprintf(stderr, "compaction: %" PRIu64 " runs freed %" PRIu64 " slots in %.2f s; %" PRIu64
                    " searches meanwhile, %" PRIu64 " errors\n",
            op.runs, op.reclaimed, op.seconds, s.searches, s.errors);
    assert_true(op.runs >= 1);
    assert_true(op.reclaimed >= (uint64_t)N * ROUNDS); /* every overwrite and delete, in all */
    assert_int_equal(s.errors, 0);
    assert_int_equal(s.short_answers, 0);
    assert_true(s.searches > 0);
    /* the index answers like the model: every live point finds itself */
    check_model(sh, &e.m, N, 7);
    vx_shard_close(sh);
    env_free(&e);
}

/* ---- moving a replica's data (vx_shard_send / receive / install) ------------------------ */

typedef struct sender {
    vx_shard *sh;
    int fd;
    uint64_t min_index;
    int rc;
    char err[VX_SHARD_ERRMSG_LEN];
} sender;

static void *send_main(void *arg)
{
    sender *s = arg;
    s->rc = vx_shard_send(s->sh, s->fd, s->min_index, s->err);
    close(s->fd);
    return NULL;
}

typedef struct relay {
    int in, out;
    long flip_at; /* byte offset to corrupt, -1: none */
} relay;

static void *relay_main(void *arg)
{
    relay *r = arg;
    char buf[4096];
    long off = 0;
    ssize_t n;
    while ((n = read(r->in, buf, sizeof buf)) > 0) {
        if (r->flip_at >= off && r->flip_at < off + n) buf[r->flip_at - off] ^= 0x20;
        off += n;
        if (send(r->out, buf, (size_t)n, MSG_NOSIGNAL) != n) break;
    }
    close(r->in);
    close(r->out);
    return NULL;
}

/* Stream src's data into dst's staging directory; flip_at >= 0 corrupts one
 * byte on the way.  Returns vx_shard_receive's result. */
static int transfer(vx_shard *src, vx_shard *dst, uint64_t min_index, long flip_at)
{
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    sender s = {.sh = src, .fd = a[0], .min_index = min_index};
    relay r = {.in = a[1], .out = b[0], .flip_at = flip_at};
    pthread_t ts, tr;
    assert_int_equal(pthread_create(&ts, NULL, send_main, &s), 0);
    assert_int_equal(pthread_create(&tr, NULL, relay_main, &r), 0);
    char err[VX_SHARD_ERRMSG_LEN];
    int rc = vx_shard_receive(dst, b[1], min_index, err);
    if (rc != 0) fprintf(stderr, "receive: %s\n", err);
    close(b[1]);
    pthread_join(ts, NULL);
    pthread_join(tr, NULL);
    return rc;
}

static void test_transfer(void **state)
{
    env e;
    env_init(&e, 400, 11);
    char sdir[64], ddir[600], err[VX_SHARD_ERRMSG_LEN];
    make_dir(sdir);
    snprintf(ddir, sizeof ddir, "%s/replica", e.dir);
    vx_shard *src = open_shard(sdir, e.pool);
    vx_shard *dst = open_shard(ddir, e.pool);
    /* the receiver holds other, older data: it must be replaced entirely */
    model other;
    model_init(&other, 400);
    apply_upsert(dst, &other, &e.rng, 1, 300, 50);
    uint64_t dst_applied, dst_digest = digest(dst, &dst_applied);

    apply_upsert(src, &e.m, &e.rng, 1, 0, 200);
    apply_delete(src, &e.m, 2, 10, 20);
    wait_indexed(src);
    assert_int_equal(vx_shard_checkpoint(src, err), 0);
    apply_upsert(src, &e.m, &e.rng, 3, 150, 100); /* newer than the checkpoint */
    apply_delete(src, &e.m, 4, 0, 5);
    uint64_t src_applied, src_digest = digest(src, &src_applied);
    assert_true(src_applied == 4);

    /* a replica that has not applied what is asked refuses */
    assert_int_equal(transfer(src, dst, 5, -1), VX_ESTATE);
    assert_int_equal(vx_shard_install(&dst, err), VX_ESTATE);
    /* a corrupted stream is detected, whichever byte was hit */
    for (long flip = 20; flip < 50000; flip = flip * 7 + 13) {
        int rc = transfer(src, dst, 4, flip);
        assert_true(rc == VX_ECORRUPT || rc == VX_EFORMAT || rc == VX_EIO);
        assert_int_equal(vx_shard_install(&dst, err), VX_ESTATE);
    }
    assert_true(digest(dst, NULL) == dst_digest);

    /* a crash between the two renames of an install: the old data comes back */
    assert_int_equal(transfer(src, dst, 4, -1), 0);
    close_shard(dst, e.pool);
    char old[700];
    snprintf(old, sizeof old, "%s.old", ddir);
    assert_int_equal(rename(ddir, old), 0);
    dst = open_shard(ddir, e.pool);
    uint64_t a;
    assert_true(digest(dst, &a) == dst_digest && a == dst_applied);

    /* the whole move */
    assert_int_equal(transfer(src, dst, 4, -1), 0);
    assert_int_equal(vx_shard_install(&dst, err), 0);
    assert_non_null(dst);
    assert_true(digest(dst, &a) == src_digest && a == src_applied);
    assert_true(vx_shard_count(dst) == vx_shard_count(src));
    wait_indexed(dst);
    check_model(dst, &e.m, 400, 1);
    struct stat st;
    assert_true(stat(old, &st) != 0);
    /* and it survives a restart */
    close_shard(dst, e.pool);
    dst = open_shard(ddir, e.pool);
    assert_true(digest(dst, NULL) == src_digest);
    check_model(dst, &e.m, 400, 7);

    close_shard(src, e.pool);
    close_shard(dst, e.pool);
    rm_dir(sdir);
    model_free(&other);
    env_free(&e);
}

/* ---- payload indexes ----------------------------------------------------------------------- */

static uint8_t *cmd_json_only(vx_cmd_type type, const char *json, size_t *len)
{
    vx_cmd_buf b;
    vx_cmd_begin(&b, type);
    vx_cmd_set_json(&b, json, (uint32_t)strlen(json));
    uint8_t *data;
    assert_int_equal(vx_cmd_finish(&b, &data, len), 0);
    return data;
}

/* The same command on both shards. */
static vx_apply_result apply_both(vx_shard *a, vx_shard *b, uint64_t index, uint8_t *c, size_t len)
{
    uint8_t *copy = malloc(len);
    memcpy(copy, c, len);
    vx_apply_result ra = apply(a, index, c, len), rb = apply(b, index, copy, len);
    assert_int_equal(ra.status, rb.status);
    return ra;
}

static void pidx_payload(uint32_t i, char *buf, size_t n)
{
    static const char *colors[3] = {"red", "green", "blue"};
    char longs[160];
    memset(longs, 'a' + (char)(i % 4), 130);
    longs[130] = '\0';
    snprintf(buf, n,
             "{\"color\":\"%s\",\"n\":%u,\"x\":%.1f,\"flag\":%s,\"tags\":[\"t%u\",\"u%u\"],"
             "\"meta\":{\"k\":%u},\"long\":\"%s\"}",
             colors[i % 3], i, i * 0.5, i % 2 ? "false" : "true", i % 5, i % 7, i % 11, longs);
}

/* Filtered search on the indexed shard equals the exact search on the
 * reference shard, for each filter and a few queries. */
static void expect_same_filtered(vx_shard *indexed, vx_shard *ref, model *m, const char *const *filters,
                                 size_t nf, int min_hits)
{
    for (size_t fi = 0; fi < nf; fi++) {
        vx_filter_expr *f;
        char err[VX_FILTER_ERRMSG_LEN];
        if (vx_filter_compile_text(filters[fi], strlen(filters[fi]), &f, err) != 0)
            fail_msg("filter %s: %s", filters[fi], err);
        for (uint32_t qi = 0; qi < 4; qi++) {
            vx_shard_hit a[10], b[10];
            uint32_t na = 0, nb = 0;
            vx_search_params exact = {.exact = true};
            const float *q = vec_of(m, qi * 37 % m->cap);
            assert_int_equal(vx_shard_search_filtered(indexed, q, 10, &k_params, f, a, &na), 0);
            assert_int_equal(vx_shard_search_filtered(ref, q, 10, &exact, f, b, &nb), 0);
            if (na != nb) fail_msg("filter %s: %u hits, reference %u", filters[fi], na, nb);
            assert_true((int)na >= (qi == 0 ? min_hits : 0) || nb == na);
            for (uint32_t i = 0; i < na; i++) {
                assert_true(vx_id_equal(&a[i].id, &b[i].id));
                assert_true(fabsf(a[i].distance - b[i].distance) <= 1e-4f * (1 + fabsf(b[i].distance)));
            }
        }
        vx_filter_free(f);
    }
}

static uint64_t index_points(vx_shard *sh, const char *field, int *type)
{
    vx_shard_pindex_info *v;
    size_t n;
    assert_int_equal(vx_shard_payload_indexes(sh, &v, &n), 0);
    uint64_t points = UINT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].field, field) == 0) {
            points = v[i].points;
            if (type) *type = v[i].type;
        }
    free(v);
    return points;
}

static void test_payload_index(void **state)
{
    env e;
    env_init(&e, 600, 17);
    char rdir[600];
    snprintf(rdir, sizeof rdir, "%s/reference", e.dir);
    vx_shard *sh = open_shard(e.dir, e.pool), *ref = open_shard(rdir, e.pool);
    /* 600 points with a rich payload */
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    for (uint32_t i = 0; i < 600; i++) {
        rand_vec(&e.rng, vec_of(&e.m, i));
        vx_point_id id;
        id_of(&id, i);
        char pl[400];
        pidx_payload(i, pl, sizeof pl);
        vx_cmd_add_point(&b, &id, vec_of(&e.m, i), DIM, pl, (uint32_t)strlen(pl));
        e.m.alive[i] = true;
    }
    e.m.count = 600;
    uint8_t *c;
    size_t len;
    assert_int_equal(vx_cmd_finish(&b, &c, &len), 0);
    apply_both(sh, ref, 1, c, len);
    uint64_t d_before = digest(sh, NULL);

    const char *defs[][2] = {{"color", "keyword"}, {"n", "integer"}, {"x", "float"},
                             {"flag", "bool"},     {"tags", "keyword"}, {"meta.k", "integer"},
                             {"long", "keyword"}};
    uint64_t index = 2;
    for (size_t i = 0; i < 7; i++, index++) {
        char json[128];
        snprintf(json, sizeof json, "{\"field_name\":\"%s\",\"field_schema\":\"%s\"}", defs[i][0],
                 defs[i][1]);
        c = cmd_json_only(VX_CMD_CREATE_INDEX, json, &len);
        vx_apply_result r = apply(sh, index, c, len);
        assert_int_equal(r.status, 0);
        /* the reference applies an entry that changes nothing, to keep indexes equal */
        c = cmd_json_only(VX_CMD_DROP_INDEX, "{\"field_name\":\"none\"}", &len);
        assert_int_equal(apply(ref, index, c, len).status, 0);
    }
    assert_true(digest(sh, NULL) != d_before); /* declarations are replicated state */
    int type = 0;
    assert_true(index_points(sh, "color", &type) == 600 && type == VX_PIDX_KEYWORD);
    assert_true(index_points(sh, "meta.k", &type) == 600 && type == VX_PIDX_INTEGER);
    /* bad declarations are no-ops with a status */
    c = cmd_json_only(VX_CMD_CREATE_INDEX, "{\"field_name\":\"a\",\"field_schema\":\"geo\"}", &len);
    assert_int_equal(apply(sh, index, c, len).status, VX_EINVAL);
    c = cmd_json_only(VX_CMD_DROP_INDEX, "{\"field_name\":\"a\"}", &len);
    assert_int_equal(apply(ref, index++, c, len).status, 0);

    static const char *const filters[] = {
        "{\"must\":[{\"key\":\"color\",\"match\":{\"value\":\"red\"}}]}",
        "{\"must\":[{\"key\":\"color\",\"match\":{\"any\":[\"green\",\"blue\"]}},"
        "{\"key\":\"flag\",\"match\":{\"value\":true}}]}",
        "{\"must\":[{\"key\":\"n\",\"range\":{\"gte\":100,\"lt\":130}}]}",
        "{\"must\":[{\"key\":\"x\",\"range\":{\"gt\":10.0,\"lte\":20.5}}]}",
        "{\"must\":[{\"key\":\"tags\",\"match\":{\"value\":\"u3\"}}],"
        "\"must_not\":[{\"key\":\"color\",\"match\":{\"value\":\"red\"}}]}",
        "{\"must\":[{\"key\":\"meta.k\",\"match\":{\"value\":4}}]}",
        "{\"must\":[{\"key\":\"n\",\"match\":{\"value\":7}}]}",
        "{\"must\":[{\"has_id\":[1,2,3,4,5,6,7,8,9,10,11,12]},"
        "{\"key\":\"color\",\"match\":{\"value\":\"blue\"}}]}",
        "{\"must\":[{\"key\":\"long\",\"match\":{\"value\":\"ccccccccccccccccccccccccccccccccccccccccccccccc"
        "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\"}}]}",
    };
    size_t nf = sizeof filters / sizeof *filters;
    expect_same_filtered(sh, ref, &e.m, filters, nf, 1);

    /* changes keep the keys in step: payload set, overwrite, key delete, deletes, re-upserts */
    uint32_t some[6] = {0, 3, 6, 9, 12, 15};
    c = cmd_ids(VX_CMD_SET_PAYLOAD, some, 6, "{\"color\":\"blue\",\"n\":5000}", NULL, 0, &len);
    apply_both(sh, ref, index++, c, len);
    c = cmd_ids(VX_CMD_OVERWRITE_PAYLOAD, some + 3, 3, "{\"tags\":[\"u3\"]}", NULL, 0, &len);
    apply_both(sh, ref, index++, c, len);
    const char *keys[1] = {"flag"};
    c = cmd_ids(VX_CMD_DELETE_PAYLOAD_KEYS, some, 3, NULL, keys, 1, &len);
    apply_both(sh, ref, index++, c, len);
    c = cmd_delete_range(100, 20, &len);
    apply_both(sh, ref, index++, c, len);
    c = cmd_delete_filter("{\"must\":[{\"key\":\"color\",\"match\":{\"value\":\"green\"}},"
                          "{\"key\":\"n\",\"range\":{\"lt\":60}}]}", &len);
    apply_both(sh, ref, index++, c, len);
    c = cmd_upsert(&e.m, &e.rng, 110, 5, "re", &len); /* payload {"i":..,"tag":"re"} */
    apply_both(sh, ref, index++, c, len);
    static const char *const more[] = {
        "{\"must\":[{\"key\":\"n\",\"match\":{\"value\":5000}}]}",
        "{\"must\":[{\"key\":\"n\",\"range\":{\"gte\":100,\"lt\":130}}]}",
        "{\"must\":[{\"key\":\"color\",\"match\":{\"value\":\"green\"}}]}",
    };
    expect_same_filtered(sh, ref, &e.m, filters, nf, 0);
    expect_same_filtered(sh, ref, &e.m, more, 3, 1);
    assert_true(index_points(sh, "flag", NULL) == 600 - 20 - 20 - 3 - 3);

    /* restart: declarations and keys persist */
    close_shard(sh, e.pool);
    sh = open_shard(e.dir, e.pool);
    expect_same_filtered(sh, ref, &e.m, more, 3, 1);
    /* drop: the keys go, results stay right */
    c = cmd_json_only(VX_CMD_DROP_INDEX, "{\"field_name\":\"color\"}", &len);
    assert_int_equal(apply(sh, index, c, len).status, 0);
    assert_true(index_points(sh, "color", NULL) == UINT64_MAX);
    expect_same_filtered(sh, ref, &e.m, filters, 2, 0);

    close_shard(sh, e.pool);
    close_shard(ref, e.pool);
    env_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_search_before_indexing),
        cmocka_unit_test(test_replay_and_delete),
        cmocka_unit_test(test_payload_commands),
        cmocka_unit_test(test_malformed_commands),
        cmocka_unit_test(test_dim_mismatch),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_checkpoint_restart),
        cmocka_unit_test(test_corrupt_checkpoint),
        cmocka_unit_test(test_digests),
        cmocka_unit_test(test_backlog),
        cmocka_unit_test(test_background_recovery),
        cmocka_unit_test(test_background_recovery_cosine),
        cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_close_while_indexing),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_transfer),
        cmocka_unit_test(test_payload_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
