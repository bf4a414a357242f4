/*
 * quant.h - scalar quantization of float32 vectors to uint8 codes.
 *
 * Encoding: c[d] = clamp(round((x[d] - lo[d]) / s), 0, 255), with a
 * per-dimension offset lo[d] and ONE scale s shared by all dimensions.
 * Sharing the scale is deliberate: the offsets cancel in differences, so the
 * squared L2 distance between two codes is exactly s^2 * sum (c - c')^2, and
 * the graph can be walked with one integer kernel (distance.h dot_u8s8,
 * which AVX-512 VNNI computes in one instruction per 64 bytes).  A scale per
 * dimension would weight each dimension differently and cost a float
 * multiply per component.  Outlying dimensions are handled by clipping the
 * ranges to quantiles of the training sample instead.
 *
 * Training: lo[d], hi[d] = min/max of dimension d over the sample, or its
 * [q, 1-q] quantiles when quantile q > 0; s = max_d(hi[d] - lo[d]) / 255.
 * On data that is already 8-bit (SIFT) this is lossless.
 *
 * Distances on codes, both metrics through dot_u8s8(x, q') with the query
 * shifted to int8 (q' = c_q - 128):
 *   L2:  |x - q|^2 / s^2 = aux(x) + qconst - 2 * dot(x, q'),
 *        aux(x) = sum x^2 - 256 sum x,  qconst = sum c_q^2
 *   IP:  -(x . q) / s^2 = aux(x) + qconst - dot(x, q'),
 *        aux(x) = -(128 sum x + (lo . c_x) / s),
 *        qconst = -((lo . c_q) / s + (lo . lo) / s^2)
 *   (both symmetric in x and q, so node-to-node distances mix freely)
 * so one formula d = aux(x) + qconst + qmul * dot(x, q') serves both, with
 * qmul = -2 (L2) or -1 (IP).  Values are in code units: comparable among
 * themselves only; final results are rescored with the float vectors.
 *
 * Drift: encode() counts components that fell outside the trained range;
 * vx_quant_drifted() tells when the share is high enough to retrain.
 */
#ifndef VX_INDEX_QUANT_H
#define VX_INDEX_QUANT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vx_quantizer {
    uint32_t dim;
    bool ip;        /* IP/cosine formula, else L2 */
    float scale;    /* s */
    float inv_scale;
    float *lo;      /* dim offsets */
    float quantile; /* q used for training */
    _Atomic uint64_t encoded;   /* components encoded since training */
    _Atomic uint64_t clipped;   /* of those, clipped to 0 or 255 beyond half a step */
} vx_quantizer;

/* Train on n vectors (row-major, dim floats each).  VX_EINVAL when n == 0. */
int vx_quant_train(vx_quantizer *qz, uint32_t dim, bool ip, float quantile, const float *sample,
                   size_t n);
/* Set trained parameters directly (loading); lo is copied. */
int vx_quant_init_params(vx_quantizer *qz, uint32_t dim, bool ip, float quantile, float scale,
                         const float *lo);
void vx_quant_close(vx_quantizer *qz);

/* Encode x into code (dim bytes) and return aux(x).  With count, clipped
 * components are counted for drift detection (inserts, not queries). */
float vx_quant_encode(vx_quantizer *qz, const float *x, uint8_t *code, bool count);

/* Prepare a query from a code (code and qshift may be the same buffer): q' (dim int8) and qconst; see above. */
void vx_quant_query_from_code(const vx_quantizer *qz, const uint8_t *code, int8_t *qshift,
                              float *qconst, float *qmul);

/* True when more than (0.01 + 4*quantile) of the components encoded since
 * training (at least 64 vectors' worth) were clipped. */
bool vx_quant_drifted(const vx_quantizer *qz);

#endif
