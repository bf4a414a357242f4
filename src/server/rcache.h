/*
 * rcache.h - the search result cache with TinyLFU admission, and request
 * coalescing (the gateway's, issue 6; usable by any API backend).
 *
 * Entries are whole response bodies keyed by (collection, request bytes):
 * the route, the query arguments that change the answer and the body as
 * received.  128 shards, each with its own lock, hash table and LRU list;
 * the byte budget is split evenly.  Admission (TinyLFU): a count-min sketch
 * of 4-bit counters estimates how often each key was asked for recently
 * (all counters halve every 10 x capacity events); when a shard is full, a
 * new entry gets in only if its key is asked for more often than the LRU
 * victim's, so one-off queries do not flush the popular ones.  Entries live
 * at most ttl_ms.
 *
 * Freshness: every collection has a write generation, bumped when a write
 * to it completes (acknowledged or not).  A lookup captures the generation
 * first; an entry is served only if it was computed under the current one,
 * and a result computed while a write completed is stored under the old
 * one, so never served.  A search that starts after an acknowledged write
 * through this cache therefore never gets an answer from before it.  Writes
 * through another gateway are not seen here: their staleness is bounded by
 * the TTL (200 ms by default).
 *
 * Coalescing: identical searches in flight at the same generation share one
 * backend query: the first computes (LEAD), the others wait for its answer
 * (vx_rcache_lookup blocks).  If the leader's answer is an error, the
 * waiters compute their own.
 */
#ifndef VX_SERVER_RCACHE_H
#define VX_SERVER_RCACHE_H

#include <stddef.h>
#include <stdint.h>

#define VX_RCACHE_SHARDS 128

typedef struct vx_rcache vx_rcache;

typedef struct vx_rcache_stats {
    uint64_t hits, misses, coalesced, admitted, rejected, evicted, expired;
    uint64_t bytes, entries;
} vx_rcache_stats;

/* max_bytes: the budget of bodies and keys (0: the cache is off). */
int vx_rcache_new(size_t max_bytes, unsigned ttl_ms, vx_rcache **out);
void vx_rcache_free(vx_rcache *c);

typedef enum { VX_RC_HIT = 1, VX_RC_LEAD, VX_RC_MISS } vx_rcache_outcome;

/* A lookup.  HIT: *body (malloc'd) is the cached answer.  LEAD: compute the
 * answer, then vx_rcache_finish(token, ...) -- exactly once.  MISS: compute
 * it and do not call finish (the cache is off or coalescing did not apply).
 * Waits while an identical search of the same generation is in flight. */
typedef struct vx_rcache_token vx_rcache_token;
vx_rcache_outcome vx_rcache_lookup(vx_rcache *c, const char *coll, const void *key, size_t klen,
                                   char **body, size_t *len, vx_rcache_token **token);
/* The leader's answer: body NULL means it failed (waiters compute their
 * own); a body is copied, offered to the cache and handed to waiters. */
void vx_rcache_finish(vx_rcache *c, vx_rcache_token *t, const char *body, size_t len);
/* A write to coll completed: answers computed before it are not served. */
void vx_rcache_invalidate(vx_rcache *c, const char *coll);
void vx_rcache_stats_get(vx_rcache *c, vx_rcache_stats *out);

#endif
