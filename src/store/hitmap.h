/*
 * hitmap.h - label -> (version, point id) in memory, for search hits.
 *
 * A search finds index labels; the answer needs each hit's point id and
 * version.  In LMDB that is a B-tree descent per hit whose pages a graph
 * search has just pushed out of the caches (about 1 us each, a tenth of a
 * 128-d query's CPU); here it is one probe of an open-addressing table.
 * The store keeps the map equal to its labels table (store.c): built when
 * the store opens, changed only by committed write transactions.
 *
 * Layout: linear probing on a power-of-two array of 40-byte slots, a
 * multiplicative hash of the label, deletion by backward shift (no
 * tombstones, so probes stay short under churn).  Ids of up to 23 bytes --
 * every unsigned integer and UUID id -- live in the slot; longer string ids
 * in a heap copy the slot points to.  The load stays at or under 3/4.
 *
 * Threading: not synchronized.  The store reads under a read lock and
 * changes under a write lock; growing copies the table without the lock
 * (only the single writer changes it) and swaps under the write lock.
 */
#ifndef VX_STORE_HITMAP_H
#define VX_STORE_HITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_HITMAP_INLINE 23

typedef struct vx_hitmap_slot {
    uint64_t label; /* UINT64_MAX: empty */
    uint64_t version;
    /* id bytes, or (len 255) a pointer to (u16 len, bytes): b sits at an
     * 8-byte offset so that the pointer is aligned, where leak checkers
     * (LSan) look for pointers */
    uint8_t b[VX_HITMAP_INLINE];
    uint8_t len;
} vx_hitmap_slot;

typedef struct vx_hitmap {
    vx_hitmap_slot *slot;
    size_t cap, n; /* cap a power of two, or 0 */
} vx_hitmap;

/* A table for at least n entries (0: empty); VX_ENOMEM. */
int vx_hitmap_init(vx_hitmap *m, size_t n);
/* Frees the table and the long ids. */
void vx_hitmap_free(vx_hitmap *m);
/* A copy with room for n entries, sharing m's long ids (free the old one
 * with vx_hitmap_free_shallow); VX_ENOMEM. */
int vx_hitmap_grow(const vx_hitmap *m, size_t n, vx_hitmap *out);
void vx_hitmap_free_shallow(vx_hitmap *m);
/* Whether adding n entries needs vx_hitmap_grow first. */
bool vx_hitmap_needs_grow(const vx_hitmap *m, size_t n);
/* Insert or replace; the table must have room (vx_hitmap_needs_grow false);
 * VX_ENOMEM only for a long id's copy. */
int vx_hitmap_put(vx_hitmap *m, uint64_t label, uint64_t version, const uint8_t *id, size_t len);
void vx_hitmap_del(vx_hitmap *m, uint64_t label);
/* The entry's version and id bytes (*id points into the map: copy before
 * the lock is released); false when absent. */
bool vx_hitmap_get(const vx_hitmap *m, uint64_t label, uint64_t *version, const uint8_t **id,
                   size_t *len);
/* A hint that label will be looked up soon: its home slot is fetched into
 * cache, so that several lookups' cache misses overlap. */
void vx_hitmap_prefetch(const vx_hitmap *m, uint64_t label);
/* Bytes held: table and long ids. */
size_t vx_hitmap_bytes(const vx_hitmap *m);

#endif
