/*
 * gate.h - who may do what, and how often: the API's authentication,
 * authorization and rate limits (issue 7).
 *
 * Credentials live in the placement driver's replicated state (proto/pd.proto:
 * User, ApiKey, RevokedToken) -- in a cluster's PD group and in vectron
 * serve's one-voter catalog alike.  The gate keeps a read-only copy, replaced
 * whole by vx_gate_load whenever the state's auth_epoch moves, and answers
 * every request from it without I/O.
 *
 * Credentials a request may carry (Qdrant's clients send the first two):
 *   api-key: vx_<id>_<secret>             an API key
 *   Authorization: Bearer vx_<id>_<secret> the same
 *   Authorization: Bearer <JWT>           an access token from /v1/auth/login
 * plus the bootstrap admin key given at start (VECTRON_ADMIN_KEY), a global
 * admin whose digest only is kept.
 *
 * Keys: 12 hex digits of id, 43 base64url characters (32 random bytes) of
 * secret.  Only SHA-256 of the whole key is stored; it is compared in
 * constant time (sodium_memcmp).  Passwords: argon2id (crypto_pwhash_str,
 * interactive limits at least), at most max_pw_checks verifications at once.
 * JWTs: EdDSA (Ed25519) with the algorithm pinned, keys derived per kid from
 * the JWT secret (token.h); access tokens live access_ttl_s, refresh tokens
 * refresh_ttl_s; both carry the user's token generation, so a password change
 * or a revocation of the user ends every session, and a revoked refresh
 * token's jti is refused until it would have expired.  The role and scope
 * come from the user's current record, not from the token: a change applies
 * at once.
 *
 * Rate limits: a token bucket per principal (key, user, bootstrap admin;
 * rate and burst from the key or the defaults), and one per source address
 * charged for every request without valid credentials -- checked before any
 * token work, so floods of forged credentials are bounded per address.
 * Logins are limited by count, not rate: each attempt is counted when it is
 * received against its address and its account, and past the limit within
 * the window it is refused before any password work (vx_gate_login_admit),
 * so a password-guessing flood meets 429 after the same number of attempts
 * on any machine.  Buckets live in 64 locked stripes: one key's traffic
 * never waits on another's lock for long.
 *
 * Threads: everything may be called from many threads at once.
 */
#ifndef VX_AUTH_GATE_H
#define VX_AUTH_GATE_H

#include "pd.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_GATE_ERRMSG_LEN 256
#define VX_KEY_MAX 80 /* "vx_" + id + "_" + secret, NUL included */

typedef enum { VX_ROLE_NONE = 0, VX_ROLE_READ = 1, VX_ROLE_WRITE = 2, VX_ROLE_ADMIN = 3 } vx_role;

typedef struct vx_gate_options {
    bool enabled;             /* false: every request is an anonymous global admin */
    const char *admin_key;    /* the bootstrap admin key (NULL: none) */
    const uint8_t *jwt_secret; /* NULL: derived from admin_key */
    size_t jwt_secret_len;
    const char *jwt_kid;      /* signing key id (default "k1") */
    const char *jwt_accept;   /* more kids accepted, comma-separated (rotation); may be NULL */
    const char *issuer;       /* default "vectron" */
    const char *audience;     /* default "vectron-api" */
    unsigned access_ttl_s;    /* default 900 */
    unsigned refresh_ttl_s;   /* default 604800 (7 days) */
    unsigned leeway_s;        /* default 30 */
    double key_rate, key_burst;   /* per principal, requests/s (default 1000, 2000) */
    double anon_rate, anon_burst; /* per address without valid credentials (default 10, 20) */
    unsigned max_pw_checks;   /* concurrent argon2id verifications (default 2) */
    /* login attempts counted when received, per source address and per
     * account, in any login_window_s (defaults 20, 10, 60 s) */
    unsigned login_per_address, login_per_account, login_window_s;
} vx_gate_options;

typedef struct vx_gate vx_gate;

/* A request's authenticated caller; release with vx_principal_clear. */
typedef struct vx_principal {
    char name[140];  /* "user:<name>", "key:<id>", "admin" or "anonymous" */
    vx_role role;
    char *scope;     /* NUL-separated collection names (malloc'd); NULL: every collection */
    size_t nscope;
} vx_principal;

typedef enum {
    VX_GATE_OK = 0,
    VX_GATE_UNAUTHORIZED, /* 401: missing, malformed, unknown, expired, revoked, forged */
    VX_GATE_LIMITED,      /* 429: retry after *retry_after_s */
    VX_GATE_BUSY,         /* 429: too many password checks at once */
} vx_gate_verdict;

int vx_gate_new(const vx_gate_options *opt, vx_gate **out, char *errbuf);
void vx_gate_free(vx_gate *g);
bool vx_gate_enabled(const vx_gate *g);

/* Replace the credentials with the state's (users, api_keys, revoked). */
int vx_gate_load(vx_gate *g, const Vxpd__State *s);
uint64_t vx_gate_epoch(const vx_gate *g); /* the auth_epoch last loaded */

/* Who is calling.  api_key: the api-key header; authz: the Authorization
 * header; peer: the source address (rate limit of failures).  Either may be
 * NULL.  OK fills *p (clear it after); LIMITED sets *retry_after_s. */
vx_gate_verdict vx_gate_authenticate(vx_gate *g, const char *api_key, const char *authz,
                                     const char *peer, vx_principal *p, int *retry_after_s);
/* Charge the address's bucket for a request that needs no credentials
 * (login, refresh): LIMITED when it is empty. */
vx_gate_verdict vx_gate_charge_address(vx_gate *g, const char *peer, int *retry_after_s);
void vx_principal_clear(vx_principal *p);
/* A copy of src (its own scope); VX_ENOMEM leaves dst cleared. */
int vx_principal_copy(vx_principal *dst, const vx_principal *src);

/* A login attempt from peer for account user, counted now (before any
 * password work) against both: LIMITED with *retry_after_s when either has
 * used up its attempts in the window; then neither is charged.  A login that
 * succeeds, or was not checked (BUSY), gives its attempt back with
 * vx_gate_login_refund. */
vx_gate_verdict vx_gate_login_admit(vx_gate *g, const char *peer, const char *user, int *retry_after_s,
                                    uint64_t *stamp);
void vx_gate_login_refund(vx_gate *g, const char *peer, const char *user, uint64_t stamp);

/* May p act with `need` on collection coll (NULL: on the cluster/global)? */
bool vx_gate_allows(const vx_principal *p, vx_role need, const char *coll);

/* Password login: *access and *refresh malloc'd JWTs.  UNAUTHORIZED for an
 * unknown user or a wrong password (the same answer, after the same work);
 * BUSY when max_pw_checks are running. */
vx_gate_verdict vx_gate_login(vx_gate *g, const char *user, const char *password, char **access,
                              char **refresh, unsigned *expires_in);
/* A refresh token for a new access token. */
vx_gate_verdict vx_gate_refresh(vx_gate *g, const char *refresh, char **access, unsigned *expires_in);
/* The id and expiry of a valid refresh token (for its revocation). */
vx_gate_verdict vx_gate_refresh_id(vx_gate *g, const char *refresh, char *jti, size_t jti_len,
                                   int64_t *exp);

/* Credentials to store: an argon2id hash of password (NUL-terminated into
 * out, 128 bytes), and a fresh API key with its id and digest. */
int vx_gate_hash_password(const char *password, char *out, size_t out_len);
int vx_gate_new_key(char key[VX_KEY_MAX], char id[13], uint8_t digest[32]);

/* The users (keys false) or API keys as a JSON array for the admin API:
 * names, roles, scopes, creation times -- never a hash or a digest. */
struct cJSON;
struct cJSON *vx_gate_list(vx_gate *g, bool keys);

/* The public keys that verify this gate's tokens, as a JWK Set (RFC 7517,
 * OKP/Ed25519): other services may check our tokens with it. */
struct cJSON *vx_gate_jwks(const vx_gate *g);

/* Names of roles ("read", "write", "admin") and back (VX_ROLE_NONE: unknown). */
const char *vx_role_name(vx_role r);
vx_role vx_role_parse(const char *s);

#endif
