/*
 * fastjson.h - a fast path for the body that dominates ingest:
 *
 *   {"points": [{"id": ID, "vector": [f, f, ...], "payload": {...}}, ...]}
 *
 * cJSON builds a node per number and parses each with strtod (which reads
 * the locale every time); for 1,000 points of 768 dimensions that is most
 * of a request's CPU.  This parser reads exactly that shape -- keys in any
 * order, payload optional -- straight into a float array, and keeps each
 * payload as its text span (validated by cJSON, stored byte for byte, so
 * integers of any size survive).  Anything else (the batch form, other keys,
 * escapes in ids, malformed input) makes it answer "not mine", and the
 * caller parses the body with cJSON as before: the fast path never decides
 * that a body is invalid.
 */
#ifndef VX_SERVER_FASTJSON_H
#define VX_SERVER_FASTJSON_H

#include "base/pointid.h"

#include <stddef.h>
#include <stdint.h>

typedef struct vx_fast_point {
    vx_point_id id;
    size_t vec_off;          /* index of its first component in vx_fast_points.vec */
    uint32_t dim;
    const char *payload;     /* span in the body, or NULL */
    size_t payload_len;
} vx_fast_point;

typedef struct vx_fast_points {
    vx_fast_point *p;
    size_t n, cap;
    float *vec;
    size_t nvec, vcap;
} vx_fast_points;

/* 0: parsed into *out (free with vx_fast_points_free); VX_EINVAL: not the
 * fast shape, use the general parser (out is left empty).  max_points and
 * max_depth bound the work. */
int vx_fast_parse_points(const char *body, size_t len, size_t max_points, unsigned max_depth,
                         vx_fast_points *out);
void vx_fast_points_free(vx_fast_points *fp);

/* The other hot body: a search's query vector, {"vector": [f, ...], ...}.
 * Finds the first top-level member named key; when its value is an array of
 * 1..max_n JSON numbers that are finite in float32, parses them into *vec
 * (malloc'd, *n of them) and returns in *copy (malloc'd, len bytes plus a
 * NUL) the body with that array's contents blanked to spaces, so that the
 * general parser reads the rest of the body and sees "key": [ ] there.  The
 * blanked bytes held only numbers and commas, so the copy is valid JSON
 * exactly when the body was.  VX_EINVAL: no such member, or not that shape
 * (nothing allocated: parse the body as it is). */
int vx_fast_extract_vector(const char *body, size_t len, const char *key, size_t max_n,
                           char **copy, float **vec, uint32_t *n);

#endif
