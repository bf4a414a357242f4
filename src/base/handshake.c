/*
 * handshake.c - see handshake.h.
 */
#define _GNU_SOURCE
#include "base/handshake.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vx_hs_nonce(uint8_t nonce[VX_HS_NONCE_LEN])
{
    if (sodium_init() < 0) abort(); /* no CSPRNG: never run without one */
    randombytes_buf(nonce, VX_HS_NONCE_LEN);
}

static void put_part(crypto_auth_hmacsha256_state *st, const void *p, size_t n)
{
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)n >> (8 * i));
    crypto_auth_hmacsha256_update(st, len, sizeof len);
    if (n) crypto_auth_hmacsha256_update(st, p, n);
}

void vx_hs_tag(const uint8_t *secret, size_t secret_len, const char *label,
               const uint8_t acceptor_nonce[VX_HS_NONCE_LEN], const uint8_t *connector_nonce,
               const void *claim, size_t claim_len, uint8_t tag[VX_HS_TAG_LEN])
{
    crypto_auth_hmacsha256_state st;
    static const uint8_t none[1];
    crypto_auth_hmacsha256_init(&st, secret_len ? secret : none, secret_len);
    put_part(&st, label, strlen(label));
    put_part(&st, acceptor_nonce, VX_HS_NONCE_LEN);
    put_part(&st, connector_nonce, connector_nonce ? VX_HS_NONCE_LEN : 0);
    put_part(&st, claim, claim ? claim_len : 0);
    crypto_auth_hmacsha256_final(&st, tag);
    sodium_memzero(&st, sizeof st);
}

bool vx_hs_verify(const uint8_t *secret, size_t secret_len, const char *label,
                  const uint8_t acceptor_nonce[VX_HS_NONCE_LEN], const uint8_t *connector_nonce,
                  const void *claim, size_t claim_len, const uint8_t tag[VX_HS_TAG_LEN])
{
    uint8_t want[VX_HS_TAG_LEN];
    vx_hs_tag(secret, secret_len, label, acceptor_nonce, connector_nonce, claim, claim_len, want);
    bool ok = crypto_verify_32(want, tag) == 0;
    sodium_memzero(want, sizeof want);
    return ok;
}

void vx_hs_random_secret(char *out, size_t n)
{
    uint8_t buf[64];
    if (n > sizeof buf) n = sizeof buf;
    if (sodium_init() < 0) abort();
    randombytes_buf(buf, n);
    sodium_bin2hex(out, 2 * n + 1, buf, n);
    sodium_memzero(buf, sizeof buf);
}

void vx_env_wipe(const char *name)
{
    char *v = getenv(name);
    if (v != NULL) sodium_memzero(v, strlen(v));
    unsetenv(name);
}

bool vx_addr_is_loopback(const char *addr)
{
    if (addr == NULL) return false;
    if (strncmp(addr, "127.", 4) == 0) return true;
    size_t n = strlen("localhost");
    if (strncmp(addr, "localhost", n) == 0 && (addr[n] == '\0' || addr[n] == ':')) return true;
    return strncmp(addr, "[::1]", 5) == 0 || strcmp(addr, "::1") == 0;
}

int vx_cluster_secret_take(const char *who, const char *const *addrs, size_t naddrs, char *out,
                           size_t outsz, char *errbuf, size_t errsz)
{
    const char *v = getenv("VECTRON_CLUSTER_SECRET");
    size_t len = v ? strlen(v) : 0;
    if (len >= outsz || len >= VX_SECRET_MAX) {
        vx_env_wipe("VECTRON_CLUSTER_SECRET");
        snprintf(errbuf, errsz, "%s: VECTRON_CLUSTER_SECRET is longer than %d bytes", who,
                 VX_SECRET_MAX - 1);
        return -1;
    }
    memcpy(out, v ? v : "", len + 1);
    vx_env_wipe("VECTRON_CLUSTER_SECRET");
    if (len > 0) return 0;
    for (size_t i = 0; i < naddrs; i++)
        if (addrs[i] != NULL && !vx_addr_is_loopback(addrs[i])) {
            snprintf(errbuf, errsz,
                     "%s: refusing to listen on %s without a cluster secret: anyone who can reach "
                     "the port could read and change the cluster's data. Set VECTRON_CLUSTER_SECRET "
                     "(the same random string on every node; scripts/cluster.sh makes one), or "
                     "listen on loopback only",
                     who, addrs[i]);
            return -1;
        }
    return 0;
}
