/*
 * test_fastjson.c - the upsert fast path (server/fastjson.h): the floats it
 * reads equal what strtod gives, ids and payload spans come out exactly,
 * and every body outside its shape is left to the general parser.  The
 * search body's vector extraction: the same floats as cJSON, and the body
 * with the vector blanked parses exactly when the original does.  And the
 * float formatter of responses (jb_format_f32): every float reads back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "server/fastjson.h"
#include "server/jbuf.h"
#include "testutil.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_numbers_match_strtod(void **state)
{
    (void)state;
    vx_rng r;
    vx_rng_seed(&r, vx_test_seed(11));
    static const char *const fmts[] = {"%.9g", "%.3e", "%.17g", "%g", "%.1f", "%.12e"};
    char body[4096], num[64];
    for (int i = 0; i < 20000; i++) {
        double v;
        switch (i % 4) {
        case 0: v = vx_rng_normal(&r); break;
        case 1: v = (vx_rng_uniform(&r) - 0.5) * pow(10, (int)vx_rng_below(&r, 60) - 30); break;
        case 2: v = (double)(int64_t)(vx_rng_below(&r, 2000000) - 1000000); break;
        default: v = vx_rng_uniform(&r) * 1e-3; break;
        }
        snprintf(num, sizeof num, fmts[i % 6], v);
        snprintf(body, sizeof body, "{\"points\":[{\"id\":%d,\"vector\":[%s, 1]}]}", i, num);
        vx_fast_points fp;
        int rc = vx_fast_parse_points(body, strlen(body), 10, 64, &fp);
        double want = strtod(num, NULL);
        if (!isfinite((float)want) || fabs(want) > 3.4028234663852886e38) {
            assert_int_equal(rc, VX_EINVAL);
            continue;
        }
        if (rc != 0) fail_msg("not parsed: %s", body);
        if (fp.vec[0] != (float)want)
            fail_msg("%s: fast %.9g, strtod %.9g", num, (double)fp.vec[0], (double)(float)want);
        assert_true(fp.p[0].dim == 2 && fp.vec[1] == 1.0f);
        vx_fast_points_free(&fp);
    }
}

static void test_shape(void **state)
{
    (void)state;
    const char *ok = " {\"points\" : [ {\"vector\":[1,2.5,-3e2],\"id\":18446744073709551615,"
                     "\"payload\":{\"a\":[1,{\"b\":\"}\"}],\"big\":123456789012345678901}},"
                     "{\"id\":\"5C56C793-69F3-4FBF-87E6-C4BF54C28C26\",\"vector\":[0,0,0],"
                     "\"payload\":null}]} ";
    vx_fast_points fp;
    assert_int_equal(vx_fast_parse_points(ok, strlen(ok), 10, 64, &fp), 0);
    assert_int_equal(fp.n, 2);
    assert_int_equal(vx_id_kind(&fp.p[0].id), VX_ID_UINT);
    assert_true(vx_id_uint(&fp.p[0].id) == UINT64_MAX);
    assert_true(fp.vec[2] == -300.0f && fp.p[0].dim == 3);
    assert_non_null(fp.p[0].payload);
    assert_true(strncmp(fp.p[0].payload, "{\"a\":[1,{\"b\":\"}\"}],\"big\":123456789012345678901}",
                        fp.p[0].payload_len) == 0);
    assert_int_equal(vx_id_kind(&fp.p[1].id), VX_ID_UUID);
    assert_null(fp.p[1].payload);
    vx_fast_points_free(&fp);

    /* everything else goes to the general parser */
    static const char *const other[] = {
        "{\"batch\":{\"ids\":[1],\"vectors\":[[1]]}}",
        "{\"points\":[{\"id\":1,\"vector\":[1]}],\"shard_key\":\"a\"}",
        "{\"points\":[{\"id\":1,\"vector\":[1],\"extra\":1}]}",
        "{\"points\":[{\"id\":1}]}",
        "{\"points\":[{\"vector\":[1]}]}",
        "{\"points\":[]}",
        "{\"points\":[{\"id\":-1,\"vector\":[1]}]}",
        "{\"points\":[{\"id\":1.5,\"vector\":[1]}]}",
        "{\"points\":[{\"id\":18446744073709551616,\"vector\":[1]}]}",
        "{\"points\":[{\"id\":\"not-a-uuid\",\"vector\":[1]}]}",
        "{\"points\":[{\"id\":\"a\\\"b\",\"vector\":[1]}]}",
        "{\"points\":[{\"id\":1,\"vector\":[1e39]}]}",
        "{\"points\":[{\"id\":1,\"vector\":[NaN]}]}",
        "{\"points\":[{\"id\":1,\"vector\":[1,]}]}",
        "{\"points\":[{\"id\":1,\"vector\":[01]}]}",
        "{\"points\":[{\"id\":1,\"vector\":[1],\"payload\":[1]}]}",
        "{\"points\":[{\"id\":1,\"vector\":[1],\"payload\":{\"a\":}}]}",
        "{\"points\":[{\"id\":1,\"vector\":[1],\"payload\":{\"a\":\"x\001y\"}}]}",
        "{\"points\":[{\"id\":1,\"vector\":[1],\"payload\":{\"a\":\"x\ny\"}}]}",
        "{\"points\":[{\"id\":1,\"vector\":[1]}]} x",
        "{\"points\":[{\"id\":1,\"vector\":[1]}",
        "{\"points\":[{\"id\":1,\"id\":2,\"vector\":[1]}]}",
        "",
    };
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        if (vx_fast_parse_points(other[i], strlen(other[i]), 10, 64, &fp) != VX_EINVAL)
            fail_msg("taken by the fast path: %s", other[i]);
        assert_null(fp.p);
    }
    /* limits: points and payload depth */
    const char *three = "{\"points\":[{\"id\":1,\"vector\":[1]},{\"id\":2,\"vector\":[1]},"
                        "{\"id\":3,\"vector\":[1]}]}";
    assert_int_equal(vx_fast_parse_points(three, strlen(three), 2, 64, &fp), VX_EINVAL);
    char deep[512] = "{\"points\":[{\"id\":1,\"vector\":[1],\"payload\":";
    for (int i = 0; i < 20; i++) strcat(deep, "{\"a\":");
    strcat(deep, "1");
    for (int i = 0; i < 20; i++) strcat(deep, "}");
    strcat(deep, "}]}");
    assert_int_equal(vx_fast_parse_points(deep, strlen(deep), 10, 8, &fp), VX_EINVAL);
    assert_int_equal(vx_fast_parse_points(deep, strlen(deep), 10, 64, &fp), 0);
    vx_fast_points_free(&fp);
}

/* Extraction agrees with cJSON on the floats, and the blanked copy is
 * valid JSON exactly when the body is. */
static void check_extract(const char *body, const char *key, bool want_taken)
{
    size_t len = strlen(body);
    char *copy;
    float *vec;
    uint32_t n;
    int rc = vx_fast_extract_vector(body, len, key, 1000, &copy, &vec, &n);
    if (want_taken && rc != 0) fail_msg("not taken: %s", body);
    if (!want_taken && rc == 0) fail_msg("taken: %s", body);
    if (rc != 0) {
        assert_null(copy);
        assert_null(vec);
        return;
    }
    assert_int_equal(strlen(copy), len);
    cJSON *orig = cJSON_ParseWithLength(body, len), *blank = cJSON_ParseWithLength(copy, len);
    if ((orig == NULL) != (blank == NULL)) fail_msg("validity changed: %s -> %s", body, copy);
    if (orig != NULL) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(orig, key);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(blank, key);
        assert_true(cJSON_IsArray(a) && cJSON_IsArray(b));
        assert_int_equal(cJSON_GetArraySize(b), 0);
        assert_int_equal(cJSON_GetArraySize(a), n);
        for (uint32_t i = 0; i < n; i++)
            assert_true((float)cJSON_GetArrayItem(a, (int)i)->valuedouble == vec[i]);
    }
    cJSON_Delete(orig);
    cJSON_Delete(blank);
    free(copy);
    free(vec);
}

static void test_extract_vector(void **state)
{
    (void)state;
    check_extract("{\"vector\":[1,2.5,-3e2],\"limit\":10}", "vector", true);
    check_extract(" { \"limit\" : 3 , \"filter\":{\"must\":[{\"key\":\"a]\\\"}\",\"match\":"
                  "{\"value\":[1]}}]}, \"vector\" : [ 0.125 , 7 ] , \"params\":{\"hnsw_ef\":64}}",
                  "vector", true);
    check_extract("{\"query\":[0.5],\"limit\":1}", "query", true);
    check_extract("{\"vector\":[1,2]", "vector", true); /* unterminated: copy invalid too */
    check_extract("{\"vector\":[1,2]} junk", "vector", true);
    check_extract("{\"vector\":[1,2],}", "vector", true);
    /* not the shape: left to cJSON */
    static const char *const other[] = {
        "{\"vector\":{\"name\":\"a\",\"vector\":[1]}}", "{\"vector\":[]}",
        "{\"vector\":[1,]}", "{\"vector\":[01]}", "{\"vector\":[1e39]}",
        "{\"vector\":[\"1\"]}", "{\"vector\":[NaN]}", "{\"limit\":1}",
        "{\"a\":\"\\\"vector\\\":[1]\"}", "{\"a\":{\"vector\":[1]}}", "[1]", "",
        "{\"vec\\u0074or\":[1]}", "{\"limit\":1 \"vector\":[1]}",
    };
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) check_extract(other[i], "vector", false);
    /* more numbers than allowed */
    char *copy;
    float *vec;
    uint32_t n;
    const char *many = "{\"vector\":[1,2,3]}";
    assert_int_equal(vx_fast_extract_vector(many, strlen(many), "vector", 2, &copy, &vec, &n),
                     VX_EINVAL);
    /* random bodies built from JSON-ish pieces */
    vx_rng r;
    vx_rng_seed(&r, vx_test_seed(12));
    static const char *const piece[] = {"{", "}", "[", "]", ",", ":", "\"vector\"", "\"a\"",
                                        "1", "-2.5e3", "\"x\\\"y\"", " ", "null", "\"vector\":[1,2]"};
    for (int t = 0; t < 20000; t++) {
        char body[256] = "";
        int np = 1 + (int)vx_rng_below(&r, 12);
        for (int i = 0; i < np; i++) strcat(body, piece[vx_rng_below(&r, sizeof piece / sizeof *piece)]);
        size_t len = strlen(body);
        if (vx_fast_extract_vector(body, len, "vector", 1000, &copy, &vec, &n) == 0) {
            free(copy);
            free(vec);
            check_extract(body, "vector", true);
        }
    }
}

static void test_format_f32(void **state)
{
    (void)state;
    char t[32];
    static const struct {
        float v;
        const char *want;
    } fixed[] = {{0.0f, "0"},        {-0.0f, "-0"},          {1.0f, "1"},
                 {0.5f, "0.5"},      {123456.0f, "123456"},  {1e9f, "1e+09"},
                 {1e-5f, "9.99999975e-06"}, {0.0001f, "9.99999975e-05"}, {0.001f, "0.00100000005"},
                 {100.0f, "100"},    {-2.5f, "-2.5"},        {3.4028235e38f, "3.40282347e+38"}};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        jb_format_f32(t, fixed[i].v);
        char want[32];
        snprintf(want, sizeof want, "%.9g", (double)fixed[i].v);
        if (strcmp(t, fixed[i].want) != 0 || strcmp(t, want) != 0)
            fail_msg("%.9g: got %s, want %s (printf %s)", (double)fixed[i].v, t, fixed[i].want,
                     want);
    }
    /* every float reads back as itself: random bit patterns over all
     * exponents, subnormals included; and mostly the same text as %.9g */
    vx_rng r;
    vx_rng_seed(&r, vx_test_seed(13));
    int differ = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t bits = (uint32_t)vx_rng_next(&r);
        float v;
        memcpy(&v, &bits, 4);
        if (!isfinite(v)) continue;
        int n = jb_format_f32(t, v);
        assert_int_equal((int)strlen(t), n);
        float back = strtof(t, NULL);
        if (memcmp(&back, &v, 4) != 0) fail_msg("%s does not read back as %.9g", t, (double)v);
        char want[32];
        snprintf(want, sizeof want, "%.9g", (double)v);
        if (strcmp(t, want) != 0) differ++;
    }
    /* both round to 9 digits, ties to even; beyond 10^22 the scaling is
     * inexact by 1e-16 and might, very rarely, round the other way */
    if (differ > 10) fail_msg("%d of 1e6 differ from %%.9g", differ);
}

static void test_seconds(void **state)
{
    (void)state;
    static const struct {
        uint64_t ns;
        const char *want;
    } c[] = {{0, "0.0"}, {512000, "0.000512"}, {2500000000u, "2.5"}, {1000000000u, "1.0"},
             {1, "0.000000001"}, {12345678901ull, "12.345678901"}};
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        jbuf b;
        jb_init(&b);
        jb_seconds(&b, c[i].ns);
        size_t len;
        char *t = jb_take(&b, &len);
        assert_non_null(t);
        if (len != strlen(c[i].want) || memcmp(t, c[i].want, len) != 0)
            fail_msg("%llu ns: %.*s, want %s", (unsigned long long)c[i].ns, (int)len, t, c[i].want);
        free(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_match_strtod),
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_extract_vector),
        cmocka_unit_test(test_format_f32),
        cmocka_unit_test(test_seconds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
