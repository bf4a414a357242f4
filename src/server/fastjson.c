/*
 * fastjson.c - see fastjson.h.
 */
#define _GNU_SOURCE
#include "server/fastjson.h"

#include "base/err.h"
#include "server/jbuf.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct cur {
    const char *p, *end;
} cur;

static void ws(cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

static bool eat(cur *c, char ch)
{
    ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A key or simple string without escapes: [s, s+n). */
static bool plain_string(cur *c, const char **s, size_t *n)
{
    ws(c);
    if (c->p >= c->end || *c->p != '"') return false;
    const char *start = ++c->p;
    while (c->p < c->end && *c->p != '"') {
        if (*c->p == '\\' || (unsigned char)*c->p < 0x20) return false;
        c->p++;
    }
    if (c->p >= c->end) return false;
    *s = start;
    *n = (size_t)(c->p - start);
    c->p++;
    return true;
}

/* A JSON number as a float; false when it is not one, not finite in float32
 * or in a form this path leaves to the general parser. */
static bool number(cur *c, float *out)
{
    ws(c);
    const char *s = c->p;
    bool neg = false;
    if (c->p < c->end && *c->p == '-') {
        neg = true;
        c->p++;
    }
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return false;
    if (*c->p == '0' && c->p + 1 < c->end && c->p[1] >= '0' && c->p[1] <= '9') return false;
    uint64_t mant = 0;
    int digits = 0, exp10 = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (digits < 19) mant = mant * 10 + (uint64_t)(*c->p - '0'), digits += mant != 0;
        else exp10++;
        c->p++;
    }
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return false;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (digits < 19) {
                mant = mant * 10 + (uint64_t)(*c->p - '0');
                digits += mant != 0;
                exp10--;
            }
            c->p++;
        }
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        int esign = 1, e = 0;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) esign = *c->p++ == '-' ? -1 : 1;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return false;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (e < 10000) e = e * 10 + (*c->p - '0');
            c->p++;
        }
        exp10 += esign * e;
    }
    double v;
    if (mant <= (1ull << 53) && exp10 >= -22 && exp10 <= 22) {
        /* exact operands: one correctly rounded operation */
        v = exp10 >= 0 ? (double)mant * vx_pow10[exp10] : (double)mant / vx_pow10[-exp10];
    } else {
        char tmp[64]; /* the rare long or extreme literal: the C library */
        size_t n = (size_t)(c->p - s);
        if (n >= sizeof tmp) return false;
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        v = strtod(tmp, NULL);
        neg = false;
    }
    if (neg) v = -v;
    if (!isfinite(v) || fabs(v) > FLT_MAX) return false;
    *out = (float)v;
    return true;
}

static bool id_value(cur *c, vx_point_id *id)
{
    ws(c);
    if (c->p < c->end && *c->p == '"') {
        const char *s;
        size_t n;
        return plain_string(c, &s, &n) && vx_id_from_uuid_text(id, s, n) == 0;
    }
    uint64_t v = 0;
    const char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        unsigned d = (unsigned)(*c->p - '0');
        if (v > (UINT64_MAX - d) / 10) return false; /* beyond u64: the general path says why */
        v = v * 10 + d;
        c->p++;
    }
    if (c->p == start || (*start == '0' && c->p - start > 1)) return false;
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E')) return false;
    vx_id_from_uint(id, v);
    return true;
}

static bool push_vec(vx_fast_points *fp, float v)
{
    if (fp->nvec == fp->vcap) {
        size_t cap = fp->vcap ? fp->vcap * 2 : 4096;
        float *nv = realloc(fp->vec, cap * sizeof(float));
        if (nv == NULL) return false;
        fp->vec = nv;
        fp->vcap = cap;
    }
    fp->vec[fp->nvec++] = v;
    return true;
}

static bool vector_value(cur *c, vx_fast_points *fp, vx_fast_point *pt)
{
    if (!eat(c, '[')) return false;
    pt->vec_off = fp->nvec;
    pt->dim = 0;
    if (eat(c, ']')) return true;
    for (;;) {
        float v;
        if (!number(c, &v) || !push_vec(fp, v)) return false;
        pt->dim++;
        if (eat(c, ',')) continue;
        return eat(c, ']');
    }
}

/* The extent of an object value, strings and nesting respected. */
static bool object_span(cur *c, unsigned max_depth, const char **s, size_t *n)
{
    ws(c);
    if (c->p >= c->end || *c->p != '{') return false;
    const char *start = c->p;
    unsigned depth = 0;
    bool in_str = false;
    for (; c->p < c->end; c->p++) {
        char ch = *c->p;
        /* stored and served byte for byte: control characters (which cJSON
         * would accept raw in strings) go to the general path, which escapes */
        if ((unsigned char)ch < 0x20 && (in_str || (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')))
            return false;
        if (in_str) {
            if (ch == '\\') c->p++;
            else if (ch == '"') in_str = false;
            continue;
        }
        if (ch == '"') in_str = true;
        else if (ch == '{' || ch == '[') {
            if (++depth > max_depth) return false;
        } else if (ch == '}' || ch == ']') {
            if (--depth == 0) {
                c->p++;
                *s = start;
                *n = (size_t)(c->p - start);
                cJSON *j = cJSON_ParseWithLength(start, *n); /* stored as is: must be JSON */
                bool ok = cJSON_IsObject(j);
                cJSON_Delete(j);
                return ok;
            }
        }
    }
    return false;
}

static bool point(cur *c, vx_fast_points *fp, unsigned max_depth)
{
    vx_fast_point pt = {0};
    bool has_id = false, has_vec = false, has_pl = false;
    if (!eat(c, '{')) return false;
    if (eat(c, '}')) return false;
    for (;;) {
        const char *k;
        size_t kn;
        if (!plain_string(c, &k, &kn) || !eat(c, ':')) return false;
        if (kn == 2 && memcmp(k, "id", 2) == 0 && !has_id) {
            if (!id_value(c, &pt.id)) return false;
            has_id = true;
        } else if (kn == 6 && memcmp(k, "vector", 6) == 0 && !has_vec) {
            if (!vector_value(c, fp, &pt)) return false;
            has_vec = true;
        } else if (kn == 7 && memcmp(k, "payload", 7) == 0 && !has_pl) {
            ws(c);
            if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) {
                c->p += 4;
            } else if (!object_span(c, max_depth, &pt.payload, &pt.payload_len)) {
                return false;
            }
            has_pl = true;
        } else {
            return false;
        }
        if (eat(c, ',')) continue;
        if (!eat(c, '}')) return false;
        break;
    }
    if (!has_id || !has_vec) return false;
    if (fp->n == fp->cap) {
        size_t cap = fp->cap ? fp->cap * 2 : 256;
        vx_fast_point *np = realloc(fp->p, cap * sizeof(*np));
        if (np == NULL) return false;
        fp->p = np;
        fp->cap = cap;
    }
    fp->p[fp->n++] = pt;
    return true;
}

int vx_fast_parse_points(const char *body, size_t len, size_t max_points, unsigned max_depth,
                         vx_fast_points *out)
{
    memset(out, 0, sizeof(*out));
    cur c = {body, body + len};
    bool ok = eat(&c, '{');
    const char *k;
    size_t kn;
    ok = ok && plain_string(&c, &k, &kn) && kn == 6 && memcmp(k, "points", 6) == 0 &&
         eat(&c, ':') && eat(&c, '[');
    if (ok && !eat(&c, ']')) {
        for (;;) {
            if (out->n >= max_points || !point(&c, out, max_depth >= 3 ? max_depth - 2 : 1)) {
                ok = false;
                break;
            }
            if (eat(&c, ',')) continue;
            ok = eat(&c, ']');
            break;
        }
    }
    ok = ok && eat(&c, '}');
    ws(&c);
    if (!ok || c.p != c.end || out->n == 0) {
        vx_fast_points_free(out);
        return VX_EINVAL;
    }
    return 0;
}

void vx_fast_points_free(vx_fast_points *fp)
{
    free(fp->p);
    free(fp->vec);
    memset(fp, 0, sizeof(*fp));
}

/* Past one JSON value of any kind, strings and nesting respected; false at
 * the end of the text.  It does not validate: the general parser does. */
static bool skip_value(cur *c)
{
    ws(c);
    unsigned depth = 0;
    bool in_str = false;
    for (; c->p < c->end; c->p++) {
        char ch = *c->p;
        if (in_str) {
            if (ch == '\\') c->p++;
            else if (ch == '"') {
                in_str = false;
                if (depth == 0) {
                    c->p++;
                    return true;
                }
            }
            continue;
        }
        if (ch == '"') in_str = true;
        else if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') {
            if (depth == 0) return true; /* the end of the enclosing object */
            if (--depth == 0) {
                c->p++;
                return true;
            }
        } else if (depth == 0 && (ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r'))
            return true;
    }
    return false;
}

int vx_fast_extract_vector(const char *body, size_t len, const char *key, size_t max_n,
                           char **copy, float **vec, uint32_t *n)
{
    *copy = NULL;
    *vec = NULL;
    *n = 0;
    size_t klen = strlen(key);
    cur c = {body, body + len};
    if (!eat(&c, '{')) return VX_EINVAL;
    for (;;) {
        const char *k;
        size_t kn;
        if (!plain_string(&c, &k, &kn) || !eat(&c, ':')) return VX_EINVAL;
        if (kn == klen && memcmp(k, key, kn) == 0) break;
        if (!skip_value(&c)) return VX_EINVAL;
        if (!eat(&c, ',')) return VX_EINVAL; /* '}' or junk: no such member */
    }
    if (!eat(&c, '[')) return VX_EINVAL;
    const char *from = c.p;
    /* sized as it fills (doubling), not for max_n floats up front: a 128-d
     * query should not take (and return) a 256 KiB block per request */
    size_t cap = max_n < 256 ? (max_n ? max_n : 1) : 256;
    float *v = malloc(cap * sizeof(float));
    if (v == NULL) return VX_EINVAL;
    uint32_t m = 0;
    for (;;) {
        float f;
        if (m >= max_n || !number(&c, &f)) {
            free(v);
            return VX_EINVAL;
        }
        if (m == cap) {
            cap = cap * 2 < max_n ? cap * 2 : max_n;
            float *g = realloc(v, cap * sizeof(float));
            if (g == NULL) {
                free(v);
                return VX_EINVAL;
            }
            v = g;
        }
        v[m++] = f;
        if (eat(&c, ',')) continue;
        if (!eat(&c, ']')) {
            free(v);
            return VX_EINVAL;
        }
        break;
    }
    const char *to = c.p - 1; /* the closing bracket */
    char *cp = malloc(len + 1);
    if (cp == NULL) {
        free(v);
        return VX_EINVAL;
    }
    memcpy(cp, body, len);
    cp[len] = '\0';
    memset(cp + (from - body), ' ', (size_t)(to - from));
    *copy = cp;
    *vec = v;
    *n = m;
    return 0;
}
