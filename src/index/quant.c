/*
 * quant.c - scalar quantizer (see quant.h for the math).
 */
#include "index/quant.h"

#include "base/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void quant_set_scale(vx_quantizer *qz, float scale)
{
    if (!(scale > 0.0f) || !isfinite(scale)) scale = 1.0f;
    qz->scale = scale;
    qz->inv_scale = 1.0f / scale;
}

int vx_quant_train(vx_quantizer *qz, uint32_t dim, bool ip, float quantile, const float *sample,
                   size_t n)
{
    if (n == 0 || dim == 0 || quantile < 0.0f || quantile >= 0.5f) return VX_EINVAL;
    float *lo = malloc(sizeof(float) * dim);
    float *col = malloc(sizeof(float) * n);
    if (lo == NULL || col == NULL) {
        free(lo);
        free(col);
        return VX_ENOMEM;
    }
    float range = 0.0f;
    for (uint32_t d = 0; d < dim; d++) {
        float mn, mx;
        if (quantile > 0.0f && n >= 4) {
            for (size_t i = 0; i < n; i++) col[i] = sample[i * dim + d];
            qsort(col, n, sizeof(float), cmp_float);
            size_t a = (size_t)floor((double)quantile * (double)(n - 1));
            size_t b = (size_t)ceil((double)(1.0f - quantile) * (double)(n - 1));
            mn = col[a];
            mx = col[b];
        } else {
            mn = mx = sample[d];
            for (size_t i = 1; i < n; i++) {
                float v = sample[i * dim + d];
                if (v < mn) mn = v;
                if (v > mx) mx = v;
            }
        }
        lo[d] = mn;
        if (mx - mn > range) range = mx - mn;
    }
    free(col);
    qz->dim = dim;
    qz->ip = ip;
    qz->quantile = quantile;
    free(qz->lo);
    qz->lo = lo;
    quant_set_scale(qz, range / 255.0f);
    atomic_store(&qz->encoded, 0);
    atomic_store(&qz->clipped, 0);
    return 0;
}

int vx_quant_init_params(vx_quantizer *qz, uint32_t dim, bool ip, float quantile, float scale,
                         const float *lo)
{
    float *copy = malloc(sizeof(float) * dim);
    if (copy == NULL) return VX_ENOMEM;
    memcpy(copy, lo, sizeof(float) * dim);
    free(qz->lo);
    qz->lo = copy;
    qz->dim = dim;
    qz->ip = ip;
    qz->quantile = quantile;
    quant_set_scale(qz, scale);
    atomic_store(&qz->encoded, 0);
    atomic_store(&qz->clipped, 0);
    return 0;
}

void vx_quant_close(vx_quantizer *qz)
{
    free(qz->lo);
    qz->lo = NULL;
}

float vx_quant_encode(vx_quantizer *qz, const float *x, uint8_t *code, bool count)
{
    const uint32_t dim = qz->dim;
    const float inv = qz->inv_scale;
    int64_t sum = 0, sumsq = 0;
    double lo_dot = 0.0;
    uint64_t clipped = 0;
    for (uint32_t d = 0; d < dim; d++) {
        /* Clamp as a float: converting a huge value to int is undefined. */
        float v = (x[d] - qz->lo[d]) * inv;
        int c;
        if (!(v >= -0.5f)) {
            clipped++;
            c = 0;
        } else if (v > 255.5f) {
            clipped++;
            c = 255;
        } else {
            c = (int)lrintf(v);
            c = c < 0 ? 0 : c > 255 ? 255 : c;
        }
        code[d] = (uint8_t)c;
        sum += c;
        sumsq += (int64_t)c * c;
        lo_dot += (double)qz->lo[d] * c;
    }
    if (count) {
        atomic_fetch_add_explicit(&qz->encoded, dim, memory_order_relaxed);
        if (clipped) atomic_fetch_add_explicit(&qz->clipped, clipped, memory_order_relaxed);
    }
    if (qz->ip) return (float)-(128.0 * (double)sum + lo_dot * (double)inv);
    return (float)(sumsq - 256 * sum);
}

void vx_quant_query_from_code(const vx_quantizer *qz, const uint8_t *code, int8_t *qshift,
                              float *qconst, float *qmul)
{
    int64_t sumsq = 0;
    double lo_dot = 0.0, lo_lo = 0.0;
    for (uint32_t d = 0; d < qz->dim; d++) {
        int c = code[d]; /* read before writing: code and qshift may alias */
        qshift[d] = (int8_t)(c - 128);
        sumsq += (int64_t)c * c;
        lo_dot += (double)qz->lo[d] * c;
        lo_lo += (double)qz->lo[d] * qz->lo[d];
    }
    if (qz->ip)
        *qconst = (float)-(lo_dot * qz->inv_scale + lo_lo * qz->inv_scale * qz->inv_scale);
    else
        *qconst = (float)sumsq;
    *qmul = qz->ip ? -1.0f : -2.0f;
}

bool vx_quant_drifted(const vx_quantizer *qz)
{
    uint64_t enc = atomic_load_explicit(&qz->encoded, memory_order_relaxed);
    uint64_t clip = atomic_load_explicit(&qz->clipped, memory_order_relaxed);
    if (enc < 64ull * qz->dim) return false;
    return (double)clip > (0.01 + 4.0 * qz->quantile) * (double)enc;
}
