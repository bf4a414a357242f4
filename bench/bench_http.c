/*
 * bench_http.c - `vectron-bench http`: the single-node server over HTTP.
 *
 * Starts `vectron serve` (the binary given with --server) on a fresh data
 * directory and measures, through its Qdrant REST API:
 *   1. acknowledged ingest: points/s of PUT .../points?wait=true with
 *      batches of 100 and 1000 points, 128-d (the SIFT base) and 768-d
 *      (Gaussian), over --writers parallel connections, and the time from
 *      the last acknowledgement until every point is in the index (the
 *      collection's status turns green);
 *   2. search at fixed beams (--ef; by default the server's default beam,
 *      the collection's ef_construct = 100 with hnsw_ef left out of the
 *      requests, then ef 64) over --conns parallel keep-alive connections
 *      (driven by one epoll thread, as wrk drives them): queries/s,
 *      p50/p99/p99.9 latency and recall@10 on the SIFT queries; and, in the
 *      same run, the in-process index built with the same parameters,
 *      searched at the same ef by as many threads.  Five rounds, each all
 *      queries over HTTP then all in process, after a warm-up round: the
 *      medians, and the median of the per-round ratios HTTP/in-process (the
 *      cost of the whole server path: HTTP, JSON, the shard's read path, id
 *      lookups).  With --server, also the CPU per query of the server
 *      process (from /proc) and of the in-process searchers, and their
 *      ratio: what the server path costs apart from the load generator,
 *      which on a small machine shares the server's cores.
 * Request bodies are formatted before any clock starts.  One JSON line per
 * measurement on stdout.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "bench_util.h"

#include "base/err.h"
#include "base/fvecs.h"
#include "cli/http_client.h"
#include "index/index.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct opts {
    const char *server, *url, *base, *query, *gt;
    unsigned conns, writers, k;
    unsigned efs[8], nef; /* search beams to measure; 0: the server's default */
    const char *only; /* "ingest", "search" or NULL: both */
    size_t n128, n768;
    int port;
} opts;

static char g_url[64];

/* The collections' ef_construct, which is also the server's default beam. */
#define BENCH_EF_CONSTRUCT 100

/* ---- JSON bodies ------------------------------------------------------------------ */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_grow(sbuf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->len + n + 1) cap *= 2;
    b->p = realloc(b->p, cap);
    if (b->p == NULL) bench_fail("out of memory");
    b->cap = cap;
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    sb_grow(b, 64);
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if ((size_t)n >= b->cap - b->len) {
        sb_grow(b, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

static void sb_vector(sbuf *b, const float *v, size_t dim)
{
    sb_grow(b, dim * 16 + 2);
    b->p[b->len++] = '[';
    for (size_t i = 0; i < dim; i++) {
        if (i) b->p[b->len++] = ',';
        b->len += (size_t)snprintf(b->p + b->len, 16, "%.7g", (double)v[i]);
    }
    b->p[b->len++] = ']';
}

static int request(vx_httpc *c, const char *method, const char *path, const char *body,
                   size_t len, int want, char **out)
{
    vx_httpc_response r;
    if (vx_httpc_request(c, method, path, body, len, &r) != 0) {
        fprintf(stderr, "%s %s: %s\n", method, path, c->errmsg);
        return -1;
    }
    int ok = r.status == want;
    if (!ok) fprintf(stderr, "%s %s: HTTP %d %.300s\n", method, path, r.status, r.body);
    if (out) *out = ok ? r.body : NULL;
    if (!out || !ok) vx_httpc_response_free(&r);
    return ok ? 0 : -1;
}

/* ---- the server ------------------------------------------------------------------------ */

static pid_t start_server(const opts *o, char *dir)
{
    snprintf(dir, 64, "/tmp/vx_bench_http_XXXXXX");
    if (mkdtemp(dir) == NULL) bench_fail("mkdtemp");
    char port[16], logp[128];
    snprintf(port, sizeof port, "%d", o->port);
    snprintf(logp, sizeof logp, "%s.log", dir);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(logp, "w", stderr);
        (void)f;
        execl(o->server, o->server, "serve", "--data-dir", dir, "--http-port", port,
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    snprintf(g_url, sizeof g_url, "http://127.0.0.1:%d", o->port);
    vx_httpc c;
    char err[VX_HTTPC_ERRMSG_LEN];
    vx_httpc_init(&c, g_url, 5, NULL, err);
    for (int i = 0; i < 600; i++) {
        vx_httpc_response r;
        if (vx_httpc_request(&c, "GET", "/readyz", NULL, 0, &r) == 0) {
            int st = r.status;
            vx_httpc_response_free(&r);
            if (st == 200) {
                vx_httpc_close(&c);
                return pid;
            }
        }
        usleep(50000);
    }
    kill(pid, SIGKILL);
    bench_fail("the server did not become ready (log: %s)", logp);
    return -1;
}

/* ---- ingest ------------------------------------------------------------------------------------ */

typedef struct ingest_job {
    const char *coll;
    const float *data;
    size_t dim, n, batch;
    _Atomic size_t next; /* next batch start */
    _Atomic int failed;
    double *ack_ms; /* per batch */
    sbuf *bodies;   /* per batch, formatted before the clock starts */
} ingest_job;

/* Formats the request bodies, batch by batch, before anything is timed: a
 * load generator's own formatting (768 floats through printf cost the client
 * about as much CPU as the server spent on them) must not be charged to the
 * server when both share the machine's cores. */
static void *ingest_prepare(void *arg)
{
    ingest_job *j = arg;
    for (;;) {
        size_t start = atomic_fetch_add(&j->next, j->batch);
        if (start >= j->n) break;
        size_t end = start + j->batch < j->n ? start + j->batch : j->n;
        sbuf *b = &j->bodies[start / j->batch];
        sb_printf(b, "{\"points\":[");
        for (size_t i = start; i < end; i++) {
            sb_printf(b, "%s{\"id\":%zu,\"vector\":", i > start ? "," : "", i);
            sb_vector(b, j->data + i * j->dim, j->dim);
            sb_printf(b, ",\"payload\":{\"i\":%zu}}", i);
        }
        sb_printf(b, "]}");
    }
    return NULL;
}

static void *ingest_main(void *arg)
{
    ingest_job *j = arg;
    vx_httpc c;
    char err[VX_HTTPC_ERRMSG_LEN], path[200];
    vx_httpc_init(&c, g_url, 120, NULL, err);
    snprintf(path, sizeof path, "/collections/%s/points?wait=true", j->coll);
    for (;;) {
        size_t start = atomic_fetch_add(&j->next, j->batch);
        if (start >= j->n || atomic_load(&j->failed)) break;
        const sbuf *b = &j->bodies[start / j->batch];
        double t0 = bench_now_s();
        if (request(&c, "PUT", path, b->p, b->len, 200, NULL) != 0) atomic_store(&j->failed, 1);
        j->ack_ms[start / j->batch] = (bench_now_s() - t0) * 1000.0;
    }
    vx_httpc_close(&c);
    return NULL;
}

static bool collection_green(vx_httpc *c, const char *coll)
{
    char path[160], *body = NULL;
    snprintf(path, sizeof path, "/collections/%s", coll);
    if (request(c, "GET", path, NULL, 0, 200, &body) != 0) return false;
    bool green = strstr(body, "\"status\":\"green\"") != NULL;
    free(body);
    return green;
}

static void run_ingest(const opts *o, const float *data, size_t dim, size_t n, size_t batch,
                       const char *coll)
{
    vx_httpc c;
    char err[VX_HTTPC_ERRMSG_LEN], path[160], body[200];
    vx_httpc_init(&c, g_url, 120, NULL, err);
    snprintf(path, sizeof path, "/collections/%s", coll);
    request(&c, "DELETE", path, NULL, 0, 200, NULL);
    snprintf(body, sizeof body,
             "{\"vectors\":{\"size\":%zu,\"distance\":\"Euclid\"},\"hnsw_config\":{\"m\":16,"
             "\"ef_construct\":%d}}",
             dim, BENCH_EF_CONSTRUCT);
    if (request(&c, "PUT", path, body, strlen(body), 200, NULL) != 0) bench_fail("create");
    size_t nb = (n + batch - 1) / batch;
    ingest_job j = {.coll = coll, .data = data, .dim = dim, .n = n, .batch = batch,
                    .ack_ms = calloc(nb, sizeof(double)), .bodies = calloc(nb, sizeof(sbuf))};
    if (j.ack_ms == NULL || j.bodies == NULL) bench_fail("out of memory");
    pthread_t th[64];
    unsigned w = o->writers < 64 ? o->writers : 64;
    for (unsigned i = 0; i < w; i++) pthread_create(&th[i], NULL, ingest_prepare, &j);
    for (unsigned i = 0; i < w; i++) pthread_join(th[i], NULL);
    atomic_store(&j.next, 0);
    double t0 = bench_now_s();
    for (unsigned i = 0; i < w; i++) pthread_create(&th[i], NULL, ingest_main, &j);
    for (unsigned i = 0; i < w; i++) pthread_join(th[i], NULL);
    double t_ack = bench_now_s() - t0;
    if (atomic_load(&j.failed)) bench_fail("ingest into %s failed", coll);
    double t1 = bench_now_s();
    while (!collection_green(&c, coll)) usleep(20000);
    double t_indexed = bench_now_s() - t1;
    qsort(j.ack_ms, nb, sizeof(double), bench_cmp_double);
    printf("{\"bench\":\"http_ingest\",\"dim\":%zu,\"batch\":%zu,\"points\":%zu,\"writers\":%u,"
           "\"points_per_s\":%.0f,\"ack_p50_ms\":%.2f,\"ack_p99_ms\":%.2f,"
           "\"indexed_after_last_ack_s\":%.2f}\n",
           dim, batch, n, w, (double)n / t_ack, bench_percentile_sorted(j.ack_ms, nb, 0.50),
           bench_percentile_sorted(j.ack_ms, nb, 0.99), t_indexed);
    fflush(stdout);
    for (size_t i = 0; i < nb; i++) free(j.bodies[i].p);
    free(j.bodies);
    free(j.ack_ms);
    vx_httpc_close(&c);
}

/* ---- search ----------------------------------------------------------------------------------- */

typedef struct search_job {
    const char *coll;
    const float *q;
    size_t dim, nq, k;
    unsigned ef;
    double *lat_ms;
    uint64_t *ids; /* nq * k */
    /* The requests, formatted before the clock starts (as wrk and other
     * load generators do): query i is bodies.p[off[i], off[i + 1]), a whole
     * HTTP message.
     * Formatting 128 floats costs the client as much CPU as a third of a
     * search, and on a small machine the client shares the server's cores. */
    sbuf bodies;
    size_t *off;
} search_job;

static void parse_ids(const char *body, uint64_t *ids, size_t k)
{
    size_t n = 0;
    for (const char *p = strstr(body, "\"id\":"); p && n < k; p = strstr(p + 5, "\"id\":"))
        ids[n++] = strtoull(p + 5, NULL, 10);
    for (; n < k; n++) ids[n] = UINT64_MAX;
}

/* One pass of all queries over conns keep-alive connections driven by one
 * thread with epoll, as wrk drives them: each connection sends its next
 * request as soon as its answer is in.  Blocking clients (a thread per
 * connection) would add a sleep and a wakeup per query on the client side,
 * which on a small machine is CPU taken from the server being measured.
 * The requests are whole HTTP messages prepared before the clock starts. */
typedef struct hconn {
    int fd;
    size_t q;        /* the query in flight */
    double t0;
    char *buf;
    size_t len, cap; /* response bytes so far */
} hconn;

static int connect_to(const vx_httpc_url *u)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(u->host, u->port, &hints, &ai) != 0) bench_fail("resolve %s", u->host);
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0)
        bench_fail("connect %s: %s", u->authority, strerror(errno));
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) bench_fail("send: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* The body of a complete response in c->buf, or NULL while incomplete. */
static const char *response_body(hconn *c, int *status, size_t *total)
{
    if (c->len < 12) return NULL;
    const char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (end == NULL) return NULL;
    const char *cl = memmem(c->buf, (size_t)(end - c->buf), "Content-Length:", 15);
    if (cl == NULL) cl = memmem(c->buf, (size_t)(end - c->buf), "content-length:", 15);
    if (cl == NULL) bench_fail("a response without Content-Length");
    size_t blen = strtoull(cl + 15, NULL, 10), hlen = (size_t)(end + 4 - c->buf);
    if (c->len < hlen + blen) return NULL;
    *status = atoi(c->buf + 9);
    *total = hlen + blen;
    return end + 4;
}

static void search_pass(search_job *j, const vx_httpc_url *u, unsigned conns)
{
    int ep = epoll_create1(0);
    hconn *cs = calloc(conns, sizeof(hconn));
    if (ep < 0 || cs == NULL) bench_fail("epoll");
    size_t next = 0, done = 0;
    for (unsigned i = 0; i < conns && next < j->nq; i++) {
        cs[i].fd = connect_to(u);
        cs[i].cap = 1 << 16;
        cs[i].buf = malloc(cs[i].cap);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
        cs[i].q = next++;
        cs[i].t0 = bench_now_s();
        send_all(cs[i].fd, j->bodies.p + j->off[cs[i].q], j->off[cs[i].q + 1] - j->off[cs[i].q]);
    }
    struct epoll_event evs[64];
    while (done < j->nq) {
        int n = epoll_wait(ep, evs, 64, 60000);
        if (n == 0) bench_fail("no answer in 60 s");
        if (n < 0) {
            if (errno == EINTR) continue;
            bench_fail("epoll_wait: %s", strerror(errno));
        }
        for (int e = 0; e < n; e++) {
            hconn *c = &cs[evs[e].data.u32];
            if (c->cap - c->len < 4096) {
                c->cap *= 2;
                c->buf = realloc(c->buf, c->cap);
                if (c->buf == NULL) bench_fail("out of memory");
            }
            ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) bench_fail("the server closed a connection (%s)", r ? strerror(errno) : "EOF");
            c->len += (size_t)r;
            c->buf[c->len] = '\0';
            int status;
            size_t total;
            const char *body = response_body(c, &status, &total);
            if (body == NULL) continue;
            if (status != 200) bench_fail("search: HTTP %d %.300s", status, body);
            j->lat_ms[c->q] = (bench_now_s() - c->t0) * 1000.0;
            parse_ids(body, j->ids + c->q * j->k, j->k);
            done++;
            memmove(c->buf, c->buf + total, c->len - total);
            c->len -= total;
            if (next < j->nq) {
                c->q = next++;
                c->t0 = bench_now_s();
                send_all(c->fd, j->bodies.p + j->off[c->q], j->off[c->q + 1] - j->off[c->q]);
            }
        }
    }
    for (unsigned i = 0; i < conns; i++) {
        if (cs[i].buf == NULL) continue;
        close(cs[i].fd);
        free(cs[i].buf);
    }
    free(cs);
    close(ep);
}

typedef struct local_job {
    vx_index *idx;
    const float *q;
    size_t dim, nq, k;
    unsigned ef;
    _Atomic size_t next;
    uint64_t *ids;
} local_job;

static void *local_main(void *arg)
{
    local_job *j = arg;
    vx_hit hits[100];
    vx_search_params p = {.ef = j->ef};
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->nq) break;
        uint32_t n = 0;
        vx_index_search(j->idx, j->q + i * j->dim, (uint32_t)j->k, &p, NULL, hits, &n);
        for (size_t r = 0; r < j->k; r++) j->ids[i * j->k + r] = r < n ? hits[r].label : UINT64_MAX;
    }
    return NULL;
}

static double recall(const uint64_t *ids, const int32_t *gt, size_t gt_k, size_t nq, size_t k)
{
    size_t hit = 0;
    for (size_t i = 0; i < nq; i++)
        for (size_t a = 0; a < k; a++)
            for (size_t b = 0; b < k; b++)
                if (ids[i * k + a] == (uint64_t)gt[i * gt_k + b]) {
                    hit++;
                    break;
                }
    return (double)hit / (double)(nq * k);
}

typedef struct add_job {
    vx_index *idx;
    const float *base;
    size_t n, dim;
    _Atomic size_t next;
} add_job;

static void *add_main(void *arg)
{
    add_job *a = arg;
    char err[VX_ERRMSG_LEN];
    for (size_t i; (i = atomic_fetch_add(&a->next, 1)) < a->n;)
        if (vx_index_add(a->idx, i, a->base + i * a->dim, err) != 0) bench_fail("add: %s", err);
    return NULL;
}

/* The in-process index gets the same points, added by nthreads threads. */
static void add_parallel(vx_index *idx, const float *base, size_t n, size_t dim, unsigned nthreads)
{
    add_job a = {.idx = idx, .base = base, .n = n, .dim = dim};
    pthread_t th[256];
    for (unsigned i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, add_main, &a);
    for (unsigned i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
}

/* CPU seconds (user + system) used so far by process pid, all its threads. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* after the command name */
    unsigned long ut = 0, st = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                            &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(double), bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define SEARCH_ROUNDS 5

/* Rounds of (all queries over HTTP, then all queries in process), after a
 * warm-up of each: on a shared, noisy machine the two are measured side by
 * side, and the medians and the median of the per-round ratios reported.
 * The CPU each side spent per query (the server process's, read from /proc;
 * the in-process searchers') shows what the server path costs apart from
 * the client, which on a small machine shares the server's cores. */
static void search_at(const opts *o, pid_t server, vx_index *idx, unsigned ef, bool send_ef,
                      size_t nbase, const float *q, size_t nq, size_t dim, const int32_t *gt,
                      size_t gt_k)
{
    size_t k = o->k;
    search_job j = {.coll = "sift", .q = q, .dim = dim, .nq = nq, .k = k, .ef = ef,
                    .lat_ms = calloc(nq, sizeof(double)), .ids = calloc(nq * k, sizeof(uint64_t))};
    j.off = malloc((nq + 1) * sizeof(size_t));
    double *lat_all = malloc(nq * SEARCH_ROUNDS * sizeof(double));
    if (j.lat_ms == NULL || j.ids == NULL || j.off == NULL || lat_all == NULL)
        bench_fail("out of memory");
    vx_httpc_url url;
    char uerr[VX_HTTPC_ERRMSG_LEN];
    if (vx_httpc_url_parse(g_url, &url, uerr) != 0) bench_fail("%s", uerr);
    sbuf one = {0};
    for (size_t i = 0; i < nq; i++) {
        one.len = 0;
        sb_printf(&one, "{\"vector\":");
        sb_vector(&one, q + i * dim, dim);
        if (send_ef) sb_printf(&one, ",\"limit\":%zu,\"params\":{\"hnsw_ef\":%u}}", k, ef);
        else sb_printf(&one, ",\"limit\":%zu}", k); /* the server's default beam */
        j.off[i] = j.bodies.len;
        sb_printf(&j.bodies,
                  "POST %s/collections/%s/points/search HTTP/1.1\r\nHost: %s\r\n"
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%.*s",
                  url.prefix, j.coll, url.authority, one.len, (int)one.len, one.p);
    }
    j.off[nq] = j.bodies.len;
    free(one.p);
    pthread_t th[256];
    unsigned cn = o->conns < 256 ? o->conns : 256;

    local_job l = {.idx = idx, .q = q, .dim = dim, .nq = nq, .k = k, .ef = ef,
                   .ids = calloc(nq * k, sizeof(uint64_t))};

    double http_qps[SEARCH_ROUNDS], local_qps[SEARCH_ROUNDS], ratio[SEARCH_ROUNDS];
    double srv_us[SEARCH_ROUNDS], loc_us[SEARCH_ROUNDS], cli_us[SEARCH_ROUNDS];
    size_t nlat = 0;
    for (int round = -1; round < SEARCH_ROUNDS; round++) { /* -1: warm-up */
        double c0 = server > 0 ? proc_cpu_s(server) : NAN, cc0 = self_cpu_s();
        double t0 = bench_now_s();
        search_pass(&j, &url, cn);
        double secs = bench_now_s() - t0;
        double c1 = server > 0 ? proc_cpu_s(server) : NAN, cc1 = self_cpu_s();

        atomic_store(&l.next, 0);
        double lc0 = self_cpu_s(), l0 = bench_now_s();
        for (unsigned i = 0; i < cn; i++) pthread_create(&th[i], NULL, local_main, &l);
        for (unsigned i = 0; i < cn; i++) pthread_join(th[i], NULL);
        double lsecs = bench_now_s() - l0, lc1 = self_cpu_s();
        if (round < 0) continue;
        http_qps[round] = (double)nq / secs;
        local_qps[round] = (double)nq / lsecs;
        ratio[round] = http_qps[round] / local_qps[round];
        srv_us[round] = (c1 - c0) * 1e6 / (double)nq;
        loc_us[round] = (lc1 - lc0) * 1e6 / (double)nq;
        cli_us[round] = (cc1 - cc0) * 1e6 / (double)nq;
        memcpy(lat_all + nlat, j.lat_ms, nq * sizeof(double));
        nlat += nq;
        fprintf(stderr, "round %d: http %.0f q/s, in-process %.0f q/s, ratio %.3f\n", round,
                http_qps[round], local_qps[round], ratio[round]);
    }
    double r = recall(j.ids, gt, gt_k, nq, k), lr = recall(l.ids, gt, gt_k, nq, k);
    qsort(lat_all, nlat, sizeof(double), bench_cmp_double);
    double srv_cpu = server > 0 ? median(srv_us, SEARCH_ROUNDS) : NAN;
    double loc_cpu = median(loc_us, SEARCH_ROUNDS);
    printf("{\"bench\":\"http_search\",\"points\":%zu,\"queries\":%zu,\"rounds\":%d,\"ef\":%u,"
           "\"ef_from\":\"%s\",\"conns\":%u,\"qps\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
           "\"recall\":%.4f,\"inprocess_qps\":%.0f,\"inprocess_recall\":%.4f,\"ratio\":%.3f,"
           "\"server_cpu_us_per_query\":",
           nbase, nq, SEARCH_ROUNDS, ef, send_ef ? "request" : "server_default", cn,
           median(http_qps, SEARCH_ROUNDS),
           bench_percentile_sorted(lat_all, nlat, 0.50),
           bench_percentile_sorted(lat_all, nlat, 0.99),
           bench_percentile_sorted(lat_all, nlat, 0.999), r, median(local_qps, SEARCH_ROUNDS),
           lr, median(ratio, SEARCH_ROUNDS));
    /* null where there is no server process to read (--url) */
    bench_print_num("%.1f", srv_cpu);
    printf(",\"client_cpu_us_per_query\":%.1f,\"inprocess_cpu_us_per_query\":%.1f,\"cpu_ratio\":",
           median(cli_us, SEARCH_ROUNDS), loc_cpu);
    bench_print_num("%.3f", loc_cpu / srv_cpu);
    printf("}\n");
    fflush(stdout);
    free(l.ids);
    free(lat_all);
    free(j.lat_ms);
    free(j.ids);
    free(j.off);
    free(j.bodies.p);
}

/* The in-process engine, with the collection's parameters (run_ingest),
 * built by as many threads as there are connections, then the search at
 * each ef of --ef: 0 there is the server's default beam (the collection's
 * ef_construct, which the requests then leave out, as most clients do). */
static void run_search(const opts *o, pid_t server, const float *base, size_t nbase,
                       const float *q, size_t nq, size_t dim, const int32_t *gt, size_t gt_k)
{
    vx_index_config cfg;
    vx_index_config_default(&cfg, (uint32_t)dim, VX_METRIC_L2);
    cfg.m = 16;
    cfg.ef_construction = BENCH_EF_CONSTRUCT;
    vx_index *idx;
    char err[VX_ERRMSG_LEN];
    if (vx_index_new(&cfg, &idx, err) != 0) bench_fail("index: %s", err);
    add_parallel(idx, base, nbase, dim, o->conns < 256 ? o->conns : 256);
    for (unsigned e = 0; e < o->nef; e++) {
        unsigned ef = o->efs[e] ? o->efs[e] : BENCH_EF_CONSTRUCT;
        search_at(o, server, idx, ef, o->efs[e] != 0, nbase, q, nq, dim, gt, gt_k);
    }
    vx_index_free(idx);
}

static void usage(FILE *out)
{
    fputs("usage: vectron-bench http --server PATH/TO/vectron --base B.fvecs --query Q.fvecs\n"
          "                          --gt G.ivecs [--ef default,64] [--conns 8] [--writers 4]\n"
          "                          [--n768 20000] [--port 16500] [--only ingest|search]\n"
          "       --url URL instead of --server: measure a running server or gateway\n"
          "       (e.g. scripts/cluster.sh up); its collections are replaced\n",
          out);
}

int bench_http_main(int argc, char **argv)
{
    opts o = {.conns = 8, .writers = 4, .efs = {0, 64}, .nef = 2, .k = 10, .n768 = 20000,
              .port = 16500};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) return bench_usage_error("%s needs a value", a);
        i++;
        if (strcmp(a, "--server") == 0) o.server = v;
        else if (strcmp(a, "--url") == 0) o.url = v;
        else if (strcmp(a, "--base") == 0) o.base = v;
        else if (strcmp(a, "--query") == 0) o.query = v;
        else if (strcmp(a, "--gt") == 0) o.gt = v;
        else if (strcmp(a, "--ef") == 0) {
            o.nef = 0;
            for (const char *p = v; *p && o.nef < 8; p += strcspn(p, ","), p += *p == ',') {
                if (strncmp(p, "default", 7) == 0) o.efs[o.nef++] = 0;
                else if (atoi(p) > 0) o.efs[o.nef++] = (unsigned)atoi(p);
                else return bench_usage_error("--ef: %s is not a list of beams", v);
            }
            if (o.nef == 0) return bench_usage_error("--ef: %s is not a list of beams", v);
        }
        else if (strcmp(a, "--conns") == 0) o.conns = (unsigned)atoi(v);
        else if (strcmp(a, "--writers") == 0) o.writers = (unsigned)atoi(v);
        else if (strcmp(a, "--n768") == 0) o.n768 = (size_t)atol(v);
        else if (strcmp(a, "--port") == 0) o.port = atoi(v);
        else if (strcmp(a, "--only") == 0) o.only = v;
        else return bench_usage_error("unknown option %s", a);
    }
    if ((!o.server && !o.url) || !o.base || !o.query || !o.gt) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    float *base, *q;
    int32_t *gt;
    size_t nb, d, nq, dq, ngt, gk;
    char err[VX_ERRMSG_LEN];
    if (vx_fvecs_read(o.base, 0, &base, &nb, &d, err) != 0 ||
        vx_fvecs_read(o.query, 0, &q, &nq, &dq, err) != 0 ||
        vx_ivecs_read(o.gt, 0, &gt, &ngt, &gk, err) != 0)
        bench_fail("reading data: %s", err);
    char dir[64] = "";
    pid_t pid = -1;
    if (o.url) snprintf(g_url, sizeof g_url, "%s", o.url);
    else pid = start_server(&o, dir);
    /* 768-d Gaussian vectors for the wide ingest */
    float *wide = malloc(o.n768 * 768 * sizeof(float));
    unsigned long long s = 12345;
    for (size_t i = 0; i < o.n768 * 768; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        wide[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
    size_t batches[2] = {100, 1000};
    for (int b = 0; b < 2 && !(o.only && strcmp(o.only, "search") == 0); b++) {
        char name[32];
        snprintf(name, sizeof name, "ingest128_%zu", batches[b]);
        run_ingest(&o, base, d, nb, batches[b], name);
        snprintf(name, sizeof name, "ingest768_%zu", batches[b]);
        run_ingest(&o, wide, 768, o.n768, batches[b], name);
    }
    if (!(o.only && strcmp(o.only, "ingest") == 0)) {
        run_ingest(&o, base, d, nb, 1000, "sift");
        run_search(&o, pid, base, nb, q, nq, d, gt, gk);
    }
    if (pid > 0) {
        kill(pid, SIGTERM);
        int st;
        waitpid(pid, &st, 0);
        char cmd[160];
        snprintf(cmd, sizeof cmd, "rm -rf %s %s.log", dir, dir);
        if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", dir);
    }
    free(wide);
    free(base);
    free(q);
    free(gt);
    return 0;
}
