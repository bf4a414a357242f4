/*
 * metrics.h - Prometheus metrics: counters, gauges, histograms, and their
 * text exposition (format 0.0.4).
 *
 * Model.  A metric family has a name, a help text and a type; its series are
 * told apart by a label set passed as one preformatted string such as
 * `route="search",code="200"` ("" or NULL for none).  A series is identified
 * by the exact (name, labels) strings, so callers must build a label set
 * always in the same order; escaping `\`, `"` and newline inside label
 * values (as `\\`, `\"`, `\n`) is the caller's job, and a label set that is
 * not well formed is refused.
 *
 * Threading and cost.  Registration (vx_metrics_counter and friends) takes
 * one mutex and is O(log n); callers do it once and cache the returned
 * pointer, which stays valid until vx_metrics_free.  The hot operations
 * (vx_counter_add, vx_gauge_set, vx_histogram_observe) are relaxed C11
 * atomics on the series itself: no lock, no allocation, and each series sits
 * on its own cache line so that two hot counters do not false-share.  They
 * accept NULL and do nothing, so a failed registration (out of memory) costs
 * a metric, never a crash.
 *
 * Rendering takes the mutex, so it sees a consistent set of series; values
 * are read atomically one by one.  A histogram's _count is the sum of the
 * bucket counts it printed, so `le="+Inf"` and `_count` always agree; _sum
 * may be one observation ahead or behind.
 *
 * Callback gauges are evaluated by vx_metrics_render with the mutex held: the
 * callback must not call into this registry, and should be quick (it runs on
 * a scrape).  In return, once vx_metrics_remove_fn(m, ctx) has returned no
 * callback with that ctx is running or will run again, so the owner of ctx
 * (a collection being deleted) may free it right after.
 *
 * Ownership: the registry owns every series; the returned pointers are
 * borrowed.  Strings passed in are copied.
 */
#ifndef VX_SERVER_METRICS_H
#define VX_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct vx_metrics vx_metrics;
typedef struct vx_counter vx_counter;
typedef struct vx_gauge vx_gauge;
typedef struct vx_histogram vx_histogram;

/* The histogram buckets (upper bounds, seconds): 0.5 ms to 10 s, the range
 * between an in-memory search and a timed-out request. */
#define VX_HISTOGRAM_BUCKETS                                                                       \
    {                                                                                              \
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10             \
    }
#define VX_HISTOGRAM_NBUCKETS 14

/* Cap on the number of series in one registry.  Labels that carry user input
 * (a collection name) could otherwise grow the registry and every scrape
 * without bound; past the cap registration fails. */
#define VX_METRICS_MAX_SERIES 100000

/* A new empty registry, or NULL when out of memory. */
vx_metrics *vx_metrics_new(void);
/* Frees the registry and every series; the cached pointers die with it.
 * NULL is a no-op. */
void vx_metrics_free(vx_metrics *m);

/*
 * Registration.  Return the series (name, labels), created on first use.
 * name must match [a-zA-Z_:][a-zA-Z0-9_:]*; labels must be empty/NULL or
 * `l1="v1",l2="v2"` with label names [a-zA-Z_][a-zA-Z0-9_]* not starting
 * with "__", each name at most once, values escaped as above (histograms may
 * not use the label `le`, which the exposition adds).  help may be NULL; the
 * first registration of a name fixes its help and type.
 *
 * NULL when a name or label set is malformed, when the name is already
 * registered with another type (or, for gauges, the series is a callback
 * gauge), at the series cap, or when out of memory.
 */
vx_counter *vx_metrics_counter(vx_metrics *m, const char *name, const char *help,
                               const char *labels);
vx_gauge *vx_metrics_gauge(vx_metrics *m, const char *name, const char *help, const char *labels);
vx_histogram *vx_metrics_histogram(vx_metrics *m, const char *name, const char *help,
                                   const char *labels);

/* A gauge whose value is fn(ctx) at render time (e.g. the point count of a
 * collection).  0; VX_EINVAL for a malformed name or labels, a NULL fn, or a
 * name registered with another type; VX_EEXISTS when the series (name,
 * labels) already exists; VX_EFULL at the series cap; VX_ENOMEM. */
int vx_metrics_gauge_fn(vx_metrics *m, const char *name, const char *help, const char *labels,
                        double (*fn)(void *ctx), void *ctx);

/* Drop every callback gauge registered with ctx (pointer equality); see the
 * file comment for the guarantee on return.  A name left without series
 * disappears from the output. */
void vx_metrics_remove_fn(vx_metrics *m, void *ctx);

/* Hot path: lock-free, NULL-tolerant. */
void vx_counter_add(vx_counter *c, uint64_t n);
uint64_t vx_counter_get(const vx_counter *c);
void vx_gauge_set(vx_gauge *g, double v);
void vx_gauge_add(vx_gauge *g, double delta); /* for in-flight counts */
double vx_gauge_get(const vx_gauge *g);
/* Counts seconds in the first bucket whose bound is >= seconds (the
 * Prometheus `le` rule); above 10 s only +Inf.  NaN is ignored. */
void vx_histogram_observe(vx_histogram *h, double seconds);
uint64_t vx_histogram_count(const vx_histogram *h);

/* Estimate of the q-quantile (0 <= q <= 1) from the buckets, the way
 * Prometheus' histogram_quantile does: find the bucket holding rank q*count
 * and interpolate linearly inside it (the first bucket starts at 0).  A rank
 * in the +Inf bucket gives the highest finite bound (10).  NaN when q is out
 * of range or there are no observations.  For tests and logs; dashboards
 * should use histogram_quantile on the scraped buckets. */
double vx_histogram_quantile(const vx_histogram *h, double q);

/*
 * The exposition: for each metric name in strcmp order, one `# HELP` (with
 * `\` and newline escaped) and one `# TYPE` line, then its series in strcmp
 * order of their label strings.  Histograms print, per series, cumulative
 * `<name>_bucket{<labels>,le="<bound>"}` lines ending with le="+Inf", then
 * `<name>_sum` and `<name>_count`.  Values: integers for counters and counts,
 * the shortest round-tripping decimal for doubles, and +Inf, -Inf, NaN.
 *
 * Returns a NUL-terminated malloc'd string (the caller frees) and its length
 * in *len (len may be NULL); NULL when out of memory.
 */
char *vx_metrics_render(vx_metrics *m, size_t *len);

#endif
