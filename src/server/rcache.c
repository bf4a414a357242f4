/*
 * rcache.c - search result cache with TinyLFU admission and request
 * coalescing (rcache.h).
 */
#include "server/rcache.h"

#include "base/err.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUCKETS 1024   /* per shard */
#define SKETCH_W 1024  /* counters per sketch row */
#define SKETCH_ROWS 4
#define GENS 1024      /* collection generation slots (hash-striped) */

typedef struct entry {
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* LRU, most recent first */
    uint64_t h, gen, expires_ms;
    char *key; /* collection, NUL, key bytes */
    size_t klen;
    char *body;
    size_t blen;
} entry;

struct vx_rcache_token { /* an identical search in flight */
    struct vx_rcache_token *next;
    uint64_t h, gen;
    char *key;
    size_t klen;
    bool done;
    char *body; /* the leader's answer, NULL if it failed */
    size_t blen;
    int refs; /* leader + waiters */
};

typedef struct shard {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    entry *tab[BUCKETS];
    entry lru; /* sentinel */
    size_t bytes, cap;
    uint8_t sketch[SKETCH_ROWS][SKETCH_W];
    uint32_t events;
    vx_rcache_token *flights;
} shard;

struct vx_rcache {
    size_t max_bytes;
    unsigned ttl_ms;
    shard sh[VX_RCACHE_SHARDS];
    _Atomic uint64_t gens[GENS];
    _Atomic uint64_t hits, misses, coalesced, admitted, rejected, evicted, expired;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int vx_rcache_new(size_t max_bytes, unsigned ttl_ms, vx_rcache **out)
{
    *out = NULL;
    if (max_bytes == 0) return 0; /* off */
    vx_rcache *c = calloc(1, sizeof *c);
    if (c == NULL) return VX_ENOMEM;
    c->max_bytes = max_bytes;
    c->ttl_ms = ttl_ms ? ttl_ms : 200;
    for (int i = 0; i < VX_RCACHE_SHARDS; i++) {
        shard *s = &c->sh[i];
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cv, NULL);
        s->lru.next = s->lru.prev = &s->lru;
        s->cap = max_bytes / VX_RCACHE_SHARDS;
    }
    *out = c;
    return 0;
}

static void entry_free(entry *e)
{
    free(e->key);
    free(e->body);
    free(e);
}

void vx_rcache_free(vx_rcache *c)
{
    if (c == NULL) return;
    for (int i = 0; i < VX_RCACHE_SHARDS; i++) {
        shard *s = &c->sh[i];
        for (entry *e = s->lru.next, *n; e != &s->lru; e = n) {
            n = e->next;
            entry_free(e);
        }
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
    }
    free(c);
}

/* ---- the frequency sketch (count-min of saturating counters) ---------------------- */

static void sketch_add(shard *s, uint64_t h)
{
    for (int r = 0; r < SKETCH_ROWS; r++) {
        uint8_t *ctr = &s->sketch[r][mix(h + (uint64_t)r * 0x9e3779b97f4a7c15ull) % SKETCH_W];
        if (*ctr < 15) (*ctr)++;
    }
    if (++s->events >= 10 * SKETCH_W) { /* age: recent popularity counts */
        s->events = 0;
        for (int r = 0; r < SKETCH_ROWS; r++)
            for (int i = 0; i < SKETCH_W; i++) s->sketch[r][i] >>= 1;
    }
}

static unsigned sketch_freq(const shard *s, uint64_t h)
{
    unsigned f = 15;
    for (int r = 0; r < SKETCH_ROWS; r++) {
        unsigned v = s->sketch[r][mix(h + (uint64_t)r * 0x9e3779b97f4a7c15ull) % SKETCH_W];
        if (v < f) f = v;
    }
    return f;
}

/* ---- entries ------------------------------------------------------------------------- */

static size_t entry_size(const entry *e) { return sizeof *e + e->klen + e->blen; }

static void unlink_entry(vx_rcache *c, shard *s, entry *e)
{
    entry **pp = &s->tab[e->h % BUCKETS];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    s->bytes -= entry_size(e);
    (void)c;
}

static void lru_front(shard *s, entry *e)
{
    e->next = s->lru.next;
    e->prev = &s->lru;
    s->lru.next->prev = e;
    s->lru.next = e;
}

static entry *find(shard *s, uint64_t h, const char *key, size_t klen)
{
    for (entry *e = s->tab[h % BUCKETS]; e; e = e->hnext)
        if (e->h == h && e->klen == klen && memcmp(e->key, key, klen) == 0) return e;
    return NULL;
}

/* Offer an answer; TinyLFU decides against the LRU victims. */
static void offer(vx_rcache *c, shard *s, uint64_t h, const char *key, size_t klen, uint64_t gen,
                  const char *body, size_t blen)
{
    size_t need = sizeof(entry) + klen + blen;
    if (need > s->cap) {
        atomic_fetch_add(&c->rejected, 1);
        return;
    }
    entry *old = find(s, h, key, klen);
    if (old) {
        unlink_entry(c, s, old);
        entry_free(old);
    }
    unsigned f = sketch_freq(s, h);
    while (s->bytes + need > s->cap) {
        entry *victim = s->lru.prev;
        if (victim == &s->lru) break;
        if (sketch_freq(s, victim->h) >= f) {
            atomic_fetch_add(&c->rejected, 1);
            return;
        }
        unlink_entry(c, s, victim);
        entry_free(victim);
        atomic_fetch_add(&c->evicted, 1);
    }
    entry *e = calloc(1, sizeof *e);
    char *k = malloc(klen), *b = malloc(blen ? blen : 1);
    if (e == NULL || k == NULL || b == NULL) {
        free(e);
        free(k);
        free(b);
        return;
    }
    memcpy(k, key, klen);
    memcpy(b, body, blen);
    *e = (entry){.h = h, .gen = gen, .expires_ms = now_ms() + c->ttl_ms, .key = k, .klen = klen, .body = b, .blen = blen};
    e->hnext = s->tab[h % BUCKETS];
    s->tab[h % BUCKETS] = e;
    lru_front(s, e);
    s->bytes += need;
    atomic_fetch_add(&c->admitted, 1);
}

/* ---- lookups --------------------------------------------------------------------------- */

static _Atomic uint64_t *gen_slot(vx_rcache *c, const char *coll)
{
    return &c->gens[fnv(coll, strlen(coll), 0xcbf29ce484222325ull) % GENS];
}

static char *dup_bytes(const char *p, size_t n)
{
    char *d = malloc(n ? n : 1);
    if (d) memcpy(d, p, n);
    return d;
}

static void token_put(vx_rcache_token *t)
{
    if (--t->refs > 0) return;
    free(t->key);
    free(t->body);
    free(t);
}

vx_rcache_outcome vx_rcache_lookup(vx_rcache *c, const char *coll, const void *key, size_t klen,
                                   char **body, size_t *len, vx_rcache_token **token)
{
    *body = NULL;
    *len = 0;
    *token = NULL;
    if (c == NULL) return VX_RC_MISS;
    uint64_t gen = atomic_load(gen_slot(c, coll));
    size_t cl = strlen(coll) + 1, fl = cl + klen;
    char *full = malloc(fl);
    if (full == NULL) return VX_RC_MISS;
    memcpy(full, coll, cl);
    memcpy(full + cl, key, klen);
    uint64_t h = fnv(full, fl, 0xcbf29ce484222325ull);
    shard *s = &c->sh[mix(h) % VX_RCACHE_SHARDS];
    pthread_mutex_lock(&s->mu);
    sketch_add(s, h);
    entry *e = find(s, h, full, fl);
    if (e) {
        if (e->gen == gen && now_ms() < e->expires_ms) {
            *body = dup_bytes(e->body, e->blen);
            *len = e->blen;
            e->prev->next = e->next;
            e->next->prev = e->prev;
            lru_front(s, e);
            pthread_mutex_unlock(&s->mu);
            free(full);
            if (*body == NULL) return VX_RC_MISS;
            atomic_fetch_add(&c->hits, 1);
            return VX_RC_HIT;
        }
        unlink_entry(c, s, e); /* older than a write, or expired */
        entry_free(e);
        atomic_fetch_add(&c->expired, 1);
    }
    for (vx_rcache_token *t = s->flights; t; t = t->next) {
        if (t->h != h || t->gen != gen || t->klen != fl || memcmp(t->key, full, fl) != 0) continue;
        t->refs++; /* an identical search in flight: wait for its answer */
        while (!t->done) pthread_cond_wait(&s->cv, &s->mu);
        vx_rcache_outcome out = VX_RC_MISS;
        if (t->body && (*body = dup_bytes(t->body, t->blen)) != NULL) {
            *len = t->blen;
            out = VX_RC_HIT;
            atomic_fetch_add(&c->coalesced, 1);
        }
        token_put(t);
        pthread_mutex_unlock(&s->mu);
        free(full);
        if (out == VX_RC_MISS) atomic_fetch_add(&c->misses, 1);
        return out;
    }
    vx_rcache_token *t = calloc(1, sizeof *t);
    if (t == NULL) {
        pthread_mutex_unlock(&s->mu);
        free(full);
        atomic_fetch_add(&c->misses, 1);
        return VX_RC_MISS;
    }
    *t = (vx_rcache_token){.next = s->flights, .h = h, .gen = gen, .key = full, .klen = fl, .refs = 1};
    s->flights = t;
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&c->misses, 1);
    *token = t;
    return VX_RC_LEAD;
}

void vx_rcache_finish(vx_rcache *c, vx_rcache_token *t, const char *body, size_t len)
{
    if (c == NULL || t == NULL) return;
    shard *s = &c->sh[mix(t->h) % VX_RCACHE_SHARDS];
    pthread_mutex_lock(&s->mu);
    for (vx_rcache_token **pp = &s->flights; *pp; pp = &(*pp)->next)
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    if (body) {
        t->body = dup_bytes(body, len);
        t->blen = t->body ? len : 0;
        /* stored under the generation the search began in: if a write
         * completed meanwhile, lookups will not serve it */
        offer(c, s, t->h, t->key, t->klen, t->gen, body, len);
    }
    t->done = true;
    pthread_cond_broadcast(&s->cv);
    token_put(t);
    pthread_mutex_unlock(&s->mu);
}

void vx_rcache_invalidate(vx_rcache *c, const char *coll)
{
    if (c) atomic_fetch_add(gen_slot(c, coll), 1);
}

void vx_rcache_stats_get(vx_rcache *c, vx_rcache_stats *out)
{
    memset(out, 0, sizeof *out);
    if (c == NULL) return;
    out->hits = atomic_load(&c->hits);
    out->misses = atomic_load(&c->misses);
    out->coalesced = atomic_load(&c->coalesced);
    out->admitted = atomic_load(&c->admitted);
    out->rejected = atomic_load(&c->rejected);
    out->evicted = atomic_load(&c->evicted);
    out->expired = atomic_load(&c->expired);
    for (int i = 0; i < VX_RCACHE_SHARDS; i++) {
        pthread_mutex_lock(&c->sh[i].mu);
        out->bytes += c->sh[i].bytes;
        for (entry *e = c->sh[i].lru.next; e != &c->sh[i].lru; e = e->next) out->entries++;
        pthread_mutex_unlock(&c->sh[i].mu);
    }
}
