/*
 * test_persist.c - vx_index_save / vx_index_load (format in hnsw_io.c).
 *
 * Round trips for NONE and INT8 storage, L2 and COSINE, with tombstones
 * pending and slots recycled by vacuum: the loaded index must be the same
 * index (stats, every vector, every search answer bit for bit, the bytes of
 * a second save) and keep working.  Then the loader's defences: every byte
 * flipped at a few hundred positions, truncations, foreign files, a future
 * version with a valid header checksum, a missing file; and the saver's:
 * a failed save reports VX_EIO and leaves the previous file intact.
 *
 * Files live in a mkdtemp directory under /tmp, removed at the end.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "index/index.h"
#include "testutil.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Header layout of format version 1 (hnsw_io.c): magic[8], then u32
 * version at 8, ..., u64 seed at 44, u64 rng at 52, u32 nslots at 60,
 * u64 entry at 64, u8 trained at 72, u32 crc32 of bytes [0, 73) at 73. */
#define HDR_VERSION_OFF 8
#define HDR_CRC_OFF 73
#define HDR_LEN 77

static char g_dir[64];

/* ---- files ------------------------------------------------------------------ */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int dir_setup(void **state)
{
    strcpy(g_dir, "/tmp/vx_persist_XXXXXX");
    if (mkdtemp(g_dir) == NULL) return -1;
    fprintf(stderr, "files in %s\n", g_dir);
    return 0;
}

static int dir_teardown(void **state)
{
    if (getenv("VX_KEEP_FILES") != NULL) return 0;
    return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void path_in_dir(char *out, size_t n, const char *name)
{
    int len = snprintf(out, n, "%s/%s", g_dir, name);
    assert_true(len > 0 && (size_t)len < n);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_all(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len > 0) assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* ---- building indexes with history ------------------------------------------- */

typedef struct built {
    vx_index *idx;
    uint64_t *labels; /* every label ever used (present or not) */
    size_t nlabels;
    float *data; /* source vectors, rows addressed by label index */
    float *queries;
    size_t nq;
} built;

static uint64_t label_of(size_t i)
{
    return (uint64_t)i * 7919 + 3;
}

/* n points are added, a fifth deleted and vacuumed (their slots go to the
 * free list), n/10 new labels take recycled slots, some labels are replaced
 * (the old node becomes a tombstone) and n/15 more deleted without vacuum. */
static built build(vx_metric metric, vx_quant quant, uint32_t dim, size_t n, uint32_t train_size,
                   uint64_t seed)
{
    built b = {0};
    vx_rng rng;
    vx_rng_seed(&rng, seed);
    size_t extra = n / 10, replaced = n / 50;
    b.nq = 50;
    b.nlabels = n + extra;
    b.data = vx_test_clustered(&rng, b.nlabels + replaced + b.nq, dim, 20);
    assert_non_null(b.data);
    b.queries = b.data + (b.nlabels + replaced) * dim;
    b.labels = malloc(b.nlabels * sizeof(uint64_t));
    assert_non_null(b.labels);
    for (size_t i = 0; i < b.nlabels; i++)
        b.labels[i] = label_of(i);

    vx_index_config cfg;
    vx_index_config_default(&cfg, dim, metric);
    cfg.quant = quant;
    cfg.train_size = train_size;
    cfg.ef_construction = 64;
    cfg.m = 8;
    cfg.seed = seed;
    char err[VX_ERRMSG_LEN];
    assert_int_equal(vx_index_new(&cfg, &b.idx, err), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(vx_index_add(b.idx, b.labels[i], b.data + i * dim, err), 0);
    for (size_t i = 0; i < n; i += 5)
        assert_int_equal(vx_index_delete(b.idx, b.labels[i]), 0);
    assert_int_equal(vx_index_vacuum(b.idx), 0);
    for (size_t i = n; i < n + extra; i++)
        assert_int_equal(vx_index_add(b.idx, b.labels[i], b.data + i * dim, err), 0);
    for (size_t r = 0; r < replaced; r++) {
        size_t i = 1 + r * 5; /* a live label: replace its vector */
        const float *v = b.data + (b.nlabels + r) * dim;
        assert_int_equal(vx_index_add(b.idx, b.labels[i], v, err), 0);
    }
    for (size_t i = 2; i < n; i += 15)
        assert_int_equal(vx_index_delete(b.idx, b.labels[i]), 0);
    vx_validate_report rep;
    int rc = vx_index_validate(b.idx, &rep);
    if (rc != 0) fprintf(stderr, "validate: %s\n", rep.msg);
    assert_int_equal(rc, 0);
    return b;
}

static void built_free(built *b)
{
    vx_index_free(b->idx);
    free(b->labels);
    free(b->data);
}

/* ---- comparing two indexes ---------------------------------------------------- */

static void assert_same_index(vx_index *a, vx_index *b, const built *src, uint32_t dim)
{
    vx_index_stats sa, sb;
    vx_index_get_stats(a, &sa);
    vx_index_get_stats(b, &sb);
    assert_int_equal(sa.live, sb.live);
    assert_int_equal(sa.deleted, sb.deleted);
    /* save drops free slots and renumbers the rest densely */
    assert_int_equal(sb.slots, sa.live + sa.deleted);
    assert_int_equal(sa.max_level, sb.max_level);
    assert_int_equal(sa.trained, sb.trained);
    const vx_index_config *ca = vx_index_get_config(a), *cb = vx_index_get_config(b);
    assert_int_equal(ca->dim, cb->dim);
    assert_int_equal(ca->metric, cb->metric);
    assert_int_equal(ca->quant, cb->quant);
    assert_int_equal(ca->m, cb->m);
    assert_int_equal(ca->ef_construction, cb->ef_construction);
    assert_int_equal(ca->train_size, cb->train_size);
    assert_int_equal(ca->seed, cb->seed);

    float *va = malloc(dim * sizeof(float)), *vb = malloc(dim * sizeof(float));
    assert_true(va && vb);
    size_t present = 0;
    for (size_t i = 0; i < src->nlabels; i++) {
        uint64_t l = src->labels[i];
        int ra = vx_index_get_vector(a, l, va), rb = vx_index_get_vector(b, l, vb);
        assert_int_equal(ra, rb);
        assert_int_equal(vx_index_contains(a, l), vx_index_contains(b, l));
        if (ra == 0) {
            present++;
            assert_memory_equal(va, vb, dim * sizeof(float));
        } else {
            assert_int_equal(ra, VX_ENOTFOUND);
        }
    }
    assert_int_equal(present, sa.live);
    free(va);
    free(vb);

    vx_hit ha[10], hb[10];
    vx_search_params graph = {.ef = 32}, exact = {.exact = true};
    for (size_t q = 0; q < src->nq; q++) {
        for (int pass = 0; pass < 3; pass++) {
            const vx_search_params *p = pass == 0 ? NULL : pass == 1 ? &graph : &exact;
            uint32_t na, nb;
            assert_int_equal(vx_index_search(a, src->queries + q * dim, 10, p, NULL, ha, &na), 0);
            assert_int_equal(vx_index_search(b, src->queries + q * dim, 10, p, NULL, hb, &nb), 0);
            assert_int_equal(na, nb);
            for (uint32_t i = 0; i < na; i++) {
                assert_int_equal(ha[i].label, hb[i].label);
                assert_memory_equal(&ha[i].distance, &hb[i].distance, sizeof(float));
            }
        }
    }
}

/* ---- round trips --------------------------------------------------------------- */

static void round_trip(vx_metric metric, vx_quant quant, size_t n, uint32_t train_size)
{
    const uint32_t dim = 16;
    char path[128], path2[128], err[VX_ERRMSG_LEN];
    snprintf(err, sizeof err, "m%d-q%d-n%zu.vxi", metric, quant, n);
    path_in_dir(path, sizeof path, err);
    snprintf(err, sizeof err, "m%d-q%d-n%zu.again.vxi", metric, quant, n);
    path_in_dir(path2, sizeof path2, err);

    built b = build(metric, quant, dim, n, train_size,
                    vx_test_seed(5) * 131 + (uint64_t)metric * 7 + quant);
    vx_index_stats st;
    vx_index_get_stats(b.idx, &st);

    double t0 = vx_test_now();
    int rc = vx_index_save(b.idx, path, err);
    if (rc != 0) fprintf(stderr, "save: %s\n", err);
    assert_int_equal(rc, 0);
    double t1 = vx_test_now();
    vx_index *loaded = NULL;
    rc = vx_index_load(path, &loaded, err);
    if (rc != 0) fprintf(stderr, "load: %s\n", err);
    assert_int_equal(rc, 0);
    assert_non_null(loaded);
    double t2 = vx_test_now();
    size_t flen;
    free(read_all(path, &flen));
    fprintf(stderr,
            "metric=%d quant=%d: live=%llu deleted=%llu slots=%llu trained=%d file=%zu B "
            "save %.1f ms load %.1f ms\n",
            metric, quant, (unsigned long long)st.live, (unsigned long long)st.deleted,
            (unsigned long long)st.slots, st.trained, flen, (t1 - t0) * 1e3, (t2 - t1) * 1e3);
    assert_true(st.deleted > 0);
    assert_true(st.slots > st.live + st.deleted); /* some slots are free */

    assert_int_equal(vx_index_validate(loaded, NULL), 0);
    assert_same_index(b.idx, loaded, &b, dim);

    /* saving the loaded index gives the same bytes */
    assert_int_equal(vx_index_save(loaded, path2, err), 0);
    size_t l1, l2;
    uint8_t *f1 = read_all(path, &l1), *f2 = read_all(path2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(f1, f2, l1);
    free(f1);
    free(f2);

    /* the loaded index keeps working: adds (into recycled slots), deletes,
     * vacuum, and the new points are found */
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(5) ^ 0xabc);
    const size_t nnew = 200;
    float *fresh = vx_test_clustered(&rng, nnew, dim, 20);
    assert_non_null(fresh);
    for (size_t i = 0; i < nnew; i++)
        assert_int_equal(vx_index_add(loaded, 1000000 + i, fresh + i * dim, err), 0);
    for (size_t i = 0; i < b.nlabels; i += 9) {
        bool had = vx_index_contains(loaded, b.labels[i]);
        assert_int_equal(vx_index_delete(loaded, b.labels[i]), had ? 0 : VX_ENOTFOUND);
    }
    assert_int_equal(vx_index_validate(loaded, NULL), 0);
    assert_int_equal(vx_index_vacuum(loaded), 0);
    vx_validate_report rep;
    rc = vx_index_validate(loaded, &rep);
    if (rc != 0) fprintf(stderr, "validate after vacuum: %s\n", rep.msg);
    assert_int_equal(rc, 0);
    vx_index_stats after;
    vx_index_get_stats(loaded, &after);
    assert_int_equal(after.deleted, 0);
    assert_true(after.trained || quant == VX_QUANT_INT8);
    /* the new points are found by the graph as by the exact scan */
    size_t found = 0, want = 0;
    vx_hit hits[10], truth[10];
    vx_search_params exact = {.exact = true};
    for (size_t i = 0; i < nnew; i++) {
        uint32_t nh, nt;
        assert_int_equal(vx_index_search(loaded, fresh + i * dim, 10, NULL, NULL, hits, &nh), 0);
        assert_int_equal(vx_index_search(loaded, fresh + i * dim, 10, &exact, NULL, truth, &nt), 0);
        for (uint32_t t = 0; t < nt; t++) {
            want++;
            for (uint32_t j = 0; j < nh; j++)
                found += hits[j].label == truth[t].label;
        }
    }
    fprintf(stderr,
            "  after load: +%zu adds, deletes, vacuum: live=%llu slots=%llu, "
            "recall@10 on the new points %.4f\n",
            nnew, (unsigned long long)after.live, (unsigned long long)after.slots,
            (double)found / (double)want);
    assert_true(found >= want * 9 / 10);
    /* and it round-trips again */
    assert_int_equal(vx_index_save(loaded, path2, err), 0);
    vx_index *again;
    assert_int_equal(vx_index_load(path2, &again, err), 0);
    assert_int_equal(vx_index_validate(again, NULL), 0);
    vx_index_free(again);

    free(fresh);
    vx_index_free(loaded);
    built_free(&b);
}

static void test_round_trip_l2_none(void **state)
{
    round_trip(VX_METRIC_L2, VX_QUANT_NONE, 2000, 0);
}
static void test_round_trip_l2_int8(void **state)
{
    round_trip(VX_METRIC_L2, VX_QUANT_INT8, 2000, 500);
}
static void test_round_trip_cosine_none(void **state)
{
    round_trip(VX_METRIC_COSINE, VX_QUANT_NONE, 2000, 0);
}
static void test_round_trip_cosine_int8(void **state)
{
    round_trip(VX_METRIC_COSINE, VX_QUANT_INT8, 2000, 500);
}
static void test_round_trip_ip_int8(void **state)
{
    round_trip(VX_METRIC_IP, VX_QUANT_INT8, 1000, 300);
}

/* INT8 before training: a flat list on disk; training happens after load. */
static void test_round_trip_int8_untrained(void **state)
{
    const uint32_t dim = 16;
    char path[128], err[VX_ERRMSG_LEN];
    path_in_dir(path, sizeof path, "untrained.vxi");
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(5) ^ 0x77);
    float *data = vx_test_clustered(&rng, 600, dim, 10);
    assert_non_null(data);
    vx_index_config cfg;
    vx_index_config_default(&cfg, dim, VX_METRIC_L2);
    cfg.quant = VX_QUANT_INT8;
    cfg.train_size = 400;
    vx_index *idx, *loaded;
    assert_int_equal(vx_index_new(&cfg, &idx, err), 0);
    for (size_t i = 0; i < 300; i++)
        assert_int_equal(vx_index_add(idx, i, data + i * dim, err), 0);
    assert_int_equal(vx_index_delete(idx, 7), 0);
    assert_int_equal(vx_index_save(idx, path, err), 0);
    assert_int_equal(vx_index_load(path, &loaded, err), 0);
    vx_index_stats st;
    vx_index_get_stats(loaded, &st);
    assert_false(st.trained);
    assert_int_equal(st.live, 299);
    assert_int_equal(st.deleted, 1);
    /* reach train_size on the loaded index: it trains and builds the graph */
    for (size_t i = 300; i < 600; i++)
        assert_int_equal(vx_index_add(loaded, i, data + i * dim, err), 0);
    vx_index_get_stats(loaded, &st);
    assert_true(st.trained);
    vx_validate_report rep;
    int rc = vx_index_validate(loaded, &rep);
    if (rc != 0) fprintf(stderr, "validate: %s\n", rep.msg);
    assert_int_equal(rc, 0);
    fprintf(stderr, "untrained round trip: trained after load, live=%llu unreachable=%llu\n",
            (unsigned long long)st.live, (unsigned long long)rep.unreachable);
    vx_index_free(idx);
    vx_index_free(loaded);
    free(data);
}

/* An empty index round-trips too. */
static void test_round_trip_empty(void **state)
{
    char path[128], err[VX_ERRMSG_LEN];
    path_in_dir(path, sizeof path, "empty.vxi");
    vx_index_config cfg;
    vx_index_config_default(&cfg, 3, VX_METRIC_IP);
    vx_index *idx, *loaded;
    assert_int_equal(vx_index_new(&cfg, &idx, err), 0);
    assert_int_equal(vx_index_save(idx, path, err), 0);
    assert_int_equal(vx_index_load(path, &loaded, err), 0);
    vx_index_stats st;
    vx_index_get_stats(loaded, &st);
    assert_int_equal(st.live + st.deleted + st.slots, 0);
    float v[3] = {1, 2, 3};
    vx_hit h[1];
    uint32_t n;
    assert_int_equal(vx_index_search(loaded, v, 1, NULL, NULL, h, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(vx_index_add(loaded, 1, v, err), 0);
    assert_int_equal(vx_index_validate(loaded, NULL), 0);
    vx_index_free(idx);
    vx_index_free(loaded);
}

/* ---- corruption ------------------------------------------------------------------ */

/* A small index file with every node state and several levels. */
static uint8_t *small_file(vx_quant quant, size_t *len)
{
    char path[128], err[VX_ERRMSG_LEN];
    path_in_dir(path, sizeof path, quant == VX_QUANT_INT8 ? "small8.vxi" : "small.vxi");
    built b = build(VX_METRIC_L2, quant, 8, 120, 40, vx_test_seed(5) ^ 0x5a11);
    assert_int_equal(vx_index_save(b.idx, path, err), 0);
    built_free(&b);
    return read_all(path, len);
}

/* Load `buf` from a file; must be rejected with one of the two codes. */
static int load_bytes(const char *path, const uint8_t *buf, size_t len, char *err)
{
    write_all(path, buf, len);
    vx_index *idx = (vx_index *)(uintptr_t)1;
    err[0] = '\0';
    int rc = vx_index_load(path, &idx, err);
    if (rc == 0) {
        vx_index_free(idx);
    } else {
        assert_null(idx);
        assert_true(err[0] != '\0');
    }
    return rc;
}

static void test_corrupt_flips(void **state)
{
    char path[128], err[VX_ERRMSG_LEN];
    path_in_dir(path, sizeof path, "flipped.vxi");
    for (int qi = 0; qi < 2; qi++) {
        size_t len;
        uint8_t *orig = small_file(qi ? VX_QUANT_INT8 : VX_QUANT_NONE, &len);
        assert_int_equal(load_bytes(path, orig, len, err), 0); /* the pristine file loads */
        uint8_t *buf = malloc(len);
        assert_non_null(buf);
        size_t tried = 0, ncorrupt = 0, nformat = 0;
        const uint8_t masks[] = {0xff, 0x01};
        for (size_t k = 0; k < HDR_LEN + 200 + 16; k++) {
            /* every header byte, 200 spread over the body, the last 16 */
            size_t pos = k < HDR_LEN         ? k
                         : k < HDR_LEN + 200 ? HDR_LEN + (k - HDR_LEN) * (len - HDR_LEN) / 200
                                             : len - 16 + (k - HDR_LEN - 200);
            /* header bytes get two flips, the rest one (loads cost ~1 ms) */
            for (size_t m = 0; m < (pos < HDR_LEN ? 2u : 1u); m++) {
                memcpy(buf, orig, len);
                buf[pos] ^= masks[m];
                int rc = load_bytes(path, buf, len, err);
                tried++;
                if (rc != VX_ECORRUPT && rc != VX_EFORMAT)
                    fprintf(stderr, "flip at %zu ^0x%02x: rc=%d (%s)\n", pos, masks[m], rc, err);
                assert_true(rc == VX_ECORRUPT || rc == VX_EFORMAT);
                ncorrupt += rc == VX_ECORRUPT;
                nformat += rc == VX_EFORMAT;
            }
        }
        fprintf(stderr, "flips (%s, %zu B file): %zu loads rejected: %zu ECORRUPT, %zu EFORMAT\n",
                qi ? "INT8" : "NONE", len, tried, ncorrupt, nformat);
        free(buf);
        free(orig);
    }
}

static void test_corrupt_truncated(void **state)
{
    char path[128], err[VX_ERRMSG_LEN];
    path_in_dir(path, sizeof path, "truncated.vxi");
    size_t len;
    uint8_t *orig = small_file(VX_QUANT_INT8, &len);
    size_t tried = 0;
    /* Shorter than the magic: indistinguishable from a foreign file. */
    for (size_t l = 1; l < 8; l++) {
        int rc = load_bytes(path, orig, l, err);
        assert_true(rc == VX_EFORMAT || rc == VX_ECORRUPT);
    }
    for (size_t k = 0; k < 100; k++) {
        size_t l = k < 40 ? 8 + k * 2 : 8 + (k - 40) * (len - 8) / 60 + 1;
        if (k == 99) l = len - 1;
        if (l >= len) l = len - 1;
        int rc = load_bytes(path, orig, l, err);
        if (rc != VX_ECORRUPT) fprintf(stderr, "truncated to %zu: rc=%d (%s)\n", l, rc, err);
        assert_int_equal(rc, VX_ECORRUPT);
        tried++;
    }
    /* a byte too many */
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, orig, len);
    longer[len] = 0;
    assert_int_equal(load_bytes(path, longer, len + 1, err), VX_ECORRUPT);
    fprintf(stderr, "truncations: %zu lengths of %zu rejected with ECORRUPT; +1 byte: %s\n", tried,
            len, err);
    free(longer);
    free(orig);
}

static void test_foreign_files(void **state)
{
    char path[128], err[VX_ERRMSG_LEN];
    path_in_dir(path, sizeof path, "foreign");
    static const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0,    0,    0,
                                  0x0d, 'I', 'H', 'D', 'R',  0,    0,    0,    1,    0,    0,
                                  0,    1,   8,   2,   0,    0,    0,    0x90, 0x77, 0x53, 0xde};
    static const char text[] = "label,x,y\n1,0.5,0.25\n2,1.5,-3\n";
    /* the magic after a text-mode transfer turned \r\n into \n */
    static const char mangled[] = "VXHNSW\n\x01\0\0\0\x04\0\0\0 and more bytes follow here";
    uint8_t zeros[128] = {0};
    struct {
        const char *name;
        const void *buf;
        size_t len;
    } cases[] = {
        {"empty", "", 0},
        {"png", png, sizeof png},
        {"text", text, sizeof text - 1},
        {"text-mode magic", mangled, sizeof mangled - 1},
        {"zeros", zeros, sizeof zeros},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = load_bytes(path, cases[i].buf, cases[i].len, err);
        fprintf(stderr, "foreign %s: rc=%d (%s)\n", cases[i].name, rc, err);
        assert_int_equal(rc, VX_EFORMAT);
    }
    /* a directory is not an index either */
    char dpath[128];
    path_in_dir(dpath, sizeof dpath, "a-directory");
    assert_int_equal(mkdir(dpath, 0700), 0);
    vx_index *idx;
    int rc = vx_index_load(dpath, &idx, err);
    fprintf(stderr, "load of a directory: rc=%d (%s)\n", rc, err);
    assert_true(rc < 0);
    assert_null(idx);
}

static void test_future_version(void **state)
{
    char path[128], err[VX_ERRMSG_LEN];
    path_in_dir(path, sizeof path, "future.vxi");
    size_t len;
    uint8_t *buf = small_file(VX_QUANT_NONE, &len);
    uint32_t crc = (uint32_t)crc32(0L, buf, HDR_CRC_OFF);
    uint32_t stored;
    memcpy(&stored, buf + HDR_CRC_OFF, 4);
    assert_int_equal(crc, stored); /* the layout this test assumes */
    const uint32_t versions[] = {2, 0, 0x01000000u};
    for (size_t i = 0; i < 3; i++) {
        memcpy(buf + HDR_VERSION_OFF, &versions[i], 4);
        crc = (uint32_t)crc32(0L, buf, HDR_CRC_OFF);
        memcpy(buf + HDR_CRC_OFF, &crc, 4);
        int rc = load_bytes(path, buf, len, err);
        fprintf(stderr, "version %u: rc=%d (%s)\n", versions[i], rc, err);
        assert_int_equal(rc, VX_EFORMAT);
        assert_non_null(strstr(err, "version"));
    }
    free(buf);
}

/* An INT8 index saved before training has no graph, so its entry field is
 * VX_NO_ENTRY.  A file that says otherwise (with a valid header checksum)
 * is inconsistent and must be rejected: accepted, the stale entry point
 * would be used by the graph build that training triggers on a later add,
 * corrupting it. */
#define HDR_ENTRY_OFF 64
static void test_untrained_file_with_entry_rejected(void **state)
{
    char path[128], err[VX_ERRMSG_LEN];
    path_in_dir(path, sizeof path, "untrained-entry.vxi");
    vx_index_config cfg;
    vx_index_config_default(&cfg, 4, VX_METRIC_L2);
    cfg.quant = VX_QUANT_INT8;
    cfg.train_size = 50;
    vx_index *idx;
    assert_int_equal(vx_index_new(&cfg, &idx, err), 0);
    float v[4];
    for (int i = 0; i < 20; i++) {
        for (int d = 0; d < 4; d++)
            v[d] = (float)((i * 7 + d * 3) % 11);
        assert_int_equal(vx_index_add(idx, (uint64_t)i, v, err), 0);
    }
    assert_int_equal(vx_index_save(idx, path, err), 0);
    vx_index_free(idx);
    size_t len;
    uint8_t *buf = read_all(path, &len);
    uint64_t entry;
    memcpy(&entry, buf + HDR_ENTRY_OFF, 8);
    assert_true(entry == UINT64_MAX); /* what the writer put there */
    entry = ((uint64_t)3 << 32) | 5;  /* "node 5, level 3" */
    memcpy(buf + HDR_ENTRY_OFF, &entry, 8);
    uint32_t crc = (uint32_t)crc32(0L, buf, HDR_CRC_OFF);
    memcpy(buf + HDR_CRC_OFF, &crc, 4);
    int rc = load_bytes(path, buf, len, err);
    fprintf(stderr, "untrained file with an entry point: rc=%d (%s)\n", rc, rc ? err : "loaded");
    if (rc == 0) {
        /* show the damage: train by adding, then validate */
        assert_int_equal(vx_index_load(path, &idx, err), 0);
        for (int i = 20; i < 80; i++) {
            for (int d = 0; d < 4; d++)
                v[d] = (float)((i * 7 + d * 3) % 13) + 0.1f * (float)i;
            assert_int_equal(vx_index_add(idx, (uint64_t)i, v, err), 0);
        }
        vx_validate_report rep;
        int vrc = vx_index_validate(idx, &rep);
        fprintf(stderr, "  after training on the loaded index: validate rc=%d %s\n", vrc, rep.msg);
        vx_index_free(idx);
    }
    free(buf);
    assert_int_equal(rc, VX_ECORRUPT);
}

static void test_missing_file(void **state)
{
    char path[128], err[VX_ERRMSG_LEN] = "";
    path_in_dir(path, sizeof path, "no-such-file.vxi");
    vx_index *idx;
    assert_int_equal(vx_index_load(path, &idx, err), VX_ENOTFOUND);
    assert_null(idx);
    assert_true(err[0] != '\0');
    path_in_dir(path, sizeof path, "no-such-dir/x.vxi");
    assert_int_equal(vx_index_load(path, &idx, NULL), VX_ENOTFOUND); /* NULL errbuf is fine */
}

/* ---- failed saves ------------------------------------------------------------------ */

static void test_save_failures_keep_old_file(void **state)
{
    char path[128], tmp[160], err[VX_ERRMSG_LEN];
    built b = build(VX_METRIC_L2, VX_QUANT_NONE, 8, 200, 0, vx_test_seed(5) ^ 0x5a7e);

    path_in_dir(path, sizeof path, "missing-dir/sub/index.vxi");
    err[0] = '\0';
    assert_int_equal(vx_index_save(b.idx, path, err), VX_EIO);
    fprintf(stderr, "save into a missing directory: %s\n", err);
    assert_true(err[0] != '\0');

    /* a good save, then the index changes, then saves that fail */
    path_in_dir(path, sizeof path, "kept.vxi");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(vx_index_save(b.idx, path, err), 0);
    size_t len0;
    uint8_t *before = read_all(path, &len0);
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(vx_index_add(b.idx, 424242, v, err), 0);

    /* (1) the temporary file cannot be created */
    assert_int_equal(mkdir(tmp, 0700), 0);
    err[0] = '\0';
    assert_int_equal(vx_index_save(b.idx, path, err), VX_EIO);
    fprintf(stderr, "save with %s.tmp a directory: %s\n", "path", err);
    assert_true(err[0] != '\0');
    size_t len1;
    uint8_t *after = read_all(path, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(after);
    assert_int_equal(rmdir(tmp), 0);

    /* (2) writing fails midway (ENOSPC): the temporary is a link to /dev/full */
    if (access("/dev/full", W_OK) == 0) {
        assert_int_equal(symlink("/dev/full", tmp), 0);
        err[0] = '\0';
        assert_int_equal(vx_index_save(b.idx, path, err), VX_EIO);
        fprintf(stderr, "save onto a full device: %s\n", err);
        assert_true(err[0] != '\0');
        after = read_all(path, &len1);
        assert_int_equal(len0, len1);
        assert_memory_equal(before, after, len0);
        free(after);
        struct stat sb;
        assert_int_equal(lstat(tmp, &sb), -1); /* the temporary is gone */
        unlink(tmp);
    } else {
        fprintf(stderr, "no /dev/full: skipping the ENOSPC case\n");
    }

    /* the old file still loads, without the new point; a retry succeeds */
    vx_index *old;
    assert_int_equal(vx_index_load(path, &old, err), 0);
    assert_false(vx_index_contains(old, 424242));
    vx_index_free(old);
    assert_int_equal(vx_index_save(b.idx, path, err), 0);
    assert_int_equal(vx_index_load(path, &old, err), 0);
    assert_true(vx_index_contains(old, 424242));
    vx_index_free(old);
    free(before);
    built_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_l2_none),
        cmocka_unit_test(test_round_trip_l2_int8),
        cmocka_unit_test(test_round_trip_cosine_none),
        cmocka_unit_test(test_round_trip_cosine_int8),
        cmocka_unit_test(test_round_trip_ip_int8),
        cmocka_unit_test(test_round_trip_int8_untrained),
        cmocka_unit_test(test_round_trip_empty),
        cmocka_unit_test(test_corrupt_flips),
        cmocka_unit_test(test_corrupt_truncated),
        cmocka_unit_test(test_foreign_files),
        cmocka_unit_test(test_future_version),
        cmocka_unit_test(test_untrained_file_with_entry_rejected),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_save_failures_keep_old_file),
    };
    return cmocka_run_group_tests(tests, dir_setup, dir_teardown);
}
