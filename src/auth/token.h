/*
 * token.h - JSON Web Tokens signed with Ed25519 ("alg":"EdDSA", RFC 8037).
 *
 * Vectron issues its own access and refresh tokens and is the only party
 * that verifies them, so the format is deliberately narrow:
 *
 *   - One algorithm, pinned.  The verifier accepts "alg":"EdDSA" and nothing
 *     else ("none", HS256, case variants, a missing alg are all refused), so
 *     no algorithm-confusion attack can turn the public key into an HMAC
 *     secret.  Header keys that ask the verifier to fetch or trust a key from
 *     the token ("jku", "jwk", "x5u", "x5c") or that name extensions it must
 *     understand ("crit") are refused; the key is looked up by "kid" among
 *     the configured keys only.
 *   - Keys are derived, not stored: every kid has its own Ed25519 pair
 *     derived from one server secret (vx_jwt_key_derive), so rotating means
 *     adding a new kid to the signer and keeping the old one in the verifier
 *     until its tokens expire.
 *   - The signature is checked before any payload claim is looked at.
 *   - Sizes are bounded: a token over VX_TOKEN_MAX bytes is refused before
 *     parsing, and a decoded header or payload over 2048 bytes is refused.
 *   - Time claims are integer seconds in [0, 2^53] (exactly representable in
 *     the double cJSON parses numbers into); anything else is refused.
 *
 * Every verification failure is VX_EINVAL; the reason in errbuf is for logs
 * and never contains bytes taken from the token.
 */
#ifndef VX_AUTH_TOKEN_H
#define VX_AUTH_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define VX_TOKEN_MAX 4096 /* a token longer than this is refused before any parsing */
#define VX_JWT_ERRMSG_LEN 128

typedef struct vx_jwt_key {
    char kid[33];   /* 1..32 chars of [A-Za-z0-9._-] */
    uint8_t pk[32]; /* crypto_sign_PUBLICKEYBYTES */
    uint8_t sk[64]; /* crypto_sign_SECRETKEYBYTES */
} vx_jwt_key;

/* Derive the Ed25519 key pair of `kid` from a secret: seed = BLAKE2b-256
 * keyed with the secret (when 16..64 bytes long; otherwise with the unkeyed
 * BLAKE2b-256 of the secret) over "vectron-jwt-v1:" followed by kid, then
 * crypto_sign_seed_keypair.  VX_EINVAL for a bad kid or an empty secret. */
int vx_jwt_key_derive(const uint8_t *secret, size_t secret_len, const char *kid, vx_jwt_key *out);

typedef struct vx_jwt_claims {
    char sub[129];         /* subject: user name, 1..128 bytes */
    char typ[16];          /* "access" or "refresh" (claim "typ"), 1..15 bytes */
    char jti[65];          /* token id; may be empty (then not emitted) */
    uint64_t gen;          /* the user's token generation at issue (claim "gen") */
    int64_t iat, nbf, exp; /* seconds since the epoch */
    char iss[65], aud[65]; /* 1..64 bytes each */
} vx_jwt_claims;

/* Header {"alg":"EdDSA","typ":"JWT","kid":"<kid>"}, payload with iss, aud,
 * sub, typ, jti (if non-empty), gen, iat, nbf, exp; signature over ASCII
 * "b64(header).b64(payload)".  *out is malloc'd, NUL-terminated.
 * VX_EINVAL for claims out of the ranges above, VX_ENOMEM. */
int vx_jwt_sign(const vx_jwt_key *key, const vx_jwt_claims *c, char **out);

typedef struct vx_jwt_verifier {
    const vx_jwt_key *keys; /* the accepted keys, looked up by the header's kid */
    size_t nkeys;
    const char *iss, *aud; /* required exact values (1..64 bytes) */
    int64_t leeway_s;      /* clock skew allowed on exp, nbf and iat (negative = 0) */
    int64_t now;           /* seconds since the epoch */
} vx_jwt_verifier;

/* 0 with *c filled when every check passes; otherwise VX_EINVAL, *c zeroed
 * (c may be NULL) and a reason in errbuf (VX_JWT_ERRMSG_LEN bytes, may be
 * NULL) -- the reason is for logs only, the caller answers every failure the
 * same way.  The claim "typ" is returned, not judged: the caller checks that
 * it is the kind of token it expects. */
int vx_jwt_verify(const vx_jwt_verifier *v, const char *token, size_t len, vx_jwt_claims *c,
                  char *errbuf);

#endif
