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

#endif
