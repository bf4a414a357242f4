/*
 * cli_internal.h - what the files of the CLI share (package-private: the
 * vx_cli__ prefix, libuv's double underscore).
 *
 *   cli.c              dispatch, global flags, option parser, `info`, `help`,
 *                      the request helper that unwraps Qdrant's envelope,
 *                      the JSON reader that keeps u64 ids exact, the buffer
 *   cli_collections.c  `collections list|create|info|delete`
 *   cli_search.c       `search`
 *   cli_load.c         `load`: the parallel bulk loader
 *
 * Exit statuses: VX_CLI_OK, VX_CLI_FAIL (the request failed), VX_CLI_USAGE.
 */
#ifndef VX_CLI_CLI_INTERNAL_H
#define VX_CLI_CLI_INTERNAL_H

#include "cli/http_client.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { VX_CLI_OK = 0, VX_CLI_FAIL = 1, VX_CLI_USAGE = 2 };

#define VX_CLI_DEFAULT_URL "http://127.0.0.1:6333"
#define VX_CLI_DEFAULT_TIMEOUT_S 60
#define VX_CLI_ERRLEN 1024

/* The global settings of one run, and the connection of the commands that
 * make a request or three (the loader opens one per thread). */
typedef struct vx_cli {
    const char *url;     /* --url, else $VECTRON_URL, else VX_CLI_DEFAULT_URL */
    const char *api_key; /* --api-key, else $VECTRON_API_KEY, else NULL */
    uint64_t timeout_s;  /* --timeout, default VX_CLI_DEFAULT_TIMEOUT_S */
    vx_httpc http;
    bool http_ready; /* http is initialised (it connects on first use) */
} vx_cli;

/* ---- options ---------------------------------------------------------------------------- */

enum { VX_CLI_OPT_FLAG, VX_CLI_OPT_STR, VX_CLI_OPT_U64 };

typedef struct vx_cli__opt {
    const char *name; /* "--dim" */
    int kind;
    void *dst;         /* bool *, const char **, uint64_t * */
    uint64_t min, max; /* VX_CLI_OPT_U64's range */
    bool seen;         /* set by the parser */
} vx_cli__opt;

/* Parse argv[0..argc) of command `cmd` ("collections create"): the options
 * in opts[0..nopts) and the global ones (--url, --api-key, --timeout) in any
 * place, as `--name value` or `--name=value`; `--` ends the options; the
 * other words go to pos[0..maxpos) and their count to *npos.  Returns
 * VX_CLI_OK, or VX_CLI_USAGE after printing the problem to stderr, or -1
 * when -h/--help was given (the caller prints its usage). */
int vx_cli__parse(vx_cli *g, const char *cmd, int argc, char **argv, vx_cli__opt *opts,
                  size_t nopts, char **pos, size_t maxpos, size_t *npos);

/* Is a one of the global flags that take a value (as a separate word)? */
bool vx_cli__global_takes_value(const char *a);

/* "vectron cli CMD: message" on stderr. */
void vx_cli__error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- requests --------------------------------------------------------------------------- */

/* Open g's connection on first use: VX_CLI_OK, or VX_CLI_USAGE (a bad
 * --url) with the reason in err. */
int vx_cli__connect(vx_cli *g, char *err, size_t errlen);

/* One request on g's connection, Qdrant's envelope unwrapped.  On a 2xx
 * answer returns 0 and, when doc is not NULL, the parsed response (the
 * whole envelope; NULL when the body is not JSON) in *doc, which the caller
 * frees with cJSON_Delete.  Otherwise returns VX_CLI_FAIL with "HTTP 404:
 * Not found: ..." or the network's error in err (*doc NULL); *status (may
 * be NULL) gets the HTTP status, 0 when there was no answer. */
int vx_cli__call(vx_cli *g, const char *method, const char *path, const char *body, size_t len,
                 cJSON **doc, int *status, char *err, size_t errlen);

/* "HTTP 400: <status.error>" (or the start of the body when it has no
 * Qdrant error) for a non-2xx response. */
void vx_cli__http_error(const vx_httpc_response *res, char *err, size_t errlen);

/* "/collections/<escaped name><suffix>" into out: 0, or -1 when too long. */
int vx_cli__collection_path(char *out, size_t n, const char *name, const char *suffix);

/* GET /collections/NAME: the vector dimension and distance ("Cosine"...,
 * into distance, 16 bytes; may be NULL).  VX_CLI_OK or VX_CLI_FAIL with a
 * message that says when the collection does not exist. */
int vx_cli__collection_dim(vx_cli *g, const char *name, size_t *dim, char *distance, char *err,
                           size_t errlen);

/* ---- JSON ------------------------------------------------------------------------------- */

/* cJSON_Parse, except integers too long for a double (more than 15 digits)
 * are kept as cJSON_Raw nodes holding their digits, so u64 ids print
 * exactly (cJSON_Print writes Raw nodes verbatim).  NULL when not JSON. */
cJSON *vx_cli__json_parse(const char *text, size_t len);
/* The text of an id (number, big integer or UUID string) into buf. */
const char *vx_cli__id_text(const cJSON *id, char *buf, size_t n);

/* ---- an append buffer for request bodies ------------------------------------------------- */

typedef struct vx_cli__buf {
    char *p;
    size_t len, cap;
} vx_cli__buf;

/* Room for n more bytes (and a NUL): 0, or -1 when out of memory. */
int vx_cli__buf_reserve(vx_cli__buf *b, size_t n);
int vx_cli__buf_put(vx_cli__buf *b, const char *s, size_t n);
int vx_cli__buf_puts(vx_cli__buf *b, const char *s);
int vx_cli__buf_printf(vx_cli__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vx_cli__buf_free(vx_cli__buf *b);

/* Longest text vx_cli__put_f32 writes. */
#define VX_CLI_F32_MAX 16

/* Write finite v at p (VX_CLI_F32_MAX bytes of room) as JSON: integers
 * below 2^24 in magnitude as integers (SIFT's values are), the rest as
 * %.9g would (nine significant digits read back as the same float), by
 * hand for 1e-4 <= |v| < 1e9 (several times faster than snprintf) and by
 * snprintf outside that range.  Returns the end. */
char *vx_cli__put_f32(char *p, float v);

/* ---- commands (argv[0] is the command's name) --------------------------------------------- */

int vx_cli__cmd_collections(vx_cli *g, int argc, char **argv);
int vx_cli__cmd_search(vx_cli *g, int argc, char **argv);
int vx_cli__cmd_load(vx_cli *g, int argc, char **argv);

void vx_cli__usage_collections(FILE *out);
void vx_cli__usage_search(FILE *out);
void vx_cli__usage_load(FILE *out);

#endif
