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
    int n = 0;
    do {
        t[sizeof t - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    jb_raw(b, t + sizeof t - n, (size_t)n);
}

void jb_i64(jbuf *b, int64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof t, "%lld", (long long)v);
    jb_raw(b, t, (size_t)n);
}

const double vx_pow10[61] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11, 1e12,
    1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25,
    1e26, 1e27, 1e28, 1e29, 1e30, 1e31, 1e32, 1e33, 1e34, 1e35, 1e36, 1e37, 1e38,
    1e39, 1e40, 1e41, 1e42, 1e43, 1e44, 1e45, 1e46, 1e47, 1e48, 1e49, 1e50, 1e51,
    1e52, 1e53, 1e54, 1e55, 1e56, 1e57, 1e58, 1e59, 1e60};

/* d * 10^k (one rounding where 10^|k| is exact) to the nearest integer,
 * ties to even as printf rounds them. */
static uint64_t scale10(double d, int k)
{
    double s = k >= 0 ? d * vx_pow10[k] : d / vx_pow10[-k];
    double fl = floor(s), frac = s - fl;
    uint64_t m = (uint64_t)fl;
    return m + (frac > 0.5 || (frac == 0.5 && (m & 1)));
}

int jb_format_f32(char out[32], float v)
{
    char *p = out;
    if (signbit(v)) {
        *p++ = '-';
        v = -v;
    }
    if (v == 0) {
        *p++ = '0';
        *p = '\0';
        return (int)(p - out);
    }
    /* m = v to 9 significant digits, v ~ m * 10^(e - 8).  Computed in double
     * the error is under 0.5 units of the 9th digit plus 1e-16 relative,
     * i.e. under 5.1e-9 of v, while floats are at least 2^-25 = 2.98e-8 of v
     * apart on either side: the text always reads back as v (what %.9g gives,
     * at a fraction of printf's cost). */
    double d = v;
    /* e = floor(log10(d)) from the binary exponent: d = f * 2^b with f in
     * [0.5, 1) puts log10(d) in [(b - 1) log10 2, b log10 2), so the
     * estimate is e or e - 1, and the step below corrects the latter */
    int b;
    (void)frexp(d, &b);
    int e = (int)floor((b - 1) * 0.30102999566398120);
    uint64_t m = scale10(d, 8 - e);
    if (m >= 1000000000ull) m = scale10(d, 8 - ++e);
    else if (m < 100000000ull) m = scale10(d, 8 - --e);
    if (m >= 1000000000ull) { /* rounding carried into a 10th digit */
        m /= 10;
        e++;
    }
    char dig[9];
    int nd = 9;
    for (int i = 8; i >= 0; i--) {
        dig[i] = (char)('0' + m % 10);
        m /= 10;
    }
    while (nd > 1 && dig[nd - 1] == '0') nd--;
    if (e < -4 || e >= 9) { /* d.ddde+XX, as %g */
        *p++ = dig[0];
        if (nd > 1) {
            *p++ = '.';
            for (int i = 1; i < nd; i++) *p++ = dig[i];
        }
        *p++ = 'e';
        *p++ = e < 0 ? '-' : '+';
        int ae = e < 0 ? -e : e;
        if (ae >= 10) *p++ = (char)('0' + ae / 10);
        else *p++ = '0';
        *p++ = (char)('0' + ae % 10);
    } else if (e >= 0) {
        for (int i = 0; i <= e; i++) *p++ = i < nd ? dig[i] : '0';
        if (nd > e + 1) {
            *p++ = '.';
            for (int i = e + 1; i < nd; i++) *p++ = dig[i];
        }
    } else {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -e - 1; i++) *p++ = '0';
        for (int i = 0; i < nd; i++) *p++ = dig[i];
    }
    *p = '\0';
    return (int)(p - out);
}

void jb_f32(jbuf *b, float v)
{
    if (!isfinite(v)) {
        jb_lit(b, "null");
        return;
    }
    char t[32];
    int n = jb_format_f32(t, v);
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

void jb_seconds(jbuf *b, uint64_t ns)
{
    jb_u64(b, ns / 1000000000u);
    char t[10] = {'.'};
    uint64_t frac = ns % 1000000000u;
    for (int i = 9; i >= 1; i--) {
        t[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    int n = 10;
    while (n > 2 && t[n - 1] == '0') n--;
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
