/*
 * test_command.c - the replicated shard command codec (shard/command.h):
 * build/decode round trips of every command type with every id kind,
 * vx_cmd_validate on every prefix and on trailing bytes (commands are
 * zero-padded to a multiple of 8 bytes), header
 * mutations (rejected, or accepted only when the whole command then also
 * decodes), the version byte, the batch limit, and builder misuse.
 *
 * Every decoded input lives in a malloc'd buffer of exactly its length, so
 * a sanitizer build catches any read past the end.  Randomness comes from
 * vx_test_seed (printed; VX_SEED to replay).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/pointid.h"
#include "shard/command.h"
#include "testutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------------------------- */

/* id number i of a rotating kind: UINT, UUID, STRING (ASCII), STRING (UTF-8). */
static void make_id(vx_point_id *id, unsigned i)
{
    char text[64];
    switch (i % 4) {
    case 0:
        vx_id_from_uint(id, (uint64_t)i * 0x9e3779b97f4a7c15ull);
        break;
    case 1:
        snprintf(text, sizeof text, "%08x-0000-4000-8000-%012x", i, i * 7919u);
        assert_int_equal(vx_id_from_uuid_text(id, text, strlen(text)), 0);
        break;
    case 2:
        snprintf(text, sizeof text, "point-%u", i);
        assert_int_equal(vx_id_from_string(id, text, strlen(text)), 0);
        break;
    default:
        snprintf(text, sizeof text, "\xc3\xa9t\xc3\xa9-\xe2\x82\xac%u", i); /* "été-€<i>" */
        assert_int_equal(vx_id_from_string(id, text, strlen(text)), 0);
        break;
    }
}

/* A copy of n bytes in a buffer of exactly n bytes (n == 0: one byte, unused). */
static uint8_t *exact_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    if (n) memcpy(c, p, n);
    return c;
}

static int validate_prefix(const uint8_t *data, size_t n)
{
    uint8_t *c = exact_copy(data, n);
    int rc = vx_cmd_validate(c, n);
    free(c);
    return rc;
}

/* What may follow the last element: 0..7 zero bytes of padding. */
static bool padding_ok(const uint8_t *p, const uint8_t *end)
{
    if (end - p >= 8) return false;
    for (; p < end; p++)
        if (*p != 0) return false;
    return true;
}

/* Decode everything with the reader functions; 0 iff the whole command
 * decodes and only padding follows.  *content (optional): where the last
 * element ends. */
static int walk_content(const uint8_t *data, size_t len, size_t *content)
{
    vx_cmd_reader r;
    int rc = vx_cmd_open(&r, data, len);
    if (rc != 0) return rc;
    if (r.type == VX_CMD_UPSERT) {
        vx_cmd_point pt;
        uint32_t n = 0;
        while ((rc = vx_cmd_next_point(&r, &pt)) == 0) n++;
        if (rc != VX_ENOTFOUND) return rc;
        if (n != r.count || !padding_ok(r.p, r.end)) return VX_EINVAL;
    } else {
        vx_point_id id;
        uint32_t n = 0;
        while ((rc = vx_cmd_next_id(&r, &id)) == 0) n++;
        if (rc != VX_ENOTFOUND) return rc;
        if (n != r.count) return VX_EINVAL;
        if (r.type == VX_CMD_DELETE_PAYLOAD_KEYS) {
            uint32_t nk;
            if ((rc = vx_cmd_keys(&r, &nk)) != 0) return rc;
            for (uint32_t i = 0; i < nk; i++) {
                const char *k;
                uint32_t kl;
                if ((rc = vx_cmd_key(&r, &k, &kl)) != 0) return rc;
            }
        } else if (r.type != VX_CMD_DELETE_IDS) {
            const char *j;
            uint32_t jl;
            if ((rc = vx_cmd_json(&r, &j, &jl)) != 0) return rc;
        }
        if (!padding_ok(r.p, r.end)) return VX_EINVAL;
    }
    if (content) *content = (size_t)(r.p - data);
    return 0;
}

static int walk(const uint8_t *data, size_t len) { return walk_content(data, len, NULL); }

/* ---- the sample commands --------------------------------------------------------------------- */

#define NPTS 9
static const uint32_t k_dims[3] = {1, 16, 129};
static const char *const k_payloads[3] = {"", "{\"a\":1}",
                                          "{\"tag\":\"x\",\"n\":[1,2,3],\"s\":\"\xc3\xa9\"}"};

static float vec_value(unsigned i, uint32_t d)
{
    return (float)i * 0.5f - (float)d * 0.25f + 0.125f;
}

static void build_upsert(uint8_t **data, size_t *len)
{
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    float vec[129];
    for (unsigned i = 0; i < NPTS; i++) {
        vx_point_id id;
        make_id(&id, i);
        uint32_t dim = k_dims[i % 3];
        for (uint32_t d = 0; d < dim; d++) vec[d] = vec_value(i, d);
        const char *pl = k_payloads[(i / 3) % 3];
        vx_cmd_add_point(&b, &id, vec, dim, pl, (uint32_t)strlen(pl));
    }
    /* a payload with a NUL byte in it: payloads are bytes */
    vx_point_id id;
    make_id(&id, NPTS);
    for (uint32_t d = 0; d < 16; d++) vec[d] = vec_value(NPTS, d);
    vx_cmd_add_point(&b, &id, vec, 16, "a\0b", 3);
    assert_int_equal(vx_cmd_finish(&b, data, len), 0);
    assert_null(b.data);
}

static void check_upsert(const uint8_t *data, size_t len)
{
    vx_cmd_reader r;
    assert_int_equal(vx_cmd_open(&r, data, len), 0);
    assert_int_equal(r.type, VX_CMD_UPSERT);
    assert_int_equal(r.count, NPTS + 1);
    vx_point_id idx;
    assert_int_equal(vx_cmd_next_id(&r, &idx), VX_EINVAL); /* not an id list */
    vx_cmd_point pt;
    for (unsigned i = 0; i <= NPTS; i++) {
        assert_int_equal(vx_cmd_next_point(&r, &pt), 0);
        vx_point_id id;
        make_id(&id, i);
        assert_true(vx_id_equal(&pt.id, &id));
        assert_int_equal(vx_id_kind(&pt.id), vx_id_kind(&id));
        uint32_t dim = i < NPTS ? k_dims[i % 3] : 16;
        assert_int_equal(pt.dim, dim);
        float v[129];
        memcpy(v, pt.vector, (size_t)dim * 4); /* unaligned view */
        for (uint32_t d = 0; d < dim; d++) assert_true(v[d] == vec_value(i, d));
        if (i < NPTS) {
            const char *pl = k_payloads[(i / 3) % 3];
            assert_int_equal(pt.payload_len, strlen(pl));
            if (pt.payload_len) assert_memory_equal(pt.payload, pl, pt.payload_len);
        } else {
            assert_int_equal(pt.payload_len, 3);
            assert_memory_equal(pt.payload, "a\0b", 3);
        }
    }
    assert_int_equal(vx_cmd_next_point(&r, &pt), VX_ENOTFOUND);
    assert_int_equal(vx_cmd_next_point(&r, &pt), VX_ENOTFOUND); /* stays at the end */
}

#define NIDS 7

static void add_ids(vx_cmd_buf *b, unsigned first)
{
    for (unsigned i = 0; i < NIDS; i++) {
        vx_point_id id;
        make_id(&id, first + i);
        vx_cmd_add_id(b, &id);
    }
}

static void check_ids(vx_cmd_reader *r, vx_cmd_type type, unsigned first)
{
    assert_int_equal(r->type, type);
    assert_int_equal(r->count, NIDS);
    vx_cmd_point pt;
    assert_int_equal(vx_cmd_next_point(r, &pt), VX_EINVAL); /* not an UPSERT */
    for (unsigned i = 0; i < NIDS; i++) {
        vx_point_id got, want;
        assert_int_equal(vx_cmd_next_id(r, &got), 0);
        make_id(&want, first + i);
        assert_true(vx_id_equal(&got, &want));
    }
    vx_point_id id;
    assert_int_equal(vx_cmd_next_id(r, &id), VX_ENOTFOUND);
}

static void build_delete_ids(uint8_t **data, size_t *len)
{
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_DELETE_IDS);
    add_ids(&b, 100);
    assert_int_equal(vx_cmd_finish(&b, data, len), 0);
}

static const char k_json[] = "{\"color\":\"red\",\"n\":3,\"nested\":{\"x\":[1,2]}}";

static void build_json_cmd(vx_cmd_type type, uint8_t **data, size_t *len)
{
    vx_cmd_buf b;
    vx_cmd_begin(&b, type);
    add_ids(&b, 200);
    vx_cmd_set_json(&b, k_json, (uint32_t)strlen(k_json));
    assert_int_equal(vx_cmd_finish(&b, data, len), 0);
}

static const char *const k_keys[4] = {"color", "", "n\xc3\xa9", "nested"};

static void build_delete_keys(uint8_t **data, size_t *len)
{
    uint32_t lens[4];
    for (int i = 0; i < 4; i++) lens[i] = (uint32_t)strlen(k_keys[i]);
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_DELETE_PAYLOAD_KEYS);
    add_ids(&b, 300);
    vx_cmd_set_keys(&b, k_keys, lens, 4);
    assert_int_equal(vx_cmd_finish(&b, data, len), 0);
}

typedef void (*build_fn)(uint8_t **data, size_t *len);

static void build_set(uint8_t **data, size_t *len)
{
    build_json_cmd(VX_CMD_SET_PAYLOAD, data, len);
}
static void build_overwrite(uint8_t **data, size_t *len)
{
    build_json_cmd(VX_CMD_OVERWRITE_PAYLOAD, data, len);
}

static const build_fn k_builders[5] = {build_upsert, build_delete_ids, build_set, build_overwrite,
                                       build_delete_keys};

/* ---- round trips ----------------------------------------------------------------------------- */

static void test_upsert_round_trip(void **state)
{
    uint8_t *data;
    size_t len;
    build_upsert(&data, &len);
    assert_int_equal(data[0], 'V');
    assert_int_equal(data[1], VX_CMD_VERSION);
    assert_int_equal(data[2], VX_CMD_UPSERT);
    assert_int_equal(data[3], 0);
    assert_int_equal(len % 8, 0);
    assert_int_equal(vx_cmd_validate(data, len), 0);
    uint8_t *c = exact_copy(data, len);
    check_upsert(c, len);
    free(c);
    free(data);

    /* an empty batch is a valid command */
    vx_cmd_buf b;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    assert_int_equal(vx_cmd_finish(&b, &data, &len), 0);
    assert_int_equal(len, 8); /* the header: no padding needed */
    assert_int_equal(vx_cmd_validate(data, len), 0);
    free(data);
}

static void test_delete_ids_round_trip(void **state)
{
    uint8_t *data;
    size_t len;
    build_delete_ids(&data, &len);
    assert_int_equal(vx_cmd_validate(data, len), 0);
    uint8_t *c = exact_copy(data, len);
    vx_cmd_reader r;
    assert_int_equal(vx_cmd_open(&r, c, len), 0);
    check_ids(&r, VX_CMD_DELETE_IDS, 100);
    const char *j;
    uint32_t jl, nk;
    assert_int_equal(vx_cmd_json(&r, &j, &jl), VX_EINVAL);
    assert_int_equal(vx_cmd_keys(&r, &nk), VX_EINVAL);
    assert_true(padding_ok(r.p, r.end));
    free(c);
    free(data);
}

static void test_payload_json_round_trip(void **state)
{
    const vx_cmd_type types[2] = {VX_CMD_SET_PAYLOAD, VX_CMD_OVERWRITE_PAYLOAD};
    for (int t = 0; t < 2; t++) {
        uint8_t *data;
        size_t len;
        build_json_cmd(types[t], &data, &len);
        assert_int_equal(data[2], types[t]);
        assert_int_equal(vx_cmd_validate(data, len), 0);
        uint8_t *c = exact_copy(data, len);
        vx_cmd_reader r;
        assert_int_equal(vx_cmd_open(&r, c, len), 0);
        const char *j;
        uint32_t jl;
        assert_int_equal(vx_cmd_json(&r, &j, &jl), VX_EINVAL); /* ids first */
        check_ids(&r, types[t], 200);
        uint32_t nk;
        assert_int_equal(vx_cmd_keys(&r, &nk), VX_EINVAL);
        assert_int_equal(vx_cmd_json(&r, &j, &jl), 0);
        assert_int_equal(jl, strlen(k_json));
        assert_memory_equal(j, k_json, jl);
        assert_true(padding_ok(r.p, r.end));
        free(c);
        free(data);
    }
}

static void test_delete_keys_round_trip(void **state)
{
    uint8_t *data;
    size_t len;
    build_delete_keys(&data, &len);
    assert_int_equal(vx_cmd_validate(data, len), 0);
    uint8_t *c = exact_copy(data, len);
    vx_cmd_reader r;
    assert_int_equal(vx_cmd_open(&r, c, len), 0);
    uint32_t nk;
    assert_int_equal(vx_cmd_keys(&r, &nk), VX_EINVAL); /* ids first */
    check_ids(&r, VX_CMD_DELETE_PAYLOAD_KEYS, 300);
    const char *j;
    uint32_t jl;
    assert_int_equal(vx_cmd_json(&r, &j, &jl), VX_EINVAL);
    assert_int_equal(vx_cmd_keys(&r, &nk), 0);
    assert_int_equal(nk, 4);
    for (uint32_t i = 0; i < nk; i++) {
        const char *k;
        uint32_t kl;
        assert_int_equal(vx_cmd_key(&r, &k, &kl), 0);
        assert_int_equal(kl, strlen(k_keys[i]));
        if (kl) assert_memory_equal(k, k_keys[i], kl);
    }
    assert_true(padding_ok(r.p, r.end));
    free(c);
    free(data);
}

/* ---- malformed input ------------------------------------------------------------------------- */

/* A built command is padded with zeros to a multiple of 8 bytes (libraft's
 * uv backend needs that); the decoder accepts 0..7 zero bytes after the
 * last element.  So a prefix is valid exactly when it keeps every element. */
static void test_truncation_and_trailing(void **state)
{
    for (int t = 0; t < 5; t++) {
        uint8_t *data;
        size_t len, content = 0;
        k_builders[t](&data, &len);
        assert_int_equal(len % 8, 0);
        assert_int_equal(vx_cmd_validate(data, len), 0);
        assert_int_equal(walk_content(data, len, &content), 0);
        assert_true(content <= len && len - content < 8);
        for (size_t i = content; i < len; i++) assert_int_equal(data[i], 0);
        for (size_t n = 0; n < len; n++) {
            int rc = validate_prefix(data, n);
            uint8_t *c = exact_copy(data, n);
            int w = walk(c, n);
            free(c);
            if (n < content) {
                if (rc == 0)
                    fail_msg("type %d: prefix of %zu of %zu bytes validates", t + 1, n, len);
                assert_true(rc < 0);
                assert_int_not_equal(w, 0);
            } else { /* only padding cut */
                assert_int_equal(rc, 0);
                assert_int_equal(w, 0);
            }
        }
        /* more zero bytes after the elements than padding allows */
        for (size_t extra = 1; extra <= 16; extra++) {
            uint8_t *c = malloc(len + extra);
            memcpy(c, data, len);
            memset(c + len, 0, extra);
            int want = len - content + extra <= 7 ? 0 : VX_EINVAL;
            assert_int_equal(vx_cmd_validate(c, len + extra), want);
            assert_int_equal(walk(c, len + extra) == 0, want == 0);
            /* a non-zero byte after the elements never passes */
            c[len + extra - 1] = 0x01;
            assert_int_equal(vx_cmd_validate(c, len + extra), VX_EINVAL);
            assert_int_not_equal(walk(c, len + extra), 0);
            free(c);
        }
        if (len > content) { /* non-zero padding */
            data[len - 1] = 0x80;
            assert_int_equal(vx_cmd_validate(data, len), VX_EINVAL);
            assert_int_not_equal(walk(data, len), 0);
        }
        free(data);
    }
    assert_int_equal(vx_cmd_validate(NULL, 0), VX_EINVAL);
}

static void test_header_mutations(void **state)
{
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(41));
    unsigned accepted = 0, rejected = 0;
    for (int t = 0; t < 5; t++) {
        uint8_t *data;
        size_t len;
        k_builders[t](&data, &len);
        uint8_t *c = exact_copy(data, len);
        for (int it = 0; it < 400; it++) {
            memcpy(c, data, len);
            size_t pos = (size_t)vx_rng_below(&rng, 8);
            uint8_t x = (uint8_t)(1 + vx_rng_below(&rng, 255));
            if (it % 4 == 0) x = (uint8_t)(1u << vx_rng_below(&rng, 8)); /* single-bit flips too */
            c[pos] ^= x;
            int rc = vx_cmd_validate(c, len);
            assert_int_equal(vx_cmd_validate(c, len), rc); /* deterministic */
            int w = walk(c, len);
            if (rc == 0) {
                accepted++;
                if (w != 0)
                    fail_msg("type %d: byte %zu ^ 0x%02x validates but does not decode", t + 1, pos,
                             x);
            } else {
                rejected++;
                assert_true(rc < 0);
                if (w == 0)
                    fail_msg("type %d: byte %zu ^ 0x%02x rejected (%d) but decodes", t + 1, pos, x,
                             rc);
            }
            /* what each header byte means */
            if (pos == 0) assert_int_equal(rc, VX_EINVAL);
            if (pos == 1) assert_int_equal(rc, VX_EFORMAT);
            if (pos == 3) assert_int_equal(rc, VX_EINVAL);
            if (pos == 2 && (c[2] < 1 || c[2] > 5)) assert_int_equal(rc, VX_EINVAL);
            /* another count: UPSERT and DELETE_IDS end right after the last
             * element, so too few leaves bytes over and too many runs out */
            if (pos >= 4 && (t == 0 || t == 1)) assert_int_equal(rc, VX_EINVAL);
        }
        free(c);
        free(data);
    }
    print_message("header mutations: %u rejected, %u accepted (and decoded)\n", rejected, accepted);
    assert_true(rejected > 0);
}

static void test_version_and_batch_limit(void **state)
{
    for (int t = 0; t < 5; t++) {
        uint8_t *data;
        size_t len;
        k_builders[t](&data, &len);
        const uint8_t versions[4] = {0, 2, 3, 0xff};
        for (int v = 0; v < 4; v++) {
            data[1] = versions[v];
            assert_int_equal(vx_cmd_validate(data, len), VX_EFORMAT);
            vx_cmd_reader r;
            assert_int_equal(vx_cmd_open(&r, data, len), VX_EFORMAT);
        }
        data[1] = VX_CMD_VERSION;
        assert_int_equal(vx_cmd_validate(data, len), 0);
        /* bad magic is not a version problem */
        data[0] = 'v';
        assert_int_equal(vx_cmd_validate(data, len), VX_EINVAL);
        free(data);
    }

    /* a header claiming more than VX_CMD_MAX_BATCH elements */
    const uint32_t counts[3] = {VX_CMD_MAX_BATCH + 1, VX_CMD_MAX_BATCH * 2, UINT32_MAX};
    for (int t = 1; t <= 5; t++)
        for (int i = 0; i < 3; i++) {
            uint8_t h[8] = {'V', VX_CMD_VERSION, (uint8_t)t, 0};
            memcpy(h + 4, &counts[i], 4);
            vx_cmd_reader r;
            assert_int_equal(vx_cmd_open(&r, h, 8), VX_EINVAL);
            assert_int_equal(vx_cmd_validate(h, 8), VX_EINVAL);
        }

    /* the builder stops at the limit: exactly MAX_BATCH is fine, one more is not */
    vx_cmd_buf b;
    vx_point_id id;
    vx_cmd_begin(&b, VX_CMD_DELETE_IDS);
    for (uint32_t i = 0; i < VX_CMD_MAX_BATCH; i++) {
        vx_id_from_uint(&id, i);
        vx_cmd_add_id(&b, &id);
    }
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(vx_cmd_finish(&b, &data, &len), 0);
    assert_int_equal(vx_cmd_validate(data, len), 0);
    free(data);
    vx_cmd_begin(&b, VX_CMD_DELETE_IDS);
    for (uint32_t i = 0; i <= VX_CMD_MAX_BATCH; i++) {
        vx_id_from_uint(&id, i);
        vx_cmd_add_id(&b, &id);
    }
    data = NULL;
    assert_int_equal(vx_cmd_finish(&b, &data, &len), VX_ERANGE);
    assert_null(data);
    assert_null(b.data);
}

/* finish() fails with the first error; nothing is handed out. */
static void expect_finish_fails(vx_cmd_buf *b, int want)
{
    uint8_t *data = NULL;
    size_t len = 12345;
    assert_int_equal(vx_cmd_finish(b, &data, &len), want);
    assert_null(data);
    assert_int_equal(len, 12345);
    assert_null(b->data);
    assert_int_equal(b->len, 0);
    assert_int_equal(b->err, 0); /* reset */
}

static void test_builder_errors(void **state)
{
    vx_cmd_buf b;
    vx_point_id id;
    vx_id_from_uint(&id, 7);
    float vec[4] = {1, 2, 3, 4};

    vx_cmd_begin(&b, VX_CMD_UPSERT); /* dim 0 */
    vx_cmd_add_point(&b, &id, vec, 0, "", 0);
    expect_finish_fails(&b, VX_EINVAL);

    vx_cmd_begin(&b, VX_CMD_UPSERT); /* dim above the limit */
    vx_cmd_add_point(&b, &id, vec, 65537, "", 0);
    expect_finish_fails(&b, VX_EINVAL);

    vx_cmd_begin(&b, VX_CMD_UPSERT); /* an id in an UPSERT */
    vx_cmd_add_point(&b, &id, vec, 4, "{}", 2);
    vx_cmd_add_id(&b, &id);
    vx_cmd_add_point(&b, &id, vec, 4, "{}", 2);
    expect_finish_fails(&b, VX_EINVAL);

    vx_cmd_begin(&b, VX_CMD_DELETE_IDS); /* JSON on DELETE_IDS */
    vx_cmd_add_id(&b, &id);
    vx_cmd_set_json(&b, "{}", 2);
    expect_finish_fails(&b, VX_EINVAL);

    vx_cmd_begin(&b, VX_CMD_DELETE_IDS); /* a point on DELETE_IDS */
    vx_cmd_add_point(&b, &id, vec, 4, "", 0);
    expect_finish_fails(&b, VX_EINVAL);

    const char *keys[1] = {"k"};
    uint32_t lens[1] = {1};
    vx_cmd_begin(&b, VX_CMD_SET_PAYLOAD); /* keys on SET_PAYLOAD */
    vx_cmd_add_id(&b, &id);
    vx_cmd_set_keys(&b, keys, lens, 1);
    expect_finish_fails(&b, VX_EINVAL);

    vx_cmd_begin(&b, VX_CMD_DELETE_PAYLOAD_KEYS); /* JSON on DELETE_PAYLOAD_KEYS */
    vx_cmd_add_id(&b, &id);
    vx_cmd_set_json(&b, "{}", 2);
    expect_finish_fails(&b, VX_EINVAL);

    vx_cmd_begin(&b, VX_CMD_DELETE_IDS); /* a malformed id */
    vx_point_id bad = {.len = 1, .b = {VX_ID_UINT}};
    vx_cmd_add_id(&b, &bad);
    expect_finish_fails(&b, VX_EINVAL);

    vx_cmd_begin(&b, VX_CMD_UPSERT); /* the first error wins */
    vx_cmd_add_point(&b, &id, vec, 0, "", 0);
    vx_cmd_add_point(&b, &bad, vec, 4, "", 0);
    expect_finish_fails(&b, VX_EINVAL);

    /* a discarded buffer can be begun again */
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    vx_cmd_add_point(&b, &id, vec, 4, "", 0);
    vx_cmd_discard(&b);
    assert_null(b.data);
    uint8_t *data;
    size_t len;
    vx_cmd_begin(&b, VX_CMD_UPSERT);
    vx_cmd_add_point(&b, &id, vec, 4, "", 0);
    assert_int_equal(vx_cmd_finish(&b, &data, &len), 0);
    assert_int_equal(vx_cmd_validate(data, len), 0);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upsert_round_trip),
        cmocka_unit_test(test_delete_ids_round_trip),
        cmocka_unit_test(test_payload_json_round_trip),
        cmocka_unit_test(test_delete_keys_round_trip),
        cmocka_unit_test(test_truncation_and_trailing),
        cmocka_unit_test(test_header_mutations),
        cmocka_unit_test(test_version_and_batch_limit),
        cmocka_unit_test(test_builder_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
