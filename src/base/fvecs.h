/*
 * fvecs.h - readers for the TEXMEX vector file formats (.fvecs, .ivecs).
 *
 * Each row is a little-endian int32 dimension d followed by d float32
 * (.fvecs) or int32 (.ivecs) values.  Every row must have the same d.
 * Used by the benchmarks, the recall tests and the CLI's bulk loader.
 */
#ifndef VX_BASE_FVECS_H
#define VX_BASE_FVECS_H

#include <stddef.h>
#include <stdint.h>

/* Read up to max_rows rows (0 = all) of an .fvecs file.  On success *data
 * (malloc'd, rows*dim floats), *rows and *dim are set and 0 is returned;
 * otherwise a negative VX_E* code and a message in errbuf (may be NULL,
 * else at least 256 bytes). */
int vx_fvecs_read(const char *path, size_t max_rows, float **data, size_t *rows, size_t *dim,
                  char *errbuf);
/* The same for .ivecs (int32 values). */
int vx_ivecs_read(const char *path, size_t max_rows, int32_t **data, size_t *rows, size_t *dim,
                  char *errbuf);

#endif
