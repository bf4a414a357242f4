/*
 * handshake.h - the one challenge-response every internal connection starts
 * with (internal RPC, Raft streams, snapshot data streams).
 *
 * Both ends hold the cluster secret.  The accepting end sends a fresh random
 * nonce; the connecting end answers with its own nonce and a tag, an
 * HMAC-SHA256 keyed by the secret over a label naming the protocol and the
 * direction, both nonces and whatever the connection claims (its group, its
 * server id, its address): so a tag proves the secret, is good for this one
 * connection only (the acceptor's nonce), and cannot be moved to another
 * claim.  Where the acceptor must prove itself too (Raft and snapshot
 * streams: a replica installs what it is sent), it answers with a tag of its
 * own under the other direction's label.  Tags are compared in constant time.
 *
 * Nothing here does I/O: each transport frames these bytes its own way
 * (rpc.c on its libuv streams, node.c on libraft's, snapshot_io.c on
 * blocking sockets), so the cryptography and its rules live once.
 */
#ifndef VX_BASE_HANDSHAKE_H
#define VX_BASE_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VX_HS_NONCE_LEN 32
#define VX_HS_TAG_LEN 32

/* A fresh random nonce (libsodium's CSPRNG). */
void vx_hs_nonce(uint8_t nonce[VX_HS_NONCE_LEN]);

/* The tag under `label` of the acceptor's nonce, the connector's nonce (NULL:
 * none) and the claim bytes (may be NULL with claim_len 0), keyed by the
 * secret (may be empty).  Every part is length-prefixed, so no two different
 * inputs give the same message. */
void vx_hs_tag(const uint8_t *secret, size_t secret_len, const char *label,
               const uint8_t acceptor_nonce[VX_HS_NONCE_LEN], const uint8_t *connector_nonce,
               const void *claim, size_t claim_len, uint8_t tag[VX_HS_TAG_LEN]);

/* Constant-time: does tag equal the one computed from the same inputs? */
bool vx_hs_verify(const uint8_t *secret, size_t secret_len, const char *label,
                  const uint8_t acceptor_nonce[VX_HS_NONCE_LEN], const uint8_t *connector_nonce,
                  const void *claim, size_t claim_len, const uint8_t tag[VX_HS_TAG_LEN]);

/* A random secret of n bytes as hex (2n+1 bytes into out): for a process
 * whose internal ports serve only itself (vectron serve). */
void vx_hs_random_secret(char *out, size_t n);



/* ---- the cluster secret ------------------------------------------------------------------ */

#define VX_SECRET_MAX 256

/* Take the cluster secret from VECTRON_CLUSTER_SECRET into out (a copy,
 * NUL-terminated; at most VX_SECRET_MAX - 1 bytes) and wipe it from the
 * environment (the bytes in place too, so /proc/PID/environ no longer shows
 * it).  An empty secret authenticates nothing, so it is refused (-1, with the
 * reason in errbuf) unless every address in addrs (host:port) is loopback;
 * `who` names the process in the message. */
int vx_cluster_secret_take(const char *who, const char *const *addrs, size_t naddrs, char *out,
                           size_t outsz, char *errbuf, size_t errsz);

/* Wipe the environment variable `name` (its bytes in place, then unset). */
void vx_env_wipe(const char *name);

/* Is the host of "host:port" (or a bare host) a loopback address? */
bool vx_addr_is_loopback(const char *addr);
#endif
