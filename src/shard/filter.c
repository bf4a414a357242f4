/*
 * filter.c - compile and evaluate payload filters (see filter.h).
 */
#include "shard/filter.h"
#include "shard/filter_internal.h"
#include "shard/jsonnum.h"

#include "base/err.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16
#define MAX_CONDS 1024
#define MAX_VALUES 1024

typedef struct compiler {
    char *err;
    size_t nconds;
} compiler;

static int cerr(compiler *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cerr(compiler *c, const char *fmt, ...)
{
    if (c->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, VX_FILTER_ERRMSG_LEN, fmt, ap);
        va_end(ap);
    }
    return VX_EINVAL;
}

static void node_free(node *n);

static void list_free(node_list *l)
{
    for (size_t i = 0; i < l->n; i++) node_free(l->v[i]);
    free(l->v);
}

static void node_free(node *n)
{
    if (n == NULL) return;
    for (size_t i = 0; i < n->npath; i++) free(n->path[i]);
    free(n->path);
    list_free(&n->must);
    list_free(&n->should);
    list_free(&n->must_not);
    list_free(&n->min_should);
    for (size_t i = 0; i < n->nvalues; i++) free(n->values[i].s);
    free(n->values);
    free(n->ids);
    free(n);
}

static int parse_path(compiler *c, node *n, const cJSON *key)
{
    if (!cJSON_IsString(key) || key->valuestring[0] == '\0')
        return cerr(c, "\"key\" must be a non-empty string");
    const char *s = key->valuestring;
    size_t parts = 1;
    for (const char *p = s; *p; p++) parts += *p == '.';
    n->path = calloc(parts, sizeof(char *));
    if (n->path == NULL) return VX_ENOMEM;
    const char *start = s;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t len = (size_t)(p - start);
            /* "a[].b" is accepted: arrays are searched anyway */
            if (len >= 2 && start[len - 2] == '[' && start[len - 1] == ']') len -= 2;
            if (len == 0) return cerr(c, "key \"%s\" has an empty part", s);
            n->path[n->npath] = strndup(start, len);
            if (n->path[n->npath] == NULL) return VX_ENOMEM;
            n->npath++;
            if (*p == '\0') break;
            start = p + 1;
        }
    }
    return 0;
}

static int parse_value(compiler *c, const cJSON *j, value *v)
{
    if (cJSON_IsString(j)) {
        v->kind = V_STRING;
        v->s = strdup(j->valuestring);
        return v->s ? 0 : VX_ENOMEM;
    }
    if (cJSON_IsBool(j)) {
        v->kind = V_BOOL;
        v->b = cJSON_IsTrue(j);
        return 0;
    }
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (!isfinite(d) || d != floor(d) || fabs(d) > 9.007199254740992e15)
            return cerr(c, "match values must be strings, integers or booleans");
        v->kind = V_INT;
        v->i = (long long)d;
        return 0;
    }
    return cerr(c, "match values must be strings, integers or booleans");
}

static int parse_values(compiler *c, const cJSON *arr, node *n, const char *what)
{
    if (!cJSON_IsArray(arr)) return cerr(c, "\"%s\" must be an array", what);
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    if (cnt > MAX_VALUES) return cerr(c, "\"%s\" has more than %d values", what, MAX_VALUES);
    n->values = calloc(cnt ? cnt : 1, sizeof(value));
    if (n->values == NULL) return VX_ENOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        int rc = parse_value(c, it, &n->values[n->nvalues]);
        if (rc) return rc;
        n->nvalues++;
    }
    return 0;
}

static int compile_cond(compiler *c, const cJSON *j, int depth, node **out);

static int compile_list(compiler *c, const cJSON *arr, int depth, node_list *l, const char *what)
{
    if (arr == NULL) return 0;
    if (cJSON_IsObject(arr)) { /* Qdrant accepts a single condition too */
        l->v = calloc(1, sizeof(node *));
        if (l->v == NULL) return VX_ENOMEM;
        l->n = 1; /* counted even on failure: list_free releases the partial node */
        return compile_cond(c, arr, depth, &l->v[0]);
    }
    if (!cJSON_IsArray(arr)) return cerr(c, "\"%s\" must be an array of conditions", what);
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    l->v = calloc(cnt ? cnt : 1, sizeof(node *));
    if (l->v == NULL) return VX_ENOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        int rc = compile_cond(c, it, depth, &l->v[l->n]);
        l->n++; /* counted even on failure: list_free releases the partial node */
        if (rc) return rc;
    }
    return 0;
}

static int compile_filter(compiler *c, const cJSON *j, int depth, node *n)
{
    n->kind = N_FILTER;
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        const char *k = it->string;
        if (strcmp(k, "must") && strcmp(k, "should") && strcmp(k, "must_not") &&
            strcmp(k, "min_should"))
            return cerr(c, "unknown filter clause \"%s\"", k);
    }
    int rc = compile_list(c, cJSON_GetObjectItemCaseSensitive(j, "must"), depth, &n->must, "must");
    if (rc == 0)
        rc = compile_list(c, cJSON_GetObjectItemCaseSensitive(j, "should"), depth, &n->should,
                          "should");
    if (rc == 0)
        rc = compile_list(c, cJSON_GetObjectItemCaseSensitive(j, "must_not"), depth,
                          &n->must_not, "must_not");
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "min_should");
    if (rc == 0 && ms != NULL && !cJSON_IsNull(ms)) {
        if (!cJSON_IsObject(ms)) return cerr(c, "\"min_should\" must be an object");
        const cJSON *conds = cJSON_GetObjectItemCaseSensitive(ms, "conditions");
        const cJSON *mc = cJSON_GetObjectItemCaseSensitive(ms, "min_count");
        if (!cJSON_IsArray(conds)) return cerr(c, "\"min_should.conditions\" must be an array");
        if (!cJSON_IsNumber(mc) || mc->valuedouble < 0 || mc->valuedouble != floor(mc->valuedouble))
            return cerr(c, "\"min_should.min_count\" must be a non-negative integer");
        if (mc->valuedouble > MAX_CONDS)
            return cerr(c, "\"min_should.min_count\" is above %d", MAX_CONDS);
        rc = compile_list(c, conds, depth, &n->min_should, "min_should.conditions");
        n->min_count = (size_t)mc->valuedouble;
    }
    return rc;
}

static int compile_cond(compiler *c, const cJSON *j, int depth, node **out)
{
    if (depth > MAX_DEPTH) return cerr(c, "filter nested deeper than %d", MAX_DEPTH);
    if (++c->nconds > MAX_CONDS) return cerr(c, "filter has more than %d conditions", MAX_CONDS);
    if (!cJSON_IsObject(j)) return cerr(c, "a condition must be an object");
    node *n = calloc(1, sizeof(*n));
    if (n == NULL) return VX_ENOMEM;
    *out = n;
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(j, "key");
    const cJSON *has_id = cJSON_GetObjectItemCaseSensitive(j, "has_id");
    const cJSON *is_empty = cJSON_GetObjectItemCaseSensitive(j, "is_empty");
    const cJSON *is_null = cJSON_GetObjectItemCaseSensitive(j, "is_null");
    if (key != NULL) {
        int rc = parse_path(c, n, key);
        if (rc) return rc;
        const cJSON *match = cJSON_GetObjectItemCaseSensitive(j, "match");
        const cJSON *range = cJSON_GetObjectItemCaseSensitive(j, "range");
        if ((match != NULL) == (range != NULL))
            return cerr(c, "condition on \"%s\" needs exactly one of \"match\" or \"range\"",
                        key->valuestring);
        if (match != NULL) {
            if (!cJSON_IsObject(match)) return cerr(c, "\"match\" must be an object");
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(match, "value");
            const cJSON *any = cJSON_GetObjectItemCaseSensitive(match, "any");
            const cJSON *except = cJSON_GetObjectItemCaseSensitive(match, "except");
            if ((v != NULL) + (any != NULL) + (except != NULL) != 1)
                return cerr(c, "\"match\" needs exactly one of \"value\", \"any\", \"except\"");
            if (v != NULL) {
                n->kind = N_MATCH;
                n->values = calloc(1, sizeof(value));
                if (n->values == NULL) return VX_ENOMEM;
                rc = parse_value(c, v, &n->values[0]);
                if (rc == 0) n->nvalues = 1;
                return rc;
            }
            n->kind = any ? N_MATCH : N_EXCEPT;
            return parse_values(c, any ? any : except, n, any ? "any" : "except");
        }
        if (!cJSON_IsObject(range)) return cerr(c, "\"range\" must be an object");
        n->kind = N_RANGE;
        const cJSON *it;
        cJSON_ArrayForEach(it, range)
        {
            if (cJSON_IsNull(it)) continue;
            if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
                return cerr(c, "range bound \"%s\" must be a finite number", it->string);
            double d = it->valuedouble;
            if (!strcmp(it->string, "gt")) n->has_gt = true, n->gt = d;
            else if (!strcmp(it->string, "gte")) n->has_gte = true, n->gte = d;
            else if (!strcmp(it->string, "lt")) n->has_lt = true, n->lt = d;
            else if (!strcmp(it->string, "lte")) n->has_lte = true, n->lte = d;
            else return cerr(c, "unknown range bound \"%s\"", it->string);
        }
        return 0;
    }
    if (is_empty != NULL || is_null != NULL) {
        const cJSON *o = is_empty ? is_empty : is_null;
        n->kind = is_empty ? N_IS_EMPTY : N_IS_NULL;
        if (!cJSON_IsObject(o)) return cerr(c, "\"%s\" must be an object with a \"key\"",
                                            is_empty ? "is_empty" : "is_null");
        return parse_path(c, n, cJSON_GetObjectItemCaseSensitive(o, "key"));
    }
    if (has_id != NULL) {
        n->kind = N_HAS_ID;
        if (!cJSON_IsArray(has_id)) return cerr(c, "\"has_id\" must be an array of ids");
        size_t cnt = (size_t)cJSON_GetArraySize(has_id);
        if (cnt > MAX_VALUES) return cerr(c, "\"has_id\" has more than %d ids", MAX_VALUES);
        n->ids = calloc(cnt ? cnt : 1, sizeof(vx_point_id));
        if (n->ids == NULL) return VX_ENOMEM;
        const cJSON *it;
        cJSON_ArrayForEach(it, has_id)
        {
            vx_point_id *id = &n->ids[n->nids];
            uint64_t u;
            if (vx_json_u64(it, &u))
                vx_id_from_uint(id, u);
            else if (!cJSON_IsString(it) ||
                     vx_id_from_uuid_text(id, it->valuestring, strlen(it->valuestring)) != 0)
                return cerr(c, "\"has_id\" entries must be unsigned integers or UUIDs");
            n->nids++;
        }
        return 0;
    }
    return compile_filter(c, j, depth + 1, n);
}

int vx_filter_compile(const cJSON *json, vx_filter_expr **out, char *errbuf)
{
    compiler c = {.err = errbuf};
    if (!cJSON_IsObject(json)) return cerr(&c, "a filter must be a JSON object");
    vx_filter_expr *f = calloc(1, sizeof(*f));
    if (f == NULL) return VX_ENOMEM;
    f->root = calloc(1, sizeof(node));
    if (f->root == NULL) {
        free(f);
        return VX_ENOMEM;
    }
    int rc = compile_filter(&c, json, 1, f->root);
    if (rc != 0) {
        vx_filter_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

/* Parse exactly one JSON value: text after it (but whitespace) is an error. */
static cJSON *parse_exact(const char *text, size_t len)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (j == NULL) return NULL;
    vx_json_attach_literals(j, text, len);
    for (const char *p = end; p != NULL && p < text + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            cJSON_Delete(j);
            return NULL;
        }
    }
    return j;
}

int vx_filter_compile_text(const char *text, size_t len, vx_filter_expr **out, char *errbuf)
{
    cJSON *j = parse_exact(text, len);
    if (j == NULL) {
        compiler c = {.err = errbuf};
        return cerr(&c, "filter is not valid JSON");
    }
    int rc = vx_filter_compile(j, out, errbuf);
    cJSON_Delete(j);
    return rc;
}

void vx_filter_free(vx_filter_expr *f)
{
    if (f == NULL) return;
    node_free(f->root);
    free(f);
}

/* ---- evaluation ---------------------------------------------------------------------- */

typedef bool (*leaf_fn)(const node *n, const cJSON *v, void *acc);

/* Visit every value at path[i..] below j (arrays searched element-wise);
 * stops early when fn returns true. */
static bool visit(const node *n, const cJSON *j, size_t i, leaf_fn fn, void *acc)
{
    if (j == NULL) return false;
    if (i == n->npath) {
        if (cJSON_IsArray(j)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, j) if (fn(n, it, acc)) return true;
            return false;
        }
        return fn(n, j, acc);
    }
    if (cJSON_IsArray(j)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, j) if (visit(n, it, i, fn, acc)) return true;
        return false;
    }
    if (!cJSON_IsObject(j)) return false;
    return visit(n, cJSON_GetObjectItemCaseSensitive(j, n->path[i]), i + 1, fn, acc);
}

static bool value_eq(const value *v, const cJSON *j)
{
    switch (v->kind) {
    case V_STRING:
        return cJSON_IsString(j) && strcmp(j->valuestring, v->s) == 0;
    case V_BOOL:
        return cJSON_IsBool(j) && cJSON_IsTrue(j) == v->b;
    case V_INT:
        return cJSON_IsNumber(j) && j->valuedouble == (double)v->i;
    }
    return false;
}

static bool leaf_match(const node *n, const cJSON *v, void *acc)
{
    (void)acc;
    for (size_t i = 0; i < n->nvalues; i++)
        if (value_eq(&n->values[i], v)) return true;
    return false;
}

typedef struct except_acc {
    bool seen, hit;
} except_acc;

static bool leaf_except(const node *n, const cJSON *v, void *acc)
{
    except_acc *a = acc;
    if (cJSON_IsNull(v)) return false;
    a->seen = true;
    if (leaf_match(n, v, NULL)) {
        a->hit = true;
        return true; /* stop: one value in the list fails "except" */
    }
    return false;
}

static bool leaf_range(const node *n, const cJSON *v, void *acc)
{
    (void)acc;
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    return (!n->has_gt || d > n->gt) && (!n->has_gte || d >= n->gte) && (!n->has_lt || d < n->lt) &&
           (!n->has_lte || d <= n->lte);
}

static bool leaf_nonempty(const node *n, const cJSON *v, void *acc)
{
    (void)n;
    (void)acc;
    return !cJSON_IsNull(v);
}

/* The value at the exact path (no array search), for is_null. */
static const cJSON *at_path(const node *n, const cJSON *j)
{
    for (size_t i = 0; j != NULL && i < n->npath; i++)
        j = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, n->path[i]) : NULL;
    return j;
}

static bool eval_node(const node *n, const vx_point_id *id, const cJSON *p);

static bool eval_filter(const node *n, const vx_point_id *id, const cJSON *p)
{
    for (size_t i = 0; i < n->must.n; i++)
        if (!eval_node(n->must.v[i], id, p)) return false;
    for (size_t i = 0; i < n->must_not.n; i++)
        if (eval_node(n->must_not.v[i], id, p)) return false;
    if (n->should.n > 0) {
        bool any = false;
        for (size_t i = 0; i < n->should.n && !any; i++) any = eval_node(n->should.v[i], id, p);
        if (!any) return false;
    }
    if (n->min_should.n > 0 || n->min_count > 0) {
        size_t hits = 0;
        for (size_t i = 0; i < n->min_should.n && hits < n->min_count; i++)
            hits += eval_node(n->min_should.v[i], id, p);
        if (hits < n->min_count) return false;
    }
    return true;
}

static bool eval_node(const node *n, const vx_point_id *id, const cJSON *p)
{
    switch (n->kind) {
    case N_FILTER:
        return eval_filter(n, id, p);
    case N_MATCH:
        return visit(n, p, 0, leaf_match, NULL);
    case N_EXCEPT: {
        except_acc a = {0};
        visit(n, p, 0, leaf_except, &a);
        return a.seen && !a.hit;
    }
    case N_RANGE:
        return visit(n, p, 0, leaf_range, NULL);
    case N_IS_EMPTY:
        return !visit(n, p, 0, leaf_nonempty, NULL);
    case N_IS_NULL: {
        const cJSON *v = at_path(n, p);
        return v != NULL && cJSON_IsNull(v);
    }
    case N_HAS_ID:
        for (size_t i = 0; i < n->nids; i++)
            if (id != NULL && vx_id_equal(&n->ids[i], id)) return true;
        return false;
    }
    return false;
}

bool vx_filter_eval(const vx_filter_expr *f, const vx_point_id *id, const cJSON *payload)
{
    /* a payload is an object; anything else is treated as {} */
    return eval_node(f->root, id, cJSON_IsObject(payload) ? payload : NULL);
}

bool vx_filter_eval_text(const vx_filter_expr *f, const vx_point_id *id, const char *payload,
                         size_t len)
{
    cJSON *p = len ? parse_exact(payload, len) : NULL;
    bool r = eval_node(f->root, id, cJSON_IsObject(p) ? p : NULL);
    cJSON_Delete(p);
    return r;
}
