/*
 * log.c - see log.h.
 *
 * A line is built in a buffer that starts on the caller's stack and moves to
 * the heap only for long lines, then written with one fwrite under the
 * stream's lock.  The field format is parsed twice: once to validate it
 * without touching the va_list (a malformed format must not make us read
 * arguments of the wrong type), once to emit.
 */
#include "base/log.h"

#include "base/err.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---- the stated globals (see log.h) ------------------------------------- */

static _Atomic(FILE *) g_out; /* NULL: stderr */
static atomic_int g_min_level = VX_LOG_INFO;
static atomic_uint_least64_t g_rid_counter;
static atomic_uint_least64_t g_rid_seed;
static pthread_once_t g_rid_once = PTHREAD_ONCE_INIT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static int clamp_level(int level)
{
    if (level < VX_LOG_DEBUG) return VX_LOG_DEBUG;
    if (level > VX_LOG_ERROR) return VX_LOG_ERROR;
    return level;
}

void vx_log_init(FILE *out, int min_level)
{
    atomic_store(&g_out, out);
    atomic_store(&g_min_level, clamp_level(min_level));
}

int vx_log_enabled(int level)
{
    return level >= atomic_load_explicit(&g_min_level, memory_order_relaxed);
}

const char *vx_log_level_name(int level)
{
    if (level < VX_LOG_DEBUG || level > VX_LOG_ERROR) return "error";
    return level_names[level];
}

int vx_log_level_from_name(const char *name)
{
    if (name == NULL) return VX_EINVAL;
    for (int i = VX_LOG_DEBUG; i <= VX_LOG_ERROR; i++)
        if (strcasecmp(name, level_names[i]) == 0) return i;
    if (strcasecmp(name, "warning") == 0) return VX_LOG_WARN;
    return VX_EINVAL;
}

/* ---- line buffer --------------------------------------------------------- */

typedef struct lbuf {
    char *p;
    size_t len, cap;
    bool oom; /* a grow failed: later appends are dropped, the line is not written */
    char stack[2048];
} lbuf;

static void lbuf_init(lbuf *b)
{
    b->p = b->stack;
    b->len = 0;
    b->cap = sizeof b->stack;
    b->oom = false;
}

static void lbuf_done(lbuf *b)
{
    if (b->p != b->stack) free(b->p);
}

static bool lbuf_reserve(lbuf *b, size_t n)
{
    if (b->oom) return false;
    if (b->cap - b->len >= n) return true;
    size_t cap = b->cap * 2;
    if (cap - b->len < n) cap = b->len + n;
    char *p = b->p == b->stack ? malloc(cap) : realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    if (b->p == b->stack) memcpy(p, b->stack, b->len);
    b->p = p;
    b->cap = cap;
    return true;
}

static void put(lbuf *b, const char *s, size_t n)
{
    if (!lbuf_reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void puts_(lbuf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void putc_(lbuf *b, char c)
{
    put(b, &c, 1);
}

/* Append the JSON string literal of s[0..n), quotes included.  Invalid UTF-8
 * is replaced by U+FFFD per maximal subpart (Unicode 15, section 3.9, "U+FFFD
 * Substitution of Maximal Subparts"): a truncated sequence costs one U+FFFD,
 * a stray byte one each. */
static void put_json_str(lbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    static const char fffd[] = "\xEF\xBF\xBD";
    const unsigned char *u = (const unsigned char *)s;
    putc_(b, '"');
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x80) {
            /* run of plain ASCII copied in one go */
            size_t j = i;
            while (j < n && u[j] < 0x80 && u[j] >= 0x20 && u[j] != '"' && u[j] != '\\')
                j++;
            if (j > i) {
                put(b, s + i, j - i);
                i = j;
                continue;
            }
            char esc[7] = {'\\', 0};
            switch (c) {
            case '"':
                esc[1] = '"';
                break;
            case '\\':
                esc[1] = '\\';
                break;
            case '\n':
                esc[1] = 'n';
                break;
            case '\r':
                esc[1] = 'r';
                break;
            case '\t':
                esc[1] = 't';
                break;
            case '\b':
                esc[1] = 'b';
                break;
            case '\f':
                esc[1] = 'f';
                break;
            default:
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                put(b, esc, 6);
                i++;
                continue;
            }
            put(b, esc, 2);
            i++;
            continue;
        }
        /* multi-byte: the lead byte fixes the length and the valid range of
         * the second byte (which excludes overlongs, surrogates, > U+10FFFF) */
        unsigned need, lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            put(b, fffd, 3);
            i++;
            continue;
        }
        unsigned k = 1;
        for (; k <= need; k++) {
            if (i + k >= n) break;
            unsigned cc = u[i + k];
            unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
            if (cc < l || cc > h) break;
        }
        if (k <= need) {
            put(b, fffd, 3);
            i += k; /* the lead and the continuation bytes that were valid */
        } else {
            put(b, s + i, need + 1);
            i += need + 1;
        }
    }
    putc_(b, '"');
}

/* A %s value: NULL is null, long values are cut at a character boundary. */
static void put_value_str(lbuf *b, const char *s)
{
    if (s == NULL) {
        puts_(b, "null");
        return;
    }
    size_t n = strnlen(s, VX_LOG_VALUE_MAX + 1);
    if (n <= VX_LOG_VALUE_MAX) {
        put_json_str(b, s, n);
        return;
    }
    n = VX_LOG_VALUE_MAX;
    /* back up over at most 3 continuation bytes so the cut does not split a
     * character (which would turn into U+FFFD) */
    for (int k = 0; k < 3 && n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80; k++)
        n--;
    put_json_str(b, s, n);
    if (b->oom) return;
    b->len--; /* reopen the string for the ellipsis */
    puts_(b, "\xE2\x80\xA6\"");
}

static void put_ts(lbuf *b)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char t[40];
    int n =
        snprintf(t, sizeof t, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    putc_(b, '"');
    put(b, t, (size_t)n);
    putc_(b, '"');
}

static void put_head(lbuf *b, int level, const char *event)
{
    puts_(b, "{\"ts\":");
    put_ts(b);
    puts_(b, ",\"level\":\"");
    puts_(b, vx_log_level_name(level));
    puts_(b, "\",\"event\":");
    if (event == NULL) event = "";
    put_json_str(b, event, strlen(event));
}

static void write_line(lbuf *b)
{
    if (b->oom) {
        /* nothing better to do than say so: the line itself is lost */
        lbuf_done(b);
        lbuf_init(b);
        put_head(b, VX_LOG_ERROR, "log_oom");
    }
    puts_(b, "}\n");
    FILE *out = atomic_load(&g_out);
    if (out == NULL) out = stderr;
    /* fwrite locks the stream; holding the lock across the flush keeps
     * another thread's line from being flushed half-way through ours */
    flockfile(out);
    fwrite(b->p, 1, b->len, out);
    fflush(out);
    funlockfile(out);
}

/* ---- the field format ---------------------------------------------------- */

typedef enum conv {
    C_STR,
    C_INT,
    C_LONG,
    C_LLONG,
    C_UINT,
    C_ULONG,
    C_ULLONG,
    C_SIZE,
    C_DOUBLE,
    C_HEX,
    C_HEXLL,
} conv;

typedef struct item {
    const char *key;
    size_t keylen;
    conv c;
    int prec; /* C_DOUBLE */
} item;

static bool key_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool key_char(char c)
{
    return key_start(c) || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

static bool reserved_key(const char *k, size_t n)
{
    return (n == 2 && memcmp(k, "ts", 2) == 0) || (n == 5 && memcmp(k, "level", 5) == 0) ||
           (n == 5 && memcmp(k, "event", 5) == 0);
}

/* Parse the next item at *p.  1: an item, *p moved past it; 0: end of the
 * format; -1: malformed, *p at the offending character (the start of a bad
 * or reserved key, where `=%` was expected, the `%` of a bad conversion, or
 * the character after a conversion that is not a blank). */
static int next_item(const char **p, item *it)
{
    const char *s = *p;
    while (*s == ' ')
        s++;
    *p = s;
    if (*s == '\0') return 0;
    if (!key_start(*s)) return -1;
    it->key = s;
    while (key_char(*s))
        s++;
    it->keylen = (size_t)(s - it->key);
    if (reserved_key(it->key, it->keylen)) return -1;
    if (s[0] != '=' || s[1] != '%') {
        *p = s;
        return -1;
    }
    const char *pct = s + 1;
    s += 2;
    it->prec = 6;
    switch (*s++) {
    case 's':
        it->c = C_STR;
        break;
    case 'd':
        it->c = C_INT;
        break;
    case 'u':
        it->c = C_UINT;
        break;
    case 'x':
        it->c = C_HEX;
        break;
    case 'f':
        it->c = C_DOUBLE;
        break;
    case 'z':
        if (*s++ != 'u') goto bad_conv;
        it->c = C_SIZE;
        break;
    case '.': {
        int prec = 0, digits = 0;
        while (*s >= '0' && *s <= '9' && digits < 3)
            prec = prec * 10 + (*s++ - '0'), digits++;
        if (digits == 0 || prec > 17 || *s++ != 'f') goto bad_conv;
        it->c = C_DOUBLE;
        it->prec = prec;
        break;
    }
    case 'l':
        if (*s == 'l') {
            s++;
            switch (*s++) {
            case 'd':
                it->c = C_LLONG;
                break;
            case 'u':
                it->c = C_ULLONG;
                break;
            case 'x':
                it->c = C_HEXLL;
                break;
            default:
                goto bad_conv;
            }
        } else {
            switch (*s++) {
            case 'd':
                it->c = C_LONG;
                break;
            case 'u':
                it->c = C_ULONG;
                break;
            default:
                goto bad_conv;
            }
        }
        break;
    default:
        goto bad_conv;
    }
    *p = s;
    return *s == ' ' || *s == '\0' ? 1 : -1;
bad_conv:
    *p = pct;
    return -1;
}

/* Offset of the first error in fmt, or -1 when it is well formed.  Keys must
 * also be distinct: a JSON object with a repeated key is read differently by
 * different parsers. */
static long validate_fmt(const char *fmt)
{
    const char *p = fmt;
    item seen[32];
    size_t nseen = 0;
    item it;
    int r;
    while ((r = next_item(&p, &it)) == 1) {
        for (size_t i = 0; i < nseen; i++)
            if (seen[i].keylen == it.keylen && memcmp(seen[i].key, it.key, it.keylen) == 0)
                return it.key - fmt;
        if (nseen < sizeof seen / sizeof seen[0]) seen[nseen++] = it;
    }
    return r == 0 ? -1 : p - fmt;
}

static void put_double(lbuf *b, double v, int prec)
{
    if (!isfinite(v)) {
        puts_(b, "null");
        return;
    }
    /* %.17f of DBL_MAX is 309 + 1 + 17 characters */
    char t[400];
    int n = snprintf(t, sizeof t, "%.*f", prec, v);
    if (n < 0 || (size_t)n >= sizeof t) {
        puts_(b, "null");
        return;
    }
    put(b, t, (size_t)n);
}

static void put_fields(lbuf *b, const char *fmt, va_list ap)
{
    const char *p = fmt;
    item it;
    char t[32];
    while (next_item(&p, &it) == 1) {
        putc_(b, ',');
        put_json_str(b, it.key, it.keylen);
        putc_(b, ':');
        int n = 0;
        switch (it.c) {
        case C_STR:
            put_value_str(b, va_arg(ap, const char *));
            break;
        case C_INT:
            n = snprintf(t, sizeof t, "%d", va_arg(ap, int));
            break;
        case C_LONG:
            n = snprintf(t, sizeof t, "%ld", va_arg(ap, long));
            break;
        case C_LLONG:
            n = snprintf(t, sizeof t, "%lld", va_arg(ap, long long));
            break;
        case C_UINT:
            n = snprintf(t, sizeof t, "%u", va_arg(ap, unsigned));
            break;
        case C_ULONG:
            n = snprintf(t, sizeof t, "%lu", va_arg(ap, unsigned long));
            break;
        case C_ULLONG:
            n = snprintf(t, sizeof t, "%llu", va_arg(ap, unsigned long long));
            break;
        case C_SIZE:
            n = snprintf(t, sizeof t, "%zu", va_arg(ap, size_t));
            break;
        case C_DOUBLE:
            put_double(b, va_arg(ap, double), it.prec);
            break;
        case C_HEX:
            n = snprintf(t, sizeof t, "\"%x\"", va_arg(ap, unsigned));
            break;
        case C_HEXLL:
            n = snprintf(t, sizeof t, "\"%llx\"", va_arg(ap, unsigned long long));
            break;
        }
        if (n > 0) put(b, t, (size_t)n);
    }
}

void vx_logv(int level, const char *event, const char *fmt_kv, va_list ap)
{
    if (level < VX_LOG_DEBUG || level > VX_LOG_ERROR) level = VX_LOG_ERROR;
    if (!vx_log_enabled(level)) return;
    lbuf b;
    lbuf_init(&b);
    long bad = fmt_kv != NULL ? validate_fmt(fmt_kv) : -1;
    if (bad >= 0) {
        /* report the caller's mistake instead of guessing at its arguments */
        put_head(&b, VX_LOG_ERROR, "log_format_error");
        puts_(&b, ",\"for_event\":");
        put_value_str(&b, event);
        puts_(&b, ",\"fmt\":");
        put_value_str(&b, fmt_kv);
        char t[32];
        int n = snprintf(t, sizeof t, ",\"at\":%ld", bad);
        put(&b, t, (size_t)n);
    } else {
        put_head(&b, level, event);
        if (fmt_kv != NULL) put_fields(&b, fmt_kv, ap);
    }
    write_line(&b);
    lbuf_done(&b);
}

void vx_log(int level, const char *event, const char *fmt_kv, ...)
{
    va_list ap;
    va_start(ap, fmt_kv);
    vx_logv(level, event, fmt_kv, ap);
    va_end(ap);
}

/* ---- request ids --------------------------------------------------------- */

/* murmur3's 64-bit finalizer: a bijection, so distinct inputs give distinct
 * ids, with every input bit affecting every output bit. */
static uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void rid_reseed(void)
{
    uint64_t seed = 0;
    ssize_t r;
    do {
        r = getrandom(&seed, sizeof seed, GRND_NONBLOCK);
    } while (r < 0 && errno == EINTR);
    if (r != (ssize_t)sizeof seed) {
        /* no entropy yet (early boot) or no syscall: still distinct per
         * process and per start, which is all request ids need */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = fmix64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
               ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&seed;
    }
    atomic_store(&g_rid_seed, seed);
}

static void rid_init(void)
{
    rid_reseed();
    /* a forked child would otherwise replay the parent's ids */
    pthread_atfork(NULL, NULL, rid_reseed);
}

void vx_log_request_id(char out[17])
{
    static const char hex[] = "0123456789abcdef";
    pthread_once(&g_rid_once, rid_init);
    uint64_t n = atomic_fetch_add_explicit(&g_rid_counter, 1, memory_order_relaxed);
    /* seed + n*odd is a bijection of n, and fmix64 is one too */
    uint64_t id =
        fmix64(atomic_load_explicit(&g_rid_seed, memory_order_relaxed) + n * 0x9e3779b97f4a7c15ull);
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[id & 15];
        id >>= 4;
    }
    out[16] = '\0';
}
