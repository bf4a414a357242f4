/*
 * workpool.h - a fixed pool of CPU worker threads shared by a process.
 *
 * Index inserts and searches never run on the Raft loop thread: shards hand
 * their indexing work here as jobs.  Jobs run in submission order on any of
 * the threads; a job that has more to do resubmits itself, so one busy shard
 * cannot starve the others.
 */
#ifndef VX_BASE_WORKPOOL_H
#define VX_BASE_WORKPOOL_H

#include <stddef.h>

typedef struct vx_workpool vx_workpool;
typedef void (*vx_job_fn)(void *arg);

int vx_workpool_new(unsigned nthreads, vx_workpool **out);
/* Runs every queued job, then joins the threads. */
void vx_workpool_free(vx_workpool *p);
/* Queue fn(arg).  VX_ENOMEM, or VX_ESTATE after shutdown began. */
int vx_workpool_submit(vx_workpool *p, vx_job_fn fn, void *arg);

#endif
