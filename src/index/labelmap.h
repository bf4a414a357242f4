/*
 * labelmap.h - the index's external label -> internal node id map.
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones, so lookups stay short under churn); grows at 50 % load.
 * Not thread-safe: the index guards it with its own mutex.
 */
#ifndef VX_INDEX_LABELMAP_H
#define VX_INDEX_LABELMAP_H

#include <stddef.h>
#include <stdint.h>

#define VX_NO_NODE UINT32_MAX

typedef struct vx_labelmap {
    uint64_t *keys;
    uint32_t *vals; /* VX_NO_NODE marks an empty slot */
    size_t cap;     /* power of two */
    size_t len;
} vx_labelmap;

int vx_labelmap_init(vx_labelmap *m, size_t expected);
void vx_labelmap_close(vx_labelmap *m);
/* Node id for label, or VX_NO_NODE. */
uint32_t vx_labelmap_get(const vx_labelmap *m, uint64_t label);
/* Insert or replace; *old receives the previous value or VX_NO_NODE. */
int vx_labelmap_put(vx_labelmap *m, uint64_t label, uint32_t node, uint32_t *old);
/* Remove; returns the removed value or VX_NO_NODE. */
uint32_t vx_labelmap_del(vx_labelmap *m, uint64_t label);
size_t vx_labelmap_bytes(const vx_labelmap *m);

#endif
