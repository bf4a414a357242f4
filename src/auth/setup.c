/*
 * setup.c - see setup.h.
 */
#define _GNU_SOURCE
#include "auth/setup.h"

#include "base/handshake.h"
#include "base/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

bool vx_host_is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0;
}

static bool given(const char *v) { return v != NULL && v[0] != '\0' && strcmp(v, "none") != 0; }

/* The first line of path (malloc'd; NULL and a logged error when unreadable or empty). */
static char *read_secret(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = f ? getline(&line, &cap, f) : -1;
    if (f) fclose(f);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    if (n <= 0) {
        free(line);
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s %s path=%s", what,
               "file cannot be read or is empty", path);
        return NULL;
    }
    return line;
}

static void wipe(char *s)
{
    if (s) sodium_memzero(s, strlen(s));
    free(s);
}

int vx_gate_setup_open(const vx_gate_setup *s, vx_gate **out)
{
    bool lo = vx_host_is_loopback(s->host);
    bool on = strcmp(s->mode, "on") == 0 || (strcmp(s->mode, "auto") == 0 && !lo);
    if (!on && !lo) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s host=%s",
               "auth=off is refused beyond loopback: anyone who can reach the port could read and "
               "change every collection",
               s->host);
        return 2;
    }
    char *admin = NULL, *jwt = NULL;
    if (on) {
        if (given(s->admin_key_file)) {
            if ((admin = read_secret(s->admin_key_file, "admin_key_file")) == NULL) return 2;
        } else if (getenv("VECTRON_ADMIN_KEY") && getenv("VECTRON_ADMIN_KEY")[0]) {
            admin = strdup(getenv("VECTRON_ADMIN_KEY"));
        }
        if (given(s->jwt_secret_file) && (jwt = read_secret(s->jwt_secret_file, "jwt_secret_file")) == NULL) {
            wipe(admin);
            vx_env_wipe("VECTRON_ADMIN_KEY");
            return 2;
        }
    }
    vx_env_wipe("VECTRON_ADMIN_KEY"); /* read or not, not left in /proc/PID/environ */
    vx_gate_options go = {.enabled = on,
                          .admin_key = admin,
                          .jwt_secret = (const uint8_t *)jwt,
                          .jwt_secret_len = jwt ? strlen(jwt) : 0,
                          .jwt_kid = s->jwt_kid,
                          .jwt_accept = given(s->jwt_accept) ? s->jwt_accept : NULL,
                          .access_ttl_s = s->access_ttl_s,
                          .refresh_ttl_s = s->refresh_ttl_s,
                          .key_rate = s->rate_per_key ? (double)s->rate_per_key : -1.0,
                          .key_burst = s->burst_per_key,
                          .anon_rate = s->rate_per_address ? (double)s->rate_per_address : -1.0,
                          .anon_burst = s->burst_per_address,
                          .login_per_address = s->login_per_address,
                          .login_per_account = s->login_per_account,
                          .login_window_s = s->login_window_s};
    char err[VX_GATE_ERRMSG_LEN];
    int rc = vx_gate_new(&go, out, err);
    wipe(admin);
    wipe(jwt);
    if (rc != 0) {
        vx_log(VX_LOG_ERROR, "start_failed", "message=%s", err);
        return 2;
    }
    if (on)
        vx_log(VX_LOG_INFO, "auth_enabled", "message=%s host=%s",
               "authentication is on: requests need an API key or a token", s->host);
    else
        vx_log(VX_LOG_WARN, "auth_disabled", "message=%s",
               "no authentication: the API listens on loopback only, open to every local user");
    return 0;
}
