/*
 * command.h - the shard's replicated commands: the bytes of one Raft entry.
 *
 * One client batch is one entry (one Raft round trip, one LMDB transaction).
 * Encoding, version 1, little-endian:
 *
 *   u8 'V', u8 version (1), u8 type, u8 flags (0), u32 count
 *   UPSERT          count x { id, u32 dim, f32[dim], bytes payload }
 *   DELETE_IDS      count x { id }
 *   SET_PAYLOAD     count x { id }, bytes json-object   (merge top-level keys)
 *   OVERWRITE_PAYLOAD count x { id }, bytes json-object (replace)
 *   DELETE_PAYLOAD_KEYS count x { id }, u32 nkeys, nkeys x bytes key
 *   DELETE_FILTER   (count 0) bytes filter-json (shard/filter.h); every point
 *                   the filter matches at apply time is deleted
 *   CREATE_INDEX    (count 0) bytes {"field_name": k, "field_schema": t}
 *                   (shard/pindex.h; t keyword, integer, float or bool)
 *   DROP_INDEX      (count 0) bytes {"field_name": k}
 * flags bit 0 (VX_CMD_FLAG_BY_FILTER), payload commands only: instead of
 *   ids (count 0) the command carries `bytes filter-json` before its tail,
 *   and applies to every point the filter matches at apply time
 *   where id = u16 len + canonical bytes (base/pointid.h), bytes = u32 len + data,
 *   then 0..7 zero bytes so the length is a multiple of 8 (libraft's uv
 *   backend requires 8-byte-multiple entry buffers: it pads entries on the
 *   wire and on disk, and a shorter buffer shifts the next entry of a batch)
 *
 * Commands are validated when built (on the leader, before proposing) and
 * decoded again on every replica at apply; the decoder checks every length
 * against the buffer and returns VX_EINVAL on anything malformed, so a bad
 * entry is rejected identically everywhere, never half-applied.  Decoded
 * views point into the entry's buffer (zero-copy).
 */
#ifndef VX_SHARD_COMMAND_H
#define VX_SHARD_COMMAND_H

#include "base/pointid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_CMD_VERSION 1
#define VX_CMD_FLAG_BY_FILTER 1u
#define VX_CMD_MAX_BATCH 100000u
#define VX_CMD_MAX_PAYLOAD (64u << 20)

typedef enum {
    VX_CMD_UPSERT = 1,
    VX_CMD_DELETE_IDS = 2,
    VX_CMD_SET_PAYLOAD = 3,
    VX_CMD_OVERWRITE_PAYLOAD = 4,
    VX_CMD_DELETE_PAYLOAD_KEYS = 5,
    VX_CMD_DELETE_FILTER = 6,
    VX_CMD_CREATE_INDEX = 7,
    VX_CMD_DROP_INDEX = 8,
} vx_cmd_type;

/* ---- building ------------------------------------------------------------------ */

typedef struct vx_cmd_buf {
    uint8_t *data;
    size_t len, cap;
    uint32_t count;
    int type;
    bool by_filter; /* payload commands: target the points a filter matches */
    bool has_tail;  /* SET/OVERWRITE: JSON given; DELETE_PAYLOAD_KEYS: keys given */
    int err;       /* first error; the buffer is unusable once set */
} vx_cmd_buf;

void vx_cmd_begin(vx_cmd_buf *b, vx_cmd_type type);
void vx_cmd_add_point(vx_cmd_buf *b, const vx_point_id *id, const float *vec, uint32_t dim,
                      const char *payload, uint32_t payload_len);
void vx_cmd_add_id(vx_cmd_buf *b, const vx_point_id *id);
/* Payload commands: target the points `filter_json` matches (instead of ids;
 * call before the JSON or keys). */
void vx_cmd_set_target_filter(vx_cmd_buf *b, const char *filter_json, uint32_t len);
/* After the ids of SET/OVERWRITE_PAYLOAD; the filter of DELETE_FILTER; the
 * JSON of CREATE_INDEX and DROP_INDEX. */
void vx_cmd_set_json(vx_cmd_buf *b, const char *json, uint32_t len);
/* After the ids of DELETE_PAYLOAD_KEYS. */
void vx_cmd_set_keys(vx_cmd_buf *b, const char *const *keys, const uint32_t *lens, uint32_t n);
/* Finish: returns 0 and hands out the bytes (caller frees with free()), or
 * the first error.  The buffer is reset either way. */
int vx_cmd_finish(vx_cmd_buf *b, uint8_t **data, size_t *len);
void vx_cmd_discard(vx_cmd_buf *b);

/* ---- decoding ------------------------------------------------------------------- */

typedef struct vx_cmd_point {
    vx_point_id id;
    uint32_t dim;
    const void *vector; /* dim float32, unaligned */
    const char *payload;
    uint32_t payload_len;
} vx_cmd_point;

typedef struct vx_cmd_reader {
    const uint8_t *p, *end;
    vx_cmd_type type;
    uint32_t count, done;
    bool by_filter;
} vx_cmd_reader;

/* Check the header; VX_EINVAL / VX_EFORMAT (unknown version). */
int vx_cmd_open(vx_cmd_reader *r, const void *data, size_t len);
/* UPSERT: next point (0), or VX_ENOTFOUND at the end, or VX_EINVAL. */
int vx_cmd_next_point(vx_cmd_reader *r, vx_cmd_point *pt);
/* The id-list commands: next id, VX_ENOTFOUND at the end of the list. */
int vx_cmd_next_id(vx_cmd_reader *r, vx_point_id *id);
/* After all ids: the JSON of SET/OVERWRITE_PAYLOAD, the filter of
 * DELETE_FILTER. */
int vx_cmd_json(vx_cmd_reader *r, const char **json, uint32_t *len);
/* Payload commands with by_filter: the target filter (read before the tail). */
int vx_cmd_target_filter(vx_cmd_reader *r, const char **json, uint32_t *len);
/* After all ids: the key list of DELETE_PAYLOAD_KEYS; key i via vx_cmd_key. */
int vx_cmd_keys(vx_cmd_reader *r, uint32_t *n);
int vx_cmd_key(vx_cmd_reader *r, const char **key, uint32_t *len);
/* Validate a whole command (every element) without using it. */
int vx_cmd_validate(const void *data, size_t len);

#endif
