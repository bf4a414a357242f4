/*
 * test_http_client.c - the CLI's HTTP/1.1 client against a scripted server.
 *
 * A thread listens on 127.0.0.1 (port VX_TEST_PORT, default any free port)
 * and answers each request with the next step of a script: raw response
 * bytes, then keep the connection, close it, or stay silent.  That covers
 * what `vectron serve` never sends: chunked bodies with extensions and
 * trailers, bodies ended by close, interim 1xx responses, a server that
 * drops an idle keep-alive connection (retried for GET, not for POST), a
 * server that never answers (timeout), and a refused connection.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "cli/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum { KEEP, CLOSE, SILENT };

typedef struct step {
    const char *response;
    int after;
} step;

typedef struct fake {
    int lfd, port;
    const step *script;
    size_t nsteps;
    pthread_t thread;
    pthread_mutex_t mu; /* guards accepts and last_request */
    int accepts;
    char last_request[4096];
} fake;

/* Read one request (head + Content-Length body); 0 at EOF. */
static int read_request(int fd, char *out, size_t cap)
{
    size_t len = 0;
    char *end;
    for (;;) {
        out[len] = '\0';
        if ((end = strstr(out, "\r\n\r\n")) != NULL) break;
        if (len + 1 >= cap) return -1;
        ssize_t n = read(fd, out + len, cap - 1 - len);
        if (n <= 0) return 0;
        len += (size_t)n;
    }
    size_t head = (size_t)(end + 4 - out), body = 0;
    const char *cl = strcasestr(out, "\r\ncontent-length:");
    if (cl != NULL && cl < end) body = strtoul(cl + 17, NULL, 10);
    while (len < head + body && len + 1 < cap) {
        ssize_t n = read(fd, out + len, cap - 1 - len);
        if (n <= 0) return 0;
        len += (size_t)n;
    }
    out[len] = '\0';
    return 1;
}

static void *serve(void *arg)
{
    fake *f = arg;
    size_t i = 0;
    char req[sizeof f->last_request];
    while (i < f->nsteps) {
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) break;
        pthread_mutex_lock(&f->mu);
        f->accepts++;
        pthread_mutex_unlock(&f->mu);
        while (i < f->nsteps && read_request(fd, req, sizeof req) == 1) {
            pthread_mutex_lock(&f->mu);
            memcpy(f->last_request, req, sizeof req);
            pthread_mutex_unlock(&f->mu);
            const step *s = &f->script[i++];
            if (s->after == SILENT) {
                char c;
                while (read(fd, &c, 1) > 0) {
                }
                break;
            }
            if (write(fd, s->response, strlen(s->response)) < 0) break;
            if (s->after == CLOSE) break;
        }
        close(fd);
    }
    return NULL;
}

static void fake_start(fake *f, const step *script, size_t n)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    f->script = script;
    f->nsteps = n;
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const char *p = getenv("VX_TEST_PORT");
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)(p ? atoi(p) : 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    socklen_t al = sizeof a;
    getsockname(f->lfd, (struct sockaddr *)&a, &al);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, serve, f), 0);
}

/* After the script has run (the thread has exited), the thread's fields
 * are the test's to read. */
static void fake_stop(fake *f)
{
    pthread_join(f->thread, NULL);
    close(f->lfd);
    pthread_mutex_destroy(&f->mu);
}

static void client(vx_httpc *c, const fake *f, int timeout_s)
{
    char url[64], err[VX_HTTPC_ERRMSG_LEN];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/pre", f->port);
    assert_int_equal(vx_httpc_init(c, url, timeout_s, "k1", err), 0);
}

#define OK_JSON(body)                                                                              \
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " #body "\r\n\r\n"

static void test_keep_alive_and_request_format(void **state)
{
    (void)state;
    static const step script[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n"
         "{\"a\":true}\n",
         KEEP},
        {"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n{}", KEEP},
        {"HTTP/1.1 204 No Content\r\n\r\n", CLOSE},
    };
    fake f;
    vx_httpc c;
    vx_httpc_response r;
    fake_start(&f, script, 3);
    client(&c, &f, 5);
    assert_int_equal(vx_httpc_request(&c, "PUT", "/x/y?wait=true", "{\"b\":1}", 7, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 11);
    assert_string_equal(r.body, "{\"a\":true}\n");
    assert_string_equal(r.content_type, "application/json");
    vx_httpc_response_free(&r);
    assert_int_equal(vx_httpc_request(&c, "GET", "/z", NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{}");
    vx_httpc_response_free(&r);
    pthread_mutex_lock(&f.mu);
    bool get_ok = strstr(f.last_request, "GET /pre/z HTTP/1.1\r\n") != NULL &&
                  strcasestr(f.last_request, "content-length") == NULL;
    pthread_mutex_unlock(&f.mu);
    assert_true(get_ok); /* a request without a body has no Content-Length */
    assert_int_equal(vx_httpc_request(&c, "DELETE", "/z", NULL, 0, &r), 0);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.len, 0);
    assert_non_null(r.body);
    vx_httpc_response_free(&r);
    vx_httpc_close(&c);
    fake_stop(&f);
    assert_int_equal(f.accepts, 1); /* one connection for all three */
}

static void test_put_request_bytes(void **state)
{
    (void)state;
    static const step script[] = {{OK_JSON(2) "{}", CLOSE}};
    fake f;
    vx_httpc c;
    vx_httpc_response r;
    fake_start(&f, script, 1);
    client(&c, &f, 5);
    assert_int_equal(vx_httpc_request(&c, "PUT", "/c/points?wait=true", "{\"b\":1}", 7, &r), 0);
    vx_httpc_response_free(&r);
    vx_httpc_close(&c);
    fake_stop(&f);
    char want[256];
    snprintf(want, sizeof want, "PUT /pre/c/points?wait=true HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n",
             f.port);
    assert_memory_equal(f.last_request, want, strlen(want));
    assert_non_null(strstr(f.last_request, "\r\napi-key: k1\r\n"));
    assert_non_null(strstr(f.last_request, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(f.last_request, "\r\nContent-Length: 7\r\n\r\n{\"b\":1}"));
}

static void test_chunked_close_and_interim(void **state)
{
    (void)state;
    static const step script[] = {
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         "5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
         KEEP},
        {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nA: b\r\n\r\n" OK_JSON(4) "true",
         KEEP},
        {"HTTP/1.0 200 OK\r\n\r\nuntil the end", CLOSE},
        {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye", CLOSE},
    };
    fake f;
    vx_httpc c;
    vx_httpc_response r;
    fake_start(&f, script, 4);
    client(&c, &f, 5);
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), 0);
    assert_string_equal(r.body, "hello, world");
    vx_httpc_response_free(&r);
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "true");
    vx_httpc_response_free(&r);
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), 0);
    assert_string_equal(r.body, "until the end");
    vx_httpc_response_free(&r);
    assert_int_equal(c.fd, -1); /* HTTP/1.0 without keep-alive: closed */
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), 0);
    assert_string_equal(r.body, "bye");
    vx_httpc_response_free(&r);
    assert_int_equal(c.fd, -1);
    vx_httpc_close(&c);
    fake_stop(&f);
    assert_int_equal(f.accepts, 2); /* the first three on one connection */
}

static void test_stale_connection(void **state)
{
    (void)state;
    /* The server answers and then drops the connection without saying so
     * (as an idle timeout does).  The next GET finds it closed and is sent
     * again on a new connection; a POST is not. */
    static const step script[] = {
        {OK_JSON(1) "1", CLOSE},
        {OK_JSON(1) "2", CLOSE},
        {OK_JSON(1) "3", CLOSE},
    };
    fake f;
    vx_httpc c;
    vx_httpc_response r;
    fake_start(&f, script, 3);
    client(&c, &f, 5);
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), 0);
    assert_string_equal(r.body, "1");
    vx_httpc_response_free(&r);
    usleep(100 * 1000); /* let the close arrive; the retry must cope either way */
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), 0);
    assert_string_equal(r.body, "2");
    vx_httpc_response_free(&r);
    usleep(100 * 1000);
    int rc = vx_httpc_request(&c, "POST", "/", "{}", 2, &r);
    assert_int_equal(rc, VX_EIO);
    assert_non_null(strstr(c.errmsg, "127.0.0.1"));
    assert_int_equal(vx_httpc_request(&c, "POST", "/", "{}", 2, &r), 0);
    assert_string_equal(r.body, "3");
    vx_httpc_response_free(&r);
    vx_httpc_close(&c);
    fake_stop(&f);
}

static void test_timeout_and_malformed(void **state)
{
    (void)state;
    static const step script[] = {
        {NULL, SILENT},
        {"SMTP ready\r\n\r\n", CLOSE},
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", CLOSE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", CLOSE},
    };
    fake f;
    vx_httpc c;
    vx_httpc_response r;
    fake_start(&f, script, 4);
    client(&c, &f, 1);
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), VX_EIO);
    assert_non_null(strstr(c.errmsg, "no response from 127.0.0.1:"));
    assert_non_null(strstr(c.errmsg, "within 1 s"));
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), VX_EFORMAT);
    assert_non_null(strstr(c.errmsg, "malformed response"));
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), VX_EIO);
    assert_non_null(strstr(c.errmsg, "in the middle of the response"));
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), VX_EFORMAT);
    assert_non_null(strstr(c.errmsg, "chunk size"));
    assert_null(r.body);
    vx_httpc_close(&c);
    fake_stop(&f);
}

static void test_connection_refused(void **state)
{
    (void)state;
    /* a port that was just free: bind, note it, close */
    fake f;
    int one = 1;
    f.lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(f.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const char *p = getenv("VX_TEST_PORT");
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)(p ? atoi(p) : 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f.lfd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(f.lfd, (struct sockaddr *)&a, &al);
    f.port = ntohs(a.sin_port);
    close(f.lfd);
    vx_httpc c;
    vx_httpc_response r;
    client(&c, &f, 5);
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), VX_EIO);
    char want[128];
    snprintf(want, sizeof want, "cannot connect to 127.0.0.1:%d: Connection refused", f.port);
    assert_string_equal(c.errmsg, want);
    vx_httpc_close(&c);

    char err[VX_HTTPC_ERRMSG_LEN];
    assert_int_equal(vx_httpc_init(&c, "http://no-such-host.invalid:1", 5, NULL, err), 0);
    assert_int_equal(vx_httpc_request(&c, "GET", "/", NULL, 0, &r), VX_EIO);
    assert_non_null(strstr(c.errmsg, "cannot resolve no-such-host.invalid"));
    vx_httpc_close(&c);
}

static void test_escape_segment(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(vx_httpc_escape_segment("a-b_c.d~9", out, sizeof out), 9);
    assert_string_equal(out, "a-b_c.d~9");
    assert_int_equal(vx_httpc_escape_segment("a b/?%", out, sizeof out), 14);
    assert_string_equal(out, "a%20b%2F%3F%25");
    assert_true(vx_httpc_escape_segment("abcdef", out, 4) >= 4);
    assert_string_equal(out, "abc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_alive_and_request_format),
        cmocka_unit_test(test_put_request_bytes),
        cmocka_unit_test(test_chunked_close_and_interim),
        cmocka_unit_test(test_stale_connection),
        cmocka_unit_test(test_timeout_and_malformed),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_escape_segment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
