/*
 * pindex.h - payload indexes: sorted (field, value, point id) keys in the
 * shard's store, kept in the same write transaction as the records.
 *
 * An index is declared on a payload key (a dot path, as filters name it)
 * with a type; every value found at that path in a point's payload (arrays
 * expanded, as filters see them) that has the index's type gets one key:
 *
 *   'P', u8 type, u16 field length (BE), field, value, point id (canonical)
 *
 *   keyword  u16 length (BE), bytes       strings (over 100 bytes: 0xffff, the
 *                                         first 100, XXH3-64 of all: equality only)
 *   integer, float  u64 BE order-preserving bits of the double, every
 *                   finite number (so a range on an integer field also
 *                   finds 2.5: the index narrows, never drops a match)
 *   bool     u8 0/1                       true/false
 *
 * so one LMDB range scan answers an equality (keyword, integer, bool) or a
 * range (integer, float).  A filtered read asks vx_pidx_candidates for the
 * points that may match: it takes one condition of the filter's top-level
 * `must` that an index can answer and returns those points' ids; the full
 * filter is still evaluated on each, so the index only narrows.  The
 * candidate count is the exact selectivity of that condition, which feeds
 * the choice between an exact scan and a filtered graph search.
 *
 * Declarations live in the store's definitions ("pidx:<field>" -> type),
 * so they are replicated, part of the digest, and survive restarts.
 */
#ifndef VX_SHARD_PINDEX_H
#define VX_SHARD_PINDEX_H

#include "base/pointid.h"
#include "shard/filter.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

#define VX_PIDX_FIELD_MAX 120 /* with the NUL: keys stay within LMDB's 511 bytes */

typedef enum {
    VX_PIDX_KEYWORD = 1,
    VX_PIDX_INTEGER = 2,
    VX_PIDX_FLOAT = 3,
    VX_PIDX_BOOL = 4,
} vx_pidx_type;

/* "keyword", "integer", "float", "bool" <-> type; 0 when unknown. */
int vx_pidx_type_parse(const char *name);
const char *vx_pidx_type_name(int type);

typedef struct vx_pidx_def {
    char field[VX_PIDX_FIELD_MAX];
    int type;
} vx_pidx_def;

typedef struct vx_pidx_set {
    vx_pidx_def *v;
    size_t n;
} vx_pidx_set;

/* Read the declarations from the store. */
int vx_pidx_load(vx_store_txn *txn, vx_pidx_set *set);
void vx_pidx_set_free(vx_pidx_set *set);
const vx_pidx_def *vx_pidx_find(const vx_pidx_set *set, const char *field);

/* Keep the keys of point `id` in step with a payload change (old and/or new
 * payload text, NULL when the point did not / does not exist). */
int vx_pidx_update(vx_store_txn *txn, const vx_pidx_set *set, const vx_point_id *id,
                   const char *old_payload, size_t old_len, const char *new_payload,
                   size_t new_len);
/* Declare and build (from every record) an index; replacing one of another
 * type rebuilds it.  VX_EINVAL for a bad field or type. */
int vx_pidx_create(vx_store_txn *txn, vx_pidx_set *set, const char *field, int type);
/* Remove an index and its keys; VX_ENOTFOUND when there is none. */
int vx_pidx_drop(vx_store_txn *txn, vx_pidx_set *set, const char *field);

/* The ids of the points that may satisfy f, from one indexed condition of
 * its top-level must; malloc'd array in *ids (sorted, distinct).  VX_ENOTFOUND
 * when no condition can use an index; VX_EFULL when more than `limit`
 * points qualify (*n is then > limit: the caller scans instead). */
int vx_pidx_candidates(vx_store_txn *txn, const vx_pidx_set *set, const vx_filter_expr *f,
                       size_t limit, vx_point_id **ids, size_t *n);
/* Number of distinct points with at least one key in the index on field. */
int vx_pidx_points(vx_store_txn *txn, const vx_pidx_set *set, const char *field, uint64_t *n);

#endif
