/*
 * test_pointid.c - canonical point ids: the three kinds, their text forms,
 * the byte order the store relies on, strict UTF-8 for string ids, and the
 * FNV-1a routing hash.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/err.h"
#include "base/pointid.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Compare canonical bytes the way LMDB's default key order does: memcmp of
 * the common prefix, then the shorter key first. */
static int bytes_cmp(const vx_point_id *a, const vx_point_id *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->b, b->b, n);
    if (c != 0) return c;
    return (int)a->len - (int)b->len;
}

static void test_uint_round_trip(void **state)
{
    static const struct {
        uint64_t v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {1, "1"},
        {42, "42"},
        {UINT64_MAX, "18446744073709551615"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vx_point_id id, back;
        char buf[VX_ID_TEXT_MAX];
        vx_id_from_uint(&id, cases[i].v);
        assert_int_equal(id.len, 9);
        assert_int_equal(vx_id_kind(&id), VX_ID_UINT);
        assert_true(vx_id_uint(&id) == cases[i].v);
        assert_int_equal(vx_id_format(&id, buf), strlen(cases[i].text));
        assert_string_equal(buf, cases[i].text);
        assert_int_equal(vx_id_from_bytes(&back, id.b, id.len), 0);
        assert_true(vx_id_equal(&id, &back));
        assert_true(vx_id_uint(&back) == cases[i].v);
        assert_true(vx_id_hash(&id) == vx_id_hash(&back));
    }
    /* big-endian on the wire: 0x0102030405060708 is written in that order */
    vx_point_id id;
    vx_id_from_uint(&id, 0x0102030405060708ull);
    const uint8_t want[9] = {VX_ID_UINT, 1, 2, 3, 4, 5, 6, 7, 8};
    assert_memory_equal(id.b, want, 9);
}

static void test_uint_byte_order_is_numeric_order(void **state)
{
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(11));
    for (int i = 0; i < 20000; i++) {
        uint64_t a = vx_rng_next(&rng), b = vx_rng_next(&rng);
        /* small and nearby values too, where only low bytes differ */
        if (i % 4 == 1) a >>= vx_rng_below(&rng, 64), b >>= vx_rng_below(&rng, 64);
        if (i % 4 == 2) b = a + vx_rng_below(&rng, 3) - 1;
        vx_point_id ia, ib;
        vx_id_from_uint(&ia, a);
        vx_id_from_uint(&ib, b);
        int c = bytes_cmp(&ia, &ib);
        int want = a < b ? -1 : a > b ? 1 : 0;
        assert_int_equal(c < 0 ? -1 : c > 0 ? 1 : 0, want);
    }
    /* every uint sorts before every uuid, which sorts before every string */
    vx_point_id u, q, s;
    vx_id_from_uint(&u, UINT64_MAX);
    assert_int_equal(vx_id_from_uuid_text(&q, "00000000000000000000000000000000", 32), 0);
    assert_int_equal(vx_id_from_string(&s, "\x01", 1), 0);
    assert_true(bytes_cmp(&u, &q) < 0);
    assert_true(bytes_cmp(&q, &s) < 0);
}

static void test_uuid_parse_and_format(void **state)
{
    const char *hy = "123e4567-e89b-12d3-a456-426614174000";
    const char *hy_up = "123E4567-E89B-12D3-A456-426614174000";
    const char *plain = "123e4567e89b12d3a456426614174000";
    const char *plain_mixed = "123E4567e89B12d3A456426614174000";
    vx_point_id a, b, c, d, back;
    char buf[VX_ID_TEXT_MAX];
    assert_int_equal(vx_id_from_uuid_text(&a, hy, strlen(hy)), 0);
    assert_int_equal(vx_id_from_uuid_text(&b, hy_up, strlen(hy_up)), 0);
    assert_int_equal(vx_id_from_uuid_text(&c, plain, strlen(plain)), 0);
    assert_int_equal(vx_id_from_uuid_text(&d, plain_mixed, strlen(plain_mixed)), 0);
    assert_int_equal(a.len, 17);
    assert_int_equal(vx_id_kind(&a), VX_ID_UUID);
    assert_true(vx_id_equal(&a, &b));
    assert_true(vx_id_equal(&a, &c));
    assert_true(vx_id_equal(&a, &d));
    assert_true(vx_id_hash(&a) == vx_id_hash(&d));
    const uint8_t want[17] = {VX_ID_UUID, 0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3,
                              0xa4,       0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00};
    assert_memory_equal(a.b, want, 17);
    assert_int_equal(vx_id_format(&a, buf), 36);
    assert_string_equal(buf, hy);
    assert_int_equal(vx_id_format(&b, buf), 36);
    assert_string_equal(buf, hy); /* upper-case input, lower-case output */
    assert_int_equal(vx_id_from_bytes(&back, a.b, a.len), 0);
    assert_true(vx_id_equal(&a, &back));

    /* all-ones */
    assert_int_equal(vx_id_from_uuid_text(&a, "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", 36), 0);
    vx_id_format(&a, buf);
    assert_string_equal(buf, "ffffffff-ffff-ffff-ffff-ffffffffffff");
}

static void test_uuid_malformed(void **state)
{
    static const char *bad[] = {
        "",
        "123e4567-e89b-12d3-a456-42661417400",   /* 35 */
        "123e4567-e89b-12d3-a456-4266141740000", /* 37 */
        "123e4567e89b12d3a45642661417400",       /* 31 */
        "123e4567e89b12d3a4564266141740000",     /* 33 */
        "123e4567e-89b-12d3-a456-426614174000",  /* hyphen one late */
        "123e456-7e89b-12d3-a456-426614174000",  /* hyphen one early */
        "123e4567-e89b-12d3-a456_426614174000",  /* wrong separator */
        "123e4567-e89b-12d3-a4564-26614174000",  /* last hyphen misplaced */
        "123e4567+e89b+12d3+a456+426614174000",
        "123g4567-e89b-12d3-a456-426614174000", /* non-hex */
        "123e4567-e89b-12d3-a456-42661417400z",
        "123e4567 e89b 12d3 a456 426614174000",
        "123e4567-e89b-12d3-a456426614174000-",  /* 36 chars, last hyphen at the end */
        "123e4567e89b12d3a4564266141740-0",     /* hyphen in the 32-digit form */
        "{23e4567-e89b-12d3-a456-426614174000",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vx_point_id id;
        if (vx_id_from_uuid_text(&id, bad[i], strlen(bad[i])) != VX_EINVAL)
            fail_msg("accepted malformed uuid \"%s\"", bad[i]);
    }
    /* an embedded NUL inside the given length is not hex either */
    char nul[33];
    memcpy(nul, "123e4567e89b12d3a456426614174000", 33);
    nul[5] = '\0';
    vx_point_id id;
    assert_int_equal(vx_id_from_uuid_text(&id, nul, 32), VX_EINVAL);
}

static void string_ok(const char *s, size_t n)
{
    vx_point_id id, back;
    char buf[VX_ID_TEXT_MAX];
    if (vx_id_from_string(&id, s, n) != 0) fail_msg("rejected valid string id of %zu bytes", n);
    assert_int_equal(id.len, 1 + n);
    assert_int_equal(vx_id_kind(&id), VX_ID_STRING);
    assert_int_equal(vx_id_format(&id, buf), n);
    assert_memory_equal(buf, s, n);
    assert_int_equal(buf[n], '\0');
    assert_int_equal(vx_id_from_bytes(&back, id.b, id.len), 0);
    assert_true(vx_id_equal(&id, &back));
}

static void string_bad(const char *what, const char *s, size_t n)
{
    vx_point_id id;
    int rc = vx_id_from_string(&id, s, n);
    if (rc != VX_EINVAL) fail_msg("string id %s: got %d, want VX_EINVAL", what, rc);
    /* the same bytes behind a STRING kind byte are rejected from storage too */
    if (n + 1 <= VX_ID_MAX_BYTES) {
        uint8_t b[VX_ID_MAX_BYTES + 1];
        b[0] = VX_ID_STRING;
        memcpy(b + 1, s, n);
        rc = vx_id_from_bytes(&id, b, n + 1);
        if (rc != VX_EINVAL) fail_msg("bytes of string id %s: got %d, want VX_EINVAL", what, rc);
    }
}

static void test_string_ids(void **state)
{
    string_ok("a", 1);
    string_ok("point-7", 7);
    string_ok("caf\xc3\xa9", 5);                  /* U+00E9 */
    string_ok("\xe2\x82\xac", 3);                 /* U+20AC */
    string_ok("\xed\x9f\xbf", 3);                 /* U+D7FF, just below the surrogates */
    string_ok("\xee\x80\x80", 3);                 /* U+E000, just above */
    string_ok("\xef\xbf\xbf", 3);                 /* U+FFFF */
    string_ok("\xf0\x90\x80\x80", 4);             /* U+10000 */
    string_ok("\xf4\x8f\xbf\xbf", 4);             /* U+10FFFF */
    string_ok("\xc2\x80", 2);                     /* U+0080 */
    string_ok("\xe0\xa0\x80", 3);                 /* U+0800 */
    string_ok("\x7f", 1);

    char buf[300];
    memset(buf, 'x', sizeof buf);
    string_ok(buf, 255);
    string_bad("of 256 bytes", buf, 256);
    /* 255 bytes of multi-byte characters: 85 three-byte euro signs */
    for (int i = 0; i < 85; i++) memcpy(buf + 3 * i, "\xe2\x82\xac", 3);
    string_ok(buf, 255);
    /* ...and a character cut by the length limit is a truncated sequence */
    memset(buf, 'x', sizeof buf);
    memcpy(buf + 253, "\xe2\x82\xac", 3);
    string_bad("cut at 255", buf, 255);

    string_bad("empty", "", 0);
    string_bad("with NUL", "ab\0cd", 5);
    string_bad("NUL only", "\0", 1);
    string_bad("overlong NUL C0 80", "\xc0\x80", 2);
    string_bad("overlong C1 BF", "\xc1\xbf", 2);
    string_bad("overlong E0 80 80", "\xe0\x80\x80", 3);
    string_bad("overlong E0 9F BF", "\xe0\x9f\xbf", 3);
    string_bad("overlong F0 8F BF BF", "\xf0\x8f\xbf\xbf", 4);
    string_bad("surrogate ED A0 80", "\xed\xa0\x80", 3);
    string_bad("surrogate ED BF BF", "\xed\xbf\xbf", 3);
    string_bad("above U+10FFFF F4 90 80 80", "\xf4\x90\x80\x80", 4);
    string_bad("lead F5", "\xf5\x80\x80\x80", 4);
    string_bad("lead F8", "\xf8\x88\x80\x80\x80", 5);
    string_bad("lead FF", "\xff", 1);
    string_bad("lone continuation", "\x80", 1);
    string_bad("continuation after ascii", "a\xbf", 2);
    string_bad("truncated 2-byte", "\xc3", 1);
    string_bad("truncated 3-byte", "\xe2\x82", 2);
    string_bad("truncated 4-byte", "\xf0\x90\x80", 3);
    string_bad("truncated then ascii", "\xe2\x82z", 3);
    string_bad("truncated mid-string", "ab\xf0\x90" "cd", 6);
}

static void test_from_bytes_rejects(void **state)
{
    vx_point_id id;
    uint8_t b[VX_ID_MAX_BYTES + 2];
    memset(b, 0, sizeof b);
    /* unknown kinds */
    for (int kind = 0; kind < 256; kind++) {
        if (kind == VX_ID_UINT || kind == VX_ID_UUID || kind == VX_ID_STRING) continue;
        b[0] = (uint8_t)kind;
        b[1] = 'a';
        assert_int_equal(vx_id_from_bytes(&id, b, 9), VX_EINVAL);
        assert_int_equal(vx_id_from_bytes(&id, b, 2), VX_EINVAL);
    }
    memset(b, 'a', sizeof b);
    /* wrong lengths per kind */
    b[0] = VX_ID_UINT;
    for (size_t n = 0; n <= 20; n++)
        assert_int_equal(vx_id_from_bytes(&id, b, n), n == 9 ? 0 : VX_EINVAL);
    b[0] = VX_ID_UUID;
    for (size_t n = 0; n <= 30; n++)
        assert_int_equal(vx_id_from_bytes(&id, b, n), n == 17 ? 0 : VX_EINVAL);
    b[0] = VX_ID_STRING;
    assert_int_equal(vx_id_from_bytes(&id, b, 0), VX_EINVAL);
    assert_int_equal(vx_id_from_bytes(&id, b, 1), VX_EINVAL); /* empty string */
    assert_int_equal(vx_id_from_bytes(&id, b, 2), 0);
    assert_int_equal(vx_id_from_bytes(&id, b, VX_ID_MAX_BYTES), 0);
    assert_int_equal(id.len, VX_ID_MAX_BYTES);
    assert_int_equal(vx_id_from_bytes(&id, b, VX_ID_MAX_BYTES + 1), VX_EINVAL);
}

static void test_string_42_is_not_uint_42(void **state)
{
    vx_point_id s, u;
    assert_int_equal(vx_id_from_string(&s, "42", 2), 0);
    vx_id_from_uint(&u, 42);
    assert_false(vx_id_equal(&s, &u));
    assert_true(vx_id_hash(&s) != vx_id_hash(&u));
    char a[VX_ID_TEXT_MAX], b[VX_ID_TEXT_MAX];
    vx_id_format(&s, a);
    vx_id_format(&u, b);
    assert_string_equal(a, b); /* same text, different ids */
}

static void test_hash_is_fnv1a(void **state)
{
    /* Hand-computed FNV-1a 64 (offset basis 0xcbf29ce484222325, prime
     * 0x100000001b3) of the canonical bytes. */
    vx_point_id id;
    assert_int_equal(vx_id_from_string(&id, "a", 1), 0); /* 03 61 */
    assert_true(vx_id_hash(&id) == 0x08364f07b4eef7e9ull);
    assert_int_equal(vx_id_from_string(&id, "ab", 2), 0); /* 03 61 62 */
    assert_true(vx_id_hash(&id) == 0xe33fd518720ea131ull);
    vx_id_from_uint(&id, 0); /* 01 00 00 00 00 00 00 00 00 */
    assert_true(vx_id_hash(&id) == 0x529a2cdc8ff533acull);

    /* and the definition, over random ids of every kind */
    vx_rng rng;
    vx_rng_seed(&rng, vx_test_seed(11) ^ 0x4a5);
    for (int i = 0; i < 1000; i++) {
        uint8_t raw[17];
        for (int k = 0; k < 17; k++) raw[k] = (uint8_t)vx_rng_next(&rng);
        char text[33];
        for (int k = 0; k < 16; k++) snprintf(text + 2 * k, 3, "%02x", raw[k]);
        switch (i % 3) {
        case 0:
            vx_id_from_uint(&id, vx_rng_next(&rng));
            break;
        case 1:
            assert_int_equal(vx_id_from_uuid_text(&id, text, 32), 0);
            break;
        default:
            assert_int_equal(vx_id_from_string(&id, text, 1 + vx_rng_below(&rng, 32)), 0);
        }
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t k = 0; k < id.len; k++) {
            h ^= id.b[k];
            h *= 0x100000001b3ull;
        }
        assert_true(vx_id_hash(&id) == h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uint_round_trip),
        cmocka_unit_test(test_uint_byte_order_is_numeric_order),
        cmocka_unit_test(test_uuid_parse_and_format),
        cmocka_unit_test(test_uuid_malformed),
        cmocka_unit_test(test_string_ids),
        cmocka_unit_test(test_from_bytes_rejects),
        cmocka_unit_test(test_string_42_is_not_uint_42),
        cmocka_unit_test(test_hash_is_fnv1a),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
