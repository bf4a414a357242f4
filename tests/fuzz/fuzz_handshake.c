/*
 * fuzz_handshake.c - the internal connection handshake (src/raft/node.h,
 * src/base/handshake.h) on arbitrary bytes.
 *
 * Input: a 40-byte challenge, then what a connector sends.  The acceptor's
 * parsing (the length from the fixed header, then the whole message's check)
 * must never crash or read out of bounds, and must refuse anything not
 * signed with the secret.  And a round trip on the same challenge: the
 * message a node builds for it must pass the check with its claim intact,
 * and the acceptor's proof must satisfy the connector, under the secret and
 * never under another.
 */
#include "raft/node_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vx_node *node(const char *secret)
{
    vx_node *n = calloc(1, sizeof *n);
    n->secret = (uint8_t *)strdup(secret);
    n->secret_len = strlen(secret);
    snprintf(n->address, sizeof n->address, "127.0.0.1:7000");
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static vx_node *n, *other;
    if (n == NULL) {
        n = node("fuzz-cluster-secret");
        other = node("another-secret");
    }
    if (size < CH_LEN) return 0;
    uint8_t ch[CH_LEN];
    memcpy(ch, data, CH_LEN);
    const uint8_t *msg = data + CH_LEN;
    size_t len = size - CH_LEN;

    /* the acceptor on arbitrary bytes: nothing unsigned passes */
    if (len >= HS_FIXED) {
        size_t want = vx_hs_msg_len(msg);
        if (want != 0 && want <= len) {
            uint8_t *copy = malloc(want); /* exactly the message: ASan sees any over-read */
            memcpy(copy, msg, want);
            vx_hs_claim cl;
            if (vx_hs_check(n, ch, copy, want, &cl)) abort(); /* a forged tag passed */
            free(copy);
        }
    }
    if (len >= OK_LEN) (void)vx_hs_accepted(n, ch, msg, len > HS_MAX ? HS_MAX : len, msg);

    /* the round trip on this challenge (made valid), with fields from the input */
    uint32_t magic = CH_MAGIC, version = HS_VERSION;
    memcpy(ch, &magic, 4);
    memcpy(ch + 4, &version, 4);
    uint64_t gid = 0, id = 0, arg = 0;
    memcpy(&gid, msg, len < 8 ? len : 8);
    if (len > 8) memcpy(&id, msg + 8, len - 8 < 8 ? len - 8 : 8);
    if (len > 16) memcpy(&arg, msg + 16, len - 16 < 8 ? len - 16 : 8);
    uint8_t out[HS_MAX], cnonce[VX_HS_NONCE_LEN], ok[OK_LEN];
    size_t m = vx_hs_connect_msg(n, (gid & 1) ? SN_MAGIC : HS_MAGIC, gid, id, arg, ch, out, cnonce);
    if (m == 0 || vx_hs_msg_len(out) != m) abort();
    vx_hs_claim cl;
    if (!vx_hs_check(n, ch, out, m, &cl) || cl.gid != gid || cl.id != id || cl.arg != arg ||
        strcmp(cl.address, n->address) != 0)
        abort();
    if (vx_hs_check(other, ch, out, m, &cl)) abort(); /* another secret refuses it */
    if (!vx_hs_check(n, ch, out, m, &cl)) abort();
    vx_hs_proof(n, ch, out, &cl, ok);
    if (!vx_hs_accepted(n, ch, out, m, ok)) abort();
    if (vx_hs_accepted(other, ch, out, m, ok)) abort();
    ok[8 + (arg % VX_HS_TAG_LEN)] ^= 1; /* one bit off */
    if (vx_hs_accepted(n, ch, out, m, ok)) abort();
    return 0;
}
