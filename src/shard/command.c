/*
 * command.c - encoding and decoding of shard commands (see command.h).
 */
#include "shard/command.h"

#include "base/err.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define HDR 8

static void reserve(vx_cmd_buf *b, size_t more)
{
    if (b->err) return;
    if (b->len + more <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (d == NULL) {
        b->err = VX_ENOMEM;
        return;
    }
    b->data = d;
    b->cap = cap;
}

static void put(vx_cmd_buf *b, const void *p, size_t n)
{
    reserve(b, n);
    if (b->err) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u32(vx_cmd_buf *b, uint32_t v) { put(b, &v, 4); }

/* u32 length + bytes */
static void put_bytes(vx_cmd_buf *b, const void *p, uint32_t n)
{
    put_u32(b, n);
    put(b, p, n);
}

/* Latch `code` as the buffer's error unless one is already there. */
static void refuse(vx_cmd_buf *b, int code)
{
    if (b->err == 0) b->err = code;
}

static void put_id(vx_cmd_buf *b, const vx_point_id *id)
{
    if (id->len < 2 || id->len > VX_ID_MAX_BYTES) {
        refuse(b, VX_EINVAL);
        return;
    }
    uint16_t n = id->len;
    put(b, &n, 2);
    put(b, id->b, n);
}

void vx_cmd_begin(vx_cmd_buf *b, vx_cmd_type type)
{
    memset(b, 0, sizeof(*b));
    b->type = type;
    uint8_t h[HDR] = {'V', VX_CMD_VERSION, (uint8_t)type, 0, 0, 0, 0, 0};
    put(b, h, HDR);
}

static void count_one(vx_cmd_buf *b)
{
    if (b->by_filter) refuse(b, VX_EINVAL); /* a filter or ids, not both */
    if (b->has_tail) refuse(b, VX_EINVAL); /* ids come before the tail */
    if (++b->count > VX_CMD_MAX_BATCH) refuse(b, VX_ERANGE);
}

void vx_cmd_add_point(vx_cmd_buf *b, const vx_point_id *id, const float *vec, uint32_t dim,
                      const char *payload, uint32_t plen)
{
    if (b->type != VX_CMD_UPSERT || dim == 0 || dim > 65536 || plen > VX_CMD_MAX_PAYLOAD) {
        refuse(b, VX_EINVAL);
        return;
    }
    count_one(b);
    put_id(b, id);
    put_u32(b, dim);
    put(b, vec, (size_t)dim * 4);
    put_bytes(b, payload, plen);
}

/* Commands of a JSON tail only: no points, no ids. */
static bool json_only(int type)
{
    return type == VX_CMD_DELETE_FILTER || type == VX_CMD_CREATE_INDEX ||
           type == VX_CMD_DROP_INDEX;
}

void vx_cmd_add_id(vx_cmd_buf *b, const vx_point_id *id)
{
    if (b->type == VX_CMD_UPSERT || json_only(b->type)) {
        refuse(b, VX_EINVAL);
        return;
    }
    count_one(b);
    put_id(b, id);
}

void vx_cmd_set_target_filter(vx_cmd_buf *b, const char *json, uint32_t len)
{
    bool payload_cmd = b->type == VX_CMD_SET_PAYLOAD || b->type == VX_CMD_OVERWRITE_PAYLOAD ||
                       b->type == VX_CMD_DELETE_PAYLOAD_KEYS;
    if (!payload_cmd || b->count != 0 || b->by_filter || b->has_tail ||
        len > VX_CMD_MAX_PAYLOAD) {
        refuse(b, VX_EINVAL);
        return;
    }
    b->by_filter = true;
    if (b->data) b->data[3] = VX_CMD_FLAG_BY_FILTER;
    put_bytes(b, json, len);
}

void vx_cmd_set_json(vx_cmd_buf *b, const char *json, uint32_t len)
{
    if ((b->type != VX_CMD_SET_PAYLOAD && b->type != VX_CMD_OVERWRITE_PAYLOAD &&
         !json_only(b->type)) ||
        len > VX_CMD_MAX_PAYLOAD) {
        refuse(b, VX_EINVAL);
        return;
    }
    if (b->has_tail) {
        refuse(b, VX_EINVAL);
        return;
    }
    b->has_tail = true;
    put_bytes(b, json, len);
}

void vx_cmd_set_keys(vx_cmd_buf *b, const char *const *keys, const uint32_t *lens, uint32_t n)
{
    if (b->type != VX_CMD_DELETE_PAYLOAD_KEYS || n > VX_CMD_MAX_BATCH) {
        refuse(b, VX_EINVAL);
        return;
    }
    if (b->has_tail) {
        refuse(b, VX_EINVAL);
        return;
    }
    b->has_tail = true;
    put_u32(b, n);
    for (uint32_t i = 0; i < n; i++) put_bytes(b, keys[i], lens[i]);
}

int vx_cmd_finish(vx_cmd_buf *b, uint8_t **data, size_t *len)
{
    /* libraft's uv backend lays entries out on 8-byte boundaries and
     * requires buffer lengths that are multiples of 8: zero padding */
    static const uint8_t zeros[8] = {0};
    bool needs_tail = b->type == VX_CMD_SET_PAYLOAD || b->type == VX_CMD_OVERWRITE_PAYLOAD ||
                      b->type == VX_CMD_DELETE_PAYLOAD_KEYS || json_only(b->type);
    if (needs_tail && !b->has_tail && b->err == 0) b->err = VX_EINVAL; /* incomplete command */
    if (b->len % 8) put(b, zeros, 8 - b->len % 8);
    int rc = b->err;
    if (rc == 0) {
        memcpy(b->data + 4, &b->count, 4);
        *data = b->data;
        *len = b->len;
        b->data = NULL;
    }
    vx_cmd_discard(b);
    return rc;
}

void vx_cmd_discard(vx_cmd_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* ---- decoding ---------------------------------------------------------------- */

/* The end of the command: at most 7 zero bytes of padding remain. */
static bool at_end(const vx_cmd_reader *r)
{
    size_t left = (size_t)(r->end - r->p);
    if (left >= 8) return false;
    for (size_t i = 0; i < left; i++)
        if (r->p[i] != 0) return false;
    return true;
}

static int take(vx_cmd_reader *r, void *out, size_t n)
{
    if ((size_t)(r->end - r->p) < n) return VX_EINVAL;
    memcpy(out, r->p, n);
    r->p += n;
    return 0;
}

static int take_view(vx_cmd_reader *r, const uint8_t **out, size_t n)
{
    if ((size_t)(r->end - r->p) < n) return VX_EINVAL;
    *out = r->p;
    r->p += n;
    return 0;
}

static int take_id(vx_cmd_reader *r, vx_point_id *id)
{
    uint16_t n;
    const uint8_t *b;
    if (take(r, &n, 2) || take_view(r, &b, n)) return VX_EINVAL;
    return vx_id_from_bytes(id, b, n);
}

int vx_cmd_open(vx_cmd_reader *r, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (len < HDR || p[0] != 'V') return VX_EINVAL;
    if (p[1] != VX_CMD_VERSION) return VX_EFORMAT;
    if (p[2] < VX_CMD_UPSERT || p[2] > VX_CMD_DROP_INDEX) return VX_EINVAL;
    r->type = (vx_cmd_type)p[2];
    r->by_filter = p[3] == VX_CMD_FLAG_BY_FILTER;
    bool payload_cmd = r->type == VX_CMD_SET_PAYLOAD || r->type == VX_CMD_OVERWRITE_PAYLOAD ||
                       r->type == VX_CMD_DELETE_PAYLOAD_KEYS;
    if (p[3] != 0 && !(payload_cmd && r->by_filter)) return VX_EINVAL;
    memcpy(&r->count, p + 4, 4);
    if (r->count > VX_CMD_MAX_BATCH) return VX_EINVAL;
    if ((json_only(r->type) || r->by_filter) && r->count != 0) return VX_EINVAL;
    r->p = p + HDR;
    r->end = p + len;
    r->done = 0;
    return 0;
}

int vx_cmd_next_point(vx_cmd_reader *r, vx_cmd_point *pt)
{
    if (r->type != VX_CMD_UPSERT) return VX_EINVAL;
    if (r->done == r->count) return at_end(r) ? VX_ENOTFOUND : VX_EINVAL;
    const uint8_t *v;
    if (take_id(r, &pt->id) || take(r, &pt->dim, 4) || pt->dim == 0 || pt->dim > 65536 ||
        take_view(r, &v, (size_t)pt->dim * 4) || take(r, &pt->payload_len, 4) ||
        pt->payload_len > VX_CMD_MAX_PAYLOAD)
        return VX_EINVAL;
    pt->vector = v;
    const uint8_t *pl;
    if (take_view(r, &pl, pt->payload_len)) return VX_EINVAL;
    pt->payload = (const char *)pl;
    r->done++;
    return 0;
}

int vx_cmd_next_id(vx_cmd_reader *r, vx_point_id *id)
{
    if (r->type == VX_CMD_UPSERT) return VX_EINVAL;
    if (json_only(r->type)) return VX_ENOTFOUND; /* no ids */
    if (r->done == r->count) return VX_ENOTFOUND;
    if (take_id(r, id)) return VX_EINVAL;
    r->done++;
    return 0;
}

int vx_cmd_json(vx_cmd_reader *r, const char **json, uint32_t *len)
{
    if ((r->type != VX_CMD_SET_PAYLOAD && r->type != VX_CMD_OVERWRITE_PAYLOAD &&
         !json_only(r->type)) ||
        r->done != r->count)
        return VX_EINVAL;
    const uint8_t *p;
    if (take(r, len, 4) || *len > VX_CMD_MAX_PAYLOAD || take_view(r, &p, *len) || !at_end(r))
        return VX_EINVAL;
    *json = (const char *)p;
    return 0;
}

int vx_cmd_target_filter(vx_cmd_reader *r, const char **json, uint32_t *len)
{
    if (!r->by_filter || r->done != r->count) return VX_EINVAL;
    const uint8_t *p;
    if (take(r, len, 4) || *len > VX_CMD_MAX_PAYLOAD || take_view(r, &p, *len)) return VX_EINVAL;
    *json = (const char *)p;
    return 0;
}

int vx_cmd_keys(vx_cmd_reader *r, uint32_t *n)
{
    if (r->type != VX_CMD_DELETE_PAYLOAD_KEYS || r->done != r->count) return VX_EINVAL;
    if (take(r, n, 4) || *n > VX_CMD_MAX_BATCH) return VX_EINVAL;
    return 0;
}

int vx_cmd_key(vx_cmd_reader *r, const char **key, uint32_t *len)
{
    const uint8_t *p;
    if (take(r, len, 4) || *len > VX_CMD_MAX_PAYLOAD || take_view(r, &p, *len)) return VX_EINVAL;
    *key = (const char *)p;
    return 0;
}

int vx_cmd_validate(const void *data, size_t len)
{
    vx_cmd_reader r;
    int rc = vx_cmd_open(&r, data, len);
    if (rc != 0) return rc;
    if (r.type == VX_CMD_UPSERT) {
        vx_cmd_point pt;
        while ((rc = vx_cmd_next_point(&r, &pt)) == 0) {
        }
        return rc == VX_ENOTFOUND ? 0 : rc;
    }
    vx_point_id id;
    while ((rc = vx_cmd_next_id(&r, &id)) == 0) {
    }
    if (rc != VX_ENOTFOUND) return rc;
    if (r.type == VX_CMD_DELETE_IDS) return at_end(&r) ? 0 : VX_EINVAL;
    if (r.by_filter) {
        const char *fj;
        uint32_t fl;
        if ((rc = vx_cmd_target_filter(&r, &fj, &fl)) != 0) return rc;
    }
    if (r.type == VX_CMD_DELETE_PAYLOAD_KEYS) {
        uint32_t n;
        if ((rc = vx_cmd_keys(&r, &n)) != 0) return rc;
        for (uint32_t i = 0; i < n; i++) {
            const char *k;
            uint32_t kl;
            if ((rc = vx_cmd_key(&r, &k, &kl)) != 0) return rc;
        }
        return at_end(&r) ? 0 : VX_EINVAL;
    }
    const char *j;
    uint32_t jl;
    return vx_cmd_json(&r, &j, &jl);
}
