/*
 * fsutil.h - the few file-system steps durable code needs, done once.
 */
#ifndef VX_BASE_FSUTIL_H
#define VX_BASE_FSUTIL_H

/* mkdir -p; 0 or -1 (errno set). */
int vx_mkdir_p(const char *path);
/* rm -rf without following links; a missing path is success.  0 or -1. */
int vx_rm_rf(const char *path);
/* fsync a directory (makes renames and creations in it durable).  0 or -1. */
int vx_fsync_dir(const char *path);
/* The parent directory of `path` into out ("." for a bare name). */
void vx_parent_dir(const char *path, char *out, unsigned long n);

#endif
