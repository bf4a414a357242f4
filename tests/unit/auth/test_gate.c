/*
 * test_gate.c - the gate (src/auth/gate.c): the bootstrap admin key, API
 * keys by header and by Bearer, scopes and roles, password logins with
 * argon2id, access and refresh tokens with revocation (one refresh token,
 * every token of a user), token buckets per key that do not slow other
 * keys, the per-address failure budget that stops token work, and the rate
 * held to at most 10 % over the configured one under 3x load.  Randomness is
 * libsodium's (keys, token ids); timing parts poll with deadlines.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "auth/gate.h"
#include "auth/token.h"
#include "base/err.h"

#include <cjson/cJSON.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ADMIN "root-key-0123456789abcdef"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static vx_gate *gate_burst(double key_rate, double anon_rate, double anon_burst)
{
    vx_gate_options o = {.enabled = true, .admin_key = ADMIN, .key_rate = key_rate,
                         .anon_rate = anon_rate, .anon_burst = anon_burst};
    vx_gate *g;
    char err[VX_GATE_ERRMSG_LEN];
    assert_int_equal(vx_gate_new(&o, &g, err), 0);
    return g;
}

static vx_gate *gate(double key_rate, double anon_rate)
{
    return gate_burst(key_rate, anon_rate, anon_rate > 0 ? 2 * anon_rate : 0);
}

/* A state with user ann (write on "docs") and the given keys. */
typedef struct fixture {
    Vxpd__State st;
    Vxpd__User u, *users[1];
    Vxpd__ApiKey k[2], *keys[2];
    Vxpd__RevokedToken r, *revoked[1];
    char *scope[1];
    char key[2][VX_KEY_MAX], id[2][13];
    uint8_t digest[2][32];
    char hash[128];
} fixture;

static void fixture_init(fixture *f, const char *password)
{
    memset(f, 0, sizeof *f);
    vxpd__state__init(&f->st);
    vxpd__user__init(&f->u);
    f->scope[0] = "docs";
    assert_int_equal(vx_gate_hash_password(password, f->hash, sizeof f->hash), 0);
    assert_true(strncmp(f->hash, "$argon2id$", 10) == 0);
    assert_null(strstr(f->hash, password));
    f->u.name = "ann";
    f->u.pwhash = f->hash;
    f->u.role = VX_ROLE_WRITE;
    f->u.collections = f->scope;
    f->u.n_collections = 1;
    f->u.token_gen = 1;
    f->users[0] = &f->u;
    f->st.users = f->users;
    f->st.n_users = 1;
    for (int i = 0; i < 2; i++) {
        vx_gate_new_key(f->key[i], f->id[i], f->digest[i]);
        vxpd__api_key__init(&f->k[i]);
        f->k[i].id = f->id[i];
        f->k[i].digest.data = f->digest[i];
        f->k[i].digest.len = 32;
        f->k[i].name = "";
        f->k[i].role = i == 0 ? VX_ROLE_READ : VX_ROLE_ADMIN;
        if (i == 0) {
            f->k[i].collections = f->scope;
            f->k[i].n_collections = 1;
        }
        f->keys[i] = &f->k[i];
    }
    f->st.api_keys = f->keys;
    f->st.n_api_keys = 2;
    f->st.auth_epoch = 7;
}

static vx_gate_verdict auth_key(vx_gate *g, const char *hdr, const char *bearer, vx_principal *p)
{
    int retry = 0;
    char authz[VX_TOKEN_MAX + 16];
    if (bearer) snprintf(authz, sizeof authz, "Bearer %s", bearer);
    return vx_gate_authenticate(g, hdr, bearer ? authz : NULL, "10.0.0.1", p, &retry);
}

static void test_off_and_setup(void **unused)
{
    (void)unused;
    vx_gate_options o = {.enabled = false};
    vx_gate *g;
    char err[VX_GATE_ERRMSG_LEN];
    assert_int_equal(vx_gate_new(&o, &g, err), 0);
    vx_principal p;
    int retry;
    assert_int_equal(vx_gate_authenticate(g, NULL, NULL, "x", &p, &retry), VX_GATE_OK);
    assert_true(vx_gate_allows(&p, VX_ROLE_ADMIN, NULL));
    vx_principal_clear(&p);
    vx_gate_free(g);
    vx_gate_options on = {.enabled = true, .admin_key = "short"};
    assert_int_equal(vx_gate_new(&on, &g, err), VX_EINVAL);
    assert_non_null(strstr(err, "admin key"));
    vx_gate_options badkid = {.enabled = true, .admin_key = ADMIN, .jwt_accept = "ok,bad kid"};
    assert_int_equal(vx_gate_new(&badkid, &g, err), VX_EINVAL);
}

static void test_keys_and_scopes(void **unused)
{
    (void)unused;
    vx_gate *g = gate(0, -1);
    fixture f;
    fixture_init(&f, "correct horse");
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    assert_int_equal(vx_gate_epoch(g), 7);
    vx_principal p;
    /* the bootstrap admin, by either header */
    assert_int_equal(auth_key(g, ADMIN, NULL, &p), VX_GATE_OK);
    assert_string_equal(p.name, "admin");
    assert_true(vx_gate_allows(&p, VX_ROLE_ADMIN, NULL));
    vx_principal_clear(&p);
    assert_int_equal(auth_key(g, NULL, ADMIN, &p), VX_GATE_OK);
    vx_principal_clear(&p);
    /* a read key scoped to docs */
    assert_int_equal(auth_key(g, f.key[0], NULL, &p), VX_GATE_OK);
    assert_true(vx_gate_allows(&p, VX_ROLE_READ, "docs"));
    assert_false(vx_gate_allows(&p, VX_ROLE_WRITE, "docs"));
    assert_false(vx_gate_allows(&p, VX_ROLE_READ, "other"));
    assert_false(vx_gate_allows(&p, VX_ROLE_READ, NULL));
    vx_principal_clear(&p);
    /* a global admin key by Bearer */
    assert_int_equal(auth_key(g, NULL, f.key[1], &p), VX_GATE_OK);
    assert_true(vx_gate_allows(&p, VX_ROLE_ADMIN, "anything"));
    assert_true(vx_gate_allows(&p, VX_ROLE_ADMIN, NULL));
    vx_principal_clear(&p);
    /* forged and broken keys */
    char bad[VX_KEY_MAX];
    snprintf(bad, sizeof bad, "%s", f.key[0]);
    bad[strlen(bad) - 1] ^= 1; /* right id, wrong secret */
    assert_int_equal(auth_key(g, bad, NULL, &p), VX_GATE_UNAUTHORIZED);
    assert_int_equal(auth_key(g, "vx_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, &p),
                     VX_GATE_UNAUTHORIZED);
    assert_int_equal(auth_key(g, "", NULL, &p), VX_GATE_UNAUTHORIZED);
    assert_int_equal(auth_key(g, NULL, NULL, &p), VX_GATE_UNAUTHORIZED);
    assert_int_equal(vx_gate_authenticate(g, NULL, "Basic YWRtaW46YWRtaW4=", "10.0.0.1", &p, NULL),
                     VX_GATE_UNAUTHORIZED);
    /* revoked: the key leaves the state */
    f.st.n_api_keys = 1;
    f.st.api_keys = &f.keys[1];
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    assert_int_equal(auth_key(g, f.key[0], NULL, &p), VX_GATE_UNAUTHORIZED);
    /* listings carry no secret */
    cJSON *l = vx_gate_list(g, true);
    char *text = cJSON_PrintUnformatted(l);
    assert_null(strstr(text, f.key[1] + 16));
    assert_non_null(strstr(text, f.id[1]));
    free(text);
    cJSON_Delete(l);
    vx_gate_free(g);
}

static void test_login_refresh_revoke(void **unused)
{
    (void)unused;
    vx_gate *g = gate(0, -1);
    fixture f;
    fixture_init(&f, "correct horse");
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    char *access, *refresh;
    unsigned ttl;
    assert_int_equal(vx_gate_login(g, "ann", "wrong horse", &access, &refresh, &ttl), VX_GATE_UNAUTHORIZED);
    assert_null(access);
    assert_int_equal(vx_gate_login(g, "bob", "correct horse", &access, &refresh, &ttl), VX_GATE_UNAUTHORIZED);
    assert_int_equal(vx_gate_login(g, "ann", "correct horse", &access, &refresh, &ttl), VX_GATE_OK);
    assert_int_equal(ttl, 900);
    vx_principal p;
    assert_int_equal(auth_key(g, NULL, access, &p), VX_GATE_OK);
    assert_string_equal(p.name, "user:ann");
    assert_true(vx_gate_allows(&p, VX_ROLE_WRITE, "docs"));
    assert_false(vx_gate_allows(&p, VX_ROLE_ADMIN, "docs"));
    assert_false(vx_gate_allows(&p, VX_ROLE_READ, "other"));
    vx_principal_clear(&p);
    /* a refresh token is not an access token, nor the other way round */
    assert_int_equal(auth_key(g, NULL, refresh, &p), VX_GATE_UNAUTHORIZED);
    char *a2;
    assert_int_equal(vx_gate_refresh(g, access, &a2, &ttl), VX_GATE_UNAUTHORIZED);
    assert_int_equal(vx_gate_refresh(g, refresh, &a2, &ttl), VX_GATE_OK);
    assert_int_equal(auth_key(g, NULL, a2, &p), VX_GATE_OK);
    vx_principal_clear(&p);
    /* a role change applies at once (the token carries no role) */
    f.u.role = VX_ROLE_READ;
    f.st.auth_epoch++;
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    assert_int_equal(auth_key(g, NULL, access, &p), VX_GATE_OK);
    assert_false(vx_gate_allows(&p, VX_ROLE_WRITE, "docs"));
    vx_principal_clear(&p);
    /* logout: this refresh token's id is revoked */
    char jti[65];
    int64_t exp;
    assert_int_equal(vx_gate_refresh_id(g, refresh, jti, sizeof jti, &exp), VX_GATE_OK);
    vxpd__revoked_token__init(&f.r);
    f.r.jti = jti;
    f.r.exp = exp;
    f.revoked[0] = &f.r;
    f.st.revoked = f.revoked;
    f.st.n_revoked = 1;
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    char *a3;
    assert_int_equal(vx_gate_refresh(g, refresh, &a3, &ttl), VX_GATE_UNAUTHORIZED);
    assert_int_equal(auth_key(g, NULL, access, &p), VX_GATE_OK); /* access tokens live out their TTL */
    vx_principal_clear(&p);
    /* revoking the user (a new generation) ends every token */
    f.u.token_gen = 2;
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    assert_int_equal(auth_key(g, NULL, access, &p), VX_GATE_UNAUTHORIZED);
    assert_int_equal(auth_key(g, NULL, a2, &p), VX_GATE_UNAUTHORIZED);
    /* a deleted user's tokens are refused */
    f.st.n_users = 0;
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    char *r3;
    assert_int_equal(vx_gate_login(g, "ann", "correct horse", &a3, &r3, &ttl), VX_GATE_UNAUTHORIZED);
    assert_null(a3);
    assert_null(r3);
    free(access);
    free(refresh);
    free(a2);
    vx_gate_free(g);
}

static void test_buckets(void **unused)
{
    (void)unused;
    /* Refills of one token per 10 s: each limited loop below spends a full
     * bucket of 10 and sees at most one token come back unless it takes
     * 20 s, so the counts hold however slowly a busy machine runs it. */
    vx_gate *g = gate_burst(0, 0.1, 10); /* anon: 0.1/s, burst 10 */
    fixture f;
    fixture_init(&f, "correct horse");
    f.k[0].rate = 0.1;
    f.k[0].burst = 10;
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    vx_principal p;
    int retry = 0, ok = 0;
    for (int i = 0; i < 15; i++) {
        vx_gate_verdict v = vx_gate_authenticate(g, f.key[0], NULL, "10.0.0.1", &p, &retry);
        if (v == VX_GATE_OK) ok++, vx_principal_clear(&p);
        else assert_int_equal(v, VX_GATE_LIMITED);
    }
    assert_true(ok >= 10 && ok <= 11);
    assert_true(retry >= 1);
    /* another key is not slowed */
    for (int i = 0; i < 50; i++) {
        assert_int_equal(vx_gate_authenticate(g, f.key[1], NULL, "10.0.0.1", &p, &retry), VX_GATE_OK);
        vx_principal_clear(&p);
    }
    /* failures from one address use up its budget: then even a good key
     * waits (no token work for that address), and another address does not */
    int fails = 0;
    for (int i = 0; i < 30; i++)
        if (vx_gate_authenticate(g, "vx_bad", NULL, "10.9.9.9", &p, &retry) == VX_GATE_LIMITED) break;
        else fails++;
    assert_true(fails >= 10 && fails <= 11);
    assert_int_equal(vx_gate_authenticate(g, f.key[1], NULL, "10.9.9.9", &p, &retry), VX_GATE_LIMITED);
    assert_int_equal(vx_gate_authenticate(g, f.key[1], NULL, "10.8.8.8", &p, &retry), VX_GATE_OK);
    vx_principal_clear(&p);
    /* login and refresh are charged to the address first */
    int lim = 0;
    for (int i = 0; i < 12; i++) lim += vx_gate_charge_address(g, "10.7.7.7", &retry) == VX_GATE_LIMITED;
    assert_true(lim >= 1);
    vx_gate_free(g);
}

/* Under 3x the configured rate for 2 s, what gets through is the rate times
 * the time plus the burst, at most 10 % more (a limit that slowness cannot
 * break) and at least 80 % of it: a busy machine may stall the sender long
 * enough for the bucket to fill up and waste refills, which only lowers the
 * count. */
static void test_rate_accuracy(void **unused)
{
    (void)unused;
    vx_gate *g = gate(0, -1);
    fixture f;
    fixture_init(&f, "correct horse");
    f.k[1].rate = 200;
    f.k[1].burst = 20;
    assert_int_equal(vx_gate_load(g, &f.st), 0);
    double t0 = now_s(), period = 1.0 / 600, next = t0;
    int ok = 0, sent = 0;
    vx_principal p;
    int retry;
    while (now_s() - t0 < 2.0) {
        while (now_s() < next) {
        }
        next += period;
        sent++;
        if (vx_gate_authenticate(g, f.key[1], NULL, "10.0.0.1", &p, &retry) == VX_GATE_OK) {
            ok++;
            vx_principal_clear(&p);
        }
    }
    double want = 200 * (now_s() - t0) + 20;
    fprintf(stderr, "rate: %d of %d requests allowed in 2 s at 200/s, burst 20 (expected %.0f)\n", ok, sent, want);
    assert_true(sent > 1000);
    assert_true(ok >= 0.8 * want && ok <= 1.1 * want);
    vx_gate_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_and_setup),      cmocka_unit_test(test_keys_and_scopes),
        cmocka_unit_test(test_login_refresh_revoke), cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_rate_accuracy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
