/*
 * bench_ann.c - `vectron-bench ann`: the Vectron index against hnswlib on one
 * data set, in one process run.
 *
 * For each storage mode in --quant (none, int8 or both), and then for the
 * hnswlib peer (--peer hnswlib):
 *   build   the index from the first --nbase base vectors (label = row
 *           number) with --build-threads threads that share the rows through
 *           an atomic counter; build_s is wall clock from creating the index
 *           to the last insert, including the quantizer's training (INT8:
 *           vx_index_train on the first min(n, 20000) base vectors);
 *   memory  RSS (/proc/self/statm resident pages * page size) just before
 *           creating the index and just after the build; rss_mib is the
 *           difference.  vectors_mib is the float32 copy Vectron keeps for
 *           rescoring in INT8 mode (stats.vector_bytes) and index_mib =
 *           rss_mib - vectors_mib is what the index structure itself added.
 *   search  for each --ef, --repeat timed passes over the first --nq queries,
 *           each of --threads threads owning a contiguous slice of them
 *           (threads > 1 run in parallel); qps = queries / pass wall time,
 *           and the pass with the median qps gives qps, recall@k against
 *           the first k ids of each ground-truth row, and the p50/p99 of its
 *           per-query latencies.  One untimed warm-up pass of up to 1000
 *           queries runs before the first ef.
 *
 * Order and memory: the systems are measured one after another and each
 * index is freed (and malloc_trim(0) hands the freed pages back to the
 * kernel) before the next one is built, Vectron first, hnswlib last, so
 * their RSS deltas never overlap.  The data sets stay loaded throughout and
 * are part of every baseline, not of any delta.
 *
 * Output: one JSON object per (system, quant, ef) on stdout, then, with the
 * peer, one summary line per Vectron quant mode comparing it with hnswlib at
 * recall 0.95 (queries/s interpolated linearly between the two ef points
 * that bracket 0.95, null when no pair does), build time and index memory.
 * Progress goes to stderr unless --json-only.
 */
#include "bench.h"
#include "bench_util.h"
#include "peer_hnswlib.h"

#include "base/err.h"
#include "base/fvecs.h"
#include "index/distance.h"
#include "index/index.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANN_MAX_EF 64
#define ANN_WARMUP_QUERIES 1000
#define ANN_RECALL_TARGET 0.95
#define MIB (1024.0 * 1024.0)

/* ---- options ------------------------------------------------------------ */

typedef struct ann_opts {
    const char *base_path, *query_path, *gt_path;
    vx_metric metric;
    const char *metric_name;
    uint32_t m, ef_construction;
    uint32_t efs[ANN_MAX_EF];
    size_t n_ef;
    vx_quant quants[2];
    size_t n_quant;
    bool peer;
    size_t threads, build_threads;
    size_t nq, nbase; /* 0 = all */
    uint32_t k, rescore;
    size_t repeat;
    bool json_only;
} ann_opts;

void bench_ann_usage(FILE *out)
{
    fputs("usage: vectron-bench ann --base B.fvecs --query Q.fvecs --gt G.ivecs\n"
          "         --metric l2|ip|cosine --m M --ef-construction EFC --ef EF[,EF...]\n"
          "         --threads T --quant none|int8[,...] --peer hnswlib|none\n"
          "         [--build-threads N (2)] [--nq N (all)] [--nbase N (all)] [--k K (10)]\n"
          "         [--rescore N (index default)] [--repeat R (3)] [--json-only]\n"
          "\n"
          "Builds the Vectron index (once per --quant mode) and then hnswlib on the base\n"
          "vectors, runs the queries at every --ef, and prints one JSON line per point:\n"
          "recall@k against the ground truth, queries/s and p50/p99 latency of the\n"
          "median of R passes, build seconds and the RSS growth of the build.  With\n"
          "--peer hnswlib a summary line per quant mode gives the queries/s ratio at\n"
          "recall 0.95 and the build time and memory ratios.\n",
          out);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int parse_ef_list(const char *s, ann_opts *o)
{
    char buf[1024];
    if (strlen(s) >= sizeof buf) return bench_usage_error("--ef: list too long");
    strcpy(buf, s);
    o->n_ef = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned long long v;
        int rc = bench_parse_uint("ef", tok, 1, 1u << 20, &v);
        if (rc) return rc;
        if (o->n_ef == ANN_MAX_EF) return bench_usage_error("--ef: at most %d values", ANN_MAX_EF);
        o->efs[o->n_ef++] = (uint32_t)v;
    }
    if (o->n_ef == 0)
        return bench_usage_error("--ef: expected a comma-separated list of beam widths, got '%s'",
                                 s);
    /* Ascending and unique: the recall-0.95 interpolation walks them in order. */
    qsort(o->efs, o->n_ef, sizeof o->efs[0], cmp_u32);
    size_t w = 1;
    for (size_t i = 1; i < o->n_ef; i++)
        if (o->efs[i] != o->efs[w - 1]) o->efs[w++] = o->efs[i];
    o->n_ef = w;
    return 0;
}

static int parse_quant_list(const char *s, ann_opts *o)
{
    char buf[64];
    if (strlen(s) >= sizeof buf)
        return bench_usage_error("--quant: expected none, int8 or none,int8, got '%s'", s);
    strcpy(buf, s);
    o->n_quant = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        vx_quant q;
        if (strcmp(tok, "none") == 0)
            q = VX_QUANT_NONE;
        else if (strcmp(tok, "int8") == 0)
            q = VX_QUANT_INT8;
        else
            return bench_usage_error("--quant: unknown mode '%s' (expected none or int8)", tok);
        for (size_t i = 0; i < o->n_quant; i++)
            if (o->quants[i] == q) return bench_usage_error("--quant: '%s' given twice", tok);
        o->quants[o->n_quant++] = q;
    }
    if (o->n_quant == 0)
        return bench_usage_error("--quant: expected none, int8 or none,int8, got '%s'", s);
    return 0;
}

enum {
    OPT_BASE = 1000,
    OPT_QUERY,
    OPT_GT,
    OPT_METRIC,
    OPT_M,
    OPT_EFC,
    OPT_EF,
    OPT_THREADS,
    OPT_QUANT,
    OPT_PEER,
    OPT_BUILD_THREADS,
    OPT_NQ,
    OPT_NBASE,
    OPT_K,
    OPT_RESCORE,
    OPT_REPEAT,
    OPT_JSON_ONLY,
    OPT_HELP,
};

/* 0 ok, 2 usage error (printed), -1 --help printed. */
static int parse_opts(int argc, char **argv, ann_opts *o)
{
    static const struct option longopts[] = {
        {"base", required_argument, NULL, OPT_BASE},
        {"query", required_argument, NULL, OPT_QUERY},
        {"gt", required_argument, NULL, OPT_GT},
        {"metric", required_argument, NULL, OPT_METRIC},
        {"m", required_argument, NULL, OPT_M},
        {"ef-construction", required_argument, NULL, OPT_EFC},
        {"ef", required_argument, NULL, OPT_EF},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"quant", required_argument, NULL, OPT_QUANT},
        {"peer", required_argument, NULL, OPT_PEER},
        {"build-threads", required_argument, NULL, OPT_BUILD_THREADS},
        {"nq", required_argument, NULL, OPT_NQ},
        {"nbase", required_argument, NULL, OPT_NBASE},
        {"k", required_argument, NULL, OPT_K},
        {"rescore", required_argument, NULL, OPT_RESCORE},
        {"repeat", required_argument, NULL, OPT_REPEAT},
        {"json-only", no_argument, NULL, OPT_JSON_ONLY},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    /* Required options, in the order the usage lists them. */
    static const struct {
        int id;
        const char *name;
    } required[] = {
        {OPT_BASE, "base"},   {OPT_QUERY, "query"},
        {OPT_GT, "gt"},       {OPT_METRIC, "metric"},
        {OPT_M, "m"},         {OPT_EFC, "ef-construction"},
        {OPT_EF, "ef"},       {OPT_THREADS, "threads"},
        {OPT_QUANT, "quant"}, {OPT_PEER, "peer"},
    };
    bool seen[OPT_HELP + 1] = {false};
    unsigned long long v;
    int c, rc, li = -1;

    memset(o, 0, sizeof *o);
    o->build_threads = 2;
    o->k = 10;
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
        case OPT_GT:
            o->gt_path = optarg;
            break;
        case OPT_METRIC:
            if ((rc = bench_parse_metric(optarg, &o->metric))) return rc;
            o->metric_name = optarg;
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
            if ((rc = parse_ef_list(optarg, o))) return rc;
            break;
        case OPT_THREADS:
            if ((rc = bench_parse_uint("threads", optarg, 1, 1024, &v))) return rc;
            o->threads = (size_t)v;
            break;
        case OPT_QUANT:
            if ((rc = parse_quant_list(optarg, o))) return rc;
            break;
        case OPT_PEER:
            if (strcmp(optarg, "hnswlib") == 0)
                o->peer = true;
            else if (strcmp(optarg, "none") == 0)
                o->peer = false;
            else
                return bench_usage_error("--peer: expected hnswlib or none, got '%s'", optarg);
            break;
        case OPT_BUILD_THREADS:
            if ((rc = bench_parse_uint("build-threads", optarg, 1, 1024, &v))) return rc;
            o->build_threads = (size_t)v;
            break;
        case OPT_NQ:
            if ((rc = bench_parse_uint("nq", optarg, 1, SIZE_MAX, &v))) return rc;
            o->nq = (size_t)v;
            break;
        case OPT_NBASE:
            if ((rc = bench_parse_uint("nbase", optarg, 1, SIZE_MAX, &v))) return rc;
            o->nbase = (size_t)v;
            break;
        case OPT_K:
            if ((rc = bench_parse_uint("k", optarg, 1, 4096, &v))) return rc;
            o->k = (uint32_t)v;
            break;
        case OPT_RESCORE:
            if ((rc = bench_parse_uint("rescore", optarg, 0, UINT32_MAX, &v))) return rc;
            o->rescore = (uint32_t)v;
            break;
        case OPT_REPEAT:
            if ((rc = bench_parse_uint("repeat", optarg, 1, 1000, &v))) return rc;
            o->repeat = (size_t)v;
            break;
        case OPT_JSON_ONLY:
            o->json_only = true;
            break;
        case OPT_HELP:
            bench_ann_usage(stdout);
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

/* ---- the data ----------------------------------------------------------- */

static int load_data(const ann_opts *o, bench_data *d)
{
    char err[256];
    size_t gt_rows, base_file_rows;
    int rc;

    if ((rc = bench_load_vectors(o->base_path, o->nbase, o->query_path, o->nq, false, d)))
        return rc;
    base_file_rows = d->nbase;
    if ((rc = vx_ivecs_read(o->gt_path, d->nq, &d->gt, &gt_rows, &d->gt_cols, err))) {
        bench_fail("ground truth: %s", err);
        return 1;
    }
    if (gt_rows < d->nq) {
        bench_fail("%s has %zu rows, fewer than the %zu queries", o->gt_path, gt_rows, d->nq);
        return 1;
    }
    if (d->gt_cols < o->k) {
        bench_fail("%s lists %zu neighbours per query, fewer than --k %u", o->gt_path, d->gt_cols,
                   o->k);
        return 1;
    }
    if (o->threads > d->nq) {
        bench_fail("--threads %zu exceeds the number of queries (%zu)", o->threads, d->nq);
        return 1;
    }
    /* Ground-truth ids are base row numbers: they must be valid, and with
     * --nbase smaller than the set they usually point past the subset. */
    size_t beyond = 0;
    for (size_t i = 0; i < d->nq; i++)
        for (size_t j = 0; j < o->k; j++) {
            int32_t id = d->gt[i * d->gt_cols + j];
            if (id < 0) {
                bench_fail("%s: row %zu lists a negative id %d", o->gt_path, i, (int)id);
                return 1;
            }
            if ((size_t)id >= d->nbase) beyond++;
        }
    if (beyond)
        fprintf(stderr,
                "vectron-bench ann: warning: %zu of the %zu ground-truth ids are >= the %zu "
                "base vectors loaded%s; recall is measured against ids that cannot be found\n",
                beyond, d->nq * (size_t)o->k, base_file_rows, o->nbase ? " (--nbase)" : "");
    bench_progress(
        "loaded %zu base and %zu query vectors of dimension %zu, ground truth %zu/query\n",
        d->nbase, d->nq, d->dim, d->gt_cols);
    return 0;
}

/* ---- one system, behind a small vtable ----------------------------------- */

static void vectron_set_ef(bench_system *s, uint32_t ef)
{
    s->ef = ef;
}

static int vectron_search(bench_system *s, const float *q, uint64_t *labels, void *scratch,
                          char *err)
{
    vx_search_params params = {.ef = s->ef, .rescore = s->rescore};
    vx_hit *hits = scratch;
    uint32_t n = 0;
    int rc = vx_index_search(s->impl, q, s->k, &params, NULL, hits, &n);
    if (rc != 0) {
        snprintf(err, 256, "vx_index_search (ef %u, k %u): %s", s->ef, s->k, vx_strerror(rc));
        return rc;
    }
    if (n > s->k) {
        snprintf(err, 256, "vx_index_search returned %u hits for k %u", n, s->k);
        return VX_ESTATE;
    }
    for (uint32_t i = 0; i < n; i++)
        labels[i] = hits[i].label;
    return (int)n;
}

static void peer_set_ef(bench_system *s, uint32_t ef)
{
    s->ef = ef;
    vx_peer_hnswlib_set_ef(s->impl, ef);
}

static int peer_search(bench_system *s, const float *q, uint64_t *labels, void *scratch, char *err)
{
    return (int)vx_peer_hnswlib_search(s->impl, q, s->k, labels, NULL);
}

/* ---- search passes ------------------------------------------------------- */

static double recall_at_k(const bench_data *d, size_t nq, uint32_t k, const uint64_t *labels)
{
    size_t found = 0;
    for (size_t i = 0; i < nq; i++) {
        const int32_t *gt = d->gt + i * d->gt_cols;
        const uint64_t *res = labels + i * k;
        for (uint32_t j = 0; j < k; j++) {
            if (res[j] == UINT64_MAX) continue;
            for (uint32_t g = 0; g < k; g++)
                if (res[j] == (uint64_t)gt[g]) {
                    found++;
                    break;
                }
        }
    }
    return (double)found / ((double)nq * k);
}

typedef struct ann_point {
    uint32_t ef;
    double recall, qps, p50_us, p99_us;
} ann_point;

typedef struct ann_result {
    const char *system, *quant;
    double build_s, rss_mib, vectors_mib, index_mib;
    ann_point pts[ANN_MAX_EF];
    size_t n_pts;
} ann_result;

typedef struct pass_stat {
    double qps, recall;
    double *lat_us;
} pass_stat;

static int cmp_pass_qps(const void *a, const void *b)
{
    return bench_cmp_double(&((const pass_stat *)a)->qps, &((const pass_stat *)b)->qps);
}

static void print_point(const ann_opts *o, const bench_data *d, const bench_system *s,
                        const ann_result *r, const ann_point *pt)
{
    printf("{\"system\":\"%s\",\"quant\":\"%s\",\"ef\":%u,\"recall_at_%u\":", s->name, s->quant,
           pt->ef, o->k);
    bench_print_num("%.4f", pt->recall);
    fputs(",\"qps\":", stdout);
    bench_print_num("%.1f", pt->qps);
    fputs(",\"p50_us\":", stdout);
    bench_print_num("%.1f", pt->p50_us);
    fputs(",\"p99_us\":", stdout);
    bench_print_num("%.1f", pt->p99_us);
    printf(",\"threads\":%zu,\"build_s\":", o->threads);
    bench_print_num("%.3f", r->build_s);
    fputs(",\"index_mib\":", stdout);
    bench_print_num("%.1f", r->index_mib);
    fputs(",\"vectors_mib\":", stdout);
    bench_print_num("%.1f", r->vectors_mib);
    fputs(",\"rss_mib\":", stdout);
    bench_print_num("%.1f", r->rss_mib);
    printf(",\"isa\":\"%s\",\"metric\":\"%s\",\"m\":%u,\"ef_construction\":%u,\"k\":%u,"
           "\"nbase\":%zu,\"nq\":%zu,\"build_threads\":%zu}\n",
           s->isa, o->metric_name, o->m, o->ef_construction, o->k, d->nbase, d->nq,
           o->build_threads);
    fflush(stdout);
}

/* Every ef: warm-up (first ef only), --repeat passes, the median pass. */
static int measure_search(const ann_opts *o, const bench_data *d, bench_system *s, ann_result *r)
{
    const size_t nq = d->nq, k = o->k;
    uint64_t *labels = malloc(nq * k * sizeof *labels);
    pass_stat *passes = calloc(o->repeat, sizeof *passes);
    double *sorted = malloc(nq * sizeof *sorted);
    int ret = 1;

    if (labels == NULL || passes == NULL || sorted == NULL) goto out_of_memory;
    for (size_t i = 0; i < o->repeat; i++)
        if ((passes[i].lat_us = malloc(nq * sizeof(double))) == NULL) goto out_of_memory;

    for (size_t e = 0; e < o->n_ef; e++) {
        ann_point *pt = &r->pts[r->n_pts];
        s->set_ef(s, o->efs[e]);
        if (e == 0) {
            size_t nw = nq < ANN_WARMUP_QUERIES ? nq : ANN_WARMUP_QUERIES;
            if (bench_run_pass(s, d->query, d->dim, nw, o->threads < nw ? o->threads : nw, labels,
                               passes[0].lat_us) < 0)
                goto done;
        }
        for (size_t i = 0; i < o->repeat; i++) {
            double wall =
                bench_run_pass(s, d->query, d->dim, nq, o->threads, labels, passes[i].lat_us);
            if (wall < 0) goto done;
            passes[i].qps = wall > 0 ? (double)nq / wall : INFINITY;
            passes[i].recall = recall_at_k(d, nq, o->k, labels);
        }
        qsort(passes, o->repeat, sizeof *passes, cmp_pass_qps);
        const pass_stat *med = &passes[o->repeat / 2];
        memcpy(sorted, med->lat_us, nq * sizeof *sorted);
        qsort(sorted, nq, sizeof *sorted, bench_cmp_double);
        pt->ef = o->efs[e];
        pt->recall = med->recall;
        pt->qps = med->qps;
        pt->p50_us = bench_percentile_sorted(sorted, nq, 0.50);
        pt->p99_us = bench_percentile_sorted(sorted, nq, 0.99);
        r->n_pts++;
        bench_progress(
            "  %-7s %-4s ef %5u  recall@%u %.4f  %9.1f q/s  p50 %7.1f us  p99 %7.1f us\n", s->name,
            s->quant, pt->ef, o->k, pt->recall, pt->qps, pt->p50_us, pt->p99_us);
        print_point(o, d, s, r, pt);
    }
    ret = 0;
    goto done;

out_of_memory:
    bench_fail("out of memory for %zu queries", nq);
done:
    if (passes)
        for (size_t i = 0; i < o->repeat; i++)
            free(passes[i].lat_us);
    free(passes);
    free(labels);
    free(sorted);
    return ret;
}

/* ---- the two systems ---------------------------------------------------- */

static int run_vectron(const ann_opts *o, const bench_data *d, vx_quant quant, ann_result *r)
{
    vx_index_config cfg;
    vx_index *idx = NULL;
    vx_index_stats st;
    int ret = 1;

    r->system = "vectron";
    r->quant = quant == VX_QUANT_INT8 ? "int8" : "none";
    bench_progress("vectron %s: building from %zu vectors with %zu threads ...\n", r->quant,
                   d->nbase, o->build_threads);

    size_t rss0 = bench_rss_baseline();
    double t0 = bench_now_s();
    vx_index_config_default(&cfg, (uint32_t)d->dim, o->metric);
    cfg.m = o->m;
    cfg.ef_construction = o->ef_construction;
    cfg.quant = quant;
    cfg.rescore = o->rescore;
    if (bench_vectron_create(d, &cfg, &idx)) return 1;
    if (bench_build_insert_all(d, false, idx, o->build_threads)) goto err_after_new;
    r->build_s = bench_now_s() - t0;
    size_t rss1 = bench_rss_bytes();

    vx_index_get_stats(idx, &st);
    if (st.live != d->nbase) {
        bench_fail("vectron: the index holds %" PRIu64 " live vectors after inserting %zu", st.live,
                   d->nbase);
        goto err_after_new;
    }
    r->rss_mib = rss1 > rss0 ? (double)(rss1 - rss0) / MIB : 0.0;
    r->vectors_mib = (double)st.vector_bytes / MIB;
    r->index_mib = r->rss_mib - r->vectors_mib;
    bench_progress(
        "vectron %s: built in %.2f s, RSS +%.1f MiB (vectors %.1f, index %.1f; graph %.1f, "
        "codes %.1f MiB by stats), max level %u\n",
        r->quant, r->build_s, r->rss_mib, r->vectors_mib, r->index_mib,
        (double)st.graph_bytes / MIB, (double)st.code_bytes / MIB, st.max_level);

    bench_system s = {
        .name = "vectron",
        .quant = r->quant,
        .isa = vx_kern.name,
        .impl = idx,
        .k = o->k,
        .rescore = o->rescore,
        .set_ef = vectron_set_ef,
        .search = vectron_search,
        .scratch_bytes = o->k * sizeof(vx_hit),
    };
    ret = measure_search(o, d, &s, r);

err_after_new:
    vx_index_free(idx);
    return ret;
}

static int run_hnswlib(const ann_opts *o, const bench_data *d, ann_result *r)
{
    r->system = "hnswlib";
    r->quant = "none";
    bench_progress("hnswlib: building from %zu vectors with %zu threads ...\n", d->nbase,
                   o->build_threads);

    size_t rss0 = bench_rss_baseline();
    double t0 = bench_now_s();
    vx_peer *p = vx_peer_hnswlib_new(d->dim, (int)o->metric, d->nbase, o->m, o->ef_construction);
    if (p == NULL) {
        bench_fail("hnswlib: could not create the index");
        return 1;
    }
    if (bench_build_insert_all(d, true, p, o->build_threads)) {
        vx_peer_hnswlib_free(p);
        return 1;
    }
    r->build_s = bench_now_s() - t0;
    size_t rss1 = bench_rss_bytes();
    r->rss_mib = rss1 > rss0 ? (double)(rss1 - rss0) / MIB : 0.0;
    r->vectors_mib = 0;
    r->index_mib = r->rss_mib;
    bench_progress("hnswlib: built in %.2f s, RSS +%.1f MiB\n", r->build_s, r->rss_mib);

    bench_system s = {
        .name = "hnswlib",
        .quant = "none",
        .isa = "native",
        .impl = p,
        .k = o->k,
        .set_ef = peer_set_ef,
        .search = peer_search,
    };
    int ret = measure_search(o, d, &s, r);
    vx_peer_hnswlib_free(p);
    return ret;
}

/* ---- summary ------------------------------------------------------------ */

/* Queries/s at `target` recall, interpolated between the first two
 * consecutive ef points (ascending ef) that bracket it; NAN if none do. */
static double qps_at_recall(const ann_result *r, double target)
{
    for (size_t i = 0; i < r->n_pts; i++) {
        const ann_point *a = &r->pts[i];
        if (a->recall == target) return a->qps;
        if (i + 1 == r->n_pts) break;
        const ann_point *b = &r->pts[i + 1];
        if (a->recall < target && b->recall >= target)
            return a->qps + (b->qps - a->qps) * (target - a->recall) / (b->recall - a->recall);
    }
    return NAN;
}

static double ratio(double a, double b)
{
    return (isfinite(a) && isfinite(b) && b > 0) ? a / b : NAN;
}

static void print_summary(const ann_result *v, const ann_result *h)
{
    double vq = qps_at_recall(v, ANN_RECALL_TARGET), hq = qps_at_recall(h, ANN_RECALL_TARGET);
    if (!isfinite(vq) || !isfinite(hq))
        bench_progress("summary %s: recall %.2f not bracketed by the ef list for %s%s%s\n",
                       v->quant, ANN_RECALL_TARGET, !isfinite(vq) ? "vectron" : "",
                       (!isfinite(vq) && !isfinite(hq)) ? " and " : "",
                       !isfinite(hq) ? "hnswlib" : "");
    printf("{\"summary\":true,\"quant\":\"%s\",\"qps_ratio_at_recall_0.95\":", v->quant);
    bench_print_num("%.3f", ratio(vq, hq));
    fputs(",\"vectron_qps_at_0.95\":", stdout);
    bench_print_num("%.1f", vq);
    fputs(",\"hnswlib_qps_at_0.95\":", stdout);
    bench_print_num("%.1f", hq);
    fputs(",\"build_ratio\":", stdout);
    bench_print_num("%.3f", ratio(v->build_s, h->build_s));
    fputs(",\"memory_ratio\":", stdout);
    bench_print_num("%.3f", ratio(v->index_mib, h->index_mib));
    fputs("}\n", stdout);
    fflush(stdout);
    bench_progress(
        "summary %s: qps ratio at recall 0.95 %.3f, build ratio %.3f, memory ratio %.3f\n",
        v->quant, ratio(vq, hq), ratio(v->build_s, h->build_s), ratio(v->index_mib, h->index_mib));
}

/* ---- main --------------------------------------------------------------- */

int bench_ann_main(int argc, char **argv)
{
    ann_opts o;
    bench_data d = {0};
    ann_result results[2], peer_result;
    bench_set_command("ann");
    int rc = parse_opts(argc, argv, &o);
    if (rc < 0) return 0; /* --help */
    if (rc) return rc;
    bench_quiet = o.json_only;

    vx_kernels_init();
    bench_progress("vectron-bench ann: distance kernels %s\n", vx_kern.name);
    if ((rc = load_data(&o, &d))) goto out;

    memset(results, 0, sizeof results);
    memset(&peer_result, 0, sizeof peer_result);
    for (size_t q = 0; q < o.n_quant; q++)
        if ((rc = run_vectron(&o, &d, o.quants[q], &results[q]))) goto out;
    if (o.peer) {
        if ((rc = run_hnswlib(&o, &d, &peer_result))) goto out;
        for (size_t q = 0; q < o.n_quant; q++)
            print_summary(&results[q], &peer_result);
    }
    rc = 0;
out:
    bench_free_data(&d);
    return rc;
}
