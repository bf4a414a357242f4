/*
 * fuzz_token.c - libFuzzer target for the credential parsers (src/auth/):
 * a JWT as the verifier sees it (src/auth/token.c), and the same bytes as
 * the api-key and Authorization headers the gate parses (src/auth/gate.c).
 *
 * For any input: nothing faults or leaks, verification fails (the fuzzer
 * cannot sign with the key, so a success would be a forgery and aborts),
 * and the gate answers UNAUTHORIZED or LIMITED, never OK.
 *
 * Seed corpus: tests/fuzz/corpus/token (shapes of tokens and keys).
 */
#include "auth/gate.h"
#include "auth/token.h"
#include "base/err.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vx_jwt_key g_keys[2];
static vx_gate *g_gate;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *secret = "fuzz-secret-0123456789abcdef";
    if (vx_jwt_key_derive((const uint8_t *)secret, strlen(secret), "k1", &g_keys[0]) != 0 ||
        vx_jwt_key_derive((const uint8_t *)secret, strlen(secret), "k2", &g_keys[1]) != 0)
        abort();
    vx_gate_options o = {.enabled = true, .admin_key = secret, .anon_rate = -1};
    char err[VX_GATE_ERRMSG_LEN];
    if (vx_gate_new(&o, &g_gate, err) != 0) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vx_jwt_verifier v = {.keys = g_keys, .nkeys = 2, .iss = "vectron", .aud = "vectron-api",
                         .leeway_s = 30, .now = 1800000000};
    vx_jwt_claims c;
    char err[VX_JWT_ERRMSG_LEN];
    if (vx_jwt_verify(&v, (const char *)data, size, &c, err) == 0) abort(); /* a forgery */
    char *s = malloc(size + 8);
    if (s == NULL) return 0;
    memcpy(s, "Bearer ", 7);
    memcpy(s + 7, data, size);
    s[size + 7] = '\0';
    if (strlen(s) != size + 7) { /* a NUL inside: the headers cannot carry it */
        free(s);
        return 0;
    }
    vx_principal p;
    int retry;
    if (vx_gate_authenticate(g_gate, s + 7, NULL, "f", &p, &retry) == VX_GATE_OK) abort();
    if (vx_gate_authenticate(g_gate, NULL, s, "f", &p, &retry) == VX_GATE_OK) abort();
    free(s);
    return 0;
}
