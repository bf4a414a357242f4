/*
 * fvecs.c - readers for the TEXMEX .fvecs / .ivecs formats (see fvecs.h).
 *
 * Both formats have 4-byte elements, so one reader serves both:
 *   1. read row 0's dimension d and check it is 1..VX_FVECS_MAX_DIM;
 *   2. check the file size is a whole number of rows of 4 + 4*d bytes
 *      (catches truncated files and files whose later rows have another d
 *      before anything is allocated for the data);
 *   3. one fread of the rows wanted (all of them, or max_rows) into one
 *      buffer, then compact it in place: row i's d values move from byte
 *      i*(4+4d)+4 to byte i*4d.  The destination never overtakes the next
 *      row's header (i*4d + 4d < (i+1)*(4+4d)), so each header is checked
 *      before it can be overwritten; a row whose d differs is rejected.
 *   4. shrink the buffer to rows*d elements.
 *
 * Errors: VX_EIO (open/stat/read failure, with strerror(errno)),
 * VX_EFORMAT (empty file, bad d, size not a multiple of the row size, a row
 * with a different d), VX_ENOMEM.  An empty file is an error: it has no
 * dimension, and a caller asking for vectors never wants zero of them.
 *
 * The files are little-endian; so are the hosts we run on (x86-64, arm64).
 */
#include "base/fvecs.h"

#include "base/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fvecs.c assumes a little-endian host (the file format is little-endian)"
#endif

#define VX_FVECS_MAX_DIM 65536
#define VX_FVECS_ERRLEN 256

static int vecs_read(const char *path, const char *kind, size_t max_rows, void **data, size_t *rows,
                     size_t *dim, char *errbuf)
{
    const size_t n = errbuf ? VX_FVECS_ERRLEN : 0;
    FILE *f;
    struct stat st;
    int32_t d32;
    size_t d, row_bytes, file_rows, want, nbytes;
    unsigned char *buf;
    int rc;

    *data = NULL;
    *rows = 0;
    *dim = 0;

    f = fopen(path, "rb");
    if (f == NULL) return vx_errf(errbuf, n, VX_EIO, "%s: open: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0) {
        rc = vx_errf(errbuf, n, VX_EIO, "%s: stat: %s", path, strerror(errno));
        goto err_after_open;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = vx_errf(errbuf, n, VX_EFORMAT, "%s: not a regular file", path);
        goto err_after_open;
    }
    if (st.st_size == 0) {
        rc = vx_errf(errbuf, n, VX_EFORMAT, "%s: empty file (no %s rows)", path, kind);
        goto err_after_open;
    }
    if (st.st_size < 4) {
        rc = vx_errf(errbuf, n, VX_EFORMAT, "%s: %lld bytes, too short for a %s row header", path,
                     (long long)st.st_size, kind);
        goto err_after_open;
    }
    if (fread(&d32, sizeof d32, 1, f) != 1) {
        if (ferror(f))
            rc = vx_errf(errbuf, n, VX_EIO, "%s: read: %s", path, strerror(errno));
        else
            rc = vx_errf(errbuf, n, VX_EIO, "%s: short read of row 0 header", path);
        goto err_after_open;
    }
    if (d32 < 1 || d32 > VX_FVECS_MAX_DIM) {
        rc = vx_errf(errbuf, n, VX_EFORMAT,
                     "%s: row 0 has dimension %d (must be 1..%d): not a %s file?", path, (int)d32,
                     VX_FVECS_MAX_DIM, kind);
        goto err_after_open;
    }
    d = (size_t)d32;
    row_bytes = 4 + 4 * d;
    if ((unsigned long long)st.st_size % row_bytes != 0) {
        rc = vx_errf(errbuf, n, VX_EFORMAT,
                     "%s: size %lld is not a multiple of the row size %zu (d=%zu): truncated, "
                     "or rows of different dimension",
                     path, (long long)st.st_size, row_bytes, d);
        goto err_after_open;
    }
    file_rows = (size_t)st.st_size / row_bytes;
    want = (max_rows != 0 && max_rows < file_rows) ? max_rows : file_rows;
    nbytes = want * row_bytes;

    buf = malloc(nbytes);
    if (buf == NULL) {
        rc = vx_errf(errbuf, n, VX_ENOMEM, "%s: cannot allocate %zu bytes for %zu rows", path,
                     nbytes, want);
        goto err_after_open;
    }
    if (fseek(f, 0, SEEK_SET) != 0) {
        rc = vx_errf(errbuf, n, VX_EIO, "%s: seek: %s", path, strerror(errno));
        goto err_after_alloc;
    }
    {
        size_t got = fread(buf, 1, nbytes, f);
        if (got != nbytes) {
            if (ferror(f))
                rc = vx_errf(errbuf, n, VX_EIO, "%s: read: %s", path, strerror(errno));
            else
                rc = vx_errf(errbuf, n, VX_EIO,
                             "%s: short read: got %zu of %zu bytes (file changed while reading?)",
                             path, got, nbytes);
            goto err_after_alloc;
        }
    }

    /* Compact in place, checking each row's header before it can be overwritten. */
    for (size_t i = 0; i < want; i++) {
        int32_t di;
        memcpy(&di, buf + i * row_bytes, sizeof di);
        if (di != d32) {
            rc = vx_errf(errbuf, n, VX_EFORMAT, "%s: row %zu has dimension %d, row 0 has %zu", path,
                         i, (int)di, d);
            goto err_after_alloc;
        }
        memmove(buf + i * 4 * d, buf + i * row_bytes + 4, 4 * d);
    }
    {
        void *shrunk = realloc(buf, want * 4 * d);
        if (shrunk != NULL) buf = shrunk;
    }
    fclose(f);
    *data = buf;
    *rows = want;
    *dim = d;
    return 0;

err_after_alloc:
    free(buf);
err_after_open:
    fclose(f);
    return rc;
}

int vx_fvecs_read(const char *path, size_t max_rows, float **data, size_t *rows, size_t *dim,
                  char *errbuf)
{
    void *p;
    int rc = vecs_read(path, "fvecs", max_rows, &p, rows, dim, errbuf);
    *data = p;
    return rc;
}

int vx_ivecs_read(const char *path, size_t max_rows, int32_t **data, size_t *rows, size_t *dim,
                  char *errbuf)
{
    void *p;
    int rc = vecs_read(path, "ivecs", max_rows, &p, rows, dim, errbuf);
    *data = p;
    return rc;
}
