/*
 * test_token.c - Ed25519 JSON Web Tokens (src/auth/token.c): round trips,
 * deterministic key derivation (checked against the derivation written out
 * by hand), key rotation, a battery of forged and malformed tokens (alg
 * "none"/HS256 confusion, case variants, tampering, foreign keys, truncated
 * signatures, time claims at and past the leeway, iss/aud, kid, shape,
 * alphabet, embedded keys, crit, claim types and sizes), and a randomized
 * single-byte mutation run.  Forged tokens are built from literal JSON by
 * the helpers below, either with an arbitrary signature or properly signed
 * with a known key (so that only the rule under test can refuse them).
 *
 * The test is self-contained (it does not link testutil.c, which pulls in
 * the index kernels): it has its own splitmix64 generator, seeded from
 * VX_SEED (default 7) and printed as "seed=N (rerun with VX_SEED=N)".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth/token.h"
#include "base/err.h"

#include <sodium.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1700000000
#define LEEWAY 60
#define ISS "vectron"
#define AUD "vectron-api"
#define B64V sodium_base64_VARIANT_URLSAFE_NO_PADDING

static const uint8_t SECRET[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t OTHER_SECRET[32] = "another secret, 32 bytes long!!!";

static vx_jwt_key K1, K2;

/* ---- helpers ------------------------------------------------------------ */

static void setup_keys(void)
{
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "k1", &K1), 0);
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "k2", &K2), 0);
}

static vx_jwt_verifier verifier(const vx_jwt_key *keys, size_t n)
{
    vx_jwt_verifier v = {.keys = keys, .nkeys = n, .iss = ISS, .aud = AUD, .leeway_s = LEEWAY,
                         .now = NOW};
    return v;
}

static vx_jwt_claims claims(void)
{
    vx_jwt_claims c;
    memset(&c, 0, sizeof c);
    strcpy(c.sub, "alice");
    strcpy(c.typ, "access");
    strcpy(c.jti, "4f1c2a");
    c.gen = 3;
    c.iat = NOW - 10;
    c.nbf = NOW - 10;
    c.exp = NOW + 900;
    strcpy(c.iss, ISS);
    strcpy(c.aud, AUD);
    return c;
}

/* malloc'd base64url (no padding) text of n bytes */
static char *b64(const void *bin, size_t n)
{
    size_t cap = sodium_base64_ENCODED_LEN(n, B64V);
    char *s = malloc(cap);
    assert_non_null(s);
    sodium_bin2base64(s, cap, bin, n, B64V);
    return s;
}

/* malloc'd "b64(h).b64(p)" */
static char *signing_input(const char *h, const char *p)
{
    char *hb = b64(h, strlen(h)), *pb = b64(p, strlen(p));
    size_t n = strlen(hb) + strlen(pb) + 2;
    char *s = malloc(n);
    assert_non_null(s);
    snprintf(s, n, "%s.%s", hb, pb);
    free(hb);
    free(pb);
    return s;
}

/* malloc'd "b64(h).b64(p).b64(sig)" with an arbitrary signature (siglen 0:
 * an empty third segment). */
static char *make_token(const char *h, const char *p, const uint8_t *sig, size_t siglen)
{
    char *in = signing_input(h, p);
    char *sb = b64(sig, siglen);
    size_t n = strlen(in) + strlen(sb) + 2;
    char *s = malloc(n);
    assert_non_null(s);
    snprintf(s, n, "%s.%s", in, sb);
    free(in);
    free(sb);
    return s;
}

/* A token with arbitrary header and payload JSON, properly Ed25519-signed
 * with key. */
static char *sign_raw(const vx_jwt_key *key, const char *h, const char *p)
{
    char *in = signing_input(h, p);
    uint8_t sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, (const uint8_t *)in, strlen(in), key->sk);
    free(in);
    return make_token(h, p, sig, sizeof sig);
}

#define HDR_K1 "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"k1\"}"

/* a payload with every claim, the given exp/nbf as literal JSON text */
static char *payload_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *payload_fmt(const char *fmt, ...)
{
    char *s = malloc(4096);
    assert_non_null(s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, 4096, fmt, ap);
    va_end(ap);
    return s;
}

static char *good_payload(void)
{
    return payload_fmt("{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"alice\",\"typ\":\"access\","
                       "\"gen\":3,\"iat\":%d,\"nbf\":%d,\"exp\":%d}",
                       ISS, AUD, NOW - 10, NOW - 10, NOW + 900);
}

static int verify_str(const vx_jwt_verifier *v, const char *tok, vx_jwt_claims *c)
{
    char err[VX_JWT_ERRMSG_LEN];
    int rc = vx_jwt_verify(v, tok, strlen(tok), c, err);
    if (rc != 0) assert_true(strlen(err) > 0);
    return rc;
}

/* The token is refused by a {K1, K2} verifier; frees it. */
#define REFUSED(tok) refused_((tok), #tok, __LINE__)
static void refused_(char *tok, const char *what, int line)
{
    vx_jwt_verifier v = verifier((vx_jwt_key[]){K1, K2}, 2);
    vx_jwt_claims c;
    char err[VX_JWT_ERRMSG_LEN];
    int rc = vx_jwt_verify(&v, tok, strlen(tok), &c, err);
    if (rc != VX_EINVAL) {
        print_error("line %d: %s was not refused (rc %d)\n", line, what, rc);
        free(tok);
        fail();
    }
    assert_true(strlen(err) > 0);
    assert_int_equal(c.sub[0], 0); /* zeroed on failure */
    free(tok);
}

/* The token is accepted by a {K1, K2} verifier; frees it. */
#define ACCEPTED(tok) accepted_((tok), #tok, __LINE__)
static void accepted_(char *tok, const char *what, int line)
{
    vx_jwt_verifier v = verifier((vx_jwt_key[]){K1, K2}, 2);
    vx_jwt_claims c;
    char err[VX_JWT_ERRMSG_LEN] = "";
    int rc = vx_jwt_verify(&v, tok, strlen(tok), &c, err);
    if (rc != 0) {
        print_error("line %d: %s was refused: %s\n", line, what, err);
        free(tok);
        fail();
    }
    assert_string_equal(c.sub, "alice");
    free(tok);
}

static void assert_claims_equal(const vx_jwt_claims *a, const vx_jwt_claims *b)
{
    assert_string_equal(a->sub, b->sub);
    assert_string_equal(a->typ, b->typ);
    assert_string_equal(a->jti, b->jti);
    assert_string_equal(a->iss, b->iss);
    assert_string_equal(a->aud, b->aud);
    assert_true(a->gen == b->gen);
    assert_true(a->iat == b->iat);
    assert_true(a->nbf == b->nbf);
    assert_true(a->exp == b->exp);
}

/* ---- tests -------------------------------------------------------------- */

static void test_round_trip(void **unused)
{
    (void)unused;
    setup_keys();
    vx_jwt_claims in = claims(), out;
    char *tok = NULL;
    assert_int_equal(vx_jwt_sign(&K1, &in, &tok), 0);
    vx_jwt_verifier v = verifier(&K1, 1);
    assert_int_equal(verify_str(&v, tok, &out), 0);
    assert_claims_equal(&in, &out);

    /* the header is exactly the documented one */
    const char *dot = strchr(tok, '.');
    char hdr[128];
    size_t hlen;
    assert_int_equal(sodium_base642bin((uint8_t *)hdr, sizeof hdr - 1, tok, (size_t)(dot - tok),
                                       NULL, &hlen, NULL, B64V),
                     0);
    hdr[hlen] = '\0';
    assert_string_equal(hdr, HDR_K1);
    /* errbuf and c may be NULL */
    assert_int_equal(vx_jwt_verify(&v, tok, strlen(tok), NULL, NULL), 0);
    /* the length is honoured: one byte short is another (refused) token */
    assert_int_equal(vx_jwt_verify(&v, tok, strlen(tok) - 1, NULL, NULL), VX_EINVAL);
    free(tok);

    /* empty jti is not emitted and comes back empty; odd bytes in sub are escaped */
    in.jti[0] = '\0';
    strcpy(in.sub, "bob \"quoted\" \\ \t\x01 \xc3\xa9");
    in.gen = (uint64_t)1 << 53;
    assert_int_equal(vx_jwt_sign(&K1, &in, &tok), 0);
    assert_int_equal(verify_str(&v, tok, &out), 0);
    assert_claims_equal(&in, &out);
    char *pl = strchr(tok, '.') + 1;
    char pbuf[2048];
    size_t plen;
    assert_int_equal(sodium_base642bin((uint8_t *)pbuf, sizeof pbuf - 1, pl,
                                       (size_t)(strchr(pl, '.') - pl), NULL, &plen, NULL, B64V),
                     0);
    pbuf[plen] = '\0';
    assert_null(strstr(pbuf, "jti"));
    assert_non_null(strstr(pbuf, "\"gen\":9007199254740992"));
    free(tok);

    /* sign refuses what verify would refuse */
    vx_jwt_claims bad = claims();
    bad.sub[0] = '\0';
    assert_int_equal(vx_jwt_sign(&K1, &bad, &tok), VX_EINVAL);
    assert_null(tok);
    bad = claims();
    bad.exp = -1;
    assert_int_equal(vx_jwt_sign(&K1, &bad, &tok), VX_EINVAL);
    bad = claims();
    bad.gen = ((uint64_t)1 << 53) + 1;
    assert_int_equal(vx_jwt_sign(&K1, &bad, &tok), VX_EINVAL);
    bad = claims();
    memset(bad.typ, 'x', sizeof bad.typ); /* unterminated */
    assert_int_equal(vx_jwt_sign(&K1, &bad, &tok), VX_EINVAL);
    bad = claims();
    bad.iss[0] = '\0';
    assert_int_equal(vx_jwt_sign(&K1, &bad, &tok), VX_EINVAL);
}

static void test_derive(void **unused)
{
    (void)unused;
    vx_jwt_key a, b, c;
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "k1", &a), 0);
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "k1", &b), 0);
    assert_memory_equal(&a, &b, sizeof a);
    assert_string_equal(a.kid, "k1");
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "k2", &c), 0);
    assert_memory_not_equal(a.pk, c.pk, sizeof a.pk);
    assert_memory_not_equal(a.sk, c.sk, sizeof a.sk);
    assert_int_equal(vx_jwt_key_derive(OTHER_SECRET, sizeof OTHER_SECRET, "k1", &c), 0);
    assert_memory_not_equal(a.pk, c.pk, sizeof a.pk);

    /* the derivation, written out: keyed BLAKE2b-256 for a 16..64-byte secret */
    uint8_t seed[32], pk[32], sk[64];
    const char *msg = "vectron-jwt-v1:k1";
    crypto_generichash(seed, 32, (const uint8_t *)msg, strlen(msg), SECRET, sizeof SECRET);
    crypto_sign_seed_keypair(pk, sk, seed);
    assert_memory_equal(a.pk, pk, 32);
    assert_memory_equal(a.sk, sk, 64);
    /* a short secret is hashed first and the hash is the key */
    const uint8_t shorts[5] = "short";
    uint8_t hk[32];
    crypto_generichash(hk, 32, shorts, sizeof shorts, NULL, 0);
    crypto_generichash(seed, 32, (const uint8_t *)msg, strlen(msg), hk, 32);
    crypto_sign_seed_keypair(pk, sk, seed);
    assert_int_equal(vx_jwt_key_derive(shorts, sizeof shorts, "k1", &c), 0);
    assert_memory_equal(c.pk, pk, 32);
    /* so is a long one */
    uint8_t longs[100];
    memset(longs, 'L', sizeof longs);
    crypto_generichash(hk, 32, longs, sizeof longs, NULL, 0);
    crypto_generichash(seed, 32, (const uint8_t *)msg, strlen(msg), hk, 32);
    crypto_sign_seed_keypair(pk, sk, seed);
    assert_int_equal(vx_jwt_key_derive(longs, sizeof longs, "k1", &c), 0);
    assert_memory_equal(c.pk, pk, 32);

    /* kid and secret checks */
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "", &c), VX_EINVAL);
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, NULL, &c), VX_EINVAL);
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "a/b", &c), VX_EINVAL);
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "a b", &c), VX_EINVAL);
    assert_int_equal(
        vx_jwt_key_derive(SECRET, sizeof SECRET, "012345678901234567890123456789012", &c),
        VX_EINVAL); /* 33 */
    assert_int_equal(
        vx_jwt_key_derive(SECRET, sizeof SECRET, "01234567890123456789012345678901", &c), 0);
    assert_int_equal(vx_jwt_key_derive(SECRET, sizeof SECRET, "Az09._-", &c), 0);
    assert_int_equal(vx_jwt_key_derive(SECRET, 0, "k1", &c), VX_EINVAL);
    assert_int_equal(vx_jwt_key_derive(NULL, 4, "k1", &c), VX_EINVAL);
}

static void test_rotation(void **unused)
{
    (void)unused;
    setup_keys();
    vx_jwt_claims in = claims(), out;
    char *t1, *t2;
    assert_int_equal(vx_jwt_sign(&K1, &in, &t1), 0);
    assert_int_equal(vx_jwt_sign(&K2, &in, &t2), 0);
    vx_jwt_key both[2] = {K1, K2};
    vx_jwt_verifier v = verifier(both, 2);
    assert_int_equal(verify_str(&v, t1, &out), 0);
    assert_claims_equal(&in, &out);
    assert_int_equal(verify_str(&v, t2, &out), 0);
    assert_claims_equal(&in, &out);
    vx_jwt_verifier only2 = verifier(&K2, 1);
    char err[VX_JWT_ERRMSG_LEN];
    assert_int_equal(vx_jwt_verify(&only2, t1, strlen(t1), &out, err), VX_EINVAL);
    assert_non_null(strstr(err, "unknown kid"));
    assert_int_equal(verify_str(&only2, t2, &out), 0);
    /* no keys at all */
    vx_jwt_verifier none = verifier(NULL, 0);
    assert_int_equal(verify_str(&none, t2, &out), VX_EINVAL);
    /* a misconfigured verifier refuses everything */
    vx_jwt_verifier noiss = verifier(both, 2);
    noiss.iss = NULL;
    assert_int_equal(verify_str(&noiss, t1, &out), VX_EINVAL);
    free(t1);
    free(t2);
}

static void test_forged_alg(void **unused)
{
    (void)unused;
    setup_keys();
    char *p = good_payload();
    /* a real signature over the same payload, to graft onto forged headers */
    char *good = sign_raw(&K1, HDR_K1, p);
    uint8_t realsig[64];
    size_t n;
    assert_int_equal(sodium_base642bin(realsig, sizeof realsig, strrchr(good, '.') + 1,
                                       strlen(strrchr(good, '.') + 1), NULL, &n, NULL, B64V),
                     0);
    ACCEPTED(good);

    const char *none = "{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"k1\"}";
    REFUSED(make_token(none, p, NULL, 0));
    REFUSED(make_token(none, p, realsig, sizeof realsig));
    REFUSED(sign_raw(&K1, none, p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"None\",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"NONE\",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"none \",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"eddsa\",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EDDSA\",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA \",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\\u0000\",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":[\"EdDSA\"],\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"ALG\":\"EdDSA\",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"typ\":\"JWT\",\"kid\":\"k1\"}", p)); /* missing alg */
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"alg\":\"EdDSA\",\"kid\":\"k1\"}", p)); /* dup */
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"typ\":\"jwt+x\",\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"typ\":1,\"kid\":\"k1\"}", p));
    REFUSED(sign_raw(&K1, "[\"EdDSA\"]", p));
    ACCEPTED(sign_raw(&K1, "{\"kid\":\"k1\",\"alg\":\"EdDSA\"}", p)); /* typ optional */

    /* HS256 with the public key (raw, then its base64url text) as the secret */
    const char *hs = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"k1\"}";
    char *in = signing_input(hs, p);
    char *pktext = b64(K1.pk, sizeof K1.pk);
    const uint8_t *hkeys[2] = {K1.pk, (const uint8_t *)pktext};
    size_t hlens[2] = {sizeof K1.pk, strlen(pktext)};
    for (int i = 0; i < 2; i++) {
        crypto_auth_hmacsha256_state st;
        uint8_t mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_init(&st, hkeys[i], hlens[i]);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)in, strlen(in));
        crypto_auth_hmacsha256_final(&st, mac);
        REFUSED(make_token(hs, p, mac, sizeof mac));
        /* and the same MAC under an EdDSA header */
        REFUSED(make_token(HDR_K1, p, mac, sizeof mac));
    }
    free(in);
    free(pktext);
    free(p);
}

/* Replace segment `seg` (0..2) of tok with text; returns a new token. */
static char *splice(const char *tok, int seg, const char *text)
{
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    const char *s[3] = {tok, d1 + 1, d2 + 1};
    size_t n[3] = {(size_t)(d1 - tok), (size_t)(d2 - d1 - 1), strlen(d2 + 1)};
    size_t cap = strlen(tok) + strlen(text) + 3;
    char *out = malloc(cap);
    assert_non_null(out);
    char *w = out;
    for (int i = 0; i < 3; i++) {
        if (i > 0) *w++ = '.';
        if (i == seg) {
            memcpy(w, text, strlen(text));
            w += strlen(text);
        } else {
            memcpy(w, s[i], n[i]);
            w += n[i];
        }
    }
    *w = '\0';
    return out;
}

static void test_forged_tampering(void **unused)
{
    (void)unused;
    setup_keys();
    vx_jwt_claims in = claims();
    char *tok;
    assert_int_equal(vx_jwt_sign(&K1, &in, &tok), 0);

    /* tampered payload: same claims but another subject, signature kept */
    vx_jwt_claims evil = claims();
    strcpy(evil.sub, "admin");
    char *etok;
    assert_int_equal(vx_jwt_sign(&K1, &evil, &etok), 0);
    const char *d1 = strchr(etok, '.'), *d2 = strchr(d1 + 1, '.');
    char *epay = strndup(d1 + 1, (size_t)(d2 - d1 - 1));
    REFUSED(splice(tok, 1, epay));
    free(epay);
    free(etok);

    /* tampered header: an extra member, payload and signature kept */
    char *hb = b64(HDR_K1 " ", strlen(HDR_K1) + 1);
    REFUSED(splice(tok, 0, hb));
    free(hb);
    hb = b64("{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"k2\"}", 37);
    REFUSED(splice(tok, 0, hb)); /* re-pointed at the other key */
    free(hb);

    /* signed by a key that is not k1's, under kid k1 */
    vx_jwt_key fake;
    assert_int_equal(vx_jwt_key_derive(OTHER_SECRET, sizeof OTHER_SECRET, "k1", &fake), 0);
    char *ftok;
    assert_int_equal(vx_jwt_sign(&fake, &in, &ftok), 0);
    REFUSED(ftok);

    /* truncated and overlong signatures, a zero signature */
    char *p = good_payload();
    char *good = sign_raw(&K1, HDR_K1, p);
    uint8_t sig[65];
    size_t n;
    const char *ss = strrchr(good, '.') + 1;
    assert_int_equal(sodium_base642bin(sig, 64, ss, strlen(ss), NULL, &n, NULL, B64V), 0);
    sig[64] = 0;
    REFUSED(make_token(HDR_K1, p, sig, 63));
    REFUSED(make_token(HDR_K1, p, sig, 65));
    ACCEPTED(make_token(HDR_K1, p, sig, 64));
    memset(sig, 0, sizeof sig);
    REFUSED(make_token(HDR_K1, p, sig, 64));
    free(good);
    free(p);
    free(tok);
}

static void test_time_claims(void **unused)
{
    (void)unused;
    setup_keys();
    const char *fmt = "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"alice\","
                      "\"typ\":\"access\",\"iat\":%" PRId64 ",\"nbf\":%" PRId64 ",\"exp\":%" PRId64
                      "}";
    int64_t now = NOW, L = LEEWAY;
    struct {
        int64_t iat, nbf, exp;
        int ok;
    } cases[] = {
        {now - 100, now - 100, now - L - 1, 0}, /* expired */
        {now - 100, now - 100, now - L, 1},     /* just inside the leeway */
        {now - 100, now - 100, now, 1},
        {now, now + L + 1, now + 900, 0}, /* not yet valid */
        {now, now + L, now + 900, 1},     /* within the leeway */
        {now + L + 1, now, now + 900, 0}, /* issued in the future */
        {now + L, now, now + 900, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = payload_fmt(fmt, cases[i].iat, cases[i].nbf, cases[i].exp);
        char *t = sign_raw(&K1, HDR_K1, p);
        vx_jwt_verifier v = verifier(&K1, 1);
        int rc = verify_str(&v, t, NULL);
        if (rc != (cases[i].ok ? 0 : VX_EINVAL)) {
            print_error("time case %zu: rc %d\n", i, rc);
            fail();
        }
        free(t);
        free(p);
    }
    /* the leeway is taken from the verifier; a negative one counts as 0 */
    char *p = payload_fmt(fmt, now, now, now - 1);
    char *t = sign_raw(&K1, HDR_K1, p);
    vx_jwt_verifier v = verifier(&K1, 1);
    assert_int_equal(verify_str(&v, t, NULL), 0);
    v.leeway_s = 0;
    assert_int_equal(verify_str(&v, t, NULL), VX_EINVAL);
    v.leeway_s = -1000;
    assert_int_equal(verify_str(&v, t, NULL), VX_EINVAL);
    v.leeway_s = INT64_MAX; /* saturates, does not wrap */
    assert_int_equal(verify_str(&v, t, NULL), 0);
    free(t);
    free(p);

    /* exp: required, a non-negative integer */
    const char *base = "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"alice\","
                       "\"typ\":\"access\"";
    const char *bad_exp[] = {
        "}",                                  /* missing */
        ",\"exp\":\"1700000900\"}",           /* string */
        ",\"exp\":1700000900.5}",             /* fractional */
        ",\"exp\":-1}",                       /* negative */
        ",\"exp\":1e300}",                    /* beyond 2^53 */
        ",\"exp\":null}", ",\"exp\":true}", ",\"exp\":[1700000900]}",
        ",\"exp\":1700000900,\"nbf\":\"0\"}", /* nbf not a number */
        ",\"exp\":1700000900,\"iat\":0.5}",   /* iat fractional */
        ",\"exp\":1700000900,\"exp\":1700000900}", /* duplicate */
    };
    for (size_t i = 0; i < sizeof bad_exp / sizeof bad_exp[0]; i++) {
        char *pp = payload_fmt("%s%s", base, bad_exp[i]);
        REFUSED(sign_raw(&K1, HDR_K1, pp));
        free(pp);
    }
    char *pp = payload_fmt("%s%s", base, ",\"exp\":1.7000009e9}"); /* integral in exponent form */
    ACCEPTED(sign_raw(&K1, HDR_K1, pp));
    free(pp);
}

static void test_iss_aud_claims(void **unused)
{
    (void)unused;
    setup_keys();
    const char *fmt = "{\"iss\":%s,\"aud\":%s,\"sub\":%s,\"typ\":%s%s,\"exp\":1700000900}";
    char sub129[140] = "\"", sub128[140] = "\"";
    memset(sub129 + 1, 's', 129);
    strcpy(sub129 + 130, "\"");
    memset(sub128 + 1, 's', 128);
    strcpy(sub128 + 129, "\"");
    struct {
        const char *iss, *aud, *sub, *typ, *extra;
        int ok;
    } cases[] = {
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"access\"", "", 1},
        {"\"evil\"", "\"" AUD "\"", "\"alice\"", "\"access\"", "", 0},      /* wrong iss */
        {"\"Vectron\"", "\"" AUD "\"", "\"alice\"", "\"access\"", "", 0},   /* case */
        {"[\"" ISS "\"]", "\"" AUD "\"", "\"alice\"", "\"access\"", "", 0}, /* iss array */
        {"null", "\"" AUD "\"", "\"alice\"", "\"access\"", "", 0},
        {"\"" ISS "\"", "\"other\"", "\"alice\"", "\"access\"", "", 0}, /* wrong aud */
        {"\"" ISS "\"", "[\"other\",\"" AUD "\"]", "\"alice\"", "\"access\"", "", 1},
        {"\"" ISS "\"", "[\"other\",\"more\"]", "\"alice\"", "\"access\"", "", 0},
        {"\"" ISS "\"", "[]", "\"alice\"", "\"access\"", "", 0},
        {"\"" ISS "\"", "[\"" AUD "\",7]", "\"alice\"", "\"access\"", "", 0},
        {"\"" ISS "\"", "7", "\"alice\"", "\"access\"", "", 0},
        {"\"" ISS "\"", "\"" AUD "\"", "\"\"", "\"access\"", "", 0},  /* empty sub */
        {"\"" ISS "\"", "\"" AUD "\"", sub129, "\"access\"", "", 0},  /* sub too long */
        {"\"" ISS "\"", "\"" AUD "\"", sub128, "\"access\"", "", 1},  /* sub at the limit */
        {"\"" ISS "\"", "\"" AUD "\"", "5", "\"access\"", "", 0},     /* sub not a string */
        {"\"" ISS "\"", "\"" AUD "\"", "\"al\\u0000ice\"", "\"access\"", "", 0},
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"0123456789abcdef\"", "", 0}, /* typ 16 */
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"\"", "", 0},
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"refresh\"", ",\"jti\":\"\"", 1},
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"refresh\"", ",\"jti\":5", 0},
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"refresh\"",
         ",\"jti\":\"0123456789012345678901234567890123456789012345678901234567890123x\"", 0},
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"access\"", ",\"gen\":-1", 0},
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"access\"", ",\"gen\":1.5", 0},
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"access\"", ",\"gen\":\"1\"", 0},
        {"\"" ISS "\"", "\"" AUD "\"", "\"alice\"", "\"access\"", ",\"sub\":\"bob\"", 0}, /* dup */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = payload_fmt(fmt, cases[i].iss, cases[i].aud, cases[i].sub, cases[i].typ,
                              cases[i].extra);
        char *t = sign_raw(&K1, HDR_K1, p);
        vx_jwt_verifier v = verifier(&K1, 1);
        vx_jwt_claims c;
        int rc = verify_str(&v, t, &c);
        if (rc != (cases[i].ok ? 0 : VX_EINVAL)) {
            print_error("claim case %zu (%s): rc %d\n", i, p, rc);
            fail();
        }
        if (rc == 0) {
            assert_string_equal(c.aud, AUD);
            assert_string_equal(c.iss, ISS);
            assert_true(c.gen == 0);
            assert_true(c.iat == 0 && c.nbf == 0);
        }
        free(t);
        free(p);
    }
    /* a payload that is not an object, or not JSON */
    REFUSED(sign_raw(&K1, HDR_K1, "[1,2]"));
    REFUSED(sign_raw(&K1, HDR_K1, "{\"exp\":1700000900"));
    char *p = good_payload();
    char *pj = payload_fmt("%s ,", p);
    REFUSED(sign_raw(&K1, HDR_K1, pj)); /* trailing garbage */
    free(pj);
    pj = payload_fmt("%s  \n", p);
    ACCEPTED(sign_raw(&K1, HDR_K1, pj)); /* trailing whitespace is JSON */
    free(pj);
    free(p);
}

static void test_kid_and_header_keys(void **unused)
{
    (void)unused;
    setup_keys();
    char *p = good_payload();
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"k3\"}", p)); /* unknown */
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"typ\":\"JWT\"}", p));              /* missing */
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"K1\"}", p));               /* case */
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1 \"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1\\u0000\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":1}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":[\"k1\"]}", p));
    /* a k2-signed token under kid k1 */
    REFUSED(sign_raw(&K2, HDR_K1, p));

    /* embedded or referenced keys, crit */
    char *pkx = b64(K1.pk, sizeof K1.pk);
    char h[512];
    snprintf(h, sizeof h,
             "{\"alg\":\"EdDSA\",\"typ\":\"JWT\",\"kid\":\"k1\",\"jwk\":{\"kty\":\"OKP\","
             "\"crv\":\"Ed25519\",\"x\":\"%s\"}}",
             pkx);
    REFUSED(sign_raw(&K1, h, p));
    free(pkx);
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"jku\":\"https://evil/\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"x5u\":\"https://evil/\"}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"x5c\":[\"MIIB\"]}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"jwk\":null}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"crit\":[\"exp\"],\"exp\":1}", p));
    REFUSED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"crit\":[]}", p));
    /* unknown, harmless members are fine */
    ACCEPTED(sign_raw(&K1, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"cty\":\"x\"}", p));

    /* a header over 2048 decoded bytes */
    char big[2200];
    int n = snprintf(big, sizeof big, "{\"alg\":\"EdDSA\",\"kid\":\"k1\",\"pad\":\"");
    memset(big + n, 'x', 2040 - (size_t)n);
    strcpy(big + 2040, "\"}");
    ACCEPTED(sign_raw(&K1, big, p)); /* 2042 bytes */
    memset(big + 2040, 'x', 10);
    strcpy(big + 2050, "\"}");
    REFUSED(sign_raw(&K1, big, p)); /* 2052 bytes */
    free(p);
}

static void test_shape_and_alphabet(void **unused)
{
    (void)unused;
    setup_keys();
    vx_jwt_claims in = claims();
    char *tok;
    assert_int_equal(vx_jwt_sign(&K1, &in, &tok), 0);
    size_t n = strlen(tok);
    const char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    char buf[VX_TOKEN_MAX + 64];

    /* oversized: VX_TOKEN_MAX + 1 bytes of base64url text shaped like a token */
    char *big = malloc(VX_TOKEN_MAX + 2);
    assert_non_null(big);
    memset(big, 'A', VX_TOKEN_MAX + 1);
    big[100] = '.';
    big[4000] = '.';
    big[VX_TOKEN_MAX + 1] = '\0';
    REFUSED(big);
    /* the valid token, with len claiming more than the maximum */
    vx_jwt_verifier v = verifier(&K1, 1);
    char *pad = calloc(1, VX_TOKEN_MAX + 2);
    assert_non_null(pad);
    memcpy(pad, tok, n);
    assert_int_equal(vx_jwt_verify(&v, pad, VX_TOKEN_MAX + 1, NULL, NULL), VX_EINVAL);
    free(pad);
    assert_int_equal(vx_jwt_verify(&v, tok, 0, NULL, NULL), VX_EINVAL);
    assert_int_equal(vx_jwt_verify(&v, NULL, 10, NULL, NULL), VX_EINVAL);
    assert_int_equal(vx_jwt_verify(NULL, tok, n, NULL, NULL), VX_EINVAL);

    /* two segments, four segments, empty segments */
    REFUSED(strndup(tok, (size_t)(d2 - tok)));
    snprintf(buf, sizeof buf, "%s.%s", tok, d2 + 1);
    REFUSED(strdup(buf));
    snprintf(buf, sizeof buf, "%s.", tok);
    REFUSED(strdup(buf));
    REFUSED(splice(tok, 0, ""));
    REFUSED(splice(tok, 1, ""));
    REFUSED(splice(tok, 2, ""));
    REFUSED(strdup(".."));
    REFUSED(strdup(""));
    snprintf(buf, sizeof buf, "%.*s..%s", (int)(d1 - tok), tok, d2 + 1);
    REFUSED(strdup(buf));

    /* padding: appended '=' and a padded encoding of the same bytes */
    snprintf(buf, sizeof buf, "%s=", tok);
    REFUSED(strdup(buf));
    snprintf(buf, sizeof buf, "%s==", tok);
    REFUSED(strdup(buf));
    const char *hj = HDR_K1; /* 39 bytes: its padded form ends in '=' */
    char hpad[128];
    sodium_bin2base64(hpad, sizeof hpad, (const uint8_t *)hj, strlen(hj),
                      sodium_base64_VARIANT_URLSAFE);
    assert_non_null(strchr(hpad, '='));
    REFUSED(splice(tok, 0, hpad));

    /* bytes outside the alphabet */
    const char bad[] = {'+', '/', ' ', '\n', '=', '*', '\x80', '\xff'};
    for (size_t i = 0; i < sizeof bad; i++) {
        char *m = strdup(tok);
        m[(size_t)(d1 - tok) + 3] = bad[i];
        REFUSED(m);
    }
    /* a NUL inside len */
    char *m = strdup(tok);
    m[5] = '\0';
    assert_int_equal(vx_jwt_verify(&v, m, n, NULL, NULL), VX_EINVAL);
    free(m);
    /* the standard alphabet's form of the signature */
    char *sigstd = strdup(d2 + 1);
    int changed = 0;
    for (char *q = sigstd; *q; q++) {
        if (*q == '-') *q = '+', changed = 1;
        if (*q == '_') *q = '/', changed = 1;
    }
    if (changed) REFUSED(splice(tok, 2, sigstd));
    free(sigstd);
    /* non-canonical: the signature's 86th character carries 2 data bits and
     * 4 zero bits; setting a zero bit keeps the decoded bytes but is refused */
    {
        static const char a64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        char *nc = strdup(tok);
        char *last = nc + n - 1;
        size_t idx = (size_t)(strchr(a64, *last) - a64);
        assert_int_equal(idx & 15, 0);
        *last = a64[idx | 1];
        REFUSED(nc);
    }
    /* a segment length that is 1 mod 4 */
    snprintf(buf, sizeof buf, "%sA", tok);
    REFUSED(strdup(buf));

    ACCEPTED(tok);
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t test_seed(void)
{
    uint64_t seed = 7;
    const char *env = getenv("VX_SEED");
    if (env != NULL && *env != '\0') {
        char *end;
        unsigned long long s = strtoull(env, &end, 10);
        if (*end == '\0') seed = (uint64_t)s;
    }
    fprintf(stderr, "seed=%" PRIu64 " (rerun with VX_SEED=%" PRIu64 ")\n", seed, seed);
    return seed;
}

static void test_random_mutations(void **unused)
{
    (void)unused;
    setup_keys();
    uint64_t rng = test_seed();
    static const char alpha[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    vx_jwt_claims in = claims(), out;
    char *tok;
    assert_int_equal(vx_jwt_sign(&K1, &in, &tok), 0);
    size_t n = strlen(tok);
    vx_jwt_key both[2] = {K1, K2};
    vx_jwt_verifier v = verifier(both, 2);
    assert_int_equal(verify_str(&v, tok, &out), 0);

    char *m = malloc(n + 1);
    assert_non_null(m);
    int refused = 0, accepted = 0, same = 0;
    for (int it = 0; it < 2000; it++) {
        memcpy(m, tok, n + 1);
        size_t pos = (size_t)(splitmix64(&rng) % n);
        uint64_t r = splitmix64(&rng);
        char nb = (r & 1) ? alpha[(r >> 8) % (sizeof alpha - 1)] : (char)(uint8_t)(r >> 8);
        m[pos] = nb;
        if (memcmp(m, tok, n) == 0) {
            same++;
            continue;
        }
        /* the mutation may contain a NUL: verify over the full length */
        int rc = vx_jwt_verify(&v, m, n, &out, NULL);
        if (rc == 0) {
            /* only a non-canonical re-encoding of the same bytes may pass */
            assert_claims_equal(&in, &out);
            accepted++;
        } else {
            assert_int_equal(rc, VX_EINVAL);
            refused++;
        }
    }
    fprintf(stderr, "mutations: %d refused, %d accepted (same bytes), %d unchanged\n", refused,
            accepted, same);
    assert_int_equal(refused + accepted + same, 2000);
    /* libsodium refuses non-zero trailing bits, so nothing else decodes the same */
    assert_int_equal(accepted, 0);

    /* truncations at every length */
    for (size_t k = 0; k < n; k++)
        assert_int_equal(vx_jwt_verify(&v, tok, k, NULL, NULL), VX_EINVAL);
    free(m);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_derive),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_forged_alg),
        cmocka_unit_test(test_forged_tampering),
        cmocka_unit_test(test_time_claims),
        cmocka_unit_test(test_iss_aud_claims),
        cmocka_unit_test(test_kid_and_header_keys),
        cmocka_unit_test(test_shape_and_alphabet),
        cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
