/*
 * token.c - Ed25519 JSON Web Tokens (see token.h for the format and policy).
 *
 * Decisions:
 *   - Base64url without padding, strictly: the token may hold only
 *     [A-Za-z0-9_-] and '.', every segment must be non-empty and must be
 *     consumed whole by sodium_base642bin (which also refuses non-zero
 *     trailing bits, so every byte string has exactly one accepted encoding).
 *   - Verification order: size and alphabet, shape (three segments), header
 *     (alg pinned to "EdDSA", typ "JWT" if present, no crit/jku/jwk/x5u/x5c,
 *     kid among the configured keys), signature (exactly 64 bytes, checked
 *     over the exact signed bytes), and only then the payload claims.
 *   - JSON: a decoded header or payload is at most 2048 bytes, must be an
 *     object, may not hold a NUL byte or the escape \u0000 (cJSON would cut a
 *     string there, so "EdDSA\u0000x" would read as "EdDSA"; a literal
 *     backslash followed by "u0000" is refused too, which costs nothing), and
 *     may not repeat a top-level member name (cJSON would keep the first;
 *     refusing removes any doubt about which one a reader sees).  Member
 *     names are matched case-sensitively.
 *   - Numbers: cJSON parses into double, so integers are accepted only in
 *     [0, 2^53] and only when integral; the signer refuses to emit others,
 *     and prints integers itself (raw members) so they are exact.
 *   - Time checks with leeway L (negative counts as 0), all saturating:
 *     expired when now > exp + L; not yet valid when now + L < nbf; issued
 *     in the future when iat > now + L.
 *   - Error reasons are fixed strings: nothing from the token reaches a log.
 */
#include "auth/token.h"

#include "base/err.h"

#include <cjson/cJSON.h>
#include <sodium.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VX__B64 sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define VX__JSON_MAX 2048
#define VX__SIG_LEN crypto_sign_BYTES
#define VX__INT_MAX 9007199254740992.0 /* 2^53, the largest exact integer cJSON reads */
#define VX__UINT_MAX ((uint64_t)1 << 53)
#define VX__DERIVE_PREFIX "vectron-jwt-v1:"

_Static_assert(sizeof(((vx_jwt_key *)0)->pk) == crypto_sign_PUBLICKEYBYTES, "pk size");
_Static_assert(sizeof(((vx_jwt_key *)0)->sk) == crypto_sign_SECRETKEYBYTES, "sk size");
_Static_assert(crypto_sign_SEEDBYTES == 32, "seed size");

static int vx__sodium_ready(void)
{
    return sodium_init() < 0 ? -1 : 0; /* 1 = already initialised */
}

static int vx__kid_ok(const char *kid)
{
    if (kid == NULL) return 0;
    size_t n = 0;
    for (; kid[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)kid[n];
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '-';
        if (!ok || n >= 32) return 0;
    }
    return n >= 1;
}

/* Length of a NUL-terminated string held in an array of `cap` bytes, or -1
 * when the array has no terminator. */
static long vx__arr_len(const char *s, size_t cap)
{
    const char *z = memchr(s, '\0', cap);
    return z == NULL ? -1 : (long)(z - s);
}

int vx_jwt_key_derive(const uint8_t *secret, size_t secret_len, const char *kid, vx_jwt_key *out)
{
    if (out == NULL || secret == NULL || secret_len == 0 || !vx__kid_ok(kid)) return VX_EINVAL;
    if (vx__sodium_ready() != 0) return VX_ESTATE;

    uint8_t hkey[crypto_generichash_BYTES];
    const uint8_t *key = secret;
    size_t keylen = secret_len;
    if (secret_len < crypto_generichash_KEYBYTES_MIN || secret_len > crypto_generichash_KEYBYTES_MAX) {
        crypto_generichash(hkey, sizeof hkey, secret, secret_len, NULL, 0);
        key = hkey;
        keylen = sizeof hkey;
    }

    size_t plen = sizeof(VX__DERIVE_PREFIX) - 1, klen = strlen(kid);
    uint8_t msg[sizeof(VX__DERIVE_PREFIX) - 1 + 32];
    memcpy(msg, VX__DERIVE_PREFIX, plen);
    memcpy(msg + plen, kid, klen);

    uint8_t seed[crypto_sign_SEEDBYTES];
    crypto_generichash(seed, sizeof seed, msg, plen + klen, key, keylen);
    memset(out, 0, sizeof *out);
    memcpy(out->kid, kid, klen);
    int rc = crypto_sign_seed_keypair(out->pk, out->sk, seed);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(hkey, sizeof hkey);
    if (rc != 0) {
        sodium_memzero(out, sizeof *out);
        return VX_ESTATE;
    }
    return 0;
}

/* ---- signing ---------------------------------------------------------- */

static int vx__add_int(cJSON *obj, const char *name, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%" PRIu64, v);
    return cJSON_AddRawToObject(obj, name, num) != NULL ? 0 : VX_ENOMEM;
}

static int vx__time_ok(int64_t t)
{
    return t >= 0 && (uint64_t)t <= VX__UINT_MAX;
}

static int vx__claims_ok(const vx_jwt_claims *c)
{
    long sub = vx__arr_len(c->sub, sizeof c->sub), typ = vx__arr_len(c->typ, sizeof c->typ);
    long jti = vx__arr_len(c->jti, sizeof c->jti), iss = vx__arr_len(c->iss, sizeof c->iss);
    long aud = vx__arr_len(c->aud, sizeof c->aud);
    return sub >= 1 && typ >= 1 && jti >= 0 && iss >= 1 && aud >= 1 &&
           c->gen <= VX__UINT_MAX && vx__time_ok(c->iat) && vx__time_ok(c->nbf) &&
           vx__time_ok(c->exp);
}

/* Append the base64url text of bin to dst (which has room), return the end. */
static char *vx__b64_put(char *dst, const void *bin, size_t n)
{
    sodium_bin2base64(dst, sodium_base64_ENCODED_LEN(n, VX__B64), bin, n, VX__B64);
    return dst + strlen(dst);
}

int vx_jwt_sign(const vx_jwt_key *key, const vx_jwt_claims *c, char **out)
{
    if (out == NULL) return VX_EINVAL;
    *out = NULL;
    if (key == NULL || c == NULL || vx__arr_len(key->kid, sizeof key->kid) < 0 ||
        !vx__kid_ok(key->kid) || !vx__claims_ok(c))
        return VX_EINVAL;
    if (vx__sodium_ready() != 0) return VX_ESTATE;

    char header[96];
    int hlen = snprintf(header, sizeof header, "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"%s\"}",
                        key->kid);
    if (hlen < 0 || (size_t)hlen >= sizeof header) return VX_EINVAL;

    int rc = VX_ENOMEM;
    char *payload = NULL, *tok = NULL;
    cJSON *p = cJSON_CreateObject();
    if (p == NULL || cJSON_AddStringToObject(p, "iss", c->iss) == NULL ||
        cJSON_AddStringToObject(p, "aud", c->aud) == NULL ||
        cJSON_AddStringToObject(p, "sub", c->sub) == NULL ||
        cJSON_AddStringToObject(p, "typ", c->typ) == NULL ||
        (c->jti[0] != '\0' && cJSON_AddStringToObject(p, "jti", c->jti) == NULL) ||
        vx__add_int(p, "gen", c->gen) != 0 || vx__add_int(p, "iat", (uint64_t)c->iat) != 0 ||
        vx__add_int(p, "nbf", (uint64_t)c->nbf) != 0 || vx__add_int(p, "exp", (uint64_t)c->exp) != 0)
        goto out;
    payload = cJSON_PrintUnformatted(p);
    if (payload == NULL) goto out;
    size_t plen = strlen(payload);
    if (plen > VX__JSON_MAX) { /* cannot happen with the field limits; the verifier would refuse it */
        rc = VX_EINVAL;
        goto out;
    }

    size_t cap = sodium_base64_ENCODED_LEN((size_t)hlen, VX__B64) +
                 sodium_base64_ENCODED_LEN(plen, VX__B64) +
                 sodium_base64_ENCODED_LEN(VX__SIG_LEN, VX__B64);
    tok = malloc(cap);
    if (tok == NULL) goto out;
    char *w = vx__b64_put(tok, header, (size_t)hlen);
    *w++ = '.';
    w = vx__b64_put(w, payload, plen);

    uint8_t sig[VX__SIG_LEN];
    crypto_sign_detached(sig, NULL, (const uint8_t *)tok, (size_t)(w - tok), key->sk);
    *w++ = '.';
    vx__b64_put(w, sig, sizeof sig);
    *out = tok;
    tok = NULL;
    rc = 0;
out:
    free(tok);
    cJSON_free(payload);
    cJSON_Delete(p);
    return rc;
}

/* ---- verification ----------------------------------------------------- */

static int vx__b64url_char(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
}

/* Decode one whole, non-empty segment into bin (cap bytes). */
static int vx__b64_get(const char *s, size_t n, uint8_t *bin, size_t cap, size_t *outlen)
{
    const char *end = NULL;
    if (n == 0) return -1;
    if (sodium_base642bin(bin, cap, s, n, NULL, outlen, &end, VX__B64) != 0) return -1;
    return end == s + n ? 0 : -1;
}

/* Decode a segment holding a JSON object (at most VX__JSON_MAX bytes) and
 * parse it.  NULL when any rule in the file comment is broken. */
static cJSON *vx__json_segment(const char *s, size_t n)
{
    char buf[VX__JSON_MAX + 1];
    size_t len;
    if (vx__b64_get(s, n, (uint8_t *)buf, VX__JSON_MAX, &len) != 0) return NULL;
    if (memchr(buf, '\0', len) != NULL) return NULL;
    buf[len] = '\0';
    if (strstr(buf, "\\u0000") != NULL) return NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(buf, &end, 1);
    if (j == NULL) return NULL;
    if (!cJSON_IsObject(j)) goto bad;
    for (const cJSON *a = j->child; a != NULL; a = a->next) {
        if (a->string == NULL) goto bad;
        for (const cJSON *b = a->next; b != NULL; b = b->next)
            if (b->string == NULL || strcmp(a->string, b->string) == 0) goto bad;
    }
    return j;
bad:
    cJSON_Delete(j);
    return NULL;
}

static const cJSON *vx__member(const cJSON *obj, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(obj, name);
}

/* An integral number in [0, 2^53]. */
static int vx__get_uint(const cJSON *it, uint64_t *out)
{
    if (!cJSON_IsNumber(it)) return -1;
    double d = it->valuedouble;
    if (!(d >= 0.0 && d <= VX__INT_MAX)) return -1; /* also NaN */
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return -1;
    *out = u;
    return 0;
}

/* A string member of 1..max bytes (min may be 0) copied into dst. */
static int vx__get_str(const cJSON *it, size_t min, size_t max, char *dst)
{
    if (!cJSON_IsString(it) || it->valuestring == NULL) return -1;
    size_t n = strlen(it->valuestring);
    if (n < min || n > max) return -1;
    memcpy(dst, it->valuestring, n + 1);
    return 0;
}

static int64_t vx__sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
    if (b < 0 && a < INT64_MIN - b) return INT64_MIN;
    return a + b;
}

static int vx__verifier_ok(const vx_jwt_verifier *v)
{
    if (v == NULL || (v->keys == NULL && v->nkeys > 0) || v->iss == NULL || v->aud == NULL)
        return 0;
    size_t il = strlen(v->iss), al = strlen(v->aud);
    return il >= 1 && il <= 64 && al >= 1 && al <= 64;
}

static int vx__aud_ok(const cJSON *aud, const char *want)
{
    if (cJSON_IsString(aud)) return aud->valuestring != NULL && strcmp(aud->valuestring, want) == 0;
    if (!cJSON_IsArray(aud) || aud->child == NULL) return 0;
    int found = 0;
    for (const cJSON *e = aud->child; e != NULL; e = e->next) {
        if (!cJSON_IsString(e) || e->valuestring == NULL) return 0;
        if (strcmp(e->valuestring, want) == 0) found = 1;
    }
    return found;
}

int vx_jwt_verify(const vx_jwt_verifier *v, const char *token, size_t len, vx_jwt_claims *c,
                  char *errbuf)
{
    const char *why;
    cJSON *h = NULL, *p = NULL;
    vx_jwt_claims got;
    memset(&got, 0, sizeof got);
    if (c != NULL) memset(c, 0, sizeof *c);

#define VX__FAIL(reason)                                                                           \
    do {                                                                                           \
        why = (reason);                                                                            \
        goto fail;                                                                                 \
    } while (0)

    if (!vx__verifier_ok(v)) VX__FAIL("verifier is misconfigured");
    if (token == NULL || len == 0) VX__FAIL("empty token");
    if (len > VX_TOKEN_MAX) VX__FAIL("token too long");
    if (vx__sodium_ready() != 0) VX__FAIL("libsodium failed to initialise");

    /* shape: alphabet and exactly three non-empty segments */
    size_t dot[2], ndots = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)token[i];
        if (ch == '.') {
            if (ndots == 2) VX__FAIL("more than three segments");
            dot[ndots++] = i;
        } else if (!vx__b64url_char(ch)) {
            VX__FAIL("byte outside the base64url alphabet");
        }
    }
    if (ndots != 2) VX__FAIL("fewer than three segments");
    const char *hs = token, *ps = token + dot[0] + 1, *ss = token + dot[1] + 1;
    size_t hn = dot[0], pn = dot[1] - dot[0] - 1, sn = len - dot[1] - 1;
    if (hn == 0 || pn == 0 || sn == 0) VX__FAIL("empty segment");

    /* header */
    h = vx__json_segment(hs, hn);
    if (h == NULL) VX__FAIL("header is not a valid JSON object");
    const cJSON *alg = vx__member(h, "alg");
    if (!cJSON_IsString(alg) || alg->valuestring == NULL || strcmp(alg->valuestring, "EdDSA") != 0)
        VX__FAIL("alg is not EdDSA");
    const cJSON *typ = vx__member(h, "typ");
    if (typ != NULL &&
        (!cJSON_IsString(typ) || typ->valuestring == NULL || strcmp(typ->valuestring, "JWT") != 0))
        VX__FAIL("header typ is not JWT");
    if (vx__member(h, "crit") != NULL) VX__FAIL("header has crit");
    if (vx__member(h, "jku") != NULL || vx__member(h, "jwk") != NULL ||
        vx__member(h, "x5u") != NULL || vx__member(h, "x5c") != NULL)
        VX__FAIL("header carries or points to a key");
    const cJSON *kid = vx__member(h, "kid");
    if (!cJSON_IsString(kid) || kid->valuestring == NULL) VX__FAIL("header has no kid");
    const vx_jwt_key *key = NULL;
    for (size_t i = 0; i < v->nkeys && key == NULL; i++)
        if (vx__arr_len(v->keys[i].kid, sizeof v->keys[i].kid) > 0 &&
            strcmp(v->keys[i].kid, kid->valuestring) == 0)
            key = &v->keys[i];
    if (key == NULL) VX__FAIL("unknown kid");

    /* signature, before anything in the payload is believed */
    uint8_t sig[VX__SIG_LEN];
    size_t siglen;
    if (vx__b64_get(ss, sn, sig, sizeof sig, &siglen) != 0 || siglen != sizeof sig)
        VX__FAIL("signature is not 64 bytes of base64url");
    if (crypto_sign_verify_detached(sig, (const uint8_t *)token, dot[1], key->pk) != 0)
        VX__FAIL("bad signature");

    /* payload */
    p = vx__json_segment(ps, pn);
    if (p == NULL) VX__FAIL("payload is not a valid JSON object");
    int64_t leeway = v->leeway_s < 0 ? 0 : v->leeway_s;
    uint64_t u;
    const cJSON *it = vx__member(p, "exp");
    if (it == NULL) VX__FAIL("no exp");
    if (vx__get_uint(it, &u) != 0) VX__FAIL("exp is not a non-negative integer");
    got.exp = (int64_t)u;
    if (v->now > vx__sat_add(got.exp, leeway)) VX__FAIL("expired");
    it = vx__member(p, "nbf");
    if (it != NULL) {
        if (vx__get_uint(it, &u) != 0) VX__FAIL("nbf is not a non-negative integer");
        got.nbf = (int64_t)u;
        if (vx__sat_add(v->now, leeway) < got.nbf) VX__FAIL("not yet valid (nbf)");
    }
    it = vx__member(p, "iat");
    if (it != NULL) {
        if (vx__get_uint(it, &u) != 0) VX__FAIL("iat is not a non-negative integer");
        got.iat = (int64_t)u;
        if (got.iat > vx__sat_add(v->now, leeway)) VX__FAIL("issued in the future (iat)");
    }
    it = vx__member(p, "iss");
    if (!cJSON_IsString(it) || it->valuestring == NULL || strcmp(it->valuestring, v->iss) != 0)
        VX__FAIL("wrong or missing iss");
    memcpy(got.iss, v->iss, strlen(v->iss) + 1);
    if (!vx__aud_ok(vx__member(p, "aud"), v->aud)) VX__FAIL("wrong or missing aud");
    memcpy(got.aud, v->aud, strlen(v->aud) + 1);
    if (vx__get_str(vx__member(p, "sub"), 1, sizeof got.sub - 1, got.sub) != 0)
        VX__FAIL("sub missing or not 1..128 bytes");
    if (vx__get_str(vx__member(p, "typ"), 1, sizeof got.typ - 1, got.typ) != 0)
        VX__FAIL("typ missing or not 1..15 bytes");
    it = vx__member(p, "jti");
    if (it != NULL && vx__get_str(it, 0, sizeof got.jti - 1, got.jti) != 0)
        VX__FAIL("jti not a string of at most 64 bytes");
    it = vx__member(p, "gen");
    if (it != NULL) {
        if (vx__get_uint(it, &u) != 0) VX__FAIL("gen is not a non-negative integer");
        got.gen = u;
    }
#undef VX__FAIL

    cJSON_Delete(h);
    cJSON_Delete(p);
    if (c != NULL) *c = got;
    if (errbuf != NULL) errbuf[0] = '\0';
    return 0;
fail:
    cJSON_Delete(h);
    cJSON_Delete(p);
    return vx_errf(errbuf, VX_JWT_ERRMSG_LEN, VX_EINVAL, "token refused: %s", why);
}
