/*
 * test_fastjson.c - the upsert fast path (server/fastjson.h): the floats it
 * reads equal what strtod gives, ids and payload spans come out exactly,
 * and every body outside its shape is left to the general parser.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "server/fastjson.h"
#include "testutil.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_match_strtod),
        cmocka_unit_test(test_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
