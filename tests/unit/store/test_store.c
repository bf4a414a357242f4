/*
 * test_store.c - the LMDB shard store: record round trips for every id kind,
 * labels, the applied index committed atomically with the data, key order,
 * digests, fail-stop after a failed fsync, checksummed records, foreign
 * formats, and durability across kill -9 (a real forked writer).
 *
 * Every test works in its own mkdtemp directory under /tmp, removed at the
 * end.  Randomness comes from vx_test_seed (printed; VX_SEED to replay).
 * The crash test keeps one store growing across its five kills: each child
 * resumes at applied+1 of what the previous crash left, so recovery is also
 * tested on a store that has already been killed before.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/pointid.h"
#include "store/store.h"
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------ */

static void make_dir(char dir[64])
{
    snprintf(dir, 64, "/tmp/vx_store_XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_dir(const char *dir) { assert_int_equal(nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0); }

static vx_store *open_store(const char *dir, const vx_store_options *opt)
{
    vx_store *st = NULL;
    char err[VX_STORE_ERRMSG_LEN] = "";
    int rc = vx_store_open(dir, opt, &st, err);
    if (rc != 0) fail_msg("vx_store_open(%s): %d %s", dir, rc, err);
    return st;
}

/* A point as the test expects to find it. */
typedef struct expect {
    vx_point_id id;
    float *vec;
    uint32_t dim;
    char *payload;
    uint32_t plen;
    uint64_t version;
    uint64_t label;
} expect;

static void check_record(const expect *e, const vx_record *rec)
{
    assert_int_equal(rec->dim, e->dim);
    assert_true(rec->version == e->version);
    assert_true(rec->label == e->label);
    assert_int_equal(rec->payload_len, e->plen);
    if (e->plen) assert_memory_equal(rec->payload, e->payload, e->plen);
    float *v = malloc((size_t)e->dim * 4 + 1);
    memcpy(v, rec->vector, (size_t)e->dim * 4); /* possibly unaligned */
    assert_memory_equal(v, e->vec, (size_t)e->dim * 4);
    free(v);
}

static void check_point(vx_store_txn *t, const expect *e)
{
    vx_record rec;
    int rc = vx_store_get(t, &e->id, &rec);
    if (rc != 0) {
        char text[VX_ID_TEXT_MAX];
        vx_id_format(&e->id, text);
        fail_msg("get %s: %d", text, rc);
    }
    check_record(e, &rec);
    vx_point_id got;
    assert_int_equal(vx_store_get_by_label(t, e->label, &got, &rec), 0);
    assert_true(vx_id_equal(&got, &e->id));
    check_record(e, &rec);
    /* a search hit: id and version from the label alone */
    uint64_t version = 0;
    assert_int_equal(vx_store_hit_by_label(t, e->label, &got, &version), 0);
    assert_true(vx_id_equal(&got, &e->id));
    assert_true(version == e->version);
}

static void put_expect(vx_store_txn *t, expect *e, bool want_existed)
{
    uint64_t label = UINT64_MAX;
    bool existed = !want_existed;
    assert_int_equal(vx_store_put(t, &e->id, e->vec, e->dim, e->payload, e->plen, e->version,
                                  &label, &existed),
                     0);
    assert_int_equal(existed, want_existed);
    if (want_existed)
        assert_true(label == e->label);
    else
        e->label = label;
}

static float *rand_vec(vx_rng *r, uint32_t dim)
{
    float *v = malloc((size_t)dim * 4 + 1);
    for (uint32_t i = 0; i < dim; i++) v[i] = vx_rng_normal(r);
    return v;
}

static char *rand_payload(vx_rng *r, uint32_t len)
{
    char *p = malloc((size_t)len + 1);
    for (uint32_t i = 0; i < len; i++) p[i] = (char)(' ' + vx_rng_below(r, 95));
    p[len] = '\0';
    return p;
}

static void rand_uuid(vx_rng *r, vx_point_id *id)
{
    char text[33];
    for (int k = 0; k < 16; k++) snprintf(text + 2 * k, 3, "%02x", (unsigned)vx_rng_below(r, 256));
    assert_int_equal(vx_id_from_uuid_text(id, text, 32), 0);
}

static void set_string(vx_point_id *id, const char *s) { assert_int_equal(vx_id_from_string(id, s, strlen(s)), 0); }

/* ---- put / get / labels ---------------------------------------------------------- */

#define NRT 27 /* 3 kinds x 3 dims x 3 payload sizes */

static void test_put_get_round_trip(void **state)
{
    char dir[64];
    make_dir(dir);
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(5));
    static const uint32_t dims[3] = {1, 128, 768};
    static const uint32_t plens[3] = {0, 40, 1u << 20};
    static const uint64_t uints[9] = {0, 1, UINT64_MAX, 42, 1000, 1ull << 32, 1ull << 63, 7, 255};
    expect e[NRT + 2];
    memset(e, 0, sizeof e);
    for (int n = 0; n < NRT; n++) {
        int kind = n / 9, dim = (n / 3) % 3, pl = n % 3;
        if (kind == 0) vx_id_from_uint(&e[n].id, uints[n % 9]);
        if (kind == 1) rand_uuid(&rng, &e[n].id);
        if (kind == 2) {
            char s[64];
            snprintf(s, sizeof s, "pt-%d-caf\xc3\xa9", n);
            set_string(&e[n].id, s);
        }
        e[n].dim = dims[dim];
        e[n].vec = rand_vec(&rng, e[n].dim);
        e[n].plen = plens[pl];
        e[n].payload = rand_payload(&rng, e[n].plen);
        e[n].version = 100 + (uint64_t)n;
    }

    vx_store *st = open_store(dir, NULL);
    assert_true(vx_store_count(st) == 0);
    uint64_t ai = 7, at = 7;
    assert_int_equal(vx_store_applied(st, &ai, &at), 0);
    assert_true(ai == 0 && at == 0);

    vx_store_txn *t;
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    for (int n = 0; n < NRT; n++) {
        put_expect(t, &e[n], false);
        assert_true(e[n].label == (uint64_t)n); /* consecutive from 0 */
    }
    check_point(t, &e[NRT - 1]); /* visible inside its own write txn */
    assert_int_equal(vx_store_set_applied(t, 1, 1), 0);
    assert_int_equal(vx_store_commit(t), 0);
    assert_true(vx_store_count(st) == NRT);

    assert_int_equal(vx_store_rbegin(st, &t), 0);
    for (int n = 0; n < NRT; n++) check_point(t, &e[n]);
    vx_store_rend(t);

    /* replace: same label, new version/vector/payload */
    expect *r = &e[5];
    free(r->vec);
    free(r->payload);
    r->vec = rand_vec(&rng, r->dim);
    r->plen = 17;
    r->payload = rand_payload(&rng, r->plen);
    r->version = 500;
    /* a new point after the others gets the next label */
    expect *nw = &e[NRT];
    vx_id_from_uint(&nw->id, 123456789);
    nw->dim = 3;
    nw->vec = rand_vec(&rng, 3);
    nw->payload = rand_payload(&rng, 5);
    nw->plen = 5;
    nw->version = 501;
    uint64_t label;
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    put_expect(t, r, true);
    assert_true(r->label == 5);
    put_expect(t, nw, false);
    assert_true(nw->label == NRT);
    /* delete: label back, gone by id and by label, twice is NOTFOUND */
    assert_int_equal(vx_store_del(t, &e[3].id, &label), 0);
    assert_true(label == 3);
    vx_point_id gid;
    vx_record rec;
    assert_int_equal(vx_store_get_by_label(t, 3, &gid, &rec), VX_ENOTFOUND);
    uint64_t hv;
    assert_int_equal(vx_store_hit_by_label(t, 3, &gid, &hv), VX_ENOTFOUND);
    assert_int_equal(vx_store_get(t, &e[3].id, &rec), VX_ENOTFOUND);
    assert_int_equal(vx_store_del(t, &e[3].id, &label), VX_ENOTFOUND);
    vx_point_id missing;
    set_string(&missing, "never-stored");
    assert_int_equal(vx_store_del(t, &missing, &label), VX_ENOTFOUND);
    /* put_payload keeps vector and label: from a 1 MiB payload to a short one */
    expect *pp = &e[17]; /* uuid, dim 768, 1 MiB */
    assert_int_equal(pp->plen, 1u << 20);
    free(pp->payload);
    pp->payload = strdup("{\"k\":\"v\"}");
    pp->plen = (uint32_t)strlen(pp->payload);
    pp->version = 502;
    assert_int_equal(vx_store_put_payload(t, &pp->id, pp->payload, pp->plen, pp->version), 0);
    /* and to an empty one */
    expect *pe = &e[19]; /* string, dim 1, 40 bytes */
    pe->plen = 0;
    pe->version = 503;
    assert_int_equal(vx_store_put_payload(t, &pe->id, "", 0, pe->version), 0);
    assert_int_equal(vx_store_put_payload(t, &missing, "x", 1, 504), VX_ENOTFOUND);
    assert_int_equal(vx_store_set_applied(t, 2, 1), 0);
    assert_int_equal(vx_store_commit(t), 0);
    assert_true(vx_store_count(st) == NRT);

    /* labels are never reused: the deleted point comes back with a new one */
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    put_expect(t, &e[3], false);
    assert_true(e[3].label == NRT + 1);
    assert_int_equal(vx_store_commit(t), 0);

    /* everything, after close and reopen */
    vx_store_close(st);
    st = open_store(dir, NULL);
    assert_true(vx_store_count(st) == NRT + 1);
    assert_int_equal(vx_store_applied(st, &ai, &at), 0);
    assert_true(ai == 2 && at == 1);
    assert_int_equal(vx_store_rbegin(st, &t), 0);
    for (int n = 0; n <= NRT; n++) check_point(t, &e[n]);
    assert_int_equal(vx_store_get_by_label(t, 3, &gid, &rec), VX_ENOTFOUND);
    assert_int_equal(vx_store_get_by_label(t, NRT + 2, &gid, &rec), VX_ENOTFOUND);
    assert_int_equal(vx_store_hit_by_label(t, 3, &gid, &hv), VX_ENOTFOUND); /* from memory */
    assert_int_equal(vx_store_hit_by_label(t, NRT + 2, &gid, &hv), VX_ENOTFOUND);
    /* a read txn refuses writes */
    assert_int_equal(vx_store_put(t, &missing, e[0].vec, 1, "", 0, 1, &label, &(bool){0}), VX_EINVAL);
    assert_int_equal(vx_store_del(t, &e[0].id, &label), VX_EINVAL);
    vx_store_rend(t);
    vx_store_close(st);

    for (int n = 0; n <= NRT; n++) {
        free(e[n].vec);
        free(e[n].payload);
    }
    rm_dir(dir);
}

/* ---- the applied index commits with the data -------------------------------------- */

static void put_simple(vx_store_txn *t, uint64_t id, const char *payload, uint64_t version)
{
    vx_point_id pid;
    vx_id_from_uint(&pid, id);
    float v[4] = {(float)id, 1, 2, 3};
    uint64_t label;
    bool existed;
    assert_int_equal(vx_store_put(t, &pid, v, 4, payload, (uint32_t)strlen(payload), version,
                                  &label, &existed),
                     0);
}

static void test_applied_atomic(void **state)
{
    char dir[64];
    make_dir(dir);
    vx_store *st = open_store(dir, NULL);
    vx_store_txn *t;
    uint64_t ai, at;
    vx_record rec;
    vx_point_id id;

    /* aborted: neither the points nor the applied index */
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    for (uint64_t i = 1; i <= 5; i++) put_simple(t, i, "{\"a\":1}", 7);
    assert_int_equal(vx_store_set_applied(t, 7, 3), 0);
    vx_store_abort(t);
    assert_true(vx_store_count(st) == 0);
    assert_int_equal(vx_store_applied(st, &ai, &at), 0);
    assert_true(ai == 0 && at == 0);
    assert_int_equal(vx_store_rbegin(st, &t), 0);
    vx_id_from_uint(&id, 1);
    assert_int_equal(vx_store_get(t, &id, &rec), VX_ENOTFOUND);
    assert_int_equal(vx_store_get_by_label(t, 0, &id, &rec), VX_ENOTFOUND);
    vx_store_rend(t);

    /* the aborted txn's labels are not consumed either */
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    for (uint64_t i = 1; i <= 5; i++) put_simple(t, i, "{\"a\":2}", 8);
    assert_int_equal(vx_store_set_applied(t, 8, 3), 0);
    assert_int_equal(vx_store_commit(t), 0);
    vx_store_close(st);

    st = open_store(dir, NULL);
    assert_true(vx_store_count(st) == 5);
    assert_int_equal(vx_store_applied(st, &ai, &at), 0);
    assert_true(ai == 8 && at == 3);
    assert_int_equal(vx_store_rbegin(st, &t), 0);
    for (uint64_t i = 1; i <= 5; i++) {
        vx_id_from_uint(&id, i);
        assert_int_equal(vx_store_get(t, &id, &rec), 0);
        assert_true(rec.label == i - 1);
        assert_true(rec.version == 8);
        assert_int_equal(rec.payload_len, 7);
        assert_memory_equal(rec.payload, "{\"a\":2}", 7);
    }
    vx_store_rend(t);

    /* a second aborted txn after reopen leaves the committed state alone */
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    put_simple(t, 1, "{\"a\":3}", 9);
    put_simple(t, 99, "{\"a\":3}", 9);
    assert_int_equal(vx_store_set_applied(t, 9, 4), 0);
    vx_store_abort(t);
    assert_int_equal(vx_store_applied(st, &ai, &at), 0);
    assert_true(ai == 8 && at == 3);
    assert_true(vx_store_count(st) == 5);
    vx_store_close(st);
    rm_dir(dir);
}

/* ---- iteration -------------------------------------------------------------------- */

typedef struct collect {
    vx_point_id ids[64];
    size_t n;
    size_t stop_after; /* 0 = never */
    int stop_value;
} collect;

static int collect_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    collect *c = ctx;
    if (c->n < 64) c->ids[c->n] = *id;
    c->n++;
    /* the record is the one stored for this id: its payload is the id's text */
    char text[VX_ID_TEXT_MAX];
    size_t len = vx_id_format(id, text);
    if (rec->payload_len != len || memcmp(rec->payload, text, len) != 0) return -1000;
    if (c->stop_after && c->n == c->stop_after) return c->stop_value;
    return 0;
}

static void test_iterate_order(void **state)
{
    char dir[64];
    make_dir(dir);
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(5) ^ 0x17e);
    /* the expected order, written out: uints numerically, then uuids by
     * bytes, then strings by bytes (shorter prefix first) */
    const uint64_t uints[] = {0, 1, 255, 256, 65535, 1ull << 32, (1ull << 63) - 1, 1ull << 63,
                              UINT64_MAX};
    const char *uuids[] = {"00000000-0000-0000-0000-000000000000",
                           "00000000-0000-0000-0000-000000000001",
                           "0fffffff-ffff-ffff-ffff-ffffffffffff",
                           "10000000-0000-0000-0000-000000000000",
                           "ffffffff-ffff-ffff-ffff-ffffffffffff"};
    const char *strs[] = {"\x01", "0", "42", "A", "a", "ab", "abc", "b", "\xc3\xa9", "\xf4\x8f\xbf\xbf"};
    enum { NU = sizeof uints / sizeof uints[0], NQ = 5, NS = sizeof strs / sizeof strs[0] };
    vx_point_id want[NU + NQ + NS];
    size_t nw = 0;
    for (size_t i = 0; i < NU; i++) vx_id_from_uint(&want[nw++], uints[i]);
    for (size_t i = 0; i < NQ; i++) assert_int_equal(vx_id_from_uuid_text(&want[nw++], uuids[i], 36), 0);
    for (size_t i = 0; i < NS; i++) set_string(&want[nw++], strs[i]);

    /* insert in a seeded random order */
    size_t perm[NU + NQ + NS];
    for (size_t i = 0; i < nw; i++) perm[i] = i;
    for (size_t i = nw - 1; i > 0; i--) {
        size_t j = vx_rng_below(&rng, i + 1), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    vx_store *st = open_store(dir, NULL);
    vx_store_txn *t;
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    for (size_t i = 0; i < nw; i++) {
        const vx_point_id *id = &want[perm[i]];
        char text[VX_ID_TEXT_MAX];
        uint32_t len = (uint32_t)vx_id_format(id, text);
        float v = (float)i;
        uint64_t label;
        bool existed;
        assert_int_equal(vx_store_put(t, id, &v, 1, text, len, 1, &label, &existed), 0);
    }
    assert_int_equal(vx_store_commit(t), 0);

    assert_int_equal(vx_store_rbegin(st, &t), 0);
    collect c = {.n = 0};
    assert_int_equal(vx_store_iterate(t, NULL, collect_cb, &c), 0);
    assert_int_equal(c.n, nw);
    for (size_t i = 0; i < nw; i++) {
        if (!vx_id_equal(&c.ids[i], &want[i])) {
            char a[VX_ID_TEXT_MAX], b[VX_ID_TEXT_MAX];
            vx_id_format(&c.ids[i], a);
            vx_id_format(&want[i], b);
            fail_msg("position %zu: got %s, want %s", i, a, b);
        }
    }

    /* start at an existing id: it comes first */
    for (size_t s = 0; s < nw; s++) {
        c = (collect){.n = 0};
        assert_int_equal(vx_store_iterate(t, &want[s], collect_cb, &c), 0);
        assert_int_equal(c.n, nw - s);
        assert_true(vx_id_equal(&c.ids[0], &want[s]));
    }
    /* start between keys: the next greater one comes first */
    vx_point_id between;
    vx_id_from_uint(&between, 257);
    c = (collect){.n = 0};
    assert_int_equal(vx_store_iterate(t, &between, collect_cb, &c), 0);
    assert_true(vx_id_equal(&c.ids[0], &want[4])); /* 65535 */
    set_string(&between, "aa");
    c = (collect){.n = 0};
    assert_int_equal(vx_store_iterate(t, &between, collect_cb, &c), 0);
    assert_true(vx_id_equal(&c.ids[0], &want[NU + NQ + 5])); /* "ab" */
    set_string(&between, "\xf4\x8f\xbf\xbf\x01"); /* past the last key */
    c = (collect){.n = 0};
    assert_int_equal(vx_store_iterate(t, &between, collect_cb, &c), 0);
    assert_int_equal(c.n, 0);

    /* the callback's stop value comes back, and nothing after it is visited */
    c = (collect){.n = 0, .stop_after = 3, .stop_value = 7};
    assert_int_equal(vx_store_iterate(t, NULL, collect_cb, &c), 7);
    assert_int_equal(c.n, 3);
    c = (collect){.n = 0, .stop_after = 2, .stop_value = VX_ESTATE};
    assert_int_equal(vx_store_iterate(t, &want[NU], collect_cb, &c), VX_ESTATE);
    assert_int_equal(c.n, 2);
    vx_store_rend(t);
    vx_store_close(st);
    rm_dir(dir);
}

/* ---- digests ---------------------------------------------------------------------- */

/* A seeded sequence of Raft entries: puts, payload updates and deletes, each
 * entry one txn that also sets applied.  flip: change one byte of the final
 * entry's payload. */
static void feed(vx_store *st, uint64_t seed, bool flip)
{
    vx_rng r;
    vx_rng_seed(&r, seed);
    uint64_t index = 0;
    for (int e = 0; e < 40; e++) {
        vx_store_txn *t;
        assert_int_equal(vx_store_wbegin(st, &t), 0);
        index++;
        int ops = 1 + (int)vx_rng_below(&r, 8);
        for (int o = 0; o < ops; o++) {
            vx_point_id id;
            uint64_t k = vx_rng_below(&r, 60);
            if (k < 40) {
                vx_id_from_uint(&id, k);
            } else {
                char s[32];
                snprintf(s, sizeof s, "s%llu", (unsigned long long)k);
                set_string(&id, s);
            }
            uint64_t op = vx_rng_below(&r, 10), label;
            char payload[64];
            int plen = snprintf(payload, sizeof payload, "{\"e\":%d,\"o\":%d}", e, o);
            if (op < 6) {
                float v[8];
                for (int i = 0; i < 8; i++) v[i] = vx_rng_normal(&r);
                bool existed;
                assert_int_equal(vx_store_put(t, &id, v, 8, payload, (uint32_t)plen, index,
                                              &label, &existed),
                                 0);
            } else if (op < 8) {
                int rc = vx_store_put_payload(t, &id, payload, (uint32_t)plen, index);
                assert_true(rc == 0 || rc == VX_ENOTFOUND);
            } else {
                int rc = vx_store_del(t, &id, &label);
                assert_true(rc == 0 || rc == VX_ENOTFOUND);
            }
        }
        if (e == 39) { /* the last entry writes a point nothing touches again */
            char payload[] = "{\"final\":\"abcdefgh\"}";
            if (flip) payload[12] ^= 1;
            put_simple(t, 1000000, payload, index);
        }
        assert_int_equal(vx_store_set_applied(t, index, 2), 0);
        assert_int_equal(vx_store_commit(t), 0);
    }
}

static void test_digest(void **state)
{
    uint64_t seed = vx_test_seed(5) ^ 0xd16e57;
    char da[64], db[64], dc[64];
    make_dir(da);
    make_dir(db);
    make_dir(dc);
    vx_store *a = open_store(da, NULL), *b = open_store(db, NULL), *c = open_store(dc, NULL);
    uint64_t ha, hb, hc, pa, pb, pc;
    /* empty stores agree */
    assert_int_equal(vx_store_digest(a, &ha, &pa), 0);
    assert_int_equal(vx_store_digest(b, &hb, &pb), 0);
    assert_true(ha == hb && pa == 0 && pb == 0);

    feed(a, seed, false);
    feed(b, seed, false);
    feed(c, seed, true);
    assert_int_equal(vx_store_digest(a, &ha, &pa), 0);
    assert_int_equal(vx_store_digest(b, &hb, &pb), 0);
    assert_int_equal(vx_store_digest(c, &hc, &pc), 0);
    assert_true(pa == 40 && pb == 40 && pc == 40);
    assert_true(ha == hb);
    assert_true(vx_store_count(a) == vx_store_count(b));
    assert_true(ha != hc); /* one payload byte */

    /* survives close and reopen */
    vx_store_close(b);
    b = open_store(db, NULL);
    assert_int_equal(vx_store_digest(b, &hb, &pb), 0);
    assert_true(ha == hb && pb == 40);

    /* the applied index alone leaves the content digest as it is (it is
     * reported beside it) */
    vx_store_txn *t;
    assert_int_equal(vx_store_wbegin(b, &t), 0);
    assert_int_equal(vx_store_set_applied(t, 41, 2), 0);
    assert_int_equal(vx_store_commit(t), 0);
    assert_int_equal(vx_store_digest(b, &hb, &pb), 0);
    assert_true(pb == 41);
    assert_true(ha == hb);
    /* and the same step on a brings them together again */
    assert_int_equal(vx_store_wbegin(a, &t), 0);
    assert_int_equal(vx_store_set_applied(t, 41, 2), 0);
    assert_int_equal(vx_store_commit(t), 0);
    assert_int_equal(vx_store_digest(a, &ha, &pa), 0);
    assert_true(ha == hb && pa == 41);

    vx_store_close(a);
    vx_store_close(b);
    vx_store_close(c);
    rm_dir(da);
    rm_dir(db);
    rm_dir(dc);
}

/* ---- fail-stop -------------------------------------------------------------------- */

static void test_fail_stop(void **state)
{
    char dir[64];
    make_dir(dir);
    vx_store *st = open_store(dir, NULL);
    vx_store_txn *t, *pending;
    vx_record rec;
    vx_point_id id;
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    put_simple(t, 1, "{\"ok\":1}", 1);
    assert_int_equal(vx_store_set_applied(t, 1, 1), 0);
    assert_int_equal(vx_store_commit(t), 0);
    assert_int_equal(vx_store_sync(st), 0);
    assert_false(vx_store_failed(st));

    /* a write in flight when the sync fails */
    assert_int_equal(vx_store_wbegin(st, &pending), 0);
    put_simple(pending, 2, "{\"lost\":1}", 2);
    assert_int_equal(vx_store_set_applied(pending, 2, 1), 0);

    vx_store_inject_sync_failure(st);
    assert_int_equal(vx_store_sync(st), VX_EFATAL);
    assert_true(vx_store_failed(st));
    const char *msg = vx_store_errmsg(st);
    if (strstr(msg, "fsync") == NULL || strstr(msg, "fail-stop") == NULL)
        fail_msg("message does not name the failure: %s", msg);

    float v[4] = {0};
    uint64_t label;
    bool existed;
    vx_id_from_uint(&id, 3);
    assert_int_equal(vx_store_put(pending, &id, v, 4, "", 0, 2, &label, &existed), VX_EFATAL);
    assert_int_equal(vx_store_commit(pending), VX_EFATAL);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vx_store_wbegin(st, &t), VX_EFATAL);
        assert_int_equal(vx_store_sync(st), VX_EFATAL); /* never retried */
    }
    assert_true(vx_store_failed(st));

    /* reads still work, and show only what was committed */
    assert_int_equal(vx_store_rbegin(st, &t), 0);
    vx_id_from_uint(&id, 1);
    assert_int_equal(vx_store_get(t, &id, &rec), 0);
    assert_memory_equal(rec.payload, "{\"ok\":1}", 8);
    vx_id_from_uint(&id, 2);
    assert_int_equal(vx_store_get(t, &id, &rec), VX_ENOTFOUND);
    vx_store_rend(t);
    uint64_t ai, dg;
    assert_int_equal(vx_store_applied(st, &ai, NULL), 0);
    assert_true(ai == 1);
    assert_int_equal(vx_store_digest(st, &dg, &ai), 0);
    assert_true(vx_store_count(st) == 1);
    vx_store_close(st);

    /* sync_each_commit: the injected failure hits the commit itself */
    vx_store_options opt = {.sync_each_commit = true};
    st = open_store(dir, &opt);
    assert_false(vx_store_failed(st));
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    put_simple(t, 4, "{}", 3);
    vx_store_inject_sync_failure(st);
    assert_int_equal(vx_store_commit(t), VX_EFATAL);
    assert_true(vx_store_failed(st));
    assert_non_null(strstr(vx_store_errmsg(st), "fsync"));
    assert_int_equal(vx_store_wbegin(st, &t), VX_EFATAL);
    assert_int_equal(vx_store_rbegin(st, &t), 0);
    vx_id_from_uint(&id, 1);
    assert_int_equal(vx_store_get(t, &id, &rec), 0);
    vx_store_rend(t);
    vx_store_close(st);
    rm_dir(dir);
}

/* ---- corruption ------------------------------------------------------------------- */

#define MARKER "<<VECTRON-CORRUPTION-MARK-3141>>"

typedef struct count_ctx {
    size_t n;
} count_ctx;

static int count_cb(void *ctx, const vx_point_id *id, const vx_record *rec)
{
    ((count_ctx *)ctx)->n++;
    return 0;
}

static void test_corruption_detected(void **state)
{
    _Static_assert(sizeof MARKER - 1 == 32, "32-byte marker");
    char dir[64], path[128];
    make_dir(dir);
    vx_store *st = open_store(dir, NULL);
    vx_store_txn *t;
    vx_point_id victim, id;
    set_string(&victim, "victim-point");
    uint64_t vlabel;
    bool existed;
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    for (uint64_t i = 0; i < 20; i++) put_simple(t, i, "{\"fine\":true}", 1);
    float v[4] = {1, 2, 3, 4};
    const char *payload = "{\"m\":\"" MARKER "\"}";
    assert_int_equal(vx_store_put(t, &victim, v, 4, payload, (uint32_t)strlen(payload), 1,
                                  &vlabel, &existed),
                     0);
    assert_int_equal(vx_store_commit(t), 0);
    vx_store_close(st);

    /* flip one byte inside the marker, wherever LMDB put it */
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    char *buf = malloc((size_t)sb.st_size + 1);
    assert_int_equal(pread(fd, buf, (size_t)sb.st_size, 0), sb.st_size);
    int found = 0;
    for (char *p = buf; (p = memmem(p, (size_t)(buf + sb.st_size - p), MARKER, 32)) != NULL; p += 32) {
        char c = p[13] ^ 0x20;
        assert_int_equal(pwrite(fd, &c, 1, p + 13 - buf), 1);
        found++;
    }
    free(buf);
    close(fd);
    assert_true(found >= 1);

    st = open_store(dir, NULL);
    vx_record rec;
    assert_int_equal(vx_store_rbegin(st, &t), 0);
    assert_int_equal(vx_store_get(t, &victim, &rec), VX_ECORRUPT);
    if (strstr(vx_store_errmsg(st), "victim-point") == NULL)
        fail_msg("message does not name the point: %s", vx_store_errmsg(st));
    assert_int_equal(vx_store_get_by_label(t, vlabel, &id, &rec), VX_ECORRUPT);
    /* the uints sort first: all 20 are visited, then the damaged record stops it */
    count_ctx cc = {0};
    assert_int_equal(vx_store_iterate(t, NULL, count_cb, &cc), VX_ECORRUPT);
    assert_int_equal(cc.n, 20);
    assert_non_null(strstr(vx_store_errmsg(st), "victim-point"));
    for (uint64_t i = 0; i < 20; i++) {
        vx_id_from_uint(&id, i);
        assert_int_equal(vx_store_get(t, &id, &rec), 0);
        assert_int_equal(rec.payload_len, 13);
        assert_memory_equal(rec.payload, "{\"fine\":true}", 13);
    }
    vx_store_rend(t);
    uint64_t dg, ap;
    assert_int_equal(vx_store_digest(st, &dg, &ap), VX_ECORRUPT);
    /* the damaged record is never returned to a writer either */
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    assert_int_equal(vx_store_put_payload(t, &victim, "{}", 2, 2), VX_ECORRUPT);
    vx_store_abort(t);
    vx_store_close(st);
    rm_dir(dir);
}

/* ---- format 1 is upgraded ------------------------------------------------------- */

/* A format 1 store (labels -> id, no version) is made from a current one by
 * hand, with LMDB directly; opening it upgrades it in place: hits by label
 * give the versions again, records and labels are unchanged. */
static void test_upgrade_format1(void **state)
{
    char dir[64];
    make_dir(dir);
    vx_store *st = open_store(dir, NULL);
    vx_store_txn *t;
    enum { N = 300 };
    assert_int_equal(vx_store_wbegin(st, &t), 0);
    for (uint64_t i = 0; i < N; i++) put_simple(t, i * 7, "{\"a\":1}", 1000 + i);
    vx_point_id sid;
    set_string(&sid, "a string id");
    float sv[4] = {1, 2, 3, 4};
    uint64_t slabel;
    bool existed;
    assert_int_equal(vx_store_put(t, &sid, sv, 4, "", 0, 77, &slabel, &existed), 0);
    assert_int_equal(vx_store_commit(t), 0);
    uint64_t d0, a0;
    assert_int_equal(vx_store_digest(st, &d0, &a0), 0);
    vx_store_close(st);

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, labels;
    MDB_cursor *cur;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_dbi_open(txn, "labels", MDB_INTEGERKEY, &labels), 0);
    uint32_t one = 1;
    MDB_val k = {6, "format"}, v = {sizeof one, &one};
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    assert_int_equal(mdb_cursor_open(txn, labels, &cur), 0);
    size_t nl = 0;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint8_t idb[VX_ID_MAX_BYTES];
        size_t n = v.mv_size - 8;
        memcpy(idb, (uint8_t *)v.mv_data + 8, n);
        MDB_val old = {n, idb};
        assert_int_equal(mdb_cursor_put(cur, &k, &old, MDB_CURRENT), 0);
        nl++;
    }
    assert_int_equal(nl, N + 1);
    mdb_cursor_close(cur);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    st = open_store(dir, NULL);
    assert_int_equal(vx_store_rbegin(st, &t), 0);
    for (uint64_t i = 0; i < N; i++) {
        vx_point_id got, want;
        uint64_t version = 0;
        vx_id_from_uint(&want, i * 7);
        assert_int_equal(vx_store_hit_by_label(t, i, &got, &version), 0);
        assert_true(vx_id_equal(&got, &want));
        assert_true(version == 1000 + i);
        vx_record rec;
        assert_int_equal(vx_store_get_by_label(t, i, &got, &rec), 0);
        assert_true(rec.version == 1000 + i && rec.label == i);
    }
    vx_point_id got;
    uint64_t version;
    assert_int_equal(vx_store_hit_by_label(t, slabel, &got, &version), 0);
    assert_true(vx_id_equal(&got, &sid) && version == 77);
    vx_store_rend(t);
    uint64_t d1, a1;
    assert_int_equal(vx_store_digest(st, &d1, &a1), 0);
    assert_true(d0 == d1 && a0 == a1);
    vx_store_close(st);
    /* and it stays format 2: opened again, nothing to upgrade */
    st = open_store(dir, NULL);
    vx_store_close(st);
    rm_dir(dir);
}

/* ---- foreign formats -------------------------------------------------------------- */

static void test_foreign_format(void **state)
{
    char dir[64];
    make_dir(dir);
    vx_store *st = open_store(dir, NULL);
    vx_store_close(st);

    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    uint32_t two = 99;
    MDB_val k = {6, "format"}, v = {sizeof two, &two};
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    char err[VX_STORE_ERRMSG_LEN] = "";
    st = NULL;
    assert_int_equal(vx_store_open(dir, NULL, &st, err), VX_EFORMAT);
    assert_null(st);
    if (strstr(err, "format") == NULL) fail_msg("message does not say format: %s", err);
    rm_dir(dir);

    /* a file that is not LMDB at all is refused, not mapped */
    make_dir(dir);
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 4096; i++) fputc("not an lmdb file "[i % 17], f);
    fclose(f);
    err[0] = '\0';
    assert_true(vx_store_open(dir, NULL, &st, err) < 0);
    assert_true(err[0] != '\0');
    rm_dir(dir);
}

/* ---- durability across kill -9 ---------------------------------------------------- */

static void crash_child(const char *dir, int fd)
{
    vx_store *st;
    char err[VX_STORE_ERRMSG_LEN];
    if (vx_store_open(dir, NULL, &st, err) != 0) _exit(10);
    uint64_t a;
    if (vx_store_applied(st, &a, NULL) != 0) _exit(11);
    for (uint64_t i = a + 1; i < a + 1000000; i++) {
        vx_store_txn *t;
        if (vx_store_wbegin(st, &t) != 0) _exit(12);
        for (uint64_t j = 0; j < 10; j++) {
            vx_point_id id;
            vx_id_from_uint(&id, 10 * i + j);
            char payload[64];
            int n = snprintf(payload, sizeof payload, "{\"entry\":%llu,\"j\":%llu}",
                             (unsigned long long)i, (unsigned long long)j);
            float v[4] = {(float)i, (float)j, 0, 1};
            uint64_t label;
            bool existed;
            if (vx_store_put(t, &id, v, 4, payload, (uint32_t)n, i, &label, &existed) != 0) _exit(13);
        }
        if (vx_store_set_applied(t, i, 1) != 0) _exit(14);
        if (vx_store_commit(t) != 0) _exit(15);
        if (write(fd, &i, sizeof i) != (ssize_t)sizeof i) _exit(16);
    }
    _exit(17);
}

/* Read one 8-byte value from the pipe before the deadline; false at EOF. */
static bool read_u64(int fd, uint64_t *out, double deadline)
{
    size_t got = 0;
    while (got < sizeof *out) {
        double left = deadline - vx_test_now();
        if (left <= 0) fail_msg("crash child: no progress before the deadline");
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        assert_true(pr >= 0);
        if (pr == 0) continue;
        ssize_t n = read(fd, (char *)out + got, sizeof *out - got);
        if (n < 0 && errno == EINTR) continue;
        assert_true(n >= 0);
        if (n == 0) return false;
        got += (size_t)n;
    }
    return true;
}

static void verify_after_crash(const char *dir, uint64_t last_seen, uint64_t *applied)
{
    vx_store *st = open_store(dir, NULL);
    uint64_t a, term;
    assert_int_equal(vx_store_applied(st, &a, &term), 0);
    if (a < last_seen) fail_msg("applied %llu < %llu acknowledged", (unsigned long long)a, (unsigned long long)last_seen);
    assert_true(term == 1);
    uint64_t count = vx_store_count(st);
    if (count != 10 * a) fail_msg("count %llu, want %llu", (unsigned long long)count, (unsigned long long)(10 * a));
    vx_store_txn *t;
    vx_record rec;
    vx_point_id id;
    assert_int_equal(vx_store_rbegin(st, &t), 0);
    for (uint64_t i = 1; i <= a; i++) {
        for (uint64_t j = 0; j < 10; j++) {
            vx_id_from_uint(&id, 10 * i + j);
            int rc = vx_store_get(t, &id, &rec);
            if (rc != 0) fail_msg("entry %llu point %llu: %d", (unsigned long long)i, (unsigned long long)(10 * i + j), rc);
            char payload[64];
            int n = snprintf(payload, sizeof payload, "{\"entry\":%llu,\"j\":%llu}",
                             (unsigned long long)i, (unsigned long long)j);
            assert_int_equal(rec.payload_len, n);
            assert_memory_equal(rec.payload, payload, (size_t)n);
            assert_true(rec.version == i);
            assert_int_equal(rec.dim, 4);
        }
    }
    /* nothing of the entry after applied, nor past it */
    count_ctx cc = {0};
    vx_id_from_uint(&id, 10 * (a + 1));
    assert_int_equal(vx_store_get(t, &id, &rec), VX_ENOTFOUND);
    assert_int_equal(vx_store_iterate(t, &id, count_cb, &cc), 0);
    assert_int_equal(cc.n, 0);
    vx_store_rend(t);
    vx_store_close(st);
    *applied = a;
}

static void test_crash_durability(void **state)
{
    char dir[64];
    make_dir(dir);
    uint64_t base = vx_test_seed(5);
    uint64_t applied = 0;
    for (int round = 0; round < 5; round++) {
        vx_rng rng;
        vx_rng_seed(&rng, base * 31 + (uint64_t)round + 0xc4a5);
        uint64_t target = 50 + vx_rng_below(&rng, 251);
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            crash_child(dir, p[1]);
        }
        close(p[1]);
        double deadline = vx_test_now() + 30;
        uint64_t last = applied, seen = 0, v;
        while (seen < target) {
            if (!read_u64(p[0], &v, deadline)) {
                int status;
                waitpid(pid, &status, 0);
                fail_msg("crash child exited early (status 0x%x) after %llu entries", status,
                         (unsigned long long)seen);
            }
            assert_true(v == last + 1); /* resumes at applied+1, one entry per commit */
            last = v;
            seen++;
        }
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        close(p[0]);
        uint64_t prev = applied;
        verify_after_crash(dir, last, &applied);
        fprintf(stderr, "crash round %d: target %llu, last acked %llu, applied %llu (was %llu)\n",
                round, (unsigned long long)target, (unsigned long long)last,
                (unsigned long long)applied, (unsigned long long)prev);
    }
    rm_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_round_trip),
        cmocka_unit_test(test_applied_atomic),
        cmocka_unit_test(test_iterate_order),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_fail_stop),
        cmocka_unit_test(test_corruption_detected),
        cmocka_unit_test(test_upgrade_format1),
        cmocka_unit_test(test_foreign_format),
        cmocka_unit_test(test_crash_durability),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
