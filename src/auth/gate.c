/*
 * gate.c - see gate.h.
 */
#define _GNU_SOURCE
#include "auth/gate.h"

#include "auth/token.h"
#include "base/err.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STRIPES 64
#define STRIPE_CAP 4096 /* buckets per stripe before idle ones are dropped */
#define MAX_KIDS 8
#define PW_WAIT_MS 2000
#define LOGIN_MAX 1000 /* the most attempts a window may allow (each log holds that many times) */

/* ---- the credentials, as loaded --------------------------------------------------------- */

typedef struct cuser {
    char *name, *pwhash;
    vx_role role;
    char *scope; /* NUL-separated, NULL: every collection */
    size_t scope_len, nscope;
    uint64_t gen, created_ms;
} cuser;

typedef struct ckey {
    char id[33];
    uint8_t digest[32];
    vx_role role;
    char *scope;
    size_t scope_len, nscope;
    double rate, burst;
    char *label;
    uint64_t created_ms;
} ckey;

typedef struct creds {
    cuser *users;
    size_t nusers;
    ckey *keys;
    size_t nkeys;
    char **revoked;
    size_t nrevoked;
    /* open-addressing indexes (value + 1; 0 empty), power-of-two sizes */
    uint32_t *uidx, *kidx, *ridx;
    size_t usz, ksz, rsz;
    uint64_t epoch;
} creds;

typedef struct bucket {
    char *name;
    double tokens, rate, burst;
    uint64_t last_ns;
    struct bucket *next;
} bucket;

typedef struct stripe {
    pthread_mutex_t mu;
    bucket **tab;
    size_t cap, n;
} stripe;

/* The login attempts of one address or one account in the last window:
 * their times, oldest first (at most `cap`, the limit for its kind). */
typedef struct alog {
    char *name;
    unsigned n, cap;
    struct alog *next;
    uint64_t t[];
} alog;

#define ALOG_HEADS 256
typedef struct astripe {
    pthread_mutex_t mu;
    alog *head[ALOG_HEADS];
    size_t n;
} astripe;

struct vx_gate {
    vx_gate_options opt;
    char issuer[65], audience[65];
    pthread_rwlock_t lock;
    creds *cr;
    uint8_t admin_digest[32];
    bool has_admin;
    vx_jwt_key keys[MAX_KIDS]; /* keys[0] signs */
    size_t nkeys;
    char dummy_hash[crypto_pwhash_STRBYTES]; /* unknown users cost the same as known ones */
    pthread_mutex_t pw_mu;
    pthread_cond_t pw_cv;
    unsigned pw_running;
    stripe stripes[STRIPES];
    astripe astripes[STRIPES];
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int64_t wall_s(void) { return (int64_t)time(NULL); }

static void creds_free(creds *c)
{
    if (c == NULL) return;
    for (size_t i = 0; i < c->nusers; i++) {
        free(c->users[i].name);
        if (c->users[i].pwhash) sodium_memzero(c->users[i].pwhash, strlen(c->users[i].pwhash));
        free(c->users[i].pwhash);
        free(c->users[i].scope);
    }
    for (size_t i = 0; i < c->nkeys; i++) {
        free(c->keys[i].scope);
        free(c->keys[i].label);
    }
    for (size_t i = 0; i < c->nrevoked; i++) free(c->revoked[i]);
    free(c->users);
    free(c->keys);
    free(c->revoked);
    free(c->uidx);
    free(c->kidx);
    free(c->ridx);
    free(c);
}

static size_t pow2_for(size_t n)
{
    size_t s = 16;
    while (s < 2 * n + 1) s <<= 1;
    return s;
}

static char *scope_copy(char **colls, size_t n, size_t *len)
{
    if (n == 0) {
        *len = 0;
        return NULL;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += strlen(colls[i]) + 1;
    char *s = malloc(total), *p = s;
    if (s == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(colls[i]) + 1;
        memcpy(p, colls[i], l);
        p += l;
    }
    *len = total;
    return s;
}

typedef const char *(*name_of)(const creds *c, size_t i);
static const char *user_name(const creds *c, size_t i) { return c->users[i].name; }
static const char *key_name(const creds *c, size_t i) { return c->keys[i].id; }
static const char *rev_name(const creds *c, size_t i) { return c->revoked[i]; }

static uint32_t *index_build(const creds *c, size_t n, name_of nm, size_t *sz)
{
    *sz = pow2_for(n);
    uint32_t *t = calloc(*sz, sizeof *t);
    if (t == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *k = nm(c, i);
        size_t at = fnv(k, strlen(k)) & (*sz - 1);
        while (t[at]) at = (at + 1) & (*sz - 1);
        t[at] = (uint32_t)i + 1;
    }
    return t;
}

static long index_find(const creds *c, const uint32_t *t, size_t sz, name_of nm, const char *k, size_t klen)
{
    if (t == NULL) return -1;
    for (size_t at = fnv(k, klen) & (sz - 1); t[at]; at = (at + 1) & (sz - 1)) {
        const char *v = nm(c, t[at] - 1);
        if (strlen(v) == klen && memcmp(v, k, klen) == 0) return (long)t[at] - 1;
    }
    return -1;
}

int vx_gate_load(vx_gate *g, const Vxpd__State *s)
{
    creds *c = calloc(1, sizeof *c);
    if (c == NULL) return VX_ENOMEM;
    c->epoch = s->auth_epoch;
    c->users = calloc(s->n_users ? s->n_users : 1, sizeof *c->users);
    c->keys = calloc(s->n_api_keys ? s->n_api_keys : 1, sizeof *c->keys);
    c->revoked = calloc(s->n_revoked ? s->n_revoked : 1, sizeof *c->revoked);
    if (c->users == NULL || c->keys == NULL || c->revoked == NULL) goto nomem;
    for (size_t i = 0; i < s->n_users; i++) {
        const Vxpd__User *u = s->users[i];
        cuser *d = &c->users[c->nusers++];
        d->name = strdup(u->name);
        d->pwhash = strdup(u->pwhash);
        d->role = (vx_role)u->role;
        d->gen = u->token_gen;
        d->created_ms = u->created_ms;
        d->nscope = u->n_collections;
        d->scope = scope_copy(u->collections, u->n_collections, &d->scope_len);
        if (d->name == NULL || d->pwhash == NULL || (d->nscope && d->scope == NULL)) goto nomem;
    }
    for (size_t i = 0; i < s->n_api_keys; i++) {
        const Vxpd__ApiKey *k = s->api_keys[i];
        if (k->digest.len != 32 || strlen(k->id) > 32) continue;
        ckey *d = &c->keys[c->nkeys++];
        snprintf(d->id, sizeof d->id, "%s", k->id);
        memcpy(d->digest, k->digest.data, 32);
        d->role = (vx_role)k->role;
        d->rate = k->rate;
        d->burst = k->burst;
        d->created_ms = k->created_ms;
        d->label = strdup(k->name);
        if (d->label == NULL) goto nomem;
        d->nscope = k->n_collections;
        d->scope = scope_copy(k->collections, k->n_collections, &d->scope_len);
        if (d->nscope && d->scope == NULL) goto nomem;
    }
    for (size_t i = 0; i < s->n_revoked; i++) {
        c->revoked[c->nrevoked] = strdup(s->revoked[i]->jti);
        if (c->revoked[c->nrevoked++] == NULL) goto nomem;
    }
    c->uidx = index_build(c, c->nusers, user_name, &c->usz);
    c->kidx = index_build(c, c->nkeys, key_name, &c->ksz);
    c->ridx = index_build(c, c->nrevoked, rev_name, &c->rsz);
    if (c->uidx == NULL || c->kidx == NULL || c->ridx == NULL) goto nomem;
    pthread_rwlock_wrlock(&g->lock);
    creds *old = g->cr;
    g->cr = c;
    pthread_rwlock_unlock(&g->lock);
    creds_free(old);
    return 0;
nomem:
    creds_free(c);
    return VX_ENOMEM;
}

uint64_t vx_gate_epoch(const vx_gate *g)
{
    vx_gate *m = (vx_gate *)g;
    pthread_rwlock_rdlock(&m->lock);
    uint64_t e = m->cr ? m->cr->epoch : 0;
    pthread_rwlock_unlock(&m->lock);
    return e;
}

/* ---- rate limits ----------------------------------------------------------------------- */

/* Take one token from the bucket `name`; false with *retry_after_s when empty. */
static bool take(vx_gate *g, const char *name, double rate, double burst, int *retry_after_s)
{
    if (rate <= 0) return true; /* unlimited */
    if (burst < 1) burst = 1;
    size_t len = strlen(name);
    uint64_t h = fnv(name, len);
    stripe *st = &g->stripes[h % STRIPES];
    uint64_t now = now_ns();
    pthread_mutex_lock(&st->mu);
    if (st->tab == NULL) {
        st->cap = 256;
        st->tab = calloc(st->cap, sizeof *st->tab);
        if (st->tab == NULL) {
            pthread_mutex_unlock(&st->mu);
            return true; /* out of memory: do not refuse service for it */
        }
    }
    size_t at = (h / STRIPES) % st->cap;
    bucket *b = st->tab[at];
    while (b && strcmp(b->name, name) != 0) b = b->next;
    if (b == NULL) {
        if (st->n >= STRIPE_CAP) { /* drop buckets that have refilled: they hold no state */
            for (size_t i = 0; i < st->cap; i++)
                for (bucket **pp = &st->tab[i]; *pp;) {
                    bucket *x = *pp;
                    double t = x->tokens + (double)(now - x->last_ns) / 1e9 * x->rate;
                    if (t >= x->burst) {
                        *pp = x->next;
                        free(x->name);
                        free(x);
                        st->n--;
                    } else {
                        pp = &x->next;
                    }
                }
        }
        b = calloc(1, sizeof *b);
        if (b == NULL || (b->name = strdup(name)) == NULL) {
            free(b);
            pthread_mutex_unlock(&st->mu);
            return true;
        }
        b->tokens = burst;
        b->last_ns = now;
        b->next = st->tab[at];
        st->tab[at] = b;
        st->n++;
    }
    b->rate = rate;
    b->burst = burst;
    b->tokens += (double)(now - b->last_ns) / 1e9 * rate;
    if (b->tokens > burst) b->tokens = burst;
    b->last_ns = now;
    bool ok = b->tokens >= 1.0;
    if (ok) b->tokens -= 1.0;
    else if (retry_after_s) *retry_after_s = (int)ceil((1.0 - b->tokens) / rate);
    pthread_mutex_unlock(&st->mu);
    if (!ok && retry_after_s && *retry_after_s < 1) *retry_after_s = 1;
    return ok;
}

/* Peek: is the bucket empty (without taking)? */
static bool empty(vx_gate *g, const char *name, double rate, int *retry_after_s)
{
    if (rate <= 0) return false;
    size_t len = strlen(name);
    uint64_t h = fnv(name, len);
    stripe *st = &g->stripes[h % STRIPES];
    bool out = false;
    pthread_mutex_lock(&st->mu);
    if (st->tab) {
        bucket *b = st->tab[(h / STRIPES) % st->cap];
        while (b && strcmp(b->name, name) != 0) b = b->next;
        if (b) {
            double t = b->tokens + (double)(now_ns() - b->last_ns) / 1e9 * b->rate;
            if (t < 1.0) {
                out = true;
                if (retry_after_s) *retry_after_s = (int)ceil((1.0 - t) / b->rate);
            }
        }
    }
    pthread_mutex_unlock(&st->mu);
    if (out && retry_after_s && *retry_after_s < 1) *retry_after_s = 1;
    return out;
}

static void addr_name(const char *peer, char *out, size_t n)
{
    snprintf(out, n, "addr:%s", peer && peer[0] ? peer : "?");
}

vx_gate_verdict vx_gate_charge_address(vx_gate *g, const char *peer, int *retry_after_s)
{
    char name[96];
    addr_name(peer, name, sizeof name);
    return take(g, name, g->opt.anon_rate, g->opt.anon_burst, retry_after_s) ? VX_GATE_OK
                                                                            : VX_GATE_LIMITED;
}

/* ---- login attempts ------------------------------------------------------------------
 *
 * A login is counted against its source address and its account when it is
 * received, before any password work, and given back when it succeeds (or
 * was never checked: BUSY).  Each keeps the times of its counted attempts in
 * the last login_window_s; one more than the limit within that window is
 * refused (429) until the oldest leaves it.  So a flood meets 429 after
 * exactly the limit's count of failed attempts, however fast or slow the
 * password hashing: no refill during the flood. */

static astripe *alog_stripe(vx_gate *g, const char *name, uint64_t *h)
{
    *h = fnv(name, strlen(name));
    return &g->astripes[*h % STRIPES];
}

/* The log of `name` in its (locked) stripe; created when `make`.  NULL when
 * absent (or out of memory: then the attempt goes uncounted rather than
 * refusing every login). */
static alog *alog_get(vx_gate *g, astripe *as, uint64_t h, const char *name, unsigned cap, uint64_t now,
                      bool make, const alog *keep)
{
    uint64_t win = (uint64_t)g->opt.login_window_s * 1000000000ull;
    alog **head = &as->head[(h / STRIPES) % ALOG_HEADS];
    alog *a = *head;
    while (a && strcmp(a->name, name) != 0) a = a->next;
    if (a == NULL && make) {
        if (as->n >= STRIPE_CAP) { /* drop the logs with no attempt left in the window */
            alog *oldest = NULL, **oldest_at = NULL;
            for (size_t i = 0; i < ALOG_HEADS; i++)
                for (alog **pp = &as->head[i]; *pp;) {
                    alog *x = *pp;
                    if (x == keep) { /* the caller holds it (the other log of one attempt) */
                        pp = &x->next;
                        continue;
                    }
                    if (x->n == 0 || now - x->t[x->n - 1] >= win) {
                        *pp = x->next;
                        free(x->name);
                        free(x);
                        as->n--;
                        continue;
                    }
                    if (oldest == NULL || x->t[x->n - 1] < oldest->t[oldest->n - 1]) {
                        oldest = x;
                        oldest_at = pp;
                    }
                    pp = &x->next;
                }
            if (as->n >= STRIPE_CAP && oldest != NULL) { /* full of live logs: the least recent goes */
                *oldest_at = oldest->next;
                free(oldest->name);
                free(oldest);
                as->n--;
            }
        }
        a = calloc(1, sizeof *a + (size_t)cap * sizeof a->t[0]);
        if (a == NULL || (a->name = strdup(name)) == NULL) {
            free(a);
            return NULL;
        }
        a->cap = cap;
        a->next = *head;
        *head = a;
        as->n++;
    }
    if (a == NULL) return NULL;
    unsigned drop = 0; /* attempts that left the window */
    while (drop < a->n && now - a->t[drop] >= win) drop++;
    if (drop) {
        memmove(a->t, a->t + drop, (a->n - drop) * sizeof a->t[0]);
        a->n -= drop;
    }
    if (a->cap != cap) { /* never: one kind, one limit; kept safe all the same */
        if (a->n > cap) a->n = cap;
        if (cap > a->cap) return NULL;
        a->cap = cap;
    }
    return a;
}

static void alog_names(const char *peer, const char *user, char *an, size_t an_n, char *un, size_t un_n)
{
    addr_name(peer, an, an_n);
    snprintf(un, un_n, "acct:%.128s", user ? user : "");
}

vx_gate_verdict vx_gate_login_admit(vx_gate *g, const char *peer, const char *user, int *retry_after_s,
                                    uint64_t *stamp)
{
    char an[96], un[140];
    alog_names(peer, user, an, sizeof an, un, sizeof un);
    uint64_t ha, hu, now = now_ns();
    astripe *sa = alog_stripe(g, an, &ha), *su = alog_stripe(g, un, &hu);
    astripe *first = sa < su ? sa : su, *second = sa < su ? su : sa;
    pthread_mutex_lock(&first->mu);
    if (second != first) pthread_mutex_lock(&second->mu);
    alog *a = alog_get(g, sa, ha, an, g->opt.login_per_address, now, true, NULL);
    alog *u = alog_get(g, su, hu, un, g->opt.login_per_account, now, true, a);
    uint64_t win = (uint64_t)g->opt.login_window_s * 1000000000ull, free_at = 0;
    if (a && a->n >= a->cap) free_at = a->t[0] + win;
    if (u && u->n >= u->cap && u->t[0] + win > free_at) free_at = u->t[0] + win;
    if (free_at == 0) { /* both have room: count the attempt in both */
        if (a) a->t[a->n++] = now;
        if (u) u->t[u->n++] = now;
        if (stamp) *stamp = now;
    }
    if (second != first) pthread_mutex_unlock(&second->mu);
    pthread_mutex_unlock(&first->mu);
    if (free_at == 0) return VX_GATE_OK;
    if (retry_after_s) {
        *retry_after_s = (int)((free_at - now + 999999999ull) / 1000000000ull);
        if (*retry_after_s < 1) *retry_after_s = 1;
    }
    return VX_GATE_LIMITED;
}

void vx_gate_login_refund(vx_gate *g, const char *peer, const char *user, uint64_t stamp)
{
    char an[96], un[140];
    alog_names(peer, user, an, sizeof an, un, sizeof un);
    uint64_t now = now_ns();
    const char *names[2] = {an, un};
    unsigned caps[2] = {g->opt.login_per_address, g->opt.login_per_account};
    for (int i = 0; i < 2; i++) {
        uint64_t h;
        astripe *as = alog_stripe(g, names[i], &h);
        pthread_mutex_lock(&as->mu);
        alog *a = alog_get(g, as, h, names[i], caps[i], now, false, NULL);
        /* this attempt's entry, if it is still in the window (not whichever
         * is newest: that may be another attempt's) */
        for (unsigned k = a ? a->n : 0; k-- > 0;)
            if (a->t[k] == stamp) {
                memmove(a->t + k, a->t + k + 1, (a->n - k - 1) * sizeof a->t[0]);
                a->n--;
                break;
            }
        pthread_mutex_unlock(&as->mu);
    }
}

/* ---- open and close -------------------------------------------------------------------- */

static bool kid_ok(const char *k, size_t n)
{
    if (n < 1 || n > 32) return false;
    for (size_t i = 0; i < n; i++)
        if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= '0' && k[i] <= '9') ||
              k[i] == '.' || k[i] == '_' || k[i] == '-'))
            return false;
    return true;
}

int vx_gate_new(const vx_gate_options *opt, vx_gate **out, char *errbuf)
{
    if (sodium_init() < 0) return vx_errf(errbuf, VX_GATE_ERRMSG_LEN, VX_EIO, "libsodium cannot start");
    vx_gate *g = calloc(1, sizeof *g);
    if (g == NULL) return VX_ENOMEM;
    g->opt = *opt;
    g->opt.admin_key = NULL; /* not kept: only its digest */
    snprintf(g->issuer, sizeof g->issuer, "%s", opt->issuer ? opt->issuer : "vectron");
    snprintf(g->audience, sizeof g->audience, "%s", opt->audience ? opt->audience : "vectron-api");
    g->opt.issuer = g->issuer;
    g->opt.audience = g->audience;
    if (!g->opt.access_ttl_s) g->opt.access_ttl_s = 900;
    if (!g->opt.refresh_ttl_s) g->opt.refresh_ttl_s = 604800;
    if (!g->opt.leeway_s) g->opt.leeway_s = 30;
    if (g->opt.key_rate == 0) g->opt.key_rate = 1000;
    if (g->opt.key_burst == 0) g->opt.key_burst = 2 * g->opt.key_rate;
    if (g->opt.anon_rate == 0) g->opt.anon_rate = 10;
    if (g->opt.anon_burst == 0) g->opt.anon_burst = 2 * g->opt.anon_rate;
    if (!g->opt.max_pw_checks) g->opt.max_pw_checks = 2;
    if (!g->opt.login_per_address) g->opt.login_per_address = 20;
    if (!g->opt.login_per_account) g->opt.login_per_account = 10;
    if (!g->opt.login_window_s) g->opt.login_window_s = 60;
    if (g->opt.login_per_address > LOGIN_MAX || g->opt.login_per_account > LOGIN_MAX) {
        free(g);
        return vx_errf(errbuf, VX_GATE_ERRMSG_LEN, VX_EINVAL,
                       "login attempt limits: at most %d per window", LOGIN_MAX);
    }
    pthread_rwlock_init(&g->lock, NULL);
    pthread_mutex_init(&g->pw_mu, NULL);
    pthread_cond_init(&g->pw_cv, NULL);
    for (int i = 0; i < STRIPES; i++) {
        pthread_mutex_init(&g->stripes[i].mu, NULL);
        pthread_mutex_init(&g->astripes[i].mu, NULL);
    }
    int rc = 0;
    if (opt->enabled) {
        if (opt->admin_key == NULL || strlen(opt->admin_key) < 16) {
            rc = vx_errf(errbuf, VX_GATE_ERRMSG_LEN, VX_EINVAL,
                         "authentication is on: an admin key of at least 16 characters is required "
                         "(VECTRON_ADMIN_KEY or admin_key_file)");
            goto fail;
        }
        crypto_hash_sha256(g->admin_digest, (const uint8_t *)opt->admin_key, strlen(opt->admin_key));
        g->has_admin = true;
        const uint8_t *sec = opt->jwt_secret ? opt->jwt_secret : (const uint8_t *)opt->admin_key;
        size_t seclen = opt->jwt_secret ? opt->jwt_secret_len : strlen(opt->admin_key);
        const char *kid = opt->jwt_kid && opt->jwt_kid[0] ? opt->jwt_kid : "k1";
        if (!kid_ok(kid, strlen(kid)) || vx_jwt_key_derive(sec, seclen, kid, &g->keys[0]) != 0) {
            rc = vx_errf(errbuf, VX_GATE_ERRMSG_LEN, VX_EINVAL, "jwt_kid must be 1 to 32 of [A-Za-z0-9._-]");
            goto fail;
        }
        g->nkeys = 1;
        for (const char *p = opt->jwt_accept; p && *p;) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            char k[33];
            if (!kid_ok(p, n) || g->nkeys == MAX_KIDS) {
                rc = vx_errf(errbuf, VX_GATE_ERRMSG_LEN, VX_EINVAL,
                             "jwt_accept: at most %d key ids of 1 to 32 of [A-Za-z0-9._-], comma-separated",
                             MAX_KIDS - 1);
                goto fail;
            }
            memcpy(k, p, n);
            k[n] = '\0';
            if (vx_jwt_key_derive(sec, seclen, k, &g->keys[g->nkeys]) != 0) {
                rc = VX_EINVAL;
                goto fail;
            }
            g->nkeys++;
            p = e ? e + 1 : p + n;
        }
        /* a hash for unknown users, so a login takes as long either way */
        uint8_t rnd[24];
        char pw[49];
        randombytes_buf(rnd, sizeof rnd);
        sodium_bin2hex(pw, sizeof pw, rnd, sizeof rnd);
        if (vx_gate_hash_password(pw, g->dummy_hash, sizeof g->dummy_hash) != 0) {
            rc = vx_errf(errbuf, VX_GATE_ERRMSG_LEN, VX_ENOMEM, "argon2id: out of memory");
            goto fail;
        }
    }
    Vxpd__State empty_state = VXPD__STATE__INIT;
    rc = vx_gate_load(g, &empty_state);
    if (rc != 0) goto fail;
    *out = g;
    return 0;
fail:
    vx_gate_free(g);
    return rc;
}

void vx_gate_free(vx_gate *g)
{
    if (g == NULL) return;
    creds_free(g->cr);
    for (int i = 0; i < STRIPES; i++) {
        stripe *st = &g->stripes[i];
        for (size_t j = 0; st->tab && j < st->cap; j++)
            for (bucket *b = st->tab[j], *nx; b; b = nx) {
                nx = b->next;
                free(b->name);
                free(b);
            }
        free(st->tab);
        pthread_mutex_destroy(&st->mu);
        astripe *as = &g->astripes[i];
        for (size_t j = 0; j < ALOG_HEADS; j++)
            for (alog *a = as->head[j], *nx; a; a = nx) {
                nx = a->next;
                free(a->name);
                free(a);
            }
        pthread_mutex_destroy(&as->mu);
    }
    sodium_memzero(g->keys, sizeof g->keys);
    pthread_rwlock_destroy(&g->lock);
    pthread_mutex_destroy(&g->pw_mu);
    pthread_cond_destroy(&g->pw_cv);
    free(g);
}

bool vx_gate_enabled(const vx_gate *g) { return g && g->opt.enabled; }

/* ---- authentication -------------------------------------------------------------------- */

void vx_principal_clear(vx_principal *p)
{
    free(p->scope);
    memset(p, 0, sizeof *p);
}

int vx_principal_copy(vx_principal *dst, const vx_principal *src)
{
    *dst = *src;
    dst->scope = NULL;
    if (src->scope == NULL) return 0;
    size_t len = 0;
    for (size_t i = 0; i < src->nscope; i++) len += strlen(src->scope + len) + 1;
    if ((dst->scope = malloc(len ? len : 1)) == NULL) {
        memset(dst, 0, sizeof *dst);
        return VX_ENOMEM;
    }
    memcpy(dst->scope, src->scope, len);
    return 0;
}

static int set_scope(vx_principal *p, const char *scope, size_t len, size_t n)
{
    p->scope = NULL;
    p->nscope = n;
    if (n == 0) return 0;
    p->scope = malloc(len);
    if (p->scope == NULL) return VX_ENOMEM;
    memcpy(p->scope, scope, len);
    return 0;
}

static const char *skip_ws(const char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

/* "vx_<12 hex>_<secret>": the id, or false. */
static bool key_id(const char *k, size_t len, char id[13])
{
    if (len < 3 + 12 + 1 + 16 || len >= VX_KEY_MAX || memcmp(k, "vx_", 3) != 0 || k[15] != '_') return false;
    for (int i = 0; i < 12; i++) {
        char c = k[3 + i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
        id[i] = c;
    }
    id[12] = '\0';
    return true;
}

static vx_gate_verdict by_key(vx_gate *g, const char *k, size_t len, vx_principal *p, int *retry)
{
    uint8_t d[32];
    crypto_hash_sha256(d, (const uint8_t *)k, len);
    if (g->has_admin && sodium_memcmp(d, g->admin_digest, 32) == 0) {
        snprintf(p->name, sizeof p->name, "admin");
        p->role = VX_ROLE_ADMIN;
        if (!take(g, "admin", g->opt.key_rate, g->opt.key_burst, retry)) return VX_GATE_LIMITED;
        return VX_GATE_OK;
    }
    char id[13];
    if (!key_id(k, len, id)) return VX_GATE_UNAUTHORIZED;
    pthread_rwlock_rdlock(&g->lock);
    creds *c = g->cr;
    long i = index_find(c, c->kidx, c->ksz, key_name, id, 12);
    bool ok = i >= 0 && sodium_memcmp(d, c->keys[i].digest, 32) == 0;
    double rate = 0, burst = 0;
    if (ok) {
        const ckey *e = &c->keys[i];
        snprintf(p->name, sizeof p->name, "key:%s", id);
        p->role = e->role;
        rate = e->rate > 0 ? e->rate : g->opt.key_rate;
        burst = e->burst > 0 ? e->burst : e->rate > 0 ? 2 * e->rate : g->opt.key_burst;
        if (set_scope(p, e->scope, e->scope_len, e->nscope) != 0) ok = false;
    }
    pthread_rwlock_unlock(&g->lock);
    if (!ok) return VX_GATE_UNAUTHORIZED;
    if (!take(g, p->name, rate, burst, retry)) return VX_GATE_LIMITED;
    return VX_GATE_OK;
}

static void verifier(vx_gate *g, vx_jwt_verifier *v)
{
    v->keys = g->keys;
    v->nkeys = g->nkeys;
    v->iss = g->issuer;
    v->aud = g->audience;
    v->leeway_s = g->opt.leeway_s;
    v->now = wall_s();
}

/* A verified token of type typ whose user exists with the same generation
 * (and, for refresh tokens, whose jti is not revoked).  Under the read lock:
 * fills p (when not NULL) from the user's current record. */
static bool token_ok(vx_gate *g, const char *tok, size_t len, const char *typ, vx_jwt_claims *cl,
                     vx_principal *p, double *rate, double *burst)
{
    vx_jwt_verifier v;
    verifier(g, &v);
    if (vx_jwt_verify(&v, tok, len, cl, NULL) != 0 || strcmp(cl->typ, typ) != 0) return false;
    pthread_rwlock_rdlock(&g->lock);
    creds *c = g->cr;
    long i = index_find(c, c->uidx, c->usz, user_name, cl->sub, strlen(cl->sub));
    bool ok = i >= 0 && c->users[i].gen == cl->gen;
    if (ok && strcmp(typ, "refresh") == 0)
        ok = cl->jti[0] && index_find(c, c->ridx, c->rsz, rev_name, cl->jti, strlen(cl->jti)) < 0;
    if (ok && p) {
        const cuser *u = &c->users[i];
        snprintf(p->name, sizeof p->name, "user:%s", u->name);
        p->role = u->role;
        if (set_scope(p, u->scope, u->scope_len, u->nscope) != 0) ok = false;
        *rate = g->opt.key_rate;
        *burst = g->opt.key_burst;
    }
    pthread_rwlock_unlock(&g->lock);
    return ok;
}

vx_gate_verdict vx_gate_authenticate(vx_gate *g, const char *api_key, const char *authz,
                                     const char *peer, vx_principal *p, int *retry_after_s)
{
    memset(p, 0, sizeof *p);
    if (!g->opt.enabled) {
        snprintf(p->name, sizeof p->name, "anonymous");
        p->role = VX_ROLE_ADMIN;
        return VX_GATE_OK;
    }
    char aname[96];
    addr_name(peer, aname, sizeof aname);
    /* an address that has used up its failures waits before any token work */
    if (empty(g, aname, g->opt.anon_rate, retry_after_s)) return VX_GATE_LIMITED;
    vx_gate_verdict v = VX_GATE_UNAUTHORIZED;
    if (api_key && api_key[0]) {
        const char *k = skip_ws(api_key);
        v = by_key(g, k, strlen(k), p, retry_after_s);
    } else if (authz && strncasecmp(skip_ws(authz), "bearer ", 7) == 0) {
        const char *t = skip_ws(skip_ws(authz) + 7);
        size_t len = strlen(t);
        while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t')) len--;
        if ((len >= 3 && memcmp(t, "vx_", 3) == 0) || memchr(t, '.', len) == NULL) {
            v = by_key(g, t, len, p, retry_after_s); /* a key (or the admin key), not a JWT */
        } else if (len <= VX_TOKEN_MAX) {
            vx_jwt_claims cl;
            double rate = 0, burst = 0;
            if (token_ok(g, t, len, "access", &cl, p, &rate, &burst))
                v = take(g, p->name, rate, burst, retry_after_s) ? VX_GATE_OK : VX_GATE_LIMITED;
        }
    }
    if (v != VX_GATE_OK) vx_principal_clear(p); /* a limited caller was known: its scope goes too */
    if (v == VX_GATE_UNAUTHORIZED) (void)take(g, aname, g->opt.anon_rate, g->opt.anon_burst, NULL);
    return v;
}

bool vx_gate_allows(const vx_principal *p, vx_role need, const char *coll)
{
    if (p->role < need) return false;
    if (p->scope == NULL) return true; /* every collection, and the cluster */
    if (coll == NULL) return false;    /* scoped principals never act globally */
    const char *s = p->scope;
    for (size_t i = 0; i < p->nscope; i++) {
        if (strcmp(s, coll) == 0) return true;
        s += strlen(s) + 1;
    }
    return false;
}

/* ---- passwords and tokens --------------------------------------------------------------- */

int vx_gate_hash_password(const char *password, char *out, size_t out_len)
{
    if (out_len < crypto_pwhash_STRBYTES) return VX_EINVAL;
    /* at least the interactive limits (64 MiB, 2 passes) */
    if (crypto_pwhash_str_alg(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return VX_ENOMEM;
    return 0;
}

int vx_gate_new_key(char key[VX_KEY_MAX], char id[13], uint8_t digest[32])
{
    uint8_t idb[6], sec[32];
    randombytes_buf(idb, sizeof idb);
    randombytes_buf(sec, sizeof sec);
    sodium_bin2hex(id, 13, idb, sizeof idb);
    char b64[64];
    sodium_bin2base64(b64, sizeof b64, sec, sizeof sec, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(key, VX_KEY_MAX, "vx_%s_%s", id, b64);
    crypto_hash_sha256(digest, (const uint8_t *)key, strlen(key));
    sodium_memzero(sec, sizeof sec);
    sodium_memzero(b64, sizeof b64);
    return 0;
}

static bool pw_enter(vx_gate *g)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += PW_WAIT_MS / 1000;
    pthread_mutex_lock(&g->pw_mu);
    int w = 0;
    while (g->pw_running >= g->opt.max_pw_checks && w == 0) w = pthread_cond_timedwait(&g->pw_cv, &g->pw_mu, &dl);
    bool ok = g->pw_running < g->opt.max_pw_checks;
    if (ok) g->pw_running++;
    pthread_mutex_unlock(&g->pw_mu);
    return ok;
}

static void pw_leave(vx_gate *g)
{
    pthread_mutex_lock(&g->pw_mu);
    g->pw_running--;
    pthread_cond_signal(&g->pw_cv);
    pthread_mutex_unlock(&g->pw_mu);
}

static int issue(vx_gate *g, const char *user, uint64_t gen, const char *typ, unsigned ttl, char **out)
{
    vx_jwt_claims c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "%s", user);
    snprintf(c.typ, sizeof c.typ, "%s", typ);
    uint8_t r[16];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(c.jti, sizeof c.jti, r, sizeof r);
    c.gen = gen;
    c.iat = c.nbf = wall_s();
    c.exp = c.iat + ttl;
    snprintf(c.iss, sizeof c.iss, "%s", g->issuer);
    snprintf(c.aud, sizeof c.aud, "%s", g->audience);
    return vx_jwt_sign(&g->keys[0], &c, out);
}

vx_gate_verdict vx_gate_login(vx_gate *g, const char *user, const char *password, char **access,
                              char **refresh, unsigned *expires_in)
{
    *access = *refresh = NULL;
    if (!g->opt.enabled || g->nkeys == 0) return VX_GATE_UNAUTHORIZED;
    char hash[crypto_pwhash_STRBYTES];
    uint64_t gen = 0;
    pthread_rwlock_rdlock(&g->lock);
    creds *c = g->cr;
    long i = strlen(user) <= 128 ? index_find(c, c->uidx, c->usz, user_name, user, strlen(user)) : -1;
    bool known = i >= 0 && strlen(c->users[i].pwhash) < sizeof hash;
    snprintf(hash, sizeof hash, "%s", known ? c->users[i].pwhash : g->dummy_hash);
    if (known) gen = c->users[i].gen;
    pthread_rwlock_unlock(&g->lock);
    if (!pw_enter(g)) return VX_GATE_BUSY;
    bool ok = crypto_pwhash_str_verify(hash, password, strlen(password)) == 0 && known;
    pw_leave(g);
    sodium_memzero(hash, sizeof hash);
    if (!ok) return VX_GATE_UNAUTHORIZED;
    if (issue(g, user, gen, "access", g->opt.access_ttl_s, access) != 0 ||
        issue(g, user, gen, "refresh", g->opt.refresh_ttl_s, refresh) != 0) {
        free(*access);
        free(*refresh);
        *access = *refresh = NULL;
        return VX_GATE_UNAUTHORIZED;
    }
    *expires_in = g->opt.access_ttl_s;
    return VX_GATE_OK;
}

vx_gate_verdict vx_gate_refresh(vx_gate *g, const char *refresh, char **access, unsigned *expires_in)
{
    *access = NULL;
    if (!g->opt.enabled) return VX_GATE_UNAUTHORIZED;
    vx_jwt_claims cl;
    size_t len = strlen(refresh);
    if (len > VX_TOKEN_MAX || !token_ok(g, refresh, len, "refresh", &cl, NULL, NULL, NULL))
        return VX_GATE_UNAUTHORIZED;
    if (issue(g, cl.sub, cl.gen, "access", g->opt.access_ttl_s, access) != 0) return VX_GATE_UNAUTHORIZED;
    *expires_in = g->opt.access_ttl_s;
    return VX_GATE_OK;
}

vx_gate_verdict vx_gate_refresh_id(vx_gate *g, const char *refresh, char *jti, size_t jti_len,
                                   int64_t *exp)
{
    if (!g->opt.enabled) return VX_GATE_UNAUTHORIZED;
    vx_jwt_claims cl;
    size_t len = strlen(refresh);
    if (len > VX_TOKEN_MAX || !token_ok(g, refresh, len, "refresh", &cl, NULL, NULL, NULL))
        return VX_GATE_UNAUTHORIZED;
    snprintf(jti, jti_len, "%s", cl.jti);
    *exp = cl.exp;
    return VX_GATE_OK;
}

static cJSON *scope_json(const char *scope, size_t n)
{
    if (n == 0) return cJSON_CreateNull();
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(a, cJSON_CreateString(scope));
        scope += strlen(scope) + 1;
    }
    return a;
}

cJSON *vx_gate_list(vx_gate *g, bool keys)
{
    cJSON *a = cJSON_CreateArray();
    pthread_rwlock_rdlock(&g->lock);
    creds *c = g->cr;
    size_t n = keys ? c->nkeys : c->nusers;
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (keys) {
            const ckey *k = &c->keys[i];
            cJSON_AddStringToObject(o, "id", k->id);
            cJSON_AddStringToObject(o, "name", k->label);
            cJSON_AddStringToObject(o, "role", vx_role_name(k->role));
            cJSON_AddItemToObject(o, "collections", scope_json(k->scope, k->nscope));
            if (k->rate > 0) cJSON_AddNumberToObject(o, "rate", k->rate);
            if (k->burst > 0) cJSON_AddNumberToObject(o, "burst", k->burst);
            cJSON_AddNumberToObject(o, "created_ms", (double)k->created_ms);
        } else {
            const cuser *u = &c->users[i];
            cJSON_AddStringToObject(o, "username", u->name);
            cJSON_AddStringToObject(o, "role", vx_role_name(u->role));
            cJSON_AddItemToObject(o, "collections", scope_json(u->scope, u->nscope));
            cJSON_AddNumberToObject(o, "created_ms", (double)u->created_ms);
        }
        cJSON_AddItemToArray(a, o);
    }
    pthread_rwlock_unlock(&g->lock);
    return a;
}

cJSON *vx_gate_jwks(const vx_gate *g)
{
    cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "keys");
    for (size_t i = 0; i < g->nkeys; i++) {
        char x[64];
        sodium_bin2base64(x, sizeof x, g->keys[i].pk, sizeof g->keys[i].pk,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        cJSON *k = cJSON_CreateObject();
        cJSON_AddStringToObject(k, "kty", "OKP");
        cJSON_AddStringToObject(k, "crv", "Ed25519");
        cJSON_AddStringToObject(k, "alg", "EdDSA");
        cJSON_AddStringToObject(k, "use", "sig");
        cJSON_AddStringToObject(k, "kid", g->keys[i].kid);
        cJSON_AddStringToObject(k, "x", x);
        cJSON_AddItemToArray(a, k);
    }
    return o;
}

const char *vx_role_name(vx_role r)
{
    return r == VX_ROLE_READ ? "read" : r == VX_ROLE_WRITE ? "write" : r == VX_ROLE_ADMIN ? "admin" : "none";
}

vx_role vx_role_parse(const char *s)
{
    if (s == NULL) return VX_ROLE_NONE;
    if (strcmp(s, "read") == 0) return VX_ROLE_READ;
    if (strcmp(s, "write") == 0) return VX_ROLE_WRITE;
    if (strcmp(s, "admin") == 0) return VX_ROLE_ADMIN;
    return VX_ROLE_NONE;
}
