/*
 * jbuf.h - an append-only byte buffer for writing JSON responses.
 *
 * Responses are written forward, never built as a tree: a search result of
 * 10,000 points is one buffer and one pass.  Errors are sticky (a failed
 * allocation makes every later append a no-op and jb_ok false), so writers
 * check once at the end, as with stdio streams.
 */
#ifndef VX_SERVER_JBUF_H
#define VX_SERVER_JBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct jbuf {
    char *p;
    size_t len, cap;
    bool failed;
} jbuf;

void jb_init(jbuf *b);
void jb_free(jbuf *b);
/* Hand out the bytes (NUL-terminated, malloc'd); the buffer is reset. */
char *jb_take(jbuf *b, size_t *len);
static inline bool jb_ok(const jbuf *b) { return !b->failed; }

void jb_raw(jbuf *b, const char *s, size_t n);
/* NUL-terminated, unescaped; inline, so a literal's length is a constant */
static inline void jb_lit(jbuf *b, const char *s) { jb_raw(b, s, strlen(s)); }
void jb_ch(jbuf *b, char c);
/* A JSON string literal of s (escaped; invalid UTF-8 becomes U+FFFD). */
void jb_str(jbuf *b, const char *s, size_t n);
void jb_cstr(jbuf *b, const char *s);
void jb_u64(jbuf *b, uint64_t v);
void jb_i64(jbuf *b, int64_t v);
/* Text that reads back as the same float: %.9g (null for NaN/Inf). */
void jb_f32(jbuf *b, float v);
/* A finite float as JSON text that reads back as the same float (9
 * significant digits, trailing zeros dropped, %g's choice of notation);
 * the length, out NUL-terminated. */
int jb_format_f32(char out[32], float v);
/* 10^k for k in 0..60, the nearest doubles (exact up to 10^22). */
extern const double vx_pow10[61];
/* A duration in nanoseconds as decimal seconds: 0.000512, 2.5, 1.0. */
void jb_seconds(jbuf *b, uint64_t ns);
void jb_f64(jbuf *b, double v);
void jb_bool(jbuf *b, bool v);
/* "key": (with a leading comma when `comma`) */
void jb_key(jbuf *b, const char *key, bool comma);
void jb_printf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
