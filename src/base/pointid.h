/*
 * pointid.h - point ids in one canonical binary form.
 *
 * Clients name points by unsigned 64-bit integers or UUIDs (Qdrant) or by
 * strings (the /v1 API).  Everywhere inside Vectron an id is its canonical
 * bytes: one kind byte, then
 *   UINT:   8 bytes, big-endian (so the store's key order is numeric order)
 *   UUID:   16 bytes, as written in the text form
 *   STRING: 1..VX_ID_STRING_MAX bytes of UTF-8
 * Routing hashes these bytes (FNV-1a), so an id lands on the same shard
 * whichever form the client sent it in; "42" the string and 42 the integer
 * are different ids.
 */
#ifndef VX_BASE_POINTID_H
#define VX_BASE_POINTID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { VX_ID_UINT = 1, VX_ID_UUID = 2, VX_ID_STRING = 3 };

#define VX_ID_STRING_MAX 255
#define VX_ID_MAX_BYTES (1 + VX_ID_STRING_MAX)
#define VX_ID_TEXT_MAX (VX_ID_STRING_MAX + 1) /* formatted, with NUL */

typedef struct vx_point_id {
    uint16_t len;
    uint8_t b[VX_ID_MAX_BYTES];
} vx_point_id;

void vx_id_from_uint(vx_point_id *id, uint64_t v);
/* Parse 8-4-4-4-12 hex (either case) or 32 hex digits; VX_EINVAL otherwise. */
int vx_id_from_uuid_text(vx_point_id *id, const char *s, size_t n);
/* A string id: 1..255 bytes of valid UTF-8 without NUL; VX_EINVAL otherwise. */
int vx_id_from_string(vx_point_id *id, const char *s, size_t n);
/* From canonical bytes (as stored); VX_EINVAL when malformed. */
int vx_id_from_bytes(vx_point_id *id, const uint8_t *b, size_t n);

static inline int vx_id_kind(const vx_point_id *id) { return id->len ? id->b[0] : 0; }
/* UINT value (caller checked the kind). */
uint64_t vx_id_uint(const vx_point_id *id);
/* Text form: decimal, lower-case hyphenated UUID, or the string.  buf has
 * VX_ID_TEXT_MAX bytes.  Returns the length. */
size_t vx_id_format(const vx_point_id *id, char *buf);
bool vx_id_equal(const vx_point_id *a, const vx_point_id *b);
/* 64-bit FNV-1a of the canonical bytes: the routing hash. */
uint64_t vx_id_hash(const vx_point_id *id);

#endif
