/*
 * fuzz_filter.c - libFuzzer target for the payload filter language
 * (shard/filter.c): filters arrive from clients as JSON, so compilation must
 * reject anything malformed with VX_EINVAL and a message, and a compiled
 * filter must evaluate any payload without faulting.
 *
 * The input is split at its first NUL byte: the bytes before it are the
 * filter text, the bytes after it the payload text (no NUL: the whole input
 * is the filter and the payload is empty).  Each part is copied into a
 * buffer of exactly its length, so ASan sees any read past `len`.  When the
 * filter compiles, it is evaluated on the payload and on an empty payload,
 * for a uint id and for a UUID id, from text and (when the payload parses)
 * from parsed JSON; the two entry points must agree.  When it does not
 * compile, the result must be VX_EINVAL with a non-empty, terminated message.
 *
 * Seed corpus: tests/fuzz/corpus/filter, 16 files "filter\0payload" written
 * by hand with printf (see the shell commands in the commit that added them).
 * Fuzz build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *   tests/fuzz/fuzz_filter.c src/shard/filter.c src/base/pointid.c \
 *   src/base/err.c -lcjson
 * Run it on a copy of the corpus, so new inputs do not land in the repo.
 */
#include "base/err.h"
#include "base/pointid.h"
#include "shard/filter.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *exact_copy(const uint8_t *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (c == NULL) abort();
    if (n) memcpy(c, p, n);
    return c;
}

static void check_eval(const vx_filter_expr *f, const vx_point_id *id, const char *payload,
                       size_t len)
{
    bool from_text = vx_filter_eval_text(f, id, payload, len);
    /* eval_text reads exactly one JSON value; trailing text (but whitespace)
     * makes the payload invalid, i.e. {} -- the oracle parses the same way */
    const char *end = NULL;
    cJSON *p = len ? cJSON_ParseWithLengthOpts(payload, len, &end, 0) : NULL;
    for (const char *q = end; p != NULL && q != NULL && q < payload + len; q++) {
        if (*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != '\0') {
            cJSON_Delete(p);
            p = NULL;
            break;
        }
    }
    if (len == 0 || p != NULL) {
        bool parsed = vx_filter_eval(f, id, p);
        if (parsed != from_text) {
            fprintf(stderr, "vx_filter_eval %d != vx_filter_eval_text %d\n", parsed, from_text);
            abort();
        }
    }
    cJSON_Delete(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t flen = nul ? (size_t)(nul - data) : size;
    size_t plen = nul ? size - flen - 1 : 0;
    char *ftext = exact_copy(data, flen);
    char *ptext = exact_copy(nul ? nul + 1 : data, plen);

    char err[VX_FILTER_ERRMSG_LEN];
    memset(err, 0, sizeof err);
    vx_filter_expr *f = NULL;
    int rc = vx_filter_compile_text(ftext, flen, &f, err);
    if (rc == 0) {
        if (f == NULL) abort();
        vx_point_id ids[2];
        vx_id_from_uint(&ids[0], 42);
        static const char uuid[] = "550e8400-e29b-41d4-a716-446655440000";
        if (vx_id_from_uuid_text(&ids[1], uuid, sizeof uuid - 1) != 0) abort();
        for (int i = 0; i < 2; i++) {
            check_eval(f, &ids[i], ptext, plen);
            check_eval(f, &ids[i], "", 0);
            check_eval(f, &ids[i], "{}", 2);
        }
        vx_filter_free(f);
    } else {
        if (rc != VX_EINVAL || f != NULL || err[0] == '\0' ||
            memchr(err, '\0', sizeof err) == NULL) {
            fprintf(stderr, "compile: rc %d, message \"%.*s\"\n", rc, (int)sizeof err, err);
            abort();
        }
    }
    free(ftext);
    free(ptext);
    return 0;
}
