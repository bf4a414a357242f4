/*
 * pointid.c - see pointid.h.
 */
#include "base/pointid.h"

#include "base/err.h"

#include <stdio.h>
#include <string.h>

void vx_id_from_uint(vx_point_id *id, uint64_t v)
{
    id->len = 9;
    id->b[0] = VX_ID_UINT;
    for (int i = 0; i < 8; i++) id->b[1 + i] = (uint8_t)(v >> (56 - 8 * i));
}

uint64_t vx_id_uint(const vx_point_id *id)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | id->b[1 + i];
    return v;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int vx_id_from_uuid_text(vx_point_id *id, const char *s, size_t n)
{
    static const int dash_at[4] = {8, 13, 18, 23};
    if (n != 36 && n != 32) return VX_EINVAL;
    uint8_t out[16];
    int nib = 0;
    for (size_t i = 0; i < n; i++) {
        if (n == 36 && ((int)i == dash_at[0] || (int)i == dash_at[1] || (int)i == dash_at[2] ||
                        (int)i == dash_at[3])) {
            if (s[i] != '-') return VX_EINVAL;
            continue;
        }
        int v = hexval(s[i]);
        if (v < 0) return VX_EINVAL;
        if (nib % 2 == 0)
            out[nib / 2] = (uint8_t)(v << 4);
        else
            out[nib / 2] |= (uint8_t)v;
        nib++;
    }
    if (nib != 32) return VX_EINVAL;
    id->len = 17;
    id->b[0] = VX_ID_UUID;
    memcpy(id->b + 1, out, 16);
    return 0;
}

/* Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF, no NUL). */
static bool valid_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

int vx_id_from_string(vx_point_id *id, const char *s, size_t n)
{
    if (n == 0 || n > VX_ID_STRING_MAX || !valid_utf8((const uint8_t *)s, n)) return VX_EINVAL;
    id->len = (uint16_t)(1 + n);
    id->b[0] = VX_ID_STRING;
    memcpy(id->b + 1, s, n);
    return 0;
}

int vx_id_from_bytes(vx_point_id *id, const uint8_t *b, size_t n)
{
    if (n < 2 || n > VX_ID_MAX_BYTES) return VX_EINVAL;
    switch (b[0]) {
    case VX_ID_UINT:
        if (n != 9) return VX_EINVAL;
        break;
    case VX_ID_UUID:
        if (n != 17) return VX_EINVAL;
        break;
    case VX_ID_STRING:
        if (!valid_utf8(b + 1, n - 1)) return VX_EINVAL;
        break;
    default:
        return VX_EINVAL;
    }
    id->len = (uint16_t)n;
    memcpy(id->b, b, n);
    return 0;
}

size_t vx_id_format(const vx_point_id *id, char *buf)
{
    switch (vx_id_kind(id)) {
    case VX_ID_UINT:
        return (size_t)snprintf(buf, VX_ID_TEXT_MAX, "%llu", (unsigned long long)vx_id_uint(id));
    case VX_ID_UUID: {
        const uint8_t *u = id->b + 1;
        return (size_t)snprintf(buf, VX_ID_TEXT_MAX,
                                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                                "%02x%02x%02x%02x%02x%02x",
                                u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10],
                                u[11], u[12], u[13], u[14], u[15]);
    }
    case VX_ID_STRING:
        memcpy(buf, id->b + 1, id->len - 1u);
        buf[id->len - 1] = '\0';
        return id->len - 1u;
    }
    buf[0] = '\0';
    return 0;
}

bool vx_id_equal(const vx_point_id *a, const vx_point_id *b)
{
    return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

uint64_t vx_id_hash(const vx_point_id *id)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint16_t i = 0; i < id->len; i++) {
        h ^= id->b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
