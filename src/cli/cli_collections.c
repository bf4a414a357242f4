/*
 * cli_collections.c - `vectron cli collections list|create|info|delete`.
 *
 * Each subcommand is one request (GET /collections, PUT/GET/DELETE
 * /collections/NAME) and prints what a person wants from the answer: the
 * names, "created ...", a summary of the CollectionInfo.  Qdrant answers a
 * DELETE of a missing collection with 200 and result false; we report that
 * as an error (exit 1), as rm does.
 */
#define _GNU_SOURCE
#include "cli/cli_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PATH_MAX_LEN 1024

void vx_cli__usage_collections(FILE *out)
{
    fprintf(out,
            "usage: vectron cli collections list\n"
            "       vectron cli collections create NAME --dim N [--distance Cosine|Euclid|Dot]\n"
            "                                  [--shards N] [--m N] [--ef-construct N] [--int8]\n"
            "       vectron cli collections info NAME\n"
            "       vectron cli collections delete NAME\n"
            "\n"
            "list     prints the collection names, one per line\n"
            "create   creates a collection of N-dimensional vectors:\n"
            "           --dim N            vector dimension (required)\n"
            "           --distance D       Cosine (default), Euclid or Dot\n"
            "           --shards N         shards to split the points over (server default 1)\n"
            "           --m N              HNSW links per node (server default 16)\n"
            "           --ef-construct N   HNSW build beam width (server default 100)\n"
            "           --int8             keep an int8 scalar-quantized copy for search\n"
            "info     prints points, status, dimension, distance, HNSW settings, quantization\n"
            "         and payload indexes\n"
            "delete   deletes the collection and its points (exit 1 when there is none)\n");
}

static int usage_error(void)
{
    fprintf(stderr, "\n");
    vx_cli__usage_collections(stderr);
    return VX_CLI_USAGE;
}

/* Parse a subcommand that takes one NAME and the given options. */
static int parse_named(vx_cli *g, const char *cmd, int argc, char **argv, vx_cli__opt *opts,
                       size_t nopts, const char **name)
{
    char *pos[1];
    size_t npos;
    int rc = vx_cli__parse(g, cmd, argc, argv, opts, nopts, pos, 1, &npos);
    if (rc < 0) {
        vx_cli__usage_collections(stdout);
        return -1;
    }
    if (rc != VX_CLI_OK) return rc;
    if (npos != 1) {
        vx_cli__error(cmd, "needs a collection NAME");
        return usage_error();
    }
    *name = pos[0];
    return VX_CLI_OK;
}

static int path_for(const char *cmd, const char *name, const char *suffix, char *path)
{
    if (vx_cli__collection_path(path, PATH_MAX_LEN, name, suffix) != 0) {
        vx_cli__error(cmd, "collection name too long");
        return VX_CLI_USAGE;
    }
    return VX_CLI_OK;
}

/* ---- list ------------------------------------------------------------------------------- */

static int cmd_list(vx_cli *g, int argc, char **argv)
{
    const char *cmd = "collections list";
    char *pos[1], err[VX_CLI_ERRLEN];
    size_t npos;
    int rc = vx_cli__parse(g, cmd, argc, argv, NULL, 0, pos, 0, &npos);
    if (rc < 0) {
        vx_cli__usage_collections(stdout);
        return VX_CLI_OK;
    }
    if (rc != VX_CLI_OK) return rc;
    cJSON *doc;
    rc = vx_cli__call(g, "GET", "/collections", NULL, 0, &doc, NULL, err, sizeof err);
    if (rc != VX_CLI_OK) {
        vx_cli__error(cmd, "%s", err);
        return rc;
    }
    const cJSON *result = cJSON_GetObjectItemCaseSensitive(doc, "result");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(result, "collections");
    if (!cJSON_IsArray(list)) {
        vx_cli__error(cmd, "unexpected answer: no result.collections array");
        cJSON_Delete(doc);
        return VX_CLI_FAIL;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, list)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(c, "name");
        if (cJSON_IsString(name)) printf("%s\n", name->valuestring);
    }
    cJSON_Delete(doc);
    return VX_CLI_OK;
}

/* ---- create ----------------------------------------------------------------------------- */

static int cmd_create(vx_cli *g, int argc, char **argv)
{
    const char *cmd = "collections create";
    const char *name, *distance = "Cosine";
    uint64_t dim = 0, shards = 0, m = 0, efc = 0;
    bool int8 = false;
    char path[PATH_MAX_LEN], err[VX_CLI_ERRLEN];
    vx_cli__opt opts[] = {
        {"--dim", VX_CLI_OPT_U64, &dim, 1, 65536, false},
        {"--distance", VX_CLI_OPT_STR, &distance, 0, 0, false},
        {"--shards", VX_CLI_OPT_U64, &shards, 1, 1024, false},
        {"--m", VX_CLI_OPT_U64, &m, 2, 512, false},
        {"--ef-construct", VX_CLI_OPT_U64, &efc, 1, 100000, false},
        {"--int8", VX_CLI_OPT_FLAG, &int8, 0, 0, false},
    };
    int rc = parse_named(g, cmd, argc, argv, opts, sizeof opts / sizeof opts[0], &name);
    if (rc != VX_CLI_OK) return rc < 0 ? VX_CLI_OK : rc;
    if (!opts[0].seen) {
        vx_cli__error(cmd, "--dim N is required");
        return usage_error();
    }
    static const char *const metrics[] = {"Cosine", "Euclid", "Dot"};
    const char *metric = NULL;
    for (size_t i = 0; i < 3; i++)
        if (strcasecmp(distance, metrics[i]) == 0) metric = metrics[i];
    if (metric == NULL) {
        vx_cli__error(cmd, "--distance must be Cosine, Euclid or Dot, not \"%s\"", distance);
        return VX_CLI_USAGE;
    }
    if ((rc = path_for(cmd, name, "", path)) != VX_CLI_OK) return rc;

    vx_cli__buf b = {0};
    int bad = vx_cli__buf_printf(&b, "{\"vectors\":{\"size\":%" PRIu64 ",\"distance\":\"%s\"}", dim,
                                 metric);
    if (shards) bad |= vx_cli__buf_printf(&b, ",\"shard_number\":%" PRIu64, shards);
    if (m || efc) {
        bad |= vx_cli__buf_puts(&b, ",\"hnsw_config\":{");
        if (m) bad |= vx_cli__buf_printf(&b, "\"m\":%" PRIu64 "%s", m, efc ? "," : "");
        if (efc) bad |= vx_cli__buf_printf(&b, "\"ef_construct\":%" PRIu64, efc);
        bad |= vx_cli__buf_puts(&b, "}");
    }
    if (int8)
        bad |= vx_cli__buf_puts(&b, ",\"quantization_config\":{\"scalar\":{\"type\":\"int8\"}}");
    bad |= vx_cli__buf_puts(&b, "}");
    if (bad) {
        vx_cli__buf_free(&b);
        vx_cli__error(cmd, "out of memory");
        return VX_CLI_FAIL;
    }
    rc = vx_cli__call(g, "PUT", path, b.p, b.len, NULL, NULL, err, sizeof err);
    vx_cli__buf_free(&b);
    if (rc != VX_CLI_OK) {
        vx_cli__error(cmd, "%s", err);
        return rc;
    }
    printf("created collection %s (dim %" PRIu64 ", %s)\n", name, dim, metric);
    return VX_CLI_OK;
}

/* ---- info ------------------------------------------------------------------------------- */

static double num(const cJSON *obj, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static const char *str(const cJSON *obj, const char *key, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

static void print_quantization(const cJSON *q)
{
    printf("quantization     ");
    const cJSON *scalar = cJSON_GetObjectItemCaseSensitive(q, "scalar");
    if (cJSON_IsObject(scalar)) {
        printf("scalar %s", str(scalar, "type", "?"));
        double quantile = num(scalar, "quantile", -1);
        if (quantile >= 0) printf(", quantile %g", quantile);
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(scalar, "always_ram")))
            printf(", always in RAM");
        printf("\n");
    } else if (cJSON_IsObject(q)) {
        char *t = cJSON_PrintUnformatted(q);
        printf("%s\n", t ? t : "?");
        free(t);
    } else {
        printf("none\n");
    }
}

static int cmd_info(vx_cli *g, int argc, char **argv)
{
    const char *cmd = "collections info";
    const char *name;
    char path[PATH_MAX_LEN], err[VX_CLI_ERRLEN];
    int rc = parse_named(g, cmd, argc, argv, NULL, 0, &name);
    if (rc != VX_CLI_OK) return rc < 0 ? VX_CLI_OK : rc;
    if ((rc = path_for(cmd, name, "", path)) != VX_CLI_OK) return rc;
    cJSON *doc;
    rc = vx_cli__call(g, "GET", path, NULL, 0, &doc, NULL, err, sizeof err);
    if (rc != VX_CLI_OK) {
        vx_cli__error(cmd, "%s", err);
        return rc;
    }
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(doc, "result");
    if (!cJSON_IsObject(r)) {
        vx_cli__error(cmd, "unexpected answer: no result object");
        cJSON_Delete(doc);
        return VX_CLI_FAIL;
    }
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(r, "config");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(config, "params");
    const cJSON *vectors = cJSON_GetObjectItemCaseSensitive(params, "vectors");
    const cJSON *hnsw = cJSON_GetObjectItemCaseSensitive(config, "hnsw_config");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(r, "payload_schema");

    printf("name             %s\n", name);
    printf("status           %s\n", str(r, "status", "?"));
    printf("points           %.0f", num(r, "points_count", 0));
    double indexed = num(r, "indexed_vectors_count", -1);
    if (indexed >= 0) printf(" (%.0f in the vector index)", indexed);
    printf("\n");
    if (cJSON_IsObject(vectors) && cJSON_GetObjectItemCaseSensitive(vectors, "size") != NULL) {
        printf("dimension        %.0f\n", num(vectors, "size", 0));
        printf("distance         %s\n", str(vectors, "distance", "?"));
    } else if (cJSON_IsObject(vectors)) { /* named vectors (Qdrant) */
        const cJSON *v;
        cJSON_ArrayForEach(v, vectors)
        {
            printf("vector %-9s dimension %.0f, distance %s\n", v->string, num(v, "size", 0),
                   str(v, "distance", "?"));
        }
    }
    printf("shards           %.0f (replication factor %.0f)\n", num(params, "shard_number", 1),
           num(params, "replication_factor", 1));
    if (cJSON_IsObject(hnsw))
        printf("vector index     HNSW m=%.0f ef_construct=%.0f full_scan_threshold=%.0f\n",
               num(hnsw, "m", 0), num(hnsw, "ef_construct", 0),
               num(hnsw, "full_scan_threshold", 0));
    print_quantization(cJSON_GetObjectItemCaseSensitive(config, "quantization_config"));
    printf("payload indexes  ");
    if (!cJSON_IsObject(schema) || schema->child == NULL) {
        printf("none\n");
    } else {
        const cJSON *f;
        bool first = true;
        cJSON_ArrayForEach(f, schema)
        {
            printf("%s%s: %s", first ? "" : "\n                 ", f->string,
                   str(f, "data_type", "?"));
            double pts = num(f, "points", -1);
            if (pts >= 0) printf(", %.0f points", pts);
            first = false;
        }
        printf("\n");
    }
    cJSON_Delete(doc);
    return VX_CLI_OK;
}

/* ---- delete ----------------------------------------------------------------------------- */

static int cmd_delete(vx_cli *g, int argc, char **argv)
{
    const char *cmd = "collections delete";
    const char *name;
    char path[PATH_MAX_LEN], err[VX_CLI_ERRLEN];
    int rc = parse_named(g, cmd, argc, argv, NULL, 0, &name);
    if (rc != VX_CLI_OK) return rc < 0 ? VX_CLI_OK : rc;
    if ((rc = path_for(cmd, name, "", path)) != VX_CLI_OK) return rc;
    cJSON *doc;
    rc = vx_cli__call(g, "DELETE", path, NULL, 0, &doc, NULL, err, sizeof err);
    if (rc != VX_CLI_OK) {
        vx_cli__error(cmd, "%s", err);
        return rc;
    }
    bool deleted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(doc, "result"));
    cJSON_Delete(doc);
    if (!deleted) {
        vx_cli__error(cmd, "collection `%s` does not exist", name);
        return VX_CLI_FAIL;
    }
    printf("deleted collection %s\n", name);
    return VX_CLI_OK;
}

/* ---- shared with load and search ---------------------------------------------------------- */

int vx_cli__collection_dim(vx_cli *g, const char *name, size_t *dim, char *distance, char *err,
                           size_t errlen)
{
    char path[PATH_MAX_LEN];
    cJSON *doc;
    int status;
    if (vx_cli__collection_path(path, sizeof path, name, "") != 0) {
        snprintf(err, errlen, "collection name too long");
        return VX_CLI_USAGE;
    }
    int rc = vx_cli__call(g, "GET", path, NULL, 0, &doc, &status, err, errlen);
    if (rc != VX_CLI_OK) {
        if (status == 404)
            snprintf(err, errlen,
                     "collection `%s` does not exist (create it first: vectron cli collections "
                     "create %s --dim N)",
                     name, name);
        return rc;
    }
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(doc, "result");
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(r, "config");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(config, "params");
    const cJSON *vectors = cJSON_GetObjectItemCaseSensitive(params, "vectors");
    double size = num(vectors, "size", -1);
    if (size < 1 || size != floor(size)) {
        snprintf(err, errlen,
                 "collection `%s` has no single unnamed vector (named vectors are not supported "
                 "by the CLI)",
                 name);
        cJSON_Delete(doc);
        return VX_CLI_FAIL;
    }
    *dim = (size_t)size;
    if (distance != NULL) snprintf(distance, 16, "%s", str(vectors, "distance", "?"));
    cJSON_Delete(doc);
    return VX_CLI_OK;
}

/* ---- dispatch --------------------------------------------------------------------------- */

int vx_cli__cmd_collections(vx_cli *g, int argc, char **argv)
{
    /* the subcommand is the first word that is not a flag or a global
     * flag's value: `collections --url U list` works too */
    int si = 1;
    while (si < argc && argv[si][0] == '-') {
        if (strcmp(argv[si], "-h") == 0 || strcmp(argv[si], "--help") == 0) {
            vx_cli__usage_collections(stdout);
            return VX_CLI_OK;
        }
        si += vx_cli__global_takes_value(argv[si]) ? 2 : 1;
    }
    if (si >= argc) {
        vx_cli__error("collections", "needs a subcommand: list, create, info or delete");
        return usage_error();
    }
    const char *sub = argv[si];
    static const struct {
        const char *name, *alias;
        int (*run)(vx_cli *, int, char **);
    } subs[] = {
        {"list", "ls", cmd_list},
        {"create", NULL, cmd_create},
        {"info", NULL, cmd_info},
        {"delete", "rm", cmd_delete},
    };
    if (strcmp(sub, "help") == 0) {
        vx_cli__usage_collections(stdout);
        return VX_CLI_OK;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if (strcmp(sub, subs[i].name) != 0 &&
            (subs[i].alias == NULL || strcmp(sub, subs[i].alias) != 0))
            continue;
        /* the words around the subcommand, in order */
        char **rest = malloc((size_t)argc * sizeof *rest);
        if (rest == NULL) {
            vx_cli__error("collections", "out of memory");
            return VX_CLI_FAIL;
        }
        int n = 0;
        for (int k = 1; k < argc; k++)
            if (k != si) rest[n++] = argv[k];
        int rc = subs[i].run(g, n, rest);
        free(rest);
        return rc;
    }
    vx_cli__error("collections", "unknown subcommand \"%s\"", sub);
    return usage_error();
}
