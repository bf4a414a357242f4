/*
 * api.c - request handlers (see api.h).
 *
 * Conventions, from the Qdrant sources the clients are written against:
 * success is {"result": R, "status": "ok", "time": seconds}; failure is
 * {"status": {"error": message}, "time": seconds} with no result; absent
 * fields are omitted, never null; ids are unsigned integers (JSON numbers)
 * or UUIDs (strings), and /v1 also allows other strings; Euclid scores are
 * distances (lower is better), Cosine and Dot scores similarities.
 */
#define _GNU_SOURCE
#include "server/api.h"
#include "server/api_auth.h"
#include "server/fanout.h"
#include "server/rcache.h"
#include "server/fastjson.h"

#include "base/err.h"
#include "base/pointid.h"
#include "server/jbuf.h"
#include "server/metrics.h"
#include "shard/command.h"
#include "shard/filter.h"
#include "shard/jsonnum.h"
#include "shard/pindex.h"
#include "store/store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define VERSION_TEXT "1.18.0"
#define API_ERR_LEN 512

struct vx_api {
    vx_backend be;
    vx_fanout *fan; /* a request's per-shard parts in parallel */
    vx_rcache *cache; /* search results (NULL: off) */
    vx_api_limits lim;
    struct vx_metrics *metrics;
    vx_gate *gate; /* NULL: open */
};

void vx_api_set_gate(vx_api *api, struct vx_gate *gate) { api->gate = gate; }

void vx_api_limits_default(vx_api_limits *l)
{
    l->max_body_bytes = 32u << 20;
    l->max_batch = 10000;
    l->max_dim = 65536;
    l->max_limit = 10000;
    l->max_json_depth = 64;
    l->slow_query_ms = 500;
    l->write_timeout_ms = 60000;
    l->shard_timeout_ms = 0;
    /* no result cache unless the caller sets one: serve answers a search
     * from its own shards in about the time a cache entry costs to keep;
     * the gateway, whose searches fan out over the network, turns it on */
    l->cache_bytes = 0;
    l->cache_ttl_ms = 200;
}

int vx_api_new(const vx_backend *be, const vx_api_limits *lim, struct vx_metrics *metrics, vx_api **out)
{
    vx_api *a = calloc(1, sizeof(*a));
    if (a == NULL) return VX_ENOMEM;
    a->be = *be;
    a->lim = *lim;
    if (vx_fanout_new(16, &a->fan) != 0) {
        free(a);
        return VX_ENOMEM;
    }
    if (vx_rcache_new(lim->cache_bytes, lim->cache_ttl_ms, &a->cache) != 0) {
        vx_fanout_free(a->fan);
        free(a);
        return VX_ENOMEM;
    }
    a->metrics = metrics;
    *out = a;
    return 0;
}

void vx_api_free(vx_api *api)
{
    if (api == NULL) return;
    vx_rcache_free(api->cache);
    vx_fanout_free(api->fan);
    free(api);
}

/* ---- an open collection of the backend (backend.h) ------------------------------------ */

typedef struct acol {
    const vx_backend *be;
    vx_bcol *h;
} acol;

static acol *col_open_why(vx_api *api, const char *name, int *why)
{
    *why = VX_ENOMEM;
    vx_bcol *h = api->be.open(api->be.self, name, why);
    if (h == NULL) return NULL;
    acol *a = malloc(sizeof *a);
    if (a == NULL) {
        api->be.close(h);
        return NULL;
    }
    a->be = &api->be;
    a->h = h;
    return a;
}

static acol *col_open(vx_api *api, const char *name)
{
    int why;
    return col_open_why(api, name, &why);
}

static void col_put(acol *a)
{
    if (a == NULL) return;
    a->be->close(a->h);
    free(a);
}

static const vx_collection_config *col_config(const acol *a) { return a->be->config(a->h); }
static uint32_t col_shards(const acol *a) { return a->be->nshards(a->h); }
static uint32_t col_route(const acol *a, const vx_point_id *id) { return a->be->route(a->h, id); }
const vx_api_limits *vx_api_get_limits(const vx_api *api) { return &api->lim; }

/* ---- the request context and responses ---------------------------------------------- */

typedef struct ctx {
    vx_api *api;
    const vx_api_request *req;
    vx_api_response *res;
    struct timespec t0;
    cJSON *body; /* parsed lazily by need_body */
    /* the query vector, when need_body_vec read it on the fast path: the
     * array node fast_node (left empty in body) stands for fast_vec */
    const cJSON *fast_node;
    float *fast_vec;
    uint32_t fast_n;
    char partial[256]; /* shards missing from a partial search answer */
    const vx_principal *who; /* the authenticated caller (NULL: the API is open) */
} ctx;

/* Since the request began, for the answer's "time". */
static uint64_t elapsed_ns(const ctx *c)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int64_t ns = (int64_t)(t.tv_sec - c->t0.tv_sec) * 1000000000 + (t.tv_nsec - c->t0.tv_nsec);
    return ns > 0 ? (uint64_t)ns : 0;
}

static void set_body(vx_api_response *res, jbuf *b, int status, const char *ctype)
{
    size_t len = 0;
    char *p = jb_take(b, &len);
    if (p == NULL) {
        res->status = 500;
        res->content_type = "application/json";
        res->body = strdup("{\"status\":{\"error\":\"Service internal error: out of memory\"}}");
        res->len = res->body ? strlen(res->body) : 0;
        return;
    }
    res->status = status;
    res->content_type = ctype;
    res->body = p;
    res->len = len;
}

void vx_api_error(vx_api_response *res, int status, const char *msg)
{
    jbuf b;
    jb_init(&b);
    jb_lit(&b, "{\"status\":{\"error\":");
    jb_cstr(&b, msg);
    jb_lit(&b, "},\"time\":0}");
    set_body(res, &b, status, "application/json");
}

static int fail(ctx *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx *c, int status, const char *fmt, ...)
{
    char msg[API_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jbuf b;
    jb_init(&b);
    jb_lit(&b, "{\"status\":{\"error\":");
    jb_cstr(&b, msg);
    jb_lit(&b, "},\"time\":");
    jb_seconds(&b, elapsed_ns(c));
    jb_ch(&b, '}');
    set_body(c->res, &b, status, "application/json");
    return -1;
}

/* Start {"result": ... ; finish with ok_end. */
static void ok_begin(jbuf *b)
{
    jb_init(b);
    jb_lit(b, "{\"result\":");
}

static int ok_end(ctx *c, jbuf *b)
{
    if (c->partial[0]) { /* ?partial=true and some shards did not answer */
        jb_lit(b, ",\"partial\":true,\"missing_shards\":[");
        jb_raw(b, c->partial, strlen(c->partial));
        jb_ch(b, ']');
    }
    jb_lit(b, ",\"status\":\"ok\",\"time\":");
    jb_seconds(b, elapsed_ns(c));
    jb_ch(b, '}');
    set_body(c->res, b, 200, "application/json");
    return 0;
}

static int ok_raw(ctx *c, const char *result)
{
    jbuf b;
    ok_begin(&b);
    jb_lit(&b, result);
    return ok_end(c, &b);
}

/* Map a runtime failure to the status a client expects. */
static int fail_rc(ctx *c, int rc, const char *what)
{
    switch (rc) {
    case VX_ENOTFOUND: return fail(c, 404, "Not found: %s", what);
    case VX_EINVAL:
    case VX_EDIM:
    case VX_ERANGE: return fail(c, 400, "Wrong input: %s", what);
    case VX_EEXISTS: return fail(c, 409, "Wrong input: %s", what);
    case VX_ESTATE: return fail(c, 503, "Service unavailable: %s", what);
    case VX_EFULL: return fail(c, 507, "Insufficient storage: %s", what);
    default: return fail(c, 500, "Service internal error: %s (%s)", what, vx_strerror(rc));
    }
}

/* ---- request bodies ------------------------------------------------------------------- */

/* Nesting depth of a parsed JSON value (objects and arrays count one level
 * each, as brackets do in the text).  Measured on the tree, not the text:
 * cJSON refuses text nested deeper than CJSON_NESTING_LIMIT (1000) itself,
 * so parsing is bounded, and walking the few nodes of a request costs far
 * less than scanning every byte of its numbers.  Stops below limit + 1. */
static uint32_t json_depth(const cJSON *v, uint32_t limit)
{
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) return 0;
    uint32_t max = 0;
    for (const cJSON *ch = v->child; ch != NULL && max <= limit; ch = ch->next) {
        uint32_t d = json_depth(ch, limit);
        if (d > max) max = d;
    }
    return max + 1;
}

/* Parses the body into c->body (required: an object must be there).  With vec_key, a top-level array of numbers
 * under that key is read on the fast path (fastjson.h) into c->fast_vec and
 * cJSON parses the rest; parse_vector knows the stand-in node. */
static int need_body_vec(ctx *c, bool required, const char *vec_key)
{
    const vx_api_request *r = c->req;
    size_t n = r->body_len;
    while (n > 0 && (r->body[n - 1] == ' ' || r->body[n - 1] == '\n' || r->body[n - 1] == '\r' ||
                     r->body[n - 1] == '\t'))
        n--;
    if (n == 0) {
        if (!required) return 0;
        return fail(c, 400, "Bad request: a JSON body is required");
    }
    const char *text = r->body;
    char *copy = NULL;
    if (vec_key != NULL &&
        vx_fast_extract_vector(r->body, n, vec_key, c->api->lim.max_dim, &copy, &c->fast_vec,
                               &c->fast_n) == 0)
        text = copy;
    const char *end = NULL;
    c->body = cJSON_ParseWithLengthOpts(text, n, &end, false);
    if (c->body == NULL || (end && (size_t)(end - text) < n)) {
        size_t at = end ? (size_t)(end - text) : 0;
        cJSON_Delete(c->body);
        c->body = NULL;
        free(copy);
        return fail(c, 400, "Bad request: the body is not valid JSON (near byte %zu)", at);
    }
    if (json_depth(c->body, c->api->lim.max_json_depth) > c->api->lim.max_json_depth) {
        cJSON_Delete(c->body);
        c->body = NULL;
        free(copy);
        return fail(c, 400, "Bad request: JSON nested deeper than %u levels",
                    c->api->lim.max_json_depth);
    }
    if (!cJSON_IsObject(c->body)) {
        free(copy);
        return fail(c, 400, "Bad request: the body must be a JSON object");
    }
    vx_json_attach_literals(c->body, text, n);
    if (copy != NULL) c->fast_node = cJSON_GetObjectItemCaseSensitive(c->body, vec_key);
    free(copy);
    return 0;
}

static int need_body(ctx *c, bool required) { return need_body_vec(c, required, NULL); }

static const cJSON *field(const ctx *c, const char *key)
{
    return c->body ? cJSON_GetObjectItemCaseSensitive(c->body, key) : NULL;
}

static bool present(const cJSON *j) { return j != NULL && !cJSON_IsNull(j); }

/* ---- ids ------------------------------------------------------------------------------------ */

/* A Qdrant id (unsigned integer or UUID); /v1 also accepts other strings. */
static int parse_id(ctx *c, const cJSON *j, vx_point_id *id, bool any_string)
{
    uint64_t u;
    if (vx_json_u64(j, &u)) {
        vx_id_from_uint(id, u);
        return 0;
    }
    if (cJSON_IsNumber(j) && j->valuestring != NULL)
        return fail(c, 400, "Wrong input: %s is not a valid point ID: it does not fit an "
                            "unsigned 64-bit integer", j->valuestring);
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d < 0 || d != floor(d))
            return fail(c, 400, "Wrong input: %g is not a valid point ID: an unsigned integer or "
                                "a UUID", d);
        if (d >= 18446744073709551616.0)
            return fail(c, 400, "Wrong input: %g does not fit an unsigned 64-bit integer", d);
        vx_id_from_uint(id, (uint64_t)d);
        return 0;
    }
    if (cJSON_IsString(j)) {
        const char *s = j->valuestring;
        size_t n = strlen(s);
        if (vx_id_from_uuid_text(id, s, n) == 0) return 0;
        if (any_string && vx_id_from_string(id, s, n) == 0) return 0;
        return fail(c, 400, "Wrong input: value %.80s is not a valid point ID, valid values are "
                            "either an unsigned integer or a UUID%s",
                    s, any_string ? " (or a string of 1 to 255 bytes)" : "");
    }
    return fail(c, 400, "Wrong input: a point ID must be an unsigned integer or a UUID string");
}

/* The id in a URL path: an unsigned integer first, then a UUID. */
static int parse_path_id(const char *s, vx_point_id *id)
{
    char *end;
    if (*s >= '0' && *s <= '9') {
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end == '\0' && errno == 0) {
            vx_id_from_uint(id, v);
            return 0;
        }
    }
    return vx_id_from_uuid_text(id, s, strlen(s));
}

static void write_id(jbuf *b, const vx_point_id *id)
{
    if (vx_id_kind(id) == VX_ID_UINT) {
        jb_u64(b, vx_id_uint(id));
        return;
    }
    char t[VX_ID_TEXT_MAX];
    size_t n = vx_id_format(id, t);
    jb_str(b, t, n);
}

/* ---- vectors ------------------------------------------------------------------------------- */

static int parse_vector(ctx *c, const cJSON *j, uint32_t dim, float *out, const char *what)
{
    if (j != NULL && j == c->fast_node) {
        if (c->fast_n != dim)
            return fail(c, 400, "Wrong input: Vector dimension error: expected dim: %u, got %u",
                        dim, c->fast_n);
        memcpy(out, c->fast_vec, (size_t)dim * sizeof(float));
        return 0;
    }
    if (!cJSON_IsArray(j)) return fail(c, 400, "Wrong input: %s must be an array of numbers", what);
    uint32_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j)
    {
        if (!cJSON_IsNumber(e))
            return fail(c, 400, "Wrong input: %s must contain only numbers", what);
        double d = e->valuedouble;
        if (!isfinite(d) || fabs(d) > FLT_MAX)
            return fail(c, 400, "Wrong input: %s has a value out of the float32 range", what);
        if (n < dim) out[n] = (float)d;
        n++;
    }
    if (n != dim)
        return fail(c, 400, "Wrong input: Vector dimension error: expected dim: %u, got %u", dim,
                    n);
    return 0;
}

/* ---- payload selection ------------------------------------------------------------------------- */

typedef struct selector {
    int mode; /* 0 none, 1 all, 2 include, 3 exclude */
    const cJSON *keys;
} selector;

static int parse_selector(ctx *c, const cJSON *j, bool dflt, selector *s, const char *what)
{
    s->mode = dflt ? 1 : 0;
    s->keys = NULL;
    if (!present(j)) return 0;
    if (cJSON_IsBool(j)) {
        s->mode = cJSON_IsTrue(j) ? 1 : 0;
        return 0;
    }
    const cJSON *list = j;
    s->mode = 2;
    if (cJSON_IsObject(j)) {
        const cJSON *inc = cJSON_GetObjectItemCaseSensitive(j, "include");
        const cJSON *exc = cJSON_GetObjectItemCaseSensitive(j, "exclude");
        if ((inc != NULL) == (exc != NULL))
            return fail(c, 400, "Wrong input: %s must have one of include or exclude", what);
        list = inc ? inc : exc;
        s->mode = inc ? 2 : 3;
    }
    if (!cJSON_IsArray(list)) return fail(c, 400, "Wrong input: bad %s", what);
    const cJSON *e;
    cJSON_ArrayForEach(e, list) if (!cJSON_IsString(e)) return fail(c, 400, "Wrong input: %s keys must be strings", what);
    s->keys = list;
    return 0;
}

static bool key_listed(const cJSON *keys, const char *k)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, keys)
    {
        const char *s = e->valuestring;
        size_t n = strlen(k);
        /* "metadata" selects the key; "metadata.x" selects within it: keep the
         * top-level key (its part is what the client asked for) */
        if (strcmp(s, k) == 0 || (strncmp(s, k, n) == 0 && s[n] == '.')) return true;
    }
    return false;
}

static void write_payload(jbuf *b, const selector *s, const char *text, size_t len)
{
    if (s->mode == 1) {
        if (len == 0) jb_lit(b, "{}");
        else jb_raw(b, text, len);
        return;
    }
    cJSON *p = cJSON_ParseWithLength(text, len);
    jb_ch(b, '{');
    bool first = true;
    const cJSON *e;
    if (cJSON_IsObject(p))
        cJSON_ArrayForEach(e, p)
        {
            bool listed = key_listed(s->keys, e->string);
            if ((s->mode == 2) != listed) continue;
            char *v = cJSON_PrintUnformatted(e);
            if (v == NULL) continue;
            jb_key(b, e->string, !first);
            jb_lit(b, v);
            free(v);
            first = false;
        }
    jb_ch(b, '}');
    cJSON_Delete(p);
}

static void write_vector(jbuf *b, const float *v, uint32_t dim)
{
    jb_ch(b, '[');
    for (uint32_t i = 0; i < dim; i++) {
        if (i) jb_ch(b, ',');
        jb_f32(b, v[i]);
    }
    jb_ch(b, ']');
}

/* ---- filters --------------------------------------------------------------------------------- */

static int parse_filter(ctx *c, const cJSON *j, vx_filter_expr **out)
{
    *out = NULL;
    if (!present(j)) return 0;
    char err[VX_FILTER_ERRMSG_LEN];
    int rc = vx_filter_compile(j, out, err);
    if (rc != 0) return fail(c, 400, "Wrong input: bad filter: %s", err);
    return 0;
}

/* A filter for the backend: compiled (validated here) and as JSON text (what a
 * remote shard compiles again).  NULL when the request has none. */
static int parse_bfilter(ctx *c, const cJSON *j, vx_bfilter **out)
{
    *out = NULL;
    vx_filter_expr *expr;
    if (parse_filter(c, j, &expr) != 0) return -1;
    if (expr == NULL) return 0;
    vx_json_exact_raw((cJSON *)j); /* ids keep their exact u64 digits */
    char *text = cJSON_PrintUnformatted(j);
    vx_bfilter *f = malloc(sizeof *f);
    if (text == NULL || f == NULL) {
        free(text);
        free(f);
        vx_filter_free(expr);
        return fail_rc(c, VX_ENOMEM, "filter");
    }
    f->expr = expr;
    f->json = text;
    *out = f;
    return 0;
}

static void bfilter_free(vx_bfilter *f)
{
    if (f == NULL) return;
    vx_filter_free((vx_filter_expr *)f->expr);
    free((char *)f->json);
    free(f);
}

/* ---- collections ------------------------------------------------------------------------- */

static acol *get_collection(ctx *c, const char *name)
{
    int why;
    acol *col = col_open_why(c->api, name, &why);
    if (col == NULL && why == VX_ESTATE)
        fail(c, 503, "Service unavailable: the cluster's topology cannot be refreshed, so whether "
                     "collection `%s` exists is unknown; retry later", name);
    else if (col == NULL)
        fail(c, 404, "Not found: Collection `%s` doesn't exist!", name);
    return col;
}

static const char *distance_name(vx_metric m)
{
    return m == VX_METRIC_COSINE ? "Cosine" : m == VX_METRIC_IP ? "Dot" : "Euclid";
}

static int h_list_collections(ctx *c)
{
    char **names;
    size_t n;
    if (c->api->be.list(c->api->be.self, &names, &n) != 0) return fail_rc(c, VX_ENOMEM, "list");
    jbuf b;
    ok_begin(&b);
    jb_lit(&b, "{\"collections\":[");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (c->who && !vx_gate_allows(c->who, VX_ROLE_READ, names[i])) { /* not its business */
            free(names[i]);
            continue;
        }
        if (!first) jb_ch(&b, ',');
        first = false;
        jb_lit(&b, "{\"name\":");
        jb_cstr(&b, names[i]);
        jb_ch(&b, '}');
        free(names[i]);
    }
    free(names);
    jb_lit(&b, "]}");
    return ok_end(c, &b);
}

static int h_exists(ctx *c, const char *name)
{
    int why;
    acol *col = col_open_why(c->api, name, &why);
    if (col == NULL && why == VX_ESTATE)
        return fail(c, 503, "Service unavailable: the cluster's topology cannot be refreshed; retry later");
    col_put(col);
    return ok_raw(c, col ? "{\"exists\":true}" : "{\"exists\":false}");
}

static int h_create_collection(ctx *c, const char *name)
{
    if (need_body(c, true) != 0) return -1;
    if (!vx_collection_name_ok(name))
        return fail(c, 400, "Wrong input: collection name `%.100s` is not allowed", name);
    vx_collection_config cfg;
    char err[VX_RT_ERRMSG_LEN];
    if (vx_collection_config_parse(c->body, &cfg, err) != 0)
        return fail(c, 400, "Wrong input: %s", err);
    if (cfg.dim > c->api->lim.max_dim)
        return fail(c, 400, "Wrong input: vectors.size %u is above the limit %u", cfg.dim,
                    c->api->lim.max_dim);
    char *text = c->body ? cJSON_PrintUnformatted(c->body) : NULL;
    int rc = c->api->be.create(c->api->be.self, name, &cfg, text ? text : "{}", err);
    free(text);
    if (rc != 0) return fail_rc(c, rc, err);
    return ok_raw(c, "true");
}

static int h_update_collection(ctx *c, const char *name)
{
    if (need_body(c, false) != 0) return -1;
    acol *col = get_collection(c, name);
    if (col == NULL) return -1;
    vx_collection_config cfg = *col_config(col);
    col_put(col);
    char err[VX_RT_ERRMSG_LEN];
    if (c->body && vx_collection_config_patch(&cfg, c->body, err) != 0)
        return fail(c, 400, "Wrong input: %s", err);
    int rc = c->api->be.update(c->api->be.self, name, &cfg, err);
    if (rc != 0) return fail_rc(c, rc, rc == VX_ENOTFOUND ? "Collection doesn't exist!" : err);
    return ok_raw(c, "true");
}

static int h_delete_collection(ctx *c, const char *name)
{
    char err[VX_RT_ERRMSG_LEN];
    int rc = c->api->be.drop(c->api->be.self, name, err);
    if (rc == VX_ENOTFOUND) return ok_raw(c, "false");
    if (rc != 0) return fail_rc(c, rc, err);
    return ok_raw(c, "true");
}

static int h_get_collection(ctx *c, const char *name)
{
    acol *col = get_collection(c, name);
    if (col == NULL) return -1;
    const vx_collection_config *cfg = col_config(col);
    uint64_t points = 0, indexed = 0, backlog = 0;
    bool optimizing = false;
    /* payload indexes: the same declarations on every shard; points summed */
    vx_shard_pindex_info *pi = NULL;
    size_t npi = 0;
    for (uint32_t i = 0; i < col_shards(col); i++) {
        vx_bshard_stats st;
        int src = col->be->stats(col->h, i, &st);
        if (src != 0) {
            free(pi);
            col_put(col);
            return fail_rc(c, src, "collection info");
        }
        points += st.points;
        backlog += st.backlog;
        indexed += st.indexed;
        optimizing = optimizing || st.optimizing;
        if (pi == NULL) {
            pi = st.pindex;
            npi = st.npindex;
        } else {
            for (size_t a = 0; a < npi; a++)
                for (size_t k = 0; k < st.npindex; k++)
                    if (strcmp(pi[a].field, st.pindex[k].field) == 0) pi[a].points += st.pindex[k].points;
            free(st.pindex);
        }
    }
    jbuf b;
    ok_begin(&b);
    /* yellow while writes wait for the index or a compaction runs, as Qdrant's
     * status is while its optimizers run */
    jb_printf(&b, "{\"status\":\"%s\",\"optimizer_status\":\"ok\"",
              backlog || optimizing ? "yellow" : "green");
    jb_printf(&b, ",\"vectors_count\":%" PRIu64 ",\"indexed_vectors_count\":%" PRIu64
                  ",\"points_count\":%" PRIu64 ",\"segments_count\":%u",
              points, indexed, points, col_shards(col));
    jb_printf(&b, ",\"config\":{\"params\":{\"vectors\":{\"size\":%u,\"distance\":\"%s\"}", cfg->dim,
              distance_name(cfg->metric));
    jb_printf(&b, ",\"shard_number\":%u,\"replication_factor\":%u,\"write_consistency_factor\":%u"
                  ",\"on_disk_payload\":%s}",
              cfg->shard_number, cfg->replication_factor, cfg->write_consistency_factor,
              cfg->on_disk_payload ? "true" : "false");
    jb_printf(&b, ",\"hnsw_config\":{\"m\":%u,\"ef_construct\":%u,\"full_scan_threshold\":%u"
                  ",\"max_indexing_threads\":0,\"on_disk\":false}",
              cfg->hnsw_m, cfg->hnsw_ef_construct, cfg->full_scan_threshold);
    jb_printf(&b, ",\"optimizer_config\":{\"deleted_threshold\":%.6g,\"vacuum_min_vector_number\":%" PRIu64
                  ",\"default_segment_number\":0,\"max_segment_size\":null,\"memmap_threshold\":null"
                  ",\"indexing_threshold\":%" PRIu64 ",\"flush_interval_sec\":5"
                  ",\"max_optimization_threads\":null}",
              cfg->deleted_threshold, cfg->vacuum_min_vector_number, cfg->indexing_threshold);
    jb_lit(&b, ",\"wal_config\":{\"wal_capacity_mb\":32,\"wal_segments_ahead\":0}");
    if (cfg->int8) {
        jb_lit(&b, ",\"quantization_config\":{\"scalar\":{\"type\":\"int8\"");
        if (cfg->quantile > 0) {
            jb_lit(&b, ",\"quantile\":");
            jb_f64(&b, 1.0 - cfg->quantile);
        }
        jb_printf(&b, ",\"always_ram\":%s}}", cfg->always_ram ? "true" : "false");
    } else {
        jb_lit(&b, ",\"quantization_config\":null");
    }
    jb_lit(&b, "},\"payload_schema\":{");
    for (size_t i = 0; i < npi; i++) {
        jb_key(&b, pi[i].field, i > 0);
        jb_printf(&b, "{\"data_type\":\"%s\",\"params\":{\"type\":\"%s\"},\"points\":%" PRIu64 "}",
                  vx_pidx_type_name(pi[i].type), vx_pidx_type_name(pi[i].type), pi[i].points);
    }
    jb_lit(&b, "}}");
    free(pi);
    col_put(col);
    return ok_end(c, &b);
}

/* ---- writes ---------------------------------------------------------------------------- */

/* One command per shard, built from the request, proposed shard by shard. */
typedef struct batch {
    acol *col;
    uint32_t n;
    vx_cmd_buf cmd[VX_RT_MAX_SHARDS];
    bool used[VX_RT_MAX_SHARDS];
} batch;

static void batch_begin(batch *b, acol *col, vx_cmd_type type, bool all_shards)
{
    b->col = col;
    b->n = col_shards(col);
    for (uint32_t i = 0; i < b->n; i++) {
        vx_cmd_begin(&b->cmd[i], type);
        b->used[i] = all_shards;
    }
}

static void batch_discard(batch *b)
{
    for (uint32_t i = 0; i < b->n; i++) vx_cmd_discard(&b->cmd[i]);
}

static const char *arg(ctx *c, const char *key)
{
    return c->req->get_arg ? c->req->get_arg(c->req->arg_ctx, key) : NULL;
}

/* One shard's part of a write: finish its command and propose it. */
typedef struct commit_fan {
    batch *b;
    int timeout_ms;
    int rc[VX_RT_MAX_SHARDS], status[VX_RT_MAX_SHARDS];
    bool encode_failed[VX_RT_MAX_SHARDS];
} commit_fan;

static void commit_part(void *arg, unsigned k)
{
    commit_fan *f = arg;
    batch *b = f->b;
    /* k counts used shards only: find the k-th */
    uint32_t i = 0;
    for (unsigned seen = 0; i < b->n; i++)
        if (b->used[i] && seen++ == k) break;
    uint8_t *data;
    size_t len;
    int rc = vx_cmd_finish(&b->cmd[i], &data, &len);
    f->encode_failed[i] = rc != 0;
    if (rc == 0) {
        char perr[VX_BACKEND_ERRMSG_LEN] = "";
        rc = b->col->be->propose(b->col->h, i, data, len, f->timeout_ms, &f->status[i], perr);
    }
    f->rc[i] = rc;
}

/* Propose every used command, the shards in parallel; all are proposed even
 * if one fails, and the error says which shards did not take their part. */
static int batch_commit(ctx *c, batch *b, uint32_t *applied_status)
{
    int first_rc = 0, bad_status = 0;
    char failed[256] = "";
    size_t flen = 0;
    commit_fan f = {.b = b, .timeout_ms = c->api->lim.write_timeout_ms};
    unsigned used = 0;
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->used[i]) used++;
        else vx_cmd_discard(&b->cmd[i]);
    }
    vx_fanout_run(c->api->fan, used, commit_part, &f);
    for (uint32_t i = 0; i < b->n; i++) {
        if (!b->used[i]) continue;
        if (f.rc[i] != 0) {
            if (first_rc == 0) first_rc = f.rc[i];
            if (f.encode_failed[i]) continue;
            flen += (size_t)snprintf(failed + flen, sizeof failed - flen, "%s%u", flen ? "," : "", i);
            if (flen >= sizeof failed) flen = sizeof failed - 1;
        } else if (f.status[i] != 0 && bad_status == 0) {
            bad_status = f.status[i];
        }
    }
    if (applied_status) *applied_status = (uint32_t)-bad_status;
    if (first_rc != 0) {
        char what[400];
        if (failed[0])
            snprintf(what, sizeof what,
                     "the write did not complete on shard(s) [%s] of %u; the points routed "
                     "there were not written",
                     failed, b->n);
        else
            snprintf(what, sizeof what, "the request could not be encoded");
        return fail_rc(c, first_rc, what);
    }
    if (bad_status == VX_EDIM) return fail(c, 400, "Wrong input: vector dimension mismatch");
    if (bad_status != 0) return fail(c, 400, "Wrong input: %s", vx_strerror(bad_status));
    return 0;
}

static int ok_update(ctx *c)
{
    const char *w = arg(c, "wait");
    bool wait = w && (strcmp(w, "true") == 0 || strcmp(w, "1") == 0);
    static _Atomic uint64_t op_id;
    jbuf b;
    ok_begin(&b);
    jb_printf(&b, "{\"operation_id\":%" PRIu64 ",\"status\":\"%s\"}",
              (uint64_t)atomic_fetch_add(&op_id, 1), wait ? "completed" : "acknowledged");
    return ok_end(c, &b);
}

/* The answer to an upsert: Qdrant's update result, or the seed's count. */
static int upserted(ctx *c, size_t n, bool v1)
{
    if (!v1) return ok_update(c);
    jbuf o;
    jb_init(&o);
    jb_printf(&o, "{\"upserted\":%zu}", n);
    set_body(c->res, &o, 200, "application/json");
    return 0;
}

/* Cosine collections store unit vectors, as Qdrant does. */
static void normalize(float *vec, uint32_t dim)
{
    double norm = 0;
    for (uint32_t d = 0; d < dim; d++) norm += (double)vec[d] * vec[d];
    if (norm > 0)
        for (uint32_t d = 0; d < dim; d++) vec[d] = (float)(vec[d] / sqrt(norm));
}

typedef struct point_in {
    vx_point_id id;
    const cJSON *vector;
    const cJSON *payload;
} point_in;

static int add_points(ctx *c, batch *b, const point_in *pts, size_t n, float *vec, uint32_t dim)
{
    bool cosine = col_config(b->col)->metric == VX_METRIC_COSINE;
    for (size_t i = 0; i < n; i++) {
        if (parse_vector(c, pts[i].vector, dim, vec, "vector") != 0) return -1;
        if (cosine) normalize(vec, dim);
        char *pl = NULL;
        if (present(pts[i].payload)) {
            if (!cJSON_IsObject(pts[i].payload))
                return fail(c, 400, "Wrong input: payload must be a JSON object");
            vx_json_exact_raw((cJSON *)pts[i].payload);
            pl = cJSON_PrintUnformatted(pts[i].payload);
            if (pl == NULL) return fail_rc(c, VX_ENOMEM, "payload");
        }
        uint32_t s = col_route(b->col, &pts[i].id);
        b->used[s] = true;
        vx_cmd_add_point(&b->cmd[s], &pts[i].id, vec, dim, pl ? pl : "{}",
                         pl ? (uint32_t)strlen(pl) : 2);
        free(pl);
    }
    return 0;
}

/* Collect the points of {points:[...]} or {batch:{ids, vectors, payloads}}. */
static int collect_points(ctx *c, bool any_string, point_in **out, size_t *n)
{
    const cJSON *points = field(c, "points"), *bat = field(c, "batch");
    *out = NULL;
    *n = 0;
    if (cJSON_IsArray(points)) {
        size_t cnt = (size_t)cJSON_GetArraySize(points);
        if (cnt > c->api->lim.max_batch)
            return fail(c, 400, "Wrong input: %zu points in one request; the limit is %u", cnt,
                        c->api->lim.max_batch);
        point_in *v = calloc(cnt ? cnt : 1, sizeof(*v));
        if (v == NULL) return fail_rc(c, VX_ENOMEM, "points");
        size_t i = 0;
        const cJSON *p;
        cJSON_ArrayForEach(p, points)
        {
            if (!cJSON_IsObject(p)) {
                free(v);
                return fail(c, 400, "Wrong input: each point must be an object");
            }
            if (parse_id(c, cJSON_GetObjectItemCaseSensitive(p, "id"), &v[i].id, any_string) != 0) {
                free(v);
                return -1;
            }
            v[i].vector = cJSON_GetObjectItemCaseSensitive(p, "vector");
            v[i].payload = cJSON_GetObjectItemCaseSensitive(p, "payload");
            i++;
        }
        *out = v;
        *n = i;
        return 0;
    }
    if (cJSON_IsObject(bat)) {
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(bat, "ids");
        const cJSON *vecs = cJSON_GetObjectItemCaseSensitive(bat, "vectors");
        const cJSON *pls = cJSON_GetObjectItemCaseSensitive(bat, "payloads");
        if (!cJSON_IsArray(ids) || !cJSON_IsArray(vecs) || (present(pls) && !cJSON_IsArray(pls)))
            return fail(c, 400, "Wrong input: batch needs ids and vectors arrays");
        size_t cnt = (size_t)cJSON_GetArraySize(ids);
        if ((size_t)cJSON_GetArraySize(vecs) != cnt ||
            (present(pls) && (size_t)cJSON_GetArraySize(pls) != cnt))
            return fail(c, 400, "Wrong input: batch ids, vectors and payloads differ in length");
        if (cnt > c->api->lim.max_batch)
            return fail(c, 400, "Wrong input: %zu points in one request; the limit is %u", cnt,
                        c->api->lim.max_batch);
        point_in *v = calloc(cnt ? cnt : 1, sizeof(*v));
        if (v == NULL) return fail_rc(c, VX_ENOMEM, "points");
        const cJSON *id = ids->child, *vec = vecs->child, *pl = present(pls) ? pls->child : NULL;
        for (size_t i = 0; i < cnt; i++) {
            if (parse_id(c, id, &v[i].id, any_string) != 0) {
                free(v);
                return -1;
            }
            v[i].vector = vec;
            v[i].payload = pl;
            id = id->next;
            vec = vec->next;
            if (pl) pl = pl->next;
        }
        *out = v;
        *n = cnt;
        return 0;
    }
    return fail(c, 400, "Wrong input: the body needs \"points\": [...] or \"batch\": {...}");
}

/* The common body shape, parsed without cJSON (server/fastjson.h). */
static int upsert_fast(ctx *c, acol *col, vx_fast_points *fp)
{
    const vx_collection_config *cfg = col_config(col);
    uint32_t dim = cfg->dim;
    for (size_t i = 0; i < fp->n; i++)
        if (fp->p[i].dim != dim)
            return fail(c, 400, "Wrong input: Vector dimension error: expected dim: %u, got %u",
                        dim, fp->p[i].dim);
    batch b;
    batch_begin(&b, col, VX_CMD_UPSERT, false);
    for (size_t i = 0; i < fp->n; i++) {
        const vx_fast_point *pt = &fp->p[i];
        float *vec = fp->vec + pt->vec_off;
        if (cfg->metric == VX_METRIC_COSINE) normalize(vec, dim);
        uint32_t sh = col_route(col, &pt->id);
        b.used[sh] = true;
        vx_cmd_add_point(&b.cmd[sh], &pt->id, vec, dim, pt->payload ? pt->payload : "{}",
                         pt->payload ? (uint32_t)pt->payload_len : 2);
    }
    return batch_commit(c, &b, NULL);
}

static int upsert(ctx *c, const char *name, bool v1)
{
    vx_fast_points fp;
    if (vx_fast_parse_points(c->req->body, c->req->body_len, c->api->lim.max_batch,
                             c->api->lim.max_json_depth, &fp) == 0) {
        acol *col = get_collection(c, name);
        int rc = col ? upsert_fast(c, col, &fp) : -1;
        size_t n = fp.n;
        vx_fast_points_free(&fp);
        col_put(col);
        if (rc != 0) return -1;
        return upserted(c, n, v1);
    }
    if (need_body(c, true) != 0) return -1;
    acol *col = get_collection(c, name);
    if (col == NULL) return -1;
    point_in *pts;
    size_t n;
    int rc = collect_points(c, v1, &pts, &n);
    if (rc == 0 && n == 0) rc = fail(c, 400, "Wrong input: no points given");
    uint32_t dim = col_config(col)->dim;
    float *vec = rc == 0 ? malloc((size_t)dim * sizeof(float)) : NULL;
    if (rc == 0 && vec == NULL) rc = fail_rc(c, VX_ENOMEM, "vector");
    batch b;
    if (rc == 0) {
        batch_begin(&b, col, VX_CMD_UPSERT, false);
        rc = add_points(c, &b, pts, n, vec, dim); /* validates everything before any write */
        if (rc == 0) rc = batch_commit(c, &b, NULL);
        else batch_discard(&b);
    }
    free(vec);
    free(pts);
    col_put(col);
    if (rc != 0) return -1;
    return upserted(c, n, v1);
}

/* Ids of {points:[...]} (required = the request has no filter). */
static int collect_ids(ctx *c, const cJSON *arr, vx_point_id **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (!cJSON_IsArray(arr)) return fail(c, 400, "Wrong input: points must be an array of ids");
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    if (cnt > c->api->lim.max_batch)
        return fail(c, 400, "Wrong input: %zu ids in one request; the limit is %u", cnt,
                    c->api->lim.max_batch);
    vx_point_id *v = malloc((cnt ? cnt : 1) * sizeof(*v));
    if (v == NULL) return fail_rc(c, VX_ENOMEM, "ids");
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        if (parse_id(c, e, &v[i], false) != 0) {
            free(v);
            return -1;
        }
        i++;
    }
    *ids = v;
    *n = i;
    return 0;
}

/* A write that targets points by ids or by a filter: delete, payload ops. */
static int targeted_write(ctx *c, const char *name, vx_cmd_type type, const char *json,
                          const char *const *keys, uint32_t nkeys)
{
    acol *col = get_collection(c, name);
    if (col == NULL) return -1;
    const cJSON *points = field(c, "points"), *flt = field(c, "filter");
    int rc = 0;
    if (present(points) == present(flt)) {
        col_put(col);
        return fail(c, 400, "Wrong input: give either \"points\" (ids) or \"filter\"");
    }
    char *ftext = NULL;
    if (present(flt)) { /* validate here: a bad filter is a 400, not a no-op entry */
        vx_filter_expr *f;
        if (parse_filter(c, flt, &f) != 0) {
            col_put(col);
            return -1;
        }
        vx_filter_free(f);
        vx_json_exact_raw((cJSON *)flt); /* has_id keeps its exact u64 digits */
        ftext = cJSON_PrintUnformatted(flt);
    }
    vx_point_id *ids = NULL;
    size_t n = 0;
    if (present(points) && collect_ids(c, points, &ids, &n) != 0) {
        col_put(col);
        return -1;
    }
    batch b;
    vx_cmd_type ctype = type;
    if (ftext && type == VX_CMD_DELETE_IDS) ctype = VX_CMD_DELETE_FILTER;
    batch_begin(&b, col, ctype, ftext != NULL);
    for (uint32_t s = 0; ftext && s < b.n; s++) {
        if (ctype == VX_CMD_DELETE_FILTER)
            vx_cmd_set_json(&b.cmd[s], ftext, (uint32_t)strlen(ftext));
        else
            vx_cmd_set_target_filter(&b.cmd[s], ftext, (uint32_t)strlen(ftext));
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t s = col_route(col, &ids[i]);
        b.used[s] = true;
        vx_cmd_add_id(&b.cmd[s], &ids[i]);
    }
    for (uint32_t s = 0; s < b.n; s++) {
        if (!b.used[s] || ctype == VX_CMD_DELETE_IDS || ctype == VX_CMD_DELETE_FILTER) continue;
        if (json) vx_cmd_set_json(&b.cmd[s], json, (uint32_t)strlen(json));
        else {
            uint32_t lens[1024];
            for (uint32_t k = 0; k < nkeys; k++) lens[k] = (uint32_t)strlen(keys[k]);
            vx_cmd_set_keys(&b.cmd[s], keys, lens, nkeys);
        }
    }
    rc = batch_commit(c, &b, NULL);
    free(ids);
    free(ftext);
    col_put(col);
    return rc != 0 ? -1 : ok_update(c);
}

static int h_delete_points(ctx *c, const char *name)
{
    if (need_body(c, true) != 0) return -1;
    return targeted_write(c, name, VX_CMD_DELETE_IDS, NULL, NULL, 0);
}

static int h_set_payload(ctx *c, const char *name, bool overwrite)
{
    if (need_body(c, true) != 0) return -1;
    const cJSON *p = field(c, "payload");
    if (!cJSON_IsObject(p)) return fail(c, 400, "Wrong input: payload must be a JSON object");
    vx_json_exact_raw((cJSON *)p);
    char *json = cJSON_PrintUnformatted(p);
    if (json == NULL) return fail_rc(c, VX_ENOMEM, "payload");
    int rc = targeted_write(c, name, overwrite ? VX_CMD_OVERWRITE_PAYLOAD : VX_CMD_SET_PAYLOAD,
                            json, NULL, 0);
    free(json);
    return rc;
}

static int h_delete_payload(ctx *c, const char *name)
{
    if (need_body(c, true) != 0) return -1;
    const cJSON *keys = field(c, "keys");
    if (!cJSON_IsArray(keys) || cJSON_GetArraySize(keys) > 1024)
        return fail(c, 400, "Wrong input: keys must be an array of at most 1024 strings");
    const char *k[1024];
    uint32_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, keys)
    {
        if (!cJSON_IsString(e)) return fail(c, 400, "Wrong input: keys must be strings");
        k[n++] = e->valuestring;
    }
    return targeted_write(c, name, VX_CMD_DELETE_PAYLOAD_KEYS, NULL, k, n);
}

static int h_clear_payload(ctx *c, const char *name)
{
    if (need_body(c, true) != 0) return -1;
    return targeted_write(c, name, VX_CMD_OVERWRITE_PAYLOAD, "{}", NULL, 0);
}

/* CREATE_INDEX / DROP_INDEX {field_name, field_schema?} on every shard. */
static int index_command(ctx *c, const char *name, vx_cmd_type type, const char *field,
                         const char *schema)
{
    acol *col = get_collection(c, name);
    if (col == NULL) return -1;
    cJSON *cmd = cJSON_CreateObject();
    cJSON_AddStringToObject(cmd, "field_name", field);
    if (schema) cJSON_AddStringToObject(cmd, "field_schema", schema);
    char *json = cJSON_PrintUnformatted(cmd);
    cJSON_Delete(cmd);
    batch b;
    batch_begin(&b, col, type, true);
    for (uint32_t s = 0; s < b.n; s++) vx_cmd_set_json(&b.cmd[s], json, (uint32_t)strlen(json));
    int rc = batch_commit(c, &b, NULL);
    free(json);
    col_put(col);
    return rc != 0 ? -1 : ok_update(c);
}

static int h_create_index(ctx *c, const char *name)
{
    if (need_body(c, true) != 0) return -1;
    const cJSON *f = field(c, "field_name"), *schema = field(c, "field_schema");
    if (!cJSON_IsString(f) || f->valuestring[0] == '\0' ||
        strlen(f->valuestring) >= VX_PIDX_FIELD_MAX)
        return fail(c, 400, "Wrong input: field_name must be a non-empty string of at most %d "
                            "bytes", VX_PIDX_FIELD_MAX - 1);
    const char *tname = NULL;
    if (cJSON_IsString(schema)) tname = schema->valuestring;
    else if (cJSON_IsObject(schema)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(schema, "type");
        if (cJSON_IsString(t)) tname = t->valuestring;
    }
    if (vx_pidx_type_parse(tname) == 0)
        return fail(c, 400, "Wrong input: field_schema must be keyword, integer, float or bool");
    return index_command(c, name, VX_CMD_CREATE_INDEX, f->valuestring, tname);
}

static int h_delete_index(ctx *c, const char *name, const char *fieldname)
{
    return index_command(c, name, VX_CMD_DROP_INDEX, fieldname, NULL);
}

/* ---- reads of points --------------------------------------------------------------------- */

/* Write a Record: {id, payload?, vector?} (and ScoredPoint fields around it). */
static int write_point(jbuf *b, acol *col, const vx_point_id *id, const selector *ps,
                       bool with_vector, bool known, bool *found)
{
    if (ps->mode == 0 && !with_vector && known) { /* a search hit: nothing to read */
        *found = true;
        return 0;
    }
    uint32_t s = col_route(col, id);
    uint32_t dim = col_config(col)->dim;
    float *vec = with_vector ? malloc((size_t)dim * sizeof(float)) : NULL;
    if (with_vector && vec == NULL) return VX_ENOMEM;
    char *payload = NULL;
    uint64_t version = 0;
    int rc = col->be->get(col->h, s, id, vec, &payload, &version);
    *found = rc == 0;
    if (rc == 0) {
        if (ps->mode != 0) {
            jb_lit(b, ",\"payload\":");
            write_payload(b, ps, payload, strlen(payload));
        }
        if (with_vector) {
            jb_lit(b, ",\"vector\":");
            write_vector(b, vec, dim);
        }
    }
    free(payload);
    free(vec);
    return rc == VX_ENOTFOUND ? 0 : rc;
}

static int h_get_point(ctx *c, const char *name, const char *idtext)
{
    vx_point_id id;
    if (parse_path_id(idtext, &id) != 0)
        return fail(c, 400, "Wrong input: %.80s is not a valid point ID", idtext);
    acol *col = get_collection(c, name);
    if (col == NULL) return -1;
    jbuf b;
    ok_begin(&b);
    jb_lit(&b, "{\"id\":");
    write_id(&b, &id);
    selector all = {1, NULL};
    bool found;
    int rc = write_point(&b, col, &id, &all, true, false, &found);
    col_put(col);
    if (rc != 0 || !found) {
        jb_free(&b);
        if (rc != 0) return fail_rc(c, rc, "reading the point");
        return fail(c, 404, "Not found: Point with id %s does not exists!", idtext);
    }
    jb_ch(&b, '}');
    return ok_end(c, &b);
}

static int h_retrieve(ctx *c, const char *name)
{
    if (need_body(c, true) != 0) return -1;
    vx_point_id *ids;
    size_t n;
    if (collect_ids(c, field(c, "ids"), &ids, &n) != 0) return -1;
    selector ps;
    const cJSON *wv = field(c, "with_vector");
    if (parse_selector(c, field(c, "with_payload"), true, &ps, "with_payload") != 0) {
        free(ids);
        return -1;
    }
    acol *col = get_collection(c, name);
    if (col == NULL) {
        free(ids);
        return -1;
    }
    jbuf b;
    ok_begin(&b);
    jb_ch(&b, '[');
    bool first = true;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        jbuf one;
        jb_init(&one);
        jb_lit(&one, "{\"id\":");
        write_id(&one, &ids[i]);
        bool found;
        rc = write_point(&one, col, &ids[i], &ps, cJSON_IsTrue(wv), false, &found);
        if (rc == 0 && found) {
            jb_ch(&one, '}');
            if (!first) jb_ch(&b, ',');
            jb_raw(&b, one.p, one.len);
            first = false;
        }
        jb_free(&one);
    }
    jb_ch(&b, ']');
    free(ids);
    col_put(col);
    if (rc != 0) {
        jb_free(&b);
        return fail_rc(c, rc, "reading points");
    }
    return ok_end(c, &b);
}

/* Scroll: points in id order across shards (each shard's scan from the
 * offset, merged). */
typedef struct scroll_acc {
    vx_point_id *ids;
    size_t n, cap;
} scroll_acc;

static int id_cmp(const void *x, const void *y)
{
    const vx_point_id *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->b, b->b, n);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int h_scroll(ctx *c, const char *name)
{
    if (need_body(c, false) != 0) return -1;
    uint64_t limit = 10;
    const cJSON *l = field(c, "limit");
    if (present(l)) {
        if (!cJSON_IsNumber(l) || l->valuedouble < 0 || l->valuedouble != floor(l->valuedouble) ||
            l->valuedouble > c->api->lim.max_limit)
            return fail(c, 400, "Wrong input: limit must be an integer in [0, %u]",
                        c->api->lim.max_limit);
        limit = (uint64_t)l->valuedouble;
    }
    vx_point_id start, *startp = NULL;
    const cJSON *off = field(c, "offset");
    if (present(off)) {
        if (parse_id(c, off, &start, false) != 0) return -1;
        startp = &start;
    }
    selector ps;
    if (parse_selector(c, field(c, "with_payload"), true, &ps, "with_payload") != 0) return -1;
    bool wv = cJSON_IsTrue(field(c, "with_vector"));
    vx_bfilter *flt;
    if (parse_bfilter(c, field(c, "filter"), &flt) != 0) return -1;
    acol *col = get_collection(c, name);
    if (col == NULL) {
        bfilter_free(flt);
        return -1;
    }
    uint32_t ns = col_shards(col);
    scroll_acc all = {malloc((limit + 1) * ns * sizeof(vx_point_id) + sizeof(vx_point_id)), 0, 0};
    int rc = all.ids ? 0 : VX_ENOMEM;
    for (uint32_t s = 0; s < ns && rc == 0; s++) {
        size_t got = 0;
        rc = col->be->scan_ids(col->h, s, startp, flt, limit + 1, all.ids + all.n, &got);
        all.n += got;
    }
    bfilter_free(flt);
    if (rc != 0) {
        free(all.ids);
        col_put(col);
        return fail_rc(c, rc, "scrolling");
    }
    qsort(all.ids, all.n, sizeof(vx_point_id), id_cmp);
    jbuf b;
    ok_begin(&b);
    jb_lit(&b, "{\"points\":[");
    size_t shown = 0;
    for (size_t i = 0; i < all.n && shown < limit && rc == 0; i++) {
        jbuf one;
        jb_init(&one);
        jb_lit(&one, "{\"id\":");
        write_id(&one, &all.ids[i]);
        bool found;
        rc = write_point(&one, col, &all.ids[i], &ps, wv, false, &found);
        if (rc == 0 && found) {
            jb_ch(&one, '}');
            if (shown) jb_ch(&b, ',');
            jb_raw(&b, one.p, one.len);
            shown++;
        }
        jb_free(&one);
    }
    jb_lit(&b, "],\"next_page_offset\":");
    if (all.n > limit) write_id(&b, &all.ids[limit]);
    else jb_lit(&b, "null");
    jb_ch(&b, '}');
    free(all.ids);
    col_put(col);
    if (rc != 0) {
        jb_free(&b);
        return fail_rc(c, rc, "scrolling");
    }
    return ok_end(c, &b);
}

static int h_count(ctx *c, const char *name)
{
    if (need_body(c, false) != 0) return -1;
    vx_bfilter *flt;
    if (parse_bfilter(c, field(c, "filter"), &flt) != 0) return -1;
    acol *col = get_collection(c, name);
    if (col == NULL) {
        bfilter_free(flt);
        return -1;
    }
    uint64_t total = 0;
    int rc = 0;
    for (uint32_t s = 0; s < col_shards(col) && rc == 0; s++) {
        uint64_t got = 0;
        rc = col->be->count(col->h, s, flt, &got);
        total += got;
    }
    bfilter_free(flt);
    col_put(col);
    if (rc != 0) return fail_rc(c, rc, "counting");
    jbuf b;
    ok_begin(&b);
    jb_printf(&b, "{\"count\":%" PRIu64 "}", total);
    return ok_end(c, &b);
}

/* ---- search ---------------------------------------------------------------------------------- */

typedef struct search_req {
    float *vector;
    uint32_t limit, offset;
    vx_search_params params;
    vx_bfilter *filter;
    bool has_threshold;
    float threshold;
    selector ps;
    bool with_vector;
    bool consistent; /* linearizable: a barrier on every shard first */
    bool any_replica;    /* a follower may answer (consistency 1) */
    bool allow_partial;  /* ?partial=true: answer without shards that failed */
    int shard_timeout_ms; /* per-shard deadline (0: the backend's) */
    /* mmr (query) */
    bool mmr;
    float diversity;
    uint32_t candidates;
} search_req;

typedef struct scored {
    vx_shard_hit hit;
    float score;
    float *vec; /* mmr */
} scored;

static float score_of(vx_metric m, float distance)
{
    if (m == VX_METRIC_L2) return sqrtf(distance > 0 ? distance : 0);
    return -distance;
}

static int scored_cmp(const void *x, const void *y)
{
    const scored *a = x, *b = y;
    if (a->hit.distance != b->hit.distance) return a->hit.distance < b->hit.distance ? -1 : 1;
    return id_cmp(&a->hit.id, &b->hit.id);
}

static int parse_limit(ctx *c, const cJSON *j, uint32_t dflt, uint32_t *out, const char *what,
                       bool allow_zero)
{
    *out = dflt;
    if (!present(j)) return 0;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) ||
        j->valuedouble < (allow_zero ? 0 : 1) || j->valuedouble > c->api->lim.max_limit)
        return fail(c, 400, "Wrong input: %s must be an integer in [%d, %u]", what,
                    allow_zero ? 0 : 1, c->api->lim.max_limit);
    *out = (uint32_t)j->valuedouble;
    return 0;
}

static int parse_search_common(ctx *c, acol *col, search_req *s)
{
    if (parse_limit(c, field(c, "offset"), 0, &s->offset, "offset", true) != 0) return -1;
    const cJSON *params = field(c, "params");
    s->params.ef = 0;
    if (present(params)) {
        if (!cJSON_IsObject(params)) return fail(c, 400, "Wrong input: params must be an object");
        const cJSON *ef = cJSON_GetObjectItemCaseSensitive(params, "hnsw_ef");
        if (present(ef)) {
            if (!cJSON_IsNumber(ef) || ef->valuedouble < 1 || ef->valuedouble > 100000)
                return fail(c, 400, "Wrong input: params.hnsw_ef must be in [1, 100000]");
            s->params.ef = (uint32_t)ef->valuedouble;
        }
        s->params.exact = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(params, "exact"));
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(params, "quantization");
        const cJSON *ov = cJSON_IsObject(q) ? cJSON_GetObjectItemCaseSensitive(q, "oversampling")
                                            : NULL;
        if (cJSON_IsNumber(ov) && ov->valuedouble >= 1 && ov->valuedouble <= 100)
            s->params.rescore = (uint32_t)ceil(ov->valuedouble * 10);
    }
    const cJSON *th = field(c, "score_threshold");
    if (present(th)) {
        if (!cJSON_IsNumber(th)) return fail(c, 400, "Wrong input: score_threshold must be a number");
        s->has_threshold = true;
        s->threshold = (float)th->valuedouble;
    }
    const cJSON *cons = field(c, "consistency");
    const char *qc = arg(c, "consistency");
    s->consistent = (cJSON_IsString(cons) && strcmp(cons->valuestring, "all") == 0) ||
                    (qc && (strcmp(qc, "all") == 0 || strcmp(qc, "majority") == 0));
    /* consistency 1 (Qdrant: one replica answers): any replica, followers
     * included, may serve the read */
    s->any_replica = !s->consistent && ((cJSON_IsNumber(cons) && cons->valuedouble == 1) ||
                                        (qc && strcmp(qc, "1") == 0));
    /* the per-shard deadline: ?timeout= (seconds, Qdrant's) or the default */
    const char *to = arg(c, "timeout");
    s->shard_timeout_ms = c->api->lim.shard_timeout_ms;
    if (to) {
        char *end;
        double secs = strtod(to, &end);
        if (*end || !(secs > 0) || secs > 3600)
            return fail(c, 400, "Wrong input: timeout must be a number of seconds in (0, 3600]");
        s->shard_timeout_ms = (int)(secs * 1000 + 0.5);
        if (s->shard_timeout_ms < 1) s->shard_timeout_ms = 1;
    }
    const char *pa = arg(c, "partial");
    s->allow_partial = pa && (strcmp(pa, "true") == 0 || strcmp(pa, "1") == 0);
    if (parse_bfilter(c, field(c, "filter"), &s->filter) != 0) return -1;
    (void)col;
    return 0;
}

/* One shard's part of a search (its hits at hits + i * k). */
typedef struct search_fan {
    acol *col;
    search_req *s;
    uint32_t k;
    vx_shard_hit *hits;
    uint32_t got[VX_RT_MAX_SHARDS];
    int rc[VX_RT_MAX_SHARDS];
} search_fan;

static void search_part(void *arg, unsigned i)
{
    search_fan *f = arg;
    search_req *s = f->s;
    int rc = 0;
    if (s->consistent) rc = f->col->be->barrier(f->col->h, i, 10000);
    if (rc == 0) {
        vx_read_opts ro = {s->shard_timeout_ms, s->any_replica};
        rc = f->col->be->search(f->col->h, i, s->vector, f->k, &s->params, s->filter, &ro,
                                f->hits + (size_t)i * f->k, &f->got[i]);
    }
    f->rc[i] = rc;
}

/* Run the search on every shard, in parallel, and merge; *out sorted best
 * first.  A shard that fails or misses its deadline fails the request,
 * unless it allows partial results (then the answer says which shards are
 * missing). */
static int run_search(ctx *c, acol *col, search_req *s, scored **out, size_t *n)
{
    uint32_t ns = col_shards(col);
    const vx_collection_config *cfg = col_config(col);
    uint32_t k = s->mmr ? (s->candidates > s->limit ? s->candidates : s->limit) : s->limit + s->offset;
    if (k == 0) {
        *out = NULL;
        *n = 0;
        return 0;
    }
    /* the shards' hits: on the stack for the usual small k */
    vx_shard_hit small[16];
    size_t nh = (size_t)k * ns;
    vx_shard_hit *hits = nh <= 16 ? small : malloc(nh * sizeof(vx_shard_hit));
    scored *all = malloc(nh * sizeof(scored) + sizeof(scored));
    if (hits == NULL || all == NULL) {
        if (hits != small) free(hits);
        free(all);
        return fail_rc(c, VX_ENOMEM, "search");
    }
    search_fan f = {col, s, k, hits, {0}, {0}};
    vx_fanout_run(c->api->fan, ns, search_part, &f);
    size_t m = 0;
    int rc = 0;
    char failed[256] = "";
    size_t flen = 0;
    for (uint32_t i = 0; i < ns; i++) {
        if (f.rc[i] != 0) {
            if (rc == 0) rc = f.rc[i];
            flen += (size_t)snprintf(failed + flen, sizeof failed - flen, "%s%u", flen ? "," : "", i);
            if (flen >= sizeof failed) flen = sizeof failed - 1;
            continue;
        }
        for (uint32_t j = 0; j < f.got[i]; j++) {
            vx_shard_hit *h = &hits[(size_t)i * k + j];
            all[m++] = (scored){*h, score_of(cfg->metric, h->distance), NULL};
        }
    }
    if (hits != small) free(hits);
    if (rc != 0 && !(s->allow_partial && m > 0 && rc != VX_EINVAL && rc != VX_EDIM)) {
        free(all);
        char what[320];
        snprintf(what, sizeof what, "search: shard(s) [%s] of %u did not answer%s", failed, ns,
                 rc == VX_EIO ? " in time (add ?partial=true to accept the others' results)" : "");
        return fail_rc(c, rc, what);
    }
    if (rc != 0) snprintf(c->partial, sizeof c->partial, "%s", failed); /* marked in the answer */
    qsort(all, m, sizeof(scored), scored_cmp);
    if (s->has_threshold) {
        size_t w = 0;
        for (size_t i = 0; i < m; i++) {
            bool keep = cfg->metric == VX_METRIC_L2 ? all[i].score <= s->threshold
                                                    : all[i].score >= s->threshold;
            if (keep) all[w++] = all[i];
        }
        m = w;
    }
    *out = all;
    *n = m;
    return 0;
}

static float cosine_sim(const float *a, const float *b, uint32_t dim)
{
    double d = 0, na = 0, nb = 0;
    for (uint32_t i = 0; i < dim; i++) {
        d += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    return na > 0 && nb > 0 ? (float)(d / sqrt(na * nb)) : 0.0f;
}

/* Maximal marginal relevance over the candidates: (1 - diversity) * relevance
 * - diversity * (max similarity to what is already chosen). */
static int apply_mmr(ctx *c, acol *col, search_req *s, scored *all, size_t *n)
{
    uint32_t dim = col_config(col)->dim;
    size_t m = *n;
    for (size_t i = 0; i < m; i++) {
        all[i].vec = malloc((size_t)dim * sizeof(float));
        if (all[i].vec == NULL) return fail_rc(c, VX_ENOMEM, "mmr");
        uint32_t sh_i = col_route(col, &all[i].hit.id);
        char *pl = NULL;
        uint64_t ver;
        if (col->be->get(col->h, sh_i, &all[i].hit.id, all[i].vec, &pl, &ver) != 0)
            memset(all[i].vec, 0, (size_t)dim * sizeof(float));
        free(pl);
    }
    size_t want = s->limit < m ? s->limit : m;
    float *rel = malloc((m ? m : 1) * sizeof(float));
    bool *taken = calloc(m ? m : 1, 1);
    scored *picked = malloc((want ? want : 1) * sizeof(scored));
    if (rel == NULL || taken == NULL || picked == NULL) {
        free(rel);
        free(taken);
        free(picked);
        return fail_rc(c, VX_ENOMEM, "mmr");
    }
    for (size_t i = 0; i < m; i++) rel[i] = cosine_sim(s->vector, all[i].vec, dim);
    for (size_t p = 0; p < want; p++) {
        size_t best = SIZE_MAX;
        float best_v = -INFINITY;
        for (size_t i = 0; i < m; i++) {
            if (taken[i]) continue;
            float maxsim = -1.0f;
            for (size_t q = 0; q < p; q++) {
                float sim = cosine_sim(all[i].vec, picked[q].vec, dim);
                if (sim > maxsim) maxsim = sim;
            }
            float v = p == 0 ? rel[i] : (1 - s->diversity) * rel[i] - s->diversity * maxsim;
            if (v > best_v) {
                best_v = v;
                best = i;
            }
        }
        taken[best] = true;
        picked[p] = all[best];
    }
    for (size_t i = 0; i < m; i++)
        if (!taken[i]) free(all[i].vec);
    memcpy(all, picked, want * sizeof(scored));
    *n = want;
    free(rel);
    free(taken);
    free(picked);
    return 0;
}

static void write_scored(jbuf *b, acol *col, search_req *s, scored *all, size_t m,
                         size_t from, bool v1)
{
    bool first = true;
    for (size_t i = from; i < m; i++) {
        size_t mark = b->len; /* a hit deleted since the search is taken back out */
        if (!first) jb_ch(b, ',');
        jb_lit(b, "{\"id\":");
        write_id(b, &all[i].hit.id);
        if (!v1) {
            jb_lit(b, ",\"version\":");
            jb_u64(b, all[i].hit.version);
        }
        jb_lit(b, ",\"score\":");
        jb_f32(b, all[i].score);
        bool found;
        selector ps = v1 ? (selector){1, NULL} : s->ps;
        if (write_point(b, col, &all[i].hit.id, &ps, s->with_vector && !v1, true, &found) == 0 &&
            found) {
            jb_ch(b, '}');
            first = false;
        } else {
            b->len = mark;
        }
    }
}

static int search_common(ctx *c, const char *name, bool query, bool v1)
{
    if (need_body_vec(c, true, query ? "query" : "vector") != 0) return -1;
    acol *col = get_collection(c, name);
    if (col == NULL) return -1;
    const vx_collection_config *cfg = col_config(col);
    search_req s;
    memset(&s, 0, sizeof s);
    s.vector = malloc((size_t)cfg->dim * sizeof(float));
    int rc = s.vector ? 0 : fail_rc(c, VX_ENOMEM, "query");
    const cJSON *vec = NULL;
    if (rc == 0 && query) {
        const cJSON *q = field(c, "query");
        if (cJSON_IsObject(q)) {
            const cJSON *near = cJSON_GetObjectItemCaseSensitive(q, "nearest");
            const cJSON *mmr = cJSON_GetObjectItemCaseSensitive(q, "mmr");
            if (near == NULL)
                rc = fail(c, 400, "Wrong input: only vector queries and {\"nearest\": ...} are "
                                  "supported");
            vec = near;
            if (rc == 0 && present(mmr)) {
                s.mmr = true;
                s.diversity = 0.5f;
                const cJSON *d = cJSON_GetObjectItemCaseSensitive(mmr, "diversity");
                if (present(d)) {
                    if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1)
                        rc = fail(c, 400, "Wrong input: mmr.diversity must be in [0, 1]");
                    else s.diversity = (float)d->valuedouble;
                }
                const cJSON *cl = cJSON_GetObjectItemCaseSensitive(mmr, "candidates_limit");
                if (rc == 0) rc = parse_limit(c, cl, 100, &s.candidates, "mmr.candidates_limit", false);
            }
        } else if (present(q) && !cJSON_IsArray(q)) {
            vx_point_id qid; /* a point id: search with that point's vector */
            if (parse_id(c, q, &qid, false) == 0) {
                char *pl = NULL;
                uint64_t ver;
                uint32_t sh_i = col_route(col, &qid);
                int g = col->be->get(col->h, sh_i, &qid, s.vector, &pl, &ver);
                free(pl);
                if (g != 0) rc = fail(c, 404, "Not found: no point with the query's id");
                vec = NULL;
            } else {
                rc = -1;
            }
        } else {
            vec = q;
            if (!present(q)) rc = fail(c, 400, "Wrong input: query is required");
        }
        if (rc == 0) rc = parse_limit(c, field(c, "limit"), 10, &s.limit, "limit", true);
    } else if (rc == 0) {
        vec = field(c, "vector");
        if (cJSON_IsObject(vec)) vec = cJSON_GetObjectItemCaseSensitive(vec, "vector"); /* named */
        const cJSON *lim = field(c, v1 ? "top_k" : "limit");
        if (!present(lim) && v1) lim = field(c, "limit");
        if (!present(lim) && !v1) rc = fail(c, 400, "Wrong input: limit is required");
        if (rc == 0) rc = parse_limit(c, lim, 10, &s.limit, v1 ? "top_k" : "limit", false);
        if (rc == 0 && !present(vec)) rc = fail(c, 400, "Wrong input: vector is required");
    }
    if (rc == 0 && vec != NULL) rc = parse_vector(c, vec, cfg->dim, s.vector, "query vector");
    if (rc == 0 && !v1) rc = parse_search_common(c, col, &s);
    if (rc == 0 && !v1) {
        rc = parse_selector(c, field(c, "with_payload"), false, &s.ps, "with_payload");
        s.with_vector = cJSON_IsTrue(field(c, "with_vector"));
    }
    /* Without params.hnsw_ef the beam is the collection's ef_construct, as in
     * Qdrant (raised to limit + offset when smaller): a client that leaves it
     * out gets the accuracy it would get there. */
    if (s.params.ef == 0) s.params.ef = cfg->hnsw_ef_construct;
    scored *all = NULL;
    size_t m = 0;
    if (rc == 0) rc = run_search(c, col, &s, &all, &m);
    if (rc == 0 && s.mmr) rc = apply_mmr(c, col, &s, all, &m);
    if (rc == 0) {
        size_t from = s.mmr ? 0 : s.offset;
        if (from > m) from = m;
        size_t to = from + s.limit < m ? from + s.limit : m;
        jbuf b;
        if (v1) {
            jb_init(&b);
            jb_lit(&b, "{\"results\":[");
            write_scored(&b, col, &s, all, to, from, true);
            jb_lit(&b, "]}");
            set_body(c->res, &b, 200, "application/json");
        } else {
            ok_begin(&b);
            jb_lit(&b, query ? "{\"points\":[" : "[");
            write_scored(&b, col, &s, all, to, from, false);
            jb_lit(&b, query ? "]}" : "]");
            ok_end(c, &b);
        }
        if (s.mmr)
            for (size_t i = 0; i < m; i++) free(all[i].vec);
    }
    free(all);
    free(s.vector);
    bfilter_free(s.filter);
    col_put(col);
    return rc;
}

/* ---- service ------------------------------------------------------------------------------------ */

static int h_root(ctx *c)
{
    jbuf b;
    jb_init(&b);
    jb_lit(&b, "{\"title\":\"vectron - vector search engine (qdrant compatible)\",\"version\":\"" VERSION_TEXT
               "\",\"commit\":\"vectron\"}");
    set_body(c->res, &b, 200, "application/json");
    return 0;
}

static int h_text(ctx *c, int status, const char *text)
{
    jbuf b;
    jb_init(&b);
    jb_lit(&b, text);
    set_body(c->res, &b, status, "text/plain; charset=utf-8");
    return 0;
}

/* Collections come and go: their series are written at scrape time from
 * the runtime rather than registered. */
static void collection_metrics(ctx *c, jbuf *b)
{
    char **names;
    size_t n;
    if (c->api->be.list(c->api->be.self, &names, &n) != 0) return;
    static const char *const help[][3] = {
        {"vectron_collection_points", "gauge", "points in the collection"},
        {"vectron_shard_index_queue", "gauge", "applied changes not yet in the shard's index"},
        {"vectron_shard_leader", "gauge", "1 when this node leads the shard's Raft group"},
        {"vectron_shard_applied_index", "gauge", "the shard's last applied Raft index"},
        {"vectron_shard_commit_seconds", "gauge", "Raft commit+apply latency of the last write"},
        {"vectron_shard_deleted_nodes", "gauge", "deleted index nodes awaiting compaction"},
        {"vectron_shard_compacting", "gauge", "1 while the shard's index is being compacted"},
        {"vectron_shard_compactions_total", "counter", "index compactions (vacuums) finished"},
        {"vectron_shard_compacted_slots_total", "counter", "index slots freed by compactions"},
    };
    for (size_t k = 0; k < sizeof help / sizeof help[0]; k++) {
        jb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", help[k][0], help[k][2], help[k][0], help[k][1]);
        for (size_t i = 0; i < n; i++) {
            acol *col = col_open(c->api, names[i]);
            if (col == NULL) continue;
            uint64_t total = 0;
            for (uint32_t sidx = 0; sidx < col_shards(col); sidx++) {
                vx_bshard_stats st;
                if (col->be->stats(col->h, sidx, &st) != 0) continue;
                free(st.pindex);
                total += st.points;
                if (k == 0) continue;
                jb_printf(b, "%s{collection=", help[k][0]);
                jb_cstr(b, names[i]);
                jb_printf(b, ",shard=\"%u\"} ", sidx);
                if (k == 1) jb_u64(b, st.backlog);
                else if (k == 2) jb_lit(b, st.leader ? "1" : "0");
                else if (k == 3) jb_u64(b, st.applied);
                else if (k == 4) jb_f64(b, st.last_commit_seconds);
                else if (k == 5) jb_u64(b, st.deleted);
                else if (k == 6) jb_lit(b, st.optimizing ? "1" : "0");
                else if (k == 7) jb_u64(b, st.vacuums);
                else jb_u64(b, st.reclaimed);
                jb_ch(b, '\n');
            }
            if (k == 0) {
                jb_printf(b, "%s{collection=", help[k][0]);
                jb_cstr(b, names[i]);
                jb_printf(b, "} %" PRIu64 "\n", total);
            }
            col_put(col);
        }
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int h_metrics(ctx *c)
{
    jbuf b;
    jb_init(&b);
    if (c->api->metrics != NULL) {
        size_t len;
        char *text = vx_metrics_render(c->api->metrics, &len);
        if (text == NULL) return fail_rc(c, VX_ENOMEM, "metrics");
        jb_raw(&b, text, len);
        free(text);
    }
    collection_metrics(c, &b);
    if (c->api->cache) {
        vx_rcache_stats st;
        vx_rcache_stats_get(c->api->cache, &st);
        static const char *const names[][2] = {
            {"vectron_cache_hits_total", "searches answered from the result cache"},
            {"vectron_cache_misses_total", "searches computed (leaders of coalesced groups included)"},
            {"vectron_cache_coalesced_total", "searches that shared an identical one in flight"},
            {"vectron_cache_admitted_total", "answers admitted by TinyLFU"},
            {"vectron_cache_rejected_total", "answers TinyLFU kept out"},
            {"vectron_cache_evicted_total", "entries evicted for room"},
            {"vectron_cache_entries", "entries now"},
            {"vectron_cache_bytes", "bytes now"},
        };
        uint64_t v[] = {st.hits, st.misses, st.coalesced, st.admitted, st.rejected, st.evicted, st.entries, st.bytes};
        for (size_t i = 0; i < 8; i++)
            jb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", names[i][0], names[i][1], names[i][0],
                      i < 6 ? "counter" : "gauge", names[i][0], v[i]);
    }
    set_body(c->res, &b, 200, "text/plain; version=0.0.4; charset=utf-8");
    return 0;
}

/* ---- routing --------------------------------------------------------------------------------------- */

#define MAX_SEGS 8

static size_t split(char *path, char **seg)
{
    size_t n = 0;
    char *save = NULL; /* strtok_r: handlers run on many threads at once */
    for (char *p = strtok_r(path, "/", &save); p && n < MAX_SEGS; p = strtok_r(NULL, "/", &save))
        seg[n++] = p;
    return n;
}

static bool is(const char *a, const char *b) { return strcmp(a, b) == 0; }

static int route(ctx *c, const char *m, char **s, size_t n)
{
    vx_api_response *r = c->res;
#define ROUTE(name) (r->route = (name))
    if (n == 0 && is(m, "GET")) return ROUTE("root"), h_root(c);
    if (n == 1 && is(m, "GET") && (is(s[0], "healthz") || is(s[0], "livez")))
        return ROUTE("health"), h_text(c, 200, "healthz check passed");
    if (n == 1 && is(m, "GET") && is(s[0], "readyz")) {
        ROUTE("health");
        return c->api->be.ready(c->api->be.self) ? h_text(c, 200, "all shards are ready")
                                            : h_text(c, 503, "some shards are not ready");
    }
    if (n == 1 && is(m, "GET") && is(s[0], "metrics")) return ROUTE("metrics"), h_metrics(c);
    bool v1 = n >= 1 && is(s[0], "v1");
    if (v1) {
        s++;
        n--;
        if (n == 3 && is(s[0], "collections") && is(s[2], "points") && is(m, "POST"))
            return ROUTE("v1_upsert"), upsert(c, s[1], true);
        if (n == 4 && is(s[0], "collections") && is(s[2], "points") && is(s[3], "search") &&
            is(m, "POST"))
            return ROUTE("v1_search"), search_common(c, s[1], false, true);
        /* the rest of /v1 is the Qdrant API under the prefix */
    }
    if (n < 1 || !is(s[0], "collections")) return ROUTE("unknown"), fail(c, 404, "Not found: no route %s %s", m, c->req->path);
    if (n == 1 && is(m, "GET")) return ROUTE("list_collections"), h_list_collections(c);
    if (n == 2) {
        if (is(m, "GET")) return ROUTE("get_collection"), h_get_collection(c, s[1]);
        if (is(m, "PUT")) return ROUTE("create_collection"), h_create_collection(c, s[1]);
        if (is(m, "PATCH")) return ROUTE("update_collection"), h_update_collection(c, s[1]);
        if (is(m, "DELETE")) return ROUTE("delete_collection"), h_delete_collection(c, s[1]);
    }
    if (n == 3 && is(s[2], "exists") && is(m, "GET")) return ROUTE("exists"), h_exists(c, s[1]);
    if (n == 3 && is(s[2], "index") && is(m, "PUT")) return ROUTE("create_index"), h_create_index(c, s[1]);
    if (n == 4 && is(s[2], "index") && is(m, "DELETE"))
        return ROUTE("delete_index"), h_delete_index(c, s[1], s[3]);
    if (n == 3 && is(s[2], "points")) {
        if (is(m, "PUT")) return ROUTE("upsert"), upsert(c, s[1], false);
        if (is(m, "POST")) return ROUTE("retrieve"), h_retrieve(c, s[1]);
    }
    if (n == 4 && is(s[2], "points")) {
        const char *op = s[3];
        if (is(m, "POST") && is(op, "search")) return ROUTE("search"), search_common(c, s[1], false, false);
        if (is(m, "POST") && is(op, "query")) return ROUTE("query"), search_common(c, s[1], true, false);
        if (is(m, "POST") && is(op, "scroll")) return ROUTE("scroll"), h_scroll(c, s[1]);
        if (is(m, "POST") && is(op, "count")) return ROUTE("count"), h_count(c, s[1]);
        if (is(m, "POST") && is(op, "delete")) return ROUTE("delete_points"), h_delete_points(c, s[1]);
        if (is(m, "POST") && is(op, "payload")) return ROUTE("set_payload"), h_set_payload(c, s[1], false);
        if (is(m, "PUT") && is(op, "payload")) return ROUTE("overwrite_payload"), h_set_payload(c, s[1], true);
        if (is(m, "GET") && !is(op, "search") && !is(op, "query") && !is(op, "scroll") &&
            !is(op, "count") && !is(op, "delete") && !is(op, "payload"))
            return ROUTE("get_point"), h_get_point(c, s[1], op);
    }
    if (n == 5 && is(s[2], "points") && is(s[3], "payload") && is(m, "POST")) {
        if (is(s[4], "delete")) return ROUTE("delete_payload"), h_delete_payload(c, s[1]);
        if (is(s[4], "clear")) return ROUTE("clear_payload"), h_clear_payload(c, s[1]);
    }
#undef ROUTE
    r->route = "unknown";
    return fail(c, 404, "Not found: no route %s %s", m, c->req->path);
}

/* The collection a request is about and whether it is a search (cached)
 * or a change (invalidates the collection's cached results). */
static const char *classify(const vx_api_request *req, char **seg, size_t n, bool *search, bool *change)
{
    *search = *change = false;
    size_t o = n >= 1 && is(seg[0], "v1") ? 1 : 0;
    if (n < o + 2 || !is(seg[o], "collections")) return NULL;
    const char *m = req->method;
    if (n >= o + 4 && is(seg[o + 2], "points") && is(m, "POST") &&
        (is(seg[o + 3], "search") || is(seg[o + 3], "query")) && n == o + 4)
        *search = true;
    else if (!is(m, "GET") && !(n == o + 4 && is(m, "POST") && (is(seg[o + 3], "scroll") || is(seg[o + 3], "count"))) &&
             !(n == o + 3 && is(m, "POST") && is(seg[o + 2], "points")) /* retrieve */)
        *change = true;
    if (o == 1 && n == 3 && is(seg[2], "points") && is(m, "POST")) *change = true; /* v1 upsert */
    return seg[o + 1];
}

/* The cache key: the route, the arguments that change the answer, the body. */
static char *cache_key(const vx_api_request *req, size_t *len)
{
    static const char *const args[] = {"consistency", "timeout", "partial"};
    size_t n = strlen(req->method) + strlen(req->path) + req->body_len + 8;
    const char *v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = req->get_arg ? req->get_arg(req->arg_ctx, args[i]) : NULL;
        n += (v[i] ? strlen(v[i]) : 0) + 2;
    }
    char *k = malloc(n), *p = k;
    if (k == NULL) return NULL;
    p += sprintf(p, "%s %s", req->method, req->path);
    for (int i = 0; i < 3; i++) p += sprintf(p, "\n%s", v[i] ? v[i] : "");
    *p++ = '\n';
    memcpy(p, req->body, req->body_len);
    *len = (size_t)(p - k) + req->body_len;
    return k;
}

int vx_api_headers(vx_api *api, const vx_api_request *req, vx_api_response *res, vx_principal *who)
{
    memset(res, 0, sizeof(*res));
    memset(who, 0, sizeof *who);
    if (api->gate == NULL || !vx_gate_enabled(api->gate)) return VX_API_UNGUARDED;
    char *path = strdup(req->path);
    if (path == NULL) return VX_API_OPEN; /* the full check runs with the (small) body */
    char *seg[MAX_SEGS];
    size_t n = split(path, seg);
    int r = n < MAX_SEGS ? vx_api_gate_headers(api->gate, req, seg, n, res, who) : VX_API_OPEN;
    free(path);
    if (r == VX_API_REFUSED && res->route == NULL) res->route = "auth_refused";
    return r;
}

void vx_api_handle(vx_api *api, const vx_api_request *req, vx_api_response *res)
{
    memset(res, 0, sizeof(*res));
    ctx c = {.api = api, .req = req, .res = res};
    clock_gettime(CLOCK_MONOTONIC, &c.t0);
    size_t plen = strlen(req->path);
    char *path = malloc(plen + 1);
    if (path == NULL) {
        vx_api_error(res, 500, "Service internal error: out of memory");
        return;
    }
    memcpy(path, req->path, plen + 1);
    char *seg[MAX_SEGS];
    size_t n = split(path, seg);
    vx_principal who;
    memset(&who, 0, sizeof who);
    if (n < MAX_SEGS && api->gate && vx_gate_enabled(api->gate)) {
        if (vx_api_gate(api->gate, &api->be, req, seg, n, res, &who)) {
            free(path);
            return;
        }
        c.who = &who;
    }
    if (n == MAX_SEGS) {
        res->route = "unknown";
        fail(&c, 404, "Not found: no route %s %s", req->method, req->path);
    } else {
        bool search = false, change = false;
        const char *coll = api->cache ? classify(req, seg, n, &search, &change) : NULL;
        char *key = NULL;
        size_t klen = 0;
        vx_rcache_token *tok = NULL;
        vx_rcache_outcome oc = VX_RC_MISS;
        char cname[512];
        if (coll) snprintf(cname, sizeof cname, "%s", coll);
        if (coll && search && (key = cache_key(req, &klen)) != NULL) {
            char *body;
            size_t blen;
            oc = vx_rcache_lookup(api->cache, cname, key, klen, &body, &blen, &tok);
            if (oc == VX_RC_HIT) {
                res->route = "search_cached";
                res->status = 200;
                res->content_type = "application/json";
                res->body = body;
                res->len = blen;
            }
        }
        if (oc != VX_RC_HIT) route(&c, req->method, seg, n);
        if (oc == VX_RC_LEAD)
            vx_rcache_finish(api->cache, tok, res->status == 200 && !c.partial[0] ? res->body : NULL, res->len);
        if (coll && change) vx_rcache_invalidate(api->cache, cname); /* after the write completed */
        free(key);
    }
    cJSON_Delete(c.body);
    free(c.fast_vec);
    free(path);
    vx_principal_clear(&who);
    if (res->body == NULL) vx_api_error(res, 500, "Service internal error: no response");
}
