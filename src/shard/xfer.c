/*
 * xfer.c - a replica's data as one stream (see shard.h, "moving a replica's
 * data between nodes").
 *
 * The stream is a sequence of frames, each {u32 type, u32 length, bytes},
 * little-endian, at most XF_FRAME_MAX bytes of payload:
 *
 *   HEADER  {u64 version (1), u64 checkpoint index C, u64 checkpoint size,
 *            u64 store applied index when the copy started}
 *   INDEX*  the bytes of index-<C>.vxi (none when the sender has no checkpoint)
 *   STORE*  a compacted LMDB copy (mdb_env_copyfd2, one read transaction)
 *   END     {u64 XXH3-64 of every HEADER, INDEX and STORE payload in order}
 *
 * or an ERROR frame (a message) in place of any of them.  Memory is bounded
 * by one frame buffer on each side and LMDB's two copy buffers: the data
 * goes from the sender's files to the receiver's files, never whole in
 * memory, whatever the shard's size.
 *
 * The sender reads the checkpoint first, then copies the store, so the copy
 * is never older than the checkpoint (C <= the copy's applied index), which
 * is what vx_shard_open expects of a directory.
 */
#define _GNU_SOURCE
#include "base/err.h"
#include "base/fsutil.h"
#include "shard/shard.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define XF_FRAME_MAX (1u << 20)
#define XF_VERSION 1u

enum { XF_HEADER = 1, XF_INDEX = 2, XF_STORE = 3, XF_END = 4, XF_ERROR = 5 };

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return VX_EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = recv(fd, c, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return VX_EIO;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

static int fwrite_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return VX_EIO;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- sending ---------------------------------------------------------------------- */

typedef struct xf_out {
    int fd;
    XXH3_state_t *h;
} xf_out;

static int frame(xf_out *o, uint32_t type, const void *p, uint32_t len)
{
    uint32_t hdr[2] = {type, len};
    if (type != XF_END && type != XF_ERROR) XXH3_64bits_update(o->h, p, len);
    int rc = write_all(o->fd, hdr, sizeof hdr);
    return rc == 0 && len > 0 ? write_all(o->fd, p, len) : rc;
}

static void send_error(xf_out *o, const char *msg)
{
    frame(o, XF_ERROR, msg, (uint32_t)strlen(msg));
}

typedef struct copier {
    vx_store *store;
    int fd;
    int rc;
} copier;

static void *copy_main(void *arg)
{
    copier *c = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE); /* a reader gone: EPIPE here, not a dead process */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    c->rc = vx_store_copy_fd(c->store, c->fd);
    close(c->fd);
    return NULL;
}

int vx_shard_send(vx_shard *sh, int fd, uint64_t min_index, char *errbuf)
{
    xf_out o = {fd, XXH3_createState()};
    char *buf = malloc(XF_FRAME_MAX);
    int ifd = -1, rc = 0;
    if (o.h == NULL || buf == NULL) {
        rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ENOMEM, "send buffers");
        goto out;
    }
    XXH3_64bits_reset(o.h);
    uint64_t applied = vx_shard_applied(sh);
    if (applied < min_index) {
        vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ESTATE,
                "this replica has applied %" PRIu64 ", the request needs %" PRIu64, applied,
                min_index);
        send_error(&o, errbuf);
        rc = VX_ESTATE;
        goto out;
    }
    uint64_t ck_index, ck_size;
    if (vx_shard_open_checkpoint(sh, &ifd, &ck_index, &ck_size) != 0) {
        ifd = -1; /* no checkpoint yet: the receiver builds its index from the store */
        ck_index = ck_size = 0;
    }
    uint64_t head[4] = {XF_VERSION, ck_index, ck_size, applied};
    rc = frame(&o, XF_HEADER, head, sizeof head);
    for (uint64_t off = 0; rc == 0 && off < ck_size;) {
        size_t want = ck_size - off < XF_FRAME_MAX ? (size_t)(ck_size - off) : XF_FRAME_MAX;
        ssize_t r = pread(ifd, buf, want, (off_t)off);
        if (r <= 0) {
            rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "reading checkpoint: %s",
                         r < 0 ? strerror(errno) : "short file");
            send_error(&o, errbuf);
            goto out;
        }
        rc = frame(&o, XF_INDEX, buf, (uint32_t)r);
        off += (uint64_t)r;
    }
    if (rc != 0) goto net_error;

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "pipe: %s", strerror(errno));
        send_error(&o, errbuf);
        goto out;
    }
    copier cp = {vx_shard_store(sh), pfd[1], 0};
    pthread_t th;
    if (pthread_create(&th, NULL, copy_main, &cp) != 0) {
        close(pfd[0]);
        close(pfd[1]);
        rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ENOMEM, "copy thread");
        send_error(&o, errbuf);
        goto out;
    }
    for (;;) {
        ssize_t r = read(pfd[0], buf, XF_FRAME_MAX);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        rc = frame(&o, XF_STORE, buf, (uint32_t)r);
        if (rc != 0) break;
    }
    close(pfd[0]); /* a copier still writing gets EPIPE */
    pthread_join(th, NULL);
    if (rc != 0) goto net_error;
    if (cp.rc != 0) {
        rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, cp.rc, "store copy: %s",
                     vx_store_errmsg(vx_shard_store(sh)));
        send_error(&o, errbuf);
        goto out;
    }
    uint64_t hash = XXH3_64bits_digest(o.h);
    rc = frame(&o, XF_END, &hash, sizeof hash);
    if (rc != 0) goto net_error;
    goto out;
net_error:
    rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "sending: %s", strerror(errno));
out:
    if (ifd >= 0) close(ifd);
    free(buf);
    XXH3_freeState(o.h);
    return rc;
}

/* ---- receiving ------------------------------------------------------------------------ */

static int verify_store(const char *dir, uint64_t min_index, char *errbuf)
{
    vx_store *st;
    char err[VX_ERRMSG_LEN];
    vx_store_options so = {.no_hit_map = true}; /* only checked here */
    int rc = vx_store_open(dir, &so, &st, err);
    if (rc != 0) return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "received store: %s", err);
    uint64_t digest, applied;
    rc = vx_store_digest(st, &digest, &applied); /* reads and checks every record */
    if (rc != 0)
        vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, rc, "received store: %s", vx_store_errmsg(st));
    else if (applied < min_index)
        rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ESTATE,
                     "received store is at %" PRIu64 ", %" PRIu64 " was needed", applied,
                     min_index);
    vx_store_close(st);
    return rc;
}

int vx_shard_receive(vx_shard *sh, int fd, uint64_t min_index, char *errbuf)
{
    char inc[600], sdir[700], path[800];
    snprintf(inc, sizeof inc, "%s.incoming", vx_shard_dir(sh));
    snprintf(sdir, sizeof sdir, "%s/store", inc);
    vx_rm_rf(inc);
    if (mkdir(inc, 0755) != 0 || mkdir(sdir, 0755) != 0)
        return vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "mkdir %s: %s", inc, strerror(errno));

    XXH3_state_t *h = XXH3_createState();
    char *buf = malloc(XF_FRAME_MAX + 1);
    int ifd = -1, sfd = -1, rc = 0;
    uint64_t head[4] = {0}, got_index = 0, got_store = 0;
    if (h == NULL || buf == NULL) {
        rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ENOMEM, "receive buffers");
        goto out;
    }
    XXH3_64bits_reset(h);
    snprintf(path, sizeof path, "%s/data.mdb", sdir);
    sfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (sfd < 0) {
        rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    bool have_header = false, done = false;
    while (!done) {
        uint32_t hdr[2];
        if (read_all(fd, hdr, sizeof hdr) != 0 || hdr[1] > XF_FRAME_MAX ||
            read_all(fd, buf, hdr[1]) != 0) {
            rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "stream cut or malformed");
            goto out;
        }
        uint32_t type = hdr[0], len = hdr[1];
        if (type == XF_ERROR) {
            buf[len] = '\0';
            rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ESTATE, "sender: %s", buf);
            goto out;
        }
        if (type != XF_END) XXH3_64bits_update(h, buf, len);
        if (!have_header) {
            if (type != XF_HEADER || len != sizeof head) break;
            memcpy(head, buf, sizeof head);
            if (head[0] != XF_VERSION) break;
            have_header = true;
            if (head[2] > 0) {
                snprintf(path, sizeof path, "%s/index-%" PRIu64 ".vxi", inc, head[1]);
                ifd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (ifd < 0) {
                    rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "%s: %s", path,
                                 strerror(errno));
                    goto out;
                }
            }
            continue;
        }
        switch (type) {
        case XF_INDEX:
            if (ifd < 0 || got_index + len > head[2] || got_store > 0) goto malformed;
            if (fwrite_all(ifd, buf, len) != 0) goto write_error;
            got_index += len;
            break;
        case XF_STORE:
            if (fwrite_all(sfd, buf, len) != 0) goto write_error;
            got_store += len;
            break;
        case XF_END: {
            uint64_t want;
            if (len != sizeof want || got_index != head[2] || got_store == 0) goto malformed;
            memcpy(&want, buf, sizeof want);
            if (want != XXH3_64bits_digest(h)) {
                rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_ECORRUPT, "stream hash mismatch");
                goto out;
            }
            done = true;
            break;
        }
        default:
            goto malformed;
        }
    }
    if (!done) goto malformed;
    if (fsync(sfd) != 0 || (ifd >= 0 && fsync(ifd) != 0)) goto write_error;
    close(sfd);
    sfd = -1;
    if (ifd >= 0) close(ifd);
    ifd = -1;
    rc = verify_store(sdir, min_index, errbuf);
    if (rc != 0) goto out;
    snprintf(path, sizeof path, "%s/RECEIVED", inc);
    int mfd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (mfd < 0 || fsync(mfd) != 0 || vx_fsync_dir(sdir) != 0 || vx_fsync_dir(inc) != 0) {
        if (mfd >= 0) close(mfd);
        goto write_error;
    }
    close(mfd);
    goto out;
malformed:
    rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EFORMAT, "malformed snapshot stream");
    goto out;
write_error:
    rc = vx_errf(errbuf, VX_SHARD_ERRMSG_LEN, VX_EIO, "writing %s: %s", inc, strerror(errno));
out:
    if (sfd >= 0) close(sfd);
    if (ifd >= 0) close(ifd);
    if (rc != 0) vx_rm_rf(inc);
    free(buf);
    XXH3_freeState(h);
    return rc;
}
