/*
 * fanout.h - run one request's per-shard work in parallel.
 *
 * The API sends a request's parts to every shard involved (a search to all,
 * a write batch to each shard that has points of it).  vx_fanout_run calls
 * fn(arg, i) for i in [0, n): the caller runs part 0 itself and the pool
 * the others, and it returns once all have finished.  One part runs inline,
 * with no thread hand-off (a single-shard collection pays nothing).  Parts
 * never wait on other parts, so a saturated pool only delays them.
 */
#ifndef VX_SERVER_FANOUT_H
#define VX_SERVER_FANOUT_H

typedef struct vx_fanout vx_fanout;

int vx_fanout_new(unsigned threads, vx_fanout **out);
void vx_fanout_free(vx_fanout *f);
void vx_fanout_run(vx_fanout *f, unsigned n, void (*fn)(void *arg, unsigned i), void *arg);

#endif
