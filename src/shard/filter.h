/*
 * filter.h - Qdrant's payload filter language, compiled once, evaluated per point.
 *
 *   filter    = { "must": [cond...], "should": [cond...], "must_not": [cond...],
 *                 "min_should": { "conditions": [cond...], "min_count": n } }
 *   cond      = filter (nested)
 *             | { "key": k, "match": { "value": v } }      v: string, integer, bool
 *             | { "key": k, "match": { "any": [v...] } }
 *             | { "key": k, "match": { "except": [v...] } }
 *             | { "key": k, "range": { "gt"|"gte"|"lt"|"lte": number, ... } }
 *             | { "is_empty": { "key": k } } | { "is_null": { "key": k } }
 *             | { "has_id": [id...] }                      unsigned integers or UUIDs
 *
 * Semantics (as Qdrant): every must holds; at least one should holds (when
 * there are shoulds); no must_not holds; at least min_count of min_should.
 * A key is a dot path ("metadata.k"); an array met on the way or at the end
 * is searched element by element, and a condition on a key holds when any
 * value found there satisfies it.  "except" holds when the key has values
 * and none is in the list.  is_empty: the key is absent, null or [].
 * is_null: the value is null.  Range compares numbers only.
 *
 * Compilation validates everything and explains the first problem; a
 * compiled filter is immutable and may be evaluated from many threads.
 * Limits: depth 16, 1024 conditions, 1024 values per list.
 */
#ifndef VX_SHARD_FILTER_H
#define VX_SHARD_FILTER_H

#include "base/pointid.h"

#include <stdbool.h>
#include <stddef.h>

#define VX_FILTER_ERRMSG_LEN 256

typedef struct vx_filter_expr vx_filter_expr;
struct cJSON;

/* Compile from parsed JSON (not retained).  VX_EINVAL with a message. */
int vx_filter_compile(const struct cJSON *json, vx_filter_expr **out, char *errbuf);
/* Compile from JSON text. */
int vx_filter_compile_text(const char *text, size_t len, vx_filter_expr **out, char *errbuf);
void vx_filter_free(vx_filter_expr *f);

/* Does the point (id, parsed payload object or NULL) satisfy the filter?  A
 * payload that is not a JSON object (or not valid JSON, for _text, including
 * text after the value) counts as {}. */
bool vx_filter_eval(const vx_filter_expr *f, const vx_point_id *id, const struct cJSON *payload);
/* The same from payload text (parsed here; invalid JSON counts as {}). */
bool vx_filter_eval_text(const vx_filter_expr *f, const vx_point_id *id, const char *payload,
                         size_t len);

#endif
