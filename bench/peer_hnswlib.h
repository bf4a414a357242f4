/*
 * peer_hnswlib.h - a tiny C API around hnswlib (Debian libhnswlib-dev 0.6.2),
 * the peer that vectron-bench measures Vectron against in the same process.
 *
 * hnswlib is header-only C++; peer_hnswlib.cpp is the one translation unit
 * that includes it (its headers define non-inline functions), compiled with
 * -O3 -march=native as its users would.  No C++ exception crosses this API:
 * each is caught at the boundary, reported on stderr and turned into an
 * error return.
 *
 * Metrics: 0 = L2 (squared L2), 1 = inner product, 2 = cosine.  For cosine
 * the peer normalizes every added vector and every query itself (hnswlib has
 * no cosine space) and uses hnswlib's inner-product space.  Distances are
 * returned in Vectron's convention (index.h): squared L2, -dot or -cos,
 * ascending, so results of the two systems compare directly.
 *
 * Threading: add may be called from many threads at once (hnswlib's
 * addPoint is thread-safe); search may be called from many threads at once;
 * set_ef must not run concurrently with search.
 */
#ifndef VX_BENCH_PEER_HNSWLIB_H
#define VX_BENCH_PEER_HNSWLIB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vx_peer vx_peer;

/* A new empty index for up to max_elements vectors of `dim` floats.
 * Returns NULL (message on stderr) on a bad argument or allocation failure. */
vx_peer *vx_peer_hnswlib_new(size_t dim, int metric, size_t max_elements, size_t m,
                             size_t ef_construction);

/* Copy `vec` (dim floats) into the index under `label`.  Thread-safe.
 * Returns 0, or -1 when hnswlib threw (e.g. more than max_elements added);
 * the message goes to stderr. */
int vx_peer_hnswlib_add(vx_peer *p, const float *vec, uint64_t label);

/* Beam width for later searches (hnswlib uses max(ef, k)).  Not thread-safe
 * with respect to concurrent searches. */
void vx_peer_hnswlib_set_ef(vx_peer *p, size_t ef);

/* Up to k nearest neighbours of q (dim floats), nearest first, into
 * labels_out[] and dist_out[] (either may be NULL).  Returns how many were
 * found (0 on an hnswlib exception, message on stderr).  Thread-safe. */
size_t vx_peer_hnswlib_search(vx_peer *p, const float *q, size_t k, uint64_t *labels_out,
                              float *dist_out);

void vx_peer_hnswlib_free(vx_peer *p);

#ifdef __cplusplus
}
#endif

#endif
