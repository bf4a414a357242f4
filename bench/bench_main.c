/*
 * bench_main.c - entry point of vectron-bench: `vectron-bench <command>
 * [options]`.  Dispatches to one function per command (bench.h).
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fputs("usage: vectron-bench <command> [options]\n"
          "\n"
          "commands:\n"
          "  ann      recall, queries/s, latency, build time and memory of the Vectron\n"
          "           index, against hnswlib in the same run\n"
          "  replicated  acknowledged ingest into a shard group of 1 and of 3 replicas\n"
          "  http     ingest and search through vectron serve, against the in-process\n"
          "           index in the same run\n"
          "  filter   filtered search: recall, queries/s, latency and predicate calls of\n"
          "           the index's walk-or-scan choice against both forced, per share of\n"
          "           matching points\n"
          "  --help   this text (`vectron-bench <command> --help` for its options)\n",
          out);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "ann") == 0) return bench_ann_main(argc - 1, argv + 1);
    if (strcmp(cmd, "filter") == 0) return bench_filter_main(argc - 1, argv + 1);
    if (strcmp(cmd, "replicated") == 0) return bench_replicated_main(argc - 1, argv + 1);
    if (strcmp(cmd, "http") == 0) return bench_http_main(argc - 1, argv + 1);
    fprintf(stderr, "vectron-bench: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
