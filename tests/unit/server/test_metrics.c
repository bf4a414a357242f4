/*
 * test_metrics.c - the Prometheus registry: the exact exposition text of a
 * small registry (ordering, HELP escaping, cumulative histogram buckets),
 * exact sums under concurrent updates, refusal of malformed names and label
 * sets, callback gauges and their removal, and bucket quantiles.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "server/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *render(vx_metrics *m)
{
    size_t len = 0;
    char *s = vx_metrics_render(m, &len);
    assert_non_null(s);
    assert_int_equal(strlen(s), len);
    return s;
}

static void test_render_exact(void **state)
{
    (void)state;
    vx_metrics *m = vx_metrics_new();
    assert_non_null(m);

    /* registered out of order: the output must be sorted anyway */
    vx_gauge *up = vx_metrics_gauge(m, "vx_up", "Whether the node is up.\nA \\ test.", "");
    vx_counter *search = vx_metrics_counter(m, "vx_requests_total", "Requests served.",
                                            "route=\"search\",code=\"200\"");
    vx_counter *points =
        vx_metrics_counter(m, "vx_requests_total", NULL, "route=\"points\",code=\"200\"");
    vx_histogram *h = vx_metrics_histogram(m, "vx_request_seconds", "Latency.", "route=\"search\"");
    vx_counter *plain = vx_metrics_counter(m, "vx_errors_total", "Errors.", NULL);
    assert_non_null(up);
    assert_non_null(search);
    assert_non_null(points);
    assert_non_null(h);
    assert_non_null(plain);

    /* the same (name, labels) is the same series */
    assert_ptr_equal(
        vx_metrics_counter(m, "vx_requests_total", "other help", "route=\"search\",code=\"200\""),
        search);
    assert_ptr_equal(vx_metrics_histogram(m, "vx_request_seconds", NULL, "route=\"search\""), h);

    vx_gauge_set(up, 1);
    vx_counter_add(search, 3);
    vx_counter_add(points, 1);
    vx_counter_add(search, 2);
    /* exactly representable values so that _sum is exact: 2^-12, 2^-8 twice,
     * 0.75 and 20 (above every bound) */
    vx_histogram_observe(h, 0.000244140625);
    vx_histogram_observe(h, 0.00390625);
    vx_histogram_observe(h, 0.00390625);
    vx_histogram_observe(h, 0.75);
    vx_histogram_observe(h, 20);
    vx_histogram_observe(h, NAN); /* ignored */

    char *s = render(m);
    const char *want = "# HELP vx_errors_total Errors.\n"
                       "# TYPE vx_errors_total counter\n"
                       "vx_errors_total 0\n"
                       "# HELP vx_request_seconds Latency.\n"
                       "# TYPE vx_request_seconds histogram\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.0005\"} 1\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.001\"} 1\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.0025\"} 1\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.005\"} 3\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.01\"} 3\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.025\"} 3\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.05\"} 3\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.1\"} 3\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.25\"} 3\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"0.5\"} 3\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"1\"} 4\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"2.5\"} 4\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"5\"} 4\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"10\"} 4\n"
                       "vx_request_seconds_bucket{route=\"search\",le=\"+Inf\"} 5\n"
                       "vx_request_seconds_sum{route=\"search\"} 20.758056640625\n"
                       "vx_request_seconds_count{route=\"search\"} 5\n"
                       "# HELP vx_requests_total Requests served.\n"
                       "# TYPE vx_requests_total counter\n"
                       "vx_requests_total{route=\"points\",code=\"200\"} 1\n"
                       "vx_requests_total{route=\"search\",code=\"200\"} 5\n"
                       "# HELP vx_up Whether the node is up.\\nA \\\\ test.\n"
                       "# TYPE vx_up gauge\n"
                       "vx_up 1\n";
    assert_string_equal(s, want);
    free(s);

    /* a histogram without labels, and gauge values that need care */
    vx_histogram *h2 = vx_metrics_histogram(m, "a_seconds", "x", "");
    vx_histogram_observe(h2, 0.001); /* exactly on a bound: le is inclusive */
    vx_gauge_set(up, 0.1);
    s = render(m);
    assert_non_null(strstr(s, "# TYPE a_seconds histogram\na_seconds_bucket{le=\"0.0005\"} 0\n"
                              "a_seconds_bucket{le=\"0.001\"} 1\n"));
    assert_non_null(strstr(s, "a_seconds_bucket{le=\"+Inf\"} 1\na_seconds_sum 0.001\n"
                              "a_seconds_count 1\n"));
    assert_ptr_equal(strstr(s, "# HELP a_seconds x\n"), s); /* sorts first */
    assert_non_null(strstr(s, "\nvx_up 0.1\n"));
    free(s);
    vx_gauge_set(up, INFINITY);
    s = render(m);
    assert_non_null(strstr(s, "\nvx_up +Inf\n"));
    free(s);
    vx_gauge_set(up, -2.5);
    vx_gauge_add(up, 1);
    assert_true(vx_gauge_get(up) == -1.5);
    s = render(m);
    assert_non_null(strstr(s, "\nvx_up -1.5\n"));
    free(s);

    vx_metrics_free(m);
}

static void test_empty_registry_renders_empty(void **state)
{
    (void)state;
    vx_metrics *m = vx_metrics_new();
    char *s = render(m);
    assert_string_equal(s, "");
    free(s);
    vx_metrics_free(m);
    /* NULL series are tolerated: a failed registration costs a metric only */
    vx_counter_add(NULL, 1);
    vx_gauge_set(NULL, 1);
    vx_gauge_add(NULL, 1);
    vx_histogram_observe(NULL, 1);
    assert_int_equal(vx_counter_get(NULL), 0);
    assert_int_equal(vx_histogram_count(NULL), 0);
    vx_metrics_free(NULL);
}

#define NTHREADS 4
#define NADDS 1000000
#define NOBS 100000

static void *hammer(void *arg)
{
    vx_metrics *m = arg;
    /* every thread registers too, racing the others on the mutex path */
    vx_counter *c = vx_metrics_counter(m, "hits_total", "h", "k=\"v\"");
    vx_gauge *g = vx_metrics_gauge(m, "inflight", "g", "");
    vx_histogram *h = vx_metrics_histogram(m, "lat_seconds", "l", "");
    if (c == NULL || g == NULL || h == NULL) return (void *)1;
    for (int i = 0; i < NADDS; i++)
        vx_counter_add(c, 1);
    for (int i = 0; i < NOBS; i++) {
        vx_gauge_add(g, 1.0);
        vx_histogram_observe(h, (i % 2) ? 0.002 : 3.0);
    }
    return NULL;
}

static void test_concurrent_updates_sum_exactly(void **state)
{
    (void)state;
    vx_metrics *m = vx_metrics_new();
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, m), 0);
    /* scrape while they run: rendering must not block or break them */
    for (int i = 0; i < 20; i++)
        free(render(m));
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        assert_null(ret);
    }
    vx_counter *c = vx_metrics_counter(m, "hits_total", NULL, "k=\"v\"");
    vx_gauge *g = vx_metrics_gauge(m, "inflight", NULL, "");
    vx_histogram *h = vx_metrics_histogram(m, "lat_seconds", NULL, "");
    assert_true(vx_counter_get(c) == (uint64_t)NTHREADS * NADDS);
    assert_true(vx_gauge_get(g) == (double)NTHREADS * NOBS);
    assert_true(vx_histogram_count(h) == (uint64_t)NTHREADS * NOBS);

    char *s = render(m);
    char line[128];
    snprintf(line, sizeof line, "\nhits_total{k=\"v\"} %d\n", NTHREADS * NADDS);
    assert_non_null(strstr(s, line));
    snprintf(line, sizeof line, "\nlat_seconds_bucket{le=\"0.0025\"} %d\n", NTHREADS * NOBS / 2);
    assert_non_null(strstr(s, line));
    snprintf(line, sizeof line, "\nlat_seconds_count %d\n", NTHREADS * NOBS);
    assert_non_null(strstr(s, line));
    /* 200000 * 3.0 + 200000 * 0.002, summed in some order: close to 600400 */
    const char *sum = strstr(s, "\nlat_seconds_sum ");
    assert_non_null(sum);
    assert_true(fabs(strtod(sum + strlen("\nlat_seconds_sum "), NULL) - 600400.0) < 1e-3);
    free(s);
    vx_metrics_free(m);
}

static double one(void *ctx)
{
    (void)ctx;
    return 1;
}

static void test_bad_names_refused(void **state)
{
    (void)state;
    vx_metrics *m = vx_metrics_new();
    static const char *const bad_names[] = {"", "1abc", "a-b", "a b", "a.b", "caf\xc3\xa9", "a{"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        assert_null(vx_metrics_counter(m, bad_names[i], "h", ""));
        assert_null(vx_metrics_gauge(m, bad_names[i], "h", ""));
        assert_null(vx_metrics_histogram(m, bad_names[i], "h", ""));
    }
    assert_null(vx_metrics_counter(m, NULL, "h", ""));
    assert_int_equal(vx_metrics_gauge_fn(m, "1bad", "h", "", one, NULL), VX_EINVAL);

    static const char *const bad_labels[] = {
        "route=search",            /* unquoted */
        "route=\"a",               /* unterminated */
        "route=\"a\",",            /* trailing comma */
        ",route=\"a\"",            /* leading comma */
        "route=\"a\" ,code=\"1\"", /* stray blank */
        "a=\"x\",a=\"y\"",         /* repeated name */
        "__name__=\"x\"",          /* reserved prefix */
        "1a=\"x\"",                /* bad label name */
        "a-b=\"x\"",               /* bad label name */
        "a=\"x\\q\"",              /* unknown escape */
        "a=\"two\nlines\"",        /* raw newline */
        "a=\"x\"\"",               /* quote not escaped */
    };
    for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++) {
        assert_null(vx_metrics_counter(m, "ok_total", "h", bad_labels[i]));
        assert_int_equal(vx_metrics_gauge_fn(m, "ok_gauge", "h", bad_labels[i], one, NULL),
                         VX_EINVAL);
    }
    /* le is the exposition's own label on histograms */
    assert_null(vx_metrics_histogram(m, "h_seconds", "h", "le=\"1\""));
    assert_null(vx_metrics_histogram(m, "h_seconds", "h", "a=\"1\",le=\"1\""));

    /* nothing above was registered */
    char *s = render(m);
    assert_string_equal(s, "");
    free(s);

    /* valid odd names and escaped values are accepted */
    assert_non_null(vx_metrics_counter(m, ":a:b_c1", "h", ""));
    assert_non_null(vx_metrics_counter(m, "_x", "h", "a=\"q\\\"uote \\\\ \\n\",b_2=\"\""));

    /* one name, one type */
    assert_non_null(vx_metrics_counter(m, "typed", "h", ""));
    assert_null(vx_metrics_gauge(m, "typed", "h", "x=\"1\""));
    assert_null(vx_metrics_histogram(m, "typed", "h", ""));
    s = render(m);
    assert_non_null(strstr(s, "# TYPE typed counter\ntyped 0\n"));
    assert_null(strstr(s, "x=\"1\""));
    free(s);
    vx_metrics_free(m);
}

typedef struct coll {
    double points;
    int calls;
} coll;

static double coll_points(void *ctx)
{
    coll *c = ctx;
    c->calls++;
    return c->points;
}

static double coll_bytes(void *ctx)
{
    coll *c = ctx;
    c->calls++;
    return c->points * 512;
}

static void test_callback_gauges_removed(void **state)
{
    (void)state;
    vx_metrics *m = vx_metrics_new();
    coll a = {10, 0}, b = {20, 0};
    assert_int_equal(
        vx_metrics_gauge_fn(m, "vx_points", "Points.", "collection=\"a\"", coll_points, &a), 0);
    assert_int_equal(
        vx_metrics_gauge_fn(m, "vx_points", "Points.", "collection=\"b\"", coll_points, &b), 0);
    assert_int_equal(
        vx_metrics_gauge_fn(m, "vx_bytes", "Bytes.", "collection=\"a\"", coll_bytes, &a), 0);
    assert_int_equal(
        vx_metrics_gauge_fn(m, "vx_points", "Points.", "collection=\"a\"", coll_points, &b),
        VX_EEXISTS);
    assert_int_equal(vx_metrics_gauge_fn(m, "vx_points", "Points.", "", NULL, &a), VX_EINVAL);
    /* a callback series has no storage for vx_gauge_set */
    assert_null(vx_metrics_gauge(m, "vx_points", NULL, "collection=\"a\""));
    /* and a name is one type */
    assert_null(vx_metrics_counter(m, "vx_points", NULL, "collection=\"c\""));
    /* a plain gauge may share the family with callback ones */
    vx_gauge *total = vx_metrics_gauge(m, "vx_points", NULL, "collection=\"all\"");
    assert_non_null(total);
    vx_gauge_set(total, 30);

    a.points = 11; /* evaluated at render time, not at registration */
    char *s = render(m);
    assert_string_equal(s, "# HELP vx_bytes Bytes.\n"
                           "# TYPE vx_bytes gauge\n"
                           "vx_bytes{collection=\"a\"} 5632\n"
                           "# HELP vx_points Points.\n"
                           "# TYPE vx_points gauge\n"
                           "vx_points{collection=\"a\"} 11\n"
                           "vx_points{collection=\"all\"} 30\n"
                           "vx_points{collection=\"b\"} 20\n");
    free(s);
    assert_int_equal(a.calls, 2);
    assert_int_equal(b.calls, 1);

    /* collection a is deleted: its callbacks go, and vx_bytes with them */
    vx_metrics_remove_fn(m, &a);
    s = render(m);
    assert_string_equal(s, "# HELP vx_points Points.\n"
                           "# TYPE vx_points gauge\n"
                           "vx_points{collection=\"all\"} 30\n"
                           "vx_points{collection=\"b\"} 20\n");
    free(s);
    assert_int_equal(a.calls, 2); /* never called again */
    assert_int_equal(b.calls, 2);

    /* removing an unknown ctx is a no-op; re-registering a removed series works */
    vx_metrics_remove_fn(m, &s);
    coll a2 = {1, 0};
    assert_int_equal(
        vx_metrics_gauge_fn(m, "vx_points", "Points.", "collection=\"a\"", coll_points, &a2), 0);
    vx_metrics_remove_fn(m, &b);
    s = render(m);
    assert_string_equal(s, "# HELP vx_points Points.\n"
                           "# TYPE vx_points gauge\n"
                           "vx_points{collection=\"a\"} 1\n"
                           "vx_points{collection=\"all\"} 30\n");
    free(s);
    vx_metrics_free(m);
}

static void test_quantile(void **state)
{
    (void)state;
    vx_metrics *m = vx_metrics_new();
    vx_histogram *h = vx_metrics_histogram(m, "q_seconds", "q", "");
    assert_true(isnan(vx_histogram_quantile(h, 0.5))); /* no observations */
    /* 50 in (0.0025, 0.005] and 50 in (0.25, 0.5] */
    for (int i = 0; i < 50; i++) {
        vx_histogram_observe(h, 0.003);
        vx_histogram_observe(h, 0.3);
    }
    assert_true(fabs(vx_histogram_quantile(h, 0.25) - 0.00375) < 1e-12);
    assert_true(fabs(vx_histogram_quantile(h, 0.5) - 0.005) < 1e-12);
    assert_true(fabs(vx_histogram_quantile(h, 0.75) - 0.375) < 1e-12);
    assert_true(fabs(vx_histogram_quantile(h, 1.0) - 0.5) < 1e-12);
    assert_true(fabs(vx_histogram_quantile(h, 0.0) - 0.0025) < 1e-12);
    assert_true(isnan(vx_histogram_quantile(h, 1.5)));
    assert_true(isnan(vx_histogram_quantile(h, -0.1)));
    assert_true(isnan(vx_histogram_quantile(h, NAN)));

    /* ranks in +Inf report the highest finite bound */
    vx_histogram *slow = vx_metrics_histogram(m, "slow_seconds", "s", "");
    vx_histogram_observe(slow, 0.0001);
    vx_histogram_observe(slow, 30);
    vx_histogram_observe(slow, 60);
    assert_true(vx_histogram_quantile(slow, 0.9) == 10.0);
    /* the first bucket interpolates from 0 */
    assert_true(fabs(vx_histogram_quantile(slow, 1.0 / 6) - 0.00025) < 1e-12);
    vx_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_empty_registry_renders_empty),
        cmocka_unit_test(test_concurrent_updates_sum_exactly),
        cmocka_unit_test(test_bad_names_refused),
        cmocka_unit_test(test_callback_gauges_removed),
        cmocka_unit_test(test_quantile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
