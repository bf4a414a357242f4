/*
 * labelmap.c - see labelmap.h.
 */
#include "index/labelmap.h"

#include "base/err.h"

#include <stdlib.h>
#include <string.h>

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static int labelmap_alloc(vx_labelmap *m, size_t cap)
{
    m->keys = malloc(sizeof(uint64_t) * cap);
    m->vals = malloc(sizeof(uint32_t) * cap);
    if (m->keys == NULL || m->vals == NULL) {
        free(m->keys);
        free(m->vals);
        return VX_ENOMEM;
    }
    memset(m->vals, 0xff, sizeof(uint32_t) * cap);
    m->cap = cap;
    m->len = 0;
    return 0;
}

int vx_labelmap_init(vx_labelmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2) cap <<= 1;
    return labelmap_alloc(m, cap);
}

void vx_labelmap_close(vx_labelmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

uint32_t vx_labelmap_get(const vx_labelmap *m, uint64_t label)
{
    size_t mask = m->cap - 1;
    for (size_t i = mix64(label) & mask;; i = (i + 1) & mask) {
        if (m->vals[i] == VX_NO_NODE) return VX_NO_NODE;
        if (m->keys[i] == label) return m->vals[i];
    }
}

static int labelmap_grow(vx_labelmap *m)
{
    vx_labelmap old = *m;
    int rc = labelmap_alloc(m, old.cap * 2);
    if (rc != 0) {
        *m = old;
        return rc;
    }
    for (size_t i = 0; i < old.cap; i++) {
        if (old.vals[i] == VX_NO_NODE) continue;
        size_t mask = m->cap - 1;
        size_t j = mix64(old.keys[i]) & mask;
        while (m->vals[j] != VX_NO_NODE) j = (j + 1) & mask;
        m->keys[j] = old.keys[i];
        m->vals[j] = old.vals[i];
        m->len++;
    }
    free(old.keys);
    free(old.vals);
    return 0;
}

int vx_labelmap_put(vx_labelmap *m, uint64_t label, uint32_t node, uint32_t *old)
{
    if ((m->len + 1) * 2 > m->cap) {
        int rc = labelmap_grow(m);
        if (rc != 0) return rc;
    }
    size_t mask = m->cap - 1;
    size_t i = mix64(label) & mask;
    for (;; i = (i + 1) & mask) {
        if (m->vals[i] == VX_NO_NODE) break;
        if (m->keys[i] == label) {
            *old = m->vals[i];
            m->vals[i] = node;
            return 0;
        }
    }
    m->keys[i] = label;
    m->vals[i] = node;
    m->len++;
    *old = VX_NO_NODE;
    return 0;
}

uint32_t vx_labelmap_del(vx_labelmap *m, uint64_t label)
{
    size_t mask = m->cap - 1;
    size_t i = mix64(label) & mask;
    for (;; i = (i + 1) & mask) {
        if (m->vals[i] == VX_NO_NODE) return VX_NO_NODE;
        if (m->keys[i] == label) break;
    }
    uint32_t removed = m->vals[i];
    /* Backward-shift: pull later members of the probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->vals[j] != VX_NO_NODE; j = (j + 1) & mask) {
        size_t home = mix64(m->keys[j]) & mask;
        /* j may move to hole iff home is not cyclically within (hole, j]. */
        int between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!between) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->vals[hole] = VX_NO_NODE;
    m->len--;
    return removed;
}

size_t vx_labelmap_bytes(const vx_labelmap *m)
{
    return m->cap * (sizeof(uint64_t) + sizeof(uint32_t));
}
