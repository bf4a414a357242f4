/*
 * config.c - see config.h.
 *
 * Every source of settings funnels into set_field(), which parses one value
 * for one table entry and says what was wrong without saying where; each
 * caller adds the where (file:line, variable, flag).  Each step works on a
 * copy of the config and copies it back only on success.
 */
#include "server/config.h"

#include "base/err.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum ftype {
    F_STR,   /* char[size], length min..max */
    F_UINT,  /* unsigned, min..max */
    F_BYTES, /* uint64_t, min..max, k/m/g suffixes */
    F_ENUM,  /* char[size], one of choices ("a|b|c") */
} ftype;

typedef struct field {
    const char *name;
    ftype type;
    size_t offset;
    size_t size; /* F_STR, F_ENUM: the array size */
    uint64_t min, max;
    const char *def;
    const char *metavar;
    const char *choices; /* F_ENUM */
    const char *help;
} field;

#define OFF(f) offsetof(vx_config, f)
#define SZ(f) sizeof(((vx_config *)0)->f)

/* The one table (see config.h).  Keep it in the order of vx_config. */
static const field fields[] = {
    {"data_dir", F_STR, OFF(data_dir), SZ(data_dir), 1, SZ(data_dir) - 1, "./vectron-data", "DIR",
     NULL, "directory holding collections, the Raft log and snapshots"},
    {"http_host", F_STR, OFF(http_host), SZ(http_host), 1, SZ(http_host) - 1, "127.0.0.1", "HOST",
     NULL, "address the HTTP API listens on"},
    {"http_port", F_UINT, OFF(http_port), 0, 1, 65535, "6333", "PORT", NULL, "HTTP API port"},
    {"raft_port", F_UINT, OFF(raft_port), 0, 0, 65535, "0", "PORT", NULL,
     "Raft peer port; 0 means http_port + 1000"},
    {"max_body_bytes", F_BYTES, OFF(max_body_bytes), 0, 1024, 1073741824, "32MiB", "BYTES", NULL,
     "largest request body accepted (k/m/g suffixes, powers of 1024)"},
    {"max_batch_points", F_UINT, OFF(max_batch_points), 0, 1, 1000000, "10000", "N", NULL,
     "most points in one upsert or delete batch"},
    {"max_dim", F_UINT, OFF(max_dim), 0, 1, 65536, "65536", "N", NULL,
     "largest vector dimension of a collection"},
    {"max_limit", F_UINT, OFF(max_limit), 0, 1, 1000000, "10000", "N", NULL,
     "largest limit (top-k) of a search or scroll"},
    {"max_json_depth", F_UINT, OFF(max_json_depth), 0, 1, 1024, "64", "N", NULL,
     "deepest JSON nesting accepted in a request"},
    {"http_threads", F_UINT, OFF(http_threads), 0, 1, 1024, "16", "N", NULL,
     "HTTP concurrency: at most 64 x N open connections, one thread each"},
    {"conn_timeout_s", F_UINT, OFF(conn_timeout_s), 0, 1, 86400, "30", "SECONDS", NULL,
     "a request's headers must arrive within this of the connection opening or the previous answer"},
    {"body_timeout_s", F_UINT, OFF(body_timeout_s), 0, 1, 86400, "60", "SECONDS", NULL,
     "a request's body must arrive within this of its headers"},
    {"max_connections_per_address", F_UINT, OFF(max_connections_per_address), 0, 0, 1000000, "128",
     "N", NULL, "open connections from one client address; 0: no limit"},
    {"slow_query_ms", F_UINT, OFF(slow_query_ms), 0, 0, 3600000, "500", "MS", NULL,
     "log requests slower than this at warn level; 0 turns it off"},
    {"log_level", F_ENUM, OFF(log_level), SZ(log_level), 0, 0, "info", "LEVEL",
     "debug|info|warn|error", "minimum level of the JSON log lines on stderr"},
    {"index_workers", F_UINT, OFF(index_workers), 0, 0, 1024, "0", "N", NULL,
     "index worker threads; 0 means one per CPU"},
    {"max_backlog", F_UINT, OFF(max_backlog), 0, 1, 100000000, "100000", "N", NULL,
     "queued index changes per shard (or 256 MiB of their vectors) above which writes wait"},
    {"auth", F_ENUM, OFF(auth), SZ(auth), 0, 0, "auto", "MODE", "auto|on|off",
     "authentication: auto is on unless http_host is loopback"},
    {"tls_cert", F_STR, OFF(tls_cert), SZ(tls_cert), 1, SZ(tls_cert) - 1, "none", "FILE", NULL,
     "PEM certificate (chain) for HTTPS on the API; with tls_key"},
    {"tls_key", F_STR, OFF(tls_key), SZ(tls_key), 1, SZ(tls_key) - 1, "none", "FILE", NULL,
     "PEM private key for HTTPS on the API; with tls_cert"},
    {"admin_key_file", F_STR, OFF(admin_key_file), SZ(admin_key_file), 1, SZ(admin_key_file) - 1,
     "none", "FILE", NULL, "file with the bootstrap admin key (or VECTRON_ADMIN_KEY)"},
    {"jwt_secret_file", F_STR, OFF(jwt_secret_file), SZ(jwt_secret_file), 1,
     SZ(jwt_secret_file) - 1, "none", "FILE", NULL,
     "file with the secret JWT keys derive from; none: from the admin key"},
    {"jwt_kid", F_STR, OFF(jwt_kid), SZ(jwt_kid), 1, SZ(jwt_kid) - 1, "k1", "KID", NULL,
     "id of the key that signs new JWTs"},
    {"jwt_accept", F_STR, OFF(jwt_accept), SZ(jwt_accept), 1, SZ(jwt_accept) - 1, "none", "KIDS",
     NULL, "more JWT key ids still accepted (rotation), comma-separated"},
    {"access_token_ttl_s", F_UINT, OFF(access_token_ttl_s), 0, 10, 86400, "900", "SECONDS", NULL,
     "lifetime of access tokens"},
    {"refresh_token_ttl_s", F_UINT, OFF(refresh_token_ttl_s), 0, 60, 31536000, "604800", "SECONDS",
     NULL, "lifetime of refresh tokens"},
    {"rate_per_key", F_UINT, OFF(rate_per_key), 0, 0, 100000000, "1000", "N", NULL,
     "requests per second per API key or user; 0: unlimited"},
    {"burst_per_key", F_UINT, OFF(burst_per_key), 0, 1, 100000000, "2000", "N", NULL,
     "burst per API key or user"},
    {"rate_per_address", F_UINT, OFF(rate_per_address), 0, 0, 100000000, "10", "N", NULL,
     "requests per second per address without valid credentials; 0: unlimited"},
    {"burst_per_address", F_UINT, OFF(burst_per_address), 0, 1, 100000000, "20", "N", NULL,
     "burst per address without valid credentials"},
    {"login_attempts_per_address", F_UINT, OFF(login_attempts_per_address), 0, 1, 1000, "20", "N",
     NULL, "login attempts per source address in any login window (counted when received)"},
    {"login_attempts_per_account", F_UINT, OFF(login_attempts_per_account), 0, 1, 1000, "10", "N",
     NULL, "login attempts per account in any login window (counted when received)"},
    {"login_window_s", F_UINT, OFF(login_window_s), 0, 1, 86400, "60", "SECONDS", NULL,
     "the window of the login attempt limits"},
};

#define NFIELDS (sizeof fields / sizeof fields[0])

static const field *find_field(const char *name, size_t len, bool dashes_ok)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *f = fields[i].name;
        if (strlen(f) != len) continue;
        size_t k = 0;
        for (; k < len; k++)
            if (name[k] != f[k] && !(dashes_ok && f[k] == '_' && name[k] == '-')) break;
        if (k == len) return &fields[i];
    }
    return NULL;
}

static void env_name(const field *f, char *out, size_t n)
{
    size_t k = (size_t)snprintf(out, n, "VECTRON_");
    for (const char *s = f->name; *s != '\0' && k + 1 < n; s++)
        out[k++] = (char)toupper((unsigned char)*s);
    out[k] = '\0';
}

static void flag_name(const field *f, char *out, size_t n)
{
    size_t k = (size_t)snprintf(out, n, "--");
    for (const char *s = f->name; *s != '\0' && k + 1 < n; s++)
        out[k++] = *s == '_' ? '-' : *s;
    out[k] = '\0';
}

/* ---- one value ----------------------------------------------------------- */

/* Strict decimal: digits only, no overflow.  *end gets the first non-digit. */
static bool parse_u64(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    if (p == s) return false;
    *out = v;
    *end = p;
    return true;
}

static bool parse_bytes(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {
        {"", 0},   {"k", 10},   {"K", 10}, {"KiB", 10}, {"m", 20},
        {"M", 20}, {"MiB", 20}, {"g", 30}, {"G", 30},   {"GiB", 30},
    };
    uint64_t v;
    const char *end;
    if (!parse_u64(s, &v, &end)) return false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) != 0) continue;
        if (v > (UINT64_MAX >> units[i].shift)) return false;
        *out = v << units[i].shift;
        return true;
    }
    return false;
}

static bool has_control(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return true;
    return false;
}

static bool in_choices(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *c = choices; *c != '\0';) {
        const char *bar = strchr(c, '|');
        size_t len = bar != NULL ? (size_t)(bar - c) : strlen(c);
        if (len == n && n > 0 && memcmp(c, v, n) == 0) return true;
        if (bar == NULL) break;
        c = bar + 1;
    }
    return false;
}

/* Parse val into f's slot of cfg.  On error the message (without location)
 * is in msg and the slot is unchanged. */
static int set_field(vx_config *cfg, const field *f, const char *val, char *msg, size_t n)
{
    char *slot = (char *)cfg + f->offset;
    uint64_t v;
    switch (f->type) {
    case F_STR:
    case F_ENUM: {
        size_t len = strlen(val);
        if (len == 0) return vx_errf(msg, n, VX_EINVAL, "empty value");
        if (has_control(val))
            return vx_errf(msg, n, VX_EINVAL, "control characters are not allowed");
        if (f->type == F_ENUM && !in_choices(f->choices, val))
            return vx_errf(msg, n, VX_EINVAL, "'%.64s' is not one of %s", val, f->choices);
        if (len + 1 > f->size)
            return vx_errf(msg, n, VX_ERANGE, "value is %zu bytes, longer than %zu", len,
                           f->size - 1);
        memcpy(slot, val, len + 1);
        return 0;
    }
    case F_UINT:
    case F_BYTES: {
        const char *end = NULL;
        bool ok =
            f->type == F_BYTES ? parse_bytes(val, &v) : parse_u64(val, &v, &end) && *end == '\0';
        if (!ok)
            return vx_errf(msg, n, VX_EINVAL, "'%.64s' is not a%s", val,
                           f->type == F_BYTES ? " byte size" : " non-negative integer");
        if (v < f->min || v > f->max)
            return vx_errf(msg, n, VX_ERANGE, "%.64s is out of range %llu..%llu", val,
                           (unsigned long long)f->min, (unsigned long long)f->max);
        if (f->type == F_BYTES)
            memcpy(slot, &v, sizeof(uint64_t));
        else {
            unsigned u = (unsigned)v;
            memcpy(slot, &u, sizeof u);
        }
        return 0;
    }
    }
    return VX_EINVAL;
}

void vx_config_defaults(vx_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NFIELDS; i++) {
        char msg[VX_CONFIG_ERRMAX];
        int rc = set_field(cfg, &fields[i], fields[i].def, msg, sizeof msg);
        /* a default the parser refuses is a bug in the table above */
        if (rc != 0) {
            fprintf(stderr, "config: default of %s: %s\n", fields[i].name, msg);
            abort();
        }
    }
}

/* ---- file ---------------------------------------------------------------- */

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Split one line in place into key and value.  0: a setting; 1: nothing on
 * the line; <0: malformed, message in msg. */
static int split_line(char *line, char **key, char **val, char *msg, size_t n)
{
    char *s = line;
    while (blank(*s))
        s++;
    if (*s == '\0' || *s == '#') return 1;
    *key = s;
    while (*s != '\0' && *s != '=' && !blank(*s))
        s++;
    char *key_end = s;
    while (blank(*s))
        s++;
    if (*s != '=' || key_end == *key) return vx_errf(msg, n, VX_EINVAL, "expected 'key = value'");
    *key_end = '\0';
    s++;
    while (blank(*s))
        s++;
    if (*s == '"') {
        /* quoted: unescape in place up to the closing quote */
        char *w = ++s;
        *val = w;
        for (;; s++) {
            if (*s == '\0') return vx_errf(msg, n, VX_EINVAL, "unterminated quoted value");
            if (*s == '"') break;
            if (*s == '\\') {
                s++;
                if (*s != '"' && *s != '\\')
                    return vx_errf(msg, n, VX_EINVAL, "only \\\" and \\\\ may be escaped");
            }
            *w++ = *s;
        }
        s++;
        while (blank(*s))
            s++;
        if (*s != '\0' && *s != '#')
            return vx_errf(msg, n, VX_EINVAL, "text after the quoted value");
        *w = '\0';
        return 0;
    }
    *val = s;
    char *end = s;
    for (; *s != '\0'; s++) {
        if (*s == '#' && s > *val && blank(s[-1])) break;
        if (!blank(*s)) end = s + 1;
    }
    *end = '\0';
    return 0;
}

int vx_config_load_file(vx_config *cfg, const char *path, char *errbuf)
{
    char msg[VX_CONFIG_ERRMAX];
    size_t en = errbuf != NULL ? VX_CONFIG_ERRMAX : 0;
    FILE *fp = fopen(path, "r");
    if (fp == NULL) return vx_errf(errbuf, en, VX_EIO, "%s: %s", path, strerror(errno));

    vx_config tmp = *cfg;
    unsigned seen_on[NFIELDS] = {0};
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        if (strlen(line) != (size_t)len) {
            rc = vx_errf(errbuf, en, VX_EINVAL, "%s:%u: NUL byte in line", path, lineno);
            goto out;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        char *key = NULL, *val = NULL;
        rc = split_line(line, &key, &val, msg, sizeof msg);
        if (rc == 1) {
            rc = 0;
            continue;
        }
        if (rc < 0) {
            vx_errf(errbuf, en, rc, "%s:%u: %s", path, lineno, msg);
            goto out;
        }
        const field *f = find_field(key, strlen(key), false);
        if (f == NULL) {
            rc = vx_errf(errbuf, en, VX_EINVAL, "%s:%u: unknown key '%.64s'", path, lineno, key);
            goto out;
        }
        size_t idx = (size_t)(f - fields);
        if (seen_on[idx] != 0) {
            rc = vx_errf(errbuf, en, VX_EINVAL, "%s:%u: %s already set on line %u", path, lineno,
                         f->name, seen_on[idx]);
            goto out;
        }
        seen_on[idx] = lineno;
        rc = set_field(&tmp, f, val, msg, sizeof msg);
        if (rc < 0) {
            vx_errf(errbuf, en, rc, "%s:%u: %s: %s", path, lineno, f->name, msg);
            goto out;
        }
    }
    if (ferror(fp)) {
        rc = vx_errf(errbuf, en, VX_EIO, "%s: read error", path);
        goto out;
    }
    *cfg = tmp;
out:
    free(line);
    fclose(fp);
    return rc;
}

/* ---- environment --------------------------------------------------------- */

int vx_config_load_env(vx_config *cfg, char *errbuf)
{
    size_t en = errbuf != NULL ? VX_CONFIG_ERRMAX : 0;
    vx_config tmp = *cfg;
    for (size_t i = 0; i < NFIELDS; i++) {
        char var[64], msg[VX_CONFIG_ERRMAX];
        env_name(&fields[i], var, sizeof var);
        const char *v = getenv(var);
        if (v == NULL || *v == '\0') continue;
        int rc = set_field(&tmp, &fields[i], v, msg, sizeof msg);
        if (rc < 0) return vx_errf(errbuf, en, rc, "%s: %s", var, msg);
    }
    *cfg = tmp;
    return 0;
}

/* ---- flags --------------------------------------------------------------- */

typedef struct scan {
    const char *config; /* last --config value, or NULL */
    bool help;
    int stop; /* index of the first argument not parsed */
} scan;

/* Split argv[*i] ("--name" or "--name=value") into its field and value,
 * taking the value from the next argument when needed (advancing *i).
 * *is_config for --config.  Errors name the flag. */
static int take_flag(int argc, char **argv, int *i, const field **f, bool *is_config,
                     const char **val, char *errbuf, size_t en)
{
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    *is_config = len == 6 && memcmp(arg, "config", 6) == 0;
    *f = *is_config ? NULL : find_field(arg, len, true);
    if (!*is_config && *f == NULL)
        return vx_errf(errbuf, en, VX_EINVAL, "unknown flag --%.*s (see --help)",
                       (int)(len > 64 ? 64 : len), arg);
    if (eq != NULL) {
        *val = eq + 1;
    } else {
        if (*i + 1 >= argc)
            return vx_errf(errbuf, en, VX_EINVAL, "--%.*s needs a value", (int)len, arg);
        *val = argv[++*i];
    }
    return 0;
}

/* First pass: find --config and --help, check the flag names and that each
 * has a value, find where the flags end.  The first error is kept and
 * returned only at the end: a -h anywhere wins over a broken command line. */
static int scan_args(int argc, char **argv, scan *sc, char *errbuf, size_t en)
{
    char first[VX_CONFIG_ERRMAX];
    int first_rc = 0;
    sc->config = NULL;
    sc->help = false;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            sc->help = true;
            continue;
        }
        if (a[0] != '-' || a[1] == '\0') break; /* a positional argument */
        int rc;
        char msg[VX_CONFIG_ERRMAX];
        if (a[1] != '-' || a[2] == '\0') {
            rc = vx_errf(msg, sizeof msg, VX_EINVAL, "unknown flag %.64s (see --help)", a);
        } else {
            const field *f;
            bool is_config;
            const char *val;
            rc = take_flag(argc, argv, &i, &f, &is_config, &val, msg, sizeof msg);
            if (rc == 0 && is_config && *val == '\0')
                rc = vx_errf(msg, sizeof msg, VX_EINVAL, "--config needs a file name");
            if (rc == 0 && is_config) sc->config = val;
        }
        if (rc < 0 && first_rc == 0) {
            first_rc = rc;
            memcpy(first, msg, sizeof first);
        }
    }
    sc->stop = i;
    if (sc->help || first_rc == 0) return 0;
    return vx_errf(errbuf, en, first_rc, "%s", first);
}

/* Second pass: every flag but --config and --help, over cfg. */
static int apply_args(vx_config *cfg, int argc, char **argv, int stop, char *errbuf, size_t en)
{
    for (int i = 1; i < stop; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) continue;
        const field *f;
        bool is_config;
        const char *val;
        char msg[VX_CONFIG_ERRMAX], flag[64];
        int rc = take_flag(argc, argv, &i, &f, &is_config, &val, errbuf, en);
        if (rc < 0) return rc;
        if (is_config) continue;
        rc = set_field(cfg, f, val, msg, sizeof msg);
        if (rc < 0) {
            flag_name(f, flag, sizeof flag);
            return vx_errf(errbuf, en, rc, "%s: %s", flag, msg);
        }
    }
    return 0;
}

int vx_config_parse_args(vx_config *cfg, int argc, char **argv, int *first_unparsed, char *errbuf)
{
    size_t en = errbuf != NULL ? VX_CONFIG_ERRMAX : 0;
    scan sc;
    int rc = scan_args(argc, argv, &sc, errbuf, en);
    if (rc < 0) return rc;
    if (sc.help) {
        cfg->help = true;
        if (first_unparsed != NULL) *first_unparsed = sc.stop;
        return 0;
    }
    vx_config tmp = *cfg;
    if (sc.config != NULL && (rc = vx_config_load_file(&tmp, sc.config, errbuf)) < 0) return rc;
    if ((rc = apply_args(&tmp, argc, argv, sc.stop, errbuf, en)) < 0) return rc;
    *cfg = tmp;
    if (first_unparsed != NULL) *first_unparsed = sc.stop;
    return 0;
}

int vx_config_load(vx_config *cfg, int argc, char **argv, int *first_unparsed, char *errbuf)
{
    size_t en = errbuf != NULL ? VX_CONFIG_ERRMAX : 0;
    scan sc;
    int rc = scan_args(argc, argv, &sc, errbuf, en);
    if (rc < 0) return rc;
    vx_config tmp;
    vx_config_defaults(&tmp);
    if (sc.help) {
        tmp.help = true;
    } else {
        const char *path = sc.config != NULL ? sc.config : getenv("VECTRON_CONFIG");
        if (path != NULL && *path != '\0' && (rc = vx_config_load_file(&tmp, path, errbuf)) < 0)
            return rc;
        if ((rc = vx_config_load_env(&tmp, errbuf)) < 0) return rc;
        if ((rc = apply_args(&tmp, argc, argv, sc.stop, errbuf, en)) < 0) return rc;
        if ((rc = vx_config_validate(&tmp, errbuf)) < 0) return rc;
    }
    *cfg = tmp;
    if (first_unparsed != NULL) *first_unparsed = sc.stop;
    return 0;
}

/* ---- checks and output --------------------------------------------------- */

/* The field's current value as text, the way the parser reads it back. */
static void format_value(const vx_config *cfg, const field *f, char *out, size_t n)
{
    const char *slot = (const char *)cfg + f->offset;
    switch (f->type) {
    case F_STR:
    case F_ENUM:
        snprintf(out, n, "%s", slot);
        return;
    case F_UINT: {
        unsigned u;
        memcpy(&u, slot, sizeof u);
        snprintf(out, n, "%u", u);
        return;
    }
    case F_BYTES: {
        uint64_t v;
        memcpy(&v, slot, sizeof v);
        snprintf(out, n, "%llu", (unsigned long long)v);
        return;
    }
    }
}

int vx_config_validate(const vx_config *cfg, char *errbuf)
{
    size_t en = errbuf != NULL ? VX_CONFIG_ERRMAX : 0;
    vx_config scratch;
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        char text[VX_CONFIG_PATH_MAX], msg[VX_CONFIG_ERRMAX];
        const char *slot = (const char *)cfg + f->offset;
        if ((f->type == F_STR || f->type == F_ENUM) && memchr(slot, '\0', f->size) == NULL)
            return vx_errf(errbuf, en, VX_EINVAL, "%s: not NUL-terminated", f->name);
        /* re-parse the value: the same rules as for user input */
        format_value(cfg, f, text, sizeof text);
        int rc = set_field(&scratch, f, text, msg, sizeof msg);
        if (rc < 0) return vx_errf(errbuf, en, rc, "%s: %s", f->name, msg);
    }
    unsigned raft = vx_config_raft_port(cfg);
    if (raft > 65535)
        return vx_errf(errbuf, en, VX_ERANGE,
                       "raft_port: http_port + 1000 = %u is not a port; set raft_port", raft);
    if (raft == cfg->http_port)
        return vx_errf(errbuf, en, VX_EINVAL, "raft_port: %u is also the http_port", raft);
    return 0;
}

unsigned vx_config_raft_port(const vx_config *cfg)
{
    return cfg->raft_port != 0 ? cfg->raft_port : cfg->http_port + 1000;
}

unsigned vx_config_index_workers(const vx_config *cfg)
{
    if (cfg->index_workers != 0) return cfg->index_workers;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

void vx_config_usage(FILE *out)
{
    /* no "Usage:" line: the caller prints its own synopsis above this */
    fprintf(out, "Every flag also takes the --flag=VALUE form.  Below each flag: its config\n"
                 "file key, its environment variable, its default and its range.\n"
                 "\n"
                 "  -h, --help\n"
                 "      show this help and exit\n"
                 "  --config FILE\n"
                 "      config file to load before the environment and the other flags\n"
                 "      env VECTRON_CONFIG\n");
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        char flag[64], var[64];
        flag_name(f, flag, sizeof flag);
        env_name(f, var, sizeof var);
        fprintf(out, "  %s %s\n      %s\n      key %s, env %s, default %s", flag, f->metavar,
                f->help, f->name, var, f->def);
        if (f->type == F_UINT || f->type == F_BYTES)
            fprintf(out, ", range %llu..%llu", (unsigned long long)f->min,
                    (unsigned long long)f->max);
        else if (f->type == F_ENUM)
            fprintf(out, ", one of %s", f->choices);
        fputc('\n', out);
    }
}

int vx_config_write(const vx_config *cfg, FILE *out)
{
    for (size_t i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        char text[VX_CONFIG_PATH_MAX];
        format_value(cfg, f, text, sizeof text);
        fprintf(out, "%s = ", f->name);
        if (f->type == F_STR || f->type == F_ENUM) {
            /* always quoted, so `#` and blanks survive the round trip */
            fputc('"', out);
            for (const char *s = text; *s != '\0'; s++) {
                if (*s == '"' || *s == '\\') fputc('\\', out);
                fputc(*s, out);
            }
            fputc('"', out);
        } else {
            fputs(text, out);
        }
        fputc('\n', out);
    }
    return ferror(out) ? VX_EIO : 0;
}
