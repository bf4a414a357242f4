/*
 * http.c - the HTTP transport (libmicrohttpd) in front of the API.
 *
 * One thread per connection (MHD_USE_THREAD_PER_CONNECTION): handlers block
 * on Raft commits, and a connection's thread is the natural place to wait.
 * Threads wait with poll(2), not select(2): no FD_SETSIZE ceiling on the
 * descriptors of a busy server.
 * Bodies are refused with 413 before they are buffered when Content-Length
 * says they are too large (the response is queued on the first call, before
 * MHD reads the upload); chunked bodies are cut off at the limit.  Idle and
 * slow connections time out (MHD_OPTION_CONNECTION_TIMEOUT).  Every request
 * gets an id (X-Request-Id), a structured log line, and its route's counters
 * and latency histogram in /metrics.
 */
#define _GNU_SOURCE
#include "server/http.h"

#include "base/err.h"
#include "auth/gate.h"
#include "base/log.h"
#include "server/metrics.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

/* A live connection, for the deadlines (see the reaper below). */
enum { LC_AWAIT, LC_BODY, LC_HANDLING, LC_SENDING, LC_DOOMED };
typedef struct live_conn {
    int fd;
    int phase;
    uint64_t since_ms; /* when the phase began */
    struct live_conn *prev, *next;
} live_conn;

struct vx_http {
    struct MHD_Daemon *d;
    pthread_mutex_t live_mu;
    live_conn *live;
    pthread_t reaper;
    bool reaper_started, stopping;
    pthread_cond_t reaper_cv;
    uint64_t headers_ms, body_ms;
    _Atomic int in_flight; /* requests being handled: a stop lets them finish */
    vx_api *api;
    vx_metrics *metrics;
    size_t max_body;
    unsigned slow_ms;
    char keep_alive[32]; /* "timeout=N": the idle timeout the server enforces */
};

typedef struct reqstate {
    char *buf;
    size_t len, cap;
    size_t limit; /* the body's bound: max_body, or SMALL_BODY while nobody is known */
    bool too_big;
    int pre;          /* vx_api_headers' verdict */
    vx_principal who; /* the caller, authenticated from the headers */
    struct timespec t0;
} reqstate;

#define SMALL_BODY 65536 /* a body to a route that needs no credentials (health, login) */

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static live_conn *live_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void live_phase(vx_http *h, struct MHD_Connection *conn, int phase)
{
    live_conn *lc = live_of(conn);
    if (lc == NULL) return;
    pthread_mutex_lock(&h->live_mu);
    if (lc->phase != LC_DOOMED) {
        lc->phase = phase;
        lc->since_ms = now_ms();
    }
    pthread_mutex_unlock(&h->live_mu);
}

/* libmicrohttpd's connection timeout is an idle timeout: a client sending a
 * byte now and then holds its connection (and its thread) for ever.  These
 * deadlines are totals: a request's headers must be in within conn_timeout_s
 * of the connection opening or of the previous answer, its body within
 * body_timeout_s of its headers.  A reaper thread shuts down the socket of
 * a connection past its deadline, and its thread ends as at any close. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    vx_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        live_conn *lc = ci ? calloc(1, sizeof *lc) : NULL;
        *socket_context = lc;
        if (lc == NULL) return;
        lc->fd = ci->connect_fd;
        lc->phase = LC_AWAIT;
        lc->since_ms = now_ms();
        pthread_mutex_lock(&h->live_mu);
        lc->next = h->live;
        if (lc->next) lc->next->prev = lc;
        h->live = lc;
        pthread_mutex_unlock(&h->live_mu);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        live_conn *lc = *socket_context;
        if (lc == NULL) return;
        pthread_mutex_lock(&h->live_mu); /* the reaper never touches a closed socket */
        if (lc->prev) lc->prev->next = lc->next;
        else h->live = lc->next;
        if (lc->next) lc->next->prev = lc->prev;
        pthread_mutex_unlock(&h->live_mu);
        free(lc);
        *socket_context = NULL;
    }
}

static void *reaper_main(void *arg)
{
    vx_http *h = arg;
    pthread_mutex_lock(&h->live_mu);
    while (!h->stopping) {
        uint64_t now = now_ms();
        for (live_conn *lc = h->live; lc; lc = lc->next) {
            /* the answer to a slow reader: five body deadlines (a large scroll
             * page to a far client), not for ever */
            uint64_t limit = lc->phase == LC_AWAIT     ? h->headers_ms
                             : lc->phase == LC_BODY    ? h->body_ms
                             : lc->phase == LC_SENDING ? 5 * h->body_ms
                                                       : 0;
            if (limit && now - lc->since_ms > limit) {
                shutdown(lc->fd, SHUT_RDWR);
                lc->phase = LC_DOOMED;
            }
        }
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 250 * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->reaper_cv, &h->live_mu, &dl);
    }
    pthread_mutex_unlock(&h->live_mu);
    return NULL;
}

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static const char *get_arg(void *ctx, const char *key)
{
    return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, key);
}

static const char *get_header(void *ctx, const char *name)
{
    return MHD_lookup_connection_value(ctx, MHD_HEADER_KIND, name);
}

/* The client's address as text ("?" when unknown), formatted once per
 * connection: a connection has a thread of its own (thread per connection),
 * so the thread remembers it for the connection's next requests. */
static __thread const struct MHD_Connection *tl_peer_conn;
static __thread char tl_peer[64];

static const char *peer_of(struct MHD_Connection *conn)
{
    if (tl_peer_conn == conn) return tl_peer;
    char *out = tl_peer;
    socklen_t n = sizeof tl_peer;
    snprintf(out, n, "?");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci != NULL && ci->client_addr != NULL) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, n);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, n);
    }
    tl_peer_conn = conn;
    return tl_peer;
}

/* ---- strict framing and clean text -------------------------------------------------------
 * What a proxy in front of us and we could read differently is refused with
 * 400 and the connection closed (request smuggling): more than one
 * Content-Length or Transfer-Encoding, both at once, a header name with
 * whitespace or nothing in it (libmicrohttpd keeps "Content-Length :" as a
 * name of its own and would read the body as the next request).  A path or
 * query argument that decodes to a control byte (%00 cut a collection name)
 * is refused too, and so is a body that is not UTF-8 (JSON text must be;
 * strict clients could not parse it back). */

/* set by the unescape callback (it runs on the connection's own thread,
 * while the request's line and headers are parsed), read and cleared when
 * the request starts */
static __thread bool tl_bad_url;

static size_t unescape_cb(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    size_t n = MHD_http_unescape(s);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            tl_bad_url = true;
            break;
        }
    return n;
}

typedef struct framing {
    int content_length, transfer_encoding;
    bool bad_name, bad_coding;
} framing;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    framing *f = cls;
    (void)kind;
    (void)value;
    if (key == NULL || key[0] == '\0' || strpbrk(key, " \t") != NULL) f->bad_name = true;
    else if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) f->content_length++;
    else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->transfer_encoding++;
        /* only "chunked" is framed: libmicrohttpd reads any other coding as
         * a body that lasts to the end of the connection */
        if (value == NULL || strcasecmp(value, "chunked") != 0) f->bad_coding = true;
    }
    return MHD_YES;
}

/* NULL when the request's framing is sound, else why not */
static const char *framing_fault(struct MHD_Connection *conn)
{
    framing f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &f);
    if (f.bad_name) return "Bad request: a header name is empty or holds whitespace";
    if (f.bad_coding) return "Bad request: the only Transfer-Encoding accepted is chunked";
    if (f.content_length > 1) return "Bad request: more than one Content-Length header";
    if (f.transfer_encoding > 1) return "Bad request: more than one Transfer-Encoding header";
    if (f.content_length && f.transfer_encoding)
        return "Bad request: both Content-Length and Transfer-Encoding";
    return NULL;
}

/* Well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF);
 * ASCII, what nearly every body is, 8 bytes at a time. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if ((w & 0x8080808080808080ull) == 0) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) len = 2;
        else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f; /* no surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f; /* no more than U+10FFFF */
        } else {
            return false;
        }
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return false;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) return false;
        i += len;
    }
    return true;
}

/* Request bodies start in a buffer of BODY_SMALL bytes; a connection's thread
 * keeps one such buffer between requests (freed when the thread ends), so a
 * stream of small requests (searches) does not allocate and free one per
 * request.  Larger bodies grow their own buffer and free it. */
#define BODY_SMALL 16384
static pthread_key_t g_body_key;
static pthread_once_t g_body_once = PTHREAD_ONCE_INIT;

static void body_key_init(void) { (void)pthread_key_create(&g_body_key, free); }

static char *body_take(void)
{
    pthread_once(&g_body_once, body_key_init);
    char *b = pthread_getspecific(g_body_key);
    if (b != NULL) {
        (void)pthread_setspecific(g_body_key, NULL);
        return b;
    }
    return malloc(BODY_SMALL);
}

static void body_give(char *b, size_t cap)
{
    if (b == NULL) return;
    pthread_once(&g_body_once, body_key_init);
    if (cap == BODY_SMALL && pthread_getspecific(g_body_key) == NULL &&
        pthread_setspecific(g_body_key, b) == 0)
        return;
    free(b);
}

static enum MHD_Result send_response(const vx_http *h, struct MHD_Connection *conn,
                                     vx_api_response *res, const char *rid)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(res->len, res->body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(res->body);
        return MHD_NO;
    }
    res->body = NULL; /* MHD frees it */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            res->content_type ? res->content_type : "application/json");
    MHD_add_response_header(r, "X-Request-Id", rid);
    /* Tell the client when an idle connection will be closed, so that it
     * stops reusing the connection before the server closes it: without the
     * hint a client that keeps connections longer than the server (Node's
     * fetch keeps them 4 s) can send a request just as the server closes the
     * socket, and that request is lost with a reset.  Clients that read the
     * hint (undici, Node's http agent) stop reusing a connection a margin
     * before it runs out (undici: 1 s). */
    if (res->close)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    else if (res->route == NULL || strcmp(res->route, "too_large") != 0) /* that one closes */
        MHD_add_response_header(r, "Keep-Alive", h->keep_alive);
    if (res->retry_after) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, res->retry_after);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Each connection thread remembers the series of the routes it served last:
 * a route name is a literal, so (registry, route, status) is the key, and a
 * series lives as long as its registry. */
typedef struct series_memo {
    const vx_metrics *m;
    const char *route;
    int status;
    vx_counter *cnt;
    vx_histogram *hist;
} series_memo;

static __thread series_memo tl_memo[8];
static __thread unsigned tl_memo_next;

static void observe(vx_http *h, const char *method, const char *path, vx_api_response *res,
                    const char *rid, double secs)
{
    series_memo *memo = NULL;
    for (unsigned i = 0; h->metrics && res->route && i < 8; i++)
        if (tl_memo[i].m == h->metrics && tl_memo[i].route == res->route &&
            tl_memo[i].status == res->status) {
            memo = &tl_memo[i];
            break;
        }
    if (memo != NULL) {
        vx_counter_add(memo->cnt, 1);
        vx_histogram_observe(memo->hist, secs);
    } else if (h->metrics) {
        char labels[160];
        snprintf(labels, sizeof labels, "route=\"%s\",code=\"%d\"", res->route ? res->route : "unknown",
                 res->status);
        vx_counter *cnt = vx_metrics_counter(h->metrics, "vectron_http_requests_total",
                                             "HTTP requests by route and status code", labels);
        if (cnt) vx_counter_add(cnt, 1);
        snprintf(labels, sizeof labels, "route=\"%s\"", res->route ? res->route : "unknown");
        vx_histogram *hist =
            vx_metrics_histogram(h->metrics, "vectron_http_request_duration_seconds",
                                 "HTTP request latency by route", labels);
        if (hist) vx_histogram_observe(hist, secs);
        if (cnt && hist && res->route) {
            tl_memo[tl_memo_next++ % 8] =
                (series_memo){h->metrics, res->route, res->status, cnt, hist};
        }
    }
    double ms = secs * 1000.0;
    /* every request at debug (--log-level debug); errors always; slow ones below */
    int level = res->status >= 500 ? VX_LOG_ERROR : res->status >= 400 ? VX_LOG_INFO : VX_LOG_DEBUG;
    if (vx_log_enabled(level))
        vx_log(level, "http_request",
           "rid=%s method=%s path=%s route=%s status=%d ms=%.3f", rid, method, path,
           res->route ? res->route : "unknown", res->status, ms);
    if (ms >= h->slow_ms)
        vx_log(VX_LOG_WARN, "slow_query", "rid=%s method=%s path=%s route=%s ms=%.3f", rid, method,
               path, res->route ? res->route : "unknown", ms);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    vx_http *h = cls;
    (void)version;
    reqstate *st = *con_cls;
    if (st == NULL) {
        st = calloc(1, sizeof(*st));
        if (st == NULL) return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &st->t0);
        *con_cls = st;
        const char *fault = framing_fault(conn);
        if (fault == NULL && tl_bad_url)
            fault = "Bad request: the path or a query argument holds a control character";
        tl_bad_url = false;
        if (fault != NULL) { /* answered now, and the connection closed: no body is read */
            st->too_big = true;
            char rid[17];
            vx_log_request_id(rid);
            vx_api_response res = {0};
            vx_api_error(&res, 400, fault);
            res.route = "bad_request";
            res.close = true;
            observe(h, method, "-", &res, rid, since(&st->t0));
            return send_response(h, conn, &res, rid);
        }
        live_phase(h, conn, LC_BODY);
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        bool has_body = (cl != NULL && strtoull(cl, NULL, 10) > 0) ||
                        MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
        /* credentials are checked on the headers, before a byte of the body
         * is read or buffered: a refusal reads none (and closes, when a body
         * was announced: it is not read) */
        vx_api_request hreq = {.method = method,
                               .path = url,
                               .body = "",
                               .get_arg = get_arg,
                               .arg_ctx = conn,
                               .get_header = get_header,
                               .peer = peer_of(conn)};
        vx_api_response hres;
        st->pre = vx_api_headers(h->api, &hreq, &hres, &st->who);
        if (st->pre == VX_API_REFUSED) {
            st->too_big = true;
            char rid[17];
            vx_log_request_id(rid);
            hres.close = has_body;
            observe(h, method, url, &hres, rid, since(&st->t0));
            return send_response(h, conn, &hres, rid);
        }
        st->limit = st->pre == VX_API_OPEN && h->max_body > SMALL_BODY ? SMALL_BODY : h->max_body;
        if (cl != NULL && strtoull(cl, NULL, 10) > st->limit) {
            st->too_big = true; /* answered now, before the body is read */
            char rid[17];
            vx_log_request_id(rid);
            vx_api_response res = {0};
            char msg[128];
            snprintf(msg, sizeof msg, "Payload too large: the body exceeds %zu bytes", st->limit);
            vx_api_error(&res, 413, msg);
            res.route = "too_large";
            observe(h, method, url, &res, rid, since(&st->t0));
            return send_response(h, conn, &res, rid);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (st->too_big) return MHD_YES;
        if (st->len + n > st->limit) {
            st->too_big = true;
            body_give(st->buf, st->cap);
            st->buf = NULL;
            st->len = st->cap = 0;
            return MHD_YES;
        }
        if (st->cap == 0 && st->len + n + 1 <= BODY_SMALL) {
            st->buf = body_take();
            if (st->buf == NULL) return MHD_NO;
            st->cap = BODY_SMALL;
        }
        if (st->len + n + 1 > st->cap) {
            size_t cap = st->cap ? st->cap : BODY_SMALL;
            while (cap < st->len + n + 1) cap *= 2;
            char *b = realloc(st->buf, cap);
            if (b == NULL) return MHD_NO;
            st->buf = b;
            st->cap = cap;
        }
        memcpy(st->buf + st->len, upload_data, n);
        st->len += n;
        return MHD_YES;
    }
    char rid[17];
    vx_log_request_id(rid);
    vx_api_response res = {0};
    live_phase(h, conn, LC_HANDLING);
    if (st->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg, "Payload too large: the body exceeds %zu bytes", st->limit);
        vx_api_error(&res, 413, msg);
        res.route = "too_large";
    } else if (st->len > 0 && !utf8_ok((const unsigned char *)st->buf, st->len)) {
        vx_api_error(&res, 400, "Bad request: the body is not valid UTF-8 (JSON text must be)");
        res.route = "bad_request";
    } else {
        atomic_fetch_add(&h->in_flight, 1);
        vx_api_request req = {.method = method,
                              .path = url,
                              .body = st->buf ? st->buf : "",
                              .body_len = st->len,
                              .get_arg = get_arg,
                              .arg_ctx = conn,
                              .get_header = get_header,
                              .who = st->pre == VX_API_AUTHED ? &st->who : NULL};
        req.peer = peer_of(conn);
        memcpy(req.rid, rid, sizeof rid);
        vx_api_handle(h->api, &req, &res);
        atomic_fetch_sub(&h->in_flight, 1);
    }
    observe(h, method, url, &res, rid, since(&st->t0));
    live_phase(h, conn, LC_SENDING); /* the handler is done: the answer has a deadline */
    return send_response(h, conn, &res, rid);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    vx_http *h = cls;
    (void)toe;
    live_phase(h, conn, LC_AWAIT); /* the next request's headers: a new deadline */
    reqstate *st = *con_cls;
    if (st) {
        vx_principal_clear(&st->who);
        body_give(st->buf, st->cap);
        free(st);
        *con_cls = NULL;
    }
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    vx_log(VX_LOG_WARN, "http_server", "message=%s", msg);
}

int vx_http_start(const vx_http_options *opt, vx_api *api, vx_metrics *metrics, vx_http **out,
                  char *errbuf)
{
    vx_http *h = calloc(1, sizeof(*h));
    if (h == NULL) return VX_ENOMEM;
    h->api = api;
    h->metrics = metrics;
    h->max_body = opt->max_body_bytes;
    h->slow_ms = opt->slow_query_ms;
    h->headers_ms = (uint64_t)opt->conn_timeout_s * 1000u;
    h->body_ms = (uint64_t)(opt->body_timeout_s ? opt->body_timeout_s : 60) * 1000u;
    pthread_mutex_init(&h->live_mu, NULL);
    pthread_cond_init(&h->reaper_cv, NULL);
    snprintf(h->keep_alive, sizeof h->keep_alive, "timeout=%u", opt->conn_timeout_s);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(opt->port);
    if (inet_pton(AF_INET, opt->host, &sa.sin_addr) != 1) {
        free(h);
        return vx_errf(errbuf, VX_HTTP_ERRMSG_LEN, VX_EINVAL, "bad listen address %s (IPv4)",
                       opt->host);
    }
    bool tls = opt->tls_cert_pem != NULL && opt->tls_key_pem != NULL;
    struct MHD_OptionItem tls_opts[] = {
        {tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *)opt->tls_cert_pem},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)opt->tls_key_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    h->d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ERROR_LOG | MHD_USE_ITC | (tls ? MHD_USE_TLS : 0),
        opt->port, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, tls_opts,
        MHD_OPTION_EXTERNAL_LOGGER, log_mhd, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)opt->conn_timeout_s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)opt->max_connections,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_LISTENING_ADDRESS_REUSE,
        (unsigned)1, MHD_OPTION_UNESCAPE_CALLBACK, unescape_cb, h, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, h, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)opt->max_connections_per_address, MHD_OPTION_END);
    if (h->d == NULL) {
        pthread_mutex_destroy(&h->live_mu);
        pthread_cond_destroy(&h->reaper_cv);
        free(h);
        return vx_errf(errbuf, VX_HTTP_ERRMSG_LEN, VX_EIO,
                       tls ? "cannot listen on %s:%u (in use, not allowed, or the TLS certificate "
                             "and key are unusable or do not match)"
                           : "cannot listen on %s:%u (in use, or not allowed)",
                       opt->host, (unsigned)opt->port);
    }
    h->reaper_started = pthread_create(&h->reaper, NULL, reaper_main, h) == 0;
    *out = h;
    return 0;
}

static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (size_t n; buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += n;
        if (len + 1 == cap) {
            char *b = cap < (1u << 20) ? realloc(buf, cap * 2) : NULL; /* a PEM is small */
            if (b == NULL) free(buf);
            buf = b;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf == NULL || len == 0) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

static bool path_given(const char *p) { return p != NULL && p[0] != '\0' && strcmp(p, "none") != 0; }

int vx_http_tls_load(const char *cert_path, const char *key_path, char **cert, char **key)
{
    *cert = *key = NULL;
    if (!path_given(cert_path) && !path_given(key_path)) return 0;
    if (!path_given(cert_path) || !path_given(key_path)) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s",
               "HTTPS needs both tls_cert and tls_key (PEM files)");
        return 2;
    }
    *cert = read_pem(cert_path);
    *key = read_pem(key_path);
    if (*cert == NULL || *key == NULL) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s cert=%s key=%s",
               "a TLS file cannot be read or is empty", cert_path, key_path);
        free(*cert);
        if (*key) sodium_memzero(*key, strlen(*key));
        free(*key);
        *cert = *key = NULL;
        return 2;
    }
    return 0;
}

void vx_http_stop(vx_http *h)
{
    if (h == NULL) return;
    /* stop accepting, let the requests being handled finish (bounded), then
     * close every connection */
    MHD_socket ls = MHD_quiesce_daemon(h->d);
    if (ls != MHD_INVALID_SOCKET) close(ls);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(&h->in_flight) > 0 && since(&t0) < 30.0) usleep(2000);
    pthread_mutex_lock(&h->live_mu);
    h->stopping = true;
    pthread_cond_signal(&h->reaper_cv);
    pthread_mutex_unlock(&h->live_mu);
    if (h->reaper_started) pthread_join(h->reaper, NULL);
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->live_mu);
    pthread_cond_destroy(&h->reaper_cv);
    free(h);
}
