/*
 * hnsw_io.c - saving and loading an index.
 *
 * File format, version 1 (all integers little-endian):
 *
 *   header   magic "VXHNSW\r\n" (8 bytes: a text-mode transfer breaks it)
 *            u32 version, u32 dim, u32 metric, u32 quant, u32 m,
 *            u32 ef_construction, u32 train_size, u32 rescore,
 *            f32 quantile, u64 seed, u64 rng (level generator state),
 *            u32 nslots, u64 entry, u8 trained,
 *            u32 crc32 of the header bytes above
 *   body     INT8 and trained: f32 scale, f32 lo[dim]
 *            per slot id < nslots: u8 state (LIVE or DELETED), u8 level,
 *              u64 label, per level 0..level: u32 count, u32 links[count],
 *              f32 vector[dim]
 *   trailer  u32 crc32 of the body, magic "VXHNSWOK"
 *
 * Free slots are not stored: save renumbers the used slots densely (links
 * and entry point remapped), so every slot in a file costs at least
 * 14 + 4*dim bytes and a file's size bounds the memory a load commits --
 * a small corrupt file cannot make the loader allocate gigabytes.
 * INT8 codes are not stored: they are recomputed from the float vectors
 * with the saved quantizer, which is deterministic.  Ids are serialized,
 * never pointers.  The loader checks every field against the limits of the
 * format (levels, degrees, link targets, duplicate labels) as it reads, the
 * checksums at the end, and runs vx_index_validate() before handing the
 * index out: a truncated, corrupt or foreign file is rejected, never loaded.
 *
 * Save writes `path.tmp`, fsyncs it, renames it over `path` and fsyncs the
 * directory, so a crash leaves the old file or the new one, never a mix.
 */
#include "index/hnsw_internal.h"

#include "base/err.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the index file format is little-endian; add byte swapping for this host"
#endif

#define VX_FILE_MAGIC "VXHNSW\r\n"
#define VX_FILE_TRAILER "VXHNSWOK"
#define VX_FILE_VERSION 1u

typedef struct io_stream {
    FILE *f;
    uLong crc;
    int err;       /* errno of the first failure */
    bool truncated;
} io_stream;

static void put(io_stream *w, const void *p, size_t n)
{
    if (w->err) return;
    if (fwrite(p, 1, n, w->f) != n) w->err = errno ? errno : EIO;
    w->crc = crc32_z(w->crc, p, n);
}

static bool get(io_stream *r, void *p, size_t n)
{
    if (r->err || r->truncated) return false;
    if (fread(p, 1, n, r->f) != n) {
        if (ferror(r->f))
            r->err = errno ? errno : EIO;
        else
            r->truncated = true;
        return false;
    }
    r->crc = crc32_z(r->crc, p, n);
    return true;
}

#define PUT(w, v) put((w), &(v), sizeof(v))
#define GET(r, v) get((r), &(v), sizeof(v))

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL) return VX_ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
    free(copy);
    if (fd < 0) return VX_EIO;
    int rc = fsync(fd) == 0 ? 0 : VX_EIO;
    close(fd);
    return rc;
}

int vx_index_save(vx_index *idx, const char *path, char *errbuf)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (tmp == NULL) return vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "path");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    int rc = 0;
    pthread_rwlock_wrlock(&idx->struct_lock);
    io_stream w = {.f = fopen(tmp, "wb"), .crc = crc32_z(0, NULL, 0)};
    if (w.f == NULL) {
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_EIO, "cannot create %s: %s", tmp, strerror(errno));
        goto out_unlock;
    }
    const vx_index_config *c = &idx->cfg;
    uint32_t version = VX_FILE_VERSION, metric = c->metric, quant = c->quant;
    const uint32_t nslots = atomic_load(&idx->nslots);
    /* dense renumbering of the used slots */
    uint32_t *newid = malloc(sizeof(uint32_t) * (nslots ? nslots : 1));
    if (newid == NULL) {
        fclose(w.f);
        unlink(tmp);
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_ENOMEM, "renumbering table");
        goto out_unlock;
    }
    uint32_t nused = 0;
    for (uint32_t id = 0; id < nslots; id++)
        newid[id] = vx_rec_state(idx, vx_rec(idx, id)) == VX_NODE_FREE ? VX_NO_NODE : nused++;
    uint64_t entry = atomic_load(&idx->entry);
    if (entry != VX_NO_ENTRY) entry = (entry & ~(uint64_t)UINT32_MAX) | newid[(uint32_t)entry];
    pthread_mutex_lock(&idx->alloc_mu);
    uint64_t rng = idx->rng;
    pthread_mutex_unlock(&idx->alloc_mu);
    uint8_t trained = atomic_load(&idx->trained);
    put(&w, VX_FILE_MAGIC, 8);
    PUT(&w, version);
    PUT(&w, c->dim);
    PUT(&w, metric);
    PUT(&w, quant);
    PUT(&w, c->m);
    PUT(&w, c->ef_construction);
    PUT(&w, c->train_size);
    PUT(&w, c->rescore);
    PUT(&w, c->quantile);
    PUT(&w, c->seed);
    PUT(&w, rng);
    PUT(&w, nused);
    PUT(&w, entry);
    PUT(&w, trained);
    uint32_t hcrc = (uint32_t)w.crc;
    PUT(&w, hcrc);

    w.crc = crc32_z(0, NULL, 0);
    if (idx->int8 && trained) {
        PUT(&w, idx->qz.scale);
        put(&w, idx->qz.lo, idx->dim * sizeof(float));
    }
    for (uint32_t id = 0; id < nslots && !w.err; id++) {
        const uint8_t *rec = vx_rec(idx, id);
        uint8_t st = vx_rec_state(idx, rec);
        if (st == VX_NODE_FREE) continue;
        uint8_t level = vx_rec_level(idx, rec);
        uint64_t label = vx_rec_label(idx, rec);
        PUT(&w, st);
        PUT(&w, level);
        PUT(&w, label);
        for (int l = 0; l <= level; l++) {
            const uint32_t *lk = vx_links(idx, id, l);
            uint32_t cnt = vx_links_count(lk, vx_maxlinks(idx, l));
            uint32_t mapped[2 * 128], k = 0;
            for (uint32_t i = 0; i < cnt; i++) {
                uint32_t to = newid[vx_link_get(lk, i)];
                if (to != VX_NO_NODE) mapped[k++] = to; /* never otherwise: validate */
            }
            PUT(&w, k);
            put(&w, mapped, k * sizeof(uint32_t));
        }
        put(&w, vx_vec(idx, id), idx->dim * sizeof(float));
    }
    free(newid);
    uint32_t bcrc = (uint32_t)w.crc;
    PUT(&w, bcrc);
    put(&w, VX_FILE_TRAILER, 8);
    if (!w.err && fflush(w.f) != 0) w.err = errno;
    if (!w.err && fsync(fileno(w.f)) != 0) w.err = errno;
    if (fclose(w.f) != 0 && !w.err) w.err = errno;
    if (w.err) {
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_EIO, "writing %s: %s", tmp, strerror(w.err));
        unlink(tmp);
        goto out_unlock;
    }
    if (rename(tmp, path) != 0) {
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_EIO, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out_unlock;
    }
    if (fsync_dir_of(path) != 0)
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_EIO, "fsync of the directory of %s", path);
out_unlock:
    pthread_rwlock_unlock(&idx->struct_lock);
    free(tmp);
    return rc;
}

#define BAD(code, ...)                                                                      \
    do {                                                                                    \
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, (code), __VA_ARGS__);                           \
        goto fail;                                                                          \
    } while (0)
#define NEED(expr)                                                                          \
    do {                                                                                    \
        if (!(expr)) goto short_read;                                                       \
    } while (0)

int vx_index_load(const char *path, vx_index **out, char *errbuf)
{
    *out = NULL;
    int rc = 0;
    vx_index *idx = NULL;
    float *lo = NULL;
    float *vec = NULL;
    io_stream r = {.f = fopen(path, "rb"), .crc = crc32_z(0, NULL, 0)};
    if (r.f == NULL)
        return vx_errf(errbuf, VX_ERRMSG_LEN, errno == ENOENT ? VX_ENOTFOUND : VX_EIO,
                       "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(r.f), &sb) != 0) BAD(VX_EIO, "stat %s: %s", path, strerror(errno));

    char magic[8];
    if (!get(&r, magic, 8)) {
        if (r.err) BAD(VX_EIO, "reading %s: %s", path, strerror(r.err));
        BAD(VX_EFORMAT, "%s is not a Vectron index file (too short)", path);
    }
    if (memcmp(magic, VX_FILE_MAGIC, 8) != 0)
        BAD(VX_EFORMAT, "%s is not a Vectron index file (bad magic)", path);
    uint32_t version, metric, quant, nslots, hcrc;
    uint64_t entry, rng;
    uint8_t trained;
    vx_index_config c;
    NEED(GET(&r, version));
    if (version != VX_FILE_VERSION)
        BAD(VX_EFORMAT, "%s: index format version %u is not supported (this build reads %u)",
            path, version, VX_FILE_VERSION);
    NEED(GET(&r, c.dim) && GET(&r, metric) && GET(&r, quant) && GET(&r, c.m) &&
         GET(&r, c.ef_construction) && GET(&r, c.train_size) && GET(&r, c.rescore) &&
         GET(&r, c.quantile) && GET(&r, c.seed) && GET(&r, rng) && GET(&r, nslots) &&
         GET(&r, entry) &&
         GET(&r, trained));
    uint32_t expect = (uint32_t)r.crc;
    NEED(GET(&r, hcrc));
    if (hcrc != expect) BAD(VX_ECORRUPT, "%s: header checksum mismatch", path);
    c.metric = (vx_metric)metric;
    c.quant = (vx_quant)quant;
    if (metric > VX_METRIC_COSINE || quant > VX_QUANT_INT8 || trained > 1)
        BAD(VX_ECORRUPT, "%s: header fields out of range", path);
    char cfgerr[VX_ERRMSG_LEN];
    if (vx_index_check_config(&c, cfgerr) != 0)
        BAD(VX_ECORRUPT, "%s: bad parameters: %s", path, cfgerr);
    /* Every slot takes at least 1+1+8+4+4*dim bytes: the file's size bounds
     * the memory this load may commit. */
    if ((uint64_t)nslots * (14 + 4 * (uint64_t)c.dim) > (uint64_t)sb.st_size)
        BAD(VX_ECORRUPT, "%s: %u slots cannot fit in %lld bytes", path, nslots,
            (long long)sb.st_size);
    char sub[VX_ERRMSG_LEN];
    if (entry != VX_NO_ENTRY && (!trained || (uint32_t)entry >= nslots || (entry >> 32) > VX_MAX_LEVEL))
        BAD(VX_ECORRUPT, "%s: entry point out of range", path);
    if (quant == VX_QUANT_NONE && !trained)
        BAD(VX_ECORRUPT, "%s: unquantized index marked untrained", path);
    rc = vx_index_alloc(&c, &idx, sub);
    if (rc != 0) BAD(rc, "%s: %s", path, sub);
    idx->rng = rng;

    r.crc = crc32_z(0, NULL, 0);
    if (idx->int8 && trained) {
        float scale;
        lo = malloc(c.dim * sizeof(float));
        if (lo == NULL) BAD(VX_ENOMEM, "quantizer");
        NEED(GET(&r, scale) && get(&r, lo, c.dim * sizeof(float)));
        if (!(scale > 0.0f) || scale > 3.0e38f) BAD(VX_ECORRUPT, "%s: bad quantizer scale", path);
        for (uint32_t d = 0; d < c.dim; d++)
            if (lo[d] != lo[d] || lo[d] > 3.0e38f || lo[d] < -3.0e38f)
                BAD(VX_ECORRUPT, "%s: bad quantizer offset", path);
        rc = vx_quant_init_params(&idx->qz, c.dim, idx->ip, c.quantile, scale, lo);
        if (rc != 0) BAD(rc, "quantizer");
        atomic_store(&idx->trained, true);
    }
    vec = malloc(c.dim * sizeof(float));
    if (vec == NULL) BAD(VX_ENOMEM, "load buffers");
    uint32_t links[2 * 128];
    for (uint32_t id = 0; id < nslots; id++) {
        uint8_t st, level;
        uint64_t label;
        NEED(GET(&r, st) && GET(&r, level) && GET(&r, label));
        if ((st != VX_NODE_LIVE && st != VX_NODE_DELETED) || level > VX_MAX_LEVEL) {
            BAD(VX_ECORRUPT, "%s: slot %u: bad state %u or level %u", path, id, st, level);
        }
        uint32_t got = vx_slot_alloc(idx, level);
        if (got != id) {
            BAD(VX_ENOMEM, "%s: no memory for slot %u", path, id);
        }
        for (int l = 0; l <= level; l++) {
            uint32_t cnt;
            NEED(GET(&r, cnt));
            if (cnt > vx_maxlinks(idx, l)) {
                BAD(VX_ECORRUPT, "%s: slot %u level %d: degree %u too high", path, id, l, cnt);
            }
            NEED(get(&r, links, cnt * sizeof(uint32_t)));
            for (uint32_t i = 0; i < cnt; i++) {
                if (links[i] >= nslots) {
                    BAD(VX_ECORRUPT, "%s: slot %u: link to %u beyond %u slots", path, id,
                        links[i], nslots);
                }
            }
            vx_links_store(idx, id, l, links, cnt);
        }
        NEED(get(&r, vec, c.dim * sizeof(float)));
        for (uint32_t d = 0; d < c.dim; d++) {
            if (vec[d] != vec[d] || vec[d] > 3.4e38f || vec[d] < -3.4e38f) {
                BAD(VX_ECORRUPT, "%s: slot %u: non-finite vector component", path, id);
            }
        }
        uint8_t *rec = vx_rec(idx, id);
        vx_node_write_payload(idx, id, vec, false);
        __atomic_store_n((uint64_t *)(rec + idx->off_label), label, __ATOMIC_RELEASE);
        vx_rec_set_state(idx, rec, st);
        if (st == VX_NODE_LIVE) {
            uint32_t old;
            if (vx_labelmap_put(&idx->map, label, id, &old) != 0) {
                BAD(VX_ENOMEM, "label map");
            }
            if (old != VX_NO_NODE) {
                BAD(VX_ECORRUPT, "%s: label %llu appears twice", path, (unsigned long long)label);
            }
            atomic_fetch_add(&idx->live, 1);
        } else {
            atomic_fetch_add(&idx->deleted, 1);
        }
    }
    expect = (uint32_t)r.crc;
    uint32_t bcrc;
    char trailer[8];
    NEED(GET(&r, bcrc) && get(&r, trailer, 8));
    if (bcrc != expect || memcmp(trailer, VX_FILE_TRAILER, 8) != 0)
        BAD(VX_ECORRUPT, "%s: body checksum mismatch", path);
    if (fgetc(r.f) != EOF) BAD(VX_ECORRUPT, "%s: trailing bytes after the index", path);
    atomic_store(&idx->entry, entry);
    vx_validate_report rep;
    if (vx_index_validate(idx, &rep) != 0)
        BAD(VX_ECORRUPT, "%s: graph invariant violated: %s", path, rep.msg);
    fclose(r.f);
    free(vec);
    free(lo);
    *out = idx;
    return 0;

short_read:
    if (r.err)
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_EIO, "reading %s: %s", path, strerror(r.err));
    else
        rc = vx_errf(errbuf, VX_ERRMSG_LEN, VX_ECORRUPT, "%s is truncated", path);
fail:
    fclose(r.f);
    free(vec);
    free(lo);
    vx_index_free(idx);
    return rc;
}
