/*
 * bench.h - the commands of vectron-bench.
 *
 * vectron-bench <command> [options]: bench_main.c dispatches on the command
 * word and passes the rest of the command line on, with argv[0] set to the
 * command word itself (so getopt-style parsing starts at argv[1]).
 *
 * Each command prints machine-readable results as one JSON object per line
 * on stdout and human-readable progress on stderr, and returns the process
 * exit status: 0 success, 1 a run-time failure (I/O, index error), 2 a
 * usage error.
 */
#ifndef VX_BENCH_BENCH_H
#define VX_BENCH_BENCH_H

#include <stdio.h>

/* `ann`: recall / throughput / latency / build time / memory of the Vectron
 * index against hnswlib on one data set.  Options: see bench_ann.c. */
int bench_ann_main(int argc, char **argv);
void bench_ann_usage(FILE *out);

/* `filter`: filtered search, the index's choice between graph walk and
 * exact scan against both forced, per share of matching points.  Options:
 * see bench_filter.c. */
int bench_filter_main(int argc, char **argv);
/* `replicated`: acknowledged ingest into a 1- and a 3-replica shard group. */
int bench_replicated_main(int argc, char **argv);
void bench_filter_usage(FILE *out);
/* `http`: ingest and search through `vectron serve`, against the in-process
 * index in the same run. */
int bench_http_main(int argc, char **argv);

#endif
