/*
 * fuzz_index_load.c - libFuzzer target for vx_index_load (hnsw_io.c).
 *
 * The loader reads from a path, so each input is written to one temporary
 * file (created once per process with mkstemp, rewritten on every call).
 * Whatever the bytes, the loader must return an error with a message, or an
 * index that passes vx_index_validate and answers a search without
 * faulting.  The search uses ef = k = 2 so that any index with more than
 * two live points walks the graph instead of falling back to the exact scan.
 *
 * Checksums stop a fuzzer at the door: almost every mutation fails the
 * header or body crc32 and the field checks behind them are never reached.
 * So an input that starts with the magic is loaded twice: as it is, and
 * with both checksums recomputed as the writer would (header crc over bytes
 * [0, 65) at 65, body crc over [69, size - 12) at size - 12; layout in
 * hnsw_io.c).  A crash in the second load reproduces with that fixed-up file.
 *
 * Seed corpus: tests/fuzz/corpus/index_load (tests/fuzz/gen_index_corpus.c).
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *          tests/fuzz/fuzz_index_load.c build/libvx_index.a build/libvx_base.a \
 *          -lz -lm -lpthread
 */
#include "index/index.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define HDR_CRC_OFF 65
#define BODY_OFF 69
#define TRAILER_LEN 12 /* u32 body crc + "VXHNSWOK" */

static char g_path[64];

static void remove_tmp(void)
{
    unlink(g_path);
}

static const char *tmp_path(void)
{
    if (g_path[0] == '\0') {
        strcpy(g_path, "/tmp/vx_fuzz_load_XXXXXX");
        int fd = mkstemp(g_path);
        if (fd < 0) {
            perror("mkstemp");
            abort();
        }
        close(fd);
        atexit(remove_tmp);
    }
    return g_path;
}

static void load_one(const uint8_t *data, size_t size)
{
    const char *path = tmp_path();
    FILE *f = fopen(path, "wb");
    if (f == NULL || (size > 0 && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();

    vx_index *idx = NULL;
    char err[VX_ERRMSG_LEN];
    err[0] = '\0';
    int rc = vx_index_load(path, &idx, err);
    if (rc != 0) {
        if (idx != NULL || err[0] == '\0') abort(); /* contract: no index, a message */
        return;
    }
    vx_validate_report rep;
    if (vx_index_validate(idx, &rep) != 0) {
        fprintf(stderr, "loaded index fails validate: %s\n", rep.msg);
        abort();
    }
    uint32_t dim = vx_index_get_config(idx)->dim;
    float *q = malloc(dim * sizeof(float));
    if (q == NULL) abort();
    for (uint32_t d = 0; d < dim; d++)
        q[d] = (float)(d % 7) - 3.0f + 0.5f;
    vx_hit hits[2];
    uint32_t n = 0;
    vx_search_params p = {.ef = 2};
    if (vx_index_search(idx, q, 2, &p, NULL, hits, &n) != 0 || n > 2) abort();
    free(q);
    vx_index_free(idx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_one(data, size);
    if (size < BODY_OFF + TRAILER_LEN || memcmp(data, "VXHNSW\r\n", 8) != 0) return 0;
    uint8_t *fixed = malloc(size);
    if (fixed == NULL) abort();
    memcpy(fixed, data, size);
    uint32_t hcrc = (uint32_t)crc32(0L, fixed, HDR_CRC_OFF);
    memcpy(fixed + HDR_CRC_OFF, &hcrc, 4);
    uint32_t bcrc = (uint32_t)crc32(0L, fixed + BODY_OFF, size - TRAILER_LEN - BODY_OFF);
    memcpy(fixed + size - TRAILER_LEN, &bcrc, 4);
    if (memcmp(fixed, data, size) != 0) load_one(fixed, size);
    free(fixed);
    return 0;
}
