/*
 * cli_load.c - `vectron cli load`: the parallel bulk loader.
 *
 * Plan:
 *   1. GET /collections/NAME for its dimension, so a wrong file fails before
 *      anything is written ("file has dimension 64, collection has 128").
 *   2. Read the whole file into memory.  .fvecs with vx_fvecs_read (point i
 *      gets id start_id + i); .jsonl is split into lines and every line is
 *      checked with cJSON here, in one thread, before the first request:
 *      an object with "id" (unsigned integer or UUID), "vector" (dim
 *      numbers) and optionally "payload" (object), nothing else.  A bad line
 *      is reported by number and nothing is sent.
 *   3. Cut the points into batches of --batch and start --concurrency
 *      worker threads, each with its own keep-alive connection.  A worker
 *      takes the next batch number from an atomic counter, writes the body
 *      {"points":[...]} into its own reused buffer and sends
 *      PUT /collections/NAME/points?wait=true.  .fvecs vectors are written
 *      by hand (vx_cli__put_f32: integers as integers, else %.9g, which reads
 *      back as the same float); .jsonl lines are copied verbatim, so ids
 *      beyond 2^53 and payloads reach the server exactly as written.
 *   4. The main thread waits on a condition variable with a timeout and
 *      redraws the progress bar on stderr (a TTY), or prints a line every
 *      few seconds (not a TTY), until the workers are done.
 *
 * Failure: the first failed batch stops the others from taking new ones
 * (batches in flight finish).  The lowest-numbered failed batch is reported
 * with its id (or line) range and the server's error text, and the exit
 * status is 1.  Batches that succeeded stay written; upserts are
 * idempotent, so running the same load again is safe.  A 429 or 503 answer
 * (the server is busy or a shard has no leader yet) is retried with
 * exponential backoff, up to RETRIES times, before it counts as a failure.
 *
 * Threading: the loader struct is shared; next, done and stop are atomics;
 * mu guards running and the failure record; everything else is read-only
 * once the workers start.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "base/fvecs.h"
#include "base/pointid.h"
#include "cli/cli_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BATCH 500
#define DEFAULT_CONCURRENCY 4
#define RETRIES 6          /* for 429 and 503 */
#define RETRY_FIRST_MS 100 /* then doubling */
#define TTY_TICK_MS 200    /* progress bar redraw */
#define LINE_EVERY_S 5.0   /* progress line when stderr is not a TTY */
#define POINT_OVERHEAD 48  /* {"id":<20 digits>,"vector":[...]}, */

enum { FMT_NONE, FMT_FVECS, FMT_JSONL };

void vx_cli__usage_load(FILE *out)
{
    fprintf(out,
            "usage: vectron cli load NAME FILE [--format fvecs|jsonl] [--batch N]\n"
            "                        [--start-id N] [--concurrency N]\n"
            "\n"
            "Upserts the vectors of FILE into collection NAME (which must exist, with the\n"
            "file's dimension) with PUT /collections/NAME/points?wait=true, in batches sent\n"
            "over parallel keep-alive connections.  Shows progress on stderr, and prints the\n"
            "points loaded, the seconds taken and the points per second at the end.\n"
            "\n"
            "  --format F        fvecs: TEXMEX .fvecs (SIFT): per row an int32 dimension d\n"
            "                      and d float32, little-endian; ids are consecutive\n"
            "                    jsonl: one JSON object per line,\n"
            "                      {\"id\": 1, \"vector\": [0.1, ...], \"payload\": {...}}\n"
            "                      id an unsigned integer or a UUID string; payload optional\n"
            "                    (default: from the extension, .fvecs or .jsonl/.ndjson)\n"
            "  --batch N         points per request (default %d)\n"
            "  --start-id N      fvecs: the id of the first row, the others count up\n"
            "                    (default 0)\n"
            "  --concurrency N   parallel connections (default %d)\n"
            "  --timeout SEC     (global) the limit on each batch's request (default 60)\n"
            "\n"
            "A jsonl file is checked line by line before anything is sent.  When a batch\n"
            "fails, no new batches start and the exit status is 1; the error names the\n"
            "batch, its id or line range, and the server's message.  Batches already\n"
            "loaded stay loaded: upserts are idempotent, so the load can be run again.\n",
            DEFAULT_BATCH, DEFAULT_CONCURRENCY);
}

/* ---- the source: all points in memory --------------------------------------------------- */

typedef struct line {
    size_t off;
    uint32_t len;
    uint32_t no; /* 1-based line number in the file */
} line;

typedef struct source {
    int format;
    const char *file;
    size_t n, dim;
    float *data; /* FMT_FVECS: n * dim */
    uint64_t start_id;
    char *text; /* FMT_JSONL: the file, and its non-blank lines */
    line *lines;
} source;

static void source_free(source *s)
{
    free(s->data);
    free(s->text);
    free(s->lines);
}

static int read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (f == NULL) return snprintf(err, errlen, "%s: %s", path, strerror(errno)), VX_CLI_FAIL;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        fclose(f);
        return VX_CLI_FAIL;
    }
    size_t n = (size_t)st.st_size;
    char *t = malloc(n + 1);
    if (t == NULL) {
        snprintf(err, errlen, "%s: cannot allocate %zu bytes", path, n + 1);
        fclose(f);
        return VX_CLI_FAIL;
    }
    size_t got = fread(t, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (got != n || bad) {
        snprintf(err, errlen, "%s: read failed%s", path, bad ? "" : " (file changed?)");
        free(t);
        return VX_CLI_FAIL;
    }
    t[n] = '\0';
    *text = t;
    *len = n;
    return VX_CLI_OK;
}

/* One jsonl line is a point we can send: see the file comment. */
static int check_point(const source *s, const line *ln, char *err, size_t errlen)
{
    const char *t = s->text + ln->off;
    cJSON *j = vx_cli__json_parse(t, ln->len); /* big ids as Raw digits */
    int rc = VX_CLI_USAGE;
    if (!cJSON_IsObject(j)) {
        snprintf(err, errlen, "not a JSON object");
        goto out;
    }
    const cJSON *id = NULL, *vec = NULL, *e;
    cJSON_ArrayForEach(e, j)
    {
        if (strcmp(e->string, "id") == 0)
            id = e;
        else if (strcmp(e->string, "vector") == 0)
            vec = e;
        else if (strcmp(e->string, "payload") == 0) {
            if (!cJSON_IsObject(e) && !cJSON_IsNull(e)) {
                snprintf(err, errlen, "\"payload\" must be an object");
                goto out;
            }
        } else {
            snprintf(err, errlen, "unexpected key \"%.40s\" (a point has id, vector, payload)",
                     e->string);
            goto out;
        }
    }
    if (id == NULL) {
        snprintf(err, errlen, "no \"id\"");
        goto out;
    }
    if (cJSON_IsRaw(id)) { /* an integer of 16+ digits */
        const char *d = id->valuestring;
        size_t n = strlen(d);
        if (d[0] == '-' || n > 20 || (n == 20 && strcmp(d, "18446744073709551615") > 0)) {
            snprintf(err, errlen, "\"id\" %s is not an unsigned 64-bit integer", d);
            goto out;
        }
    } else if (cJSON_IsNumber(id)) {
        double v = id->valuedouble;
        if (v < 0 || v != floor(v)) {
            snprintf(err, errlen, "\"id\" must be an unsigned 64-bit integer or a UUID");
            goto out;
        }
    } else if (cJSON_IsString(id)) {
        vx_point_id pid;
        if (vx_id_from_uuid_text(&pid, id->valuestring, strlen(id->valuestring)) != 0) {
            snprintf(err, errlen,
                     "\"id\" \"%.60s\" is not a UUID (ids are unsigned integers, written as JSON "
                     "numbers, or UUIDs)",
                     id->valuestring);
            goto out;
        }
    } else {
        snprintf(err, errlen, "\"id\" must be an unsigned integer or a UUID string");
        goto out;
    }
    if (!cJSON_IsArray(vec)) {
        snprintf(err, errlen, "no \"vector\" array");
        goto out;
    }
    size_t n = 0;
    cJSON_ArrayForEach(e, vec)
    {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble)) {
            snprintf(err, errlen, "\"vector\" value %zu is not a number", n + 1);
            goto out;
        }
        n++;
    }
    if (n != s->dim) {
        snprintf(err, errlen, "\"vector\" has %zu values; the collection's dimension is %zu", n,
                 s->dim);
        goto out;
    }
    rc = VX_CLI_OK;
out:
    cJSON_Delete(j);
    return rc;
}

static int load_jsonl(source *s, char *err, size_t errlen)
{
    size_t len, cap = 1024, n = 0;
    int rc = read_file(s->file, &s->text, &len, err, errlen);
    if (rc != VX_CLI_OK) return rc;
    s->lines = malloc(cap * sizeof *s->lines);
    if (s->lines == NULL) return snprintf(err, errlen, "out of memory"), VX_CLI_FAIL;
    uint32_t no = 0;
    for (size_t off = 0; off < len;) {
        char *nl = memchr(s->text + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - s->text) : len, a = off, b = end;
        no++;
        off = end + 1;
        while (a < b && (s->text[a] == ' ' || s->text[a] == '\t' || s->text[a] == '\r'))
            a++;
        while (b > a && (s->text[b - 1] == ' ' || s->text[b - 1] == '\t' || s->text[b - 1] == '\r'))
            b--;
        if (a == b) continue;
        if (b - a > UINT32_MAX || no == UINT32_MAX)
            return snprintf(err, errlen, "%s: line %u is too long", s->file, no), VX_CLI_FAIL;
        if (n == cap) {
            line *nl2 = realloc(s->lines, 2 * cap * sizeof *s->lines);
            if (nl2 == NULL) return snprintf(err, errlen, "out of memory"), VX_CLI_FAIL;
            s->lines = nl2;
            cap *= 2;
        }
        s->lines[n++] = (line){.off = a, .len = (uint32_t)(b - a), .no = no};
    }
    s->n = n;
    if (n == 0) return snprintf(err, errlen, "%s: no points (empty file)", s->file), VX_CLI_USAGE;
    for (size_t i = 0; i < n; i++) {
        char why[512];
        if (check_point(s, &s->lines[i], why, sizeof why) != VX_CLI_OK) {
            snprintf(err, errlen, "%s: line %u: %s (nothing was loaded)", s->file, s->lines[i].no,
                     why);
            return VX_CLI_USAGE;
        }
    }
    return VX_CLI_OK;
}

static int load_fvecs(source *s, size_t want_dim, char *err, size_t errlen)
{
    char ferr[256];
    size_t dim;
    if (vx_fvecs_read(s->file, 0, &s->data, &s->n, &dim, ferr) != 0)
        return snprintf(err, errlen, "%s", ferr), VX_CLI_FAIL;
    if (dim != want_dim)
        return snprintf(err, errlen,
                        "%s has vectors of dimension %zu; the collection's dimension is %zu",
                        s->file, dim, want_dim),
               VX_CLI_USAGE;
    if (s->n - 1 > UINT64_MAX - s->start_id)
        return snprintf(err, errlen, "--start-id %" PRIu64 " + %zu rows overflows a u64 id",
                        s->start_id, s->n),
               VX_CLI_USAGE;
    for (size_t i = 0; i < s->n * dim; i++)
        if (!isfinite(s->data[i]))
            return snprintf(err, errlen,
                            "%s: row %zu has a NaN or infinite value, which JSON cannot carry "
                            "(nothing was loaded)",
                            s->file, i / dim),
                   VX_CLI_USAGE;
    return VX_CLI_OK;
}

/* ---- the loader ------------------------------------------------------------------------- */

typedef struct loader {
    vx_cli *g;
    const source *src;
    char path[1024]; /* /collections/NAME/points?wait=true */
    size_t batch, nbatches;
    atomic_size_t next; /* the next batch to take */
    atomic_size_t done; /* points acknowledged by the server */
    atomic_bool stop;   /* a batch failed: take no more */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when a worker exits */
    unsigned running;
    size_t fail_batch; /* the lowest failed batch, SIZE_MAX when none */
    char fail_msg[VX_CLI_ERRLEN];
} loader;

static char *put_u64(char *p, uint64_t v)
{
    char t[20];
    int k = 0;
    do
        t[k++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (k > 0)
        *p++ = t[--k];
    return p;
}

/* Write {"points":[...]} for points first..first+count into b. */
static int build_batch(const loader *L, size_t first, size_t count, vx_cli__buf *b)
{
    const source *s = L->src;
    b->len = 0;
    if (s->format == FMT_JSONL) {
        size_t need = 16;
        for (size_t i = 0; i < count; i++)
            need += s->lines[first + i].len + 1;
        if (vx_cli__buf_reserve(b, need) != 0) return -1;
        char *p = b->p;
        memcpy(p, "{\"points\":[", 11);
        p += 11;
        for (size_t i = 0; i < count; i++) {
            const line *ln = &s->lines[first + i];
            if (i) *p++ = ',';
            memcpy(p, s->text + ln->off, ln->len);
            p += ln->len;
        }
        memcpy(p, "]}", 3);
        b->len = (size_t)(p + 2 - b->p);
        return 0;
    }
    size_t per_point = s->dim * (VX_CLI_F32_MAX + 1) + POINT_OVERHEAD;
    if (count > (SIZE_MAX - 16) / per_point || vx_cli__buf_reserve(b, count * per_point + 16) != 0)
        return -1;
    char *p = b->p;
    memcpy(p, "{\"points\":[", 11);
    p += 11;
    for (size_t i = 0; i < count; i++) {
        const float *v = s->data + (first + i) * s->dim;
        if (i) *p++ = ',';
        memcpy(p, "{\"id\":", 6);
        p = put_u64(p + 6, s->start_id + first + i);
        memcpy(p, ",\"vector\":[", 11);
        p += 11;
        for (size_t d = 0; d < s->dim; d++) {
            if (d) *p++ = ',';
            p = vx_cli__put_f32(p, v[d]);
        }
        *p++ = ']';
        *p++ = '}';
    }
    memcpy(p, "]}", 3);
    b->len = (size_t)(p + 2 - b->p);
    return 0;
}

static void describe_batch(const loader *L, size_t b, char *out, size_t n)
{
    const source *s = L->src;
    size_t first = b * L->batch;
    size_t last = first + L->batch <= s->n ? first + L->batch - 1 : s->n - 1;
    if (s->format == FMT_FVECS)
        snprintf(out, n, "batch %zu of %zu (ids %" PRIu64 "..%" PRIu64 ")", b + 1, L->nbatches,
                 s->start_id + first, s->start_id + last);
    else
        snprintf(out, n, "batch %zu of %zu (lines %u..%u of %s)", b + 1, L->nbatches,
                 s->lines[first].no, s->lines[last].no, s->file);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* PUT one batch; 0, or -1 with the reason in msg. */
static int send_batch(loader *L, vx_httpc *h, const vx_cli__buf *b, char *msg, size_t n)
{
    unsigned wait_ms = RETRY_FIRST_MS;
    for (int attempt = 0;; attempt++) {
        vx_httpc_response res;
        if (vx_httpc_request(h, "PUT", L->path, b->p, b->len, &res) != 0) {
            snprintf(msg, n, "%s", h->errmsg);
            return -1;
        }
        if (res.status >= 200 && res.status <= 299) {
            vx_httpc_response_free(&res);
            return 0;
        }
        bool busy = res.status == 429 || res.status == 503;
        if (busy && attempt < RETRIES && !atomic_load(&L->stop)) {
            vx_httpc_response_free(&res);
            sleep_ms(wait_ms);
            wait_ms *= 2;
            continue;
        }
        vx_cli__http_error(&res, msg, n);
        if (busy) {
            size_t k = strlen(msg);
            snprintf(msg + k, n - k, " (after %d retries)", attempt);
        }
        vx_httpc_response_free(&res);
        return -1;
    }
}

static void record_failure(loader *L, size_t b, const char *msg)
{
    pthread_mutex_lock(&L->mu);
    if (b < L->fail_batch) {
        char what[256];
        describe_batch(L, b, what, sizeof what);
        L->fail_batch = b;
        snprintf(L->fail_msg, sizeof L->fail_msg, "%s failed: %s", what, msg);
    }
    pthread_mutex_unlock(&L->mu);
    atomic_store(&L->stop, true);
}

static void *worker(void *arg)
{
    loader *L = arg;
    vx_httpc h;
    vx_cli__buf body = {0};
    char msg[VX_CLI_ERRLEN];
    if (vx_httpc_init(&h, L->g->url, (int)L->g->timeout_s, L->g->api_key, msg) != 0) {
        /* cannot happen: the main thread has used the same settings */
        pthread_mutex_lock(&L->mu);
        L->fail_batch = 0;
        snprintf(L->fail_msg, sizeof L->fail_msg, "%s", msg);
        pthread_mutex_unlock(&L->mu);
        atomic_store(&L->stop, true);
        goto done;
    }
    while (!atomic_load(&L->stop)) {
        size_t b = atomic_fetch_add(&L->next, 1);
        if (b >= L->nbatches) break;
        size_t first = b * L->batch;
        size_t count = L->src->n - first < L->batch ? L->src->n - first : L->batch;
        if (build_batch(L, first, count, &body) != 0) {
            record_failure(L, b, "out of memory building the request");
            break;
        }
        if (send_batch(L, &h, &body, msg, sizeof msg) != 0) {
            record_failure(L, b, msg);
            break;
        }
        atomic_fetch_add(&L->done, count);
    }
    vx_httpc_close(&h);
done:
    vx_cli__buf_free(&body);
    pthread_mutex_lock(&L->mu);
    L->running--;
    pthread_cond_signal(&L->cv);
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

/* ---- progress --------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void draw(const loader *L, double elapsed, bool tty)
{
    size_t done = atomic_load(&L->done), total = L->src->n;
    double pct = total ? 100.0 * (double)done / (double)total : 100.0;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    if (!tty) {
        fprintf(stderr, "load: %zu/%zu points (%.1f%%), %.0f points/s, %.0f s\n", done, total, pct,
                rate, elapsed);
        return;
    }
    char bar[31];
    size_t fill = total ? done * 30 / total : 30;
    for (size_t i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    char eta[32] = "";
    if (rate > 0 && done < total) {
        unsigned long s = (unsigned long)((double)(total - done) / rate + 0.5);
        snprintf(eta, sizeof eta, "  ETA %lu:%02lu", s / 60, s % 60);
    }
    fprintf(stderr, "\r\033[K[%s] %5.1f%%  %zu/%zu points  %.0f points/s%s", bar, pct, done, total,
            rate, eta);
    fflush(stderr);
}

static void add_ms(struct timespec *t, unsigned ms)
{
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    t->tv_sec += ms / 1000 + t->tv_nsec / 1000000000L;
    t->tv_nsec %= 1000000000L;
}

/* Start the workers, show progress until they are done.  VX_CLI_OK or
 * VX_CLI_FAIL (L->fail_msg). */
static int run(loader *L, unsigned concurrency, double *elapsed)
{
    bool tty = isatty(STDERR_FILENO);
    pthread_t *tids = calloc(concurrency, sizeof *tids);
    pthread_condattr_t ca;
    if (tids == NULL) {
        snprintf(L->fail_msg, sizeof L->fail_msg, "out of memory");
        return VX_CLI_FAIL;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&L->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&L->mu, NULL);

    double t0 = now_s(), last_line = t0;
    unsigned started = 0;
    int perr = 0;
    pthread_mutex_lock(&L->mu);
    for (; started < concurrency; started++) {
        if ((perr = pthread_create(&tids[started], NULL, worker, L)) != 0) break;
        L->running++;
    }
    if (started == 0) {
        pthread_mutex_unlock(&L->mu);
        snprintf(L->fail_msg, sizeof L->fail_msg, "cannot start a thread: %s", strerror(perr));
        free(tids);
        return VX_CLI_FAIL;
    }
    while (L->running > 0) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        add_ms(&dl, TTY_TICK_MS);
        pthread_cond_timedwait(&L->cv, &L->mu, &dl);
        pthread_mutex_unlock(&L->mu);
        double t = now_s();
        if (tty) {
            draw(L, t - t0, true);
        } else if (t - last_line >= LINE_EVERY_S) {
            draw(L, t - t0, false);
            last_line = t;
        }
        pthread_mutex_lock(&L->mu);
    }
    pthread_mutex_unlock(&L->mu);
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    *elapsed = now_s() - t0;
    if (tty) {
        draw(L, *elapsed, true);
        fputc('\n', stderr);
    }
    free(tids);
    pthread_cond_destroy(&L->cv);
    pthread_mutex_destroy(&L->mu);
    return L->fail_batch == SIZE_MAX ? VX_CLI_OK : VX_CLI_FAIL;
}

/* ---- the command ------------------------------------------------------------------------ */

static int guess_format(const char *file)
{
    const char *dot = strrchr(file, '.');
    if (dot == NULL) return FMT_NONE;
    if (strcmp(dot, ".fvecs") == 0) return FMT_FVECS;
    if (strcmp(dot, ".jsonl") == 0 || strcmp(dot, ".ndjson") == 0 || strcmp(dot, ".json") == 0)
        return FMT_JSONL;
    return FMT_NONE;
}

int vx_cli__cmd_load(vx_cli *g, int argc, char **argv)
{
    const char *cmd = "load";
    const char *format = NULL;
    uint64_t batch = DEFAULT_BATCH, start_id = 0, concurrency = DEFAULT_CONCURRENCY;
    vx_cli__opt opts[] = {
        {"--format", VX_CLI_OPT_STR, &format, 0, 0, false},
        {"--batch", VX_CLI_OPT_U64, &batch, 1, 1000000, false},
        {"--start-id", VX_CLI_OPT_U64, &start_id, 0, UINT64_MAX, false},
        {"--concurrency", VX_CLI_OPT_U64, &concurrency, 1, 256, false},
    };
    char *pos[2], err[VX_CLI_ERRLEN];
    size_t npos;
    int rc = vx_cli__parse(g, cmd, argc - 1, argv + 1, opts, sizeof opts / sizeof opts[0], pos, 2,
                           &npos);
    if (rc < 0) {
        vx_cli__usage_load(stdout);
        return VX_CLI_OK;
    }
    if (rc != VX_CLI_OK) return rc;
    if (npos != 2) {
        vx_cli__error(cmd, "needs a collection NAME and a FILE (see vectron cli load --help)");
        return VX_CLI_USAGE;
    }
    source s = {.file = pos[1], .start_id = start_id};
    if (format == NULL) {
        s.format = guess_format(s.file);
        if (s.format == FMT_NONE) {
            vx_cli__error(cmd,
                          "cannot tell the format of %s from its name: give --format fvecs "
                          "or --format jsonl",
                          s.file);
            return VX_CLI_USAGE;
        }
    } else if (strcmp(format, "fvecs") == 0) {
        s.format = FMT_FVECS;
    } else if (strcmp(format, "jsonl") == 0 || strcmp(format, "ndjson") == 0) {
        s.format = FMT_JSONL;
    } else {
        vx_cli__error(cmd, "--format must be fvecs or jsonl, not \"%s\"", format);
        return VX_CLI_USAGE;
    }
    if (opts[2].seen && s.format != FMT_FVECS) {
        vx_cli__error(cmd, "--start-id applies to fvecs files only (jsonl lines carry their ids)");
        return VX_CLI_USAGE;
    }

    loader L;
    memset(&L, 0, sizeof L);
    L.g = g;
    L.src = &s;
    L.batch = (size_t)batch;
    L.fail_batch = SIZE_MAX;
    if (vx_cli__collection_path(L.path, sizeof L.path, pos[0], "/points?wait=true") != 0) {
        vx_cli__error(cmd, "collection name too long");
        return VX_CLI_USAGE;
    }
    rc = vx_cli__collection_dim(g, pos[0], &s.dim, NULL, err, sizeof err);
    if (rc == VX_CLI_OK)
        rc = s.format == FMT_FVECS ? load_fvecs(&s, s.dim, err, sizeof err)
                                   : load_jsonl(&s, err, sizeof err);
    if (rc != VX_CLI_OK) {
        vx_cli__error(cmd, "%s", err);
        source_free(&s);
        return rc;
    }
    /* the one-request connection is not needed while the workers run */
    vx_httpc_close(&g->http);

    L.nbatches = (s.n + L.batch - 1) / L.batch;
    unsigned threads = (unsigned)(concurrency < L.nbatches ? concurrency : L.nbatches);
    double elapsed = 0;
    rc = run(&L, threads, &elapsed);
    size_t done = atomic_load(&L.done);
    if (rc != VX_CLI_OK) {
        vx_cli__error(cmd, "%s", L.fail_msg);
        if (L.fail_batch != SIZE_MAX)
            vx_cli__error(cmd,
                          "%zu of %zu points were loaded before the failure (running the "
                          "load again is safe: upserts are idempotent)",
                          done, s.n);
    } else {
        printf("loaded %zu points into %s in %.2f s (%.0f points/s)\n", done, pos[0], elapsed,
               elapsed > 0 ? (double)done / elapsed : 0.0);
    }
    source_free(&s);
    return rc;
}
