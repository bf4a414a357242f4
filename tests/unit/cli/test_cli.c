/*
 * test_cli.c - the CLI's helpers that need no server: the float writer of
 * the bulk loader (exactly %.9g's text, and it reads back as the same
 * float), the JSON reader that keeps u64 ids exact, id text, the option
 * parser, collection paths, and base-URL parsing.  The commands themselves
 * are tested end to end by tests/cli/test_cli.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "cli/cli_internal.h"
#include "cli/http_client.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_f32(float v)
{
    char got[VX_CLI_F32_MAX + 8], want[32];
    char *end = vx_cli__put_f32(got, v);
    assert_true(end - got <= VX_CLI_F32_MAX - 1);
    *end = '\0';
    if (v > -16777216.0f && v < 16777216.0f && (float)(int32_t)v == v)
        snprintf(want, sizeof want, "%d", (int)v); /* integers as integers ("-0" is "0") */
    else
        snprintf(want, sizeof want, "%.9g", (double)v);
    if (strcmp(got, want) != 0)
        fail_msg("put_f32(%a): \"%s\", %%.9g: \"%s\"", (double)v, got, want);
    if (strtof(got, NULL) != v) fail_msg("put_f32(%a) = \"%s\" does not read back", (double)v, got);
}

static void test_put_f32_edges(void **state)
{
    (void)state;
    static const float cases[] = {0.0f,
                                  -0.0f,
                                  1.0f,
                                  -1.0f,
                                  0.1f,
                                  -0.1f,
                                  0.5f,
                                  1e-4f,
                                  9.99999e-5f,
                                  1e-5f,
                                  123456.789f,
                                  16777216.0f,
                                  -16777217.0f,
                                  1e9f,
                                  999999936.0f,
                                  1e10f,
                                  3.4028235e38f,
                                  1.17549435e-38f,
                                  1.4e-45f,
                                  -2.5e-7f,
                                  0.3333333f,
                                  99999.9999f,
                                  0.000123456789f,
                                  8388607.5f};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_f32(cases[i]);
}

static void test_put_f32_random(void **state)
{
    (void)state;
    vx_rng r;
    vx_rng_seed(&r, vx_test_seed(20251125));
    for (int i = 0; i < 2000000; i++) {
        float v;
        if (i % 3 == 0) { /* any finite bit pattern */
            uint32_t bits = (uint32_t)vx_rng_next(&r);
            memcpy(&v, &bits, sizeof v);
            if (!isfinite(v)) continue;
        } else { /* the range real embeddings live in */
            v = (float)((vx_rng_uniform(&r) * 2 - 1) * pow(10, (int)vx_rng_below(&r, 16) - 6));
        }
        check_f32(v);
    }
}

static void test_json_big_ints(void **state)
{
    (void)state;
    const char *text =
        "{\"result\":[{\"id\":18446744073709551615,\"score\":0.5,\"payload\":{\"s\":"
        "\"12345678901234567890\",\"f\":1.2345678901234567890,\"n\":-12345678901234567,"
        "\"e\":12345678901234567e2,\"q\":\"a\\\"18446744073709551615\",\"small\":"
        "123456789012345}},{\"id\":\"5c56c793-69f3-4fbf-87e6-c4bf54c28c26\",\"score\":1}]}";
    cJSON *doc = vx_cli__json_parse(text, strlen(text));
    assert_non_null(doc);
    const cJSON *hits = cJSON_GetObjectItemCaseSensitive(doc, "result");
    const cJSON *h0 = cJSON_GetArrayItem(hits, 0), *h1 = cJSON_GetArrayItem(hits, 1);
    char buf[64];
    assert_string_equal(
        vx_cli__id_text(cJSON_GetObjectItemCaseSensitive(h0, "id"), buf, sizeof buf),
        "18446744073709551615");
    assert_string_equal(
        vx_cli__id_text(cJSON_GetObjectItemCaseSensitive(h1, "id"), buf, sizeof buf),
        "5c56c793-69f3-4fbf-87e6-c4bf54c28c26");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(h0, "payload");
    assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(p, "s")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(p, "s")->valuestring,
                        "12345678901234567890");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(p, "f")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(p, "e")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(p, "small")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(p, "q")->valuestring,
                        "a\"18446744073709551615");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(p, "n");
    assert_true(cJSON_IsRaw(n));
    char *printed = cJSON_PrintUnformatted(p);
    assert_non_null(strstr(printed, "\"n\":-12345678901234567"));
    free(printed);
    cJSON_Delete(doc);

    /* nothing to rewrite: same as cJSON */
    doc = vx_cli__json_parse("{\"id\":42}", 9);
    assert_string_equal(
        vx_cli__id_text(cJSON_GetObjectItemCaseSensitive(doc, "id"), buf, sizeof buf), "42");
    cJSON_Delete(doc);
    assert_null(vx_cli__json_parse("{\"id\":", 6));
    assert_null(vx_cli__json_parse("[-]", 3));
}

static void test_parse_options(void **state)
{
    (void)state;
    vx_cli g;
    memset(&g, 0, sizeof g);
    g.url = "http://a:1";
    g.timeout_s = 60;
    uint64_t dim = 0, shards = 0;
    bool flag = false;
    const char *name = NULL;
    vx_cli__opt opts[] = {
        {"--dim", VX_CLI_OPT_U64, &dim, 1, 100, false},
        {"--shards", VX_CLI_OPT_U64, &shards, 1, 8, false},
        {"--flag", VX_CLI_OPT_FLAG, &flag, 0, 0, false},
        {"--name", VX_CLI_OPT_STR, &name, 0, 0, false},
    };
    char *argv[] = {"x",         "--dim", "7",  "--flag", "--url=http://b:2", "--name", "-n", "y",
                    "--timeout", "5",     "--", "--z"};
    char *pos[3];
    size_t npos;
    assert_int_equal(vx_cli__parse(&g, "t", 12, argv, opts, 4, pos, 3, &npos), VX_CLI_OK);
    assert_int_equal(dim, 7);
    assert_true(flag);
    assert_true(opts[0].seen && !opts[1].seen);
    assert_string_equal(name, "-n");
    assert_string_equal(g.url, "http://b:2");
    assert_int_equal(g.timeout_s, 5);
    assert_int_equal(npos, 3);
    assert_string_equal(pos[0], "x");
    assert_string_equal(pos[1], "y");
    assert_string_equal(pos[2], "--z");

    char *bad1[] = {"--dim", "0"}, *bad2[] = {"--dim", "12x"}, *bad3[] = {"--nope"},
         *bad4[] = {"--dim"}, *bad5[] = {"--flag=1"}, *bad6[] = {"a", "b"}, *help[] = {"a", "-h"};
    assert_int_equal(vx_cli__parse(&g, "t", 2, bad1, opts, 4, pos, 3, &npos), VX_CLI_USAGE);
    assert_int_equal(vx_cli__parse(&g, "t", 2, bad2, opts, 4, pos, 3, &npos), VX_CLI_USAGE);
    assert_int_equal(vx_cli__parse(&g, "t", 1, bad3, opts, 4, pos, 3, &npos), VX_CLI_USAGE);
    assert_int_equal(vx_cli__parse(&g, "t", 1, bad4, opts, 4, pos, 3, &npos), VX_CLI_USAGE);
    assert_int_equal(vx_cli__parse(&g, "t", 1, bad5, opts, 4, pos, 3, &npos), VX_CLI_USAGE);
    assert_int_equal(vx_cli__parse(&g, "t", 2, bad6, opts, 4, pos, 1, &npos), VX_CLI_USAGE);
    assert_int_equal(vx_cli__parse(&g, "t", 2, help, opts, 4, pos, 3, &npos), -1);
}

static void test_collection_path(void **state)
{
    (void)state;
    char p[64];
    assert_int_equal(vx_cli__collection_path(p, sizeof p, "my docs/ü", "/points?wait=true"), 0);
    assert_string_equal(p, "/collections/my%20docs%2F%C3%BC/points?wait=true");
    assert_int_equal(vx_cli__collection_path(p, 20, "abcdefgh", "/points"), -1);
    assert_int_equal(vx_cli__collection_path(p, 22, "abcdefgh", ""), 0);
}

static void test_url_parse(void **state)
{
    (void)state;
    vx_httpc_url u;
    char err[VX_HTTPC_ERRMSG_LEN];
    assert_int_equal(vx_httpc_url_parse("http://127.0.0.1:6333", &u, err), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_string_equal(u.port, "6333");
    assert_string_equal(u.prefix, "");
    assert_string_equal(u.authority, "127.0.0.1:6333");
    assert_int_equal(vx_httpc_url_parse("localhost", &u, err), 0);
    assert_string_equal(u.port, "6333"); /* the Qdrant clients' default, not 80 */
    assert_int_equal(vx_httpc_url_parse("HTTP://[::1]:80/api/v1//", &u, err), 0);
    assert_string_equal(u.host, "::1");
    assert_string_equal(u.port, "80");
    assert_string_equal(u.prefix, "/api/v1");
    assert_string_equal(u.authority, "[::1]:80");
    assert_int_equal(vx_httpc_url_parse("https://x", &u, err), VX_EINVAL);
    assert_non_null(strstr(err, "https is not supported"));
    static const char *const bad[] = {"",
                                      "ftp://x",
                                      "http://",
                                      "http://x:0",
                                      "http://x:65536",
                                      "http://x:12a",
                                      "http://::1:5",
                                      "http://[::1",
                                      "http://u:p@x",
                                      "http://x/?q=1",
                                      "http://x:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (vx_httpc_url_parse(bad[i], &u, err) == 0) fail_msg("accepted \"%s\"", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_f32_edges),   cmocka_unit_test(test_put_f32_random),
        cmocka_unit_test(test_json_big_ints),   cmocka_unit_test(test_parse_options),
        cmocka_unit_test(test_collection_path), cmocka_unit_test(test_url_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
