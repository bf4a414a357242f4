/*
 * bench_util.h - helpers shared by the vectron-bench commands: messages,
 * option parsing, clocks and RSS, percentiles, JSON numbers, the data set,
 * the threaded index build and timed query passes.
 *
 * Messages are prefixed with "vectron-bench <command>: "; each command sets
 * its name with bench_set_command() before printing anything.
 */
#ifndef VX_BENCH_BENCH_UTIL_H
#define VX_BENCH_BENCH_UTIL_H

#include "index/index.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- messages ------------------------------------------------------------ */

void bench_set_command(const char *name);
/* true: progress() prints nothing (--json-only). */
extern bool bench_quiet;

/* Human-readable progress on stderr, unless bench_quiet. */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A usage error on stderr, with a pointer to --help; returns 2. */
int bench_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A run-time failure on stderr. */
void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- options ------------------------------------------------------------- */

/* Parse a decimal integer in [lo, hi] for option --opt; 0, or 2 with the
 * usage error already printed. */
int bench_parse_uint(const char *opt, const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out);
/* l2 | ip | cosine; 0, or 2 with the usage error printed. */
int bench_parse_metric(const char *s, vx_metric *out);

/* ---- measurement --------------------------------------------------------- */

/* CLOCK_MONOTONIC in seconds. */
double bench_now_s(void);
/* Resident set size in bytes, or 0 when /proc is unavailable. */
size_t bench_rss_bytes(void);
/* RSS after giving freed heap pages back, so the next delta starts clean. */
size_t bench_rss_baseline(void);
/* qsort comparator for doubles, ascending. */
int bench_cmp_double(const void *a, const void *b);
/* Nearest-rank percentile of sorted v[n], p in (0, 1]. */
double bench_percentile_sorted(const double *v, size_t n, double p);
/* printf(fmt, v) on stdout, or JSON null when v is not finite. */
void bench_print_num(const char *fmt, double v);

/* ---- the data set ---------------------------------------------------------- */

typedef struct bench_data {
    float *base;
    size_t nbase, dim;
    float *query;
    size_t nq;
    int32_t *gt; /* ann only */
    size_t gt_cols;
} bench_data;

/* Load the first nbase base rows and nq query rows (0 = all) and check that
 * the files agree on the dimension and hold that many rows (queries only
 * when !nq_is_limit: with it, a shorter query file is used whole); 0, or 1
 * with the message printed. */
int bench_load_vectors(const char *base_path, size_t nbase, const char *query_path, size_t nq,
                       bool nq_is_limit, bench_data *d);
void bench_free_data(bench_data *d);

/* ---- building ------------------------------------------------------------ */

#define BENCH_TRAIN_ROWS 20000

/* vx_index_new(cfg) and, for INT8, vx_index_train on the first
 * min(nbase, BENCH_TRAIN_ROWS) base rows (normalized first for COSINE);
 * 0, or 1 with the message printed (nothing left allocated). */
int bench_vectron_create(const bench_data *d, const vx_index_config *cfg, vx_index **out);

/* Insert every base row (label = row number) into a vx_index (peer false)
 * or a vx_peer (peer true) with nthreads threads; 0, or 1 with the message
 * printed. */
int bench_build_insert_all(const bench_data *d, bool peer, void *impl, size_t nthreads);

/* ---- query passes ---------------------------------------------------------- */

/* One searchable system behind a small vtable. */
typedef struct bench_system {
    const char *name;  /* "vectron" | "hnswlib" */
    const char *quant; /* "none" | "int8" */
    const char *isa;
    void *impl;
    uint32_t k, rescore, ef; /* ef of the current pass */
    void *user;              /* command-specific state */
    /* Called once per ef, single-threaded, before the passes. */
    void (*set_ef)(struct bench_system *s, uint32_t ef);
    /* Search one query; labels[k] filled nearest first; returns hits found
     * or a negative error (message in err, VX_ERRMSG_LEN bytes). */
    int (*search)(struct bench_system *s, const float *q, uint64_t *labels, void *scratch,
                  char *err);
    size_t scratch_bytes; /* per query thread */
} bench_system;

/* One pass over the first nq rows of queries (dim floats each) with
 * nthreads threads, each owning a contiguous slice (1 = in the calling
 * thread).  labels: nq * k, UINT64_MAX where fewer than k were found;
 * lat_us: nq per-query latencies.  Wall seconds, or a negative value on
 * failure (message printed). */
double bench_run_pass(bench_system *s, const float *queries, size_t dim, size_t nq, size_t nthreads,
                      uint64_t *labels, double *lat_us);

#endif
