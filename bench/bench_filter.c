/*
 * bench_filter.c - `vectron-bench filter`: filtered k-NN search, the index's
 * own choice between graph walk and exact scan against both forced.
 *
 * Builds one Vectron index from the first --nbase base vectors (label = row
 * number; INT8: trained on the first min(n, 20000) rows) with
 * --build-threads threads.  Then for each --pct P the filter admits the
 * labels whose hash (label * 2654435761 mod 2^32) % 100 is below P, so the
 * matching points are spread over the data set rather than clustered by row
 * order, and three modes run over the first --nq queries at one --ef:
 *   auto   the index decides (filter selectivity -1: it samples the filter
 *          and scans below its exact_below_selectivity threshold);
 *   graph  the walk is forced: exact_below_selectivity = 1e-12, and the
 *          filter states its selectivity as P/100 so that a sample which
 *          happens to see no match cannot send the query to the scan;
 *   scan   params.exact = true.
 * Ground truth per query is the exact filtered top-k by brute force with
 * the reference kernels (vx_l2sq_f32_ref, -vx_dot_f32_ref; COSINE on
 * normalized copies), computed with --build-threads threads.  A returned
 * hit counts toward recall when its reference distance is no larger than
 * the k-th ground-truth distance (so a tie at the boundary is not a miss);
 * the denominator is min(k, matching points) per query.  Every returned
 * label is checked: one that fails the filter, is not a base row, or
 * repeats within a query aborts the run.
 *
 * Each mode runs --repeat timed passes, single-threaded (the predicate
 * counter is a plain per-run counter); qps = queries / pass wall time, and
 * the pass with the median qps gives qps, recall, p50/p99 latency and the
 * predicate calls per query (the index's selectivity sample included).  One
 * untimed warm-up pass of up to 1000 queries runs first.
 *
 * Output: one JSON line per (pct, mode), then one summary line per pct with
 * auto's queries/s relative to the scan and auto's recall.  Progress goes
 * to stderr unless --json-only.
 */
#include "bench.h"
#include "bench_util.h"

#include "base/err.h"
#include "index/distance.h"
#include "index/index.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILTER_MAX_PCT 100
#define FILTER_DEFAULT_NQ 1000
#define FILTER_WARMUP_QUERIES 1000
#define FILTER_GRAPH_BELOW 1e-12
#define FILTER_HASH_MUL 2654435761u

/* ---- options ------------------------------------------------------------ */

typedef struct filter_opts {
    const char *base_path, *query_path;
    vx_metric metric;
    vx_quant quant;
    const char *quant_name;
    uint32_t m, ef_construction, ef, k;
    uint32_t pcts[FILTER_MAX_PCT];
    size_t n_pct;
    size_t nq, nbase; /* nbase 0 = all */
    bool nq_given;
    size_t build_threads, repeat;
    bool json_only;
} filter_opts;

void bench_filter_usage(FILE *out)
{
    fputs("usage: vectron-bench filter --base B.fvecs --query Q.fvecs --metric l2|ip|cosine\n"
          "         [--m M (16)] [--ef-construction EFC (200)] [--ef EF (64)]\n"
          "         [--quant none|int8 (none)] [--pct P[,P...] (1,10,50)] [--nq N (1000)]\n"
          "         [--nbase N (all)] [--k K (10)] [--build-threads N (2)] [--repeat R (3)]\n"
          "         [--json-only]\n"
          "\n"
          "Builds one index (label = row number) and, for each P, filters on the labels\n"
          "whose hash (label * 2654435761 mod 2^32) % 100 is below P.  Three modes per P:\n"
          "auto (the index chooses walk or scan), graph (walk forced) and scan (exact\n"
          "forced); one JSON line each with recall@k against the brute-force filtered\n"
          "top-k, queries/s and p50/p99 latency of the median of R single-threaded\n"
          "passes, and predicate calls per query; then per P a summary line with auto's\n"
          "queries/s relative to the scan and auto's recall.\n",
          out);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int parse_pct_list(const char *s, filter_opts *o)
{
    char buf[1024];
    if (strlen(s) >= sizeof buf) return bench_usage_error("--pct: list too long");
    strcpy(buf, s);
    o->n_pct = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned long long v;
        int rc = bench_parse_uint("pct", tok, 1, 100, &v);
        if (rc) return rc;
        if (o->n_pct == FILTER_MAX_PCT)
            return bench_usage_error("--pct: at most %d values", FILTER_MAX_PCT);
        o->pcts[o->n_pct++] = (uint32_t)v;
    }
    if (o->n_pct == 0)
        return bench_usage_error("--pct: expected a comma-separated list of percentages, got '%s'",
                                 s);
    qsort(o->pcts, o->n_pct, sizeof o->pcts[0], cmp_u32);
    size_t w = 1;
    for (size_t i = 1; i < o->n_pct; i++)
        if (o->pcts[i] != o->pcts[w - 1]) o->pcts[w++] = o->pcts[i];
    o->n_pct = w;
    return 0;
}

enum {
    OPT_BASE = 1000,
    OPT_QUERY,
    OPT_METRIC,
    OPT_M,
    OPT_EFC,
    OPT_EF,
    OPT_QUANT,
    OPT_PCT,
    OPT_NQ,
    OPT_NBASE,
    OPT_K,
    OPT_BUILD_THREADS,
    OPT_REPEAT,
    OPT_JSON_ONLY,
    OPT_HELP,
};

/* 0 ok, 2 usage error (printed), -1 --help printed. */
static int parse_opts(int argc, char **argv, filter_opts *o)
{
    static const struct option longopts[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"query", required_argument, NULL, OPT_QUERY},
        {"metric", required_argument, NULL, OPT_METRIC},
        {"m", required_argument, NULL, OPT_M},
        {"ef-construction", required_argument, NULL, OPT_EFC},
        {"ef", required_argument, NULL, OPT_EF},
        {"quant", required_argument, NULL, OPT_QUANT},
        {"pct", required_argument, NULL, OPT_PCT},
        {"nq", required_argument, NULL, OPT_NQ},
        {"nbase", required_argument, NULL, OPT_NBASE},
        {"k", required_argument, NULL, OPT_K},
        {"build-threads", required_argument, NULL, OPT_BUILD_THREADS},
        {"repeat", required_argument, NULL, OPT_REPEAT},
        {"json-only", no_argument, NULL, OPT_JSON_ONLY},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    static const struct {
        int id;
        const char *name;
    } required[] = {
        {OPT_BASE, "base"},
        {OPT_QUERY, "query"},
        {OPT_METRIC, "metric"},
    };
    bool seen[OPT_HELP + 1] = {false};
    unsigned long long v;
    int c, rc, li = -1;

    memset(o, 0, sizeof *o);
    o->m = 16;
    o->ef_construction = 200;
    o->ef = 64;
    o->quant = VX_QUANT_NONE;
    o->quant_name = "none";
    o->pcts[0] = 1;
    o->pcts[1] = 10;
    o->pcts[2] = 50;
    o->n_pct = 3;
    o->nq = FILTER_DEFAULT_NQ;
    o->k = 10;
    o->build_threads = 2;
    o->repeat = 3;

    optind = 1;
    opterr = 1; /* getopt names the unknown option or the missing argument */
    while ((c = getopt_long(argc, argv, "", longopts, &li)) != -1) {
        if (c == '?' || c == ':') return bench_usage_error("bad command line");
        if (c >= OPT_BASE && c <= OPT_HELP) {
            if (seen[c] && c != OPT_JSON_ONLY && c != OPT_HELP)
                return bench_usage_error("option --%s given twice", longopts[li].name);
            seen[c] = true;
        }
        switch (c) {
        case OPT_BASE:
            o->base_path = optarg;
            break;
        case OPT_QUERY:
            o->query_path = optarg;
            break;
        case OPT_METRIC:
            if ((rc = bench_parse_metric(optarg, &o->metric))) return rc;
            break;
        case OPT_M:
            if ((rc = bench_parse_uint("m", optarg, 2, 128, &v))) return rc;
            o->m = (uint32_t)v;
            break;
        case OPT_EFC:
            if ((rc = bench_parse_uint("ef-construction", optarg, 1, 1u << 20, &v))) return rc;
            o->ef_construction = (uint32_t)v;
            break;
        case OPT_EF:
            if ((rc = bench_parse_uint("ef", optarg, 1, 1u << 20, &v))) return rc;
            o->ef = (uint32_t)v;
            break;
        case OPT_QUANT:
            if (strcmp(optarg, "none") == 0)
                o->quant = VX_QUANT_NONE;
            else if (strcmp(optarg, "int8") == 0)
                o->quant = VX_QUANT_INT8;
            else
                return bench_usage_error("--quant: expected none or int8, got '%s'", optarg);
            o->quant_name = optarg;
            break;
        case OPT_PCT:
            if ((rc = parse_pct_list(optarg, o))) return rc;
            break;
        case OPT_NQ:
            if ((rc = bench_parse_uint("nq", optarg, 1, SIZE_MAX, &v))) return rc;
            o->nq = (size_t)v;
            o->nq_given = true;
            break;
        case OPT_NBASE:
            if ((rc = bench_parse_uint("nbase", optarg, 1, UINT32_MAX, &v))) return rc;
            o->nbase = (size_t)v;
            break;
        case OPT_K:
            if ((rc = bench_parse_uint("k", optarg, 1, 4096, &v))) return rc;
            o->k = (uint32_t)v;
            break;
        case OPT_BUILD_THREADS:
            if ((rc = bench_parse_uint("build-threads", optarg, 1, 1024, &v))) return rc;
            o->build_threads = (size_t)v;
            break;
        case OPT_REPEAT:
            if ((rc = bench_parse_uint("repeat", optarg, 1, 1000, &v))) return rc;
            o->repeat = (size_t)v;
            break;
        case OPT_JSON_ONLY:
            o->json_only = true;
            break;
        case OPT_HELP:
            bench_filter_usage(stdout);
            return -1;
        default:
            return bench_usage_error("bad command line");
        }
    }
    if (optind < argc) return bench_usage_error("unexpected argument '%s'", argv[optind]);
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!seen[required[i].id])
            return bench_usage_error("missing required option --%s", required[i].name);
    if (o->ef_construction < o->m)
        return bench_usage_error("--ef-construction %u must be >= --m %u", o->ef_construction,
                                 o->m);
    return 0;
}

/* ---- the filter ----------------------------------------------------------- */

static inline bool label_matches(uint64_t label, uint32_t pct)
{
    return (uint32_t)(label * FILTER_HASH_MUL) % 100u < pct;
}

typedef struct pct_filter {
    uint32_t pct;
    uint64_t calls; /* plain counter: the timed passes are single-threaded */
} pct_filter;

static bool pct_match(void *ctx, uint64_t label)
{
    pct_filter *f = ctx;
    f->calls++;
    return label_matches(label, f->pct);
}

/* ---- ground truth ----------------------------------------------------------- */

typedef struct ref_space {
    const float *base, *query; /* normalized copies for COSINE */
    float *owned_base, *owned_query;
    size_t nbase, nq, dim;
    vx_metric metric;
} ref_space;

static float ref_dist(const ref_space *r, const float *q, uint64_t row)
{
    const float *v = r->base + row * r->dim;
    return r->metric == VX_METRIC_L2 ? vx_l2sq_f32_ref(q, v, r->dim)
                                     : -vx_dot_f32_ref(q, v, r->dim);
}

static float *normalized_copy(const float *src, size_t rows, size_t dim)
{
    float *dst = malloc(rows * dim * sizeof(float));
    if (dst == NULL) return NULL;
    for (size_t i = 0; i < rows; i++) {
        const float *v = src + i * dim;
        float *w = dst + i * dim;
        double ss = 0;
        for (size_t j = 0; j < dim; j++)
            ss += (double)v[j] * v[j];
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (size_t j = 0; j < dim; j++)
            w[j] = v[j] * inv;
    }
    return dst;
}

static int ref_space_init(ref_space *r, const bench_data *d, vx_metric metric)
{
    memset(r, 0, sizeof *r);
    r->nbase = d->nbase;
    r->nq = d->nq;
    r->dim = d->dim;
    r->metric = metric;
    r->base = d->base;
    r->query = d->query;
    if (metric == VX_METRIC_COSINE) {
        r->owned_base = normalized_copy(d->base, d->nbase, d->dim);
        r->owned_query = normalized_copy(d->query, d->nq, d->dim);
        if (r->owned_base == NULL || r->owned_query == NULL) {
            bench_fail("out of memory for the normalized vectors");
            return 1;
        }
        r->base = r->owned_base;
        r->query = r->owned_query;
    }
    return 0;
}

static void ref_space_free(ref_space *r)
{
    free(r->owned_base);
    free(r->owned_query);
}

typedef struct ground_truth {
    uint32_t k;
    uint64_t *labels; /* nq * k, nearest first */
    uint32_t *count;  /* per query: min(k, matching points) */
    float *kth;       /* per query: distance of the last ground-truth hit */
} ground_truth;

typedef struct gt_job {
    const ref_space *r;
    const uint32_t *rows; /* the matching rows */
    size_t nrows;
    ground_truth *gt;
    size_t next; /* next query to claim (atomic) */
} gt_job;

static void *gt_worker(void *arg)
{
    gt_job *j = arg;
    const ref_space *r = j->r;
    const uint32_t k = j->gt->k;
    float *dist = malloc(k * sizeof *dist);
    uint64_t *lab = malloc(k * sizeof *lab);
    if (dist == NULL || lab == NULL) {
        free(dist);
        free(lab);
        return (void *)1;
    }
    for (;;) {
        size_t qi = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (qi >= r->nq) break;
        const float *q = r->query + qi * r->dim;
        uint32_t n = 0;
        /* Sorted insertion into the k best, ascending (distance, row). */
        for (size_t i = 0; i < j->nrows; i++) {
            uint64_t row = j->rows[i];
            float d = ref_dist(r, q, row);
            if (n == k && !(d < dist[n - 1])) continue;
            uint32_t p = n < k ? n++ : k - 1;
            while (p > 0 && d < dist[p - 1]) {
                dist[p] = dist[p - 1];
                lab[p] = lab[p - 1];
                p--;
            }
            dist[p] = d;
            lab[p] = row;
        }
        memcpy(j->gt->labels + qi * k, lab, n * sizeof *lab);
        j->gt->count[qi] = n;
        j->gt->kth[qi] = n ? dist[n - 1] : INFINITY;
    }
    free(dist);
    free(lab);
    return NULL;
}

/* Exact filtered top-k of every query for one pct; 0 or 1 (printed). */
static int compute_ground_truth(const ref_space *r, uint32_t pct, uint32_t k, size_t nthreads,
                                ground_truth *gt, size_t *n_match)
{
    uint32_t *rows = malloc(r->nbase * sizeof *rows);
    pthread_t *tids = calloc(nthreads, sizeof *tids);
    gt_job job = {.r = r, .rows = rows, .gt = gt};
    size_t started = 0;
    int ret = 0;

    if (rows == NULL || tids == NULL) {
        bench_fail("out of memory for the ground truth");
        free(rows);
        free(tids);
        return 1;
    }
    for (size_t i = 0; i < r->nbase; i++)
        if (label_matches(i, pct)) rows[job.nrows++] = (uint32_t)i;
    *n_match = job.nrows;
    gt->k = k;
    for (; started < nthreads; started++)
        if (pthread_create(&tids[started], NULL, gt_worker, &job) != 0) break;
    if (started == 0) ret = gt_worker(&job) != NULL;
    for (size_t t = 0; t < started; t++) {
        void *res;
        pthread_join(tids[t], &res);
        if (res != NULL) ret = 1;
    }
    if (ret) bench_fail("out of memory in the ground-truth threads");
    free(rows);
    free(tids);
    return ret;
}

/* ---- the searches ------------------------------------------------------------ */

typedef enum { MODE_AUTO, MODE_GRAPH, MODE_SCAN, MODE__COUNT } filter_mode;
static const char *const mode_names[MODE__COUNT] = {"auto", "graph", "scan"};

typedef struct filter_run {
    vx_search_params params;
    vx_filter filter;
    pct_filter fctx;
} filter_run;

static void filter_run_init(filter_run *fr, filter_mode mode, uint32_t pct, uint32_t ef)
{
    memset(fr, 0, sizeof *fr);
    fr->fctx.pct = pct;
    fr->params.ef = ef;
    fr->filter.match = pct_match;
    fr->filter.ctx = &fr->fctx;
    fr->filter.selectivity = -1.0;
    switch (mode) {
    case MODE_AUTO:
        break;
    case MODE_GRAPH:
        fr->params.exact_below_selectivity = FILTER_GRAPH_BELOW;
        fr->filter.selectivity = pct / 100.0;
        break;
    case MODE_SCAN:
    case MODE__COUNT:
        fr->params.exact = true;
        break;
    }
}

static int filtered_search(bench_system *s, const float *q, uint64_t *labels, void *scratch,
                           char *err)
{
    filter_run *fr = s->user;
    vx_hit *hits = scratch;
    uint32_t n = 0;
    int rc = vx_index_search(s->impl, q, s->k, &fr->params, &fr->filter, hits, &n);
    if (rc != 0) {
        snprintf(err, VX_ERRMSG_LEN, "vx_index_search (ef %u, k %u, pct %u): %s", s->ef, s->k,
                 fr->fctx.pct, vx_strerror(rc));
        return rc;
    }
    if (n > s->k) {
        snprintf(err, VX_ERRMSG_LEN, "vx_index_search returned %u hits for k %u", n, s->k);
        return VX_ESTATE;
    }
    for (uint32_t i = 0; i < n; i++)
        labels[i] = hits[i].label;
    return (int)n;
}

/* Recall of one pass; -1 (message printed) when a result breaks the filter
 * contract. */
static double filtered_recall(const ref_space *r, const ground_truth *gt, uint32_t pct, size_t nq,
                              const uint64_t *labels, const char *mode)
{
    const uint32_t k = gt->k;
    size_t found = 0, total = 0;
    for (size_t i = 0; i < nq; i++) {
        const uint64_t *res = labels + i * k;
        const float *q = r->query + i * r->dim;
        size_t returned = 0;
        for (uint32_t j = 0; j < k; j++) {
            uint64_t l = res[j];
            if (l == UINT64_MAX) continue;
            returned++;
            if (l >= r->nbase || !label_matches(l, pct)) {
                bench_fail("pct %u mode %s: query %zu returned label %" PRIu64 ", which %s", pct,
                           mode, i, l, l >= r->nbase ? "is not a base row" : "fails the filter");
                return -1;
            }
            for (uint32_t t = 0; t < j; t++)
                if (res[t] == l) {
                    bench_fail("pct %u mode %s: query %zu returned label %" PRIu64 " twice", pct,
                               mode, i, l);
                    return -1;
                }
            if (ref_dist(r, q, l) <= gt->kth[i]) found++;
        }
        if (returned > gt->count[i]) {
            bench_fail("pct %u mode %s: query %zu returned %zu hits but only %u points match", pct,
                       mode, i, returned, gt->count[i]);
            return -1;
        }
        total += gt->count[i];
    }
    if (found > total) found = total; /* ties beyond k cannot raise recall above 1 */
    return total ? (double)found / (double)total : NAN;
}

typedef struct mode_result {
    double recall, qps, p50_us, p99_us, calls_per_query;
} mode_result;

typedef struct pass_stat {
    double qps, recall, calls;
    double *lat_us;
} pass_stat;

static int cmp_pass_qps(const void *a, const void *b)
{
    return bench_cmp_double(&((const pass_stat *)a)->qps, &((const pass_stat *)b)->qps);
}

/* --repeat passes of one (pct, mode); the median pass by qps. */
static int measure_mode(const filter_opts *o, const bench_data *d, const ref_space *r,
                        const ground_truth *gt, bench_system *s, uint32_t pct, filter_mode mode,
                        uint64_t *labels, pass_stat *passes, double *sorted, mode_result *out)
{
    filter_run fr;
    filter_run_init(&fr, mode, pct, o->ef);
    s->user = &fr;
    for (size_t i = 0; i < o->repeat; i++) {
        fr.fctx.calls = 0;
        double wall = bench_run_pass(s, d->query, d->dim, d->nq, 1, labels, passes[i].lat_us);
        if (wall < 0) return 1;
        passes[i].qps = wall > 0 ? (double)d->nq / wall : INFINITY;
        passes[i].calls = (double)fr.fctx.calls / (double)d->nq;
        passes[i].recall = filtered_recall(r, gt, pct, d->nq, labels, mode_names[mode]);
        if (passes[i].recall < 0) return 1;
    }
    s->user = NULL;
    qsort(passes, o->repeat, sizeof *passes, cmp_pass_qps);
    const pass_stat *med = &passes[o->repeat / 2];
    memcpy(sorted, med->lat_us, d->nq * sizeof *sorted);
    qsort(sorted, d->nq, sizeof *sorted, bench_cmp_double);
    out->recall = med->recall;
    out->qps = med->qps;
    out->calls_per_query = med->calls;
    out->p50_us = bench_percentile_sorted(sorted, d->nq, 0.50);
    out->p99_us = bench_percentile_sorted(sorted, d->nq, 0.99);
    return 0;
}

static void print_mode(const filter_opts *o, uint32_t pct, filter_mode mode, const mode_result *m)
{
    printf("{\"bench\":\"filter\",\"quant\":\"%s\",\"pct\":%u,\"mode\":\"%s\",\"ef\":%u,"
           "\"recall_at_%u\":",
           o->quant_name, pct, mode_names[mode], o->ef, o->k);
    bench_print_num("%.4f", m->recall);
    fputs(",\"qps\":", stdout);
    bench_print_num("%.1f", m->qps);
    fputs(",\"p50_us\":", stdout);
    bench_print_num("%.1f", m->p50_us);
    fputs(",\"p99_us\":", stdout);
    bench_print_num("%.1f", m->p99_us);
    fputs(",\"predicate_calls_per_query\":", stdout);
    bench_print_num("%.1f", m->calls_per_query);
    fputs("}\n", stdout);
    fflush(stdout);
}

static void print_summary(uint32_t pct, const mode_result *res)
{
    const mode_result *a = &res[MODE_AUTO], *sc = &res[MODE_SCAN];
    double ratio = (isfinite(a->qps) && isfinite(sc->qps) && sc->qps > 0) ? a->qps / sc->qps : NAN;
    printf("{\"summary\":true,\"pct\":%u,\"auto_vs_scan_qps\":", pct);
    bench_print_num("%.3f", ratio);
    fputs(",\"auto_recall\":", stdout);
    bench_print_num("%.4f", a->recall);
    fputs("}\n", stdout);
    fflush(stdout);
}

/* ---- main --------------------------------------------------------------- */

int bench_filter_main(int argc, char **argv)
{
    filter_opts o;
    bench_data d = {0};
    ref_space r = {0};
    ground_truth gt = {0};
    vx_index *idx = NULL;
    vx_index_config cfg;
    vx_index_stats st;
    uint64_t *labels = NULL;
    pass_stat *passes = NULL;
    double *sorted = NULL;
    mode_result(*results)[MODE__COUNT] = NULL;

    bench_set_command("filter");
    int rc = parse_opts(argc, argv, &o);
    if (rc < 0) return 0; /* --help */
    if (rc) return rc;
    bench_quiet = o.json_only;
    rc = 1;

    vx_kernels_init();
    bench_progress("vectron-bench filter: distance kernels %s\n", vx_kern.name);
    /* The default --nq is a cap: a shorter query file is used whole. */
    if (bench_load_vectors(o.base_path, o.nbase, o.query_path, o.nq, !o.nq_given, &d)) goto out;
    if (d.nbase > UINT32_MAX) {
        bench_fail("%zu base vectors: at most %u supported", d.nbase, UINT32_MAX);
        goto out;
    }
    bench_progress("loaded %zu base and %zu query vectors of dimension %zu\n", d.nbase, d.nq,
                   d.dim);
    if (ref_space_init(&r, &d, o.metric)) goto out;

    const size_t nq = d.nq, k = o.k;
    labels = malloc(nq * k * sizeof *labels);
    passes = calloc(o.repeat, sizeof *passes);
    sorted = malloc(nq * sizeof *sorted);
    results = calloc(o.n_pct, sizeof *results);
    gt.labels = malloc(nq * k * sizeof *gt.labels);
    gt.count = malloc(nq * sizeof *gt.count);
    gt.kth = malloc(nq * sizeof *gt.kth);
    if (!labels || !passes || !sorted || !results || !gt.labels || !gt.count || !gt.kth) {
        bench_fail("out of memory for %zu queries", nq);
        goto out;
    }
    for (size_t i = 0; i < o.repeat; i++)
        if ((passes[i].lat_us = malloc(nq * sizeof(double))) == NULL) {
            bench_fail("out of memory for %zu queries", nq);
            goto out;
        }

    /* Build. */
    bench_progress("vectron %s: building from %zu vectors with %zu threads ...\n", o.quant_name,
                   d.nbase, o.build_threads);
    double t0 = bench_now_s();
    vx_index_config_default(&cfg, (uint32_t)d.dim, o.metric);
    cfg.m = o.m;
    cfg.ef_construction = o.ef_construction;
    cfg.quant = o.quant;
    if (bench_vectron_create(&d, &cfg, &idx)) goto out;
    if (bench_build_insert_all(&d, false, idx, o.build_threads)) goto out;
    vx_index_get_stats(idx, &st);
    if (st.live != d.nbase) {
        bench_fail("the index holds %" PRIu64 " live vectors after inserting %zu", st.live,
                   d.nbase);
        goto out;
    }
    bench_progress("vectron %s: built in %.2f s, max level %u\n", o.quant_name, bench_now_s() - t0,
                   st.max_level);

    bench_system s = {
        .name = "vectron",
        .quant = o.quant_name,
        .isa = vx_kern.name,
        .impl = idx,
        .k = o.k,
        .ef = o.ef,
        .search = filtered_search,
        .scratch_bytes = o.k * sizeof(vx_hit),
    };

    for (size_t p = 0; p < o.n_pct; p++) {
        const uint32_t pct = o.pcts[p];
        size_t n_match;
        double tg = bench_now_s();
        if (compute_ground_truth(&r, pct, o.k, o.build_threads, &gt, &n_match)) goto out;
        bench_progress("pct %u: %zu of %zu points match (%.2f %%), ground truth in %.2f s\n", pct,
                       n_match, d.nbase, 100.0 * (double)n_match / (double)d.nbase,
                       bench_now_s() - tg);
        if (p == 0) {
            filter_run fr;
            size_t nw = nq < FILTER_WARMUP_QUERIES ? nq : FILTER_WARMUP_QUERIES;
            filter_run_init(&fr, MODE_AUTO, pct, o.ef);
            s.user = &fr;
            if (bench_run_pass(&s, d.query, d.dim, nw, 1, labels, passes[0].lat_us) < 0) goto out;
            s.user = NULL;
        }
        for (int m = 0; m < MODE__COUNT; m++) {
            mode_result *mr = &results[p][m];
            if (measure_mode(&o, &d, &r, &gt, &s, pct, (filter_mode)m, labels, passes, sorted, mr))
                goto out;
            bench_progress("  pct %3u %-5s ef %u  recall@%u %.4f  %9.1f q/s  p50 %8.1f us  "
                           "p99 %8.1f us  %9.1f predicate calls/query%s\n",
                           pct, mode_names[m], o.ef, o.k, mr->recall, mr->qps, mr->p50_us,
                           mr->p99_us, mr->calls_per_query,
                           m == MODE_AUTO
                               ? (mr->calls_per_query >= (double)d.nbase ? "  (scan)" : "  (walk)")
                               : "");
            print_mode(&o, pct, (filter_mode)m, mr);
        }
    }
    for (size_t p = 0; p < o.n_pct; p++)
        print_summary(o.pcts[p], results[p]);
    rc = 0;

out:
    vx_index_free(idx);
    if (passes)
        for (size_t i = 0; i < o.repeat; i++)
            free(passes[i].lat_us);
    free(passes);
    free(labels);
    free(sorted);
    free(results);
    free(gt.labels);
    free(gt.count);
    free(gt.kth);
    ref_space_free(&r);
    bench_free_data(&d);
    return rc;
}
