/*
 * filter_internal.h - the compiled form of a filter, for the modules that
 * plan with it (shard/pindex.c) besides the evaluator (filter.c).
 */
#ifndef VX_SHARD_FILTER_INTERNAL_H
#define VX_SHARD_FILTER_INTERNAL_H

#include "shard/filter.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    N_FILTER,   /* must/should/must_not/min_should */
    N_MATCH,    /* value or any */
    N_EXCEPT,
    N_RANGE,
    N_IS_EMPTY,
    N_IS_NULL,
    N_HAS_ID,
} node_kind;

typedef enum { V_STRING, V_INT, V_BOOL } value_kind;

typedef struct value {
    value_kind kind;
    char *s;
    long long i;
    bool b;
} value;

typedef struct node node;
typedef struct node_list {
    node **v;
    size_t n;
} node_list;

struct node {
    node_kind kind;
    char **path; /* key split on '.' */
    size_t npath;
    /* N_FILTER */
    node_list must, should, must_not, min_should;
    size_t min_count;
    /* N_MATCH / N_EXCEPT */
    value *values;
    size_t nvalues;
    /* N_RANGE */
    bool has_gt, has_gte, has_lt, has_lte;
    double gt, gte, lt, lte;
    /* N_HAS_ID */
    vx_point_id *ids;
    size_t nids;
};

struct vx_filter_expr {
    node *root;
};


#endif
