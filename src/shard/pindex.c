/*
 * pindex.c - payload indexes (see pindex.h).
 */
#include "shard/pindex.h"

#include "base/err.h"
#include "shard/filter_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define KEY_MAX 511
#define KW_INLINE 100
#define DEF_PREFIX "pidx:"

int vx_pidx_type_parse(const char *name)
{
    if (name == NULL) return 0;
    if (strcmp(name, "keyword") == 0) return VX_PIDX_KEYWORD;
    if (strcmp(name, "integer") == 0) return VX_PIDX_INTEGER;
    if (strcmp(name, "float") == 0) return VX_PIDX_FLOAT;
    if (strcmp(name, "bool") == 0) return VX_PIDX_BOOL;
    return 0;
}

const char *vx_pidx_type_name(int type)
{
    switch (type) {
    case VX_PIDX_KEYWORD: return "keyword";
    case VX_PIDX_INTEGER: return "integer";
    case VX_PIDX_FLOAT: return "float";
    case VX_PIDX_BOOL: return "bool";
    }
    return "unknown";
}

/* ---- declarations ---------------------------------------------------------------- */

static int load_cb(void *ctx, const char *name, const void *val, size_t len)
{
    vx_pidx_set *set = ctx;
    size_t plen = strlen(DEF_PREFIX);
    if (strncmp(name, DEF_PREFIX, plen) != 0 || len != 1) return 0;
    if (strlen(name + plen) >= VX_PIDX_FIELD_MAX) return VX_ECORRUPT;
    vx_pidx_def *v = realloc(set->v, (set->n + 1) * sizeof(*v));
    if (v == NULL) return VX_ENOMEM;
    set->v = v;
    snprintf(v[set->n].field, VX_PIDX_FIELD_MAX, "%s", name + plen);
    v[set->n].type = *(const uint8_t *)val;
    set->n++;
    return 0;
}

int vx_pidx_load(vx_store_txn *txn, vx_pidx_set *set)
{
    memset(set, 0, sizeof(*set));
    int rc = vx_store_def_iterate(txn, load_cb, set);
    if (rc != 0) vx_pidx_set_free(set);
    return rc;
}

void vx_pidx_set_free(vx_pidx_set *set)
{
    free(set->v);
    set->v = NULL;
    set->n = 0;
}

const vx_pidx_def *vx_pidx_find(const vx_pidx_set *set, const char *field)
{
    for (size_t i = 0; i < set->n; i++)
        if (strcmp(set->v[i].field, field) == 0) return &set->v[i];
    return NULL;
}

/* ---- keys ------------------------------------------------------------------------ */

typedef struct key {
    uint8_t b[KEY_MAX];
    size_t len;
} key;

/* Numbers of every index type but bool use one encoding. */
static int enc_type(int type) { return type == VX_PIDX_INTEGER ? VX_PIDX_FLOAT : type; }

static void key_prefix(key *k, int type, const char *field)
{
    size_t fl = strlen(field);
    k->b[0] = 'P';
    k->b[1] = (uint8_t)enc_type(type);
    k->b[2] = (uint8_t)(fl >> 8);
    k->b[3] = (uint8_t)fl;
    memcpy(k->b + 4, field, fl);
    k->len = 4 + fl;
}

static void put_u64be(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t ordered_double(double d)
{
    if (d == 0) d = 0; /* -0 and +0 are one value */
    uint64_t u;
    memcpy(&u, &d, 8);
    return (u & (1ull << 63)) ? ~u : u | (1ull << 63);
}

static void add_string(key *k, const char *s, size_t n)
{
    if (n <= KW_INLINE) {
        k->b[k->len] = (uint8_t)(n >> 8);
        k->b[k->len + 1] = (uint8_t)n;
        memcpy(k->b + k->len + 2, s, n);
        k->len += 2 + n;
        return;
    }
    k->b[k->len] = 0xff;
    k->b[k->len + 1] = 0xff;
    memcpy(k->b + k->len + 2, s, KW_INLINE);
    put_u64be(k->b + k->len + 2 + KW_INLINE, XXH3_64bits(s, n));
    k->len += 2 + KW_INLINE + 8;
}

static void add_number(key *k, double d)
{
    put_u64be(k->b + k->len, ordered_double(d));
    k->len += 8;
}

/* Append the value's encoding for an index of `type`; false when the value
 * has another type (it is not indexed there). */
static bool add_value(key *k, int type, const cJSON *v)
{
    switch (type) {
    case VX_PIDX_KEYWORD:
        if (!cJSON_IsString(v)) return false;
        add_string(k, v->valuestring, strlen(v->valuestring));
        return true;
    case VX_PIDX_INTEGER:
    case VX_PIDX_FLOAT:
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return false;
        add_number(k, v->valuedouble);
        return true;
    case VX_PIDX_BOOL:
        if (!cJSON_IsBool(v)) return false;
        k->b[k->len++] = cJSON_IsTrue(v) ? 1 : 0;
        return true;
    }
    return false;
}

/* The smallest byte string greater than every string starting with k. */
static bool successor(const key *k, key *out)
{
    *out = *k;
    while (out->len > 0) {
        if (out->b[out->len - 1] != 0xff) {
            out->b[out->len - 1]++;
            return true;
        }
        out->len--;
    }
    return false;
}

/* ---- values at a path, as filters see them ------------------------------------------------- */

typedef struct path {
    char parts[16][VX_PIDX_FIELD_MAX];
    size_t n;
} path;

static bool split_path(const char *field, path *p)
{
    p->n = 0;
    const char *start = field;
    for (const char *c = field;; c++) {
        if (*c != '.' && *c != '\0') continue;
        size_t len = (size_t)(c - start);
        if (len >= 2 && start[len - 2] == '[' && start[len - 1] == ']') len -= 2;
        if (len == 0 || p->n == 16) return false;
        memcpy(p->parts[p->n], start, len);
        p->parts[p->n][len] = '\0';
        p->n++;
        if (*c == '\0') return true;
        start = c + 1;
    }
}

typedef int (*value_fn)(void *ctx, const cJSON *v);

static int walk(const path *p, const cJSON *j, size_t i, value_fn fn, void *ctx)
{
    if (j == NULL) return 0;
    if (i == p->n) {
        if (!cJSON_IsArray(j)) return fn(ctx, j);
        const cJSON *it;
        cJSON_ArrayForEach(it, j)
        {
            int rc = fn(ctx, it);
            if (rc != 0) return rc;
        }
        return 0;
    }
    if (cJSON_IsArray(j)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, j)
        {
            int rc = walk(p, it, i, fn, ctx);
            if (rc != 0) return rc;
        }
        return 0;
    }
    if (!cJSON_IsObject(j)) return 0;
    return walk(p, cJSON_GetObjectItemCaseSensitive(j, p->parts[i]), i + 1, fn, ctx);
}

typedef struct entry_ctx {
    vx_store_txn *txn;
    const vx_pidx_def *def;
    const vx_point_id *id;
    bool put;
} entry_ctx;

static int entry_cb(void *ctx, const cJSON *v)
{
    entry_ctx *e = ctx;
    key k;
    key_prefix(&k, e->def->type, e->def->field);
    if (!add_value(&k, e->def->type, v)) return 0;
    memcpy(k.b + k.len, e->id->b, e->id->len);
    k.len += e->id->len;
    return e->put ? vx_store_key_put(e->txn, k.b, k.len) : vx_store_key_del(e->txn, k.b, k.len);
}

static int entries(vx_store_txn *txn, const vx_pidx_def *def, const vx_point_id *id,
                   const cJSON *payload, bool put)
{
    path p;
    if (payload == NULL || !split_path(def->field, &p)) return 0;
    entry_ctx e = {txn, def, id, put};
    return walk(&p, payload, 0, entry_cb, &e);
}

int vx_pidx_update(vx_store_txn *txn, const vx_pidx_set *set, const vx_point_id *id,
                   const char *old_payload, size_t old_len, const char *new_payload,
                   size_t new_len)
{
    if (set->n == 0) return 0;
    cJSON *o = old_payload ? cJSON_ParseWithLength(old_payload, old_len) : NULL;
    cJSON *n = new_payload ? cJSON_ParseWithLength(new_payload, new_len) : NULL;
    int rc = 0;
    for (size_t i = 0; i < set->n && rc == 0; i++) {
        rc = entries(txn, &set->v[i], id, o, false);
        if (rc == 0) rc = entries(txn, &set->v[i], id, n, true);
    }
    cJSON_Delete(o);
    cJSON_Delete(n);
    return rc;
}

typedef struct build_ctx {
    vx_store_txn *txn;
    const vx_pidx_def *def;
} build_ctx;

static int build_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    build_ctx *b = ctx;
    cJSON *p = cJSON_ParseWithLength(rec->payload, rec->payload_len);
    int rc = entries(b->txn, b->def, id, p, true);
    cJSON_Delete(p);
    return rc;
}

static void field_range(const vx_pidx_def *def, key *lo, key *hi)
{
    key_prefix(lo, def->type, def->field);
    if (!successor(lo, hi)) hi->len = 0;
}

static bool field_ok(const char *field)
{
    path p;
    return field != NULL && strlen(field) < VX_PIDX_FIELD_MAX && split_path(field, &p);
}

int vx_pidx_create(vx_store_txn *txn, vx_pidx_set *set, const char *field, int type)
{
    if (!field_ok(field) || type < VX_PIDX_KEYWORD || type > VX_PIDX_BOOL) return VX_EINVAL;
    const vx_pidx_def *old = vx_pidx_find(set, field);
    if (old != NULL && old->type == type) return 0; /* idempotent */
    if (old != NULL) {
        int rc = vx_pidx_drop(txn, set, field);
        if (rc != 0) return rc;
    }
    char name[VX_PIDX_FIELD_MAX + 8];
    snprintf(name, sizeof name, DEF_PREFIX "%s", field);
    uint8_t t = (uint8_t)type;
    int rc = vx_store_def_put(txn, name, &t, 1);
    if (rc != 0) return rc;
    vx_pidx_def *v = realloc(set->v, (set->n + 1) * sizeof(*v));
    if (v == NULL) return VX_ENOMEM;
    set->v = v;
    snprintf(v[set->n].field, VX_PIDX_FIELD_MAX, "%s", field);
    v[set->n].type = type;
    set->n++;
    build_ctx b = {txn, &v[set->n - 1]};
    return vx_store_iterate(txn, NULL, build_cb, &b);
}

int vx_pidx_drop(vx_store_txn *txn, vx_pidx_set *set, const char *field)
{
    const vx_pidx_def *def = field ? vx_pidx_find(set, field) : NULL;
    if (def == NULL) return VX_ENOTFOUND;
    char name[VX_PIDX_FIELD_MAX + 8];
    snprintf(name, sizeof name, DEF_PREFIX "%s", field);
    int rc = vx_store_def_del(txn, name);
    if (rc != 0) return rc;
    key lo, hi;
    field_range(def, &lo, &hi);
    rc = vx_store_key_del_range(txn, lo.b, lo.len, hi.b, hi.len);
    if (rc != 0) return rc;
    size_t i = (size_t)(def - set->v);
    memmove(&set->v[i], &set->v[i + 1], (set->n - i - 1) * sizeof(*set->v));
    set->n--;
    return 0;
}

/* ---- candidates ---------------------------------------------------------------------- */

typedef struct ids_acc {
    vx_point_id *v;
    size_t n, cap, limit;
    size_t value_at; /* offset of the value in the keys scanned (prefix length) */
    int type;
} ids_acc;

static int id_cmp(const void *a, const void *b)
{
    const vx_point_id *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->b, y->b, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int ids_push(ids_acc *a, const vx_point_id *id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        vx_point_id *v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL) return VX_ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = *id;
    return 0;
}

/* Sort and drop repeats (a point with several matching values). */
static void ids_unique(ids_acc *a)
{
    if (a->n < 2) return;
    qsort(a->v, a->n, sizeof(*a->v), id_cmp);
    size_t w = 1;
    for (size_t r = 1; r < a->n; r++)
        if (id_cmp(&a->v[r], &a->v[w - 1]) != 0) a->v[w++] = a->v[r];
    a->n = w;
}

static int scan_cb(void *ctx, const void *kp, size_t len)
{
    ids_acc *a = ctx;
    const uint8_t *k = kp;
    size_t off = a->value_at;
    switch (a->type) {
    case VX_PIDX_KEYWORD: {
        if (off + 2 > len) return VX_ECORRUPT;
        size_t sl = ((size_t)k[off] << 8) | k[off + 1];
        off += 2 + (sl == 0xffff ? KW_INLINE + 8 : sl);
        break;
    }
    case VX_PIDX_BOOL: off += 1; break;
    default: off += 8; break;
    }
    vx_point_id id;
    if (off >= len || vx_id_from_bytes(&id, k + off, len - off) != 0) return VX_ECORRUPT;
    if (a->limit && a->n > a->limit * 4 + 1024) return 1; /* far beyond: stop reading */
    return ids_push(a, &id);
}

static int scan(vx_store_txn *txn, const key *lo, const key *hi, ids_acc *a)
{
    return vx_store_key_scan(txn, lo->b, lo->len, hi->b, hi->len, scan_cb, a);
}

static void join_path(const node *n, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n->npath && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", i ? "." : "", n->path[i]);
}

/* Can the index of `type` hold every value of this match?  (Any value it
 * cannot hold would match points the index does not list.) */
static bool match_fits(const node *n, int type)
{
    for (size_t i = 0; i < n->nvalues; i++) {
        value_kind k = n->values[i].kind;
        if (type == VX_PIDX_KEYWORD && k != V_STRING) return false;
        if (type == VX_PIDX_BOOL && k != V_BOOL) return false;
        if ((type == VX_PIDX_INTEGER || type == VX_PIDX_FLOAT) && k != V_INT) return false;
    }
    return true;
}

/* 1 when the condition was answered from an index, 0 when it cannot be. */
static int probe(vx_store_txn *txn, const vx_pidx_set *set, const node *c, ids_acc *a, int *rc)
{
    *rc = 0;
    if (c->kind == N_HAS_ID) {
        for (size_t i = 0; i < c->nids && *rc == 0; i++) *rc = ids_push(a, &c->ids[i]);
        return 1;
    }
    if (c->kind != N_MATCH && c->kind != N_RANGE) return 0;
    char field[VX_PIDX_FIELD_MAX + 1];
    join_path(c, field, sizeof field);
    const vx_pidx_def *def = vx_pidx_find(set, field);
    if (def == NULL) return 0;
    key lo, hi;
    key_prefix(&lo, def->type, def->field);
    a->value_at = lo.len;
    a->type = enc_type(def->type);
    if (c->kind == N_MATCH) {
        if (!match_fits(c, def->type)) return 0;
        for (size_t i = 0; i < c->nvalues && *rc == 0; i++) {
            key k = lo;
            const value *v = &c->values[i];
            if (v->kind == V_STRING)
                add_string(&k, v->s, strlen(v->s));
            else if (v->kind == V_BOOL)
                k.b[k.len++] = v->b ? 1 : 0;
            else
                add_number(&k, (double)v->i);
            if (!successor(&k, &hi)) return 0;
            *rc = scan(txn, &k, &hi, a);
        }
        return 1;
    }
    if (def->type != VX_PIDX_INTEGER && def->type != VX_PIDX_FLOAT) return 0;
    key from = lo, to;
    if (c->has_gte || c->has_gt) /* gt included: the index narrows, the filter decides */
        add_number(&from, c->has_gte ? (c->has_gt ? fmax(c->gte, c->gt) : c->gte) : c->gt);
    if (c->has_lte || c->has_lt) {
        key upto = lo;
        add_number(&upto, c->has_lte ? (c->has_lt ? fmin(c->lte, c->lt) : c->lte) : c->lt);
        if (!successor(&upto, &to)) return 0;
    } else if (!successor(&lo, &to)) {
        return 0;
    }
    *rc = scan(txn, &from, &to, a);
    return 1;
}

int vx_pidx_candidates(vx_store_txn *txn, const vx_pidx_set *set, const vx_filter_expr *f,
                       size_t limit, vx_point_id **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    const node *root = f ? f->root : NULL;
    if (root == NULL || root->kind != N_FILTER) return VX_ENOTFOUND;
    /* has_id first (no scan at all), then indexed conditions in order */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < root->must.n; i++) {
            const node *c = root->must.v[i];
            if ((pass == 0) != (c->kind == N_HAS_ID)) continue;
            ids_acc a = {.limit = limit};
            int rc;
            if (!probe(txn, set, c, &a, &rc)) continue;
            if (rc == 0) ids_unique(&a);
            if (rc == 0 && limit && a.n > limit) rc = VX_EFULL;
            if (rc != 0 && rc != VX_EFULL) {
                free(a.v);
                return rc;
            }
            *n = a.n;
            if (rc == VX_EFULL) {
                free(a.v);
                return VX_EFULL;
            }
            *ids = a.v;
            return 0;
        }
    return VX_ENOTFOUND;
}

int vx_pidx_points(vx_store_txn *txn, const vx_pidx_set *set, const char *field, uint64_t *n)
{
    const vx_pidx_def *def = vx_pidx_find(set, field);
    if (def == NULL) return VX_ENOTFOUND;
    key lo, hi;
    field_range(def, &lo, &hi);
    ids_acc a = {.value_at = lo.len, .type = enc_type(def->type)};
    int rc = scan(txn, &lo, &hi, &a);
    if (rc == 0) ids_unique(&a);
    *n = a.n;
    free(a.v);
    return rc;
}
