/*
 * cli.c - `vectron cli`: dispatch, flags, `info`, `help`, and the helpers
 * the commands share (see cli.h, cli_internal.h).
 *
 * Every command is a short sequence of blocking requests on one keep-alive
 * connection (vx_cli.http), except `load`, which runs its own threads.  A
 * request's outcome is judged once, in vx_cli__call: 2xx is success, any
 * other status becomes "HTTP <status>: <status.error>" from Qdrant's error
 * envelope {"status":{"error":msg},"time":t}.
 *
 * u64 ids: cJSON reads numbers as doubles, which hold integers exactly only
 * up to 2^53, and Qdrant ids go to 2^64-1.  vx_cli__json_parse therefore
 * rewrites integer literals of more than 15 digits into marked strings
 * before cJSON sees them and turns those into cJSON_Raw nodes after, so an
 * id prints as the digits the server sent.
 */
#define _GNU_SOURCE
#include "cli/cli.h"

#include "base/err.h"
#include "cli/cli_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- usage ------------------------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: vectron cli [--url URL] <command> [args]\n"
            "\n"
            "Talks to a Vectron server (or any Qdrant-compatible one) over its REST API.\n"
            "\n"
            "commands:\n"
            "  info                                  server version, readiness, collections\n"
            "  collections list                      collection names, one per line\n"
            "  collections create NAME --dim N ...   create a collection\n"
            "  collections info NAME                 points, status, dimension, distance, "
            "indexes\n"
            "  collections delete NAME               delete a collection and its points\n"
            "  load NAME FILE ...                    bulk-load an .fvecs or .jsonl file\n"
            "  search NAME --vector V ...            nearest neighbours, one \"id score\" line "
            "each\n"
            "  help [COMMAND]                        this text, or a command's\n"
            "\n"
            "global flags (before or after the command):\n"
            "  --url URL       the server (default $VECTRON_URL, else " VX_CLI_DEFAULT_URL ")\n"
            "  --api-key KEY   sent as the api-key header (default $VECTRON_API_KEY)\n"
            "  --timeout SEC   connect, send and receive timeout of a request (default %d)\n"
            "\n"
            "`vectron cli COMMAND --help` describes a command's flags.\n"
            "Exit status: 0 success; 1 a request failed (server, network) or a file could not\n"
            "be read; 2 bad arguments or input data (nothing was sent).\n",
            VX_CLI_DEFAULT_TIMEOUT_S);
}

static void usage_info(FILE *out)
{
    fprintf(out, "usage: vectron cli info\n"
                 "\n"
                 "Asks the server for its version (GET /), its readiness (GET /readyz) and its\n"
                 "collections (GET /collections).  Exit status 0 when the server is ready, 1 when\n"
                 "it is not or cannot be reached.\n");
}

/* ---- errors and options ------------------------------------------------------------------ */

void vx_cli__error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "vectron cli%s%s: ", *cmd ? " " : "", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Decimal digits only, no sign, no overflow. */
static bool parse_u64(const char *s, uint64_t *v)
{
    uint64_t x = 0;
    if (*s == '\0') return false;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) return false;
        unsigned d = (unsigned)(*s - '0');
        if (x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

static vx_cli__opt *find_opt(vx_cli__opt *opts, size_t n, const char *a, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, a, len) == 0) return &opts[i];
    return NULL;
}

int vx_cli__parse(vx_cli *g, const char *cmd, int argc, char **argv, vx_cli__opt *opts,
                  size_t nopts, char **pos, size_t maxpos, size_t *npos)
{
    vx_cli__opt globals[] = {
        {"--url", VX_CLI_OPT_STR, &g->url, 0, 0, false},
        {"--api-key", VX_CLI_OPT_STR, &g->api_key, 0, 0, false},
        {"--timeout", VX_CLI_OPT_U64, &g->timeout_s, 1, 86400, false},
    };
    bool options_done = false;
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] == '\0') {
            if (*npos >= maxpos) {
                vx_cli__error(cmd, "unexpected argument \"%s\" (see vectron cli %s%s)", a, cmd,
                              *cmd ? " --help" : "help");
                return VX_CLI_USAGE;
            }
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return -1;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        vx_cli__opt *o = find_opt(opts, nopts, a, nl);
        if (o == NULL) o = find_opt(globals, sizeof globals / sizeof globals[0], a, nl);
        if (o == NULL) {
            vx_cli__error(cmd, "unknown flag %.*s (see vectron cli %s%s)", (int)nl, a, cmd,
                          *cmd ? " --help" : "help");
            return VX_CLI_USAGE;
        }
        o->seen = true;
        if (o->kind == VX_CLI_OPT_FLAG) {
            if (eq != NULL) {
                vx_cli__error(cmd, "%s takes no value", o->name);
                return VX_CLI_USAGE;
            }
            *(bool *)o->dst = true;
            continue;
        }
        const char *v;
        if (eq != NULL) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            vx_cli__error(cmd, "%s needs a value", o->name);
            return VX_CLI_USAGE;
        }
        if (o->kind == VX_CLI_OPT_STR) {
            *(const char **)o->dst = v;
        } else {
            uint64_t x;
            if (!parse_u64(v, &x) || x < o->min || x > o->max) {
                vx_cli__error(cmd, "%s must be an integer in [%llu, %llu], not \"%s\"", o->name,
                              (unsigned long long)o->min, (unsigned long long)o->max, v);
                return VX_CLI_USAGE;
            }
            *(uint64_t *)o->dst = x;
        }
    }
    return VX_CLI_OK;
}

/* ---- requests --------------------------------------------------------------------------- */

int vx_cli__connect(vx_cli *g, char *err, size_t errlen)
{
    if (g->http_ready) return VX_CLI_OK;
    char e[VX_HTTPC_ERRMSG_LEN];
    if (vx_httpc_init(&g->http, g->url, (int)g->timeout_s, g->api_key, e) != 0) {
        snprintf(err, errlen, "server URL: %s", e);
        return VX_CLI_USAGE;
    }
    g->http_ready = true;
    return VX_CLI_OK;
}

void vx_cli__http_error(const vx_httpc_response *res, char *err, size_t errlen)
{
    cJSON *d = cJSON_ParseWithLength(res->body, res->len);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(d, "status");
    const cJSON *e = cJSON_IsObject(st) ? cJSON_GetObjectItemCaseSensitive(st, "error") : NULL;
    if (cJSON_IsString(e)) {
        snprintf(err, errlen, "HTTP %d: %s", res->status, e->valuestring);
    } else if (res->len > 0) {
        size_t n = strcspn(res->body, "\r\n");
        snprintf(err, errlen, "HTTP %d: %.*s", res->status, (int)(n < 300 ? n : 300), res->body);
    } else {
        snprintf(err, errlen, "HTTP %d (empty response)", res->status);
    }
    cJSON_Delete(d);
}

int vx_cli__call(vx_cli *g, const char *method, const char *path, const char *body, size_t len,
                 cJSON **doc, int *status, char *err, size_t errlen)
{
    vx_httpc_response res;
    if (doc != NULL) *doc = NULL;
    if (status != NULL) *status = 0;
    int rc = vx_cli__connect(g, err, errlen);
    if (rc != VX_CLI_OK) return rc;
    if (vx_httpc_request(&g->http, method, path, body, len, &res) != 0) {
        snprintf(err, errlen, "%s", g->http.errmsg);
        return VX_CLI_FAIL;
    }
    if (status != NULL) *status = res.status;
    if (res.status < 200 || res.status > 299) {
        vx_cli__http_error(&res, err, errlen);
        vx_httpc_response_free(&res);
        return VX_CLI_FAIL;
    }
    if (doc != NULL) *doc = vx_cli__json_parse(res.body, res.len);
    vx_httpc_response_free(&res);
    return VX_CLI_OK;
}

int vx_cli__collection_path(char *out, size_t n, const char *name, const char *suffix)
{
    static const char head[] = "/collections/";
    if (n < sizeof head) return -1;
    memcpy(out, head, sizeof head);
    size_t k = sizeof head - 1;
    size_t e = vx_httpc_escape_segment(name, out + k, n - k);
    if (e >= n - k) return -1;
    k += e;
    size_t s = strlen(suffix);
    if (k + s >= n) return -1;
    memcpy(out + k, suffix, s + 1);
    return 0;
}

/* ---- JSON ------------------------------------------------------------------------------- */

#define BIGINT_MARK '\x01'
#define BIGINT_DIGITS 15 /* more digits than this may not fit a double exactly */

/* Copy JSON text s[0..n) to out (when not NULL), writing integer literals
 * of more than BIGINT_DIGITS digits as "\u0001<literal>".  Returns the
 * length written (or that would be). */
static size_t bigint_rewrite(const char *s, size_t n, char *out)
{
    size_t k = 0;
    bool in_str = false;
#define EMIT(ch)                                                                                   \
    do {                                                                                           \
        if (out) out[k] = (ch);                                                                    \
        k++;                                                                                       \
    } while (0)
    for (size_t i = 0; i < n;) {
        char ch = s[i];
        if (in_str) {
            if (ch == '\\' && i + 1 < n) {
                EMIT(ch);
                EMIT(s[i + 1]);
                i += 2;
                continue;
            }
            if (ch == '"') in_str = false;
            EMIT(ch);
            i++;
            continue;
        }
        if (ch == '"') {
            in_str = true;
            EMIT(ch);
            i++;
            continue;
        }
        if (ch != '-' && !isdigit((unsigned char)ch)) {
            EMIT(ch);
            i++;
            continue;
        }
        /* a number: [-]digits[.digits][(e|E)[+-]digits] */
        size_t j = i + (ch == '-'), d0 = j;
        while (j < n && isdigit((unsigned char)s[j]))
            j++;
        size_t ndig = j - d0;
        bool integer = true;
        if (j < n && s[j] == '.') {
            integer = false;
            for (j++; j < n && isdigit((unsigned char)s[j]); j++) {
            }
        }
        if (j < n && (s[j] == 'e' || s[j] == 'E')) {
            integer = false;
            j++;
            if (j < n && (s[j] == '+' || s[j] == '-')) j++;
            while (j < n && isdigit((unsigned char)s[j]))
                j++;
        }
        if (j == i) j = i + 1; /* a lone '-': let cJSON reject it */
        bool big = integer && ndig > BIGINT_DIGITS;
        if (big) {
            static const char mark[] = "\"\\u0001";
            for (const char *m = mark; *m; m++)
                EMIT(*m);
        }
        for (; i < j; i++)
            EMIT(s[i]);
        if (big) EMIT('"');
    }
#undef EMIT
    return k;
}

static void bigint_restore(cJSON *j)
{
    for (; j != NULL; j = j->next) {
        if (cJSON_IsString(j) && j->valuestring != NULL && j->valuestring[0] == BIGINT_MARK) {
            const char *d = j->valuestring + 1;
            size_t n = strlen(d);
            if (n > 0 && strspn(d + (*d == '-'), "0123456789") == n - (*d == '-')) {
                memmove(j->valuestring, d, n + 1);
                j->type = cJSON_Raw;
            }
        }
        if (j->child != NULL) bigint_restore(j->child);
    }
}

cJSON *vx_cli__json_parse(const char *text, size_t len)
{
    size_t n = bigint_rewrite(text, len, NULL);
    if (n == len) return cJSON_ParseWithLength(text, len);
    char *t = malloc(n + 1);
    if (t == NULL) return NULL;
    bigint_rewrite(text, len, t);
    t[n] = '\0';
    cJSON *j = cJSON_ParseWithLength(t, n);
    free(t);
    bigint_restore(j);
    return j;
}

const char *vx_cli__id_text(const cJSON *id, char *buf, size_t n)
{
    if (cJSON_IsRaw(id) || cJSON_IsString(id)) {
        snprintf(buf, n, "%s", id->valuestring);
    } else if (cJSON_IsNumber(id)) {
        double v = id->valuedouble;
        if (v == floor(v) && fabs(v) < 9007199254740992.0)
            snprintf(buf, n, "%.0f", v);
        else
            snprintf(buf, n, "%.17g", v);
    } else {
        char *p = cJSON_PrintUnformatted(id);
        snprintf(buf, n, "%s", p ? p : "?");
        free(p);
    }
    return buf;
}

/* ---- buffer ----------------------------------------------------------------------------- */

int vx_cli__buf_reserve(vx_cli__buf *b, size_t n)
{
    if (b->cap - b->len > n) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len <= n) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int vx_cli__buf_put(vx_cli__buf *b, const char *s, size_t n)
{
    if (vx_cli__buf_reserve(b, n) != 0) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int vx_cli__buf_puts(vx_cli__buf *b, const char *s)
{
    return vx_cli__buf_put(b, s, strlen(s));
}

int vx_cli__buf_printf(vx_cli__buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || vx_cli__buf_reserve(b, (size_t)n) != 0) return -1;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void vx_cli__buf_free(vx_cli__buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* pow10_tab[k + 4] = 10^k for k = -4 .. 12: exponents, and scales */
static const double pow10_tab[] = {1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1,  1e2,  1e3, 1e4,
                                   1e5,  1e6,  1e7,  1e8,  1e9, 1e10, 1e11, 1e12};

char *vx_cli__put_f32(char *p, float v)
{
    if (v > -16777216.0f && v < 16777216.0f) {
        int32_t i = (int32_t)v;
        if ((float)i == v) {
            char t[12];
            int k = 0;
            uint32_t u = i < 0 ? (uint32_t)(-(int64_t)i) : (uint32_t)i;
            if (i < 0) *p++ = '-';
            do
                t[k++] = (char)('0' + u % 10);
            while ((u /= 10) != 0);
            while (k > 0)
                *p++ = t[--k];
            return p;
        }
    }
    /* What %.9g writes for 1e-4 <= |v| < 1e9 (fixed notation), without
     * snprintf: m = |v| * 10^(8-e) rounded, the 9 significant digits.  v has
     * 24 significant bits and 10^k for k <= 12 has at most 28 (5^k times a
     * power of two), so the product is exact in a double and m is correctly
     * rounded.  Nine significant digits read back as the same float. */
    double a = v < 0 ? -(double)v : (double)v;
    if (!(a >= 1e-4 && a < 1e9)) return p + snprintf(p, VX_CLI_F32_MAX, "%.9g", (double)v);
    int e = -4; /* a's decimal exponent: 10^e <= a < 10^(e+1) */
    while (a >= pow10_tab[e + 5])
        e++;
    double x = a * pow10_tab[8 - e + 4], fl = floor(x);
    uint64_t m = (uint64_t)fl;
    if (x - fl > 0.5 || (x - fl == 0.5 && (m & 1))) m++; /* ties to even, as printf */
    if (m >= 1000000000u) {                              /* rounded up to the next power of ten */
        m /= 10;
        e++;
        if (e > 8) return p + snprintf(p, VX_CLI_F32_MAX, "%.9g", (double)v);
    }
    char d[9];
    for (int k = 8; k >= 0; k--, m /= 10)
        d[k] = (char)('0' + m % 10);
    int nd = 9;
    while (nd > 0 && d[nd - 1] == '0')
        nd--; /* %g drops trailing zeros */
    if (v < 0) *p++ = '-';
    if (e >= 0) {
        for (int k = 0; k <= e; k++)
            *p++ = d[k];
        if (nd > e + 1) {
            *p++ = '.';
            for (int k = e + 1; k < nd; k++)
                *p++ = d[k];
        }
    } else {
        *p++ = '0';
        *p++ = '.';
        for (int k = -1; k > e; k--)
            *p++ = '0';
        for (int k = 0; k < nd; k++)
            *p++ = d[k];
    }
    return p;
}

/* ---- info ------------------------------------------------------------------------------- */

static int cmd_info(vx_cli *g, int argc, char **argv)
{
    char *pos[1], err[VX_CLI_ERRLEN];
    size_t npos;
    int rc = vx_cli__parse(g, "info", argc - 1, argv + 1, NULL, 0, pos, 0, &npos);
    if (rc < 0) {
        usage_info(stdout);
        return VX_CLI_OK;
    }
    if (rc != VX_CLI_OK) return rc;

    cJSON *root = NULL, *cols = NULL;
    rc = vx_cli__call(g, "GET", "/", NULL, 0, &root, NULL, err, sizeof err);
    if (rc != VX_CLI_OK) {
        vx_cli__error("info", "%s", err);
        return rc;
    }
    const cJSON *title = cJSON_GetObjectItemCaseSensitive(root, "title");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *commit = cJSON_GetObjectItemCaseSensitive(root, "commit");
    printf("server       %s\n", g->http.url.authority);
    printf("version      %s", cJSON_IsString(version) ? version->valuestring : "(unknown)");
    if (cJSON_IsString(title)) printf(" (%s", title->valuestring);
    if (cJSON_IsString(commit))
        printf("%scommit %s", cJSON_IsString(title) ? ", " : " (", commit->valuestring);
    printf("%s\n", cJSON_IsString(title) || cJSON_IsString(commit) ? ")" : "");
    cJSON_Delete(root);

    int status;
    char rerr[VX_CLI_ERRLEN];
    int ready = vx_cli__call(g, "GET", "/readyz", NULL, 0, NULL, &status, rerr, sizeof rerr);
    if (ready == VX_CLI_OK)
        printf("ready        yes\n");
    else
        printf("ready        no (%s)\n", rerr);

    rc = vx_cli__call(g, "GET", "/collections", NULL, 0, &cols, NULL, err, sizeof err);
    if (rc != VX_CLI_OK) {
        vx_cli__error("info", "GET /collections: %s", err);
        return rc;
    }
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(cols, "result");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(result, "collections");
    printf("collections  %d", cJSON_GetArraySize(list));
    const cJSON *c;
    const char *sep = ": ";
    cJSON_ArrayForEach(c, list)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        if (!cJSON_IsString(name)) continue;
        printf("%s%s", sep, name->valuestring);
        sep = ", ";
    }
    printf("\n");
    cJSON_Delete(cols);
    return ready == VX_CLI_OK ? VX_CLI_OK : VX_CLI_FAIL;
}

/* ---- dispatch --------------------------------------------------------------------------- */

typedef struct command {
    const char *name;
    int (*run)(vx_cli *g, int argc, char **argv);
    void (*usage)(FILE *out);
} command;

static const command commands[] = {
    {"info", cmd_info, usage_info},
    {"collections", vx_cli__cmd_collections, vx_cli__usage_collections},
    {"load", vx_cli__cmd_load, vx_cli__usage_load},
    {"search", vx_cli__cmd_search, vx_cli__usage_search},
};

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

bool vx_cli__global_takes_value(const char *a)
{
    return strcmp(a, "--url") == 0 || strcmp(a, "--api-key") == 0 || strcmp(a, "--timeout") == 0;
}

int vx_cli_main(int argc, char **argv)
{
    vx_cli g;
    memset(&g, 0, sizeof g);
    g.url = getenv("VECTRON_URL");
    if (g.url == NULL || *g.url == '\0') g.url = VX_CLI_DEFAULT_URL;
    g.api_key = getenv("VECTRON_API_KEY");
    g.timeout_s = VX_CLI_DEFAULT_TIMEOUT_S;

    /* global flags before the command */
    int first = 1;
    while (first < argc && argv[first][0] == '-' && strcmp(argv[first], "--") != 0)
        first += (vx_cli__global_takes_value(argv[first]) && first + 1 < argc) ? 2 : 1;
    char *pos[1];
    size_t npos;
    int rc = vx_cli__parse(&g, "", first - 1, argv + 1, NULL, 0, pos, 0, &npos);
    if (rc < 0) {
        usage(stdout);
        return VX_CLI_OK;
    }
    if (rc != VX_CLI_OK) return rc;
    if (first < argc && strcmp(argv[first], "--") == 0) first++;
    if (first >= argc) {
        usage(stderr);
        return VX_CLI_USAGE;
    }

    const char *name = argv[first];
    if (strcmp(name, "help") == 0) {
        if (first + 1 >= argc) {
            usage(stdout);
            return VX_CLI_OK;
        }
        const command *c = find_command(argv[first + 1]);
        if (c == NULL) {
            fprintf(stderr, "vectron cli: no command \"%s\"\n\n", argv[first + 1]);
            usage(stderr);
            return VX_CLI_USAGE;
        }
        c->usage(stdout);
        return VX_CLI_OK;
    }
    const command *c = find_command(name);
    if (c == NULL) {
        fprintf(stderr, "vectron cli: unknown command \"%s\"\n\n", name);
        usage(stderr);
        return VX_CLI_USAGE;
    }
    rc = c->run(&g, argc - first, argv + first);
    if (g.http_ready) vx_httpc_close(&g.http);
    fflush(stdout);
    return rc;
}
