/*
 * config.h - the settings of `vectron serve`.
 *
 * Precedence, lowest first: built-in defaults < config file < environment
 * (VECTRON_<FIELD IN UPPER CASE>) < command-line flags.  vx_config_load does
 * the whole sequence; the step functions are exposed for tests and tools.
 *
 * One table in config.c drives everything: it names each field, its type,
 * its offset in vx_config, its range, its default (as text, parsed by the
 * same parser as user input, so a default is valid by construction) and its
 * help line.  The file keys, the environment variables, the flags, the
 * validation and the --help text are all generated from it, so the help can
 * never disagree with the parser.
 *
 * The three spellings of a setting, for the field http_port:
 *   config file   http_port = 7000
 *   environment   VECTRON_HTTP_PORT=7000
 *   flags         --http-port 7000, --http-port=7000 (also --http_port)
 *
 * Values.  Integers are plain decimal (no sign, no spaces).  Byte sizes also
 * take a binary suffix: k/K/KiB, m/M/MiB, g/G/GiB (all powers of 1024).
 * Strings may not be empty and may not contain control characters.
 *
 * Errors.  Every step leaves *cfg untouched when it fails, and writes a
 * message naming the culprit (file and line, variable, or flag) to errbuf,
 * which when not NULL must hold VX_CONFIG_ERRMAX bytes.  Codes: VX_EINVAL
 * for malformed input (unknown key or flag, not a number, missing value),
 * VX_ERANGE for a value outside its range, VX_EIO when a file cannot be read.
 *
 * Not thread-safe: configuration happens once, before threads start.
 */
#ifndef VX_SERVER_CONFIG_H
#define VX_SERVER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define VX_CONFIG_ERRMAX 256
#define VX_CONFIG_PATH_MAX 4096
#define VX_CONFIG_HOST_MAX 256

typedef struct vx_config {
    /* Directory holding collections, the Raft log and snapshots.
     * Default "./vectron-data". */
    char data_dir[VX_CONFIG_PATH_MAX];
    /* Address the HTTP API listens on.  Default "127.0.0.1" (loopback: a
     * fresh install is not reachable from the network until told so). */
    char http_host[VX_CONFIG_HOST_MAX];
    /* HTTP port, 1..65535.  Default 6333 (Qdrant's, for its clients). */
    unsigned http_port;
    /* Raft peer port, 0..65535.  Default 0, meaning http_port + 1000 (7333
     * with the default http_port); see vx_config_raft_port. */
    unsigned raft_port;
    /* Largest request body accepted, 1 KiB..1 GiB.  Default 32 MiB
     * (33554432). */
    uint64_t max_body_bytes;
    /* Most points in one upsert/delete batch, 1..1000000.  Default 10000. */
    unsigned max_batch_points;
    /* Largest vector dimension of a collection, 1..65536.  Default 65536. */
    unsigned max_dim;
    /* Largest `limit` (top-k) of a search or scroll, 1..1000000.
     * Default 10000. */
    unsigned max_limit;
    /* Deepest JSON nesting accepted in a request (bounds the recursion of
     * the parser and of filters), 1..1024.  Default 64. */
    unsigned max_json_depth;
    /* HTTP concurrency, 1..1024: at most 64 x N connections are open at once,
     * each served by its own thread.  Default 16. */
    unsigned http_threads;
    /* Idle or slow connections are closed after this many seconds,
     * 1..86400.  Default 30. */
    unsigned conn_timeout_s;
    unsigned body_timeout_s;
    unsigned max_connections_per_address;
    /* Requests slower than this are logged at warn level, 0..3600000;
     * 0 turns slow-query logging off.  Default 500. */
    unsigned slow_query_ms;
    /* Minimum log level: "debug", "info", "warn" or "error".
     * Default "info". */
    char log_level[8];
    /* Index worker threads, 0..1024.  Default 0, meaning one per online
     * CPU; see vx_config_index_workers. */
    unsigned index_workers;
    /* Queued index changes (across shards) above which writes are slowed
     * down until the indexers catch up, 1..100000000 (per shard; 256 MiB of
     * queued vectors also count as full).  Default 100000. */
    unsigned max_backlog;

    /* ---- authentication and rate limits (src/auth/gate.h) ----
     * "auto" (default): on when http_host is not loopback; "on"; "off"
     * (refused beyond loopback).  With auth on, the bootstrap admin key
     * comes from the VECTRON_ADMIN_KEY variable or admin_key_file -- never
     * from a flag or the config file, so it shows in no process list. */
    char auth[8];
    /* HTTPS on the API: PEM files of the certificate (chain) and its key;
     * "none" (default) for both: plain HTTP. */
    char tls_cert[VX_CONFIG_PATH_MAX], tls_key[VX_CONFIG_PATH_MAX];
    /* A file holding the admin key (first line).  Default "none". */
    char admin_key_file[VX_CONFIG_PATH_MAX];
    /* A file holding the secret JWT signing keys are derived from.
     * Default "none": derived from the admin key. */
    char jwt_secret_file[VX_CONFIG_PATH_MAX];
    /* The id of the JWT signing key.  Default "k1". */
    char jwt_kid[33];
    /* More key ids still accepted (rotation), comma-separated.  Default "none". */
    char jwt_accept[256];
    /* Lifetimes of access and refresh tokens, seconds.  Defaults 900 and
     * 604800 (7 days). */
    unsigned access_token_ttl_s, refresh_token_ttl_s;
    /* Requests per second and burst per API key or user (0: unlimited).
     * Defaults 1000 and 2000; a key may carry its own. */
    unsigned rate_per_key, burst_per_key;
    /* Requests per second and burst per source address without valid
     * credentials (login, failures).  Defaults 10 and 20. */
    unsigned rate_per_address, burst_per_address;
    /* Login attempts per source address and per account in any window of
     * login_window_s, counted when received (a successful one is given
     * back).  Defaults 20, 10, 60. */
    unsigned login_attempts_per_address, login_attempts_per_account, login_window_s;

    /* Set by -h/--help; not a setting (no key, variable or default). */
    bool help;
} vx_config;

/* Every field to its default. */
void vx_config_defaults(vx_config *cfg);

/*
 * Apply a config file on top of *cfg.  One `key = value` per line, keys
 * exactly the field names above; blank lines and lines whose first
 * non-blank character is `#` are ignored, and a `#` preceded by a blank
 * starts a comment after a value.  A value may be double-quoted (then `#`
 * and blanks are literal, and `\"`, `\\` are the escapes).  A key may
 * appear only once.  Unknown keys, bad values and malformed lines are
 * errors reported as "PATH:LINE: ...".
 */
int vx_config_load_file(vx_config *cfg, const char *path, char *errbuf);

/* Apply every VECTRON_<FIELD> variable that is set and not empty (an empty
 * variable counts as unset, which is what `VAR=${VAR}` in a container spec
 * produces).  Errors name the variable. */
int vx_config_load_env(vx_config *cfg, char *errbuf);

/*
 * Apply the flags in argv[1..argc) (argv[0] is the program or sub-command
 * name, as with getopt).  Flags are `--<field-with-dashes> VALUE` or
 * `--<field>=VALUE` for every field, `--config FILE`, and `-h`/`--help`.
 * Parsing stops at the first argument that is not a flag or after `--`;
 * *first_unparsed (may be NULL) receives that index (argc when everything
 * was consumed).
 *
 * Two passes: the first finds --config (the last one wins) and -h/--help and
 * checks every flag name; the file is then loaded, and the second pass
 * applies the other flags over it, so flags beat the file wherever
 * --config appears.  With -h/--help only cfg->help is set and 0 returned:
 * asking for help never fails on the other arguments.  This step does not
 * read the environment: to put the environment between the file and the
 * flags use vx_config_load.
 */
int vx_config_parse_args(vx_config *cfg, int argc, char **argv, int *first_unparsed, char *errbuf);

/*
 * Everything in order: defaults, the config file (--config FILE, else the
 * VECTRON_CONFIG variable when set), the environment, the flags, then
 * vx_config_validate.  With -h/--help it returns 0 with defaults and
 * cfg->help set, without reading file or environment.
 */
int vx_config_load(vx_config *cfg, int argc, char **argv, int *first_unparsed, char *errbuf);

/* Check every field against its range and the fields against each other
 * (the effective raft port must be a valid port other than http_port).
 * For a config built or changed by code rather than by the loaders. */
int vx_config_validate(const vx_config *cfg, char *errbuf);

/* The settings part of the --help text: every flag with its value name,
 * help line, file key, variable, default and range.  No "Usage:" line: the
 * caller prints its synopsis first. */
void vx_config_usage(FILE *out);

/* Write *cfg in the config file format, every field, so that
 * vx_config_load_file reads it back to the same values (for logging the
 * effective configuration at start-up).  0 or VX_EIO. */
int vx_config_write(const vx_config *cfg, FILE *out);

/* raft_port, or http_port + 1000 when it is 0. */
unsigned vx_config_raft_port(const vx_config *cfg);

/* index_workers, or the number of online CPUs (at least 1) when it is 0. */
unsigned vx_config_index_workers(const vx_config *cfg);

#endif
