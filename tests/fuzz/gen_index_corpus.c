/*
 * gen_index_corpus.c - writes the seed corpus of fuzz_index_load: three
 * tiny valid index files (dim 4, 20 points) covering both storage modes and
 * every node state.
 *
 *   none_l2.vxi      NONE, L2, one point deleted (a tombstone)
 *   int8_l2.vxi      INT8 (train_size 8: trained, quantizer block present),
 *                    L2, one point deleted
 *   none_cosine.vxi  NONE, COSINE, two points deleted and vacuumed (FREE
 *                    slots), one of them reused, one more tombstone
 *
 * Usage: gen_index_corpus DIR.  The points are a fixed function of their
 * number, so the files are the same on every run.
 *
 * Build: gcc -std=gnu11 -Isrc tests/fuzz/gen_index_corpus.c \
 *            build/libvx_index.a build/libvx_base.a -lz -lm -lpthread
 */
#include "base/err.h"
#include "index/index.h"

#include <stdio.h>
#include <stdlib.h>

#define DIM 4
#define NPOINTS 20

static void point(unsigned i, float *v)
{
    for (unsigned d = 0; d < DIM; d++)
        v[d] = (float)((i * 37u + d * 11u) % 23u) / 4.0f - 2.5f + (float)d * 0.25f;
}

static int make(const char *dir, const char *name, vx_metric metric, vx_quant quant, int vacuum)
{
    char path[4096], err[VX_ERRMSG_LEN];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    vx_index_config cfg;
    vx_index_config_default(&cfg, DIM, metric);
    cfg.quant = quant;
    cfg.train_size = 8;
    cfg.m = 4;
    cfg.ef_construction = 16;
    vx_index *idx;
    int rc = vx_index_new(&cfg, &idx, err);
    if (rc != 0) goto fail;
    float v[DIM];
    for (unsigned i = 0; i < NPOINTS; i++) {
        point(i, v);
        if ((rc = vx_index_add(idx, 100 + i, v, err)) != 0) goto fail_after_new;
    }
    if (vacuum) {
        vx_index_delete(idx, 103);
        vx_index_delete(idx, 111);
        if ((rc = vx_index_vacuum(idx)) != 0) goto fail_after_new;
        point(NPOINTS, v);
        if ((rc = vx_index_add(idx, 100 + NPOINTS, v, err)) != 0) goto fail_after_new;
    }
    vx_index_delete(idx, 107);
    if ((rc = vx_index_validate(idx, NULL)) != 0) goto fail_after_new;
    if ((rc = vx_index_save(idx, path, err)) != 0) goto fail_after_new;
    vx_index_free(idx);
    printf("wrote %s\n", path);
    return 0;

fail_after_new:
    vx_index_free(idx);
fail:
    fprintf(stderr, "%s: %s (%s)\n", path, vx_strerror(rc), err);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    int bad = 0;
    bad |= make(argv[1], "none_l2.vxi", VX_METRIC_L2, VX_QUANT_NONE, 0);
    bad |= make(argv[1], "int8_l2.vxi", VX_METRIC_L2, VX_QUANT_INT8, 0);
    bad |= make(argv[1], "none_cosine.vxi", VX_METRIC_COSINE, VX_QUANT_NONE, 1);
    return bad;
}
