/*
 * setup.h - the gate of `vectron serve` and `vectron gateway` from their
 * settings: one policy for both.
 *
 * Authentication is on when mode is "on", or "auto" and the API listens
 * beyond loopback; "off" beyond loopback is refused (anyone who can reach
 * the port could read and change everything).  With it on, the bootstrap
 * admin key comes from admin_key_file (its first line) or the
 * VECTRON_ADMIN_KEY variable, never from a flag (flags show in process
 * lists); the JWT keys derive from jwt_secret_file's first line, or from the
 * admin key.  Every gateway of a cluster and the serve process must share
 * them to accept each other's tokens.  The secrets are wiped from memory
 * once the gate holds what it needs (digests, derived keys).  Logs what it
 * decided (never a secret).
 */
#ifndef VX_AUTH_SETUP_H
#define VX_AUTH_SETUP_H

#include "auth/gate.h"

typedef struct vx_gate_setup {
    const char *mode;            /* "auto", "on", "off" */
    const char *host;            /* the API's listen address */
    const char *admin_key_file;  /* "none" or NULL: VECTRON_ADMIN_KEY */
    const char *jwt_secret_file; /* "none" or NULL: from the admin key */
    const char *jwt_kid;         /* NULL: "k1" */
    const char *jwt_accept;      /* "none" or NULL: none */
    unsigned access_ttl_s, refresh_ttl_s;   /* 0: defaults */
    unsigned rate_per_key, burst_per_key;   /* rate 0: unlimited */
    unsigned rate_per_address, burst_per_address;
    unsigned login_per_address, login_per_account, login_window_s; /* 0: defaults */
} vx_gate_setup;

/* 0 with *out set, or 2 (a usage error, logged). */
int vx_gate_setup_open(const vx_gate_setup *s, vx_gate **out);
bool vx_host_is_loopback(const char *host);

#endif
