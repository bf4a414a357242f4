/*
 * test_log.c - structured JSON logs: exact lines for every conversion, JSON
 * escaping and U+FFFD substitution checked against a real JSON parser
 * (cJSON), malformed field formats reported instead of followed, level
 * filtering, whole lines under concurrency, and unique request ids.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/log.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- capture ------------------------------------------------------------- */

static FILE *cap;

static void capture(int level)
{
    cap = tmpfile();
    assert_non_null(cap);
    vx_log_init(cap, level);
}

/* Everything logged since capture(); the caller frees.  Puts the logger back
 * on stderr so a later failure does not write into a closed file. */
static char *captured(void)
{
    vx_log_init(NULL, VX_LOG_INFO);
    fflush(cap);
    long n = ftell(cap);
    assert_true(n >= 0);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    rewind(cap);
    assert_int_equal(fread(s, 1, (size_t)n, cap), (size_t)n);
    s[n] = '\0';
    fclose(cap);
    cap = NULL;
    return s;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

/* The one captured line, checked for shape: a JSON object ending in "}\n",
 * starting with a well-formed timestamp.  Returns what follows the ts. */
static const char *after_ts(const char *line)
{
    assert_int_equal(count_lines(line), 1);
    size_t n = strlen(line);
    assert_true(n > 40);
    assert_memory_equal(line + n - 2, "}\n", 2);
    assert_memory_equal(line, "{\"ts\":\"", 7);
    const char *ts = line + 7;
    /* 2026-11-25T23:30:01.123Z */
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd')
            assert_true(ts[i] >= '0' && ts[i] <= '9');
        else
            assert_int_equal(ts[i], shape[i]);
    }
    assert_int_equal(ts[24], '"');
    return ts + 25;
}

static cJSON *parse_line(const char *line)
{
    cJSON *j = cJSON_Parse(line);
    assert_non_null(j);
    assert_true(cJSON_IsObject(j));
    return j;
}

static const char *jstr(cJSON *j, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    assert_non_null(v);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

/* ---- tests --------------------------------------------------------------- */

static void test_request_line(void **state)
{
    (void)state;
    capture(VX_LOG_DEBUG);
    vx_log(VX_LOG_INFO, "http_request", "rid=%s route=%s status=%d ms=%.3f", "00ab", "search", 200,
           1.5);
    char *s = captured();
    assert_string_equal(after_ts(s),
                        ",\"level\":\"info\",\"event\":\"http_request\",\"rid\":"
                        "\"00ab\",\"route\":\"search\",\"status\":200,\"ms\":1.500}\n");
    cJSON *j = parse_line(s);
    assert_string_equal(jstr(j, "level"), "info");
    assert_string_equal(jstr(j, "route"), "search");
    assert_true(cJSON_GetObjectItem(j, "status")->valuedouble == 200);
    assert_true(cJSON_GetObjectItem(j, "ms")->valuedouble == 1.5);
    cJSON_Delete(j);
    free(s);
}

static void test_every_conversion(void **state)
{
    (void)state;
    const char *volatile null_str = NULL; /* a literal NULL draws -Wformat-overflow */
    capture(VX_LOG_DEBUG);
    vx_log(VX_LOG_WARN, "conv",
           "s=%s null=%s d=%d u=%u ld=%ld lu=%lu lld=%lld llu=%llu zu=%zu f=%f f0=%.0f f2=%.2f "
           "x=%x llx=%llx nan=%f inf=%.1f neg=%.3f",
           "str", null_str, INT_MIN, UINT_MAX, LONG_MIN, ULONG_MAX, LLONG_MIN, ULLONG_MAX, SIZE_MAX,
           3.14159, 2.5, 0.125, 255u, 0xdeadbeefcafeull, NAN, -INFINITY, -0.0004);
    char *s = captured();
    char want[1024];
    snprintf(want, sizeof want,
             ",\"level\":\"warn\",\"event\":\"conv\",\"s\":\"str\",\"null\":null,\"d\":%d,"
             "\"u\":%u,\"ld\":%ld,\"lu\":%lu,\"lld\":%lld,\"llu\":%llu,\"zu\":%zu,"
             "\"f\":3.141590,\"f0\":2,\"f2\":0.12,\"x\":\"ff\",\"llx\":\"deadbeefcafe\","
             "\"nan\":null,\"inf\":null,\"neg\":-0.000}\n",
             INT_MIN, UINT_MAX, LONG_MIN, ULONG_MAX, LLONG_MIN, ULLONG_MAX, SIZE_MAX);
    assert_string_equal(after_ts(s), want);
    cJSON *j = parse_line(s);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "null")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "nan")));
    assert_true(cJSON_GetObjectItem(j, "d")->valuedouble == (double)INT_MIN);
    assert_string_equal(jstr(j, "llx"), "deadbeefcafe");
    cJSON_Delete(j);
    free(s);
}

static void test_no_fields_and_odd_keys(void **state)
{
    (void)state;
    capture(VX_LOG_DEBUG);
    vx_log(VX_LOG_ERROR, "started", NULL);
    vx_log(VX_LOG_DEBUG, "keys", "  a.b=%d  c-d=%d _e9=%d ", 1, 2, 3);
    vx_log(42, NULL, NULL); /* out-of-range level: error; NULL event: "" */
    char *s = captured();
    char *l2 = strchr(s, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
    char *line1 = strndup(s, (size_t)(l2 - s)), *line2 = strndup(l2, (size_t)(l3 - l2));
    assert_string_equal(after_ts(line1), ",\"level\":\"error\",\"event\":\"started\"}\n");
    assert_string_equal(after_ts(line2),
                        ",\"level\":\"debug\",\"event\":\"keys\",\"a.b\":1,\"c-d\":2,\"_e9\":3}\n");
    assert_string_equal(after_ts(l3), ",\"level\":\"error\",\"event\":\"\"}\n");
    free(line1);
    free(line2);
    free(s);
}

static void test_escaping(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *json;    /* as written between the quotes */
        const char *decoded; /* as a JSON parser reads it back */
    } cases[] = {
        {"plain", "plain", "plain"},
        {"q\"b\\s/", "q\\\"b\\\\s/", "q\"b\\s/"},
        {"n\nr\rt\tb\bf\f", "n\\nr\\rt\\tb\\bf\\f", "n\nr\rt\tb\bf\f"},
        {"\x01\x1f\x7f", "\\u0001\\u001f\x7f", "\x01\x1f\x7f"},
        /* valid UTF-8 passes through: 2, 3 and 4 byte forms */
        {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
         "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
        /* invalid: one U+FFFD per maximal subpart */
        {"a\xff"
         "b",
         "a\xef\xbf\xbd"
         "b",
         "a\xef\xbf\xbd"
         "b"},                                                                /* stray byte */
        {"end\xc3", "end\xef\xbf\xbd", "end\xef\xbf\xbd"},                    /* truncated at end */
        {"\xe2\x82x", "\xef\xbf\xbdx", "\xef\xbf\xbdx"},                      /* truncated 3-byte */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd", "\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd",
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate D800 */
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd",
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* above U+10FFFF */
        {"\x80", "\xef\xbf\xbd", "\xef\xbf\xbd"},             /* lone continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        capture(VX_LOG_DEBUG);
        vx_log(VX_LOG_INFO, cases[i].in, "v=%s", cases[i].in);
        char *s = captured();
        char want[256];
        snprintf(want, sizeof want, ",\"level\":\"info\",\"event\":\"%s\",\"v\":\"%s\"}\n",
                 cases[i].json, cases[i].json);
        assert_string_equal(after_ts(s), want);
        cJSON *j = parse_line(s);
        assert_string_equal(jstr(j, "v"), cases[i].decoded);
        assert_string_equal(jstr(j, "event"), cases[i].decoded);
        cJSON_Delete(j);
        free(s);
    }
}

static void test_long_values_cut(void **state)
{
    (void)state;
    /* "x" then 3000 two-byte characters: the cut at 4096 bytes falls inside
     * a character and must back up to its start */
    size_t n = 1 + 3000 * 2;
    char *big = malloc(n + 1);
    big[0] = 'x';
    for (size_t i = 0; i < 3000; i++)
        memcpy(big + 1 + 2 * i, "\xc3\xa9", 2);
    big[n] = '\0';
    capture(VX_LOG_DEBUG);
    vx_log(VX_LOG_INFO, "big", "v=%s", big);
    char *s = captured();
    cJSON *j = parse_line(s);
    const char *v = jstr(j, "v");
    assert_int_equal(strlen(v), 4095 + 3);
    assert_memory_equal(v, big, 4095);
    assert_string_equal(v + 4095, "\xe2\x80\xa6");
    assert_null(strstr(v, "\xef\xbf\xbd"));
    cJSON_Delete(j);
    free(s);
    free(big);
}

static void test_malformed_fmt_does_not_crash(void **state)
{
    (void)state;
    /* non-literal formats: the compiler cannot check these, the logger must */
    static const struct {
        const char *fmt;
        long at;
    } bad[] = {
        /* at: the offending byte */
        {"status", 6},       {"status=%d extra", 15},
        {"a=%q", 2},         {"=%d", 0},
        {"a=%d a=%d", 5},    {"level=%s", 0},
        {"a=%.f", 2},        {"a=%.99f", 2},
        {"a=%lx", 2},        {"a=%s,", 4},
        {"a=%%", 2},         {"a=%n", 2},
        {"a=%s b=%s c", 11}, {"a=%5d", 2},
        {"a=%lld b=%zd", 9}, {"a=%d\tb=%d", 4},
        {"ts=%s", 0},        {"x=%s event=%s", 5},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *volatile fmt = bad[i].fmt;
        capture(VX_LOG_DEBUG);
        /* the arguments do not match: they must not be read at all */
        vx_log(VX_LOG_INFO, "my_event", fmt, 1);
        char *s = captured();
        cJSON *j = parse_line(s);
        assert_int_equal(count_lines(s), 1);
        assert_string_equal(jstr(j, "level"), "error");
        assert_string_equal(jstr(j, "event"), "log_format_error");
        assert_string_equal(jstr(j, "for_event"), "my_event");
        assert_string_equal(jstr(j, "fmt"), bad[i].fmt);
        cJSON *at = cJSON_GetObjectItem(j, "at");
        assert_non_null(at);
        if ((long)at->valuedouble != bad[i].at)
            fail_msg("fmt '%s': at %ld, want %ld", bad[i].fmt, (long)at->valuedouble, bad[i].at);
        cJSON_Delete(j);
        free(s);
    }
}

static void test_level_filter(void **state)
{
    (void)state;
    capture(VX_LOG_WARN);
    assert_false(vx_log_enabled(VX_LOG_INFO));
    assert_true(vx_log_enabled(VX_LOG_WARN));
    vx_log(VX_LOG_DEBUG, "d", NULL);
    vx_log(VX_LOG_INFO, "i", NULL);
    vx_log(VX_LOG_WARN, "w", NULL);
    vx_log(VX_LOG_ERROR, "e", NULL);
    char *s = captured();
    assert_int_equal(count_lines(s), 2);
    assert_non_null(strstr(s, "\"level\":\"warn\",\"event\":\"w\"}\n"));
    assert_non_null(strstr(s, "\"level\":\"error\",\"event\":\"e\"}\n"));
    free(s);

    assert_int_equal(vx_log_level_from_name("debug"), VX_LOG_DEBUG);
    assert_int_equal(vx_log_level_from_name("INFO"), VX_LOG_INFO);
    assert_int_equal(vx_log_level_from_name("warning"), VX_LOG_WARN);
    assert_int_equal(vx_log_level_from_name("error"), VX_LOG_ERROR);
    assert_int_equal(vx_log_level_from_name("loud"), VX_EINVAL);
    assert_int_equal(vx_log_level_from_name(NULL), VX_EINVAL);
    assert_string_equal(vx_log_level_name(VX_LOG_WARN), "warn");
}

#define NT 4
#define LINES_PER_THREAD 2000

static void *log_many(void *arg)
{
    int t = (int)(intptr_t)arg;
    /* long enough values that a torn write would show */
    char pad[300];
    memset(pad, 'a' + t, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++)
        vx_log(VX_LOG_INFO, "conc", "t=%d i=%d pad=%s", t, i, pad);
    return NULL;
}

static void test_concurrent_lines_whole(void **state)
{
    (void)state;
    capture(VX_LOG_DEBUG);
    pthread_t th[NT];
    for (int t = 0; t < NT; t++)
        assert_int_equal(pthread_create(&th[t], NULL, log_many, (void *)(intptr_t)t), 0);
    for (int t = 0; t < NT; t++)
        pthread_join(th[t], NULL);
    char *s = captured();
    assert_int_equal(count_lines(s), NT * LINES_PER_THREAD);
    static unsigned char seen[NT][LINES_PER_THREAD];
    memset(seen, 0, sizeof seen);
    char *save = NULL;
    for (char *line = strtok_r(s, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = parse_line(line);
        int t = (int)cJSON_GetObjectItem(j, "t")->valuedouble;
        int i = (int)cJSON_GetObjectItem(j, "i")->valuedouble;
        assert_true(t >= 0 && t < NT && i >= 0 && i < LINES_PER_THREAD);
        const char *pad = jstr(j, "pad");
        assert_int_equal(strlen(pad), 299);
        assert_true(pad[0] == 'a' + t && pad[298] == 'a' + t);
        seen[t][i]++;
        cJSON_Delete(j);
    }
    for (int t = 0; t < NT; t++)
        for (int i = 0; i < LINES_PER_THREAD; i++)
            assert_int_equal(seen[t][i], 1);
    free(s);
}

#define NIDS 100000

static char ids[NIDS][17];

static void *make_ids(void *arg)
{
    size_t t = (size_t)(uintptr_t)arg;
    for (size_t i = t; i < NIDS; i += NT)
        vx_log_request_id(ids[i]);
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 17);
}

static void test_request_ids_unique(void **state)
{
    (void)state;
    pthread_t th[NT];
    for (int t = 0; t < NT; t++)
        assert_int_equal(pthread_create(&th[t], NULL, make_ids, (void *)(uintptr_t)t), 0);
    for (int t = 0; t < NT; t++)
        pthread_join(th[t], NULL);
    unsigned bits_seen = 0; /* every hex position varies: the ids are mixed, not a counter */
    for (size_t i = 0; i < NIDS; i++) {
        assert_int_equal(strlen(ids[i]), 16);
        for (size_t k = 0; k < 16; k++) {
            char c = ids[i][k];
            assert_true((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
            if (c != ids[0][k]) bits_seen |= 1u << k;
        }
    }
    assert_int_equal(bits_seen, 0xffff);
    qsort(ids, NIDS, sizeof ids[0], cmp_id);
    for (size_t i = 1; i < NIDS; i++)
        if (memcmp(ids[i - 1], ids[i], 17) == 0) fail_msg("duplicate request id %s", ids[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line),
        cmocka_unit_test(test_every_conversion),
        cmocka_unit_test(test_no_fields_and_odd_keys),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_long_values_cut),
        cmocka_unit_test(test_malformed_fmt_does_not_crash),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_concurrent_lines_whole),
        cmocka_unit_test(test_request_ids_unique),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
