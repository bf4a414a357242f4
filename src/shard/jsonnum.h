/*
 * jsonnum.h - exact integers through cJSON.
 *
 * cJSON keeps every number as a double, exact only up to 2^53, but point ids
 * are unsigned 64-bit integers.  Number nodes appear in a pre-order walk of
 * a parsed tree in the order their literals appear in the text, so one more
 * pass over the text gives every long integer literal (16 or more digits,
 * no sign, fraction or exponent) its exact digits, kept in the node's
 * otherwise unused valuestring (cJSON_Delete frees it).  Readers of ids use
 * vx_json_u64; writers that re-serialize a tree call vx_json_exact_raw first
 * so the digits, not the double, are printed.
 */
#ifndef VX_SHARD_JSONNUM_H
#define VX_SHARD_JSONNUM_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Attach the exact digits of long integer literals of `text` (the text j
 * was parsed from) to j's number nodes. */
void vx_json_attach_literals(cJSON *j, const char *text, size_t len);
/* The exact value of an integer number node: true and *out when it is a
 * non-negative integer that fits 64 bits. */
bool vx_json_u64(const cJSON *j, uint64_t *out);
/* Turn the number nodes carrying digits in j (and below it, not its
 * siblings) into raw nodes printing those digits. */
void vx_json_exact_raw(cJSON *j);

#endif
