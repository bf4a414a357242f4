/*
 * test_config.c - `vectron serve` settings: the documented defaults, the
 * precedence defaults < file < environment < flags, errors that name their
 * line / variable / flag and leave the config untouched, range checks, and
 * a --help text that both mentions every field and agrees with the parser
 * (each default it prints is fed back through file, environment and flag).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "server/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* The fields as the brief specifies them, written out here rather than taken
 * from config.c, so the test checks the table instead of repeating it. */
static const struct {
    const char *name, *flag, *env, *def;
} spec[] = {
    {"data_dir", "--data-dir", "VECTRON_DATA_DIR", "./vectron-data"},
    {"http_host", "--http-host", "VECTRON_HTTP_HOST", "127.0.0.1"},
    {"http_port", "--http-port", "VECTRON_HTTP_PORT", "6333"},
    {"raft_port", "--raft-port", "VECTRON_RAFT_PORT", "0"},
    {"max_body_bytes", "--max-body-bytes", "VECTRON_MAX_BODY_BYTES", "32MiB"},
    {"max_batch_points", "--max-batch-points", "VECTRON_MAX_BATCH_POINTS", "10000"},
    {"max_dim", "--max-dim", "VECTRON_MAX_DIM", "65536"},
    {"max_limit", "--max-limit", "VECTRON_MAX_LIMIT", "10000"},
    {"max_json_depth", "--max-json-depth", "VECTRON_MAX_JSON_DEPTH", "64"},
    {"http_threads", "--http-threads", "VECTRON_HTTP_THREADS", "16"},
    {"conn_timeout_s", "--conn-timeout-s", "VECTRON_CONN_TIMEOUT_S", "30"},
    {"slow_query_ms", "--slow-query-ms", "VECTRON_SLOW_QUERY_MS", "500"},
    {"log_level", "--log-level", "VECTRON_LOG_LEVEL", "info"},
    {"index_workers", "--index-workers", "VECTRON_INDEX_WORKERS", "0"},
    {"max_backlog", "--max-backlog", "VECTRON_MAX_BACKLOG", "100000"},
    {"auth", "--auth", "VECTRON_AUTH", "auto"},
    {"admin_key_file", "--admin-key-file", "VECTRON_ADMIN_KEY_FILE", "none"},
    {"jwt_secret_file", "--jwt-secret-file", "VECTRON_JWT_SECRET_FILE", "none"},
    {"jwt_kid", "--jwt-kid", "VECTRON_JWT_KID", "k1"},
    {"jwt_accept", "--jwt-accept", "VECTRON_JWT_ACCEPT", "none"},
    {"access_token_ttl_s", "--access-token-ttl-s", "VECTRON_ACCESS_TOKEN_TTL_S", "900"},
    {"refresh_token_ttl_s", "--refresh-token-ttl-s", "VECTRON_REFRESH_TOKEN_TTL_S", "604800"},
    {"rate_per_key", "--rate-per-key", "VECTRON_RATE_PER_KEY", "1000"},
    {"burst_per_key", "--burst-per-key", "VECTRON_BURST_PER_KEY", "2000"},
    {"rate_per_address", "--rate-per-address", "VECTRON_RATE_PER_ADDRESS", "10"},
    {"burst_per_address", "--burst-per-address", "VECTRON_BURST_PER_ADDRESS", "20"},
    {"login_attempts_per_address", "--login-attempts-per-address", "VECTRON_LOGIN_ATTEMPTS_PER_ADDRESS", "20"},
    {"login_attempts_per_account", "--login-attempts-per-account", "VECTRON_LOGIN_ATTEMPTS_PER_ACCOUNT", "10"},
    {"login_window_s", "--login-window-s", "VECTRON_LOGIN_WINDOW_S", "60"},
    {"body_timeout_s", "--body-timeout-s", "VECTRON_BODY_TIMEOUT_S", "60"},
    {"tls_cert", "--tls-cert", "VECTRON_TLS_CERT", "none"},
    {"tls_key", "--tls-key", "VECTRON_TLS_KEY", "none"},
    {"max_connections_per_address", "--max-connections-per-address", "VECTRON_MAX_CONNECTIONS_PER_ADDRESS", "128"},
};
#define NSPEC (sizeof spec / sizeof spec[0])

static char tmpdir[] = "/tmp/vx_test_config_XXXXXX";

/* No VECTRON_* variable from the caller's shell may leak into a test. */
static void clear_env(void)
{
    for (;;) {
        char **e = environ;
        while (*e != NULL && strncmp(*e, "VECTRON_", 8) != 0)
            e++;
        if (*e == NULL) return;
        char name[128];
        size_t n = strcspn(*e, "=");
        snprintf(name, sizeof name, "%.*s", (int)n, *e);
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

static const char *write_file(const char *name, const char *content)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

/* Compare every field; memcmp would also see the bytes behind a string's NUL. */
static void assert_config_equal(const vx_config *a, const vx_config *b)
{
    assert_string_equal(a->data_dir, b->data_dir);
    assert_string_equal(a->http_host, b->http_host);
    assert_int_equal(a->http_port, b->http_port);
    assert_int_equal(a->raft_port, b->raft_port);
    assert_true(a->max_body_bytes == b->max_body_bytes);
    assert_int_equal(a->max_batch_points, b->max_batch_points);
    assert_int_equal(a->max_dim, b->max_dim);
    assert_int_equal(a->max_limit, b->max_limit);
    assert_int_equal(a->max_json_depth, b->max_json_depth);
    assert_int_equal(a->http_threads, b->http_threads);
    assert_int_equal(a->conn_timeout_s, b->conn_timeout_s);
    assert_int_equal(a->slow_query_ms, b->slow_query_ms);
    assert_string_equal(a->log_level, b->log_level);
    assert_int_equal(a->index_workers, b->index_workers);
    assert_int_equal(a->max_backlog, b->max_backlog);
    assert_string_equal(a->auth, b->auth);
    assert_string_equal(a->admin_key_file, b->admin_key_file);
    assert_string_equal(a->tls_cert, b->tls_cert);
    assert_string_equal(a->tls_key, b->tls_key);
    assert_string_equal(a->jwt_secret_file, b->jwt_secret_file);
    assert_string_equal(a->jwt_kid, b->jwt_kid);
    assert_string_equal(a->jwt_accept, b->jwt_accept);
    assert_int_equal(a->access_token_ttl_s, b->access_token_ttl_s);
    assert_int_equal(a->refresh_token_ttl_s, b->refresh_token_ttl_s);
    assert_int_equal(a->rate_per_key, b->rate_per_key);
    assert_int_equal(a->burst_per_key, b->burst_per_key);
    assert_int_equal(a->rate_per_address, b->rate_per_address);
    assert_int_equal(a->burst_per_address, b->burst_per_address);
    assert_int_equal(a->login_attempts_per_address, b->login_attempts_per_address);
    assert_int_equal(a->login_attempts_per_account, b->login_attempts_per_account);
    assert_int_equal(a->login_window_s, b->login_window_s);
    assert_int_equal(a->body_timeout_s, b->body_timeout_s);
    assert_int_equal(a->max_connections_per_address, b->max_connections_per_address);
    assert_int_equal(a->help, b->help);
}

static void test_defaults(void **state)
{
    (void)state;
    vx_config c;
    char err[VX_CONFIG_ERRMAX];
    vx_config_defaults(&c);
    assert_string_equal(c.data_dir, "./vectron-data");
    assert_string_equal(c.http_host, "127.0.0.1");
    assert_int_equal(c.http_port, 6333);
    assert_int_equal(c.raft_port, 0);
    assert_int_equal(vx_config_raft_port(&c), 7333);
    assert_true(c.max_body_bytes == 32u * 1024 * 1024);
    assert_int_equal(c.max_batch_points, 10000);
    assert_int_equal(c.max_dim, 65536);
    assert_int_equal(c.max_limit, 10000);
    assert_int_equal(c.max_json_depth, 64);
    assert_int_equal(c.http_threads, 16);
    assert_int_equal(c.conn_timeout_s, 30);
    assert_int_equal(c.slow_query_ms, 500);
    assert_string_equal(c.log_level, "info");
    assert_int_equal(c.index_workers, 0);
    assert_true(vx_config_index_workers(&c) >= 1);
    assert_int_equal(c.max_backlog, 100000);
    assert_false(c.help);
    assert_int_equal(vx_config_validate(&c, err), 0);

    /* vx_config_load with nothing given is the defaults */
    vx_config l;
    char *argv[] = {"serve", NULL};
    int first = -1;
    assert_int_equal(vx_config_load(&l, 1, argv, &first, err), 0);
    assert_int_equal(first, 1);
    assert_config_equal(&l, &c);
}

static void test_precedence_file_env_flags(void **state)
{
    (void)state;
    const char *path = write_file("prec.conf", "# every layer sets some of these\n"
                                               "http_port = 1111\n"
                                               "http_threads = 3\n"
                                               "data_dir = /from/file\n"
                                               "log_level = debug\n"
                                               "slow_query_ms = 7\n"
                                               "max_body_bytes = 2MiB\n");
    setenv("VECTRON_HTTP_PORT", "2222", 1);
    setenv("VECTRON_DATA_DIR", "/from/env", 1);
    setenv("VECTRON_SLOW_QUERY_MS", "9", 1);
    setenv("VECTRON_MAX_LIMIT", "", 1); /* empty counts as unset */
    /* --config comes last on purpose: the file still loses to the flags */
    char *argv[] = {"serve",    "--http-port", "3333",       "--max-body-bytes=4k",
                    "--config", (char *)path,  "positional", "--http-threads",
                    "99",       NULL};
    vx_config c;
    char err[VX_CONFIG_ERRMAX] = "";
    int first = -1;
    int rc = vx_config_load(&c, 9, argv, &first, err);
    if (rc != 0) fail_msg("%s", err);
    assert_int_equal(first, 6); /* stops at "positional"; the flags after it are not ours */
    assert_int_equal(c.http_port, 3333);          /* flag > env > file */
    assert_true(c.max_body_bytes == 4096);        /* flag > file */
    assert_string_equal(c.data_dir, "/from/env"); /* env > file */
    assert_int_equal(c.slow_query_ms, 9);         /* env > file */
    assert_int_equal(c.http_threads, 3);          /* file > default */
    assert_string_equal(c.log_level, "debug");    /* file > default */
    assert_int_equal(c.max_limit, 10000);         /* default */
    assert_int_equal(c.max_dim, 65536);           /* default */

    /* VECTRON_CONFIG names the file when no --config is given */
    setenv("VECTRON_CONFIG", path, 1);
    char *argv2[] = {"serve", NULL};
    assert_int_equal(vx_config_load(&c, 1, argv2, NULL, err), 0);
    assert_int_equal(c.http_threads, 3);
    assert_int_equal(c.http_port, 2222);
    assert_string_equal(c.data_dir, "/from/env");

    /* the step functions compose the same way */
    vx_config s;
    vx_config_defaults(&s);
    assert_int_equal(vx_config_load_file(&s, path, err), 0);
    assert_int_equal(s.http_port, 1111);
    assert_int_equal(vx_config_load_env(&s, err), 0);
    assert_int_equal(s.http_port, 2222);
    char *argv3[] = {"serve", "--http-port=4444", NULL};
    assert_int_equal(vx_config_parse_args(&s, 2, argv3, NULL, err), 0);
    assert_int_equal(s.http_port, 4444);
    assert_string_equal(s.data_dir, "/from/env");
}

static void test_parse_args(void **state)
{
    (void)state;
    char err[VX_CONFIG_ERRMAX];
    vx_config c, before;
    vx_config_defaults(&c);
    const char *path = write_file("args.conf", "http_port = 2\nhttp_host = 10.0.0.1\n");
    char *argv[] = {"serve",
                    "--http-port",
                    "1",
                    "--config",
                    (char *)path,
                    "--data_dir=/d",
                    "--index-workers",
                    "8",
                    "--raft-port=9000",
                    "--log-level",
                    "error",
                    "--slow-query-ms",
                    "0",
                    "--",
                    "--not-a-flag",
                    NULL};
    int first = -1;
    assert_int_equal(vx_config_parse_args(&c, 15, argv, &first, err), 0);
    assert_int_equal(first, 14);      /* just after "--" */
    assert_int_equal(c.http_port, 1); /* flag beats file though --config came later */
    assert_string_equal(c.http_host, "10.0.0.1");
    assert_string_equal(c.data_dir, "/d");
    assert_int_equal(c.index_workers, 8);
    assert_int_equal(vx_config_index_workers(&c), 8);
    assert_int_equal(c.raft_port, 9000);
    assert_int_equal(vx_config_raft_port(&c), 9000);
    assert_string_equal(c.log_level, "error");
    assert_int_equal(c.slow_query_ms, 0);
    assert_false(c.help);

    /* help wins, even over broken arguments, and changes nothing else */
    vx_config_defaults(&c);
    before = c;
    char *help[] = {"serve", "--bogus", "--http-port", "x", "-h", NULL};
    assert_int_equal(vx_config_parse_args(&c, 5, help, NULL, err), 0);
    assert_true(c.help);
    c.help = false;
    assert_config_equal(&c, &before);
    char *help2[] = {"serve", "--help", NULL};
    vx_config l;
    assert_int_equal(vx_config_load(&l, 2, help2, NULL, err), 0);
    assert_true(l.help);

    /* bad values: error names the flag, config untouched */
    static const struct {
        const char *a, *b;
        int rc;
        const char *msg;
    } bad[] = {
        {"--http-port", "abc", VX_EINVAL, "--http-port: 'abc' is not a non-negative integer"},
        {"--http-port", "0", VX_ERANGE, "--http-port: 0 is out of range 1..65535"},
        {"--http-port", "65536", VX_ERANGE, "--http-port: 65536 is out of range 1..65535"},
        {"--http-port", "-1", VX_EINVAL, "--http-port: '-1' is not a non-negative integer"},
        {"--http-port", " 80", VX_EINVAL, "--http-port: ' 80' is not a non-negative integer"},
        {"--http-port", "99999999999999999999999", VX_EINVAL, "--http-port"},
        {"--raft-port", "70000", VX_ERANGE, "--raft-port: 70000 is out of range 0..65535"},
        {"--http-threads", "0", VX_ERANGE, "--http-threads: 0 is out of range 1..1024"},
        {"--http-threads", "1025", VX_ERANGE, "--http-threads: 1025 is out of range 1..1024"},
        {"--max-body-bytes", "1023", VX_ERANGE,
         "--max-body-bytes: 1023 is out of range 1024..1073741824"},
        {"--max-body-bytes", "2GiB", VX_ERANGE, "--max-body-bytes: 2GiB is out of range"},
        {"--max-body-bytes", "1MB", VX_EINVAL, "--max-body-bytes: '1MB' is not a byte size"},
        {"--log-level", "loud", VX_EINVAL,
         "--log-level: 'loud' is not one of debug|info|warn|error"},
        {"--data-dir", "", VX_EINVAL, "--data-dir: empty value"},
        {"--http-host", "a\tb", VX_EINVAL, "--http-host: control characters"},
        {"--slow-query-ms", "1.5", VX_EINVAL, "--slow-query-ms"},
        {"--nope", "1", VX_EINVAL, "unknown flag --nope"},
        {"-x", "1", VX_EINVAL, "unknown flag -x"},
        {"--config", "/nonexistent/vx.conf", VX_EIO, "/nonexistent/vx.conf"},
        {"--config", "", VX_EINVAL, "--config needs a file name"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vx_config_defaults(&c);
        before = c;
        char *av[] = {"serve", "--data-dir", "/changed", (char *)bad[i].a, (char *)bad[i].b, NULL};
        err[0] = '\0';
        int rc = vx_config_parse_args(&c, 5, av, NULL, err);
        if (rc != bad[i].rc || strstr(err, bad[i].msg) == NULL)
            fail_msg("%s %s: rc %d, '%s'", bad[i].a, bad[i].b, rc, err);
        assert_config_equal(&c, &before);
        /* and the same through vx_config_load */
        rc = vx_config_load(&c, 5, av, NULL, err);
        assert_int_equal(rc, bad[i].rc);
        assert_config_equal(&c, &before);
    }
    /* a flag without its value */
    char *missing[] = {"serve", "--http-port", NULL};
    assert_int_equal(vx_config_parse_args(&c, 2, missing, NULL, err), VX_EINVAL);
    assert_non_null(strstr(err, "--http-port needs a value"));

    /* good sizes and the suffixes */
    static const struct {
        const char *v;
        uint64_t want;
    } sizes[] = {
        {"1024", 1024},     {"1k", 1024},         {"64MiB", 64ull << 20},    {"3M", 3ull << 20},
        {"1G", 1ull << 30}, {"1GiB", 1ull << 30}, {"1073741824", 1ull << 30}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *av[] = {"serve", "--max-body-bytes", (char *)sizes[i].v, NULL};
        assert_int_equal(vx_config_parse_args(&c, 3, av, NULL, err), 0);
        assert_true(c.max_body_bytes == sizes[i].want);
    }
}

static void test_file_errors_name_the_line(void **state)
{
    (void)state;
    static const struct {
        const char *content;
        int rc;
        const char *msg; /* after "PATH:" */
    } bad[] = {
        {"http_port = 1\n\nbogus = 3\n", VX_EINVAL, ":3: unknown key 'bogus'"},
        {"# c\nhttp_port = abc\n", VX_EINVAL, ":2: http_port: 'abc' is not a non-negative integer"},
        {"http_port = 70000\n", VX_ERANGE, ":1: http_port: 70000 is out of range 1..65535"},
        {"\n\n\n\nhttp_threads 4\n", VX_EINVAL, ":5: expected 'key = value'"},
        {"= 4\n", VX_EINVAL, ":1: expected 'key = value'"},
        {"http_port = 1\nhttp_port = 2\n", VX_EINVAL, ":2: http_port already set on line 1"},
        {"data_dir = \"/x\n", VX_EINVAL, ":1: unterminated quoted value"},
        {"data_dir = \"/x\" y\n", VX_EINVAL, ":1: text after the quoted value"},
        {"data_dir = \n", VX_EINVAL, ":1: data_dir: empty value"},
        {"http-port = 1\n", VX_EINVAL, ":1: unknown key 'http-port'"}, /* file keys are exact */
        {"HTTP_PORT = 1\n", VX_EINVAL, ":1: unknown key 'HTTP_PORT'"},
        {"log_level = INFO\n", VX_EINVAL, ":1: log_level: 'INFO' is not one of"},
    };
    char err[VX_CONFIG_ERRMAX];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = write_file("bad.conf", bad[i].content);
        vx_config c, before;
        vx_config_defaults(&c);
        before = c;
        err[0] = '\0';
        int rc = vx_config_load_file(&c, path, err);
        char want[512];
        snprintf(want, sizeof want, "%s%s", path, bad[i].msg);
        if (rc != bad[i].rc || strncmp(err, want, strlen(want)) != 0)
            fail_msg("case %zu: rc %d, '%s', want '%s'", i, rc, err, want);
        assert_config_equal(&c, &before); /* an error applies nothing */
    }
    vx_config c;
    vx_config_defaults(&c);
    assert_int_equal(vx_config_load_file(&c, "/nonexistent/x.conf", err), VX_EIO);
    assert_non_null(strstr(err, "/nonexistent/x.conf"));
    /* errbuf may be NULL */
    assert_int_equal(vx_config_load_file(&c, "/nonexistent/x.conf", NULL), VX_EIO);

    /* comments, blanks, CRLF, quoting */
    const char *path = write_file("good.conf", "  # leading comment\r\n"
                                               "\r\n"
                                               "\thttp_port=7000   # trailing comment\r\n"
                                               "data_dir = /srv/a#b   \n"
                                               "http_host = \"my host # \\\"x\\\" \\\\\"  # c\n"
                                               "max_body_bytes = 1GiB\n");
    assert_int_equal(vx_config_load_file(&c, path, err), 0);
    assert_int_equal(c.http_port, 7000);
    assert_string_equal(c.data_dir, "/srv/a#b"); /* '#' not after a blank is data */
    assert_string_equal(c.http_host, "my host # \"x\" \\");
    assert_true(c.max_body_bytes == 1ull << 30);
}

static void test_env_errors_name_the_variable(void **state)
{
    (void)state;
    char err[VX_CONFIG_ERRMAX];
    vx_config c, before;
    vx_config_defaults(&c);
    before = c;
    setenv("VECTRON_HTTP_THREADS", "8", 1);
    setenv("VECTRON_HTTP_PORT", "70000", 1);
    assert_int_equal(vx_config_load_env(&c, err), VX_ERANGE);
    assert_string_equal(err, "VECTRON_HTTP_PORT: 70000 is out of range 1..65535");
    assert_config_equal(&c, &before); /* not even the good variable applied */
    setenv("VECTRON_HTTP_PORT", "x1", 1);
    assert_int_equal(vx_config_load_env(&c, err), VX_EINVAL);
    assert_non_null(strstr(err, "VECTRON_HTTP_PORT"));
    unsetenv("VECTRON_HTTP_PORT");
    setenv("VECTRON_LOG_LEVEL", "warn", 1);
    setenv("VECTRON_MAX_BODY_BYTES", "1M", 1);
    assert_int_equal(vx_config_load_env(&c, err), 0);
    assert_int_equal(c.http_threads, 8);
    assert_string_equal(c.log_level, "warn");
    assert_true(c.max_body_bytes == 1u << 20);
    /* vx_config_load reports it too */
    setenv("VECTRON_MAX_DIM", "0", 1);
    char *argv[] = {"serve", NULL};
    assert_int_equal(vx_config_load(&c, 1, argv, NULL, err), VX_ERANGE);
    assert_non_null(strstr(err, "VECTRON_MAX_DIM"));
}

static void test_validate(void **state)
{
    (void)state;
    char err[VX_CONFIG_ERRMAX];
    vx_config c;
    vx_config_defaults(&c);
    c.http_port = 65000; /* raft port would be 66000 */
    assert_int_equal(vx_config_validate(&c, err), VX_ERANGE);
    assert_non_null(strstr(err, "raft_port"));
    c.raft_port = 65001;
    assert_int_equal(vx_config_validate(&c, err), 0);
    c.raft_port = 65000;
    assert_int_equal(vx_config_validate(&c, err), VX_EINVAL);
    assert_non_null(strstr(err, "http_port"));

    vx_config_defaults(&c);
    c.http_threads = 0;
    assert_int_equal(vx_config_validate(&c, err), VX_ERANGE);
    assert_string_equal(err, "http_threads: 0 is out of range 1..1024");
    vx_config_defaults(&c);
    c.max_body_bytes = 1ull << 31;
    assert_int_equal(vx_config_validate(&c, err), VX_ERANGE);
    assert_non_null(strstr(err, "max_body_bytes"));
    vx_config_defaults(&c);
    strcpy(c.log_level, "loud");
    assert_int_equal(vx_config_validate(&c, err), VX_EINVAL);
    assert_non_null(strstr(err, "log_level"));
    vx_config_defaults(&c);
    c.data_dir[0] = '\0';
    assert_int_equal(vx_config_validate(&c, err), VX_EINVAL);
    assert_non_null(strstr(err, "data_dir"));

    /* vx_config_load validates across fields */
    char *argv[] = {"serve", "--http-port", "7000", "--raft-port", "7000", NULL};
    assert_int_equal(vx_config_load(&c, 5, argv, NULL, err), VX_EINVAL);
}

static char *usage_text(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    vx_config_usage(f);
    fclose(f);
    return buf;
}

static void test_help_mentions_every_field(void **state)
{
    (void)state;
    char *h = usage_text();
    assert_non_null(strstr(h, "-h, --help"));
    assert_non_null(strstr(h, "--config FILE"));
    assert_non_null(strstr(h, "VECTRON_CONFIG"));
    for (size_t i = 0; i < NSPEC; i++) {
        char want[256];
        /* the flag starts an entry of its own */
        snprintf(want, sizeof want, "\n  %s ", spec[i].flag);
        if (strstr(h, want) == NULL) fail_msg("help lacks flag %s", spec[i].flag);
        snprintf(want, sizeof want, "key %s, env %s, default %s", spec[i].name, spec[i].env,
                 spec[i].def);
        if (strstr(h, want) == NULL) fail_msg("help lacks '%s'", want);
    }
    free(h);
}

/* Parse the help back: every "  --flag META" entry's "key K, env E, default
 * D" line must be accepted by the file, environment and flag parsers, and no
 * flag may be in the help that the parser does not know. */
static void test_help_agrees_with_parser(void **state)
{
    (void)state;
    char *h = usage_text();
    char err[VX_CONFIG_ERRMAX];
    size_t entries = 0;
    char *save = NULL;
    char flag[64] = "";
    for (char *line = strtok_r(h, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "  --", 4) == 0) {
            sscanf(line + 2, "%63s", flag);
            continue;
        }
        char key[64], env[64], def[256];
        if (sscanf(line, "      key %63[^,], env %63[^,], default %255[^,\n]", key, env, def) != 3)
            continue;
        entries++;
        vx_config c, d;
        vx_config_defaults(&d);

        char content[512];
        snprintf(content, sizeof content, "%s = %s\n", key, def);
        vx_config_defaults(&c);
        if (vx_config_load_file(&c, write_file("help.conf", content), err) != 0)
            fail_msg("file rejects the help's default: %s", err);
        assert_config_equal(&c, &d);

        clear_env();
        setenv(env, def, 1);
        vx_config_defaults(&c);
        if (vx_config_load_env(&c, err) != 0) fail_msg("env rejects the help's default: %s", err);
        assert_config_equal(&c, &d);
        unsetenv(env);

        char *av[] = {"serve", flag, def, NULL};
        vx_config_defaults(&c);
        if (vx_config_parse_args(&c, 3, av, NULL, err) != 0)
            fail_msg("%s rejects the help's default: %s", flag, err);
        assert_config_equal(&c, &d);

        /* and the flag is the key with dashes */
        char dashed[80];
        snprintf(dashed, sizeof dashed, "--%s", key);
        for (char *p = dashed; *p != '\0'; p++)
            if (*p == '_') *p = '-';
        assert_string_equal(flag, dashed);
    }
    assert_int_equal(entries, NSPEC);
    free(h);
}

static void test_write_round_trip(void **state)
{
    (void)state;
    char err[VX_CONFIG_ERRMAX];
    vx_config c, back;
    vx_config_defaults(&c);
    strcpy(c.data_dir, "/tmp/odd \"dir\" # not a comment \\ ");
    strcpy(c.http_host, "0.0.0.0");
    c.http_port = 8080;
    c.max_body_bytes = 12345;
    c.slow_query_ms = 0;
    strcpy(c.log_level, "warn");
    char path[256];
    snprintf(path, sizeof path, "%s/written.conf", tmpdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(vx_config_write(&c, f), 0);
    fclose(f);
    vx_config_defaults(&back);
    if (vx_config_load_file(&back, path, err) != 0) fail_msg("%s", err);
    assert_config_equal(&back, &c);
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence_file_env_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_errors_name_the_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_errors_name_the_variable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_mentions_every_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_agrees_with_parser, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_round_trip, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
