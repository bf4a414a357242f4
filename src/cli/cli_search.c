/*
 * cli_search.c - `vectron cli search`: one nearest-neighbour query.
 *
 * The query vector comes from --vector (numbers separated by commas or
 * spaces, optionally in brackets) or from row N of an .fvecs file.  It is
 * sent as Qdrant's legacy search, POST /collections/NAME/points/search
 * {"vector":[...],"limit":K,"filter":F,"params":{"hnsw_ef":N,"exact":B},
 * "with_payload":B}, which both Vectron and Qdrant serve, and each hit is
 * printed as one line "ID SCORE" (+ " PAYLOAD-JSON" with --with-payload),
 * best first.  Scores are what the server says: a similarity for Cosine and
 * Dot, a distance for Euclid.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "base/fvecs.h"
#include "cli/cli_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_QUERY_DIM 65536

void vx_cli__usage_search(FILE *out)
{
    fprintf(out,
            "usage: vectron cli search NAME (--vector \"0.1,0.2,...\" | --fvecs FILE [--row N])\n"
            "                          [--limit K] [--filter JSON] [--ef N] [--exact]\n"
            "                          [--with-payload]\n"
            "\n"
            "Finds the K points of collection NAME nearest to a query vector and prints one\n"
            "line per hit, best first: \"ID SCORE\", and the payload as JSON with\n"
            "--with-payload.  SCORE is a similarity for Cosine and Dot (higher is nearer) and\n"
            "a distance for Euclid (lower is nearer).\n"
            "\n"
            "  --vector V       the query: numbers separated by commas or spaces\n"
            "  --fvecs FILE     take the query from an .fvecs file ...\n"
            "  --row N          ... its row N, counting from 0 (default 0)\n"
            "  --limit K        hits to return (default 10)\n"
            "  --filter JSON    a Qdrant filter, e.g. '{\"must\":[{\"key\":\"color\",\"match\":"
            "{\"value\":\"red\"}}]}'\n"
            "  --ef N           HNSW search beam width (default: the server's)\n"
            "  --exact          exact search: compare with every point, no index\n"
            "  --with-payload   print each hit's payload\n");
}

/* Parse "0.1, 0.2 0.3" or "[0.1,0.2]" into a malloc'd array. */
static int parse_vector(const char *s, float **out, size_t *dim, char *err, size_t errlen)
{
    size_t cap = 64, n = 0;
    float *v = malloc(cap * sizeof *v);
    if (v == NULL) return snprintf(err, errlen, "out of memory"), VX_CLI_FAIL;
    const char *p = s;
    while (*p == ' ' || *p == '\t' || *p == '\n')
        p++;
    bool bracket = *p == '[';
    if (bracket) p++;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == ',')
            p++;
        if (*p == '\0' || (bracket && *p == ']')) break;
        char *end;
        errno = 0;
        float x = strtof(p, &end);
        if (end == p || !isfinite(x)) {
            snprintf(err, errlen, "--vector: \"%.20s\" is not a finite number (value %zu)", p,
                     n + 1);
            free(v);
            return VX_CLI_USAGE;
        }
        if (n == cap) {
            if (cap >= MAX_QUERY_DIM) {
                snprintf(err, errlen, "--vector: more than %d values", MAX_QUERY_DIM);
                free(v);
                return VX_CLI_USAGE;
            }
            float *nv = realloc(v, 2 * cap * sizeof *v);
            if (nv == NULL) {
                free(v);
                return snprintf(err, errlen, "out of memory"), VX_CLI_FAIL;
            }
            v = nv;
            cap *= 2;
        }
        v[n++] = x;
        p = end;
        if (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t' && *p != '\n' &&
            !(bracket && *p == ']')) {
            snprintf(err, errlen, "--vector: unexpected \"%.20s\" after value %zu", p, n);
            free(v);
            return VX_CLI_USAGE;
        }
    }
    if (bracket && *p == ']') p++;
    while (*p == ' ' || *p == '\t' || *p == '\n')
        p++;
    if (*p != '\0' || n == 0) {
        snprintf(err, errlen, n == 0 ? "--vector: no values" : "--vector: junk after ]");
        free(v);
        return VX_CLI_USAGE;
    }
    *out = v;
    *dim = n;
    return VX_CLI_OK;
}

static int print_hits(const cJSON *doc, bool with_payload, char *err, size_t errlen)
{
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(doc, "result");
    if (cJSON_IsObject(result)) /* the shape of /points/query, should a proxy answer so */
        result = cJSON_GetObjectItemCaseSensitive(result, "points");
    if (!cJSON_IsArray(result)) {
        snprintf(err, errlen, "unexpected answer: no result array");
        return VX_CLI_FAIL;
    }
    const cJSON *hit;
    cJSON_ArrayForEach(hit, result)
    {
        char id[VX_CLI_ERRLEN];
        const cJSON *score = cJSON_GetObjectItemCaseSensitive(hit, "score");
        vx_cli__id_text(cJSON_GetObjectItemCaseSensitive(hit, "id"), id, sizeof id);
        printf("%s %.7g", id, cJSON_IsNumber(score) ? score->valuedouble : NAN);
        if (with_payload) {
            const cJSON *payload = cJSON_GetObjectItemCaseSensitive(hit, "payload");
            char *t = payload ? cJSON_PrintUnformatted(payload) : NULL;
            printf(" %s", t ? t : "{}");
            free(t);
        }
        printf("\n");
    }
    return VX_CLI_OK;
}

int vx_cli__cmd_search(vx_cli *g, int argc, char **argv)
{
    const char *cmd = "search";
    const char *vec_text = NULL, *fvecs = NULL, *filter = NULL;
    uint64_t row = 0, limit = 10, ef = 0;
    bool exact = false, with_payload = false;
    vx_cli__opt opts[] = {
        {"--vector", VX_CLI_OPT_STR, &vec_text, 0, 0, false},
        {"--fvecs", VX_CLI_OPT_STR, &fvecs, 0, 0, false},
        {"--row", VX_CLI_OPT_U64, &row, 0, UINT32_MAX, false},
        {"--limit", VX_CLI_OPT_U64, &limit, 1, 1000000, false},
        {"--filter", VX_CLI_OPT_STR, &filter, 0, 0, false},
        {"--ef", VX_CLI_OPT_U64, &ef, 1, 1000000, false},
        {"--exact", VX_CLI_OPT_FLAG, &exact, 0, 0, false},
        {"--with-payload", VX_CLI_OPT_FLAG, &with_payload, 0, 0, false},
    };
    char *pos[1], err[VX_CLI_ERRLEN], path[1024];
    size_t npos;
    int rc = vx_cli__parse(g, cmd, argc - 1, argv + 1, opts, sizeof opts / sizeof opts[0], pos, 1,
                           &npos);
    if (rc < 0) {
        vx_cli__usage_search(stdout);
        return VX_CLI_OK;
    }
    if (rc != VX_CLI_OK) return rc;
    if (npos != 1) {
        vx_cli__error(cmd, "needs a collection NAME (see vectron cli search --help)");
        return VX_CLI_USAGE;
    }
    if ((vec_text != NULL) == (fvecs != NULL)) {
        vx_cli__error(cmd, "give exactly one of --vector V and --fvecs FILE");
        return VX_CLI_USAGE;
    }
    if (opts[2].seen && fvecs == NULL) {
        vx_cli__error(cmd, "--row goes with --fvecs");
        return VX_CLI_USAGE;
    }
    if (vx_cli__collection_path(path, sizeof path, pos[0], "/points/search") != 0) {
        vx_cli__error(cmd, "collection name too long");
        return VX_CLI_USAGE;
    }

    cJSON *fdoc = NULL;
    if (filter != NULL) {
        fdoc = vx_cli__json_parse(filter, strlen(filter));
        if (!cJSON_IsObject(fdoc)) {
            vx_cli__error(cmd, "--filter must be a JSON object such as "
                               "'{\"must\":[{\"key\":\"k\",\"match\":{\"value\":1}}]}'");
            cJSON_Delete(fdoc);
            return VX_CLI_USAGE;
        }
    }

    float *vec = NULL, *rows = NULL;
    size_t dim = 0;
    if (vec_text != NULL) {
        rc = parse_vector(vec_text, &vec, &dim, err, sizeof err);
    } else {
        size_t nrows;
        char ferr[256];
        if (vx_fvecs_read(fvecs, (size_t)row + 1, &rows, &nrows, &dim, ferr) != 0) {
            snprintf(err, sizeof err, "%s", ferr);
            rc = VX_CLI_FAIL;
        } else if (nrows <= row) {
            snprintf(err, sizeof err, "%s has %zu rows; there is no row %" PRIu64, fvecs, nrows,
                     row);
            rc = VX_CLI_USAGE;
        } else {
            vec = rows + (size_t)row * dim;
        }
    }
    if (rc != VX_CLI_OK) {
        vx_cli__error(cmd, "%s", err);
        goto out;
    }

    vx_cli__buf b = {0};
    int bad = vx_cli__buf_reserve(&b, dim * (VX_CLI_F32_MAX + 1) + 64);
    if (!bad) {
        char *p = b.p;
        p += sprintf(p, "{\"vector\":[");
        for (size_t i = 0; i < dim; i++) {
            if (i) *p++ = ',';
            p = vx_cli__put_f32(p, vec[i]);
        }
        b.len = (size_t)(p - b.p);
        bad |= vx_cli__buf_printf(&b, "],\"limit\":%" PRIu64, limit);
    }
    if (fdoc != NULL) {
        char *ft = cJSON_PrintUnformatted(fdoc);
        bad |= ft == NULL || vx_cli__buf_printf(&b, ",\"filter\":%s", ft) != 0;
        free(ft);
    }
    if (ef || exact) {
        bad |= vx_cli__buf_puts(&b, ",\"params\":{");
        if (ef) bad |= vx_cli__buf_printf(&b, "\"hnsw_ef\":%" PRIu64 "%s", ef, exact ? "," : "");
        if (exact) bad |= vx_cli__buf_puts(&b, "\"exact\":true");
        bad |= vx_cli__buf_puts(&b, "}");
    }
    bad |= vx_cli__buf_printf(&b, ",\"with_payload\":%s}", with_payload ? "true" : "false");
    if (bad) {
        vx_cli__error(cmd, "out of memory");
        rc = VX_CLI_FAIL;
    } else {
        cJSON *doc;
        rc = vx_cli__call(g, "POST", path, b.p, b.len, &doc, NULL, err, sizeof err);
        if (rc == VX_CLI_OK) {
            rc = print_hits(doc, with_payload, err, sizeof err);
            cJSON_Delete(doc);
        }
        if (rc != VX_CLI_OK) vx_cli__error(cmd, "%s", err);
    }
    vx_cli__buf_free(&b);
out:
    if (rows == NULL) free(vec);
    free(rows);
    cJSON_Delete(fdoc);
    return rc;
}
