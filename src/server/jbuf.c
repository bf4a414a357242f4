/*
 * jbuf.c - see jbuf.h.
 */
#include "server/jbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jb_init(jbuf *b) { memset(b, 0, sizeof(*b)); }

void jb_free(jbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static bool reserve(jbuf *b, size_t n)
{
    if (b->failed) return false;
    if (b->len + n + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

char *jb_take(jbuf *b, size_t *len)
{
    if (b->failed || !reserve(b, 0)) {
        jb_free(b);
        return NULL;
    }
    b->p[b->len] = '\0';
    char *p = b->p;
    if (len) *len = b->len;
    memset(b, 0, sizeof(*b));
    return p;
}

void jb_raw(jbuf *b, const char *s, size_t n)
{
    if (!reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void jb_lit(jbuf *b, const char *s) { jb_raw(b, s, strlen(s)); }

void jb_ch(jbuf *b, char c)
{
    if (!reserve(b, 1)) return;
    b->p[b->len++] = c;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) len = 2, min = 0x80;
    else if ((c & 0xf0) == 0xe0) len = 3, min = 0x800;
    else if ((c & 0xf8) == 0xf0) len = 4, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    unsigned cp = c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

void jb_str(jbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    if (!reserve(b, n + 2)) return;
    b->p[b->len++] = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i; /* copy runs of plain bytes at once */
        while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\')
            run++;
        if (run > i) {
            jb_raw(b, s + i, run - i);
            i = run;
            continue;
        }
        unsigned c = u[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jb_raw(b, e, 2);
            i++;
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (c == '\n') jb_raw(b, "\\n", 2);
            else if (c == '\t') jb_raw(b, "\\t", 2);
            else if (c == '\r') jb_raw(b, "\\r", 2);
            else jb_raw(b, e, 6);
            i++;
        } else {
            size_t l = utf8_len(u + i, n - i);
            if (l == 0) {
                jb_raw(b, "\xef\xbf\xbd", 3);
                i++;
            } else {
                jb_raw(b, s + i, l);
                i += l;
            }
        }
    }
    jb_ch(b, '"');
}

void jb_cstr(jbuf *b, const char *s) { jb_str(b, s, strlen(s)); }

void jb_u64(jbuf *b, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    jb_raw(b, t, (size_t)n);
}

void jb_i64(jbuf *b, int64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)v);
    jb_raw(b, t, (size_t)n);
}

void jb_f32(jbuf *b, float v)
{
    if (!isfinite(v)) {
        jb_lit(b, "null");
        return;
    }
    /* 9 significant digits always read back as the same float; searching
     * for the shortest form cost several printf/strtof rounds per score */
    char t[32];
    int n = snprintf(t, sizeof t, "%.9g", (double)v);
    jb_raw(b, t, (size_t)n);
}

void jb_f64(jbuf *b, double v)
{
    if (!isfinite(v)) {
        jb_lit(b, "null");
        return;
    }
    char t[40];
    int n = snprintf(t, sizeof t, "%.17g", v);
    for (int prec = 15; prec < 17; prec++) {
        char s[40];
        int m = snprintf(s, sizeof s, "%.*g", prec, v);
        if (strtod(s, NULL) == v) {
            jb_raw(b, s, (size_t)m);
            return;
        }
    }
    jb_raw(b, t, (size_t)n);
}

void jb_bool(jbuf *b, bool v) { jb_lit(b, v ? "true" : "false"); }

void jb_key(jbuf *b, const char *key, bool comma)
{
    if (comma) jb_ch(b, ',');
    jb_cstr(b, key);
    jb_ch(b, ':');
}

void jb_printf(jbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char t[256];
    int n = vsnprintf(t, sizeof t, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof t) {
        jb_raw(b, t, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
