/*
 * gen_fvecs.c - write N rows of DIM pseudo-random floats as an .fvecs file
 * (TEXMEX format: per row a little-endian int32 DIM, then DIM float32).
 *
 *   gen_fvecs N DIM SEED OUT
 *
 * Values are uniform in [-1, 1) with 24 random bits (not integers, so the
 * CLI's general float writer is exercised, not only its integer path), from
 * xorshift64* seeded with SEED: the same arguments give the same bytes on
 * every little-endian host.  Used by tests/cli/test_cli.sh, which compiles
 * it with cc so the test needs no python.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: gen_fvecs N DIM SEED OUT\n");
        return 2;
    }
    char *end;
    unsigned long long n = strtoull(argv[1], &end, 10);
    long dim = strtol(argv[2], &end, 10);
    uint64_t x = strtoull(argv[3], &end, 10) * 0x9E3779B97F4A7C15ull + 1;
    if (n == 0 || dim < 1 || dim > 65536) {
        fprintf(stderr, "gen_fvecs: N must be positive and DIM in 1..65536\n");
        return 2;
    }
    FILE *f = fopen(argv[4], "wb");
    if (f == NULL) {
        fprintf(stderr, "gen_fvecs: %s: %s\n", argv[4], strerror(errno));
        return 1;
    }
    int32_t d = (int32_t)dim;
    for (unsigned long long i = 0; i < n; i++) {
        if (fwrite(&d, sizeof d, 1, f) != 1) goto write_failed;
        for (long j = 0; j < dim; j++) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            uint32_t r = (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 40); /* 24 bits */
            float v = (float)r / 8388608.0f - 1.0f;
            if (fwrite(&v, sizeof v, 1, f) != 1) goto write_failed;
        }
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "gen_fvecs: %s: %s\n", argv[4], strerror(errno));
        return 1;
    }
    return 0;

write_failed:
    fprintf(stderr, "gen_fvecs: %s: %s\n", argv[4], strerror(errno));
    fclose(f);
    return 1;
}
