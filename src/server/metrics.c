/*
 * metrics.c - see metrics.h.
 *
 * The registry is a sorted array of families, each a sorted array of series
 * pointers; sorted so that lookups are binary searches and the exposition
 * comes out in a deterministic order without a sort per scrape.  Each series
 * is its own cache-line-aligned allocation, which is what makes the pointers
 * handed to callers stable while the arrays around them grow.
 */
#include "server/metrics.h"

#include "base/err.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum mtype { M_COUNTER, M_GAUGE, M_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};
static const double bucket_bounds[VX_HISTOGRAM_NBUCKETS] = VX_HISTOGRAM_BUCKETS;

/* Doubles live in atomics as their bit patterns: C11 has no portable atomic
 * double arithmetic, and a CAS loop on the bits is what it would compile to
 * anyway. */
struct vx_counter {
    atomic_uint_least64_t v;
};

struct vx_gauge {
    atomic_uint_least64_t bits;
};

struct vx_histogram {
    atomic_uint_least64_t b[VX_HISTOGRAM_NBUCKETS + 1]; /* per bucket, last is +Inf */
    atomic_uint_least64_t sum_bits;
};

#define CACHE_LINE 64

typedef struct series {
    /* the hot part first, at the start of the aligned allocation */
    union {
        struct vx_counter c;
        struct vx_gauge g;
        struct vx_histogram h;
    } u;
    char *labels;            /* "" for none */
    double (*fn)(void *ctx); /* callback gauge when not NULL */
    void *ctx;
} series;

typedef struct family {
    char *name;
    char *help;
    enum mtype type;
    series **s;
    size_t n, cap;
} family;

struct vx_metrics {
    pthread_mutex_t mu;
    family **f;
    size_t n, cap;
    size_t nseries; /* across families, for VX_METRICS_MAX_SERIES */
};

/* ---- doubles in atomics -------------------------------------------------- */

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(atomic_uint_least64_t *a, double delta)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, d2u(u2d(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* ---- hot path ------------------------------------------------------------ */

void vx_counter_add(vx_counter *c, uint64_t n)
{
    if (c != NULL) atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

uint64_t vx_counter_get(const vx_counter *c)
{
    return c != NULL ? atomic_load_explicit(&((vx_counter *)c)->v, memory_order_relaxed) : 0;
}

void vx_gauge_set(vx_gauge *g, double v)
{
    if (g != NULL) atomic_store_explicit(&g->bits, d2u(v), memory_order_relaxed);
}

void vx_gauge_add(vx_gauge *g, double delta)
{
    if (g != NULL) atomic_add_double(&g->bits, delta);
}

double vx_gauge_get(const vx_gauge *g)
{
    if (g == NULL) return 0;
    return u2d(atomic_load_explicit(&((vx_gauge *)g)->bits, memory_order_relaxed));
}

void vx_histogram_observe(vx_histogram *h, double seconds)
{
    if (h == NULL || isnan(seconds)) return;
    size_t i = 0;
    while (i < VX_HISTOGRAM_NBUCKETS && seconds > bucket_bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->b[i], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, seconds);
}

/* One pass over the buckets; returns their total. */
static uint64_t hist_read(const vx_histogram *h, uint64_t c[VX_HISTOGRAM_NBUCKETS + 1])
{
    uint64_t total = 0;
    for (size_t i = 0; i <= VX_HISTOGRAM_NBUCKETS; i++) {
        c[i] = atomic_load_explicit(&((vx_histogram *)h)->b[i], memory_order_relaxed);
        total += c[i];
    }
    return total;
}

uint64_t vx_histogram_count(const vx_histogram *h)
{
    uint64_t c[VX_HISTOGRAM_NBUCKETS + 1];
    return h != NULL ? hist_read(h, c) : 0;
}

double vx_histogram_quantile(const vx_histogram *h, double q)
{
    if (h == NULL || !(q >= 0 && q <= 1)) return NAN;
    uint64_t c[VX_HISTOGRAM_NBUCKETS + 1];
    uint64_t total = hist_read(h, c);
    if (total == 0) return NAN;
    double rank = q * (double)total;
    uint64_t before = 0;
    for (size_t i = 0; i <= VX_HISTOGRAM_NBUCKETS; i++) {
        /* empty buckets cannot hold the rank (and would divide by zero) */
        if (c[i] == 0 || (double)(before + c[i]) < rank) {
            before += c[i];
            continue;
        }
        if (i == VX_HISTOGRAM_NBUCKETS) return bucket_bounds[VX_HISTOGRAM_NBUCKETS - 1];
        double lo = i == 0 ? 0 : bucket_bounds[i - 1], hi = bucket_bounds[i];
        return lo + (hi - lo) * ((rank - (double)before) / (double)c[i]);
    }
    return bucket_bounds[VX_HISTOGRAM_NBUCKETS - 1]; /* rank rounding past the end */
}

/* ---- validation ---------------------------------------------------------- */

static bool name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool name_char(char c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool valid_metric_name(const char *s)
{
    if (s == NULL || !(name_start(*s) || *s == ':')) return false;
    for (s++; *s != '\0'; s++)
        if (!(name_char(*s) || *s == ':')) return false;
    return true;
}

/* `l="v"(,l="v")*` or "", as in metrics.h.  Refusing a malformed set here is
 * what keeps one bad caller from making the whole scrape unparseable. */
static bool valid_labels(const char *s, enum mtype type)
{
    const char *names[32];
    size_t lens[32], n = 0;
    if (*s == '\0') return true;
    for (;;) {
        const char *name = s;
        if (!name_start(*s)) return false;
        while (name_char(*s))
            s++;
        size_t len = (size_t)(s - name);
        if (len >= 2 && name[0] == '_' && name[1] == '_') return false;
        if (type == M_HISTOGRAM && len == 2 && memcmp(name, "le", 2) == 0) return false;
        for (size_t i = 0; i < n; i++)
            if (lens[i] == len && memcmp(names[i], name, len) == 0) return false;
        if (n == sizeof names / sizeof names[0]) return false;
        names[n] = name;
        lens[n++] = len;
        if (s[0] != '=' || s[1] != '"') return false;
        for (s += 2; *s != '"'; s++) {
            if (*s == '\0' || *s == '\n') return false;
            if (*s == '\\') {
                s++;
                if (*s != '\\' && *s != '"' && *s != 'n') return false;
            }
        }
        s++;
        if (*s == '\0') return true;
        if (*s++ != ',') return false;
    }
}

/* ---- registry ------------------------------------------------------------ */

vx_metrics *vx_metrics_new(void)
{
    vx_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL) return NULL;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

static void series_free(series *s)
{
    free(s->labels);
    free(s);
}

static void family_free(family *f)
{
    for (size_t i = 0; i < f->n; i++)
        series_free(f->s[i]);
    free(f->s);
    free(f->name);
    free(f->help);
    free(f);
}

void vx_metrics_free(vx_metrics *m)
{
    if (m == NULL) return;
    for (size_t i = 0; i < m->n; i++)
        family_free(m->f[i]);
    free(m->f);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Binary search: the index of key, or where it would be inserted. */
#define LOWER_BOUND(arr, n, field, key, out)                                                       \
    do {                                                                                           \
        size_t lo_ = 0, hi_ = (n);                                                                 \
        while (lo_ < hi_) {                                                                        \
            size_t mid_ = lo_ + (hi_ - lo_) / 2;                                                   \
            if (strcmp((arr)[mid_]->field, (key)) < 0)                                             \
                lo_ = mid_ + 1;                                                                    \
            else                                                                                   \
                hi_ = mid_;                                                                        \
        }                                                                                          \
        (out) = lo_;                                                                               \
    } while (0)

static bool grow(void **arr, size_t *cap, size_t n)
{
    if (n < *cap) return true;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, ncap * sizeof(void *));
    if (p == NULL) return false;
    *arr = p;
    *cap = ncap;
    return true;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL) memcpy(p, s, n);
    return p;
}

/* Find or create (name, labels) of type; the caller holds m->mu.  With
 * want_fn, an existing series is VX_EEXISTS; without, a callback gauge found
 * is VX_EINVAL (it has no storage to write to). */
static int lookup(vx_metrics *m, enum mtype type, const char *name, const char *help,
                  const char *labels, bool want_fn, series **out)
{
    size_t fi, si = 0;
    LOWER_BOUND(m->f, m->n, name, name, fi);
    family *f = fi < m->n && strcmp(m->f[fi]->name, name) == 0 ? m->f[fi] : NULL;
    if (f != NULL) {
        if (f->type != type) return VX_EINVAL;
        LOWER_BOUND(f->s, f->n, labels, labels, si);
        if (si < f->n && strcmp(f->s[si]->labels, labels) == 0) {
            series *s = f->s[si];
            if (want_fn) return VX_EEXISTS;
            if (s->fn != NULL) return VX_EINVAL;
            *out = s;
            return 0;
        }
    }
    if (m->nseries >= VX_METRICS_MAX_SERIES) return VX_EFULL;

    /* create: everything that can fail happens before the registry changes */
    bool new_family = f == NULL;
    if (new_family) {
        if (!grow((void **)&m->f, &m->cap, m->n)) return VX_ENOMEM;
        f = calloc(1, sizeof(*f));
        if (f == NULL) return VX_ENOMEM;
        f->type = type;
        f->name = dup_str(name);
        f->help = dup_str(help != NULL ? help : "");
        if (f->name == NULL || f->help == NULL) goto err_after_family;
        si = 0;
    }
    if (!grow((void **)&f->s, &f->cap, f->n)) goto err_after_family;
    size_t size = (sizeof(series) + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE;
    series *s = aligned_alloc(CACHE_LINE, size);
    if (s == NULL) goto err_after_family;
    memset(s, 0, size);
    s->labels = dup_str(labels);
    if (s->labels == NULL) {
        free(s);
        goto err_after_family;
    }

    memmove(&f->s[si + 1], &f->s[si], (f->n - si) * sizeof(series *));
    f->s[si] = s;
    f->n++;
    if (new_family) {
        memmove(&m->f[fi + 1], &m->f[fi], (m->n - fi) * sizeof(family *));
        m->f[fi] = f;
        m->n++;
    }
    m->nseries++;
    *out = s;
    return 0;

err_after_family:
    if (new_family) family_free(f);
    return VX_ENOMEM;
}

static series *get(vx_metrics *m, enum mtype type, const char *name, const char *help,
                   const char *labels)
{
    if (labels == NULL) labels = "";
    if (m == NULL || !valid_metric_name(name) || !valid_labels(labels, type)) return NULL;
    series *s = NULL;
    pthread_mutex_lock(&m->mu);
    int rc = lookup(m, type, name, help, labels, false, &s);
    pthread_mutex_unlock(&m->mu);
    return rc == 0 ? s : NULL;
}

vx_counter *vx_metrics_counter(vx_metrics *m, const char *name, const char *help,
                               const char *labels)
{
    series *s = get(m, M_COUNTER, name, help, labels);
    return s != NULL ? &s->u.c : NULL;
}

vx_gauge *vx_metrics_gauge(vx_metrics *m, const char *name, const char *help, const char *labels)
{
    series *s = get(m, M_GAUGE, name, help, labels);
    return s != NULL ? &s->u.g : NULL;
}

vx_histogram *vx_metrics_histogram(vx_metrics *m, const char *name, const char *help,
                                   const char *labels)
{
    series *s = get(m, M_HISTOGRAM, name, help, labels);
    return s != NULL ? &s->u.h : NULL;
}

int vx_metrics_gauge_fn(vx_metrics *m, const char *name, const char *help, const char *labels,
                        double (*fn)(void *ctx), void *ctx)
{
    if (labels == NULL) labels = "";
    if (m == NULL || fn == NULL || !valid_metric_name(name) || !valid_labels(labels, M_GAUGE))
        return VX_EINVAL;
    series *s = NULL;
    pthread_mutex_lock(&m->mu);
    int rc = lookup(m, M_GAUGE, name, help, labels, true, &s);
    if (rc == 0) {
        s->fn = fn;
        s->ctx = ctx;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

void vx_metrics_remove_fn(vx_metrics *m, void *ctx)
{
    if (m == NULL) return;
    pthread_mutex_lock(&m->mu);
    size_t fo = 0;
    for (size_t fi = 0; fi < m->n; fi++) {
        family *f = m->f[fi];
        size_t so = 0;
        for (size_t si = 0; si < f->n; si++) {
            series *s = f->s[si];
            if (s->fn != NULL && s->ctx == ctx) {
                series_free(s);
                m->nseries--;
            } else {
                f->s[so++] = s;
            }
        }
        f->n = so;
        if (f->n == 0)
            family_free(f); /* only callback gauges can leave a family empty */
        else
            m->f[fo++] = f;
    }
    m->n = fo;
    pthread_mutex_unlock(&m->mu);
}

/* ---- exposition ---------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->cap - b->len <= n) { /* <= keeps room for the final NUL */
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap - b->len <= n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_u64(sbuf *b, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    sb_put(b, t, (size_t)n);
}

/* Shortest of %.15g / %.17g that reads back as v; Prometheus' spellings for
 * the non-finite values. */
static void sb_double(sbuf *b, double v)
{
    if (isnan(v)) {
        sb_puts(b, "NaN");
        return;
    }
    if (isinf(v)) {
        sb_puts(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    char t[32];
    snprintf(t, sizeof t, "%.15g", v);
    if (strtod(t, NULL) != v) snprintf(t, sizeof t, "%.17g", v);
    sb_puts(b, t);
}

/* HELP text escaping per format 0.0.4: backslash and line feed. */
static void sb_help(sbuf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            sb_puts(b, "\\\\");
        else if (*s == '\n')
            sb_puts(b, "\\n");
        else
            sb_put(b, s, 1);
    }
}

/* `name{labels}` or `name`, plus an optional extra label (le) and suffix. */
static void sb_series_name(sbuf *b, const family *f, const char *suffix, const char *labels,
                           const char *le)
{
    sb_puts(b, f->name);
    sb_puts(b, suffix);
    if (*labels == '\0' && le == NULL) return;
    sb_puts(b, "{");
    sb_puts(b, labels);
    if (le != NULL) {
        if (*labels != '\0') sb_puts(b, ",");
        sb_puts(b, "le=\"");
        sb_puts(b, le);
        sb_puts(b, "\"");
    }
    sb_puts(b, "}");
}

static void render_histogram(sbuf *b, const family *f, const series *s)
{
    uint64_t c[VX_HISTOGRAM_NBUCKETS + 1];
    hist_read(&s->u.h, c);
    uint64_t cum = 0;
    for (size_t i = 0; i <= VX_HISTOGRAM_NBUCKETS; i++) {
        char le[32];
        if (i < VX_HISTOGRAM_NBUCKETS)
            snprintf(le, sizeof le, "%g", bucket_bounds[i]);
        else
            strcpy(le, "+Inf");
        cum += c[i];
        sb_series_name(b, f, "_bucket", s->labels, le);
        sb_puts(b, " ");
        sb_u64(b, cum);
        sb_puts(b, "\n");
    }
    sb_series_name(b, f, "_sum", s->labels, NULL);
    sb_puts(b, " ");
    sb_double(b, u2d(atomic_load_explicit(&((series *)s)->u.h.sum_bits, memory_order_relaxed)));
    sb_puts(b, "\n");
    sb_series_name(b, f, "_count", s->labels, NULL);
    sb_puts(b, " ");
    sb_u64(b, cum);
    sb_puts(b, "\n");
}

char *vx_metrics_render(vx_metrics *m, size_t *len)
{
    sbuf b = {0};
    if (m == NULL) return NULL;
    pthread_mutex_lock(&m->mu);
    for (size_t fi = 0; fi < m->n; fi++) {
        const family *f = m->f[fi];
        sb_puts(&b, "# HELP ");
        sb_puts(&b, f->name);
        sb_puts(&b, " ");
        sb_help(&b, f->help);
        sb_puts(&b, "\n# TYPE ");
        sb_puts(&b, f->name);
        sb_puts(&b, " ");
        sb_puts(&b, type_names[f->type]);
        sb_puts(&b, "\n");
        for (size_t si = 0; si < f->n; si++) {
            const series *s = f->s[si];
            if (f->type == M_HISTOGRAM) {
                render_histogram(&b, f, s);
                continue;
            }
            sb_series_name(&b, f, "", s->labels, NULL);
            sb_puts(&b, " ");
            if (f->type == M_COUNTER)
                sb_u64(&b, vx_counter_get(&s->u.c));
            else
                sb_double(&b, s->fn != NULL ? s->fn(s->ctx) : vx_gauge_get(&s->u.g));
            sb_puts(&b, "\n");
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (b.p == NULL && !b.oom) sb_put(&b, "", 0); /* empty registry: "" not NULL */
    if (b.p == NULL) b.oom = true;
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    b.p[b.len] = '\0';
    if (len != NULL) *len = b.len;
    return b.p;
}
