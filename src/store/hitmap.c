/*
 * hitmap.c - see hitmap.h.
 */
#include "store/hitmap.h"

#include "base/err.h"
#include "base/hugemem.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define EMPTY UINT64_MAX

/* a long id's pointer in b must be 8-byte aligned (see hitmap.h) */
_Static_assert(offsetof(vx_hitmap_slot, b) % 8 == 0, "hitmap slot: b must be 8-byte aligned");
#define LONG_ID 255

static size_t home(const vx_hitmap *m, uint64_t label)
{
    return (size_t)((label * 0x9E3779B97F4A7C15ull) >> 32) & (m->cap - 1);
}

static size_t cap_for(size_t n)
{
    size_t cap = 16;
    while (cap - cap / 4 < n) cap *= 2;
    return cap;
}

static int alloc_slots(vx_hitmap *m, size_t cap)
{
    /* every search resolves its hits at random slots: huge pages once the
     * table is 2 MiB (52,429 points or more) */
    m->slot = vx_huge_alloc(cap * sizeof(vx_hitmap_slot));
    if (m->slot == NULL) return VX_ENOMEM;
    for (size_t i = 0; i < cap; i++) m->slot[i].label = EMPTY;
    m->cap = cap;
    m->n = 0;
    return 0;
}

int vx_hitmap_init(vx_hitmap *m, size_t n)
{
    memset(m, 0, sizeof(*m));
    return alloc_slots(m, cap_for(n));
}

static uint8_t *long_id(const vx_hitmap_slot *s)
{
    uint8_t *p;
    memcpy(&p, s->b, sizeof p);
    return p;
}

void vx_hitmap_free_shallow(vx_hitmap *m)
{
    vx_huge_free(m->slot, m->cap * sizeof(vx_hitmap_slot));
    memset(m, 0, sizeof(*m));
}

void vx_hitmap_free(vx_hitmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slot[i].label != EMPTY && m->slot[i].len == LONG_ID) free(long_id(&m->slot[i]));
    vx_hitmap_free_shallow(m);
}

bool vx_hitmap_needs_grow(const vx_hitmap *m, size_t n) { return m->n + n > m->cap - m->cap / 4; }

/* Place a slot known to be absent (growing: no long-id copies). */
static void place(vx_hitmap *m, const vx_hitmap_slot *s)
{
    size_t i = home(m, s->label);
    while (m->slot[i].label != EMPTY) i = (i + 1) & (m->cap - 1);
    m->slot[i] = *s;
    m->n++;
}

int vx_hitmap_grow(const vx_hitmap *m, size_t n, vx_hitmap *out)
{
    memset(out, 0, sizeof(*out));
    if (alloc_slots(out, cap_for(m->n + n)) != 0) return VX_ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slot[i].label != EMPTY) place(out, &m->slot[i]);
    return 0;
}

static size_t find(const vx_hitmap *m, uint64_t label)
{
    if (m->cap == 0) return SIZE_MAX;
    for (size_t i = home(m, label);; i = (i + 1) & (m->cap - 1)) {
        if (m->slot[i].label == label) return i;
        if (m->slot[i].label == EMPTY) return SIZE_MAX;
    }
}

int vx_hitmap_put(vx_hitmap *m, uint64_t label, uint64_t version, const uint8_t *id, size_t len)
{
    size_t i = find(m, label);
    vx_hitmap_slot s = {.label = label, .version = version};
    if (len <= VX_HITMAP_INLINE) {
        s.len = (uint8_t)len;
        memcpy(s.b, id, len);
    } else {
        uint8_t *p = malloc(2 + len);
        if (p == NULL) return VX_ENOMEM;
        uint16_t l16 = (uint16_t)len;
        memcpy(p, &l16, 2);
        memcpy(p + 2, id, len);
        s.len = LONG_ID;
        memcpy(s.b, &p, sizeof p);
    }
    if (i != SIZE_MAX) {
        if (m->slot[i].len == LONG_ID) free(long_id(&m->slot[i]));
        m->slot[i] = s;
        return 0;
    }
    place(m, &s);
    return 0;
}

void vx_hitmap_del(vx_hitmap *m, uint64_t label)
{
    size_t i = find(m, label);
    if (i == SIZE_MAX) return;
    if (m->slot[i].len == LONG_ID) free(long_id(&m->slot[i]));
    /* backward shift: pull later entries of the run into the hole when
     * their home does not lie cyclically in (hole, position] */
    size_t mask = m->cap - 1;
    for (size_t j = (i + 1) & mask; m->slot[j].label != EMPTY; j = (j + 1) & mask) {
        size_t h = home(m, m->slot[j].label);
        bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (stays) continue;
        m->slot[i] = m->slot[j];
        i = j;
    }
    m->slot[i].label = EMPTY;
    m->n--;
}

bool vx_hitmap_get(const vx_hitmap *m, uint64_t label, uint64_t *version, const uint8_t **id,
                   size_t *len)
{
    size_t i = find(m, label);
    if (i == SIZE_MAX) return false;
    const vx_hitmap_slot *s = &m->slot[i];
    *version = s->version;
    if (s->len == LONG_ID) {
        const uint8_t *p = long_id(s);
        uint16_t l16;
        memcpy(&l16, p, 2);
        *id = p + 2;
        *len = l16;
    } else {
        *id = s->b;
        *len = s->len;
    }
    return true;
}

void vx_hitmap_prefetch(const vx_hitmap *m, uint64_t label)
{
    if (m->cap) __builtin_prefetch(&m->slot[home(m, label)]);
}

size_t vx_hitmap_bytes(const vx_hitmap *m)
{
    size_t b = m->cap * sizeof(vx_hitmap_slot);
    for (size_t i = 0; i < m->cap; i++)
        if (m->slot[i].label != EMPTY && m->slot[i].len == LONG_ID) {
            uint16_t l16;
            memcpy(&l16, long_id(&m->slot[i]), 2);
            b += 2 + (size_t)l16;
        }
    return b;
}
