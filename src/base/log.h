/*
 * log.h - structured logs: one JSON object per line.
 *
 * A log line is an event name plus typed key/value fields:
 *
 *   vx_log(VX_LOG_INFO, "http_request", "rid=%s route=%s status=%d ms=%.3f",
 *          rid, route, 200, 1.5);
 *
 * writes
 *
 *   {"ts":"2026-11-25T23:30:01.123Z","level":"info","event":"http_request",
 *    "rid":"...","route":"...","status":200,"ms":1.500}
 *
 * (on one line).  Machines read these logs, so the output is always valid
 * JSON: strings are escaped and invalid UTF-8 becomes U+FFFD, numbers are
 * bare, non-finite doubles become null.
 *
 * The field format.  fmt_kv is a space-separated list of `key=%conv` items
 * and nothing else.  A key is [A-Za-z_][A-Za-z0-9_.-]* and may not be one of
 * the reserved keys ts, level, event.  The conversions and the JSON they
 * produce:
 *
 *   %s                   string (const char *; NULL gives null)
 *   %d %ld %lld          signed number    (int, long, long long)
 *   %u %lu %llu %zu      unsigned number  (unsigned, unsigned long,
 *                                          unsigned long long, size_t)
 *   %f %.Nf (N 0..17)    number (double; %f means %.6f, as in printf)
 *   %x %llx              string of lower-case hex digits (unsigned,
 *                        unsigned long long); JSON has no hex numbers
 *
 * Every such format is also a valid printf format, so the declaration below
 * carries __attribute__((format(printf))) and the compiler type-checks the
 * arguments against it.  The format is validated completely before any
 * argument is read: a malformed one (stray text, unknown conversion, bad or
 * reserved key) logs a "log_format_error" line naming the event and the
 * format instead, and touches no argument, so it cannot crash.  Pass NULL
 * (not "") for an event without fields; "" is accepted but draws a
 * -Wformat-zero-length warning.
 *
 * A string value longer than VX_LOG_VALUE_MAX bytes is cut at a character
 * boundary and ends in "..." (U+2026): a log line is no place for a request
 * body, and one runaway value must not produce a megabyte line.
 *
 * Threading.  vx_log may be called from any thread.  Each line is built in
 * the caller's memory and handed to the stream in one locked
 * fwrite+fflush, so concurrent lines never interleave and a line is on its
 * way to the file before vx_log returns (a crash loses no logged line).
 *
 * Globals.  The logger is process-wide by nature (every module logs without
 * being handed a logger), so it is one of the few stated globals of Vectron:
 * the output stream, the minimum level, and the request-id counter and seed.
 * They are atomics, so vx_log_init may race with vx_log without undefined
 * behaviour; the caller must still keep a stream open while it is installed.
 * Before vx_log_init the logger writes to stderr at VX_LOG_INFO.
 */
#ifndef VX_BASE_LOG_H
#define VX_BASE_LOG_H

#include <stdarg.h>
#include <stdio.h>

enum {
    VX_LOG_DEBUG = 0,
    VX_LOG_INFO = 1,
    VX_LOG_WARN = 2,
    VX_LOG_ERROR = 3,
};

/* Input bytes of one %s value kept before the value is cut (see above). */
#define VX_LOG_VALUE_MAX 4096

/* Send lines to out (NULL means stderr) and drop those below min_level
 * (clamped to DEBUG..ERROR).  The stream stays the caller's: the logger never
 * closes it.  May be called again, e.g. by tests that capture the output. */
void vx_log_init(FILE *out, int min_level);

/* Whether a line at level would be written: lets a caller skip computing
 * expensive fields for a debug line nobody reads. */
int vx_log_enabled(int level);

/* Write one line (see the file comment for fmt_kv).  level outside
 * DEBUG..ERROR is logged as ERROR; event NULL is logged as "". */
void vx_log(int level, const char *event, const char *fmt_kv, ...)
    __attribute__((format(printf, 3, 4)));

/* vx_log for wrappers that already hold a va_list. */
void vx_logv(int level, const char *event, const char *fmt_kv, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* "debug", "info", "warn" or "error" (also "warning"), case-insensitive, to
 * its level; VX_EINVAL for anything else.  For config and flags. */
int vx_log_level_from_name(const char *name);

/* Static name of a level ("info"); "error" for out-of-range values. */
const char *vx_log_level_name(int level);

/* A request id: 16 lower-case hex characters and a NUL in out.  Ids are a
 * bijective mix of a per-process counter offset by a random seed (getrandom,
 * drawn once), so within a process no id repeats before 2^64 calls, and ids
 * of different processes collide only by chance.  Thread-safe, lock-free. */
void vx_log_request_id(char out[17]);

#endif
